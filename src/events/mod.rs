//! The event path: responses that match a trigger become CloudEvents, which go to the bus.
//!
//! ```text
//! response_body_filter ─► EventSink::submit (try_send, bounded) ─► pipeline task (batches
//!    under load): decompress, extract, envelope, business metrics and log ─► EventSink::publish
//!    ─► in memory: a broadcast to this instance's hub (never blocks)
//!    ─► redis: try_send (bounded: notifications.queue_capacity) ─► publisher task: PUBLISH in
//!       pipelined batches, reconnecting with backoff
//! ```
//!
//! The request path only copies body bytes and makes non-blocking sends; whatever does not fit
//! a queue is dropped and counted in `payedge_events_dropped_total`.

mod business;
mod envelope;
mod metrics;
mod pipeline;
mod publisher;

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use serde_json::{Map, Value};
use tokio::sync::{Mutex, broadcast, mpsc};

pub use envelope::{Event, SYSTEM_ALERT};
pub use metrics::EventMetrics;

use crate::config::{BusSettings, Config, TriggerSettings};

/// At most this many triggers can be enabled (they are addressed by a 64-bit mask).
pub const MAX_TRIGGERS: usize = 64;

/// Events a slow local subscriber may fall behind before it loses the oldest.
const LOCAL_FANOUT_CAPACITY: usize = 4_096;

/// A response captured for one or more triggers, handed over at the end of its body.
#[derive(Debug)]
pub struct TriggerHit {
    /// The enabled triggers that matched, as a bitmask (bit i: trigger i).
    pub triggers: u64,
    pub body: Bytes,
    /// The body was larger than the triggers allow: nothing was kept.
    pub too_large: bool,
    /// The response's Content-Encoding, if any.
    pub encoding: Option<String>,
    pub tenant: Arc<str>,
    pub request_id: String,
    pub provider: Option<String>,
}

struct SinkInner {
    hits: mpsc::Sender<TriggerHit>,
    delivery: Delivery,
    metrics: Option<Arc<EventMetrics>>,
    source: String,
}

/// Where published events go.
enum Delivery {
    /// Notifications are off.
    Nowhere,
    /// Straight to this instance's subscribers (the hub); never blocks.
    Local(broadcast::Sender<Arc<Event>>),
    /// To the Redis publisher task, through a bounded queue.
    Redis(mpsc::Sender<Arc<Event>>),
}

/// Where the gateway hands events; cheap to clone, never blocks.
#[derive(Clone)]
pub struct EventSink {
    inner: Arc<SinkInner>,
}

/// The indices of the bits set in `mask`.
pub fn mask_indices(mask: u64) -> impl Iterator<Item = usize> {
    (0..MAX_TRIGGERS).filter(move |i| mask & (1 << i) != 0)
}

impl EventSink {
    /// From the response-body filter: a captured response to turn into events.
    pub fn submit(&self, hit: TriggerHit) {
        if self.inner.hits.try_send(hit).is_err() {
            self.dropped();
        }
    }

    /// Publishes an event (a no-op when notifications are off).
    pub fn publish(&self, event: Event) {
        match &self.inner.delivery {
            Delivery::Nowhere => {}
            Delivery::Local(local) => {
                if let Some(m) = &self.inner.metrics {
                    m.published(&event.kind);
                }
                // No subscriber is not an error: nobody is listening right now.
                let _ = local.send(Arc::new(event));
            }
            Delivery::Redis(outbox) => {
                if outbox.try_send(Arc::new(event)).is_err() {
                    self.dropped();
                }
            }
        }
    }

    /// Publishes a `system.alert`.
    pub fn alert(&self, code: &str, message: &str, details: Map<String, Value>) {
        self.publish(Event::alert(&self.inner.source, code, message, details));
    }

    pub fn source(&self) -> &str {
        &self.inner.source
    }

    /// With the in-memory provider: every published event, for the local hub.
    pub fn subscribe_local(&self) -> Option<broadcast::Receiver<Arc<Event>>> {
        match &self.inner.delivery {
            Delivery::Local(local) => Some(local.subscribe()),
            _ => None,
        }
    }

    fn dropped(&self) {
        if let Some(m) = &self.inner.metrics {
            m.dropped("queue_full");
        }
    }
}

/// The background service that runs the pipeline and the publisher.
pub struct EventService {
    hits: Mutex<Option<mpsc::Receiver<TriggerHit>>>,
    outbox: Mutex<Option<mpsc::Receiver<Arc<Event>>>>,
    triggers: Arc<Vec<TriggerSettings>>,
    bus: BusSettings,
    sink: EventSink,
    metrics: Option<Arc<EventMetrics>>,
    business_log: bool,
}

/// Builds the sink the gateway uses and the service that drains it.
pub fn build(
    config: &Config,
    triggers: Arc<Vec<TriggerSettings>>,
    metrics: Option<Arc<EventMetrics>>,
) -> (EventSink, EventService) {
    let capacity = config.notifications.queue_capacity;
    let (hits_tx, hits_rx) = mpsc::channel(capacity);
    let mut outbox_rx = None;
    let delivery = match (&config.notifications.enabled, &config.notifications.bus) {
        (false, _) => Delivery::Nowhere,
        (true, BusSettings::InMemory) => {
            Delivery::Local(broadcast::channel(LOCAL_FANOUT_CAPACITY).0)
        }
        (true, BusSettings::Redis { .. }) => {
            let (tx, rx) = mpsc::channel(capacity);
            outbox_rx = Some(rx);
            Delivery::Redis(tx)
        }
    };
    let sink = EventSink {
        inner: Arc::new(SinkInner {
            hits: hits_tx,
            delivery,
            metrics: metrics.clone(),
            source: config.notifications.source.clone(),
        }),
    };
    let service = EventService {
        hits: Mutex::new(Some(hits_rx)),
        outbox: Mutex::new(outbox_rx),
        triggers,
        bus: config.notifications.bus.clone(),
        sink: sink.clone(),
        metrics,
        business_log: config.analytics.enabled,
    };
    (sink, service)
}

#[async_trait]
impl BackgroundService for EventService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut tasks = tokio::task::JoinSet::new();
        if let Some(hits) = self.hits.lock().await.take() {
            tasks.spawn(pipeline::run(
                hits,
                Arc::clone(&self.triggers),
                self.sink.clone(),
                self.metrics.clone(),
                self.business_log,
            ));
        }
        if let (
            Some(outbox),
            BusSettings::Redis {
                url,
                channel_prefix,
            },
        ) = (self.outbox.lock().await.take(), &self.bus)
        {
            tasks.spawn(publisher::redis(
                url.clone(),
                channel_prefix.clone(),
                outbox,
                self.sink.source().to_string(),
                self.metrics.clone(),
            ));
        }
        let _ = shutdown.changed().await;
        tasks.abort_all();
    }
}
