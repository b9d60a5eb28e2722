//! A pool of providers: who may take a request, who takes it, and what each attempt taught us.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use rust_decimal::Decimal;

use crate::budget::RetryBudget;
use crate::health::{Admission, Outcome, ProviderHealth, Transition};
use crate::policy::{Cost, PoolPolicy};
use crate::scoring::{ScoreInput, Scores, score};
use crate::selector::Selector;

pub const MAX_PROVIDERS: usize = 64;
pub const MAX_WEIGHT: u32 = 10_000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderSpec {
    pub name: String,
    /// As configured: `ip:port` or `host:port`. The pool never connects; this is for operators.
    pub address: String,
    pub weight: u32,
    pub cost: Cost,
    /// ISO 4217 codes this provider takes; empty: any.
    pub currencies: Vec<String>,
    /// Tenants this provider serves; empty: any.
    pub tenants: Vec<String>,
}

pub type Provider = ProviderSpec;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PoolError {
    #[error("a pool needs at least one provider")]
    Empty,
    #[error("a pool holds at most {MAX_PROVIDERS} providers")]
    TooMany,
    #[error("provider {0:?}: weight must be between 1 and {MAX_WEIGHT}")]
    BadWeight(String),
    #[error("provider name {0:?} is used twice")]
    DuplicateName(String),
    #[error("provider {0:?}: {1:?} is not an ISO 4217 currency code")]
    BadCurrency(String, String),
}

/// The providers a request has already tried, by index (pools hold at most 64).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TriedSet(u64);

impl TriedSet {
    pub fn insert(&mut self, index: usize) {
        self.0 |= 1 << index;
    }

    pub fn contains(self, index: usize) -> bool {
        self.0 & (1 << index) != 0
    }

    pub fn len(self) -> usize {
        self.0.count_ones() as usize
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Bit i set: provider i was tried.
    pub fn bits(self) -> u64 {
        self.0
    }
}

/// What the pool needs to know about one attempt.
#[derive(Debug, Clone, Copy, Default)]
pub struct Selection<'a> {
    pub tenant: &'a str,
    pub currency: Option<&'a str>,
    pub tried: TriedSet,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SelectError {
    #[error("no provider of the pool is available for this request now")]
    NoneAvailable,
    #[error("no provider of the pool takes this currency")]
    CurrencyUnsupported,
    #[error("no provider of the pool serves this tenant")]
    TenantNotServed,
}

/// Why an attempt failed, for the retry decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryCause {
    /// Nothing was sent: always safe to try another provider.
    ConnectFailed,
    TimedOut,
    ServerError,
    Broken,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryVerdict {
    Retry,
    /// Bytes may have reached the provider and the method is not idempotent.
    NotIdempotent,
    AttemptsExhausted,
    BudgetExhausted,
}

/// A provider as operators see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderStatus {
    pub name: String,
    pub address: String,
    pub weight: u32,
    pub cost: Cost,
    pub currencies: Vec<String>,
    pub tenants: Vec<String>,
    /// `admitted`, `unhealthy` (active checks fail), `ejected`, `probing` (ejection over,
    /// waiting for a successful probe), or `unresolved` (its host name has no address yet).
    pub state: &'static str,
    pub ejected_for: Option<Duration>,
    pub active_healthy: bool,
    pub consecutive_failures: u32,
    pub ejections: u32,
    pub success_rate: Decimal,
    pub latency_ms: Option<Decimal>,
    pub score: Decimal,
    pub effective_weight: u32,
}

pub type CurrencyCode = [u8; 3];

/// An ISO 4217-shaped code (three ASCII letters, any case), upper-cased.
pub fn currency_code(code: &str) -> Option<CurrencyCode> {
    let bytes = code.trim().as_bytes();
    if bytes.len() != 3 || !bytes.iter().all(u8::is_ascii_alphabetic) {
        return None;
    }
    Some([
        bytes[0].to_ascii_uppercase(),
        bytes[1].to_ascii_uppercase(),
        bytes[2].to_ascii_uppercase(),
    ])
}

#[derive(Debug)]
pub struct Pool {
    name: String,
    providers: Vec<Provider>,
    /// Shared with the pool this one replaced (a reload) for providers it kept.
    health: Vec<Arc<ProviderHealth>>,
    policy: PoolPolicy,
    selector: ArcSwap<Selector>,
    scores: ArcSwap<Scores>,
    budget: RetryBudget,
    /// Providers ejected now; changed only by compare-and-swap so concurrent failures can never
    /// eject more than `max_ejection_percent` allows.
    ejected: AtomicUsize,
    /// Bit i set: provider i has an address to connect to (always, for an IP address; once its
    /// host name resolved, for a name).
    resolved: AtomicU64,
    currency_masks: HashMap<CurrencyCode, u64>,
    any_currency: u64,
    tenant_masks: HashMap<String, u64>,
    any_tenant: u64,
}

impl Pool {
    pub fn new(
        name: impl Into<String>,
        specs: Vec<ProviderSpec>,
        policy: PoolPolicy,
    ) -> Result<Self, PoolError> {
        Self::replacing(name, specs, policy, None)
    }

    /// A pool that takes over from `previous` (a reload): every provider whose name and address
    /// are unchanged keeps its health, ejection, failure count and averages (the same state,
    /// shared, so an attempt still finishing on the old pool counts on the new one), whether it
    /// has an address, and, when the effective weights come out the same, its place in the
    /// rotation. Removed providers' state goes with the old pool.
    pub fn replacing(
        name: impl Into<String>,
        specs: Vec<ProviderSpec>,
        policy: PoolPolicy,
        previous: Option<&Pool>,
    ) -> Result<Self, PoolError> {
        if specs.is_empty() {
            return Err(PoolError::Empty);
        }
        if specs.len() > MAX_PROVIDERS {
            return Err(PoolError::TooMany);
        }
        let mut currency_masks: HashMap<CurrencyCode, u64> = HashMap::new();
        let mut tenant_masks: HashMap<String, u64> = HashMap::new();
        let (mut any_currency, mut any_tenant) = (0u64, 0u64);
        for (i, spec) in specs.iter().enumerate() {
            if spec.weight == 0 || spec.weight > MAX_WEIGHT {
                return Err(PoolError::BadWeight(spec.name.clone()));
            }
            if specs[..i].iter().any(|s| s.name == spec.name) {
                return Err(PoolError::DuplicateName(spec.name.clone()));
            }
            let bit = 1u64 << i;
            if spec.currencies.is_empty() {
                any_currency |= bit;
            }
            for currency in &spec.currencies {
                let code = currency_code(currency)
                    .ok_or_else(|| PoolError::BadCurrency(spec.name.clone(), currency.clone()))?;
                *currency_masks.entry(code).or_default() |= bit;
            }
            if spec.tenants.is_empty() {
                any_tenant |= bit;
            }
            for tenant in &spec.tenants {
                *tenant_masks.entry(tenant.to_ascii_lowercase()).or_default() |= bit;
            }
        }
        let kept = |spec: &ProviderSpec| {
            let previous = previous?;
            let i = previous
                .providers
                .iter()
                .position(|p| p.name == spec.name && p.address == spec.address)?;
            Some((Arc::clone(&previous.health[i]), previous.is_resolved(i)))
        };
        let mut health = Vec::with_capacity(specs.len());
        let mut resolved = mask_of(specs.len());
        for (i, spec) in specs.iter().enumerate() {
            match kept(spec) {
                Some((state, is_resolved)) => {
                    health.push(state);
                    if !is_resolved {
                        resolved &= !(1 << i);
                    }
                }
                None => health.push(Arc::new(ProviderHealth::default())),
            }
        }
        let ejected = health
            .iter()
            .filter(|h| matches!(h.snapshot().admission, Admission::Ejected { .. }))
            .count();
        let scores = score(&score_inputs(&specs, &health), &policy.selection);
        let same_providers = previous.is_some_and(|p| {
            p.providers.len() == specs.len()
                && p.providers
                    .iter()
                    .zip(&specs)
                    .all(|(a, b)| a.name == b.name && a.address == b.address)
        });
        let selector = match previous {
            Some(p) if same_providers && p.selector.load().weights() == scores.effective => {
                p.selector.load_full()
            }
            _ => Arc::new(Selector::new(scores.effective.clone())),
        };
        Ok(Self {
            name: name.into(),
            selector: ArcSwap::new(selector),
            scores: ArcSwap::from_pointee(scores),
            budget: RetryBudget::new(policy.retry.budget_percent),
            ejected: AtomicUsize::new(ejected),
            resolved: AtomicU64::new(resolved),
            providers: specs,
            health,
            policy,
            currency_masks,
            any_currency,
            tenant_masks,
            any_tenant,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn providers(&self) -> &[Provider] {
        &self.providers
    }

    pub fn provider(&self, index: usize) -> Option<&Provider> {
        self.providers.get(index)
    }

    pub fn policy(&self) -> &PoolPolicy {
        &self.policy
    }

    /// Providers that may be chosen now, as a bitmask.
    pub fn live_mask(&self) -> u64 {
        self.health
            .iter()
            .enumerate()
            .filter(|(_, h)| h.selectable())
            .fold(0, |mask, (i, _)| mask | 1 << i)
            & self.resolved.load(Ordering::Acquire)
    }

    /// Records whether `provider` has an address to connect to. A provider without one is never
    /// chosen (its health and ejection state are kept for when it resolves again).
    pub fn set_resolved(&self, provider: usize, resolved: bool) {
        if provider >= self.providers.len() {
            return;
        }
        let bit = 1u64 << provider;
        if resolved {
            self.resolved.fetch_or(bit, Ordering::AcqRel);
        } else {
            self.resolved.fetch_and(!bit, Ordering::AcqRel);
        }
    }

    pub fn is_resolved(&self, provider: usize) -> bool {
        provider < self.providers.len()
            && self.resolved.load(Ordering::Acquire) & (1 << provider) != 0
    }

    /// The providers that may ever take this request: those serving its tenant and taking its
    /// currency, health and earlier attempts aside.
    pub fn candidates(&self, selection: &Selection<'_>) -> Result<u64, SelectError> {
        let tenant_mask = self
            .tenant_masks
            .get(selection.tenant)
            .copied()
            .unwrap_or(0)
            | self.any_tenant;
        if tenant_mask == 0 {
            return Err(SelectError::TenantNotServed);
        }
        let currency_mask = match selection.currency {
            None => u64::MAX,
            Some(code) => {
                let code = currency_code(code).ok_or(SelectError::CurrencyUnsupported)?;
                self.currency_masks.get(&code).copied().unwrap_or(0) | self.any_currency
            }
        };
        // Judged among the tenant's providers: none of those taking it is unsupported for them.
        if currency_mask & tenant_mask == 0 {
            return Err(SelectError::CurrencyUnsupported);
        }
        Ok(currency_mask & tenant_mask)
    }

    /// Picks the provider for one attempt: the next, by effective weight, among the
    /// [`candidates`](Self::candidates) that are healthy and admitted and were not tried.
    pub fn select(&self, selection: &Selection<'_>) -> Result<usize, SelectError> {
        let mask = self.live_mask() & self.candidates(selection)? & !selection.tried.0;
        self.selector
            .load()
            .pick(mask)
            .ok_or(SelectError::NoneAvailable)
    }

    /// Counts a request towards the retry budget.
    pub fn on_request(&self) {
        self.budget.on_request();
    }

    /// Whether an attempt that failed with `cause` may be retried on another provider, spending
    /// the retry budget when it may. `resendable`: the request may be sent again once a provider
    /// got it (an idempotent method, its body still buffered). `attempts` counts those made.
    pub fn may_retry(&self, cause: RetryCause, resendable: bool, attempts: u32) -> RetryVerdict {
        if cause == RetryCause::ConnectFailed {
            return RetryVerdict::Retry;
        }
        if !resendable {
            return RetryVerdict::NotIdempotent;
        }
        if attempts >= self.policy.retry.max_attempts {
            return RetryVerdict::AttemptsExhausted;
        }
        if !self.budget.try_spend() {
            return RetryVerdict::BudgetExhausted;
        }
        RetryVerdict::Retry
    }

    /// Records how an attempt at `provider` ended.
    pub fn record(
        &self,
        provider: usize,
        outcome: Outcome,
        latency: Duration,
        now: Instant,
    ) -> Option<Transition> {
        let health = self.health.get(provider)?;
        health.record_attempt(outcome, latency, now, &self.policy.outlier, || {
            self.reserve_ejection()
        })
    }

    /// Records a probe of `provider`; `active` when it is a configured health check.
    pub fn record_probe(
        &self,
        provider: usize,
        success: bool,
        now: Instant,
        active: bool,
    ) -> Vec<Transition> {
        let Some(health) = self.health.get(provider) else {
            return Vec::new();
        };
        let transitions = health.record_probe(success, now, active.then_some(&self.policy.health));
        if transitions.contains(&Transition::Readmitted) {
            let _ = self
                .ejected
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
        }
        transitions
    }

    pub fn awaits_probe(&self, provider: usize, now: Instant) -> bool {
        self.health
            .get(provider)
            .is_some_and(|h| h.awaits_probe(now))
    }

    /// Recomputes the effective weights from the latest measurements; keeps the rotations (and
    /// their positions) when nothing changed.
    pub fn refresh(&self) {
        // The ejection count follows the providers' (possibly shared) state: after a reload an
        // ejection or re-admission may have been counted by the pool this one replaced.
        let ejected = self
            .health
            .iter()
            .filter(|h| matches!(h.snapshot().admission, Admission::Ejected { .. }))
            .count();
        self.ejected.store(ejected, Ordering::Release);
        let scores = score(
            &score_inputs(&self.providers, &self.health),
            &self.policy.selection,
        );
        if scores.effective != self.selector.load().weights() {
            self.selector
                .store(Arc::new(Selector::new(scores.effective.clone())));
        }
        self.scores.store(Arc::new(scores));
    }

    /// How long a client should wait before trying again when nothing is available: until the
    /// first ejection ends, in whole seconds rounded up, at least one.
    pub fn retry_after_seconds(&self, now: Instant) -> u64 {
        let wait = self
            .health
            .iter()
            .filter_map(|h| match h.snapshot().admission {
                Admission::Ejected { until } => Some(until.saturating_duration_since(now)),
                Admission::Admitted => None,
            })
            .min()
            .unwrap_or_default();
        wait.as_secs()
            .saturating_add(u64::from(wait.subsec_nanos() > 0))
            .max(1)
    }

    pub fn status(&self, now: Instant) -> Vec<ProviderStatus> {
        let scores = self.scores.load();
        self.providers
            .iter()
            .zip(&self.health)
            .enumerate()
            .map(|(i, (p, h))| {
                let s = h.snapshot();
                let (state, ejected_for) = match s.admission {
                    _ if !self.is_resolved(i) => ("unresolved", None),
                    Admission::Ejected { until } if until > now => ("ejected", Some(until - now)),
                    Admission::Ejected { .. } => ("probing", None),
                    Admission::Admitted if !s.active_healthy => ("unhealthy", None),
                    Admission::Admitted => ("admitted", None),
                };
                ProviderStatus {
                    name: p.name.clone(),
                    address: p.address.clone(),
                    weight: p.weight,
                    cost: p.cost,
                    currencies: p.currencies.clone(),
                    tenants: p.tenants.clone(),
                    state,
                    ejected_for,
                    active_healthy: s.active_healthy,
                    consecutive_failures: s.consecutive_failures,
                    ejections: s.ejections,
                    success_rate: (Decimal::from(s.success_ppm) / Decimal::from(1_000_000u32))
                        .round_dp(4),
                    latency_ms: s
                        .latency_us
                        .map(|us| (Decimal::from(us) / Decimal::ONE_THOUSAND).round_dp(3)),
                    score: scores
                        .scores
                        .get(i)
                        .copied()
                        .unwrap_or_default()
                        .round_dp(4),
                    effective_weight: scores.effective.get(i).copied().unwrap_or_default(),
                }
            })
            .collect()
    }

    /// Takes one of the pool's ejection slots: at most `max_ejection_percent` of the pool is
    /// ejected at once, but one provider always may be.
    fn reserve_ejection(&self) -> bool {
        let percent = self.policy.outlier.max_ejection_percent as usize;
        let allowed = (self.providers.len() * percent / 100).max(1);
        self.ejected
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < allowed).then_some(n + 1)
            })
            .is_ok()
    }
}

/// The lowest `n` bits set.
fn mask_of(n: usize) -> u64 {
    if n >= 64 { u64::MAX } else { (1u64 << n) - 1 }
}

fn score_inputs(providers: &[Provider], health: &[Arc<ProviderHealth>]) -> Vec<ScoreInput> {
    providers
        .iter()
        .zip(health)
        .map(|(p, h)| ScoreInput {
            weight: p.weight,
            cost: p.cost,
            health: h.snapshot(),
        })
        .collect()
}
