//! How a pool chooses, ejects and retries: plain values, validated by the caller.

use std::time::Duration;

use rust_decimal::Decimal;

/// A provider's price for one payment: `percent` of the amount plus `fixed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Cost {
    pub percent: Decimal,
    pub fixed: Decimal,
}

impl Cost {
    pub fn fee_on(&self, amount: Decimal) -> Decimal {
        amount * self.percent / Decimal::ONE_HUNDRED + self.fixed
    }
}

/// How much each measured factor moves a provider's effective weight (each 0 to 1; 0 ignores it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SelectionPolicy {
    pub success_rate_weight: Decimal,
    pub latency_weight: Decimal,
    pub cost_weight: Decimal,
    /// The payment amount the cost factor compares fees on.
    pub reference_amount: Decimal,
}

impl Default for SelectionPolicy {
    fn default() -> Self {
        Self {
            success_rate_weight: Decimal::ONE,
            latency_weight: Decimal::new(2, 1),
            cost_weight: Decimal::new(2, 1),
            reference_amount: Decimal::ONE_HUNDRED,
        }
    }
}

/// Which attempt outcomes count as failures for passive ejection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FailureKinds {
    pub connect_error: bool,
    pub timeout: bool,
    pub status_5xx: bool,
}

impl Default for FailureKinds {
    fn default() -> Self {
        Self {
            connect_error: true,
            timeout: true,
            status_5xx: true,
        }
    }
}

/// Passive outlier detection, after Envoy's consecutive-failure ejection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutlierPolicy {
    /// Failures in a row that eject a provider.
    pub consecutive_failures: u32,
    pub failure_kinds: FailureKinds,
    /// The n-th ejection lasts `base_ejection × n`, at most `max_ejection`.
    pub base_ejection: Duration,
    pub max_ejection: Duration,
    /// At most this share of a pool is ejected at once (at least one provider may always be).
    pub max_ejection_percent: u32,
}

impl Default for OutlierPolicy {
    fn default() -> Self {
        Self {
            consecutive_failures: 5,
            failure_kinds: FailureKinds::default(),
            base_ejection: Duration::from_secs(5),
            max_ejection: Duration::from_secs(60),
            max_ejection_percent: 50,
        }
    }
}

/// Active health check thresholds (the checks themselves run outside this crate).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthPolicy {
    pub healthy_threshold: u32,
    pub unhealthy_threshold: u32,
}

impl Default for HealthPolicy {
    fn default() -> Self {
        Self {
            healthy_threshold: 2,
            unhealthy_threshold: 2,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all (the first included) for an idempotent request that timed out or got a
    /// 5xx. A refused connection always moves to the next provider, whatever this says.
    pub max_attempts: u32,
    /// Retries a pool may make, as a percentage of its requests.
    pub budget_percent: u32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 2,
            budget_percent: 20,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PoolPolicy {
    pub selection: SelectionPolicy,
    pub outlier: OutlierPolicy,
    pub health: HealthPolicy,
    pub retry: RetryPolicy,
}
