//! Validation of the `pools` section: providers, costs, currencies, timeouts and the selection,
//! health-check, outlier and retry policies.

use std::collections::BTreeMap;
use std::time::Duration;

use http::{HeaderName, HeaderValue};
use payedge_filters::path::check_path;
use payedge_filters::tenant::is_valid_tenant_id;
use payedge_upstreams::{
    Cost, FailureKinds, HealthPolicy, MAX_PROVIDERS, MAX_WEIGHT, OutlierPolicy, PoolPolicy,
    RetryPolicy, SelectionPolicy, currency_code,
};
use rust_decimal::Decimal;

use super::external::*;
use super::runtime::*;
use super::validate::Validator;

const MAX_TIMEOUT_MS: u64 = 3_600_000;
const MAX_ATTEMPTS: u32 = 10;
const MAX_THRESHOLD: u32 = 100;
const MAX_DNS_REFRESH_SECONDS: u64 = 86_400;

/// Headers a provider credential may not set: framing, routing and the gateway's own headers.
pub(super) const RESERVED_HEADERS: [&str; 11] = [
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "upgrade",
    "te",
    "trailer",
    "x-request-id",
    "x-forwarded-for",
    "x-auth-subject",
    "x-auth-roles",
];

impl Validator<'_> {
    pub(super) fn pools(
        &mut self,
        pools: &BTreeMap<String, PoolSection>,
        tenant_header: &HeaderName,
        tenants: &[String],
    ) -> Vec<PoolSettings> {
        if pools.is_empty() {
            self.issue("pools", "define at least one pool");
        }
        pools
            .iter()
            .map(|(name, pool)| self.pool(name, pool, tenant_header, tenants))
            .collect()
    }

    fn pool(
        &mut self,
        name: &str,
        pool: &PoolSection,
        tenant_header: &HeaderName,
        tenants: &[String],
    ) -> PoolSettings {
        let key = format!("pools.{name}");
        if pool.providers.is_empty() {
            self.issue(format!("{key}.providers"), "list at least one provider");
        }
        if pool.providers.len() > MAX_PROVIDERS {
            self.issue(
                format!("{key}.providers"),
                format!("at most {MAX_PROVIDERS} providers"),
            );
        }
        let providers = pool
            .providers
            .iter()
            .enumerate()
            .filter_map(|(i, p)| {
                let others = &pool.providers[..i];
                self.provider(
                    &format!("{key}.providers[{i}]"),
                    p,
                    others,
                    tenant_header,
                    tenants,
                )
            })
            .collect();
        let currency_header =
            match HeaderName::from_bytes(pool.selection.currency_header.as_bytes()) {
                Ok(h) => h,
                Err(_) => {
                    self.issue(
                        format!("{key}.selection.currency_header"),
                        format!("{:?} is not a header name", pool.selection.currency_header),
                    );
                    HeaderName::from_static("x-currency")
                }
            };
        if currency_header == tenant_header {
            self.issue(
                format!("{key}.selection.currency_header"),
                "is tenancy.header: payedge sets that header to the tenant on what it forwards",
            );
        }
        PoolSettings {
            name: name.to_string(),
            providers,
            timeouts: self.timeouts(&key, &pool.timeouts),
            policy: PoolPolicy {
                selection: self.selection(&key, &pool.selection),
                outlier: self.outlier(&key, &pool.outlier),
                health: pool
                    .health_check
                    .as_ref()
                    .map(|h| HealthPolicy {
                        healthy_threshold: h.healthy_threshold,
                        unhealthy_threshold: h.unhealthy_threshold,
                    })
                    .unwrap_or_default(),
                retry: self.retry(&key, &pool.retry),
            },
            currency_header,
            health_check: pool
                .health_check
                .as_ref()
                .map(|h| self.health_check(&key, h)),
            retry_methods: self.retry_methods(&key, &pool.retry.methods),
            dns_refresh: {
                self.bounded(
                    &format!("{key}.dns_refresh_seconds"),
                    pool.dns_refresh_seconds,
                    1,
                    MAX_DNS_REFRESH_SECONDS,
                );
                Duration::from_secs(pool.dns_refresh_seconds)
            },
        }
    }

    fn provider(
        &mut self,
        key: &str,
        p: &ProviderEntry,
        others: &[ProviderEntry],
        tenant_header: &HeaderName,
        tenants: &[String],
    ) -> Option<ProviderSettings> {
        if p.name.is_empty() {
            self.issue(format!("{key}.name"), "must not be empty");
        } else if others.iter().any(|o| o.name == p.name) {
            self.issue(
                format!("{key}.name"),
                format!("{:?} is used twice in this pool", p.name),
            );
        }
        if p.weight == 0 {
            self.issue(format!("{key}.weight"), "must be > 0");
        } else if p.weight > MAX_WEIGHT {
            self.issue(
                format!("{key}.weight"),
                format!("must be at most {MAX_WEIGHT}"),
            );
        }
        for (field, value) in [("percent", p.cost.percent.0), ("fixed", p.cost.fixed.0)] {
            if value < Decimal::ZERO {
                self.issue(format!("{key}.cost.{field}"), "must not be negative");
            }
        }
        if p.cost.percent.0 > Decimal::ONE_HUNDRED {
            self.issue(format!("{key}.cost.percent"), "must be at most 100");
        }
        let mut currencies = Vec::new();
        for (i, code) in p.currencies.iter().enumerate() {
            if currency_code(code).is_some() {
                currencies.push(code.to_ascii_uppercase());
            } else {
                self.issue(
                    format!("{key}.currencies[{i}]"),
                    format!("{code:?} is not an ISO 4217 code like EUR"),
                );
            }
        }
        let mut served = Vec::new();
        for (i, tenant) in p.tenants.iter().enumerate() {
            let lower = tenant.to_ascii_lowercase();
            if is_valid_tenant_id(tenant) && tenants.contains(&lower) {
                served.push(lower);
            } else {
                self.issue(
                    format!("{key}.tenants[{i}]"),
                    format!("{tenant:?} is not a tenant listed in tenancy.tenants"),
                );
            }
        }
        let address = self.provider_address(&format!("{key}.address"), &p.address);
        let tls = p
            .tls
            .as_ref()
            .and_then(|t| self.provider_tls(&format!("{key}.tls"), t, address.as_ref()));
        let headers = self.credential_headers(key, &p.headers, tenant_header);
        Some(ProviderSettings {
            name: p.name.clone(),
            address: address?,
            tls,
            weight: p.weight,
            cost: Cost {
                percent: p.cost.percent.0,
                fixed: p.cost.fixed.0,
            },
            currencies,
            tenants: served,
            headers,
        })
    }

    fn timeouts(&mut self, key: &str, t: &TimeoutsSection) -> Timeouts {
        for (field, ms) in [
            ("connect_ms", t.connect_ms),
            ("read_ms", t.read_ms),
            ("write_ms", t.write_ms),
            ("total_ms", t.total_ms),
            ("idle_ms", t.idle_ms),
        ] {
            self.bounded(&format!("{key}.timeouts.{field}"), ms, 1, MAX_TIMEOUT_MS);
        }
        if t.total_ms < t.connect_ms {
            self.issue(
                format!("{key}.timeouts.total_ms"),
                "must be at least connect_ms: no attempt could be made",
            );
        }
        Timeouts {
            connect: Duration::from_millis(t.connect_ms),
            read: Duration::from_millis(t.read_ms),
            write: Duration::from_millis(t.write_ms),
            total: Duration::from_millis(t.total_ms),
            idle: Duration::from_millis(t.idle_ms),
        }
    }

    fn selection(&mut self, key: &str, s: &SelectionSection) -> SelectionPolicy {
        for (field, value) in [
            ("success_rate_weight", s.success_rate_weight.0),
            ("latency_weight", s.latency_weight.0),
            ("cost_weight", s.cost_weight.0),
        ] {
            if value < Decimal::ZERO || value > Decimal::ONE {
                self.issue(
                    format!("{key}.selection.{field}"),
                    "must be between 0 and 1",
                );
            }
        }
        if s.reference_amount.0 <= Decimal::ZERO {
            self.issue(format!("{key}.selection.reference_amount"), "must be > 0");
        }
        SelectionPolicy {
            success_rate_weight: s.success_rate_weight.0,
            latency_weight: s.latency_weight.0,
            cost_weight: s.cost_weight.0,
            reference_amount: s.reference_amount.0,
        }
    }

    fn health_check(&mut self, key: &str, h: &HealthCheckSection) -> HealthCheckSettings {
        let key = format!("{key}.health_check");
        if check_path(&h.path).is_err() {
            self.issue(
                format!("{key}.path"),
                format!("{:?} is not an absolute path in normal form", h.path),
            );
        }
        self.bounded(
            &format!("{key}.interval_ms"),
            h.interval_ms,
            10,
            MAX_TIMEOUT_MS,
        );
        self.bounded(
            &format!("{key}.timeout_ms"),
            h.timeout_ms,
            1,
            MAX_TIMEOUT_MS,
        );
        self.bounded(&format!("{key}.jitter_ms"), h.jitter_ms, 0, MAX_TIMEOUT_MS);
        for (field, n) in [
            ("healthy_threshold", h.healthy_threshold),
            ("unhealthy_threshold", h.unhealthy_threshold),
        ] {
            self.bounded(
                &format!("{key}.{field}"),
                u64::from(n),
                1,
                u64::from(MAX_THRESHOLD),
            );
        }
        HealthCheckSettings {
            path: h.path.clone(),
            interval: Duration::from_millis(h.interval_ms),
            timeout: Duration::from_millis(h.timeout_ms),
            jitter: Duration::from_millis(h.jitter_ms),
        }
    }

    fn outlier(&mut self, key: &str, o: &OutlierSection) -> OutlierPolicy {
        let key = format!("{key}.outlier");
        self.bounded(
            &format!("{key}.consecutive_failures"),
            u64::from(o.consecutive_failures),
            1,
            u64::from(MAX_THRESHOLD),
        );
        self.bounded(
            &format!("{key}.base_ejection_ms"),
            o.base_ejection_ms,
            1,
            MAX_TIMEOUT_MS,
        );
        self.bounded(
            &format!("{key}.max_ejection_ms"),
            o.max_ejection_ms,
            1,
            MAX_TIMEOUT_MS,
        );
        if o.max_ejection_ms < o.base_ejection_ms {
            self.issue(
                format!("{key}.max_ejection_ms"),
                "must be at least base_ejection_ms",
            );
        }
        self.bounded(
            &format!("{key}.max_ejection_percent"),
            u64::from(o.max_ejection_percent),
            0,
            100,
        );
        OutlierPolicy {
            consecutive_failures: o.consecutive_failures,
            failure_kinds: FailureKinds {
                connect_error: o.failure_on.contains(&FailureKind::ConnectError),
                timeout: o.failure_on.contains(&FailureKind::Timeout),
                status_5xx: o.failure_on.contains(&FailureKind::Status5xx),
            },
            base_ejection: Duration::from_millis(o.base_ejection_ms),
            max_ejection: Duration::from_millis(o.max_ejection_ms),
            max_ejection_percent: o.max_ejection_percent,
        }
    }

    fn retry(&mut self, key: &str, r: &RetrySection) -> RetryPolicy {
        self.bounded(
            &format!("{key}.retry.max_attempts"),
            u64::from(r.max_attempts),
            1,
            u64::from(MAX_ATTEMPTS),
        );
        self.bounded(
            &format!("{key}.retry.budget_percent"),
            u64::from(r.budget_percent),
            0,
            100,
        );
        RetryPolicy {
            max_attempts: r.max_attempts,
            budget_percent: r.budget_percent,
        }
    }

    fn retry_methods(&mut self, key: &str, methods: &[String]) -> Vec<http::Method> {
        let mut out = Vec::new();
        for (i, name) in methods.iter().enumerate() {
            match http::Method::from_bytes(name.to_ascii_uppercase().as_bytes()) {
                Ok(m) if m.is_idempotent() && m != http::Method::TRACE => out.push(m),
                _ => self.issue(
                    format!("{key}.retry.methods[{i}]"),
                    format!(
                        "{name:?} is not an idempotent method (GET, HEAD, PUT, DELETE, OPTIONS)"
                    ),
                ),
            }
        }
        out
    }

    fn bounded(&mut self, key: &str, value: u64, min: u64, max: u64) {
        if value < min || value > max {
            self.issue(key, format!("must be between {min} and {max}"));
        }
    }

    fn credential_headers(
        &mut self,
        provider_key: &str,
        headers: &BTreeMap<String, SecretRef>,
        tenant_header: &HeaderName,
    ) -> Vec<(HeaderName, HeaderValue)> {
        let mut out = Vec::new();
        for (name, secret) in headers {
            let key = format!("{provider_key}.headers.{name}");
            let Ok(header) = HeaderName::from_bytes(name.as_bytes()) else {
                self.issue(key, format!("{name:?} is not a header name"));
                continue;
            };
            if RESERVED_HEADERS.contains(&header.as_str()) || header == tenant_header {
                self.issue(
                    key,
                    "is set by the gateway itself and cannot be a credential",
                );
                continue;
            }
            if secret.secret_env.is_none() && secret.secret_file.is_none() {
                self.issue(key, "needs secret_env or secret_file");
                continue;
            }
            let Some(value) = self.secret(
                &key,
                secret.secret_env.as_deref(),
                secret.secret_file.as_deref(),
            ) else {
                continue;
            };
            match HeaderValue::from_str(&value) {
                Ok(mut value) => {
                    value.set_sensitive(true);
                    out.push((header, value));
                }
                Err(_) => {
                    let (field, source) = match (&secret.secret_env, &secret.secret_file) {
                        (Some(name), _) => ("secret_env", format!("environment variable {name}")),
                        (_, Some(file)) => ("secret_file", format!("file {file}")),
                        _ => ("secret_env", String::new()),
                    };
                    self.issue(
                        format!("{key}.{field}"),
                        format!("{source} holds characters a header cannot carry"),
                    )
                }
            }
        }
        out
    }
}
