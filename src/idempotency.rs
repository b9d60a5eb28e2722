//! Where idempotency keys are kept: this process's memory (one instance), or Redis (every
//! instance sharing it; a single node or a cluster). Three atomic operations, each a script on
//! Redis so that no two instances can both take a key:
//!
//! Records are passed encoded (`payedge_filters::idempotency::Record::encode`).
//!
//! - `begin`: take the key with an in-flight record unless it exists; else return what it holds
//!   (`SET NX` and `GET` in one step);
//! - `settle`: replace our in-flight record with the outcome, only if it is still ours;
//! - `release`: forget the key, only if it still holds our in-flight record.
//!
//! Every call is bounded by `OPERATION_TIMEOUT`; a store that does not answer in time is
//! unavailable for that request (the route decides whether to refuse or proceed).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::Mutex as AsyncMutex;

use crate::config::IdempotencySettings;
use crate::events::redis_target::{Connection, RedisTarget};

const OPERATION_TIMEOUT: Duration = Duration::from_millis(500);
/// Key names in Redis: this prefix and the hex digest of the scoped key.
pub const KEY_PREFIX: &str = "payedge:idempotency:";
/// The in-memory store's bound: beyond it new keys are refused as if the store were down.
const MAX_MEMORY_KEYS: usize = 1_000_000;

const BEGIN: &str = r"
local existing = redis.call('GET', KEYS[1])
if existing then return existing end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return false";
const SETTLE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  return 1
end
return 0";
const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Begun {
    /// The key is ours: the request goes ahead.
    Taken,
    /// The key holds this (its encoded record).
    Existing(String),
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the idempotency store did not answer within {0:?}")]
    Timeout(Duration),
    #[error("the idempotency store failed: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("the in-memory idempotency store is full ({MAX_MEMORY_KEYS} keys)")]
    Full,
    #[error("the in-memory idempotency store is unusable: a request panicked while holding it")]
    Poisoned,
}

pub struct IdempotencyStore {
    backend: Backend,
    pub ttl: Duration,
    pub max_response_bytes: usize,
}

enum Backend {
    Memory(Mutex<MemoryKeys>),
    Redis(Box<RedisBackend>),
}

struct RedisBackend {
    target: RedisTarget,
    connection: AsyncMutex<Option<Connection>>,
    begin: redis::Script,
    settle: redis::Script,
    release: redis::Script,
}

#[derive(Default)]
struct MemoryKeys {
    keys: HashMap<String, (String, Instant)>,
    operations: u64,
}

impl MemoryKeys {
    fn live(&mut self, key: &str, now: Instant) -> Option<&String> {
        if self
            .keys
            .get(key)
            .is_some_and(|(_, expires)| *expires <= now)
        {
            self.keys.remove(key);
        }
        self.keys.get(key).map(|(value, _)| value)
    }

    /// Every 4096 operations, forget what expired.
    fn sweep(&mut self, now: Instant) {
        self.operations += 1;
        if self.operations.is_multiple_of(4096) {
            self.keys.retain(|_, (_, expires)| *expires > now);
        }
    }
}

impl IdempotencyStore {
    pub fn new(settings: &IdempotencySettings) -> Result<Self, String> {
        let backend = match &settings.redis_url {
            None => Backend::Memory(Mutex::new(MemoryKeys::default())),
            Some(url) => Backend::Redis(Box::new(RedisBackend {
                target: RedisTarget::parse(url)?,
                connection: AsyncMutex::new(None),
                begin: redis::Script::new(BEGIN),
                settle: redis::Script::new(SETTLE),
                release: redis::Script::new(RELEASE),
            })),
        };
        Ok(Self {
            backend,
            ttl: settings.ttl,
            max_response_bytes: settings.max_response_bytes,
        })
    }

    /// Takes `key` with `in_flight` (kept `ttl`: an owner that dies leaves it behind, and its
    /// retries are then told the outcome is unknown rather than sent again), or returns what
    /// the key holds.
    pub async fn begin(&self, key: &str, in_flight: &str) -> Result<Begun, StoreError> {
        let value = in_flight.to_string();
        match &self.backend {
            Backend::Memory(keys) => {
                let now = Instant::now();
                let mut keys = keys.lock().map_err(|_| StoreError::Poisoned)?;
                keys.sweep(now);
                if let Some(existing) = keys.live(key, now) {
                    return Ok(Begun::Existing(existing.clone()));
                }
                if keys.keys.len() >= MAX_MEMORY_KEYS {
                    return Err(StoreError::Full);
                }
                keys.keys.insert(key.to_string(), (value, now + self.ttl));
                Ok(Begun::Taken)
            }
            Backend::Redis(redis) => {
                let mut invocation = redis.begin.key(redis_key(key));
                invocation.arg(value).arg(millis(self.ttl));
                let existing: Option<String> = Self::run(redis, &invocation).await?;
                Ok(existing.map_or(Begun::Taken, Begun::Existing))
            }
        }
    }

    /// Replaces our `in_flight` record with `outcome` (kept `ttl`). `false` when the key no
    /// longer holds our record. Records are passed encoded ([`Record::encode`]).
    pub async fn settle(&self, key: &str, ours: &str, outcome: &str) -> Result<bool, StoreError> {
        match &self.backend {
            Backend::Memory(keys) => {
                let now = Instant::now();
                let mut keys = keys.lock().map_err(|_| StoreError::Poisoned)?;
                if keys.live(key, now).map(String::as_str) != Some(ours) {
                    return Ok(false);
                }
                keys.keys
                    .insert(key.to_string(), (outcome.to_string(), now + self.ttl));
                Ok(true)
            }
            Backend::Redis(redis) => {
                let mut invocation = redis.settle.key(redis_key(key));
                invocation.arg(ours).arg(outcome).arg(millis(self.ttl));
                let replaced: i64 = Self::run(redis, &invocation).await?;
                Ok(replaced == 1)
            }
        }
    }

    /// Forgets `key` if it still holds our `in_flight` record.
    pub async fn release(&self, key: &str, ours: &str) -> Result<(), StoreError> {
        match &self.backend {
            Backend::Memory(keys) => {
                let now = Instant::now();
                let mut keys = keys.lock().map_err(|_| StoreError::Poisoned)?;
                if keys.live(key, now).map(String::as_str) == Some(ours) {
                    keys.keys.remove(key);
                }
                Ok(())
            }
            Backend::Redis(redis) => {
                let mut invocation = redis.release.key(redis_key(key));
                invocation.arg(ours);
                let _: i64 = Self::run(redis, &invocation).await?;
                Ok(())
            }
        }
    }

    /// Runs a script on the shared connection, connecting first when there is none; a failed
    /// call drops the connection so the next one starts afresh.
    async fn run<T: redis::FromRedisValue>(
        redis: &RedisBackend,
        invocation: &redis::ScriptInvocation<'_>,
    ) -> Result<T, StoreError> {
        let (target, connection) = (&redis.target, &redis.connection);
        let attempt = async {
            let mut con = {
                let mut slot = connection.lock().await;
                match slot.as_ref() {
                    Some(con) => con.clone(),
                    None => {
                        let con = target.connect(OPERATION_TIMEOUT).await?;
                        *slot = Some(con.clone());
                        con
                    }
                }
            };
            invocation.invoke_async::<T>(&mut con).await
        };
        let result = match tokio::time::timeout(OPERATION_TIMEOUT, attempt).await {
            Ok(Ok(value)) => return Ok(value),
            Ok(Err(e)) => StoreError::Redis(e),
            Err(_) => StoreError::Timeout(OPERATION_TIMEOUT),
        };
        *connection.lock().await = None;
        Err(result)
    }
}

fn redis_key(key: &str) -> String {
    format!("{KEY_PREFIX}{key}")
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use payedge_filters::idempotency::Record;

    fn memory() -> IdempotencyStore {
        IdempotencyStore::new(&IdempotencySettings {
            redis_url: None,
            ttl: Duration::from_secs(60),
            max_response_bytes: 1024,
        })
        .unwrap()
    }

    fn in_flight(request_id: &str) -> Record {
        Record::InFlight {
            fingerprint: "f".into(),
            deadline_ms: 1,
            request_id: request_id.into(),
        }
    }

    #[tokio::test]
    async fn one_request_takes_a_key_and_only_its_owner_settles_or_releases_it() {
        let store = memory();
        let (a, b) = (in_flight("a").encode(), in_flight("b").encode());
        assert_eq!(store.begin("k", &a).await.unwrap(), Begun::Taken);
        assert_eq!(
            store.begin("k", &b).await.unwrap(),
            Begun::Existing(a.clone())
        );
        let done = Record::Unknown {
            fingerprint: "f".into(),
            provider: None,
        }
        .encode();
        assert!(!store.settle("k", &b, &done).await.unwrap(), "not b's key");
        store.release("k", &b).await.unwrap();
        assert_eq!(
            store.begin("k", &b).await.unwrap(),
            Begun::Existing(a.clone()),
            "b cannot release a's key"
        );
        assert!(store.settle("k", &a, &done).await.unwrap());
        assert_eq!(
            store.begin("k", &b).await.unwrap(),
            Begun::Existing(done.clone())
        );
        // Released keys can be taken again.
        assert_eq!(store.begin("k2", &a).await.unwrap(), Begun::Taken);
        store.release("k2", &a).await.unwrap();
        assert_eq!(store.begin("k2", &b).await.unwrap(), Begun::Taken);
    }
}
