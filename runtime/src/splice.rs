//! The L4 relay by `splice(2)`: a plaintext `tcp_proxy` session's bytes go socket → pipe →
//! socket inside the kernel, never copied into the proxy's memory.
//!
//! What it owns: the worker's pool of pipes ([`PipePool`]) and, per direction of a session,
//! the pipe or buffer its bytes in flight sit in. The session loop is the copying relay's
//! ([`crate::relay::drive`]): the same [`TcpSession`] sees every read (byte counts, idle timer),
//! EOF and error, and asks for the same half-closes; only how bytes move differs.
//!
//! **Splice for bulk bytes only** (HAProxy's `splice-auto`): a direction copies (through a relay
//! buffer borrowed per chunk, as below) until two reads in a row fill the buffer, then splices
//! while each splice moves at least [`SPLICE_FROM`] bytes — a small message costs less copied
//! than spliced.
//!
//! **Pipes only while bytes sit in them** (HAProxy's way). A bulk direction waits for its source's
//! read readiness holding nothing; once readable it takes an empty pipe from the worker's pool
//! (or makes one, within the process's budget: [`crate::limits`]) and splices at most [`CHUNK`]
//! bytes into it; on the destination's write readiness it moves them out, and gives the pipe
//! back the moment it is empty again. A pipe that still holds bytes because the destination is
//! slow stays with its direction until drained. An idle spliced session holds no pipe: two
//! sockets are all it costs. When no pipe is to be had (the budget is spent, or `pipe2` fails),
//! that one bulk chunk goes by copy through a relay buffer borrowed from the worker's
//! [`BufPool`], given back once written (`sluice_tcp_relay_chunks_copied_total` counts those
//! chunks, not the small ones copied by choice); the next chunk tries for a pipe again.
//!
//! Per direction, in order: move what sits in the pipe or the copy buffer to the destination
//! (`SPLICE_F_MOVE | SPLICE_F_NONBLOCK`, on its write readiness), half-close when the session
//! asked, then — only when nothing is in flight — read from the source (on its read readiness).
//! A splice or read of 0 bytes from a socket is its EOF. Invariants:
//! - at most one of pipe and copy buffer is held, and only while it holds bytes: so bytes leave
//!   in the order they came, and a pipe or buffer goes back to its pool empty (a pipe that
//!   still holds bytes when the session ends — its destination failed — is closed, not pooled);
//! - at most [`CHUNK`] bytes in a pipe, which is empty when taken, so a splice into it never
//!   blocks on the pipe and `EAGAIN` always means the socket is not ready;
//! - a readiness is cleared only by an `EAGAIN` from the socket it belongs to (tokio's
//!   `try_io`), or by a copying read that filled less than its buffer ([`read_drained`]: the
//!   socket's receive queue was emptied, as tokio's own `poll_read` takes it); a readiness that
//!   turns out spurious gives the pipe or buffer straight back;
//! - a pooled pipe is empty and counted in the process's pipe budget until it is closed
//!   ([`crate::limits::PipeHeld`] goes with it).
//!
//! The pool is a `RefCell` on the worker's thread (no lock, no shared write per chunk: only a
//! pipe made or closed writes the process's count), bounded by [`PIPES_POOLED_MAX`], trimmed by
//! the worker's periodic sweep like [`BufPool`] down to [`PIPES_KEPT_WHEN_IDLE`], and emptied
//! when the engine starts draining (a pipe given back during the drain is closed: the next
//! generation gets its descriptors and budget at once). A pipe the kernel made smaller than
//! [`CHUNK`] (a user past `pipe-user-pages-soft`) serves its chunk and is closed, never pooled.
//!
//! Known, not handled: urgent (`MSG_OOB`) data stops a spliced direction at the urgent mark —
//! the socket→pipe splice keeps answering `EAGAIN` while the socket stays readable — until the
//! session's idle timeout; only that session is affected (its own peer sent it).
//!
//! When it is used: a plaintext session on real sockets (both streams say so through
//! [`AsTcpStream`]: never in the simulator, never over TLS, where the bytes must pass through
//! rustls), unless the listener's `tcp_proxy.splice` is off. Sessions are counted by relay
//! (`sluice_tcp_relay_spliced_total`, `sluice_tcp_relay_copied_total`), the chunks of spliced
//! sessions that found no pipe apart.
//!
//! No `unsafe`: `nix` wraps both system calls.

use std::cell::{Cell, RefCell};
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::task::{Context, Poll, ready};

use nix::fcntl::{OFlag, SpliceFFlags, splice};
use sluice_core::tcp_proxy::{CloseReason, Side, TcpSession};
use tokio::io::Interest;
use tokio::net::TcpStream;
use tokio::sync::futures::Notified;

use crate::bufpool::{BufPool, FreeList};
use crate::limits::{PipeHeld, ProcessLimits};
use crate::relay::{Op, Step, drive, other};

/// A stream that may be a real TCP socket (which the splicing relay can use directly).
pub trait AsTcpStream {
    /// The socket, when this stream is a plaintext real one.
    fn as_tcp_stream(&self) -> Option<&TcpStream> {
        None
    }
}

impl AsTcpStream for TcpStream {
    fn as_tcp_stream(&self) -> Option<&TcpStream> {
        Some(self)
    }
}

/// TLS terminated here: the bytes must pass through rustls.
impl<S> AsTcpStream for tokio_rustls::server::TlsStream<S> {}

impl<S: AsTcpStream> AsTcpStream for crate::tls::MaybeTls<S> {
    fn as_tcp_stream(&self) -> Option<&TcpStream> {
        match self {
            crate::tls::MaybeTls::Plain(s) => s.as_tcp_stream(),
            crate::tls::MaybeTls::Tls(_) => None,
        }
    }
}

/// The simulator's streams live in turmoil's memory.
#[cfg(feature = "turmoil")]
impl AsTcpStream for turmoil::net::TcpStream {}

/// Most bytes moved into a pipe at once (the default pipe capacity, 16 pages).
pub const CHUNK: usize = 64 * 1024;

/// Empty pipes a worker's pool keeps for reuse (beyond them a pipe given back is closed).
pub(crate) const PIPES_POOLED_MAX: usize = 256;

/// Pipes [`PipePool::trim`] leaves in the pool however long they were unused.
pub(crate) const PIPES_KEPT_WHEN_IDLE: usize = 8;

/// An open pipe and its share of the process's pipe budget.
pub(crate) struct Pipe {
    read_end: OwnedFd,
    write_end: OwnedFd,
    /// Whether it holds a whole [`CHUNK`]: the kernel makes smaller pipes for a user past
    /// `pipe-user-pages-soft` (a sidecar not run as root, in a burst); such a pipe serves its
    /// chunk and is closed, never pooled (each later chunk would take ~8× the splices).
    full_size: bool,
    _held: PipeHeld,
}

/// A worker's empty pipes (see the module doc). `!Send`, like the engine that owns it.
pub(crate) struct PipePool {
    limits: Arc<ProcessLimits>,
    free: RefCell<FreeList<Pipe>>,
    /// Pipes taken and not given back (holding a session's bytes in flight).
    in_use: Cell<usize>,
    /// The engine is draining ([`PipePool::stop_pooling`]): a pipe given back is closed, so
    /// that its descriptors and budget go to the next generation at once.
    draining: Cell<bool>,
}

impl PipePool {
    /// An empty pool drawing on `limits`' pipe budget.
    pub(crate) fn new(limits: Arc<ProcessLimits>) -> Self {
        PipePool {
            limits,
            free: RefCell::default(),
            in_use: Cell::new(0),
            draining: Cell::new(false),
        }
    }

    /// An empty pipe: a pooled one, else a new one within the budget; `None` when the budget is
    /// spent or the pipe cannot be made (the file-descriptor limit): copy this chunk.
    fn take(&self) -> Option<Pipe> {
        let pipe = match self.free.borrow_mut().pop() {
            Some(p) => p,
            None => {
                let held = self.limits.hold_pipe()?;
                let (read_end, write_end) =
                    nix::unistd::pipe2(OFlag::O_NONBLOCK | OFlag::O_CLOEXEC).ok()?;
                let size = nix::fcntl::fcntl(&read_end, nix::fcntl::FcntlArg::F_GETPIPE_SZ);
                Pipe {
                    read_end,
                    write_end,
                    // A kernel without F_GETPIPE_SZ (before 2.6.35) predates small pipes too.
                    full_size: size.map_or(true, |n| usize::try_from(n).unwrap_or(0) >= CHUNK),
                    _held: held,
                }
            }
        };
        self.in_use.set(self.in_use.get() + 1);
        Some(pipe)
    }

    /// Gives back a pipe taken with [`PipePool::take`]: pooled when `empty`, else closed.
    fn give(&self, pipe: Pipe, empty: bool) {
        self.in_use.set(self.in_use.get() - 1);
        if empty && pipe.full_size && !self.draining.get() {
            self.free.borrow_mut().push_at_most(pipe, PIPES_POOLED_MAX);
        }
    }

    /// The engine starts draining: the pooled pipes are closed now and a pipe given back from
    /// here on is closed too — during a drain (up to `drain_timeout`) they would hold
    /// descriptors and budget the next generation (or a reload that stopped splicing, whose
    /// connection limit no longer leaves room for pipes) needs.
    pub(crate) fn stop_pooling(&self) {
        self.draining.set(true);
        *self.free.borrow_mut() = FreeList::default();
    }

    /// Closes the pipes that stayed in the pool since the last call (down to
    /// [`PIPES_KEPT_WHEN_IDLE`]); the worker's periodic sweep calls it.
    pub(crate) fn trim(&self) {
        self.free.borrow_mut().trim(PIPES_KEPT_WHEN_IDLE);
    }

    /// Pipes holding a session's bytes now.
    #[cfg(test)]
    pub(crate) fn in_use(&self) -> usize {
        self.in_use.get()
    }

    /// Whether every pooled pipe is empty (tests: a read of each must find nothing).
    #[cfg(test)]
    pub(crate) fn pooled_are_empty(&self) -> bool {
        let mut byte = [0u8];
        self.free.borrow().items().iter().all(|p| {
            nix::unistd::read(p.read_end.as_fd(), &mut byte) == Err(nix::errno::Errno::EAGAIN)
        })
    }

    /// Empty pipes in the pool now.
    #[cfg(test)]
    pub(crate) fn pooled(&self) -> usize {
        self.free.borrow().len()
    }
}

/// What a spliced session borrows from its worker.
pub(crate) struct SpliceCtx<'a> {
    /// Pipes, while bytes sit in them.
    pub pipes: &'a PipePool,
    /// Relay buffers, for a chunk that found no pipe.
    pub buffers: &'a BufPool,
    /// Counts those chunks.
    pub chunks_copied: &'a AtomicU64,
}

/// One direction: where its bytes in flight sit, and its progress.
struct Direction {
    /// A pipe from the pool, held only while `buffered > 0`.
    pipe: Option<Pipe>,
    /// Bytes in the pipe, not yet moved to the destination.
    buffered: usize,
    /// A relay buffer (a chunk that found no pipe), held only while bytes `pos..len` of it are
    /// unwritten.
    copy: Option<Box<[u8]>>,
    pos: usize,
    len: usize,
    eof: bool,
    shutdown_wanted: bool,
    shutdown_done: bool,
    /// The side this direction reads from.
    from: Side,
    /// Bulk bytes are flowing: the next chunk goes by splice (see [`SPLICE_FROM`]).
    bulk: bool,
    /// The last copied read filled its buffer (two in a row make a direction bulk).
    last_read_full: bool,
}

/// When a direction splices (HAProxy's `splice-auto`): a splice costs more system-call work
/// than a copy for a small message (two splices and a pipe against one read and one write
/// into a warm buffer: in one loopback run, 74k requests per proxy CPU-second spliced against
/// 91k copied — BENCHMARKS.md), and less for bulk bytes. A direction copies until two reads in a row fill the relay buffer (HAProxy's
/// "streamer": one full read may be a single 32–48 KiB message), then splices while each splice
/// moves at least this much, and copies again once one moves less.
pub const SPLICE_FROM: usize = crate::relay::BUFFER_SIZE / 2;

#[cfg(test)]
thread_local! {
    /// Tests of what happens to a pipe (a stall, a failed destination) make every direction
    /// bulk from its first chunk, so that the chunk in flight at the stall is in a pipe
    /// whatever sizes the reads had on a loaded machine.
    pub(crate) static SPLICE_EVERY_CHUNK: Cell<bool> = const { Cell::new(false) };
}

/// Whether every chunk is spliced ([`SPLICE_EVERY_CHUNK`]; always `false` outside tests).
#[inline]
fn splice_every_chunk() -> bool {
    #[cfg(test)]
    return SPLICE_EVERY_CHUNK.get();
    #[cfg(not(test))]
    false
}

#[cfg(test)]
thread_local! {
    /// Copying reads that found the socket empty (`EAGAIN`), counted for the tests.
    pub(crate) static EMPTY_READS: Cell<usize> = const { Cell::new(0) };
}

/// Reads from `src` into `buf` as `TcpStream::try_read` does, except that a read which fills
/// less than `buf` also clears the socket's read readiness. On Linux (mio's edge-triggered
/// epoll) such a read has emptied the socket's receive queue (`tcp_recvmsg` copies until the
/// buffer is full or the queue and backlog are empty), so the next poll waits for new bytes
/// instead of costing a `recvfrom` that answers `EAGAIN`: one system call less per message and
/// direction — a small request/response through the relay took 4 `recvfrom` where nginx and
/// HAProxy take 2. tokio's `poll_read` does the same; its `try_read` cannot. Nothing is lost:
/// bytes that come after the read raise a new edge (a newer readiness tick, which a clear does
/// not touch), and tokio keeps a read-closed state (a FIN) when it clears readiness.
fn read_drained(src: &TcpStream, buf: &mut [u8]) -> io::Result<usize> {
    use std::os::fd::AsRawFd;
    let len = buf.len();
    let mut short = None;
    let read = src.try_io(Interest::READABLE, || {
        let n = nix::sys::socket::recv(src.as_raw_fd(), buf, nix::sys::socket::MsgFlags::empty())
            .map_err(io::Error::from)?;
        if n > 0 && n < len {
            // Drained: answer "would block" so that `try_io` clears the readiness it saw.
            short = Some(n);
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(n)
    });
    match read {
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => match short {
            Some(n) => Ok(n),
            None => {
                #[cfg(test)]
                EMPTY_READS.set(EMPTY_READS.get() + 1);
                Err(e)
            }
        },
        other => other,
    }
}

impl Direction {
    fn new(from: Side) -> Self {
        Direction {
            bulk: splice_every_chunk(),
            last_read_full: false,
            pipe: None,
            buffered: 0,
            copy: None,
            pos: 0,
            len: 0,
            eof: false,
            shutdown_wanted: false,
            shutdown_done: false,
            from,
        }
    }

    fn poll_step(
        &mut self,
        cx: &mut Context<'_>,
        src: &TcpStream,
        dst: &TcpStream,
        ctx: &SpliceCtx<'_>,
    ) -> Poll<Result<Step, Side>> {
        let to = other(self.from);
        let flags = SpliceFFlags::SPLICE_F_MOVE | SpliceFFlags::SPLICE_F_NONBLOCK;
        if let Some(pipe) = &self.pipe {
            while self.buffered > 0 {
                if ready!(dst.poll_write_ready(cx)).is_err() {
                    return Poll::Ready(Err(to));
                }
                let moved = dst.try_io(Interest::WRITABLE, || {
                    splice(
                        pipe.read_end.as_fd(),
                        None,
                        dst.as_fd(),
                        None,
                        self.buffered,
                        flags,
                    )
                    .map_err(io::Error::from)
                });
                match moved {
                    Ok(0) => return Poll::Ready(Err(to)),
                    Ok(n) => self.buffered -= n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(_) => return Poll::Ready(Err(to)),
                }
            }
            // Empty again: back to the pool.
            if let Some(pipe) = self.pipe.take() {
                ctx.pipes.give(pipe, true);
            }
        }
        if let Some(buf) = &self.copy {
            while self.pos < self.len {
                if ready!(dst.poll_write_ready(cx)).is_err() {
                    return Poll::Ready(Err(to));
                }
                match dst.try_write(&buf[self.pos..self.len]) {
                    Ok(0) => return Poll::Ready(Err(to)),
                    Ok(n) => self.pos += n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(_) => return Poll::Ready(Err(to)),
                }
            }
            if let Some(buf) = self.copy.take() {
                ctx.buffers.give_relay(buf);
            }
        }
        if self.shutdown_wanted && !self.shutdown_done {
            // A peer that already closed makes shutdown fail (ENOTCONN): the direction is
            // finished either way.
            let _ = socket2::SockRef::from(dst).shutdown(std::net::Shutdown::Write);
            self.shutdown_done = true;
        }
        if self.eof {
            return Poll::Pending;
        }
        loop {
            // Readable before anything is taken: a quiet direction holds nothing.
            if ready!(src.poll_read_ready(cx)).is_err() {
                return Poll::Ready(Err(self.from));
            }
            // Only bulk bytes take a pipe; a small message, or a chunk that finds none (the
            // budget spent), is copied.
            let pipe = if self.bulk { ctx.pipes.take() } else { None };
            if let Some(pipe) = pipe {
                let read = src.try_io(Interest::READABLE, || {
                    splice(
                        src.as_fd(),
                        None,
                        pipe.write_end.as_fd(),
                        None,
                        CHUNK,
                        flags,
                    )
                    .map_err(io::Error::from)
                });
                match read {
                    Ok(0) => {
                        ctx.pipes.give(pipe, true);
                        self.eof = true;
                        return Poll::Ready(Ok(Step::Eof));
                    }
                    Ok(n) => {
                        self.pipe = Some(pipe);
                        self.buffered = n;
                        self.bulk = splice_every_chunk() || n >= SPLICE_FROM;
                        return Poll::Ready(Ok(Step::Read(n)));
                    }
                    // Nothing moved: the pipe is still empty.
                    Err(e) => {
                        ctx.pipes.give(pipe, true);
                        if e.kind() != io::ErrorKind::WouldBlock {
                            return Poll::Ready(Err(self.from));
                        }
                    }
                }
            } else {
                let mut buf = ctx.buffers.take_relay();
                match read_drained(src, &mut buf) {
                    Ok(0) => {
                        ctx.buffers.give_relay(buf);
                        self.eof = true;
                        return Poll::Ready(Ok(Step::Eof));
                    }
                    Ok(n) => {
                        if self.bulk {
                            // Bulk bytes that found no pipe.
                            crate::stats::bump(ctx.chunks_copied, 1);
                        }
                        let full = n == buf.len();
                        self.bulk = full && self.last_read_full;
                        self.last_read_full = full;
                        self.copy = Some(buf);
                        (self.pos, self.len) = (0, n);
                        return Poll::Ready(Ok(Step::Read(n)));
                    }
                    Err(e) => {
                        ctx.buffers.give_relay(buf);
                        if e.kind() != io::ErrorKind::WouldBlock {
                            return Poll::Ready(Err(self.from));
                        }
                    }
                }
            }
        }
    }

    /// Gives back what the direction still holds when its session ends: a buffer to its pool,
    /// a pipe closed when bytes are left in it (else pooled).
    fn release(&mut self, ctx: &SpliceCtx<'_>) {
        if let Some(pipe) = self.pipe.take() {
            ctx.pipes.give(pipe, self.buffered == 0);
        }
        if let Some(buf) = self.copy.take() {
            ctx.buffers.give_relay(buf);
        }
    }
}

/// Relays between `down` and `up` by splicing until the session closes (as
/// [`crate::relay::relay`] does by copying), with pipes and buffers borrowed from `ctx` while
/// bytes are in flight (all given back when it returns).
pub(crate) async fn relay_spliced(
    session: &mut TcpSession,
    down: &TcpStream,
    up: &TcpStream,
    ctx: &SpliceCtx<'_>,
    drain_expired: Pin<&mut Notified<'_>>,
    on_timeout: &mut dyn FnMut(&mut TcpSession),
) -> CloseReason {
    let mut d2u = Direction::new(Side::Downstream);
    let mut u2d = Direction::new(Side::Upstream);
    let reason = drive(session, drain_expired, on_timeout, |cx, op| match op {
        Op::Step(Side::Downstream) => d2u.poll_step(cx, down, up, ctx),
        Op::Step(Side::Upstream) => u2d.poll_step(cx, up, down, ctx),
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
    d2u.release(ctx);
    u2d.release(ctx);
    // Complete any half-close the session asked for in its last step.
    if reason == CloseReason::Completed {
        for (dir, dst) in [(&d2u, up), (&u2d, down)] {
            if dir.shutdown_wanted && !dir.shutdown_done {
                let _ = socket2::SockRef::from(dst).shutdown(std::net::Shutdown::Write);
            }
        }
    }
    reason
}

#[cfg(test)]
mod tests;
