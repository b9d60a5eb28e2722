//! The hub at the WebSocket level, with a raw client: protocol errors, the graceful stop, and a
//! client that stops reading.

mod common;

use std::time::Duration;

use common::hub::NodeClient;
use common::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

type Ws = common::hub::RawWs;
const RS: char = '\u{1e}';

async fn open(gw: &Payedge, token: &str) -> Ws {
    common::hub::open_raw(gw.admin, token).await
}

async fn handshake(ws: &mut Ws) {
    ws.send(Message::text(format!(
        r#"{{"protocol":"json","version":1}}{RS}"#
    )))
    .await
    .unwrap();
    assert_eq!(next_text(ws).await, format!("{{}}{RS}"));
}

async fn next_text(ws: &mut Ws) -> String {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => return t.to_string(),
            Ok(Some(Ok(_))) => continue,
            other => panic!("no text frame: {other:?}"),
        }
    }
}

/// The messages of the next text frames until one holds a message of `kind`.
async fn next_of_type(ws: &mut Ws, kind: u64) -> Value {
    loop {
        for message in next_text(ws).await.split(RS).filter(|m| !m.is_empty()) {
            let value: Value = serde_json::from_str(message).unwrap();
            if value["type"] == kind {
                return value;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bad_handshake_is_answered_with_an_error_then_closed() {
    let upstream = MockUpstream::start("p0");
    let gw = Payedge::start(&config(&[&upstream]), &env());
    let mut ws = open(&gw, &token("blue")).await;
    ws.send(Message::text(format!(
        r#"{{"protocol":"messagepack","version":1}}{RS}"#
    )))
    .await
    .unwrap();
    let answer = next_text(&mut ws).await;
    let v: Value = serde_json::from_str(answer.trim_end_matches(RS)).unwrap();
    assert!(
        v["error"].as_str().unwrap().contains("messagepack"),
        "{answer}"
    );
    let end = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .unwrap();
    assert!(
        matches!(end, None | Some(Ok(Message::Close(_))) | Some(Err(_))),
        "{end:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn split_and_batched_frames_work_and_malformed_json_closes_with_an_error() {
    let upstream = MockUpstream::start("p0");
    let gw = Payedge::start(&config(&[&upstream]), &env());
    let mut ws = open(&gw, &token("blue")).await;
    handshake(&mut ws).await;
    // One invocation split across two frames, then two messages in one frame.
    ws.send(Message::text(
        r#"{"type":1,"invocationId":"1","target":"JoinTe"#,
    ))
    .await
    .unwrap();
    ws.send(Message::text(format!(r#"nantGroup","arguments":["blue"]}}{RS}{{"type":6}}{RS}{{"type":1,"invocationId":"2","target":"Nope","arguments":[]}}{RS}"#)))
        .await
        .unwrap();
    let first = next_of_type(&mut ws, 3).await;
    assert_eq!(first, json!({"type": 3, "invocationId": "1"}));
    let second = next_of_type(&mut ws, 3).await;
    assert_eq!(second["invocationId"], "2");
    assert!(
        second["error"]
            .as_str()
            .unwrap()
            .contains("Unknown hub method")
    );
    // An unknown message type is ignored, as the official clients do.
    ws.send(Message::text(format!(r#"{{"type":42}}{RS}{{"type":1,"invocationId":"3","target":"LeaveTenantGroup","arguments":["blue"]}}{RS}"#)))
        .await
        .unwrap();
    assert_eq!(next_of_type(&mut ws, 3).await["invocationId"], "3");
    ws.send(Message::text(format!("{{not json{RS}")))
        .await
        .unwrap();
    let close = next_of_type(&mut ws, 7).await;
    assert!(
        close["error"].as_str().unwrap().contains("invalid message"),
        "{close}"
    );
    assert!(close.get("allowReconnect").is_none());
}

/// What the client reads after it asked to end the connection: the server's WebSocket Close
/// frame, or what came instead.
async fn server_close(ws: &mut Ws) -> Result<(), String> {
    loop {
        match tokio::time::timeout(Duration::from_secs(5), ws.next()).await {
            Ok(Some(Ok(Message::Close(_)))) => return Ok(()),
            Ok(Some(Ok(Message::Text(_) | Message::Ping(_) | Message::Pong(_)))) => continue,
            other => return Err(format!("{other:?}")),
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_ending_the_connection_gets_a_websocket_close_not_a_dropped_socket() {
    let upstream = MockUpstream::start("p0");
    let gw = Payedge::start(&config(&[&upstream]), &env());
    // A SignalR Close message: the server ends the WebSocket with a Close frame (RFC 6455 §7:
    // a socket dropped without one is an abnormal closure, 1006, to the client).
    let mut ws = open(&gw, &token("blue")).await;
    handshake(&mut ws).await;
    ws.send(Message::text(format!(r#"{{"type":7}}{RS}"#)))
        .await
        .unwrap();
    server_close(&mut ws)
        .await
        .expect("a Close frame after the client's Close message");
    // The client's own Close frame: the server answers it with one before closing the socket.
    let mut ws = open(&gw, &token("blue")).await;
    handshake(&mut ws).await;
    ws.close(None).await.unwrap();
    server_close(&mut ws)
        .await
        .expect("the server's Close frame answering the client's");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_oversized_message_closes_the_connection() {
    let upstream = MockUpstream::start("p0");
    let gw = Payedge::start(&config(&[&upstream]), &env());
    let mut ws = open(&gw, &token("blue")).await;
    handshake(&mut ws).await;
    let _ = ws.send(Message::text("x".repeat(40 * 1024))).await;
    let end = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(t))) if t.contains(r#""type":7"#) => {
                    return Some(t.to_string());
                }
                Some(Ok(_)) => continue,
                _ => return None,
            }
        }
    })
    .await
    .expect("the connection stayed open")
    .expect("closed without a Close message");
    assert!(close_has_error(&end, "larger than 32768 bytes"), "{end}");
}

fn close_has_error(frame: &str, words: &str) -> bool {
    frame.split(RS).any(|m| {
        serde_json::from_str::<Value>(m)
            .is_ok_and(|v| v["type"] == 7 && v["error"].as_str().is_some_and(|e| e.contains(words)))
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn an_idle_client_gets_pings_and_a_silent_one_is_closed_after_the_client_timeout() {
    let upstream = MockUpstream::start("p0");
    let yaml = config(&[&upstream])
        + "notifications:\n  keepalive_interval_ms: 300\n  client_timeout_ms: 2000\n";
    let gw = Payedge::start(&yaml, &env());
    let mut ws = open(&gw, &token("blue")).await;
    handshake(&mut ws).await;
    let started = std::time::Instant::now();
    assert_eq!(next_of_type(&mut ws, 6).await, json!({"type": 6}));
    assert_eq!(next_of_type(&mut ws, 6).await, json!({"type": 6}));
    // The client has said nothing since its handshake: closed once client_timeout_ms is over.
    let close = next_of_type(&mut ws, 7).await;
    assert!(started.elapsed() >= Duration::from_millis(1500), "{close}");
    assert!(
        close["error"].as_str().unwrap().contains("Server timeout"),
        "{close}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_pings_stays_connected_past_the_client_timeout() {
    let upstream = MockUpstream::start("p0");
    let yaml = config(&[&upstream])
        + "notifications:\n  keepalive_interval_ms: 300\n  client_timeout_ms: 1000\n";
    let gw = Payedge::start(&yaml, &env());
    let mut ws = open(&gw, &token("blue")).await;
    handshake(&mut ws).await;
    let until = std::time::Instant::now() + Duration::from_millis(3000);
    while std::time::Instant::now() < until {
        ws.send(Message::text(format!(r#"{{"type":6}}{RS}"#)))
            .await
            .unwrap();
        let ping = next_of_type(&mut ws, 6).await;
        assert_eq!(ping, json!({"type": 6}));
    }
    ws.send(Message::text(format!(
        r#"{{"type":1,"invocationId":"1","target":"JoinTenantGroup","arguments":["blue"]}}{RS}"#
    )))
    .await
    .unwrap();
    assert_eq!(
        next_of_type(&mut ws, 3).await,
        json!({"type": 3, "invocationId": "1"})
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_invokes_but_never_reads_is_dropped_after_the_client_timeout() {
    let upstream = MockUpstream::start("p0");
    let yaml = config(&[&upstream])
        + "notifications:\n  keepalive_interval_ms: 500\n  client_timeout_ms: 2000\n";
    let gw = Payedge::start(&yaml, &env());
    let ws = open(&gw, &token("blue")).await;
    let (mut sink, _never_read) = ws.split();
    sink.send(Message::text(format!(
        r#"{{"protocol":"json","version":1}}{RS}"#
    )))
    .await
    .unwrap();
    // Each reply carries its 30 KB invocation id back: the replies fill the socket buffers.
    let flood = tokio::spawn(async move {
        let id = "i".repeat(30_000);
        for n in 0..1000 {
            let invocation = format!(
                r#"{{"type":1,"invocationId":"{id}{n}","target":"JoinTenantGroup","arguments":["blue"]}}{RS}"#
            );
            if sink.send(Message::text(invocation)).await.is_err() {
                break;
            }
        }
        sink
    });
    let connections = r#"payedge_hub_connections{tenant="blue"}"#;
    let admin = gw.admin;
    tokio::task::spawn_blocking(move || {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !get(admin, "/metrics", &[])
            .text()
            .contains(&format!("{connections} 1"))
        {
            assert!(std::time::Instant::now() < deadline, "never connected");
            std::thread::sleep(Duration::from_millis(50));
        }
    })
    .await
    .unwrap();
    // Blocked on its replies, the connection still ends within about the client timeout.
    tokio::task::spawn_blocking(move || {
        gw.wait_for_metrics(|text| text.contains(&format!("{connections} 0")));
    })
    .await
    .unwrap();
    flood.abort();
}

#[tokio::test(flavor = "multi_thread")]
async fn an_expired_token_closes_with_an_error_and_allows_reconnecting() {
    let upstream = MockUpstream::start("p0");
    let gw = Payedge::start(&config(&[&upstream]), &env());
    let mut c = claims("blue");
    c["exp"] = json!(now() + 2);
    let mut ws = open(&gw, &sign(&c)).await;
    handshake(&mut ws).await;
    let close = next_of_type(&mut ws, 7).await;
    assert_eq!(
        close,
        json!({"type": 7, "error": "the access token has expired", "allowReconnect": true})
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_graceful_stop_tells_clients_they_may_reconnect() {
    let upstream = MockUpstream::start("p0");
    let mut gw = Payedge::start(&config(&[&upstream]), &env());
    let mut ws = open(&gw, &token("blue")).await;
    handshake(&mut ws).await;
    gw.signal("TERM");
    let close = next_of_type(&mut ws, 7).await;
    assert_eq!(close, json!({"type": 7, "allowReconnect": true}));
    let status = tokio::task::spawn_blocking(move || gw.wait_exit(Duration::from_secs(10)))
        .await
        .unwrap();
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_stops_reading_is_closed_without_slowing_the_others() {
    let upstream = MockUpstream::start("p0");
    let yaml = config(&[&upstream]) + "notifications:\n  connection_queue: 64\n";
    let gw = Payedge::start(&yaml, &env());
    let mut stalled = open(&gw, &token("blue")).await;
    handshake(&mut stalled).await;
    let reader = NodeClient::connected(gw.admin, &token("green"), &[]);
    let padding = "p".repeat(14_000);
    let admin = admin_bearer();
    let admin_addr = gw.admin;
    let sent = tokio::task::spawn_blocking(move || {
        let mut sent = 0;
        let started = std::time::Instant::now();
        while sent < 3000 && started.elapsed() < Duration::from_secs(20) {
            let body = json!({"code": "load", "message": format!("alert {sent}"), "details": {"padding": padding}});
            let resp = request(admin_addr, "POST", "/admin/alerts", &[("Authorization", &admin)], body.to_string().as_bytes()).unwrap();
            assert_eq!(resp.status, 202);
            sent += 1;
            // About a thousand alerts a second: a reading client keeps up, a stalled one's socket
            // buffers and queue fill within seconds.
            std::thread::sleep(Duration::from_millis(1));
            if sent % 100 == 0 && slow_consumers(&get(admin_addr, "/metrics", &[]).text()) > 0 {
                break;
            }
        }
        sent
    })
    .await
    .unwrap();
    assert_eq!(
        slow_consumers(&gw.metrics()),
        1,
        "not evicted after {sent} alerts"
    );
    // The reader got every alert, in order, while the other one stalled.
    let (reader, messages) = tokio::task::spawn_blocking(move || {
        let messages = reader.wait_messages(sent);
        let texts: Vec<String> = messages
            .iter()
            .map(|m| m["data"]["message"].as_str().unwrap().to_string())
            .collect();
        (reader, texts)
    })
    .await
    .unwrap();
    let expected: Vec<String> = (0..sent).map(|i| format!("alert {i}")).collect();
    assert_eq!(messages, expected);
    let metrics = gw.metrics();
    assert!(
        metrics.contains(r#"payedge_hub_connections{tenant="blue"} 0"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"payedge_hub_connections{tenant="green"} 1"#),
        "{metrics}"
    );
    drop(reader);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_stops_reading_on_a_quiet_tenant_is_closed_after_the_client_timeout() {
    // Far fewer events than its queue holds: it is never evicted as a slow consumer, so only a
    // bound on the blocked write itself can end it. The client keeps sending pings (it stopped
    // reading, not writing), so it is not the timeout for silent clients either.
    let upstream = MockUpstream::start("p0");
    let yaml = config(&[&upstream])
        + "notifications:\n  connection_queue: 4096\n  client_timeout_ms: 2000\n  \
           keepalive_interval_ms: 500\n";
    let gw = Payedge::start(&yaml, &env());
    // A small receive buffer, so that a few megabytes fill what the sockets hold.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(gw.admin).await.unwrap();
    let (mut stalled, _) = tokio_tungstenite::client_async(
        common::hub::upgrade_request(gw.admin, &token("blue")),
        tokio_tungstenite::MaybeTlsStream::Plain(stream),
    )
    .await
    .unwrap();
    handshake(&mut stalled).await;
    let (mut writer, reader) = stalled.split();
    let pings = tokio::spawn(async move {
        loop {
            if writer
                .send(Message::text(format!(r#"{{"type":6}}{RS}"#)))
                .await
                .is_err()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    });
    let admin = admin_bearer();
    let admin_addr = gw.admin;
    let connected = |metrics: &str| metrics.contains(r#"payedge_hub_connections{tenant="blue"} 1"#);
    let (sent, closed_after) = tokio::task::spawn_blocking(move || {
        let padding = "p".repeat(14_000);
        let mut sent = 0;
        // Until the connection is closed, or 21 MB (whatever the sockets' buffers hold),
        // still well within its queue.
        while sent < 1500 {
            let body = json!({"code": "load", "message": format!("alert {sent}"), "details": {"padding": padding}});
            let resp = request(admin_addr, "POST", "/admin/alerts", &[("Authorization", &admin)], body.to_string().as_bytes()).unwrap();
            assert_eq!(resp.status, 202);
            sent += 1;
            if sent % 100 == 0 && !connected(&get(admin_addr, "/metrics", &[]).text()) {
                break;
            }
        }
        let quiet = std::time::Instant::now();
        while connected(&get(admin_addr, "/metrics", &[]).text())
            && quiet.elapsed() < Duration::from_secs(15)
        {
            std::thread::sleep(Duration::from_millis(100));
        }
        (sent, quiet.elapsed())
    })
    .await
    .unwrap();
    let metrics = gw.metrics();
    assert!(
        metrics.contains(r#"payedge_hub_connections{tenant="blue"} 0"#),
        "still connected {closed_after:?} after the last of {sent} alerts:\n{metrics}"
    );
    assert_eq!(slow_consumers(&metrics), 1, "{metrics}");
    pings.abort();
    drop(reader);
}

fn slow_consumers(metrics: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("payedge_hub_slow_consumers_total "))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Publishes events `{label}-1`, `{label}-2`, … to tenant blue's channel on the real Redis until
/// the client receives one of them (true), or 10 s pass (false).
async fn publish_until_delivered(
    redis: &mut ::redis::aio::MultiplexedConnection,
    ws: &mut Ws,
    label: &str,
) -> bool {
    publish_to_until_delivered(redis, "blue", ws, label).await
}

/// Publishes events of `tenant` (raw, as a publisher would) until `ws` receives one.
async fn publish_to_until_delivered(
    redis: &mut ::redis::aio::MultiplexedConnection,
    tenant: &str,
    ws: &mut Ws,
    label: &str,
) -> bool {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut n = 0;
    while std::time::Instant::now() < deadline {
        n += 1;
        let envelope = json!({
            "specversion": "1.0", "id": format!("{label}-{n}"), "source": "test",
            "type": "fx.quote.created", "tenant": tenant, "data": {}
        });
        let _: i64 = ::redis::cmd("PUBLISH")
            .arg(format!("payedge:events:{tenant}"))
            .arg(envelope.to_string())
            .query_async(redis)
            .await
            .unwrap();
        if let Ok(invocation) =
            tokio::time::timeout(Duration::from_millis(200), next_of_type(ws, 1)).await
        {
            let id = invocation["arguments"][0]["id"].as_str().unwrap_or("");
            if id.starts_with(&format!("{label}-")) {
                return true;
            }
        }
    }
    false
}

#[tokio::test(flavor = "multi_thread")]
async fn a_redis_subscription_that_goes_silent_is_replaced() {
    let redis = common::redis::RedisServer::start();
    let relay = common::relay::Relay::start(redis.addr);
    let upstream = MockUpstream::start("p0");
    let yaml = config(&[&upstream])
        + &format!(
            "notifications:\n  provider: redis\n  keepalive_interval_ms: 300\n  client_timeout_ms: 30000\n  redis:\n    url: redis://{}\n",
            relay.addr
        );
    let gw = Payedge::start(&yaml, &env());
    let mut ws = open(&gw, &token("blue")).await;
    handshake(&mut ws).await;
    let mut publisher = ::redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    assert!(publish_until_delivered(&mut publisher, &mut ws, "before").await);

    // The hub's connection to Redis stays open but nothing passes: only a ping can tell.
    relay.freeze();
    assert!(
        publish_until_delivered(&mut publisher, &mut ws, "after").await,
        "the hub never replaced its silent Redis subscription"
    );
    gw.wait_for_log(|l| {
        l["message"]
            .as_str()
            .is_some_and(|m| m.contains("did not answer the hub's ping"))
    });
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hub_with_many_tenants_subscribes_again_over_a_slow_link() {
    let redis = common::redis::RedisServer::start();
    let relay = common::relay::Relay::start(redis.addr);
    let upstream = MockUpstream::start("p0");
    let tenants: Vec<String> = (0..40).map(|i| format!("t{i:02}")).collect();
    let yaml = config(&[&upstream]).replace(
        "tenants: [blue, green]",
        &format!("tenants: [blue, green, {}]", tenants.join(", ")),
    ) + &format!(
        "notifications:\n  provider: redis\n  keepalive_interval_ms: 500\n  client_timeout_ms: 30000\n  redis:\n    url: redis://{}\n",
        relay.addr
    );
    let gw = Payedge::start(&yaml, &env());
    let mut clients = Vec::new();
    for tenant in &tenants {
        let mut ws = open(&gw, &token(tenant)).await;
        handshake(&mut ws).await;
        clients.push(ws);
    }
    let mut publisher = ::redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let last = clients.last_mut().unwrap();
    assert!(publish_to_until_delivered(&mut publisher, "t39", last, "before").await);

    // Each reply now takes 40 ms, and the subscription is cut: the hub subscribes to its 41
    // channels again. One command per channel took 1.6 s, longer than the 500 ms it allowed for
    // all of them, so it started over for ever.
    relay.delay_replies(40);
    relay.cut();
    assert!(
        publish_to_until_delivered(&mut publisher, "t39", last, "after").await,
        "the hub never subscribed again"
    );
}
