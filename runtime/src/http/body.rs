//! Bodies on the request path: a request body held when it is small and already here
//! ([`Engine::buffer_body`]), or streamed upstream as it arrives with a copy kept for retries
//! up to `REPLAY_LIMIT` ([`stream_request_body`], detached by the driver when a retry wants the
//! rest of it: [`Detach`]); the response body copied to the client by its framing
//! ([`copy_body`]); a tunnel after a `101` ([`tunnel`]).
//!
//! A request body comes one of two ways. An HTTP/1.1 client's is read as bytes in the framing
//! of its head and forwarded as it came (a chunked one scanned by the `ChunkedDecoder` on the
//! way, its trailer section sifted). A typed client's (an HTTP/2 stream, [`Respond::TYPED`])
//! comes as [`BodyPiece`]s — payload, trailers, end — which are framed for the upstream here,
//! once: a `content-length` body's payload as it is, one of unknown length as one chunk per
//! piece ([`ChunkFramer`]) with the trailers as its trailer section; a streamed piece is
//! written from its own bytes. Invariant: for a typed body, what the request buffer holds
//! after the head is framed for the upstream already (whole chunks), and is sent as it is.
//!
//! The client's failures within its body (a stall past `stream_idle_timeout`, malformed
//! chunks, a connection gone) travel inside the `io::Error` as an [`UploadFault`], so that the
//! driver tells them from the upstream's: a client's fault is answered 408 or 400 and never
//! reported to outlier detection.

use std::cell::Cell;
use std::future::poll_fn;
use std::io;
use std::task::Poll;
use std::time::Duration;

use sluice_core::http1::{BodyFraming, Chunked, ChunkedDecoder, TRAILER_FORBIDDEN, write_trailers};
use sluice_core::l7::exchange::ResponseFlag;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt as _};
use tokio::time::Instant as TokioInstant;

use super::respond::{BodyPiece, Respond};
use super::{REPLAY_LIMIT, ReadBuffer, write_flushed};
use crate::engine::Engine;
use crate::net::Network;

/// The most a chunked body's trailer section may hold (request and response).
const MAX_TRAILER_BYTES: usize = 16 * 1024;

impl<N: Network> Engine<N> {
    /// Holds the request body in `rbuf` when all of it, at most [`REPLAY_LIMIT`] bytes, has
    /// arrived: reads what the client already sent, never waits for more (a client may wait
    /// for an answer before it sends the rest — a watch, a gRPC stream — and a slow uploader's
    /// bytes go upstream as they come). `Ok(Some(n))`: held, `n` bytes after the head.
    /// `Ok(None)`: still arriving, or too large: it streams (a copy of it is kept for retries
    /// up to [`REPLAY_LIMIT`], see [`stream_request_body`]). `Err(status)`: the body is
    /// malformed or the client went away.
    pub(super) async fn buffer_body<D: Respond>(
        &self,
        down: &mut D,
        rbuf: &mut ReadBuffer,
        head_len: usize,
        framing: BodyFraming,
        stream_idle: Option<Duration>,
    ) -> Result<Option<usize>, u16> {
        if D::TYPED {
            return buffer_typed_body(down, rbuf, head_len, framing).await;
        }
        // What is readable now, without waiting: `None` when a read would wait.
        let fill = async |rbuf: &mut ReadBuffer, down: &mut D| {
            tokio::select! {
                biased;
                r = fill_within(rbuf, down, stream_idle, None) => Some(r),
                () = std::future::ready(()) => None,
            }
        };
        match framing {
            BodyFraming::None | BodyFraming::CloseDelimited => Ok(Some(0)),
            BodyFraming::ContentLength(n) => {
                if n as usize > REPLAY_LIMIT {
                    return Ok(None);
                }
                let need = head_len + n as usize;
                while rbuf.len() < need {
                    let Some(read) = fill(rbuf, down).await else {
                        return Ok(None);
                    };
                    match read {
                        Ok(0) => return Err(400),
                        Err(e) => {
                            return Err(if is_stall(&e) { 408 } else { 400 });
                        }
                        Ok(_) => {}
                    }
                }
                Ok(Some(n as usize))
            }
            BodyFraming::Chunked => {
                note_request_chunk_scan();
                let mut dec = ChunkedDecoder::new(MAX_TRAILER_BYTES);
                let mut scanned = head_len;
                loop {
                    match dec.feed(&rbuf.bytes()[scanned..]) {
                        Ok(Chunked::Done { consumed }) => {
                            return Ok(Some(scanned + consumed - head_len));
                        }
                        Ok(Chunked::NeedMore { consumed }) => scanned += consumed,
                        Err(_) => return Err(400),
                    }
                    if scanned - head_len > REPLAY_LIMIT {
                        // Too large to hold: stream it (what was scanned is re-scanned there).
                        return Ok(None);
                    }
                    let Some(read) = fill(rbuf, down).await else {
                        return Ok(None);
                    };
                    match read {
                        Ok(0) => return Err(400),
                        Err(e) => {
                            return Err(if is_stall(&e) { 408 } else { 400 });
                        }
                        Ok(_) => {}
                    }
                }
            }
        }
    }
}

/// [`Engine::buffer_body`] for a typed body (an HTTP/2 stream's): the pieces already here are
/// framed for the upstream into `rbuf` after the head ([`ChunkFramer`]; a `content-length`
/// body's payload as it is), never waiting for more. What was framed when the body turns out
/// to stream stays in `rbuf`, where [`stream_body_kept`] sends it first.
async fn buffer_typed_body<D: Respond>(
    down: &mut D,
    rbuf: &mut ReadBuffer,
    head_len: usize,
    framing: BodyFraming,
) -> Result<Option<usize>, u16> {
    let mut framer = ChunkFramer::default();
    match framing {
        BodyFraming::None | BodyFraming::CloseDelimited => return Ok(Some(0)),
        BodyFraming::ContentLength(n) if n as usize > REPLAY_LIMIT => return Ok(None),
        BodyFraming::ContentLength(0) => return Ok(Some(0)),
        BodyFraming::ContentLength(_) | BodyFraming::Chunked => {}
    }
    loop {
        // What is here now: a piece, or `None` when the next would wait.
        let piece = match poll_fn(|cx| Poll::Ready(down.poll_body(cx))).await {
            Poll::Pending => return Ok(None),
            Poll::Ready(Err(_)) => return Err(400),
            Poll::Ready(Ok(piece)) => piece,
        };
        match (framing, piece) {
            (BodyFraming::ContentLength(n), BodyPiece::Data(data)) => {
                rbuf.extend(&data);
                // The stream's check holds DATA to the content-length: never past it.
                if (rbuf.len() - head_len) as u64 >= n {
                    return Ok(Some(n as usize));
                }
            }
            // An end before the content-length is the stream's error; this is not reached.
            (BodyFraming::ContentLength(_), _) => return Err(400),
            (_, BodyPiece::Data(data)) => {
                rbuf.extend(framer.size_line(data.len()));
                rbuf.extend(&data);
                rbuf.extend(b"\r\n");
            }
            (_, BodyPiece::Trailers(trailers)) => {
                let mut out = Vec::new();
                framer.end_with(&mut out, &trailers);
                rbuf.extend(&out);
                return Ok(Some(rbuf.len() - head_len));
            }
            (_, BodyPiece::End) => {
                rbuf.extend(framer.end());
                return Ok(Some(rbuf.len() - head_len));
            }
        }
        if rbuf.len() - head_len > REPLAY_LIMIT {
            return Ok(None);
        }
    }
}

/// Frames a typed request body of unknown length as HTTP/1.1 chunks for the upstream, once:
/// each payload piece one chunk (its size line, the payload as it came, CRLF — the CRLF sent
/// with the piece, not held for the next one: an upstream that reads chunk by chunk answers a
/// duplex upload's piece before the client sends more), then the last chunk and the trailer
/// section without the fields a trailer must not carry.
#[derive(Default)]
struct ChunkFramer {
    /// The size line being written: at most 16 hex digits, `\r\n`.
    line: [u8; 18],
}

impl ChunkFramer {
    /// The size line of a chunk of `len` bytes.
    fn size_line(&mut self, len: usize) -> &[u8] {
        use std::io::Write as _;
        let mut rest = &mut self.line[..];
        let _ = write!(rest, "{len:x}\r\n");
        let written = 18 - rest.len();
        &self.line[..written]
    }

    /// The end of a body without trailers: the last chunk and an empty trailer section.
    fn end(&self) -> &'static [u8] {
        b"0\r\n\r\n"
    }

    /// Appends the end of a body with trailers: the last chunk and the trailer section, without
    /// the fields a trailer must not carry. Returns the bytes of the end as the client's
    /// fields would have made it (what the request's byte count adds).
    fn end_with(&self, out: &mut Vec<u8>, trailers: &http::HeaderMap) -> usize {
        out.extend_from_slice(b"0\r\n");
        let mut sent = 5;
        for (name, value) in trailers {
            let name = name.as_str();
            sent += name.len() + value.len() + 4;
            if !TRAILER_FORBIDDEN.contains(&name) {
                out.extend_from_slice(name.as_bytes());
                out.extend_from_slice(b": ");
                out.extend_from_slice(value.as_bytes());
                out.extend_from_slice(b"\r\n");
            }
        }
        out.extend_from_slice(b"\r\n");
        sent
    }
}

#[cfg(test)]
thread_local! {
    /// Times this thread ran a `ChunkedDecoder` over a request body (to show that an HTTP/2
    /// request's body is never framed as chunks and scanned back).
    pub(crate) static REQUEST_CHUNK_SCANS: Cell<u64> = const { Cell::new(0) };
}

/// Counts a scan of a request body's chunked framing (tests only).
fn note_request_chunk_scan() {
    #[cfg(test)]
    REQUEST_CHUNK_SCANS.with(|n| n.set(n.get() + 1));
}

/// How the client's side of a request body failed, carried inside the `io::Error` of a body
/// copy so that a caller tells it from an upstream write failing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum UploadFault {
    /// A read waited longer than `stream_idle_timeout`.
    Stalled,
    /// The body's framing is malformed (a bad chunk or trailer).
    Malformed,
    /// The client closed or reset its connection before the end of the body.
    Aborted,
}

impl std::fmt::Display for UploadFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            UploadFault::Stalled => "request body stalled for stream_idle_timeout",
            UploadFault::Malformed => "malformed request body",
            UploadFault::Aborted => "the client ended its connection within the request body",
        })
    }
}

impl std::error::Error for UploadFault {}

impl UploadFault {
    /// The local answer to a request whose body failed this way.
    pub(super) fn status(self) -> (u16, ResponseFlag) {
        match self {
            UploadFault::Stalled => (408, ResponseFlag::DownstreamLimit),
            UploadFault::Malformed | UploadFault::Aborted => {
                (400, ResponseFlag::DownstreamProtocolError)
            }
        }
    }

    pub(super) fn into_io(self, kind: io::ErrorKind) -> io::Error {
        io::Error::new(kind, self)
    }
}

/// The client's fault inside an IO error, if it is one (not, say, an upstream write failing).
pub(super) fn fault_of(e: &io::Error) -> Option<UploadFault> {
    e.get_ref()
        .and_then(|inner| inner.downcast_ref::<UploadFault>())
        .copied()
}

/// Whether an IO error is a stalled upload.
pub(super) fn is_stall(e: &io::Error) -> bool {
    fault_of(e) == Some(UploadFault::Stalled)
}

/// One read from downstream into `rbuf`, within `idle`: an error, a stall or an end of stream
/// come back as the client's [`UploadFault`]. While the answer streams alongside (full duplex),
/// `answered` is when its bytes last went to the client: the stream is idle only when neither
/// way moved for `idle` (Envoy's stream idle timeout), so a watch whose client sends nothing
/// while its answer flows is not cut.
pub(super) async fn fill_within<D: AsyncRead + Unpin>(
    rbuf: &mut ReadBuffer,
    down: &mut D,
    idle: Option<Duration>,
    answered: Option<&Cell<TokioInstant>>,
) -> io::Result<usize> {
    match within(idle, answered, rbuf.fill(down)).await? {
        Ok(0) => Err(UploadFault::Aborted.into_io(io::ErrorKind::UnexpectedEof)),
        Ok(n) => Ok(n),
        Err(e) => Err(UploadFault::Aborted.into_io(e.kind())),
    }
}

/// [`fill_within`] for a typed body: its next piece, within `idle`. A stall is the client's
/// [`UploadFault::Stalled`]; an error of the stream (a reset, a content-length mismatch) its
/// [`UploadFault::Aborted`].
async fn piece_within<D: Respond>(
    down: &mut D,
    idle: Option<Duration>,
    answered: Option<&Cell<TokioInstant>>,
) -> io::Result<BodyPiece> {
    within(idle, answered, poll_fn(|cx| down.poll_body(cx)))
        .await?
        .map_err(|e| UploadFault::Aborted.into_io(e.kind()))
}

/// Waits for `wait` while the stream is not idle for `idle` (see [`fill_within`]); a stall is
/// the client's [`UploadFault::Stalled`].
async fn within<F: Future>(
    idle: Option<Duration>,
    answered: Option<&Cell<TokioInstant>>,
    wait: F,
) -> io::Result<F::Output> {
    let Some(d) = idle else {
        return Ok(wait.await);
    };
    let mut wait = std::pin::pin!(wait);
    let mut from = TokioInstant::now();
    loop {
        match tokio::time::timeout_at(from + d, &mut wait).await {
            Ok(r) => return Ok(r),
            Err(_) => match answered.map(Cell::get) {
                Some(at) if at > from => from = at,
                _ => return Err(UploadFault::Stalled.into_io(io::ErrorKind::TimedOut)),
            },
        }
    }
}

/// What [`stream_request_body`] sent.
#[derive(Clone, Copy, Debug)]
pub(super) struct Uploaded {
    /// The replay copy holds all of it, as written upstream (or as it would have been).
    pub(super) kept: bool,
    /// The upstream did not take all of it ([`Detach::off`]): the rest was only copied.
    pub(super) detached: bool,
}

/// What the driver and a streamed body's upload share about it, for one try.
#[derive(Debug, Default)]
pub(super) struct Detach {
    /// Nothing more goes upstream; what arrives is only copied, while it fits. Set by the
    /// driver when the try failed and the core wants the whole body for a retry
    /// (`Stream::retry_wants_body`), or by the upload when a write to the upstream failed
    /// while the copy was whole (the try's failure follows on the response path). An upload
    /// whose copy is lost then ends with an error.
    pub(super) off: Cell<bool>,
    /// No whole copy: none was kept (too large a `content-length`), or it outgrew
    /// [`REPLAY_LIMIT`]. The body cannot be replayed.
    pub(super) lost: Cell<bool>,
}

/// Where [`stream_request_body`] copies what it writes upstream, while it fits in
/// [`REPLAY_LIMIT`] (a body that outgrows it loses its copy: it is not retried).
pub(super) struct ReplayCopy<'a> {
    copy: Option<&'a mut Vec<u8>>,
    detach: &'a Detach,
}

impl ReplayCopy<'_> {
    pub(super) fn keep(&mut self, bytes: &[u8]) {
        if let Some(copy) = self.copy.as_deref_mut() {
            if copy.len() + bytes.len() > REPLAY_LIMIT {
                copy.clear();
                self.copy = None;
                self.detach.lost.set(true);
            } else {
                copy.extend_from_slice(bytes);
            }
        }
    }
}

/// Writes a piece of the body upstream (unless detached, see [`Detach::off`]) and keeps it in
/// the copy. A write under way stops when the driver detaches the upload (it is polled again
/// after). A failed write detaches the upload when the copy is whole, so that a retry can
/// still have the body; else it is the upload's error.
pub(super) async fn send_kept<U: AsyncWrite + Unpin>(
    up: &mut U,
    piece: &[u8],
    copy: &mut ReplayCopy<'_>,
) -> io::Result<()> {
    let detach = copy.detach;
    if !detach.off.get() {
        let mut write = std::pin::pin!(write_flushed(up, piece));
        let written = poll_fn(|cx| {
            if detach.off.get() {
                Poll::Ready(Ok(()))
            } else {
                write.as_mut().poll(cx)
            }
        })
        .await;
        if let Err(e) = written {
            if copy.copy.is_none() {
                return Err(e);
            }
            tracing::debug!(error = %e, "upstream stopped taking the request body; kept for a retry");
            detach.off.set(true);
        }
    }
    copy.keep(piece);
    if detach.off.get() && copy.copy.is_none() {
        return Err(io::Error::new(
            io::ErrorKind::BrokenPipe,
            "the upstream stopped taking a request body larger than the replay buffer",
        ));
    }
    Ok(())
}

/// Streams a request body downstream → upstream as it arrives; returns whether
/// `replay` (when given) holds a copy of all of it as written upstream — so a retry can send it
/// again (Envoy's rule: bytes go upstream as they come, and a copy is kept up to the buffer
/// limit). Leaves `rbuf` holding only bytes after the body (the next pipelined request).
/// `answered`: see [`fill_within`]; `detach`: see [`Detach`] (when detached, the rest of the
/// body is read into the copy only, and an upload whose copy is lost ends with an error).
#[allow(clippy::too_many_arguments)]
pub(super) async fn stream_request_body<U, D>(
    up: &mut U,
    down: &mut D,
    rbuf: &mut ReadBuffer,
    head_len: usize,
    framing: BodyFraming,
    stream_idle: Option<Duration>,
    answered: Option<&Cell<TokioInstant>>,
    received: &Cell<u64>,
    replay: Option<&mut Vec<u8>>,
    detach: &Detach,
) -> io::Result<Uploaded>
where
    U: AsyncWrite + Unpin,
    D: Respond,
{
    if replay.is_none() {
        detach.lost.set(true);
    }
    let mut copy = ReplayCopy {
        copy: replay,
        detach,
    };
    stream_body_kept(
        up,
        down,
        rbuf,
        head_len,
        framing,
        stream_idle,
        answered,
        received,
        &mut copy,
    )
    .await?;
    Ok(Uploaded {
        kept: copy.copy.is_some(),
        detached: detach.off.get(),
    })
}

/// [`stream_request_body`]'s loop, copying what it writes into `copy`.
#[allow(clippy::too_many_arguments)]
pub(super) async fn stream_body_kept<U, D>(
    up: &mut U,
    down: &mut D,
    rbuf: &mut ReadBuffer,
    head_len: usize,
    framing: BodyFraming,
    stream_idle: Option<Duration>,
    answered: Option<&Cell<TokioInstant>>,
    received: &Cell<u64>,
    copy: &mut ReplayCopy<'_>,
) -> io::Result<u64>
where
    U: AsyncWrite + Unpin,
    D: Respond,
{
    if D::TYPED {
        return stream_typed_body(
            up,
            down,
            rbuf,
            head_len,
            framing,
            stream_idle,
            answered,
            received,
            copy,
        )
        .await;
    }
    // The head stays at the front of rbuf until the request is logged: keep it, stream the
    // rest, and keep any bytes past the body.
    let mut total = 0u64;
    match framing {
        BodyFraming::ContentLength(n) => {
            let mut left = n;
            loop {
                let avail = rbuf.len().saturating_sub(head_len);
                let take = (avail as u64).min(left) as usize;
                if take > 0 {
                    let piece = &rbuf.bytes()[head_len..head_len + take];
                    send_kept(up, piece, copy).await?;
                    drop_range(rbuf, head_len, take);
                    left -= take as u64;
                    total += take as u64;
                    received.set(received.get() + take as u64);
                }
                if left == 0 {
                    return Ok(total);
                }
                // An end of stream comes back as the client's UploadFault::Aborted.
                fill_within(rbuf, down, stream_idle, answered).await?;
            }
        }
        BodyFraming::Chunked => {
            // The body goes out as it came up to its trailer section, which is held back (at
            // most MAX_TRAILER_BYTES) and written without the fields a trailer must not carry.
            note_request_chunk_scan();
            let mut dec = ChunkedDecoder::new(MAX_TRAILER_BYTES);
            // Scanned bytes at the front of the body region not forwarded yet (the trailers).
            let mut held = 0;
            loop {
                let avail = &rbuf.bytes()[head_len + held..];
                let (consumed, done) = match dec.feed(avail) {
                    Ok(Chunked::Done { consumed }) => (consumed, true),
                    Ok(Chunked::NeedMore { consumed }) => (consumed, false),
                    Err(_) => {
                        return Err(UploadFault::Malformed.into_io(io::ErrorKind::InvalidData));
                    }
                };
                let scanned = held + consumed;
                let forward = match dec.trailers_start() {
                    Some(at) => (at - total) as usize,
                    None => scanned,
                };
                if forward > 0 {
                    let piece = &rbuf.bytes()[head_len..head_len + forward];
                    send_kept(up, piece, copy).await?;
                    drop_range(rbuf, head_len, forward);
                    total += forward as u64;
                    received.set(received.get() + forward as u64);
                }
                held = scanned - forward;
                if done {
                    let section = &rbuf.bytes()[head_len..head_len + held];
                    if section == b"\r\n" {
                        send_kept(up, section, copy).await?;
                    } else {
                        let mut trailers = Vec::with_capacity(section.len());
                        write_trailers(&mut trailers, section);
                        send_kept(up, &trailers, copy).await?;
                    }
                    drop_range(rbuf, head_len, held);
                    received.set(received.get() + held as u64);
                    return Ok(total + held as u64);
                }
                // An end of stream comes back as the client's UploadFault::Aborted.
                fill_within(rbuf, down, stream_idle, answered).await?;
            }
        }
        BodyFraming::None | BodyFraming::CloseDelimited => Ok(0),
    }
}

/// [`stream_body_kept`] for a typed body (an HTTP/2 stream's): what [`buffer_typed_body`]
/// framed into `rbuf` goes first, then each piece as it comes, framed for the upstream here
/// once — a `content-length` body's payload as it is, one of unknown length as chunks
/// ([`ChunkFramer`]), the payload written from the piece itself (no copy into `rbuf`).
#[allow(clippy::too_many_arguments)]
async fn stream_typed_body<U, D>(
    up: &mut U,
    down: &mut D,
    rbuf: &mut ReadBuffer,
    head_len: usize,
    framing: BodyFraming,
    stream_idle: Option<Duration>,
    answered: Option<&Cell<TokioInstant>>,
    received: &Cell<u64>,
    copy: &mut ReplayCopy<'_>,
) -> io::Result<u64>
where
    U: AsyncWrite + Unpin,
    D: Respond,
{
    let mut total = 0u64;
    let sent = |n: usize, total: &mut u64| {
        *total += n as u64;
        received.set(received.get() + n as u64);
    };
    let mut left = match framing {
        BodyFraming::ContentLength(n) => n,
        BodyFraming::Chunked => u64::MAX,
        BodyFraming::None | BodyFraming::CloseDelimited => return Ok(0),
    };
    let held = rbuf.len().saturating_sub(head_len);
    if held > 0 {
        send_kept(up, &rbuf.bytes()[head_len..], copy).await?;
        drop_range(rbuf, head_len, held);
        sent(held, &mut total);
        if let BodyFraming::ContentLength(_) = framing {
            left -= held as u64;
        }
    }
    let mut framer = ChunkFramer::default();
    while left > 0 {
        match piece_within(down, stream_idle, answered).await? {
            BodyPiece::Data(data) => {
                if let BodyFraming::Chunked = framing {
                    let line = framer.size_line(data.len());
                    let n = line.len();
                    send_kept(up, line, copy).await?;
                    sent(n, &mut total);
                } else {
                    left = left.saturating_sub(data.len() as u64);
                }
                send_kept(up, &data, copy).await?;
                sent(data.len(), &mut total);
                if let BodyFraming::Chunked = framing {
                    send_kept(up, b"\r\n", copy).await?;
                    sent(2, &mut total);
                }
            }
            // An end before the content-length is the stream's error; this is not reached.
            _ if left != u64::MAX => {
                return Err(UploadFault::Aborted.into_io(io::ErrorKind::UnexpectedEof));
            }
            BodyPiece::Trailers(trailers) => {
                let mut out = Vec::new();
                let n = framer.end_with(&mut out, &trailers);
                send_kept(up, &out, copy).await?;
                // Counted as the client's fields made it, before the sifting.
                sent(n, &mut total);
                left = 0;
            }
            BodyPiece::End => {
                let end = framer.end();
                send_kept(up, end, copy).await?;
                sent(end.len(), &mut total);
                left = 0;
            }
        }
    }
    Ok(total)
}

/// Appends a complete, validated chunked request body, its trailer section without the fields
/// a trailer must not carry. The common body without trailers (it ends with the last chunk and
/// an empty trailer section, `0\r\n\r\n`) is copied as it is, without a second scan.
pub(super) fn push_chunked_body(out: &mut Vec<u8>, body: &[u8]) {
    if body == b"0\r\n\r\n" || body.ends_with(b"\r\n0\r\n\r\n") {
        out.extend_from_slice(body);
        return;
    }
    note_request_chunk_scan();
    let mut dec = ChunkedDecoder::new(MAX_TRAILER_BYTES);
    match (dec.feed(body), dec.trailers_start()) {
        (Ok(Chunked::Done { .. }), Some(at)) => {
            let at = at as usize;
            out.extend_from_slice(&body[..at]);
            write_trailers(out, &body[at..]);
        }
        // Not reached: the body was validated by the same decoder.
        _ => out.extend_from_slice(body),
    }
}

/// Removes `len` bytes at `at` (relative to the unconsumed start) from the buffer.
pub(super) fn drop_range(rbuf: &mut ReadBuffer, at: usize, len: usize) {
    let start = rbuf.start + at;
    rbuf.data.copy_within(start + len..rbuf.end, start);
    rbuf.end -= len;
}

/// Writes `data` downstream, preceded by whatever is still `pending` (the response head), in
/// one write when there is something pending.
/// Writes `pending` (the response head, on the first call) and `data`; `awaiting` is cleared
/// before the first byte goes out (from then on the client has a response under way).
pub(super) async fn send<D: AsyncWrite + Unpin>(
    down: &mut D,
    pending: &mut Vec<u8>,
    awaiting: &Cell<bool>,
    answered: Option<&Cell<TokioInstant>>,
    data: &[u8],
) -> io::Result<()> {
    awaiting.set(false);
    let r = if pending.is_empty() {
        write_flushed(down, data).await
    } else {
        pending.extend_from_slice(data);
        let r = write_flushed(down, pending).await;
        pending.clear();
        r
    };
    if let Some(at) = answered {
        at.set(TokioInstant::now());
    }
    r
}

/// Copies the response body upstream → downstream by its framing, after the head in `pending`;
/// returns body bytes sent. With `trailers`, a chunked body's trailer section is appended to it
/// as it passes (for a gRPC answer's `grpc-status`).
#[allow(clippy::too_many_arguments)]
pub(super) async fn copy_body<U, D>(
    up: &mut U,
    down: &mut D,
    ubuf: &mut ReadBuffer,
    framing: BodyFraming,
    pending: &mut Vec<u8>,
    awaiting: &Cell<bool>,
    answered: Option<&Cell<TokioInstant>>,
    mut trailers: Option<&mut Vec<u8>>,
) -> io::Result<u64>
where
    U: AsyncRead + Unpin,
    D: Respond,
{
    if D::TYPED {
        return copy_payload(up, down, ubuf, framing, awaiting, answered, trailers).await;
    }
    let mut sent = 0u64;
    match framing {
        BodyFraming::None => {}
        BodyFraming::ContentLength(n) => {
            let mut left = n;
            loop {
                let take = (ubuf.len() as u64).min(left) as usize;
                if take > 0 {
                    send(down, pending, awaiting, answered, &ubuf.bytes()[..take]).await?;
                    ubuf.consume(take);
                    left -= take as u64;
                    sent += take as u64;
                }
                if left == 0 {
                    break;
                }
                if ubuf.fill(up).await? == 0 {
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
            }
        }
        BodyFraming::Chunked => {
            let mut dec = ChunkedDecoder::new(MAX_TRAILER_BYTES);
            loop {
                let (consumed, done) = match dec.feed(ubuf.bytes()) {
                    Ok(Chunked::Done { consumed }) => (consumed, true),
                    Ok(Chunked::NeedMore { consumed }) => (consumed, false),
                    Err(e) => {
                        return Err(io::Error::new(io::ErrorKind::InvalidData, e.to_string()));
                    }
                };
                if let Some(t) = trailers.as_deref_mut()
                    && let Some(at) = dec.trailers_start()
                {
                    // The part of these bytes at or past the trailer section's start.
                    let from = at.saturating_sub(sent).min(consumed as u64) as usize;
                    t.extend_from_slice(&ubuf.bytes()[from..consumed]);
                }
                if consumed > 0 {
                    send(down, pending, awaiting, answered, &ubuf.bytes()[..consumed]).await?;
                    ubuf.consume(consumed);
                    sent += consumed as u64;
                }
                if done {
                    break;
                }
                if ubuf.fill(up).await? == 0 {
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
            }
        }
        BodyFraming::CloseDelimited => loop {
            if !ubuf.is_empty() {
                send(down, pending, awaiting, answered, ubuf.bytes()).await?;
                sent += ubuf.len() as u64;
                ubuf.clear();
            }
            if !pending.is_empty() {
                send(down, pending, awaiting, answered, &[]).await?;
            }
            if ubuf.fill(up).await? == 0 {
                break;
            }
        },
    }
    if !pending.is_empty() {
        send(down, pending, awaiting, answered, &[]).await?;
    }
    Ok(sent)
}

/// [`copy_body`] for a typed responder (an HTTP/2 stream): the payload without the upstream's
/// framing (a chunked body de-chunked here, its trailer section handed over as it passes, and
/// to `trailers` when given), each upstream read's worth given at once and flushed (so the
/// last DATA carries the end of the stream when the body ends in that read), then the end of
/// the body. Returns payload bytes sent.
async fn copy_payload<U, D>(
    up: &mut U,
    down: &mut D,
    ubuf: &mut ReadBuffer,
    framing: BodyFraming,
    awaiting: &Cell<bool>,
    answered: Option<&Cell<TokioInstant>>,
    mut trailers: Option<&mut Vec<u8>>,
) -> io::Result<u64>
where
    U: AsyncRead + Unpin,
    D: Respond,
{
    // Flushes what `down` took (the staged head with it, the first time).
    let flush = async |down: &mut D| {
        awaiting.set(false);
        let r = down.flush().await;
        if let Some(at) = answered {
            at.set(TokioInstant::now());
        }
        r
    };
    let mut sent = 0u64;
    match framing {
        BodyFraming::None => {}
        BodyFraming::ContentLength(n) => {
            let mut left = n;
            loop {
                let take = (ubuf.len() as u64).min(left) as usize;
                if take > 0 {
                    down.typed_payload(&ubuf.bytes()[..take])?;
                    ubuf.consume(take);
                    left -= take as u64;
                    sent += take as u64;
                    if left == 0 {
                        down.typed_end();
                    }
                    flush(down).await?;
                }
                if left == 0 {
                    break;
                }
                if ubuf.fill(up).await? == 0 {
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
            }
        }
        BodyFraming::Chunked => {
            let mut dec = ChunkedDecoder::new(MAX_TRAILER_BYTES);
            // Body bytes (framing included) scanned so far: where the trailer section starts.
            let mut scanned = 0u64;
            loop {
                let data = ubuf.bytes();
                let mut at = 0;
                let mut done = false;
                while at < data.len() {
                    let (c, run) = dec
                        .feed_payload(&data[at..])
                        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
                    if let Some(r) = run {
                        down.typed_payload(&data[at..][r.clone()])?;
                        sent += r.len() as u64;
                    }
                    let consumed = match c {
                        Chunked::NeedMore { consumed } => consumed,
                        Chunked::Done { consumed } => {
                            done = true;
                            consumed
                        }
                    };
                    if let Some(start) = dec.trailers_start() {
                        let from = start.saturating_sub(scanned).min(consumed as u64) as usize;
                        let section = &data[at + from..at + consumed];
                        down.typed_trailer_bytes(section);
                        if let Some(t) = trailers.as_deref_mut() {
                            t.extend_from_slice(section);
                        }
                    }
                    scanned += consumed as u64;
                    at += consumed;
                    if done {
                        break;
                    }
                }
                ubuf.consume(at);
                if done {
                    down.typed_end();
                }
                if at > 0 {
                    // The staged head goes out with the first body bytes (framing alone
                    // included), as HTTP/1.1's does.
                    down.typed_payload(&[])?;
                    flush(down).await?;
                }
                if done {
                    break;
                }
                if ubuf.fill(up).await? == 0 {
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
            }
        }
        BodyFraming::CloseDelimited => loop {
            down.typed_payload(ubuf.bytes())?;
            sent += ubuf.len() as u64;
            ubuf.clear();
            flush(down).await?;
            if ubuf.fill(up).await? == 0 {
                down.typed_end();
                break;
            }
        },
    }
    // A body that ended (or had none): what is left goes, the head too if nothing else did.
    down.typed_payload(&[])?;
    down.typed_end();
    flush(down).await?;
    Ok(sent)
}

/// After a `101`: bytes both ways until either side closes. Leftovers in the buffers go first.
pub(super) async fn tunnel<D, U>(
    down: &mut D,
    up: &mut U,
    rbuf: &mut ReadBuffer,
    head_len: usize,
    ubuf: &mut ReadBuffer,
) -> u64
where
    D: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    if rbuf.len() > head_len {
        if write_flushed(up, &rbuf.bytes()[head_len..]).await.is_err() {
            return 0;
        }
        let extra = rbuf.len() - head_len;
        drop_range(rbuf, head_len, extra);
    }
    let mut sent = 0;
    if !ubuf.is_empty() {
        if write_flushed(down, ubuf.bytes()).await.is_err() {
            return 0;
        }
        sent += ubuf.len() as u64;
        ubuf.clear();
    }
    match tokio::io::copy_bidirectional(down, up).await {
        Ok((_, to_down)) => sent + to_down,
        Err(_) => sent,
    }
}

#[cfg(test)]
mod tests {
    use std::pin::Pin;
    use std::sync::Arc;
    use std::task::Context;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// A TLS server stream over an in-memory pipe of `capacity` bytes each way, and its client.
    async fn tls_pair(
        capacity: usize,
    ) -> (
        tokio_rustls::server::TlsStream<tokio::io::DuplexStream>,
        tokio_rustls::client::TlsStream<tokio::io::DuplexStream>,
    ) {
        let cert = rcgen::generate_simple_self_signed(vec!["svc.test".to_owned()]).unwrap();
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let key =
            rustls::pki_types::PrivateKeyDer::try_from(cert.signing_key.serialize_der()).unwrap();
        let server = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert.cert.der().clone()], key)
            .unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert.cert.der().clone()).unwrap();
        let client = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let (a, b) = tokio::io::duplex(capacity);
        let name = rustls::pki_types::ServerName::try_from("svc.test").unwrap();
        let (s, c) = tokio::join!(
            tokio_rustls::TlsAcceptor::from(Arc::new(server)).accept(a),
            tokio_rustls::TlsConnector::from(Arc::new(client)).connect(name, b)
        );
        (s.unwrap(), c.unwrap())
    }

    /// Over TLS a write can leave the end of its data inside rustls while the socket is full;
    /// without a flush the end of a response body stays there while the proxy goes back to
    /// reading (a client waiting for the rest of a keep-alive response hung until the idle
    /// timeout). The body is copied while the client does not read; once copy_body returns,
    /// the client must get all of it with no further write by the proxy.
    #[test]
    fn a_response_body_reaches_a_tls_client_whole_when_the_client_reads_late() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let (down, mut client) = tls_pair(4096).await;
            let body: Vec<u8> = (0..40_000u32).map(|i| (i % 251) as u8).collect();
            let (mut up, mut origin) = tokio::io::duplex(1 << 20);
            origin.write_all(&body).await.unwrap();
            let mut ubuf = ReadBuffer::new();
            let mut pending = b"HTTP/1.1 200 OK\r\ncontent-length: 40000\r\n\r\n".to_vec();
            let head_len = pending.len();
            let awaiting = Cell::new(true);
            let mut down = crate::downstream::Downstream::Plain(down);
            let copy = copy_body(
                &mut up,
                &mut down,
                &mut ubuf,
                BodyFraming::ContentLength(body.len() as u64),
                &mut pending,
                &awaiting,
                None,
                None,
            );
            let read_late = async {
                // Reads nothing until the copy has had every chance to finish on its own.
                tokio::time::sleep(Duration::from_millis(200)).await;
                let mut got = Vec::new();
                let mut buf = [0u8; 8192];
                while got.len() < head_len + body.len() {
                    match tokio::time::timeout(Duration::from_secs(2), client.read(&mut buf)).await
                    {
                        Ok(Ok(n)) if n > 0 => got.extend_from_slice(&buf[..n]),
                        _ => break,
                    }
                }
                got
            };
            let (sent, got) = tokio::join!(copy, read_late);
            assert_eq!(sent.unwrap(), body.len() as u64);
            assert_eq!(
                got.len(),
                head_len + body.len(),
                "the end of the body never came"
            );
            assert_eq!(&got[head_len..], &body[..]);
        });
    }

    /// An upstream that takes `0` more bytes, then fails every write.
    struct FailAfter(usize);

    impl AsyncWrite for FailAfter {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            if buf.len() <= self.0 {
                self.0 -= buf.len();
                Poll::Ready(Ok(buf.len()))
            } else {
                Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()))
            }
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    /// A write to the upstream that fails while a small body is still arriving (the upstream
    /// took its first half) leaves the upload reading the rest into the replay copy, so that a
    /// retry has the whole body (`kept`, `detached`: the upstream did not get it all). Without
    /// a copy (a body too large for it) the failed write is the upload's error, as before.
    #[test]
    fn a_failed_body_write_keeps_reading_a_small_body_into_the_copy() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let upload = async |replay: Option<&mut Vec<u8>>| {
                let (down, mut client) = tokio::io::duplex(1024);
                let mut down = crate::downstream::Downstream::Plain(down);
                let send = async {
                    client.write_all(&[b'a'; 100]).await.unwrap();
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    client.write_all(&[b'b'; 100]).await.unwrap();
                };
                let detach = Detach::default();
                let mut rbuf = ReadBuffer::new();
                let received = Cell::new(0);
                let mut up = FailAfter(100);
                let (r, ()) = tokio::join!(
                    stream_request_body(
                        &mut up,
                        &mut down,
                        &mut rbuf,
                        0,
                        BodyFraming::ContentLength(200),
                        Some(Duration::from_secs(5)),
                        None,
                        &received,
                        replay,
                        &detach,
                    ),
                    send
                );
                (r, detach.off.get())
            };
            let mut copy = Vec::new();
            let (r, off) = upload(Some(&mut copy)).await;
            let uploaded = r.unwrap();
            assert!(uploaded.kept && uploaded.detached && off, "{uploaded:?}");
            assert_eq!(copy, [[b'a'; 100], [b'b'; 100]].concat());
            let (r, _) = upload(None).await;
            let e = r.unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::BrokenPipe, "{e}");
            assert!(fault_of(&e).is_none(), "not the client's fault: {e}");
        });
    }
}
