//! Tenant resolution end to end, through the real binary: the host, subdomain and header
//! strategies alone and in order, every refusal with its status, code and JSON shape, the
//! rejection metrics, disabled tenancy, and the guarantee that the provider only ever sees the
//! tenant the gateway resolved.

mod common;

use std::time::{Duration, Instant};

use common::*;

/// Request headers of a table-driven case.
type Headers = &'static [(&'static str, &'static str)];

/// The tenancy section of `common::config`, replaced by the tests that need another one.
const HARNESS_TENANCY: &str = "tenancy:\n  strategy: [host, header]\n  base_domains: [smartpay.com]\n  tenants: [blue, green]\n";

fn config_with_tenancy(upstream: &MockUpstream, tenancy: &str) -> String {
    let yaml = config(&[upstream]);
    assert!(
        yaml.contains(HARNESS_TENANCY),
        "the harness configuration changed:\n{yaml}"
    );
    yaml.replace(HARNESS_TENANCY, tenancy)
}

/// GET /api/pay with `headers` and a valid token for `token_tenant`.
fn pay(gw: &Payedge, headers: &[(&str, &str)], token_tenant: &str) -> Response {
    let authorization = bearer(token_tenant);
    let mut all = headers.to_vec();
    all.push(("Authorization", &authorization));
    get(gw.proxy, "/api/pay", &all)
}

/// Every tenant header value the provider received on its last request.
fn forwarded_tenant(upstream: &MockUpstream) -> Vec<String> {
    upstream
        .last()
        .headers_named("x-tenant")
        .into_iter()
        .map(str::to_owned)
        .collect()
}

/// Asserts `resp` is the gateway's own JSON error with `status` and `code`, in the one shape
/// `{"error":{"code","message","request_id"}}`, its request id also in `X-Request-Id`.
#[track_caller]
fn assert_refused(resp: &Response, status: u16, code: &str, what: &str) {
    assert_eq!(resp.status, status, "{what}: {}", resp.text());
    assert_eq!(
        resp.header("content-type"),
        Some("application/json"),
        "{what}"
    );
    let body = resp.json();
    let top = body.as_object().expect("the body is a JSON object");
    assert_eq!(top.len(), 1, "{what}: only `error` at the top: {body}");
    let error = top["error"].as_object().expect("`error` is an object");
    assert_eq!(error.len(), 3, "{what}: code, message, request_id: {body}");
    assert_eq!(error["code"], code, "{what}");
    assert!(
        error["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{what}: {body}"
    );
    let id = error["request_id"]
        .as_str()
        .expect("request_id is a string");
    assert!(!id.is_empty(), "{what}");
    assert_eq!(resp.header("x-request-id"), Some(id), "{what}");
}

/// The sum of the samples of metric `name` whose labels include all of `labels`.
fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let rest = series.strip_prefix(name)?;
            if !(rest.is_empty() || rest.starts_with('{')) {
                return None;
            }
            labels
                .iter()
                .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")))
                .then(|| value.parse::<f64>().ok())?
        })
        .sum()
}

fn rejections(text: &str, reason: &str) -> f64 {
    metric(
        text,
        "payedge_tenant_rejections_total",
        &[("reason", reason)],
    )
}

/// Polls /metrics until `name{labels}` equals `expected` (request counters are written in the
/// logging phase, just after the response).
fn wait_for_metric(gw: &Payedge, name: &str, labels: &[(&str, &str)], expected: f64) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let text = gw.metrics();
        let value = metric(&text, name, labels);
        if value == expected {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{name}{labels:?} is {value}, expected {expected}:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn header_strategy_reads_the_tenant_header() {
    let upstream = MockUpstream::start("p0");
    let yaml = config_with_tenancy(
        &upstream,
        "tenancy:\n  strategy: header\n  tenants: [blue, green]\n",
    );
    let gw = Payedge::start(&yaml, &env());

    let resp = pay(&gw, &[("X-Tenant", "blue")], "blue");
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(forwarded_tenant(&upstream), ["blue"]);

    // The id is case-insensitive; the provider gets the canonical name.
    let resp = pay(&gw, &[("X-Tenant", "GREEN")], "green");
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(forwarded_tenant(&upstream), ["green"]);

    // The header strategy alone never looks at the Host.
    let resp = pay(&gw, &[("Host", "blue.smartpay.com")], "blue");
    assert_refused(
        &resp,
        400,
        "tenant_unresolved",
        "host under header strategy",
    );
    assert_eq!(upstream.count(), 2);
}

#[test]
fn host_strategy_takes_the_first_label_under_a_base_domain() {
    let upstream = MockUpstream::start("p0");
    let yaml = config_with_tenancy(
        &upstream,
        "tenancy:\n  strategy: host\n  base_domains: [smartpay.com]\n  tenants: [blue, green]\n",
    );
    let gw = Payedge::start(&yaml, &env());

    for (host, tenant) in [
        ("blue.smartpay.com", "blue"),
        ("Blue.SmartPay.com.:8443", "blue"),
        ("blue.api.smartpay.com", "blue"),
        ("green.smartpay.com", "green"),
        ("GREEN.eu.smartpay.com:80", "green"),
    ] {
        let resp = pay(&gw, &[("Host", host)], tenant);
        assert_eq!(resp.status, 200, "{host}: {}", resp.text());
        assert_eq!(forwarded_tenant(&upstream), [tenant], "{host}");
    }
    let served = upstream.count();
    assert_eq!(served, 5);

    // A base domain itself, a host outside every base, an IP: no tenant. The header strategy
    // is not configured, so X-Tenant is not consulted.
    for host in [
        "smartpay.com",
        "blue.example.org",
        "notsmartpay.com",
        "127.0.0.1:8080",
    ] {
        let resp = pay(&gw, &[("Host", host), ("X-Tenant", "blue")], "blue");
        assert_refused(&resp, 400, "tenant_unresolved", host);
    }
    assert_eq!(
        upstream.count(),
        served,
        "refused requests reached the mock"
    );
}

#[test]
fn host_strategy_never_forwards_the_client_tenant_header() {
    let upstream = MockUpstream::start("p0");
    let yaml = config_with_tenancy(
        &upstream,
        "tenancy:\n  strategy: host\n  base_domains: [smartpay.com]\n  tenants: [blue, green]\n",
    );
    let gw = Payedge::start(&yaml, &env());

    let resp = pay(
        &gw,
        &[("Host", "blue.smartpay.com"), ("X-Tenant", "green")],
        "blue",
    );
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(forwarded_tenant(&upstream), ["blue"]);

    // Several copies, in any case and any spelling, are all replaced by the one canonical value.
    let resp = pay(
        &gw,
        &[
            ("Host", "blue.smartpay.com"),
            ("X-Tenant", "green"),
            ("x-tenant", "red"),
            ("X-TENANT", "blue, green"),
        ],
        "blue",
    );
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(forwarded_tenant(&upstream), ["blue"]);
    assert_eq!(upstream.count(), 2);
}

#[test]
fn subdomain_strategy_takes_the_label_directly_under_the_base_domain() {
    let upstream = MockUpstream::start("p0");
    let yaml = config_with_tenancy(
        &upstream,
        "tenancy:\n  strategy: subdomain\n  base_domains: [api.smartpay.com]\n  tenants: [blue, green]\n",
    );
    let gw = Payedge::start(&yaml, &env());

    for (host, tenant) in [
        ("blue.api.smartpay.com", "blue"),
        ("Green.API.smartpay.com:8443", "green"),
        ("eu.green.api.smartpay.com", "green"),
    ] {
        let resp = pay(&gw, &[("Host", host)], tenant);
        assert_eq!(resp.status, 200, "{host}: {}", resp.text());
        assert_eq!(forwarded_tenant(&upstream), [tenant], "{host}");
    }
    assert_eq!(upstream.count(), 3);

    for host in ["blue.smartpay.com", "api.smartpay.com", "smartpay.com"] {
        let resp = pay(&gw, &[("Host", host)], "blue");
        assert_refused(&resp, 400, "tenant_unresolved", host);
    }
    let resp = pay(&gw, &[("Host", "red.api.smartpay.com")], "blue");
    assert_refused(&resp, 404, "tenant_unknown", "red.api.smartpay.com");
    assert_eq!(upstream.count(), 3, "refused requests reached the mock");
}

#[test]
fn host_then_header_lets_the_host_decide() {
    let upstream = MockUpstream::start("p0");
    // common::config is strategy [host, header] under smartpay.com.
    let gw = Payedge::start(&config(&[&upstream]), &env());

    // Both present: the host decides, and the client's header does not travel on.
    let resp = pay(
        &gw,
        &[("Host", "blue.smartpay.com"), ("X-Tenant", "green")],
        "blue",
    );
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(forwarded_tenant(&upstream), ["blue"]);

    // A host that names no tenant (an IP here) falls through to the header.
    let resp = pay(&gw, &[("X-Tenant", "green")], "green");
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(forwarded_tenant(&upstream), ["green"]);
    for host in ["localhost", "[::1]:8080"] {
        let resp = pay(&gw, &[("Host", host), ("X-Tenant", "green")], "green");
        assert_eq!(resp.status, 200, "{host}: {}", resp.text());
        assert_eq!(forwarded_tenant(&upstream), ["green"], "{host}");
    }
    assert_eq!(upstream.count(), 4);

    // A host naming an unknown tenant is refused, not passed on to the header.
    let resp = pay(
        &gw,
        &[("Host", "red.smartpay.com"), ("X-Tenant", "green")],
        "green",
    );
    assert_refused(&resp, 404, "tenant_unknown", "red host with green header");
    assert_eq!(upstream.count(), 4, "the refused request reached the mock");
}

#[test]
fn header_then_host_lets_the_header_decide() {
    let upstream = MockUpstream::start("p0");
    let yaml = config_with_tenancy(
        &upstream,
        "tenancy:\n  strategy: [header, host]\n  base_domains: [smartpay.com]\n  tenants: [blue, green]\n",
    );
    let gw = Payedge::start(&yaml, &env());

    let resp = pay(
        &gw,
        &[("Host", "blue.smartpay.com"), ("X-Tenant", "green")],
        "green",
    );
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(forwarded_tenant(&upstream), ["green"]);

    // No header: the host decides.
    let resp = pay(&gw, &[("Host", "blue.smartpay.com")], "blue");
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(forwarded_tenant(&upstream), ["blue"]);
    assert_eq!(upstream.count(), 2);

    // An unknown header value is refused, not passed on to the host.
    let resp = pay(
        &gw,
        &[("Host", "blue.smartpay.com"), ("X-Tenant", "red")],
        "blue",
    );
    assert_refused(&resp, 404, "tenant_unknown", "red header with blue host");
    assert_eq!(upstream.count(), 2, "the refused request reached the mock");
}

#[test]
fn host_strategy_reads_the_http2_authority() {
    let upstream = MockUpstream::start("p0");
    let yaml = config_with_tenancy(
        &upstream,
        "tenancy:\n  strategy: host\n  base_domains: [smartpay.com]\n  tenants: [blue, green]\n",
    );
    let gw = Payedge::start(&yaml, &env());
    // curl sends the Host given here as the HTTP/2 `:authority`.
    let out = std::process::Command::new("curl")
        .args([
            "-s",
            "--http2-prior-knowledge",
            "-w",
            "\n%{http_version} %{http_code}",
        ])
        .args(["-H", "Host: blue.smartpay.com", "-H", "X-Tenant: green"])
        .args(["-H", &format!("Authorization: {}", bearer("blue"))])
        .arg(format!("http://{}/api/h2", gw.proxy))
        .output()
        .expect("curl is needed for the h2c test");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.ends_with("\n2 200"), "{text}");
    assert_eq!(forwarded_tenant(&upstream), ["blue"]);
}

#[test]
fn a_custom_tenant_header_is_read_and_sent_upstream_instead_of_x_tenant() {
    let upstream = MockUpstream::start("p0");
    let yaml = config_with_tenancy(
        &upstream,
        "tenancy:\n  strategy: header\n  header: X-Org\n  tenants: [blue, green]\n",
    );
    let gw = Payedge::start(&yaml, &env());

    let resp = pay(&gw, &[("X-Org", "green"), ("X-Tenant", "blue")], "green");
    assert_eq!(resp.status, 200, "{}", resp.text());
    let seen = upstream.last();
    assert_eq!(seen.headers_named("x-org"), ["green"]);
    assert_eq!(
        seen.headers_named("x-tenant"),
        Vec::<&str>::new(),
        "the client's X-Tenant reached the provider"
    );

    // X-Tenant is just another header now: it resolves nothing.
    let resp = pay(&gw, &[("X-Tenant", "blue")], "blue");
    assert_refused(
        &resp,
        400,
        "tenant_unresolved",
        "X-Tenant with header X-Org",
    );
    let resp = pay(&gw, &[("X-Org", "blue;drop")], "blue");
    assert_refused(&resp, 400, "tenant_invalid", "malformed X-Org");
    assert_eq!(upstream.count(), 1);
}

#[test]
fn unknown_tenant_is_404_and_never_forwarded() {
    let upstream = MockUpstream::start("p0");
    let gw = Payedge::start(&config(&[&upstream]), &env());
    let before = rejections(&gw.metrics(), "unknown");

    let cases: [(&str, Headers); 3] = [
        ("red header", &[("X-Tenant", "red")]),
        ("red host", &[("Host", "red.smartpay.com")]),
        ("red host with port", &[("Host", "RED.smartpay.com:443")]),
    ];
    for (what, headers) in cases {
        let resp = pay(&gw, headers, "blue");
        assert_refused(&resp, 404, "tenant_unknown", what);
    }
    assert_eq!(upstream.count(), 0);
    assert_eq!(rejections(&gw.metrics(), "unknown") - before, 3.0);
}

#[test]
fn nothing_resolvable_is_400_tenant_unresolved() {
    let upstream = MockUpstream::start("p0");
    let gw = Payedge::start(&config(&[&upstream]), &env());
    let before = rejections(&gw.metrics(), "unresolved");

    let cases: [(&str, Headers); 4] = [
        ("IP host, no header", &[]),
        ("base domain host", &[("Host", "smartpay.com")]),
        ("foreign host", &[("Host", "blue.example.org")]),
        ("empty header", &[("Host", "localhost"), ("X-Tenant", "")]),
    ];
    for (what, headers) in cases {
        let resp = pay(&gw, headers, "blue");
        assert_refused(&resp, 400, "tenant_unresolved", what);
    }
    assert_eq!(upstream.count(), 0);
    assert_eq!(rejections(&gw.metrics(), "unresolved") - before, 4.0);
}

#[test]
fn garbage_host_is_400_host_invalid() {
    let upstream = MockUpstream::start("p0");
    let gw = Payedge::start(&config(&[&upstream]), &env());
    let before = rejections(&gw.metrics(), "malformed_host");

    let hosts = [
        "bl ue.smartpay.com",
        "blue..smartpay.com",
        ".smartpay.com",
        "-blue.smartpay.com",
        "blue.smartpay.com:99999",
        "blue.smartpay.com:80:80",
        "blue_/evil.smartpay.com",
        "",
    ];
    for host in hosts {
        // A valid X-Tenant does not rescue a malformed Host: the host strategy comes first.
        let resp = pay(&gw, &[("Host", host), ("X-Tenant", "blue")], "blue");
        assert_refused(&resp, 400, "host_invalid", host);
    }
    assert_eq!(upstream.count(), 0);
    assert_eq!(
        rejections(&gw.metrics(), "malformed_host") - before,
        hosts.len() as f64
    );

    // A Host with userinfo is refused by Pingora itself while it reads the request, before any
    // payedge phase runs (so with Pingora's bare 400, not payedge's JSON): still never forwarded.
    let resp = pay(
        &gw,
        &[("Host", "user@blue.smartpay.com"), ("X-Tenant", "blue")],
        "blue",
    );
    assert_eq!(resp.status, 400, "{}", resp.text());
    assert_eq!(upstream.count(), 0);
}

#[test]
fn malformed_tenant_header_is_400_tenant_invalid() {
    let upstream = MockUpstream::start("p0");
    let gw = Payedge::start(&config(&[&upstream]), &env());
    let before = rejections(&gw.metrics(), "malformed_tenant");

    let too_long = "a".repeat(64);
    let values = [
        "blue;drop",
        "-blue",
        "_blue",
        "blue.green",
        "blue green",
        "blue/../green",
        too_long.as_str(),
    ];
    for value in values {
        let resp = pay(&gw, &[("X-Tenant", value)], "blue");
        assert_refused(&resp, 400, "tenant_invalid", value);
    }
    assert_eq!(upstream.count(), 0);
    assert_eq!(
        rejections(&gw.metrics(), "malformed_tenant") - before,
        values.len() as f64
    );
}

#[test]
fn disabled_tenancy_puts_every_request_in_the_default_tenant() {
    let upstream = MockUpstream::start("p0");
    let yaml = config_with_tenancy(
        &upstream,
        "tenancy:\n  enabled: false\n  default_tenant: house\n",
    );
    let gw = Payedge::start(&yaml, &env());

    let cases: [(&str, Headers); 6] = [
        ("nothing", &[]),
        ("blue header", &[("X-Tenant", "blue")]),
        (
            "blue host, green header",
            &[("Host", "blue.smartpay.com"), ("X-Tenant", "green")],
        ),
        ("unknown header", &[("X-Tenant", "red")]),
        ("malformed header", &[("X-Tenant", "blue;drop")]),
        ("garbage host", &[("Host", "bl ue.smartpay.com")]),
    ];
    for (i, (what, headers)) in cases.into_iter().enumerate() {
        let resp = pay(&gw, headers, "house");
        assert_eq!(resp.status, 200, "{what}: {}", resp.text());
        assert_eq!(upstream.count(), i + 1, "{what}");
        assert_eq!(forwarded_tenant(&upstream), ["house"], "{what}");
    }
    wait_for_metric(
        &gw,
        "payedge_http_requests_total",
        &[("tenant", "house"), ("status_class", "2xx")],
        cases.len() as f64,
    );
}

#[test]
fn rejections_are_counted_by_reason_and_never_labelled_with_client_values() {
    let upstream = MockUpstream::start("p0");
    let gw = Payedge::start(&config(&[&upstream]), &env());
    let before = gw.metrics();

    let cases: [(&str, Headers, u16, &str); 5] = [
        (
            "unknown header",
            &[("X-Tenant", "evil-value-123")],
            404,
            "tenant_unknown",
        ),
        (
            "unknown host",
            &[("Host", "evil-value-123.smartpay.com")],
            404,
            "tenant_unknown",
        ),
        (
            "malformed header",
            &[("X-Tenant", "evil-value-123;x")],
            400,
            "tenant_invalid",
        ),
        (
            "malformed host",
            &[("Host", "evil-value-123..smartpay.com")],
            400,
            "host_invalid",
        ),
        (
            "nothing",
            &[("Host", "localhost")],
            400,
            "tenant_unresolved",
        ),
    ];
    for (what, headers, status, code) in cases {
        let resp = pay(&gw, headers, "blue");
        assert_refused(&resp, status, code, what);
        assert!(
            !resp.text().contains("evil-value-123"),
            "{what}: the reply echoes the client's value: {}",
            resp.text()
        );
    }
    assert_eq!(upstream.count(), 0);

    // The request counter moves too (so the scrape below sees every request's labels), with the
    // catch-all tenant label.
    let unresolved_before = metric(
        &before,
        "payedge_http_requests_total",
        &[("tenant", "unresolved"), ("status_class", "4xx")],
    );
    wait_for_metric(
        &gw,
        "payedge_http_requests_total",
        &[("tenant", "unresolved"), ("status_class", "4xx")],
        unresolved_before + cases.len() as f64,
    );
    let after = gw.metrics();
    for (reason, moved) in [
        ("unknown", 2.0),
        ("malformed_tenant", 1.0),
        ("malformed_host", 1.0),
        ("unresolved", 1.0),
    ] {
        assert_eq!(
            rejections(&after, reason) - rejections(&before, reason),
            moved,
            "payedge_tenant_rejections_total{{reason={reason:?}}}"
        );
    }
    assert!(
        !after.contains("evil-value-123"),
        "a client-sent value became a metric label:\n{after}"
    );
}

#[test]
fn the_default_tenant_is_no_tenant_while_tenancy_is_enabled() {
    let upstream = MockUpstream::start("p0");
    let gw = Payedge::start(&config(&[&upstream]), &env());
    let resp = pay(&gw, &[("X-Tenant", "default")], "default");
    assert_refused(&resp, 404, "tenant_unknown", "X-Tenant: default");
    assert_eq!(upstream.count(), 0);
}
