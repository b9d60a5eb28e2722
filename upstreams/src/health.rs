//! One provider's health: active check streaks, passive consecutive failures, ejection, and the
//! success-rate and latency averages the selection weighs.
//!
//! The request path touches atomics only; the mutex is taken on the rare transitions (an
//! ejection, a re-admission).

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::policy::{HealthPolicy, OutlierPolicy};

const PPM: u32 = 1_000_000;
/// Smoothing of the averages: each new sample weighs 1/16 (success) and 1/8 (latency).
const SUCCESS_SHIFT: u32 = 4;
const LATENCY_SHIFT: u32 = 3;

/// How one attempt at a provider ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The provider answered with this status.
    Answered(u16),
    /// No connection could be made: nothing was sent.
    ConnectFailed,
    /// The provider did not answer in time.
    TimedOut,
    /// The exchange broke after the connection was made.
    Broken,
}

/// A change in whether a provider may be chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    Ejected { duration: Duration, ejections: u32 },
    Readmitted,
    BecameUnhealthy,
    BecameHealthy,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Admitted,
    /// Out of rotation until `until`, then until a probe succeeds.
    Ejected {
        until: Instant,
    },
}

#[derive(Debug)]
struct Ejection {
    admission: Admission,
    ejections: u32,
    readmitted_at: Option<Instant>,
}

#[derive(Debug)]
pub struct ProviderHealth {
    admitted: AtomicBool,
    active_healthy: AtomicBool,
    active_successes: AtomicU32,
    active_failures: AtomicU32,
    consecutive_failures: AtomicU32,
    success_ppm: AtomicU32,
    latency_us: AtomicU64,
    ejection: Mutex<Ejection>,
}

impl Default for ProviderHealth {
    fn default() -> Self {
        Self {
            admitted: AtomicBool::new(true),
            active_healthy: AtomicBool::new(true),
            active_successes: AtomicU32::new(0),
            active_failures: AtomicU32::new(0),
            consecutive_failures: AtomicU32::new(0),
            success_ppm: AtomicU32::new(PPM),
            latency_us: AtomicU64::new(0),
            ejection: Mutex::new(Ejection {
                admission: Admission::Admitted,
                ejections: 0,
                readmitted_at: None,
            }),
        }
    }
}

/// A point-in-time view, for scoring and for operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthSnapshot {
    pub admission: Admission,
    pub active_healthy: bool,
    pub consecutive_failures: u32,
    pub ejections: u32,
    /// Parts per million.
    pub success_ppm: u32,
    /// Microseconds; `None` before the first answered attempt.
    pub latency_us: Option<u64>,
}

impl HealthSnapshot {
    pub fn selectable(&self) -> bool {
        self.admission == Admission::Admitted && self.active_healthy
    }
}

impl ProviderHealth {
    /// Whether the provider may be chosen now (lock-free).
    pub fn selectable(&self) -> bool {
        self.admitted.load(Ordering::Acquire) && self.active_healthy.load(Ordering::Acquire)
    }

    pub fn is_admitted(&self) -> bool {
        self.admitted.load(Ordering::Acquire)
    }

    pub fn snapshot(&self) -> HealthSnapshot {
        let latency = self.latency_us.load(Ordering::Relaxed);
        let (admission, ejections) = {
            let e = self.lock();
            (e.admission, e.ejections)
        };
        HealthSnapshot {
            admission,
            active_healthy: self.active_healthy.load(Ordering::Acquire),
            consecutive_failures: self.consecutive_failures.load(Ordering::Relaxed),
            ejections,
            success_ppm: self.success_ppm.load(Ordering::Relaxed),
            latency_us: (latency > 0).then_some(latency),
        }
    }

    /// Records a request's attempt. `may_eject` says whether the pool can spare one more ejected
    /// provider; it is asked only when this failure would eject.
    pub fn record_attempt(
        &self,
        outcome: Outcome,
        latency: Duration,
        now: Instant,
        policy: &OutlierPolicy,
        may_eject: impl FnOnce() -> bool,
    ) -> Option<Transition> {
        let kinds = &policy.failure_kinds;
        // A failure of a kind the policy does not count is neutral: neither a success nor a
        // failure for the averages and the streak.
        let (failure, counted) = match outcome {
            Outcome::Answered(status) => (status >= 500, kinds.status_5xx),
            Outcome::ConnectFailed | Outcome::Broken => (true, kinds.connect_error),
            Outcome::TimedOut => (true, kinds.timeout),
        };
        if let Outcome::Answered(_) = outcome {
            self.update_latency(latency);
        }
        if failure && !counted {
            return None;
        }
        self.update_success_rate(!failure);
        if !failure {
            if self.consecutive_failures.load(Ordering::Relaxed) != 0 {
                self.consecutive_failures.store(0, Ordering::Relaxed);
            }
            return None;
        }
        let failures = self.consecutive_failures.fetch_add(1, Ordering::AcqRel) + 1;
        if failures < policy.consecutive_failures || !self.is_admitted() {
            return None;
        }
        let mut ejection = self.lock();
        if ejection.admission != Admission::Admitted || !may_eject() {
            return None;
        }
        if ejection
            .readmitted_at
            .is_some_and(|at| now.saturating_duration_since(at) > policy.max_ejection)
        {
            ejection.ejections = 0;
        }
        ejection.ejections += 1;
        let duration = policy
            .base_ejection
            .saturating_mul(ejection.ejections)
            .min(policy.max_ejection);
        ejection.admission = Admission::Ejected {
            until: now + duration,
        };
        self.admitted.store(false, Ordering::Release);
        Some(Transition::Ejected {
            duration,
            ejections: ejection.ejections,
        })
    }

    /// Records a probe of the provider (an active health check, or the connect probe of an
    /// ejected provider). `active` says whether it counts towards the health thresholds.
    pub fn record_probe(
        &self,
        success: bool,
        now: Instant,
        active: Option<&HealthPolicy>,
    ) -> Vec<Transition> {
        let mut transitions = Vec::new();
        if let Some(policy) = active {
            let (streak, other) = if success {
                (&self.active_successes, &self.active_failures)
            } else {
                (&self.active_failures, &self.active_successes)
            };
            other.store(0, Ordering::Relaxed);
            let n = streak.fetch_add(1, Ordering::AcqRel) + 1;
            let healthy = self.active_healthy.load(Ordering::Acquire);
            if success && !healthy && n >= policy.healthy_threshold {
                self.active_healthy.store(true, Ordering::Release);
                transitions.push(Transition::BecameHealthy);
            } else if !success && healthy && n >= policy.unhealthy_threshold {
                self.active_healthy.store(false, Ordering::Release);
                transitions.push(Transition::BecameUnhealthy);
            }
        }
        if success && self.probe_readmits(now) {
            transitions.push(Transition::Readmitted);
        }
        transitions
    }

    /// Whether the provider is ejected and its ejection is over, so a probe is due.
    pub fn awaits_probe(&self, now: Instant) -> bool {
        matches!(self.lock().admission, Admission::Ejected { until } if now >= until)
    }

    fn probe_readmits(&self, now: Instant) -> bool {
        let mut ejection = self.lock();
        match ejection.admission {
            Admission::Ejected { until } if now >= until => {
                ejection.admission = Admission::Admitted;
                ejection.readmitted_at = Some(now);
                self.consecutive_failures.store(0, Ordering::Relaxed);
                self.success_ppm.store(PPM, Ordering::Relaxed);
                self.admitted.store(true, Ordering::Release);
                true
            }
            _ => false,
        }
    }

    fn update_success_rate(&self, success: bool) {
        let sample = if success { PPM } else { 0 };
        let _ = self
            .success_ppm
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |old| {
                let next = old - (old >> SUCCESS_SHIFT) + (sample >> SUCCESS_SHIFT);
                (next != old).then_some(next)
            });
    }

    fn update_latency(&self, latency: Duration) {
        let sample = u64::try_from(latency.as_micros())
            .unwrap_or(u64::MAX)
            .max(1);
        let _ = self
            .latency_us
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |old| {
                Some(if old == 0 {
                    sample
                } else {
                    old - (old >> LATENCY_SHIFT) + (sample >> LATENCY_SHIFT)
                })
            });
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Ejection> {
        self.ejection.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> OutlierPolicy {
        OutlierPolicy {
            consecutive_failures: 3,
            base_ejection: Duration::from_secs(1),
            max_ejection: Duration::from_secs(3),
            ..OutlierPolicy::default()
        }
    }

    fn fail(h: &ProviderHealth, now: Instant) -> Option<Transition> {
        h.record_attempt(
            Outcome::Answered(503),
            Duration::from_millis(5),
            now,
            &policy(),
            || true,
        )
    }

    #[test]
    fn consecutive_failures_eject_and_a_success_resets_the_count() {
        let h = ProviderHealth::default();
        let t = Instant::now();
        assert_eq!(fail(&h, t), None);
        assert_eq!(fail(&h, t), None);
        h.record_attempt(
            Outcome::Answered(200),
            Duration::from_millis(5),
            t,
            &policy(),
            || true,
        );
        assert_eq!(fail(&h, t), None);
        assert_eq!(fail(&h, t), None);
        assert_eq!(
            fail(&h, t),
            Some(Transition::Ejected {
                duration: Duration::from_secs(1),
                ejections: 1
            })
        );
        assert!(!h.selectable());
    }

    #[test]
    fn an_ejected_provider_returns_only_after_a_successful_probe_past_its_ejection() {
        let h = ProviderHealth::default();
        let t = Instant::now();
        for _ in 0..3 {
            fail(&h, t);
        }
        assert!(
            h.record_probe(true, t + Duration::from_millis(500), None)
                .is_empty()
        );
        assert!(
            !h.selectable(),
            "a probe during the ejection does not re-admit"
        );
        assert!(!h.awaits_probe(t + Duration::from_millis(900)));
        assert!(h.awaits_probe(t + Duration::from_millis(1100)));
        assert!(
            !h.selectable(),
            "the end of the ejection alone does not re-admit"
        );
        assert!(
            h.record_probe(false, t + Duration::from_millis(1100), None)
                .is_empty()
        );
        assert_eq!(
            h.record_probe(true, t + Duration::from_millis(1200), None),
            vec![Transition::Readmitted]
        );
        assert!(h.selectable());
    }

    #[test]
    fn ejections_grow_up_to_the_maximum_and_reset_after_a_long_healthy_spell() {
        let h = ProviderHealth::default();
        let mut t = Instant::now();
        let mut durations = Vec::new();
        // Healthy for 1 s between the first four ejections, then for 10 s (over max_ejection).
        for healthy_spell in [1, 1, 1, 10, 1] {
            for _ in 0..3 {
                if let Some(Transition::Ejected { duration, .. }) = fail(&h, t) {
                    durations.push(duration.as_secs());
                }
            }
            t += Duration::from_secs(10);
            h.record_probe(true, t, None);
            t += Duration::from_secs(healthy_spell);
        }
        assert_eq!(durations, vec![1, 2, 3, 3, 1]);
    }

    #[test]
    fn the_pool_can_veto_an_ejection() {
        let h = ProviderHealth::default();
        let t = Instant::now();
        for _ in 0..5 {
            let tr = h.record_attempt(Outcome::TimedOut, Duration::ZERO, t, &policy(), || false);
            assert_eq!(tr, None);
        }
        assert!(h.selectable());
    }

    #[test]
    fn failure_kinds_are_configurable() {
        let h = ProviderHealth::default();
        let mut p = policy();
        p.failure_kinds.status_5xx = false;
        for _ in 0..5 {
            assert_eq!(
                h.record_attempt(
                    Outcome::Answered(500),
                    Duration::ZERO,
                    Instant::now(),
                    &p,
                    || true
                ),
                None
            );
        }
        assert!(h.selectable());
    }

    #[test]
    fn active_checks_flip_health_at_the_thresholds() {
        let h = ProviderHealth::default();
        let p = HealthPolicy {
            healthy_threshold: 2,
            unhealthy_threshold: 3,
        };
        let t = Instant::now();
        assert!(h.record_probe(false, t, Some(&p)).is_empty());
        assert!(h.record_probe(false, t, Some(&p)).is_empty());
        assert_eq!(
            h.record_probe(false, t, Some(&p)),
            vec![Transition::BecameUnhealthy]
        );
        assert!(!h.selectable());
        assert!(h.record_probe(true, t, Some(&p)).is_empty());
        assert_eq!(
            h.record_probe(true, t, Some(&p)),
            vec![Transition::BecameHealthy]
        );
        assert!(h.selectable());
    }

    #[test]
    fn averages_follow_the_samples() {
        let h = ProviderHealth::default();
        let t = Instant::now();
        for _ in 0..64 {
            h.record_attempt(
                Outcome::Answered(200),
                Duration::from_millis(20),
                t,
                &policy(),
                || false,
            );
        }
        let s = h.snapshot();
        assert_eq!(s.success_ppm, PPM);
        assert!((19_000..=21_000).contains(&s.latency_us.unwrap()), "{s:?}");
        for _ in 0..64 {
            h.record_attempt(
                Outcome::Answered(502),
                Duration::from_millis(20),
                t,
                &policy(),
                || false,
            );
        }
        assert!(h.snapshot().success_ppm < 50_000);
    }
}
