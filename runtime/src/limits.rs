//! Process-wide caps shared by every worker: downstream connections (per listener and in
//! total) and the bytes Bolt connections hold in partial frames.
//!
//! Workers share nothing on the data path except these few atomics, touched once per accepted
//! and closed connection (a relaxed `fetch_add` / `fetch_sub`), and once per growth or release of
//! a Bolt read buffer beyond its first chunk — never per request.
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
//!   `splice` on, the default) derives `(RLIMIT_NOFILE − 64) / 3` instead: a spliced session
//!   holds two pipes (four descriptors) beside its two sockets.
//! - **Splice pipes** (HAProxy's `maxpipes`): at most [`ProcessLimits::pipes_max`] sessions
//!   splice at once — a quarter of the derived connection limit, or, with an explicit
//!   `limits.max_connections`, what the open-file limit leaves beyond two descriptors per
//!   connection — so pipes never take the descriptors admitted connections need (a session
//!   that would pass the budget relays by copying, counted as `tcp_relay_copied`). Without it,
//!   a process full of spliced sessions ran out of descriptors at accept at a third of its
//!   connection limit.
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
    /// Sessions relaying by splice now, and how many may at once.
    pipes_held: AtomicUsize,
    pipes_max: AtomicUsize,
    listeners: Mutex<Vec<(SocketAddr, Arc<AtomicU64>)>>,
}

/// One splicing session's share of the pipe budget ([`ProcessLimits::hold_pipes`]).
#[derive(Debug)]
pub struct PipesHeld<'a>(&'a ProcessLimits);

impl Drop for PipesHeld<'_> {
    fn drop(&mut self) {
        self.0.pipes_held.fetch_sub(1, Relaxed);
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

/// How many sessions may relay by splice at once under `config` (see the module doc).
#[must_use]
pub fn max_spliced_sessions(config: &Config) -> usize {
    pipe_budget(
        open_file_limit(),
        config.limits.max_connections,
        splices(config),
    )
}

/// [`max_spliced_sessions`] for an open-file limit `fds` and an explicit connection limit.
fn pipe_budget(fds: Option<u64>, max_connections: Option<u64>, splices: bool) -> usize {
    if !splices {
        return 0;
    }
    let Some(fds) = fds else {
        return usize::MAX;
    };
    let sessions = match max_connections {
        None => derived_max(Some(fds), true) / 4,
        Some(max) => fds.saturating_sub(RESERVED_FDS.saturating_add(max.saturating_mul(2))) / 4,
    };
    usize::try_from(sessions).unwrap_or(usize::MAX)
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
             for pipes (each spliced session needs four beyond its two sockets); sessions copy"
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

/// `(RLIMIT_NOFILE − RESERVED_FDS) / 2` — `/ 3` when sessions may splice — at least 1
/// (unlimited when the limit cannot be read).
fn derived_max(fds: Option<u64>, splices: bool) -> u64 {
    let per_connection = if splices { 3 } else { 2 };
    fds.map_or(u64::MAX, |soft| {
        (soft.saturating_sub(RESERVED_FDS) / per_connection).max(1)
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
            pipes_held: AtomicUsize::new(0),
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
        self.pipes_max.store(max_spliced_sessions(config), Relaxed);
    }

    /// How many sessions may splice at once.
    #[must_use]
    pub fn pipes_max(&self) -> usize {
        self.pipes_max.load(Relaxed)
    }

    /// Reserves a splicing session's pipes from the budget, given back when the guard drops
    /// (however the session ends); `None` (nothing reserved): relay by copying.
    pub fn hold_pipes(&self) -> Option<PipesHeld<'_>> {
        if self.pipes_held.fetch_add(1, Relaxed) >= self.pipes_max.load(Relaxed) {
            self.pipes_held.fetch_sub(1, Relaxed);
            return None;
        }
        Some(PipesHeld(self))
    }

    /// Sessions holding pipes now.
    #[must_use]
    pub fn pipes_held(&self) -> usize {
        self.pipes_held.load(Relaxed)
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
        for fds in [1024, 20_000, 1 << 20] {
            for explicit in [None, Some(100), Some(fds / 4), Some(fds)] {
                let max = explicit.unwrap_or_else(|| derived_max(Some(fds), true));
                let pipes = pipe_budget(Some(fds), explicit, true) as u64;
                if RESERVED_FDS + 2 * max <= fds {
                    assert!(
                        RESERVED_FDS + 2 * max + 4 * pipes <= fds,
                        "{fds} fds, max {max}: {pipes} spliced sessions overcommit"
                    );
                } else {
                    assert_eq!(
                        pipes, 0,
                        "a cap past the descriptors leaves no room for pipes"
                    );
                }
            }
        }
        assert_eq!(derived_max(Some(20_000), false), 9_968);
        assert_eq!(derived_max(Some(20_000), true), 6_645);
        assert_eq!(pipe_budget(Some(20_000), None, true), 1_661);
        assert_eq!(
            pipe_budget(Some(20_000), Some(9_968), true),
            0,
            "no room left"
        );
        assert_eq!(pipe_budget(Some(20_000), Some(5_000), true), 2_484);
        assert_eq!(pipe_budget(Some(20_000), None, false), 0);
    }

    #[test]
    fn a_splicing_session_beyond_the_budget_is_refused_its_pipes_until_one_ends() {
        let limits = ProcessLimits::new(&config(""));
        limits.pipes_max.store(2, Relaxed);
        let a = limits.hold_pipes().unwrap();
        let b = limits.hold_pipes().unwrap();
        assert!(limits.hold_pipes().is_none());
        assert_eq!(limits.pipes_held(), 2);
        drop(a);
        let c = limits.hold_pipes().unwrap();
        drop((b, c));
        assert_eq!(limits.pipes_held(), 0);
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
