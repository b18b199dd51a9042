//! `Balancer::pick_hashed` over arbitrary hosts (weights 1..=1000, availability, load), policy
//! (the consistent-hash ones with arbitrary request hashes and ring sizes), exclusions and seed,
//! with the host set changing between picks.
//!
//! Properties of every pick:
//! - a picked host exists and is available;
//! - `None` only when no host is available;
//! - an excluded host is picked only when every available host is excluded;
//! - ring hash and Maglev with a hash: the same hash and exclusions give the same host again,
//!   and (weights unchanged since the build) the same host as a balancer freshly built over the
//!   current hosts (for Maglev: a table over the available hosts only, so the incremental
//!   table's lazy rebuilds are checked).
//!
//! And of runs of picks over a fixed candidate set:
//! - round robin picks each candidate exactly once in `#candidates` consecutive picks;
//! - a fresh smooth weighted round robin picks each host exactly `weight` times in `Σweight`
//!   consecutive picks.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use sluice_core::cluster::{ClusterState, Host, HostId};
use sluice_core::config::{ClusterConfig, HostConfig, LbPolicy, MAX_RING_SIZE};
use sluice_core::lb::Balancer;
use sluice_core::rng::Rng;

/// Hosts per input, at most.
const MAX_HOSTS: usize = 32;
/// Largest `Σweight` for which a whole smooth WRR period is checked.
const MAX_PERIOD: u32 = 4_096;

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Policy {
    RoundRobin,
    WeightedRoundRobin,
    Random,
    LeastRequest,
    RingHash,
    Maglev,
}

impl From<Policy> for LbPolicy {
    fn from(p: Policy) -> Self {
        match p {
            Policy::RoundRobin => LbPolicy::RoundRobin,
            Policy::WeightedRoundRobin => LbPolicy::WeightedRoundRobin,
            Policy::Random => LbPolicy::Random,
            Policy::LeastRequest => LbPolicy::LeastRequest,
            Policy::RingHash => LbPolicy::RingHash,
            Policy::Maglev => LbPolicy::Maglev,
        }
    }
}

#[derive(Arbitrary, Debug)]
struct HostSpec {
    weight: u16,
    available: bool,
    active: u16,
}

#[derive(Arbitrary, Debug)]
enum Op {
    /// One pick with these host indexes excluded (indexes past the end are allowed: a caller
    /// may hold a stale id).
    Pick {
        exclude: Vec<u8>,
        hash: Option<u64>,
    },
    /// A pick with a hash, checked against a balancer built afresh over the current hosts.
    Fresh {
        exclude: Vec<u8>,
        hash: u64,
    },
    /// `k` picks in a row, nothing excluded, nothing changing in between.
    Run {
        k: u8,
    },
    SetAvailable {
        host: u8,
        available: bool,
    },
    SetActive {
        host: u8,
        active: u16,
    },
    SetWeight {
        host: u8,
        weight: u16,
    },
}

#[derive(Arbitrary, Debug)]
struct Input {
    policy: Policy,
    seed: u64,
    /// `ring_hash`'s `minimum_ring_size`, reduced to 1..=16384.
    ring: u16,
    hosts: Vec<HostSpec>,
    ops: Vec<Op>,
}

fn weight(w: u16) -> u32 {
    u32::from(w) % 1000 + 1
}

fn check_pick(hosts: &[Host], exclude: &[HostId], picked: Option<HostId>) {
    let available = hosts.iter().any(|h| h.available);
    let Some(id) = picked else {
        assert!(!available, "None with an available host: {hosts:?}");
        return;
    };
    let host = hosts
        .get(id.index())
        .unwrap_or_else(|| panic!("picked {id:?} of {} hosts", hosts.len()));
    assert!(host.available, "picked unavailable {id:?}: {hosts:?}");
    let other_candidate = hosts
        .iter()
        .enumerate()
        .any(|(i, h)| h.available && !exclude.contains(&HostId(i as u32)));
    if other_candidate {
        assert!(
            !exclude.contains(&id),
            "picked excluded {id:?} though a candidate was left: {exclude:?} {hosts:?}"
        );
    }
}

fuzz_target!(|input: Input| {
    let specs = &input.hosts[..input.hosts.len().min(MAX_HOSTS)];
    let policy = LbPolicy::from(input.policy);
    // `Host` has crate-private balancer state: build the hosts through a `ClusterState` and
    // drive the `Balancer` on a copy whose public fields the fuzzer then sets.
    let minimum_ring_size = (u32::from(input.ring) % 16_384 + 1).min(MAX_RING_SIZE);
    let template = ClusterState::from_config(&ClusterConfig {
        name: "c".into(),
        connect_timeout: std::time::Duration::from_secs(1),
        lb_policy: policy,
        minimum_ring_size,
        hosts: specs
            .iter()
            .enumerate()
            .map(|(i, s)| HostConfig {
                address: format!("10.0.0.{i}:80").parse().unwrap(),
                weight: weight(s.weight),
                priority: 0,
                transport_socket_match: None,
                health: Default::default(),
            })
            .collect(),
        ..ClusterConfig::default()
    });
    let mut hosts: Vec<Host> = template.hosts().to_vec();
    for (h, s) in hosts.iter_mut().zip(specs) {
        h.available = s.available;
        h.active = u32::from(s.active);
    }
    let mut balancer = Balancer::for_hosts(policy, &hosts, minimum_ring_size);
    // The hash policies' ring or table holds the weights of its build.
    let mut weights_changed = false;
    let mut rng = Rng::from_seed(input.seed);
    let n = hosts.len();

    // A fresh smooth WRR over a fixed set gives each host exactly its weight per period.
    if policy == LbPolicy::WeightedRoundRobin {
        let total: u32 = hosts.iter().filter(|h| h.available).map(|h| h.weight).sum();
        if total > 0 && total <= MAX_PERIOD {
            let mut fresh = hosts.clone();
            let mut b = Balancer::new(policy);
            let mut counts = vec![0u32; n];
            for _ in 0..total {
                let id = b.pick(&mut fresh, &mut rng, &[]);
                check_pick(&fresh, &[], id);
                counts[id.unwrap().index()] += 1;
            }
            for (i, h) in hosts.iter().enumerate() {
                let want = if h.available { h.weight } else { 0 };
                assert_eq!(counts[i], want, "host {i} in one SWRR period: {counts:?}");
            }
        }
    }

    for op in input.ops {
        match op {
            Op::Pick { exclude, hash } => {
                let exclude: Vec<HostId> = exclude.iter().map(|&i| HostId(u32::from(i))).collect();
                let id = balancer.pick_hashed(&mut hosts, &mut rng, &exclude, hash);
                check_pick(&hosts, &exclude, id);
                if policy.is_consistent_hash() && hash.is_some() {
                    let again = balancer.pick_hashed(&mut hosts, &mut rng, &exclude, hash);
                    assert_eq!(again, id, "same hash, other host: {hash:?} {exclude:?}");
                }
            }
            Op::Fresh { exclude, hash } => {
                let exclude: Vec<HostId> = exclude.iter().map(|&i| HostId(u32::from(i))).collect();
                let id = balancer.pick_hashed(&mut hosts, &mut rng, &exclude, Some(hash));
                check_pick(&hosts, &exclude, id);
                if policy.is_consistent_hash() && !weights_changed {
                    let mut fresh = Balancer::for_hosts(policy, &hosts, minimum_ring_size);
                    let want = fresh.pick_hashed(&mut hosts, &mut rng, &exclude, Some(hash));
                    assert_eq!(
                        id, want,
                        "incremental vs fresh: {hash:#x} {exclude:?} {hosts:?}"
                    );
                }
            }
            Op::Run { k } => {
                let candidates = hosts.iter().filter(|h| h.available).count();
                let k = if policy == LbPolicy::RoundRobin && candidates > 0 {
                    candidates
                } else {
                    usize::from(k % 32)
                };
                let mut counts = vec![0u32; n];
                for _ in 0..k {
                    let id = balancer.pick(&mut hosts, &mut rng, &[]);
                    check_pick(&hosts, &[], id);
                    if let Some(id) = id {
                        counts[id.index()] += 1;
                    }
                }
                if policy == LbPolicy::RoundRobin {
                    for (i, h) in hosts.iter().enumerate() {
                        let want = u32::from(h.available);
                        assert_eq!(counts[i], want, "host {i} in one RR cycle: {counts:?}");
                    }
                }
            }
            Op::SetAvailable { host, available } if n > 0 => {
                hosts[usize::from(host) % n].available = available;
                balancer.availability_changed();
            }
            Op::SetActive { host, active } if n > 0 => {
                hosts[usize::from(host) % n].active = u32::from(active);
            }
            Op::SetWeight { host, weight: w } if n > 0 => {
                hosts[usize::from(host) % n].weight = weight(w);
                weights_changed = true;
            }
            Op::SetAvailable { .. } | Op::SetActive { .. } | Op::SetWeight { .. } => {}
        }
    }
});
