//! Clients → payedge over TLS, with real TLS clients (curl, openssl s_client, the official
//! SignalR client in Node): the certificate chosen by SNI, each tenant's host reaching its
//! tenant, HTTP/2 by ALPN, 421 for a request naming another tenant than its connection, TLS 1.1
//! refused, client certificates required or optional, their subject passed to providers and
//! logged, the admin service and the hub over TLS, and the TLS metrics.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::hub::NodeClient;
use common::pki::{Pair, Pki, curl, s_client, served_subject};
use common::*;
use payedge::tls::Validity;

const HARNESS_SERVER: &str = "server:\n  grace_period_seconds: 5\n";

/// Tenant certificates: `api.smartpay.com` (listed first: the default), a wildcard for every
/// tenant host, and blue's own.
struct Certs {
    pki: Pki,
    default: Pair,
    wildcard: Pair,
    blue: Pair,
}

fn certs() -> Certs {
    let pki = Pki::new("edge");
    Certs {
        default: pki.server(
            "api",
            &["api.smartpay.com", "smartpay.com"],
            Validity::days(30),
        ),
        wildcard: pki.server("wildcard", &["*.smartpay.com"], Validity::days(30)),
        blue: pki.server("blue", &["blue.smartpay.com"], Validity::days(30)),
        pki,
    }
}

fn certificate_entries(pairs: &[&Pair]) -> String {
    pairs
        .iter()
        .map(|p| {
            format!(
                "      - cert_file: {}\n        key_file: {}\n",
                p.cert.display(),
                p.key.display()
            )
        })
        .collect()
}

/// The harness configuration with `server.tls` on `tls` serving `pairs`, plus `extra` YAML
/// under `server.tls` (indented by four spaces).
fn tls_config(upstream: &MockUpstream, tls: SocketAddr, pairs: &[&Pair], extra: &str) -> String {
    let yaml = config(&[upstream]);
    assert!(
        yaml.contains(HARNESS_SERVER),
        "the harness changed:\n{yaml}"
    );
    let server = format!(
        "server:\n  grace_period_seconds: 5\n  tls:\n    listen: {tls}\n    certificates:\n{}{extra}",
        certificate_entries(pairs)
    );
    yaml.replace(HARNESS_SERVER, &server)
}

fn resolve(host: &str, addr: SocketAddr) -> String {
    format!("{host}:{}:{}", addr.port(), addr.ip())
}

fn url(host: &str, addr: SocketAddr, path: &str) -> String {
    format!("https://{host}:{}{path}", addr.port())
}

/// curl over TLS to `host` (resolved to `addr`), trusting `ca`.
fn https(ca: &Pki, host: &str, addr: SocketAddr, path: &str, extra: &[&str]) -> common::pki::Curl {
    let ca_file = ca.ca_file();
    let resolve = resolve(host, addr);
    let url = url(host, addr, path);
    let mut args = vec![
        "--cacert",
        ca_file.to_str().unwrap(),
        "--resolve",
        resolve.as_str(),
        url.as_str(),
    ];
    args.extend_from_slice(extra);
    curl(&args)
}

fn metric(gw: &Payedge, name: &str, labels: &[(&str, &str)]) -> f64 {
    let text = get(gw.admin, "/metrics", &[]).text();
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let rest = series.strip_prefix(name)?;
            labels
                .iter()
                .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")))
                .then(|| value.parse::<f64>().ok())?
        })
        .sum()
}

fn wait_for_metric(gw: &Payedge, name: &str, labels: &[(&str, &str)], at_least: f64) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let value = metric(gw, name, labels);
        if value >= at_least || Instant::now() > deadline {
            return value;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn each_server_name_gets_its_certificate_exact_then_wildcard_then_the_first() {
    let upstream = MockUpstream::start("p0");
    let c = certs();
    let tls = free_addr();
    let gw = Payedge::start(
        &tls_config(&upstream, tls, &[&c.default, &c.wildcard, &c.blue], ""),
        &env(),
    );
    let ca = c.pki.ca_file();
    let ca = ["-CAfile", ca.to_str().unwrap(), "-verify_return_error"];
    for (sni, expected) in [
        (Some("blue.smartpay.com"), "CN = blue.smartpay.com"),
        (Some("BLUE.smartpay.com"), "CN = blue.smartpay.com"),
        (Some("green.smartpay.com"), "CN = *.smartpay.com"),
        (Some("api.smartpay.com"), "CN = api.smartpay.com"),
        (Some("a.green.smartpay.com"), "CN = api.smartpay.com"),
        (Some("other.example"), "CN = api.smartpay.com"),
        (None, "CN = api.smartpay.com"),
    ] {
        let out = s_client(tls, sni, &ca);
        assert_eq!(served_subject(&out), expected, "SNI {sni:?}");
    }
    // The chain verifies for the names it was chosen for.
    let out = s_client(tls, Some("green.smartpay.com"), &ca);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("Verify return code: 0 (ok)"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // Each certificate's expiry is published, labelled by its first host.
    for label in ["api.smartpay.com", "*.smartpay.com", "blue.smartpay.com"] {
        assert!(
            metric(
                &gw,
                "payedge_tls_certificate_expiry_timestamp_seconds",
                &[("certificate", label)]
            ) > now() as f64 + 29.0 * 86_400.0,
            "{label}"
        );
    }
}

#[test]
fn each_tenant_host_reaches_its_tenant_over_http1_and_http2() {
    let upstream = MockUpstream::start("p0");
    let c = certs();
    let tls = free_addr();
    let _gw = Payedge::start(
        &tls_config(&upstream, tls, &[&c.default, &c.wildcard, &c.blue], ""),
        &env(),
    );
    for (tenant, http2) in [
        ("blue", false),
        ("green", false),
        ("blue", true),
        ("green", true),
    ] {
        let host = format!("{tenant}.smartpay.com");
        let auth = format!("Authorization: {}", bearer(tenant));
        let mut extra = vec!["-H", auth.as_str()];
        if http2 {
            extra.push("--http2");
        } else {
            extra.push("--http1.1");
        }
        let got = https(&c.pki, &host, tls, "/api/pay", &extra);
        assert_eq!(got.exit, 0, "{tenant} http2={http2}: {}", got.stderr);
        assert_eq!(got.status, 200, "{tenant}: {}", got.body);
        assert_eq!(got.http_version, if http2 { "2" } else { "1.1" }, "ALPN");
        assert_eq!(upstream.last().header("x-tenant"), Some(tenant));
    }
}

#[test]
fn a_request_naming_another_tenant_than_its_connection_gets_421() {
    let upstream = MockUpstream::start("p0");
    let c = certs();
    let tls = free_addr();
    let gw = Payedge::start(
        &tls_config(&upstream, tls, &[&c.default, &c.wildcard, &c.blue], ""),
        &env(),
    );
    let green_auth = format!("Authorization: {}", bearer("green"));
    for version in ["--http1.1", "--http2"] {
        // A connection opened for blue's host, a request for green's (Host / :authority).
        let got = https(
            &c.pki,
            "blue.smartpay.com",
            tls,
            "/api/pay",
            &[version, "-H", "Host: green.smartpay.com", "-H", &green_auth],
        );
        assert_eq!(got.status, 421, "{version}: {}", got.body);
        let error = &got.json()["error"];
        assert_eq!(error["code"], "misdirected_request");
        assert!(
            error["request_id"]
                .as_str()
                .is_some_and(|id| !id.is_empty())
        );
    }
    // Blue's host with green named by the header: the host decides, and it is blue's.
    let blue_auth = format!("Authorization: {}", bearer("blue"));
    let got = https(
        &c.pki,
        "blue.smartpay.com",
        tls,
        "/api/pay",
        &["-H", "X-Tenant: green", "-H", &blue_auth],
    );
    assert_eq!(got.status, 200, "{}", got.body);
    assert_eq!(upstream.last().header("x-tenant"), Some("blue"));
    assert_eq!(
        upstream.count(),
        1,
        "the misdirected requests reached no provider"
    );
    assert_eq!(
        metric(
            &gw,
            "payedge_tenant_rejections_total",
            &[("reason", "misdirected")]
        ),
        2.0
    );
    // A connection whose server name names no tenant (the base domain) carries any tenant.
    let got = https(
        &c.pki,
        "smartpay.com",
        tls,
        "/api/pay",
        &["-H", "X-Tenant: green", "-H", &green_auth],
    );
    assert_eq!(got.status, 200, "{}", got.body);
    assert_eq!(upstream.last().header("x-tenant"), Some("green"));
}

#[test]
fn tls_1_1_is_refused_and_counted() {
    let upstream = MockUpstream::start("p0");
    let c = certs();
    let tls = free_addr();
    let gw = Payedge::start(&tls_config(&upstream, tls, &[&c.blue], ""), &env());
    let got = https(
        &c.pki,
        "blue.smartpay.com",
        tls,
        "/api/pay",
        &[
            "--tlsv1.1",
            "--tls-max",
            "1.1",
            "--ciphers",
            "DEFAULT@SECLEVEL=0",
        ],
    );
    assert_eq!(got.exit, 35, "a TLS handshake failure: {got:?}");
    // payedge itself refused it (not the client's own policy).
    assert_eq!(
        wait_for_metric(
            &gw,
            "payedge_tls_handshake_failures_total",
            &[("reason", "protocol_version")],
            1.0
        ),
        1.0
    );
    // TLS 1.2 and 1.3 are served.
    for version in [
        ["--tlsv1.2", "--tls-max", "1.2"],
        ["--tlsv1.3", "--tls-max", "1.3"],
    ] {
        let auth = format!("Authorization: {}", bearer("blue"));
        let mut extra = version.to_vec();
        extra.extend(["-H", auth.as_str()]);
        let got = https(&c.pki, "blue.smartpay.com", tls, "/api/pay", &extra);
        assert_eq!(got.status, 200, "{version:?}: {got:?}");
    }
    // A client that does not trust the certificate aborts; payedge says why.
    let other = Pki::new("other");
    let got = https(&other, "blue.smartpay.com", tls, "/api/pay", &[]);
    assert_eq!(got.exit, 60, "{got:?}");
    assert_eq!(
        wait_for_metric(
            &gw,
            "payedge_tls_handshake_failures_total",
            &[("reason", "certificate_rejected_by_client")],
            1.0
        ),
        1.0
    );
    // Plain HTTP to the TLS port is not TLS.
    let got = curl(&[&format!("http://{tls}/api/pay")]);
    assert_ne!(got.status, 200);
    assert_eq!(
        wait_for_metric(
            &gw,
            "payedge_tls_handshake_failures_total",
            &[("reason", "not_tls")],
            1.0
        ),
        1.0
    );
    assert_eq!(upstream.count(), 2);
}

#[test]
fn a_silent_client_is_cut_at_the_handshake_timeout() {
    let upstream = MockUpstream::start("p0");
    let c = certs();
    let tls = free_addr();
    let gw = Payedge::start(
        &tls_config(
            &upstream,
            tls,
            &[&c.blue],
            "    handshake_timeout_ms: 300\n",
        ),
        &env(),
    );
    use std::io::{Read, Write};
    let mut socket = std::net::TcpStream::connect(tls).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    // One byte of a ClientHello, then nothing.
    socket.write_all(&[0x16]).unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 16];
    let n = socket.read(&mut buf).unwrap_or(0);
    assert_eq!(n, 0, "the connection is closed");
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(
        wait_for_metric(
            &gw,
            "payedge_tls_handshake_failures_total",
            &[("reason", "timeout")],
            1.0
        ),
        1.0
    );
    // A connection that leaves without a byte (a TCP health check) is no failure.
    drop(std::net::TcpStream::connect(tls).unwrap());
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(
        metric(
            &gw,
            "payedge_tls_handshake_failures_total",
            &[("reason", "closed")]
        ),
        0.0
    );
}

/// The harness configuration with client certificates from `clients` verified on the TLS
/// listener.
fn mtls_config(
    upstream: &MockUpstream,
    tls: SocketAddr,
    c: &Certs,
    clients: &Pki,
    required: bool,
) -> String {
    tls_config(
        upstream,
        tls,
        &[&c.blue],
        &format!(
            "    client_auth:\n      ca_file: {}\n      required: {required}\n",
            clients.ca_file().display()
        ),
    )
}

#[test]
fn a_required_client_certificate_is_verified_and_its_subject_passed_on() {
    let upstream = MockUpstream::start("p0");
    let c = certs();
    let clients = Pki::new("partners");
    let partner = clients.client("partner", "partner-a", "Acme Payments");
    let strangers = Pki::new("strangers");
    let stranger = strangers.client("stranger", "partner-a", "Acme Payments");
    let tls = free_addr();
    let gw = Payedge::start(&mtls_config(&upstream, tls, &c, &clients, true), &env());
    let auth = format!("Authorization: {}", bearer("blue"));

    // No certificate: the handshake fails (TLS 1.3 reports it on the first read).
    let got = https(&c.pki, "blue.smartpay.com", tls, "/api/pay", &["-H", &auth]);
    assert_ne!(got.exit, 0, "{got:?}");
    assert_eq!(got.status, 0);
    // A certificate from another CA.
    let (cert, key) = (
        stranger.cert.to_str().unwrap(),
        stranger.key.to_str().unwrap(),
    );
    let got = https(
        &c.pki,
        "blue.smartpay.com",
        tls,
        "/api/pay",
        &["--cert", cert, "--key", key, "-H", &auth],
    );
    assert_ne!(got.exit, 0, "{got:?}");
    assert_eq!(upstream.count(), 0, "nothing reached the provider");
    assert_eq!(
        wait_for_metric(
            &gw,
            "payedge_tls_handshake_failures_total",
            &[("reason", "no_client_certificate")],
            1.0
        ),
        1.0
    );
    assert_eq!(
        wait_for_metric(
            &gw,
            "payedge_tls_handshake_failures_total",
            &[("reason", "bad_client_certificate")],
            1.0
        ),
        1.0
    );

    // The partner's certificate: its subject goes to the provider, a forged one does not.
    let (cert, key) = (
        partner.cert.to_str().unwrap(),
        partner.key.to_str().unwrap(),
    );
    let got = https(
        &c.pki,
        "blue.smartpay.com",
        tls,
        "/api/pay",
        &[
            "--cert",
            cert,
            "--key",
            key,
            "-H",
            &auth,
            "-H",
            "X-Client-Cert-Subject: CN=someone-else",
            "-H",
            "X-Request-Id: mtls-1",
        ],
    );
    assert_eq!(got.status, 200, "{got:?}");
    let seen = upstream.last();
    assert_eq!(
        seen.headers_named("x-client-cert-subject"),
        vec!["O=Acme Payments,CN=partner-a"]
    );
    // And the request's log line names it.
    let deadline = Instant::now() + Duration::from_secs(5);
    let line = loop {
        let found = gw
            .logs()
            .into_iter()
            .find(|l| l["request_id"] == "mtls-1" && l["message"] == "request");
        if let Some(line) = found {
            break line;
        }
        assert!(Instant::now() < deadline, "no log line for the request");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(line["client_cert_subject"], "O=Acme Payments,CN=partner-a");
}

/// A kept-alive `openssl s_client` session: what is written goes over one TLS connection,
/// what the server answers collects in the background.
struct Session {
    child: std::process::Child,
    output: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Session {
    fn open(addr: SocketAddr, servername: &str, ca: &Pki, client: &Pair) -> Self {
        Self::open_as(addr, servername, ca, Some(client))
    }

    /// `client`: the certificate to present, if any.
    fn open_as(addr: SocketAddr, servername: &str, ca: &Pki, client: Option<&Pair>) -> Self {
        use std::io::Read;
        let mut command = std::process::Command::new("openssl");
        command
            .args(["s_client", "-quiet", "-connect", &addr.to_string()])
            .args(["-servername", servername, "-CAfile"])
            .arg(ca.ca_file());
        if let Some(client) = client {
            command
                .arg("-cert")
                .arg(&client.cert)
                .arg("-key")
                .arg(&client.key);
        }
        let mut child = command
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("openssl is needed for the TLS tests");
        let output = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let mut stdout = child.stdout.take().unwrap();
        let sink = output.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Session { child, output }
    }

    fn send(&mut self, request: &str) {
        use std::io::Write;
        let stdin = self.child.stdin.as_mut().unwrap();
        stdin.write_all(request.as_bytes()).unwrap();
        stdin.flush().unwrap();
    }

    /// Waits until the answers so far contain `needle` `times` times; returns them all.
    fn wait_for(&self, needle: &str, times: usize) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let text = self.output.lock().unwrap().clone();
            if text.matches(needle).count() >= times || Instant::now() > deadline {
                return text;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_connection_without_a_certificate_is_told_to_reconnect_once_one_is_required() {
    let upstream = MockUpstream::start("p0");
    let c = certs();
    let partners = Pki::new("partners-2026");
    let tls = free_addr();
    let gw = Payedge::start(&mtls_config(&upstream, tls, &c, &partners, false), &env());
    let request = format!(
        "GET /api/pay HTTP/1.1\r\nHost: blue.smartpay.com\r\nAuthorization: {}\r\n\r\n",
        bearer("blue")
    );
    // Certificates optional: a client without one is served.
    let mut session = Session::open_as(tls, "blue.smartpay.com", &c.pki, None);
    session.send(&request);
    let answers = session.wait_for("HTTP/1.1 200", 1);
    assert!(answers.contains("HTTP/1.1 200"), "{answers}");
    assert_eq!(upstream.count(), 1);

    // The operator makes them required: the connection admitted without one is not served.
    let resp = gw.reload_with(&mtls_config(&upstream, tls, &c, &partners, true));
    assert_eq!(resp.json()["result"], "applied", "{}", resp.text());
    session.send(&request);
    let answers = session.wait_for("HTTP/1.1 421", 1);
    assert!(
        answers.contains("\"client_certificate_stale\""),
        "{answers}"
    );
    assert_eq!(upstream.count(), 1, "nothing more reached the provider");
}

#[test]
fn a_connection_verified_against_a_replaced_client_ca_is_told_to_reconnect() {
    let upstream = MockUpstream::start("p0");
    let c = certs();
    let old_partners = Pki::new("partners-2025");
    let old_partner = old_partners.client("partner", "partner-a", "Acme Payments");
    let new_partners = Pki::new("partners-2026");
    let new_partner = new_partners.client("partner", "partner-a", "Acme Payments");
    let tls = free_addr();
    let gw = Payedge::start(
        &mtls_config(&upstream, tls, &c, &old_partners, true),
        &env(),
    );
    let request = format!(
        "GET /api/pay HTTP/1.1\r\nHost: blue.smartpay.com\r\nAuthorization: {}\r\n\r\n",
        bearer("blue")
    );

    let mut session = Session::open(tls, "blue.smartpay.com", &c.pki, &old_partner);
    session.send(&request);
    let answers = session.wait_for("HTTP/1.1 200", 1);
    assert!(answers.contains("HTTP/1.1 200"), "{answers}");
    assert_eq!(upstream.count(), 1);

    // A reload that keeps the partners' CA leaves the connection working.
    let resp = gw.reload_with(&mtls_config(&upstream, tls, &c, &old_partners, true));
    assert_eq!(resp.json()["result"], "applied", "{}", resp.text());
    session.send(&request);
    let answers = session.wait_for("HTTP/1.1 200", 2);
    assert_eq!(answers.matches("HTTP/1.1 200").count(), 2, "{answers}");
    assert_eq!(upstream.count(), 2);

    // The operator replaces the partners' CA: the old certificate is no longer trusted.
    let resp = gw.reload_with(&mtls_config(&upstream, tls, &c, &new_partners, true));
    assert_eq!(resp.json()["result"], "applied", "{}", resp.text());

    // The next request on the connection verified against the old CA is not let through.
    session.send(&request);
    let answers = session.wait_for("HTTP/1.1 421", 1);
    assert!(answers.contains("HTTP/1.1 421"), "{answers}");
    assert!(
        answers.contains("\"client_certificate_stale\""),
        "{answers}"
    );
    assert_eq!(upstream.count(), 2, "nothing more reached the provider");
    // The refusal's log line says who was refused: the address and the certificate's subject.
    // (Written after the answer, by the log's own thread: waited for.)
    let refused = gw.wait_for_log(|l| l["target"] == "payedge::access" && l["status"] == 421);
    assert_eq!(
        refused["error_code"], "client_certificate_stale",
        "{refused}"
    );
    assert_eq!(refused["client"], "127.0.0.1", "{refused}");
    assert!(
        refused["client_cert_subject"]
            .as_str()
            .is_some_and(|s| s.contains("partner-a")),
        "{refused}"
    );

    // A new connection with the old certificate fails its handshake; one with the new passes.
    let auth = format!("Authorization: {}", bearer("blue"));
    let with = |pair: &Pair| {
        https(
            &c.pki,
            "blue.smartpay.com",
            tls,
            "/api/pay",
            &[
                "--cert",
                pair.cert.to_str().unwrap(),
                "--key",
                pair.key.to_str().unwrap(),
                "-H",
                &auth,
            ],
        )
    };
    let got = with(&old_partner);
    assert_ne!(got.exit, 0, "{got:?}");
    let got = with(&new_partner);
    assert_eq!(got.status, 200, "{got:?}");
    assert_eq!(upstream.count(), 3);
}

#[test]
fn an_optional_client_certificate_is_passed_on_when_sent() {
    let upstream = MockUpstream::start("p0");
    let c = certs();
    let clients = Pki::new("partners");
    let partner = clients.client("partner", "partner-b", "Globex");
    let tls = free_addr();
    let gw = Payedge::start(&mtls_config(&upstream, tls, &c, &clients, false), &env());
    let auth = format!("Authorization: {}", bearer("blue"));

    let got = https(
        &c.pki,
        "blue.smartpay.com",
        tls,
        "/api/pay",
        &["-H", &auth, "-H", "X-Client-Cert-Subject: CN=forged"],
    );
    assert_eq!(got.status, 200, "{got:?}");
    assert!(
        upstream
            .last()
            .headers_named("x-client-cert-subject")
            .is_empty(),
        "a client's own copy is stripped"
    );

    let (cert, key) = (
        partner.cert.to_str().unwrap(),
        partner.key.to_str().unwrap(),
    );
    let got = https(
        &c.pki,
        "blue.smartpay.com",
        tls,
        "/api/pay",
        &["--cert", cert, "--key", key, "-H", &auth],
    );
    assert_eq!(got.status, 200, "{got:?}");
    assert_eq!(
        upstream.last().headers_named("x-client-cert-subject"),
        vec!["O=Globex,CN=partner-b"]
    );
    // Plain HTTP on the same gateway: a client's claim of a certificate is stripped too.
    let resp = get(
        gw.proxy,
        "/api/pay",
        &[
            ("X-Tenant", "blue"),
            ("Authorization", &bearer("blue")),
            ("X-Client-Cert-Subject", "CN=forged"),
        ],
    );
    assert_eq!(resp.status, 200);
    assert!(
        upstream
            .last()
            .headers_named("x-client-cert-subject")
            .is_empty()
    );
}

#[test]
fn the_admin_service_and_the_hub_serve_tls() {
    let upstream = MockUpstream::start("p0");
    let pki = Pki::new("admin");
    let admin_cert = pki.server("admin", &["ops.smartpay.com"], Validity::days(30));
    let admin_tls = free_addr();
    let yaml = config(&[&upstream]).replace(
        HARNESS_SERVER,
        &format!(
            "server:\n  grace_period_seconds: 5\n  admin_tls:\n    listen: {admin_tls}\n    certificates:\n{}",
            certificate_entries(&[&admin_cert])
        ),
    );
    let _gw = Payedge::start(&yaml, &env());

    let got = https(&pki, "ops.smartpay.com", admin_tls, "/healthz", &[]);
    assert_eq!(got.status, 200, "{got:?}");
    assert_eq!(got.json()["status"], "ok");
    let got = https(
        &pki,
        "ops.smartpay.com",
        admin_tls,
        "/metrics",
        &["--http2"],
    );
    assert_eq!(got.status, 200);
    assert_eq!(got.http_version, "2");
    assert!(got.body.contains("payedge_tls_handshake_failures_total"));
}

#[test]
fn an_admin_connection_verified_against_a_replaced_client_ca_is_refused() {
    let upstream = MockUpstream::start("p0");
    let pki = Pki::new("admin");
    let admin_cert = pki.server("admin", &["ops.smartpay.com"], Validity::days(30));
    let old_operators = Pki::new("operators-2025");
    let old_operator = old_operators.client("operator", "ops-1", "Payments Ops");
    let new_operators = Pki::new("operators-2026");
    let admin_tls = free_addr();
    let yaml = |operators: &Pki| {
        config(&[&upstream]).replace(
            HARNESS_SERVER,
            &format!(
                "server:\n  grace_period_seconds: 5\n  admin_tls:\n    listen: {admin_tls}\n    \
                 certificates:\n{}    client_auth:\n      ca_file: {}\n      required: true\n",
                certificate_entries(&[&admin_cert]),
                operators.ca_file().display()
            ),
        )
    };
    let gw = Payedge::start(&yaml(&old_operators), &env());
    let request = "GET /healthz HTTP/1.1\r\nHost: ops.smartpay.com\r\n\r\n";
    let mut session = Session::open(admin_tls, "ops.smartpay.com", &pki, &old_operator);
    session.send(request);
    let answers = session.wait_for("HTTP/1.1 200", 1);
    assert!(answers.contains("HTTP/1.1 200"), "{answers}");

    // The operators' CA is replaced (the old one compromised, say): the connection verified
    // against it is not served any more, as on the proxy port.
    let resp = gw.reload_with(&yaml(&new_operators));
    assert_eq!(resp.json()["result"], "applied", "{}", resp.text());
    session.send(request);
    let answers = session.wait_for("HTTP/1.1 421", 1);
    assert!(
        answers.contains("HTTP/1.1 421") && answers.contains("\"client_certificate_stale\""),
        "{answers}"
    );
}

#[test]
fn the_hub_accepts_the_official_client_over_wss() {
    // The official SignalR client over https/wss, trusting the CA as a browser would.
    let upstream = MockUpstream::start("p0");
    let pki = Pki::new("admin");
    // Node resolves host names itself: a certificate for `localhost` lets it verify the name.
    let admin_cert = pki.server("admin", &["localhost"], Validity::days(30));
    let admin_tls = SocketAddr::from(([127, 0, 0, 1], free_addr().port()));
    let yaml = config(&[&upstream]).replace(
        HARNESS_SERVER,
        &format!(
            "server:\n  grace_period_seconds: 5\n  admin_tls:\n    listen: {admin_tls}\n    certificates:\n{}",
            certificate_entries(&[&admin_cert])
        ),
    );
    let _gw = Payedge::start(&yaml, &env());
    let ca = pki.ca_file();
    let url = format!("https://localhost:{}/hubs/notifications", admin_tls.port());
    for flags in [&[][..], &["--skip-negotiation"][..]] {
        let client = NodeClient::start_url(
            &url,
            &token("blue"),
            flags,
            &[("NODE_EXTRA_CA_CERTS", ca.to_str().unwrap())],
        );
        let line = client.wait_for("connected or failed", |l| {
            l["event"] == "connected" || l["event"] == "failed"
        });
        assert_eq!(line["event"], "connected", "{flags:?}: {line}");
    }
}
