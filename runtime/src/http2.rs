//! The HTTP/2 downstream driver (h2c with prior knowledge): an `http` listener's connection that
//! starts with the HTTP/2 client preface is served by the `h2` crate, and each of its request
//! streams goes through the same request path as an HTTP/1.1 request
//! ([`Engine::serve_request`]: routing, the core's request stream with its retries, timeouts
//! and circuit breakers, the upstream pool, header edits, stats) — there is no second copy of
//! it.
//!
//! ## How a stream joins the request path
//!
//! The request head is written, not parsed: `sluice_core::http2::build_request_head` holds the
//! HPACK-decoded head to RFC 9113 §8 (400 naming what is malformed, 501 for `CONNECT`) and to
//! the limits an HTTP/1.1 request is held to (431), then writes it with the HTTP/1 codec's
//! `RequestHeadWriter` into the stream's buffer — in the layout of an HTTP/1.1 head, `host`
//! from `:authority`, the cookie crumbs joined, `transfer-encoding: chunked` for a body of
//! unknown length — recording the [`Head`] the request path reads (spans, method, target,
//! host, content-length, framing) as it goes; the same `Head` a parse of those bytes gives
//! (property-tested and fuzzed in the core). The stream is then handed to the request path as a
//! downstream ([`H2Downstream`]) with two sides:
//!
//! - its request body is typed ([`Respond::poll_body`]): each DATA frame's payload is handed
//!   over as it is (`BodyPiece::Data`, the frame's own bytes), then the trailers or the end;
//!   DATA adding up to more or less than the request's `content-length` is an error there (the
//!   path answers 400). The path's body copy (`crate::http`'s `body`) frames the pieces for the
//!   upstream once — a `content-length` body's payload as it is, one of unknown length (the
//!   written head says `transfer-encoding: chunked`) as one chunk per DATA and the trailers as
//!   the chunked trailer section — and writes a streamed payload from the frame itself: no
//!   chunk framing is made here, and none scanned back. Reading HTTP/1.1 bytes from the stream
//!   is refused (a bug). Receive capacity is given back to the client as the request path
//!   takes a piece, which it does to write it upstream (or, for a small body that is all here,
//!   to hold it): a stream holds at most its window (`initial_stream_window_size`) plus the
//!   piece being sent;
//! - its response side is typed ([`Respond`], `crate::http::respond`): the path stages the
//!   forwarded head (the upstream's head and the route's and listener's edits as a list), which
//!   the [`Sink`] turns into HEADERS from the fields `for_each_response_field` gives, without
//!   the connection-specific ones, once the first payload (or the end of an empty body) comes;
//!   the payload (already without the upstream's chunked framing) goes as DATA, sent only
//!   within the stream's send window; a chunked body's trailer section as trailers; a local
//!   answer as HEADERS and DATA of its own. No HTTP/1.1 text is written to the stream, and none
//!   parsed back: per stream to an HTTP/1.1 upstream the HTTP/1 codec parses one head (the
//!   upstream's answer's), where it parsed three before the response side was typed and two
//!   before the request head was written (an HTTP/2 upstream's adapter also parses the
//!   upstream request it turns into frames, [`crate::h2_upstream`]). The path flushes after each upstream read's worth of
//!   payload and takes no more until it went out, so at most one upstream read (16 KiB,
//!   [`crate::http`]'s read size) waits per stream: a client that does not read stops the
//!   upstream read of its stream. Writing HTTP/1.1 bytes to the stream is refused (a bug).
//!
//! A client's RST_STREAM (or the connection ending) drops the stream's future: the request
//! stream's guard aborts it, giving back its circuit-breaker units, and the upstream connection
//! closes. The response that follows a failure after its head was sent ends in RST_STREAM
//! (INTERNAL_ERROR) rather than a clean end of stream.
//!
//! ## Connection
//!
//! One task per connection polls the `h2` connection and its streams' futures together (no
//! spawn: the streams borrow the engine like an HTTP/1.1 request does). A drain sends GOAWAY
//! (`graceful_shutdown`): open streams finish, new ones are refused; `drain_timeout` ends what
//! is left. The `h2` settings are the listener's `http2` section; its abuse limits are set
//! explicitly ([`MAX_PENDING_ACCEPT_RESET_STREAMS`], [`MAX_LOCAL_ERROR_RESET_STREAMS`]).
//!
//! A connection with no open stream for the listener's `idle_timeout` gets GOAWAY and closes.
//! A client's own GOAWAY (its streams still finish; `h2` then closes) is counted once per
//! connection, spotted in the bytes `h2` reads (`Prefixed`, `sluice_core::http2::goaway`).
//! A stream's buffers and its other state ([`StreamBuffers`]: the written request head, the
//! heads, the request path's scratch, the sink's payload buffer) are the worker's
//! ([`crate::bufpool`]), taken when it starts and given back when it ends: a busy worker
//! allocates none of them per stream, and an idle connection holds only the `h2` crate's own
//! state.
//!
//! HTTP/2 upstreams (`protocol: http2` clusters) are [`crate::h2_upstream`]'s: the request path
//! is the same, only its last hop differs.
//!
//! With the listener's `http2.connection_keepalive`, the connection sends a PING every
//! `interval` plus a random jitter of up to `interval_jitter_percent` of it (counted from the
//! last ACK); one whose ACK does not come within `timeout` gets GOAWAY (`NO_ERROR`) and the
//! connection closes, its streams with it (`http2.downstream_keepalive_timeout`). One timer per
//! connection serves both waits; at most one PING is out at a time. As in Envoy, bytes received
//! while the PING is out extend its timeout by another `timeout` (its ACK may be queued behind
//! them); so do two signs of a slow reader that sends nothing: a write that goes through after
//! the socket's send buffer was full, and — when the response and the PING already sit in the
//! kernel's buffers and nothing more is written — more of the bytes queued ahead of the PING
//! acknowledged by the client's TCP since the last look ([`crate::tcp_info`]): it is taking in
//! the response its ACK waits behind. Only those bytes count (an acknowledgement is the client's
//! kernel, not its program), so a hung client on a trickling stream is not kept alive.
//!
//! A gRPC response cut short after its head ends with `grpc-status: 14` trailers rather than a
//! reset (gRPC clients read a reset as INTERNAL).

use std::cell::{Cell, RefCell};
use std::future::{Future, poll_fn};
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::AtomicU64;
use std::task::{Context, Poll, ready};
use std::time::SystemTime;

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt as _;
use futures_util::stream::FuturesUnordered;
use h2::server::SendResponse;
use h2::{RecvStream, SendStream};
use sluice_core::config::ListenerConfig;
use sluice_core::config::http::{HttpCodec, HttpConfig, ServerHeader};
use sluice_core::http1::conn::DRAIN_IDLE_GRACE;
use sluice_core::http1::{
    BodyFraming, FieldValue, Head, Limits, Method, for_each_response_field, write_trailers,
};
use sluice_core::http2::goaway::GoawayWatch;
use sluice_core::http2::premature::{PrematureResets, StreamEnd, Verdict};
use sluice_core::http2::translate::RequestHead;
use sluice_core::http2::{
    BodyLength, ContentLengthCheck, Preface, build_request_head, detect_preface,
    is_connection_specific,
};
use sluice_core::l7::exchange::ResponseFlag;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

use crate::access_log::Entry;
use crate::bufpool::{BufPool, READ_BUFFER};
use crate::downstream::Downstream;
use crate::engine::Engine;
use crate::http::respond::{BodyPiece, ForwardedHead, LocalBody, LocalReply, Respond, send_local};
use crate::http::{KEPT_SCRATCH, ListenerHttp, Outcome, ReadBuffer, Scratch};
use crate::net::Network;
use crate::now;
use crate::stats::{GoawayCause, bump, gauge_add};

/// Reset streams a client may have waiting to be accepted before the connection gets GOAWAY
/// (`h2`'s rapid-reset guard; its default, kept explicit).
pub const MAX_PENDING_ACCEPT_RESET_STREAMS: usize = 100;
/// Streams the proxy may reset for a client's errors before the connection gets GOAWAY (`h2`'s
/// guard against provoked resets, "MadeYouReset"; its default, kept explicit).
pub const MAX_LOCAL_ERROR_RESET_STREAMS: usize = 1024;
/// How long a connection closed for premature resets has to get its GOAWAY out.
const GOAWAY_FLUSH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);
/// Bytes `h2` buffers per stream for sending beyond what the peer's window allows. The driver
/// sends only within the window, so this is a backstop.
const MAX_SEND_BUFFER: usize = 64 * 1024;

/// What the first bytes of an `http` listener's connection said.
pub(crate) enum Sniffed {
    /// The HTTP/2 client preface (the bytes read, the preface included).
    Http2(Vec<u8>),
    /// Anything else: HTTP/1.1 (the bytes read, to be parsed first).
    Http1(Vec<u8>),
    /// Nothing arrived within `request_headers_timeout` of the accept.
    FirstByteTimeout,
    /// The client closed, or a drain began and its grace passed before it sent anything.
    Closed,
}

/// Reads just enough of a new connection to tell the HTTP/2 preface from anything else (one
/// read for HTTP/1.1: its first byte differs), within `request_headers_timeout` of the accept.
///
/// A drain (begun before or while this waits) does not close a connection that has sent
/// nothing yet at once: its first request may already be on its way (the client connected
/// just before the drain), so the wait for a first byte is cut to [`DRAIN_IDLE_GRACE`], as the
/// HTTP/1.1 connection policy does for an idle keep-alive connection; a request that arrives
/// is served (HTTP/1.1: answered with `connection: close`; HTTP/2: under GOAWAY). Once the
/// drain's `drain_timeout` has passed, the wait ends at once, whatever was read (`Closed`).
pub(crate) async fn sniff<N: Network>(
    engine: &Engine<N>,
    down: &mut Downstream<N::Stream>,
    initial: &[u8],
    hc: &HttpConfig,
) -> Sniffed {
    let head_deadline = tokio::time::Instant::now() + hc.request_headers_timeout;
    let grace = || (tokio::time::Instant::now() + DRAIN_IDLE_GRACE).min(head_deadline);
    // While nothing has arrived: the head deadline, or the drain grace once a drain began.
    let mut first_byte_deadline = head_deadline;
    let mut drain_seen = engine.lifecycle.is_stopping();
    if drain_seen {
        first_byte_deadline = grace();
    }
    let mut bytes = initial.to_vec();
    loop {
        if engine.lifecycle.drain_deadline_passed() {
            return Sniffed::Closed;
        }
        match detect_preface(&bytes) {
            Preface::Http2 => return Sniffed::Http2(bytes),
            Preface::Other => return Sniffed::Http1(bytes),
            Preface::Partial => {}
        }
        let mut chunk = [0u8; 24];
        let stop = engine.lifecycle.stop_accepting();
        let expired = engine.lifecycle.drain_expired();
        let deadline = if bytes.is_empty() {
            first_byte_deadline
        } else {
            head_deadline
        };
        let read = tokio::select! {
            biased;
            () = expired => return Sniffed::Closed,
            () = stop, if !drain_seen => {
                drain_seen = true;
                first_byte_deadline = grace();
                continue;
            }
            () = tokio::time::sleep_until(deadline) => {
                return match (bytes.is_empty(), drain_seen) {
                    (false, _) => Sniffed::Http1(bytes),
                    (true, false) => Sniffed::FirstByteTimeout,
                    (true, true) => Sniffed::Closed,
                };
            }
            r = down.read(&mut chunk) => r,
        };
        match read {
            Ok(0) | Err(_) => return Sniffed::Closed,
            Ok(n) => bytes.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Whether a listener with this codec serves HTTP/2 at all.
pub(crate) fn accepts_http2(codec: HttpCodec) -> bool {
    codec != HttpCodec::Http1
}

/// The bytes read by [`sniff`], given back to `h2` before the connection's own; everything
/// `h2` reads passes a [`GoawayWatch`] (until the client's first GOAWAY, which `h2` does not
/// report when its code is `NO_ERROR`), which counts it in `goaway_received`. `received` is
/// set whenever bytes came, and when a write goes through after the socket's send buffer was
/// full (the peer's TCP acknowledged data: a slow reader is alive even when it sends no frame —
/// its PING ACK may be queued behind a large response), the keepalive's signs of life while a
/// PING is out.
struct Prefixed<'a, S> {
    prefix: Vec<u8>,
    at: usize,
    inner: S,
    watch: GoawayWatch,
    goaway_received: &'a AtomicU64,
    received: &'a Cell<bool>,
    /// The last write found the send buffer full.
    write_blocked: bool,
}

impl<S> Prefixed<'_, S> {
    /// Notes a write's outcome: one that goes through after a blocked one is a sign of life.
    fn wrote(&mut self, r: Poll<io::Result<usize>>) -> Poll<io::Result<usize>> {
        match r {
            Poll::Pending => self.write_blocked = true,
            Poll::Ready(Ok(n)) if n > 0 && self.write_blocked => {
                self.write_blocked = false;
                self.received.set(true);
            }
            _ => {}
        }
        r
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<'_, S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let from = buf.filled().len();
        if self.at < self.prefix.len() {
            let n = (self.prefix.len() - self.at).min(buf.remaining());
            let at = self.at;
            buf.put_slice(&self.prefix[at..at + n]);
            self.at += n;
            if self.at == self.prefix.len() {
                self.prefix = Vec::new();
                self.at = 0;
            }
        } else {
            ready!(Pin::new(&mut self.inner).poll_read(cx, buf))?;
        }
        if buf.filled().len() > from {
            self.received.set(true);
        }
        if !self.watch.seen() && self.watch.feed(&buf.filled()[from..]) {
            bump(self.goaway_received, 1);
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<'_, S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.wrote(r)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.wrote(r)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Keeps a gauge up while alive.
struct GaugeGuard<'a>(&'a std::sync::atomic::AtomicU64);

impl<'a> GaugeGuard<'a> {
    fn new(gauge: &'a std::sync::atomic::AtomicU64) -> Self {
        gauge_add(gauge, true);
        GaugeGuard(gauge)
    }
}

impl Drop for GaugeGuard<'_> {
    fn drop(&mut self) {
        gauge_add(self.0, false);
    }
}

type StreamFuture<'a> = Pin<Box<dyn Future<Output = StreamEnd> + 'a>>;

impl<N: Network> Engine<N> {
    /// Serves one HTTP/2 connection whose first bytes (`preface`, the client preface and maybe
    /// more) were already read.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn http2_connection(
        &self,
        listener: usize,
        lc: &ListenerConfig,
        hc: &HttpConfig,
        down: Downstream<N::Stream>,
        peer: SocketAddr,
        preface: Vec<u8>,
        original_dst: Option<SocketAddr>,
    ) {
        let over_tls = down.is_tls();
        let client_cert = self.client_cert_element(listener, hc, &down);
        // For the keepalive: the socket under the connection, whose acknowledged bytes show a
        // slow reader alive. `h2` owns the stream from here on, and `conn` lives until this
        // function returns: the descriptor is open (and this connection's) wherever it is read.
        let socket = down
            .tcp_socket()
            .map(std::os::fd::AsRawFd::as_raw_fd)
            .filter(|_| hc.http2.connection_keepalive.is_some());
        let received = Cell::new(false);
        let io = Prefixed {
            prefix: preface,
            at: 0,
            inner: down,
            watch: GoawayWatch::new(),
            goaway_received: &self.stats().http2_goaway_received,
            received: &received,
            write_blocked: false,
        };
        let s = hc.http2;
        let mut builder = h2::server::Builder::new();
        builder
            .max_concurrent_streams(s.max_concurrent_streams)
            .max_header_list_size(s.max_header_list_size)
            .initial_window_size(s.initial_stream_window_size)
            .initial_connection_window_size(s.initial_connection_window_size)
            .max_pending_accept_reset_streams(MAX_PENDING_ACCEPT_RESET_STREAMS)
            .max_local_error_reset_streams(Some(MAX_LOCAL_ERROR_RESET_STREAMS))
            .max_send_buffer_size(MAX_SEND_BUFFER);
        let handshake = tokio::time::timeout(
            hc.request_headers_timeout,
            builder.handshake::<_, Bytes>(io),
        )
        .await;
        let mut conn = match handshake {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => {
                tracing::debug!(listener = %lc.name, %peer, "HTTP/2 handshake failed: {e}");
                return;
            }
            Err(_) => {
                tracing::debug!(listener = %lc.name, %peer, "HTTP/2 handshake timed out");
                return;
            }
        };
        bump(&self.stats().http2_downstream_cx_total, 1);
        let _active = GaugeGuard::new(&self.stats().http2_downstream_cx_active);
        // Each stream has its own waker: a wake-up polls the streams that were woken, not all of
        // the connection's (a response arriving for one of 100 streams polls one).
        let mut streams: FuturesUnordered<StreamFuture<'_>> = FuturesUnordered::new();
        // Streams accepted but not started: a stream starts once the connection has read all
        // that arrived, so that the DATA sent with its HEADERS is there when the request path
        // decides whether the body can be held for a retry (a gRPC call's whole body usually).
        let mut fresh: Vec<StreamFuture<'_>> = Vec::new();
        let mut draining = false;
        let mut goaway_sent = false;
        // The GOAWAY is for the idle timeout (else a drain).
        let mut idle_goaway = false;
        // Envoy's rule against clients that reset streams prematurely (sluice_core::http2::
        // premature): set when they trip it, checked after each turn.
        let mut resets = PrematureResets::new();
        let mut abusive = false;
        // With no stream open for `idle_timeout`, the connection gets GOAWAY and closes.
        let idle_deadline = |from: tokio::time::Instant| hc.idle_timeout.map(|d| from + d);
        let mut idle_at = idle_deadline(tokio::time::Instant::now());
        // Made once for the connection, not at every turn of its loop (a turn per accepted
        // stream): a `Notified` receives the notifications sent after it was made, polled or
        // not, and the idle timer is reset only when the connection goes idle.
        let expired = self.lifecycle.drain_expired();
        let stop = self.lifecycle.stop_accepting();
        let idle = tokio::time::sleep_until(idle_at.unwrap_or_else(crate::http::far_future));
        // PING keepalive (`http2.connection_keepalive`): one timer for the connection, due at
        // the next PING (`interval` after the last ACK) or, while a PING is out, at the end of
        // its `timeout`; `h2` reads the ACK as it reads everything else (`poll_accept`).
        let keepalive = hc.http2.connection_keepalive;
        let mut pings = keepalive.and_then(|_| conn.ping_pong());
        let mut ping_out = false;
        // While a PING is out, from the socket ([`crate::tcp_info`]): what the client's TCP had
        // acknowledged at the last look, and where the bytes queued ahead of the PING end.
        let mut ahead_of_ping: Option<(u64, u64)> = None;
        // The connection's own jitter draws (one draw from the worker's generator, and only
        // with a jitter: the other draws — balancing — do not depend on PING timing).
        let mut jitter = keepalive
            .filter(|k| k.interval_jitter_percent > 0)
            .map(|_| sluice_core::rng::Rng::from_seed(self.rng.borrow_mut().next_u64()));
        let mut next_ping = move |k: sluice_core::config::Http2Keepalive| {
            let draw = jitter.as_mut().map_or(0, sluice_core::rng::Rng::next_u32);
            tokio::time::Instant::now() + k.next_ping_after(draw)
        };
        let ping_timer = tokio::time::sleep_until(match keepalive {
            Some(k) => next_ping(k),
            None => crate::http::far_future(),
        });
        tokio::pin!(expired, stop, idle, ping_timer);
        loop {
            // The drain's deadline may have passed while this connection was not waiting on
            // it (during the sniff, or between two turns of this loop): `drain_expired` only
            // wakes those waiting.
            if self.lifecycle.drain_deadline_passed() {
                tracing::debug!(listener = %lc.name, %peer, open = streams.len(), "drain timeout passed; closing the HTTP/2 connection");
                break;
            }
            if (draining || self.lifecycle.is_stopping()) && !goaway_sent {
                // GOAWAY: the streams opened so far finish, no new one is accepted.
                conn.graceful_shutdown();
                goaway_sent = true;
                let cause = if idle_goaway {
                    GoawayCause::IdleTimeout
                } else {
                    GoawayCause::Drain
                };
                bump(&self.stats().http2_goaway_sent[cause as usize], 1);
            }
            let next = tokio::select! {
                biased;
                () = &mut expired => {
                    tracing::debug!(listener = %lc.name, %peer, open = streams.len(), "drain timeout passed; closing the HTTP/2 connection");
                    break;
                }
                () = &mut stop, if !goaway_sent => {
                    draining = true;
                    continue;
                }
                () = &mut idle, if idle_at.is_some() && streams.is_empty() && fresh.is_empty() && !goaway_sent => {
                    tracing::debug!(listener = %lc.name, %peer, "HTTP/2 connection idle for idle_timeout: GOAWAY");
                    draining = true;
                    idle_goaway = true;
                    continue;
                }
                r = poll_fn(|cx| {
                    // The streams first: a stream that finishes makes room for the next.
                    let open = streams.len() + fresh.len();
                    let mut ended = |end| {
                        if resets.stream_ended(end) == Verdict::Close {
                            abusive = true;
                        }
                    };
                    while let Poll::Ready(Some(end)) = streams.poll_next_unpin(cx) {
                        ended(end);
                    }
                    let accepted = conn.poll_accept(cx);
                    if accepted.is_pending() && !fresh.is_empty() {
                        // Everything that arrived is read: the new streams start.
                        streams.extend(fresh.drain(..));
                        while let Poll::Ready(Some(end)) = streams.poll_next_unpin(cx) {
                            ended(end);
                        }
                    }
                    if abusive {
                        return Poll::Ready(None);
                    }
                    match accepted {
                        Poll::Ready(r) => Poll::Ready(Some(r)),
                        // The last stream ended: the idle timer starts (in the loop).
                        Poll::Pending if open > 0 && streams.is_empty() => Poll::Ready(None),
                        Poll::Pending => Poll::Pending,
                    }
                }) => r,
                // After the connection's poll, which reads what arrived (an ACK, or the bytes
                // that extend the timeout) before the timer may call the PING unanswered; the
                // ACK before the timer, so that it wins over a timeout due at the same turn.
                pong = poll_fn(|cx| match pings.as_mut() {
                    Some(p) => p.poll_pong(cx),
                    None => Poll::Pending,
                }), if ping_out => {
                    ping_out = false;
                    if let Err(e) = pong {
                        tracing::debug!(listener = %lc.name, %peer, "HTTP/2 connection error awaiting a PING ACK: {e}");
                        break;
                    }
                    if let Some(k) = keepalive {
                        ping_timer.as_mut().reset(next_ping(k));
                    }
                    continue;
                }
                () = &mut ping_timer, if pings.is_some() => {
                    let (Some(k), Some(p)) = (keepalive, pings.as_mut()) else { continue };
                    if !ping_out {
                        if let Err(e) = p.send_ping(h2::Ping::opaque()) {
                            tracing::debug!(listener = %lc.name, %peer, "HTTP/2 keepalive PING not sent: {e}");
                            break;
                        }
                        ping_out = true;
                        received.set(false);
                        ahead_of_ping = socket
                            .and_then(crate::tcp_info::send_progress)
                            .map(|p| (p.acked, p.acked + p.queued));
                        ping_timer.as_mut().reset(tokio::time::Instant::now() + k.timeout);
                        continue;
                    }
                    // The client's TCP acknowledged more of the bytes queued ahead of the PING:
                    // it is taking in the response the PING waits behind, where no later write
                    // of ours could show it. Only those bytes count — an acknowledgement is the
                    // client's kernel, not its program; a trickle after the PING is no sign.
                    let acked_now = socket
                        .and_then(crate::tcp_info::send_progress)
                        .map(|p| p.acked);
                    let taking_in = matches!(
                        (ahead_of_ping, acked_now),
                        (Some((last, ping_at)), Some(now)) if last < ping_at && now > last
                    );
                    let bytes_came = received.replace(false);
                    if bytes_came || taking_in {
                        // Bytes came while the PING was out: the client is there, its ACK
                        // queued behind them (Envoy's rule against head-of-line blocking); or
                        // it is taking in what was ahead of the PING.
                        if !bytes_came {
                            bump(&self.stats().http2_downstream_keepalive_extended_by_acks, 1);
                        }
                        if let (Some((last, _)), Some(now)) = (ahead_of_ping.as_mut(), acked_now) {
                            *last = now;
                        }
                        ping_timer.as_mut().reset(tokio::time::Instant::now() + k.timeout);
                        continue;
                    }
                    // No ACK within `timeout`: the client (or the path to it) is gone.
                    tracing::debug!(listener = %lc.name, %peer, open = streams.len(), "HTTP/2 keepalive PING unanswered: GOAWAY and close");
                    bump(&self.stats().http2_downstream_keepalive_timeout, 1);
                    if !goaway_sent {
                        bump(
                            &self.stats().http2_goaway_sent[GoawayCause::KeepaliveTimeout as usize],
                            1,
                        );
                    }
                    streams.clear();
                    fresh.clear();
                    conn.abrupt_shutdown(h2::Reason::NO_ERROR);
                    let _ = tokio::time::timeout(
                        GOAWAY_FLUSH_TIMEOUT,
                        poll_fn(|cx| conn.poll_closed(cx)),
                    )
                    .await;
                    break;
                }
            };
            if abusive {
                // GOAWAY ENHANCE_YOUR_CALM (what it processed stays the last stream id), then
                // close: its other streams end with it.
                bump(&self.stats().http2_premature_reset_closed, 1);
                bump(
                    &self.stats().http2_goaway_sent[GoawayCause::PrematureResets as usize],
                    1,
                );
                tracing::debug!(listener = %lc.name, %peer, premature = resets.premature(), "too many streams reset prematurely: GOAWAY and close");
                streams.clear();
                fresh.clear();
                conn.abrupt_shutdown(h2::Reason::ENHANCE_YOUR_CALM);
                let _ =
                    tokio::time::timeout(GOAWAY_FLUSH_TIMEOUT, poll_fn(|cx| conn.poll_closed(cx)))
                        .await;
                break;
            }
            match next {
                None => {
                    // The last stream ended: the idle timer starts.
                    idle_at = idle_deadline(tokio::time::Instant::now());
                    if let Some(at) = idle_at {
                        idle.as_mut().reset(at);
                    }
                }
                Some(Some(Ok((request, respond)))) => {
                    fresh.push(Box::pin(self.http2_stream(
                        listener,
                        lc,
                        hc,
                        peer,
                        original_dst,
                        over_tls,
                        client_cert.clone(),
                        request,
                        respond,
                    )));
                }
                Some(Some(Err(e))) => {
                    tracing::debug!(listener = %lc.name, %peer, "HTTP/2 connection error: {e}");
                    break;
                }
                Some(None) => break,
            }
        }
    }

    /// Serves one request stream through the request path (the request as HTTP/1.1, the
    /// response typed).
    #[allow(clippy::too_many_arguments)]
    async fn http2_stream(
        &self,
        listener: usize,
        lc: &ListenerConfig,
        hc: &HttpConfig,
        peer: SocketAddr,
        original_dst: Option<SocketAddr>,
        over_tls: bool,
        client_cert: Option<Rc<[u8]>>,
        request: http::Request<RecvStream>,
        respond: SendResponse<Bytes>,
    ) -> StreamEnd {
        bump(&self.stats().http2_streams_total, 1);
        let _active = GaugeGuard::new(&self.stats().http2_streams_active);
        let logging = self.serving.access_log(listener).is_some();
        let started = if logging {
            SystemTime::now()
        } else {
            SystemTime::UNIX_EPOCH
        };
        let t0 = now();
        let (parts, body) = request.into_parts();
        let listener_http = self
            .serving
            .listener_http(listener)
            .expect("an http listener has its HTTP settings");
        let mut buffers = match self.http_buffers.take_stream() {
            Some(mut b) => {
                b.scratch.rebind(peer, hc, listener_http, over_tls);
                b
            }
            None => {
                #[cfg(test)]
                self.http_buffers.note_stream_made();
                Box::new(StreamBuffers::new(peer, hc, listener_http, over_tls))
            }
        };
        buffers.scratch.original_dst = original_dst;
        buffers.scratch.client_cert = client_cert;
        // The stream's request begins here, before anything can end the stream (a reset, a
        // refusal before routing): what it logs and exports is its own, never what an earlier
        // stream of the worker (possibly another client's) left in this state.
        buffers.scratch.begin_request();
        let StreamBuffers {
            written,
            rbuf,
            ubuf,
            head,
            rhead,
            out,
            scratch,
            sink_buf,
        } = &mut *buffers;
        written.clear();
        rbuf.clear();
        ubuf.clear();
        out.clear();
        // The stream's read and write buffers come from the worker's pool and go back to it
        // when the stream ends (see `StreamBuffers`).
        let pool = &self.http_buffers;
        ubuf.ensure(pool);
        if out.capacity() == 0 {
            *out = pool.take_write();
        }
        // The request head the path reads, written from the HPACK-decoded fields (no parse):
        // held to RFC 9113 §8 and to the limits an HTTP/1.1 request is held to (Envoy's
        // `max_request_headers_kb` is every codec's; `max_header_list_size` is h2's, earlier).
        let limits = Limits {
            max_head_bytes: hc.max_request_headers_kb as usize * 1024,
            max_headers: hc.max_headers_count as usize,
        };
        let result = write_request_head(written, &parts, body.is_end_stream(), &limits, head);
        let sink = RefCell::new(Sink::new(respond, std::mem::take(sink_buf)));
        // A request refused before routing: (status, flag, why).
        let mut rejected = None;
        let body_length = match result {
            Ok(b) => {
                if written.len() <= READ_BUFFER {
                    rbuf.ensure(pool);
                }
                rbuf.preload(written);
                b
            }
            Err(e) => {
                let status = e.status();
                let flag = if status == 431 {
                    ResponseFlag::DownstreamLimit
                } else {
                    ResponseFlag::DownstreamProtocolError
                };
                rejected = Some((status, flag, format!("{e}\n")));
                BodyLength::None
            }
        };
        let mut down = H2Downstream {
            recv: body,
            check: ContentLengthCheck::new(body_length),
            ended: false,
            sink: &sink,
        };
        let lstats = self.listener_stats(listener);
        // The client's RST_STREAM error code (`None` inside: its connection ended).
        let reset_code = std::cell::Cell::new(None);
        let outcome = if let Some((status, flag, why)) = &rejected {
            tracing::debug!(listener = %lc.name, %peer, status, "rejected HTTP/2 request: {why}");
            let reply = LocalReply {
                status: *status,
                server: ServerHeader::local_field(hc.server_header.as_ref()),
                body: LocalBody::Text(why.as_bytes()),
                close: false,
            };
            // What an HTTP/2 stream sends is counted below, as its DATA payload.
            let _ = send_local(&mut down, out, &reply).await;
            Some(Outcome {
                status: *status,
                flag: Some(*flag),
                upstream: None,
                bytes_received: 0,
                bytes_sent: 0,
                reusable: false,
            })
        } else {
            bump(&self.stats().http_requests, 1);
            if let Some(l) = lstats {
                bump(&l.http_requests, 1);
            }
            sink.borrow_mut().method = head.method();
            let watch = &sink;
            // Nothing awaited since `t0`: the request's time starts with the stream's.
            let t_head = t0;
            // A client's RST_STREAM ends the request wherever it is: dropping the request
            // path's future aborts the core's stream (its units go back) and closes the
            // upstream connection.
            let served = tokio::select! {
                o = self.serve_request(
                    listener, &mut down, scratch, rbuf, head, ubuf, rhead, out,
                ) => Some(o),
                code = poll_fn(|cx| watch.borrow_mut().poll_reset(cx)) => {
                    reset_code.set(Some(code));
                    None
                }
            };
            let rq_time = now().saturating_duration_since(t_head);
            self.stats().downstream_rq_time.record(rq_time);
            if let Some(l) = lstats {
                l.downstream_rq_time.record(rq_time);
            }
            served
        };
        let mut reset_by_client = false;
        let outcome = match outcome {
            Some(mut o) => {
                // Ends cleanly, or with a reset for an incomplete response.
                poll_fn(|cx| sink.borrow_mut().poll_finish(cx)).await;
                if sink.borrow().reset_sent {
                    bump(&self.stats().http2_tx_reset, 1);
                }
                // What an HTTP/2 stream sends is counted as its DATA payload (the request
                // path counted HTTP/1.1 bytes; HEADERS go out compressed).
                o.bytes_sent = sink.borrow().body_sent;
                o
            }
            None => {
                bump(&self.stats().http2_rx_reset, 1);
                let code = crate::stats::reset_code(reset_code.get().flatten());
                bump(&self.stats().http2_rx_reset_code[code], 1);
                reset_by_client = true;
                Outcome {
                    status: sink.borrow().status,
                    flag: None,
                    upstream: None,
                    bytes_received: 0,
                    bytes_sent: sink.borrow().body_sent,
                    reusable: false,
                }
            }
        };
        if outcome.status != 0 {
            self.count_status(listener, outcome.status);
        }
        let local = outcome
            .flag
            .is_some_and(|f| f != ResponseFlag::DirectResponse);
        if local {
            bump(&self.stats().http_local_replies, 1);
        }
        if let Some(l) = lstats {
            if local {
                bump(&l.http_local_replies, 1);
            }
            bump(&l.downstream_bytes_received, outcome.bytes_received);
            bump(&l.downstream_bytes_sent, outcome.bytes_sent);
        }
        let parsed = rejected.is_none();
        // A stream refused before routing, or reset before its request path ran, logs its
        // scratch's per-request state as `begin_request` left it: empty.
        let trace = scratch.trace.hop;
        let log = self.serving.access_log(listener);
        if log.is_some() || trace.is_some_and(|h| h.sampled) {
            let buf = rbuf.bytes();
            let entry = Entry {
                start: started,
                method: if parsed {
                    head.method_bytes(buf)
                } else {
                    parts.method.as_str().as_bytes()
                },
                path: if parsed {
                    head.target(buf)
                } else {
                    parts
                        .uri
                        .path_and_query()
                        .map_or(b"-", |p| p.as_str().as_bytes())
                },
                protocol: "HTTP/2",
                original_dst,
                status: outcome.status,
                flag: outcome.flag.map(ResponseFlag::code),
                bytes_received: outcome.bytes_received,
                bytes_sent: outcome.bytes_sent,
                duration_ms: now().duration_since(t0).as_millis() as u64,
                upstream: outcome.upstream,
                // The id forwarded upstream (generated when the client sent none).
                request_id: if parsed {
                    scratch.forwarded_request_id(head, buf)
                } else {
                    b""
                },
                downstream: peer,
                listener: &lc.name,
                request: parsed.then_some((&*head, buf)),
                cluster: scratch
                    .cluster
                    .map(|c| self.config.clusters[c].name.as_str()),
                tries: scratch.tries,
                close_reason: None,
                server_name: None,
                trace_id: trace.and_then(|_| scratch.trace.trace_id()),
                grpc_status: scratch.logged_grpc_status(&outcome),
            };
            if let Some(log) = log {
                log.borrow_mut().log(&entry);
            }
            if parsed {
                self.finish_span(&scratch.trace, &entry);
            }
        }
        // The sink's buffer and head go back with the stream's state (a buffer grown past the
        // read size is not kept).
        drop(down);
        let Sink { buf, .. } = sink.into_inner();
        if buf.capacity() <= READ_BUFFER {
            *sink_buf = buf;
            sink_buf.clear();
        }
        buffers.release(&self.http_buffers);
        self.http_buffers.give_stream(buffers);
        if reset_by_client {
            StreamEnd::ResetByClient(now().saturating_duration_since(t0))
        } else {
            StreamEnd::Completed
        }
    }
}

/// Checks a request's head and writes the head the request path reads
/// (`sluice_core::http2::build_request_head`), its fields borrowed from `parts` (on the stack
/// for the usual request, not collected per stream).
fn write_request_head(
    written: &mut Vec<u8>,
    parts: &http::request::Parts,
    end_stream: bool,
    limits: &Limits,
    head: &mut Head,
) -> Result<BodyLength, sluice_core::http2::RequestHeadError> {
    const ON_STACK: usize = 48;
    let empty: (&[u8], &[u8]) = (&[], &[]);
    let mut stack = [empty; ON_STACK];
    let collected: Vec<(&[u8], &[u8])>;
    let pairs = parts
        .headers
        .iter()
        .map(|(n, v)| (n.as_str().as_bytes(), v.as_bytes()));
    let fields: &[(&[u8], &[u8])] = if parts.headers.len() <= ON_STACK {
        let mut n = 0;
        for (slot, pair) in stack.iter_mut().zip(pairs) {
            *slot = pair;
            n += 1;
        }
        &stack[..n]
    } else {
        collected = pairs.collect();
        &collected
    };
    build_request_head(
        written,
        &RequestHead {
            method: parts.method.as_str().as_bytes(),
            authority: parts.uri.authority().map(|a| a.as_str().as_bytes()),
            path: parts.uri.path_and_query().map(|p| p.as_str().as_bytes()),
            fields,
            end_stream,
        },
        limits,
        head,
    )
}

/// The state of one stream's request, kept by the worker ([`crate::bufpool::BufPool`]) for its
/// next streams, of any connection ([`crate::http::Scratch::rebind`] makes it the new stream
/// connection's, [`crate::http::Scratch::begin_request`] clears the earlier request's state).
/// Its read and write buffers go back to the worker's pool separately when the stream ends, so
/// a kept state holds none: a busy worker allocates nothing per stream and an idle connection
/// holds no stream state.
pub(crate) struct StreamBuffers {
    /// The request head as written (`build_request_head`), before it goes into `rbuf`.
    written: Vec<u8>,
    rbuf: ReadBuffer,
    ubuf: ReadBuffer,
    head: Head,
    rhead: Head,
    out: Vec<u8>,
    scratch: Scratch,
    /// The response sink's payload buffer ([`Sink`]), lent to it for the stream. DATA frames
    /// still queued in `h2` may share its allocation when it comes back; once they are written
    /// it is the buffer's alone again, and its next payload reuses it.
    sink_buf: BytesMut,
}

impl StreamBuffers {
    /// Gives the read and write buffers back to the worker's pool, and frees what grew past
    /// what a kept state may hold ([`Scratch::shed`], [`KEPT_SCRATCH`]).
    fn release(&mut self, pool: &BufPool) {
        self.scratch.shed();
        if self.written.capacity() > KEPT_SCRATCH {
            self.written = Vec::new();
        }
        self.rbuf.clear();
        self.rbuf.release(pool);
        self.ubuf.clear();
        self.ubuf.release(pool);
        pool.give_write(std::mem::take(&mut self.out));
    }

    fn new(
        peer: SocketAddr,
        hc: &HttpConfig,
        listener_http: &Rc<ListenerHttp>,
        over_tls: bool,
    ) -> Self {
        let mut scratch =
            Scratch::new(peer, hc, listener_http, Rc::new(Cell::new(false)), over_tls);
        // A `protocol: downstream` cluster speaks HTTP/2 to this stream's upstream.
        scratch.downstream_http2 = true;
        StreamBuffers {
            written: Vec::with_capacity(256),
            rbuf: ReadBuffer::new(),
            ubuf: ReadBuffer::new(),
            head: Head::default(),
            rhead: Head::default(),
            out: Vec::new(),
            scratch,
            sink_buf: BytesMut::new(),
        }
    }
}

/// An HTTP/2 request stream as the request path sees it: its request body is handed over
/// typed ([`Respond::poll_body`]: each DATA frame's payload, the trailers, the end), its
/// response goes typed to the [`Sink`] ([`Respond`]); no HTTP/1.1 bytes go either way.
struct H2Downstream<'a> {
    recv: RecvStream,
    /// Holds the DATA to the request's `content-length`, when it has one.
    check: ContentLengthCheck,
    /// The body ended (its end, with the trailers if any, was handed over).
    ended: bool,
    sink: &'a RefCell<Sink>,
}

fn h2_io_error(e: h2::Error) -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionReset, e)
}

impl AsyncRead for H2Downstream<'_> {
    /// The request body goes typed ([`Respond::poll_body`]); no HTTP/1.1 bytes are read from a
    /// stream.
    fn poll_read(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        _buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        debug_assert!(false, "HTTP/1.1 bytes read from an HTTP/2 stream");
        Poll::Ready(Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "an HTTP/2 stream gives its request body typed",
        )))
    }
}

impl AsyncWrite for H2Downstream<'_> {
    /// The response goes typed ([`Respond`]); no HTTP/1.1 bytes are written to a stream.
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        _buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        debug_assert!(false, "HTTP/1.1 bytes written to an HTTP/2 stream");
        Poll::Ready(Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "an HTTP/2 stream takes its response typed",
        )))
    }

    /// Sends the payload taken so far, within the stream's send window.
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.sink.borrow_mut().poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl Respond for H2Downstream<'_> {
    const TYPED: bool = true;

    /// The next DATA frame's payload (its receive capacity given back as it is handed over:
    /// the path takes it to write it upstream), then the trailers or the end. DATA beyond the
    /// `content-length`, or an end before it, is an error (the path answers 400).
    fn poll_body(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<BodyPiece>> {
        loop {
            if self.ended {
                return Poll::Ready(Ok(BodyPiece::End));
            }
            match ready!(self.recv.poll_data(cx)) {
                Some(Ok(data)) => {
                    if self.check.data(data.len() as u64).is_err() {
                        return Poll::Ready(Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            "DATA beyond the request's content-length",
                        )));
                    }
                    if data.is_empty() {
                        continue;
                    }
                    let _ = self.recv.flow_control().release_capacity(data.len());
                    return Poll::Ready(Ok(BodyPiece::Data(data)));
                }
                Some(Err(e)) => return Poll::Ready(Err(h2_io_error(e))),
                None => {
                    if self.check.end().is_err() {
                        return Poll::Ready(Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            "request DATA shorter than its content-length",
                        )));
                    }
                    let trailers = ready!(self.recv.poll_trailers(cx)).map_err(h2_io_error)?;
                    self.ended = true;
                    if let Some(t) = trailers {
                        return Poll::Ready(Ok(BodyPiece::Trailers(t)));
                    }
                }
            }
        }
    }

    fn typed_interim(&mut self, status: u16) -> io::Result<()> {
        self.sink.borrow_mut().interim(status);
        Ok(())
    }

    fn typed_local(&mut self, reply: &LocalReply<'_>) -> io::Result<()> {
        self.sink.borrow_mut().local(reply)
    }

    fn typed_head(&mut self, head: &ForwardedHead<'_>) -> io::Result<()> {
        self.sink.borrow_mut().stage(head)
    }

    fn typed_payload(&mut self, data: &[u8]) -> io::Result<()> {
        self.sink.borrow_mut().payload(data)
    }

    fn typed_trailer_bytes(&mut self, section: &[u8]) {
        self.sink.borrow_mut().trailers.extend_from_slice(section);
    }

    fn typed_end(&mut self) {
        self.sink.borrow_mut().end_body();
    }

    fn head_pending(&self, _out: &[u8]) -> bool {
        self.sink.borrow().staged.is_some()
    }
}

/// Where the response body stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum BodyState {
    /// No head sent or staged yet.
    Head,
    /// `content-length`: payload bytes left.
    Length(u64),
    /// Chunked upstream: until the request path says the body ended.
    Chunked,
    /// An upstream response delimited by its close: until the request path says the body
    /// ended (at the close); one that returns before that (a timeout, an error) cut it.
    UntilDone,
    /// The response body is complete.
    Done,
}

/// The response side of a stream: takes the response the request path gives it typed
/// ([`Respond`]: a staged head, payload, trailer bytes, the end; or a local answer) and sends it
/// as HEADERS, DATA within the stream's send window, and trailers.
struct Sink {
    respond: Option<SendResponse<Bytes>>,
    send: Option<SendStream<Bytes>>,
    /// The request's method (a response to HEAD has no body).
    method: Method,
    /// A forwarded head staged, not sent yet (it goes with the first payload).
    staged: Option<http::Response<()>>,
    /// Payload not yet sent. Each DATA frame is split off its front (`split_to`, `freeze`):
    /// sharing the allocation, not copying, so a chunk costs O(1) whatever is left behind it
    /// (a client granting 1-byte windows does not make the sink quadratic). The allocation
    /// comes back to the buffer once `h2` has written the frames that share it.
    buf: BytesMut,
    state: BodyState,
    /// END_STREAM (or a reset) was sent.
    closed: bool,
    /// The status sent (or staged), 0 before.
    status: u16,
    /// Payload bytes sent.
    body_sent: u64,
    /// A chunked response's trailer section, as it came (sent as HTTP/2 trailers).
    trailers: Vec<u8>,
    /// The response is gRPC's (`content-type: application/grpc*`): cut short, it ends with
    /// `grpc-status: 14` trailers instead of a reset, so the client sees UNAVAILABLE.
    grpc: bool,
    /// The proxy reset the stream (INTERNAL_ERROR: the answer broke off).
    reset_sent: bool,
}

impl Sink {
    /// A sink for `respond`, with a buffer (empty) kept from an earlier stream.
    fn new(respond: SendResponse<Bytes>, buf: BytesMut) -> Self {
        debug_assert!(buf.is_empty());
        Sink {
            respond: Some(respond),
            send: None,
            method: Method::Get,
            staged: None,
            buf,
            state: BodyState::Head,
            closed: false,
            status: 0,
            body_sent: 0,
            trailers: Vec::new(),
            grpc: false,
            reset_sent: false,
        }
    }

    /// Ready when the client reset the stream: with its error code (`None`: the connection
    /// failed).
    fn poll_reset(&mut self, cx: &mut Context<'_>) -> Poll<Option<u32>> {
        let reset = if let Some(r) = &mut self.respond {
            r.poll_reset(cx)
        } else if let Some(s) = &mut self.send {
            s.poll_reset(cx)
        } else {
            return Poll::Pending;
        };
        reset.map(|r| r.ok().map(u32::from))
    }

    /// An interim answer (the proxy's `100 Continue`) as an informational HEADERS frame.
    fn interim(&mut self, status: u16) {
        if let (Some(respond), Ok(interim)) = (
            &mut self.respond,
            http::Response::builder().status(status).body(()),
        ) {
            let _ = respond.send_informational(interim);
        }
    }

    /// Stages a forwarded head: its fields as the HTTP/1.1 writer would write them, without the
    /// connection-specific ones. The values are slices of one block (the upstream head's bytes
    /// and the added values): one allocation, not one per value.
    fn stage(&mut self, head: &ForwardedHead<'_>) -> io::Result<()> {
        if self.respond.is_none() {
            return Err(io::ErrorKind::BrokenPipe.into());
        }
        let status = http::StatusCode::from_u16(head.head.status()).map_err(io::Error::other)?;
        let head_len = head.head.head_len();
        let added: usize = head.edits.add.iter().map(|(_, v)| v.len()).sum();
        // The head's bytes, then added values and a normalized content length (20 digits).
        let mut block = bytes::BytesMut::with_capacity(head_len + added + 20);
        block.extend_from_slice(&head.buf[..head_len]);
        let received = block.split().freeze();
        let base = head.buf.as_ptr() as usize;
        let mut headers = http::HeaderMap::with_capacity(head.head.header_spans().len() + 2);
        let mut grpc = None;
        for_each_response_field(head.buf, head.head, &head.edits, |name, value| {
            // `te` is allowed in a request only (RFC 9113 §8.2.2): the h2 codec refuses a
            // head with one (a route may add it; the upstream's is dropped by the visitor).
            if is_connection_specific(name) || name.eq_ignore_ascii_case(b"te") {
                return;
            }
            let value = match value {
                FieldValue::Bytes(v) => {
                    let at = (v.as_ptr() as usize).wrapping_sub(base);
                    if at.checked_add(v.len()).is_some_and(|end| end <= head_len) {
                        received.slice(at..at + v.len())
                    } else {
                        block.extend_from_slice(v);
                        block.split().freeze()
                    }
                }
                FieldValue::ContentLength(n) => {
                    use std::fmt::Write as _;
                    let _ = write!(block, "{n}");
                    block.split().freeze()
                }
            };
            let (Ok(n), Ok(v)) = (
                http::HeaderName::from_bytes(name),
                http::HeaderValue::from_maybe_shared(value),
            ) else {
                return;
            };
            if grpc.is_none() && n == http::header::CONTENT_TYPE {
                grpc = Some(sluice_core::l7::grpc::is_grpc(v.as_bytes()));
            }
            headers.append(n, v);
        });
        self.grpc = grpc.unwrap_or(false);
        // No `content-length` for gRPC, which frames its messages itself: a length would make
        // the `grpc-status: 14` trailers of an answer cut short a malformed stream (RFC 9113
        // §8.1.1), which the client reads as INTERNAL (the length still bounds the body,
        // `BodyState::Length`). Nor for a 204 (RFC 9110 §8.6: a server must not send one;
        // nghttp2 clients reset a 204 with a non-zero one as malformed).
        if self.grpc || head.head.status() == 204 {
            headers.remove(http::header::CONTENT_LENGTH);
        }
        let mut response = http::Response::new(());
        *response.status_mut() = status;
        *response.headers_mut() = headers;
        self.state = match head.head.framing() {
            BodyFraming::None | BodyFraming::ContentLength(0) => BodyState::Done,
            BodyFraming::ContentLength(n) => BodyState::Length(n),
            BodyFraming::Chunked => BodyState::Chunked,
            BodyFraming::CloseDelimited => BodyState::UntilDone,
        };
        self.status = head.head.status();
        self.staged = Some(response);
        Ok(())
    }

    /// A local answer: its head at once (a staged one is dropped), its body with the next
    /// flush. The fields are those the HTTP/1.1 answer has but `connection`.
    fn local(&mut self, reply: &LocalReply<'_>) -> io::Result<()> {
        self.staged = None;
        let Some(mut respond) = self.respond.take() else {
            return Err(io::ErrorKind::BrokenPipe.into());
        };
        let status = reply.sent_status();
        let mut headers = http::HeaderMap::with_capacity(4);
        let mut field = |name: &'static str, value: &[u8]| {
            if let Ok(v) = http::HeaderValue::from_bytes(value) {
                headers.append(http::HeaderName::from_static(name), v);
            }
        };
        if let Some((name, value)) = reply.server {
            field(name, value);
        }
        let body: &[u8] = match reply.body {
            LocalBody::Text(body) => {
                let bodiless = (100..200).contains(&status) || status == 204 || status == 304;
                if bodiless {
                    &[]
                } else {
                    if !body.is_empty() {
                        field("content-type", b"text/plain");
                    }
                    field("content-length", body.len().to_string().as_bytes());
                    body
                }
            }
            LocalBody::GrpcTrailersOnly { status, message } => {
                field("content-type", b"application/grpc");
                field("grpc-status", status.code().to_string().as_bytes());
                let mut encoded = Vec::with_capacity(message.len());
                sluice_core::l7::grpc::push_grpc_message(&mut encoded, message);
                field("grpc-message", &encoded);
                field("content-length", b"0");
                &[]
            }
        };
        // A response to HEAD has no body (its content-length says what GET would get).
        let body = if self.method == Method::Head {
            &[]
        } else {
            body
        };
        let mut response = http::Response::new(());
        *response.status_mut() = http::StatusCode::from_u16(status).map_err(io::Error::other)?;
        *response.headers_mut() = headers;
        let end = body.is_empty();
        let send = respond.send_response(response, end).map_err(h2_io_error)?;
        self.status = status;
        self.send = Some(send);
        self.closed = end;
        self.buf.clear();
        self.take_in(body);
        // The body is all there: the flush that sends it ends the stream.
        self.state = BodyState::Done;
        Ok(())
    }

    /// Takes payload (after a staged head, which goes out now: ending the stream when the body
    /// is empty).
    fn payload(&mut self, data: &[u8]) -> io::Result<()> {
        if let Some(response) = self.staged.take() {
            let Some(mut respond) = self.respond.take() else {
                return Err(io::ErrorKind::BrokenPipe.into());
            };
            // Trailers end the stream themselves (in poll_finish), even after no payload.
            let end = self.state == BodyState::Done && !self.has_trailers();
            let send = respond.send_response(response, end).map_err(h2_io_error)?;
            self.send = Some(send);
            self.closed = end;
        }
        if data.is_empty() {
            return Ok(());
        }
        if self.send.is_none() {
            return Err(io::ErrorKind::BrokenPipe.into());
        }
        let taken = match &mut self.state {
            BodyState::Head | BodyState::Done => &[][..],
            BodyState::Chunked | BodyState::UntilDone => data,
            BodyState::Length(left) => {
                let n = (data.len() as u64).min(*left) as usize;
                *left -= n as u64;
                if *left == 0 {
                    self.state = BodyState::Done;
                }
                &data[..n]
            }
        };
        self.take_in(taken);
        Ok(())
    }

    /// Copies payload into `buf`: the one copy a payload byte costs in the sink.
    fn take_in(&mut self, data: &[u8]) {
        #[cfg(test)]
        tests::SINK_BYTES_COPIED.with(|c| c.set(c.get() + data.len() as u64));
        self.buf.extend_from_slice(data);
    }

    /// The request path says the body ended.
    fn end_body(&mut self) {
        if matches!(self.state, BodyState::Chunked | BodyState::UntilDone) {
            self.state = BodyState::Done;
        }
    }

    /// Sends what waits in `buf`, within the send window; ends the stream with the last of it
    /// when the body is complete.
    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Trailers end the stream themselves (in poll_finish).
        let complete = matches!(self.state, BodyState::Done) && !self.has_trailers();
        let Some(send) = &mut self.send else {
            return Poll::Ready(Ok(()));
        };
        while !self.buf.is_empty() {
            send.reserve_capacity(self.buf.len());
            let capacity = match send.poll_capacity(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(c))) => c,
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Err(h2_io_error(e))),
                Poll::Ready(None) => {
                    return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
                }
            };
            if capacity == 0 {
                continue;
            }
            let n = capacity.min(self.buf.len());
            let end = complete && n == self.buf.len();
            let chunk = self.buf.split_to(n).freeze();
            self.body_sent += n as u64;
            send.send_data(chunk, end).map_err(h2_io_error)?;
            if end {
                self.closed = true;
            }
        }
        Poll::Ready(Ok(()))
    }

    /// Whether the chunked response had trailer fields (more than the final CRLF).
    fn has_trailers(&self) -> bool {
        self.trailers.len() > 2
    }

    /// The trailer section as HTTP/2 trailers, without the fields a trailer must not carry
    /// (the core's `write_trailers` filter); `None` when there are none.
    fn trailer_map(&self) -> Option<http::HeaderMap> {
        if !self.has_trailers() {
            return None;
        }
        let mut section = Vec::with_capacity(self.trailers.len());
        write_trailers(&mut section, &self.trailers);
        let mut map = http::HeaderMap::new();
        for line in section.split(|&b| b == b'\n') {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            let Some(colon) = line.iter().position(|&b| b == b':') else {
                continue;
            };
            let value = line[colon + 1..].trim_ascii();
            if let (Ok(n), Ok(v)) = (
                http::HeaderName::from_bytes(&line[..colon]),
                http::HeaderValue::from_bytes(value),
            ) && !sluice_core::http2::is_connection_specific(n.as_str().as_bytes())
            {
                map.append(n, v);
            }
        }
        (!map.is_empty()).then_some(map)
    }

    /// After the request path returned: sends what is left and ends the stream — cleanly when
    /// the response is complete (`true`), else with RST_STREAM (INTERNAL_ERROR).
    fn poll_finish(&mut self, cx: &mut Context<'_>) -> Poll<bool> {
        if self.staged.take().is_some() {
            // A head the proxy never got to send: nothing of the answer went out.
            self.state = BodyState::Head;
        }
        if self.closed {
            return Poll::Ready(true);
        }
        if matches!(self.state, BodyState::Done) {
            match self.poll_flush(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(_)) => return Poll::Ready(false),
                Poll::Ready(Ok(())) => {}
            }
            let trailers = self.trailer_map();
            if !self.closed
                && let Some(send) = &mut self.send
            {
                self.closed = true;
                return Poll::Ready(match trailers {
                    Some(t) => send.send_trailers(t).is_ok(),
                    None => send.send_data(Bytes::new(), true).is_ok(),
                });
            }
            return Poll::Ready(true);
        }
        self.closed = true;
        if let Some(send) = &mut self.send {
            if self.grpc {
                // The upstream went away mid-response: a gRPC client reads UNAVAILABLE from
                // the trailers (a reset would read as INTERNAL).
                let mut trailers = http::HeaderMap::new();
                trailers.insert("grpc-status", http::HeaderValue::from_static("14"));
                trailers.insert(
                    "grpc-message",
                    http::HeaderValue::from_static("upstream connection reset mid-response"),
                );
                if send.send_trailers(trailers).is_ok() {
                    return Poll::Ready(false);
                }
            }
            send.send_reset(h2::Reason::INTERNAL_ERROR);
            self.reset_sent = true;
        } else if let Some(respond) = &mut self.respond {
            respond.send_reset(h2::Reason::INTERNAL_ERROR);
            self.reset_sent = true;
        }
        Poll::Ready(false)
    }
}

#[cfg(test)]
mod tests {
    use crate::h2_test_client::{answered, body_to_end, h2c_client};
    use crate::test_support::{bound, http1_upstream, on_local_runtime, serve};

    thread_local! {
        /// Payload bytes the sinks of this thread copied (a test's engine runs on its thread).
        pub(super) static SINK_BYTES_COPIED: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
    }

    /// An HTTP/1.1 upstream's answer: `200 up`, with the request's `x-forwarded-for` in a
    /// header.
    fn answer_with_xff(head: &str) -> String {
        let xff = head
            .lines()
            .find_map(|l| l.strip_prefix("x-forwarded-for: "))
            .unwrap_or("none");
        format!("HTTP/1.1 200 OK\r\nxff: {xff}\r\ncontent-length: 2\r\n\r\nup")
    }

    /// One request on an h2c connection: the status, the `xff` header and the body.
    async fn get(client: &mut h2::client::SendRequest<bytes::Bytes>) -> (u16, String, Vec<u8>) {
        let request = http::Request::get("http://svc/up").body(()).unwrap();
        let (response, _) = client.send_request(request, true).unwrap();
        let response = answered(response).await;
        let status = response.status().as_u16();
        let xff = response.headers()["xff"].to_str().unwrap().to_owned();
        let got = body_to_end(&mut response.into_body()).await;
        (status, xff, got)
    }

    /// An upstream answer with as many fields as a head may have (255 and `content-length`:
    /// the request path's limit, 256), to which the route adds one and the listener's `server`
    /// another.
    fn answer_at_the_field_limit(_head: &str) -> String {
        let mut answer = String::from("HTTP/1.1 200 OK\r\n");
        for i in 0..255 {
            answer.push_str(&format!("x-f{i}: v{i}\r\n"));
        }
        answer.push_str("content-length: 2\r\n\r\nup");
        answer
    }

    /// The response head goes to an HTTP/2 stream typed — the upstream's fields with the
    /// route's and the listener's edits as a list — not written as HTTP/1.1 text and parsed
    /// back: the edited head has more fields than a parsed head may (which the re-parse
    /// refused, resetting the stream), and every one reaches the client, in order.
    #[test]
    fn an_edited_response_head_reaches_an_http2_client_whole() {
        on_local_runtime(async {
            let (up, up_at) = bound();
            tokio::task::spawn_local(http1_upstream(up, answer_at_the_field_limit));
            let (listener, at) = bound();
            let yaml = format!(
                r#"
listeners:
  - name: web
    address: {at}
    http:
      server_name: edge
      virtual_hosts:
        - name: all
          domains: ["*"]
          routes:
            - match: {{ prefix: / }}
              route:
                cluster: up
                response_headers_to_add:
                  - {{ name: x-added, value: by-route }}
clusters:
  - name: up
    hosts: [ {{ address: "{up_at}" }} ]
"#
            );
            let _engine = serve(&yaml, listener);
            let (mut client, conn) = h2c_client(at).await;
            let request = http::Request::get("http://svc/up").body(()).unwrap();
            let (response, _) = client.send_request(request, true).unwrap();
            let response = answered(response).await;
            assert_eq!(response.status(), 200);
            let headers = response.headers();
            let names: Vec<&str> = headers.keys().map(http::HeaderName::as_str).collect();
            let mut want: Vec<String> = (0..255).map(|i| format!("x-f{i}")).collect();
            want.extend(["content-length", "x-added", "server"].map(String::from));
            assert_eq!(names, want);
            assert_eq!(headers["x-f254"], "v254");
            assert_eq!(headers["x-added"], "by-route");
            assert_eq!(headers["server"], "edge");
            let mut body = response.into_body();
            let got = body_to_end(&mut body).await;
            assert_eq!(got, b"up");
            drop(client);
            conn.abort();
        });
    }

    /// An upstream that sends a chunked answer's head, then nothing.
    fn head_then_nothing(_head: &str) -> String {
        "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n".to_owned()
    }

    /// A forwarded head is staged, not sent, until the first body bytes: an upstream that
    /// stops after its head is still answered by the proxy (504 at the route timeout), not a
    /// 200 whose stream is then reset.
    #[test]
    fn an_http2_client_gets_the_proxys_answer_when_the_upstream_stops_after_its_head() {
        on_local_runtime(async {
            let (up, up_at) = bound();
            tokio::task::spawn_local(http1_upstream(up, head_then_nothing));
            let (listener, at) = bound();
            let yaml = format!(
                r#"
listeners:
  - name: web
    address: {at}
    http:
      virtual_hosts:
        - name: all
          domains: ["*"]
          routes:
            - match: {{ prefix: / }}
              route: {{ cluster: up, timeout: 1s }}
clusters:
  - name: up
    hosts: [ {{ address: "{up_at}" }} ]
"#
            );
            let _engine = serve(&yaml, listener);
            let (mut client, conn) = h2c_client(at).await;
            let request = http::Request::get("http://svc/up").body(()).unwrap();
            let (response, _) = client.send_request(request, true).unwrap();
            let response = answered(response).await;
            assert_eq!(response.status(), 504);
            let mut body = response.into_body();
            let got = body_to_end(&mut body).await;
            assert_eq!(got, b"upstream request timeout\n");
            drop(client);
            conn.abort();
        });
    }

    #[test]
    fn streams_of_any_connection_reuse_the_workers_stream_states() {
        on_local_runtime(async {
            let (up, up_at) = bound();
            tokio::task::spawn_local(http1_upstream(up, answer_with_xff));
            let (listener, at) = bound();
            let yaml = format!(
                r#"
listeners:
  - name: web
    address: {at}
    http:
      virtual_hosts:
        - name: all
          domains: ["*"]
          routes: [ {{ match: {{ prefix: / }}, route: {{ cluster: up }} }} ]
clusters:
  - name: up
    hosts: [ {{ address: "{up_at}" }} ]
"#
            );
            let engine = serve(&yaml, listener);
            // Two connections one after the other, ten requests each, one at a time: every
            // stream after the first takes the state the previous one gave back, whichever
            // connection it came from, and is answered in full, with its client's address.
            for _ in 0..2 {
                let (mut client, conn) = h2c_client(at).await;
                for _ in 0..10 {
                    let got = get(&mut client).await;
                    assert_eq!(got, (200, "127.0.0.1".to_owned(), b"up".to_vec()));
                }
                drop(client);
                let _ = conn.await;
            }
            assert_eq!(engine.http_buffers.streams_made(), 1);
        });
    }

    /// A gRPC upstream's answer with no message, only its status: a chunked body whose last
    /// chunk comes at once, with the trailer section (what an HTTP/2 upstream's HEADERS then
    /// trailers, no DATA, become on the request path).
    fn status_only_in_trailers(_head: &str) -> String {
        "HTTP/1.1 200 OK\r\ncontent-type: application/grpc\r\ntransfer-encoding: chunked\r\n\r\n\
         0\r\ngrpc-status: 5\r\ngrpc-message: nope\r\n\r\n"
            .to_owned()
    }

    /// An answer with an empty body and trailers: the staged head goes out without END_STREAM,
    /// and the trailers end the stream (not lost behind a HEADERS frame that ended it).
    #[test]
    fn an_http2_client_gets_the_trailers_of_an_answer_without_payload() {
        on_local_runtime(async {
            let (up, up_at) = bound();
            tokio::task::spawn_local(http1_upstream(up, status_only_in_trailers));
            let (listener, at) = bound();
            let yaml = format!(
                r#"
listeners:
  - name: web
    address: {at}
    http:
      virtual_hosts:
        - name: all
          domains: ["*"]
          routes: [ {{ match: {{ prefix: / }}, route: {{ cluster: up }} }} ]
clusters:
  - name: up
    hosts: [ {{ address: "{up_at}" }} ]
"#
            );
            let _engine = serve(&yaml, listener);
            let (mut client, conn) = h2c_client(at).await;
            let request = http::Request::post("http://svc/pkg.Svc/Get")
                .header("content-type", "application/grpc")
                .header("te", "trailers")
                .body(())
                .unwrap();
            let (response, _) = client.send_request(request, true).unwrap();
            let response = answered(response).await;
            assert_eq!(response.status(), 200);
            assert!(response.headers().get("grpc-status").is_none());
            let mut body = response.into_body();
            let got = body_to_end(&mut body).await;
            assert_eq!(got, b"");
            let trailers = body
                .trailers()
                .await
                .expect("the stream ends cleanly")
                .expect("the stream ends with trailers");
            assert_eq!(trailers["grpc-status"], "5");
            assert_eq!(trailers["grpc-message"], "nope");
            drop(client);
            conn.abort();
        });
    }

    fn plain_answer(_head: &str) -> String {
        "HTTP/1.1 200 OK\r\nte: gzip\r\ncontent-length: 2\r\n\r\nhi".to_owned()
    }

    /// `te` is a request field (RFC 9113 §8.2.2 allows it, as `trailers`, in a request only):
    /// one the route adds to a response, or one the upstream sent, is not sent to an HTTP/2
    /// client (the h2 codec refuses to send a head with one, and the answer was lost).
    #[test]
    fn a_te_field_does_not_reach_an_http2_client() {
        on_local_runtime(async {
            let (up, up_at) = bound();
            tokio::task::spawn_local(http1_upstream(up, plain_answer));
            let (listener, at) = bound();
            let yaml = format!(
                r#"
listeners:
  - name: web
    address: {at}
    http:
      virtual_hosts:
        - name: all
          domains: ["*"]
          routes:
            - match: {{ prefix: / }}
              route:
                cluster: up
                response_headers_to_add:
                  - {{ name: TE, value: gzip }}
                  - {{ name: x-kept, value: kept }}
clusters:
  - name: up
    hosts: [ {{ address: "{up_at}" }} ]
"#
            );
            let _engine = serve(&yaml, listener);
            let (mut client, conn) = h2c_client(at).await;
            let request = http::Request::get("http://svc/up").body(()).unwrap();
            let (response, _) = client.send_request(request, true).unwrap();
            let response = answered(response).await;
            assert_eq!(response.status(), 200);
            assert!(response.headers().get("te").is_none());
            assert_eq!(response.headers()["x-kept"], "kept");
            let mut body = response.into_body();
            let got = body_to_end(&mut body).await;
            assert_eq!(got, b"hi");
            drop(client);
            conn.abort();
        });
    }

    /// The start of an answer delimited by the upstream's close, which then neither sends
    /// more nor closes.
    fn close_delimited_then_stall(_head: &str) -> String {
        "HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nhel".to_owned()
    }

    /// A body delimited by the upstream's close is complete only when the upstream closed: one
    /// cut by the route timeout ends in RST_STREAM, not in an END_STREAM that tells the client
    /// it has the whole body.
    #[test]
    fn an_http2_client_sees_a_close_delimited_answer_cut_by_the_route_timeout_as_cut() {
        on_local_runtime(async {
            let (up, up_at) = bound();
            tokio::task::spawn_local(http1_upstream(up, close_delimited_then_stall));
            let (listener, at) = bound();
            let yaml = format!(
                r#"
listeners:
  - name: web
    address: {at}
    http:
      virtual_hosts:
        - name: all
          domains: ["*"]
          routes:
            - match: {{ prefix: / }}
              route: {{ cluster: up, timeout: 1s }}
clusters:
  - name: up
    hosts: [ {{ address: "{up_at}" }} ]
"#
            );
            let _engine = serve(&yaml, listener);
            let (mut client, conn) = h2c_client(at).await;
            let request = http::Request::get("http://svc/up").body(()).unwrap();
            let (response, _) = client.send_request(request, true).unwrap();
            let response = answered(response).await;
            assert_eq!(response.status(), 200);
            let mut body = response.into_body();
            let mut got = Vec::new();
            let mut ended = None;
            while let Some(chunk) = body.data().await {
                match chunk {
                    Ok(c) => got.extend_from_slice(&c),
                    Err(e) => {
                        ended = Some(e.reason());
                        break;
                    }
                }
            }
            assert_eq!(got, b"hel");
            assert_eq!(ended, Some(Some(h2::Reason::INTERNAL_ERROR)));
            drop(client);
            conn.abort();
        });
    }

    /// A gRPC answer whose head has a `content-length`, of which the upstream sends a part
    /// and then stalls.
    fn grpc_with_length_then_stall(_head: &str) -> String {
        "HTTP/1.1 200 OK\r\ncontent-type: application/grpc\r\ncontent-length: 100\r\n\r\nhello"
            .to_owned()
    }

    /// A gRPC answer cut short ends with `grpc-status: 14` trailers, which the client must be
    /// able to read: a `content-length` in the HEADERS would make the short stream malformed
    /// (RFC 9113 §8.1.1), a PROTOCOL_ERROR instead of UNAVAILABLE; gRPC frames its messages
    /// itself, so the length is not forwarded.
    #[test]
    fn a_grpc_client_reads_unavailable_from_an_answer_cut_short_that_had_a_length() {
        on_local_runtime(async {
            let (up, up_at) = bound();
            tokio::task::spawn_local(http1_upstream(up, grpc_with_length_then_stall));
            let (listener, at) = bound();
            let yaml = format!(
                r#"
listeners:
  - name: web
    address: {at}
    http:
      virtual_hosts:
        - name: all
          domains: ["*"]
          routes:
            - match: {{ prefix: / }}
              route: {{ cluster: up, timeout: 1s }}
clusters:
  - name: up
    hosts: [ {{ address: "{up_at}" }} ]
"#
            );
            let _engine = serve(&yaml, listener);
            let (mut client, conn) = h2c_client(at).await;
            let request = http::Request::post("http://svc/pkg.Svc/Get")
                .header("content-type", "application/grpc")
                .header("te", "trailers")
                .body(())
                .unwrap();
            let (response, _) = client.send_request(request, true).unwrap();
            let response = answered(response).await;
            assert_eq!(response.status(), 200);
            let length = response.headers().get("content-length").cloned();
            let mut body = response.into_body();
            let got = body_to_end(&mut body).await;
            assert_eq!(got, b"hello");
            let trailers = body
                .trailers()
                .await
                .expect("the stream ends cleanly")
                .expect("the stream ends with trailers");
            assert_eq!(trailers["grpc-status"], "14");
            assert_eq!(length, None);
            drop(client);
            conn.abort();
        });
    }

    /// A 204 whose upstream gave it a length (which a server must not send, RFC 9110 §8.6).
    fn no_content_with_a_length(_head: &str) -> String {
        "HTTP/1.1 204 No Content\r\ncontent-length: 5\r\nx-kept: 1\r\n\r\n".to_owned()
    }

    /// A 204 reaches an HTTP/2 client without the upstream's `content-length`: nghttp2 (curl,
    /// and the clients built on it) resets a 204 with a non-zero one as malformed.
    #[test]
    fn a_204_reaches_an_http2_client_without_a_length() {
        on_local_runtime(async {
            let (up, up_at) = bound();
            tokio::task::spawn_local(http1_upstream(up, no_content_with_a_length));
            let (listener, at) = bound();
            let yaml = format!(
                r#"
listeners:
  - name: web
    address: {at}
    http:
      virtual_hosts:
        - name: all
          domains: ["*"]
          routes: [ {{ match: {{ prefix: / }}, route: {{ cluster: up }} }} ]
clusters:
  - name: up
    hosts: [ {{ address: "{up_at}" }} ]
"#
            );
            let _engine = serve(&yaml, listener);
            let (mut client, conn) = h2c_client(at).await;
            let request = http::Request::get("http://svc/up").body(()).unwrap();
            let (response, _) = client.send_request(request, true).unwrap();
            let response = answered(response).await;
            assert_eq!(response.status(), 204);
            assert_eq!(response.headers()["x-kept"], "1");
            assert!(response.headers().get("content-length").is_none());
            assert!(response.into_body().is_end_stream());
            drop(client);
            conn.abort();
        });
    }

    /// An upstream that passes on every read (head and body as they come) and answers `200`
    /// once a chunked body's end (its last chunk and trailer section) is in.
    async fn recording_upstream(
        l: tokio::net::TcpListener,
        reads: tokio::sync::mpsc::UnboundedSender<Vec<u8>>,
    ) {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        loop {
            let (mut s, _) = l.accept().await.unwrap();
            let reads = reads.clone();
            tokio::task::spawn_local(async move {
                let mut have = Vec::new();
                let mut buf = vec![0u8; 4096];
                loop {
                    let n = s.read(&mut buf).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    have.extend_from_slice(&buf[..n]);
                    let _ = reads.send(buf[..n].to_vec());
                    let Some(h) = have.windows(4).position(|w| w == b"\r\n\r\n") else {
                        continue;
                    };
                    let body = &have[h + 4..];
                    let last =
                        body.starts_with(b"0\r\n") || body.windows(5).any(|w| w == b"\r\n0\r\n");
                    if last && body.ends_with(b"\r\n\r\n") {
                        s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                            .await
                            .unwrap();
                        have.clear();
                    }
                }
            });
        }
    }

    /// Collects what the upstream read until `want` is in it.
    async fn upstream_got(
        reads: &mut tokio::sync::mpsc::UnboundedReceiver<Vec<u8>>,
        got: &mut Vec<u8>,
        want: &[u8],
    ) {
        while !got.windows(want.len()).any(|w| w == want) {
            let read = tokio::time::timeout(std::time::Duration::from_secs(10), reads.recv())
                .await
                .expect("the upstream got it in time")
                .expect("the upstream is up");
            got.extend_from_slice(&read);
        }
    }

    /// What the upstream read, once it answered (it passed on every read before): the body,
    /// after the head.
    fn body_read(
        reads: &mut tokio::sync::mpsc::UnboundedReceiver<Vec<u8>>,
        mut got: Vec<u8>,
    ) -> String {
        while let Ok(read) = reads.try_recv() {
            got.extend_from_slice(&read);
        }
        let h = got.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
        String::from_utf8_lossy(&got[h + 4..]).into_owned()
    }

    /// An HTTP/2 request body of unknown length goes to an HTTP/1.1 upstream framed once, by
    /// the path's body copy, from the DATA and trailers as the stream hands them over: each
    /// DATA one chunk, the trailers (without the fields a trailer must not carry) the chunked
    /// trailer section — whether the body streams (its first DATA goes upstream before the
    /// client sent the rest) or was all here. The body's chunk framing is never scanned back
    /// (no `ChunkedDecoder` runs over it: the stream no longer re-frames its DATA as chunks
    /// for the path to decode).
    #[test]
    fn an_http2_request_body_is_framed_for_the_upstream_once() {
        on_local_runtime(async {
            let (up, up_at) = bound();
            let (tx, mut reads) = tokio::sync::mpsc::unbounded_channel();
            tokio::task::spawn_local(recording_upstream(up, tx));
            let (listener, at) = bound();
            let yaml = format!(
                r#"
listeners:
  - name: web
    address: {at}
    http:
      virtual_hosts:
        - name: all
          domains: ["*"]
          routes: [ {{ match: {{ prefix: / }}, route: {{ cluster: up }} }} ]
clusters:
  - name: up
    hosts: [ {{ address: "{up_at}" }} ]
"#
            );
            let _engine = serve(&yaml, listener);
            crate::http::REQUEST_CHUNK_SCANS.with(|n| n.set(0));
            let (mut client, conn) = h2c_client(at).await;
            let status_of = async |response: h2::client::ResponseFuture| {
                let response = answered(response).await;
                response.status().as_u16()
            };

            // Streamed: the rest is sent only once the first DATA reached the upstream.
            let request = http::Request::post("http://svc/upload").body(()).unwrap();
            let (response, mut body) = client.send_request(request, false).unwrap();
            body.send_data(bytes::Bytes::from_static(b"hello"), false)
                .unwrap();
            let mut got = Vec::new();
            // The whole chunk, its CRLF too: an upstream reading chunk by chunk has it all
            // before the client sends more (a duplex upload's next piece may wait for its
            // answer).
            upstream_got(&mut reads, &mut got, b"hello\r\n").await;
            body.send_data(bytes::Bytes::from_static(b"world!"), false)
                .unwrap();
            let mut trailers = http::HeaderMap::new();
            trailers.insert("x-checksum", "abc".parse().unwrap());
            trailers.insert("authorization", "secret".parse().unwrap());
            body.send_trailers(trailers).unwrap();
            assert_eq!(status_of(response).await, 200);
            assert_eq!(
                body_read(&mut reads, got),
                "5\r\nhello\r\n6\r\nworld!\r\n0\r\nx-checksum: abc\r\n\r\n"
            );

            // All of it sent at once (held, or streamed: the same bytes either way).
            let request = http::Request::put("http://svc/upload").body(()).unwrap();
            let (response, mut body) = client.send_request(request, false).unwrap();
            body.send_data(bytes::Bytes::from_static(b"abc"), false)
                .unwrap();
            body.send_data(bytes::Bytes::from_static(b"de"), true)
                .unwrap();
            assert_eq!(status_of(response).await, 200);
            assert_eq!(
                body_read(&mut reads, Vec::new()),
                "3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
            );

            assert_eq!(
                crate::http::REQUEST_CHUNK_SCANS.with(std::cell::Cell::get),
                0,
                "an HTTP/2 request body's chunk framing was scanned back"
            );
            drop(client);
            conn.abort();
        });
    }

    /// A 4 KiB answer (`content-length`), one upstream read.
    fn four_kib(_head: &str) -> String {
        format!(
            "HTTP/1.1 200 OK\r\ncontent-length: 4096\r\n\r\n{}",
            "0123456789abcdef".repeat(256)
        )
    }

    /// A client that grants 1-byte stream windows gets its answer byte by byte, 4096 DATA
    /// frames, and the sink copies each payload byte once (into its buffer): a frame is split
    /// off the buffer's front, not copied out with the rest shifted down after it (4096 bytes
    /// so would cost 8,390,656 copied).
    #[test]
    fn one_byte_windows_cost_one_copy_per_payload_byte() {
        on_local_runtime(async {
            let (up, up_at) = bound();
            tokio::task::spawn_local(http1_upstream(up, four_kib));
            let (listener, at) = bound();
            let yaml = format!(
                r#"
listeners:
  - name: web
    address: {at}
    http:
      virtual_hosts:
        - name: all
          domains: ["*"]
          routes:
            - match: {{ prefix: / }}
              route: {{ cluster: up }}
clusters:
  - name: up
    hosts: [ {{ address: "{up_at}" }} ]
"#
            );
            let _engine = serve(&yaml, listener);
            let tcp = tokio::net::TcpStream::connect(at).await.unwrap();
            let (mut client, conn) = h2::client::Builder::new()
                .initial_window_size(1)
                .handshake::<_, bytes::Bytes>(tcp)
                .await
                .unwrap();
            let conn = tokio::task::spawn_local(conn);
            SINK_BYTES_COPIED.with(|c| c.set(0));
            let request = http::Request::get("http://svc/").body(()).unwrap();
            let (response, _) = client.send_request(request, true).unwrap();
            let response = response.await.expect("answered, not reset");
            assert_eq!(response.status(), 200);
            let mut body = response.into_body();
            let (mut got, mut frames) = (Vec::new(), 0);
            while let Some(chunk) = body.data().await {
                let chunk = chunk.unwrap();
                let _ = body.flow_control().release_capacity(chunk.len());
                got.extend_from_slice(&chunk);
                frames += 1;
            }
            assert_eq!(got, "0123456789abcdef".repeat(256).as_bytes());
            assert_eq!(frames, 4096, "one byte per DATA frame");
            assert_eq!(SINK_BYTES_COPIED.with(std::cell::Cell::get), 4096);
            drop(client);
            conn.abort();
        });
    }

    /// A chunked answer announcing its trailer in a `trailer` field, with the trailer. The
    /// announcement is spelled `X-Sum` (field names are case-insensitive), unlike the route's
    /// `x-sum`: a client that sees `X-Sum` got the upstream's field, not the route's.
    fn announced_trailer(_head: &str) -> String {
        "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ntrailer: X-Sum\r\n\r\n\
         2\r\nup\r\n0\r\nx-sum: 7\r\n\r\n"
            .to_owned()
    }

    /// `trailer` is not connection-specific in HTTP/2 (RFC 9113 §8.2.2 names `connection`,
    /// `keep-alive`, `proxy-connection`, `transfer-encoding`, `upgrade`, and `te` but as
    /// `trailers` in a request; RFC 9110 §6.6.2 makes `trailer` an end-to-end field): as in
    /// Envoy, whose codecs and header edits leave it alone, a `trailer` the route adds reaches
    /// an HTTP/2 client, in the HEADERS before the trailers it announces (it replaces the
    /// upstream's own, as every field a route adds with the default `append_action`).
    #[test]
    fn a_trailer_field_the_route_adds_reaches_an_http2_client() {
        on_local_runtime(async {
            let (up, up_at) = bound();
            tokio::task::spawn_local(http1_upstream(up, announced_trailer));
            let (listener, at) = bound();
            let yaml = format!(
                r#"
listeners:
  - name: web
    address: {at}
    http:
      virtual_hosts:
        - name: all
          domains: ["*"]
          routes:
            - match: {{ prefix: / }}
              route:
                cluster: up
                response_headers_to_add:
                  - {{ name: trailer, value: x-sum }}
clusters:
  - name: up
    hosts: [ {{ address: "{up_at}" }} ]
"#
            );
            let _engine = serve(&yaml, listener);
            let (mut client, conn) = h2c_client(at).await;
            let request = http::Request::get("http://svc/").body(()).unwrap();
            let (response, _) = client.send_request(request, true).unwrap();
            let response = answered(response).await;
            assert_eq!(response.status(), 200);
            let announced: Vec<&http::HeaderValue> =
                response.headers().get_all("trailer").iter().collect();
            // The route's value alone: not the upstream's (`X-Sum`) instead of it or with it.
            assert_eq!(announced, ["x-sum"]);
            let mut body = response.into_body();
            let got = body_to_end(&mut body).await;
            assert_eq!(got, b"up");
            let trailers = body
                .trailers()
                .await
                .expect("the stream ends cleanly")
                .expect("the stream ends with trailers");
            assert_eq!(trailers["x-sum"], "7");
            drop(client);
            conn.abort();
        });
    }
}
