//! The proxy service: Pingora's phases, each delegating to a named decision.
//!
//! ```text
//! new_ctx ─► early_request_filter: request id (client's if well-formed, else new)
//!        ─► request_filter: path form ─► tenant ─► JWT ─► tenant match ─► route
//!           (refusals answered here as JSON errors)
//!        ─► upstream_peer: attempts::choose ─► the next provider by effective weight among the
//!           healthy, admitted, untried ones taking the tenant and currency
//!           fail_to_connect: nothing was sent ─► another provider
//!        ─► upstream_request_filter: canonical tenant, request id, identity, credentials
//!        ─► upstream_response_filter: outcome recorded; a 5xx to an idempotent request may be
//!           discarded and retried elsewhere
//!        ─► response_filter: credentials stripped, request id returned; a response a trigger
//!           matches starts a capped copy of its body
//!        ─► response_body_filter: the copy grows until the end of the body, where it becomes
//!           events (before the last bytes are written: one client's events keep its order)
//!        ─► error_while_proxy: outcome recorded; retried only if idempotent
//!        ─► fail_to_proxy: JSON error naming the provider
//!        ─► logging: one JSON line, metrics
//! ```

mod access_log;
mod admission;
mod attempts;
mod cache;
mod cache_eviction;
mod cache_storage;
mod capture;
mod context;
mod headers;
mod idempotency;
mod routing;
mod upstream_errors;

pub(crate) use idempotency::expects_continue;

use std::sync::Arc;

use async_trait::async_trait;
use payedge_filters::request_head::HeadRefusal;
use payedge_filters::request_id::accept_client_request_id;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::HttpPeer;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::{Error, ErrorType, Result};
use pingora_cache::{
    CacheKey, CacheMeta, ForcedFreshness, HitHandler, NoCacheReason, RespCacheable,
};

pub use admission::Admission;
pub use cache::init as init_cache;
pub use context::RequestCtx;
pub use routing::Routing;

use crate::events::{EventSink, mask_indices};
use crate::failure::{Failure, REQUEST_ID_HEADER};
use crate::idempotency::IdempotencyStore;
use crate::lifecycle::Lifecycle;
use crate::metrics::{CacheResult, IdempotencyResult, RequestLabels};
use crate::providers::PoolRuntime;
use crate::runtime::Runtime;
use crate::tls::{ConnectionFacts, TlsEndpoint, TlsMetrics, UpstreamTlsFailure};
use admission::Refused;
use headers::UpstreamIdentity;
use payedge_filters::forwarded::{Forwarding, forwarding};

/// The proxy. Everything a configuration decides is read from the request's snapshot
/// (`ctx.snap`), taken when the request arrives and kept to its end, so a reload never changes
/// a request half-way.
pub struct Gateway {
    runtime: Arc<Runtime>,
    lifecycle: &'static Lifecycle,
    sink: EventSink,
    tls_metrics: Option<Arc<TlsMetrics>>,
    /// The proxy's TLS listener: whose client CA set a connection's certificate must still match.
    tls: Option<Arc<TlsEndpoint>>,
    /// Where idempotency keys are kept (restart-only: `idempotency`).
    idempotency: Arc<IdempotencyStore>,
}

impl Gateway {
    pub fn new(
        runtime: Arc<Runtime>,
        lifecycle: &'static Lifecycle,
        sink: EventSink,
        tls_metrics: Option<Arc<TlsMetrics>>,
        tls: Option<Arc<TlsEndpoint>>,
        idempotency: Arc<IdempotencyStore>,
    ) -> Self {
        Self {
            runtime,
            lifecycle,
            sink,
            tls_metrics,
            tls,
            idempotency,
        }
    }

    /// Starts a copy of the body when a trigger matches this response.
    fn maybe_capture(&self, resp: &ResponseHeader, ctx: &mut RequestCtx) {
        if ctx.trigger_candidates == 0 {
            return;
        }
        let heads = capture::CaptureHeaders::of(&resp.headers);
        let status = resp.status.as_u16();
        let content_type = heads.content_type;
        let mut matching = 0u64;
        let mut limit = 0;
        for i in mask_indices(ctx.trigger_candidates) {
            if let Some(t) = ctx.snap.triggers.get(i)
                && t.rule.matches_response(status, content_type)
            {
                matching |= 1 << i;
                limit = limit.max(t.rule.max_body_bytes());
            }
        }
        if matching == 0 {
            return;
        }
        let encoding = heads
            .content_encoding
            .and_then(|v| std::str::from_utf8(v).ok())
            .map(str::to_owned);
        let length = heads
            .content_length
            .and_then(|v| std::str::from_utf8(v).ok())
            .and_then(|v| v.trim().parse().ok());
        ctx.capture = Some(capture::Capture::start(matching, limit, encoding, length));
    }

    fn provider_name<'a>(&self, ctx: &'a RequestCtx) -> Option<&'a str> {
        Some(pool_of(ctx)?.provider_name(ctx.provider?))
    }

    async fn answer(
        &self,
        session: &mut Session,
        ctx: &RequestCtx,
        failure: &Failure,
    ) -> Result<()> {
        let body = failure.body(&ctx.request_id);
        let header = failure.response_header(&ctx.request_id, body.len())?;
        // A HEAD is told the length it would have had, never sent the body: Pingora leaves
        // the body out over HTTP/1, but over HTTP/2 it would go out as DATA, which clients
        // refuse (the stream reset with a protocol error, the answer lost).
        let head_only = session.req_header().method == http::Method::HEAD;
        session
            .write_response_header(Box::new(header), head_only)
            .await?;
        if !head_only {
            session.write_response_body(Some(body), true).await?;
        }
        Ok(())
    }

    fn refused(&self, ctx: &mut RequestCtx, refused: Refused) -> Failure {
        if let Some(metrics) = &ctx.snap.metrics {
            match &refused.failure {
                Failure::Tenant(r) => metrics.tenant_rejection(*r),
                Failure::MisdirectedRequest => metrics.misdirected(),
                Failure::TenantMismatch => metrics.cross_tenant(),
                Failure::Unauthorized(f) => metrics.auth_failure(*f),
                _ => {}
            }
        }
        ctx.tenant = refused.tenant;
        ctx.route = refused.route;
        ctx.failure = Some(refused.failure.clone());
        refused.failure
    }
}

#[async_trait]
impl ProxyHttp for Gateway {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx::new(self.lifecycle.request_started(), self.runtime.current())
    }

    async fn early_request_filter(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if self.lifecycle.is_draining() {
            // Stopping (or handing over to a new process): this response closes the connection,
            // so the client's next request goes to a listener that will serve it.
            session.set_keepalive(None);
        }
        ctx.request_id = session
            .req_header()
            .headers
            .get(REQUEST_ID_HEADER)
            .and_then(|v| accept_client_request_id(v.as_bytes()))
            .map_or_else(new_request_id, str::to_owned);
        Ok(())
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        // Who sent it, first: refusals' log lines name the client too.
        ctx.forwarding = session.client_addr().and_then(|a| a.as_inet()).map(|peer| {
            let claimed: Vec<&[u8]> = session
                .req_header()
                .headers
                .get_all(headers::X_FORWARDED_FOR)
                .iter()
                .map(|v| v.as_bytes())
                .collect();
            forwarding(peer.ip(), &ctx.snap.routing.trusted_proxies, &claimed)
        });
        if let Err(refused) = admission::check_head(session, &ctx.snap) {
            // Whatever follows this head on the connection cannot be trusted to be a request.
            session.set_keepalive(None);
            let failure = Failure::Head(refused);
            ctx.failure = Some(failure.clone());
            self.answer(session, ctx, &failure).await?;
            return Ok(true);
        }
        ctx.https = session.digest().is_some_and(|d| d.ssl_digest.is_some());
        let facts = ConnectionFacts::of(session.digest());
        // Also on a refusal for a stale certificate: the log line says whose it was.
        ctx.client_subject = facts.and_then(|f| f.client_subject.clone());
        if let (Some(facts), Some(tls)) = (facts, &self.tls)
            && tls.is_stale(facts)
        {
            session.set_keepalive(None);
            let failure = Failure::StaleClientCertificate;
            ctx.failure = Some(failure.clone());
            self.answer(session, ctx, &failure).await?;
            return Ok(true);
        }
        let server_name = facts.and_then(|f| f.server_name.as_deref());
        let snap = Arc::clone(&ctx.snap);
        match snap
            .routing
            .admission
            .admit(session.req_header(), server_name)
        {
            Ok(admitted) => {
                if !snap.triggers.is_empty() {
                    let req = session.req_header();
                    let (method, path) = (req.method.as_str(), req.uri.path());
                    ctx.trigger_candidates = snap
                        .triggers
                        .iter()
                        .enumerate()
                        .filter(|(_, t)| t.rule.matches_request(method, path))
                        .fold(0, |mask, (i, _)| mask | 1 << i);
                }
                ctx.pool = snap.routing.route_pools.get(admitted.route).copied();
                ctx.route = Some(admitted.route);
                ctx.tenant = Some(admitted.tenant);
                ctx.principal = admitted.principal;
                match idempotency::begin(&self.idempotency, session, ctx).await {
                    idempotency::Begin::Proceed => Ok(false),
                    idempotency::Begin::Refuse(failure) => {
                        ctx.failure = Some(failure.clone());
                        self.answer(session, ctx, &failure).await?;
                        Ok(true)
                    }
                    idempotency::Begin::Replay(stored) => {
                        Box::pin(idempotency::replay(session, ctx, stored)).await?;
                        Ok(true)
                    }
                }
            }
            Err(refused) => {
                let failure = self.refused(ctx, refused);
                self.answer(session, ctx, &failure).await?;
                Ok(true)
            }
        }
    }

    fn request_cache_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<()> {
        let settings = ctx
            .route
            .and_then(|r| ctx.snap.config.routes.get(r))
            .and_then(|r| r.cache);
        if let Some(settings) = settings
            && ctx.failure.is_none()
            && ctx.tenant.is_some()
            && settings.caches(&session.req_header().method)
            && !cache::carries_unchecked_credentials(session.req_header(), ctx.principal.is_some())
        {
            ctx.cache = Some(settings);
            cache::enable(&mut session.cache);
        }
        Ok(())
    }

    fn cache_key_callback(&self, session: &Session, ctx: &mut RequestCtx) -> Result<CacheKey> {
        let tenant = ctx.tenant.as_ref().map_or("", |t| &*t.name);
        let target = session
            .req_header()
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str());
        Ok(cache::key(tenant, ctx.principal.is_some(), target))
    }

    async fn cache_hit_filter(
        &self,
        _session: &mut Session,
        meta: &CacheMeta,
        _hit_handler: &mut HitHandler,
        _is_fresh: bool,
        ctx: &mut RequestCtx,
    ) -> Result<Option<ForcedFreshness>> {
        let tenant = ctx.tenant.as_ref().map_or("", |t| &*t.name);
        if !cache::kept_for(meta, tenant) {
            // Kept for someone else: never served, asked of the provider instead.
            return Ok(Some(ForcedFreshness::ForceMiss));
        }
        ctx.cache_ttl_left = meta
            .fresh_until()
            .duration_since(std::time::SystemTime::now())
            .ok();
        Ok(None)
    }

    fn response_cache_filter(
        &self,
        _session: &Session,
        resp: &ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<RespCacheable> {
        let (Some(settings), Some(tenant)) = (ctx.cache, ctx.tenant.as_ref()) else {
            return Ok(RespCacheable::Uncacheable(NoCacheReason::Custom("off")));
        };
        let names = match (pool_of(ctx), ctx.provider) {
            (Some(pool), Some(provider)) => pool.credential_names(provider),
            _ => &[],
        };
        let decision = cache::cacheable(resp, &tenant.name, &settings, names);
        ctx.cache_stored = matches!(decision, RespCacheable::Cacheable(_));
        Ok(decision)
    }

    async fn upstream_peer(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        let snap = Arc::clone(&ctx.snap);
        let Some(pool) = ctx.pool.and_then(|p| snap.pools.get(p)) else {
            return Error::e_explain(ErrorType::InternalError, "no pool was chosen");
        };
        match attempts::choose(pool, session, ctx) {
            Ok(peer) => Ok(Box::new(peer)),
            Err(failure) => {
                let status = failure.status();
                ctx.failure = Some(failure);
                Error::e_explain(ErrorType::HTTPStatus(status), "no attempt can be made")
            }
        }
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut RequestCtx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        let snap = Arc::clone(&ctx.snap);
        let retry = match ctx.pool.and_then(|p| snap.pools.get(p)) {
            Some(pool) => attempts::connect_failed(
                pool,
                &snap.provider_events,
                self.tls_metrics.as_deref(),
                ctx,
                crate::tls::upstream_tls_failure(&e),
            ),
            None => false,
        };
        e.set_retry(retry);
        e
    }

    async fn upstream_request_filter(
        &self,
        _session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if let Some(provider) = ctx.provider {
            idempotency::reaching(ctx, provider);
        }
        if ctx.idempotency.is_some() {
            // The body is already here (read for its digest, the client told to go on): the
            // provider is not asked whether it wants it.
            upstream_request.remove_header(&http::header::EXPECT);
        }
        // An HTTP/1.0 client may send no Host; Pingora makes the provider's request HTTP/1.1,
        // which must carry one (RFC 9112 §3.2): the provider's own authority, as configured.
        if !upstream_request.headers.contains_key(http::header::HOST)
            && let (Some(pool), Some(provider)) = (pool_of(ctx), ctx.provider)
            && let Some(endpoint) = pool.endpoint(provider)
        {
            upstream_request.insert_header(http::header::HOST, endpoint.address.to_string())?;
        }
        let credentials = match (pool_of(ctx), ctx.provider) {
            (Some(pool), Some(provider)) => pool.credentials(provider),
            _ => &[],
        };
        let tenant = ctx.tenant.as_ref().map_or("", |t| &t.name);
        let routing = &ctx.snap.routing;
        headers::prepare_upstream_request(
            upstream_request,
            &UpstreamIdentity {
                tenant_header: &routing.tenant_header,
                tenant_header_wire: &routing.tenant_header_wire,
                tenant,
                request_id: &ctx.request_id,
                principal: ctx.principal.as_ref(),
                terminates_auth: routing.terminates_auth,
                forwarding: ctx.forwarding.as_ref(),
                client_subject: ctx.client_subject.as_deref(),
                https: ctx.https,
                credentials,
            },
        )
    }

    async fn upstream_response_filter(
        &self,
        session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let status = upstream_response.status.as_u16();
        if status < 200 {
            return Ok(());
        }
        let snap = Arc::clone(&ctx.snap);
        let retry = match ctx.pool.and_then(|p| snap.pools.get(p)) {
            Some(pool) => attempts::answered(pool, &snap.provider_events, session, ctx, status),
            None => false,
        };
        if retry {
            ctx.retrying_after_status = true;
            return Error::e_explain(
                ErrorType::HTTPStatus(status),
                "retrying on another provider",
            );
        }
        Ok(())
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        self.maybe_capture(upstream_response, ctx);
        let names = match (pool_of(ctx), ctx.provider) {
            (Some(pool), Some(provider)) => pool.credential_names(provider),
            _ => &[],
        };
        headers::prepare_downstream_response(upstream_response, &ctx.request_id, names)?;
        if ctx.cache.is_some() {
            upstream_response.remove_header(&cache::CACHED_FOR);
            let hit = session.cache.phase() == pingora_cache::CachePhase::Hit;
            let status = cache::status(hit, ctx.cache_ttl_left, ctx.cache_stored);
            upstream_response.insert_header(cache::CACHE_STATUS, status)?;
        }
        idempotency::respond(ctx, upstream_response);
        Ok(())
    }

    async fn request_body_filter(
        &self,
        session: &mut Session,
        _body: &mut Option<bytes::Bytes>,
        _end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        // A body that states its length was checked with its head; chunks are counted here as
        // they arrive (an upgraded connection's bytes are no body). Beyond the limit: 413, and
        // the connection closed, since the rest of the body is never read.
        let limit = ctx.snap.config.server.limits.max_body_bytes;
        if session.body_bytes_read() as u64 > limit && !session.was_upgraded() {
            session.set_keepalive(None);
            ctx.failure = Some(Failure::Head(HeadRefusal::BodyTooLarge));
            return Err(Error::explain(
                ErrorType::Custom("request body too large"),
                "the request body passed server.limits.max_body_bytes",
            )
            .into_down());
        }
        Ok(())
    }

    fn response_body_filter(
        &self,
        session: &mut Session,
        body: &mut Option<bytes::Bytes>,
        end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<Option<std::time::Duration>> {
        if session.req_header().method == http::Method::HEAD {
            // A HEAD answer has no body. Pingora leaves it out over HTTP/1 only: over HTTP/2 a
            // cache miss (fetched with GET to fill the cache; kept before this filter) sent the
            // body as DATA and the client reset the stream.
            *body = None;
        }
        idempotency::body(ctx, body.as_ref(), end_of_stream);
        if let Some(capture) = ctx.capture.as_mut() {
            if let Some(chunk) = body.as_ref() {
                capture.push(chunk);
            }
            if end_of_stream
                && let (Some(capture), Some(tenant)) = (ctx.capture.take(), ctx.tenant.as_ref())
            {
                let hit = capture.finish(
                    Arc::clone(&tenant.name),
                    &ctx.request_id,
                    self.provider_name(ctx),
                    ctx.idempotency_digest.as_deref(),
                );
                // Before the body's last bytes are written: a client that sends its next
                // request once it has this answer finds this answer's events already
                // published, so one client's events are in the order of its answers.
                self.sink.process(&hit, &ctx.snap.triggers);
            }
        }
        Ok(None)
    }

    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut RequestCtx,
        client_reused: bool,
    ) -> Box<Error> {
        let mut e = e.more_context(format!(
            "provider {}",
            self.provider_name(ctx).unwrap_or("?")
        ));
        if std::mem::take(&mut ctx.retrying_after_status) {
            e.set_retry(true);
            return e;
        }
        let snap = Arc::clone(&ctx.snap);
        let fresh_tls = peer.is_tls() && !client_reused;
        let body_sent = session.upstream_body_bytes_sent();
        if let Some(refusal) =
            attempts::refused_tls_session(&e, fresh_tls, ctx.attempt_recorded, body_sent)
        {
            if let Some(provider) = ctx.provider {
                idempotency::not_reached(ctx, provider);
            }
            let retry = match ctx.pool.and_then(|p| snap.pools.get(p)) {
                Some(pool) => attempts::connect_failed(
                    pool,
                    &snap.provider_events,
                    self.tls_metrics.as_deref(),
                    ctx,
                    Some(refusal),
                ),
                None => false,
            };
            // The request's body must still be whole to be sent elsewhere.
            e.set_retry(retry && !session.as_ref().retry_buffer_truncated());
            return e;
        }
        let retry = match ctx.pool.and_then(|p| snap.pools.get(p)) {
            Some(pool) => attempts::broke(pool, &snap.provider_events, session, ctx, &e),
            None => false,
        };
        e.set_retry(retry);
        e
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        if let Some(written) = final_response(session) {
            return FailToProxy {
                error_code: written.status.as_u16(),
                can_reuse_downstream: false,
            };
        }
        let failure = ctx
            .failure
            .clone()
            .or_else(|| ctx.last_attempt_failure.clone())
            .or_else(|| upstream_errors::classify(e, self.provider_name(ctx)));
        let Some(failure) = failure else {
            return FailToProxy {
                error_code: 0,
                can_reuse_downstream: false,
            };
        };
        let answered = self.answer(session, ctx, &failure).await.is_ok();
        let status = failure.status();
        ctx.failure = Some(failure);
        FailToProxy {
            error_code: status,
            can_reuse_downstream: answered,
        }
    }

    async fn logging(&self, session: &mut Session, _e: Option<&Error>, ctx: &mut RequestCtx) {
        if ctx.idempotency.is_some() {
            let snap = Arc::clone(&ctx.snap);
            let names: Vec<&str> = ctx
                .pool
                .and_then(|p| snap.pools.get(p))
                .map(|pool| {
                    (0..pool.settings.providers.len())
                        .map(|i| pool.provider_name(i))
                        .collect()
                })
                .unwrap_or_default();
            let in_flight = self.lifecycle.request_started();
            if let Some(own) = idempotency::settle(&self.idempotency, ctx, &names, in_flight) {
                // Boxed, as in request_filter: only these requests carry the store's futures.
                Box::pin(self.idempotency.settle_now(own)).await;
            }
        }
        let status = final_response(session).map(|r| r.status.as_u16());
        let elapsed = ctx.started.elapsed();
        let cached = cache_result(session, ctx);
        if let Some(metrics) = &ctx.snap.metrics {
            metrics.observe_request(
                RequestLabels {
                    tenant: ctx.tenant.as_ref().map(|t| t.index),
                    route: ctx.route,
                    status,
                },
                elapsed,
            );
            if let Some(failure) = &ctx.failure {
                metrics.error(failure.code());
            }
            if let (Some(route), Some(result)) = (ctx.route, cached) {
                metrics.cache(route, result);
            }
        }
        if !ctx.snap.routing.request_logs {
            return;
        }
        let req = session.req_header();
        let client = ctx.forwarding.as_ref().map(Forwarding::client_text);
        access_log::write(&access_log::AccessEntry {
            tenant: ctx.tenant.as_ref().map(|t| &*t.name),
            method: req.method.as_str(),
            route: ctx
                .route
                .and_then(|r| ctx.snap.routing.route_prefixes.get(r))
                .map(String::as_str),
            path: req.uri.path(),
            status,
            duration: elapsed,
            pool: pool_of(ctx).map(PoolRuntime::name),
            provider: self.provider_name(ctx),
            attempts: ctx.attempts,
            request_id: &ctx.request_id,
            bytes_in: session.body_bytes_read(),
            bytes_out: session.body_bytes_sent(),
            error_code: ctx.failure.as_ref().map(Failure::code),
            client: client.as_deref(),
            client_cert_subject: ctx.client_subject.as_deref(),
            upstream_tls_failure: ctx.upstream_tls_failure.map(UpstreamTlsFailure::label),
            idempotency_key: ctx.idempotency_digest.as_deref(),
            idempotency: ctx.idempotency_result.map(IdempotencyResult::label),
            cache: cached.map(CacheResult::label),
        });
    }

    fn request_summary(&self, session: &Session, ctx: &RequestCtx) -> String {
        format!(
            "{} {} request_id={}",
            session.req_header().method,
            session.req_header().uri.path(),
            ctx.request_id
        )
    }

    fn suppress_error_log(&self, _session: &Session, ctx: &RequestCtx, _error: &Error) -> bool {
        // Failures the gateway classified are in the request log line with their code.
        ctx.failure.is_some()
    }
}

/// What the cache did for this request (`None`: its route has no cache, or it was refused
/// before the cache was asked).
fn cache_result(session: &Session, ctx: &RequestCtx) -> Option<CacheResult> {
    ctx.cache?;
    Some(match session.cache.phase() {
        pingora_cache::CachePhase::Hit => CacheResult::Hit,
        _ if ctx.cache_stored => CacheResult::Miss,
        _ => CacheResult::Uncacheable,
    })
}

/// The response the client has been sent the head of, not counting an interim one (`100
/// Continue`, `103 Early Hints`): after those the request can still be failed over or answered
/// with an error. `101 Switching Protocols` ends HTTP on the connection and counts.
pub(crate) fn final_response(session: &Session) -> Option<&pingora::http::ResponseHeader> {
    session.response_written().filter(|r| {
        !r.status.is_informational() || r.status == http::StatusCode::SWITCHING_PROTOCOLS
    })
}

/// A new request id: a UUIDv7 (unique and time-ordered to the millisecond; without uuid's
/// process-wide counter, which orders ids within one millisecond at the cost of a shared
/// atomic on every request), encoded without going through `fmt`.
fn new_request_id() -> String {
    crate::events::timestamp::uuid_v7(std::time::SystemTime::now())
}

/// The pool of the request's route, in its snapshot.
fn pool_of(ctx: &RequestCtx) -> Option<&PoolRuntime> {
    ctx.snap.pools.get(ctx.pool?)
}
