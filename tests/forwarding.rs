//! Whose word about the client's address payedge believes: `server.trusted_proxies` for
//! X-Forwarded-For / Forwarded, and `server.proxy_protocol` (PROXY v1 and v2 headers, on plain and
//! TLS listeners) from those addresses only. Loopback has many addresses: the tests connect from
//! 127.0.0.1 (the trusted balancer) and from 127.0.0.2 (anyone else).

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::pki::{Pki, curl};
use common::*;
use payedge::tls::Validity;

const HARNESS_SERVER: &str = "server:\n  grace_period_seconds: 5\n";

fn with_server(upstream: &MockUpstream, server_extra: &str) -> String {
    let yaml = config(&[upstream]);
    assert!(
        yaml.contains(HARNESS_SERVER),
        "the harness changed:\n{yaml}"
    );
    yaml.replace(HARNESS_SERVER, &format!("{HARNESS_SERVER}{server_extra}"))
}

fn log_line(gw: &Payedge, request_id: &str) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(line) = gw
            .logs()
            .into_iter()
            .find(|l| l["request_id"] == request_id && l["message"] == "request")
        {
            return line;
        }
        assert!(Instant::now() < deadline, "no log line for {request_id}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn metric(gw: &Payedge, name: &str, label: (&str, &str)) -> f64 {
    let wanted = format!("{name}{{{}=\"{}\"}}", label.0, label.1);
    get(gw.admin, "/metrics", &[])
        .text()
        .lines()
        .find_map(|l| l.strip_prefix(&wanted))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

fn wait_metric(gw: &Payedge, name: &str, label: (&str, &str), at_least: f64) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let value = metric(gw, name, label);
        if value >= at_least || Instant::now() > deadline {
            return value;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// GET /api/pay for tenant blue through curl from `source`, with `headers`.
fn curl_from(proxy: SocketAddr, source: &str, headers: &[&str], extra: &[&str]) -> u16 {
    let auth = format!("Authorization: {}", bearer("blue"));
    let url = format!("http://{proxy}/api/pay");
    let mut args = vec!["--interface", source, "-H", "X-Tenant: blue", "-H", &auth];
    for h in headers {
        args.extend(["-H", h]);
    }
    args.extend_from_slice(extra);
    args.push(&url);
    curl(&args).status
}

#[test]
fn an_untrusted_peer_cannot_choose_its_address() {
    let upstream = MockUpstream::start("p0");
    let gw = Payedge::start(
        &with_server(&upstream, "  trusted_proxies: [127.0.0.1/32]\n"),
        &env(),
    );
    let status = curl_from(
        gw.proxy,
        "127.0.0.2",
        &[
            "X-Forwarded-For: 1.2.3.4",
            "Forwarded: for=1.2.3.4",
            "X-Real-IP: 1.2.3.4",
            "X-Forwarded-Proto: https",
            "X-Forwarded-Host: bank.example",
            "X-Forwarded-Port: 443",
            "X-Request-Id: untrusted-1",
        ],
        &[],
    );
    assert_eq!(status, 200);
    let seen = upstream.last();
    assert_eq!(seen.headers_named("x-forwarded-for"), vec!["127.0.0.2"]);
    assert!(seen.headers_named("forwarded").is_empty());
    assert!(seen.headers_named("x-real-ip").is_empty());
    // The scheme is payedge's own word: plain HTTP here.
    assert_eq!(seen.headers_named("x-forwarded-proto"), vec!["http"]);
    assert!(seen.headers_named("x-forwarded-host").is_empty());
    assert!(seen.headers_named("x-forwarded-port").is_empty());
    assert_eq!(log_line(&gw, "untrusted-1")["client"], "127.0.0.2");
}

#[test]
fn a_trusted_proxy_keeps_the_client_it_forwards() {
    let upstream = MockUpstream::start("p0");
    let gw = Payedge::start(
        &with_server(&upstream, "  trusted_proxies: [127.0.0.1/32, 10.0.0.0/8]\n"),
        &env(),
    );
    let status = curl_from(
        gw.proxy,
        "127.0.0.1",
        &[
            "X-Forwarded-For: 198.51.100.4, 10.1.2.3",
            "Forwarded: for=198.51.100.4",
            "X-Forwarded-Proto: https",
            "X-Request-Id: trusted-1",
        ],
        &[],
    );
    assert_eq!(status, 200);
    let seen = upstream.last();
    // The balancer terminated TLS: its word on the scheme stands.
    assert_eq!(seen.headers_named("x-forwarded-proto"), vec!["https"]);
    assert_eq!(
        seen.headers_named("x-forwarded-for"),
        vec!["198.51.100.4, 10.1.2.3, 127.0.0.1"]
    );
    assert_eq!(seen.headers_named("forwarded"), vec!["for=198.51.100.4"]);
    // The client is the last address no trusted proxy stands for.
    assert_eq!(log_line(&gw, "trusted-1")["client"], "198.51.100.4");
}

/// Sends `header` and a GET /api/pay for blue over a plain connection from 127.0.0.1; returns
/// the status, or `None` when the connection was closed without an answer.
fn raw_request(proxy: SocketAddr, header: &[u8], request_id: &str) -> Option<u16> {
    let mut socket = TcpStream::connect(proxy).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let request = format!(
        "GET /api/pay HTTP/1.1\r\nHost: gw\r\nX-Tenant: blue\r\nAuthorization: {}\r\nX-Request-Id: {request_id}\r\nConnection: close\r\n\r\n",
        bearer("blue")
    );
    let mut bytes = header.to_vec();
    bytes.extend_from_slice(request.as_bytes());
    // Split the header across writes, as a slow balancer might.
    let (first, rest) = bytes.split_at(header.len().min(7));
    socket.write_all(first).ok()?;
    std::thread::sleep(Duration::from_millis(20));
    socket.write_all(rest).ok()?;
    let mut answer = Vec::new();
    let _ = socket.read_to_end(&mut answer);
    let text = String::from_utf8_lossy(&answer);
    text.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
}

fn proxy_v2(client: [u8; 4], port: u16) -> Vec<u8> {
    let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    h.extend([0x21, 0x11, 0, 12]);
    h.extend(client);
    h.extend([127, 0, 0, 1]);
    h.extend(port.to_be_bytes());
    h.extend(80u16.to_be_bytes());
    h
}

#[test]
fn proxy_protocol_from_a_trusted_balancer_sets_the_client_address() {
    let upstream = MockUpstream::start("p0");
    let gw = Payedge::start(
        &with_server(
            &upstream,
            "  trusted_proxies: [127.0.0.1/32]\n  proxy_protocol: true\n",
        ),
        &env(),
    );
    let v1 = b"PROXY TCP4 203.0.113.7 127.0.0.1 5555 80\r\n";
    assert_eq!(raw_request(gw.proxy, v1, "pp-v1"), Some(200));
    assert_eq!(
        upstream.last().headers_named("x-forwarded-for"),
        vec!["203.0.113.7"]
    );
    assert_eq!(log_line(&gw, "pp-v1")["client"], "203.0.113.7");

    assert_eq!(
        raw_request(gw.proxy, &proxy_v2([192, 0, 2, 44], 4000), "pp-v2"),
        Some(200)
    );
    assert_eq!(
        upstream.last().headers_named("x-forwarded-for"),
        vec!["192.0.2.44"]
    );

    // LOCAL and UNKNOWN (the balancer's own checks) name no client: the client is unknown, and
    // what the connection claims is not believed either.
    let local = b"\r\n\r\n\0\r\nQUIT\n\x20\x00\x00\x00";
    assert_eq!(raw_request(gw.proxy, local, "pp-local"), Some(200));
    assert_eq!(
        upstream.last().headers_named("x-forwarded-for"),
        vec!["0.0.0.0"]
    );
    assert_eq!(
        raw_request(gw.proxy, b"PROXY UNKNOWN\r\n", "pp-unknown"),
        Some(200)
    );
    assert_eq!(
        upstream.last().headers_named("x-forwarded-for"),
        vec!["0.0.0.0"]
    );
    assert_eq!(log_line(&gw, "pp-unknown")["client"], "0.0.0.0");

    // A trusted peer without a header, or with a broken one: closed, nothing forwarded.
    let before = upstream.count();
    assert_eq!(raw_request(gw.proxy, b"", "pp-none"), None);
    assert_eq!(
        raw_request(gw.proxy, b"PROXY TCP4 nonsense\r\n", "pp-bad"),
        None
    );
    assert_eq!(upstream.count(), before);
    assert_eq!(
        wait_metric(
            &gw,
            "payedge_proxy_protocol_refusals_total",
            ("reason", "bad_header"),
            2.0
        ),
        2.0
    );

    // Anyone else is refused, whatever header it sends.
    let status = curl_from(gw.proxy, "127.0.0.2", &[], &["--haproxy-protocol"]);
    assert_eq!(status, 0, "the connection is closed without an answer");
    assert_eq!(upstream.count(), before);
    assert_eq!(
        wait_metric(
            &gw,
            "payedge_proxy_protocol_refusals_total",
            ("reason", "untrusted_peer"),
            1.0
        ),
        1.0
    );
}

#[test]
fn proxy_protocol_comes_before_the_tls_handshake() {
    let upstream = MockUpstream::start("p0");
    let pki = Pki::new("edge");
    let blue = pki.server("blue", &["blue.smartpay.com"], Validity::days(30));
    let tls = free_addr();
    let server = format!(
        "  trusted_proxies: [127.0.0.1/32]\n  proxy_protocol: true\n  tls:\n    listen: {tls}\n    certificates:\n      - cert_file: {}\n        key_file: {}\n",
        blue.cert.display(),
        blue.key.display()
    );
    let _gw = Payedge::start(&with_server(&upstream, &server), &env());

    // A PROXY header, then TLS on the same connection (rustls as the client).
    let mut roots = rustls::RootCertStore::empty();
    for cert in payedge::tls::read_certificates(&pki.ca_file()).unwrap() {
        roots.add(cert).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(payedge::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("blue.smartpay.com").unwrap();
    let connection = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let mut socket = TcpStream::connect(tls).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    socket
        .write_all(b"PROXY TCP4 198.51.100.23 127.0.0.1 6000 443\r\n")
        .unwrap();
    let mut stream = rustls::StreamOwned::new(connection, socket);
    let request = format!(
        "GET /api/pay HTTP/1.1\r\nHost: blue.smartpay.com\r\nAuthorization: {}\r\nConnection: close\r\n\r\n",
        bearer("blue")
    );
    stream.write_all(request.as_bytes()).unwrap();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    let seen = upstream.last();
    assert_eq!(seen.headers_named("x-forwarded-for"), vec!["198.51.100.23"]);
    assert_eq!(seen.header("x-tenant"), Some("blue"));
    assert_eq!(seen.headers_named("x-forwarded-proto"), vec!["https"]);
}

#[test]
fn the_trusted_balancers_follow_a_reload() {
    let upstream = MockUpstream::start("p0");
    let yaml = |trusted: &str| {
        with_server(
            &upstream,
            &format!("  trusted_proxies: [{trusted}]\n  proxy_protocol: true\n"),
        )
    };
    let gw = Payedge::start(&yaml("127.0.0.2/32"), &env());
    let v1 = b"PROXY TCP4 203.0.113.9 127.0.0.1 5555 80\r\n";
    assert_eq!(
        raw_request(gw.proxy, v1, "before"),
        None,
        "127.0.0.1 is not trusted yet"
    );
    let resp = gw.reload_with(&yaml("127.0.0.1/32"));
    assert_eq!(resp.json()["result"], "applied", "{}", resp.text());
    assert_eq!(raw_request(gw.proxy, v1, "after"), Some(200));
    assert_eq!(
        upstream.last().headers_named("x-forwarded-for"),
        vec!["203.0.113.9"]
    );
}

/// A target in absolute form reaches the provider in origin form: its path and query, not the
/// authority the client named.
#[test]
fn an_absolute_form_target_reaches_the_provider_as_its_path_and_query() {
    let upstream = MockUpstream::start("pay");
    let gw = Payedge::start(&config(&[&upstream]), &env());
    let mut socket = TcpStream::connect(gw.proxy).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let request = format!(
        "GET http://gw/api/pay?currency=EUR HTTP/1.1\r\nHost: gw\r\nX-Tenant: blue\r\n\
         Authorization: {}\r\nConnection: close\r\n\r\n",
        bearer("blue")
    );
    socket.write_all(request.as_bytes()).unwrap();
    let mut answer = Vec::new();
    let _ = socket.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let received = upstream.received();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].path, "/api/pay?currency=EUR");
    assert_eq!(received[0].header("host"), Some("gw"));
}
