//! The policy of one downstream HTTP/1.1 connection (sans IO): how long it waits for a request,
//! what a timer firing means, and whether it may carry another request. The driver moves bytes
//! and sleeps until [`ConnectionPolicy::poll_timeout`].
//!
//! ## States
//!
//! ```text
//!            first byte                 head parsed
//!  Awaiting ───────────▶ ReadingHead ───────────────▶ Serving ──response done, reusable──▶ Awaiting
//!     │ deadline              │ deadline                  └──────response done, not reusable──▶ Closed
//!     ▼                       ▼
//!  Closed (first request: FirstByteTimeout; else IdleClose)   Closed (HeadTimeout: 408)
//! ```
//!
//! - The first request must start and complete its head within `request_headers_timeout` of
//!   the accept: a connection that never sends is not held for the keep-alive idle timeout.
//! - A later request may start within `idle_timeout` of the previous response; its head must
//!   then complete within `request_headers_timeout` of its first byte.
//! - Draining: an idle connection still gets [`DRAIN_IDLE_GRACE`] for a request that may already
//!   be on its way (a keep-alive client sends its next request without waiting); that request is
//!   answered with `connection: close` (see [`keeps_alive`]), so the client reconnects instead
//!   of seeing its request dropped by a close racing with it.
//! - Pipelining: bytes of the next request already buffered skip the wait (`Awaiting` is left
//!   at once by [`ConnectionPolicy::handle_first_byte`]).
//! - Parking: a connection still waiting [`IDLE_PARK_GRACE`] after a response is idle, not
//!   between two requests of a busy client: the timer fires once more, as
//!   [`Expired::Park`], and the driver drops what only a request in flight needs (the runtime:
//!   its request-path state) and waits on for the same deadline with only the connection's
//!   own. It is the same wait, with one deadline at a time (the earlier of the park and the
//!   wait's end, see [`ConnectionPolicy::poll_timeout`]); a connection parks at most once per
//!   wait, and not before its first request (it has nothing to drop then).

use std::time::Duration;

use crate::time::Instant;

/// How long a draining connection still waits for a request that may be on its way.
pub const DRAIN_IDLE_GRACE: Duration = Duration::from_secs(1);

/// How long a kept-alive connection waits for its next request before it parks
/// ([`Expired::Park`]). A client that sends at least a request a second never parks, so a busy
/// connection never pays for building its request state again; a pool of idle keep-alive
/// connections is down to the parked size within a second. (nginx frees a request's memory as
/// soon as a keep-alive connection has nothing to read; Envoy keeps a connection's state until
/// it closes.)
pub const IDLE_PARK_GRACE: Duration = Duration::from_secs(1);

/// The listener's settings the policy needs.
#[derive(Clone, Copy, Debug)]
pub struct ConnectionSettings {
    /// A request head must be complete within this of its start (the first: of the accept).
    pub request_headers_timeout: Duration,
    /// The longest wait for the next request on a kept-alive connection (`None`: no limit).
    pub idle_timeout: Option<Duration>,
}

/// What an expired timer means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expired {
    /// The connection sent nothing within `request_headers_timeout` of its accept: close.
    FirstByteTimeout,
    /// Idle too long between requests (or draining past the grace): close quietly.
    IdleClose,
    /// A request head did not complete in time: answer 408 and close.
    HeadTimeout,
    /// Not an end: no request came within [`IDLE_PARK_GRACE`] of the last response, and the
    /// wait goes on (same deadline) with the connection parked.
    Park,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Awaiting {
        /// When the wait ends; `None`: no idle limit and not draining.
        deadline: Option<Instant>,
        /// The idle (or first-byte) deadline before any drain shortened it.
        idle: Option<Instant>,
        /// When the connection parks, if it has not yet (after a response only).
        park: Option<Instant>,
    },
    ReadingHead {
        deadline: Instant,
    },
    Serving,
    Closed,
}

/// One downstream connection's policy. See the module doc.
#[derive(Debug)]
pub struct ConnectionPolicy {
    settings: ConnectionSettings,
    state: State,
    /// Set until the first request head started: its deadline counts from the accept.
    first_deadline: Option<Instant>,
}

impl ConnectionPolicy {
    /// A connection accepted at `now`; `draining` when the engine already drains.
    #[must_use]
    pub fn new(now: Instant, settings: ConnectionSettings, draining: bool) -> Self {
        let first = now + settings.request_headers_timeout;
        let mut policy = ConnectionPolicy {
            settings,
            state: State::Closed,
            first_deadline: Some(first),
        };
        policy.await_request(now, Some(first), draining, None);
        policy
    }

    /// The engine started draining: an idle wait ends within [`DRAIN_IDLE_GRACE`].
    pub fn handle_drain(&mut self, now: Instant) {
        if let State::Awaiting { deadline, .. } = &mut self.state {
            let grace = now + DRAIN_IDLE_GRACE;
            *deadline = Some(deadline.map_or(grace, |d| d.min(grace)));
        }
    }

    /// The first byte of a request arrived (or was already buffered): its head must complete
    /// in time.
    pub fn handle_first_byte(&mut self, now: Instant) {
        if !matches!(self.state, State::Awaiting { .. }) {
            debug_assert!(false, "first byte in {:?}", self.state);
            return;
        }
        let deadline = self
            .first_deadline
            .take()
            .unwrap_or(now + self.settings.request_headers_timeout);
        self.state = State::ReadingHead { deadline };
    }

    /// The request head is complete: the request is served (no connection timer meanwhile).
    pub fn handle_head_complete(&mut self) {
        debug_assert!(matches!(self.state, State::ReadingHead { .. }));
        self.state = State::Serving;
    }

    /// The response went out; `reusable`: the connection may carry another request (see
    /// [`keeps_alive`]). Whether to wait for one.
    pub fn handle_response_done(&mut self, now: Instant, reusable: bool, draining: bool) -> bool {
        if !reusable {
            self.state = State::Closed;
            return false;
        }
        let idle = self.settings.idle_timeout.map(|d| now + d);
        self.await_request(now, idle, draining, Some(now + IDLE_PARK_GRACE));
        true
    }

    /// The connection closed (peer gone, error): nothing more to time.
    pub fn handle_closed(&mut self) {
        self.state = State::Closed;
    }

    /// A timer passed `now`: what it means, if anything expired (the connection then closes,
    /// except on [`Expired::Park`]: it parks and waits on).
    pub fn handle_timeout(&mut self, now: Instant) -> Option<Expired> {
        let expired = match &mut self.state {
            State::Awaiting {
                deadline: Some(d),
                idle,
                ..
            } if now >= *d => {
                let (d, idle) = (*d, *idle);
                if self.first_deadline.is_some() && idle == Some(d) {
                    Expired::FirstByteTimeout
                } else {
                    Expired::IdleClose
                }
            }
            State::Awaiting { park, .. } if park.is_some_and(|p| now >= p) => {
                *park = None;
                return Some(Expired::Park);
            }
            State::ReadingHead { deadline } if now >= *deadline => Expired::HeadTimeout,
            _ => return None,
        };
        self.state = State::Closed;
        Some(expired)
    }

    /// When [`ConnectionPolicy::handle_timeout`] must be called next.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            State::Awaiting { deadline, park, .. } => match (deadline, park) {
                (Some(d), Some(p)) => Some(d.min(p)),
                (d, p) => d.or(p),
            },
            State::ReadingHead { deadline } => Some(deadline),
            State::Serving | State::Closed => None,
        }
    }

    /// Whether the connection is waiting for a request to start.
    #[must_use]
    pub fn is_awaiting(&self) -> bool {
        matches!(self.state, State::Awaiting { .. })
    }

    /// Whether the connection has parked in its current wait (or has nothing to park: its
    /// first request is not there yet).
    #[must_use]
    pub fn is_parked(&self) -> bool {
        matches!(self.state, State::Awaiting { park: None, .. })
    }

    fn await_request(
        &mut self,
        now: Instant,
        idle: Option<Instant>,
        draining: bool,
        park: Option<Instant>,
    ) {
        let deadline = if draining {
            let grace = now + DRAIN_IDLE_GRACE;
            Some(idle.map_or(grace, |d| d.min(grace)))
        } else {
            idle
        };
        // A park at or after the end of the wait never comes: the wait ends first.
        let park = park.filter(|p| deadline.is_none_or(|d| *p < d));
        self.state = State::Awaiting {
            deadline,
            idle,
            park,
        };
    }
}

/// Whether the downstream connection may carry another request after this response: the
/// client did not ask to close, the response is not delimited by the close, and the proxy is
/// not draining.
#[must_use]
pub fn keeps_alive(
    request_keep_alive: bool,
    response_close_delimited: bool,
    draining: bool,
) -> bool {
    request_keep_alive && !response_close_delimited && !draining
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::epoch;

    fn settings() -> ConnectionSettings {
        ConnectionSettings {
            request_headers_timeout: Duration::from_secs(10),
            idle_timeout: Some(Duration::from_secs(60)),
        }
    }

    #[test]
    fn a_silent_new_connection_times_out_from_its_accept() {
        let t = epoch();
        let mut p = ConnectionPolicy::new(t, settings(), false);
        assert_eq!(p.poll_timeout(), Some(t + Duration::from_secs(10)));
        assert_eq!(p.handle_timeout(t + Duration::from_secs(9)), None);
        assert_eq!(
            p.handle_timeout(t + Duration::from_secs(10)),
            Some(Expired::FirstByteTimeout)
        );
        assert_eq!(p.poll_timeout(), None);
    }

    #[test]
    fn the_first_head_counts_from_the_accept_later_ones_from_their_first_byte() {
        let t = epoch();
        let mut p = ConnectionPolicy::new(t, settings(), false);
        p.handle_first_byte(t + Duration::from_secs(3));
        assert_eq!(p.poll_timeout(), Some(t + Duration::from_secs(10)));
        p.handle_head_complete();
        assert_eq!(p.poll_timeout(), None, "no connection timer while serving");
        let done = t + Duration::from_secs(20);
        assert!(p.handle_response_done(done, true, false));
        assert_eq!(p.poll_timeout(), Some(done + IDLE_PARK_GRACE));
        assert_eq!(
            p.handle_timeout(done + IDLE_PARK_GRACE),
            Some(Expired::Park)
        );
        assert_eq!(p.poll_timeout(), Some(done + Duration::from_secs(60)));
        let next = done + Duration::from_secs(30);
        p.handle_first_byte(next);
        assert_eq!(p.poll_timeout(), Some(next + Duration::from_secs(10)));
        assert_eq!(
            p.handle_timeout(next + Duration::from_secs(10)),
            Some(Expired::HeadTimeout)
        );
    }

    #[test]
    fn idle_keep_alive_closes_quietly_and_draining_shortens_the_wait_to_the_grace() {
        let t = epoch();
        let mut p = ConnectionPolicy::new(t, settings(), false);
        p.handle_first_byte(t);
        p.handle_head_complete();
        assert!(p.handle_response_done(t, true, false));
        assert_eq!(p.handle_timeout(t + IDLE_PARK_GRACE), Some(Expired::Park));
        p.handle_drain(t + Duration::from_secs(5));
        let grace_end = t + Duration::from_secs(5) + DRAIN_IDLE_GRACE;
        assert_eq!(p.poll_timeout(), Some(grace_end));
        assert_eq!(p.handle_timeout(grace_end), Some(Expired::IdleClose));
        // Already draining when the response is done: the grace from then.
        let mut p = ConnectionPolicy::new(t, settings(), false);
        p.handle_first_byte(t);
        p.handle_head_complete();
        assert!(p.handle_response_done(t, true, true));
        assert_eq!(p.poll_timeout(), Some(t + DRAIN_IDLE_GRACE));
        // A response that cannot be followed closes.
        let mut p = ConnectionPolicy::new(t, settings(), false);
        p.handle_first_byte(t);
        p.handle_head_complete();
        assert!(!p.handle_response_done(t, false, false));
        assert_eq!(p.poll_timeout(), None);
    }

    #[test]
    fn a_drain_before_the_first_request_is_an_idle_close_not_a_first_byte_timeout() {
        let t = epoch();
        let mut p = ConnectionPolicy::new(t, settings(), true);
        assert_eq!(p.poll_timeout(), Some(t + DRAIN_IDLE_GRACE));
        assert_eq!(
            p.handle_timeout(t + DRAIN_IDLE_GRACE),
            Some(Expired::IdleClose)
        );
    }

    /// After a response, the wait's first timer is the park, [`IDLE_PARK_GRACE`] later; it
    /// fires once (the wait goes on, to the same idle deadline); a request that comes before
    /// it cancels it, and the next response arms it again. A first request has none; a park
    /// past the wait's end (a drain's grace) never comes.
    #[test]
    fn an_idle_keep_alive_connection_parks_once_after_the_grace_then_waits_on() {
        let t = epoch();
        let mut p = ConnectionPolicy::new(t, settings(), false);
        assert!(p.is_parked(), "nothing to park before the first request");
        assert_eq!(p.poll_timeout(), Some(t + Duration::from_secs(10)));
        p.handle_first_byte(t);
        p.handle_head_complete();
        assert!(p.handle_response_done(t, true, false));
        assert!(!p.is_parked());
        let park = t + IDLE_PARK_GRACE;
        assert_eq!(p.poll_timeout(), Some(park));
        assert_eq!(p.handle_timeout(park - Duration::from_millis(1)), None);
        assert_eq!(p.handle_timeout(park), Some(Expired::Park));
        assert!(p.is_parked() && p.is_awaiting());
        let idle_end = t + Duration::from_secs(60);
        assert_eq!(p.poll_timeout(), Some(idle_end), "the same idle deadline");
        assert_eq!(p.handle_timeout(park + Duration::from_secs(1)), None);
        // A request on the parked connection, then another response: the park again.
        let next = t + Duration::from_secs(30);
        p.handle_first_byte(next);
        p.handle_head_complete();
        assert!(p.handle_response_done(next, true, false));
        assert_eq!(p.poll_timeout(), Some(next + IDLE_PARK_GRACE));
        // Back-to-back: the next request comes within the grace, no park.
        p.handle_first_byte(next + IDLE_PARK_GRACE / 2);
        assert_eq!(p.handle_timeout(next + IDLE_PARK_GRACE), None);
        p.handle_head_complete();
        assert_eq!(p.poll_timeout(), None);
        // The idle deadline still closes a parked connection.
        assert!(p.handle_response_done(next, true, false));
        assert_eq!(
            p.handle_timeout(next + IDLE_PARK_GRACE),
            Some(Expired::Park)
        );
        assert_eq!(
            p.handle_timeout(next + Duration::from_secs(60)),
            Some(Expired::IdleClose)
        );
        // An idle timeout within the grace: it closes, no park first.
        let short = ConnectionSettings {
            idle_timeout: Some(IDLE_PARK_GRACE / 2),
            ..settings()
        };
        let mut p = ConnectionPolicy::new(t, short, false);
        p.handle_first_byte(t);
        p.handle_head_complete();
        assert!(p.handle_response_done(t, true, false));
        assert_eq!(p.poll_timeout(), Some(t + IDLE_PARK_GRACE / 2));
        assert_eq!(
            p.handle_timeout(t + IDLE_PARK_GRACE),
            Some(Expired::IdleClose)
        );
        // A drain that cuts the wait before the park: closed at the grace's end.
        let mut p = ConnectionPolicy::new(t, settings(), false);
        p.handle_first_byte(t);
        p.handle_head_complete();
        assert!(p.handle_response_done(t, true, false));
        p.handle_drain(t);
        assert_eq!(
            p.handle_timeout(t + DRAIN_IDLE_GRACE),
            Some(Expired::IdleClose)
        );
    }

    #[test]
    fn keep_alive_needs_the_client_the_framing_and_no_drain() {
        assert!(keeps_alive(true, false, false));
        assert!(!keeps_alive(false, false, false));
        assert!(!keeps_alive(true, true, false));
        assert!(!keeps_alive(true, false, true));
    }
}
