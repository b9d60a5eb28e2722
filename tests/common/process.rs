//! The payedge binary as a child process.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

pub fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_payedge"))
}

/// A loopback address with a port nobody listens on right now.
/// A loopback address free right now, for a listener started a moment later. Taken below the
/// kernel's ephemeral range (32768–60999 by default), so no outgoing connection of this or another
/// test can take the port in between; ports are tried in a random order from a per-process
/// starting point, so parallel tests rarely pick the same one.
pub fn free_addr() -> SocketAddr {
    use std::sync::atomic::{AtomicU32, Ordering};
    const FIRST: u32 = 20_000;
    const COUNT: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let seed = std::process::id().wrapping_mul(7_919);
    for _ in 0..COUNT {
        let step = NEXT.fetch_add(1, Ordering::Relaxed);
        // 7919 is prime and does not divide COUNT: every port is visited once per cycle.
        let port = FIRST + (seed.wrapping_add(step.wrapping_mul(7_919))) % COUNT;
        if let Ok(listener) = TcpListener::bind(("127.0.0.1", port as u16)) {
            return listener.local_addr().unwrap();
        }
    }
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

pub struct Payedge {
    child: Child,
    pub proxy: SocketAddr,
    pub admin: SocketAddr,
    stdout: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<Vec<String>>>,
    _dir: tempfile::TempDir,
}

impl Payedge {
    /// Starts `payedge run` with `yaml` and waits until /readyz says ready.
    pub fn start(yaml: &str, env: &[(&str, String)]) -> Self {
        Self::start_on(yaml, env, free_addr(), free_addr())
    }

    /// Starts `payedge run` on the given addresses (to restart one in place).
    pub fn start_on(
        yaml: &str,
        env: &[(&str, String)],
        proxy: SocketAddr,
        admin: SocketAddr,
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("payedge.yaml");
        std::fs::write(&path, yaml).unwrap();
        let mut command = Command::new(binary());
        command.args(["run", "-c"]).arg(&path).args([
            "--listen",
            &proxy.to_string(),
            "--admin-listen",
            &admin.to_string(),
        ]);
        Self::spawn(command, env, proxy, admin, dir)
    }

    pub fn spawn(
        command: Command,
        env: &[(&str, String)],
        proxy: SocketAddr,
        admin: SocketAddr,
        dir: tempfile::TempDir,
    ) -> Self {
        let mut payedge = Self::spawn_unready(command, env, proxy, admin, dir);
        payedge.wait_ready();
        payedge
    }

    /// Starts the process without waiting for it (a `--upgrade` waits for the running one).
    pub fn spawn_unready(
        mut command: Command,
        env: &[(&str, String)],
        proxy: SocketAddr,
        admin: SocketAddr,
        dir: tempfile::TempDir,
    ) -> Self {
        command
            .env_remove("PAYEDGE_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (name, value) in env {
            command.env(name, value);
        }
        let mut child = command.spawn().expect("cannot start payedge");
        let stdout = collect(child.stdout.take().unwrap());
        let stderr = collect(child.stderr.take().unwrap());
        Self {
            child,
            proxy,
            admin,
            stdout,
            stderr,
            _dir: dir,
        }
    }

    pub fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                std::thread::sleep(Duration::from_millis(50));
                panic!(
                    "payedge exited ({status}) before it was ready\nstderr:\n{}",
                    self.raw_stderr()
                );
            }
            if let Ok(resp) = super::client::request(self.admin, "GET", "/readyz", &[], b"")
                && resp.status == 200
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!(
            "payedge did not become ready\nstdout:\n{}\nstderr:\n{}",
            self.stdout.lock().unwrap().join("\n"),
            self.stderr.lock().unwrap().join("\n")
        );
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The configuration file payedge runs with (`start` writes it there): rewrite it and
    /// reload to change what payedge does.
    pub fn config_file(&self) -> std::path::PathBuf {
        self._dir.path().join("payedge.yaml")
    }

    /// Rewrites the configuration file and asks for a reload through `POST /admin/reload`;
    /// returns the answer.
    pub fn reload_with(&self, yaml: &str) -> super::client::Response {
        std::fs::write(self.config_file(), yaml).unwrap();
        self.reload()
    }

    pub fn reload(&self) -> super::client::Response {
        let admin = super::admin_bearer();
        super::client::request(
            self.admin,
            "POST",
            "/admin/reload",
            &[("Authorization", &admin)],
            b"",
        )
        .unwrap()
    }

    /// Every JSON line payedge wrote to stdout so far.
    pub fn logs(&self) -> Vec<Value> {
        self.stdout
            .lock()
            .unwrap()
            .iter()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// The request log lines (target payedge::access).
    pub fn access_logs(&self) -> Vec<Value> {
        self.logs()
            .into_iter()
            .filter(|l| l["target"] == "payedge::access")
            .collect()
    }

    /// Waits until `predicate` holds for the logs (they are written by a background thread).
    pub fn wait_for_log(&self, predicate: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(line) = self.logs().into_iter().find(|l| predicate(l)) {
                return line;
            }
            assert!(
                Instant::now() < deadline,
                "no such log line in:\n{}",
                self.raw_stdout()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn raw_stdout(&self) -> String {
        self.stdout.lock().unwrap().join("\n")
    }

    pub fn raw_stderr(&self) -> String {
        self.stderr.lock().unwrap().join("\n")
    }

    pub fn metrics(&self) -> String {
        super::client::get(self.admin, "/metrics", &[]).text()
    }

    /// Polls /metrics until `predicate` holds: request counters are written in the logging
    /// phase, just after the client has its response.
    pub fn wait_for_metrics(&self, predicate: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let text = self.metrics();
            if predicate(&text) {
                return text;
            }
            assert!(Instant::now() < deadline, "metrics never matched:\n{text}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The value of one series (`name{labels}` exactly as exported), or `None` while absent.
    pub fn series(&self, series: &str) -> Option<f64> {
        series_value(&self.metrics(), series)
    }

    /// Polls /metrics until the series exists and `predicate` holds for its value (10 s).
    pub fn wait_for_series(&self, series: &str, predicate: impl Fn(f64) -> bool) -> f64 {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let value = self.series(series);
            if let Some(v) = value.filter(|v| predicate(*v)) {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "{series} never matched (last: {value:?})"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "payedge did not exit within {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Payedge {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn collect(pipe: impl std::io::Read + Send + 'static) -> Arc<Mutex<Vec<String>>> {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&lines);
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            sink.lock().unwrap().push(line);
        }
    });
    lines
}

/// `promtool check metrics` on a /metrics text: what it complains about (empty when clean).
pub fn promtool_check_metrics(text: &str) -> String {
    use std::io::Write;
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool is needed (Debian package prometheus; .ci/run installs it)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() {
        report.trim().to_string()
    } else {
        format!("promtool failed: {report}")
    }
}

/// The value of `series` (`name{labels}` exactly as exported) in a /metrics text.
pub fn series_value(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}
