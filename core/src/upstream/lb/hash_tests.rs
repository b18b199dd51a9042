//! The consistent-hashing balancers (`ring_hash`, `maglev`) and `request_hash`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use proptest::prelude::*;

use super::maglev::TABLE_SIZE;
use super::ring::{Ring, nodes_per_weight};
use super::*;
use crate::cluster::ClusterState;
use crate::config::{ClusterConfig, HashPolicy, HostConfig};
use crate::rng::Rng;

const HASHED: [LbPolicy; 2] = [LbPolicy::RingHash, LbPolicy::Maglev];

fn address(i: usize) -> SocketAddr {
    format!("10.1.{}.{}:8080", i / 200, i % 200 + 1)
        .parse()
        .unwrap()
}

/// A cluster over `hosts`, given as `(address index, weight)`.
fn cluster_of(policy: LbPolicy, hosts: &[(usize, u32)], minimum_ring_size: u32) -> ClusterState {
    ClusterState::from_config(&ClusterConfig {
        name: "c".into(),
        connect_timeout: Duration::from_secs(1),
        lb_policy: policy,
        minimum_ring_size,
        hosts: hosts
            .iter()
            .map(|&(i, weight)| HostConfig {
                address: address(i),
                weight,
                priority: 0,
                transport_socket_match: None,
                health: Default::default(),
            })
            .collect(),
        ..ClusterConfig::default()
    })
}

fn cluster(policy: LbPolicy, weights: &[u32]) -> ClusterState {
    let hosts: Vec<(usize, u32)> = weights.iter().copied().enumerate().collect();
    cluster_of(policy, &hosts, DEFAULT_MINIMUM_RING_SIZE)
}

/// The address a hash goes to, nothing excluded.
fn owner(c: &mut ClusterState, hash: u64) -> Option<SocketAddr> {
    let mut rng = Rng::from_seed(0);
    c.pick_hashed(&mut rng, &[], Some(hash))
        .map(|id| c.host(id).address)
}

fn keys(seed: u64, n: usize) -> Vec<u64> {
    let mut rng = Rng::from_seed(seed);
    (0..n).map(|_| rng.next_u64()).collect()
}

fn owners(c: &mut ClusterState, keys: &[u64]) -> Vec<SocketAddr> {
    keys.iter().map(|&k| owner(c, k).unwrap()).collect()
}

// ---------------------------------------------------------------------------------------------
// request_hash

fn headers<'a>(list: &'a [(&'a str, &'a [u8])]) -> impl FnMut(&str) -> Option<&'a [u8]> {
    move |name| list.iter().find(|(n, _)| *n == name).map(|(_, v)| *v)
}

#[test]
fn xxhash64_is_the_reference_one_with_seed_0() {
    // The reference test vector of XXH64 for the empty input, seed 0.
    assert_eq!(hash_bytes(b""), 0xEF46_DB37_51D8_E999);
}

#[test]
fn request_hash_without_an_applying_policy_is_none() {
    let ip = Some(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)));
    let h: &[(&str, &[u8])] = &[("x-user", b"alice")];
    assert_eq!(request_hash(&[], headers(h), ip), None);
    let absent = [HashPolicy::Header("x-session".into())];
    assert_eq!(request_hash(&absent, headers(h), ip), None);
    assert_eq!(
        request_hash(&[HashPolicy::SourceIp], headers(h), None),
        None
    );
}

#[test]
fn request_hash_is_deterministic_and_combines_in_order() {
    let h: &[(&str, &[u8])] = &[("x-user", b"alice"), ("x-tenant", b"acme")];
    let ip = Some(IpAddr::V4(Ipv4Addr::new(192, 168, 1, 7)));
    let user = HashPolicy::Header("x-user".into());
    let tenant = HashPolicy::Header("x-tenant".into());
    let absent = HashPolicy::Header("x-absent".into());

    let one = request_hash(std::slice::from_ref(&user), headers(h), ip).unwrap();
    assert_eq!(one, hash_bytes(b"alice"));
    assert_eq!(
        request_hash(std::slice::from_ref(&user), headers(h), ip),
        Some(one)
    );

    let ab = request_hash(&[user.clone(), tenant.clone()], headers(h), ip).unwrap();
    let ba = request_hash(&[tenant.clone(), user.clone()], headers(h), ip).unwrap();
    assert_eq!(
        ab,
        hash_bytes(b"alice").rotate_left(1) ^ hash_bytes(b"acme")
    );
    assert_ne!(ab, ba, "order matters");
    // An absent header does not apply, wherever it is.
    assert_eq!(
        request_hash(
            &[absent.clone(), user.clone(), absent, tenant],
            headers(h),
            ip
        ),
        Some(ab)
    );
    // Two identical inputs do not cancel out.
    let twice = request_hash(&[user.clone(), user.clone()], headers(h), ip).unwrap();
    assert_ne!(twice, 0);
    assert_ne!(twice, one);
    // Different values, different hashes.
    let other: &[(&str, &[u8])] = &[("x-user", b"bob")];
    assert_ne!(
        request_hash(std::slice::from_ref(&user), headers(other), ip),
        Some(one)
    );
    // Mixed with the source IP.
    let with_ip = request_hash(&[user, HashPolicy::SourceIp], headers(h), ip).unwrap();
    assert_eq!(with_ip, one.rotate_left(1) ^ hash_bytes(&[192, 168, 1, 7]));
}

#[test]
fn source_ip_hash_ignores_the_port_and_ipv4_mapping() {
    let by_peer = |peer: SocketAddr| {
        request_hash(&[HashPolicy::SourceIp], |_| None, Some(peer.ip())).unwrap()
    };
    let a: SocketAddr = "10.0.0.1:40000".parse().unwrap();
    let b: SocketAddr = "10.0.0.1:40001".parse().unwrap();
    let mapped: SocketAddr = "[::ffff:10.0.0.1]:40002".parse().unwrap();
    let other: SocketAddr = "10.0.0.2:40000".parse().unwrap();
    assert_eq!(by_peer(a), by_peer(b));
    assert_eq!(by_peer(a), by_peer(mapped));
    assert_ne!(by_peer(a), by_peer(other));
    let v6 = IpAddr::V6(Ipv6Addr::LOCALHOST);
    assert_eq!(
        request_hash(&[HashPolicy::SourceIp], |_| None, Some(v6)),
        Some(hash_bytes(&Ipv6Addr::LOCALHOST.octets()))
    );
}

// ---------------------------------------------------------------------------------------------
// Same hash, same host; spread by weight

#[test]
fn same_hash_same_host_whatever_the_rng() {
    for policy in HASHED {
        let mut c = cluster(policy, &[1, 2, 3, 1, 5]);
        for key in keys(1, 500) {
            let first = c.pick_hashed(&mut Rng::from_seed(key), &[], Some(key));
            for seed in 0..5 {
                let again = c.pick_hashed(&mut Rng::from_seed(seed), &[], Some(key));
                assert_eq!(again, first, "{policy:?} key {key:#x}");
            }
        }
    }
}

#[test]
fn without_a_hash_the_hash_policies_pick_at_random() {
    for policy in HASHED {
        let mut c = cluster(policy, &[1, 1, 1, 1]);
        let mut rng = Rng::from_seed(5);
        let mut counts = [0usize; 4];
        for _ in 0..1600 {
            counts[c.pick_hashed(&mut rng, &[], None).unwrap().index()] += 1;
        }
        for count in counts {
            assert!((280..=520).contains(&count), "{policy:?} {counts:?}");
        }
    }
}

#[test]
fn ring_gives_each_host_points_in_proportion_to_its_weight() {
    let weights = [1u32, 2, 3, 4, 7];
    let hosts = cluster(LbPolicy::RingHash, &weights).hosts().to_vec();
    let ring = Ring::new(&hosts, 1024);
    // ⌈1024 / 17⌉ = 61 points per unit of weight.
    assert_eq!(ring.len(), 17 * 61);
    let mut counts = [0u64; 5];
    for i in 0..ring.len() {
        counts[ring.walk(ring.point(i), |_| true).unwrap().0] += 1;
    }
    let want: Vec<u64> = weights.iter().map(|&w| u64::from(w) * 61).collect();
    assert_eq!(counts.to_vec(), want);
    assert_eq!(nodes_per_weight(4, 1024), 256);
    assert_eq!(
        nodes_per_weight(3, 1024),
        342,
        "Envoy's count for 3 equal hosts"
    );
    assert_eq!(nodes_per_weight(5000, 1024), 1);
    assert_eq!(
        nodes_per_weight(1, crate::config::MAX_RING_SIZE),
        8 * 1024 * 1024
    );
    assert_eq!(
        nodes_per_weight(3, crate::config::MAX_RING_SIZE),
        2_796_202,
        "capped"
    );
}

/// Picks of `n` random hashes per host are within `tolerance` (a fraction) of each host's
/// share of the weight.
fn assert_spread(policy: LbPolicy, weights: &[u32], picks: usize, tolerance: f64) {
    let mut c = cluster(policy, weights);
    let total: u32 = weights.iter().sum();
    let mut counts = vec![0usize; weights.len()];
    let mut rng = Rng::from_seed(77);
    for _ in 0..picks {
        let key = rng.next_u64();
        counts[c.pick_hashed(&mut rng, &[], Some(key)).unwrap().index()] += 1;
    }
    for (i, &w) in weights.iter().enumerate() {
        let want = picks as f64 * f64::from(w) / f64::from(total);
        let off = (counts[i] as f64 - want).abs() / want;
        assert!(
            off <= tolerance,
            "{policy:?} host {i} (weight {w}): {} picks, want {want:.0} ±{tolerance}: {counts:?}",
            counts[i]
        );
    }
}

#[test]
fn ring_spreads_by_weight_within_15_percent() {
    // 10 000 random hashes, a ring of at least 1024 points.
    assert_spread(LbPolicy::RingHash, &[1, 1, 1, 1], 10_000, 0.15);
    assert_spread(LbPolicy::RingHash, &[1, 2, 3, 4], 10_000, 0.15);
    assert_spread(LbPolicy::RingHash, &[5, 1, 1], 10_000, 0.15);
}

#[test]
fn maglev_spreads_by_weight_within_3_percent() {
    // The table itself: each host's entries within 1 % of its share.
    for weights in [
        &[1u32, 1, 1, 1][..],
        &[1, 2, 3, 4],
        &[5, 1, 1],
        &[1, 1000, 7],
    ] {
        let mut c = cluster(LbPolicy::Maglev, weights);
        owner(&mut c, 0);
        let table = Maglev::new(c.hosts(), 0, None);
        let total: u32 = weights.iter().sum();
        for (i, (&w, &n)) in weights.iter().zip(&table.entries_per_host()).enumerate() {
            let want = TABLE_SIZE as f64 * f64::from(w) / f64::from(total);
            assert!(
                (n as f64 - want).abs() <= want * 0.01 + 1.0,
                "host {i} weight {w}: {n} entries, want {want:.0}"
            );
        }
    }
    // And random hashes (100 000 of them: sampling noise is about 1 % there).
    assert_spread(LbPolicy::Maglev, &[1, 1, 1, 1], 100_000, 0.03);
    assert_spread(LbPolicy::Maglev, &[1, 2, 3, 4], 100_000, 0.03);
    assert_spread(LbPolicy::Maglev, &[5, 1, 1], 100_000, 0.03);
}

// ---------------------------------------------------------------------------------------------
// Exclusion and availability

#[test]
fn with_a_hash_an_excluded_host_is_avoided_then_fallen_back_to() {
    for policy in HASHED {
        let mut c = cluster(policy, &[1, 1, 1, 2]);
        let mut rng = Rng::from_seed(2);
        for key in keys(3, 300) {
            let first = c.pick_hashed(&mut rng, &[], Some(key)).unwrap();
            let second = c.pick_hashed(&mut rng, &[first], Some(key)).unwrap();
            assert_ne!(second, first, "{policy:?}");
            // Deterministic too.
            assert_eq!(c.pick_hashed(&mut rng, &[first], Some(key)), Some(second));
            let third = c
                .pick_hashed(&mut rng, &[first, second], Some(key))
                .unwrap();
            assert!(third != first && third != second, "{policy:?}");
            let all = [HostId(0), HostId(1), HostId(2), HostId(3)];
            let others: Vec<HostId> = all.iter().copied().filter(|&h| h != HostId(2)).collect();
            assert_eq!(c.pick_hashed(&mut rng, &others, Some(key)), Some(HostId(2)));
            // Everything excluded: back to the host the hash maps to.
            assert_eq!(c.pick_hashed(&mut rng, &all, Some(key)), Some(first));
        }
        c.set_available(HostId(2), false);
        let others = [HostId(0), HostId(1), HostId(3)];
        for key in keys(4, 100) {
            let h = c.pick_hashed(&mut rng, &others, Some(key)).unwrap();
            assert_ne!(h, HostId(2), "{policy:?}: unavailable");
        }
        for h in 0..4 {
            c.set_available(HostId(h), false);
        }
        assert_eq!(c.pick_hashed(&mut rng, &[], Some(1)), None, "{policy:?}");
    }
}

#[test]
fn ring_exclusion_is_the_same_as_unavailability() {
    let mut c = cluster(LbPolicy::RingHash, &[1, 3, 2, 1, 1]);
    let mut rng = Rng::from_seed(0);
    let ks = keys(8, 2000);
    let excluded: Vec<_> = ks
        .iter()
        .map(|&k| c.pick_hashed(&mut rng, &[HostId(1), HostId(3)], Some(k)))
        .collect();
    c.set_available(HostId(1), false);
    c.set_available(HostId(3), false);
    let unavailable: Vec<_> = ks
        .iter()
        .map(|&k| c.pick_hashed(&mut rng, &[], Some(k)))
        .collect();
    assert_eq!(excluded, unavailable);
}

// ---------------------------------------------------------------------------------------------
// Disruption

fn moved(before: &[SocketAddr], after: &[SocketAddr]) -> usize {
    before.iter().zip(after).filter(|(a, b)| a != b).count()
}

/// Every Maglev table entry's hash, once: the owners of these are the whole table, so a share
/// counted over them is exact (no sampled keys, no sampling error).
fn every_entry() -> Vec<u64> {
    (0..TABLE_SIZE as u64).collect()
}

/// Exact shares of the hash space (0..2^64) that change host from the ring over `hosts` to the
/// ring over `more` — all of them, and those that go to `new` — with no sampled keys: every
/// hash between two consecutive points of either ring (merged) goes to one point of each ring,
/// the one its interval's end goes to, so the intervals compare whole.
fn ring_moved_shares(hosts: &[(usize, u32)], more: &[(usize, u32)], new: SocketAddr) -> (f64, f64) {
    let a_hosts = cluster_of(LbPolicy::RingHash, hosts, 1024).hosts().to_vec();
    let b_hosts = cluster_of(LbPolicy::RingHash, more, 1024).hosts().to_vec();
    let (a, b) = (Ring::new(&a_hosts, 1024), Ring::new(&b_hosts, 1024));
    let mut cuts: Vec<u64> = (0..a.len())
        .map(|i| a.point(i))
        .chain((0..b.len()).map(|i| b.point(i)))
        .collect();
    cuts.sort_unstable();
    cuts.dedup();
    let last = *cuts.last().expect("points");
    let (mut moved, mut to_new) = (0u128, 0u128);
    for (i, &end) in cuts.iter().enumerate() {
        // The first interval wraps: (last, 2^64) and [0, first] both go to each ring's first
        // point.
        let len = if i == 0 {
            u128::from(end) + 1 + u128::from(u64::MAX - last)
        } else {
            u128::from(end - cuts[i - 1])
        };
        let before = a_hosts[a.walk(end, |_| true).expect("hosts").0].address;
        let after = b_hosts[b.walk(end, |_| true).expect("hosts").0].address;
        if before != after {
            moved += len;
            to_new += if after == new { len } else { 0 };
        }
    }
    let space = 2f64.powi(64);
    (moved as f64 / space, to_new as f64 / space)
}

/// Host specs: distinct address indexes with weights.
fn host_specs(weights: std::ops::Range<u32>) -> impl Strategy<Value = Vec<(usize, u32)>> {
    prop::collection::vec(weights, 2..20).prop_map(|ws| ws.into_iter().enumerate().collect())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Ring: rebuilding without a host keeps every remaining host's points, so a hash moves
    /// only if it was on the removed host or if its new point is one added because the points
    /// per unit of weight grew; when they stay the same, exactly the removed host's hashes
    /// move.
    #[test]
    fn ring_removal_moves_only_the_removed_hosts_keys(
        hosts in host_specs(1..6),
        removed in any::<prop::sample::Index>(),
        seed: u64,
    ) {
        let removed = removed.index(hosts.len());
        let mut rest = hosts.clone();
        rest.remove(removed);
        let before_hosts = cluster_of(LbPolicy::RingHash, &hosts, 1024).hosts().to_vec();
        let after_hosts = cluster_of(LbPolicy::RingHash, &rest, 1024).hosts().to_vec();
        let (before, after) = (Ring::new(&before_hosts, 1024), Ring::new(&after_hosts, 1024));
        let total = |hs: &[(usize, u32)]| hs.iter().map(|h| u64::from(h.1)).sum::<u64>();
        let same_p = nodes_per_weight(total(&hosts), 1024) == nodes_per_weight(total(&rest), 1024);
        for key in keys(seed, 2000) {
            let (old, _) = before.walk(key, |_| true).unwrap();
            let (new, index) = after.walk(key, |_| true).unwrap();
            let (old, new) = (before_hosts[old].address, after_hosts[new].address);
            if old == address(hosts[removed].0) || old == new {
                continue;
            }
            prop_assert!(!same_p, "key {key:#x} moved from {old} to {new} with the same ring density");
            let point = after.point(index);
            let j = before.start(point);
            prop_assert!(before.point(j) != point, "key {key:#x} moved to an old point");
        }
    }

    /// Ring with weights whose sum exceeds the ring size (one point per unit of weight before
    /// and after): removal moves exactly the removed host's hashes.
    #[test]
    fn ring_removal_is_exact_with_heavy_weights(
        hosts in prop::collection::vec(600u32..=1000, 3..12)
            .prop_map(|ws| ws.into_iter().enumerate().collect::<Vec<_>>()),
        removed in any::<prop::sample::Index>(),
        seed: u64,
    ) {
        let removed = removed.index(hosts.len());
        let mut rest = hosts.clone();
        rest.remove(removed);
        let ks = keys(seed, 2000);
        let before = owners(&mut cluster_of(LbPolicy::RingHash, &hosts, 1024), &ks);
        let after = owners(&mut cluster_of(LbPolicy::RingHash, &rest, 1024), &ks);
        let gone = address(hosts[removed].0);
        for (b, a) in before.iter().zip(&after) {
            prop_assert!(b == a || *b == gone, "{b} -> {a}");
            prop_assert!(*a != gone);
        }
    }

    /// Maglev: rebuilding without a host moves every hash of that host, and at most
    /// `1/N + 5 %` of the others. Counted over every table entry (exact: 4,000 random keys
    /// could fail by sampling error alone).
    #[test]
    fn maglev_removal_moves_few_other_keys(
        hosts in host_specs(1..6),
        removed in any::<prop::sample::Index>(),
    ) {
        let removed = removed.index(hosts.len());
        let mut rest = hosts.clone();
        rest.remove(removed);
        let ks = every_entry();
        let before = owners(&mut cluster_of(LbPolicy::Maglev, &hosts, 1024), &ks);
        let after = owners(&mut cluster_of(LbPolicy::Maglev, &rest, 1024), &ks);
        let gone = address(hosts[removed].0);
        let (mut others, mut others_moved) = (0usize, 0usize);
        for (b, a) in before.iter().zip(&after) {
            prop_assert!(*a != gone);
            if *b != gone {
                others += 1;
                others_moved += usize::from(a != b);
            }
        }
        let bound = 1.0 / hosts.len() as f64 + 0.05;
        prop_assert!(
            (others_moved as f64) <= bound * others as f64,
            "{others_moved} of {others} other keys moved (bound {bound:.3})"
        );
    }

    /// Adding a host of weight `w` moves about its share `w / Σw'` of the hashes: Maglev at
    /// most that + 5 %; the ring that + the share of points the other hosts lose because the
    /// points per unit of weight shrink + 5 %. The shares are exact (every Maglev entry; the
    /// ring's intervals between points): 4,000 random keys could fail by sampling error alone.
    #[test]
    fn adding_a_host_moves_about_its_share(
        hosts in host_specs(1..6),
        weight in 1u32..6,
        maglev: bool,
    ) {
        let policy = if maglev { LbPolicy::Maglev } else { LbPolicy::RingHash };
        let mut more = hosts.clone();
        more.push((hosts.len(), weight));
        let new = address(hosts.len());
        let (moved_share, to_new_share) = if maglev {
            let ks = every_entry();
            let before = owners(&mut cluster_of(policy, &hosts, 1024), &ks);
            let after = owners(&mut cluster_of(policy, &more, 1024), &ks);
            let to_new = before.iter().zip(&after).filter(|(b, a)| b != a && **a == new).count();
            (moved(&before, &after) as f64 / ks.len() as f64, to_new as f64 / ks.len() as f64)
        } else {
            ring_moved_shares(&hosts, &more, new)
        };
        let total = |hs: &[(usize, u32)]| hs.iter().map(|h| u64::from(h.1)).sum::<u64>();
        let share = f64::from(weight) / total(&more) as f64;
        let lost = if maglev {
            0.0
        } else {
            let (p, q) = (nodes_per_weight(total(&hosts), 1024), nodes_per_weight(total(&more), 1024));
            1.0 - q as f64 / p as f64
        };
        let bound = share + lost + 0.05;
        prop_assert!(
            moved_share <= bound,
            "{policy:?}: {moved_share:.4} of the hashes moved (bound {bound:.3})"
        );
        // Whatever moved, moved to the new host (Maglev: almost all of it).
        if !maglev && lost == 0.0 {
            prop_assert_eq!(to_new_share, moved_share);
        }
    }

    /// Making a host unavailable moves exactly its hashes (ring: to the next point's host;
    /// Maglev: to what a table over the available hosts gives); making it available again
    /// restores the original mapping exactly.
    #[test]
    fn unavailability_moves_only_that_hosts_keys_and_comes_back(
        hosts in host_specs(1..6),
        down in prop::collection::vec(any::<prop::sample::Index>(), 1..3),
        maglev: bool,
        seed: u64,
    ) {
        let policy = if maglev { LbPolicy::Maglev } else { LbPolicy::RingHash };
        let mut c = cluster_of(policy, &hosts, 1024);
        let ks = keys(seed, 2000);
        let original = owners(&mut c, &ks);
        let mut down: Vec<usize> = down.iter().map(|i| i.index(hosts.len())).collect();
        down.sort_unstable();
        down.dedup();
        if down.len() == hosts.len() {
            down.pop();
        }
        for &d in &down {
            c.set_available(HostId(d as u32), false);
        }
        let gone: Vec<SocketAddr> = down.iter().map(|&d| address(hosts[d].0)).collect();
        let during = owners(&mut c, &ks);
        let up: Vec<(usize, u32)> = hosts
            .iter()
            .enumerate()
            .filter(|(i, _)| !down.contains(i))
            .map(|(_, &h)| h)
            .collect();
        if maglev {
            // Exactly a fresh table over the available hosts.
            let fresh = owners(&mut cluster_of(policy, &up, 1024), &ks);
            prop_assert_eq!(&during, &fresh);
        } else {
            for (o, d) in original.iter().zip(&during) {
                prop_assert!(o == d || gone.contains(o), "{o} -> {d}");
            }
        }
        for d in &during {
            prop_assert!(!gone.contains(d));
        }
        // Again "unavailable": no change (and for Maglev no rebuild needed).
        c.set_available(HostId(down[0] as u32), false);
        prop_assert_eq!(&owners(&mut c, &ks), &during);
        for &d in &down {
            c.set_available(HostId(d as u32), true);
        }
        prop_assert_eq!(owners(&mut c, &ks), original);
    }

    /// With arbitrary hashes, availability and exclusions: a pick is available, `None` only
    /// when nothing is, excluded only when every available host is, and the same inputs give
    /// the same host.
    #[test]
    fn hashed_picks_keep_the_candidate_rules(
        maglev: bool,
        hosts in prop::collection::vec((1u32..10, any::<bool>()), 1..8),
        excluded in prop::collection::vec(0u32..8, 0..4),
        ks in prop::collection::vec(any::<u64>(), 1..20),
    ) {
        let policy = if maglev { LbPolicy::Maglev } else { LbPolicy::RingHash };
        let weights: Vec<u32> = hosts.iter().map(|h| h.0).collect();
        let mut c = cluster(policy, &weights);
        for (i, (_, available)) in hosts.iter().enumerate() {
            c.set_available(HostId(i as u32), *available);
        }
        let exclude: Vec<HostId> = excluded.into_iter().map(HostId).collect();
        let other = hosts
            .iter()
            .enumerate()
            .any(|(i, h)| h.1 && !exclude.contains(&HostId(i as u32)));
        let mut rng = Rng::from_seed(0);
        for key in ks {
            let picked = c.pick_hashed(&mut rng, &exclude, Some(key));
            prop_assert_eq!(c.pick_hashed(&mut rng, &exclude, Some(key)), picked);
            match picked {
                Some(h) => {
                    prop_assert!(hosts[h.index()].1, "picked unavailable {h:?}");
                    prop_assert!(!other || !exclude.contains(&h), "picked excluded {h:?}");
                }
                None => prop_assert!(hosts.iter().all(|h| !h.1)),
            }
        }
    }
}

#[test]
fn a_balancer_built_without_hosts_builds_its_table_at_the_first_hashed_pick() {
    for policy in HASHED {
        let mut hosts = cluster(policy, &[1, 2, 3]).hosts().to_vec();
        let mut lazy = Balancer::new(policy);
        let mut eager = Balancer::for_hosts(policy, &hosts, DEFAULT_MINIMUM_RING_SIZE);
        let mut rng = Rng::from_seed(0);
        for key in keys(6, 200) {
            assert_eq!(
                lazy.pick_hashed(&mut hosts, &mut rng, &[], Some(key)),
                eager.pick_hashed(&mut hosts, &mut rng, &[], Some(key)),
            );
        }
        // A Maglev table not told of a change still never picks an unavailable host.
        hosts[1].available = false;
        for key in keys(7, 200) {
            assert_ne!(
                lazy.pick_hashed(&mut hosts, &mut rng, &[], Some(key)),
                Some(HostId(1))
            );
        }
    }
}
