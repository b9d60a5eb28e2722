//! A mock provider as its own process (tests/support/provider.py), so a test can kill it with
//! SIGKILL like a crashed connector, start it again on the same port, or switch its mode. Its
//! counts come from the JSON lines it flushes as it works, so they survive the kill.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

pub struct ProviderProcess {
    pub name: String,
    pub addr: SocketAddr,
    child: Option<Child>,
    events: Arc<Mutex<Vec<Value>>>,
    tls: Option<ProviderTls>,
    dual_stack: bool,
}

/// HTTPS for a provider process: its certificate, and the CA its clients' certificates must
/// come from (`None`: no client certificate asked for).
#[derive(Debug, Clone)]
pub struct ProviderTls {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: Option<PathBuf>,
}

impl ProviderProcess {
    pub fn start(name: &str) -> Self {
        Self::spawn(name, 0, Arc::new(Mutex::new(Vec::new())), None, false)
    }

    /// A provider speaking HTTPS.
    pub fn start_tls(name: &str, tls: ProviderTls) -> Self {
        Self::spawn(name, 0, Arc::new(Mutex::new(Vec::new())), Some(tls), false)
    }

    /// A provider speaking HTTPS on `[::]` with IPV6_V6ONLY off: reachable on 127.0.0.1 and on
    /// ::1 alike (for a provider named `localhost`, which may resolve to either). `addr` stays
    /// the 127.0.0.1 one.
    pub fn start_tls_dual_stack(name: &str, tls: ProviderTls) -> Self {
        Self::spawn(name, 0, Arc::new(Mutex::new(Vec::new())), Some(tls), true)
    }

    fn spawn(
        name: &str,
        port: u16,
        events: Arc<Mutex<Vec<Value>>>,
        tls: Option<ProviderTls>,
        dual_stack: bool,
    ) -> Self {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/provider.py");
        let mut command = Command::new("python3");
        command.args([script, "--name", name, "--port", &port.to_string()]);
        if let Some(tls) = &tls {
            command
                .arg("--tls-cert")
                .arg(&tls.cert)
                .arg("--tls-key")
                .arg(&tls.key);
            if let Some(ca) = &tls.client_ca {
                command.arg("--client-ca").arg(ca);
            }
        }
        if dual_stack {
            command.arg("--dual-stack");
        }
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("python3 is needed for the provider processes");
        let stdout = child.stdout.take().expect("piped stdout");
        // Drained so the process never blocks on it; the start of it kept, to say why a
        // provider did not start.
        let stderr_pipe = child.stderr.take().expect("piped stderr");
        let stderr = Arc::new(Mutex::new(String::new()));
        let stderr_sink = Arc::clone(&stderr);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr_pipe).lines() {
                let Ok(line) = line else { break };
                let mut kept = stderr_sink.lock().unwrap();
                if kept.len() < 16_384 {
                    kept.push_str(&line);
                    kept.push('\n');
                }
            }
        });
        let (tx, rx) = mpsc::channel();
        let sink = Arc::clone(&events);
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let Ok(event) = serde_json::from_str::<Value>(&line) else {
                    continue;
                };
                if event["event"] == "listening" {
                    let _ = tx.send(event["port"].as_u64().unwrap_or(0) as u16);
                } else {
                    sink.lock().unwrap().push(event);
                }
            }
        });
        let port = rx
            .recv_timeout(Duration::from_secs(10))
            .unwrap_or_else(|e| {
                let status = child.try_wait().ok().flatten();
                std::thread::sleep(Duration::from_millis(100));
                panic!(
                    "the provider process {name} did not start ({e}; exit status {status:?}); \
                 stderr:\n{}",
                    stderr.lock().unwrap()
                )
            });
        Self {
            name: name.to_string(),
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            child: Some(child),
            events,
            tls,
            dual_stack,
        }
    }

    /// TLS handshakes the provider saw: `(ok, client subject or error)`.
    pub fn handshakes(&self) -> Vec<(bool, String)> {
        self.events
            .lock()
            .unwrap()
            .iter()
            .filter(|e| e["event"] == "handshake")
            .map(|e| {
                let ok = e["ok"].as_bool().unwrap_or(false);
                let detail = if ok {
                    &e["client_subject"]
                } else {
                    &e["error"]
                };
                (ok, detail.as_str().unwrap_or("").to_string())
            })
            .collect()
    }

    /// Requests received on `/api/…` (health checks and mode switches excluded).
    pub fn received(&self) -> Vec<Value> {
        self.api_events("received")
    }

    /// Responses written to `/api/…` requests.
    pub fn answered(&self) -> Vec<Value> {
        self.api_events("answered")
    }

    fn api_events(&self, kind: &str) -> Vec<Value> {
        self.events
            .lock()
            .unwrap()
            .iter()
            .filter(|e| {
                e["event"] == kind && e["path"].as_str().is_some_and(|p| p.starts_with("/api/"))
            })
            .cloned()
            .collect()
    }

    /// How many `/api/…` requests with `method` the provider received. Its events arrive through
    /// a pipe read by another thread, so a client can hold its response before the line saying
    /// the request was received is read: the count is taken once it has held still for 50 ms.
    pub fn received_count(&self, method: &str) -> usize {
        let count = || {
            self.received()
                .iter()
                .filter(|e| e["method"] == method)
                .count()
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        let mut last = count();
        loop {
            std::thread::sleep(std::time::Duration::from_millis(50));
            let now = count();
            if now == last || std::time::Instant::now() > deadline {
                return now;
            }
            last = now;
        }
    }

    /// `ok`, `503`, `blackhole` or `slow:MS`.
    pub fn set_mode(&self, mode: &str) {
        let resp = super::client::get(self.addr, &format!("/_mock/mode?set={mode}"), &[]);
        assert_eq!(resp.status, 200, "mode switch failed");
    }

    /// SIGKILL: the process dies with its connections, like a crashed connector.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the provider again on the same port, keeping its event log.
    pub fn restart(&mut self) {
        self.kill();
        let again = Self::spawn(
            &self.name,
            self.addr.port(),
            Arc::clone(&self.events),
            self.tls.clone(),
            self.dual_stack,
        );
        self.child = Some(again.into_child());
    }

    fn into_child(mut self) -> Child {
        self.child.take().expect("a running provider")
    }
}

impl Drop for ProviderProcess {
    fn drop(&mut self) {
        self.kill();
    }
}
