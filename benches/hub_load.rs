//! The notification hub under load: N WebSocket clients over T tenants (the project's own
//! client code: tokio-tungstenite and the SignalR JSON protocol), events published to Redis at a
//! steady rate per tenant, then a burst to everyone. Prints connections held, deliveries/s,
//! delivery latency (p50/p99/max, from publication to the client reading it) and payedge's
//! memory per connection.
//!
//!     cargo bench --bench hub_load
//!     CONNECTIONS=10000 TENANTS=100 RATE=1000 PEAK_RATE=20 SECONDS=10 cargo bench --bench hub_load

#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::redis::RedisServer;
use common::*;
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

fn setting(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_micros() as u64
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// `payedge_hub_delivery_seconds` as (upper bound in ms, cumulative count) pairs.
fn server_delivery_buckets(admin: std::net::SocketAddr) -> Vec<(f64, u64)> {
    let text = get(admin, "/metrics", &[]).text();
    text.lines()
        .filter_map(|l| l.strip_prefix("payedge_hub_delivery_seconds_bucket{le=\""))
        .filter_map(|rest| {
            let (le, count) = rest.split_once("\"} ")?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse::<f64>().ok()? * 1000.0
            };
            Some((le, count.trim().parse().ok()?))
        })
        .collect()
}

/// The smallest bucket bound that holds 99 % of what was written between `before` and `after`.
fn server_p99_bound_ms(before: &[(f64, u64)], after: &[(f64, u64)]) -> f64 {
    let deltas: Vec<(f64, u64)> = after
        .iter()
        .zip(before.iter().map(|b| b.1).chain(std::iter::repeat(0)))
        .map(|((le, a), b)| (*le, a.saturating_sub(b)))
        .collect();
    let total = deltas.last().map_or(0, |d| d.1);
    deltas
        .iter()
        .find(|(_, count)| *count as f64 >= total as f64 * 0.99)
        .map_or(f64::NAN, |d| d.0)
}

/// Pins every thread of process `pid` to `cpus` (taskset's list syntax).
fn pin(pid: u32, cpus: &str) {
    let pinned = std::process::Command::new("taskset")
        .args(["-a", "-p", "-c", cpus, &pid.to_string()])
        .stdout(std::process::Stdio::null())
        .status();
    if !matches!(pinned, Ok(s) if s.success()) {
        eprintln!("taskset failed: the processes are not pinned");
    }
}

/// Latencies are counted in buckets of 100 µs up to 10 s.
const BUCKET_US: u64 = 100;
const BUCKETS: usize = 100_000;

/// What every client records.
struct Tally {
    delivered: AtomicU64,
    latency_buckets: Vec<AtomicU64>,
    open: AtomicUsize,
}

impl Tally {
    fn new() -> Self {
        Self {
            delivered: AtomicU64::new(0),
            latency_buckets: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            open: AtomicUsize::new(0),
        }
    }

    fn record(&self, latency_us: u64) {
        let bucket = ((latency_us / BUCKET_US) as usize).min(BUCKETS - 1);
        self.latency_buckets[bucket].fetch_add(1, Ordering::Relaxed);
    }

    fn reset(&self) {
        self.delivered.store(0, Ordering::Relaxed);
        self.latency_buckets
            .iter()
            .for_each(|b| b.store(0, Ordering::Relaxed));
    }

    /// (p50, p99, max) in milliseconds, to the bucket.
    fn latencies_ms(&self) -> (f64, f64, f64) {
        let counts: Vec<u64> = self
            .latency_buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        let total: u64 = counts.iter().sum();
        let at = |p: f64| {
            let target = (total as f64 * p).ceil() as u64;
            let mut seen = 0;
            for (i, c) in counts.iter().enumerate() {
                seen += c;
                if seen >= target.max(1) {
                    return ((i as u64 + 1) * BUCKET_US) as f64 / 1000.0;
                }
            }
            0.0
        };
        let max = counts
            .iter()
            .rposition(|c| *c > 0)
            .map_or(0.0, |i| ((i as u64 + 1) * BUCKET_US) as f64 / 1000.0);
        (at(0.5), at(0.99), max)
    }
}

async fn client(
    admin: std::net::SocketAddr,
    token: String,
    tally: Arc<Tally>,
    ready: Arc<tokio::sync::Barrier>,
) {
    let mut request = format!("ws://{admin}/hubs/notifications")
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert("Authorization", format!("Bearer {token}").parse().unwrap());
    // A small read buffer: tungstenite's default (128 KiB) is zero-filled on reads, per client,
    // which made the load generator (one thread for every client) part of the measured latency.
    let config =
        tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default().read_buffer_size(4096);
    let connected = tokio_tungstenite::connect_async_with_config(request, Some(config), true).await;
    let Ok((mut ws, _)) = connected else {
        ready.wait().await;
        return;
    };
    let _ = ws
        .send(Message::text("{\"protocol\":\"json\",\"version\":1}\u{1e}"))
        .await;
    let _ = ws.next().await;
    tally.open.fetch_add(1, Ordering::Relaxed);
    ready.wait().await;
    // Each client's pings start at its own offset: 10,000 pings sent in the same instant were a
    // stall once per phase, in the generator and in payedge alike, not what a fleet of clients
    // does.
    let offset = Duration::from_millis(fastrand::u64(0..10_000));
    let mut ping = tokio::time::interval_at(
        tokio::time::Instant::now() + offset,
        Duration::from_secs(10),
    );
    loop {
        tokio::select! {
            frame = ws.next() => {
                let Some(Ok(Message::Text(text))) = frame else { break };
                let now = now_us();
                for message in text.split('\u{1e}') {
                    if let Some(sent) = message.find("\"sent_us\":").and_then(|i| {
                        let digits: String = message[i + 10..].chars().take_while(char::is_ascii_digit).collect();
                        digits.parse::<u64>().ok()
                    }) {
                        tally.record(now.saturating_sub(sent));
                        tally.delivered.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            _ = ping.tick() => {
                if ws.send(Message::text("{\"type\":6}\u{1e}")).await.is_err() {
                    break;
                }
            }
        }
    }
    tally.open.fetch_sub(1, Ordering::Relaxed);
}

async fn publish(redis_url: &str, rate: u64, seconds: u64, channels: Vec<String>) -> u64 {
    let client = ::redis::Client::open(redis_url).unwrap();
    let mut con = client.get_multiplexed_async_connection().await.unwrap();
    let started = Instant::now();
    let mut sent = 0u64;
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    while started.elapsed() < Duration::from_secs(seconds) {
        tick.tick().await;
        let due = (started.elapsed().as_secs_f64() * rate as f64) as u64;
        let mut pipe = ::redis::pipe();
        while sent < due {
            let channel = &channels[(sent as usize) % channels.len()];
            let tenant = channel.rsplit(':').next().unwrap_or("_all");
            let time = time::OffsetDateTime::now_utc()
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap();
            let envelope = format!(
                r#"{{"specversion":"1.0","id":"{sent}","source":"payedge/bench","type":"fx.quote.created","time":"{time}","tenant":"{tenant}","data":{{"amount":"1000.10","sent_us":{}}}}}"#,
                now_us()
            );
            pipe.cmd("PUBLISH").arg(channel).arg(envelope).ignore();
            sent += 1;
        }
        let _: Result<(), _> = pipe.query_async(&mut con).await;
    }
    sent
}

/// What a phase publishes to and measures.
struct Rig<'a> {
    tally: &'a Tally,
    redis: String,
    pid: u32,
    admin: std::net::SocketAddr,
    seconds: u64,
}

/// Runs one phase and prints its row; returns (events published, messages delivered).
async fn phase(rig: &Rig<'_>, name: &str, rate: u64, channels: Vec<String>) -> (u64, u64) {
    let Rig {
        tally,
        ref redis,
        pid,
        admin,
        seconds,
    } = *rig;
    tally.reset();
    let before = server_delivery_buckets(admin);
    let started = Instant::now();
    let published = publish(redis, rate, seconds, channels).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let elapsed = started.elapsed().as_secs_f64();
    let (p50, p99, max) = tally.latencies_ms();
    let server_p99 = server_p99_bound_ms(&before, &server_delivery_buckets(admin));
    println!(
        "{name:<26} {:>9} {:>8} {:>12.0} {:>8.1} {:>8.1} {:>8.1} {:>12} {:>10}",
        published,
        tally.open.load(Ordering::Relaxed),
        tally.delivered.load(Ordering::Relaxed) as f64 / elapsed,
        p50,
        p99,
        max,
        format!("<= {server_p99}"),
        rss_kib(pid),
    );
    (published, tally.delivered.load(Ordering::Relaxed))
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        println!("hub_load: bench");
        return;
    }
    // Without `--bench` (as `cargo test --all-targets` runs it): a small run that must hold
    // every connection and deliver, so the harness cannot rot.
    let quick = !std::env::args().any(|a| a == "--bench");
    let scale = |full: u64, small: u64| if quick { small } else { full };
    let connections = setting("CONNECTIONS", scale(10_000, 200)) as usize;
    let tenants = setting("TENANTS", scale(100, 4)) as usize;
    let rate = setting("RATE", scale(1_000, 50));
    let peak_rate = setting("PEAK_RATE", scale(20, 5));
    let seconds = setting("SECONDS", scale(10, 1));
    let _ = rlimit::increase_nofile_limit(u64::MAX);

    let redis = RedisServer::start();
    let fx = MockUpstream::start("fx");
    let names: Vec<String> = (0..tenants).map(|i| format!("t{i}")).collect();
    // Every connection comes from this one address: no per-client cap.
    let yaml = config_for(&[("fx".into(), fx.addr)], "")
        .replace(
            "tenants: [blue, green]",
            &format!("tenants: [{}]", names.join(", ")),
        )
        .replacen(
            "server:\n",
            "server:\n  limits: {max_connections_per_client: 0}\n",
            1,
        )
        + &format!(
            "notifications:\n  provider: redis\n  redis:\n    url: {}\n  connection_queue: 1024\n  limits:\n    max_connections_per_subject: 1000000\n    max_connections_per_tenant: 1000000\n",
            redis.url()
        );
    let gw = Payedge::start(&yaml, &env());
    let pid = gw.pid();
    // PIN=1: payedge on CPU 0, this load generator on CPU 1, so neither preempts the other.
    if setting("PIN", 0) == 1 {
        pin(pid, "0");
        pin(std::process::id(), "1");
    }
    let idle_rss = rss_kib(pid);

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let tally = Arc::new(Tally::new());
        let ready = Arc::new(tokio::sync::Barrier::new(connections + 1));
        let connect_started = Instant::now();
        let gate = Arc::new(tokio::sync::Semaphore::new(256));
        for i in 0..connections {
            let token = token(&names[i % tenants]);
            let (tally, ready, gate) = (tally.clone(), ready.clone(), gate.clone());
            let admin = gw.admin;
            tokio::spawn(async move {
                let permit = gate.acquire_owned().await;
                let handle = client(admin, token, tally, ready);
                drop(permit);
                handle.await;
            });
        }
        ready.wait().await;
        let connected_in = connect_started.elapsed();
        tokio::time::sleep(Duration::from_secs(2)).await;
        let held = tally.open.load(Ordering::Relaxed);
        let loaded_rss = rss_kib(pid);
        println!(
            "\nhub load: {held} of {connections} connections held over {tenants} tenants (connected in {:.1} s)",
            connected_in.as_secs_f64()
        );
        println!(
            "payedge RSS: {idle_rss} KiB idle, {loaded_rss} KiB with the connections: {:.1} KiB per connection\n",
            (loaded_rss.saturating_sub(idle_rss)) as f64 / held.max(1) as f64
        );
        println!(
            "{:<26} {:>9} {:>8} {:>12} {:>8} {:>8} {:>8} {:>12} {:>10}",
            "phase", "events", "held", "deliveries/s", "p50 ms", "p99 ms", "max ms", "written p99", "RSS KiB"
        );
        let tenant_channels: Vec<String> = names.iter().map(|t| format!("payedge:events:{t}")).collect();
        let rig = Rig { tally: &tally, redis: redis.url(), pid, admin: gw.admin, seconds };
        let to_tenants = phase(&rig, &format!("{rate} events/s to tenants"), rate, tenant_channels).await;
        let to_everyone = phase(
            &rig,
            &format!("{peak_rate} events/s to everyone"),
            peak_rate,
            vec!["payedge:events:_all".into()],
        )
        .await;
        if quick {
            assert_eq!(held, connections, "connections held");
            let per_tenant = (connections / tenants) as u64;
            assert_eq!(to_tenants.1, to_tenants.0 * per_tenant, "tenant events delivered");
            assert_eq!(to_everyone.1, to_everyone.0 * connections as u64, "events to everyone delivered");
        }
    });
}
