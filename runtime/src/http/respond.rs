//! The response side of the request path, whatever the client's protocol: the steps of a
//! request (`stream`, `mod`'s local answers) answer through [`Respond`] with typed values — a
//! forwarded head ([`ForwardedHead`]: the upstream's head and the route's and listener's edits
//! as a list), payload, trailers, or a whole local answer ([`LocalReply`]) — and each codec
//! writes them its own way:
//!
//! - HTTP/1.1 (the client's connection, [`crate::downstream::Downstream`]) writes exactly the
//!   bytes it always wrote: the head into the write buffer, sent with the first body bytes in
//!   one write, and the body in its upstream framing as it came (`body::copy_body`, its
//!   HTTP/1.1 sink);
//! - an HTTP/2 stream (`crate::http2`) takes them typed ([`Respond::TYPED`]): the head becomes
//!   a HEADERS frame from the fields as [`for_each_response_field`] gives them, the payload
//!   DATA frames (a chunked upstream body is de-chunked once, by `body::copy_body`'s one loop
//!   into its typed sink), the trailer section HTTP/2 trailers. Nothing is written as HTTP/1.1
//!   text for it to parse back.
//!
//! The same interface gives the path an HTTP/2 stream's request body typed
//! ([`Respond::poll_body`], [`BodyPiece`]); an HTTP/1.1 connection's is decoded from its read
//! buffer into the same pieces by `body::RequestBody`, so the path has one request body
//! copy.
//!
//! Invariant (both codecs): a forwarded head is *staged*, not sent, until the first payload
//! (or the end of an empty body), so that an upstream failing before then can still be
//! answered by the proxy ([`Respond::head_pending`]); a local answer replaces a staged head.
//!
//! [`for_each_response_field`]: sluice_core::http1::for_each_response_field

use std::io;
use std::task::{Context, Poll};

use bytes::Bytes;
use sluice_core::http1::{Head, HeadEdits, write_local_response, write_response_head};
use sluice_core::l7::grpc::{self, GrpcStatus};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt as _};

use super::write_flushed;
use crate::shared_io::Shared;

/// A response the proxy makes itself.
#[derive(Clone, Copy, Debug)]
pub(crate) struct LocalReply<'a> {
    /// The HTTP status (a gRPC answer is sent as 200 whatever this is).
    pub(crate) status: u16,
    /// The listener's `server` field ([`sluice_core::config::http::ServerHeader::local_field`]).
    pub(crate) server: Option<(&'static str, &'a [u8])>,
    pub(crate) body: LocalBody<'a>,
    /// HTTP/1.1: `connection: close` (the connection closes after it).
    pub(crate) close: bool,
}

/// What a local answer carries.
#[derive(Clone, Copy, Debug)]
pub(crate) enum LocalBody<'a> {
    /// A short body (`text/plain` when not empty), with its `content-length`.
    Text(&'a [u8]),
    /// A trailers-only gRPC answer: `grpc-status` and `grpc-message` in the head, no body.
    GrpcTrailersOnly {
        status: GrpcStatus,
        message: &'a [u8],
    },
}

impl LocalReply<'_> {
    /// The status the answer goes out with.
    pub(crate) fn sent_status(&self) -> u16 {
        match self.body {
            LocalBody::Text(_) => self.status,
            LocalBody::GrpcTrailersOnly { .. } => 200,
        }
    }

    /// The answer in HTTP/1.1, head and body, appended to `out`.
    pub(crate) fn write_http1(&self, out: &mut Vec<u8>) {
        let server = self.server.as_slice();
        match self.body {
            LocalBody::Text(body) => {
                write_local_response(out, self.status, server, body, self.close)
            }
            LocalBody::GrpcTrailersOnly { status, message } => {
                grpc::write_trailers_only(out, status, message, server, self.close);
            }
        }
    }
}

/// A forwarded response's head, typed: the upstream's head (`head` over `buf`) and the edits
/// that apply to it (removals, additions, `force_close`). HTTP/1.1 writes it with
/// [`write_response_head`]; a typed codec reads its fields with
/// [`sluice_core::http1::for_each_response_field`] (the same fields but the `connection` line).
#[derive(Clone, Copy, Debug)]
pub(crate) struct ForwardedHead<'a> {
    pub(crate) buf: &'a [u8],
    pub(crate) head: &'a Head,
    pub(crate) edits: HeadEdits<'a>,
}

/// Not a typed responder: a typed method reached an HTTP/1.1 downstream (a bug).
fn not_typed() -> io::Error {
    io::Error::other("a typed response went to an HTTP/1.1 downstream")
}

/// One piece of a typed request body ([`Respond::poll_body`]): payload as the client sent it,
/// then the end — with the trailer fields when there are some.
#[derive(Debug)]
pub(crate) enum BodyPiece {
    /// Payload, without any framing (an HTTP/2 DATA frame's, never empty). Its receive
    /// capacity was given back to the client as it was handed over: a stream holds at most its
    /// window plus the piece the path is sending.
    Data(Bytes),
    /// The body ended with these trailer fields.
    Trailers(http::HeaderMap),
    /// The body ended (without trailers). Every later poll says so again.
    End,
}

/// The client's side of the request path. Its request body comes as pieces that the path's
/// body copy frames for the upstream once (`body`): an HTTP/1.1 connection's decoded from the
/// bytes it reads through `AsyncRead` (`body::RequestBody`); a typed client's
/// ([`Respond::TYPED`], an HTTP/2 stream) handed over as [`BodyPiece`]s
/// ([`Respond::poll_body`]). Its response goes through the
/// functions of this module, which write HTTP/1.1 through `AsyncWrite` or, typed, call its
/// `typed_*` methods. Those are synchronous or flushed with `AsyncWrite::poll_flush`, so that a
/// [`Shared`] handle (one direction of a full-duplex exchange) borrows the responder for one
/// call at a time.
pub(crate) trait Respond: AsyncRead + AsyncWrite + Unpin {
    /// The request body comes as [`BodyPiece`]s (not decoded from HTTP/1.1 bytes) and the
    /// response goes to the codec typed, not as HTTP/1.1 bytes.
    const TYPED: bool = false;

    /// Typed: the next piece of the request body. Content-length mismatches are errors here
    /// (DATA beyond it, or an end before it), as is the client resetting its stream.
    fn poll_body(&mut self, _cx: &mut Context<'_>) -> Poll<io::Result<BodyPiece>> {
        Poll::Ready(Err(not_typed()))
    }

    /// Typed: sends an interim (1xx) answer.
    fn typed_interim(&mut self, _status: u16) -> io::Result<()> {
        Err(not_typed())
    }

    /// Typed: starts a local answer (a staged head is dropped); its body, if any, goes out
    /// with the next flush, which ends the response.
    fn typed_local(&mut self, _reply: &LocalReply<'_>) -> io::Result<()> {
        Err(not_typed())
    }

    /// Typed: stages a forwarded head; it goes out with the first payload.
    fn typed_head(&mut self, _head: &ForwardedHead<'_>) -> io::Result<()> {
        Err(not_typed())
    }

    /// Typed: takes `data` as payload, after what waits (sending a staged head first); it goes
    /// out with the next flush. The caller flushes after each upstream read's worth, so at
    /// most one read waits. Empty `data` only sends a staged head.
    fn typed_payload(&mut self, _data: &[u8]) -> io::Result<()> {
        Err(not_typed())
    }

    /// Typed: more of a chunked body's trailer section (its field lines and final CRLF, as
    /// they came).
    fn typed_trailer_bytes(&mut self, _section: &[u8]) {}

    /// Typed: the body is complete (the next flush ends the response, with trailers if any).
    fn typed_end(&mut self) {}

    /// Whether a forwarded head is staged and not sent (HTTP/1.1: it waits in `out`): the
    /// proxy can still answer in its place.
    fn head_pending(&self, out: &[u8]) -> bool {
        !out.is_empty()
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Respond for crate::downstream::Downstream<S> {}

impl<T: Respond> Respond for Shared<'_, T> {
    const TYPED: bool = T::TYPED;

    fn poll_body(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<BodyPiece>> {
        self.0.borrow_mut().poll_body(cx)
    }

    fn typed_interim(&mut self, status: u16) -> io::Result<()> {
        self.0.borrow_mut().typed_interim(status)
    }

    fn typed_local(&mut self, reply: &LocalReply<'_>) -> io::Result<()> {
        self.0.borrow_mut().typed_local(reply)
    }

    fn typed_head(&mut self, head: &ForwardedHead<'_>) -> io::Result<()> {
        self.0.borrow_mut().typed_head(head)
    }

    fn typed_payload(&mut self, data: &[u8]) -> io::Result<()> {
        self.0.borrow_mut().typed_payload(data)
    }

    fn typed_trailer_bytes(&mut self, section: &[u8]) {
        self.0.borrow_mut().typed_trailer_bytes(section);
    }

    fn typed_end(&mut self) {
        self.0.borrow_mut().typed_end();
    }

    fn head_pending(&self, out: &[u8]) -> bool {
        self.0.borrow().head_pending(out)
    }
}

impl<T: Respond + ?Sized> Respond for &mut T {
    const TYPED: bool = T::TYPED;

    fn poll_body(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<BodyPiece>> {
        (**self).poll_body(cx)
    }

    fn typed_interim(&mut self, status: u16) -> io::Result<()> {
        (**self).typed_interim(status)
    }

    fn typed_local(&mut self, reply: &LocalReply<'_>) -> io::Result<()> {
        (**self).typed_local(reply)
    }

    fn typed_head(&mut self, head: &ForwardedHead<'_>) -> io::Result<()> {
        (**self).typed_head(head)
    }

    fn typed_payload(&mut self, data: &[u8]) -> io::Result<()> {
        (**self).typed_payload(data)
    }

    fn typed_trailer_bytes(&mut self, section: &[u8]) {
        (**self).typed_trailer_bytes(section);
    }

    fn typed_end(&mut self) {
        (**self).typed_end();
    }

    fn head_pending(&self, out: &[u8]) -> bool {
        (**self).head_pending(out)
    }
}

/// Sends a local answer whole (a staged head is dropped). HTTP/1.1: its bytes, left in `out`
/// (the caller counts them); typed: `out` is left empty.
pub(crate) async fn send_local<D: Respond>(
    down: &mut D,
    out: &mut Vec<u8>,
    reply: &LocalReply<'_>,
) -> io::Result<()> {
    out.clear();
    if D::TYPED {
        down.typed_local(reply)?;
        down.flush().await
    } else {
        reply.write_http1(out);
        write_flushed(down, out).await
    }
}

/// Sends `100 Continue` (the proxy's own, for `expect: 100-continue`).
pub(crate) async fn send_continue<D: Respond>(down: &mut D) -> io::Result<()> {
    if D::TYPED {
        down.typed_interim(100)
    } else {
        write_flushed(down, b"HTTP/1.1 100 Continue\r\n\r\n").await
    }
}

/// Stages a forwarded head: HTTP/1.1 writes it into `out` (sent with the first body bytes);
/// a typed responder keeps it (`out` stays empty).
pub(crate) fn stage_head<D: Respond>(
    down: &mut D,
    out: &mut Vec<u8>,
    head: &ForwardedHead<'_>,
) -> io::Result<()> {
    out.clear();
    if D::TYPED {
        down.typed_head(head)
    } else {
        write_response_head(out, head.buf, head.head, &head.edits);
        Ok(())
    }
}
