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
        let pool = Pool::new(settings.name.clone(), specs, settings.policy.clone())?;
        for (i, endpoint) in endpoints.iter().enumerate() {
            if endpoint.is_named() {
                pool.set_resolved(i, false);
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
    let pools = settings
        .iter()
        .enumerate()
        .map(|(i, s)| PoolRuntime::new(i, s))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Arc::new(pools))
}
