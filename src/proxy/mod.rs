//! The proxy service: Pingora's phases, each delegating to a named decision.
//!
//! ```text
//! new_ctx ─► early_request_filter: request id (client's if well-formed, else new)
//!        ─► request_filter: path form ─► tenant ─► JWT ─► tenant match ─► route
//!           (refusals answered here as JSON errors)
//!        ─► upstream_peer: pool.select(tenant, tried) ─► provider's peer
//!           fail_to_connect: nothing was sent ─► retry on a provider not yet tried
//!        ─► upstream_request_filter: canonical tenant, request id, identity, credentials
//!        ─► upstream_response_filter / response_filter: status noted, credentials stripped,
//!           request id returned
//!        ─► fail_to_proxy: JSON error naming the provider
//!        ─► logging: one JSON line, metrics
//! ```

mod access_log;
mod admission;
mod context;
mod headers;
mod upstream_errors;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use http::{HeaderName, HeaderValue};
use payedge_filters::request_id::accept_client_request_id;
use payedge_upstreams::{Pool, ProviderSpec, SelectError, Selection};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::HttpPeer;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::{Error, ErrorType, Result};

pub use context::RequestCtx;

use crate::config::{Config, PoolSettings};
use crate::failure::{Failure, REQUEST_ID_HEADER};
use crate::lifecycle::Lifecycle;
use crate::metrics::{Metrics, RequestLabels};
use admission::{Admission, Refused};
use headers::UpstreamIdentity;

/// How long an idle upstream connection is kept for reuse.
const UPSTREAM_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

struct PoolRuntime {
    pool: Pool,
    peers: Vec<HttpPeer>,
    credentials: Vec<Vec<(HeaderName, HeaderValue)>>,
    credential_names: Vec<Vec<HeaderName>>,
}

impl PoolRuntime {
    fn new(settings: &PoolSettings) -> std::result::Result<Self, payedge_upstreams::PoolError> {
        let specs = settings
            .providers
            .iter()
            .map(|p| ProviderSpec {
                name: p.name.clone(),
                address: p.address,
                weight: p.weight,
            })
            .collect();
        let peers = settings
            .providers
            .iter()
            .map(|p| {
                let mut peer = HttpPeer::new(p.address, false, String::new());
                peer.options.connection_timeout = Some(settings.timeouts.connect);
                peer.options.total_connection_timeout = Some(settings.timeouts.connect);
                peer.options.read_timeout = Some(settings.timeouts.read);
                peer.options.write_timeout = Some(settings.timeouts.write);
                peer.options.idle_timeout = Some(UPSTREAM_IDLE_TIMEOUT);
                peer
            })
            .collect();
        Ok(Self {
            pool: Pool::new(settings.name.clone(), specs)?,
            peers,
            credentials: settings
                .providers
                .iter()
                .map(|p| p.headers.clone())
                .collect(),
            credential_names: settings
                .providers
                .iter()
                .map(|p| p.headers.iter().map(|(n, _)| n.clone()).collect())
                .collect(),
        })
    }
}

pub struct Gateway {
    admission: Admission,
    tenant_header: HeaderName,
    terminates_auth: bool,
    route_prefixes: Vec<String>,
    route_pools: Vec<usize>,
    pools: Vec<PoolRuntime>,
    metrics: Option<Arc<Metrics>>,
    request_logs: bool,
    lifecycle: &'static Lifecycle,
}

impl Gateway {
    pub fn new(
        config: &Config,
        metrics: Option<Arc<Metrics>>,
        lifecycle: &'static Lifecycle,
    ) -> std::result::Result<Self, payedge_upstreams::PoolError> {
        Ok(Self {
            admission: Admission::new(config),
            tenant_header: config.tenant_header.clone(),
            terminates_auth: config.auth.is_some(),
            route_prefixes: config
                .routes
                .iter()
                .map(|r| r.path_prefix.clone())
                .collect(),
            route_pools: config.routes.iter().map(|r| r.pool).collect(),
            pools: config
                .pools
                .iter()
                .map(PoolRuntime::new)
                .collect::<std::result::Result<_, _>>()?,
            metrics,
            request_logs: config.analytics.request_logs_enabled(),
            lifecycle,
        })
    }

    /// The tenants the gateway knows, in the order metrics index them.
    pub fn tenants(&self) -> &[Arc<str>] {
        self.admission.tenants.tenants()
    }

    fn provider_name(&self, ctx: &RequestCtx) -> Option<&str> {
        let pool = self.pools.get(ctx.pool?)?;
        Some(pool.pool.provider(ctx.provider?)?.name.as_str())
    }

    async fn answer(
        &self,
        session: &mut Session,
        ctx: &RequestCtx,
        failure: &Failure,
    ) -> Result<()> {
        let body = failure.body(&ctx.request_id);
        let header = failure.response_header(&ctx.request_id, body.len())?;
        session
            .write_response_header(Box::new(header), false)
            .await?;
        session.write_response_body(Some(body), true).await?;
        Ok(())
    }

    fn refused(&self, ctx: &mut RequestCtx, refused: Refused) -> Failure {
        if let Some(metrics) = &self.metrics {
            match &refused.failure {
                Failure::Tenant(r) => metrics.tenant_rejection(*r),
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
        RequestCtx::new(self.lifecycle.request_started())
    }

    async fn early_request_filter(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        ctx.request_id = session
            .req_header()
            .headers
            .get(REQUEST_ID_HEADER)
            .and_then(|v| accept_client_request_id(v.as_bytes()))
            .map_or_else(|| uuid::Uuid::now_v7().to_string(), str::to_owned);
        Ok(())
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        match self.admission.admit(session.req_header()) {
            Ok(admitted) => {
                ctx.pool = self.route_pools.get(admitted.route).copied();
                ctx.route = Some(admitted.route);
                ctx.tenant = Some(admitted.tenant);
                ctx.principal = admitted.principal;
                Ok(false)
            }
            Err(refused) => {
                let failure = self.refused(ctx, refused);
                self.answer(session, ctx, &failure).await?;
                Ok(true)
            }
        }
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        let (Some(pool_index), Some(tenant)) = (ctx.pool, ctx.tenant.as_ref()) else {
            return Error::e_explain(ErrorType::InternalError, "no route was chosen");
        };
        let Some(pool) = self.pools.get(pool_index) else {
            return Error::e_explain(ErrorType::InternalError, "route names a missing pool");
        };
        let selection = Selection {
            tenant: &tenant.name,
            currency: None,
            tried: ctx.tried,
        };
        match pool.pool.select(&selection) {
            Ok(provider) => {
                ctx.provider = Some(provider);
                ctx.tried.insert(provider);
                match pool.peers.get(provider) {
                    Some(peer) => Ok(Box::new(peer.clone())),
                    None => Error::e_explain(ErrorType::InternalError, "provider without a peer"),
                }
            }
            Err(SelectError::NoneAvailable) => {
                ctx.failure = Some(Failure::NoProviderAvailable);
                Error::e_explain(ErrorType::HTTPStatus(503), "no provider available")
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
        if let (Some(metrics), Some(pool), Some(provider)) = (&self.metrics, ctx.pool, ctx.provider)
        {
            metrics.observe_upstream(pool, provider, None);
        }
        // Nothing reached the provider, so another one may take the request, whatever its method.
        let untried_left = ctx
            .pool
            .and_then(|p| self.pools.get(p))
            .is_some_and(|p| ctx.tried.len() < p.pool.providers().len());
        e.set_retry(untried_left);
        e
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let credentials = match (ctx.pool, ctx.provider) {
            (Some(pool), Some(provider)) => self
                .pools
                .get(pool)
                .and_then(|p| p.credentials.get(provider))
                .map_or(&[][..], Vec::as_slice),
            _ => &[],
        };
        let tenant = ctx.tenant.as_ref().map_or("", |t| &t.name);
        headers::prepare_upstream_request(
            upstream_request,
            &UpstreamIdentity {
                tenant_header: &self.tenant_header,
                tenant,
                request_id: &ctx.request_id,
                principal: ctx.principal.as_ref(),
                terminates_auth: self.terminates_auth,
                client_ip: session
                    .client_addr()
                    .and_then(|a| a.as_inet())
                    .map(|a| a.ip().to_string()),
                credentials,
            },
        )
    }

    async fn upstream_response_filter(
        &self,
        _session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let status = upstream_response.status.as_u16();
        if status >= 200 {
            ctx.upstream_status = Some(status);
            if let (Some(metrics), Some(pool), Some(provider)) =
                (&self.metrics, ctx.pool, ctx.provider)
            {
                metrics.observe_upstream(pool, provider, Some(status));
            }
        }
        Ok(())
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let names = match (ctx.pool, ctx.provider) {
            (Some(pool), Some(provider)) => self
                .pools
                .get(pool)
                .and_then(|p| p.credential_names.get(provider))
                .map_or(&[][..], Vec::as_slice),
            _ => &[],
        };
        headers::prepare_downstream_response(upstream_response, &ctx.request_id, names)
    }

    fn error_while_proxy(
        &self,
        _peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut RequestCtx,
        client_reused: bool,
    ) -> Box<Error> {
        if ctx.upstream_status.is_none() {
            if let (Some(metrics), Some(pool), Some(provider)) =
                (&self.metrics, ctx.pool, ctx.provider)
            {
                metrics.observe_upstream(pool, provider, None);
            }
        }
        // Bytes may have reached the provider: never resend a non-idempotent request elsewhere.
        let mut e = e.more_context(format!(
            "provider {}",
            self.provider_name(ctx).unwrap_or("?")
        ));
        if !session.req_header().method.is_idempotent() || session.as_ref().retry_buffer_truncated()
        {
            e.set_retry(false);
        } else {
            e.retry.decide_reuse(client_reused);
        }
        e
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        if let Some(written) = session.response_written() {
            return FailToProxy {
                error_code: written.status.as_u16(),
                can_reuse_downstream: false,
            };
        }
        let failure = ctx
            .failure
            .clone()
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
        let status = session.response_written().map(|r| r.status.as_u16());
        let elapsed = ctx.started.elapsed();
        if let Some(metrics) = &self.metrics {
            metrics.observe_request(
                RequestLabels {
                    tenant: ctx.tenant.as_ref().map(|t| t.index),
                    route: ctx.route,
                    status,
                },
                elapsed,
            );
        }
        if !self.request_logs {
            return;
        }
        let req = session.req_header();
        access_log::write(&access_log::AccessEntry {
            tenant: ctx.tenant.as_ref().map(|t| &*t.name),
            method: req.method.as_str(),
            route: ctx
                .route
                .and_then(|r| self.route_prefixes.get(r))
                .map(String::as_str),
            path: req.uri.path(),
            status,
            duration: elapsed,
            pool: ctx
                .pool
                .and_then(|p| self.pools.get(p))
                .map(|p| p.pool.name()),
            provider: self.provider_name(ctx),
            request_id: &ctx.request_id,
            bytes_in: session.body_bytes_read(),
            bytes_out: session.body_bytes_sent(),
            error_code: ctx.failure.as_ref().map(Failure::code),
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
