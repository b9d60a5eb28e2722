//! The event path: responses that match a trigger become CloudEvents, which go to the bus.
//!
//! ```text
//! response_body_filter: a capped copy of the body (the client's bytes untouched)
//! logging phase (the client has its whole response): EventSink::process ─► decompress,
//!    extract, envelope, business metrics and log line ─► EventSink::publish
//!    ─► in memory: a broadcast to this instance's hub (never blocks)
//!    ─► redis: try_send (bounded: notifications.queue_capacity) ─► publisher task: PUBLISH in
//!       pipelined batches, reconnecting with backoff
//! ```
//!
//! The work is done where the response was served, after the client got it: a few microseconds
//! of parsing there cost less than handing each body to another thread (measured with
//! `benches/trigger_overhead.sh`). Nothing on the way blocks; what does not fit the Redis queue
//! is dropped and counted in `payedge_events_dropped_total`.

mod business;
mod envelope;
pub mod history;
mod log_format;
mod metrics;
mod pipeline;
pub mod publisher;
pub mod redis_history;
pub mod redis_target;
pub mod stream_id;
pub(crate) mod timestamp;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use async_trait::async_trait;
use bytes::Bytes;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use serde_json::{Map, Value};
use tokio::sync::{Mutex, broadcast, mpsc};

pub use envelope::{Event, EventData, FieldMap, SYSTEM_ALERT};
pub use history::{HistoryLimits, MemoryHistory, Recovery, Replayed, Unrecoverable};
pub use log_format::LogFormat;
pub use metrics::EventMetrics;
pub use stream_id::StreamId;

use crate::config::{BusSettings, Config, TriggerSettings};

/// At most this many triggers can be enabled (they are addressed by a 64-bit mask).
pub const MAX_TRIGGERS: usize = 64;

/// Events a slow local subscriber may fall behind before it loses the oldest.
const LOCAL_FANOUT_CAPACITY: usize = 4_096;

/// A response captured for one or more triggers, complete; its texts borrowed from the request
/// it answered (it is processed before that request ends).
#[derive(Debug)]
pub struct TriggerHit<'a> {
    /// The enabled triggers that matched, as a bitmask (bit i: trigger i).
    pub triggers: u64,
    pub body: Bytes,
    /// The body was larger than the triggers allow: nothing was kept.
    pub too_large: bool,
    /// The response's Content-Encoding, if any.
    pub encoding: Option<String>,
    pub tenant: Arc<str>,
    pub request_id: &'a str,
    pub provider: Option<&'a str>,
    /// The digest of the request's scoped idempotency key, if it carried one.
    pub idempotency_key: Option<&'a str>,
}

/// The indices of the bits set in `mask`, lowest first: one step per set bit (a trigger's
/// response has one or two), not one per possible trigger.
pub fn mask_indices(mask: u64) -> impl Iterator<Item = usize> {
    let mut rest = mask;
    std::iter::from_fn(move || {
        if rest == 0 {
            return None;
        }
        let index = rest.trailing_zeros() as usize;
        rest &= rest - 1;
        Some(index)
    })
}

struct SinkInner {
    /// Events handed to the Redis queue and not yet published (or declared lost).
    backlog: Arc<AtomicUsize>,
    delivery: Delivery,
    /// With local delivery: how many are listening (the hub's connections), once the hub is
    /// built. Nobody listening means no send, and no wake-up of the hub's task, per event.
    local_audience: OnceLock<Arc<AtomicUsize>>,
    metrics: Option<Arc<EventMetrics>>,
    business_log: bool,
    source: String,
}

/// An event with its place in its tenant's history, as the in-memory bus hands it to the hub.
#[derive(Debug)]
pub struct Published {
    pub event: Arc<Event>,
    pub id: StreamId,
    /// The envelope with its `streamid`.
    pub json: Arc<str>,
}

/// Where published events go.
enum Delivery {
    /// Notifications are off.
    Nowhere,
    /// Into this instance's history, and straight to its subscribers (the hub); never blocks.
    Local {
        fanout: broadcast::Sender<Arc<Published>>,
        history: Arc<MemoryHistory>,
    },
    /// To the Redis publisher task, through a bounded queue.
    Redis(mpsc::Sender<Arc<Event>>),
}

/// Where the gateway hands events; cheap to clone, never blocks.
#[derive(Clone)]
pub struct EventSink {
    inner: Arc<SinkInner>,
}

impl EventSink {
    /// Turns a captured response into the events of `triggers` (those of the request's
    /// snapshot; called as the response's last bytes go to the client, so that one client's
    /// events are published in the order of its answers).
    pub fn process(&self, hit: &TriggerHit<'_>, triggers: &[TriggerSettings]) {
        let inner = &self.inner;
        pipeline::handle(
            hit,
            triggers,
            self,
            inner.metrics.as_deref(),
            inner.business_log,
        );
    }

    /// Publishes an event (a no-op when notifications are off).
    pub fn publish(&self, event: Event) {
        match &self.inner.delivery {
            Delivery::Nowhere => {}
            Delivery::Local { fanout, history } => {
                if let Some(m) = &self.inner.metrics {
                    m.published(&event.kind);
                }
                let stream: Arc<str> = event
                    .tenant
                    .clone()
                    .unwrap_or_else(|| Arc::from(history::ALL_TENANTS));
                let audience = self.inner.local_audience.get();
                let event = Arc::new(event);
                // Sent while the history is held, so that live order is history order; and
                // whether anyone listens is read under it too, so that a client whose resume
                // read the history just before this entry is never skipped by the live send.
                history.append(&stream, &event.json, |entry| {
                    let listened = audience.is_none_or(|a| a.load(Ordering::Acquire) != 0);
                    if listened {
                        // No subscriber is not an error: nobody is listening right now.
                        let _ = fanout.send(Arc::new(Published {
                            event: Arc::clone(&event),
                            id: entry.id,
                            json: Arc::clone(&entry.json),
                        }));
                    }
                });
            }
            Delivery::Redis(outbox) => {
                // Counted before it is sent: the publisher may take it at once.
                self.inner.backlog.fetch_add(1, Ordering::AcqRel);
                if outbox.try_send(Arc::new(event)).is_err() {
                    self.inner.backlog.fetch_sub(1, Ordering::AcqRel);
                    if let Some(m) = &self.inner.metrics {
                        m.dropped("queue_full");
                    }
                }
            }
        }
    }

    /// Publishes a `system.alert`, to everyone or to one tenant.
    pub fn alert(
        &self,
        tenant: Option<Arc<str>>,
        code: &str,
        message: &str,
        details: Map<String, Value>,
    ) {
        self.publish(Event::alert_for(
            &self.inner.source,
            tenant,
            code,
            message,
            details,
        ));
    }

    pub fn source(&self) -> &str {
        &self.inner.source
    }

    /// Events queued for the bus and not yet published: a stop waits for them (within its grace
    /// period).
    pub fn backlog(&self) -> Arc<AtomicUsize> {
        Arc::clone(&self.inner.backlog)
    }

    /// Counts who listens locally (the hub's connections): while it is zero, local delivery
    /// is skipped. Set once; later calls are ignored.
    pub fn set_local_audience(&self, audience: Arc<AtomicUsize>) {
        let _ = self.inner.local_audience.set(audience);
    }

    /// With the in-memory provider: every published event, for the local hub.
    pub fn subscribe_local(&self) -> Option<broadcast::Receiver<Arc<Published>>> {
        match &self.inner.delivery {
            Delivery::Local { fanout, .. } => Some(fanout.subscribe()),
            _ => None,
        }
    }

    /// With the in-memory provider: the history clients resume from.
    pub fn local_history(&self) -> Option<Arc<MemoryHistory>> {
        match &self.inner.delivery {
            Delivery::Local { history, .. } => Some(Arc::clone(history)),
            _ => None,
        }
    }
}

/// The background service that publishes to Redis (nothing to do for the other providers).
pub struct EventService {
    outbox: Mutex<Option<mpsc::Receiver<Arc<Event>>>>,
    backlog: Arc<AtomicUsize>,
    /// How long a stop waits for queued events before it gives them up as lost.
    pub grace: std::time::Duration,
    bus: BusSettings,
    history: HistoryLimits,
    source: String,
    metrics: Option<Arc<EventMetrics>>,
}

/// Builds the sink the gateway uses and the service that drains it.
pub fn build(config: &Config, metrics: Option<Arc<EventMetrics>>) -> (EventSink, EventService) {
    let mut outbox_rx = None;
    let delivery = match (&config.notifications.enabled, &config.notifications.bus) {
        (false, _) => Delivery::Nowhere,
        (true, BusSettings::InMemory) => Delivery::Local {
            fanout: broadcast::channel(LOCAL_FANOUT_CAPACITY).0,
            history: Arc::new(MemoryHistory::new(config.notifications.history)),
        },
        (true, BusSettings::Redis { .. }) => {
            let (tx, rx) = mpsc::channel(config.notifications.queue_capacity);
            outbox_rx = Some(rx);
            Delivery::Redis(tx)
        }
    };
    let backlog = metrics
        .as_ref()
        .map_or_else(|| Arc::new(AtomicUsize::new(0)), |m| m.backlog());
    if let Some(m) = &metrics {
        // The in-memory bus is always up; the Redis publisher reports its own state.
        m.bus_up(!matches!(delivery, Delivery::Redis(_)), false);
    }
    let sink = EventSink {
        inner: Arc::new(SinkInner {
            backlog: Arc::clone(&backlog),
            delivery,
            metrics: metrics.clone(),
            business_log: config.analytics.enabled,
            source: config.notifications.source.clone(),
            local_audience: OnceLock::new(),
        }),
    };
    let service = EventService {
        outbox: Mutex::new(outbox_rx),
        backlog,
        grace: config.server.grace_period,
        bus: config.notifications.bus.clone(),
        history: config.notifications.history,
        source: config.notifications.source.clone(),
        metrics,
    };
    (sink, service)
}

#[async_trait]
impl BackgroundService for EventService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let outbox = self.outbox.lock().await.take();
        let (
            Some(outbox),
            BusSettings::Redis {
                url,
                channel_prefix,
            },
        ) = (outbox, &self.bus)
        else {
            return;
        };
        // Runs through the stop: what is queued is still published, until the grace period is
        // over; what is left then is logged, by id, as lost.
        let stopping = async move {
            let _ = shutdown.changed().await;
        };
        publisher::redis(
            publisher::Publisher {
                url: url.clone(),
                prefix: channel_prefix.clone(),
                history: self.history,
                source: self.source.clone(),
                metrics: self.metrics.clone(),
                backlog: Arc::clone(&self.backlog),
                grace: self.grace,
            },
            outbox,
            stopping,
        )
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mask_indices_are_the_set_bits_lowest_first() {
        for mask in [0u64, 1, 2, 0b1011, 1 << 63, u64::MAX, 0x8000_0000_0000_0001] {
            let expected: Vec<usize> = (0..MAX_TRIGGERS).filter(|i| mask & (1 << i) != 0).collect();
            assert_eq!(
                mask_indices(mask).collect::<Vec<_>>(),
                expected,
                "{mask:#x}"
            );
        }
    }

    fn alert(sink: &EventSink) {
        sink.alert(None, "test", "test", Map::new());
    }

    #[test]
    fn local_delivery_waits_for_an_audience_once_one_is_counted() {
        let config = crate::demo::demo_config().expect("demo configuration");
        let (sink, _service) = build(&config, None);
        let mut rx = sink.subscribe_local().expect("in-memory bus");
        alert(&sink);
        assert!(
            rx.try_recv().is_ok(),
            "without a counter every event is sent"
        );

        let audience = Arc::new(AtomicUsize::new(0));
        sink.set_local_audience(Arc::clone(&audience));
        alert(&sink);
        assert!(rx.try_recv().is_err(), "nobody connected: nothing sent");
        audience.store(1, Ordering::Relaxed);
        alert(&sink);
        assert!(rx.try_recv().is_ok());
    }
}
