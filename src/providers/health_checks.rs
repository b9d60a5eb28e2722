//! Active health checks, the probes that re-admit ejected providers, and the resolution of
//! host-named providers (`resolver`), in one background service:
//! never on the request path.
//!
//! With `health_check` configured, every provider gets `GET path` every `interval_ms` plus up to
//! `jitter_ms`; a 2xx within `timeout_ms` is a success. Without it, only ejected providers whose
//! ejection is over are probed, with a TCP connect. Each pool's effective weights are refreshed
//! every second from the latest success rates and latencies.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::lb::Backend;
use pingora::lb::health_check::{HealthCheck, HttpHealthCheck};
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use pingora::{Error, ErrorType};

use super::{PoolRuntime, Pools, ProviderEvents};
use crate::config::HealthCheckSettings;
use crate::runtime::Runtime;

/// How often ejected providers are probed when the pool has no active checks.
const PROBE_INTERVAL: Duration = Duration::from_millis(500);
/// How long such a connect probe may take.
const PROBE_TIMEOUT: Duration = Duration::from_millis(500);
const REFRESH_INTERVAL: Duration = Duration::from_secs(1);

pub struct HealthChecks {
    pub runtime: Arc<Runtime>,
}

#[async_trait]
impl BackgroundService for HealthChecks {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut reloads = self.runtime.subscribe();
        loop {
            // The current snapshot's pools. A reload hands over new pools (sharing the kept
            // providers' state): the checks start again on those.
            let snapshot = self.runtime.current();
            let pools = Arc::clone(&snapshot.pools);
            let events = Arc::clone(&snapshot.provider_events);
            let mut tasks = tokio::task::JoinSet::new();
            super::resolver::spawn_resolvers(&pools, &mut tasks, &shutdown);
            for pool in 0..pools.len() {
                let (p, e) = (Arc::clone(&pools), Arc::clone(&events));
                tasks.spawn(refresh_weights(p, e, pool, shutdown.clone()));
                for provider in 0..pools[pool].pool.providers().len() {
                    let (p, e) = (Arc::clone(&pools), Arc::clone(&events));
                    tasks.spawn(check_provider(p, e, pool, provider, shutdown.clone()));
                }
            }
            drop(snapshot);
            tokio::select! {
                _ = shutdown.changed() => {
                    tasks.abort_all();
                    return;
                }
                changed = reloads.changed() => {
                    tasks.abort_all();
                    if changed.is_err() {
                        return;
                    }
                }
            }
        }
    }
}

async fn refresh_weights(
    pools: Pools,
    events: Arc<ProviderEvents>,
    pool: usize,
    mut shutdown: ShutdownWatch,
) {
    let Some(runtime) = pools.get(pool) else {
        return;
    };
    loop {
        runtime.pool.refresh();
        events.publish_health(runtime);
        tokio::select! {
            _ = tokio::time::sleep(REFRESH_INTERVAL) => {}
            _ = shutdown.changed() => return,
        }
    }
}

async fn check_provider(
    pools: Pools,
    events: Arc<ProviderEvents>,
    pool: usize,
    provider: usize,
    mut shutdown: ShutdownWatch,
) {
    let Some(runtime) = pools.get(pool) else {
        return;
    };
    let Some(endpoint) = runtime.endpoint(provider) else {
        return;
    };
    let active = runtime
        .settings
        .health_check
        .as_ref()
        .map(|settings| (http_check(runtime, provider, settings), settings.clone()));
    // The first check comes soon (after a jitter only): this task starts again on every reload,
    // and reloads more frequent than the interval must not starve the checks.
    let mut first = true;
    loop {
        let wait = match &active {
            Some((_, s)) if first => jitter(s.jitter),
            Some((_, s)) => s.interval + jitter(s.jitter),
            None => PROBE_INTERVAL,
        };
        first = false;
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.changed() => return,
        }
        // A name that has not resolved has nothing to check: the resolver keeps it unused.
        let Some(address) = endpoint.addr() else {
            continue;
        };
        let transitions = match &active {
            Some((check, settings)) => {
                let ok = match Backend::new(&address.to_string()) {
                    Ok(backend) => matches!(
                        tokio::time::timeout(settings.timeout, check.check(&backend)).await,
                        Ok(Ok(()))
                    ),
                    Err(_) => false,
                };
                runtime
                    .pool
                    .record_probe(provider, ok, Instant::now(), true)
            }
            None if runtime.pool.awaits_probe(provider, Instant::now()) => {
                let ok = matches!(
                    tokio::time::timeout(PROBE_TIMEOUT, tokio::net::TcpStream::connect(address))
                        .await,
                    Ok(Ok(_))
                );
                runtime
                    .pool
                    .record_probe(provider, ok, Instant::now(), false)
            }
            None => Vec::new(),
        };
        for transition in transitions {
            events.report(runtime, provider, transition);
        }
    }
}

/// A GET of the health path, with the provider's credentials and, for an HTTPS provider, its
/// TLS settings (server name, CA, client certificate): the check proves what requests need.
fn http_check(
    runtime: &PoolRuntime,
    provider: usize,
    settings: &HealthCheckSettings,
) -> HttpHealthCheck {
    let endpoint = runtime.endpoint(provider);
    let host = endpoint.map(|e| e.address.to_string()).unwrap_or_default();
    let mut check = HttpHealthCheck::new(&host, false);
    if let Some(endpoint) = endpoint {
        check.peer_template = endpoint.template().clone();
    }
    if let Ok(mut req) = RequestHeader::build("GET", settings.path.as_bytes(), None) {
        let _ = req.insert_header(http::header::HOST, host.as_str());
        for (name, value) in runtime.credentials(provider) {
            let _ = req.insert_header(name.clone(), value.clone());
        }
        check.req = req;
    }
    check.peer_template.options.connection_timeout = Some(settings.timeout);
    check.peer_template.options.read_timeout = Some(settings.timeout);
    check.peer_template.options.write_timeout = Some(settings.timeout);
    check.validator = Some(Box::new(|resp: &ResponseHeader| {
        if resp.status.is_success() {
            Ok(())
        } else {
            Error::e_explain(
                ErrorType::CustomCode("health check", resp.status.as_u16()),
                "not 2xx",
            )
        }
    }));
    check
}

fn jitter(max: Duration) -> Duration {
    let max_ms = u64::try_from(max.as_millis()).unwrap_or(u64::MAX);
    Duration::from_millis(fastrand::u64(0..=max_ms))
}
