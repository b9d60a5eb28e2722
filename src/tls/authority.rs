//! A throwaway certificate authority (rcgen, ECDSA P-256) for `payedge demo` and the tests:
//! server certificates for host names, client certificates for mutual TLS. Never for
//! production, where certificates come from a real CA.

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use time::{Duration, OffsetDateTime};

/// A certificate and its key, PEM-encoded.
#[derive(Debug, Clone)]
pub struct IssuedPem {
    pub cert_pem: String,
    pub key_pem: String,
}

pub struct Authority {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
}

/// When an issued certificate is valid, relative to now.
#[derive(Debug, Clone, Copy)]
pub struct Validity {
    pub from: Duration,
    pub until: Duration,
}

impl Validity {
    pub fn days(days: i64) -> Self {
        Self {
            from: Duration::hours(-1),
            until: Duration::days(days),
        }
    }

    /// Expired an hour ago.
    pub fn expired() -> Self {
        Self {
            from: Duration::days(-30),
            until: Duration::hours(-1),
        }
    }
}

impl Authority {
    pub fn new(name: &str) -> Result<Self, rcgen::Error> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name = dn(name, Some("payedge test authority"));
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        dates(&mut params, Validity::days(365));
        let key = KeyPair::generate()?;
        let cert = params.self_signed(&key)?;
        Ok(Self {
            cert_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        })
    }

    /// The CA certificate clients (or payedge) trust.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// A server certificate for `names` (DNS names, wildcards or IP addresses).
    pub fn server(&self, names: &[&str], validity: Validity) -> Result<IssuedPem, rcgen::Error> {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names.clone())?;
        params.distinguished_name = dn(names.first().map_or("server", String::as_str), None);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.issue(params, validity)
    }

    /// A client certificate whose subject is `CN={common_name}, O={organization}`.
    pub fn client(
        &self,
        common_name: &str,
        organization: &str,
        validity: Validity,
    ) -> Result<IssuedPem, rcgen::Error> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name = dn(common_name, Some(organization));
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.issue(params, validity)
    }

    fn issue(
        &self,
        mut params: CertificateParams,
        validity: Validity,
    ) -> Result<IssuedPem, rcgen::Error> {
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        dates(&mut params, validity);
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(IssuedPem {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

fn dn(common_name: &str, organization: Option<&str>) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    if let Some(o) = organization {
        dn.push(DnType::OrganizationName, o);
    }
    dn
}

fn dates(params: &mut CertificateParams, validity: Validity) {
    let now = OffsetDateTime::now_utc();
    params.not_before = now + validity.from;
    params.not_after = now + validity.until;
}
