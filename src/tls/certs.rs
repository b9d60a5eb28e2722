//! Certificates, keys and CA bundles read from PEM files, checked once when the configuration is
//! loaded: a missing, corrupt or mismatched file is a configuration problem naming its key, never
//! a panic inside a TLS library later.

use std::path::Path;
use std::sync::Arc;

use payedge_filters::server_names::HostPattern;
use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

/// What a certificate says about itself.
#[derive(Debug, Clone)]
pub struct CertificateInfo {
    /// DNS names and wildcards of the subjectAltName extension.
    pub dns_names: Vec<HostPattern>,
    /// Unix seconds.
    pub not_before: i64,
    pub not_after: i64,
    /// RFC 4514 form, `CN=partner-a,O=Acme`.
    pub subject: String,
}

/// A certificate chain with the private key that goes with its first certificate.
#[derive(Debug, Clone)]
pub struct KeyPair {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: Arc<PrivateKeyDer<'static>>,
    /// For serving (downstream) and presenting (mutual TLS upstream).
    pub certified: Arc<CertifiedKey>,
    pub leaf: CertificateInfo,
}

/// The crypto provider every TLS object of payedge uses: ring, TLS 1.2 and 1.3.
pub fn provider() -> Arc<CryptoProvider> {
    pingora::tls::install_default_crypto_provider();
    CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::ring::default_provider()))
}

fn read(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

/// Every certificate of a PEM file, in order.
pub fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let bytes = read(path)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: {}", path.display(), pem_problem(&e, "CERTIFICATE")))?;
    if certs.is_empty() {
        return Err(format!(
            "{} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
            path.display()
        ));
    }
    for (i, cert) in certs.iter().enumerate() {
        inspect(cert).map_err(|e| format!("{}: certificate {}: {e}", path.display(), i + 1))?;
    }
    Ok(certs)
}

/// The private key of a PEM file (PKCS#8, PKCS#1 or SEC1).
pub fn read_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    let bytes = read(path)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| {
        let problem = if bytes.windows(9).any(|w| w == b"ENCRYPTED") {
            "the private key is encrypted: payedge needs it unencrypted (PRIVATE KEY, RSA \
             PRIVATE KEY or EC PRIVATE KEY), readable by payedge only"
                .to_string()
        } else if matches!(e, rustls::pki_types::pem::Error::NoItemsFound) {
            "holds no unencrypted PEM private key (PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY)"
                .to_string()
        } else {
            pem_problem(&e, "PRIVATE KEY")
        };
        format!("{}: {problem}", path.display())
    })
}

fn pem_problem(e: &rustls::pki_types::pem::Error, label: &str) -> String {
    use rustls::pki_types::pem::Error;
    match e {
        Error::MissingSectionEnd { .. } => {
            format!("the PEM block is cut short: no -----END {label}----- line")
        }
        Error::IllegalSectionStart { .. } => "a PEM block starts inside another one".into(),
        Error::Base64Decode(detail) => format!("the PEM block is not valid base64 ({detail})"),
        Error::NoItemsFound => format!("holds no PEM {label}"),
        other => format!("not a usable PEM file: {other}"),
    }
}

/// Reads a certificate chain and its key and checks that they belong together.
pub fn read_key_pair(cert_file: &Path, key_file: &Path) -> Result<KeyPair, KeyPairError> {
    let chain = read_certificates(cert_file).map_err(KeyPairError::Certificate)?;
    let key = read_private_key(key_file).map_err(KeyPairError::Key)?;
    let leaf = inspect(&chain[0]).map_err(KeyPairError::Certificate)?;
    let certified = CertifiedKey::from_der(chain.clone(), key.clone_key(), &provider()).map_err(
        |e| match e {
            rustls::Error::InconsistentKeys(_) => KeyPairError::Key(format!(
                "{} is not the key of the certificate in {}",
                key_file.display(),
                cert_file.display()
            )),
            other => KeyPairError::Key(format!("{}: {other}", key_file.display())),
        },
    )?;
    Ok(KeyPair {
        chain,
        key: Arc::new(key),
        certified: Arc::new(certified),
        leaf,
    })
}

/// Which file of a pair is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyPairError {
    Certificate(String),
    Key(String),
}

/// A CA bundle: the certificates that may sign a peer's certificate.
pub fn read_roots(path: &Path) -> Result<(RootCertStore, Vec<CertificateDer<'static>>), String> {
    let certs = read_certificates(path)?;
    let mut roots = RootCertStore::empty();
    for cert in &certs {
        roots
            .add(cert.clone())
            .map_err(|e| format!("{}: not a usable CA certificate: {e}", path.display()))?;
    }
    Ok((roots, certs))
}

/// Parses one DER certificate.
pub fn inspect(der: &CertificateDer<'_>) -> Result<CertificateInfo, String> {
    let (_, cert) = X509Certificate::from_der(der.as_ref())
        .map_err(|_| "it is truncated or corrupt (not a DER X.509 certificate)".to_string())?;
    let mut dns_names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            if let GeneralName::DNSName(dns) = name
                && let Ok(pattern) = HostPattern::parse(dns)
            {
                dns_names.push(pattern);
            }
        }
    }
    let validity = cert.validity();
    Ok(CertificateInfo {
        dns_names,
        not_before: validity.not_before.timestamp(),
        not_after: validity.not_after.timestamp(),
        subject: cert.subject().to_string(),
    })
}

/// The subject of a peer's leaf certificate (DER) as an RFC 4514 string: the last RDN first,
/// `,` between RDNs, `+` inside one, and `,+"\<>;=`, a leading `#` or space, a trailing space
/// and every byte outside printable ASCII escaped (`\,`, `\C3\A9`), so that no value can
/// imitate another subject and the result fits a header. `None` when the DER does not parse.
pub fn subject_of(der: &[u8]) -> Option<String> {
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    let registry = x509_parser::objects::oid_registry();
    let mut rdns: Vec<String> = Vec::new();
    for rdn in cert.subject().iter_rdn() {
        let attributes: Vec<String> = rdn
            .iter()
            .map(|attribute| {
                let oid = attribute.attr_type();
                let name = x509_parser::objects::oid2abbrev(oid, registry)
                    .map(str::to_owned)
                    .unwrap_or_else(|_| oid.to_id_string());
                let value = match attribute.as_str() {
                    Ok(text) => escape_value(text),
                    // Not a string type: RFC 4514's hex form of the DER value.
                    Err(_) => format!(
                        "#{}",
                        attribute
                            .attr_value()
                            .data
                            .iter()
                            .map(|b| format!("{b:02X}"))
                            .collect::<String>()
                    ),
                };
                format!("{name}={value}")
            })
            .collect();
        rdns.push(attributes.join("+"));
    }
    rdns.reverse();
    Some(rdns.join(","))
}

/// RFC 4514 section 2.4, with every non-printable or non-ASCII byte hex-escaped.
fn escape_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let last = value.len().saturating_sub(1);
    for (i, c) in value.char_indices() {
        let special = matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';' | '=')
            || (i == 0 && (c == '#' || c == ' '))
            || (i == last && c == ' ');
        if special {
            out.push('\\');
            out.push(c);
        } else if c.is_ascii_graphic() || c == ' ' {
            out.push(c);
        } else {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                out.push_str(&format!("\\{b:02X}"));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_escaped_so_no_subject_imitates_another() {
        assert_eq!(escape_value("partner-a"), "partner-a");
        assert_eq!(escape_value("partner-b, O=Acme"), "partner-b\\, O\\=Acme");
        assert_eq!(escape_value("#x y "), "\\#x y\\ ");
        assert_eq!(escape_value(" a\\b"), "\\ a\\\\b");
        assert_eq!(escape_value("Zürich"), "Z\\C3\\BCrich");
        assert_eq!(escape_value("a\nb"), "a\\0Ab");
    }

    #[test]
    fn the_subject_reads_last_rdn_first() {
        let ca = crate::tls::Authority::new("test").unwrap();
        let issued = ca
            .client(
                "partner-b, O=Acme Payments",
                "Acme",
                crate::tls::Validity::days(1),
            )
            .unwrap();
        let der = CertificateDer::from_pem_slice(issued.cert_pem.as_bytes()).unwrap();
        assert_eq!(
            subject_of(&der).unwrap(),
            "O=Acme,CN=partner-b\\, O\\=Acme Payments"
        );
    }
}
