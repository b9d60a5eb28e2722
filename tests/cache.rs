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
            "/api/varying" => {
                headers.push(("Vary".into(), "X-Auth-Subject".into()));
                200
            }
            _ => 200,
        };
        if path == "/api/big" || path == "/api/huge" {
            // 12 KiB: five fit in a 64 KiB cache, not six. 20 KiB: more than a quarter of it,
            // the most one answer may take.
            let size = if path == "/api/big" { 12 } else { 20 };
            let padding = "x".repeat(size * 1024);
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
    for n in 1..=5 {
        assert_eq!(answer(&n.to_string()), n);
        assert_eq!(answer(&n.to_string()), n, "kept");
    }
    // An answer over a quarter of the cache is never kept, and pushes nothing out.
    let huge = |n: u64| {
        let resp = rates(&gw, "blue", "/api/huge");
        assert_eq!(resp.status, 200);
        let body: serde_json::Value = serde_json::from_slice(&resp.body).unwrap();
        assert_eq!(body["answer"].as_u64(), Some(n), "not kept");
    };
    huge(6);
    huge(7);
    assert_eq!(answer("1"), 1, "still kept");
    // A sixth 12 KiB answer pushes the least recently used (the second) out of 64 KiB.
    assert_eq!(answer("6"), 8);
    assert_eq!(answer("6"), 8, "kept");
    // Gone from the storage before the answer that evicted it was finished (payedge removes
    // evictions itself; Pingora's own purge runs later in a task of its own).
    assert_eq!(
        answer("2"),
        9,
        "the second answer was still kept beyond the bound"
    );
    assert_eq!(answer("1"), 1, "the recently used one stayed");
    assert_eq!(served.load(Ordering::SeqCst), 9);
}

/// HEAD on a route that caches it: the miss is fetched with GET and kept, and the HEAD's answer
/// has no body, over HTTP/2 too (the body went out as DATA there and curl failed the stream).
#[test]
fn a_head_miss_over_http2_is_answered_without_a_body_and_fills_the_cache() {
    let (provider, served) = rates_provider(Duration::ZERO);
    let yaml = cached_config(&provider, 300).replace("methods: [GET]", "methods: [GET, HEAD]");
    let gw = Payedge::start(&yaml, &env());
    let out = std::process::Command::new("curl")
        .args([
            "-s",
            "-I",
            "--http2-prior-knowledge",
            "-H",
            "X-Tenant: blue",
        ])
        .args(["-H", &format!("Authorization: {}", bearer("blue"))])
        .arg(format!("http://{}/api/rates-by-head", gw.proxy))
        .output()
        .expect("curl is needed for the h2c test");
    let head = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{head}");
    assert!(head.starts_with("HTTP/2 200"), "{head}");
    assert!(head.contains("fwd=miss; stored"), "{head}");
    let resp = rates(&gw, "blue", "/api/rates-by-head");
    let status = resp.header("cache-status").unwrap_or_default();
    assert!(status.starts_with("payedge; hit"), "{status}");
    let body: serde_json::Value = serde_json::from_slice(&resp.body).unwrap();
    assert_eq!(body["answer"], 1, "the body kept by the HEAD's miss");
    assert_eq!(served.load(Ordering::SeqCst), 1);
}

#[test]
fn credentials_payedge_did_not_check_bypass_the_cache_and_varying_answers_are_not_kept() {
    let (provider, served) = rates_provider(Duration::ZERO);
    // /public is outside auth.required_path_prefixes: the provider checks what callers send.
    let yaml = cached_config(&provider, 300).replace(
        "  - path_prefix: /api\n",
        "  - path_prefix: /public\n    pool: main\n    cache: { ttl_seconds: 300, methods: [GET] }\n  - path_prefix: /api\n",
    );
    assert!(yaml.contains("/public"), "{yaml}");
    let gw = Payedge::start(&yaml, &env());
    let answer = |headers: &[(&str, &str)]| {
        let resp = get(gw.proxy, "/public/rates", headers);
        assert_eq!(resp.status, 200, "{}", resp.text());
        let body: serde_json::Value = serde_json::from_slice(&resp.body).unwrap();
        (
            body["answer"].as_u64().unwrap(),
            resp.header("cache-status").map(str::to_string),
        )
    };
    let with_cookie = [("X-Tenant", "blue"), ("Cookie", "session=shop-a")];
    let anonymous = [("X-Tenant", "blue")];
    // Caller A's answer, for a cookie the provider checks, is neither kept nor read from the
    // cache...
    assert_eq!(answer(&with_cookie), (1, None));
    assert_eq!(answer(&with_cookie).0, 2);
    // ...so an anonymous caller never gets it: it gets its own, which is kept.
    assert_eq!(answer(&anonymous).0, 3);
    assert_eq!(answer(&anonymous).0, 3);
    // Callers whose token payedge verified have entries of their own: never the anonymous
    // callers' answers, nor theirs to anonymous callers.
    let token = bearer("blue");
    let verified = [("X-Tenant", "blue"), ("Authorization", token.as_str())];
    assert_eq!(answer(&verified).0, 4);
    assert_eq!(answer(&verified).0, 4);
    assert_eq!(answer(&anonymous).0, 3);
    assert_eq!(served.load(Ordering::SeqCst), 4);
    // An answer that varies on a request header is not kept.
    let varying = |_: ()| {
        let resp = rates(&gw, "blue", "/api/varying");
        assert_eq!(resp.status, 200);
        serde_json::from_slice::<serde_json::Value>(&resp.body).unwrap()["answer"]
            .as_u64()
            .unwrap()
    };
    assert_eq!(varying(()), 5);
    assert_eq!(varying(()), 6, "not kept");
}
