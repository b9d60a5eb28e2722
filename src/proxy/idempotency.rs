//! `Idempotency-Key` in Pingora's phases: the decisions are `payedge_filters::idempotency`, the
//! store is `crate::idempotency`.
//!
//! - request_filter (`begin`): on a route that honours keys, a request other than GET, HEAD or
//!   OPTIONS with a key has its body read (at most 64 KiB, which Pingora then sends upstream from
//!   its retry buffer) and fingerprinted (method, path and query, body digest); the key, scoped by
//!   tenant, token subject and route, is taken in the store. A key already known answers the
//!   request here: the stored response again (`Idempotent-Replayed: true`), or 409, 422 or 502.
//! - upstream_request_filter (`reaching`): the request may reach this provider from now on.
//! - response_filter / response_body_filter (`respond`, `body`): a copy of the provider's answer
//!   as the client gets it, up to `max_response_bytes`.
//! - logging (`settle`): the key keeps the whole answer; or that the outcome is unknown when the
//!   request reached a provider and no whole answer came back; or is forgotten when the request
//!   reached none. Written after the request, without waiting for the store where it can
//!   (`IdempotencyStore::settle_later`).

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::Method;
use payedge_filters::idempotency::{
    self as decide, Decision, Ending, KeyError, Record, Replay, parse_key,
};
use pingora::http::ResponseHeader;
use pingora::proxy::Session;
use ring::digest::{SHA256, digest};

use super::RequestCtx;
use crate::config::RouteIdempotency;
use payedge_filters::request_head::HeadRefusal;

use crate::failure::{Failure, REQUEST_ID_HEADER};
use crate::idempotency::{Begun, IdempotencyStore, Settlement};
use crate::lifecycle::InFlight;
use crate::metrics::IdempotencyResult;

pub const HEADER: &str = "idempotency-key";
pub const REPLAYED_HEADER: &str = "idempotent-replayed";
/// The most body a keyed request may have: what Pingora's retry buffer holds.
const MAX_BODY: usize = 64 * 1024;
/// An in-flight key's owner is presumed gone this long after its pool's total timeout.
const OWNER_MARGIN: Duration = Duration::from_secs(5);
/// Response headers never stored for a replay (hop-by-hop, or recomputed).
const NOT_REPLAYED: [&str; 9] = [
    "connection",
    "keep-alive",
    "transfer-encoding",
    "content-length",
    "date",
    "set-cookie",
    "upgrade",
    "proxy-connection",
    REQUEST_ID_HEADER,
];

/// A key this request holds.
pub struct HeldKey {
    /// Hex SHA-256 of the scoped key: the store's key, and what logs and events carry.
    pub digest: String,
    /// Our in-flight record, encoded: what the store compares before replacing it.
    in_flight: String,
    fingerprint: String,
    /// Until when the store certainly keeps our in-flight record (it was taken at least this
    /// long); `None` when taking the key failed.
    owned_until: Option<Instant>,
    max_response: usize,
    response: Option<Captured>,
}

struct Captured {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    too_large: bool,
    complete: bool,
}

/// What `begin` decided.
pub enum Begin {
    /// Not a keyed request, or its key is now held: go on.
    Proceed,
    /// Answer with this error.
    Refuse(Failure),
    /// Answer with the stored response.
    Replay(Replay),
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = vec![0; bytes.len() * 2];
    for (pair, b) in out.chunks_exact_mut(2).zip(bytes) {
        pair[0] = DIGITS[usize::from(b >> 4)];
        pair[1] = DIGITS[usize::from(b & 0xf)];
    }
    // Hex digits only.
    String::from_utf8(out).unwrap_or_default()
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn count(ctx: &mut RequestCtx, result: IdempotencyResult) {
    ctx.idempotency_result = Some(result);
    if let (Some(m), Some(route)) = (&ctx.snap.metrics, ctx.route) {
        m.idempotency(route, result);
    }
}

pub async fn begin(store: &IdempotencyStore, session: &mut Session, ctx: &mut RequestCtx) -> Begin {
    let Some(route) = ctx.route else {
        return Begin::Proceed;
    };
    let Some(policy) = ctx
        .snap
        .config
        .routes
        .get(route)
        .and_then(|r| r.idempotency)
    else {
        return Begin::Proceed;
    };
    let method = session.req_header().method.clone();
    if matches!(method, Method::GET | Method::HEAD | Method::OPTIONS) {
        return Begin::Proceed;
    }
    // Boxed: the store's futures are large, and inline they would make every request's
    // request_filter future (allocated and moved per request) that much larger.
    Box::pin(begin_keyed(store, session, ctx, route, policy, method)).await
}

async fn begin_keyed(
    store: &IdempotencyStore,
    session: &mut Session,
    ctx: &mut RequestCtx,
    route: usize,
    policy: RouteIdempotency,
    method: Method,
) -> Begin {
    let values: Vec<&[u8]> = session
        .req_header()
        .headers
        .get_all(HEADER)
        .iter()
        .map(|v| v.as_bytes())
        .collect();
    let key = match parse_key(&values) {
        Ok(key) => key.to_string(),
        Err(KeyError::Missing) if !policy.required => return Begin::Proceed,
        Err(KeyError::Missing) => {
            count(ctx, IdempotencyResult::Rejected);
            return Begin::Refuse(Failure::IdempotencyKeyRequired);
        }
        Err(KeyError::Malformed) => {
            count(ctx, IdempotencyResult::Rejected);
            return Begin::Refuse(Failure::IdempotencyKeyInvalid);
        }
    };
    let body = match read_body(session, ctx.snap.config.server.limits.max_body_bytes).await {
        Ok(body) => body,
        Err(failure) => {
            count(ctx, IdempotencyResult::Rejected);
            return Begin::Refuse(failure);
        }
    };
    let tenant = ctx.tenant.as_ref().map_or("", |t| &*t.name);
    let subject = ctx
        .principal
        .as_ref()
        .and_then(|p| p.subject.as_deref())
        .unwrap_or("");
    let route_prefix = ctx
        .snap
        .routing
        .route_prefixes
        .get(route)
        .map_or("", String::as_str);
    let digest_of = |material: &[u8]| hex(digest(&SHA256, material).as_ref());
    let scoped = digest_of(&decide::scope_material(
        tenant,
        subject,
        ctx.client_subject.as_deref(),
        route_prefix,
        &key,
    ));
    let path = session
        .req_header()
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str());
    let fingerprint = digest_of(&decide::request_material(
        method.as_str(),
        path,
        digest(&SHA256, &body).as_ref(),
    ));
    let total = ctx
        .pool
        .and_then(|p| ctx.snap.pools.get(p))
        .map_or(Duration::from_secs(30), |p| p.settings.timeouts.total);
    let hold = total + OWNER_MARGIN;
    let in_flight = Record::InFlight {
        fingerprint: fingerprint.clone(),
        deadline_ms: now_ms().saturating_add(u64::try_from(hold.as_millis()).unwrap_or(u64::MAX)),
        request_id: ctx.request_id.clone(),
    }
    .encode();
    let held = |digest, in_flight, fingerprint, owned_until| HeldKey {
        digest,
        in_flight,
        fingerprint,
        owned_until,
        max_response: store.max_response_bytes,
        response: None,
    };
    // Read before the store's clock starts: the record is kept at least until then.
    let taken_at = Instant::now();
    match store.begin(&scoped, &in_flight, hold).await {
        Ok(Begun::Taken) => {
            count(ctx, IdempotencyResult::First);
            ctx.idempotency_digest = Some(scoped.clone());
            let owned_until = taken_at + store.ttl.max(hold);
            ctx.idempotency = Some(held(scoped, in_flight, fingerprint, Some(owned_until)));
            // A client that gives up and closes its connection (its own timeout, then a retry
            // with the same key) must not abandon the payment: the provider's answer is still
            // awaited and kept, so the retry is answered with it instead of an unknown outcome.
            // (HTTP/1 only: over HTTP/2 a reset stream or a closed connection still ends it.)
            session.as_mut().set_abort_on_close(false);
            Begin::Proceed
        }
        Ok(Begun::Existing(text)) => {
            ctx.idempotency_digest = Some(scoped);
            let decision = Record::decode(&text)
                .map_or(Decision::OutcomeUnknown { provider: None }, |record| {
                    decide::decide(&record, &fingerprint, now_ms())
                });
            answer_known(ctx, decision)
        }
        Err(e) => {
            ctx.idempotency_digest = Some(scoped.clone());
            // The store may have taken the key before the error (a reply that timed out or was
            // lost): held all the same, so that the end of this request settles or releases it.
            // Both only replace this request's own in-flight record, so a key never taken is
            // left alone.
            ctx.idempotency = Some(held(scoped, in_flight, fingerprint, None));
            tracing::warn!(
                request_id = ctx.request_id,
                error = %e,
                refused = policy.refuse_when_unavailable,
                "idempotency store unavailable"
            );
            if policy.refuse_when_unavailable {
                count(ctx, IdempotencyResult::Unavailable);
                Begin::Refuse(Failure::IdempotencyUnavailable)
            } else {
                count(ctx, IdempotencyResult::Unprotected);
                Begin::Proceed
            }
        }
    }
}

fn answer_known(ctx: &mut RequestCtx, decision: Decision) -> Begin {
    match decision {
        Decision::Replay(replay) => {
            count(ctx, IdempotencyResult::Replayed);
            Begin::Replay(replay)
        }
        Decision::InProgress {
            retry_after_seconds,
        } => {
            count(ctx, IdempotencyResult::Conflict);
            Begin::Refuse(Failure::IdempotencyInProgress {
                retry_after_seconds,
            })
        }
        Decision::Reused => {
            count(ctx, IdempotencyResult::Reused);
            Begin::Refuse(Failure::IdempotencyKeyReused)
        }
        Decision::OutcomeUnknown { provider } => {
            count(ctx, IdempotencyResult::UnknownOutcome);
            Begin::Refuse(Failure::IdempotencyOutcomeUnknown { provider })
        }
        Decision::NotStored { status } => {
            count(ctx, IdempotencyResult::NotStored);
            Begin::Refuse(Failure::IdempotencyResponseNotStored { status })
        }
    }
}

/// The whole request body, kept by Pingora in its retry buffer and sent upstream from there.
async fn read_body(session: &mut Session, max_body_bytes: u64) -> Result<Vec<u8>, Failure> {
    session.as_mut().enable_retry_buffering();
    // A client that waits for `100 Continue` before sending its body would otherwise wait out
    // its own timeout (curl: 1 s): the body is needed here, before any provider could answer it.
    if expects_continue(session.req_header()) {
        session
            .as_mut()
            .write_continue_response()
            .await
            .map_err(|_| Failure::BadRequest)?;
    }
    // The gateway's own limit on bodies, when it is below what a keyed body may hold.
    let limit = usize::try_from(max_body_bytes).map_or(MAX_BODY, |l| l.min(MAX_BODY));
    let mut body = Vec::new();
    loop {
        match session.read_request_body().await {
            Ok(Some(chunk)) if body.len() + chunk.len() <= limit => {
                body.extend_from_slice(&chunk);
            }
            Ok(Some(_)) if limit < MAX_BODY => {
                return Err(Failure::Head(HeadRefusal::BodyTooLarge));
            }
            // The framing is intact: answered before the body's end, Pingora closes the
            // connection (`close_on_response_before_downstream_finish`) unless the rest was
            // already in; either way nothing of this body is read as a request.
            Ok(Some(_)) => return Err(Failure::IdempotencyBodyTooLarge),
            Ok(None) => return Ok(body),
            Err(_) => {
                // The framing is lost (a malformed chunk, which Pingora then counts as the
                // body's end): whatever follows on the connection is not a request.
                session.set_keepalive(None);
                return Err(Failure::BadRequest);
            }
        }
    }
}

/// `Expect: 100-continue` on an HTTP/1.1 request (RFC 9110 §10.1.1).
pub(crate) fn expects_continue(req: &pingora::http::RequestHeader) -> bool {
    req.version == http::Version::HTTP_11
        && req
            .headers
            .get(http::header::EXPECT)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"))
}

/// Writes a stored response, marked as a replay and with this request's id.
pub async fn replay(
    session: &mut Session,
    ctx: &RequestCtx,
    replay: Replay,
) -> pingora::Result<()> {
    let mut header = ResponseHeader::build(replay.status, Some(replay.headers.len() + 3))?;
    for (name, value) in &replay.headers {
        header.append_header(name.clone(), value.as_str())?;
    }
    // 204 and 304 carry no Content-Length (RFC 9110 §8.6); nor a body.
    if !matches!(replay.status, 204 | 304) {
        header.insert_header(http::header::CONTENT_LENGTH, replay.body.len().to_string())?;
    }
    header.insert_header(REQUEST_ID_HEADER, ctx.request_id.as_str())?;
    header.insert_header(REPLAYED_HEADER, "true")?;
    session
        .write_response_header(Box::new(header), false)
        .await?;
    session
        .write_response_body(Some(Bytes::from(replay.body)), true)
        .await
}

/// The request may reach `provider` from now on.
pub fn reaching(ctx: &mut RequestCtx, provider: usize) {
    if ctx.idempotency.is_some() && !ctx.may_hold.contains(&provider) {
        ctx.may_hold.push(provider);
    }
}

/// The connection to `provider` was refused after all (a TLS session it did not accept):
/// nothing reached it.
pub fn not_reached(ctx: &mut RequestCtx, provider: usize) {
    ctx.may_hold.retain(|p| *p != provider);
}

/// The provider's response header, as the client gets it.
pub fn respond(ctx: &mut RequestCtx, response: &ResponseHeader) {
    let Some(held) = ctx.idempotency.as_mut() else {
        return;
    };
    let headers = response
        .headers
        .iter()
        .filter(|(name, _)| !NOT_REPLAYED.contains(&name.as_str()))
        // UTF-8 values too (`to_str` takes visible ASCII only, and would drop a UTF-8 file name
        // in Content-Disposition from the replay).
        .filter_map(|(name, value)| {
            let value = std::str::from_utf8(value.as_bytes()).ok()?;
            Some((name.to_string(), value.to_string()))
        })
        .collect();
    // A response its header ends (204, 304, `Content-Length: 0`) gets no body phase at all:
    // it is whole already.
    let status = response.status.as_u16();
    let empty = matches!(status, 204 | 304)
        || response
            .headers
            .get(http::header::CONTENT_LENGTH)
            .is_some_and(|v| v.as_bytes().trim_ascii() == b"0");
    held.response = Some(Captured {
        status,
        headers,
        body: Vec::new(),
        too_large: false,
        complete: empty,
    });
}

/// A piece of the provider's response body.
pub fn body(ctx: &mut RequestCtx, chunk: Option<&Bytes>, end_of_stream: bool) {
    let Some(held) = ctx.idempotency.as_mut() else {
        return;
    };
    let Some(captured) = held.response.as_mut() else {
        return;
    };
    if let Some(chunk) = chunk
        && !captured.too_large
    {
        if captured.body.len() + chunk.len() > held.max_response {
            captured.too_large = true;
            captured.body = Vec::new();
        } else {
            captured.body.extend_from_slice(chunk);
        }
    }
    if end_of_stream {
        captured.complete = true;
    }
}

/// The end of a request that held a key: what the key keeps from now on, written after the
/// request without waiting where the store can (`in_flight` keeps a drain waiting for it).
/// What it gives back the request writes itself ([`IdempotencyStore::settle_now`]).
#[must_use]
pub fn settle(
    store: &IdempotencyStore,
    ctx: &mut RequestCtx,
    provider_names: &[&str],
    in_flight: InFlight,
) -> Option<Settlement> {
    let held = ctx.idempotency.take()?;
    let whole = held.response.as_ref().filter(|c| c.complete);
    let reached = ctx
        .may_hold
        .last()
        .and_then(|p| provider_names.get(*p))
        .copied();
    let ending = Ending {
        response: whole.map(|c| (c.status, c.headers.as_slice(), c.body.as_slice())),
        response_too_large: whole.is_some_and(|c| c.too_large),
        // A request that reached a provider without a whole answer has an unknown outcome,
        // even if payedge could not tell which provider (it always can: `may_hold`).
        reached: reached.or(if ctx.may_hold.is_empty() {
            None
        } else {
            Some("unknown")
        }),
    };
    let outcome = decide::settle(&held.fingerprint, &ending).map(|record| record.encode().into());
    store.settle_later(Settlement {
        key: held.digest,
        ours: held.in_flight,
        outcome,
        owned_until: held.owned_until,
        request_id: ctx.request_id.clone(),
        in_flight,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_are_written_in_lower_case_hex() {
        assert_eq!(hex(&[0x00, 0x0f, 0xa5, 0xff]), "000fa5ff");
        assert_eq!(hex(&[]), "");
        // SHA-256 of "abc" (FIPS 180-2, appendix B.1).
        assert_eq!(
            hex(digest(&SHA256, b"abc").as_ref()),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
