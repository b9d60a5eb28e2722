//! A real browser for the tests: headless Chromium driven by puppeteer-core
//! (tests/browser/run.js), and a small web server that serves the page under test
//! (tests/browser/page.js with the official browser build of @microsoft/signalr) from an origin
//! of its own.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex, Once};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::http_server::HttpServer;
use super::mock::{MockResponse, Recorded};

const BROWSER_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/browser");
const SIGNALR_BROWSER_BUILD: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/signalr/node_modules/@microsoft/signalr/dist/browser/signalr.min.js"
);

/// Installs puppeteer-core from the lock file once, when it is missing.
fn ensure_installed() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        super::hub::ensure_client();
        let installed = std::path::Path::new(BROWSER_DIR)
            .join("node_modules/puppeteer-core/package.json")
            .exists();
        if !installed {
            let status = Command::new("npm")
                .args(["ci", "--no-audit", "--no-fund"])
                .current_dir(BROWSER_DIR)
                .status()
                .expect("npm is needed for the browser tests");
            assert!(status.success(), "npm ci failed in tests/browser");
        }
    });
}

/// Serves the page under test on its own port (its own origin) until dropped.
pub struct Site {
    pub addr: SocketAddr,
    _server: HttpServer,
}

impl Site {
    pub fn start() -> Self {
        ensure_installed();
        let server = HttpServer::start(Arc::new(|request: &Recorded| {
            let file = |path: &str, kind: &str| MockResponse {
                status: 200,
                headers: vec![("Content-Type".into(), kind.into())],
                body: std::fs::read(path).unwrap(),
                delay: Duration::ZERO,
            };
            match request.path.split('?').next().unwrap_or("") {
                "/" => MockResponse {
                    status: 200,
                    headers: vec![("Content-Type".into(), "text/html".into())],
                    body: b"<!doctype html><meta charset=utf-8><title>payedge hub page</title>\
                          <script src=/signalr.min.js></script><script src=/page.js></script>"
                        .to_vec(),
                    delay: Duration::ZERO,
                },
                "/signalr.min.js" => file(SIGNALR_BROWSER_BUILD, "text/javascript"),
                "/page.js" => file(&format!("{BROWSER_DIR}/page.js"), "text/javascript"),
                _ => MockResponse {
                    status: 404,
                    headers: Vec::new(),
                    body: Vec::new(),
                    delay: Duration::ZERO,
                },
            }
        }));
        Self {
            addr: server.addr,
            _server: server,
        }
    }

    /// The page's origin, as the browser sends it.
    pub fn origin(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// Which browser: Debian's `chromium` or `firefox-esr` (both installed by .ci/setup).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Chromium,
    Firefox,
}

/// One headless browser at a time per test binary: two starting together on a 2-core CI machine
/// (Chromium and Firefox, each spawning a dozen processes) took longer than any sane deadline.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// How long a cold browser may take to start and load the page (first start on a fresh machine
/// builds its profile and font cache).
const LAUNCH_DEADLINE: Duration = Duration::from_secs(120);

/// One headless browser with one page open.
pub struct Browser {
    child: Child,
    stdin: ChildStdin,
    lines: Arc<Mutex<Vec<Value>>>,
    /// What node and the browser wrote on stderr (the last lines), for failure messages.
    stderr: Arc<Mutex<Vec<String>>>,
    _turn: std::sync::MutexGuard<'static, ()>,
}

impl Browser {
    /// Opens `url` in Chromium and waits until it has loaded.
    pub fn open(url: &str) -> Self {
        Self::open_in(Engine::Chromium, url)
    }

    /// Opens `url` in `engine` and waits until it has loaded.
    pub fn open_in(engine: Engine, url: &str) -> Self {
        ensure_installed();
        let turn = ONE_AT_A_TIME
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut child = Command::new("node")
            .arg(format!("{BROWSER_DIR}/run.js"))
            .arg(url)
            .env(
                "BROWSER",
                match engine {
                    Engine::Chromium => "chromium",
                    Engine::Firefox => "firefox",
                },
            )
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("node is needed for the browser tests");
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let errors = Arc::clone(&stderr);
        let stderr_pipe = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr_pipe).lines() {
                let Ok(line) = line else { break };
                let mut errors = errors.lock().unwrap();
                if errors.len() == 50 {
                    errors.remove(0);
                }
                errors.push(line);
            }
        });
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
        let browser = Self {
            child,
            stdin,
            lines,
            stderr,
            _turn: turn,
        };
        let loaded = browser.wait_within("the page", LAUNCH_DEADLINE, |l| {
            l["event"] == "loaded" || l["event"] == "failed"
        });
        assert_eq!(
            loaded["event"],
            "loaded",
            "{engine:?} did not load the page: {loaded}; stderr: {:?}",
            browser.stderr.lock().unwrap()
        );
        browser
    }

    pub fn lines(&self) -> Vec<Value> {
        self.lines.lock().unwrap().clone()
    }

    /// The envelopes the page received, in order.
    pub fn messages(&self) -> Vec<Value> {
        self.lines()
            .into_iter()
            .filter(|l| l["event"] == "message")
            .map(|l| l["envelope"].clone())
            .collect()
    }

    pub fn wait_for(&self, what: &str, predicate: impl Fn(&Value) -> bool) -> Value {
        self.wait_within(what, Duration::from_secs(30), predicate)
    }

    fn wait_within(
        &self,
        what: &str,
        within: Duration,
        predicate: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + within;
        loop {
            if let Some(line) = self.lines().into_iter().find(|l| predicate(l)) {
                return line;
            }
            assert!(
                Instant::now() < deadline,
                "browser: no {what} within {within:?}; saw {:?}; stderr: {:?}",
                self.lines(),
                self.stderr.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Evaluates a JavaScript expression in the page (awaiting a promise); its value.
    pub fn eval(&mut self, expression: &str) -> Value {
        let before = self.lines().len();
        writeln!(self.stdin, "eval {expression}").expect("the browser is gone");
        self.stdin.flush().unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(line) = self.lines()[before..].iter().find(|l| l["event"] == "eval") {
                assert_eq!(line["ok"], true, "{expression}: {line}");
                return line["value"].clone();
            }
            assert!(
                Instant::now() < deadline,
                "browser: no answer to {expression}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Browser {
    /// Saves a screenshot of the whole page as a PNG.
    pub fn screenshot(&mut self, path: &std::path::Path) {
        let before = self.lines().len();
        writeln!(self.stdin, "shot {}", path.display()).expect("the browser is gone");
        self.stdin.flush().unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(line) = self.lines()[before..].iter().find(|l| l["event"] == "shot") {
                assert_eq!(line["ok"], true, "screenshot: {line}");
                return;
            }
            assert!(Instant::now() < deadline, "browser: no screenshot");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Evaluates `expression` until it is true (or `within` passes: then the test fails).
    pub fn wait_until(&mut self, what: &str, expression: &str, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            if self.eval(expression) == Value::Bool(true) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "browser: {what} not within {within:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = writeln!(self.stdin, "quit");
        let _ = self.stdin.flush();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
