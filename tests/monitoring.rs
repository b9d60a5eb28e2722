//! What operators are given to watch payedge with: the alert rules in conf/prometheus (valid for
//! promtool, each alert's unit tests in alerts_test.yml firing and staying quiet) and the Grafana
//! dashboard in conf/grafana (every query valid PromQL, the instance/tenant/pool variables), and
//! every metric either names is one a running payedge (the demo, after traffic) exports, so no
//! alert watches and no panel shows a name that drifted.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::process::{Payedge, binary, free_addr};
use common::*;

fn conf(file: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("conf/prometheus")
        .join(file)
}

fn dashboard() -> serde_json::Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("conf/grafana/payedge.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).expect("the dashboard is JSON")
}

/// Every query of the dashboard's panels, with the panel's title.
fn dashboard_queries(dashboard: &serde_json::Value) -> Vec<(String, String)> {
    dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|panel| {
            let title = panel["title"].as_str().unwrap_or_default().to_string();
            panel["targets"]
                .as_array()
                .into_iter()
                .flatten()
                .map(move |t| (title.clone(), t["expr"].as_str().unwrap().to_string()))
        })
        .collect()
}

fn promtool(args: &[&str]) -> String {
    let out = Command::new("promtool")
        .args(args)
        .output()
        .expect("promtool is needed for the alert rule tests");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {args:?}:\n{text}");
    text
}

#[test]
fn the_rules_are_valid_and_their_unit_tests_pass() {
    let rules = conf("alerts.yml");
    let checked = promtool(&["check", "rules", rules.to_str().unwrap()]);
    assert!(checked.contains("SUCCESS: 11 rules found"), "{checked}");
    let tested = promtool(&["test", "rules", conf("alerts_test.yml").to_str().unwrap()]);
    assert!(tested.contains("SUCCESS"), "{tested}");
    promtool(&["check", "config", conf("prometheus.yml").to_str().unwrap()]);
}

/// The `payedge_…` metric names an expression mentions.
fn metric_names(text: &str) -> Vec<String> {
    let mut names: Vec<String> = text
        .match_indices("payedge_")
        .map(|(at, _)| {
            text[at..]
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
                .collect()
        })
        .collect();
    names.sort();
    names.dedup();
    names
}

#[test]
fn the_dashboard_queries_are_valid_promql_over_instance_tenant_and_pool() {
    let dashboard = dashboard();
    let variables: Vec<&str> = dashboard["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    for name in ["datasource", "instance", "tenant", "pool"] {
        assert!(
            variables.contains(&name),
            "no ${name} variable: {variables:?}"
        );
    }
    let queries = dashboard_queries(&dashboard);
    assert!(queries.len() >= 30, "{}", queries.len());
    // Panels are laid out on Grafana's 24-column grid without overlapping.
    let mut cells = std::collections::HashSet::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        let g = &panel["gridPos"];
        let (x, y, w, h) = (
            g["x"].as_u64().unwrap(),
            g["y"].as_u64().unwrap(),
            g["w"].as_u64().unwrap(),
            g["h"].as_u64().unwrap(),
        );
        assert!(x + w <= 24, "{} is wider than the grid", panel["title"]);
        for cell in (x..x + w).flat_map(|cx| (y..y + h).map(move |cy| (cx, cy))) {
            assert!(
                cells.insert(cell),
                "{} overlaps another panel",
                panel["title"]
            );
        }
    }
    // Each query scoped to the chosen instances; with Grafana's variables replaced the way
    // Grafana does, promtool parses every one (as a recording rule).
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, (title, expr)) in queries.iter().enumerate() {
        assert!(expr.contains("instance=~\"$instance\""), "{title}: {expr}");
        let expr = expr
            .replace("$__rate_interval", "1m")
            .replace("$__range", "1h")
            .replace("$instance", ".*")
            .replace("$tenant", ".*")
            .replace("$pool", ".*");
        assert!(
            !expr.contains('$'),
            "{title}: an unknown variable in {expr}"
        );
        rules.push_str(&format!(
            "      - record: dashboard:query_{i}\n        expr: {}\n",
            serde_json::to_string(&expr).unwrap()
        ));
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("dashboard_queries.yml");
    std::fs::write(&file, rules).unwrap();
    let checked = promtool(&["check", "rules", file.to_str().unwrap()]);
    assert!(
        checked.contains(&format!("SUCCESS: {} rules found", queries.len())),
        "{checked}"
    );
}

/// The exported family a sample name belongs to: histograms export `_bucket`, `_sum` and
/// `_count` under one `# TYPE`.
fn family<'a>(name: &'a str, metrics: &str) -> &'a str {
    ["_bucket", "_sum", "_count"]
        .iter()
        .find_map(|suffix| {
            let base = name.strip_suffix(suffix)?;
            metrics
                .contains(&format!("# TYPE {base} histogram"))
                .then_some(base)
        })
        .unwrap_or(name)
}

#[test]
fn every_metric_the_rules_and_the_dashboard_name_is_exported_by_a_running_payedge() {
    let rules = std::fs::read_to_string(conf("alerts.yml")).unwrap();
    let exprs: String = rules
        .lines()
        .skip_while(|l| !l.contains("groups:"))
        .filter(|l| !l.trim_start().starts_with("runbook:") && !l.trim_start().starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n");
    let mut watched = metric_names(&exprs);
    assert!(watched.len() >= 11, "{watched:?}");
    let shown: Vec<String> = dashboard_queries(&dashboard())
        .iter()
        .flat_map(|(_, expr)| metric_names(expr))
        .collect();
    assert!(shown.len() >= 30, "{shown:?}");
    watched.extend(shown);
    watched.sort();
    watched.dedup();

    let (proxy, admin, tls) = (free_addr(), free_addr(), free_addr());
    let mut command = Command::new(binary());
    command.args([
        "demo",
        "--listen",
        &proxy.to_string(),
        "--admin-listen",
        &admin.to_string(),
        "--tls-listen",
        &tls.to_string(),
    ]);
    let demo_dir = tempfile::tempdir().unwrap();
    command.env("PAYEDGE_DEMO_DIR", demo_dir.path());
    let gw = Payedge::spawn(command, &[], proxy, admin, tempfile::tempdir().unwrap());
    // Traffic: a quote (upstream requests), a cross-tenant attempt, exchange rates (the cache)
    // and a payment with an idempotency key.
    let token = Command::new(binary())
        .args(["token", "--tenant", "blue"])
        .output()
        .unwrap();
    let auth = format!("Bearer {}", String::from_utf8_lossy(&token.stdout).trim());
    let quote = request(
        proxy,
        "POST",
        "/api/fx/quote",
        &[
            ("X-Tenant", "blue"),
            ("Authorization", &auth),
            ("Content-Type", "application/json"),
        ],
        br#"{"from":"USD","to":"GBP","amount":"1000.10"}"#,
    )
    .unwrap();
    assert_eq!(quote.status, 201, "{}", quote.text());
    let crossed = request(
        proxy,
        "GET",
        "/api/fx/quote",
        &[("X-Tenant", "green"), ("Authorization", &auth)],
        b"",
    )
    .unwrap();
    assert_eq!(crossed.status, 403);
    // Exchange rates: the demo's route cache.
    let rates = request(
        proxy,
        "GET",
        "/api/fx/rates",
        &[("X-Tenant", "blue"), ("Authorization", &auth)],
        b"",
    )
    .unwrap();
    assert_eq!(rates.status, 200, "{}", rates.text());
    let green = Command::new(binary())
        .args(["token", "--tenant", "green"])
        .output()
        .unwrap();
    let payment = request(
        proxy,
        "POST",
        "/api/payments",
        &[
            ("X-Tenant", "green"),
            (
                "Authorization",
                &format!("Bearer {}", String::from_utf8_lossy(&green.stdout).trim()),
            ),
            ("Content-Type", "application/json"),
            ("Idempotency-Key", "monitoring-1"),
        ],
        br#"{"amount":"25.00","currency":"EUR"}"#,
    )
    .unwrap();
    assert!(
        payment.status < 300,
        "{} {}",
        payment.status,
        payment.text()
    );
    let metrics = gw.wait_for_metrics(|m| {
        // Both series of the payment: they are counted one after the other, so a scrape can
        // fall between them.
        m.contains("# TYPE payedge_payments_total ")
            && m.contains("# TYPE payedge_payment_volume_total ")
            && m.contains(r#"payedge_http_errors_total{code="tenant_mismatch"} 1"#)
    });
    let missing: Vec<&String> = watched
        .iter()
        .filter(|name| !metrics.contains(&format!("# TYPE {} ", family(name, &metrics))))
        .collect();
    assert!(missing.is_empty(), "not exported: {missing:?}\n{metrics}");
}
