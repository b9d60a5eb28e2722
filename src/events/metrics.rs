//! Metrics of the event path and the business metrics derived from events.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{CounterVec, IntCounter, IntCounterVec, IntGauge, Opts};
use rust_decimal::Decimal;
use rust_decimal::prelude::ToPrimitive;

pub const TRIGGER_ERROR_REASONS: [&str; 5] = [
    "too_large",
    "not_json",
    "missing_field",
    "unsupported_encoding",
    "bad_encoding",
];
pub const DROP_REASONS: [&str; 2] = ["queue_full", "shutdown"];
const PAYMENT_OUTCOMES: [&str; 5] = ["succeeded", "failed", "pending", "declined", "refunded"];

pub struct EventMetrics {
    published: IntCounterVec,
    dropped: IntCounterVec,
    trigger_errors: IntCounterVec,
    fx_quotes: IntCounterVec,
    payments: IntCounterVec,
    volume: CounterVec,
    /// Events queued for the Redis publisher and not yet published (`payedge_events_queue_depth`
    /// reads it at each scrape).
    backlog: Arc<AtomicUsize>,
    bus_up: IntGauge,
    bus_reconnects: IntCounter,
    publish_failures: IntCounter,
}

/// A gauge read at scrape time from the queue's own counter, so the request path pays nothing
/// for it.
struct QueueDepth {
    gauge: IntGauge,
    backlog: Arc<AtomicUsize>,
}

impl Collector for QueueDepth {
    fn desc(&self) -> Vec<&Desc> {
        self.gauge.desc()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let depth = self.backlog.load(Ordering::Relaxed);
        self.gauge.set(i64::try_from(depth).unwrap_or(i64::MAX));
        self.gauge.collect()
    }
}

impl EventMetrics {
    pub fn register(trigger_names: &[&str]) -> prometheus::Result<Self> {
        let published = IntCounterVec::new(
            Opts::new(
                "payedge_events_published_total",
                "Events handed to the bus provider.",
            ),
            &["type"],
        )?;
        let dropped = IntCounterVec::new(
            Opts::new(
                "payedge_events_dropped_total",
                "Events dropped before publication (queue full).",
            ),
            &["reason"],
        )?;
        let trigger_errors = IntCounterVec::new(
            Opts::new(
                "payedge_trigger_errors_total",
                "Matching responses that gave no event.",
            ),
            &["trigger", "reason"],
        )?;
        let fx_quotes = IntCounterVec::new(
            Opts::new(
                "payedge_fx_quotes_total",
                "FX quotes created (fx.quote.created events).",
            ),
            &["tenant"],
        )?;
        let payments = IntCounterVec::new(
            Opts::new(
                "payedge_payments_total",
                "Payments processed (payment.processed events), by outcome.",
            ),
            &["tenant", "provider", "outcome"],
        )?;
        let volume = CounterVec::new(
            Opts::new(
                "payedge_payment_volume_total",
                "Sum of processed payment amounts, by currency (monitoring only: a float).",
            ),
            &["tenant", "currency"],
        )?;
        let backlog = Arc::new(AtomicUsize::new(0));
        let queue_depth = QueueDepth {
            gauge: IntGauge::new(
                "payedge_events_queue_depth",
                "Events waiting for the Redis publisher (0 with the in-memory bus); bounded by notifications.queue_capacity.",
            )?,
            backlog: Arc::clone(&backlog),
        };
        let bus_up = IntGauge::new(
            "payedge_event_bus_up",
            "1 while the publisher can hand events to the bus (for Redis: connected and answering; the in-memory bus is always up), else 0.",
        )?;
        let bus_reconnects = IntCounter::new(
            "payedge_event_bus_reconnects_total",
            "Times the Redis publisher connected again after losing Redis.",
        )?;
        let publish_failures = IntCounter::new(
            "payedge_events_publish_failures_total",
            "Attempts to publish a batch of events to Redis that failed (the batch is kept and sent again).",
        )?;
        let registry = prometheus::default_registry();
        let collectors: [Box<dyn Collector>; 10] = [
            Box::new(queue_depth),
            Box::new(bus_up.clone()),
            Box::new(bus_reconnects.clone()),
            Box::new(publish_failures.clone()),
            Box::new(published.clone()),
            Box::new(dropped.clone()),
            Box::new(trigger_errors.clone()),
            Box::new(fx_quotes.clone()),
            Box::new(payments.clone()),
            Box::new(volume.clone()),
        ];
        for c in collectors {
            registry.register(c)?;
        }
        for reason in DROP_REASONS {
            dropped.with_label_values(&[reason]);
        }
        for trigger in trigger_names {
            for reason in TRIGGER_ERROR_REASONS {
                trigger_errors.with_label_values(&[trigger, reason]);
            }
        }
        Ok(Self {
            published,
            dropped,
            trigger_errors,
            fx_quotes,
            payments,
            volume,
            backlog,
            bus_up,
            bus_reconnects,
            publish_failures,
        })
    }

    /// The counter behind `payedge_events_queue_depth`: the event sink counts what it queues in
    /// it, the publisher what it takes out.
    pub fn backlog(&self) -> Arc<AtomicUsize> {
        Arc::clone(&self.backlog)
    }

    /// The publisher reached the bus (`reconnected`: after having lost it) or lost it.
    pub fn bus_up(&self, up: bool, reconnected: bool) {
        self.bus_up.set(i64::from(up));
        if reconnected {
            self.bus_reconnects.inc();
        }
    }

    pub fn publish_failed(&self) {
        self.publish_failures.inc();
    }

    pub fn published(&self, kind: &str) {
        self.published.with_label_values(&[kind]).inc();
    }

    pub fn dropped(&self, reason: &'static str) {
        self.dropped.with_label_values(&[reason]).inc();
    }

    pub fn trigger_error(&self, trigger: &str, reason: &'static str) {
        self.trigger_errors
            .with_label_values(&[trigger, reason])
            .inc();
    }

    pub fn fx_quote(&self, tenant: &str) {
        self.fx_quotes.with_label_values(&[tenant]).inc();
    }

    pub fn payment(
        &self,
        tenant: &str,
        provider: &str,
        outcome: Option<&str>,
        currency: Option<&str>,
        amount: Option<Decimal>,
    ) {
        let outcome = outcome
            .map(str::to_ascii_lowercase)
            .filter(|o| PAYMENT_OUTCOMES.contains(&o.as_str()))
            .unwrap_or_else(|| "other".into());
        self.payments
            .with_label_values(&[tenant, provider, &outcome])
            .inc();
        if let (Some(amount), Some(currency)) = (amount, currency) {
            let currency = currency_label(currency);
            if let Some(value) = amount.to_f64().filter(|v| *v >= 0.0) {
                self.volume
                    .with_label_values(&[tenant, &currency])
                    .inc_by(value);
            }
        }
    }
}

/// ISO 4217-shaped codes only, so a label never carries arbitrary client text.
fn currency_label(code: &str) -> String {
    if code.len() == 3 && code.bytes().all(|b| b.is_ascii_alphabetic()) {
        code.to_ascii_uppercase()
    } else {
        "other".into()
    }
}
