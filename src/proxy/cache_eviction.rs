//! The route cache's eviction: Pingora's LRU, with what it evicts removed from the storage
//! before the admitting request goes on.
//!
//! Pingora purges evicted entries in a task of its own (pingora-cache's `finish_miss_handler`),
//! so for a moment, longer on a loaded machine, the storage held more than the bound and a
//! request right after an eviction could still be answered from the evicted entry. Removing them
//! here, before the admitting answer's last bytes go out, leaves the storage over the bound only
//! between a new answer's insertion and its admission; Pingora's own purge later normally finds
//! nothing left to remove.

use std::time::SystemTime;

use async_trait::async_trait;
use pingora::Result;
use pingora_cache::eviction::{EvictionManager, simple_lru};
use pingora_cache::key::CacheHashKey;
use pingora_cache::{CacheEntryKey, CacheEntryKeyRef};

use super::cache_storage::WholeResponses;

pub struct Eviction {
    lru: simple_lru::Manager,
    storage: &'static WholeResponses,
}

impl Eviction {
    /// At most `max_bytes` and `max_entries` in `storage`.
    pub fn new(max_bytes: usize, max_entries: usize, storage: &'static WholeResponses) -> Self {
        Self {
            lru: simple_lru::Manager::new_with_watermark(max_bytes, Some(max_entries)),
            storage,
        }
    }

    fn remove_from_storage(&self, evicted: Vec<CacheEntryKey>) -> Vec<CacheEntryKey> {
        for entry in &evicted {
            self.storage.remove(&entry.key().combined());
        }
        evicted
    }
}

#[async_trait]
impl EvictionManager for Eviction {
    fn total_size(&self) -> usize {
        self.lru.total_size()
    }

    fn total_items(&self) -> usize {
        self.lru.total_items()
    }

    fn evicted_size(&self) -> usize {
        self.lru.evicted_size()
    }

    fn evicted_items(&self) -> usize {
        self.lru.evicted_items()
    }

    fn admit(
        &self,
        item: CacheEntryKey,
        size: usize,
        fresh_until: SystemTime,
    ) -> Vec<CacheEntryKey> {
        self.remove_from_storage(self.lru.admit(item, size, fresh_until))
    }

    fn increment_weight(
        &self,
        item: &CacheEntryKey,
        delta: usize,
        max_weight: Option<usize>,
    ) -> Vec<CacheEntryKey> {
        self.remove_from_storage(self.lru.increment_weight(item, delta, max_weight))
    }

    fn remove(&self, item: CacheEntryKeyRef<'_>) {
        self.lru.remove(item);
    }

    fn access(&self, item: &CacheEntryKey, size: usize, fresh_until: SystemTime) -> bool {
        self.lru.access(item, size, fresh_until)
    }

    fn peek(&self, item: &CacheEntryKey) -> bool {
        self.lru.peek(item)
    }

    async fn save(&self, dir_path: &str) -> Result<()> {
        self.lru.save(dir_path).await
    }

    async fn load(&self, dir_path: &str) -> Result<()> {
        self.lru.load(dir_path).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pingora_cache::CacheKey;

    #[test]
    fn what_the_lru_evicts_is_gone_from_the_storage_when_admit_returns() {
        let storage: &'static WholeResponses = Box::leak(Box::default());
        let eviction = Eviction::new(100, 10, storage);
        let key = |n: &str| CacheKey::new(n.as_bytes().to_vec(), "");
        let fresh = SystemTime::now() + std::time::Duration::from_secs(60);
        for name in ["a", "b"] {
            storage.put_for_test(&key(name).combined(), 60);
            let evicted =
                eviction.admit(CacheEntryKey::key_only(key(name).to_compact()), 60, fresh);
            if name == "a" {
                assert!(evicted.is_empty());
            } else {
                assert_eq!(evicted.len(), 1);
            }
        }
        assert!(
            !storage.holds(&key("a").combined()),
            "a evicted, still stored"
        );
        assert!(storage.holds(&key("b").combined()));
    }
}
