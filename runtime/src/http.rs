//! The HTTP/1.1 connection manager: the IO half of `sluice_core::http1` (codec and connection
//! policy), `router` and `l7` (the request stream).
//!
//! One task per downstream connection runs [`Engine::http_connection`]:
//!
//! 1. read a request head, sleeping until the core's `ConnectionPolicy` deadline (keep-alive
//!    idle timeout before its first byte, then `request_headers_timeout` until it is complete —
//!    for a connection's first request, `request_headers_timeout` from the accept; the drain
//!    grace); limits answer 431, malformed or ambiguous framing 400, and close the connection —
//!    nothing of such a request goes upstream;
//! 2. normalize its path (`sluice_core::path`; 400 for an encoded slash by default) and route
//!    it on the normalized path, which is also the one forwarded (404 when nothing matches; a
//!    direct response is answered here);
//! 3. forward it: the core's request `Stream` admits it (it takes and gives back every
//!    circuit-breaker unit), picks hosts and decides retries and timeouts, and says what
//!    happened in events, which are the only source of the connect / timeout stats and of the
//!    failures reported to outlier detection; this module gets connections (from the worker's
//!    [`Pool`] or fresh), writes the head with the core's header edits (`l7::edits`) and the
//!    body, reads the response head, and streams the response body by its framing;
//! 4. log it, then serve the next (possibly pipelined) request in order, or close.
//!
//! Buffers: a connection holds its read, upstream-response and write buffers only while a
//! request is in flight. They come from the worker's pool ([`crate::bufpool`]) with a request's
//! first byte; when a response is out and the next request is not there yet (a read would
//! wait), they go back, and the wait for the next request borrows a read buffer from the pool
//! for each poll only (`ReadBuffer::fill_first`: no buffer held while idle, no extra read). A
//! busy connection (pipelined or back-to-back requests) keeps them.
//!
//! Parking (issue 15): the connection's task holds only [`Engine::http_connection`]'s small
//! state — the socket, the core's `ConnectionPolicy`, an empty `ReadBuffer`, the drain
//! notification and the wait for a first byte (`await_request`). Everything else a request
//! needs (heads, `Scratch`, the upstream-response and write buffers' slots, the forwarding
//! futures: ~6.6 KB in a debug build) is the request path's future,
//! `serve_http_connection`, boxed when a request's first bytes are there — a connection
//! that sends nothing never makes it. It serves request after request while the connection is
//! busy; once a response is out and no request came within the policy's park grace
//! (`IDLE_PARK_GRACE`, 1 s: the same wait and one timer, whose first deadline is the park,
//! then the idle timeout or the drain grace), it returns and is dropped, and the connection
//! waits on with the small state (`http1.downstream_cx_parked` counts it). So a busy
//! connection allocates nothing per request for it; a connection idle past the grace costs
//! what one that sent nothing costs. Nothing allocated once the first bytes are in outlives
//! that future (the sniffed bytes are freed once copied, the `awaiting_response` flag is made
//! with it): what a parked connection frees is a whole region, not holes between live chunks.
//! Invariants: the box is made only with a request's bytes in `rbuf`, and lives no longer
//! than the grace past a response; a parked connection holds no buffer (`rbuf` is empty and
//! unallocated); the policy's deadlines go on across a park (parking is not a new wait).
//!
//! A body that arrived whole with its head (at most [`REPLAY_LIMIT`]) is held and goes out with
//! the head; any other streams as it arrives (a watch, a slow uploader, a gRPC stream: nothing
//! waits for the body's end), and a copy of what was sent is kept up to [`REPLAY_LIMIT`] (Envoy's
//! rule). A streamed body that ended within it is replayable from then on (the core's
//! `BodyBuffered`): a retry sends head and copy whole, as for a held body. One that outgrew it is
//! not retried once written. A try that fails while the body is still arriving, its copy whole
//! so far: when the core says a replayable body would make it retried
//! (`Stream::retry_wants_body`: a refused stream, a stale pooled connection, a reset under
//! `retry_on` of an idempotent request; `Stream::response_wants_body` for an answer that came
//! early with a status `retry_on` names, a 503 under `5xx`, which is then dropped or forwarded
//! as the core decides), the upload is **detached** (`Detach`: nothing more
//! goes upstream) and run to the body's end, reading the rest into the copy (each read within
//! `stream_idle_timeout`, all of it within `DETACHED_BODY_WAIT`, 3 s: a client that waits for
//! an answer before it sends more gets the failure's answer then); if it ended within
//! [`REPLAY_LIMIT`] the core gets `BodyBuffered`
//! and `RequestComplete`, then the failure, and decides (the retry sends head and copy whole);
//! if it outgrew the copy, the failure is decided with the body not replayable (502), and a
//! client's fault meanwhile is answered as such (408, 400). A write to the upstream that fails
//! while the copy is whole detaches the upload too (it goes on reading into the copy, for the
//! try's failure that follows); the connection is then not reused. Not for gRPC (its client may
//! wait for answers before it sends more). Envoy instead replays the part it kept and streams
//! the rest onto the new try. The route timeout starts once the request is complete; until
//! then each body read must come within `stream_idle_timeout` (else 408), the answer's bytes to
//! the client counting as activity too.
//!
//! A streamed body is sent **full duplex**: once the head went out, the rest of the body is an
//! upload future that `Engine::alongside` polls with every step of the response path (reading
//! the head, copying the body), so an upstream may answer and stream before the body ends (gRPC
//! bidi calls, watches, early answers). Both directions share each side's connection through
//! `Shared` handles (a `RefCell` borrowed for one poll at a time, in one task: no lock, no
//! allocation); the request buffer is lent to the upload whole. Invariants: `RequestComplete`
//! goes to the core when the upload ends, whenever that is; an answer that ends first drops the
//! upload (an HTTP/2 upstream stream is reset; an HTTP/1.1 connection is never pooled with a
//! body half sent) and the client's HTTP/1.1 connection is not kept (`connection: close` when
//! the body was still open at the response head); a client's body failing mid-answer aborts the
//! call. A held (or replayed) body, and an upgrade's, go out whole before the answer is read. A request's trailer section loses the fields a trailer must not carry. `Expect: 100-continue` is
//! answered by the proxy itself when it starts reading the body (the header is not forwarded).
//! An `Upgrade` request whose response is `101` turns the connection into a byte tunnel.

use std::cell::{Cell, RefCell};
use std::future::{Future, poll_fn};
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use sluice_core::cluster::HostId;
use sluice_core::config::ListenerConfig;
use sluice_core::config::header_format::FormatContext;
use sluice_core::config::http::{
    ForwardAction, HttpCodec, HttpConfig, PathMatch, RouteAction, RouteUpgrade, ServerHeader,
    ServerHeaderTransformation, upgrade_allowed,
};
use sluice_core::health::{Permit, Resource, UpstreamResult};
use sluice_core::host::HostRef;
use sluice_core::http1::conn::{ConnectionPolicy, ConnectionSettings, Expired, keeps_alive};
use sluice_core::http1::{
    BodyFraming, Chunked, ChunkedDecoder, Head, HeadEdits, HttpError, Limits, Method, ParseStatus,
    Version, parse_request, parse_response, write_local_response, write_request_head,
    write_response_head, write_trailers,
};
use sluice_core::l7::edits::{
    HeaderEdits, RequestFacts, format_request_id, forwarded_for, has_variables, request_edits,
};
use sluice_core::l7::exchange::{
    Event as ExchangeEvent, ExchangeConfig, ResponseFlag, RetryPolicyView, TryFailure, status_for,
};
use sluice_core::l7::grpc::{self, is_grpc};
use sluice_core::l7::stream::{Event as StreamEvent, Input, Output, Stream};
use sluice_core::lb::request_hash;
use sluice_core::path::{PathNormalization, normalize_path_into};
use sluice_core::router::{pick_cluster, rewrite_prefix};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::time::Instant as TokioInstant;

use crate::access_log::Entry;
use crate::bufpool::{BufPool, READ_BUFFER};
use crate::downstream::{Alpn, Downstream};
use crate::engine::Engine;
use crate::h2_upstream::{H2Upstream, Peer, is_refused};
use crate::net::Network;
use crate::now;
use crate::shared_io::Shared;
use crate::stats::{WorkerStats, bump, gauge_add};
use crate::tls::MaybeTls;
use crate::upstreams::ClusterRef;
use crate::upstreams::ConnectError;
use sluice_core::http2::te_wants_trailers;

/// Request bodies up to this size are held, or a copy of them kept as they stream, so that a
/// retry can resend them.
pub const REPLAY_LIMIT: usize = 64 * 1024;

/// The longest a failed try waits for the rest of a small streamed body to make it replayable
/// (the detached upload: see the module docs); past it the failure is answered as for a body
/// that cannot be replayed.
const DETACHED_BODY_WAIT: Duration = Duration::from_secs(3);
/// Limits for upstream response heads.
const RESPONSE_LIMITS: Limits = Limits {
    max_head_bytes: 64 * 1024,
    max_headers: 256,
};
const READ_CHUNK: usize = READ_BUFFER;
/// The `grpc-timeout` value written upstream before each try's time left is known: as wide as
/// the longest value (8 digits and a unit), rewritten in place.
const GRPC_TIMEOUT_SLOT: &[u8] = b"99999999H";

/// Writes `left` as a `grpc-timeout` value into its slot, padded with spaces (optional
/// whitespace after a field value, which HTTP/1.1 and the HTTP/2 adapter drop).
/// The field a virtual host with `include_request_attempt_count` adds to each try, as written
/// (the value follows in a slot of [`ATTEMPT_COUNT_SLOT`]'s width, rewritten before each try).
const ATTEMPT_COUNT_FIELD: &[u8] = b"x-envoy-attempt-count: ";
/// Two digits, right-aligned (a leading space is optional whitespace to every HTTP parser): a
/// request has at most 1 + 10 retries + the stale resend + 3 unprocessed resends tries.
const ATTEMPT_COUNT_SLOT: &[u8] = b" 1";

/// Writes try number `n` (from 1) into an attempt-count slot.
fn write_attempt_count(slot: &mut [u8], n: u32) {
    let n = n.min(99) as u8;
    slot[0] = if n >= 10 { b'0' + n / 10 } else { b' ' };
    slot[1] = b'0' + n % 10;
}

fn write_grpc_timeout(slot: &mut [u8], left: Duration) {
    let mut buf = [0u8; 9];
    let value = grpc::format_grpc_timeout(left, &mut buf);
    slot.fill(b' ');
    slot[..value.len()].copy_from_slice(value);
}
const MAX_TRAILER_BYTES: usize = 16 * 1024;
/// Capacity a per-request copy in a kept [`Scratch`] may keep (see [`Scratch::shed`]).
pub(crate) const KEPT_SCRATCH: usize = 4 * 1024;
/// Interim (1xx) responses accepted before the final one (Go's limit); one more is a 502 and
/// the upstream connection is closed, so that an endless `100 Continue` stream cannot pin a
/// worker for the whole route timeout.
const MAX_INTERIM_RESPONSES: u32 = 5;

/// A growable read buffer: bytes `start..end` of `data` are unconsumed. It allocates nothing
/// until the first read (an idle connection that never sends holds no buffer).
pub(crate) struct ReadBuffer {
    data: Vec<u8>,
    start: usize,
    end: usize,
}

impl ReadBuffer {
    pub(crate) fn new() -> Self {
        ReadBuffer {
            data: Vec::new(),
            start: 0,
            end: 0,
        }
    }

    pub(crate) fn bytes(&self) -> &[u8] {
        &self.data[self.start..self.end]
    }

    /// Starts with these bytes (already read from the connection).
    pub(crate) fn preload(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            self.clear();
            return;
        }
        if self.data.len() < bytes.len() {
            self.data.resize(bytes.len().max(READ_CHUNK), 0);
        }
        self.data[..bytes.len()].copy_from_slice(bytes);
        self.start = 0;
        self.end = bytes.len();
    }

    fn len(&self) -> usize {
        self.end - self.start
    }

    fn is_empty(&self) -> bool {
        self.start == self.end
    }

    fn consume(&mut self, n: usize) {
        debug_assert!(n <= self.len());
        self.start += n;
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    pub(crate) fn clear(&mut self) {
        self.start = 0;
        self.end = 0;
    }

    /// Like [`ReadBuffer::fill`], but while it holds no buffer it waits for the first bytes
    /// without keeping one: each poll borrows a buffer from `pool` for the read itself and gives
    /// it back when nothing came, so a connection that sends nothing, or is idle between
    /// requests, holds none — and a request costs no extra read (a one-byte read on the stack
    /// first cost one more `read` per request on a keep-alive connection).
    async fn fill_first<R: AsyncRead + Unpin>(
        &mut self,
        r: &mut R,
        pool: &BufPool,
    ) -> io::Result<usize> {
        if !self.data.is_empty() {
            return self.fill(r).await;
        }
        poll_fn(|cx| {
            let mut buf = pool.take_read();
            let mut rb = ReadBuf::new(&mut buf);
            match Pin::new(&mut *r).poll_read(cx, &mut rb) {
                Poll::Ready(Ok(())) => {
                    let n = rb.filled().len();
                    if n == 0 {
                        pool.untake_read(buf);
                    } else {
                        self.data = buf;
                        self.start = 0;
                        self.end = n;
                    }
                    Poll::Ready(Ok(n))
                }
                Poll::Ready(Err(e)) => {
                    pool.untake_read(buf);
                    Poll::Ready(Err(e))
                }
                Poll::Pending => {
                    pool.untake_read(buf);
                    Poll::Pending
                }
            }
        })
        .await
    }

    /// Whether it holds a buffer.
    pub(crate) fn is_allocated(&self) -> bool {
        !self.data.is_empty()
    }

    /// Takes a buffer from `pool` if it holds none.
    pub(crate) fn ensure(&mut self, pool: &BufPool) {
        if self.data.is_empty() {
            self.data = pool.take_read();
            self.start = 0;
            self.end = 0;
        }
    }

    /// Gives its buffer back to `pool` when no unread byte is in it (else keeps it).
    pub(crate) fn release(&mut self, pool: &BufPool) {
        if self.is_empty() && !self.data.is_empty() {
            pool.give_read(std::mem::take(&mut self.data));
            self.start = 0;
            self.end = 0;
        }
    }

    /// Reads once more into the buffer (making room first); returns bytes read (0 = EOF).
    async fn fill<R: AsyncRead + Unpin>(&mut self, r: &mut R) -> io::Result<usize> {
        if self.end == self.data.len() {
            if self.start > 0 {
                self.data.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            } else {
                let grown = (self.data.len() * 2).max(READ_CHUNK);
                self.data.resize(grown, 0);
            }
        }
        let n = r.read(&mut self.data[self.end..]).await?;
        self.end += n;
        Ok(n)
    }
}

/// An upstream connection, counted in its host's `cx_active` gauge from connect to drop
/// (pooled idle time included). Reads and writes go straight to the stream.
pub(crate) struct UpstreamConn<S> {
    stream: S,
    stats: Arc<WorkerStats>,
    cluster: u32,
    host: u32,
    /// The connection's unit of the cluster's `max_connections` breaker, given back on drop.
    _connection_unit: Option<BreakerUnit>,
}

impl<S> UpstreamConn<S> {
    fn new(
        stream: S,
        stats: &Arc<WorkerStats>,
        cluster: usize,
        host: usize,
        connection_unit: Option<BreakerUnit>,
    ) -> Self {
        if let Some(h) = stats.host(cluster, host) {
            bump(&h.cx_total, 1);
            gauge_add(&h.cx_active, true);
        }
        UpstreamConn {
            stream,
            stats: stats.clone(),
            cluster: cluster as u32,
            host: host as u32,
            _connection_unit: connection_unit,
        }
    }
}

/// The upstream of one try: an HTTP/1.1 connection (pooled between requests), or a stream on
/// a pooled HTTP/2 connection seen as one ([`crate::h2_upstream`]).
pub(crate) enum Upstream<S> {
    Http1(UpstreamConn<S>),
    Http2(Box<H2Upstream>),
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for Upstream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Upstream::Http1(c) => Pin::new(c).poll_read(cx, buf),
            Upstream::Http2(s) => Pin::new(&mut **s).poll_read(cx, buf),
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Upstream<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Upstream::Http1(c) => Pin::new(c).poll_write(cx, buf),
            Upstream::Http2(s) => Pin::new(&mut **s).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Upstream::Http1(c) => Pin::new(c).poll_write_vectored(cx, bufs),
            Upstream::Http2(s) => Pin::new(&mut **s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Upstream::Http1(c) => c.is_write_vectored(),
            Upstream::Http2(_) => false,
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Upstream::Http1(c) => Pin::new(c).poll_flush(cx),
            Upstream::Http2(s) => Pin::new(&mut **s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Upstream::Http1(c) => Pin::new(c).poll_shutdown(cx),
            Upstream::Http2(s) => Pin::new(&mut **s).poll_shutdown(cx),
        }
    }
}

/// How a step of the response path ([`Engine::alongside`]) ended.
enum Alongside<T> {
    Done(T),
    /// A timer of the request's stream fired (its `Timeout` input not given yet).
    Timeout,
    /// The client's side of the streamed body failed (the try is over).
    UploadFailed(UploadFault),
}

/// One unit of a cluster's circuit breaker, given back when dropped (on every path out of a
/// request, and when an upstream connection closes).
pub(crate) struct BreakerUnit {
    cluster: ClusterRef,
    permit: Option<Permit>,
}

impl BreakerUnit {
    /// Takes a unit of `resource`, or `None` (counted by the breaker) at its limit.
    pub(crate) fn acquire(cluster: &ClusterRef, resource: Resource) -> Option<Self> {
        let permit = cluster
            .borrow_mut()
            .breakers_mut()
            .try_acquire(resource)
            .ok()?;
        Some(BreakerUnit {
            cluster: cluster.clone(),
            permit: Some(permit),
        })
    }
}

impl BreakerUnit {
    /// Wraps a unit already taken (by the core's request stream) so that it is given back on
    /// drop.
    pub(crate) fn adopt(cluster: &ClusterRef, permit: Permit) -> Self {
        BreakerUnit {
            cluster: cluster.clone(),
            permit: Some(permit),
        }
    }
}

/// A request's stream (`sluice_core::l7::stream`) with its cluster: when dropped unfinished (the
/// request's future dropped midway), it aborts the stream, which gives back every breaker unit
/// it holds — the stream does the accounting, the guard only makes sure it is told.
struct StreamGuard {
    stream: Stream,
    cluster: ClusterRef,
    /// A new connection's max_connections unit, between the stream handing it over and the
    /// connection taking it.
    connection_permit: Option<Permit>,
    /// The host of the latest try as it was picked (id and slot epoch): what the try's
    /// results and its connection are for, even if a DNS answer gives the slot to another
    /// host before they come back.
    picked: Option<HostRef>,
    /// How the latest try's host is reached (its slot's transport when it was picked, as
    /// `picked`): which of the cluster's `transport_socket_matches`, or its own `tls`.
    transport: sluice_core::host::Transport,
}

impl StreamGuard {
    fn new(cluster: &ClusterRef, stream: Stream) -> Self {
        StreamGuard {
            stream,
            cluster: cluster.clone(),
            connection_permit: None,
            picked: None,
            transport: None,
        }
    }

    /// The new connection's max_connections unit, held until the connection closes.
    fn take_connection_unit(&mut self) -> Option<BreakerUnit> {
        self.connection_permit
            .take()
            .map(|p| BreakerUnit::adopt(&self.cluster, p))
    }

    fn poll_timeout(&self) -> Option<sluice_core::Instant> {
        self.stream.poll_timeout()
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        if self.stream.is_finished() && self.connection_permit.is_none() {
            return;
        }
        // Never dropped while the cluster is borrowed (borrows last one statement).
        let Some(mut cluster) = self.cluster.try_borrow_mut() else {
            debug_assert!(
                false,
                "request stream dropped while its cluster is borrowed"
            );
            return;
        };
        if let Some(p) = self.connection_permit.take() {
            cluster.breakers_mut().release(p);
        }
        // The stream needs an rng only to pick hosts, which an abort never does.
        let mut rng = sluice_core::rng::Rng::from_seed(0);
        self.stream
            .handle_input(now(), Input::Abort, &mut cluster, &mut rng);
        while self.stream.poll_output().is_some() {}
    }
}

impl Drop for BreakerUnit {
    fn drop(&mut self) {
        if let Some(p) = self.permit.take() {
            // Never dropped while the cluster is borrowed: borrows in the drivers last one
            // statement. A failed borrow would leak one unit, so it is a bug: assert it.
            match self.cluster.try_borrow_mut() {
                Some(mut c) => c.breakers_mut().release(p),
                None => {
                    debug_assert!(false, "breaker unit dropped while its cluster is borrowed")
                }
            }
        }
    }
}

impl<S> Drop for UpstreamConn<S> {
    fn drop(&mut self) {
        if let Some(h) = self.stats.host(self.cluster as usize, self.host as usize) {
            gauge_add(&h.cx_active, false);
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for UpstreamConn<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for UpstreamConn<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// What happened to one request, for the log and the keep-alive decision.
pub(crate) struct Outcome {
    pub(crate) status: u16,
    pub(crate) flag: Option<ResponseFlag>,
    pub(crate) upstream: Option<SocketAddr>,
    pub(crate) bytes_received: u64,
    pub(crate) bytes_sent: u64,
    /// The downstream connection can carry another request.
    pub(crate) reusable: bool,
}

impl Outcome {
    fn local(status: u16, flag: ResponseFlag, sent: usize) -> Self {
        Outcome {
            status,
            flag: Some(flag),
            upstream: None,
            bytes_received: 0,
            bytes_sent: sent as u64,
            reusable: false,
        }
    }
}

pub(crate) fn far_future() -> TokioInstant {
    TokioInstant::now() + Duration::from_secs(86_400 * 365)
}

fn deadline_of(at: Option<sluice_core::Instant>) -> TokioInstant {
    at.map_or_else(far_future, crate::to_tokio)
}

pub(crate) fn local_body(flag: ResponseFlag) -> &'static [u8] {
    match flag {
        ResponseFlag::NoRoute => b"no route matched the request\n",
        ResponseFlag::NoHealthyUpstream => b"no healthy upstream\n",
        ResponseFlag::UpstreamConnectFailure => b"upstream connect error\n",
        ResponseFlag::UpstreamConnectionTermination => {
            b"upstream connect error or disconnect/reset before headers\n"
        }
        ResponseFlag::UpstreamTimeout => b"upstream request timeout\n",
        ResponseFlag::UpstreamOverflow => b"upstream overflow\n",
        ResponseFlag::UpstreamProtocolError => b"upstream sent a malformed response\n",
        ResponseFlag::DownstreamProtocolError => b"bad request\n",
        ResponseFlag::DownstreamLimit => b"request header limits exceeded\n",
        ResponseFlag::UpgradeRefused => b"upgrade refused\n",
        ResponseFlag::DirectResponse => b"",
    }
}

/// `%PROTOCOL%`: how the request came.
fn downstream_protocol(http2: bool, version: Version) -> &'static str {
    match (http2, version) {
        (true, _) => "HTTP/2",
        (false, Version::Http10) => "HTTP/1.0",
        (false, Version::Http11) => "HTTP/1.1",
    }
}

/// `%HOSTNAME%`: the machine's host name, read once (empty where it cannot be read).
fn hostname() -> &'static str {
    static HOSTNAME: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HOSTNAME.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_default()
    })
}

/// Per-connection buffers reused by every request (no allocation per request once warm).
pub(crate) struct Scratch {
    /// The client's IP as text, for `x-forwarded-for` (computed once per connection).
    peer_ip: String,
    /// The client's IP (for a `source_ip` hash policy).
    peer_addr: std::net::IpAddr,
    /// The client's address and port (`%DOWNSTREAM_REMOTE_ADDRESS%` and kin).
    peer: SocketAddr,
    /// The route's request / response header values with variables, rendered for this
    /// request (reused; untouched by routes without variables).
    rendered_request: sluice_core::l7::edits::Rendered,
    rendered_response: sluice_core::l7::edits::Rendered,
    /// `x-forwarded-for` when the request already had one.
    xff: Vec<u8>,
    /// A rewritten path.
    path: Vec<u8>,
    /// The request's normalized path, when it differs from the path as sent.
    norm: Vec<u8>,
    /// `norm` holds this request's path.
    normalized: bool,
    /// The listener's path normalization.
    path_opts: PathNormalization,
    /// The listener's `stream_idle_timeout`: the longest wait for the next bytes of a body.
    stream_idle: Option<Duration>,
    /// Set while a request waits for its upstream with nothing of a response sent yet (what a
    /// drain deadline answers 503).
    awaiting: Rc<Cell<bool>>,
    /// The `x-request-id` generated for this request (it had none), as forwarded upstream;
    /// valid when `request_id_generated` (reset for every request): the access log shows it.
    request_id: [u8; 36],
    request_id_generated: bool,
    /// The request came over TLS: its scheme is `https` (`x-forwarded-proto`).
    over_tls: bool,
    /// The listener's `forwarded_proto`: whether the client's `x-forwarded-proto` is kept.
    forwarded_proto: sluice_core::config::http::ForwardedProto,
    /// The listener's `forward_client_cert`.
    forward_client_cert: sluice_core::config::http::ForwardClientCert,
    /// The listener's `server_name` and `upgrade_types`, shared by its connections.
    listener_http: Rc<ListenerHttp>,
    /// The connection's `x-forwarded-client-cert` element when it is mTLS (empty when the
    /// listener writes none), built once per connection ([`Engine::client_cert_element`]);
    /// `None` otherwise. Set by the connection's driver.
    pub(crate) client_cert: Option<Rc<[u8]>>,
    /// An appended `x-forwarded-client-cert` (reused).
    xfcc: Vec<u8>,
    /// Where a captured connection was going (`original_dst`): an `original_dst` cluster sends
    /// its requests there. Set by the connection's driver.
    pub(crate) original_dst: Option<SocketAddr>,
    /// The request came over HTTP/2 (set for the streams of [`crate::http2`]): a
    /// `protocol: downstream` cluster sends it up in HTTP/2.
    pub(crate) downstream_http2: bool,
    /// The cluster this request was routed to and the upstream tries it made (reset for every
    /// request), for the access log.
    pub(crate) cluster: Option<usize>,
    pub(crate) tries: u32,
    /// This request's span and its trace headers (with `tracing`; reset for every request).
    pub(crate) trace: crate::otlp::RequestTrace,
    /// The request is gRPC (`content-type: application/grpc*`): the proxy's own answers are
    /// trailers-only gRPC responses, and `grpc-timeout` caps the route timeout.
    pub(crate) grpc: bool,
    /// Where the value of the `grpc-timeout` the proxy writes upstream starts in the request
    /// bytes (a fixed-width slot rewritten to the time left before each try).
    grpc_timeout_at: Option<usize>,
    /// The request's virtual host has `include_request_attempt_count`.
    include_attempt_count: bool,
    /// Where the value of the `x-envoy-attempt-count` the proxy writes upstream starts in the
    /// request bytes (a slot rewritten with the try's number before each try).
    attempt_count_at: Option<usize>,
    /// The `grpc-status` of a gRPC request's forwarded answer (its trailers-only head or its
    /// trailers), for the access log.
    grpc_status: Option<u8>,
    /// A gRPC request's answer from an HTTP/1.1 upstream: its chunked trailer section as it
    /// was forwarded (read for `grpc-status`; reused, at most `MAX_TRAILER_BYTES` + 2).
    grpc_trailers: Vec<u8>,
    /// A streamed request body's copy for retries, as written upstream (at most
    /// [`REPLAY_LIMIT`]; reused).
    replay: Vec<u8>,
}

/// The HTTP settings of a listener (a serving slot) that its requests read beyond the small
/// copied ones in [`Scratch`]: the `server` header its answers get and the upgrades it lets
/// through. They cannot change under a live connection (a new config is a new engine, with
/// new slots), so they are built once per slot with the engine
/// ([`crate::engine::serving::Serving::listener_http`]) and shared by the slot's connections
/// (an `Rc` clone where a connection or HTTP/2 stream takes its scratch): a request looks no
/// config up and copies nothing for them (it takes a refcount of its scratch's, non-atomic,
/// to hold it while the scratch is lent out).
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct ListenerHttp {
    /// `server_name` and `server_header_transformation`; `None`: the upstream's `server`
    /// passes as it is.
    pub(crate) server: Option<ServerHeader>,
    /// `upgrade_types`; `None`: every upgrade is let through.
    pub(crate) upgrade_types: Option<Vec<String>>,
}

impl ListenerHttp {
    pub(crate) fn new(hc: &HttpConfig) -> Self {
        ListenerHttp {
            server: hc.server_header.clone(),
            upgrade_types: hc.upgrade_types.clone(),
        }
    }
}

impl Scratch {
    /// The request id this request went upstream with: the one generated for it, or the
    /// client's own (empty when the request did not get that far).
    pub(crate) fn forwarded_request_id<'a>(&'a self, head: &Head, buf: &'a [u8]) -> &'a [u8] {
        if self.request_id_generated {
            &self.request_id[..]
        } else {
            head.header(buf, "x-request-id").unwrap_or(b"")
        }
    }

    /// The `GRPC_STATUS` of a gRPC request that ended with `outcome`: the proxy's own answer's
    /// (a trailers-only gRPC answer), else the upstream's; `None` for other requests.
    pub(crate) fn logged_grpc_status(&self, outcome: &Outcome) -> Option<u8> {
        if !self.grpc {
            return None;
        }
        match outcome.flag {
            Some(flag) if flag != ResponseFlag::DirectResponse => {
                Some(grpc::local_status(flag, status_for(flag)).code())
            }
            _ => self.grpc_status,
        }
    }

    /// Forgets what the previous request left that this one's access log entry, span or answer
    /// would read: the one place the per-request state is cleared. Called once per request by
    /// its codec where the request starts, before anything can end it — the HTTP/1.1
    /// connection loop once a head is read, an HTTP/2 stream as soon as it has its state (a
    /// stream reset before the request path ran, or refused before routing, is logged with its
    /// own empty state, not an earlier stream's, possibly another client's). The request path
    /// (`serve_request`) checks it was called, in debug builds.
    pub(crate) fn begin_request(&mut self) {
        self.request_id_generated = false;
        self.cluster = None;
        self.tries = 0;
        self.trace.hop = None;
        self.grpc = false;
        self.grpc_timeout_at = None;
        self.attempt_count_at = None;
        self.grpc_status = None;
        self.normalized = false;
    }

    /// The per-request state is as [`Scratch::begin_request`] leaves it.
    fn request_begun(&self) -> bool {
        !self.request_id_generated
            && self.cluster.is_none()
            && self.tries == 0
            && self.trace.hop.is_none()
            && !self.grpc
            && self.grpc_timeout_at.is_none()
            && self.attempt_count_at.is_none()
            && self.grpc_status.is_none()
            && !self.normalized
    }

    /// Frees what only some requests grow (a streamed body's replay copy, a gRPC answer's
    /// trailers) and the per-request copies that grew past [`KEPT_SCRATCH`] (a long
    /// `x-forwarded-for` or path): a scratch kept for later requests holds a few KiB at most.
    pub(crate) fn shed(&mut self) {
        self.replay = Vec::new();
        self.grpc_trailers = Vec::new();
        for v in [
            &mut self.xff,
            &mut self.path,
            &mut self.norm,
            &mut self.xfcc,
        ] {
            if v.capacity() > KEPT_SCRATCH {
                *v = Vec::new();
            }
        }
    }

    /// Makes a scratch kept from an earlier HTTP/2 stream (of any connection of the worker)
    /// serve a stream of `peer`'s connection: its connection's fields as [`Scratch::new`] would
    /// have made them (the client's IP is formatted again only when it differs). The earlier
    /// request's own state is cleared where the stream begins its request
    /// ([`Scratch::begin_request`]).
    pub(crate) fn rebind(
        &mut self,
        peer: SocketAddr,
        hc: &HttpConfig,
        listener_http: &Rc<ListenerHttp>,
        over_tls: bool,
    ) {
        if self.peer_addr != peer.ip() || self.peer_ip.is_empty() {
            use std::fmt::Write as _;
            self.peer_ip.clear();
            let _ = write!(self.peer_ip, "{}", peer.ip());
            self.peer_addr = peer.ip();
        }
        self.peer = peer;
        self.path_opts = hc.path_normalization;
        self.stream_idle = hc.stream_idle_timeout;
        self.awaiting.set(false);
        self.over_tls = over_tls;
        self.forwarded_proto = hc.forwarded_proto;
        self.forward_client_cert = hc.forward_client_cert;
        if !Rc::ptr_eq(&self.listener_http, listener_http) {
            self.listener_http = Rc::clone(listener_http);
        }
        self.client_cert = None;
        self.original_dst = None;
    }

    pub(crate) fn new(
        peer: SocketAddr,
        hc: &HttpConfig,
        listener_http: &Rc<ListenerHttp>,
        awaiting: Rc<Cell<bool>>,
        over_tls: bool,
    ) -> Self {
        Scratch {
            peer_ip: peer.ip().to_string(),
            peer_addr: peer.ip(),
            peer,
            rendered_request: Default::default(),
            rendered_response: Default::default(),
            xff: Vec::new(),
            path: Vec::new(),
            norm: Vec::new(),
            normalized: false,
            path_opts: hc.path_normalization,
            stream_idle: hc.stream_idle_timeout,
            awaiting,
            request_id: [0; 36],
            request_id_generated: false,
            over_tls,
            forwarded_proto: hc.forwarded_proto,
            forward_client_cert: hc.forward_client_cert,
            listener_http: Rc::clone(listener_http),
            client_cert: None,
            xfcc: Vec::new(),
            original_dst: None,
            downstream_http2: false,
            cluster: None,
            tries: 0,
            trace: crate::otlp::RequestTrace::default(),
            grpc: false,
            grpc_timeout_at: None,
            include_attempt_count: false,
            attempt_count_at: None,
            grpc_status: None,
            grpc_trailers: Vec::new(),
            replay: Vec::new(),
        }
    }
}

/// Gives an idle HTTP/1.1 connection's buffers back to the worker's pool (a read buffer that
/// still holds bytes is kept), and frees the per-request copies that only some requests grow
/// (a streamed body's replay copy, a gRPC answer's trailers).
fn release_idle(
    pool: &BufPool,
    rbuf: &mut ReadBuffer,
    ubuf: &mut ReadBuffer,
    out: &mut Vec<u8>,
    scratch: &mut Scratch,
) {
    rbuf.release(pool);
    ubuf.clear();
    ubuf.release(pool);
    pool.give_write(std::mem::take(out));
    scratch.shed();
}

/// How the wait for a request's first byte ended.
enum Waited {
    /// Bytes of a request are in the read buffer.
    Bytes,
    /// Clean end of the connection between requests (EOF, idle timeout, drain).
    Closed,
    /// A new connection sent nothing within `request_headers_timeout` of its accept.
    FirstByteTimeout,
    /// No request within `IDLE_PARK_GRACE` of the last response: park (the wait goes on).
    Park,
}

/// How the request head ended up.
enum HeadRead {
    Ready,
    /// Idle past the park grace (see [`Waited::Park`]).
    Park,
    /// Clean end of the connection between requests (EOF, idle timeout, drain).
    Closed,
    /// A new connection sent nothing within `request_headers_timeout` of its accept.
    FirstByteTimeout,
    /// A local answer, then close.
    Reject(u16, ResponseFlag, String),
}

impl<N: Network> Engine<N> {
    /// Serves one downstream HTTP/1.1 connection until it closes.
    /// Serves one downstream HTTP/1.1 connection; `initial` holds bytes already read from it
    /// (by protocol detection), served before the stream's own.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn http_connection(
        &self,
        listener: usize,
        lc: &ListenerConfig,
        hc: &HttpConfig,
        mut down: Downstream<N::Stream>,
        peer: SocketAddr,
        initial: &[u8],
        original_dst: Option<SocketAddr>,
        accepted: sluice_core::Instant,
    ) {
        // Over TLS, ALPN picks the codec: `h2` is HTTP/2 from the first byte, `http/1.1` is
        // HTTP/1.1. Otherwise (cleartext, no ALPN), with `codec: auto | http2`, a connection
        // that starts with the HTTP/2 client preface is served by the HTTP/2 driver
        // (crate::http2); anything else is HTTP/1.1 here. The first request's header timeout
        // counts from the accept (`accepted`), TLS handshake and detection included.
        let alpn = down.alpn();
        if alpn == Alpn::Http2 {
            if crate::http2::accepts_http2(hc.codec) {
                return Box::pin(self.http2_connection(
                    listener,
                    lc,
                    hc,
                    down,
                    peer,
                    initial.to_vec(),
                    original_dst,
                ))
                .await;
            }
            // The config offers `h2` only on listeners that serve it; never HTTP/1.1 to a
            // client that was promised HTTP/2.
            let _ = down.shutdown().await;
            return;
        }
        let mut sniffed = Vec::new();
        let initial = if alpn == Alpn::None && crate::http2::accepts_http2(hc.codec) {
            match crate::http2::sniff(self, &mut down, initial, hc).await {
                crate::http2::Sniffed::Http2(preface) => {
                    return Box::pin(self.http2_connection(
                        listener,
                        lc,
                        hc,
                        down,
                        peer,
                        preface,
                        original_dst,
                    ))
                    .await;
                }
                crate::http2::Sniffed::Http1(_) if hc.codec == HttpCodec::Http2 => {
                    tracing::debug!(listener = %lc.name, %peer, "not HTTP/2 on an http2-only listener: closed");
                    let _ = down.shutdown().await;
                    return;
                }
                crate::http2::Sniffed::Http1(bytes) => {
                    sniffed = bytes;
                    &sniffed[..]
                }
                crate::http2::Sniffed::FirstByteTimeout => {
                    bump(&self.stats().downstream_cx_first_byte_timeout, 1);
                    if let Some(l) = self.listener_stats(listener) {
                        bump(&l.downstream_cx_first_byte_timeout, 1);
                    }
                    tracing::debug!(listener = %lc.name, %peer, "no request within request_headers_timeout of the accept: closed");
                    let _ = down.shutdown().await;
                    return;
                }
                crate::http2::Sniffed::Closed => {
                    let _ = down.shutdown().await;
                    return;
                }
            }
        } else {
            initial
        };
        // Once a drain's `drain_timeout` has passed, the connection ends wherever it is, as TCP
        // and Bolt sessions do: the drain must end on time. A request still waiting for its
        // upstream (nothing of a response sent yet) is answered 503 with `connection: close`
        // first — a clean answer, not a connection closed under it; its upstream connection
        // closes with it. (A deadline that passed before this point — during the TLS
        // handshake's last steps or the sniff — is seen by the flag: `drain_expired` only wakes
        // those already waiting.)
        if self.lifecycle.drain_deadline_passed() {
            tracing::debug!(%peer, "drain timeout passed; closing the HTTP connection");
            let _ = down.shutdown().await;
            return;
        }
        let mut expired = std::pin::pin!(self.lifecycle.drain_expired());
        let client_cert = self.client_cert_element(listener, hc, &down);
        // What the connection keeps while it is parked (or has sent nothing yet): its policy
        // (when to wait and for how long: see sluice_core::http1::conn) and its read buffer,
        // which holds no memory then. The request path's state is a boxed future made when a
        // request's first bytes are there, kept while the connection is busy and dropped when
        // it parks (issue 15; `IDLE_PARK_GRACE` after a response with no next request).
        let mut policy = ConnectionPolicy::new(
            accepted,
            ConnectionSettings {
                request_headers_timeout: hc.request_headers_timeout,
                idle_timeout: hc.idle_timeout,
            },
            self.lifecycle.is_stopping(),
        );
        let mut rbuf = ReadBuffer::new();
        if !initial.is_empty() && initial.len() <= READ_BUFFER {
            rbuf.ensure(&self.http_buffers);
        }
        rbuf.preload(initial);
        // Nothing allocated once the first bytes are in outlives the request path's state:
        // what a parked connection frees is then whole, not holes between live chunks.
        drop(std::mem::take(&mut sniffed));
        // `Some(awaiting_response)` when the drain deadline passed (see above), else `None`.
        let drained = loop {
            if rbuf.is_empty() {
                // Parked, or nothing sent yet: the wait for a request's first byte holds
                // only this function's small state.
                let wait = self.await_request(&mut down, &mut rbuf, &mut policy);
                let waited = tokio::select! {
                    biased;
                    () = expired.as_mut() => break Some(false),
                    w = wait => w,
                };
                match waited {
                    Waited::Bytes => {}
                    Waited::Closed => break None,
                    Waited::FirstByteTimeout => {
                        self.first_byte_timeout(listener, lc, peer);
                        break None;
                    }
                    // Only after a response, never in this wait.
                    Waited::Park => continue,
                }
            }
            // True while a request is being served and nothing of its response has reached
            // the client yet; made (and freed) with the request path's state.
            let awaiting_response = Rc::new(Cell::new(false));
            // Boxed in a statement of its own (a temporary would live across the `select!`
            // and be laid out in this future too).
            let serve = Box::pin(self.serve_http_connection(
                listener,
                lc,
                hc,
                &mut down,
                peer,
                &mut rbuf,
                &mut policy,
                original_dst,
                client_cert.as_ref(),
                &awaiting_response,
            ));
            let parked = tokio::select! {
                biased;
                () = expired.as_mut() => break Some(awaiting_response.get()),
                p = serve => p,
            };
            if !parked {
                break None;
            }
            bump(&self.stats().http1_cx_parked, 1);
        };
        if let Some(awaiting_response) = drained {
            tracing::debug!(%peer, awaiting_response, "drain timeout passed; closing the HTTP connection");
            if awaiting_response {
                let mut out = Vec::new();
                let server_field = ServerHeader::local_field(hc.server_header.as_ref());
                write_local_response(
                    &mut out,
                    503,
                    server_field.as_slice(),
                    b"the proxy is shutting down\n",
                    true,
                );
                let _ = write_flushed(&mut down, &out).await;
                self.count_status(listener, 503);
                bump(&self.stats().http_local_replies, 1);
            }
        }
        rbuf.clear();
        rbuf.release(&self.http_buffers);
        let _ = down.shutdown().await;
    }

    /// Counts and logs a connection closed because its first request did not start within
    /// `request_headers_timeout` of the accept.
    fn first_byte_timeout(&self, listener: usize, lc: &ListenerConfig, peer: SocketAddr) {
        bump(&self.stats().downstream_cx_first_byte_timeout, 1);
        if let Some(l) = self.stats().listener(listener) {
            bump(&l.downstream_cx_first_byte_timeout, 1);
        }
        tracing::debug!(listener = %lc.name, %peer, "no request within request_headers_timeout of the accept: closed");
    }

    /// Serves the connection's requests, the first of which has bytes in `rbuf`, until the
    /// connection ends (`false`) or parks (`true`: no request came within the policy's park
    /// grace; `rbuf` then holds no buffer). Everything a request needs besides `rbuf` and
    /// `policy` lives in this future, made again when a parked connection gets a request.
    /// `awaiting_response` is true while a request is being served and nothing of its
    /// response has reached the client yet.
    #[allow(clippy::too_many_arguments)]
    async fn serve_http_connection(
        &self,
        listener: usize,
        lc: &ListenerConfig,
        hc: &HttpConfig,
        down: &mut Downstream<N::Stream>,
        peer: SocketAddr,
        rbuf: &mut ReadBuffer,
        policy: &mut ConnectionPolicy,
        original_dst: Option<SocketAddr>,
        client_cert: Option<&Rc<[u8]>>,
        awaiting_response: &Rc<Cell<bool>>,
    ) -> bool {
        let limits = Limits {
            max_head_bytes: hc.max_request_headers_kb as usize * 1024,
            max_headers: hc.max_headers_count as usize,
        };
        // The connection's buffers come from the worker's pool while a request is in flight
        // and go back to it when the connection goes idle (see `release_idle` below).
        let pool = &self.http_buffers;
        let mut ubuf = ReadBuffer::new();
        let mut head = Head::default();
        let mut rhead = Head::default();
        let mut out: Vec<u8> = Vec::new();
        let listener_http = self
            .serving
            .listener_http(listener)
            .expect("an http listener has its HTTP settings");
        let mut scratch = Scratch::new(
            peer,
            hc,
            listener_http,
            awaiting_response.clone(),
            down.is_tls(),
        );
        scratch.original_dst = original_dst;
        scratch.client_cert = client_cert.cloned();
        let logging = self.serving.access_log(listener).is_some();
        let mut parked = false;
        loop {
            let lstats = self.listener_stats(listener);
            // Between requests: a connection whose next request is not there yet (a read would
            // wait) is idle and gives its buffers back; a busy one (pipelined or back-to-back
            // requests) keeps them. The idle wait is `fill_first` (a buffer borrowed per poll).
            if rbuf.is_empty() && rbuf.is_allocated() {
                let read = poll_fn(|cx| {
                    let mut fill = std::pin::pin!(rbuf.fill(&mut *down));
                    Poll::Ready(match fill.as_mut().poll(cx) {
                        Poll::Ready(r) => Some(r),
                        Poll::Pending => None,
                    })
                })
                .await;
                if !matches!(read, Some(Ok(n)) if n > 0) {
                    // Nothing yet, or the end: the wait below reads it again (the end twice).
                    release_idle(pool, rbuf, &mut ubuf, &mut out, &mut scratch);
                }
            }
            let mut first_byte_at = None;
            let head_read = self
                .read_request_head(
                    &limits,
                    &mut *down,
                    rbuf,
                    &mut head,
                    policy,
                    &mut first_byte_at,
                )
                .await;
            // The access log's start and duration count from the request's first byte (Envoy's
            // START_TIME), not from when the connection began waiting for it: a keep-alive
            // connection's idle time is no part of its next request.
            let (started, t0) = match first_byte_at {
                Some(at) if logging => {
                    let waited = now().saturating_duration_since(at);
                    let wall = SystemTime::now();
                    (wall.checked_sub(waited).unwrap_or(wall), Some(at))
                }
                _ => (SystemTime::UNIX_EPOCH, None),
            };
            match head_read {
                HeadRead::Closed => break,
                HeadRead::Park => {
                    parked = true;
                    break;
                }
                HeadRead::FirstByteTimeout => {
                    self.first_byte_timeout(listener, lc, peer);
                    break;
                }
                HeadRead::Reject(status, flag, why) => {
                    out.clear();
                    let server_field = ServerHeader::local_field(hc.server_header.as_ref());
                    write_local_response(
                        &mut out,
                        status,
                        server_field.as_slice(),
                        why.as_bytes(),
                        true,
                    );
                    let _ = write_flushed(down, &out).await;
                    bump(&self.stats().http_local_replies, 1);
                    self.count_status(listener, status);
                    if let Some(l) = lstats {
                        bump(&l.http_local_replies, 1);
                        bump(&l.downstream_bytes_received, rbuf.len() as u64);
                        bump(&l.downstream_bytes_sent, out.len() as u64);
                    }
                    if let Some(log) = self.serving.access_log(listener) {
                        log.borrow_mut().log(&Entry {
                            start: started,
                            method: b"-",
                            path: b"-",
                            protocol: "HTTP/1.1",
                            status,
                            flag: Some(flag.code()),
                            bytes_received: rbuf.len() as u64,
                            bytes_sent: out.len() as u64,
                            duration_ms: t0
                                .map_or(0, |t| now().duration_since(t).as_millis() as u64),
                            upstream: None,
                            request_id: b"",
                            downstream: peer,
                            listener: &lc.name,
                            original_dst,
                            request: None,
                            cluster: None,
                            tries: 0,
                            close_reason: None,
                            server_name: None,
                            trace_id: None,
                            grpc_status: None,
                        });
                    }
                    tracing::debug!(listener = %lc.name, %peer, status, "rejected request: {why}");
                    break;
                }
                HeadRead::Ready => {}
            }
            bump(&self.stats().http_requests, 1);
            if let Some(l) = lstats {
                bump(&l.http_requests, 1);
            }
            // Back from idle: the buffers the request path needs, from the pool.
            ubuf.ensure(pool);
            if out.capacity() == 0 {
                out = pool.take_write();
            }
            scratch.begin_request();
            let t_head = now();
            let outcome = self
                .serve_request(
                    listener,
                    &mut *down,
                    &mut scratch,
                    rbuf,
                    &head,
                    &mut ubuf,
                    &mut rhead,
                    &mut out,
                )
                .await;
            scratch.awaiting.set(false);
            let rq_time = now().saturating_duration_since(t_head);
            self.stats().downstream_rq_time.record(rq_time);
            if let Some(l) = lstats {
                l.downstream_rq_time.record(rq_time);
            }
            self.count_status(listener, outcome.status);
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
            let log = self.serving.access_log(listener);
            if log.is_some() || scratch.trace.hop.is_some_and(|h| h.sampled) {
                let buf = rbuf.bytes();
                let protocol = match head.version() {
                    Version::Http10 => "HTTP/1.0",
                    Version::Http11 => "HTTP/1.1",
                };
                let request_id = scratch.forwarded_request_id(&head, buf);
                let entry = Entry {
                    start: started,
                    method: head.method_bytes(buf),
                    path: head.target(buf),
                    protocol,
                    status: outcome.status,
                    flag: outcome.flag.map(ResponseFlag::code),
                    bytes_received: outcome.bytes_received,
                    bytes_sent: outcome.bytes_sent,
                    duration_ms: t0.map_or(0, |t| now().duration_since(t).as_millis() as u64),
                    upstream: outcome.upstream,
                    request_id,
                    downstream: peer,
                    listener: &lc.name,
                    original_dst,
                    request: Some((&head, buf)),
                    cluster: scratch
                        .cluster
                        .map(|c| self.config.clusters[c].name.as_str()),
                    tries: scratch.tries,
                    close_reason: None,
                    server_name: None,
                    trace_id: scratch.trace.trace_id(),
                    grpc_status: scratch.logged_grpc_status(&outcome),
                };
                if let Some(log) = log {
                    log.borrow_mut().log(&entry);
                }
                self.finish_span(&scratch.trace, &entry);
            }
            // The request (head and any body) is done with: drop it from the buffer; what
            // remains is the next, pipelined, request.
            rbuf.consume(head.head_len().min(rbuf.len()));
            // A response that went out without `connection: close` promised the client it may
            // send another request, even if the engine started draining meanwhile (keep-alive
            // is decided when the upstream head arrives): keep that promise. The policy gives a
            // draining connection DRAIN_IDLE_GRACE (sluice_core::http1::conn) for that request,
            // answered with `connection: close`; closing here would reset a request already on
            // its way.
            if !policy.handle_response_done(now(), outcome.reusable, self.lifecycle.is_stopping()) {
                break;
            }
        }
        if !parked {
            rbuf.clear();
        }
        release_idle(pool, rbuf, &mut ubuf, &mut out, &mut scratch);
        parked
    }

    pub(crate) fn count_status(&self, listener: usize, status: u16) {
        let class = (status / 100).clamp(1, 5) as usize - 1;
        bump(&self.stats().http_responses_by_class[class], 1);
        if let Some(l) = self.listener_stats(listener) {
            bump(&l.http_responses_by_class[class], 1);
        }
    }

    /// Waits for a request's first byte into `rbuf` (which holds no buffer meanwhile: see
    /// [`ReadBuffer::fill_first`]), until the policy's deadline: the first request's from the
    /// accept, the idle timeout, or the drain grace — and, after a response, until the park
    /// (see sluice_core::http1::conn). Only a connection's task polls it.
    async fn await_request(
        &self,
        down: &mut Downstream<N::Stream>,
        rbuf: &mut ReadBuffer,
        policy: &mut ConnectionPolicy,
    ) -> Waited {
        loop {
            let stop = self.lifecycle.stop_accepting();
            let draining = self.lifecycle.is_stopping();
            let read = tokio::select! {
                biased;
                () = stop, if !draining => {
                    policy.handle_drain(now());
                    continue;
                }
                () = tokio::time::sleep_until(deadline_of(policy.poll_timeout())) => {
                    match policy.handle_timeout(now()) {
                        None => continue,
                        Some(Expired::Park) => return Waited::Park,
                        Some(Expired::FirstByteTimeout) => return Waited::FirstByteTimeout,
                        Some(_) => return Waited::Closed,
                    }
                }
                r = rbuf.fill_first(down, &self.http_buffers) => r,
            };
            return match read {
                Ok(0) | Err(_) => {
                    policy.handle_closed();
                    Waited::Closed
                }
                Ok(_) => Waited::Bytes,
            };
        }
    }

    async fn read_request_head(
        &self,
        limits: &Limits,
        down: &mut Downstream<N::Stream>,
        rbuf: &mut ReadBuffer,
        head: &mut Head,
        policy: &mut ConnectionPolicy,
        first_byte_at: &mut Option<sluice_core::Instant>,
    ) -> HeadRead {
        // Idle between requests: wait for the first byte (pipelined bytes already buffered
        // skip the wait), or park.
        if rbuf.is_empty() {
            match self.await_request(down, rbuf, policy).await {
                Waited::Bytes => {}
                Waited::Closed => return HeadRead::Closed,
                Waited::FirstByteTimeout => return HeadRead::FirstByteTimeout,
                Waited::Park => return HeadRead::Park,
            }
        }
        let at = now();
        *first_byte_at = Some(at);
        policy.handle_first_byte(at);
        let deadline = deadline_of(policy.poll_timeout());
        loop {
            match parse_request(rbuf.bytes(), limits, head) {
                Ok(ParseStatus::Complete) => {
                    policy.handle_head_complete();
                    return HeadRead::Ready;
                }
                Ok(ParseStatus::Partial) => {}
                Err(e) => {
                    policy.handle_closed();
                    return reject(&e);
                }
            }
            let read = tokio::select! {
                biased;
                () = tokio::time::sleep_until(deadline) => {
                    policy.handle_timeout(now());
                    return HeadRead::Reject(408, ResponseFlag::DownstreamLimit, "request headers not received in time\n".into());
                }
                r = rbuf.fill(down) => r,
            };
            match read {
                Ok(0) | Err(_) => {
                    policy.handle_closed();
                    return HeadRead::Closed;
                }
                Ok(_) => {}
            }
        }
    }

    /// Routes and answers one request whose head is parsed in `head` (from `rbuf`). `down` is
    /// the downstream as an HTTP/1.1 byte stream: the client's connection, or an HTTP/2 stream
    /// seen through [`crate::http2`]'s adapter (request body in, response out).
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn serve_request<D: AsyncRead + AsyncWrite + Unpin>(
        &self,
        listener: usize,
        down: &mut D,
        scratch: &mut Scratch,
        rbuf: &mut ReadBuffer,
        head: &Head,
        ubuf: &mut ReadBuffer,
        rhead: &mut Head,
        out: &mut Vec<u8>,
    ) -> Outcome {
        let router = self
            .serving
            .router(listener)
            .expect("http listener has a router");
        debug_assert!(
            scratch.request_begun(),
            "the codec begins each request (Scratch::begin_request)"
        );
        if let Some(tracer) = &self.tracer {
            self.decide_span(tracer, head, rbuf.bytes(), &mut scratch.trace);
        }
        // The listener's `server`, on the proxy's own answers as on forwarded ones, and its
        // `upgrade_types`: the connection's (a refcount, no lookup in the config).
        let listener_http = Rc::clone(&scratch.listener_http);
        let server = listener_http.server.as_ref();
        scratch.grpc = head
            .header(rbuf.bytes(), "content-type")
            .is_some_and(is_grpc);
        // The normalized path is what is routed and forwarded (in scratch.norm when it differs).
        let opts = scratch.path_opts;
        scratch.normalized =
            match normalize_path_into(head.path(rbuf.bytes()), &opts, &mut scratch.norm) {
                Ok(changed) => changed,
                Err(_) => {
                    let flag = ResponseFlag::DownstreamProtocolError;
                    return self
                        .local_reply(scratch.grpc, server, down, out, 400, flag, true)
                        .await;
                }
            };
        let route = {
            let buf = rbuf.bytes();
            let host = head.host(buf).unwrap_or(b"");
            let path = if scratch.normalized {
                &scratch.norm[..]
            } else {
                head.path(buf)
            };
            router.route(host, path, &|name| head.header(buf, name))
        };
        let has_body = !matches!(head.framing(), BodyFraming::None);
        let Some(route) = route else {
            return self
                .local_reply(
                    scratch.grpc,
                    server,
                    down,
                    out,
                    404,
                    ResponseFlag::NoRoute,
                    has_body,
                )
                .await;
        };
        // An upgrade of a type the listener does not list (or the route's `upgrade_configs`
        // disables): 403, and the connection closed (what follows the head may be the upgraded
        // protocol's bytes), as Envoy does. Every `Upgrade` field counts: the HTTP/1.1 writer
        // forwards them all, and the upstream may pick any protocol they name.
        let upgrade_types = listener_http.upgrade_types.as_deref();
        let route_upgrades = match &route.route.action {
            RouteAction::Forward(action) => &action.upgrade_configs[..],
            RouteAction::DirectResponse { .. } => &[],
        };
        if head.upgrade()
            && !upgrade_allowed(
                upgrade_types,
                route_upgrades,
                head.header_values(rbuf.bytes(), "upgrade"),
            )
        {
            if let Some(l) = self.listener_stats(listener) {
                bump(&l.http_upgrades_refused, 1);
            }
            return self
                .local_reply(
                    scratch.grpc,
                    server,
                    down,
                    out,
                    403,
                    ResponseFlag::UpgradeRefused,
                    true,
                )
                .await;
        }
        match &route.route.action {
            RouteAction::DirectResponse { status, body } => {
                out.clear();
                let close = has_body || !head.keep_alive() || self.lifecycle.is_stopping();
                let server_field = ServerHeader::local_field(server);
                write_local_response(
                    out,
                    *status,
                    server_field.as_slice(),
                    body.as_bytes(),
                    close,
                );
                let ok = write_flushed(down, out).await.is_ok();
                Outcome {
                    status: *status,
                    flag: Some(ResponseFlag::DirectResponse),
                    upstream: None,
                    bytes_received: head.head_len() as u64,
                    bytes_sent: out.len() as u64,
                    reusable: ok && !close,
                }
            }
            RouteAction::Forward(action) => {
                scratch.include_attempt_count = route.virtual_host.include_request_attempt_count;
                let prefix = match &route.route.matcher.path {
                    PathMatch::Prefix(p) => Some(p.as_str()),
                    _ => None,
                };
                self.forward(action, prefix, down, scratch, rbuf, head, ubuf, rhead, out)
                    .await
            }
        }
    }

    /// What connection `down` (of serving slot `slot`) gives `x-forwarded-client-cert`, once
    /// per connection: `None` when the client presented no certificate (not mTLS); else this
    /// hop's element ([`sluice_core::l7::xfcc::element`]) when `forward_client_cert` writes one,
    /// empty otherwise.
    pub(crate) fn client_cert_element(
        &self,
        slot: usize,
        hc: &HttpConfig,
        down: &Downstream<N::Stream>,
    ) -> Option<Rc<[u8]>> {
        use std::fmt::Write as _;
        let cert = down.peer_certificate()?;
        if !hc.forward_client_cert.sets_element() {
            return Some(Rc::from(&[][..]));
        }
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, cert.as_ref());
        let mut hash_hex = String::with_capacity(64);
        for b in digest.as_ref() {
            let _ = write!(hash_hex, "{b:02x}");
        }
        let id = sluice_core::tls::pem::peer_identity(cert.as_ref()).unwrap_or_else(|e| {
            tracing::debug!(error = %e, "client certificate not parsed for x-forwarded-client-cert");
            sluice_core::tls::pem::PeerIdentity {
                subject: String::new(),
                uri_sans: Vec::new(),
                dns_sans: Vec::new(),
            }
        });
        let contexts = self.tls.current();
        let by = contexts.local_uri_sans(slot, down.server_name());
        // `Cert` / `Chain`: the DER of what the client sent (only when asked for).
        let details = hc.set_current_client_cert_details;
        let chain: Vec<&[u8]> = if details.cert || details.chain {
            down.peer_certificates()
                .unwrap_or_default()
                .iter()
                .map(AsRef::as_ref)
                .collect()
        } else {
            Vec::new()
        };
        let peer = sluice_core::l7::xfcc::PeerCert {
            hash_hex: &hash_hex,
            subject: &id.subject,
            uri_sans: &id.uri_sans,
            dns_sans: &id.dns_sans,
            chain: &chain,
        };
        Some(Rc::from(sluice_core::l7::xfcc::element(
            by,
            &peer,
            hc.set_current_client_cert_details,
        )))
    }

    /// Answers the request from the proxy: `status` with a short text, or for a gRPC request
    /// (`grpc`) a trailers-only gRPC answer (HTTP 200) with the matching `grpc-status`; both
    /// carry the listener's `server` ([`ServerHeader::local_field`]).
    #[allow(clippy::too_many_arguments)]
    async fn local_reply<D: AsyncWrite + Unpin>(
        &self,
        grpc: bool,
        server: Option<&ServerHeader>,
        down: &mut D,
        out: &mut Vec<u8>,
        status: u16,
        flag: ResponseFlag,
        close: bool,
    ) -> Outcome {
        // Draining: the client must reconnect for its next request.
        let close = close || self.lifecycle.is_stopping();
        let server_field = ServerHeader::local_field(server);
        out.clear();
        let status = if grpc {
            let code = grpc::local_status(flag, status);
            grpc::write_trailers_only(
                out,
                code,
                local_body(flag).trim_ascii_end(),
                server_field.as_slice(),
                close,
            );
            200
        } else {
            write_local_response(
                out,
                status,
                server_field.as_slice(),
                local_body(flag),
                close,
            );
            status
        };
        let ok = write_flushed(down, out).await.is_ok();
        let mut o = Outcome::local(status, flag, out.len());
        o.reusable = ok && !close;
        o
    }

    /// Answers a request whose client failed its body while it was uploading (it stopped
    /// sending, sent a malformed body, or went away): the client's fault, not the upstream's —
    /// the try is aborted with nothing reported to outlier detection (a client must not get a
    /// healthy host ejected), and the client gets the fault's local answer (400 or 408). When
    /// part of the upstream's answer already reached it (`answered`: that answer's status and
    /// the bytes sent), the request ends there instead, flagged with the fault (its connection
    /// is not reused). `upstream` and `bytes_received` are the try's, for the log.
    #[allow(clippy::too_many_arguments)]
    async fn answer_upload_fault<D: AsyncWrite + Unpin>(
        &self,
        ci: usize,
        stream: &mut StreamGuard,
        host: HostId,
        fault: UploadFault,
        grpc: bool,
        server: Option<&ServerHeader>,
        awaiting: &Cell<bool>,
        down: &mut D,
        out: &mut Vec<u8>,
        upstream: Option<SocketAddr>,
        bytes_received: u64,
        answered: Option<(u16, u64)>,
    ) -> Outcome {
        self.stream_input(ci, stream, Input::Abort);
        self.publish_host_active(ci, host);
        let (status, flag) = fault.status();
        awaiting.set(false);
        if let Some((status, bytes_sent)) = answered {
            return Outcome {
                status,
                flag: Some(flag),
                upstream,
                bytes_received,
                bytes_sent,
                reusable: false,
            };
        }
        let mut o = self
            .local_reply(grpc, server, down, out, status, flag, true)
            .await;
        o.upstream = upstream;
        o.bytes_received = bytes_received;
        o
    }

    #[allow(clippy::too_many_arguments)]
    async fn forward<D: AsyncRead + AsyncWrite + Unpin>(
        &self,
        action: &ForwardAction,
        matched_prefix: Option<&str>,
        down: &mut D,
        scratch: &mut Scratch,
        rbuf: &mut ReadBuffer,
        head: &Head,
        ubuf: &mut ReadBuffer,
        rhead: &mut Head,
        out: &mut Vec<u8>,
    ) -> Outcome {
        let target = pick_cluster(&action.target, &mut self.rng.borrow_mut());
        let ci = target.cluster_index;
        scratch.cluster = Some(ci);
        let cluster_cfg = &self.config.clusters[ci];
        let cstats = self.stats().cluster(ci);
        let head_len = head.head_len();
        // The HTTP version of the upstream: the cluster's, or (`protocol: downstream`) the
        // client's.
        let http2 = cluster_cfg.protocol.speaks_http2(scratch.downstream_http2);
        // The listener's `server`, on local replies (held by a refcount: `scratch` is lent out
        // below).
        let listener_http = Rc::clone(&scratch.listener_http);
        let server = listener_http.server.as_ref();

        // --- the request body: buffer it when small enough to replay ---
        let framing = head.framing();
        if head.expect_continue() && !matches!(framing, BodyFraming::None) {
            let _ = write_flushed(down, b"HTTP/1.1 100 Continue\r\n\r\n").await;
        }
        let body_len = match self
            .buffer_body(down, rbuf, head_len, framing, scratch.stream_idle)
            .await
        {
            Ok(b) => b,
            Err(status) => {
                let flag = if status == 408 {
                    ResponseFlag::DownstreamLimit
                } else {
                    ResponseFlag::DownstreamProtocolError
                };
                return self
                    .local_reply(scratch.grpc, server, down, out, status, flag, true)
                    .await;
            }
        };
        let mut body_len = body_len;
        let replayable = body_len.is_some();
        // A streamed body's copy for retries (see `stream_request_body`), this request's only.
        scratch.replay.clear();
        // The copy is whole (the body ended within REPLAY_LIMIT): a retry sends it.
        let mut body_kept = false;

        // --- the upstream head, built once (no heap allocation once the connection is warm) ---
        out.clear();
        let path = if scratch.normalized {
            &scratch.norm[..]
        } else {
            head.path(rbuf.bytes())
        };
        let path_edit = match (&action.prefix_rewrite, matched_prefix) {
            (Some(replacement), Some(prefix)) => {
                rewrite_prefix(path, prefix, replacement, &mut scratch.path);
                Some(scratch.path.as_slice())
            }
            _ => scratch.normalized.then_some(scratch.norm.as_slice()),
        };
        let xff = forwarded_for(
            head.header(rbuf.bytes(), "x-forwarded-for"),
            scratch.peer_ip.as_bytes(),
            &mut scratch.xff,
        );
        let generate_id = head.header(rbuf.bytes(), "x-request-id").is_none();
        if generate_id {
            let mut rng = self.rng.borrow_mut();
            let (a, b) = (rng.next_u64(), rng.next_u64());
            format_request_id(a, b, &mut scratch.request_id);
            scratch.request_id_generated = true;
        }
        let no_host = head.host(rbuf.bytes()).is_none();
        let client_cert = sluice_core::l7::xfcc::edit(
            scratch.forward_client_cert,
            scratch.client_cert.as_deref(),
            head.header_values(rbuf.bytes(), sluice_core::l7::xfcc::XFCC),
            &mut scratch.xfcc,
        );
        // The route's values with variables, rendered now for the response too: every
        // variable is of the request or the connection, and the request's head is at hand.
        for (add, rendered) in [
            (
                &action.request_headers_to_add,
                &mut scratch.rendered_request,
            ),
            (
                &action.response_headers_to_add,
                &mut scratch.rendered_response,
            ),
        ] {
            if has_variables(add) {
                let lookup = |name: &str| head.header(rbuf.bytes(), name);
                rendered.render(
                    add,
                    &FormatContext {
                        downstream_remote: scratch.peer,
                        protocol: downstream_protocol(scratch.downstream_http2, head.version()),
                        hostname: hostname(),
                        request_header: &lookup,
                    },
                );
            }
        }
        let mut edits = HeaderEdits::new();
        request_edits(
            &mut edits,
            &RequestFacts {
                forwarded_for: xff,
                generated_id: generate_id.then_some(&scratch.request_id[..]),
                // HTTP/1.0 without Host (nor an absolute-form target) goes out as HTTP/1.1,
                // which needs one: the cluster's name.
                missing_host: no_host.then_some(cluster_cfg.name.as_bytes()),
                forwarded_proto: scratch.forwarded_proto.value(
                    scratch.over_tls,
                    scratch.forwarded_proto == sluice_core::config::http::ForwardedProto::Preserve
                        && head.header(rbuf.bytes(), "x-forwarded-proto").is_some(),
                ),
                client_cert,
            },
            &action.request_headers_to_remove,
            &action.request_headers_to_add,
            &|name| head.header(rbuf.bytes(), name).is_some(),
            &scratch.rendered_request,
        );
        if scratch.trace.hop.is_some() {
            scratch.trace.headers.edits(&mut edits);
        }
        // HTTP/1.1 drops `te` as hop-by-hop; HTTP/2 keeps `te: trailers` (gRPC needs it).
        if http2
            && head
                .headers(rbuf.bytes())
                .any(|(n, v)| n.eq_ignore_ascii_case(b"te") && te_wants_trailers(v))
        {
            edits.append("te", b"trailers");
        }
        // gRPC: `grpc-timeout` caps the route timeout, and the upstream gets the time left
        // (rewritten in place before each try, in a slot as wide as the longest value).
        let grpc_timeout = if scratch.grpc {
            head.header(rbuf.bytes(), "grpc-timeout")
                .and_then(grpc::parse_grpc_timeout)
        } else {
            None
        };
        let route_timeout = match (action.timeout, grpc_timeout) {
            (Some(route), Some(g)) => Some(route.min(g)),
            (route, g) => route.or(g),
        };
        if scratch.grpc && route_timeout.is_some() {
            edits.set("grpc-timeout", GRPC_TIMEOUT_SLOT);
        }
        if scratch.include_attempt_count {
            edits.set("x-envoy-attempt-count", ATTEMPT_COUNT_SLOT);
        }
        write_request_head(
            out,
            rbuf.bytes(),
            head,
            &HeadEdits {
                path: path_edit,
                remove: edits.removals(),
                add: edits.additions(),
                force_close: false,
                version: Some(Version::Http11),
            },
        );
        scratch.grpc_timeout_at = if scratch.grpc && route_timeout.is_some() {
            out.windows(GRPC_TIMEOUT_SLOT.len())
                .rposition(|w| w == GRPC_TIMEOUT_SLOT)
        } else {
            None
        };
        // The proxy's own field comes after the request's (which `set` removed).
        scratch.attempt_count_at = if scratch.include_attempt_count {
            out.windows(ATTEMPT_COUNT_FIELD.len())
                .rposition(|w| w == ATTEMPT_COUNT_FIELD)
                .map(|at| at + ATTEMPT_COUNT_FIELD.len())
        } else {
            None
        };
        if let Some(n) = body_len {
            // The body goes into the upstream request once; from here on rbuf holds the head
            // (for the log) followed by the next pipelined request.
            let body = &rbuf.bytes()[head_len..head_len + n];
            if framing == BodyFraming::Chunked {
                push_chunked_body(out, body);
            } else {
                out.extend_from_slice(body);
            }
            drop_range(rbuf, head_len, n);
        }

        // --- admission: the max_requests breaker, then the hosts' availability ---
        // The core's stream takes and gives back every breaker unit of the request; the guard
        // aborts it (giving them back) if this future is dropped midway.
        let cluster = &self.upstreams.cluster(ci);
        let close_on_reply = !replayable || !head.keep_alive();
        // An `original_dst` cluster: the request goes where its connection was going (one
        // that was not captured has nowhere to go: 503, never a loop back to the proxy).
        let Ok(destination) =
            crate::transparent::request_destination(cluster_cfg, scratch.original_dst, |name| {
                head.header(rbuf.bytes(), name)
            })
        else {
            return self
                .local_reply(
                    scratch.grpc,
                    server,
                    down,
                    out,
                    503,
                    ResponseFlag::NoHealthyUpstream,
                    close_on_reply,
                )
                .await;
        };
        // gRPC needs HTTP/2 upstream: to an original destination that the cluster speaks
        // HTTP/1.1 to, it is answered UNAVAILABLE at once rather than sent to a server that is
        // most likely gRPC's and cannot understand it.
        if scratch.grpc && destination.is_some() && !http2 {
            tracing::debug!(cluster = %cluster_cfg.name, "gRPC to an original_dst cluster that speaks HTTP/1.1: not forwarded");
            return self
                .local_reply(
                    true,
                    server,
                    down,
                    out,
                    503,
                    ResponseFlag::NoHealthyUpstream,
                    close_on_reply,
                )
                .await;
        }
        let hash = if cluster_cfg.lb_policy.is_consistent_hash() {
            let bytes = rbuf.bytes();
            request_hash(
                &cluster_cfg.hash_policy,
                |name| head.header(bytes, name),
                Some(scratch.peer_addr),
            )
        } else {
            None
        };
        // One clock read for the synchronous steps from here to the first try's connection.
        let admitted_at = now();
        let mut stream = StreamGuard::new(
            cluster,
            Stream::new(
                admitted_at,
                ExchangeConfig {
                    timeout: route_timeout,
                    connect_timeout: cluster_cfg.connect_timeout,
                    retry: action.retry_policy.as_ref().map(RetryPolicyView::from),
                    idempotent: head.method().is_idempotent(),
                    replayable,
                    hash,
                    request_complete: replayable,
                },
            ),
        );
        // What of the request reached the upstream (a streamed body's upload adds to it as it goes,
        // so that an upload cut short still counts what it sent).
        let bytes_received = Cell::new(head_len as u64 + body_len.unwrap_or(0) as u64);
        if let Some(Output::Respond { status, flag }) =
            self.stream_input_at(ci, &mut stream, Input::Admit, admitted_at)
        {
            let mut o = self
                .local_reply(
                    scratch.grpc,
                    server,
                    down,
                    out,
                    status,
                    flag,
                    close_on_reply,
                )
                .await;
            o.bytes_received = bytes_received.get();
            return o;
        }
        if let Some(c) = cstats {
            bump(&c.upstream_rq_total, 1);
        }
        self.upstreams.shared_health().note_traffic(ci);
        self.upstreams.refresh_availability_at(ci, admitted_at);

        // --- tries --- (from here until a response byte is written, a drain deadline answers
        // the request 503 rather than closing under it)
        scratch.awaiting.set(true);
        let mut step = self.stream_input_at(ci, &mut stream, Input::Start, admitted_at);
        let mut upstream_addr = None;
        let mut last_host = None;
        loop {
            let (host, address, allow_pooled) = match step.take() {
                Some(Output::Respond { status, flag }) => {
                    if let Some(h) = last_host {
                        self.publish_host_active(ci, h);
                    }
                    scratch.awaiting.set(false);
                    let mut o = self
                        .local_reply(
                            scratch.grpc,
                            server,
                            down,
                            out,
                            status,
                            flag,
                            close_on_reply,
                        )
                        .await;
                    o.upstream = upstream_addr;
                    o.bytes_received = bytes_received.get();
                    return o;
                }
                Some(Output::Connect {
                    host,
                    address,
                    allow_pooled,
                }) => (host, destination.unwrap_or(address), allow_pooled),
                other => {
                    debug_assert!(other.is_none(), "unexpected stream output {other:?}");
                    // Backing off before a retry; the next pick sees the latest availability.
                    tokio::time::sleep_until(deadline_of(stream.poll_timeout())).await;
                    self.upstreams.refresh_availability(ci);
                    step = self.stream_input(ci, &mut stream, Input::Timeout);
                    continue;
                }
            };
            // The host as picked, and how it is reached (its slot's transport then).
            let (picked, transport) = match stream.picked {
                Some(picked) => (picked, stream.transport),
                None => {
                    let c = self.upstreams.cluster(ci).borrow();
                    (c.host_ref(host), c.transport(host))
                }
            };
            let try_start = now();
            scratch.tries += 1;
            last_host = Some(host);
            upstream_addr = Some(address);
            // Connection: pooled or fresh, raced against the stream's timers. The HTTP/2 pool
            // is per host, and per destination for an original_dst cluster.
            let peer = match destination {
                Some(d) => Peer::Destination(d),
                None => Peer::Host(host.index()),
            };
            // Whether this host is spoken to over TLS (the cluster's `tls`, or the host's pick
            // of `transport_socket_matches`): HTTP/2's `:scheme`. Asked only where an HTTP/2
            // stream starts, not per HTTP/1.1 request.
            let tls_cluster = || matches!(self.tls.current().connector(ci, transport), Ok(Some(_)));
            let pooled = if !allow_pooled {
                None
            } else if http2 {
                let timer = deadline_of(stream.poll_timeout());
                self.upstreams
                    .h2_pool()
                    .wait_for_room(ci, peer, self.stats(), timer)
                    .await
                    .map(|c| {
                        Upstream::Http2(Box::new(H2Upstream::new(c, self.stats(), tls_cluster())))
                    })
            } else {
                match destination {
                    None => self.upstreams.pool().take(ci, host.index(), try_start),
                    Some(d) => self.upstreams.pool().take_to(ci, d, try_start),
                }
                .map(Upstream::Http1)
            };
            let reused = pooled.is_some();
            // The core retries a try on a pooled connection that closed with no answer once
            // (the stale keep-alive race). For HTTP/2 only a connection the upstream closed or
            // reset without a GOAWAY can be stale (known once the try failed, below): a GOAWAY
            // says which streams were processed (the others fail as `Refused`), and a reset
            // stream may have been processed — sent again only if `retry_on` says so.
            let may_be_stale = reused && !http2;
            let mut up = match pooled {
                Some(s) => s,
                None => {
                    // A new connection needs a unit of max_connections (kept by the connection
                    // until it closes) and, while it is being established, of
                    // max_pending_requests. Either at its limit: 503 UO.
                    step = self.stream_input(ci, &mut stream, Input::OpenConnection);
                    if !matches!(step, Some(Output::OpenConnection)) {
                        continue;
                    }
                    // Requests for this host (destination) wait for this connection rather than
                    // open theirs.
                    let _connecting = http2.then(|| self.upstreams.h2_pool().connecting(ci, peer));
                    let timer = deadline_of(stream.poll_timeout());
                    // The connect and, to a TLS cluster, the handshake (the upstream's chain
                    // and identity verified) within the stream's next deadline: a failed
                    // handshake is a connect failure, and nothing of the request is written
                    // before it succeeded. Boxed (once per new upstream connection): the TLS
                    // handshake's state is large and would otherwise be laid out in every
                    // connection's request path.
                    let connected = Box::pin(self.upstreams.connect(
                        &self.tls,
                        ci,
                        transport,
                        address,
                        Some(timer),
                    ))
                    .await;
                    match connected {
                        Ok(s) => {
                            step = self.stream_input(
                                ci,
                                &mut stream,
                                Input::Connected { reused: false },
                            );
                            let unit = stream.take_connection_unit();
                            let conn = UpstreamConn::new(s, self.stats(), ci, host.index(), unit);
                            if http2 {
                                let timer = deadline_of(stream.poll_timeout());
                                let opened = Box::pin(self.open_http2(
                                    ci,
                                    picked,
                                    peer,
                                    conn,
                                    tls_cluster(),
                                    timer,
                                ));
                                match opened.await {
                                    Some(Ok(up)) => up,
                                    Some(Err(())) => {
                                        step = self.stream_input(
                                            ci,
                                            &mut stream,
                                            Input::TryFailed(TryFailure::Closed {
                                                request_written: false,
                                                reused: false,
                                            }),
                                        );
                                        continue;
                                    }
                                    None => {
                                        step = self.stream_input(ci, &mut stream, Input::Timeout);
                                        continue;
                                    }
                                }
                            } else {
                                Upstream::Http1(conn)
                            }
                        }
                        Err(ConnectError::Timeout) => {
                            // The connect deadline, or the route's (which caps it): the
                            // stream's event says which.
                            step = self.stream_input(ci, &mut stream, Input::Timeout);
                            continue;
                        }
                        Err(e) => {
                            tracing::debug!(%address, error = %e, "upstream connect failed");
                            step = self.stream_input(ci, &mut stream, Input::ConnectFailed);
                            continue;
                        }
                    }
                }
            };
            if reused {
                step = self.stream_input(
                    ci,
                    &mut stream,
                    Input::Connected {
                        reused: may_be_stale,
                    },
                );
            }
            debug_assert!(step.is_none(), "unexpected stream output {step:?}");
            if let Some(h) = self.stats().host(ci, host.index()) {
                bump(&h.rq_total, 1);
            }
            self.publish_host_active(ci, host);

            // Send the request and read the response head, raced against the timers. A body
            // that streams (not held for a retry) is sent alongside the response path, full
            // duplex: the upstream may answer, and stream its answer, before the body ends (a
            // gRPC bidirectional call, a watch). Both directions share each side's connection
            // through `Shared` handles (each poll borrows it for its own duration; one task, so
            // never two at once). An upgrade request's body still goes first (its 101 turns the
            // connection into a tunnel).
            if body_kept && body_len.is_none() {
                // A retry of a body an earlier try streamed and kept whole: it goes out with
                // the head, as a held body does (from here on `out` is head and body).
                out.extend_from_slice(&scratch.replay);
                body_len = Some(scratch.replay.len());
            }
            let duplex = body_len.is_none() && !head.upgrade();
            let (outcome, pool_up) = {
                let up_cell = RefCell::new(&mut up);
                let down_cell = RefCell::new(&mut *down);
                // The request buffer, lent whole to the upload of a streamed body once the head
                // went out (the upload reads the client into it); before that, and on a path
                // with no upload (an upgrade's tunnel), used here.
                let mut rbuf_slot = Some(&mut *rbuf);
                let mut no_rbuf = ReadBuffer::new();
                let mut upw = Shared(&up_cell);
                let mut downw = Shared(&down_cell);
                // When answer bytes last went to the client, for the upload's idle timer.
                let answered = Cell::new(TokioInstant::now());
                let answered = duplex.then_some(&answered);
                // Whether the upload still writes upstream, and whether its copy is whole.
                let detach = Detach::default();
                // The rest of a streamed body, once the head went out; `None` when there is
                // none left to send (held, sent, or given up).
                let mut upload = std::pin::pin!(None);
                // The whole request body went upstream (at once, or streamed to its end).
                let mut request_complete = !duplex;
                let mut written = false;
                let mut too_many_interim = false;
                let mut upload_fault = None;
                if let (Some(at), Some(timeout)) = (scratch.grpc_timeout_at, route_timeout) {
                    // The time left of the route's timeout (all of it while the body streams).
                    let left = stream
                        .stream
                        .deadline()
                        .map_or(timeout, |d| d.saturating_duration_since(now()));
                    write_grpc_timeout(&mut out[at..at + GRPC_TIMEOUT_SLOT.len()], left);
                }
                if let Some(at) = scratch.attempt_count_at {
                    write_attempt_count(&mut out[at..at + ATTEMPT_COUNT_SLOT.len()], scratch.tries);
                }
                let timer = deadline_of(stream.poll_timeout());
                ubuf.clear();
                let sent = {
                    let rb = rbuf_slot.as_deref_mut().unwrap_or(&mut no_rbuf);
                    tokio::select! {
                        biased;
                        r = send_request(
                            &mut upw, &mut downw, out, rb, head_len, framing,
                            body_len.is_none() && !duplex, scratch.stream_idle, &mut written,
                            &bytes_received, &mut upload_fault,
                        ) => Some(r),
                        () = tokio::time::sleep_until(timer) => None,
                    }
                };
                // One clock read for the inputs given as the request went out.
                let sent_at = now();
                if written {
                    self.stream_input_at(ci, &mut stream, Input::RequestWritten, sent_at);
                }
                // The response head (the route timeout starts once the whole request is in).
                let result = match sent {
                    Some(Ok(())) => {
                        if duplex && let Some(rb) = rbuf_slot.take() {
                            let (up_w, down_r) = (&up_cell, &down_cell);
                            let idle = scratch.stream_idle;
                            let received = &bytes_received;
                            let detach = &detach;
                            // A body that may fit the replay buffer is copied as it goes.
                            let replay = match framing {
                                BodyFraming::ContentLength(n) if n as usize > REPLAY_LIMIT => None,
                                _ => Some(&mut scratch.replay),
                            };
                            // Boxed: only a streamed body pays for the upload's state; the
                            // request path's future (every request's) holds a pointer.
                            upload.set(Some(Box::pin(async move {
                                stream_request_body(
                                    &mut Shared(up_w),
                                    &mut Shared(down_r),
                                    rb,
                                    head_len,
                                    framing,
                                    idle,
                                    answered,
                                    received,
                                    replay,
                                    detach,
                                )
                                .await
                            })));
                        } else {
                            self.stream_input_at(ci, &mut stream, Input::RequestComplete, sent_at);
                        }
                        let read = read_response_head(
                            &mut upw,
                            ubuf,
                            rhead,
                            head.method(),
                            head.upgrade().then_some((
                                scratch.listener_http.upgrade_types.as_deref(),
                                &action.upgrade_configs[..],
                            )),
                            &mut too_many_interim,
                        );
                        match self
                            .alongside(
                                ci,
                                &mut stream,
                                read,
                                upload.as_mut(),
                                &mut request_complete,
                                &mut body_kept,
                            )
                            .await
                        {
                            Alongside::Done(r) => Some(r),
                            Alongside::Timeout => None,
                            Alongside::UploadFailed(fault) => {
                                upload_fault = Some(fault);
                                Some(Err(TryFailure::Closed {
                                    request_written: true,
                                    reused: false,
                                }))
                            }
                        }
                    }
                    other => other,
                };
                // What the try's failure says to the core: a failure after the head went out
                // was written; a pooled connection may have been stale.
                let result = match result {
                    Some(Err(TryFailure::Closed {
                        request_written, ..
                    })) => Some(Err(TryFailure::Closed {
                        request_written: request_written || written,
                        reused: may_be_stale
                            || (reused
                                && matches!(&**up_cell.borrow(), Upstream::Http2(h) if h.connection_lost())),
                    })),
                    r => r,
                };
                // A try that failed while the body is still arriving, kept whole so far, when
                // the core would retry it were the body replayable: the rest of the body is
                // read into the copy (nothing more goes upstream), each read within
                // `stream_idle_timeout`, and if it ends within REPLAY_LIMIT the body is
                // replayable (`BodyBuffered`) before the core decides. Not for gRPC: its client
                // may wait for answers before it sends more.
                if let Some(Err(failure)) = result
                    && upload_fault.is_none()
                    && upload.is_some()
                    && !scratch.grpc
                    && !detach.lost.get()
                    && stream.stream.retry_wants_body(now(), failure)
                {
                    // The client's own failure is answered as such, below.
                    upload_fault = match self
                        .read_rest_detached(upload.as_mut(), &detach, scratch.stream_idle)
                        .await
                    {
                        Ok(true) => {
                            body_kept = true;
                            self.stream_input(ci, &mut stream, Input::BodyBuffered);
                            self.stream_input(ci, &mut stream, Input::RequestComplete);
                            None
                        }
                        Ok(false) => None,
                        Err(fault) => Some(fault),
                    };
                }
                if let Some(fault) = upload_fault {
                    return self
                        .answer_upload_fault(
                            ci,
                            &mut stream,
                            host,
                            fault,
                            scratch.grpc,
                            server,
                            &scratch.awaiting,
                            &mut downw,
                            out,
                            upstream_addr,
                            bytes_received.get(),
                            None,
                        )
                        .await;
                }
                let Some(result) = result else {
                    // A per-try or the route timeout (the stream's event says which).
                    step = self.stream_input(ci, &mut stream, Input::Timeout);
                    self.publish_host_active(ci, host);
                    continue;
                };
                let status = match result {
                    Ok(()) => rhead.status(),
                    Err(failure) => {
                        if too_many_interim && let Some(c) = cstats {
                            bump(&c.upstream_rq_too_many_interim, 1);
                        }
                        step = self.stream_input(ci, &mut stream, Input::TryFailed(failure));
                        self.publish_host_active(ci, host);
                        continue;
                    }
                };
                self.upstreams
                    .report_upstream_result(ci, picked, UpstreamResult::Status(status));
                if let Some(c) = cstats {
                    let class = (status / 100).clamp(1, 5) as usize - 1;
                    bump(&c.upstream_rq_by_class[class], 1);
                }
                // A gRPC answer's head carries its status when it is trailers-only.
                let grpc_status = if scratch.grpc {
                    rhead
                        .header(ubuf.bytes(), "grpc-status")
                        .and_then(|v| std::str::from_utf8(v).ok()?.trim().parse().ok())
                } else {
                    None
                };
                scratch.grpc_status = grpc_status;
                // An answer that came while the body is still arriving (kept whole so far),
                // which the core would retry were the body replayable (a 503 under `retry_on:
                // 5xx`): as for a failed try, the rest of the body is read into the copy
                // (nothing more goes upstream, within DETACHED_BODY_WAIT) before the core
                // decides. Not for gRPC (its client may wait for answers before it sends more).
                if upload.is_some()
                    && !scratch.grpc
                    && !detach.lost.get()
                    && stream
                        .stream
                        .response_wants_body(now(), status, grpc_status)
                {
                    match self
                        .read_rest_detached(upload.as_mut(), &detach, scratch.stream_idle)
                        .await
                    {
                        Ok(true) => {
                            body_kept = true;
                            self.stream_input(ci, &mut stream, Input::BodyBuffered);
                        }
                        // Not replayable after all: the answer is forwarded, and nothing more
                        // of the request goes (the route timeout starts; neither connection
                        // is reused).
                        Ok(false) => {}
                        Err(fault) => {
                            return self
                                .answer_upload_fault(
                                    ci,
                                    &mut stream,
                                    host,
                                    fault,
                                    scratch.grpc,
                                    server,
                                    &scratch.awaiting,
                                    &mut downw,
                                    out,
                                    upstream_addr,
                                    bytes_received.get(),
                                    None,
                                )
                                .await;
                        }
                    }
                    self.stream_input(ci, &mut stream, Input::RequestComplete);
                }
                let head_input = Input::ResponseHead {
                    status,
                    grpc_status,
                };
                match self.stream_input(ci, &mut stream, head_input) {
                    Some(Output::ForwardResponse) => {}
                    other => {
                        debug_assert_eq!(other, Some(Output::DiscardResponse));
                        self.publish_host_active(ci, host);
                        continue;
                    }
                }

                // --- forward the response ---
                // A response that starts before the request body ended closes the client's
                // connection after it (what the client still sends is not read as a request),
                // as Envoy does for HTTP/1.1.
                let keep_down = request_complete
                    && keeps_alive(
                        head.keep_alive(),
                        matches!(rhead.framing(), BodyFraming::CloseDelimited),
                        self.lifecycle.is_stopping(),
                    );
                let upgrade = status == 101 && head.upgrade();
                let mut edits = HeaderEdits::new();
                edits.route(
                    &action.response_headers_to_remove,
                    &action.response_headers_to_add,
                    &|name| rhead.header(ubuf.bytes(), name).is_some(),
                    &scratch.rendered_response,
                );
                // The listener's `server_name`, after the route's edits (Envoy sets it last).
                if let Some(s) = &scratch.listener_http.server {
                    match s.transformation {
                        ServerHeaderTransformation::Overwrite => {
                            edits.set("server", s.name.as_bytes());
                        }
                        ServerHeaderTransformation::AppendIfAbsent
                            if rhead.header(ubuf.bytes(), "server").is_none() =>
                        {
                            edits.append("server", s.name.as_bytes());
                        }
                        ServerHeaderTransformation::AppendIfAbsent
                        | ServerHeaderTransformation::PassThrough => {}
                    }
                }
                // An HTTP/1.0 client keeps its connection only when the answer says so.
                if keep_down && !upgrade && head.version() == Version::Http10 {
                    edits.append("connection", b"keep-alive");
                }
                out.clear();
                write_response_head(
                    out,
                    ubuf.bytes(),
                    rhead,
                    &HeadEdits {
                        path: None,
                        remove: edits.removals(),
                        add: edits.additions(),
                        force_close: !keep_down && !upgrade,
                        version: None,
                    },
                );
                let mut bytes_sent = out.len() as u64;
                let resp_head_len = rhead.head_len();
                ubuf.consume(resp_head_len);
                if upgrade {
                    scratch.awaiting.set(false);
                    if write_flushed(&mut downw, out).await.is_err() {
                        self.stream_input(ci, &mut stream, Input::Abort);
                        self.publish_host_active(ci, host);
                        return Outcome {
                            status,
                            flag: None,
                            upstream: upstream_addr,
                            bytes_received: bytes_received.get(),
                            bytes_sent: 0,
                            reusable: false,
                        };
                    }
                    // The upstream try is over; the tunnel still counts as a request.
                    self.stream_input(ci, &mut stream, Input::Upgraded);
                    self.publish_host_active(ci, host);
                    let tunnelled = tunnel(
                        &mut downw,
                        &mut upw,
                        rbuf_slot.unwrap_or(&mut no_rbuf),
                        head_len,
                        ubuf,
                    )
                    .await;
                    bytes_sent += tunnelled;
                    self.stream_input(ci, &mut stream, Input::ResponseComplete);
                    return Outcome {
                        status,
                        flag: None,
                        upstream: upstream_addr,
                        bytes_received: bytes_received.get(),
                        bytes_sent,
                        reusable: false,
                    };
                }
                // The head goes out with the first body bytes: one write for a small response.
                // A gRPC answer's chunked trailer section is kept as it passes, for its
                // `grpc-status` (an HTTP/2 upstream's trailers are read by its adapter).
                scratch.grpc_trailers.clear();
                let keep_trailers = (scratch.grpc && !http2).then_some(&mut scratch.grpc_trailers);
                let copy = copy_body(
                    &mut upw,
                    &mut downw,
                    ubuf,
                    rhead.framing(),
                    out,
                    &scratch.awaiting,
                    answered,
                    keep_trailers,
                );
                let body = match self
                    .alongside(
                        ci,
                        &mut stream,
                        copy,
                        upload.as_mut(),
                        &mut request_complete,
                        &mut body_kept,
                    )
                    .await
                {
                    Alongside::Done(r) => Some(r),
                    Alongside::Timeout => None,
                    Alongside::UploadFailed(fault) => {
                        // The client's body failed while the answer was under way: the call is
                        // over (the upstream's stream is reset or its connection closed). The
                        // head still in `out` means nothing of the answer reached the client.
                        let answered = out.is_empty().then_some((status, bytes_sent));
                        return self
                            .answer_upload_fault(
                                ci,
                                &mut stream,
                                host,
                                fault,
                                scratch.grpc,
                                server,
                                &scratch.awaiting,
                                &mut downw,
                                out,
                                upstream_addr,
                                bytes_received.get(),
                                answered,
                            )
                            .await;
                    }
                };
                // An answer that ended before the request body: the rest of the body is not
                // sent (an HTTP/2 upstream's stream is reset when dropped; an HTTP/1.1
                // connection is closed, never pooled, below).
                upload.set(None);
                let completed_at = now();
                self.stream_input_at(ci, &mut stream, Input::ResponseComplete, completed_at);
                self.publish_host_active(ci, host);
                // A gRPC status in the upstream's trailers (the usual place): HTTP/2 trailers,
                // or an HTTP/1.1 answer's chunked trailer section.
                if scratch.grpc {
                    let code = match &**up_cell.borrow() {
                        Upstream::Http2(h2) => h2.grpc_status(),
                        Upstream::Http1(_) => grpc::status_in_trailers(&scratch.grpc_trailers),
                    };
                    if code.is_some() {
                        scratch.grpc_status = code;
                    }
                }
                let try_time = completed_at.saturating_duration_since(try_start);
                self.stats().upstream_rq_time.record(try_time);
                if let Some(c) = cstats {
                    c.upstream_rq_time.record(try_time);
                }
                let (complete, sent) = match body {
                    Some(Ok(n)) => (true, n),
                    Some(Err(_)) | None => (false, 0),
                };
                if !complete && !out.is_empty() {
                    // The upstream failed (or the route timed out) between its head and the
                    // first body bytes: the head still waits in `out`, nothing reached the
                    // client, so the proxy can still answer instead of closing under the
                    // request.
                    let (flag, result) = if body.is_none() {
                        (ResponseFlag::UpstreamTimeout, UpstreamResult::Timeout)
                    } else {
                        (
                            ResponseFlag::UpstreamConnectionTermination,
                            UpstreamResult::Reset,
                        )
                    };
                    self.upstreams.report_upstream_result(ci, picked, result);
                    if body.is_none() {
                        bump(&self.stats().http_upstream_timeouts, 1);
                        if let Some(c) = cstats {
                            bump(&c.upstream_rq_timeout, 1);
                        }
                    }
                    scratch.awaiting.set(false);
                    let mut o = self
                        .local_reply(
                            scratch.grpc,
                            server,
                            &mut downw,
                            out,
                            status_for(flag),
                            flag,
                            true,
                        )
                        .await;
                    o.upstream = upstream_addr;
                    o.bytes_received = bytes_received.get();
                    return o;
                }
                bytes_sent += sent;
                // An HTTP/1.1 connection is reused only when the request went out whole: one
                // that answered early while the body was still being sent would read the rest
                // of it as a next request.
                let reuse_up = complete
                    && request_complete
                    && rhead.keep_alive()
                    && !matches!(rhead.framing(), BodyFraming::CloseDelimited)
                    && ubuf.is_empty();
                (
                    Outcome {
                        status,
                        flag: None,
                        upstream: upstream_addr,
                        bytes_received: bytes_received.get(),
                        bytes_sent,
                        reusable: complete && keep_down && request_complete,
                    },
                    reuse_up,
                )
            };
            // A connection to a host whose slot has another host by now (a DNS answer moved it
            // while this request was in flight) is closed, never pooled under the slot: the
            // pool holds only connections to the slots' current hosts (an answer that moves a
            // slot empties its idle list), so a checkout needs no check of its own.
            let current =
                destination.is_some() || self.upstreams.cluster(ci).borrow().is_current(picked);
            if pool_up
                && current
                && let Upstream::Http1(up) = up
            {
                match destination {
                    None => self.upstreams.pool().put(ci, host.index(), up, now()),
                    Some(d) => self.upstreams.pool().put_to(ci, d, up, now()),
                }
            }
            return outcome;
        }
    }

    /// Runs `work` (a step of the response path: reading its head, copying its body) to its
    /// end, raced against the stream's timers, while the rest of a streamed request body
    /// (`upload`, `None` when nothing is left to send) is sent alongside. A body sent whole
    /// gives the stream its `RequestComplete` (the route timeout starts, so the timer is armed
    /// again); one the upstream stopped taking (a write failed) is given up — the route timeout
    /// starts then too — and the answer, or its failure, says the rest. A body kept whole for
    /// retries (`Uploaded::kept`) gives the stream its `BodyBuffered` first, and sets `kept`;
    /// one the upstream did not take all of (`Uploaded::detached`) leaves `request_complete`
    /// false (the connection is not reused).
    async fn alongside<T, W, U>(
        &self,
        ci: usize,
        stream: &mut StreamGuard,
        work: W,
        mut upload: Pin<&mut Option<U>>,
        request_complete: &mut bool,
        kept: &mut bool,
    ) -> Alongside<T>
    where
        W: Future<Output = T>,
        U: Future<Output = io::Result<Uploaded>>,
    {
        let mut work = std::pin::pin!(work);
        loop {
            let timer = deadline_of(stream.poll_timeout());
            let sending = upload.is_some();
            let sent = tokio::select! {
                biased;
                r = &mut work => return Alongside::Done(r),
                () = tokio::time::sleep_until(timer) => return Alongside::Timeout,
                r = poll_fn(|cx| match upload.as_mut().as_pin_mut() {
                    Some(f) => f.poll(cx),
                    None => Poll::Pending,
                }), if sending => r,
            };
            upload.set(None);
            match sent {
                Ok(uploaded) => {
                    // An upload that went on past a failed write (to keep the body for a
                    // retry) did not deliver it: the connection is not reused.
                    *request_complete = !uploaded.detached;
                    if uploaded.kept {
                        *kept = true;
                        self.stream_input(ci, stream, Input::BodyBuffered);
                    }
                    self.stream_input(ci, stream, Input::RequestComplete);
                }
                Err(e) => {
                    if let Some(fault) = fault_of(&e) {
                        return Alongside::UploadFailed(fault);
                    }
                    tracing::debug!(error = %e, "upstream stopped taking the request body");
                    // Nothing more of the request can go: the route timeout starts, so that
                    // the wait for an answer stays bounded (the body stays incomplete: the
                    // connection is not reused).
                    self.stream_input(ci, stream, Input::RequestComplete);
                }
            }
        }
    }

    /// Detaches a streamed body's upload (`detach.off`: nothing more goes upstream) and runs
    /// it to the body's end, reading the rest into the replay copy: each read within
    /// `stream_idle` (`stream_idle_timeout`), all of it within [`DETACHED_BODY_WAIT`] — a
    /// client that waits for an answer before it sends more gets the try's outcome then, not a
    /// 408 after `stream_idle_timeout` (or never, with 0). True when the body ended within the
    /// copy (replayable: the caller gives the stream `BodyBuffered`); false when it outgrew it
    /// or did not end in time; the client's fault (stall, malformed body, gone) as an error.
    /// The upload is over either way.
    async fn read_rest_detached<U>(
        &self,
        mut upload: Pin<&mut Option<U>>,
        detach: &Detach,
        stream_idle: Option<Duration>,
    ) -> Result<bool, UploadFault>
    where
        U: Future<Output = io::Result<Uploaded>>,
    {
        detach.off.set(true);
        let budget = stream_idle.map_or(DETACHED_BODY_WAIT, |idle| idle.min(DETACHED_BODY_WAIT));
        let rest = tokio::time::timeout(
            budget,
            poll_fn(|cx| match upload.as_mut().as_pin_mut() {
                Some(f) => f.poll(cx),
                None => Poll::Ready(Ok(Uploaded {
                    kept: false,
                    detached: true,
                })),
            }),
        )
        .await;
        upload.set(None);
        match rest {
            Ok(Ok(uploaded)) => Ok(uploaded.kept),
            Ok(Err(e)) => fault_of(&e).map_or(Ok(false), Err),
            Err(_) => Ok(false),
        }
    }

    /// Starts HTTP/2 on a new upstream connection to `peer` (the host `host`, or a
    /// destination of an `original_dst` cluster), pools it, and opens the request's stream on
    /// it. `None`: the stream's timer (`timer`) fired first;
    /// `Some(Err)`: the handshake failed (nothing of the request was written).
    async fn open_http2(
        &self,
        ci: usize,
        host: HostRef,
        peer: Peer,
        conn: UpstreamConn<MaybeTls<N::Stream>>,
        tls: bool,
        timer: TokioInstant,
    ) -> Option<Result<Upstream<MaybeTls<N::Stream>>, ()>> {
        // Drawn only for a cluster with a keepalive: other draws (balancing) stay as they were.
        let keepalive = self.config.clusters[ci].http2_keepalive;
        let jitter_seed = keepalive.map_or(0, |_| self.rng.borrow_mut().next_u64());
        let handshake = tokio::select! {
            biased;
            r = crate::h2_upstream::handshake(
                conn,
                self.stats(),
                now(),
                keepalive,
                ci,
                peer,
                jitter_seed,
            ) => r,
            () = tokio::time::sleep_until(timer) => return None,
        };
        Some(match handshake {
            Ok(c) => {
                // Pooled only if the slot still has the host it was made for (the connect or
                // handshake may have outlasted a DNS answer that moved the slot): otherwise it
                // serves this request alone, and closes with it. A destination is always current.
                if matches!(peer, Peer::Destination(_))
                    || self.upstreams.cluster(ci).borrow().is_current(host)
                {
                    self.upstreams.h2_pool().put(ci, peer, c.clone());
                }
                Ok(Upstream::Http2(Box::new(H2Upstream::new(
                    c,
                    self.stats(),
                    tls,
                ))))
            }
            Err(e) => {
                tracing::debug!(error = %e, "HTTP/2 upstream handshake failed");
                Err(())
            }
        })
    }

    /// Feeds one input to a request's stream and carries out its outputs but the one action
    /// it returns (connect, open a connection, forward or discard a response head, answer):
    /// events become stats and outlier detection results — connect, per-try and route
    /// timeouts are told apart by the core, never guessed from which timer fired — and a new
    /// connection's breaker unit is kept for the connection. Timers: the caller sleeps until
    /// `stream.poll_timeout()`.
    fn stream_input(&self, ci: usize, stream: &mut StreamGuard, input: Input) -> Option<Output> {
        self.stream_input_at(ci, stream, input, now())
    }

    /// [`Engine::stream_input`] at `now`, read by the caller for several inputs given in one
    /// synchronous step (a clock read costs as much as a small input).
    fn stream_input_at(
        &self,
        ci: usize,
        stream: &mut StreamGuard,
        input: Input,
        now: sluice_core::Instant,
    ) -> Option<Output> {
        stream.stream.handle_input(
            now,
            input,
            &mut stream.cluster.borrow_mut(),
            &mut self.rng.borrow_mut(),
        );
        let cstats = self.stats().cluster(ci);
        let mut action = None;
        while let Some(output) = stream.stream.poll_output() {
            let event = match output {
                Output::Event(event) => event,
                Output::ConnectionPermit(permit) => {
                    debug_assert!(stream.connection_permit.is_none());
                    stream.connection_permit = Some(permit);
                    continue;
                }
                Output::ArmTimer { .. } | Output::CancelTimer(_) => continue,
                other => {
                    debug_assert!(action.is_none(), "two actions: {action:?}, {other:?}");
                    action = Some(other);
                    continue;
                }
            };
            match event {
                StreamEvent::Overflow(resource) => {
                    if let Some(c) = cstats {
                        bump(
                            match resource {
                                Resource::Requests => &c.upstream_rq_overflow,
                                Resource::Connections => &c.upstream_cx_overflow,
                                Resource::PendingRequests => &c.upstream_rq_pending_overflow,
                                Resource::Retries => &c.upstream_rq_retry_overflow,
                            },
                            1,
                        );
                    }
                }
                StreamEvent::TryStarted { retry: true, .. } => {
                    bump(&self.stats().http_retries, 1);
                    if let Some(c) = cstats {
                        bump(&c.upstream_rq_retry, 1);
                    }
                }
                StreamEvent::RetryOverflowed => {
                    if let Some(c) = cstats {
                        bump(&c.upstream_rq_retry_overflow, 1);
                    }
                }
                StreamEvent::Exchange(e) => self.observe_exchange_event(ci, e, stream.picked),
                StreamEvent::Admitted
                | StreamEvent::TryStarted { .. }
                | StreamEvent::ResponseStarted { .. }
                | StreamEvent::Finished { .. } => {}
            }
        }
        // A pick: the host as it is now (nothing awaited since the core picked it).
        if let Some(Output::Connect { host, .. }) = &action {
            let cluster = stream.cluster.borrow();
            let (picked, transport) = (cluster.host_ref(*host), cluster.transport(*host));
            drop(cluster);
            stream.picked = Some(picked);
            stream.transport = transport;
        }
        action
    }

    /// Counts what the exchange says happened and feeds outlier detection from it (`picked`:
    /// the latest try's host as it was picked, whose epoch the result carries).
    fn observe_exchange_event(&self, ci: usize, event: ExchangeEvent, picked: Option<HostRef>) {
        let cstats = self.stats().cluster(ci);
        match event {
            ExchangeEvent::ConnectFailed { host } => {
                self.upstreams.count_connect_failure(ci, host, false)
            }
            ExchangeEvent::ConnectTimedOut { host } => {
                self.upstreams.count_connect_failure(ci, host, true)
            }
            ExchangeEvent::PerTryTimedOut { .. } | ExchangeEvent::RouteTimedOut { .. } => {
                bump(&self.stats().http_upstream_timeouts, 1);
                if let Some(c) = cstats {
                    bump(&c.upstream_rq_timeout, 1);
                }
            }
            ExchangeEvent::UpstreamReset { .. }
            | ExchangeEvent::UpstreamProtocolError { .. }
            | ExchangeEvent::UpstreamRefused { .. } => {}
        }
        if let Some((host, result)) = event.upstream_result() {
            let host = picked
                .filter(|p| p.id == host)
                .unwrap_or_else(|| self.upstreams.cluster(ci).borrow().host_ref(host));
            self.upstreams.report_upstream_result(ci, host, result);
        }
    }

    /// Holds the request body in `rbuf` when all of it, at most [`REPLAY_LIMIT`] bytes, has
    /// arrived: reads what the client already sent, never waits for more (a client may wait
    /// for an answer before it sends the rest — a watch, a gRPC stream — and a slow uploader's
    /// bytes go upstream as they come). `Ok(Some(n))`: held, `n` bytes after the head.
    /// `Ok(None)`: still arriving, or too large: it streams (a copy of it is kept for retries
    /// up to [`REPLAY_LIMIT`], see [`stream_request_body`]). `Err(status)`: the body is
    /// malformed or the client went away.
    async fn buffer_body<D: AsyncRead + Unpin>(
        &self,
        down: &mut D,
        rbuf: &mut ReadBuffer,
        head_len: usize,
        framing: BodyFraming,
        stream_idle: Option<Duration>,
    ) -> Result<Option<usize>, u16> {
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

fn reject(e: &HttpError) -> HeadRead {
    let status = e.status();
    let flag = if status == 431 {
        ResponseFlag::DownstreamLimit
    } else {
        ResponseFlag::DownstreamProtocolError
    };
    HeadRead::Reject(status, flag, format!("{e}\n"))
}

/// Writes all of `data` and flushes: over TLS a write may leave ciphertext inside rustls until
/// the next write or flush, so a driver that goes back to reading after a write must flush or
/// the end of what it wrote can sit unsent (a client waiting for the rest of a response while
/// the proxy waits for its next request). A no-op flush on a plain socket.
pub(crate) async fn write_flushed<W: AsyncWrite + Unpin + ?Sized>(
    w: &mut W,
    data: &[u8],
) -> io::Result<()> {
    w.write_all(data).await?;
    w.flush().await
}

/// Writes the request: the head and a buffered body, or the head then the body streamed as it
/// arrives (each read of it within `stream_idle`). A failure of the client's side of the body
/// sets `upload_fault` (the try fails, but not through the upstream's fault).
#[allow(clippy::too_many_arguments)]
async fn send_request<U, D>(
    up: &mut U,
    down: &mut D,
    request: &[u8],
    rbuf: &mut ReadBuffer,
    head_len: usize,
    framing: BodyFraming,
    stream_body: bool,
    stream_idle: Option<Duration>,
    written: &mut bool,
    bytes_received: &Cell<u64>,
    upload_fault: &mut Option<UploadFault>,
) -> Result<(), TryFailure>
where
    U: AsyncRead + AsyncWrite + Unpin,
    D: AsyncRead + AsyncWrite + Unpin,
{
    let closed = |written: bool| TryFailure::Closed {
        request_written: written,
        reused: false,
    };
    if let Err(e) = write_flushed(up, request).await {
        if is_refused(&e) {
            return Err(TryFailure::Refused);
        }
        return Err(closed(*written));
    }
    *written = true;
    if stream_body {
        match stream_request_body(
            up,
            down,
            rbuf,
            head_len,
            framing,
            stream_idle,
            None,
            bytes_received,
            None,
            &Detach::default(),
        )
        .await
        {
            Ok(_) => {}
            Err(e) => {
                *upload_fault = fault_of(&e);
                return Err(closed(true));
            }
        }
    }
    Ok(())
}

/// Reads the response head into `ubuf`/`rhead`, skipping interim 1xx answers other than 101 —
/// at most [`MAX_INTERIM_RESPONSES`] of them: one more is a protocol error (`too_many_interim`
/// set). A 101 to a request that asked for no upgrade (`upgrade` `None`) is a protocol error
/// too, and so is one to a protocol the listener's `upgrade_types` and the route's
/// `upgrade_configs` (`upgrade`'s value) do not allow.
async fn read_response_head<U>(
    up: &mut U,
    ubuf: &mut ReadBuffer,
    rhead: &mut Head,
    method: Method,
    upgrade: Option<(Option<&[String]>, &[RouteUpgrade])>,
    too_many_interim: &mut bool,
) -> Result<(), TryFailure>
where
    U: AsyncRead + Unpin,
{
    let mut interim = 0;
    loop {
        match parse_response(ubuf.bytes(), method, &RESPONSE_LIMITS, rhead) {
            Ok(ParseStatus::Complete) => {
                let status = rhead.status();
                if (100..200).contains(&status) && status != 101 {
                    interim += 1;
                    if interim > MAX_INTERIM_RESPONSES {
                        *too_many_interim = true;
                        return Err(TryFailure::ProtocolError);
                    }
                    ubuf.consume(rhead.head_len());
                    continue;
                }
                if status == 101 {
                    // Switching protocols for a request that asked for no upgrade, or to a
                    // protocol the listener does not tunnel: the connection would carry
                    // something neither side agreed on.
                    let Some((types, route)) = upgrade else {
                        return Err(TryFailure::ProtocolError);
                    };
                    let switched_to = rhead.header_values(ubuf.bytes(), "upgrade");
                    if !upgrade_allowed(types, route, switched_to) {
                        return Err(TryFailure::ProtocolError);
                    }
                }
                return Ok(());
            }
            Ok(ParseStatus::Partial) => {}
            Err(_) => return Err(TryFailure::ProtocolError),
        }
        match ubuf.fill(up).await {
            // An HTTP/2 upstream said it did not process the request.
            Err(e) if is_refused(&e) => return Err(TryFailure::Refused),
            Ok(0) | Err(_) => {
                return Err(TryFailure::Closed {
                    request_written: true,
                    reused: false,
                });
            }
            Ok(_) => {}
        }
    }
}

/// How the client's side of a request body failed, carried inside the `io::Error` of a body
/// copy so that a caller tells it from an upstream write failing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum UploadFault {
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
    fn status(self) -> (u16, ResponseFlag) {
        match self {
            UploadFault::Stalled => (408, ResponseFlag::DownstreamLimit),
            UploadFault::Malformed | UploadFault::Aborted => {
                (400, ResponseFlag::DownstreamProtocolError)
            }
        }
    }

    fn into_io(self, kind: io::ErrorKind) -> io::Error {
        io::Error::new(kind, self)
    }
}

/// The client's fault inside an IO error, if it is one (not, say, an upstream write failing).
fn fault_of(e: &io::Error) -> Option<UploadFault> {
    e.get_ref()
        .and_then(|inner| inner.downcast_ref::<UploadFault>())
        .copied()
}

/// Whether an IO error is a stalled upload.
fn is_stall(e: &io::Error) -> bool {
    fault_of(e) == Some(UploadFault::Stalled)
}

/// One read from downstream into `rbuf`, within `idle`: an error, a stall or an end of stream
/// come back as the client's [`UploadFault`]. While the answer streams alongside (full duplex),
/// `answered` is when its bytes last went to the client: the stream is idle only when neither
/// way moved for `idle` (Envoy's stream idle timeout), so a watch whose client sends nothing
/// while its answer flows is not cut.
async fn fill_within<D: AsyncRead + Unpin>(
    rbuf: &mut ReadBuffer,
    down: &mut D,
    idle: Option<Duration>,
    answered: Option<&Cell<TokioInstant>>,
) -> io::Result<usize> {
    let read = match idle {
        Some(d) => {
            let mut fill = std::pin::pin!(rbuf.fill(down));
            let mut from = TokioInstant::now();
            loop {
                match tokio::time::timeout_at(from + d, &mut fill).await {
                    Ok(r) => break r,
                    Err(_) => match answered.map(Cell::get) {
                        Some(at) if at > from => from = at,
                        _ => return Err(UploadFault::Stalled.into_io(io::ErrorKind::TimedOut)),
                    },
                }
            }
        }
        None => rbuf.fill(down).await,
    };
    match read {
        Ok(0) => Err(UploadFault::Aborted.into_io(io::ErrorKind::UnexpectedEof)),
        Ok(n) => Ok(n),
        Err(e) => Err(UploadFault::Aborted.into_io(e.kind())),
    }
}

/// What [`stream_request_body`] sent.
#[derive(Clone, Copy, Debug)]
struct Uploaded {
    /// The replay copy holds all of it, as written upstream (or as it would have been).
    kept: bool,
    /// The upstream did not take all of it ([`Detach::off`]): the rest was only copied.
    detached: bool,
}

/// What the driver and a streamed body's upload share about it, for one try.
#[derive(Debug, Default)]
struct Detach {
    /// Nothing more goes upstream; what arrives is only copied, while it fits. Set by the
    /// driver when the try failed and the core wants the whole body for a retry
    /// (`Stream::retry_wants_body`), or by the upload when a write to the upstream failed
    /// while the copy was whole (the try's failure follows on the response path). An upload
    /// whose copy is lost then ends with an error.
    off: Cell<bool>,
    /// No whole copy: none was kept (too large a `content-length`), or it outgrew
    /// [`REPLAY_LIMIT`]. The body cannot be replayed.
    lost: Cell<bool>,
}

/// Where [`stream_request_body`] copies what it writes upstream, while it fits in
/// [`REPLAY_LIMIT`] (a body that outgrows it loses its copy: it is not retried).
struct ReplayCopy<'a> {
    copy: Option<&'a mut Vec<u8>>,
    detach: &'a Detach,
}

impl ReplayCopy<'_> {
    fn keep(&mut self, bytes: &[u8]) {
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
async fn send_kept<U: AsyncWrite + Unpin>(
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
async fn stream_request_body<U, D>(
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
    D: AsyncRead + Unpin,
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
async fn stream_body_kept<U, D>(
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
    D: AsyncRead + Unpin,
{
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

/// Appends a complete, validated chunked request body, its trailer section without the fields
/// a trailer must not carry. The common body without trailers (it ends with the last chunk and
/// an empty trailer section, `0\r\n\r\n`) is copied as it is, without a second scan.
fn push_chunked_body(out: &mut Vec<u8>, body: &[u8]) {
    if body == b"0\r\n\r\n" || body.ends_with(b"\r\n0\r\n\r\n") {
        out.extend_from_slice(body);
        return;
    }
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
fn drop_range(rbuf: &mut ReadBuffer, at: usize, len: usize) {
    let start = rbuf.start + at;
    rbuf.data.copy_within(start + len..rbuf.end, start);
    rbuf.end -= len;
}

/// Writes `data` downstream, preceded by whatever is still `pending` (the response head), in
/// one write when there is something pending.
/// Writes `pending` (the response head, on the first call) and `data`; `awaiting` is cleared
/// before the first byte goes out (from then on the client has a response under way).
async fn send<D: AsyncWrite + Unpin>(
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
async fn copy_body<U, D>(
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
    D: AsyncWrite + Unpin,
{
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

/// After a `101`: bytes both ways until either side closes. Leftovers in the buffers go first.
async fn tunnel<D, U>(
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
    use std::sync::Arc;

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
            let (mut down, mut client) = tls_pair(4096).await;
            let body: Vec<u8> = (0..40_000u32).map(|i| (i % 251) as u8).collect();
            let (mut up, mut origin) = tokio::io::duplex(1 << 20);
            origin.write_all(&body).await.unwrap();
            let mut ubuf = ReadBuffer::new();
            let mut pending = b"HTTP/1.1 200 OK\r\ncontent-length: 40000\r\n\r\n".to_vec();
            let head_len = pending.len();
            let awaiting = Cell::new(true);
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
                let (mut down, mut client) = tokio::io::duplex(1024);
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

/// Issue 15: an idle keep-alive connection gives its buffers back to the worker's pool.
#[cfg(test)]
mod idle_buffer_tests {
    use std::sync::Arc;
    use std::time::Duration;

    use sluice_core::config::Config;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    use crate::engine::Engine;
    use crate::net::TokioNet;
    use crate::stats::WorkerStats;
    use crate::test_support::{bound, http1_upstream, on_local_runtime, serve, serve_until};

    /// Reads until `n` responses ending in `last` arrived, within 5 s.
    async fn read_responses(s: &mut tokio::net::TcpStream, n: usize, last: &str) -> String {
        let mut got = Vec::new();
        let mut chunk = [0u8; 4096];
        tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                let text = String::from_utf8_lossy(&got);
                if text.matches("HTTP/1.1 ").count() == n && text.ends_with(last) {
                    break;
                }
                let k = s.read(&mut chunk).await.unwrap();
                assert!(k > 0, "closed after {:?}", String::from_utf8_lossy(&got));
                got.extend_from_slice(&chunk[..k]);
            }
        })
        .await
        .expect("the responses arrive in time");
        String::from_utf8(got).unwrap()
    }

    /// Waits (up to 2 s) until the worker's pool holds `want` (read, write) buffers.
    async fn pooled_becomes(engine: &Engine<TokioNet>, want: (usize, usize)) -> (usize, usize) {
        for _ in 0..200 {
            if engine.http_buffers.pooled() == want {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        engine.http_buffers.pooled()
    }

    /// With the defaults, a keep-alive connection that answered a request (one forwarded
    /// upstream: it used the request, upstream-response and write buffers) and waits for the
    /// next holds none of them: all three are back in the worker's pool. Its next request takes
    /// the same ones back (nothing new is allocated: the pool count does not grow), and
    /// pipelined requests are answered whole and in order.
    #[test]
    fn a_rebound_scratch_is_what_a_new_one_would_be() {
        use std::cell::Cell;
        use std::net::SocketAddr;
        use std::rc::Rc;

        use super::{ListenerHttp, Scratch};
        let yaml = |proto: &str| {
            format!(
                "listeners:\n  - name: web\n    address: 127.0.0.1:1\n    http:\n      forwarded_proto: {proto}\n      virtual_hosts: [ {{ name: all, domains: [\"*\"], routes: [ {{ match: {{ prefix: / }}, direct_response: {{ status: 200 }} }} ] }} ]\n"
            )
        };
        let first = Config::from_yaml(&yaml("preserve")).unwrap();
        let second = Config::from_yaml(&yaml("overwrite")).unwrap();
        let hc = |c: &Config| match &c.listeners[0].filter {
            sluice_core::config::ListenerFilter::Http(h) => (**h).clone(),
            _ => unreachable!(),
        };
        let (hc1, hc2) = (hc(&first), hc(&second));
        let v4: SocketAddr = "10.0.0.7:4000".parse().unwrap();
        let v6: SocketAddr = "[2001:db8::9]:5000".parse().unwrap();
        let (lh1, lh2) = (
            Rc::new(ListenerHttp::new(&hc1)),
            Rc::new(ListenerHttp::new(&hc2)),
        );
        let mut kept = Scratch::new(v4, &hc1, &lh1, Rc::new(Cell::new(true)), false);
        kept.original_dst = Some(v4);
        // What an earlier request (another client's) left behind.
        kept.cluster = Some(3);
        kept.tries = 2;
        kept.grpc = true;
        kept.grpc_status = Some(14);
        kept.request_id_generated = true;
        kept.normalized = true;
        kept.xff = vec![b'1'; 100_000];
        kept.replay = vec![7; 60_000];
        kept.shed();
        assert_eq!((kept.xff.capacity(), kept.replay.capacity()), (0, 0));
        // What an HTTP/2 stream does with a kept state before anything can end it.
        kept.rebind(v6, &hc2, &lh2, true);
        kept.begin_request();
        assert!(kept.request_begun());
        assert_eq!((kept.cluster, kept.tries, kept.grpc), (None, 0, false));
        assert_eq!(kept.grpc_status, None);
        assert!(!kept.request_id_generated && !kept.normalized);
        let made = Scratch::new(v6, &hc2, &lh2, Rc::new(Cell::new(false)), true);
        assert_eq!(kept.peer_ip, made.peer_ip);
        assert_eq!(kept.peer_ip, "2001:db8::9");
        assert_eq!(kept.peer_addr, made.peer_addr);
        assert_eq!(kept.forwarded_proto, made.forwarded_proto);
        assert_eq!(kept.path_opts, made.path_opts);
        assert_eq!(kept.stream_idle, made.stream_idle);
        assert_eq!(kept.over_tls, made.over_tls);
        assert!(Rc::ptr_eq(&kept.listener_http, &made.listener_http));
        assert_eq!(kept.original_dst, None);
        assert!(!kept.awaiting.get());
        // The same client again: its address text stays.
        kept.rebind(v6, &hc2, &lh2, true);
        assert_eq!(kept.peer_ip, "2001:db8::9");
    }

    #[test]
    fn an_idle_keep_alive_connection_gives_its_buffers_back_to_the_pool() {
        on_local_runtime(async {
            let (up, up_at) = bound();
            tokio::task::spawn_local(http1_upstream(up, |_| {
                "HTTP/1.1 200 OK\r\ncontent-length: 8\r\n\r\nupstream".to_owned()
            }));
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
            - match: {{ prefix: /up }}
              route: {{ cluster: up }}
            - match: {{ prefix: /a }}
              direct_response: {{ status: 200, body: "first" }}
            - match: {{ prefix: /b }}
              direct_response: {{ status: 200, body: "second" }}
clusters:
  - name: up
    hosts: [ {{ address: "{up_at}" }} ]
"#
            );
            let engine = serve(&yaml, listener);
            assert_eq!(engine.http_buffers.pooled(), (0, 0));

            let mut c = tokio::net::TcpStream::connect(at).await.unwrap();
            c.write_all(b"GET /up HTTP/1.1\r\nhost: x\r\n\r\n")
                .await
                .unwrap();
            let got = read_responses(&mut c, 1, "upstream").await;
            assert!(got.starts_with("HTTP/1.1 200 OK\r\n"), "{got}");
            // Idle: the request buffer, the upstream response buffer and the write buffer are
            // the pool's.
            assert_eq!(pooled_becomes(&engine, (2, 1)).await, (2, 1));

            // The next request on the same connection takes them back and is answered.
            c.write_all(b"GET /up HTTP/1.1\r\nhost: x\r\n\r\n")
                .await
                .unwrap();
            let got = read_responses(&mut c, 1, "upstream").await;
            assert!(got.starts_with("HTTP/1.1 200 OK\r\n"), "{got}");
            assert_eq!(pooled_becomes(&engine, (2, 1)).await, (2, 1));

            // Pipelined requests in one write: all answered, in order, and the connection
            // stays busy between them: it takes its two read buffers once for the four.
            let takes = engine.http_buffers.read_takes();
            c.write_all(
                b"GET /a HTTP/1.1\r\nhost: x\r\n\r\nGET /b HTTP/1.1\r\nhost: x\r\n\r\n\
                  GET /up HTTP/1.1\r\nhost: x\r\n\r\nGET /a HTTP/1.1\r\nhost: x\r\n\r\n",
            )
            .await
            .unwrap();
            let got = read_responses(&mut c, 4, "first").await;
            let bodies: Vec<&str> = got
                .split("HTTP/1.1 200 OK\r\n")
                .skip(1)
                .map(|r| r.rsplit("\r\n\r\n").next().unwrap())
                .collect();
            assert_eq!(bodies, ["first", "second", "upstream", "first"], "{got}");
            assert_eq!(pooled_becomes(&engine, (2, 1)).await, (2, 1));
            assert_eq!(engine.http_buffers.read_takes() - takes, 2);

            // A second connection while the first is idle reuses the same pooled buffers.
            let mut d = tokio::net::TcpStream::connect(at).await.unwrap();
            d.write_all(b"GET /b HTTP/1.1\r\nhost: x\r\n\r\n")
                .await
                .unwrap();
            let got = read_responses(&mut d, 1, "second").await;
            assert!(got.starts_with("HTTP/1.1 200 OK\r\n"), "{got}");
            assert_eq!(pooled_becomes(&engine, (2, 1)).await, (2, 1));
        });
    }

    /// Times the engine's HTTP/1.1 connections parked so far.
    fn parked(engine: &Engine<TokioNet>) -> u64 {
        engine
            .stats()
            .http1_cx_parked
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Waits (up to 5 s) until the engine's connections parked `want` times.
    async fn parked_becomes(engine: &Engine<TokioNet>, want: u64) -> u64 {
        for _ in 0..500 {
            if parked(engine) >= want {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        parked(engine)
    }

    /// Issue 15, with the defaults: a keep-alive connection with no request for
    /// `IDLE_PARK_GRACE` after its response parks (its request-path state, a boxed future,
    /// is dropped: counted in `http1_cx_parked`), once per wait; a request on the parked
    /// connection is served (its state made again); back-to-back and pipelined requests,
    /// which come within the grace, never park it; its buffers are the pool's when idle.
    #[test]
    fn an_idle_keep_alive_connection_parks_after_the_grace_and_serves_its_next_request() {
        on_local_runtime(async {
            let (up, up_at) = bound();
            tokio::task::spawn_local(http1_upstream(up, |_| {
                "HTTP/1.1 200 OK\r\ncontent-length: 8\r\n\r\nupstream".to_owned()
            }));
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
            - match: {{ prefix: /up }}
              route: {{ cluster: up }}
            - match: {{ prefix: /a }}
              direct_response: {{ status: 200, body: "first" }}
clusters:
  - name: up
    hosts: [ {{ address: "{up_at}" }} ]
"#
            );
            let engine = serve(&yaml, listener);
            let get_up = b"GET /up HTTP/1.1\r\nhost: x\r\n\r\n";

            // A connection that has not sent a request has nothing to park.
            let mut c = tokio::net::TcpStream::connect(at).await.unwrap();
            tokio::time::sleep(sluice_core::http1::conn::IDLE_PARK_GRACE * 3 / 2).await;
            assert_eq!(parked(&engine), 0);

            // Back-to-back requests (each sent when the previous answer is in, a request
            // forwarded upstream among them), then four pipelined in one write: all served,
            // none parks the connection.
            for i in 0..50 {
                let (req, body): (&[u8], &str) = if i % 2 == 0 {
                    (get_up, "upstream")
                } else {
                    (b"GET /a HTTP/1.1\r\nhost: x\r\n\r\n", "first")
                };
                c.write_all(req).await.unwrap();
                let got = read_responses(&mut c, 1, body).await;
                assert!(got.starts_with("HTTP/1.1 200 OK\r\n"), "{got}");
            }
            c.write_all(&get_up.repeat(4)).await.unwrap();
            let got = read_responses(&mut c, 4, "upstream").await;
            assert_eq!(got.matches("HTTP/1.1 200 OK\r\n").count(), 4, "{got}");
            // A client that sends a request more often than once a second (the documented
            // grace) is busy too.
            for _ in 0..3 {
                tokio::time::sleep(Duration::from_millis(300)).await;
                c.write_all(get_up).await.unwrap();
                read_responses(&mut c, 1, "upstream").await;
            }
            assert_eq!(parked(&engine), 0, "a busy connection does not park");

            // Idle past the grace: parked, once, its buffers back in the pool.
            assert_eq!(parked_becomes(&engine, 1).await, 1);
            assert_eq!(pooled_becomes(&engine, (2, 1)).await, (2, 1));
            tokio::time::sleep(sluice_core::http1::conn::IDLE_PARK_GRACE * 3 / 2).await;
            assert_eq!(parked(&engine), 1, "a connection parks once per wait");

            // The parked connection serves its next requests, each again with a request-path
            // state of its own; idle again, it parks again.
            for round in 2..4 {
                c.write_all(get_up).await.unwrap();
                let got = read_responses(&mut c, 1, "upstream").await;
                assert!(got.starts_with("HTTP/1.1 200 OK\r\n"), "{got}");
                assert_eq!(parked_becomes(&engine, round).await, round);
            }
            // A second connection parks on its own.
            let mut d = tokio::net::TcpStream::connect(at).await.unwrap();
            d.write_all(b"GET /a HTTP/1.1\r\nhost: x\r\n\r\n")
                .await
                .unwrap();
            let got = read_responses(&mut d, 1, "first").await;
            assert!(got.starts_with("HTTP/1.1 200 OK\r\n"), "{got}");
            assert_eq!(parked_becomes(&engine, 4).await, 4);
            assert_eq!(
                engine.stats().snapshot().http_requests,
                50 + 4 + 3 + 2 + 1,
                "every request was served once"
            );
        });
    }

    /// A parked connection still ends as a waiting one does: at the keep-alive idle timeout
    /// (`idle_timeout: 3s` here: parked at 1 s, closed at 3 s, not before), and within the
    /// drain grace (1 s) of a drain that starts while it is parked (before its idle timeout).
    #[test]
    fn a_parked_connection_still_closes_at_the_idle_timeout_and_at_a_drain() {
        on_local_runtime(async {
            let (listener, at) = bound();
            let yaml = format!(
                r#"
listeners:
  - name: web
    address: {at}
    http:
      idle_timeout: 3s
      virtual_hosts:
        - name: all
          domains: ["*"]
          routes:
            - match: {{ prefix: / }}
              direct_response: {{ status: 200, body: "first" }}
"#
            );
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            let engine = serve_until(&yaml, listener, async move {
                let _ = stopped.await;
            });
            let request = b"GET / HTTP/1.1\r\nhost: x\r\n\r\n";
            /// Reads until the proxy closes the connection; how long that took.
            async fn closed_after(c: &mut tokio::net::TcpStream) -> Duration {
                let from = tokio::time::Instant::now();
                let mut chunk = [0u8; 64];
                let n = tokio::time::timeout(Duration::from_secs(5), c.read(&mut chunk))
                    .await
                    .expect("closed in time")
                    .unwrap_or(0);
                assert_eq!(n, 0, "{:?}", String::from_utf8_lossy(&chunk[..n]));
                from.elapsed()
            }

            // The idle timeout: 3 s after the response, parked on the way.
            let mut c = tokio::net::TcpStream::connect(at).await.unwrap();
            c.write_all(request).await.unwrap();
            read_responses(&mut c, 1, "first").await;
            let waited = closed_after(&mut c).await;
            assert!(
                waited >= Duration::from_millis(2900) && waited < Duration::from_millis(3900),
                "closed {waited:?} after the response"
            );
            assert_eq!(parked(&engine), 1);

            // A drain while parked: closed within the drain grace.
            let mut d = tokio::net::TcpStream::connect(at).await.unwrap();
            d.write_all(request).await.unwrap();
            read_responses(&mut d, 1, "first").await;
            assert_eq!(parked_becomes(&engine, 2).await, 2);
            stop.send(()).unwrap();
            let waited = closed_after(&mut d).await;
            assert!(
                waited >= Duration::from_millis(900) && waited < Duration::from_millis(1900),
                "closed {waited:?} after the drain started"
            );
        });
    }

    /// What an HTTP/1.1 connection holds while it has sent nothing or is parked: its
    /// connection future (boxed at accept), which does not lay out the request path's state
    /// (boxed apart, made with a request's first bytes). Printed for BENCHMARKS.md
    /// (`cargo test -p sluice-runtime --lib connection_sizes -- --nocapture`); a debug build.
    #[test]
    fn connection_sizes() {
        use std::mem::size_of_val;

        use crate::downstream::Downstream;
        use sluice_core::config::ListenerFilter;
        use sluice_core::http1::conn::{ConnectionPolicy, ConnectionSettings};

        on_local_runtime(async {
            let (listener, at) = bound();
            let yaml = format!(
                "listeners:\n  - name: web\n    address: {at}\n    http:\n      virtual_hosts: [ {{ name: all, domains: [\"*\"], routes: [ {{ match: {{ prefix: / }}, direct_response: {{ status: 200 }} }} ] }} ]\n"
            );
            let config = Arc::new(Config::from_yaml(&yaml).unwrap());
            let stats = Arc::new(WorkerStats::new(&config));
            let engine = Engine::new(TokioNet::default(), config.clone(), 0, 1, stats).unwrap();
            let client = tokio::net::TcpStream::connect(at).await.unwrap();
            let (server, peer) = listener.accept().await.unwrap();
            let lc = &config.listeners[0];
            let ListenerFilter::Http(hc) = &lc.filter else {
                unreachable!()
            };
            let hc = &**hc;
            let down = Downstream::Plain(server);
            let accepted = crate::now();
            let mut policy = ConnectionPolicy::new(
                accepted,
                ConnectionSettings {
                    request_headers_timeout: hc.request_headers_timeout,
                    idle_timeout: hc.idle_timeout,
                },
                false,
            );
            let mut rbuf = super::ReadBuffer::new();
            let mut down2 = Downstream::Plain(tokio::net::TcpStream::connect(at).await.unwrap());
            let awaiting = std::rc::Rc::new(std::cell::Cell::new(false));
            let request_path = engine.serve_http_connection(
                0,
                lc,
                hc,
                &mut down2,
                peer,
                &mut rbuf,
                &mut policy,
                None,
                None,
                &awaiting,
            );
            let request_path_size = size_of_val(&request_path);
            drop(request_path);
            let connection = engine.http_connection(0, lc, hc, down, peer, &[], None, accepted);
            let connection_size = size_of_val(&connection);
            drop(connection);
            println!(
                "HTTP/1.1 connection future (held from accept, boxed): {connection_size} B; \
                 request-path future (boxed while busy): {request_path_size} B; \
                 Downstream<TcpStream>: {} B; Scratch: {} B; Head: {} B; ConnectionPolicy: {} B; \
                 ReadBuffer: {} B",
                std::mem::size_of::<Downstream<tokio::net::TcpStream>>(),
                std::mem::size_of::<super::Scratch>(),
                std::mem::size_of::<sluice_core::http1::Head>(),
                std::mem::size_of::<ConnectionPolicy>(),
                std::mem::size_of::<super::ReadBuffer>(),
            );
            // The point of the split: a waiting connection does not hold the request path.
            assert!(
                connection_size < request_path_size / 2,
                "the connection future ({connection_size} B) lays out the request path's ({request_path_size} B)"
            );
            drop(client);
        });
    }

    /// An HTTP/2 stream takes its buffers from the worker's pool and gives them back when it
    /// ends: a connection with no open stream holds none, and its next stream reuses them.
    #[test]
    fn an_http2_stream_gives_its_buffers_back_to_the_pool_when_it_ends() {
        on_local_runtime(async {
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
              direct_response: {{ status: 200, body: "first" }}
"#
            );
            let engine = serve(&yaml, listener);
            let tcp = tokio::net::TcpStream::connect(at).await.unwrap();
            let (mut client, conn) = h2::client::handshake(tcp).await.unwrap();
            tokio::task::spawn_local(async move {
                let _ = conn.await;
            });
            for _ in 0..2 {
                client = client.ready().await.unwrap();
                let request = http::Request::get("http://x/a").body(()).unwrap();
                let (response, _) = client.send_request(request, true).unwrap();
                let response = tokio::time::timeout(Duration::from_secs(5), response)
                    .await
                    .expect("answered in time")
                    .unwrap();
                assert_eq!(response.status(), 200);
                let mut body = response.into_body();
                let mut got = Vec::new();
                while let Some(data) = body.data().await {
                    let data = data.unwrap();
                    let _ = body.flow_control().release_capacity(data.len());
                    got.extend_from_slice(&data);
                }
                assert_eq!(got, b"first");
                // The stream ended: its request, upstream-response and write buffers are the
                // pool's (the second stream took the same ones: the count does not grow).
                assert_eq!(pooled_becomes(&engine, (2, 1)).await, (2, 1));
            }
        });
    }
}
