use super::*;
use crate::cluster::ClusterState;
use crate::config::{ClusterConfig, HostConfig};
use crate::rng::Rng;
use proptest::prelude::*;
use std::time::Duration;

fn cluster(policy: LbPolicy, weights: &[u32]) -> ClusterState {
    ClusterState::from_config(&ClusterConfig {
        name: "c".into(),
        connect_timeout: Duration::from_secs(1),
        lb_policy: policy,
        hosts: weights
            .iter()
            .enumerate()
            .map(|(i, &weight)| HostConfig {
                address: format!("127.0.0.1:{}", 1000 + i).parse().unwrap(),
                weight,
                priority: 0,
                transport_socket_match: None,
                health: Default::default(),
            })
            .collect(),
        ..ClusterConfig::default()
    })
}

const POLICIES: [LbPolicy; 6] = [
    LbPolicy::RoundRobin,
    LbPolicy::WeightedRoundRobin,
    LbPolicy::Random,
    LbPolicy::LeastRequest,
    LbPolicy::RingHash,
    LbPolicy::Maglev,
];

#[test]
fn round_robin_cycles_and_skips_unavailable() {
    let mut c = cluster(LbPolicy::RoundRobin, &[1, 1, 1]);
    let mut rng = Rng::from_seed(0);
    let picks: Vec<u32> = (0..6).map(|_| c.pick(&mut rng, &[]).unwrap().0).collect();
    assert_eq!(picks, [0, 1, 2, 0, 1, 2]);
    c.set_available(HostId(1), false);
    let picks: Vec<u32> = (0..4).map(|_| c.pick(&mut rng, &[]).unwrap().0).collect();
    assert_eq!(picks, [0, 2, 0, 2]);
}

#[test]
fn smooth_wrr_interleaves_like_nginx() {
    // nginx's documented example: weights 5,1,1 give a a b a c a a (not a a a a a b c).
    let mut c = cluster(LbPolicy::WeightedRoundRobin, &[5, 1, 1]);
    let mut rng = Rng::from_seed(0);
    let picks: Vec<u32> = (0..7).map(|_| c.pick(&mut rng, &[]).unwrap().0).collect();
    assert_eq!(picks, [0, 0, 1, 0, 2, 0, 0]);
}

#[test]
fn exclusion_prefers_untried_hosts_then_falls_back() {
    for policy in POLICIES {
        let mut c = cluster(policy, &[1, 1, 1]);
        let mut rng = Rng::from_seed(3);
        for _ in 0..50 {
            let h = c.pick(&mut rng, &[HostId(0), HostId(2)]).unwrap();
            assert_eq!(h, HostId(1), "{policy:?}");
        }
        c.set_available(HostId(1), false);
        for _ in 0..50 {
            let h = c.pick(&mut rng, &[HostId(0), HostId(2)]).unwrap();
            assert_ne!(h, HostId(1), "{policy:?}");
        }
    }
}

#[test]
fn nothing_available_gives_none() {
    for policy in POLICIES {
        let mut c = cluster(policy, &[1, 2]);
        c.set_available(HostId(0), false);
        c.set_available(HostId(1), false);
        assert_eq!(c.pick(&mut Rng::from_seed(1), &[]), None, "{policy:?}");
    }
}

#[test]
fn least_request_avoids_the_loaded_host() {
    let mut c = cluster(LbPolicy::LeastRequest, &[1, 1]);
    for _ in 0..10 {
        c.begin(HostId(0));
    }
    let mut rng = Rng::from_seed(9);
    for _ in 0..100 {
        assert_eq!(c.pick(&mut rng, &[]), Some(HostId(1)));
    }
}

fn policy() -> impl Strategy<Value = LbPolicy> {
    prop::sample::select(POLICIES.to_vec())
}

proptest! {
    /// Over `k` whole cycles of `Σweights` picks, smooth WRR gives each host exactly `k × weight`.
    #[test]
    fn weighted_picks_converge_to_the_weights(weights in prop::collection::vec(1u32..20, 1..8), cycles in 1usize..5) {
        let mut c = cluster(LbPolicy::WeightedRoundRobin, &weights);
        let mut rng = Rng::from_seed(0);
        let total: u32 = weights.iter().sum();
        let mut counts = vec![0usize; weights.len()];
        for _ in 0..(total as usize * cycles) {
            counts[c.pick(&mut rng, &[]).unwrap().index()] += 1;
        }
        for (i, w) in weights.iter().enumerate() {
            prop_assert_eq!(counts[i], *w as usize * cycles);
        }
    }

    /// Random and least-request (with no load) spread picks evenly: each host within ±35 % of
    /// its share over 400 picks per host. The seed is proptest's, so the bound must hold by
    /// chance too: a host's count is Binomial(400n, 1/n), variance at most 320 (n = 5), and
    /// ±140 is 7.8 standard deviations; Bernstein's inequality puts one host past it below
    /// 2·e^-26.7 ≈ 5·10^-12, so a run (256 cases, at most 5 hosts each) fails by chance alone
    /// less than once in 10^8.
    #[test]
    fn random_policies_spread_evenly(n in 2usize..6, seed: u64, lr in any::<bool>()) {
        let policy = if lr { LbPolicy::LeastRequest } else { LbPolicy::Random };
        let mut c = cluster(policy, &vec![1; n]);
        let mut rng = Rng::from_seed(seed);
        let picks = 400 * n;
        let mut counts = vec![0usize; n];
        for _ in 0..picks {
            counts[c.pick(&mut rng, &[]).unwrap().index()] += 1;
        }
        for count in counts {
            prop_assert!((260..=540).contains(&count), "count {count} of {picks}");
        }
    }

    /// A host marked unavailable is never picked, whatever the policy, weights, load or exclusions.
    #[test]
    fn unavailable_host_is_never_picked(
        policy in policy(),
        hosts in prop::collection::vec((1u32..10, any::<bool>(), 0u32..5), 1..8),
        excluded in prop::collection::vec(0u32..8, 0..4),
        seed: u64,
    ) {
        let weights: Vec<u32> = hosts.iter().map(|h| h.0).collect();
        let mut c = cluster(policy, &weights);
        for (i, (_, available, load)) in hosts.iter().enumerate() {
            c.set_available(HostId(i as u32), *available);
            for _ in 0..*load { c.begin(HostId(i as u32)); }
        }
        let exclude: Vec<HostId> = excluded.into_iter().map(HostId).collect();
        let mut rng = Rng::from_seed(seed);
        let any_available = hosts.iter().any(|h| h.1);
        for _ in 0..50 {
            match c.pick(&mut rng, &exclude) {
                Some(h) => prop_assert!(hosts[h.index()].1, "picked unavailable {h:?}"),
                None => prop_assert!(!any_available),
            }
        }
    }

    /// The same seed gives the same sequence of picks.
    #[test]
    fn same_seed_same_picks(policy in policy(), weights in prop::collection::vec(1u32..10, 1..8), seed: u64) {
        let run = || {
            let mut c = cluster(policy, &weights);
            let mut rng = Rng::from_seed(seed);
            (0..100).map(|_| c.pick(&mut rng, &[]).unwrap().0).collect::<Vec<_>>()
        };
        prop_assert_eq!(run(), run());
    }
}

/// A balancer built for hosts of several levels has every level's round-robin cursor (and, for
/// the hash policies, every level's ring or table slot) already: the first pick into a level
/// does not grow them (no allocation on the pick path).
#[test]
fn level_state_is_sized_when_the_balancer_is_built() {
    let hosts: Vec<Host> = (0..6u32)
        .map(|i| Host {
            address: format!("127.0.0.1:{}", 1000 + i).parse().unwrap(),
            weight: 1,
            transport: Default::default(),
            priority: i / 2,
            health: Default::default(),
            available: true,
            active: 0,
            swrr_current: 0,
        })
        .collect();
    for policy in POLICIES {
        let mut hosts = hosts.clone();
        let mut b = Balancer::for_hosts(policy, &hosts, 64);
        assert_eq!(b.level_cursors.len(), 3, "{policy:?}");
        let cursors = b.level_cursors.as_ptr();
        let slots = (b.level_rings.as_ptr(), b.level_maglevs.as_ptr());
        let mut rng = Rng::from_seed(3);
        for level in [2, 0, 1] {
            let picked = b.pick_in_level(&mut hosts, &mut rng, &[], Some(7), Some(level));
            assert_eq!(picked.map(|h| hosts[h.index()].priority), Some(level));
        }
        assert_eq!(
            b.level_cursors.as_ptr(),
            cursors,
            "{policy:?}: cursors reallocated"
        );
        assert_eq!(
            (b.level_rings.as_ptr(), b.level_maglevs.as_ptr()),
            slots,
            "{policy:?}: level slots reallocated"
        );
    }
}
