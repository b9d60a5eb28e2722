//! Where a provider is reached: its addresses (fixed, or resolved in the background and swapped
//! in), and the Pingora peer each attempt starts from, with the provider's TLS settings.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use pingora::prelude::HttpPeer;
use pingora::protocols::l4::socket::SocketAddr as PeerAddr;

use crate::config::{ProviderAddress, ProviderSettings, Timeouts, UpstreamTls};

pub struct Endpoint {
    pub address: ProviderAddress,
    pub tls: Option<UpstreamTls>,
    addrs: ArcSwap<Vec<SocketAddr>>,
    next: AtomicUsize,
    template: HttpPeer,
}

impl Endpoint {
    /// `group` keeps connections of different providers apart even when they share an address
    /// and a server name (their CAs or client certificates may differ).
    pub fn new(settings: &ProviderSettings, timeouts: &Timeouts, group: u64) -> Self {
        let fixed: Vec<SocketAddr> = settings.address.socket_addr().into_iter().collect();
        let placeholder = fixed
            .first()
            .copied()
            .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], settings.address.port)));
        let tls = settings.tls.clone();
        let sni = tls.as_ref().map(|t| t.sni.clone()).unwrap_or_default();
        let mut template = HttpPeer::new(placeholder, tls.is_some(), sni);
        if let Some(tls) = &tls {
            template.options.ca = tls.ca.clone();
            template.client_cert_key = tls.client_cert.clone();
            template.group_key = group ^ tls.identity;
        }
        template.options.connection_timeout = Some(timeouts.connect);
        template.options.total_connection_timeout = Some(timeouts.connect);
        template.options.read_timeout = Some(timeouts.read);
        template.options.write_timeout = Some(timeouts.write);
        template.options.idle_timeout = Some(timeouts.idle);
        Self {
            address: settings.address.clone(),
            tls,
            addrs: ArcSwap::from_pointee(fixed),
            next: AtomicUsize::new(0),
            template,
        }
    }

    /// Whether the address is a host name the resolver looks up.
    pub fn is_named(&self) -> bool {
        self.address.ip.is_none()
    }

    /// The address of the next connection: the resolved ones in turn. `None` until a name
    /// resolved.
    pub fn addr(&self) -> Option<SocketAddr> {
        let addrs = self.addrs.load();
        if addrs.is_empty() {
            return None;
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed) % addrs.len();
        addrs.get(i).copied()
    }

    pub fn addrs(&self) -> Arc<Vec<SocketAddr>> {
        self.addrs.load_full()
    }

    pub fn set_addrs(&self, addrs: Vec<SocketAddr>) {
        self.addrs.store(Arc::new(addrs));
    }

    /// The peer for one attempt, its timeouts cut to `remaining`.
    pub fn peer(&self, timeouts: &Timeouts, remaining: Duration) -> Option<HttpPeer> {
        let mut peer = self.template.clone();
        peer._address = PeerAddr::Inet(self.addr()?);
        peer.options.connection_timeout = Some(timeouts.connect.min(remaining));
        peer.options.total_connection_timeout = Some(timeouts.connect.min(remaining));
        peer.options.read_timeout = Some(timeouts.read.min(remaining));
        peer.options.write_timeout = Some(timeouts.write.min(remaining));
        Some(peer)
    }

    /// The peer a health check starts from (its address is set per check).
    pub fn template(&self) -> &HttpPeer {
        &self.template
    }
}
