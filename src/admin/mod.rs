//! The admin service (its own Pingora service and port): `/healthz`, `/readyz`, the metrics path,
//! the operations console (`/`, `/console/…`) and the operators' `/admin/…` endpoints. It is an
//! `HttpServerApp` rather than a `ServeHttp` so that the notification hub's WebSocket can take
//! over the connection.
//!
//! Who may call what: `/healthz`, `/readyz`, the metrics path and the console's static files
//! anyone who reaches the admin port (they hold no tenant data; the console shows nothing until
//! signed in); every `/admin/…` endpoint only a valid token holding `auth.admin_role`.

mod alerts;
mod console;
mod operators;
mod readiness;
mod traffic;

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use bytes::Bytes;
use http::Method;
use pingora::apps::http_app::ServeHttp;
use pingora::apps::{HttpServerApp, ReusedHttpStream};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::protocols::http::ServerSession;
use pingora::server::ShutdownWatch;
use pingora_prometheus::PrometheusHttpApp;

pub use operators::OperatorAuth;
pub use readiness::ReadinessProbe;
pub use traffic::{TrafficHistory, TrafficSampler};

use crate::events::{Event, EventSink};
use crate::failure::Failure;
use crate::hub::{Hub, HubRequest};
use crate::lifecycle::Lifecycle;
use crate::providers::providers_json;
use crate::runtime::{Reloaded, Runtime};
use crate::tls::{ConnectionFacts, TlsEndpoint};

/// Keep-alive granted to admin clients (Prometheus reuses its connection between scrapes).
const KEEPALIVE_SECONDS: u64 = 60;
const MAX_ALERT_BODY: usize = 16 * 1024;

pub struct AdminApp {
    /// The console's traffic charts; `None` when metrics are off.
    pub traffic: Option<Arc<TrafficHistory>>,
    /// `None` when analytics (and so metrics) are off.
    pub metrics_path: Option<String>,
    pub lifecycle: &'static Lifecycle,
    /// The running configuration: its operators (the `/admin/` endpoints refuse all without an
    /// `auth.admin_role`), its pools, and the reloads.
    pub runtime: Arc<Runtime>,
    pub sink: EventSink,
    /// `None` without an `auth` section.
    pub hub: Option<Arc<Hub>>,
    pub hub_path: String,
    /// `server.admin_tls`: whether a connection's client certificate still counts.
    pub tls: Option<Arc<TlsEndpoint>>,
}

impl AdminApp {
    async fn respond(&self, session: &mut ServerSession) -> pingora::Result<()> {
        let req = session.req_header();
        let path = req.uri.path().to_string();
        let method = req.method.clone();
        let read_only = method == Method::GET || method == Method::HEAD;
        match path.as_str() {
            "/admin/alerts" if method == Method::POST => match self.alert(session).await {
                Ok(body) => write_body(session, 202, body).await,
                Err(failure) => write_failure(session, &failure).await,
            },
            "/admin/reload" if method == Method::POST => match self.reload(session).await {
                Ok((status, body)) => write_body(session, status, body).await,
                Err(failure) => write_failure(session, &failure).await,
            },
            _ if !read_only => write_failure(session, &Failure::MethodNotAllowed).await,
            "/healthz" => write_json(session, 200, r#"{"status":"ok"}"#).await,
            "/readyz" if self.lifecycle.is_ready() => {
                write_json(session, 200, r#"{"status":"ready"}"#).await
            }
            "/readyz" if self.lifecycle.is_draining() => {
                write_json(session, 503, r#"{"status":"draining"}"#).await
            }
            "/readyz" => write_json(session, 503, r#"{"status":"starting"}"#).await,
            "/admin/providers" => match self.providers(session.req_header()) {
                Ok(body) => write_body(session, 200, body).await,
                Err(failure) => write_failure(session, &failure).await,
            },
            "/admin/traffic" => match self.operator(session.req_header()) {
                Ok(()) => {
                    let body = self.traffic.as_ref().map_or_else(
                        || serde_json::json!({"disabled": "metrics are off (analytics)"}),
                        |t| t.to_json(),
                    );
                    write_body(session, 200, Bytes::from(body.to_string())).await
                }
                Err(failure) => write_failure(session, &failure).await,
            },
            p if console::asset(p).is_some() => {
                let Some(asset) = console::asset(p) else {
                    return write_failure(session, &Failure::NotFound).await;
                };
                let header = console::response_header(asset, method == Method::HEAD)?;
                session.write_response_header(Box::new(header)).await?;
                let body = if method == Method::HEAD {
                    Bytes::new()
                } else {
                    Bytes::from_static(asset.body)
                };
                session.write_response_body(body, true).await
            }
            "/admin/config" => match self.operator(session.req_header()) {
                Ok(()) => {
                    let body = Bytes::from(self.runtime.describe().to_string());
                    write_body(session, 200, body).await
                }
                Err(failure) => write_failure(session, &failure).await,
            },
            p if Some(p) == self.metrics_path.as_deref() => {
                let (parts, body) = PrometheusHttpApp.response(session).await.into_parts();
                let header: ResponseHeader = parts.into();
                session.write_response_header(Box::new(header)).await?;
                session.write_response_body(Bytes::from(body), true).await
            }
            _ => write_failure(session, &Failure::NotFound).await,
        }
    }

    fn operator(&self, req: &RequestHeader) -> Result<(), Failure> {
        self.runtime
            .current()
            .operators
            .as_ref()
            .ok_or(Failure::Forbidden)?
            .check(req)
    }

    /// `POST /admin/reload`: reads and applies the configuration file now; the outcome as JSON
    /// (200 applied, 422 refused: the running configuration stays).
    async fn reload(&self, session: &mut ServerSession) -> Result<(u16, Bytes), Failure> {
        self.operator(session.req_header())?;
        let runtime = Arc::clone(&self.runtime);
        let outcome = tokio::task::spawn_blocking(move || runtime.reload())
            .await
            .map_err(|_| Failure::Internal)?;
        let status = match outcome {
            Reloaded::Refused { .. } => 422,
            _ => 200,
        };
        Ok((status, Bytes::from(outcome.to_json().to_string())))
    }

    /// `POST /admin/alerts` `{"code": "...", "message": "...", "details": {...}}`: a
    /// `system.alert` event from an operator.
    async fn alert(&self, session: &mut ServerSession) -> Result<Bytes, Failure> {
        self.operator(session.req_header())?;
        let body = read_body(session, MAX_ALERT_BODY).await?;
        let alert = alerts::parse(&body)?;
        let event = Event::alert(
            self.sink.source(),
            &alert.code,
            &alert.message,
            alert.details,
        );
        let id = event.id().to_owned();
        self.sink.publish(event);
        Ok(Bytes::from(serde_json::json!({ "id": id }).to_string()))
    }

    fn providers(&self, req: &RequestHeader) -> Result<Bytes, Failure> {
        self.operator(req)?;
        Ok(Bytes::from(
            providers_json(&self.runtime.current().pools, Instant::now()).to_string(),
        ))
    }
}

async fn read_body(session: &mut ServerSession, limit: usize) -> Result<Vec<u8>, Failure> {
    // A client waiting for `100 Continue` (curl sends the expectation for bodies over 1 MiB, or
    // when told to) would otherwise wait out its own timeout before sending the body.
    if crate::proxy::expects_continue(session.req_header()) {
        session
            .write_continue_response()
            .await
            .map_err(|_| Failure::BadRequest)?;
    }
    let mut body = Vec::new();
    loop {
        match session.read_request_body().await {
            Ok(Some(chunk)) if body.len() + chunk.len() <= limit => body.extend_from_slice(&chunk),
            // Too large: answered before the body's end, Pingora closes the connection.
            Ok(Some(_)) => return Err(Failure::BadRequest),
            Ok(None) => return Ok(body),
            Err(_) => {
                // The framing is lost (a malformed chunk Pingora then counts as the body's end):
                // what follows on the connection is not a request.
                session.set_keepalive(None);
                return Err(Failure::BadRequest);
            }
        }
    }
}

async fn write_json(
    session: &mut ServerSession,
    status: u16,
    body: &'static str,
) -> pingora::Result<()> {
    write_body(session, status, Bytes::from_static(body.as_bytes())).await
}

async fn write_body(session: &mut ServerSession, status: u16, body: Bytes) -> pingora::Result<()> {
    write_body_with(session, status, body, &[]).await
}

async fn write_body_with(
    session: &mut ServerSession,
    status: u16,
    body: Bytes,
    extra: &[(http::HeaderName, http::HeaderValue)],
) -> pingora::Result<()> {
    let mut header = ResponseHeader::build(status, Some(3 + extra.len()))?;
    if !body.is_empty() {
        header.insert_header(http::header::CONTENT_TYPE, "application/json")?;
    }
    header.insert_header(http::header::CONTENT_LENGTH, body.len().to_string())?;
    header.insert_header(http::header::CACHE_CONTROL, "no-store")?;
    for (name, value) in extra {
        header.insert_header(name.clone(), value.clone())?;
    }
    session.write_response_header(Box::new(header)).await?;
    session.write_response_body(body, true).await
}

pub(crate) async fn write_failure(
    session: &mut ServerSession,
    failure: &Failure,
) -> pingora::Result<()> {
    write_failure_with(session, failure, &[]).await
}

async fn write_failure_with(
    session: &mut ServerSession,
    failure: &Failure,
    extra: &[(http::HeaderName, http::HeaderValue)],
) -> pingora::Result<()> {
    let request_id = uuid::Uuid::now_v7().to_string();
    let body = failure.body(&request_id);
    let mut header = failure.response_header(&request_id, body.len())?;
    for (name, value) in extra {
        header.insert_header(name.clone(), value.clone())?;
    }
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
                // Only the kind: the error's context can quote the raw request, tokens included.
                tracing::debug!(error = e.etype().as_str(), "admin: cannot read request");
                if *e.etype() == pingora::ErrorType::InvalidHTTPHeader {
                    // A head HTTP cannot parse is told so (the connection then closes), as the
                    // proxy port's requests are; a broken connection gets nothing.
                    session.set_keepalive(None);
                    let _ = write_failure(&mut session, &Failure::BadRequest).await;
                }
                return None;
            }
        }
        // As on the proxy port: a connection whose handshake a reload no longer vouches for
        // (its client CAs replaced, or a certificate made required) is refused, hub upgrades
        // included, and closed; a new one is verified under the current settings.
        if let (Some(facts), Some(tls)) = (ConnectionFacts::of(session.digest()), &self.tls)
            && tls.is_stale(facts)
        {
            session.set_keepalive(None);
            let _ = write_failure(&mut session, &Failure::StaleClientCertificate).await;
            return None;
        }
        // Pingora has turned keep-alive off for `Connection: close` and for HTTP/1.0 without
        // `Connection: keep-alive`; only a connection it kept gets the admin's timeout.
        if *shutdown.borrow() || session.get_keepalive().is_none() {
            session.set_keepalive(None);
        } else {
            session.set_keepalive(Some(KEEPALIVE_SECONDS));
        }
        let hub_request = match &self.hub {
            Some(hub) => hub.classify(session.req_header()),
            None if session.req_header().uri.path().starts_with(&self.hub_path) => {
                let _ = write_failure(&mut session, &Failure::HubDisabled).await;
                return None;
            }
            None => HubRequest::NotHub,
        };
        let result = match (hub_request, &self.hub) {
            (HubRequest::Connect, Some(hub)) => {
                // The connection is the hub's from here on; it is never reused for HTTP.
                hub.connect(session, shutdown).await;
                return None;
            }
            (HubRequest::Negotiate, Some(hub)) => {
                let answer = hub.negotiate(session.req_header());
                match answer.result {
                    Ok((status, body)) => {
                        write_body_with(&mut session, status, Bytes::from(body), &answer.headers)
                            .await
                    }
                    Err(failure) => {
                        write_failure_with(&mut session, &failure, &answer.headers).await
                    }
                }
            }
            _ => self.respond(&mut session).await,
        };
        if let Err(e) = result {
            tracing::debug!(error = e.etype().as_str(), "admin: cannot answer");
            return None;
        }
        let settings = pingora::apps::HttpPersistentSettings::for_session(&session);
        match session.finish().await {
            Ok(stream) => stream.map(|s| ReusedHttpStream::from_reusable_stream(s, settings)),
            Err(_) => None,
        }
    }
}
