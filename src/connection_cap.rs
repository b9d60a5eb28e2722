//! At most `server.limits.max_connections_per_client` open connections per client address, on
//! the proxy and on the admin port (where hub clients hold their WebSockets): hundreds of idle or
//! trickling sockets from one address cannot take what everyone else needs. Peers listed in
//! `server.trusted_proxies` are not capped: they carry many clients.
//!
//! The cap wraps the Pingora app, outside TLS and the PROXY header, so a refused connection costs
//! no handshake: it is closed as soon as it is accepted, counted in
//! `payedge_connections_refused_total{listener,reason="per_client_limit"}`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use pingora::apps::ServerApp;
use pingora::protocols::Stream;
use pingora::server::ShutdownWatch;
use prometheus::IntCounter;

use crate::runtime::Runtime;

/// Open connections per client address.
#[derive(Debug, Default)]
pub struct Tally {
    open: Mutex<HashMap<IpAddr, u32>>,
}

/// One admitted connection; dropping it gives its place back.
#[derive(Debug)]
pub struct Admitted {
    tally: Arc<Tally>,
    ip: IpAddr,
}

impl Tally {
    /// A place for one more connection from `ip`, unless it holds `limit` already.
    pub fn admit(self: &Arc<Self>, ip: IpAddr, limit: u32) -> Option<Admitted> {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let held = open.entry(ip).or_insert(0);
        if *held >= limit {
            if *held == 0 {
                open.remove(&ip);
            }
            return None;
        }
        *held += 1;
        Some(Admitted {
            tally: Arc::clone(self),
            ip,
        })
    }

    pub fn held_by(&self, ip: IpAddr) -> u32 {
        let open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        open.get(&ip).copied().unwrap_or(0)
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut open = self
            .tally
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(held) = open.get_mut(&self.ip) {
            *held = held.saturating_sub(1);
            if *held == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

/// The refusals counter of one listener (`proxy` or `admin`).
pub fn refusals_counter(listener: &str) -> prometheus::Result<IntCounter> {
    crate::metrics::listener_counter(
        "payedge_connections_refused_total",
        "Connections closed on accept because their client address held \
         server.limits.max_connections_per_client already.",
        listener,
        &[("reason", "per_client_limit")],
    )
}

/// A Pingora app behind the per-client connection cap.
pub struct Capped<A> {
    app: Arc<A>,
    tally: Arc<Tally>,
    runtime: Arc<Runtime>,
    refused: Option<IntCounter>,
}

impl<A> Capped<A> {
    pub fn new(app: A, runtime: Arc<Runtime>, refused: Option<IntCounter>) -> Self {
        Self {
            app: Arc::new(app),
            tally: Arc::default(),
            runtime,
            refused,
        }
    }

    /// The connection's place, `Ok(None)` when it is not capped, `Err(())` when refused.
    fn admit(&self, stream: &Stream) -> Result<Option<Admitted>, ()> {
        let Some(ip) = stream
            .get_socket_digest()
            .and_then(|d| d.peer_addr().and_then(|a| a.as_inet()).map(|a| a.ip()))
        else {
            return Ok(None);
        };
        let snap = self.runtime.current();
        let server = &snap.config.server;
        let limit = server.max_connections_per_client;
        if limit == 0 || server.trusted_proxies.contains(ip) {
            return Ok(None);
        }
        self.tally.admit(ip, limit).map(Some).ok_or(())
    }
}

#[async_trait]
impl<A: ServerApp + Send + Sync + 'static> ServerApp for Capped<A> {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let Ok(_place) = self.admit(&stream) else {
            if let Some(refused) = &self.refused {
                refused.inc();
            }
            tracing::debug!("connection refused: its client address holds the most it may");
            return None;
        };
        // HTTP/1 keep-alive and HTTP/2 streams are served inside this call: the place is held
        // for the connection's life.
        self.app.process_new(stream, shutdown).await
    }

    async fn cleanup(&self) {
        self.app.cleanup().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_holds_at_most_the_limit_and_places_come_back() {
        let tally = Arc::new(Tally::default());
        let (a, b): (IpAddr, IpAddr) = ("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap());
        let first = tally.admit(a, 2).unwrap();
        let second = tally.admit(a, 2).unwrap();
        assert!(tally.admit(a, 2).is_none(), "a third from the same address");
        let other = tally.admit(b, 2);
        assert!(other.is_some(), "another address is not affected");
        drop(first);
        let again = tally.admit(a, 2);
        assert!(again.is_some(), "a closed connection gives its place back");
        drop((second, again, other));
        assert_eq!(tally.held_by(a), 0);
        assert!(
            tally.open.lock().unwrap().is_empty(),
            "no entry left behind"
        );
    }
}
