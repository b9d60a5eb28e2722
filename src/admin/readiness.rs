//! Readiness: the proxy counts as listening once its address accepts a TCP connection.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

use crate::lifecycle::Lifecycle;
use crate::server::OnReady;

const PROBE_INTERVAL: Duration = Duration::from_millis(20);

pub struct ReadinessProbe {
    pub proxy_addr: SocketAddr,
    pub lifecycle: &'static Lifecycle,
    pub on_ready: Option<OnReady>,
}

#[async_trait]
impl BackgroundService for ReadinessProbe {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let target = loopback_for(self.proxy_addr);
        loop {
            if tokio::net::TcpStream::connect(target).await.is_ok() {
                self.lifecycle.mark_listening();
                tracing::info!(listen = %self.proxy_addr, "proxy is accepting connections");
                if let Some(on_ready) = &self.on_ready {
                    on_ready();
                }
                return;
            }
            tokio::select! {
                _ = tokio::time::sleep(PROBE_INTERVAL) => {}
                _ = shutdown.changed() => return,
            }
        }
    }
}

/// The address to reach a listener bound to `addr` from this host.
fn loopback_for(addr: SocketAddr) -> SocketAddr {
    let ip = match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, addr.port())
}
