//! The pool's public behaviour: distribution, smoothness, eligibility, ejection limits and the
//! retry policy.

use std::time::{Duration, Instant};

use payedge_upstreams::*;
use rust_decimal_macros::dec;

fn spec(i: usize, weight: u32) -> ProviderSpec {
    ProviderSpec {
        name: format!("p{i}"),
        address: format!("127.0.0.1:{}", 9000 + i),
        weight,
        cost: Cost::default(),
        currencies: Vec::new(),
        tenants: Vec::new(),
    }
}

fn pool_of(specs: Vec<ProviderSpec>, policy: PoolPolicy) -> Pool {
    Pool::new("cards", specs, policy).unwrap()
}

fn weighted(weights: &[u32]) -> Pool {
    pool_of(
        weights
            .iter()
            .enumerate()
            .map(|(i, w)| spec(i, *w))
            .collect(),
        PoolPolicy::default(),
    )
}

fn pick(pool: &Pool) -> usize {
    pool.select(&Selection {
        tenant: "blue",
        ..Selection::default()
    })
    .unwrap()
}

fn counts(pool: &Pool, picks: usize) -> Vec<usize> {
    let mut counts = vec![0; pool.providers().len()];
    for _ in 0..picks {
        counts[pick(pool)] += 1;
    }
    counts
}

fn eject(pool: &Pool, provider: usize, now: Instant) -> Option<Transition> {
    let mut last = None;
    for _ in 0..pool.policy().outlier.consecutive_failures {
        last = pool.record(
            provider,
            Outcome::Answered(503),
            Duration::from_millis(1),
            now,
        );
    }
    last
}

#[test]
fn distribution_follows_weights_within_three_percent_over_10000_picks() {
    let weights = [50, 30, 15, 5];
    let pool = weighted(&weights);
    let counts = counts(&pool, 10_000);
    for (count, weight) in counts.iter().zip(weights) {
        let expected = 10_000.0 * f64::from(weight) / 100.0;
        assert!(
            (*count as f64 - expected).abs() <= expected * 0.03,
            "{counts:?} against weights {weights:?}"
        );
    }
}

#[test]
fn no_provider_exceeds_its_share_plus_one_in_any_window() {
    let weights = [7, 3, 2];
    let total: u32 = weights.iter().sum();
    let pool = weighted(&weights);
    let picks: Vec<usize> = (0..1_200).map(|_| pick(&pool)).collect();
    for window in picks.windows(total as usize) {
        for (i, weight) in weights.iter().enumerate() {
            let seen = window.iter().filter(|p| **p == i).count();
            assert!(
                seen <= *weight as usize + 1,
                "provider {i}: {seen} in {window:?}"
            );
        }
    }
}

#[test]
fn tried_providers_are_skipped_until_none_is_left() {
    let pool = weighted(&[1, 1, 1]);
    let mut tried = TriedSet::default();
    for _ in 0..3 {
        let picked = pool
            .select(&Selection {
                tenant: "blue",
                currency: None,
                tried,
            })
            .unwrap();
        assert!(!tried.contains(picked));
        tried.insert(picked);
    }
    assert_eq!(
        pool.select(&Selection {
            tenant: "blue",
            currency: None,
            tried
        }),
        Err(SelectError::NoneAvailable)
    );
}

#[test]
fn ejected_providers_are_never_chosen_and_the_rest_keep_their_ratio() {
    let pool = weighted(&[2, 1, 1]);
    let now = Instant::now();
    assert!(matches!(
        eject(&pool, 0, now),
        Some(Transition::Ejected { .. })
    ));
    let counts = counts(&pool, 1_000);
    assert_eq!(counts, vec![0, 500, 500]);
}

#[test]
fn unhealthy_providers_are_never_chosen_until_healthy_again() {
    let pool = weighted(&[1, 1]);
    let now = Instant::now();
    let threshold = pool.policy().health.unhealthy_threshold;
    for _ in 0..threshold {
        pool.record_probe(1, false, now, true);
    }
    assert_eq!(counts(&pool, 100), vec![100, 0]);
    for _ in 0..pool.policy().health.healthy_threshold {
        pool.record_probe(1, true, now, true);
    }
    assert_eq!(counts(&pool, 100), vec![50, 50]);
}

#[test]
fn currencies_and_tenants_restrict_who_may_be_chosen() {
    let mut eur_only = spec(0, 5);
    eur_only.currencies = vec!["EUR".into()];
    let mut blue_only = spec(1, 1);
    blue_only.tenants = vec!["blue".into()];
    let mut usd_gbp = spec(2, 1);
    usd_gbp.currencies = vec!["usd".into(), "GBP".into()];
    let pool = pool_of(vec![eur_only, blue_only, usd_gbp], PoolPolicy::default());
    let select = |tenant: &'static str, currency: Option<&'static str>| {
        pool.select(&Selection {
            tenant,
            currency,
            tried: TriedSet::default(),
        })
    };
    for _ in 0..20 {
        assert_ne!(
            select("blue", Some("USD")),
            Ok(0),
            "EUR-only provider chosen for USD"
        );
        assert_ne!(
            select("green", Some("eur")),
            Ok(1),
            "blue-only provider chosen for green"
        );
    }
    assert_eq!(select("green", Some("GBP")), Ok(2));
    assert_eq!(
        select("green", Some("JPY")),
        Err(SelectError::CurrencyUnsupported)
    );
    assert_eq!(
        select("green", Some("euro")),
        Err(SelectError::CurrencyUnsupported)
    );
    // A currency some provider takes, but not one that serves the tenant and is up: unavailable.
    let now = Instant::now();
    eject(&pool, 2, now);
    assert_eq!(
        select("green", Some("GBP")),
        Err(SelectError::NoneAvailable)
    );
    assert_eq!(select("blue", Some("GBP")), Ok(1));
}

#[test]
fn a_tenant_no_provider_serves_is_refused() {
    let mut blue_only = spec(0, 1);
    blue_only.tenants = vec!["blue".into()];
    let pool = pool_of(vec![blue_only], PoolPolicy::default());
    assert_eq!(
        pool.select(&Selection {
            tenant: "green",
            ..Selection::default()
        }),
        Err(SelectError::TenantNotServed)
    );
}

#[test]
fn cheaper_providers_are_preferred_when_cost_counts() {
    let mut cheap = spec(0, 1);
    cheap.cost = Cost {
        percent: dec!(1.5),
        fixed: dec!(0.10),
    };
    let mut dear = spec(1, 1);
    dear.cost = Cost {
        percent: dec!(3.0),
        fixed: dec!(0.20),
    };
    let mut policy = PoolPolicy::default();
    policy.selection.cost_weight = dec!(0.5);
    let pool = pool_of(vec![cheap.clone(), dear.clone()], policy);
    let split = counts(&pool, 1_000);
    assert!(split[0] > split[1], "{split:?}");
    // fees on 100: 1.60 and 3.20 → dear's factor 1 − 0.5 × 1.60/3.20 = 0.75: a 4:3 split
    // (1,000 picks are 142 cycles of 7 and a part of one, wherever the rotation started).
    assert!((571..=572).contains(&split[0]), "{split:?}");
    assert_eq!(split[0] + split[1], 1_000);

    let mut neutral = PoolPolicy::default();
    neutral.selection.cost_weight = dec!(0);
    let pool = pool_of(vec![cheap, dear], neutral);
    assert_eq!(counts(&pool, 1_000), vec![500, 500]);
}

#[test]
fn refresh_moves_traffic_away_from_a_failing_provider() {
    let pool = weighted(&[1, 1]);
    let now = Instant::now();
    for _ in 0..20 {
        pool.record(0, Outcome::Answered(200), Duration::from_millis(5), now);
        pool.record(1, Outcome::Answered(200), Duration::from_millis(5), now);
        pool.record(1, Outcome::Answered(500), Duration::from_millis(5), now);
        pool.record(1, Outcome::Answered(200), Duration::from_millis(5), now);
    }
    pool.refresh();
    let counts = counts(&pool, 1_000);
    assert!(counts[0] > counts[1] + 100, "{counts:?}");
    let status = pool.status(now);
    assert!(
        status[1].success_rate < status[0].success_rate,
        "{status:?}"
    );
}

#[test]
fn at_most_max_ejection_percent_is_ejected_but_always_one() {
    let mut policy = PoolPolicy::default();
    policy.outlier.max_ejection_percent = 50;
    let pool = pool_of((0..4).map(|i| spec(i, 1)).collect(), policy);
    let now = Instant::now();
    assert!(eject(&pool, 0, now).is_some());
    assert!(eject(&pool, 1, now).is_some());
    assert_eq!(
        eject(&pool, 2, now),
        None,
        "a third of four would exceed 50 %"
    );
    assert_eq!(pool.live_mask(), 0b1100);

    let mut strict = PoolPolicy::default();
    strict.outlier.max_ejection_percent = 0;
    let pool = pool_of((0..2).map(|i| spec(i, 1)).collect(), strict);
    assert!(eject(&pool, 0, now).is_some(), "one may always be ejected");
    assert_eq!(eject(&pool, 1, now), None);
}

#[test]
fn ejected_providers_come_back_after_a_successful_probe() {
    let pool = weighted(&[1, 1]);
    let now = Instant::now();
    let Some(Transition::Ejected { duration, .. }) = eject(&pool, 0, now) else {
        panic!("not ejected");
    };
    assert_eq!(pool.status(now)[0].state, "ejected");
    assert_eq!(pool.retry_after_seconds(now), duration.as_secs().max(1));
    let later = now + duration;
    assert!(pool.awaits_probe(0, later));
    assert_eq!(pool.status(later)[0].state, "probing");
    assert_eq!(
        pool.record_probe(0, true, later, false),
        vec![Transition::Readmitted]
    );
    assert_eq!(pool.status(later)[0].state, "admitted");
    assert_eq!(counts(&pool, 10), vec![5, 5]);
}

#[test]
fn the_retry_policy_never_resends_a_non_idempotent_request() {
    let pool = weighted(&[1, 1, 1]);
    assert_eq!(
        pool.may_retry(RetryCause::ConnectFailed, false, 1),
        RetryVerdict::Retry
    );
    for cause in [
        RetryCause::TimedOut,
        RetryCause::ServerError,
        RetryCause::Broken,
    ] {
        assert_eq!(pool.may_retry(cause, false, 1), RetryVerdict::NotIdempotent);
    }
    assert_eq!(
        pool.may_retry(RetryCause::TimedOut, true, 1),
        RetryVerdict::Retry
    );
    let max = pool.policy().retry.max_attempts;
    assert_eq!(
        pool.may_retry(RetryCause::ServerError, true, max),
        RetryVerdict::AttemptsExhausted
    );
}

#[test]
fn the_retry_budget_stops_a_retry_storm() {
    let pool = weighted(&[1, 1]);
    let mut verdicts = Vec::new();
    for _ in 0..100 {
        pool.on_request();
        verdicts.push(pool.may_retry(RetryCause::ServerError, true, 1));
    }
    let retried = verdicts
        .iter()
        .filter(|v| **v == RetryVerdict::Retry)
        .count();
    // The reserve of 10 plus 20 % of 100 requests.
    assert!((28..=30).contains(&retried), "{retried}");
    assert_eq!(verdicts.last(), Some(&RetryVerdict::BudgetExhausted));
    // Connect failovers are never budgeted: nothing was sent.
    assert_eq!(
        pool.may_retry(RetryCause::ConnectFailed, true, 1),
        RetryVerdict::Retry
    );
}

#[test]
fn invalid_pools_are_refused() {
    assert_eq!(
        Pool::new("x", vec![], PoolPolicy::default()).unwrap_err(),
        PoolError::Empty
    );
    assert_eq!(
        Pool::new("x", vec![spec(0, 0)], PoolPolicy::default()).unwrap_err(),
        PoolError::BadWeight("p0".into())
    );
    let mut bad = spec(0, 1);
    bad.currencies = vec!["EURO".into()];
    assert!(matches!(
        Pool::new("x", vec![bad], PoolPolicy::default()).unwrap_err(),
        PoolError::BadCurrency(..)
    ));
}

#[test]
fn concurrent_failures_never_eject_more_than_allowed() {
    for _ in 0..200 {
        let mut policy = PoolPolicy::default();
        policy.outlier.max_ejection_percent = 50;
        policy.outlier.consecutive_failures = 1;
        let pool = std::sync::Arc::new(pool_of((0..2).map(|i| spec(i, 1)).collect(), policy));
        let barrier = std::sync::Arc::new(std::sync::Barrier::new(2));
        let threads: Vec<_> = (0..2)
            .map(|provider| {
                let (pool, barrier) = (pool.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    pool.record(
                        provider,
                        Outcome::ConnectFailed,
                        Duration::ZERO,
                        Instant::now(),
                    )
                })
            })
            .collect();
        let ejected = threads
            .into_iter()
            .map(|t| t.join().unwrap())
            .filter(|t| matches!(t, Some(Transition::Ejected { .. })))
            .count();
        assert_eq!(ejected, 1, "one of two may be ejected at 50 %");
        assert_eq!(pool.live_mask().count_ones(), 1);
    }
}

#[test]
fn a_provider_without_an_address_is_never_chosen_and_keeps_its_state() {
    let pool = weighted(&[1, 1]);
    pool.set_resolved(0, false);
    assert!(!pool.is_resolved(0));
    assert_eq!(counts(&pool, 20), vec![0, 20]);
    assert_eq!(pool.status(Instant::now())[0].state, "unresolved");
    // An ejected provider that loses its address and regains it is still ejected.
    let now = Instant::now();
    pool.set_resolved(0, true);
    assert!(eject(&pool, 0, now).is_some());
    pool.set_resolved(0, false);
    pool.set_resolved(0, true);
    assert_eq!(pool.status(now)[0].state, "ejected");
    assert_eq!(counts(&pool, 10), vec![0, 10]);
    pool.set_resolved(1, false);
    assert_eq!(
        pool.select(&Selection {
            tenant: "blue",
            ..Selection::default()
        }),
        Err(SelectError::NoneAvailable)
    );
    // Out of range is ignored.
    pool.set_resolved(64, false);
}

#[test]
fn a_replacing_pool_keeps_the_state_of_providers_it_keeps() {
    let now = Instant::now();
    let old = weighted(&[1, 1, 1]);
    assert!(eject(&old, 0, now).is_some());
    old.record(1, Outcome::ConnectFailed, Duration::from_millis(1), now);
    old.set_resolved(2, false);

    // p0 kept (still ejected), p1 kept with a new weight (its failure streak kept), p2 kept
    // (still without an address), p3 new.
    let mut specs = vec![spec(0, 1), spec(1, 5), spec(2, 1), spec(3, 1)];
    specs[1].cost = Cost::default();
    let new = Pool::replacing("cards", specs, PoolPolicy::default(), Some(&old)).unwrap();
    let status = new.status(now);
    assert_eq!(status[0].state, "ejected");
    assert_eq!(status[0].ejections, 1);
    assert_eq!(status[1].consecutive_failures, 1);
    assert_eq!(status[2].state, "unresolved");
    assert_eq!(status[3].state, "admitted");
    assert_eq!(status[3].consecutive_failures, 0);
    // Only p1 and p3 are chosen: the reload re-admitted nothing.
    let picks = counts(&new, 60);
    assert_eq!(picks[0] + picks[2], 0, "{picks:?}");
    assert!(picks[1] > picks[3], "weights 5:1 {picks:?}");
    // The state is shared: an attempt finishing on the old pool counts on the new one.
    old.record(1, Outcome::ConnectFailed, Duration::from_millis(1), now);
    assert_eq!(new.status(now)[1].consecutive_failures, 2);

    // A provider whose address changed is a new provider.
    let mut moved = spec(0, 1);
    moved.address = "127.0.0.1:1".into();
    let fresh = Pool::replacing("cards", vec![moved], PoolPolicy::default(), Some(&new)).unwrap();
    assert_eq!(fresh.status(now)[0].state, "admitted");
}

#[test]
fn unchanged_weights_keep_the_place_in_the_rotation() {
    let old = weighted(&[3, 1]);
    let before: Vec<usize> = (0..3).map(|_| pick(&old)).collect();
    let specs = vec![spec(0, 3), spec(1, 1)];
    let new = Pool::replacing("cards", specs, PoolPolicy::default(), Some(&old)).unwrap();
    // The rotation continues where the old pool left it: over the four picks of a full cycle
    // (old's three plus new's first), each provider got exactly its share.
    let mut cycle = before.clone();
    cycle.push(pick(&new));
    assert_eq!(cycle.iter().filter(|p| **p == 0).count(), 3, "{cycle:?}");
    assert_eq!(cycle.iter().filter(|p| **p == 1).count(), 1, "{cycle:?}");
}
