//! Validation of everything TLS: the client-facing listeners (`server.tls`, `server.admin_tls`)
//! and each provider's `tls`. Every file is read and parsed here, each key checked against its
//! certificate, each certificate's dates and names checked, so that `check` finds what Pingora or
//! rustls would otherwise panic or fail on later.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use payedge_filters::server_names::{HostPattern, ServerNameTable};
use pingora::utils::tls::{CertKey, WrappedX509, parse_x509};
use rustls::pki_types::ServerName;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::external::*;
use super::runtime::*;
use super::validate::Validator;
use crate::tls::{self, CertificateInfo, KeyPairError};

/// A certificate expiring sooner than this is reported as a warning.
pub const EXPIRY_WARNING: Duration = Duration::from_secs(14 * 24 * 3600);
const MAX_HANDSHAKE_TIMEOUT_MS: u64 = 300_000;

fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

fn rfc3339(unix: i64) -> String {
    OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| unix.to_string())
}

impl Validator<'_> {
    pub(super) fn tls_listener(
        &mut self,
        key: &str,
        section: &TlsListenerSection,
    ) -> Option<TlsListener> {
        let before = self.issues.len();
        let listen = self.socket_addr(&format!("{key}.listen"), &section.listen);
        if section.certificates.is_empty() {
            self.issue(
                format!("{key}.certificates"),
                "list at least one certificate",
            );
        }
        let mut certificates = Vec::new();
        for (i, entry) in section.certificates.iter().enumerate() {
            if let Some(cert) = self.server_certificate(&format!("{key}.certificates[{i}]"), entry)
            {
                certificates.push((i, cert));
            }
        }
        let patterns: Vec<&[HostPattern]> = certificates
            .iter()
            .map(|(_, c)| c.hosts.as_slice())
            .collect();
        if let Err((host, first, second)) = ServerNameTable::new(patterns) {
            let (first, second) = (certificates[first].0, certificates[second].0);
            let (at, from) = if section.certificates[second].hosts.is_empty() {
                ("cert_file", " (from its subjectAltName)")
            } else {
                ("hosts", "")
            };
            self.issue(
                format!("{key}.certificates[{second}].{at}"),
                format!("{host}{from} is also claimed by {key}.certificates[{first}]"),
            );
        }
        if !(1..=MAX_HANDSHAKE_TIMEOUT_MS).contains(&section.handshake_timeout_ms) {
            self.issue(
                format!("{key}.handshake_timeout_ms"),
                format!("must be between 1 and {MAX_HANDSHAKE_TIMEOUT_MS}"),
            );
        }
        let client_auth = section.client_auth.as_ref().and_then(|auth| {
            let ca_key = format!("{key}.client_auth.ca_file");
            match tls::read_roots(&self.relative(&auth.ca_file)) {
                Ok((roots, certs)) => {
                    let mut id = std::collections::hash_map::DefaultHasher::new();
                    for cert in &certs {
                        std::hash::Hash::hash(cert.as_ref(), &mut id);
                    }
                    // Whether a certificate is required is part of what a connection was
                    // admitted under: a reload that starts requiring one must reach the
                    // connections admitted without.
                    std::hash::Hash::hash(&auth.required, &mut id);
                    Some(ClientAuth {
                        roots: Arc::new(roots),
                        required: auth.required,
                        // Never 0: that means "no client certificates".
                        id: std::hash::Hasher::finish(&id) | 1,
                    })
                }
                Err(e) => {
                    self.issue(ca_key, e);
                    None
                }
            }
        });
        if self.issues.len() > before {
            return None;
        }
        Some(TlsListener {
            listen: listen?,
            certificates: certificates.into_iter().map(|(_, c)| c).collect(),
            http2: section.http2,
            client_auth,
            handshake_timeout: Duration::from_millis(section.handshake_timeout_ms),
        })
    }

    fn server_certificate(
        &mut self,
        key: &str,
        entry: &CertificateEntry,
    ) -> Option<ServerCertificate> {
        let cert_key = format!("{key}.cert_file");
        let pair = match tls::read_key_pair(
            &self.relative(&entry.cert_file),
            &self.relative(&entry.key_file),
        ) {
            Ok(pair) => pair,
            Err(KeyPairError::Certificate(e)) => {
                self.issue(cert_key, e);
                return None;
            }
            Err(KeyPairError::Key(e)) => {
                self.issue(format!("{key}.key_file"), e);
                return None;
            }
        };
        self.private_file(&format!("{key}.key_file"), &entry.key_file);
        if !self.dates_usable(&cert_key, &pair.leaf) {
            return None;
        }
        let hosts = if entry.hosts.is_empty() {
            if pair.leaf.dns_names.is_empty() {
                self.issue(
                    cert_key,
                    "the certificate has no DNS name in its subjectAltName, so clients cannot \
                     verify it for any host: use one issued for the hosts it serves",
                );
                return None;
            }
            pair.leaf.dns_names.clone()
        } else {
            let mut hosts = Vec::new();
            for (i, host) in entry.hosts.iter().enumerate() {
                let host_key = format!("{key}.hosts[{i}]");
                match HostPattern::parse(host) {
                    Ok(pattern) if pair.leaf.dns_names.iter().any(|n| n.covers(&pattern)) => {
                        hosts.push(pattern)
                    }
                    Ok(pattern) => self.issue(
                        host_key,
                        format!(
                            "{pattern} is not covered by the certificate's names ({})",
                            names(&pair.leaf)
                        ),
                    ),
                    Err(e) => self.issue(host_key, e.to_string()),
                }
            }
            if hosts.len() < entry.hosts.len() {
                return None;
            }
            hosts
        };
        Some(ServerCertificate {
            label: hosts.first().map(ToString::to_string).unwrap_or_default(),
            hosts,
            pair,
        })
    }

    /// An expired (or not yet valid) certificate is an error; one expiring within 14 days a
    /// warning.
    fn dates_usable(&mut self, key: &str, leaf: &CertificateInfo) -> bool {
        let now = now_unix();
        if leaf.not_after <= now {
            self.issue(
                key,
                format!(
                    "the certificate ({}) expired on {}",
                    leaf.subject,
                    rfc3339(leaf.not_after)
                ),
            );
            return false;
        }
        if leaf.not_before > now {
            self.issue(
                key,
                format!(
                    "the certificate ({}) is not valid before {}",
                    leaf.subject,
                    rfc3339(leaf.not_before)
                ),
            );
            return false;
        }
        let left = Duration::from_secs(u64::try_from(leaf.not_after - now).unwrap_or(0));
        if left < EXPIRY_WARNING {
            self.warn(
                key,
                format!(
                    "the certificate ({}) expires on {}, in {} day(s)",
                    leaf.subject,
                    rfc3339(leaf.not_after),
                    left.as_secs() / 86_400
                ),
            );
        }
        true
    }

    /// A provider's `tls` section, for a provider at `address`.
    pub(super) fn provider_tls(
        &mut self,
        key: &str,
        section: &ProviderTlsSection,
        address: Option<&ProviderAddress>,
    ) -> Option<UpstreamTls> {
        let before = self.issues.len();
        let sni = match (&section.sni, address) {
            (Some(sni), _) => {
                let sni = sni.trim().trim_end_matches('.').to_ascii_lowercase();
                if sni.is_empty() || ServerName::try_from(sni.as_str()).is_err() {
                    self.issue(
                        format!("{key}.sni"),
                        format!("{sni:?} is not a server name"),
                    );
                }
                sni
            }
            (None, Some(address)) => address.host.clone(),
            (None, None) => String::new(),
        };
        let mut identity = std::collections::hash_map::DefaultHasher::new();
        let ca = section.ca_file.as_deref().and_then(|file| {
            let ca_key = format!("{key}.ca_file");
            match tls::read_roots(&self.relative(file)) {
                Ok((_, certs)) => {
                    for cert in &certs {
                        std::hash::Hash::hash(cert.as_ref(), &mut identity);
                    }
                    let list: Vec<WrappedX509> = certs
                        .iter()
                        .map(|der| WrappedX509::new(der.to_vec(), parse_x509))
                        .collect();
                    Some(Arc::<[WrappedX509]>::from(list))
                }
                Err(e) => {
                    self.issue(ca_key, e);
                    None
                }
            }
        });
        let client_cert = match (&section.client_cert_file, &section.client_key_file) {
            (None, None) => None,
            (Some(_), None) => {
                self.issue(
                    format!("{key}.client_key_file"),
                    "client_cert_file needs its key",
                );
                None
            }
            (None, Some(_)) => {
                self.issue(
                    format!("{key}.client_cert_file"),
                    "client_key_file needs its certificate",
                );
                None
            }
            (Some(cert), Some(private)) => self.client_certificate(key, cert, private),
        };
        if let Some(client) = &client_cert {
            std::hash::Hash::hash(&client.leaf().borrow_raw_cert(), &mut identity);
        }
        if self.issues.len() > before || sni.is_empty() {
            return None;
        }
        Some(UpstreamTls {
            sni,
            ca,
            client_cert,
            identity: std::hash::Hasher::finish(&identity),
        })
    }

    fn client_certificate(&mut self, key: &str, cert: &str, private: &str) -> Option<Arc<CertKey>> {
        let cert_key = format!("{key}.client_cert_file");
        match tls::read_key_pair(&self.relative(cert), &self.relative(private)) {
            Ok(pair) => {
                self.private_file(&format!("{key}.client_key_file"), private);
                if !self.dates_usable(&cert_key, &pair.leaf) {
                    return None;
                }
                let chain = pair.chain.iter().map(|c| c.to_vec()).collect();
                Some(Arc::new(CertKey::new(
                    chain,
                    pair.key.secret_der().to_vec(),
                )))
            }
            Err(KeyPairError::Certificate(e)) => {
                self.issue(cert_key, e);
                None
            }
            Err(KeyPairError::Key(e)) => {
                self.issue(format!("{key}.client_key_file"), e);
                None
            }
        }
    }

    /// `ip:port`, `[v6]:port` or `host:port`; names are not resolved here (that happens in the
    /// background when payedge runs), only checked to be host names.
    pub(super) fn provider_address(&mut self, key: &str, text: &str) -> Option<ProviderAddress> {
        if let Ok(addr) = text
            .parse::<SocketAddr>()
            .map_err(|_| ())
            .and_then(|a| if a.port() == 0 { Err(()) } else { Ok(a) })
        {
            return Some(ProviderAddress {
                host: addr.ip().to_string(),
                port: addr.port(),
                ip: Some(addr.ip()),
            });
        }
        let parsed = (text.parse::<SocketAddr>().is_err())
            .then(|| text.rsplit_once(':'))
            .flatten()
            .and_then(|(host, port)| Some((host, port.parse::<u16>().ok()?)))
            .filter(|(_, port)| *port != 0)
            .and_then(|(host, port)| {
                match payedge_filters::host::parse_host(host.as_bytes()).ok()? {
                    payedge_filters::host::Host::Name(name) if !host.contains(':') => {
                        Some(ProviderAddress {
                            host: name,
                            port,
                            ip: None,
                        })
                    }
                    _ => None,
                }
            });
        if parsed.is_none() {
            self.issue(
                key,
                format!("{text:?} is not ip:port or host:port (a port from 1 to 65535)"),
            );
        }
        parsed
    }
}

fn names(info: &CertificateInfo) -> String {
    if info.dns_names.is_empty() {
        return "none".into();
    }
    info.dns_names
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Listener addresses must not overlap: two services cannot bind one port, and `0.0.0.0:P`
/// (or `[::]:P`, dual-stack) takes P on every address. `(key, address, defaulted)` in; each
/// clash out as `(key, message)`.
pub(super) fn clashing_listeners(
    listeners: &[(&str, Option<SocketAddr>, bool)],
) -> Vec<(String, String)> {
    let mut seen: Vec<(SocketAddr, &str)> = Vec::new();
    let mut clashes = Vec::new();
    for (key, addr, defaulted) in listeners {
        let Some(addr) = addr else { continue };
        match seen.iter().find(|(other, _)| overlap(*other, *addr)) {
            Some((_, first)) => {
                let default = if *defaulted {
                    format!(" ({key} defaults to {addr})")
                } else {
                    String::new()
                };
                clashes.push((
                    key.to_string(),
                    format!("must differ from {first}{default}"),
                ));
            }
            None => seen.push((*addr, key)),
        }
    }
    clashes
}

fn overlap(a: SocketAddr, b: SocketAddr) -> bool {
    let covers = |wide: SocketAddr, other: SocketAddr| {
        wide.ip().is_unspecified() && (wide.is_ipv6() || other.is_ipv4())
    };
    a.port() == b.port() && (a.ip() == b.ip() || covers(a, b) || covers(b, a))
}
