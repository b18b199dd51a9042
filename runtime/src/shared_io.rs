//! One connection shared by its two directions within one task, without a lock.
//!
//! `tokio::io::split` hands out two halves that share the stream behind a lock taken on every
//! poll — built for halves that live in different tasks. A driver that reads and writes one
//! connection from a single task (a full-duplex HTTP exchange, the Bolt upstream connection that
//! reads while it writes) needs no lock: each direction is a [`Shared`] handle on the same
//! `RefCell`, borrowed for the length of one poll. Invariant: the task polls one handle at a
//! time (`select!` and the futures it polls do), so a borrow never meets another; a second
//! borrow would panic rather than race.

use std::cell::RefCell;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// One side of a connection shared by the two directions of a full-duplex exchange (a streamed
/// request body sent while the response is read), within one task: each poll borrows the
/// connection for that poll only, and the task polls one direction at a time, so a borrow never
/// meets another. No allocation, no lock.
pub(crate) struct Shared<'a, T>(pub(crate) &'a RefCell<T>);

impl<T: AsyncRead + Unpin> AsyncRead for Shared<'_, T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0.borrow_mut()).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Shared<'_, T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.0.borrow_mut()).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.0.borrow_mut()).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.borrow().is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0.borrow_mut()).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0.borrow_mut()).poll_shutdown(cx)
    }
}
