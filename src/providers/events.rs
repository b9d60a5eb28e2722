//! What happens when a provider is ejected, re-admitted, or changes health: a warning log line
//! and the provider metrics (and, once the event bus exists, a `system.alert` event).

use std::sync::Arc;

use payedge_upstreams::Transition;

use super::PoolRuntime;
use crate::metrics::Metrics;

pub struct ProviderEvents {
    metrics: Option<Arc<Metrics>>,
}

impl ProviderEvents {
    pub fn new(metrics: Option<Arc<Metrics>>) -> Self {
        Self { metrics }
    }

    pub fn metrics(&self) -> Option<&Metrics> {
        self.metrics.as_deref()
    }

    pub fn report(&self, pool: &PoolRuntime, provider: usize, transition: Transition) {
        let name = pool.provider_name(provider);
        match transition {
            Transition::Ejected {
                duration,
                ejections,
            } => {
                tracing::warn!(
                    pool = pool.name(),
                    provider = name,
                    event = "ejected",
                    ejected_for_ms = u64::try_from(duration.as_millis()).unwrap_or(u64::MAX),
                    ejections,
                    "provider ejected after consecutive failures"
                );
                if let Some(m) = &self.metrics {
                    m.provider_ejected(pool.index, provider);
                }
            }
            Transition::Readmitted => tracing::warn!(
                pool = pool.name(),
                provider = name,
                event = "readmitted",
                "provider re-admitted after a successful probe"
            ),
            Transition::BecameUnhealthy => tracing::warn!(
                pool = pool.name(),
                provider = name,
                event = "unhealthy",
                "provider failed its health checks"
            ),
            Transition::BecameHealthy => tracing::warn!(
                pool = pool.name(),
                provider = name,
                event = "healthy",
                "provider passes its health checks again"
            ),
        }
        self.publish_health(pool);
    }

    /// Sets the health gauge of every provider of `pool` from its current state.
    pub fn publish_health(&self, pool: &PoolRuntime) {
        if let Some(m) = &self.metrics {
            let live = pool.pool.live_mask();
            for provider in 0..pool.pool.providers().len() {
                m.set_provider_health(pool.index, provider, live & (1 << provider) != 0);
            }
        }
    }
}
