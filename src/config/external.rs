//! The configuration as operators write it. Every struct rejects unknown keys; defaults are the
//! ones the reference file (conf/payedge.yaml) documents. Nothing here is trusted until
//! `validate` has turned it into the runtime configuration.

use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSection {
    /// Plain HTTP. Default `127.0.0.1:8080` unless `tls` is set (then plain is off unless listed).
    #[serde(default)]
    pub listen: Option<String>,
    /// Plain HTTP for the admin service. Default `127.0.0.1:8081` unless `admin_tls` is set.
    #[serde(default)]
    pub admin_listen: Option<String>,
    /// Worker threads of the proxy service.
    #[serde(default = "default_threads")]
    pub threads: usize,
    /// Whether the proxy's threads steal each other's tasks (Pingora's `work_stealing`). Off (the
    /// default): each thread runs its connections on its own single-threaded runtime, measured
    /// 1.18-1.22x the requests (README: server.work_stealing).
    #[serde(default = "default_work_stealing")]
    pub work_stealing: bool,
    /// How long SIGTERM waits for in-flight requests before the process exits.
    #[serde(default = "default_grace_period_seconds")]
    pub grace_period_seconds: u64,
    #[serde(default)]
    pub tls: Option<TlsListenerSection>,
    #[serde(default)]
    pub admin_tls: Option<TlsListenerSection>,
    /// Peers (CIDRs or addresses) whose X-Forwarded-For / Forwarded and PROXY headers are believed.
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    /// Every proxy connection starts with a PROXY protocol (v1 or v2) header from a trusted proxy.
    #[serde(default)]
    pub proxy_protocol: bool,
    /// The Unix socket a `run --upgrade` process receives the listening sockets on (absolute;
    /// the same for the old and the new process).
    #[serde(default)]
    pub upgrade_sock: Option<String>,
    /// Limits on each request head (reloadable).
    #[serde(default)]
    pub limits: RequestLimitsSection,
}

/// `server.limits`: what one request head may hold (beyond: 431, and the connection is closed),
/// and how many connections one client address may hold open.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestLimitsSection {
    /// Request line plus header lines, in bytes (default 32768).
    #[serde(default = "default_max_header_bytes")]
    pub max_header_bytes: usize,
    /// Header lines (default 100).
    #[serde(default = "default_max_headers")]
    pub max_headers: usize,
    /// The largest request body: stated (`Content-Length`) or counted as its chunks arrive.
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: u64,
    /// Open connections per client address on the proxy and on the admin port (default 1024,
    /// 0: no cap). Not applied to `trusted_proxies`.
    #[serde(default = "default_max_connections_per_client")]
    pub max_connections_per_client: u32,
    /// How long a new connection has to deliver its first whole request head (after TLS).
    #[serde(default = "default_request_head_timeout_ms")]
    pub request_head_timeout_ms: u64,
}

impl Default for RequestLimitsSection {
    fn default() -> Self {
        Self {
            max_header_bytes: default_max_header_bytes(),
            max_headers: default_max_headers(),
            max_body_bytes: default_max_body_bytes(),
            max_connections_per_client: default_max_connections_per_client(),
            request_head_timeout_ms: default_request_head_timeout_ms(),
        }
    }
}

fn default_max_header_bytes() -> usize {
    payedge_filters::request_head::HeadLimits::default().max_header_bytes
}
fn default_request_head_timeout_ms() -> u64 {
    10_000
}
fn default_max_connections_per_client() -> u32 {
    1024
}
fn default_max_headers() -> usize {
    payedge_filters::request_head::HeadLimits::default().max_headers
}
fn default_max_body_bytes() -> u64 {
    payedge_filters::request_head::HeadLimits::default().max_body_bytes
}

impl Default for ServerSection {
    fn default() -> Self {
        Self {
            listen: None,
            admin_listen: None,
            threads: default_threads(),
            work_stealing: default_work_stealing(),
            grace_period_seconds: default_grace_period_seconds(),
            tls: None,
            admin_tls: None,
            trusted_proxies: Vec::new(),
            proxy_protocol: false,
            upgrade_sock: None,
            limits: RequestLimitsSection::default(),
        }
    }
}

/// A TLS listener: `server.tls` (clients) or `server.admin_tls` (admin, hub, metrics).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsListenerSection {
    pub listen: String,
    pub certificates: Vec<CertificateEntry>,
    /// Offer HTTP/2 by ALPN (`h2`, then `http/1.1`).
    #[serde(default = "yes")]
    pub http2: bool,
    #[serde(default)]
    pub client_auth: Option<ClientAuthSection>,
    /// How long a client has to complete the TLS handshake (and send its PROXY header).
    #[serde(default = "default_handshake_timeout_ms")]
    pub handshake_timeout_ms: u64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertificateEntry {
    /// PEM: the certificate first, then its intermediates.
    pub cert_file: String,
    pub key_file: String,
    /// Server names this certificate is served for; default: its DNS subjectAltNames.
    #[serde(default)]
    pub hosts: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientAuthSection {
    /// PEM CA certificates that sign acceptable client certificates.
    pub ca_file: String,
    /// true: a handshake without a valid client certificate fails. false: a certificate is
    /// verified when one is sent.
    #[serde(default = "yes")]
    pub required: bool,
}

fn default_handshake_timeout_ms() -> u64 {
    10_000
}
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:8081";

fn default_work_stealing() -> bool {
    false
}

fn default_threads() -> usize {
    2
}
fn default_grace_period_seconds() -> u64 {
    10
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenancySection {
    #[serde(default = "yes")]
    pub enabled: bool,
    #[serde(default = "default_strategy")]
    pub strategy: StrategySetting,
    #[serde(default = "default_tenant_header")]
    pub header: String,
    #[serde(default)]
    pub base_domains: Vec<String>,
    #[serde(default)]
    pub tenants: Vec<String>,
    #[serde(default = "default_tenant")]
    pub default_tenant: String,
}

impl Default for TenancySection {
    fn default() -> Self {
        Self {
            enabled: true,
            strategy: default_strategy(),
            header: default_tenant_header(),
            base_domains: Vec::new(),
            tenants: Vec::new(),
            default_tenant: default_tenant(),
        }
    }
}

/// `strategy: host` or `strategy: [host, header]`.
#[derive(Debug, Deserialize)]
#[serde(
    untagged,
    expecting = "one of host, subdomain, header, or a list of them"
)]
pub enum StrategySetting {
    One(StrategyName),
    Ordered(Vec<StrategyName>),
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum StrategyName {
    Host,
    Header,
    Subdomain,
}

fn default_strategy() -> StrategySetting {
    StrategySetting::One(StrategyName::Header)
}
fn default_tenant_header() -> String {
    "X-Tenant".into()
}
fn default_tenant() -> String {
    "default".into()
}
fn yes() -> bool {
    true
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSection {
    pub jwt: JwtSection,
    /// Paths (whole-segment prefixes) that require a Bearer token. A token sent elsewhere is
    /// still verified, so a bad one is never forwarded.
    #[serde(default)]
    pub required_path_prefixes: Vec<String>,
    /// The role that marks an operator (for the admin endpoints).
    #[serde(default)]
    pub admin_role: Option<String>,
    /// Whether a token with `admin_role` may call the proxy for any tenant.
    #[serde(default)]
    pub admin_cross_tenant: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtSection {
    pub algorithms: Vec<String>,
    #[serde(default)]
    pub secret_env: Option<String>,
    /// The HMAC secret in a file (a mounted secret), read again on every reload.
    #[serde(default)]
    pub secret_file: Option<String>,
    #[serde(default)]
    pub public_key_file: Option<String>,
    #[serde(default)]
    pub jwks_file: Option<String>,
    /// The identity provider's key set (HTTPS), fetched at start and refreshed.
    #[serde(default)]
    pub jwks_url: Option<String>,
    /// CA certificates trusted for `jwks_url` instead of the system's roots.
    #[serde(default)]
    pub ca_file: Option<String>,
    /// Tokens naming an unknown `kid` cause at most one fetch per this many seconds.
    #[serde(default = "default_jwks_min_refresh_seconds")]
    pub jwks_min_refresh_seconds: u64,
    #[serde(default)]
    pub issuer: Option<String>,
    #[serde(default)]
    pub audience: Option<String>,
    #[serde(default = "default_tenant_claim")]
    pub tenant_claim: String,
    #[serde(default = "default_roles_claim")]
    pub roles_claim: String,
    #[serde(default = "default_leeway_seconds")]
    pub leeway_seconds: u64,
}

fn default_jwks_min_refresh_seconds() -> u64 {
    30
}

fn default_tenant_claim() -> String {
    "tenant".into()
}
fn default_roles_claim() -> String {
    "roles".into()
}
fn default_leeway_seconds() -> u64 {
    30
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnalyticsSection {
    /// Off: no metrics are recorded or served, and no request log lines are written.
    #[serde(default = "yes")]
    pub enabled: bool,
    #[serde(default = "yes")]
    pub request_logging: bool,
    #[serde(default = "default_metrics_path")]
    pub metrics_path: String,
}

impl Default for AnalyticsSection {
    fn default() -> Self {
        Self {
            enabled: true,
            request_logging: true,
            metrics_path: default_metrics_path(),
        }
    }
}

fn default_metrics_path() -> String {
    "/metrics".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteEntry {
    pub path_prefix: String,
    pub pool: String,
    /// Honour `Idempotency-Key` on this route (the store: the top-level `idempotency`).
    #[serde(default)]
    pub idempotency: Option<RouteIdempotencySection>,
    /// Keep 200 responses to these methods per tenant and path+query (the store: the top-level
    /// `cache`).
    #[serde(default)]
    pub cache: Option<RouteCacheSection>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteCacheSection {
    pub ttl_seconds: u64,
    #[serde(default = "default_cache_methods")]
    pub methods: Vec<String>,
}

fn default_cache_methods() -> Vec<String> {
    vec!["GET".into()]
}

/// The response cache shared by the routes that have `cache`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheSection {
    #[serde(default = "default_cache_max_bytes")]
    pub max_bytes: usize,
}

impl Default for CacheSection {
    fn default() -> Self {
        Self {
            max_bytes: default_cache_max_bytes(),
        }
    }
}

fn default_cache_max_bytes() -> usize {
    64 * 1024 * 1024
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteIdempotencySection {
    /// Requests other than GET, HEAD and OPTIONS without a key are refused (400).
    #[serde(default)]
    pub required: bool,
    /// When the store cannot be reached: `refuse` (503, the default where keys are required) or
    /// `proceed` without the protection (the default where they are optional).
    #[serde(default)]
    pub store_unavailable: Option<StoreUnavailable>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StoreUnavailable {
    Refuse,
    Proceed,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdempotencySection {
    #[serde(default)]
    pub store: IdempotencyStoreName,
    #[serde(default)]
    pub redis: Option<IdempotencyRedisSection>,
    #[serde(default = "default_idempotency_ttl")]
    pub ttl_seconds: u64,
    #[serde(default = "default_max_response_bytes")]
    pub max_response_bytes: usize,
}

impl Default for IdempotencySection {
    fn default() -> Self {
        Self {
            store: IdempotencyStoreName::InMemory,
            redis: None,
            ttl_seconds: default_idempotency_ttl(),
            max_response_bytes: default_max_response_bytes(),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IdempotencyStoreName {
    #[default]
    InMemory,
    Redis,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdempotencyRedisSection {
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default)]
    pub url_env: Option<String>,
}

fn default_idempotency_ttl() -> u64 {
    86_400
}

fn default_max_response_bytes() -> usize {
    64 * 1024
}

pub use super::external_events::*;
pub use super::external_pool::*;
