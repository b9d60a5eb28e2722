//! `payedge check` and `payedge run` on TLS configuration (`server.tls`, `server.admin_tls`, a
//! provider's `tls`, and the listener, proxy and address settings around them): every bad
//! certificate, key, CA bundle, host list or address is refused with exit code 2 and one line
//! `FILE:LINE: key.path: message` per problem, never with a panic; a certificate about to expire
//! is a warning only.

#[path = "common/pki.rs"]
#[allow(dead_code)]
mod pki;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use payedge::tls::Validity;
use pki::{Pair, Pki};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Variables that would change what payedge prints; removed for every run.
const ENV_VARS: [&str; 3] = ["PAYEDGE_LOG", "RUST_LOG", "RUST_BACKTRACE"];

/// A valid configuration with TLS at both edges; tests break one thing at a time with [`edit`].
/// File names are relative to the configuration file's directory, where [`Fixture`] writes them.
const VALID: &str = "\
server:
  listen: 127.0.0.1:18080
  admin_listen: 127.0.0.1:18081
  tls:
    listen: 127.0.0.1:18443
    certificates:
      - cert_file: blue.pem
        key_file: blue.key
        hosts: [blue.smartpay.com]
      - cert_file: wild.pem
        key_file: wild.key
    client_auth:
      ca_file: clients-ca.pem
      required: false
tenancy:
  strategy: [host, header]
  base_domains: [smartpay.com]
  tenants: [blue, green]
routes:
  - path_prefix: /api/fx
    pool: fx
  - path_prefix: /api/payments
    pool: cards
pools:
  fx:
    providers:
      - name: fx-primary
        address: 127.0.0.1:19201
  cards:
    providers:
      - name: cards-acme
        address: acme.partner.test:19443
        tls:
          ca_file: partner-ca.pem
          client_cert_file: edge-client.pem
          client_key_file: edge-client.key
      - name: cards-globex
        address: 127.0.0.1:19102
        tls:
          sni: globex.partner.test
          ca_file: globex-ca.pem
";

/// What `check` prints for [`VALID`] (and any variant with the same counts).
const SUMMARY: &str = "ok: 2 tenant(s), 2 route(s), 2 pool(s) with 3 provider(s), no auth, 0 trigger(s), events in memory";

/// What a finished payedge process left behind.
#[derive(Debug)]
struct Outcome {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs the payedge binary with `args`. A process still running after 30 s (e.g. `run` starting
/// despite a bad file) is killed and the test fails.
fn payedge(args: &[&str]) -> Outcome {
    let mut command = Command::new(env!("CARGO_BIN_EXE_payedge"));
    command
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for name in ENV_VARS {
        command.env_remove(name);
    }
    let child = command.spawn().expect("cannot start payedge");
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let output = match rx.recv_timeout(Duration::from_secs(30)) {
        Ok(output) => output.expect("cannot wait for payedge"),
        Err(_) => {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            panic!("payedge {args:?} did not exit within 30 s");
        }
    };
    Outcome {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// A throwaway CA and the certificates [`VALID`] names, in one temporary folder (the `Pki`'s)
/// where the configuration file is written too.
struct Fixture {
    pki: Pki,
}

impl Fixture {
    fn new() -> Self {
        let pki = Pki::new("edge");
        pki.server("blue", &["blue.smartpay.com"], Validity::days(90));
        pki.server(
            "wild",
            &["*.smartpay.com", "smartpay.com"],
            Validity::days(90),
        );
        pki.client("edge-client", "payedge-edge", "SmartPay");
        for copy in ["clients-ca.pem", "partner-ca.pem", "globex-ca.pem"] {
            std::fs::copy(pki.ca_file(), pki.path().join(copy)).unwrap();
        }
        Self { pki }
    }

    /// The path of `name` in the fixture's folder.
    fn file(&self, name: &str) -> PathBuf {
        self.pki.path().join(name)
    }

    /// Readable by its owner only (keys among them: payedge warns about open ones).
    fn write(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.file(name);
        std::fs::write(&path, contents).unwrap();
        pki::private(&path);
        path
    }

    fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.file(name)).unwrap()
    }

    /// A server certificate for `names` valid for `validity`, as `{name}.pem` / `{name}.key`.
    fn server(&self, name: &str, names: &[&str], validity: Validity) -> Pair {
        self.pki.server(name, names, validity)
    }

    /// A client certificate `CN=payedge-edge, O=SmartPay` valid for `validity`.
    fn client(&self, name: &str, validity: Validity) -> Pair {
        let issued = self
            .pki
            .ca
            .client("payedge-edge", "SmartPay", validity)
            .unwrap();
        Pair {
            cert: self.write(&format!("{name}.pem"), &issued.cert_pem),
            key: self.write(&format!("{name}.key"), &issued.key_pem),
        }
    }

    /// The configuration `text` written as `payedge.yaml` next to the certificates.
    fn config(&self, text: &str) -> ConfigFile {
        let path = self.write("payedge.yaml", text);
        ConfigFile {
            path,
            text: text.to_string(),
        }
    }

    /// `cannot read PATH: ERROR` for a file of the fixture that does not exist.
    fn unreadable(&self, name: &str) -> String {
        let path = self.file(name);
        let error = std::fs::read(&path).unwrap_err();
        format!("cannot read {}: {error}", path.display())
    }
}

/// A configuration file written by [`Fixture::config`].
struct ConfigFile {
    path: PathBuf,
    text: String,
}

impl ConfigFile {
    fn path_str(&self) -> &str {
        self.path.to_str().unwrap()
    }

    /// The 1-based number of the only line of the file containing `needle`.
    fn line(&self, needle: &str) -> usize {
        line_of(&self.text, needle)
    }

    /// `FILE:LINE: key: message`, the line being the one holding `needle`.
    fn problem(&self, needle: &str, key: &str, message: &str) -> String {
        format!(
            "{}:{}: {key}: {message}",
            self.path.display(),
            self.line(needle)
        )
    }

    fn check(&self) -> Outcome {
        payedge(&["check", "-c", self.path_str()])
    }

    fn run(&self) -> Outcome {
        payedge(&["run", "-c", self.path_str()])
    }

    /// Asserts `check` passes with no warning and the usual summary.
    fn assert_passes(&self) {
        let outcome = self.check();
        assert_eq!(outcome.code, Some(0), "{outcome:#?}");
        self.assert_summary(&outcome);
        assert_eq!(outcome.stderr, "", "{outcome:#?}");
    }

    /// Asserts `check` passes with the usual summary and this one warning: `message` about
    /// `key`, at the line holding `needle`.
    fn assert_warns(&self, needle: &str, key: &str, message: &str) {
        let outcome = self.check();
        assert_eq!(outcome.code, Some(0), "{outcome:#?}");
        self.assert_summary(&outcome);
        assert_eq!(
            outcome.stderr,
            format!("warning: {}\n", self.problem(needle, key, message))
        );
    }

    /// Asserts stdout is the one-line `ok` summary of [`VALID`]'s counts (which may go on with
    /// what the TLS listeners serve).
    fn assert_summary(&self, outcome: &Outcome) {
        let start = format!("{}: {SUMMARY}", self.path.display());
        assert!(
            outcome.stdout.starts_with(&start)
                && outcome.stdout.ends_with('\n')
                && outcome.stdout.lines().count() == 1,
            "{outcome:#?}"
        );
    }
}

fn line_of(text: &str, needle: &str) -> usize {
    let found: Vec<usize> = text
        .lines()
        .enumerate()
        .filter(|(_, line)| line.contains(needle))
        .map(|(i, _)| i + 1)
        .collect();
    assert_eq!(found.len(), 1, "{needle:?} must be on exactly one line");
    found[0]
}

/// `text` with the single occurrence of `from` replaced by `to`.
fn edit(text: &str, from: &str, to: &str) -> String {
    assert_eq!(text.matches(from).count(), 1, "{from:?} must occur once");
    text.replacen(from, to, 1)
}

/// Asserts a failed check: exit 2, nothing on stdout, exactly `problems` then the count on
/// stderr, and no panic.
fn assert_problems(outcome: &Outcome, problems: &[String]) {
    let n = problems.len();
    let summary = format!("{n} problem{} found", if n == 1 { "" } else { "s" });
    let expected: String = problems
        .iter()
        .chain(std::iter::once(&summary))
        .map(|line| format!("{line}\n"))
        .collect();
    assert_eq!(outcome.stderr, expected, "{outcome:#?}");
    assert_eq!(outcome.code, Some(2), "{outcome:#?}");
    assert_eq!(outcome.stdout, "", "{outcome:#?}");
}

/// Checks [`VALID`] with `from` replaced by `to` in `fixture`'s folder; expects exactly
/// `problems` (each `(needle on the problem's line, key, message)`).
fn assert_edit_fails(fixture: &Fixture, from: &str, to: &str, problems: &[(&str, &str, &str)]) {
    assert_fails(fixture, &edit(VALID, from, to), problems);
}

/// Checks `text` in `fixture`'s folder; expects exactly `problems`.
fn assert_fails(fixture: &Fixture, text: &str, problems: &[(&str, &str, &str)]) {
    let file = fixture.config(text);
    let expected: Vec<String> = problems
        .iter()
        .map(|(needle, key, message)| file.problem(needle, key, message))
        .collect();
    assert_problems(&file.check(), &expected);
}

/// The subject and the end of validity of the first certificate of `cert`, as payedge words them.
fn subject_and_end(cert: &Path) -> (String, String) {
    let chain = payedge::tls::read_certificates(cert).unwrap();
    let info = payedge::tls::inspect(&chain[0]).unwrap();
    let end = OffsetDateTime::from_unix_timestamp(info.not_after)
        .unwrap()
        .format(&Rfc3339)
        .unwrap();
    (info.subject, end)
}

/// Valid from an hour ago for 3 days and a half: within the 14-day warning, whole days left: 3.
fn expiring_in_3_days() -> Validity {
    Validity {
        from: time::Duration::hours(-1),
        until: time::Duration::days(3) + time::Duration::hours(12),
    }
}

/// Valid from tomorrow.
fn not_yet_valid() -> Validity {
    Validity {
        from: time::Duration::days(1),
        until: time::Duration::days(90),
    }
}

// ---------------------------------------------------------------------------------------------
// Valid files

#[test]
fn valid_tls_configuration_passes() {
    let fixture = Fixture::new();
    fixture.config(VALID).assert_passes();
}

#[test]
fn absolute_file_names_pass() {
    let fixture = Fixture::new();
    let mut text = VALID.to_string();
    for name in [
        "blue.pem",
        "blue.key",
        "wild.pem",
        "wild.key",
        "clients-ca.pem",
        "partner-ca.pem",
        "edge-client.pem",
        "edge-client.key",
        "globex-ca.pem",
    ] {
        let absolute = fixture.file(name);
        text = edit(
            &text,
            &format!(": {name}\n"),
            &format!(": {}\n", absolute.display()),
        );
    }
    // The configuration in another folder than the files.
    let elsewhere = tempfile::tempdir().unwrap();
    let path = elsewhere.path().join("payedge.yaml");
    std::fs::write(&path, &text).unwrap();
    let file = ConfigFile { path, text };
    file.assert_passes();
}

#[test]
fn wildcard_certificate_serves_the_names_it_covers() {
    let fixture = Fixture::new();
    fixture.server("wildonly", &["*.smartpay.com"], Validity::days(90));
    // Listed hosts are normalised (case, trailing dot); a wildcard host may be listed as is; an
    // exact certificate beside a wildcard covering the same name is not a clash (exact first).
    let text = edit(
        VALID,
        "      - cert_file: wild.pem\n        key_file: wild.key\n",
        "      - cert_file: wildonly.pem\n        key_file: wildonly.key\n        hosts: [Green.SmartPay.com., \"*.smartpay.com\"]\n",
    );
    fixture.config(&text).assert_passes();
}

#[test]
fn hosts_default_to_the_subject_alt_names() {
    let fixture = Fixture::new();
    // No `hosts` anywhere: blue.smartpay.com, *.smartpay.com and smartpay.com from the SANs.
    let text = edit(VALID, "        hosts: [blue.smartpay.com]\n", "");
    fixture.config(&text).assert_passes();
    // `hosts: []` means the same.
    let text = edit(VALID, "hosts: [blue.smartpay.com]", "hosts: []");
    fixture.config(&text).assert_passes();
}

#[test]
fn admin_tls_with_client_auth_passes_without_a_plain_admin_listener() {
    let fixture = Fixture::new();
    fixture.server("ops", &["ops.smartpay.com"], Validity::days(90));
    let text = edit(
        VALID,
        "  admin_listen: 127.0.0.1:18081\n",
        "  admin_tls:\n    listen: 127.0.0.1:18444\n    http2: false\n    handshake_timeout_ms: 5000\n    certificates:\n      - cert_file: ops.pem\n        key_file: ops.key\n    client_auth:\n      ca_file: clients-ca.pem\n",
    );
    fixture.config(&text).assert_passes();
}

#[test]
fn a_required_client_certificate_with_a_plain_port_beside_it_is_a_warning() {
    let fixture = Fixture::new();
    let text = edit(VALID, "      required: false\n", "      required: true\n");
    let file = fixture.config(&text);
    file.assert_warns(
        "listen: 127.0.0.1:18080",
        "server.listen",
        "serves plain HTTP beside server.tls, whose client_auth.required asks for a \
         client certificate: clients of this port present none",
    );
    // Without the plain port, nothing to say.
    let text = edit(&text, "  listen: 127.0.0.1:18080\n", "");
    fixture.config(&text).assert_passes();
}

#[test]
fn provider_addresses_by_name_and_ipv6_pass() {
    let fixture = Fixture::new();
    let text = edit(
        &edit(VALID, "address: 127.0.0.1:19201", "address: localhost:8080"),
        "address: 127.0.0.1:19102",
        "address: \"[::1]:8080\"",
    );
    fixture.config(&text).assert_passes();
    // Without `sni`, a provider by IPv6 address is verified for that address.
    let text = edit(&text, "          sni: globex.partner.test\n", "");
    fixture.config(&text).assert_passes();
}

#[test]
fn certificate_expiring_within_14_days_is_a_warning_only() {
    let fixture = Fixture::new();
    let soon = fixture.server("blue", &["blue.smartpay.com"], expiring_in_3_days());
    let (subject, end) = subject_and_end(&soon.cert);
    assert_eq!(subject, "CN=blue.smartpay.com");
    let file = fixture.config(VALID);
    file.assert_warns(
        "cert_file: blue.pem",
        "server.tls.certificates[0].cert_file",
        &format!("the certificate ({subject}) expires on {end}, in 3 day(s)"),
    );
}

#[test]
fn client_certificate_expiring_within_14_days_is_a_warning_only() {
    let fixture = Fixture::new();
    let soon = fixture.client("edge-client", expiring_in_3_days());
    let (subject, end) = subject_and_end(&soon.cert);
    let file = fixture.config(VALID);
    file.assert_warns(
        "client_cert_file: edge-client.pem",
        "pools.cards.providers[0].tls.client_cert_file",
        &format!("the certificate ({subject}) expires on {end}, in 3 day(s)"),
    );
}

// ---------------------------------------------------------------------------------------------
// Certificate and key files

#[test]
fn missing_certificate_file() {
    let fixture = Fixture::new();
    assert_edit_fails(
        &fixture,
        "cert_file: wild.pem",
        "cert_file: absent.pem",
        &[(
            "cert_file: absent.pem",
            "server.tls.certificates[1].cert_file",
            &fixture.unreadable("absent.pem"),
        )],
    );
}

#[test]
fn missing_certificate_file_named_by_an_absolute_path() {
    let fixture = Fixture::new();
    let elsewhere = tempfile::tempdir().unwrap();
    let absent = elsewhere.path().join("absent.pem");
    let error = std::fs::read(&absent).unwrap_err();
    assert_edit_fails(
        &fixture,
        "cert_file: blue.pem",
        &format!("cert_file: {}", absent.display()),
        &[(
            "absent.pem",
            "server.tls.certificates[0].cert_file",
            &format!("cannot read {}: {error}", absent.display()),
        )],
    );
}

#[test]
fn certificate_file_of_garbage_text() {
    let fixture = Fixture::new();
    let path = fixture.write("wild.pem", "this is not a certificate\n");
    assert_fails(
        &fixture,
        VALID,
        &[(
            "cert_file: wild.pem",
            "server.tls.certificates[1].cert_file",
            &format!(
                "{} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
                path.display()
            ),
        )],
    );
}

#[test]
fn empty_certificate_file() {
    let fixture = Fixture::new();
    let path = fixture.write("wild.pem", "");
    assert_fails(
        &fixture,
        VALID,
        &[(
            "cert_file: wild.pem",
            "server.tls.certificates[1].cert_file",
            &format!(
                "{} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
                path.display()
            ),
        )],
    );
}

/// A PEM certificate with lines of its base64 body cut out, its markers intact.
fn truncated_body(pem: &str) -> String {
    let lines: Vec<&str> = pem.lines().collect();
    assert!(lines.len() > 6, "{pem}");
    let body = &lines[1..lines.len() - 1];
    let mut out = vec![lines[0]];
    out.extend(&body[..body.len() / 2]);
    out.push(lines[lines.len() - 1]);
    out.join("\n") + "\n"
}

#[test]
fn certificate_file_with_a_truncated_base64_body() {
    let fixture = Fixture::new();
    let path = fixture.write("wild.pem", &truncated_body(&fixture.read("wild.pem")));
    let file = fixture.config(VALID);
    let outcome = file.check();
    let prefix = file.problem(
        "cert_file: wild.pem",
        "server.tls.certificates[1].cert_file",
        &format!(
            "{}: certificate 1: it is truncated or corrupt (not a DER X.509 certificate)",
            path.display()
        ),
    );
    let problem = outcome.stderr.lines().next().unwrap_or("");
    assert!(problem.starts_with(&prefix), "{outcome:#?}");
    assert_problems(&outcome, &[problem.to_string()]);
}

#[test]
fn certificate_file_cut_short_without_its_end_marker() {
    let fixture = Fixture::new();
    let pem = fixture.read("wild.pem");
    let path = fixture.write("wild.pem", &pem[..pem.len() / 2]);
    let file = fixture.config(VALID);
    let outcome = file.check();
    let prefix = file.problem(
        "cert_file: wild.pem",
        "server.tls.certificates[1].cert_file",
        &format!(
            "{}: the PEM block is cut short: no -----END CERTIFICATE----- line",
            path.display()
        ),
    );
    let problem = outcome.stderr.lines().next().unwrap_or("");
    assert!(problem.starts_with(&prefix), "{outcome:#?}");
    assert_problems(&outcome, &[problem.to_string()]);
}

#[test]
fn certificate_and_key_files_swapped() {
    let fixture = Fixture::new();
    let cert = fixture.file("blue.key");
    assert_edit_fails(
        &fixture,
        "      - cert_file: blue.pem\n        key_file: blue.key\n",
        "      - cert_file: blue.key\n        key_file: blue.pem\n",
        &[(
            "cert_file: blue.key",
            "server.tls.certificates[0].cert_file",
            &format!(
                "{} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
                cert.display()
            ),
        )],
    );
}

#[test]
fn missing_key_file() {
    let fixture = Fixture::new();
    assert_edit_fails(
        &fixture,
        "key_file: wild.key",
        "key_file: absent.key",
        &[(
            "key_file: absent.key",
            "server.tls.certificates[1].key_file",
            &fixture.unreadable("absent.key"),
        )],
    );
}

#[test]
fn key_file_of_garbage_text() {
    let fixture = Fixture::new();
    let path = fixture.write("wild.key", "this is not a key\n");
    let file = fixture.config(VALID);
    let outcome = file.check();
    let prefix = file.problem(
        "key_file: wild.key",
        "server.tls.certificates[1].key_file",
        &format!("{}: holds no unencrypted PEM private key (PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY)", path.display()),
    );
    let problem = outcome.stderr.lines().next().unwrap_or("");
    assert!(problem.starts_with(&prefix), "{outcome:#?}");
    assert_problems(&outcome, &[problem.to_string()]);
}

#[test]
fn key_of_another_certificate() {
    let fixture = Fixture::new();
    assert_edit_fails(
        &fixture,
        "key_file: wild.key",
        "key_file: blue.key # blue's key",
        &[(
            "blue's key",
            "server.tls.certificates[1].key_file",
            &format!(
                "{} is not the key of the certificate in {}",
                fixture.file("blue.key").display(),
                fixture.file("wild.pem").display()
            ),
        )],
    );
}

// ---------------------------------------------------------------------------------------------
// Dates

#[test]
fn expired_certificate() {
    let fixture = Fixture::new();
    let expired = fixture.server(
        "wild",
        &["*.smartpay.com", "smartpay.com"],
        Validity::expired(),
    );
    let (subject, end) = subject_and_end(&expired.cert);
    assert_eq!(subject, "CN=*.smartpay.com");
    assert_fails(
        &fixture,
        VALID,
        &[(
            "cert_file: wild.pem",
            "server.tls.certificates[1].cert_file",
            &format!("the certificate (CN=*.smartpay.com) expired on {end}"),
        )],
    );
}

#[test]
fn certificate_not_yet_valid() {
    let fixture = Fixture::new();
    let early = fixture.server("blue", &["blue.smartpay.com"], not_yet_valid());
    let chain = payedge::tls::read_certificates(&early.cert).unwrap();
    let start =
        OffsetDateTime::from_unix_timestamp(payedge::tls::inspect(&chain[0]).unwrap().not_before)
            .unwrap()
            .format(&Rfc3339)
            .unwrap();
    assert_fails(
        &fixture,
        VALID,
        &[(
            "cert_file: blue.pem",
            "server.tls.certificates[0].cert_file",
            &format!("the certificate (CN=blue.smartpay.com) is not valid before {start}"),
        )],
    );
}

// ---------------------------------------------------------------------------------------------
// Hosts

#[test]
fn hosts_a_wildcard_certificate_does_not_cover() {
    let fixture = Fixture::new();
    fixture.server("wildonly", &["*.smartpay.com"], Validity::days(90));
    assert_edit_fails(
        &fixture,
        "      - cert_file: wild.pem\n        key_file: wild.key\n",
        "      - cert_file: wildonly.pem\n        key_file: wildonly.key\n        hosts:\n          - green.smartpay.com\n          - smartpay.com\n          - a.b.smartpay.com\n          - \"*.b.smartpay.com\"\n",
        &[
            (
                "- smartpay.com",
                "server.tls.certificates[1].hosts[1]",
                "smartpay.com is not covered by the certificate's names (*.smartpay.com)",
            ),
            (
                "- a.b.smartpay.com",
                "server.tls.certificates[1].hosts[2]",
                "a.b.smartpay.com is not covered by the certificate's names (*.smartpay.com)",
            ),
            (
                "- \"*.b.smartpay.com\"",
                "server.tls.certificates[1].hosts[3]",
                "*.b.smartpay.com is not covered by the certificate's names (*.smartpay.com)",
            ),
        ],
    );
}

#[test]
fn host_an_exact_certificate_does_not_cover() {
    let fixture = Fixture::new();
    assert_edit_fails(
        &fixture,
        "hosts: [blue.smartpay.com]",
        "hosts: [blue.smartpay.com, green.smartpay.com, \"*.smartpay.com\"]",
        &[
            (
                "hosts: [blue.smartpay.com, green",
                "server.tls.certificates[0].hosts[1]",
                "green.smartpay.com is not covered by the certificate's names (blue.smartpay.com)",
            ),
            (
                "hosts: [blue.smartpay.com, green",
                "server.tls.certificates[0].hosts[2]",
                "*.smartpay.com is not covered by the certificate's names (blue.smartpay.com)",
            ),
        ],
    );
}

#[test]
fn malformed_hosts() {
    let fixture = Fixture::new();
    assert_edit_fails(
        &fixture,
        "hosts: [blue.smartpay.com]",
        "hosts:\n          - blue.smartpay.com\n          - \"bad host!\"\n          - \"*.com\"\n          - \"blue..smartpay.com\"",
        &[
            (
                "bad host!",
                "server.tls.certificates[0].hosts[1]",
                "\"bad host!\" is not a host name or a wildcard like *.example.com",
            ),
            (
                "*.com",
                "server.tls.certificates[0].hosts[2]",
                "\"*.com\" is not a host name or a wildcard like *.example.com",
            ),
            (
                "blue..smartpay.com",
                "server.tls.certificates[0].hosts[3]",
                "\"blue..smartpay.com\" is not a host name or a wildcard like *.example.com",
            ),
        ],
    );
}

#[test]
fn certificate_without_dns_names_and_without_hosts() {
    let fixture = Fixture::new();
    // An IP address is the certificate's only subjectAltName.
    fixture.server("ip", &["127.0.0.1"], Validity::days(90));
    assert_edit_fails(
        &fixture,
        "      - cert_file: wild.pem\n        key_file: wild.key\n",
        "      - cert_file: ip.pem\n        key_file: ip.key\n",
        &[(
            "cert_file: ip.pem",
            "server.tls.certificates[1].cert_file",
            "the certificate has no DNS name in its subjectAltName, so clients cannot verify it for any host: use one issued for the hosts it serves",
        )],
    );
}

#[test]
fn certificate_without_dns_names_covers_no_listed_host() {
    let fixture = Fixture::new();
    fixture.server("ip", &["127.0.0.1"], Validity::days(90));
    assert_edit_fails(
        &fixture,
        "      - cert_file: wild.pem\n        key_file: wild.key\n",
        "      - cert_file: ip.pem\n        key_file: ip.key\n        hosts: [green.smartpay.com]\n",
        &[(
            "hosts: [green.smartpay.com]",
            "server.tls.certificates[1].hosts[0]",
            "green.smartpay.com is not covered by the certificate's names (none)",
        )],
    );
}

#[test]
fn two_certificates_listing_the_same_host() {
    let fixture = Fixture::new();
    fixture.server("blue2", &["blue.smartpay.com"], Validity::days(90));
    assert_edit_fails(
        &fixture,
        "      - cert_file: wild.pem\n        key_file: wild.key\n",
        "      - cert_file: blue2.pem\n        key_file: blue2.key\n        hosts: [BLUE.smartpay.com]\n",
        &[(
            "hosts: [BLUE.smartpay.com]",
            "server.tls.certificates[1].hosts",
            "blue.smartpay.com is also claimed by server.tls.certificates[0]",
        )],
    );
}

#[test]
fn two_certificates_claiming_the_same_host_by_their_subject_alt_names() {
    let fixture = Fixture::new();
    fixture.server("blue2", &["blue.smartpay.com"], Validity::days(90));
    // No `hosts`: the line is the entry's.
    let text = edit(
        &edit(VALID, "        hosts: [blue.smartpay.com]\n", ""),
        "      - cert_file: wild.pem\n        key_file: wild.key\n",
        "      - cert_file: wild.pem\n        key_file: wild.key\n      - cert_file: blue2.pem\n        key_file: blue2.key\n",
    );
    let file = fixture.config(&text);
    assert_problems(
        &file.check(),
        &[file.problem(
            "cert_file: blue2.pem",
            "server.tls.certificates[2].cert_file",
            "blue.smartpay.com (from its subjectAltName) is also claimed by server.tls.certificates[0]",
        )],
    );
}

#[test]
fn two_wildcard_certificates_for_the_same_domain() {
    let fixture = Fixture::new();
    fixture.server("wild2", &["*.smartpay.com"], Validity::days(90));
    assert_edit_fails(
        &fixture,
        "      - cert_file: wild.pem\n        key_file: wild.key\n",
        "      - cert_file: wild.pem\n        key_file: wild.key\n      - cert_file: wild2.pem\n        key_file: wild2.key\n",
        &[(
            "cert_file: wild2.pem",
            "server.tls.certificates[2].cert_file",
            "*.smartpay.com (from its subjectAltName) is also claimed by server.tls.certificates[1]",
        )],
    );
}

// ---------------------------------------------------------------------------------------------
// The rest of a TLS listener

#[test]
fn missing_client_auth_ca_file() {
    let fixture = Fixture::new();
    assert_edit_fails(
        &fixture,
        "ca_file: clients-ca.pem",
        "ca_file: absent-ca.pem",
        &[(
            "ca_file: absent-ca.pem",
            "server.tls.client_auth.ca_file",
            &fixture.unreadable("absent-ca.pem"),
        )],
    );
}

#[test]
fn client_auth_ca_file_of_garbage_text() {
    let fixture = Fixture::new();
    let path = fixture.write("clients-ca.pem", "not a CA\n");
    assert_fails(
        &fixture,
        VALID,
        &[(
            "ca_file: clients-ca.pem",
            "server.tls.client_auth.ca_file",
            &format!(
                "{} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
                path.display()
            ),
        )],
    );
}

#[test]
fn tls_without_certificates() {
    let fixture = Fixture::new();
    assert_edit_fails(
        &fixture,
        "    certificates:\n      - cert_file: blue.pem\n        key_file: blue.key\n        hosts: [blue.smartpay.com]\n      - cert_file: wild.pem\n        key_file: wild.key\n",
        "    certificates: []\n",
        &[(
            "certificates: []",
            "server.tls.certificates",
            "list at least one certificate",
        )],
    );
}

#[test]
fn handshake_timeout_out_of_range() {
    let fixture = Fixture::new();
    for value in ["0", "300001"] {
        assert_edit_fails(
            &fixture,
            "    listen: 127.0.0.1:18443\n",
            &format!("    listen: 127.0.0.1:18443\n    handshake_timeout_ms: {value}\n"),
            &[(
                "handshake_timeout_ms:",
                "server.tls.handshake_timeout_ms",
                "must be between 1 and 300000",
            )],
        );
    }
}

#[test]
fn tls_listen_that_is_no_address() {
    let fixture = Fixture::new();
    assert_edit_fails(
        &fixture,
        "listen: 127.0.0.1:18443",
        "listen: localhost:8443",
        &[(
            "listen: localhost:8443",
            "server.tls.listen",
            "\"localhost:8443\" is not an IP:port address",
        )],
    );
}

#[test]
fn admin_tls_problems_name_their_section() {
    let fixture = Fixture::new();
    assert_edit_fails(
        &fixture,
        "  admin_listen: 127.0.0.1:18081\n",
        "  admin_tls:\n    listen: 127.0.0.1:18444\n    certificates:\n      - cert_file: ops.pem\n        key_file: ops.key\n",
        &[(
            "cert_file: ops.pem",
            "server.admin_tls.certificates[0].cert_file",
            &fixture.unreadable("ops.pem"),
        )],
    );
}

// ---------------------------------------------------------------------------------------------
// Listeners

#[test]
fn tls_listen_equal_to_the_plain_listener() {
    let fixture = Fixture::new();
    assert_edit_fails(
        &fixture,
        "listen: 127.0.0.1:18443",
        "listen: 127.0.0.1:18080 # tls",
        &[(
            "127.0.0.1:18080 # tls",
            "server.tls.listen",
            "must differ from server.listen",
        )],
    );
}

#[test]
fn tls_listen_equal_to_the_admin_listener() {
    let fixture = Fixture::new();
    assert_edit_fails(
        &fixture,
        "listen: 127.0.0.1:18443",
        "listen: 127.0.0.1:18081 # tls",
        &[(
            "admin_listen: 127.0.0.1:18081",
            "server.admin_listen",
            "must differ from server.tls.listen",
        )],
    );
}

#[test]
fn tls_listen_equal_to_the_default_admin_listener() {
    let fixture = Fixture::new();
    // admin_listen is not written: its default, 127.0.0.1:8081, clashes.
    let text = edit(
        &edit(VALID, "  admin_listen: 127.0.0.1:18081\n", ""),
        "listen: 127.0.0.1:18443",
        "listen: 127.0.0.1:8081",
    );
    let file = fixture.config(&text);
    assert_problems(
        &file.check(),
        &[file.problem(
            "server:",
            "server.admin_listen",
            "must differ from server.tls.listen (server.admin_listen defaults to 127.0.0.1:8081)",
        )],
    );
}

#[test]
fn admin_tls_listen_equal_to_the_tls_listener() {
    let fixture = Fixture::new();
    fixture.server("ops", &["ops.smartpay.com"], Validity::days(90));
    assert_edit_fails(
        &fixture,
        "  admin_listen: 127.0.0.1:18081\n",
        "  admin_tls:\n    listen: 127.0.0.1:18443 # admin\n    certificates:\n      - cert_file: ops.pem\n        key_file: ops.key\n",
        &[(
            "127.0.0.1:18443 # admin",
            "server.admin_tls.listen",
            "must differ from server.tls.listen",
        )],
    );
}

/// A listener on the unspecified address takes the port on every address: one on 127.0.0.1 and
/// the same port cannot bind beside it (EADDRINUSE, even with SO_REUSEADDR). `run` would retry
/// the bind for 30 s, then panic in Pingora's service thread ("Failed to build listeners").
#[test]
fn tls_listen_on_a_port_the_plain_listener_takes_on_every_address() {
    let fixture = Fixture::new();
    let text = edit(
        &edit(
            VALID,
            "  listen: 127.0.0.1:18080\n",
            "  listen: 0.0.0.0:18443\n",
        ),
        "    listen: 127.0.0.1:18443\n",
        "    listen: 127.0.0.1:18443 # tls\n",
    );
    let file = fixture.config(&text);
    let outcome = file.check();
    assert_eq!(outcome.code, Some(2), "{outcome:#?}");
    let prefix = format!(
        "{}:{}: server.tls.listen: ",
        file.path.display(),
        file.line("# tls")
    );
    let problem = outcome.stderr.lines().next().unwrap_or("");
    assert!(
        problem.starts_with(&prefix) && problem.contains("server.listen"),
        "{outcome:#?}"
    );
    assert_problems(&outcome, &[problem.to_string()]);
}

// ---------------------------------------------------------------------------------------------
// Proxies in front

#[test]
fn trusted_proxy_that_is_no_network() {
    let fixture = Fixture::new();
    for bad in ["10.0.0.0/33", "example.com"] {
        assert_edit_fails(
            &fixture,
            "  admin_listen: 127.0.0.1:18081\n",
            &format!(
                "  admin_listen: 127.0.0.1:18081\n  trusted_proxies:\n    - 192.0.2.0/24\n    - {bad}\n"
            ),
            &[(
                &format!("- {bad}"),
                "server.trusted_proxies[1]",
                &format!("{bad:?} is not an address or a CIDR network like 10.0.0.0/8"),
            )],
        );
    }
}

/// Like every other list, each bad entry is its own problem, not only the first.
#[test]
fn every_bad_trusted_proxy_is_listed() {
    let fixture = Fixture::new();
    assert_edit_fails(
        &fixture,
        "  admin_listen: 127.0.0.1:18081\n",
        "  admin_listen: 127.0.0.1:18081\n  trusted_proxies:\n    - 10.0.0.0/33\n    - 192.0.2.7\n    - example.com\n",
        &[
            (
                "- 10.0.0.0/33",
                "server.trusted_proxies[0]",
                "\"10.0.0.0/33\" is not an address or a CIDR network like 10.0.0.0/8",
            ),
            (
                "- example.com",
                "server.trusted_proxies[2]",
                "\"example.com\" is not an address or a CIDR network like 10.0.0.0/8",
            ),
        ],
    );
}

#[test]
fn proxy_protocol_without_trusted_proxies() {
    let fixture = Fixture::new();
    assert_edit_fails(
        &fixture,
        "  admin_listen: 127.0.0.1:18081\n",
        "  admin_listen: 127.0.0.1:18081\n  proxy_protocol: true\n",
        &[(
            "proxy_protocol: true",
            "server.proxy_protocol",
            "needs server.trusted_proxies: the balancers allowed to send PROXY headers",
        )],
    );
}

#[test]
fn proxy_protocol_with_trusted_proxies_passes() {
    let fixture = Fixture::new();
    let text = edit(
        VALID,
        "  admin_listen: 127.0.0.1:18081\n",
        "  admin_listen: 127.0.0.1:18081\n  proxy_protocol: true\n  trusted_proxies: [10.0.0.0/8, \"2001:db8::/32\", 192.0.2.7]\n",
    );
    fixture.config(&text).assert_passes();
}

// ---------------------------------------------------------------------------------------------
// Provider TLS

#[test]
fn missing_provider_ca_file() {
    let fixture = Fixture::new();
    assert_edit_fails(
        &fixture,
        "ca_file: globex-ca.pem",
        "ca_file: absent-ca.pem",
        &[(
            "ca_file: absent-ca.pem",
            "pools.cards.providers[1].tls.ca_file",
            &fixture.unreadable("absent-ca.pem"),
        )],
    );
}

#[test]
fn provider_ca_file_of_garbage_text() {
    let fixture = Fixture::new();
    let path = fixture.write("partner-ca.pem", "not a CA\n");
    assert_fails(
        &fixture,
        VALID,
        &[(
            "ca_file: partner-ca.pem",
            "pools.cards.providers[0].tls.ca_file",
            &format!(
                "{} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
                path.display()
            ),
        )],
    );
}

#[test]
fn client_certificate_without_its_key() {
    let fixture = Fixture::new();
    // The missing key is named, on the line of the section it is missing from.
    let text = edit(
        &edit(VALID, "          client_key_file: edge-client.key\n", ""),
        "19443\n        tls:\n",
        "19443\n        tls: # acme\n",
    );
    assert_fails(
        &fixture,
        &text,
        &[(
            "tls: # acme",
            "pools.cards.providers[0].tls.client_key_file",
            "client_cert_file needs its key",
        )],
    );
}

#[test]
fn client_key_without_its_certificate() {
    let fixture = Fixture::new();
    let text = edit(
        &edit(VALID, "          client_cert_file: edge-client.pem\n", ""),
        "19443\n        tls:\n",
        "19443\n        tls: # acme\n",
    );
    assert_fails(
        &fixture,
        &text,
        &[(
            "tls: # acme",
            "pools.cards.providers[0].tls.client_cert_file",
            "client_key_file needs its certificate",
        )],
    );
}

#[test]
fn client_key_of_another_certificate() {
    let fixture = Fixture::new();
    assert_edit_fails(
        &fixture,
        "client_key_file: edge-client.key",
        "client_key_file: blue.key",
        &[(
            "client_key_file: blue.key",
            "pools.cards.providers[0].tls.client_key_file",
            &format!(
                "{} is not the key of the certificate in {}",
                fixture.file("blue.key").display(),
                fixture.file("edge-client.pem").display()
            ),
        )],
    );
}

#[test]
fn missing_client_certificate_file() {
    let fixture = Fixture::new();
    assert_edit_fails(
        &fixture,
        "client_cert_file: edge-client.pem",
        "client_cert_file: absent-client.pem",
        &[(
            "client_cert_file: absent-client.pem",
            "pools.cards.providers[0].tls.client_cert_file",
            &fixture.unreadable("absent-client.pem"),
        )],
    );
}

#[test]
fn expired_client_certificate() {
    let fixture = Fixture::new();
    let expired = fixture.client("edge-client", Validity::expired());
    let (subject, end) = subject_and_end(&expired.cert);
    assert!(subject.contains("CN=payedge-edge"), "{subject}");
    assert!(subject.contains("O=SmartPay"), "{subject}");
    assert_fails(
        &fixture,
        VALID,
        &[(
            "client_cert_file: edge-client.pem",
            "pools.cards.providers[0].tls.client_cert_file",
            &format!("the certificate ({subject}) expired on {end}"),
        )],
    );
}

#[test]
fn invalid_sni() {
    let fixture = Fixture::new();
    for (sni, shown) in [
        ("\"bad sni!\"", "bad sni!"),
        ("\"\"", ""),
        ("\"globex..partner.test\"", "globex..partner.test"),
    ] {
        assert_edit_fails(
            &fixture,
            "sni: globex.partner.test",
            &format!("sni: {sni}"),
            &[(
                "sni:",
                "pools.cards.providers[1].tls.sni",
                &format!("{shown:?} is not a server name"),
            )],
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Provider addresses

#[test]
fn provider_address_without_a_usable_port() {
    let fixture = Fixture::new();
    for bad in [
        "acme.partner.test",
        "acme.partner.test:0",
        "acme.partner.test:65536",
        "acme.partner.test:http",
        "\"[::1]\"",
        "\"::1:8080\"",
    ] {
        assert_address_refused(&fixture, bad);
    }
}

/// Port 0 is refused for an IP address as for a host name: nothing listens there.
#[test]
fn provider_ip_address_with_port_0() {
    let fixture = Fixture::new();
    for bad in ["127.0.0.1:0", "\"[::1]:0\""] {
        assert_address_refused(&fixture, bad);
    }
}

/// Checks [`VALID`] with the address of provider `cards-acme` replaced by `bad` (YAML).
fn assert_address_refused(fixture: &Fixture, bad: &str) {
    let shown = bad.trim_matches('"');
    assert_edit_fails(
        fixture,
        "address: acme.partner.test:19443",
        &format!("address: {bad}"),
        &[(
            &format!("address: {bad}"),
            "pools.cards.providers[0].address",
            &format!("{shown:?} is not ip:port or host:port (a port from 1 to 65535)"),
        )],
    );
}

// ---------------------------------------------------------------------------------------------
// Several problems at once

#[test]
fn tls_problems_of_every_kind_are_all_listed() {
    let fixture = Fixture::new();
    fixture.server("blue2", &["blue.smartpay.com"], Validity::days(90));
    let mut text = edit(VALID, "key_file: wild.key", "key_file: blue.key # wrong");
    text = edit(
        &text,
        "        hosts: [blue.smartpay.com]\n",
        "        hosts: [blue.smartpay.com, \"bad host!\"]\n      - cert_file: absent.pem\n        key_file: absent.key\n",
    );
    text = edit(
        &text,
        "    client_auth:\n",
        "    handshake_timeout_ms: 0\n    client_auth:\n",
    );
    text = edit(&text, "ca_file: clients-ca.pem", "ca_file: absent-ca.pem");
    text = edit(
        &text,
        "  admin_listen: 127.0.0.1:18081\n",
        "  admin_listen: 127.0.0.1:18081\n  proxy_protocol: true\n",
    );
    text = edit(
        &text,
        "address: acme.partner.test:19443\n        tls:\n",
        "address: acme.partner.test\n        tls: # acme\n",
    );
    text = edit(
        &text,
        "ca_file: partner-ca.pem",
        "ca_file: absent-partner.pem",
    );
    text = edit(&text, "          client_key_file: edge-client.key\n", "");
    text = edit(&text, "sni: globex.partner.test", "sni: \"bad sni!\"");
    let file = fixture.config(&text);
    // In the order of the file's sections; within server.tls: certificates, then the handshake
    // timeout, then client_auth.
    let expected = [
        file.problem(
            "\"bad host!\"",
            "server.tls.certificates[0].hosts[1]",
            "\"bad host!\" is not a host name or a wildcard like *.example.com",
        ),
        file.problem(
            "cert_file: absent.pem",
            "server.tls.certificates[1].cert_file",
            &fixture.unreadable("absent.pem"),
        ),
        file.problem(
            "# wrong",
            "server.tls.certificates[2].key_file",
            &format!(
                "{} is not the key of the certificate in {}",
                fixture.file("blue.key").display(),
                fixture.file("wild.pem").display()
            ),
        ),
        file.problem(
            "handshake_timeout_ms: 0",
            "server.tls.handshake_timeout_ms",
            "must be between 1 and 300000",
        ),
        file.problem(
            "absent-ca.pem",
            "server.tls.client_auth.ca_file",
            &fixture.unreadable("absent-ca.pem"),
        ),
        file.problem(
            "proxy_protocol: true",
            "server.proxy_protocol",
            "needs server.trusted_proxies: the balancers allowed to send PROXY headers",
        ),
        file.problem(
            "address: acme.partner.test",
            "pools.cards.providers[0].address",
            "\"acme.partner.test\" is not ip:port or host:port (a port from 1 to 65535)",
        ),
        file.problem(
            "absent-partner.pem",
            "pools.cards.providers[0].tls.ca_file",
            &fixture.unreadable("absent-partner.pem"),
        ),
        file.problem(
            "tls: # acme",
            "pools.cards.providers[0].tls.client_key_file",
            "client_cert_file needs its key",
        ),
        file.problem(
            "bad sni!",
            "pools.cards.providers[1].tls.sni",
            "\"bad sni!\" is not a server name",
        ),
    ];
    let outcome = file.check();
    assert_problems(&outcome, &expected);
    assert!(outcome.stderr.ends_with("\n10 problems found\n"));
}

// ---------------------------------------------------------------------------------------------
// `run` refuses what `check` refuses, without a panic

/// `run` and `check` on `file`: both exit 2 with the same `problems`, and nothing panicked.
fn assert_run_refuses_like_check(file: &ConfigFile, problems: &[String]) {
    let check = file.check();
    assert_problems(&check, problems);
    let run = file.run();
    assert!(!run.stderr.contains("panicked"), "{run:#?}");
    assert_problems(&run, problems);
    assert_eq!(run.stderr, check.stderr);
}

#[test]
fn run_refuses_a_corrupt_certificate() {
    let fixture = Fixture::new();
    let path = fixture.write(
        "wild.pem",
        "-----BEGIN CERTIFICATE-----\nnot base64 at all!\n-----END CERTIFICATE-----\n",
    );
    let file = fixture.config(VALID);
    let outcome = file.check();
    let prefix = file.problem(
        "cert_file: wild.pem",
        "server.tls.certificates[1].cert_file",
        &format!("{}: ", path.display()),
    );
    let problem = outcome.stderr.lines().next().unwrap_or("").to_string();
    assert!(problem.starts_with(&prefix), "{outcome:#?}");
    assert_run_refuses_like_check(&file, &[problem]);

    // Garbage with no PEM marker at all.
    let path = fixture.write("wild.pem", "garbage\n");
    assert_run_refuses_like_check(
        &file,
        &[file.problem(
            "cert_file: wild.pem",
            "server.tls.certificates[1].cert_file",
            &format!(
                "{} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
                path.display()
            ),
        )],
    );

    // A truncated body.
    fixture.server(
        "wild",
        &["*.smartpay.com", "smartpay.com"],
        Validity::days(90),
    );
    let path = fixture.write("wild.pem", &truncated_body(&fixture.read("wild.pem")));
    let prefix = file.problem(
        "cert_file: wild.pem",
        "server.tls.certificates[1].cert_file",
        &format!(
            "{}: certificate 1: it is truncated or corrupt (not a DER X.509 certificate)",
            path.display()
        ),
    );
    let outcome = file.check();
    let problem = outcome.stderr.lines().next().unwrap_or("").to_string();
    assert!(problem.starts_with(&prefix), "{outcome:#?}");
    assert_run_refuses_like_check(&file, &[problem]);
}

#[test]
fn run_refuses_a_mismatched_key() {
    let fixture = Fixture::new();
    let text = edit(
        VALID,
        "key_file: wild.key",
        "key_file: blue.key # blue's key",
    );
    let file = fixture.config(&text);
    assert_run_refuses_like_check(
        &file,
        &[file.problem(
            "blue's key",
            "server.tls.certificates[1].key_file",
            &format!(
                "{} is not the key of the certificate in {}",
                fixture.file("blue.key").display(),
                fixture.file("wild.pem").display()
            ),
        )],
    );
}

#[test]
fn run_refuses_a_mismatched_client_key_and_an_expired_certificate() {
    let fixture = Fixture::new();
    let expired = fixture.server("blue", &["blue.smartpay.com"], Validity::expired());
    let (_, end) = subject_and_end(&expired.cert);
    let text = edit(
        VALID,
        "client_key_file: edge-client.key",
        "client_key_file: wild.key",
    );
    let file = fixture.config(&text);
    assert_run_refuses_like_check(
        &file,
        &[
            file.problem(
                "cert_file: blue.pem",
                "server.tls.certificates[0].cert_file",
                &format!("the certificate (CN=blue.smartpay.com) expired on {end}"),
            ),
            file.problem(
                "client_key_file: wild.key",
                "pools.cards.providers[0].tls.client_key_file",
                &format!(
                    "{} is not the key of the certificate in {}",
                    fixture.file("wild.key").display(),
                    fixture.file("edge-client.pem").display()
                ),
            ),
        ],
    );
}

#[test]
fn a_private_key_open_to_every_user_is_a_warning_naming_its_mode() {
    use std::os::unix::fs::PermissionsExt;
    let fixture = Fixture::new();
    let file = fixture.config(VALID);
    assert_eq!(file.check().stderr, "", "keys written 0600: no warning");
    let key = fixture.file("blue.key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    file.assert_warns(
        "key_file: blue.key",
        "server.tls.certificates[0].key_file",
        &format!(
            "{} is open to every user of this host (mode 0644): chmod o-rwx",
            key.display()
        ),
    );
    // Shared with a group only (Debian's ssl-cert): no warning.
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o640)).unwrap();
    assert_eq!(file.check().stderr, "");
}
