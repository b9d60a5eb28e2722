//! Triggers end to end through the real binary: the client's bytes are never touched, numbers stay
//! exact decimals, a matching response that gives no event is counted and logged once, responses
//! that do not match give nothing, the toggles, the business metrics, and two triggers on one
//! response. (What lands on the Redis channels, outages and overflow: tests/redis_bus.rs.)
//!
//! Synchronisation: one pipeline task handles captured responses in the order they ended, and all
//! its log lines go through one ordered queue. So once the business line of a later "barrier"
//! request (`POST /api/barrier`, its own trigger) is in the logs, everything the earlier requests
//! caused (metrics, warnings, business lines) is there too.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::redis::{RedisServer, Subscriber};
use common::*;
use flate2::Compression;
use flate2::write::GzEncoder;
use serde_json::Value;

const WARNING: &str = "response matched a trigger but gave no event";
const REASONS: [&str; 5] = [
    "too_large",
    "not_json",
    "missing_field",
    "unsupported_encoding",
    "bad_encoding",
];

const FX_TRIGGER: &str = r#"  - name: fx-quote-created
    event: fx.quote.created
    match: { method: POST, path: /api/fx/quote, status: [200, 201] }
    fields: { quoteId: /id, fromCurrency: /from, toCurrency: /to, amount: /amount, rate: /rate }
    required: [quoteId, amount]
    log_message: "FX quote created for tenant {TenantId}: {Amount}"
"#;

const BARRIER_TRIGGER: &str = r#"  - name: barrier
    event: test.barrier
    match: { method: POST, path: /api/barrier }
    fields: { ok: /ok }
    required: [ok]
"#;

const BARRIER_BODY: &[u8] = br#"{"ok":"yes"}"#;

// ---------------------------------------------------------------------------------------------
// A raw HTTP/1.1 provider: writes exactly the bytes it is given, piece by piece, then closes.

/// What the raw provider read of a request.
struct RawRequest {
    path: String,
    request_id: String,
}

/// A provider on a real socket that answers each request with `respond`'s pieces, each its own
/// write (a couple of milliseconds apart, so that the proxy reads the body in several chunks),
/// then closes the connection.
fn raw_upstream(
    respond: impl Fn(&RawRequest) -> Vec<Vec<u8>> + Send + Sync + 'static,
) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let respond = Arc::new(respond);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let respond = Arc::clone(&respond);
            std::thread::spawn(move || serve_raw(stream, &*respond));
        }
    });
    addr
}

fn serve_raw(mut stream: TcpStream, respond: &dyn Fn(&RawRequest) -> Vec<Vec<u8>>) {
    let _ = stream.set_nodelay(true);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut line = String::new();
    if reader.read_line(&mut line).unwrap_or(0) == 0 {
        return;
    }
    let path = line
        .split_whitespace()
        .nth(1)
        .unwrap_or_default()
        .to_string();
    let (mut length, mut request_id) = (0usize, String::new());
    loop {
        line.clear();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let trimmed = line.trim_end();
        if trimmed.is_empty() {
            break;
        }
        if let Some((name, value)) = trimmed.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().unwrap_or(0);
            } else if name.eq_ignore_ascii_case("x-request-id") {
                request_id = value.trim().to_string();
            }
        }
    }
    let mut body = vec![0; length];
    if reader.read_exact(&mut body).is_err() {
        return;
    }
    let pieces = respond(&RawRequest { path, request_id });
    for (i, piece) in pieces.iter().enumerate() {
        if i > 0 {
            // Traffic shaping, not synchronisation: separate reads on the proxy's side.
            std::thread::sleep(Duration::from_millis(2));
        }
        if stream
            .write_all(piece)
            .and_then(|()| stream.flush())
            .is_err()
        {
            return;
        }
    }
    let _ = stream.shutdown(Shutdown::Write);
    // Read until the proxy closes, so that closing never resets the connection under it.
    let _ = std::io::copy(&mut reader, &mut std::io::sink());
}

fn head(status: u16, headers: &[(&str, &str)], framing: &str) -> Vec<u8> {
    let reason = match status {
        200 => "OK",
        201 => "Created",
        _ => "Status",
    };
    let mut head = format!("HTTP/1.1 {status} {reason}\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str(framing);
    head.push_str("Connection: close\r\n\r\n");
    head.into_bytes()
}

/// A response with Content-Length, its body written `piece` bytes at a time.
fn with_length(status: u16, headers: &[(&str, &str)], body: &[u8], piece: usize) -> Vec<Vec<u8>> {
    let framing = format!("Content-Length: {}\r\n", body.len());
    let mut pieces = vec![head(status, headers, &framing)];
    pieces.extend(body.chunks(piece).map(<[u8]>::to_vec));
    pieces
}

/// A response with `Transfer-Encoding: chunked`, one chunk of at most `piece` bytes per write.
fn chunked(status: u16, headers: &[(&str, &str)], body: &[u8], piece: usize) -> Vec<Vec<u8>> {
    let mut pieces = vec![head(status, headers, "Transfer-Encoding: chunked\r\n")];
    for chunk in body.chunks(piece) {
        let mut framed = format!("{:x}\r\n", chunk.len()).into_bytes();
        framed.extend_from_slice(chunk);
        framed.extend_from_slice(b"\r\n");
        pieces.push(framed);
    }
    pieces.push(b"0\r\n\r\n".to_vec());
    pieces
}

const JSON: (&str, &str) = ("Content-Type", "application/json");

/// Answers the barrier; everything else with `reply`.
fn raw_provider(reply: Vec<Vec<u8>>) -> SocketAddr {
    raw_upstream(move |req| {
        if req.path == "/api/barrier" {
            with_length(200, &[JSON], BARRIER_BODY, 1024)
        } else {
            reply.clone()
        }
    })
}

// ---------------------------------------------------------------------------------------------
// Bodies.

/// Deterministic hex noise: compresses to about half, so gzip bodies stay several KB too.
fn noise(len: usize, seed: u64) -> String {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            char::from(b"0123456789abcdef"[(x & 15) as usize])
        })
        .collect()
}

/// A quote as a provider writes it: `amount` is raw JSON text (a number unless quoted), and
/// `pad` bytes of padding make the body realistic in size.
fn quote_body(id: &str, amount: &str, pad: usize) -> Vec<u8> {
    format!(
        r#"{{"id":"{id}","from":"USD","to":"GBP","amount":{amount},"rate":"0.7892","converted_amount":"789.28","tenant":"blue","meta":{{"padding":"{}"}}}}"#,
        noise(pad, id.len() as u64 + pad as u64)
    )
    .into_bytes()
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
    encoder.write_all(data).unwrap();
    encoder.finish().unwrap()
}

// ---------------------------------------------------------------------------------------------
// The gateway, requests, logs, metrics.

/// payedge with one provider `name` at `addr` (route /api) and `sections` appended (top-level
/// `notifications:` / `triggers:`).
fn start(name: &str, addr: SocketAddr, sections: &str) -> Payedge {
    let yaml = config_for(
        &[(name.into(), addr)],
        "    timeouts:\n      read_ms: 3000\n",
    ) + sections;
    Payedge::start(&yaml, &env())
}

fn triggers(entries: &[&str]) -> String {
    format!("triggers:\n{}", entries.concat())
}

fn call(gw: &Payedge, method: &str, path: &str, tenant: &str, id: &str, body: &[u8]) -> Response {
    let auth = bearer(tenant);
    let headers = [
        ("X-Tenant", tenant),
        ("Authorization", auth.as_str()),
        ("X-Request-Id", id),
        ("Content-Type", "application/json"),
    ];
    request(gw.proxy, method, path, &headers, body).unwrap()
}

fn quote(gw: &Payedge, id: &str) -> Response {
    call(
        gw,
        "POST",
        "/api/fx/quote",
        "blue",
        id,
        br#"{"from":"USD","to":"GBP","amount":"1000.10"}"#,
    )
}

fn is_business(line: &Value, id: &str) -> bool {
    line["target"] == "payedge::business" && line["properties"]["CorrelationId"] == id
}

fn is_warning(line: &Value) -> bool {
    line["level"] == "WARN" && line["message"] == WARNING
}

fn business_lines(gw: &Payedge, id: &str) -> Vec<Value> {
    gw.logs()
        .into_iter()
        .filter(|l| is_business(l, id))
        .collect()
}

fn warnings(gw: &Payedge) -> Vec<Value> {
    gw.logs().into_iter().filter(is_warning).collect()
}

/// Sends a request the barrier trigger turns into an event and waits for its business line:
/// afterwards everything earlier requests caused in the pipeline is visible.
fn barrier(gw: &Payedge) {
    static N: AtomicUsize = AtomicUsize::new(0);
    let id = format!("barrier-{}", N.fetch_add(1, Ordering::Relaxed));
    let resp = call(gw, "POST", "/api/barrier", "blue", &id, b"{}");
    assert_eq!(resp.status, 200, "barrier: {}", resp.text());
    gw.wait_for_log(|l| is_business(l, &id));
}

/// A series' labels, sorted by name.
type Labels = Vec<(String, String)>;

/// Every series of `/metrics` as (name, labels, value).
fn all_series(gw: &Payedge) -> Vec<(String, Labels, f64)> {
    gw.metrics()
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (head, value) = l.rsplit_once(' ')?;
            let value: f64 = value.parse().ok()?;
            let (name, labels) = match head.split_once('{') {
                Some((name, rest)) => (name, parse_labels(rest.strip_suffix('}')?)),
                None => (head, Vec::new()),
            };
            Some((name.to_string(), labels, value))
        })
        .collect()
}

fn parse_labels(text: &str) -> Labels {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some((key, after)) = rest.split_once("=\"") {
        let mut value = String::new();
        let mut chars = after.char_indices();
        let mut end = after.len();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    if let Some((_, e)) = chars.next() {
                        value.push(if e == 'n' { '\n' } else { e });
                    }
                }
                '"' => {
                    end = i + 1;
                    break;
                }
                c => value.push(c),
            }
        }
        out.push((key.trim_start_matches(',').to_string(), value));
        rest = &after[end..];
    }
    out.sort();
    out
}

/// The value of the series `name` with exactly these labels, if it is exported.
fn metric(gw: &Payedge, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut wanted: Labels = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    wanted.sort();
    all_series(gw)
        .into_iter()
        .find(|(n, l, _)| n == name && *l == wanted)
        .map(|(_, _, v)| v)
}

/// Every exported series of `name`.
fn series_of(gw: &Payedge, name: &str) -> Vec<(Labels, f64)> {
    all_series(gw)
        .into_iter()
        .filter(|(n, _, _)| n == name)
        .map(|(_, l, v)| (l, v))
        .collect()
}

/// Waits (at most 5 s) until the series has exactly `expected`.
fn wait_metric(gw: &Payedge, name: &str, labels: &[(&str, &str)], expected: f64) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let value = metric(gw, name, labels);
        if value == Some(expected) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{name}{labels:?} is {value:?}, not {expected}, after 5 s:\n{}",
            gw.metrics()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn published(gw: &Payedge, kind: &str) -> Option<f64> {
    metric(gw, "payedge_events_published_total", &[("type", kind)])
}

fn trigger_errors(gw: &Payedge, trigger: &str, reason: &str) -> Option<f64> {
    metric(
        gw,
        "payedge_trigger_errors_total",
        &[("trigger", trigger), ("reason", reason)],
    )
}

fn assert_same_bytes(got: &[u8], sent: &[u8], what: &str) {
    assert!(
        got == sent,
        "{what}: the client got {} bytes, the provider sent {} (first difference at {:?})",
        got.len(),
        sent.len(),
        got.iter().zip(sent).position(|(a, b)| a != b)
    );
}

// ---------------------------------------------------------------------------------------------
// 1. The client's bytes are the provider's, and the event is still extracted.

/// A matching quote answered with `reply` (whose body is `body`): the client gets `body` byte for
/// byte, and the event carries the quote's fields.
fn passes_through_unchanged(reply: Vec<Vec<u8>>, body: &[u8], encoding: Option<&str>) {
    let provider = raw_provider(reply);
    let gw = start("fx", provider, &triggers(&[FX_TRIGGER, BARRIER_TRIGGER]));
    let resp = quote(&gw, "fxq-pass");
    assert_eq!(resp.status, 201);
    assert_same_bytes(&resp.body, body, "body");
    assert_eq!(resp.header("content-type"), Some("application/json"));
    assert_eq!(resp.header("content-encoding"), encoding);
    let line = gw.wait_for_log(|l| is_business(l, "fxq-pass"));
    let p = &line["properties"];
    assert_eq!(p["QuoteId"], "fxq-pass");
    assert_eq!(p["Amount"], "1000.10");
    assert_eq!(p["FromCurrency"], "USD");
    assert_eq!(p["ToCurrency"], "GBP");
    assert_eq!(p["Rate"], "0.7892");
    assert_eq!(p["TenantId"], "blue");
    assert_eq!(p["EventType"], "fx.quote.created");
    assert_eq!(line["message"], "FX quote created for tenant blue: 1000.10");
    wait_metric(&gw, "payedge_fx_quotes_total", &[("tenant", "blue")], 1.0);
    wait_metric(
        &gw,
        "payedge_events_published_total",
        &[("type", "fx.quote.created")],
        1.0,
    );
    assert!(warnings(&gw).is_empty(), "{:?}", warnings(&gw));
}

#[test]
fn a_content_length_body_reaches_the_client_byte_for_byte_and_gives_its_event() {
    let body = quote_body("fxq-pass", "1000.10", 12_000);
    let reply = with_length(201, &[JSON], &body, 1_500);
    assert!(reply.len() > 8, "the body goes out in several writes");
    passes_through_unchanged(reply, &body, None);
}

#[test]
fn a_chunked_body_reaches_the_client_byte_for_byte_and_gives_its_event() {
    let body = quote_body("fxq-pass", "1000.10", 12_000);
    let reply = chunked(201, &[JSON], &body, 1_000);
    assert!(reply.len() > 10, "the body goes out in several chunks");
    passes_through_unchanged(reply, &body, None);
}

#[test]
fn a_gzip_body_reaches_the_client_compressed_and_unchanged_and_gives_its_event() {
    let plain = quote_body("fxq-pass", "1000.10", 24_000);
    let body = gzip(&plain);
    assert!(
        body.len() > 8_000,
        "a realistic compressed size: {}",
        body.len()
    );
    let reply = chunked(201, &[JSON, ("Content-Encoding", "gzip")], &body, 1_400);
    passes_through_unchanged(reply, &body, Some("gzip"));
}

#[test]
fn a_deflate_body_reaches_the_client_unchanged_and_gives_its_event() {
    let plain = quote_body("fxq-pass", "1000.10", 16_000);
    let mut encoder = flate2::write::ZlibEncoder::new(Vec::new(), Compression::default());
    encoder.write_all(&plain).unwrap();
    let body = encoder.finish().unwrap();
    let reply = with_length(201, &[JSON, ("Content-Encoding", "deflate")], &body, 1_400);
    passes_through_unchanged(reply, &body, Some("deflate"));
}

#[test]
fn a_gzip_body_of_several_members_gives_its_event() {
    // RFC 1952 2.2: a gzip file is a series of members; `gzip -d` and zlib's gunzip read them
    // all. Servers that compress a stream piece by piece send such bodies.
    let plain = quote_body("fxq-pass", "1000.10", 12_000);
    let (first, second) = plain.split_at(plain.len() / 2);
    let body = [gzip(first), gzip(second)].concat();
    let mut check = Vec::new();
    flate2::read::MultiGzDecoder::new(&body[..])
        .read_to_end(&mut check)
        .unwrap();
    assert_eq!(check, plain, "a valid gzip body");
    let reply = chunked(201, &[JSON, ("Content-Encoding", "gzip")], &body, 1_400);
    passes_through_unchanged(reply, &body, Some("gzip"));
}

#[test]
fn a_query_string_does_not_keep_a_quote_from_its_event() {
    let body = quote_body("fxq-pass", "1000.10", 3_000);
    let provider = raw_provider(with_length(201, &[JSON], &body, 1_000));
    let gw = start("fx", provider, &triggers(&[FX_TRIGGER]));
    let resp = call(
        &gw,
        "POST",
        "/api/fx/quote?lang=en",
        "blue",
        "query-1",
        br#"{"from":"USD","to":"GBP","amount":"1000.10"}"#,
    );
    assert_eq!(resp.status, 201);
    assert_same_bytes(&resp.body, &body, "body");
    let line = gw.wait_for_log(|l| is_business(l, "query-1"));
    assert_eq!(line["properties"]["QuoteId"], "fxq-pass");
}

// ---------------------------------------------------------------------------------------------
// 2. Exact decimals end to end.

#[test]
fn a_json_number_stays_its_exact_decimal_text_in_the_log_line_and_on_redis() {
    let redis = RedisServer::start();
    let body = br#"{"id":"fxq-dec","from":"USD","to":"GBP","amount":1000.10,"rate":0.78920}"#;
    let provider = MockUpstream::with("fx", |_| MockResponse {
        status: 201,
        headers: vec![("Content-Type".into(), "application/json".into())],
        body: body.to_vec(),
        delay: Duration::ZERO,
    });
    let sections = format!(
        "notifications:\n  provider: redis\n  instance: events-test\n  redis:\n    url: {}\n{}",
        redis.url(),
        triggers(&[FX_TRIGGER])
    );
    let gw = start("fx", provider.addr, &sections);
    let events = Subscriber::new(&redis, &["payedge:events:blue"]);

    let resp = quote(&gw, "dec-1");
    assert_eq!(resp.status, 201);
    assert_same_bytes(&resp.body, body, "body");

    let line = gw.wait_for_log(|l| is_business(l, "dec-1"));
    assert_eq!(line["properties"]["Amount"], "1000.10", "not 1000.1");
    assert_eq!(line["properties"]["Rate"], "0.78920");
    assert_eq!(line["message"], "FX quote created for tenant blue: 1000.10");

    let (_, payload) = events
        .next(Duration::from_secs(5))
        .expect("no event on Redis");
    let event: Value = serde_json::from_str(&payload).unwrap();
    assert_eq!(event["type"], "fx.quote.created");
    assert_eq!(event["correlationid"], "dec-1");
    assert_eq!(event["data"]["amount"], "1000.10", "not 1000.1");
    assert_eq!(event["data"]["rate"], "0.78920");
    assert!(payload.contains(r#""amount":"1000.10""#), "{payload}");
}

// ---------------------------------------------------------------------------------------------
// 3. A matching response that gives no event: one error count, one warning, the client intact.

/// The fx trigger with a 4 KB limit, plus the barrier.
fn limited_triggers() -> String {
    triggers_limited_to(4096)
}

/// The fx trigger with a `max_body_bytes` limit, plus the barrier.
fn triggers_limited_to(max_body_bytes: usize) -> String {
    triggers(&[
        &FX_TRIGGER.replace(
            "    log_message",
            &format!("    max_body_bytes: {max_body_bytes}\n    log_message"),
        ),
        BARRIER_TRIGGER,
    ])
}

/// A quote answered with `reply` (whose body is `body`) must reach the client intact and give no
/// event, exactly one `reason` count for fx-quote-created and exactly one warning line.
fn gives_no_event(reason: &str, reply: Vec<Vec<u8>>, body: &[u8], encoding: Option<&str>) {
    gives_no_event_within(reason, reply, body, encoding, &limited_triggers());
}

fn gives_no_event_within(
    reason: &str,
    reply: Vec<Vec<u8>>,
    body: &[u8],
    encoding: Option<&str>,
    triggers: &str,
) {
    assert!(REASONS.contains(&reason));
    let provider = raw_provider(reply);
    let gw = start("fx", provider, triggers);
    for r in REASONS {
        assert_eq!(
            trigger_errors(&gw, "fx-quote-created", r),
            Some(0.0),
            "{r} is exported at 0 from the start"
        );
    }

    let resp = quote(&gw, "no-event");
    assert_eq!(resp.status, 201);
    assert_same_bytes(&resp.body, body, "body");
    assert_eq!(resp.header("content-encoding"), encoding);

    gw.wait_for_log(|l| is_warning(l) && l["request_id"] == "no-event");
    barrier(&gw);

    let warned = warnings(&gw);
    assert_eq!(warned.len(), 1, "exactly one warning line: {warned:#?}");
    let w = &warned[0];
    assert_eq!(w["reason"], reason);
    assert_eq!(w["trigger"], "fx-quote-created");
    assert_eq!(w["tenant"], "blue");
    assert_eq!(w["request_id"], "no-event");
    for r in REASONS {
        let expected = if r == reason { 1.0 } else { 0.0 };
        assert_eq!(
            trigger_errors(&gw, "fx-quote-created", r),
            Some(expected),
            "payedge_trigger_errors_total{{trigger=fx-quote-created,reason={r}}}"
        );
    }
    assert!(
        business_lines(&gw, "no-event").is_empty(),
        "an event was made"
    );
    assert_eq!(
        metric(&gw, "payedge_fx_quotes_total", &[("tenant", "blue")]),
        None
    );
    assert_eq!(published(&gw, "fx.quote.created"), None);
    for r in REASONS {
        assert_eq!(trigger_errors(&gw, "barrier", r), Some(0.0));
    }
}

#[test]
fn a_body_over_max_body_bytes_with_content_length_gives_no_event_but_too_large() {
    let body = quote_body("fxq-big", "1000.10", 6_000);
    assert!(body.len() > 4096);
    gives_no_event(
        "too_large",
        with_length(201, &[JSON], &body, 1_000),
        &body,
        None,
    );
}

#[test]
fn a_chunked_body_over_max_body_bytes_gives_no_event_but_too_large() {
    let body = quote_body("fxq-big", "1000.10", 6_000);
    gives_no_event(
        "too_large",
        chunked(201, &[JSON], &body, 1_000),
        &body,
        None,
    );
}

#[test]
fn a_small_gzip_body_that_inflates_over_max_body_bytes_gives_no_event_but_too_large() {
    let plain = format!(
        r#"{{"id":"fxq-bomb","amount":1000.10,"pad":"{}"}}"#,
        " ".repeat(200_000)
    );
    let body = gzip(plain.as_bytes());
    assert!(body.len() < 4096, "compressed {} bytes", body.len());
    let reply = with_length(201, &[JSON, ("Content-Encoding", "gzip")], &body, 1_000);
    gives_no_event("too_large", reply, &body, Some("gzip"));
}

#[test]
fn a_200000_deep_body_within_the_limit_reaches_the_client_untouched_and_gives_no_event() {
    // 400 kB of `[[[…]]]`, captured whole (limit 1 MB) and scanned: no stack overflow, no event
    // (there is no `id` to extract), the client gets every byte.
    let depth = 200_000;
    let body = ["[".repeat(depth), "]".repeat(depth)].concat().into_bytes();
    gives_no_event_within(
        "missing_field",
        with_length(201, &[JSON], &body, 64 * 1024),
        &body,
        None,
        &triggers_limited_to(1_000_000),
    );
}

#[test]
fn malformed_json_gives_no_event_but_not_json() {
    let mut body = quote_body("fxq-bad", "1000.10", 2_000);
    body.truncate(body.len() - 3);
    gives_no_event(
        "not_json",
        with_length(201, &[JSON], &body, 700),
        &body,
        None,
    );
}

#[test]
fn a_missing_required_field_gives_no_event_but_missing_field() {
    let body = format!(
        r#"{{"from":"USD","to":"GBP","amount":1000.10,"rate":"0.7892","meta":{{"padding":"{}"}}}}"#,
        noise(2_000, 7)
    )
    .into_bytes();
    gives_no_event(
        "missing_field",
        with_length(201, &[JSON], &body, 700),
        &body,
        None,
    );
}

#[test]
fn a_brotli_body_gives_no_event_but_unsupported_encoding() {
    // Not real brotli: payedge must not try to read it, only pass it on.
    let body = gzip(&quote_body("fxq-br", "1000.10", 2_000));
    let reply = with_length(201, &[JSON, ("Content-Encoding", "br")], &body, 700);
    gives_no_event("unsupported_encoding", reply, &body, Some("br"));
}

#[test]
fn a_corrupt_gzip_body_gives_no_event_but_bad_encoding() {
    let mut body = gzip(&quote_body("fxq-corrupt", "1000.10", 2_000));
    // The CRC-32 of the trailer no longer matches the data.
    let crc = body.len() - 8;
    body[crc] ^= 0xff;
    let reply = with_length(201, &[JSON, ("Content-Encoding", "gzip")], &body, 700);
    gives_no_event("bad_encoding", reply, &body, Some("gzip"));
}

/// A quote body of exactly `len` bytes.
fn quote_of_size(len: usize) -> Vec<u8> {
    let base = quote_body("fxq-edge", "1000.10", 0).len();
    let body = quote_body("fxq-edge", "1000.10", len - base);
    assert_eq!(body.len(), len);
    body
}

#[test]
fn a_body_of_exactly_max_body_bytes_gives_its_event_and_one_byte_more_does_not() {
    let at_limit = quote_of_size(4096);
    let over = quote_of_size(4097);
    let (a, b) = (at_limit.clone(), over.clone());
    let provider = raw_upstream(move |req| match req.request_id.as_str() {
        "cl-4096" => with_length(201, &[JSON], &a, 1_000),
        "chunked-4096" => chunked(201, &[JSON], &a, 1_000),
        "cl-4097" => with_length(201, &[JSON], &b, 1_000),
        _ => chunked(201, &[JSON], &b, 1_000),
    });
    let gw = start("fx", provider, &limited_triggers());
    for id in ["cl-4096", "chunked-4096"] {
        let resp = quote(&gw, id);
        assert_same_bytes(&resp.body, &at_limit, id);
        gw.wait_for_log(|l| is_business(l, id));
    }
    for id in ["cl-4097", "chunked-4097"] {
        let resp = quote(&gw, id);
        assert_same_bytes(&resp.body, &over, id);
        let w = gw.wait_for_log(|l| is_warning(l) && l["request_id"] == id);
        assert_eq!(w["reason"], "too_large", "{id}");
    }
    assert_eq!(
        trigger_errors(&gw, "fx-quote-created", "too_large"),
        Some(2.0)
    );
    assert_eq!(warnings(&gw).len(), 2);
    wait_metric(&gw, "payedge_fx_quotes_total", &[("tenant", "blue")], 2.0);
}

// ---------------------------------------------------------------------------------------------
// 4. Responses that do not match give nothing.

fn raw_json(status: u16, content_type: &str, body: Vec<u8>) -> MockResponse {
    MockResponse {
        status,
        headers: vec![("Content-Type".into(), content_type.into())],
        body,
        delay: Duration::ZERO,
    }
}

fn payment_body(id: &str, status: &str, amount: &str, currency: &str) -> Vec<u8> {
    format!(
        r#"{{"id":"{id}","status":"{status}","amount":{amount},"currency":"{currency}","card":{{"last4":"4242"}},"meta":{{"padding":"{}"}}}}"#,
        noise(1_500, 3)
    )
    .into_bytes()
}

#[test]
fn responses_that_do_not_match_give_no_event_and_no_error() {
    // Every body is a complete, valid event: only the request or response header keeps it out.
    let provider = MockUpstream::with("fx", |req| {
        let id = req.header("x-request-id").unwrap_or_default().to_string();
        match id.as_str() {
            "status-202" => raw_json(202, "application/json", quote_body(&id, "1000.10", 1_500)),
            "text-plain" => raw_json(201, "text/plain", quote_body(&id, "1000.10", 1_500)),
            "fx-400" => raw_json(400, "application/json", quote_body(&id, "1000.10", 1_500)),
            "payment-422" => raw_json(
                422,
                "application/json",
                payment_body(&id, "failed", "12.50", "EUR"),
            ),
            _ if req.path == "/api/barrier" => {
                raw_json(200, "application/json", BARRIER_BODY.to_vec())
            }
            _ => raw_json(201, "application/json", quote_body(&id, "1000.10", 1_500)),
        }
    });
    // The payment trigger lists no status: any 2xx.
    let payment = r#"  - name: payment-processed
    event: payment.processed
    match: { method: POST, path: /api/payments }
    fields: { paymentId: /id, status: /status, amount: /amount, currency: /currency }
    required: [paymentId, status]
"#;
    let gw = start(
        "fx",
        provider.addr,
        &triggers(&[FX_TRIGGER, payment, BARRIER_TRIGGER]),
    );
    let quote_request = br#"{"from":"USD","to":"GBP","amount":"1000.10"}"#;
    let cases: [(&str, &str, &str, u16); 7] = [
        ("wrong-method", "GET", "/api/fx/quote", 201),
        ("put-method", "PUT", "/api/fx/quote", 201),
        ("longer-path", "POST", "/api/fx/quote/preview", 201),
        ("status-202", "POST", "/api/fx/quote", 202),
        ("text-plain", "POST", "/api/fx/quote", 201),
        ("fx-400", "POST", "/api/fx/quote", 400),
        ("payment-422", "POST", "/api/payments", 422),
    ];
    for (id, method, path, status) in cases {
        let body: &[u8] = if method == "GET" { b"" } else { quote_request };
        let resp = call(&gw, method, path, "blue", id, body);
        assert_eq!(resp.status, status, "{id}");
        let sent = &provider
            .received()
            .into_iter()
            .find(|r| r.header("x-request-id") == Some(id))
            .unwrap_or_else(|| panic!("{id} did not reach the provider"));
        assert_eq!(sent.method, method, "{id}");
        let expected = match id {
            "payment-422" => payment_body(id, "failed", "12.50", "EUR"),
            _ => quote_body(id, "1000.10", 1_500),
        };
        assert_same_bytes(&resp.body, &expected, id);
    }
    barrier(&gw);

    for (id, ..) in cases {
        assert!(business_lines(&gw, id).is_empty(), "{id} gave an event");
    }
    assert!(warnings(&gw).is_empty(), "{:#?}", warnings(&gw));
    let errors = series_of(&gw, "payedge_trigger_errors_total");
    assert_eq!(errors.len(), 3 * REASONS.len(), "{errors:?}");
    assert!(errors.iter().all(|(_, v)| *v == 0.0), "{errors:?}");
    assert_eq!(
        metric(&gw, "payedge_fx_quotes_total", &[("tenant", "blue")]),
        None
    );
    assert!(series_of(&gw, "payedge_payments_total").is_empty());
    wait_metric(
        &gw,
        "payedge_events_published_total",
        &[("type", "test.barrier")],
        1.0,
    );
    let published_all = series_of(&gw, "payedge_events_published_total");
    assert_eq!(
        published_all.len(),
        1,
        "only the barrier: {published_all:?}"
    );

    // The same provider answers a matching quote with an event: the cases above were not
    // silent because of the setup.
    assert_eq!(quote(&gw, "control").status, 201);
    gw.wait_for_log(|l| is_business(l, "control"));
}

// ---------------------------------------------------------------------------------------------
// 5. Toggles.

fn quote_provider() -> MockUpstream {
    MockUpstream::with("fx", |req| {
        if req.path == "/api/barrier" {
            return raw_json(200, "application/json", BARRIER_BODY.to_vec());
        }
        let id = req.header("x-request-id").unwrap_or("none");
        raw_json(201, "application/json", quote_body(id, "1000.10", 2_000))
    })
}

#[test]
fn a_disabled_trigger_gives_nothing() {
    let provider = quote_provider();
    let disabled = FX_TRIGGER.replace("    event:", "    enabled: false\n    event:");
    let gw = start(
        "fx",
        provider.addr,
        &triggers(&[&disabled, BARRIER_TRIGGER]),
    );
    assert_eq!(quote(&gw, "disabled-1").status, 201);
    barrier(&gw);
    assert!(business_lines(&gw, "disabled-1").is_empty());
    assert!(warnings(&gw).is_empty());
    assert_eq!(published(&gw, "fx.quote.created"), None);
    assert!(series_of(&gw, "payedge_fx_quotes_total").is_empty());
    let errors = series_of(&gw, "payedge_trigger_errors_total");
    assert!(
        errors
            .iter()
            .all(|(labels, _)| labels.contains(&("trigger".into(), "barrier".into()))),
        "a disabled trigger has no error series: {errors:?}"
    );
    wait_metric(
        &gw,
        "payedge_events_published_total",
        &[("type", "test.barrier")],
        1.0,
    );
}

fn redis_notifications(redis: &RedisServer, extra: &str) -> String {
    format!(
        "notifications:\n{extra}  instance: events-test\n  redis:\n    url: {}\n",
        redis.url()
    )
}

#[test]
fn with_notifications_off_events_are_logged_and_counted_but_never_published() {
    let redis = RedisServer::start();
    let provider = quote_provider();
    let sections = redis_notifications(&redis, "  enabled: false\n  provider: redis\n")
        + &triggers(&[FX_TRIGGER]);
    let gw = start("fx", provider.addr, &sections);
    let events = Subscriber::new(&redis, &["payedge:events:*"]);

    assert_eq!(quote(&gw, "off-1").status, 201);
    let line = gw.wait_for_log(|l| is_business(l, "off-1"));
    assert_eq!(line["properties"]["Amount"], "1000.10");
    wait_metric(&gw, "payedge_fx_quotes_total", &[("tenant", "blue")], 1.0);
    assert!(
        series_of(&gw, "payedge_events_published_total")
            .iter()
            .all(|(_, v)| *v == 0.0)
    );
    // Nothing can signal an absence: once the event is made, a publish would follow at once.
    let received = events.drain(Duration::from_millis(500));
    assert!(received.is_empty(), "published anyway: {received:?}");
    assert_eq!(published(&gw, "fx.quote.created"), None);
}

#[test]
fn the_in_memory_provider_counts_what_it_publishes_and_sends_nothing_to_redis() {
    let redis = RedisServer::start();
    let provider = quote_provider();
    // A redis section is present but the provider is in_memory: Redis must not be used.
    let sections =
        redis_notifications(&redis, "  provider: in_memory\n") + &triggers(&[FX_TRIGGER]);
    let gw = start("fx", provider.addr, &sections);
    let events = Subscriber::new(&redis, &["payedge:events:*"]);

    assert_eq!(quote(&gw, "mem-1").status, 201);
    assert_eq!(quote(&gw, "mem-2").status, 201);
    gw.wait_for_log(|l| is_business(l, "mem-2"));
    wait_metric(
        &gw,
        "payedge_events_published_total",
        &[("type", "fx.quote.created")],
        2.0,
    );
    let received = events.drain(Duration::from_millis(300));
    assert!(
        received.is_empty(),
        "in_memory published to Redis: {received:?}"
    );
}

#[test]
fn the_redis_provider_publishes_on_the_channel_of_the_requests_tenant() {
    let redis = RedisServer::start();
    let provider = quote_provider();
    let sections = redis_notifications(&redis, "  provider: redis\n") + &triggers(&[FX_TRIGGER]);
    let gw = start("fx", provider.addr, &sections);
    let events = Subscriber::new(&redis, &["payedge:events:*"]);

    let resp = call(
        &gw,
        "POST",
        "/api/fx/quote",
        "green",
        "green-1",
        br#"{"from":"USD","to":"GBP","amount":"1000.10"}"#,
    );
    assert_eq!(resp.status, 201);
    let (channel, payload) = events
        .next(Duration::from_secs(5))
        .expect("nothing published");
    assert_eq!(channel, "payedge:events:green");
    let event: Value = serde_json::from_str(&payload).unwrap();
    assert_eq!(event["type"], "fx.quote.created");
    assert_eq!(event["tenant"], "green");
    assert_eq!(event["correlationid"], "green-1");
    wait_metric(
        &gw,
        "payedge_events_published_total",
        &[("type", "fx.quote.created")],
        1.0,
    );
    wait_metric(&gw, "payedge_fx_quotes_total", &[("tenant", "green")], 1.0);
    assert_eq!(
        metric(&gw, "payedge_fx_quotes_total", &[("tenant", "blue")]),
        None
    );
}

// ---------------------------------------------------------------------------------------------
// 6. payment.processed feeds the payment metrics.

#[test]
fn processed_payments_count_by_outcome_and_add_up_their_volume() {
    let provider = MockUpstream::with("cards-acme", |req| {
        let id = req.header("x-request-id").unwrap_or("none").to_string();
        let body = match id.as_str() {
            // A JSON number and a JSON string amount; a known and an unknown status.
            "pay-ok" => payment_body(&id, "succeeded", "12.50", "EUR"),
            "pay-odd" => payment_body(&id, "awaiting_fraud_review", "\"7.25\"", "eur"),
            _ => payment_body(&id, "succeeded", "100.00", "USD"),
        };
        raw_json(201, "application/json", body)
    });
    let payment = r#"  - name: payment-processed
    event: payment.processed
    match: { method: POST, path: /api/payments, status: [200, 201] }
    fields: { paymentId: /id, status: /status, amount: /amount, currency: /currency }
    required: [paymentId, status]
"#;
    let gw = start("cards-acme", provider.addr, &triggers(&[payment]));
    let body = br#"{"amount":"12.50","currency":"EUR"}"#;
    for id in ["pay-ok", "pay-odd", "pay-green"] {
        let tenant = if id == "pay-green" { "green" } else { "blue" };
        let resp = call(&gw, "POST", "/api/payments", tenant, id, body);
        assert_eq!(resp.status, 201, "{id}");
    }
    let ok = gw.wait_for_log(|l| is_business(l, "pay-ok"));
    assert_eq!(ok["properties"]["Status"], "succeeded");
    assert_eq!(ok["properties"]["Amount"], "12.50");
    assert_eq!(ok["message"], "payment.processed for tenant blue");

    let payments = "payedge_payments_total";
    let blue = |outcome| {
        [
            ("tenant", "blue"),
            ("provider", "cards-acme"),
            ("outcome", outcome),
        ]
    };
    wait_metric(&gw, payments, &blue("succeeded"), 1.0);
    wait_metric(&gw, payments, &blue("other"), 1.0);
    wait_metric(
        &gw,
        payments,
        &[
            ("tenant", "green"),
            ("provider", "cards-acme"),
            ("outcome", "succeeded"),
        ],
        1.0,
    );
    assert_eq!(
        series_of(&gw, payments).len(),
        3,
        "{:?}",
        series_of(&gw, payments)
    );
    let volume = "payedge_payment_volume_total";
    wait_metric(
        &gw,
        volume,
        &[("tenant", "blue"), ("currency", "EUR")],
        19.75,
    );
    wait_metric(
        &gw,
        volume,
        &[("tenant", "green"), ("currency", "USD")],
        100.0,
    );
    assert_eq!(
        series_of(&gw, volume).len(),
        2,
        "{:?}",
        series_of(&gw, volume)
    );
    assert!(series_of(&gw, "payedge_fx_quotes_total").is_empty());
    // With every business series present, the exposition still passes promtool.
    let report = common::process::promtool_check_metrics(&gw.metrics());
    assert!(report.is_empty(), "promtool: {report}");
}

// ---------------------------------------------------------------------------------------------
// 7. Two triggers on one response.

#[test]
fn two_triggers_matching_one_response_both_give_their_event() {
    let provider = quote_provider();
    let activity = r#"  - name: fx-activity
    event: fx.activity
    match: { method: POST, path_prefix: /api/fx }
    fields: { reference: /id, target: /to }
    required: [reference]
    log_message: "FX activity {Reference} for tenant {TenantId}"
"#;
    let gw = start("fx", provider.addr, &triggers(&[FX_TRIGGER, activity]));
    let resp = quote(&gw, "both-1");
    assert_eq!(resp.status, 201);
    assert_same_bytes(&resp.body, &quote_body("both-1", "1000.10", 2_000), "body");

    gw.wait_for_log(|l| is_business(l, "both-1") && l["properties"]["EventType"] == "fx.activity");
    gw.wait_for_log(|l| {
        is_business(l, "both-1") && l["properties"]["EventType"] == "fx.quote.created"
    });
    let lines = business_lines(&gw, "both-1");
    assert_eq!(lines.len(), 2, "{lines:#?}");
    let activity = lines
        .iter()
        .find(|l| l["properties"]["EventType"] == "fx.activity")
        .unwrap();
    assert_eq!(activity["message"], "FX activity both-1 for tenant blue");
    assert_eq!(activity["properties"]["Target"], "GBP");
    let quote_line = lines
        .iter()
        .find(|l| l["properties"]["EventType"] == "fx.quote.created")
        .unwrap();
    assert_eq!(quote_line["properties"]["Amount"], "1000.10");
    assert_ne!(
        activity["properties"]["EventId"], quote_line["properties"]["EventId"],
        "two events, two ids"
    );
    wait_metric(
        &gw,
        "payedge_events_published_total",
        &[("type", "fx.quote.created")],
        1.0,
    );
    wait_metric(
        &gw,
        "payedge_events_published_total",
        &[("type", "fx.activity")],
        1.0,
    );
    wait_metric(&gw, "payedge_fx_quotes_total", &[("tenant", "blue")], 1.0);
    assert!(warnings(&gw).is_empty());
}

#[test]
fn of_two_triggers_only_the_one_whose_limit_is_exceeded_counts_too_large() {
    let provider = quote_provider();
    let small = r#"  - name: fx-activity
    event: fx.activity
    match: { method: POST, path_prefix: /api/fx }
    fields: { reference: /id }
    max_body_bytes: 1024
"#;
    let gw = start("fx", provider.addr, &triggers(&[FX_TRIGGER, small]));
    // The quote body (about 2.2 KB) is over fx-activity's 1 KB but under fx-quote-created's 64 KB.
    assert_eq!(quote(&gw, "limits-1").status, 201);
    gw.wait_for_log(|l| is_business(l, "limits-1"));
    gw.wait_for_log(|l| is_warning(l) && l["request_id"] == "limits-1");
    wait_metric(&gw, "payedge_fx_quotes_total", &[("tenant", "blue")], 1.0);
    assert_eq!(trigger_errors(&gw, "fx-activity", "too_large"), Some(1.0));
    assert_eq!(
        trigger_errors(&gw, "fx-quote-created", "too_large"),
        Some(0.0)
    );
    let lines = business_lines(&gw, "limits-1");
    assert_eq!(lines.len(), 1, "{lines:#?}");
    assert_eq!(lines[0]["properties"]["EventType"], "fx.quote.created");
    let warned = warnings(&gw);
    assert_eq!(warned.len(), 1, "{warned:#?}");
    assert_eq!(warned[0]["trigger"], "fx-activity");
    assert_eq!(warned[0]["reason"], "too_large");
}
