//! The provider pools as the gateway runs them: each `upstreams::Pool` with its Pingora peers and
//! credentials, the background health checks, and how provider state changes are reported.

mod endpoint;
mod events;
mod health_checks;
mod resolver;
mod status;

use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, HeaderValue};
use payedge_upstreams::{Pool, PoolError, ProviderSpec};
use pingora::prelude::HttpPeer;

pub use endpoint::Endpoint;
pub use events::ProviderEvents;
pub use health_checks::HealthChecks;
pub use status::providers_json;

use crate::config::PoolSettings;

pub struct PoolRuntime {
    /// Position in the configuration (and in the metrics tables).
    pub index: usize,
    pub pool: Pool,
    pub settings: PoolSettings,
    endpoints: Vec<Endpoint>,
    credential_names: Vec<Vec<HeaderName>>,
}

/// Every pool, shared by the proxy, the health checks and the admin service.
pub type Pools = Arc<Vec<PoolRuntime>>;

impl PoolRuntime {
    pub fn new(index: usize, settings: &PoolSettings) -> Result<Self, PoolError> {
        Self::replacing(index, settings, None)
    }

    /// The pool that takes over from `previous` (a reload of the same pool name): providers kept
    /// with the same name and address keep their state and resolved addresses.
    pub fn replacing(
        index: usize,
        settings: &PoolSettings,
        previous: Option<&PoolRuntime>,
    ) -> Result<Self, PoolError> {
        let specs = settings
            .providers
            .iter()
            .map(|p| ProviderSpec {
                name: p.name.clone(),
                address: p.address.to_string(),
                weight: p.weight,
                cost: p.cost,
                currencies: p.currencies.clone(),
                tenants: p.tenants.clone(),
            })
            .collect();
        let endpoints: Vec<Endpoint> = settings
            .providers
            .iter()
            .enumerate()
            .map(|(i, p)| Endpoint::new(p, &settings.timeouts, group_key(index, i)))
            .collect();
        let pool = Pool::replacing(
            settings.name.clone(),
            specs,
            settings.policy.clone(),
            previous.map(|p| &p.pool),
        )?;
        for (i, endpoint) in endpoints.iter().enumerate() {
            let name = &settings.providers[i].name;
            let kept = previous.and_then(|p| {
                p.endpoints
                    .iter()
                    .enumerate()
                    .find(|(j, old)| p.provider_name(*j) == name && old.address == endpoint.address)
                    .map(|(_, old)| old)
            });
            match kept {
                Some(old) if endpoint.is_named() => {
                    // Kept by address; the pool decided above whether it counts as resolved.
                    endpoint.set_addrs(old.addrs().to_vec());
                }
                None if endpoint.is_named() => pool.set_resolved(i, false),
                _ => {}
            }
        }
        Ok(Self {
            index,
            pool,
            settings: settings.clone(),
            endpoints,
            credential_names: settings
                .providers
                .iter()
                .map(|p| p.headers.iter().map(|(n, _)| n.clone()).collect())
                .collect(),
        })
    }

    pub fn name(&self) -> &str {
        &self.settings.name
    }

    pub fn provider_name(&self, provider: usize) -> &str {
        self.pool
            .provider(provider)
            .map_or("unknown", |p| p.name.as_str())
    }

    pub fn endpoints(&self) -> &[Endpoint] {
        &self.endpoints
    }

    pub fn endpoint(&self, provider: usize) -> Option<&Endpoint> {
        self.endpoints.get(provider)
    }

    /// The peer for one attempt, its timeouts cut to what is left of the request's total time;
    /// `None` when the provider has no address (yet).
    pub fn peer(&self, provider: usize, remaining: Duration) -> Option<HttpPeer> {
        self.endpoints
            .get(provider)?
            .peer(&self.settings.timeouts, remaining)
    }

    pub fn credentials(&self, provider: usize) -> &[(HeaderName, HeaderValue)] {
        self.settings
            .providers
            .get(provider)
            .map_or(&[][..], |p| p.headers.as_slice())
    }

    pub fn credential_names(&self, provider: usize) -> &[HeaderName] {
        self.credential_names
            .get(provider)
            .map_or(&[][..], Vec::as_slice)
    }
}

/// Connections to one provider are never handed to another (pool and provider index).
fn group_key(pool: usize, provider: usize) -> u64 {
    ((pool as u64) << 32) | provider as u64 | 1 << 63
}

pub fn build_pools(settings: &[PoolSettings]) -> Result<Pools, PoolError> {
    rebuild_pools(settings, None)
}

/// The pools of a new configuration, each taking over the state of the previous pool of the
/// same name.
pub fn rebuild_pools(
    settings: &[PoolSettings],
    previous: Option<&Pools>,
) -> Result<Pools, PoolError> {
    let pools = settings
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let old = previous.and_then(|p| p.iter().find(|old| old.name() == s.name));
            PoolRuntime::replacing(i, s, old)
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Arc::new(pools))
}
