//! The byte relay between a downstream and an upstream stream.
//!
//! One future polls both directions (no task per direction, no channel), moving bytes through
//! a buffer borrowed from the worker's pool ([`BufPool::take_relay`]), and reports to the
//! [`TcpSession`] state machine after each read; the session's actions (half-close, close) and
//! timers are carried out here.
//!
//! Per direction ("pipe"): read only when nothing read is still unwritten; write it all out and
//! flush it (TLS streams hold written bytes until flushed); on EOF (after everything read was
//! written) tell the session, which answers with a half-close of the other side. A read or
//! write error is reported against the side it happened on.
//!
//! **Buffers only while bytes are in flight** (issue 15). A direction holds a buffer only from
//! a read that returned bytes until the last of them is written: to read, it takes one from the
//! pool and polls the source; a poll that returns nothing (`Pending`, EOF, an error) gives it
//! straight back, so an idle session holds none. Readiness cannot be asked without a buffer
//! through `AsyncRead` (a TLS stream may also hold decrypted bytes its socket no longer
//! signals), hence the take-and-give of a pooled buffer per poll: a `Vec` pop and push, no
//! system call, no allocation once the pool has one. Over TLS the buffer goes back once rustls
//! took the bytes (`poll_write`), before the flush that sends them: what rustls holds until
//! then is its own per-connection memory, not a relay buffer.

use std::future::poll_fn;
use std::io;
use std::pin::{Pin, pin};
use std::task::{Context, Poll};

use sluice_core::tcp_proxy::{Action, CloseReason, Side, TcpSession};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::futures::Notified;
use tokio::time::Sleep;

use crate::bufpool::BufPool;
use crate::now;

/// Size of each direction's buffer.
pub const BUFFER_SIZE: usize = 32 * 1024;

/// How many read/write rounds one poll may make before yielding, so that one busy session
/// cannot starve the others on its worker.
const ROUNDS_PER_POLL: usize = 16;

/// One direction's buffer and progress.
struct Pipe {
    /// A buffer from the worker's pool, held only while bytes `pos..len` of it are unwritten.
    buf: Option<Box<[u8]>>,
    /// Bytes `pos..len` of `buf` are read but not yet written.
    pos: usize,
    len: usize,
    eof: bool,
    shutdown_wanted: bool,
    shutdown_done: bool,
    /// Bytes were written since the last flush: over TLS they may still be inside rustls.
    unflushed: bool,
    /// The side this pipe reads from.
    from: Side,
}

pub(crate) enum Step {
    Read(usize),
    Eof,
}

pub(crate) fn other(side: Side) -> Side {
    match side {
        Side::Downstream => Side::Upstream,
        Side::Upstream => Side::Downstream,
    }
}

impl Pipe {
    fn new(from: Side) -> Self {
        Pipe {
            buf: None,
            pos: 0,
            len: 0,
            eof: false,
            shutdown_wanted: false,
            shutdown_done: false,
            unflushed: false,
            from,
        }
    }

    /// Writes what is buffered, half-closes when asked, then reads more (into a buffer taken
    /// from `pool` for the read, kept only when bytes came).
    /// `Err(side)` names the side whose IO failed.
    fn poll_step<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        reader: &mut R,
        writer: &mut W,
        pool: &BufPool,
    ) -> Poll<Result<Step, Side>>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        let to = other(self.from);
        if let Some(buf) = &self.buf {
            while self.pos < self.len {
                match Pin::new(&mut *writer).poll_write(cx, &buf[self.pos..self.len]) {
                    Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => return Poll::Ready(Err(to)),
                    Poll::Ready(Ok(n)) => {
                        self.pos += n;
                        self.unflushed = true;
                    }
                    Poll::Pending => return Poll::Pending,
                }
            }
            // All written (into the socket, or into rustls): the buffer goes back.
            if let Some(buf) = self.buf.take() {
                pool.give_relay(buf);
            }
        }
        // Flushed before reading more: over TLS a write may leave the end of the data inside
        // rustls until the next write or flush (a no-op on a plain socket).
        if self.unflushed {
            match Pin::new(&mut *writer).poll_flush(cx) {
                Poll::Ready(Ok(())) => self.unflushed = false,
                Poll::Ready(Err(_)) => return Poll::Ready(Err(to)),
                Poll::Pending => return Poll::Pending,
            }
        }
        if self.shutdown_wanted && !self.shutdown_done {
            match Pin::new(&mut *writer).poll_shutdown(cx) {
                // A peer that already closed makes shutdown fail with ENOTCONN; the
                // direction is finished either way, so that is not an error of the session.
                Poll::Ready(_) => self.shutdown_done = true,
                Poll::Pending => return Poll::Pending,
            }
        }
        if self.eof {
            return Poll::Pending;
        }
        let mut buf = pool.take_relay();
        let mut rb = ReadBuf::new(&mut buf);
        let read = Pin::new(&mut *reader).poll_read(cx, &mut rb);
        let n = rb.filled().len();
        match read {
            Poll::Ready(Ok(())) if n > 0 => {
                self.buf = Some(buf);
                self.pos = 0;
                self.len = n;
                Poll::Ready(Ok(Step::Read(n)))
            }
            Poll::Ready(Ok(())) => {
                pool.give_relay(buf);
                self.eof = true;
                Poll::Ready(Ok(Step::Eof))
            }
            Poll::Ready(Err(_)) => {
                pool.give_relay(buf);
                Poll::Ready(Err(self.from))
            }
            Poll::Pending => {
                pool.give_relay(buf);
                Poll::Pending
            }
        }
    }
}

/// What [`drive`] asks of a relay's IO.
#[derive(Clone, Copy)]
pub(crate) enum Op {
    /// Move bytes read from this side (write what is pending, half-close when asked, read).
    Step(Side),
    /// The session wants this side's write half closed (done by the next steps).
    ShutdownWrite(Side),
}

/// The session loop shared by the copying relay and the splicing one ([`crate::splice`]): polls
/// both directions through `io`, reports each read, EOF and error to the session, runs its
/// timers and the drain deadline, and carries out its half-closes, until it closes.
pub(crate) async fn drive(
    session: &mut TcpSession,
    mut drain_expired: Pin<&mut Notified<'_>>,
    on_timeout: &mut dyn FnMut(&mut TcpSession),
    mut io: impl FnMut(&mut Context<'_>, Op) -> Poll<Result<Step, Side>>,
) -> CloseReason {
    let far_future = tokio::time::Instant::now() + std::time::Duration::from_secs(86_400 * 365);
    let deadline = |s: &TcpSession| s.poll_timeout().map_or(far_future, crate::to_tokio);
    let mut sleep: Pin<&mut Sleep> = pin!(tokio::time::sleep_until(deadline(session)));
    poll_fn(|cx| {
        for _ in 0..ROUNDS_PER_POLL {
            let mut progressed = false;
            for from in [Side::Downstream, Side::Upstream] {
                match io(cx, Op::Step(from)) {
                    Poll::Ready(Ok(Step::Read(n))) => session.handle_read(now(), from, n),
                    Poll::Ready(Ok(Step::Eof)) => session.handle_read(now(), from, 0),
                    Poll::Ready(Err(side)) => session.handle_error(now(), side),
                    Poll::Pending => continue,
                }
                progressed = true;
            }
            if sleep.as_mut().poll(cx).is_ready() {
                on_timeout(session);
                sleep.as_mut().reset(deadline(session));
                progressed = true;
            }
            if drain_expired.as_mut().poll(cx).is_ready() {
                session.handle_drain_timeout(now());
            }
            while let Some(action) = session.poll_action() {
                match action {
                    Action::ShutdownUpstreamWrite => {
                        let _ = io(cx, Op::ShutdownWrite(Side::Upstream));
                    }
                    Action::ShutdownDownstreamWrite => {
                        let _ = io(cx, Op::ShutdownWrite(Side::Downstream));
                    }
                    Action::Close(reason) => return Poll::Ready(reason),
                    Action::Connect { .. } => {
                        debug_assert!(false, "connect while relaying");
                    }
                }
                progressed = true;
            }
            if !progressed {
                return Poll::Pending;
            }
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    })
    .await
}

/// Relays between `down` and `up` until the session closes, with buffers borrowed from `pool`
/// while bytes are in flight (all given back when it returns). `session` must be in its
/// relaying state (connected). `drain_expired` completes when the worker's drain timeout passes
/// (pinned by the caller, which holds it from before the connect: passed by value, each layer
/// of futures would lay out its own copy, held for the session's whole life).
pub(crate) async fn relay<D, U>(
    session: &mut TcpSession,
    down: &mut D,
    up: &mut U,
    pool: &BufPool,
    drain_expired: Pin<&mut Notified<'_>>,
    on_timeout: &mut dyn FnMut(&mut TcpSession),
) -> CloseReason
where
    D: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    let mut d2u = Pipe::new(Side::Downstream);
    let mut u2d = Pipe::new(Side::Upstream);
    let reason = drive(session, drain_expired, on_timeout, |cx, op| match op {
        Op::Step(Side::Downstream) => d2u.poll_step(cx, down, up, pool),
        Op::Step(Side::Upstream) => u2d.poll_step(cx, up, down, pool),
        Op::ShutdownWrite(Side::Upstream) => {
            d2u.shutdown_wanted = true;
            Poll::Pending
        }
        Op::ShutdownWrite(Side::Downstream) => {
            u2d.shutdown_wanted = true;
            Poll::Pending
        }
    })
    .await;

    // A direction that ended with bytes unwritten (its destination failed) still holds its
    // buffer.
    for pipe in [&mut d2u, &mut u2d] {
        if let Some(buf) = pipe.buf.take() {
            pool.give_relay(buf);
        }
    }
    // Complete any half-close the session asked for in its last step (best effort: a FIN goes
    // out on drop anyway once both directions are done).
    if reason == CloseReason::Completed {
        for (pipe, w) in [(&mut d2u, true), (&mut u2d, false)] {
            if pipe.shutdown_wanted && !pipe.shutdown_done {
                let _: io::Result<()> = if w {
                    poll_fn(|cx| Pin::new(&mut *up).poll_shutdown(cx)).await
                } else {
                    poll_fn(|cx| Pin::new(&mut *down).poll_shutdown(cx)).await
                };
            }
        }
    }
    reason
}
