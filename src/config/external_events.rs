//! The `notifications` and `triggers` sections as operators write them.

use std::collections::BTreeMap;

use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotificationsSection {
    /// false: events are still detected (business metrics and log lines) but published nowhere.
    #[serde(default = "yes")]
    pub enabled: bool,
    #[serde(default)]
    pub provider: BusProvider,
    #[serde(default)]
    pub redis: Option<RedisSection>,
    /// Events waiting to be published; beyond this they are dropped and counted.
    #[serde(default = "default_queue_capacity")]
    pub queue_capacity: usize,
    /// The `source` of every event is `payedge/{instance}`; default: the host name.
    #[serde(default)]
    pub instance: Option<String>,
}

impl Default for NotificationsSection {
    fn default() -> Self {
        Self {
            enabled: true,
            provider: BusProvider::default(),
            redis: None,
            queue_capacity: default_queue_capacity(),
            instance: None,
        }
    }
}

fn yes() -> bool {
    true
}
fn default_queue_capacity() -> usize {
    10_000
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum BusProvider {
    #[default]
    InMemory,
    Redis,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisSection {
    /// `redis://host:port/db` without credentials; use `url_env` when the URL holds a password.
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default)]
    pub url_env: Option<String>,
    #[serde(default = "default_channel_prefix")]
    pub channel_prefix: String,
}

fn default_channel_prefix() -> String {
    "payedge:events:".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TriggerEntry {
    pub name: String,
    #[serde(default = "yes")]
    pub enabled: bool,
    pub event: String,
    #[serde(rename = "match")]
    pub matcher: TriggerMatch,
    /// Event field name → JSON pointer into the response body.
    #[serde(default)]
    pub fields: BTreeMap<String, String>,
    #[serde(default)]
    pub required: Vec<String>,
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: usize,
    /// The business log line's message template; `{Property}` placeholders are filled from
    /// TenantId, CorrelationId, EventType and the event's fields (first letter upper-cased).
    #[serde(default)]
    pub log_message: Option<String>,
}

fn default_max_body_bytes() -> usize {
    64 * 1024
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TriggerMatch {
    #[serde(default)]
    pub method: Option<String>,
    /// Exactly this path; or `path_prefix` (whole segments).
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default)]
    pub path_prefix: Option<String>,
    /// Empty: any 2xx.
    #[serde(default)]
    pub status: Vec<u16>,
    /// The response must be JSON (application/json or application/*+json).
    #[serde(default = "yes")]
    pub json: bool,
}
