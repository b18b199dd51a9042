//! Load balancers: pure functions of the host set, the balancer's own small state, an injected
//! RNG and, for the consistent-hashing policies, the request's hash.
//!
//! | policy | picks | state |
//! |---|---|---|
//! | round robin | each candidate in turn | a cursor |
//! | weighted round robin | nginx's smooth WRR: over any `Σweights` consecutive picks each host gets exactly its weight, interleaved | a running weight per host |
//! | random | uniformly among candidates | none (RNG) |
//! | least request | power of two choices: two distinct random candidates, the one with fewer active requests per unit of weight | none (RNG) |
//! | ring hash | the host of the first virtual node at or after the request's hash on a Ketama ring, walking clockwise to the first candidate ([`ring`]) | the ring: `w × ⌈minimum_ring_size / Σw⌉` points per host of weight `w`, built once over all hosts (a DNS cluster's present ones) |
//! | maglev | the host at entry `hash mod 65537` of a Maglev table, walking forward to the first candidate ([`maglev`]) | the table (65537 entries) over the available hosts, rebuilt lazily when availability changed |
//!
//! A *candidate* is a host that is available and not excluded. When exclusion leaves no
//! candidate, the balancer falls back to every available host (a retry may land on a host tried
//! before rather than fail). An unavailable host is never picked.
//!
//! The hash policies pick by the request's hash ([`request_hash`]); without one (no
//! `hash_policy` applies) they pick uniformly among candidates, like random. With one:
//! - the same hash gives the same host as long as the available hosts and the exclusions stay
//!   the same;
//! - ring hash: the ring never changes with availability; skipping the points of hosts that
//!   are not candidates is the same as a ring without them. Marking a host unavailable moves
//!   exactly the hashes that were on it, marking it available again moves exactly those back;
//! - maglev: a pick is exactly what a table freshly built over the available hosts gives (the
//!   table is rebuilt at the first pick after [`Balancer::availability_changed`], and only if
//!   the availability really differs from the table's). Exclusion walks forward in the table to
//!   the next entry whose host is a candidate;
//! - an excluded host (tried before by a retry) is skipped the same way, and picked only when
//!   every available host is excluded.
//!
//! No pick allocates (a ring or table is allocated when the balancer is built; a Maglev rebuild
//! reuses its memory).
//!
//! ## Priority levels
//!
//! A cluster whose hosts have more than one priority first picks a level ([`priority`], by the
//! level loads its `ClusterState` keeps), then balances within it
//! ([`Balancer::pick_in_level`]): the candidates are the level's hosts only, with every rule
//! above. The hash policies keep one ring or table over all hosts and skip the points of the
//! other levels' hosts as they skip unavailable ones: for ring hash that is exactly a ring per
//! level (Envoy builds one per level: the same mapping, the level's share of the points); for
//! Maglev it is a walk forward to the next entry of the level, which keeps the hash → host
//! mapping stable but spreads less evenly than a table per level would. A level with no
//! available host (only when panic is off) falls back to every available host.

pub mod hash;
pub mod maglev;
pub mod priority;
pub mod ring;

pub use hash::{hash_bytes, request_hash};

use crate::config::{DEFAULT_MINIMUM_RING_SIZE, LbPolicy};
use crate::host::{Host, HostId};
use crate::rng::Rng;
use maglev::Maglev;
use ring::Ring;

/// A balancer's policy and state.
#[derive(Clone, Debug)]
pub struct Balancer {
    policy: LbPolicy,
    cursor: usize,
    /// Round robin over priority levels: each level's own cursor (level `i` at `i`), swapped
    /// into `cursor` for a pick in the level, so that the levels' turns do not skew each
    /// other. Grows when a level is first picked in.
    level_cursors: Vec<usize>,
    /// `ring_hash`: the ring's least size.
    minimum_ring_size: u32,
    /// Moves at every [`Balancer::availability_changed`].
    generation: u64,
    ring: Option<Ring>,
    maglev: Option<Maglev>,
}

impl Balancer {
    /// A fresh balancer. For `ring_hash` and `maglev` its ring or table (default ring size) is
    /// built at the first pick with a hash (which allocates then); prefer
    /// [`Balancer::for_hosts`].
    #[must_use]
    pub fn new(policy: LbPolicy) -> Self {
        Balancer {
            policy,
            cursor: 0,
            level_cursors: Vec::new(),
            minimum_ring_size: DEFAULT_MINIMUM_RING_SIZE,
            generation: 0,
            ring: None,
            maglev: None,
        }
    }

    /// A fresh balancer for `hosts`: for `ring_hash` and `maglev` its ring (at least
    /// `minimum_ring_size` points) or table (over the available hosts) is built now.
    ///
    /// The ring and table are built for these hosts' addresses and weights and for their
    /// number: a pick with a different number of hosts rebuilds them (allocating); one after
    /// a change of addresses or weights alone does not (build a new balancer then).
    #[must_use]
    pub fn for_hosts(policy: LbPolicy, hosts: &[Host], minimum_ring_size: u32) -> Self {
        Self::for_present_hosts(policy, hosts, &[], minimum_ring_size)
    }

    /// [`Balancer::for_hosts`] for a cluster whose ids are slots (DNS): `ring_hash`'s ring is
    /// built over the hosts whose `present` entry is true only (all when it is empty), so that
    /// they share at least `minimum_ring_size` points. (Maglev's table is built over the
    /// available hosts, which a free slot never is.)
    #[must_use]
    pub fn for_present_hosts(
        policy: LbPolicy,
        hosts: &[Host],
        present: &[bool],
        minimum_ring_size: u32,
    ) -> Self {
        let mut b = Balancer::new(policy);
        b.minimum_ring_size = minimum_ring_size;
        match policy {
            LbPolicy::RingHash => {
                b.ring = Some(Ring::over_present(hosts, present, minimum_ring_size));
            }
            LbPolicy::Maglev => b.maglev = Some(Maglev::new(hosts, b.generation)),
            _ => {}
        }
        b
    }

    /// Tells the balancer that some host's availability may have changed: Maglev brings its
    /// table up to date at its next pick with a hash. (Safety does not depend on it: no
    /// balancer ever picks an unavailable host; a Maglev table not told keeps its old mapping,
    /// skipping hosts no longer available.)
    pub fn availability_changed(&mut self) {
        self.generation = self.generation.wrapping_add(1);
    }

    /// `ring_hash`: how many points its ring has (`None` before it is built, or for another
    /// policy).
    #[must_use]
    pub fn ring_points(&self) -> Option<usize> {
        self.ring.as_ref().map(Ring::len)
    }

    /// Its policy.
    #[must_use]
    pub fn policy(&self) -> LbPolicy {
        self.policy
    }

    /// Picks a host without a hash: [`Balancer::pick_hashed`] with `None`.
    pub fn pick(
        &mut self,
        hosts: &mut [Host],
        rng: &mut Rng,
        exclude: &[HostId],
    ) -> Option<HostId> {
        self.pick_hashed(hosts, rng, exclude, None)
    }

    /// Picks a host; see the module doc for the rules. `hash` is the request's hash (see
    /// [`request_hash`]), used by `ring_hash` and `maglev` only.
    pub fn pick_hashed(
        &mut self,
        hosts: &mut [Host],
        rng: &mut Rng,
        exclude: &[HostId],
        hash: Option<u64>,
    ) -> Option<HostId> {
        self.pick_in_level(hosts, rng, exclude, hash, None)
    }

    /// [`Balancer::pick_hashed`] among the hosts of priority `level` only (`None`: every
    /// host); a level without an available host falls back to every host (see the module
    /// doc).
    pub fn pick_in_level(
        &mut self,
        hosts: &mut [Host],
        rng: &mut Rng,
        exclude: &[HostId],
        hash: Option<u64>,
        level: Option<u32>,
    ) -> Option<HostId> {
        let in_level = |h: &Host| level.is_none_or(|l| h.priority == l);
        let strict =
            |i: usize, h: &Host| h.available && in_level(h) && !exclude.contains(&HostId(i as u32));
        let relaxed = |_: usize, h: &Host| h.available && in_level(h);
        let ok: &dyn Fn(usize, &Host) -> bool =
            if hosts.iter().enumerate().any(|(i, h)| strict(i, h)) {
                &strict
            } else if hosts.iter().any(|h| relaxed(0, h)) {
                &relaxed
            } else if level.is_some() {
                return self.pick_in_level(hosts, rng, exclude, hash, None);
            } else {
                // Nothing to pick (and no ring to walk round in vain).
                return None;
            };
        let Some(l) = level.map(|l| l as usize) else {
            return self.pick_among(hosts, rng, ok, hash);
        };
        if self.level_cursors.len() <= l {
            self.level_cursors.resize(l + 1, 0);
        }
        std::mem::swap(&mut self.cursor, &mut self.level_cursors[l]);
        let picked = self.pick_among(hosts, rng, ok, hash);
        std::mem::swap(&mut self.cursor, &mut self.level_cursors[l]);
        picked
    }

    /// The consistent-hash pick: the first candidate from the hash's point of the ring or
    /// table. `None` only when the ring or table holds no candidate (never when it is up to
    /// date and a candidate exists).
    fn pick_consistent(
        &mut self,
        hosts: &[Host],
        ok: &dyn Fn(usize, &Host) -> bool,
        hash: u64,
    ) -> Option<usize> {
        let ok = |i: usize| hosts.get(i).is_some_and(|h| ok(i, h));
        if self.policy == LbPolicy::RingHash {
            if self
                .ring
                .as_ref()
                .is_none_or(|r| r.host_count() != hosts.len())
            {
                self.ring = Some(Ring::new(hosts, self.minimum_ring_size));
            }
            let ring = self.ring.as_ref().expect("built above");
            ring.walk(hash, ok).map(|(host, _)| host)
        } else {
            match &mut self.maglev {
                Some(m) if m.host_count() == hosts.len() => m.sync(hosts, self.generation),
                _ => self.maglev = Some(Maglev::new(hosts, self.generation)),
            }
            let maglev = self.maglev.as_ref().expect("built above");
            maglev.walk(hash, ok)
        }
    }

    fn pick_among(
        &mut self,
        hosts: &mut [Host],
        rng: &mut Rng,
        ok: &dyn Fn(usize, &Host) -> bool,
        hash: Option<u64>,
    ) -> Option<HostId> {
        let n = hosts.len();
        if n == 0 {
            return None;
        }
        if let Some(hash) = hash.filter(|_| self.policy.is_consistent_hash())
            && let Some(found) = self.pick_consistent(hosts, ok, hash)
        {
            return Some(HostId(found as u32));
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
            // Also the hash policies without a hash (and, defensively, with a ring or table
            // that holds no candidate, which an up-to-date one always does).
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
mod hash_tests;
#[cfg(test)]
mod tests;
