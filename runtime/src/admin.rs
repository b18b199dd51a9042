//! The admin API: a small HTTP/1.1 server on its own thread and its own current-thread tokio
//! runtime, bound to `admin.address` (loopback unless the config allows otherwise) or to a
//! Unix socket `admin.path` with `admin.mode` (only whom the file's owner and mode allow).
//!
//! It never touches the data path: it reads the workers' counters ([`WorkerStats`], written
//! only by their worker with relaxed stores) and sums them per scrape, reads the immutable
//! config, and talks to the server through [`AdminShared`]: the readiness state, the
//! health-check override, and two one-way switches (close the listeners; quit).
//!
//! One request per connection (`connection: close`). Endpoints (mutations require `POST`, a
//! `GET` on them answers 405):
//!
//! | endpoint | answer |
//! |---|---|
//! | `GET /` | HTML: links to every endpoint and a table of clusters and hosts |
//! | `GET /ready` | `200 LIVE` when serving; `503` while starting, draining, or after `/healthcheck/fail` |
//! | `GET /stats` | `name: value` lines, sorted; `?filter=REGEX`, `?format=json` |
//! | `GET /stats/prometheus` | Prometheus text exposition 0.0.4 |
//! | `GET /clusters` | clusters and hosts with weight, health, load (text; `?format=json`) |
//! | `GET /listeners` | listeners: name, address, kind, open connections (text; `?format=json`) |
//! | `GET /config_dump` | the effective config as JSON (secrets redacted) |
//! | `GET /memory` | resident, peak and virtual memory from `/proc` (JSON) |
//! | `GET /help` | every endpoint with one line |
//! | `POST /reset_counters` | `/stats` counters start again from 0 (Prometheus untouched) |
//! | `GET /server_info` | JSON: version, uptime, state, workers |
//! | `POST /healthcheck/fail`, `/healthcheck/ok` | force `/ready` to 503, undo it |
//! | `POST /drain_listeners` | stop accepting; open connections carry on |
//! | `POST /quitquitquit` | graceful drain and exit 0 (same as SIGTERM) |
//! | `POST /logging?level=LEVEL` | change the log filter at runtime |

use std::fmt::Write as _;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};
use sluice_core::config::{AdminListen, ClusterKind, Config, ListenerFilter};
use sluice_core::http1::write_local_response;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::stats::{
    BOLT_METRICS, CLUSTER_HISTOGRAM, CLUSTER_METRICS, ClusterSnapshot, DetailedSnapshot, Export,
    HISTOGRAM_BOUNDS_US, HISTOGRAM_METRICS, HOST_METRICS, HistogramSnapshot, HostSnapshot, Kind,
    LISTENER_HISTOGRAM, LISTENER_METRICS, ListenerSnapshot, Metric, Shown, WORKER_METRICS,
    WorkerStats,
};

/// Where the server is in its life, as `/server_info` and `/ready` report it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum ServerState {
    /// Binding, starting workers.
    PreInitializing = 0,
    /// Serving.
    Live = 1,
    /// Listeners closed (`/drain_listeners`), or stopping (SIGTERM, `/quitquitquit`).
    Draining = 2,
}

impl ServerState {
    /// The name `/server_info` uses.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            ServerState::PreInitializing => "PRE_INITIALIZING",
            ServerState::Live => "LIVE",
            ServerState::Draining => "DRAINING",
        }
    }
}

/// Sets the log filter from a level or an `EnvFilter` directive list; `Err` says why not.
pub type SetLogFilter = dyn Fn(&str) -> Result<(), String> + Send + Sync;

/// Changes the log filter at runtime.
#[derive(Clone)]
pub struct LogControl(pub Arc<SetLogFilter>);

impl std::fmt::Debug for LogControl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LogControl")
    }
}

/// A config reload asked through `POST /reload`: the server answers on the oneshot with a
/// summary (`Ok`) or every problem found (`Err`).
pub type ReloadRequest = tokio::sync::oneshot::Sender<Result<String, String>>;

/// What the admin API shows of one config generation (swapped on a reload; see
/// [`AdminHandle`]), with the process-wide state ([`AdminProcess`], reached through `Deref`).
pub struct AdminShared {
    /// The effective config.
    pub config: Arc<Config>,
    /// Every worker's counters, in worker order.
    pub workers: Vec<Arc<WorkerStats>>,
    process: Arc<AdminProcess>,
}

impl std::ops::Deref for AdminShared {
    type Target = AdminProcess;
    fn deref(&self) -> &AdminProcess {
        &self.process
    }
}

/// The admin API's current view, replaced on every config reload (read once per request).
pub struct AdminHandle {
    current: std::sync::Mutex<Arc<AdminShared>>,
}

impl AdminHandle {
    /// A handle showing `shared`.
    #[must_use]
    pub fn new(shared: Arc<AdminShared>) -> Self {
        AdminHandle {
            current: std::sync::Mutex::new(shared),
        }
    }

    /// The view now.
    #[must_use]
    pub fn get(&self) -> Arc<AdminShared> {
        self.current
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Shows a new config generation (same process state). The `/reset_counters` zeroes of
    /// listeners, clusters and hosts the new config no longer has are forgotten: their counters
    /// are not carried, so one added back later starts from 0 and must not be read less its old
    /// zero.
    pub fn replace(&self, config: Arc<Config>, workers: Vec<Arc<WorkerStats>>) {
        let process = self.get().process.clone();
        let shared = Arc::new(AdminShared {
            config,
            workers,
            process,
        });
        forget_reset_of_removed(&shared);
        *self
            .current
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = shared;
    }
}

/// The process-wide part of the admin state (the same across config generations).
pub struct AdminProcess {
    state: AtomicU8,
    healthcheck_failed: AtomicBool,
    started: Instant,
    /// Set to `true` to close every worker's listeners (no exit).
    pub close_listeners: watch::Sender<bool>,
    /// Set to `true` to stop the server gracefully (as SIGTERM does).
    pub quit: watch::Sender<bool>,
    log_control: Option<LogControl>,
    /// `POST /reload` requests, for the server's main thread.
    reload_tx: tokio::sync::mpsc::UnboundedSender<ReloadRequest>,
    reload_rx: std::sync::Mutex<Option<tokio::sync::mpsc::UnboundedReceiver<ReloadRequest>>>,
    /// Config reloads applied.
    pub reloads_ok: std::sync::atomic::AtomicU64,
    /// Config reloads refused (invalid config, a listener that cannot bind).
    pub reloads_failed: std::sync::atomic::AtomicU64,
    /// xDS updates applied by changing clusters' hosts in place (no generation switch; not
    /// counted in `reloads_ok`).
    pub endpoint_updates_in_place: std::sync::atomic::AtomicU64,
    /// Set once a new instance took the admin socket over (upgrade): stop accepting on it.
    admin_closed: watch::Sender<bool>,
    /// The process-wide caps and counts, once the server set them.
    pub limits: std::sync::OnceLock<Arc<crate::limits::ProcessLimits>>,
    /// Each `/stats` counter's value at the last `POST /reset_counters` (subtracted from what
    /// `/stats` shows; the counters themselves never go down).
    counter_base: std::sync::Mutex<std::collections::HashMap<String, u64>>,
}

impl AdminShared {
    /// Shared state for a server starting now.
    #[must_use]
    pub fn new(
        config: Arc<Config>,
        workers: Vec<Arc<WorkerStats>>,
        log_control: Option<LogControl>,
    ) -> Self {
        let (reload_tx, reload_rx) = tokio::sync::mpsc::unbounded_channel();
        AdminShared {
            config,
            workers,
            process: Arc::new(AdminProcess {
                state: AtomicU8::new(ServerState::PreInitializing as u8),
                healthcheck_failed: AtomicBool::new(false),
                started: Instant::now(),
                close_listeners: watch::channel(false).0,
                quit: watch::channel(false).0,
                log_control,
                reload_tx,
                reload_rx: std::sync::Mutex::new(Some(reload_rx)),
                reloads_ok: std::sync::atomic::AtomicU64::new(0),
                reloads_failed: std::sync::atomic::AtomicU64::new(0),
                endpoint_updates_in_place: std::sync::atomic::AtomicU64::new(0),
                admin_closed: watch::channel(false).0,
                limits: std::sync::OnceLock::new(),
                counter_base: std::sync::Mutex::new(std::collections::HashMap::new()),
            }),
        }
    }
}

impl AdminProcess {
    /// Stops accepting admin connections (a new instance serves the admin socket now).
    pub fn close_admin(&self) {
        let _ = self.admin_closed.send(true);
    }

    /// The receiving end of `POST /reload` requests (once; the server's main thread takes it).
    pub fn take_reload_requests(
        &self,
    ) -> Option<tokio::sync::mpsc::UnboundedReceiver<ReloadRequest>> {
        self.reload_rx
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
    }

    /// The current state.
    #[must_use]
    pub fn state(&self) -> ServerState {
        match self.state.load(Ordering::Acquire) {
            0 => ServerState::PreInitializing,
            1 => ServerState::Live,
            _ => ServerState::Draining,
        }
    }

    /// Moves to `state`; a draining server never becomes live again.
    pub fn set_state(&self, state: ServerState) {
        let _ = self
            .state
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |s| {
                (s != ServerState::Draining as u8).then_some(state as u8)
            });
    }

    /// Whether `/ready` answers 200.
    #[must_use]
    pub fn ready(&self) -> bool {
        self.state() == ServerState::Live && !self.healthcheck_failed.load(Ordering::Acquire)
    }

    fn uptime(&self) -> Duration {
        self.started.elapsed()
    }
}

/// The admin server's listening socket: TCP, or a Unix stream socket.
#[derive(Debug)]
pub enum AdminListener {
    /// `admin.address`.
    Tcp(std::net::TcpListener),
    /// `admin.path`.
    Unix(std::os::unix::net::UnixListener),
}

impl AdminListener {
    /// A duplicate of the socket (for a later upgrade's handover).
    pub fn try_clone_fd(&self) -> io::Result<std::os::fd::OwnedFd> {
        Ok(match self {
            AdminListener::Tcp(l) => l.try_clone()?.into(),
            AdminListener::Unix(l) => l.try_clone()?.into(),
        })
    }
}

/// Binds the admin socket (before anything else starts, so that an address in use stops
/// startup with a clear message).
///
/// A Unix socket goes in a directory only this user (or root) can write
/// ([`crate::control::check_dir`]); an existing socket file there must be this user's: a
/// stale one (nobody answers) is replaced, a live one is an error. The new file gets `mode`.
pub fn bind(listen: &AdminListen) -> io::Result<AdminListener> {
    match listen {
        AdminListen::Tcp { address } => {
            let l = std::net::TcpListener::bind(address).map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("admin.address: cannot listen on {address}: {e}"),
                )
            })?;
            l.set_nonblocking(true)?;
            Ok(AdminListener::Tcp(l))
        }
        AdminListen::Unix { path, mode } => {
            let at = |e: io::Error| {
                io::Error::new(
                    e.kind(),
                    format!("admin.path: cannot listen on {path}: {e}"),
                )
            };
            let path = std::path::Path::new(path);
            crate::control::check_dir(path).map_err(&at)?;
            crate::control::remove_stale_socket(path).map_err(at)?;
            // Bind (which also listens) with a umask that leaves the socket file to its owner
            // only, so that nobody else can connect before its mode is set. The umask is the
            // process's: startup binds the admin socket before the workers and the admin server
            // start, so no other thread creates files in this moment.
            let previous = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o177));
            let bound = std::os::unix::net::UnixListener::bind(path);
            nix::sys::stat::umask(previous);
            let l = bound.map_err(at)?;
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(*mode)).map_err(at)?;
            l.set_nonblocking(true)?;
            Ok(AdminListener::Unix(l))
        }
    }
}

/// Starts the admin server on its own thread. It runs until the process exits.
pub fn spawn(
    listener: AdminListener,
    handle: Arc<AdminHandle>,
) -> io::Result<std::thread::JoinHandle<()>> {
    // The runtime (its epoll and wake descriptors) and the reserved descriptor are taken here,
    // on the caller's thread, before the workers start: a flood of connections accepted by the
    // workers at startup could otherwise leave the admin server without either.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let spare = reserve_descriptor();
    std::thread::Builder::new()
        .name("sluice-admin".into())
        .spawn(move || {
            let local = tokio::task::LocalSet::new();
            local.block_on(&rt, async move {
                match listener {
                    AdminListener::Tcp(l) => match tokio::net::TcpListener::from_std(l) {
                        Ok(l) => {
                            accept_loop(&handle, spare, || async {
                                l.accept().await.map(|(s, _)| s)
                            })
                            .await
                        }
                        Err(e) => warn!(error = %e, "admin server: cannot use its socket"),
                    },
                    AdminListener::Unix(l) => match tokio::net::UnixListener::from_std(l) {
                        Ok(l) => {
                            accept_loop(&handle, spare, || async {
                                l.accept().await.map(|(s, _)| s)
                            })
                            .await
                        }
                        Err(e) => warn!(error = %e, "admin server: cannot use its socket"),
                    },
                }
            });
        })
}

/// Accepts admin connections until the socket is handed over.
///
/// A descriptor is kept in reserve (nginx, HAProxy): when the process runs out of descriptors,
/// the admin server closes it to accept its own connection, so that it still answers.
///
/// Workers accept on other threads, so a descriptor freed for a moment can be taken by one of
/// them before the admin server takes it back. Two rules keep the slot the admin server's:
/// when it has no reserve, the socket of a connection it served becomes the reserve (shut down
/// and kept open, never closed: no moment where the slot is free), and while it swaps its
/// reserve for an accept, [`ADMIN_TAKING_RESERVE`] holds back workers that retry an accept
/// after running out of descriptors. Failed accepts are logged at most once a second.
async fn accept_loop<S, F>(
    handle: &AdminHandle,
    spare: Option<std::os::fd::OwnedFd>,
    mut accept: impl FnMut() -> F,
) where
    S: AsyncRead + AsyncWrite + Unpin + KeepSlot + 'static,
    F: std::future::Future<Output = io::Result<S>>,
{
    let mut closed = handle.get().admin_closed.subscribe();
    let spare = std::rc::Rc::new(std::cell::RefCell::new(spare.or_else(reserve_descriptor)));
    let serve = |mut stream: S| {
        let shared = handle.get();
        let spare = spare.clone();
        tokio::task::spawn_local(async move {
            serve_connection(&mut stream, &shared).await;
            // Its descriptor becomes the reserve if there is none (or is closed).
            if spare.borrow().is_none() {
                *spare.borrow_mut() = stream.keep_slot().or_else(reserve_descriptor);
            }
        });
    };
    let mut failures = AcceptFailures::default();
    loop {
        let accepted = tokio::select! {
            biased;
            _ = closed.wait_for(|c| *c) => {
                info!("admin server: socket handed over; no longer accepting");
                return;
            }
            a = accept() => a,
        };
        match accepted {
            Ok(stream) => serve(stream),
            Err(e) if is_out_of_descriptors(&e) && spare.borrow().is_some() => {
                // Free the reserved descriptor and accept at once with it (an accept fails for
                // want of a descriptor even with nothing waiting: then the descriptor goes
                // straight back into reserve).
                ADMIN_TAKING_RESERVE.store(true, Ordering::SeqCst);
                drop(spare.borrow_mut().take());
                let taken = tokio::time::timeout(Duration::ZERO, accept()).await;
                if !matches!(taken, Ok(Ok(_))) {
                    *spare.borrow_mut() = reserve_descriptor();
                }
                ADMIN_TAKING_RESERVE.store(false, Ordering::SeqCst);
                match taken {
                    Ok(Ok(stream)) => {
                        debug!("admin server: out of descriptors; answering with the reserved one");
                        serve(stream);
                    }
                    Ok(Err(e)) => {
                        failures.log(&e);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    Err(_) => {}
                }
            }
            Err(e) => {
                failures.log(&e);
                tokio::time::sleep(Duration::from_millis(50)).await;
                if spare.borrow().is_none() {
                    *spare.borrow_mut() = reserve_descriptor();
                }
            }
        }
    }
}

/// Set while the admin server has freed its reserved descriptor to accept with it: a worker
/// retrying an accept after running out of descriptors waits (the engine's accept loop), so
/// that it does not take the slot. Process-wide; touched only on those error paths.
pub(crate) static ADMIN_TAKING_RESERVE: AtomicBool = AtomicBool::new(false);

/// An admin connection whose descriptor can be kept open, shut down, as the reserve.
trait KeepSlot {
    fn keep_slot(self) -> Option<std::os::fd::OwnedFd>;
}

impl KeepSlot for tokio::net::TcpStream {
    fn keep_slot(self) -> Option<std::os::fd::OwnedFd> {
        let s = self.into_std().ok()?;
        let _ = s.shutdown(std::net::Shutdown::Both);
        Some(s.into())
    }
}

impl KeepSlot for tokio::net::UnixStream {
    fn keep_slot(self) -> Option<std::os::fd::OwnedFd> {
        let s = self.into_std().ok()?;
        let _ = s.shutdown(std::net::Shutdown::Both);
        Some(s.into())
    }
}

/// Failed admin accepts, logged at most once a second with how many were not.
#[derive(Default)]
struct AcceptFailures {
    logged_at: Option<Instant>,
    unlogged: u64,
}

impl AcceptFailures {
    fn log(&mut self, e: &io::Error) {
        let now = Instant::now();
        if self
            .logged_at
            .is_some_and(|t| now.duration_since(t) < Duration::from_secs(1))
        {
            self.unlogged += 1;
            return;
        }
        self.logged_at = Some(now);
        let suppressed = std::mem::take(&mut self.unlogged);
        warn!(error = %e, suppressed, "admin server: accept failed");
    }
}

/// A descriptor to hold in reserve (`/dev/null`, read-only).
fn reserve_descriptor() -> Option<std::os::fd::OwnedFd> {
    std::fs::File::open("/dev/null").ok().map(Into::into)
}

/// Whether an accept failed for want of a descriptor (EMFILE, ENFILE).
fn is_out_of_descriptors(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(24 | 23))
}

/// Largest admin request head.
const MAX_HEAD: usize = 16 * 1024;
/// Time for a client to send its request head.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);

async fn serve_connection<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S, shared: &AdminShared) {
    let mut buf = Vec::with_capacity(1024);
    let head = tokio::time::timeout(HEAD_TIMEOUT, read_head(&mut stream, &mut buf)).await;
    let mut head_only = false;
    let (mut response, after) = match head {
        Ok(Ok(Some(Head {
            method,
            mut target,
            form,
        }))) => {
            head_only = method == "HEAD";
            // An HTML form posts its fields as an urlencoded body: they count as query
            // parameters (the index page's `/logging` form).
            if let Some(form) = form.filter(|f| !f.is_empty()) {
                target.push(if target.contains('?') { '&' } else { '?' });
                target.push_str(&form);
            }
            handle(shared, &method, &target)
        }
        Ok(Ok(None)) => (Response::text(400, "malformed request\n"), After::Nothing),
        Ok(Err(_)) => return,
        Err(_) => (
            Response::text(408, "request head too slow\n"),
            After::Nothing,
        ),
    };
    if after == After::Reload {
        // The server's main thread reloads; answer with its verdict.
        let (tx, rx) = tokio::sync::oneshot::channel();
        response = if shared.reload_tx.send(tx).is_err() {
            Response::text(503, "this process cannot reload its config\n")
        } else {
            match tokio::time::timeout(Duration::from_secs(60), rx).await {
                Ok(Ok(Ok(summary))) => Response::text(200, format!("{summary}\n")),
                Ok(Ok(Err(problems))) => Response::text(400, format!("{problems}\n")),
                _ => Response::text(503, "the reload did not finish\n"),
            }
        };
    }
    let mut out = Vec::with_capacity(response.body.len() + 256);
    let mut headers: Vec<(&str, &[u8])> = vec![
        ("content-type", response.content_type.as_bytes()),
        ("cache-control", b"no-cache"),
    ];
    if let Some(allow) = response.allow {
        headers.push(("allow", allow.as_bytes()));
    }
    write_local_response(&mut out, response.status, &headers, &response.body, true);
    if head_only {
        // The head of the GET answer, length included, without the body.
        out.truncate(out.len() - response.body.len());
    }
    let _ = stream.write_all(&out).await;
    let _ = stream.shutdown().await;
    // Read what the client may still send (a request body) so that closing does not reset
    // the connection under the response.
    let mut sink = [0u8; 1024];
    let _ = tokio::time::timeout(Duration::from_millis(200), async {
        while let Ok(n) = stream.read(&mut sink).await {
            if n == 0 {
                break;
            }
        }
    })
    .await;
    drop(stream);
    match after {
        After::Nothing | After::Reload => {}
        After::Quit => {
            shared.set_state(ServerState::Draining);
            let _ = shared.quit.send(true);
        }
    }
}

/// A request head: method, target, and the body of a `POST` of an urlencoded form.
struct Head {
    method: String,
    target: String,
    form: Option<String>,
}

/// Largest form body read (a form has one short field).
const MAX_FORM: usize = 4096;

/// Reads a request head (and the body of an urlencoded form, up to [`MAX_FORM`] bytes);
/// `Ok(None)` when it is malformed or too large.
async fn read_head<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut Vec<u8>,
) -> io::Result<Option<Head>> {
    let mut chunk = [0u8; 2048];
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(buf) {
            Ok(httparse::Status::Complete(head_len)) => {
                let (Some(method), Some(target)) = (req.method, req.path) else {
                    return Ok(None);
                };
                let header = |name: &str| {
                    req.headers
                        .iter()
                        .find(|h| h.name.eq_ignore_ascii_case(name))
                        .and_then(|h| std::str::from_utf8(h.value).ok())
                        .map(str::trim)
                };
                let is_form = header("content-type").is_some_and(|t| {
                    t.split(';').next().is_some_and(|t| {
                        t.trim()
                            .eq_ignore_ascii_case("application/x-www-form-urlencoded")
                    })
                });
                let length = header("content-length").and_then(|l| l.parse::<usize>().ok());
                let mut head = Head {
                    method: method.to_owned(),
                    target: target.to_owned(),
                    form: None,
                };
                if let (true, Some(length)) = (is_form && head.method == "POST", length) {
                    if length > MAX_FORM {
                        return Ok(None);
                    }
                    let mut body = buf[head_len..].to_vec();
                    while body.len() < length {
                        let n = stream.read(&mut chunk).await?;
                        if n == 0 {
                            return Err(io::ErrorKind::UnexpectedEof.into());
                        }
                        body.extend_from_slice(&chunk[..n]);
                    }
                    body.truncate(length);
                    head.form = Some(String::from_utf8_lossy(&body).into_owned());
                }
                return Ok(Some(head));
            }
            Ok(httparse::Status::Partial) => {}
            Err(_) => return Ok(None),
        }
        if buf.len() > MAX_HEAD {
            return Ok(None);
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// An admin answer.
#[derive(Debug)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// `content-type`.
    pub content_type: &'static str,
    /// Body.
    pub body: Vec<u8>,
    /// `allow`, on a 405.
    pub allow: Option<&'static str>,
}

impl Response {
    fn new(status: u16, content_type: &'static str, body: impl Into<Vec<u8>>) -> Self {
        Response {
            status,
            content_type,
            body: body.into(),
            allow: None,
        }
    }

    fn text(status: u16, body: impl Into<Vec<u8>>) -> Self {
        Self::new(status, "text/plain; charset=utf-8", body)
    }

    fn json(status: u16, value: &Value) -> Self {
        let mut body = serde_json::to_vec_pretty(value).unwrap_or_default();
        body.push(b'\n');
        Self::new(status, "application/json", body)
    }
}

/// What to do once the answer is written.
#[derive(Debug, PartialEq, Eq)]
pub enum After {
    /// Nothing.
    Nothing,
    /// Stop the server gracefully.
    Quit,
    /// Reload the config file (the response waits for the verdict).
    Reload,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Verb {
    Get,
    Post,
}

/// Every endpoint: path, method, what it does (the index page lists them).
const ENDPOINTS: &[(&str, Verb, &str)] = &[
    ("/", Verb::Get, "this page"),
    (
        "/ready",
        Verb::Get,
        "200 LIVE when serving; 503 while starting, draining or failed",
    ),
    (
        "/stats",
        Verb::Get,
        "counters as name: value lines (?filter=REGEX, ?format=json)",
    ),
    (
        "/stats/prometheus",
        Verb::Get,
        "counters in the Prometheus text format",
    ),
    (
        "/clusters",
        Verb::Get,
        "clusters and hosts: weight, health, load (?format=json)",
    ),
    (
        "/listeners",
        Verb::Get,
        "listeners: name, address, kind, open connections (?format=json)",
    ),
    ("/config_dump", Verb::Get, "the effective config as JSON"),
    (
        "/xds",
        Verb::Get,
        "xDS: connected, and per resource type the accepted version, when, the resources, the last NACK (JSON)",
    ),
    (
        "/certs",
        Verb::Get,
        "TLS certificates of listeners and clusters: subject, SANs, serial, validity, seconds until expiry (JSON)",
    ),
    (
        "/memory",
        Verb::Get,
        "the process's memory from /proc: resident, peak, virtual (JSON)",
    ),
    ("/help", Verb::Get, "every endpoint with one line, as text"),
    (
        "/server_info",
        Verb::Get,
        "version, uptime, state, workers (JSON)",
    ),
    (
        "/healthcheck/fail",
        Verb::Post,
        "make /ready answer 503 (take this instance out of rotation)",
    ),
    ("/healthcheck/ok", Verb::Post, "undo /healthcheck/fail"),
    (
        "/drain_listeners",
        Verb::Post,
        "stop accepting connections; open ones carry on",
    ),
    (
        "/reset_counters",
        Verb::Post,
        "zero the counters /stats shows (gauges, histograms and /stats/prometheus untouched)",
    ),
    (
        "/quitquitquit",
        Verb::Post,
        "drain gracefully and exit 0 (as SIGTERM)",
    ),
    (
        "/reload",
        Verb::Post,
        "re-read and apply the config file (as SIGHUP); 400 with every problem when invalid",
    ),
    (
        "/logging",
        Verb::Post,
        "change the log filter: ?level=debug (or a filter like sluice_runtime=debug)",
    ),
];

/// Answers one request (`target` = path and query).
pub fn handle(shared: &AdminShared, method: &str, target: &str) -> (Response, After) {
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, q),
        None => (target, ""),
    };
    let Some(&(_, verb, _)) = ENDPOINTS.iter().find(|(p, _, _)| *p == path) else {
        let mut body = format!("no admin endpoint {path}; endpoints:\n");
        for (p, v, what) in ENDPOINTS {
            let _ = writeln!(body, "  {} {p}: {what}", verb_name(*v));
        }
        return (Response::text(404, body), After::Nothing);
    };
    let allowed = match verb {
        Verb::Get => method == "GET" || method == "HEAD",
        Verb::Post => method == "POST",
    };
    if !allowed {
        let mut r = Response::text(
            405,
            format!(
                "{path} requires {}, not {method}\n",
                verb_name(verb).to_uppercase()
            ),
        );
        r.allow = Some(match verb {
            Verb::Get => "GET, HEAD",
            Verb::Post => "POST",
        });
        return (r, After::Nothing);
    }
    let params = parse_query(query);
    let param = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    let json_format = param("format") == Some("json");
    let response = match path {
        "/" => Response::new(200, "text/html; charset=utf-8", index_html(shared)),
        "/ready" => {
            if shared.ready() {
                Response::text(200, "LIVE\n")
            } else {
                let why = if shared.healthcheck_failed.load(Ordering::Acquire) {
                    "FAILED"
                } else {
                    shared.state().as_str()
                };
                Response::text(503, format!("{why}\n"))
            }
        }
        "/stats" => {
            let filter = match param("filter").map(regex::Regex::new) {
                None => None,
                Some(Ok(re)) => Some(re),
                Some(Err(e)) => {
                    return (
                        Response::text(400, format!("filter: not a valid regex: {e}\n")),
                        After::Nothing,
                    );
                }
            };
            let stats = flat_stats(shared, &scrape(shared));
            let stats = stats
                .into_iter()
                .filter(|(name, _)| filter.as_ref().is_none_or(|re| re.is_match(name)));
            if json_format {
                let list: Vec<Value> = stats
                    .map(|(name, value)| json!({ "name": name, "value": value }))
                    .collect();
                Response::json(200, &json!({ "stats": list }))
            } else {
                let mut body = String::new();
                for (name, value) in stats {
                    let _ = writeln!(body, "{name}: {value}");
                }
                Response::text(200, body)
            }
        }
        "/stats/prometheus" => Response::new(
            200,
            "text/plain; version=0.0.4; charset=utf-8",
            prometheus(shared, &scrape(shared)),
        ),
        "/clusters" => {
            let view = clusters_json(shared, &scrape(shared));
            if json_format {
                Response::json(200, &view)
            } else {
                Response::text(200, clusters_text(&view))
            }
        }
        "/listeners" => {
            let view = listeners_json(shared, &scrape(shared));
            if json_format {
                Response::json(200, &view)
            } else {
                let mut body = String::new();
                for l in view["listeners"].as_array().into_iter().flatten() {
                    let name = l["name"].as_str().unwrap_or("");
                    for field in ["address", "kind", "open_connections", "virtual"] {
                        let v = match &l[field] {
                            Value::Null => continue,
                            Value::String(s) => s.clone(),
                            other => other.to_string(),
                        };
                        let _ = writeln!(body, "{name}::{field}::{v}");
                    }
                }
                Response::text(200, body)
            }
        }
        "/memory" => Response::json(200, &memory_json(&ProcessInfo::read())),
        "/help" => {
            let mut body = String::from("Sluice admin endpoints:\n");
            for (p, v, what) in ENDPOINTS {
                let _ = writeln!(body, "  {} {p}: {what}", verb_name(*v).to_uppercase());
            }
            Response::text(200, body)
        }
        "/reset_counters" => {
            let n = reset_counters(shared);
            info!(
                counters = n,
                "admin: /reset_counters: /stats counters start from 0"
            );
            Response::text(200, format!("OK: {n} counters of /stats reset\n"))
        }
        "/config_dump" => {
            let mut dump = config_dump(&shared.config);
            crate::xds::annotate_config_dump(&mut dump);
            Response::json(200, &dump)
        }
        "/xds" => match crate::xds::status_json() {
            Value::Null => Response::text(404, "no xds in the config\n"),
            status => Response::json(200, &status),
        },
        "/certs" => Response::json(
            200,
            &crate::tls_certs::to_json(
                &crate::tls::certificates(&shared.config),
                crate::tls_certs::unix_now(),
            ),
        ),
        "/server_info" => Response::json(
            200,
            &json!({
                "version": crate::VERSION,
                "state": shared.state().as_str(),
                "uptime_seconds": shared.uptime().as_secs(),
                "workers": shared.workers.len(),
                "healthcheck_failed": shared.healthcheck_failed.load(Ordering::Acquire),
                "admin_address": shared.config.admin.as_ref().map(|a| a.listen.to_string()),
            }),
        ),
        "/healthcheck/fail" => {
            shared.healthcheck_failed.store(true, Ordering::Release);
            info!("admin: /healthcheck/fail: /ready answers 503");
            Response::text(200, "OK\n")
        }
        "/healthcheck/ok" => {
            shared.healthcheck_failed.store(false, Ordering::Release);
            info!("admin: /healthcheck/ok");
            Response::text(200, "OK\n")
        }
        "/drain_listeners" => {
            shared.set_state(ServerState::Draining);
            let _ = shared.close_listeners.send(true);
            info!("admin: /drain_listeners: closing listeners, open connections carry on");
            Response::text(200, "OK\n")
        }
        "/quitquitquit" => {
            info!("admin: /quitquitquit");
            return (Response::text(200, "OK\n"), After::Quit);
        }
        "/reload" => {
            info!("admin: /reload");
            return (Response::text(200, "OK\n"), After::Reload);
        }
        "/logging" => match param("level").map(crate::logging::level_filter) {
            None => Response::text(
                400,
                format!(
                    "give the level: POST /logging?level=debug (one of {})\n",
                    crate::logging::ACCEPTED_LEVELS
                ),
            ),
            Some(Err(e)) => Response::text(400, format!("level: {e}\n")),
            Some(Ok(filter)) => match &shared.log_control {
                None => Response::text(501, "this process cannot change its log level\n"),
                Some(control) => match (control.0)(&filter) {
                    Ok(()) => {
                        info!(filter, "admin: log filter changed");
                        Response::text(200, format!("log filter set to {filter}\n"))
                    }
                    Err(e) => Response::text(400, format!("level: {e}\n")),
                },
            },
        },
        _ => unreachable!("every endpoint is handled"),
    };
    debug!(method, path, status = response.status, "admin request");
    (response, After::Nothing)
}

fn verb_name(v: Verb) -> &'static str {
    match v {
        Verb::Get => "get",
        Verb::Post => "post",
    }
}

/// `a=1&b=x%20y` → pairs, percent-decoded (`+` is kept: it is common in regexes).
fn parse_query(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (percent_decode(k), percent_decode(v)),
            None => (percent_decode(p), String::new()),
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let Some(v) = std::str::from_utf8(&b[i + 1..i + 3])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Headers whose values are credentials: a config dump does not show the values a route adds
/// or matches for them.
const CREDENTIAL_HEADERS: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "cookie",
    "set-cookie",
    "x-api-key",
    "x-auth-token",
];

/// The config as JSON in the input schema (see `sluice_core::config::dump`): `Config::from_tree`
/// reads it back into the same config, except for credentials: the values a route adds or
/// matches for a credential header ([`CREDENTIAL_HEADERS`]) are `"[redacted]"`. Unset options
/// are left out (the decoder reads a null as a type error). TLS keys appear as the paths of
/// their files (a path is not a secret); inline PEM (from xDS) as its secret's name and length,
/// `{ inline: "[redacted: N bytes]", secret: NAME }` — such a dump does not read back into a
/// usable config (the PEM is not there), which is the point: the key never appears.
#[must_use]
pub fn config_dump(config: &Config) -> Value {
    let mut v = serde_json::to_value(config).unwrap_or(Value::Null);
    redact(&mut v);
    v
}

/// Drops null-valued keys and replaces credential values: an object naming a credential header
/// (`{name, value}` of `request_headers_to_add`, `{name, exact | prefix | safe_regex}` of a
/// header matcher) gets `"[redacted]"` for what it holds.
fn redact(v: &mut Value) {
    match v {
        Value::Object(map) => {
            map.retain(|_, child| !child.is_null());
            let credential = map
                .get("name")
                .and_then(Value::as_str)
                .is_some_and(|n| CREDENTIAL_HEADERS.iter().any(|c| c.eq_ignore_ascii_case(n)));
            for (k, child) in map.iter_mut() {
                if credential
                    && matches!(
                        k.as_str(),
                        "value" | "exact" | "prefix" | "safe_regex" | "regex"
                    )
                {
                    *child = Value::String("[redacted]".into());
                } else {
                    redact(child);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(redact),
        _ => {}
    }
}

/// The filters a listener serves with: its own, then its filter chains'.
fn filters(config: &Config, listener: usize) -> impl Iterator<Item = &ListenerFilter> {
    let l = &config.listeners[listener];
    std::iter::once(&l.filter).chain(l.filter_chains.iter().map(|c| &c.filter))
}

fn is_http(config: &Config, listener: usize) -> bool {
    filters(config, listener)
        .any(|f| matches!(f, ListenerFilter::Http(_) | ListenerFilter::Auto { .. }))
}

fn is_tcp(config: &Config, listener: usize) -> bool {
    filters(config, listener).any(|f| matches!(f, ListenerFilter::TcpProxy(_)))
}

/// The metrics of each SDS source of the bootstrap's `xds.sds_sources` (label `source`, its
/// name), read from [`crate::xds_sds::SOURCES`] at each scrape.
pub const SDS_SOURCE_METRICS: &[Export<crate::xds_sds::SourceStatus>] = &[
    Export {
        field: "connected",
        metric: Metric::gauge(
            "sluice_sds_source_connected",
            "1 while the SDS stream to the source is open, else 0 (the secrets it gave serve on \
             meanwhile).",
        )
        .stats("connected"),
        len: 1,
        read: |s, _| u64::from(s.connected),
    },
    Export {
        field: "secrets_received",
        metric: Metric::counter(
            "sluice_sds_source_secrets_received_total",
            "Secrets the source's responses carried (each response's secrets, counted once).",
        )
        .stats("secrets_received"),
        len: 1,
        read: |s, _| s.secrets_received,
    },
    Export {
        field: "secrets_applied",
        metric: Metric::counter(
            "sluice_sds_source_secrets_applied_total",
            "Secrets received from the source whose response was accepted (ACKed): serving, \
             or waited for by what needs them.",
        )
        .stats("secrets_applied"),
        len: 1,
        read: |s, _| s.secrets_applied,
    },
    Export {
        field: "secrets_refused",
        metric: Metric::counter(
            "sluice_sds_source_secrets_refused_total",
            "Secrets received from the source whose response was refused (NACKed): the secrets \
             serving stay.",
        )
        .stats("secrets_refused"),
        len: 1,
        read: |s, _| s.secrets_refused,
    },
];

/// The SDS sources as elements of their scope (label `source`, `/stats` prefix
/// `xds.sds_source.NAME.`).
fn source_elements(
    sources: &[(String, crate::xds_sds::SourceStatus)],
) -> Vec<Element<'_, crate::xds_sds::SourceStatus>> {
    sources
        .iter()
        .map(|(name, status)| Element {
            labels: vec![("source", name.clone())],
            prefix: format!("xds.sds_source.{name}."),
            snapshot: status,
            listener: None,
            cluster: None,
        })
        .collect()
}

/// The server-wide metrics the admin's shared state holds, in export order (after the
/// worker-wide [`WORKER_METRICS`]). Declared here, next to what they read; see
/// [`crate::stats`] for the per-worker ones.
pub const SERVER_METRICS: &[Export<AdminShared>] = &[
    Export {
        field: "limits.open",
        metric: Metric::gauge(
            "sluice_downstream_cx_open",
            "Downstream connections open now, all listeners and workers.",
        )
        .stats("server.downstream_cx_open")
        .prometheus_for(Shown::WithLimits)
        .stats_for(Shown::WithLimits),
        len: 1,
        read: |s, _| s.limits.get().map_or(0, |l| l.open()),
    },
    Export {
        field: "limits.max",
        metric: Metric::gauge(
            "sluice_downstream_cx_max",
            "The process-wide downstream connection limit in force.",
        )
        .stats("server.max_connections")
        .prometheus_for(Shown::WithLimits)
        .stats_for(Shown::WithLimits),
        len: 1,
        read: |s, _| s.limits.get().map_or(0, |l| l.max()),
    },
    Export {
        field: "limits.pipes_open",
        metric: Metric::gauge(
            "sluice_tcp_splice_pipes",
            "Splice pipes open now, holding a tcp_proxy session's bytes or empty in a worker's pool, all workers.",
        )
        .stats("server.tcp_splice_pipes")
        .prometheus_for(Shown::WithLimits)
        .stats_for(Shown::WithLimits),
        len: 1,
        read: |s, _| s.limits.get().map_or(0, |l| l.pipes_open() as u64),
    },
    Export {
        field: "limits.pipes_max",
        metric: Metric::gauge(
            "sluice_tcp_splice_pipes_max",
            "The most splice pipes that may be open at once (0: tcp_proxy sessions copy).",
        )
        .stats("server.tcp_splice_pipes_max")
        .prometheus_for(Shown::WithLimits)
        .stats_for(Shown::WithLimits),
        len: 1,
        read: |s, _| s.limits.get().map_or(0, |l| l.pipes_max() as u64),
    },
    Export {
        field: "limits.bolt_held",
        metric: Metric::gauge(
            "sluice_bolt_partial_frame_bytes",
            "Bytes Bolt connections hold in partial frames now.",
        )
        .stats("server.bolt_partial_frame_bytes")
        .prometheus_for(Shown::WithLimits)
        .stats_for(Shown::WithLimits),
        len: 1,
        read: |s, _| s.limits.get().map_or(0, |l| l.bolt_held() as u64),
    },
    Export {
        field: "ready",
        metric: Metric::gauge("sluice_server_live", "1 when /ready answers 200, else 0.")
            .stats("server.live"),
        len: 1,
        read: |s, _| u64::from(s.ready()),
    },
    Export {
        field: "started",
        metric: Metric::gauge(
            "sluice_server_uptime_seconds",
            "Seconds since the server started.",
        )
        .stats("server.uptime_seconds"),
        len: 1,
        read: |s, _| s.uptime().as_secs(),
    },
    Export {
        field: "reloads_ok, reloads_failed",
        metric: Metric::counter(
            "sluice_config_reloads_total",
            "Config reloads (SIGHUP, POST /reload, xDS updates that switch generations) by result.",
        )
        .by("result", |i| ["ok", "failed"][i])
        .stats("server.reloads_"),
        len: 2,
        read: |s, i| [&s.reloads_ok, &s.reloads_failed][i].load(Ordering::Relaxed),
    },
    Export {
        field: "endpoint_updates_in_place",
        metric: Metric::counter(
            "sluice_xds_endpoint_updates_in_place_total",
            "xDS updates applied by changing clusters' hosts in place, without a generation \
             switch (not counted in sluice_config_reloads_total).",
        )
        .stats("xds.endpoint_updates_in_place"),
        len: 1,
        read: |s, _| s.endpoint_updates_in_place.load(Ordering::Relaxed),
    },
    Export {
        field: "xds::CONNECTED",
        metric: Metric::gauge(
            "sluice_xds_connected",
            "1 while the ADS stream to the xDS management server is open, else 0 (always 0 \
             without xds).",
        )
        .stats("xds.connected"),
        len: 1,
        read: |_, _| crate::xds::CONNECTED.load(Ordering::Relaxed),
    },
    Export {
        field: "xds::ACKED",
        metric: Metric::counter(
            "sluice_xds_acked_total",
            "xDS responses ACKed (their config applied, or nothing changed), by resource type.",
        )
        .by("type", |i| crate::xds::TYPE_LABELS[i])
        .stats("xds.acked_"),
        len: crate::xds::TYPES,
        read: |_, i| crate::xds::ACKED[i].load(Ordering::Relaxed),
    },
    Export {
        field: "xds::UPDATED_AT",
        metric: Metric::gauge(
            "sluice_xds_update_timestamp_seconds",
            "When each resource type's last xDS response was ACKed, in Unix seconds (0: none \
             yet); time() minus it is the time since the last update.",
        )
        .by("type", |i| crate::xds::TYPE_LABELS[i])
        .stats("xds.updated_at_"),
        len: crate::xds::TYPES,
        read: |_, i| crate::xds::UPDATED_AT[i].load(Ordering::Relaxed),
    },
    Export {
        field: "xds::NACKED",
        metric: Metric::counter(
            "sluice_xds_nacked_total",
            "xDS responses NACKed (refused: the last good config serves on), by resource type.",
        )
        .by("type", |i| crate::xds::TYPE_LABELS[i])
        .stats("xds.nacked_"),
        len: crate::xds::TYPES,
        read: |_, i| crate::xds::NACKED[i].load(Ordering::Relaxed),
    },
    Export {
        field: "xds::UNSOLICITED",
        metric: Metric::counter(
            "sluice_xds_unsolicited_resources_total",
            "xDS resources (and, delta, removals) of types subscribed to by name (endpoints, \
             routes, secrets) that named nothing subscribed to: dropped on arrival, not applied \
             (a server sending more than asked, or what it sent before it saw an unsubscribe).",
        )
        .by("type", |i| crate::xds::TYPE_LABELS[i])
        .stats("xds.unsolicited_"),
        len: crate::xds::TYPES,
        read: |_, i| crate::xds::UNSOLICITED[i].load(Ordering::Relaxed),
    },
    Export {
        field: "xds::IGNORED",
        metric: Metric::gauge(
            "sluice_xds_ignored_fields",
            "Fields and HTTP filters of the dynamic resources serving that Sluice ignores on \
             purpose (telemetry only, or optional / disabled filters; listed at debug in the \
             xds log), by the type of the resource holding them.",
        )
        .by("type", |i| crate::xds::TYPE_LABELS[i])
        .stats("xds.ignored_fields_"),
        len: crate::xds::TYPES,
        read: |_, i| crate::xds::IGNORED[i].load(Ordering::Relaxed),
    },
    Export {
        field: "xds::WARMING",
        metric: Metric::gauge(
            "sluice_xds_warming_resources",
            "Clusters, listeners and route configurations received over xDS and not yet served \
             at the version received, waiting for what they need (endpoints, route \
             configurations, secrets, the clusters they route to), by resource type; /xds lists \
             them.",
        )
        .by("type", |i| crate::xds::TYPE_LABELS[i])
        .stats("xds.warming_"),
        len: crate::xds::TYPES,
        read: |_, i| crate::xds::WARMING[i].load(Ordering::Relaxed),
    },
    Export {
        field: "xds::WARMING_TIMEOUTS",
        metric: Metric::counter(
            "sluice_xds_warming_timeouts_total",
            "xDS resources (endpoints, route configurations) still not received when their \
             initial_fetch_timeout expired, by resource type: each is taken as received empty, \
             and what waited for it serves without it (a cluster with no endpoints, a listener \
             with no routes).",
        )
        .by("type", |i| crate::xds::TYPE_LABELS[i])
        .stats("xds.warming_timeouts_"),
        len: crate::xds::TYPES,
        read: |_, i| crate::xds::WARMING_TIMEOUTS[i].load(Ordering::Relaxed),
    },
    Export {
        field: "xds::RESYNCS",
        metric: Metric::counter(
            "sluice_xds_resyncs_total",
            "Delta xDS streams restarted after a NACK, so that the server sends again what was \
             refused along with it (one per NACKing stream, after the reconnect backoff).",
        )
        .stats("xds.resyncs"),
        len: 1,
        read: |_, _| crate::xds::RESYNCS.load(Ordering::Relaxed),
    },
    Export {
        field: "tls::ROTATIONS_SUCCEEDED, tls::ROTATIONS_FAILED",
        metric: Metric::counter(
            "sluice_tls_rotations_total",
            "Certificate rotations after the TLS files changed on disk, by result \
             (failed: the new files could not be used; the previous ones serve on).",
        )
        .by("result", |i| ["succeeded", "failed"][i])
        .stats("server.tls_rotations_"),
        len: 2,
        read: |_, i| {
            [
                &crate::tls::ROTATIONS_SUCCEEDED,
                &crate::tls::ROTATIONS_FAILED,
            ][i]
                .load(Ordering::Relaxed)
        },
    },
    Export {
        field: "workers",
        metric: Metric::gauge("sluice_server_workers", "Worker threads.").stats("server.workers"),
        len: 1,
        read: |s, _| s.workers.len() as u64,
    },
];

/// What the process metrics read from `/proc` at scrape time (the admin thread, off the data
/// path); `None` where the kernel did not tell.
#[derive(Clone, Debug, Default)]
pub struct ProcessInfo {
    /// User and system CPU time, seconds.
    pub cpu_seconds: Option<f64>,
    /// Resident set size, bytes (`VmRSS`).
    pub resident_bytes: Option<u64>,
    /// Peak resident set size, bytes (`VmHWM`).
    pub resident_peak_bytes: Option<u64>,
    /// Virtual memory size, bytes (`VmSize`).
    pub virtual_bytes: Option<u64>,
    /// Descriptors open now (entries of `/proc/self/fd`).
    pub open_fds: Option<u64>,
    /// The soft `RLIMIT_NOFILE`.
    pub max_fds: Option<u64>,
    /// Start time, seconds since the Unix epoch.
    pub start_time_seconds: Option<f64>,
    /// Threads (`Threads`).
    pub threads: Option<u64>,
}

impl ProcessInfo {
    /// Reads this process's figures from `/proc`.
    #[must_use]
    pub fn read() -> Self {
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let status_field = |name: &str| {
            status.lines().find_map(|l| {
                let rest = l.strip_prefix(name)?.strip_prefix(':')?;
                let mut words = rest.split_whitespace();
                let n: u64 = words.next()?.parse().ok()?;
                Some(match words.next() {
                    Some("kB") => n * 1024,
                    _ => n,
                })
            })
        };
        let ticks = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
            .ok()
            .flatten()
            .filter(|t| *t > 0)
            .map(|t| t as f64);
        // /proc/self/stat: fields after the command name's closing parenthesis, from field 3.
        let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.split_whitespace().collect())
            .unwrap_or_default();
        let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<u64>().ok());
        let cpu_seconds = match (field(14), field(15), ticks) {
            (Some(u), Some(s), Some(t)) => Some((u + s) as f64 / t),
            _ => None,
        };
        let boot = std::fs::read_to_string("/proc/stat").ok().and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("btime ")?.trim().parse::<u64>().ok())
        });
        let start_time_seconds = match (boot, field(22), ticks) {
            (Some(b), Some(start), Some(t)) => Some(b as f64 + start as f64 / t),
            _ => None,
        };
        ProcessInfo {
            cpu_seconds,
            resident_bytes: status_field("VmRSS"),
            resident_peak_bytes: status_field("VmHWM"),
            virtual_bytes: status_field("VmSize"),
            open_fds: std::fs::read_dir("/proc/self/fd")
                .ok()
                .map(|d| d.count() as u64),
            max_fds: nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
                .ok()
                .map(|(soft, _)| soft),
            start_time_seconds,
            threads: status_field("Threads"),
        }
    }
}

/// A metric of the process as a whole, outside the counter tables: the build, and the usual
/// `process_*` figures of Prometheus client libraries, read from `/proc` per scrape. In
/// `/stats/prometheus` only.
pub struct ProcessMetric {
    /// The Prometheus family name.
    pub name: &'static str,
    /// Counter or gauge.
    pub kind: Kind,
    /// The `# HELP` text.
    pub help: &'static str,
    /// Its labels (name, value), fixed for the build.
    pub labels: fn() -> Vec<(&'static str, &'static str)>,
    /// The value now (no sample when `None`).
    pub read: fn(&ProcessInfo) -> Option<f64>,
}

/// No labels.
fn no_labels() -> Vec<(&'static str, &'static str)> {
    Vec::new()
}

/// `sluice_build_info`'s labels.
fn build_labels() -> Vec<(&'static str, &'static str)> {
    vec![
        ("version", crate::VERSION),
        ("rust_version_min", env!("CARGO_PKG_RUST_VERSION")),
        (
            "profile",
            if cfg!(debug_assertions) {
                "debug"
            } else {
                "release"
            },
        ),
        ("target_arch", std::env::consts::ARCH),
        ("target_os", std::env::consts::OS),
    ]
}

/// The build and process metrics, in export order (after [`SERVER_METRICS`]).
pub const PROCESS_METRICS: &[ProcessMetric] = &[
    ProcessMetric {
        name: "sluice_build_info",
        kind: Kind::Gauge,
        help: "Always 1; the labels say which build runs (version, minimum Rust version, profile, target).",
        labels: build_labels,
        read: |_| Some(1.0),
    },
    ProcessMetric {
        name: "process_cpu_seconds_total",
        kind: Kind::Counter,
        help: "User and system CPU time spent, in seconds (/proc/self/stat).",
        labels: no_labels,
        read: |p| p.cpu_seconds,
    },
    ProcessMetric {
        name: "process_resident_memory_bytes",
        kind: Kind::Gauge,
        help: "Resident memory size in bytes (VmRSS of /proc/self/status).",
        labels: no_labels,
        read: |p| p.resident_bytes.map(|v| v as f64),
    },
    ProcessMetric {
        name: "process_virtual_memory_bytes",
        kind: Kind::Gauge,
        help: "Virtual memory size in bytes (VmSize of /proc/self/status).",
        labels: no_labels,
        read: |p| p.virtual_bytes.map(|v| v as f64),
    },
    ProcessMetric {
        name: "process_open_fds",
        kind: Kind::Gauge,
        help: "Open file descriptors (/proc/self/fd).",
        labels: no_labels,
        read: |p| p.open_fds.map(|v| v as f64),
    },
    ProcessMetric {
        name: "process_max_fds",
        kind: Kind::Gauge,
        help: "The limit of open file descriptors (soft RLIMIT_NOFILE).",
        labels: no_labels,
        read: |p| p.max_fds.map(|v| v as f64),
    },
    ProcessMetric {
        name: "process_start_time_seconds",
        kind: Kind::Gauge,
        help: "Start time of the process since the Unix epoch, in seconds.",
        labels: no_labels,
        read: |p| p.start_time_seconds,
    },
];

/// Writes the TLS certificate expiry gauge ([`crate::tls_certs::EXPIRY_METRIC`]), when a
/// listener or cluster has TLS.
fn tls_expiry_family(out: &mut String, shared: &AdminShared) {
    let config = &shared.config;
    if config.listeners.iter().all(|l| l.tls.is_none())
        && config.clusters.iter().all(|c| !c.originates_tls())
    {
        return;
    }
    let files = crate::tls::certificates(config);
    let (name, help) = crate::tls_certs::EXPIRY_METRIC;
    let mut f = Family::start(out, name, Kind::Gauge.as_str(), help);
    for (scope, owner, file, seconds) in
        crate::tls_certs::expiry_samples(&files, crate::tls_certs::unix_now())
    {
        f.sample(name, &[(scope, owner), ("file", file)], seconds);
    }
}

/// Writes the [`PROCESS_METRICS`] families, reading `/proc` once.
fn process_families(out: &mut String) {
    let info = ProcessInfo::read();
    for m in PROCESS_METRICS {
        let Some(value) = (m.read)(&info) else {
            continue;
        };
        let labels = (m.labels)();
        Family::start(out, m.name, m.kind.as_str(), m.help).sample(m.name, &labels, value);
    }
}

/// Whether a metric shown for `which` elements is exported for this one (a listener or a
/// cluster by index, or the scope as a whole).
fn shown(
    which: Shown,
    shared: &AdminShared,
    listener: Option<usize>,
    cluster: Option<usize>,
) -> bool {
    let config = &shared.config;
    match which {
        Shown::Always => true,
        Shown::Never => false,
        Shown::HttpListeners => listener.is_some_and(|i| is_http(config, i)),
        Shown::TcpListeners => listener.is_some_and(|i| is_tcp(config, i)),
        Shown::TlsListeners => listener.is_some_and(|i| {
            let l = &config.listeners[i];
            l.tls.is_some() || l.filter_chains.iter().any(|c| c.tls.is_some())
        }),
        Shown::ChainListeners => {
            listener.is_some_and(|i| !config.listeners[i].filter_chains.is_empty())
        }
        Shown::WithTls => cluster.is_some_and(|i| config.clusters[i].originates_tls()),
        Shown::SniListeners => listener.is_some_and(|i| {
            filters(config, i)
                .any(|f| matches!(f, ListenerFilter::TcpProxy(tp) if !tp.sni_routes.is_empty()))
        }),
        Shown::CaptureListeners => {
            listener.is_some_and(|i| config.listeners[i].original_dst.is_some())
        }
        Shown::WithHealthCheck => {
            cluster.is_some_and(|i| config.clusters[i].health_check.is_some())
        }
        Shown::WithOutlierDetection => {
            cluster.is_some_and(|i| config.clusters[i].outlier_detection.is_some())
        }
        Shown::WithLimits => shared.limits.get().is_some(),
        Shown::WithDns => cluster.is_some_and(|i| config.clusters[i].kind.is_dns()),
    }
}

/// One element of a metric's scope: its labels, its `/stats` prefix, its snapshot, and the
/// listener or cluster it is (for [`shown`]).
struct Element<'a, S> {
    labels: Vec<(&'static str, String)>,
    prefix: String,
    snapshot: &'a S,
    listener: Option<usize>,
    cluster: Option<usize>,
}

impl<'a, S> Element<'a, S> {
    fn of(snapshot: &'a S) -> Self {
        Element {
            labels: Vec::new(),
            prefix: String::new(),
            snapshot,
            listener: None,
            cluster: None,
        }
    }
}

/// Every listener, cluster and host of the config as elements of their scopes (a slot the
/// snapshot lacks reads as zero).
struct Elements<'a> {
    listeners: Vec<Element<'a, ListenerSnapshot>>,
    clusters: Vec<Element<'a, ClusterSnapshot>>,
    hosts: Vec<Element<'a, HostSnapshot>>,
}

static EMPTY_LISTENER: std::sync::LazyLock<ListenerSnapshot> =
    std::sync::LazyLock::new(ListenerSnapshot::default);
static EMPTY_CLUSTER: std::sync::LazyLock<ClusterSnapshot> =
    std::sync::LazyLock::new(ClusterSnapshot::default);
static EMPTY_HOST: std::sync::LazyLock<HostSnapshot> =
    std::sync::LazyLock::new(HostSnapshot::default);

impl<'a> Elements<'a> {
    fn new(shared: &AdminShared, s: &'a DetailedSnapshot) -> Self {
        let config = &shared.config;
        let listeners = config
            .listeners
            .iter()
            .enumerate()
            .map(|(i, lc)| Element {
                labels: vec![("listener", lc.name.clone())],
                prefix: format!("listener.{}.", lc.name),
                snapshot: s.listeners.get(i).unwrap_or(&EMPTY_LISTENER),
                listener: Some(i),
                cluster: None,
            })
            .collect();
        let clusters = config
            .clusters
            .iter()
            .enumerate()
            .map(|(i, cc)| Element {
                labels: vec![("cluster", cc.name.clone())],
                prefix: format!("cluster.{}.", cc.name),
                snapshot: s.clusters.get(i).unwrap_or(&EMPTY_CLUSTER),
                listener: None,
                cluster: Some(i),
            })
            .collect();
        let hosts = config
            .clusters
            .iter()
            .enumerate()
            .flat_map(|(i, cc)| {
                host_addresses(shared, i)
                    .into_iter()
                    .map(move |(j, address, _, _)| Element {
                        labels: vec![("cluster", cc.name.clone()), ("host", address.to_string())],
                        prefix: format!("cluster.{}.host.{}.", cc.name, address),
                        snapshot: s
                            .clusters
                            .get(i)
                            .and_then(|c| c.hosts.get(j))
                            .unwrap_or(&EMPTY_HOST),
                        listener: None,
                        cluster: Some(i),
                    })
            })
            .collect();
        Elements {
            listeners,
            clusters,
            hosts,
        }
    }
}

/// Puts every `/stats` name of `exports` for `elements` into `put`, with its kind.
fn stats_of<S>(
    shared: &AdminShared,
    exports: &[Export<S>],
    elements: &[Element<'_, S>],
    put: &mut impl FnMut(String, u64, Kind),
) {
    for e in exports {
        for el in elements {
            if !shown(e.metric.stats, shared, el.listener, el.cluster) {
                continue;
            }
            for (by, v) in e.samples(el.snapshot) {
                put(
                    format!("{}{}{by}", el.prefix, e.metric.stats_key),
                    v,
                    e.metric.kind,
                );
            }
        }
    }
}

/// Every stat as `(name, value)`, sorted by name; counters less their value at the last
/// `POST /reset_counters`.
fn flat_stats(shared: &AdminShared, s: &DetailedSnapshot) -> Vec<(String, u64)> {
    let base = shared
        .counter_base
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    flat_stats_kinds(shared, s)
        .into_iter()
        .map(|(name, v, kind)| {
            let v = match (kind, base.get(&name)) {
                (Kind::Counter, Some(b)) => v.saturating_sub(*b),
                _ => v,
            };
            (name, v)
        })
        .collect()
}

/// `POST /reset_counters`: every `/stats` counter's value now becomes its zero there.
fn reset_counters(shared: &AdminShared) -> usize {
    let now: std::collections::HashMap<String, u64> = flat_stats_kinds(shared, &scrape(shared))
        .into_iter()
        .filter(|(_, _, kind)| *kind == Kind::Counter)
        .map(|(name, v, _)| (name, v))
        .collect();
    let n = now.len();
    *shared
        .counter_base
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = now;
    n
}

/// Drops the `/reset_counters` zeroes of stats `shared` does not show (elements a reload removed).
fn forget_reset_of_removed(shared: &AdminShared) {
    let mut base = shared
        .counter_base
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if base.is_empty() {
        return;
    }
    let shown: std::collections::HashSet<String> = flat_stats_kinds(shared, &scrape(shared))
        .into_iter()
        .map(|(name, _, _)| name)
        .collect();
    base.retain(|name, _| shown.contains(name));
}

/// Every stat as `(name, value, kind)`, sorted by name, as the counters read.
fn flat_stats_kinds(shared: &AdminShared, s: &DetailedSnapshot) -> Vec<(String, u64, Kind)> {
    let config = &shared.config;
    let elements = Elements::new(shared, s);
    let mut out: Vec<(String, u64, Kind)> = Vec::new();
    let mut put = |name: String, v: u64, kind: Kind| out.push((name, v, kind));
    stats_of(shared, SERVER_METRICS, &[Element::of(shared)], &mut put);
    stats_of(shared, WORKER_METRICS, &[Element::of(&s.worker)], &mut put);
    stats_of(shared, LISTENER_METRICS, &elements.listeners, &mut put);
    stats_of(shared, CLUSTER_METRICS, &elements.clusters, &mut put);
    stats_of(shared, HOST_METRICS, &elements.hosts, &mut put);
    let sources = crate::xds_sds::sources_snapshot();
    stats_of(
        shared,
        SDS_SOURCE_METRICS,
        &source_elements(&sources),
        &mut put,
    );
    if has_bolt(config) {
        for (e, (_, v)) in BOLT_METRICS.iter().zip(&s.bolt) {
            put(e.metric.stats_key.to_owned(), *v, e.metric.kind);
        }
    }
    let mut histogram_stats = |name: String, h: &HistogramSnapshot| {
        put(format!("{name}.count"), h.count(), Kind::Histogram);
        put(format!("{name}.sum_us"), h.sum_us, Kind::Histogram);
        for (q, label) in [(0.5, "p50"), (0.9, "p90"), (0.99, "p99")] {
            if let Some(b) = h.quantile_bound_us(q) {
                put(format!("{name}.{label}_us_le"), b, Kind::Histogram);
            }
        }
    };
    for h in HISTOGRAM_METRICS {
        histogram_stats(h.stats_key.to_owned(), (h.read)(s));
    }
    for (i, l) in elements.listeners.iter().enumerate() {
        if is_http(config, i) {
            let key = format!("{}{}", l.prefix, LISTENER_HISTOGRAM.2);
            histogram_stats(key, &l.snapshot.downstream_rq_time);
        }
    }
    for c in &elements.clusters {
        let key = format!("{}{}", c.prefix, CLUSTER_HISTOGRAM.2);
        histogram_stats(key, &c.snapshot.upstream_rq_time);
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// The workers' counters summed, as every view shows them: a host of a cluster without a
/// health check is healthy (`healthy` 1, as Envoy reports it and as `/clusters` says), since
/// nothing checks it; the active check's verdict is written only for checked clusters.
#[must_use]
pub fn scrape(shared: &AdminShared) -> DetailedSnapshot {
    let mut s = DetailedSnapshot::sum(&shared.workers);
    for (i, cc) in shared.config.clusters.iter().enumerate() {
        if cc.health_check.is_some() {
            continue;
        }
        if let Some(c) = s.clusters.get_mut(i) {
            if c.hosts.len() < cc.host_slots() {
                c.hosts.resize_with(cc.host_slots(), HostSnapshot::default);
            }
            for h in &mut c.hosts {
                h.healthy = 1;
            }
        }
    }
    s
}

/// Escapes a Prometheus label value.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// One metric family being written.
struct Family<'a> {
    out: &'a mut String,
}

impl<'a> Family<'a> {
    fn start(out: &'a mut String, name: &str, kind: &str, help: &str) -> Self {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        Family { out }
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{k}=\"{}\"", label(v));
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
    }
}

/// Writes the Prometheus families of `exports` for `elements`, in declaration order. A family
/// shown for every element is declared even with none; one shown for some (HTTP listeners…)
/// only when one of them is there.
fn families_of<S>(
    out: &mut String,
    shared: &AdminShared,
    exports: &[Export<S>],
    elements: &[Element<'_, S>],
) {
    for e in exports {
        let m = &e.metric;
        let shown_here: Vec<&Element<'_, S>> = elements
            .iter()
            .filter(|el| shown(m.prometheus, shared, el.listener, el.cluster))
            .collect();
        if m.prometheus == Shown::Never || (shown_here.is_empty() && m.prometheus != Shown::Always)
        {
            continue;
        }
        let mut f = Family::start(out, m.name, m.kind.as_str(), m.help);
        for el in shown_here {
            for (by, v) in e.samples(el.snapshot) {
                let mut labels: Vec<(&str, &str)> =
                    el.labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
                if let Some((key, _)) = m.by {
                    labels.push((key, by));
                }
                f.sample(m.name, &labels, v);
            }
        }
    }
}

/// The Prometheus text exposition (format 0.0.4).
#[must_use]
pub fn prometheus(shared: &AdminShared, s: &DetailedSnapshot) -> String {
    let config = &shared.config;
    let elements = Elements::new(shared, s);
    let mut out = String::with_capacity(8192);
    families_of(&mut out, shared, LISTENER_METRICS, &elements.listeners);
    families_of(&mut out, shared, CLUSTER_METRICS, &elements.clusters);
    families_of(&mut out, shared, HOST_METRICS, &elements.hosts);
    for h in HISTOGRAM_METRICS {
        histogram(&mut out, h.name, h.help, (h.read)(s));
    }
    // By listener (HTTP listeners; the family only when there is one) and by cluster.
    let http_listeners: Vec<_> = elements
        .listeners
        .iter()
        .enumerate()
        .filter(|(i, _)| is_http(config, *i))
        .map(|(_, l)| (l.labels.as_slice(), &l.snapshot.downstream_rq_time))
        .collect();
    if !http_listeners.is_empty() {
        let (name, help, _) = LISTENER_HISTOGRAM;
        histogram_family(&mut out, name, help, &http_listeners);
    }
    let clusters: Vec<_> = elements
        .clusters
        .iter()
        .map(|c| (c.labels.as_slice(), &c.snapshot.upstream_rq_time))
        .collect();
    let (name, help, _) = CLUSTER_HISTOGRAM;
    histogram_family(&mut out, name, help, &clusters);
    if has_bolt(config) {
        for (e, (_, v)) in BOLT_METRICS.iter().zip(&s.bolt) {
            let m = &e.metric;
            Family::start(&mut out, m.name, m.kind.as_str(), m.help).sample(m.name, &[], *v);
        }
    }
    families_of(&mut out, shared, WORKER_METRICS, &[Element::of(&s.worker)]);
    families_of(&mut out, shared, SERVER_METRICS, &[Element::of(shared)]);
    let sources = crate::xds_sds::sources_snapshot();
    families_of(
        &mut out,
        shared,
        SDS_SOURCE_METRICS,
        &source_elements(&sources),
    );
    tls_expiry_family(&mut out, shared);
    process_families(&mut out);
    out
}

fn histogram(out: &mut String, name: &str, help: &str, h: &HistogramSnapshot) {
    histogram_family(out, name, help, &[(&[], h)]);
}

/// A histogram family with one series set per element (told apart by its labels).
fn histogram_family(
    out: &mut String,
    name: &str,
    help: &str,
    series: &[(&[(&'static str, String)], &HistogramSnapshot)],
) {
    let mut f = Family::start(out, name, Kind::Histogram.as_str(), help);
    let bucket = format!("{name}_bucket");
    let (sum, count) = (format!("{name}_sum"), format!("{name}_count"));
    let bounds: Vec<String> = HISTOGRAM_BOUNDS_US
        .iter()
        .map(|b| format!("{}", *b as f64 / 1e6))
        .collect();
    for (labels, h) in series {
        let mut with_le: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let plain = with_le.clone();
        with_le.push(("le", ""));
        let mut cumulative = 0;
        for (i, le) in bounds.iter().enumerate() {
            cumulative += h.buckets[i];
            *with_le.last_mut().expect("le") = ("le", le);
            f.sample(&bucket, &with_le, cumulative);
        }
        *with_le.last_mut().expect("le") = ("le", "+Inf");
        f.sample(&bucket, &with_le, h.count());
        f.sample(&sum, &plain, format!("{}", h.sum_us as f64 / 1e6));
        f.sample(&count, &plain, h.count());
    }
}

/// `docs/metrics.md`: every metric `/metrics` and `/stats` export, from the declarations
/// ([`SERVER_METRICS`] and the tables in [`crate::stats`]). A test keeps the committed file
/// equal to it.
#[must_use]
pub fn metrics_reference() -> String {
    let mut out = String::from(
        "# Metrics reference\n\n\
         <!-- Generated from the metric declarations in runtime/src/stats.rs and\n\
         runtime/src/admin.rs (SERVER_METRICS, PROCESS_METRICS). Do not edit: regenerate with\n\
         SLUICE_BLESS=1 cargo test -p sluice-runtime --lib metrics_reference -->\n\n\
         The admin API exports every metric twice: `GET /stats/prometheus` in the Prometheus text format\n\
         (0.0.4), `GET /stats` as sorted `name: value` lines (`?format=json` for JSON,\n\
         `?filter=REGEX`). Counters are summed over the workers and never go down, across config\n\
         reloads and hot upgrades included; gauges are the value now (a per-worker gauge summed over workers).\n\
         In a `/stats` name, `NAME` is the listener's or cluster's name and `ADDR` the host's\n\
         address. \"Only for\" says which listeners or clusters have the name; a Prometheus\n\
         family shown only for some listeners is left out when there is none.\n",
    );
    fn shown_note(which: Shown) -> &'static str {
        match which {
            Shown::Always => "",
            Shown::HttpListeners => " (only for HTTP and `protocol: auto` listeners)",
            Shown::TcpListeners => " (only for TCP proxy listeners)",
            Shown::SniListeners => " (only for TCP proxy listeners with `sni_routes`)",
            Shown::TlsListeners => " (only for listeners with `tls`)",
            Shown::WithTls => " (only for clusters with `tls`)",
            Shown::CaptureListeners => " (only for listeners with `original_dst`)",
            Shown::ChainListeners => " (only for listeners with `filter_chains`)",
            Shown::WithHealthCheck => " (only with a health_check)",
            Shown::WithOutlierDetection => " (only with outlier_detection)",
            Shown::WithDns => " (only for strict_dns and logical_dns clusters)",
            Shown::WithLimits => " (once the server set its limits)",
            Shown::Never => "",
        }
    }
    fn section<S>(
        out: &mut String,
        title: &str,
        intro: &str,
        labels: &[&str],
        prefix: &str,
        exports: &[Export<S>],
    ) {
        let _ = write!(
            out,
            "\n## {title}\n\n{intro}\n\n| Prometheus | Type | Labels | `/stats` | Meaning |\n|---|---|---|---|---|\n"
        );
        for e in exports {
            let m = &e.metric;
            let prometheus = if m.prometheus == Shown::Never {
                "—".to_owned()
            } else {
                format!("`{}`{}", m.name, shown_note(m.prometheus))
            };
            let mut all_labels: Vec<String> = labels.iter().map(|l| format!("`{l}`")).collect();
            if let Some((key, value)) = m.by {
                let values: Vec<&str> = (0..e.len).map(value).collect();
                all_labels.push(format!("`{key}` ({})", values.join(", ")));
            }
            let labels = if m.prometheus == Shown::Never || all_labels.is_empty() {
                "—".to_owned()
            } else {
                all_labels.join(", ")
            };
            let stats = if m.stats == Shown::Never {
                "—".to_owned()
            } else if let Some((_, value)) = m.by {
                let names: Vec<String> = (0..e.len)
                    .map(|i| format!("`{prefix}{}{}`", m.stats_key, value(i)))
                    .collect();
                format!("{}{}", names.join(", "), shown_note(m.stats))
            } else {
                format!("`{prefix}{}`{}", m.stats_key, shown_note(m.stats))
            };
            let _ = writeln!(
                out,
                "| {prometheus} | {} | {labels} | {stats} | {} |",
                m.kind.as_str(),
                m.help
            );
        }
    }
    section(
        &mut out,
        "Server",
        "The process as a whole.",
        &[],
        "",
        SERVER_METRICS,
    );
    let _ = write!(
        out,
        "\n## Build and process\n\n\
         Prometheus only, read from `/proc` at each scrape (the admin thread, never the data path);\n\
         the `process_*` names are those of the Prometheus client libraries. A figure the kernel does\n\
         not give has no sample.\n\n\
         | Prometheus | Type | Labels | `/stats` | Meaning |\n|---|---|---|---|---|\n"
    );
    for m in PROCESS_METRICS {
        let labels: Vec<String> = (m.labels)().iter().map(|(k, _)| format!("`{k}`")).collect();
        let labels = if labels.is_empty() {
            "—".to_owned()
        } else {
            labels.join(", ")
        };
        let _ = writeln!(
            out,
            "| `{}` | {} | {labels} | — | {} |",
            m.name,
            m.kind.as_str(),
            m.help
        );
    }
    section(
        &mut out,
        "Worker totals",
        "Summed over all listeners of all workers.",
        &[],
        "",
        WORKER_METRICS,
    );
    section(
        &mut out,
        "Per listener",
        "One series per listener of the config.",
        &["listener"],
        "listener.NAME.",
        LISTENER_METRICS,
    );
    section(
        &mut out,
        "Per cluster",
        "One series per cluster of the config.",
        &["cluster"],
        "cluster.NAME.",
        CLUSTER_METRICS,
    );
    section(
        &mut out,
        "Per upstream host",
        "One series per host of each cluster.",
        &["cluster", "host"],
        "cluster.NAME.host.ADDR.",
        HOST_METRICS,
    );
    section(
        &mut out,
        "Per SDS source",
        "One series per SDS source of the bootstrap's `xds.sds_sources` (none without); the \
         families are declared even then.",
        &["source"],
        "xds.sds_source.NAME.",
        SDS_SOURCE_METRICS,
    );
    section(
        &mut out,
        "Bolt",
        "Only when a listener speaks Bolt (`bolt`, or `protocol: auto`).",
        &[],
        "",
        BOLT_METRICS,
    );
    let _ = write!(
        out,
        "\n## Request-time histograms\n\n\
         HTTP only. Prometheus gets cumulative `_bucket{{le=\"…\"}}` series (upper bounds in\n\
         seconds: {}, `+Inf`), `_sum` (seconds) and `_count`; `/stats` gets `.count`, `.sum_us`\n\
         (microseconds) and the upper bound of the bucket holding the 50th, 90th and 99th\n\
         percentile (`.p50_us_le`, `.p90_us_le`, `.p99_us_le`, in microseconds, absent while\n\
         empty or in the `+Inf` bucket).\n\n\
         | Prometheus | Type | `/stats` | Meaning |\n|---|---|---|---|\n",
        HISTOGRAM_BOUNDS_US
            .iter()
            .map(|b| format!("{}", *b as f64 / 1e6))
            .collect::<Vec<_>>()
            .join(", ")
    );
    for h in HISTOGRAM_METRICS {
        let _ = writeln!(
            out,
            "| `{}` | histogram | `{}.*` | {} |",
            h.name, h.stats_key, h.help
        );
    }
    let (name, help, key) = LISTENER_HISTOGRAM;
    let _ = writeln!(
        out,
        "| `{name}` (`listener`) | histogram | `listener.NAME.{key}.*` | {help} Only for HTTP and `protocol: auto` listeners. |"
    );
    let (name, help, key) = CLUSTER_HISTOGRAM;
    let _ = writeln!(
        out,
        "| `{name}` (`cluster`) | histogram | `cluster.NAME.{key}.*` | {help} |"
    );
    let _ = writeln!(
        out,
        "\nThe unlabelled `sluice_downstream_request_duration_seconds` and\n\
         `sluice_upstream_request_duration_seconds` (`http.downstream_rq_time.*`,\n\
         `http.upstream_rq_time.*`) are the sums over listeners and clusters; they stay for existing\n\
         dashboards."
    );
    let (name, help) = crate::tls_certs::EXPIRY_METRIC;
    let _ = write!(
        out,
        "\n## TLS certificates\n\n\
         Prometheus only, when a listener or cluster has `tls`: one series per certificate chain\n\
         or CA file, as the TLS contexts in use were built from it (startup, reload, rotation);\n\
         the seconds are counted at each scrape. `GET /certs` lists every certificate.\n\n\
         | Prometheus | Type | Labels | `/stats` | Meaning |\n|---|---|---|---|---|\n\
         | `{name}` | gauge | `listener` or `cluster`, `file` | — | {help} |\n"
    );
    out
}

/// A DNS cluster's latest view, as worker 0 (which resolves for the process) applied it.
fn dns_view(shared: &AdminShared, ci: usize) -> Option<Arc<crate::dns::DnsView>> {
    shared
        .workers
        .first()?
        .cluster(ci)?
        .dns
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone()
}

/// Cluster `ci`'s hosts as `(id, address, weight)`: the configured ones, or a DNS cluster's
/// resolved ones, or a static cluster's once its endpoints were updated in place (its filled
/// slots, by id, as a worker applied them).
fn host_addresses(
    shared: &AdminShared,
    ci: usize,
) -> Vec<(usize, SocketAddr, u32, sluice_core::host::DeclaredHealth)> {
    let cc = &shared.config.clusters[ci];
    if cc.dns.is_none() && (cc.kind != ClusterKind::Static || dns_view(shared, ci).is_none()) {
        return cc
            .hosts
            .iter()
            .enumerate()
            .map(|(j, h)| (j, h.address, h.weight, h.health))
            .collect();
    }
    dns_view(shared, ci)
        .map(|v| {
            v.slots
                .iter()
                .enumerate()
                .filter_map(|(j, s)| s.map(|h| (j, h.address, h.weight, h.health)))
                .collect()
        })
        .unwrap_or_default()
}

/// The cluster view as JSON: every cluster and host, with the load summed over workers.
fn clusters_json(shared: &AdminShared, s: &DetailedSnapshot) -> Value {
    let clusters: Vec<Value> = shared
        .config
        .clusters
        .iter()
        .enumerate()
        .map(|(i, cc)| {
            let hosts: Vec<Value> = host_addresses(shared, i)
                .into_iter()
                .map(|(j, address, weight, declared)| {
                    let h = s
                        .clusters
                        .get(i)
                        .and_then(|c| c.hosts.get(j))
                        .cloned()
                        .unwrap_or_default();
                    // Health: the active check's verdict (`unhealthy` also while no probe has
                    // passed yet; `healthy` without a check, see [`scrape`]); outlier: how many
                    // workers eject the host now; eds_health: what its source declares (EDS
                    // `health_status`), Envoy's `FAILED_EDS_HEALTH` when unusable — independent
                    // of the check, and either one's no makes the host unavailable.
                    let healthy = h.healthy > 0;
                    json!({
                        "address": address.to_string(),
                        "weight": weight,
                        "health": if healthy { "healthy" } else { "unhealthy" },
                        "eds_health": declared.as_str(),
                        "available": healthy && h.ejected == 0 && declared.is_usable(),
                        "outlier": if h.ejected > 0 { "ejected" } else { "none" },
                        "ejected_by_workers": h.ejected,
                        "rq_active": h.rq_active,
                        "cx_active": h.cx_active,
                        "rq_total": h.rq_total,
                        "cx_total": h.cx_total,
                        "cx_connect_fail": h.cx_connect_fail,
                        "http1_cx_idle": h.http1_cx_idle,
                        "http2_cx_active": h.http2_cx_active,
                        "http2_streams_active": h.http2_streams_active,
                    })
                })
                .collect();
            // The cluster's upstream pools, summed over hosts and workers (an original_dst
            // cluster's destinations, which have no host entry, included).
            let c = s.clusters.get(i).unwrap_or(&EMPTY_CLUSTER);
            let pool = json!({
                "http1_cx_idle": c.upstream_cx_http1_idle,
                "http2_cx_active": c.upstream_cx_http2_active,
                "http2_streams_active": c.upstream_rq_http2_streams_active,
            });
            let mut m = Map::new();
            m.insert("name".into(), cc.name.clone().into());
            m.insert(
                "lb_policy".into(),
                serde_json::to_value(cc.lb_policy).unwrap_or(Value::Null),
            );
            m.insert("pool".into(), pool);
            m.insert("hosts".into(), Value::Array(hosts));
            if let Some(dns) = &cc.dns {
                // The names and their last answers (`hosts` above is what they resolved to).
                let view = dns_view(shared, i);
                let names: Vec<Value> = dns
                    .names
                    .iter()
                    .enumerate()
                    .map(|(n, name)| {
                        let answer = view.as_ref().and_then(|v| v.answers.get(n));
                        json!({
                            "name": name.name,
                            "port": name.port,
                            "addresses": answer
                                .map(|a| a.iter().map(ToString::to_string).collect::<Vec<_>>())
                                .unwrap_or_default(),
                            "failing": view.as_ref().and_then(|v| v.failing.get(n)).copied().unwrap_or(0),
                        })
                    })
                    .collect();
                m.insert("type".into(), cc.kind.as_str().into());
                m.insert("dns".into(), Value::Array(names));
            }
            Value::Object(m)
        })
        .collect();
    json!({ "clusters": clusters })
}

/// What a listener does, as `/listeners` names it.
fn listener_kind(filter: &ListenerFilter) -> &'static str {
    match filter {
        ListenerFilter::TcpProxy(_) => "tcp_proxy",
        ListenerFilter::Echo => "echo",
        ListenerFilter::Http(_) => "http",
        ListenerFilter::Bolt(_) => "bolt",
        ListenerFilter::Auto { .. } => "auto",
        ListenerFilter::Close => "filter_chains",
    }
}

/// `/listeners` as JSON: every listener of the config with its open connections (summed over
/// workers).
fn listeners_json(shared: &AdminShared, s: &DetailedSnapshot) -> Value {
    let listeners: Vec<Value> = shared
        .config
        .listeners
        .iter()
        .enumerate()
        .map(|(i, l)| {
            let mut view = json!({
                "name": l.name,
                "address": l.address.to_string(),
                "kind": listener_kind(&l.filter),
                "open_connections": s.listeners.get(i).map_or(0, ListenerSnapshot::downstream_cx_active),
            });
            // A virtual listener (`bind_to_port: false`) says so: nothing listens on its address.
            if !l.bind_to_port {
                view["virtual"] = Value::Bool(true);
            }
            view
        })
        .collect();
    json!({ "listeners": listeners })
}

/// `/memory` as JSON (bytes; `null` where the kernel did not tell).
fn memory_json(p: &ProcessInfo) -> Value {
    json!({
        "resident_bytes": p.resident_bytes,
        "resident_peak_bytes": p.resident_peak_bytes,
        "virtual_bytes": p.virtual_bytes,
        "threads": p.threads,
        "source": "/proc/self/status (VmRSS, VmHWM, VmSize, Threads)",
    })
}

/// Envoy-style `cluster::host::field::value` lines.
fn clusters_text(view: &Value) -> String {
    let mut out = String::new();
    for c in view["clusters"].as_array().into_iter().flatten() {
        let name = c["name"].as_str().unwrap_or("");
        let _ = writeln!(
            out,
            "{name}::lb_policy::{}",
            c["lb_policy"].as_str().unwrap_or("")
        );
        for field in ["http1_cx_idle", "http2_cx_active", "http2_streams_active"] {
            let _ = writeln!(out, "{name}::pool::{field}::{}", c["pool"][field]);
        }
        // A DNS cluster: each name, what it resolved to last, and its failures in a row.
        for d in c["dns"].as_array().into_iter().flatten() {
            let addresses: Vec<&str> = d["addresses"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            let _ = writeln!(
                out,
                "{name}::dns::{}:{}::addresses::{}",
                d["name"].as_str().unwrap_or(""),
                d["port"],
                addresses.join(",")
            );
            let _ = writeln!(
                out,
                "{name}::dns::{}:{}::failing::{}",
                d["name"].as_str().unwrap_or(""),
                d["port"],
                d["failing"]
            );
        }
        for h in c["hosts"].as_array().into_iter().flatten() {
            let addr = h["address"].as_str().unwrap_or("");
            for field in [
                "weight",
                "health",
                "eds_health",
                "available",
                "outlier",
                "rq_active",
                "cx_active",
                "rq_total",
                "cx_total",
                "cx_connect_fail",
                "http1_cx_idle",
                "http2_cx_active",
                "http2_streams_active",
            ] {
                let v = match &h[field] {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                let _ = writeln!(out, "{name}::{addr}::{field}::{v}");
            }
        }
    }
    out
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// How often the index page re-reads its tables, in milliseconds.
const PAGE_REFRESH_MS: u32 = 2000;

/// Endpoints whose button asks before posting: they stop the process or its listeners, and a
/// stray click on a page left open must not do that.
const CONFIRMED_ENDPOINTS: &[(&str, &str)] = &[
    (
        "/quitquitquit",
        "Stop this Sluice process? It drains open connections and exits.",
    ),
    (
        "/drain_listeners",
        "Close every listener of this Sluice process? New connections are refused until it restarts.",
    ),
];

/// The index page's script. Every [`PAGE_REFRESH_MS`] (while "refresh" is ticked) it reads
/// `/server_info`, `/listeners?format=json` and `/clusters?format=json` and rebuilds the tables
/// from them. Cells are filled with `textContent`, never parsed as markup, so a name in the
/// config cannot inject into the page. `body[data-refreshes]` counts the refreshes that
/// succeeded (the browser test waits on it); a failed one says so in `#refresh-status`.
const PAGE_SCRIPT: &str = r##"<script>
(function () {
  var box = document.getElementById("auto-refresh");
  var status = document.getElementById("refresh-status");
  var refreshes = 0;
  function row(cells) {
    var tr = document.createElement("tr");
    cells.forEach(function (c) {
      var td = document.createElement("td");
      td.textContent = String(c[0]);
      if (c[1]) td.className = c[1];
      tr.appendChild(td);
    });
    return tr;
  }
  function fill(id, rows) {
    var body = document.querySelector("#" + id + " tbody");
    while (body.firstChild) body.removeChild(body.firstChild);
    rows.forEach(function (r) { body.appendChild(r); });
  }
  function get(path) {
    return fetch(path, { cache: "no-store" }).then(function (r) {
      if (!r.ok) throw new Error(path + " answered " + r.status);
      return r.json();
    });
  }
  function refresh() {
    if (!box.checked) return;
    Promise.all([get("/server_info"), get("/listeners?format=json"), get("/clusters?format=json")])
      .then(function (v) {
        document.getElementById("state").textContent = v[0].state;
        document.getElementById("uptime").textContent = v[0].uptime_seconds;
        fill("listeners", v[1].listeners.map(function (l) {
          return row([[l.name], [l.address], [l.kind], [l.open_connections]]);
        }));
        var hosts = [];
        v[2].clusters.forEach(function (c) {
          c.hosts.forEach(function (h) {
            hosts.push(row([[c.name], [h.address], [h.weight], [h.health, h.health],
              [h.outlier, h.outlier === "none" ? "" : "unhealthy"],
              [h.available ? "yes" : "no", h.available ? "healthy" : "unhealthy"],
              [h.rq_active], [h.cx_active], [h.rq_total],
              [h.http1_cx_idle], [h.http2_cx_active], [h.http2_streams_active]]));
          });
        });
        fill("clusters", hosts);
        refreshes += 1;
        document.body.dataset.refreshes = refreshes;
        status.className = "";
        status.textContent = "refreshed at " + new Date().toLocaleTimeString();
      })
      .catch(function (e) {
        status.className = "unhealthy";
        status.textContent = "admin API unreachable: " + e.message;
      });
  }
  setInterval(refresh, PAGE_REFRESH_MS);
})();
</script>
"##;

/// The index page: every endpoint (the ones that stop something ask first), the listener
/// table and the cluster table with each host's health, outlier state, availability, requests
/// and upstream pool (idle HTTP/1.1 connections, HTTP/2 connections and streams: `/clusters`'
/// per-host fields). It is complete as served (no script needed to read it) and refreshes its
/// tables itself.
fn index_html(shared: &AdminShared) -> String {
    let snapshot = scrape(shared);
    let view = clusters_json(shared, &snapshot);
    let listeners = listeners_json(shared, &snapshot);
    let mut out = String::with_capacity(8192);
    out.push_str(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>Sluice admin</title>\n\
         <style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}\
         td,th{border:1px solid #ccc;padding:.3em .6em;text-align:left}\
         .healthy{color:#070}.unhealthy{color:#b00}form{display:inline}</style></head><body>\n",
    );
    let _ = writeln!(
        out,
        "<h1>Sluice {}</h1>\n<p>state: <b id=\"state\">{}</b>, workers: {}, uptime: \
         <span id=\"uptime\">{}</span> s \u{b7} <label><input type=\"checkbox\" \
         id=\"auto-refresh\" checked> refresh every {} s</label> <span id=\"refresh-status\"></span></p>",
        html_escape(crate::VERSION),
        shared.state().as_str(),
        shared.workers.len(),
        shared.uptime().as_secs(),
        PAGE_REFRESH_MS / 1000,
    );
    out.push_str("<h2>Endpoints</h2>\n<ul id=\"endpoints\">\n");
    for (path, verb, what) in ENDPOINTS {
        match verb {
            Verb::Get => {
                let _ = writeln!(
                    out,
                    "<li><a href=\"{p}\">{p}</a>: {w}</li>",
                    p = html_escape(path),
                    w = html_escape(what)
                );
            }
            Verb::Post => {
                // `/logging` needs its level: the form posts it as a field (read as `?level=`).
                let fields = if *path == "/logging" {
                    "<select name=\"level\">\
                     <option>trace</option><option>debug</option><option selected>info</option>\
                     <option>warn</option><option>error</option><option>off</option></select> "
                } else {
                    ""
                };
                // The question is a constant without quotes or markup; escaped all the same.
                let confirm = CONFIRMED_ENDPOINTS
                    .iter()
                    .find(|(p, _)| p == path)
                    .map(|(_, question)| {
                        format!(
                            " onsubmit=\"return confirm('{}')\"",
                            html_escape(question).replace('\'', "\\'")
                        )
                    })
                    .unwrap_or_default();
                let _ = writeln!(
                    out,
                    "<li><form method=\"post\" action=\"{p}\"{confirm}>{fields}<button>{p}</button></form> (POST): {w}</li>",
                    p = html_escape(path),
                    w = html_escape(what)
                );
            }
        }
    }
    out.push_str(
        "</ul>\n<h2>Listeners</h2>\n<table id=\"listeners\">\n<thead><tr><th>listener</th>\
         <th>address</th><th>kind</th><th>open connections</th></tr></thead>\n<tbody>\n",
    );
    for l in listeners["listeners"].as_array().into_iter().flatten() {
        let _ = writeln!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            html_escape(l["name"].as_str().unwrap_or("")),
            html_escape(l["address"].as_str().unwrap_or("")),
            html_escape(l["kind"].as_str().unwrap_or("")),
            l["open_connections"],
        );
    }
    out.push_str("</tbody></table>\n<h2>Clusters</h2>\n<table id=\"clusters\">\n");
    out.push_str(
        "<thead><tr><th>cluster</th><th>host</th><th>weight</th><th>health</th><th>outlier</th>\
         <th>available</th><th>active requests</th><th>active connections</th><th>requests</th>\
         <th>idle HTTP/1.1 connections</th><th>HTTP/2 connections</th><th>HTTP/2 streams</th>\
         </tr></thead>\n<tbody>\n",
    );
    for c in view["clusters"].as_array().into_iter().flatten() {
        let name = c["name"].as_str().unwrap_or("");
        for h in c["hosts"].as_array().into_iter().flatten() {
            let health = h["health"].as_str().unwrap_or("");
            let outlier = h["outlier"].as_str().unwrap_or("");
            let outlier_class = if outlier == "none" { "" } else { "unhealthy" };
            let (available, available_class) = if h["available"].as_bool() == Some(true) {
                ("yes", "healthy")
            } else {
                ("no", "unhealthy")
            };
            let _ = writeln!(
                out,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td class=\"{health}\">{health}</td>\
                 <td class=\"{outlier_class}\">{outlier}</td>\
                 <td class=\"{available_class}\">{available}</td>\
                 <td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                html_escape(name),
                html_escape(h["address"].as_str().unwrap_or("")),
                h["weight"],
                h["rq_active"],
                h["cx_active"],
                h["rq_total"],
                h["http1_cx_idle"],
                h["http2_cx_active"],
                h["http2_streams_active"],
            );
        }
    }
    out.push_str("</tbody></table>\n");
    out.push_str(&PAGE_SCRIPT.replace("PAGE_REFRESH_MS", &PAGE_REFRESH_MS.to_string()));
    out.push_str("</body></html>\n");
    out
}

/// Whether a listener speaks Bolt (alone or with `protocol: auto`).
fn has_bolt(config: &sluice_core::config::Config) -> bool {
    config.listeners.iter().any(|l| {
        matches!(
            l.filter,
            sluice_core::config::ListenerFilter::Bolt(_)
                | sluice_core::config::ListenerFilter::Auto { .. }
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shared() -> AdminShared {
        let config = Config::from_yaml(
            "admin: { address: 127.0.0.1:9901 }\n\
             listeners: [ { name: web, address: 127.0.0.1:1, tcp_proxy: { cluster: app } } ]\n\
             clusters: [ { name: app, hosts: [ { address: 127.0.0.1:2, weight: 3 } ] } ]",
        )
        .unwrap();
        let stats = vec![Arc::new(WorkerStats::new(&config))];
        AdminShared::new(Arc::new(config), stats, None)
    }

    #[test]
    fn mutations_require_post() {
        let s = shared();
        for path in [
            "/healthcheck/fail",
            "/healthcheck/ok",
            "/drain_listeners",
            "/quitquitquit",
            "/logging?level=debug",
            "/reset_counters",
        ] {
            let (r, after) = handle(&s, "GET", path);
            assert_eq!(r.status, 405, "{path}");
            assert_eq!(r.allow, Some("POST"));
            assert_eq!(after, After::Nothing);
        }
        assert_eq!(s.state(), ServerState::PreInitializing);
        assert_eq!(handle(&s, "POST", "/ready").0.status, 405);
        assert_eq!(handle(&s, "GET", "/nope").0.status, 404);
    }

    #[test]
    fn ready_follows_state_and_healthcheck() {
        let s = shared();
        assert_eq!(handle(&s, "GET", "/ready").0.status, 503);
        s.set_state(ServerState::Live);
        assert_eq!(handle(&s, "GET", "/ready").0.status, 200);
        assert_eq!(handle(&s, "POST", "/healthcheck/fail").0.status, 200);
        assert_eq!(handle(&s, "GET", "/ready").0.status, 503);
        handle(&s, "POST", "/healthcheck/ok");
        assert_eq!(handle(&s, "GET", "/ready").0.body, b"LIVE\n");
        let (_, after) = handle(&s, "POST", "/quitquitquit");
        assert_eq!(after, After::Quit);
        s.set_state(ServerState::Draining);
        s.set_state(ServerState::Live);
        assert_eq!(s.state(), ServerState::Draining, "draining is final");
    }

    #[test]
    fn stats_filter_and_prometheus_names() {
        let s = shared();
        let (r, _) = handle(&s, "GET", "/stats?filter=%5Ecluster%5C.app%5C.upstream_rq_");
        let text = String::from_utf8(r.body).unwrap();
        assert_eq!(
            text,
            "cluster.app.upstream_rq_1xx: 0\ncluster.app.upstream_rq_2xx: 0\n\
             cluster.app.upstream_rq_3xx: 0\ncluster.app.upstream_rq_4xx: 0\n\
             cluster.app.upstream_rq_5xx: 0\n\
             cluster.app.upstream_rq_overflow: 0\ncluster.app.upstream_rq_pending_overflow: 0\n\
             cluster.app.upstream_rq_retry: 0\ncluster.app.upstream_rq_retry_overflow: 0\n\
             cluster.app.upstream_rq_time.count: 0\ncluster.app.upstream_rq_time.sum_us: 0\n\
             cluster.app.upstream_rq_timeout: 0\ncluster.app.upstream_rq_too_many_interim: 0\n\
             cluster.app.upstream_rq_total: 0\n"
        );
        assert_eq!(handle(&s, "GET", "/stats?filter=(").0.status, 400);
        let p = prometheus(&s, &scrape(&s));
        assert!(p.contains("# TYPE sluice_downstream_cx_total counter\n"));
        assert!(p.contains("sluice_downstream_cx_total{listener=\"web\"} 0\n"));
        assert!(p.contains(
            "sluice_tcp_sessions_closed_total{listener=\"web\",reason=\"completed\"} 0\n"
        ));
        assert!(
            p.contains("sluice_upstream_host_cx_active{cluster=\"app\",host=\"127.0.0.1:2\"} 0\n")
        );
        assert!(p.contains("sluice_upstream_request_duration_seconds_bucket{le=\"0.0005\"} 0\n"));
        assert!(p.contains("sluice_upstream_request_duration_seconds_bucket{le=\"+Inf\"} 0\n"));
        assert!(
            !p.contains("sluice_http_requests_total"),
            "no http listener"
        );
    }

    /// `/certs` lists each TLS file of a listener with its certificates, and the expiry gauge
    /// has a series per file (a listener with `tls` in the config, its files written here).
    #[test]
    fn certs_and_the_expiry_gauge_describe_each_tls_file() {
        let dir = std::env::temp_dir().join(format!("sluice-admin-certs-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["svc.example".to_owned()]).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "svc");
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(2100, 1, 1);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let (chain, key_file) = (dir.join("svc.pem"), dir.join("svc.key"));
        std::fs::write(&chain, cert.pem()).unwrap();
        std::fs::write(&key_file, key.serialize_pem()).unwrap();
        let config = Config::from_yaml(&format!(
            "listeners:\n  - name: tls_in\n    address: 127.0.0.1:1\n    tcp_proxy: {{ cluster: app }}\n    \
             tls: {{ certificates: [ {{ cert_chain: {}, private_key: {} }} ] }}\n\
             clusters: [ {{ name: app, hosts: [ {{ address: 127.0.0.1:2 }} ] }} ]\n",
            chain.display(),
            key_file.display()
        ))
        .unwrap();
        let stats = vec![Arc::new(WorkerStats::new(&config))];
        let s = AdminShared::new(Arc::new(config), stats, None);
        let (r, _) = handle(&s, "GET", "/certs");
        assert_eq!(r.status, 200);
        assert_eq!(r.content_type, "application/json");
        let v: Value = serde_json::from_slice(&r.body).unwrap();
        let file = &v["certificates"][0];
        assert_eq!(file["listener"], "tls_in");
        assert_eq!(file["field"], "listeners[0].tls.certificates[0].cert_chain");
        assert_eq!(file["file"], chain.display().to_string());
        let c = &file["certificates"][0];
        assert_eq!(c["subject"], "CN=svc");
        assert_eq!(c["dns_sans"], json!(["svc.example"]));
        assert_eq!(c["not_before"], "2020-01-01T00:00:00Z");
        assert_eq!(c["not_after"], "2100-01-01T00:00:00Z");
        let left = c["seconds_until_expiry"].as_i64().unwrap();
        assert!(left > 0 && left <= 4_102_444_800 - 1_577_836_800, "{left}");
        let p = prometheus(&s, &scrape(&s));
        let series = format!(
            "sluice_tls_certificate_expiry_seconds{{listener=\"tls_in\",file=\"{}\"}} ",
            chain.display()
        );
        assert!(p.contains(&series), "{p}");
        let (r, _) = handle(&s, "GET", "/help");
        assert!(
            String::from_utf8(r.body)
                .unwrap()
                .contains("GET /certs: TLS certificates")
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Checks the exposition format: every sample belongs to a family declared by `# TYPE`
    /// (histogram samples by their `_bucket`, `_sum`, `_count` suffix), names are valid, no
    /// series repeats, and every value is a number.
    #[test]
    fn prometheus_output_is_well_formed() {
        let s = shared();
        let mut config = (*s.config).clone();
        config.listeners.push(sluice_core::config::ListenerConfig {
            name: "echo".into(),
            address: "127.0.0.1:5".parse().unwrap(),
            filter: ListenerFilter::Echo,
            max_connections: None,
            tls: None,
            original_dst: None,
            use_original_dst: false,
            bind_to_port: true,
            filter_chains: Vec::new(),
            listener_filters_timeout: sluice_core::config::DEFAULT_LISTENER_FILTERS_TIMEOUT,
            continue_on_listener_filters_timeout: false,
            tls_inspector: Default::default(),
            http_inspector: Default::default(),
        });
        let stats = vec![
            Arc::new(WorkerStats::new(&config)),
            Arc::new(WorkerStats::new(&config)),
        ];
        stats[1].upstream_rq_time.record(Duration::from_millis(7));
        let s = AdminShared::new(Arc::new(config), stats, None);
        let text = prometheus(&s, &scrape(&s));
        let valid_name = |n: &str| {
            !n.is_empty()
                && !n.starts_with(|c: char| c.is_ascii_digit())
                && n.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
        };
        let mut families: Vec<(String, String)> = Vec::new();
        let mut series = std::collections::BTreeSet::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').unwrap();
                assert!(valid_name(name), "{line}");
                assert!(["counter", "gauge", "histogram"].contains(&kind), "{line}");
                assert!(!families.iter().any(|(n, _)| n == name), "repeated {name}");
                families.push((name.to_owned(), kind.to_owned()));
                continue;
            }
            if line.starts_with("# HELP ") {
                continue;
            }
            let (id, value) = line.rsplit_once(' ').unwrap();
            assert!(value.parse::<f64>().is_ok(), "{line}");
            let name = id.split('{').next().unwrap();
            assert!(valid_name(name), "{line}");
            let (family, kind) = families.last().expect("a sample before any # TYPE");
            let ok = match kind.as_str() {
                "histogram" => ["_bucket", "_sum", "_count"]
                    .iter()
                    .any(|suffix| name == format!("{family}{suffix}")),
                "counter" => name == family && name.ends_with("_total"),
                _ => name == family,
            };
            assert!(ok, "{line} under {family} ({kind})");
            assert!(series.insert(id.to_owned()), "repeated series {id}");
        }
        assert!(text.contains("sluice_upstream_request_duration_seconds_bucket{le=\"0.005\"} 0\n"));
        assert!(text.contains("sluice_upstream_request_duration_seconds_bucket{le=\"0.01\"} 1\n"));
        assert!(text.contains("sluice_upstream_request_duration_seconds_sum 0.007\n"));
        assert!(text.contains("sluice_downstream_cx_total{listener=\"echo\"} 0\n"));
    }

    /// A host nobody checks is healthy in every view (the gauge, `/stats`, `/clusters`); a
    /// checked host is unhealthy until a probe passes.
    #[test]
    fn unchecked_hosts_are_healthy_in_the_gauge_too() {
        let config = Config::from_yaml(
            "listeners: [ { name: web, address: 127.0.0.1:1, tcp_proxy: { cluster: app } } ]\n\
             clusters:\n\
             - { name: app, hosts: [ { address: 127.0.0.1:2 } ] }\n\
             - { name: checked, hosts: [ { address: 127.0.0.1:3 } ], health_check: { tcp: {} } }",
        )
        .unwrap();
        let stats = vec![
            Arc::new(WorkerStats::new(&config)),
            Arc::new(WorkerStats::new(&config)),
        ];
        let s = AdminShared::new(Arc::new(config), stats, None);
        let p = prometheus(&s, &scrape(&s));
        assert!(
            p.contains("sluice_upstream_host_healthy{cluster=\"app\",host=\"127.0.0.1:2\"} 1\n"),
            "{p}"
        );
        assert!(
            p.contains(
                "sluice_upstream_host_healthy{cluster=\"checked\",host=\"127.0.0.1:3\"} 0\n"
            ),
            "{p}"
        );
        let stats = String::from_utf8(handle(&s, "GET", "/stats?filter=healthy").0.body).unwrap();
        assert!(
            stats.contains("cluster.app.host.127.0.0.1:2.healthy: 1\n"),
            "{stats}"
        );
        assert!(
            stats.contains("cluster.checked.host.127.0.0.1:3.healthy: 0\n"),
            "{stats}"
        );
        let view = clusters_json(&s, &scrape(&s));
        assert_eq!(view["clusters"][0]["hosts"][0]["health"], "healthy");
        assert_eq!(view["clusters"][1]["hosts"][0]["health"], "unhealthy");
    }

    /// The build and the usual `process_*` figures are in the exposition, with real values.
    #[test]
    fn build_info_and_process_metrics() {
        let s = shared();
        let p = prometheus(&s, &scrape(&s));
        let value = |name: &str| -> f64 {
            p.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
                .unwrap_or_else(|| panic!("no {name} in:\n{p}"))
                .parse()
                .unwrap()
        };
        let build = p
            .lines()
            .find(|l| l.starts_with("sluice_build_info{"))
            .unwrap_or_else(|| panic!("no sluice_build_info in:\n{p}"));
        assert!(
            build.starts_with(&format!(
                "sluice_build_info{{version=\"{}\",",
                crate::VERSION
            )),
            "{build}"
        );
        assert!(build.ends_with("} 1"), "{build}");
        assert!(p.contains("# TYPE process_cpu_seconds_total counter\n"));
        assert!(value("process_cpu_seconds_total") >= 0.0);
        assert!(value("process_resident_memory_bytes") > 1e5);
        assert!(value("process_open_fds") >= 3.0);
        assert!(value("process_max_fds") >= value("process_open_fds"));
        let start = value("process_start_time_seconds");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        assert!(
            start > now - 3600.0 && start <= now + 1.0,
            "{start} vs {now}"
        );
        let reference = metrics_reference();
        for m in PROCESS_METRICS {
            assert!(
                reference.contains(&format!("| `{}` |", m.name)),
                "{}",
                m.name
            );
        }
    }

    #[test]
    fn listeners_memory_and_help() {
        let s = shared();
        s.workers[0]
            .listener(0)
            .unwrap()
            .downstream_cx_total
            .store(3, Ordering::Relaxed);
        let (r, _) = handle(&s, "GET", "/listeners");
        assert_eq!(r.status, 200);
        assert_eq!(
            String::from_utf8(r.body).unwrap(),
            "web::address::127.0.0.1:1\nweb::kind::tcp_proxy\nweb::open_connections::3\n"
        );
        let (r, _) = handle(&s, "GET", "/listeners?format=json");
        let v: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(
            v,
            json!({ "listeners": [ { "name": "web", "address": "127.0.0.1:1", "kind": "tcp_proxy", "open_connections": 3 } ] })
        );
        let (r, _) = handle(&s, "GET", "/memory");
        assert_eq!(r.status, 200);
        let v: Value = serde_json::from_slice(&r.body).unwrap();
        assert!(v["resident_bytes"].as_u64().unwrap() > 100_000, "{v}");
        assert!(
            v["resident_peak_bytes"].as_u64() >= v["resident_bytes"].as_u64(),
            "{v}"
        );
        let (r, _) = handle(&s, "GET", "/help");
        assert_eq!(r.status, 200);
        let help = String::from_utf8(r.body).unwrap();
        for (p, v, _) in ENDPOINTS {
            assert!(
                help.contains(&format!("  {} {p}: ", verb_name(*v).to_uppercase())),
                "{p} in:\n{help}"
            );
        }
    }

    /// `POST /reset_counters` zeroes the counters of `/stats` only: gauges and the Prometheus
    /// counters (which never go down) keep their values, and counting goes on from zero.
    #[test]
    fn reset_counters_zeroes_stats_counters_only() {
        let s = shared();
        let l = s.workers[0].listener(0).unwrap();
        l.downstream_cx_total.store(5, Ordering::Relaxed);
        l.downstream_cx_closed.store(2, Ordering::Relaxed);
        let stat = |name: &str| -> u64 {
            let body = handle(&s, "GET", "/stats").0.body;
            let text = String::from_utf8(body).unwrap();
            text.lines()
                .find_map(|line| line.strip_prefix(&format!("{name}: ")))
                .unwrap_or_else(|| panic!("no {name} in:\n{text}"))
                .parse()
                .unwrap()
        };
        assert_eq!(stat("listener.web.downstream_cx_total"), 5);
        assert_eq!(stat("listener.web.downstream_cx_active"), 3);
        let (r, _) = handle(&s, "POST", "/reset_counters");
        assert_eq!(r.status, 200);
        assert_eq!(stat("listener.web.downstream_cx_total"), 0);
        assert_eq!(stat("listener.web.downstream_cx_active"), 3, "a gauge");
        l.downstream_cx_total.store(7, Ordering::Relaxed);
        assert_eq!(stat("listener.web.downstream_cx_total"), 2);
        let p = prometheus(&s, &scrape(&s));
        assert!(
            p.contains("sluice_downstream_cx_total{listener=\"web\"} 7\n"),
            "{p}"
        );
    }

    /// A listener removed by a reload and added back by a later one starts from 0, and its
    /// counters are not read less the zero `/reset_counters` set for the old one.
    #[test]
    fn a_reset_is_forgotten_for_a_listener_a_reload_removes() {
        let s = shared();
        let with_web = s.config.clone();
        s.workers[0]
            .listener(0)
            .unwrap()
            .downstream_cx_total
            .store(100, Ordering::Relaxed);
        let handle = AdminHandle::new(Arc::new(s));
        assert_eq!(handle_req(&handle, "POST", "/reset_counters"), 200);
        let without_web = Arc::new(
            Config::from_yaml(
                "admin: { address: 127.0.0.1:9901 }\n\
                 listeners: [ { name: other, address: 127.0.0.1:3, tcp_proxy: { cluster: app } } ]\n\
                 clusters: [ { name: app, hosts: [ { address: 127.0.0.1:2, weight: 3 } ] } ]",
            )
            .unwrap(),
        );
        let stats = vec![Arc::new(WorkerStats::new(&without_web))];
        handle.replace(without_web, stats);
        let stats = vec![Arc::new(WorkerStats::new(&with_web))];
        stats[0]
            .listener(0)
            .unwrap()
            .downstream_cx_total
            .store(7, Ordering::Relaxed);
        handle.replace(with_web, stats);
        let body = handle_body(&handle, "/stats");
        assert!(
            body.contains("listener.web.downstream_cx_total: 7\n"),
            "the new listener's own count:\n{body}"
        );
    }

    fn handle_req(h: &AdminHandle, method: &str, path: &str) -> u16 {
        handle(&h.get(), method, path).0.status
    }

    fn handle_body(h: &AdminHandle, path: &str) -> String {
        String::from_utf8(handle(&h.get(), "GET", path).0.body).unwrap()
    }

    #[test]
    fn config_dump_redacts_credential_headers() {
        let mut v = json!({
            "add": [ { "name": "Authorization", "value": "Bearer s3cr3t" }, { "name": "x-tenant", "value": "acme" } ],
            "match": { "headers": [ { "name": "x-api-key", "exact": "k" }, { "name": "x-v", "exact": "2" } ] },
            "tls": null
        });
        redact(&mut v);
        assert_eq!(
            v,
            json!({
                "add": [ { "name": "Authorization", "value": "[redacted]" }, { "name": "x-tenant", "value": "acme" } ],
                "match": { "headers": [ { "name": "x-api-key", "exact": "[redacted]" }, { "name": "x-v", "exact": "2" } ] }
            })
        );
        let s = shared();
        let dump = config_dump(&s.config);
        assert_eq!(dump["listeners"][0]["name"], "web");
    }

    /// A `LogControl` that records the filters it is given.
    fn recording_shared() -> (AdminShared, Arc<std::sync::Mutex<Vec<String>>>) {
        let s = shared();
        let set = Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = set.clone();
        let control = LogControl(Arc::new(move |f: &str| {
            log.lock().unwrap().push(f.to_owned());
            Ok(())
        }));
        let s = AdminShared::new(s.config.clone(), s.workers.clone(), Some(control));
        (s, set)
    }

    #[test]
    fn logging_takes_the_usual_spellings_and_refuses_the_rest() {
        let (s, set) = recording_shared();
        for (level, want) in [
            ("warning", "warn,rustls=error"),
            ("critical", "error"),
            ("debug", "debug"),
        ] {
            let (r, _) = handle(&s, "POST", &format!("/logging?level={level}"));
            assert_eq!(r.status, 200, "{level}");
            assert_eq!(set.lock().unwrap().last().map(String::as_str), Some(want));
        }
        for bad in ["garbage", "", "sluice_runtime%3Dloud"] {
            let (r, _) = handle(&s, "POST", &format!("/logging?level={bad}"));
            assert_eq!(r.status, 400, "{bad}");
            let body = String::from_utf8(r.body).unwrap();
            assert!(
                body.contains(crate::logging::ACCEPTED_LEVELS),
                "{bad}: {body}"
            );
        }
        assert_eq!(handle(&s, "POST", "/logging").0.status, 400);
        assert_eq!(
            set.lock().unwrap().len(),
            3,
            "nothing refused reached the filter"
        );
        // Without a log control, a bad level is still a 400 (not a 501).
        assert_eq!(
            handle(&shared(), "POST", "/logging?level=garbage").0.status,
            400
        );
    }

    /// The index page's `/logging` form posts a `level` field as an urlencoded body; the
    /// server reads it as the `level` parameter.
    #[test]
    fn the_logging_form_submits_a_level() {
        let html = index_html(&shared());
        let form = html
            .lines()
            .find(|l| l.contains("action=\"/logging\""))
            .expect("a /logging form");
        assert!(form.contains("<select name=\"level\">"), "{form}");
        let (s, set) = recording_shared();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let answer = rt.block_on(async {
            let (mut client, server) = tokio::io::duplex(4096);
            let serve = serve_connection(server, &s);
            let talk = async {
                client
                    .write_all(
                        b"POST /logging HTTP/1.1\r\nhost: x\r\n\
                          content-type: application/x-www-form-urlencoded\r\n\
                          content-length: 13\r\n\r\nlevel=warning",
                    )
                    .await
                    .unwrap();
                let mut out = Vec::new();
                client.read_to_end(&mut out).await.unwrap();
                String::from_utf8(out).unwrap()
            };
            tokio::join!(serve, talk).1
        });
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert_eq!(*set.lock().unwrap(), ["warn,rustls=error"]);
    }

    #[test]
    fn index_lists_endpoints_and_hosts() {
        use crate::stats::PoolGauge;
        let s = shared();
        let html = index_html(&s);
        for (p, _, _) in ENDPOINTS {
            assert!(html.contains(&format!("\"{p}\"")), "{p}");
        }
        assert!(html.contains("<td>app</td><td>127.0.0.1:2</td><td>3</td>"));
        // The host's pool, as `/clusters` shows it: idle HTTP/1.1 connections, HTTP/2
        // connections and streams, after requests, active connections and requests.
        assert!(
            html.contains(
                "<th>requests</th><th>idle HTTP/1.1 connections</th><th>HTTP/2 connections</th>\
                 <th>HTTP/2 streams</th></tr>"
            ),
            "{html}"
        );
        assert!(
            html.contains("<td>0</td><td>0</td><td>0</td><td>0</td><td>0</td><td>0</td></tr>"),
            "{html}"
        );
        let w = &s.workers[0];
        w.pool_gauge_add(0, Some(0), PoolGauge::Http1Idle, 4);
        w.pool_gauge_add(0, Some(0), PoolGauge::Http2Connections, 2);
        w.pool_gauge_add(0, Some(0), PoolGauge::Http2Streams, 7);
        let html = index_html(&s);
        assert!(
            html.contains("<td>0</td><td>0</td><td>0</td><td>4</td><td>2</td><td>7</td></tr>"),
            "{html}"
        );
        // The refreshing script fills the same columns from `/clusters?format=json`.
        assert!(
            html.contains("[h.http1_cx_idle], [h.http2_cx_active], [h.http2_streams_active]"),
            "{html}"
        );
        // Each listener has a row; the page refreshes itself; stopping asks first.
        for l in &s.config.listeners {
            assert!(
                html.contains(&format!("<tr><td>{}</td><td>{}</td>", l.name, l.address)),
                "{html}"
            );
        }
        assert!(html.contains("setInterval(refresh, 2000)"), "{html}");
        let quit = html
            .lines()
            .find(|l| l.contains("action=\"/quitquitquit\""))
            .expect("a /quitquitquit form");
        assert!(
            quit.contains("onsubmit=\"return confirm('Stop this Sluice"),
            "{quit}"
        );
        let reset = html
            .lines()
            .find(|l| l.contains("action=\"/reset_counters\""))
            .expect("a /reset_counters form");
        assert!(!reset.contains("confirm("), "{reset}");
    }

    /// `docs/metrics.md` is generated from the metric declarations; this fails when a metric
    /// changed and the file was not regenerated (`SLUICE_BLESS=1` rewrites it).
    #[test]
    fn metrics_reference_is_current() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/metrics.md");
        let want = metrics_reference();
        if std::env::var_os("SLUICE_BLESS").is_some() {
            std::fs::write(path, &want).unwrap();
        }
        let have = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            have == want,
            "docs/metrics.md is stale: regenerate it with \
             SLUICE_BLESS=1 cargo test -p sluice-runtime --lib metrics_reference"
        );
    }

    /// Every declared metric has a unique Prometheus family and `/stats` name.
    #[test]
    fn metric_names_are_unique() {
        let text = metrics_reference();
        let mut names: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("| `"))
            .filter_map(|l| l.split('`').nth(1))
            .collect();
        let all = names.len();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), all, "a Prometheus name is declared twice");
    }
}
