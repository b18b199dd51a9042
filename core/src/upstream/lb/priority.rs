//! Priority levels (Envoy's "priority levels"): which share of requests each level of a
//! cluster's hosts gets, and which levels are in panic, from how many of each level's hosts are
//! usable (healthy and not ejected).
//!
//! A cluster's hosts carry a priority, 0 (the default, the most preferred) and up, contiguous.
//! With Envoy's math, for an overprovisioning factor `f` (percent; default 140, so 1.4):
//!
//! - the *health* of level P is `min(100, f × usable_P / hosts_P)` (0 for an empty level): a
//!   level with at least 1/1.4 ≈ 71.4 % of its hosts usable counts as fully healthy;
//! - the *normalized total health* is `min(100, Σ health)`;
//! - levels get load in order, each `health × 100 / normalized total` of what is left until
//!   100 % is assigned; what integer rounding leaves goes to the first level with health;
//! - while the normalized total is 100 no level is in panic. Below 100, a level whose share of
//!   usable hosts is below the panic threshold is in *panic*: every host of the level is picked
//!   as if healthy. When every level is in panic, the load follows the levels' host counts
//!   instead (Envoy's "total panic"): traffic spreads over every host of every level.
//! - with the panic threshold at 0 (panic off) and no usable host anywhere, no level gets load:
//!   nothing is picked.
//!
//! One level behaves as a cluster without priorities always did: it takes every request, and
//! is in panic when its usable share is below the threshold (and below 1/1.4 — the factor lets
//! a level lose ~28 % of its hosts before it counts as degraded).
//!
//! [`PriorityLoad::compute`] runs when health or hosts change, never per request; it reuses its
//! vectors (no allocation unless the number of levels grows). [`PriorityLoad::pick_level`] is
//! a walk over a few integers.

/// One level's hosts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LevelCount {
    /// Its hosts (present ones: a free slot is no host).
    pub hosts: u32,
    /// Those healthy and not ejected.
    pub usable: u32,
}

/// The share of requests (percent) each level gets, and which levels are in panic.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PriorityLoad {
    /// Per level: percent of requests; they add up to 100, or are all 0 when nothing may be
    /// picked (no host, or none usable with panic off).
    pub load: Vec<u32>,
    /// Per level: every host of the level is picked as if healthy.
    pub panic: Vec<bool>,
}

/// A level's health: `min(100, factor × usable / hosts)`, 0 for an empty level.
#[must_use]
pub fn level_health(level: LevelCount, overprovisioning_factor: u32) -> u32 {
    if level.hosts == 0 {
        return 0;
    }
    let h = u64::from(overprovisioning_factor).saturating_mul(u64::from(level.usable))
        / u64::from(level.hosts);
    h.min(100) as u32
}

impl PriorityLoad {
    /// The load and panic of `levels` (index = priority), see the module doc.
    pub fn compute(
        &mut self,
        levels: &[LevelCount],
        overprovisioning_factor: u32,
        panic_threshold_percent: u32,
    ) {
        self.load.clear();
        self.load.resize(levels.len(), 0);
        self.panic.clear();
        self.panic.resize(levels.len(), false);
        let total: u32 = levels
            .iter()
            .map(|&l| level_health(l, overprovisioning_factor))
            .sum::<u32>()
            .min(100);
        // Nothing has health (total 0): no share, and no first healthy level to round to.
        let mut left = 100u32;
        let mut first_healthy = None;
        for (i, &level) in levels.iter().enumerate() {
            let health = level_health(level, overprovisioning_factor);
            let share = (health * 100).checked_div(total).unwrap_or(0).min(left);
            self.load[i] = share;
            left -= share;
            if health > 0 && first_healthy.is_none() {
                first_healthy = Some(i);
            }
        }
        if let Some(i) = first_healthy {
            self.load[i] += left;
        }
        if total == 100 {
            return;
        }
        for (panic, &level) in self.panic.iter_mut().zip(levels) {
            // Envoy's integer share (truncated): below an integer threshold iff the exact one is.
            let usable_percent = if level.hosts == 0 {
                0
            } else {
                u64::from(level.usable) * 100 / u64::from(level.hosts)
            };
            *panic = usable_percent < u64::from(panic_threshold_percent);
        }
        let hosts: u64 = levels.iter().map(|l| u64::from(l.hosts)).sum();
        if hosts > 0 && self.panic.iter().all(|&p| p) {
            // Total panic: by host counts, the remainder to the first level with hosts.
            let mut left = 100u32;
            for (load, level) in self.load.iter_mut().zip(levels) {
                *load = (u64::from(level.hosts) * 100 / hosts) as u32;
                left -= *load;
            }
            if let Some(first) = levels.iter().position(|l| l.hosts > 0) {
                self.load[first] += left;
            }
        }
    }

    /// The level a request goes to, for `draw` in `0..100` (a random number, or a consistent
    /// hash's `hash % 100`): the first level whose cumulative load exceeds it. `None` when no
    /// level has load.
    #[must_use]
    pub fn pick_level(&self, draw: u32) -> Option<u32> {
        let mut cumulative = 0;
        for (i, &load) in self.load.iter().enumerate() {
            cumulative += load;
            if draw < cumulative {
                return Some(i as u32);
            }
        }
        None
    }

    /// The level that takes every request, if one does (no draw needed).
    #[must_use]
    pub fn sole_level(&self) -> Option<u32> {
        self.load.iter().position(|&l| l == 100).map(|i| i as u32)
    }

    /// Whether some level is in panic.
    #[must_use]
    pub fn any_panic(&self) -> bool {
        self.panic.iter().any(|&p| p)
    }

    /// Whether level `priority` is in panic (a level beyond the last is not).
    #[must_use]
    pub fn is_panic(&self, priority: u32) -> bool {
        self.panic.get(priority as usize).copied().unwrap_or(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn levels(counts: &[(u32, u32)]) -> Vec<LevelCount> {
        counts
            .iter()
            .map(|&(usable, hosts)| LevelCount { hosts, usable })
            .collect()
    }

    fn compute(counts: &[(u32, u32)], factor: u32, threshold: u32) -> PriorityLoad {
        let mut p = PriorityLoad::default();
        p.compute(&levels(counts), factor, threshold);
        p
    }

    /// Envoy's documented examples (load_balancing/priority: the table for two levels, factor
    /// 1.4): P0 at 100 % → 100/0; at 72 % → still 100 (72 × 1.4 > 100); at 71 % → 99/1;
    /// at 50 % → 70/30; at 25 % → 35/65; at 0 % → 0/100.
    #[test]
    fn two_levels_follow_envoys_table() {
        for (p0_usable, expected) in [
            (100, [100, 0]),
            (72, [100, 0]),
            (71, [99, 1]),
            (50, [70, 30]),
            (25, [35, 65]),
            (0, [0, 100]),
        ] {
            let p = compute(&[(p0_usable, 100), (100, 100)], 140, 50);
            assert_eq!(p.load, expected, "P0 {p0_usable} % usable");
            assert!(!p.any_panic(), "P1 is healthy: the total is 100, no panic");
        }
    }

    /// Envoy's table for three levels (P0 and P1 degraded, P2 healthy): 20 % usable in P0 is
    /// 28 health, 20 % in P1 another 28, P2 takes the rest.
    #[test]
    fn three_levels_fill_in_order() {
        let p = compute(&[(20, 100), (20, 100), (100, 100)], 140, 50);
        assert_eq!(p.load, [28, 28, 44]);
        let p = compute(&[(100, 100), (100, 100), (100, 100)], 140, 50);
        assert_eq!(p.load, [100, 0, 0]);
        assert_eq!(p.sole_level(), Some(0));
    }

    /// Below a normalized total of 100, the loads are scaled up to 100 and a level whose usable
    /// share is below the threshold is in panic.
    #[test]
    fn a_total_below_100_is_normalized_and_panics_per_level() {
        // 10 % of P0 (health 14), 40 % of P1 (health 56): total 70 → 20/80; P0 in panic.
        let p = compute(&[(1, 10), (4, 10)], 140, 30);
        assert_eq!(p.load, [20, 80]);
        assert_eq!(p.panic, [true, false]);
    }

    /// Every level in panic: the load follows the host counts (total panic).
    #[test]
    fn every_level_unhealthy_is_total_panic() {
        let p = compute(&[(0, 2), (0, 6)], 140, 50);
        assert_eq!(p.load, [25, 75]);
        assert_eq!(p.panic, [true, true]);
        // Some health but every level under the threshold: still total panic.
        let p = compute(&[(1, 10), (2, 10)], 140, 50);
        assert_eq!(p.load, [50, 50]);
        assert!(p.panic.iter().all(|&x| x));
        // Rounding left over goes to the first level with hosts.
        let p = compute(&[(0, 1), (0, 1), (0, 1)], 140, 50);
        assert_eq!(p.load, [34, 33, 33]);
    }

    /// Panic off and nothing usable: no level gets load, nothing is picked.
    #[test]
    fn panic_off_and_nothing_usable_picks_nothing() {
        let p = compute(&[(0, 3), (0, 3)], 140, 0);
        assert_eq!(p.load, [0, 0]);
        assert!(!p.any_panic());
        assert_eq!(p.pick_level(0), None);
        // An empty cluster: no load, never in panic.
        let p = compute(&[], 140, 50);
        assert!(p.load.is_empty() && !p.any_panic());
        assert_eq!(p.pick_level(0), None);
    }

    /// One level: all load, panic exactly when its usable share is under the threshold (and the
    /// factor does not lift it to full health).
    #[test]
    fn one_level_takes_everything() {
        for (usable, panic) in [(10, false), (5, false), (4, true), (0, true)] {
            let p = compute(&[(usable, 10)], 140, 50);
            assert_eq!(p.load, [100], "{usable}/10");
            assert_eq!(p.panic, [panic], "{usable}/10");
        }
        // 80 % usable at a threshold of 90: 80 × 1.4 ≥ 100, the level counts as healthy.
        assert_eq!(compute(&[(8, 10)], 140, 90).panic, [false]);
        // The factor at 100: the level is degraded as soon as a host is not usable.
        assert_eq!(compute(&[(8, 10)], 100, 90).panic, [true]);
    }

    #[test]
    fn the_overprovisioning_factor_scales_health() {
        // Factor 100: health is the usable share itself.
        assert_eq!(compute(&[(50, 100), (100, 100)], 100, 50).load, [50, 50]);
        // Factor 200: half usable is full health.
        assert_eq!(compute(&[(50, 100), (100, 100)], 200, 50).load, [100, 0]);
        assert_eq!(
            level_health(
                LevelCount {
                    hosts: 3,
                    usable: 1
                },
                140
            ),
            46
        );
        assert_eq!(
            level_health(
                LevelCount {
                    hosts: 0,
                    usable: 0
                },
                140
            ),
            0
        );
        assert_eq!(
            level_health(
                LevelCount {
                    hosts: u32::MAX,
                    usable: u32::MAX
                },
                u32::MAX
            ),
            100
        );
    }

    #[test]
    fn pick_level_walks_the_cumulative_load() {
        let p = compute(&[(50, 100), (100, 100)], 140, 50);
        assert_eq!(p.pick_level(0), Some(0));
        assert_eq!(p.pick_level(69), Some(0));
        assert_eq!(p.pick_level(70), Some(1));
        assert_eq!(p.pick_level(99), Some(1));
        assert_eq!(p.sole_level(), None);
        let counts: Vec<u32> =
            (0..100)
                .map(|d| p.pick_level(d).expect("loaded"))
                .fold(vec![0, 0], |mut acc, l| {
                    acc[l as usize] += 1;
                    acc
                });
        assert_eq!(counts, [70, 30]);
    }

    proptest::proptest! {
        /// Whatever the counts: the loads add up to 100 whenever some level has health, else
        /// to 100 (total panic) or 0; a level with load has a usable host or is in panic; no
        /// level after a fully healthy one gets load.
        #[test]
        fn loads_are_a_distribution(
            counts in proptest::collection::vec((0u32..20, 0u32..20), 0..6),
            factor in 1u32..400,
            threshold in 0u32..=100,
        ) {
            let counts: Vec<(u32, u32)> =
                counts.into_iter().map(|(u, h)| (u.min(h), h)).collect();
            let p = compute(&counts, factor, threshold);
            let health = |&(usable, hosts): &(u32, u32)| {
                level_health(LevelCount { hosts, usable }, factor)
            };
            let sum: u32 = p.load.iter().sum();
            if counts.iter().any(|c| health(c) > 0) {
                proptest::prop_assert_eq!(sum, 100);
            } else {
                proptest::prop_assert!(sum == 0 || sum == 100);
            }
            for (i, c) in counts.iter().enumerate() {
                if p.load[i] > 0 {
                    proptest::prop_assert!(c.0 > 0 || p.panic[i], "level {} loaded, nothing usable", i);
                }
                if health(c) == 100 {
                    proptest::prop_assert!(p.load[i + 1..].iter().all(|&l| l == 0));
                }
            }
        }
    }
}
