//! Resuming a tenant's events from a position, on any instance.
//!
//! `JoinTenantGroup(tenant, lastStreamId)`: the connection joins the group first (live events
//! start queueing for it), waits until this instance receives the tenant's live events (with
//! Redis: its subscription is confirmed), then reads everything after `lastStreamId` from the
//! history. It writes those, answers the invocation, and then writes the queued live events,
//! skipping any it already wrote: nothing missed between history and live, nothing twice.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::watch;

use crate::events::redis_history::RedisReader;
use crate::events::{MemoryHistory, Recovery, StreamId, Unrecoverable};

/// How long a resume waits for the backplane's subscription before it gives up.
const SUBSCRIBE_WAIT: Duration = Duration::from_secs(5);

/// Where the hub reads the history.
pub enum HistorySource {
    Memory(Arc<MemoryHistory>),
    Redis(Box<RedisReader>),
    /// Notifications are off: nothing to resume.
    Off,
}

impl HistorySource {
    pub async fn resume(&self, stream: &str, after: StreamId) -> Recovery {
        match self {
            Self::Memory(history) => history.resume(stream, after),
            Self::Redis(reader) => reader.resume(stream, after).await,
            Self::Off => Recovery::Unrecoverable {
                reason: Unrecoverable::Unavailable,
                position: None,
            },
        }
    }

    /// Whether the backplane has to confirm a subscription before live events flow here.
    fn subscribes(&self) -> bool {
        matches!(self, Self::Redis(_))
    }
}

/// Which tenants' live events reach this instance: with Redis, the channels the backplane's
/// subscription has confirmed; otherwise every tenant's.
pub struct LiveFeed {
    everything: bool,
    subscribed: watch::Sender<Arc<HashSet<Arc<str>>>>,
}

impl LiveFeed {
    pub fn for_source(source: &HistorySource) -> Self {
        Self {
            everything: !source.subscribes(),
            subscribed: watch::Sender::new(Arc::default()),
        }
    }

    /// The backplane's confirmed subscriptions, whole (empty when it lost Redis).
    pub fn set(&self, tenants: HashSet<Arc<str>>) {
        self.subscribed.send_replace(Arc::new(tenants));
    }

    /// Waits (bounded) until live events of `tenant` reach this instance.
    pub async fn ready(&self, tenant: &str) -> bool {
        if self.everything {
            return true;
        }
        let mut rx = self.subscribed.subscribe();
        tokio::time::timeout(SUBSCRIBE_WAIT, rx.wait_for(|set| set.contains(tenant)))
            .await
            .is_ok_and(|r| r.is_ok())
    }
}

/// A replayed envelope's CloudEvents `type`: the SignalR target it is sent to.
pub fn event_type(json: &str) -> String {
    #[derive(serde::Deserialize)]
    struct Head {
        #[serde(rename = "type")]
        kind: String,
    }
    serde_json::from_str::<Head>(json)
        .map(|h| h.kind)
        .unwrap_or_default()
}

/// The `JoinTenantGroup` completion's result for a resume.
pub fn outcome(recovery: &Recovery, replayed: usize) -> Value {
    match recovery {
        Recovery::Recovered { position, .. } => json!({
            "recovered": true,
            "replayed": replayed,
            "streamId": position.to_string(),
        }),
        Recovery::Unrecoverable { reason, position } => json!({
            "recovered": false,
            "reason": reason.code(),
            "replayed": 0,
            "streamId": position.map(|p| p.to_string()),
        }),
    }
}

/// What one connection has written of each stream (a tenant's, or `None` for system-wide
/// events): the first and the last position since it connected. Live events reach a member
/// in history order, so every position between the two was written.
#[derive(Default)]
pub struct Written {
    streams: Vec<(Option<Arc<str>>, StreamId, StreamId)>,
}

impl Written {
    /// Whether an event at `id` of `stream` is new to the connection; records it if so.
    pub fn admit(&mut self, stream: Option<&Arc<str>>, id: StreamId) -> bool {
        match self
            .streams
            .iter_mut()
            .find(|(s, _, _)| s.as_deref() == stream.map(|s| &**s))
        {
            Some((_, _, last)) if id <= *last => false,
            Some((_, _, last)) => {
                *last = id;
                true
            }
            None => {
                self.streams.push((stream.cloned(), id, id));
                true
            }
        }
    }

    /// After a resume the connection has everything of `stream` up to `position`.
    pub fn caught_up(&mut self, stream: &Arc<str>, position: StreamId) {
        match self
            .streams
            .iter_mut()
            .find(|(s, _, _)| s.as_deref() == Some(&**stream))
        {
            Some((_, first, last)) => {
                *first = StreamId::default();
                *last = (*last).max(position);
            }
            None => self
                .streams
                .push((Some(Arc::clone(stream)), StreamId::default(), position)),
        }
    }

    /// Whether a replayed event at `id` of `stream` was already written live.
    pub fn has(&self, stream: &Arc<str>, id: StreamId) -> bool {
        self.streams
            .iter()
            .any(|(s, first, last)| s.as_deref() == Some(&**stream) && *first <= id && id <= *last)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_positions_admit_each_event_once() {
        let mut w = Written::default();
        let blue: Arc<str> = "blue".into();
        let id = |n| StreamId::new(n, 0);
        assert!(w.admit(Some(&blue), id(5)));
        assert!(w.admit(Some(&blue), id(6)));
        assert!(!w.admit(Some(&blue), id(6)), "twice");
        assert!(!w.admit(Some(&blue), id(4)), "older than the last");
        assert!(w.admit(None, id(1)), "another stream");
        assert!(w.has(&blue, id(5)) && w.has(&blue, id(6)));
        assert!(!w.has(&blue, id(4)) && !w.has(&blue, id(7)));
    }

    #[tokio::test]
    async fn a_resume_waits_for_the_subscription() {
        let feed = LiveFeed {
            everything: false,
            subscribed: watch::Sender::new(Arc::default()),
        };
        let feed = Arc::new(feed);
        let waiting = tokio::spawn({
            let feed = Arc::clone(&feed);
            async move { feed.ready("blue").await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiting.is_finished());
        feed.set(HashSet::from([Arc::from("blue")]));
        assert!(waiting.await.unwrap());
    }
}
