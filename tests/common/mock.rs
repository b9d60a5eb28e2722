//! A mock provider on a real TCP port: records every request and answers as told.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::http_server::HttpServer;

#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn headers_named(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

#[derive(Debug, Clone)]
pub struct MockResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub delay: Duration,
}

impl MockResponse {
    pub fn json(status: u16, body: serde_json::Value) -> Self {
        Self {
            status,
            headers: vec![("Content-Type".into(), "application/json".into())],
            body: body.to_string().into_bytes(),
            delay: Duration::ZERO,
        }
    }

    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    pub fn after(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }
}

pub struct MockUpstream {
    pub addr: SocketAddr,
    pub name: String,
    received: Arc<Mutex<Vec<Recorded>>>,
    _server: HttpServer,
}

impl MockUpstream {
    /// A provider named `name` that answers 200 with `{"provider": name}`.
    pub fn start(name: &str) -> Self {
        let owned = name.to_string();
        Self::with(name, move |_| {
            MockResponse::json(200, serde_json::json!({"provider": owned}))
        })
    }

    /// A provider that records each request, then answers with `responder`'s reply (after its
    /// delay). Dropping it closes the port and every connection, as a provider that goes away.
    pub fn with(
        name: &str,
        responder: impl Fn(&Recorded) -> MockResponse + Send + Sync + 'static,
    ) -> Self {
        let received = Arc::new(Mutex::new(Vec::new()));
        let recording = Arc::clone(&received);
        let server = HttpServer::start(Arc::new(move |request: &Recorded| {
            recording.lock().unwrap().push(request.clone());
            responder(request)
        }));
        Self {
            addr: server.addr,
            name: name.to_string(),
            received,
            _server: server,
        }
    }

    pub fn received(&self) -> Vec<Recorded> {
        self.received.lock().unwrap().clone()
    }

    pub fn count(&self) -> usize {
        self.received.lock().unwrap().len()
    }

    pub fn last(&self) -> Recorded {
        self.received().pop().expect("the mock received nothing")
    }
}

/// An FX provider answering every quote with 201 and a JSON body whose amount is the JSON number
/// 1000.10 and whose id carries the request's `X-Request-Id`.
pub fn fx_quote_provider() -> MockUpstream {
    MockUpstream::with("fx", |req| MockResponse {
        status: 201,
        headers: vec![("Content-Type".into(), "application/json".into())],
        body: format!(
            r#"{{"id":"fxq_{}","from":"USD","to":"GBP","amount":1000.10,"rate":"0.7892"}}"#,
            req.header("x-request-id").unwrap_or("none")
        )
        .into_bytes(),
        delay: Duration::ZERO,
    })
}
