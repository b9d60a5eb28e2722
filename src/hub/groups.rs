//! Hub groups (`tenant::{tenant}`) and the fan-out of events to their members.
//!
//! An event's message is written once and shared by every member's queue. Each connection has a
//! bounded queue: a member whose queue is full is told to close (a slow consumer), and nobody
//! else waits for it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use tokio::sync::{Notify, mpsc};
use tokio_tungstenite::tungstenite::Utf8Bytes;

use super::metrics::HubMetrics;

/// One event as every receiving connection gets it.
#[derive(Debug)]
pub struct EventFrame {
    pub text: Utf8Bytes,
    /// The event's own time, for the delivery latency.
    pub time: SystemTime,
    /// The tenant whose stream it is in (`None`: system-wide), and its position there, by
    /// which each connection writes it once.
    pub stream: Option<Arc<str>>,
    pub position: Option<crate::events::StreamId>,
}

/// How the hub reaches one connection.
#[derive(Clone)]
pub struct Member {
    pub tx: mpsc::Sender<Arc<EventFrame>>,
    pub eviction: Arc<Eviction>,
}

/// Tells a connection, once, to close: as a slow consumer, or because events of its groups
/// were missed here and it has to resume them.
#[derive(Default)]
pub struct Eviction {
    pub notify: Notify,
    flagged: AtomicBool,
    resync: AtomicBool,
}

/// The Close message's error for a slow consumer.
pub const SLOW: &str = "the connection fell too far behind its messages";
/// The Close message's error after a gap this instance could not repair.
pub const RESYNC: &str =
    "events may have been missed; reconnect and resume from the last streamid received";

impl Eviction {
    /// `true` the first time only.
    pub fn evict(&self) -> bool {
        let first = !self.flagged.swap(true, Ordering::AcqRel);
        if first {
            self.notify.notify_one();
        }
        first
    }

    /// Evicts to make the client resume.
    pub fn resync(&self) -> bool {
        self.resync.store(true, Ordering::Release);
        self.evict()
    }

    /// What the Close message says.
    pub fn reason(&self) -> &'static str {
        if self.resync.load(Ordering::Acquire) {
            RESYNC
        } else {
            SLOW
        }
    }
}

pub type ConnectionId = u64;

#[derive(Default)]
pub struct Groups {
    /// tenant → members of `tenant::{tenant}`.
    groups: RwLock<HashMap<Arc<str>, HashMap<ConnectionId, Member>>>,
    /// Every connection, for system-wide events.
    everyone: RwLock<HashMap<ConnectionId, Member>>,
    next_id: AtomicU64,
    /// Connections here: the event bus skips local delivery while there are none.
    pub audience: Arc<AtomicUsize>,
    /// Woken when a group gains its first member or loses its last (the Redis backplane
    /// subscribes and unsubscribes accordingly).
    pub changed: Notify,
}

impl Groups {
    pub fn connect(&self, member: Member) -> ConnectionId {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut everyone) = self.everyone.write() {
            everyone.insert(id, member);
            self.audience.store(everyone.len(), Ordering::Relaxed);
        }
        id
    }

    pub fn disconnect(&self, id: ConnectionId) {
        if let Ok(mut everyone) = self.everyone.write() {
            everyone.remove(&id);
            self.audience.store(everyone.len(), Ordering::Relaxed);
        }
    }

    pub fn join(&self, tenant: &Arc<str>, id: ConnectionId, member: Member) {
        let first = {
            let Ok(mut groups) = self.groups.write() else {
                return;
            };
            let group = groups.entry(Arc::clone(tenant)).or_default();
            group.insert(id, member);
            group.len() == 1
        };
        if first {
            self.changed.notify_one();
        }
    }

    pub fn leave(&self, tenant: &str, id: ConnectionId) {
        let emptied = {
            let Ok(mut groups) = self.groups.write() else {
                return;
            };
            let Some(group) = groups.get_mut(tenant) else {
                return;
            };
            group.remove(&id);
            let empty = group.is_empty();
            if empty {
                groups.remove(tenant);
            }
            empty
        };
        if emptied {
            self.changed.notify_one();
        }
    }

    /// Tenants whose group has members here.
    pub fn active_tenants(&self) -> Vec<Arc<str>> {
        self.groups
            .read()
            .map(|g| g.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// Tells the members of `tenant`'s group (everyone, for `None`) to reconnect and resume;
    /// how many.
    pub fn resync(&self, tenant: Option<&str>) -> usize {
        let tell = |members: &HashMap<ConnectionId, Member>| {
            members.values().filter(|m| m.eviction.resync()).count()
        };
        match tenant {
            Some(tenant) => self
                .groups
                .read()
                .ok()
                .and_then(|g| g.get(tenant).map(tell))
                .unwrap_or(0),
            None => self.everyone.read().map(|e| tell(&e)).unwrap_or(0),
        }
    }

    /// Hands `frame` to the members of `tenant`'s group, or to everyone when `tenant` is `None`.
    pub fn deliver(
        &self,
        tenant: Option<&str>,
        frame: &Arc<EventFrame>,
        metrics: Option<&HubMetrics>,
    ) {
        let offer = |member: &Member| {
            let full = matches!(
                member.tx.try_send(Arc::clone(frame)),
                Err(mpsc::error::TrySendError::Full(_))
            );
            // A closed queue is a connection already ending, not a slow one.
            if full
                && member.eviction.evict()
                && let Some(m) = metrics
            {
                m.slow_consumer();
            }
        };
        match tenant {
            Some(tenant) => {
                if let Ok(groups) = self.groups.read()
                    && let Some(group) = groups.get(tenant)
                {
                    group.values().for_each(offer);
                }
            }
            None => {
                if let Ok(everyone) = self.everyone.read() {
                    everyone.values().for_each(offer);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(capacity: usize) -> (Member, mpsc::Receiver<Arc<EventFrame>>) {
        let (tx, rx) = mpsc::channel(capacity);
        (
            Member {
                tx,
                eviction: Arc::default(),
            },
            rx,
        )
    }

    fn frame() -> Arc<EventFrame> {
        Arc::new(EventFrame {
            text: Utf8Bytes::from_static("x"),
            time: SystemTime::now(),
            stream: None,
            position: None,
        })
    }

    #[test]
    fn the_audience_counts_connections() {
        let groups = Groups::default();
        let (a, _a_rx) = member(1);
        let (b, _b_rx) = member(1);
        let a_id = groups.connect(a);
        let b_id = groups.connect(b);
        assert_eq!(groups.audience.load(Ordering::Relaxed), 2);
        groups.disconnect(a_id);
        groups.disconnect(b_id);
        assert_eq!(groups.audience.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn events_reach_their_tenants_members_and_system_events_everyone() {
        let groups = Groups::default();
        let blue: Arc<str> = "blue".into();
        let green: Arc<str> = "green".into();
        let (b, mut b_rx) = member(4);
        let (g, mut g_rx) = member(4);
        let b_id = groups.connect(b.clone());
        let g_id = groups.connect(g.clone());
        groups.join(&blue, b_id, b);
        groups.join(&green, g_id, g);
        groups.deliver(Some("blue"), &frame(), None);
        assert!(b_rx.try_recv().is_ok());
        assert!(g_rx.try_recv().is_err());
        groups.deliver(None, &frame(), None);
        assert!(b_rx.try_recv().is_ok() && g_rx.try_recv().is_ok());
        let mut active = groups.active_tenants();
        active.sort();
        assert_eq!(active, vec![blue.clone(), green.clone()]);
        groups.leave("green", g_id);
        assert_eq!(groups.active_tenants(), vec![blue]);
    }

    #[tokio::test]
    async fn a_full_queue_evicts_its_connection_only() {
        let groups = Groups::default();
        let blue: Arc<str> = "blue".into();
        let (slow, _slow_rx) = member(1);
        let (fast, mut fast_rx) = member(8);
        let evicted = Arc::clone(&slow.eviction);
        let s = groups.connect(slow.clone());
        let f = groups.connect(fast.clone());
        groups.join(&blue, s, slow);
        groups.join(&blue, f, fast);
        groups.deliver(Some("blue"), &frame(), None);
        groups.deliver(Some("blue"), &frame(), None);
        tokio::time::timeout(std::time::Duration::from_secs(1), evicted.notify.notified())
            .await
            .expect("the slow member was not told to close");
        assert!(fast_rx.try_recv().is_ok() && fast_rx.try_recv().is_ok());
    }
}
