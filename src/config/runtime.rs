//! The validated configuration the gateway runs with. Built once at start by `validate`; nothing
//! here needs checking again on the request path.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, HeaderValue};
use payedge_filters::auth::{JwtSettings, JwtVerifier};
use payedge_filters::tenant::TenancySettings;
use payedge_filters::triggers::TriggerRule;

use crate::events::LogFormat;
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
}

#[derive(Debug, Clone)]
pub struct HubSettings {
    pub path: String,
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
    pub listen: SocketAddr,
    pub admin_listen: SocketAddr,
    pub threads: usize,
    pub grace_period: Duration,
}

#[derive(Debug)]
pub struct AuthSettings {
    pub jwt: JwtSettings,
    pub verifier: Arc<JwtVerifier>,
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
    pub address: SocketAddr,
    pub weight: u32,
    pub cost: Cost,
    pub currencies: Vec<String>,
    pub tenants: Vec<String>,
    /// Credential headers, values read from the environment at start.
    pub headers: Vec<(HeaderName, HeaderValue)>,
}
