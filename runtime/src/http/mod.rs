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
//! This module keeps the connection (steps 1, 2 and 4: [`Engine::http_connection`],
//! [`Engine::serve_request`], the buffers and per-connection [`Scratch`]); step 3, which HTTP/2
//! streams take too (`crate::http2`: the request head written, not parsed, into the `Head` the
//! path reads; its body handed over typed, framed for the upstream once by `body`; the
//! response typed), is
//! cut by concern:
//!
//! - `stream`: the walk of one forwarded request along the core's stream — `forward`, and its
//!   steps `admit`, `run_try` (one try on its connection), `decide_retry`, `relay_response`;
//!   the stream's guard and the driver's side of its inputs, outputs and events;
//! - `upstream`: a try's connection (pooled, new, HTTP/2) and its breaker units;
//! - `wire`: the heads — the upstream request with the core's edits, its per-try fields, the
//!   response head read and written back with the route's and listener's edits;
//! - `body`: request bodies held or streamed (with the replay copy), one path whatever the
//!   client's protocol — an HTTP/1.1 client's decoded from the read buffer into the pieces an
//!   HTTP/2 stream's comes in, each framed for the upstream here once — response bodies (one
//!   copy loop over the codec's sink), tunnels;
//! - `respond`: the response side whatever the client's protocol ([`respond::Respond`]): a
//!   staged forwarded head (the upstream's with the edits as a list), payload, trailers, local
//!   answers — written as HTTP/1.1 bytes to a connection, typed to an HTTP/2 stream.
//!
//! Buffers: a connection holds its read, upstream-response and write buffers only while a
//! request is in flight. They come from the worker's pool ([`crate::bufpool`]) with a request's
//! first byte; when a response is out and the next request is not there yet (a read would
//! wait), they go back, and the wait for the next request borrows a read buffer from the pool
//! for each poll only (`ReadBuffer::poll_fill_first`: no buffer held while idle, no extra read). A
//! busy connection (pipelined or back-to-back requests) keeps them.
//!
//! Parking (issue 15): the connection's task holds only [`Engine::http_connection`]'s small
//! state — the socket, the core's `ConnectionPolicy`, an empty `ReadBuffer`, the drain
//! notification and the wait for a first byte (`await_request`). Everything else a request
//! needs (heads, `Scratch`, the upstream-response and write buffers' slots, the forwarding
//! futures: ~4.8 KB in a debug build, which `connection_sizes` prints) is the request path's
//! future, `serve_http_connection`, boxed when a request's first bytes are there — a connection
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
//! A body that arrived whole with its head (at most [`REPLAY_LIMIT`] framed for the upstream)
//! is held and goes out with the head; any other streams as it arrives (what of it was here
//! goes with the head) (a watch, a slow uploader, a gRPC stream: nothing
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

use std::cell::Cell;
use std::future::{Future, poll_fn};
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::task::Poll;
use std::time::{Duration, SystemTime};

use sluice_core::config::ListenerConfig;
use sluice_core::config::http::{
    HttpCodec, HttpConfig, PathMatch, RouteAction, ServerHeader, upgrade_allowed,
};
use sluice_core::http1::conn::{ConnectionPolicy, ConnectionSettings, Expired};
use sluice_core::http1::{
    BodyFraming, Head, HttpError, Limits, ParseStatus, Version, parse_request, write_local_response,
};
use sluice_core::l7::exchange::{ResponseFlag, status_for};
use sluice_core::l7::grpc::{self, is_grpc};
use sluice_core::path::{PathNormalization, normalize_path_into};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::futures::Notified;
use tokio::time::Instant as TokioInstant;
use tokio::time::Sleep;

use crate::access_log::Entry;
use crate::bufpool::{BufPool, READ_BUFFER};
use crate::downstream::{Alpn, Downstream};
use crate::engine::Engine;
use crate::net::Network;
use crate::now;
use crate::stats::bump;
use respond::{LocalBody, LocalReply, Respond, send_local};

mod body;
#[cfg(test)]
pub(crate) use body::REQUEST_CHUNK_SCANS;
#[cfg(test)]
mod h1_body_tests;
pub(crate) mod respond;
mod stream;
mod upstream;
mod wire;

pub(crate) use upstream::{BreakerUnit, UpstreamConn};

/// Request bodies up to this size are held, or a copy of them kept as they stream, so that a
/// retry can resend them.
pub const REPLAY_LIMIT: usize = 64 * 1024;

const READ_CHUNK: usize = READ_BUFFER;
/// Capacity a per-request copy in a kept [`Scratch`] may keep (see [`Scratch::shed`]).
pub(crate) const KEPT_SCRATCH: usize = 4 * 1024;

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

    /// Appends `bytes` after the unconsumed ones (making room first): an HTTP/2 upstream's
    /// answer head, written rather than read (`wire.rs`).
    fn extend(&mut self, bytes: &[u8]) {
        if self.data.len() - self.end < bytes.len() {
            if self.start > 0 {
                self.data.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            }
            if self.data.len() - self.end < bytes.len() {
                let grown = (self.end + bytes.len())
                    .max(self.data.len() * 2)
                    .max(READ_CHUNK);
                self.data.resize(grown, 0);
            }
        }
        self.data[self.end..self.end + bytes.len()].copy_from_slice(bytes);
        self.end += bytes.len();
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

    /// Polls a read like [`ReadBuffer::fill`]'s, but while it holds no buffer it waits for the first bytes
    /// without keeping one: each poll borrows a buffer from `pool` for the read itself and gives
    /// it back when nothing came, so a connection that sends nothing, or is idle between
    /// requests, holds none — and a request costs no extra read (a one-byte read on the stack
    /// first cost one more `read` per request on a keep-alive connection).
    fn poll_fill_first<R: AsyncRead + Unpin>(
        &mut self,
        r: &mut R,
        pool: &BufPool,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<io::Result<usize>> {
        if !self.data.is_empty() {
            self.make_room();
            let mut rb = ReadBuf::new(&mut self.data[self.end..]);
            return match Pin::new(&mut *r).poll_read(cx, &mut rb) {
                Poll::Ready(Ok(())) => {
                    let n = rb.filled().len();
                    self.end += n;
                    Poll::Ready(Ok(n))
                }
                other => other.map(|r| r.map(|()| 0)),
            };
        }
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

    /// Room after the unconsumed bytes for a read: they move to the front, or the buffer grows.
    fn make_room(&mut self) {
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
    }

    /// Reads once more into the buffer (making room first); returns bytes read (0 = EOF).
    async fn fill<R: AsyncRead + Unpin>(&mut self, r: &mut R) -> io::Result<usize> {
        self.make_room();
        let n = r.read(&mut self.data[self.end..]).await?;
        self.end += n;
        Ok(n)
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
    /// `x-forwarded-for` or path, header values rendered from a large request header): a scratch kept for later requests holds a few KiB at most.
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
        self.rendered_request.shed(KEPT_SCRATCH);
        self.rendered_response.shed(KEPT_SCRATCH);
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

/// When a request head's first byte was there and when the head was complete.
#[derive(Clone, Copy)]
struct HeadTimes {
    first_byte: sluice_core::Instant,
    complete: sluice_core::Instant,
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
            // Boxed while it runs (once per connection, at its start): laid out inline, the
            // sniff's state (its timer, drain watches and read) would be room in the
            // connection's future for the connection's whole life (issue 15).
            let sniff = Box::pin(crate::http2::sniff(self, &mut down, initial, hc));
            match sniff.await {
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
        // The parked wait's drain notification and timer (see `await_request`), made here
        // once: the engine had not stopped before `is_stopping` is read in each wait. The
        // request path keeps its own while it runs.
        let mut stop = std::pin::pin!(self.lifecycle.stop_accepting());
        let mut timer =
            std::pin::pin!(tokio::time::sleep_until(deadline_of(policy.poll_timeout())));
        // `Some(awaiting_response)` when the drain deadline passed (see above), else `None`.
        let drained = loop {
            if rbuf.is_empty() {
                // Parked, or nothing sent yet: the wait for a request's first byte holds
                // only this function's small state.
                let wait = self.await_request(
                    &mut down,
                    &mut rbuf,
                    &mut policy,
                    stop.as_mut(),
                    timer.as_mut(),
                );
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
        // The wait for the next request's drain notification and deadline, kept from request
        // to request (see `await_request`).
        let mut stop = std::pin::pin!(self.lifecycle.stop_accepting());
        let mut timer =
            std::pin::pin!(tokio::time::sleep_until(deadline_of(policy.poll_timeout())));
        loop {
            let lstats = self.listener_stats(listener);
            // Between requests: a connection whose next request is not there yet (a read would
            // wait) is idle and gives its buffers back; a busy one (pipelined or back-to-back
            // requests) keeps them. The idle wait is `poll_fill_first` (a buffer borrowed per poll).
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
            let mut head_times = None;
            let head_read = self
                .read_request_head(
                    &limits,
                    &mut *down,
                    rbuf,
                    &mut head,
                    policy,
                    stop.as_mut(),
                    timer.as_mut(),
                    &mut head_times,
                )
                .await;
            let first_byte_at = head_times.map(|t| t.first_byte);
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
            let t_head = head_times.map_or_else(now, |t| t.complete);
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
            // One clock read for the request's end: its time and the keep-alive decision.
            let done = now();
            let rq_time = done.saturating_duration_since(t_head);
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
                    duration_ms: t0.map_or(0, |t| done.duration_since(t).as_millis() as u64),
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
            if !policy.handle_response_done(done, outcome.reusable, self.lifecycle.is_stopping()) {
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
    /// [`ReadBuffer::poll_fill_first`]), until the policy's deadline: the first request's from
    /// the accept, the idle timeout, or the drain grace — and, after a response, until the park
    /// (see sluice_core::http1::conn). Only a connection's task polls it.
    ///
    /// `stop` (the engine's `stop_accepting`, made before the engine could have stopped) and
    /// `timer` are the caller's, so that a busy connection keeps one of each from request to
    /// request: a `Notified` registers with the engine's `Notify` (a mutex) when first polled
    /// and leaves it when dropped, and a timer is put in tokio's wheel when first polled and
    /// taken out when dropped — per request, ~400 instructions (BENCHMARKS.md). A kept timer
    /// whose deadline moves later is only re-armed (tokio's `reset` extends a registered entry
    /// in place; the wheel re-files it when its old slot comes up).
    ///
    /// One `poll_fn` (a `biased` select of the drain notification, the timer and the read,
    /// written out) rather than an `async fn` around a `select!`: a parked connection's future
    /// holds this wait, and its state is then only the borrows it polls through, not each
    /// layer's copies of them (issue 15: `connection_sizes`).
    fn await_request<'w>(
        &'w self,
        down: &'w mut Downstream<N::Stream>,
        rbuf: &'w mut ReadBuffer,
        policy: &'w mut ConnectionPolicy,
        mut stop: Pin<&'w mut Notified<'_>>,
        mut timer: Pin<&'w mut Sleep>,
    ) -> impl Future<Output = Waited> + 'w {
        // Whether the engine was stopping when this wait began or last went round (a
        // `select!`'s condition on the drain branch): the drain notification counts once.
        let mut draining = self.lifecycle.is_stopping();
        poll_fn(move |cx| {
            loop {
                let deadline = deadline_of(policy.poll_timeout());
                if timer.deadline() != deadline {
                    timer.as_mut().reset(deadline);
                }
                if !draining && stop.as_mut().poll(cx).is_ready() {
                    policy.handle_drain(now());
                    draining = self.lifecycle.is_stopping();
                    continue;
                }
                if timer.as_mut().poll(cx).is_ready() {
                    match policy.handle_timeout(now()) {
                        None => {
                            draining = self.lifecycle.is_stopping();
                            continue;
                        }
                        Some(Expired::Park) => return Poll::Ready(Waited::Park),
                        Some(Expired::FirstByteTimeout) => {
                            return Poll::Ready(Waited::FirstByteTimeout);
                        }
                        Some(_) => return Poll::Ready(Waited::Closed),
                    }
                }
                return match rbuf.poll_fill_first(&mut *down, &self.http_buffers, cx) {
                    Poll::Pending => Poll::Pending,
                    Poll::Ready(Ok(0) | Err(_)) => {
                        policy.handle_closed();
                        Poll::Ready(Waited::Closed)
                    }
                    Poll::Ready(Ok(_)) => Poll::Ready(Waited::Bytes),
                };
            }
        })
    }

    /// Reads a request head into `head` (waiting for its first byte with `stop` and `timer`,
    /// see [`Engine::await_request`]); `times` gets when its first byte was there and when
    /// it was complete.
    #[allow(clippy::too_many_arguments)]
    async fn read_request_head(
        &self,
        limits: &Limits,
        down: &mut Downstream<N::Stream>,
        rbuf: &mut ReadBuffer,
        head: &mut Head,
        policy: &mut ConnectionPolicy,
        mut stop: Pin<&mut Notified<'_>>,
        mut timer: Pin<&mut Sleep>,
        times: &mut Option<HeadTimes>,
    ) -> HeadRead {
        // Idle between requests: wait for the first byte (pipelined bytes already buffered
        // skip the wait), or park.
        if rbuf.is_empty() {
            match self
                .await_request(down, rbuf, policy, stop.as_mut(), timer.as_mut())
                .await
            {
                Waited::Bytes => {}
                Waited::Closed => return HeadRead::Closed,
                Waited::FirstByteTimeout => return HeadRead::FirstByteTimeout,
                Waited::Park => return HeadRead::Park,
            }
        }
        let at = now();
        *times = Some(HeadTimes {
            first_byte: at,
            complete: at,
        });
        policy.handle_first_byte(at);
        let deadline = deadline_of(policy.poll_timeout());
        let mut waited = false;
        loop {
            match parse_request(rbuf.bytes(), limits, head) {
                Ok(ParseStatus::Complete) => {
                    // A head whole with its first bytes is complete when they came (the
                    // parse between is no wait): no second clock read for the common case.
                    if waited && let Some(t) = times {
                        t.complete = now();
                    }
                    policy.handle_head_complete();
                    return HeadRead::Ready;
                }
                Ok(ParseStatus::Partial) => {}
                Err(e) => {
                    policy.handle_closed();
                    return reject(&e);
                }
            }
            waited = true;
            if timer.deadline() != deadline {
                timer.as_mut().reset(deadline);
            }
            let read = tokio::select! {
                biased;
                () = timer.as_mut() => {
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
    /// the downstream ([`Respond`]): the client's connection, or an HTTP/2 stream
    /// ([`crate::http2`]: its request body handed over and its response taken typed).
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn serve_request<D: Respond>(
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
                let close = has_body || !head.keep_alive() || self.lifecycle.is_stopping();
                let reply = LocalReply {
                    status: *status,
                    server: ServerHeader::local_field(server),
                    body: LocalBody::Text(body.as_bytes()),
                    close,
                };
                let ok = send_local(down, out, &reply).await.is_ok();
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
    async fn local_reply<D: Respond>(
        &self,
        grpc: bool,
        server: Option<&ServerHeader>,
        down: &mut D,
        out: &mut Vec<u8>,
        status: u16,
        flag: ResponseFlag,
        close: bool,
    ) -> Outcome {
        self.local_reply_text(
            grpc,
            server,
            down,
            out,
            status,
            flag,
            local_body(flag),
            close,
        )
        .await
    }

    /// [`Engine::local_reply`] with `text` for its body (a gRPC request's `grpc-message`)
    /// instead of the flag's: an answer that names what failed.
    #[allow(clippy::too_many_arguments)]
    async fn local_reply_text<D: Respond>(
        &self,
        grpc: bool,
        server: Option<&ServerHeader>,
        down: &mut D,
        out: &mut Vec<u8>,
        status: u16,
        flag: ResponseFlag,
        text: &'static [u8],
        close: bool,
    ) -> Outcome {
        // Draining: the client must reconnect for its next request.
        let close = close || self.lifecycle.is_stopping();
        let body = if grpc {
            LocalBody::GrpcTrailersOnly {
                status: grpc::local_status(flag, status),
                message: text.trim_ascii_end(),
            }
        } else {
            LocalBody::Text(text)
        };
        let reply = LocalReply {
            status,
            server: ServerHeader::local_field(server),
            body,
            close,
        };
        let ok = send_local(down, out, &reply).await.is_ok();
        let mut o = Outcome::local(reply.sent_status(), flag, out.len());
        o.reusable = ok && !close;
        o
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

/// Issue 15: an idle keep-alive connection gives its buffers back to the worker's pool.
#[cfg(test)]
mod idle_buffer_tests {
    use std::sync::Arc;
    use std::time::Duration;

    use sluice_core::config::Config;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    use crate::engine::Engine;
    use crate::h2_test_client::{answered, body_to_end, h2c_client};
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
        // A `%REQ(x-big)%` value rendered from a 30 KB request header, for both directions.
        let big = "x".repeat(30_000);
        let echo = |name: &str| sluice_core::config::http::HeaderValue {
            name: name.into(),
            value: "%REQ(x-big)%".into(),
            format: sluice_core::config::header_format::HeaderFormat::parse("%REQ(x-big)%")
                .unwrap(),
            append_action: Default::default(),
        };
        let route_add = [echo("x-echo"), echo("x-echo2")];
        let lookup = |name: &str| (name == "x-big").then_some(big.as_bytes());
        let ctx = sluice_core::config::header_format::FormatContext {
            downstream_remote: v4,
            protocol: "HTTP/1.1",
            hostname: "h",
            request_header: &lookup,
            request_line: Default::default(),
        };
        kept.rendered_request.render(&route_add, &ctx);
        kept.rendered_response.render(&route_add, &ctx);
        assert!(kept.rendered_request.capacity() >= 60_000);
        kept.shed();
        assert_eq!((kept.xff.capacity(), kept.replay.capacity()), (0, 0));
        assert!(kept.rendered_request.capacity() <= super::KEPT_SCRATCH);
        assert!(kept.rendered_response.capacity() <= super::KEPT_SCRATCH);
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

    /// A request forwarded on a keep-alive connection to a pooled upstream connection reads
    /// the clock (`crate::now`) at most 7 times with the defaults: where nothing waits between
    /// two reads, the path shares one (the head whole with its first bytes is complete when
    /// they came; the request's end gives its time and the keep-alive decision, and the
    /// upstream connection's return to the pool; a pooled connection's take is the try's start
    /// and its connect). It was 11, then 8. Counted per request
    /// (the fewest of five, so that a periodic task of the engine reading the clock meanwhile
    /// does not count).
    #[test]
    fn a_forwarded_request_reads_the_clock_at_most_seven_times() {
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
            - match: {{ prefix: / }}
              route: {{ cluster: up }}
clusters:
  - name: up
    hosts: [ {{ address: "{up_at}" }} ]
"#
            );
            let _engine = serve(&yaml, listener);
            let mut c = tokio::net::TcpStream::connect(at).await.unwrap();
            let request = b"GET /x HTTP/1.1\r\nhost: x\r\n\r\n";
            // The first request opens the upstream connection; the next ones take it from the
            // pool.
            c.write_all(request).await.unwrap();
            read_responses(&mut c, 1, "upstream").await;
            let mut fewest = u64::MAX;
            for _ in 0..5 {
                let before = crate::CLOCK_READS.with(std::cell::Cell::get);
                c.write_all(request).await.unwrap();
                let got = read_responses(&mut c, 1, "upstream").await;
                assert!(got.starts_with("HTTP/1.1 200 OK\r\n"), "{got}");
                // The proxy's task ran the request to its end (and to the wait for the next)
                // before this one saw the answer: one thread, and it did not yield between.
                let reads = crate::CLOCK_READS.with(std::cell::Cell::get) - before;
                fewest = fewest.min(reads);
            }
            assert!(fewest <= 7, "{fewest} clock reads per forwarded request");
        });
    }

    /// A drain that starts while a busy connection waits for its next request (within the park
    /// grace, it still holds its request path, whose wait for the drain is kept from request to
    /// request: made before the drain, polled across requests) closes it.
    #[test]
    fn a_drain_reaches_a_busy_connection_waiting_for_its_next_request() {
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
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            let _engine = serve_until(&yaml, listener, async move {
                let _ = stopped.await;
            });
            let request = b"GET / HTTP/1.1\r\nhost: x\r\n\r\n";
            let mut c = tokio::net::TcpStream::connect(at).await.unwrap();
            for _ in 0..3 {
                c.write_all(request).await.unwrap();
                read_responses(&mut c, 1, "first").await;
            }
            stop.send(()).unwrap();
            let mut rest = Vec::new();
            tokio::time::timeout(Duration::from_secs(5), c.read_to_end(&mut rest))
                .await
                .expect("the drain closes the connection")
                .unwrap();
            assert_eq!(rest, b"", "nothing was asked: nothing answered");
        });
    }

    /// The most an HTTP/1.1 connection's future (what a parked connection, or one that sent
    /// nothing, holds besides its task and socket) may take, in a debug build: 928 B when this
    /// was written. The HTTP/2 sniff is boxed while it runs, and the wait for a request is one
    /// `poll_fn` over the connection's own drain watch and timer (issue 15: with the sniff
    /// inline and the wait an `async fn` making its own, it took 1,096 B).
    const HTTP1_CONNECTION_FUTURE_MAX: usize = 960;

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
            assert!(
                connection_size <= HTTP1_CONNECTION_FUTURE_MAX,
                "a parked HTTP/1.1 connection's future is {connection_size} B (at most {HTTP1_CONNECTION_FUTURE_MAX})"
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
            let (mut client, _conn) = h2c_client(at).await;
            for _ in 0..2 {
                client = client.ready().await.unwrap();
                let request = http::Request::get("http://x/a").body(()).unwrap();
                let (response, _) = client.send_request(request, true).unwrap();
                let response = answered(response).await;
                assert_eq!(response.status(), 200);
                let got = body_to_end(&mut response.into_body()).await;
                assert_eq!(got, b"first");
                // The stream ended: its request and upstream-response buffers are the pool's
                // (the second stream took the same ones: the count does not grow). Its answer
                // went to the stream typed, through no write buffer: none was ever made.
                assert_eq!(pooled_becomes(&engine, (2, 0)).await, (2, 0));
            }
        });
    }
}
