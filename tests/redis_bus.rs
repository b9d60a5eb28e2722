//! The Redis event bus against a real redis-server the test starts: what is published where,
//! and what happens when Redis goes away while quotes flow.

mod common;

use std::time::{Duration, Instant};

use common::redis::{RedisServer, Subscriber};
use common::*;
use serde_json::Value;

fn bus_config(fx: &MockUpstream, redis: &RedisServer, queue_capacity: usize) -> String {
    config_for(&[("fx".into(), fx.addr)], "")
        + &format!(
            r#"notifications:
  provider: redis
  instance: test-edge
  queue_capacity: {queue_capacity}
  redis:
    url: {}
triggers:
  - name: fx-quote-created
    event: fx.quote.created
    match: {{ method: POST, path: /api/fx/quote, status: [200, 201] }}
    fields: {{ quoteId: /id, fromCurrency: /from, toCurrency: /to, amount: /amount, rate: /rate }}
    required: [quoteId, amount]
"#,
            redis.url()
        )
}

fn quote(gw: &Payedge, tenant: &str, id: &str) -> Response {
    request(
        gw.proxy,
        "POST",
        "/api/fx/quote",
        &[
            ("X-Tenant", tenant),
            ("Authorization", &bearer(tenant)),
            ("X-Request-Id", id),
        ],
        br#"{"from":"USD","to":"GBP","amount":"1000.10"}"#,
    )
    .unwrap()
}

fn metric(gw: &Payedge, series: &str) -> f64 {
    gw.metrics()
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

#[test]
fn a_quote_publishes_one_cloudevent_on_its_tenants_channel_only() {
    let redis = RedisServer::start();
    let fx = fx_quote_provider();
    let gw = Payedge::start(&bus_config(&fx, &redis, 100), &env());
    let all = Subscriber::new(&redis, &["payedge:events:*"]);

    let resp = quote(&gw, "blue", "req-blue-1");
    assert_eq!(resp.status, 201);
    let (channel, payload) = all
        .next(Duration::from_secs(5))
        .expect("no event published");
    assert_eq!(channel, "payedge:events:blue");
    let event: Value = serde_json::from_str(&payload).unwrap();
    assert_eq!(event["specversion"], "1.0");
    assert_eq!(event["type"], "fx.quote.created");
    assert_eq!(event["source"], "payedge/test-edge");
    assert_eq!(event["tenant"], "blue");
    assert_eq!(event["correlationid"], "req-blue-1");
    assert_eq!(event["datacontenttype"], "application/json");
    assert_eq!(event["id"].as_str().map(str::len), Some(36));
    assert!(event["time"].as_str().is_some_and(|t| t.ends_with('Z')));
    assert_eq!(event["data"]["quoteId"], "fxq_req-blue-1");
    assert_eq!(
        event["data"]["amount"], "1000.10",
        "the exact decimal, not 1000.1"
    );
    assert_eq!(event["data"]["rate"], "0.7892");
    assert_eq!(event["data"]["fromCurrency"], "USD");
    assert!(
        all.drain(Duration::from_millis(500)).is_empty(),
        "more than one event"
    );
    assert_eq!(
        metric(
            &gw,
            r#"payedge_events_published_total{type="fx.quote.created"}"#
        ),
        1.0
    );
    assert_eq!(
        metric(&gw, r#"payedge_fx_quotes_total{tenant="blue"}"#),
        1.0
    );
}

#[test]
fn operator_alerts_go_to_everyone() {
    let redis = RedisServer::start();
    let fx = fx_quote_provider();
    let gw = Payedge::start(&bus_config(&fx, &redis, 100), &env());
    let all = Subscriber::new(&redis, &["payedge:events:_all"]);
    let body =
        br#"{"code":"maintenance","message":"cards down at 02:00","details":{"pool":"cards"}}"#;
    let denied = request(
        gw.admin,
        "POST",
        "/admin/alerts",
        &[("Authorization", &bearer("blue"))],
        body,
    )
    .unwrap();
    assert_eq!(denied.status, 403);
    let resp = request(
        gw.admin,
        "POST",
        "/admin/alerts",
        &[("Authorization", &admin_bearer())],
        body,
    )
    .unwrap();
    assert_eq!(resp.status, 202, "{}", resp.text());
    let (_, payload) = all.next(Duration::from_secs(5)).expect("no alert");
    let event: Value = serde_json::from_str(&payload).unwrap();
    assert_eq!(event["type"], "system.alert");
    assert_eq!(event["id"], resp.json()["id"]);
    assert!(event.get("tenant").is_none());
    assert_eq!(event["data"]["code"], "maintenance");
    assert_eq!(event["data"]["pool"], "cards");
    let bad = request(
        gw.admin,
        "POST",
        "/admin/alerts",
        &[("Authorization", &admin_bearer())],
        b"{}",
    )
    .unwrap();
    assert_eq!(bad.status, 400);
}

/// A loopback port nothing listens on: connections to it are refused.
fn refused_addr() -> std::net::SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

#[test]
fn a_provider_serving_one_tenant_alerts_only_that_tenant() {
    let redis = RedisServer::start();
    let (only_blue, shared) = (refused_addr(), refused_addr());
    let checks = "    health_check:\n      path: /health\n      interval_ms: 100\n      timeout_ms: 100\n      jitter_ms: 0\n      unhealthy_threshold: 1\n";
    let yaml = config_for(
        &[("fx-blue".into(), only_blue), ("fx-shared".into(), shared)],
        checks,
    )
    .replace(
        &format!("address: {only_blue}\n"),
        &format!("address: {only_blue}\n        tenants: [blue]\n"),
    ) + &format!(
        "notifications:\n  provider: redis\n  redis:\n    url: {}\n",
        redis.url()
    );
    let all = Subscriber::new(&redis, &["payedge:events:*"]);
    let _gw = Payedge::start(&yaml, &env());

    let mut alerts: Vec<(String, String)> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while alerts.len() < 2 && Instant::now() < deadline {
        if let Some((channel, payload)) = all.next(Duration::from_millis(200)) {
            let event: Value = serde_json::from_str(&payload).unwrap();
            if event["data"]["code"] == "provider_unhealthy" {
                let provider = event["data"]["provider"].as_str().unwrap_or("").to_string();
                assert_eq!(
                    event["tenant"].as_str(),
                    channel
                        .strip_prefix("payedge:events:")
                        .filter(|t| *t != "_all"),
                    "the envelope names the channel's tenant"
                );
                alerts.push((provider, channel));
            }
        }
    }
    alerts.sort();
    assert_eq!(
        alerts,
        vec![
            ("fx-blue".to_string(), "payedge:events:blue".to_string()),
            ("fx-shared".to_string(), "payedge:events:_all".to_string()),
        ],
        "the restricted provider's alert reaches its tenant only; the shared one's, everyone"
    );
    let later = all.drain(Duration::from_millis(300));
    assert!(
        later.iter().all(|(c, _)| c != "payedge:events:green"),
        "green heard of blue's provider: {later:?}"
    );
}

#[test]
fn redis_going_away_costs_no_request_and_no_queued_event() {
    let mut redis = RedisServer::start();
    let fx = fx_quote_provider();
    let gw = Payedge::start(&bus_config(&fx, &redis, 1_000), &env());
    let all = Subscriber::new(&redis, &["payedge:events:blue"]);
    assert_eq!(quote(&gw, "blue", "before").status, 201);
    assert!(all.next(Duration::from_secs(5)).is_some());

    redis.kill();
    let mut sent = Vec::new();
    for i in 0..20 {
        let id = format!("during-{i}");
        assert_eq!(
            quote(&gw, "blue", &id).status,
            201,
            "a client saw Redis's outage"
        );
        sent.push(id);
    }
    gw.wait_for_log(|l| l["event"] == "redis_lost");
    redis.restart();
    let restarted = Instant::now();
    let all = Subscriber::new(&redis, &["payedge:events:*"]);
    let mut seen = Vec::new();
    while seen.len() < sent.len() && restarted.elapsed() < Duration::from_secs(5) {
        if let Some((channel, payload)) = all.next(Duration::from_millis(100)) {
            let event: Value = serde_json::from_str(&payload).unwrap();
            if channel == "payedge:events:blue" {
                seen.push(event["correlationid"].as_str().unwrap().to_string());
            }
        }
    }
    assert_eq!(
        seen, sent,
        "every event queued during the outage arrives, in order, within 5 s"
    );
    gw.wait_for_log(|l| l["event"] == "redis_regained");
    assert_eq!(quote(&gw, "blue", "after").status, 201);
    let (_, payload) = all
        .next(Duration::from_secs(5))
        .expect("publishing did not resume");
    assert!(
        payload.contains(r#""correlationid":"after""#) || payload.contains("redis_"),
        "{payload}"
    );
    assert_eq!(
        metric(&gw, r#"payedge_events_dropped_total{reason="queue_full"}"#),
        0.0
    );
}

#[test]
fn beyond_the_queue_events_are_dropped_and_counted_exactly() {
    let mut redis = RedisServer::start();
    let fx = fx_quote_provider();
    let capacity = 5;
    let gw = Payedge::start(&bus_config(&fx, &redis, capacity), &env());
    // The publisher connects lazily; one event while Redis is up makes it hold a connection.
    assert_eq!(quote(&gw, "blue", "warm-up").status, 201);
    let warm = Instant::now();
    while metric(
        &gw,
        r#"payedge_events_published_total{type="fx.quote.created"}"#,
    ) < 1.0
    {
        assert!(warm.elapsed() < Duration::from_secs(5));
        std::thread::sleep(Duration::from_millis(20));
    }
    redis.kill();
    let sent = 30;
    for i in 0..sent {
        assert_eq!(quote(&gw, "blue", &format!("q-{i}")).status, 201);
    }
    // Let the pipeline finish with the captured bodies before Redis returns.
    std::thread::sleep(Duration::from_millis(500));
    redis.restart();
    let all = Subscriber::new(&redis, &["payedge:events:blue"]);
    let arrived = all.drain(Duration::from_secs(3)).len();
    let dropped = metric(&gw, r#"payedge_events_dropped_total{reason="queue_full"}"#) as usize;
    assert!(
        dropped > 0,
        "nothing was dropped with a queue of {capacity}"
    );
    assert_eq!(
        arrived + dropped,
        sent,
        "arrived {arrived}, dropped {dropped}"
    );
}

fn with_grace(yaml: String, seconds: u64) -> String {
    yaml.replace(
        "grace_period_seconds: 5",
        &format!("grace_period_seconds: {seconds}"),
    )
}

#[test]
fn a_stop_publishes_the_queued_events_when_redis_returns_within_the_grace_period() {
    let mut redis = RedisServer::start();
    let fx = fx_quote_provider();
    let mut gw = Payedge::start(&with_grace(bus_config(&fx, &redis, 100), 8), &env());
    redis.kill();
    let sent: Vec<String> = (0..3).map(|i| format!("queued-{i}")).collect();
    for id in &sent {
        assert_eq!(quote(&gw, "blue", id).status, 201);
    }
    gw.wait_for_log(|l| l["event"] == "redis_lost");
    gw.signal("TERM");
    std::thread::sleep(Duration::from_millis(500));
    redis.restart();
    let all = Subscriber::new(&redis, &["payedge:events:blue"]);
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(6);
    while seen.len() < sent.len() && Instant::now() < deadline {
        if let Some((_, payload)) = all.next(Duration::from_millis(100)) {
            let event: Value = serde_json::from_str(&payload).unwrap();
            seen.push(event["correlationid"].as_str().unwrap_or("").to_string());
        }
    }
    assert_eq!(seen, sent, "the events queued at the stop were published");
    let status = gw.wait_exit(Duration::from_secs(10));
    assert!(status.success(), "{status:?}");
    assert!(
        !gw.raw_stdout().contains("event lost"),
        "{}",
        gw.raw_stdout()
    );
}

#[test]
fn events_redis_never_takes_are_logged_lost_by_id_when_the_grace_period_ends() {
    let mut redis = RedisServer::start();
    let fx = fx_quote_provider();
    let mut gw = Payedge::start(&with_grace(bus_config(&fx, &redis, 100), 2), &env());
    redis.kill();
    let sent: Vec<String> = (0..3).map(|i| format!("doomed-{i}")).collect();
    for id in &sent {
        assert_eq!(quote(&gw, "blue", id).status, 201);
    }
    gw.wait_for_log(|l| l["event"] == "redis_lost");
    let signalled = Instant::now();
    gw.signal("TERM");
    let status = gw.wait_exit(Duration::from_secs(10));
    assert!(status.success(), "{status:?}");
    let took = signalled.elapsed();
    assert!(
        took >= Duration::from_millis(1500) && took < Duration::from_secs(6),
        "it waited for the grace period for Redis: {took:?}"
    );
    let lost: Vec<String> = gw
        .logs()
        .into_iter()
        .filter(|l| {
            l["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("event lost"))
        })
        .map(|l| {
            assert!(
                l["event_id"].as_str().is_some_and(|id| !id.is_empty()),
                "{l}"
            );
            assert_eq!(l["event_type"], "fx.quote.created");
            l["correlation_id"].as_str().unwrap_or("").to_string()
        })
        .collect();
    assert_eq!(
        lost,
        sent,
        "each lost event is named once:\n{}",
        gw.raw_stdout()
    );
}
