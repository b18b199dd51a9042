//! DNS clusters (`type: strict_dns | logical_dns`): resolving their names and moving the
//! answers into every worker's host set, off the data path.
//!
//! Who does what:
//!
//! - **One resolver per process** (a task on worker 0, like the active health checks), not one
//!   per worker: N workers resolving the same names would multiply the DNS traffic by N and,
//!   worse, could see different answers and number hosts differently, while health verdicts
//!   (shared by the workers) and per-host counters are kept per host id. One resolver makes one
//!   host set, which every worker applies. Each name has a task of its own, which calls
//!   [`Network::resolve`] (the real network: `getaddrinfo` on tokio's blocking pool, so no
//!   worker's event loop ever waits for DNS; the simulator: scripted answers) within
//!   [`RESOLVE_TIMEOUT`].
//! - **[`SharedDns`]** holds, per DNS cluster, the latest [`DnsView`]: each name's last
//!   answer and the host set made of them, as slots ([`sluice_core::host::merge_answer`]: a
//!   host that stays keeps its id). It is published on a `watch` channel; it lives in the
//!   generation's [`crate::health::SharedHealth`] (the one handle every worker of a generation
//!   shares and a reload carries over).
//! - **Every worker** watches the channel and puts the slots into its own `ClusterState`
//!   (`update_hosts`): no new config generation, no connection cut. A removed host's
//!   connections finish; its idle pooled ones are closed (`strict_dns`; a `logical_dns`
//!   cluster's one host keeps its connections when its address changes, as in Envoy).
//!
//! States of a name: *unresolved* (no answer yet: the cluster has no host from it; a request
//! with no host gets 503 `UH`, as a cluster whose hosts are all down — no warming), *answered*
//! (refreshed every `dns_refresh_rate`, or after the TTL with `respect_dns_ttl` when the
//! resolver reports one, within `MIN_DNS_TTL..=MAX_DNS_TTL`; an answer with no address —
//! NXDOMAIN, no data, none of the `dns_lookup_family` — is an answer: a `strict_dns` name's
//! hosts are removed, a `logical_dns` host keeps its address, as in Envoy), *failing* (any
//! other error, or a timeout: the last answer is kept, the failure counted and
//! logged at most once a minute per name, and the next try comes after a jittered backoff:
//! 1 s doubling per failure, at most `dns_refresh_rate`, each wait drawn from its upper half).
//!
//! **Endpoints updated in place** (issue 13): a `static` cluster whose hosts alone change in an
//! xDS update (EDS; [`sluice_core::config::diff::only_endpoints_differ`]) gets the same
//! treatment: [`SharedDns::merge_endpoints`] merges the new host list into the cluster's slots
//! (first the generation's configured hosts, id = index, then the cluster's spare ids, free:
//! [`sluice_core::config::spare_host_slots`]; a host that stays — same address and same pick of
//! `transport_socket_matches` — keeps its id, a new one (or one whose pick changed) takes a
//! free slot, no slot left: the update needs a generation switch, logged), the server
//! publishes the view ([`SharedDns::publish_endpoints`], which the active health checks follow)
//! and every worker applies it ([`Engine::apply_endpoints`]) before the update is acknowledged. The
//! view exists from the first such update of the generation on (none before: the configured
//! hosts are the slots).
//!
//! Reload: a cluster with the same name, type and DNS settings keeps its answers (its hosts,
//! ids and counters) across a reload and goes on refreshing; a changed one starts over. One
//! whose `tls` or `transport_socket_matches` changed keeps its addresses, but each slot takes
//! the new config's transport and a new epoch ([`SharedDns::inherit`]): a slot never carries
//! a transport index of another config.

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use sluice_core::config::upstream::{MAX_DNS_TTL, MIN_DNS_TTL};
use sluice_core::config::{ClusterKind, Config, DnsSettings};
use sluice_core::host::{HostId, HostRef, Slot, SlotHost, Transport, advance_epochs, merge_answer};
use sluice_core::rng::Rng;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::engine::Engine;
use crate::net::{Network, Resolved};
use crate::stats::bump;

/// A resolution that has not answered after this long failed.
pub const RESOLVE_TIMEOUT: Duration = Duration::from_secs(10);
/// The first wait after a failure (doubling per failure in a row, at most the refresh rate).
pub const FAILURE_BACKOFF_BASE: Duration = Duration::from_secs(1);
/// A failing name is logged at most this often (with the failures not logged).
pub const FAILURE_LOG_INTERVAL: Duration = Duration::from_secs(60);

/// One DNS cluster's names and host set as the resolver last made them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DnsView {
    /// The host set: one slot per host id (`host_slots` of the cluster).
    pub slots: Vec<Slot>,
    /// Per slot: its epoch, bumped here whenever the slot's address changes
    /// ([`sluice_core::host::advance_epochs`]). Every worker takes these numbers, so a
    /// [`sluice_core::host::HostRef`] means the same host on every worker and in the shared
    /// health verdicts.
    pub epochs: Vec<u32>,
    /// Per name (config order): its last answer, as the cluster uses it (filtered by the
    /// lookup family; a `logical_dns` name's first address only). Empty until it answers.
    pub answers: Vec<Vec<SocketAddr>>,
    /// Per name: resolutions failed in a row since its last answer.
    pub failing: Vec<u32>,
}

/// One DNS cluster's shared state.
#[derive(Debug)]
struct DnsCluster {
    kind: ClusterKind,
    settings: DnsSettings,
    /// The transport of its hosts (resolved hosts have no labels: the cluster's pick of a host
    /// without labels).
    transport: Transport,
    view: watch::Sender<Arc<DnsView>>,
}

/// The DNS state of one config generation, shared by its workers: per cluster, `Some` for a
/// DNS cluster.
#[derive(Debug, Default)]
pub struct SharedDns {
    clusters: Vec<Option<DnsCluster>>,
    /// Per cluster: a `static` cluster's slots once an endpoints-only update changed them in
    /// place (see the module doc), or once the health checks follow them; empty until then.
    endpoints: Box<[std::sync::OnceLock<watch::Sender<Arc<DnsView>>>]>,
}

impl SharedDns {
    /// Shaped like `config`: every DNS cluster with no answer yet (no host).
    #[must_use]
    pub fn new(config: &Config) -> Self {
        SharedDns {
            clusters: config
                .clusters
                .iter()
                .map(|c| {
                    let settings = c.dns.clone()?;
                    let view = DnsView {
                        slots: vec![None; c.host_slots()],
                        epochs: vec![0; c.host_slots()],
                        answers: vec![Vec::new(); settings.names.len()],
                        failing: vec![0; settings.names.len()],
                    };
                    Some(DnsCluster {
                        kind: c.kind,
                        settings,
                        transport: c.unlabelled_transport(),
                        view: watch::Sender::new(Arc::new(view)),
                    })
                })
                .collect(),
            endpoints: config
                .clusters
                .iter()
                .map(|_| std::sync::OnceLock::new())
                .collect(),
        }
    }

    /// The channel of static cluster `ci`'s slots, made from `cluster` (the generation's
    /// config of it: id = index) the first time.
    fn endpoints_channel(
        &self,
        ci: usize,
        cluster: &sluice_core::config::ClusterConfig,
    ) -> Option<&watch::Sender<Arc<DnsView>>> {
        if cluster.kind != ClusterKind::Static {
            return None;
        }
        Some(self.endpoints.get(ci)?.get_or_init(|| {
            // The configured hosts (id = index), then the spare ids, free.
            let mut slots: Vec<Slot> = endpoint_hosts(cluster, &cluster.hosts)
                .into_iter()
                .map(Some)
                .collect();
            slots.resize(cluster.host_slots().max(slots.len()), None);
            watch::Sender::new(Arc::new(DnsView {
                epochs: vec![0; slots.len()],
                slots,
                answers: Vec::new(),
                failing: Vec::new(),
            }))
        }))
    }

    /// Cluster `ci`'s slots from now on: a DNS cluster's, or a static cluster's (whose slots
    /// endpoints-only updates change; `cluster` is the generation's config of it).
    #[must_use]
    pub fn subscribe_hosts(
        &self,
        ci: usize,
        cluster: &sluice_core::config::ClusterConfig,
    ) -> Option<watch::Receiver<Arc<DnsView>>> {
        self.subscribe(ci)
            .or_else(|| Some(self.endpoints_channel(ci, cluster)?.subscribe()))
    }

    /// Static cluster `ci`'s slots with `hosts` (its new host list) merged in: a host that
    /// stays (same address and transport: a host's pick of `transport_socket_matches` is part
    /// of which host it is) keeps its id (and epoch), a removed one frees its slot, a new one —
    /// or one whose labels now pick another transport — takes a free slot (epoch bumped). `cluster` is the generation's config of it (the slots, before any
    /// update: its hosts, then its spare ids). `None` (logged) when a new host found no free
    /// slot: the update needs a generation switch. Publishes nothing
    /// ([`SharedDns::publish_endpoints`]).
    #[must_use]
    pub fn merge_endpoints(
        &self,
        ci: usize,
        cluster: &sluice_core::config::ClusterConfig,
        hosts: &[sluice_core::config::HostConfig],
    ) -> Option<(Arc<DnsView>, sluice_core::host::Merged)> {
        let current = self.endpoints_channel(ci, cluster)?.borrow().clone();
        let merged = merge_answer(&current.slots, &endpoint_hosts(cluster, hosts));
        if merged.dropped > 0 {
            info!(cluster = %cluster.name, hosts = hosts.len(), ids = current.slots.len(),
                "endpoints: more hosts than the cluster's ids (its hosts at the last generation \
                 switch, and spare ones): switching generations, which sizes its ids afresh");
            return None;
        }
        let mut epochs = current.epochs.clone();
        advance_epochs(&current.slots, &merged.slots, &mut epochs);
        let view = DnsView {
            slots: merged.slots.clone(),
            epochs,
            answers: Vec::new(),
            failing: Vec::new(),
        };
        Some((Arc::new(view), merged))
    }

    /// Publishes static cluster `ci`'s new slots (from [`SharedDns::merge_endpoints`]): the
    /// active health checks follow them; each worker applies them itself.
    pub fn publish_endpoints(
        &self,
        ci: usize,
        cluster: &sluice_core::config::ClusterConfig,
        view: Arc<DnsView>,
    ) {
        if let Some(c) = self.endpoints_channel(ci, cluster) {
            c.send_replace(view);
        }
    }

    /// Static cluster `ci`'s slots, if an endpoints-only update (or the health checks) made
    /// them a view.
    #[must_use]
    pub fn endpoints_view(&self, ci: usize) -> Option<Arc<DnsView>> {
        Some(self.endpoints.get(ci)?.get()?.borrow().clone())
    }

    /// Takes over the answers of `old`'s clusters that `self` has unchanged (same name, type
    /// and DNS settings): their hosts keep their ids across a reload.
    ///
    /// A slot's transport is an index into its config's `transport_socket_matches`: when the
    /// cluster's `tls` or `transport_socket_matches` changed, the old indices mean nothing in
    /// `config` (an out-of-range one would be refused at connect, a stale in-range one would
    /// pick the wrong entry). Then the addresses are kept, every host takes `config`'s
    /// transport (resolved hosts have no labels: [`ClusterConfig::unlabelled_transport`]) and
    /// every filled slot's epoch advances: each is another host (no verdict, no result of the
    /// old one counts for it).
    ///
    /// [`ClusterConfig::unlabelled_transport`]: sluice_core::config::ClusterConfig::unlabelled_transport
    pub fn inherit(&self, old: &SharedDns, old_config: &Config, config: &Config) {
        for (ci, c) in config.clusters.iter().enumerate() {
            let Some(Some(mine)) = self.clusters.get(ci) else {
                continue;
            };
            let Some(oi) = old_config.clusters.iter().position(|o| o.name == c.name) else {
                continue;
            };
            let Some(Some(theirs)) = old.clusters.get(oi) else {
                continue;
            };
            if theirs.kind != mine.kind || theirs.settings != mine.settings {
                continue;
            }
            let view = theirs.view.borrow().clone();
            let o = &old_config.clusters[oi];
            if o.tls == c.tls && o.transport_socket_matches == c.transport_socket_matches {
                mine.view.send_replace(view);
                continue;
            }
            let mut next = (*view).clone();
            for (slot, epoch) in next.slots.iter_mut().zip(&mut next.epochs) {
                if let Some(host) = slot {
                    host.transport = mine.transport;
                    *epoch = epoch.wrapping_add(1);
                }
            }
            mine.view.send_replace(Arc::new(next));
        }
    }

    /// Cluster `ci`'s current view, if it is a DNS cluster.
    #[must_use]
    pub fn view(&self, ci: usize) -> Option<Arc<DnsView>> {
        Some(self.clusters.get(ci)?.as_ref()?.view.borrow().clone())
    }

    /// Cluster `ci`'s view from now on, if it is a DNS cluster.
    #[must_use]
    pub fn subscribe(&self, ci: usize) -> Option<watch::Receiver<Arc<DnsView>>> {
        Some(self.clusters.get(ci)?.as_ref()?.view.subscribe())
    }

    /// Name `ni` of cluster `ci` answered `addresses` (already filtered): the host set is
    /// merged and published. Returns what the merge did.
    pub(crate) fn answered(
        &self,
        ci: usize,
        ni: usize,
        addresses: Vec<SocketAddr>,
    ) -> sluice_core::host::Merged {
        let c = self.clusters[ci].as_ref().expect("a DNS cluster");
        let mut merged = None;
        c.view.send_if_modified(|view| {
            let mut next = (**view).clone();
            next.answers[ni] = addresses;
            next.failing[ni] = 0;
            let transport = c.transport;
            let union: Vec<SlotHost> = next
                .answers
                .iter()
                .zip(&c.settings.names)
                .flat_map(|(a, n)| {
                    a.iter().map(move |&address| SlotHost {
                        address,
                        weight: n.weight,
                        transport,
                        priority: 0,
                        health: sluice_core::host::DeclaredHealth::Healthy,
                    })
                })
                .collect();
            let m = merge_answer(&next.slots, &union);
            advance_epochs(&view.slots, &m.slots, &mut next.epochs);
            next.slots.clone_from(&m.slots);
            merged = Some(m);
            let changed = next != **view;
            *view = Arc::new(next);
            changed
        });
        merged.expect("set above")
    }

    /// Name `ni` of cluster `ci` failed: the answer is kept. Returns the failures in a row.
    fn failed(&self, ci: usize, ni: usize) -> u32 {
        let c = self.clusters[ci].as_ref().expect("a DNS cluster");
        let mut failing = 0;
        c.view.send_modify(|view| {
            let mut next = (**view).clone();
            next.failing[ni] = next.failing[ni].saturating_add(1);
            failing = next.failing[ni];
            *view = Arc::new(next);
        });
        failing
    }
}

/// `hosts` of `cluster` as slot hosts: each with its transport (its labels' pick of the
/// cluster's `transport_socket_matches`).
fn endpoint_hosts(
    cluster: &sluice_core::config::ClusterConfig,
    hosts: &[sluice_core::config::HostConfig],
) -> Vec<SlotHost> {
    hosts
        .iter()
        .map(|h| SlotHost {
            address: h.address,
            weight: h.weight,
            transport: cluster.host_transport(h),
            priority: h.priority,
            health: h.health,
        })
        .collect()
}

/// An endpoints-only update merged into a generation's slots ([`merge_endpoints_update`]),
/// ready for every worker to apply ([`Engine::apply_endpoints`]).
#[derive(Clone, Debug)]
pub struct EndpointsUpdate {
    /// Which generation the slots were merged for (the address of its `SharedHealth`): a worker
    /// that serves another one (a switch that timed out on the main thread and finished later
    /// on the worker) refuses the update instead of putting one generation's slots into
    /// another's clusters.
    pub generation: usize,
    /// Per changed cluster (index): its slots now.
    pub clusters: Vec<(usize, Arc<DnsView>)>,
    /// Hosts that took an id.
    pub added: usize,
    /// Hosts whose id was freed.
    pub removed: usize,
}

impl EndpointsUpdate {
    /// A line for the log: which clusters, how many hosts added and removed.
    #[must_use]
    pub fn summary(&self, next: &Config) -> String {
        let names: Vec<&str> = self
            .clusters
            .iter()
            .map(|(ci, _)| next.clusters[*ci].name.as_str())
            .collect();
        format!(
            "endpoints updated in place (no generation switch) in cluster{} [{}]: {} host{} \
             added, {} removed",
            if names.len() == 1 { "" } else { "s" },
            names.join(", "),
            self.added,
            if self.added == 1 { "" } else { "s" },
            self.removed,
        )
    }
}

/// Merges the hosts of clusters `changed` of `next` (an endpoints-only update of `current`,
/// the serving config: [`sluice_core::config::diff::only_endpoints_differ`]) into the slots of
/// the generation `shared` belongs to, and publishes them (the active health checks follow);
/// each worker then applies them ([`Engine::apply_endpoints`]). All or nothing: `None`, with
/// nothing published, when a new host of some cluster finds no free slot (the update needs a
/// generation switch).
#[must_use]
pub fn merge_endpoints_update(
    shared: &crate::health::SharedHealth,
    current: &Config,
    next: &Config,
    changed: &[usize],
) -> Option<EndpointsUpdate> {
    // The slots start as the generation's hosts (id = index): until a cluster's first update
    // in place, the serving config's hosts are those (a switch makes new slots); after it, the
    // merge starts from the published slots.
    let mut update = EndpointsUpdate {
        generation: std::ptr::from_ref(shared) as usize,
        clusters: Vec::with_capacity(changed.len()),
        added: 0,
        removed: 0,
    };
    for &ci in changed {
        let (view, merged) = shared.dns.merge_endpoints(
            ci,
            current.clusters.get(ci)?,
            &next.clusters.get(ci)?.hosts,
        )?;
        update.added += merged.added;
        update.removed += merged.removed;
        update.clusters.push((ci, view));
    }
    for (ci, view) in &update.clusters {
        shared
            .dns
            .publish_endpoints(*ci, &current.clusters[*ci], view.clone());
    }
    Some(update)
}

/// What one resolution of a name means for its hosts.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    /// The name's hosts are these now (the addresses of the lookup family, a `logical_dns`
    /// name's first only) — none at all for a `strict_dns` name that no longer exists or has
    /// no address of the family: its hosts are removed, as in Envoy.
    Answer(Vec<SocketAddr>, Option<Duration>),
    /// A `logical_dns` name answered no address: its one host keeps its last address (Envoy
    /// never drains a logical DNS cluster's host, an empty answer included).
    KeptOnEmpty(Option<Duration>),
    /// The resolution failed (an error other than "no such name", or no answer in time): the
    /// last answer is kept and the failure counted.
    Failure(String),
}

/// Classifies a resolution (`Err`: why it failed). A resolver's "no such name" (NXDOMAIN) or
/// "no address" is a successful, empty answer ([`crate::net::getaddrinfo`] returns it so).
fn outcome(kind: ClusterKind, dns: &DnsSettings, resolved: Result<Resolved, String>) -> Outcome {
    match resolved {
        Ok(r) => {
            let mut addresses = dns.lookup_family.filter(r.addresses.iter().copied());
            if kind == ClusterKind::LogicalDns {
                addresses.truncate(1);
                if addresses.is_empty() {
                    return Outcome::KeptOnEmpty(r.ttl);
                }
            }
            Outcome::Answer(addresses, r.ttl)
        }
        Err(why) => Outcome::Failure(why),
    }
}

/// How many of the addresses `max_hosts` left out (`dropped`) to count for a name whose
/// previous answer was `last`: none when the answer is the same again (its addresses were
/// counted when it came), all of them for a new answer. Keeps the answer in `last`.
fn newly_dropped(
    last: &mut Option<Vec<SocketAddr>>,
    answer: Vec<SocketAddr>,
    dropped: usize,
) -> u64 {
    let new_answer = last.as_ref() != Some(&answer);
    *last = Some(answer);
    if new_answer { dropped as u64 } else { 0 }
}

/// The wait before retrying a name that failed `failures` times in a row: 1 s doubling, at
/// most `refresh_rate`, drawn from the upper half of that (so that names failing together do
/// not retry in step).
#[must_use]
pub fn failure_backoff(refresh_rate: Duration, failures: u32, rng: &mut Rng) -> Duration {
    let doubled = FAILURE_BACKOFF_BASE.saturating_mul(1 << failures.saturating_sub(1).min(16));
    let cap = doubled.min(refresh_rate);
    let half = cap / 2;
    let nanos = u64::try_from(half.as_nanos()).unwrap_or(u64::MAX);
    half + Duration::from_nanos(rng.below(nanos.saturating_add(1)))
}

/// When a name that answered is resolved again.
#[must_use]
pub fn refresh_after(settings: &DnsSettings, ttl: Option<Duration>) -> Duration {
    match ttl {
        Some(ttl) if settings.respect_dns_ttl => ttl.clamp(MIN_DNS_TTL, MAX_DNS_TTL),
        _ => settings.refresh_rate,
    }
}

impl<N: Network> Engine<N> {
    /// Starts resolving every name of every DNS cluster, a task per name, until the tasks are
    /// aborted (with the active health checks, when the engine stops or a reload's next
    /// generation takes over). Called on worker 0 only (see the module doc).
    pub(crate) fn start_dns(self: &Rc<Self>, seed: u64) -> Vec<tokio::task::JoinHandle<()>> {
        let mut tasks = Vec::new();
        for (ci, c) in self.config.clusters.iter().enumerate() {
            let Some(dns) = &c.dns else { continue };
            for ni in 0..dns.names.len() {
                let engine = self.clone();
                let rng = Rng::from_seed(
                    seed ^ 0xd1b5_4a32_d192_ed03_u64.wrapping_mul((ci * 4096 + ni + 1) as u64),
                );
                tasks.push(tokio::task::spawn_local(engine.resolve_name(ci, ni, rng)));
            }
        }
        tasks
    }

    async fn resolve_name(self: Rc<Self>, ci: usize, ni: usize, mut rng: Rng) {
        let cluster = &self.config.clusters[ci];
        let dns = cluster.dns.as_ref().expect("a DNS cluster");
        let name = &dns.names[ni];
        let shared = &self.upstreams.shared_health().dns;
        // Failures not logged yet, and when the last was.
        let mut unlogged = 0u64;
        let mut logged_at: Option<tokio::time::Instant> = None;
        // The name's last answer (to count the addresses `max_hosts` leaves out once).
        let mut last_answer: Option<Vec<SocketAddr>> = None;
        loop {
            let resolved = tokio::time::timeout(
                RESOLVE_TIMEOUT,
                self.net()
                    .resolve(&name.name, name.port, dns.respect_dns_ttl),
            )
            .await
            .map_err(|_| format!("no answer within {RESOLVE_TIMEOUT:?}"))
            .and_then(|r| r.map_err(|e| e.to_string()));
            let wait = match outcome(cluster.kind, dns, resolved) {
                Outcome::KeptOnEmpty(ttl) => {
                    // logical_dns: an answer with no address leaves the one host as it is.
                    if let Some(c) = self.stats().cluster(ci) {
                        bump(&c.upstream_dns_resolutions, 1);
                    }
                    refresh_after(dns, ttl)
                }
                Outcome::Answer(addresses, ttl) => {
                    let shown = addresses.clone();
                    let new_answer = last_answer.as_ref() != Some(&addresses);
                    let merged = shared.answered(ci, ni, addresses.clone());
                    let dropped = newly_dropped(&mut last_answer, addresses, merged.dropped);
                    if let Some(c) = self.stats().cluster(ci) {
                        bump(&c.upstream_dns_resolutions, 1);
                        if merged.changed() {
                            bump(&c.upstream_dns_host_changes, 1);
                        }
                        bump(&c.upstream_dns_hosts_dropped, dropped);
                    }
                    if merged.changed() {
                        info!(cluster = %cluster.name, name = %name.name, addresses = ?shown,
                            added = merged.added, removed = merged.removed,
                            "dns: hosts changed");
                    }
                    if merged.dropped > 0 && new_answer {
                        warn!(cluster = %cluster.name, name = %name.name, dropped = merged.dropped,
                            max_hosts = dns.max_hosts, "dns: more addresses than max_hosts; some left out");
                    }
                    refresh_after(dns, ttl)
                }
                Outcome::Failure(why) => {
                    let failures = shared.failed(ci, ni);
                    if let Some(c) = self.stats().cluster(ci) {
                        bump(&c.upstream_dns_failures, 1);
                    }
                    unlogged += 1;
                    let now = tokio::time::Instant::now();
                    if logged_at.is_none_or(|t| now.duration_since(t) >= FAILURE_LOG_INTERVAL) {
                        warn!(cluster = %cluster.name, name = %name.name, error = %why,
                            failures = unlogged, "dns: resolution failed; keeping the last answer");
                        logged_at = Some(now);
                        unlogged = 0;
                    }
                    failure_backoff(dns.refresh_rate, failures, &mut rng)
                }
            };
            tokio::time::sleep(wait).await;
        }
    }

    /// Puts cluster `ci`'s DNS host set into this worker's state, and keeps it so until the
    /// engine stops (spawned on every worker for every DNS cluster).
    pub(crate) async fn follow_dns(self: Rc<Self>, ci: usize) {
        let Some(mut rx) = self.upstreams.shared_health().dns.subscribe(ci) else {
            return;
        };
        loop {
            let view = rx.borrow_and_update().clone();
            if self.apply_dns(ci, &view) {
                self.bolt_hosts_changed(ci);
            }
            if rx.changed().await.is_err() {
                return;
            }
        }
    }

    /// Applies a view of cluster `ci` (a DNS cluster's, or a static cluster's after an
    /// endpoints-only update) to this worker: hosts in place, stale pooled connections closed,
    /// availability recomputed (also after a change of weights or priorities alone, which
    /// replaces no host but may move the level loads and panic).
    /// Returns whether any host changed.
    pub(crate) fn apply_dns(&self, ci: usize, view: &Arc<DnsView>) -> bool {
        if let Some(c) = self.stats().cluster(ci) {
            *c.dns
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(view.clone());
        }
        let (changed, refs, updated): (Vec<HostId>, Vec<HostRef>, bool) = {
            let mut cluster = self.upstreams.cluster(ci).borrow_mut();
            let version = cluster.hosts_version();
            let changed = cluster.update_hosts(&view.slots, &view.epochs);
            let refs = changed.iter().map(|&id| cluster.host_ref(id)).collect();
            (changed, refs, cluster.hosts_version() != version)
        };
        if !updated {
            return false;
        }
        // A strict_dns or static (endpoints updated in place) cluster's id names another
        // address now; a logical_dns host keeps its connections (see the module doc).
        let strict = self.config.clusters[ci].kind != ClusterKind::LogicalDns;
        let now = crate::now();
        for id in &changed {
            if strict {
                // Idle connections to an address the id no longer names: closed.
                while self.upstreams.pool().take(ci, id.index(), now).is_some() {}
                self.upstreams.h2_pool().forget_host(ci, id.index());
                // A host new to the id starts at zero (the counters were the id's old
                // host's; `/clusters` and the per-host metrics name them by address).
                if view.slots.get(id.index()).copied().flatten().is_some()
                    && let Some(h) = self.stats().host_if_used(ci, id.index())
                {
                    h.reset_counters();
                }
            }
            self.publish_host_active(ci, *id);
        }
        self.health_changed(ci, &refs);
        true
    }

    /// Applies an endpoints-only update (see the module doc) to this worker's clusters.
    pub fn apply_endpoints(self: &Rc<Self>, update: &EndpointsUpdate) {
        for (ci, view) in &update.clusters {
            if self.apply_dns(*ci, view) {
                self.bolt_hosts_changed(*ci);
            }
        }
    }

    /// The ids of cluster `ci` whose host changed (with their new epochs): their outlier
    /// state starts over and the availability is recomputed before the next pick.
    fn health_changed(&self, ci: usize, changed: &[HostRef]) {
        let live = {
            let cluster = self.upstreams.cluster(ci).borrow();
            (0..cluster.hosts().len())
                .filter(|&i| cluster.is_present(HostId(i as u32)))
                .count()
        };
        self.upstreams
            .worker_health(ci)
            .borrow_mut()
            .hosts_replaced(changed, live);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TWO: &str = r#"
listeners:
  - { name: t, address: 127.0.0.1:1, tcp_proxy: { cluster: a } }
clusters:
  - name: a
    type: strict_dns
    max_hosts: 4
    hosts: [ { address: "a.example:80" }, { address: "b.example:81", weight: 3 } ]
  - name: b
    type: logical_dns
    hosts: [ { address: "c.example:80" } ]
"#;

    /// Worker stats and shared health for `config`.
    fn stats_and_health(
        config: &Config,
    ) -> (
        Arc<crate::stats::WorkerStats>,
        Arc<crate::health::SharedHealth>,
    ) {
        (
            Arc::new(crate::stats::WorkerStats::new(config)),
            Arc::new(crate::health::SharedHealth::new(config)),
        )
    }

    /// The engine of worker 0 of 1 for `config`, counting in `stats` and reading the health
    /// and DNS answers in `shared`.
    fn worker_engine(
        config: &Arc<Config>,
        stats: &Arc<crate::stats::WorkerStats>,
        shared: &Arc<crate::health::SharedHealth>,
    ) -> Rc<Engine<crate::net::TokioNet>> {
        Engine::new_worker(
            crate::net::TokioNet::default(),
            config.clone(),
            0,
            1,
            1,
            stats.clone(),
            shared.clone(),
            Arc::new(crate::limits::ProcessLimits::new(config)),
        )
        .unwrap()
    }

    /// A host picked in cluster 1 (`web` in these tests' configs), its availability brought up
    /// to date first: its address.
    fn pick_in_web(
        engine: &Engine<crate::net::TokioNet>,
        rng: &mut sluice_core::rng::Rng,
    ) -> Option<SocketAddr> {
        engine.upstreams.refresh_availability(1);
        let picked = engine.upstreams.cluster(1).borrow_mut().pick(rng, &[]);
        picked.map(|id| engine.upstreams.cluster(1).borrow().host(id).address)
    }

    /// The requests counted for host `id` of cluster 1 (`web`).
    fn requests_to(stats: &crate::stats::WorkerStats, id: usize) -> Option<u64> {
        stats
            .host(1, id)
            .map(|h| h.rq_total.load(std::sync::atomic::Ordering::Relaxed))
    }

    fn addr(n: u8, port: u16) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, n], port))
    }

    #[test]
    fn answers_make_one_host_set_and_a_failure_keeps_it() {
        let config = Config::from_yaml(TWO).unwrap();
        let dns = SharedDns::new(&config);
        assert_eq!(dns.view(0).unwrap().slots, vec![None; 4]);
        assert!(dns.view(2).is_none());
        let m = dns.answered(0, 0, vec![addr(1, 80), addr(2, 80)]);
        assert_eq!((m.added, m.removed), (2, 0));
        let m = dns.answered(0, 1, vec![addr(3, 81)]);
        assert_eq!((m.added, m.removed), (1, 0));
        let slots = dns.view(0).unwrap().slots.clone();
        assert_eq!(
            slots,
            vec![
                Some(SlotHost::plain(addr(1, 80), 1)),
                Some(SlotHost::plain(addr(2, 80), 1)),
                Some(SlotHost::plain(addr(3, 81), 3)),
                None
            ]
        );
        assert_eq!(dns.failed(0, 0), 1);
        assert_eq!(dns.failed(0, 0), 2);
        let view = dns.view(0).unwrap();
        assert_eq!(view.slots, slots, "a failure keeps the last answer");
        assert_eq!(view.failing, vec![2, 0]);
        // The name's next answer drops 10.0.0.1: its slot is freed, the others stay.
        let m = dns.answered(0, 0, vec![addr(2, 80)]);
        assert_eq!((m.added, m.removed), (0, 1));
        let view = dns.view(0).unwrap();
        assert_eq!(view.slots[0], None);
        assert_eq!(view.slots[1], slots[1]);
        assert_eq!(view.slots[2], slots[2]);
        assert_eq!(view.failing, vec![0, 0]);
    }

    #[test]
    fn no_such_name_empties_a_strict_name_and_leaves_a_logical_one_alone() {
        let config = Config::from_yaml(TWO).unwrap();
        let strict = config.clusters[0].dns.as_ref().unwrap();
        let logical = config.clusters[1].dns.as_ref().unwrap();
        let empty = || Ok(Resolved::default());
        assert_eq!(
            outcome(ClusterKind::StrictDns, strict, empty()),
            Outcome::Answer(Vec::new(), None)
        );
        assert_eq!(
            outcome(ClusterKind::LogicalDns, logical, empty()),
            Outcome::KeptOnEmpty(None)
        );
        // No address of the lookup family is no address (Envoy asks only for that family).
        let mut v4_only = strict.clone();
        v4_only.lookup_family = sluice_core::config::DnsLookupFamily::V4Only;
        let v6 = Resolved {
            addresses: vec!["[::1]:80".parse().unwrap()],
            ttl: None,
        };
        assert_eq!(
            outcome(ClusterKind::StrictDns, &v4_only, Ok(v6)),
            Outcome::Answer(Vec::new(), None)
        );
        assert_eq!(
            outcome(ClusterKind::StrictDns, strict, Err("timeout".into())),
            Outcome::Failure("timeout".into())
        );
        // The resolver's own words for "no such name" and "no address" are empty answers;
        // a temporary failure is not.
        for text in crate::net::NO_SUCH_NAME {
            let e = std::io::Error::other(format!("failed to lookup address information: {text}"));
            assert!(crate::net::is_no_such_name(&e), "{text}");
        }
        let again = std::io::Error::other(
            "failed to lookup address information: Temporary failure in name resolution",
        );
        assert!(!crate::net::is_no_such_name(&again));
        // The empty answer frees the name's slots.
        let dns = SharedDns::new(&config);
        dns.answered(0, 0, vec![addr(1, 80), addr(2, 80)]);
        let m = dns.answered(0, 0, Vec::new());
        assert_eq!((m.added, m.removed), (0, 2));
        assert_eq!(dns.view(0).unwrap().slots, vec![None; 4]);
    }

    #[test]
    fn addresses_left_out_are_counted_once_per_answer_not_per_refresh() {
        let mut last = None;
        let answer = vec![addr(1, 80), addr(2, 80)];
        assert_eq!(newly_dropped(&mut last, answer.clone(), 1), 1);
        assert_eq!(newly_dropped(&mut last, answer.clone(), 1), 0, "a refresh");
        assert_eq!(newly_dropped(&mut last, answer.clone(), 1), 0, "a refresh");
        let other = vec![addr(1, 80), addr(3, 80)];
        assert_eq!(newly_dropped(&mut last, other, 1), 1, "a new answer");
        assert_eq!(newly_dropped(&mut last, answer, 1), 1, "back again: new");
    }

    #[test]
    fn an_engine_made_with_an_inherited_view_counts_results_with_its_epochs() {
        let config = Arc::new(
            Config::from_yaml(&TWO.replace(
                "max_hosts: 4",
                "max_hosts: 4\n    outlier_detection: { consecutive_5xx: 2, max_ejection_percent: 100 }",
            ))
            .unwrap(),
        );
        // Slot 0: 10.0.0.1 came, went and came back (epoch 3), as a reload inherits it.
        let shared = Arc::new(crate::health::SharedHealth::new(&config));
        shared.dns.answered(0, 0, vec![addr(1, 80)]);
        shared.dns.answered(0, 0, Vec::new());
        shared.dns.answered(0, 0, vec![addr(1, 80)]);
        assert_eq!(shared.dns.view(0).unwrap().epochs[0], 3);
        let stats = Arc::new(crate::stats::WorkerStats::new(&config));
        let engine = worker_engine(&config, &stats, &shared);
        let host = engine.upstreams.cluster(0).borrow().host_ref(HostId(0));
        assert_eq!(host.epoch, 3);
        for _ in 0..2 {
            engine.upstreams.report_upstream_result(
                0,
                host,
                sluice_core::health::UpstreamResult::Status(503),
            );
        }
        assert!(
            engine
                .upstreams
                .worker_health(0)
                .borrow()
                .is_ejected(HostId(0)),
            "the results of the slot's current host were dropped as stale"
        );
    }

    /// Issue 13 (review, LOW): endpoints updated in place grow into the spare ids of a static
    /// cluster of an xDS config, and a host that takes an id another host had starts at zero
    /// counters (they were the old host's), while a host that stays keeps its own.
    #[test]
    fn endpoints_grow_into_spare_ids_and_a_new_host_starts_at_zero_counters() {
        let yaml = |hosts: &[u8]| {
            let hosts: Vec<String> = hosts
                .iter()
                .map(|n| format!("{{ address: \"10.0.0.{n}:80\" }}"))
                .collect();
            format!(
                "listeners: []\nxds: {{ cluster: xds }}\nclusters:\n  - {{ name: xds, hosts: [ {{ \
                 address: 127.0.0.1:9 }} ] }}\n  - {{ name: web, hosts: [ {} ] }}\n",
                hosts.join(", ")
            )
        };
        let config = Arc::new(Config::from_yaml(&yaml(&[1, 2])).unwrap());
        assert_eq!(config.clusters[1].host_slots(), 18);
        let (stats, shared) = stats_and_health(&config);
        let engine = worker_engine(&config, &stats, &shared);
        for id in 0..2 {
            bump(&stats.host(1, id).unwrap().rq_total, 5);
        }
        // 2 goes, 3 to 7 come: into spare ids 2 to 6 (free before; the freed id 1 is reused
        // last); then 8 and 9 come: 8 takes id 1 (free before this update), 9 id 7.
        let mut serving = config.clone();
        for hosts in [&[1, 3, 4, 5, 6, 7][..], &[1, 3, 4, 5, 6, 7, 8, 9]] {
            let next = Config::from_yaml(&yaml(hosts)).unwrap();
            let update = merge_endpoints_update(&shared, &serving, &next, &[1])
                .expect("in place: the spare ids hold the new hosts");
            engine.apply_endpoints(&update);
            serving = Arc::new(next);
        }
        let slots = engine.upstreams.cluster(1).borrow().slots();
        let held: Vec<u8> = slots
            .iter()
            .map(|s| {
                s.map_or(0, |h| match h.address.ip() {
                    std::net::IpAddr::V4(ip) => ip.octets()[3],
                    std::net::IpAddr::V6(_) => 255,
                })
            })
            .collect();
        assert_eq!(&held[..9], [1, 8, 3, 4, 5, 6, 7, 9, 0]);
        assert_eq!(
            requests_to(&stats, 0),
            Some(5),
            "a host that stays keeps its counters"
        );
        assert_eq!(
            requests_to(&stats, 1),
            Some(0),
            "10.0.0.8 took 10.0.0.2's id: it starts at zero"
        );
        // Past the 18 ids: no merge (the caller switches generations).
        let many: Vec<u8> = (1..=19).collect();
        let next = Config::from_yaml(&yaml(&many)).unwrap();
        assert!(merge_endpoints_update(&shared, &serving, &next, &[1]).is_none());
    }

    /// An endpoints-only update that swaps two hosts' priorities (istiod moving a locality
    /// between failover levels) applies in place on a worker: no id changes, the hosts keep
    /// their counters, and picks follow the new priority 0.
    #[test]
    fn a_priority_change_applies_in_place_and_picks_follow_it() {
        let yaml = |p1: u8, p2: u8| {
            format!(
                "listeners: []\nxds: {{ cluster: xds }}\nclusters:\n  - {{ name: xds, hosts: [ {{ \
                 address: 127.0.0.1:9 }} ] }}\n  - {{ name: web, hosts: [ {{ address: \
                 \"10.0.0.1:80\", priority: {p1} }}, {{ address: \"10.0.0.2:80\", priority: {p2} }} ] }}\n"
            )
        };
        let config = Arc::new(Config::from_yaml(&yaml(0, 1)).unwrap());
        let (stats, shared) = stats_and_health(&config);
        let engine = worker_engine(&config, &stats, &shared);
        bump(&stats.host(1, 0).unwrap().rq_total, 5);
        let mut rng = sluice_core::rng::Rng::from_seed(1);
        let first: SocketAddr = "10.0.0.1:80".parse().unwrap();
        let second: SocketAddr = "10.0.0.2:80".parse().unwrap();
        for _ in 0..10 {
            assert_eq!(pick_in_web(&engine, &mut rng), Some(first));
        }
        let next = Config::from_yaml(&yaml(1, 0)).unwrap();
        let changed = sluice_core::config::diff::only_endpoints_differ(&config, &next)
            .expect("a priority change is an endpoints-only update");
        let update = merge_endpoints_update(&shared, &config, &next, &changed).expect("in place");
        engine.apply_endpoints(&update);
        for _ in 0..10 {
            assert_eq!(
                pick_in_web(&engine, &mut rng),
                Some(second),
                "10.0.0.2 is priority 0 now"
            );
        }
        let cluster = engine.upstreams.cluster(1).borrow();
        assert_eq!(cluster.host(HostId(0)).address, first, "ids kept");
        assert_eq!(cluster.host(HostId(0)).priority, 1);
        assert_eq!(cluster.epochs()[..2], [0, 0], "no host replaced");
        assert_eq!(
            requests_to(&stats, 0),
            Some(5),
            "10.0.0.1 keeps its counters"
        );
    }

    /// An endpoints-only update that changes priorities alone (no host replaced) still brings
    /// the panic state up to date: one level of four hosts, one healthy, is in panic; the
    /// healthy one moved alone to P0 takes every request, and the `lb_panic` gauge drops.
    #[test]
    fn a_priority_only_update_refreshes_the_panic_gauge() {
        let yaml = |p: u8| {
            format!(
                "listeners: []\nxds: {{ cluster: xds }}\nclusters:\n  - {{ name: xds, hosts: [ {{ \
                 address: 127.0.0.1:9 }} ] }}\n  - {{ name: web, health_check: {{ tcp: {{}}, \
                 interval: 5s }}, hosts: [ {{ address: \"10.0.0.1:80\", priority: {p} }}, \
                 {{ address: \"10.0.0.2:80\", priority: {p} }}, {{ address: \"10.0.0.3:80\", \
                 priority: {p} }}, {{ address: \"10.0.0.4:80\" }} ] }}\n"
            )
        };
        let config = Arc::new(Config::from_yaml(&yaml(0)).unwrap());
        let (stats, shared) = stats_and_health(&config);
        shared.seed(
            &config,
            &[("web".into(), "10.0.0.4:80".parse().unwrap(), None, true)],
        );
        let engine = worker_engine(&config, &stats, &shared);
        let gauge = || {
            engine.upstreams.refresh_availability(1);
            stats
                .cluster(1)
                .unwrap()
                .lb_panic
                .load(std::sync::atomic::Ordering::Relaxed)
        };
        assert_eq!(gauge(), 1, "one of four usable: panic");
        let next = Config::from_yaml(&yaml(1)).unwrap();
        let changed = sluice_core::config::diff::only_endpoints_differ(&config, &next)
            .expect("a priority change is an endpoints-only update");
        let update = merge_endpoints_update(&shared, &config, &next, &changed).expect("in place");
        engine.apply_endpoints(&update);
        assert_eq!(
            engine.upstreams.cluster(1).borrow().epochs()[..4],
            [0; 4],
            "no host replaced"
        );
        assert_eq!(gauge(), 0, "10.0.0.4 alone at P0 is healthy: no panic");
        assert_eq!(
            engine.upstreams.cluster(1).borrow().priority_load().load,
            [100, 0]
        );
    }

    /// An endpoints-only update that changes a host's declared health (EDS `health_status`)
    /// applies in place on a worker, the engine kept: the P0 host declared unhealthy sends
    /// every request to P1 (its level has no health), declared healthy again takes them back;
    /// the host keeps its id, epoch, counters and its active health check's verdict throughout.
    #[test]
    fn a_declared_health_change_applies_in_place_and_moves_the_load_between_levels() {
        let yaml = |health: &str| {
            format!(
                "listeners: []\nxds: {{ cluster: xds }}\nclusters:\n  - {{ name: xds, hosts: [ {{ \
                 address: 127.0.0.1:9 }} ] }}\n  - {{ name: web, health_check: {{ tcp: {{}}, \
                 interval: 5s }}, hosts: [ {{ address: \"10.0.0.1:80\", health: {health} }}, \
                 {{ address: \"10.0.0.2:80\", priority: 1 }} ] }}\n"
            )
        };
        let config = Arc::new(Config::from_yaml(&yaml("unhealthy")).unwrap());
        let (stats, shared) = stats_and_health(&config);
        let first: SocketAddr = "10.0.0.1:80".parse().unwrap();
        let second: SocketAddr = "10.0.0.2:80".parse().unwrap();
        shared.seed(
            &config,
            &[
                ("web".into(), first, None, true),
                ("web".into(), second, None, true),
            ],
        );
        let engine = worker_engine(&config, &stats, &shared);
        bump(&stats.host(1, 0).unwrap().rq_total, 5);
        let mut rng = sluice_core::rng::Rng::from_seed(1);
        for _ in 0..10 {
            assert_eq!(
                pick_in_web(&engine, &mut rng),
                Some(second),
                "P0 declared unhealthy: P1 serves"
            );
        }
        assert_eq!(
            engine.upstreams.cluster(1).borrow().priority_load().load,
            [0, 100]
        );
        let mut serving = config.clone();
        for (health, expected, load) in [
            ("healthy", first, [100, 0]),
            ("draining", second, [0, 100]),
            ("degraded", first, [100, 0]),
        ] {
            let next = Arc::new(Config::from_yaml(&yaml(health)).unwrap());
            let changed = sluice_core::config::diff::only_endpoints_differ(&serving, &next)
                .expect("a declared health change is an endpoints-only update");
            let update =
                merge_endpoints_update(&shared, &serving, &next, &changed).expect("in place");
            engine.apply_endpoints(&update);
            serving = next;
            for _ in 0..10 {
                assert_eq!(
                    pick_in_web(&engine, &mut rng),
                    Some(expected),
                    "declared {health}"
                );
            }
            let cluster = engine.upstreams.cluster(1).borrow();
            assert_eq!(cluster.priority_load().load, load, "declared {health}");
            assert_eq!(cluster.host(HostId(0)).address, first, "ids kept");
            assert_eq!(cluster.epochs()[..2], [0, 0], "no host replaced");
            assert!(
                shared.is_healthy_for(1, cluster.host_ref(HostId(0))),
                "the active check's verdict kept"
            );
        }
        assert_eq!(
            requests_to(&stats, 0),
            Some(5),
            "10.0.0.1 keeps its counters"
        );
    }

    #[test]
    fn a_reload_keeps_the_answers_of_unchanged_clusters_only() {
        let old_config = Config::from_yaml(TWO).unwrap();
        let old = SharedDns::new(&old_config);
        old.answered(0, 0, vec![addr(1, 80)]);
        old.answered(1, 0, vec![addr(5, 80)]);
        // `b` changes (its refresh rate); `a` does not.
        let next_config = Config::from_yaml(&TWO.replace(
            "type: logical_dns",
            "type: logical_dns\n    dns_refresh_rate: 1s",
        ))
        .unwrap();
        let next = SharedDns::new(&next_config);
        next.inherit(&old, &old_config, &next_config);
        assert_eq!(next.view(0), old.view(0));
        assert_eq!(next.view(1).unwrap().slots, vec![None]);
    }

    #[test]
    fn refreshes_follow_the_rate_or_the_bounded_ttl_and_failures_back_off() {
        let config = Config::from_yaml(TWO).unwrap();
        let mut dns = config.clusters[0].dns.clone().unwrap();
        assert_eq!(
            refresh_after(&dns, Some(Duration::from_secs(30))),
            dns.refresh_rate
        );
        dns.respect_dns_ttl = true;
        assert_eq!(refresh_after(&dns, None), dns.refresh_rate);
        assert_eq!(refresh_after(&dns, Some(Duration::ZERO)), MIN_DNS_TTL);
        assert_eq!(
            refresh_after(&dns, Some(Duration::from_secs(86_400))),
            MAX_DNS_TTL
        );
        assert_eq!(
            refresh_after(&dns, Some(Duration::from_secs(30))),
            Duration::from_secs(30)
        );
        let mut rng = Rng::from_seed(1);
        let rate = Duration::from_secs(5);
        for failures in 1..20 {
            let cap = Duration::from_secs(1 << (failures - 1).min(16)).min(rate);
            let wait = failure_backoff(rate, failures, &mut rng);
            assert!(wait >= cap / 2 && wait <= cap, "{failures}: {wait:?}");
        }
    }
}
