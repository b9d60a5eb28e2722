//! Where idempotency keys are kept: this process's memory (one instance), or Redis (every
//! instance sharing it; a single node or a cluster). Three atomic operations, each one command
//! or script on Redis so that no two instances can both take a key:
//!
//! Records are passed encoded (`payedge_filters::idempotency::Record::encode`).
//!
//! - `begin`: take the key with an in-flight record unless it exists; else return what it holds
//!   (Redis's own `SET … NX PX … GET`, one command; a script on servers before 7.0, which refuse
//!   `NX` with `GET`);
//! - `settle`: replace our in-flight record with the outcome, only if it is still ours;
//! - `release`: forget the key, only if it still holds our in-flight record.
//!
//! Every call is bounded by `OPERATION_TIMEOUT`; a store that does not answer in time is
//! unavailable for that request (the route decides whether to refuse or proceed).
//!
//! A request's outcome is written after it has answered, off its path when it can be
//! ([`IdempotencyStore::settle_later`]): in memory at once; to Redis by one writer task per
//! store that sends whatever has queued up meanwhile together, so a keyed request waits for
//! one round trip (taking its key), not two, and Redis reads many settlements at a time. Only
//! an outcome of a key this request certainly took is queued, and only while the queue is
//! within its bounds (count and bytes); anything else (a release, a key taken despite a store
//! error, a full queue) the request writes itself and waits for, as before the writer. While
//! the owner's record cannot have expired, the outcome replaces it with a plain
//! `SET … XX … GET` (the key exists only as our record: no other request can take a key that
//! exists), checked against what it replaced; otherwise by the compare-and-set script. Until
//! a queued outcome is in Redis, this instance answers its own retries of that key from it (a
//! client retrying on the same connection the moment it has its answer gets the replay, as it
//! would from the store). Queued settlements hold the drain open like requests do.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::Weak;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use tokio::sync::Mutex as AsyncMutex;
use tokio::sync::mpsc;

use crate::config::IdempotencySettings;
use crate::events::redis_target::{Connection, RedisTarget};
use crate::lifecycle::InFlight;
use payedge_filters::idempotency::Record;

const OPERATION_TIMEOUT: Duration = Duration::from_millis(500);
/// Key names in Redis: this prefix and the hex digest of the scoped key.
pub const KEY_PREFIX: &str = "payedge:idempotency:";
/// The in-memory store's bounds: beyond either, new keys are refused as if the store were down.
/// Keys count as their digest and record; a record holds its response, up to
/// `max_response_bytes`, so the key count alone would let a day of large answers grow without
/// limit. Keys already taken always settle (their number is bounded by the requests in flight).
const MAX_MEMORY_KEYS: usize = 1_000_000;
const MAX_MEMORY_BYTES: usize = 512 * 1024 * 1024;
/// The most settlements waiting for the Redis writer, and the most bytes they may hold; beyond
/// either, a request writes its own outcome and waits for it.
const MAX_QUEUED_SETTLEMENTS: usize = 4_096;
const MAX_QUEUED_BYTES: usize = 32 * 1024 * 1024;
/// The most settlements the Redis writer sends at once.
const SETTLEMENT_BATCH: usize = 256;
/// A settlement this close to when its owner's record may expire takes the script's
/// compare-and-set instead of the plain replacement (a command given up on after its timeout
/// may still run in Redis later: the margin is far longer than any such stall).
const EXPIRY_MARGIN: Duration = Duration::from_secs(30);

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
    #[error(
        "the in-memory idempotency store is full ({MAX_MEMORY_KEYS} keys or {} MiB)",
        MAX_MEMORY_BYTES >> 20
    )]
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
    Redis(Arc<RedisBackend>),
}

/// What a request that held a key leaves it with, written after the request has answered.
pub struct Settlement {
    /// The store's key (the scoped key's digest).
    pub key: String,
    /// Our in-flight record, encoded.
    pub ours: String,
    /// The record that replaces it, encoded; `None` forgets the key.
    pub outcome: Option<Arc<str>>,
    /// Until when our in-flight record is certainly still in the store; `None` when taking
    /// the key failed (it may have been taken, or may hold another request's record).
    pub owned_until: Option<Instant>,
    /// For the log line when it cannot be written.
    pub request_id: String,
    /// Keeps a drain waiting until it is written.
    pub in_flight: InFlight,
}

struct RedisBackend {
    target: RedisTarget,
    connection: AsyncMutex<Option<Connection>>,
    /// `false` once the server has refused `SET` with both `NX` and `GET` (Redis before 7.0):
    /// `begin` then runs the script.
    native_begin: AtomicBool,
    /// `false` once the server has refused `SET` with `GET` (Redis before 6.2): outcomes are
    /// then all written by the script.
    native_settle: AtomicBool,
    /// The writer task's queue, started on first use (and again if its runtime went away).
    settler: Mutex<Option<mpsc::Sender<Queued>>>,
    /// The bytes the queued settlements hold.
    queued_bytes: AtomicUsize,
    /// Outcomes queued for the writer and not yet in Redis, by key: `begin` answers from here
    /// meanwhile. A queued settlement's note goes when it is dropped, written or not.
    unwritten: Mutex<HashMap<String, Arc<str>>>,
    begin: redis::Script,
    settle: redis::Script,
    release: redis::Script,
}

/// The in-memory store: each key's record and when it expires, and the keys in the order they
/// were written, which is nearly the order they expire (records live the store's one TTL, except
/// an in-flight record whose request may run longer: a later record then waits behind it, but
/// is never read once expired). A key written again is queued again and its older place skipped;
/// places left behind by released and rewritten keys are swept once they outnumber the keys.
#[derive(Default)]
struct MemoryKeys {
    keys: HashMap<Arc<str>, (String, Instant)>,
    expiries: VecDeque<(Instant, Arc<str>)>,
    /// The bytes of every key and record held.
    bytes: usize,
}

impl MemoryKeys {
    fn live(&mut self, key: &str, now: Instant) -> Option<&String> {
        self.forget_expired(now);
        // Two writers can queue a hair out of order (each read the clock before the lock), so
        // the key's own expiry has the last word.
        self.keys
            .get(key)
            .filter(|(_, expires)| *expires > now)
            .map(|(value, _)| value)
    }

    /// Forgets what has expired by `now`: only the front of the queue is ever looked at.
    fn forget_expired(&mut self, now: Instant) {
        while self
            .expiries
            .front()
            .is_some_and(|(expires, _)| *expires <= now)
        {
            let Some((expires, key)) = self.expiries.pop_front() else {
                break;
            };
            if self.keys.get(&key).is_some_and(|(_, at)| *at == expires) {
                self.remove(&key);
            }
        }
    }

    fn remove(&mut self, key: &str) {
        if let Some((key, (value, _))) = self.keys.remove_entry(key) {
            self.bytes -= key.len() + value.len();
        }
    }

    fn full(&self) -> bool {
        self.keys.len() >= MAX_MEMORY_KEYS || self.bytes >= MAX_MEMORY_BYTES
    }

    fn write(&mut self, key: &str, value: String, expires: Instant) {
        let key: Arc<str> = match self.keys.get_key_value(key) {
            Some((existing, _)) => existing.clone(),
            None => Arc::from(key),
        };
        self.expiries.push_back((expires, key.clone()));
        self.bytes += key.len() + value.len();
        if let Some((replaced, _)) = self.keys.insert(key.clone(), (value, expires)) {
            self.bytes -= key.len() + replaced.len();
        }
        // Released keys leave their place queued until it expires: without this sweep a client
        // taking and releasing keys (requests refused after the key was taken) would grow the
        // queue for a whole TTL. Amortised, one look per write.
        if self.expiries.len() > 2 * self.keys.len() + 1024 {
            let keys = &self.keys;
            self.expiries
                .retain(|(at, key)| keys.get(key).is_some_and(|(_, expires)| expires == at));
        }
    }
}

impl IdempotencyStore {
    pub fn new(settings: &IdempotencySettings) -> Result<Self, String> {
        let backend = match &settings.redis_url {
            None => Backend::Memory(Mutex::new(MemoryKeys::default())),
            Some(url) => Backend::Redis(Arc::new(RedisBackend {
                target: RedisTarget::parse(url)?,
                connection: AsyncMutex::new(None),
                native_begin: AtomicBool::new(true),
                native_settle: AtomicBool::new(true),
                settler: Mutex::new(None),
                queued_bytes: AtomicUsize::new(0),
                unwritten: Mutex::new(HashMap::new()),
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
    /// the key holds. `hold`: how long the request may still run; the record is kept at least
    /// that long whatever `ttl` is, or a short `ttl` would let a retry take the key and reach a
    /// provider while the first request is still on its way.
    pub async fn begin(
        &self,
        key: &str,
        in_flight: &str,
        hold: Duration,
    ) -> Result<Begun, StoreError> {
        let value = in_flight.to_string();
        let kept = self.ttl.max(hold);
        match &self.backend {
            Backend::Memory(keys) => {
                let now = Instant::now();
                let mut keys = keys.lock().map_err(|_| StoreError::Poisoned)?;
                if let Some(existing) = keys.live(key, now) {
                    return Ok(Begun::Existing(existing.clone()));
                }
                if keys.full() {
                    return Err(StoreError::Full);
                }
                keys.write(key, value, now + kept);
                Ok(Begun::Taken)
            }
            Backend::Redis(redis) => {
                if let Some(outcome) = redis.unwritten(key) {
                    return Ok(Begun::Existing(outcome.to_string()));
                }
                if redis.native_begin.load(Ordering::Relaxed) {
                    let mut set = redis::cmd("SET");
                    set.arg(redis_key(key)).arg(&value).arg("NX");
                    set.arg("PX").arg(millis(kept)).arg("GET");
                    match Self::run(redis, Query::Command(&set)).await {
                        Ok(existing) => return Ok(Self::begun(existing)),
                        Err(StoreError::Redis(e)) if refuses_syntax(&e) => {
                            tracing::info!(
                                "this Redis refuses SET with NX and GET (before 7.0): \
                                 idempotency keys are taken by a script"
                            );
                            redis.native_begin.store(false, Ordering::Relaxed);
                        }
                        Err(e) => return Err(e),
                    }
                }
                let mut invocation = redis.begin.key(redis_key(key));
                invocation.arg(value).arg(millis(kept));
                let existing = Self::run(redis, Query::Script(&invocation)).await?;
                Ok(Self::begun(existing))
            }
        }
    }

    /// Replaces our `in_flight` record with `outcome` (kept `ttl`). `false` when the key no
    /// longer holds our record. Records are passed encoded ([`Record::encode`]). Requests go
    /// through `settle_later`/`settle_now`; this and `release` are the store's operations one
    /// at a time, for its tests.
    #[cfg(test)]
    pub async fn settle(&self, key: &str, ours: &str, outcome: &str) -> Result<bool, StoreError> {
        match &self.backend {
            Backend::Memory(keys) => self.settle_in_memory(keys, key, ours, Some(outcome)),
            Backend::Redis(redis) => {
                Self::compare_and_set(redis, self.ttl, key, ours, outcome).await
            }
        }
    }

    /// Forgets `key` if it still holds our `in_flight` record.
    #[cfg(test)]
    pub async fn release(&self, key: &str, ours: &str) -> Result<(), StoreError> {
        match &self.backend {
            Backend::Memory(keys) => self.settle_in_memory(keys, key, ours, None).map(|_| ()),
            Backend::Redis(redis) => Self::release_in_redis(redis, key, ours).await,
        }
    }

    /// Writes `settlement` after its request without waiting, where it can: in memory now; to
    /// Redis through the writer task when it is the outcome of a key this request certainly
    /// took and the queue has room. Otherwise gives it back, for [`Self::settle_now`].
    pub fn settle_later(&self, settlement: Settlement) -> Option<Settlement> {
        match &self.backend {
            Backend::Memory(_) => {
                self.settle_in_memory_logged(&settlement);
                None
            }
            Backend::Redis(redis) => {
                if settlement.outcome.is_none() || settlement.owned_until.is_none() {
                    return Some(settlement);
                }
                redis.queue(settlement, self.ttl)
            }
        }
    }

    /// Writes `settlement` and waits for it (a failure is logged: the key then stays in flight,
    /// and its retries are told the outcome is unknown once its owner's time is over).
    pub async fn settle_now(&self, settlement: Settlement) {
        match &self.backend {
            Backend::Memory(_) => self.settle_in_memory_logged(&settlement),
            Backend::Redis(redis) => {
                let written = write_batch(redis, self.ttl, &[&settlement]).await;
                if let Some(Err(e)) = written.first() {
                    not_recorded(&settlement.request_id, e);
                }
            }
        }
    }

    fn settle_in_memory_logged(&self, settlement: &Settlement) {
        let Backend::Memory(keys) = &self.backend else {
            return;
        };
        let written = self.settle_in_memory(
            keys,
            &settlement.key,
            &settlement.ours,
            settlement.outcome.as_deref(),
        );
        if let Err(e) = written {
            not_recorded(&settlement.request_id, &e);
        }
    }

    /// `settle` (with an outcome) or `release` (without) in memory: only our own record.
    fn settle_in_memory(
        &self,
        keys: &Mutex<MemoryKeys>,
        key: &str,
        ours: &str,
        outcome: Option<&str>,
    ) -> Result<bool, StoreError> {
        let now = Instant::now();
        let mut keys = keys.lock().map_err(|_| StoreError::Poisoned)?;
        if keys.live(key, now).map(String::as_str) != Some(ours) {
            return Ok(false);
        }
        match outcome {
            Some(outcome) => keys.write(key, outcome.to_string(), now + self.ttl),
            None => keys.remove(key),
        }
        Ok(true)
    }

    async fn compare_and_set(
        redis: &RedisBackend,
        ttl: Duration,
        key: &str,
        ours: &str,
        outcome: &str,
    ) -> Result<bool, StoreError> {
        let mut invocation = redis.settle.key(redis_key(key));
        invocation.arg(ours).arg(outcome).arg(millis(ttl));
        let replaced: i64 = Self::run(redis, Query::Script(&invocation)).await?;
        Ok(replaced == 1)
    }

    /// Replaces records that can only be ours (each exists, and exists until its
    /// `owned_until`: no other request can have taken the key) without the script: one
    /// pipeline on a single server (a cluster's keys live in different slots: one command each
    /// there). Per settlement, what was replaced, or why it was not written; `Err` when the
    /// whole call failed.
    async fn replace_own_all(
        redis: &RedisBackend,
        ttl: Duration,
        settlements: &[&Settlement],
    ) -> Result<Vec<Result<Option<String>, String>>, StoreError> {
        let replace = |s: &Settlement| {
            let mut set = redis::cmd("SET");
            set.arg(redis_key(&s.key))
                .arg(s.outcome.as_deref().unwrap_or_default())
                .arg("XX")
                .arg("PX")
                .arg(millis(ttl))
                .arg("GET");
            set
        };
        if settlements.is_empty() {
            return Ok(Vec::new());
        }
        if !redis.target.is_cluster() {
            let mut pipe = redis::pipe();
            pipe.ignore_errors();
            for s in settlements {
                pipe.add_command(replace(s));
            }
            // One command's error is its own: the others' replies still count.
            let replaced: Vec<redis::RedisResult<Option<String>>> =
                Self::run(redis, Query::Pipeline(&pipe)).await?;
            if let Some(Err(e)) = replaced.iter().find(|r| r.is_err())
                && refuses_syntax(e)
            {
                return Err(StoreError::Redis(e.clone()));
            }
            return Ok(replaced
                .into_iter()
                .map(|r| r.map_err(|e| e.to_string()))
                .collect());
        }
        let commands: Vec<redis::Cmd> = settlements.iter().map(|s| replace(s)).collect();
        let replaced = join_all(
            commands
                .iter()
                .map(|set| Self::run::<Option<String>>(redis, Query::Command(set))),
        )
        .await;
        if let Some(Err(StoreError::Redis(e))) = replaced.iter().find(|r| r.is_err())
            && refuses_syntax(e)
        {
            return Err(StoreError::Redis(e.clone()));
        }
        Ok(replaced
            .into_iter()
            .map(|r| r.map_err(|e| e.to_string()))
            .collect())
    }

    /// Should Redis have lost our record and another request taken the key meanwhile, what a
    /// replacement replaced is put back, unless that request has written the key since: kept
    /// as long as its owner may still be working (its in-flight record's deadline), at least
    /// the store's TTL.
    async fn restore_foreign(
        redis: &RedisBackend,
        ttl: Duration,
        settlement: &Settlement,
        replaced: Option<String>,
    ) -> Result<(), StoreError> {
        let (Some(foreign), Some(outcome)) = (
            replaced.filter(|r| *r != settlement.ours),
            settlement.outcome.as_deref(),
        ) else {
            return Ok(());
        };
        let kept = match Record::decode(&foreign) {
            Some(Record::InFlight { deadline_ms, .. }) => {
                let now_ms = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
                ttl.max(Duration::from_millis(deadline_ms.saturating_sub(now_ms)))
            }
            _ => ttl,
        };
        tracing::warn!(
            request_id = settlement.request_id,
            "the idempotency store had lost this request's record and another request took the \
             key: its record is put back"
        );
        Self::compare_and_set(redis, kept, &settlement.key, outcome, &foreign)
            .await
            .map(|_| ())
    }

    async fn release_in_redis(
        redis: &RedisBackend,
        key: &str,
        ours: &str,
    ) -> Result<(), StoreError> {
        let mut invocation = redis.release.key(redis_key(key));
        invocation.arg(ours);
        let _: i64 = Self::run(redis, Query::Script(&invocation)).await?;
        Ok(())
    }

    fn begun(existing: Option<String>) -> Begun {
        existing.map_or(Begun::Taken, Begun::Existing)
    }

    /// Runs a command or a script on the shared connection, connecting first when there is
    /// none; a failed call drops the connection so the next one starts afresh (a command the
    /// server refuses leaves it be).
    async fn run<T: redis::FromRedisValue>(
        redis: &RedisBackend,
        query: Query<'_>,
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
            match query {
                Query::Command(cmd) => cmd.query_async::<T>(&mut con).await,
                Query::Script(invocation) => invocation.invoke_async::<T>(&mut con).await,
                Query::Pipeline(pipe) => pipe.query_async::<T>(&mut con).await,
            }
        };
        let result = match tokio::time::timeout(OPERATION_TIMEOUT, attempt).await {
            Ok(Ok(value)) => return Ok(value),
            Ok(Err(e)) if is_refusal(&e) => {
                return Err(StoreError::Redis(e));
            }
            Ok(Err(e)) => StoreError::Redis(e),
            Err(_) => StoreError::Timeout(OPERATION_TIMEOUT),
        };
        *connection.lock().await = None;
        Err(result)
    }
}

/// A settlement in the writer's queue: dropped (written, or never to be), it gives back its
/// bytes and its note in `unwritten`.
struct Queued {
    settlement: Option<Settlement>,
    note: Option<(String, Arc<str>)>,
    bytes: usize,
    backend: Weak<RedisBackend>,
}

impl Drop for Queued {
    fn drop(&mut self) {
        let Some(backend) = self.backend.upgrade() else {
            return;
        };
        backend.queued_bytes.fetch_sub(self.bytes, Ordering::AcqRel);
        if let Some((key, outcome)) = &self.note {
            backend.written(key, outcome);
        }
    }
}

/// The Redis writer: takes whatever settlements have queued (up to `SETTLEMENT_BATCH`) and
/// writes them together: the plain replacements in one pipeline, the rest (scripts) over the
/// shared connection, which sends them in one go.
async fn write_settlements(
    redis: Arc<RedisBackend>,
    ttl: Duration,
    mut queue: mpsc::Receiver<Queued>,
) {
    let mut batch = Vec::with_capacity(SETTLEMENT_BATCH);
    while queue.recv_many(&mut batch, SETTLEMENT_BATCH).await > 0 {
        let settlements: Vec<&Settlement> =
            batch.iter().filter_map(|q| q.settlement.as_ref()).collect();
        let written = write_batch(&redis, ttl, &settlements).await;
        for (settlement, result) in settlements.iter().zip(written) {
            if let Err(e) = result {
                not_recorded(&settlement.request_id, &e);
            }
        }
        // Dropping them lets a drain go on, and `begin` ask Redis again.
        batch.clear();
    }
}

/// Writes `batch`; per settlement, whether it was written (a record no longer ours is left
/// alone, which counts as written).
async fn write_batch(
    redis: &RedisBackend,
    ttl: Duration,
    batch: &[&Settlement],
) -> Vec<Result<(), String>> {
    let now = Instant::now();
    let mut plain: Vec<bool> = batch
        .iter()
        .map(|s| {
            redis.native_settle.load(Ordering::Relaxed)
                && s.outcome.is_some()
                && s.owned_until
                    .is_some_and(|until| now + EXPIRY_MARGIN < until)
        })
        .collect();
    let replacing: Vec<&Settlement> = batch
        .iter()
        .zip(&plain)
        .filter_map(|(s, plain)| plain.then_some(*s))
        .collect();
    let replaced = match IdempotencyStore::replace_own_all(redis, ttl, &replacing).await {
        Err(StoreError::Redis(e)) if refuses_syntax(&e) => {
            tracing::info!(
                "this Redis refuses SET with GET (before 6.2): idempotency outcomes are \
                 written by a script"
            );
            redis.native_settle.store(false, Ordering::Relaxed);
            plain.fill(false);
            Vec::new()
        }
        Err(e) => vec![Err(e.to_string()); replacing.len()],
        Ok(replaced) => replaced,
    };
    let mut replaced = replaced.into_iter();
    join_all(batch.iter().zip(plain).map(|(s, plain)| {
        let replaced = if plain { replaced.next() } else { None };
        async move {
            let written = match (replaced, &s.outcome) {
                (Some(Ok(previous)), _) => {
                    IdempotencyStore::restore_foreign(redis, ttl, s, previous).await
                }
                (Some(Err(e)), _) => return Err(e),
                (None, Some(outcome)) => {
                    IdempotencyStore::compare_and_set(redis, ttl, &s.key, &s.ours, outcome)
                        .await
                        .map(|_| ())
                }
                (None, None) => IdempotencyStore::release_in_redis(redis, &s.key, &s.ours).await,
            };
            written.map_err(|e| e.to_string())
        }
    }))
    .await
}

/// The in-flight record stays: once its owner's deadline passes, retries are told the outcome
/// is unknown; nothing is ever sent twice.
fn not_recorded(request_id: &str, error: &dyn std::fmt::Display) {
    tracing::warn!(
        request_id,
        error = %error,
        "idempotency store unavailable: the key's outcome was not recorded"
    );
}

impl RedisBackend {
    /// Hands `settlement` (an outcome) to the writer task, starting it when there is none,
    /// noting it for `begin` meanwhile. Gives it back when the queue cannot take it.
    fn queue(self: &Arc<Self>, settlement: Settlement, ttl: Duration) -> Option<Settlement> {
        let Some(outcome) = settlement.outcome.clone() else {
            return Some(settlement);
        };
        let bytes = settlement.key.len() + settlement.ours.len() + outcome.len();
        if self.queued_bytes.fetch_add(bytes, Ordering::AcqRel) + bytes > MAX_QUEUED_BYTES {
            self.queued_bytes.fetch_sub(bytes, Ordering::AcqRel);
            return Some(settlement);
        }
        if let Ok(mut unwritten) = self.unwritten.lock() {
            unwritten.insert(settlement.key.clone(), Arc::clone(&outcome));
        }
        let queued = Queued {
            note: Some((settlement.key.clone(), outcome)),
            settlement: Some(settlement),
            bytes,
            backend: Arc::downgrade(self),
        };
        let Ok(mut settler) = self.settler.lock() else {
            return Self::refused(queued);
        };
        let sender = match settler.as_ref().filter(|s| !s.is_closed()) {
            Some(sender) => sender,
            None => {
                let Ok(runtime) = tokio::runtime::Handle::try_current() else {
                    return Self::refused(queued);
                };
                let (sender, queue) = mpsc::channel(MAX_QUEUED_SETTLEMENTS);
                runtime.spawn(write_settlements(Arc::clone(self), ttl, queue));
                settler.insert(sender)
            }
        };
        match sender.try_send(queued) {
            Ok(()) => None,
            Err(
                mpsc::error::TrySendError::Full(queued) | mpsc::error::TrySendError::Closed(queued),
            ) => Self::refused(queued),
        }
    }

    /// The settlement back out of a queue entry that was not taken (its note goes with it).
    fn refused(mut queued: Queued) -> Option<Settlement> {
        queued.settlement.take()
    }

    fn unwritten(&self, key: &str) -> Option<Arc<str>> {
        self.unwritten.lock().ok()?.get(key).cloned()
    }

    /// `outcome` is in Redis now (or will never be): `begin` asks Redis again.
    fn written(&self, key: &str, outcome: &Arc<str>) {
        if let Ok(mut unwritten) = self.unwritten.lock()
            && unwritten.get(key).is_some_and(|o| Arc::ptr_eq(o, outcome))
        {
            unwritten.remove(key);
        }
    }
}

enum Query<'a> {
    Command(&'a redis::Cmd),
    Pipeline(&'a redis::Pipeline),
    Script(&'a redis::ScriptInvocation<'a>),
}

/// The server answered, with an error: the connection is fine.
fn is_refusal(e: &redis::RedisError) -> bool {
    e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::ResponseError)
}

/// A command this server does not know in this form: what Redis before 7.0 answers to
/// `SET … NX … GET`, and before 6.2 to any `SET … GET`.
fn refuses_syntax(e: &redis::RedisError) -> bool {
    is_refusal(e) && e.to_string().contains("syntax error")
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
        assert_eq!(
            store.begin("k", &a, Duration::ZERO).await.unwrap(),
            Begun::Taken
        );
        assert_eq!(
            store.begin("k", &b, Duration::ZERO).await.unwrap(),
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
            store.begin("k", &b, Duration::ZERO).await.unwrap(),
            Begun::Existing(a.clone()),
            "b cannot release a's key"
        );
        assert!(store.settle("k", &a, &done).await.unwrap());
        assert_eq!(
            store.begin("k", &b, Duration::ZERO).await.unwrap(),
            Begun::Existing(done.clone())
        );
        // Released keys can be taken again.
        assert_eq!(
            store.begin("k2", &a, Duration::ZERO).await.unwrap(),
            Begun::Taken
        );
        store.release("k2", &a).await.unwrap();
        assert_eq!(
            store.begin("k2", &b, Duration::ZERO).await.unwrap(),
            Begun::Taken
        );
    }

    #[tokio::test]
    async fn released_keys_do_not_pile_up_in_the_expiry_queue() {
        let store = memory();
        let a = in_flight("a").encode();
        for i in 0..10_000 {
            let key = format!("k{i}");
            assert_eq!(
                store.begin(&key, &a, Duration::ZERO).await.unwrap(),
                Begun::Taken
            );
            store.release(&key, &a).await.unwrap();
        }
        let Backend::Memory(keys) = &store.backend else {
            panic!("the memory store")
        };
        let keys = keys.lock().unwrap();
        assert!(keys.keys.is_empty());
        assert!(keys.expiries.len() <= 1024 + 1, "{}", keys.expiries.len());
    }

    #[tokio::test]
    async fn an_in_flight_key_outlives_a_shorter_ttl_while_its_request_may_run() {
        let store = IdempotencyStore::new(&IdempotencySettings {
            redis_url: None,
            ttl: Duration::from_millis(50),
            max_response_bytes: 1024,
        })
        .unwrap();
        let (a, b) = (in_flight("a").encode(), in_flight("b").encode());
        let hold = Duration::from_millis(600);
        assert_eq!(store.begin("k", &a, hold).await.unwrap(), Begun::Taken);
        assert_eq!(
            store.begin("short", &a, Duration::ZERO).await.unwrap(),
            Begun::Taken
        );
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert_eq!(
            store.begin("k", &b, Duration::ZERO).await.unwrap(),
            Begun::Existing(a.clone()),
            "still in flight after the ttl"
        );
        assert_eq!(
            store.begin("short", &b, Duration::ZERO).await.unwrap(),
            Begun::Taken,
            "a key held no longer than the ttl expires with it"
        );
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert_eq!(
            store.begin("k", &b, Duration::ZERO).await.unwrap(),
            Begun::Taken
        );
    }

    /// A private redis-server on a unix socket in its own directory (no port to collide on).
    struct UnixRedis {
        child: std::process::Child,
        dir: tempfile::TempDir,
    }

    impl UnixRedis {
        fn start() -> Self {
            let dir = tempfile::tempdir().unwrap();
            let child = std::process::Command::new("redis-server")
                .args(["--port", "0", "--save", "", "--appendonly", "no"])
                .arg("--unixsocket")
                .arg(dir.path().join("redis.sock"))
                .stdout(std::process::Stdio::null())
                .spawn()
                .expect("redis-server is needed for the idempotency store tests");
            let redis = Self { child, dir };
            for _ in 0..500 {
                if redis.connection().is_ok() {
                    return redis;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            panic!("redis-server did not start");
        }

        fn url(&self) -> String {
            format!(
                "redis+unix://{}",
                self.dir.path().join("redis.sock").display()
            )
        }

        fn connection(&self) -> redis::RedisResult<redis::Connection> {
            redis::Client::open(self.url())?.get_connection()
        }
    }

    impl Drop for UnixRedis {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    #[tokio::test]
    async fn redis_takes_settles_and_releases_keys_by_command_and_by_the_older_servers_script() {
        let server = UnixRedis::start();
        for native in [true, false] {
            let store = IdempotencyStore::new(&IdempotencySettings {
                redis_url: Some(server.url()),
                ttl: Duration::from_secs(60),
                max_response_bytes: 1024,
            })
            .unwrap();
            let Backend::Redis(backend) = &store.backend else {
                panic!("a Redis store")
            };
            // As after a server before 7.0 refused SET with NX and GET.
            backend.native_begin.store(native, Ordering::Relaxed);
            let (key, other) = (format!("k-{native}"), format!("k2-{native}"));
            let (a, b) = (in_flight("a").encode(), in_flight("b").encode());
            assert_eq!(
                store.begin(&key, &a, Duration::ZERO).await.unwrap(),
                Begun::Taken
            );
            assert_eq!(
                store.begin(&key, &b, Duration::ZERO).await.unwrap(),
                Begun::Existing(a.clone())
            );
            let done = Record::Unknown {
                fingerprint: "f".into(),
                provider: Some("cards".into()),
            }
            .encode();
            assert!(!store.settle(&key, &b, &done).await.unwrap(), "not b's key");
            store.release(&key, &b).await.unwrap();
            assert!(store.settle(&key, &a, &done).await.unwrap());
            assert_eq!(
                store.begin(&key, &b, Duration::ZERO).await.unwrap(),
                Begun::Existing(done)
            );
            assert_eq!(
                store.begin(&other, &a, Duration::ZERO).await.unwrap(),
                Begun::Taken
            );
            store.release(&other, &a).await.unwrap();
            assert_eq!(
                store.begin(&other, &b, Duration::ZERO).await.unwrap(),
                Begun::Taken
            );
            let mut con = server.connection().unwrap();
            let ttl: i64 = redis::cmd("PTTL")
                .arg(redis_key(&key))
                .query(&mut con)
                .unwrap();
            assert!(
                (59_000..=60_000).contains(&ttl),
                "kept the store's ttl: {ttl}"
            );
            // A request that may run longer than the ttl holds its key at least that long.
            let long = format!("k3-{native}");
            let held = store.begin(&long, &a, Duration::from_secs(120)).await;
            assert_eq!(held.unwrap(), Begun::Taken);
            let ttl: i64 = redis::cmd("PTTL")
                .arg(redis_key(&long))
                .query(&mut con)
                .unwrap();
            assert!((119_000..=120_000).contains(&ttl), "held: {ttl}");
            assert_eq!(
                backend.native_begin.load(Ordering::Relaxed),
                native,
                "no switch without a refusal"
            );
        }
    }

    fn redis_store(server: &UnixRedis) -> IdempotencyStore {
        IdempotencyStore::new(&IdempotencySettings {
            redis_url: Some(server.url()),
            ttl: Duration::from_secs(60),
            max_response_bytes: 1024,
        })
        .unwrap()
    }

    fn settlement(
        key: &str,
        ours: &str,
        outcome: Option<&str>,
        owned_until: Option<Instant>,
        lifecycle: &'static crate::lifecycle::Lifecycle,
    ) -> Settlement {
        Settlement {
            key: key.into(),
            ours: ours.into(),
            outcome: outcome.map(Into::into),
            owned_until,
            request_id: "req".into(),
            in_flight: lifecycle.request_started(),
        }
    }

    /// As the proxy does: queued when the store can, else written by the request itself and
    /// waited for. `true` when it was queued.
    async fn settle(store: &IdempotencyStore, settlement: Settlement) -> bool {
        match store.settle_later(settlement) {
            None => true,
            Some(own) => {
                store.settle_now(own).await;
                false
            }
        }
    }

    /// What Redis holds under `key`, once nothing is queued for the writer any more.
    async fn written(
        con: &mut redis::Connection,
        lifecycle: &crate::lifecycle::Lifecycle,
        key: &str,
    ) -> Option<String> {
        for _ in 0..500 {
            if lifecycle.in_flight() == 0 {
                return redis::cmd("GET").arg(redis_key(key)).query(con).unwrap();
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!("the writer never finished")
    }

    #[tokio::test]
    async fn outcomes_are_written_after_the_request_and_hold_a_drain_until_written() {
        let server = UnixRedis::start();
        let store = redis_store(&server);
        let lifecycle = crate::lifecycle::Lifecycle::leak();
        let mut con = server.connection().unwrap();
        let (a, b) = (in_flight("a").encode(), in_flight("b").encode());
        let done = Record::NotStored {
            fingerprint: "f".into(),
            status: 201,
        }
        .encode();
        let owned = Some(Instant::now() + Duration::from_secs(60));
        for key in ["plain", "script", "released", "foreign", "gone"] {
            let record = if key == "foreign" { &b } else { &a };
            assert_eq!(
                store.begin(key, record, Duration::ZERO).await.unwrap(),
                Begun::Taken
            );
        }
        // A drain counts each queued settlement as work in flight until it is written.
        let queued = settle(
            &store,
            settlement("plain", &a, Some(&done), owned, lifecycle),
        );
        assert!(
            queued.await,
            "the outcome of a key certainly taken is queued"
        );
        assert_eq!(lifecycle.in_flight(), 1);
        // Not in Redis yet (the writer has not run): this instance answers from what it queued.
        let in_redis: Option<String> = redis::cmd("GET")
            .arg(redis_key("plain"))
            .query(&mut con)
            .unwrap();
        assert_eq!(in_redis, Some(a.clone()));
        assert_eq!(
            store.begin("plain", &b, Duration::ZERO).await.unwrap(),
            Begun::Existing(done.clone())
        );
        assert_eq!(
            written(&mut con, lifecycle, "plain").await,
            Some(done.clone())
        );
        let Backend::Redis(backend) = &store.backend else {
            panic!("a Redis store")
        };
        assert!(
            backend.unwritten("plain").is_none(),
            "forgotten once written"
        );
        let ttl: i64 = redis::cmd("PTTL")
            .arg(redis_key("plain"))
            .query(&mut con)
            .unwrap();
        assert!((59_000..=60_000).contains(&ttl), "kept the ttl: {ttl}");
        // Taking the key had failed (`owned_until` None): the request itself writes it, by the
        // compare-and-set; a release too.
        let queued = settle(
            &store,
            settlement("script", &a, Some(&done), None, lifecycle),
        );
        assert!(!queued.await);
        assert_eq!(
            written(&mut con, lifecycle, "script").await,
            Some(done.clone())
        );
        let queued = settle(&store, settlement("released", &a, None, owned, lifecycle));
        assert!(!queued.await);
        assert_eq!(written(&mut con, lifecycle, "released").await, None);
        // Another request's record is never left replaced, by either way of writing.
        for owned_until in [owned, None] {
            let queued = settle(
                &store,
                settlement("foreign", &a, Some(&done), owned_until, lifecycle),
            );
            assert_eq!(queued.await, owned_until.is_some());
            assert_eq!(
                written(&mut con, lifecycle, "foreign").await,
                Some(b.clone())
            );
            settle(
                &store,
                settlement("foreign", &a, None, owned_until, lifecycle),
            )
            .await;
            assert_eq!(
                written(&mut con, lifecycle, "foreign").await,
                Some(b.clone())
            );
        }
        let ttl: i64 = redis::cmd("PTTL")
            .arg(redis_key("foreign"))
            .query(&mut con)
            .unwrap();
        assert!(
            (59_000..=60_000).contains(&ttl),
            "kept at least the store's ttl: {ttl}"
        );
        // A record Redis lost is not written back from an outcome.
        let _: () = redis::cmd("DEL")
            .arg(redis_key("gone"))
            .query(&mut con)
            .unwrap();
        assert!(
            settle(
                &store,
                settlement("gone", &a, Some(&done), owned, lifecycle)
            )
            .await
        );
        assert_eq!(written(&mut con, lifecycle, "gone").await, None);
        // Many at once, as under load: all written.
        for i in 0..600 {
            let key = format!("many-{i}");
            assert_eq!(
                store.begin(&key, &a, Duration::ZERO).await.unwrap(),
                Begun::Taken
            );
            assert!(settle(&store, settlement(&key, &a, Some(&done), owned, lifecycle)).await);
        }
        assert_eq!(
            written(&mut con, lifecycle, "many-599").await,
            Some(done.clone())
        );
        let kept: Vec<Option<String>> = redis::cmd("MGET")
            .arg(
                (0..600)
                    .map(|i| redis_key(&format!("many-{i}")))
                    .collect::<Vec<_>>(),
            )
            .query(&mut con)
            .unwrap();
        assert!(kept.iter().all(|v| v.as_deref() == Some(done.as_str())));
    }

    #[tokio::test]
    async fn a_store_that_is_down_logs_the_outcome_as_not_recorded_and_lets_a_drain_go_on() {
        let server = UnixRedis::start();
        let store = redis_store(&server);
        drop(server);
        let lifecycle = crate::lifecycle::Lifecycle::leak();
        let owned = Some(Instant::now() + Duration::from_secs(60));
        assert!(settle(&store, settlement("k", "a", Some("done"), owned, lifecycle)).await);
        let Backend::Redis(backend) = &store.backend else {
            panic!("a Redis store")
        };
        for _ in 0..400 {
            if lifecycle.in_flight() == 0 {
                assert!(
                    backend.unwritten("k").is_none(),
                    "never written: Redis is asked again"
                );
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!("a failed write still holds the drain");
    }

    #[tokio::test]
    async fn the_queue_is_bounded_by_bytes_and_what_it_cannot_take_its_request_writes() {
        let server = UnixRedis::start();
        let store = redis_store(&server);
        let lifecycle = crate::lifecycle::Lifecycle::leak();
        let a = in_flight("a").encode();
        assert_eq!(
            store.begin("big", &a, Duration::ZERO).await.unwrap(),
            Begun::Taken
        );
        let big = "x".repeat(MAX_QUEUED_BYTES + 1);
        let owned = Some(Instant::now() + Duration::from_secs(60));
        let given_back = store.settle_later(settlement("big", &a, Some(&big), owned, lifecycle));
        let Some(own) = given_back else {
            panic!("an outcome over the queue's bytes was queued")
        };
        let Backend::Redis(backend) = &store.backend else {
            panic!("a Redis store")
        };
        assert!(backend.unwritten("big").is_none());
        assert_eq!(backend.queued_bytes.load(Ordering::Acquire), 0);
        store.settle_now(own).await;
        let mut con = server.connection().unwrap();
        let kept: Option<String> = redis::cmd("GET")
            .arg(redis_key("big"))
            .query(&mut con)
            .unwrap();
        assert_eq!(kept.map(|k| k.len()), Some(big.len()));
        assert_eq!(lifecycle.in_flight(), 0);
    }

    #[test]
    fn a_writer_whose_runtime_went_away_leaves_no_note_and_no_drain_waiting() {
        let server = UnixRedis::start();
        let store = redis_store(&server);
        let lifecycle = crate::lifecycle::Lifecycle::leak();
        let a = in_flight("a").encode();
        let owned = Some(Instant::now() + Duration::from_secs(60));
        let runtime = || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
        };
        let first = runtime();
        first.block_on(async {
            assert_eq!(
                store.begin("k", &a, Duration::ZERO).await.unwrap(),
                Begun::Taken
            );
            // Queued; the writer is spawned but never runs: the runtime goes first.
            assert!(
                store
                    .settle_later(settlement("k", &a, Some("done"), owned, lifecycle))
                    .is_none()
            );
        });
        let Backend::Redis(backend) = &store.backend else {
            panic!("a Redis store")
        };
        assert!(backend.unwritten("k").is_some());
        drop(first);
        assert!(
            backend.unwritten("k").is_none(),
            "the note went with the queue"
        );
        assert_eq!(lifecycle.in_flight(), 0, "the drain is not held forever");
        assert_eq!(backend.queued_bytes.load(Ordering::Acquire), 0);
        // A new writer on the next runtime. (The shared connection's own task went with the
        // first runtime: its first call fails and drops it, the next connects afresh.)
        runtime().block_on(async {
            let _ = store.begin("warm-up", &a, Duration::ZERO).await;
            assert_eq!(
                store.begin("k2", &a, Duration::ZERO).await.unwrap(),
                Begun::Taken
            );
            assert!(
                store
                    .settle_later(settlement("k2", &a, Some("done"), owned, lifecycle))
                    .is_none()
            );
            let mut con = server.connection().unwrap();
            assert_eq!(
                written(&mut con, lifecycle, "k2").await,
                Some("done".into())
            );
        });
    }

    #[tokio::test]
    async fn in_memory_outcomes_are_written_at_once_and_only_over_our_own_record() {
        let store = memory();
        let lifecycle = crate::lifecycle::Lifecycle::leak();
        let (a, b) = (in_flight("a").encode(), in_flight("b").encode());
        assert_eq!(
            store.begin("k", &a, Duration::ZERO).await.unwrap(),
            Begun::Taken
        );
        assert!(
            store
                .settle_later(settlement("k", &b, Some("x"), None, lifecycle))
                .is_none()
        );
        assert!(
            store
                .settle_later(settlement("k", &a, Some("done"), None, lifecycle))
                .is_none()
        );
        assert_eq!(lifecycle.in_flight(), 0);
        assert_eq!(
            store.begin("k", &b, Duration::ZERO).await.unwrap(),
            Begun::Existing("done".into())
        );
    }

    #[test]
    fn a_syntax_error_from_redis_is_what_switches_to_the_scripts_and_nothing_else_is() {
        let server = UnixRedis::start();
        let mut con = server.connection().unwrap();
        // What servers before 7.0 answer to SET with both NX and GET: a syntax error, made
        // here by a combination no version accepts.
        let syntax = redis::cmd("SET")
            .arg("k")
            .arg("v")
            .arg("NX")
            .arg("XX")
            .query::<Option<String>>(&mut con)
            .unwrap_err();
        assert!(refuses_syntax(&syntax), "{syntax}");
        assert!(is_refusal(&syntax));
        let _: () = redis::cmd("LPUSH")
            .arg("list")
            .arg("x")
            .query(&mut con)
            .unwrap();
        let wrong_type = redis::cmd("SET")
            .arg("list")
            .arg("v")
            .arg("GET")
            .query::<Option<String>>(&mut con)
            .unwrap_err();
        assert!(!refuses_syntax(&wrong_type), "{wrong_type}");
    }

    #[test]
    fn the_memory_store_forgets_a_key_when_its_last_write_expires() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut keys = MemoryKeys::default();
        keys.write("k", "first".into(), at(1));
        keys.write("other", "x".into(), at(2));
        keys.write("k", "second".into(), at(3));
        assert_eq!(
            keys.live("k", at(1)),
            Some(&"second".to_string()),
            "rewritten later"
        );
        assert_eq!(keys.live("other", at(2)), None);
        assert_eq!(keys.live("k", at(2)), Some(&"second".to_string()));
        assert_eq!(keys.live("k", at(3)), None);
        assert!(keys.keys.is_empty() && keys.expiries.is_empty());
        assert_eq!(keys.bytes, 0, "every byte given back");
    }

    #[test]
    fn the_memory_store_counts_the_bytes_it_holds_and_is_full_beyond_its_bound() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut keys = MemoryKeys::default();
        keys.write("k", "in flight".into(), at(5));
        assert_eq!(keys.bytes, 1 + 9);
        keys.write("k", "the answer".into(), at(9));
        assert_eq!(keys.bytes, 1 + 10, "a rewrite replaces the record's bytes");
        keys.write("gone", "x".into(), at(9));
        keys.remove("gone");
        assert_eq!(keys.bytes, 1 + 10, "a release gives its bytes back");
        assert!(!keys.full());
        keys.write("big", "x".repeat(MAX_MEMORY_BYTES), at(9));
        assert!(keys.full(), "full by bytes with three keys");
        keys.forget_expired(at(9));
        assert_eq!(keys.bytes, 0);
        assert!(!keys.full());
    }
}
