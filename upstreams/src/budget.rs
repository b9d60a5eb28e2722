//! A retry budget: every request earns a fraction of a retry, every retry spends one.
//!
//! Lock-free: one atomic balance in thousandths of a retry. The balance starts at, and never
//! exceeds, a small reserve, so a quiet period cannot save up a retry storm.

use std::sync::atomic::{AtomicI64, Ordering};

/// Retries that can be made before any request has earned one, and the most ever saved.
pub const RESERVE_RETRIES: i64 = 10;
const UNIT: i64 = 1_000;

#[derive(Debug)]
pub struct RetryBudget {
    earn_per_request: i64,
    balance: AtomicI64,
}

impl RetryBudget {
    pub fn new(percent: u32) -> Self {
        Self {
            earn_per_request: i64::from(percent) * UNIT / 100,
            balance: AtomicI64::new(RESERVE_RETRIES * UNIT),
        }
    }

    pub fn on_request(&self) {
        let cap = RESERVE_RETRIES * UNIT;
        let _ = self
            .balance
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |b| {
                (b < cap).then(|| (b + self.earn_per_request).min(cap))
            });
    }

    /// Spends one retry if the budget has one.
    pub fn try_spend(&self) -> bool {
        self.balance
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |b| {
                (b >= UNIT).then_some(b - UNIT)
            })
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reserve_then_the_percentage_of_requests() {
        let budget = RetryBudget::new(20);
        for _ in 0..RESERVE_RETRIES {
            assert!(budget.try_spend());
        }
        assert!(!budget.try_spend());
        for _ in 0..4 {
            budget.on_request();
        }
        assert!(!budget.try_spend(), "4 requests at 20% earn 0.8 retries");
        budget.on_request();
        assert!(budget.try_spend(), "5 requests at 20% earn one");
        assert!(!budget.try_spend());
    }

    #[test]
    fn quiet_periods_do_not_save_up_retries() {
        let budget = RetryBudget::new(20);
        for _ in 0..10_000 {
            budget.on_request();
        }
        let spent = (0..100).filter(|_| budget.try_spend()).count();
        assert_eq!(spent as i64, RESERVE_RETRIES);
    }
}
