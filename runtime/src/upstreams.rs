//! The one connect path to an upstream host: every new data-path, probe and span-export
//! connection — an HTTP/1.1 or HTTP/2 request's (`http/upstream.rs`), a `tcp_proxy` session's
//! (`engine.rs`), a Bolt upstream's (`bolt.rs`), a health probe's (`health.rs`), a span
//! export's (`otlp.rs`) — is opened here. (The xDS management server's connection is the
//! control plane's own: `xds.rs`.)
//!
//! What this module owns:
//! - **How a host is reached**: the host's transport (the cluster's own `tls`, or its pick of
//!   `transport_socket_matches`) looked up in the generation's TLS contexts
//!   ([`crate::tls::Contexts::connector`]), failing closed ([`ConnectError::NoTransport`]:
//!   never plaintext instead); the TCP connect; TLS origination with the upstream's chain and
//!   identity verified — nothing is written to the host before the handshake succeeded.
//! - **The deadline**: the connect *and* the handshake within it ([`ConnectError::Timeout`]).
//!   Who set the deadline is the caller's business: an HTTP request's is its stream's next
//!   timer (the connect timeout or the route's, which caps it), and only the stream says which
//!   one fired — a route deadline during a connect is not a connect failure.
//! - **What went wrong**, typed ([`ConnectError`]): timeout, refused or reset, TLS by
//!   [`HandshakeOutcome`], no transport.
//! - **The shared counters**: with [`Upstreams::connect`], `upstream_cx_attempts` and
//!   the cluster's `upstream_cx_total` per attempt and `upstream_tls_fail` by reason;
//!   [`Upstreams::count_connect_failure`] for the connect-fail and connect-timeout counters
//!   (process, cluster, host), which each data-path caller bumps when it decides the attempt
//!   failed.
//!
//! - **The worker's upstream state** ([`Upstreams`], the engine's `upstreams`), behind its
//!   methods (its fields are private): its cluster states and balancers ([`ClusterRef`] per
//!   cluster, all in one `RefCell<Vec<ClusterState>>` borrowed for one statement at a time),
//!   outlier detection and applied availability per cluster ([`WorkerHealth`]), the process's
//!   shared health verdicts, the HTTP/1.1 keep-alive pool and the HTTP/2 connection pool.
//! - **Availability and outlier detection**: [`Upstreams::refresh_availability`] before a
//!   pick (health × ejection × panic threshold into the cluster state, recomputed only when a
//!   verdict generation or an ejection changed), [`Upstreams::report_upstream_result`] after a
//!   request or session (fed to the worker's outlier detector; its ejections are logged and
//!   counted here).
//! - **The worker's network handle and counters**: one of each per engine, held here; the
//!   engine reads them through it ([`Upstreams::net`], [`Upstreams::stats`]). The TLS
//!   contexts stay with the engine (one handle for the listeners' acceptors and the clusters'
//!   connectors, rotated together); the connect takes them as an argument.
//!
//! Invariants: every per-cluster vector (`clusters`, `health`, `cluster_names`, the pools'
//! slots) has one entry per cluster of the generation's config, in config order; a
//! `WorkerHealth`'s per-host vectors have one entry per host slot of its cluster; the
//! availability a cluster state holds is the one its `WorkerHealth` last applied (changed
//! only by `refresh_availability_at`).
//!
//! What stays with each caller: which of those counters it bumps beyond the attempt (health
//! probes count `health_check_*` instead, span exports nothing), whether it reports to outlier
//! detection (data-path connects do; health checks and span exports do not), and what a
//! connected stream becomes (a pooled HTTP/1.1 connection, an HTTP/2 handshake, a relay, a
//! probe).

use std::io;
use std::net::SocketAddr;

use sluice_core::cluster::HostId;
use sluice_core::host::Transport;
use tokio::time::Instant as TokioInstant;

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;

use sluice_core::cluster::{ClusterState, HostRef};
use sluice_core::config::Config;
use sluice_core::health::{OutlierDetector, OutlierEvent, UpstreamResult};
use tracing::{info, warn};

use crate::h2_upstream::H2Pool;
use crate::health::SharedHealth;
use crate::http::UpstreamConn;
use crate::net::Network;
use crate::now;
use crate::pool::Pool;
use crate::stats::{WorkerStats, bump, gauge_add};
use crate::tls::{HandshakeOutcome, MaybeTls, NoTransport, UpstreamConnector, WorkerTls};

/// One worker's upstream side: its clusters' state, their health, its connection pools and
/// the connect path (see the module doc). Owned by the engine of one config generation; the
/// engine reaches the network handle and the worker's counters through it
/// ([`Upstreams::net`], [`Upstreams::stats`]): one handle of each per engine.
pub(crate) struct Upstreams<N: Network> {
    /// The worker's network: upstream connections open through it (marked with the config's
    /// `upstream_mark`), and the engine's listeners accept through it.
    net: N,
    /// The worker's counters (the engine's too).
    stats: Arc<WorkerStats>,
    /// Which worker this is, for logs.
    worker: usize,
    /// Per cluster: its name, for logs.
    cluster_names: Vec<String>,
    /// Per cluster: a handle on this worker's state of it (all of them live in `all_clusters`).
    clusters: Vec<ClusterRef>,
    /// This worker's cluster states, in config order (the Bolt proxy takes them as a slice).
    all_clusters: Rc<RefCell<Vec<ClusterState>>>,
    /// Per cluster: this worker's outlier detector and applied availability.
    health: Vec<RefCell<WorkerHealth>>,
    /// Active health-check verdicts, shared by the process's workers.
    shared_health: Arc<SharedHealth>,
    /// This worker's idle upstream HTTP connections.
    pool: Pool<UpstreamConn<MaybeTls<N::Stream>>>,
    /// The worker's HTTP/2 upstream connections (`protocol: http2` clusters).
    h2_pool: H2Pool,
}

/// Why a connection to an upstream host could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The deadline passed before the connect (and, to a TLS host, the handshake) was done.
    #[error("connect timed out")]
    Timeout,
    /// The TCP connect failed: refused, reset, unreachable.
    #[error("connect failed: {0}")]
    Connect(#[source] io::Error),
    /// The TLS handshake failed (the upstream's chain or identity did not verify, the peer
    /// closed, no protocol in common…); nothing was written to the host.
    #[error("TLS handshake failed ({}): {error}", outcome.as_str())]
    Tls {
        /// What the failure means, for `upstream_tls_fail`.
        outcome: HandshakeOutcome,
        /// rustls' error, as tokio-rustls reports it.
        #[source]
        error: io::Error,
    },
    /// The host's transport is not one the config has: refused, never plaintext.
    #[error(transparent)]
    NoTransport(#[from] NoTransport),
}

impl ConnectError {
    /// Whether the deadline passed (counted as a connect timeout), rather than a failure.
    #[must_use]
    pub fn is_timeout(&self) -> bool {
        matches!(self, ConnectError::Timeout)
    }

    /// The L4 session's view of it: a timeout, or a failure (refused).
    #[must_use]
    pub fn session_failure(&self) -> sluice_core::tcp_proxy::ConnectFailure {
        if self.is_timeout() {
            sluice_core::tcp_proxy::ConnectFailure::Timeout
        } else {
            sluice_core::tcp_proxy::ConnectFailure::Refused
        }
    }
}

/// Which ALPN protocols a TLS connect offers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Offer {
    /// The cluster's `alpn`.
    Cluster,
    /// `h2` alone (the gRPC health probe, whatever the cluster's protocol).
    H2,
}

/// Connects to `address` and, with `tls`, originates TLS over it (verified), all before
/// `deadline` (`None`: the caller bounds it). The building block of
/// [`Upstreams::connect`], for callers that found the host's connector themselves
/// (health probes, span exports).
pub async fn connect_via<N: Network>(
    net: &N,
    tls: Option<&UpstreamConnector>,
    address: SocketAddr,
    offer: Offer,
    deadline: Option<TokioInstant>,
) -> Result<MaybeTls<N::Stream>, ConnectError> {
    let attempt = async {
        let socket = net.connect(address).await.map_err(ConnectError::Connect)?;
        let Some(c) = tls else {
            return Ok(MaybeTls::Plain(socket));
        };
        let handshake = match offer {
            Offer::Cluster => c.connect(address, socket).await,
            Offer::H2 => c.connect_h2(address, socket).await,
        };
        match handshake {
            Ok(tls) => Ok(MaybeTls::Tls(Box::new(tls))),
            Err(error) => Err(ConnectError::Tls {
                outcome: HandshakeOutcome::of_error(&error),
                error,
            }),
        }
    };
    match deadline {
        // The attempt is polled before the timer (as a `biased` select would): a connect
        // that is done when the deadline passes counts as done.
        Some(d) => tokio::time::timeout_at(d, attempt)
            .await
            .unwrap_or(Err(ConnectError::Timeout)),
        None => attempt.await,
    }
}

impl<N: Network> Upstreams<N> {
    /// The upstream side of worker `worker` for `config`: `net` connects, `stats` counts.
    /// Its cluster states and their health are built here; `all_clusters` may already hold
    /// hosts (a DNS cluster's answers inherited by a reload: see
    /// [`Upstreams::hosts_replaced`]).
    pub(crate) fn new(
        net: N,
        stats: Arc<WorkerStats>,
        config: &Config,
        worker: usize,
        all_clusters: Rc<RefCell<Vec<ClusterState>>>,
        shared_health: Arc<SharedHealth>,
    ) -> Self {
        let clusters = (0..config.clusters.len())
            .map(|index| ClusterRef {
                all: all_clusters.clone(),
                index,
            })
            .collect();
        let slots = || {
            config
                .clusters
                .iter()
                .map(|c| (c.host_slots(), c.upstream_idle_timeout))
        };
        Upstreams {
            pool: Pool::new(slots(), stats.clone()),
            h2_pool: H2Pool::new(slots()),
            net,
            stats,
            worker,
            cluster_names: config.clusters.iter().map(|c| c.name.clone()).collect(),
            clusters,
            all_clusters,
            health: WorkerHealth::new(config),
            shared_health,
        }
    }

    /// The worker's network handle.
    #[inline]
    pub(crate) fn net(&self) -> &N {
        &self.net
    }

    /// The worker's counters.
    #[inline]
    pub(crate) fn stats(&self) -> &Arc<WorkerStats> {
        &self.stats
    }

    /// A handle on this worker's state of cluster `ci`.
    #[inline]
    pub(crate) fn cluster(&self, ci: usize) -> &ClusterRef {
        &self.clusters[ci]
    }

    /// How many clusters there are.
    pub(crate) fn cluster_count(&self) -> usize {
        self.clusters.len()
    }

    /// This worker's cluster states, in config order.
    pub(crate) fn all_clusters(&self) -> std::cell::Ref<'_, Vec<ClusterState>> {
        self.all_clusters.borrow()
    }

    /// This worker's cluster states, in config order, to change (the Bolt proxy's
    /// balancing and stale-connection sweeps).
    pub(crate) fn all_clusters_mut(&self) -> std::cell::RefMut<'_, Vec<ClusterState>> {
        self.all_clusters.borrow_mut()
    }

    /// This worker's outlier detector and applied availability of cluster `ci`.
    #[inline]
    pub(crate) fn worker_health(&self, ci: usize) -> &RefCell<WorkerHealth> {
        &self.health[ci]
    }

    /// The active health-check verdicts (and DNS answers) shared by the process's workers.
    #[inline]
    pub(crate) fn shared_health(&self) -> &Arc<SharedHealth> {
        &self.shared_health
    }

    /// This worker's idle upstream HTTP/1.1 connections.
    #[inline]
    pub(crate) fn pool(&self) -> &Pool<UpstreamConn<MaybeTls<N::Stream>>> {
        &self.pool
    }

    /// This worker's HTTP/2 upstream connections.
    #[inline]
    pub(crate) fn h2_pool(&self) -> &H2Pool {
        &self.h2_pool
    }

    /// DNS (or an in-place endpoint update): the hosts `ids` of cluster `ci` changed, and it
    /// has `live_hosts` now; see [`WorkerHealth::hosts_replaced`].
    pub(crate) fn hosts_replaced(&self, ci: usize, ids: &[HostRef], live_hosts: usize) {
        self.health[ci].borrow_mut().hosts_replaced(ids, live_hosts);
    }

    /// A new connection to a host of cluster `ci` at `address`, reached with `transport` (the
    /// host's, read from its slot where it was picked; its connector from `tls`, the engine's
    /// contexts), within `deadline`: see the module doc.
    /// Counts the attempt (`upstream_cx_attempts`, the cluster's `upstream_cx_total`) and a
    /// failed handshake (`upstream_tls_fail` by reason); whether the attempt failed — and
    /// what that means for counters and outlier detection — is the caller's to say
    /// ([`Upstreams::count_connect_failure`]).
    pub(crate) async fn connect(
        &self,
        tls: &WorkerTls,
        ci: usize,
        transport: Transport,
        address: SocketAddr,
        deadline: Option<TokioInstant>,
    ) -> Result<MaybeTls<N::Stream>, ConnectError> {
        bump(&self.stats.upstream_cx_attempts, 1);
        let cstats = self.stats.cluster(ci);
        if let Some(c) = cstats {
            bump(&c.upstream_cx_total, 1);
        }
        let contexts = tls.current();
        let result = match contexts.connector(ci, transport) {
            Ok(tls) => connect_via(&self.net, tls, address, Offer::Cluster, deadline).await,
            Err(e) => Err(e.into()),
        };
        if let (Err(ConnectError::Tls { outcome, .. }), Some(c)) = (&result, cstats) {
            bump(&c.upstream_tls_fail[*outcome as usize], 1);
        }
        result
    }

    /// Counts a failed connect to `host` of cluster `ci`: `upstream_cx_connect_timeout` when
    /// it timed out, else `upstream_cx_connect_fail` (process and cluster), and the host's
    /// `cx_connect_fail` either way.
    pub(crate) fn count_connect_failure(&self, ci: usize, host: HostId, timed_out: bool) {
        bump(
            if timed_out {
                &self.stats.upstream_cx_connect_timeout
            } else {
                &self.stats.upstream_cx_connect_fail
            },
            1,
        );
        if let Some(c) = self.stats.cluster(ci) {
            bump(
                if timed_out {
                    &c.upstream_cx_connect_timeout
                } else {
                    &c.upstream_cx_connect_fail
                },
                1,
            );
        }
        if let Some(h) = self.stats.host(ci, host.index()) {
            bump(&h.cx_connect_fail, 1);
        }
    }
}

impl<N: Network> Upstreams<N> {
    /// Brings cluster `ci`'s availability up to date before a pick: cheap when nothing changed
    /// (one relaxed load, two compares).
    pub(crate) fn refresh_availability(&self, ci: usize) {
        self.refresh_availability_at(ci, now());
    }

    /// [`Upstreams::refresh_availability`] with the time already read.
    pub(crate) fn refresh_availability_at(&self, ci: usize, now: sluice_core::Instant) {
        let mut wh = self.health[ci].borrow_mut();
        let generation = self.shared_health.generation(ci);
        let mut expired = false;
        if let Some(o) = wh.outlier.as_mut()
            && o.poll_timeout().is_some_and(|t| t <= now)
        {
            o.handle_timeout(now);
            expired = true;
        }
        if expired {
            self.drain_outlier_events(ci, &mut wh);
        }
        if generation == wh.applied_generation && !wh.dirty {
            return;
        }
        let wh = &mut *wh;
        wh.applied_generation = generation;
        wh.dirty = false;
        {
            let cluster = self.clusters[ci].borrow();
            for (i, h) in wh.healthy.iter_mut().enumerate() {
                let host = cluster.host_ref(HostId(i as u32));
                *h = self.shared_health.is_healthy_for(ci, host);
            }
        }
        if let Some(o) = &wh.outlier {
            for (i, e) in wh.ejected.iter_mut().enumerate() {
                *e = o.is_ejected(HostId(i as u32));
            }
        }
        // Usable: healthy and not ejected. The cluster state turns it into availability, level
        // by level (a free slot never; a level in panic: every present host), and the loads.
        for ((a, &h), &e) in wh.available.iter_mut().zip(&wh.healthy).zip(&wh.ejected) {
            *a = h && !e;
        }
        let panic = self.clusters[ci]
            .borrow_mut()
            .apply_health(&wh.available, wh.panic_threshold_percent);
        if panic != wh.panic {
            if panic {
                warn!(worker = self.worker, cluster = %self.cluster_names[ci],
                    "too few available hosts: panic mode, balancing over every host");
            } else {
                info!(worker = self.worker, cluster = %self.cluster_names[ci], "left panic mode");
            }
            if let Some(c) = self.stats.cluster(ci) {
                gauge_add(&c.lb_panic, panic);
                if panic {
                    bump(&c.lb_panic_total, 1);
                }
            }
        }
        wh.panic = panic;
    }

    /// Host `host` of cluster `ci`'s address, for a log line ("?" if the cluster state is
    /// borrowed right now: this may run inside a pick).
    fn host_address(&self, ci: usize, host: HostId) -> String {
        match self.all_clusters.try_borrow() {
            Ok(all) => all[ci].host(host).address.to_string(),
            Err(_) => "?".to_owned(),
        }
    }

    /// Feeds one request (or session) result on `host` (as it was picked) to the worker's
    /// outlier detector; the result of a host whose slot has another host by now is dropped
    /// there (it must not count for the new one).
    pub(crate) fn report_upstream_result(&self, ci: usize, host: HostRef, result: UpstreamResult) {
        let mut wh = self.health[ci].borrow_mut();
        let Some(o) = wh.outlier.as_mut() else {
            return;
        };
        if !o.handle_result_for(now(), host, result) && !o.is_ejected(host.id) {
            tracing::debug!(cluster = %self.cluster_names[ci], ?host, ?result,
                "outlier detection: result of a host no longer in its slot, dropped");
        }
        self.drain_outlier_events(ci, &mut wh);
    }

    fn drain_outlier_events(&self, ci: usize, wh: &mut WorkerHealth) {
        let Some(o) = wh.outlier.as_mut() else {
            return;
        };
        while let Some(event) = o.poll_event() {
            wh.dirty = true;
            let (host, ejected) = match event {
                OutlierEvent::Ejected { host, .. } => (host, true),
                OutlierEvent::Unejected(host) => (host, false),
                OutlierEvent::EjectionSkipped(host) => {
                    warn!(worker = self.worker, cluster = %self.cluster_names[ci],
                        host = %self.host_address(ci, host),
                        "outlier not ejected: max_ejection_percent reached");
                    if let Some(c) = self.stats.cluster(ci) {
                        bump(&c.outlier_ejections_overflow, 1);
                    }
                    continue;
                }
            };
            let address = self.host_address(ci, host);
            if ejected {
                warn!(worker = self.worker, cluster = %self.cluster_names[ci], host = %address, ?event, "host ejected");
                if let Some(c) = self.stats.cluster(ci) {
                    bump(&c.outlier_ejections_total, 1);
                }
            } else {
                info!(worker = self.worker, cluster = %self.cluster_names[ci], host = %address, "host readmitted after ejection");
            }
            if let Some(h) = self.stats.host(ci, host.index()) {
                gauge_add(&h.ejected, ejected);
            }
        }
    }
}

/// One cluster's state in a worker: a handle into the worker's `Vec<ClusterState>` (borrowed
/// for one statement at a time, like every `RefCell` here).
#[derive(Clone)]
pub(crate) struct ClusterRef {
    all: Rc<RefCell<Vec<ClusterState>>>,
    index: usize,
}

impl ClusterRef {
    /// The cluster's state, mutably (panics if any cluster is borrowed: a bug).
    pub(crate) fn borrow_mut(&self) -> std::cell::RefMut<'_, ClusterState> {
        std::cell::RefMut::map(self.all.borrow_mut(), |all| &mut all[self.index])
    }

    /// The cluster's state.
    pub(crate) fn borrow(&self) -> std::cell::Ref<'_, ClusterState> {
        std::cell::Ref::map(self.all.borrow(), |all| &all[self.index])
    }

    /// The cluster's state, mutably, unless something holds a borrow.
    pub(crate) fn try_borrow_mut(&self) -> Option<std::cell::RefMut<'_, ClusterState>> {
        let all = self.all.try_borrow_mut().ok()?;
        Some(std::cell::RefMut::map(all, |all| &mut all[self.index]))
    }
}

/// One worker's view of one cluster's health: its outlier detector and the availability it
/// last applied to its `ClusterState`.
#[derive(Debug)]
pub(crate) struct WorkerHealth {
    applied_generation: u64,
    /// Force a recompute on the next refresh (an ejection changed).
    dirty: bool,
    outlier: Option<OutlierDetector>,
    panic_threshold_percent: u32,
    healthy: Vec<bool>,
    ejected: Vec<bool>,
    /// Per host: healthy and not ejected (what the cluster state is given).
    available: Vec<bool>,
    /// Some priority level of the cluster is in panic.
    panic: bool,
}

impl WorkerHealth {
    pub(crate) fn new(config: &Config) -> Vec<RefCell<WorkerHealth>> {
        config
            .clusters
            .iter()
            .map(|c| {
                let n = c.host_slots();
                // Free slots (a DNS cluster's, a static one's spare ids) never count toward the
                // panic threshold: the cluster state knows which slots hold a host.
                RefCell::new(WorkerHealth {
                    applied_generation: u64::MAX,
                    dirty: true,
                    outlier: c.outlier_detection.map(|s| {
                        let mut o = OutlierDetector::new(n, s);
                        if c.kind.is_dns() {
                            // No host until the first answer.
                            o.set_live_hosts(0);
                        } else if n > c.hosts.len() {
                            // Spare ids hold no host until an update in place fills them.
                            o.set_live_hosts(c.hosts.len());
                        }
                        o
                    }),
                    panic_threshold_percent: c.panic_threshold_percent,
                    healthy: vec![true; n],
                    ejected: vec![false; n],
                    available: vec![true; n],
                    panic: false,
                })
            })
            .collect()
    }
}

impl WorkerHealth {
    /// Whether this worker's outlier detector has host `id` ejected.
    #[cfg(test)]
    pub(crate) fn is_ejected(&self, id: HostId) -> bool {
        self.outlier.as_ref().is_some_and(|o| o.is_ejected(id))
    }

    /// DNS: ids now naming another host (or none), with their new epochs. Their outlier
    /// state starts over (an ejection was the old address's; results of the old epoch still
    /// arriving are dropped) and availability is recomputed before the next pick.
    pub(crate) fn hosts_replaced(&mut self, ids: &[HostRef], live_hosts: usize) {
        self.dirty = true;
        if let Some(o) = self.outlier.as_mut() {
            for &id in ids {
                o.replace_host(id);
            }
            o.set_live_hosts(live_hosts);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::rc::Rc;
    use std::sync::Arc;
    use std::sync::atomic::Ordering::Relaxed;
    use std::time::Duration;

    use sluice_core::config::Config;

    use super::*;
    use crate::engine::Engine;
    use crate::net::TokioNet;
    use crate::stats::WorkerStats;
    use crate::test_support::{bound, on_local_runtime};

    const PLAIN: usize = 0;
    const TLS: usize = 1;
    const TLS_OTHER_NAME: usize = 2;

    /// A self-signed certificate for `svc.test`: its PEM, and a rustls server config that
    /// presents it.
    fn server_identity() -> (String, Arc<rustls::ServerConfig>) {
        let cert = rcgen::generate_simple_self_signed(vec!["svc.test".to_owned()]).unwrap();
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let key =
            rustls::pki_types::PrivateKeyDer::try_from(cert.signing_key.serialize_der()).unwrap();
        let server = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert.cert.der().clone()], key)
            .unwrap();
        (cert.cert.pem(), Arc::new(server))
    }

    /// An engine (not running) whose clusters are `plain` (plaintext), `tls` (`sni: svc.test`,
    /// trusting `ca`) and `tls_other_name` (the same CA, `sni: other.test`), each with a 200 ms
    /// connect timeout.
    fn engine(ca: &str) -> Rc<Engine<TokioNet>> {
        let ca = format!("{{ inline: {ca:?} }}");
        let yaml = format!(
            "listeners:\n\
             \x20 - {{ name: l, address: 127.0.0.1:1, tcp_proxy: {{ cluster: plain }} }}\n\
             clusters:\n\
             \x20 - {{ name: plain, connect_timeout: 200ms, hosts: [ {{ address: 127.0.0.1:9 }} ] }}\n\
             \x20 - {{ name: tls, connect_timeout: 200ms, hosts: [ {{ address: 127.0.0.1:9 }} ], \
                      tls: {{ sni: svc.test, ca: {ca} }} }}\n\
             \x20 - {{ name: tls_other_name, connect_timeout: 200ms, hosts: [ {{ address: 127.0.0.1:9 }} ], \
                      tls: {{ sni: other.test, ca: {ca} }} }}\n"
        );
        let config = Arc::new(Config::from_yaml(&yaml).unwrap_or_else(|e| panic!("{e}")));
        let stats = Arc::new(WorkerStats::new(&config));
        Engine::new(TokioNet::default(), config, 0, 1, stats).unwrap()
    }

    /// A TLS upstream on a fresh port presenting `server`'s certificate to each connection.
    fn tls_upstream(server: Arc<rustls::ServerConfig>) -> SocketAddr {
        let (l, at) = bound();
        let acceptor = tokio_rustls::TlsAcceptor::from(server);
        tokio::task::spawn_local(async move {
            loop {
                let (s, _) = l.accept().await.unwrap();
                let acceptor = acceptor.clone();
                tokio::task::spawn_local(async move {
                    let _ = acceptor.accept(s).await;
                });
            }
        });
        at
    }

    fn deadline() -> Option<TokioInstant> {
        Some(TokioInstant::now() + Duration::from_millis(200))
    }

    fn tls_fail(engine: &Engine<TokioNet>, ci: usize, outcome: HandshakeOutcome) -> u64 {
        engine.stats().cluster(ci).unwrap().upstream_tls_fail[outcome as usize].load(Relaxed)
    }

    fn tls_fail_total(engine: &Engine<TokioNet>, ci: usize) -> u64 {
        let c = engine.stats().cluster(ci).unwrap();
        c.upstream_tls_fail.iter().map(|n| n.load(Relaxed)).sum()
    }

    /// Counts a failed attempt the way the data-path callers do.
    fn count(engine: &Engine<TokioNet>, ci: usize, e: &ConnectError) {
        engine
            .upstreams
            .count_connect_failure(ci, HostId(0), e.is_timeout());
    }

    /// (connect fails, connect timeouts) of cluster `ci`, and its host 0's `cx_connect_fail`.
    fn failures(engine: &Engine<TokioNet>, ci: usize) -> (u64, u64, u64) {
        let c = engine.stats().cluster(ci).unwrap();
        (
            c.upstream_cx_connect_fail.load(Relaxed),
            c.upstream_cx_connect_timeout.load(Relaxed),
            engine
                .stats()
                .host(ci, 0)
                .unwrap()
                .cx_connect_fail
                .load(Relaxed),
        )
    }

    #[test]
    fn a_refused_connect_is_a_connect_failure_not_a_timeout() {
        on_local_runtime(async {
            let (ca, _) = server_identity();
            let engine = engine(&ca);
            let (l, dead) = bound();
            drop(l);
            let e = engine
                .upstreams
                .connect(&engine.tls, PLAIN, None, dead, deadline())
                .await
                .err()
                .expect("nothing listens: the connect must fail");
            assert!(matches!(e, ConnectError::Connect(_)), "{e:?}");
            assert_eq!(
                e.session_failure(),
                sluice_core::tcp_proxy::ConnectFailure::Refused
            );
            assert_eq!(engine.stats().upstream_cx_attempts.load(Relaxed), 1);
            let c = engine.stats().cluster(PLAIN).unwrap();
            assert_eq!(c.upstream_cx_total.load(Relaxed), 1);
            count(&engine, PLAIN, &e);
            assert_eq!(failures(&engine, PLAIN), (1, 0, 1));
            assert_eq!(engine.stats().upstream_cx_connect_fail.load(Relaxed), 1);
            assert_eq!(engine.stats().upstream_cx_connect_timeout.load(Relaxed), 0);
            assert_eq!(tls_fail_total(&engine, PLAIN), 0);
        });
    }

    /// The deadline covers the handshake too: an upstream that accepts and never answers the
    /// ClientHello times the connect out (not a TLS failure).
    #[test]
    fn a_handshake_still_going_at_the_deadline_is_a_connect_timeout() {
        on_local_runtime(async {
            let (ca, _) = server_identity();
            let engine = engine(&ca);
            let (l, silent) = bound();
            let started = TokioInstant::now();
            // Bounded here too, so that a connect ignoring its deadline fails the test.
            let connect = engine
                .upstreams
                .connect(&engine.tls, TLS, None, silent, deadline());
            let e = tokio::time::timeout(Duration::from_secs(5), connect)
                .await
                .expect("the connect ignored its deadline")
                .err()
                .expect("the upstream never answers: the connect must time out");
            drop(l);
            assert!(e.is_timeout(), "{e:?}");
            assert!(started.elapsed() >= Duration::from_millis(200));
            assert_eq!(
                e.session_failure(),
                sluice_core::tcp_proxy::ConnectFailure::Timeout
            );
            count(&engine, TLS, &e);
            assert_eq!(failures(&engine, TLS), (0, 1, 1));
            assert_eq!(engine.stats().upstream_cx_connect_timeout.load(Relaxed), 1);
            assert_eq!(tls_fail_total(&engine, TLS), 0);
        });
    }

    #[test]
    fn a_certificate_of_another_ca_is_a_tls_failure_counted_as_unknown_ca() {
        on_local_runtime(async {
            let (other_ca, _) = server_identity();
            let (_, server) = server_identity();
            let engine = engine(&other_ca);
            let at = tls_upstream(server);
            let e = engine
                .upstreams
                .connect(&engine.tls, TLS, None, at, deadline())
                .await
                .err()
                .expect("an upstream the CA did not sign must not be connected");
            assert!(
                matches!(
                    e,
                    ConnectError::Tls {
                        outcome: HandshakeOutcome::UnknownCa,
                        ..
                    }
                ),
                "{e:?}"
            );
            assert_eq!(tls_fail(&engine, TLS, HandshakeOutcome::UnknownCa), 1);
            assert_eq!(tls_fail_total(&engine, TLS), 1);
            count(&engine, TLS, &e);
            assert_eq!(failures(&engine, TLS), (1, 0, 1));
        });
    }

    #[test]
    fn a_certificate_for_another_name_is_a_tls_failure_counted_as_bad_san() {
        on_local_runtime(async {
            let (ca, server) = server_identity();
            let engine = engine(&ca);
            let at = tls_upstream(server);
            // The `tls` cluster (sni svc.test) verifies it: the handshake succeeds.
            let ok = engine
                .upstreams
                .connect(&engine.tls, TLS, None, at, deadline())
                .await;
            assert!(matches!(ok, Ok(MaybeTls::Tls(_))), "{:?}", ok.err());
            let e = engine
                .upstreams
                .connect(&engine.tls, TLS_OTHER_NAME, None, at, deadline())
                .await
                .err()
                .expect("a certificate for svc.test must not pass for other.test");
            assert!(
                matches!(
                    e,
                    ConnectError::Tls {
                        outcome: HandshakeOutcome::BadSan,
                        ..
                    }
                ),
                "{e:?}"
            );
            assert_eq!(
                tls_fail(&engine, TLS_OTHER_NAME, HandshakeOutcome::BadSan),
                1
            );
            assert_eq!(tls_fail_total(&engine, TLS_OTHER_NAME), 1);
            assert_eq!(tls_fail_total(&engine, TLS), 0);
            assert_eq!(engine.stats().upstream_cx_attempts.load(Relaxed), 2);
        });
    }

    #[test]
    fn a_plaintext_cluster_connects_in_plaintext() {
        on_local_runtime(async {
            let (ca, _) = server_identity();
            let engine = engine(&ca);
            let (_l, at) = bound();
            let up = engine
                .upstreams
                .connect(&engine.tls, PLAIN, None, at, deadline())
                .await;
            assert!(matches!(up, Ok(MaybeTls::Plain(_))), "{:?}", up.err());
            assert_eq!(failures(&engine, PLAIN), (0, 0, 0));
        });
    }
}
