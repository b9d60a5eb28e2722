//! The response cache of routes with `cache` (the spec's 30-second exchange rates), on Pingora's
//! own cache machinery: its state machine, an LRU eviction manager bounding the cache in bytes
//! (headers included) and in entries, its maximum object size, and its cache lock, which makes
//! concurrent misses for one key wait for a single upstream request; the responses themselves in
//! `cache_storage` (whole responses only).
//!
//! Tenant isolation: the tenant is part of the key (length-prefixed, so no tenant and path can
//! spell another's), and every kept response carries the tenant it was kept for in an internal
//! header that a hit is checked against before it is served, then removed.

use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use http::HeaderName;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora_cache::lock::{CacheKeyLockImpl, CacheLock};
use pingora_cache::{CacheKey, CacheMeta, NoCacheReason, RespCacheable};

use super::cache_eviction::Eviction;
use super::cache_storage::WholeResponses;

use crate::config::RouteCache;

/// The tenant a kept response belongs to; never sent to a client.
pub const CACHED_FOR: HeaderName = HeaderName::from_static("x-payedge-cached-for");
pub const CACHE_STATUS: HeaderName = HeaderName::from_static("cache-status");

/// How long a request waits for another one filling the same key before asking itself.
const LOCK_WAIT: Duration = Duration::from_secs(10);

struct Store {
    storage: &'static WholeResponses,
    eviction: Eviction,
    lock: Box<CacheKeyLockImpl>,
    /// The largest response kept: a quarter of the cache, so that one answer can never flush
    /// every tenant's entries to make room for itself.
    max_object_bytes: usize,
}

/// Entries at most, whatever their size: one per this many bytes of the bound.
const BYTES_PER_ENTRY: usize = 256;

static STORE: OnceLock<Store> = OnceLock::new();

/// Creates the process's cache, bounded to `max_bytes` (once: `cache.max_bytes` needs a
/// restart).
pub fn init(max_bytes: usize) {
    STORE.get_or_init(|| {
        // Once per process (`get_or_init`), for Pingora's `&'static` storage.
        let storage: &'static WholeResponses = Box::leak(Box::default());
        Store {
            storage,
            eviction: Eviction::new(max_bytes, (max_bytes / BYTES_PER_ENTRY).max(1), storage),
            lock: CacheLock::new_boxed(LOCK_WAIT),
            max_object_bytes: (max_bytes / 4).max(1),
        }
    });
}

/// Turns the cache on for this request.
pub fn enable(cache: &mut pingora_cache::HttpCache) {
    if let Some(store) = STORE.get() {
        cache.enable(
            store.storage,
            Some(&store.eviction),
            None,
            Some(store.lock.as_ref()),
            None,
        );
        cache.set_max_file_size_bytes(store.max_object_bytes);
    }
}

/// The key: the tenant and the path with its query, each length-prefixed, and whether payedge
/// verified the caller's token (`verified`): on a route where the token is optional, what a
/// verified caller was answered is never served to a caller without one, nor the other way.
pub fn key(tenant: &str, verified: bool, path_and_query: &str) -> CacheKey {
    let caller = if verified { 'v' } else { 'a' };
    let primary = format!(
        "{}:{tenant}{caller}{}:{path_and_query}",
        tenant.len(),
        path_and_query.len()
    );
    CacheKey::new(primary, tenant.to_owned())
}

/// Whether `resp` may be kept, and for how long; it is stamped with the tenant it is kept for.
/// Provider credentials (`credential_names`) are never kept.
pub fn cacheable(
    resp: &ResponseHeader,
    tenant: &str,
    settings: &RouteCache,
    credential_names: &[HeaderName],
) -> RespCacheable {
    if let Some(reason) = refusal(resp) {
        return RespCacheable::Uncacheable(NoCacheReason::Custom(reason));
    }
    let mut kept = resp.clone();
    for name in credential_names {
        kept.remove_header(name);
    }
    if kept.insert_header(CACHED_FOR, tenant).is_err() {
        return RespCacheable::Uncacheable(NoCacheReason::Custom("tenant"));
    }
    let now = SystemTime::now();
    RespCacheable::Cacheable(CacheMeta::new(now + settings.ttl, now, 0, 0, kept))
}

/// Whether a request carries credentials payedge did not check itself (`verified`: its token
/// was verified here). Such a request neither reads nor fills the cache: its answer may be the
/// provider's for that caller alone, and a cached answer would skip the provider's check of the
/// next caller's credentials (RFC 9111 §3.5). Callers whose token payedge verified share their
/// tenant's entries: the tenant is the cache's unit of isolation.
pub fn carries_unchecked_credentials(req: &RequestHeader, verified: bool) -> bool {
    !verified
        && (req.headers.contains_key(http::header::AUTHORIZATION)
            || req.headers.contains_key(http::header::COOKIE))
}

/// Why a response is never kept, if it is not.
fn refusal(resp: &ResponseHeader) -> Option<&'static str> {
    if resp.status.as_u16() != 200 {
        return Some("status");
    }
    if resp.headers.contains_key(http::header::SET_COOKIE) {
        return Some("set-cookie");
    }
    // The key is the tenant and the target, nothing else: an answer that varies on a request
    // header (the caller, the encoding) is not kept rather than served to the wrong caller.
    if resp.headers.contains_key(http::header::VARY) {
        return Some("vary");
    }
    // Directives are ASCII; a value with other bytes is read by its bytes, never skipped.
    let private = resp
        .headers
        .get_all(http::header::CACHE_CONTROL)
        .iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b','))
        .map(|d| {
            let name = d.split(|b| *b == b'=').next().unwrap_or_default();
            name.trim_ascii().to_ascii_lowercase()
        })
        // `no-cache`: never served without revalidating it with the provider (RFC 9111
        // §5.2.2.4), which this cache does not do.
        .any(|d| d == b"no-store" || d == b"private" || d == b"no-cache");
    private.then_some("cache-control")
}

/// Whether a kept response was kept for `tenant`.
pub fn kept_for(meta: &CacheMeta, tenant: &str) -> bool {
    meta.headers()
        .get(CACHED_FOR)
        .is_some_and(|v| v.as_bytes() == tenant.as_bytes())
}

/// The `Cache-Status` (RFC 9211) value of an answer.
pub fn status(hit: bool, ttl_left: Option<Duration>, stored: bool) -> String {
    match (hit, ttl_left) {
        (true, Some(left)) => format!("payedge; hit; ttl={}", left.as_secs()),
        (true, None) => "payedge; hit".into(),
        (false, _) if stored => "payedge; fwd=miss; stored".into(),
        (false, _) => "payedge; fwd=miss".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pingora_cache::key::CacheHashKey;

    fn response(status: u16, headers: &[(&str, &str)]) -> ResponseHeader {
        let mut resp = ResponseHeader::build(status, None).unwrap();
        for (name, value) in headers {
            resp.append_header(name.to_string(), *value).unwrap();
        }
        resp
    }

    fn settings() -> RouteCache {
        RouteCache {
            ttl: Duration::from_secs(30),
            get: true,
            head: false,
        }
    }

    #[test]
    fn only_plain_200s_are_kept() {
        let kept = |r: &ResponseHeader| {
            matches!(
                cacheable(r, "blue", &settings(), &[]),
                RespCacheable::Cacheable(_)
            )
        };
        assert!(kept(&response(
            200,
            &[("content-type", "application/json")]
        )));
        assert!(kept(&response(200, &[("cache-control", "max-age=5")])));
        assert!(!kept(&response(201, &[])));
        assert!(!kept(&response(500, &[])));
        assert!(!kept(&response(200, &[("set-cookie", "a=b")])));
        assert!(!kept(&response(200, &[("cache-control", "no-store")])));
        assert!(!kept(&response(
            200,
            &[("cache-control", "max-age=0, Private")]
        )));
        assert!(!kept(&response(200, &[("cache-control", "private=\"x\"")])));
        assert!(!kept(&response(
            200,
            &[("cache-control", "public, No-Cache")]
        )));
        assert!(!kept(&response(
            200,
            &[
                ("cache-control", "max-age=60"),
                ("cache-control", "no-cache=\"x\"")
            ]
        )));
        assert!(!kept(&response(200, &[("vary", "X-Auth-Subject")])));
        assert!(!kept(&response(200, &[("vary", "Accept-Encoding")])));
        // A value with non-ASCII bytes is still read: its `private` is not missed.
        let mut odd = response(200, &[]);
        odd.append_header(
            "cache-control",
            http::HeaderValue::from_bytes(b"private, x=\"\xc3\xa9\"").unwrap(),
        )
        .unwrap();
        assert!(!kept(&odd));
    }

    #[test]
    fn requests_with_credentials_payedge_did_not_check_bypass_the_cache() {
        let request = |headers: &[(&str, &str)]| {
            let mut req = RequestHeader::build("GET", b"/api/fx/rates", None).unwrap();
            for (name, value) in headers {
                req.append_header(name.to_string(), *value).unwrap();
            }
            req
        };
        let bearer = request(&[("authorization", "Bearer abc")]);
        assert!(carries_unchecked_credentials(&bearer, false));
        assert!(
            !carries_unchecked_credentials(&bearer, true),
            "verified here"
        );
        assert!(carries_unchecked_credentials(
            &request(&[("cookie", "session=1")]),
            false
        ));
        assert!(!carries_unchecked_credentials(&request(&[]), false));
    }

    #[test]
    fn provider_credentials_are_not_kept() {
        let resp = response(200, &[("x-api-key", "secret"), ("content-type", "a/b")]);
        let names = [HeaderName::from_static("x-api-key")];
        let RespCacheable::Cacheable(meta) = cacheable(&resp, "blue", &settings(), &names) else {
            panic!("not kept");
        };
        assert!(meta.headers().get("x-api-key").is_none());
        assert!(meta.headers().get("content-type").is_some());
    }

    #[test]
    fn a_kept_response_names_its_tenant_and_no_other() {
        let RespCacheable::Cacheable(meta) =
            cacheable(&response(200, &[]), "blue", &settings(), &[])
        else {
            panic!("not kept");
        };
        assert!(kept_for(&meta, "blue"));
        assert!(!kept_for(&meta, "green"));
        assert!(!kept_for(&meta, "blu"));
    }

    #[test]
    fn tenant_and_path_cannot_spell_another_key() {
        // Without the length prefixes these two would be the same string.
        assert_ne!(
            key("ab", true, "c/x").primary_bin(),
            key("a", true, "bc/x").primary_bin()
        );
        assert_eq!(
            key("a", true, "/x?q=1").primary_bin(),
            key("a", true, "/x?q=1").primary_bin()
        );
        assert_ne!(
            key("a", true, "/x?q=1").primary_bin(),
            key("a", true, "/x?q=2").primary_bin()
        );
        assert_ne!(
            key("a", true, "/x").primary_bin(),
            key("a", false, "/x").primary_bin(),
            "verified and anonymous callers never share"
        );
        assert_ne!(
            key("ab", false, "/x").primary_bin(),
            key("a", true, "b/x").primary_bin()
        );
    }
}
