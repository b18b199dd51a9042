//! The real process: pinned thread-per-core workers over tokio, signals and drain.
//!
//! Startup binds every listener once per worker with `SO_REUSEPORT` *before* any worker
//! starts, so that an address in use stops startup with a message naming the listener; each
//! address is first probed without `SO_REUSEPORT` ([`probe_unshared`]), so that another
//! process's reuseport sockets count as "in use" too (only an upgrade takes sockets over, by
//! receiving them; a reload that adds a listener probes its address the same way). Then
//! each worker thread pins itself to a core, builds a current-thread tokio runtime and a
//! `LocalSet`, and runs its own [`crate::worker::Worker`] (an [`crate::engine::Engine`] per
//! config generation) on its own sockets: no state is shared between workers on the data path. The main thread waits for SIGTERM or SIGINT (or the admin API's
//! `/quitquitquit`, which takes the same path), tells every worker to stop accepting and drain,
//! and joins them.
//!
//! With `admin` configured, the admin server ([`crate::admin`]) is bound before the listeners
//! and runs on its own thread from the start: `/ready` answers 503 until every worker is
//! serving, 200 then, and 503 again once draining. It reads every worker's counters and the
//! config; `/drain_listeners` closes the workers' listeners through a second watch channel.
//! SIGUSR1 makes every worker reopen its access log files (log rotation), through a third.
//!
//! By concern: this file holds startup (reading the config, binding), the main thread's loop
//! (signals, reloads) and shutdown; `worker_thread` is a worker thread's thin driver of its
//! [`crate::worker::Worker`] (the generations and their switching live there, shared with the
//! simulator); `handover` keeps what a binary upgrade hands to a new instance.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread;

use sluice_core::config::Config;
use sluice_core::config::diff::ListenerSocket;
use tokio::sync::watch;
use tracing::{debug, error, info, warn};

use crate::admin::{AdminHandle, AdminShared, LogControl, ServerState};
use crate::net::probe_unshared;
use crate::stats::WorkerStats;

mod handover;
mod worker_thread;

use handover::{HandoverSockets, SocketFile};
use worker_thread::{Generation, WorkerCommand, WorkerStart, worker_main};

/// How the server runs.
#[derive(Clone, Debug)]
pub struct ServerOptions {
    /// Worker threads (each pinned to a core when there are enough cores).
    pub workers: usize,
    /// Seed for the workers' RNGs (balancing); worker `i` uses `seed + i`.
    pub seed: u64,
    /// Changes the log filter at runtime (the admin API's `/logging`), if the process can.
    pub log_control: Option<LogControl>,
    /// The config file, re-read on SIGHUP and `POST /reload` (no reload without it).
    pub config_path: Option<PathBuf>,
    /// The control socket for binary upgrades (none: no upgrades, no single-instance check).
    pub control_socket: Option<PathBuf>,
    /// Take over from the instance on `control_socket` instead of binding the listeners.
    pub upgrade: bool,
}

/// How long each step of a binary upgrade may take (the new instance's side; the old one
/// allows three times as long for the whole handover).
const UPGRADE_STEP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Listen backlog per socket.
const BACKLOG: i32 = 4096;

// Reading and validating the config file, with typed errors, is its own module; re-exported
// at the paths the binary and the tests use.
pub use crate::config_file::{
    ConfigFileError, LoadConfigError, MAX_CONFIG_BYTES, load_config, read_config_file,
};

/// Opens (and closes) every access log file of `config`, so that a bad path fails now, with
/// the listener named, rather than in a worker.
fn check_access_logs(config: &Config) -> io::Result<()> {
    // Each listener's filters: its own, then its filter chains' (`http` or `tcp_proxy`).
    let chain_filters = config.chain_slots().into_iter().map(|(i, c)| {
        let l = &config.listeners[i];
        (
            format!("listeners[{i}].filter_chains[{c}] ({})", l.name),
            &l.filter_chains[c].filter,
        )
    });
    let filters = config
        .listeners
        .iter()
        .enumerate()
        .map(|(i, l)| (format!("listeners[{i}] ({})", l.name), &l.filter))
        .chain(chain_filters);
    for (at, filter) in filters {
        if let sluice_core::config::ListenerFilter::Http(hc)
        | sluice_core::config::ListenerFilter::Auto { http: hc, .. } = filter
            && let Some(a) = &hc.access_log
        {
            crate::access_log::AccessLog::open(a)
                .map_err(|e| io::Error::new(e.kind(), format!("{at}: {e}")))?;
        }
        if let sluice_core::config::ListenerFilter::TcpProxy(tp) = filter
            && let Some(a) = &tp.access_log
        {
            crate::access_log::AccessLog::open_tcp(a)
                .map_err(|e| io::Error::new(e.kind(), format!("{at}: {e}")))?;
        }
    }
    for (i, l) in config.listeners.iter().enumerate() {
        if let sluice_core::config::ListenerFilter::Bolt(b)
        | sluice_core::config::ListenerFilter::Auto { bolt: b, .. } = &l.filter
            && let Some(a) = &b.access_log
        {
            crate::access_log::AccessLog::open_bolt(a).map_err(|e| {
                io::Error::new(e.kind(), format!("listeners[{i}] ({}): {e}", l.name))
            })?;
        }
    }
    Ok(())
}

/// Binds listener `i` of `config` once (with `SO_REUSEPORT`), naming it in the error. A
/// virtual listener (`bind_to_port: false`) gets a socket that is neither bound nor listening:
/// it keeps the listeners' per-index shape and is never accepted on (nothing listens on its
/// address; it only receives hand-offs).
fn bind_listener(config: &Config, i: usize) -> io::Result<std::net::TcpListener> {
    let l = &config.listeners[i];
    if !l.bind_to_port {
        let socket = socket2::Socket::new(
            socket2::Domain::for_address(l.address),
            socket2::Type::STREAM,
            None,
        )?;
        socket.set_nonblocking(true)?;
        return Ok(socket.into());
    }
    let tproxy = l.original_dst == Some(sluice_core::config::OriginalDst::Tproxy);
    crate::transparent::bind_listener(l.address, BACKLOG, tproxy).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!(
                "listeners[{i}] ({}): cannot listen on {}: {e}",
                l.name, l.address
            ),
        )
    })
}

/// Binds listener `i` of `config` once per worker, after checking that no other process
/// listens on its address ([`probe_unshared`]: `SO_REUSEPORT` alone would silently share it),
/// naming the listener and the address in the error.
fn bind_listener_per_worker(
    config: &Config,
    i: usize,
    workers: usize,
) -> io::Result<Vec<std::net::TcpListener>> {
    let l = &config.listeners[i];
    if !l.bind_to_port {
        return (0..workers).map(|_| bind_listener(config, i)).collect();
    }
    probe_unshared(l.address).map_err(|e| {
        let why = if e.kind() == io::ErrorKind::AddrInUse {
            "address already in use (another socket listens there; sluice does not share it)"
                .to_owned()
        } else {
            e.to_string()
        };
        io::Error::new(
            e.kind(),
            format!(
                "listeners[{i}] ({}): cannot listen on {}: {why}",
                l.name, l.address
            ),
        )
    })?;
    (0..workers).map(|_| bind_listener(config, i)).collect()
}

/// A seed from the operating system's randomness (`/dev/urandom`; if it cannot be read, the
/// standard library's randomly keyed hasher), for a process run without `--seed`: two proxies —
/// or two runs of one — must not generate the same request and trace ids.
#[must_use]
pub fn random_seed() -> u64 {
    use std::io::Read as _;
    let mut bytes = [0u8; 8];
    if std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .is_ok()
    {
        return u64::from_le_bytes(bytes);
    }
    use std::hash::{BuildHasher as _, Hasher as _};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.finish()
}

/// Runs until SIGTERM/SIGINT, then drains and returns. Errors are startup errors (bind).
pub fn run(config: Config, options: ServerOptions) -> io::Result<()> {
    let mut config = Arc::new(config);
    let mut workers = options.workers.max(1);
    check_access_logs(&config)?;
    crate::transparent::check_upstream_mark(&config)?;
    // With `xds`, configs also come from a management server (see `crate::xds`).
    let xds_bootstrap = crate::xds::bootstrap(&config, options.config_path.as_deref())?;
    let (xds_updates_tx, xds_updates_rx) = tokio::sync::mpsc::unbounded_channel();
    let mut xds_updates = xds_bootstrap.is_some().then_some(xds_updates_rx);

    // One instance per config: the control socket says whether another one runs. With
    // `--upgrade`, that one hands its listening sockets over instead.
    let mut control = None;
    let mut upgrade = None;
    let mut owned_socket_file: Option<SocketFile> = None;
    // Connection migration after a handover: the workers' sender, and "every one was sent".
    let migration: crate::engine::MigrationSlot = Arc::default();
    let (migrated_tx, migrated_rx) = std::sync::mpsc::channel::<()>();
    if let Some(path) = &options.control_socket {
        if options.upgrade {
            let mut u = crate::control::request_upgrade(path, UPGRADE_STEP_TIMEOUT)
                .map_err(io::Error::from)?;
            if u.inherited.workers != workers {
                warn!(
                    requested = workers,
                    running = u.inherited.workers,
                    "upgrade: running as many workers as the running instance (each gets one of its sockets)"
                );
                workers = u.inherited.workers.max(1);
            }
            info!(path = %path.display(), "upgrade: received the running instance's sockets");
            // Before any TLS context is built: the listeners seal and open tickets with the
            // running instance's keys, so its clients resume here.
            let adopted = crate::tls_tickets::adopt(&std::mem::take(&mut u.inherited.tickets));
            if adopted > 0 {
                info!(
                    listeners = adopted,
                    "upgrade: took over the session-ticket keys"
                );
            }
            upgrade = Some(u);
        } else {
            control = Some(
                crate::control::ControlSocket::bind(path).map_err(|e| match e {
                    crate::control::ControlError::AlreadyRunning(p) => io::Error::new(
                        io::ErrorKind::AddrInUse,
                        format!(
                            "another sluice instance serves this config (control socket {}); \
                         start with --upgrade to take over from it, or stop it first",
                            p.display()
                        ),
                    ),
                    other => io::Error::from(other),
                })?,
            );
        }
    } else if options.upgrade {
        return Err(io::Error::other("--upgrade needs a control socket"));
    }
    let mut inherited = upgrade.as_mut().map(|u| {
        (
            std::mem::take(&mut u.inherited.listeners),
            u.inherited.admin.take(),
        )
    });
    let inherited_health = upgrade
        .as_mut()
        .map(|u| std::mem::take(&mut u.inherited.health))
        .unwrap_or_default();

    // The admin socket first: its address in use stops startup like a listener's.
    let admin_socket = match &config.admin {
        Some(a) => {
            let target = crate::control::AdminAddress::of(&a.listen);
            match inherited
                .as_mut()
                .and_then(|(_, admin)| admin.take_if(|(addr, _)| *addr == target))
            {
                Some((_, socket)) => {
                    // The same file: it gets this config's mode.
                    if let sluice_core::config::AdminListen::Unix { path, mode } = &a.listen {
                        use std::os::unix::fs::PermissionsExt as _;
                        std::fs::set_permissions(path, std::fs::Permissions::from_mode(*mode))
                            .map_err(|e| {
                                io::Error::new(e.kind(), format!("admin.path {path}: {e}"))
                            })?;
                    }
                    Some((target, socket))
                }
                None => Some((target, crate::admin::bind(&a.listen)?)),
            }
        }
        None => None,
    };
    // A Unix admin socket file is removed at exit, unless a new instance took it over.
    let admin_file = match &admin_socket {
        Some((crate::control::AdminAddress::Unix(p), _)) => SocketFile::of(p),
        _ => None,
    };
    let handed_over = Arc::new(std::sync::atomic::AtomicBool::new(false));

    // Bind everything first: one socket per (worker, listener) — or take the running
    // instance's, by address.
    let mut sockets: Vec<Vec<std::net::TcpListener>> = (0..workers).map(|_| Vec::new()).collect();
    for (i, l) in config.listeners.iter().enumerate() {
        let mut given = inherited
            .as_mut()
            .filter(|_| l.bind_to_port)
            .and_then(|(ls, _)| {
                let pos = ls.iter().position(|(a, _)| *a == l.address)?;
                Some(ls.swap_remove(pos).1)
            })
            .unwrap_or_default();
        if given.is_empty() {
            // Not taken over: an address another process listens on stops startup.
            given = bind_listener_per_worker(&config, i, workers)?;
        }
        let mut given = given.into_iter();
        for mine in &mut sockets {
            mine.push(match given.next() {
                Some(s) => s,
                None => bind_listener(&config, i)?,
            });
        }
    }
    if let Some((rest, _)) = &inherited
        && !rest.is_empty()
    {
        let gone: Vec<String> = rest.iter().map(|(a, _)| a.to_string()).collect();
        warn!(addresses = ?gone, "upgrade: listeners of the running instance that this config does not have close");
    }
    drop(inherited);
    // Copies of every listening socket, for a later upgrade of this instance.
    let handover = Arc::new(std::sync::Mutex::new(HandoverSockets::new(
        &config, &sockets,
    )?));

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
    let mut all_stats: Vec<Arc<WorkerStats>> = (0..workers)
        .map(|_| Arc::new(WorkerStats::new(&config)))
        .collect();
    let shared = Arc::new(AdminShared::new(
        config.clone(),
        all_stats.clone(),
        options.log_control.clone(),
    ));
    match crate::limits::raise_open_file_limit() {
        Some((before, after)) if after > before => {
            info!(
                before,
                after, "raised the open-file limit to its hard limit"
            );
        }
        Some(_) => {}
        None => warn!("cannot read or raise the open-file limit; keeping it"),
    }
    let limits = Arc::new(crate::limits::ProcessLimits::new(&config));
    let _ = shared.limits.set(limits.clone());
    info!(
        max_connections = limits.max(),
        splice_pipes_max = limits.pipes_max(),
        bolt_partial_frame_bytes = config.limits.bolt_partial_frame_bytes,
        "process limits"
    );
    crate::limits::warn_if_splice_is_off(&config, &limits);
    let admin = Arc::new(AdminHandle::new(shared.clone()));
    if let Some((address, socket)) = admin_socket {
        handover
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .admin = Some((address.clone(), socket.try_clone_fd()?));
        crate::admin::spawn(socket, admin.clone())?;
        info!(%address, "admin server listening");
    }
    // Certificate rotation when the TLS files change on disk (`tls_file_check_interval`).
    crate::tls::spawn_watcher()?;
    // Freed heap memory given back to the OS after a burst of connections.
    crate::memtrim::spawn(limits.clone());
    let mut reload_requests = shared.take_reload_requests();
    let (started_tx, started_rx) = std::sync::mpsc::channel::<()>();
    let mut handles = Vec::with_capacity(workers);
    let mut commands = Vec::with_capacity(workers);
    let mut shared_health = Arc::new(crate::health::SharedHealth::new(&config));
    // After an upgrade, the previous instance's verdicts: no dead host is tried in the meantime.
    shared_health.seed(&config, &inherited_health);
    handover
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .health = Some((shared_health.clone(), config.clone()));
    for (worker, mine) in sockets.into_iter().enumerate() {
        let (command_tx, command_rx) = tokio::sync::mpsc::unbounded_channel::<WorkerCommand>();
        commands.push(command_tx);
        let first = WorkerStart {
            worker,
            workers,
            seed: options.seed.wrapping_add(worker as u64),
            config: config.clone(),
            stats: all_stats[worker].clone(),
            shared_health: shared_health.clone(),
            limits: limits.clone(),
            sockets: mine,
            stop: stop_rx.clone(),
            migration: migration.clone(),
            close_listeners: shared.close_listeners.subscribe(),
            reopen: reopen_tx.subscribe(),
            started: started_tx.clone(),
            commands: command_rx,
        };
        let core = pin.then(|| cores[worker]);
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
                local.block_on(&rt, worker_main(first))
            })?;
        handles.push(handle);
    }
    for l in &config.listeners {
        info!(listener = %l.name, address = %l.address, "listening");
    }
    // Live once every worker has its engine and serves its sockets.
    drop(started_tx);
    let started = started_rx.iter().take(workers).count();
    if started == workers {
        if let Some(u) = upgrade.take() {
            // Serving the inherited sockets: the old instance may stop accepting now.
            match u.confirm_serving_with_migrations(UPGRADE_STEP_TIMEOUT) {
                Ok(migrations) => {
                    info!("upgrade: the previous instance stopped accepting and drains");
                    if let Some(m) = migrations {
                        let to = commands.clone();
                        thread::Builder::new()
                            .name("sluice-adopt".into())
                            .spawn(move || {
                                let mut next = 0usize;
                                loop {
                                    match m.next() {
                                        Ok(Some(c)) => {
                                            let _ =
                                                to[next % to.len()].send(WorkerCommand::Adopt(c));
                                            next += 1;
                                        }
                                        Ok(None) => break,
                                        Err(e) => {
                                            warn!(error = %e, "upgrade: migration channel failed");
                                            break;
                                        }
                                    }
                                }
                                info!(
                                    connections = next,
                                    "upgrade: adopted the previous instance's connections"
                                );
                            })?;
                    }
                }
                Err(e) => {
                    error!(error = %e, "upgrade failed; the previous instance keeps serving");
                    shared.set_state(ServerState::Draining);
                    let _ = stop_tx.send(true);
                    for h in handles {
                        let _ = h.join();
                    }
                    return Err(io::Error::from(e));
                }
            }
            if let Some(path) = &options.control_socket {
                match crate::control::ControlSocket::bind_after_upgrade(path) {
                    Ok(c) => control = Some(c),
                    Err(e) => {
                        warn!(error = %e, "upgrade: cannot take over the control socket; this instance cannot be upgraded")
                    }
                }
            }
        }
        if let Some(c) = control.take() {
            owned_socket_file = SocketFile::of(c.path());
            let offer = handover.clone();
            let taken_over = shared.clone();
            let slot = migration.clone();
            let finished = migrated_tx.clone();
            let handed = handed_over.clone();
            c.serve(
                move || {
                    offer
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .offer()
                },
                move || {
                    info!("upgrade: a new instance serves our sockets; draining");
                    handed.store(true, std::sync::atomic::Ordering::SeqCst);
                    // Busy Bolt connections move to the new instance rather than close.
                    let (tx, rx) = std::sync::mpsc::channel();
                    *slot
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(tx);
                    taken_over.set_state(ServerState::Draining);
                    taken_over.close_admin();
                    let _ = taken_over.quit.send(true);
                    let finished = finished.clone();
                    Some(crate::control::Migration {
                        connections: rx,
                        finished: Box::new(move || {
                            let _ = finished.send(());
                        }),
                    })
                },
                UPGRADE_STEP_TIMEOUT * 3,
            )?;
        }
    }
    let signal = if started == workers {
        shared.set_state(ServerState::Live);
        info!(
            workers,
            pinned = pin,
            version = crate::VERSION,
            "sluice ready"
        );
        if let Some(bootstrap) = xds_bootstrap {
            crate::xds::spawn_client(bootstrap, xds_updates_tx)?;
        }
        let mut quit = shared.quit.subscribe();
        let mut closed = shared.close_listeners.subscribe();
        let mut listeners_closed = false;
        // An in-place endpoints update failed part-way: the next xDS update switches.
        let mut endpoints_unsure = false;
        signal_rt.block_on(async {
            loop {
                let reload_request = async {
                    match reload_requests.as_mut() {
                        Some(r) => r.recv().await,
                        None => std::future::pending().await,
                    }
                };
                let xds_update = async {
                    match xds_updates.as_mut() {
                        Some(r) => r.recv().await,
                        None => std::future::pending().await,
                    }
                };
                let (why, reply, from_xds) = tokio::select! {
                    u = xds_update => match u {
                        Some(crate::xds::Update { config, reply }) => {
                            ("xDS", Some(reply), Some(Arc::new(*config)))
                        }
                        None => {
                            xds_updates = None;
                            continue;
                        }
                    },
                    s = signals.recv() => match s? {
                        Caught::Stop(name) => return Ok::<_, io::Error>(name),
                        Caught::Reopen => {
                            info!("SIGUSR1: reopening access logs");
                            reopen_tx.send_modify(|g| *g += 1);
                            continue;
                        }
                        Caught::Reload => ("SIGHUP", None, None),
                    },
                    r = reload_request => match r {
                        Some(reply) => ("POST /reload", Some(reply), None),
                        None => {
                            reload_requests = None;
                            continue;
                        }
                    },
                    _ = quit.wait_for(|q| *q) => return Ok("/quitquitquit"),
                    _ = closed.wait_for(|c| *c), if !listeners_closed => {
                        // /drain_listeners: the copies kept for an upgrade close too, so the
                        // sockets really close (and refuse) once the workers drop theirs.
                        listeners_closed = true;
                        handover
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                            .listeners
                            .clear();
                        continue;
                    }
                };
                let outcome = if listeners_closed {
                    Err("the listeners were closed by /drain_listeners: this instance only drains now".to_owned())
                } else if let Some(next) = from_xds {
                    if sluice_core::config::diff::only_inline_pem_differs(&config, &next) {
                        // SDS secrets rotated: new TLS contexts, no generation switch (no
                        // drain); ACKed once published, which every new handshake uses.
                        crate::tls::rotate_inline(&config, &next).map(|()| Reloaded {
                            config: next,
                            stats: all_stats.clone(),
                            shared_health: shared_health.clone(),
                            summary: "TLS secrets rotated (new handshakes use them; open \
                                      connections untouched)"
                                .to_owned(),
                            in_place: false,
                        })
                    } else if !endpoints_unsure
                        && let Some(changed) =
                            sluice_core::config::diff::only_endpoints_differ(&config, &next)
                        && let Some(applied) =
                            apply_endpoints(&config, &next, &changed, &commands, &shared_health)
                    {
                        // EDS: host sets changed in place on every worker (no generation
                        // switch, no connection cut); ACKed once every worker applied them.
                        // One that failed part-way (a worker did not answer) leaves the workers'
                        // hosts unsure: the next update switches generations, which rebuilds
                        // every host set from its config.
                        endpoints_unsure = applied.is_err();
                        applied.map(|summary| Reloaded {
                            config: next,
                            stats: all_stats.clone(),
                            shared_health: shared_health.clone(),
                            summary,
                            in_place: true,
                        })
                    } else {
                        let switched = switch_to(next, &config, workers, &commands, &all_stats, &shared_health, &handover);
                        endpoints_unsure &= switched.is_err();
                        switched
                    }
                } else {
                    reload(
                    options.config_path.as_deref(),
                    &config,
                    workers,
                    &commands,
                    &all_stats,
                    &shared_health,
                    &handover,
                )
                };
                match outcome {
                    Ok(next) => {
                        let summary = next.summary.clone();
                        if next.in_place {
                            debug!(trigger = why, "{summary}");
                            shared
                                .endpoint_updates_in_place
                                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        } else {
                            info!(trigger = why, "config reloaded: {summary}");
                            shared
                                .reloads_ok
                                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                        config = next.config;
                        limits.apply(&config);
                        crate::limits::warn_if_splice_is_off(&config, &limits);
                        all_stats = next.stats;
                        shared_health = next.shared_health;
                        handover
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                            .health = Some((shared_health.clone(), config.clone()));
                        admin.replace(config.clone(), all_stats.clone());
                        if let Some(reply) = reply {
                            let _ = reply.send(Ok(summary));
                        }
                    }
                    Err(problems) => {
                        error!(
                            trigger = why,
                            "config reload refused, nothing changed: {problems}"
                        );
                        shared
                            .reloads_failed
                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        if let Some(reply) = reply {
                            let _ = reply.send(Err(problems));
                        }
                    }
                }
            }
        })?
    } else {
        error!(started, workers, "a worker failed to start");
        "worker failure"
    };
    shared.set_state(ServerState::Draining);
    info!(signal, "stopping: no new connections, draining open ones");
    // The copies kept for an upgrade close too: once the workers drop theirs, the sockets
    // close and new connections are refused (or, after an upgrade, go to the new instance,
    // which has its own).
    {
        let mut h = handover
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        h.listeners.clear();
        h.admin = None;
    }
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
    // Migrations: the workers are done, so every connection to move was handed to the
    // control thread; let it finish sending before exiting (which would close them).
    let migrating = migration
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .take()
        .is_some();
    if migrating {
        drop(migrated_tx);
        let _ = migrated_rx.recv_timeout(std::time::Duration::from_secs(10));
    }
    if let Some(f) = owned_socket_file {
        f.remove_if_still_ours();
    }
    // The admin socket file too, unless a new instance serves it now (the same file).
    if let Some(f) = admin_file
        && !handed_over.load(std::sync::atomic::Ordering::SeqCst)
    {
        f.remove_if_still_ours();
    }
    // The listeners' downstream byte counters (what /stats shows), which every kind of
    // listener counts: TCP proxy, echo, HTTP and Bolt.
    let total = crate::stats::DetailedSnapshot::sum(&all_stats);
    let (bytes_in, bytes_out) = total.downstream_bytes();
    info!(
        connections = total.worker.downstream_cx_total,
        bytes_in, bytes_out, "stopped"
    );
    result
}

/// A reload that every worker applied.
struct Reloaded {
    config: Arc<Config>,
    stats: Vec<Arc<WorkerStats>>,
    shared_health: Arc<crate::health::SharedHealth>,
    summary: String,
    /// Endpoints updated in place (no generation switch): logged at debug and counted in
    /// `xds.endpoint_updates_in_place`, not as a reload (EDS may push every few seconds).
    in_place: bool,
}

/// Re-reads the config file and, when it is valid and its new listeners can bind, switches
/// every worker to it. On any error nothing changed.
fn reload(
    path: Option<&Path>,
    current: &Arc<Config>,
    workers: usize,
    commands: &[tokio::sync::mpsc::UnboundedSender<WorkerCommand>],
    stats: &[Arc<WorkerStats>],
    shared_health: &Arc<crate::health::SharedHealth>,
    handover: &std::sync::Mutex<HandoverSockets>,
) -> Result<Reloaded, String> {
    let path = path.ok_or("this process was started without a config file")?;
    let next = Arc::new(load_config(path)?);
    crate::xds::check_file_reload(current, &next)?;
    switch_to(
        next,
        current,
        workers,
        commands,
        stats,
        shared_health,
        handover,
    )
}

/// Applies an endpoints-only update in place: the new hosts of clusters `changed` of `next`
/// (the others and everything else as serving) are merged into the generation's host slots
/// (a host that stays keeps its id, health verdict, outlier state and counters: see
/// [`crate::dns`]), published, and put into every worker's clusters; removed hosts' idle
/// pooled connections close, requests in flight to them finish. `None` when a new host finds no
/// free slot (more hosts than the generation's ids: its hosts then, and spare ones): nothing
/// was changed, the caller switches generations instead. `Some(Err)`: a worker did not answer (the slots were
/// published; the workers that answered serve the new hosts).
fn apply_endpoints(
    current: &Config,
    next: &Config,
    changed: &[usize],
    commands: &[tokio::sync::mpsc::UnboundedSender<WorkerCommand>],
    shared_health: &Arc<crate::health::SharedHealth>,
) -> Option<Result<String, String>> {
    let update = Arc::new(crate::dns::merge_endpoints_update(
        shared_health,
        current,
        next,
        changed,
    )?);
    let mut answers = Vec::with_capacity(commands.len());
    for command in commands {
        let (done, answer) = std::sync::mpsc::channel();
        if command
            .send(WorkerCommand::Endpoints(update.clone(), done))
            .is_err()
        {
            return Some(Err("a worker is gone".into()));
        }
        answers.push(answer);
    }
    for (worker, answer) in answers.into_iter().enumerate() {
        match answer.recv_timeout(std::time::Duration::from_secs(30)) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                return Some(Err(format!(
                    "worker {worker} did not apply the endpoints: {e} (the workers that \
                     answered serve the new hosts; the next update switches generations)"
                )));
            }
            Err(_) => {
                return Some(Err(format!(
                    "worker {worker} did not apply the endpoints within 30 s (the workers that \
                     answered serve the new hosts; the next update switches generations)"
                )));
            }
        }
    }
    Some(Ok(update.summary(next)))
}

/// Switches every worker to `next` (from the file or from xDS) when its new listeners can
/// bind. On any error nothing changed.
fn switch_to(
    next: Arc<Config>,
    current: &Arc<Config>,
    workers: usize,
    commands: &[tokio::sync::mpsc::UnboundedSender<WorkerCommand>],
    stats: &[Arc<WorkerStats>],
    shared_health: &Arc<crate::health::SharedHealth>,
    handover: &std::sync::Mutex<HandoverSockets>,
) -> Result<Reloaded, String> {
    check_access_logs(&next).map_err(|e| e.to_string())?;
    crate::transparent::check_upstream_mark(&next).map_err(|e| e.to_string())?;
    let changes = sluice_core::config::diff::diff(current, &next);
    if changes.admin_listen_changed {
        return Err(
            "admin: changing where the admin API listens (address, path or mode) needs a \
             restart or an upgrade"
                .into(),
        );
    }
    // Sockets for the new addresses, one per worker, bound before anything changes.
    let mut fresh: Vec<Vec<Option<std::net::TcpListener>>> =
        (0..workers).map(|_| Vec::new()).collect();
    for (i, socket) in changes.sockets.iter().enumerate() {
        if *socket == ListenerSocket::Bind {
            // An address overlapping one this instance listens on now (127.0.0.1:P becoming
            // 0.0.0.0:P) would fail the probe on our own sockets, which close at the switch:
            // bound without it, as before (the kernel lets our reuseport sockets share).
            let address = next.listeners[i].address;
            let overlaps_ours = current
                .listeners
                .iter()
                .any(|c| sluice_core::config::yaml::addresses_overlap(c.address, address));
            let bound = if overlaps_ours {
                (0..workers).map(|_| bind_listener(&next, i)).collect()
            } else {
                bind_listener_per_worker(&next, i, workers)
            }
            .map_err(|e| e.to_string())?;
            for (mine, socket) in fresh.iter_mut().zip(bound) {
                mine.push(Some(socket));
            }
        } else {
            for mine in &mut fresh {
                mine.push(None);
            }
        }
    }
    let added: Vec<&str> = changes
        .to_bind()
        .map(|i| next.listeners[i].name.as_str())
        .collect();
    let removed: Vec<&str> = changes
        .closed_listeners
        .iter()
        .map(|&i| current.listeners[i].name.as_str())
        .collect();
    let next_health = Arc::new(crate::health::SharedHealth::new(&next));
    next_health.inherit(shared_health, current, &next);
    // Fresh counters; each worker moves its old ones in at the switch (it is their only writer).
    let next_stats: Vec<Arc<WorkerStats>> = stats
        .iter()
        .map(|_| Arc::new(WorkerStats::new(&next)))
        .collect();
    // The copies kept for an upgrade follow: new addresses in, removed ones out.
    let copies = HandoverSockets::reshaped(
        &handover
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
        &next,
        &fresh,
    )
    .map_err(|e| e.to_string())?;
    let mut answers = Vec::with_capacity(workers);
    for ((command, mine), s) in commands.iter().zip(fresh).zip(&next_stats) {
        let (done, answer) = std::sync::mpsc::channel();
        let generation = Generation {
            config: next.clone(),
            stats: s.clone(),
            shared_health: next_health.clone(),
            fresh: mine,
            done,
        };
        if command
            .send(WorkerCommand::Reload(Box::new(generation)))
            .is_err()
        {
            return Err("a worker is gone".into());
        }
        answers.push(answer);
    }
    for (worker, answer) in answers.into_iter().enumerate() {
        match answer.recv_timeout(std::time::Duration::from_secs(30)) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(format!("worker {worker}: {e}")),
            Err(_) => return Err(format!("worker {worker} did not switch")),
        }
    }
    *handover
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = copies;
    let summary = format!(
        "{} listener{}, {} cluster{}; added listeners: [{}]; removed listeners: [{}]",
        next.listeners.len(),
        if next.listeners.len() == 1 { "" } else { "s" },
        next.clusters.len(),
        if next.clusters.len() == 1 { "" } else { "s" },
        added.join(", "),
        removed.join(", ")
    );
    Ok(Reloaded {
        config: next,
        stats: next_stats,
        shared_health: next_health,
        summary,
        in_place: false,
    })
}

/// A signal the server acts on.
enum Caught {
    /// SIGTERM or SIGINT: drain and exit.
    Stop(&'static str),
    /// SIGUSR1: reopen the access logs.
    Reopen,
    /// SIGHUP: reload the config file.
    Reload,
}

/// SIGTERM, SIGINT and SIGUSR1, caught from creation on (create inside a tokio runtime).
struct StopSignals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    usr1: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl StopSignals {
    fn new() -> io::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(StopSignals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            usr1: signal(SignalKind::user_defined1())?,
            hup: signal(SignalKind::hangup())?,
        })
    }

    /// The next signal.
    async fn recv(&mut self) -> io::Result<Caught> {
        Ok(tokio::select! {
            _ = self.term.recv() => Caught::Stop("SIGTERM"),
            _ = self.int.recv() => Caught::Stop("SIGINT"),
            _ = self.usr1.recv() => Caught::Reopen,
            _ = self.hup.recv() => Caught::Reload,
        })
    }
}
