//! Attempts at providers: choosing one, learning from how it ended, and whether the request may
//! move to another provider.
//!
//! The rule that keeps payments from being sent twice: a refused connection (nothing was sent)
//! always moves to a provider not yet tried; once bytes may have reached a provider, only a
//! request whose method is in `retry.methods` (idempotent ones: GET, HEAD, PUT, DELETE, OPTIONS by
//! default) with its body still buffered may, within `retry.max_attempts`, the retry budget and
//! `timeouts.total_ms`.

use std::time::{Duration, Instant};

use payedge_upstreams::{Outcome, RetryCause, RetryVerdict, SelectError, Selection};
use pingora::prelude::HttpPeer;
use pingora::proxy::Session;
use pingora::{Error, ErrorSource, ErrorType};

use super::RequestCtx;
use super::upstream_errors;
use crate::failure::Failure;
use crate::metrics::FailoverReason;
use crate::providers::{PoolRuntime, ProviderEvents};
use crate::tls::{TlsMetrics, UpstreamTlsFailure, upstream_tls_failure};

/// Picks the provider of the next attempt, or says why there is none.
pub fn choose(
    pool: &PoolRuntime,
    session: &Session,
    ctx: &mut RequestCtx,
) -> Result<HttpPeer, Failure> {
    if ctx.attempts == 0 {
        pool.pool.on_request();
    }
    let remaining = remaining(pool, ctx);
    if ctx.attempts > 0 && remaining.is_zero() {
        return Err(ctx.last_attempt_failure.take().unwrap_or(Failure::Internal));
    }
    let tenant = ctx.tenant.as_ref().map_or("", |t| &*t.name);
    let currency = session
        .req_header()
        .headers
        .get(&pool.settings.currency_header)
        .and_then(|v| v.to_str().ok());
    let selection = Selection {
        tenant,
        currency,
        tried: ctx.tried,
    };
    let picked = pool.pool.candidates(&selection).and_then(|candidates| {
        ctx.candidates = candidates;
        pool.pool.select(&selection)
    });
    match picked {
        Ok(provider) => {
            let peer = pool.peer(provider, remaining).ok_or(Failure::Internal)?;
            ctx.provider = Some(provider);
            ctx.tried.insert(provider);
            ctx.attempts += 1;
            ctx.attempt_started = Some(Instant::now());
            ctx.attempt_recorded = false;
            ctx.last_attempt_failure = None;
            Ok(peer)
        }
        Err(SelectError::CurrencyUnsupported) => Err(Failure::CurrencyUnsupported),
        Err(SelectError::TenantNotServed) => Err(Failure::TenantNotServed),
        Err(SelectError::NoneAvailable) => Err(match ctx.last_attempt_failure.take() {
            Some(last) => last,
            None => Failure::NoProviderAvailable {
                retry_after_seconds: pool.pool.retry_after_seconds(Instant::now()),
            },
        }),
    }
}

/// The connection to the provider could not be made (`e`; `tls_failure` when its TLS session was
/// refused): nothing was sent. Returns whether to try another provider.
pub fn connect_failed(
    pool: &PoolRuntime,
    events: &ProviderEvents,
    tls_metrics: Option<&TlsMetrics>,
    ctx: &mut RequestCtx,
    tls_failure: Option<UpstreamTlsFailure>,
) -> bool {
    let Some(provider) = ctx.provider else {
        return false;
    };
    record(pool, events, ctx, provider, Outcome::ConnectFailed, None);
    if let (Some(failure), Some(m)) = (tls_failure, tls_metrics) {
        m.upstream_failed(pool.name(), pool.provider_name(provider), failure);
    }
    ctx.upstream_tls_failure = tls_failure.or(ctx.upstream_tls_failure);
    ctx.last_attempt_failure = Some(Failure::UpstreamUnavailable {
        provider: pool.provider_name(provider).to_string(),
        reason: tls_failure.map(UpstreamTlsFailure::describe),
    });
    let retry = untried_left(pool, ctx) && !remaining(pool, ctx).is_zero();
    if retry && let Some(m) = events.metrics() {
        m.failover(pool.index, FailoverReason::ConnectError);
    }
    retry
}

/// The provider answered `status`. Returns whether to discard this answer and retry elsewhere.
pub fn answered(
    pool: &PoolRuntime,
    events: &ProviderEvents,
    session: &Session,
    ctx: &mut RequestCtx,
    status: u16,
) -> bool {
    let Some(provider) = ctx.provider else {
        return false;
    };
    record(
        pool,
        events,
        ctx,
        provider,
        Outcome::Answered(status),
        Some(status),
    );
    if status < 500 || super::final_response(session).is_some() {
        return false;
    }
    let retry = may_retry(pool, events, session, ctx, RetryCause::ServerError);
    if retry {
        ctx.last_attempt_failure = Some(Failure::UpstreamFailed {
            provider: pool.provider_name(provider).to_string(),
        });
        if let Some(m) = events.metrics() {
            m.failover(pool.index, FailoverReason::Status5xx);
        }
    }
    retry
}

/// Whether `e`, raised while exchanging with a provider, is in truth its refusal of the TLS
/// session, and how it showed. A TLS 1.3 client finishes its side of the handshake before the
/// server has checked its certificate, so a provider refusing payedge's client certificate is
/// seen after the connect: as its alert on the first read, or, when its reset arrives first, as
/// a failed write of the request on the new connection. Either way the provider never accepted
/// the connection: this is a connect failure, and the request may go to another provider, a
/// POST included. The failed write counts only when not one byte of the request's body was
/// written: the provider then cannot hold a complete request. A write that failed later (a
/// chunked body's last chunk, say) is an exchange that broke: the outcome is unknown.
///
/// `fresh_tls`: the attempt's connection is a new one to a TLS provider; `answered`: a response
/// header arrived; `body_bytes_sent`: what Pingora wrote of the body (`None`: not tracked).
pub fn refused_tls_session(
    e: &Error,
    fresh_tls: bool,
    answered: bool,
    body_bytes_sent: Option<usize>,
) -> Option<UpstreamTlsFailure> {
    if e.esource() != &ErrorSource::Upstream || !fresh_tls || answered {
        return None;
    }
    match upstream_tls_failure(e) {
        Some(UpstreamTlsFailure::ClientCertificateRefused) => {
            Some(UpstreamTlsFailure::ClientCertificateRefused)
        }
        _ if e.etype() == &ErrorType::WriteError && body_bytes_sent == Some(0) => {
            Some(UpstreamTlsFailure::ClosedAfterHandshake)
        }
        _ => None,
    }
}

/// The exchange failed after the connection was made. Returns whether to try another provider.
pub fn broke(
    pool: &PoolRuntime,
    events: &ProviderEvents,
    session: &Session,
    ctx: &mut RequestCtx,
    e: &Error,
) -> bool {
    let Some(provider) = ctx.provider else {
        return false;
    };
    if e.esource() != &ErrorSource::Upstream {
        return false;
    }
    let timed_out = matches!(
        e.etype(),
        ErrorType::ReadTimedout | ErrorType::WriteTimedout
    );
    if !ctx.attempt_recorded {
        let outcome = if timed_out {
            Outcome::TimedOut
        } else {
            Outcome::Broken
        };
        record(pool, events, ctx, provider, outcome, None);
    }
    ctx.last_attempt_failure = upstream_errors::classify(e, Some(pool.provider_name(provider)));
    if super::final_response(session).is_some() {
        return false;
    }
    let cause = if timed_out {
        RetryCause::TimedOut
    } else {
        RetryCause::Broken
    };
    let retry = may_retry(pool, events, session, ctx, cause);
    if retry && let Some(m) = events.metrics() {
        let reason = if timed_out {
            FailoverReason::Timeout
        } else {
            FailoverReason::Broken
        };
        m.failover(pool.index, reason);
    }
    retry
}

fn may_retry(
    pool: &PoolRuntime,
    events: &ProviderEvents,
    session: &Session,
    ctx: &RequestCtx,
    cause: RetryCause,
) -> bool {
    if !untried_left(pool, ctx) || remaining(pool, ctx).is_zero() {
        return false;
    }
    // A request holding an idempotency key is never resent once it reached a provider, whatever
    // its method: a PUT is idempotent at one provider, not across two. (A connection that
    // failed, which reached no one, still fails over: that is not decided here.)
    let resendable = pool
        .settings
        .retry_methods
        .contains(&session.req_header().method)
        && !session.as_ref().retry_buffer_truncated()
        && ctx.idempotency.is_none();
    match pool.pool.may_retry(cause, resendable, ctx.attempts) {
        RetryVerdict::Retry => true,
        RetryVerdict::BudgetExhausted => {
            if let Some(m) = events.metrics() {
                m.retry_budget_exhausted(pool.index);
            }
            false
        }
        RetryVerdict::NotIdempotent | RetryVerdict::AttemptsExhausted => false,
    }
}

fn record(
    pool: &PoolRuntime,
    events: &ProviderEvents,
    ctx: &mut RequestCtx,
    provider: usize,
    outcome: Outcome,
    status: Option<u16>,
) {
    ctx.attempt_recorded = true;
    let now = Instant::now();
    let latency = ctx.attempt_started.map_or(Duration::ZERO, |s| now - s);
    if let Some(m) = events.metrics() {
        m.observe_upstream(pool.index, provider, status);
        if status.is_some() {
            m.observe_upstream_duration(pool.index, provider, latency);
        }
    }
    if let Some(transition) = pool.pool.record(provider, outcome, latency, now) {
        events.report(pool, provider, transition);
    }
}

/// Whether a provider that could take this request is up and was not tried yet.
fn untried_left(pool: &PoolRuntime, ctx: &RequestCtx) -> bool {
    pool.pool.live_mask() & ctx.candidates & !ctx.tried.bits() != 0
}

fn remaining(pool: &PoolRuntime, ctx: &RequestCtx) -> Duration {
    pool.settings
        .timeouts
        .total
        .saturating_sub(ctx.started.elapsed())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_error() -> Box<Error> {
        Error::new(ErrorType::WriteError).into_up()
    }

    #[test]
    fn only_a_write_that_sent_no_body_byte_is_a_refused_session() {
        let refused = Some(UpstreamTlsFailure::ClosedAfterHandshake);
        assert_eq!(
            refused_tls_session(&write_error(), true, false, Some(0)),
            refused
        );
        // Part of the body went out: the provider may hold the request; outcome unknown.
        assert_eq!(
            refused_tls_session(&write_error(), true, false, Some(1)),
            None
        );
        // Not tracked (HTTP/2 upstream): unknown too.
        assert_eq!(refused_tls_session(&write_error(), true, false, None), None);
        // A reused or plain connection, or an answer already seen: never.
        assert_eq!(
            refused_tls_session(&write_error(), false, false, Some(0)),
            None
        );
        assert_eq!(
            refused_tls_session(&write_error(), true, true, Some(0)),
            None
        );
        // A read error is not a write that failed early.
        let read = Error::new(ErrorType::ReadError).into_up();
        assert_eq!(refused_tls_session(&read, true, false, Some(0)), None);
        // The provider's alert refusing the certificate is one, whatever was written.
        let mut alert = Error::explain(
            ErrorType::ReadError,
            "while reading: received fatal alert: CertificateRequired",
        );
        alert.as_up();
        assert_eq!(
            refused_tls_session(&alert, true, false, Some(10)),
            Some(UpstreamTlsFailure::ClientCertificateRefused)
        );
    }
}
