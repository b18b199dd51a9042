//! Upstream health in the runtime: runs the probes the core's [`ActiveHealthChecker`] asks
//! for and publishes their verdicts ([`SharedHealth`]); each worker's outlier detector and the
//! hosts its balancer may pick are kept by [`crate::upstreams::Upstreams`].
//!
//! ## Who owns what
//!
//! - **Active health checks run once per process**, on worker 0 (one task per cluster with a
//!   `health_check`), so a host sees one probe per interval whatever the worker count. Verdicts
//!   go to [`SharedHealth`]: one word per host (the verdict and the slot epoch of the host it is
//!   about: see [`SharedHealth::is_healthy_for`]) plus a per-cluster generation counter,
//!   written only by that task (no lock; readers use relaxed loads). The task follows host
//!   sets that change without a new generation — a DNS cluster's answers, a static cluster's
//!   endpoints updated in place by xDS (see [`crate::dns`]) — probing a new host from its
//!   arrival (unknown until then) and no longer the removed ones.
//! - **Outlier detection runs per worker**, on the results of that worker's own requests: no
//!   cross-thread traffic on the data path. The deviation from Envoy (which aggregates every
//!   worker's results on its main thread): with `W` workers a failing host is ejected by each
//!   worker after `consecutive_*` failures *it* saw, so up to `W × consecutive_*` requests may
//!   fail before every worker ejected it — and with retries on, those are retried elsewhere.
//! - **Availability is per worker** ([`crate::upstreams::WorkerHealth`], kept and refreshed
//!   by [`crate::upstreams::Upstreams`]): before a pick the worker compares the shared
//!   generation with the one it last applied, and checks whether an ejection expired; only
//!   then does it hand health × ejection to its `ClusterState`
//!   ([`sluice_core::cluster::ClusterState::apply_health`]), which applies the panic threshold
//!   per priority level and recomputes the level loads. The common case is one relaxed load and two
//!   compares.
//!
//! ## Probes
//!
//! `tcp`: the connection is established. `http`: `GET path HTTP/1.1` with `Connection: close`,
//! success when the response status is in `expected_statuses`. `bolt`: a Bolt v1 heartbeat,
//! success when answered with status 0. `grpc`: a `grpc.health.v1.Health/Check` call over a
//! new HTTP/2 connection (h2c by prior knowledge, or TLS offering ALPN `h2` alone, whatever the
//! cluster's `protocol`), judged by [`sluice_core::health::grpc::check_answer`] (HTTP 200,
//! `grpc-status: 0`, one message saying `SERVING`). One connection per probe, closed after it,
//! like the other probes: no connection state outlives a probe (Envoy keeps one open per host
//! unless `reuse_connection: false`; a probe every few seconds pays one more handshake here).
//! Each probe is bounded by the check's `timeout`; the checker also times it out on its own
//! and ignores a late result.

use std::rc::Rc;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::time::Duration;

use sluice_core::bolt;
use sluice_core::cluster::{HostId, HostRef, SlotHost};
use sluice_core::config::{Config, HealthCheckConfig, HealthProbe};
use sluice_core::health::{ActiveHealthChecker, HealthAction, HealthEvent, ProbeResult, grpc};
use sluice_core::http1::{self, Head, Limits, Method, ParseStatus};
use sluice_core::rng::Rng;
use tokio::io::AsyncReadExt;
use tracing::{info, warn};

use crate::engine::Engine;
use crate::net::Network;
use crate::now;
use crate::stats::bump;
use crate::upstreams::{ConnectError, Offer, connect_via};

/// Largest probe response read (an HTTP head or a heartbeat reply).
const MAX_PROBE_RESPONSE: usize = 16 * 1024;

/// A verdict as [`SharedHealth`] stores it: the epoch of the host it is about, and the bit.
fn verdict_word(epoch: u32, healthy: bool) -> u64 {
    (u64::from(epoch) << 1) | u64::from(healthy)
}

/// A health verdict handed to a new instance at an upgrade: (cluster name, host address, the
/// host's pick of `transport_socket_matches` by entry name — `Some(None)`: the cluster's own
/// `tls`; `None`: not said, an instance from before picks were handed over, whose verdict goes
/// to the one host of that address —, healthy).
pub type HandedVerdict = (String, std::net::SocketAddr, Option<Option<String>>, bool);

/// Health verdicts shared by the workers of one process. See the module doc.
#[derive(Debug)]
pub struct SharedHealth {
    clusters: Box<[ClusterHealth]>,
    /// The DNS clusters' answers ([`crate::dns`]): kept here because this is what every
    /// worker of a generation shares and a reload carries over.
    pub(crate) dns: crate::dns::SharedDns,
    /// Woken (every waiter) whenever a verdict changes: what a worker owns because of a verdict
    /// (its Bolt connections to a host that failed its check) must follow it without waiting
    /// for the worker's next request.
    verdict_changed: tokio::sync::Notify,
}

#[derive(Debug)]
struct ClusterHealth {
    /// The cluster has a `health_check`.
    checked: bool,
    /// Per host: the active checker's verdict (always true without a health check) and the
    /// slot epoch of the host it is about, as one word ([`verdict_word`]): a verdict counts
    /// for a worker's host only while the worker's slot has that epoch, so a refilled slot's
    /// new host is not healthy until a probe of *it* passed, on any worker, whichever of the
    /// DNS update and the health task runs first.
    healthy: Box<[AtomicU64]>,
    /// Bumped after every change of `healthy`.
    generation: AtomicU64,
    /// A worker sent the cluster a request or session (switches probes from
    /// `no_traffic_interval` to `interval`).
    traffic: AtomicBool,
    /// Wakes the health-check task when `traffic` turns true, so that probes speed up at once
    /// rather than after the `no_traffic_interval` sleep.
    traffic_started: tokio::sync::Notify,
}

impl SharedHealth {
    /// Shaped like `config`. Hosts of a health-checked cluster start *unknown* (not healthy)
    /// until their first probe passes; the panic threshold keeps a cluster whose hosts are all
    /// unknown serving on all of them meanwhile.
    #[must_use]
    pub fn new(config: &Config) -> Self {
        SharedHealth {
            clusters: config
                .clusters
                .iter()
                .map(|c| {
                    let checked = c.health_check.is_some();
                    ClusterHealth {
                        checked,
                        healthy: (0..c.host_slots())
                            .map(|_| AtomicU64::new(verdict_word(0, !checked)))
                            .collect(),
                        generation: AtomicU64::new(0),
                        traffic: AtomicBool::new(false),
                        traffic_started: tokio::sync::Notify::new(),
                    }
                })
                .collect(),
            dns: crate::dns::SharedDns::new(config),
            verdict_changed: tokio::sync::Notify::new(),
        }
    }

    /// Carries the verdicts of `old` (for `old_config`) over to the same hosts (cluster name
    /// and address) of `config`, so that a reload does not send traffic to a host known to be
    /// down, nor hold back one known to be up.
    pub fn inherit(&self, old: &SharedHealth, old_config: &Config, config: &Config) {
        self.dns.inherit(&old.dns, old_config, config);
        for (ci, c) in config.clusters.iter().enumerate() {
            let Some(oi) = old_config.clusters.iter().position(|o| o.name == c.name) else {
                continue;
            };
            if !(self.clusters[ci].checked && old.clusters[oi].checked) {
                continue;
            }
            // A DNS cluster kept its slots (same names): the verdicts go with them.
            if c.dns.is_some() && old_config.clusters[oi].dns == c.dns {
                for (mine, theirs) in self.clusters[ci]
                    .healthy
                    .iter()
                    .zip(&old.clusters[oi].healthy)
                {
                    mine.store(theirs.load(Relaxed), Relaxed);
                }
            }
            // A static cluster whose endpoints were updated in place: its hosts are slots,
            // and a verdict counts only for the slot's host of its epoch.
            let slots = old.dns.endpoints_view(oi);
            let oc = &old_config.clusters[oi];
            for (hi, h) in c.hosts.iter().enumerate() {
                // The same host: its address and its transport (a host whose labels now pick
                // another transport is another host, unknown), compared across the configs.
                let transport = c.host_transport(h);
                let same = |address, t| address == h.address && oc.same_transport(t, c, transport);
                let verdict = match &slots {
                    Some(view) => view
                        .slots
                        .iter()
                        .position(|s| s.is_some_and(|s| same(s.address, s.transport)))
                        .map(|ohi| {
                            let word = old.clusters[oi].healthy[ohi].load(Relaxed);
                            verdict_word(0, word == verdict_word(view.epochs[ohi], true))
                        }),
                    None => old_config.clusters[oi]
                        .hosts
                        .iter()
                        .position(|o| same(o.address, oc.host_transport(o)))
                        .map(|ohi| old.clusters[oi].healthy[ohi].load(Relaxed)),
                };
                if let Some(verdict) = verdict {
                    self.clusters[ci].healthy[hi].store(verdict, Relaxed);
                }
            }
            let traffic = old.clusters[oi].traffic.load(Relaxed);
            self.clusters[ci].traffic.store(traffic, Relaxed);
        }
    }

    /// Takes the verdicts a previous instance handed over at an upgrade ([`HandedVerdict`]),
    /// for checked clusters and hosts this config has too: the same address and the same pick
    /// of `transport_socket_matches`, by entry name (indices are not stable across instances;
    /// names are unique in a cluster); skipped when that is ambiguous (two such hosts).
    pub fn seed(&self, config: &Config, verdicts: &[HandedVerdict]) {
        for (cluster, host, transport, healthy) in verdicts {
            let Some(ci) = config.clusters.iter().position(|c| &c.name == cluster) else {
                continue;
            };
            if !self.clusters[ci].checked {
                continue;
            }
            let c = &config.clusters[ci];
            let mut same = c.hosts.iter().enumerate().filter(|(_, h)| {
                h.address == *host
                    && transport
                        .as_ref()
                        .is_none_or(|t| c.transport_name(c.host_transport(h)) == t.as_deref())
            });
            if let (Some((hi, _)), None) = (same.next(), same.next()) {
                self.clusters[ci].healthy[hi].store(verdict_word(0, *healthy), Relaxed);
            }
        }
    }

    /// The verdicts of checked clusters, to hand over at an upgrade (see [`SharedHealth::seed`]).
    #[must_use]
    pub fn verdicts(&self, config: &Config) -> Vec<HandedVerdict> {
        let mut out = Vec::new();
        for (ci, c) in config.clusters.iter().enumerate() {
            if !self.clusters[ci].checked {
                continue;
            }
            let name = |t| c.transport_name(t).map(str::to_owned);
            if let Some(view) = self.dns.endpoints_view(ci) {
                // Endpoints updated in place: the slots' hosts, each with its own verdict.
                for (hi, slot) in view.slots.iter().enumerate() {
                    if let Some(h) = slot {
                        let word = self.clusters[ci].healthy[hi].load(Relaxed);
                        out.push((
                            c.name.clone(),
                            h.address,
                            Some(name(h.transport)),
                            word == verdict_word(view.epochs[hi], true),
                        ));
                    }
                }
                continue;
            }
            for (hi, h) in c.hosts.iter().enumerate() {
                out.push((
                    c.name.clone(),
                    h.address,
                    Some(name(c.host_transport(h))),
                    self.clusters[ci].healthy[hi].load(Relaxed) & 1 == 1,
                ));
            }
        }
        out
    }

    /// Whether the cluster is actively health checked.
    #[must_use]
    pub fn is_checked(&self, cluster: usize) -> bool {
        self.clusters.get(cluster).is_some_and(|c| c.checked)
    }

    /// The active checker's last verdict on a host id, whichever host of the slot it was
    /// about (true when the cluster is not checked). To decide whether a worker may pick the
    /// host, [`SharedHealth::is_healthy_for`].
    #[must_use]
    pub fn is_healthy(&self, cluster: usize, host: usize) -> bool {
        self.clusters
            .get(cluster)
            .and_then(|c| c.healthy.get(host))
            .is_none_or(|h| h.load(Relaxed) & 1 == 1)
    }

    /// Whether the active checker found `host` (the slot's host of that epoch) healthy: true
    /// when the cluster is not checked; false while the last verdict is about another epoch
    /// (the slot's previous host, or a free slot's stand-in) — a new host is not healthy
    /// before its own first probe passed, as in Envoy.
    #[must_use]
    pub fn is_healthy_for(&self, cluster: usize, host: HostRef) -> bool {
        let Some(c) = self.clusters.get(cluster) else {
            return true;
        };
        if !c.checked {
            return true;
        }
        c.healthy
            .get(host.id.index())
            .is_none_or(|h| h.load(Relaxed) == verdict_word(host.epoch, true))
    }

    pub(crate) fn generation(&self, cluster: usize) -> u64 {
        self.clusters[cluster].generation.load(Relaxed)
    }

    /// The sum of every cluster's generation: changes whenever a verdict changes.
    pub(crate) fn generation_sum(&self) -> u64 {
        self.clusters
            .iter()
            .map(|c| c.generation.load(Relaxed))
            .fold(0, u64::wrapping_add)
    }

    fn set_healthy(&self, cluster: usize, host: usize, epoch: u32, healthy: bool) {
        let c = &self.clusters[cluster];
        c.healthy[host].store(verdict_word(epoch, healthy), Relaxed);
        c.generation.fetch_add(1, Relaxed);
        self.verdict_changed.notify_waiters();
    }

    /// Completes when a verdict changes after its creation: create it, then look at the
    /// verdicts (a change between the two wakes it).
    pub(crate) fn verdict_changed(&self) -> tokio::sync::futures::Notified<'_> {
        self.verdict_changed.notified()
    }

    /// Notes that the cluster has traffic (a load; a store and a wake-up only the first time).
    #[inline]
    pub fn note_traffic(&self, cluster: usize) {
        let c = &self.clusters[cluster];
        if !c.traffic.load(Relaxed) {
            c.traffic.store(true, Relaxed);
            c.traffic_started.notify_one();
        }
    }

    fn has_traffic(&self, cluster: usize) -> bool {
        self.clusters[cluster].traffic.load(Relaxed)
    }
}

impl<N: Network> Engine<N> {
    /// Runs the active health checks of every checked cluster until the engine stops. Called on
    /// worker 0 only.
    pub(crate) async fn run_health_checks(self: Rc<Self>, seed: u64) {
        // The DNS resolver lives and ends with the health checks (see `crate::dns`).
        let mut tasks = self.start_dns(seed);
        for (ci, c) in self.config.clusters.iter().enumerate() {
            if let Some(hc) = c.health_check.clone() {
                let engine = self.clone();
                let rng =
                    Rng::from_seed(seed ^ (0x9e37_79b9_7f4a_7c15_u64.wrapping_mul(ci as u64 + 1)));
                tasks.push(tokio::task::spawn_local(async move {
                    engine.health_check_cluster(ci, hc, rng).await;
                }));
            }
        }
        // Ends with the engine: the caller aborts this future; abort the cluster tasks too.
        let _guard = AbortOnDrop(tasks);
        std::future::pending::<()>().await;
    }

    async fn health_check_cluster(self: Rc<Self>, ci: usize, hc: HealthCheckConfig, rng: Rng) {
        let cluster = &self.config.clusters[ci];
        let hosts = cluster.host_slots();
        let mut checker = ActiveHealthChecker::new(now(), hosts, hc.settings, rng);
        // A DNS cluster's hosts are its slots' addresses, followed here (a free slot is not
        // probed: it "passes" at once, and is never available anyway).
        // So are a static cluster's once endpoints-only updates (EDS) change them in place.
        let mut dns = self
            .upstreams
            .shared_health()
            .dns
            .subscribe_hosts(ci, cluster);
        // Per slot: its host's address and transport (a probe goes over the host's transport,
        // the one its requests use).
        type Probed = Option<(std::net::SocketAddr, sluice_core::host::Transport)>;
        let (mut slots, mut epochs): (Vec<Probed>, Vec<u32>) = match &dns {
            Some(rx) => {
                let view = rx.borrow();
                (
                    view.slots.iter().map(|s| s.map(SlotHost::key)).collect(),
                    view.epochs.clone(),
                )
            }
            None => (
                cluster
                    .hosts
                    .iter()
                    .map(|h| Some((h.address, cluster.host_transport(h))))
                    .collect(),
                vec![0; hosts],
            ),
        };
        // Slots already numbered (a reload kept the answers): the checker's verdicts are
        // about those hosts.
        for (i, &epoch) in epochs.iter().enumerate() {
            if epoch != 0 {
                checker.replace_host(
                    now(),
                    HostRef {
                        id: HostId(i as u32),
                        epoch,
                    },
                );
            }
        }
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(
            HostRef,
            ProbeResult,
            Option<(crate::tls::HandshakeOutcome, std::io::Error)>,
        )>();
        // TLS handshake failures of probes: logged at most once a second (with how many were
        // not), like the other upstream warnings.
        let mut tls_log = TlsFailureLog::default();
        // Outstanding probes by host, aborted if this task is (the engine stopped).
        let mut probes = Probes((0..hosts).map(|_| None).collect());
        let probes = &mut probes.0;
        loop {
            checker.set_traffic(self.upstreams.shared_health().has_traffic(ci));
            while let Some(action) = checker.poll_action() {
                match action {
                    HealthAction::Probe { host, epoch } => {
                        let probed = HostRef { id: host, epoch };
                        let Some((address, transport)) = slots[host.index()] else {
                            let _ = tx.send((probed, ProbeResult::Success, None));
                            continue;
                        };
                        if let Some(s) = self.stats().cluster(ci) {
                            bump(&s.health_check_attempt, 1);
                        }
                        let engine = self.clone();
                        let tx = tx.clone();
                        let probe = hc.probe.clone();
                        let name = cluster.name.clone();
                        let timeout = hc.settings.timeout;
                        // A transport the config does not have fails the probe (fail
                        // closed: never probed in plaintext).
                        let tls = match self.tls.current().connector(ci, transport) {
                            Ok(c) => c.cloned(),
                            Err(_) => {
                                let _ = tx.send((probed, ProbeResult::Failure, None));
                                continue;
                            }
                        };
                        probes[host.index()] = Some(tokio::task::spawn_local(async move {
                            let (result, tls_failure) = match tokio::time::timeout(
                                timeout,
                                probe_host(engine.net(), &probe, &name, address, tls.as_ref()),
                            )
                            .await
                            {
                                Ok(Ok(())) => (ProbeResult::Success, None),
                                Ok(Err(ProbeFailure::Tls(outcome, e))) => {
                                    (ProbeResult::Failure, Some((outcome, e)))
                                }
                                Ok(Err(ProbeFailure::Other)) => (ProbeResult::Failure, None),
                                Err(_) => (ProbeResult::Timeout, None),
                            };
                            let _ = tx.send((probed, result, tls_failure));
                        }));
                    }
                    HealthAction::Cancel { host } => {
                        if let Some(t) = probes[host.index()].take() {
                            t.abort();
                        }
                    }
                }
            }
            while let Some(event) = checker.poll_event() {
                let (host, healthy) = match event {
                    HealthEvent::BecameHealthy(h) => (h, true),
                    HealthEvent::BecameUnhealthy(h) => (h, false),
                };
                let epoch = checker.epoch(host);
                let Some((address, _)) = slots[host.index()] else {
                    // A free slot: its verdict is never used.
                    self.upstreams
                        .shared_health()
                        .set_healthy(ci, host.index(), epoch, healthy);
                    continue;
                };
                if healthy {
                    info!(cluster = %cluster.name, host = %address, "health check: host healthy");
                } else {
                    warn!(cluster = %cluster.name, host = %address, "health check: host unhealthy");
                }
                self.upstreams
                    .shared_health()
                    .set_healthy(ci, host.index(), epoch, healthy);
                if let Some(h) = self.stats().host(ci, host.index()) {
                    h.healthy.store(u64::from(healthy), Relaxed);
                }
            }
            let deadline = checker.poll_timeout().map_or_else(
                || tokio::time::Instant::now() + Duration::from_secs(3600),
                crate::to_tokio,
            );
            let quiet = !self.upstreams.shared_health().has_traffic(ci);
            let dns_changed = async {
                match dns.as_mut() {
                    Some(rx) => rx.changed().await.is_ok(),
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                // A DNS answer moved hosts: a new one starts unknown, probed at once.
                alive = dns_changed => {
                    let Some(rx) = dns.as_mut().filter(|_| alive) else {
                        dns = None;
                        continue;
                    };
                    let view = rx.borrow_and_update().clone();
                    for (i, slot) in view.slots.iter().enumerate() {
                        let host = slot.map(SlotHost::key);
                        let epoch = view.epochs[i];
                        if host != slots[i] || epoch != epochs[i] {
                            slots[i] = host;
                            epochs[i] = epoch;
                            checker.replace_host(now(), HostRef { id: HostId(i as u32), epoch });
                            self.upstreams.shared_health().set_healthy(ci, i, epoch, false);
                            if let Some(h) = self.stats().host(ci, i) {
                                h.healthy.store(0, Relaxed);
                            }
                        }
                    }
                }
                // The first request: probes go from no_traffic_interval to interval now.
                () = self.upstreams.shared_health().clusters[ci].traffic_started.notified(), if quiet => {}
                Some((probed, result, tls_failure)) = rx.recv() => {
                    let host = probed.id;
                    if probed.epoch != epochs[host.index()] {
                        // The slot's previous host answered after the slot changed: its result
                        // is not the new host's (the checker would drop it too).
                        continue;
                    }
                    probes[host.index()] = None;
                    if slots[host.index()].is_none() {
                        // A free slot's stand-in result: not a probe.
                    } else if let Some(s) = self.stats().cluster(ci) {
                        match result {
                            ProbeResult::Success => bump(&s.health_check_success, 1),
                            _ => bump(&s.health_check_failure, 1),
                        }
                        // Counted with the requests' handshake failures: a host whose
                        // certificate stops verifying shows up there before any request
                        // reaches it.
                        if let Some((outcome, _)) = &tls_failure {
                            bump(&s.upstream_tls_fail[*outcome as usize], 1);
                        }
                    }
                    if let Some((outcome, e)) = &tls_failure
                        && let Some((address, _)) = slots[host.index()]
                    {
                        tls_log.note(&cluster.name, address, *outcome, e);
                    }
                    checker.handle_probe_result_for(now(), probed, result);
                }
                () = tokio::time::sleep_until(deadline) => checker.handle_timeout(now()),
            }
        }
    }
}

/// Why a probe failed: its TLS handshake (with what it means, and the error), or anything else
/// (refused, reset, a bad answer).
#[derive(Debug)]
pub enum ProbeFailure {
    /// The TLS handshake failed (verification included); nothing was sent.
    Tls(crate::tls::HandshakeOutcome, std::io::Error),
    /// Connect, write, read or the answer.
    Other,
}

/// At most one warning a second for a health check's TLS failures, with how many were not
/// logged since.
#[derive(Default)]
struct TlsFailureLog {
    logged_at: Option<tokio::time::Instant>,
    unlogged: u64,
}

impl TlsFailureLog {
    fn note(
        &mut self,
        cluster: &str,
        address: std::net::SocketAddr,
        outcome: crate::tls::HandshakeOutcome,
        e: &std::io::Error,
    ) {
        let now = tokio::time::Instant::now();
        if self
            .logged_at
            .is_some_and(|t| now.duration_since(t) < Duration::from_secs(1))
        {
            self.unlogged += 1;
            return;
        }
        self.logged_at = Some(now);
        warn!(
            %cluster,
            host = %address,
            reason = outcome.as_str(),
            error = %e,
            suppressed = std::mem::take(&mut self.unlogged),
            "health check: TLS handshake failed"
        );
    }
}

/// One probe of `address` (the `Host` of an HTTP probe defaults to the cluster's name): true
/// when the host passed. See [`probe_host`].
pub async fn run_probe<N: Network>(
    net: &N,
    probe: &HealthProbe,
    cluster: &str,
    address: std::net::SocketAddr,
    tls: Option<&crate::tls::UpstreamConnector>,
) -> bool {
    probe_host(net, probe, cluster, address, tls).await.is_ok()
}

/// One probe of `address`, and why it failed. Unbounded in time: the caller applies the
/// check's timeout. `tls`: the cluster's connector — every probe then runs over TLS, and a
/// handshake that fails (verification included) fails the probe with nothing sent; a `tcp`
/// probe passes once the handshake is done (a host whose certificate does not verify is
/// unhealthy, as the requests would find it).
pub async fn probe_host<N: Network>(
    net: &N,
    probe: &HealthProbe,
    cluster: &str,
    address: std::net::SocketAddr,
    tls: Option<&crate::tls::UpstreamConnector>,
) -> Result<(), ProbeFailure> {
    let passed = |ok: bool| if ok { Ok(()) } else { Err(ProbeFailure::Other) };
    // The one connect path, without its deadline (the caller bounds the whole probe) and
    // without the data path's counters and outlier reports (a probe is not a request).
    let offer = match probe {
        HealthProbe::Grpc { .. } => Offer::H2,
        _ => Offer::Cluster,
    };
    let mut stream = match connect_via(net, tls, address, offer, None).await {
        Ok(s) => s,
        Err(ConnectError::Tls { outcome, error }) => return Err(ProbeFailure::Tls(outcome, error)),
        Err(_) => return Err(ProbeFailure::Other),
    };
    if tls.is_none() && matches!(probe, HealthProbe::Tcp) {
        return Ok(());
    }
    if let HealthProbe::Grpc {
        service_name,
        authority,
    } = probe
    {
        // The cluster's name unless it cannot be an authority (an Istio name has '|'): then
        // the host's address.
        let fallback;
        let authority = match authority {
            Some(a) => a.as_str(),
            None if grpc::is_authority(cluster) => cluster,
            None => {
                fallback = address.to_string();
                &fallback
            }
        };
        let tls = tls.is_some();
        return match grpc_check(&mut stream, service_name, authority, tls).await {
            Ok(()) => Ok(()),
            Err(e) => {
                tracing::debug!(%cluster, host = %address, error = %e, "gRPC health check failed");
                Err(ProbeFailure::Other)
            }
        };
    }
    passed(exchange(probe, cluster, &mut stream).await)
}

/// Why a gRPC probe failed.
#[derive(Debug, thiserror::Error)]
enum GrpcProbeError {
    #[error("HTTP/2: {0}")]
    H2(#[from] h2::Error),
    #[error("request: {0}")]
    Request(#[from] http::Error),
    #[error("answer: {0}")]
    Answer(#[from] grpc::ProbeError),
}

/// One `grpc.health.v1.Health/Check` call on a new HTTP/2 connection over `stream`, which is
/// driven here (nothing is spawned: dropping the future closes everything).
async fn grpc_check<S>(
    stream: S,
    service: &str,
    authority: &str,
    tls: bool,
) -> Result<(), GrpcProbeError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let (send, connection) = crate::h2_upstream::client_builder()
        .handshake::<_, bytes::Bytes>(stream)
        .await?;
    let call = async move {
        // Waits for the server's SETTINGS (the builder opens no stream before them).
        let mut send = send.ready().await?;
        let scheme = if tls { "https" } else { "http" };
        let request = http::Request::builder()
            .method(http::Method::POST)
            .uri(format!("{scheme}://{authority}{}", grpc::PATH))
            .header(http::header::CONTENT_TYPE, "application/grpc")
            .header(http::header::TE, "trailers")
            .header(http::header::USER_AGENT, "sluice-health-check")
            .body(())?;
        let mut body = Vec::with_capacity(16 + service.len());
        grpc::encode_request(service, &mut body);
        let (response, mut out) = send.send_request(request, false)?;
        out.send_data(bytes::Bytes::from(body), true)?;
        let (head, mut recv) = response.await?.into_parts();
        let content_type = head.headers.get(http::header::CONTENT_TYPE);
        if recv.is_end_stream() {
            // Trailers-only: the status is in the headers.
            let status = head.headers.get("grpc-status").map(|v| v.as_bytes());
            grpc::check_answer(
                head.status.as_u16(),
                content_type.map(|v| v.as_bytes()),
                status,
                &[],
            )?;
            return Ok(());
        }
        let mut data = Vec::new();
        while let Some(chunk) = recv.data().await {
            let chunk = chunk?;
            let _ = recv.flow_control().release_capacity(chunk.len());
            if data.len() + chunk.len() > grpc::MAX_RESPONSE_BYTES {
                return Err(grpc::ProbeError::Decode(grpc::DecodeError::TooLarge).into());
            }
            data.extend_from_slice(&chunk);
        }
        let trailers = recv.trailers().await?;
        let status = trailers
            .as_ref()
            .and_then(|t| t.get("grpc-status"))
            .map(|v| v.as_bytes());
        grpc::check_answer(
            head.status.as_u16(),
            content_type.map(|v| v.as_bytes()),
            status,
            &data,
        )?;
        Ok(())
    };
    tokio::pin!(call, connection);
    tokio::select! {
        result = &mut call => result,
        // The connection ended: what it delivered before still reaches the call.
        _ = &mut connection => call.await,
    }
}

/// A probe's request and the check of its answer, over an established (maybe TLS) stream.
async fn exchange<S>(probe: &HealthProbe, cluster: &str, mut stream: S) -> bool
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    match probe {
        HealthProbe::Tcp => true,
        // Not here: `probe_host` makes the call itself.
        HealthProbe::Grpc { .. } => false,
        HealthProbe::Http {
            path,
            host,
            expected_statuses,
        } => {
            let request = format!(
                "GET {path} HTTP/1.1\r\nhost: {}\r\nuser-agent: sluice-health-check\r\nconnection: close\r\n\r\n",
                host.as_deref().unwrap_or(cluster)
            );
            if crate::http::write_flushed(&mut stream, request.as_bytes())
                .await
                .is_err()
            {
                return false;
            }
            let Some(status) = read_status(&mut stream).await else {
                return false;
            };
            expected_statuses
                .iter()
                .any(|&(lo, hi)| (lo..=hi).contains(&status))
        }
        HealthProbe::Bolt => {
            let mut request = Vec::with_capacity(32);
            let spec = bolt::RequestSpec {
                version: bolt::Version::V1,
                oneway: false,
                cmd_code: bolt::CMD_HEARTBEAT,
                cmd_version: bolt::CMD_VERSION,
                request_id: 1,
                codec: bolt::CODEC_HESSIAN2,
                timeout_ms: -1,
                class: b"",
                header: &[],
                content: b"",
            };
            if bolt::encode_request(&mut request, &spec).is_err()
                || crate::http::write_flushed(&mut stream, &request)
                    .await
                    .is_err()
            {
                return false;
            }
            let mut buf = Vec::with_capacity(64);
            loop {
                match bolt::decode(&buf, MAX_PROBE_RESPONSE) {
                    Ok(Some(frame)) => {
                        return frame.request_id == 1
                            && frame.response_status() == Some(bolt::ResponseStatus::Success);
                    }
                    Ok(None) => {}
                    Err(_) => return false,
                }
                if !read_more(&mut stream, &mut buf).await {
                    return false;
                }
            }
        }
    }
}

/// Reads an HTTP response head; its status, or `None` on EOF, error or a malformed head.
pub(crate) async fn read_status<S: tokio::io::AsyncRead + Unpin>(stream: &mut S) -> Option<u16> {
    let mut buf = Vec::with_capacity(512);
    let mut head = Head::new();
    let limits = Limits::default();
    loop {
        match http1::parse_response(&buf, Method::Get, &limits, &mut head) {
            Ok(ParseStatus::Complete) => return Some(head.status()),
            Ok(ParseStatus::Partial) => {}
            Err(_) => return None,
        }
        if !read_more(stream, &mut buf).await {
            return None;
        }
    }
}

/// Appends what the stream has to `buf`; false on EOF, error, or past the probe size limit.
async fn read_more<S: tokio::io::AsyncRead + Unpin>(stream: &mut S, buf: &mut Vec<u8>) -> bool {
    if buf.len() >= MAX_PROBE_RESPONSE {
        return false;
    }
    let mut chunk = [0u8; 2048];
    match stream.read(&mut chunk).await {
        Ok(0) | Err(_) => false,
        Ok(n) => {
            buf.extend_from_slice(&chunk[..n]);
            true
        }
    }
}

/// Aborts spawned tasks when dropped (the health-check tasks end with the engine).
struct AbortOnDrop(Vec<tokio::task::JoinHandle<()>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}

/// Outstanding probe tasks by host; aborted when dropped.
struct Probes(Vec<Option<tokio::task::JoinHandle<()>>>);

impl Drop for Probes {
    fn drop(&mut self) {
        for t in self.0.iter().flatten() {
            t.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::TokioNet;
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;

    /// A one-shot server: reads until `until` says the request is complete, answers `answer`.
    async fn serve_once(
        answer: impl FnOnce(&[u8]) -> Vec<u8> + Send + 'static,
        until: fn(&[u8]) -> bool,
    ) -> std::net::SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut buf = Vec::new();
            let mut chunk = [0u8; 1024];
            while !until(&buf) {
                let n = s.read(&mut chunk).await.unwrap();
                if n == 0 {
                    return;
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            s.write_all(&answer(&buf)).await.unwrap();
        });
        addr
    }

    #[test]
    fn a_verdict_counts_only_for_the_host_of_the_slot_epoch_it_was_made_for() {
        let config = Config::from_yaml(
            r#"
listeners:
  - { name: t, address: 127.0.0.1:1, tcp_proxy: { cluster: a } }
clusters:
  - name: a
    type: strict_dns
    max_hosts: 2
    health_check: { tcp: {} }
    hosts: [ { address: "a.example:80" } ]
"#,
        )
        .unwrap();
        let shared = SharedHealth::new(&config);
        let slot = |epoch| HostRef {
            id: HostId(0),
            epoch,
        };
        // A free slot's stand-in probe "passes" (epoch 0); the slot is then filled (epoch 1):
        // the new host is not healthy on any worker before its own probe passed.
        shared.set_healthy(0, 0, 0, true);
        assert!(shared.is_healthy_for(0, slot(0)));
        assert!(!shared.is_healthy_for(0, slot(1)));
        shared.set_healthy(0, 0, 1, true);
        assert!(shared.is_healthy_for(0, slot(1)));
        // A late verdict about the old host (the health task had not seen the change yet)
        // does not make the slot's next host healthy either.
        shared.set_healthy(0, 0, 1, true);
        assert!(!shared.is_healthy_for(0, slot(2)));
    }

    /// A switch after endpoints were updated in place (issue 13) carries each verdict over to
    /// the same host, found by its slot (not its index in the serving config, which EDS orders
    /// its own way), and only a verdict about the slot's current host.
    #[test]
    fn a_switch_after_endpoints_in_place_carries_verdicts_by_slot() {
        let yaml = |ports: &[u16]| {
            let hosts: Vec<String> = ports
                .iter()
                .map(|p| format!("{{ address: 127.0.0.1:{p} }}"))
                .collect();
            Config::from_yaml(&format!(
                "listeners:\n  - {{ name: t, address: 127.0.0.1:1, tcp_proxy: {{ cluster: a }} }}\n\
                 clusters:\n  - {{ name: a, health_check: {{ tcp: {{}} }}, hosts: [{}] }}\n",
                hosts.join(", ")
            ))
            .unwrap()
        };
        let before = yaml(&[1, 2]);
        let old = SharedHealth::new(&before);
        old.set_healthy(0, 0, 0, true);
        old.set_healthy(0, 1, 0, true);
        // 2 replaced by 3 in place (3 takes id 1, epoch 1), then 3's probe passes; the serving
        // config lists 3 first.
        let after = yaml(&[3, 1]);
        let changed = sluice_core::config::diff::only_endpoints_differ(&before, &after).unwrap();
        let update = crate::dns::merge_endpoints_update(&old, &before, &after, &changed).unwrap();
        assert_eq!(update.clusters[0].1.epochs, [0, 1]);
        assert!(!old.is_healthy_for(
            0,
            HostRef {
                id: HostId(1),
                epoch: 1
            }
        ));
        old.set_healthy(0, 1, 1, true);
        // A switch to [3, 1, 4] (a host more than the ids): each keeps its verdict, 4 unknown.
        let next = yaml(&[3, 1, 4]);
        let new = SharedHealth::new(&next);
        new.inherit(&old, &after, &next);
        let fixed = |i| HostRef::fixed(HostId(i));
        assert!(new.is_healthy_for(0, fixed(0)), "3 kept its verdict");
        assert!(new.is_healthy_for(0, fixed(1)), "1 kept its verdict");
        assert!(!new.is_healthy_for(0, fixed(2)), "4 is unknown");
        // And the verdicts handed to an upgrade name the slots' hosts.
        let mut verdicts = old.verdicts(&after);
        verdicts.sort();
        let addr = |p: u16| std::net::SocketAddr::from(([127, 0, 0, 1], p));
        assert_eq!(
            verdicts,
            [
                ("a".to_owned(), addr(1), Some(None), true),
                ("a".to_owned(), addr(3), Some(None), true)
            ]
        );
    }

    /// Issue 13 (review, LOW): the verdicts handed to a new instance at an upgrade name each
    /// host's pick of `transport_socket_matches` by entry name, and the new instance takes a
    /// verdict only for the host of that address and that pick (its entries may be ordered
    /// otherwise).
    #[test]
    fn handed_over_verdicts_go_to_the_host_of_the_same_address_and_transport() {
        let yaml = |hosts: &str, entries: &str| {
            Config::from_yaml(&format!(
                "listeners:\n  - {{ name: t, address: 127.0.0.1:1, tcp_proxy: {{ cluster: a }} }}\n\
                 clusters:\n  - {{ name: a, health_check: {{ tcp: {{}} }}, hosts: [ {hosts} ], \
                 transport_socket_matches: {entries} }}\n"
            ))
            .unwrap()
        };
        let istio = "{ address: 127.0.0.1:2, transport_socket_match: { tlsMode: istio } }";
        let plain = "{ address: 127.0.0.1:3 }";
        let entries = "[ { name: mtls, match: { tlsMode: istio } }, { name: plain } ]";
        let old_config = yaml(&format!("{istio}, {plain}"), entries);
        let old = SharedHealth::new(&old_config);
        old.set_healthy(0, 0, 0, true);
        old.set_healthy(0, 1, 0, true);
        let addr = |p: u16| std::net::SocketAddr::from(([127, 0, 0, 1], p));
        let handed = old.verdicts(&old_config);
        assert_eq!(
            handed,
            [
                ("a".to_owned(), addr(2), Some(Some("mtls".to_owned())), true),
                (
                    "a".to_owned(),
                    addr(3),
                    Some(Some("plain".to_owned())),
                    true
                )
            ]
        );
        // The new instance: entries reordered; 2 lost its label (now plaintext: another
        // host, unknown), 3 picks `plain` still (its verdict).
        let reordered = "[ { name: plain }, { name: mtls, match: { tlsMode: istio } } ]";
        let config = yaml(
            "{ address: 127.0.0.1:2 }, { address: 127.0.0.1:3 }",
            reordered,
        );
        let new = SharedHealth::new(&config);
        new.seed(&config, &handed);
        assert!(
            !new.is_healthy(0, 0),
            "2 now plaintext: not the host the verdict was for"
        );
        assert!(new.is_healthy(0, 1), "3: same address, same entry");
        // From an instance that handed no pick over (an older build): the verdict goes to the
        // one host of its address, whatever its pick.
        let older = [("a".to_owned(), addr(2), None, true)];
        let fresh = SharedHealth::new(&config);
        fresh.seed(&config, &older);
        assert!(fresh.is_healthy(0, 0), "2: the one host of that address");
    }

    fn http_head_done(b: &[u8]) -> bool {
        b.windows(4).any(|w| w == b"\r\n\r\n")
    }

    fn http(path: &str, statuses: &[(u16, u16)]) -> HealthProbe {
        HealthProbe::Http {
            path: path.into(),
            host: None,
            expected_statuses: statuses.to_vec(),
        }
    }

    #[tokio::test]
    async fn tcp_probe_passes_on_connect_and_fails_on_refusal() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        assert!(run_probe(&TokioNet::default(), &HealthProbe::Tcp, "c", addr, None).await);
        drop(l);
        assert!(!run_probe(&TokioNet::default(), &HealthProbe::Tcp, "c", addr, None).await);
    }

    #[tokio::test]
    async fn http_probe_sends_a_get_and_checks_the_status_range() {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let addr = serve_once(
            move |req| {
                let _ = tx.send(String::from_utf8_lossy(req).into_owned());
                b"HTTP/1.1 204 No Content\r\n\r\n".to_vec()
            },
            http_head_done,
        )
        .await;
        assert!(
            run_probe(
                &TokioNet::default(),
                &http("/healthz", &[(200, 299)]),
                "app",
                addr,
                None
            )
            .await
        );
        let req = rx.await.unwrap();
        assert!(req.starts_with("GET /healthz HTTP/1.1\r\n"), "{req}");
        assert!(req.contains("host: app\r\n"), "{req}");
        assert!(req.contains("connection: close\r\n"), "{req}");

        let addr = serve_once(
            |_| b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n".to_vec(),
            http_head_done,
        )
        .await;
        assert!(
            !run_probe(
                &TokioNet::default(),
                &http("/", &[(200, 299)]),
                "app",
                addr,
                None
            )
            .await
        );
        let addr = serve_once(
            |_| b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n".to_vec(),
            http_head_done,
        )
        .await;
        assert!(
            run_probe(
                &TokioNet::default(),
                &http("/", &[(200, 299), (503, 503)]),
                "app",
                addr,
                None
            )
            .await
        );
        // Garbage and an early close fail.
        let addr = serve_once(|_| b"SSH-2.0-OpenSSH\r\n\r\n".to_vec(), http_head_done).await;
        assert!(
            !run_probe(
                &TokioNet::default(),
                &http("/", &[(200, 299)]),
                "app",
                addr,
                None
            )
            .await
        );
        let addr = serve_once(|_| Vec::new(), http_head_done).await;
        assert!(
            !run_probe(
                &TokioNet::default(),
                &http("/", &[(200, 299)]),
                "app",
                addr,
                None
            )
            .await
        );
    }

    fn bolt_frame_done(b: &[u8]) -> bool {
        matches!(bolt::decode(b, MAX_PROBE_RESPONSE), Ok(Some(_)))
    }

    #[tokio::test]
    async fn bolt_probe_sends_a_heartbeat_and_wants_status_0() {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let addr = serve_once(
            move |req| {
                let frame = bolt::decode(req, MAX_PROBE_RESPONSE).unwrap().unwrap();
                let _ = tx.send((frame.is_heartbeat(), frame.request_id));
                let mut out = Vec::new();
                bolt::encode_heartbeat_reply(&mut out, &frame);
                out
            },
            bolt_frame_done,
        )
        .await;
        assert!(run_probe(&TokioNet::default(), &HealthProbe::Bolt, "rpc", addr, None).await);
        assert_eq!(rx.await.unwrap(), (true, 1));

        let addr = serve_once(
            |req| {
                let frame = bolt::decode(req, MAX_PROBE_RESPONSE).unwrap().unwrap();
                let mut out = Vec::new();
                bolt::encode_response(
                    &mut out,
                    frame.version,
                    frame.request_id,
                    frame.codec,
                    bolt::ResponseStatus::ServerException,
                    b"",
                    &[],
                    b"",
                )
                .unwrap();
                out
            },
            bolt_frame_done,
        )
        .await;
        assert!(!run_probe(&TokioNet::default(), &HealthProbe::Bolt, "rpc", addr, None).await);
    }

    /// What an h2c server got from one gRPC probe: (authority, path, headers, body).
    type Got = (String, String, http::HeaderMap, Vec<u8>);

    /// A one-shot h2c server: answers the first request with `headers` (trailers-only when
    /// `body` is `None`), then `body` and `trailers`.
    async fn h2_serve_once(
        status: u16,
        headers: &'static [(&'static str, &'static str)],
        body: Option<Vec<u8>>,
        trailers: &'static [(&'static str, &'static str)],
    ) -> (std::net::SocketAddr, tokio::sync::oneshot::Receiver<Got>) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let (s, _) = l.accept().await.unwrap();
            let mut conn = h2::server::handshake(s).await.unwrap();
            let (req, mut respond) = conn.accept().await.unwrap().unwrap();
            let served = async move {
                let (head, mut recv) = req.into_parts();
                let mut got = Vec::new();
                while let Some(chunk) = recv.data().await {
                    got.extend_from_slice(&chunk.unwrap());
                }
                let _ = tx.send((
                    head.uri
                        .authority()
                        .map(ToString::to_string)
                        .unwrap_or_default(),
                    head.uri.path().to_owned(),
                    head.headers,
                    got,
                ));
                let mut response = http::Response::builder().status(status);
                for (k, v) in headers {
                    response = response.header(*k, *v);
                }
                let mut send = respond
                    .send_response(response.body(()).unwrap(), body.is_none())
                    .unwrap();
                if let Some(body) = body {
                    send.send_data(bytes::Bytes::from(body), false).unwrap();
                    let mut t = http::HeaderMap::new();
                    for (k, v) in trailers {
                        t.insert(*k, v.parse().unwrap());
                    }
                    send.send_trailers(t).unwrap();
                }
            };
            tokio::join!(served, async { while conn.accept().await.is_some() {} });
        });
        (addr, rx)
    }

    fn grpc(service: &str, authority: Option<&str>) -> HealthProbe {
        HealthProbe::Grpc {
            service_name: service.into(),
            authority: authority.map(Into::into),
        }
    }

    const GRPC: &[(&str, &str)] = &[("content-type", "application/grpc")];
    const OK: &[(&str, &str)] = &[("grpc-status", "0")];

    #[tokio::test]
    async fn grpc_probe_calls_health_check_and_wants_serving() {
        let net = TokioNet::default();
        // SERVING, with the service name and authority given.
        let (addr, got) = h2_serve_once(200, GRPC, Some(vec![0, 0, 0, 0, 2, 8, 1]), OK).await;
        assert!(
            run_probe(
                &net,
                &grpc("echo.Echo", Some("echo.internal")),
                "app",
                addr,
                None
            )
            .await
        );
        let (authority, path, headers, body) = got.await.unwrap();
        assert_eq!(authority, "echo.internal");
        assert_eq!(path, "/grpc.health.v1.Health/Check");
        assert_eq!(headers["content-type"], "application/grpc");
        assert_eq!(headers["te"], "trailers");
        let mut want = vec![0, 0, 0, 0, 11, 0x0a, 9];
        want.extend_from_slice(b"echo.Echo");
        assert_eq!(body, want);

        // The cluster's name is the default authority; one that cannot be an authority (an
        // Istio name) gives way to the host's address.
        let (addr, got) = h2_serve_once(200, GRPC, Some(vec![0, 0, 0, 0, 2, 8, 1]), OK).await;
        assert!(run_probe(&net, &grpc("", None), "app", addr, None).await);
        let (authority, _, _, body) = got.await.unwrap();
        assert_eq!(
            (authority.as_str(), body.as_slice()),
            ("app", &[0u8, 0, 0, 0, 0][..])
        );
        let (addr, got) = h2_serve_once(200, GRPC, Some(vec![0, 0, 0, 0, 2, 8, 1]), OK).await;
        assert!(run_probe(&net, &grpc("", None), "outbound|80||a.svc", addr, None).await);
        assert_eq!(got.await.unwrap().0, addr.to_string());

        // Failures: NOT_SERVING, a non-zero grpc-status in trailers or trailers-only, no
        // grpc-status, a non-gRPC content-type, a 503.
        let not_serving = Some(vec![0, 0, 0, 0, 2, 8, 2]);
        let serving = Some(vec![0, 0, 0, 0, 2, 8, 1]);
        for (status, headers, body, trailers) in [
            (200, GRPC, not_serving, OK),
            (200, GRPC, serving.clone(), &[("grpc-status", "14")][..]),
            (
                200,
                &[("content-type", "application/grpc"), ("grpc-status", "5")][..],
                None,
                &[][..],
            ),
            (200, GRPC, serving.clone(), &[][..]),
            (
                200,
                &[("content-type", "text/plain")][..],
                serving.clone(),
                OK,
            ),
            (503, GRPC, serving, OK),
        ] {
            let (addr, _got) = h2_serve_once(status, headers, body.clone(), trailers).await;
            assert!(
                !run_probe(&net, &grpc("", None), "app", addr, None).await,
                "{status} {headers:?} {body:?} {trailers:?}"
            );
        }

        // An HTTP/1.1 server is no gRPC server.
        let addr = serve_once(
            |_| b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n".to_vec(),
            |b| !b.is_empty(),
        )
        .await;
        assert!(!run_probe(&net, &grpc("", None), "app", addr, None).await);
    }

    /// Every authority the config accepts makes a request URI `http` takes (else the probe
    /// could never be sent).
    #[test]
    fn accepted_authorities_make_request_uris() {
        let samples = [
            "app",
            "app.ns.svc.cluster.local:8080",
            "10.0.0.1:80",
            "[::1]:80",
            "[2001:db8::1]",
            "a-b_c~d!e$f&g'h(i)j*k+l,m;n=o",
        ];
        for a in samples {
            assert!(grpc::is_authority(a), "{a}");
            let uri = format!("http://{a}{}", grpc::PATH);
            let uri = http::Uri::try_from(uri.as_str()).unwrap_or_else(|e| panic!("{a}: {e}"));
            assert_eq!(uri.authority().map(http::uri::Authority::as_str), Some(a));
        }
    }
}
