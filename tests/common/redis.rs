//! A private redis-server for a test: started on a free port (never the shared 6379), killed on
//! drop, restartable on the same port. Plus a subscriber that collects what is published.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub struct RedisServer {
    pub addr: SocketAddr,
    child: Option<Child>,
    dir: tempfile::TempDir,
    /// Writes every command to an append-only file (fsync each): a restart keeps the data.
    persistent: bool,
}

impl RedisServer {
    pub fn start() -> Self {
        Self::start_with(false)
    }

    /// A Redis whose data survives `kill` and `restart`.
    pub fn start_persistent() -> Self {
        Self::start_with(true)
    }

    fn start_with(persistent: bool) -> Self {
        let addr = super::process::free_addr();
        let dir = tempfile::tempdir().unwrap();
        let mut server = Self {
            addr,
            child: None,
            dir,
            persistent,
        };
        server.spawn();
        server
    }

    /// A connection for the test's own commands.
    pub fn connection(&self) -> redis::Connection {
        redis::Client::open(self.url())
            .and_then(|c| c.get_connection())
            .expect("the test's Redis")
    }

    pub fn url(&self) -> String {
        format!("redis://{}/0", self.addr)
    }

    fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &self.addr.port().to_string(),
                "--bind",
                "127.0.0.1",
            ])
            .args(["--save", "", "--protected-mode", "no"])
            .args(if self.persistent {
                ["--appendonly", "yes", "--appendfsync", "always"]
            } else {
                ["--appendonly", "no", "--appendfsync", "everysec"]
            })
            .arg("--dir")
            .arg(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is needed for the event bus tests");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(mut con) = redis::Client::open(self.url()).and_then(|c| c.get_connection())
                && redis::cmd("PING").query::<String>(&mut con).is_ok()
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("redis-server did not start on {}", self.addr);
    }

    /// SIGKILL, like a crashed Redis.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// Starts it again after `kill`.
    pub fn start_again(&mut self) {
        self.spawn();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Collects every message published on some channels (or patterns).
pub struct Subscriber {
    rx: mpsc::Receiver<(String, String)>,
}

impl Subscriber {
    /// Subscribes to `channels`; a channel ending in `*` is a pattern. Returns once subscribed.
    pub fn new(redis: &RedisServer, channels: &[&str]) -> Self {
        let client = redis::Client::open(redis.url()).unwrap();
        let mut con = client.get_connection().unwrap();
        let channels: Vec<String> = channels.iter().map(|c| c.to_string()).collect();
        let (ready_tx, ready_rx) = mpsc::channel();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut pubsub = con.as_pubsub();
            for channel in &channels {
                if channel.ends_with('*') {
                    pubsub.psubscribe(channel).unwrap();
                } else {
                    pubsub.subscribe(channel).unwrap();
                }
            }
            let _ = ready_tx.send(());
            while let Ok(message) = pubsub.get_message() {
                let payload: String = message.get_payload().unwrap_or_default();
                if tx
                    .send((message.get_channel_name().to_string(), payload))
                    .is_err()
                {
                    break;
                }
            }
        });
        ready_rx
            .recv_timeout(Duration::from_secs(5))
            .expect("subscription failed");
        Self { rx }
    }

    /// The next message within `timeout`, as (channel, payload).
    pub fn next(&self, timeout: Duration) -> Option<(String, String)> {
        self.rx.recv_timeout(timeout).ok()
    }

    /// Every message until none arrives for `quiet`.
    pub fn drain(&self, quiet: Duration) -> Vec<(String, String)> {
        let mut out = Vec::new();
        while let Some(m) = self.next(quiet) {
            out.push(m);
        }
        out
    }
}
