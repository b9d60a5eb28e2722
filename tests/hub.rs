//! The notification hub with the official SignalR client (`@microsoft/signalr` in Node): connect,
//! receive the events of one's tenant, groups, reconnects, several instances on one Redis, and
//! the transport's refusals.

mod common;

use std::time::{Duration, Instant};

use common::hub::{NodeClient, hub_url, quote};
use common::redis::RedisServer;
use common::*;
use serde_json::{Value, json};

const TRIGGERS: &str = r#"triggers:
  - name: fx-quote-created
    event: fx.quote.created
    match: { method: POST, path: /api/fx/quote, status: [201] }
    fields: { quoteId: /id, amount: /amount }
"#;

fn hub_config(fx: &MockUpstream, extra: &str) -> String {
    config_for(&[("fx".into(), fx.addr)], "") + TRIGGERS + extra
}

fn admin_token() -> String {
    let mut c = claims("blue");
    c["roles"] = json!(["admin"]);
    sign(&c)
}

#[test]
fn a_client_that_negotiates_receives_its_tenants_quotes() {
    let fx = fx_quote_provider();
    let gw = Payedge::start(&hub_config(&fx, ""), &env());
    let client = NodeClient::connected(gw.admin, &token("blue"), &[]);
    quote(&gw, "blue", "blue-1");
    let events = client.wait_messages(1);
    let event = &events[0];
    assert_eq!(event["type"], "fx.quote.created");
    assert_eq!(event["tenant"], "blue");
    assert_eq!(event["correlationid"], "blue-1");
    assert_eq!(event["data"]["amount"], "1000.10");
    let connected = client
        .lines()
        .into_iter()
        .find(|l| l["event"] == "connected")
        .unwrap();
    assert!(
        connected["connectionId"]
            .as_str()
            .is_some_and(|id| !id.is_empty())
    );
    let metrics = gw.metrics();
    assert!(
        metrics.contains(r#"payedge_hub_connections{tenant="blue"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains("payedge_hub_messages_sent_total 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("payedge_hub_delivery_seconds_count 1"),
        "{metrics}"
    );
}

#[test]
fn a_client_that_skips_negotiation_receives_its_tenants_quotes() {
    let fx = fx_quote_provider();
    let gw = Payedge::start(&hub_config(&fx, ""), &env());
    let client = NodeClient::connected(gw.admin, &token("green"), &["--skip-negotiation"]);
    quote(&gw, "green", "green-1");
    assert_eq!(client.wait_messages(1)[0]["correlationid"], "green-1");
}

#[test]
fn joining_another_tenants_group_is_refused_and_counted() {
    let fx = fx_quote_provider();
    let gw = Payedge::start(&hub_config(&fx, ""), &env());
    let mut client = NodeClient::connected(gw.admin, &token("blue"), &[]);
    let own = client.invoke("join", "JoinTenantGroup", "blue");
    assert_eq!(own["ok"], true, "{own}");
    let other = client.invoke("join", "JoinTenantGroup", "green");
    assert_eq!(other["ok"], false, "{other}");
    assert!(
        other["error"].as_str().unwrap().contains("not allowed"),
        "{other}"
    );
    let unknown = client.invoke("invoke DropTables", "DropTables", "x");
    assert!(
        unknown["error"]
            .as_str()
            .unwrap()
            .contains("Unknown hub method"),
        "{unknown}"
    );
    assert!(gw.metrics().contains("payedge_hub_unauthorized_total 1"));
    // The refusal changed nothing: green's quotes still do not reach this client.
    quote(&gw, "green", "green-1");
    quote(&gw, "blue", "blue-1");
    let messages = client.wait_messages(1);
    std::thread::sleep(Duration::from_millis(300));
    let ids: Vec<Value> = client
        .messages()
        .iter()
        .map(|m| m["correlationid"].clone())
        .collect();
    assert_eq!(ids, vec![json!("blue-1")], "{messages:?}");
    let left = client.invoke("leave", "LeaveTenantGroup", "blue");
    assert_eq!(left["ok"], true);
    quote(&gw, "blue", "blue-2");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        client.messages().len(),
        1,
        "left the group: no more blue events"
    );
}

#[test]
fn an_admin_may_join_any_tenant() {
    let fx = fx_quote_provider();
    let gw = Payedge::start(&hub_config(&fx, ""), &env());
    let mut admin = NodeClient::connected(gw.admin, &admin_token(), &[]);
    assert_eq!(admin.invoke("join", "JoinTenantGroup", "green")["ok"], true);
    quote(&gw, "green", "green-1");
    assert_eq!(admin.wait_messages(1)[0]["tenant"], "green");
}

#[test]
fn tenants_receive_exactly_their_own_events_in_order() {
    let fx = fx_quote_provider();
    let gw = Payedge::start(&hub_config(&fx, ""), &env());
    let blues: Vec<NodeClient> = (0..3)
        .map(|_| NodeClient::connected(gw.admin, &token("blue"), &[]))
        .collect();
    let greens: Vec<NodeClient> = (0..3)
        .map(|_| NodeClient::connected(gw.admin, &token("green"), &["--skip-negotiation"]))
        .collect();
    let mut sent_blue = Vec::new();
    let mut sent_green = Vec::new();
    for i in 0..40 {
        let (tenant, sent) = if i % 3 == 0 {
            ("green", &mut sent_green)
        } else {
            ("blue", &mut sent_blue)
        };
        let id = format!("{tenant}-{i}");
        quote(&gw, tenant, &id);
        sent.push(id);
    }
    for (clients, sent) in [(&blues, &sent_blue), (&greens, &sent_green)] {
        for client in clients {
            let got: Vec<String> = client
                .wait_messages(sent.len())
                .iter()
                .map(|m| m["correlationid"].as_str().unwrap().to_string())
                .collect();
            assert_eq!(&got, sent);
        }
    }
    std::thread::sleep(Duration::from_millis(300));
    for client in blues.iter().chain(&greens) {
        let tenants: std::collections::HashSet<String> = client
            .messages()
            .iter()
            .map(|m| m["tenant"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(tenants.len(), 1, "a client saw another tenant's events");
    }
}

#[test]
fn clients_reconnect_by_themselves_after_payedge_restarts() {
    let fx = fx_quote_provider();
    let yaml = hub_config(&fx, "");
    let mut gw = Payedge::start(&yaml, &env());
    let (proxy, admin) = (gw.proxy, gw.admin);
    let client = NodeClient::connected(admin, &token("blue"), &["--reconnect"]);
    gw.signal("TERM");
    assert!(gw.wait_exit(Duration::from_secs(10)).success());
    client.wait_for("reconnecting", |l| l["event"] == "reconnecting");
    let gw = Payedge::start_on(&yaml, &env(), proxy, admin);
    client.wait_for_within("reconnected", Duration::from_secs(15), |l| {
        l["event"] == "reconnected"
    });
    quote(&gw, "blue", "after-restart");
    let messages = client.wait_messages(1);
    assert_eq!(messages.last().unwrap()["correlationid"], "after-restart");
}

#[test]
fn two_instances_on_one_redis_form_one_hub() {
    let redis = RedisServer::start();
    let fx = fx_quote_provider();
    let bus = format!(
        "notifications:\n  provider: redis\n  redis:\n    url: {}\n",
        redis.url()
    );
    let yaml = hub_config(&fx, &bus);
    let a = Payedge::start(&yaml, &env());
    let b = Payedge::start(&yaml, &env());
    let on_b = NodeClient::connected(b.admin, &token("blue"), &[]);
    let green_on_b = NodeClient::connected(b.admin, &token("green"), &[]);
    // Give B's backplane a moment to subscribe to the tenants that now have members there.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        quote(&a, "blue", "through-a");
        if on_b
            .messages()
            .iter()
            .any(|m| m["correlationid"] == "through-a")
            || Instant::now() > deadline
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let got = on_b.wait_messages(1);
    assert_eq!(got[0]["correlationid"], "through-a");
    assert_eq!(got[0]["tenant"], "blue");
    std::thread::sleep(Duration::from_millis(300));
    assert!(green_on_b.messages().is_empty(), "green saw blue's event");
}

#[test]
fn an_expired_token_closes_the_connection_with_an_error() {
    let fx = fx_quote_provider();
    let gw = Payedge::start(&hub_config(&fx, ""), &env());
    let mut c = claims("blue");
    c["exp"] = json!(now() + 2);
    let client = NodeClient::connected(gw.admin, &sign(&c), &["--skip-negotiation"]);
    let closed = client.wait_for_within("closed", Duration::from_secs(10), |l| {
        l["event"] == "closed"
    });
    assert!(
        closed["error"].as_str().unwrap_or("").contains("expired"),
        "{closed}"
    );
}

#[test]
fn the_transport_refuses_before_upgrading() {
    let fx = fx_quote_provider();
    let gw = Payedge::start(&hub_config(&fx, ""), &env());
    let auth = bearer("blue");
    let upgrade = |path: &str, auth: Option<&str>| {
        let mut headers = vec![
            ("Upgrade", "websocket"),
            ("Connection", "Upgrade"),
            ("Sec-WebSocket-Version", "13"),
            ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ];
        if let Some(a) = auth {
            headers.push(("Authorization", a));
        }
        request(gw.admin, "GET", path, &headers, b"").unwrap()
    };
    let no_token = upgrade("/hubs/notifications", None);
    assert_eq!(
        (no_token.status, error_of(&no_token)["code"].clone()),
        (401, json!("unauthorized"))
    );
    let bad_token = upgrade("/hubs/notifications?access_token=nope", None);
    assert_eq!(bad_token.status, 401);
    let unknown = upgrade("/hubs/notifications?id=nobody", Some(&auth));
    assert_eq!(
        (unknown.status, error_of(&unknown)["code"].clone()),
        (404, json!("connection_unknown"))
    );
    let plain = get(gw.admin, "/hubs/notifications", &[("Authorization", &auth)]);
    assert_eq!(
        (plain.status, error_of(&plain)["code"].clone()),
        (400, json!("websocket_required"))
    );

    let negotiated = request(
        gw.admin,
        "POST",
        "/hubs/notifications/negotiate?negotiateVersion=1",
        &[("Authorization", &auth)],
        b"",
    )
    .unwrap();
    assert_eq!(negotiated.status, 200);
    let token = negotiated.json()["connectionToken"]
        .as_str()
        .unwrap()
        .to_string();
    let path = format!("/hubs/notifications?id={token}");
    let accepted = upgrade(&path, Some(&auth));
    assert_eq!(accepted.status, 101);
    assert_eq!(
        accepted.header("sec-websocket-accept"),
        Some("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
    );
    let again = upgrade(&path, Some(&auth));
    assert_eq!(
        (again.status, error_of(&again)["code"].clone()),
        (409, json!("connection_taken"))
    );
    let stolen_token = request(
        gw.admin,
        "POST",
        "/hubs/notifications/negotiate?negotiateVersion=1",
        &[("Authorization", &auth)],
        b"",
    )
    .unwrap()
    .json()["connectionToken"]
        .as_str()
        .unwrap()
        .to_string();
    let thief = upgrade(
        &format!("/hubs/notifications?id={stolen_token}"),
        Some(&bearer("green")),
    );
    assert_eq!(
        thief.status, 403,
        "another caller cannot use a negotiated connection"
    );
    let via_query = format!("/hubs/notifications?access_token={}", token_for_query());
    assert_eq!(
        upgrade(&via_query, None).status,
        101,
        "browsers send the token in the query"
    );
    let negotiate_unauthorized =
        request(gw.admin, "POST", "/hubs/notifications/negotiate", &[], b"").unwrap();
    assert_eq!(negotiate_unauthorized.status, 401);
    assert!(
        !gw.raw_stdout().contains(&token_for_query()),
        "a token reached the logs"
    );
    let _ = hub_url(gw.admin);
}

fn token_for_query() -> String {
    let mut c = claims("blue");
    c["sub"] = json!("browser-user");
    sign(&c)
}

#[test]
fn payedge_watch_prints_each_event_as_one_line() {
    let fx = fx_quote_provider();
    let gw = Payedge::start(&hub_config(&fx, ""), &env());
    let mut watch = std::process::Command::new(common::process::binary())
        .args([
            "watch",
            "--tenant",
            "blue",
            "--url",
            &hub_url(gw.admin),
            "--token",
            &token("blue"),
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = watch.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    // The watcher connects in the background: quote until its first line shows up.
    let deadline = Instant::now() + Duration::from_secs(10);
    let line = loop {
        quote(&gw, "blue", "watched");
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(300)) {
            break line;
        }
        assert!(Instant::now() < deadline, "payedge watch printed nothing");
    };
    let _ = watch.kill();
    let _ = watch.wait();
    assert!(line.contains(" fx.quote.created tenant=blue "), "{line}");
    assert!(line.contains(r#""amount":"1000.10""#), "{line}");
}

#[test]
fn payedge_watch_resumes_by_itself_and_says_how_many_events_it_recovered() {
    let fx = fx_quote_provider();
    let gw = Payedge::start(&hub_config(&fx, ""), &env());
    let relay = common::relay::Relay::start(gw.admin);
    let mut watch = std::process::Command::new(common::process::binary())
        .args(["watch", "--tenant", "blue", "--url", &hub_url(relay.addr)])
        .args(["--token", &token("blue")])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let lines = |stream: Box<dyn std::io::Read + Send>| {
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
        let sink = std::sync::Arc::clone(&seen);
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stream)
                .lines()
                .map_while(Result::ok)
            {
                sink.lock().unwrap().push(line);
            }
        });
        seen
    };
    let stdout = lines(Box::new(watch.stdout.take().unwrap()));
    let stderr = lines(Box::new(watch.stderr.take().unwrap()));
    let wait = |what: &str, done: &dyn Fn() -> bool| {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !done() {
            assert!(
                Instant::now() < deadline,
                "no {what}: {:?} {:?}",
                stdout.lock().unwrap(),
                stderr.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    wait("connection", &|| {
        stderr
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("waiting for events"))
    });
    quote(&gw, "blue", "seen-1");
    wait("first event", &|| stdout.lock().unwrap().len() == 1);
    // The connection goes dead, three quotes are missed, then it drops.
    relay.freeze();
    for i in 0..3 {
        quote(&gw, "blue", &format!("missed-{i}"));
    }
    std::thread::sleep(Duration::from_millis(200));
    relay.cut();
    wait("the resume", &|| {
        stderr
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("recovered"))
    });
    quote(&gw, "blue", "live-again");
    wait("all five events", &|| stdout.lock().unwrap().len() == 5);
    std::thread::sleep(Duration::from_millis(300));
    let _ = watch.kill();
    let _ = watch.wait();
    let stderr = stderr.lock().unwrap().clone();
    assert!(
        stderr
            .iter()
            .any(|l| l.contains("recovered 3 missed events")),
        "{stderr:?}"
    );
    let printed = stdout.lock().unwrap().clone();
    assert_eq!(printed.len(), 5, "each event once: {printed:?}");
    assert!(
        printed
            .iter()
            .all(|l| l.contains(" fx.quote.created tenant=blue "))
    );
}

#[test]
fn payedge_watch_stops_when_its_token_expires_instead_of_retrying_forever() {
    let fx = fx_quote_provider();
    let gw = Payedge::start(&hub_config(&fx, ""), &env());
    let mut short = claims("blue");
    short["exp"] = json!(now() + 2);
    let mut watch = std::process::Command::new(common::process::binary())
        .args(["watch", "--tenant", "blue", "--url", &hub_url(gw.admin)])
        .args(["--token", &sign(&short)])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(status) = watch.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = watch.kill();
            let _ = watch.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut watch.stderr.take().unwrap(), &mut stderr).unwrap();
    let status = status.unwrap_or_else(|| panic!("still retrying after 15 s: {stderr}"));
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("access token has expired"), "{stderr}");
}

#[test]
fn a_caller_or_a_tenant_past_its_connection_limit_is_refused() {
    let fx = fx_quote_provider();
    let limits = "notifications:\n  limits:\n    max_connections_per_subject: 2\n    max_connections_per_tenant: 3\n";
    let gw = Payedge::start(&hub_config(&fx, limits), &env());
    let (alice, bob) = (blue_token_of("alice"), blue_token_of("bob"));
    let negotiate = |token: &str| negotiate(&gw, token);
    let _a1 = NodeClient::connected(gw.admin, &alice, &[]);
    let _a2 = NodeClient::connected(gw.admin, &alice, &[]);
    // Alice's third: negotiate says no, and so does the WebSocket without negotiating.
    let third = negotiate(&alice);
    assert_eq!(third.status, 429, "{}", third.text());
    assert_eq!(error_of(&third)["code"], "too_many_connections");
    let skipping = NodeClient::start(gw.admin, &alice, &["--skip-negotiation"]);
    skipping.wait_for("a refusal", |l| l["event"] == "failed");
    // The browser WebSocket API hides the status; a raw upgrade shows it.
    let upgrade = request(
        gw.admin,
        "GET",
        "/hubs/notifications",
        &[
            ("Authorization", &format!("Bearer {alice}")),
            ("Connection", "Upgrade"),
            ("Upgrade", "websocket"),
            ("Sec-WebSocket-Version", "13"),
            ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ],
        b"",
    )
    .unwrap();
    assert_eq!(upgrade.status, 429, "{}", upgrade.text());
    assert_eq!(error_of(&upgrade)["code"], "too_many_connections");
    // Bob may still connect, until blue holds three.
    let _b1 = NodeClient::connected(gw.admin, &bob, &[]);
    let fourth = negotiate(&bob);
    assert_eq!(fourth.status, 429);
    assert!(
        error_of(&fourth)["message"]
            .as_str()
            .unwrap()
            .contains("tenant"),
        "{}",
        fourth.text()
    );
    // Green is another tenant.
    assert_eq!(negotiate(&token("green")).status, 200);
    // A closed connection frees its place.
    drop(_a2);
    let deadline = Instant::now() + Duration::from_secs(5);
    while negotiate(&alice).status != 200 {
        assert!(
            Instant::now() < deadline,
            "the closed connection's place was not freed"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let metrics = gw.metrics();
    for reason in ["subject_limit", "tenant_limit"] {
        assert!(
            metrics.lines().any(|l| l.starts_with(&format!(
                "payedge_hub_refusals_total{{reason=\"{reason}\"}}"
            )) && !l.ends_with(" 0")),
            "{reason}: {metrics}"
        );
    }
}

#[test]
fn a_reload_changes_the_hubs_limits_and_origins_for_new_connections_only() {
    let fx = fx_quote_provider();
    let config = |per_subject: usize, origin: &str| {
        hub_config(
            &fx,
            &format!(
                "notifications:\n  cors:\n    allowed_origins: [\"{origin}\"]\n  limits:\n    max_connections_per_subject: {per_subject}\n"
            ),
        )
    };
    let gw = Payedge::start(&config(1, "https://one.example"), &env());
    let negotiate = |origin: &str| {
        request(
            gw.admin,
            "POST",
            "/hubs/notifications/negotiate?negotiateVersion=1",
            &[("Authorization", &bearer("blue")), ("Origin", origin)],
            b"",
        )
        .unwrap()
        .status
    };
    let held = NodeClient::connected(gw.admin, &token("blue"), &[]);
    assert_eq!(negotiate("https://one.example"), 429);
    let resp = gw.reload_with(&config(2, "https://two.example"));
    assert_eq!(resp.json()["result"], "applied", "{}", resp.text());
    assert_eq!(
        negotiate("https://one.example"),
        403,
        "the old origin is gone"
    );
    assert_eq!(negotiate("https://two.example"), 200, "one more place");
    // Lower again: the held connection stays open; new ones are refused.
    let resp = gw.reload_with(&config(1, "https://two.example"));
    assert_eq!(resp.json()["result"], "applied", "{}", resp.text());
    assert_eq!(negotiate("https://two.example"), 429);
    quote(&gw, "blue", "after-reloads");
    assert_eq!(held.wait_messages(1)[0]["correlationid"], "after-reloads");
}

#[test]
fn a_caller_negotiating_too_often_is_told_when_to_retry_others_are_not() {
    let fx = fx_quote_provider();
    let limits = "notifications:\n  limits:\n    negotiations_per_minute: 3\n";
    let gw = Payedge::start(&hub_config(&fx, limits), &env());
    let (alice, bob) = (blue_token_of("alice"), blue_token_of("bob"));
    let negotiate = |token: &str| negotiate(&gw, token);
    for i in 0..3 {
        assert_eq!(negotiate(&alice).status, 200, "negotiation {i}");
    }
    let fourth = negotiate(&alice);
    assert_eq!(fourth.status, 429, "{}", fourth.text());
    assert_eq!(error_of(&fourth)["code"], "too_many_negotiations");
    // Three a minute: the next one is free within 20 s.
    let retry_after: u64 = fourth.header("Retry-After").unwrap().parse().unwrap();
    assert!((1..=20).contains(&retry_after), "{retry_after}");
    assert_eq!(
        negotiate(&bob).status,
        200,
        "another caller is not affected"
    );
    assert_eq!(
        gw.series(r#"payedge_hub_refusals_total{reason="negotiate_rate"}"#),
        Some(1.0)
    );
}

/// A token of tenant blue for the subject `sub`.
fn blue_token_of(sub: &str) -> String {
    let mut c = claims("blue");
    c["sub"] = json!(sub);
    sign(&c)
}

/// `POST /hubs/notifications/negotiate` with `token`.
fn negotiate(gw: &Payedge, token: &str) -> Response {
    request(
        gw.admin,
        "POST",
        "/hubs/notifications/negotiate?negotiateVersion=1",
        &[("Authorization", &format!("Bearer {token}"))],
        b"",
    )
    .unwrap()
}
