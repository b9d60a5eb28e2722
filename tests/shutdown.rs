//! SIGTERM drains: in-flight requests finish, nothing new is accepted, and the process exits as
//! soon as it is idle rather than after the whole grace period.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

fn with_grace(yaml: String, seconds: u64) -> String {
    yaml.replace(
        "grace_period_seconds: 5",
        &format!("grace_period_seconds: {seconds}"),
    )
}

fn wait_until(what: &str, predicate: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !predicate() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn sigterm_lets_an_in_flight_response_finish() {
    let body = json!({"id": "fxq_1", "amount": "1000.10", "padding": "x".repeat(50_000)});
    let expected = body.to_string().into_bytes();
    let slow = MockUpstream::with("slow", move |_| {
        MockResponse::json(200, body.clone()).after(Duration::from_millis(1500))
    });
    let mut gw = Payedge::start(&with_grace(config(&[&slow]), 20), &env());
    let proxy = gw.proxy;
    let auth = bearer("blue");
    let client = std::thread::spawn(move || {
        request(
            proxy,
            "POST",
            "/api/fx/quote",
            &[("X-Tenant", "blue"), ("Authorization", &auth)],
            b"{}",
        )
    });
    wait_until("the provider to receive the request", || slow.count() == 1);

    let signalled = Instant::now();
    gw.signal("TERM");
    let response = client
        .join()
        .unwrap()
        .expect("the in-flight request failed");
    assert_eq!(response.status, 200);
    assert_eq!(response.body, expected, "the response arrived incomplete");

    let status = gw.wait_exit(Duration::from_secs(15));
    assert!(status.success(), "{status:?}");
    assert!(
        signalled.elapsed() < Duration::from_secs(10),
        "exited {:?} after SIGTERM: it waited for the grace period instead of the drain",
        signalled.elapsed()
    );
    assert!(
        std::net::TcpStream::connect(proxy).is_err(),
        "still accepting after exit"
    );
    gw.wait_for_log(|l| l["message"] == "drained; stopping");
}

#[test]
fn no_new_connections_are_accepted_while_draining() {
    let slow = MockUpstream::with("slow", |_| {
        MockResponse::json(200, json!({})).after(Duration::from_millis(1500))
    });
    let mut gw = Payedge::start(&with_grace(config(&[&slow]), 20), &env());
    let proxy = gw.proxy;
    let auth = bearer("blue");
    let client = std::thread::spawn(move || {
        request(
            proxy,
            "GET",
            "/api/x",
            &[("X-Tenant", "blue"), ("Authorization", &auth)],
            b"",
        )
    });
    wait_until("the provider to receive the request", || slow.count() == 1);
    gw.signal("TERM");
    wait_until("the listener to close", || {
        std::net::TcpStream::connect(proxy).is_err()
    });
    assert_eq!(client.join().unwrap().unwrap().status, 200);
    assert!(gw.wait_exit(Duration::from_secs(15)).success());
}

#[test]
fn an_idle_gateway_stops_at_once_and_a_stuck_one_at_the_grace_period() {
    let upstream = MockUpstream::start("p0");
    let mut idle = Payedge::start(&with_grace(config(&[&upstream]), 30), &env());
    let signalled = Instant::now();
    idle.signal("TERM");
    assert!(idle.wait_exit(Duration::from_secs(10)).success());
    assert!(
        signalled.elapsed() < Duration::from_secs(5),
        "{:?}",
        signalled.elapsed()
    );

    let stuck = MockUpstream::with("stuck", |_| {
        MockResponse::json(200, json!({})).after(Duration::from_secs(30))
    });
    let mut gw = Payedge::start(
        &with_grace(config(&[&stuck]), 1).replace("read_ms: 2000", "read_ms: 60000"),
        &env(),
    );
    let proxy = gw.proxy;
    let auth = bearer("blue");
    let client = std::thread::spawn(move || {
        request(
            proxy,
            "GET",
            "/api/x",
            &[("X-Tenant", "blue"), ("Authorization", &auth)],
            b"",
        )
    });
    wait_until("the provider to receive the request", || stuck.count() == 1);
    let signalled = Instant::now();
    gw.signal("TERM");
    assert!(gw.wait_exit(Duration::from_secs(10)).success());
    let took = signalled.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(6),
        "{took:?}"
    );
    assert!(
        client.join().unwrap().is_err(),
        "a request cut at the grace period cannot complete"
    );
    gw.wait_for_log(|l| l["message"] == "grace period over; stopping with work left");
}
