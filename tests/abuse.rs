//! Hostile request heads through the real binary: a body length stated twice (the request
//! smuggling shapes) is refused with 400 and the connection closed before anything after it is
//! read; heads beyond `server.limits` get 431; limits reload; `check` refuses limits out of range,
//! alias bombs and enormous files quickly.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::Duration;

use common::process::{binary, series_value};
use common::*;

/// Sends `raw` on one connection and reads until payedge closes it (5 s at most).
fn exchange(addr: SocketAddr, raw: &[u8]) -> (String, bool) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream.write_all(raw).unwrap();
    let mut out = Vec::new();
    let closed = stream.read_to_end(&mut out).is_ok();
    (String::from_utf8_lossy(&out).into_owned(), closed)
}

fn head(extra: &str) -> String {
    format!(
        "POST /api/pay HTTP/1.1\r\nHost: x\r\nX-Tenant: blue\r\nAuthorization: {}\r\n{extra}",
        bearer("blue")
    )
}

fn code_of(answer: &str) -> String {
    let body = answer.split("\r\n\r\n").nth(1).unwrap_or("");
    let json: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
    json["error"]["code"].as_str().unwrap_or("").to_string()
}

fn status_of(answer: &str) -> &str {
    answer.split(' ').nth(1).unwrap_or("")
}

#[test]
fn a_body_length_stated_twice_is_refused_and_nothing_after_it_is_read() {
    let provider = MockUpstream::start("p");
    let gw = Payedge::start(&config_for(&[("p".into(), provider.addr)], ""), &env());
    let smuggled = "GET /api/pay HTTP/1.1\r\nHost: x\r\nX-Tenant: blue\r\n\r\n";

    // Content-Length and Transfer-Encoding: Pingora alone would drop the length and read the
    // chunks; payedge refuses the request whole.
    let raw = format!(
        "{}Content-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n{smuggled}",
        head("")
    );
    let (answer, closed) = exchange(gw.proxy, raw.as_bytes());
    assert_eq!(status_of(&answer), "400", "{answer}");
    assert_eq!(code_of(&answer), "ambiguous_body_length");
    assert_eq!(answer.matches("HTTP/1.1 ").count(), 1, "{answer}");
    assert!(closed, "the connection is closed after the refusal");

    // Content-Length twice, equal or not (different values never get past Pingora's parser,
    // which answers 400 without a body; equal ones are payedge's refusal).
    for (a, b) in [(3, 3), (3, 4)] {
        let raw = format!(
            "{}Content-Length: {a}\r\nContent-Length: {b}\r\n\r\nabcd{smuggled}",
            head("")
        );
        let (answer, closed) = exchange(gw.proxy, raw.as_bytes());
        assert_eq!(status_of(&answer), "400", "{a},{b}: {answer}");
        if a == b {
            assert_eq!(code_of(&answer), "ambiguous_body_length");
        }
        assert_eq!(answer.matches("HTTP/1.1 ").count(), 1, "{answer}");
        assert!(closed);
    }
    // Twice in one line, as a list (Pingora's parser merges equal values): the same refusal.
    let raw = format!("{}Content-Length: 3, 3\r\n\r\nabc{smuggled}", head(""));
    let (answer, closed) = exchange(gw.proxy, raw.as_bytes());
    assert_eq!(code_of(&answer), "ambiguous_body_length", "{answer}");
    assert!(closed);
    assert_eq!(
        provider.count(),
        0,
        "no refused request reached the provider"
    );

    // One framing, either kind: proxied.
    let chunked = format!(
        "{}Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        head("")
    );
    let (answer, _) = exchange(gw.proxy, chunked.as_bytes());
    assert_eq!(status_of(&answer), "200", "{answer}");
    let sized = format!(
        "{}Content-Length: 3\r\nConnection: close\r\n\r\nabc",
        head("")
    );
    let (answer, _) = exchange(gw.proxy, sized.as_bytes());
    assert_eq!(status_of(&answer), "200", "{answer}");
    assert_eq!(provider.count(), 2);
    assert!(provider.received().iter().all(|r| r.body == b"abc"));
    gw.wait_for_series(
        r#"payedge_http_errors_total{code="ambiguous_body_length"}"#,
        |v| v == 3.0,
    );
}

#[test]
fn heads_beyond_the_configured_limits_get_431_and_the_limits_reload() {
    let provider = MockUpstream::start("p");
    let yaml = |bytes: usize, count: usize| {
        config_for(&[("p".into(), provider.addr)], "").replacen(
            "server:\n",
            &format!("server:\n  limits: {{max_header_bytes: {bytes}, max_headers: {count}}}\n"),
            1,
        )
    };
    let gw = Payedge::start(&yaml(4096, 20), &env());
    let many: String = (0..25).map(|i| format!("X-H{i}: v\r\n")).collect();
    let big = format!("X-Big: {}\r\n", "a".repeat(5000));
    let ask = |extra: &str| {
        exchange(
            gw.proxy,
            format!(
                "{}{extra}Connection: close\r\n\r\n",
                head("Content-Length: 0\r\n")
            )
            .as_bytes(),
        )
        .0
    };

    let answer = ask(&many);
    assert_eq!(status_of(&answer), "431", "{answer}");
    assert_eq!(code_of(&answer), "too_many_headers");
    let answer = ask(&big);
    assert_eq!(status_of(&answer), "431", "{answer}");
    assert_eq!(code_of(&answer), "request_header_too_large");
    let answer = ask("X-Small: v\r\n");
    assert_eq!(status_of(&answer), "200", "{answer}");
    assert_eq!(provider.count(), 1);

    // Raised by a reload: the same heads pass.
    let resp = gw.reload_with(&yaml(16384, 60));
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(status_of(&ask(&many)), "200");
    assert_eq!(status_of(&ask(&big)), "200");
    assert_eq!(provider.count(), 3);
    let metrics = gw.metrics();
    assert_eq!(
        series_value(
            &metrics,
            r#"payedge_http_errors_total{code="too_many_headers"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        series_value(
            &metrics,
            r#"payedge_http_errors_total{code="request_header_too_large"}"#
        ),
        Some(1.0)
    );
}

fn check(path: &std::path::Path) -> (i32, String) {
    let out = Command::new(binary())
        .args(["check", "-c"])
        .arg(path)
        .env("TEST_JWT_SECRET", "x".repeat(32))
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout),
    )
}

#[test]
fn check_refuses_limits_out_of_range_alias_bombs_and_enormous_files() {
    let dir = tempfile::tempdir().unwrap();
    let provider: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let base = config_for(&[("p".into(), provider)], "");

    let path = dir.path().join("limits.yaml");
    std::fs::write(
        &path,
        base.replacen(
            "server:\n",
            "server:\n  limits: {max_header_bytes: 100, max_headers: 300, max_body_bytes: 100}\n",
            1,
        ),
    )
    .unwrap();
    let (code, out) = check(&path);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("server.limits.max_header_bytes"), "{out}");
    assert!(out.contains("server.limits.max_headers"), "{out}");
    assert!(
        out.contains("server.limits.max_body_bytes: must be between 1024 and 1099511627776"),
        "{out}"
    );

    // A billion laughs: ten aliases of ten aliases, eleven deep.
    let mut bomb = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
    for i in 1..12 {
        let refs = vec![format!("*a{}", i - 1); 10].join(", ");
        bomb.push_str(&format!("a{i}: &a{i} [{refs}]\n"));
    }
    let path = dir.path().join("bomb.yaml");
    std::fs::write(&path, bomb).unwrap();
    let (code, out) = check(&path);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("not valid YAML"), "{out}");

    // Past 4 MiB: refused before parsing.
    let path = dir.path().join("huge.yaml");
    let mut huge = base.clone();
    while huge.len() <= 4 * 1024 * 1024 {
        huge.push_str("# padding padding padding padding padding padding padding padding\n");
    }
    std::fs::write(&path, huge).unwrap();
    let (code, out) = check(&path);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("larger than 4 MiB"), "{out}");
}

/// Whether payedge closed `stream` without a word (a refused connection).
fn closed_unanswered(stream: &mut TcpStream) -> bool {
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let _ = stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    let mut buf = [0u8; 64];
    matches!(stream.read(&mut buf), Ok(0) | Err(_))
}

#[test]
fn one_client_address_holds_at_most_its_connections_on_the_proxy_and_the_admin_port() {
    let provider = MockUpstream::start("p");
    let yaml = |extra: &str| {
        config_for(&[("p".into(), provider.addr)], "").replacen(
            "server:\n",
            &format!("server:\n  limits: {{max_connections_per_client: 4}}\n{extra}"),
            1,
        )
    };
    let gw = Payedge::start(&yaml(""), &env());
    let mut refusals = Vec::new();
    for (port, listener) in [(gw.proxy, "proxy"), (gw.admin, "admin")] {
        // Four idle connections (a slow client, or hub sockets) are held...
        let held: Vec<TcpStream> = (0..4).map(|_| TcpStream::connect(port).unwrap()).collect();
        std::thread::sleep(Duration::from_millis(200));
        // ...the fifth from the same address is closed unanswered...
        let mut fifth = TcpStream::connect(port).unwrap();
        assert!(
            closed_unanswered(&mut fifth),
            "{listener}: a fifth connection"
        );
        // ...and closing one gives its place back.
        drop(held);
        let (answer, refused_meanwhile) = poll_until_answered(port);
        assert!(answer.starts_with("HTTP/1.1 "), "{listener}: {answer}");
        refusals.push(1.0 + f64::from(refused_meanwhile));
    }
    let metrics = gw.metrics();
    for (listener, refused) in ["proxy", "admin"].into_iter().zip(refusals) {
        assert_eq!(
            series_value(
                &metrics,
                &format!(
                    r#"payedge_connections_refused_total{{listener="{listener}",reason="per_client_limit"}}"#
                )
            ),
            Some(refused),
            "{listener}"
        );
    }

    // A trusted proxy carries many clients: not capped (the setting reloads).
    let resp = gw.reload_with(&yaml("  trusted_proxies: [127.0.0.1]\n"));
    assert_eq!(resp.status, 200, "{}", resp.text());
    let held: Vec<TcpStream> = (0..8)
        .map(|_| TcpStream::connect(gw.proxy).unwrap())
        .collect();
    let (answer, refused) = poll_until_answered(gw.proxy);
    assert!(answer.starts_with("HTTP/1.1 "), "{answer}");
    assert_eq!(refused, 0);
    drop(held);
}

/// A request on a new connection, until one is answered (the places of closed connections are
/// given back as payedge notices the close); also how many attempts were refused first.
fn poll_until_answered(addr: SocketAddr) -> (String, u32) {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let mut refused = 0;
    loop {
        let (answer, _) = exchange(
            addr,
            b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        );
        if !answer.is_empty() || std::time::Instant::now() > deadline {
            return (answer, refused);
        }
        refused += 1;
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Trickles a request head one byte every 100 ms for `bytes` bytes; whether payedge closed the
/// connection before the head was complete.
fn trickle_is_cut(addr: SocketAddr, bytes: usize) -> bool {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.write_all(b"GET /healthz HTTP/1.1\r\n").unwrap();
    stream
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut buf = [0u8; 256];
    for _ in 0..bytes {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => return false, // answered before the head was complete: not expected either
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => {} // still open, nothing to read
        }
        if stream.write_all(b"X").is_err() {
            return true;
        }
    }
    false
}

/// payedge in front of `provider` with a first-head deadline of 500 ms.
fn with_head_deadline_500ms(provider: &MockUpstream) -> Payedge {
    Payedge::start(
        &config_for(&[("p".into(), provider.addr)], "").replacen(
            "server:\n",
            "server:\n  limits: {request_head_timeout_ms: 500}\n",
            1,
        ),
        &env(),
    )
}

#[test]
fn a_client_trickling_its_first_head_is_cut_at_the_deadline_others_are_served() {
    let provider = MockUpstream::start("p");
    let gw = with_head_deadline_500ms(&provider);
    // 30 bytes over 3 s: six times the deadline.
    for (addr, listener) in [(gw.proxy, "proxy"), (gw.admin, "admin")] {
        assert!(
            trickle_is_cut(addr, 30),
            "{listener}: the trickling client was not cut"
        );
    }

    // A kept-alive connection idle longer than the deadline between requests is not cut: the
    // deadline is for the first head.
    let mut stream = TcpStream::connect(gw.proxy).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let ask = format!(
        "GET /api/pay HTTP/1.1\r\nHost: x\r\nX-Tenant: blue\r\nAuthorization: {}\r\n\r\n",
        bearer("blue")
    );
    for _ in 0..2 {
        stream.write_all(ask.as_bytes()).unwrap();
        let mut buf = [0u8; 4096];
        let n = stream.read(&mut buf).unwrap();
        assert!(
            String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"),
            "{}",
            String::from_utf8_lossy(&buf[..n])
        );
        std::thread::sleep(Duration::from_millis(800));
    }
    assert_eq!(provider.count(), 2);

    let metrics = gw.metrics();
    for listener in ["proxy", "admin"] {
        assert_eq!(
            series_value(
                &metrics,
                &format!(r#"payedge_request_head_timeouts_total{{listener="{listener}"}}"#)
            ),
            Some(1.0),
            "{listener}"
        );
    }
}

/// Whether payedge closes a connection on which `sent` is all that ever comes, within `within`
/// (whatever it writes first: an HTTP/2 server sends its SETTINGS).
fn closed_within(addr: SocketAddr, sent: &[u8], within: Duration) -> bool {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.write_all(sent).unwrap();
    stream.set_read_timeout(Some(within)).unwrap();
    let mut buf = [0u8; 256];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) => return e.kind() == std::io::ErrorKind::ConnectionReset,
        }
    }
}

/// Pingora looks for the HTTP/2 preface (24 bytes) before anything reads a cleartext
/// connection; that wait used to have no deadline and to need all 24 bytes.
#[test]
fn fewer_bytes_than_the_h2_preface_are_cut_at_the_deadline_or_answered_when_whole() {
    let provider = MockUpstream::start("p");
    let gw = with_head_deadline_500ms(&provider);
    let within = Duration::from_secs(3);
    // Nothing; a few bytes; the HTTP/2 preface up to and past its blank line; the whole preface
    // without the SETTINGS that must follow it.
    let preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    for sent in [&b""[..], b"GET", &preface[..16], &preface[..20], preface] {
        assert!(
            closed_within(gw.proxy, sent, within),
            "proxy: a connection that sent {sent:?} and nothing more was not cut"
        );
    }
    for sent in [&b""[..], b"GET"] {
        assert!(
            closed_within(gw.admin, sent, within),
            "admin: a connection that sent {sent:?} and nothing more was not cut"
        );
    }

    // A whole request in 18 bytes, as `nc` or HAProxy's default health check send one: answered
    // at once, also when the client closes its side right after.
    let short = b"GET / HTTP/1.0\r\n\r\n";
    let (answer, closed) = exchange(gw.proxy, short);
    assert!(closed, "{answer}");
    assert_eq!(status_of(&answer), "400", "{answer}");
    assert_eq!(code_of(&answer), "tenant_unresolved", "{answer}");
    let mut stream = TcpStream::connect(gw.proxy).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream.write_all(short).unwrap();
    stream.shutdown(std::net::Shutdown::Write).unwrap();
    let mut out = String::new();
    stream.read_to_string(&mut out).unwrap();
    assert_eq!(code_of(&out), "tenant_unresolved", "{out}");
    // Still HTTP/2 for a client that opens with the preface.
    let h2c = std::process::Command::new("curl")
        .args(["-s", "--http2-prior-knowledge", "-o", "/dev/null", "-w"])
        .arg("%{http_version} %{http_code}")
        .args(["-H", "X-Tenant: blue", "-H"])
        .arg(format!("Authorization: {}", bearer("blue")))
        .arg(format!("http://{}/api/pay", gw.proxy))
        .output()
        .expect("curl is needed for the h2c check");
    assert_eq!(String::from_utf8_lossy(&h2c.stdout), "2 200");

    let metrics = gw.metrics();
    // Counted: the five above, and none of the short requests.
    for (listener, cut) in [("proxy", 5.0), ("admin", 2.0)] {
        assert_eq!(
            series_value(
                &metrics,
                &format!(r#"payedge_request_head_timeouts_total{{listener="{listener}"}}"#)
            ),
            Some(cut),
            "{listener}"
        );
    }
}

/// HTTP/1.0 closes after each answer unless the client asks for `Connection: keep-alive`; a
/// client reading to the end of the stream must not wait for a keep-alive timeout.
#[test]
fn http_1_0_is_answered_and_closed_on_both_ports_unless_kept_alive() {
    let provider = MockUpstream::start("p");
    let gw = Payedge::start(&config_for(&[("p".into(), provider.addr)], ""), &env());
    let proxied = format!(
        "GET /api/pay HTTP/1.0\r\nX-Tenant: blue\r\nAuthorization: {}\r\n\r\n",
        bearer("blue")
    );
    for (addr, request) in [
        (gw.proxy, proxied.as_bytes()),
        (gw.admin, &b"GET /healthz HTTP/1.0\r\n\r\n"[..]),
    ] {
        let (answer, closed) = exchange(addr, request);
        assert_eq!(status_of(&answer), "200", "{answer}");
        assert!(closed, "{addr}: still open after the answer: {answer}");
    }
    // The HTTP/1.0 request came without Host; the provider's (HTTP/1.1) request has one: the
    // provider's own authority.
    assert_eq!(
        provider.last().header("host"),
        Some(provider.addr.to_string().as_str())
    );
    // Asked for, the admin port keeps the connection.
    let mut stream = TcpStream::connect(gw.admin).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    for _ in 0..2 {
        stream
            .write_all(b"GET /healthz HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            .unwrap();
        let mut buf = [0u8; 1024];
        let n = stream.read(&mut buf).unwrap();
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"), "{:?}", &buf[..n]);
    }
}

/// RFC 9112 §3.2: an HTTP/1.1 request without Host is answered 400, and nothing reaches a
/// provider (whose HTTP/1.1 request would have no Host either).
#[test]
fn an_http_1_1_request_without_host_is_refused_before_any_provider() {
    let provider = MockUpstream::start("p");
    let gw = Payedge::start(&config_for(&[("p".into(), provider.addr)], ""), &env());
    let without = format!(
        "GET /api/pay HTTP/1.1\r\nX-Tenant: blue\r\nAuthorization: {}\r\nConnection: close\r\n\r\n",
        bearer("blue")
    );
    let (answer, closed) = exchange(gw.proxy, without.as_bytes());
    assert!(closed, "{answer}");
    assert_eq!(status_of(&answer), "400", "{answer}");
    assert_eq!(code_of(&answer), "host_missing", "{answer}");
    assert_eq!(provider.count(), 0);
    let with = without.replace("HTTP/1.1\r\n", "HTTP/1.1\r\nHost: edge\r\n");
    let (answer, _) = exchange(gw.proxy, with.as_bytes());
    assert_eq!(status_of(&answer), "200", "{answer}");
    assert_eq!(provider.count(), 1);
    assert_eq!(
        gw.series(r#"payedge_http_errors_total{code="host_missing"}"#),
        Some(1.0)
    );
}

/// A tenant header or an Authorization sent twice is a list, not a tenant or a credential:
/// whichever line a hop would read, the request is refused before any provider.
#[test]
fn a_tenant_header_or_authorization_sent_twice_is_refused() {
    let provider = MockUpstream::start("p");
    let gw = Payedge::start(&config_for(&[("p".into(), provider.addr)], ""), &env());
    let auth = format!("Authorization: {}\r\n", bearer("blue"));
    for (lines, status, code) in [
        (
            format!("X-Tenant: blue\r\nX-Tenant: green\r\n{auth}"),
            "400",
            "tenant_invalid",
        ),
        (
            format!("X-Tenant: blue\r\nX-Tenant: blue\r\n{auth}"),
            "400",
            "tenant_invalid",
        ),
        (
            format!("X-Tenant: blue\r\n{auth}{auth}"),
            "401",
            "unauthorized",
        ),
    ] {
        let request =
            format!("GET /api/pay HTTP/1.1\r\nHost: edge\r\n{lines}Connection: close\r\n\r\n");
        let (answer, _) = exchange(gw.proxy, request.as_bytes());
        assert_eq!(status_of(&answer), status, "{lines}: {answer}");
        assert_eq!(code_of(&answer), code, "{lines}: {answer}");
    }
    assert_eq!(provider.count(), 0);
    let once = format!(
        "GET /api/pay HTTP/1.1\r\nHost: edge\r\nX-Tenant: blue\r\n{auth}Connection: close\r\n\r\n"
    );
    assert_eq!(status_of(&exchange(gw.proxy, once.as_bytes()).0), "200");
}

/// The admin port reads its own requests (it is not Pingora's proxy): a head HTTP cannot parse
/// is answered 400 `bad_request` and closed (it was closed unanswered); an alert whose chunked
/// body is malformed is refused and its connection closed, so nothing after it is read as a
/// request; and an operator's client waiting for `100 Continue` is told to send its body.
#[test]
fn the_admin_port_answers_unreadable_requests_closes_broken_bodies_and_continues_expectations() {
    let provider = MockUpstream::start("p");
    let gw = Payedge::start(&config_for(&[("p".into(), provider.addr)], ""), &env());
    let (answer, closed) = exchange(
        gw.admin,
        b"GET /healthz HTTP/1.1\r\nHost: a\r\nBad Header\r\n\r\n",
    );
    assert_eq!(status_of(&answer), "400", "{answer}");
    assert_eq!(code_of(&answer), "bad_request", "{answer}");
    assert!(closed, "{answer}");

    let alert = |framing: &str| {
        format!(
            "POST /admin/alerts HTTP/1.1\r\nHost: a\r\nAuthorization: {}\r\n\
             Content-Type: application/json\r\n{framing}\r\n\r\n",
            admin_bearer()
        )
    };
    // A malformed chunk, then a request that would be answered if it were read as one.
    let (answer, closed) = then_on_the_same_connection(
        gw.admin,
        (alert("Transfer-Encoding: chunked") + "zz\r\n").as_bytes(),
        b"GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n",
    );
    assert_eq!(status_of(&answer), "400", "{answer}");
    assert_eq!(answer.matches("HTTP/1.1 ").count(), 1, "{answer}");
    assert!(closed, "{answer}");

    // Expect: 100-continue: the interim answer comes before the body is sent.
    let body = r#"{"code":"disk_full","message":"checked by hand"}"#;
    let request = alert(&format!(
        "Content-Length: {}\r\nExpect: 100-continue\r\nConnection: close",
        body.len()
    ));
    let (interim, answer) = exchange_expecting_continue(gw.admin, &request, body.as_bytes());
    assert!(interim.starts_with("HTTP/1.1 100 "), "{interim:?}");
    assert_eq!(status_of(&answer), "202", "{answer}");
}

/// A request body beyond `server.limits.max_body_bytes`: refused 413 `request_body_too_large`
/// whether its `Content-Length` states it (before anything is sent) or its chunks add up to it
/// (counted as they arrive), on a keyed route too; its connection is closed. A body at the limit
/// is proxied.
#[test]
fn a_body_beyond_the_limit_is_refused_whether_stated_or_chunked() {
    let provider = MockUpstream::start("p");
    let yaml = config_for(&[("p".into(), provider.addr)], "")
        .replace(
            "  grace_period_seconds: 5\n",
            "  grace_period_seconds: 5\n  limits: { max_body_bytes: 2048 }\n",
        )
        .replace(
            "  - path_prefix: /api\n    pool: main\n",
            "  - path_prefix: /api/keyed\n    pool: main\n    idempotency: { required: true }\n  - path_prefix: /api\n    pool: main\n",
        );
    assert!(
        yaml.contains("max_body_bytes: 2048") && yaml.contains("/api/keyed"),
        "{yaml}"
    );
    let gw = Payedge::start(&yaml, &env());
    let refused = |answer: &str, closed: bool| {
        assert_eq!(status_of(answer), "413", "{answer}");
        assert_eq!(code_of(answer), "request_body_too_large", "{answer}");
        assert!(closed, "{answer}");
    };

    // Stated: refused before any provider is asked.
    let stated = format!("{}Content-Length: 2049\r\n\r\n", head(""));
    let (answer, closed) = exchange(gw.proxy, stated.as_bytes());
    refused(&answer, closed);
    assert_eq!(provider.count(), 0);

    // Chunked, 3 x 1000 bytes: refused once the chunks pass the limit; the provider never gets a
    // whole request.
    let chunk = format!("3e8\r\n{}\r\n", "x".repeat(1000));
    let chunked = format!(
        "{}Transfer-Encoding: chunked\r\n\r\n{chunk}{chunk}{chunk}0\r\n\r\n",
        head("")
    );
    let (answer, closed) = exchange(gw.proxy, chunked.as_bytes());
    refused(&answer, closed);

    // Keyed and chunked: the body is read before any provider is asked.
    let keyed = format!(
        "POST /api/keyed HTTP/1.1\r\nHost: x\r\nX-Tenant: blue\r\nAuthorization: {}\r\n\
         Idempotency-Key: big-1\r\nTransfer-Encoding: chunked\r\n\r\n{chunk}{chunk}{chunk}0\r\n\r\n",
        bearer("blue")
    );
    let (answer, closed) = exchange(gw.proxy, keyed.as_bytes());
    refused(&answer, closed);
    assert_eq!(provider.count(), 0, "no whole request reached the provider");
    // Refused before the key was taken: the key is free for a payment within the limit.
    let within = format!(
        "POST /api/keyed HTTP/1.1\r\nHost: x\r\nX-Tenant: blue\r\nAuthorization: {}\r\n\
         Idempotency-Key: big-1\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}",
        bearer("blue")
    );
    let (answer, _) = exchange(gw.proxy, within.as_bytes());
    assert_eq!(status_of(&answer), "200", "{answer}");

    // At the limit, either framing: proxied.
    let body = "y".repeat(2048);
    let sized = format!(
        "{}Content-Length: 2048\r\nConnection: close\r\n\r\n{body}",
        head("")
    );
    let (answer, _) = exchange(gw.proxy, sized.as_bytes());
    assert_eq!(status_of(&answer), "200", "{answer}");
    let chunked = format!(
        "{}Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n800\r\n{body}\r\n0\r\n\r\n",
        head("")
    );
    let (answer, _) = exchange(gw.proxy, chunked.as_bytes());
    assert_eq!(status_of(&answer), "200", "{answer}");
    assert_eq!(provider.count(), 3);
    gw.wait_for_series(
        r#"payedge_http_errors_total{code="request_body_too_large"}"#,
        |v| v == 3.0,
    );

    // Raised by a reload: the stated body that was refused is proxied.
    let resp = gw.reload_with(&yaml.replace("max_body_bytes: 2048", "max_body_bytes: 4096"));
    assert_eq!(resp.status, 200, "{}", resp.text());
    let stated = format!(
        "{}Content-Length: 2049\r\nConnection: close\r\n\r\n{}",
        head(""),
        "z".repeat(2049)
    );
    let (answer, _) = exchange(gw.proxy, stated.as_bytes());
    assert_eq!(status_of(&answer), "200", "{answer}");
}
