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
