//! One request's stream through the proxy, whatever protocol carried it: admit → exchange →
//! respond. The driver feeds it inputs through one method ([`Stream::handle_input`]) and
//! carries out what comes out of one queue ([`Stream::poll_output`]), drained after every input
//! (str0m's `handle_input` / `poll_output`, quinn-proto's events beside its transmits).
//!
//! ## States
//!
//! ```text
//!  New ──Admit──▶ Admitted ──Start──▶ Exchanging ──ResponseHead (forwarded)──▶ Responding
//!   │ max_requests                       │  ▲ OpenConnection: Opening (pending +              │
//!   │ at its limit                       │  │ connection permits) until Connected /           │
//!   ▼                                    │  │ ConnectFailed / timeout                         │
//!  Finished ◀── Respond (local answer) ◀─┘  └─ retries, inside the exchange                  │
//!     ▲                                                                                       │
//!     └──────────── ResponseComplete ◀── (Upgraded: Tunnel, the request permit kept) ◀────────┘
//! ```
//!
//! `Abort` (the client went away, failed its upload, or the driver gives up) finishes the
//! stream from any state.
//!
//! ## Permits (the invariant)
//!
//! Every circuit-breaker unit the request takes is taken and given back here, exactly once, on
//! every path:
//!
//! - `max_requests`: from `Admit` until the stream finishes;
//! - `max_pending_requests`: while a fresh connection is being opened (from `OpenConnection`
//!   until it is connected, fails, or a timer ends the try);
//! - `max_connections`: taken with the pending unit; given back if the connect does not
//!   complete, else handed to the driver with [`Output::ConnectionPermit`] — the connection
//!   holds it until it closes (pooled idle time included);
//! - `max_retries` (when configured instead of a retry budget): held by the exchange from the
//!   first retry until it ends.
//!
//! When the stream is finished it holds nothing; a stream dropped unfinished would leak, which
//! `Abort` prevents (debug builds assert it on drop).
//!
//! ## Timers, by name
//!
//! Two timers: [`Timer::Route`] (the route's timeout) and [`Timer::Try`] (the current try's
//! connect timeout, per-try timeout or retry backoff). The stream emits `ArmTimer` /
//! `CancelTimer` when one changes; [`Stream::poll_timeout`] is the earlier of the two, for a
//! driver that keeps a single sleep. Either firing is the one input `Timeout`: which deadline
//! passed is the stream's business, and its events say it.

use crate::cluster::{ClusterState, HostId};
use crate::health::{Permit, Resource};
use crate::rng::Rng;
use crate::time::Instant;

use super::exchange::{
    self, Action, Exchange, ExchangeConfig, ResponseFlag, TryFailure, Verdict, status_for,
};

/// An input from the driver.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Input {
    /// Admit the request into its cluster: takes the `max_requests` unit (or answers 503 `UO`).
    Admit,
    /// Start the first try (after `Admit`; the driver may refresh host availability between).
    Start,
    /// The try's host has no pooled connection the driver may use (see [`Output::Connect`]):
    /// open a fresh one. Takes the `max_connections` and `max_pending_requests` units (or
    /// answers 503 `UO`).
    OpenConnection,
    /// The try's connection is ready; `reused`: it came from the pool.
    Connected {
        /// Whether the connection was pooled.
        reused: bool,
    },
    /// The fresh connection could not be opened (refused, errored).
    ConnectFailed,
    /// The first request byte was written on the try's connection.
    RequestWritten,
    /// The downstream request, body included, was received in full.
    RequestComplete,
    /// A body that was streamed while it arrived (not replayable at the start) ended within the
    /// driver's replay buffer, of which it kept a copy: from now on a retry can send it again.
    /// Comes before the `RequestComplete` of the same upload.
    BodyBuffered,
    /// The try failed after its connection was ready.
    TryFailed(TryFailure),
    /// A complete response head arrived with this status.
    ResponseHead {
        /// The status.
        status: u16,
        /// The `grpc-status` of a gRPC answer's head (trailers-only), if any.
        grpc_status: Option<u8>,
    },
    /// The forwarded response was a protocol upgrade: the upstream is done with, the tunnel
    /// that follows still counts as a request until `ResponseComplete`.
    Upgraded,
    /// The response was forwarded completely, or the tunnel closed (or the downstream went
    /// away while it was forwarded).
    ResponseComplete,
    /// The driver ends the stream early: everything held is given back.
    Abort,
    /// A timer the stream armed may have expired.
    Timeout,
}

/// A timer of the stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Timer {
    /// The route's timeout (from the end of the downstream request).
    Route,
    /// The current try's: its connect timeout, its per-try timeout, or its backoff.
    Try,
}

/// What happened, for stats, logs and outlier detection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// The request was admitted (holds its `max_requests` unit).
    Admitted,
    /// A circuit breaker refused a unit: the request is answered 503 `UO`.
    Overflow(Resource),
    /// A try started on `host`; `retry`: not the first.
    TryStarted {
        /// The host.
        host: HostId,
        /// Whether it is a retry.
        retry: bool,
    },
    /// What the exchange saw go wrong (connect failed or timed out, reset, timeouts); carries
    /// the outlier mapping ([`exchange::Event::upstream_result`]).
    Exchange(exchange::Event),
    /// A retry was not made: the retry budget (or `max_retries`) was spent.
    RetryOverflowed,
    /// The response head with this status is forwarded downstream.
    ResponseStarted {
        /// The status.
        status: u16,
    },
    /// The stream is over and holds nothing; `flag` when the proxy answered itself (or gave
    /// up) rather than forwarding a response to completion.
    Finished {
        /// Why the proxy answered, if it did.
        flag: Option<ResponseFlag>,
    },
}

/// What the driver must do, or what happened.
#[derive(Debug, PartialEq, Eq)]
pub enum Output {
    /// Try `host`: a pooled connection to it when `allow_pooled` and one is idle (then
    /// `Connected { reused: true }`), else `OpenConnection`.
    Connect {
        /// The host.
        host: HostId,
        /// Its address.
        address: std::net::SocketAddr,
        /// Whether a pooled connection may be used (false for the stale-connection retry).
        allow_pooled: bool,
    },
    /// Open a fresh connection to the try's host, by the `Try` timer; answer `Connected` or
    /// `ConnectFailed`.
    OpenConnection,
    /// The fresh connection's `max_connections` unit: the connection holds it until it closes,
    /// then gives it back with [`crate::health::CircuitBreakers::release`].
    ConnectionPermit(Permit),
    /// Send the response head downstream (then its body; `ResponseComplete` at the end).
    ForwardResponse,
    /// Drop the response head and its connection: a retry follows.
    DiscardResponse,
    /// The route timed out after the response head was forwarded: cut the downstream (the
    /// answer cannot be completed nor replaced); the stream is finished.
    AbortResponse,
    /// Answer the downstream from the proxy; the stream is finished.
    Respond {
        /// HTTP status (a codec maps it for its protocol).
        status: u16,
        /// Why.
        flag: ResponseFlag,
    },
    /// Arm (or move) a timer.
    ArmTimer {
        /// Which.
        timer: Timer,
        /// When it fires.
        at: Instant,
    },
    /// Cancel a timer.
    CancelTimer(Timer),
    /// Something happened.
    Event(Event),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    New,
    Admitted,
    Exchanging,
    Tunnel,
    Finished,
}

/// Outputs not yet polled, in fixed slots (the stream stays allocation-free). One input emits
/// at most a handful; the driver drains after every input.
#[derive(Debug, Default)]
struct OutputQueue {
    slots: [Option<Output>; 8],
    head: usize,
    len: usize,
}

impl OutputQueue {
    fn push(&mut self, output: Output) {
        assert!(
            self.len < self.slots.len(),
            "stream output queue full: drain poll_output after every input"
        );
        self.slots[(self.head + self.len) % self.slots.len()] = Some(output);
        self.len += 1;
    }

    fn pop(&mut self) -> Option<Output> {
        if self.len == 0 {
            return None;
        }
        let output = self.slots[self.head].take();
        self.head = (self.head + 1) % self.slots.len();
        self.len -= 1;
        output
    }
}

/// One request's stream. See the module doc.
#[derive(Debug)]
pub struct Stream {
    exchange: Exchange,
    phase: Phase,
    request_permit: Option<Permit>,
    pending_permit: Option<Permit>,
    connection_permit: Option<Permit>,
    /// The try (count) the pending and connection units were taken for.
    opening_try: usize,
    armed: [Option<Instant>; 2],
    outputs: OutputQueue,
}

impl Stream {
    /// A stream for one request routed to a cluster; `Admit` next.
    #[must_use]
    pub fn new(now: Instant, config: ExchangeConfig) -> Self {
        Stream {
            exchange: Exchange::new(now, config),
            phase: Phase::New,
            request_permit: None,
            pending_permit: None,
            connection_permit: None,
            opening_try: 0,
            armed: [None; 2],
            outputs: OutputQueue::default(),
        }
    }

    /// The one input method; drain [`Stream::poll_output`] after it.
    pub fn handle_input(
        &mut self,
        now: Instant,
        input: Input,
        cluster: &mut ClusterState,
        rng: &mut Rng,
    ) {
        if self.phase == Phase::Finished {
            return;
        }
        match input {
            Input::Admit => {
                debug_assert_eq!(self.phase, Phase::New, "Admit twice");
                match cluster.breakers_mut().try_acquire(Resource::Requests) {
                    Ok(p) => {
                        self.request_permit = Some(p);
                        self.phase = Phase::Admitted;
                        self.event(Event::Admitted);
                    }
                    Err(_) => self.overflow(cluster, Resource::Requests),
                }
                return;
            }
            Input::Start => {
                debug_assert_eq!(self.phase, Phase::Admitted, "Start before Admit");
                self.phase = Phase::Exchanging;
                self.exchange.start(now, cluster, rng);
            }
            Input::OpenConnection => {
                debug_assert!(self.exchange.is_connecting(), "OpenConnection with no try");
                let breakers = cluster.breakers_mut();
                let connection = match breakers.try_acquire(Resource::Connections) {
                    Ok(p) => p,
                    Err(_) => return self.overflow(cluster, Resource::Connections),
                };
                match breakers.try_acquire(Resource::PendingRequests) {
                    Ok(pending) => {
                        self.connection_permit = Some(connection);
                        self.pending_permit = Some(pending);
                        self.opening_try = self.exchange.tries();
                        self.outputs.push(Output::OpenConnection);
                    }
                    Err(_) => {
                        breakers.release(connection);
                        return self.overflow(cluster, Resource::PendingRequests);
                    }
                }
                return;
            }
            Input::Connected { reused } => {
                if let Some(p) = self.pending_permit.take() {
                    cluster.breakers_mut().release(p);
                }
                if let Some(p) = self.connection_permit.take() {
                    self.outputs.push(Output::ConnectionPermit(p));
                }
                self.exchange.handle_connected(now, reused, cluster);
            }
            Input::ConnectFailed => {
                self.exchange
                    .handle_failure(now, TryFailure::ConnectFailed, cluster, rng);
            }
            Input::RequestWritten => self.exchange.handle_request_written(),
            Input::RequestComplete => self.exchange.handle_request_complete(now),
            Input::BodyBuffered => self.exchange.handle_body_buffered(),
            Input::TryFailed(failure) => self.exchange.handle_failure(now, failure, cluster, rng),
            Input::ResponseHead {
                status,
                grpc_status,
            } => {
                match self.exchange.handle_grpc_response_head(
                    now,
                    status,
                    grpc_status,
                    cluster,
                    rng,
                ) {
                    Verdict::Retry => self.outputs.push(Output::DiscardResponse),
                    Verdict::Forward => {
                        if self.exchange.retry_overflowed() {
                            self.event(Event::RetryOverflowed);
                        }
                        self.event(Event::ResponseStarted { status });
                        self.outputs.push(Output::ForwardResponse);
                    }
                }
            }
            Input::Upgraded => {
                self.exchange.handle_response_complete(cluster);
                self.phase = Phase::Tunnel;
            }
            Input::ResponseComplete => {
                self.exchange.handle_response_complete(cluster);
                self.finish(cluster, None);
            }
            Input::Abort => {
                self.exchange.release(cluster);
                self.finish(cluster, None);
            }
            Input::Timeout => self.exchange.handle_timeout(now, cluster, rng),
        }
        self.after_exchange_input(cluster);
    }

    /// The next output, if any.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop()
    }

    /// When a timer fires next (the earlier of the armed ones).
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.armed {
            [Some(a), Some(b)] => Some(a.min(b)),
            [a, b] => a.or(b),
        }
    }

    /// When the route's timeout expires ([`Exchange::deadline`]).
    #[must_use]
    pub fn deadline(&self) -> Option<Instant> {
        self.exchange.deadline()
    }

    /// Whether the current try's `failure`, about to be handed in, would be retried were the
    /// body (still arriving, kept whole so far) replayable ([`Exchange::retry_wants_body`]):
    /// then the driver reads the rest of it first, and gives `BodyBuffered` when it ended
    /// within the copy, before `TryFailed`.
    #[must_use]
    pub fn retry_wants_body(&self, now: Instant, failure: TryFailure) -> bool {
        !self.is_finished() && self.exchange.retry_wants_body(now, failure)
    }

    /// Whether the current try's response head (`status`, `grpc_status`), about to be handed
    /// in, would be retried were the body (still arriving, kept whole so far) replayable
    /// ([`Exchange::response_wants_body`]): then the driver reads the rest of it first, and
    /// gives `BodyBuffered` when it ended within the copy, before `ResponseHead`.
    #[must_use]
    pub fn response_wants_body(&self, now: Instant, status: u16, grpc_status: Option<u8>) -> bool {
        !self.is_finished() && self.exchange.response_wants_body(now, status, grpc_status)
    }

    /// Tries started so far.
    #[must_use]
    pub fn tries(&self) -> usize {
        self.exchange.tries()
    }

    /// Whether the stream is over (it then holds no permit).
    #[must_use]
    pub fn is_finished(&self) -> bool {
        self.phase == Phase::Finished
    }

    /// Units held now: (requests, pending, connections not yet handed over). For tests and
    /// debug checks.
    #[must_use]
    pub fn permits_held(&self) -> (bool, bool, bool) {
        (
            self.request_permit.is_some(),
            self.pending_permit.is_some(),
            self.connection_permit.is_some(),
        )
    }

    // ---- internals ----

    /// Translates what the exchange did into outputs: its events, its action, the opening
    /// units a try no longer needs, the timers.
    fn after_exchange_input(&mut self, cluster: &mut ClusterState) {
        while let Some(e) = self.exchange.poll_event() {
            self.event(Event::Exchange(e));
        }
        // The units of a connection being opened go back when that try ends without one.
        if (self.pending_permit.is_some() || self.connection_permit.is_some())
            && (!self.exchange.is_connecting() || self.exchange.tries() != self.opening_try)
        {
            self.release_opening(cluster);
        }
        match self.exchange.poll_action() {
            Some(Action::Connect {
                host,
                address,
                allow_pooled,
            }) => {
                self.event(Event::TryStarted {
                    host,
                    retry: self.exchange.tries() > 1,
                });
                self.outputs.push(Output::Connect {
                    host,
                    address,
                    allow_pooled,
                });
            }
            Some(Action::LocalReply { status, flag }) => {
                if self.exchange.retry_overflowed() {
                    self.event(Event::RetryOverflowed);
                }
                self.outputs.push(Output::Respond { status, flag });
                self.finish(cluster, Some(flag));
            }
            None if self.exchange.is_done() && self.phase == Phase::Exchanging => {
                // Only the route timeout ends a forwarded response this way.
                self.outputs.push(Output::AbortResponse);
                self.finish(cluster, Some(ResponseFlag::UpstreamTimeout));
            }
            None => {}
        }
        self.update_timers();
    }

    fn update_timers(&mut self) {
        let (route, try_deadline) = if self.phase == Phase::Finished {
            (None, None)
        } else {
            self.exchange.deadlines()
        };
        for (i, (timer, want)) in [(Timer::Route, route), (Timer::Try, try_deadline)]
            .into_iter()
            .enumerate()
        {
            if self.armed[i] != want {
                self.armed[i] = want;
                self.outputs.push(match want {
                    Some(at) => Output::ArmTimer { timer, at },
                    None => Output::CancelTimer(timer),
                });
            }
        }
    }

    fn overflow(&mut self, cluster: &mut ClusterState, resource: Resource) {
        self.event(Event::Overflow(resource));
        let flag = ResponseFlag::UpstreamOverflow;
        self.outputs.push(Output::Respond {
            status: status_for(flag),
            flag,
        });
        self.exchange.release(cluster);
        self.finish(cluster, Some(flag));
        self.update_timers();
    }

    fn release_opening(&mut self, cluster: &mut ClusterState) {
        let breakers = cluster.breakers_mut();
        if let Some(p) = self.pending_permit.take() {
            breakers.release(p);
        }
        if let Some(p) = self.connection_permit.take() {
            breakers.release(p);
        }
    }

    fn finish(&mut self, cluster: &mut ClusterState, flag: Option<ResponseFlag>) {
        if self.phase == Phase::Finished {
            return;
        }
        self.release_opening(cluster);
        if let Some(p) = self.request_permit.take() {
            cluster.breakers_mut().release(p);
        }
        self.phase = Phase::Finished;
        self.event(Event::Finished { flag });
    }

    fn event(&mut self, event: Event) {
        self.outputs.push(Output::Event(event));
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        debug_assert!(
            self.request_permit.is_none()
                && self.pending_permit.is_none()
                && self.connection_permit.is_none()
                || std::thread::panicking(),
            "a stream dropped while holding circuit-breaker units: Abort it first"
        );
    }
}

#[cfg(test)]
mod tests;
