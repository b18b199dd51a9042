//! The forwarding lifecycle of one HTTP request (Envoy's router filter, sans IO): which host,
//! when to give up on a try, whether to retry, when to answer from the proxy.
//!
//! The driver owns connections and bytes; the exchange owns decisions and timers.
//!
//! ## States
//!
//! ```text
//!  start ──▶ Connecting(host) ──connected──▶ Waiting(host, sent?) ──response head──▶ Responding ──complete──▶ Done
//!     ▲            │ failure                     │ failure / per-try timeout            │
//!     │            ▼                             ▼                                      │
//!     └──── Backoff(until) ◀── retry allowed ── decide ── no retry ──▶ LocalReply ──────┴──▶ Done
//! ```
//!
//! Global timeout (the route's `timeout`) fires in any state before Done → 504 (`UT`), unless the
//! response head was already forwarded, in which case the driver must abort the connection. It
//! (and a per-try timeout) counts from the end of the downstream request: from the start when the
//! body was buffered, else from [`Exchange::handle_request_complete`].
//!
//! A request is replayable (its body can be sent again) when it has no body or the driver holds
//! all of it: from the start ([`ExchangeConfig::replayable`]), or once a body streamed as it
//! arrived ended within the driver's replay buffer ([`Exchange::handle_body_buffered`], Envoy's
//! rule: a body is sent upstream as it arrives and a copy is kept for retries up to the buffer
//! limit; past it, the request is not retried). A try that fails while such a body is still
//! arriving is asked about first ([`Exchange::retry_wants_body`]): when the body being
//! replayable would make it retried, the driver reads the rest of the body into its copy and
//! says [`Exchange::handle_body_buffered`] if it ended within it, then hands the failure in.
//! The same goes for a response head that arrives while the body is still arriving
//! ([`Exchange::response_wants_body`]: a retriable 5xx answered early).
//!
//! ## Retry rules (RFC 9110 §9.2.2: a proxy must not retry a non-idempotent request that may
//! have been processed)
//!
//! - A try that failed **before any request byte was written** (connect refused or timed out, or
//!   a connection found closed before writing) is always safe to retry; with `connect-failure`
//!   (or `reset` for a closed connection) in `retry_on`.
//! - A try that failed **after request bytes were written** (reset, closed, per-try timeout) or
//!   answered 5xx is retried only for idempotent methods with a replayable body, and only when
//!   `retry_on` names the condition.
//! - **Stale pooled connection** (the "503 UC" race): a *reused* connection that closed after the
//!   request was written with no response byte received is retried once on a *fresh*
//!   connection, outside `num_retries`, and only for idempotent methods — a non-idempotent
//!   request that reached an upstream is never sent twice. (The driver also checks a pooled
//!   connection for EOF before using it, which avoids most of these races for every method.)
//! - **Refused unprocessed** ([`TryFailure::Refused`]: an HTTP/2 upstream's `REFUSED_STREAM`, or
//!   a stream above a GOAWAY's `last_stream_id`, RFC 9113 §8.7): the upstream guarantees it did
//!   not act on the request, so it is sent again at once whatever its method, outside
//!   `num_retries` and without a `retry_on` condition, when its body can be replayed (or none
//!   of it was written on this try: refused as its head went out) — at most
//!   [`MAX_UNPROCESSED_RETRIES`] times per request. Not reported to outlier detection.
//! - Retries go to a host not tried yet when one is available, after a jittered exponential
//!   backoff: uniform in `[0, min(250ms, 25ms × 2^n)]` from the injected RNG.
//! - A retry needs the cluster's leave ([`CircuitBreakers::try_retry`]): by default every retry
//!   spends from the worker's retry budget; with a fixed `max_retries` a unit is held from the
//!   first retry until the exchange ends. When refused the retry is not made (the failure or the
//!   5xx answers the request) and [`Exchange::retry_overflowed`] says so.
//!
//! [`CircuitBreakers::try_retry`]: crate::health::CircuitBreakers::try_retry
//! - With a `ring_hash` / `maglev` cluster, every try picks by the request's hash
//!   ([`ExchangeConfig::hash`]); a retry walks on from the hash point past tried hosts.
//!
//! ## Events
//!
//! Beside its actions the exchange says what happened ([`Exchange::poll_event`]): a connect
//! that failed or timed out, a reset, a per-try or a route timeout. The driver counts stats and
//! feeds outlier detection from these ([`Event::upstream_result`]) and never infers a cause
//! from which of its timers fired: the connect deadline is capped by the route deadline, so a
//! timer firing during a connect may be the route's, which is not the host's fault.
//!
//! ## Invariants (debug-checked)
//!
//! - exactly one terminal output: either `Forward` was returned for a response head, or one
//!   `LocalReply` was emitted — never both, never two;
//! - the cluster's `active` for a host is held from `handle_connected` to the end of that try.

use std::net::SocketAddr;
use std::time::Duration;

use crate::time::Instant;

use crate::cluster::{ClusterState, HostId};
use crate::config::http::RetryPolicy;
use crate::health::{Permit, UpstreamResult};
use crate::rng::Rng;

/// First backoff interval before jitter (Envoy's default).
pub const BACKOFF_BASE: Duration = Duration::from_millis(25);
/// Longest backoff interval (Envoy: 10 × base).
pub const BACKOFF_MAX: Duration = Duration::from_millis(250);
/// The most tries a request can have: the first, `num_retries` (at most 10), the stale-connection
/// resend and [`MAX_UNPROCESSED_RETRIES`] resends of refused tries.
const MAX_TRIES: usize = 1 + 10 + 1 + MAX_UNPROCESSED_RETRIES as usize;
/// Tries of one request the upstreams may refuse unprocessed ([`TryFailure::Refused`]) and
/// that are sent again outside `num_retries`; one more refusal answers the request.
pub const MAX_UNPROCESSED_RETRIES: u8 = 3;

/// Why the proxy answered itself; short codes as in Envoy's access log `%RESPONSE_FLAGS%`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResponseFlag {
    /// `NR`: no route matched.
    NoRoute,
    /// `UH`: no healthy upstream host.
    NoHealthyUpstream,
    /// `UF`: upstream connect failure.
    UpstreamConnectFailure,
    /// `UC`: upstream connection terminated before a response.
    UpstreamConnectionTermination,
    /// `UT`: upstream request timeout (route timeout or last per-try timeout).
    UpstreamTimeout,
    /// `UO`: upstream overflow (circuit breaker).
    UpstreamOverflow,
    /// `UPE`: the upstream answered something the proxy cannot frame.
    UpstreamProtocolError,
    /// `DPE`: the downstream sent a malformed request.
    DownstreamProtocolError,
    /// `DR`: a route's direct response (not an error).
    DirectResponse,
    /// `RL` : request header timeout or limit (408/431).
    DownstreamLimit,
    /// An HTTP/1.1 upgrade of a type the listener does not allow (403; Envoy sets no flag,
    /// its details say `upgrade_failed`): `-` in the log.
    UpgradeRefused,
}

impl ResponseFlag {
    /// Envoy-style short code.
    #[must_use]
    pub fn code(self) -> &'static str {
        match self {
            ResponseFlag::NoRoute => "NR",
            ResponseFlag::NoHealthyUpstream => "UH",
            ResponseFlag::UpstreamConnectFailure => "UF",
            ResponseFlag::UpstreamConnectionTermination => "UC",
            ResponseFlag::UpstreamTimeout => "UT",
            ResponseFlag::UpstreamOverflow => "UO",
            ResponseFlag::UpstreamProtocolError => "UPE",
            ResponseFlag::DownstreamProtocolError => "DPE",
            ResponseFlag::DirectResponse => "DR",
            ResponseFlag::DownstreamLimit => "DL",
            ResponseFlag::UpgradeRefused => "-",
        }
    }
}

/// How one try failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TryFailure {
    /// Connect refused or errored.
    ConnectFailed,
    /// The connection closed or reset before a complete response head.
    /// `request_written`: at least one request byte had been written.
    /// `reused`: the connection came from the pool.
    Closed {
        /// Whether request bytes were written on it.
        request_written: bool,
        /// Whether the connection was reused from the pool.
        reused: bool,
    },
    /// The upstream's response could not be framed (malformed, ambiguous).
    ProtocolError,
    /// The upstream said it did not process the request: HTTP/2 `REFUSED_STREAM`, or a stream
    /// above the `last_stream_id` of a GOAWAY (RFC 9113 §8.7). Safe to send again whatever the
    /// method.
    Refused,
}

/// What the driver must do next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Get a connection to this host (pooled if `allow_pooled`, else a fresh one) and send the
    /// request.
    Connect {
        /// The host.
        host: HostId,
        /// Its address.
        address: SocketAddr,
        /// Whether a pooled connection may be used (false for the stale-connection retry).
        allow_pooled: bool,
    },
    /// Answer the downstream from the proxy; the exchange is over.
    LocalReply {
        /// HTTP status.
        status: u16,
        /// Why.
        flag: ResponseFlag,
    },
}

/// What happened during the exchange, for stats and outlier detection (see the module doc).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// The connect to `host` was refused or errored.
    ConnectFailed {
        /// The host.
        host: HostId,
    },
    /// The connect to `host` did not complete within the cluster's `connect_timeout`.
    ConnectTimedOut {
        /// The host.
        host: HostId,
    },
    /// The connection to `host` closed or reset before a complete response head.
    UpstreamReset {
        /// The host.
        host: HostId,
    },
    /// `host` answered something the proxy cannot frame.
    UpstreamProtocolError {
        /// The host.
        host: HostId,
    },
    /// `host` refused the request unprocessed (HTTP/2 `REFUSED_STREAM` or GOAWAY): load
    /// shedding or a graceful close, not a fault of the host.
    UpstreamRefused {
        /// The host.
        host: HostId,
    },
    /// The try on `host` got no response head within the per-try timeout.
    PerTryTimedOut {
        /// The host.
        host: HostId,
    },
    /// The route's timeout expired.
    RouteTimedOut {
        /// The host of the try in flight, if one was.
        host: Option<HostId>,
        /// Whether that try had its connection (a route timeout while connecting is not the
        /// host's fault: nothing is reported to outlier detection).
        connected: bool,
    },
}

impl Event {
    /// The result outlier detection counts for this event, when a host is to blame.
    #[must_use]
    pub fn upstream_result(self) -> Option<(HostId, UpstreamResult)> {
        match self {
            Event::ConnectFailed { host } | Event::ConnectTimedOut { host } => {
                Some((host, UpstreamResult::ConnectFailure))
            }
            Event::UpstreamReset { host } => Some((host, UpstreamResult::Reset)),
            Event::UpstreamProtocolError { host } => Some((host, UpstreamResult::Status(502))),
            Event::PerTryTimedOut { host }
            | Event::RouteTimedOut {
                host: Some(host),
                connected: true,
            } => Some((host, UpstreamResult::Timeout)),
            Event::RouteTimedOut { .. } | Event::UpstreamRefused { .. } => None,
        }
    }
}

/// Events not yet polled, in a few fixed slots (the exchange stays allocation-free). One input
/// emits at most one event, so a driver that drains after every input never loses one; when a
/// caller ignores events (tests of actions only) the oldest is dropped.
#[derive(Debug, Default)]
struct EventQueue {
    slots: [Option<Event>; 4],
    head: usize,
    len: usize,
}

impl EventQueue {
    fn push(&mut self, event: Event) {
        if self.len == self.slots.len() {
            self.pop();
        }
        self.slots[(self.head + self.len) % self.slots.len()] = Some(event);
        self.len += 1;
    }

    fn pop(&mut self) -> Option<Event> {
        if self.len == 0 {
            return None;
        }
        let event = self.slots[self.head].take();
        self.head = (self.head + 1) % self.slots.len();
        self.len -= 1;
        event
    }
}

/// What to do with a response head.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Send it downstream (the exchange continues until `handle_response_complete`).
    Forward,
    /// Drop it (and its connection): a retry follows, see `poll_action` / `poll_timeout`.
    Retry,
}

/// Which retry rule (module docs) a failed try falls under.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Rule {
    /// Refused unprocessed: sent again at once, outside `num_retries`.
    Unprocessed,
    /// A stale pooled connection: sent again once, at once, on a fresh connection.
    Stale,
    /// The route's retry policy: retried (after a backoff) when `true` and the budget allows.
    Policy(bool),
}

/// Settings of one exchange.
#[derive(Clone, Copy, Debug)]
pub struct ExchangeConfig {
    /// The route's whole-request timeout.
    pub timeout: Option<Duration>,
    /// The cluster's connect timeout.
    pub connect_timeout: Duration,
    /// The route's retry policy.
    pub retry: Option<RetryPolicyView>,
    /// The method is idempotent (GET, HEAD, PUT, DELETE, OPTIONS, TRACE).
    pub idempotent: bool,
    /// The request body can be sent again (none, or fully buffered).
    pub replayable: bool,
    /// The request's hash for `ring_hash` / `maglev` clusters (from the cluster's
    /// `hash_policy`); `None`: a random pick.
    pub hash: Option<u64>,
    /// The downstream request, body included, was already received in full. When not (a body
    /// streamed while it arrives), the route and per-try timeouts start only at
    /// [`Exchange::handle_request_complete`] (Envoy's rule: the upload's own time is not
    /// counted; the driver guards a stalled upload with its own idle timeout).
    pub request_complete: bool,
}

/// The parts of a [`RetryPolicy`] the exchange needs (`Copy`).
#[derive(Clone, Copy, Debug)]
pub struct RetryPolicyView {
    /// `retry_on` conditions.
    pub retry_on: crate::config::http::RetryOn,
    /// Retries after the first try.
    pub num_retries: u32,
    /// Per-try timeout.
    pub per_try_timeout: Option<Duration>,
}

impl From<&RetryPolicy> for RetryPolicyView {
    fn from(p: &RetryPolicy) -> Self {
        RetryPolicyView {
            retry_on: p.retry_on,
            num_retries: p.num_retries,
            per_try_timeout: p.per_try_timeout,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Idle,
    Connecting {
        host: HostId,
        deadline: Instant,
    },
    Waiting {
        host: HostId,
        written: bool,
        reused: bool,
    },
    Backoff {
        until: Instant,
    },
    Responding {
        host: HostId,
    },
    Done,
}

/// One request's forwarding lifecycle. See the module doc.
#[derive(Debug)]
pub struct Exchange {
    config: ExchangeConfig,
    state: State,
    deadline: Option<Instant>,
    try_deadline: Option<Instant>,
    tried: [HostId; MAX_TRIES],
    tries: usize,
    retries_used: u32,
    stale_retry_used: bool,
    /// Tries sent again because the upstream refused them unprocessed.
    unprocessed_retries: u8,
    next_allow_pooled: bool,
    holding: Option<HostId>,
    last_failure: Option<ResponseFlag>,
    action: Option<Action>,
    terminal: bool,
    /// Held from the first retry until the exchange ends (the `max_retries` breaker counts
    /// exchanges retrying now).
    retry_permit: Option<Permit>,
    retry_overflowed: bool,
    events: EventQueue,
}

impl Exchange {
    /// A new exchange; call [`Exchange::start`] next.
    #[must_use]
    pub fn new(now: Instant, config: ExchangeConfig) -> Self {
        Exchange {
            config,
            state: State::Idle,
            deadline: config
                .timeout
                .filter(|_| config.request_complete)
                .map(|t| now + t),
            try_deadline: None,
            tried: [HostId(u32::MAX); MAX_TRIES],
            tries: 0,
            retries_used: 0,
            stale_retry_used: false,
            unprocessed_retries: 0,
            next_allow_pooled: true,
            holding: None,
            last_failure: None,
            action: None,
            terminal: false,
            retry_permit: None,
            retry_overflowed: false,
            events: EventQueue::default(),
        }
    }

    // ---- input ----

    /// Picks the first host.
    pub fn start(&mut self, now: Instant, cluster: &mut ClusterState, rng: &mut Rng) {
        debug_assert_eq!(self.state, State::Idle);
        cluster.breakers_mut().record_request(now);
        self.begin_try(now, cluster, rng);
    }

    /// A connection to the host is ready (`reused`: taken from the pool).
    pub fn handle_connected(&mut self, now: Instant, reused: bool, cluster: &mut ClusterState) {
        let State::Connecting { host, .. } = self.state else {
            debug_assert!(false, "handle_connected in {:?}", self.state);
            return;
        };
        cluster.begin(host);
        self.holding = Some(host);
        self.state = State::Waiting {
            host,
            written: false,
            reused,
        };
        self.try_deadline = self
            .config
            .retry
            .and_then(|r| r.per_try_timeout)
            .filter(|_| self.config.request_complete)
            .map(|t| now + t);
    }

    /// A body streamed as it arrived was kept whole by the driver after all (it ended within
    /// the replay buffer): the request is replayable from now on, for the retry rules above. A
    /// try that failed before this (its body still arriving, or past the buffer) was decided
    /// with the body not replayable.
    pub fn handle_body_buffered(&mut self) {
        self.config.replayable = true;
    }

    /// The downstream request's body was received in full (only needed when
    /// [`ExchangeConfig::request_complete`] was false): the route timeout, and the current try's
    /// per-try timeout, start now. Later calls change nothing.
    pub fn handle_request_complete(&mut self, now: Instant) {
        if self.config.request_complete {
            return;
        }
        self.config.request_complete = true;
        self.deadline = self.config.timeout.map(|t| now + t);
        if matches!(self.state, State::Waiting { .. }) {
            self.try_deadline = self
                .config
                .retry
                .and_then(|r| r.per_try_timeout)
                .map(|t| now + t);
        }
    }

    /// The first request byte was written on the current connection.
    pub fn handle_request_written(&mut self) {
        if let State::Waiting { written, .. } = &mut self.state {
            *written = true;
        }
    }

    /// The current try failed.
    pub fn handle_failure(
        &mut self,
        now: Instant,
        failure: TryFailure,
        cluster: &mut ClusterState,
        rng: &mut Rng,
    ) {
        self.fail_try(now, failure, false, cluster, rng);
    }

    /// The current try failed (`connect_timed_out`: the connect deadline passed).
    fn fail_try(
        &mut self,
        now: Instant,
        failure: TryFailure,
        connect_timed_out: bool,
        cluster: &mut ClusterState,
        rng: &mut Rng,
    ) {
        let (host, written, reused) = match self.state {
            State::Connecting { host, .. } => (host, false, false),
            State::Waiting {
                host,
                written,
                reused,
            } => (host, written, reused),
            _ => {
                debug_assert!(false, "handle_failure in {:?}", self.state);
                return;
            }
        };
        self.events.push(match failure {
            TryFailure::ConnectFailed if connect_timed_out => Event::ConnectTimedOut { host },
            TryFailure::ConnectFailed => Event::ConnectFailed { host },
            TryFailure::Closed { .. } => Event::UpstreamReset { host },
            TryFailure::ProtocolError => Event::UpstreamProtocolError { host },
            TryFailure::Refused => Event::UpstreamRefused { host },
        });
        self.release_host(cluster);
        let (flag, rule) = self.rule(now, failure, written, reused, self.config.replayable);
        self.last_failure = Some(flag);
        match rule {
            Rule::Unprocessed => {
                self.unprocessed_retries += 1;
                self.begin_try(now, cluster, rng);
            }
            Rule::Stale => {
                // The pooled connection had gone stale: once, outside the retry budget, on a
                // fresh connection, at once.
                self.stale_retry_used = true;
                self.next_allow_pooled = false;
                self.begin_try(now, cluster, rng);
            }
            Rule::Policy(retry) => {
                if !(retry && self.retry_budget_left() && self.schedule_retry(now, cluster, rng)) {
                    self.local_reply(cluster, status_for(flag), flag);
                }
            }
        }
    }

    /// The retry rule (module docs) for `failure` of the current try (`written`, `reused`: its
    /// state), with the body `replayable` or not. Pure: [`Exchange::retry_wants_body`] asks it
    /// too.
    fn rule(
        &self,
        now: Instant,
        failure: TryFailure,
        written: bool,
        reused: bool,
        replayable: bool,
    ) -> (ResponseFlag, Rule) {
        let on = self.config.retry.map(|r| r.retry_on).unwrap_or_default();
        let safe_to_replay = self.config.idempotent && replayable;
        let (flag, retry, stale) = match failure {
            TryFailure::ConnectFailed => (
                ResponseFlag::UpstreamConnectFailure,
                on.connect_failure,
                false,
            ),
            TryFailure::Closed {
                request_written, ..
            } if !(request_written || written) => (
                ResponseFlag::UpstreamConnectionTermination,
                on.connect_failure || on.reset,
                false,
            ),
            TryFailure::Closed {
                reused: was_reused, ..
            } => {
                let stale = (reused || was_reused) && safe_to_replay && !self.stale_retry_used;
                (
                    ResponseFlag::UpstreamConnectionTermination,
                    on.reset && safe_to_replay,
                    stale,
                )
            }
            TryFailure::ProtocolError => (ResponseFlag::UpstreamProtocolError, false, false),
            TryFailure::Refused => (ResponseFlag::UpstreamConnectionTermination, false, false),
        };
        // Not processed: sent again whatever the method (nothing of it reached the
        // application), outside `num_retries`, at once, as long as the body can be replayed —
        // or nothing of it was written on this try (refused as its head went out): a streamed
        // body is then still whole with the driver (an earlier try that wrote was retried only
        // when replayable).
        let unprocessed = failure == TryFailure::Refused
            && (replayable || !written)
            && self.unprocessed_retries < MAX_UNPROCESSED_RETRIES
            && self.deadline.is_none_or(|d| now < d);
        let rule = if unprocessed {
            Rule::Unprocessed
        } else if stale {
            Rule::Stale
        } else {
            Rule::Policy(retry)
        };
        (flag, rule)
    }

    /// Whether `failure` of the current try, which the driver is about to hand in, would be
    /// retried were the body replayable while it is not yet: a body still arriving that the
    /// driver keeps a whole copy of so far. When true the driver reads the rest of the body
    /// into its copy and, if it ended within the copy, gives [`Exchange::handle_body_buffered`]
    /// before [`Exchange::handle_failure`], which then decides (the retry budget and the
    /// circuit breaker's leave are asked there). False when the body is replayable already (it
    /// makes no difference) or the failure is not retried either way.
    #[must_use]
    pub fn retry_wants_body(&self, now: Instant, failure: TryFailure) -> bool {
        let (written, reused) = match self.state {
            State::Connecting { .. } => (false, false),
            State::Waiting {
                written, reused, ..
            } => (written, reused),
            _ => return false,
        };
        if self.config.replayable {
            return false;
        }
        let (_, without) = self.rule(now, failure, written, reused, false);
        let (_, with) = self.rule(now, failure, written, reused, true);
        let retried = |r: Rule| match r {
            Rule::Unprocessed | Rule::Stale => true,
            Rule::Policy(retry) => retry && self.retry_budget_left(),
        };
        retried(with) && !retried(without)
    }

    /// Whether a response head with `status` (and `grpc-status`) on the current try, about to
    /// be handed in, would be retried were the body replayable while it is not yet: a body
    /// still arriving that the driver keeps a whole copy of so far (an upstream that answers a
    /// retriable 5xx before the body's end). When true the driver reads the rest of the body
    /// into its copy (nothing more goes upstream) and, if it ended within the copy, gives
    /// [`Exchange::handle_body_buffered`] before the head, which then decides (the circuit
    /// breaker's leave is asked there). False when the body is replayable already or the answer
    /// is forwarded either way.
    #[must_use]
    pub fn response_wants_body(&self, now: Instant, status: u16, grpc_status: Option<u8>) -> bool {
        matches!(self.state, State::Waiting { .. })
            && !self.config.replayable
            && self.head_retried(now, status, grpc_status, true)
    }

    /// The retry rule for a response head (module docs), with the body `replayable` or not,
    /// short of the circuit breaker's leave. Pure: [`Exchange::response_wants_body`] asks it
    /// too.
    fn head_retried(
        &self,
        now: Instant,
        status: u16,
        grpc_status: Option<u8>,
        replayable: bool,
    ) -> bool {
        let on = self.config.retry.map(|r| r.retry_on).unwrap_or_default();
        let retriable_status = match status {
            500..=599 if on.server_error => true,
            502..=504 if on.gateway_error => true,
            409 if on.retriable_4xx => true,
            _ => on.retriable_status_codes && on.status_codes.contains(status),
        };
        let retriable_grpc = grpc_status.is_some_and(|g| on.grpc(g));
        ((retriable_status && self.config.idempotent) || retriable_grpc)
            && replayable
            && self.retry_budget_left()
            && self.deadline.is_none_or(|d| now < d)
    }

    /// A complete response head arrived on the current try.
    pub fn handle_response_head(
        &mut self,
        now: Instant,
        status: u16,
        cluster: &mut ClusterState,
        rng: &mut Rng,
    ) -> Verdict {
        self.handle_grpc_response_head(now, status, None, cluster, rng)
    }

    /// A complete response head arrived on the current try, with the `grpc-status` it carries
    /// (a gRPC trailers-only answer): a status named in `retry_on` (`unavailable`, …) is
    /// retried when the body can be replayed — whatever the method, since every gRPC call is a
    /// POST and the route's `retry_on` opted in.
    pub fn handle_grpc_response_head(
        &mut self,
        now: Instant,
        status: u16,
        grpc_status: Option<u8>,
        cluster: &mut ClusterState,
        rng: &mut Rng,
    ) -> Verdict {
        let State::Waiting { host, .. } = self.state else {
            debug_assert!(false, "handle_response_head in {:?}", self.state);
            return Verdict::Forward;
        };
        if self.head_retried(now, status, grpc_status, self.config.replayable)
            && self.schedule_retry(now, cluster, rng)
        {
            self.release_host(cluster);
            return Verdict::Retry;
        }
        self.state = State::Responding { host };
        self.try_deadline = None;
        debug_assert!(!self.terminal);
        self.terminal = true;
        Verdict::Forward
    }

    /// The response was forwarded completely (or the downstream went away).
    pub fn handle_response_complete(&mut self, cluster: &mut ClusterState) {
        self.release(cluster);
        self.state = State::Done;
    }

    /// Time passed: a connect, per-try or global timeout, or a backoff, may have expired.
    pub fn handle_timeout(&mut self, now: Instant, cluster: &mut ClusterState, rng: &mut Rng) {
        if matches!(self.state, State::Done) {
            return;
        }
        if self.deadline.is_some_and(|d| now >= d) {
            let (host, connected) = match self.state {
                State::Connecting { host, .. } => (Some(host), false),
                State::Waiting { host, .. } | State::Responding { host } => (Some(host), true),
                State::Idle | State::Backoff { .. } | State::Done => (None, false),
            };
            self.events.push(Event::RouteTimedOut { host, connected });
            self.release_host(cluster);
            if matches!(self.state, State::Responding { .. }) {
                // The head is already downstream: the driver aborts the connection.
                self.release(cluster);
                self.state = State::Done;
            } else {
                self.local_reply(cluster, 504, ResponseFlag::UpstreamTimeout);
            }
            return;
        }
        match self.state {
            State::Connecting { deadline, .. } if now >= deadline => {
                self.fail_try(now, TryFailure::ConnectFailed, true, cluster, rng);
            }
            State::Waiting { host, written, .. } if self.try_deadline.is_some_and(|d| now >= d) => {
                // A per-try timeout: like a reset after the request was written.
                self.events.push(Event::PerTryTimedOut { host });
                self.release_host(cluster);
                self.last_failure = Some(ResponseFlag::UpstreamTimeout);
                let on = self.config.retry.map(|r| r.retry_on).unwrap_or_default();
                let allowed = if written {
                    self.config.idempotent
                        && self.config.replayable
                        && (on.reset || on.server_error || on.gateway_error)
                } else {
                    true
                };
                if !(allowed && self.retry_budget_left() && self.schedule_retry(now, cluster, rng))
                {
                    self.local_reply(cluster, 504, ResponseFlag::UpstreamTimeout);
                }
            }
            State::Backoff { until } if now >= until => self.begin_try(now, cluster, rng),
            _ => {}
        }
    }

    /// Gives back the host's `begin` and the retry breaker's unit if held (idempotent); call
    /// when the exchange is dropped early (downstream gone).
    pub fn release(&mut self, cluster: &mut ClusterState) {
        self.release_host(cluster);
        if let Some(p) = self.retry_permit.take() {
            cluster.breakers_mut().release(p);
        }
    }

    fn release_host(&mut self, cluster: &mut ClusterState) {
        if let Some(h) = self.holding.take() {
            cluster.end(h);
        }
    }

    // ---- output ----

    /// The next action, if any.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.action.take()
    }

    /// The next event, if any; drain after every input (see [`Event`]).
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop()
    }

    /// When `handle_timeout` must be called next.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.deadlines() {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    // ---- queries ----

    /// When the route's timeout expires (`None`: no timeout, or it has not started — it starts
    /// when the request is complete). A gRPC request's `grpc-timeout` is rewritten to the time
    /// left until it for each try.
    #[must_use]
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// The host of the current try.
    #[must_use]
    pub fn host(&self) -> Option<HostId> {
        match self.state {
            State::Connecting { host, .. }
            | State::Waiting { host, .. }
            | State::Responding { host } => Some(host),
            _ => None,
        }
    }

    /// Tries started so far (first try included).
    #[must_use]
    pub fn tries(&self) -> usize {
        self.tries
    }

    /// Whether a retry was not made because the cluster's retry budget was spent (or its
    /// `max_retries` breaker was at its limit).
    #[must_use]
    pub fn retry_overflowed(&self) -> bool {
        self.retry_overflowed
    }

    /// The route deadline and the current try's deadline (its connect or per-try timeout, or
    /// the end of its backoff), the two timers behind [`Exchange::poll_timeout`]; none once over.
    #[must_use]
    pub fn deadlines(&self) -> (Option<Instant>, Option<Instant>) {
        let try_deadline = match self.state {
            State::Connecting { deadline, .. } => Some(deadline),
            State::Waiting { .. } => self.try_deadline,
            State::Backoff { until } => Some(until),
            State::Responding { .. } | State::Idle | State::Done => None,
        };
        match self.state {
            State::Done => (None, None),
            _ => (self.deadline, try_deadline),
        }
    }

    /// Whether the current try is still connecting.
    #[must_use]
    pub fn is_connecting(&self) -> bool {
        matches!(self.state, State::Connecting { .. })
    }

    /// Whether the exchange is over.
    #[must_use]
    pub fn is_done(&self) -> bool {
        matches!(self.state, State::Done)
    }

    // ---- internals ----

    fn retry_budget_left(&self) -> bool {
        let allowed = self.config.retry.map_or(0, |r| r.num_retries);
        self.retries_used < allowed && self.tries < MAX_TRIES
    }

    /// Schedules a retry after a backoff; false (and nothing changes) when the `max_retries`
    /// breaker is at its limit.
    fn schedule_retry(&mut self, now: Instant, cluster: &mut ClusterState, rng: &mut Rng) -> bool {
        if cluster
            .breakers_mut()
            .try_retry(now, &mut self.retry_permit)
            .is_err()
        {
            self.retry_overflowed = true;
            return false;
        }
        self.retries_used += 1;
        let ceiling = BACKOFF_BASE
            .saturating_mul(1 << (self.retries_used - 1).min(10))
            .min(BACKOFF_MAX);
        let jitter = Duration::from_micros(rng.below(ceiling.as_micros() as u64 + 1));
        self.state = State::Backoff {
            until: now + jitter,
        };
        self.try_deadline = None;
        true
    }

    fn begin_try(&mut self, now: Instant, cluster: &mut ClusterState, rng: &mut Rng) {
        let tried = &self.tried[..self.tries.min(MAX_TRIES)];
        let Some(host) = cluster.pick_hashed(rng, tried, self.config.hash) else {
            let flag = if self.tries == 0 {
                ResponseFlag::NoHealthyUpstream
            } else {
                self.last_failure.unwrap_or(ResponseFlag::NoHealthyUpstream)
            };
            self.local_reply(cluster, status_for(flag), flag);
            return;
        };
        if self.tries < MAX_TRIES {
            self.tried[self.tries] = host;
        }
        self.tries += 1;
        let mut deadline = now + self.config.connect_timeout;
        if let Some(d) = self.deadline {
            deadline = deadline.min(d);
        }
        self.state = State::Connecting { host, deadline };
        self.action = Some(Action::Connect {
            host,
            address: cluster.host(host).address,
            allow_pooled: std::mem::replace(&mut self.next_allow_pooled, true),
        });
    }

    fn local_reply(&mut self, cluster: &mut ClusterState, status: u16, flag: ResponseFlag) {
        debug_assert!(!self.terminal, "second terminal output");
        self.release(cluster);
        self.terminal = true;
        self.state = State::Done;
        self.try_deadline = None;
        self.action = Some(Action::LocalReply { status, flag });
    }
}

/// The status the proxy answers with for a failure.
#[must_use]
pub fn status_for(flag: ResponseFlag) -> u16 {
    match flag {
        ResponseFlag::NoRoute => 404,
        ResponseFlag::NoHealthyUpstream | ResponseFlag::UpstreamOverflow => 503,
        ResponseFlag::UpstreamTimeout => 504,
        ResponseFlag::DownstreamProtocolError => 400,
        ResponseFlag::DownstreamLimit => 431,
        ResponseFlag::UpgradeRefused => 403,
        ResponseFlag::DirectResponse => 200,
        ResponseFlag::UpstreamConnectFailure
        | ResponseFlag::UpstreamConnectionTermination
        | ResponseFlag::UpstreamProtocolError => 502,
    }
}

#[cfg(test)]
mod tests;
