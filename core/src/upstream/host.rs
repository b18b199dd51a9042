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
//! spare ids, free until an update fills them. A slot holds a [`SlotHost`]: an address, a
//! weight and a [`Transport`] (which of its cluster's `transport_socket_matches` the host
//! picked); the address and the transport say which host it is ([`SlotHost::key`]), so a host
//! whose labels now pick another transport leaves its slot and takes another, as a new host.
//! Each slot has an
//! *epoch*, bumped whenever its host changes (freed or refilled: [`advance_epochs`]); the
//! epochs of a static cluster whose hosts never changed stay 0. The one rule every user of a host id obeys: whatever
//! outlives a pick (a pooled connection, a health probe, a request's result for outlier
//! detection, a multiplexed connection) carries the [`HostRef`] it was made for, and counts for
//! the slot only while the slot's epoch is still that one; a stale one is dropped or closed.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;

pub use crate::config::DeclaredHealth;

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

/// Bumps the epoch of every slot whose host differs between `before` and `after` (filled,
/// freed, or given to another address or transport: [`SlotHost::key`]); a slot whose host
/// stays keeps its epoch. The slices have one entry per slot (a missing one is free).
pub fn advance_epochs(before: &[Slot], after: &[Slot], epochs: &mut [u32]) {
    for (i, epoch) in epochs.iter_mut().enumerate() {
        let was = before.get(i).copied().flatten().map(SlotHost::key);
        let now = after.get(i).copied().flatten().map(SlotHost::key);
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
    /// How it is reached ([`Transport`]): part of which host it is, with its address.
    pub transport: Transport,
    /// Its priority level (0, the default, is the most preferred; see [`crate::lb::priority`]).
    pub priority: u32,
    /// The health its source declares (EDS `health_status`): one declared unusable is never
    /// available unless its level is in panic, whatever health checking says.
    pub health: DeclaredHealth,
    /// Whether the balancer may pick it.
    pub available: bool,
    /// Connections (L4) or requests (L7) it is serving now.
    pub active: u32,
    /// Smooth weighted round robin's running weight.
    pub(crate) swrr_current: i64,
}

/// Which transport a host is reached with: `None`, its cluster's own `tls` (or plaintext);
/// `Some(i)`, entry `i` of its cluster's `transport_socket_matches`, picked by the host's labels
/// ([`crate::config::ClusterConfig::host_transport`]). Part of a host's identity: the same
/// address with another transport is another host (another slot, another pool), so that no
/// connection of one transport ever serves a host that picked the other.
pub type Transport = Option<usize>;

/// The host a slot holds: its address, weight and transport.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SlotHost {
    /// Where it is.
    pub address: SocketAddr,
    /// Its relative weight (≥ 1); not part of which host it is (a new weight keeps the slot).
    pub weight: u32,
    /// How it is reached.
    pub transport: Transport,
    /// Its priority level; not part of which host it is (a new priority keeps the slot, and
    /// with it the host's health and outlier state).
    pub priority: u32,
    /// The health its source declares; not part of which host it is either (a host that
    /// EDS marks unhealthy, then healthy again, keeps its slot and its active-check and
    /// outlier state, as in Envoy).
    pub health: DeclaredHealth,
}

impl SlotHost {
    /// A host reached with its cluster's own transport (`transport: None`).
    #[must_use]
    pub fn plain(address: SocketAddr, weight: u32) -> Self {
        SlotHost {
            address,
            weight,
            transport: None,
            priority: 0,
            health: DeclaredHealth::Healthy,
        }
    }

    /// Which host it is: its address and transport (not its weight or priority).
    #[must_use]
    pub fn key(self) -> (SocketAddr, Transport) {
        (self.address, self.transport)
    }
}

/// What a host id holds in a cluster whose hosts change (DNS, endpoints updated in place): a
/// host, or nothing (a free slot, never picked).
pub type Slot = Option<SlotHost>;

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

/// The host set after a DNS answer or an endpoints update: `answer` (hosts; a repeated host —
/// the same address and transport, [`SlotHost::key`] — counts once, the first) replaces the
/// hosts in `slots`, and ids stay meaningful:
///
/// - a host in both keeps its slot, so its id and everything kept per id (health, outlier and
///   load state, pooled connections, counters) stays with it; its weight follows the answer;
/// - a host only in `slots` frees its slot — so does one whose transport changed: it is
///   another host, and takes a slot as a new one;
/// - a host only in `answer` takes a free slot, in answer order: first the slots that were
///   free before this answer, lowest first, then those it freed (so a slot whose old host still
///   drains connections is reused last); with no slot left it is dropped (counted).
///
/// Pure: the same inputs give the same slots, on every worker. O((slots + answer) log answer).
#[must_use]
pub fn merge_answer(slots: &[Slot], answer: &[SlotHost]) -> Merged {
    // O(n log n) in the slots and the answer (one ordered map each; a `BTreeMap`, so nothing
    // depends on a seeded hash): a 10 000-endpoint EDS update is merged on the main thread.
    let mut unique: Vec<SlotHost> = Vec::with_capacity(answer.len());
    // Per host: what may change in place (weight, priority, declared health).
    let mut weights: BTreeMap<(SocketAddr, Transport), (u32, u32, DeclaredHealth)> =
        BTreeMap::new();
    for &h in answer {
        if let std::collections::btree_map::Entry::Vacant(e) = weights.entry(h.key()) {
            e.insert((h.weight, h.priority, h.health));
            unique.push(h);
        }
    }
    let held: BTreeSet<(SocketAddr, Transport)> = slots.iter().flatten().map(|s| s.key()).collect();
    let mut next: Vec<Slot> = slots.to_vec();
    let mut removed = 0;
    let mut freed_now = Vec::new();
    for (i, slot) in next.iter_mut().enumerate() {
        if let Some(host) = slot {
            match weights.get(&host.key()) {
                Some(&(weight, priority, health)) => {
                    host.weight = weight;
                    host.priority = priority;
                    host.health = health;
                }
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
    for &h in &unique {
        if held.contains(&h.key()) {
            continue;
        }
        match free.next() {
            Some(i) => {
                next[i] = Some(h);
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

    /// Hosts of the cluster's own transport.
    fn plain(hosts: &[(SocketAddr, u32)]) -> Vec<SlotHost> {
        hosts.iter().map(|&(a, w)| SlotHost::plain(a, w)).collect()
    }

    fn slot(a: SocketAddr, w: u32) -> Slot {
        Some(SlotHost::plain(a, w))
    }

    #[test]
    fn an_answer_fills_free_slots_in_order_and_frees_the_addresses_it_lost() {
        let empty = vec![None; 3];
        let first = merge_answer(&empty, &plain(&[(addr(1), 1), (addr(2), 1)]));
        assert_eq!(first.slots, vec![slot(addr(1), 1), slot(addr(2), 1), None]);
        assert_eq!((first.added, first.removed, first.dropped), (2, 0, 0));
        // 1 goes, 3 comes: 3 takes the slot that was free before (2), not 1's.
        let second = merge_answer(&first.slots, &plain(&[(addr(2), 5), (addr(3), 1)]));
        assert_eq!(second.slots, vec![None, slot(addr(2), 5), slot(addr(3), 1)]);
        assert_eq!((second.added, second.removed, second.dropped), (1, 1, 0));
        // Full: a fourth and fifth address; only the freed slot is left.
        let third = merge_answer(
            &second.slots,
            &plain(&[(addr(2), 5), (addr(3), 1), (addr(4), 1), (addr(5), 1)]),
        );
        assert_eq!(third.slots[0], slot(addr(4), 1));
        assert_eq!((third.added, third.removed, third.dropped), (1, 0, 1));
        // The same answer again changes nothing.
        let same = merge_answer(
            &third.slots,
            &plain(&[(addr(2), 5), (addr(3), 1), (addr(4), 1)]),
        );
        assert!(!same.changed());
        assert_eq!(same.slots, third.slots);
    }

    /// A host's transport is part of which host it is (issue 13): a new weight keeps the slot,
    /// a new transport frees it and the host takes another (a new epoch, a new pool), and
    /// one address with two transports is two hosts.
    #[test]
    fn a_host_whose_transport_changes_is_another_host() {
        let tls = |a, w| SlotHost {
            address: a,
            weight: w,
            transport: Some(0),
            priority: 0,
            health: DeclaredHealth::Healthy,
        };
        let first = merge_answer(&[None; 4], &[tls(addr(1), 1), tls(addr(2), 1)]);
        assert_eq!(
            first.slots[..2],
            [Some(tls(addr(1), 1)), Some(tls(addr(2), 1))]
        );
        let mut epochs = vec![0; 4];
        advance_epochs(&[None; 4], &first.slots, &mut epochs);
        assert_eq!(epochs, [1, 1, 0, 0]);
        // 1 re-weighted (stays), 2 now plaintext: its slot is freed, the plaintext host takes
        // the first slot that was free before.
        let second = merge_answer(
            &first.slots,
            &[tls(addr(1), 3), SlotHost::plain(addr(2), 1)],
        );
        assert_eq!(
            second.slots,
            [Some(tls(addr(1), 3)), None, slot(addr(2), 1), None]
        );
        assert_eq!((second.added, second.removed), (1, 1));
        let mut after = epochs.clone();
        advance_epochs(&first.slots, &second.slots, &mut after);
        assert_eq!(after, [1, 2, 1, 0]);
        // The same address with both transports: two hosts.
        let both = merge_answer(
            &second.slots,
            &[
                tls(addr(1), 3),
                SlotHost::plain(addr(2), 1),
                tls(addr(2), 1),
            ],
        );
        assert_eq!(both.added, 1);
        assert_eq!(both.slots.iter().flatten().count(), 3);
        // A transport change in a slot given the same address back still moves its epoch.
        let mut epochs = vec![5];
        advance_epochs(&[Some(tls(addr(1), 1))], &[slot(addr(1), 1)], &mut epochs);
        assert_eq!(epochs, [6]);
    }

    #[test]
    fn ten_thousand_endpoints_merge_as_few_do() {
        // 10 000 slots holding 10.1.x.y; the answer keeps the even ones (in reverse order,
        // re-weighted), repeats some, and brings 5 000 new ones: each new one takes a freed
        // slot (none was free before), in answer order, lowest first.
        let a = |i: u32| SocketAddr::from(([10, (i >> 16) as u8 + 1, (i >> 8) as u8, i as u8], 80));
        let n = 10_000u32;
        let slots: Vec<Slot> = (0..n).map(|i| slot(a(i), 1)).collect();
        let mut answer: Vec<SlotHost> = (0..n)
            .rev()
            .filter(|i| i % 2 == 0)
            .map(|i| SlotHost::plain(a(i), 2))
            .collect();
        answer.extend((0..n / 2).map(|k| SlotHost::plain(a(n + k), 3)));
        // Repeats: the first weight counts.
        answer.extend((0..100).map(|i| SlotHost::plain(a(i * 2), 9)));
        let merged = merge_answer(&slots, &answer);
        assert_eq!(
            (merged.added, merged.removed, merged.dropped),
            (5_000, 5_000, 0)
        );
        for i in 0..n {
            let expected = if i % 2 == 0 {
                slot(a(i), 2)
            } else {
                slot(a(n + i / 2), 3)
            };
            assert_eq!(merged.slots[i as usize], expected, "slot {i}");
        }
        // One more new address: no slot left.
        let mut more = answer.clone();
        more.push(SlotHost::plain(a(3 * n), 1));
        let full = merge_answer(&merged.slots, &more);
        assert_eq!((full.added, full.removed, full.dropped), (0, 0, 1));
        assert_eq!(full.slots, merged.slots);
    }

    proptest! {
        #[test]
        fn merging_keeps_ids_and_never_duplicates(
            before in proptest::collection::vec(proptest::option::of((0u8..12, 0u8..2)), 1..10),
            answer in proptest::collection::vec((0u8..12, 0u8..2, 1u32..4), 0..16),
        ) {
            // A host: an address and one of two transports (the cluster's own, or entry 0).
            let host = |n: u8, t: u8, w: u32| SlotHost {
                address: addr(n),
                weight: w,
                transport: (t == 1).then_some(0),
                priority: w % 2,
                health: if w == 3 { DeclaredHealth::Draining } else { DeclaredHealth::Healthy },
            };
            // Slots without duplicates, as a merge leaves them.
            let mut seen = Vec::new();
            let slots: Vec<Slot> = before
                .iter()
                .map(|s| s.filter(|k| !seen.contains(k) && { seen.push(*k); true })
                    .map(|(n, t)| host(n, t, 1)))
                .collect();
            let answer: Vec<SlotHost> =
                answer.iter().map(|&(n, t, w)| host(n, t, w)).collect();
            let merged = merge_answer(&slots, &answer);
            prop_assert_eq!(merged.slots.len(), slots.len());
            // No host (address and transport) twice.
            let present: Vec<(SocketAddr, Transport)> =
                merged.slots.iter().flatten().map(|s| s.key()).collect();
            let mut dedup = present.clone();
            dedup.sort();
            dedup.dedup();
            prop_assert_eq!(dedup.len(), present.len());
            // Only answered hosts, each with its first weight, priority and declared health.
            for h in merged.slots.iter().flatten() {
                let first = answer.iter().find(|x| x.key() == h.key());
                prop_assert_eq!(
                    first.map(|f| (f.weight, f.priority, f.health)),
                    Some((h.weight, h.priority, h.health))
                );
            }
            // A host that stays keeps its id; one whose transport changed does not.
            for (i, s) in slots.iter().enumerate() {
                if let Some(h) = s
                    && answer.iter().any(|x| x.key() == h.key())
                {
                    prop_assert_eq!(merged.slots[i].map(SlotHost::key), Some(h.key()));
                }
            }
            // Every answered host is present, unless every slot is taken.
            let unique = {
                let mut u: Vec<(SocketAddr, Transport)> = answer.iter().map(|x| x.key()).collect();
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
