//! Process-wide caps shared by every worker: downstream connections (per listener and in
//! total), splice pipes, and the bytes Bolt connections hold in partial frames.
//!
//! Workers share nothing on the data path except these few atomics, touched once per accepted
//! and closed connection (a relaxed `fetch_add` / `fetch_sub`), once per pipe made or closed,
//! and once per growth or release of a Bolt read buffer beyond its first chunk — never per
//! request or chunk.
//!
//! - **Connections** (HAProxy's `maxconn`, Envoy's `max_connections` / downstream connections
//!   resource monitor): a connection over the listener's `max_connections` or the process's
//!   `limits.max_connections` is accepted and closed at once, and counted
//!   (`downstream_cx_overflow`). Without `limits.max_connections`, the process limit is derived
//!   from the open-file limit, whose soft value `sluice run` first raises to the hard one
//!   ([`raise_open_file_limit`]): `(RLIMIT_NOFILE − 64) / 2` — every downstream connection may need
//!   an upstream one, and 64 descriptors stay for the admin API, listeners, health checks and
//!   log files — so that downstream connections can never exhaust the descriptors the admin API
//!   needs to answer. A config with a splicing `tcp_proxy` (any listener or filter chain with
//!   `splice` on, the default) derives `(RLIMIT_NOFILE − 64) × 2 / 5` instead: two descriptors
//!   per connection plus its quarter share of the pipe budget below (a pipe is two descriptors),
//!   HAProxy's `maxconn × 2 + maxpipes × 2` with its default `maxpipes = maxconn / 4`.
//! - **Splice pipes** (HAProxy's `maxpipes`): at most [`ProcessLimits::pipes_max`] pipes are
//!   open at once, all workers together — a quarter of the derived connection limit, or, with an
//!   explicit `limits.max_connections`, as many as the open-file limit leaves beyond two
//!   descriptors per connection — so pipes never take the descriptors admitted connections need.
//!   A pipe counts from the moment it is made until it is closed, whether a session is moving
//!   bytes through it or it waits, empty, in a worker's pool ([`crate::splice::PipePool`]); a
//!   spliced session takes one only while bytes sit in it, so an idle spliced session costs its
//!   two sockets. A chunk that finds no pipe (the budget spent) is copied instead, counted as
//!   `tcp_relay_chunks_copied`. Only a pipe made or closed writes the shared count; a chunk that
//!   reuses a pooled pipe does not touch it, and one that finds the budget spent only reads it.
//! - **Bolt partial frames** (Envoy's per-connection buffer limits plus its overload manager's
//!   heap budget): each downstream Bolt connection's read buffer grows up to the listener's
//!   `max_frame_size` for a large frame; the bytes beyond the first chunk are reserved from
//!   `limits.bolt_partial_frame_bytes` before the buffer grows, and given back when the buffer
//!   shrinks once the frame is done. A connection whose growth would exceed the budget is
//!   closed and counted (`bolt.partial_frame_overflow`).
//!
//! Counters per listener follow a reload by address (a listener keeping its address keeps its
//! count, so connections of the previous generation still count against the limit).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use sluice_core::config::{Config, ListenerFilter};

/// Descriptors kept out of the derived connection limit (admin API, listening sockets, health
/// checks, log files).
pub const RESERVED_FDS: u64 = 64;

/// The caps and the counts, shared by a process's workers (and across config generations).
#[derive(Debug)]
pub struct ProcessLimits {
    open: AtomicU64,
    /// The most connections open at once since [`ProcessLimits::take_peak`] last reset it.
    peak: AtomicU64,
    max: AtomicU64,
    bolt_held: AtomicUsize,
    bolt_max: AtomicUsize,
    /// Splice pipes open now (in use or pooled, all workers), and how many may be at once.
    pipes_open: AtomicUsize,
    pipes_max: AtomicUsize,
    listeners: Mutex<Vec<(SocketAddr, Arc<AtomicU64>)>>,
}

/// One open pipe's share of the pipe budget ([`ProcessLimits::hold_pipe`]), given back when
/// it drops (with the pipe it belongs to, however that is closed).
#[derive(Debug)]
pub struct PipeHeld(Arc<ProcessLimits>);

impl Drop for PipeHeld {
    fn drop(&mut self) {
        self.0.pipes_open.fetch_sub(1, Relaxed);
    }
}

/// Why a connection was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Overflow {
    /// The listener's `max_connections`.
    Listener,
    /// The process's `limits.max_connections`.
    Process,
}

/// The process-wide connection limit `config` asks for, or the one derived from the open-file
/// limit.
#[must_use]
pub fn max_connections(config: &Config) -> u64 {
    config
        .limits
        .max_connections
        .unwrap_or_else(|| derived_max(open_file_limit(), splices(config)))
}

/// How many splice pipes may be open at once under `config` (see the module doc).
#[must_use]
pub fn max_pipes(config: &Config) -> usize {
    pipe_budget(
        open_file_limit(),
        config.limits.max_connections,
        splices(config),
    )
}

/// [`max_pipes`] for an open-file limit `fds` and an explicit connection limit: a quarter of
/// the derived connection limit, or what an explicit one leaves (two descriptors a pipe).
fn pipe_budget(fds: Option<u64>, max_connections: Option<u64>, splices: bool) -> usize {
    if !splices {
        return 0;
    }
    let Some(fds) = fds else {
        return usize::MAX;
    };
    let pipes = match max_connections {
        None => derived_max(Some(fds), true) / 4,
        Some(max) => fds.saturating_sub(RESERVED_FDS.saturating_add(max.saturating_mul(2))) / 2,
    };
    usize::try_from(pipes).unwrap_or(usize::MAX)
}

/// Whether any `tcp_proxy` of `config` (a listener's or a filter chain's) may splice: `splice`
/// on and no TLS terminated there (those sessions always copy).
fn splices(config: &Config) -> bool {
    let splicing = |f: &ListenerFilter, tls: bool| {
        !tls && matches!(f, ListenerFilter::TcpProxy(t) if t.splice)
    };
    config.listeners.iter().any(|l| {
        splicing(&l.filter, l.tls.is_some())
            || l.filter_chains
                .iter()
                .any(|c| splicing(&c.filter, c.tls.is_some()))
    })
}

/// Logs a warning when `config` would splice but the budget leaves no room for pipes (an
/// explicit `limits.max_connections` near half the open-file limit): every session copies.
pub fn warn_if_splice_is_off(config: &Config, limits: &ProcessLimits) {
    if splices(config) && limits.pipes_max() == 0 {
        tracing::warn!(
            max_connections = limits.max(),
            "no tcp_proxy session will splice: limits.max_connections leaves no open files \
             for pipes (two descriptors each, beyond two per connection); sessions copy"
        );
    }
}

/// The soft open-file limit (`None` when it cannot be read).
fn open_file_limit() -> Option<u64> {
    nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .ok()
        .map(|(soft, _)| soft)
}

/// Raises the soft open-file limit to the hard one (as Go's runtime and HAProxy do): the usual
/// soft default of 1024 would otherwise cap the derived connection limit at 480, a poor default
/// for a proxy in front of every service. Returns `(before, after)`; `None` when the limit
/// cannot be read or raised (the soft limit then stays, and the derived limit follows it).
pub fn raise_open_file_limit() -> Option<(u64, u64)> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).ok()?;
    // An unlimited hard limit is not a number the kernel accepts for the soft one
    // (fs.nr_open caps it): keep to a large, always-accepted value then.
    let target = hard.min(1 << 20);
    if target <= soft {
        return Some((soft, soft));
    }
    setrlimit(Resource::RLIMIT_NOFILE, target, hard).ok()?;
    Some((soft, target))
}

/// `(RLIMIT_NOFILE − RESERVED_FDS) / 2` — `× 2 / 5` when sessions may splice: two descriptors
/// per connection and a quarter pipe (two descriptors) — at least 1 (unlimited when the limit
/// cannot be read).
fn derived_max(fds: Option<u64>, splices: bool) -> u64 {
    fds.map_or(u64::MAX, |soft| {
        let usable = soft.saturating_sub(RESERVED_FDS);
        let max = if splices {
            usable / 5 * 2 + usable % 5 * 2 / 5
        } else {
            usable / 2
        };
        max.max(1)
    })
}

impl ProcessLimits {
    /// Limits as `config` sets them, nothing counted yet.
    #[must_use]
    pub fn new(config: &Config) -> Self {
        let limits = ProcessLimits {
            open: AtomicU64::new(0),
            peak: AtomicU64::new(0),
            max: AtomicU64::new(0),
            bolt_held: AtomicUsize::new(0),
            bolt_max: AtomicUsize::new(0),
            pipes_open: AtomicUsize::new(0),
            pipes_max: AtomicUsize::new(0),
            listeners: Mutex::new(Vec::new()),
        };
        limits.apply(config);
        limits
    }

    /// Takes the caps of `config` (at startup and on a reload; the counts carry on).
    pub fn apply(&self, config: &Config) {
        self.max.store(max_connections(config), Relaxed);
        self.bolt_max
            .store(config.limits.bolt_partial_frame_bytes, Relaxed);
        self.pipes_max.store(max_pipes(config), Relaxed);
    }

    /// How many splice pipes may be open at once.
    #[must_use]
    pub fn pipes_max(&self) -> usize {
        self.pipes_max.load(Relaxed)
    }

    /// Reserves one pipe from the budget before it is made, given back when the guard drops
    /// (kept with the pipe until it is closed); `None` (nothing reserved): the budget is spent.
    pub fn hold_pipe(self: &Arc<Self>) -> Option<PipeHeld> {
        let max = self.pipes_max.load(Relaxed);
        // A spent budget is seen with a load: the chunks of sessions that find no pipe then
        // write nothing shared (the count changes only when a pipe is made or closed).
        if self.pipes_open.load(Relaxed) >= max {
            return None;
        }
        if self.pipes_open.fetch_add(1, Relaxed) >= max {
            self.pipes_open.fetch_sub(1, Relaxed);
            return None;
        }
        Some(PipeHeld(self.clone()))
    }

    /// Sets the pipe budget (tests: a budget spent or tight mid-session).
    #[cfg(test)]
    pub(crate) fn set_pipes_max(&self, max: usize) {
        self.pipes_max.store(max, Relaxed);
    }

    /// Splice pipes open now (in use or pooled, all workers).
    #[must_use]
    pub fn pipes_open(&self) -> usize {
        self.pipes_open.load(Relaxed)
    }

    /// The process-wide connection limit in force.
    #[must_use]
    pub fn max(&self) -> u64 {
        self.max.load(Relaxed)
    }

    /// Downstream connections open now (all workers).
    #[must_use]
    pub fn open(&self) -> u64 {
        self.open.load(Relaxed)
    }

    /// The most connections that were open at once since the last call, which restarts the
    /// count from the connections open now ([`crate::memtrim`]: a storm that closed).
    pub fn take_peak(&self) -> u64 {
        self.peak.swap(self.open(), Relaxed)
    }

    /// Bytes Bolt connections hold in partial frames now.
    #[must_use]
    pub fn bolt_held(&self) -> usize {
        self.bolt_held.load(Relaxed)
    }

    /// The count of the listener at `address` (the same counter for every generation that has
    /// a listener there).
    pub fn listener_counter(&self, address: SocketAddr) -> Arc<AtomicU64> {
        let mut all = self
            .listeners
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Forget the counters of addresses no generation uses any more.
        all.retain(|(_, c)| Arc::strong_count(c) > 1);
        if let Some((_, c)) = all.iter().find(|(a, _)| *a == address) {
            return c.clone();
        }
        let c = Arc::new(AtomicU64::new(0));
        all.push((address, c.clone()));
        c
    }

    /// Counts a new connection on `listener` (whose limit is `listener_max`) in, or refuses it.
    /// An admitted connection must be given back with [`ProcessLimits::release`].
    pub fn admit(&self, listener: &AtomicU64, listener_max: Option<u64>) -> Result<(), Overflow> {
        if let Some(max) = listener_max
            && listener.fetch_add(1, Relaxed) >= max
        {
            listener.fetch_sub(1, Relaxed);
            return Err(Overflow::Listener);
        }
        let before = self.open.fetch_add(1, Relaxed);
        if before >= self.max.load(Relaxed) {
            self.open.fetch_sub(1, Relaxed);
            if listener_max.is_some() {
                listener.fetch_sub(1, Relaxed);
            }
            return Err(Overflow::Process);
        }
        // A shared write only when a new high is reached (a plain load otherwise).
        if before + 1 > self.peak.load(Relaxed) {
            self.peak.fetch_max(before + 1, Relaxed);
        }
        if listener_max.is_none() {
            listener.fetch_add(1, Relaxed);
        }
        Ok(())
    }

    /// Counts a connection in whatever the limits say (a connection migrated from another
    /// instance, already served there). Given back with [`ProcessLimits::release`].
    pub fn force_admit(&self, listener: &AtomicU64) {
        listener.fetch_add(1, Relaxed);
        let open = self.open.fetch_add(1, Relaxed) + 1;
        self.peak.fetch_max(open, Relaxed);
    }

    /// Counts a connection admitted on `listener` out.
    pub fn release(&self, listener: &AtomicU64) {
        listener.fetch_sub(1, Relaxed);
        self.open.fetch_sub(1, Relaxed);
    }

    /// Reserves `bytes` more of the Bolt partial-frame budget; `false` (nothing reserved) when
    /// that would exceed it.
    pub fn hold_bolt(&self, bytes: usize) -> bool {
        let before = self.bolt_held.fetch_add(bytes, Relaxed);
        if before.saturating_add(bytes) > self.bolt_max.load(Relaxed) {
            self.bolt_held.fetch_sub(bytes, Relaxed);
            return false;
        }
        true
    }

    /// Gives back `bytes` of the Bolt partial-frame budget.
    pub fn release_bolt(&self, bytes: usize) {
        self.bolt_held.fetch_sub(bytes, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pipes_never_take_the_descriptors_admitted_connections_need() {
        for fds in [70, 1024, 20_000, 1 << 20, u64::from(u32::MAX)] {
            for explicit in [None, Some(100), Some(fds / 4), Some(fds)] {
                let max = explicit.unwrap_or_else(|| derived_max(Some(fds), true));
                let pipes = pipe_budget(Some(fds), explicit, true) as u64;
                if RESERVED_FDS + 2 * max <= fds {
                    // Every admitted connection's two sockets, and every pipe (two descriptors
                    // each, in use or pooled) open at once, fit.
                    assert!(
                        RESERVED_FDS + 2 * max + 2 * pipes <= fds,
                        "{fds} fds, max {max}: {pipes} pipes overcommit"
                    );
                } else {
                    assert_eq!(
                        pipes, 0,
                        "a cap past the descriptors leaves no room for pipes"
                    );
                }
            }
            // The derived limit leaves no room unused beyond rounding.
            let max = derived_max(Some(fds), true);
            let pipes = pipe_budget(Some(fds), None, true) as u64;
            assert!(
                fds - RESERVED_FDS - 2 * max - 2 * pipes < 8,
                "{fds}: {max} + {pipes}"
            );
        }
        assert_eq!(derived_max(Some(20_000), false), 9_968);
        // (20,000 − 64) × 2 / 5: two sockets and a quarter pipe per connection.
        assert_eq!(derived_max(Some(20_000), true), 7_974);
        assert_eq!(pipe_budget(Some(20_000), None, true), 1_993);
        assert_eq!(
            pipe_budget(Some(20_000), Some(9_968), true),
            0,
            "no room left"
        );
        assert_eq!(pipe_budget(Some(20_000), Some(5_000), true), 4_968);
        assert_eq!(pipe_budget(Some(20_000), None, false), 0);
    }

    #[test]
    fn a_pipe_beyond_the_budget_is_refused_until_one_is_closed() {
        let limits = Arc::new(ProcessLimits::new(&config("")));
        limits.pipes_max.store(2, Relaxed);
        let a = limits.hold_pipe().unwrap();
        let b = limits.hold_pipe().unwrap();
        assert!(limits.hold_pipe().is_none());
        assert_eq!(limits.pipes_open(), 2);
        drop(a);
        let c = limits.hold_pipe().unwrap();
        drop((b, c));
        assert_eq!(limits.pipes_open(), 0);
    }

    #[test]
    fn only_a_config_that_splices_derives_room_for_pipes() {
        let tcp = |splice: bool| {
            Config::from_yaml(&format!(
                "listeners:\n  - name: t\n    address: 127.0.0.1:1\n    tcp_proxy: {{ cluster: c, splice: {splice} }}\nclusters:\n  - {{ name: c, hosts: [ {{ address: 127.0.0.1:2 }} ] }}\n"
            ))
            .unwrap()
        };
        assert!(splices(&tcp(true)));
        assert!(!splices(&tcp(false)));
        assert!(!splices(&config("")));
    }

    fn config(yaml_limits: &str) -> Config {
        Config::from_yaml(&format!(
            "listeners:\n  - name: e\n    address: 127.0.0.1:1\n    echo: {{}}\n{yaml_limits}"
        ))
        .unwrap()
    }

    #[test]
    fn connections_are_refused_beyond_either_limit_and_counted_back() {
        let l = ProcessLimits::new(&config("limits:\n  max_connections: 3\n"));
        let a = l.listener_counter("127.0.0.1:1".parse().unwrap());
        let b = l.listener_counter("127.0.0.1:2".parse().unwrap());
        assert_eq!(l.admit(&a, Some(2)), Ok(()));
        assert_eq!(l.admit(&a, Some(2)), Ok(()));
        assert_eq!(l.admit(&a, Some(2)), Err(Overflow::Listener));
        assert_eq!(l.admit(&b, None), Ok(()));
        assert_eq!(l.admit(&b, None), Err(Overflow::Process));
        assert_eq!((l.open(), a.load(Relaxed), b.load(Relaxed)), (3, 2, 1));
        l.release(&a);
        assert_eq!(l.admit(&b, None), Ok(()));
        assert_eq!((l.open(), a.load(Relaxed), b.load(Relaxed)), (3, 1, 2));
    }

    #[test]
    fn the_same_address_gets_the_same_counter() {
        let l = ProcessLimits::new(&config(""));
        let a = l.listener_counter("127.0.0.1:1".parse().unwrap());
        let again = l.listener_counter("127.0.0.1:1".parse().unwrap());
        assert!(Arc::ptr_eq(&a, &again));
        assert!(l.max() >= 1);
    }

    #[test]
    fn the_bolt_budget_is_never_exceeded() {
        let l = ProcessLimits::new(&config("limits:\n  bolt_partial_frame_bytes: 10KiB\n"));
        assert!(l.hold_bolt(6 << 10));
        assert!(!l.hold_bolt(5 << 10));
        assert!(l.hold_bolt(4 << 10));
        assert_eq!(l.bolt_held(), 10 << 10);
        l.release_bolt(6 << 10);
        assert!(l.hold_bolt(5 << 10));
    }
}
