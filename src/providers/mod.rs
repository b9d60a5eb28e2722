//! The provider pools as the gateway runs them: each `upstreams::Pool` with its Pingora peers and
//! credentials, the background health checks, and how provider state changes are reported.

mod events;
mod health_checks;
mod status;

use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, HeaderValue};
use payedge_upstreams::{Pool, PoolError, ProviderSpec};
use pingora::prelude::HttpPeer;

pub use events::ProviderEvents;
pub use health_checks::HealthChecks;
pub use status::providers_json;

use crate::config::PoolSettings;

pub struct PoolRuntime {
    /// Position in the configuration (and in the metrics tables).
    pub index: usize,
    pub pool: Pool,
    pub settings: PoolSettings,
    peers: Vec<HttpPeer>,
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
                address: p.address,
                weight: p.weight,
                cost: p.cost,
                currencies: p.currencies.clone(),
                tenants: p.tenants.clone(),
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
                peer.options.idle_timeout = Some(settings.timeouts.idle);
                peer
            })
            .collect();
        Ok(Self {
            index,
            pool: Pool::new(settings.name.clone(), specs, settings.policy.clone())?,
            settings: settings.clone(),
            peers,
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

    /// The peer for one attempt, its timeouts cut to what is left of the request's total time.
    pub fn peer(&self, provider: usize, remaining: Duration) -> Option<HttpPeer> {
        let mut peer = self.peers.get(provider)?.clone();
        let t = &self.settings.timeouts;
        peer.options.connection_timeout = Some(t.connect.min(remaining));
        peer.options.total_connection_timeout = Some(t.connect.min(remaining));
        peer.options.read_timeout = Some(t.read.min(remaining));
        peer.options.write_timeout = Some(t.write.min(remaining));
        Some(peer)
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

pub fn build_pools(settings: &[PoolSettings]) -> Result<Pools, PoolError> {
    let pools = settings
        .iter()
        .enumerate()
        .map(|(i, s)| PoolRuntime::new(i, s))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Arc::new(pools))
}
