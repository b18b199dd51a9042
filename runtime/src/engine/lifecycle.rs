//! One engine's lifecycle: whether it accepts, hands its listening sockets over, drains, and
//! how many sessions it still has — the flags and wake-ups every accept loop and session
//! watches, owned here and changed only through these methods.
//!
//! States (each a one-way step; several may hold at once):
//! - **serving**: the accept loops accept.
//! - **listeners closed** ([`Lifecycle::close_listeners`], the admin API's
//!   `/drain_listeners`): the accept loops end and drop their sockets; sessions carry on.
//! - **handing over** ([`Lifecycle::take_listeners`]: a reload or an in-process upgrade): each
//!   accept loop gives its socket back as it is (connections queued in its backlog are
//!   accepted by the next engine) and ends.
//! - **stopping** ([`Lifecycle::stop`]): no new connections; open sessions finish (HTTP closes
//!   after the next answer, HTTP/2 sends GOAWAY, Bolt migrates or closes when idle).
//! - **drain deadline passed** ([`Lifecycle::expire_drain`]): sessions still open are told to
//!   close now; a session past a stage that watched the wake-up (a TLS handshake, a peek) checks
//!   [`Lifecycle::drain_deadline_passed`] before starting the next.
//! - **ended**: stopping and no session open ([`Lifecycle::wait_idle`] returns).
//!
//! Invariants: every accept loop, however it ends, counts itself out once
//! ([`Lifecycle::hand_back`] or [`Lifecycle::listener_ended`]), so `take_listeners` returns once
//! all have; the session count goes up once per session task and down once when it ends
//! ([`Lifecycle::session_opened`], [`Lifecycle::session_closed`]). A wake-up
//! (`tokio::sync::Notify::notify_waiters`) reaches only futures that exist when it fires:
//! callers create the future (`stop_accepting()`, `drain_expired()`…) *before* checking the
//! matching flag.

use std::cell::{Cell, RefCell};

use tokio::sync::Notify;
use tokio::sync::futures::Notified;

/// See the module doc. `L`: a listening socket.
pub(crate) struct Lifecycle<L> {
    stopping: Cell<bool>,
    stop_accepting: Notify,
    /// Set by [`Lifecycle::close_listeners`]: accept loops end, connections carry on.
    listeners_closed: Cell<bool>,
    close_listeners_now: Notify,
    /// Set by [`Lifecycle::take_listeners`]: accept loops hand their socket over and end.
    handing_over: Cell<bool>,
    handover_now: Notify,
    /// Sockets given back by the accept loops, by listener index.
    returned: RefCell<Vec<Option<L>>>,
    /// Accept loops ended (handing over or not).
    returned_count: Cell<usize>,
    listeners_returned: Notify,
    drain_expired: Notify,
    /// Set when `drain_expired` is notified.
    drain_deadline_passed: Cell<bool>,
    sessions: Cell<usize>,
    sessions_idle: Notify,
}

impl<L> Lifecycle<L> {
    /// Serving, with `listeners` accept loops to come.
    pub(crate) fn new(listeners: usize) -> Self {
        Lifecycle {
            stopping: Cell::new(false),
            stop_accepting: Notify::new(),
            listeners_closed: Cell::new(false),
            close_listeners_now: Notify::new(),
            handing_over: Cell::new(false),
            handover_now: Notify::new(),
            returned: RefCell::new((0..listeners).map(|_| None).collect()),
            returned_count: Cell::new(0),
            listeners_returned: Notify::new(),
            drain_expired: Notify::new(),
            drain_deadline_passed: Cell::new(false),
            sessions: Cell::new(0),
            sessions_idle: Notify::new(),
        }
    }

    /// Whether the engine is stopping (draining).
    pub(crate) fn is_stopping(&self) -> bool {
        self.stopping.get()
    }

    /// Completes when the engine starts stopping (from its creation on).
    pub(crate) fn stop_accepting(&self) -> Notified<'_> {
        self.stop_accepting.notified()
    }

    /// Starts stopping: accept loops end, sessions are told.
    pub(crate) fn stop(&self) {
        self.stopping.set(true);
        self.stop_accepting.notify_waiters();
    }

    /// Whether the drain deadline passed.
    pub(crate) fn drain_deadline_passed(&self) -> bool {
        self.drain_deadline_passed.get()
    }

    /// Completes when the drain deadline passes (from its creation on).
    pub(crate) fn drain_expired(&self) -> Notified<'_> {
        self.drain_expired.notified()
    }

    /// The drain deadline passed: the sessions still open close now.
    pub(crate) fn expire_drain(&self) {
        self.drain_deadline_passed.set(true);
        self.drain_expired.notify_waiters();
    }

    /// Whether the listening sockets were closed (`/drain_listeners`).
    pub(crate) fn listeners_closed(&self) -> bool {
        self.listeners_closed.get()
    }

    /// Closes the listening sockets (accept loops end); true the first time.
    pub(crate) fn close_listeners(&self) -> bool {
        let first = !self.listeners_closed.replace(true);
        if first {
            self.close_listeners_now.notify_waiters();
        }
        first
    }

    /// Completes when the listening sockets are to close (from its creation on).
    pub(crate) fn closing_listeners(&self) -> Notified<'_> {
        self.close_listeners_now.notified()
    }

    /// Whether the listening sockets are being handed over.
    pub(crate) fn handing_over(&self) -> bool {
        self.handing_over.get()
    }

    /// Completes when a hand-over starts (from its creation on).
    pub(crate) fn handover_asked(&self) -> Notified<'_> {
        self.handover_now.notified()
    }

    /// Accept loop `index` gives its socket back (handing over) and ends.
    pub(crate) fn hand_back(&self, index: usize, listener: L) {
        self.returned.borrow_mut()[index] = Some(listener);
        self.listener_ended();
    }

    /// An accept loop ended (its socket dropped, or given back).
    pub(crate) fn listener_ended(&self) {
        self.returned_count.set(self.returned_count.get() + 1);
        self.listeners_returned.notify_waiters();
    }

    /// Starts a hand-over and waits until each of `listeners` accept loops ended: the sockets
    /// given back, in config order (`None`: closed before).
    pub(crate) async fn take_listeners(&self, listeners: usize) -> Vec<Option<L>> {
        self.handing_over.set(true);
        self.handover_now.notify_waiters();
        loop {
            let returned = self.listeners_returned.notified();
            if self.returned_count.get() >= listeners {
                break;
            }
            returned.await;
        }
        std::mem::take(&mut *self.returned.borrow_mut())
    }

    /// Sessions open now.
    pub(crate) fn open_sessions(&self) -> usize {
        self.sessions.get()
    }

    /// A session task started.
    pub(crate) fn session_opened(&self) {
        self.sessions.set(self.sessions.get() + 1);
    }

    /// A session task ended.
    pub(crate) fn session_closed(&self) {
        self.sessions.set(self.sessions.get() - 1);
        if self.sessions.get() == 0 {
            self.sessions_idle.notify_waiters();
        }
    }

    /// Returns once no session is open.
    pub(crate) async fn wait_idle(&self) {
        loop {
            let idle = self.sessions_idle.notified();
            if self.sessions.get() == 0 {
                return;
            }
            idle.await;
        }
    }
}
