//! A pool of providers and the per-attempt choice among them.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::schedule::Schedule;

pub const MAX_PROVIDERS: usize = 64;
pub const MAX_WEIGHT: u32 = 10_000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderSpec {
    pub name: String,
    pub address: SocketAddr,
    pub weight: u32,
}

#[derive(Debug)]
pub struct Provider {
    pub name: String,
    pub address: SocketAddr,
    pub weight: u32,
}

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
    #[error("no provider of the pool is available for this request")]
    NoneAvailable,
}

#[derive(Debug)]
pub struct Pool {
    name: String,
    providers: Vec<Provider>,
    schedule: Schedule,
    cursor: AtomicUsize,
}

impl Pool {
    pub fn new(name: impl Into<String>, specs: Vec<ProviderSpec>) -> Result<Self, PoolError> {
        if specs.is_empty() {
            return Err(PoolError::Empty);
        }
        if specs.len() > MAX_PROVIDERS {
            return Err(PoolError::TooMany);
        }
        for (i, spec) in specs.iter().enumerate() {
            if spec.weight == 0 || spec.weight > MAX_WEIGHT {
                return Err(PoolError::BadWeight(spec.name.clone()));
            }
            if specs[..i].iter().any(|s| s.name == spec.name) {
                return Err(PoolError::DuplicateName(spec.name.clone()));
            }
        }
        let weights: Vec<u32> = specs.iter().map(|s| s.weight).collect();
        Ok(Self {
            name: name.into(),
            schedule: Schedule::new(&weights),
            providers: specs
                .into_iter()
                .map(|s| Provider {
                    name: s.name,
                    address: s.address,
                    weight: s.weight,
                })
                .collect(),
            cursor: AtomicUsize::new(0),
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

    /// Picks the provider for one attempt: the next one in the weighted order that this request
    /// has not tried yet.
    pub fn select(&self, selection: &Selection<'_>) -> Result<usize, SelectError> {
        let start = self.cursor.fetch_add(1, Ordering::Relaxed);
        (0..self.schedule.len())
            .filter_map(|step| self.schedule.at(start.wrapping_add(step)))
            .find(|index| !selection.tried.contains(*index))
            .ok_or(SelectError::NoneAvailable)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(weights: &[u32]) -> Pool {
        let specs = weights
            .iter()
            .enumerate()
            .map(|(i, w)| ProviderSpec {
                name: format!("p{i}"),
                address: SocketAddr::from(([127, 0, 0, 1], 9000 + i as u16)),
                weight: *w,
            })
            .collect();
        Pool::new("cards", specs).unwrap()
    }

    fn counts(pool: &Pool, picks: usize) -> Vec<usize> {
        let mut counts = vec![0; pool.providers().len()];
        for _ in 0..picks {
            counts[pool.select(&Selection::default()).unwrap()] += 1;
        }
        counts
    }

    #[test]
    fn distribution_follows_weights_within_three_percent() {
        let weights = [50, 30, 15, 5];
        let p = pool(&weights);
        let counts = counts(&p, 10_000);
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
        let p = pool(&weights);
        let picks: Vec<usize> = (0..1_000)
            .map(|_| p.select(&Selection::default()).unwrap())
            .collect();
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
        let p = pool(&[1, 1, 1]);
        let mut tried = TriedSet::default();
        for _ in 0..3 {
            let picked = p
                .select(&Selection {
                    tried,
                    ..Selection::default()
                })
                .unwrap();
            assert!(!tried.contains(picked));
            tried.insert(picked);
        }
        assert_eq!(tried.len(), 3);
        assert_eq!(
            p.select(&Selection {
                tried,
                ..Selection::default()
            }),
            Err(SelectError::NoneAvailable)
        );
    }

    #[test]
    fn invalid_pools_are_refused() {
        assert_eq!(Pool::new("x", vec![]).unwrap_err(), PoolError::Empty);
        let spec = |name: &str, weight| ProviderSpec {
            name: name.into(),
            address: SocketAddr::from(([127, 0, 0, 1], 1)),
            weight,
        };
        assert_eq!(
            Pool::new("x", vec![spec("a", 0)]).unwrap_err(),
            PoolError::BadWeight("a".into())
        );
        assert_eq!(
            Pool::new("x", vec![spec("a", 1), spec("a", 2)]).unwrap_err(),
            PoolError::DuplicateName("a".into())
        );
    }
}
