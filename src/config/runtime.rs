//! The validated configuration the gateway runs with. Built once at start by `validate`; nothing
//! here needs checking again on the request path.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, HeaderValue};
use payedge_filters::auth::{JwtSettings, JwtVerifier};
use payedge_filters::forwarded::TrustedProxies;
use payedge_filters::server_names::HostPattern;
use payedge_filters::tenant::TenancySettings;
use payedge_filters::triggers::TriggerRule;
use pingora::protocols::tls::CaType;
use pingora::utils::tls::CertKey;
use rustls::RootCertStore;

use super::issues::ConfigIssue;
use crate::events::LogFormat;
use crate::tls::KeyPair;
use payedge_upstreams::{Cost, PoolPolicy};

#[derive(Debug)]
pub struct Config {
    pub source: PathBuf,
    pub server: ServerSettings,
    pub tenancy: TenancySettings,
    /// The header a tenant is read from (header strategy) and sent upstream in.
    pub tenant_header: HeaderName,
    pub auth: Option<AuthSettings>,
    pub analytics: AnalyticsSettings,
    pub routes: Vec<Route>,
    pub pools: Vec<PoolSettings>,
    pub notifications: NotificationSettings,
    /// The enabled triggers.
    pub triggers: Vec<TriggerSettings>,
    pub idempotency: IdempotencySettings,
    /// The response cache's bound, in bytes of bodies and headers (restart).
    pub cache_max_bytes: usize,
    /// What is allowed but deserves attention (a certificate expiring soon).
    pub warnings: Vec<ConfigIssue>,
}

#[derive(Debug, Clone)]
pub struct NotificationSettings {
    /// false: events are detected (metrics, business log) but not published.
    pub enabled: bool,
    pub bus: BusSettings,
    pub queue_capacity: usize,
    /// CloudEvents `source`: `payedge/{instance}`.
    pub source: String,
    pub hub: HubSettings,
    pub history: crate::events::HistoryLimits,
}

#[derive(Debug, Clone)]
pub struct HubSettings {
    pub path: String,
    /// Origins (normalized) whose pages may negotiate and connect.
    pub allowed_origins: Vec<String>,
    pub limits: crate::hub::LimitSettings,
    /// `None`: stateful reconnect is not offered.
    pub stateful_reconnect: Option<crate::hub::StatefulSettings>,
    pub connection_queue: usize,
    pub keepalive: Duration,
    pub client_timeout: Duration,
    pub handshake_timeout: Duration,
    pub max_message_bytes: usize,
}

#[derive(Debug, Clone)]
pub enum BusSettings {
    InMemory,
    Redis { url: String, channel_prefix: String },
}

#[derive(Debug)]
pub struct TriggerSettings {
    pub rule: TriggerRule,
    /// The business log line's template and property names.
    pub log: LogFormat,
}

#[derive(Debug, Clone)]
pub struct ServerSettings {
    /// Plain HTTP; `None` when only TLS is served.
    pub listen: Option<SocketAddr>,
    pub admin_listen: Option<SocketAddr>,
    pub threads: usize,
    /// Pingora's work-stealing runtime (the default; off: one single-threaded runtime per thread).
    pub work_stealing: bool,
    pub grace_period: Duration,
    pub tls: Option<TlsListener>,
    pub admin_tls: Option<TlsListener>,
    pub trusted_proxies: TrustedProxies,
    pub proxy_protocol: bool,
    /// Where a binary upgrade hands over the listening sockets (`None`: one per proxy port in
    /// the system's temporary folder).
    pub upgrade_sock: Option<PathBuf>,
    pub limits: payedge_filters::request_head::HeadLimits,
    /// 0: no cap.
    pub max_connections_per_client: u32,
    pub request_head_timeout: Duration,
}

impl ServerSettings {
    /// Where the proxy accepts connections first: plain if it listens, else TLS.
    pub fn proxy_addr(&self) -> Option<SocketAddr> {
        self.listen.or(self.tls.as_ref().map(|t| t.listen))
    }

    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_listen
            .or(self.admin_tls.as_ref().map(|t| t.listen))
    }
}

/// A TLS listener with its certificates loaded and checked.
#[derive(Debug, Clone)]
pub struct TlsListener {
    pub listen: SocketAddr,
    /// The first one is served when no other matches the server name.
    pub certificates: Vec<ServerCertificate>,
    pub http2: bool,
    pub client_auth: Option<ClientAuth>,
    pub handshake_timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct ServerCertificate {
    /// Its first host: the `certificate` label of the expiry metric.
    pub label: String,
    pub hosts: Vec<HostPattern>,
    pub pair: KeyPair,
}

#[derive(Debug, Clone)]
pub struct ClientAuth {
    pub roots: Arc<RootCertStore>,
    pub required: bool,
    /// Identifies the CA set (a digest of its certificates): a connection verified under
    /// another set, before a reload, is not trusted with a client identity any more.
    pub id: u64,
}

#[derive(Debug)]
pub struct AuthSettings {
    pub jwt: JwtSettings,
    pub verifier: Arc<JwtVerifier>,
    /// Where the remote key set comes from (`auth.jwt.jwks_url`).
    pub jwks: Option<JwksSource>,
    pub required_path_prefixes: Vec<String>,
    pub admin_role: Option<String>,
    pub admin_cross_tenant: bool,
}

impl AuthSettings {
    /// The role allowed to act for any tenant on the proxy, if the configuration allows one.
    pub fn cross_tenant_role(&self) -> Option<&str> {
        self.admin_cross_tenant
            .then_some(self.admin_role.as_deref())
            .flatten()
    }
}

#[derive(Debug, Clone)]
pub struct AnalyticsSettings {
    pub enabled: bool,
    pub request_logging: bool,
    pub metrics_path: String,
}

impl AnalyticsSettings {
    pub fn metrics_enabled(&self) -> bool {
        self.enabled
    }

    pub fn request_logs_enabled(&self) -> bool {
        self.enabled && self.request_logging
    }
}

#[derive(Debug, Clone)]
pub struct Route {
    pub path_prefix: String,
    /// Index into [`Config::pools`].
    pub pool: usize,
    /// `Idempotency-Key` is honoured here.
    pub idempotency: Option<RouteIdempotency>,
    /// 200 responses are kept per tenant and path+query.
    pub cache: Option<RouteCache>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteCache {
    pub ttl: Duration,
    pub get: bool,
    pub head: bool,
}

impl RouteCache {
    pub fn caches(&self, method: &http::Method) -> bool {
        (self.get && method == http::Method::GET) || (self.head && method == http::Method::HEAD)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteIdempotency {
    pub required: bool,
    /// When the store cannot be reached: refuse (503) rather than proceed unprotected.
    pub refuse_when_unavailable: bool,
}

/// Where idempotency keys are kept, and for how long.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencySettings {
    /// `None`: in this process's memory (one instance only).
    pub redis_url: Option<String>,
    pub ttl: Duration,
    pub max_response_bytes: usize,
}

#[derive(Debug, Clone)]
pub struct PoolSettings {
    pub name: String,
    pub providers: Vec<ProviderSettings>,
    pub timeouts: Timeouts,
    pub policy: PoolPolicy,
    /// The request header naming the payment's currency.
    pub currency_header: HeaderName,
    pub health_check: Option<HealthCheckSettings>,
    /// Methods that may be sent to another provider after one got them.
    pub retry_methods: Vec<http::Method>,
    pub dns_refresh: Duration,
}

#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub connect: Duration,
    /// Per attempt.
    pub read: Duration,
    pub write: Duration,
    /// Until the response starts, every attempt included.
    pub total: Duration,
    pub idle: Duration,
}

#[derive(Debug, Clone)]
pub struct HealthCheckSettings {
    pub path: String,
    pub interval: Duration,
    pub timeout: Duration,
    pub jitter: Duration,
}

#[derive(Debug, Clone)]
pub struct ProviderSettings {
    pub name: String,
    pub address: ProviderAddress,
    /// `None`: plain HTTP.
    pub tls: Option<UpstreamTls>,
    pub weight: u32,
    pub cost: Cost,
    pub currencies: Vec<String>,
    pub tenants: Vec<String>,
    /// Credential headers, values read from the environment at start.
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

/// Where a provider listens: an address, or a name resolved in the background.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderAddress {
    /// The host as written (lower case; IPv6 without brackets).
    pub host: String,
    pub port: u16,
    /// Set when the host is an IP address: nothing to resolve.
    pub ip: Option<IpAddr>,
}

impl ProviderAddress {
    pub fn socket_addr(&self) -> Option<SocketAddr> {
        self.ip.map(|ip| SocketAddr::new(ip, self.port))
    }
}

impl std::fmt::Display for ProviderAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.ip {
            Some(IpAddr::V6(_)) => write!(f, "[{}]:{}", self.host, self.port),
            _ => write!(f, "{}:{}", self.host, self.port),
        }
    }
}

/// HTTPS to a provider. The chain and the host name are always verified.
#[derive(Clone)]
pub struct UpstreamTls {
    /// The server name sent and verified (never empty: Pingora skips verification without one).
    pub sni: String,
    /// Trusted CAs instead of the system's roots.
    pub ca: Option<Arc<CaType>>,
    /// Mutual TLS: what payedge presents.
    pub client_cert: Option<Arc<CertKey>>,
    /// A digest of the CA and client certificate: connections made under other ones are never
    /// reused for this provider (Pingora's pool key leaves the CA out).
    pub identity: u64,
}

impl std::fmt::Debug for UpstreamTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamTls")
            .field("sni", &self.sni)
            .field("custom_ca", &self.ca.is_some())
            .field("client_cert", &self.client_cert.is_some())
            .finish()
    }
}

/// An identity provider's JWKS endpoint: `https://host[:port]/path`.
#[derive(Clone)]
pub struct JwksSource {
    pub url: String,
    pub host: String,
    pub port: u16,
    /// Path and query.
    pub path: String,
    /// Trusted CAs instead of the system's roots.
    pub ca: Option<Arc<CaType>>,
    /// Identifies the CA file's content, so a reload that changes it starts a new fetcher.
    pub ca_digest: Option<String>,
    /// Unknown kids cause at most one fetch per this interval.
    pub min_refresh: std::time::Duration,
}

impl std::fmt::Debug for JwksSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwksSource")
            .field("url", &self.url)
            .field("custom_ca", &self.ca.is_some())
            .finish()
    }
}
