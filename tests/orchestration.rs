//! Selection rules end to end: currencies, tenants, costs, the operators' view of providers,
//! the retry budget and which failures count towards ejection.

mod common;

use common::*;
use serde_json::json;

fn named(mocks: &[&MockUpstream]) -> Vec<(String, std::net::SocketAddr)> {
    mocks.iter().map(|m| (m.name.clone(), m.addr)).collect()
}

/// Adds YAML lines (indented for a provider entry) under provider `name`.
fn with_provider_settings(yaml: &str, name: &str, lines: &str) -> String {
    let anchor = format!("      - name: {name}\n");
    let at = yaml.find(&anchor).expect("no such provider") + anchor.len();
    let next_line = yaml[at..].find('\n').map_or(yaml.len(), |i| at + i + 1);
    format!("{}{}{}", &yaml[..next_line], lines, &yaml[next_line..])
}

fn pay(gw: &Payedge, tenant: &str, currency: Option<&str>) -> Response {
    let auth = bearer(tenant);
    let mut headers = vec![("X-Tenant", tenant), ("Authorization", auth.as_str())];
    if let Some(c) = currency {
        headers.push(("X-Currency", c));
    }
    request(
        gw.proxy,
        "POST",
        "/api/pay",
        &headers,
        br#"{"amount":"5.00"}"#,
    )
    .unwrap()
}

#[test]
fn currency_and_tenant_decide_who_may_take_a_payment() {
    let eur = MockUpstream::start("eur-only");
    let usd = MockUpstream::start("usd-blue");
    let yaml = config_for(&named(&[&eur, &usd]), "");
    let yaml = with_provider_settings(&yaml, "eur-only", "        currencies: [EUR]\n");
    let yaml = with_provider_settings(
        &yaml,
        "usd-blue",
        "        currencies: [USD, GBP]\n        tenants: [blue]\n",
    );
    let gw = Payedge::start(&yaml, &env());

    for _ in 0..4 {
        assert_eq!(pay(&gw, "blue", Some("usd")).json()["provider"], "usd-blue");
        assert_eq!(
            pay(&gw, "green", Some("EUR")).json()["provider"],
            "eur-only"
        );
    }
    let resp = pay(&gw, "blue", Some("JPY"));
    assert_eq!(
        (resp.status, error_of(&resp)["code"].clone()),
        (422, json!("currency_unsupported"))
    );
    // GBP is taken, but not by a provider serving green.
    let resp = pay(&gw, "green", Some("GBP"));
    assert_eq!(
        (resp.status, error_of(&resp)["code"].clone()),
        (422, json!("currency_unsupported"))
    );
    let resp = pay(&gw, "blue", Some("not-a-code"));
    assert_eq!(resp.status, 422);
    assert_eq!(eur.count() + usd.count(), 8);
}

#[test]
fn a_tenant_no_provider_serves_is_refused() {
    let blue_only = MockUpstream::start("blue-only");
    let yaml = config_for(&named(&[&blue_only]), "");
    let yaml = with_provider_settings(&yaml, "blue-only", "        tenants: [blue]\n");
    let gw = Payedge::start(&yaml, &env());
    let resp = pay(&gw, "green", None);
    assert_eq!(
        (resp.status, error_of(&resp)["code"].clone()),
        (403, json!("tenant_not_served"))
    );
    assert_eq!(pay(&gw, "blue", None).status, 200);
    assert_eq!(blue_only.count(), 1);
}

#[test]
fn the_cheaper_provider_takes_more_when_cost_counts() {
    let cheap = MockUpstream::start("cheap");
    let dear = MockUpstream::start("dear");
    let pool = "    selection:\n      cost_weight: 0.5\n      latency_weight: 0\n";
    let yaml = config_for(&named(&[&cheap, &dear]), pool);
    let yaml = with_provider_settings(
        &yaml,
        "cheap",
        "        cost: { percent: \"1.5\", fixed: \"0.10\" }\n",
    );
    let yaml = with_provider_settings(
        &yaml,
        "dear",
        "        cost: { percent: 3.0, fixed: 0.20 }\n",
    );
    let gw = Payedge::start(&yaml, &env());
    for _ in 0..70 {
        assert_eq!(pay(&gw, "blue", None).status, 200);
    }
    // Fees on 100: 1.60 and 3.20; dear's factor 1 − 0.5 × 1.60 / 3.20 = 0.75: 4 to 3.
    assert_eq!((cheap.count(), dear.count()), (40, 30));
}

#[test]
fn operators_see_every_provider_with_its_score() {
    let a = MockUpstream::start("cards-a");
    let b = MockUpstream::start("cards-b");
    let yaml = config_for(&named(&[&a, &b]), "");
    let yaml = with_provider_settings(
        &yaml,
        "cards-a",
        "        weight: 3\n        cost: { percent: \"1.9\", fixed: \"0.20\" }\n        currencies: [EUR]\n",
    );
    let gw = Payedge::start(&yaml, &env());
    pay(&gw, "blue", None);

    let denied = get(gw.admin, "/admin/providers", &[]);
    assert_eq!(
        (denied.status, error_of(&denied)["code"].clone()),
        (401, json!("unauthorized"))
    );
    let payer = get(
        gw.admin,
        "/admin/providers",
        &[("Authorization", &bearer("blue"))],
    );
    assert_eq!(
        (payer.status, error_of(&payer)["code"].clone()),
        (403, json!("forbidden"))
    );

    let resp = get(
        gw.admin,
        "/admin/providers",
        &[("Authorization", &admin_bearer())],
    );
    assert_eq!(resp.status, 200, "{}", resp.text());
    let pool = &resp.json()["pools"][0];
    assert_eq!(pool["name"], "main");
    let first = &pool["providers"][0];
    assert_eq!(first["name"], "cards-a");
    assert_eq!(first["state"], "admitted");
    assert_eq!(first["healthy"], true);
    assert_eq!(first["weight"], 3);
    assert_eq!(first["cost"], json!({"percent": "1.9", "fixed": "0.20"}));
    assert_eq!(first["currencies"], json!(["EUR"]));
    assert_eq!(first["success_rate"], "1");
    for field in [
        "score",
        "effective_weight",
        "latency_ms",
        "ejections",
        "consecutive_failures",
        "ejected_for_ms",
        "address",
    ] {
        assert!(first.get(field).is_some(), "{field} missing: {first}");
    }
}

#[test]
fn the_retry_budget_stops_retrying_a_failing_provider() {
    let failing = MockUpstream::with("failing", |_| {
        MockResponse::json(503, json!({"error": "down"}))
    });
    let healthy = MockUpstream::start("healthy");
    let pool = "    retry:\n      max_attempts: 2\n      budget_percent: 0\n    outlier:\n      consecutive_failures: 100\n";
    let gw = Payedge::start(&config_for(&named(&[&failing, &healthy]), pool), &env());
    let mut statuses = Vec::new();
    for _ in 0..40 {
        let resp = get(
            gw.proxy,
            "/api/pay",
            &[("X-Tenant", "blue"), ("Authorization", &bearer("blue"))],
        );
        statuses.push(resp.status);
    }
    // Half the GETs meet the failing provider first; the reserve of 10 retries saves 10 of them,
    // the rest get the provider's 503 as is.
    assert_eq!(
        statuses.iter().filter(|s| **s == 503).count(),
        10,
        "{statuses:?}"
    );
    let metrics = gw.metrics();
    assert!(
        metrics.contains(r#"payedge_retry_budget_exhausted_total{pool="main"} 10"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"payedge_failovers_total{pool="main",reason="status_5xx"} 10"#),
        "{metrics}"
    );
}

#[test]
fn failure_on_decides_what_ejects() {
    let failing = MockUpstream::with("failing", |_| MockResponse::json(500, json!({})));
    let other = MockUpstream::start("other");
    let only_connect = "    outlier:\n      consecutive_failures: 2\n      failure_on: [connect_error]\n    retry:\n      max_attempts: 1\n";
    let gw = Payedge::start(
        &config_for(&named(&[&failing, &other]), only_connect),
        &env(),
    );
    for _ in 0..10 {
        pay(&gw, "blue", None);
    }
    assert_eq!(
        failing.count(),
        5,
        "5xx does not eject when failure_on lists only connect_error"
    );

    let failing = MockUpstream::with("failing", |_| MockResponse::json(500, json!({})));
    let other = MockUpstream::start("other");
    let with_5xx = only_connect.replace("[connect_error]", "[connect_error, 5xx]");
    let gw = Payedge::start(&config_for(&named(&[&failing, &other]), &with_5xx), &env());
    for _ in 0..10 {
        pay(&gw, "blue", None);
    }
    assert_eq!(failing.count(), 2, "two 5xx in a row eject it");
    assert!(
        gw.metrics()
            .contains(r#"payedge_provider_ejections_total{pool="main",provider="failing"} 1"#)
    );
}

#[test]
fn a_retry_never_goes_to_a_provider_that_cannot_take_the_request() {
    // Only `gbp` takes GBP; when it answers 503 there is nobody to retry on, so the client gets
    // that 503 as is rather than a made-up error, and no failover is counted.
    let gbp = MockUpstream::with("gbp", |_| MockResponse::json(503, json!({"error": "busy"})));
    let other = MockUpstream::start("other");
    let yaml = config_for(
        &named(&[&gbp, &other]),
        "    outlier:\n      consecutive_failures: 100\n",
    );
    let yaml = with_provider_settings(&yaml, "gbp", "        currencies: [GBP]\n");
    let yaml = with_provider_settings(&yaml, "other", "        currencies: [EUR]\n");
    let gw = Payedge::start(&yaml, &env());
    let auth = bearer("blue");
    let resp = get(
        gw.proxy,
        "/api/pay",
        &[
            ("X-Tenant", "blue"),
            ("Authorization", &auth),
            ("X-Currency", "GBP"),
        ],
    );
    assert_eq!(resp.status, 503);
    assert_eq!(resp.json()["error"], "busy", "the provider's own answer");
    assert_eq!(other.count(), 0);
    assert!(
        !gw.metrics()
            .contains(r#"payedge_failovers_total{pool="main",reason="status_5xx"} 1"#)
    );
}

#[test]
fn retry_methods_decide_what_may_be_sent_again() {
    let failing = MockUpstream::with("failing", |_| MockResponse::json(503, json!({})));
    let healthy = MockUpstream::start("healthy");
    let pool = "    retry:\n      methods: [GET]\n    outlier:\n      consecutive_failures: 100\n";
    let gw = Payedge::start(&config_for(&named(&[&failing, &healthy]), pool), &env());
    let auth = bearer("blue");
    let headers = [("X-Tenant", "blue"), ("Authorization", auth.as_str())];
    let puts: Vec<u16> = (0..4)
        .map(|_| {
            request(gw.proxy, "PUT", "/api/pay/1", &headers, b"{}")
                .unwrap()
                .status
        })
        .collect();
    assert_eq!(
        puts.iter().filter(|s| **s == 503).count(),
        2,
        "PUT is not retried: {puts:?}"
    );
    let gets: Vec<u16> = (0..4)
        .map(|_| get(gw.proxy, "/api/pay/1", &headers).status)
        .collect();
    assert_eq!(gets, vec![200; 4], "GET is");
    assert_eq!(
        failing
            .received()
            .iter()
            .filter(|r| r.method == "PUT")
            .count(),
        2
    );
    assert_eq!(
        healthy
            .received()
            .iter()
            .filter(|r| r.method == "PUT")
            .count(),
        2
    );
}
