//! Routing, request ids, provider credentials, upstream failures and HTTP/2 through the real
//! binary and real TCP providers.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;

fn config_with_credentials(upstream: &MockUpstream) -> String {
    config(&[upstream]).replace(
        &format!("      - name: p0\n        address: {}\n", upstream.addr),
        &format!(
            "      - name: p0\n        address: {}\n        headers:\n          X-Api-Key: {{ secret_env: P0_API_KEY }}\n",
            upstream.addr
        ),
    )
}

#[test]
fn request_id_is_kept_when_sent_and_made_when_not() {
    let upstream = MockUpstream::start("p0");
    let gw = Payedge::start(&config(&[&upstream]), &env());

    let resp = get(
        gw.proxy,
        "/api/x",
        &[
            ("X-Tenant", "blue"),
            ("Authorization", &bearer("blue")),
            ("X-Request-Id", "client-id-42"),
        ],
    );
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("x-request-id"), Some("client-id-42"));
    assert_eq!(upstream.last().header("x-request-id"), Some("client-id-42"));
    gw.wait_for_log(|l| l["request_id"] == "client-id-42" && l["status"] == 200);

    let resp = get(
        gw.proxy,
        "/api/x",
        &[("X-Tenant", "blue"), ("Authorization", &bearer("blue"))],
    );
    let generated = resp
        .header("x-request-id")
        .expect("no request id")
        .to_string();
    assert_eq!(generated.len(), 36, "{generated}");
    assert_eq!(
        upstream.last().header("x-request-id"),
        Some(generated.as_str())
    );

    // An id that could inject into logs or headers is replaced.
    let resp = get(
        gw.proxy,
        "/api/x",
        &[
            ("X-Tenant", "blue"),
            ("Authorization", &bearer("blue")),
            ("X-Request-Id", "bad id\"{"),
        ],
    );
    assert_ne!(resp.header("x-request-id"), Some("bad id\"{"));
    assert_eq!(
        upstream.last().header("x-request-id"),
        resp.header("x-request-id")
    );

    // Refusals carry the id too, in the header and the body.
    let resp = get(
        gw.proxy,
        "/api/x",
        &[("X-Tenant", "blue"), ("X-Request-Id", "refused-1")],
    );
    assert_eq!(resp.status, 401);
    assert_eq!(resp.header("x-request-id"), Some("refused-1"));
    assert_eq!(error_of(&resp)["request_id"], "refused-1");
}

#[test]
fn provider_credentials_reach_the_provider_and_never_the_client() {
    let upstream = MockUpstream::with("p0", |req| {
        // A careless provider that echoes the credential back.
        let key = req.header("x-api-key").unwrap_or("").to_string();
        MockResponse::json(200, json!({"ok": true})).with_header("X-Api-Key", &key)
    });
    let mut environment = env();
    environment.push(("P0_API_KEY", "sk_test_provider_secret".into()));
    let gw = Payedge::start(&config_with_credentials(&upstream), &environment);

    let resp = get(
        gw.proxy,
        "/api/pay",
        &[
            ("X-Tenant", "blue"),
            ("Authorization", &bearer("blue")),
            ("X-Api-Key", "client-forged"),
        ],
    );
    assert_eq!(resp.status, 200);
    let seen = upstream.last();
    assert_eq!(
        seen.headers_named("x-api-key"),
        vec!["sk_test_provider_secret"]
    );
    assert_eq!(resp.header("x-api-key"), None);
    assert!(!resp.text().contains("sk_test_provider_secret"));
    assert!(!gw.raw_stdout().contains("sk_test_provider_secret"));
}

#[test]
fn longest_route_wins_and_unrouted_paths_get_404() {
    let fx = MockUpstream::start("fx");
    let other = MockUpstream::start("other");
    let yaml = config(&[&other]).replace(
        "routes:\n  - path_prefix: /api\n    pool: main\n",
        "routes:\n  - path_prefix: /api\n    pool: main\n  - path_prefix: /api/fx\n    pool: fx\n",
    ) + &format!(
        "  fx:\n    providers:\n      - name: fx0\n        address: {}\n",
        fx.addr
    );
    let gw = Payedge::start(&yaml, &env());
    let auth = bearer("blue");
    let headers = [("X-Tenant", "blue"), ("Authorization", auth.as_str())];

    assert_eq!(
        get(gw.proxy, "/api/fx/quote", &headers).json()["provider"],
        "fx"
    );
    assert_eq!(
        get(gw.proxy, "/api/fxyz", &headers).json()["provider"],
        "other"
    );
    assert_eq!(get(gw.proxy, "/api", &headers).json()["provider"], "other");

    let resp = get(gw.proxy, "/public/x", &[("X-Tenant", "blue")]);
    assert_eq!(resp.status, 404);
    assert_eq!(error_of(&resp)["code"], "route_not_found");
    assert_eq!(resp.header("content-type"), Some("application/json"));
    assert_eq!(fx.count() + other.count(), 3);
}

#[test]
fn ambiguous_paths_are_refused_before_anything_else() {
    let upstream = MockUpstream::start("p0");
    let gw = Payedge::start(&config(&[&upstream]), &env());
    for path in ["/public/../api/pay", "/api/%2e%2e/x", "//api/pay"] {
        let resp = get(gw.proxy, path, &[("X-Tenant", "blue")]);
        assert_eq!(resp.status, 400, "{path}");
        assert_eq!(error_of(&resp)["code"], "path_invalid", "{path}");
    }
    assert_eq!(upstream.count(), 0);
}

#[test]
fn unreachable_provider_is_a_502_naming_it() {
    let dead = free_addr();
    let yaml = config(&[]).replace(
        "    providers:\n",
        &format!("    providers:\n      - name: cards-dead\n        address: {dead}\n"),
    );
    let gw = Payedge::start(&yaml, &env());
    let resp = get(
        gw.proxy,
        "/api/pay",
        &[("X-Tenant", "blue"), ("Authorization", &bearer("blue"))],
    );
    assert_eq!(resp.status, 502);
    let error = error_of(&resp);
    assert_eq!(error["code"], "upstream_unavailable");
    assert!(error["message"].as_str().unwrap().contains("cards-dead"));
    let line = gw.wait_for_log(|l| l["target"] == "payedge::access" && l["status"] == 502);
    assert_eq!(line["provider"], "cards-dead");
    assert_eq!(line["error_code"], "upstream_unavailable");
}

#[test]
fn a_refused_connection_fails_over_to_the_next_provider() {
    let dead = free_addr();
    let alive = MockUpstream::start("alive");
    let yaml = config(&[&alive]).replace(
        "    providers:\n",
        &format!("    providers:\n      - name: dead\n        address: {dead}\n"),
    );
    let gw = Payedge::start(&yaml, &env());
    for _ in 0..6 {
        let resp = request(
            gw.proxy,
            "POST",
            "/api/pay",
            &[("X-Tenant", "blue"), ("Authorization", &bearer("blue"))],
            br#"{"amount":"10.00"}"#,
        )
        .unwrap();
        assert_eq!(resp.status, 200, "{}", resp.text());
    }
    // Every POST arrived exactly once: the failed connects carried nothing.
    assert_eq!(alive.count(), 6);
    assert!(
        alive
            .received()
            .iter()
            .all(|r| r.body == br#"{"amount":"10.00"}"#)
    );
}

#[test]
fn a_provider_that_does_not_answer_in_time_is_a_504() {
    let slow = MockUpstream::with("slow", |_| {
        MockResponse::json(200, json!({})).after(Duration::from_secs(4))
    });
    let gw = Payedge::start(&config(&[&slow]), &env());
    let resp = request(
        gw.proxy,
        "POST",
        "/api/pay",
        &[("X-Tenant", "blue"), ("Authorization", &bearer("blue"))],
        b"{}",
    )
    .unwrap();
    assert_eq!(resp.status, 504);
    let error = error_of(&resp);
    assert_eq!(error["code"], "upstream_timeout");
    assert!(error["message"].as_str().unwrap().contains("p0"));
    assert_eq!(
        slow.count(),
        1,
        "a POST that reached a provider is never sent again"
    );
}

#[test]
fn http2_cleartext_is_served() {
    let upstream = MockUpstream::start("p0");
    let gw = Payedge::start(&config(&[&upstream]), &env());
    let out = std::process::Command::new("curl")
        .args([
            "-s",
            "--http2-prior-knowledge",
            "-w",
            "\n%{http_version} %{http_code}",
            "-H",
            "X-Tenant: blue",
        ])
        .args(["-H", &format!("Authorization: {}", bearer("blue"))])
        .arg(format!("http://{}/api/h2", gw.proxy))
        .output()
        .expect("curl is needed for the h2c test");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.ends_with("\n2 200"), "{text}");
    assert_eq!(upstream.last().header("x-tenant"), Some("blue"));
}

/// payedge's own answers to HEAD carry no body, over HTTP/2 too (where a body went out as DATA
/// and the client reset the stream with a protocol error, never seeing the status).
#[test]
fn payedges_own_answer_to_head_over_http2_is_received() {
    let upstream = MockUpstream::start("p0");
    let gw = Payedge::start(&config(&[&upstream]), &env());
    for (path, auth, status) in [("/nowhere", true, "404"), ("/api/h2", false, "401")] {
        let mut curl = std::process::Command::new("curl");
        curl.args([
            "-s",
            "-I",
            "--http2-prior-knowledge",
            "-H",
            "X-Tenant: blue",
        ]);
        if auth {
            curl.args(["-H", &format!("Authorization: {}", bearer("blue"))]);
        }
        let out = curl
            .arg(format!("http://{}{path}", gw.proxy))
            .output()
            .expect("curl is needed for the h2c test");
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(0), "{path}: {text}");
        assert!(
            text.starts_with(&format!("HTTP/2 {status}")),
            "{path}: {text}"
        );
        assert!(text.contains("content-length: "), "{path}: {text}");
    }
}

/// An HTTP/2 client that gives up (curl's own timeout: it closes its connection) is a client
/// gone, not a bad request: its log line has no error code and `bad_request` is not counted
/// (every cancelled mobile request raised it).
#[test]
fn an_http2_client_that_gives_up_is_not_counted_as_a_bad_request() {
    let slow = MockUpstream::with("slow", |_: &Recorded| {
        MockResponse::json(200, json!({})).after(Duration::from_millis(1500))
    });
    let gw = Payedge::start(&config(&[&slow]), &env());
    let out = std::process::Command::new("curl")
        .args(["-s", "--http2-prior-knowledge", "--max-time", "0.5"])
        .args(["-H", "X-Tenant: blue", "-H", "X-Request-Id: gave-up-h2"])
        .args(["-H", &format!("Authorization: {}", bearer("blue"))])
        .arg(format!("http://{}/api/slow", gw.proxy))
        .output()
        .expect("curl is needed for the h2c test");
    assert_eq!(out.status.code(), Some(28), "curl's timeout");
    let line = gw.wait_for_log(|l| l["request_id"] == "gave-up-h2");
    assert!(line["error_code"].is_null(), "{line}");
    assert_eq!(
        gw.series(r#"payedge_http_errors_total{code="bad_request"}"#),
        None,
        "{}",
        gw.metrics()
    );
}

#[test]
fn client_claims_about_earlier_hops_never_reach_the_provider() {
    let upstream = MockUpstream::start("p0");
    let gw = Payedge::start(&config(&[&upstream]), &env());
    let resp = get(
        gw.proxy,
        "/api/x",
        &[
            ("X-Tenant", "blue"),
            ("Authorization", &bearer("blue")),
            ("X-Forwarded-For", "8.8.8.8"),
            ("Forwarded", "for=8.8.8.8"),
            ("X-Real-IP", "8.8.8.8"),
        ],
    );
    assert_eq!(resp.status, 200);
    let seen = upstream.last();
    assert_eq!(seen.headers_named("x-forwarded-for"), vec!["127.0.0.1"]);
    assert!(seen.headers_named("forwarded").is_empty());
    assert!(seen.headers_named("x-real-ip").is_empty());
}

#[test]
fn the_work_stealing_runtime_serves_as_the_default_per_thread_ones_do() {
    let upstream = MockUpstream::start("p0");
    let yaml = config(&[&upstream]).replace(
        "  grace_period_seconds: 5\n",
        "  grace_period_seconds: 5\n  work_stealing: true\n",
    );
    assert!(yaml.contains("work_stealing: true"), "{yaml}");
    let gw = Payedge::start(&yaml, &env());
    for i in 0..20 {
        let id = format!("stealing-{i}");
        let resp = get(
            gw.proxy,
            "/api/x",
            &[
                ("X-Tenant", "blue"),
                ("Authorization", &bearer("blue")),
                ("X-Request-Id", &id),
            ],
        );
        assert_eq!(resp.status, 200);
        assert_eq!(upstream.last().header("x-request-id"), Some(id.as_str()));
    }
    assert_eq!(upstream.received().len(), 20);
}
