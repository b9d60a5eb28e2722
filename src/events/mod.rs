//! The event path: responses that match a trigger become CloudEvents, which go to the bus.
//!
//! ```text
//! response_body_filter ─► EventSink::submit (try_send, bounded) ─► pipeline task:
//!    decompress, extract, envelope, business metrics and log ─► EventSink::publish (try_send,
//!    bounded: notifications.queue_capacity) ─► publisher task: in-memory broadcast, or Redis
//!    PUBLISH in pipelined batches with reconnects
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

/// Events a slow local subscriber may fall behind before it loses the oldest.
const LOCAL_FANOUT_CAPACITY: usize = 4_096;

/// A response captured for one or more triggers, handed over at the end of its body.
#[derive(Debug)]
pub struct TriggerHit {
    /// Indices into the enabled triggers.
    pub triggers: Vec<usize>,
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
    outbox: Option<mpsc::Sender<Arc<Event>>>,
    metrics: Option<Arc<EventMetrics>>,
    source: String,
    local: Option<broadcast::Sender<Arc<Event>>>,
}

/// Where the gateway hands events; cheap to clone, never blocks.
#[derive(Clone)]
pub struct EventSink {
    inner: Arc<SinkInner>,
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
        if let Some(outbox) = &self.inner.outbox {
            if outbox.try_send(Arc::new(event)).is_err() {
                self.dropped();
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
        self.inner.local.as_ref().map(broadcast::Sender::subscribe)
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
    let (outbox_tx, outbox_rx) = mpsc::channel(capacity);
    let publishing = config.notifications.enabled;
    let local = (publishing && matches!(config.notifications.bus, BusSettings::InMemory))
        .then(|| broadcast::channel(LOCAL_FANOUT_CAPACITY).0);
    let sink = EventSink {
        inner: Arc::new(SinkInner {
            hits: hits_tx,
            outbox: publishing.then_some(outbox_tx),
            metrics: metrics.clone(),
            source: config.notifications.source.clone(),
            local,
        }),
    };
    let service = EventService {
        hits: Mutex::new(Some(hits_rx)),
        outbox: Mutex::new(publishing.then_some(outbox_rx)),
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
        if let Some(outbox) = self.outbox.lock().await.take() {
            let metrics = self.metrics.clone();
            match &self.bus {
                BusSettings::InMemory => {
                    let local = self.sink.inner.local.clone();
                    tasks.spawn(publisher::in_memory(outbox, local, metrics));
                }
                BusSettings::Redis {
                    url,
                    channel_prefix,
                } => {
                    tasks.spawn(publisher::redis(
                        url.clone(),
                        channel_prefix.clone(),
                        outbox,
                        self.sink.source().to_string(),
                        metrics,
                    ));
                }
            }
        }
        let _ = shutdown.changed().await;
        tasks.abort_all();
    }
}
