//! The L4 relay by `splice(2)`: a plaintext `tcp_proxy` session's bytes go socket → pipe →
//! socket inside the kernel, never copied into the proxy's memory.
//!
//! What it owns: per direction a pipe (`pipe2`, non-blocking, close-on-exec) and how many bytes
//! sit in it. The session loop is the copying relay's ([`crate::relay::drive`]): the same
//! [`TcpSession`] sees every read (byte counts, idle timer), EOF and error, and asks for the same
//! half-closes; only how bytes move differs.
//!
//! Per direction, as the copying relay does with its buffer: move what sits in the pipe to the
//! destination socket (`SPLICE_F_MOVE | SPLICE_F_NONBLOCK`, on its write readiness), half-close
//! when the session asked, then — only when the pipe is empty — splice at most [`CHUNK`] bytes from
//! the source socket into the pipe (on its read readiness). A splice of 0 bytes from a socket is
//! its EOF. Invariants: at most [`CHUNK`] bytes in a pipe, so a splice into an empty pipe never
//! blocks on the pipe and `EAGAIN` always means the socket is not ready; a readiness is cleared
//! only by an `EAGAIN` from the socket it belongs to (tokio's `try_io`).
//!
//! When it is used: a plaintext session on real sockets (both streams say so through
//! [`AsTcpStream`]: never in the simulator, never over TLS, where the bytes must pass through
//! rustls), unless the listener's `tcp_proxy.splice` is off. If the pipes cannot be made (file
//! descriptor limit), the session is relayed by copying instead; both are counted
//! (`sluice_tcp_relay_spliced_total`, `sluice_tcp_relay_copied_total`).
//!
//! No `unsafe`: `nix` wraps both system calls.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::task::{Context, Poll, ready};

use nix::fcntl::{OFlag, SpliceFFlags, splice};
use sluice_core::tcp_proxy::{CloseReason, Side, TcpSession};
use tokio::io::Interest;
use tokio::net::TcpStream;
use tokio::sync::futures::Notified;

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

/// One direction: its pipe and progress.
struct Direction {
    read_end: OwnedFd,
    write_end: OwnedFd,
    /// Bytes in the pipe, not yet moved to the destination.
    buffered: usize,
    eof: bool,
    shutdown_wanted: bool,
    shutdown_done: bool,
    /// The side this direction reads from.
    from: Side,
}

impl Direction {
    fn new(from: Side) -> io::Result<Self> {
        let (read_end, write_end) = nix::unistd::pipe2(OFlag::O_NONBLOCK | OFlag::O_CLOEXEC)?;
        Ok(Direction {
            read_end,
            write_end,
            buffered: 0,
            eof: false,
            shutdown_wanted: false,
            shutdown_done: false,
            from,
        })
    }

    fn poll_step(
        &mut self,
        cx: &mut Context<'_>,
        src: &TcpStream,
        dst: &TcpStream,
    ) -> Poll<Result<Step, Side>> {
        let to = other(self.from);
        let flags = SpliceFFlags::SPLICE_F_MOVE | SpliceFFlags::SPLICE_F_NONBLOCK;
        while self.buffered > 0 {
            if ready!(dst.poll_write_ready(cx)).is_err() {
                return Poll::Ready(Err(to));
            }
            let moved = dst.try_io(Interest::WRITABLE, || {
                splice(
                    self.read_end.as_fd(),
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
            if ready!(src.poll_read_ready(cx)).is_err() {
                return Poll::Ready(Err(self.from));
            }
            let read = src.try_io(Interest::READABLE, || {
                splice(
                    src.as_fd(),
                    None,
                    self.write_end.as_fd(),
                    None,
                    CHUNK,
                    flags,
                )
                .map_err(io::Error::from)
            });
            match read {
                Ok(0) => {
                    self.eof = true;
                    return Poll::Ready(Ok(Step::Eof));
                }
                Ok(n) => {
                    self.buffered = n;
                    return Poll::Ready(Ok(Step::Read(n)));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) => return Poll::Ready(Err(self.from)),
            }
        }
    }
}

/// The two pipes of a session, made before it starts relaying.
pub struct Pipes([Direction; 2]);

impl Pipes {
    /// Two pipes; an error (the file descriptor limit) means: relay by copying.
    pub fn new() -> io::Result<Self> {
        Ok(Pipes([
            Direction::new(Side::Downstream)?,
            Direction::new(Side::Upstream)?,
        ]))
    }
}

/// Relays between `down` and `up` by splicing until the session closes (as
/// [`crate::relay::relay`] does by copying).
pub async fn relay_spliced(
    session: &mut TcpSession,
    down: &TcpStream,
    up: &TcpStream,
    pipes: Pipes,
    drain_expired: Notified<'_>,
    on_timeout: &mut dyn FnMut(&mut TcpSession),
) -> CloseReason {
    let [mut d2u, mut u2d] = pipes.0;
    let reason = drive(session, drain_expired, on_timeout, |cx, op| match op {
        Op::Step(Side::Downstream) => d2u.poll_step(cx, down, up),
        Op::Step(Side::Upstream) => u2d.poll_step(cx, up, down),
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
