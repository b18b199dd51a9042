//! Per-worker upstream keep-alive pool: idle connections by cluster and host.
//!
//! Owned by one worker (no locks). A connection is checked out only if it is still open — a
//! non-blocking poll must find it neither readable (EOF or stray bytes) nor errored — and it has
//! been idle less than [`IDLE_TIMEOUT`]. At most [`MAX_IDLE_PER_HOST`] idle connections are kept
//! per host; the oldest are reused last (LIFO keeps the warmest connections busy and lets the
//! cold ones time out upstream).

use std::cell::RefCell;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use sluice_core::Instant;

use tokio::io::{AsyncRead, ReadBuf};

/// An idle connection older than this is closed instead of reused (below the common upstream
/// keep-alive timeouts: nginx 75 s, Node 5 s is the exception the stale-retry covers).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Idle connections kept per host and worker.
pub const MAX_IDLE_PER_HOST: usize = 64;

struct Idle<S> {
    stream: S,
    since: Instant,
}

/// Idle upstream connections, `[cluster][host]`.
pub struct Pool<S> {
    idle: RefCell<Vec<Vec<Vec<Idle<S>>>>>,
}

impl<S: AsyncRead + Unpin> Pool<S> {
    /// An empty pool shaped like the clusters (`hosts[c]` = host count of cluster `c`).
    pub fn new(hosts: impl Iterator<Item = usize>) -> Self {
        Pool {
            idle: RefCell::new(
                hosts
                    .map(|n| (0..n).map(|_| Vec::new()).collect())
                    .collect(),
            ),
        }
    }

    /// A live idle connection to the host, if any.
    pub fn take(&self, cluster: usize, host: usize, now: Instant) -> Option<S> {
        let mut idle = self.idle.borrow_mut();
        let list = &mut idle[cluster][host];
        while let Some(mut c) = list.pop() {
            if now.duration_since(c.since) < IDLE_TIMEOUT && still_open(&mut c.stream) {
                return Some(c.stream);
            }
        }
        None
    }

    /// Gives back a connection that finished a response cleanly and may be reused.
    pub fn put(&self, cluster: usize, host: usize, stream: S, now: Instant) {
        let mut idle = self.idle.borrow_mut();
        let list = &mut idle[cluster][host];
        if list.len() >= MAX_IDLE_PER_HOST {
            list.remove(0);
        }
        list.push(Idle { stream, since: now });
    }

    /// Idle connections held now.
    pub fn idle_count(&self) -> usize {
        self.idle.borrow().iter().flatten().map(Vec::len).sum()
    }
}

/// A connection that is idle must have nothing to read: EOF, bytes or an error all mean it
/// cannot carry a new request. Polling with a no-op waker costs no syscall when the socket had
/// no readiness event.
fn still_open<S: AsyncRead + Unpin>(stream: &mut S) -> bool {
    let mut cx = Context::from_waker(Waker::noop());
    let mut byte = [0u8; 1];
    let mut buf = ReadBuf::new(&mut byte);
    matches!(Pin::new(stream).poll_read(&mut cx, &mut buf), Poll::Pending)
}
