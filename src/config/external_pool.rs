//! The `pools` section as operators write it: providers, and how the pool selects, checks,
//! ejects and retries them.

use std::collections::BTreeMap;
use std::str::FromStr;

use rust_decimal::Decimal;
use serde::{Deserialize, Deserializer};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolSection {
    pub providers: Vec<ProviderEntry>,
    #[serde(default)]
    pub timeouts: TimeoutsSection,
    #[serde(default)]
    pub selection: SelectionSection,
    /// Absent: no active checks; an ejected provider is then probed with a TCP connect.
    #[serde(default)]
    pub health_check: Option<HealthCheckSection>,
    #[serde(default)]
    pub outlier: OutlierSection,
    #[serde(default)]
    pub retry: RetrySection,
    /// How often providers named by host name are resolved again.
    #[serde(default = "default_dns_refresh_seconds")]
    pub dns_refresh_seconds: u64,
}

fn default_dns_refresh_seconds() -> u64 {
    30
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeoutsSection {
    #[serde(default = "default_connect_ms")]
    pub connect_ms: u64,
    /// Per attempt: the longest wait for the provider's answer, and between its bytes.
    #[serde(default = "default_read_ms")]
    pub read_ms: u64,
    #[serde(default = "default_write_ms")]
    pub write_ms: u64,
    /// Until the response starts, every attempt included.
    #[serde(default = "default_total_ms")]
    pub total_ms: u64,
    /// How long an idle connection to a provider is kept for reuse; keep it below the
    /// provider's own keep-alive timeout so the provider never closes one as it is reused.
    #[serde(default = "default_idle_ms")]
    pub idle_ms: u64,
}

impl Default for TimeoutsSection {
    fn default() -> Self {
        Self {
            connect_ms: default_connect_ms(),
            read_ms: default_read_ms(),
            write_ms: default_write_ms(),
            total_ms: default_total_ms(),
            idle_ms: default_idle_ms(),
        }
    }
}

fn default_connect_ms() -> u64 {
    1_000
}
fn default_read_ms() -> u64 {
    30_000
}
fn default_write_ms() -> u64 {
    10_000
}
fn default_total_ms() -> u64 {
    30_000
}
fn default_idle_ms() -> u64 {
    4_000
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SelectionSection {
    #[serde(default = "default_success_rate_weight")]
    pub success_rate_weight: DecimalSetting,
    #[serde(default = "default_factor_weight")]
    pub latency_weight: DecimalSetting,
    #[serde(default = "default_factor_weight")]
    pub cost_weight: DecimalSetting,
    #[serde(default = "default_reference_amount")]
    pub reference_amount: DecimalSetting,
    #[serde(default = "default_currency_header")]
    pub currency_header: String,
}

impl Default for SelectionSection {
    fn default() -> Self {
        Self {
            success_rate_weight: default_success_rate_weight(),
            latency_weight: default_factor_weight(),
            cost_weight: default_factor_weight(),
            reference_amount: default_reference_amount(),
            currency_header: default_currency_header(),
        }
    }
}

fn default_success_rate_weight() -> DecimalSetting {
    DecimalSetting(Decimal::ONE)
}
fn default_factor_weight() -> DecimalSetting {
    DecimalSetting(Decimal::new(2, 1))
}
fn default_reference_amount() -> DecimalSetting {
    DecimalSetting(Decimal::ONE_HUNDRED)
}
fn default_currency_header() -> String {
    "X-Currency".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheckSection {
    #[serde(default = "default_health_path")]
    pub path: String,
    #[serde(default = "default_interval_ms")]
    pub interval_ms: u64,
    #[serde(default = "default_check_timeout_ms")]
    pub timeout_ms: u64,
    #[serde(default = "default_threshold")]
    pub healthy_threshold: u32,
    #[serde(default = "default_threshold")]
    pub unhealthy_threshold: u32,
    /// Each check waits `interval_ms` plus a random 0 to `jitter_ms`.
    #[serde(default = "default_jitter_ms")]
    pub jitter_ms: u64,
}

fn default_health_path() -> String {
    "/health".into()
}
fn default_interval_ms() -> u64 {
    2_000
}
fn default_check_timeout_ms() -> u64 {
    1_000
}
fn default_threshold() -> u32 {
    2
}
fn default_jitter_ms() -> u64 {
    100
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutlierSection {
    #[serde(default = "default_consecutive_failures")]
    pub consecutive_failures: u32,
    #[serde(default = "default_failure_on")]
    pub failure_on: Vec<FailureKind>,
    #[serde(default = "default_base_ejection_ms")]
    pub base_ejection_ms: u64,
    #[serde(default = "default_max_ejection_ms")]
    pub max_ejection_ms: u64,
    #[serde(default = "default_max_ejection_percent")]
    pub max_ejection_percent: u32,
}

impl Default for OutlierSection {
    fn default() -> Self {
        Self {
            consecutive_failures: default_consecutive_failures(),
            failure_on: default_failure_on(),
            base_ejection_ms: default_base_ejection_ms(),
            max_ejection_ms: default_max_ejection_ms(),
            max_ejection_percent: default_max_ejection_percent(),
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    ConnectError,
    Timeout,
    #[serde(rename = "5xx")]
    Status5xx,
}

fn default_consecutive_failures() -> u32 {
    5
}
fn default_failure_on() -> Vec<FailureKind> {
    vec![
        FailureKind::ConnectError,
        FailureKind::Timeout,
        FailureKind::Status5xx,
    ]
}
fn default_base_ejection_ms() -> u64 {
    5_000
}
fn default_max_ejection_ms() -> u64 {
    60_000
}
fn default_max_ejection_percent() -> u32 {
    50
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetrySection {
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    #[serde(default = "default_budget_percent")]
    pub budget_percent: u32,
    /// Methods that may be sent again after a provider got them (idempotent ones only).
    #[serde(default = "default_retry_methods")]
    pub methods: Vec<String>,
}

impl Default for RetrySection {
    fn default() -> Self {
        Self {
            max_attempts: default_max_attempts(),
            budget_percent: default_budget_percent(),
            methods: default_retry_methods(),
        }
    }
}

fn default_retry_methods() -> Vec<String> {
    ["GET", "HEAD", "PUT", "DELETE", "OPTIONS"]
        .map(String::from)
        .to_vec()
}

fn default_max_attempts() -> u32 {
    2
}
fn default_budget_percent() -> u32 {
    20
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderEntry {
    pub name: String,
    /// `ip:port` or `host:port`; a host name is resolved in the background, at start and then
    /// every `dns_refresh_seconds`.
    pub address: String,
    #[serde(default = "default_weight")]
    pub weight: u32,
    #[serde(default)]
    pub cost: CostSection,
    /// ISO 4217 codes; empty: any currency.
    #[serde(default)]
    pub currencies: Vec<String>,
    /// Tenants served; empty: every tenant.
    #[serde(default)]
    pub tenants: Vec<String>,
    /// Credentials added towards this provider only, never returned to the client.
    #[serde(default)]
    pub headers: BTreeMap<String, SecretRef>,
    /// HTTPS to this provider; `tls: {}` verifies it against the system's roots.
    #[serde(default)]
    pub tls: Option<ProviderTlsSection>,
}

/// How payedge speaks TLS to one provider. Verification of the chain and the host name is always
/// on: there is no key to turn it off.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderTlsSection {
    /// The server name sent and verified; default: the address's host.
    #[serde(default)]
    pub sni: Option<String>,
    /// PEM CA certificates trusted for this provider instead of the system's roots.
    #[serde(default)]
    pub ca_file: Option<String>,
    /// Mutual TLS: the certificate (chain) and key payedge presents.
    #[serde(default)]
    pub client_cert_file: Option<String>,
    #[serde(default)]
    pub client_key_file: Option<String>,
}

fn default_weight() -> u32 {
    1
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CostSection {
    #[serde(default)]
    pub percent: DecimalSetting,
    #[serde(default)]
    pub fixed: DecimalSetting,
}

/// A secret named by where it is: the environment variable, or the file (a mounted secret; read
/// again on every reload), that holds it. Exactly one of the two.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretRef {
    #[serde(default)]
    pub secret_env: Option<String>,
    #[serde(default)]
    pub secret_file: Option<String>,
}

/// An exact decimal, written as a YAML number (`1.9`) or string (`"0.20"`); never read through a
/// float, so `0.1` is exactly one tenth.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DecimalSetting(pub Decimal);

impl<'de> Deserialize<'de> for DecimalSetting {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let text = match serde_yaml::Value::deserialize(deserializer)? {
            serde_yaml::Value::Number(n) => n.to_string(),
            serde_yaml::Value::String(s) => s,
            other => {
                return Err(D::Error::custom(format!(
                    "expected a decimal number, found {other:?}"
                )));
            }
        };
        Decimal::from_str(text.trim())
            .or_else(|_| Decimal::from_scientific(text.trim()))
            .map(DecimalSetting)
            .map_err(|_| D::Error::custom(format!("{text:?} is not a decimal number")))
    }
}
