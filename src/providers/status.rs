//! `GET /admin/providers`: each pool's providers with their state and the inputs of their score.

use std::time::{Instant, SystemTime};

use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::Pools;

pub fn providers_json(pools: &Pools, now: Instant) -> Value {
    let pools: Vec<Value> = pools
        .iter()
        .map(|runtime| {
            let providers: Vec<Value> = runtime
                .pool
                .status(now)
                .into_iter()
                .enumerate()
                .map(|(i, p)| {
                    let endpoint = runtime.endpoint(i);
                    let resolved: Vec<String> = endpoint
                        .map(|e| e.addrs().iter().map(ToString::to_string).collect())
                        .unwrap_or_default();
                    let tls = endpoint.and_then(|e| e.tls.as_ref()).map(|t| {
                        json!({
                            "sni": t.sni,
                            "custom_ca": t.ca.is_some(),
                            "client_certificate": t.client_cert.is_some(),
                        })
                    });
                    json!({
                        "name": p.name,
                        "address": p.address,
                        "resolved": resolved,
                        "tls": tls,
                        "state": p.state,
                        "healthy": p.active_healthy,
                        "ejected_for_ms": p.ejected_for.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
                        "ejected_until": p.ejected_for.and_then(|d| rfc3339(SystemTime::now() + d)),
                        "ejections": p.ejections,
                        "consecutive_failures": p.consecutive_failures,
                        "success_rate": p.success_rate.to_string(),
                        "latency_ms": p.latency_ms.map(|l| l.to_string()),
                        "weight": p.weight,
                        "cost": {"percent": p.cost.percent.to_string(), "fixed": p.cost.fixed.to_string()},
                        "currencies": p.currencies,
                        "tenants": p.tenants,
                        "score": p.score.to_string(),
                        "effective_weight": p.effective_weight,
                    })
                })
                .collect();
            json!({ "name": runtime.name(), "providers": providers })
        })
        .collect();
    json!({ "pools": pools })
}

fn rfc3339(at: SystemTime) -> Option<String> {
    OffsetDateTime::from(at).format(&Rfc3339).ok()
}
