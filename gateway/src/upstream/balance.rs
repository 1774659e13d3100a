//! Picking a target. Every pick skips targets that cannot take the request
//! (`usable` says which) and allocates nothing.

use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::config::upstream::Balance;

/// Points on the consistent-hash ring, shared among the targets by weight.
const RING_POINTS: usize = 1 << 14;

#[derive(Debug)]
pub struct Balancer {
    kind: Kind,
    /// Running sums of the weights, for draws by weight.
    cumulative: Vec<u64>,
}

#[derive(Debug)]
enum Kind {
    /// A smooth weighted order (nginx's), walked by a shared counter.
    RoundRobin {
        order: Vec<u16>,
        next: AtomicUsize,
    },
    LeastRequest,
    /// Points sorted by hash, each naming a target.
    Ring(Vec<(u64, u16)>),
}

impl Balancer {
    pub fn new(balance: &Balance, weights: &[u32]) -> Self {
        let cumulative = weights
            .iter()
            .scan(0u64, |sum, &w| {
                *sum += u64::from(w);
                Some(*sum)
            })
            .collect();
        let kind = match balance {
            Balance::RoundRobin => Kind::RoundRobin {
                order: smooth_order(weights),
                next: AtomicUsize::new(0),
            },
            Balance::LeastRequest => Kind::LeastRequest,
            Balance::ConsistentHash(_) => Kind::Ring(ring(weights)),
        };
        Balancer { kind, cumulative }
    }

    /// A target that `usable` accepts: by the balance's rule, `key` being
    /// the consistent-hash key (without one, least-request picks).
    /// `in_flight` gives a target's requests in flight.
    pub fn pick(
        &self,
        key: Option<u64>,
        usable: impl Fn(usize) -> bool,
        in_flight: impl Fn(usize) -> u32,
    ) -> Option<usize> {
        if self.cumulative.len() == 1 {
            return usable(0).then_some(0);
        }
        match (&self.kind, key) {
            (Kind::RoundRobin { order, next }, _) => {
                let start = next.fetch_add(1, Ordering::Relaxed);
                (0..order.len())
                    .map(|i| usize::from(order[(start + i) % order.len()]))
                    .find(|&t| usable(t))
            }
            (Kind::Ring(points), Some(key)) => {
                let start = points.partition_point(|&(point, _)| point < key);
                (0..points.len())
                    .map(|i| usize::from(points[(start + i) % points.len()].1))
                    .find(|&t| usable(t))
            }
            (Kind::LeastRequest | Kind::Ring(_), _) => self.two_choices(&usable, &in_flight),
        }
    }

    /// Power of two choices: two targets drawn by weight, the one with fewer
    /// requests in flight wins (the first drawn on a tie, so an idle
    /// upstream is spread by weight).
    fn two_choices(&self, usable: &impl Fn(usize) -> bool, in_flight: &impl Fn(usize) -> u32) -> Option<usize> {
        let first = self.draw(usable)?;
        let Some(second) = self.draw(&|t| t != first && usable(t)) else {
            return Some(first);
        };
        Some(if in_flight(second) < in_flight(first) {
            second
        } else {
            first
        })
    }

    /// A usable target drawn by weight: a few draws over all targets, then
    /// (when most are unusable) a draw among the usable ones.
    fn draw(&self, usable: &impl Fn(usize) -> bool) -> Option<usize> {
        let total = *self.cumulative.last()?;
        for _ in 0..4 {
            let point = fastrand::u64(0..total);
            let t = self.cumulative.partition_point(|&sum| sum <= point);
            if usable(t) {
                return Some(t);
            }
        }
        let weight = |t: usize| self.cumulative[t] - if t == 0 { 0 } else { self.cumulative[t - 1] };
        let usable_total: u64 = (0..self.cumulative.len()).filter(|&t| usable(t)).map(weight).sum();
        if usable_total == 0 {
            return None;
        }
        let mut point = fastrand::u64(0..usable_total);
        (0..self.cumulative.len()).filter(|&t| usable(t)).find(|&t| {
            let w = weight(t);
            if point < w {
                true
            } else {
                point -= w;
                false
            }
        })
    }
}

/// nginx's smooth weighted round robin, unrolled once: weights 5, 1, 1 give
/// a a b a c a a, not a a a a a b c.
fn smooth_order(weights: &[u32]) -> Vec<u16> {
    let divisor = weights.iter().copied().fold(0, gcd).max(1);
    let weights: Vec<i64> = weights.iter().map(|&w| i64::from(w / divisor)).collect();
    let total: i64 = weights.iter().sum();
    let mut current = vec![0i64; weights.len()];
    (0..total)
        .map(|_| {
            for (c, w) in current.iter_mut().zip(&weights) {
                *c += w;
            }
            let best = (0..current.len())
                .max_by_key(|&i| (current[i], -(i as i64)))
                .unwrap_or(0);
            current[best] -= total;
            best as u16
        })
        .collect()
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// Each target gets points in proportion to its weight; a key goes to the
/// first point at or after its hash.
fn ring(weights: &[u32]) -> Vec<(u64, u16)> {
    let total: u64 = weights.iter().map(|&w| u64::from(w)).sum();
    let mut points = Vec::with_capacity(RING_POINTS + weights.len());
    for (t, &w) in weights.iter().enumerate() {
        let share = ((RING_POINTS as u64 * u64::from(w)) / total.max(1)).max(1);
        for i in 0..share {
            points.push((hash_of(&(t, i)), t as u16));
        }
    }
    points.sort_unstable();
    points
}

/// A hash that is the same on every node running this build.
pub fn hash_of(value: &impl Hash) -> u64 {
    let mut hasher = std::hash::DefaultHasher::new();
    value.hash(&mut hasher);
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_robin_follows_the_weights_smoothly() {
        assert_eq!(smooth_order(&[5, 1, 1]), [0, 0, 1, 0, 2, 0, 0]);
        assert_eq!(smooth_order(&[2, 2]), [0, 1]);
        let balancer = Balancer::new(&Balance::RoundRobin, &[2, 1]);
        let picks: Vec<usize> = (0..6).filter_map(|_| balancer.pick(None, |_| true, |_| 0)).collect();
        assert_eq!(picks, [0, 1, 0, 0, 1, 0]);
        // An unusable target's turns go to the next usable one.
        let picks: Vec<usize> = (0..3).filter_map(|_| balancer.pick(None, |t| t != 0, |_| 0)).collect();
        assert_eq!(picks, [1, 1, 1]);
        assert_eq!(balancer.pick(None, |_| false, |_| 0), None);
    }

    #[test]
    fn least_request_prefers_the_idler_target_and_spreads_by_weight_when_idle() {
        let balancer = Balancer::new(&Balance::LeastRequest, &[1, 1]);
        for _ in 0..100 {
            assert_eq!(balancer.pick(None, |_| true, |t| if t == 0 { 5 } else { 1 }), Some(1));
        }
        let weighted = Balancer::new(&Balance::LeastRequest, &[3, 1]);
        let firsts = (0..4000)
            .filter(|_| weighted.pick(None, |_| true, |_| 0) == Some(0))
            .count();
        // 3000 expected; a binomial spread of about 27.
        assert!((2700..3300).contains(&firsts), "{firsts}");
        assert_eq!(weighted.pick(None, |t| t == 1, |_| 0), Some(1));
        assert_eq!(weighted.pick(None, |_| false, |_| 0), None);
    }

    #[test]
    fn consistent_hash_keeps_keys_and_moves_only_a_lost_targets_keys() {
        let hash = Balance::ConsistentHash(crate::config::upstream::HashOn::ClientIp);
        let balancer = Balancer::new(&hash, &[1, 1, 1]);
        let keys: Vec<u64> = (0..300u32).map(|k| hash_of(&k)).collect();
        let before: Vec<usize> = keys
            .iter()
            .map(|&k| balancer.pick(Some(k), |_| true, |_| 0).expect("a target"))
            .collect();
        for t in 0..3 {
            let share = before.iter().filter(|&&p| p == t).count();
            assert!((50..150).contains(&share), "target {t} got {share} of 300 keys");
        }
        let after: Vec<usize> = keys
            .iter()
            .map(|&k| balancer.pick(Some(k), |t| t != 2, |_| 0).expect("a target"))
            .collect();
        for (b, a) in before.iter().zip(&after) {
            if *b != 2 {
                assert_eq!(a, b, "a key whose target stayed must not move");
            } else {
                assert_ne!(*a, 2);
            }
        }
    }
}
