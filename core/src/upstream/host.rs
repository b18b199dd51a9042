//! An upstream host as a worker sees it ([`Host`]), its index in its cluster ([`HostId`]) and
//! which host an index meant when something was started for it ([`HostRef`]).
//!
//! The bottom of the upstream layer: the balancers ([`crate::lb`]) pick among hosts, health
//! checking and outlier detection ([`crate::health`]) track them by id, and a cluster
//! ([`crate::cluster::ClusterState`]) owns them; this module reads none of those.
//!
//! ## Slots and epochs (DNS clusters, and static ones whose hosts change in place)
//!
//! A DNS cluster's host ids are *slots* of a fixed table: a slot's address changes when an
//! answer removes its host and a later one gives the slot to another address. So are a static
//! cluster's when its hosts change in place (xDS endpoints updates): its configured hosts, then
//! spare ids, free until an update fills them. Each slot has an
//! *epoch*, bumped whenever its address changes (freed or refilled: [`advance_epochs`]); the
//! epochs of a static cluster whose hosts never changed stay 0. The one rule every user of a host id obeys: whatever
//! outlives a pick (a pooled connection, a health probe, a request's result for outlier
//! detection, a multiplexed connection) carries the [`HostRef`] it was made for, and counts for
//! the slot only while the slot's epoch is still that one; a stale one is dropped or closed.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;

/// Index of a host within its cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HostId(pub u32);

impl HostId {
    /// The index as `usize`.
    #[must_use]
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// A host id and the epoch its slot had when it was picked: which host (address) the id meant.
/// See the module doc.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HostRef {
    /// The slot.
    pub id: HostId,
    /// The slot's epoch then.
    pub epoch: u32,
}

impl HostRef {
    /// A host of a cluster whose ids never change address (epoch 0).
    #[must_use]
    pub fn fixed(id: HostId) -> Self {
        HostRef { id, epoch: 0 }
    }
}

/// Bumps the epoch of every slot whose address differs between `before` and `after` (filled,
/// freed or moved to another address); a slot whose address stays keeps its epoch. The slices
/// have one entry per slot (a missing one is free).
pub fn advance_epochs(before: &[Slot], after: &[Slot], epochs: &mut [u32]) {
    for (i, epoch) in epochs.iter_mut().enumerate() {
        let was = before.get(i).copied().flatten().map(|s| s.0);
        let now = after.get(i).copied().flatten().map(|s| s.0);
        if was != now {
            *epoch = epoch.wrapping_add(1);
        }
    }
}

/// One upstream host and its live state.
#[derive(Clone, Debug)]
pub struct Host {
    /// Where it is.
    pub address: SocketAddr,
    /// Its relative weight (≥ 1).
    pub weight: u32,
    /// Whether the balancer may pick it.
    pub available: bool,
    /// Connections (L4) or requests (L7) it is serving now.
    pub active: u32,
    /// Smooth weighted round robin's running weight.
    pub(crate) swrr_current: i64,
}

/// What a host id holds in a cluster whose hosts change (DNS): an address and its weight, or
/// nothing (a free slot, never picked).
pub type Slot = Option<(SocketAddr, u32)>;

/// A host set after an answer ([`merge_answer`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Merged {
    /// The new slots, as many as before.
    pub slots: Vec<Slot>,
    /// Addresses that took a slot.
    pub added: usize,
    /// Addresses whose slot was freed.
    pub removed: usize,
    /// New addresses left out because every slot was taken.
    pub dropped: usize,
}

impl Merged {
    /// Whether the host set changed.
    #[must_use]
    pub fn changed(&self) -> bool {
        self.added > 0 || self.removed > 0
    }
}

/// The host set after a DNS answer: `answer` (addresses and weights; a repeated address counts
/// once, the first) replaces the addresses in `slots`, and ids stay meaningful:
///
/// - an address in both keeps its slot, so its id and everything kept per id (health,
///   outlier and load state, pooled connections, counters) stays with it; its weight follows
///   the answer;
/// - an address only in `slots` frees its slot;
/// - an address only in `answer` takes a free slot, in answer order: first the slots that were
///   free before this answer, lowest first, then those it freed (so a slot whose old host still
///   drains connections is reused last); with no slot left it is dropped (counted).
///
/// Pure: the same inputs give the same slots, on every worker. O((slots + answer) log answer).
#[must_use]
pub fn merge_answer(slots: &[Slot], answer: &[(SocketAddr, u32)]) -> Merged {
    // O(n log n) in the slots and the answer (one ordered map each; a `BTreeMap`, so nothing
    // depends on a seeded hash): a 10 000-endpoint EDS update is merged on the main thread.
    let mut unique: Vec<(SocketAddr, u32)> = Vec::with_capacity(answer.len());
    let mut weights: BTreeMap<SocketAddr, u32> = BTreeMap::new();
    for &(a, w) in answer {
        if let std::collections::btree_map::Entry::Vacant(e) = weights.entry(a) {
            e.insert(w);
            unique.push((a, w));
        }
    }
    let held: BTreeSet<SocketAddr> = slots.iter().flatten().map(|s| s.0).collect();
    let mut next: Vec<Slot> = slots.to_vec();
    let mut removed = 0;
    let mut freed_now = Vec::new();
    for (i, slot) in next.iter_mut().enumerate() {
        if let Some((address, weight)) = slot {
            match weights.get(address) {
                Some(&w) => *weight = w,
                None => {
                    *slot = None;
                    removed += 1;
                    freed_now.push(i);
                }
            }
        }
    }
    let mut free = slots
        .iter()
        .enumerate()
        .filter(|(_, s)| s.is_none())
        .map(|(i, _)| i)
        .chain(freed_now);
    let (mut added, mut dropped) = (0, 0);
    for &(a, w) in &unique {
        if held.contains(&a) {
            continue;
        }
        match free.next() {
            Some(i) => {
                next[i] = Some((a, w));
                added += 1;
            }
            None => dropped += 1,
        }
    }
    Merged {
        slots: next,
        added,
        removed,
        dropped,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn addr(n: u8) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, n], 80))
    }

    #[test]
    fn an_answer_fills_free_slots_in_order_and_frees_the_addresses_it_lost() {
        let empty = vec![None; 3];
        let first = merge_answer(&empty, &[(addr(1), 1), (addr(2), 1)]);
        assert_eq!(
            first.slots,
            vec![Some((addr(1), 1)), Some((addr(2), 1)), None]
        );
        assert_eq!((first.added, first.removed, first.dropped), (2, 0, 0));
        // 1 goes, 3 comes: 3 takes the slot that was free before (2), not 1's.
        let second = merge_answer(&first.slots, &[(addr(2), 5), (addr(3), 1)]);
        assert_eq!(
            second.slots,
            vec![None, Some((addr(2), 5)), Some((addr(3), 1))]
        );
        assert_eq!((second.added, second.removed, second.dropped), (1, 1, 0));
        // Full: a fourth and fifth address; only the freed slot is left.
        let third = merge_answer(
            &second.slots,
            &[(addr(2), 5), (addr(3), 1), (addr(4), 1), (addr(5), 1)],
        );
        assert_eq!(third.slots[0], Some((addr(4), 1)));
        assert_eq!((third.added, third.removed, third.dropped), (1, 0, 1));
        // The same answer again changes nothing.
        let same = merge_answer(&third.slots, &[(addr(2), 5), (addr(3), 1), (addr(4), 1)]);
        assert!(!same.changed());
        assert_eq!(same.slots, third.slots);
    }

    #[test]
    fn ten_thousand_endpoints_merge_as_few_do() {
        // 10 000 slots holding 10.1.x.y; the answer keeps the even ones (in reverse order,
        // re-weighted), repeats some, and brings 5 000 new ones: each new one takes a freed
        // slot (none was free before), in answer order, lowest first.
        let a = |i: u32| SocketAddr::from(([10, (i >> 16) as u8 + 1, (i >> 8) as u8, i as u8], 80));
        let n = 10_000u32;
        let slots: Vec<Slot> = (0..n).map(|i| Some((a(i), 1))).collect();
        let mut answer: Vec<(SocketAddr, u32)> = (0..n)
            .rev()
            .filter(|i| i % 2 == 0)
            .map(|i| (a(i), 2))
            .collect();
        answer.extend((0..n / 2).map(|k| (a(n + k), 3)));
        answer.extend((0..100).map(|i| (a(i * 2), 9))); // repeats: the first weight counts
        let merged = merge_answer(&slots, &answer);
        assert_eq!(
            (merged.added, merged.removed, merged.dropped),
            (5_000, 5_000, 0)
        );
        for i in 0..n {
            let expected = if i % 2 == 0 {
                (a(i), 2)
            } else {
                (a(n + i / 2), 3)
            };
            assert_eq!(merged.slots[i as usize], Some(expected), "slot {i}");
        }
        // One more new address: no slot left.
        let mut more = answer.clone();
        more.push((a(3 * n), 1));
        let full = merge_answer(&merged.slots, &more);
        assert_eq!((full.added, full.removed, full.dropped), (0, 0, 1));
        assert_eq!(full.slots, merged.slots);
    }

    proptest! {
        #[test]
        fn merging_keeps_ids_and_never_duplicates(
            before in proptest::collection::vec(proptest::option::of(0u8..12), 1..10),
            answer in proptest::collection::vec((0u8..12, 1u32..4), 0..16),
        ) {
            // Slots without duplicates, as a merge leaves them.
            let mut seen = Vec::new();
            let slots: Vec<Slot> = before
                .iter()
                .map(|s| s.filter(|n| !seen.contains(n) && { seen.push(*n); true })
                    .map(|n| (addr(n), 1)))
                .collect();
            let answer: Vec<(SocketAddr, u32)> =
                answer.iter().map(|&(n, w)| (addr(n), w)).collect();
            let merged = merge_answer(&slots, &answer);
            prop_assert_eq!(merged.slots.len(), slots.len());
            // No address twice.
            let present: Vec<SocketAddr> = merged.slots.iter().flatten().map(|s| s.0).collect();
            let mut dedup = present.clone();
            dedup.sort();
            dedup.dedup();
            prop_assert_eq!(dedup.len(), present.len());
            // Only answered addresses, each with its first weight.
            for (a, w) in merged.slots.iter().flatten() {
                let first = answer.iter().find(|(x, _)| x == a);
                prop_assert_eq!(first.map(|f| f.1), Some(*w));
            }
            // A host that stays keeps its id.
            for (i, s) in slots.iter().enumerate() {
                if let Some((a, _)) = s
                    && answer.iter().any(|(x, _)| x == a)
                {
                    prop_assert_eq!(merged.slots[i].map(|m| m.0), Some(*a));
                }
            }
            // Every answered address is present, unless every slot is taken.
            let unique = {
                let mut u: Vec<SocketAddr> = answer.iter().map(|x| x.0).collect();
                u.sort();
                u.dedup();
                u.len()
            };
            prop_assert_eq!(present.len() + merged.dropped, unique);
            prop_assert!(merged.dropped == 0 || present.len() == slots.len());
            // Merging the same answer again is a no-op (stable order).
            let again = merge_answer(&merged.slots, &answer);
            prop_assert!(!again.changed());
            prop_assert_eq!(again.slots, merged.slots);
        }
    }
}
