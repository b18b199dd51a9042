//! The real process: pinned thread-per-core workers over tokio, signals and drain.
//!
//! Startup binds every listener once per worker with `SO_REUSEPORT` *before* any worker
//! starts, so that an address in use stops startup with a message naming the listener. Then
//! each worker thread pins itself to a core, builds a current-thread tokio runtime and a
//! `LocalSet`, and runs its own [`Engine`] on its own sockets: no state is shared between
//! workers on the data path. The main thread waits for SIGTERM or SIGINT, tells every worker to
//! stop accepting and drain, and joins them.

use std::io;
use std::sync::Arc;
use std::thread;

use sluice_core::config::Config;
use tokio::sync::watch;
use tracing::{error, info, warn};

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
}

/// Listen backlog per socket.
const BACKLOG: i32 = 4096;

/// Runs until SIGTERM/SIGINT, then drains and returns. Errors are startup errors (bind).
pub fn run(config: Config, options: ServerOptions) -> io::Result<()> {
    let config = Arc::new(config);
    let workers = options.workers.max(1);

    // Files the workers will open: fail now, with the listener named, rather than in a worker.
    for (i, l) in config.listeners.iter().enumerate() {
        if let sluice_core::config::ListenerFilter::Http(hc) = &l.filter
            && let Some(a) = &hc.access_log
        {
            crate::access_log::AccessLog::open(a).map_err(|e| {
                io::Error::new(e.kind(), format!("listeners[{i}] ({}): {e}", l.name))
            })?;
        }
    }

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
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut handles = Vec::with_capacity(workers);
    let mut all_stats = Vec::with_capacity(workers);
    for (worker, mine) in sockets.into_iter().enumerate() {
        let config = config.clone();
        let mut stop = stop_rx.clone();
        let core = pin.then(|| cores[worker]);
        let stats = Arc::new(WorkerStats::default());
        all_stats.push(stats.clone());
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
                    let engine = Engine::new(TokioNet, config, worker, seed, stats)?;
                    engine
                        .run(listeners, async move {
                            let _ = stop.wait_for(|s| *s).await;
                        })
                        .await;
                    Ok(())
                })
            })?;
        handles.push(handle);
    }
    for l in &config.listeners {
        info!(listener = %l.name, address = %l.address, "listening");
    }
    if let Some(admin) = &config.admin {
        warn!(address = %admin.address, "the admin server is not built yet: `admin` is accepted and ignored");
    }
    info!(
        workers,
        pinned = pin,
        version = crate::VERSION,
        "sluice ready"
    );

    let signal_rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let signal = signal_rt.block_on(wait_for_stop_signal())?;
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

async fn wait_for_stop_signal() -> io::Result<&'static str> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    })
}
