//! Validation of the `notifications` and `triggers` sections.

use std::time::Duration;

use payedge_filters::path::check_path;
use payedge_filters::triggers::{PathMatch, TriggerRule, TriggerSpec};

use super::external::*;
use super::runtime::*;
use super::validate::Validator;
use crate::events::{LogFormat, MAX_TRIGGERS};

const MAX_QUEUE: usize = 1_000_000;
const MAX_CONNECTION_QUEUE: usize = 65_536;
const MAX_HUB_TIMER_MS: u64 = 3_600_000;
const MAX_HUB_MESSAGE: usize = 1024 * 1024;
const MAX_TRIGGER_BODY: usize = 16 * 1024 * 1024;
const MAX_HISTORY_EVENTS: usize = 100_000;
const MAX_HUB_CONNECTIONS: usize = 10_000_000;
const MAX_NEGOTIATIONS_PER_MINUTE: u32 = 1_000_000;
const MAX_RECONNECT_WINDOW: u64 = 3600;
const MIN_RECONNECT_BUFFER: usize = 1024;
const MAX_RECONNECT_BUFFER: usize = 64 * 1024 * 1024;
const MAX_HISTORY_AGE: u64 = 7 * 24 * 3600;

impl Validator<'_> {
    pub(super) fn notifications(&mut self, n: &NotificationsSection) -> NotificationSettings {
        if n.queue_capacity == 0 || n.queue_capacity > MAX_QUEUE {
            self.issue(
                "notifications.queue_capacity",
                format!("must be between 1 and {MAX_QUEUE}"),
            );
        }
        let instance = match &n.instance {
            Some(name) => {
                if name.is_empty()
                    || !name
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
                {
                    self.issue(
                        "notifications.instance",
                        format!("{name:?} is not a name of letters, digits, '.', '_' or '-'"),
                    );
                }
                name.clone()
            }
            None => default_instance(),
        };
        let bus = match n.provider {
            BusProvider::InMemory => BusSettings::InMemory,
            BusProvider::Redis => match &n.redis {
                None => {
                    self.issue(
                        "notifications.redis",
                        "the redis provider needs this section",
                    );
                    BusSettings::InMemory
                }
                Some(r) => self.redis(r),
            },
        };
        NotificationSettings {
            enabled: n.enabled,
            bus,
            queue_capacity: n.queue_capacity,
            source: format!("payedge/{instance}"),
            hub: self.hub(n),
            history: self.history(&n.history),
        }
    }

    fn history(&mut self, h: &HistorySection) -> crate::events::HistoryLimits {
        if h.max_events == 0 || h.max_events > MAX_HISTORY_EVENTS {
            self.issue(
                "notifications.history.max_events",
                format!("must be between 1 and {MAX_HISTORY_EVENTS}"),
            );
        }
        if h.max_age_seconds == 0 || h.max_age_seconds > MAX_HISTORY_AGE {
            self.issue(
                "notifications.history.max_age_seconds",
                format!("must be between 1 and {MAX_HISTORY_AGE} (7 days)"),
            );
        }
        crate::events::HistoryLimits {
            max_events: h.max_events,
            max_age: Duration::from_secs(h.max_age_seconds),
        }
    }

    fn hub(&mut self, n: &NotificationsSection) -> HubSettings {
        if check_path(&n.hub_path).is_err() || n.hub_path == "/" {
            self.issue(
                "notifications.hub_path",
                format!(
                    "{:?} is not an absolute path like /hubs/notifications",
                    n.hub_path
                ),
            );
        } else if super::validate::hub_takes_admin_path(&n.hub_path) {
            self.issue(
                "notifications.hub_path",
                format!(
                    "{:?} would take an admin listener path (/admin/, /console/, /healthz, \
                     /readyz): choose another, like /hubs/notifications",
                    n.hub_path
                ),
            );
        }
        if n.connection_queue == 0 || n.connection_queue > MAX_CONNECTION_QUEUE {
            self.issue(
                "notifications.connection_queue",
                format!("must be between 1 and {MAX_CONNECTION_QUEUE}"),
            );
        }
        for (key, ms) in [
            ("keepalive_interval_ms", n.keepalive_interval_ms),
            ("client_timeout_ms", n.client_timeout_ms),
            ("handshake_timeout_ms", n.handshake_timeout_ms),
        ] {
            if ms == 0 || ms > MAX_HUB_TIMER_MS {
                self.issue(
                    format!("notifications.{key}"),
                    format!("must be between 1 and {MAX_HUB_TIMER_MS}"),
                );
            }
        }
        if n.client_timeout_ms <= n.keepalive_interval_ms {
            self.issue(
                "notifications.client_timeout_ms",
                "must be longer than keepalive_interval_ms, or healthy clients time out",
            );
        }
        if n.max_message_bytes < 1024 || n.max_message_bytes > MAX_HUB_MESSAGE {
            self.issue(
                "notifications.max_message_bytes",
                format!("must be between 1024 and {MAX_HUB_MESSAGE}"),
            );
        }
        let mut allowed_origins = Vec::new();
        for (i, origin) in n.cors.allowed_origins.iter().enumerate() {
            match crate::hub::normalize_origin(origin) {
                Some(o) => allowed_origins.push(o),
                None => self.issue(
                    format!("notifications.cors.allowed_origins[{i}]"),
                    format!(
                        "{origin:?} is not an origin like https://dashboard.example.com \
                         (scheme, host and port only; no wildcards)"
                    ),
                ),
            }
        }
        for (key, value) in [
            (
                "max_connections_per_subject",
                n.limits.max_connections_per_subject,
            ),
            (
                "max_connections_per_tenant",
                n.limits.max_connections_per_tenant,
            ),
        ] {
            if value == 0 || value > MAX_HUB_CONNECTIONS {
                self.issue(
                    format!("notifications.limits.{key}"),
                    format!("must be between 1 and {MAX_HUB_CONNECTIONS}"),
                );
            }
        }
        if !(1..=MAX_NEGOTIATIONS_PER_MINUTE).contains(&n.limits.negotiations_per_minute) {
            self.issue(
                "notifications.limits.negotiations_per_minute",
                format!("must be between 1 and {MAX_NEGOTIATIONS_PER_MINUTE}"),
            );
        }
        let reconnect = &n.stateful_reconnect;
        if reconnect.window_seconds == 0 || reconnect.window_seconds > MAX_RECONNECT_WINDOW {
            self.issue(
                "notifications.stateful_reconnect.window_seconds",
                format!("must be between 1 and {MAX_RECONNECT_WINDOW}"),
            );
        }
        if !(MIN_RECONNECT_BUFFER..=MAX_RECONNECT_BUFFER).contains(&reconnect.buffer_bytes) {
            self.issue(
                "notifications.stateful_reconnect.buffer_bytes",
                format!("must be between {MIN_RECONNECT_BUFFER} and {MAX_RECONNECT_BUFFER}"),
            );
        }
        HubSettings {
            stateful_reconnect: reconnect.enabled.then(|| crate::hub::StatefulSettings {
                window: Duration::from_secs(reconnect.window_seconds),
                buffer_bytes: reconnect.buffer_bytes,
            }),
            allowed_origins,
            limits: crate::hub::LimitSettings {
                per_subject: n.limits.max_connections_per_subject,
                per_tenant: n.limits.max_connections_per_tenant,
                negotiations_per_minute: n.limits.negotiations_per_minute,
            },
            path: n.hub_path.clone(),
            connection_queue: n.connection_queue,
            keepalive: Duration::from_millis(n.keepalive_interval_ms),
            client_timeout: Duration::from_millis(n.client_timeout_ms),
            handshake_timeout: Duration::from_millis(n.handshake_timeout_ms),
            max_message_bytes: n.max_message_bytes,
        }
    }

    fn redis(&mut self, r: &RedisSection) -> BusSettings {
        let url = match (&r.url, &r.url_env) {
            (Some(url), None) => Some(url.clone()),
            (None, Some(name)) => self.env_secret("notifications.redis.url_env", name),
            _ => {
                self.issue("notifications.redis", "set exactly one of url and url_env");
                None
            }
        };
        let target = url
            .as_deref()
            .map(crate::events::redis_target::RedisTarget::parse);
        if let Some(Err(e)) = &target {
            let key = if r.url.is_some() { "url" } else { "url_env" };
            self.issue(
                format!("notifications.redis.{key}"),
                format!("not a Redis (redis://) or Redis Cluster (redis+cluster://) URL: {e}"),
            );
        }
        if r.channel_prefix.is_empty() || r.channel_prefix.contains(char::is_whitespace) {
            self.issue(
                "notifications.redis.channel_prefix",
                "must be a non-empty string without spaces",
            );
        }
        // On a cluster the tenant in braces is the key's hash tag: braces in the prefix would
        // take its place and put every tenant in one slot (or split a tenant's key and channel).
        if matches!(&target, Some(Ok(t)) if t.is_cluster()) && r.channel_prefix.contains(['{', '}'])
        {
            self.issue(
                "notifications.redis.channel_prefix",
                "must not contain braces with a Redis Cluster (the tenant is the hash tag)",
            );
        }
        BusSettings::Redis {
            url: url.unwrap_or_default(),
            channel_prefix: r.channel_prefix.clone(),
        }
    }

    pub(super) fn triggers(&mut self, triggers: &[TriggerEntry]) -> Vec<TriggerSettings> {
        let mut out = Vec::new();
        if triggers.iter().filter(|t| t.enabled).count() > MAX_TRIGGERS {
            self.issue(
                "triggers",
                format!("at most {MAX_TRIGGERS} triggers can be enabled"),
            );
        }
        for (i, t) in triggers.iter().enumerate() {
            let key = format!("triggers[{i}]");
            if triggers[..i].iter().any(|o| o.name == t.name) {
                self.issue(format!("{key}.name"), format!("{:?} is used twice", t.name));
            }
            let m = &t.matcher;
            let path = match (&m.path, &m.path_prefix) {
                (Some(p), None) => Some((p, PathMatch::Exact(p.clone()), "path")),
                (None, Some(p)) => Some((p, PathMatch::Prefix(p.clone()), "path_prefix")),
                _ => {
                    self.issue(
                        format!("{key}.match"),
                        "set exactly one of path and path_prefix",
                    );
                    None
                }
            };
            if let Some((p, _, field)) = &path
                && check_path(p).is_err()
            {
                self.issue(
                    format!("{key}.match.{field}"),
                    format!("{p:?} is not an absolute path in normal form"),
                );
            }
            if let Some(method) = &m.method
                && http::Method::from_bytes(method.as_bytes()).is_err()
            {
                self.issue(
                    format!("{key}.match.method"),
                    format!("{method:?} is not a method"),
                );
            }
            if t.max_body_bytes > MAX_TRIGGER_BODY {
                self.issue(
                    format!("{key}.max_body_bytes"),
                    format!("must be at most {MAX_TRIGGER_BODY}"),
                );
            }
            let Some((_, path, _)) = path else { continue };
            let spec = TriggerSpec {
                name: t.name.clone(),
                event: t.event.clone(),
                method: m.method.as_ref().map(|s| s.to_ascii_uppercase()),
                path,
                statuses: m.status.clone(),
                require_json: m.json,
                fields: t
                    .fields
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
                required: t.required.clone(),
                max_body_bytes: t.max_body_bytes,
            };
            match TriggerRule::new(spec) {
                Ok(rule) if t.enabled => out.push(TriggerSettings {
                    rule,
                    log: LogFormat::new(t.log_message.as_deref(), t.fields.keys().cloned()),
                }),
                Ok(_) => {}
                Err(e) => self.issue(key, e.to_string()),
            }
        }
        out
    }
}

fn default_instance() -> String {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "payedge".into())
}
