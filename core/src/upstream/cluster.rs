//! A cluster's host set as one worker sees it: addresses, weights, availability and load.
//!
//! Each worker owns its own `ClusterState` (nothing is shared or locked across workers); the
//! driver tells it when a host starts and ends serving a connection or request
//! ([`ClusterState::begin`] / [`ClusterState::end`]) and when a host becomes (un)available
//! (health checks, outlier detection).
//!
//! Invariant: `active` of every host equals the number of `begin` calls minus `end` calls for
//! it (checked in debug builds: `end` never underflows).

use crate::config::{ClusterConfig, LbPolicy};
use crate::health::{Availability, CircuitBreakers};
// The host types are their own module, below the balancers and health checking (which work on
// hosts and host ids) and this module (which owns them); re-exported at their old paths.
pub use crate::host::{Host, HostId};
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
    balancer: Balancer,
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
        let balancer = Balancer::for_hosts(cfg.lb_policy, &hosts, cfg.minimum_ring_size);
        ClusterState {
            name: cfg.name.clone(),
            hosts,
            balancer,
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

    /// Marks a host (un)available for picking.
    pub fn set_available(&mut self, id: HostId, available: bool) {
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
