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
    /// Where the notification hub listens on the admin service.
    #[serde(default = "default_hub_path")]
    pub hub_path: String,
    /// Messages waiting for one hub connection; a client that lets it fill is closed.
    #[serde(default = "default_connection_queue")]
    pub connection_queue: usize,
    #[serde(default = "default_keepalive_ms")]
    pub keepalive_interval_ms: u64,
    #[serde(default = "default_client_timeout_ms")]
    pub client_timeout_ms: u64,
    #[serde(default = "default_handshake_timeout_ms")]
    pub handshake_timeout_ms: u64,
    /// The largest message a hub client may send.
    #[serde(default = "default_max_message_bytes")]
    pub max_message_bytes: usize,
    /// Each tenant's recent events, for clients resuming after a lost connection.
    #[serde(default)]
    pub history: HistorySection,
    /// Web pages (origins) that may use the hub from a browser.
    #[serde(default)]
    pub cors: CorsSection,
    #[serde(default)]
    pub limits: HubLimitsSection,
    /// SignalR stateful reconnect (`withStatefulReconnect()` in the official clients).
    #[serde(default)]
    pub stateful_reconnect: StatefulReconnectSection,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatefulReconnectSection {
    #[serde(default = "yes")]
    pub enabled: bool,
    /// How long a connection whose WebSocket broke waits for its client to come back.
    #[serde(default = "default_reconnect_window")]
    pub window_seconds: u64,
    /// Unacknowledged message bytes kept per connection for the resend.
    #[serde(default = "default_reconnect_buffer")]
    pub buffer_bytes: usize,
}

impl Default for StatefulReconnectSection {
    fn default() -> Self {
        Self {
            enabled: true,
            window_seconds: default_reconnect_window(),
            buffer_bytes: default_reconnect_buffer(),
        }
    }
}

fn default_reconnect_window() -> u64 {
    15
}
fn default_reconnect_buffer() -> usize {
    100_000
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CorsSection {
    /// Exact origins (`https://dashboard.example.com`); none: no browser page may connect.
    #[serde(default)]
    pub allowed_origins: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HubLimitsSection {
    #[serde(default = "default_per_subject")]
    pub max_connections_per_subject: usize,
    #[serde(default = "default_per_tenant")]
    pub max_connections_per_tenant: usize,
    /// Negotiations one caller (tenant and subject) may make per minute.
    #[serde(default = "default_negotiations_per_minute")]
    pub negotiations_per_minute: u32,
}

impl Default for HubLimitsSection {
    fn default() -> Self {
        Self {
            max_connections_per_subject: default_per_subject(),
            max_connections_per_tenant: default_per_tenant(),
            negotiations_per_minute: default_negotiations_per_minute(),
        }
    }
}

fn default_per_subject() -> usize {
    100
}
fn default_negotiations_per_minute() -> u32 {
    120
}
fn default_per_tenant() -> usize {
    10_000
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistorySection {
    #[serde(default = "default_history_events")]
    pub max_events: usize,
    #[serde(default = "default_history_age")]
    pub max_age_seconds: u64,
}

impl Default for HistorySection {
    fn default() -> Self {
        Self {
            max_events: default_history_events(),
            max_age_seconds: default_history_age(),
        }
    }
}

fn default_history_events() -> usize {
    1000
}
fn default_history_age() -> u64 {
    600
}

impl Default for NotificationsSection {
    fn default() -> Self {
        Self {
            enabled: true,
            provider: BusProvider::default(),
            redis: None,
            queue_capacity: default_queue_capacity(),
            instance: None,
            hub_path: default_hub_path(),
            connection_queue: default_connection_queue(),
            keepalive_interval_ms: default_keepalive_ms(),
            client_timeout_ms: default_client_timeout_ms(),
            handshake_timeout_ms: default_handshake_timeout_ms(),
            max_message_bytes: default_max_message_bytes(),
            history: HistorySection::default(),
            cors: CorsSection::default(),
            limits: HubLimitsSection::default(),
            stateful_reconnect: StatefulReconnectSection::default(),
        }
    }
}

fn default_hub_path() -> String {
    "/hubs/notifications".into()
}
fn default_connection_queue() -> usize {
    256
}
fn default_keepalive_ms() -> u64 {
    15_000
}
fn default_client_timeout_ms() -> u64 {
    30_000
}
fn default_handshake_timeout_ms() -> u64 {
    15_000
}
fn default_max_message_bytes() -> usize {
    32 * 1024
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
