//! The multi-factor score: how a provider's weight is scaled by its success rate, latency and
//! cost. All arithmetic is decimal (`rust_decimal`): a routing decision about money uses no
//! floating point.
//!
//! ```text
//! success = 1 − a + a × success_rate                  a = selection.success_rate_weight
//! latency = 1 − b × (L − L_min) / L                    b = selection.latency_weight
//! cost    = 1 − c × (F − F_min) / F                    c = selection.cost_weight
//! score   = success × latency × cost                   (0 … 1)
//! effective weight = weight × score
//! ```
//!
//! `L` is the provider's latency average and `F` its fee on `selection.reference_amount`;
//! `L_min` and `F_min` are the best among the providers that can be chosen. A provider without
//! latency samples yet is not penalised.

use rust_decimal::Decimal;

use crate::health::HealthSnapshot;
use crate::policy::{Cost, SelectionPolicy};

/// Effective weights are scaled so their sum stays below this (the schedule's length).
pub const MAX_SCHEDULE_LEN: u64 = 10_000;
/// Granularity of a score: a weight-1 provider's effective weight runs from 1 to 100.
const SCORE_STEPS: u32 = 100;

/// What scoring needs to know about one provider.
#[derive(Debug, Clone, Copy)]
pub struct ScoreInput {
    pub weight: u32,
    pub cost: Cost,
    pub health: HealthSnapshot,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scores {
    /// Per provider, 0 to 1.
    pub scores: Vec<Decimal>,
    /// Per provider, the integer weights the schedule uses (at least 1 each).
    pub effective: Vec<u32>,
}

pub fn score(inputs: &[ScoreInput], policy: &SelectionPolicy) -> Scores {
    let fee = |i: &ScoreInput| i.cost.fee_on(policy.reference_amount);
    let latency_ms = |i: &ScoreInput| {
        i.health
            .latency_us
            .map(|us| Decimal::from(us) / Decimal::ONE_THOUSAND)
    };
    let choosable: Vec<&ScoreInput> = {
        let live: Vec<&ScoreInput> = inputs.iter().filter(|i| i.health.selectable()).collect();
        if live.is_empty() {
            inputs.iter().collect()
        } else {
            live
        }
    };
    let min_fee = choosable.iter().map(|i| fee(i)).min().unwrap_or_default();
    let min_latency = choosable.iter().filter_map(|i| latency_ms(i)).min();

    let scores: Vec<Decimal> = inputs
        .iter()
        .map(|input| {
            let rate = Decimal::from(input.health.success_ppm) / Decimal::from(1_000_000u32);
            let success =
                Decimal::ONE - policy.success_rate_weight + policy.success_rate_weight * rate;
            let latency = match (latency_ms(input), min_latency) {
                (Some(l), Some(best)) if l > Decimal::ZERO => {
                    Decimal::ONE - policy.latency_weight * (l - best).max(Decimal::ZERO) / l
                }
                _ => Decimal::ONE,
            };
            let f = fee(input);
            let cost = if f > Decimal::ZERO {
                Decimal::ONE - policy.cost_weight * (f - min_fee).max(Decimal::ZERO) / f
            } else {
                Decimal::ONE
            };
            (success * latency * cost).clamp(Decimal::ZERO, Decimal::ONE)
        })
        .collect();

    let steps = Decimal::from(SCORE_STEPS);
    let mut effective: Vec<u64> = inputs
        .iter()
        .zip(&scores)
        .map(|(input, s)| {
            let raw = (Decimal::from(input.weight) * s * steps).round();
            u64::try_from(raw).unwrap_or(0).max(1)
        })
        .collect();
    let total: u64 = effective.iter().sum();
    if total > MAX_SCHEDULE_LEN {
        for e in &mut effective {
            *e = (*e * MAX_SCHEDULE_LEN / total).max(1);
        }
    }
    Scores {
        scores,
        effective: effective
            .into_iter()
            .map(|e| u32::try_from(e).unwrap_or(u32::MAX))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::Admission;
    use rust_decimal_macros::dec;

    fn input(weight: u32, percent: Decimal, fixed: Decimal, latency_us: Option<u64>) -> ScoreInput {
        ScoreInput {
            weight,
            cost: Cost { percent, fixed },
            health: HealthSnapshot {
                admission: Admission::Admitted,
                active_healthy: true,
                consecutive_failures: 0,
                ejections: 0,
                success_ppm: 1_000_000,
                latency_us,
            },
        }
    }

    fn only(cost: bool, latency: bool, success: bool) -> SelectionPolicy {
        let on = |b| if b { Decimal::ONE } else { Decimal::ZERO };
        SelectionPolicy {
            success_rate_weight: on(success),
            latency_weight: on(latency),
            cost_weight: on(cost),
            reference_amount: dec!(100),
        }
    }

    #[test]
    fn neutral_factors_keep_the_configured_ratio() {
        let s = score(
            &[
                input(3, dec!(0), dec!(0), None),
                input(1, dec!(0), dec!(0), None),
            ],
            &SelectionPolicy::default(),
        );
        assert_eq!(s.effective, vec![300, 100]);
        assert_eq!(s.scores, vec![Decimal::ONE, Decimal::ONE]);
    }

    #[test]
    fn the_worked_example_of_the_readme() {
        // acme: 1.9 % + 0.20 → fee 2.10 on 100; globex: 2.4 % + 0.10 → fee 2.50.
        // cost_weight 0.5: globex's cost factor = 1 − 0.5 × (2.50 − 2.10) / 2.50 = 0.92.
        // latency_weight 0.5: acme 40 ms, globex 20 ms → acme's factor = 1 − 0.5 × 20/40 = 0.75.
        let policy = SelectionPolicy {
            success_rate_weight: Decimal::ONE,
            latency_weight: dec!(0.5),
            cost_weight: dec!(0.5),
            reference_amount: dec!(100),
        };
        let mut acme = input(3, dec!(1.9), dec!(0.20), Some(40_000));
        acme.health.success_ppm = 900_000;
        let globex = input(1, dec!(2.4), dec!(0.10), Some(20_000));
        let s = score(&[acme, globex], &policy);
        // acme: 0.9 × 0.75 × 1 = 0.675 → 3 × 0.675 × 100 = 202.5 → 202 (half to even).
        // globex: 1 × 1 × 0.92 → 1 × 0.92 × 100 = 92. acme takes 202 of every 294 picks.
        assert_eq!(s.scores, vec![dec!(0.675), dec!(0.92)]);
        assert_eq!(s.effective, vec![202, 92]);
    }

    #[test]
    fn cheaper_providers_weigh_more_when_cost_counts() {
        let inputs = [
            input(1, dec!(1.0), dec!(0), None),
            input(1, dec!(2.0), dec!(0), None),
        ];
        let on = score(&inputs, &only(true, false, false));
        assert!(on.effective[0] > on.effective[1], "{on:?}");
        assert_eq!(on.effective, vec![100, 50]);
        let off = score(&inputs, &only(false, false, false));
        assert_eq!(off.effective, vec![100, 100]);
    }

    #[test]
    fn slow_and_failing_providers_weigh_less_but_never_nothing() {
        let mut failing = input(1, dec!(0), dec!(0), Some(1_000));
        failing.health.success_ppm = 0;
        let slow = input(1, dec!(0), dec!(0), Some(100_000));
        let fast = input(1, dec!(0), dec!(0), Some(1_000));
        let s = score(&[failing, slow, fast], &only(false, true, true));
        assert_eq!(s.effective[0], 1);
        assert_eq!(s.effective[1], 1);
        assert_eq!(s.effective[2], 100);
    }

    #[test]
    fn huge_weights_are_scaled_to_a_bounded_schedule() {
        let inputs: Vec<ScoreInput> = (0..64)
            .map(|_| input(10_000, dec!(0), dec!(0), None))
            .collect();
        let s = score(&inputs, &SelectionPolicy::default());
        let total: u64 = s.effective.iter().map(|e| u64::from(*e)).sum();
        assert!(total <= MAX_SCHEDULE_LEN, "{total}");
        assert!(s.effective.iter().all(|e| *e == s.effective[0]));
    }
}
