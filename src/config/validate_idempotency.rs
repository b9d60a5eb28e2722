//! The top-level `idempotency` section: where keys are kept and for how long.

use std::time::Duration;

use super::external::*;
use super::runtime::*;
use super::validate::Validator;

const MAX_TTL_SECONDS: u64 = 30 * 86_400;
const MAX_RESPONSE_BYTES: usize = 16 * 1024 * 1024;

impl Validator<'_> {
    pub(super) fn idempotency(&mut self, s: &IdempotencySection) -> IdempotencySettings {
        if !(1..=MAX_TTL_SECONDS).contains(&s.ttl_seconds) {
            self.issue(
                "idempotency.ttl_seconds",
                format!("must be from 1 to {MAX_TTL_SECONDS} (30 days)"),
            );
        }
        if !(1..=MAX_RESPONSE_BYTES).contains(&s.max_response_bytes) {
            self.issue(
                "idempotency.max_response_bytes",
                format!("must be from 1 to {MAX_RESPONSE_BYTES}"),
            );
        }
        let redis_url = match (s.store, &s.redis) {
            (IdempotencyStoreName::InMemory, None) => None,
            (IdempotencyStoreName::InMemory, Some(_)) => {
                self.issue(
                    "idempotency.redis",
                    "only the redis store uses this section (store: redis)",
                );
                None
            }
            (IdempotencyStoreName::Redis, None) => {
                self.issue("idempotency.redis", "the redis store needs this section");
                None
            }
            (IdempotencyStoreName::Redis, Some(r)) => self.idempotency_redis(r),
        };
        IdempotencySettings {
            redis_url,
            ttl: Duration::from_secs(s.ttl_seconds),
            max_response_bytes: s.max_response_bytes,
        }
    }

    fn idempotency_redis(&mut self, r: &IdempotencyRedisSection) -> Option<String> {
        let (key, url) = match (&r.url, &r.url_env) {
            (Some(url), None) => ("url", Some(url.clone())),
            (None, Some(name)) => (
                "url_env",
                self.env_secret("idempotency.redis.url_env", name),
            ),
            _ => {
                self.issue("idempotency.redis", "set exactly one of url and url_env");
                return None;
            }
        };
        let url = url?;
        if let Err(e) = crate::events::redis_target::RedisTarget::parse(&url) {
            self.issue(
                format!("idempotency.redis.{key}"),
                format!("not a Redis (redis://) or Redis Cluster (redis+cluster://) URL: {e}"),
            );
            return None;
        }
        Some(url)
    }
}
