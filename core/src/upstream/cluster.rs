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
//! slot is *present* (it holds a resolved address) or *free*. A static cluster whose hosts
//! change in place (`hosts_change_in_place`) has its configured hosts present, then spare ids,
//! free. [`ClusterState::update_hosts`]
//! changes which slots hold which host (address and transport: [`crate::host::SlotHost`]) in
//! place, without a new config generation: a free
//! slot is never available to the balancer, whatever health checking says (the verdict is
//! kept for when the slot is filled), and a host that stays keeps its id and every per-id
//! state; `active` is untouched (a removed host's connections finish and still `end`).
//!
//! Each host has a transport ([`ClusterState::transport`]: its pick of the cluster's
//! `transport_socket_matches`, read with its address where it is picked); it never changes
//! while the slot holds the host — a host whose pick changes comes back as another host.
//!
//! ## Priority levels
//!
//! Each host has a priority ([`Host::priority`]); the cluster keeps the level loads
//! ([`crate::lb::priority::PriorityLoad`]) computed from how many of each level's present hosts
//! are usable, and a pick first draws a level by them, then balances within it. The loads are
//! recomputed when health or hosts change ([`ClusterState::apply_health`], and lazily at the
//! next pick after [`ClusterState::set_available`] or [`ClusterState::update_hosts`]), never
//! per request. A cluster of one level draws nothing: its picks are what they always were.
//!
//! A host is *usable* when health checking and outlier detection say so (`wanted`) and its
//! source does not declare it unusable ([`DeclaredHealth`]: EDS `UNHEALTHY`, `DRAINING`,
//! `TIMEOUT`, Envoy's `FAILED_EDS_HEALTH`). The two are independent: a declared-unhealthy host
//! keeps its health-check verdict (it is still probed), and is usable again as soon as its
//! source says so, if the verdict is yes. Either way it is one of its level's hosts: a level
//! with 1 of 3 hosts declared unhealthy has health min(100, 1.4 × 2/3) = 93 % and spills 7 %.
//!
//! Invariant: a host is available exactly when its slot is present and it is usable or its
//! level is in panic (once the loads are up to date).
//!
//! Each slot has an epoch ([`crate::host`]: bumped whenever the slot's host changes; 0
//! forever in a static cluster). [`ClusterState::host_ref`] names the host a pick got, and
//! [`ClusterState::is_current`] says whether a [`HostRef`] still names the slot's host: the
//! test every user of a host id applies to what outlived the pick (a pooled connection, a
//! request's result) before it counts for the slot.

use crate::config::{ClusterConfig, LbPolicy};
use crate::health::{Availability, CircuitBreakers};
// The host types are their own module, below the balancers and health checking (which work on
// hosts and host ids) and this module (which owns them); re-exported at their old paths.
pub use crate::host::{DeclaredHealth, Host, HostId, HostRef, Slot, SlotHost, Transport};
use crate::lb::Balancer;
use crate::lb::priority::{LevelCount, PriorityLoad};
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
    /// slot's host is unavailable whatever this says; a host of a level in panic is available
    /// whatever this says).
    wanted: Vec<bool>,
    /// The level loads and panics, as of the last recomputation.
    levels: PriorityLoad,
    /// Scratch for the recomputation: per level, its hosts and usable hosts.
    level_counts: Vec<LevelCount>,
    /// `wanted` or the hosts changed since the loads were computed.
    levels_stale: bool,
    /// Moves at every [`ClusterState::update_hosts`] that changed anything (a host replaced,
    /// or only a weight or priority).
    hosts_version: u64,
    /// The cluster's `overprovisioning_factor`.
    overprovisioning_factor: u32,
    /// The panic threshold of the last [`ClusterState::apply_health`]; 0 (no panic here: the
    /// caller's `set_available` decides) until then.
    panic_threshold_percent: u32,
    /// Per host: its slot's epoch (see [`crate::host`]).
    epochs: Vec<u32>,
    balancer: Balancer,
    /// `ring_hash`'s minimum ring size, to rebuild the balancer when the hosts change.
    minimum_ring_size: u32,
    /// This worker's share of the cluster's circuit-breaker limits.
    breakers: CircuitBreakers,
    /// The transport of a host without labels: an id that is no host of the cluster
    /// (`tcp_proxy`'s [`crate::tcp_proxy::DIRECT_HOST`]) is reached with it.
    unlabelled: Transport,
}

impl ClusterState {
    /// A fresh state for a configured cluster: every host available, nothing active.
    #[must_use]
    pub fn from_config(cfg: &ClusterConfig) -> Self {
        // A host without labels (a destination, a DNS answer, a free slot) gets this one.
        let unlabelled = cfg.unlabelled_transport();
        let mut hosts: Vec<Host> = cfg
            .hosts
            .iter()
            .map(|h| Host {
                address: h.address,
                weight: h.weight,
                transport: cfg.host_transport(h),
                priority: h.priority,
                health: h.health,
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
                transport: unlabelled,
                priority: 0,
                health: DeclaredHealth::Healthy,
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
                    transport: unlabelled,
                    priority: 0,
                    health: DeclaredHealth::Healthy,
                    available: false,
                    active: 0,
                    swrr_current: 0,
                })
                .collect();
        }
        let configured = hosts.len();
        // A static cluster whose hosts change in place (EDS) has spare ids after its hosts:
        // free slots, as a DNS cluster's, which an update in place fills.
        if !cfg.kind.is_dns() && cfg.host_slots() > configured {
            hosts.resize_with(cfg.host_slots(), || Host {
                address: ORIGINAL_DESTINATION,
                weight: 1,
                transport: unlabelled,
                priority: 0,
                health: DeclaredHealth::Healthy,
                available: false,
                active: 0,
                swrr_current: 0,
            });
        }
        let present: Vec<bool> = (0..hosts.len())
            .map(|i| !cfg.kind.is_dns() && i < configured)
            .collect();
        let balancer =
            Balancer::for_present_hosts(cfg.lb_policy, &hosts, &present, cfg.minimum_ring_size);
        let mut state = ClusterState {
            name: cfg.name.clone(),
            levels: PriorityLoad::default(),
            level_counts: Vec::new(),
            levels_stale: true,
            hosts_version: 0,
            overprovisioning_factor: cfg.overprovisioning_factor,
            panic_threshold_percent: 0,
            wanted: vec![true; hosts.len()],
            epochs: vec![0; hosts.len()],
            present,
            hosts,
            balancer,
            minimum_ring_size: cfg.minimum_ring_size,
            breakers: CircuitBreakers::new(cfg.circuit_breakers),
            unlabelled,
        };
        state.refresh_levels();
        state
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

    /// The balancer (to inspect it: how many points `ring_hash`'s ring has).
    #[must_use]
    pub fn balancer(&self) -> &Balancer {
        &self.balancer
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
        if self.levels_stale {
            self.refresh_levels();
        }
        let level = if self.levels.load.len() <= 1 {
            // One level (or none): nothing to draw, the picks are a cluster's without levels.
            None
        } else if let Some(sole) = self.levels.sole_level() {
            Some(sole)
        } else {
            // Envoy draws the level of a consistent-hash pick from the hash itself.
            let draw = match hash.filter(|_| self.policy().is_consistent_hash()) {
                Some(h) => (h % 100) as u32,
                None => rng.below(100) as u32,
            };
            self.levels.pick_level(draw)
        };
        self.balancer
            .pick_in_level(&mut self.hosts, rng, exclude, hash, level)
    }

    /// Marks a host (un)available for picking (a free slot stays unavailable until filled):
    /// one host's verdict of health checking and outlier detection. The level loads follow at
    /// the next pick.
    pub fn set_available(&mut self, id: HostId, available: bool) {
        self.wanted[id.index()] = available;
        self.levels_stale = true;
        let host = &mut self.hosts[id.index()];
        let available = available && self.present[id.index()] && host.health.is_usable();
        if host.available != available {
            host.available = available;
            self.balancer.availability_changed();
        }
    }

    /// Applies health checking's and outlier detection's verdicts, one per host (`usable`:
    /// healthy and not ejected), with the cluster's panic threshold: recomputes the level loads
    /// and panics now, and makes available every present host that is usable or whose level
    /// is in panic. Returns whether some level that gets traffic is in panic.
    ///
    /// A host past the end of `usable` keeps its verdict (an `original_dst` cluster's one
    /// host, which no health check judges).
    pub fn apply_health(&mut self, usable: &[bool], panic_threshold_percent: u32) -> bool {
        for (w, &u) in self.wanted.iter_mut().zip(usable) {
            *w = u;
        }
        self.panic_threshold_percent = panic_threshold_percent;
        self.refresh_levels();
        self.levels.any_panic()
    }

    /// The level loads and panics (up to date after [`ClusterState::apply_health`] or a pick).
    #[must_use]
    pub fn priority_load(&self) -> &PriorityLoad {
        &self.levels
    }

    /// Recomputes the level loads from the present hosts' priorities and verdicts, and the
    /// hosts' availability from them (no allocation unless the number of levels grows).
    fn refresh_levels(&mut self) {
        self.levels_stale = false;
        let levels = self
            .hosts
            .iter()
            .zip(&self.present)
            .filter(|(_, p)| **p)
            .map(|(h, _)| h.priority as usize + 1)
            .max()
            .unwrap_or(0);
        self.level_counts.clear();
        self.level_counts.resize(levels, LevelCount::default());
        for ((h, &present), &usable) in self.hosts.iter().zip(&self.present).zip(&self.wanted) {
            if present {
                // A host its source declares unusable (EDS UNHEALTHY, DRAINING, TIMEOUT)
                // counts among its level's hosts but never as usable: the level's health drops
                // and it spills load to the next level, as in Envoy.
                let c = &mut self.level_counts[h.priority as usize];
                c.hosts += 1;
                c.usable += u32::from(usable && h.health.is_usable());
            }
        }
        self.levels.compute(
            &self.level_counts,
            self.overprovisioning_factor,
            self.panic_threshold_percent,
        );
        let mut changed = false;
        for ((h, &present), &usable) in self.hosts.iter_mut().zip(&self.present).zip(&self.wanted) {
            let available =
                present && ((usable && h.health.is_usable()) || self.levels.is_panic(h.priority));
            if h.available != available {
                h.available = available;
                changed = true;
            }
        }
        if changed {
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

    /// Host `id` as it is now: its id and its slot's epoch (what whatever outlives a pick
    /// keeps, to be checked with [`ClusterState::is_current`]). An id that is no host of the
    /// cluster (`tcp_proxy`'s [`crate::tcp_proxy::DIRECT_HOST`]) has epoch 0 forever.
    #[must_use]
    pub fn host_ref(&self, id: HostId) -> HostRef {
        HostRef {
            id,
            epoch: self.epochs.get(id.index()).copied().unwrap_or(0),
        }
    }

    /// Whether `host` still names its slot's host: the slot's epoch has not moved since. A
    /// result, probe verdict or connection for a stale one is the old host's and must not
    /// count for (or serve) the slot's new host. (An id that is no host of the cluster never
    /// changes: current.)
    #[must_use]
    pub fn is_current(&self, host: HostRef) -> bool {
        self.epochs
            .get(host.id.index())
            .is_none_or(|&e| e == host.epoch)
    }

    /// The slots' epochs, one per host id.
    #[must_use]
    pub fn epochs(&self) -> &[u32] {
        &self.epochs
    }

    /// How host `id` is reached, read where it is picked (with its address and
    /// [`ClusterState::host_ref`]): the transport its slot holds — the host's pick of the
    /// cluster's `transport_socket_matches` ([`Transport`]) — or, for an id that is no host
    /// of the cluster, the pick of a host without labels. O(1).
    #[must_use]
    pub fn transport(&self, id: HostId) -> Transport {
        self.hosts
            .get(id.index())
            .map_or(self.unlabelled, |h| h.transport)
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
            .map(|(h, &p)| {
                p.then_some(SlotHost {
                    address: h.address,
                    weight: h.weight,
                    transport: h.transport,
                    priority: h.priority,
                    health: h.health,
                })
            })
            .collect()
    }

    /// Puts `slots` (one per host id; extra ones are ignored, missing ones are free) in
    /// place: a host whose address and transport stay ([`SlotHost::key`]) keeps everything; a filled slot's host is available
    /// as far as health checking said for its id; a freed one is never picked again (its
    /// connections finish). The balancer is rebuilt when anything changed.
    ///
    /// `epochs` are the slots' epochs as whoever made `slots` numbered them
    /// ([`crate::host::advance_epochs`]; every worker applies the same numbers, even when it
    /// skipped an intermediate host set); when it is empty, a slot whose address changed gets
    /// its epoch bumped here. A slot whose epoch moves is changed even if its address is the
    /// one it had (the address left and came back meanwhile). A slot whose transport changes is
    /// changed (a new host: its pooled connections are of the other transport).
    ///
    /// Returns the ids whose host changed (filled, moved or freed): whatever the caller keeps
    /// per id for the old host (idle pooled connections) is stale, as is every [`HostRef`]
    /// taken before.
    pub fn update_hosts(&mut self, slots: &[Slot], epochs: &[u32]) -> Vec<HostId> {
        let mut gone = Vec::new();
        let mut changed = false;
        for i in 0..self.hosts.len() {
            let slot = slots.get(i).copied().flatten();
            let host = &mut self.hosts[i];
            let was = self.present[i].then_some((host.address, host.transport));
            let moved = was != slot.map(SlotHost::key);
            let epoch = match epochs.get(i) {
                Some(&e) => e,
                None if moved => self.epochs[i].wrapping_add(1),
                None => self.epochs[i],
            };
            let renumbered = epoch != self.epochs[i];
            self.epochs[i] = epoch;
            match slot {
                Some(SlotHost {
                    address,
                    weight,
                    transport,
                    priority,
                    health,
                }) => {
                    if moved || renumbered {
                        gone.push(HostId(i as u32));
                        host.address = address;
                        host.transport = transport;
                        host.swrr_current = 0;
                        self.present[i] = true;
                        changed = true;
                    }
                    if host.weight != weight {
                        host.weight = weight;
                        changed = true;
                    }
                    if host.priority != priority {
                        host.priority = priority;
                        changed = true;
                    }
                    // Declared health changes in place: the id, and with it the verdicts of
                    // health checking and outlier detection (`wanted`), stay.
                    if host.health != health {
                        host.health = health;
                        changed = true;
                    }
                }
                None if was.is_some() || renumbered => {
                    self.present[i] = false;
                    gone.push(HostId(i as u32));
                    changed = true;
                }
                None => {}
            }
            let available = self.wanted[i] && self.present[i] && host.health.is_usable();
            if host.available != available {
                host.available = available;
                changed = true;
            }
        }
        if changed {
            self.levels_stale = true;
            self.hosts_version = self.hosts_version.wrapping_add(1);
            self.balancer = Balancer::for_present_hosts(
                self.policy(),
                &self.hosts,
                &self.present,
                self.minimum_ring_size,
            );
        }
        gone
    }

    /// Moves whenever [`ClusterState::update_hosts`] changed anything, also a change that
    /// replaced no host (a weight or priority alone): whoever keeps state derived from the
    /// hosts' levels (the panic gauge) must recompute it then.
    #[must_use]
    pub fn hosts_version(&self) -> u64 {
        self.hosts_version
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

    fn plain(hosts: &[(std::net::SocketAddr, u32)]) -> Vec<SlotHost> {
        hosts.iter().map(|&(a, w)| SlotHost::plain(a, w)).collect()
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

            let first = merge_answer(&c.slots(), &plain(&[(addr(1), 1), (addr(2), 1)]));
            assert_eq!(
                c.update_hosts(&first.slots, &[]),
                vec![HostId(0), HostId(1)]
            );
            assert!(c.update_hosts(&first.slots, &[]).is_empty());
            c.begin(HostId(0));
            c.set_available(HostId(1), false); // ejected: stays so across the update
            for _ in 0..20 {
                assert_eq!(c.pick(&mut rng, &[]), Some(HostId(0)), "{policy:?}");
            }
            // 2 stays (still ejected), 1 goes (its request still in flight), 3 comes.
            let second = merge_answer(&c.slots(), &plain(&[(addr(2), 1), (addr(3), 1)]));
            assert_eq!(
                c.update_hosts(&second.slots, &[]),
                vec![HostId(0), HostId(2)]
            );
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

    #[test]
    fn a_refilled_slot_gets_a_new_epoch_and_old_refs_are_stale() {
        let mut c = ClusterState::from_config(&dns_cluster(LbPolicy::RoundRobin));
        let first = merge_answer(&c.slots(), &plain(&[(addr(1), 1)]));
        c.update_hosts(&first.slots, &[]);
        let old = c.host_ref(HostId(0));
        assert!(c.is_current(old));
        // 1 goes, then 2 comes and takes slot 0 again.
        let gone = merge_answer(&c.slots(), &plain(&[]));
        c.update_hosts(&gone.slots, &[]);
        let refill = merge_answer(&c.slots(), &plain(&[(addr(2), 1)]));
        c.update_hosts(&refill.slots, &[]);
        assert_eq!(c.host(HostId(0)).address, addr(2));
        assert!(!c.is_current(old), "slot 0 names 10.0.0.2 now");
        assert!(c.is_current(c.host_ref(HostId(0))));
        // Epochs numbered elsewhere (a worker that skipped the middle set): same address, new
        // epoch, still a change.
        let skipped = ClusterState::from_config(&dns_cluster(LbPolicy::RoundRobin));
        let mut skipped = skipped;
        skipped.update_hosts(&first.slots, &[1, 0, 0, 0]);
        let before = skipped.host_ref(HostId(0));
        let changed = skipped.update_hosts(&first.slots, &[3, 0, 0, 0]);
        assert_eq!(changed, vec![HostId(0)]);
        assert!(!skipped.is_current(before));
        // A static cluster's epochs stay 0.
        let fixed = ClusterState::from_config(&ClusterConfig {
            hosts: vec![crate::config::HostConfig {
                address: addr(9),
                weight: 1,
                priority: 0,
                transport_socket_match: None,
                health: Default::default(),
            }],
            ..ClusterConfig::default()
        });
        assert_eq!(fixed.host_ref(HostId(0)), HostRef::fixed(HostId(0)));
    }

    #[test]
    fn the_ring_of_a_dns_cluster_is_built_over_its_present_hosts() {
        let mut cfg = dns_cluster(LbPolicy::RingHash);
        cfg.dns.as_mut().unwrap().max_hosts = 64;
        cfg.minimum_ring_size = 1024;
        let mut c = ClusterState::from_config(&cfg);
        let answer = merge_answer(
            &c.slots(),
            &plain(&[(addr(1), 1), (addr(2), 1), (addr(3), 1)]),
        );
        c.update_hosts(&answer.slots, &[]);
        // ⌈1024 / 3⌉ points each, not ⌈1024 / 64⌉.
        assert_eq!(c.balancer().ring_points(), Some(3 * 342));
    }

    use crate::health::{OutlierDetector, OutlierSettings, UpstreamResult};
    use crate::rng::Rng;
    use proptest::prelude::{Just, prop_assert, prop_assert_eq, prop_oneof, proptest};

    proptest! {
        /// After any sequence of answers, a result carrying an old epoch never changes the
        /// slot's new host's outlier state, a pick never returns a free slot, and the ring has
        /// at least `minimum_ring_size` points over the present hosts.
        #[test]
        fn stale_refs_never_count_and_free_slots_are_never_picked(
            answers in proptest::collection::vec(
                proptest::collection::vec(1u8..10, 0..6), 1..12),
            policy in prop_oneof![
                Just(LbPolicy::RoundRobin), Just(LbPolicy::LeastRequest),
                Just(LbPolicy::RingHash), Just(LbPolicy::Maglev)],
        ) {
            let mut cfg = dns_cluster(policy);
            cfg.minimum_ring_size = 64;
            let mut c = ClusterState::from_config(&cfg);
            let settings = OutlierSettings { consecutive_5xx: 1, ..OutlierSettings::default() };
            let mut outlier = OutlierDetector::new(c.hosts().len(), settings);
            let mut rng = Rng::from_seed(3);
            let mut taken: Vec<HostRef> = Vec::new();
            let t0 = crate::test_support::epoch();
            // As the runtime does: the resolver numbers the epochs, every worker applies them.
            let mut epochs = vec![0u32; c.hosts().len()];
            for answer in &answers {
                let answer: Vec<_> = answer.iter().map(|&n| SlotHost::plain(addr(n), 1)).collect();
                let before = c.slots();
                let merged = merge_answer(&before, &answer);
                crate::host::advance_epochs(&before, &merged.slots, &mut epochs);
                for id in c.update_hosts(&merged.slots, &epochs) {
                    outlier.replace_host(c.host_ref(id));
                }
                while outlier.poll_event().is_some() {}
                // Every ref taken before whose slot changed is stale and does nothing.
                for &r in &taken {
                    if !c.is_current(r) {
                        let ejected = outlier.is_ejected(r.id);
                        prop_assert!(!outlier.handle_result_for(t0, r, UpstreamResult::Status(503)));
                        prop_assert_eq!(outlier.is_ejected(r.id), ejected);
                    }
                }
                for _ in 0..8 {
                    if let Some(id) = c.pick(&mut rng, &[]) {
                        prop_assert!(c.is_present(id), "picked free slot {:?}", id);
                        taken.push(c.host_ref(id));
                    }
                }
                if policy == LbPolicy::RingHash {
                    let present = (0..c.hosts().len())
                        .filter(|&i| c.is_present(HostId(i as u32)))
                        .count();
                    if present > 0 {
                        prop_assert!(c.balancer().ring_points().unwrap() >= 64);
                    }
                }
            }
        }
    }

    /// Issue 13: the static clusters of a config with `xds` (their hosts change in place on
    /// EDS updates) keep spare ids, free until an update fills them; those of a file config
    /// do not, nor does a DNS cluster of an xDS config (its `max_hosts` are its ids).
    #[test]
    fn static_clusters_of_an_xds_config_have_spare_ids_that_growth_fills_in_place() {
        use crate::config::{Config, spare_host_slots};
        let file = "listeners: [ { name: t, address: 127.0.0.1:1, tcp_proxy: { cluster: web } } ]\nclusters:\n  - { name: web, hosts: [ { address: 10.0.0.1:80 }, \
                    { address: 10.0.0.2:80 } ] }\n  - { name: d, type: strict_dns, max_hosts: 4, \
                    hosts: [ { address: d.example:80 } ] }\n";
        let plain = Config::from_yaml(file).unwrap();
        assert!(!plain.clusters[0].hosts_change_in_place);
        assert_eq!(plain.clusters[0].host_slots(), 2);
        let xds = Config::from_yaml(&format!(
            "{file}  - {{ name: xds, hosts: [ {{ address: 127.0.0.1:9 }} ] }}\nxds: {{ cluster: xds }}\n"
        ))
        .unwrap();
        let web = &xds.clusters[0];
        assert!(web.hosts_change_in_place);
        assert_eq!(web.host_slots(), 18, "2 hosts + 16 spare");
        assert!(!xds.clusters[1].hosts_change_in_place);
        assert_eq!(xds.clusters[1].host_slots(), 4);
        // The rule: at least 16 spare, twice the hosts, at most 1024 spare.
        assert_eq!(
            [0, 1, 16, 100, 1024, 5000].map(spare_host_slots),
            [16, 17, 32, 200, 2048, 6024]
        );

        let mut state = ClusterState::from_config(web);
        assert_eq!(state.hosts().len(), 18);
        let present: Vec<bool> = (0..18).map(|i| state.is_present(HostId(i))).collect();
        assert_eq!(present, [[true; 2].as_slice(), &[false; 16]].concat());
        let mut rng = Rng::from_seed(7);
        for _ in 0..100 {
            let id = state.pick(&mut rng, &[]).expect("a host");
            assert!(id.0 < 2, "a spare id was picked: {id:?}");
        }
        // Growth to 6 hosts fills spare ids 2..6; the first two keep theirs.
        let grown: Vec<SlotHost> = (1..=6).map(|n| SlotHost::plain(addr(n), 1)).collect();
        let merged = merge_answer(&state.slots(), &grown);
        assert_eq!((merged.added, merged.dropped), (4, 0));
        let changed = state.update_hosts(&merged.slots, &[]);
        assert_eq!(changed, (2..6).map(HostId).collect::<Vec<_>>());
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..600 {
            seen.insert(state.pick(&mut rng, &[]).expect("a host").0);
        }
        assert_eq!(seen, (0..6).collect(), "every host of six, no spare id");
    }

    /// Issue 13: a host's transport (its labels' pick of `transport_socket_matches`) is read
    /// from its slot; a host whose pick changes leaves its id for another (a new epoch: its
    /// idle pooled connections are stale), while one whose pick stays keeps its id and the
    /// availability health checking gave it.
    #[test]
    fn a_host_whose_transport_changes_takes_another_id_and_the_others_keep_theirs() {
        use crate::config::Config;
        let config = Config::from_yaml(
            "listeners: [ { name: t, address: 127.0.0.1:1, tcp_proxy: { cluster: web } } ]\n\
             clusters:\n\
             \x20 - name: web\n\
             \x20   hosts: [ { address: 10.0.0.1:80, transport_socket_match: { tlsMode: istio } },\n\
             \x20            { address: 10.0.0.2:80, transport_socket_match: { tlsMode: istio } } ]\n\
             \x20   transport_socket_matches: [ { name: mtls, match: { tlsMode: istio } },\n\
             \x20                               { name: plain } ]\n\
             \x20 - { name: xds, hosts: [ { address: 127.0.0.1:9 } ] }\n\
             xds: { cluster: xds }\n",
        )
        .unwrap();
        let web = &config.clusters[0];
        let mut c = ClusterState::from_config(web);
        assert_eq!(c.transport(HostId(0)), Some(0));
        assert_eq!(c.transport(HostId(1)), Some(0));
        // A spare id, and an id that is no host: the pick of a host without labels.
        assert_eq!(c.transport(HostId(5)), Some(1));
        assert_eq!(c.transport(HostId(u32::MAX)), Some(1)); // tcp_proxy's DIRECT_HOST
        c.set_available(HostId(0), false); // health checking says 10.0.0.1 is down
        let before = c.epochs().to_vec();
        // 10.0.0.1 re-weighted, 10.0.0.2 loses its label (plaintext now).
        let mut hosts = web.hosts.clone();
        hosts[0].weight = 3;
        hosts[1].transport_socket_match = None;
        let answer: Vec<SlotHost> = hosts
            .iter()
            .map(|h| SlotHost {
                address: h.address,
                weight: h.weight,
                transport: web.host_transport(h),
                priority: h.priority,
                health: h.health,
            })
            .collect();
        let merged = merge_answer(&c.slots(), &answer);
        let mut epochs = before.clone();
        crate::host::advance_epochs(&c.slots(), &merged.slots, &mut epochs);
        let changed = c.update_hosts(&merged.slots, &epochs);
        // Id 1 freed, 10.0.0.2 (plaintext) in the first spare id.
        assert_eq!(changed, [HostId(1), HostId(2)]);
        assert!(!c.is_present(HostId(1)));
        assert_eq!(c.host(HostId(2)).address, addr(2));
        assert_eq!(c.transport(HostId(2)), Some(1));
        assert_ne!(epochs[2], before[2]);
        // 10.0.0.1: same id, same epoch, new weight, still down.
        assert_eq!(c.host(HostId(0)).weight, 3);
        assert_eq!(c.transport(HostId(0)), Some(0));
        assert_eq!(epochs[0], before[0]);
        assert!(!c.host(HostId(0)).available);
    }
}

#[cfg(test)]
mod priority_tests;
