//! The binary-upgrade handover protocol, as two sans-IO state machines: [`OldInstance`] (the
//! running process, which owns the listening sockets) and [`NewInstance`] (the process started
//! with `--upgrade`, which takes them over).
//!
//! The runtime carries the messages over a Unix control socket and passes the listening sockets
//! with `SCM_RIGHTS`; the simulator carries them inside one simulated host. Neither the wire nor
//! the sockets appear here: the machines only decide *when* each side may accept, stop accepting,
//! give up, or exit.
//!
//! ## Messages
//!
//! ```text
//!   new                                   old
//!    | -- Request ------------------------> |   (old: Serving -> HandingOver{deadline})
//!    | <------------ Offer (header + fds) - |   (or Refuse when a handover is in progress / draining)
//!    |   new starts serving the inherited sockets
//!    | -- Serving ------------------------> |   (old: stops accepting, drains)
//!    | <------------------------ Draining - |   (the acknowledgement)
//! ```
//!
//! ## Old instance
//!
//! ```text
//! Serving --request--> HandingOver{conn, deadline} --new says Serving--> Draining --drained--> Exited
//!    ^                        |
//!    +--timeout / conn closed-+   (rollback: nothing to undo, the old never stopped accepting)
//! ```
//!
//! - A request while `HandingOver`, `Draining` or `Exited` is refused ([`OldAction::Refuse`]):
//!   one handover at a time, and a draining instance has nothing left to give.
//! - Messages on any connection other than the one being handed over are ignored.
//!
//! ## New instance
//!
//! ```text
//! Requesting{deadline} --offer header--> Receiving{deadline} --fds--> Starting{deadline}
//!   --started--> Serving{deadline} --ack--> Done
//! any timeout / close / refusal before Serving --> Failed (exit with an error; the old keeps serving)
//! timeout / close while Serving --> Done (unacknowledged: keep serving, see below)
//! ```
//!
//! ## Invariants
//!
//! 1. At every moment at least one instance accepts on every listener socket
//!    ([`OldInstance::is_accepting`] or [`NewInstance::is_accepting`]).
//! 2. The old stops accepting ([`OldAction::StopAccepting`]) only after the new one serves and
//!    said so ([`NewAction::SendServing`] was emitted, and the new never fails after that).
//! 3. Once the new instance has told the old one it serves, it never gives up: a missing
//!    acknowledgement ends in [`NewState::Done`] with `acknowledged: false`. Exiting then could
//!    leave the sockets with no acceptor (the old may already be draining); staying costs at
//!    worst two instances serving the same sockets for a while.
//! 4. A new instance that fails before `Serving` never made the old stop accepting, so its exit
//!    loses nothing: the old rolls back when it sees the connection close or its deadline pass.
//!
//! The old's handover timeout should be longer than the new's, so that a new instance that
//! sends `Serving` just before its own deadline is still heard.

use std::collections::VecDeque;
use std::time::Duration;

use crate::time::Instant;

/// Identifies one control connection on the old instance's side (assigned by the driver).
pub type ConnId = u64;

/// Why the old instance refused an upgrade request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RefuseReason {
    /// Another handover is in progress.
    #[error("another upgrade is in progress")]
    HandoverInProgress,
    /// This instance has already handed its sockets over and is draining.
    #[error("this instance is draining after an upgrade")]
    Draining,
    /// This instance has exited.
    #[error("this instance has exited")]
    Exited,
}

/// Why the old instance abandoned a handover (and kept serving).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RollbackReason {
    /// The new instance did not say it serves before the deadline.
    #[error("the new instance did not report serving before the handover timeout")]
    Timeout,
    /// The control connection closed (or broke) before the new instance said it serves.
    #[error("the new instance closed the control connection before it reported serving")]
    Closed,
}

/// Where the old instance is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OldState {
    /// Accepting; no handover in progress.
    Serving,
    /// Accepting; the sockets were offered on `conn`, waiting for the new to say it serves.
    HandingOver {
        /// The control connection of the new instance.
        conn: ConnId,
        /// When the handover is abandoned.
        deadline: Instant,
    },
    /// Not accepting; finishing the connections it has.
    Draining,
    /// Drained; the process exits.
    Exited,
}

/// What the old instance's driver must do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OldAction {
    /// Send the offer (header and duplicates of every listening socket) on `conn`.
    SendOffer {
        /// The connection.
        conn: ConnId,
    },
    /// Answer `conn` with a refusal and close it. Nothing else changes.
    Refuse {
        /// The connection.
        conn: ConnId,
        /// Why.
        reason: RefuseReason,
    },
    /// The handover on `conn` is abandoned: close it and log. Nothing to undo: the old never
    /// stopped accepting (this is the "resume" of the rollback).
    Rollback {
        /// The connection.
        conn: ConnId,
        /// Why.
        reason: RollbackReason,
    },
    /// The new instance serves: stop accepting and start draining.
    StopAccepting,
    /// Acknowledge on `conn` that this instance is draining.
    SendDraining {
        /// The connection.
        conn: ConnId,
    },
    /// Draining is done: exit the process.
    Exit,
}

/// The running instance's side of a handover.
#[derive(Debug)]
pub struct OldInstance {
    state: OldState,
    timeout: Duration,
    actions: VecDeque<OldAction>,
}

impl OldInstance {
    /// A serving instance whose handovers time out after `timeout`.
    #[must_use]
    pub fn new(timeout: Duration) -> Self {
        OldInstance {
            state: OldState::Serving,
            timeout,
            actions: VecDeque::new(),
        }
    }

    /// The current state.
    #[must_use]
    pub fn state(&self) -> OldState {
        self.state
    }

    /// Whether this instance accepts on its listening sockets.
    #[must_use]
    pub fn is_accepting(&self) -> bool {
        matches!(self.state, OldState::Serving | OldState::HandingOver { .. })
    }

    /// A new instance asked for the sockets on `conn`.
    pub fn handle_upgrade_request(&mut self, now: Instant, conn: ConnId) {
        match self.state {
            OldState::Serving => {
                self.state = OldState::HandingOver {
                    conn,
                    deadline: now + self.timeout,
                };
                self.actions.push_back(OldAction::SendOffer { conn });
            }
            OldState::HandingOver { .. } => self.refuse(conn, RefuseReason::HandoverInProgress),
            OldState::Draining => self.refuse(conn, RefuseReason::Draining),
            OldState::Exited => self.refuse(conn, RefuseReason::Exited),
        }
    }

    /// The new instance on `conn` says it serves the inherited sockets.
    pub fn handle_serving(&mut self, _now: Instant, conn: ConnId) {
        if let OldState::HandingOver { conn: current, .. } = self.state
            && current == conn
        {
            // Acknowledge first, then stop: the new instance already accepts.
            self.state = OldState::Draining;
            self.actions.push_back(OldAction::SendDraining { conn });
            self.actions.push_back(OldAction::StopAccepting);
        }
        // Anything else (a stale or foreign connection) is ignored: it cannot make the old
        // stop accepting.
    }

    /// `conn` closed or broke (including a protocol error on it).
    pub fn handle_closed(&mut self, _now: Instant, conn: ConnId) {
        if let OldState::HandingOver { conn: current, .. } = self.state
            && current == conn
        {
            self.rollback(conn, RollbackReason::Closed);
        }
    }

    /// Draining is complete.
    pub fn handle_drained(&mut self, _now: Instant) {
        if self.state == OldState::Draining {
            self.state = OldState::Exited;
            self.actions.push_back(OldAction::Exit);
        }
    }

    /// Time passed; call when `now >= poll_timeout()`.
    pub fn handle_timeout(&mut self, now: Instant) {
        if let OldState::HandingOver { conn, deadline } = self.state
            && now >= deadline
        {
            self.rollback(conn, RollbackReason::Timeout);
        }
    }

    /// The next action, if any. Drain after every input.
    pub fn poll_action(&mut self) -> Option<OldAction> {
        self.actions.pop_front()
    }

    /// When to call [`OldInstance::handle_timeout`].
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            OldState::HandingOver { deadline, .. } => Some(deadline),
            _ => None,
        }
    }

    fn refuse(&mut self, conn: ConnId, reason: RefuseReason) {
        self.actions.push_back(OldAction::Refuse { conn, reason });
    }

    fn rollback(&mut self, conn: ConnId, reason: RollbackReason) {
        debug_assert!(matches!(self.state, OldState::HandingOver { .. }));
        self.state = OldState::Serving;
        self.actions.push_back(OldAction::Rollback { conn, reason });
    }
}

/// The step of the new instance's handover, for error messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NewPhase {
    /// Waiting for the offer.
    Requesting,
    /// Waiting for the sockets after the offer header.
    Receiving,
    /// Starting to serve the inherited sockets.
    Starting,
}

impl std::fmt::Display for NewPhase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            NewPhase::Requesting => "waiting for the old instance's offer",
            NewPhase::Receiving => "receiving the listening sockets",
            NewPhase::Starting => "starting to serve the inherited sockets",
        })
    }
}

/// Why the new instance gave up (it exits with an error; the old keeps serving).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NewFailure {
    /// A step took longer than the handover timeout.
    #[error("upgrade timed out while {0}")]
    Timeout(NewPhase),
    /// The old instance closed the control connection.
    #[error("the old instance closed the control connection while {0}")]
    Closed(NewPhase),
    /// The old instance refused.
    #[error("the old instance refused the upgrade: {0}")]
    Refused(String),
}

/// Where the new instance is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NewState {
    /// The request is sent; waiting for the offer.
    Requesting {
        /// When to give up.
        deadline: Instant,
    },
    /// The offer header arrived; waiting for the sockets.
    Receiving {
        /// When to give up.
        deadline: Instant,
    },
    /// The sockets arrived; the driver is starting to serve them.
    Starting {
        /// When to give up.
        deadline: Instant,
    },
    /// Serving the inherited sockets and told the old one; waiting for its acknowledgement.
    Serving {
        /// When to stop waiting (and carry on serving).
        deadline: Instant,
    },
    /// The handover is over; this instance serves.
    Done {
        /// Whether the old instance acknowledged that it drains.
        acknowledged: bool,
    },
    /// The handover failed before this instance served; it exits.
    Failed(NewFailure),
}

/// What the new instance's driver must do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NewAction {
    /// Send the upgrade request.
    SendRequest,
    /// The sockets arrived: start serving them, then call [`NewInstance::handle_started`].
    StartServing,
    /// Tell the old instance this one serves.
    SendServing,
    /// The handover is over; this instance serves (and may take over the control socket path).
    /// `acknowledged: false`: no acknowledgement came (timeout or close); keep serving anyway.
    Finished {
        /// Whether the old instance acknowledged that it drains.
        acknowledged: bool,
    },
    /// Give up and exit with this error; the old instance keeps serving.
    Fail(NewFailure),
}

/// The upgrading instance's side of a handover.
#[derive(Debug)]
pub struct NewInstance {
    state: NewState,
    timeout: Duration,
    actions: VecDeque<NewAction>,
}

impl NewInstance {
    /// Starts a handover at `now`; each step must complete within `timeout`.
    #[must_use]
    pub fn new(now: Instant, timeout: Duration) -> Self {
        NewInstance {
            state: NewState::Requesting {
                deadline: now + timeout,
            },
            timeout,
            actions: VecDeque::from([NewAction::SendRequest]),
        }
    }

    /// The current state.
    #[must_use]
    pub fn state(&self) -> &NewState {
        &self.state
    }

    /// Whether this instance accepts on the inherited sockets (from the moment it has told
    /// the old one; before that, only the old one counts).
    #[must_use]
    pub fn is_accepting(&self) -> bool {
        matches!(self.state, NewState::Serving { .. } | NewState::Done { .. })
    }

    /// Sets the timeout of the steps that start after this call (e.g. a different one for the
    /// acknowledgement than for the offer).
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// The offer header arrived.
    pub fn handle_offer(&mut self, now: Instant) {
        if let NewState::Requesting { .. } = self.state {
            self.state = NewState::Receiving {
                deadline: now + self.timeout,
            };
        }
    }

    /// All the offered sockets arrived.
    pub fn handle_fds(&mut self, now: Instant) {
        if let NewState::Receiving { .. } = self.state {
            self.state = NewState::Starting {
                deadline: now + self.timeout,
            };
            self.actions.push_back(NewAction::StartServing);
        }
    }

    /// The old instance refused.
    pub fn handle_refused(&mut self, _now: Instant, reason: String) {
        if self.phase().is_some() {
            self.fail(NewFailure::Refused(reason));
        }
    }

    /// The driver serves the inherited sockets.
    pub fn handle_started(&mut self, now: Instant) {
        if let NewState::Starting { .. } = self.state {
            self.state = NewState::Serving {
                deadline: now + self.timeout,
            };
            self.actions.push_back(NewAction::SendServing);
        }
    }

    /// The old instance acknowledged that it drains.
    pub fn handle_ack(&mut self, _now: Instant) {
        if let NewState::Serving { .. } = self.state {
            self.finish(true);
        }
    }

    /// The control connection closed or broke (including a protocol error on it).
    pub fn handle_closed(&mut self, _now: Instant) {
        if let Some(phase) = self.phase() {
            self.fail(NewFailure::Closed(phase));
        } else if let NewState::Serving { .. } = self.state {
            self.finish(false);
        }
    }

    /// Time passed; call when `now >= poll_timeout()`.
    pub fn handle_timeout(&mut self, now: Instant) {
        let Some(deadline) = self.poll_timeout() else {
            return;
        };
        if now < deadline {
            return;
        }
        if let Some(phase) = self.phase() {
            self.fail(NewFailure::Timeout(phase));
        } else {
            self.finish(false);
        }
    }

    /// The next action, if any. Drain after every input.
    pub fn poll_action(&mut self) -> Option<NewAction> {
        self.actions.pop_front()
    }

    /// When to call [`NewInstance::handle_timeout`].
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            NewState::Requesting { deadline }
            | NewState::Receiving { deadline }
            | NewState::Starting { deadline }
            | NewState::Serving { deadline } => Some(deadline),
            NewState::Done { .. } | NewState::Failed(_) => None,
        }
    }

    /// The phase, while failing is still allowed (before `Serving`).
    fn phase(&self) -> Option<NewPhase> {
        match self.state {
            NewState::Requesting { .. } => Some(NewPhase::Requesting),
            NewState::Receiving { .. } => Some(NewPhase::Receiving),
            NewState::Starting { .. } => Some(NewPhase::Starting),
            _ => None,
        }
    }

    fn fail(&mut self, failure: NewFailure) {
        debug_assert!(
            self.phase().is_some(),
            "the new instance never fails once serving"
        );
        self.state = NewState::Failed(failure.clone());
        self.actions.push_back(NewAction::Fail(failure));
    }

    fn finish(&mut self, acknowledged: bool) {
        debug_assert!(matches!(self.state, NewState::Serving { .. }));
        self.state = NewState::Done { acknowledged };
        self.actions.push_back(NewAction::Finished { acknowledged });
    }
}

#[cfg(test)]
mod tests;
