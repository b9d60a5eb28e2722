//! The gateway's Prometheus metrics, registered in the default registry that
//! `pingora_prometheus::PrometheusHttpApp` serves.
//!
//! Labels are bounded by construction: every label value comes from configuration (tenants,
//! routes, pools, providers) or a fixed set (status classes, failure reasons), never from what a
//! client sent. Label children are created on first use and cached per cell, so the request path
//! does an index computation and an atomic add, not a hash lookup.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use payedge_filters::auth::AuthFailure;
use payedge_filters::tenant::TenantRejection;
use prometheus::core::Collector;
use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
};

use crate::config::Config;

/// Status classes, by index: 1xx … 5xx, and `none` when there was no response status.
const STATUS_CLASSES: [&str; 6] = ["1xx", "2xx", "3xx", "4xx", "5xx", "none"];
const DURATION_BUCKETS: [f64; 14] = [
    0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// How requests with an idempotency key went, by index (`payedge_idempotency_requests_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdempotencyResult {
    /// The key was new: the request went ahead.
    First,
    Replayed,
    /// The first request with the key is in progress (409).
    Conflict,
    /// The key was used for a different request (422).
    Reused,
    UnknownOutcome,
    /// The store could not be reached and the route refused (503).
    Unavailable,
    /// The store could not be reached and the route went ahead without protection.
    Unprotected,
    /// A missing (where required) or malformed key, or a body too large to compare.
    Rejected,
    /// The first request completed and its response was too large to keep (409).
    NotStored,
}

impl IdempotencyResult {
    const LABELS: [&'static str; 9] = [
        "first",
        "replayed",
        "conflict",
        "reused",
        "unknown_outcome",
        "unavailable",
        "unprotected",
        "rejected",
        "not_stored",
    ];

    fn index(self) -> usize {
        self as usize
    }

    pub fn label(self) -> &'static str {
        Self::LABELS[self.index()]
    }
}

/// What the response cache did for a request of a route with `cache` (`payedge_cache_requests_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheResult {
    /// Served from the cache.
    Hit,
    /// Asked of a provider (nothing kept, or what was kept had expired).
    Miss,
    /// The response could not be kept (not 200, Set-Cookie, Cache-Control no-store/private).
    Uncacheable,
}

impl CacheResult {
    const LABELS: [&'static str; 3] = ["hit", "miss", "uncacheable"];

    fn index(self) -> usize {
        self as usize
    }

    pub fn label(self) -> &'static str {
        Self::LABELS[self.index()]
    }
}

/// The tenant label of requests that never got a tenant.
pub const NO_TENANT: &str = "unresolved";
/// The route label of requests that matched no route.
pub const NO_ROUTE: &str = "none";

/// `None` (no status) counts as the class `none`.
fn status_class(status: Option<u16>) -> usize {
    match status {
        Some(s @ 100..=599) => usize::from(s / 100) - 1,
        _ => STATUS_CLASSES.len() - 1,
    }
}

/// One axis of a label table: for each index, the label values it stands for.
type Axis = Vec<Vec<String>>;

fn axis<S: ToString>(values: impl IntoIterator<Item = S>) -> Axis {
    values.into_iter().map(|v| vec![v.to_string()]).collect()
}

/// A labelled metric family.
trait Family {
    type Child;
    fn child(&self, labels: &[&str]) -> Self::Child;
}

impl Family for IntCounterVec {
    type Child = IntCounter;
    fn child(&self, labels: &[&str]) -> IntCounter {
        self.with_label_values(labels)
    }
}

impl Family for HistogramVec {
    type Child = Histogram;
    fn child(&self, labels: &[&str]) -> Histogram {
        self.with_label_values(labels)
    }
}

/// A metric family whose children are created on first use, addressed by one index per axis.
struct LabelTable<F: Family> {
    vec: F,
    axes: Vec<Axis>,
    cells: Vec<OnceLock<F::Child>>,
}

impl<F: Family> LabelTable<F> {
    fn new(vec: F, axes: Vec<Axis>) -> Self {
        let size = axes.iter().map(Vec::len).product();
        Self {
            vec,
            axes,
            cells: (0..size).map(|_| OnceLock::new()).collect(),
        }
    }

    /// Out-of-range indices clamp to the axis's last entry, which is always its catch-all.
    fn get(&self, indices: &[usize]) -> &F::Child {
        let clamped = |axis: &Axis, i: usize| i.min(axis.len() - 1);
        let flat = self
            .axes
            .iter()
            .zip(indices)
            .fold(0, |flat, (axis, i)| flat * axis.len() + clamped(axis, *i));
        self.cells[flat].get_or_init(|| {
            let labels: Vec<&str> = self
                .axes
                .iter()
                .zip(indices)
                .flat_map(|(axis, i)| axis[clamped(axis, *i)].iter().map(String::as_str))
                .collect();
            self.vec.child(&labels)
        })
    }
}

/// Why a request moved to another provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailoverReason {
    ConnectError,
    Timeout,
    Status5xx,
    Broken,
}

impl FailoverReason {
    const ALL: [FailoverReason; 4] = [
        Self::ConnectError,
        Self::Timeout,
        Self::Status5xx,
        Self::Broken,
    ];

    fn label(self) -> &'static str {
        match self {
            Self::ConnectError => "connect_error",
            Self::Timeout => "timeout",
            Self::Status5xx => "status_5xx",
            Self::Broken => "broken",
        }
    }
}

pub struct Metrics {
    http_requests: LabelTable<IntCounterVec>,
    http_duration: LabelTable<HistogramVec>,
    upstream_requests: LabelTable<IntCounterVec>,
    auth_failures: Vec<IntCounter>,
    tenant_rejections: Vec<IntCounter>,
    /// Requests naming another tenant than their TLS connection's server name.
    misdirected: IntCounter,
    /// A token of one tenant used for another (403 tenant_mismatch): a cross-tenant attempt.
    cross_tenant: IntCounter,
    /// Index of each pool's first provider in the per-provider vectors.
    provider_offsets: Vec<usize>,
    provider_health: Vec<IntGauge>,
    provider_ejections: Vec<IntCounter>,
    upstream_duration: Vec<Histogram>,
    /// Per pool, one counter per [`FailoverReason`].
    failovers: Vec<Vec<IntCounter>>,
    budget_exhausted: Vec<IntCounter>,
    /// Children by error code, created on first use (the codes are a fixed set).
    errors: IntCounterVec,
    idempotency: LabelTable<IntCounterVec>,
    cache: LabelTable<IntCounterVec>,
}

/// Where one finished request belongs.
#[derive(Debug, Clone, Copy)]
pub struct RequestLabels {
    pub tenant: Option<usize>,
    pub route: Option<usize>,
    pub status: Option<u16>,
}

/// The registered metric families, once per process; each configuration snapshot builds its
/// [`Metrics`] over them, so a reload keeps every series it does not remove.
#[derive(Clone)]
pub struct MetricFamilies {
    requests: IntCounterVec,
    duration: HistogramVec,
    upstream: IntCounterVec,
    auth: IntCounterVec,
    rejections: IntCounterVec,
    health: IntGaugeVec,
    ejections: IntCounterVec,
    upstream_duration: HistogramVec,
    failovers: IntCounterVec,
    budget: IntCounterVec,
    errors: IntCounterVec,
    idempotency: IntCounterVec,
    cache: IntCounterVec,
}

impl MetricFamilies {
    /// Registers the metrics; fails only if they are registered already.
    pub fn register() -> prometheus::Result<Self> {
        let requests = IntCounterVec::new(
            Opts::new(
                "payedge_http_requests_total",
                "Requests answered by the proxy.",
            ),
            &["tenant", "route", "status_class"],
        )?;
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "payedge_http_request_duration_seconds",
                "Time from a request's arrival to the end of its response.",
            )
            .buckets(DURATION_BUCKETS.to_vec()),
            &["tenant", "route"],
        )?;
        let upstream = IntCounterVec::new(
            Opts::new(
                "payedge_upstream_requests_total",
                "Attempts sent to providers, by the provider's answer (none: no answer).",
            ),
            &["pool", "provider", "status_class"],
        )?;
        let auth = IntCounterVec::new(
            Opts::new(
                "payedge_auth_failures_total",
                "Requests refused by authentication.",
            ),
            &["reason"],
        )?;
        let rejections = IntCounterVec::new(
            Opts::new(
                "payedge_tenant_rejections_total",
                "Requests refused for their tenant: none known could be given to them, the TLS connection names another (misdirected), or the token is for another tenant (cross_tenant).",
            ),
            &["reason"],
        )?;
        let health = IntGaugeVec::new(
            Opts::new(
                "payedge_provider_health",
                "1 when the provider can be chosen (healthy and not ejected), else 0.",
            ),
            &["pool", "provider"],
        )?;
        let ejections = IntCounterVec::new(
            Opts::new(
                "payedge_provider_ejections_total",
                "Times a provider was ejected for consecutive failures.",
            ),
            &["pool", "provider"],
        )?;
        let upstream_duration = HistogramVec::new(
            HistogramOpts::new(
                "payedge_upstream_duration_seconds",
                "Time from sending an attempt to a provider to its response header.",
            )
            .buckets(DURATION_BUCKETS.to_vec()),
            &["pool", "provider"],
        )?;
        let failovers = IntCounterVec::new(
            Opts::new(
                "payedge_failovers_total",
                "Attempts moved to another provider, by what failed.",
            ),
            &["pool", "reason"],
        )?;
        let budget = IntCounterVec::new(
            Opts::new(
                "payedge_retry_budget_exhausted_total",
                "Retries refused because the pool's retry budget was spent.",
            ),
            &["pool"],
        )?;
        let errors = IntCounterVec::new(
            Opts::new(
                "payedge_http_errors_total",
                "Requests payedge answered itself with a JSON error, by its code (README: error codes).",
            ),
            &["code"],
        )?;
        let idempotency = IntCounterVec::new(
            Opts::new(
                "payedge_idempotency_requests_total",
                "Requests carrying an Idempotency-Key (or refused for lacking one), by route and result.",
            ),
            &["route", "result"],
        )?;
        let cache = IntCounterVec::new(
            Opts::new(
                "payedge_cache_requests_total",
                "Requests to routes with a response cache, by route and result (hit, miss, uncacheable).",
            ),
            &["route", "result"],
        )?;
        let registry = prometheus::default_registry();
        let collectors: [Box<dyn Collector>; 13] = [
            Box::new(cache.clone()),
            Box::new(idempotency.clone()),
            Box::new(errors.clone()),
            Box::new(requests.clone()),
            Box::new(duration.clone()),
            Box::new(upstream.clone()),
            Box::new(auth.clone()),
            Box::new(rejections.clone()),
            Box::new(health.clone()),
            Box::new(ejections.clone()),
            Box::new(upstream_duration.clone()),
            Box::new(failovers.clone()),
            Box::new(budget.clone()),
        ];
        for collector in collectors {
            registry.register(collector)?;
        }
        Ok(Self {
            requests,
            duration,
            upstream,
            auth,
            rejections,
            health,
            ejections,
            upstream_duration,
            failovers,
            budget,
            errors,
            idempotency,
            cache,
        })
    }

    /// Drops the series of providers, pools, tenants and routes that `old` had and `new` has
    /// not, so a removed provider leaves no stale gauge behind.
    pub fn forget_removed(&self, old: &SeriesSet, new: &SeriesSet) {
        for (pool, provider) in &old.providers {
            if new.providers.contains(&(pool.clone(), provider.clone())) {
                continue;
            }
            let labels = [pool.as_str(), provider.as_str()];
            let _ = self.health.remove_label_values(&labels);
            let _ = self.ejections.remove_label_values(&labels);
            let _ = self.upstream_duration.remove_label_values(&labels);
            for class in STATUS_CLASSES {
                let _ = self.upstream.remove_label_values(&[pool, provider, class]);
            }
        }
        for pool in &old.pools {
            if new.pools.contains(pool) {
                continue;
            }
            let _ = self.budget.remove_label_values(&[pool]);
            for reason in FailoverReason::ALL {
                let _ = self.failovers.remove_label_values(&[pool, reason.label()]);
            }
        }
        let all_tenants: Vec<&str> = old
            .tenants
            .iter()
            .map(String::as_str)
            .chain([NO_TENANT])
            .collect();
        let all_routes: Vec<&str> = old
            .routes
            .iter()
            .map(String::as_str)
            .chain([NO_ROUTE])
            .collect();
        for tenant in &all_tenants {
            for route in &all_routes {
                let gone_tenant = old.tenants.iter().any(|t| t == tenant)
                    && !new.tenants.iter().any(|t| t == tenant);
                let gone_route =
                    old.routes.iter().any(|r| r == route) && !new.routes.iter().any(|r| r == route);
                if !gone_tenant && !gone_route {
                    continue;
                }
                let _ = self.duration.remove_label_values(&[tenant, route]);
                for class in STATUS_CLASSES {
                    let _ = self.requests.remove_label_values(&[tenant, route, class]);
                }
            }
        }
        for route in old.routes.iter().filter(|r| !new.routes.contains(r)) {
            for result in IdempotencyResult::LABELS {
                let _ = self.idempotency.remove_label_values(&[route, result]);
            }
            for result in CacheResult::LABELS {
                let _ = self.cache.remove_label_values(&[route, result]);
            }
        }
    }
}

/// The label values one configuration gives metric series: what a reload compares to drop the
/// series of what is gone.
#[derive(Debug, Clone, Default)]
pub struct SeriesSet {
    pub providers: Vec<(String, String)>,
    pub tls_providers: Vec<(String, String)>,
    pub pools: Vec<String>,
    pub routes: Vec<String>,
    pub tenants: Vec<String>,
    pub certificates: Vec<String>,
}

impl SeriesSet {
    pub fn of(config: &Config, tenants: &[Arc<str>]) -> Self {
        let pairs = |tls_only: bool| -> Vec<(String, String)> {
            config
                .pools
                .iter()
                .flat_map(|pool| {
                    pool.providers
                        .iter()
                        .filter(move |p| !tls_only || p.tls.is_some())
                        .map(move |p| (pool.name.clone(), p.name.clone()))
                })
                .collect()
        };
        Self {
            providers: pairs(false),
            tls_providers: pairs(true),
            pools: config.pools.iter().map(|p| p.name.clone()).collect(),
            routes: config
                .routes
                .iter()
                .map(|r| r.path_prefix.clone())
                .collect(),
            tenants: tenants.iter().map(|t| t.to_string()).collect(),
            certificates: [&config.server.tls, &config.server.admin_tls]
                .into_iter()
                .flatten()
                .flat_map(|l| l.certificates.iter().map(|c| c.label.clone()))
                .collect(),
        }
    }
}

impl Metrics {
    /// Registers the metric families and builds the view of `config` over them.
    pub fn register(config: &Config, tenants: &[Arc<str>]) -> prometheus::Result<Self> {
        Ok(Self::new(&MetricFamilies::register()?, config, tenants))
    }

    /// The metrics of one configuration over already registered families.
    pub fn new(families: &MetricFamilies, config: &Config, tenants: &[Arc<str>]) -> Self {
        let tenant_axis = axis(
            tenants
                .iter()
                .map(|t| t.to_string())
                .chain([NO_TENANT.into()]),
        );
        let route_axis = axis(
            config
                .routes
                .iter()
                .map(|r| r.path_prefix.clone())
                .chain([NO_ROUTE.into()]),
        );
        let class_axis = axis(STATUS_CLASSES);
        let mut provider_axis = Axis::new();
        let mut provider_offsets = Vec::new();
        for pool in &config.pools {
            provider_offsets.push(provider_axis.len());
            for provider in &pool.providers {
                provider_axis.push(vec![pool.name.clone(), provider.name.clone()]);
            }
        }
        provider_axis.push(vec!["none".into(), "none".into()]);

        let MetricFamilies {
            requests,
            duration,
            upstream,
            auth,
            rejections,
            health,
            ejections,
            upstream_duration,
            failovers,
            budget,
            errors,
            idempotency,
            cache,
        } = families.clone();
        let pairs: Vec<(&str, &str)> = config
            .pools
            .iter()
            .flat_map(|pool| {
                pool.providers
                    .iter()
                    .map(move |p| (pool.name.as_str(), p.name.as_str()))
            })
            .collect();
        let per_provider = |pairs: &[(&str, &str)]| -> Vec<[String; 2]> {
            pairs
                .iter()
                .map(|(a, b)| [a.to_string(), b.to_string()])
                .collect()
        };
        let labels = per_provider(&pairs);
        let provider_health: Vec<IntGauge> = labels
            .iter()
            .map(|[pool, provider]| {
                let gauge = health.with_label_values(&[pool, provider]);
                gauge.set(1);
                gauge
            })
            .collect();

        Self {
            http_requests: LabelTable::new(
                requests,
                vec![tenant_axis.clone(), route_axis.clone(), class_axis.clone()],
            ),
            http_duration: LabelTable::new(duration, vec![tenant_axis, route_axis.clone()]),
            idempotency: LabelTable::new(
                idempotency,
                vec![route_axis.clone(), axis(IdempotencyResult::LABELS)],
            ),
            cache: LabelTable::new(cache, vec![route_axis, axis(CacheResult::LABELS)]),
            upstream_requests: LabelTable::new(upstream, vec![provider_axis, class_axis]),
            auth_failures: AuthFailure::ALL
                .iter()
                .map(|f| auth.with_label_values(&[f.reason()]))
                .collect(),
            tenant_rejections: TenantRejection::ALL
                .iter()
                .map(|r| rejections.with_label_values(&[r.reason()]))
                .collect(),
            misdirected: rejections.with_label_values(&["misdirected"]),
            cross_tenant: rejections.with_label_values(&["cross_tenant"]),
            provider_offsets,
            provider_health,
            provider_ejections: labels
                .iter()
                .map(|[pool, provider]| ejections.with_label_values(&[pool, provider]))
                .collect(),
            upstream_duration: labels
                .iter()
                .map(|[pool, provider]| upstream_duration.with_label_values(&[pool, provider]))
                .collect(),
            failovers: config
                .pools
                .iter()
                .map(|pool| {
                    FailoverReason::ALL
                        .iter()
                        .map(|r| failovers.with_label_values(&[&pool.name, r.label()]))
                        .collect()
                })
                .collect(),
            budget_exhausted: config
                .pools
                .iter()
                .map(|pool| budget.with_label_values(&[&pool.name]))
                .collect(),
            errors,
        }
    }

    fn provider_index(&self, pool: usize, provider: usize) -> Option<usize> {
        self.provider_offsets
            .get(pool)
            .map(|offset| offset + provider)
    }

    pub fn set_provider_health(&self, pool: usize, provider: usize, selectable: bool) {
        if let Some(g) = self
            .provider_index(pool, provider)
            .and_then(|i| self.provider_health.get(i))
        {
            g.set(i64::from(selectable));
        }
    }

    pub fn provider_ejected(&self, pool: usize, provider: usize) {
        if let Some(c) = self
            .provider_index(pool, provider)
            .and_then(|i| self.provider_ejections.get(i))
        {
            c.inc();
        }
    }

    pub fn observe_upstream_duration(&self, pool: usize, provider: usize, elapsed: Duration) {
        if let Some(h) = self
            .provider_index(pool, provider)
            .and_then(|i| self.upstream_duration.get(i))
        {
            h.observe(elapsed.as_secs_f64());
        }
    }

    pub fn failover(&self, pool: usize, reason: FailoverReason) {
        let index = FailoverReason::ALL.iter().position(|r| *r == reason);
        if let Some(c) = self
            .failovers
            .get(pool)
            .and_then(|p| index.and_then(|i| p.get(i)))
        {
            c.inc();
        }
    }

    pub fn retry_budget_exhausted(&self, pool: usize) {
        if let Some(c) = self.budget_exhausted.get(pool) {
            c.inc();
        }
    }

    pub fn observe_request(&self, labels: RequestLabels, elapsed: Duration) {
        let tenant = labels.tenant.unwrap_or(usize::MAX);
        let route = labels.route.unwrap_or(usize::MAX);
        self.http_requests
            .get(&[tenant, route, status_class(labels.status)])
            .inc();
        self.http_duration
            .get(&[tenant, route])
            .observe(elapsed.as_secs_f64());
    }

    pub fn observe_upstream(&self, pool: usize, provider: usize, status: Option<u16>) {
        let index = self.provider_index(pool, provider).unwrap_or(usize::MAX);
        self.upstream_requests
            .get(&[index, status_class(status)])
            .inc();
    }

    pub fn auth_failure(&self, failure: AuthFailure) {
        if let Some(c) = AuthFailure::ALL
            .iter()
            .position(|f| *f == failure)
            .and_then(|i| self.auth_failures.get(i))
        {
            c.inc();
        }
    }

    pub fn misdirected(&self) {
        self.misdirected.inc();
    }

    pub fn cache(&self, route: usize, result: CacheResult) {
        self.cache.get(&[route, result.index()]).inc();
    }

    pub fn idempotency(&self, route: usize, result: IdempotencyResult) {
        self.idempotency.get(&[route, result.index()]).inc();
    }

    /// A request payedge answered itself with the JSON error `code`.
    pub fn error(&self, code: &'static str) {
        self.errors.with_label_values(&[code]).inc();
    }

    pub fn cross_tenant(&self) {
        self.cross_tenant.inc();
    }

    pub fn tenant_rejection(&self, rejection: TenantRejection) {
        if let Some(c) = TenantRejection::ALL
            .iter()
            .position(|r| *r == rejection)
            .and_then(|i| self.tenant_rejections.get(i))
        {
            c.inc();
        }
    }
}

/// A counter of one listener (`proxy` or `admin`), its labels constant, registered with the
/// default registry.
pub fn listener_counter(
    name: &str,
    help: &str,
    listener: &str,
    labels: &[(&str, &str)],
) -> prometheus::Result<IntCounter> {
    let opts = labels.iter().fold(
        prometheus::Opts::new(name, help).const_label("listener", listener),
        |opts, (k, v)| opts.const_label(*k, *v),
    );
    let counter = IntCounter::with_opts(opts)?;
    prometheus::default_registry().register(Box::new(counter.clone()))?;
    Ok(counter)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_classes() {
        assert_eq!(STATUS_CLASSES[status_class(Some(101))], "1xx");
        assert_eq!(STATUS_CLASSES[status_class(Some(204))], "2xx");
        assert_eq!(STATUS_CLASSES[status_class(Some(404))], "4xx");
        assert_eq!(STATUS_CLASSES[status_class(Some(599))], "5xx");
        assert_eq!(STATUS_CLASSES[status_class(Some(600))], "none");
        assert_eq!(STATUS_CLASSES[status_class(None)], "none");
    }

    #[test]
    fn label_table_cells_map_to_their_labels_and_clamp_to_the_catch_all() {
        let vec =
            IntCounterVec::new(Opts::new("t_total", "t"), &["pool", "provider", "c"]).unwrap();
        let table = LabelTable::new(
            vec.clone(),
            vec![
                vec![
                    vec!["cards".into(), "a".into()],
                    vec!["cards".into(), "b".into()],
                    vec!["none".into(), "none".into()],
                ],
                axis(["x", "y"]),
            ],
        );
        table.get(&[1, 0]).inc();
        table.get(&[1, 0]).inc();
        table.get(&[99, 1]).inc();
        assert_eq!(vec.with_label_values(&["cards", "b", "x"]).get(), 2);
        assert_eq!(vec.with_label_values(&["none", "none", "y"]).get(), 1);
        assert_eq!(vec.with_label_values(&["cards", "a", "x"]).get(), 0);
    }
}
