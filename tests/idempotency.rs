//! Idempotency keys at the edge, end to end: two payedge processes sharing a real Redis (started
//! on a free port), providers as processes that count what they receive. A retried payment is
//! answered from the first one's stored response on either instance and reaches a provider once;
//! concurrent duplicates reach it once; a reused key, another tenant's key, an expired key; a
//! provider that takes the payment and never answers leaves an outcome a retry is told is unknown;
//! a store that is down refuses a required route without reaching any provider; the same over a
//! real three-node Redis Cluster, keys spread over its shards.

mod common;

use std::time::{Duration, Instant};

use common::process::{Payedge, free_addr};
use common::provider::ProviderProcess;
use common::redis::RedisServer;
use common::redis_cluster::RedisCluster;
use common::*;

/// Tenants blue and green; `/api/payments` requires keys, `/api/refunds` takes them optionally
/// and goes ahead unprotected when the store is down; `/api/quotes` ignores them.
fn config(providers: &[&ProviderProcess], store: &str, pool: &str) -> String {
    config_with_events(providers, store, pool, "")
}

/// With `events`: notifications on the Redis `events` names, and a payment trigger.
fn config_with_events(
    providers: &[&ProviderProcess],
    store: &str,
    pool: &str,
    events: &str,
) -> String {
    let providers: String = providers
        .iter()
        .map(|p| format!("      - name: {}\n        address: {}\n", p.name, p.addr))
        .collect();
    format!(
        r#"
server:
  grace_period_seconds: 5
tenancy:
  strategy: [header]
  tenants: [blue, green]
auth:
  jwt:
    algorithms: [HS256]
    secret_env: TEST_JWT_SECRET
    issuer: {ISSUER}
    audience: {AUDIENCE}
  required_path_prefixes: [/api]
idempotency:
{store}
{events}
routes:
  - path_prefix: /api/payments
    pool: main
    idempotency: {{ required: true }}
  - path_prefix: /api/refunds
    pool: main
    idempotency: {{ required: false }}
  - path_prefix: /api/quotes
    pool: main
pools:
  main:
{pool}    providers:
{providers}"#
    )
}

fn redis_store(redis: &RedisServer) -> String {
    redis_store_at(&redis.url())
}

fn redis_store_at(url: &str) -> String {
    format!("  store: redis\n  redis:\n    url: {url}\n")
}

const MEMORY_STORE: &str = "  store: in_memory\n";

fn pay(gw: &Payedge, tenant: &str, key: Option<&str>, body: &str) -> Response {
    pay_at(gw, "/api/payments", tenant, key, body)
}

fn pay_at(gw: &Payedge, path: &str, tenant: &str, key: Option<&str>, body: &str) -> Response {
    let auth = bearer(tenant);
    let mut headers = vec![
        ("X-Tenant", tenant),
        ("Authorization", auth.as_str()),
        ("Content-Type", "application/json"),
    ];
    if let Some(key) = key {
        headers.push(("Idempotency-Key", key));
    }
    request(gw.proxy, "POST", path, &headers, body.as_bytes()).unwrap()
}

/// Retries while the first request is still in progress (409), as a client honouring
/// Retry-After would (sooner, to keep the test short).
fn retry(gw: &Payedge, tenant: &str, key: &str, body: &str) -> Response {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let resp = pay(gw, tenant, Some(key), body);
        if resp.status != 409 || Instant::now() > deadline {
            return resp;
        }
        assert!(
            resp.header("retry-after").is_some(),
            "409 without Retry-After"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn code(resp: &Response) -> String {
    error_of(resp)["code"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[test]
fn a_payment_retried_on_another_instance_is_replayed_and_reaches_the_provider_once() {
    let redis = RedisServer::start();
    let provider = ProviderProcess::start("cards");
    let events = format!(
        "notifications:\n  provider: redis\n  redis:\n    url: {}\n\
         triggers:\n  - name: paid\n    event: payment.processed\n\
         \x20   match: {{ method: POST, path: /api/payments, status: [200] }}\n\
         \x20   fields: {{ provider: /provider }}\n",
        redis.url()
    );
    let yaml = config_with_events(&[&provider], &redis_store(&redis), "", &events);
    let (a, b) = (Payedge::start(&yaml, &env()), Payedge::start(&yaml, &env()));
    let published = common::redis::Subscriber::new(&redis, &["payedge:events:blue"]);
    let body = r#"{"amount":"25.00","currency":"EUR"}"#;
    let key = "order-7781-attempt";

    let first = pay(&a, "blue", Some(key), body);
    assert_eq!(first.status, 200, "{}", first.text());
    assert_eq!(first.header("idempotent-replayed"), None);
    let again = retry(&b, "blue", key, body);
    assert_eq!(again.status, 200, "{}", again.text());
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(
        again.body, first.body,
        "the replay is the first answer, byte for byte"
    );
    assert_eq!(
        again.header("x-mock-sequence"),
        first.header("x-mock-sequence")
    );
    assert_eq!(again.header("content-type"), first.header("content-type"));
    assert_ne!(again.header("x-request-id"), first.header("x-request-id"));
    // And again on A itself.
    assert_eq!(retry(&a, "blue", key, body).body, first.body);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        provider.received_count("POST"),
        1,
        "the provider saw it once"
    );
    assert_eq!(
        provider.received()[0]["body"],
        body,
        "the body went upstream whole"
    );

    b.wait_for_series(
        r#"payedge_idempotency_requests_total{result="replayed",route="/api/payments"}"#,
        |v| v == 1.0,
    );
    a.wait_for_series(
        r#"payedge_idempotency_requests_total{result="first",route="/api/payments"}"#,
        |v| v == 1.0,
    );
    // The log lines carry the key's digest, never the key.
    let logged = a.wait_for_log(|l| l["message"] == "request" && l["idempotency"] == "first");
    let digest = logged["idempotency_key"].as_str().unwrap();
    assert_eq!(digest.len(), 64, "{logged}");
    let replayed = b.wait_for_log(|l| l["message"] == "request" && l["idempotency"] == "replayed");
    assert_eq!(replayed["idempotency_key"], digest);
    // The payment event too (one: replays publish nothing).
    let (_, event) = published
        .next(Duration::from_secs(5))
        .expect("no payment event");
    let event: serde_json::Value = serde_json::from_str(&event).unwrap();
    assert_eq!(event["type"], "payment.processed");
    assert_eq!(event["idempotencykey"], digest);
    assert!(published.drain(Duration::from_millis(300)).is_empty());
    for gw in [&a, &b] {
        let logs = format!("{}{}", gw.raw_stdout(), gw.raw_stderr());
        assert!(!logs.contains(key), "the key reached the logs");
    }
    // What Redis holds is keyed by the digest too.
    let mut con = redis.connection();
    let keys: Vec<String> = ::redis::cmd("KEYS")
        .arg("payedge:idempotency:*")
        .query(&mut con)
        .unwrap();
    assert_eq!(keys, vec![format!("payedge:idempotency:{digest}")]);
}

/// Over a Redis Cluster the keys land on every shard: each is taken there, and its outcome
/// written there (a command of its own: one pipeline cannot span slots).
#[test]
fn payments_retried_over_a_redis_cluster_are_replayed_from_every_shard() {
    let cluster = RedisCluster::start();
    let provider = ProviderProcess::start("cards");
    let yaml = config(&[&provider], &redis_store_at(&cluster.url()), "");
    let (a, b) = (Payedge::start(&yaml, &env()), Payedge::start(&yaml, &env()));
    let body = r#"{"amount":"12.00","currency":"EUR"}"#;
    let keys: Vec<String> = (0..24).map(|i| format!("cluster-order-{i}")).collect();
    // Three callers at once, so that outcomes are written together too.
    let firsts: Vec<Response> = std::thread::scope(|s| {
        let handles: Vec<_> = keys
            .chunks(8)
            .map(|keys| {
                s.spawn(|| {
                    keys.iter()
                        .map(|key| pay(&a, "blue", Some(key), body))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    for (key, first) in keys.iter().zip(&firsts) {
        assert_eq!(first.status, 200, "{key}: {}", first.text());
        let again = retry(&b, "blue", key, body);
        assert_eq!(again.header("idempotent-replayed"), Some("true"), "{key}");
        assert_eq!(again.body, first.body, "{key}");
    }
    assert_eq!(provider.received_count("POST"), keys.len());
    let mut shards_used = 0;
    for node in &cluster.nodes {
        let held: Vec<String> = ::redis::cmd("KEYS")
            .arg("payedge:idempotency:*")
            .query(&mut cluster.node(*node))
            .unwrap();
        shards_used += usize::from(!held.is_empty());
    }
    assert!(shards_used >= 2, "the keys did not spread over the shards");
}

#[test]
fn twenty_concurrent_duplicates_over_two_instances_reach_the_provider_once() {
    let redis = RedisServer::start();
    let provider = ProviderProcess::start("cards");
    // Slow enough that the duplicates arrive while the first is in progress.
    provider.set_mode("slow:400");
    let yaml = config(&[&provider], &redis_store(&redis), "");
    let gws = [Payedge::start(&yaml, &env()), Payedge::start(&yaml, &env())];
    let body = r#"{"amount":"99.00","currency":"EUR"}"#;
    let answers: Vec<Response> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..20)
            .map(|i| {
                let gw = &gws[i % 2];
                s.spawn(move || pay(gw, "blue", Some("concurrent-1"), body))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let fresh: Vec<&Response> = answers
        .iter()
        .filter(|r| r.status == 200 && r.header("idempotent-replayed").is_none())
        .collect();
    assert_eq!(fresh.len(), 1, "exactly one went to the provider");
    for r in &answers {
        match r.status {
            200 => assert_eq!(r.body, fresh[0].body),
            409 => {
                assert_eq!(code(r), "idempotency_in_progress");
                assert!(r.header("retry-after").is_some());
            }
            other => panic!("unexpected {other}: {}", r.text()),
        }
    }
    assert!(
        answers.iter().any(|r| r.status == 409),
        "no duplicate overlapped"
    );
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(provider.received_count("POST"), 1);
    // Once the first has finished, every duplicate gets its answer.
    let late = retry(&gws[1], "blue", "concurrent-1", body);
    assert_eq!(late.header("idempotent-replayed"), Some("true"));
    assert_eq!(late.body, fresh[0].body);
}

#[test]
fn a_reused_key_is_refused_another_tenants_is_its_own_and_an_expired_one_is_new() {
    let provider = ProviderProcess::start("cards");
    let store = format!("{MEMORY_STORE}  ttl_seconds: 2\n");
    let gw = Payedge::start(&config(&[&provider], &store, ""), &env());
    let body = r#"{"amount":"10.00","currency":"EUR"}"#;
    assert_eq!(pay(&gw, "blue", Some("k-1"), body).status, 200);
    let other_body = pay(
        &gw,
        "blue",
        Some("k-1"),
        r#"{"amount":"11.00","currency":"EUR"}"#,
    );
    assert_eq!(
        (other_body.status, code(&other_body)),
        (422, "idempotency_key_reused".into())
    );
    // Another path (a different request) with the same key on a route of its own: its own key.
    let refund = pay_at(&gw, "/api/refunds", "blue", Some("k-1"), body);
    assert_eq!(refund.status, 200);
    assert_eq!(refund.header("idempotent-replayed"), None);
    // Green's k-1 is not blue's.
    let green = pay(&gw, "green", Some("k-1"), body);
    assert_eq!(green.status, 200);
    assert_eq!(green.header("idempotent-replayed"), None);
    assert_eq!(provider.received_count("POST"), 3);
    assert_eq!(
        pay(&gw, "green", Some("k-1"), body).header("idempotent-replayed"),
        Some("true")
    );
    // After the TTL the key is forgotten: a new payment.
    std::thread::sleep(Duration::from_millis(2_500));
    let after = pay(&gw, "blue", Some("k-1"), body);
    assert_eq!(after.status, 200);
    assert_eq!(after.header("idempotent-replayed"), None);
    assert_eq!(provider.received_count("POST"), 4);
}

#[test]
fn keys_are_checked_before_anything_is_sent() {
    let provider = ProviderProcess::start("cards");
    let gw = Payedge::start(&config(&[&provider], MEMORY_STORE, ""), &env());
    let body = r#"{"amount":"10.00","currency":"EUR"}"#;
    let missing = pay(&gw, "blue", None, body);
    assert_eq!(
        (missing.status, code(&missing)),
        (400, "idempotency_key_required".into())
    );
    let long = "k".repeat(256);
    for bad in ["has space", long.as_str(), "\"\""] {
        let resp = pay(&gw, "blue", Some(bad), body);
        assert_eq!(
            (resp.status, code(&resp)),
            (400, "idempotency_key_invalid".into()),
            "{bad}"
        );
    }
    let big = format!(r#"{{"pad":"{}"}}"#, "x".repeat(70_000));
    let too_large = pay(&gw, "blue", Some("big-1"), &big);
    assert_eq!(
        (too_large.status, code(&too_large)),
        (413, "idempotency_body_too_large".into())
    );
    // The quoted form of the draft is the same key as the bare one.
    assert_eq!(pay(&gw, "blue", Some("\"q-1\""), body).status, 200);
    assert_eq!(
        pay(&gw, "blue", Some("q-1"), body).header("idempotent-replayed"),
        Some("true")
    );
    // Optional where not required; ignored where not configured.
    assert_eq!(pay_at(&gw, "/api/refunds", "blue", None, body).status, 200);
    assert_eq!(
        pay_at(&gw, "/api/quotes", "blue", Some("z"), body).status,
        200
    );
    assert_eq!(
        pay_at(&gw, "/api/quotes", "blue", Some("z"), body).header("idempotent-replayed"),
        None
    );
    assert_eq!(provider.received_count("POST"), 4);
    gw.wait_for_series(
        r#"payedge_idempotency_requests_total{result="rejected",route="/api/payments"}"#,
        |v| v == 5.0,
    );
}

#[test]
fn a_provider_that_takes_the_payment_and_hangs_leaves_an_unknown_outcome_never_sent_twice() {
    let redis = RedisServer::start();
    let slow = ProviderProcess::start("cards-slow");
    let other = ProviderProcess::start("cards-other");
    slow.set_mode("blackhole");
    other.set_mode("blackhole");
    let pool = "    timeouts:\n      read_ms: 800\n      total_ms: 1500\n";
    let yaml = config(&[&slow, &other], &redis_store(&redis), pool);
    let (a, b) = (Payedge::start(&yaml, &env()), Payedge::start(&yaml, &env()));
    let body = r#"{"amount":"500.00","currency":"EUR"}"#;
    let first = pay(&a, "blue", Some("hang-1"), body);
    assert_eq!(first.status, 504, "{}", first.text());
    std::thread::sleep(Duration::from_millis(200));
    let (slow_got, other_got) = (slow.received_count("POST"), other.received_count("POST"));
    assert_eq!(
        slow_got + other_got,
        1,
        "the payment went to one provider only"
    );
    let holder = if slow_got == 1 {
        "cards-slow"
    } else {
        "cards-other"
    };
    // Both providers answer from now on: a retry must still not reach either.
    slow.set_mode("ok");
    other.set_mode("ok");
    for gw in [&b, &a] {
        let again = pay(gw, "blue", Some("hang-1"), body);
        assert_eq!(
            (again.status, code(&again)),
            (502, "idempotency_outcome_unknown".into()),
            "{}",
            again.text()
        );
        let message = error_of(&again)["message"].as_str().unwrap().to_string();
        assert!(message.contains(holder), "{message}");
    }
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        slow.received_count("POST") + other.received_count("POST"),
        1,
        "no provider received a second copy"
    );
    b.wait_for_series(
        r#"payedge_idempotency_requests_total{result="unknown_outcome",route="/api/payments"}"#,
        |v| v == 1.0,
    );
}

#[test]
fn with_redis_down_a_required_route_refuses_and_an_optional_one_proceeds_unprotected() {
    let mut redis = RedisServer::start();
    let provider = ProviderProcess::start("cards");
    let gw = Payedge::start(&config(&[&provider], &redis_store(&redis), ""), &env());
    let body = r#"{"amount":"10.00","currency":"EUR"}"#;
    assert_eq!(pay(&gw, "blue", Some("before"), body).status, 200);
    redis.kill();
    let refused = pay(&gw, "blue", Some("during"), body);
    assert_eq!(
        (refused.status, code(&refused)),
        (503, "idempotency_unavailable".into())
    );
    assert_eq!(
        provider.received_count("POST"),
        1,
        "no provider was reached"
    );
    let unprotected = pay_at(&gw, "/api/refunds", "blue", Some("during"), body);
    assert_eq!(unprotected.status, 200);
    assert_eq!(provider.received_count("POST"), 2);
    gw.wait_for_series(
        r#"payedge_idempotency_requests_total{result="unavailable",route="/api/payments"}"#,
        |v| v == 1.0,
    );
    gw.wait_for_series(
        r#"payedge_idempotency_requests_total{result="unprotected",route="/api/refunds"}"#,
        |v| v == 1.0,
    );
    gw.wait_for_log(|l| l["message"] == "idempotency store unavailable");
    // Redis back: keys work again (it was not persistent, so `before` is gone).
    redis.restart();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let resp = pay(&gw, "blue", Some("after"), body);
        if resp.status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "{}", resp.text());
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_keyed_put_that_reached_a_provider_is_never_resent_to_another() {
    // PUT is among the methods a pool may resend (the default retry methods): never with a key.
    let redis = RedisServer::start();
    let (one, two) = (
        ProviderProcess::start("cards-one"),
        ProviderProcess::start("cards-two"),
    );
    one.set_mode("503");
    two.set_mode("503");
    let gw = Payedge::start(&config(&[&one, &two], &redis_store(&redis), ""), &env());
    let auth = bearer("blue");
    let put = || {
        request(
            gw.proxy,
            "PUT",
            "/api/payments/pay_77",
            &[
                ("X-Tenant", "blue"),
                ("Authorization", auth.as_str()),
                ("Content-Type", "application/json"),
                ("Idempotency-Key", "capture-pay_77"),
            ],
            br#"{"amount":"80.00","currency":"EUR"}"#,
        )
        .unwrap()
    };
    let first = put();
    assert_eq!(first.status, 503, "{}", first.text());
    let again = put();
    assert_ne!(again.status, 200, "{}", again.text());
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        one.received_count("PUT") + two.received_count("PUT"),
        1,
        "one provider got the PUT, once"
    );
}

#[test]
fn a_response_without_a_body_is_kept_and_replayed() {
    let redis = RedisServer::start();
    let provider = ProviderProcess::start("cards");
    provider.set_mode("204");
    let gw = Payedge::start(&config(&[&provider], &redis_store(&redis), ""), &env());
    let body = r#"{"amount":"3.00","currency":"EUR"}"#;
    let first = pay(&gw, "blue", Some("void-9"), body);
    assert_eq!(first.status, 204, "{}", first.text());
    let again = retry(&gw, "blue", "void-9", body);
    assert_eq!(
        (again.status, again.header("idempotent-replayed")),
        (204, Some("true")),
        "{}",
        again.text()
    );
    assert!(again.body.is_empty());
    // As the provider answered it: a 204 has no Content-Length (RFC 9110 §8.6).
    assert_eq!(first.header("content-length"), None);
    assert_eq!(again.header("content-length"), None);
    assert_eq!(
        again.header("x-mock-sequence"),
        first.header("x-mock-sequence")
    );
    assert_eq!(provider.received_count("POST"), 1);
}

#[test]
fn a_key_taken_by_redis_whose_reply_was_lost_is_released_not_left_in_flight() {
    // Redis takes the key, and the reply never comes back: payedge answers 503 (the route
    // refuses without its store), and must still release the key it may hold, or every retry
    // would be told "in progress", then "outcome unknown", for a payment never sent.
    let redis = RedisServer::start();
    let relay = common::relay::Relay::start(redis.addr);
    let provider = ProviderProcess::start("cards");
    let store = redis_store_at(&format!("redis://{}", relay.addr));
    let gw = Payedge::start(&config(&[&provider], &store, ""), &env());
    let body = r#"{"amount":"12.00","currency":"EUR"}"#;
    assert_eq!(pay(&gw, "blue", Some("warm"), body).status, 200);
    relay.mute_replies();
    let lost = pay(&gw, "blue", Some("lost-reply"), body);
    assert_eq!(
        (lost.status, code(&lost)),
        (503, "idempotency_unavailable".into()),
        "{}",
        lost.text()
    );
    assert_eq!(
        provider.received_count("POST"),
        1,
        "no provider was reached"
    );
    // The client retries: the key was released on a new connection, so this is a first request.
    let again = retry(&gw, "blue", "lost-reply", body);
    assert_eq!(again.status, 200, "{}", again.text());
    assert_eq!(again.header("idempotent-replayed"), None);
    assert_eq!(provider.received_count("POST"), 2);
}

#[test]
fn check_names_the_idempotency_keys_it_refuses() {
    let dir = tempfile::tempdir().unwrap();
    let provider_addr = free_addr();
    for (section, key) in [
        ("idempotency:\n  store: redis\n", "idempotency.redis"),
        (
            "idempotency:\n  store: redis\n  redis:\n    url: http://x\n",
            "idempotency.redis.url",
        ),
        (
            "idempotency:\n  ttl_seconds: 0\n",
            "idempotency.ttl_seconds",
        ),
        ("idempotency:\n  store: disk\n", "idempotency.store"),
    ] {
        let yaml = format!(
            "{}{section}",
            config_for(&[("p".into(), provider_addr)], "")
        );
        let file = dir.path().join("payedge.yaml");
        std::fs::write(&file, yaml).unwrap();
        let out = std::process::Command::new(common::process::binary())
            .args(["check", "--config", file.to_str().unwrap()])
            .env("TEST_JWT_SECRET", "x".repeat(32))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stderr).to_string()
            + &String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(2), "{section}: {text}");
        assert!(text.contains(key), "{section}: {text}");
    }
}

/// Sends a keyed payment the way curl sends a larger body: the head with `Expect: 100-continue`,
/// then the body only once told to go on. The interim answer's head and the final answer.
fn pay_expecting_continue(gw: &Payedge, key: &str, body: &str) -> (String, String) {
    let head = format!(
        "POST /api/payments HTTP/1.1\r\nHost: edge\r\nX-Tenant: blue\r\nAuthorization: {}\r\n\
         Idempotency-Key: {key}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         Expect: 100-continue\r\nConnection: close\r\n\r\n",
        bearer("blue"),
        body.len()
    );
    exchange_expecting_continue(gw.proxy, &head, body.as_bytes())
}

/// Sends `request` then, on the same connection, a GET that asks to close after its answer.
fn then_another_request(gw: &Payedge, request: &[u8]) -> (String, bool) {
    let next = format!(
        "GET /api/payments/next HTTP/1.1\r\nHost: edge\r\nX-Tenant: blue\r\nAuthorization: {}\r\n\
         Connection: close\r\n\r\n",
        bearer("blue")
    );
    then_on_the_same_connection(gw.proxy, request, next.as_bytes())
}

/// A keyed payment whose body is malformed (a bad chunk) is refused and its connection closed:
/// what follows on it is the rest of a broken body, never a request. (Pingora counted a body
/// that broke on a malformed chunk as done and kept the connection, so the bytes after it were
/// served as the next request.) A body that is only too large keeps its framing: nothing of it
/// is ever read as a request.
#[test]
fn a_malformed_keyed_body_closes_the_connection_and_a_too_large_one_is_never_read_as_a_request() {
    let provider = ProviderProcess::start("cards");
    let gw = Payedge::start(&config(&[&provider], MEMORY_STORE, ""), &env());
    let head = |key: &str, framing: &str| {
        format!(
            "POST /api/payments HTTP/1.1\r\nHost: edge\r\nX-Tenant: blue\r\nAuthorization: {}\r\n\
             Idempotency-Key: {key}\r\nContent-Type: application/json\r\n{framing}\r\n\r\n",
            bearer("blue")
        )
    };
    let malformed = head("broken-chunk", "Transfer-Encoding: chunked") + "zz\r\n";
    let (answer, closed) = then_another_request(&gw, malformed.as_bytes());
    assert!(answer.starts_with("HTTP/1.1 400 "), "{answer}");
    assert!(answer.contains(r#""code":"bad_request""#), "{answer}");
    assert_eq!(answer.matches("HTTP/1.1 ").count(), 1, "{answer}");
    assert!(closed, "the connection stayed open: {answer}");
    assert_eq!(provider.received_count("GET"), 0);

    let big = "x".repeat(70 * 1024);
    let mut too_large = head("too-large", &format!("Content-Length: {}", big.len())).into_bytes();
    too_large.extend_from_slice(big.as_bytes());
    let (answer, _) = then_another_request(&gw, &too_large);
    assert!(answer.starts_with("HTTP/1.1 413 "), "{answer}");
    assert!(
        answer.contains(r#""code":"idempotency_body_too_large""#),
        "{answer}"
    );
    // Answered before the body's end, Pingora closes the connection, unless the rest of the
    // body had already been read: then the next request is read where the body ends.
    let statuses: Vec<&str> = answer.split("HTTP/1.1 ").skip(1).map(|r| &r[..3]).collect();
    assert!(
        statuses == ["413"] || statuses == ["413", "200"],
        "{answer}"
    );
    assert_eq!(provider.received_count("POST"), 0);
    assert_eq!(provider.received_count("GET"), statuses.len() - 1);
}

/// The phone on a bad network: the client's own timeout fires while its payment is at the
/// provider, it closes the connection and retries with the same key. The provider's answer is
/// still awaited and kept, so the retry is that answer, replayed (before, payedge dropped the
/// exchange when the client closed, and every retry got 502 `idempotency_outcome_unknown`).
#[test]
fn a_client_that_gives_up_while_the_provider_works_gets_the_answer_on_its_retry() {
    use std::io::Write;
    let provider = ProviderProcess::start("cards");
    provider.set_mode("slow:800");
    let gw = Payedge::start(&config(&[&provider], MEMORY_STORE, ""), &env());
    let body = r#"{"amount":"12.00","currency":"EUR"}"#;
    let mut stream = std::net::TcpStream::connect(gw.proxy).unwrap();
    let request = format!(
        "POST /api/payments HTTP/1.1\r\nHost: edge\r\nX-Tenant: blue\r\nAuthorization: {}\r\n\
         Idempotency-Key: gave-up-1\r\nX-Request-Id: gave-up-first\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        bearer("blue"),
        body.len()
    );
    stream.write_all(request.as_bytes()).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    drop(stream);
    // While the provider still works: in progress.
    let early = pay(&gw, "blue", Some("gave-up-1"), body);
    assert_eq!(early.status, 409, "{}", early.text());
    // Ask again soon, not at the first request's deadline (the pool's 30 s and more).
    assert_eq!(early.header("retry-after"), Some("1"));
    // Once it has answered: its answer.
    let again = retry(&gw, "blue", "gave-up-1", body);
    assert_eq!(again.status, 200, "{}", again.text());
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(provider.received_count("POST"), 1);
    // The first request's line: the answer written into the closed connection, no error.
    let first = gw.wait_for_log(|l| l["request_id"] == "gave-up-first");
    assert_eq!(first["status"], 200, "{first}");
    assert!(first["error_code"].is_null(), "{first}");
}

/// payedge needs a keyed payment's body before any provider is asked, so it is payedge that tells
/// a client waiting for `100 Continue` to send it (or the client waits out its own timeout:
/// curl's is 1 s); the provider gets the body without the Expect.
#[test]
fn a_client_expecting_100_continue_is_told_to_go_on_and_its_retry_replayed() {
    let provider = ProviderProcess::start("cards");
    let gw = Payedge::start(&config(&[&provider], MEMORY_STORE, ""), &env());
    let body = r#"{"amount":"10.00","currency":"EUR"}"#;
    let (interim, first) = pay_expecting_continue(&gw, "continue-1", body);
    assert!(
        interim.starts_with("HTTP/1.1 100 Continue\r\n"),
        "{interim}"
    );
    assert!(first.starts_with("HTTP/1.1 200 "), "{first}");
    let received = provider.received();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0]["body"], body);
    assert!(received[0]["expect"].is_null(), "{:?}", received[0]);

    let (interim, again) = pay_expecting_continue(&gw, "continue-1", body);
    assert!(
        interim.starts_with("HTTP/1.1 100 Continue\r\n"),
        "{interim}"
    );
    assert!(again.starts_with("HTTP/1.1 200 "), "{again}");
    assert!(
        again
            .to_ascii_lowercase()
            .contains("idempotent-replayed: true"),
        "{again}"
    );
    assert_eq!(provider.received_count("POST"), 1);

    // After a `100 Continue` the request is still answered with payedge's own error.
    let mut provider = provider;
    provider.kill();
    let (interim, failed) = pay_expecting_continue(&gw, "continue-2", body);
    assert!(
        interim.starts_with("HTTP/1.1 100 Continue\r\n"),
        "{interim}"
    );
    assert!(failed.starts_with("HTTP/1.1 502 "), "{failed}");
    assert!(
        failed.contains(r#""code":"upstream_unavailable""#),
        "{failed}"
    );
}
