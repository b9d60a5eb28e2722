//! `POST {hub}/negotiate`: a connection id and a one-time connection token for the WebSocket
//! that follows (`{hub}?id=<token>`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;

use super::session::Caller;

/// How long a negotiated connection waits for its WebSocket.
const PENDING_TTL: Duration = Duration::from_secs(30);
/// Pending negotiations kept at most (negotiating is cheap; this bounds the memory it costs).
const MAX_PENDING: usize = 100_000;
/// Unclaimed negotiations one caller (tenant and subject) may hold, so that one caller cannot
/// take the whole table from everyone else.
const MAX_PENDING_PER_CALLER: usize = 64;
/// Expired negotiations are swept at most this often, not on every negotiate.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

struct Pending {
    connection_id: String,
    caller: Caller,
    created: Instant,
    used: bool,
    /// Stateful reconnect was asked for and granted.
    stateful: bool,
}

/// A negotiation taken by its WebSocket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claimed {
    pub connection_id: String,
    pub stateful: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    Unknown,
    AlreadyUsed,
    /// The token was negotiated by another caller.
    NotYours,
}

#[derive(Default)]
pub struct Negotiations {
    table: Mutex<Table>,
}

#[derive(Default)]
struct Table {
    pending: HashMap<String, Pending>,
    /// Unclaimed negotiations by caller identity.
    unclaimed: HashMap<(Arc<str>, Option<String>), usize>,
    last_sweep: Option<Instant>,
}

impl Table {
    fn sweep(&mut self, now: Instant) {
        let due = self
            .last_sweep
            .is_none_or(|last| now.duration_since(last) >= SWEEP_EVERY);
        if !due && self.pending.len() < MAX_PENDING {
            return;
        }
        self.last_sweep = Some(now);
        let unclaimed = &mut self.unclaimed;
        self.pending.retain(|_, p| {
            let keep = now.duration_since(p.created) < PENDING_TTL;
            if !keep && !p.used {
                release(unclaimed, &p.caller);
            }
            keep
        });
    }
}

fn identity(caller: &Caller) -> (Arc<str>, Option<String>) {
    (Arc::clone(&caller.tenant), caller.subject.clone())
}

fn release(unclaimed: &mut HashMap<(Arc<str>, Option<String>), usize>, caller: &Caller) {
    let key = identity(caller);
    if let Some(count) = unclaimed.get_mut(&key) {
        *count -= 1;
        if *count == 0 {
            unclaimed.remove(&key);
        }
    }
}

impl Negotiations {
    /// Registers a negotiation; returns the JSON answer for negotiate version `version` (0 or
    /// 1: version 0 clients use the connection id as the token), granting stateful reconnect
    /// when `stateful`.
    pub fn create(&self, caller: Caller, version: u32, stateful: bool) -> Option<String> {
        let connection_id = uuid::Uuid::new_v4().simple().to_string();
        let token = if version >= 1 {
            uuid::Uuid::new_v4().simple().to_string()
        } else {
            connection_id.clone()
        };
        let now = Instant::now();
        let mut table = self.table.lock().ok()?;
        table.sweep(now);
        let mine = table.unclaimed.entry(identity(&caller)).or_default();
        if *mine >= MAX_PENDING_PER_CALLER {
            return None;
        }
        *mine += 1;
        if table.pending.len() >= MAX_PENDING {
            release(&mut table.unclaimed, &caller);
            return None;
        }
        table.pending.insert(
            token.clone(),
            Pending {
                connection_id: connection_id.clone(),
                caller,
                created: now,
                used: false,
                stateful,
            },
        );
        let transports = json!([{ "transport": "WebSockets", "transferFormats": ["Text"] }]);
        let mut body = if version >= 1 {
            json!({
                "negotiateVersion": 1,
                "connectionId": connection_id,
                "connectionToken": token,
                "availableTransports": transports,
            })
        } else {
            json!({
                "negotiateVersion": 0,
                "connectionId": connection_id,
                "availableTransports": transports,
            })
        };
        if stateful {
            body["useStatefulReconnect"] = true.into();
        }
        Some(body.to_string())
    }

    /// Takes the negotiation of `token` for `caller`, once.
    pub fn claim(&self, token: &str, caller: &Caller) -> Result<Claimed, Claim> {
        let now = Instant::now();
        let mut table = self.table.lock().map_err(|_| Claim::Unknown)?;
        let Table {
            pending, unclaimed, ..
        } = &mut *table;
        let entry = pending
            .get_mut(token)
            .filter(|p| now.duration_since(p.created) < PENDING_TTL)
            .ok_or(Claim::Unknown)?;
        if entry.used {
            return Err(Claim::AlreadyUsed);
        }
        if !entry.caller.same_identity(caller) {
            return Err(Claim::NotYours);
        }
        entry.used = true;
        release(unclaimed, &entry.caller);
        Ok(Claimed {
            connection_id: entry.connection_id.clone(),
            stateful: entry.stateful,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(tenant: &str) -> Caller {
        Caller::for_tests(tenant)
    }

    #[test]
    fn a_token_is_claimed_once_by_whoever_negotiated_it() {
        let n = Negotiations::default();
        let answer: serde_json::Value =
            serde_json::from_str(&n.create(caller("blue"), 1, false).unwrap()).unwrap();
        assert_eq!(answer["negotiateVersion"], 1);
        assert_eq!(answer["availableTransports"][0]["transport"], "WebSockets");
        let token = answer["connectionToken"].as_str().unwrap();
        assert_ne!(token, answer["connectionId"].as_str().unwrap());
        assert_eq!(n.claim(token, &caller("green")), Err(Claim::NotYours));
        assert_eq!(
            n.claim(token, &caller("blue")).unwrap().connection_id,
            answer["connectionId"].as_str().unwrap()
        );
        assert!(answer.get("useStatefulReconnect").is_none());
        assert_eq!(n.claim(token, &caller("blue")), Err(Claim::AlreadyUsed));
        assert_eq!(n.claim("nope", &caller("blue")), Err(Claim::Unknown));
    }

    #[test]
    fn one_caller_cannot_hold_more_than_its_share_of_negotiations() {
        let n = Negotiations::default();
        let tokens: Vec<String> = (0..MAX_PENDING_PER_CALLER)
            .map(|_| {
                let answer: serde_json::Value =
                    serde_json::from_str(&n.create(caller("blue"), 1, false).unwrap()).unwrap();
                answer["connectionToken"].as_str().unwrap().to_string()
            })
            .collect();
        assert!(n.create(caller("blue"), 1, false).is_none());
        assert!(
            n.create(caller("green"), 1, false).is_some(),
            "others are not affected"
        );
        // Claiming one frees a place.
        n.claim(&tokens[0], &caller("blue")).unwrap();
        assert!(n.create(caller("blue"), 1, false).is_some());
        assert!(n.create(caller("blue"), 1, false).is_none());
    }

    #[test]
    fn stateful_reconnect_is_granted_in_the_answer_and_remembered_for_the_socket() {
        let n = Negotiations::default();
        let answer: serde_json::Value =
            serde_json::from_str(&n.create(caller("blue"), 1, true).unwrap()).unwrap();
        assert_eq!(answer["useStatefulReconnect"], true);
        let token = answer["connectionToken"].as_str().unwrap();
        assert!(n.claim(token, &caller("blue")).unwrap().stateful);
    }

    #[test]
    fn version_0_clients_use_the_connection_id() {
        let n = Negotiations::default();
        let answer: serde_json::Value =
            serde_json::from_str(&n.create(caller("blue"), 0, false).unwrap()).unwrap();
        assert_eq!(answer["negotiateVersion"], 0);
        assert!(answer.get("connectionToken").is_none());
        assert!(
            n.claim(answer["connectionId"].as_str().unwrap(), &caller("blue"))
                .is_ok()
        );
    }
}
