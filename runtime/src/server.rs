//! The real process: pinned thread-per-core workers over tokio, signals and drain.
//!
//! Startup binds every listener once per worker with `SO_REUSEPORT` *before* any worker
//! starts, so that an address in use stops startup with a message naming the listener. Then
//! each worker thread pins itself to a core, builds a current-thread tokio runtime and a
//! `LocalSet`, and runs its own [`Engine`] on its own sockets: no state is shared between
//! workers on the data path. The main thread waits for SIGTERM or SIGINT (or the admin API's
//! `/quitquitquit`, which takes the same path), tells every worker to stop accepting and drain,
//! and joins them.
//!
//! With `admin` configured, the admin server ([`crate::admin`]) is bound before the listeners
//! and runs on its own thread from the start: `/ready` answers 503 until every worker is
//! serving, 200 then, and 503 again once draining. It reads every worker's counters and the
//! config; `/drain_listeners` closes the workers' listeners through a second watch channel.
//! SIGUSR1 makes every worker reopen its access log files (log rotation), through a third.

use std::io;
use std::sync::Arc;
use std::thread;

use sluice_core::config::Config;
use tokio::sync::watch;
use tracing::{error, info, warn};

use crate::admin::{AdminShared, LogControl, ServerState};
use crate::engine::Engine;
use crate::net::{TokioNet, bind_reuseport};
use crate::stats::WorkerStats;

/// How the server runs.
#[derive(Clone, Debug)]
pub struct ServerOptions {
    /// Worker threads (each pinned to a core when there are enough cores).
    pub workers: usize,
    /// Seed for the workers' RNGs (balancing); worker `i` uses `seed + i`.
    pub seed: u64,
    /// Changes the log filter at runtime (the admin API's `/logging`), if the process can.
    pub log_control: Option<LogControl>,
}

/// Listen backlog per socket.
const BACKLOG: i32 = 4096;

/// Runs until SIGTERM/SIGINT, then drains and returns. Errors are startup errors (bind).
pub fn run(config: Config, options: ServerOptions) -> io::Result<()> {
    let config = Arc::new(config);
    let workers = options.workers.max(1);

    // Files the workers will open: fail now, with the listener named, rather than in a worker.
    for (i, l) in config.listeners.iter().enumerate() {
        if let sluice_core::config::ListenerFilter::Http(hc)
        | sluice_core::config::ListenerFilter::Auto { http: hc, .. } = &l.filter
            && let Some(a) = &hc.access_log
        {
            crate::access_log::AccessLog::open(a).map_err(|e| {
                io::Error::new(e.kind(), format!("listeners[{i}] ({}): {e}", l.name))
            })?;
        }
    }

    // The admin socket first: its address in use stops startup like a listener's.
    let admin_socket = match &config.admin {
        Some(a) => Some(crate::admin::bind(a.address)?),
        None => None,
    };

    // Bind everything first: one socket per (worker, listener).
    let mut sockets: Vec<Vec<std::net::TcpListener>> = Vec::with_capacity(workers);
    for _ in 0..workers {
        let mut mine = Vec::with_capacity(config.listeners.len());
        for (i, l) in config.listeners.iter().enumerate() {
            let socket = bind_reuseport(l.address, BACKLOG).map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!(
                        "listeners[{i}] ({}): cannot listen on {}: {e}",
                        l.name, l.address
                    ),
                )
            })?;
            mine.push(socket);
        }
        sockets.push(mine);
    }

    let cores = core_affinity::get_core_ids().unwrap_or_default();
    let pin = cores.len() >= workers;
    if !pin {
        warn!(
            workers,
            cores = cores.len(),
            "more workers than cores: not pinning"
        );
    }
    // Signal handlers before anything can report ready: a SIGTERM sent as soon as `/ready`
    // says 200 (or during startup) is a graceful stop, never the default kill.
    let signal_rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut signals = {
        let _in_runtime = signal_rt.enter();
        StopSignals::new()?
    };
    let (stop_tx, stop_rx) = watch::channel(false);
    // Bumped on SIGUSR1: every worker reopens its access log files.
    let (reopen_tx, _) = watch::channel(0u64);
    let all_stats: Vec<Arc<WorkerStats>> = (0..workers)
        .map(|_| Arc::new(WorkerStats::new(&config)))
        .collect();
    let shared = Arc::new(AdminShared::new(
        config.clone(),
        all_stats.clone(),
        options.log_control.clone(),
    ));
    if let Some(socket) = admin_socket {
        let address = socket.local_addr()?;
        crate::admin::spawn(socket, shared.clone())?;
        info!(%address, "admin server listening");
    }
    let (started_tx, started_rx) = std::sync::mpsc::channel::<()>();
    let mut handles = Vec::with_capacity(workers);
    let shared_health = Arc::new(crate::health::SharedHealth::new(&config));
    for (worker, mine) in sockets.into_iter().enumerate() {
        let shared_health = shared_health.clone();
        let config = config.clone();
        let mut stop = stop_rx.clone();
        let mut close_listeners = shared.close_listeners.subscribe();
        let started = started_tx.clone();
        let mut reopen = reopen_tx.subscribe();
        let core = pin.then(|| cores[worker]);
        let stats = all_stats[worker].clone();
        let seed = options.seed.wrapping_add(worker as u64);
        let handle = thread::Builder::new()
            .name(format!("sluice-worker-{worker}"))
            .spawn(move || -> io::Result<()> {
                if let Some(core) = core
                    && !core_affinity::set_for_current(core)
                {
                    warn!(worker, "could not pin to core {}", core.id);
                }
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                let local = tokio::task::LocalSet::new();
                local.block_on(&rt, async move {
                    let listeners = mine
                        .into_iter()
                        .map(tokio::net::TcpListener::from_std)
                        .collect::<io::Result<Vec<_>>>()?;
                    let engine = Engine::new_worker(
                        TokioNet,
                        config,
                        worker,
                        workers,
                        seed,
                        stats,
                        shared_health,
                    )?;
                    let _ = started.send(());
                    drop(started);
                    let logs = engine.clone();
                    tokio::task::spawn_local(async move {
                        while reopen.changed().await.is_ok() {
                            logs.reopen_access_logs();
                        }
                    });
                    engine
                        .run_with_drain(
                            listeners,
                            async move {
                                if close_listeners.wait_for(|c| *c).await.is_err() {
                                    // The admin side is gone: never close early.
                                    std::future::pending::<()>().await;
                                }
                            },
                            async move {
                                let _ = stop.wait_for(|s| *s).await;
                            },
                        )
                        .await;
                    Ok(())
                })
            })?;
        handles.push(handle);
    }
    for l in &config.listeners {
        info!(listener = %l.name, address = %l.address, "listening");
    }
    // Live once every worker has its engine and serves its sockets.
    drop(started_tx);
    let started = started_rx.iter().take(workers).count();
    let signal = if started == workers {
        shared.set_state(ServerState::Live);
        info!(
            workers,
            pinned = pin,
            version = crate::VERSION,
            "sluice ready"
        );
        let mut quit = shared.quit.subscribe();
        signal_rt.block_on(async {
            loop {
                tokio::select! {
                    s = signals.recv() => match s? {
                        Caught::Stop(name) => return Ok::<_, io::Error>(name),
                        Caught::Reopen => {
                            info!("SIGUSR1: reopening access logs");
                            reopen_tx.send_modify(|g| *g += 1);
                        }
                    },
                    _ = quit.wait_for(|q| *q) => return Ok("/quitquitquit"),
                }
            }
        })?
    } else {
        error!(started, workers, "a worker failed to start");
        "worker failure"
    };
    shared.set_state(ServerState::Draining);
    info!(signal, "stopping: no new connections, draining open ones");
    let _ = stop_tx.send(true);

    let mut result = Ok(());
    for (worker, h) in handles.into_iter().enumerate() {
        match h.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                error!(worker, error = %e, "worker failed");
                result = Err(e);
            }
            Err(_) => {
                error!(worker, "worker panicked");
                result = Err(io::Error::other(format!("worker {worker} panicked")));
            }
        }
    }
    let mut total = crate::stats::StatsSnapshot::default();
    for s in &all_stats {
        total.add(&s.snapshot());
    }
    info!(
        connections = total.downstream_cx_total,
        bytes_in = total.bytes_from_downstream,
        bytes_out = total.bytes_from_upstream,
        "stopped"
    );
    result
}

/// A signal the server acts on.
enum Caught {
    /// SIGTERM or SIGINT: drain and exit.
    Stop(&'static str),
    /// SIGUSR1: reopen the access logs.
    Reopen,
}

/// SIGTERM, SIGINT and SIGUSR1, caught from creation on (create inside a tokio runtime).
struct StopSignals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    usr1: tokio::signal::unix::Signal,
}

impl StopSignals {
    fn new() -> io::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(StopSignals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            usr1: signal(SignalKind::user_defined1())?,
        })
    }

    /// The next signal.
    async fn recv(&mut self) -> io::Result<Caught> {
        Ok(tokio::select! {
            _ = self.term.recv() => Caught::Stop("SIGTERM"),
            _ = self.int.recv() => Caught::Stop("SIGINT"),
            _ = self.usr1.recv() => Caught::Reopen,
        })
    }
}
