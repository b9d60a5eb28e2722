//! Live reload through the real binary: `POST /admin/reload` and SIGHUP apply a new
//! configuration whole while requests keep flowing, or keep the running one and say why; provider
//! state survives; keys that need a restart are refused; secrets and certificates rotate.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::pki::{Pki, s_client, served_subject};
use common::*;
use payedge::tls::Validity;
use serde_json::Value;

/// The harness configuration with providers `(name, upstream, weight)` in pool `main`, and
/// `pool_settings` (four-space indented YAML).
fn weighted(providers: &[(&str, &MockUpstream, u32)], pool_settings: &str) -> String {
    let named: Vec<(String, std::net::SocketAddr)> = providers
        .iter()
        .map(|(n, u, _)| (n.to_string(), u.addr))
        .collect();
    let mut yaml = config_for(&named, pool_settings);
    for (name, upstream, weight) in providers {
        let line = format!("      - name: {name}\n        address: {}\n", upstream.addr);
        assert!(yaml.contains(&line));
        yaml = yaml.replace(&line, &format!("{line}        weight: {weight}\n"));
    }
    yaml
}

fn pay(gw: &Payedge) -> Response {
    get(
        gw.proxy,
        "/api/pay",
        &[("X-Tenant", "blue"), ("Authorization", &bearer("blue"))],
    )
}

fn provider_of(resp: &Response) -> String {
    resp.json()["provider"].as_str().unwrap_or("").to_string()
}

/// Share of `n` requests answered by `name`.
fn share(gw: &Payedge, name: &str, n: usize) -> f64 {
    let hits = (0..n).filter(|_| provider_of(&pay(gw)) == name).count();
    hits as f64 / n as f64
}

fn admin_get(gw: &Payedge, path: &str) -> Value {
    let resp = get(gw.admin, path, &[("Authorization", &admin_bearer())]);
    assert_eq!(resp.status, 200, "{path}: {}", resp.text());
    resp.json()
}

fn provider_state(gw: &Payedge, name: &str) -> Value {
    let all = admin_get(gw, "/admin/providers");
    all["pools"][0]["providers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .cloned()
        .unwrap_or(Value::Null)
}

fn metric(text: &str, line_start: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(line_start))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

#[test]
fn twenty_reloads_under_load_fail_no_request_and_the_split_follows_each() {
    let (a, b) = (MockUpstream::start("a"), MockUpstream::start("b"));
    let configs = [
        weighted(&[("a", &a, 9), ("b", &b, 1)], ""),
        weighted(&[("a", &a, 1), ("b", &b, 9)], ""),
    ];
    let gw = Payedge::start(&configs[0], &env());

    // A load generator: four clients sending requests back to back.
    let stop = Arc::new(AtomicBool::new(false));
    let (sent, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let proxy = gw.proxy;
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let (stop, sent, failed) = (stop.clone(), sent.clone(), failed.clone());
            std::thread::spawn(move || {
                let auth = bearer("blue");
                while !stop.load(Ordering::Relaxed) {
                    let resp = get(
                        proxy,
                        "/api/pay",
                        &[("X-Tenant", "blue"), ("Authorization", &auth)],
                    );
                    sent.fetch_add(1, Ordering::Relaxed);
                    if resp.status != 200 {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();

    for i in 1..=20 {
        let yaml = &configs[i % 2];
        let resp = gw.reload_with(yaml);
        assert_eq!(resp.status, 200, "reload {i}: {}", resp.text());
        assert_eq!(resp.json()["result"], "applied", "reload {i}");
        // The split follows the configuration just applied.
        let (heavy, light) = if i % 2 == 0 { ("a", "b") } else { ("b", "a") };
        let heavy_share = share(&gw, heavy, 40);
        assert!(
            heavy_share >= 0.75,
            "reload {i}: {heavy} took {heavy_share} (vs {light})"
        );
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().unwrap();
    }
    assert!(sent.load(Ordering::Relaxed) > 100, "the load generator ran");
    assert_eq!(failed.load(Ordering::Relaxed), 0, "no request failed");
    let config = admin_get(&gw, "/admin/config");
    assert_eq!(config["generation"], 21);
    assert!(config["last_reload_error"].is_null());
    assert_eq!(
        metric(
            &gw.metrics(),
            "payedge_config_reloads_total{result=\"success\"}"
        ),
        20.0
    );
}

#[test]
fn an_invalid_configuration_is_refused_whole_and_the_running_one_stays() {
    let (a, b) = (MockUpstream::start("a"), MockUpstream::start("b"));
    let good = weighted(&[("a", &a, 1), ("b", &b, 1)], "");
    let gw = Payedge::start(&good, &env());
    let before = admin_get(&gw, "/admin/config");

    // A bad weight and an unknown route pool: both named, nothing applied.
    let bad = weighted(&[("a", &a, 0), ("b", &b, 1)], "").replace("pool: main", "pool: nope");
    let resp = gw.reload_with(&bad);
    assert_eq!(resp.status, 422, "{}", resp.text());
    let body = resp.json();
    assert_eq!(body["result"], "refused");
    let errors: Vec<String> = body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap().to_string())
        .collect();
    let file = gw.config_file().display().to_string();
    assert!(
        errors
            .iter()
            .any(|e| e.starts_with(&file)
                && e.contains(": pools.main.providers[0].weight: must be > 0")),
        "{errors:?}"
    );
    assert!(
        errors.iter().any(|e| e.contains("routes[0].pool")),
        "{errors:?}"
    );
    // Still serving, on the old configuration: both providers, the old digest.
    assert_eq!(pay(&gw).status, 200);
    let after = admin_get(&gw, "/admin/config");
    assert_eq!(after["sha256"], before["sha256"]);
    assert_eq!(after["generation"], 1);
    assert_eq!(
        after["last_reload_error"].as_array().unwrap().len(),
        errors.len()
    );
    assert_eq!(
        metric(
            &gw.metrics(),
            "payedge_config_reloads_total{result=\"failure\"}"
        ),
        1.0
    );
    gw.wait_for_log(|l| {
        l["level"] == "ERROR"
            && l["problem"]
                .as_str()
                .is_some_and(|p| p.contains("providers[0].weight"))
    });

    // Half-written YAML, a file that vanished: refused the same way, never a crash.
    for text in ["pools:\n  main:\n    providers: [", ""] {
        let resp = gw.reload_with(text);
        assert_eq!(resp.status, 422, "{}", resp.text());
    }
    std::fs::remove_file(gw.config_file()).unwrap();
    let resp = gw.reload();
    assert_eq!(resp.status, 422);
    assert!(
        resp.text().contains("cannot read the file"),
        "{}",
        resp.text()
    );
    assert_eq!(pay(&gw).status, 200);

    // Fixed: applied, and the error is cleared.
    let resp = gw.reload_with(&good.replace("weight: 1\n", "weight: 2\n"));
    assert_eq!(resp.json()["result"], "applied", "{}", resp.text());
    assert!(admin_get(&gw, "/admin/config")["last_reload_error"].is_null());
    // The same file again is applied again (the secrets and certificates it names may have
    // changed): same digest, next generation.
    let sha = admin_get(&gw, "/admin/config")["sha256"].clone();
    let again = gw.reload().json();
    assert_eq!(again["result"], "applied");
    assert_eq!(again["sha256"], sha);
}

#[test]
fn keys_that_need_a_restart_are_refused_by_name() {
    let a = MockUpstream::start("a");
    let yaml = weighted(&[("a", &a, 1)], "");
    let gw = Payedge::start(&yaml, &env());
    for (from, to, key) in [
        (
            "  grace_period_seconds: 5\n",
            "  grace_period_seconds: 5\n  threads: 3\n",
            "server.threads",
        ),
        (
            "  grace_period_seconds: 5\n",
            "  grace_period_seconds: 5\n  work_stealing: true\n",
            "server.work_stealing",
        ),
        (
            "  grace_period_seconds: 5\n",
            "  grace_period_seconds: 6\n",
            "server.grace_period_seconds",
        ),
        (
            "  grace_period_seconds: 5\n",
            "  grace_period_seconds: 5\nnotifications:\n  history:\n    max_events: 10\n",
            "notifications.history",
        ),
    ] {
        let resp = gw.reload_with(&yaml.replace(from, to));
        assert_eq!(resp.status, 422, "{key}: {}", resp.text());
        assert!(
            resp.text()
                .contains(&format!("{key}: needs a restart (or upgrade)")),
            "{}",
            resp.text()
        );
    }
    // The command line's --listen still applies: a reload of the same file is no change of
    // server.listen.
    let resp = gw.reload_with(&yaml.replace("weight: 1", "weight: 2"));
    assert_eq!(resp.json()["result"], "applied", "{}", resp.text());
}

#[test]
fn provider_state_survives_and_providers_come_and_go() {
    let a = MockUpstream::with("a", |_| MockResponse::json(503, serde_json::json!({})));
    let (b, c) = (MockUpstream::start("b"), MockUpstream::start("c"));
    let outlier = "    outlier:\n      consecutive_failures: 2\n      base_ejection_ms: 60000\n      max_ejection_ms: 60000\n    retry:\n      methods: []\n";
    let gw = Payedge::start(&weighted(&[("a", &a, 5), ("b", &b, 1)], outlier), &env());
    // Eject a.
    let deadline = Instant::now() + Duration::from_secs(5);
    while provider_state(&gw, "a")["state"] != "ejected" {
        let _ = pay(&gw);
        assert!(Instant::now() < deadline, "a was never ejected");
    }
    let ejections = provider_state(&gw, "a")["ejections"].clone();

    // A reload that changes a's weight and adds c: a stays ejected, c takes traffic.
    let resp = gw.reload_with(&weighted(
        &[("a", &a, 9), ("b", &b, 1), ("c", &c, 1)],
        outlier,
    ));
    assert_eq!(resp.json()["result"], "applied", "{}", resp.text());
    let state = provider_state(&gw, "a");
    assert_eq!(state["state"], "ejected", "{state}");
    assert_eq!(state["ejections"], ejections);
    assert_eq!(state["weight"], 9);
    let before_a = a.count();
    let seen: Vec<String> = (0..20).map(|_| provider_of(&pay(&gw))).collect();
    assert_eq!(
        a.count(),
        before_a,
        "an ejected provider was re-admitted: {seen:?}"
    );
    assert!(seen.iter().any(|p| p == "c"), "{seen:?}");
    assert!(
        gw.metrics()
            .contains("payedge_provider_health{pool=\"main\",provider=\"c\"} 1")
    );

    // Removed: b gets nothing more, and its series are gone.
    let resp = gw.reload_with(&weighted(&[("a", &a, 9), ("c", &c, 1)], outlier));
    assert_eq!(resp.json()["result"], "applied", "{}", resp.text());
    let before_b = b.count();
    for _ in 0..10 {
        assert_eq!(provider_of(&pay(&gw)), "c");
    }
    assert_eq!(b.count(), before_b);
    // Dropped once the requests still on the old configuration are done.
    let metrics = gw.wait_for_metrics(|m| !m.contains("provider=\"b\""));
    assert!(metrics.contains("payedge_provider_health{pool=\"main\",provider=\"a\"} 0"));
}

#[test]
fn sighup_reloads_and_only_operators_may_post_a_reload() {
    let (a, b) = (MockUpstream::start("a"), MockUpstream::start("b"));
    let gw = Payedge::start(&weighted(&[("a", &a, 1)], ""), &env());
    std::fs::write(gw.config_file(), weighted(&[("b", &b, 1)], "")).unwrap();
    gw.signal("HUP");
    let deadline = Instant::now() + Duration::from_secs(5);
    while admin_get(&gw, "/admin/config")["generation"] != 2 {
        assert!(Instant::now() < deadline, "SIGHUP did not reload");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(provider_of(&pay(&gw)), "b");

    for (auth, status) in [
        (None, 401),
        (Some(bearer("blue")), 403),
        (Some("Bearer not-a-token".to_string()), 401),
    ] {
        let mut headers = Vec::new();
        if let Some(auth) = &auth {
            headers.push(("Authorization", auth.as_str()));
        }
        for (method, path) in [("POST", "/admin/reload"), ("GET", "/admin/config")] {
            let resp = request(gw.admin, method, path, &headers, b"").unwrap();
            assert_eq!(resp.status, status, "{method} {path} {auth:?}");
        }
    }
    assert_eq!(admin_get(&gw, "/admin/config")["generation"], 2);
}

#[test]
fn a_jwt_secret_and_a_credential_in_files_rotate_on_reload() {
    let a = MockUpstream::start("a");
    let dir = tempfile::tempdir().unwrap();
    let (secret, key) = (dir.path().join("jwt"), dir.path().join("api-key"));
    let old_secret = "the-old-secret-that-is-long-enough-0123456789";
    let new_secret = "the-new-secret-that-is-long-enough-9876543210";
    std::fs::write(&secret, format!("{old_secret}\n")).unwrap();
    std::fs::write(&key, "key-one").unwrap();
    let yaml = weighted(&[("a", &a, 1)], "")
        .replace(
            "secret_env: TEST_JWT_SECRET",
            &format!("secret_file: {}", secret.display()),
        )
        .replace(
            "        weight: 1\n",
            &format!(
                "        weight: 1\n        headers:\n          X-Api-Key: {{ secret_file: {} }}\n",
                key.display()
            ),
        );
    let gw = Payedge::start(&yaml, &[]);
    let token = |secret: &str| {
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
            &claims("blue"),
            &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap()
    };
    let call = |secret: &str| {
        get(
            gw.proxy,
            "/api/pay",
            &[
                ("X-Tenant", "blue"),
                ("Authorization", &format!("Bearer {}", token(secret))),
            ],
        )
    };
    assert_eq!(call(old_secret).status, 200);
    assert_eq!(a.last().header("x-api-key"), Some("key-one"));
    assert_eq!(call(new_secret).status, 401);

    std::fs::write(&secret, new_secret).unwrap();
    std::fs::write(&key, "key-two\n").unwrap();
    // An operator token signed with the secret still in force authorises the reload.
    let mut admin = claims("blue");
    admin["roles"] = serde_json::json!(["admin"]);
    let admin = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &admin,
        &jsonwebtoken::EncodingKey::from_secret(old_secret.as_bytes()),
    )
    .unwrap();
    let resp = request(
        gw.admin,
        "POST",
        "/admin/reload",
        &[("Authorization", &format!("Bearer {admin}"))],
        b"",
    )
    .unwrap();
    assert_eq!(resp.json()["result"], "applied", "{}", resp.text());
    assert_eq!(call(new_secret).status, 200);
    assert_eq!(a.last().header("x-api-key"), Some("key-two"));
    assert_eq!(call(old_secret).status, 401, "the old secret is refused");
    // Secrets are never logged.
    let out = gw.raw_stdout();
    for s in [old_secret, new_secret, "key-one", "key-two"] {
        assert!(!out.contains(s), "{s} in the log");
    }
}

#[test]
fn certificates_rotate_on_reload() {
    let a = MockUpstream::start("a");
    let pki = Pki::new("rotation");
    let first = pki.server("first", &["blue.smartpay.com"], Validity::days(30));
    let renewed = pki.server(
        "renewed",
        &["blue.smartpay.com", "renewed.smartpay.com"],
        Validity::days(60),
    );
    let tls = free_addr();
    let with_cert = |pair: &common::pki::Pair| {
        weighted(&[("a", &a, 1)], "").replace(
            "server:\n  grace_period_seconds: 5\n",
            &format!(
                "server:\n  grace_period_seconds: 5\n  tls:\n    listen: {tls}\n    certificates:\n      - cert_file: {}\n        key_file: {}\n        hosts: [blue.smartpay.com]\n",
                pair.cert.display(),
                pair.key.display()
            ),
        )
    };
    let gw = Payedge::start(&with_cert(&first), &env());
    let served = || served_subject(&s_client(tls, Some("blue.smartpay.com"), &[]));
    assert_eq!(served(), "CN = blue.smartpay.com");
    let serial = |pair: &common::pki::Pair| {
        let out = std::process::Command::new("openssl")
            .args(["x509", "-noout", "-serial", "-in"])
            .arg(&pair.cert)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let served_serial = || {
        let out = s_client(tls, Some("blue.smartpay.com"), &["-showcerts"]);
        let pem = String::from_utf8_lossy(&out.stdout).to_string();
        let mut child = std::process::Command::new("openssl")
            .args(["x509", "-noout", "-serial"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(pem.as_bytes())
            .unwrap();
        String::from_utf8_lossy(&child.wait_with_output().unwrap().stdout)
            .trim()
            .to_string()
    };
    assert_eq!(served_serial(), serial(&first));
    let resp = gw.reload_with(&with_cert(&renewed));
    assert_eq!(resp.json()["result"], "applied", "{}", resp.text());
    assert_eq!(served_serial(), serial(&renewed));
    // The expiry gauge follows.
    let expiry = metric(
        &gw.metrics(),
        "payedge_tls_certificate_expiry_timestamp_seconds{certificate=\"blue.smartpay.com\"}",
    );
    assert!(expiry > now() as f64 + 59.0 * 86_400.0, "{expiry}");
}
