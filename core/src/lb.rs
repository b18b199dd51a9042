//! Load balancers: pure functions of the host set, the balancer's own small state and an
//! injected RNG.
//!
//! | policy | picks | state |
//! |---|---|---|
//! | round robin | each candidate in turn | a cursor |
//! | weighted round robin | nginx's smooth WRR: over any `Σweights` consecutive picks each host gets exactly its weight, interleaved | a running weight per host |
//! | random | uniformly among candidates | none (RNG) |
//! | least request | power of two choices: two distinct random candidates, the one with fewer active requests per unit of weight | none (RNG) |
//!
//! A *candidate* is a host that is available and not excluded. When exclusion leaves no
//! candidate, the balancer falls back to every available host (a retry may land on a host tried
//! before rather than fail). An unavailable host is never picked.
//!
//! No pick allocates.

use crate::cluster::{Host, HostId};
use crate::config::LbPolicy;
use crate::rng::Rng;

/// A balancer's policy and state.
#[derive(Clone, Debug)]
pub struct Balancer {
    policy: LbPolicy,
    cursor: usize,
}

impl Balancer {
    /// A fresh balancer.
    #[must_use]
    pub fn new(policy: LbPolicy) -> Self {
        Balancer { policy, cursor: 0 }
    }

    /// Its policy.
    #[must_use]
    pub fn policy(&self) -> LbPolicy {
        self.policy
    }

    /// Picks a host; see the module doc for the rules.
    pub fn pick(
        &mut self,
        hosts: &mut [Host],
        rng: &mut Rng,
        exclude: &[HostId],
    ) -> Option<HostId> {
        let strict = |i: usize, h: &Host| h.available && !exclude.contains(&HostId(i as u32));
        let relaxed = |_: usize, h: &Host| h.available;
        if hosts.iter().enumerate().any(|(i, h)| strict(i, h)) {
            self.pick_among(hosts, rng, &strict)
        } else {
            self.pick_among(hosts, rng, &relaxed)
        }
    }

    fn pick_among(
        &mut self,
        hosts: &mut [Host],
        rng: &mut Rng,
        ok: &dyn Fn(usize, &Host) -> bool,
    ) -> Option<HostId> {
        let n = hosts.len();
        if n == 0 {
            return None;
        }
        let picked = match self.policy {
            LbPolicy::RoundRobin => {
                let start = self.cursor % n;
                let found = (0..n)
                    .map(|k| (start + k) % n)
                    .find(|&i| ok(i, &hosts[i]))?;
                self.cursor = found + 1;
                found
            }
            LbPolicy::WeightedRoundRobin => {
                let mut total: i64 = 0;
                let mut best: Option<(usize, i64)> = None;
                for (i, h) in hosts.iter_mut().enumerate() {
                    if !ok(i, h) {
                        continue;
                    }
                    h.swrr_current += i64::from(h.weight);
                    total += i64::from(h.weight);
                    // Strictly greater: ties go to the lower index.
                    if best.is_none_or(|(_, current)| h.swrr_current > current) {
                        best = Some((i, h.swrr_current));
                    }
                }
                let (winner, _) = best?;
                hosts[winner].swrr_current -= total;
                winner
            }
            // Placeholder until ring hash / Maglev land: random.
            LbPolicy::Random | LbPolicy::RingHash | LbPolicy::Maglev => {
                let count = candidates(hosts, ok);
                if count == 0 {
                    return None;
                }
                nth_candidate(hosts, ok, rng.below(count as u64) as usize)
            }
            LbPolicy::LeastRequest => {
                let count = candidates(hosts, ok);
                match count {
                    0 => return None,
                    1 => nth_candidate(hosts, ok, 0),
                    _ => {
                        let a = rng.below(count as u64) as usize;
                        let mut b = rng.below(count as u64 - 1) as usize;
                        if b >= a {
                            b += 1;
                        }
                        let (a, b) = (nth_candidate(hosts, ok, a), nth_candidate(hosts, ok, b));
                        // Compare (active+1)/weight without division.
                        let load = |x: usize, y: usize| {
                            (u64::from(hosts[x].active) + 1) * u64::from(hosts[y].weight)
                        };
                        if load(b, a) < load(a, b) { b } else { a }
                    }
                }
            }
        };
        Some(HostId(picked as u32))
    }
}

fn candidates(hosts: &[Host], ok: &dyn Fn(usize, &Host) -> bool) -> usize {
    hosts.iter().enumerate().filter(|(i, h)| ok(*i, h)).count()
}

fn nth_candidate(hosts: &[Host], ok: &dyn Fn(usize, &Host) -> bool, nth: usize) -> usize {
    hosts
        .iter()
        .enumerate()
        .filter(|(i, h)| ok(*i, h))
        .nth(nth)
        .map(|(i, _)| i)
        .expect("nth < number of candidates")
}

#[cfg(test)]
mod tests;
