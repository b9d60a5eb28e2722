//! The official SignalR client (`@microsoft/signalr`, tests/signalr/client.js) as a Node process
//! a test drives through stdin and reads through the JSON lines it prints.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex, Once};
use std::time::{Duration, Instant};

use serde_json::Value;

const CLIENT_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/signalr");

/// A raw WebSocket to the hub, for what the official client would not do.
pub type RawWs =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The upgrade request for a raw WebSocket to the hub at `admin`, with `token`.
pub fn upgrade_request(
    admin: SocketAddr,
    token: &str,
) -> tokio_tungstenite::tungstenite::handshake::client::Request {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut request = format!("ws://{admin}/hubs/notifications")
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert("Authorization", format!("Bearer {token}").parse().unwrap());
    request
}

/// Opens a raw WebSocket to the hub at `admin` with `token` (no SignalR handshake yet).
pub async fn open_raw(admin: SocketAddr, token: &str) -> RawWs {
    tokio_tungstenite::connect_async(upgrade_request(admin, token))
        .await
        .expect("upgrade failed")
        .0
}

/// An FX quote for `tenant` through the proxy (request id `id`), whose event the hub delivers.
pub fn quote(gw: &super::Payedge, tenant: &str, id: &str) {
    let resp = super::client::request(
        gw.proxy,
        "POST",
        "/api/fx/quote",
        &[
            ("X-Tenant", tenant),
            ("Authorization", &super::bearer(tenant)),
            ("X-Request-Id", id),
        ],
        b"{}",
    )
    .unwrap();
    assert_eq!(resp.status, 201, "{}", resp.text());
}

/// The correlation ids of the events among `messages`, in order.
pub fn correlation_ids(messages: &[Value]) -> Vec<String> {
    messages
        .iter()
        .filter_map(|m| m["correlationid"].as_str().map(str::to_owned))
        .collect()
}

/// Installs the client's locked dependencies once (`npm ci`) when they are missing.
pub fn ensure_client() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        let installed = std::path::Path::new(CLIENT_DIR)
            .join("node_modules/@microsoft/signalr/package.json")
            .exists();
        if !installed {
            let status = Command::new("npm")
                .args(["ci", "--no-audit", "--no-fund"])
                .current_dir(CLIENT_DIR)
                .status()
                .expect("npm is needed for the hub tests");
            assert!(status.success(), "npm ci failed in tests/signalr");
        }
    });
}

pub fn hub_url(admin: SocketAddr) -> String {
    format!("http://{admin}/hubs/notifications")
}

pub struct NodeClient {
    child: Child,
    stdin: ChildStdin,
    lines: Arc<Mutex<Vec<Value>>>,
}

impl NodeClient {
    /// Starts a client; `flags` as client.js takes them (`--skip-negotiation`, `--reconnect`).
    pub fn start(admin: SocketAddr, token: &str, flags: &[&str]) -> Self {
        Self::start_url(&hub_url(admin), token, flags, &[])
    }

    /// A client of the hub at `url` (`https://…` for TLS), with extra environment (for
    /// `NODE_EXTRA_CA_CERTS`).
    pub fn start_url(url: &str, token: &str, flags: &[&str], env: &[(&str, &str)]) -> Self {
        ensure_client();
        let mut child = Command::new("node")
            .arg(format!("{CLIENT_DIR}/client.js"))
            .arg(url)
            .arg(token)
            .args(flags)
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("node is needed for the hub tests");
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&lines);
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Ok(value) = serde_json::from_str(&line) {
                    sink.lock().unwrap().push(value);
                }
            }
        });
        Self {
            child,
            stdin,
            lines,
        }
    }

    /// Starts a client and waits until it is connected.
    pub fn connected(admin: SocketAddr, token: &str, flags: &[&str]) -> Self {
        let client = Self::start(admin, token, flags);
        client.wait_for("connected", |l| l["event"] == "connected");
        client
    }

    pub fn lines(&self) -> Vec<Value> {
        self.lines.lock().unwrap().clone()
    }

    /// The envelopes received, in order.
    pub fn messages(&self) -> Vec<Value> {
        self.lines()
            .into_iter()
            .filter(|l| l["event"] == "message")
            .map(|l| l["envelope"].clone())
            .collect()
    }

    pub fn wait_for(&self, what: &str, predicate: impl Fn(&Value) -> bool) -> Value {
        self.wait_for_within(what, Duration::from_secs(10), predicate)
    }

    pub fn wait_for_within(
        &self,
        what: &str,
        limit: Duration,
        predicate: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(line) = self.lines().into_iter().find(|l| predicate(l)) {
                return line;
            }
            assert!(
                Instant::now() < deadline,
                "client: no {what} within {limit:?}; saw {:?}",
                self.lines()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn wait_messages(&self, count: usize) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let messages = self.messages();
            if messages.len() >= count {
                return messages;
            }
            assert!(
                Instant::now() < deadline,
                "client: {} of {count} messages; saw {:?}",
                messages.len(),
                self.lines()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn command(&mut self, line: &str) {
        writeln!(self.stdin, "{line}").expect("the client is gone");
        self.stdin.flush().unwrap();
    }

    /// `JoinTenantGroup(tenant, last)` and the client's `invoked` line for it (its `result`).
    pub fn join_from(&mut self, tenant: &str, last: Option<&str>) -> Value {
        let before = self.lines().len();
        match last {
            Some(last) => self.command(&format!("join {tenant} {last}")),
            None => self.command(&format!("join {tenant}")),
        }
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(line) = self.lines()[before..]
                .iter()
                .find(|l| l["event"] == "invoked" && l["method"] == "JoinTenantGroup")
            {
                return line.clone();
            }
            assert!(Instant::now() < deadline, "no answer to JoinTenantGroup");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Invokes a hub method and returns the client's `invoked` line for it.
    pub fn invoke(&mut self, command: &str, method: &str, argument: &str) -> Value {
        let before = self.lines().len();
        self.command(&format!("{command} {argument}"));
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(line) = self.lines()[before..].iter().find(|l| {
                l["event"] == "invoked" && l["method"] == method && l["argument"] == argument
            }) {
                return line.clone();
            }
            assert!(
                Instant::now() < deadline,
                "no answer to {method}({argument})"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for NodeClient {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
