//! What happens when a provider is ejected, re-admitted, or changes health: a warning log line,
//! the provider metrics, and a `system.alert` event.

use std::sync::Arc;

use payedge_upstreams::Transition;
use serde_json::{Map, Value};

use super::PoolRuntime;
use crate::events::EventSink;
use crate::metrics::Metrics;

pub struct ProviderEvents {
    metrics: Option<Arc<Metrics>>,
    sink: EventSink,
}

impl ProviderEvents {
    pub fn new(metrics: Option<Arc<Metrics>>, sink: EventSink) -> Self {
        Self { metrics, sink }
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
        self.alert(pool, provider, transition);
    }

    fn alert(&self, pool: &PoolRuntime, provider_index: usize, transition: Transition) {
        let provider = pool.provider_name(provider_index);
        let (code, message) = match transition {
            Transition::Ejected { .. } => (
                "provider_ejected",
                "provider ejected after consecutive failures",
            ),
            Transition::Readmitted => (
                "provider_readmitted",
                "provider re-admitted after a successful probe",
            ),
            Transition::BecameUnhealthy => {
                ("provider_unhealthy", "provider failed its health checks")
            }
            Transition::BecameHealthy => (
                "provider_healthy",
                "provider passes its health checks again",
            ),
        };
        let mut details = Map::new();
        details.insert("pool".into(), Value::String(pool.name().to_string()));
        details.insert("provider".into(), Value::String(provider.to_string()));
        if let Transition::Ejected {
            duration,
            ejections,
        } = transition
        {
            let ms = u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
            details.insert("ejected_for_ms".into(), ms.into());
            details.insert("ejections".into(), ejections.into());
        }
        // A provider that serves only some tenants is their business alone: its name and
        // health are told to those tenants, not to everyone.
        let served = pool
            .pool
            .provider(provider_index)
            .map(|p| p.tenants.as_slice())
            .unwrap_or_default();
        if served.is_empty() {
            self.sink.alert(None, code, message, details);
        } else {
            for tenant in served {
                self.sink.alert(
                    Some(Arc::from(tenant.as_str())),
                    code,
                    message,
                    details.clone(),
                );
            }
        }
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
