//! The smooth weighted round-robin order (nginx's algorithm), computed once per set of weights.

/// One full cycle of provider indices in which each provider appears `weight / gcd` times and
/// never more than its share plus one in any window of the cycle's length.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    order: Vec<u8>,
}

impl Schedule {
    /// `weights[i]` is provider `i`'s weight; zero-weight providers never appear.
    /// At most 256 providers (indices are stored as `u8`).
    pub fn new(weights: &[u32]) -> Self {
        assert!(weights.len() <= 256, "at most 256 providers in a schedule");
        let divisor = weights.iter().copied().filter(|w| *w > 0).fold(0, gcd);
        if divisor == 0 {
            return Self { order: Vec::new() };
        }
        let weights: Vec<i64> = weights.iter().map(|w| i64::from(w / divisor)).collect();
        let total: i64 = weights.iter().sum();
        let mut current = vec![0i64; weights.len()];
        let mut order = Vec::with_capacity(total as usize);
        for _ in 0..total {
            for (c, w) in current.iter_mut().zip(&weights) {
                *c += w;
            }
            let (best, _) = current
                .iter()
                .enumerate()
                .max_by_key(|(i, c)| (**c, std::cmp::Reverse(*i)))
                .unwrap_or((0, &0));
            current[best] -= total;
            order.push(best as u8);
        }
        Self { order }
    }

    pub fn len(&self) -> usize {
        self.order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// The provider at `position` (taken modulo the cycle length). `None` for an empty schedule.
    pub fn at(&self, position: usize) -> Option<usize> {
        if self.order.is_empty() {
            return None;
        }
        Some(usize::from(self.order[position % self.order.len()]))
    }
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 { a } else { gcd(b, a % b) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interleaves_instead_of_bursting() {
        let s = Schedule::new(&[5, 1, 1]);
        let order: Vec<usize> = (0..s.len()).filter_map(|i| s.at(i)).collect();
        assert_eq!(order, vec![0, 0, 1, 0, 2, 0, 0]);
    }

    #[test]
    fn reduces_by_the_common_divisor_and_skips_zero_weights() {
        let s = Schedule::new(&[200, 0, 100]);
        assert_eq!(s.len(), 3);
        assert_eq!((0..3).filter(|i| s.at(*i) == Some(0)).count(), 2);
        assert!((0..3).all(|i| s.at(i) != Some(1)));
        assert!(Schedule::new(&[0, 0]).is_empty());
        assert_eq!(Schedule::new(&[]).at(3), None);
    }
}
