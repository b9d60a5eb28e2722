//! How many hub connections one caller (a token's tenant and subject) and one tenant may hold on
//! this instance, so that no caller can exhaust the hub. A connection takes a [`Slot`] when its
//! WebSocket is accepted and gives it back when it ends; negotiate is refused early when the
//! caller is already at its limit.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::session::Caller;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitSettings {
    pub per_subject: usize,
    pub per_tenant: usize,
    /// Negotiations one caller may make per minute (a burst of as many, then evenly).
    pub negotiations_per_minute: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Subject,
    Tenant,
}

impl Refusal {
    pub fn label(self) -> &'static str {
        match self {
            Self::Subject => "subject_limit",
            Self::Tenant => "tenant_limit",
        }
    }
}

type SubjectKey = (Arc<str>, String);

pub struct ConnectionLimits {
    counts: Mutex<Counts>,
}

/// The limits (a reload may change them; held connections are never closed for it) and what
/// each caller and tenant holds.
struct Counts {
    settings: LimitSettings,
    subjects: HashMap<SubjectKey, usize>,
    tenants: HashMap<Arc<str>, usize>,
}

/// One held connection; released when dropped.
pub struct Slot {
    limits: Arc<ConnectionLimits>,
    tenant: Arc<str>,
    subject: Option<String>,
}

fn subject_key(caller: &Caller) -> Option<SubjectKey> {
    caller
        .subject
        .as_ref()
        .map(|s| (Arc::clone(&caller.tenant), s.clone()))
}

impl ConnectionLimits {
    pub fn new(settings: LimitSettings) -> Self {
        Self {
            counts: Mutex::new(Counts {
                settings,
                subjects: HashMap::new(),
                tenants: HashMap::new(),
            }),
        }
    }

    /// New limits for connections from now on (a reload).
    pub fn set(&self, settings: LimitSettings) {
        if let Ok(mut counts) = self.counts.lock() {
            counts.settings = settings;
        }
    }

    fn refusal(&self, counts: &Counts, caller: &Caller) -> Option<Refusal> {
        let tenant = counts.tenants.get(&caller.tenant).copied().unwrap_or(0);
        if tenant >= counts.settings.per_tenant {
            return Some(Refusal::Tenant);
        }
        let subject = subject_key(caller)
            .and_then(|k| counts.subjects.get(&k).copied())
            .unwrap_or(0);
        (subject >= counts.settings.per_subject).then_some(Refusal::Subject)
    }

    /// Whether `caller` may open one more connection now (negotiate asks before handing out a
    /// token; the WebSocket takes the slot).
    pub fn check(&self, caller: &Caller) -> Result<(), Refusal> {
        let Ok(counts) = self.counts.lock() else {
            return Ok(());
        };
        self.refusal(&counts, caller).map_or(Ok(()), Err)
    }

    /// Takes a slot for a connection of `caller`, or says which limit it is at.
    pub fn acquire(self: &Arc<Self>, caller: &Caller) -> Result<Slot, Refusal> {
        if let Ok(mut counts) = self.counts.lock() {
            if let Some(refusal) = self.refusal(&counts, caller) {
                return Err(refusal);
            }
            *counts
                .tenants
                .entry(Arc::clone(&caller.tenant))
                .or_default() += 1;
            if let Some(key) = subject_key(caller) {
                *counts.subjects.entry(key).or_default() += 1;
            }
        }
        Ok(Slot {
            limits: Arc::clone(self),
            tenant: Arc::clone(&caller.tenant),
            subject: caller.subject.clone(),
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let Ok(mut counts) = self.limits.counts.lock() else {
            return;
        };
        if let Some(n) = counts.tenants.get_mut(&self.tenant) {
            *n -= 1;
            if *n == 0 {
                counts.tenants.remove(&self.tenant);
            }
        }
        if let Some(subject) = self.subject.take() {
            let key = (Arc::clone(&self.tenant), subject);
            if let Some(n) = counts.subjects.get_mut(&key) {
                *n -= 1;
                if *n == 0 {
                    counts.subjects.remove(&key);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(tenant: &str, subject: &str) -> Caller {
        Caller::for_tests_as(tenant, subject)
    }

    #[test]
    fn a_subject_and_a_tenant_hold_at_most_their_limits() {
        let limits = Arc::new(ConnectionLimits::new(LimitSettings {
            per_subject: 2,
            per_tenant: 3,
            negotiations_per_minute: 60,
        }));
        let alice = caller("blue", "alice");
        let a1 = limits.acquire(&alice).unwrap();
        let _a2 = limits.acquire(&alice).unwrap();
        assert_eq!(limits.acquire(&alice).err(), Some(Refusal::Subject));
        assert_eq!(limits.check(&alice), Err(Refusal::Subject));
        // Another subject of blue: until the tenant's limit.
        let _b1 = limits.acquire(&caller("blue", "bob")).unwrap();
        assert_eq!(
            limits.acquire(&caller("blue", "carol")).err(),
            Some(Refusal::Tenant)
        );
        // The same subject name in another tenant is another caller.
        let _g = limits.acquire(&caller("green", "alice")).unwrap();
        // A closed connection frees its slot.
        drop(a1);
        assert!(limits.check(&alice).is_ok());
        let _a3 = limits.acquire(&alice).unwrap();
        // Lower limits refuse new connections and close none.
        limits.set(LimitSettings {
            per_subject: 1,
            per_tenant: 10,
            negotiations_per_minute: 60,
        });
        assert_eq!(limits.check(&alice), Err(Refusal::Subject));
        assert!(limits.check(&caller("blue", "dave")).is_ok());
    }

    #[test]
    fn a_refused_slot_releases_nothing() {
        let limits = Arc::new(ConnectionLimits::new(LimitSettings {
            per_subject: 1,
            per_tenant: 10,
            negotiations_per_minute: 60,
        }));
        let alice = caller("blue", "alice");
        let held = limits.acquire(&alice).unwrap();
        for _ in 0..5 {
            assert!(limits.acquire(&alice).is_err());
        }
        drop(held);
        let _again = limits.acquire(&alice).unwrap();
        assert!(
            limits.acquire(&alice).is_err(),
            "refusals did not free slots"
        );
    }
}
