//! A mock provider on a real TCP port: records every request and answers as told.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

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

type Responder = dyn Fn(&Recorded) -> MockResponse + Send + Sync;

pub struct MockUpstream {
    pub addr: SocketAddr,
    pub name: String,
    received: Arc<Mutex<Vec<Recorded>>>,
    server: Arc<tiny_http::Server>,
}

const WORKERS: usize = 8;

impl MockUpstream {
    /// A provider named `name` that answers 200 with `{"provider": name}`.
    pub fn start(name: &str) -> Self {
        let owned = name.to_string();
        Self::with(name, move |_| {
            MockResponse::json(200, serde_json::json!({"provider": owned}))
        })
    }

    pub fn with(
        name: &str,
        responder: impl Fn(&Recorded) -> MockResponse + Send + Sync + 'static,
    ) -> Self {
        let server = Arc::new(tiny_http::Server::http("127.0.0.1:0").expect("mock cannot bind"));
        let addr = server
            .server_addr()
            .to_ip()
            .expect("mock has no IP address");
        let received = Arc::new(Mutex::new(Vec::new()));
        let responder: Arc<Responder> = Arc::new(responder);
        for _ in 0..WORKERS {
            let server = Arc::clone(&server);
            let received = Arc::clone(&received);
            let responder = Arc::clone(&responder);
            std::thread::spawn(move || {
                while let Ok(mut request) = server.recv() {
                    let mut body = Vec::new();
                    let _ = request.as_reader().read_to_end(&mut body);
                    let recorded = Recorded {
                        method: request.method().to_string(),
                        path: request.url().to_string(),
                        headers: request
                            .headers()
                            .iter()
                            .map(|h| (h.field.to_string(), h.value.to_string()))
                            .collect(),
                        body,
                    };
                    received.lock().unwrap().push(recorded.clone());
                    let answer = responder(&recorded);
                    std::thread::sleep(answer.delay);
                    let mut response =
                        tiny_http::Response::from_data(answer.body).with_status_code(answer.status);
                    for (name, value) in &answer.headers {
                        if let Ok(h) =
                            tiny_http::Header::from_bytes(name.as_bytes(), value.as_bytes())
                        {
                            response.add_header(h);
                        }
                    }
                    let _ = request.respond(response);
                }
            });
        }
        Self {
            addr,
            name: name.to_string(),
            received,
            server,
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

impl Drop for MockUpstream {
    fn drop(&mut self) {
        self.server.unblock();
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
