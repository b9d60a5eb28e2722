//! Binary upgrade without dropping anything: `payedge run --upgrade` started beside the running
//! process takes its listening sockets (proxy, TLS, admin) over Pingora's upgrade socket; SIGQUIT
//! makes the old one hand them over, close its connections as their requests finish, and exit.
//! Keep-alive clients under steady load see no failed request and no refused connection; the
//! official SignalR client reconnects to the new process.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::hub::NodeClient;
use common::pki::{Pki, curl};
use common::process::binary;
use common::*;
use payedge::tls::Validity;

#[derive(Default)]
struct Tally {
    ok: AtomicUsize,
    failed: AtomicUsize,
    refused: AtomicUsize,
    reconnects: AtomicUsize,
}

/// One keep-alive client: sends requests back to back on one connection, reconnecting only
/// when a response says `Connection: close`. Any error is a failed request.
fn keep_alive_client(proxy: SocketAddr, stop: Arc<AtomicBool>, tally: Arc<Tally>) {
    let auth = bearer("blue");
    let request = format!(
        "GET /api/pay HTTP/1.1\r\nHost: gw\r\nX-Tenant: blue\r\nAuthorization: {auth}\r\n\r\n"
    );
    let mut conn: Option<BufReader<TcpStream>> = None;
    while !stop.load(Ordering::Relaxed) {
        let reader = match conn.as_mut() {
            Some(reader) => reader,
            None => match TcpStream::connect(proxy) {
                Ok(stream) => {
                    stream
                        .set_read_timeout(Some(Duration::from_secs(10)))
                        .unwrap();
                    tally.reconnects.fetch_add(1, Ordering::Relaxed);
                    conn.insert(BufReader::new(stream))
                }
                Err(_) => {
                    tally.refused.fetch_add(1, Ordering::Relaxed);
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                }
            },
        };
        match exchange(reader, request.as_bytes()) {
            Ok((200, close)) => {
                tally.ok.fetch_add(1, Ordering::Relaxed);
                if close {
                    conn = None;
                }
            }
            Ok((status, _)) => {
                eprintln!("status {status}");
                tally.failed.fetch_add(1, Ordering::Relaxed);
                conn = None;
            }
            Err(e) => {
                eprintln!("error {e}");
                tally.failed.fetch_add(1, Ordering::Relaxed);
                conn = None;
            }
        }
    }
}

/// One request on a kept-alive connection: (status, whether the server closes it).
fn exchange(reader: &mut BufReader<TcpStream>, request: &[u8]) -> std::io::Result<(u16, bool)> {
    reader.get_mut().write_all(request)?;
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        return Err(std::io::Error::other("closed before the response"));
    }
    let status = line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let (mut length, mut close) = (0usize, false);
    loop {
        line.clear();
        reader.read_line(&mut line)?;
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        let (name, value) = header.split_once(':').unwrap_or((header, ""));
        if name.eq_ignore_ascii_case("content-length") {
            length = value.trim().parse().unwrap_or(0);
        }
        if name.eq_ignore_ascii_case("connection") && value.trim().eq_ignore_ascii_case("close") {
            close = true;
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    Ok((status, close))
}

fn upgrade_command(old: &Payedge) -> Command {
    let mut command = Command::new(binary());
    command
        .args(["run", "--upgrade", "-c"])
        .arg(old.config_file())
        .args([
            "--listen",
            &old.proxy.to_string(),
            "--admin-listen",
            &old.admin.to_string(),
        ]);
    command
}

#[test]
fn an_upgrade_under_keep_alive_load_fails_and_refuses_nothing() {
    let upstream = MockUpstream::start("p0");
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("upgrade.sock");
    let pki = Pki::new("upgrade");
    let cert = pki.server("blue", &["blue.smartpay.com"], Validity::days(30));
    let tls = free_addr();
    let yaml = config(&[&upstream]).replace(
        "server:\n  grace_period_seconds: 5\n",
        &format!(
            "server:\n  grace_period_seconds: 10\n  upgrade_sock: {}\n  tls:\n    listen: {tls}\n    certificates:\n      - cert_file: {}\n        key_file: {}\n",
            sock.display(),
            cert.cert.display(),
            cert.key.display()
        ),
    );
    let mut old = Payedge::start(&yaml, &env());

    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let (stop, tally, proxy) = (Arc::clone(&stop), Arc::clone(&tally), old.proxy);
            std::thread::spawn(move || keep_alive_client(proxy, stop, tally))
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let before = tally.ok.load(Ordering::Relaxed);
    assert!(before > 0, "the load runs");

    // A SignalR client on the old process, reconnecting by itself.
    let mut hub = NodeClient::connected(old.admin, &token("blue"), &["--reconnect"]);

    // The new binary beside the old, waiting for its sockets; then SIGQUIT to the old one.
    let mut new = Payedge::spawn_unready(
        upgrade_command(&old),
        &env(),
        old.proxy,
        old.admin,
        tempfile::tempdir().unwrap(),
    );
    std::thread::sleep(Duration::from_millis(300));
    let signalled = Instant::now();
    old.signal("QUIT");
    let status = old.wait_exit(Duration::from_secs(20));
    assert!(status.success(), "the old process exited with {status:?}");
    new.wait_ready();
    let switched = signalled.elapsed();

    // The hub client is on the new process within 5 s of the switch.
    let reconnected = hub.wait_for_within("reconnected", Duration::from_secs(15), |l| {
        l["event"] == "reconnected"
    });
    assert_eq!(reconnected["event"], "reconnected");
    let joined = hub.invoke("join", "JoinTenantGroup", "blue");
    assert_eq!(joined["ok"], true, "{joined}");

    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().unwrap();
    }
    let (ok, failed, refused) = (
        tally.ok.load(Ordering::Relaxed),
        tally.failed.load(Ordering::Relaxed),
        tally.refused.load(Ordering::Relaxed),
    );
    eprintln!(
        "upgrade: {ok} answered, {failed} failed, {refused} refused, {} connections, switched in {switched:?}",
        tally.reconnects.load(Ordering::Relaxed)
    );
    assert_eq!(failed, 0, "{ok} answered, {failed} failed");
    assert_eq!(refused, 0, "connections refused");
    assert!(
        ok > before + 100,
        "requests kept flowing: {before} then {ok}"
    );
    assert!(
        switched < Duration::from_secs(15),
        "the old process drained in {switched:?}"
    );
    // The new process serves on the same addresses: proxy and admin.
    assert_eq!(
        get(
            new.proxy,
            "/api/pay",
            &[("X-Tenant", "blue"), ("Authorization", &bearer("blue"))]
        )
        .status,
        200
    );
    assert_eq!(get(new.admin, "/readyz", &[]).status, 200);
    // And its TLS listener, handed over with the others.
    let ca = pki.ca_file();
    let auth = format!("Authorization: {}", bearer("blue"));
    let got = curl(&[
        "--cacert",
        ca.to_str().unwrap(),
        "--resolve",
        &format!("blue.smartpay.com:{}:127.0.0.1", tls.port()),
        &format!("https://blue.smartpay.com:{}/api/pay", tls.port()),
        "-H",
        &auth,
    ]);
    assert_eq!(got.status, 200, "{got:?}");
    assert!(
        old.raw_stdout().contains("handing the listening sockets"),
        "{}",
        old.raw_stdout()
    );
}

/// Waits up to 15 s for a log line whose message contains `part`.
fn wait_for_message(gw: &Payedge, part: &str) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let found = gw
            .logs()
            .into_iter()
            .find(|l| l["message"].as_str().is_some_and(|m| m.contains(part)));
        if let Some(line) = found {
            return line;
        }
        assert!(Instant::now() < deadline, "no log line with {part:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A proxied request's status.
fn serves(gw: &Payedge) -> u16 {
    let auth = bearer("blue");
    get(
        gw.proxy,
        "/api/pay",
        &[("X-Tenant", "blue"), ("Authorization", auth.as_str())],
    )
    .status
}

/// Sends SIGQUIT and waits for its refusal giving `why`; payedge still serves.
fn sigquit_refused(gw: &Payedge, why: &str) {
    gw.signal("QUIT");
    let refused = wait_for_message(gw, why);
    assert!(
        refused["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("SIGQUIT refused")),
        "{refused}"
    );
    assert_eq!(serves(gw), 200);
}

/// SIGQUIT hands the listening sockets only to a process of the same user waiting on the upgrade
/// socket. Another user's socket at that path (a shared /tmp) gets nothing, and with nothing
/// there payedge does not stop with no one to take over: it refuses the signal and serves on.
#[test]
fn sigquit_is_refused_without_a_new_process_of_this_user_and_payedge_serves_on() {
    let upstream = MockUpstream::start("p0");
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("upgrade.sock");
    let yaml = config(&[&upstream]).replace(
        "server:\n",
        &format!("server:\n  upgrade_sock: {}\n", sock.display()),
    );
    let mut gw = Payedge::start(&yaml, &env());
    assert_eq!(serves(&gw), 200);

    // A socket of another user's at the path (the suite runs as root in CI: it can hand the
    // socket to `nobody`; as another user that step cannot be staged and is left out).
    let foreign = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    foreign.set_nonblocking(true).unwrap();
    match std::os::unix::fs::chown(&sock, Some(65534), Some(65534)) {
        Ok(()) => {
            sigquit_refused(&gw, "belongs to uid 65534");
            std::thread::sleep(Duration::from_millis(500));
            assert!(
                foreign.accept().is_err(),
                "payedge connected to another user's upgrade socket"
            );
        }
        Err(e) => eprintln!("not staged (needs root): another user's upgrade socket: {e}"),
    }
    drop(foreign);
    std::fs::remove_file(&sock).unwrap();

    // This user's socket file with no one listening, as a new process that went away leaves it:
    // Pingora could send nothing and would stop payedge all the same.
    drop(std::os::unix::net::UnixListener::bind(&sock).unwrap());
    sigquit_refused(&gw, "no process listens");
    std::fs::remove_file(&sock).unwrap();

    // Nothing at the path: refused once no new process has appeared within 5 s.
    sigquit_refused(&gw, "no new process is waiting");

    gw.signal("TERM");
    assert!(gw.wait_exit(Duration::from_secs(10)).success());
}
