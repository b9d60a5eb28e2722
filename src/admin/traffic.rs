//! The last 15 minutes of traffic for the operations console (`GET /admin/traffic`): every
//! `SAMPLE_EVERY` the totals of `payedge_http_requests_total` per tenant and per route are kept
//! in a ring; the endpoint turns consecutive totals into rates. Read from the metrics the proxy
//! already counts, so the request path does nothing more for it.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use prometheus::proto::MetricFamily;
use serde_json::{Map, Value, json};

pub const SAMPLE_EVERY: Duration = Duration::from_secs(2);
const WINDOW: Duration = Duration::from_secs(15 * 60);
const REQUESTS: &str = "payedge_http_requests_total";

/// Cumulative counts at one moment: requests, and those answered 4xx or 5xx.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Count {
    pub requests: u64,
    pub errors: u64,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Sample {
    /// Seconds since the Unix epoch.
    pub at: f64,
    pub tenants: BTreeMap<String, Count>,
    pub routes: BTreeMap<String, Count>,
}

impl Sample {
    /// The totals in gathered metric families (only `payedge_http_requests_total` is read).
    pub fn of(families: &[MetricFamily], at: f64) -> Self {
        let mut sample = Sample {
            at,
            ..Sample::default()
        };
        let Some(family) = families.iter().find(|f| f.name() == REQUESTS) else {
            return sample;
        };
        for metric in family.get_metric() {
            let label = |name: &str| {
                metric
                    .get_label()
                    .iter()
                    .find(|l| l.name() == name)
                    .map(|l| l.value().to_string())
                    .unwrap_or_default()
            };
            // Counters hold integers: the float is exact up to 2^53.
            let value = metric.get_counter().value() as u64;
            let failed = matches!(label("status_class").as_str(), "4xx" | "5xx");
            for count in [
                sample.tenants.entry(label("tenant")).or_default(),
                sample.routes.entry(label("route")).or_default(),
            ] {
                count.requests += value;
                if failed {
                    count.errors += value;
                }
            }
        }
        sample
    }
}

/// Rates between consecutive samples, per key: `{key: {"requests": [...], "errors": [...]}}`
/// (per second; a counter that went down, a series a reload removed, counts as 0).
fn rates(samples: &VecDeque<Sample>, pick: fn(&Sample) -> &BTreeMap<String, Count>) -> Value {
    let keys: std::collections::BTreeSet<&String> =
        samples.iter().flat_map(|s| pick(s).keys()).collect();
    let pairs: Vec<(&Sample, &Sample)> = samples.iter().zip(samples.iter().skip(1)).collect();
    let mut out = Map::new();
    for key in keys {
        let (mut requests, mut errors) = (Vec::new(), Vec::new());
        for (a, b) in &pairs {
            let seconds = (b.at - a.at).max(0.001);
            let before = pick(a).get(key).copied().unwrap_or_default();
            let after = pick(b).get(key).copied().unwrap_or_default();
            let rate =
                |x: u64, y: u64| (y.saturating_sub(x) as f64 / seconds * 100.0).round() / 100.0;
            requests.push(rate(before.requests, after.requests));
            errors.push(rate(before.errors, after.errors));
        }
        out.insert(
            key.clone(),
            json!({ "requests": requests, "errors": errors }),
        );
    }
    Value::Object(out)
}

/// The ring of samples, shared by the sampler and the admin endpoint.
pub struct TrafficHistory {
    samples: Mutex<VecDeque<Sample>>,
    capacity: usize,
}

impl Default for TrafficHistory {
    fn default() -> Self {
        Self::with_capacity((WINDOW.as_secs() / SAMPLE_EVERY.as_secs()) as usize + 1)
    }
}

impl TrafficHistory {
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            samples: Mutex::new(VecDeque::with_capacity(capacity)),
            capacity: capacity.max(2),
        }
    }

    pub fn push(&self, sample: Sample) {
        if let Ok(mut samples) = self.samples.lock() {
            if samples.len() == self.capacity {
                samples.pop_front();
            }
            samples.push_back(sample);
        }
    }

    /// The body of `GET /admin/traffic`: the end time of each interval, and per tenant and per
    /// route the request and error (4xx and 5xx) rates over it.
    pub fn to_json(&self) -> Value {
        let samples = match self.samples.lock() {
            Ok(samples) => samples.clone(),
            Err(_) => VecDeque::new(),
        };
        let times: Vec<f64> = samples.iter().skip(1).map(|s| s.at).collect();
        json!({
            "interval_seconds": SAMPLE_EVERY.as_secs(),
            "window_seconds": WINDOW.as_secs(),
            "times": times,
            "tenants": rates(&samples, |s| &s.tenants),
            "routes": rates(&samples, |s| &s.routes),
        })
    }
}

/// Samples the request counters every `SAMPLE_EVERY` into the history.
pub struct TrafficSampler {
    pub history: Arc<TrafficHistory>,
}

#[async_trait]
impl BackgroundService for TrafficSampler {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut tick = tokio::time::interval(SAMPLE_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.changed() => return,
            }
            let at = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64());
            let families = prometheus::default_registry().gather();
            self.history.push(Sample::of(&families, at));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus::{IntCounterVec, Opts, Registry};

    fn gathered(values: &[(&str, &str, &str, u64)]) -> Vec<MetricFamily> {
        let registry = Registry::new();
        let vec = IntCounterVec::new(
            Opts::new(REQUESTS, "requests"),
            &["tenant", "route", "status_class"],
        )
        .unwrap();
        registry.register(Box::new(vec.clone())).unwrap();
        for (tenant, route, class, n) in values {
            vec.with_label_values(&[tenant, route, class]).inc_by(*n);
        }
        registry.gather()
    }

    #[test]
    fn totals_per_tenant_and_route_count_4xx_and_5xx_as_errors() {
        let s = Sample::of(
            &gathered(&[
                ("blue", "/api/fx", "2xx", 10),
                ("blue", "/api/fx", "4xx", 2),
                ("green", "/api/fx", "5xx", 1),
                ("green", "/api/payments", "2xx", 5),
            ]),
            1.0,
        );
        assert_eq!(
            s.tenants["blue"],
            Count {
                requests: 12,
                errors: 2
            }
        );
        assert_eq!(
            s.tenants["green"],
            Count {
                requests: 6,
                errors: 1
            }
        );
        assert_eq!(
            s.routes["/api/fx"],
            Count {
                requests: 13,
                errors: 3
            }
        );
        assert_eq!(
            s.routes["/api/payments"],
            Count {
                requests: 5,
                errors: 0
            }
        );
    }

    #[test]
    fn rates_come_from_consecutive_samples_and_never_go_negative() {
        let history = TrafficHistory::with_capacity(3);
        let at = |t: f64, blue: u64, errors: u64| Sample {
            at: t,
            tenants: [(
                "blue".to_string(),
                Count {
                    requests: blue,
                    errors,
                },
            )]
            .into(),
            routes: BTreeMap::new(),
        };
        history.push(at(0.0, 0, 0));
        history.push(at(2.0, 10, 2));
        history.push(at(4.0, 30, 2));
        // The ring holds 3: the oldest goes; a reset counter (a reload) gives 0, not a dip.
        history.push(at(6.0, 4, 0));
        let json = history.to_json();
        assert_eq!(json["times"], json!([4.0, 6.0]));
        assert_eq!(json["tenants"]["blue"]["requests"], json!([10.0, 0.0]));
        assert_eq!(json["tenants"]["blue"]["errors"], json!([0.0, 0.0]));
    }
}
