//! The alert rules in conf/prometheus: valid for promtool, each alert's unit tests pass
//! (alerts_test.yml fires and does not fire every alert), and every metric the rules name is one
//! a running payedge (the demo, after some traffic) exports, so no alert silently watches a
//! name that drifted.

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
    assert!(checked.contains("SUCCESS: 9 rules found"), "{checked}");
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
fn every_metric_the_rules_watch_is_exported_by_a_running_payedge() {
    let rules = std::fs::read_to_string(conf("alerts.yml")).unwrap();
    let exprs: String = rules
        .lines()
        .skip_while(|l| !l.contains("groups:"))
        .filter(|l| !l.trim_start().starts_with("runbook:") && !l.trim_start().starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n");
    let watched = metric_names(&exprs);
    assert!(watched.len() >= 9, "{watched:?}");

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
    // Traffic: a quote (upstream requests) and a cross-tenant attempt.
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
    let metrics = gw.wait_for_metrics(|m| m.contains("# TYPE payedge_upstream_requests_total "));
    let missing: Vec<&String> = watched
        .iter()
        .filter(|name| !metrics.contains(&format!("# TYPE {name} ")))
        .collect();
    assert!(missing.is_empty(), "not exported: {missing:?}\n{metrics}");
}
