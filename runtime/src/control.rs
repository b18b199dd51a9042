//! The control socket: how a new Sluice binary (`sluice run -c FILE --upgrade`) finds the running
//! instance and takes over its listening sockets, driven by the sans-IO machines of
//! [`sluice_core::handover`].
//!
//! The running instance binds a Unix stream socket ([`ControlSocket::bind`]; the default path is
//! derived from the config file, [`default_path`]) and serves upgrade requests on it
//! ([`ControlSocket::serve`]). A second instance started without `--upgrade` finds the socket
//! alive and refuses to start ([`ControlError::AlreadyRunning`]). An instance started with
//! `--upgrade` connects ([`request_upgrade`]), receives duplicates of every listening socket
//! (passed with `SCM_RIGHTS` by [`crate::fdpass`]), starts serving them, and says so
//! ([`Upgrade::confirm_serving`]); only then does the old instance stop accepting and drain.
//! If the new instance dies or stalls before that, the old one never stopped accepting: it logs a
//! warning and carries on (rollback).
//!
//! ## Wire protocol (version 1)
//!
//! Every message is one [`crate::fdpass`] frame (`u32 BE payload length`, `u32 BE descriptor
//! count`, payload, descriptors via `SCM_RIGHTS`) whose payload is a JSON object with `"v": 1`
//! and a `"type"`:
//!
//! | direction | message | descriptors |
//! |---|---|---|
//! | new → old | `{"v":1,"type":"upgrade","pid":P}` | |
//! | old → new | `{"v":1,"type":"offer","workers":W,"listeners":[{"address":"A","fds":K},...],"admin":"A"\|null,"health":[{"cluster":C,"host":A,"transport":"NAME"\|null,"healthy":B},...],"tickets":[{"listener":ID,"keys":[{"name":HEX,"secret":HEX,"created":T},...]},...]}` | every listener's K sockets in order, then the admin socket |
//! | old → new | `{"v":1,"type":"refused","reason":"..."}` (then closes) | |
//! | new → old | `{"v":1,"type":"serving"}` | |
//! | old → new | `{"v":1,"type":"draining"}` (the acknowledgement) | |
//!
//! A peer speaking another version is refused (`refused` with the reason).
//!
//! `tickets` are the TLS listeners' session-ticket keys ([`crate::tls_tickets`]), so that
//! clients resume against the new instance with tickets the old one issued. They are secrets:
//! they travel only here (never to a file or a log) and are why the checks below matter.
//!
//! ## Who may take part
//!
//! The socket hands over every listening socket, so both ends check each other. Its directory
//! ([`default_dir`], or the path given) must be owned by this user or root and writable by
//! nobody else ([`check_dir`]); an existing socket file must be this user's (another user's is
//! never connected to nor removed: [`ControlError::Untrusted`]). The file is made `0600`. Both
//! the old instance and the new one check the peer's uid (`SO_PEERCRED`: this user or root),
//! the new one before it sends anything. Every descriptor received is checked before it is
//! used ([`check_inherited_listener`], [`check_inherited_admin`], and migrated connections must
//! be connected TCP sockets): anything else fails the upgrade, and the old instance, which
//! never stopped accepting, keeps serving.
//!
//! ## Sharing sockets
//!
//! The passed sockets share the old instance's open file descriptions: their flags (notably
//! `O_NONBLOCK`, which Sluice's sockets have) are shared, so do not change them. Closing one of
//! the received `SO_REUSEPORT` sockets would drop the connections queued on it: give every
//! received socket to some worker even when the new instance runs fewer workers.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd as _, BorrowedFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _, PermissionsExt as _};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use sluice_core::handover::{NewAction, NewFailure, NewInstance, NewPhase, OldAction, OldInstance};
use tracing::{debug, info, warn};

use crate::fdpass;

/// The protocol version this build speaks.
pub const PROTOCOL_VERSION: u64 = 1;

/// The directory of the default control socket: `$XDG_RUNTIME_DIR` when it is set (an
/// absolute directory), else `/run/sluice` for root, else `/tmp/sluice-<uid>`. Never a
/// directory other users can write: [`check_dir`] refuses one (and the two last are created
/// `0700` by [`ControlSocket::bind`] when missing).
#[must_use]
pub fn default_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .filter(|d| d.is_absolute() && d.is_dir())
    {
        return d;
    }
    let uid = nix::unistd::geteuid().as_raw();
    if uid == 0 {
        PathBuf::from("/run/sluice")
    } else {
        PathBuf::from(format!("/tmp/sluice-{uid}"))
    }
}

/// The default control socket path for a config file: stable for the same file across
/// processes and builds (a fixed FNV-1a hash of the canonical path, never std's seeded hasher):
/// `<default_dir()>/sluice-<16 hex>.sock`.
#[must_use]
pub fn default_path(config_path: &Path) -> PathBuf {
    let canonical = std::fs::canonicalize(config_path).unwrap_or_else(|_| {
        if config_path.is_absolute() {
            config_path.to_path_buf()
        } else {
            std::env::current_dir()
                .map(|d| d.join(config_path))
                .unwrap_or_else(|_| config_path.to_path_buf())
        }
    });
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in canonical.as_os_str().as_encoded_bytes() {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    default_dir().join(format!("sluice-{hash:016x}.sock"))
}

/// This process's effective uid.
fn my_uid() -> u32 {
    nix::unistd::geteuid().as_raw()
}

/// Checks that the directory of a control (or admin) socket is safe to use: it exists (it is
/// created `0700` when missing and its parent exists), is owned by this user or root, and
/// nobody else can write to it (no group or other write bit, sticky or not: in a directory
/// others can write, another user can create the socket's name first, or replace it).
pub fn check_dir(socket: &Path) -> io::Result<()> {
    let dir = match socket.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => std::env::current_dir()?,
    };
    let unsafe_dir = |why: String| {
        io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "socket {}: its directory {} {why}; use a directory only this user (uid {}) \
                 can write, e.g. /run/sluice for root or $XDG_RUNTIME_DIR",
                socket.display(),
                dir.display(),
                my_uid()
            ),
        )
    };
    let meta = match std::fs::metadata(&dir) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            use std::os::unix::fs::DirBuilderExt as _;
            // Another instance starting at the same moment may create it first: fine, it is
            // checked below like any existing directory.
            match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
                other => other,
            }
            .map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!(
                        "socket {}: cannot create {}: {e}",
                        socket.display(),
                        dir.display()
                    ),
                )
            })?;
            std::fs::metadata(&dir)?
        }
        Err(e) => {
            return Err(io::Error::new(
                e.kind(),
                format!("socket {}: {}: {e}", socket.display(), dir.display()),
            ));
        }
    };
    if !meta.is_dir() {
        return Err(unsafe_dir("is not a directory".into()));
    }
    let me = my_uid();
    // A symlink in the directory's place is only as trustworthy as its owner, who can point
    // it elsewhere at any time (`metadata` above followed it).
    if let Ok(link) = std::fs::symlink_metadata(&dir)
        && link.file_type().is_symlink()
        && link.uid() != me
        && link.uid() != 0
    {
        return Err(unsafe_dir(format!(
            "is a symlink owned by uid {}",
            link.uid()
        )));
    }
    if meta.uid() != me && meta.uid() != 0 {
        return Err(unsafe_dir(format!("is owned by uid {}", meta.uid())));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(unsafe_dir(format!(
            "is writable by other users (mode {:04o})",
            meta.mode() & 0o7777
        )));
    }
    Ok(())
}

/// Checks an existing socket file before using it: a socket, owned by this user. `Ok(false)`
/// when nothing is at `path`.
fn check_socket_file(path: &Path) -> Result<bool, ControlError> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(at(path, e)),
    };
    if !meta.file_type().is_socket() {
        return Err(ControlError::Io(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("{} exists and is not a socket", path.display()),
        )));
    }
    if meta.uid() != my_uid() {
        return Err(ControlError::Untrusted {
            path: path.to_path_buf(),
            reason: format!(
                "the socket file is owned by uid {}, not by this user (uid {}); another user \
                 may have created it: remove it",
                meta.uid(),
                my_uid()
            ),
        });
    }
    Ok(true)
}

/// Makes way for binding a Unix socket at `path` (the admin socket): nothing there is fine; a
/// socket file of this user that nobody answers on is removed; a live one, a file that is not
/// a socket, or one of another user is an error (and is left alone).
pub fn remove_stale_socket(path: &Path) -> io::Result<()> {
    if !check_socket_file(path).map_err(io::Error::from)? {
        return Ok(());
    }
    match UnixStream::connect(path) {
        Ok(_) => Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            "another process answers on this socket",
        )),
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
            ) =>
        {
            info!(path = %path.display(), "removing a stale socket file");
            match std::fs::remove_file(path) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            }
        }
        Err(e) => Err(e),
    }
}

/// Where the admin socket handed over listens: a TCP address, or a Unix socket path (written
/// `unix:PATH` in the offer; an older instance, which only knows addresses, then refuses it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AdminAddress {
    /// `admin.address`.
    Tcp(SocketAddr),
    /// `admin.path`.
    Unix(PathBuf),
}

impl AdminAddress {
    /// Where `listen` listens.
    #[must_use]
    pub fn of(listen: &sluice_core::config::AdminListen) -> AdminAddress {
        match listen {
            sluice_core::config::AdminListen::Tcp { address } => AdminAddress::Tcp(*address),
            sluice_core::config::AdminListen::Unix { path, .. } => {
                AdminAddress::Unix(PathBuf::from(path))
            }
        }
    }

    fn parse(s: &str) -> Option<AdminAddress> {
        match s.strip_prefix("unix:") {
            Some(p) if p.starts_with('/') => Some(AdminAddress::Unix(PathBuf::from(p))),
            Some(_) => None,
            None => s.parse().ok().map(AdminAddress::Tcp),
        }
    }
}

impl fmt::Display for AdminAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AdminAddress::Tcp(a) => write!(f, "{a}"),
            AdminAddress::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

/// [`check_inherited_listener`] for the admin socket: a TCP one, or a Unix stream socket,
/// listening, non-blocking, bound to `expected`'s path.
pub fn check_inherited_admin(
    fd: OwnedFd,
    expected: &AdminAddress,
) -> Result<crate::admin::AdminListener, String> {
    let path = match expected {
        AdminAddress::Tcp(a) => {
            return check_inherited_listener(fd, *a).map(crate::admin::AdminListener::Tcp);
        }
        AdminAddress::Unix(p) => p,
    };
    let sock = socket2::SockRef::from(&fd);
    let bad = |what: String| format!("the admin socket offered for {expected} {what}");
    let inspect = |e: io::Error| {
        if e.raw_os_error() == Some(nix::libc::ENOTSOCK) {
            bad("is not a socket".into())
        } else {
            bad(format!("cannot be inspected: {e}"))
        }
    };
    let ty = sock.r#type().map_err(inspect)?;
    let domain = sock.domain().map_err(inspect)?;
    if ty != socket2::Type::STREAM || domain != socket2::Domain::UNIX {
        return Err(bad(format!(
            "is not a Unix stream socket ({domain:?}, {ty:?})"
        )));
    }
    if !sock.is_listener().map_err(inspect)? {
        return Err(bad("is not listening".into()));
    }
    if !sock.nonblocking().map_err(inspect)? {
        return Err(bad("is blocking".into()));
    }
    let local = sock.local_addr().map_err(inspect)?;
    if local.as_pathname() != Some(path.as_path()) {
        return Err(bad(format!("is bound to {:?}", local.as_pathname())));
    }
    Ok(crate::admin::AdminListener::Unix(UnixListener::from(fd)))
}

/// Checks the process at the other end of a control connection: this user, or root.
fn check_peer_uid(stream: &UnixStream) -> io::Result<()> {
    use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
    let creds = getsockopt(stream, PeerCredentials).map_err(io::Error::from)?;
    let me = my_uid();
    if creds.uid() == me || creds.uid() == 0 {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "the peer process (pid {}) runs as uid {}, not as this user (uid {me}) or root",
                creds.pid(),
                creds.uid()
            ),
        ))
    }
}

/// Checks a listening socket received from the old instance before serving it: a TCP stream
/// socket, listening, non-blocking, bound to `expected`. Anything else (a pipe, a UDP socket,
/// a connected socket, a blocking listener, which would hang a worker in `accept`, a socket
/// bound elsewhere) is an error naming what it is.
pub fn check_inherited_listener(
    fd: OwnedFd,
    expected: SocketAddr,
) -> Result<std::net::TcpListener, String> {
    let sock = socket2::SockRef::from(&fd);
    let bad = |what: String| format!("the socket offered for {expected} {what}");
    let ty = sock.r#type().map_err(|e| {
        if e.raw_os_error() == Some(nix::libc::ENOTSOCK) {
            bad("is not a socket".into())
        } else {
            bad(format!("cannot be inspected: {e}"))
        }
    })?;
    if ty != socket2::Type::STREAM {
        return Err(bad(format!("is not a stream socket ({ty:?})")));
    }
    let domain = sock
        .domain()
        .map_err(|e| bad(format!("cannot be inspected: {e}")))?;
    if domain != socket2::Domain::IPV4 && domain != socket2::Domain::IPV6 {
        return Err(bad(format!("is not a TCP socket ({domain:?})")));
    }
    if !sock
        .is_listener()
        .map_err(|e| bad(format!("cannot be inspected: {e}")))?
    {
        return Err(bad(
            "is not listening (a connected or unbound socket)".into()
        ));
    }
    if !sock
        .nonblocking()
        .map_err(|e| bad(format!("cannot be inspected: {e}")))?
    {
        return Err(bad(
            "is blocking (a worker would hang in accept); the running instance's are not".into(),
        ));
    }
    let local = sock
        .local_addr()
        .ok()
        .and_then(|a| a.as_socket())
        .ok_or_else(|| bad("has no address".into()))?;
    if local != expected {
        return Err(bad(format!("is bound to {local}")));
    }
    Ok(std::net::TcpListener::from(fd))
}

/// What can go wrong on the control socket.
#[derive(Debug)]
pub enum ControlError {
    /// Another instance answers on this control socket.
    AlreadyRunning(PathBuf),
    /// Nobody listens on this control socket (an upgrade needs a running instance).
    NoInstance(PathBuf),
    /// The running instance refused the upgrade.
    Refused {
        /// The control socket.
        path: PathBuf,
        /// Its reason.
        reason: String,
    },
    /// The control socket, its directory or the process answering on it is not this user's
    /// (nothing was sent to it or taken from it).
    Untrusted {
        /// The control socket.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The peer sent something unexpected, or closed the connection halfway.
    Protocol(String),
    /// A step of the handover took too long.
    Timeout(&'static str),
    /// An IO error.
    Io(io::Error),
}

impl fmt::Display for ControlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ControlError::AlreadyRunning(p) => write!(
                f,
                "another sluice instance is running with this config (control socket {} \
                 answers); stop it, or start this one with --upgrade to take over from it",
                p.display()
            ),
            ControlError::NoInstance(p) => write!(
                f,
                "--upgrade: no running sluice instance listens on the control socket {}",
                p.display()
            ),
            ControlError::Refused { path, reason } => write!(
                f,
                "the running instance (control socket {}) refused the upgrade: {reason}",
                path.display()
            ),
            ControlError::Untrusted { path, reason } => write!(
                f,
                "refusing the control socket {}: {reason}",
                path.display()
            ),
            ControlError::Protocol(m) => write!(f, "upgrade protocol error: {m}"),
            ControlError::Timeout(step) => write!(f, "upgrade timed out while {step}"),
            ControlError::Io(e) => write!(f, "control socket: {e}"),
        }
    }
}

impl std::error::Error for ControlError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ControlError::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl From<io::Error> for ControlError {
    fn from(e: io::Error) -> Self {
        ControlError::Io(e)
    }
}

impl From<ControlError> for io::Error {
    fn from(e: ControlError) -> Self {
        match e {
            ControlError::Io(e) => e,
            ControlError::AlreadyRunning(_) => io::Error::new(io::ErrorKind::AddrInUse, e),
            ControlError::NoInstance(_) => io::Error::new(io::ErrorKind::NotFound, e),
            ControlError::Timeout(_) => io::Error::new(io::ErrorKind::TimedOut, e),
            ControlError::Untrusted { .. } => io::Error::new(io::ErrorKind::PermissionDenied, e),
            other => io::Error::other(other),
        }
    }
}

/// The sockets the old instance hands over. The descriptors are the caller's duplicates
/// (`try_clone`): they are sent and then closed; the caller keeps its own.
#[derive(Debug)]
pub struct HandoverOffer {
    /// How many workers the old instance runs.
    pub workers: usize,
    /// Every listener: its address and one socket per old worker.
    pub listeners: Vec<(SocketAddr, Vec<OwnedFd>)>,
    /// The admin listener, if any.
    pub admin: Option<(AdminAddress, OwnedFd)>,
    /// The active health checks' verdicts: (cluster, host address, transport entry name,
    /// healthy: [`crate::health::HandedVerdict`]), so that the new
    /// instance does not start with every checked host unknown.
    pub health: Vec<crate::health::HandedVerdict>,
    /// Every TLS listener's session-ticket keys (secrets: see the module docs).
    pub tickets: Vec<crate::tls_tickets::ExportedKeys>,
}

/// The running instance's control socket.
#[derive(Debug)]
pub struct ControlSocket {
    listener: UnixListener,
    path: PathBuf,
    /// The uid owning the socket file (this process's): the only peer uid answered, with root.
    uid: u32,
}

impl ControlSocket {
    /// Binds the control socket at `path`. [`ControlError::AlreadyRunning`] when a live instance
    /// answers there; a stale socket file (nobody listening) is removed and bound again. A path
    /// that exists and is not a socket is an error (nothing is removed).
    ///
    /// The directory must be safe ([`check_dir`]), and an existing socket file this user's:
    /// a socket file or directory of another user is refused ([`ControlError::Untrusted`]),
    /// never connected to nor removed.
    pub fn bind(path: &Path) -> Result<ControlSocket, ControlError> {
        check_dir(path).map_err(ControlError::Io)?;
        if check_socket_file(path)? {
            match UnixStream::connect(path) {
                Ok(_) => return Err(ControlError::AlreadyRunning(path.to_path_buf())),
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
                    ) =>
                {
                    info!(path = %path.display(), "removing a stale control socket");
                    remove_if_exists(path)?;
                }
                Err(e) => return Err(at(path, e)),
            }
        }
        Self::bind_fresh(path)
    }

    /// Binds `path` for a new instance once the old one acknowledged the handover: replaces
    /// the old instance's socket file (which it no longer needs).
    pub fn bind_after_upgrade(path: &Path) -> Result<ControlSocket, ControlError> {
        remove_if_exists(path)?;
        Self::bind_fresh(path)
    }

    fn bind_fresh(path: &Path) -> Result<ControlSocket, ControlError> {
        let listener = UnixListener::bind(path).map_err(|e| at(path, e))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| at(path, e))?;
        let uid = my_uid();
        Ok(ControlSocket {
            listener,
            path: path.to_path_buf(),
            uid,
        })
    }

    /// The socket's path.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Serves upgrade requests on its own thread (one more short-lived thread per connection,
    /// so that a second request during a handover is refused rather than queued). `offer()`
    /// gives the sockets to send (duplicates; the caller keeps its own); when the new instance
    /// says it serves, the old acknowledges and `on_taken_over()` is called (the caller then
    /// stops accepting and drains). When the new instance does not say so within `timeout` of
    /// its request, or its connection closes first, nothing happens (rollback: the old never
    /// stopped accepting) and a warning is logged. Later requests are served the same way
    /// (refused once the handover is done). The thread runs until the process exits.
    pub fn serve(
        self,
        offer: impl Fn() -> io::Result<HandoverOffer> + Send + 'static,
        on_taken_over: impl Fn() -> Option<Migration> + Send + 'static,
        timeout: Duration,
    ) -> io::Result<std::thread::JoinHandle<()>> {
        let shared = Arc::new(Shared {
            machine: Mutex::new(OldInstance::new(timeout)),
            offer: Mutex::new(Box::new(offer)),
            on_taken_over: Mutex::new(Box::new(on_taken_over)),
            timeout,
            uid: self.uid,
            next_conn: AtomicU64::new(0),
            path: self.path.clone(),
        });
        std::thread::Builder::new()
            .name("sluice-control".into())
            .spawn(move || {
                info!(path = %self.path.display(), "control socket listening");
                for stream in self.listener.incoming() {
                    let stream = match stream {
                        Ok(s) => s,
                        Err(e) => {
                            warn!(error = %e, "control socket: accept failed");
                            std::thread::sleep(Duration::from_millis(50));
                            continue;
                        }
                    };
                    let shared = shared.clone();
                    let conn = shared.next_conn.fetch_add(1, Ordering::Relaxed);
                    let spawned = std::thread::Builder::new()
                        .name("sluice-control-conn".into())
                        .spawn(move || shared.handle(conn, stream));
                    if let Err(e) = spawned {
                        warn!(error = %e, "control socket: cannot spawn a connection thread");
                    }
                }
            })
    }
}

fn at(path: &Path, e: io::Error) -> ControlError {
    ControlError::Io(io::Error::new(
        e.kind(),
        format!("control socket {}: {e}", path.display()),
    ))
}

fn remove_if_exists(path: &Path) -> Result<(), ControlError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(at(path, e)),
    }
}

type OfferFn = Box<dyn Fn() -> io::Result<HandoverOffer> + Send>;
type TakenOverFn = Box<dyn Fn() -> Option<Migration> + Send>;

/// A live downstream connection moved to the new instance (MOSN's connection migration): its
/// socket, the listener it came through, and the bytes the old instance had read from it but
/// not processed (a partial frame).
#[derive(Debug)]
pub struct Migrated {
    /// The listener's address (the new instance serves the connection as that listener's).
    pub listener: SocketAddr,
    /// The connection.
    pub stream: OwnedFd,
    /// Bytes already read from it, to be processed first.
    pub unread: Vec<u8>,
}

/// Largest `unread` a migration carries (a longer partial frame closes instead).
pub const MAX_MIGRATED_UNREAD: usize = 256 * 1024;

/// The old instance's side of connection migration: connections to send until every sender is
/// gone, then `finished` is called (the caller may then exit).
pub struct Migration {
    /// Connections to move to the new instance.
    pub connections: std::sync::mpsc::Receiver<Migrated>,
    /// Called once every connection was sent (or the new instance went away).
    pub finished: Box<dyn FnOnce() + Send>,
}

/// What the old instance's connection threads share.
struct Shared {
    machine: Mutex<OldInstance>,
    // `Fn + Send` but not necessarily `Sync`: called under a lock.
    offer: Mutex<OfferFn>,
    on_taken_over: Mutex<TakenOverFn>,
    timeout: Duration,
    uid: u32,
    next_conn: AtomicU64,
    path: PathBuf,
}

impl Shared {
    /// Runs the old machine on one connection until it is done with it.
    fn handle(&self, conn: u64, stream: UnixStream) {
        if let Err(e) = self.check_peer(&stream) {
            warn!(conn, error = %e, "control socket: refusing a peer");
            return;
        }
        // The request (or nothing: a liveness probe from `ControlSocket::bind` just closes).
        if stream.set_read_timeout(Some(self.timeout)).is_err()
            || stream.set_write_timeout(Some(self.timeout)).is_err()
        {
            return;
        }
        let request = match recv_json(&stream) {
            Ok((v, _)) => v,
            Err(e) => {
                debug!(conn, error = %e, "control connection closed before a request");
                return;
            }
        };
        if let Err(reason) = check_message(&request, "upgrade") {
            let _ = send_json(
                &stream,
                &json!({"v": PROTOCOL_VERSION, "type": "refused", "reason": reason}),
                &[],
            );
            warn!(conn, %reason, "control socket: refusing an invalid request");
            return;
        }
        let pid = request.get("pid").and_then(Value::as_u64);
        info!(conn, ?pid, "upgrade requested");
        let mut actions = self.input(|m| m.handle_upgrade_request(crate::now(), conn));
        loop {
            for action in std::mem::take(&mut actions) {
                match action {
                    OldAction::SendOffer { conn: c } => {
                        debug_assert_eq!(c, conn);
                        if let Err(e) = self.send_offer(&stream) {
                            warn!(conn, error = %e, "upgrade: could not send the sockets");
                            actions.extend(self.input(|m| m.handle_closed(crate::now(), conn)));
                        }
                    }
                    OldAction::Refuse { reason, .. } => {
                        info!(conn, %reason, "upgrade refused");
                        let _ = send_json(
                            &stream,
                            &json!({"v": PROTOCOL_VERSION, "type": "refused", "reason": reason.to_string()}),
                            &[],
                        );
                        return;
                    }
                    OldAction::Rollback { reason, .. } => {
                        warn!(conn, %reason, "upgrade abandoned; this instance keeps serving");
                        return;
                    }
                    OldAction::SendDraining { .. } => {
                        if let Err(e) = send_json(
                            &stream,
                            &json!({"v": PROTOCOL_VERSION, "type": "draining"}),
                            &[],
                        ) {
                            warn!(conn, error = %e, "upgrade: could not acknowledge (the new instance serves anyway)");
                        }
                    }
                    OldAction::StopAccepting => {
                        info!(conn, "the new instance serves: stop accepting and drain");
                        let migration = {
                            let f = self
                                .on_taken_over
                                .lock()
                                .unwrap_or_else(std::sync::PoisonError::into_inner);
                            f()
                        };
                        if let Some(m) = migration {
                            send_migrations(&stream, m);
                        }
                        return;
                    }
                    OldAction::Exit => {}
                }
            }
            if !actions.is_empty() {
                continue;
            }
            // Waiting for `serving` (or the deadline).
            let deadline = self
                .machine
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .poll_timeout();
            let Some(deadline) = deadline else {
                return;
            };
            let now = crate::now();
            if now >= deadline {
                actions = self.input(|m| m.handle_timeout(now));
                continue;
            }
            let _ = stream.set_read_timeout(Some((deadline - now).max(Duration::from_millis(1))));
            actions = match recv_json(&stream) {
                Ok((v, _)) if check_message(&v, "serving").is_ok() => {
                    self.input(|m| m.handle_serving(crate::now(), conn))
                }
                Ok((v, _)) => {
                    warn!(conn, message = %v, "upgrade: unexpected message");
                    self.input(|m| m.handle_closed(crate::now(), conn))
                }
                Err(e) if is_timeout(&e) => self.input(|m| m.handle_timeout(crate::now())),
                Err(e) => {
                    debug!(conn, error = %e, "upgrade: control connection closed");
                    self.input(|m| m.handle_closed(crate::now(), conn))
                }
            };
        }
    }

    /// Feeds one input to the machine and takes its actions.
    fn input(&self, f: impl FnOnce(&mut OldInstance)) -> Vec<OldAction> {
        let mut m = self
            .machine
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut m);
        std::iter::from_fn(|| m.poll_action()).collect()
    }

    fn send_offer(&self, stream: &UnixStream) -> io::Result<()> {
        let offer = {
            let f = self
                .offer
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            f()?
        };
        let mut fds: Vec<BorrowedFd<'_>> = Vec::new();
        let mut listeners = Vec::with_capacity(offer.listeners.len());
        for (address, sockets) in &offer.listeners {
            listeners.push(json!({"address": address.to_string(), "fds": sockets.len()}));
            fds.extend(sockets.iter().map(|s| s.as_fd()));
        }
        if let Some((_, admin)) = &offer.admin {
            fds.push(admin.as_fd());
        }
        let header = json!({
            "v": PROTOCOL_VERSION,
            "type": "offer",
            "workers": offer.workers,
            "listeners": listeners,
            "admin": offer.admin.as_ref().map(|(a, _)| a.to_string()),
            "health": offer
                .health
                .iter()
                .map(|(c, h, t, ok)| {
                    let mut v = json!({"cluster": c, "host": h.to_string(), "healthy": ok});
                    // Not said (`None`): the key is left out, as an older instance sends it;
                    // `null` is the cluster's own `tls`.
                    if let Some(t) = t {
                        v["transport"] = json!(t);
                    }
                    v
                })
                .collect::<Vec<_>>(),
            "tickets": offer.tickets.iter().map(tickets_json).collect::<Vec<_>>(),
        });
        send_json(stream, &header, &fds)?;
        info!(
            path = %self.path.display(),
            sockets = fds.len(),
            "upgrade: listening sockets sent"
        );
        Ok(())
    }

    fn check_peer(&self, stream: &UnixStream) -> io::Result<()> {
        debug_assert_eq!(self.uid, my_uid());
        check_peer_uid(stream)
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// Sends every migrated connection (`{"type":"connection","address":A,"unread":HEX}` with its
/// socket), then `{"type":"done"}`, then calls `finished`.
fn send_migrations(stream: &UnixStream, m: Migration) {
    let _ = stream.set_write_timeout(Some(Duration::from_secs(10)));
    let mut sent = 0usize;
    for c in m.connections.iter() {
        let mut hex = String::with_capacity(c.unread.len() * 2);
        for b in &c.unread {
            use std::fmt::Write as _;
            let _ = write!(hex, "{b:02x}");
        }
        let msg = json!({
            "v": PROTOCOL_VERSION,
            "type": "connection",
            "address": c.listener.to_string(),
            "unread": hex,
        });
        if let Err(e) = send_json(stream, &msg, &[c.stream.as_fd()]) {
            warn!(error = %e, "upgrade: cannot migrate a connection (it closes)");
            break;
        }
        sent += 1;
    }
    let _ = send_json(stream, &json!({"v": PROTOCOL_VERSION, "type": "done"}), &[]);
    info!(
        connections = sent,
        "upgrade: connections migrated to the new instance"
    );
    (m.finished)();
}

/// One listener's ticket keys in the offer (hex).
fn tickets_json(t: &crate::tls_tickets::ExportedKeys) -> Value {
    use crate::tls_tickets::hex;
    json!({
        "listener": t.listener,
        "keys": t.keys.iter().map(|k| json!({
            "name": hex(&k.name),
            "secret": hex(&k.secret),
            "created": k.created,
        })).collect::<Vec<_>>(),
    })
}

/// The ticket keys of an offer; a listener whose keys do not parse is skipped (it starts new
/// ones), never reported with its content.
fn parse_tickets(v: &Value) -> Vec<crate::tls_tickets::ExportedKeys> {
    use crate::tls_tickets::{ExportedKey, ExportedKeys, unhex};
    let key = |k: &Value| {
        Some(ExportedKey {
            name: unhex(k.get("name")?.as_str()?)?,
            secret: unhex(k.get("secret")?.as_str()?)?,
            created: k.get("created")?.as_u64()?,
        })
    };
    v.get("tickets")
        .and_then(Value::as_array)
        .map(|list| {
            list.iter()
                .filter_map(|t| {
                    Some(ExportedKeys {
                        listener: t.get("listener")?.as_str()?.to_owned(),
                        keys: t
                            .get("keys")?
                            .as_array()?
                            .iter()
                            .map(key)
                            .collect::<Option<Vec<_>>>()?,
                    })
                })
                .collect()
        })
        .unwrap_or_default()
}

fn send_json(stream: &UnixStream, v: &Value, fds: &[BorrowedFd<'_>]) -> io::Result<()> {
    fdpass::send(stream, v.to_string().as_bytes(), fds)
}

fn recv_json(stream: &UnixStream) -> io::Result<(Value, Vec<OwnedFd>)> {
    let (payload, fds) = fdpass::recv(stream)?;
    let v: Value = serde_json::from_slice(&payload)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("bad JSON: {e}")))?;
    Ok((v, fds))
}

/// `Ok` when `v` is a message of this version and type; the reason otherwise.
fn check_message(v: &Value, kind: &str) -> Result<(), String> {
    match v.get("v").and_then(Value::as_u64) {
        Some(PROTOCOL_VERSION) => {}
        Some(other) => {
            return Err(format!(
                "protocol version {other} is not supported (this instance speaks {PROTOCOL_VERSION})"
            ));
        }
        None => return Err("message without a protocol version".into()),
    }
    match v.get("type").and_then(Value::as_str) {
        Some(t) if t == kind => Ok(()),
        other => Err(format!("expected a {kind:?} message, got {other:?}")),
    }
}

/// The sockets a new instance inherited.
#[derive(Debug)]
pub struct Inherited {
    /// How many workers the old instance ran.
    pub workers: usize,
    /// Every listener: its address and the old instance's sockets for it (one per old
    /// worker). Non-blocking, and sharing their flags with the old instance: do not change them.
    pub listeners: Vec<(SocketAddr, Vec<std::net::TcpListener>)>,
    /// The admin listener (TCP or Unix), if the old instance had one.
    pub admin: Option<(AdminAddress, crate::admin::AdminListener)>,
    /// The old instance's health verdicts (see [`HandoverOffer::health`]).
    pub health: Vec<crate::health::HandedVerdict>,
    /// The old instance's session-ticket keys (see [`HandoverOffer::tickets`]).
    pub tickets: Vec<crate::tls_tickets::ExportedKeys>,
}

/// A handover in progress on the new instance's side: it holds the inherited sockets.
#[derive(Debug)]
pub struct Upgrade {
    /// The sockets (take them with `std::mem::take` on the vectors, or move out of the struct).
    pub inherited: Inherited,
    stream: UnixStream,
    machine: NewInstance,
    path: PathBuf,
}

fn phase_str(phase: NewPhase) -> &'static str {
    match phase {
        NewPhase::Requesting => "waiting for the old instance's offer",
        NewPhase::Receiving => "receiving the listening sockets",
        NewPhase::Starting => "starting to serve the inherited sockets",
    }
}

fn failure(path: &Path, f: NewFailure) -> ControlError {
    match f {
        NewFailure::Timeout(p) => ControlError::Timeout(phase_str(p)),
        NewFailure::Closed(p) => ControlError::Protocol(format!(
            "the running instance (control socket {}) closed the connection while {}",
            path.display(),
            phase_str(p)
        )),
        NewFailure::Refused(reason) => ControlError::Refused {
            path: path.to_path_buf(),
            reason,
        },
    }
}

/// Asks the instance listening on `path` for its sockets. Each step (the offer, the sockets)
/// must come within `timeout`. [`ControlError::NoInstance`] when nobody listens at `path`.
/// On success, serve the inherited sockets, then call [`Upgrade::confirm_serving`]; on an error,
/// exit: the old instance keeps serving.
///
/// Before anything is sent, the socket's directory ([`check_dir`]), the socket file (this
/// user's) and the process answering (this user or root, by `SO_PEERCRED`) are checked
/// ([`ControlError::Untrusted`]); every socket received is checked before it is served
/// ([`check_inherited_listener`]): a bad one fails the upgrade (the old instance keeps serving).
pub fn request_upgrade(path: &Path, timeout: Duration) -> Result<Upgrade, ControlError> {
    let untrusted = |reason: String| ControlError::Untrusted {
        path: path.to_path_buf(),
        reason,
    };
    check_dir(path).map_err(|e| untrusted(e.to_string()))?;
    if !check_socket_file(path)? {
        return Err(ControlError::NoInstance(path.to_path_buf()));
    }
    let stream = match UnixStream::connect(path) {
        Ok(s) => s,
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Err(ControlError::NoInstance(path.to_path_buf()));
        }
        Err(e) => return Err(at(path, e)),
    };
    check_peer_uid(&stream).map_err(|e| untrusted(e.to_string()))?;
    stream.set_write_timeout(Some(timeout))?;
    let mut machine = NewInstance::new(crate::now(), timeout);
    loop {
        while let Some(action) = machine.poll_action() {
            match action {
                NewAction::SendRequest => {
                    let request = json!({
                        "v": PROTOCOL_VERSION,
                        "type": "upgrade",
                        "pid": std::process::id(),
                    });
                    if let Err(e) = send_json(&stream, &request, &[]) {
                        debug!(error = %e, "upgrade: cannot send the request");
                        machine.handle_closed(crate::now());
                    }
                }
                NewAction::Fail(f) => return Err(failure(path, f)),
                NewAction::StartServing | NewAction::SendServing | NewAction::Finished { .. } => {
                    unreachable!("not before the offer")
                }
            }
        }
        let now = crate::now();
        let Some(deadline) = machine.poll_timeout() else {
            return Err(ControlError::Protocol("handover ended unexpectedly".into()));
        };
        if now >= deadline {
            machine.handle_timeout(now);
            continue;
        }
        stream.set_read_timeout(Some((deadline - now).max(Duration::from_millis(1))))?;
        match recv_json(&stream) {
            Ok((v, fds)) => match v.get("type").and_then(Value::as_str) {
                Some("refused") => {
                    let reason = v
                        .get("reason")
                        .and_then(Value::as_str)
                        .unwrap_or("no reason given")
                        .to_owned();
                    machine.handle_refused(crate::now(), reason);
                }
                _ => {
                    check_message(&v, "offer").map_err(ControlError::Protocol)?;
                    machine.handle_offer(crate::now());
                    let inherited = parse_offer(&v, fds).map_err(ControlError::Protocol)?;
                    machine.handle_fds(crate::now());
                    match machine.poll_action() {
                        Some(NewAction::StartServing) => {}
                        other => {
                            return Err(ControlError::Protocol(format!(
                                "unexpected handover step {other:?}"
                            )));
                        }
                    }
                    info!(
                        path = %path.display(),
                        listeners = inherited.listeners.len(),
                        workers = inherited.workers,
                        "upgrade: received the listening sockets"
                    );
                    return Ok(Upgrade {
                        inherited,
                        stream,
                        machine,
                        path: path.to_path_buf(),
                    });
                }
            },
            Err(e) if is_timeout(&e) => machine.handle_timeout(crate::now()),
            Err(e) => {
                debug!(error = %e, "upgrade: control connection closed");
                machine.handle_closed(crate::now());
            }
        }
    }
}

fn parse_offer(v: &Value, fds: Vec<OwnedFd>) -> Result<Inherited, String> {
    let workers = v
        .get("workers")
        .and_then(Value::as_u64)
        .ok_or("offer without workers")? as usize;
    let mut fds = fds.into_iter();
    let mut listeners = Vec::new();
    for l in v
        .get("listeners")
        .and_then(Value::as_array)
        .ok_or("offer without listeners")?
    {
        let address: SocketAddr = l
            .get("address")
            .and_then(Value::as_str)
            .and_then(|a| a.parse().ok())
            .ok_or_else(|| format!("offer: bad listener address in {l}"))?;
        let count = l
            .get("fds")
            .and_then(Value::as_u64)
            .ok_or_else(|| format!("offer: no socket count in {l}"))?;
        let mut sockets = Vec::new();
        for _ in 0..count {
            let fd = fds.next().ok_or("offer: fewer sockets than announced")?;
            sockets.push(check_inherited_listener(fd, address)?);
        }
        listeners.push((address, sockets));
    }
    let admin = match v.get("admin") {
        None | Some(Value::Null) => None,
        Some(a) => {
            let address = a
                .as_str()
                .and_then(AdminAddress::parse)
                .ok_or_else(|| format!("offer: bad admin address {a}"))?;
            let fd = fds.next().ok_or("offer: the admin socket is missing")?;
            let listener = check_inherited_admin(fd, &address)?;
            Some((address, listener))
        }
    };
    if fds.next().is_some() {
        return Err("offer: more sockets than announced".into());
    }
    // Optional (an older instance sends none): verdicts that do not parse are skipped.
    let health = v
        .get("health")
        .and_then(Value::as_array)
        .map(|list| {
            list.iter()
                .filter_map(|h| {
                    // Absent: an older instance (the host of that address, if one); null: the
                    // cluster's own `tls`; a name: that entry; anything else: skipped.
                    let transport = match h.get("transport") {
                        None => None,
                        Some(Value::Null) => Some(None),
                        Some(Value::String(name)) => Some(Some(name.clone())),
                        Some(_) => return None,
                    };
                    Some((
                        h.get("cluster")?.as_str()?.to_owned(),
                        h.get("host")?.as_str()?.parse().ok()?,
                        transport,
                        h.get("healthy")?.as_bool()?,
                    ))
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(Inherited {
        workers,
        listeners,
        admin,
        health,
        // Optional too (an older instance sends none: clients then do full handshakes once).
        tickets: parse_tickets(v),
    })
}

impl Upgrade {
    /// Tells the old instance that this one serves the inherited sockets, and waits up to
    /// `timeout` for its acknowledgement (it then stops accepting and drains).
    ///
    /// `Err` only when the handover failed before this instance said it serves (it took longer
    /// than the request's step timeout to get here, or the old instance went away): exit, the
    /// old instance keeps serving. Once `serving` is sent, this instance must keep serving
    /// whatever happens (the old one may already be draining), so a missing acknowledgement is
    /// logged as a warning and gives `Ok`. Afterwards, take over the control socket path with
    /// [`ControlSocket::bind_after_upgrade`].
    pub fn confirm_serving(self, timeout: Duration) -> Result<(), ControlError> {
        self.confirm_serving_with_migrations(timeout).map(|_| ())
    }

    /// [`Upgrade::confirm_serving`], keeping the control connection when the old instance
    /// acknowledged: it then sends the live connections it migrates ([`Migrations`]).
    pub fn confirm_serving_with_migrations(
        mut self,
        timeout: Duration,
    ) -> Result<Option<Migrations>, ControlError> {
        let now = crate::now();
        if self.machine.poll_timeout().is_some_and(|d| now >= d) {
            self.machine.handle_timeout(now);
        } else {
            self.machine.set_timeout(timeout);
            self.machine.handle_started(now);
        }
        loop {
            while let Some(action) = self.machine.poll_action() {
                match action {
                    NewAction::Fail(f) => return Err(failure(&self.path, f)),
                    NewAction::SendServing => {
                        let _ = self.stream.set_write_timeout(Some(timeout));
                        if let Err(e) = send_json(
                            &self.stream,
                            &json!({"v": PROTOCOL_VERSION, "type": "serving"}),
                            &[],
                        ) {
                            debug!(error = %e, "upgrade: cannot send serving");
                            self.machine.handle_closed(crate::now());
                        }
                    }
                    NewAction::Finished { acknowledged: true } => {
                        info!(path = %self.path.display(), "upgrade: the old instance drains");
                        let _ = self.stream.set_read_timeout(None);
                        return Ok(Some(Migrations {
                            stream: self.stream,
                        }));
                    }
                    NewAction::Finished {
                        acknowledged: false,
                    } => {
                        warn!(
                            path = %self.path.display(),
                            "upgrade: the old instance did not acknowledge; this instance \
                             serves, the old one may still be serving too"
                        );
                        return Ok(None);
                    }
                    NewAction::SendRequest | NewAction::StartServing => {}
                }
            }
            let now = crate::now();
            let Some(deadline) = self.machine.poll_timeout() else {
                return Ok(None);
            };
            if now >= deadline {
                self.machine.handle_timeout(now);
                continue;
            }
            self.stream
                .set_read_timeout(Some((deadline - now).max(Duration::from_millis(1))))?;
            match recv_json(&self.stream) {
                Ok((v, _)) if check_message(&v, "draining").is_ok() => {
                    self.machine.handle_ack(crate::now());
                }
                Ok((v, _)) => {
                    warn!(message = %v, "upgrade: unexpected message");
                    self.machine.handle_closed(crate::now());
                }
                Err(e) if is_timeout(&e) => self.machine.handle_timeout(crate::now()),
                Err(_) => self.machine.handle_closed(crate::now()),
            }
        }
    }
}

/// The new instance's side of connection migration: the connections the old instance moves
/// over, until it is done.
pub struct Migrations {
    stream: UnixStream,
}

impl Migrations {
    /// The next migrated connection; `Ok(None)` when the old instance is done (or gone).
    ///
    /// A descriptor that is not a connected TCP stream socket is closed and skipped (with a
    /// warning): the next one is read.
    pub fn next(&self) -> io::Result<Option<Migrated>> {
        loop {
            match self.next_message()? {
                Next::Done => return Ok(None),
                Next::Connection(m) => return Ok(Some(m)),
                Next::Skipped(why) => warn!("upgrade: refusing a migrated descriptor: {why}"),
            }
        }
    }

    fn next_message(&self) -> io::Result<Next> {
        let (v, mut fds) = match recv_json(&self.stream) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(Next::Done),
            Err(e) => return Err(e),
        };
        if check_message(&v, "done").is_ok() {
            return Ok(Next::Done);
        }
        check_message(&v, "connection")
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        let bad =
            |what: &str| io::Error::new(io::ErrorKind::InvalidData, format!("migration: {what}"));
        let listener = v
            .get("address")
            .and_then(Value::as_str)
            .and_then(|a| a.parse().ok())
            .ok_or_else(|| bad("no listener address"))?;
        let hex = v.get("unread").and_then(Value::as_str).unwrap_or("");
        if hex.len() % 2 != 0 {
            return Err(bad("odd unread length"));
        }
        let unread = (0..hex.len())
            .step_by(2)
            .map(|k| u8::from_str_radix(&hex[k..k + 2], 16))
            .collect::<Result<Vec<u8>, _>>()
            .map_err(|_| bad("unread is not hex"))?;
        if fds.len() != 1 {
            return Err(bad("one socket per connection expected"));
        }
        let stream = fds.remove(0);
        if let Err(why) = check_migrated(&stream) {
            return Ok(Next::Skipped(why));
        }
        Ok(Next::Connection(Migrated {
            listener,
            stream,
            unread,
        }))
    }
}

/// One message of the migration stream.
enum Next {
    Done,
    Connection(Migrated),
    Skipped(String),
}

/// A migrated connection must be a connected TCP stream socket.
fn check_migrated(fd: &OwnedFd) -> Result<(), String> {
    let sock = socket2::SockRef::from(fd);
    let ty = sock.r#type().map_err(|e| format!("not a socket ({e})"))?;
    let domain = sock.domain().map_err(|e| format!("not a socket ({e})"))?;
    if ty != socket2::Type::STREAM
        || (domain != socket2::Domain::IPV4 && domain != socket2::Domain::IPV6)
    {
        return Err(format!("not a TCP socket ({domain:?}, {ty:?})"));
    }
    if sock.is_listener().unwrap_or(true) {
        return Err("a listening socket, not a connection".into());
    }
    sock.peer_addr()
        .map(|_| ())
        .map_err(|e| format!("not a connected socket ({e})"))
}

#[cfg(test)]
mod tests {
    use std::net::{TcpListener, TcpStream};
    use std::sync::atomic::AtomicUsize;
    use std::sync::mpsc;

    use super::*;
    use std::time::Instant;

    const T: Duration = Duration::from_millis(500);

    /// A private directory (0700) for this test process's sockets.
    fn temp_dir() -> PathBuf {
        use std::os::unix::fs::DirBuilderExt as _;
        let d = std::env::temp_dir().join(format!("sluice-control-test-{}", std::process::id()));
        let _ = std::fs::DirBuilder::new().mode(0o700).create(&d);
        d
    }

    /// Health verdicts survive the hand-over as sent: a named pick, `null` (the cluster's own
    /// `tls`) and a pick not said (an older instance's form: the key left out) each parse back
    /// to what was offered.
    #[test]
    fn handed_verdicts_parse_back_as_offered() {
        let path = temp_path("verdicts");
        let listener = crate::net::bind_reuseport("127.0.0.1:0".parse().unwrap(), 16).unwrap();
        let address = listener.local_addr().unwrap();
        let host: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let verdicts = vec![
            ("a".to_owned(), host, Some(Some("mtls".to_owned())), true),
            ("b".to_owned(), host, Some(None), false),
            ("c".to_owned(), host, None, true),
        ];
        let offered = verdicts.clone();
        ControlSocket::bind(&path)
            .unwrap()
            .serve(
                move || {
                    Ok(HandoverOffer {
                        health: offered.clone(),
                        tickets: Vec::new(),
                        workers: 1,
                        listeners: vec![(address, vec![OwnedFd::from(listener.try_clone()?)])],
                        admin: None,
                    })
                },
                move || None,
                T,
            )
            .unwrap();
        let upgrade = request_upgrade(&path, T).unwrap();
        assert_eq!(upgrade.inherited.health, verdicts);
        let _ = std::fs::remove_file(&path);
    }

    fn temp_path(name: &str) -> PathBuf {
        static N: AtomicU64 = AtomicU64::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let p = temp_dir().join(format!("{name}-{n}.sock"));
        let _ = std::fs::remove_file(&p);
        p
    }

    fn is_root() -> bool {
        my_uid() == 0
    }

    fn chown(path: &Path, uid: u32) {
        std::os::unix::fs::lchown(path, Some(uid), Some(uid)).unwrap();
    }

    #[test]
    fn inherited_sockets_other_than_nonblocking_tcp_listeners_are_refused() {
        use std::os::unix::net::UnixListener;
        let good = crate::net::bind_reuseport("127.0.0.1:0".parse().unwrap(), 16).unwrap();
        let address = good.local_addr().unwrap();
        let check = |fd: OwnedFd| {
            check_inherited_listener(fd, address)
                .map(|_| ())
                .unwrap_err()
        };

        let (read, _write) = std::io::pipe().unwrap();
        let e = check(OwnedFd::from(read));
        assert_eq!(
            e,
            format!("the socket offered for {address} is not a socket")
        );

        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let e = check(OwnedFd::from(udp));
        assert!(e.contains("is not a stream socket"), "{e}");

        let client = TcpStream::connect(address).unwrap();
        let e = check(OwnedFd::from(client));
        assert!(e.contains("is not listening"), "{e}");

        let blocking = TcpListener::bind("127.0.0.1:0").unwrap();
        let e = check_inherited_listener(
            OwnedFd::from(blocking.try_clone().unwrap()),
            blocking.local_addr().unwrap(),
        )
        .map(|_| ())
        .unwrap_err();
        assert!(
            e.contains("is blocking (a worker would hang in accept)"),
            "{e}"
        );

        let elsewhere = crate::net::bind_reuseport("127.0.0.1:0".parse().unwrap(), 16).unwrap();
        let other = elsewhere.local_addr().unwrap();
        let e = check(OwnedFd::from(elsewhere));
        assert_eq!(
            e,
            format!("the socket offered for {address} is bound to {other}")
        );

        let unix_path = temp_path("not-tcp");
        let unix = UnixListener::bind(&unix_path).unwrap();
        unix.set_nonblocking(true).unwrap();
        let e = check(OwnedFd::from(unix));
        assert!(e.contains("is not a TCP socket"), "{e}");
        let _ = std::fs::remove_file(&unix_path);

        // The real thing passes, and still accepts.
        let ok =
            check_inherited_listener(OwnedFd::from(good.try_clone().unwrap()), address).unwrap();
        assert!(accepted_by(address, std::slice::from_ref(&ok)));
    }

    #[test]
    fn migrated_descriptors_other_than_tcp_connections_are_refused() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        assert_eq!(check_migrated(&OwnedFd::from(client)), Ok(()));
        let (read, _write) = std::io::pipe().unwrap();
        assert!(
            check_migrated(&OwnedFd::from(read))
                .unwrap_err()
                .starts_with("not a socket")
        );
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        assert!(
            check_migrated(&OwnedFd::from(udp))
                .unwrap_err()
                .starts_with("not a TCP socket")
        );
        assert_eq!(
            check_migrated(&OwnedFd::from(listener)).unwrap_err(),
            "a listening socket, not a connection"
        );
    }

    #[test]
    fn a_bad_socket_in_the_offer_aborts_the_upgrade_and_the_old_keeps_serving() {
        let path = temp_path("bad-offer");
        let good = crate::net::bind_reuseport("127.0.0.1:0".parse().unwrap(), 16).unwrap();
        let address = good.local_addr().unwrap();
        let taken = Arc::new(AtomicUsize::new(0));
        let counter = taken.clone();
        let offered_udp = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let flag = offered_udp.clone();
        let copy = good.try_clone().unwrap();
        ControlSocket::bind(&path)
            .unwrap()
            .serve(
                move || {
                    // First a UDP socket where a TCP listener is announced, then the real one.
                    let fd = if flag.swap(false, Ordering::SeqCst) {
                        OwnedFd::from(std::net::UdpSocket::bind("127.0.0.1:0")?)
                    } else {
                        OwnedFd::from(copy.try_clone()?)
                    };
                    Ok(HandoverOffer {
                        health: Vec::new(),
                        tickets: Vec::new(),
                        workers: 1,
                        listeners: vec![(address, vec![fd])],
                        admin: None,
                    })
                },
                move || {
                    counter.fetch_add(1, Ordering::SeqCst);
                    None
                },
                T,
            )
            .unwrap();
        match request_upgrade(&path, T) {
            Err(ControlError::Protocol(m)) => {
                assert!(
                    m.contains(&format!(
                        "the socket offered for {address} is not a stream socket"
                    )),
                    "{m}"
                );
            }
            other => panic!("expected a refused socket, got {other:?}"),
        }
        // The old instance rolled back: it serves its socket and hands it over on a later
        // request, once it has seen the close.
        assert!(accepted_by(address, std::slice::from_ref(&good)));
        assert_eq!(taken.load(Ordering::SeqCst), 0);
        let until = Instant::now() + Duration::from_secs(2);
        let upgrade = loop {
            match request_upgrade(&path, T) {
                Ok(u) => break u,
                Err(ControlError::Refused { reason, .. })
                    if reason.contains("in progress") && Instant::now() < until =>
                {
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(e) => panic!("{e}"),
            }
        };
        assert_eq!(upgrade.inherited.listeners[0].0, address);
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn refuses_a_socket_or_directory_of_another_user() {
        if !is_root() {
            eprintln!("skipped: needs root to make files of another user");
            return;
        }
        const NOBODY: u32 = 65534;
        // A directory owned by another user.
        let dir = temp_dir().join("nobody-dir");
        std::fs::create_dir_all(&dir).unwrap();
        chown(&dir, NOBODY);
        let e = ControlSocket::bind(&dir.join("c.sock"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("is owned by uid 65534"), "{e}");
        let e = request_upgrade(&dir.join("c.sock"), T)
            .unwrap_err()
            .to_string();
        assert!(e.contains("is owned by uid 65534"), "{e}");
        // A symlink of another user in the directory's place, pointing at a directory that
        // would pass (ours): its owner could re-point it at any time.
        let ours = temp_dir().join("ours-dir");
        std::fs::create_dir_all(&ours).unwrap();
        std::fs::set_permissions(&ours, std::fs::Permissions::from_mode(0o700)).unwrap();
        let link = temp_dir().join("nobody-link");
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&ours, &link).unwrap();
        std::os::unix::fs::lchown(&link, Some(NOBODY), Some(NOBODY)).unwrap();
        let e = ControlSocket::bind(&link.join("c.sock"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("is a symlink owned by uid 65534"), "{e}");
        // A directory others can write (sticky like /tmp, or not).
        for mode in [0o1777, 0o777, 0o770] {
            let dir = temp_dir().join(format!("open-{mode:o}"));
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode)).unwrap();
            let e = ControlSocket::bind(&dir.join("c.sock"))
                .unwrap_err()
                .to_string();
            assert!(e.contains("is writable by other users"), "{mode:o}: {e}");
        }
        // A socket file another user created first (a squatter): never connected to, never
        // removed, for `run` and `run --upgrade` alike.
        let path = temp_path("squatted");
        let squatter = UnixListener::bind(&path).unwrap();
        chown(&path, NOBODY);
        match ControlSocket::bind(&path) {
            Err(e @ ControlError::Untrusted { .. }) => {
                assert!(e.to_string().contains("owned by uid 65534"), "{e}");
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
        match request_upgrade(&path, T) {
            Err(e @ ControlError::Untrusted { .. }) => {
                assert!(e.to_string().contains("owned by uid 65534"), "{e}");
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
        squatter.set_nonblocking(true).unwrap();
        assert!(
            squatter.accept().is_err(),
            "nobody connected to the squatter"
        );
        assert!(path.exists());
        let _ = std::fs::remove_file(&path);
        // A missing default-like directory is created private.
        let fresh = temp_dir().join("fresh");
        let _ = std::fs::remove_dir(&fresh);
        let c = ControlSocket::bind(&fresh.join("c.sock")).unwrap();
        assert_eq!(std::fs::metadata(&fresh).unwrap().mode() & 0o777, 0o700);
        drop(c);
    }

    #[test]
    fn the_new_instance_refuses_a_peer_of_another_user() {
        if !is_root() {
            eprintln!("skipped: needs root to run a process as another user");
            return;
        }
        // A squatter running as `nobody` listens on a socket that ends up in our private
        // directory, owned by us (as if the file checks had been passed): the peer check
        // still refuses it before sending anything.
        let path = temp_path("peer");
        let nobody_dir = std::env::temp_dir().join(format!("sluice-peer-{}", std::process::id()));
        std::fs::create_dir_all(&nobody_dir).unwrap();
        chown(&nobody_dir, 65534);
        let theirs = nobody_dir.join("s.sock");
        let mut child = std::process::Command::new("setpriv")
            .args([
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "/usr/bin/python3",
                "-c",
            ])
            .arg(
                "import socket,sys,time\n\
                 s=socket.socket(socket.AF_UNIX)\ns.bind(sys.argv[1])\ns.listen()\n\
                 print('ready',flush=True)\nc,_=s.accept()\nc.settimeout(5)\n\
                 print('got',len(c.recv(1000)),flush=True)\ntime.sleep(5)\n",
            )
            .arg(&theirs)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        std::io::BufRead::read_line(&mut out, &mut line).unwrap();
        assert_eq!(line, "ready\n");
        std::fs::rename(&theirs, &path).unwrap();
        chown(&path, 0);
        let e = request_upgrade(&path, T).unwrap_err();
        assert!(matches!(e, ControlError::Untrusted { .. }), "{e:?}");
        assert!(e.to_string().contains("runs as uid 65534"), "{e}");
        // It was told nothing.
        line.clear();
        std::io::BufRead::read_line(&mut out, &mut line).unwrap();
        assert_eq!(line, "got 0\n");
        let _ = child.kill();
        let _ = child.wait();
        let _ = std::fs::remove_file(&path);
        let _ = std::fs::remove_dir_all(&nobody_dir);
    }

    /// An "old instance": 2 listeners x 2 workers (SO_REUSEPORT) and an admin socket, serving
    /// its control socket. Returns the listener addresses, the admin address, and the count of
    /// `on_taken_over` calls with a channel that ticks on each.
    struct Old {
        addresses: Vec<SocketAddr>,
        admin: SocketAddr,
        taken_over: Arc<AtomicUsize>,
        taken_rx: mpsc::Receiver<()>,
    }

    fn start_old(path: &Path, timeout: Duration) -> Old {
        let mut sockets: Vec<(SocketAddr, Vec<TcpListener>)> = Vec::new();
        for _ in 0..2 {
            let first = crate::net::bind_reuseport("127.0.0.1:0".parse().unwrap(), 64).unwrap();
            let address = first.local_addr().unwrap();
            let second = crate::net::bind_reuseport(address, 64).unwrap();
            sockets.push((address, vec![first, second]));
        }
        let admin = TcpListener::bind("127.0.0.1:0").unwrap();
        admin.set_nonblocking(true).unwrap();
        let admin_address = admin.local_addr().unwrap();
        let addresses = sockets.iter().map(|(a, _)| *a).collect();
        let taken_over = Arc::new(AtomicUsize::new(0));
        let (tx, taken_rx) = mpsc::channel();
        let counter = taken_over.clone();
        let control = ControlSocket::bind(path).unwrap();
        control
            .serve(
                move || {
                    Ok(HandoverOffer {
                        health: Vec::new(),
                        tickets: Vec::new(),
                        workers: 2,
                        listeners: sockets
                            .iter()
                            .map(|(a, ls)| {
                                let fds = ls
                                    .iter()
                                    .map(|l| OwnedFd::from(l.try_clone().unwrap()))
                                    .collect();
                                (*a, fds)
                            })
                            .collect(),
                        admin: Some((
                            AdminAddress::Tcp(admin_address),
                            OwnedFd::from(admin.try_clone()?),
                        )),
                    })
                },
                move || {
                    counter.fetch_add(1, Ordering::SeqCst);
                    let _ = tx.send(());
                    None
                },
                timeout,
            )
            .unwrap();
        Old {
            addresses,
            admin: admin_address,
            taken_over,
            taken_rx,
        }
    }

    /// Connects to `address` and accepts the connection on one of `sockets` (non-blocking).
    fn accepted_by(address: SocketAddr, sockets: &[TcpListener]) -> bool {
        let _client = TcpStream::connect(address).unwrap();
        let until = Instant::now() + Duration::from_secs(2);
        while Instant::now() < until {
            for s in sockets {
                s.set_nonblocking(true).unwrap();
                if s.accept().is_ok() {
                    return true;
                }
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        false
    }

    #[test]
    fn hands_over_listeners_and_admin() {
        let path = temp_path("handover");
        let old = start_old(&path, T);
        let upgrade = request_upgrade(&path, T).unwrap();
        let inherited = &upgrade.inherited;
        assert_eq!(inherited.workers, 2);
        assert_eq!(
            inherited
                .listeners
                .iter()
                .map(|(a, _)| *a)
                .collect::<Vec<_>>(),
            old.addresses
        );
        for (address, sockets) in &inherited.listeners {
            assert_eq!(sockets.len(), 2);
            for s in sockets {
                assert_eq!(s.local_addr().unwrap(), *address);
            }
            for _ in 0..4 {
                assert!(accepted_by(*address, sockets), "{address}");
            }
        }
        let (admin_address, admin) = inherited.admin.as_ref().unwrap();
        assert_eq!(*admin_address, AdminAddress::Tcp(old.admin));
        let crate::admin::AdminListener::Tcp(admin) = admin else {
            panic!("not TCP: {admin:?}")
        };
        assert!(accepted_by(old.admin, std::slice::from_ref(admin)));
        assert_eq!(
            old.taken_over.load(Ordering::SeqCst),
            0,
            "not before serving"
        );

        upgrade.confirm_serving(T).unwrap();
        old.taken_rx.recv_timeout(T).unwrap();
        // A later request is refused: the old instance is draining.
        match request_upgrade(&path, T) {
            Err(ControlError::Refused { reason, .. }) => {
                assert!(reason.contains("draining"), "{reason}");
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
        assert_eq!(old.taken_over.load(Ordering::SeqCst), 1);
        // The new instance takes the path over.
        let _mine = ControlSocket::bind_after_upgrade(&path).unwrap();
        assert!(matches!(
            ControlSocket::bind(&path),
            Err(ControlError::AlreadyRunning(_))
        ));
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn rolls_back_when_the_new_instance_dies_then_serves_a_second_request() {
        let path = temp_path("rollback");
        let old = start_old(&path, T);
        let upgrade = request_upgrade(&path, T).unwrap();
        drop(upgrade); // the new instance dies before it serves
        // The old serves the next request once it has seen the close (retry while it has not).
        let until = Instant::now() + Duration::from_secs(2);
        let upgrade = loop {
            match request_upgrade(&path, T) {
                Ok(u) => break u,
                Err(ControlError::Refused { reason, .. })
                    if reason.contains("in progress") && Instant::now() < until =>
                {
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(e) => panic!("{e}"),
            }
        };
        assert_eq!(old.taken_over.load(Ordering::SeqCst), 0);
        upgrade.confirm_serving(T).unwrap();
        old.taken_rx.recv_timeout(T).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(old.taken_over.load(Ordering::SeqCst), 1);
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn rolls_back_on_timeout_and_a_late_serving_changes_nothing() {
        let path = temp_path("timeout");
        let old = start_old(&path, Duration::from_millis(150));
        let upgrade = request_upgrade(&path, Duration::from_secs(5)).unwrap();
        std::thread::sleep(Duration::from_millis(400));
        // The old rolled back and closed: no acknowledgement, but this side keeps serving.
        upgrade.confirm_serving(T).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(old.taken_over.load(Ordering::SeqCst), 0);
        // And the old serves a new request.
        let upgrade = request_upgrade(&path, T).unwrap();
        upgrade.confirm_serving(T).unwrap();
        old.taken_rx.recv_timeout(T).unwrap();
        assert_eq!(old.taken_over.load(Ordering::SeqCst), 1);
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn refuses_a_second_upgrade_during_a_handover() {
        let path = temp_path("concurrent");
        let old = start_old(&path, T);
        let first = request_upgrade(&path, T).unwrap();
        match request_upgrade(&path, T) {
            Err(ControlError::Refused { reason, .. }) => {
                assert!(reason.contains("in progress"), "{reason}");
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
        first.confirm_serving(T).unwrap();
        old.taken_rx.recv_timeout(T).unwrap();
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn the_new_instance_fails_when_it_starts_too_slowly() {
        let path = temp_path("slow");
        let old = start_old(&path, Duration::from_secs(5));
        let upgrade = request_upgrade(&path, Duration::from_millis(100)).unwrap();
        std::thread::sleep(Duration::from_millis(200));
        assert!(matches!(
            upgrade.confirm_serving(T),
            Err(ControlError::Timeout(_))
        ));
        // The old saw the close and rolled back.
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(old.taken_over.load(Ordering::SeqCst), 0);
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn refuses_another_protocol_version() {
        let path = temp_path("version");
        let _old = start_old(&path, T);
        let stream = UnixStream::connect(&path).unwrap();
        stream.set_read_timeout(Some(T)).unwrap();
        send_json(&stream, &json!({"v": 99, "type": "upgrade"}), &[]).unwrap();
        let (v, fds) = recv_json(&stream).unwrap();
        assert_eq!(v["type"], "refused");
        assert!(v["reason"].as_str().unwrap().contains("version 99"), "{v}");
        assert!(fds.is_empty());
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn already_running_when_a_live_instance_answers() {
        let path = temp_path("live");
        let _live = ControlSocket::bind(&path).unwrap();
        let e = ControlSocket::bind(&path).unwrap_err();
        assert!(matches!(e, ControlError::AlreadyRunning(_)));
        assert!(e.to_string().contains(&path.display().to_string()), "{e}");
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn a_stale_socket_file_is_replaced_and_other_files_are_not() {
        let path = temp_path("stale");
        drop(UnixListener::bind(&path).unwrap());
        assert!(path.exists());
        assert!(matches!(
            request_upgrade(&path, T),
            Err(ControlError::NoInstance(_))
        ));
        let control = ControlSocket::bind(&path).unwrap();
        assert_eq!(control.path(), path);
        assert!(UnixStream::connect(&path).is_ok());
        drop(control);
        std::fs::remove_file(&path).unwrap();

        std::fs::write(&path, b"not a socket").unwrap();
        assert!(matches!(
            ControlSocket::bind(&path),
            Err(ControlError::Io(_))
        ));
        assert_eq!(std::fs::read(&path).unwrap(), b"not a socket");
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn no_instance_when_nobody_listens() {
        let path = temp_path("nobody");
        let e = request_upgrade(&path, T).unwrap_err();
        assert!(matches!(e, ControlError::NoInstance(_)), "{e:?}");
        assert!(e.to_string().contains(&path.display().to_string()), "{e}");
    }

    #[test]
    fn default_path_is_stable_per_config_file() {
        let a = default_path(Path::new("/etc/sluice/a.yaml"));
        assert_eq!(a, default_path(Path::new("/etc/sluice/a.yaml")));
        assert_ne!(a, default_path(Path::new("/etc/sluice/b.yaml")));
        let name = a.file_name().unwrap().to_str().unwrap();
        assert!(
            name.starts_with("sluice-") && name.ends_with(".sock"),
            "{name}"
        );
        assert_eq!(name.len(), "sluice-".len() + 16 + ".sock".len());
    }
}
