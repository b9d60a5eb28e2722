//! The configuration as operators write it. Every struct rejects unknown keys; defaults are the
//! ones the reference file (conf/payedge.yaml) documents. Nothing here is trusted until
//! `validate` has turned it into the runtime configuration.

use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSection {
    #[serde(default = "default_listen")]
    pub listen: String,
    #[serde(default = "default_admin_listen")]
    pub admin_listen: String,
    /// Worker threads of the proxy service.
    #[serde(default = "default_threads")]
    pub threads: usize,
    /// How long SIGTERM waits for in-flight requests before the process exits.
    #[serde(default = "default_grace_period_seconds")]
    pub grace_period_seconds: u64,
}

impl Default for ServerSection {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            admin_listen: default_admin_listen(),
            threads: default_threads(),
            grace_period_seconds: default_grace_period_seconds(),
        }
    }
}

fn default_listen() -> String {
    "127.0.0.1:8080".into()
}
fn default_admin_listen() -> String {
    "127.0.0.1:8081".into()
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
    #[serde(default)]
    pub public_key_file: Option<String>,
    #[serde(default)]
    pub jwks_file: Option<String>,
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
}

pub use super::external_events::*;
pub use super::external_pool::*;
