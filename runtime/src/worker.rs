//! One worker: its listening sockets and its config generations, on any [`Network`].
//!
//! A [`Worker`] owns the generation that serves (an [`Engine`] running on the worker's
//! listening sockets) and the earlier generations still draining. The binary drives one per
//! worker thread (`server::worker_thread::worker_main`; threads, channels and signals stay in
//! the server); the simulator drives the same type on turmoil for its reload and upgrade
//! scenarios, so there is one copy of generation switching.
//!
//! Generations are numbered from 0 in the order they start. Each one's life:
//!
//! ```text
//!   serving ──(switch / reload: a newer generation takes the sockets)──▶ draining ──▶ ended
//!      └────────────(stop: SIGTERM, or an upgrade's old instance)───────────┘
//! ```
//!
//! - **serving**: exactly one generation at a time (the *current* one) accepts on the sockets.
//! - **switch** ([`Worker::switch`], or [`Worker::reload`], which first takes the sockets off
//!   the serving engine, matches them to the new config with [`sluice_core::config::diff`]
//!   and stops the old generation's health checks — the new one runs its own): counters move
//!   to the new generation, the old generation's Bolt connections migrate to whichever
//!   generation serves when they become idle, and it drains.
//! - **draining**: the engine stops accepting and finishes or closes its connections within the
//!   config's `drain_timeout` (the engine's drain). When it has ended, what it counted while
//!   draining is added to the generation serving then.
//! - **stop** ([`Worker::stop`]): the current generation drains too, without a successor;
//!   [`Worker::drained`] completes once every generation has ended.
//!
//! Not every config change is a generation: an endpoints-only xDS update changes the serving
//! generation's host sets in place ([`Worker::apply_endpoints`], see [`crate::dns`]).
//!
//! What happened is observable: [`WorkerEvent`]s are given, as they happen, to the hook the
//! driver set ([`WorkerHooks::on_event`]), and [`WorkerStatus`] (a handle that outlives the
//! worker) lists every generation with when it started and ended and its open connections.
//!
//! Invariants: one serving generation; a generation's stop is sent once; every generation's
//! task is awaited by [`Worker::drained`] (none is detached past the worker's end).

use std::cell::RefCell;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;

use sluice_core::config::Config;
use sluice_core::config::diff::{ListenerSocket, diff};
use tokio::sync::watch;

use crate::engine::{Engine, Handoff};
use crate::net::Network;
use crate::stats::WorkerStats;

/// Something that happened to a worker's generations, given to [`WorkerHooks::on_event`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WorkerEvent {
    /// A generation started serving (accepting on the worker's sockets).
    GenerationStarted {
        /// Its number (from 0, in start order).
        generation: u64,
    },
    /// A generation was told to drain: replaced by a newer one, or stopped.
    GenerationDraining {
        /// Its number.
        generation: u64,
    },
    /// A generation's engine returned: every connection of it closed (or migrated).
    GenerationEnded {
        /// Its number.
        generation: u64,
    },
}

/// What the driver gives a worker besides its first engine.
#[derive(Default)]
pub struct WorkerHooks {
    /// The admin API's `/drain_listeners`: once `true`, every generation closes its listening
    /// sockets (open connections carry on). `None`: never.
    pub close_listeners: Option<watch::Receiver<bool>>,
    /// Called with each [`WorkerEvent`] as it happens (on the worker's thread).
    pub on_event: Option<Box<dyn Fn(WorkerEvent)>>,
}

/// One generation as [`WorkerStatus`] reports it.
#[derive(Clone)]
pub struct GenerationStatus {
    /// Its number (from 0, in start order).
    pub generation: u64,
    /// When it started serving (the runtime's clock, [`crate::now`]).
    pub started: sluice_core::Instant,
    /// When it was told to drain, if it was.
    pub draining: Option<sluice_core::Instant>,
    /// When its engine returned, if it did.
    pub ended: Option<sluice_core::Instant>,
    /// Its counters (still its own while it drains; moved to the successor when it ends).
    pub stats: Arc<WorkerStats>,
}

impl GenerationStatus {
    /// Its downstream connections open now.
    #[must_use]
    pub fn open_connections(&self) -> u64 {
        self.stats.snapshot().downstream_cx_active()
    }
}

/// How many ended generations a [`WorkerStatus`] remembers. A process reloaded every few
/// seconds for months must not keep every generation's counters alive: the oldest ended ones
/// are forgotten beyond this (the ones still serving or draining are always kept).
pub const ENDED_GENERATIONS_KEPT: usize = 16;

/// A handle on a worker's generations (cheap to clone; readable after the worker is gone).
#[derive(Clone, Default)]
pub struct WorkerStatus(Rc<RefCell<Vec<GenerationStatus>>>);

impl WorkerStatus {
    /// The generations still serving or draining, and the last [`ENDED_GENERATIONS_KEPT`] that
    /// ended, in start order.
    #[must_use]
    pub fn generations(&self) -> Vec<GenerationStatus> {
        self.0.borrow().clone()
    }

    /// One generation, by number.
    #[must_use]
    pub fn generation(&self, generation: u64) -> Option<GenerationStatus> {
        self.0
            .borrow()
            .iter()
            .find(|g| g.generation == generation)
            .cloned()
    }

    fn update(&self, generation: u64, f: impl FnOnce(&mut GenerationStatus)) {
        if let Some(g) = self
            .0
            .borrow_mut()
            .iter_mut()
            .find(|g| g.generation == generation)
        {
            f(g);
        }
        self.forget_old_ended();
    }

    fn push(&self, generation: GenerationStatus) {
        self.0.borrow_mut().push(generation);
        self.forget_old_ended();
    }

    /// Drops the oldest ended generations beyond [`ENDED_GENERATIONS_KEPT`].
    fn forget_old_ended(&self) {
        let mut all = self.0.borrow_mut();
        let mut excess = all
            .iter()
            .filter(|g| g.ended.is_some())
            .count()
            .saturating_sub(ENDED_GENERATIONS_KEPT);
        all.retain(|g| {
            if excess > 0 && g.ended.is_some() {
                excess -= 1;
                false
            } else {
                true
            }
        });
    }
}

/// The serving generation.
struct Serving<N: Network> {
    generation: u64,
    engine: Rc<Engine<N>>,
    /// Set to `true` to make it drain.
    stop: watch::Sender<bool>,
    /// Set when it is replaced; read by its task when it ends.
    retired: RetiredSlot<N>,
}

/// A replaced generation's counters, and the worker's serving generation to move them to.
type RetiredSlot<N> = Rc<RefCell<Option<(Retired, Rc<RefCell<Serving<N>>>)>>>;

/// Counters of a replaced generation, to move to the serving one when it has drained.
struct Retired {
    config: Arc<Config>,
    /// Its counters at the switch (already moved then).
    at_switch: WorkerStats,
}

/// One worker's listeners and config generations (see the module doc).
pub struct Worker<N: Network> {
    current: Rc<RefCell<Serving<N>>>,
    /// Every generation's task not awaited yet (the serving one and those draining).
    tasks: Vec<tokio::task::JoinHandle<()>>,
    next_generation: u64,
    status: WorkerStatus,
    close_listeners: Option<watch::Receiver<bool>>,
    on_event: Rc<dyn Fn(WorkerEvent)>,
    stopped: bool,
}

impl<N: Network> Worker<N> {
    /// Starts serving `engine` on `listeners` (one per listener of its config, in order) as
    /// generation 0. Must run inside a `LocalSet`.
    pub fn start(engine: Rc<Engine<N>>, listeners: Vec<N::Listener>, hooks: WorkerHooks) -> Self {
        let WorkerHooks {
            close_listeners,
            on_event,
        } = hooks;
        let on_event: Rc<dyn Fn(WorkerEvent)> = match on_event {
            Some(f) => Rc::from(f),
            None => Rc::new(|_| {}),
        };
        let status = WorkerStatus::default();
        let (serving, task) = start_generation(
            0,
            engine,
            listeners,
            close_listeners.as_ref(),
            &status,
            &on_event,
        );
        let current = Rc::new(RefCell::new(serving));
        Worker {
            current,
            tasks: vec![task],
            next_generation: 1,
            status,
            close_listeners,
            on_event,
            stopped: false,
        }
    }

    /// The serving generation's engine.
    #[must_use]
    pub fn engine(&self) -> Rc<Engine<N>> {
        self.current.borrow().engine.clone()
    }

    /// The serving generation's number.
    #[must_use]
    pub fn generation(&self) -> u64 {
        self.current.borrow().generation
    }

    /// A handle on every generation's status.
    #[must_use]
    pub fn status(&self) -> WorkerStatus {
        self.status.clone()
    }

    /// Serves a connection taken over from elsewhere (an upgrade's migration) on the serving
    /// generation (see [`Engine::adopt`]).
    pub fn adopt(
        &self,
        listener: SocketAddr,
        stream: N::Stream,
        peer: SocketAddr,
        unread: Vec<u8>,
    ) {
        self.engine().adopt(listener, stream, peer, unread);
    }

    /// Reopens the serving generation's access log files (log rotation).
    pub fn reopen_access_logs(&self) {
        self.engine().reopen_access_logs();
    }

    /// Takes the listening sockets off the serving engine (it stops accepting; its connections
    /// carry on), in its config's order, `None` for one closed by `/drain_listeners`.
    pub async fn take_listeners(&self) -> Vec<Option<N::Listener>> {
        self.engine().take_listeners().await
    }

    /// A reload: takes the sockets off the serving engine and switches to `engine` (built by
    /// the driver for the new config). Per [`sluice_core::config::diff`], a listener whose
    /// address the serving config has keeps that socket (its backlog included), unless it was
    /// closed (`/drain_listeners`); every other socket comes from `socket_for(index in the new
    /// config)`; sockets of removed addresses close.
    ///
    /// All or nothing: every socket `socket_for` must give is asked for *before* anything is
    /// taken off the serving engine, so that when one cannot be had (an address in use) the
    /// reload fails with those errors and the serving generation carries on untouched — a new
    /// generation never starts short of a listener. The one failure past that point is a
    /// `/drain_listeners` landing while the sockets are handed over: the kept sockets then
    /// close (as asked), nothing switches, and the serving generation drains its connections.
    pub async fn reload(
        &mut self,
        engine: Rc<Engine<N>>,
        mut socket_for: impl FnMut(usize) -> io::Result<N::Listener>,
    ) -> Result<(), Vec<io::Error>> {
        let old_config = self.engine().config.clone();
        let changes = diff(&old_config, &engine.config);
        // Closed by /drain_listeners: no socket is kept, every one is asked for.
        let closed = self.engine().listeners_closed();
        let mut fresh: Vec<Option<N::Listener>> = Vec::with_capacity(changes.sockets.len());
        let mut failed = Vec::new();
        for (i, socket) in changes.sockets.iter().enumerate() {
            let needed = closed || *socket == ListenerSocket::Bind;
            fresh.push(match needed.then(|| socket_for(i)) {
                Some(Ok(l)) => Some(l),
                Some(Err(e)) => {
                    failed.push(e);
                    None
                }
                None => None,
            });
        }
        if !failed.is_empty() {
            // The sockets given so far close; nothing else changed.
            return Err(failed);
        }
        let mut previous = self.take_listeners().await;
        let mut listeners = Vec::with_capacity(changes.sockets.len());
        for (socket, fresh) in changes.sockets.iter().zip(fresh) {
            let kept = match *socket {
                ListenerSocket::Keep { previous: p } if fresh.is_none() => {
                    previous.get_mut(p).and_then(Option::take)
                }
                _ => fresh,
            };
            match kept {
                Some(l) => listeners.push(l),
                None => {
                    return Err(vec![io::Error::other(
                        "the listeners were closed (/drain_listeners) while the reload took \
                         them over: nothing switched",
                    )]);
                }
            }
        }
        // The new config's generation runs its own health checks; the old one's verdicts are
        // not needed for new connections any more.
        self.engine().stop_health_checks();
        // The sockets of removed addresses close here.
        drop(previous);
        self.switch(engine, listeners);
        Ok(())
    }

    /// Switches to a new generation: `engine` serves `listeners` (one per listener of its
    /// config, in order; taken off the serving engine, or given back, or fresh); the serving
    /// generation's counters move to it, its Bolt connections migrate to the serving
    /// generation as they become idle, and it drains. Its health checks run on until it has
    /// drained (its open connections keep current verdicts), unless the caller stopped them:
    /// [`Worker::reload`] does, as the binary always has.
    pub fn switch(&mut self, engine: Rc<Engine<N>>, listeners: Vec<N::Listener>) {
        let old = self.engine();
        let old_config = old.config.clone();
        // Counters move to the new generation now; what the old one counts while it drains
        // follows when it has ended.
        engine
            .stats()
            .carry_over(old.stats(), &old_config, &engine.config);
        let retired = Retired {
            at_switch: old.stats().frozen(&old_config),
            config: old_config,
        };
        old.set_handoff(Rc::new(GenerationHandoff(self.current.clone())));
        let generation = self.next_generation;
        self.next_generation += 1;
        let (serving, task) = start_generation(
            generation,
            engine,
            listeners,
            self.close_listeners.as_ref(),
            &self.status,
            &self.on_event,
        );
        let previous = std::mem::replace(&mut *self.current.borrow_mut(), serving);
        // The old generation's task moves what it counts while draining to whichever
        // generation serves when it ends.
        *previous.retired.borrow_mut() = Some((retired, self.current.clone()));
        self.tasks.push(task);
        self.tasks.retain(|t| !t.is_finished());
        self.drain(&previous);
    }

    /// An endpoints-only update of `current` (the serving config) to `next` (clusters
    /// `changed`: [`sluice_core::config::diff::only_endpoints_differ`]) for a process of this
    /// one worker: merged into the serving generation's host slots, published and applied in
    /// place (see [`crate::dns`]); no generation switch. `None` (nothing changed) when a new
    /// host finds no free slot: switch instead. A process of several workers merges once
    /// ([`crate::dns::merge_endpoints_update`]) and has each apply it.
    pub fn apply_endpoints(
        &self,
        current: &Config,
        next: &Config,
        changed: &[usize],
    ) -> Option<crate::dns::EndpointsUpdate> {
        let engine = self.engine();
        let update = crate::dns::merge_endpoints_update(
            engine.upstreams.shared_health(),
            current,
            next,
            changed,
        )?;
        engine.apply_endpoints(&update);
        Some(update)
    }

    /// Stops the worker: the serving generation drains too (no successor). Await
    /// [`Worker::drained`] for the end.
    pub fn stop(&mut self) {
        if !self.stopped {
            self.stopped = true;
            let current = self.current.clone();
            self.drain(&current.borrow());
        }
    }

    /// Completes once every generation started so far has ended (call after [`Worker::stop`];
    /// the future owns what it waits for, so it can be spawned).
    pub fn drained(&mut self) -> impl std::future::Future<Output = ()> + 'static {
        let tasks = std::mem::take(&mut self.tasks);
        async move {
            for t in tasks {
                let _ = t.await;
            }
        }
    }

    fn drain(&self, generation: &Serving<N>) {
        let now = crate::now();
        self.status
            .update(generation.generation, |g| g.draining = Some(now));
        (self.on_event)(WorkerEvent::GenerationDraining {
            generation: generation.generation,
        });
        let _ = generation.stop.send(true);
    }
}

/// Starts `engine` on `listeners` as generation `generation`: records it, tells the hook, and
/// spawns its task (it serves until its stop, drains, then records its end).
fn start_generation<N: Network>(
    generation: u64,
    engine: Rc<Engine<N>>,
    listeners: Vec<N::Listener>,
    close_listeners: Option<&watch::Receiver<bool>>,
    status: &WorkerStatus,
    on_event: &Rc<dyn Fn(WorkerEvent)>,
) -> (Serving<N>, tokio::task::JoinHandle<()>) {
    let (stop, mut stop_rx) = watch::channel(false);
    let retired: RetiredSlot<N> = Rc::default();
    status.push(GenerationStatus {
        generation,
        started: crate::now(),
        draining: None,
        ended: None,
        stats: engine.stats().clone(),
    });
    on_event(WorkerEvent::GenerationStarted { generation });
    let mut close_listeners = close_listeners.cloned();
    let close = async move {
        let closed = match close_listeners.as_mut() {
            Some(c) => c.wait_for(|c| *c).await.is_ok(),
            None => false,
        };
        if !closed {
            // No admin side (or it is gone): never close early.
            std::future::pending::<()>().await;
        }
    };
    let stopped = async move {
        let _ = stop_rx.wait_for(|s| *s).await;
    };
    let task = {
        let (engine, status, on_event, retired) = (
            engine.clone(),
            status.clone(),
            on_event.clone(),
            retired.clone(),
        );
        tokio::task::spawn_local(async move {
            engine
                .clone()
                .run_with_drain(listeners, close, stopped)
                .await;
            if let Some((r, current)) = retired.borrow_mut().take() {
                let now = current.borrow().engine.clone();
                now.stats()
                    .transfer(engine.stats(), &r.at_switch, &r.config, &now.config);
            }
            let at = crate::now();
            status.update(generation, |g| g.ended = Some(at));
            on_event(WorkerEvent::GenerationEnded { generation });
        })
    };
    (
        Serving {
            generation,
            engine,
            stop,
            retired,
        },
        task,
    )
}

/// The handoff of a replaced generation: its Bolt connections go to the generation serving
/// when they are handed over (a reload moves live Bolt connections rather than closing them).
struct GenerationHandoff<N: Network>(Rc<RefCell<Serving<N>>>);

impl<N: Network> Handoff<N::Stream> for GenerationHandoff<N> {
    fn ready(&self) -> bool {
        true
    }

    fn take(&self, listener: SocketAddr, stream: N::Stream, peer: SocketAddr, unread: Vec<u8>) {
        let engine = self.0.borrow().engine.clone();
        engine.adopt(listener, stream, peer, unread);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    use super::*;
    use crate::net::TokioNet;

    fn echo_config(ports: &[u16]) -> Arc<Config> {
        use std::fmt::Write as _;
        let mut yaml = String::from("listeners:\n");
        for (i, port) in ports.iter().enumerate() {
            let _ = write!(
                yaml,
                "  - name: echo{i}\n    address: 127.0.0.1:{port}\n    echo: {{}}\n"
            );
        }
        yaml.push_str(
            "clusters: [{ name: unused, hosts: [{ address: 127.0.0.1:9 }] }]\ndrain_timeout: 2s\n",
        );
        Arc::new(Config::from_yaml(&yaml).unwrap_or_else(|e| panic!("{e}\n{yaml}")))
    }

    fn engine(config: &Arc<Config>) -> Rc<Engine<TokioNet>> {
        let stats = Arc::new(WorkerStats::new(config));
        Engine::new(TokioNet::default(), config.clone(), 0, 1, stats).expect("engine")
    }

    fn listener() -> (tokio::net::TcpListener, u16) {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.set_nonblocking(true).expect("nonblocking");
        let port = l.local_addr().expect("address").port();
        (
            tokio::net::TcpListener::from_std(l).expect("tokio listener"),
            port,
        )
    }

    async fn echoes(s: &mut tokio::net::TcpStream, what: &[u8]) {
        s.write_all(what).await.expect("write");
        let mut back = vec![0; what.len()];
        tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut back))
            .await
            .expect("echo in time")
            .expect("echo");
        assert_eq!(back, what);
    }

    async fn until(what: &str, mut done: impl FnMut() -> bool) {
        for _ in 0..500 {
            if done() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("timed out waiting for {what}");
    }

    /// A reload keeps the socket of a known address and binds a new one; the old generation
    /// drains its open connection, reports it, and ends when it closes; its counters move on.
    #[test]
    fn a_reload_switches_generations_and_reports_what_happened() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        tokio::task::LocalSet::new().block_on(&rt, async {
            let (first, port) = listener();
            let (second, added) = listener();
            let before = echo_config(&[port]);
            let after = echo_config(&[port, added]);
            let events = Rc::new(RefCell::new(Vec::new()));
            let seen = events.clone();
            let mut worker = Worker::start(
                engine(&before),
                vec![first],
                WorkerHooks {
                    close_listeners: None,
                    on_event: Some(Box::new(move |e| seen.borrow_mut().push(e))),
                },
            );
            let status = worker.status();
            let mut old_conn = tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .expect("connect");
            echoes(&mut old_conn, b"before").await;

            let mut second = Some(second);
            let mut asked = Vec::new();
            let failed = worker
                .reload(engine(&after), |i| {
                    asked.push(i);
                    second.take().ok_or_else(|| io::Error::other("asked twice"))
                })
                .await;
            assert!(failed.is_ok(), "{failed:?}");
            assert_eq!(asked, [1], "only the new address needs a socket");
            assert_eq!(worker.generation(), 1);
            use WorkerEvent::*;
            assert_eq!(
                *events.borrow(),
                [
                    GenerationStarted { generation: 0 },
                    GenerationStarted { generation: 1 },
                    GenerationDraining { generation: 0 },
                ]
            );

            // The kept socket and the new one are served by generation 1; the old connection
            // still by generation 0, which drains.
            for p in [port, added] {
                let mut c = tokio::net::TcpStream::connect(("127.0.0.1", p))
                    .await
                    .expect("connect");
                echoes(&mut c, b"after").await;
            }
            echoes(&mut old_conn, b"draining").await;
            let old = status.generation(0).expect("generation 0");
            assert!(old.draining.is_some() && old.ended.is_none());
            assert_eq!(old.open_connections(), 1);

            drop(old_conn);
            until("generation 0 to end", || {
                status.generation(0).is_some_and(|g| g.ended.is_some())
            })
            .await;
            assert_eq!(
                events.borrow().last(),
                Some(&GenerationEnded { generation: 0 })
            );
            // Its connection was counted, then moved to generation 1 (2 of its own).
            until("generation 1's connections to close", || {
                status
                    .generation(1)
                    .is_some_and(|g| g.open_connections() == 0)
            })
            .await;
            let now = status.generation(1).expect("generation 1");
            assert_eq!(now.stats.snapshot().downstream_cx_total, 3);

            worker.stop();
            worker.drained().await;
            let all = status.generations();
            assert_eq!(all.len(), 2);
            assert!(all.iter().all(|g| g.ended.is_some()));
            assert_eq!(
                events.borrow().last(),
                Some(&GenerationEnded { generation: 1 })
            );
        });
    }

    /// An endpoints-only update applied in place (issue 13): no new generation; the host that
    /// stays keeps its health verdict at once; the active health checks (worker 0) follow the
    /// new host set: the new host is probed and becomes healthy, the removed one's slot is no
    /// longer probed as it; the worker's cluster picks only the new set.
    #[test]
    fn endpoints_updated_in_place_are_health_checked_and_keep_the_verdicts_of_hosts_that_stay() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        tokio::task::LocalSet::new().block_on(&rt, async {
            let (a, port_a) = listener();
            let (b, port_b) = listener();
            let (c, port_c) = listener();
            // The upstreams only accept (TCP probes pass on connect).
            for l in [a, b, c] {
                tokio::task::spawn_local(async move {
                    loop {
                        let _ = l.accept().await;
                    }
                });
            }
            let (socket, _) = listener();
            let yaml = |ports: &[u16]| {
                let hosts: Vec<String> = ports
                    .iter()
                    .map(|p| format!("{{ address: 127.0.0.1:{p} }}"))
                    .collect();
                format!(
                    "listeners:\n  - {{ name: t, address: 127.0.0.1:1, tcp_proxy: {{ cluster: app }} }}\n\
                     clusters:\n  - name: app\n    hosts: [{}]\n    health_check: {{ tcp: {{}}, interval: 50ms, timeout: 200ms, no_traffic_interval: 50ms, healthy_threshold: 1, unhealthy_threshold: 1 }}\n",
                    hosts.join(", ")
                )
            };
            let before = Arc::new(Config::from_yaml(&yaml(&[port_a, port_b])).expect("config"));
            let after = Config::from_yaml(&yaml(&[port_a, port_c])).expect("config");
            let shared = Arc::new(crate::health::SharedHealth::new(&before));
            let engine = Engine::new_worker(
                TokioNet::default(),
                before.clone(),
                0,
                1,
                1,
                Arc::new(WorkerStats::new(&before)),
                shared.clone(),
                Arc::new(crate::limits::ProcessLimits::new(&before)),
            )
            .expect("engine");
            let worker = Worker::start(engine, vec![socket], WorkerHooks::default());
            let slot = |id: u32, epoch: u32| sluice_core::cluster::HostRef {
                id: sluice_core::cluster::HostId(id),
                epoch,
            };
            until("a and b healthy", || {
                shared.is_healthy_for(0, slot(0, 0)) && shared.is_healthy_for(0, slot(1, 0))
            })
            .await;

            let changed = sluice_core::config::diff::only_endpoints_differ(&before, &after)
                .expect("an endpoints-only update");
            let update = worker
                .apply_endpoints(&before, &after, &changed)
                .expect("room for c: b's id");
            assert_eq!((update.added, update.removed), (1, 1));
            assert_eq!(worker.generation(), 0, "no new generation");
            // a stays (id 0, its verdict kept); c took b's id with a new epoch: unknown until
            // its own probe passed.
            assert!(shared.is_healthy_for(0, slot(0, 0)), "a keeps its verdict");
            assert!(!shared.is_healthy_for(0, slot(1, 1)), "c is not healthy yet");
            until("c probed and healthy", || shared.is_healthy_for(0, slot(1, 1))).await;
            // The worker's cluster has a and c, not b.
            let addresses: Vec<u16> = {
                let engine = worker.engine();
                let cluster = engine.upstreams.cluster(0).borrow();
                (0..2)
                    .filter(|&i| cluster.is_present(sluice_core::cluster::HostId(i)))
                    .map(|i| cluster.host(sluice_core::cluster::HostId(i)).address.port())
                    .collect()
            };
            assert_eq!(addresses, [port_a, port_c]);
            let mut worker = worker;
            worker.stop();
            worker.drained().await;
        });
    }

    /// A cluster of no hosts (an EDS assignment that lists no endpoint: a service with no
    /// ready pod) closes a TCP proxy's connections; an endpoints-only update that brings a
    /// host fills it in place (its spare ids), without a new generation, and the next
    /// connection reaches that host.
    #[test]
    fn a_cluster_of_no_hosts_gets_its_first_host_in_place() {
        use tokio::io::AsyncReadExt;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        tokio::task::LocalSet::new().block_on(&rt, async {
            let (up, port_up) = listener();
            tokio::task::spawn_local(async move {
                loop {
                    let Ok((mut c, _)) = up.accept().await else { return };
                    tokio::task::spawn_local(async move {
                        let mut buf = [0u8; 64];
                        while let Ok(n) = c.read(&mut buf).await {
                            if n == 0 || c.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    });
                }
            });
            let (socket, port) = listener();
            // With `xds`, every static cluster's hosts may change in place.
            let yaml = |hosts: &str| {
                format!(
                    "listeners:\n  - {{ name: t, address: 127.0.0.1:1, tcp_proxy: {{ cluster: app }} }}\n\
                     clusters:\n  - {{ name: app, hosts: [{hosts}] }}\n  - {{ name: ctl, hosts: [ {{ address: 127.0.0.1:9 }} ] }}\n\
                     xds: {{ cluster: ctl }}\n"
                )
            };
            let before = Arc::new(Config::from_yaml(&yaml("")).expect("config"));
            let after = Config::from_yaml(&yaml(&format!("{{ address: 127.0.0.1:{port_up} }}")))
                .expect("config");
            let engine = Engine::new_worker(
                TokioNet::default(),
                before.clone(),
                0,
                1,
                1,
                Arc::new(WorkerStats::new(&before)),
                Arc::new(crate::health::SharedHealth::new(&before)),
                Arc::new(crate::limits::ProcessLimits::new(&before)),
            )
            .expect("engine");
            let worker = Worker::start(engine, vec![socket], WorkerHooks::default());
            // No host: closed without a byte.
            let mut c = tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .expect("connect");
            let _ = c.write_all(b"anyone?").await;
            let mut got = Vec::new();
            let _ = c.read_to_end(&mut got).await;
            assert!(got.is_empty(), "{got:?}");

            let changed = sluice_core::config::diff::only_endpoints_differ(&before, &after)
                .expect("an endpoints-only update");
            let update = worker
                .apply_endpoints(&before, &after, &changed)
                .expect("room in the spare ids");
            assert_eq!((update.added, update.removed), (1, 0));
            assert_eq!(worker.generation(), 0, "no new generation");
            let mut c = tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .expect("connect");
            echoes(&mut c, b"now there is one").await;
            drop(c);
            let mut worker = worker;
            worker.stop();
            worker.drained().await;
        });
    }

    /// Issue 13: the hosts of a cluster with `transport_socket_matches` (every Istio outbound
    /// cluster) change in place too. A push that re-weights a host and adds one keeps every
    /// host's id, epoch and health verdict; a push that takes one host's label off (its pick
    /// goes from the mTLS entry to the plaintext one) gives that host another id — a new
    /// epoch, a new pool, probed afresh — with its new transport in its slot, while the others
    /// keep theirs. No generation switch either time. The mTLS entry has real TLS (the
    /// upstreams serve it): the health checks reach each host with its pick — a TLS handshake
    /// to a host labelled `tlsMode: istio`, plaintext to b once its label is gone.
    #[test]
    fn hosts_of_a_transport_socket_matches_cluster_change_in_place_and_a_pick_change_is_a_new_host()
    {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        tokio::task::LocalSet::new().block_on(&rt, async {
            let (a, port_a) = listener();
            let (b, port_b) = listener();
            let (c, port_c) = listener();
            // Every upstream serves TLS (svc.test) to a client that starts a handshake, and
            // records how each connection started: (port, TLS).
            let cert = rcgen::generate_simple_self_signed(vec!["svc.test".to_owned()])
                .expect("certificate");
            let ca = format!("{{ inline: {:?} }}", cert.cert.pem());
            let server = rustls::ServerConfig::builder_with_provider(Arc::new(
                rustls::crypto::aws_lc_rs::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.cert.der().clone()],
                rustls::pki_types::PrivateKeyDer::try_from(cert.signing_key.serialize_der())
                    .expect("key"),
            )
            .expect("server config");
            let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
            let started = Rc::new(RefCell::new(Vec::<(u16, bool)>::new()));
            for (l, port) in [(a, port_a), (b, port_b), (c, port_c)] {
                let acceptor = acceptor.clone();
                let started = started.clone();
                tokio::task::spawn_local(async move {
                    loop {
                        let Ok((s, _)) = l.accept().await else {
                            return;
                        };
                        let acceptor = acceptor.clone();
                        let started = started.clone();
                        tokio::task::spawn_local(async move {
                            let mut first = [0; 1];
                            // A plaintext TCP probe connects and closes: no byte.
                            let tls = matches!(s.peek(&mut first).await, Ok(1) if first[0] == 0x16);
                            started.borrow_mut().push((port, tls));
                            if tls && let Ok(mut t) = acceptor.accept(s).await {
                                let _ = t.read(&mut first).await;
                            }
                        });
                    }
                });
            }
            let started_at = |port: u16| -> Vec<bool> {
                started
                    .borrow()
                    .iter()
                    .filter(|(p, _)| *p == port)
                    .map(|(_, tls)| *tls)
                    .collect()
            };
            let (socket, _) = listener();
            // (port, weight, labelled `tlsMode: istio`)
            let yaml = |hosts: &[(u16, u32, bool)]| {
                let hosts: Vec<String> = hosts
                    .iter()
                    .map(|(p, w, istio)| {
                        let label = if *istio {
                            ", transport_socket_match: { tlsMode: istio }"
                        } else {
                            ""
                        };
                        format!("{{ address: 127.0.0.1:{p}, weight: {w}{label} }}")
                    })
                    .collect();
                format!(
                    "listeners:\n  - {{ name: t, address: 127.0.0.1:1, tcp_proxy: {{ cluster: app }} }}\n\
                     clusters:\n  - name: app\n    hosts: [{}]\n\
                     \x20   transport_socket_matches: [ {{ name: mtls, match: {{ tlsMode: istio }}, tls: {{ sni: svc.test, ca: {ca} }} }}, {{ name: plain }} ]\n\
                     \x20   health_check: {{ tcp: {{}}, interval: 50ms, timeout: 200ms, no_traffic_interval: 50ms, healthy_threshold: 1, unhealthy_threshold: 1 }}\n\
                     \x20 - {{ name: xds, hosts: [ {{ address: 127.0.0.1:9 }} ] }}\n\
                     xds: {{ cluster: xds }}\n",
                    hosts.join(", ")
                )
            };
            let before = Arc::new(
                Config::from_yaml(&yaml(&[(port_a, 1, true), (port_b, 1, true)])).expect("config"),
            );
            let grown =
                Config::from_yaml(&yaml(&[(port_a, 5, true), (port_b, 1, true), (port_c, 1, true)]))
                    .expect("config");
            let relabelled = Config::from_yaml(&yaml(&[
                (port_a, 5, true),
                (port_b, 1, false),
                (port_c, 1, true),
            ]))
            .expect("config");
            let shared = Arc::new(crate::health::SharedHealth::new(&before));
            let engine = Engine::new_worker(
                TokioNet::default(),
                before.clone(),
                0,
                1,
                1,
                Arc::new(WorkerStats::new(&before)),
                shared.clone(),
                Arc::new(crate::limits::ProcessLimits::new(&before)),
            )
            .expect("engine");
            let worker = Worker::start(engine, vec![socket], WorkerHooks::default());
            let slot = |id: u32, epoch: u32| sluice_core::cluster::HostRef {
                id: sluice_core::cluster::HostId(id),
                epoch,
            };
            // Per id: (port, weight, transport, epoch) of the worker's cluster, present ids.
            let hosts = || {
                let engine = worker.engine();
                let cluster = engine.upstreams.cluster(0).borrow();
                (0..cluster.hosts().len() as u32)
                    .map(sluice_core::cluster::HostId)
                    .filter(|&id| cluster.is_present(id))
                    .map(|id| {
                        let h = cluster.host(id);
                        (
                            id.0,
                            h.address.port(),
                            h.weight,
                            cluster.transport(id),
                            cluster.host_ref(id).epoch,
                        )
                    })
                    .collect::<Vec<_>>()
            };
            assert_eq!(
                hosts(),
                [(0, port_a, 1, Some(0), 0), (1, port_b, 1, Some(0), 0)]
            );
            until("a and b healthy", || {
                shared.is_healthy_for(0, slot(0, 0)) && shared.is_healthy_for(0, slot(1, 0))
            })
            .await;
            // Probed over TLS, the mTLS entry's.
            for port in [port_a, port_b] {
                let tls = started_at(port);
                assert!(!tls.is_empty() && tls.iter().all(|&t| t), "{port}: {tls:?}");
            }

            // a re-weighted, c added: in place; a and b keep id, epoch and verdict.
            let changed = sluice_core::config::diff::only_endpoints_differ(&before, &grown)
                .expect("an endpoints-only update");
            let update = worker
                .apply_endpoints(&before, &grown, &changed)
                .expect("room for c: a spare id");
            assert_eq!((update.added, update.removed), (1, 0));
            assert_eq!(worker.generation(), 0, "no new generation");
            assert_eq!(
                hosts(),
                [
                    (0, port_a, 5, Some(0), 0),
                    (1, port_b, 1, Some(0), 0),
                    (2, port_c, 1, Some(0), 1)
                ]
            );
            assert!(shared.is_healthy_for(0, slot(0, 0)), "a keeps its verdict");
            assert!(shared.is_healthy_for(0, slot(1, 0)), "b keeps its verdict");

            // b's label taken off: b is a new host (plaintext entry) in the first spare id
            // that was free; its old id is freed; a and c keep theirs.
            let changed = sluice_core::config::diff::only_endpoints_differ(&grown, &relabelled)
                .expect("an endpoints-only update");
            let update = worker
                .apply_endpoints(&grown, &relabelled, &changed)
                .expect("room for b: a spare id");
            assert_eq!((update.added, update.removed), (1, 1));
            assert_eq!(worker.generation(), 0, "no new generation");
            assert_eq!(
                hosts(),
                [
                    (0, port_a, 5, Some(0), 0),
                    (2, port_c, 1, Some(0), 1),
                    (3, port_b, 1, Some(1), 1)
                ]
            );
            assert!(shared.is_healthy_for(0, slot(0, 0)), "a keeps its verdict");
            assert!(
                !shared.is_healthy_for(0, slot(3, 1)),
                "b, as a new host, is unknown until probed"
            );
            let before_relabel = started_at(port_b).len();
            until("b probed in its new id", || shared.is_healthy_for(0, slot(3, 1))).await;
            // b is probed in plaintext now (the plaintext entry: a TCP probe sends nothing);
            // a and c still over TLS.
            until("b probed in plaintext", || {
                started_at(port_b)[before_relabel..].contains(&false)
            })
            .await;
            for port in [port_a, port_c] {
                let tls = started_at(port);
                assert!(tls.iter().all(|&t| t), "{port}: {tls:?}");
            }
            let mut worker = worker;
            worker.stop();
            worker.drained().await;
        });
    }

    /// Issue 13 (review, LOW): a plaintext → mTLS label change with the cluster's ids full:
    /// the host's new self takes the id its old self just freed (same address, same id, the
    /// other transport). The idle pooled plaintext connection to it at the update is closed,
    /// never reused: every request it serves from then on arrives over TLS. The upstreams
    /// answer in either transport (what the first byte says) with their port and how they
    /// were reached, and keep connections alive.
    #[test]
    fn a_label_change_into_the_id_it_freed_closes_the_pooled_connection_of_the_other_transport() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        tokio::task::LocalSet::new().block_on(&rt, async {
            let cert = rcgen::generate_simple_self_signed(vec!["svc.test".to_owned()])
                .expect("certificate");
            let ca = format!("{{ inline: {:?} }}", cert.cert.pem());
            let server = rustls::ServerConfig::builder_with_provider(Arc::new(
                rustls::crypto::aws_lc_rs::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.cert.der().clone()],
                rustls::pki_types::PrivateKeyDer::try_from(cert.signing_key.serialize_der())
                    .expect("key"),
            )
            .expect("server config");
            let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
            // Per upstream connection ended: (port, TLS).
            let closed = Rc::new(RefCell::new(Vec::<(u16, bool)>::new()));
            async fn serve<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
                mut s: S,
                body: String,
            ) {
                let mut head = Vec::new();
                let mut chunk = [0; 512];
                loop {
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match s.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&chunk[..n]),
                        }
                    }
                    head.clear();
                    let answer = format!(
                        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    if s.write_all(answer.as_bytes()).await.is_err() {
                        return;
                    }
                }
            }
            let mut ports = Vec::new();
            for _ in 0..17 {
                let (l, port) = listener();
                ports.push(port);
                let acceptor = acceptor.clone();
                let closed = closed.clone();
                tokio::task::spawn_local(async move {
                    loop {
                        let Ok((s, _)) = l.accept().await else {
                            return;
                        };
                        let acceptor = acceptor.clone();
                        let closed = closed.clone();
                        tokio::task::spawn_local(async move {
                            let mut first = [0; 1];
                            let tls = matches!(s.peek(&mut first).await, Ok(1) if first[0] == 0x16);
                            if tls {
                                if let Ok(t) = acceptor.accept(s).await {
                                    serve(t, format!("tls:{port}")).await;
                                }
                            } else {
                                serve(s, format!("plain:{port}")).await;
                            }
                            closed.borrow_mut().push((port, tls));
                        });
                    }
                });
            }
            let x = ports[0];
            // (port, weight, labelled `tlsMode: istio`)
            let yaml = |hosts: &[(u16, u32, bool)]| {
                let hosts: Vec<String> = hosts
                    .iter()
                    .map(|(p, w, istio)| {
                        let label = if *istio {
                            ", transport_socket_match: { tlsMode: istio }"
                        } else {
                            ""
                        };
                        format!("{{ address: 127.0.0.1:{p}, weight: {w}{label} }}")
                    })
                    .collect();
                Config::from_yaml(&format!(
                    "listeners:\n  - {{ name: h, address: 127.0.0.1:1, http: {{ virtual_hosts: [ {{ name: v, domains: [\"*\"], routes: [ {{ match: {{ prefix: / }}, route: {{ cluster: app }} }} ] }} ] }} }}\n\
                     clusters:\n  - name: app\n    hosts: [{}]\n\
                     \x20   transport_socket_matches: [ {{ name: mtls, match: {{ tlsMode: istio }}, tls: {{ sni: svc.test, ca: {ca} }} }}, {{ name: plain }} ]\n\
                     \x20 - {{ name: xds, hosts: [ {{ address: 127.0.0.1:9 }} ] }}\n\
                     xds: {{ cluster: xds }}\n",
                    hosts.join(", ")
                ))
                .expect("config")
            };
            let before = Arc::new(yaml(&[(x, 1, false)]));
            assert_eq!(before.clusters[0].host_slots(), 17);
            // x (heavily weighted) and the 16 others: every id taken.
            let all = |x_istio: bool| -> Vec<(u16, u32, bool)> {
                ports
                    .iter()
                    .map(|&p| if p == x { (p, 50, x_istio) } else { (p, 1, false) })
                    .collect()
            };
            let full = yaml(&all(false));
            let relabelled = yaml(&all(true));
            let (socket, http_port) = listener();
            let engine = Engine::new_worker(
                TokioNet::default(),
                before.clone(),
                0,
                1,
                1,
                Arc::new(WorkerStats::new(&before)),
                Arc::new(crate::health::SharedHealth::new(&before)),
                Arc::new(crate::limits::ProcessLimits::new(&before)),
            )
            .expect("engine");
            let worker = Worker::start(engine, vec![socket], WorkerHooks::default());
            let get = || async move {
                let mut c = tokio::net::TcpStream::connect(("127.0.0.1", http_port))
                    .await
                    .expect("connect");
                c.write_all(b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
                    .await
                    .expect("write");
                let mut answer = String::new();
                tokio::time::timeout(Duration::from_secs(5), c.read_to_string(&mut answer))
                    .await
                    .expect("answered in time")
                    .expect("answer");
                answer.rsplit("\r\n\r\n").next().unwrap_or_default().to_owned()
            };
            // x in plaintext; its connection stays pooled, idle.
            assert_eq!(get().await, format!("plain:{x}"));
            let changed = sluice_core::config::diff::only_endpoints_differ(&before, &full)
                .expect("an endpoints-only update");
            let update = worker.apply_endpoints(&before, &full, &changed).expect("room");
            assert_eq!((update.added, update.removed), (16, 0));
            assert!(closed.borrow().is_empty(), "x's pooled connection is kept");
            // The label: x is a new host, and the only free id is the one x just left.
            let changed = sluice_core::config::diff::only_endpoints_differ(&full, &relabelled)
                .expect("an endpoints-only update");
            let update = worker
                .apply_endpoints(&full, &relabelled, &changed)
                .expect("room: the id x freed");
            assert_eq!((update.added, update.removed), (1, 1));
            {
                let engine = worker.engine();
                let cluster = engine.upstreams.cluster(0).borrow();
                let id = sluice_core::cluster::HostId(0);
                assert_eq!(cluster.host(id).address.port(), x);
                assert_eq!(cluster.transport(id), Some(0), "x over mTLS in the id it left");
                assert_eq!(cluster.host_ref(id).epoch, 1);
            }
            until("x's pooled plaintext connection closed", || {
                closed.borrow().contains(&(x, false))
            })
            .await;
            let mut to_x = 0;
            for _ in 0..30 {
                let body = get().await;
                if body.ends_with(&format!(":{x}")) {
                    assert_eq!(body, format!("tls:{x}"), "x reached only over TLS");
                    to_x += 1;
                } else {
                    assert!(body.starts_with("plain:"), "{body}");
                }
            }
            assert!(to_x > 0, "x was picked");
            let mut worker = worker;
            worker.stop();
            worker.drained().await;
        });
    }

    /// Issue 13 (review, HIGH): a reload that gives a DNS cluster `tls` in place of its
    /// `transport_socket_matches` (Istio: a ServiceEntry with DNS resolution, then a
    /// DestinationRule with SIMPLE TLS) keeps the resolved addresses but not the old transport
    /// index: the next connection to each host is TLS (its first byte a handshake record),
    /// before any new DNS answer — `strict_dns` and `logical_dns` alike. The worker is worker 1
    /// of 2: the resolver (worker 0's) does not run, so only the inherited answers are used.
    #[test]
    fn a_reload_from_transport_socket_matches_to_tls_connects_dns_hosts_with_tls() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        tokio::task::LocalSet::new().block_on(&rt, async {
            let ca = rcgen::generate_simple_self_signed(vec!["svc.test".to_owned()])
                .expect("certificate")
                .cert
                .pem();
            let ca = format!("{{ inline: {ca:?} }}");
            let (strict_up, strict_port) = listener();
            let (logical_up, logical_port) = listener();
            let (first_bytes, mut seen) = tokio::sync::mpsc::unbounded_channel();
            for l in [strict_up, logical_up] {
                let first_bytes = first_bytes.clone();
                tokio::task::spawn_local(async move {
                    loop {
                        let Ok((mut s, _)) = l.accept().await else {
                            return;
                        };
                        let port = s.local_addr().expect("address").port();
                        let mut b = [0; 1];
                        let _ = s.read_exact(&mut b).await;
                        let _ = first_bytes.send((port, b[0]));
                    }
                });
            }
            let (strict_l, strict_in) = listener();
            let (logical_l, logical_in) = listener();
            let yaml = |transport: &str| {
                format!(
                    "listeners:\n\
                     \x20 - {{ name: s, address: 127.0.0.1:{strict_in}, tcp_proxy: {{ cluster: strict }} }}\n\
                     \x20 - {{ name: l, address: 127.0.0.1:{logical_in}, tcp_proxy: {{ cluster: logical }} }}\n\
                     clusters:\n\
                     \x20 - {{ name: strict, type: strict_dns, hosts: [ {{ address: \"svc.test:{strict_port}\" }} ], {transport} }}\n\
                     \x20 - {{ name: logical, type: logical_dns, hosts: [ {{ address: \"svc.test:{logical_port}\" }} ], {transport} }}\n"
                )
            };
            let before = Config::from_yaml(&yaml(&format!(
                "transport_socket_matches: [ {{ name: tlsMode-istio, match: {{ tlsMode: istio }}, \
                 tls: {{ sni: svc.test, ca: {ca} }} }}, {{ name: tlsMode-disabled }} ]"
            )))
            .expect("config before");
            let after = Arc::new(
                Config::from_yaml(&yaml(&format!("tls: {{ sni: svc.test, ca: {ca} }}")))
                    .expect("config after"),
            );
            // The generation before resolved both names: plaintext hosts (entry 1).
            let old = crate::health::SharedHealth::new(&before);
            old.dns.answered(0, 0, vec![SocketAddr::from(([127, 0, 0, 1], strict_port))]);
            old.dns.answered(1, 0, vec![SocketAddr::from(([127, 0, 0, 1], logical_port))]);
            assert_eq!(old.dns.view(0).expect("dns").slots[0].expect("host").transport, Some(1));
            let shared = Arc::new(crate::health::SharedHealth::new(&after));
            shared.inherit(&old, &before, &after);
            let engine = Engine::new_worker(
                TokioNet::default(),
                after.clone(),
                1,
                2,
                1,
                Arc::new(WorkerStats::new(&after)),
                shared.clone(),
                Arc::new(crate::limits::ProcessLimits::new(&after)),
            )
            .expect("engine");
            for ci in 0..2 {
                let c = engine.upstreams.cluster(ci).borrow();
                let id = sluice_core::cluster::HostId(0);
                assert!(c.is_present(id), "cluster {ci} kept its address");
                assert_eq!(c.transport(id), None, "cluster {ci}: the cluster's own tls");
                let was = old.dns.view(ci).expect("dns").epochs[0];
                assert_eq!(c.host_ref(id).epoch, was + 1, "cluster {ci}: another host");
            }
            let mut worker = Worker::start(engine, vec![strict_l, logical_l], WorkerHooks::default());
            let mut clients = Vec::new();
            for port in [strict_in, logical_in] {
                let mut c = tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .expect("connect");
                c.write_all(b"plaintext?").await.expect("write");
                clients.push(c);
            }
            // Every connection to either upstream (a failed handshake is retried) starts with a
            // TLS handshake record, never the client's bytes; both upstreams are reached.
            let mut reached = Vec::new();
            while reached.len() < 2 {
                let (at, first) = tokio::time::timeout(Duration::from_secs(5), seen.recv())
                    .await
                    .expect("the upstreams were connected to in time")
                    .expect("a first byte");
                assert_eq!(first, 0x16, "to :{at}: a TLS handshake record, not the client's bytes");
                if !reached.contains(&at) {
                    reached.push(at);
                }
            }
            reached.sort_unstable();
            let mut want = vec![strict_port, logical_port];
            want.sort_unstable();
            assert_eq!(reached, want);
            drop(clients);
            worker.stop();
            worker.drained().await;
        });
    }

    /// A worker reloaded many times remembers only the last [`ENDED_GENERATIONS_KEPT`] ended
    /// generations (and their counters), not one per reload forever.
    #[test]
    fn ended_generations_are_forgotten_beyond_a_bound() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        tokio::task::LocalSet::new().block_on(&rt, async {
            let (first, port) = listener();
            let config = echo_config(&[port]);
            let mut worker = Worker::start(
                engine(&config),
                vec![first],
                WorkerHooks {
                    close_listeners: None,
                    on_event: None,
                },
            );
            let status = worker.status();
            let reloads = ENDED_GENERATIONS_KEPT as u64 * 3;
            for _ in 0..reloads {
                let failed = worker
                    .reload(engine(&config), |_| {
                        Err(io::Error::other("address is kept"))
                    })
                    .await;
                assert!(failed.is_ok(), "{failed:?}");
            }
            until("every replaced generation to end", || {
                status
                    .generations()
                    .iter()
                    .filter(|g| g.generation != reloads)
                    .all(|g| g.ended.is_some())
            })
            .await;
            let kept: Vec<u64> = status.generations().iter().map(|g| g.generation).collect();
            let expected: Vec<u64> = (reloads - ENDED_GENERATIONS_KEPT as u64..=reloads).collect();
            assert_eq!(kept, expected, "the serving one and the last ended ones");
            let mut c = tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .expect("connect");
            echoes(&mut c, b"still serving").await;
            worker.stop();
            worker.drained().await;
        });
    }

    /// A reload whose new listener cannot get a socket (an address in use) fails before
    /// anything is taken: the serving generation keeps its sockets, its connections and its
    /// number, and a later reload still works. (Before, the worker switched anyway and the new
    /// generation panicked on its listener count, serving nothing.)
    #[test]
    fn a_reload_short_of_a_socket_changes_nothing() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        tokio::task::LocalSet::new().block_on(&rt, async {
            let (first, port) = listener();
            let (_, other_port) = listener();
            let before = echo_config(&[port]);
            let after = echo_config(&[port, other_port]);
            let mut worker = Worker::start(engine(&before), vec![first], WorkerHooks::default());
            let mut open = tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .expect("connect");
            echoes(&mut open, b"before").await;

            let refused = worker
                .reload(engine(&after), |i| {
                    Err(io::Error::new(
                        io::ErrorKind::AddrInUse,
                        format!("listener {i}: in use"),
                    ))
                })
                .await;
            let errors = refused.expect_err("the reload is refused");
            assert_eq!(errors.len(), 1);
            assert_eq!(errors[0].to_string(), "listener 1: in use");
            assert_eq!(worker.generation(), 0);
            // The serving generation still accepts, and its open connection still echoes.
            let mut new = tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .expect("connect after the refused reload");
            echoes(&mut new, b"still").await;
            echoes(&mut open, b"after").await;

            // The same reload with the socket available goes through.
            let (second, second_port) = listener();
            let after = echo_config(&[port, second_port]);
            let mut second = Some(second);
            worker
                .reload(engine(&after), |_| {
                    second.take().ok_or_else(|| io::Error::other("asked twice"))
                })
                .await
                .expect("the reload switches");
            assert_eq!(worker.generation(), 1);
            let mut added = tokio::net::TcpStream::connect(("127.0.0.1", second_port))
                .await
                .expect("connect to the added listener");
            echoes(&mut added, b"added").await;
            drop((open, new, added));
            worker.stop();
            worker.drained().await;
        });
    }

    /// A socket closed by `/drain_listeners` is not kept by a reload: the driver is asked for
    /// a new one, even for a known address.
    #[test]
    fn a_reload_after_drain_listeners_asks_for_the_closed_socket_again() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        tokio::task::LocalSet::new().block_on(&rt, async {
            let (first, port) = listener();
            let config = echo_config(&[port]);
            let (close, close_rx) = watch::channel(false);
            let mut worker = Worker::start(
                engine(&config),
                vec![first],
                WorkerHooks {
                    close_listeners: Some(close_rx),
                    on_event: None,
                },
            );
            let _ = close.send(true);
            until("the listener to close", || {
                std::net::TcpStream::connect(("127.0.0.1", port)).is_err()
            })
            .await;
            let mut asked = Vec::new();
            let failed = worker
                .reload(engine(&config), |i| {
                    asked.push(i);
                    let l = std::net::TcpListener::bind(("127.0.0.1", port))?;
                    l.set_nonblocking(true)?;
                    tokio::net::TcpListener::from_std(l)
                })
                .await;
            assert!(failed.is_ok(), "{failed:?}");
            assert_eq!(asked, [0]);
            worker.stop();
            worker.drained().await;
        });
    }

    /// For each HTTP codec setting: a worker serving `direct_response: 200 served` with this
    /// `drain_timeout`, a client connected to it (its connection accepted, nothing sent), and
    /// the worker stopped — a drain beginning — then `after` later the client's request. What
    /// the client got back, until the connection closed.
    fn request_sent_into_a_drain(drain_timeout: &str, after: Duration) -> Vec<(String, String)> {
        ["auto", "http1"]
            .into_iter()
            .map(|codec| {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime");
                let answer = tokio::task::LocalSet::new().block_on(&rt, async {
                    let (socket, port) = listener();
                    let yaml = format!(
                        "listeners:\n  - name: web\n    address: 127.0.0.1:{port}\n    http:\n      codec: {codec}\n      virtual_hosts:\n        - {{ name: all, domains: ['*'], routes: [ {{ match: {{ prefix: / }}, direct_response: {{ status: 200, body: served }} }} ] }}\nclusters: [{{ name: unused, hosts: [{{ address: 127.0.0.1:9 }}] }}]\ndrain_timeout: {drain_timeout}\n"
                    );
                    let config = Arc::new(
                        Config::from_yaml(&yaml).unwrap_or_else(|e| panic!("{e}\n{yaml}")),
                    );
                    let mut worker =
                        Worker::start(engine(&config), vec![socket], WorkerHooks::default());
                    let status = worker.status();
                    let mut client = tokio::net::TcpStream::connect(("127.0.0.1", port))
                        .await
                        .expect("connect");
                    until("the connection to be accepted", || {
                        status
                            .generation(0)
                            .is_some_and(|g| g.open_connections() == 1)
                    })
                    .await;
                    worker.stop();
                    // The request is on its way as the drain goes on.
                    tokio::time::sleep(after).await;
                    let _ = client
                        .write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
                        .await;
                    let mut answer = Vec::new();
                    let _ = tokio::time::timeout(
                        Duration::from_secs(5),
                        client.read_to_end(&mut answer),
                    )
                    .await
                    .expect("answered or closed in time");
                    worker.drained().await;
                    String::from_utf8_lossy(&answer).to_lowercase()
                });
                (codec.to_owned(), answer)
            })
            .collect()
    }

    /// A connection accepted just before a drain, whose first request is still on its way,
    /// is served when the request arrives within the drain grace (answered with `connection:
    /// close`), for each HTTP codec setting. Before, a listener with `codec: auto` (the
    /// default) closed it the moment the drain began: the request met an EOF (simulator seed
    /// 829 of `upgrade_whose_new_instance_crashes`).
    #[test]
    fn a_first_request_arriving_in_the_drain_grace_is_served() {
        for (codec, answer) in request_sent_into_a_drain("5s", Duration::from_millis(100)) {
            assert!(
                answer.starts_with("http/1.1 200"),
                "codec {codec}: {answer:?}"
            );
            assert!(
                answer.contains("connection: close"),
                "codec {codec}: {answer:?}"
            );
            assert!(answer.ends_with("served"), "codec {codec}: {answer:?}");
        }
    }

    /// The drain grace of a fresh connection ends with the drain: once `drain_timeout` has
    /// passed, a connection still waiting for its first request is closed, and a request
    /// arriving later gets nothing (before, the grace outlasted a short `drain_timeout`, and a
    /// request arriving in it was served past the drain's end).
    #[test]
    fn a_fresh_connection_waits_no_longer_than_the_drain() {
        // Past the drain deadline (100 ms), within the grace (1 s).
        for (codec, answer) in request_sent_into_a_drain("100ms", Duration::from_millis(500)) {
            assert_eq!(answer, "", "codec {codec}");
        }
    }
}
