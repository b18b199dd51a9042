//! Ketama-style consistent hashing (Envoy's `RING_HASH` with xxHash64).
//!
//! Every host of weight `w` gets `w × p` virtual nodes on a ring of 64-bit points, the `v`-th
//! at `xxHash64("<address>_<v>")` (the address as `SocketAddr` displays it, e.g. `10.0.0.1:80`
//! or `[::1]:80`; seed 0). `p`, the virtual nodes per unit of weight, is the smallest that makes
//! the ring at least `minimum_ring_size` long: `⌈minimum_ring_size / Σw⌉` (the same counts as
//! Envoy's when the least weight is 1, e.g. all weights 1), lowered if need be so that the ring
//! stays within [`MAX_RING_SIZE`], and at least 1. A request goes to the host of the first point at or
//! after its hash, wrapping around.
//!
//! The ring is built once over every host, available or not; a pick walks clockwise from the
//! request's point to the first point whose host is a candidate. That is the same as a ring
//! without the points of the hosts that are not candidates: marking a host unavailable moves
//! exactly the requests that were on it, and marking it available again moves exactly those
//! back.
//!
//! Rebuilding over another host set keeps every remaining host's points (a host's points for a
//! larger `p` include those for a smaller one), so only requests on a removed host move, plus,
//! when `p` changes, those whose first point becomes one of the points added or removed by the
//! change.

use std::fmt::{self, Write};

use super::hash::hash_bytes;
use crate::config::MAX_RING_SIZE;
use crate::host::Host;

/// Virtual nodes per unit of weight for hosts whose weights add up to `total_weight`.
pub(crate) fn nodes_per_weight(total_weight: u64, minimum_ring_size: u32) -> u64 {
    let total = total_weight.max(1);
    let minimum = u64::from(minimum_ring_size.clamp(1, MAX_RING_SIZE));
    minimum
        .div_ceil(total)
        .min(u64::from(MAX_RING_SIZE) / total)
        .max(1)
}

/// A host's weight as the ring counts it (a weight of 0, which a config never has, counts as 1:
/// every host has at least one point, so a walk always finds every candidate).
fn weight(h: &Host) -> u64 {
    u64::from(h.weight.max(1))
}

/// The ring: points sorted, and the host of each.
#[derive(Clone)]
pub(crate) struct Ring {
    points: Vec<u64>,
    hosts: Vec<u32>,
    /// How many hosts it was built over.
    host_count: usize,
}

impl fmt::Debug for Ring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ring")
            .field("points", &self.points.len())
            .field("host_count", &self.host_count)
            .finish()
    }
}

impl Ring {
    /// The ring over `hosts` (availability does not count).
    #[cfg(test)]
    pub(crate) fn new(hosts: &[Host], minimum_ring_size: u32) -> Self {
        Self::over_present(hosts, &[], minimum_ring_size)
    }

    /// The ring over the hosts whose `present` entry is true (all of them when `present` is
    /// empty): a DNS cluster's free slots get no point and no share of the ring's size, so
    /// `minimum_ring_size` counts for the hosts it has, not for its `max_hosts` slots.
    pub(crate) fn over_present(hosts: &[Host], present: &[bool], minimum_ring_size: u32) -> Self {
        Self::over(
            hosts,
            |i| present.get(i).copied().unwrap_or(true),
            minimum_ring_size,
        )
    }

    /// The ring over the hosts for which `counts` holds (by index): they alone get points and
    /// share at least `minimum_ring_size` of them (a priority level's ring is one over the
    /// level's present hosts).
    pub(crate) fn over(
        hosts: &[Host],
        counts: impl Fn(usize) -> bool,
        minimum_ring_size: u32,
    ) -> Self {
        let total: u64 = hosts
            .iter()
            .enumerate()
            .filter(|&(i, _)| counts(i))
            .map(|(_, h)| weight(h))
            .sum();
        let per_weight = nodes_per_weight(total, minimum_ring_size);
        let mut entries: Vec<(u64, u32)> = Vec::with_capacity((total * per_weight) as usize);
        let mut key = String::with_capacity(64);
        for (i, h) in hosts.iter().enumerate() {
            if !counts(i) {
                continue;
            }
            key.clear();
            write!(key, "{}_", h.address).expect("writing to a String");
            let prefix = key.len();
            for v in 0..weight(h) * per_weight {
                key.truncate(prefix);
                write!(key, "{v}").expect("writing to a String");
                entries.push((hash_bytes(key.as_bytes()), i as u32));
            }
        }
        // By point, then host: deterministic even if two points collide.
        entries.sort_unstable();
        Ring {
            points: entries.iter().map(|e| e.0).collect(),
            hosts: entries.iter().map(|e| e.1).collect(),
            host_count: hosts.len(),
        }
    }

    /// How many hosts it was built over.
    pub(crate) fn host_count(&self) -> usize {
        self.host_count
    }

    /// Number of points.
    pub(crate) fn len(&self) -> usize {
        self.points.len()
    }

    /// Index of the first point at or after `hash`, wrapping (Ketama's lookup).
    pub(crate) fn start(&self, hash: u64) -> usize {
        let i = self.points.partition_point(|&p| p < hash);
        if i == self.points.len() { 0 } else { i }
    }

    /// The point at an index.
    #[cfg(test)]
    pub(crate) fn point(&self, index: usize) -> u64 {
        self.points[index]
    }

    /// The host of the first point at or after `hash` (clockwise, wrapping) for which `ok`
    /// holds, with the index of that point; `None` when `ok` holds for no host of the ring.
    pub(crate) fn walk(&self, hash: u64, ok: impl Fn(usize) -> bool) -> Option<(usize, usize)> {
        let start = self.start(hash);
        let n = self.hosts.len();
        self.hosts[start..]
            .iter()
            .chain(&self.hosts[..start])
            .enumerate()
            .map(|(k, &h)| ((start + k) % n.max(1), h as usize))
            .find(|&(_, h)| ok(h))
            .map(|(index, h)| (h, index))
    }
}
