//! The L4 (TCP proxy) session: one downstream connection relayed to one upstream host.
//!
//! The session decides; its driver does the IO. It never sees a byte of payload, only how many
//! were moved, so relaying stays a zero-copy concern of the driver.
//!
//! ## States
//!
//! ```text
//!            start()                 handle_connected()
//!   Idle ───────────────▶ Connecting ───────────────────▶ Relaying ──▶ Closed(reason)
//!                          │   ▲                            │
//!     connect failed/      │   │ another attempt left:      │ both directions ended → Completed
//!     timed out ───────────┘   │ pick another host          │ read/write error     → *Reset
//!                              │                            │ no byte for idle_timeout → IdleTimeout
//!         no attempt left / no host ──▶ Closed(ConnectFailed / NoHealthyUpstream)
//! ```
//!
//! ## Outputs ([`TcpSession::poll_action`])
//!
//! - [`Action::Connect`]: open a connection to this host (dropping any earlier attempt);
//! - [`Action::ShutdownUpstreamWrite`] / [`Action::ShutdownDownstreamWrite`]: half-close, after
//!   the other side sent FIN and everything read from it was written;
//! - [`Action::Close`]: close both sockets; the session is over.
//!
//! [`TcpSession::poll_timeout`] is the next instant at which `handle_timeout` must be called.
//! The idle deadline is lazy: reads only record the time, and `handle_timeout` re-arms when
//! activity moved the deadline (so a driver needs no timer reset per read).
//!
//! ## Invariants (checked in debug builds)
//!
//! - exactly one `Close` is ever emitted, and nothing after it;
//! - at most `max_connect_attempts` `Connect`s are emitted;
//! - the session holds a host's `begin` from `handle_connected` until [`TcpSession::release`].
//!
//! ## Direct sessions
//!
//! [`TcpSession::start_direct`] connects to one given address instead of a host of a cluster
//! (an `original_dst` cluster: the connection's original destination). Its `Connect`s name
//! [`DIRECT_HOST`], every attempt goes to that address, and the cluster is never read or
//! written (an `original_dst` cluster has no hosts).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;

use crate::time::Instant;

use crate::cluster::{ClusterState, HostId};
use crate::rng::Rng;

/// Settings of one session, from the listener's `tcp_proxy` and the cluster's config.
#[derive(Clone, Copy, Debug)]
pub struct SessionConfig {
    /// Give up one connect attempt after this long.
    pub connect_timeout: Duration,
    /// Close after this long without a byte in either direction; `None` disables.
    pub idle_timeout: Option<Duration>,
    /// Connect attempts in all (≥ 1).
    pub max_connect_attempts: u32,
}

/// One side of the proxied connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// The client that connected to the listener.
    Downstream,
    /// The upstream host.
    Upstream,
}

/// Why a connect attempt failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnectFailure {
    /// The host refused (RST) or the connect errored at once.
    Refused,
    /// No answer within the connect timeout.
    Timeout,
}

/// Why a session ended. Each reason is counted by the driver.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseReason {
    /// Both directions finished cleanly (FIN both ways).
    Completed,
    /// No host of the cluster was available.
    NoHealthyUpstream,
    /// Every connect attempt failed.
    ConnectFailed,
    /// No byte moved for the idle timeout.
    IdleTimeout,
    /// The downstream connection errored (reset) while relaying.
    DownstreamReset,
    /// The upstream connection errored (reset) while relaying.
    UpstreamReset,
    /// The process was draining and the drain timeout passed.
    DrainTimeout,
}

impl CloseReason {
    /// Every reason, in a fixed order (for counters).
    pub const ALL: [CloseReason; 7] = [
        CloseReason::Completed,
        CloseReason::NoHealthyUpstream,
        CloseReason::ConnectFailed,
        CloseReason::IdleTimeout,
        CloseReason::DownstreamReset,
        CloseReason::UpstreamReset,
        CloseReason::DrainTimeout,
    ];

    /// A stable snake_case name, for metrics and logs.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            CloseReason::Completed => "completed",
            CloseReason::NoHealthyUpstream => "no_healthy_upstream",
            CloseReason::ConnectFailed => "connect_failed",
            CloseReason::IdleTimeout => "idle_timeout",
            CloseReason::DownstreamReset => "downstream_reset",
            CloseReason::UpstreamReset => "upstream_reset",
            CloseReason::DrainTimeout => "drain_timeout",
        }
    }

    /// Position in [`CloseReason::ALL`].
    #[must_use]
    pub fn index(self) -> usize {
        self as usize
    }
}

/// What the driver must do next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Open a connection to `address` (host `host` of the cluster), dropping any earlier attempt.
    Connect {
        /// The host picked.
        host: HostId,
        /// Its address.
        address: SocketAddr,
    },
    /// Send FIN to the upstream (the downstream finished sending).
    ShutdownUpstreamWrite,
    /// Send FIN to the downstream (the upstream finished sending).
    ShutdownDownstreamWrite,
    /// Close both connections: the session is over.
    Close(CloseReason),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Idle,
    Connecting { host: HostId, deadline: Instant },
    Relaying { host: HostId },
    Closed(CloseReason),
}

/// The host of every `Connect` of a direct session ([`TcpSession::start_direct`]): no host
/// of a cluster.
pub const DIRECT_HOST: HostId = HostId(u32::MAX);

/// Maximum attempts tracked for host exclusion (the config caps attempts at 10).
const MAX_TRACKED_ATTEMPTS: usize = 10;

/// One proxied TCP session. See the module doc.
#[derive(Debug)]
pub struct TcpSession {
    config: SessionConfig,
    state: State,
    /// Hosts tried so far, in order (for failover to *another* host).
    tried: [HostId; MAX_TRACKED_ATTEMPTS],
    attempts: u32,
    /// Whether each direction finished: downstream→upstream, upstream→downstream.
    down_done: bool,
    up_done: bool,
    last_activity: Instant,
    bytes_from_downstream: u64,
    bytes_from_upstream: u64,
    /// The host whose `begin` this session holds.
    holding: Option<HostId>,
    actions: VecDeque<Action>,
    closes_emitted: u8,
    /// The connection's hash for `ring_hash` / `maglev` clusters (see [`TcpSession::set_hash`]).
    hash: Option<u64>,
    /// A direct session's one address ([`TcpSession::start_direct`]).
    direct: Option<SocketAddr>,
}

impl TcpSession {
    /// A session for a freshly accepted downstream connection.
    #[must_use]
    pub fn new(now: Instant, config: SessionConfig) -> Self {
        debug_assert!(config.max_connect_attempts >= 1);
        TcpSession {
            config,
            state: State::Idle,
            tried: [HostId(u32::MAX); MAX_TRACKED_ATTEMPTS],
            attempts: 0,
            down_done: false,
            up_done: false,
            last_activity: now,
            bytes_from_downstream: 0,
            bytes_from_upstream: 0,
            holding: None,
            actions: VecDeque::with_capacity(2),
            closes_emitted: 0,
            hash: None,
            direct: None,
        }
    }

    /// Sets the hash that `ring_hash` / `maglev` clusters pick by (the downstream's source IP
    /// under a `source_ip` hash policy); call before [`TcpSession::start`]. Failover walks on
    /// from the hash point past the hosts tried.
    pub fn set_hash(&mut self, hash: Option<u64>) {
        self.hash = hash;
    }

    // ---- input ----

    /// Picks the first host and asks for a connect.
    pub fn start(&mut self, now: Instant, cluster: &mut ClusterState, rng: &mut Rng) {
        debug_assert_eq!(self.state, State::Idle);
        self.attempt(now, cluster, rng);
    }

    /// Connects to `address` rather than to a host of a cluster (see "Direct sessions" in the
    /// module doc); failover retries the same address. The `cluster` given to later inputs is
    /// never touched.
    pub fn start_direct(&mut self, now: Instant, address: SocketAddr) {
        debug_assert_eq!(self.state, State::Idle);
        self.direct = Some(address);
        self.attempt_direct(now, address);
    }

    /// The pending connect succeeded.
    pub fn handle_connected(&mut self, now: Instant, cluster: &mut ClusterState) {
        let State::Connecting { host, .. } = self.state else {
            debug_assert!(false, "handle_connected in {:?}", self.state);
            return;
        };
        if self.direct.is_none() {
            cluster.begin(host);
            self.holding = Some(host);
        }
        self.state = State::Relaying { host };
        self.last_activity = now;
    }

    /// The pending connect failed: try another host if an attempt is left.
    pub fn handle_connect_failed(
        &mut self,
        now: Instant,
        cluster: &mut ClusterState,
        rng: &mut Rng,
        _why: ConnectFailure,
    ) {
        if !matches!(self.state, State::Connecting { .. }) {
            debug_assert!(false, "handle_connect_failed in {:?}", self.state);
            return;
        }
        if self.attempts >= self.config.max_connect_attempts {
            self.close(CloseReason::ConnectFailed);
        } else {
            self.attempt(now, cluster, rng);
        }
    }

    /// `n` bytes were read from `from` and will be written to the other side; `n == 0` is EOF
    /// from `from` after everything read from it was written (so the other side may be
    /// half-closed).
    pub fn handle_read(&mut self, now: Instant, from: Side, n: usize) {
        if !matches!(self.state, State::Relaying { .. }) {
            return;
        }
        self.last_activity = now;
        match (from, n) {
            (Side::Downstream, 0) if !self.down_done => {
                self.down_done = true;
                self.actions.push_back(Action::ShutdownUpstreamWrite);
            }
            (Side::Upstream, 0) if !self.up_done => {
                self.up_done = true;
                self.actions.push_back(Action::ShutdownDownstreamWrite);
            }
            (Side::Downstream, n) => self.bytes_from_downstream += n as u64,
            (Side::Upstream, n) => self.bytes_from_upstream += n as u64,
        }
        if self.down_done && self.up_done {
            self.close(CloseReason::Completed);
        }
    }

    /// Reading from or writing to `side` failed (reset, broken pipe).
    pub fn handle_error(&mut self, _now: Instant, side: Side) {
        if matches!(self.state, State::Closed(_)) {
            return;
        }
        self.close(match side {
            Side::Downstream => CloseReason::DownstreamReset,
            Side::Upstream => CloseReason::UpstreamReset,
        });
    }

    /// Time passed: a connect attempt or the idle timeout may have expired.
    pub fn handle_timeout(&mut self, now: Instant, cluster: &mut ClusterState, rng: &mut Rng) {
        match self.state {
            State::Connecting { deadline, .. } if now >= deadline => {
                self.handle_connect_failed(now, cluster, rng, ConnectFailure::Timeout);
            }
            State::Relaying { .. } => {
                if let Some(idle) = self.config.idle_timeout
                    && now >= self.last_activity + idle
                {
                    self.close(CloseReason::IdleTimeout);
                }
            }
            _ => {}
        }
    }

    /// The process drained for its whole drain timeout and this session is still open.
    pub fn handle_drain_timeout(&mut self, _now: Instant) {
        if !matches!(self.state, State::Closed(_)) {
            self.close(CloseReason::DrainTimeout);
        }
    }

    /// Gives back the host's `begin` (idempotent). The driver calls it once the session is over.
    pub fn release(&mut self, cluster: &mut ClusterState) {
        if let Some(host) = self.holding.take() {
            cluster.end(host);
        }
    }

    // ---- output ----

    /// The next thing the driver must do, if any.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// When `handle_timeout` must be called next; `None` when no timer is needed.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            State::Connecting { deadline, .. } => Some(deadline),
            State::Relaying { .. } => self.config.idle_timeout.map(|d| self.last_activity + d),
            State::Idle | State::Closed(_) => None,
        }
    }

    // ---- queries ----

    /// The host being connected to or relayed to.
    #[must_use]
    pub fn host(&self) -> Option<HostId> {
        match self.state {
            State::Connecting { host, .. } | State::Relaying { host } => Some(host),
            _ => None,
        }
    }

    /// Why the session ended, once it has.
    #[must_use]
    pub fn close_reason(&self) -> Option<CloseReason> {
        match self.state {
            State::Closed(r) => Some(r),
            _ => None,
        }
    }

    /// Connect attempts made so far.
    #[must_use]
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// Payload bytes read from the downstream and from the upstream.
    #[must_use]
    pub fn bytes(&self) -> (u64, u64) {
        (self.bytes_from_downstream, self.bytes_from_upstream)
    }

    // ---- internals ----

    fn attempt_direct(&mut self, now: Instant, address: SocketAddr) {
        self.attempts += 1;
        debug_assert!(self.attempts <= self.config.max_connect_attempts);
        self.state = State::Connecting {
            host: DIRECT_HOST,
            deadline: now + self.config.connect_timeout,
        };
        self.actions.push_back(Action::Connect {
            host: DIRECT_HOST,
            address,
        });
    }

    fn attempt(&mut self, now: Instant, cluster: &mut ClusterState, rng: &mut Rng) {
        if let Some(address) = self.direct {
            self.attempt_direct(now, address);
            return;
        }
        let tried = &self.tried[..(self.attempts as usize).min(MAX_TRACKED_ATTEMPTS)];
        let Some(host) = cluster.pick_hashed(rng, tried, self.hash) else {
            self.close(if self.attempts == 0 {
                CloseReason::NoHealthyUpstream
            } else {
                CloseReason::ConnectFailed
            });
            return;
        };
        if (self.attempts as usize) < MAX_TRACKED_ATTEMPTS {
            self.tried[self.attempts as usize] = host;
        }
        self.attempts += 1;
        debug_assert!(self.attempts <= self.config.max_connect_attempts);
        self.state = State::Connecting {
            host,
            deadline: now + self.config.connect_timeout,
        };
        self.actions.push_back(Action::Connect {
            host,
            address: cluster.host(host).address,
        });
    }

    fn close(&mut self, reason: CloseReason) {
        debug_assert!(self.closes_emitted == 0, "second close: {reason:?}");
        self.closes_emitted += 1;
        self.state = State::Closed(reason);
        self.actions.push_back(Action::Close(reason));
    }
}

#[cfg(test)]
mod tests;
