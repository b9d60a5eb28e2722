//! Where the route cache keeps its responses: whole responses in memory, for Pingora's cache.
//!
//! Pingora's own `MemCache` is marked for testing only, and it shows in two ways that matter
//! here. It lets readers stream a response while it is still being written, and a writer that
//! fails halfway (a provider cut mid-body) ends those readers' bodies as if complete: a truncated
//! body served as a hit. And an eviction in the middle of a write removes the entry that write
//! unwraps when it finishes. This storage keeps only finished responses: a response becomes
//! visible when its last byte is in, and a write that fails leaves nothing behind. Readers that
//! arrive meanwhile wait on Pingora's cache lock (single flight), as before.

use std::any::Any;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use pingora::{Error, ErrorType, Result};
use pingora_cache::key::CacheHashKey;
use pingora_cache::storage::{
    HandleHit, HandleMiss, HitHandler, MissFinishType, MissHandler, PurgeOutcome, PurgeTarget,
    PurgeType, Storage,
};
use pingora_cache::trace::SpanHandle;
use pingora_cache::{CacheEntryKey, CacheKey, CacheMeta};

/// One finished response: its meta, serialized as Pingora serializes it, and its body.
struct Entry {
    meta: (Vec<u8>, Vec<u8>),
    body: Bytes,
}

/// Finished responses by key.
#[derive(Default)]
pub struct WholeResponses {
    entries: RwLock<HashMap<String, Arc<Entry>>>,
}

impl WholeResponses {
    fn get(&self, hash: &str) -> Option<Arc<Entry>> {
        self.entries.read().ok()?.get(hash).cloned()
    }

    /// Removes the response under `hash`, if any (an eviction).
    pub fn remove(&self, hash: &str) {
        if let Ok(mut entries) = self.entries.write() {
            entries.remove(hash);
        }
    }

    #[cfg(test)]
    pub fn put_for_test(&self, hash: &str, size: usize) {
        let entry = Entry {
            meta: (Vec::new(), Vec::new()),
            body: Bytes::from(vec![0; size]),
        };
        if let Ok(mut entries) = self.entries.write() {
            entries.insert(hash.to_string(), Arc::new(entry));
        }
    }

    #[cfg(test)]
    pub fn holds(&self, hash: &str) -> bool {
        self.get(hash).is_some()
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.read().map_or(0, |e| e.len())
    }
}

fn poisoned() -> Box<Error> {
    Error::explain(ErrorType::InternalError, "the cache's map is poisoned")
}

#[async_trait]
impl Storage for WholeResponses {
    async fn lookup(
        &'static self,
        key: &CacheKey,
        _trace: &SpanHandle,
    ) -> Result<Option<(CacheMeta, HitHandler)>> {
        let Some(entry) = self.get(&key.combined()) else {
            return Ok(None);
        };
        let meta = CacheMeta::deserialize(&entry.meta.0, &entry.meta.1)?;
        Ok(Some((
            meta,
            Box::new(Hit {
                body: Some(entry.body.clone()),
            }),
        )))
    }

    async fn get_miss_handler(
        &'static self,
        key: &CacheKey,
        meta: &CacheMeta,
        _trace: &SpanHandle,
    ) -> Result<MissHandler> {
        Ok(Box::new(Miss {
            storage: self,
            hash: key.combined(),
            meta: meta.serialize()?,
            body: BytesMut::new(),
        }))
    }

    async fn purge(
        &'static self,
        target: PurgeTarget<'_>,
        _purge_type: PurgeType,
        _trace: &SpanHandle,
    ) -> Result<PurgeOutcome> {
        // No entry ids here: an identified target cannot be matched safely.
        if matches!(target, PurgeTarget::Exact(CacheEntryKey::Identified { .. })) {
            return Ok(PurgeOutcome::NotFound);
        }
        let hash = target.key().combined();
        let removed = self.entries.write().map_err(|_| poisoned())?.remove(&hash);
        Ok(match removed {
            Some(_) => PurgeOutcome::Purged(None),
            None => PurgeOutcome::NotFound,
        })
    }

    async fn update_meta(
        &'static self,
        key: &CacheKey,
        meta: &CacheMeta,
        _trace: &SpanHandle,
    ) -> Result<bool> {
        let meta = meta.serialize()?;
        let mut entries = self.entries.write().map_err(|_| poisoned())?;
        let Some(entry) = entries.get_mut(&key.combined()) else {
            return Ok(false);
        };
        *entry = Arc::new(Entry {
            meta,
            body: entry.body.clone(),
        });
        Ok(true)
    }

    fn support_streaming_partial_write(&self) -> bool {
        false
    }

    fn as_any(&self) -> &(dyn Any + Send + Sync + 'static) {
        self
    }
}

/// A finished response being read.
struct Hit {
    body: Option<Bytes>,
}

#[async_trait]
impl HandleHit for Hit {
    async fn read_body(&mut self) -> Result<Option<Bytes>> {
        Ok(self.body.take())
    }

    async fn finish(
        self: Box<Self>,
        _storage: &'static (dyn Storage + Sync),
        _key: &CacheKey,
        _trace: &SpanHandle,
    ) -> Result<()> {
        Ok(())
    }

    fn as_any(&self) -> &(dyn Any + Send + Sync) {
        self
    }

    fn as_any_mut(&mut self) -> &mut (dyn Any + Send + Sync) {
        self
    }
}

/// A response being written: nobody sees it until `finish`, and dropped unfinished it is gone.
struct Miss {
    storage: &'static WholeResponses,
    hash: String,
    meta: (Vec<u8>, Vec<u8>),
    body: BytesMut,
}

#[async_trait]
impl HandleMiss for Miss {
    async fn write_body(&mut self, data: Bytes, _eof: bool) -> Result<()> {
        self.body.extend_from_slice(&data);
        Ok(())
    }

    async fn finish(self: Box<Self>) -> Result<MissFinishType> {
        let Miss {
            storage,
            hash,
            meta,
            body,
        } = *self;
        // Weighed with its headers: an empty body is not free.
        let weight = body.len() + meta.0.len() + meta.1.len() + hash.len();
        let entry = Arc::new(Entry {
            meta,
            body: body.freeze(),
        });
        storage
            .entries
            .write()
            .map_err(|_| poisoned())?
            .insert(hash, entry);
        Ok(MissFinishType::Created(weight))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pingora::http::ResponseHeader;
    use std::time::{Duration, SystemTime};

    fn storage() -> &'static WholeResponses {
        Box::leak(Box::new(WholeResponses::default()))
    }

    fn meta() -> CacheMeta {
        let now = SystemTime::now();
        let header = ResponseHeader::build(200, None).unwrap();
        CacheMeta::new(now + Duration::from_secs(30), now, 0, 0, header)
    }

    async fn read_all(hit: &mut HitHandler) -> Vec<u8> {
        let mut out = Vec::new();
        while let Some(chunk) = hit.read_body().await.unwrap() {
            out.extend_from_slice(&chunk);
        }
        out
    }

    #[tokio::test]
    async fn a_response_is_seen_only_once_it_is_whole() {
        let store = storage();
        let key = CacheKey::new("blue:/api/fx/rates", "blue");
        let trace = pingora_cache::trace::Span::inactive().handle();
        let mut miss = store.get_miss_handler(&key, &meta(), &trace).await.unwrap();
        miss.write_body(Bytes::from_static(b"{\"rates\":"), false)
            .await
            .unwrap();
        assert!(
            store.lookup(&key, &trace).await.unwrap().is_none(),
            "half a body is never a hit"
        );
        miss.write_body(Bytes::from_static(b"{}}"), true)
            .await
            .unwrap();
        let MissFinishType::Created(weight) = miss.finish().await.unwrap() else {
            panic!("created")
        };
        assert!(weight > b"{\"rates\":{}}".len(), "headers weigh too");
        let (_, mut hit) = store.lookup(&key, &trace).await.unwrap().unwrap();
        assert_eq!(read_all(&mut hit).await, b"{\"rates\":{}}");
    }

    #[tokio::test]
    async fn a_write_that_fails_halfway_leaves_nothing() {
        let store = storage();
        let key = CacheKey::new("blue:/api/fx/rates", "blue");
        let trace = pingora_cache::trace::Span::inactive().handle();
        let mut miss = store.get_miss_handler(&key, &meta(), &trace).await.unwrap();
        miss.write_body(Bytes::from_static(b"{\"rat"), false)
            .await
            .unwrap();
        drop(miss);
        assert!(store.lookup(&key, &trace).await.unwrap().is_none());
        assert_eq!(store.len(), 0);
    }

    #[tokio::test]
    async fn eviction_during_a_write_removes_the_old_entry_and_the_write_still_finishes() {
        let store = storage();
        let key = CacheKey::new("blue:/api/fx/rates", "blue");
        let trace = pingora_cache::trace::Span::inactive().handle();
        let mut first = store.get_miss_handler(&key, &meta(), &trace).await.unwrap();
        first
            .write_body(Bytes::from_static(b"old"), true)
            .await
            .unwrap();
        first.finish().await.unwrap();
        let mut refill = store.get_miss_handler(&key, &meta(), &trace).await.unwrap();
        let compact = key.to_compact();
        let purged = store
            .purge(PurgeTarget::Active(&compact), PurgeType::Eviction, &trace)
            .await
            .unwrap();
        assert!(matches!(purged, PurgeOutcome::Purged(None)));
        refill
            .write_body(Bytes::from_static(b"new"), true)
            .await
            .unwrap();
        refill.finish().await.unwrap();
        let (_, mut hit) = store.lookup(&key, &trace).await.unwrap().unwrap();
        assert_eq!(read_all(&mut hit).await, b"new");
        assert!(
            !store
                .update_meta(&CacheKey::new("gone", "blue"), &meta(), &trace)
                .await
                .unwrap(),
            "no entry, no panic"
        );
    }
}
