//! SignalR stateful reconnect with the official client's `withStatefulReconnect()`: when a proxy
//! between client and payedge stops passing bytes and then cuts the connection, the client opens
//! a new WebSocket to the same connection and receives every message it had not acknowledged —
//! the ones lost in the dead socket included — once, in order, without the application seeing a
//! reconnect. A client without it loses them.

mod common;

use std::time::Duration;

use common::hub::{NodeClient, correlation_ids, hub_url, quote};
use common::relay::Relay;
use common::*;
use serde_json::Value;

const TRIGGERS: &str = r#"triggers:
  - name: fx-quote-created
    event: fx.quote.created
    match: { method: POST, path: /api/fx/quote, status: [201] }
    fields: { quoteId: /id, amount: /amount }
"#;

fn events(client: &NodeClient, kind: &str) -> Vec<Value> {
    client
        .lines()
        .into_iter()
        .filter(|l| l["event"] == kind)
        .collect()
}

#[test]
fn a_stateful_client_gets_what_was_lost_in_a_cut_connection_once_and_in_order() {
    let fx = fx_quote_provider();
    let gw = Payedge::start(
        &(config_for(&[("fx".into(), fx.addr)], "") + TRIGGERS),
        &env(),
    );
    let relay = Relay::start(gw.admin);
    let url = hub_url(relay.addr);
    let mut stateful = NodeClient::start_url(&url, &token("blue"), &["--stateful"], &[]);
    let plain = NodeClient::start_url(&url, &token("blue"), &[], &[]);
    for client in [&stateful, &plain] {
        client.wait_for("connected", |l| l["event"] == "connected");
    }
    for i in 0..5 {
        quote(&gw, "blue", &format!("before-{i}"));
    }
    stateful.wait_messages(5);
    plain.wait_messages(5);
    // The client acknowledges about a second after receiving: let the first five be acked.
    std::thread::sleep(Duration::from_millis(1500));

    // The proxy in between goes silent: what payedge writes now goes nowhere...
    relay.freeze();
    for i in 0..20 {
        quote(&gw, "blue", &format!("lost-{i}"));
    }
    // ...and a join the client invokes meanwhile never arrives either.
    stateful.command("join blue");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        stateful.messages().len(),
        5,
        "nothing passes the frozen relay"
    );
    // Then the proxy drops the connection: the stateful client comes back on a new socket.
    relay.cut();
    let invoked = stateful.wait_for("the join answered after the reconnect", |l| {
        l["event"] == "invoked"
    });
    assert!(invoked.get("error").is_none(), "{invoked}");
    stateful.wait_messages(25);
    quote(&gw, "blue", "after");
    stateful.wait_messages(26);
    std::thread::sleep(Duration::from_millis(300));

    let expected: Vec<String> = (0..5)
        .map(|i| format!("before-{i}"))
        .chain((0..20).map(|i| format!("lost-{i}")))
        .chain(["after".to_string()])
        .collect();
    assert_eq!(
        correlation_ids(&stateful.messages()),
        expected,
        "once each, in order"
    );
    assert_eq!(events(&stateful, "invoked").len(), 1, "the join ran once");
    for quiet in ["closed", "reconnecting"] {
        assert!(
            events(&stateful, quiet).is_empty(),
            "the application saw no {quiet}: {:?}",
            stateful.lines()
        );
    }
    // Without stateful reconnect the same cut closes the connection and the 20 are gone.
    plain.wait_for("closed", |l| l["event"] == "closed");
    assert_eq!(
        correlation_ids(&plain.messages()),
        (0..5).map(|i| format!("before-{i}")).collect::<Vec<_>>()
    );
    let metrics = gw.metrics();
    assert!(
        metrics.contains(r#"payedge_hub_stateful_reconnects_total{result="resumed"} 1"#),
        "{metrics}"
    );
}

#[test]
fn a_stateful_connection_not_resumed_within_its_window_is_gone_and_its_place_freed() {
    let fx = fx_quote_provider();
    let config = config_for(&[("fx".into(), fx.addr)], "")
        + TRIGGERS
        + "notifications:\n  stateful_reconnect:\n    window_seconds: 1\n  limits:\n    max_connections_per_subject: 1\n";
    let gw = Payedge::start(&config, &env());
    let stateful = NodeClient::connected(gw.admin, &token("blue"), &["--stateful"]);
    let negotiate = || {
        request(
            gw.admin,
            "POST",
            "/hubs/notifications/negotiate?negotiateVersion=1",
            &[("Authorization", &bearer("blue"))],
            b"",
        )
        .unwrap()
        .status
    };
    assert_eq!(negotiate(), 429, "the one place is taken");
    // The client dies (SIGKILL): its socket ends without a close, and it never comes back.
    drop(stateful);
    // While the window lasts the connection keeps its place; after it, the place is free.
    assert_eq!(negotiate(), 429, "kept for the client's return");
    let started = std::time::Instant::now();
    while negotiate() != 200 {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the place was never freed"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let metrics = gw.metrics();
    assert!(
        metrics.contains(r#"payedge_hub_stateful_reconnects_total{result="expired"} 1"#),
        "{metrics}"
    );
}
