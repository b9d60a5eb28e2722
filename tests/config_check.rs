//! `payedge check` (and `run` and `token`) on configuration files: the exit code and the exact
//! messages, each naming the file, the line and the key path (`FILE:LINE: key.path: message`, one
//! problem per line, then `N problems found`).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// Every environment variable these tests read or set; each run starts with all of them removed,
/// so nothing depends on the caller's environment.
const ENV_VARS: [&str; 12] = [
    "PAYEDGE_JWT_SECRET",
    "CARDS_ACME_API_KEY",
    "CARDS_GLOBEX_API_KEY",
    "PAYEDGE_DEMO_JWT_SECRET",
    "DEMO_CARDS_ACME_API_KEY",
    "DEMO_CARDS_GLOBEX_API_KEY",
    SECRET_VAR,
    ACME_KEY_VAR,
    GLOBEX_KEY_VAR,
    UNSET_VAR,
    "PAYEDGE_LOG",
    "RUST_LOG",
];

/// The JWT secret variable of [`VALID`].
const SECRET_VAR: &str = "PAYEDGE_CHECK_TEST_JWT_SECRET";
/// The credential variable of provider `cards-acme` in [`VALID`].
const ACME_KEY_VAR: &str = "PAYEDGE_CHECK_TEST_ACME_KEY";
const GLOBEX_KEY_VAR: &str = "PAYEDGE_CHECK_TEST_GLOBEX_KEY";
/// Never set.
const UNSET_VAR: &str = "PAYEDGE_CHECK_TEST_UNSET";

const SECRET: &str = "config-check-secret-at-least-32-bytes";
const SHORT_SECRET: &str = "only-31-bytes-long-not-enough!!";

/// The demo's public fallback secret (src/demo/mod.rs), which `payedge token` signs with by default.
const DEMO_SECRET: &str = "payedge-demo-secret-public-never-use-in-production";

/// A valid configuration; tests break one thing at a time with [`edit`].
const VALID: &str = "\
server:
  listen: 127.0.0.1:18080
  admin_listen: 127.0.0.1:18081
  threads: 2
tenancy:
  strategy: [host, header]
  base_domains: [smartpay.com]
  tenants:
    - blue
    - green
auth:
  jwt:
    algorithms: [HS256]
    secret_env: PAYEDGE_CHECK_TEST_JWT_SECRET
    issuer: https://auth.test
    audience: payedge
  required_path_prefixes: [/api]
  admin_role: admin
analytics:
  metrics_path: /metrics
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
    timeouts:
      read_ms: 2000
    providers:
      - name: cards-acme
        address: 127.0.0.1:19101
        weight: 3
        headers:
          X-Api-Key: { secret_env: PAYEDGE_CHECK_TEST_ACME_KEY }
      - name: cards-globex
        address: 127.0.0.1:19102
        weight: 1
";

/// What a finished payedge process left behind.
#[derive(Debug)]
struct Outcome {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs the payedge binary with `args` and exactly `env` among [`ENV_VARS`]. A process still
/// running after 30 s (e.g. `run` starting despite a bad file) is killed and the test fails.
fn payedge(args: &[&str], env: &[(&str, &str)]) -> Outcome {
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
    for (name, value) in env {
        assert!(ENV_VARS.contains(name), "add {name} to ENV_VARS");
        command.env(name, value);
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

/// A configuration file in its own temporary directory.
struct ConfigFile {
    dir: tempfile::TempDir,
    path: PathBuf,
    text: String,
}

impl ConfigFile {
    fn new(text: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("payedge.yaml");
        std::fs::write(&path, text).unwrap();
        Self {
            dir,
            path,
            text: text.to_string(),
        }
    }

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

    fn check(&self, env: &[(&str, &str)]) -> Outcome {
        payedge(&["check", "-c", self.path_str()], env)
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

/// The environment [`VALID`] needs.
fn good_env() -> Vec<(&'static str, &'static str)> {
    vec![(SECRET_VAR, SECRET), (ACME_KEY_VAR, "acme-key")]
}

/// Asserts a failed check: exit 2, nothing on stdout, exactly `problems` then the count on stderr.
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

/// Checks `VALID` with `from` replaced by `to` and the good environment; expects exactly `problems`
/// (each `(needle on the problem's line, key, message)`).
fn assert_edit_fails(from: &str, to: &str, problems: &[(&str, &str, &str)]) {
    let file = ConfigFile::new(&edit(VALID, from, to));
    let expected: Vec<String> = problems
        .iter()
        .map(|(needle, key, message)| file.problem(needle, key, message))
        .collect();
    assert_problems(&file.check(&good_env()), &expected);
}

fn repo_file(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(name)
}

// ---------------------------------------------------------------------------------------------
// Valid files

#[test]
fn valid_config_prints_a_summary_and_exits_0() {
    let file = ConfigFile::new(VALID);
    let outcome = file.check(&good_env());
    assert_eq!(outcome.code, Some(0), "{outcome:#?}");
    assert_eq!(
        outcome.stdout,
        format!(
            "{}: ok: 2 tenant(s), 2 route(s), 2 pool(s) with 3 provider(s), JWT on 1 prefix(es), 0 trigger(s), events in memory\n",
            file.path.display()
        )
    );
    assert_eq!(outcome.stderr, "");
}

#[test]
fn valid_config_without_auth_says_no_auth() {
    let text = VALID.replace(
        &VALID[VALID.find("auth:\n").unwrap()..VALID.find("analytics:\n").unwrap()],
        "",
    );
    let file = ConfigFile::new(&text);
    let outcome = file.check(&[(ACME_KEY_VAR, "acme-key")]);
    assert_eq!(outcome.code, Some(0), "{outcome:#?}");
    assert_eq!(
        outcome.stdout,
        format!(
            "{}: ok: 2 tenant(s), 2 route(s), 2 pool(s) with 3 provider(s), no auth, 0 trigger(s), events in memory\n",
            file.path.display()
        )
    );
}

/// The secrets of one of the repository's configuration files, in the order problems are listed.
struct RepoConfig {
    path: PathBuf,
    text: String,
    /// How `check` sums up the file's triggers and event bus.
    events_summary: &'static str,
    jwt_var: &'static str,
    /// (provider index in pools.cards, variable)
    keys: [(usize, &'static str); 2],
}

impl RepoConfig {
    fn load(
        name: &str,
        events_summary: &'static str,
        jwt_var: &'static str,
        keys: [(usize, &'static str); 2],
    ) -> Self {
        let path = repo_file(name);
        let text = std::fs::read_to_string(&path).unwrap();
        Self {
            events_summary,
            path,
            text,
            jwt_var,
            keys,
        }
    }

    fn vars(&self) -> [&'static str; 3] {
        [self.jwt_var, self.keys[0].1, self.keys[1].1]
    }

    fn env_without(&self, missing: &[&str]) -> Vec<(&'static str, &'static str)> {
        self.vars()
            .into_iter()
            .filter(|v| !missing.contains(v))
            .map(|v| (v, if v == self.jwt_var { SECRET } else { "key" }))
            .collect()
    }

    fn check(&self, env: &[(&str, &str)]) -> Outcome {
        payedge(&["check", "-c", self.path.to_str().unwrap()], env)
    }

    /// The problem reported when `var` is not set.
    fn unset_problem(&self, var: &str) -> String {
        let line = line_of(&self.text, &format!("secret_env: {var}"));
        let key = if var == self.jwt_var {
            "auth.jwt.secret_env".to_string()
        } else {
            let (index, _) = self.keys.iter().find(|(_, v)| *v == var).unwrap();
            format!("pools.cards.providers[{index}].headers.X-Api-Key.secret_env")
        };
        format!(
            "{}:{line}: {key}: environment variable {var} is not set",
            self.path.display()
        )
    }

    fn assert_passes_and_names_each_missing_secret(&self) {
        let outcome = self.check(&self.env_without(&[]));
        assert_eq!(outcome.code, Some(0), "{outcome:#?}");
        assert_eq!(
            outcome.stdout,
            format!(
                "{}: ok: 2 tenant(s), 2 route(s), 2 pool(s) with 3 provider(s), JWT on 1 prefix(es), {}\n",
                self.path.display(),
                self.events_summary
            )
        );
        assert_eq!(outcome.stderr, "");

        for var in self.vars() {
            let outcome = self.check(&self.env_without(&[var]));
            assert_problems(&outcome, &[self.unset_problem(var)]);
        }

        let all: Vec<String> = self.vars().iter().map(|v| self.unset_problem(v)).collect();
        assert_problems(&self.check(&[]), &all);
    }
}

fn reference_config() -> RepoConfig {
    RepoConfig::load(
        "conf/payedge.yaml",
        "2 trigger(s), events via Redis",
        "PAYEDGE_JWT_SECRET",
        [(0, "CARDS_ACME_API_KEY"), (1, "CARDS_GLOBEX_API_KEY")],
    )
}

#[test]
fn reference_config_passes_with_its_secrets_and_names_each_missing_one() {
    reference_config().assert_passes_and_names_each_missing_secret();
}

#[test]
fn demo_config_passes_with_its_secrets_and_names_each_missing_one() {
    // `check` reads the process environment only: the demo's built-in fallback secrets are for
    // `payedge demo` and `payedge token`.
    RepoConfig::load(
        "conf/demo.yaml",
        "2 trigger(s), events in memory",
        "PAYEDGE_DEMO_JWT_SECRET",
        [
            (0, "DEMO_CARDS_ACME_API_KEY"),
            (1, "DEMO_CARDS_GLOBEX_API_KEY"),
        ],
    )
    .assert_passes_and_names_each_missing_secret();
}

#[test]
fn reference_config_refuses_a_short_or_empty_jwt_secret() {
    let conf = reference_config();
    let line = line_of(&conf.text, "secret_env: PAYEDGE_JWT_SECRET");
    let file = conf.path.display();
    let mut env = conf.env_without(&["PAYEDGE_JWT_SECRET"]);

    env.push(("PAYEDGE_JWT_SECRET", SHORT_SECRET));
    assert_problems(
        &conf.check(&env),
        &[format!(
            "{file}:{line}: auth.jwt.secret_env: the HMAC secret is shorter than 32 bytes"
        )],
    );

    env.pop();
    env.push(("PAYEDGE_JWT_SECRET", ""));
    assert_problems(
        &conf.check(&env),
        &[format!(
            "{file}:{line}: auth.jwt.secret_env: environment variable PAYEDGE_JWT_SECRET is empty"
        )],
    );
}

// ---------------------------------------------------------------------------------------------
// One problem of each class

#[test]
fn unknown_top_level_key() {
    assert_edit_fails(
        "routes:\n",
        "rootes:\n",
        &[(
            "rootes:",
            "rootes",
            "unknown key, expected one of server, tenancy, auth, analytics, notifications, triggers, idempotency, cache, routes, pools",
        )],
    );
}

#[test]
fn unknown_nested_key_names_its_full_path_and_line() {
    assert_edit_fails(
        "        weight: 1\n",
        "        wieght: 1\n",
        &[(
            "wieght: 1",
            "pools.cards.providers[1].wieght",
            "unknown field `wieght`, expected one of `name`, `address`, `weight`, `cost`, `currencies`, `tenants`, `headers`, `tls`",
        )],
    );
}

#[test]
fn unknown_key_in_the_jwt_section() {
    assert_edit_fails(
        "    issuer: https://auth.test\n",
        "    isuer: https://auth.test\n",
        &[(
            "isuer:",
            "auth.jwt.isuer",
            "unknown field `isuer`, expected one of `algorithms`, `secret_env`, `secret_file`, \
             `public_key_file`, `jwks_file`, `jwks_url`, `ca_file`, `jwks_min_refresh_seconds`, \
             `issuer`, `audience`, `tenant_claim`, `roles_claim`, `leeway_seconds`",
        )],
    );
}

#[test]
fn wrong_type_of_a_weight() {
    assert_edit_fails(
        "        weight: 1\n",
        "        weight: \"heavy\"\n",
        &[(
            "weight: \"heavy\"",
            "pools.cards.providers[1].weight",
            "invalid type: string \"heavy\", expected u32",
        )],
    );
}

#[test]
fn wrong_type_of_threads() {
    assert_edit_fails(
        "  threads: 2\n",
        "  threads: [1]\n",
        &[(
            "threads: [1]",
            "server.threads",
            "invalid type: sequence, expected usize",
        )],
    );
}

#[test]
fn structural_problems_of_several_sections_are_all_listed() {
    let text = edit(
        &edit(VALID, "  threads: 2\n", "  threads: [1]\n"),
        "        weight: 1\n",
        "        wieght: 1\n",
    );
    let file = ConfigFile::new(&text);
    assert_problems(
        &file.check(&good_env()),
        &[
            file.problem(
                "threads: [1]",
                "server.threads",
                "invalid type: sequence, expected usize",
            ),
            file.problem(
                "wieght: 1",
                "pools.cards.providers[1].wieght",
                "unknown field `wieght`, expected one of `name`, `address`, `weight`, `cost`, `currencies`, `tenants`, `headers`, `tls`",
            ),
        ],
    );
}

#[test]
fn missing_jwt_secret_variable() {
    let file = ConfigFile::new(VALID);
    assert_problems(
        &file.check(&[(ACME_KEY_VAR, "acme-key")]),
        &[file.problem(
            "secret_env: PAYEDGE_CHECK_TEST_JWT_SECRET",
            "auth.jwt.secret_env",
            "environment variable PAYEDGE_CHECK_TEST_JWT_SECRET is not set",
        )],
    );
}

#[test]
fn jwt_secret_env_naming_an_unset_variable() {
    assert_edit_fails(
        SECRET_VAR,
        UNSET_VAR,
        &[(
            UNSET_VAR,
            "auth.jwt.secret_env",
            "environment variable PAYEDGE_CHECK_TEST_UNSET is not set",
        )],
    );
}

#[test]
fn missing_provider_credential_variable() {
    let file = ConfigFile::new(VALID);
    assert_problems(
        &file.check(&[(SECRET_VAR, SECRET)]),
        &[file.problem(
            ACME_KEY_VAR,
            "pools.cards.providers[0].headers.X-Api-Key.secret_env",
            "environment variable PAYEDGE_CHECK_TEST_ACME_KEY is not set",
        )],
    );
}

#[test]
fn route_to_an_undefined_pool() {
    assert_edit_fails(
        "    pool: fx\n",
        "    pool: forex\n",
        &[(
            "pool: forex",
            "routes[0].pool",
            "pool \"forex\" is not defined under pools",
        )],
    );
}

#[test]
fn weight_zero() {
    assert_edit_fails(
        "        weight: 1\n",
        "        weight: 0\n",
        &[(
            "weight: 0",
            "pools.cards.providers[1].weight",
            "must be > 0",
        )],
    );
}

#[test]
fn misspelt_strategy_names_the_choices() {
    assert_edit_fails(
        "  strategy: [host, header]\n",
        "  strategy: hedaer\n",
        &[(
            "strategy: hedaer",
            "tenancy.strategy",
            "one of host, subdomain, header, or a list of them",
        )],
    );
}

#[test]
fn weight_above_the_maximum() {
    assert_edit_fails(
        "        weight: 3\n",
        "        weight: 10001\n",
        &[(
            "weight: 10001",
            "pools.cards.providers[0].weight",
            "must be at most 10000",
        )],
    );
}

#[test]
fn invalid_listen_address() {
    assert_edit_fails(
        "  listen: 127.0.0.1:18080\n",
        "  listen: localhost:18080\n",
        &[(
            "listen: localhost",
            "server.listen",
            "\"localhost:18080\" is not an IP:port address",
        )],
    );
}

#[test]
fn admin_listen_equal_to_listen() {
    assert_edit_fails(
        "  admin_listen: 127.0.0.1:18081\n",
        "  admin_listen: 127.0.0.1:18080\n",
        &[(
            "admin_listen:",
            "server.admin_listen",
            "must differ from server.listen",
        )],
    );
}

#[test]
fn duplicate_provider_names() {
    assert_edit_fails(
        "      - name: cards-globex\n",
        "      - name: cards-acme # again\n",
        &[(
            "cards-acme # again",
            "pools.cards.providers[1].name",
            "\"cards-acme\" is used twice in this pool",
        )],
    );
}

#[test]
fn provider_address_without_a_port() {
    assert_edit_fails(
        "        address: 127.0.0.1:19201\n",
        "        address: 127.0.0.1 # no port\n",
        &[(
            "# no port",
            "pools.fx.providers[0].address",
            "\"127.0.0.1\" is not ip:port or host:port (a port from 1 to 65535)",
        )],
    );
}

#[test]
fn invalid_tenant_id() {
    assert_edit_fails(
        "    - green\n",
        "    - \"gr een\"\n",
        &[(
            "gr een",
            "tenancy.tenants[1]",
            "\"gr een\" is not a tenant id (1-63 of a-z, 0-9, '-', '_')",
        )],
    );
}

#[test]
fn duplicate_tenant() {
    assert_edit_fails(
        "    - green\n",
        "    - Blue\n",
        &[("- Blue", "tenancy.tenants[1]", "\"Blue\" is listed twice")],
    );
}

#[test]
fn host_strategy_without_base_domains() {
    // The key is absent, so the problem is on the line of its section.
    assert_edit_fails(
        "  base_domains: [smartpay.com]\n",
        "",
        &[(
            "tenancy:",
            "tenancy.base_domains",
            "the host and subdomain strategies need at least one base domain",
        )],
    );
}

#[test]
fn jwt_secret_shorter_than_32_bytes() {
    let file = ConfigFile::new(VALID);
    assert_problems(
        &file.check(&[(SECRET_VAR, SHORT_SECRET), (ACME_KEY_VAR, "acme-key")]),
        &[file.problem(
            "secret_env: PAYEDGE_CHECK_TEST_JWT_SECRET",
            "auth.jwt.secret_env",
            "the HMAC secret is shorter than 32 bytes",
        )],
    );
}

#[test]
fn rs256_listed_with_only_a_secret() {
    assert_edit_fails(
        "    algorithms: [HS256]\n",
        "    algorithms: [HS256, RS256]\n",
        &[(
            "algorithms: [HS256, RS256]",
            "auth.jwt.algorithms",
            "RS256 needs an RSA key (public_key_file, jwks_file or jwks_url)",
        )],
    );
}

#[test]
fn secret_without_any_hmac_algorithm() {
    assert_edit_fails(
        "    algorithms: [HS256]\n",
        "    algorithms: [RS256]\n",
        &[(
            "secret_env: PAYEDGE_CHECK_TEST_JWT_SECRET",
            "auth.jwt.secret_env",
            "an HMAC secret is set but no HS* algorithm is allowed",
        )],
    );
}

#[test]
fn unsupported_algorithm() {
    assert_edit_fails(
        "    algorithms: [HS256]\n",
        "    algorithms: [HS256, none]\n",
        &[(
            "algorithms: [HS256, none]",
            "auth.jwt.algorithms[1]",
            "\"none\" is not supported; use HS256, HS384, HS512, RS256, PS256, ES256 or EdDSA",
        )],
    );
}

#[test]
fn reserved_credential_header() {
    assert_edit_fails(
        "          X-Api-Key: {",
        "          Host: {",
        &[(
            "Host: {",
            "pools.cards.providers[0].headers.Host",
            "is set by the gateway itself and cannot be a credential",
        )],
    );
}

#[test]
fn tenant_header_as_credential() {
    assert_edit_fails(
        "          X-Api-Key: {",
        "          x-tenant: {",
        &[(
            "x-tenant: {",
            "pools.cards.providers[0].headers.x-tenant",
            "is set by the gateway itself and cannot be a credential",
        )],
    );
}

#[test]
fn tenant_header_that_already_means_something_is_refused() {
    // payedge sets the tenant header on what it forwards: as Content-Length it would reframe
    // every request, as Authorization replace the caller's token.
    for name in [
        "Content-Length",
        "authorization",
        "X-Request-Id",
        "Idempotency-Key",
    ] {
        assert_edit_fails(
            "  strategy: [host, header]\n",
            &format!("  strategy: [host, header]\n  header: {name}\n"),
            &[(
                &format!("header: {name}"),
                "tenancy.header",
                &format!(
                    "{name:?} already means something to HTTP or to payedge and cannot carry the tenant"
                ),
            )],
        );
    }
    // Nor the header a pool reads the currency from.
    let text = edit(
        VALID,
        "  strategy: [host, header]\n",
        "  strategy: [host, header]\n  header: X-Currency\n",
    );
    let file = ConfigFile::new(&text);
    assert_problems(
        &file.check(&good_env()),
        &[
            file.problem(
                "  cards:",
                "pools.cards.selection.currency_header",
                "is tenancy.header: payedge sets that header to the tenant on what it forwards",
            ),
            file.problem(
                "  fx:",
                "pools.fx.selection.currency_header",
                "is tenancy.header: payedge sets that header to the tenant on what it forwards",
            ),
        ],
    );
    // Any other well-formed name is accepted.
    let file = ConfigFile::new(&edit(
        VALID,
        "  strategy: [host, header]\n",
        "  strategy: [host, header]\n  header: X-Merchant-Tenant\n",
    ));
    let outcome = file.check(&good_env());
    assert_eq!(outcome.code, Some(0), "{outcome:?}");
}

#[test]
fn an_upgrade_socket_in_a_directory_every_user_may_change_is_a_warning() {
    use std::os::unix::fs::PermissionsExt;
    let sockets = tempfile::tempdir().unwrap();
    let sock = sockets.path().join("payedge.sock");
    let file = ConfigFile::new(&edit(
        VALID,
        "  threads: 2\n",
        &format!("  threads: 2\n  upgrade_sock: {}\n", sock.display()),
    ));
    let warning = |mode: u32| -> String {
        std::fs::set_permissions(sockets.path(), std::fs::Permissions::from_mode(mode)).unwrap();
        let outcome = file.check(&good_env());
        assert_eq!(outcome.code, Some(0), "{outcome:#?}");
        outcome.stderr
    };
    assert_eq!(
        warning(0o777),
        format!(
            "warning: {}\n",
            file.problem(
                "upgrade_sock:",
                "server.upgrade_sock",
                &format!(
                    "{} may be changed by every user of this host (mode 0777, not sticky): \
                     another user could take the listening sockets at an upgrade; use a directory \
                     only payedge's user may write",
                    sockets.path().display()
                ),
            )
        )
    );
    // Sticky (as /tmp is): another user cannot remove or rename payedge's socket.
    assert_eq!(warning(0o1777), "");
    assert_eq!(warning(0o755), "");
}

#[test]
fn unreadable_public_key_file_is_named_relative_to_the_config_file() {
    let text = edit(
        &edit(VALID, "[HS256]", "[RS256]"),
        "    secret_env: PAYEDGE_CHECK_TEST_JWT_SECRET\n",
        "    public_key_file: keys/jwt.pem\n",
    );
    let file = ConfigFile::new(&text);
    let key_path = file.dir.path().join("keys/jwt.pem");
    let error = std::fs::read_to_string(&key_path).unwrap_err();
    assert_problems(
        &file.check(&good_env()),
        &[file.problem(
            "public_key_file:",
            "auth.jwt.public_key_file",
            &format!("cannot read {}: {error}", key_path.display()),
        )],
    );
}

#[test]
fn public_key_file_that_holds_no_key() {
    let text = edit(
        &edit(VALID, "[HS256]", "[RS256]"),
        "    secret_env: PAYEDGE_CHECK_TEST_JWT_SECRET\n",
        "    public_key_file: jwt.pem\n",
    );
    let file = ConfigFile::new(&text);
    std::fs::write(file.dir.path().join("jwt.pem"), "not a key\n").unwrap();
    assert_problems(
        &file.check(&good_env()),
        &[file.problem(
            "public_key_file:",
            "auth.jwt.public_key_file",
            "the public key is neither an RSA key (RS256) nor a P-256 EC key (ES256) allowed here",
        )],
    );
}

// ---------------------------------------------------------------------------------------------
// Several problems at once

#[test]
fn independent_semantic_problems_are_all_listed() {
    let mut text = edit(VALID, "        weight: 1\n", "        weight: 0\n");
    text = edit(&text, "    pool: fx\n", "    pool: forex\n");
    text = edit(
        &text,
        "      - name: cards-globex\n",
        "      - name: cards-acme # again\n",
    );
    let file = ConfigFile::new(&text);
    let outcome = file.check(&good_env());
    // Pools are checked before routes.
    assert_problems(
        &outcome,
        &[
            file.problem(
                "cards-acme # again",
                "pools.cards.providers[1].name",
                "\"cards-acme\" is used twice in this pool",
            ),
            file.problem(
                "weight: 0",
                "pools.cards.providers[1].weight",
                "must be > 0",
            ),
            file.problem(
                "pool: forex",
                "routes[0].pool",
                "pool \"forex\" is not defined under pools",
            ),
        ],
    );
    assert!(outcome.stderr.ends_with("\n3 problems found\n"));
}

#[test]
fn problems_of_every_section_are_all_listed() {
    let mut text = edit(VALID, "  listen: 127.0.0.1:18080\n", "  listen: nowhere\n");
    text = edit(&text, "    - green\n", "    - \"gr een\"\n");
    text = edit(
        &text,
        "  metrics_path: /metrics\n",
        "  metrics_path: metrics\n",
    );
    text = edit(&text, "      read_ms: 2000\n", "      read_ms: 0\n");
    text = edit(&text, "    pool: cards\n", "    pool: kards\n");
    let file = ConfigFile::new(&text);
    // The provider credential is missing too.
    assert_problems(
        &file.check(&[(SECRET_VAR, SECRET)]),
        &[
            file.problem(
                "listen: nowhere",
                "server.listen",
                "\"nowhere\" is not an IP:port address",
            ),
            file.problem(
                "gr een",
                "tenancy.tenants[1]",
                "\"gr een\" is not a tenant id (1-63 of a-z, 0-9, '-', '_')",
            ),
            file.problem(
                "metrics_path:",
                "analytics.metrics_path",
                "\"metrics\" is not an absolute path like /metrics",
            ),
            file.problem(
                ACME_KEY_VAR,
                "pools.cards.providers[0].headers.X-Api-Key.secret_env",
                "environment variable PAYEDGE_CHECK_TEST_ACME_KEY is not set",
            ),
            file.problem(
                "read_ms: 0",
                "pools.cards.timeouts.read_ms",
                "must be between 1 and 3600000",
            ),
            file.problem(
                "pool: kards",
                "routes[1].pool",
                "pool \"kards\" is not defined under pools",
            ),
        ],
    );
}

#[test]
fn jwt_key_problems_are_listed_next_to_problems_of_other_sections() {
    let text = edit(
        &edit(VALID, "  listen: 127.0.0.1:18080\n", "  listen: nowhere\n"),
        "    algorithms: [HS256]\n",
        "    algorithms: [HS256, RS256]\n",
    );
    let file = ConfigFile::new(&text);
    assert_problems(
        &file.check(&good_env()),
        &[
            file.problem(
                "listen: nowhere",
                "server.listen",
                "\"nowhere\" is not an IP:port address",
            ),
            file.problem(
                "algorithms: [HS256, RS256]",
                "auth.jwt.algorithms",
                "RS256 needs an RSA key (public_key_file, jwks_file or jwks_url)",
            ),
        ],
    );

    let file = ConfigFile::new(&edit(VALID, "    - green\n", "    - \"gr een\"\n"));
    assert_problems(
        &file.check(&[(SECRET_VAR, SHORT_SECRET), (ACME_KEY_VAR, "acme-key")]),
        &[
            file.problem(
                "gr een",
                "tenancy.tenants[1]",
                "\"gr een\" is not a tenant id (1-63 of a-z, 0-9, '-', '_')",
            ),
            file.problem(
                "secret_env: PAYEDGE_CHECK_TEST_JWT_SECRET",
                "auth.jwt.secret_env",
                "the HMAC secret is shorter than 32 bytes",
            ),
        ],
    );
}

// ---------------------------------------------------------------------------------------------
// Files that are not configurations

#[test]
fn yaml_syntax_error_names_the_line() {
    let file = ConfigFile::new(&edit(VALID, "    pool: cards\n", "    pool: cards: x\n"));
    let line = file.line("pool: cards: x");
    let outcome = file.check(&good_env());
    assert_eq!(outcome.code, Some(2), "{outcome:#?}");
    assert_eq!(outcome.stdout, "");
    assert_eq!(
        outcome.stderr,
        format!(
            "{}:{line}: not valid YAML: mapping values are not allowed in this context at line \
             {line} column 16\n1 problem found\n",
            file.path.display()
        )
    );
}

#[test]
fn unterminated_flow_sequence_is_a_syntax_error_with_a_line() {
    let file = ConfigFile::new(&edit(
        VALID,
        "  tenants:\n    - blue\n    - green\n",
        "  tenants: [blue, green\n",
    ));
    let outcome = file.check(&good_env());
    let prefix = format!("{}:", file.path.display());
    assert_eq!(outcome.code, Some(2), "{outcome:#?}");
    let rest = outcome.stderr.strip_prefix(&prefix).expect(&outcome.stderr);
    let (line, message) = rest.split_once(": ").unwrap();
    let line: usize = line.parse().expect(&outcome.stderr);
    assert!(line >= file.line("tenants: [blue, green"), "{outcome:#?}");
    assert!(
        message.starts_with("not valid YAML: did not find expected ',' or ']'"),
        "{outcome:#?}"
    );
    assert!(outcome.stderr.ends_with("\n1 problem found\n"));
}

#[test]
fn empty_file() {
    for text in ["", "\n\n", "# nothing but a comment\n", "~\n"] {
        let file = ConfigFile::new(text);
        assert_problems(
            &file.check(&good_env()),
            &[format!("{}: the file is empty", file.path.display())],
        );
    }
}

#[test]
fn top_level_that_is_not_a_mapping() {
    let file = ConfigFile::new("- server\n- pools\n");
    assert_problems(
        &file.check(&good_env()),
        &[format!(
            "{}: the top level must be a mapping of sections",
            file.path.display()
        )],
    );
}

#[test]
fn missing_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("absent.yaml");
    let error = std::fs::read_to_string(&path).unwrap_err();
    let outcome = payedge(&["check", "-c", path.to_str().unwrap()], &good_env());
    assert_problems(
        &outcome,
        &[format!("{}: cannot read the file: {error}", path.display())],
    );
}

// ---------------------------------------------------------------------------------------------
// `run` refuses what `check` refuses

#[test]
fn run_with_a_bad_file_exits_2_with_the_check_messages() {
    let mut text = edit(VALID, "        weight: 1\n", "        weight: 0\n");
    text = edit(&text, "    pool: fx\n", "    pool: forex\n");
    let file = ConfigFile::new(&text);
    let expected = [
        file.problem(
            "weight: 0",
            "pools.cards.providers[1].weight",
            "must be > 0",
        ),
        file.problem(
            "pool: forex",
            "routes[0].pool",
            "pool \"forex\" is not defined under pools",
        ),
    ];
    let run = payedge(&["run", "-c", file.path_str()], &good_env());
    assert_problems(&run, &expected);
    assert_eq!(run.stderr, file.check(&good_env()).stderr);
}

#[test]
fn run_with_a_missing_secret_exits_2() {
    let file = ConfigFile::new(VALID);
    let run = payedge(
        &["run", "-c", file.path_str()],
        &[(ACME_KEY_VAR, "acme-key")],
    );
    assert_problems(
        &run,
        &[file.problem(
            "secret_env: PAYEDGE_CHECK_TEST_JWT_SECRET",
            "auth.jwt.secret_env",
            "environment variable PAYEDGE_CHECK_TEST_JWT_SECRET is not set",
        )],
    );
}

#[test]
fn run_with_a_missing_file_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("absent.yaml");
    let error = std::fs::read_to_string(&path).unwrap_err();
    let run = payedge(&["run", "-c", path.to_str().unwrap()], &good_env());
    assert_problems(
        &run,
        &[format!("{}: cannot read the file: {error}", path.display())],
    );
}

// ---------------------------------------------------------------------------------------------
// `token`

fn decode(token: &str, secret: &str, issuer: &str) -> serde_json::Value {
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    validation.set_issuer(&[issuer]);
    validation.set_audience(&["payedge"]);
    jsonwebtoken::decode::<serde_json::Value>(
        token,
        &jsonwebtoken::DecodingKey::from_secret(secret.as_bytes()),
        &validation,
    )
    .unwrap_or_else(|e| panic!("{token:?} does not verify: {e}"))
    .claims
}

#[test]
fn token_for_a_configured_tenant_is_a_jwt_signed_with_the_demo_secret() {
    let outcome = payedge(&["token", "--tenant", "blue"], &[]);
    assert_eq!(outcome.code, Some(0), "{outcome:#?}");
    assert_eq!(outcome.stderr, "");
    let token = outcome.stdout.strip_suffix('\n').expect(&outcome.stdout);
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3, "{token:?}");
    assert!(parts.iter().all(|p| !p.is_empty()), "{token:?}");
    let claims = decode(token, DEMO_SECRET, "payedge-demo");
    assert_eq!(claims["tenant"], "blue");
    assert_eq!(claims["sub"], "dev-user");
    assert_eq!(claims["roles"], serde_json::json!([]));
    let ttl = claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap();
    assert_eq!(ttl, 3600);
}

#[test]
fn token_for_an_unknown_tenant_exits_2() {
    let outcome = payedge(&["token", "--tenant", "red"], &[]);
    assert_eq!(outcome.code, Some(2), "{outcome:#?}");
    assert_eq!(outcome.stdout, "");
    assert_eq!(
        outcome.stderr,
        "payedge token: tenant \"red\" is not configured\n"
    );
}

#[test]
fn token_with_a_config_file_uses_its_secret_and_settings() {
    let file = ConfigFile::new(VALID);
    let outcome = payedge(
        &[
            "token",
            "-c",
            file.path_str(),
            "--tenant",
            "green",
            "--role",
            "admin",
            "--role",
            "payer",
            "--ttl",
            "60",
        ],
        &good_env(),
    );
    assert_eq!(outcome.code, Some(0), "{outcome:#?}");
    let claims = decode(outcome.stdout.trim_end(), SECRET, "https://auth.test");
    assert_eq!(claims["tenant"], "green");
    assert_eq!(claims["roles"], serde_json::json!(["admin", "payer"]));
    let ttl = claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap();
    assert_eq!(ttl, 60);

    // A configuration with problems mints nothing and lists them like `check`.
    let outcome = payedge(
        &["token", "-c", file.path_str(), "--tenant", "green"],
        &[(ACME_KEY_VAR, "acme-key")],
    );
    assert_problems(
        &outcome,
        &[file.problem(
            "secret_env: PAYEDGE_CHECK_TEST_JWT_SECRET",
            "auth.jwt.secret_env",
            "environment variable PAYEDGE_CHECK_TEST_JWT_SECRET is not set",
        )],
    );
}

#[test]
fn a_cluster_url_is_accepted_and_its_prefix_may_not_hold_a_hash_tag() {
    let bus = "notifications:\n  provider: redis\n  redis:\n    url: redis+cluster://127.0.0.1:7000,127.0.0.1:7001\n";
    let good = ConfigFile::new(&format!("{VALID}{bus}"));
    assert_eq!(good.check(&good_env()).code, Some(0));
    let braces = ConfigFile::new(&format!("{VALID}{bus}    channel_prefix: \"app:{{x}}:\"\n"));
    assert_problems(
        &braces.check(&good_env()),
        &[braces.problem(
            "channel_prefix:",
            "notifications.redis.channel_prefix",
            "must not contain braces with a Redis Cluster (the tenant is the hash tag)",
        )],
    );
    let empty = ConfigFile::new(&format!(
        "{VALID}{}",
        bus.replace("127.0.0.1:7000,127.0.0.1:7001", "")
    ));
    assert_eq!(empty.check(&good_env()).code, Some(2));
}

#[test]
fn a_route_cache_out_of_range_is_named() {
    assert_edit_fails(
        "  - path_prefix: /api/fx\n    pool: fx\n",
        "  - path_prefix: /api/fx\n    pool: fx\n    cache: { ttl_seconds: 0, methods: [GET, POST] }\n",
        &[
            (
                "cache: { ttl_seconds: 0",
                "routes[0].cache.ttl_seconds",
                "must be 1-86400",
            ),
            (
                "cache: { ttl_seconds: 0",
                "routes[0].cache.methods",
                "\"POST\" cannot be cached: only GET and HEAD",
            ),
        ],
    );
}

#[test]
fn the_metrics_path_cannot_take_an_admin_listener_path() {
    // /metrics answers without a token: under /admin/ it would be an admin path open to anyone.
    for path in ["/admin/metrics", "/admin", "/console/prom", "/healthz"] {
        assert_edit_fails(
            "  metrics_path: /metrics\n",
            &format!("  metrics_path: {path}\n"),
            &[(
                "metrics_path:",
                "analytics.metrics_path",
                &format!(
                    "\"{path}\" is an admin listener path of its own (/admin/, /console/, \
                     /healthz, /readyz): choose another, like /metrics"
                ),
            )],
        );
    }
}

#[test]
fn the_hub_path_cannot_take_an_admin_listener_path_nor_the_metrics_path() {
    // The hub answers every path that starts with its own before the admin listener's routes:
    // under /admin/ it would bypass the admin role, and a prefix of /healthz would hide it.
    for hub in ["/admin/hub", "/console", "/adm", "/health", "/readyz/x"] {
        let file = ConfigFile::new(&format!("{VALID}notifications:\n  hub_path: {hub}\n"));
        assert_problems(
            &file.check(&good_env()),
            &[file.problem(
                "hub_path:",
                "notifications.hub_path",
                &format!(
                    "\"{hub}\" would take an admin listener path (/admin/, /console/, /healthz, \
                     /readyz): choose another, like /hubs/notifications"
                ),
            )],
        );
    }
    // The metrics path is answered only when the hub does not claim it.
    for metrics in ["/hubs/notifications", "/hubs/notifications/metrics"] {
        let file = ConfigFile::new(&edit(
            VALID,
            "  metrics_path: /metrics\n",
            &format!("  metrics_path: {metrics}\n"),
        ));
        assert_problems(
            &file.check(&good_env()),
            &[file.problem(
                "metrics_path:",
                "analytics.metrics_path",
                &format!(
                    "\"{metrics}\" starts with notifications.hub_path \"/hubs/notifications\", \
                     which the hub answers: choose another, like /metrics"
                ),
            )],
        );
    }
    let fine = ConfigFile::new(&format!(
        "{VALID}notifications:\n  hub_path: /hubs/events\n"
    ));
    assert_eq!(fine.check(&good_env()).code, Some(0));
}

/// Output read by a command that stops early (`payedge check -c f.yaml | head`): the reader has
/// gone before payedge writes. payedge ends with its own exit code, not Rust's panic (101) on a
/// broken pipe.
#[test]
fn a_reader_that_has_gone_changes_nothing_but_the_output() {
    let run = |args: &[&str], env: &[(&str, &str)]| {
        // Pipes whose read ends are closed before payedge starts: every write meets EPIPE.
        let (out_reader, out_writer) = std::io::pipe().unwrap();
        let (err_reader, err_writer) = std::io::pipe().unwrap();
        drop((out_reader, err_reader));
        let mut command = Command::new(env!("CARGO_BIN_EXE_payedge"));
        command
            .args(args)
            .stdin(Stdio::null())
            .stdout(out_writer)
            .stderr(err_writer);
        for name in ENV_VARS {
            command.env_remove(name);
        }
        command.envs(env.iter().copied());
        command.status().unwrap().code()
    };
    let bad = ConfigFile::new(&edit(VALID, "    - green\n", "    - \"gr een\"\n"));
    assert_eq!(run(&["check", "-c", bad.path_str()], &good_env()), Some(2));
    let good = ConfigFile::new(VALID);
    assert_eq!(run(&["check", "-c", good.path_str()], &good_env()), Some(0));
    assert_eq!(run(&["token", "--tenant", "blue"], &[]), Some(0));
}
