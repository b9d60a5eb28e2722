//! The notification hub's metrics.

use std::time::Duration;

use prometheus::core::Collector;
use prometheus::{
    Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
};

use crate::events::Recovery;

const DELIVERY_BUCKETS: [f64; 12] = [
    0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

pub struct HubMetrics {
    connections: IntGaugeVec,
    sent: IntCounter,
    delivery: Histogram,
    slow: IntCounter,
    unauthorized: IntCounter,
    resumes: IntCounterVec,
    replayed: IntCounter,
    refused: IntCounterVec,
    reconnects: IntCounterVec,
    backplane_up: IntGauge,
    backplane_reconnects: IntCounter,
}

impl HubMetrics {
    /// `tenants`: the configured ones, each shown with 0 connections from the start (a tenant
    /// added by a reload appears with its first connection).
    pub fn register(tenants: &[String]) -> prometheus::Result<Self> {
        let connections = IntGaugeVec::new(
            Opts::new(
                "payedge_hub_connections",
                "Open hub connections, by tenant.",
            ),
            &["tenant"],
        )?;
        let sent = IntCounter::new(
            "payedge_hub_messages_sent_total",
            "Event messages written to hub connections.",
        )?;
        let delivery = Histogram::with_opts(
            HistogramOpts::new(
                "payedge_hub_delivery_seconds",
                "From an event's time to its message written to a hub connection.",
            )
            .buckets(DELIVERY_BUCKETS.to_vec()),
        )?;
        let slow = IntCounter::new(
            "payedge_hub_slow_consumers_total",
            "Hub connections closed because they did not read their messages.",
        )?;
        let unauthorized = IntCounter::new(
            "payedge_hub_unauthorized_total",
            "Hub requests refused: a bad token, or a group of another tenant.",
        )?;
        let resumes = IntCounterVec::new(
            Opts::new(
                "payedge_hub_resumes_total",
                "Joins that named a last position, by result: recovered, gap, unavailable.",
            ),
            &["result"],
        )?;
        let replayed = IntCounter::new(
            "payedge_hub_replayed_events_total",
            "Events written again to resuming hub connections from the history.",
        )?;
        let refused = IntCounterVec::new(
            Opts::new(
                "payedge_hub_refusals_total",
                "Hub negotiations and connections refused, by reason: origin, subject_limit, tenant_limit, negotiate_rate.",
            ),
            &["reason"],
        )?;
        let reconnects = IntCounterVec::new(
            Opts::new(
                "payedge_hub_stateful_reconnects_total",
                "Stateful hub connections whose socket broke, by result: resumed (the client came back within the window), expired.",
            ),
            &["result"],
        )?;
        let backplane_up = IntGauge::new(
            "payedge_hub_backplane_up",
            "1 while the hub receives the bus's events (for Redis: subscribed and answering pings; always 1 with the in-memory bus), else 0.",
        )?;
        let backplane_reconnects = IntCounter::new(
            "payedge_hub_backplane_reconnects_total",
            "Times the hub subscribed to Redis again after losing its subscription.",
        )?;
        let registry = prometheus::default_registry();
        let collectors: [Box<dyn Collector>; 11] = [
            Box::new(backplane_up.clone()),
            Box::new(backplane_reconnects.clone()),
            Box::new(reconnects.clone()),
            Box::new(refused.clone()),
            Box::new(resumes.clone()),
            Box::new(replayed.clone()),
            Box::new(connections.clone()),
            Box::new(sent.clone()),
            Box::new(delivery.clone()),
            Box::new(slow.clone()),
            Box::new(unauthorized.clone()),
        ];
        for c in collectors {
            registry.register(c)?;
        }
        // Every series of the fixed label sets from the start, so dashboards and alerts see 0
        // rather than nothing.
        for tenant in tenants {
            connections.with_label_values(&[tenant]);
        }
        for reason in ["origin", "subject_limit", "tenant_limit", "negotiate_rate"] {
            refused.with_label_values(&[reason]);
        }
        for result in ["recovered", "gap", "unavailable"] {
            resumes.with_label_values(&[result]);
        }
        for result in ["resumed", "expired"] {
            reconnects.with_label_values(&[result]);
        }
        Ok(Self {
            connections,
            sent,
            delivery,
            slow,
            unauthorized,
            resumes,
            replayed,
            refused,
            reconnects,
            backplane_up,
            backplane_reconnects,
        })
    }

    /// The hub's feed from the bus works (`reconnected`: again, after it was lost) or not.
    pub fn backplane_up(&self, up: bool, reconnected: bool) {
        self.backplane_up.set(i64::from(up));
        if reconnected {
            self.backplane_reconnects.inc();
        }
    }

    pub fn reconnected(&self, resumed: bool) {
        let result = if resumed { "resumed" } else { "expired" };
        self.reconnects.with_label_values(&[result]).inc();
    }

    pub fn refused(&self, reason: &str) {
        self.refused.with_label_values(&[reason]).inc();
    }

    pub fn resumed(&self, recovery: &Recovery, replayed: usize) {
        let result = match recovery {
            Recovery::Recovered { .. } => "recovered",
            Recovery::Unrecoverable { reason, .. } => reason.code(),
        };
        self.resumes.with_label_values(&[result]).inc();
        self.replayed.inc_by(replayed as u64);
    }

    pub fn connected(&self, tenant: &str, delta: i64) {
        self.connections.with_label_values(&[tenant]).add(delta);
    }

    pub fn delivered(&self, latency: Duration) {
        self.sent.inc();
        self.delivery.observe(latency.as_secs_f64());
    }

    pub fn slow_consumer(&self) {
        self.slow.inc();
    }

    pub fn unauthorized(&self) {
        self.unauthorized.inc();
    }
}
