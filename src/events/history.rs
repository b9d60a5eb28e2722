//! Each tenant's recent events, for clients that come back after missing some.
//!
//! The history is bounded twice: at most `max_events` per tenant, and none older than `max_age`.
//! A client that names the last position it saw gets everything after it, or is told plainly
//! that the history no longer reaches back (and gets nothing, so it reloads its state instead of
//! trusting a partial replay). Redis keeps it in Streams (`redis_history.rs`); this file holds
//! the outcome types and the in-memory store, which answers the same way on one instance.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::stream_id::{StreamId, stamp};

/// The stream of events for everyone (system-wide events).
pub const ALL_TENANTS: &str = "_all";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryLimits {
    pub max_events: usize,
    pub max_age: Duration,
}

/// One event from the history, as the client gets it (its position stamped in).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replayed {
    pub id: StreamId,
    pub json: Arc<str>,
}

/// Why a position cannot be resumed from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unrecoverable {
    /// The position is not in the history: trimmed (too many events or too old since), or the
    /// history was lost (a restart of the in-memory store, a Redis that lost its data).
    Gap,
    /// The history could not be read (Redis unreachable).
    Unavailable,
}

impl Unrecoverable {
    pub fn code(self) -> &'static str {
        match self {
            Self::Gap => "gap",
            Self::Unavailable => "unavailable",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recovery {
    /// Everything after the client's position, oldest first; live events continue after
    /// `position` (the last replayed, or the stream's head when nothing was missed).
    Recovered {
        entries: Vec<Replayed>,
        position: StreamId,
    },
    /// Nothing replayed; `position` is the stream's head when known.
    Unrecoverable {
        reason: Unrecoverable,
        position: Option<StreamId>,
    },
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The in-memory history: one bounded deque per tenant (and one for system-wide events).
pub struct MemoryHistory {
    limits: HistoryLimits,
    streams: Mutex<HashMap<Arc<str>, Stream>>,
}

#[derive(Default)]
struct Stream {
    entries: VecDeque<Replayed>,
    /// The last id given out, kept when its entry is trimmed: a client at the head missed
    /// nothing, however old its position.
    last: StreamId,
    /// Entries ever added (fewer kept: some were trimmed).
    added: usize,
    /// The newest entry trimmed: a client whose position it is missed only what is kept (a quiet
    /// tenant's last event, trimmed for its age by the next one).
    trimmed: Option<StreamId>,
}

impl Stream {
    fn trim(&mut self, limits: HistoryLimits, now_ms: u64) {
        let oldest = now_ms.saturating_sub(limits.max_age.as_millis() as u64);
        while self
            .entries
            .front()
            .is_some_and(|e| e.id.ms < oldest || self.entries.len() > limits.max_events)
        {
            self.trimmed = self.entries.pop_front().map(|e| e.id);
        }
    }
}

impl MemoryHistory {
    pub fn new(limits: HistoryLimits) -> Self {
        Self {
            limits,
            streams: Mutex::default(),
        }
    }

    /// Adds an event of `stream` (a tenant, or [`ALL_TENANTS`]); its position and stamped
    /// envelope. `then` runs before anything else can be added to the history, so that live
    /// delivery happens in history order.
    pub fn append<R>(
        &self,
        stream: &Arc<str>,
        json: &str,
        then: impl FnOnce(&Replayed) -> R,
    ) -> Option<R> {
        let now = now_ms();
        let mut streams = self.streams.lock().ok()?;
        let s = streams.entry(Arc::clone(stream)).or_default();
        let id = s.last.next_at(now);
        s.last = id;
        let entry = Replayed {
            id,
            json: Arc::from(stamp(json, id)),
        };
        let out = then(&entry);
        s.entries.push_back(entry);
        s.added += 1;
        s.trim(self.limits, now);
        Some(out)
    }

    /// What a client that last saw `after` of `stream` missed. [`StreamId::START`] stands
    /// for the start of the stream: all of it, if nothing was ever trimmed.
    pub fn resume(&self, stream: &str, after: StreamId) -> Recovery {
        let gap = |position| Recovery::Unrecoverable {
            reason: Unrecoverable::Gap,
            position,
        };
        let Ok(mut streams) = self.streams.lock() else {
            return Recovery::Unrecoverable {
                reason: Unrecoverable::Unavailable,
                position: None,
            };
        };
        let Some(s) = streams.get_mut(stream) else {
            if after == StreamId::START {
                return Recovery::Recovered {
                    entries: Vec::new(),
                    position: after,
                };
            }
            return gap(None);
        };
        s.trim(self.limits, now_ms());
        if after == StreamId::START {
            if s.entries.len() != s.added {
                return gap(Some(s.last));
            }
            let entries: Vec<Replayed> = s.entries.iter().cloned().collect();
            return Recovery::Recovered {
                position: s.last,
                entries,
            };
        }
        if after == s.last {
            return Recovery::Recovered {
                entries: Vec::new(),
                position: after,
            };
        }
        let first_missed = match s.entries.binary_search_by(|e| e.id.cmp(&after)) {
            Ok(at) => at + 1,
            // Nothing after it was trimmed: it missed all that is kept.
            Err(_) if s.trimmed == Some(after) => 0,
            Err(_) => return gap(Some(s.last)),
        };
        let entries: Vec<Replayed> = s.entries.range(first_missed..).cloned().collect();
        Recovery::Recovered {
            position: entries.last().map_or(after, |e| e.id),
            entries,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn history(max_events: usize) -> MemoryHistory {
        MemoryHistory::new(HistoryLimits {
            max_events,
            max_age: Duration::from_secs(600),
        })
    }

    fn add(h: &MemoryHistory, stream: &str, n: usize) -> Vec<StreamId> {
        let stream: Arc<str> = stream.into();
        (0..n)
            .map(|i| {
                h.append(&stream, &format!("{{\"n\":{i}}}"), |e| e.id)
                    .unwrap()
            })
            .collect()
    }

    #[test]
    fn a_client_gets_what_it_missed_in_order_then_continues_from_the_last() {
        let h = history(100);
        let ids = add(&h, "blue", 10);
        assert!(ids.windows(2).all(|w| w[0] < w[1]));
        let Recovery::Recovered { entries, position } = h.resume("blue", ids[3]) else {
            panic!("not recovered");
        };
        assert_eq!(
            entries.iter().map(|e| e.id).collect::<Vec<_>>(),
            ids[4..].to_vec()
        );
        assert_eq!(position, ids[9]);
        assert!(
            entries[0]
                .json
                .starts_with(&format!("{{\"streamid\":\"{}\",", ids[4]))
        );
        assert!(entries[0].json.ends_with("\"n\":4}"));
    }

    #[test]
    fn a_client_at_the_head_missed_nothing_even_after_its_entry_is_trimmed() {
        let h = MemoryHistory::new(HistoryLimits {
            max_events: 100,
            max_age: Duration::ZERO,
        });
        let ids = add(&h, "blue", 3);
        // Older than the bound once the clock has moved on.
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(
            h.resume("blue", ids[2]),
            Recovery::Recovered {
                entries: vec![],
                position: ids[2]
            }
        );
        // Older positions are gone with their entries.
        assert!(matches!(
            h.resume("blue", ids[1]),
            Recovery::Unrecoverable {
                reason: Unrecoverable::Gap,
                ..
            }
        ));
    }

    #[test]
    fn a_quiet_tenants_client_whose_last_event_aged_out_gets_the_one_it_missed() {
        let h = MemoryHistory::new(HistoryLimits {
            max_events: 100,
            max_age: Duration::from_millis(400),
        });
        let last_seen = add(&h, "blue", 1)[0];
        std::thread::sleep(Duration::from_millis(450));
        // The next event trims the client's last one for its age: nothing after it was.
        let missed = add(&h, "blue", 1)[0];
        let Recovery::Recovered { entries, position } = h.resume("blue", last_seen) else {
            panic!("not recovered");
        };
        assert_eq!(entries.iter().map(|e| e.id).collect::<Vec<_>>(), [missed]);
        assert_eq!(position, missed);

        // Two events aged out: a client at the older one missed the newer, which is gone.
        let older = add(&h, "green", 2);
        std::thread::sleep(Duration::from_millis(450));
        let newest = add(&h, "green", 1)[0];
        assert!(matches!(
            h.resume("green", older[0]),
            Recovery::Unrecoverable {
                reason: Unrecoverable::Gap,
                ..
            }
        ));
        let Recovery::Recovered { entries, .. } = h.resume("green", older[1]) else {
            panic!("the newest trimmed position resumes");
        };
        assert_eq!(entries.iter().map(|e| e.id).collect::<Vec<_>>(), [newest]);
    }

    #[test]
    fn positions_beyond_the_bound_unknown_or_of_another_stream_are_gaps() {
        let h = history(5);
        let ids = add(&h, "blue", 8);
        let gap = |r: Recovery| {
            matches!(
                r,
                Recovery::Unrecoverable {
                    reason: Unrecoverable::Gap,
                    ..
                }
            )
        };
        assert!(gap(h.resume("blue", ids[1])), "trimmed by count");
        assert!(
            !gap(h.resume("blue", ids[3])),
            "the oldest kept entry's position still resumes"
        );
        assert!(
            gap(h.resume("blue", StreamId::new(ids[7].ms + 1, 0))),
            "ahead"
        );
        assert!(gap(h.resume("green", ids[7])), "no such stream");
        add(&h, "green", 1);
        assert!(gap(h.resume("green", ids[7])), "another stream's position");
    }

    #[test]
    fn the_start_resumes_while_nothing_was_trimmed() {
        let h = history(3);
        assert_eq!(
            h.resume("blue", StreamId::START),
            Recovery::Recovered {
                entries: vec![],
                position: StreamId::START
            },
            "no stream yet: nothing missed"
        );
        let ids = add(&h, "blue", 3);
        let Recovery::Recovered { entries, position } = h.resume("blue", StreamId::START) else {
            panic!("not recovered");
        };
        assert_eq!(entries.len(), 3);
        assert_eq!(position, ids[2]);
        add(&h, "blue", 1);
        assert!(matches!(
            h.resume("blue", StreamId::START),
            Recovery::Unrecoverable {
                reason: Unrecoverable::Gap,
                ..
            }
        ));
    }

    #[test]
    fn the_hook_sees_each_entry_before_the_next_is_added() {
        let h = history(10);
        let stream: Arc<str> = "blue".into();
        let seen = Mutex::new(Vec::new());
        for i in 0..3 {
            h.append(&stream, &format!("{{\"n\":{i}}}"), |e| {
                seen.lock().unwrap().push(e.id)
            });
        }
        let seen = seen.into_inner().unwrap();
        assert!(seen.windows(2).all(|w| w[0] < w[1]));
    }
}
