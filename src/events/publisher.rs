//! The Redis publisher takes what is queued (up to a batch) and sends it as one pipeline of
//! script invocations, each appending one event to its tenant's history stream and publishing it
//! to `{prefix}{tenant}` (`{prefix}_all` for system-wide events) with its `streamid`
//! (`redis_history.rs`). On a Redis Cluster the batch goes as one pipeline per tenant (a
//! pipeline reaches one slot), all at once, and only what failed is sent again. When Redis
//! cannot be reached it keeps the batch, reconnects with backoff, and lets the queue absorb what
//! arrives meanwhile; what the queue cannot hold is dropped (and counted) by the senders. A
//! batch interrupted by a broken connection is sent again: delivery is at least once.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::Map;
use tokio::sync::mpsc;

use super::redis_history::{self, PublishArgs};
use super::redis_target::{Connection, RedisTarget};
use super::{Event, EventMetrics, HistoryLimits};

const BATCH: usize = 256;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);
const BACKOFF_START: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(1);
pub use super::history::ALL_TENANTS;
/// Events are given up this long before the grace period ends, so their loss is logged before
/// the process exits.
const GIVE_UP_MARGIN: Duration = Duration::from_millis(500);
/// The least time a send to a connected Redis gets during a stop.
const MIN_SEND: Duration = Duration::from_millis(500);

fn stream_of(event: &Event) -> &str {
    event.tenant.as_deref().unwrap_or(ALL_TENANTS)
}

/// What the publisher works with.
pub struct Publisher {
    pub url: String,
    pub prefix: String,
    pub history: HistoryLimits,
    pub source: String,
    pub metrics: Option<Arc<EventMetrics>>,
    /// Queued and not yet published; decremented as they are published or given up.
    pub backlog: Arc<AtomicUsize>,
    /// After the stop begins, how long queued events may still wait for Redis.
    pub grace: Duration,
}

/// An event waiting to be published; `queued` when it came through the queue (and counts in
/// the backlog), not for the publisher's own alerts.
struct Waiting {
    event: Arc<Event>,
    queued: bool,
}

pub async fn redis(
    p: Publisher,
    mut outbox: mpsc::Receiver<Arc<Event>>,
    stopping: impl std::future::Future<Output = ()>,
) {
    let target = match RedisTarget::parse(&p.url) {
        Ok(target) => target,
        Err(e) => {
            tracing::error!(error = %e, "invalid Redis URL; events will not be published");
            return;
        }
    };
    let script = redis::Script::new(redis_history::PUBLISH);
    // Connected at once, so `payedge_event_bus_up` tells from the start whether Redis is there
    // (afterwards it connects when there is something to send).
    let mut connection = open(&target, &script, CONNECT_TIMEOUT).await.ok();
    if let Some(m) = &p.metrics {
        m.bus_up(connection.is_some(), false);
    }
    let mut pending: VecDeque<Waiting> = VecDeque::new();
    let mut backoff = BACKOFF_START;
    let mut lost = false;
    tokio::pin!(stopping);
    // Set when the stop begins: queued events are given up after this.
    let mut give_up_at: Option<Instant> = None;
    let alert = |code: &str, message: &str| Waiting {
        event: Arc::new(Event::alert(&p.source, code, message, Map::new())),
        queued: false,
    };
    loop {
        if pending.is_empty() {
            tokio::select! {
                event = outbox.recv() => match event {
                    Some(event) => pending.push_back(Waiting { event, queued: true }),
                    None => return,
                },
                _ = &mut stopping, if give_up_at.is_none() => {
                    give_up_at = Some(Instant::now() + p.grace.saturating_sub(GIVE_UP_MARGIN));
                    continue;
                }
            }
        }
        while pending.len() < BATCH {
            match outbox.try_recv() {
                Ok(event) => pending.push_back(Waiting {
                    event,
                    queued: true,
                }),
                Err(_) => break,
            }
        }
        if give_up_at.is_some_and(|at| Instant::now() >= at) && connection.is_none() {
            give_up(&p, &mut pending, &mut outbox);
            continue;
        }
        // After the stop, nothing may wait past the moment events are given up.
        let until_give_up = give_up_at.map(|at| at.saturating_duration_since(Instant::now()));
        let con = match &mut connection {
            Some(con) => con,
            None => match open(&target, &script, until_give_up.unwrap_or(CONNECT_TIMEOUT)).await {
                Ok(con) => {
                    if let Some(m) = &p.metrics {
                        m.bus_up(true, lost);
                    }
                    if lost {
                        lost = false;
                        tracing::warn!(
                            event = "redis_regained",
                            "Redis reachable again; publishing resumes"
                        );
                        pending.push_front(alert(
                            "redis_regained",
                            "the event bus reaches Redis again",
                        ));
                    }
                    backoff = BACKOFF_START;
                    connection.insert(con)
                }
                Err(e) => {
                    if let Some(m) = &p.metrics {
                        m.bus_up(false, false);
                        m.publish_failed();
                    }
                    if !lost {
                        lost = true;
                        tracing::warn!(event = "redis_lost", error = %e, "Redis unreachable; events wait in the queue");
                        pending.push_front(alert(
                            "redis_lost",
                            "the event bus lost Redis; events are queued",
                        ));
                    }
                    let wait = until_give_up.map_or(backoff, |left| left.min(backoff));
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = &mut stopping, if give_up_at.is_none() => {
                            give_up_at = Some(Instant::now() + p.grace.saturating_sub(GIVE_UP_MARGIN));
                        }
                    }
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                    continue;
                }
            },
        };
        // A Redis that is there gets at least half a second, even past the give-up moment:
        // events it takes must not be reported lost.
        let limit = until_give_up.map_or(RESPONSE_TIMEOUT, |left| left.max(MIN_SEND));
        let (published, failure) = send(&p, &target, script.get_hash(), con, &pending, limit).await;
        let mut index = 0;
        pending.retain(|waiting| {
            let sent = published[index];
            index += 1;
            if sent {
                if let Some(m) = &p.metrics {
                    m.published(&waiting.event.kind);
                }
                if waiting.queued {
                    p.backlog.fetch_sub(1, Ordering::AcqRel);
                }
            }
            !sent
        });
        match failure {
            None => {}
            Some(e) => {
                if let Some(m) = &p.metrics {
                    m.bus_up(false, false);
                    m.publish_failed();
                }
                if !lost {
                    lost = true;
                    tracing::warn!(event = "redis_lost", error = %e, "publishing to Redis failed; events wait in the queue");
                    pending.push_front(alert(
                        "redis_lost",
                        "the event bus lost Redis; events are queued",
                    ));
                }
                connection = None;
                tokio::time::sleep(until_give_up.map_or(backoff, |left| left.min(backoff))).await;
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        }
    }
}

/// A new connection, with the publish script loaded (a restarted Redis has no scripts).
async fn open(
    target: &RedisTarget,
    script: &redis::Script,
    limit: Duration,
) -> redis::RedisResult<Connection> {
    tokio::time::timeout(limit, async {
        let mut con = target
            .connect(CONNECT_TIMEOUT.max(RESPONSE_TIMEOUT))
            .await?;
        script.prepare_invoke().load_async(&mut con).await?;
        Ok(con)
    })
    .await
    .unwrap_or_else(|_| {
        Err(redis::RedisError::from(std::io::Error::from(
            std::io::ErrorKind::TimedOut,
        )))
    })
}

/// Sends `pending` (one pipeline; on a cluster one per stream, concurrently); which were
/// published, and the first failure.
async fn send(
    p: &Publisher,
    target: &RedisTarget,
    sha: &str,
    con: &mut Connection,
    pending: &VecDeque<Waiting>,
    limit: Duration,
) -> (Vec<bool>, Option<redis::RedisError>) {
    let args = |stream: &str| PublishArgs {
        limits: p.history,
        channel: target.channel(&p.prefix, stream),
        sharded: target.is_cluster(),
    };
    // (stream, indices in `pending`) in the order streams first appear.
    let mut groups: Vec<(&str, Vec<usize>)> = Vec::new();
    for (i, waiting) in pending.iter().enumerate() {
        let stream = if target.is_cluster() {
            stream_of(&waiting.event)
        } else {
            ""
        };
        match groups.iter_mut().find(|(s, _)| *s == stream) {
            Some((_, members)) => members.push(i),
            None => groups.push((stream, vec![i])),
        }
    }
    let sends = groups.iter().map(|(_, members)| {
        let mut pipe = redis::pipe();
        for &i in members {
            let event = &pending[i].event;
            let stream = stream_of(event);
            redis_history::add_publish(
                &mut pipe,
                sha,
                &redis_history::stream_key(&p.prefix, stream),
                &event.json,
                &args(stream),
            );
            pipe.ignore();
        }
        let mut con = con.clone();
        async move {
            tokio::time::timeout(limit, pipe.query_async::<()>(&mut con))
                .await
                .unwrap_or_else(|_| {
                    Err(redis::RedisError::from(std::io::Error::from(
                        std::io::ErrorKind::TimedOut,
                    )))
                })
        }
    });
    let results = futures_util::future::join_all(sends).await;
    let mut published = vec![false; pending.len()];
    let mut failure = None;
    for ((_, members), result) in groups.iter().zip(results) {
        match result {
            Ok(()) => members.iter().for_each(|&i| published[i] = true),
            Err(e) => {
                failure.get_or_insert(e);
            }
        }
    }
    (published, failure)
}

/// The stop's grace period is over and Redis is not there: every waiting event is lost. Each is
/// logged with its id (and the request it came from), so it can be reconciled, and counted.
fn give_up(
    p: &Publisher,
    pending: &mut VecDeque<Waiting>,
    outbox: &mut mpsc::Receiver<Arc<Event>>,
) {
    while let Ok(event) = outbox.try_recv() {
        pending.push_back(Waiting {
            event,
            queued: true,
        });
    }
    for waiting in pending.drain(..) {
        if !waiting.queued {
            continue;
        }
        let event = &waiting.event;
        tracing::error!(
            event_id = event.id(),
            event_type = event.kind,
            tenant = event.tenant.as_deref().unwrap_or(ALL_TENANTS),
            correlation_id = event.correlation_id.as_deref().unwrap_or(""),
            "event lost: the process stopped before Redis could take it"
        );
        if let Some(m) = &p.metrics {
            m.dropped("shutdown");
        }
        p.backlog.fetch_sub(1, Ordering::AcqRel);
    }
}
