//! How often one caller (a token's tenant and subject) may negotiate a hub connection: a token
//! bucket of `notifications.limits.negotiations_per_minute`, refilled continuously, so a client
//! stuck in a reconnect loop — or a script — cannot keep the hub busy minting connection tokens.
//! Beyond it: 429 `too_many_negotiations` with the seconds until the next one in `Retry-After`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use super::session::Caller;

/// Callers tracked before the full (idle) buckets are forgotten.
const TRACKED: usize = 100_000;

pub struct NegotiationRate {
    state: Mutex<State>,
}

struct State {
    per_minute: u32,
    buckets: HashMap<(Arc<str>, String), Bucket>,
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn refill(&mut self, now: Instant, per_minute: u32) {
        let per_second = f64::from(per_minute) / 60.0;
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * per_second).min(f64::from(per_minute));
        self.at = now;
    }
}

impl NegotiationRate {
    pub fn new(per_minute: u32) -> Self {
        Self {
            state: Mutex::new(State {
                per_minute,
                buckets: HashMap::new(),
            }),
        }
    }

    /// A new rate from now on (a reload).
    pub fn set(&self, per_minute: u32) {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .per_minute = per_minute;
    }

    /// Takes one negotiation for `caller` at `now`, or says in how many seconds one is free.
    pub fn take(&self, caller: &Caller, now: Instant) -> Result<(), u64> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let per_minute = state.per_minute;
        if state.buckets.len() >= TRACKED {
            state.buckets.retain(|_, b| {
                b.refill(now, per_minute);
                b.tokens < f64::from(per_minute)
            });
        }
        let key = (
            Arc::clone(&caller.tenant),
            caller.subject.clone().unwrap_or_default(),
        );
        let bucket = state.buckets.entry(key).or_insert(Bucket {
            tokens: f64::from(per_minute),
            at: now,
        });
        bucket.refill(now, per_minute);
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            return Ok(());
        }
        let per_second = f64::from(per_minute) / 60.0;
        Err(((1.0 - bucket.tokens) / per_second).ceil().max(1.0) as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn caller(tenant: &str, subject: &str) -> Caller {
        Caller::for_tests_as(tenant, subject)
    }

    #[test]
    fn a_caller_gets_its_burst_then_one_per_interval() {
        let rate = NegotiationRate::new(6); // one every 10 s, a burst of 6
        let (alice, t0) = (caller("blue", "alice"), Instant::now());
        for i in 0..6 {
            assert_eq!(rate.take(&alice, t0), Ok(()), "negotiation {i}");
        }
        assert_eq!(rate.take(&alice, t0), Err(10));
        assert_eq!(rate.take(&alice, t0 + Duration::from_secs(4)), Err(6));
        assert_eq!(rate.take(&alice, t0 + Duration::from_secs(10)), Ok(()));
        assert!(rate.take(&alice, t0 + Duration::from_secs(10)).is_err());
        // Others are not affected: another subject, the same subject in another tenant.
        assert_eq!(rate.take(&caller("blue", "bob"), t0), Ok(()));
        assert_eq!(rate.take(&caller("green", "alice"), t0), Ok(()));
    }

    #[test]
    fn a_reload_changes_the_rate_for_the_next_negotiation() {
        let rate = NegotiationRate::new(1);
        let (alice, t0) = (caller("blue", "alice"), Instant::now());
        assert_eq!(rate.take(&alice, t0), Ok(()));
        assert_eq!(rate.take(&alice, t0), Err(60));
        rate.set(60);
        assert_eq!(rate.take(&alice, t0 + Duration::from_secs(1)), Ok(()));
    }
}
