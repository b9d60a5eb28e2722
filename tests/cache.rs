//! The route response cache (`routes[].cache`) through the real binary: one upstream request for
//! many concurrent misses, tenants never sharing a kept response, the TTL, what is never kept,
//! and the metric and headers that say what happened.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::time::Duration;

use common::mock::{MockResponse, Recorded};
use common::*;

/// A rates provider: each answer numbers itself, so a kept answer is recognisable; /api/private
/// answers with Set-Cookie, /api/nostore with Cache-Control: no-store, /api/missing 404.
fn rates_provider(delay: Duration) -> (MockUpstream, Arc<AtomicUsize>) {
    let served = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&served);
    let mock = MockUpstream::with("rates", move |req: &Recorded| {
        let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
        let path = req.path.split('?').next().unwrap_or("");
        let mut headers = vec![("Content-Type".to_string(), "application/json".to_string())];
        let status = match path {
            "/api/private" => {
                headers.push(("Set-Cookie".into(), "session=abc".into()));
                200
            }
            "/api/nostore" => {
                headers.push(("Cache-Control".into(), "no-store".into()));
                200
            }
            "/api/missing" => 404,
            _ => 200,
        };
        if path == "/api/big" {
            // 40 KiB: two do not fit in a 64 KiB cache.
            let padding = "x".repeat(40 * 1024);
            return MockResponse {
                status,
                headers,
                body: format!(r#"{{"answer":{n},"padding":"{padding}"}}"#).into_bytes(),
                delay,
            };
        }
        MockResponse {
            status,
            headers,
            body: format!(
                r#"{{"answer":{n},"tenant":"{}"}}"#,
                req.header("x-tenant").unwrap_or("")
            )
            .into_bytes(),
            delay,
        }
    });
    (mock, served)
}

fn cached_config(provider: &MockUpstream, ttl_seconds: u64) -> String {
    let yaml = config(&[provider]).replace(
        "  - path_prefix: /api\n    pool: main\n",
        &format!(
            "  - path_prefix: /api\n    pool: main\n    cache: {{ ttl_seconds: {ttl_seconds}, methods: [GET] }}\n"
        ),
    );
    assert!(yaml.contains("cache: {"), "{yaml}");
    yaml
}

fn rates(gw: &Payedge, tenant: &str, path: &str) -> Response {
    get(
        gw.proxy,
        path,
        &[("X-Tenant", tenant), ("Authorization", &bearer(tenant))],
    )
}

/// Waits until route /api's cache counter for `result` reads `expected` (counted after each
/// response is written).
fn assert_cache_count(gw: &Payedge, result: &str, expected: f64) {
    let series = format!("payedge_cache_requests_total{{result=\"{result}\",route=\"/api\"}}");
    gw.wait_for_series(&series, |v| v == expected);
}

#[test]
fn a_hundred_concurrent_misses_ask_the_provider_once_and_tenants_never_share() {
    let (provider, served) = rates_provider(Duration::from_millis(300));
    let gw = Payedge::start(&cached_config(&provider, 30), &env());

    let start = Arc::new(Barrier::new(100));
    let answers: Vec<Response> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..100)
            .map(|_| {
                let start = Arc::clone(&start);
                let gw = &gw;
                s.spawn(move || {
                    start.wait();
                    rates(gw, "blue", "/api/fx/rates?base=USD")
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(
        served.load(Ordering::SeqCst),
        1,
        "the provider was asked more than once"
    );
    for answer in &answers {
        assert_eq!(answer.status, 200);
        assert_eq!(answer.text(), r#"{"answer":1,"tenant":"blue"}"#);
        assert_eq!(answer.header("x-payedge-cached-for"), None);
    }
    let hits: Vec<&Response> = answers
        .iter()
        .filter(|a| {
            a.header("cache-status")
                .is_some_and(|s| s.contains("; hit"))
        })
        .collect();
    assert!(hits.len() >= 99, "{} hits", hits.len());
    assert!(
        hits.iter().all(|h| h.header("age").is_some()),
        "a hit carries Age"
    );

    // Green's first request for the same path is green's own miss, answered for green.
    let green = rates(&gw, "green", "/api/fx/rates?base=USD");
    assert_eq!(green.status, 200);
    assert_eq!(green.text(), r#"{"answer":2,"tenant":"green"}"#);
    assert_eq!(
        green.header("cache-status"),
        Some("payedge; fwd=miss; stored")
    );
    // And blue still gets blue's.
    let blue = rates(&gw, "blue", "/api/fx/rates?base=USD");
    assert_eq!(blue.text(), r#"{"answer":1,"tenant":"blue"}"#);
    // Another query is another key.
    let other = rates(&gw, "blue", "/api/fx/rates?base=EUR");
    assert_eq!(other.text(), r#"{"answer":3,"tenant":"blue"}"#);
    assert_eq!(served.load(Ordering::SeqCst), 3);

    assert_cache_count(&gw, "miss", 3.0);
    assert_cache_count(&gw, "hit", 100.0);
    let line = gw.wait_for_log(|l| l["target"] == "payedge::access" && l["cache"] == "hit");
    assert_eq!(line["tenant"], "blue");
}

#[test]
fn a_kept_response_expires_after_its_ttl_and_some_are_never_kept() {
    let (provider, served) = rates_provider(Duration::ZERO);
    let gw = Payedge::start(&cached_config(&provider, 1), &env());

    assert_eq!(
        rates(&gw, "blue", "/api/fx/rates").text(),
        r#"{"answer":1,"tenant":"blue"}"#
    );
    assert_eq!(
        rates(&gw, "blue", "/api/fx/rates").text(),
        r#"{"answer":1,"tenant":"blue"}"#
    );
    std::thread::sleep(Duration::from_millis(2_100));
    let after = rates(&gw, "blue", "/api/fx/rates");
    assert_eq!(after.text(), r#"{"answer":2,"tenant":"blue"}"#);
    assert_eq!(served.load(Ordering::SeqCst), 2);

    // Set-Cookie, no-store and anything but 200 go to the provider every time.
    for path in ["/api/private", "/api/nostore", "/api/missing"] {
        let before = served.load(Ordering::SeqCst);
        let first = rates(&gw, "blue", path);
        let second = rates(&gw, "blue", path);
        assert_eq!(served.load(Ordering::SeqCst), before + 2, "{path} was kept");
        assert_ne!(first.text(), second.text(), "{path}");
        assert_eq!(
            second.header("cache-status"),
            Some("payedge; fwd=miss"),
            "{path}"
        );
    }
    assert_cache_count(&gw, "uncacheable", 6.0);

    // POSTs are never answered from the cache.
    let before = served.load(Ordering::SeqCst);
    for _ in 0..2 {
        let resp = request(
            gw.proxy,
            "POST",
            "/api/fx/rates",
            &[("X-Tenant", "blue"), ("Authorization", &bearer("blue"))],
            b"{}",
        )
        .unwrap();
        assert_eq!(resp.status, 200);
        assert_eq!(resp.header("cache-status"), None);
    }
    assert_eq!(served.load(Ordering::SeqCst), before + 2);
}

#[test]
fn a_refused_request_never_reaches_the_cache() {
    let (provider, served) = rates_provider(Duration::ZERO);
    let gw = Payedge::start(&cached_config(&provider, 30), &env());
    assert_eq!(rates(&gw, "blue", "/api/fx/rates").status, 200);
    // Blue's token for green: refused before the cache, which would otherwise have nothing of
    // green's anyway; and without a token at all.
    let crossing = get(
        gw.proxy,
        "/api/fx/rates",
        &[("X-Tenant", "green"), ("Authorization", &bearer("blue"))],
    );
    assert_eq!(crossing.status, 403);
    assert_eq!(crossing.header("cache-status"), None);
    let anonymous = get(gw.proxy, "/api/fx/rates", &[("X-Tenant", "blue")]);
    assert_eq!(anonymous.status, 401);
    assert!(!anonymous.text().contains("answer"));
    assert_eq!(served.load(Ordering::SeqCst), 1);
}

#[test]
fn the_cache_holds_at_most_its_bytes() {
    let (provider, served) = rates_provider(Duration::ZERO);
    let yaml = format!(
        "{}cache:\n  max_bytes: 65536\n",
        cached_config(&provider, 300)
    );
    let gw = Payedge::start(&yaml, &env());
    let answer = |query: &str| {
        let resp = rates(&gw, "blue", &format!("/api/big?{query}"));
        assert_eq!(resp.status, 200);
        let body: serde_json::Value = serde_json::from_slice(&resp.body).unwrap();
        body["answer"].as_u64().unwrap()
    };
    assert_eq!(answer("a"), 1);
    assert_eq!(answer("a"), 1, "kept");
    // A second 40 KiB answer pushes the first out of a 64 KiB cache.
    assert_eq!(answer("b"), 2);
    assert_eq!(answer("b"), 2, "kept");
    assert_eq!(
        answer("a"),
        3,
        "the first answer was still kept beyond the bound"
    );
    assert_eq!(served.load(Ordering::SeqCst), 3);
}
