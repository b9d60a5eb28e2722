//! Keys from the identity provider (`auth.jwt.jwks_url`) against a real HTTPS JWKS endpoint
//! (tests/support/jwks.py as a process): tokens signed with a key the provider rotates in are
//! accepted without a restart, a flood of made-up kids costs at most one fetch per interval, and
//! an unreachable provider leaves the last good keys in use.

mod common;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use common::pki::Pki;
use common::*;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use payedge::tls::Validity;
use serde_json::json;

/// The mock IdP: an HTTPS endpoint serving a JWKS file, counting its fetches.
struct IdP {
    port: u16,
    document: PathBuf,
    child: Child,
    fetches: Arc<Mutex<usize>>,
}

impl IdP {
    fn start(pki: &Pki, document: PathBuf) -> Self {
        let cert = pki.server("idp", &["127.0.0.1"], Validity::days(30));
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/jwks.py");
        let mut child = Command::new("python3")
            .arg(script)
            .arg("--document")
            .arg(&document)
            .arg("--cert")
            .arg(&cert.cert)
            .arg("--key")
            .arg(&cert.key)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 is needed for the JWKS tests");
        let stdout = child.stdout.take().unwrap();
        let fetches = Arc::new(Mutex::new(0));
        let count = Arc::clone(&fetches);
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let event: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
                match event["event"].as_str() {
                    Some("listening") => {
                        let _ = tx.send(event["port"].as_u64().unwrap_or(0) as u16);
                    }
                    Some("fetch") => *count.lock().unwrap() += 1,
                    _ => {}
                }
            }
        });
        let port = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the IdP did not start");
        Self {
            port,
            document,
            child,
            fetches,
        }
    }

    fn fetches(&self) -> usize {
        *self.fetches.lock().unwrap()
    }

    fn publish(&self, keys: &[Jwk]) {
        std::fs::write(&self.document, json!({ "keys": keys }).to_string()).unwrap();
    }
}

impl Drop for IdP {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A P-256 signing key with its public JWK under `kid`.
fn key(kid: &str) -> (EncodingKey, Jwk) {
    let pem = rcgen::KeyPair::generate().unwrap().serialize_pem();
    let key = EncodingKey::from_ec_pem(pem.as_bytes()).unwrap();
    let mut jwk = Jwk::from_encoding_key(&key, Algorithm::ES256).unwrap();
    jwk.common.key_id = Some(kid.into());
    (key, jwk)
}

fn token(key: &EncodingKey, kid: &str) -> String {
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some(kid.into());
    jsonwebtoken::encode(&header, &claims("blue"), key).unwrap()
}

fn jwks_config(upstream: &MockUpstream, idp: &IdP, pki: &Pki, min_refresh: u64) -> String {
    config(&[upstream]).replace(
        "    algorithms: [HS256]\n",
        &format!(
            "    algorithms: [HS256, ES256]\n    jwks_url: https://127.0.0.1:{}/jwks.json\n    ca_file: {}\n    jwks_min_refresh_seconds: {min_refresh}\n",
            idp.port,
            pki.ca_file().display()
        ),
    )
}

fn call(gw: &Payedge, token: &str) -> u16 {
    get(
        gw.proxy,
        "/api/pay",
        &[
            ("X-Tenant", "blue"),
            ("Authorization", &format!("Bearer {token}")),
        ],
    )
    .status
}

fn refreshes(gw: &Payedge, result: &str) -> f64 {
    let wanted = format!("payedge_jwks_refreshes_total{{result=\"{result}\"}}");
    gw.metrics()
        .lines()
        .find_map(|l| l.strip_prefix(&wanted))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

#[test]
fn a_rotated_key_is_accepted_without_a_restart_and_floods_cost_one_fetch() {
    let upstream = MockUpstream::start("p0");
    let pki = Pki::new("idp");
    let (k1, jwk1) = key("k1");
    let (k2, jwk2) = key("k2");
    let idp = IdP::start(&pki, pki.path().join("jwks.json"));
    idp.publish(std::slice::from_ref(&jwk1));
    assert!(
        config(&[&upstream]).contains("    algorithms: [HS256]\n"),
        "the harness changed"
    );
    let gw = Payedge::start(&jwks_config(&upstream, &idp, &pki, 2), &env());
    assert_eq!(idp.fetches(), 1, "fetched once at start");
    assert_eq!(call(&gw, &token(&k1, "k1")), 200);
    assert_eq!(call(&gw, &token(&k2, "k2")), 401, "not published yet");

    // The IdP rotates k2 in: a token naming it triggers a refresh, and is accepted once done.
    idp.publish(&[jwk1.clone(), jwk2]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while call(&gw, &token(&k2, "k2")) != 200 {
        assert!(Instant::now() < deadline, "k2 never accepted");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(call(&gw, &token(&k1, "k1")), 200);

    // A flood of made-up kids: at most one fetch per jwks_min_refresh_seconds (2 s here).
    std::thread::sleep(Duration::from_millis(2100));
    let before = idp.fetches();
    let started = Instant::now();
    for i in 0..60 {
        assert_eq!(call(&gw, &token(&k1, &format!("made-up-{i}"))), 401);
    }
    let elapsed = started.elapsed();
    std::thread::sleep(Duration::from_millis(300));
    let during = idp.fetches() - before;
    let allowed = 1 + (elapsed.as_secs_f64() / 2.0).floor() as usize;
    assert!(
        during <= allowed,
        "{during} fetches in {elapsed:?} for 60 unknown kids (at most {allowed})"
    );
    assert!(refreshes(&gw, "success") >= 2.0);
}

#[test]
fn an_unreachable_idp_leaves_the_last_good_keys_in_use() {
    let upstream = MockUpstream::start("p0");
    let pki = Pki::new("idp");
    let (k1, jwk1) = key("k1");
    let mut idp = IdP::start(&pki, pki.path().join("jwks.json"));
    idp.publish(&[jwk1]);
    let gw = Payedge::start(&jwks_config(&upstream, &idp, &pki, 1), &env());
    assert_eq!(call(&gw, &token(&k1, "k1")), 200);

    // The IdP goes away; an unknown kid asks for a refresh, which fails.
    let _ = idp.child.kill();
    let _ = idp.child.wait();
    let (k9, _) = key("k9");
    let deadline = Instant::now() + Duration::from_secs(10);
    while refreshes(&gw, "failure") < 1.0 {
        assert_eq!(call(&gw, &token(&k9, "k9")), 401);
        assert!(Instant::now() < deadline, "no failed refresh counted");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(call(&gw, &token(&k1, "k1")), 200, "the last good keys stay");
    gw.wait_for_log(|l| {
        l["message"]
            .as_str()
            .is_some_and(|m| m.contains("last good key set stays"))
    });
}

#[test]
fn a_reload_keeps_the_keys_and_refuses_a_url_it_cannot_fetch() {
    let upstream = MockUpstream::start("p0");
    let pki = Pki::new("idp");
    let (k1, jwk1) = key("k1");
    let idp = IdP::start(&pki, pki.path().join("jwks.json"));
    idp.publish(&[jwk1]);
    let yaml = jwks_config(&upstream, &idp, &pki, 30);
    let gw = Payedge::start(&yaml, &env());
    assert_eq!(call(&gw, &token(&k1, "k1")), 200);
    let fetched = idp.fetches();

    // A reload naming the same URL keeps the fetched keys: no new fetch, k1 still accepted.
    let resp = gw.reload_with(&yaml.replace(
        "audience: payedge",
        "audience: payedge\n    leeway_seconds: 10",
    ));
    assert_eq!(resp.json()["result"], "applied", "{}", resp.text());
    assert_eq!(call(&gw, &token(&k1, "k1")), 200);
    assert_eq!(idp.fetches(), fetched);

    // A URL nothing answers on: the reload is refused, the running keys stay.
    let dead = free_addr();
    let resp = gw.reload_with(&yaml.replace(
        &format!("https://127.0.0.1:{}/jwks.json", idp.port),
        &format!("https://127.0.0.1:{}/jwks.json", dead.port()),
    ));
    assert_eq!(resp.status, 422, "{}", resp.text());
    assert!(resp.text().contains("cannot fetch"), "{}", resp.text());
    assert_eq!(call(&gw, &token(&k1, "k1")), 200);
}

#[test]
fn a_fetcher_stops_once_no_configuration_uses_its_url() {
    let upstream = MockUpstream::start("p0");
    let pki = Pki::new("idp");
    let (k1, jwk1) = key("k1");
    let old = IdP::start(&pki, pki.path().join("old.json"));
    let new = IdP::start(&pki, pki.path().join("new.json"));
    old.publish(std::slice::from_ref(&jwk1));
    new.publish(std::slice::from_ref(&jwk1));
    let gw = Payedge::start(&jwks_config(&upstream, &old, &pki, 1), &env());
    assert_eq!(call(&gw, &token(&k1, "k1")), 200);

    // A reload names the other IdP: its keys are fetched, the old URL's fetcher stops.
    let resp = gw.reload_with(&jwks_config(&upstream, &new, &pki, 1));
    assert_eq!(resp.json()["result"], "applied", "{}", resp.text());
    let stopped = gw.wait_for_log(|l| {
        l["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("JWKS fetcher stopped"))
    });
    assert_eq!(
        stopped["url"],
        format!("https://127.0.0.1:{}/jwks.json", old.port)
    );
    assert_eq!(call(&gw, &token(&k1, "k1")), 200);

    // The new URL's fetcher runs: a key rotated in there is fetched on its first token, and
    // the old IdP is asked for nothing more.
    let asked_before = old.fetches();
    let (k2, jwk2) = key("k2");
    new.publish(&[jwk1, jwk2]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while call(&gw, &token(&k2, "k2")) != 200 {
        assert!(Instant::now() < deadline, "the rotated key was not fetched");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(old.fetches(), asked_before);
    let stops = gw
        .logs()
        .iter()
        .filter(|l| {
            l["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("JWKS fetcher stopped"))
        })
        .count();
    assert_eq!(stops, 1, "only the old URL's fetcher stops");
}
