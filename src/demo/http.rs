//! What the demo connectors share: JSON replies, timestamps, and the Pingora app serving them.

use async_trait::async_trait;
use http::{HeaderName, HeaderValue, Response};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::cards::{self, Fee};
use super::fx;

/// Request bodies above this size are refused by the demo connectors.
const MAX_BODY: usize = 64 * 1024;

pub struct JsonReply {
    pub status: u16,
    pub body: Value,
}

impl JsonReply {
    pub fn new(status: u16, body: Value) -> Self {
        Self { status, body }
    }

    pub fn error(status: u16, code: &str, message: &str) -> Self {
        Self::new(status, json!({"error": {"code": code, "message": message}}))
    }

    fn into_response(self) -> Response<Vec<u8>> {
        let body = self.body.to_string().into_bytes();
        let length = body.len();
        let mut response = Response::new(body);
        *response.status_mut() = http::StatusCode::from_u16(self.status)
            .unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
        let headers = response.headers_mut();
        headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        headers.insert(http::header::CONTENT_LENGTH, HeaderValue::from(length));
        response
    }
}

pub fn now_rfc3339() -> String {
    rfc3339_in(0)
}

pub fn rfc3339_in(seconds: i64) -> String {
    (OffsetDateTime::now_utc() + time::Duration::seconds(seconds))
        .format(&Rfc3339)
        .unwrap_or_default()
}

pub enum ConnectorKind {
    Fx,
    Cards(Fee),
}

/// One simulated payment connector on its own loopback port.
pub struct DemoConnector {
    pub name: String,
    pub kind: ConnectorKind,
    pub tenant_header: HeaderName,
    /// The credential headers the gateway must present.
    pub expected_credentials: Vec<(HeaderName, HeaderValue)>,
}

impl DemoConnector {
    fn handle(&self, method: &http::Method, path: &str, tenant: &str, body: &[u8]) -> JsonReply {
        use http::Method;
        match (&self.kind, method, path) {
            (_, &Method::GET, "/health") => JsonReply::new(200, json!({"status": "ok"})),
            (ConnectorKind::Fx, &Method::POST, "/api/fx/quote") => fx::quote(tenant, body),
            (ConnectorKind::Fx, &Method::GET, "/api/fx/rates") => fx::rates(),
            (ConnectorKind::Cards(fee), &Method::POST, "/api/payments") => {
                cards::pay(&self.name, *fee, tenant, body)
            }
            _ => JsonReply::error(404, "not_found", "this connector has no such endpoint"),
        }
    }
}

#[async_trait]
impl ServeHttp for DemoConnector {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let mut body = Vec::new();
        loop {
            match session.read_request_body().await {
                Ok(Some(chunk)) if body.len() + chunk.len() <= MAX_BODY => {
                    body.extend_from_slice(&chunk)
                }
                Ok(Some(_)) => {
                    return JsonReply::error(413, "body_too_large", "the body exceeds 64 KiB")
                        .into_response();
                }
                Ok(None) => break,
                Err(_) => {
                    return JsonReply::error(400, "bad_body", "the body could not be read")
                        .into_response();
                }
            }
        }
        let req = session.req_header();
        let authorised = self
            .expected_credentials
            .iter()
            .all(|(name, value)| req.headers.get(name) == Some(value));
        if !authorised {
            return JsonReply::error(
                401,
                "bad_credentials",
                "the connector credentials are wrong",
            )
            .into_response();
        }
        let tenant = req
            .headers
            .get(&self.tenant_header)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let method = req.method.clone();
        let path = req.uri.path().to_string();
        self.handle(&method, &path, &tenant, &body).into_response()
    }
}
