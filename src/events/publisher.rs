//! The Redis publisher takes what is queued (up to a batch) and sends it as one pipeline of
//! PUBLISH commands to `{prefix}{tenant}` (`{prefix}_all` for system-wide events). When Redis
//! cannot be reached it keeps the batch, reconnects with backoff, and lets the queue absorb what
//! arrives meanwhile; what the queue cannot hold is dropped (and counted) by the senders. A
//! batch interrupted by a broken connection is sent again: delivery is at least once.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Map;
use tokio::sync::mpsc;

use super::{Event, EventMetrics};

const BATCH: usize = 256;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);
const BACKOFF_START: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(1);
pub const ALL_TENANTS: &str = "_all";

pub fn channel(prefix: &str, event: &Event) -> String {
    format!("{prefix}{}", event.tenant.as_deref().unwrap_or(ALL_TENANTS))
}

pub async fn redis(
    url: String,
    prefix: String,
    mut outbox: mpsc::Receiver<Arc<Event>>,
    source: String,
    metrics: Option<Arc<EventMetrics>>,
) {
    let client = match redis::Client::open(url.as_str()) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "invalid Redis URL; events will not be published");
            return;
        }
    };
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        .set_response_timeout(Some(RESPONSE_TIMEOUT));
    let mut connection: Option<redis::aio::MultiplexedConnection> = None;
    let mut pending: VecDeque<Arc<Event>> = VecDeque::new();
    let mut backoff = BACKOFF_START;
    let mut lost = false;
    loop {
        if pending.is_empty() {
            match outbox.recv().await {
                Some(event) => pending.push_back(event),
                None => return,
            }
        }
        while pending.len() < BATCH {
            match outbox.try_recv() {
                Ok(event) => pending.push_back(event),
                Err(_) => break,
            }
        }
        let con = match &mut connection {
            Some(con) => con,
            None => match client
                .get_multiplexed_async_connection_with_config(&config)
                .await
            {
                Ok(con) => {
                    if lost {
                        lost = false;
                        tracing::warn!(
                            event = "redis_regained",
                            "Redis reachable again; publishing resumes"
                        );
                        pending.push_front(Arc::new(Event::alert(
                            &source,
                            "redis_regained",
                            "the event bus reaches Redis again",
                            Map::new(),
                        )));
                    }
                    backoff = BACKOFF_START;
                    connection.insert(con)
                }
                Err(e) => {
                    if !lost {
                        lost = true;
                        tracing::warn!(event = "redis_lost", error = %e, "Redis unreachable; events wait in the queue");
                        pending.push_front(Arc::new(Event::alert(
                            &source,
                            "redis_lost",
                            "the event bus lost Redis; events are queued",
                            Map::new(),
                        )));
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                    continue;
                }
            },
        };
        let mut pipe = redis::pipe();
        for event in &pending {
            pipe.cmd("PUBLISH")
                .arg(channel(&prefix, event))
                .arg(event.json.as_bytes())
                .ignore();
        }
        match pipe.query_async::<()>(con).await {
            Ok(()) => {
                for event in pending.drain(..) {
                    if let Some(m) = &metrics {
                        m.published(&event.kind);
                    }
                }
            }
            Err(e) => {
                if !lost {
                    lost = true;
                    tracing::warn!(event = "redis_lost", error = %e, "publishing to Redis failed; events wait in the queue");
                    pending.push_front(Arc::new(Event::alert(
                        &source,
                        "redis_lost",
                        "the event bus lost Redis; events are queued",
                        Map::new(),
                    )));
                }
                connection = None;
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        }
    }
}
