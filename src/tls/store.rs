//! The certificates a TLS listener serves, chosen by SNI, behind one swappable pointer: a new set
//! (rotated files, a reload) replaces the old one whole, and a handshake in progress keeps the set
//! it started with.

use std::sync::Arc;

use arc_swap::ArcSwap;
use payedge_filters::server_names::ServerNameTable;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::config::ServerCertificate;

#[derive(Debug)]
struct Served {
    table: ServerNameTable,
    /// In configuration order; the first is the default.
    keys: Vec<Arc<CertifiedKey>>,
}

impl Served {
    fn new(certificates: &[ServerCertificate]) -> Self {
        // Validation refused names claimed twice; were one to slip through, the first claim wins.
        let table = ServerNameTable::new(certificates.iter().map(|c| c.hosts.as_slice()))
            .unwrap_or_default();
        Self {
            table,
            keys: certificates
                .iter()
                .map(|c| Arc::clone(&c.pair.certified))
                .collect(),
        }
    }
}

#[derive(Debug)]
pub struct CertificateStore {
    served: ArcSwap<Served>,
}

impl CertificateStore {
    pub fn new(certificates: &[ServerCertificate]) -> Self {
        Self {
            served: ArcSwap::from_pointee(Served::new(certificates)),
        }
    }

    /// Serves `certificates` from the next handshake on.
    pub fn replace(&self, certificates: &[ServerCertificate]) {
        self.served.store(Arc::new(Served::new(certificates)));
    }

    /// The certificate served for `server_name` (`None`: no SNI).
    pub fn choose(&self, server_name: Option<&str>) -> Option<Arc<CertifiedKey>> {
        let served = self.served.load();
        let index = server_name
            .and_then(|name| served.table.lookup(name))
            .unwrap_or(0);
        served.keys.get(index).cloned()
    }
}

impl ResolvesServerCert for CertificateStore {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.choose(hello.server_name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::{Authority, Validity, read_key_pair};
    use payedge_filters::server_names::HostPattern;

    fn certificate(ca: &Authority, dir: &std::path::Path, host: &str) -> ServerCertificate {
        let issued = ca.server(&[host], Validity::days(30)).unwrap();
        let (cert, key) = (
            dir.join(format!("{host}.pem")),
            dir.join(format!("{host}.key")),
        );
        std::fs::write(&cert, issued.cert_pem).unwrap();
        std::fs::write(&key, issued.key_pem).unwrap();
        ServerCertificate {
            label: host.to_string(),
            hosts: vec![HostPattern::parse(host).unwrap()],
            pair: read_key_pair(&cert, &key).unwrap(),
        }
    }

    fn served(store: &CertificateStore, name: Option<&str>) -> Vec<u8> {
        store.choose(name).unwrap().cert[0].to_vec()
    }

    #[test]
    fn a_replaced_set_serves_from_the_next_handshake() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Authority::new("store").unwrap();
        let blue = certificate(&ca, dir.path(), "blue.smartpay.com");
        let green = certificate(&ca, dir.path(), "green.smartpay.com");
        let blue_again = certificate(&ca, dir.path(), "blue.smartpay.com");
        let der = |c: &ServerCertificate| c.pair.chain[0].to_vec();

        let store = CertificateStore::new(&[blue.clone(), green.clone()]);
        assert_eq!(served(&store, Some("blue.smartpay.com")), der(&blue));
        assert_eq!(served(&store, Some("Green.SmartPay.com.")), der(&green));
        assert_eq!(served(&store, None), der(&blue), "the first is the default");
        let held = store.choose(Some("blue.smartpay.com")).unwrap();

        // Rotation: a renewed blue certificate, listed second now.
        store.replace(&[green.clone(), blue_again.clone()]);
        assert_eq!(served(&store, Some("blue.smartpay.com")), der(&blue_again));
        assert_eq!(served(&store, None), der(&green));
        // What a handshake in progress holds is untouched.
        assert_eq!(held.cert[0].to_vec(), der(&blue));
    }
}
