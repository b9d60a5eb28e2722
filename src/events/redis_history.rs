//! The history in Redis: one Stream per tenant, `{prefix}stream:{<tenant>}` (the braces are a
//! Redis Cluster hash tag: a tenant's stream and its channel live in one slot), and
//! `{prefix}stream:{_all}` for system-wide events.
//!
//! One script per event appends it, trims the stream to its bounds and publishes it, so on every
//! instance the order of live events is the order of the history. The script stamps the entry's
//! id into the published envelope (`{"streamid":"<id>",…`) exactly as [`stamp`] does for a
//! replay, so both paths give a client the same bytes.
//!
//! [`stamp`]: super::stream_id::stamp

use std::sync::Arc;

use redis::Value;

use super::history::{HistoryLimits, Recovery, Replayed, Unrecoverable};
use super::stream_id::{StreamId, stamp};

/// KEYS[1] the stream; ARGV: envelope, max events, max age (ms), channel, key lifetime (ms),
/// publish command (`PUBLISH`, or `SPUBLISH` on a cluster).
///
/// Trimming (beyond max events, older than max age) removes a prefix of the stream; the newest
/// entry it removes is recorded as the stream's `max-deleted-entry-id` (`XSETID … MAXDELETEDID`:
/// Redis 7.0 records it for `XDEL` only), which [`RESUME`] reads: a client whose position it is
/// missed nothing that was trimmed.
pub const PUBLISH: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local max = tonumber(ARGV[2])
local trimmed = false
local excess = redis.call('XLEN', KEYS[1]) + 1 - max
if excess > 0 then
  local counted = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', excess)
  if #counted > 0 then trimmed = counted[#counted][1] end
end
local id = redis.call('XADD', KEYS[1], 'MAXLEN', max, '*', 'e', ARGV[1])
-- Forward from the oldest: usually nothing (XREVRANGE from the bound would walk the whole
-- stream when nothing is older). What is left is newer than what MAXLEN dropped.
local aged = redis.call('XRANGE', KEYS[1], '-',
  '(' .. string.format('%.0f', now - tonumber(ARGV[3])) .. '-0', 'COUNT', max)
if #aged > 0 then
  trimmed = aged[#aged][1]
  local ms, seq = string.match(trimmed, '^(%d+)-(%d+)$')
  redis.call('XTRIM', KEYS[1], 'MINID', ms .. '-' .. string.format('%.0f', tonumber(seq) + 1))
end
-- pcall: Redis before 7.0 refuses MAXDELETEDID; the event is still published (a trimmed
-- position then resumes as a gap, as it always did there).
if trimmed then redis.pcall('XSETID', KEYS[1], id, 'MAXDELETEDID', trimmed) end
redis.call('PEXPIRE', KEYS[1], ARGV[5])
redis.call(ARGV[6], ARGV[4], '{"streamid":"' .. id .. '",' .. string.sub(ARGV[1], 2))
return id
"#;

/// KEYS[1] the stream; ARGV: the client's position (`0-0`: the stream's start), most events to
/// replay, max age (ms). Read-only. Answers `{'ok', head, entries}` or `{'gap', head}` (head
/// `false` when the stream does not exist).
///
/// A position is resumable while nothing after it was trimmed: its entry is still in the
/// stream, or it is the newest entry trimmed so far (`max-deleted-entry-id`, kept by
/// [`PUBLISH`]: a quiet tenant's last event, trimmed for its age by the next one, which the
/// client then missed alone). What
/// it missed must also be within the age bound: the first entry after it older than `max age`
/// counts as trimmed (trimming happens when an event is added; this script only reads).
pub const RESUME: &str = r#"
local start = ARGV[1] == '0-0'
if redis.call('EXISTS', KEYS[1]) == 0 then
  if start then return {'ok', false, {}} end
  return {'gap', false}
end
local info = redis.call('XINFO', 'STREAM', KEYS[1])
local head, length, added, deleted = false, 0, 0, false
for i = 1, #info, 2 do
  if info[i] == 'last-generated-id' then head = info[i + 1] end
  if info[i] == 'length' then length = info[i + 1] end
  if info[i] == 'entries-added' then added = info[i + 1] end
  if info[i] == 'max-deleted-entry-id' then deleted = info[i + 1] end
end
local limit = tonumber(ARGV[2])
if start then
  if added ~= length then return {'gap', head} end
  local entries = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', limit + 1)
  if #entries > limit then return {'gap', head} end
  return {'ok', head, entries}
end
if head == ARGV[1] then return {'ok', head, {}} end
if deleted ~= ARGV[1] and #redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1]) == 0 then
  return {'gap', head}
end
local entries = redis.call('XRANGE', KEYS[1], '(' .. ARGV[1], '+', 'COUNT', limit + 1)
if #entries > limit then return {'gap', head} end
if #entries > 0 then
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  local first = tonumber(string.match(entries[1][1], '^(%d+)-'))
  if first < now - tonumber(ARGV[3]) then return {'gap', head} end
end
return {'ok', head, entries}
"#;

/// KEYS[1] the stream. Its last id, or `0-0` when it does not exist (yet): the position from
/// which a follower misses nothing.
pub const HEAD: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 0 then return '0-0' end
local info = redis.call('XINFO', 'STREAM', KEYS[1])
for i = 1, #info, 2 do
  if info[i] == 'last-generated-id' then return info[i + 1] end
end
return '0-0'
"#;

/// Streams of tenants that publish nothing for this long are deleted. Longer than any history
/// bound: a client whose position is the head of an idle stream still resumes with nothing
/// missed.
pub const KEY_LIFETIME_MS: u64 = 24 * 3600 * 1000;

/// The stream of `tenant` (or `_all`).
pub fn stream_key(prefix: &str, stream: &str) -> String {
    format!("{prefix}stream:{{{stream}}}")
}

/// The arguments of [`PUBLISH`] after the envelope.
pub struct PublishArgs {
    pub limits: HistoryLimits,
    pub channel: String,
    pub sharded: bool,
}

/// Adds one invocation of the publish script (loaded as `sha`) to `pipe`.
pub fn add_publish(
    pipe: &mut redis::Pipeline,
    sha: &str,
    key: &str,
    json: &str,
    args: &PublishArgs,
) {
    pipe.cmd("EVALSHA")
        .arg(sha)
        .arg(1)
        .arg(key)
        .arg(json.as_bytes())
        .arg(args.limits.max_events)
        .arg(args.limits.max_age.as_millis() as u64)
        .arg(&args.channel)
        .arg(KEY_LIFETIME_MS)
        .arg(if args.sharded { "SPUBLISH" } else { "PUBLISH" });
}

/// Reads the history in Redis for the hub, over a connection of its own made when first needed
/// and made again after a failure.
pub struct RedisReader {
    target: super::redis_target::RedisTarget,
    prefix: String,
    limits: HistoryLimits,
    script: redis::Script,
    head: redis::Script,
    connection: tokio::sync::Mutex<Option<super::redis_target::Connection>>,
}

const READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

impl RedisReader {
    pub fn target(&self) -> &super::redis_target::RedisTarget {
        &self.target
    }

    pub fn new(url: &str, prefix: &str, limits: HistoryLimits) -> Option<Self> {
        Some(Self {
            target: super::redis_target::RedisTarget::parse(url).ok()?,
            prefix: prefix.to_string(),
            limits,
            script: redis::Script::new(RESUME),
            head: redis::Script::new(HEAD),
            connection: tokio::sync::Mutex::default(),
        })
    }

    /// The connection, made if there is none.
    async fn connection(&self) -> Option<super::redis_target::Connection> {
        // A multiplexed connection is shared by cloning: the lock is held only to find it.
        let mut slot = self.connection.lock().await;
        if let Some(con) = slot.as_ref() {
            return Some(con.clone());
        }
        match self.target.connect(READ_TIMEOUT).await {
            Ok(con) => Some(slot.insert(con).clone()),
            Err(e) => {
                tracing::warn!(error = %e, "the hub cannot reach Redis to read the event history");
                None
            }
        }
    }

    async fn forget_connection(&self) {
        *self.connection.lock().await = None;
    }

    /// What a client at `after` of `stream` (a tenant, or `_all`) missed.
    pub async fn resume(&self, stream: &str, after: StreamId) -> Recovery {
        let unavailable = Recovery::Unrecoverable {
            reason: Unrecoverable::Unavailable,
            position: None,
        };
        let Some(mut con) = self.connection().await else {
            return unavailable;
        };
        let key = stream_key(&self.prefix, stream);
        let recovery = resume(&mut con, &self.script, &key, after, self.limits).await;
        if recovery == unavailable {
            self.forget_connection().await;
        }
        recovery
    }

    /// The position of `stream`'s newest event (`0-0` when it has none yet); `None` when Redis
    /// cannot say.
    pub async fn head(&self, stream: &str) -> Option<StreamId> {
        let mut con = self.connection().await?;
        let answer: Result<String, _> = self
            .head
            .key(stream_key(&self.prefix, stream))
            .invoke_async(&mut con)
            .await;
        match answer {
            Ok(id) => id.parse().ok(),
            Err(e) => {
                tracing::warn!(error = %e, "reading a history stream's head from Redis failed");
                self.forget_connection().await;
                None
            }
        }
    }
}

/// Reads what a client at `after` missed of the stream `key`.
pub async fn resume(
    con: &mut impl redis::aio::ConnectionLike,
    script: &redis::Script,
    key: &str,
    after: StreamId,
    limits: HistoryLimits,
) -> Recovery {
    let answer: Result<Value, _> = script
        .key(key)
        .arg(after.to_string())
        .arg(limits.max_events)
        .arg(limits.max_age.as_millis() as u64)
        .invoke_async(con)
        .await;
    match answer {
        Ok(value) => parse_resume(value, after).unwrap_or(Recovery::Unrecoverable {
            reason: Unrecoverable::Unavailable,
            position: None,
        }),
        Err(e) => {
            tracing::warn!(error = %e, "reading the event history from Redis failed");
            Recovery::Unrecoverable {
                reason: Unrecoverable::Unavailable,
                position: None,
            }
        }
    }
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    }
}

/// `{'ok', head, entries}` / `{'gap', head}` into a [`Recovery`]; `None` when the answer has
/// another shape.
pub fn parse_resume(value: Value, after: StreamId) -> Option<Recovery> {
    let Value::Array(parts) = value else {
        return None;
    };
    let status = text(parts.first()?)?;
    let head = parts.get(1).and_then(text).and_then(|h| h.parse().ok());
    if status == "gap" {
        return Some(Recovery::Unrecoverable {
            reason: Unrecoverable::Gap,
            position: head,
        });
    }
    let Some(Value::Array(raw)) = parts.get(2) else {
        return None;
    };
    let mut entries = Vec::with_capacity(raw.len());
    for entry in raw {
        let Value::Array(entry) = entry else {
            return None;
        };
        let id: StreamId = text(entry.first()?)?.parse().ok()?;
        let Some(Value::Array(fields)) = entry.get(1) else {
            return None;
        };
        let json = fields
            .chunks(2)
            .find(|kv| kv.first().and_then(text).as_deref() == Some("e"))
            .and_then(|kv| kv.get(1))
            .and_then(text)?;
        entries.push(Replayed {
            id,
            json: Arc::from(stamp(&json, id)),
        });
    }
    Some(Recovery::Recovered {
        position: entries.last().map(|e| e.id).or(head).unwrap_or(after),
        entries,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn keys_carry_the_tenant_as_a_hash_tag() {
        assert_eq!(
            stream_key("payedge:events:", "blue"),
            "payedge:events:stream:{blue}"
        );
    }

    #[test]
    fn script_answers_become_recoveries() {
        let after = StreamId::new(1, 0);
        let ok = Value::Array(vec![
            bulk("ok"),
            bulk("3-0"),
            Value::Array(vec![
                Value::Array(vec![
                    bulk("2-0"),
                    Value::Array(vec![bulk("e"), bulk("{\"id\":\"a\"}")]),
                ]),
                Value::Array(vec![
                    bulk("3-0"),
                    Value::Array(vec![bulk("e"), bulk("{\"id\":\"b\"}")]),
                ]),
            ]),
        ]);
        let Some(Recovery::Recovered { entries, position }) = parse_resume(ok, after) else {
            panic!("not recovered");
        };
        assert_eq!(position, StreamId::new(3, 0));
        assert_eq!(&*entries[0].json, "{\"streamid\":\"2-0\",\"id\":\"a\"}");
        let nothing_missed = Value::Array(vec![bulk("ok"), bulk("1-0"), Value::Array(vec![])]);
        assert_eq!(
            parse_resume(nothing_missed, after),
            Some(Recovery::Recovered {
                entries: vec![],
                position: after
            })
        );
        let gone = Value::Array(vec![bulk("gap"), Value::Nil]);
        assert_eq!(
            parse_resume(gone, after),
            Some(Recovery::Unrecoverable {
                reason: Unrecoverable::Gap,
                position: None
            })
        );
        assert_eq!(parse_resume(Value::Int(1), after), None);
    }
}
