//! Where the hub's events come from: this instance's in-memory bus, or Redis.
//!
//! With Redis, the hub subscribes to `{prefix}_all` and to `{prefix}{tenant}` (on a Redis
//! Cluster `{prefix}{{tenant}}`, sharded) for exactly the tenants that have members here, re-subscribing as groups fill and empty, and reconnecting
//! with backoff when Redis goes away. Two or more instances on one Redis thus form one hub.
//!
//! Pub/sub loses what is published while a subscriber is away, so the hub keeps, per stream it
//! follows, the position of the last event it delivered. After it subscribes again it reads what
//! came after that position from the history and delivers it before anything newer; when the
//! history no longer reaches back, the members of that group are told to reconnect and resume
//! (each then learns whether it can). Nothing is delivered twice: positions only move forward.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use pingora::server::ShutdownWatch;
use serde::Deserialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio::sync::broadcast;

use super::Hub;
use super::recovery::HistorySource;
use super::subscriber::Subscriber;
use crate::events::redis_history::RedisReader;
use crate::events::redis_target::RedisTarget;
use crate::events::{EventSink, Published, Recovery, StreamId, Unrecoverable};

const BACKOFF_START: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(1);
/// A Redis that does not accept the connection in this time is tried again.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
use crate::events::history::ALL_TENANTS;

pub enum Backplane {
    Local(broadcast::Receiver<Arc<Published>>),
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
        if let (Some(m), false) = (hub.metrics.as_deref(), matches!(self, Self::Redis { .. })) {
            m.backplane_up(true, false);
        }
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

async fn local(mut events: broadcast::Receiver<Arc<Published>>, hub: &Hub) {
    loop {
        match events.recv().await {
            Ok(published) => hub.deliver(
                &published.event.kind,
                published.event.tenant.as_deref(),
                &published.json,
                published.event.created,
                Some(published.id),
            ),
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                // Which tenants' events were skipped is not known: every connection is told to
                // reconnect and resume from the history, which still holds them (or reports the
                // gap), rather than carrying on with a hole nobody would ever see.
                let told = hub.groups.resync(None);
                tracing::warn!(
                    missed,
                    connections = told,
                    "the hub fell behind the event bus; its connections are told to reconnect \
                     and resume"
                );
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// The envelope attributes the hub needs from a Redis message.
#[derive(Deserialize)]
struct Head {
    #[serde(rename = "type")]
    kind: String,
    time: Option<String>,
    streamid: Option<String>,
}

async fn redis(url: &str, prefix: &str, hub: &Hub) {
    let Ok(target) = RedisTarget::parse(url) else {
        tracing::error!("invalid Redis URL; the hub receives no events");
        return;
    };
    let HistorySource::Redis(reader) = &hub.history else {
        tracing::error!("the Redis backplane has no Redis history; the hub receives no events");
        return;
    };
    let mut backoff = BACKOFF_START;
    // Kept across reconnections: where each followed stream stands.
    let mut forwarded: HashMap<Arc<str>, StreamId> = HashMap::new();
    let mut was_up = false;
    let up = |up: bool, reconnected: bool| {
        if let Some(m) = hub.metrics.as_deref() {
            m.backplane_up(up, reconnected);
        }
    };
    loop {
        match Subscriber::connect(&target, CONNECT_TIMEOUT).await {
            Ok(subscriber) => {
                up(true, was_up);
                was_up = true;
                backoff = BACKOFF_START;
                let channels = Channels {
                    target: &target,
                    prefix,
                };
                follow(subscriber, channels, hub, reader, &mut forwarded).await;
                hub.live.set(HashSet::new());
                up(false, false);
                tracing::warn!("the hub lost its Redis subscription; reconnecting");
            }
            Err(e) => {
                up(false, false);
                tracing::warn!(error = %e, "the hub cannot reach Redis; retrying");
            }
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
async fn follow(
    mut subscriber: Subscriber,
    channels: Channels<'_>,
    hub: &Hub,
    reader: &RedisReader,
    forwarded: &mut HashMap<Arc<str>, StreamId>,
) {
    let answer_within = hub.settings.keepalive;
    let mut keepalive = tokio::time::interval(answer_within);
    keepalive.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    keepalive.tick().await;
    let mut subscribed: HashSet<Arc<str>> = HashSet::new();
    let mut groups_changed = true;
    loop {
        if groups_changed {
            let wanted: HashSet<Arc<str>> = std::iter::once(Arc::from(ALL_TENANTS))
                .chain(hub.groups.active_tenants())
                .collect();
            let new: Vec<Arc<str>> = wanted.difference(&subscribed).cloned().collect();
            // Streams followed before (this is a reconnection) continue from where they were;
            // the others from where they stand now, read before subscribing. Once subscribed,
            // every new one is caught up from its position, so what was published between
            // reading it and the subscription taking effect is delivered too (live copies of
            // the same events are dropped by position).
            let fresh: Vec<Arc<str>> = new
                .iter()
                .filter(|s| !forwarded.contains_key(*s))
                .cloned()
                .collect();
            for stream in &fresh {
                let Some(head) = reader.head(stream).await else {
                    return;
                };
                forwarded.insert(Arc::clone(stream), head);
            }
            let joining = wanted.difference(&subscribed).map(|s| channels.of(s));
            let leaving = subscribed.difference(&wanted).map(|s| channels.of(s));
            // Each command answered within the keep-alive interval, not all of them: after a
            // reconnection every tenant with a member here is subscribed again at once.
            if subscriber
                .subscribe(joining.collect(), answer_within)
                .await
                .is_err()
                || subscriber
                    .unsubscribe(leaving.collect(), answer_within)
                    .await
                    .is_err()
            {
                return;
            }
            forwarded.retain(|s, _| wanted.contains(s));
            subscribed = wanted;
            groups_changed = false;
            for stream in new {
                if !catch_up(hub, reader, &stream, forwarded).await {
                    return;
                }
            }
            hub.live.set(
                subscribed
                    .iter()
                    .filter(|s| &***s != ALL_TENANTS)
                    .cloned()
                    .collect(),
            );
        }
        tokio::select! {
            message = subscriber.next() => {
                let Some((channel, payload)) = message else { return };
                let Some(stream) = channels.stream_of(&channel) else { continue };
                let Ok(head) = serde_json::from_str::<Head>(&payload) else { continue };
                let position = head.streamid.as_deref().and_then(|id| id.parse::<StreamId>().ok());
                if let Some(position) = position {
                    match forwarded.get_mut(stream) {
                        Some(last) if position <= *last => continue,
                        Some(last) => *last = position,
                        None => {
                            forwarded.insert(Arc::from(stream), position);
                        }
                    }
                }
                deliver(hub, stream, &head, &payload, position);
            }
            // `notify_one` keeps a permit, so a change made while a message was being
            // delivered is seen on the next turn.
            _ = hub.groups.changed.notified() => groups_changed = true,
            _ = keepalive.tick() => {
                let pong = tokio::time::timeout(answer_within, subscriber.ping()).await;
                if !matches!(pong, Ok(Ok(_))) {
                    tracing::warn!("Redis did not answer the hub's ping in time; reconnecting");
                    return;
                }
            }
        }
    }
}

/// How streams and channels are named on this Redis.
#[derive(Clone, Copy)]
struct Channels<'a> {
    target: &'a RedisTarget,
    prefix: &'a str,
}

impl<'a> Channels<'a> {
    fn of(&self, stream: &str) -> String {
        self.target.channel(self.prefix, stream)
    }

    fn stream_of<'c>(&self, channel: &'c str) -> Option<&'c str> {
        self.target.stream_of(self.prefix, channel)
    }
}

fn deliver(hub: &Hub, stream: &str, head: &Head, json: &str, position: Option<StreamId>) {
    let tenant = Some(stream).filter(|t| *t != ALL_TENANTS);
    let time = head
        .time
        .as_deref()
        .and_then(|t| OffsetDateTime::parse(t, &Rfc3339).ok())
        .map_or_else(SystemTime::now, SystemTime::from);
    hub.deliver(&head.kind, tenant, json, time, position);
}

/// Delivers what `stream` received after this instance's position while it was not
/// subscribed; `false` when Redis cannot be read (the caller starts over).
async fn catch_up(
    hub: &Hub,
    reader: &RedisReader,
    stream: &Arc<str>,
    forwarded: &mut HashMap<Arc<str>, StreamId>,
) -> bool {
    let Some(&after) = forwarded.get(stream) else {
        return true;
    };
    match reader.resume(stream, after).await {
        // More than a connection's queue holds, handed over at once: every member would be
        // evicted as a slow consumer. A tenant's members are told to resume instead, which
        // replays it all (system-wide events cannot be resumed: they are still handed over).
        Recovery::Recovered { entries, position }
            if entries.len() > hub.settings.connection_queue && &**stream != ALL_TENANTS =>
        {
            let told = hub.groups.resync(Some(stream));
            tracing::warn!(
                stream = &**stream,
                events = entries.len(),
                connections = told,
                "more events were missed while the hub's Redis subscription was down than a \
                 connection's queue holds; its connections are told to reconnect and resume"
            );
            forwarded.insert(Arc::clone(stream), position);
            true
        }
        Recovery::Recovered { entries, position } => {
            if !entries.is_empty() {
                tracing::info!(
                    stream = &**stream,
                    events = entries.len(),
                    "the hub delivered what it missed while its Redis subscription was down"
                );
            }
            for entry in &entries {
                if let Ok(head) = serde_json::from_str::<Head>(&entry.json) {
                    deliver(hub, stream, &head, &entry.json, Some(entry.id));
                }
            }
            forwarded.insert(Arc::clone(stream), position);
            true
        }
        Recovery::Unrecoverable {
            reason: Unrecoverable::Gap,
            position,
        } => {
            let tenant = Some(&**stream).filter(|t| *t != ALL_TENANTS);
            let told = hub.groups.resync(tenant);
            tracing::warn!(
                stream = &**stream,
                connections = told,
                "events were missed while the hub's Redis subscription was down and the history \
                 no longer reaches back; its connections are told to reconnect and resume"
            );
            forwarded.insert(Arc::clone(stream), position.unwrap_or(StreamId::START));
            true
        }
        Recovery::Unrecoverable { .. } => false,
    }
}
