//! A cluster's host set as one worker sees it: addresses, weights, availability and load.
//!
//! Each worker owns its own `ClusterState` (nothing is shared or locked across workers); the
//! driver tells it when a host starts and ends serving a connection or request
//! ([`ClusterState::begin`] / [`ClusterState::end`]) and when a host becomes (un)available
//! (health checks, outlier detection).
//!
//! Invariant: `active` of every host equals the number of `begin` calls minus `end` calls for
//! it (checked in debug builds: `end` never underflows).
//!
//! A DNS cluster's host ids are slots ([`crate::host::Slot`]; `host_slots` of the config): a
//! slot is *present* (it holds a resolved address) or *free*. [`ClusterState::update_hosts`]
//! changes which slots hold which address in place, without a new config generation: a free
//! slot is never available to the balancer, whatever health checking says (the verdict is
//! kept for when the slot is filled), and a host that stays keeps its id and every per-id
//! state; `active` is untouched (a removed host's connections finish and still `end`).

use crate::config::{ClusterConfig, LbPolicy};
use crate::health::{Availability, CircuitBreakers};
// The host types are their own module, below the balancers and health checking (which work on
// hosts and host ids) and this module (which owns them); re-exported at their old paths.
pub use crate::host::{Host, HostId, Slot};
use crate::lb::Balancer;
use crate::rng::Rng;

/// The placeholder address of an `original_dst` cluster's one host (see
/// [`ClusterState::from_config`]).
pub const ORIGINAL_DESTINATION: std::net::SocketAddr =
    std::net::SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), 0);

/// A cluster's hosts and its balancer.
#[derive(Clone, Debug)]
pub struct ClusterState {
    name: String,
    hosts: Vec<Host>,
    /// Per host: whether its slot holds an address (always, except in a DNS cluster).
    present: Vec<bool>,
    /// Per host: the availability health checking and outlier detection decided (a free
    /// slot's host is unavailable whatever this says).
    wanted: Vec<bool>,
    balancer: Balancer,
    /// `ring_hash`'s minimum ring size, to rebuild the balancer when the hosts change.
    minimum_ring_size: u32,
    /// This worker's share of the cluster's circuit-breaker limits.
    breakers: CircuitBreakers,
}

impl ClusterState {
    /// A fresh state for a configured cluster: every host available, nothing active.
    #[must_use]
    pub fn from_config(cfg: &ClusterConfig) -> Self {
        let mut hosts: Vec<Host> = cfg
            .hosts
            .iter()
            .map(|h| Host {
                address: h.address,
                weight: h.weight,
                available: true,
                active: 0,
                swrr_current: 0,
            })
            .collect();
        // An `original_dst` cluster has one host: "the connection's original destination",
        // whose address the driver supplies per request (the unspecified address here never
        // reaches a socket). The breakers, retries and timeouts apply to it as to any host.
        if cfg.kind == crate::config::ClusterKind::OriginalDst {
            hosts.push(Host {
                address: ORIGINAL_DESTINATION,
                weight: 1,
                available: true,
                active: 0,
                swrr_current: 0,
            });
        }
        // A DNS cluster starts with every slot free: no host until its first answer.
        if cfg.kind.is_dns() {
            hosts = (0..cfg.host_slots())
                .map(|_| Host {
                    address: ORIGINAL_DESTINATION,
                    weight: 1,
                    available: false,
                    active: 0,
                    swrr_current: 0,
                })
                .collect();
        }
        let present = vec![!cfg.kind.is_dns(); hosts.len()];
        let balancer = Balancer::for_hosts(cfg.lb_policy, &hosts, cfg.minimum_ring_size);
        ClusterState {
            name: cfg.name.clone(),
            wanted: vec![true; hosts.len()],
            present,
            hosts,
            balancer,
            minimum_ring_size: cfg.minimum_ring_size,
            breakers: CircuitBreakers::new(cfg.circuit_breakers),
        }
    }

    /// The state worker `worker` of `workers` keeps: like [`ClusterState::from_config`], with
    /// the worker's share of the circuit-breaker limits ([`CircuitBreakers::per_worker`]).
    #[must_use]
    pub fn for_worker(cfg: &ClusterConfig, worker: usize, workers: usize) -> Self {
        let mut state = Self::from_config(cfg);
        let workers = workers.max(1);
        if workers > 1 {
            state.breakers = CircuitBreakers::per_worker(cfg.circuit_breakers, workers)
                .swap_remove(worker.min(workers - 1));
        }
        state
    }

    /// The circuit breakers (this worker's share).
    #[must_use]
    pub fn breakers(&self) -> &CircuitBreakers {
        &self.breakers
    }

    /// The circuit breakers, to acquire and release units.
    pub fn breakers_mut(&mut self) -> &mut CircuitBreakers {
        &mut self.breakers
    }

    /// The cluster's name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The balancing policy.
    #[must_use]
    pub fn policy(&self) -> LbPolicy {
        self.balancer.policy()
    }

    /// All hosts, indexed by [`HostId`].
    #[must_use]
    pub fn hosts(&self) -> &[Host] {
        &self.hosts
    }

    /// One host.
    #[must_use]
    pub fn host(&self, id: HostId) -> &Host {
        &self.hosts[id.index()]
    }

    /// Picks an available host, preferring one not in `exclude` (hosts already tried for this
    /// session); falls back to an excluded but available host when no other is left. `None`
    /// when no host is available at all. [`ClusterState::pick_hashed`] without a hash.
    pub fn pick(&mut self, rng: &mut Rng, exclude: &[HostId]) -> Option<HostId> {
        self.pick_hashed(rng, exclude, None)
    }

    /// [`ClusterState::pick`] for a request with this hash (see [`crate::lb::request_hash`]):
    /// `ring_hash` and `maglev` pick by it (at random when it is `None`); the other policies
    /// ignore it. See [`crate::lb`] for the rules.
    pub fn pick_hashed(
        &mut self,
        rng: &mut Rng,
        exclude: &[HostId],
        hash: Option<u64>,
    ) -> Option<HostId> {
        self.balancer
            .pick_hashed(&mut self.hosts, rng, exclude, hash)
    }

    /// Marks a host (un)available for picking (a free slot stays unavailable until filled).
    pub fn set_available(&mut self, id: HostId, available: bool) {
        self.wanted[id.index()] = available;
        let available = available && self.present[id.index()];
        let host = &mut self.hosts[id.index()];
        if host.available != available {
            host.available = available;
            self.balancer.availability_changed();
        }
    }

    /// Copies the availability that health checking and outlier detection decided into the
    /// hosts ([`crate::health::availability`]); it has one entry per host.
    pub fn apply_availability(&mut self, availability: &Availability) {
        debug_assert_eq!(self.hosts.len(), availability.available.len());
        for (i, &a) in availability.available.iter().enumerate() {
            self.set_available(HostId(i as u32), a);
        }
    }

    /// Whether host `id`'s slot holds an address (always, except in a DNS cluster).
    #[must_use]
    pub fn is_present(&self, id: HostId) -> bool {
        self.present[id.index()]
    }

    /// The slots as they are now (see [`crate::host::merge_answer`]).
    #[must_use]
    pub fn slots(&self) -> Vec<Slot> {
        self.hosts
            .iter()
            .zip(&self.present)
            .map(|(h, &p)| p.then_some((h.address, h.weight)))
            .collect()
    }

    /// Puts `slots` (one per host id; extra ones are ignored, missing ones are free) in
    /// place: a host whose address stays keeps everything; a filled slot's host is available
    /// as far as health checking said for its id; a freed one is never picked again (its
    /// connections finish). The balancer is rebuilt when anything changed. Returns the ids
    /// whose address changed (filled, moved or freed): whatever the caller keeps per id for
    /// the old address (idle pooled connections) is stale.
    pub fn update_hosts(&mut self, slots: &[Slot]) -> Vec<HostId> {
        let mut gone = Vec::new();
        let mut changed = false;
        for i in 0..self.hosts.len() {
            let slot = slots.get(i).copied().flatten();
            let host = &mut self.hosts[i];
            let was = self.present[i].then_some(host.address);
            match slot {
                Some((address, weight)) => {
                    if was != Some(address) {
                        gone.push(HostId(i as u32));
                        host.address = address;
                        host.swrr_current = 0;
                        self.present[i] = true;
                        changed = true;
                    }
                    if host.weight != weight {
                        host.weight = weight;
                        changed = true;
                    }
                }
                None if was.is_some() => {
                    self.present[i] = false;
                    gone.push(HostId(i as u32));
                    changed = true;
                }
                None => {}
            }
            let available = self.wanted[i] && self.present[i];
            if host.available != available {
                host.available = available;
                changed = true;
            }
        }
        if changed {
            self.balancer = Balancer::for_hosts(self.policy(), &self.hosts, self.minimum_ring_size);
        }
        gone
    }

    /// How many hosts are available.
    #[must_use]
    pub fn available_count(&self) -> usize {
        self.hosts.iter().filter(|h| h.available).count()
    }

    /// A host starts serving a connection or request.
    pub fn begin(&mut self, id: HostId) {
        self.hosts[id.index()].active += 1;
    }

    /// A host stops serving a connection or request.
    pub fn end(&mut self, id: HostId) {
        let h = &mut self.hosts[id.index()];
        debug_assert!(
            h.active > 0,
            "ClusterState::end without begin for {}",
            h.address
        );
        h.active = h.active.saturating_sub(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ClusterKind, DnsName, DnsSettings};
    use crate::host::merge_answer;

    fn dns_cluster(policy: LbPolicy) -> ClusterConfig {
        ClusterConfig {
            name: "web".into(),
            kind: ClusterKind::StrictDns,
            lb_policy: policy,
            dns: Some(DnsSettings {
                names: vec![DnsName {
                    name: "web".into(),
                    port: 80,
                    weight: 1,
                }],
                refresh_rate: std::time::Duration::from_secs(5),
                respect_dns_ttl: false,
                lookup_family: Default::default(),
                max_hosts: 4,
            }),
            ..ClusterConfig::default()
        }
    }

    fn addr(n: u8) -> std::net::SocketAddr {
        std::net::SocketAddr::from(([10, 0, 0, n], 80))
    }

    #[test]
    fn a_dns_cluster_has_no_host_until_an_answer_and_changes_hosts_in_place() {
        for policy in [
            LbPolicy::RoundRobin,
            LbPolicy::LeastRequest,
            LbPolicy::RingHash,
            LbPolicy::Maglev,
        ] {
            let mut c = ClusterState::from_config(&dns_cluster(policy));
            let mut rng = Rng::from_seed(7);
            assert_eq!(c.hosts().len(), 4);
            assert_eq!(c.pick(&mut rng, &[]), None);
            // Health says yes for a free slot: still never picked.
            c.set_available(HostId(3), true);
            assert_eq!(c.pick(&mut rng, &[]), None);

            let first = merge_answer(&c.slots(), &[(addr(1), 1), (addr(2), 1)]);
            assert_eq!(c.update_hosts(&first.slots), vec![HostId(0), HostId(1)]);
            assert!(c.update_hosts(&first.slots).is_empty());
            c.begin(HostId(0));
            c.set_available(HostId(1), false); // ejected: stays so across the update
            for _ in 0..20 {
                assert_eq!(c.pick(&mut rng, &[]), Some(HostId(0)), "{policy:?}");
            }
            // 2 stays (still ejected), 1 goes (its request still in flight), 3 comes.
            let second = merge_answer(&c.slots(), &[(addr(2), 1), (addr(3), 1)]);
            assert_eq!(c.update_hosts(&second.slots), vec![HostId(0), HostId(2)]);
            assert_eq!(c.host(HostId(1)).address, addr(2));
            assert!(!c.host(HostId(1)).available);
            assert_eq!(c.host(HostId(0)).active, 1);
            for _ in 0..20 {
                assert_eq!(c.pick(&mut rng, &[]), Some(HostId(2)), "{policy:?}");
            }
            c.end(HostId(0));
            c.set_available(HostId(1), true);
            let picked: std::collections::BTreeSet<_> =
                (0..50).filter_map(|_| c.pick(&mut rng, &[])).collect();
            assert!(
                picked.is_subset(&[HostId(1), HostId(2)].into()),
                "{policy:?}"
            );
            assert_eq!(c.available_count(), 2);
        }
    }
}
