//! Tokens that already passed verification, so that a client sending the same bearer token on
//! every request pays for the signature check and claim decoding once, not per request (as
//! Envoy's `jwt_authn` token cache does).
//!
//! An entry is found only by the token's exact bytes and only ever holds a success, so a hit
//! returns what a full verification of those bytes returned; the one thing that changes with
//! time, expiry, is checked again on every hit. `nbf` needs no second look: a token valid
//! once stays past its not-before. Memory is bounded: a fixed number of entries, and only
//! tokens up to [`MAX_CACHED_TOKEN_LEN`] bytes are kept.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::auth::Principal;

const SHARDS: usize = 16;
const ENTRIES_PER_SHARD: usize = 256;
/// Longer tokens are verified every time rather than cached.
pub const MAX_CACHED_TOKEN_LEN: usize = 2048;

pub struct TokenCache {
    shards: [Mutex<HashMap<Box<str>, Principal>>; SHARDS],
    leeway_seconds: u64,
}

/// What the cache knows of a token.
#[derive(Debug, PartialEq)]
pub enum Cached {
    Valid(Principal),
    /// It verified once and has expired since.
    Expired,
    Unknown,
}

impl TokenCache {
    pub fn new(leeway_seconds: u64) -> Self {
        Self {
            shards: std::array::from_fn(|_| Mutex::new(HashMap::new())),
            leeway_seconds,
        }
    }

    /// Forgets every token (the keys they were verified with changed).
    pub fn clear(&self) {
        for shard in &self.shards {
            if let Ok(mut shard) = shard.lock() {
                shard.clear();
            }
        }
    }

    /// Looks a token up at `now` (seconds since the Unix epoch).
    pub fn get(&self, token: &str, now: u64) -> Cached {
        let Ok(mut shard) = self.shard(token).lock() else {
            return Cached::Unknown;
        };
        match shard.get(token) {
            None => Cached::Unknown,
            Some(p) if self.live(p, now) => Cached::Valid(p.clone()),
            Some(_) => {
                shard.remove(token);
                Cached::Expired
            }
        }
    }

    /// Remembers a token that has just passed full verification.
    pub fn insert(&self, token: &str, principal: &Principal, now: u64) {
        if token.len() > MAX_CACHED_TOKEN_LEN {
            return;
        }
        let Ok(mut shard) = self.shard(token).lock() else {
            return;
        };
        if shard.len() >= ENTRIES_PER_SHARD {
            shard.retain(|_, p| self.live(p, now));
            if shard.len() >= ENTRIES_PER_SHARD {
                // Many live tokens at once: start over rather than track recency on every hit.
                shard.clear();
            }
        }
        shard.insert(token.into(), principal.clone());
    }

    fn live(&self, principal: &Principal, now: u64) -> bool {
        now <= principal.expires_at.saturating_add(self.leeway_seconds)
    }

    /// The signature's last character picks the shard: it is spread evenly over base64url.
    fn shard(&self, token: &str) -> &Mutex<HashMap<Box<str>, Principal>> {
        let last = token.as_bytes().last().copied().unwrap_or(0);
        &self.shards[usize::from(last) % SHARDS]
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().map_or(0, |s| s.len()))
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn principal(expires_at: u64) -> Principal {
        Principal {
            subject: Some("alice".into()),
            tenant: Some("blue".into()),
            roles: vec!["payments".into()],
            expires_at,
        }
    }

    #[test]
    fn a_verified_token_is_found_by_its_exact_bytes_only() {
        let cache = TokenCache::new(0);
        cache.insert("aaa.bbb.ccc", &principal(100), 50);
        assert_eq!(cache.get("aaa.bbb.ccc", 50), Cached::Valid(principal(100)));
        assert_eq!(cache.get("aaa.bbb.ccd", 50), Cached::Unknown);
        assert_eq!(cache.get("aaa.bbb.cc", 50), Cached::Unknown);
    }

    #[test]
    fn expiry_is_checked_on_every_hit_with_the_leeway() {
        let cache = TokenCache::new(5);
        cache.insert("t.o.k", &principal(100), 50);
        assert!(matches!(cache.get("t.o.k", 105), Cached::Valid(_)));
        assert_eq!(cache.get("t.o.k", 106), Cached::Expired);
        assert_eq!(
            cache.get("t.o.k", 106),
            Cached::Unknown,
            "an expired entry is dropped"
        );
    }

    #[test]
    fn the_cache_never_grows_past_its_bound() {
        let cache = TokenCache::new(0);
        for i in 0..(SHARDS * ENTRIES_PER_SHARD * 3) {
            cache.insert(&format!("h.c.{i:08}"), &principal(1_000), 0);
        }
        assert!(cache.len() <= SHARDS * ENTRIES_PER_SHARD);
        let newest = format!("h.c.{:08}", SHARDS * ENTRIES_PER_SHARD * 3 - 1);
        assert!(matches!(cache.get(&newest, 0), Cached::Valid(_)));
    }

    #[test]
    fn expired_entries_make_room_before_live_ones_are_dropped() {
        let cache = TokenCache::new(0);
        // All in one shard: the same last character.
        for i in 0..ENTRIES_PER_SHARD - 1 {
            cache.insert(&format!("old.{i:04}.x"), &principal(10), 0);
        }
        cache.insert("live.one.x", &principal(1_000), 0);
        cache.insert("new.one.x", &principal(1_000), 20);
        assert!(matches!(cache.get("live.one.x", 20), Cached::Valid(_)));
        assert!(matches!(cache.get("new.one.x", 20), Cached::Valid(_)));
    }

    #[test]
    fn long_tokens_are_not_kept() {
        let cache = TokenCache::new(0);
        let long = "x".repeat(MAX_CACHED_TOKEN_LEN + 1);
        cache.insert(&long, &principal(100), 0);
        assert_eq!(cache.get(&long, 0), Cached::Unknown);
    }
}
