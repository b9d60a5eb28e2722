//! Host-named providers resolved in the background: at start, then every `dns_refresh_seconds`.
//! Never on the request path. A name that stops resolving keeps its last good addresses (and a
//! warning is logged); one that never resolved is not chosen until it does.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use pingora::server::ShutdownWatch;

use super::{PoolRuntime, Pools};

/// How long one lookup may take before it counts as failed.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);
/// Retry delay for a name that has never resolved.
const UNRESOLVED_RETRY: Duration = Duration::from_secs(1);

/// Starts one task per host-named provider, keeping its addresses resolved (in the health
/// checks' background service: no runtime of its own).
pub fn spawn_resolvers(
    pools: &Pools,
    tasks: &mut tokio::task::JoinSet<()>,
    shutdown: &ShutdownWatch,
) {
    for pool in 0..pools.len() {
        let runtime = &pools[pool];
        for provider in 0..runtime.endpoints().len() {
            if runtime.endpoint(provider).is_some_and(|e| e.is_named()) {
                tasks.spawn(keep_resolved(
                    Arc::clone(pools),
                    pool,
                    provider,
                    shutdown.clone(),
                ));
            }
        }
    }
}

async fn keep_resolved(pools: Pools, pool: usize, provider: usize, mut shutdown: ShutdownWatch) {
    let Some(runtime) = pools.get(pool) else {
        return;
    };
    loop {
        let resolved = resolve_once(runtime, provider).await;
        let wait = if resolved {
            runtime.settings.dns_refresh
        } else {
            UNRESOLVED_RETRY.min(runtime.settings.dns_refresh)
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.changed() => return,
        }
    }
}

/// Looks the provider's name up once; returns whether it has addresses now.
async fn resolve_once(runtime: &PoolRuntime, provider: usize) -> bool {
    let Some(endpoint) = runtime.endpoint(provider) else {
        return false;
    };
    let host = endpoint.address.host.clone();
    let port = endpoint.address.port;
    let lookup = tokio::time::timeout(LOOKUP_TIMEOUT, tokio::net::lookup_host((host, port))).await;
    let found: Result<Vec<SocketAddr>, String> = match lookup {
        Err(_) => Err("the lookup timed out".into()),
        Ok(Err(e)) => Err(e.to_string()),
        Ok(Ok(addrs)) => {
            // Sorted and unique, so an unchanged answer in another order is no change.
            let set: BTreeSet<SocketAddr> = addrs.collect();
            if set.is_empty() {
                Err("no address".into())
            } else {
                Ok(set.into_iter().collect())
            }
        }
    };
    let had = endpoint.addrs();
    match found {
        Ok(addrs) => {
            if *had != addrs {
                tracing::info!(
                    pool = runtime.name(),
                    provider = runtime.provider_name(provider),
                    address = %endpoint.address,
                    resolved = ?addrs,
                    "provider address resolved"
                );
                endpoint.set_addrs(addrs);
            }
            runtime.pool.set_resolved(provider, true);
            true
        }
        Err(error) if had.is_empty() => {
            tracing::warn!(
                pool = runtime.name(),
                provider = runtime.provider_name(provider),
                address = %endpoint.address,
                error,
                "provider host name does not resolve: the provider is not used until it does"
            );
            runtime.pool.set_resolved(provider, false);
            false
        }
        Err(error) => {
            tracing::warn!(
                pool = runtime.name(),
                provider = runtime.provider_name(provider),
                address = %endpoint.address,
                kept = ?had,
                error,
                "provider host name stopped resolving: keeping its last addresses"
            );
            true
        }
    }
}
