//! The failover run: steady POST load through payedge (release build) to three provider
//! processes, then one provider killed, one blackholed, both brought back. Prints what clients
//! saw in each phase and how long each provider took to leave and rejoin the rotation.
//!
//!     cargo bench --bench failover
//!
//! Without `--bench` (as `cargo test --all-targets` runs it) it takes one-second phases and fails
//! unless every provider left and rejoined the rotation, so the run cannot rot.

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;

const CLIENTS: usize = 8;
const POOL: &str = "    timeouts:
      connect_ms: 300
      read_ms: 1000
      total_ms: 5000
    health_check:
      path: /health
      interval_ms: 500
      timeout_ms: 300
      jitter_ms: 50
      healthy_threshold: 2
      unhealthy_threshold: 2
    outlier:
      consecutive_failures: 3
      base_ejection_ms: 1000
";

/// Outcomes by phase: status or error code → count.
type Tally = Arc<Mutex<BTreeMap<String, BTreeMap<String, usize>>>>;

fn main() {
    if std::env::args().any(|a| a == "--list") {
        println!("failover: bench");
        return;
    }
    let quick = !std::env::args().any(|a| a == "--bench");
    let phase_length = Duration::from_secs(if quick { 1 } else { 3 });
    let mut a = ProviderProcess::start("cards-a");
    let mut b = ProviderProcess::start("cards-b");
    let c = ProviderProcess::start("cards-c");
    let named: Vec<(String, std::net::SocketAddr)> = [&a, &b, &c]
        .iter()
        .map(|p| (p.name.clone(), p.addr))
        .collect();
    let gw = Payedge::start(&config_for(&named, POOL), &env());

    let phase = Arc::new(Mutex::new(String::from("1 steady")));
    let tally: Tally = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (phase, tally, stop, proxy) = (
                Arc::clone(&phase),
                Arc::clone(&tally),
                Arc::clone(&stop),
                gw.proxy,
            );
            let auth = bearer("blue");
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let outcome = match request(
                        proxy,
                        "POST",
                        "/api/pay",
                        &[("X-Tenant", "blue"), ("Authorization", &auth)],
                        br#"{"amount":"10.00"}"#,
                    ) {
                        Ok(resp) if resp.status == 200 => "200".to_string(),
                        Ok(resp) => {
                            let code = resp.json()["error"]["code"]
                                .as_str()
                                .unwrap_or("")
                                .to_string();
                            format!("{} {code}", resp.status)
                        }
                        Err(e) => format!("client error: {e}"),
                    };
                    let name = phase.lock().unwrap().clone();
                    *tally
                        .lock()
                        .unwrap()
                        .entry(name)
                        .or_default()
                        .entry(outcome)
                        .or_default() += 1;
                }
            })
        })
        .collect();

    let mut timings = Vec::new();
    std::thread::sleep(phase_length);
    *phase.lock().unwrap() = "2 cards-a killed".into();
    a.kill();
    timings.push((
        "cards-a killed → out of rotation",
        until(&gw, "cards-a", false),
    ));
    std::thread::sleep(phase_length);
    *phase.lock().unwrap() = "3 cards-b blackholed".into();
    b.set_mode("blackhole");
    timings.push((
        "cards-b blackholed → out of rotation",
        until(&gw, "cards-b", false),
    ));
    std::thread::sleep(phase_length);
    *phase.lock().unwrap() = "4 both back".into();
    a.restart();
    b.restart();
    let restarted = Instant::now();
    let back_a = until(&gw, "cards-a", true).map(|_| restarted.elapsed());
    let back_b = until(&gw, "cards-b", true).map(|_| restarted.elapsed());
    timings.push(("cards-a restarted → back in rotation", back_a));
    timings.push(("cards-b restarted → back in rotation", back_b));
    std::thread::sleep(phase_length);
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        let _ = client.join();
    }

    println!("\nfailover run: {CLIENTS} clients sending POST /api/pay, three provider processes");
    println!("{:<24} {:>9}  outcomes", "phase", "requests");
    for (name, outcomes) in tally.lock().unwrap().iter() {
        let total: usize = outcomes.values().sum();
        let detail: Vec<String> = outcomes.iter().map(|(k, v)| format!("{k}: {v}")).collect();
        println!("{name:<24} {total:>9}  {}", detail.join(", "));
    }
    println!();
    for (what, took) in &timings {
        match took {
            Some(d) => println!("{what:<40} {:>6} ms", d.as_millis()),
            None => println!("{what:<40}  not within 10 s"),
        }
    }
    if quick {
        let missed: Vec<&str> = timings
            .iter()
            .filter(|(_, took)| took.is_none())
            .map(|(what, _)| *what)
            .collect();
        assert!(missed.is_empty(), "not within 10 s: {missed:?}");
        let steady = tally
            .lock()
            .unwrap()
            .get("1 steady")
            .cloned()
            .unwrap_or_default();
        assert!(
            steady.keys().all(|k| k == "200") && !steady.is_empty(),
            "the steady phase saw {steady:?}"
        );
    }
}

/// How long until `provider` is (or is no longer) admitted and healthy, polled every 10 ms.
fn until(gw: &Payedge, provider: &str, admitted: bool) -> Option<Duration> {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(10) {
        let resp = get(
            gw.admin,
            "/admin/providers",
            &[("Authorization", &admin_bearer())],
        );
        let state = resp.json()["pools"][0]["providers"]
            .as_array()
            .and_then(|ps| ps.iter().find(|p| p["name"] == provider).cloned())
            .map(|p| p["state"] == "admitted")
            .unwrap_or(false);
        if state == admitted {
            return Some(started.elapsed());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    None
}
