//! The keys a reload cannot change in place: what Pingora bound or built at start (listeners,
//! threads, the PROXY protocol step), what the event bus and the hub were started with, and
//! whether metrics exist. A reload that changes one fails and says which; a restart (or a binary
//! upgrade) applies it.

use crate::config::{BusSettings, Config};

/// The first key (in the configuration's order) whose change needs a restart, if any.
pub fn needs_restart(old: &Config, new: &Config) -> Option<&'static str> {
    let (o, n) = (&old.server, &new.server);
    let listen = |t: &Option<crate::config::TlsListener>| t.as_ref().map(|t| t.listen);
    let (o_hub, n_hub) = (&old.notifications.hub, &new.notifications.hub);
    let checks: [(&'static str, bool); 22] = [
        ("server.listen", o.listen != n.listen),
        ("server.admin_listen", o.admin_listen != n.admin_listen),
        ("server.threads", o.threads != n.threads),
        ("server.work_stealing", o.work_stealing != n.work_stealing),
        (
            "cache.max_bytes",
            old.cache_max_bytes != new.cache_max_bytes,
        ),
        (
            "server.grace_period_seconds",
            o.grace_period != n.grace_period,
        ),
        ("server.tls.listen", listen(&o.tls) != listen(&n.tls)),
        (
            "server.admin_tls.listen",
            listen(&o.admin_tls) != listen(&n.admin_tls),
        ),
        (
            "server.proxy_protocol",
            o.proxy_protocol != n.proxy_protocol,
        ),
        ("server.upgrade_sock", o.upgrade_sock != n.upgrade_sock),
        ("auth", old.auth.is_some() != new.auth.is_some()),
        (
            "analytics.enabled",
            old.analytics.enabled != new.analytics.enabled,
        ),
        (
            "analytics.metrics_path",
            old.analytics.metrics_path != new.analytics.metrics_path,
        ),
        (
            "notifications.enabled",
            old.notifications.enabled != new.notifications.enabled,
        ),
        (
            "notifications.provider",
            !same_bus(&old.notifications.bus, &new.notifications.bus),
        ),
        (
            "notifications.queue_capacity",
            old.notifications.queue_capacity != new.notifications.queue_capacity
                || old.notifications.source != new.notifications.source,
        ),
        (
            "notifications.history",
            old.notifications.history != new.notifications.history,
        ),
        (
            "notifications.hub_path",
            old.notifications.hub.path != new.notifications.hub.path,
        ),
        (
            "notifications.connection_queue",
            old.notifications.hub.connection_queue != new.notifications.hub.connection_queue,
        ),
        (
            "notifications.max_message_bytes",
            old.notifications.hub.max_message_bytes != new.notifications.hub.max_message_bytes,
        ),
        (
            "notifications.keepalive_interval_ms",
            (
                o_hub.keepalive,
                o_hub.client_timeout,
                o_hub.handshake_timeout,
            ) != (
                n_hub.keepalive,
                n_hub.client_timeout,
                n_hub.handshake_timeout,
            ),
        ),
        // The store (its connection, its memory) lives as long as the process.
        ("idempotency", old.idempotency != new.idempotency),
    ];
    checks
        .into_iter()
        .find_map(|(key, changed)| changed.then_some(key))
}

fn same_bus(a: &BusSettings, b: &BusSettings) -> bool {
    match (a, b) {
        (BusSettings::InMemory, BusSettings::InMemory) => true,
        (
            BusSettings::Redis {
                url: u1,
                channel_prefix: p1,
            },
            BusSettings::Redis {
                url: u2,
                channel_prefix: p2,
            },
        ) => u1 == u2 && p1 == p2,
        _ => false,
    }
}
