//! A worker thread's side of the server: what it starts with, the commands the main thread
//! sends it (a reload's new generation, a connection migrated by an upgrade), and
//! [`worker_main`], a thin driver of [`crate::worker::Worker`].

use std::io;
use std::rc::Rc;
use std::sync::Arc;

use sluice_core::config::Config;
use tokio::sync::watch;
use tracing::warn;

use super::bind_listener;
use crate::engine::{Engine, Handoff};
use crate::net::TokioNet;
use crate::stats::WorkerStats;
use crate::worker::{Worker, WorkerHooks};

/// What a worker is told to do besides stopping.
pub(super) enum WorkerCommand {
    /// Switch to a new config generation (a reload).
    Reload(Box<Generation>),
    /// Serve a connection the previous instance migrated (upgrade).
    Adopt(crate::control::Migrated),
    /// Put new host sets into the serving generation's clusters, in place (an endpoints-only
    /// xDS update), then answer.
    Endpoints(
        Arc<crate::dns::EndpointsUpdate>,
        std::sync::mpsc::Sender<Result<(), String>>,
    ),
}

/// One config generation for one worker.
pub(super) struct Generation {
    pub(super) config: Arc<Config>,
    pub(super) stats: Arc<WorkerStats>,
    pub(super) shared_health: Arc<crate::health::SharedHealth>,
    /// Per listener of `config`: a freshly bound socket when no listener of the previous
    /// generation had its address (else the worker reuses that one).
    pub(super) fresh: Vec<Option<std::net::TcpListener>>,
    /// The worker's answer: switched, or why not.
    pub(super) done: std::sync::mpsc::Sender<Result<(), String>>,
}

/// Everything a worker thread starts with.
pub(super) struct WorkerStart {
    pub(super) worker: usize,
    pub(super) workers: usize,
    pub(super) seed: u64,
    pub(super) config: Arc<Config>,
    pub(super) stats: Arc<WorkerStats>,
    pub(super) shared_health: Arc<crate::health::SharedHealth>,
    pub(super) limits: Arc<crate::limits::ProcessLimits>,
    pub(super) sockets: Vec<std::net::TcpListener>,
    pub(super) stop: watch::Receiver<bool>,
    pub(super) migration: crate::engine::MigrationSlot,
    pub(super) close_listeners: watch::Receiver<bool>,
    pub(super) reopen: watch::Receiver<u64>,
    pub(super) started: std::sync::mpsc::Sender<()>,
    pub(super) commands: tokio::sync::mpsc::UnboundedReceiver<WorkerCommand>,
}

/// Serves a connection migrated from the previous instance (on the listener with its address).
fn adopt(worker: &Worker<TokioNet>, index: usize, m: crate::control::Migrated) {
    let stream = std::net::TcpStream::from(m.stream);
    let adopted = (|| {
        stream.set_nonblocking(true).ok()?;
        let peer = stream.peer_addr().ok()?;
        let stream = tokio::net::TcpStream::from_std(stream).ok()?;
        let _ = stream.set_nodelay(true);
        worker.adopt(m.listener, stream, peer, m.unread);
        Some(())
    })();
    if adopted.is_none() {
        warn!(worker = index, listener = %m.listener, "a migrated connection could not be set up; closed");
    }
}

/// The handoff of an engine whose process may be upgraded: to the new instance, once it took
/// over.
fn process_handoff(slot: &crate::engine::MigrationSlot) -> Rc<dyn Handoff<tokio::net::TcpStream>> {
    Rc::new((
        crate::engine::ProcessHandoff(slot.clone()),
        std::marker::PhantomData::<TokioNet>,
    ))
}

/// A worker thread's life: a [`Worker`] serving the first generation, switched on reloads
/// (the previous generation hands its listening sockets over and drains its own connections),
/// stopped and drained on stop. This driver only turns the main thread's commands and signals
/// into calls on it.
pub(super) async fn worker_main(start: WorkerStart) -> io::Result<()> {
    let WorkerStart {
        worker: index,
        workers,
        seed,
        config,
        stats,
        shared_health,
        limits,
        sockets,
        mut stop,
        migration,
        close_listeners,
        mut reopen,
        started,
        mut commands,
    } = start;
    let listeners = sockets
        .into_iter()
        .map(tokio::net::TcpListener::from_std)
        .collect::<io::Result<Vec<_>>>()?;
    let engine = Engine::new_worker(
        TokioNet::default(),
        config,
        index,
        workers,
        seed,
        stats,
        shared_health,
        limits.clone(),
    )?;
    engine.set_handoff(process_handoff(&migration));
    let _ = started.send(());
    drop(started);
    // Reloads applied so far (each generation's engine seeds its random choices apart).
    let mut reloads: u64 = 0;
    let mut worker = Worker::start(
        engine,
        listeners,
        WorkerHooks {
            close_listeners: Some(close_listeners),
            on_event: None,
        },
    );
    loop {
        let command = tokio::select! {
            _ = stop.wait_for(|s| *s) => break,
            Ok(()) = reopen.changed() => {
                worker.reopen_access_logs();
                continue;
            }
            command = commands.recv() => command,
        };
        match command {
            None => {
                // The main thread is gone: wait for the stop.
                let _ = stop.wait_for(|s| *s).await;
                break;
            }
            Some(WorkerCommand::Adopt(m)) => adopt(&worker, index, m),
            Some(WorkerCommand::Endpoints(update, done)) => {
                let engine = worker.engine();
                if std::ptr::from_ref(&**engine.upstreams.shared_health()) as usize
                    == update.generation
                {
                    engine.apply_endpoints(&update);
                    let _ = done.send(Ok(()));
                } else {
                    let _ = done.send(Err(
                        "it serves another generation than the one the endpoints were merged for"
                            .into(),
                    ));
                }
            }
            Some(WorkerCommand::Reload(g)) => {
                let Generation {
                    config,
                    stats,
                    shared_health,
                    mut fresh,
                    done,
                } = *g;
                // The new engine first: if it cannot be built, nothing changes. Its random
                // choices go on from a seed of their own: a generation that started from the
                // worker's seed again would generate the request and trace ids it already did.
                reloads += 1;
                let engine = match Engine::new_worker(
                    TokioNet::default(),
                    config.clone(),
                    index,
                    workers,
                    seed ^ reloads.wrapping_mul(0x9e37_79b9_7f4a_7c15),
                    stats,
                    shared_health,
                    limits.clone(),
                ) {
                    Ok(e) => e,
                    Err(e) => {
                        let _ = done.send(Err(e.to_string()));
                        continue;
                    }
                };
                engine.set_handoff(process_handoff(&migration));
                // A socket the old generation does not have: bound by the main thread, or
                // bound again when /drain_listeners closed the old one.
                let reloaded = worker
                    .reload(engine, |i| match fresh[i].take() {
                        Some(socket) => tokio::net::TcpListener::from_std(socket),
                        None => {
                            bind_listener(&config, i).and_then(tokio::net::TcpListener::from_std)
                        }
                    })
                    .await;
                // Refused: this worker's serving generation carries on untouched.
                let _ = done.send(reloaded.map_err(|failed| {
                    failed
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join("; ")
                }));
            }
        }
    }
    worker.stop();
    worker.drained().await;
    Ok(())
}
