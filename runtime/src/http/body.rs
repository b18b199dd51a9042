//! Bodies on the request path: a request body held when it is small and already here
//! ([`buffer_body`]), or streamed upstream as it arrives with a copy kept for retries up to
//! `REPLAY_LIMIT` ([`stream_request_body`], detached by the driver when a retry wants the rest
//! of it: [`Detach`]); the response body copied to the client by its framing ([`copy_body`]); a
//! tunnel after a `101` ([`tunnel`]).
//!
//! A request body has one path, whatever the client's protocol: it comes as pieces — payload,
//! trailers, end ([`RequestBody`], [`Piece`]) — which are framed for the upstream here, once: a
//! `content-length` body's payload as it is, one of unknown length as one chunk per piece
//! ([`ChunkFramer`]) with the trailers as its trailer section, without the fields a trailer
//! must not carry. An HTTP/1.1 connection's body is decoded into those pieces from its read
//! buffer (a `content-length` payload as it lies there, a chunked one scanned once by one
//! `ChunkedDecoder`); an HTTP/2 stream's comes typed ([`Respond::poll_body`]). A piece is
//! written upstream from where it lies; a held body is framed once into the upstream request,
//! after its head. Invariant: the upstream request holds, after its head, only body bytes
//! framed for the upstream (whole chunks), sent as they are.
//!
//! The client's failures within its body (a stall past `stream_idle_timeout`, malformed
//! chunks, a connection gone) travel inside the `io::Error` as an [`UploadFault`], so that the
//! driver tells them from the upstream's: a client's fault is answered 408 or 400 and never
//! reported to outlier detection.

use std::cell::Cell;
use std::future::poll_fn;
use std::io;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use sluice_core::http1::{
    BodyFraming, Chunked, ChunkedDecoder, HttpError, TRAILER_FORBIDDEN, write_trailers,
};
use sluice_core::l7::exchange::ResponseFlag;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt as _};
use tokio::time::Instant as TokioInstant;

use super::respond::{BodyPiece, Respond};
use super::{REPLAY_LIMIT, ReadBuffer, write_flushed};

/// The most a chunked body's trailer section may hold (request and response).
const MAX_TRAILER_BYTES: usize = 16 * 1024;

/// What [`buffer_body`] held: the body's first bytes as framed for the upstream, appended to the
/// upstream request after its head.
#[derive(Clone, Copy, Debug)]
pub(super) struct Held {
    /// All of the body is held (at most [`REPLAY_LIMIT`] framed bytes): it goes with the head.
    pub(super) whole: bool,
    /// Bytes appended after the head (the framed body, or its start when it streams).
    pub(super) framed: usize,
    /// What they took of the client's request (HTTP/1.1: its bytes as they came).
    pub(super) received: u64,
}

/// Holds the request body after the upstream head in `out` when all of it, at most
/// [`REPLAY_LIMIT`] framed bytes, has arrived: takes the pieces the client already sent, never
/// waits for more (a client may wait for an answer before it sends the rest — a watch, a gRPC
/// stream — and a slow uploader's bytes go upstream as they come). Each piece is framed for the
/// upstream as it is appended (a `content-length` body's payload as it is, one of unknown
/// length as chunks: [`ChunkFramer`]). `whole`: held. Else the body streams from where the
/// holding stopped ([`stream_request_body`]; a copy of it is kept for retries up to
/// [`REPLAY_LIMIT`]): what was appended goes with the head, and a piece that did not fit stays
/// the body's current one, sent first. `Err(fault)`: the body stalled (408), is malformed (400)
/// or the client went away (400): the fault's answer names which.
pub(super) async fn buffer_body<D: Respond>(
    down: &mut D,
    rbuf: &mut ReadBuffer,
    head_len: usize,
    body: &mut RequestBody,
    out: &mut Vec<u8>,
) -> Result<Held, UploadFault> {
    let mut held = Held {
        whole: true,
        framed: 0,
        received: 0,
    };
    match body.length {
        Some(0) => return Ok(held),
        Some(n) if n as usize > REPLAY_LIMIT => {
            held.whole = false;
            return Ok(held);
        }
        _ => {}
    }
    let start = out.len();
    let mut framer = ChunkFramer::default();
    while !body.ended() {
        // What is here now: a piece, or nothing when the next would wait.
        match poll_fn(|cx| Poll::Ready(body.poll_next(down, rbuf, head_len, cx))).await {
            Poll::Pending => {
                held.whole = false;
                break;
            }
            Poll::Ready(Err(e)) => return Err(fault_of(&e).unwrap_or(UploadFault::Aborted)),
            Poll::Ready(Ok(())) => {}
        }
        let before = out.len();
        match body.piece(rbuf, head_len) {
            Piece::Data(data) => {
                let framing = if body.length.is_none() { 20 } else { 0 };
                if out.len() - start + data.len() + framing > REPLAY_LIMIT {
                    // Too large to hold: it streams, this piece first.
                    held.whole = false;
                    break;
                }
                // A `content-length` payload goes as it is; chunks keep the client's sizes.
                let (starts, ends) = body.chunk_bounds(data);
                if let Some(size) = starts {
                    out.extend_from_slice(framer.size_line(size));
                }
                out.extend_from_slice(data);
                if ends {
                    out.extend_from_slice(b"\r\n");
                }
            }
            // An end before the content-length is the stream's error (HTTP/2) or the
            // decoder's (HTTP/1.1 reads until it): not reached.
            _ if body.length.is_some() => return Err(UploadFault::Aborted),
            Piece::Trailers(trailers) => {
                framer.end_with(out, trailers);
            }
            Piece::TrailerSection(section) => framer.end_with_section(out, section),
            Piece::End => out.extend_from_slice(framer.end()),
        }
        if out.len() - start > REPLAY_LIMIT {
            // The end with its trailer section (up to 16 KiB) does not fit: the body streams,
            // its end the current piece, sent first.
            out.truncate(before);
            held.whole = false;
            break;
        }
        let framed = out.len() - before;
        body.advance();
        held.received += body.received(framed);
    }
    held.framed = out.len() - start;
    if held.whole {
        note_held(held.framed);
        body.finish(rbuf, head_len);
    }
    Ok(held)
}

/// Frames a request body of unknown length as HTTP/1.1 chunks for the upstream, once: each of
/// the client's chunks one chunk of the same size (an HTTP/2 DATA frame's payload is one; an
/// HTTP/1.1 chunk keeps its size, its extensions gone, whatever pieces its data came in): its
/// size line before the piece that starts it, the payload as it came, CRLF after the piece
/// that ends it — sent with that piece, not held for the next one: an upstream that reads
/// chunk by chunk answers a duplex upload's chunk before the client sends more. Then the last
/// chunk and the trailer section without the fields a trailer must not carry.
#[derive(Default)]
struct ChunkFramer {
    /// The size line being written: at most 16 hex digits, `\r\n`.
    line: [u8; 18],
}

impl ChunkFramer {
    /// The size line of a chunk of `len` bytes.
    fn size_line(&mut self, len: u64) -> &[u8] {
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

    /// Appends the end of a body with typed trailers (HTTP/2): the last chunk and the trailer
    /// section, without the fields a trailer must not carry. Returns the bytes of the end as
    /// the client's fields would have made it (what the request's byte count adds).
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

    /// Appends the end of a body with an HTTP/1.1 trailer section (its field lines and final
    /// CRLF as the decoder validated them): the last chunk and the section without the fields a
    /// trailer must not carry.
    fn end_with_section(&self, out: &mut Vec<u8>, section: &[u8]) {
        out.extend_from_slice(b"0\r\n");
        write_trailers(out, section);
    }
}

#[cfg(test)]
thread_local! {
    /// Times this thread ran a `ChunkedDecoder` over a request body (to show that an HTTP/2
    /// request's body is never framed as chunks and scanned back, and an HTTP/1.1 one is
    /// scanned by one decoder).
    pub(crate) static REQUEST_CHUNK_SCANS: Cell<u64> = const { Cell::new(0) };
    /// Bytes this thread's request-body `ChunkedDecoder`s consumed: an HTTP/1.1 chunked body
    /// scanned once makes it the body's length exactly.
    pub(crate) static REQUEST_CHUNK_BYTES_SCANNED: Cell<u64> = const { Cell::new(0) };
}

#[cfg(test)]
thread_local! {
    /// Writes this thread's request-body uploads made to their upstreams (to show that a body
    /// of many small pieces costs a write per batch of them, not per piece).
    pub(crate) static UPLOAD_WRITES: Cell<u64> = const { Cell::new(0) };
}

#[cfg(test)]
thread_local! {
    /// The most framed bytes a whole held request body took on this thread.
    pub(crate) static HELD_MAX: Cell<usize> = const { Cell::new(0) };
}

/// Notes a whole held body's framed length (tests only).
fn note_held(_framed: usize) {
    #[cfg(test)]
    HELD_MAX.with(|m| m.set(m.get().max(_framed)));
}

/// Counts a write of a request body upstream (tests only).
fn note_upload_write() {
    #[cfg(test)]
    UPLOAD_WRITES.with(|n| n.set(n.get() + 1));
}

/// Counts a scan of a request body's chunked framing (tests only).
fn note_request_chunk_scan() {
    #[cfg(test)]
    REQUEST_CHUNK_SCANS.with(|n| n.set(n.get() + 1));
}

/// Counts bytes a request body's chunk decoder consumed (tests only).
fn note_request_chunk_bytes(_n: usize) {
    #[cfg(test)]
    REQUEST_CHUNK_BYTES_SCANNED.with(|b| b.set(b.get() + _n as u64));
}

/// A request body's piece as the path takes it ([`RequestBody::piece`]): payload borrowed from
/// where it lies — an HTTP/1.1 connection's read buffer, an HTTP/2 DATA frame — never copied
/// to be handed over; then the end, with the trailers when there are some.
pub(super) enum Piece<'a> {
    /// Payload without any framing, never empty.
    Data(&'a [u8]),
    /// The body ended with these trailer fields (HTTP/2).
    Trailers(&'a http::HeaderMap),
    /// The body ended with this trailer section (HTTP/1.1: its field lines and final CRLF as
    /// the decoder validated them; at least one field line).
    TrailerSection(&'a [u8]),
    /// The body ended without trailers.
    End,
}

/// Where an HTTP/1.1 request body's decoding stands.
enum Decode {
    /// `content-length`: payload bytes still to come.
    Length { left: u64 },
    /// Chunked: the one decoder that scans the body.
    Chunked(ChunkedDecoder),
    /// The body ended (or is typed: the stream decodes it).
    Ended,
}

/// The current piece of an HTTP/1.1 body, as offsets of the body region of the read buffer
/// (which starts right after the head).
#[derive(Clone, Copy, Debug)]
enum Current {
    Data { from: usize, to: usize },
    Section { from: usize, to: usize },
    End,
}

/// A request body as pieces ([`Piece`]), whatever the client's protocol: the one source the
/// request path's body copies ([`buffer_body`], [`stream_request_body`]) take it from.
///
/// - An HTTP/1.1 connection's body is decoded here from its read buffer (and the connection,
///   read into that buffer when it runs out): a `content-length` body's payload is the buffer's
///   bytes as they lie (a piece per read, up to the length); a chunked one is scanned once, by
///   one `ChunkedDecoder`, each run of chunk data a piece, the trailer section one piece at the
///   end. The decoded bytes stay in the buffer until a read needs the room or the body ends
///   ([`RequestBody::finish`]): what follows the body there (the next pipelined request) stays.
/// - A typed client's (an HTTP/2 stream, [`Respond::TYPED`]) comes from [`Respond::poll_body`].
///
/// States: a piece is *current* from [`RequestBody::poll_next`] until [`RequestBody::advance`]
/// (a piece that did not fit a held body stays current, and the streaming copy sends it first);
/// the body has *ended* once its last piece is advanced past (a `content-length` one once its
/// payload is). Invariant: the body region of the read buffer holds, from its start, only bytes
/// not yet dropped: those decoded (`at` of them) and those not yet decoded.
pub(super) struct RequestBody {
    typed: bool,
    /// The payload's length (`content-length`); `None`: chunked.
    length: Option<u64>,
    decode: Decode,
    /// Decoded bytes at the front of the body region (HTTP/1.1).
    at: usize,
    /// Body bytes dropped from the read buffer before `at` (HTTP/1.1).
    dropped: u64,
    /// Where the trailer section starts in the body region, once reached (held in the buffer
    /// until the body ends).
    section: Option<usize>,
    current: Current,
    /// The current data piece starts a chunk of this size (HTTP/1.1, chunked).
    chunk_starts: Option<u64>,
    /// The current data piece ends its chunk (HTTP/1.1, chunked).
    chunk_ends: bool,
    /// Inside a chunk's data, past its first piece (HTTP/1.1, chunked).
    in_chunk: bool,
    typed_piece: Option<BodyPiece>,
    /// The current piece was taken (the next poll decodes another).
    used: bool,
    /// Payload bytes advanced past.
    payload: u64,
    ended: bool,
    /// The client's bytes decoded and not yet counted (HTTP/1.1).
    raw: u64,
}

impl RequestBody {
    /// The body of a request framed `framing`; `typed`: it comes as [`BodyPiece`]s.
    pub(super) fn new(framing: BodyFraming, typed: bool) -> Self {
        let (length, decode) = match framing {
            BodyFraming::None | BodyFraming::CloseDelimited => (Some(0), Decode::Ended),
            BodyFraming::ContentLength(n) => (Some(n), Decode::Length { left: n }),
            BodyFraming::Chunked => (
                None,
                Decode::Chunked(ChunkedDecoder::new(MAX_TRAILER_BYTES)),
            ),
        };
        let decode = if typed {
            Decode::Ended
        } else {
            if let Decode::Chunked(_) = decode {
                note_request_chunk_scan();
            }
            decode
        };
        RequestBody {
            typed,
            length,
            decode,
            at: 0,
            dropped: 0,
            section: None,
            current: Current::End,
            chunk_starts: None,
            chunk_ends: false,
            in_chunk: false,
            typed_piece: None,
            used: true,
            payload: 0,
            ended: length == Some(0),
            raw: 0,
        }
    }

    /// Whether all of the body went (its last piece advanced past).
    pub(super) fn ended(&self) -> bool {
        self.ended
    }

    /// Makes the next piece current (the current one again while it is not advanced past).
    /// Errors are the client's [`UploadFault`]: a malformed chunked body, a connection or
    /// stream that ended or failed within it.
    pub(super) fn poll_next<D: Respond>(
        &mut self,
        down: &mut D,
        rbuf: &mut ReadBuffer,
        head_len: usize,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.used {
            return Poll::Ready(Ok(()));
        }
        if self.typed {
            let piece =
                ready!(down.poll_body(cx)).map_err(|e| UploadFault::Aborted.into_io(e.kind()))?;
            self.typed_piece = Some(piece);
            self.used = false;
            return Poll::Ready(Ok(()));
        }
        loop {
            let avail = rbuf.len() - head_len - self.at;
            match &mut self.decode {
                Decode::Ended => {
                    self.current = Current::End;
                    self.used = false;
                    return Poll::Ready(Ok(()));
                }
                Decode::Length { left } if avail > 0 => {
                    let take = (avail as u64).min(*left) as usize;
                    *left -= take as u64;
                    if *left == 0 {
                        self.decode = Decode::Ended;
                    }
                    self.current = Current::Data {
                        from: self.at,
                        to: self.at + take,
                    };
                    self.at += take;
                    self.raw += take as u64;
                    self.used = false;
                    return Poll::Ready(Ok(()));
                }
                Decode::Chunked(dec) if avail > 0 => {
                    let from = head_len + self.at;
                    let (scanned, run) = dec.feed_payload(&rbuf.bytes()[from..]).map_err(|e| {
                        let fault = match e {
                            HttpError::TrailersTooLarge { .. } => UploadFault::TrailersTooLarge,
                            _ => UploadFault::Malformed,
                        };
                        fault.into_io(io::ErrorKind::InvalidData)
                    })?;
                    let (consumed, done) = match scanned {
                        Chunked::NeedMore { consumed } => (consumed, false),
                        Chunked::Done { consumed } => (consumed, true),
                    };
                    note_request_chunk_bytes(consumed);
                    if self.section.is_none()
                        && let Some(start) = dec.trailers_start()
                    {
                        self.section = Some((start - self.dropped) as usize);
                    }
                    let run_at = self.at;
                    self.at += consumed;
                    self.raw += consumed as u64;
                    if let Some(r) = run {
                        let left = dec.chunk_left();
                        self.chunk_starts = (!self.in_chunk).then_some(r.len() as u64 + left);
                        self.chunk_ends = left == 0;
                        self.in_chunk = left > 0;
                        self.current = Current::Data {
                            from: run_at + r.start,
                            to: run_at + r.end,
                        };
                        self.used = false;
                        return Poll::Ready(Ok(()));
                    }
                    if done {
                        self.decode = Decode::Ended;
                        // Reached only past the last chunk's line, where the section starts.
                        let from = self.section.unwrap_or(self.at);
                        self.current = if self.at - from <= 2 {
                            Current::End
                        } else {
                            Current::Section { from, to: self.at }
                        };
                        self.used = false;
                        return Poll::Ready(Ok(()));
                    }
                    continue;
                }
                Decode::Length { .. } | Decode::Chunked(_) => {}
            }
            // Everything here is decoded: drop it (a trailer section under way stays, to go
            // whole), then read more into the room.
            let keep_from = self.section.unwrap_or(self.at);
            if keep_from > 0 {
                drop_range(rbuf, head_len, keep_from);
                self.at -= keep_from;
                self.dropped += keep_from as u64;
                if let Some(s) = &mut self.section {
                    *s -= keep_from;
                }
            }
            let read = std::pin::pin!(rbuf.fill(&mut *down)).poll(cx);
            match ready!(read) {
                Ok(0) => {
                    return Poll::Ready(Err(
                        UploadFault::Aborted.into_io(io::ErrorKind::UnexpectedEof)
                    ));
                }
                Err(e) => return Poll::Ready(Err(UploadFault::Aborted.into_io(e.kind()))),
                Ok(_) => {}
            }
        }
    }

    /// The current piece (after [`RequestBody::poll_next`] said it is there).
    pub(super) fn piece<'a>(&'a self, rbuf: &'a ReadBuffer, head_len: usize) -> Piece<'a> {
        if self.typed {
            return match &self.typed_piece {
                Some(BodyPiece::Data(data)) => Piece::Data(data),
                Some(BodyPiece::Trailers(trailers)) => Piece::Trailers(trailers),
                Some(BodyPiece::End) | None => Piece::End,
            };
        }
        let body = &rbuf.bytes()[head_len..];
        match self.current {
            Current::Data { from, to } => Piece::Data(&body[from..to]),
            Current::Section { from, to } => Piece::TrailerSection(&body[from..to]),
            Current::End => Piece::End,
        }
    }

    /// Where the current data piece `data` lies in the client's chunks, for framing a body of
    /// unknown length: the size of the chunk it starts, if it starts one, and whether it ends
    /// its chunk. A typed piece (an HTTP/2 DATA frame's payload) is a chunk of its own. A
    /// `content-length` body is never chunk-framed, whoever asks: `(None, false)` (framing its
    /// pieces as chunks would send the upstream bytes past the length it was told — another
    /// request smuggled after the body).
    pub(super) fn chunk_bounds(&self, data: &[u8]) -> (Option<u64>, bool) {
        if self.length.is_some() {
            (None, false)
        } else if self.typed {
            (Some(data.len() as u64), true)
        } else {
            (self.chunk_starts, self.chunk_ends)
        }
    }

    /// The current piece went (framed into the held body, or upstream).
    pub(super) fn advance(&mut self) {
        self.used = true;
        let payload = if self.typed {
            match self.typed_piece.take() {
                Some(BodyPiece::Data(data)) => Some(data.len()),
                _ => None,
            }
        } else {
            match self.current {
                Current::Data { from, to } => Some(to - from),
                _ => None,
            }
        };
        match payload {
            Some(n) => {
                self.payload += n as u64;
                if self.length == Some(self.payload) {
                    self.ended = true;
                }
            }
            None => self.ended = true,
        }
    }

    /// What the pieces advanced past since the last call took of the client's request: an
    /// HTTP/1.1 client's bytes as they came (framing included); for a typed body, `framed`,
    /// the bytes the path framed for the upstream.
    pub(super) fn received(&mut self, framed: usize) -> u64 {
        if self.typed {
            framed as u64
        } else {
            std::mem::take(&mut self.raw)
        }
    }

    /// After the body's end: drops its bytes from the read buffer, which then holds the head
    /// and what followed the body (the next pipelined request).
    pub(super) fn finish(&mut self, rbuf: &mut ReadBuffer, head_len: usize) {
        if self.at > 0 {
            drop_range(rbuf, head_len, self.at);
            self.dropped += self.at as u64;
            self.at = 0;
            self.section = None;
        }
    }
}

/// How the client's side of a request body failed, carried inside the `io::Error` of a body
/// copy so that a caller tells it from an upstream write failing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum UploadFault {
    /// A read waited longer than `stream_idle_timeout`.
    Stalled,
    /// The body's chunked framing is malformed (a bad chunk or trailer field).
    Malformed,
    /// The body's trailer section is over its limit (16 KiB).
    TrailersTooLarge,
    /// The client closed or reset its connection before the end of the body.
    Aborted,
}

impl std::fmt::Display for UploadFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            UploadFault::Stalled => "request body stalled for stream_idle_timeout",
            UploadFault::Malformed => "malformed chunked request body",
            UploadFault::TrailersTooLarge => "request trailer section over 16 KiB",
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
            UploadFault::Malformed | UploadFault::TrailersTooLarge | UploadFault::Aborted => {
                (400, ResponseFlag::DownstreamProtocolError)
            }
        }
    }

    /// The body of the local answer to a request whose body failed this way: what failed,
    /// not the flag's generic text (a body stall is no header limit).
    pub(super) fn reply_text(self) -> &'static [u8] {
        match self {
            UploadFault::Stalled => b"request body timeout: no bytes within stream_idle_timeout\n",
            UploadFault::Malformed => b"malformed chunked request body\n",
            UploadFault::TrailersTooLarge => b"request trailer section over 16 KiB\n",
            UploadFault::Aborted => b"incomplete request body\n",
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

/// Waits for `wait` (the next piece of a request body) while the stream is not idle for `idle`;
/// a stall is the client's [`UploadFault::Stalled`]. While the answer streams alongside (full
/// duplex), `answered` is when its bytes last went to the client: the stream is idle only when
/// neither way moved for `idle` (Envoy's stream idle timeout), so a watch whose client sends
/// nothing while its answer flows is not cut.
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
        note_upload_write();
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

/// A data piece at most this long is gathered into the upload's batch (copied: far cheaper
/// than a write of its own); a longer one is written from where it lies.
const BATCHED_PIECE: usize = 2 * 1024;

/// The most an upload gathers before it writes.
const BATCH_LIMIT: usize = 16 * 1024;

/// Writes what the upload gathered, if anything, as [`send_kept`] does a piece.
async fn send_batch<U: AsyncWrite + Unpin>(
    up: &mut U,
    batch: &mut Vec<u8>,
    copy: &mut ReplayCopy<'_>,
) -> io::Result<()> {
    if batch.is_empty() {
        return Ok(());
    }
    let r = send_kept(up, batch, copy).await;
    batch.clear();
    r
}

/// Streams a request body downstream → upstream as it arrives, from its current piece on
/// ([`buffer_body`] may have held its start, sent with the head); returns whether `replay`
/// (when given) holds a copy of all of it as written upstream — so a retry can send it again
/// (Envoy's rule: bytes go upstream as they come, and a copy is kept up to the buffer limit).
/// Each piece is framed for the upstream here, once — a `content-length` body's payload as it
/// is, one of unknown length as chunks ([`ChunkFramer`]) — and written from where it lies (no
/// copy), or, when small, gathered with the framing and the other pieces already here into
/// one write (at most [`BATCH_LIMIT`]), sent before the upload waits for more. Leaves `rbuf`
/// holding only the head and the bytes after the body (the next pipelined
/// request). Each wait for a piece is within `stream_idle`; `answered`: see [`within`];
/// `detach`: see [`Detach`] (when detached, the rest of the body is read into the copy only,
/// and an upload whose copy is lost ends with an error).
#[allow(clippy::too_many_arguments)]
pub(super) async fn stream_request_body<U, D>(
    up: &mut U,
    down: &mut D,
    rbuf: &mut ReadBuffer,
    head_len: usize,
    body: &mut RequestBody,
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
    let mut framer = ChunkFramer::default();
    let chunked = body.length.is_none();
    // Small pieces and framing gathered for one write: what arrived goes in as few writes as
    // it can (a body of tiny chunks is not three writes a chunk), and all of it goes before
    // the upload waits for more, so an upstream that answers chunk by chunk is not held up.
    let mut batch = Vec::new();
    while !body.ended() {
        // The next piece if it is here; else what is gathered goes, then the wait.
        let here = poll_fn(|cx| Poll::Ready(body.poll_next(down, rbuf, head_len, cx))).await;
        match here {
            Poll::Ready(r) => r?,
            Poll::Pending => {
                send_batch(up, &mut batch, &mut copy).await?;
                within(
                    stream_idle,
                    answered,
                    poll_fn(|cx| body.poll_next(down, rbuf, head_len, cx)),
                )
                .await??;
            }
        }
        let framed = match body.piece(rbuf, head_len) {
            Piece::Data(data) => {
                // A `content-length` payload goes as it is (no bounds); chunks keep the
                // client's sizes.
                let (starts, ends) = body.chunk_bounds(data);
                let mut n = data.len();
                if let Some(size) = starts {
                    let line = framer.size_line(size);
                    n += line.len();
                    batch.extend_from_slice(line);
                }
                if data.len() <= BATCHED_PIECE {
                    batch.extend_from_slice(data);
                } else {
                    // Written from where it lies, after what was gathered before it.
                    send_batch(up, &mut batch, &mut copy).await?;
                    send_kept(up, data, &mut copy).await?;
                }
                if ends {
                    batch.extend_from_slice(b"\r\n");
                    n += 2;
                }
                if batch.len() >= BATCH_LIMIT {
                    send_batch(up, &mut batch, &mut copy).await?;
                }
                n
            }
            // An end before the content-length is the stream's error (HTTP/2) or the
            // decoder's (HTTP/1.1 reads until it): not reached.
            _ if !chunked => {
                return Err(UploadFault::Aborted.into_io(io::ErrorKind::UnexpectedEof));
            }
            // Counted as the client's fields made it, before the sifting.
            Piece::Trailers(trailers) => framer.end_with(&mut batch, trailers),
            Piece::TrailerSection(section) => {
                let at = batch.len();
                framer.end_with_section(&mut batch, section);
                batch.len() - at
            }
            Piece::End => {
                batch.extend_from_slice(framer.end());
                5
            }
        };
        body.advance();
        received.set(received.get() + body.received(framed));
    }
    send_batch(up, &mut batch, &mut copy).await?;
    body.finish(rbuf, head_len);
    Ok(Uploaded {
        kept: copy.copy.is_some(),
        detached: detach.off.get(),
    })
}

/// Removes `len` bytes at `at` (relative to the unconsumed start) from the buffer.
pub(super) fn drop_range(rbuf: &mut ReadBuffer, at: usize, len: usize) {
    let start = rbuf.start + at;
    rbuf.data.copy_within(start + len..rbuf.end, start);
    rbuf.end -= len;
}

/// Writes `data` downstream, preceded by whatever is still `pending` (the response head, on the
/// first call), in one write when there is something pending; `awaiting` is cleared before the
/// first byte goes out (from then on the client has a response under way).
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

/// Where [`copy_body`]'s one loop puts a response body, each codec its own way: an HTTP/1.1
/// connection takes the upstream's bytes as they came, framing included ([`Http1Sink`]); a
/// typed responder (an HTTP/2 stream) the payload without the upstream's framing and the
/// trailer section ([`TypedSink`]).
trait BodySink {
    /// Payload the upstream sent (without its framing), within the read's worth being copied.
    fn payload(&mut self, data: &[u8]) -> io::Result<()>;
    /// More of a chunked body's trailer section, as it came.
    fn trailer_bytes(&mut self, section: &[u8]);
    /// A read's worth is copied: `raw` is its bytes as the upstream framed them (empty for a
    /// close-delimited body's wait: a staged head goes out before it), `end`: the body ended
    /// with them. It goes to the client now.
    async fn flush_read(&mut self, raw: &[u8], end: bool) -> io::Result<()>;
    /// The body ended (or had none): what waits goes, the staged head too if nothing else did.
    async fn finish(&mut self) -> io::Result<()>;
    /// Body bytes sent (HTTP/1.1: as framed; typed: payload).
    fn sent(&self) -> u64;
}

/// An HTTP/1.1 client's response body: the upstream's bytes as they came, the head in
/// `pending` sent with the first of them, one write per upstream read.
struct Http1Sink<'a, D> {
    down: &'a mut D,
    pending: &'a mut Vec<u8>,
    awaiting: &'a Cell<bool>,
    answered: Option<&'a Cell<TokioInstant>>,
    sent: u64,
}

impl<D: AsyncWrite + Unpin> BodySink for Http1Sink<'_, D> {
    fn payload(&mut self, _data: &[u8]) -> io::Result<()> {
        Ok(())
    }

    fn trailer_bytes(&mut self, _section: &[u8]) {}

    async fn flush_read(&mut self, raw: &[u8], _end: bool) -> io::Result<()> {
        if raw.is_empty() && self.pending.is_empty() {
            return Ok(());
        }
        send(self.down, self.pending, self.awaiting, self.answered, raw).await?;
        self.sent += raw.len() as u64;
        Ok(())
    }

    async fn finish(&mut self) -> io::Result<()> {
        if !self.pending.is_empty() {
            send(self.down, self.pending, self.awaiting, self.answered, &[]).await?;
        }
        Ok(())
    }

    fn sent(&self) -> u64 {
        self.sent
    }
}

/// A typed responder's response body (an HTTP/2 stream): the payload without the upstream's
/// framing (a chunked body de-chunked once, its trailer section handed over as it passes),
/// each upstream read's worth given at once and flushed (so the last DATA carries the end of
/// the stream when the body ends in that read), then the end of the body.
struct TypedSink<'a, D> {
    down: &'a mut D,
    awaiting: &'a Cell<bool>,
    answered: Option<&'a Cell<TokioInstant>>,
    sent: u64,
}

impl<D: Respond> TypedSink<'_, D> {
    /// Flushes what `down` took (the staged head with it, the first time).
    async fn flush(&mut self) -> io::Result<()> {
        self.awaiting.set(false);
        let r = self.down.flush().await;
        if let Some(at) = self.answered {
            at.set(TokioInstant::now());
        }
        r
    }
}

impl<D: Respond> BodySink for TypedSink<'_, D> {
    fn payload(&mut self, data: &[u8]) -> io::Result<()> {
        self.down.typed_payload(data)?;
        self.sent += data.len() as u64;
        Ok(())
    }

    fn trailer_bytes(&mut self, section: &[u8]) {
        self.down.typed_trailer_bytes(section);
    }

    async fn flush_read(&mut self, _raw: &[u8], end: bool) -> io::Result<()> {
        if end {
            self.down.typed_end();
        }
        // The staged head goes out with the first body bytes (framing alone included), as
        // HTTP/1.1's does.
        self.down.typed_payload(&[])?;
        self.flush().await
    }

    async fn finish(&mut self) -> io::Result<()> {
        self.down.typed_payload(&[])?;
        self.down.typed_end();
        self.flush().await
    }

    fn sent(&self) -> u64 {
        self.sent
    }
}

/// Copies the response body upstream → downstream by its framing, after the head (HTTP/1.1:
/// in `pending`; typed: staged on `down`); returns body bytes sent. With `trailers`, a chunked
/// body's trailer section is appended to it as it passes (for a gRPC answer's `grpc-status`).
/// One loop for every client: the codec's [`BodySink`] writes what it reads.
#[allow(clippy::too_many_arguments)]
pub(super) async fn copy_body<U, D>(
    up: &mut U,
    down: &mut D,
    ubuf: &mut ReadBuffer,
    framing: BodyFraming,
    pending: &mut Vec<u8>,
    awaiting: &Cell<bool>,
    answered: Option<&Cell<TokioInstant>>,
    trailers: Option<&mut Vec<u8>>,
) -> io::Result<u64>
where
    U: AsyncRead + Unpin,
    D: Respond,
{
    if D::TYPED {
        let mut sink = TypedSink {
            down,
            awaiting,
            answered,
            sent: 0,
        };
        copy_into(up, ubuf, framing, &mut sink, trailers).await
    } else {
        let mut sink = Http1Sink {
            down,
            pending,
            awaiting,
            answered,
            sent: 0,
        };
        copy_into(up, ubuf, framing, &mut sink, trailers).await
    }
}

/// [`copy_body`]'s loop: reads the upstream's body by its framing into `sink`, a read's worth
/// at a time.
async fn copy_into<U, S>(
    up: &mut U,
    ubuf: &mut ReadBuffer,
    framing: BodyFraming,
    sink: &mut S,
    mut trailers: Option<&mut Vec<u8>>,
) -> io::Result<u64>
where
    U: AsyncRead + Unpin,
    S: BodySink,
{
    match framing {
        BodyFraming::None => {}
        BodyFraming::ContentLength(n) => {
            let mut left = n;
            loop {
                let take = (ubuf.len() as u64).min(left) as usize;
                if take > 0 {
                    let data = &ubuf.bytes()[..take];
                    sink.payload(data)?;
                    left -= take as u64;
                    sink.flush_read(data, left == 0).await?;
                    ubuf.consume(take);
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
                        sink.payload(&data[at..][r])?;
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
                        sink.trailer_bytes(section);
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
                if at > 0 {
                    sink.flush_read(&data[..at], done).await?;
                }
                ubuf.consume(at);
                if done {
                    break;
                }
                if ubuf.fill(up).await? == 0 {
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
            }
        }
        BodyFraming::CloseDelimited => loop {
            let data = ubuf.bytes();
            sink.payload(data)?;
            sink.flush_read(data, false).await?;
            ubuf.clear();
            if ubuf.fill(up).await? == 0 {
                break;
            }
        },
    }
    sink.finish().await?;
    Ok(sink.sent())
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
                let mut body = RequestBody::new(BodyFraming::ContentLength(200), false);
                let (r, ()) = tokio::join!(
                    stream_request_body(
                        &mut up,
                        &mut down,
                        &mut rbuf,
                        0,
                        &mut body,
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
