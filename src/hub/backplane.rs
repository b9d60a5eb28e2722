//! Where the hub's events come from: this instance's in-memory bus, or Redis.
//!
//! With Redis, the hub subscribes to `{prefix}_all` and to `{prefix}{tenant}` for exactly the
//! tenants that have members here, re-subscribing as groups fill and empty, and reconnecting
//! with backoff when Redis goes away. Two or more instances on one Redis thus form one hub.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures_util::StreamExt;
use pingora::server::ShutdownWatch;
use serde::Deserialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio::sync::broadcast;

use super::Hub;
use crate::events::{Event, EventSink};

const BACKOFF_START: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(1);
const ALL_TENANTS: &str = "_all";

pub enum Backplane {
    Local(broadcast::Receiver<Arc<Event>>),
    Redis { url: String, prefix: String },
    Nothing,
}

impl Backplane {
    pub fn for_bus(sink: &EventSink, redis: Option<(String, String)>) -> Self {
        match (sink.subscribe_local(), redis) {
            (Some(local), _) => Self::Local(local),
            (None, Some((url, prefix))) => Self::Redis { url, prefix },
            (None, None) => Self::Nothing,
        }
    }

    pub async fn run(self, hub: Arc<Hub>, mut shutdown: ShutdownWatch) {
        match self {
            Self::Local(events) => {
                tokio::select! {
                    _ = local(events, &hub) => {}
                    _ = shutdown.changed() => {}
                }
            }
            Self::Redis { url, prefix } => {
                tokio::select! {
                    _ = redis(&url, &prefix, &hub) => {}
                    _ = shutdown.changed() => {}
                }
            }
            Self::Nothing => {}
        }
    }
}

/// The background service that feeds the hub from its backplane.
pub struct HubFeed {
    pub hub: Arc<Hub>,
    pub backplane: std::sync::Mutex<Option<Backplane>>,
}

#[async_trait::async_trait]
impl pingora::services::background::BackgroundService for HubFeed {
    async fn start(&self, shutdown: ShutdownWatch) {
        let backplane = self.backplane.lock().ok().and_then(|mut b| b.take());
        if let Some(backplane) = backplane {
            backplane.run(Arc::clone(&self.hub), shutdown).await;
        }
    }
}

async fn local(mut events: broadcast::Receiver<Arc<Event>>, hub: &Hub) {
    loop {
        match events.recv().await {
            Ok(event) => hub.deliver(
                &event.kind,
                event.tenant.as_deref(),
                &event.json,
                event.created,
            ),
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                tracing::warn!(
                    missed,
                    "the hub fell behind the event bus; events were skipped"
                );
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// The two envelope attributes the hub needs from a Redis message.
#[derive(Deserialize)]
struct Head {
    #[serde(rename = "type")]
    kind: String,
    time: Option<String>,
}

async fn redis(url: &str, prefix: &str, hub: &Hub) {
    let Ok(client) = redis::Client::open(url) else {
        tracing::error!("invalid Redis URL; the hub receives no events");
        return;
    };
    let mut backoff = BACKOFF_START;
    loop {
        match client.get_async_pubsub().await {
            Ok(pubsub) => {
                backoff = BACKOFF_START;
                follow(pubsub, prefix, hub).await;
                tracing::warn!("the hub lost its Redis subscription; reconnecting");
            }
            Err(e) => tracing::warn!(error = %e, "the hub cannot reach Redis; retrying"),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// Keeps the subscriptions equal to the tenants with members here and delivers what arrives,
/// until the connection breaks.
async fn follow(pubsub: redis::aio::PubSub, prefix: &str, hub: &Hub) {
    let (mut control, mut messages) = pubsub.split();
    let all = format!("{prefix}{ALL_TENANTS}");
    if control.subscribe(&all).await.is_err() {
        return;
    }
    let mut subscribed: HashSet<String> = HashSet::new();
    loop {
        let wanted: HashSet<String> = hub
            .groups
            .active_tenants()
            .iter()
            .map(|t| format!("{prefix}{t}"))
            .collect();
        for channel in wanted.difference(&subscribed) {
            if control.subscribe(channel).await.is_err() {
                return;
            }
        }
        for channel in subscribed.difference(&wanted) {
            if control.unsubscribe(channel).await.is_err() {
                return;
            }
        }
        subscribed = wanted;
        tokio::select! {
            message = messages.next() => {
                let Some(message) = message else { return };
                let channel = message.get_channel_name();
                let Ok(payload) = message.get_payload::<String>() else { continue };
                let tenant = channel.strip_prefix(prefix).filter(|t| *t != ALL_TENANTS);
                let Ok(head) = serde_json::from_str::<Head>(&payload) else { continue };
                let time = head
                    .time
                    .and_then(|t| OffsetDateTime::parse(&t, &Rfc3339).ok())
                    .map_or_else(SystemTime::now, SystemTime::from);
                hub.deliver(&head.kind, tenant, &payload, time);
            }
            _ = hub.groups.changed.notified() => {}
        }
    }
}
