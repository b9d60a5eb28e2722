//! The publish path into Redis, side by side in one run: payedge's publisher (one script per
//! event appending it to its tenant's bounded history stream and publishing it, pipelined in
//! batches) against plain pipelined PUBLISH of the same events (the bus before the history).
//! Events over 100 tenants, into a private redis-server; rounds interleaved, medians printed.
//!
//!     cargo bench --bench event_publish
//!     EVENTS=200000 ROUNDS=5 cargo bench --bench event_publish
//!     CLUSTER=1 cargo bench --bench event_publish     # a local three-node Redis Cluster

#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::redis::RedisServer;
use common::redis_cluster::RedisCluster;
use payedge::events::publisher::{self, Publisher};
use payedge::events::{Event, HistoryLimits};

const BATCH: usize = 256;

fn setting(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn events(n: usize, tenants: usize) -> Vec<Arc<Event>> {
    (0..n)
        .map(|i| {
            let data = serde_json::json!({
                "quoteId": format!("q-{i}"),
                "amount": "1000.10",
                "currency": "GBP",
            });
            let tenant: Arc<str> = Arc::from(format!("tenant-{}", i % tenants));
            Arc::new(Event::new(
                "payedge/bench",
                "fx.quote.created",
                Some(tenant),
                Some(format!("req-{i}")),
                &data,
            ))
        })
        .collect()
}

/// Events per second through payedge's publisher (append + publish).
async fn with_history(url: &str, events: &[Arc<Event>]) -> f64 {
    let (tx, rx) = tokio::sync::mpsc::channel(events.len());
    for event in events {
        tx.try_send(Arc::clone(event)).unwrap();
    }
    let backlog = Arc::new(AtomicUsize::new(events.len()));
    let started = Instant::now();
    let task = tokio::spawn(publisher::redis(
        Publisher {
            url: url.to_string(),
            prefix: "bench:".into(),
            history: HistoryLimits {
                max_events: 1000,
                max_age: Duration::from_secs(600),
            },
            source: "payedge/bench".into(),
            metrics: None,
            backlog: Arc::clone(&backlog),
            grace: Duration::from_secs(5),
        },
        rx,
        std::future::pending::<()>(),
    ));
    while backlog.load(Ordering::Acquire) > 0 {
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
    let took = started.elapsed();
    task.abort();
    drop(tx);
    events.len() as f64 / took.as_secs_f64()
}

/// Events per second as plain pipelined PUBLISH, in the publisher's batch size (one server).
async fn publish_only(url: &str, events: &[Arc<Event>]) -> f64 {
    let client = redis::Client::open(url).unwrap();
    let mut con = client.get_multiplexed_async_connection().await.unwrap();
    let started = Instant::now();
    for batch in events.chunks(BATCH) {
        let mut pipe = redis::pipe();
        for event in batch {
            let tenant = event.tenant.as_deref().unwrap_or("_all");
            pipe.cmd("PUBLISH")
                .arg(format!("bench:{tenant}"))
                .arg(event.json.as_bytes())
                .ignore();
        }
        pipe.query_async::<()>(&mut con).await.unwrap();
    }
    events.len() as f64 / started.elapsed().as_secs_f64()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    let n = setting("EVENTS", 100_000);
    let rounds = setting("ROUNDS", 3);
    let cluster = setting("CLUSTER", 0) == 1;
    let events = events(n, 100);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (_server, _cluster, url) = if cluster {
        let c = RedisCluster::start();
        let url = c.url();
        (None, Some(c), url)
    } else {
        let s = RedisServer::start();
        let url = s.url();
        (Some(s), None, url)
    };
    let mut history = Vec::new();
    let mut plain = Vec::new();
    for round in 1..=rounds {
        let h = runtime.block_on(with_history(&url, &events));
        history.push(h);
        if !cluster {
            let p = runtime.block_on(publish_only(&url, &events));
            plain.push(p);
            println!(
                "round {round}: append+publish {h:>9.0} events/s   PUBLISH only {p:>9.0} events/s"
            );
        } else {
            println!("round {round}: append+publish {h:>9.0} events/s (cluster)");
        }
    }
    let h = median(history);
    if cluster {
        println!(
            "median over {rounds} rounds of {n} events, 3-node cluster: append+publish {h:.0} events/s"
        );
        return;
    }
    let p = median(plain);
    println!(
        "median over {rounds} rounds of {n} events: append+publish {h:.0} events/s, PUBLISH only {p:.0} events/s ({:.2}x)",
        h / p
    );
}
