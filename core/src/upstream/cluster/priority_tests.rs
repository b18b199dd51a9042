//! Priority levels as a cluster applies them: the level loads follow health (active checks,
//! outlier ejection: whatever `apply_health` is given), picks follow the loads, panic is per
//! level, and an endpoints update in place moves a host between levels keeping its state.

use super::*;
use crate::config::{ClusterKind, HostConfig, LbPolicy};
use crate::host::merge_answer;
use crate::rng::Rng;
use proptest::prelude::{Just, any, prop_assert, prop_assert_eq, prop_oneof, proptest};

fn addr(n: u8) -> std::net::SocketAddr {
    std::net::SocketAddr::from(([10, 0, 0, n], 80))
}

/// A static cluster with one host per entry of `priorities` (host `i` at 10.0.0.`i+1`).
fn cluster(policy: LbPolicy, priorities: &[u32]) -> ClusterConfig {
    ClusterConfig {
        name: "web".into(),
        kind: ClusterKind::Static,
        lb_policy: policy,
        hosts: priorities
            .iter()
            .enumerate()
            .map(|(i, &priority)| HostConfig {
                address: addr(i as u8 + 1),
                weight: 1,
                priority,
                transport_socket_match: None,
            })
            .collect(),
        ..ClusterConfig::default()
    }
}

/// How many of `n` picks land on each host (`None`: no host).
fn picks(c: &mut ClusterState, rng: &mut Rng, n: usize, hashed: bool) -> (Vec<usize>, usize) {
    let mut counts = vec![0; c.hosts().len()];
    let mut none = 0;
    for k in 0..n {
        let hash = hashed.then(|| crate::lb::hash_bytes(&k.to_le_bytes()));
        match c.pick_hashed(rng, &[], hash) {
            Some(id) => {
                assert!(c.host(id).available, "picked an unavailable host");
                counts[id.index()] += 1;
            }
            None => none += 1,
        }
    }
    (counts, none)
}

const POLICIES: [LbPolicy; 6] = [
    LbPolicy::RoundRobin,
    LbPolicy::WeightedRoundRobin,
    LbPolicy::Random,
    LbPolicy::LeastRequest,
    LbPolicy::RingHash,
    LbPolicy::Maglev,
];

/// P0 healthy takes everything; half of P0 ejected: 70 % to P0's other host, 30 % to P1
/// (factor 1.4); all of P0 ejected: all to P1; P0 back: all to P0 again — for every policy,
/// with and without a hash.
#[test]
fn load_moves_to_the_next_level_as_p0_loses_hosts_and_back() {
    for policy in POLICIES {
        for hashed in [false, true] {
            let mut c = ClusterState::from_config(&cluster(policy, &[0, 0, 1, 1]));
            let mut rng = Rng::from_seed(11);
            let ctx = format!("{policy:?} hashed={hashed}");
            assert!(!c.apply_health(&[true; 4], 50));
            let (counts, none) = picks(&mut c, &mut rng, 2000, hashed);
            assert_eq!((counts[2] + counts[3], none), (0, 0), "{ctx}: P1 idle");
            assert_eq!(c.priority_load().load, [100, 0]);

            // Outlier detection ejects host 0.
            assert!(!c.apply_health(&[false, true, true, true], 50));
            assert_eq!(c.priority_load().load, [70, 30], "{ctx}");
            let (counts, _) = picks(&mut c, &mut rng, 4000, hashed);
            assert_eq!(counts[0], 0, "{ctx}: ejected host picked");
            let p0 = counts[1];
            assert!(
                (2500..=3100).contains(&p0),
                "{ctx}: P0 got {p0} of 4000 (70 %)"
            );

            // Both P0 hosts down: P1 takes it all, no panic (P1 is healthy).
            assert!(!c.apply_health(&[false, false, true, true], 50));
            let (counts, _) = picks(&mut c, &mut rng, 1000, hashed);
            assert_eq!(counts[0] + counts[1], 0, "{ctx}");
            assert_eq!(counts[2] + counts[3], 1000, "{ctx}");

            // Recovered: back to P0.
            assert!(!c.apply_health(&[true; 4], 50));
            let (counts, _) = picks(&mut c, &mut rng, 1000, hashed);
            assert_eq!(counts[0] + counts[1], 1000, "{ctx}");
        }
    }
}

/// Every level below the panic threshold: total panic, every host of every level is picked,
/// spread by the levels' host counts.
#[test]
fn every_level_down_is_total_panic_over_every_host() {
    let mut c = ClusterState::from_config(&cluster(LbPolicy::Random, &[0, 1, 1, 1]));
    let mut rng = Rng::from_seed(3);
    assert!(c.apply_health(&[false; 4], 50));
    assert_eq!(c.priority_load().load, [25, 75]);
    assert!(c.hosts().iter().all(|h| h.available));
    let (counts, none) = picks(&mut c, &mut rng, 4000, false);
    assert_eq!(none, 0);
    assert!(
        counts.iter().all(|&n| (800..=1200).contains(&n)),
        "{counts:?}"
    );
    // Panic off: nothing is picked.
    assert!(!c.apply_health(&[false; 4], 0));
    assert_eq!(picks(&mut c, &mut rng, 10, false).1, 10);
}

/// A level panics only when the total health is short of 100 and its own usable share is under
/// the threshold. P0 at 1 of 4 (health 35) and P1 at 1 of 2 (health 70): total 105, no panic.
/// P0 at 1 of 4 and P1 at 1 of 3 (health 46), threshold 30 %: total 81, P0 (25 %) in panic —
/// every P0 host picked — P1 (33 %) not: its down hosts never.
#[test]
fn a_level_panics_only_when_the_total_health_is_short() {
    let mut c = ClusterState::from_config(&cluster(LbPolicy::RoundRobin, &[0, 0, 0, 0, 1, 1]));
    assert!(!c.apply_health(&[true, false, false, false, true, false], 50));
    assert_eq!(c.priority_load().load, [35, 65]);
    assert!(!c.host(HostId(1)).available);

    let mut c = ClusterState::from_config(&cluster(LbPolicy::RoundRobin, &[0, 0, 0, 0, 1, 1, 1]));
    let mut rng = Rng::from_seed(5);
    assert!(c.apply_health(&[true, false, false, false, true, false, false], 30));
    assert_eq!(c.priority_load().load, [44, 56]);
    assert_eq!(c.priority_load().panic, [true, false]);
    let (counts, none) = picks(&mut c, &mut rng, 4000, false);
    assert_eq!(none, 0);
    assert!(
        counts[..4].iter().all(|&n| (350..=530).contains(&n)),
        "{counts:?}"
    );
    assert!((2040..=2440).contains(&counts[4]), "{counts:?}");
    assert_eq!(counts[5..], [0, 0]);
}

/// An endpoints update in place that moves a host to another level keeps its id and its
/// health verdict, and the loads follow at the next pick.
#[test]
fn a_priority_change_in_place_keeps_the_host_and_moves_the_load() {
    let cfg = ClusterConfig {
        hosts_change_in_place: true,
        ..cluster(LbPolicy::RoundRobin, &[0, 1])
    };
    let mut c = ClusterState::from_config(&cfg);
    let mut rng = Rng::from_seed(9);
    // Host 0 (P0) is down: P1's host takes everything.
    c.apply_health(&vec![true; c.hosts().len()], 50);
    c.set_available(HostId(0), false);
    assert_eq!(c.pick(&mut rng, &[]), Some(HostId(1)));
    // The update: 10.0.0.2 moves to P0, 10.0.0.1 to P1, and a new P1 host comes.
    let answer = [
        SlotHost {
            priority: 1,
            ..SlotHost::plain(addr(1), 1)
        },
        SlotHost::plain(addr(2), 1),
        SlotHost {
            priority: 1,
            ..SlotHost::plain(addr(3), 1)
        },
    ];
    let merged = merge_answer(&c.slots(), &answer);
    let replaced = c.update_hosts(&merged.slots, &[]);
    assert_eq!(replaced, vec![HostId(2)], "only the new host takes an id");
    assert_eq!(
        (c.host(HostId(0)).priority, c.host(HostId(1)).priority),
        (1, 0)
    );
    assert!(!c.host(HostId(0)).available, "10.0.0.1 is still down");
    let (counts, _) = picks(&mut c, &mut rng, 100, false);
    assert_eq!(counts[..3], [0, 100, 0], "P0 is 10.0.0.2 now, healthy");
    assert_eq!(c.priority_load().load, [100, 0]);
}

/// A cluster of one level draws no level: its picks and RNG stream are those of a cluster
/// without priorities (the balancer alone).
#[test]
fn one_level_picks_as_the_balancer_alone_does() {
    for policy in POLICIES {
        let cfg = cluster(policy, &[0, 0, 0, 0, 0]);
        let mut c = ClusterState::from_config(&cfg);
        let mut b = Balancer::for_hosts(policy, c.hosts(), cfg.minimum_ring_size);
        let mut hosts = c.hosts().to_vec();
        let (mut r1, mut r2) = (Rng::from_seed(1), Rng::from_seed(1));
        for k in 0..200u64 {
            let hash = (k % 3 == 0).then_some(k.wrapping_mul(0x9e37_79b9_7f4a_7c15));
            assert_eq!(
                c.pick_hashed(&mut r1, &[], hash),
                b.pick_hashed(&mut hosts, &mut r2, &[], hash),
                "{policy:?} pick {k}"
            );
        }
    }
}

proptest! {
    /// Whatever the levels and verdicts: no unavailable host is picked, and the share of picks
    /// per level is within 4 points of the computed load (2000 random picks).
    #[test]
    fn picks_follow_the_level_loads(
        hosts in proptest::collection::vec((0u32..3, proptest::bool::weighted(0.6)), 1..12),
        threshold in prop_oneof![Just(0u32), Just(50), 0u32..=100],
        policy in proptest::sample::select(POLICIES.to_vec()),
        seed in any::<u64>(),
    ) {
        // Contiguous priorities: renumber the ones used.
        let mut used: Vec<u32> = hosts.iter().map(|h| h.0).collect();
        used.sort_unstable();
        used.dedup();
        let priorities: Vec<u32> = hosts
            .iter()
            .map(|h| used.iter().position(|&p| p == h.0).unwrap() as u32)
            .collect();
        let usable: Vec<bool> = hosts.iter().map(|h| h.1).collect();
        let mut c = ClusterState::from_config(&cluster(policy, &priorities));
        c.apply_health(&usable, threshold);
        let load = c.priority_load().load.clone();
        let mut rng = Rng::from_seed(seed);
        let n = 2000;
        let mut per_level = vec![0usize; load.len()];
        let mut none = 0;
        for k in 0..n {
            let hash = (policy.is_consistent_hash())
                .then(|| crate::lb::hash_bytes(&(k as u64 ^ seed).to_le_bytes()));
            match c.pick_hashed(&mut rng, &[], hash) {
                Some(id) => {
                    prop_assert!(c.host(id).available);
                    per_level[c.host(id).priority as usize] += 1;
                }
                None => none += 1,
            }
        }
        if load.iter().sum::<u32>() == 0 {
            // Nothing loaded: only what is available anyway (usable hosts) may be picked.
            prop_assert!(none == n || c.available_count() > 0);
        } else {
            prop_assert_eq!(none, 0);
            for (level, &share) in load.iter().enumerate() {
                let got = per_level[level] * 100 / n;
                prop_assert!(
                    got.abs_diff(share as usize) <= 4,
                    "level {} got {} % of picks, load {} % ({:?})", level, got, share, load
                );
            }
        }
    }
}
