//! The rotation among the providers that can take a given request.
//!
//! Which providers can take a request depends on the moment (health, ejection) and on the request
//! (currency, tenant, providers already tried), so the choosable set is a bitmask computed per
//! attempt. Each distinct mask gets its own smooth weighted round robin, built on first use from
//! the current effective weights and cached, with its own cursor: traffic among any subset splits
//! exactly by effective weight instead of drifting towards whichever provider follows an
//! excluded one.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use arc_swap::ArcSwap;

use crate::schedule::Schedule;

/// Distinct masks kept per set of weights; beyond this a rotation is built for one use.
const MAX_CACHED_MASKS: usize = 128;

#[derive(Debug)]
struct Rotation {
    schedule: Schedule,
    cursor: AtomicUsize,
}

impl Rotation {
    fn new(weights: &[u32], mask: u64) -> Self {
        let masked: Vec<u32> = weights
            .iter()
            .enumerate()
            .map(|(i, w)| if mask & (1 << i) != 0 { *w } else { 0 })
            .collect();
        // A random start: position 0 of a smooth rotation is always its heaviest provider, and
        // rotations are rebuilt whenever weights change, so a fixed start would favour it.
        Self {
            schedule: Schedule::new(&masked),
            cursor: AtomicUsize::new(fastrand::usize(..)),
        }
    }

    fn next(&self) -> Option<usize> {
        self.schedule
            .at(self.cursor.fetch_add(1, Ordering::Relaxed))
    }
}

/// Rotations for one set of effective weights. Replaced whole when the weights change.
#[derive(Debug)]
pub struct Selector {
    weights: Vec<u32>,
    rotations: ArcSwap<HashMap<u64, Arc<Rotation>>>,
}

impl Selector {
    pub fn new(weights: Vec<u32>) -> Self {
        Self {
            weights,
            rotations: ArcSwap::from_pointee(HashMap::new()),
        }
    }

    pub fn weights(&self) -> &[u32] {
        &self.weights
    }

    /// The next provider among those in `mask` (bit i = provider i), or `None` for an empty mask.
    pub fn pick(&self, mask: u64) -> Option<usize> {
        if mask == 0 {
            return None;
        }
        if let Some(rotation) = self.rotations.load().get(&mask) {
            return rotation.next();
        }
        let rotation = Arc::new(Rotation::new(&self.weights, mask));
        let mut cached = Arc::clone(&rotation);
        self.rotations.rcu(|current| {
            if let Some(existing) = current.get(&mask) {
                cached = Arc::clone(existing);
                return Arc::clone(current);
            }
            if current.len() >= MAX_CACHED_MASKS {
                return Arc::clone(current);
            }
            let mut next = HashMap::clone(current);
            next.insert(mask, Arc::clone(&rotation));
            Arc::new(next)
        });
        cached.next()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_subset_splits_by_its_own_weights() {
        let selector = Selector::new(vec![1, 1, 1]);
        // Provider 0 excluded: 1 and 2 alternate exactly, no bias towards provider 1.
        let picks: Vec<usize> = (0..6).filter_map(|_| selector.pick(0b110)).collect();
        assert_eq!(picks.iter().filter(|p| **p == 1).count(), 3);
        assert_eq!(picks.iter().filter(|p| **p == 2).count(), 3);
        assert!(picks.iter().all(|p| *p != 0));
        assert_eq!(selector.pick(0), None);
        assert_eq!(selector.pick(0b100), Some(2));
    }
}
