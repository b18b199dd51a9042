//! Maglev consistent hashing (Envoy's `MAGLEV`; the Maglev paper's table population with
//! weights).
//!
//! A lookup table of [`TABLE_SIZE`] (a prime) entries, each a host. Every host has a
//! permutation of the entries, from its address (as `SocketAddr` displays it): `offset =
//! xxHash64(address, seed 0) mod M`, `skip = xxHash64(address, seed 1) mod (M − 1) + 1`, the
//! `j`-th entry being `(offset + j × skip) mod M`. The hosts take turns, in host order, each
//! claiming the next free entry of its permutation; with weights, in turn `t` a host of weight
//! `w` takes an entry only when `t × w ≥` its running target, which then grows by the largest
//! weight (Envoy's rule, here in integers): the host of the largest weight takes one in every
//! turn, one of a third of it one in three. A request goes to the host at entry `hash mod M`.
//!
//! The table is built over the available hosts only, so that a pick is exactly what a table
//! freshly built over the available hosts would give. It is rebuilt lazily, at the first pick
//! after the set of available hosts changed (the balancer's generation moved and the
//! availability differs from the one the table was built for); a rebuild reuses the table's
//! memory and does not allocate. Hosts excluded by a retry are skipped by walking forward in the
//! table to the next entry whose host is a candidate.

use std::fmt;

use xxhash_rust::xxh64::xxh64;

use crate::host::Host;

/// Entries in the lookup table (Envoy's default; prime).
pub const TABLE_SIZE: usize = 65_537;

/// Marks a table entry not yet claimed while building.
const FREE: u32 = u32::MAX;

/// A host's permutation and its progress while building.
#[derive(Clone, Copy, Debug)]
struct Entry {
    host: u32,
    /// The next entry of its permutation to try.
    position: u64,
    skip: u64,
    weight: u64,
    target: u64,
}

/// The table and what it was built for.
#[derive(Clone)]
pub(crate) struct Maglev {
    /// `TABLE_SIZE` host indexes, or empty when no host was available.
    table: Vec<u32>,
    /// `(offset, skip)` of every host, by host index.
    permutations: Vec<(u64, u64)>,
    /// The availability of every host when the table was built.
    built_for: Vec<bool>,
    /// The balancer generation last checked.
    generation: u64,
    /// The priority level whose hosts it is built over (`None`: every host).
    level: Option<u32>,
    /// Scratch space for building, kept to rebuild without allocating.
    scratch: Vec<Entry>,
}

impl fmt::Debug for Maglev {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Maglev")
            .field("hosts", &self.permutations.len())
            .field("available", &self.built_for.iter().filter(|&&a| a).count())
            .field("generation", &self.generation)
            .finish()
    }
}

impl Maglev {
    /// The table over the available `hosts` of priority `level` (`None`: of every priority),
    /// as of `generation`.
    pub(crate) fn new(hosts: &[Host], generation: u64, level: Option<u32>) -> Self {
        let m = TABLE_SIZE as u64;
        let permutations = hosts
            .iter()
            .map(|h| {
                let key = h.address.to_string();
                let offset = xxh64(key.as_bytes(), 0) % m;
                let skip = xxh64(key.as_bytes(), 1) % (m - 1) + 1;
                (offset, skip)
            })
            .collect();
        let mut maglev = Maglev {
            table: Vec::with_capacity(TABLE_SIZE),
            permutations,
            built_for: Vec::with_capacity(hosts.len()),
            generation,
            level,
            scratch: Vec::with_capacity(hosts.len()),
        };
        maglev.rebuild(hosts);
        maglev
    }

    /// How many hosts it was built over.
    pub(crate) fn host_count(&self) -> usize {
        self.permutations.len()
    }

    /// Whether a host takes part in the table: available and of its level.
    fn takes_part(&self, h: &Host) -> bool {
        h.available && self.level.is_none_or(|l| h.priority == l)
    }

    /// Brings the table up to date with `hosts` at `generation`: rebuilds it when the
    /// generation moved and the availability of its level's hosts changed since the last
    /// build (another level's hosts coming and going leave it as it is).
    pub(crate) fn sync(&mut self, hosts: &[Host], generation: u64) {
        if self.generation == generation {
            return;
        }
        self.generation = generation;
        if !hosts
            .iter()
            .map(|h| self.takes_part(h))
            .eq(self.built_for.iter().copied())
        {
            self.rebuild(hosts);
        }
    }

    fn rebuild(&mut self, hosts: &[Host]) {
        debug_assert_eq!(hosts.len(), self.permutations.len());
        let mut built_for = std::mem::take(&mut self.built_for);
        built_for.clear();
        built_for.extend(hosts.iter().map(|h| self.takes_part(h)));
        self.built_for = built_for;
        self.scratch.clear();
        self.scratch.extend(
            hosts
                .iter()
                .zip(&self.permutations)
                .enumerate()
                .filter(|&(i, _)| self.built_for[i])
                .map(|(i, (h, &(offset, skip)))| Entry {
                    host: i as u32,
                    position: offset,
                    skip,
                    weight: u64::from(h.weight.max(1)),
                    target: 0,
                }),
        );
        self.table.clear();
        let Some(max_weight) = self.scratch.iter().map(|e| e.weight).max() else {
            return;
        };
        self.table.resize(TABLE_SIZE, FREE);
        let m = TABLE_SIZE as u64;
        let mut filled = 0;
        let mut turn: u64 = 1;
        while filled < TABLE_SIZE {
            for e in &mut self.scratch {
                if filled == TABLE_SIZE {
                    break;
                }
                if turn * e.weight < e.target {
                    continue;
                }
                e.target += max_weight;
                while self.table[e.position as usize] != FREE {
                    e.position = (e.position + e.skip) % m;
                }
                self.table[e.position as usize] = e.host;
                e.position = (e.position + e.skip) % m;
                filled += 1;
            }
            turn += 1;
        }
    }

    /// The host at entry `hash mod M`, or at the first entry after it (wrapping) whose host
    /// satisfies `ok`; `None` when no entry's does.
    pub(crate) fn walk(&self, hash: u64, ok: impl Fn(usize) -> bool) -> Option<usize> {
        if self.table.is_empty() {
            return None;
        }
        let start = (hash % TABLE_SIZE as u64) as usize;
        self.table[start..]
            .iter()
            .chain(&self.table[..start])
            .map(|&h| h as usize)
            .find(|&h| ok(h))
    }

    /// How many entries each host holds, by host index.
    #[cfg(test)]
    pub(crate) fn entries_per_host(&self) -> Vec<usize> {
        let mut counts = vec![0; self.permutations.len()];
        for &h in &self.table {
            counts[h as usize] += 1;
        }
        counts
    }
}
