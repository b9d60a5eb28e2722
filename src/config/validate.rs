//! From what operators wrote to what the gateway runs with: every check, every problem collected
//! (not just the first), each named by key path and line.

use payedge_filters::request_head::HeadLimits;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use http::HeaderName;
use jsonwebtoken::Algorithm;
use payedge_filters::auth::{JwtConfigError, JwtSettings, JwtVerifier, SUPPORTED_ALGORITHMS};
use payedge_filters::forwarded::{BadNetwork, TrustedProxies};
use payedge_filters::host::{Host, parse_host};
use payedge_filters::path::check_path;
use payedge_filters::tenant::{Strategy, TenancySettings, is_valid_tenant_id};
use serde::de::DeserializeOwned;
use serde_yaml::{Mapping, Value};

use super::external::*;
use super::issues::{ConfigErrors, ConfigIssue};
use super::lines::LineMap;
use super::runtime::*;
use super::validate_pool::RESERVED_HEADERS;
use super::validate_tls::clashing_listeners;

/// Reads an environment variable; injected so validation is testable without touching the
/// process environment.
pub type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<String>;

const SECTIONS: [&str; 10] = [
    "server",
    "tenancy",
    "auth",
    "analytics",
    "notifications",
    "triggers",
    "idempotency",
    "cache",
    "routes",
    "pools",
];
const MAX_THREADS: usize = 256;
const MAX_GRACE_SECONDS: u64 = 3_600;
/// Pingora reads at most this much of a request head (and refuses a larger one itself).
const MAX_HEAD_BYTES: usize = 1_048_575;
/// Pingora parses at most this many header lines.
const MAX_HEADER_LINES: usize = 256;
const MAX_CONNECTIONS_PER_CLIENT: u32 = 1_000_000;
/// 1 TiB: past any body a payments edge should pass, yet never a reason to turn the check off.
const MAX_BODY_BYTES: u64 = 1 << 40;
const MAX_HEAD_TIMEOUT_MS: u64 = 300_000;
const MIN_CACHE_BYTES: usize = 64 * 1024;
const MAX_CACHE_BYTES: usize = 16 * 1024 * 1024 * 1024;
const MAX_CACHE_TTL_SECONDS: u64 = 86_400;

struct Sections {
    server: ServerSection,
    tenancy: TenancySection,
    auth: Option<AuthSection>,
    analytics: AnalyticsSection,
    notifications: NotificationsSection,
    triggers: Vec<TriggerEntry>,
    routes: Vec<RouteEntry>,
    pools: BTreeMap<String, PoolSection>,
    idempotency: IdempotencySection,
    cache: CacheSection,
}

pub fn validate_text(file: &Path, text: &str, env: EnvLookup<'_>) -> Result<Config, ConfigErrors> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let root: Value = serde_yaml::from_str(text).map_err(|e| {
        let line = e.location().map(|l| l.line());
        ConfigErrors::single(file, line, "", format!("not valid YAML: {e}"))
    })?;
    let lines = LineMap::build(text);
    let mut v = Validator {
        file,
        lines: &lines,
        env,
        issues: Vec::new(),
        warnings: Vec::new(),
    };
    let sections = v.sections(root);
    let config = sections.and_then(|s| v.config(s));
    match config {
        Some(config) if v.issues.is_empty() => Ok(config),
        _ => Err(ConfigErrors {
            file: file.to_path_buf(),
            issues: v.issues,
        }),
    }
}

pub(super) struct Validator<'a> {
    pub(super) file: &'a Path,
    lines: &'a LineMap,
    env: EnvLookup<'a>,
    pub(super) issues: Vec<ConfigIssue>,
    pub(super) warnings: Vec<ConfigIssue>,
}

/// Headers that cannot name the tenant, beside the ones payedge sets itself (which no provider
/// credential may set either, `validate_pool::RESERVED_HEADERS`): the rest of HTTP's framing and
/// connection headers, credentials and cookies, and the other headers payedge reads or sets.
/// payedge removes the client's tenant header and sets its own value upstream, so any of these
/// would be rewritten on every request (a `Content-Length: blue` to the provider, the caller's
/// token replaced, the request id lost).
const NOT_A_TENANT_HEADER: [&str; 16] = [
    "content-type",
    "content-encoding",
    "keep-alive",
    "proxy-connection",
    "expect",
    "authorization",
    "proxy-authorization",
    "cookie",
    "idempotency-key",
    "idempotent-replayed",
    "forwarded",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-forwarded-port",
    "x-real-ip",
    "x-client-cert-subject",
];

impl Validator<'_> {
    pub(super) fn issue(&mut self, key: impl Into<String>, message: impl Into<String>) {
        let key = key.into();
        self.issues.push(ConfigIssue {
            line: self.lines.line_of(&key),
            key,
            message: message.into(),
        });
    }

    /// Something allowed that an operator should know about (listed by `check`, logged by `run`).
    pub(super) fn warn(&mut self, key: impl Into<String>, message: impl Into<String>) {
        let key = key.into();
        self.warnings.push(ConfigIssue {
            line: self.lines.line_of(&key),
            key,
            message: message.into(),
        });
    }

    fn sections(&mut self, root: Value) -> Option<Sections> {
        let mut root = match root {
            Value::Mapping(m) => m,
            Value::Null => {
                self.issue("", "the file is empty");
                return None;
            }
            _ => {
                self.issue("", "the top level must be a mapping of sections");
                return None;
            }
        };
        for key in root.keys() {
            let name = key.as_str().unwrap_or("?");
            if !SECTIONS.contains(&name) {
                self.issue(
                    name,
                    format!("unknown key, expected one of {}", SECTIONS.join(", ")),
                );
            }
        }
        let server = self.section(&mut root, "server");
        let tenancy = self.section(&mut root, "tenancy");
        let auth = self.section(&mut root, "auth");
        let analytics = self.section(&mut root, "analytics");
        let notifications = self.section(&mut root, "notifications");
        let triggers = self.section(&mut root, "triggers");
        let routes = self.section(&mut root, "routes");
        let pools = self.section(&mut root, "pools");
        let idempotency = self.section(&mut root, "idempotency");
        let cache = self.section(&mut root, "cache");
        if !self.issues.is_empty() {
            return None;
        }
        let routes = routes.flatten().unwrap_or_default();
        let pools = pools.flatten().unwrap_or_default();
        Some(Sections {
            server: server.flatten().unwrap_or_default(),
            tenancy: tenancy.flatten().unwrap_or_default(),
            auth: auth.flatten(),
            analytics: analytics.flatten().unwrap_or_default(),
            notifications: notifications.flatten().unwrap_or_default(),
            triggers: triggers.flatten().unwrap_or_default(),
            routes,
            pools,
            idempotency: idempotency.flatten().unwrap_or_default(),
            cache: cache.flatten().unwrap_or_default(),
        })
    }

    /// `None` when the section failed to deserialize (the issue is recorded), `Some(None)` when
    /// it is absent or empty.
    fn section<T: DeserializeOwned>(
        &mut self,
        root: &mut Mapping,
        name: &str,
    ) -> Option<Option<T>> {
        let value = match root.remove(name) {
            None | Some(Value::Null) => return Some(None),
            Some(value) => value,
        };
        match serde_path_to_error::deserialize::<_, T>(value) {
            Ok(section) => Some(Some(section)),
            Err(e) => {
                let inner = e.path().to_string();
                let key = match inner.as_str() {
                    "." => name.to_string(),
                    p if p.starts_with('[') => format!("{name}{p}"),
                    p => format!("{name}.{p}"),
                };
                self.issue(key, e.into_inner().to_string());
                None
            }
        }
    }

    fn config(&mut self, s: Sections) -> Option<Config> {
        let server = self.server(&s.server);
        let (tenancy, tenant_header) = self.tenancy(&s.tenancy);
        let auth = s.auth.as_ref().and_then(|a| self.auth(a));
        let analytics = self.analytics(&s.analytics);
        let pools = self.pools(&s.pools, &tenant_header, &tenancy.tenants);
        let routes = self.routes(&s.routes, &s.pools);
        let notifications = self.notifications(&s.notifications);
        if analytics.metrics_path.starts_with(&notifications.hub.path) {
            // The hub answers every path that starts with its own, first.
            self.issue(
                "analytics.metrics_path",
                format!(
                    "{:?} starts with notifications.hub_path {:?}, which the hub answers: \
                     choose another, like /metrics",
                    analytics.metrics_path, notifications.hub.path
                ),
            );
        }
        let triggers = self.triggers(&s.triggers);
        let idempotency = self.idempotency(&s.idempotency);
        if !(MIN_CACHE_BYTES..=MAX_CACHE_BYTES).contains(&s.cache.max_bytes) {
            self.issue(
                "cache.max_bytes",
                format!("must be {MIN_CACHE_BYTES}-{MAX_CACHE_BYTES}"),
            );
        }
        Some(Config {
            idempotency,
            cache_max_bytes: s.cache.max_bytes,
            source: self.file.to_path_buf(),
            server: server?,
            tenancy,
            tenant_header,
            auth,
            analytics,
            routes,
            pools,
            notifications,
            triggers,
            warnings: std::mem::take(&mut self.warnings),
        })
    }

    fn server(&mut self, s: &ServerSection) -> Option<ServerSettings> {
        let before = self.issues.len();
        let listen = match (&s.listen, &s.tls) {
            (Some(text), _) => self.socket_addr("server.listen", text),
            (None, None) => DEFAULT_LISTEN.parse().ok(),
            (None, Some(_)) => None,
        };
        let admin_listen = match (&s.admin_listen, &s.admin_tls) {
            (Some(text), _) => self.socket_addr("server.admin_listen", text),
            (None, None) => DEFAULT_ADMIN_LISTEN.parse().ok(),
            (None, Some(_)) => None,
        };
        let tls = s
            .tls
            .as_ref()
            .and_then(|t| self.tls_listener("server.tls", t));
        let admin_tls = s
            .admin_tls
            .as_ref()
            .and_then(|t| self.tls_listener("server.admin_tls", t));
        let listeners = [
            ("server.listen", listen, s.listen.is_none()),
            ("server.tls.listen", tls.as_ref().map(|t| t.listen), false),
            (
                "server.admin_listen",
                admin_listen,
                s.admin_listen.is_none(),
            ),
            (
                "server.admin_tls.listen",
                admin_tls.as_ref().map(|t| t.listen),
                false,
            ),
        ];
        for (key, message) in clashing_listeners(&listeners) {
            self.issue(key, message);
        }
        // A certificate required on the TLS port is not asked for on a plain one beside it.
        for (plain, plain_key, tls, tls_key) in [
            (&s.listen, "server.listen", &s.tls, "server.tls"),
            (
                &s.admin_listen,
                "server.admin_listen",
                &s.admin_tls,
                "server.admin_tls",
            ),
        ] {
            if plain.is_some()
                && tls
                    .as_ref()
                    .and_then(|t| t.client_auth.as_ref())
                    .is_some_and(|a| a.required)
            {
                self.warn(
                    plain_key,
                    format!(
                        "serves plain HTTP beside {tls_key}, whose client_auth.required asks \
                         for a client certificate: clients of this port present none"
                    ),
                );
            }
        }
        if s.threads == 0 || s.threads > MAX_THREADS {
            self.issue(
                "server.threads",
                format!("must be between 1 and {MAX_THREADS}"),
            );
        }
        if s.grace_period_seconds > MAX_GRACE_SECONDS {
            self.issue(
                "server.grace_period_seconds",
                format!("must be at most {MAX_GRACE_SECONDS}"),
            );
        }
        let mut trusted = Vec::new();
        for (i, entry) in s.trusted_proxies.iter().enumerate() {
            match TrustedProxies::parse([entry.as_str()]) {
                Ok(_) => trusted.push(entry.as_str()),
                Err(BadNetwork(bad)) => self.issue(
                    format!("server.trusted_proxies[{i}]"),
                    format!("{bad:?} is not an address or a CIDR network like 10.0.0.0/8"),
                ),
            }
        }
        let trusted_proxies = TrustedProxies::parse(trusted).unwrap_or_default();
        if s.proxy_protocol && s.trusted_proxies.is_empty() {
            self.issue(
                "server.proxy_protocol",
                "needs server.trusted_proxies: the balancers allowed to send PROXY headers",
            );
        }
        let upgrade_sock = match &s.upgrade_sock {
            Some(path) if Path::new(path).is_absolute() => {
                self.upgrade_sock_directory(Path::new(path));
                Some(PathBuf::from(path))
            }
            Some(path) => {
                self.issue(
                    "server.upgrade_sock",
                    format!(
                        "{path:?} must be an absolute path: the old and the new process must \
                         agree on it whatever their working directory"
                    ),
                );
                None
            }
            None => None,
        };
        let limits = HeadLimits {
            max_header_bytes: s.limits.max_header_bytes,
            max_headers: s.limits.max_headers,
            max_body_bytes: s.limits.max_body_bytes,
        };
        if !(1024..=MAX_BODY_BYTES).contains(&limits.max_body_bytes) {
            self.issue(
                "server.limits.max_body_bytes",
                format!("must be between 1024 and {MAX_BODY_BYTES}"),
            );
        }
        if !(1024..=MAX_HEAD_BYTES).contains(&limits.max_header_bytes) {
            self.issue(
                "server.limits.max_header_bytes",
                format!("must be between 1024 and {MAX_HEAD_BYTES}"),
            );
        }
        if !(1..=MAX_HEADER_LINES).contains(&limits.max_headers) {
            self.issue(
                "server.limits.max_headers",
                format!("must be between 1 and {MAX_HEADER_LINES}"),
            );
        }
        if s.limits.max_connections_per_client > MAX_CONNECTIONS_PER_CLIENT {
            self.issue(
                "server.limits.max_connections_per_client",
                format!("must be at most {MAX_CONNECTIONS_PER_CLIENT} (0: no cap)"),
            );
        }
        if !(100..=MAX_HEAD_TIMEOUT_MS).contains(&s.limits.request_head_timeout_ms) {
            self.issue(
                "server.limits.request_head_timeout_ms",
                format!("must be between 100 and {MAX_HEAD_TIMEOUT_MS}"),
            );
        }
        if self.issues.len() > before {
            return None;
        }
        Some(ServerSettings {
            request_head_timeout: Duration::from_millis(s.limits.request_head_timeout_ms),
            max_connections_per_client: s.limits.max_connections_per_client,
            limits,
            upgrade_sock,
            listen,
            admin_listen,
            threads: s.threads,
            work_stealing: s.work_stealing,
            grace_period: Duration::from_secs(s.grace_period_seconds),
            tls,
            admin_tls,
            trusted_proxies,
            proxy_protocol: s.proxy_protocol,
        })
    }

    pub(super) fn socket_addr(&mut self, key: &str, value: &str) -> Option<SocketAddr> {
        match value.parse() {
            Ok(addr) => Some(addr),
            Err(_) => {
                self.issue(key, format!("{value:?} is not an IP:port address"));
                None
            }
        }
    }

    fn tenancy(&mut self, t: &TenancySection) -> (TenancySettings, HeaderName) {
        let strategies: Vec<Strategy> = match &t.strategy {
            StrategySetting::One(s) => vec![strategy(*s)],
            StrategySetting::Ordered(list) => list.iter().map(|s| strategy(*s)).collect(),
        };
        if strategies.is_empty() {
            self.issue("tenancy.strategy", "needs at least one strategy");
        }
        for (i, s) in strategies.iter().enumerate() {
            if strategies[..i].contains(s) {
                self.issue(format!("tenancy.strategy[{i}]"), "is listed twice");
            }
        }
        let header = match HeaderName::from_bytes(t.header.as_bytes()) {
            Ok(h) => h,
            Err(_) => {
                self.issue(
                    "tenancy.header",
                    format!("{:?} is not a header name", t.header),
                );
                HeaderName::from_static("x-tenant")
            }
        };
        if RESERVED_HEADERS
            .iter()
            .chain(&NOT_A_TENANT_HEADER)
            .any(|h| *h == header.as_str())
        {
            // payedge replaces the tenant header in what it forwards: naming a framing, routing,
            // credential or gateway header here would rewrite that header for every request.
            self.issue(
                "tenancy.header",
                format!(
                    "{:?} already means something to HTTP or to payedge and cannot carry the tenant",
                    t.header
                ),
            );
        }
        let mut base_domains = Vec::new();
        for (i, domain) in t.base_domains.iter().enumerate() {
            let trimmed = domain.trim_start_matches('.');
            match parse_host(trimmed.as_bytes()) {
                Ok(Host::Name(name)) if !trimmed.contains(':') => base_domains.push(name),
                _ => self.issue(
                    format!("tenancy.base_domains[{i}]"),
                    format!("{domain:?} is not a domain name"),
                ),
            }
        }
        let uses_host = strategies
            .iter()
            .any(|s| matches!(s, Strategy::Host | Strategy::Subdomain));
        if t.enabled && uses_host && base_domains.is_empty() && t.base_domains.is_empty() {
            self.issue(
                "tenancy.base_domains",
                "the host and subdomain strategies need at least one base domain",
            );
        }
        if t.enabled && t.tenants.is_empty() {
            self.issue("tenancy.tenants", "list at least one tenant");
        }
        for (i, tenant) in t.tenants.iter().enumerate() {
            if !is_valid_tenant_id(tenant) {
                self.issue(
                    format!("tenancy.tenants[{i}]"),
                    format!("{tenant:?} is not a tenant id (1-63 of a-z, 0-9, '-', '_')"),
                );
            } else if t.tenants[..i]
                .iter()
                .any(|o| o.eq_ignore_ascii_case(tenant))
            {
                self.issue(
                    format!("tenancy.tenants[{i}]"),
                    format!("{tenant:?} is listed twice"),
                );
            }
        }
        if !is_valid_tenant_id(&t.default_tenant) {
            self.issue(
                "tenancy.default_tenant",
                format!("{:?} is not a tenant id", t.default_tenant),
            );
        }
        let settings = TenancySettings {
            enabled: t.enabled,
            strategies,
            base_domains,
            tenants: t.tenants.iter().map(|s| s.to_ascii_lowercase()).collect(),
            default_tenant: t.default_tenant.to_ascii_lowercase(),
        };
        (settings, header)
    }

    fn auth(&mut self, a: &AuthSection) -> Option<AuthSettings> {
        let issues_before = self.issues.len();
        let j = &a.jwt;
        let mut algorithms = Vec::new();
        for (i, name) in j.algorithms.iter().enumerate() {
            match Algorithm::from_str(name) {
                Ok(alg) if SUPPORTED_ALGORITHMS.contains(&alg) => algorithms.push(alg),
                _ => self.issue(
                    format!("auth.jwt.algorithms[{i}]"),
                    format!("{name:?} is not supported; use HS256, HS384, HS512, RS256, PS256, ES256 or EdDSA"),
                ),
            }
        }
        if j.algorithms.is_empty() {
            self.issue("auth.jwt.algorithms", "list at least one algorithm");
        }
        if j.secret_env.is_none()
            && j.secret_file.is_none()
            && j.public_key_file.is_none()
            && j.jwks_file.is_none()
            && j.jwks_url.is_none()
        {
            self.issue(
                "auth.jwt",
                "needs a key: secret_env, secret_file, public_key_file, jwks_file or jwks_url",
            );
        }
        let jwks = j
            .jwks_url
            .as_deref()
            .and_then(|url| self.jwks_source(url, j.ca_file.as_deref()));
        if !(1..=3600).contains(&j.jwks_min_refresh_seconds) {
            self.issue(
                "auth.jwt.jwks_min_refresh_seconds",
                "must be between 1 and 3600",
            );
        }
        let jwks = jwks.map(|mut source| {
            source.min_refresh = Duration::from_secs(j.jwks_min_refresh_seconds);
            source
        });
        if j.ca_file.is_some() && j.jwks_url.is_none() {
            self.issue("auth.jwt.ca_file", "is for jwks_url, which is not set");
        }
        let secret_key = if j.secret_file.is_some() {
            "auth.jwt.secret_file"
        } else {
            "auth.jwt.secret_env"
        };
        let hmac_secret = self
            .secret(
                "auth.jwt",
                j.secret_env.as_deref(),
                j.secret_file.as_deref(),
            )
            .map(String::into_bytes);
        let public_key_pem = j
            .public_key_file
            .as_deref()
            .and_then(|f| self.read_file("auth.jwt.public_key_file", f))
            .map(String::into_bytes);
        let jwks_json = j
            .jwks_file
            .as_deref()
            .and_then(|f| self.read_file("auth.jwt.jwks_file", f));
        for (key, claim) in [
            ("auth.jwt.tenant_claim", &j.tenant_claim),
            ("auth.jwt.roles_claim", &j.roles_claim),
        ] {
            if claim.is_empty() {
                self.issue(key, "must not be empty");
            }
        }
        for (i, prefix) in a.required_path_prefixes.iter().enumerate() {
            if check_path(prefix).is_err() {
                self.issue(
                    format!("auth.required_path_prefixes[{i}]"),
                    format!("{prefix:?} is not an absolute path in normal form"),
                );
            }
        }
        if a.admin_cross_tenant && a.admin_role.is_none() {
            self.issue("auth.admin_cross_tenant", "needs auth.admin_role");
        }
        if self.issues.len() > issues_before {
            return None;
        }
        let jwt = JwtSettings {
            algorithms,
            hmac_secret,
            public_key_pem,
            jwks_json,
            remote_keys: j.jwks_url.is_some(),
            issuer: j.issuer.clone(),
            audience: j.audience.clone(),
            tenant_claim: j.tenant_claim.clone(),
            roles_claim: j.roles_claim.clone(),
            leeway_seconds: j.leeway_seconds,
        };
        let verifier = match JwtVerifier::new(&jwt) {
            Ok(v) => v,
            Err(e) => {
                let key = match e {
                    JwtConfigError::UnusedSecret | JwtConfigError::WeakSecret => secret_key,
                    JwtConfigError::UnusablePublicKey => "auth.jwt.public_key_file",
                    JwtConfigError::BadJwks(_) => "auth.jwt.jwks_file",
                    _ => "auth.jwt.algorithms",
                };
                self.issue(key, e.to_string());
                return None;
            }
        };
        Some(AuthSettings {
            jwt,
            verifier: Arc::new(verifier),
            jwks,
            required_path_prefixes: a.required_path_prefixes.clone(),
            admin_role: a.admin_role.clone(),
            admin_cross_tenant: a.admin_cross_tenant,
        })
    }

    /// A secret from `secret_env` or `secret_file` under `key` (exactly one of them). A file's
    /// trailing line break is not part of the secret.
    pub(super) fn secret(
        &mut self,
        key: &str,
        env: Option<&str>,
        file: Option<&str>,
    ) -> Option<String> {
        match (env, file) {
            (Some(_), Some(_)) => {
                self.issue(
                    format!("{key}.secret_file"),
                    "set secret_env or secret_file, not both",
                );
                None
            }
            (Some(name), None) => self.env_secret(&format!("{key}.secret_env"), name),
            (None, Some(file)) => {
                let file_key = format!("{key}.secret_file");
                let text = self.read_file(&file_key, file)?;
                self.private_file(&file_key, file);
                let secret = text.strip_suffix('\n').unwrap_or(&text);
                let secret = secret.strip_suffix('\r').unwrap_or(secret);
                if secret.is_empty() {
                    self.issue(file_key, format!("{file} is empty"));
                    return None;
                }
                Some(secret.to_string())
            }
            (None, None) => None,
        }
    }

    pub(super) fn env_secret(&mut self, key: &str, name: &str) -> Option<String> {
        match (self.env)(name) {
            Some(value) if !value.is_empty() => Some(value),
            Some(_) => {
                self.issue(key, format!("environment variable {name} is empty"));
                None
            }
            None => {
                self.issue(key, format!("environment variable {name} is not set"));
                None
            }
        }
    }

    /// Reads a file named relative to the configuration file's directory.
    pub(super) fn read_file(&mut self, key: &str, name: &str) -> Option<String> {
        let path = self.relative(name);
        match std::fs::read_to_string(&path) {
            Ok(text) => Some(text),
            Err(e) => {
                self.issue(key, format!("cannot read {}: {e}", path.display()));
                None
            }
        }
    }

    /// A warning when the private key or secret at `name` can be read or written by every user
    /// of the host (group access is left alone: keys shared with a group such as Debian's
    /// `ssl-cert` are common; so is `o+x`, which opens nothing of a file's content).
    pub(super) fn private_file(&mut self, key: &str, name: &str) {
        use std::os::unix::fs::PermissionsExt;
        let path = self.relative(name);
        let Ok(meta) = std::fs::metadata(&path) else {
            return;
        };
        let mode = meta.permissions().mode() & 0o7777;
        if mode & 0o006 != 0 {
            self.warn(
                key,
                format!(
                    "{} is open to every user of this host (mode {mode:04o}): chmod o-rwx",
                    path.display()
                ),
            );
        }
    }

    /// A warning when another user could replace the upgrade socket: its directory is writable
    /// by every user and not sticky. A SIGQUIT checks the socket's owner before handing the
    /// listening sockets over, but a file swapped between that check and Pingora's connect
    /// would still receive them.
    fn upgrade_sock_directory(&mut self, sock: &Path) {
        use std::os::unix::fs::PermissionsExt;
        let Some(dir) = sock.parent() else {
            return;
        };
        let Ok(meta) = std::fs::metadata(dir) else {
            return;
        };
        let mode = meta.permissions().mode() & 0o7777;
        if mode & 0o002 != 0 && mode & 0o1000 == 0 {
            self.warn(
                "server.upgrade_sock",
                format!(
                    "{} may be changed by every user of this host (mode {mode:04o}, not sticky): \
                     another user could take the listening sockets at an upgrade; use a directory \
                     only payedge's user may write",
                    dir.display()
                ),
            );
        }
    }

    pub(super) fn relative(&self, name: &str) -> PathBuf {
        let path = Path::new(name);
        match self.file.parent() {
            Some(dir) if path.is_relative() => dir.join(path),
            _ => path.to_path_buf(),
        }
    }

    fn jwks_source(&mut self, url: &str, ca_file: Option<&str>) -> Option<JwksSource> {
        let key = "auth.jwt.jwks_url";
        let uri: http::Uri = match url.parse() {
            Ok(uri) => uri,
            Err(_) => {
                self.issue(key, format!("{url:?} is not a URL"));
                return None;
            }
        };
        if uri.scheme_str() != Some("https") {
            self.issue(
                key,
                format!("{url:?} must be an https:// URL: keys are fetched verified"),
            );
            return None;
        }
        let Some(host) = uri.host().filter(|h| !h.is_empty()) else {
            self.issue(key, format!("{url:?} names no host"));
            return None;
        };
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let path = uri
            .path_and_query()
            .map_or_else(|| "/".to_string(), |p| p.as_str().to_string());
        let (ca, ca_digest) = match ca_file {
            None => (None, None),
            Some(file) => {
                let path = self.relative(file);
                match crate::tls::read_roots(&path) {
                    Ok((_, certs)) => {
                        let digest = crate::runtime::sha256_hex(
                            &certs.iter().flat_map(|c| c.to_vec()).collect::<Vec<u8>>(),
                        );
                        let list: Vec<pingora::utils::tls::WrappedX509> = certs
                            .iter()
                            .map(|der| {
                                pingora::utils::tls::WrappedX509::new(
                                    der.to_vec(),
                                    pingora::utils::tls::parse_x509,
                                )
                            })
                            .collect();
                        (Some(Arc::from(list)), Some(digest))
                    }
                    Err(e) => {
                        self.issue("auth.jwt.ca_file", e);
                        return None;
                    }
                }
            }
        };
        Some(JwksSource {
            url: url.to_string(),
            port: uri.port_u16().unwrap_or(443),
            host,
            path,
            ca,
            ca_digest,
            min_refresh: Duration::from_secs(30),
        })
    }

    fn analytics(&mut self, a: &AnalyticsSection) -> AnalyticsSettings {
        if check_path(&a.metrics_path).is_err() || a.metrics_path == "/" {
            self.issue(
                "analytics.metrics_path",
                format!("{:?} is not an absolute path like /metrics", a.metrics_path),
            );
        } else if is_admin_listener_path(&a.metrics_path) {
            // /metrics answers without a token: under /admin/ it would break the rule that every
            // /admin/ path needs the admin role, and elsewhere it would hide an endpoint.
            self.issue(
                "analytics.metrics_path",
                format!(
                    "{:?} is an admin listener path of its own (/admin/, /console/, /healthz, \
                     /readyz): choose another, like /metrics",
                    a.metrics_path
                ),
            );
        }
        AnalyticsSettings {
            enabled: a.enabled,
            request_logging: a.request_logging,
            metrics_path: a.metrics_path.clone(),
        }
    }

    fn routes(
        &mut self,
        routes: &[RouteEntry],
        pools: &BTreeMap<String, PoolSection>,
    ) -> Vec<Route> {
        if routes.is_empty() {
            self.issue("routes", "list at least one route");
        }
        let mut out = Vec::new();
        for (i, route) in routes.iter().enumerate() {
            if check_path(&route.path_prefix).is_err() {
                self.issue(
                    format!("routes[{i}].path_prefix"),
                    format!(
                        "{:?} is not an absolute path in normal form",
                        route.path_prefix
                    ),
                );
            }
            if routes[..i]
                .iter()
                .any(|r| r.path_prefix == route.path_prefix)
            {
                self.issue(
                    format!("routes[{i}].path_prefix"),
                    format!("{:?} is routed twice", route.path_prefix),
                );
            }
            let idempotency = route.idempotency.as_ref().map(|i| RouteIdempotency {
                required: i.required,
                refuse_when_unavailable: match i.store_unavailable {
                    Some(choice) => choice == StoreUnavailable::Refuse,
                    None => i.required,
                },
            });
            let cache = route.cache.as_ref().and_then(|c| self.route_cache(i, c));
            match pools.keys().position(|name| *name == route.pool) {
                Some(pool) => out.push(Route {
                    path_prefix: route.path_prefix.clone(),
                    pool,
                    idempotency,
                    cache,
                }),
                None => self.issue(
                    format!("routes[{i}].pool"),
                    format!("pool {:?} is not defined under pools", route.pool),
                ),
            }
        }
        out
    }
}

impl Validator<'_> {
    fn route_cache(&mut self, i: usize, c: &RouteCacheSection) -> Option<RouteCache> {
        let before = self.issues.len();
        if !(1..=MAX_CACHE_TTL_SECONDS).contains(&c.ttl_seconds) {
            self.issue(
                format!("routes[{i}].cache.ttl_seconds"),
                format!("must be 1-{MAX_CACHE_TTL_SECONDS}"),
            );
        }
        let (mut get, mut head) = (false, false);
        for method in &c.methods {
            match method.as_str() {
                "GET" => get = true,
                "HEAD" => head = true,
                other => self.issue(
                    format!("routes[{i}].cache.methods"),
                    format!("{other:?} cannot be cached: only GET and HEAD"),
                ),
            }
        }
        if !get && !head {
            self.issue(
                format!("routes[{i}].cache.methods"),
                "list GET, HEAD or both",
            );
        }
        (self.issues.len() == before).then(|| RouteCache {
            ttl: Duration::from_secs(c.ttl_seconds),
            get,
            head,
        })
    }
}

fn strategy(name: StrategyName) -> Strategy {
    match name {
        StrategyName::Host => Strategy::Host,
        StrategyName::Header => Strategy::Header,
        StrategyName::Subdomain => Strategy::Subdomain,
    }
}
/// The paths the admin listener answers itself: `/admin/…`, `/console/…`, `/healthz`, `/readyz`.
const ADMIN_LISTENER_PATHS: [&str; 4] = ["/admin", "/console", "/healthz", "/readyz"];

/// Whether `path` is one of the admin listener's own (the metrics path may not take one).
pub(super) fn is_admin_listener_path(path: &str) -> bool {
    ADMIN_LISTENER_PATHS.iter().any(|prefix| {
        path.strip_prefix(prefix)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    })
}

/// Whether a hub at `hub_path` would take an admin listener path: the hub answers every path
/// that starts with its own, before the admin listener's routes.
pub(super) fn hub_takes_admin_path(hub_path: &str) -> bool {
    is_admin_listener_path(hub_path)
        || ADMIN_LISTENER_PATHS
            .iter()
            .any(|prefix| prefix.starts_with(hub_path))
}
