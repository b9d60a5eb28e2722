//! The admin service (its own Pingora service and port): `/healthz`, `/readyz` and the metrics
//! path. It is an `HttpServerApp` rather than a `ServeHttp` so that later endpoints (the
//! notification hub's WebSocket) can take over the connection.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use http::Method;
use pingora::apps::http_app::ServeHttp;
use pingora::apps::{HttpServerApp, ReusedHttpStream};
use pingora::http::ResponseHeader;
use pingora::protocols::http::ServerSession;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use pingora_prometheus::PrometheusHttpApp;

use crate::failure::Failure;
use crate::lifecycle::Lifecycle;

/// Keep-alive granted to admin clients (Prometheus reuses its connection between scrapes).
const KEEPALIVE_SECONDS: u64 = 60;

pub struct AdminApp {
    /// `None` when analytics (and so metrics) are off.
    metrics_path: Option<String>,
    lifecycle: &'static Lifecycle,
}

impl AdminApp {
    pub fn new(metrics_path: Option<String>, lifecycle: &'static Lifecycle) -> Self {
        Self {
            metrics_path,
            lifecycle,
        }
    }

    async fn respond(&self, session: &mut ServerSession) -> pingora::Result<()> {
        let req = session.req_header();
        let path = req.uri.path().to_string();
        let method = req.method.clone();
        if method != Method::GET && method != Method::HEAD {
            return write_failure(session, &Failure::MethodNotAllowed).await;
        }
        match path.as_str() {
            "/healthz" => write_json(session, 200, r#"{"status":"ok"}"#).await,
            "/readyz" if self.lifecycle.is_ready() => {
                write_json(session, 200, r#"{"status":"ready"}"#).await
            }
            "/readyz" if self.lifecycle.is_draining() => {
                write_json(session, 503, r#"{"status":"draining"}"#).await
            }
            "/readyz" => write_json(session, 503, r#"{"status":"starting"}"#).await,
            p if Some(p) == self.metrics_path.as_deref() => {
                let (parts, body) = PrometheusHttpApp.response(session).await.into_parts();
                let header: ResponseHeader = parts.into();
                session.write_response_header(Box::new(header)).await?;
                session.write_response_body(Bytes::from(body), true).await
            }
            _ => write_failure(session, &Failure::NotFound).await,
        }
    }
}

async fn write_json(
    session: &mut ServerSession,
    status: u16,
    body: &'static str,
) -> pingora::Result<()> {
    let mut header = ResponseHeader::build(status, Some(3))?;
    header.insert_header(http::header::CONTENT_TYPE, "application/json")?;
    header.insert_header(http::header::CONTENT_LENGTH, body.len().to_string())?;
    header.insert_header(http::header::CACHE_CONTROL, "no-store")?;
    session.write_response_header(Box::new(header)).await?;
    session
        .write_response_body(Bytes::from_static(body.as_bytes()), true)
        .await
}

async fn write_failure(session: &mut ServerSession, failure: &Failure) -> pingora::Result<()> {
    let request_id = uuid::Uuid::now_v7().to_string();
    let body = failure.body(&request_id);
    let header = failure.response_header(&request_id, body.len())?;
    session.write_response_header(Box::new(header)).await?;
    session.write_response_body(body, true).await
}

#[async_trait]
impl HttpServerApp for AdminApp {
    async fn process_new_http(
        self: &Arc<Self>,
        mut session: ServerSession,
        shutdown: &ShutdownWatch,
    ) -> Option<ReusedHttpStream> {
        match session.read_request().await {
            Ok(true) => {}
            Ok(false) => return None,
            Err(e) => {
                tracing::debug!(error = %e, "admin: cannot read request");
                return None;
            }
        }
        let keepalive = (!*shutdown.borrow()).then_some(KEEPALIVE_SECONDS);
        session.set_keepalive(keepalive);
        if let Err(e) = self.respond(&mut session).await {
            tracing::debug!(error = %e, "admin: cannot answer");
            return None;
        }
        let settings = pingora::apps::HttpPersistentSettings::for_session(&session);
        match session.finish().await {
            Ok(stream) => stream.map(|s| ReusedHttpStream::from_reusable_stream(s, settings)),
            Err(_) => None,
        }
    }
}

/// Marks the proxy as listening once its address accepts a TCP connection.
pub struct ReadinessProbe {
    pub proxy_addr: std::net::SocketAddr,
    pub lifecycle: &'static Lifecycle,
    pub on_ready: Option<crate::server::OnReady>,
}

const PROBE_INTERVAL: Duration = Duration::from_millis(20);

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
fn loopback_for(addr: std::net::SocketAddr) -> std::net::SocketAddr {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
    let ip = match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    std::net::SocketAddr::new(ip, addr.port())
}
