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
/// A Redis that does not accept the connection in this time is tried again.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
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
        match tokio::time::timeout(CONNECT_TIMEOUT, client.get_async_pubsub()).await {
            Ok(Ok(pubsub)) => {
                backoff = BACKOFF_START;
                follow(pubsub, prefix, hub).await;
                tracing::warn!("the hub lost its Redis subscription; reconnecting");
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "the hub cannot reach Redis; retrying"),
            Err(_) => tracing::warn!("the hub's connection to Redis timed out; retrying"),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// Keeps the subscriptions equal to the tenants with members here and delivers what arrives,
/// until the connection breaks or stops answering.
///
/// A subscribed connection only ever receives, so a Redis that vanished without closing the
/// socket (a host gone, a dropped NAT entry) would look like a quiet one forever: the hub pings
/// it every `keepalive` and starts over when no answer comes within another `keepalive`.
async fn follow(pubsub: redis::aio::PubSub, prefix: &str, hub: &Hub) {
    let (mut control, mut messages) = pubsub.split();
    let answer_within = hub.settings.keepalive;
    let mut keepalive = tokio::time::interval(answer_within);
    keepalive.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    keepalive.tick().await;
    let mut subscribed: HashSet<String> = HashSet::new();
    let mut groups_changed = true;
    loop {
        if groups_changed {
            let wanted: HashSet<String> = std::iter::once(ALL_TENANTS.into())
                .chain(hub.groups.active_tenants().iter().map(|t| t.to_string()))
                .map(|t| format!("{prefix}{t}"))
                .collect();
            let changes = async {
                for channel in wanted.difference(&subscribed) {
                    control.subscribe(channel).await?;
                }
                for channel in subscribed.difference(&wanted) {
                    control.unsubscribe(channel).await?;
                }
                Ok::<_, redis::RedisError>(())
            };
            if !matches!(
                tokio::time::timeout(answer_within, changes).await,
                Ok(Ok(()))
            ) {
                return;
            }
            subscribed = wanted;
            groups_changed = false;
        }
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
            // `notify_one` keeps a permit, so a change made while a message was being
            // delivered is seen on the next turn.
            _ = hub.groups.changed.notified() => groups_changed = true,
            _ = keepalive.tick() => {
                let pong = tokio::time::timeout(answer_within, control.ping::<redis::Value>()).await;
                if !matches!(pong, Ok(Ok(_))) {
                    tracing::warn!("Redis did not answer the hub's ping in time; reconnecting");
                    return;
                }
            }
        }
    }
}
