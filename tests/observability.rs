//! Request logs, metrics and the analytics toggles, read from the real process.

mod common;

use common::*;

fn blue() -> Vec<(&'static str, String)> {
    vec![
        ("X-Tenant", "blue".into()),
        ("Authorization", bearer("blue")),
    ]
}

/// Stops the gateway with SIGTERM; it flushes its log queue before it exits, so afterwards the
/// captured stdout is complete.
fn stop_and_flush(gw: &mut Payedge) {
    gw.signal("TERM");
    assert!(gw.wait_exit(std::time::Duration::from_secs(10)).success());
    gw.wait_for_log(|l| l["message"] == "drained; stopping");
}

fn call(gw: &Payedge, method: &str, path: &str, body: &[u8]) -> Response {
    let headers = blue();
    let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
    request(gw.proxy, method, path, &headers, body).unwrap()
}

#[test]
fn one_request_log_line_holds_every_field() {
    let upstream = MockUpstream::start("p0");
    let gw = Payedge::start(&config(&[&upstream]), &env());
    let token = token("blue");
    let resp = call(
        &gw,
        "POST",
        &format!("/api/quote?access_token={token}&card=4111111111111111"),
        b"{\"a\":1}",
    );
    assert_eq!(resp.status, 200);
    let id = resp.header("x-request-id").unwrap().to_string();

    let line =
        gw.wait_for_log(|l| l["target"] == "payedge::access" && l["request_id"] == id.as_str());
    assert_eq!(line["level"], "INFO");
    assert!(line["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')));
    assert_eq!(line["tenant"], "blue");
    assert_eq!(line["method"], "POST");
    assert_eq!(line["route"], "/api");
    assert_eq!(line["path"], "/api/quote");
    assert_eq!(line["status"], 200);
    assert!(line["duration_ms"].as_f64().is_some_and(|d| d > 0.0));
    assert_eq!(line["pool"], "main");
    assert_eq!(line["provider"], "p0");
    assert_eq!(line["bytes_in"], 7);
    assert_eq!(line["bytes_out"], resp.body.len());
    // Neither the query string (it may carry tokens or card data) nor the token is logged.
    let stdout = gw.raw_stdout();
    // (The whole number: a short fragment like "4111" can occur in any id or duration.)
    assert!(!stdout.contains("4111111111111111"));
    assert!(!stdout.contains(&token));
    assert_eq!(gw.access_logs().len(), 1);
}

#[test]
fn refusals_are_logged_with_their_code() {
    let upstream = MockUpstream::start("p0");
    let gw = Payedge::start(&config(&[&upstream]), &env());
    let resp = get(
        gw.proxy,
        "/api/x",
        &[("X-Tenant", "green"), ("Authorization", &bearer("blue"))],
    );
    assert_eq!(resp.status, 403);
    let line = gw.wait_for_log(|l| l["target"] == "payedge::access");
    assert_eq!(line["status"], 403);
    assert_eq!(line["error_code"], "tenant_mismatch");
    assert_eq!(line["tenant"], "green");
    assert!(line.get("provider").is_none());
}

#[test]
fn metrics_count_requests_by_tenant_route_and_class() {
    let upstream = MockUpstream::start("p0");
    let gw = Payedge::start(&config(&[&upstream]), &env());
    for _ in 0..3 {
        assert_eq!(call(&gw, "GET", "/api/x", b"").status, 200);
    }
    assert_eq!(get(gw.proxy, "/api/x", &[("X-Tenant", "blue")]).status, 401);
    assert_eq!(
        get(gw.proxy, "/nowhere", &[("X-Tenant", "green")]).status,
        404
    );

    let expected = [
        r#"payedge_http_requests_total{route="/api",status_class="2xx",tenant="blue"} 3"#,
        r#"payedge_http_requests_total{route="/api",status_class="4xx",tenant="blue"} 1"#,
        r#"payedge_http_requests_total{route="none",status_class="4xx",tenant="green"} 1"#,
        r#"payedge_http_request_duration_seconds_count{route="/api",tenant="blue"} 4"#,
        r#"payedge_upstream_requests_total{pool="main",provider="p0",status_class="2xx"} 3"#,
        r#"payedge_auth_failures_total{reason="missing"} 1"#,
        r#"payedge_tenant_rejections_total{reason="unknown"} 0"#,
    ];
    let text = gw.wait_for_metrics(|text| expected.iter().all(|e| text.lines().any(|l| l == *e)));
    assert!(text.contains("payedge_log_lines_dropped_total 0"), "{text}");
    assert!(text.contains("process_resident_memory_bytes"), "{text}");
}

#[test]
fn metrics_pass_promtool() {
    let upstream = MockUpstream::start("p0");
    let gw = Payedge::start(&config(&[&upstream]), &env());
    call(&gw, "GET", "/api/x", b"");
    get(gw.proxy, "/api/x", &[("X-Tenant", "nobody")]);
    let report = common::process::promtool_check_metrics(&gw.metrics());
    assert!(report.is_empty(), "promtool: {report}");
}

#[test]
fn request_logging_off_writes_no_request_lines_but_keeps_metrics() {
    let upstream = MockUpstream::start("p0");
    let yaml = config(&[&upstream]) + "analytics:\n  request_logging: false\n";
    let mut gw = Payedge::start(&yaml, &env());
    assert_eq!(call(&gw, "GET", "/api/x", b"").status, 200);
    assert_eq!(get(gw.proxy, "/api/x", &[("X-Tenant", "blue")]).status, 401);
    gw.wait_for_metrics(|text| {
        text.contains(
            r#"payedge_http_requests_total{route="/api",status_class="4xx",tenant="blue"} 1"#,
        )
    });
    assert!(gw.metrics().contains(
        r#"payedge_http_requests_total{route="/api",status_class="2xx",tenant="blue"} 1"#
    ));
    stop_and_flush(&mut gw);
    assert!(gw.access_logs().is_empty(), "{}", gw.raw_stdout());
}

#[test]
fn analytics_off_turns_off_request_lines_and_metrics() {
    let upstream = MockUpstream::start("p0");
    let yaml = config(&[&upstream]) + "analytics:\n  enabled: false\n";
    let mut gw = Payedge::start(&yaml, &env());
    assert_eq!(call(&gw, "GET", "/api/x", b"").status, 200);
    let resp = get(gw.admin, "/metrics", &[]);
    assert_eq!(resp.status, 404);
    assert_eq!(error_of(&resp)["code"], "not_found");
    assert!(!resp.text().contains("payedge_http_requests_total"));
    assert_eq!(get(gw.admin, "/healthz", &[]).status, 200);
    stop_and_flush(&mut gw);
    assert!(gw.access_logs().is_empty(), "{}", gw.raw_stdout());
}

#[test]
fn metrics_path_is_configurable_and_admin_has_health() {
    let upstream = MockUpstream::start("p0");
    let yaml = config(&[&upstream]) + "analytics:\n  metrics_path: /internal/prom\n";
    let gw = Payedge::start(&yaml, &env());
    assert_eq!(get(gw.admin, "/metrics", &[]).status, 404);
    let resp = get(gw.admin, "/internal/prom", &[]);
    assert_eq!(resp.status, 200);
    assert!(
        resp.text().contains("payedge_http_requests_total")
            || resp.text().contains("payedge_auth_failures_total")
    );
    let health = get(gw.admin, "/healthz", &[]);
    assert_eq!(
        (health.status, health.json()["status"].clone()),
        (200, "ok".into())
    );
    let ready = get(gw.admin, "/readyz", &[]);
    assert_eq!(
        (ready.status, ready.json()["status"].clone()),
        (200, "ready".into())
    );
    assert_eq!(
        request(gw.admin, "POST", "/healthz", &[], b"")
            .unwrap()
            .status,
        405
    );
}
