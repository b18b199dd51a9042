//! One worker's proxy engine: accept loops, sessions, drain.
//!
//! The engine is generic over [`Network`], so the same code serves real sockets (one engine
//! per pinned worker thread) and turmoil's simulated hosts. It runs inside a tokio `LocalSet`:
//! its state (`ClusterState`s, RNG, buffer pool) is `!Send`, owned by the worker and never
//! locked.
//!
//! Lifecycle: [`Engine::run`] spawns an accept loop per listener and waits for `shutdown`;
//! then it stops accepting (listeners are dropped, so new connections go elsewhere — to a new
//! instance on an upgrade, or refused), lets open sessions finish for up to the config's
//! `drain_timeout`, tells the remaining sessions the drain timed out, and returns once every
//! session has closed. [`Engine::run_with_drain`] adds a second signal, `close_listeners`
//! (the admin API's `/drain_listeners`): the accept loops end and the listening sockets close,
//! while open sessions carry on until `shutdown`.
//!
//! Filter chains: a listener with `filter_chains` picks, per connection, the chain that serves
//! it (`pick_chain`: the destination port — the original destination's on a capture
//! listener — and, when a chain asks, a `MSG_PEEK` of the ClientHello, or of a plaintext
//! connection's first bytes for HTTP/1.x or h2c ([`sluice_core::detect`]), through
//! [`Network::peek`], each only on the ports its inspector covers, bounded by
//! `listener_filters_timeout` (zero: no limit); the choice is
//! [`sluice_core::filter_chain::select`]). Each chain is compiled like a listener of its own,
//! a *serving slot* after the listeners ([`Config::chain_slots`]): its router, access log and
//! TLS acceptor are kept at that index, and the session runs the listener code with it; its
//! counters are its listener's. A listener without chains peeks at nothing.
//!
//! Parts, each owned by the engine and holding one concern's state:
//! [`Lifecycle`] (accepting, listener hand-over, stopping, the drain deadline, the open session
//! count: the flags every accept loop and session watches, changed only through its methods),
//! [`Serving`] (per serving slot: its listener config, router, access logs and owning
//! listener) and [`Upstreams`] (cluster states, health, connection pools and the one connect
//! path: [`crate::upstreams`]; it also holds the worker's network handle and counters, which
//! the engine reads through it: [`Engine::net`], [`Engine::stats`]). What is left here
//! directly: the config, the TLS contexts, limits, buffers, the Bolt proxy and tracing.
//!
//! Counters: every session, request and upstream try is counted in the worker's own
//! [`WorkerStats`] (per listener, cluster and host when it has slots for them), with a relaxed
//! load and store per counter. A host's in-flight gauge mirrors the worker's `ClusterState`
//! (`publish_host_active` after each state-machine call that may change it).

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, SystemTime};

use sluice_core::cluster::{ClusterState, HostId};
use sluice_core::config::{ClusterKind, Config, ListenerConfig, ListenerFilter, TcpProxyConfig};
use sluice_core::detect::{HttpSniff, MAX_HTTP_SNIFF_BYTES, sniff_http};
use sluice_core::handoff::{Handoff as CaptureTarget, HandoffTable};
use sluice_core::health::{Resource, UpstreamResult};
use sluice_core::lb::request_hash;
use sluice_core::rng::Rng;
use sluice_core::tcp_proxy::{Action, CloseReason, SessionConfig, Side, TcpSession};
use sluice_core::tls::{
    ClientHelloError, DEFAULT_MAX_HELLO_BYTES, Peek, max_hello_wire_bytes, peek_client_hello,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tracing::{debug, info, warn};

use crate::access_log::{AccessLog, Entry};
use crate::downstream::{Alpn, Downstream};
use crate::health::SharedHealth;
use crate::http::BreakerUnit;
use crate::limits::{Overflow, ProcessLimits};
use crate::net::Network;
use crate::now;
use crate::relay::relay;
use crate::splice::AsTcpStream as _;
use crate::stats::{CaptureOutcome, ChainPeekRefusal, SniOutcome, WorkerStats, bump, gauge_add};
use crate::upstreams::Upstreams;

mod serving;
pub(crate) use serving::Serving;

mod lifecycle;
pub(crate) use lifecycle::Lifecycle;

/// One worker's engine. Create with [`Engine::new`], run with [`Engine::run`].
pub struct Engine<N: Network> {
    pub(crate) config: Arc<Config>,
    pub(crate) worker: usize,
    seed: u64,
    /// Clusters, their health, connection pools and the connect path; the worker's network
    /// handle and counters ([`Engine::net`], [`Engine::stats`]).
    pub(crate) upstreams: Upstreams<N>,
    pub(crate) rng: RefCell<Rng>,
    /// The worker's buffers: HTTP/1.1 connections' read and write buffers (held only while a
    /// request is in flight), HTTP/2 stream states, the L4 relay's buffers; trimmed by the
    /// periodic sweep.
    pub(crate) http_buffers: crate::bufpool::BufPool,
    /// The worker's empty splice pipes (a spliced session holds one only while bytes sit in
    /// it); trimmed by the periodic sweep.
    pub(crate) pipes: crate::splice::PipePool,
    /// Accepting, handing over, stopping, draining; the open session count.
    pub(crate) lifecycle: Lifecycle<N::Listener>,
    /// Per serving slot (listener, then filter chain): its config, router and access logs.
    pub(crate) serving: Serving,
    /// The TLS acceptors (per listener) and connectors (per cluster) of this config, shared
    /// with the other workers of the generation; `current()` for a connection (certificate
    /// files rotate under it).
    pub(crate) tls: crate::tls::WorkerTls,
    /// The Bolt proxy state, when a listener speaks Bolt.
    pub(crate) bolt: Option<crate::bolt::BoltWorker>,
    /// The active health checks this engine runs (worker 0), aborted when another engine takes
    /// over (a reload) so that two checkers never probe the same hosts.
    health_task: RefCell<Option<tokio::task::AbortHandle>>,
    /// Where draining Bolt connections go instead of closing (connection migration to the next
    /// generation or instance); set by whoever runs the engine.
    pub(crate) handoff: RefCell<Option<Rc<dyn Handoff<N::Stream>>>>,
    /// The process-wide caps (connections, Bolt partial frames), shared by every worker.
    pub(crate) limits: Arc<ProcessLimits>,
    /// Per listener: its connection count across workers (see [`ProcessLimits`]).
    listener_cx: Vec<Arc<AtomicU64>>,
    /// Accept errors not logged yet (at most one log line per second per worker).
    accept_errors_unlogged: Cell<u64>,
    accept_error_logged_at: Cell<Option<tokio::time::Instant>>,
    /// Which listener serves a connection captured by a `use_original_dst` listener.
    capture_handoff: HandoffTable,
    /// Trace propagation and span export, with `tracing`.
    pub(crate) tracer: Option<crate::otlp::Tracer>,
}

impl<N: Network> Engine<N> {
    /// The only engine of its process (the simulator's sidecars): it runs the active health
    /// checks itself and has the whole circuit-breaker limits. See [`Engine::new_worker`].
    pub fn new(
        net: N,
        config: Arc<Config>,
        worker: usize,
        seed: u64,
        stats: Arc<WorkerStats>,
    ) -> std::io::Result<Rc<Self>> {
        let shared = Arc::new(SharedHealth::new(&config));
        let limits = Arc::new(ProcessLimits::new(&config));
        Self::new_worker(net, config, worker, 1, seed, stats, shared, limits)
    }

    /// Worker `worker` of `workers` for `config` on `net`. `seed` seeds its RNG (balancing);
    /// `worker` names it in logs; worker 0 runs the active health checks, whose verdicts all
    /// workers read from `shared_health`; each worker gets its share of the circuit-breaker
    /// limits; `limits` are the process-wide caps all workers share. Fails when an access log
    /// file cannot be opened.
    #[allow(clippy::too_many_arguments)]
    pub fn new_worker(
        net: N,
        config: Arc<Config>,
        worker: usize,
        workers: usize,
        seed: u64,
        stats: Arc<WorkerStats>,
        shared_health: Arc<SharedHealth>,
        limits: Arc<ProcessLimits>,
    ) -> std::io::Result<Rc<Self>> {
        // Upstream sockets marked with this config's `upstream_mark`.
        let net = net.configured(&config);
        let all_clusters = Rc::new(RefCell::new(
            config
                .clusters
                .iter()
                .map(|c| ClusterState::for_worker(c, worker, workers))
                .collect::<Vec<_>>(),
        ));

        let upstreams = Upstreams::new(net, stats, &config, worker, all_clusters, shared_health);
        // DNS clusters start with the answers the generation has (a reload's unchanged ones
        // inherited theirs): hosts from the first request on, before `follow_dns` runs.
        for ci in 0..config.clusters.len() {
            if let Some(view) = upstreams.shared_health().dns.view(ci) {
                let live = view.slots.iter().flatten().count();
                let mut all = upstreams.all_clusters_mut();
                let changed = all[ci].update_hosts(&view.slots, &view.epochs);
                // The outlier detector numbers its hosts as the slots are numbered (a reload
                // inherits epochs past 0): results taken with those epochs count.
                let refs: Vec<_> = changed.iter().map(|&id| all[ci].host_ref(id)).collect();
                upstreams.hosts_replaced(ci, &refs, live);
            }
        }
        let serving = Serving::new(&config)?;
        let bolt = crate::bolt::BoltWorker::for_config(&config)?;
        let tls_contexts = crate::tls::WorkerTls::new(&config).map_err(std::io::Error::other)?;
        let config_listeners = config.listeners.len();
        let listener_cx = config
            .listeners
            .iter()
            .map(|l| limits.listener_counter(l.address))
            .collect();
        let capture_handoff = HandoffTable::new(
            config
                .listeners
                .iter()
                .map(|l| (l.address, !l.use_original_dst)),
        );
        let tracer = config.tracing.as_ref().map(crate::otlp::Tracer::new);
        Ok(Rc::new(Engine {
            config,
            worker,
            seed,
            upstreams,
            rng: RefCell::new(Rng::from_seed(seed)),
            http_buffers: crate::bufpool::BufPool::default(),
            pipes: crate::splice::PipePool::new(limits.clone()),
            lifecycle: Lifecycle::new(config_listeners),
            serving,
            tls: tls_contexts,
            bolt,
            handoff: RefCell::new(None),
            health_task: RefCell::new(None),
            limits,
            listener_cx,
            accept_errors_unlogged: Cell::new(0),
            accept_error_logged_at: Cell::new(None),
            capture_handoff,
            tracer,
        }))
    }

    /// The worker's counters.
    #[inline]
    pub fn stats(&self) -> &Arc<WorkerStats> {
        self.upstreams.stats()
    }

    /// The worker's network handle.
    #[inline]
    pub(crate) fn net(&self) -> &N {
        self.upstreams.net()
    }

    /// Sessions open now.
    pub fn open_sessions(&self) -> usize {
        self.lifecycle.open_sessions()
    }

    /// A cluster's live state (for inspection).
    pub fn cluster(&self, index: usize) -> std::cell::Ref<'_, ClusterState> {
        std::cell::Ref::map(self.upstreams.all_clusters(), |all| &all[index])
    }

    /// Serves `listeners` (one bound listener per `config.listeners` entry, same order) until
    /// `shutdown` completes, then drains. Must run inside a `LocalSet`.
    pub async fn run(
        self: Rc<Self>,
        listeners: Vec<N::Listener>,
        shutdown: impl std::future::Future<Output = ()>,
    ) {
        self.run_with_drain(listeners, std::future::pending(), shutdown)
            .await;
    }

    /// Like [`Engine::run`], and when `close_listeners` completes first, stops accepting (the
    /// listening sockets close) while open connections carry on being served; `shutdown` still
    /// drains and returns.
    pub async fn run_with_drain(
        self: Rc<Self>,
        listeners: Vec<N::Listener>,
        close_listeners: impl std::future::Future<Output = ()> + 'static,
        shutdown: impl std::future::Future<Output = ()>,
    ) {
        assert_eq!(listeners.len(), self.config.listeners.len());
        let closer = {
            let engine = self.clone();
            tokio::task::spawn_local(async move {
                close_listeners.await;
                engine.close_listeners();
            })
        };
        let mut accept_tasks = Vec::new();
        for (index, listener) in listeners.into_iter().enumerate() {
            let engine = self.clone();
            accept_tasks.push(tokio::task::spawn_local(async move {
                engine.accept_loop(index, listener).await;
            }));
        }
        let health_checks = (self.worker == 0
            && self
                .config
                .clusters
                .iter()
                .any(|c| c.health_check.is_some() || c.dns.is_some()))
        .then(|| {
            let engine = self.clone();
            let seed = self.seed;
            tokio::task::spawn_local(engine.run_health_checks(seed))
        });
        if let Some(h) = &health_checks {
            *self.health_task.borrow_mut() = Some(h.abort_handle());
        }
        // Every worker follows its DNS clusters' answers (resolved by worker 0's task above).
        let dns_followers: Vec<_> = (0..self.config.clusters.len())
            .filter(|&ci| self.config.clusters[ci].dns.is_some())
            .map(|ci| tokio::task::spawn_local(self.clone().follow_dns(ci)))
            .collect();
        let bolt_timer = self
            .bolt
            .is_some()
            .then(|| tokio::task::spawn_local(self.clone().bolt_timer()));
        let flusher = self.all_access_logs().next().is_some().then(|| {
            let engine = self.clone();
            tokio::task::spawn_local(async move {
                let mut tick = tokio::time::interval(Duration::from_millis(500));
                loop {
                    tick.tick().await;
                    engine.flush_access_logs();
                }
            })
        });
        let span_export = self
            .tracer
            .as_ref()
            .is_some_and(|t| t.queue.is_some())
            .then(|| tokio::task::spawn_local(self.clone().run_span_export()));
        // Closes pooled upstream connections idle past their cluster's upstream_idle_timeout,
        // and frees the buffers and pipes a burst left unused (HTTP's, and the L4 relay's: every
        // worker).
        let pool_sweeper = {
            let engine = self.clone();
            tokio::task::spawn_local(async move {
                let mut tick = tokio::time::interval(engine.upstreams.pool().sweep_interval());
                loop {
                    tick.tick().await;
                    engine.upstreams.pool().sweep(crate::now());
                    engine.upstreams.h2_pool().sweep(crate::now());
                    // Buffers a burst left in the pool and nothing took since the last sweep.
                    engine.http_buffers.trim();
                    engine.pipes.trim();
                }
            })
        };
        shutdown.await;
        closer.abort();
        pool_sweeper.abort();
        // The pool's pipes go back now, not after the drain (see `stop_pooling`).
        self.pipes.stop_pooling();
        self.drain().await;
        if let Some(h) = health_checks {
            h.abort();
        }
        for t in dns_followers {
            t.abort();
        }
        if let Some(t) = bolt_timer {
            t.abort();
        }
        if let Some(f) = flusher {
            f.abort();
        }
        self.flush_access_logs();
        if let Some(t) = span_export {
            self.stop_span_export(t).await;
        }
        for t in accept_tasks {
            let _ = t.await;
        }
    }

    /// Whether `/drain_listeners` closed this engine's listening sockets.
    pub fn listeners_closed(&self) -> bool {
        self.lifecycle.listeners_closed()
    }

    /// Stops accepting new connections (closing this worker's listening sockets) without
    /// draining the open ones.
    pub fn close_listeners(&self) {
        if self.lifecycle.close_listeners() {
            info!(worker = self.worker, "listeners closed: no new connections");
        }
    }

    /// Stops accepting, waits for sessions up to the drain timeout, then closes the rest.
    async fn drain(&self) {
        self.lifecycle.stop();
        let open = self.lifecycle.open_sessions();
        info!(worker = self.worker, open, "draining");
        let drained =
            tokio::time::timeout(self.config.drain_timeout, self.lifecycle.wait_idle()).await;
        if drained.is_err() {
            warn!(
                worker = self.worker,
                open = self.lifecycle.open_sessions(),
                "drain timeout passed; closing the remaining sessions"
            );
            self.lifecycle.expire_drain();
            self.lifecycle.wait_idle().await;
        }
        info!(worker = self.worker, "drained");
    }

    /// Reopens every access log file by its path (log rotation; the server calls it on
    /// SIGUSR1).
    pub fn reopen_access_logs(&self) {
        for log in self.all_access_logs() {
            if let Err(e) = log.borrow_mut().reopen() {
                warn!(worker = self.worker, error = %e, "cannot reopen the access log; keeping the old file");
            }
        }
    }

    fn flush_access_logs(&self) {
        for log in self.all_access_logs() {
            log.borrow_mut().flush();
        }
    }

    /// Every access log writer of this worker (HTTP, `tcp_proxy` and Bolt).
    fn all_access_logs(&self) -> impl Iterator<Item = &RefCell<AccessLog>> {
        self.serving.all_access_logs()
    }

    async fn accept_loop(self: Rc<Self>, index: usize, listener: N::Listener) {
        let lc: &ListenerConfig = &self.config.listeners[index];
        // Back-off after a failed accept: 10 ms for a passing error, 100 ms doubling to 1 s
        // while the process is out of descriptors or memory (the connection stays in the
        // backlog; spinning on it would only burn a core and flood the log).
        let mut backoff = Duration::ZERO;
        loop {
            let stop = self.lifecycle.stop_accepting();
            let close = self.lifecycle.closing_listeners();
            let handover = self.lifecycle.handover_asked();
            if self.lifecycle.handing_over() {
                // The next engine (a reload, an in-process upgrade) takes the socket as it is:
                // connections waiting in its backlog are accepted there, none is refused.
                self.lifecycle.hand_back(index, listener);
                debug!(worker = self.worker, listener = %lc.name, "listener handed over");
                return;
            }
            if self.lifecycle.is_stopping() || self.lifecycle.listeners_closed() {
                break;
            }
            let accepted = tokio::select! {
                biased;
                () = stop => break,
                () = close => break,
                () = handover => continue,
                // A virtual listener (`bind_to_port: false`) has a socket that listens nowhere:
                // it is only held (and handed to the next generation), never accepted on.
                r = self.net().accept(&listener), if lc.bind_to_port => r,
            };
            match accepted {
                Ok((stream, peer)) => {
                    backoff = Duration::ZERO;
                    self.clone().spawn_session(index, stream, peer);
                }
                Err(e) => {
                    bump(&self.stats().accept_errors, 1);
                    backoff = accept_backoff(&e, backoff);
                    self.log_accept_error(lc, &e, backoff);
                    tokio::select! {
                        biased;
                        () = self.lifecycle.stop_accepting() => break,
                        () = tokio::time::sleep(backoff) => {}
                    }
                    // Out of descriptors, the admin server may be swapping its reserved one
                    // for its own connection: leave it that slot.
                    while crate::admin::ADMIN_TAKING_RESERVE.load(Relaxed) {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                }
            }
        }
        debug!(worker = self.worker, listener = %lc.name, "stopped accepting");
        // Dropping the listener here closes this worker's socket.
        self.lifecycle.listener_ended();
    }

    /// Stops this engine's active health checks (the next generation runs its own).
    pub fn stop_health_checks(&self) {
        if let Some(h) = self.health_task.borrow_mut().take() {
            h.abort();
        }
    }

    /// Stops accepting and gives back every listening socket still open, in config order
    /// (`None` for one already closed by `/drain_listeners` or a stop), so that another engine
    /// can accept on it; the open sessions carry on until `shutdown` drains them. Call once, while
    /// the engine runs.
    pub async fn take_listeners(&self) -> Vec<Option<N::Listener>> {
        self.lifecycle
            .take_listeners(self.config.listeners.len())
            .await
    }

    /// Logs a failed accept, at most once a second per worker (with how many were not
    /// logged since).
    fn log_accept_error(&self, lc: &ListenerConfig, e: &std::io::Error, backoff: Duration) {
        let now = tokio::time::Instant::now();
        let due = self
            .accept_error_logged_at
            .get()
            .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(1));
        if !due {
            self.accept_errors_unlogged
                .set(self.accept_errors_unlogged.get() + 1);
            return;
        }
        self.accept_error_logged_at.set(Some(now));
        let suppressed = self.accept_errors_unlogged.replace(0);
        warn!(
            worker = self.worker,
            listener = %lc.name,
            error = %e,
            suppressed,
            backoff_ms = backoff.as_millis() as u64,
            "accept failed"
        );
    }

    /// For a capture listener (`original_dst`): the connection's original destination, and
    /// the listener that serves it (another one on a hand-off), counted by outcome. Any other
    /// listener serves its own connections and has no original destination.
    fn capture(&self, index: usize, stream: &N::Stream) -> (usize, Option<SocketAddr>) {
        let lc = &self.config.listeners[index];
        let Some(how) = lc.original_dst else {
            return (index, None);
        };
        let destination = self.net().original_destination(stream, how, lc.address);
        let (outcome, serving) = match destination {
            None => (CaptureOutcome::NoOriginalDst, index),
            Some(d) if lc.use_original_dst => match self.capture_handoff.choose(d) {
                CaptureTarget::Listener(to) => (CaptureOutcome::HandedOff, to),
                CaptureTarget::OwnChain => (CaptureOutcome::OwnChain, index),
            },
            Some(_) => (CaptureOutcome::OwnChain, index),
        };
        if let Some(l) = self.listener_stats(index) {
            bump(&l.capture_outcome[outcome as usize], 1);
        }
        if serving != index {
            debug!(
                listener = %lc.name,
                to = %self.config.listeners[serving].name,
                original_dst = ?destination,
                "captured connection handed off"
            );
        }
        (serving, destination)
    }

    fn spawn_session(self: Rc<Self>, index: usize, stream: N::Stream, peer: SocketAddr) {
        let (index, original_dst) = self.capture(index, &stream);
        let lc = &self.config.listeners[index];
        if let Err(over) = self
            .limits
            .admit(&self.listener_cx[index], lc.max_connections)
        {
            // Accepted and closed at once (Envoy, HAProxy): the client sees a close rather
            // than a connection that is never served.
            bump(&self.stats().downstream_cx_overflow, 1);
            if let Some(l) = self.listener_stats(index) {
                bump(&l.downstream_cx_overflow, 1);
            }
            debug!(
                listener = %lc.name,
                %peer,
                limit = match over {
                    Overflow::Listener => "listener max_connections",
                    Overflow::Process => "limits.max_connections",
                },
                "connection limit reached: connection closed"
            );
            drop(stream);
            return;
        }
        bump(&self.stats().downstream_cx_total, 1);
        if let Some(l) = self.listener_stats(index) {
            bump(&l.downstream_cx_total, 1);
        }
        self.lifecycle.session_opened();
        // The first request's (or frame's) timer runs from here: a slow TLS handshake comes
        // out of it rather than adding to it.
        let accepted = now();
        // Each protocol's connection future is boxed, once per connection, in a statement of
        // its own (a temporary lives to the end of its statement, across the `.await`, and
        // would be laid out in this task too): the task itself is only as large as this
        // block's own state, not as its largest protocol's (issue 15).
        let session = async move {
            let guard = SessionGuard(&self, index);
            let mut stream = stream;
            // A listener with filter chains: the chain that fits the connection serves it, as
            // the listener its serving slot compiled.
            let (index, accepted) = if self.config.listeners[index].filter_chains.is_empty() {
                (index, accepted)
            } else {
                let pick = Box::pin(self.pick_chain(index, &mut stream, peer, original_dst));
                match pick.await {
                    // The first request's timer runs from the pick: the listener filters
                    // waited for the first bytes (without a limit under
                    // `listener_filters_timeout: 0s`), and a request that came late must not
                    // find its time already spent (Envoy counts it from the first byte).
                    Some(slot) => (slot, now()),
                    None => return,
                }
            };
            let lc = self.slot_config(index);
            match &lc.filter {
                // Never picked: a connection no chain takes is closed by `pick_chain`.
                ListenerFilter::Close => {}
                ListenerFilter::TcpProxy(tp) => match &self.tls.current().acceptors[index] {
                    None => {
                        let f = Box::pin(self.tcp_proxy(
                            index,
                            lc,
                            tp,
                            stream,
                            peer,
                            None,
                            original_dst,
                        ));
                        f.await;
                    }
                    Some(acceptor) => {
                        let handshake =
                            Box::pin(self.tls_handshake(index, lc, acceptor, stream, peer));
                        // The handshake's output (a TLS stream, ~1 KB) moves into the boxed
                        // session within this statement: held by an `if let` across the
                        // session's `.await`, it made every connection's task that much
                        // larger, whatever its protocol (issue 15).
                        let f = match handshake.await {
                            Some((tls, server_name)) => Box::pin(self.tcp_proxy(
                                index,
                                lc,
                                tp,
                                tls,
                                peer,
                                Some(server_name),
                                original_dst,
                            )),
                            None => return,
                        };
                        f.await;
                    }
                },
                ListenerFilter::Echo => {
                    let f = Box::pin(self.echo(index, stream));
                    f.await;
                }
                ListenerFilter::Http(_) | ListenerFilter::Bolt(_) | ListenerFilter::Auto { .. } => {
                    // TLS first (the listener's `tls`), then the protocol over it.
                    let down = match &self.tls.current().acceptors[index] {
                        None => Downstream::Plain(stream),
                        Some(acceptor) => {
                            let handshake =
                                Box::pin(self.tls_handshake(index, lc, acceptor, stream, peer));
                            match handshake.await {
                                Some((tls, _)) => Downstream::Tls(Box::new(tls)),
                                None => return,
                            }
                        }
                    };
                    match &lc.filter {
                        ListenerFilter::Http(hc) => {
                            let f = Box::pin(self.http_connection(
                                index,
                                lc,
                                hc,
                                down,
                                peer,
                                &[],
                                original_dst,
                                accepted,
                            ));
                            f.await;
                        }
                        ListenerFilter::Bolt(bc) => {
                            self.note_bolt_traffic(bc);
                            let f = Box::pin(self.bolt_connection(
                                index,
                                down,
                                peer,
                                &[],
                                original_dst,
                                Some(accepted),
                            ));
                            f.await;
                        }
                        ListenerFilter::Auto { http, bolt } => {
                            let f = Box::pin(self.auto_connection(
                                index,
                                lc,
                                http,
                                bolt,
                                down,
                                peer,
                                original_dst,
                                accepted,
                            ));
                            f.await;
                        }
                        ListenerFilter::TcpProxy(_)
                        | ListenerFilter::Echo
                        | ListenerFilter::Close => unreachable!(),
                    }
                }
            }
            drop(guard);
        };
        tokio::task::spawn_local(session);
    }

    /// The listener (or filter chain) serving slot `slot` serves with (see
    /// [`Config::chain_slots`]).
    pub(crate) fn slot_config(&self, slot: usize) -> &ListenerConfig {
        self.serving.slot_config(&self.config, slot)
    }

    /// The counters of the listener serving slot `slot` belongs to.
    #[inline]
    pub(crate) fn listener_stats(&self, slot: usize) -> Option<&crate::stats::ListenerStats> {
        self.stats().listener(self.serving.owner(slot)?)
    }

    /// The serving slot of the filter chain of listener `index` that fits this connection
    /// (`index` itself: the listener's own filter, its default chain), from its destination
    /// port and, when a chain left by the port asks about TLS, server names or ALPN, its
    /// ClientHello — peeked at, not read: the chain's filter (or TLS) reads the same bytes
    /// again —, or, plaintext, when a chain asks for `http/1.1` / `h2c`, an HTTP sniff of the
    /// first bytes ([`sluice_core::detect`]). Each look runs only on the ports its inspector
    /// covers (`tls_inspector`, `http_inspector`: Envoy's `filter_disabled`), decided from the
    /// port before anything is peeked. The port is looked at first, without waiting for a
    /// byte: a port whose chains ask nothing of the first bytes is served at once (a
    /// server-first protocol, whose client waits for the server to speak). `None`: the
    /// connection is to be closed (no chain fits and there is no default chain, or the peek
    /// failed), counted.
    async fn pick_chain(
        &self,
        index: usize,
        stream: &mut N::Stream,
        peer: SocketAddr,
        original_dst: Option<SocketAddr>,
    ) -> Option<usize> {
        use sluice_core::filter_chain::{
            ConnectionFacts, needs_client_hello, needs_http_sniff, select,
        };
        let lc = &self.config.listeners[index];
        let mut facts = ConnectionFacts {
            destination_port: original_dst.map_or(lc.address.port(), |d| d.port()),
            ..ConnectionFacts::default()
        };
        let port = facts.destination_port;
        let look = FirstBytes {
            hello: lc.tls_inspector.runs_on(port) && needs_client_hello(&lc.filter_chains, port),
            http: lc.http_inspector.runs_on(port) && needs_http_sniff(&lc.filter_chains, port),
        };
        let hello = if look.hello || look.http {
            match self.peek_first_bytes(lc, stream, look).await {
                ChainPeek::Hello(h) => Some(h),
                ChainPeek::Plain(protocol) => {
                    facts.plaintext_protocol = protocol;
                    None
                }
                ChainPeek::TimedOut => {
                    if let Some(l) = self.listener_stats(index) {
                        bump(&l.downstream_listener_filter_timeout, 1);
                    }
                    if !lc.continue_on_listener_filters_timeout {
                        debug!(listener = %lc.name, %peer, "no ClientHello (or first bytes) within listener_filters_timeout: connection closed");
                        return None;
                    }
                    None
                }
                ChainPeek::Refused(why, reason) => {
                    if let Some(l) = self.listener_stats(index) {
                        bump(&l.downstream_listener_filter_refused[reason as usize], 1);
                    }
                    debug!(listener = %lc.name, %peer, why, "first bytes unusable: connection closed");
                    return None;
                }
            }
        } else {
            None
        };
        if let Some(h) = &hello {
            facts.tls = true;
            facts.server_name = h.server_name.as_deref();
            facts.alpn = &h.alpn;
        }
        match select(&lc.filter_chains, &facts) {
            Some(chain) => Some(self.serving.chain_slot(index, chain)),
            None if matches!(lc.filter, ListenerFilter::Close) => {
                if let Some(l) = self.listener_stats(index) {
                    bump(&l.downstream_cx_no_filter_chain_match, 1);
                }
                debug!(
                    listener = %lc.name,
                    %peer,
                    destination_port = facts.destination_port,
                    tls = facts.tls,
                    server_name = ?facts.server_name,
                    plaintext_protocol = ?facts.plaintext_protocol,
                    "no filter chain matches: connection closed"
                );
                None
            }
            None => Some(index),
        }
    }

    /// Peeks at the connection's first bytes (without consuming them) until they say what
    /// `look` asks: whether it is TLS and, if so, what its ClientHello asks for; and,
    /// plaintext (or not looked at for TLS), whether it is HTTP/1.x or h2c. Bounded by the
    /// listener's `listener_filters_timeout` (zero: no limit) and by the drain deadline.
    ///
    /// Nothing is allocated before the first byte: the first peek goes to a record header's
    /// worth of stack (plaintext is told from one byte). Once a TLS record header says how
    /// long the hello's records are, a buffer of exactly that (at most the hello limit plus
    /// record headers, [`max_hello_wire_bytes`]) is taken; the HTTP sniff peeks into the
    /// stack, and into a buffer (doubling) only past 64 bytes, at most
    /// [`MAX_HTTP_SNIFF_BYTES`]. The hello's peek waits until the bytes the parser's last
    /// verdict asked for (`at_least`) are in, the sniff's until more than it saw are
    /// ([`Network::peek_grown`]: on a real socket the kernel wakes it only then, however the
    /// client cuts its segments); the parser runs once per wake. A timeout
    /// leaves the peeked bytes readable by the chain that then serves the connection. A client
    /// that closes its side
    /// before its first bytes decide (a FIN behind queued bytes, which a peek keeps
    /// returning) is closed at once, not left to the timeout nor served by a plaintext chain
    /// (Envoy closes a connection that ends during its listener filters, too).
    async fn peek_first_bytes(
        &self,
        lc: &ListenerConfig,
        stream: &mut N::Stream,
        look: FirstBytes,
    ) -> ChainPeek {
        // A record header: enough to tell TLS or not and how long the first record is.
        const HEAD: usize = 5;
        let limit = max_hello_wire_bytes(DEFAULT_MAX_HELLO_BYTES);
        let deadline = (!lc.listener_filters_timeout.is_zero())
            .then(|| tokio::time::Instant::now() + lc.listener_filters_timeout);
        let timeout = async move {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                // `0s`: no limit (the drain deadline still ends the wait).
                None => std::future::pending().await,
            }
        };
        tokio::pin!(timeout);
        let drain_expired = self.lifecycle.drain_expired();
        tokio::pin!(drain_expired);
        if look.hello {
            // The length the parser needs before it can say more.
            let mut at_least = 1;
            let mut head = [0u8; HEAD];
            let mut records: Vec<u8> = Vec::new();
            loop {
                if self.lifecycle.drain_deadline_passed() {
                    return ChainPeek::drained();
                }
                let buf: &mut [u8] = if at_least <= HEAD {
                    &mut head
                } else {
                    if records.len() < at_least {
                        records.reserve_exact(at_least - records.len());
                        records.resize(at_least, 0);
                    }
                    &mut records
                };
                let (len, closed) = match self
                    .peek_more(stream, buf, at_least, &mut timeout, &mut drain_expired)
                    .await
                {
                    Ok(got) => got,
                    Err(verdict) => return verdict,
                };
                if len >= at_least {
                    match peek_client_hello(&buf[..len], DEFAULT_MAX_HELLO_BYTES) {
                        Peek::NeedMore { at_least: next } if next <= limit => at_least = next,
                        Peek::NeedMore { .. }
                        | Peek::Invalid(ClientHelloError::TooLarge { .. }) => {
                            return ChainPeek::Refused(
                                "ClientHello too large",
                                ChainPeekRefusal::TooLarge,
                            );
                        }
                        Peek::Invalid(_) => {
                            return ChainPeek::Refused(
                                "malformed ClientHello",
                                ChainPeekRefusal::Invalid,
                            );
                        }
                        Peek::NotTls => break,
                        Peek::ClientHello(h) => return ChainPeek::Hello(h),
                    }
                }
                // Closed, and the peek saw all that is queued (a full buffer may have left
                // more: the parser asked for more than it holds, so the next peek is larger).
                if closed && len < buf.len() {
                    return ChainPeek::Refused(
                        "closed during its ClientHello",
                        ChainPeekRefusal::Closed,
                    );
                }
            }
        }
        if !look.http {
            return ChainPeek::Plain(None);
        }
        // Plaintext: sniff HTTP on what is queued now, then on more as it comes. The TLS look
        // may have peeked only a record header's worth of what is queued, and a few bytes
        // can decide (not HTTP): the first peek here waits for no growth.
        // Bytes the last peek saw. A request line fits in a few dozen bytes: the first peeks go
        // to the stack, and only a longer one grows a buffer (doubling, up to the sniff's
        // limit) — a client that sent a byte and went silent holds none.
        let mut seen = 0;
        let mut small = [0u8; 64];
        let mut grown: Vec<u8> = Vec::new();
        loop {
            if self.lifecycle.drain_deadline_passed() {
                return ChainPeek::drained();
            }
            let buf: &mut [u8] = if grown.is_empty() {
                &mut small
            } else {
                &mut grown
            };
            // More than it saw (the first peek: whatever is queued).
            let want = (seen + 1).min(buf.len());
            let (len, closed) = match self
                .peek_more(stream, buf, want, &mut timeout, &mut drain_expired)
                .await
            {
                Ok(got) => got,
                Err(verdict) => break verdict,
            };
            seen = len;
            let sniffed = sniff_http(&buf[..len]);
            if sniffed == HttpSniff::TooLong {
                // Envoy's http_inspector closes it too.
                return ChainPeek::Refused(
                    "no HTTP request line end within 8 KiB",
                    ChainPeekRefusal::TooLarge,
                );
            }
            if sniffed.is_decided() {
                return ChainPeek::Plain(sniffed.application_protocol());
            }
            if len == buf.len() && len < MAX_HTTP_SNIFF_BYTES {
                // Full and undecided: a larger buffer for the next peek.
                grown.resize((len * 2).min(MAX_HTTP_SNIFF_BYTES), 0);
                continue;
            }
            if closed && len < buf.len() {
                return ChainPeek::Refused(
                    "closed before its first bytes said whether it is HTTP",
                    ChainPeekRefusal::Closed,
                );
            }
        }
    }

    /// One peek that waits for at least `want` bytes (or the client's close): the length
    /// peeked and whether the client closed its side; or the verdict that ends the look
    /// (timeout, drain, close before any byte, reset, error).
    async fn peek_more(
        &self,
        stream: &mut N::Stream,
        buf: &mut [u8],
        want: usize,
        timeout: &mut std::pin::Pin<&mut impl std::future::Future<Output = ()>>,
        drain_expired: &mut std::pin::Pin<&mut tokio::sync::futures::Notified<'_>>,
    ) -> Result<(usize, bool), ChainPeek> {
        let peeked = tokio::select! {
            r = N::peek_grown(stream, buf, want) => r,
            () = timeout.as_mut() => return Err(ChainPeek::TimedOut),
            () = drain_expired.as_mut() => return Err(ChainPeek::drained()),
        };
        match peeked {
            Ok((0, _)) => Err(ChainPeek::Refused(
                "closed before its first bytes",
                ChainPeekRefusal::Closed,
            )),
            Ok(got) => Ok(got),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => Err(ChainPeek::Refused(
                "reset before its first bytes were complete",
                ChainPeekRefusal::Closed,
            )),
            Err(_) => Err(ChainPeek::Refused("read error", ChainPeekRefusal::Error)),
        }
    }

    /// Terminates TLS on `stream` within the listener's handshake timeout: the TLS stream and
    /// the server name the client asked for, or `None` (closed; the outcome counted).
    async fn tls_handshake(
        &self,
        listener: usize,
        lc: &ListenerConfig,
        acceptor: &crate::tls::TlsAcceptor,
        stream: N::Stream,
        peer: SocketAddr,
    ) -> Option<(tokio_rustls::server::TlsStream<N::Stream>, Option<String>)> {
        use crate::tls::HandshakeOutcome;
        let timeout = lc
            .tls
            .as_ref()
            .map_or(Duration::from_secs(10), |t| t.handshake_timeout);
        let drain_expired = self.lifecycle.drain_expired();
        let handshake = tokio::time::timeout(timeout, acceptor.accept(stream));
        let (outcome, result) = if self.lifecycle.drain_deadline_passed() {
            (HandshakeOutcome::Drained, None)
        } else {
            tokio::select! {
                r = handshake => match r {
                    Ok(Ok(tls)) => (HandshakeOutcome::Ok, Some(tls)),
                    Ok(Err(e)) => {
                        debug!(listener = %lc.name, %peer, error = %e, "TLS handshake failed");
                        (HandshakeOutcome::of_error(&e), None)
                    }
                    Err(_) => (HandshakeOutcome::Timeout, None),
                },
                () = drain_expired => (HandshakeOutcome::Drained, None),
            }
        };
        if let Some(l) = self.listener_stats(listener) {
            bump(&l.tls_handshakes[outcome as usize], 1);
        }
        let tls = result?;
        let server_name = tls.get_ref().1.server_name().map(str::to_owned);
        Some((tls, server_name))
    }

    /// Proxies one downstream connection to a host of the listener's cluster. `terminated`:
    /// TLS was terminated and the client asked for this server name (which then picks the
    /// `sni_routes` cluster); `None`: plaintext, or TLS passed through (then `sni_routes`
    /// peeks at the ClientHello). `original_dst`: where a captured connection was going (an
    /// `original_dst` cluster connects there).
    #[allow(clippy::too_many_arguments)]
    async fn tcp_proxy<S>(
        &self,
        listener: usize,
        lc: &ListenerConfig,
        tp: &TcpProxyConfig,
        mut down: S,
        peer: SocketAddr,
        terminated: Option<Option<String>>,
        original_dst: Option<SocketAddr>,
    ) where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + crate::splice::AsTcpStream + Unpin,
    {
        // The access log's start time (wall clock) and the session's start.
        let started = if self.serving.access_log(listener).is_some() {
            SystemTime::now()
        } else {
            SystemTime::UNIX_EPOCH
        };
        let t0 = now();
        let mut log = TcpLogFacts {
            started,
            t0,
            peer: &peer,
            cluster: None,
            upstream: None,
            bytes: (0, 0),
            reason: "",
            flag: None,
            server_name: None,
            original_dst: &original_dst,
        };
        // The server name a ClientHello peek saw (`sni_routes` with TLS passed through).
        let mut peeked_name = None;
        // With `sni_routes`, the ClientHello picks the cluster; the bytes read to see it go
        // upstream first, untouched.
        let mut hello: Option<(Box<[u8]>, usize)> = None;
        let ci = if tp.sni_routes.is_empty() {
            tp.cluster_index
        } else if let Some(server_name) = &terminated {
            let (ci, matched) = tp.cluster_for_server_name(server_name.as_deref());
            if let Some(l) = self.listener_stats(listener) {
                let outcome = if matched {
                    SniOutcome::Matched
                } else {
                    SniOutcome::Unmatched
                };
                bump(&l.sni_outcome[outcome as usize], 1);
            }
            ci
        } else {
            // Boxed while it runs (its buffer and timers), so that the session's future, held
            // for the connection's whole life, is not laid out to its size (issue 15).
            let (buf, len, (outcome, cluster)) =
                Box::pin(self.read_client_hello(tp, &mut down, &mut peeked_name)).await;
            if let Some(l) = self.listener_stats(listener) {
                bump(&l.sni_outcome[outcome as usize], 1);
            }
            let Some(ci) = cluster else {
                debug!(listener = %lc.name, %peer, outcome = outcome.as_str(), "no usable ClientHello: connection closed");
                self.give_buffer(buf);
                let _ = down.shutdown().await;
                log.reason = "no_client_hello";
                self.log_tcp_session(listener, lc, &log);
                return;
            };
            hello = Some((buf, len));
            ci
        };
        let cluster_cfg = &self.config.clusters[ci];
        log.cluster = Some(ci);
        log.server_name = match &terminated {
            Some(name) => name.as_deref(),
            None => peeked_name.as_deref(),
        };
        // An original_dst cluster connects to the connection's original destination; one that
        // was not captured has none (it would be this listener: a loop), and is closed.
        let direct = match cluster_cfg.kind {
            ClusterKind::Static | ClusterKind::StrictDns | ClusterKind::LogicalDns => None,
            ClusterKind::OriginalDst => match original_dst {
                Some(d) => Some(d),
                None => {
                    debug!(listener = %lc.name, %peer, "no original destination for an original_dst cluster: connection closed");
                    let reason = CloseReason::NoHealthyUpstream;
                    bump(&self.stats().tcp_session_closed[reason.index()], 1);
                    if let Some(l) = self.listener_stats(listener) {
                        bump(&l.tcp_session_closed[reason.index()], 1);
                    }
                    if let Some((buf, _)) = hello {
                        self.give_buffer(buf);
                    }
                    let _ = down.shutdown().await;
                    (log.reason, log.flag) = (reason.as_str(), tcp_flag(reason));
                    self.log_tcp_session(listener, lc, &log);
                    return;
                }
            },
        };
        let cluster = &self.upstreams.cluster(ci);
        let cstats = self.stats().cluster(ci);
        // One unit of max_connections for the session's upstream connection; at the limit the
        // downstream connection is closed at once.
        let Some(_connection_unit) = BreakerUnit::acquire(cluster, Resource::Connections) else {
            if let Some(c) = cstats {
                bump(&c.upstream_cx_overflow, 1);
            }
            debug!(listener = %lc.name, %peer, "max_connections reached: connection closed");
            let _ = down.shutdown().await;
            if let Some((buf, _)) = hello {
                self.give_buffer(buf);
            }
            (log.reason, log.flag) = ("upstream_overflow", Some("UO"));
            self.log_tcp_session(listener, lc, &log);
            return;
        };
        if let Some(c) = cstats {
            bump(&c.upstream_rq_total, 1);
        }
        self.upstreams.shared_health().note_traffic(ci);
        self.upstreams.refresh_availability(ci);
        let mut session = TcpSession::new(
            now(),
            SessionConfig {
                connect_timeout: cluster_cfg.connect_timeout,
                idle_timeout: tp.idle_timeout,
                max_connect_attempts: tp.max_connect_attempts,
            },
        );
        if cluster_cfg.lb_policy.is_consistent_hash() {
            // Only a source_ip policy applies to a TCP connection (it has no headers).
            session.set_hash(request_hash(
                &cluster_cfg.hash_policy,
                |_| None,
                Some(peer.ip()),
            ));
        }
        // Created now so that a drain timeout during the connect phase is not missed (a
        // `Notified` receives `notify_waiters` from the moment it exists); one that passed
        // before (during a TLS handshake or a ClientHello peek) ends the session here.
        // Pinned here and lent to the relay: it is held for the session's whole life.
        let mut drain_expired = std::pin::pin!(self.lifecycle.drain_expired());
        let mut reason = None;
        if self.lifecycle.drain_deadline_passed() {
            reason = Some(CloseReason::DrainTimeout);
        } else {
            match direct {
                Some(address) => session.start_direct(now(), address),
                None => session.start(now(), &mut cluster.borrow_mut(), &mut self.rng.borrow_mut()),
            }
        }

        // Connect phase: follow the session's Connect actions until connected or closed.
        let mut up = None;
        let mut connected_host = None;
        while let Some(action) = session.poll_action() {
            match action {
                Action::Connect { address, host } => {
                    // The host as picked (nothing awaited since): its results are for it, and it
                    // is reached with its transport.
                    let (picked, transport) = {
                        let c = cluster.borrow();
                        (c.host_ref(host), c.transport(host))
                    };
                    log.upstream = Some(address);
                    // The connect, and with a TLS cluster the handshake, within the connect
                    // deadline: a failed handshake (verification included) is a connect failure.
                    let deadline = session.poll_timeout().map(crate::to_tokio);
                    // Boxed while it runs: an upstream TLS handshake's state is ~2 KB, and laid
                    // out inline it made every session's future, held while the session idles,
                    // that much larger (issue 15).
                    let connect = Box::pin(
                        self.upstreams
                            .connect(&self.tls, ci, transport, address, deadline),
                    );
                    let failure = match connect.await {
                        Ok(stream) => {
                            self.upstreams.report_upstream_result(
                                ci,
                                picked,
                                UpstreamResult::Success,
                            );
                            session.handle_connected(now(), &mut cluster.borrow_mut());
                            if let Some(h) = self.stats().host(ci, host.index()) {
                                bump(&h.rq_total, 1);
                                bump(&h.cx_total, 1);
                                gauge_add(&h.cx_active, true);
                            }
                            self.publish_host_active(ci, host);
                            connected_host = Some(host);
                            up = Some(stream);
                            continue;
                        }
                        Err(e) => {
                            self.upstreams
                                .count_connect_failure(ci, host, e.is_timeout());
                            debug!(listener = %lc.name, %address, error = %e, "upstream connect failed");
                            e.session_failure()
                        }
                    };
                    self.upstreams.report_upstream_result(
                        ci,
                        picked,
                        UpstreamResult::ConnectFailure,
                    );
                    self.upstreams.refresh_availability(ci);
                    session.handle_connect_failed(
                        now(),
                        &mut cluster.borrow_mut(),
                        &mut self.rng.borrow_mut(),
                        failure,
                    );
                }
                Action::Close(r) => reason = Some(r),
                Action::ShutdownUpstreamWrite | Action::ShutdownDownstreamWrite => {
                    debug_assert!(false, "half-close before connect");
                }
            }
        }

        let reason = match (up, reason) {
            (Some(mut up), None) => {
                if let Some((buf, len)) = hello.take() {
                    // The bytes the ClientHello peek read go upstream before anything else.
                    match crate::http::write_flushed(&mut up, &buf[..len]).await {
                        Ok(()) => session.handle_read(now(), Side::Downstream, len),
                        Err(_) => session.handle_error(now(), Side::Upstream),
                    }
                    self.give_buffer(buf);
                }
                if let Some(r) = session.close_reason() {
                    r
                } else {
                    let mut on_timeout = |s: &mut TcpSession| {
                        s.handle_timeout(
                            now(),
                            &mut cluster.borrow_mut(),
                            &mut self.rng.borrow_mut(),
                        )
                    };
                    // Plaintext on real sockets: splice, unless the listener says not to (a
                    // chunk that finds no pipe — the process's budget spent — is copied); else
                    // copy, as over TLS and in the simulator. Either holds pipes and buffers
                    // only while bytes are in flight.
                    let spliceable = match (down.as_tcp_stream(), up.as_tcp_stream()) {
                        (Some(d), Some(u)) if tp.splice => Some((d, u)),
                        _ => None,
                    };
                    if let Some((d, u)) = spliceable {
                        bump(&self.stats().tcp_relay_spliced, 1);
                        let ctx = crate::splice::SpliceCtx {
                            pipes: &self.pipes,
                            buffers: &self.http_buffers,
                            chunks_copied: &self.stats().tcp_relay_chunks_copied,
                        };
                        crate::splice::relay_spliced(
                            &mut session,
                            d,
                            u,
                            &ctx,
                            drain_expired.as_mut(),
                            &mut on_timeout,
                        )
                        .await
                    } else {
                        bump(&self.stats().tcp_relay_copied, 1);
                        relay(
                            &mut session,
                            &mut down,
                            &mut up,
                            &self.http_buffers,
                            drain_expired.as_mut(),
                            &mut on_timeout,
                        )
                        .await
                    }
                }
            }
            (_, Some(r)) => r,
            (None, None) => unreachable!("the session neither connected nor closed"),
        };
        if let Some((buf, _)) = hello {
            self.give_buffer(buf);
        }
        session.release(&mut cluster.borrow_mut());
        if let Some(host) = connected_host {
            if let Some(h) = self.stats().host(ci, host.index()) {
                gauge_add(&h.cx_active, false);
            }
            self.publish_host_active(ci, host);
        }
        let (from_down, from_up) = session.bytes();
        bump(&self.stats().bytes_from_downstream, from_down);
        bump(&self.stats().bytes_from_upstream, from_up);
        bump(&self.stats().tcp_session_closed[reason.index()], 1);
        if let Some(l) = self.listener_stats(listener) {
            bump(&l.downstream_bytes_received, from_down);
            bump(&l.downstream_bytes_sent, from_up);
            bump(&l.tcp_session_closed[reason.index()], 1);
        }
        debug!(
            listener = %lc.name,
            %peer,
            original_dst = ?original_dst,
            reason = reason.as_str(),
            attempts = session.attempts(),
            from_down,
            from_up,
            "tcp session closed"
        );
        if reason != CloseReason::Completed {
            // Tell the client at once (FIN) rather than leaving it to notice the drop.
            let _ = down.shutdown().await;
        }
        log.bytes = (from_down, from_up);
        (log.reason, log.flag) = (reason.as_str(), tcp_flag(reason));
        self.log_tcp_session(listener, lc, &log);
    }

    /// Writes a `tcp_proxy` session's access-log line, when the listener has an access log.
    fn log_tcp_session(&self, listener: usize, lc: &ListenerConfig, f: &TcpLogFacts<'_>) {
        let Some(log) = self.serving.access_log(listener) else {
            return;
        };
        log.borrow_mut().log(&Entry {
            start: f.started,
            method: b"-",
            path: b"-",
            protocol: "TCP",
            status: 0,
            flag: f.flag,
            bytes_received: f.bytes.0,
            bytes_sent: f.bytes.1,
            duration_ms: now().duration_since(f.t0).as_millis() as u64,
            upstream: f.upstream,
            request_id: b"",
            downstream: *f.peer,
            listener: &lc.name,
            original_dst: *f.original_dst,
            request: None,
            cluster: f.cluster.map(|c| self.config.clusters[c].name.as_str()),
            tries: 0,
            close_reason: Some(f.reason),
            server_name: f.server_name,
            trace_id: None,
            grpc_status: None,
        });
    }

    /// The echo filter: writes back every byte read, until EOF or the drain timeout.
    async fn echo(&self, listener: usize, mut stream: N::Stream) {
        let mut buf = self.take_buffer();
        let expired = self.lifecycle.drain_expired();
        tokio::pin!(expired);
        loop {
            let n = tokio::select! {
                biased;
                () = &mut expired => break,
                r = stream.read(&mut buf) => match r {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                },
            };
            bump(&self.stats().bytes_from_downstream, n as u64);
            if let Some(l) = self.listener_stats(listener) {
                bump(&l.downstream_bytes_received, n as u64);
            }
            if stream.write_all(&buf[..n]).await.is_err() {
                break;
            }
            if let Some(l) = self.listener_stats(listener) {
                bump(&l.downstream_bytes_sent, n as u64);
            }
        }
        let _ = stream.shutdown().await;
        self.give_buffer(buf);
    }

    /// Copies this worker's count of requests (or sessions) in flight on a host — kept by the
    /// cluster state — into the host's gauge (one load and store).
    pub(crate) fn publish_host_active(&self, cluster: usize, host: HostId) {
        if let Some(h) = self.stats().host(cluster, host.index()) {
            let active = self.upstreams.cluster(cluster).borrow().host(host).active;
            h.rq_active.store(u64::from(active), Relaxed);
        }
    }

    /// Reads until the connection's first bytes say which cluster of `tp.sni_routes` it goes
    /// to: the buffer and how much of it was read, the outcome, and the cluster (`None`: close
    /// the connection). Bounded by `client_hello_timeout` and by the drain deadline.
    async fn read_client_hello<S: tokio::io::AsyncRead + Unpin>(
        &self,
        tp: &TcpProxyConfig,
        down: &mut S,
        server_name: &mut Option<String>,
    ) -> (Box<[u8]>, usize, (SniOutcome, Option<usize>)) {
        let mut buf = self.take_buffer();
        let mut len = 0;
        // A hello split into tiny records takes more room than its own length: the buffer
        // (32 KiB) bounds it too, and one that fills the buffer undecided is refused.
        let limit = DEFAULT_MAX_HELLO_BYTES.min(buf.len());
        let deadline = tokio::time::Instant::now() + tp.client_hello_timeout;
        let drain_expired = self.lifecycle.drain_expired();
        tokio::pin!(drain_expired);
        if self.lifecycle.drain_deadline_passed() {
            return (buf, 0, (SniOutcome::Timeout, None));
        }
        // Parse again only once the bytes the last verdict asked for are in: a hello trickled
        // byte by byte is parsed once per record, not once per byte.
        let mut at_least = 0;
        let outcome = loop {
            let peek = if len >= at_least {
                peek_client_hello(&buf[..len], limit)
            } else {
                Peek::NeedMore { at_least }
            };
            match peek {
                Peek::NeedMore { at_least: next } if len < buf.len() => {
                    at_least = next.min(buf.len());
                }
                Peek::NeedMore { .. } | Peek::Invalid(_) => break (SniOutcome::Invalid, None),
                Peek::NotTls => break (SniOutcome::NotTls, Some(tp.cluster_index)),
                Peek::ClientHello(h) => {
                    let (ci, matched) = tp.cluster_for_server_name(h.server_name.as_deref());
                    let outcome = if matched {
                        SniOutcome::Matched
                    } else {
                        SniOutcome::Unmatched
                    };
                    *server_name = h.server_name;
                    break (outcome, Some(ci));
                }
            }
            let read = tokio::select! {
                r = tokio::time::timeout_at(deadline, down.read(&mut buf[len..])) => r,
                () = &mut drain_expired => break (SniOutcome::Timeout, None),
            };
            match read {
                Ok(Ok(n)) if n > 0 => len += n,
                // The client closed or reset before its ClientHello was complete.
                Ok(_) => break (SniOutcome::Closed, None),
                Err(_) => break (SniOutcome::Timeout, None),
            }
        };
        (buf, len, outcome)
    }

    fn take_buffer(&self) -> Box<[u8]> {
        self.http_buffers.take_relay()
    }

    fn give_buffer(&self, buf: Box<[u8]>) {
        self.http_buffers.give_relay(buf);
    }
}

/// What a filter-chain listener looks at in a connection's first bytes.
#[derive(Clone, Copy, Debug)]
struct FirstBytes {
    /// Its ClientHello (the TLS inspector runs on its port and a chain asks).
    hello: bool,
    /// Plaintext: whether it is HTTP (the HTTP inspector runs on its port and a chain asks
    /// for `http/1.0`, `http/1.1` or `h2c`).
    http: bool,
}

/// What a filter-chain listener's peek at a connection's first bytes said.
enum ChainPeek {
    /// A well-formed ClientHello.
    Hello(sluice_core::tls::ClientHello),
    /// Not TLS (plaintext, or another protocol), or not looked at for TLS; with the
    /// application protocol an HTTP sniff gave it, if any.
    Plain(Option<&'static str>),
    /// Nothing decisive within `listener_filters_timeout`.
    TimedOut,
    /// The connection cannot be served (closed, malformed or oversized ClientHello, drain):
    /// what the log says, and the reason counted.
    Refused(&'static str, ChainPeekRefusal),
}

impl ChainPeek {
    fn drained() -> ChainPeek {
        ChainPeek::Refused("drain deadline passed", ChainPeekRefusal::Drained)
    }
}

/// What a `tcp_proxy` session's access-log line says, gathered as the session goes.
struct TcpLogFacts<'a> {
    started: SystemTime,
    t0: sluice_core::Instant,
    /// The session's own (held by reference: its future keeps them anyway, and this is held
    /// for the session's whole life).
    peer: &'a SocketAddr,
    cluster: Option<usize>,
    /// The host of the last connect attempt.
    upstream: Option<SocketAddr>,
    /// From and to the client.
    bytes: (u64, u64),
    reason: &'a str,
    flag: Option<&'static str>,
    server_name: Option<&'a str>,
    original_dst: &'a Option<SocketAddr>,
}

/// A TCP session's close reason as an Envoy response flag (`None`: no flag, `-`).
fn tcp_flag(reason: CloseReason) -> Option<&'static str> {
    match reason {
        CloseReason::NoHealthyUpstream => Some("UH"),
        CloseReason::ConnectFailed => Some("UF"),
        CloseReason::DownstreamReset => Some("DC"),
        CloseReason::UpstreamReset => Some("UC"),
        CloseReason::Completed | CloseReason::IdleTimeout | CloseReason::DrainTimeout => None,
    }
}

impl<N: Network> Engine<N> {
    /// Notes traffic on every cluster a Bolt listener routes to (for the health checks'
    /// `no_traffic_interval`).
    fn note_bolt_traffic(&self, bc: &sluice_core::config::bolt::BoltConfig) {
        for r in &bc.routes {
            self.upstreams
                .shared_health()
                .note_traffic(r.action.cluster_index);
        }
    }

    /// `protocol: auto`: reads the first bytes and serves the connection as HTTP/1.1 (it starts
    /// with a method token and a space) or Bolt (protocol byte 1 or 2); anything else is closed
    /// and counted (`bolt.sniff_failed`). The bytes read go to the chosen driver first. Over TLS
    /// with ALPN `h2` or `http/1.1` the connection is HTTP without sniffing.
    #[allow(clippy::too_many_arguments)]
    async fn auto_connection(
        self: &Rc<Self>,
        index: usize,
        lc: &ListenerConfig,
        http: &sluice_core::config::http::HttpConfig,
        bolt: &sluice_core::config::bolt::BoltConfig,
        mut stream: Downstream<N::Stream>,
        peer: SocketAddr,
        original_dst: Option<SocketAddr>,
        accepted: sluice_core::Instant,
    ) {
        // Over TLS, an HTTP ALPN protocol settles it: HTTP (the codec by ALPN, in
        // http_connection), nothing to sniff.
        if matches!(stream.alpn(), Alpn::Http1 | Alpn::Http2) {
            self.http_connection(index, lc, http, stream, peer, &[], original_dst, accepted)
                .await;
            return;
        }
        let mut first = [0u8; 16];
        let mut n = 0;
        let deadline = crate::to_tokio(accepted) + http.request_headers_timeout;
        // The drain's deadline ends the wait (the flag: it passed before this watch began).
        let expired = self.lifecycle.drain_expired();
        tokio::pin!(expired);
        if self.lifecycle.drain_deadline_passed() {
            return;
        }
        let protocol = loop {
            match sniff(&first[..n]) {
                Sniffed::NeedMore if n < first.len() => {}
                Sniffed::NeedMore | Sniffed::Unknown => break None,
                known => break Some(known),
            }
            let read = tokio::select! {
                biased;
                () = &mut expired => return,
                r = tokio::time::timeout_at(deadline, stream.read(&mut first[n..])) => r,
            };
            match read {
                Ok(Ok(0)) | Ok(Err(_)) => return,
                Ok(Ok(k)) => n += k,
                Err(_) => break None,
            }
        };
        match protocol {
            Some(Sniffed::Http) => {
                self.http_connection(
                    index,
                    lc,
                    http,
                    stream,
                    peer,
                    &first[..n],
                    original_dst,
                    accepted,
                )
                .await;
            }
            Some(Sniffed::Bolt) => {
                self.note_bolt_traffic(bolt);
                self.bolt_connection(
                    index,
                    stream,
                    peer,
                    &first[..n],
                    original_dst,
                    Some(accepted),
                )
                .await;
            }
            _ => {
                bump(&self.stats().bolt.sniff_failed, 1);
                debug!(listener = %lc.name, %peer, first = ?&first[..n], "protocol detection failed: neither HTTP/1.1 nor Bolt; closing");
                let _ = stream.shutdown().await;
            }
        }
    }
}

/// The pause after a failed accept: 100 ms doubling to 1 s while out of descriptors or memory
/// (EMFILE, ENFILE, ENOBUFS, ENOMEM), else 10 ms.
fn accept_backoff(e: &std::io::Error, previous: Duration) -> Duration {
    const EMFILE: i32 = 24;
    const ENFILE: i32 = 23;
    const ENOBUFS: i32 = 105;
    const ENOMEM: i32 = 12;
    match e.raw_os_error() {
        Some(EMFILE | ENFILE | ENOBUFS | ENOMEM) => {
            (previous * 2).clamp(Duration::from_millis(100), Duration::from_secs(1))
        }
        _ => Duration::from_millis(10),
    }
}

/// What the first bytes of a connection say.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Sniffed {
    /// Not enough bytes yet.
    NeedMore,
    /// An HTTP/1.x request line: a method token (upper-case letters) then a space.
    Http,
    /// A Bolt frame: protocol byte 1 (v1) or 2 (v2), then a type byte 0, 1 or 2.
    Bolt,
    /// Neither.
    Unknown,
}

/// Classifies the first bytes of a connection (see [`Sniffed`]).
pub(crate) fn sniff(bytes: &[u8]) -> Sniffed {
    let Some(&b0) = bytes.first() else {
        return Sniffed::NeedMore;
    };
    if b0 == 1 || b0 == 2 {
        // v1: type at byte 1; v2: ver1 at byte 1, type at byte 2.
        let type_at = if b0 == 1 { 1 } else { 2 };
        return match bytes.get(type_at) {
            None => Sniffed::NeedMore,
            Some(0..=2) => Sniffed::Bolt,
            Some(_) => Sniffed::Unknown,
        };
    }
    // The longest standard method is OPTIONS / CONNECT (7 letters); allow extension methods of
    // up to 15 upper-case letters.
    for (i, &b) in bytes.iter().enumerate() {
        match b {
            b'A'..=b'Z' | b'-' | b'_' if i < 15 => {}
            b' ' if i > 0 => return Sniffed::Http,
            _ => return Sniffed::Unknown,
        }
    }
    Sniffed::NeedMore
}

/// Takes live Bolt connections off a draining engine (connection migration, MOSN's feature):
/// Bolt cannot tell a client to reconnect, and closing a connection races with the request the
/// client may be writing at that moment. With a handoff, a draining engine stops reading from
/// each Bolt connection (what the client sends next waits in the socket), lets the requests in
/// flight finish, and hands the connection over with the bytes it read but did not process —
/// to the next config generation (a reload, in process), or to the new instance (an upgrade,
/// as a file descriptor). Without one (a plain stop), it closes the connection once idle.
pub trait Handoff<S> {
    /// Whether connections can be handed over now.
    fn ready(&self) -> bool;
    /// The most read-but-unprocessed bytes a connection can carry over (a longer partial frame
    /// is completed and served here first).
    fn max_unread(&self) -> usize {
        usize::MAX
    }
    /// Takes one connection of the listener at `listener` (the bytes in `unread` first).
    fn take(&self, listener: SocketAddr, stream: S, peer: SocketAddr, unread: Vec<u8>);
}

/// Shared by a process's workers: the sender of connections to migrate to a new instance, set
/// when one took over (see [`crate::control::Migration`]).
pub type MigrationSlot =
    Arc<std::sync::Mutex<Option<std::sync::mpsc::Sender<crate::control::Migrated>>>>;

/// [`Handoff`] to a new instance: the connection's socket goes through the control socket.
pub struct ProcessHandoff(pub MigrationSlot);

impl<N: Network> Handoff<N::Stream> for (ProcessHandoff, std::marker::PhantomData<N>) {
    fn ready(&self) -> bool {
        self.0.0.lock().is_ok_and(|s| s.is_some())
    }

    fn max_unread(&self) -> usize {
        crate::control::MAX_MIGRATED_UNREAD
    }

    fn take(&self, listener: SocketAddr, stream: N::Stream, _peer: SocketAddr, unread: Vec<u8>) {
        let to = self.0.0.lock().ok().and_then(|s| s.clone());
        if let (Some(to), Some(fd)) = (to, N::into_fd(stream)) {
            let _ = to.send(crate::control::Migrated {
                listener,
                stream: fd,
                unread,
            });
        }
    }
}

impl<N: Network> Engine<N> {
    /// Sets where this engine's Bolt connections go when it drains (see [`Handoff`]).
    pub fn set_handoff(&self, handoff: Rc<dyn Handoff<N::Stream>>) {
        *self.handoff.borrow_mut() = Some(handoff);
    }

    /// The handoff, when it can take connections now.
    pub(crate) fn ready_handoff(&self) -> Option<Rc<dyn Handoff<N::Stream>>> {
        self.handoff.borrow().clone().filter(|h| h.ready())
    }

    /// Serves a Bolt connection taken over from another engine or instance, as a session of
    /// the Bolt (or `protocol: auto`) listener at `listener`, its unread bytes first; closes it
    /// when there is no such listener.
    pub fn adopt(
        self: Rc<Self>,
        listener: SocketAddr,
        stream: N::Stream,
        peer: SocketAddr,
        unread: Vec<u8>,
    ) {
        let index = self.config.listeners.iter().position(|l| {
            l.address == listener
                && matches!(
                    l.filter,
                    ListenerFilter::Bolt(_) | ListenerFilter::Auto { .. }
                )
        });
        match index {
            Some(index) => self.adopt_bolt(index, stream, peer, unread),
            None => warn!(%listener, "a migrated connection has no Bolt listener here; closed"),
        }
    }

    /// Serves a Bolt connection migrated from the previous instance as a session of listener
    /// `index`, its unread bytes first.
    pub fn adopt_bolt(
        self: Rc<Self>,
        index: usize,
        stream: N::Stream,
        peer: SocketAddr,
        unread: Vec<u8>,
    ) {
        // A migrated connection is served whatever the limits say (it was admitted once).
        self.limits.force_admit(&self.listener_cx[index]);
        bump(&self.stats().downstream_cx_total, 1);
        if let Some(l) = self.listener_stats(index) {
            bump(&l.downstream_cx_total, 1);
        }
        self.lifecycle.session_opened();
        // A captured connection keeps its original destination across the upgrade: the kernel
        // still knows it (connection tracking, or the socket's local address for TPROXY). It
        // may have been handed off, so it is read as the config's capture listener reads.
        let original_dst = self.config.listeners.iter().find_map(|l| {
            let how = l.original_dst?;
            self.net().original_destination(&stream, how, l.address)
        });
        tokio::task::spawn_local(async move {
            let guard = SessionGuard(&self, index);
            self.bolt_connection(
                index,
                Downstream::Plain(stream),
                peer,
                &unread,
                original_dst,
                None,
            )
            .await;
            drop(guard);
        });
    }
}

/// Counts a session out when its task ends, however it ends.
struct SessionGuard<'a, N: Network>(&'a Engine<N>, usize);

impl<N: Network> Drop for SessionGuard<'_, N> {
    fn drop(&mut self) {
        let e = self.0;
        e.limits.release(&e.listener_cx[self.1]);
        bump(&e.stats().downstream_cx_closed, 1);
        if let Some(l) = e.stats().listener(self.1) {
            bump(&l.downstream_cx_closed, 1);
        }
        e.lifecycle.session_closed();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_back_off_doubles_from_100ms_to_1s_when_out_of_descriptors() {
        let emfile = std::io::Error::from_raw_os_error(24);
        let mut d = Duration::ZERO;
        let mut seen = Vec::new();
        for _ in 0..6 {
            d = accept_backoff(&emfile, d);
            seen.push(d.as_millis());
        }
        assert_eq!(seen, [100, 200, 400, 800, 1000, 1000]);
        let aborted = std::io::Error::from_raw_os_error(103);
        assert_eq!(
            accept_backoff(&aborted, Duration::from_secs(1)),
            Duration::from_millis(10)
        );
    }

    /// The most an idle `tcp_proxy` session's boxed future may take, in a debug build (1,624 B
    /// when this was written; a release build lays it out smaller). It holds what the session
    /// needs while relaying; the connect phase (an upstream TLS handshake) and the ClientHello
    /// peek are boxed apart while they run, and the drain watch is lent to the relay rather
    /// than copied into each layer of its futures (issue 15: with the connect inline the
    /// future took 2,776 B in a release build, 1,848 B in a debug one with the connect boxed).
    const TCP_SESSION_FUTURE_MAX: usize = 1664;

    /// What an idle `tcp_proxy` session holds in its boxed future, printed for BENCHMARKS.md
    /// (`cargo test -p sluice-runtime --lib tcp_session_future_size -- --nocapture`).
    #[test]
    fn tcp_session_future_size() {
        use crate::net::TokioNet;
        use crate::test_support::{bound, on_local_runtime};
        on_local_runtime(async {
            let (listener, at) = bound();
            let yaml = format!(
                "listeners: [ {{ name: t, address: {at}, tcp_proxy: {{ cluster: up }} }} ]\n\
                 clusters: [ {{ name: up, hosts: [ {{ address: 127.0.0.1:1 }} ] }} ]\n"
            );
            let config = Arc::new(Config::from_yaml(&yaml).unwrap());
            let stats = Arc::new(WorkerStats::new(&config));
            let engine = Engine::new(TokioNet::default(), config.clone(), 0, 1, stats).unwrap();
            let client = tokio::net::TcpStream::connect(at).await.unwrap();
            let (server, peer) = listener.accept().await.unwrap();
            let lc = &config.listeners[0];
            let ListenerFilter::TcpProxy(tp) = &lc.filter else {
                unreachable!()
            };
            let (spliced, copied) = {
                let mut s = TcpSession::new(
                    now(),
                    SessionConfig {
                        connect_timeout: Duration::from_secs(1),
                        idle_timeout: None,
                        max_connect_attempts: 1,
                    },
                );
                let mut on_timeout = |_: &mut TcpSession| {};
                let mut drain = std::pin::pin!(engine.lifecycle.drain_expired());
                let ctx = crate::splice::SpliceCtx {
                    pipes: &engine.pipes,
                    buffers: &engine.http_buffers,
                    chunks_copied: &engine.stats().tcp_relay_chunks_copied,
                };
                let f = crate::splice::relay_spliced(
                    &mut s,
                    &server,
                    &server,
                    &ctx,
                    drain.as_mut(),
                    &mut on_timeout,
                );
                let spliced = std::mem::size_of_val(&f);
                drop(f);
                let (mut a, mut b) = (
                    tokio::net::TcpStream::connect(at).await.unwrap(),
                    tokio::net::TcpStream::connect(at).await.unwrap(),
                );
                let f = relay(
                    &mut s,
                    &mut a,
                    &mut b,
                    &engine.http_buffers,
                    drain.as_mut(),
                    &mut on_timeout,
                );
                (spliced, std::mem::size_of_val(&f))
            };
            println!(
                "relay_spliced future: {spliced} B; relay: {copied} B; TcpLogFacts: {} B",
                std::mem::size_of::<TcpLogFacts<'_>>()
            );
            let session = engine.tcp_proxy(0, lc, tp, server, peer, None, None);
            let size = std::mem::size_of_val(&session);
            drop(session);
            drop(client);
            println!(
                "tcp_proxy session future (boxed at accept, held while idle): {size} B; \
                 TcpSession: {} B; TcpStream: {} B",
                std::mem::size_of::<TcpSession>(),
                std::mem::size_of::<tokio::net::TcpStream>(),
            );
            assert!(
                size <= TCP_SESSION_FUTURE_MAX,
                "an idle tcp_proxy session's future is {size} B (at most {TCP_SESSION_FUTURE_MAX})"
            );
        });
    }
}
