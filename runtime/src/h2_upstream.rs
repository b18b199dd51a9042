//! HTTP/2 upstreams (`protocol: http2` clusters): the per-worker pool of multiplexed
//! connections, and the adapter that carries one request as an HTTP/2 stream.
//!
//! ## Pool
//!
//! Owned by one worker (no lock): `[cluster][host]` lists of connections. A request takes a
//! stream on the first connection of its host that is alive, not going away (no GOAWAY seen)
//! and has fewer streams open than the peer's `SETTINGS_MAX_CONCURRENT_STREAMS` (until the
//! peer's first SETTINGS arrive, [`STREAMS_BEFORE_SETTINGS`] may be queued on it; `h2` opens
//! none before those SETTINGS, since it starts with a limit of 0). When every connection is full
//! the request opens another one, through the core's `OpenConnection` like an HTTP/1.1 request,
//! so the cluster's `max_connections` breaker bounds them. A connection's breaker unit and its
//! host's `cx_active` are held by the connection itself, inside the task that drives it, and
//! given back when it closes. A connection with no stream for the cluster's
//! `upstream_idle_timeout` is dropped from the pool ([`H2Pool::sweep`]); `h2` then closes it.
//!
//! An `original_dst` cluster's connections are kept by `(cluster, destination)` instead of
//! `[cluster][host]` ([`Peer::Destination`]), with the same rules (connect dedup included). The
//! destinations are bounded ([`MAX_DESTINATIONS`] per worker: one more takes the place of the
//! one idle the longest, or is not pooled while all are busy) and swept: a destination whose
//! last connection went is forgotten. Invariant: no destination entry is empty, and an attempt
//! entry exists only while it counts an attempt under way.
//!
//! The pool's state is published in the worker's stats, per host and per cluster
//! ([`crate::stats::PoolGauge`]; a destination counts under its cluster only): a connection from
//! its handshake until the task driving it ends (in the pool or not), a stream from
//! [`H2Upstream::new`] to its drop. Relaxed stores on the worker's own lines; nothing else per
//! request.
//!
//! ## One request as a stream ([`H2Upstream`])
//!
//! The request path ([`crate::http`]) speaks HTTP/1.1 bytes to its upstream; for an HTTP/2
//! cluster its upstream is an [`H2Upstream`], which translates both ways, mirroring
//! [`crate::http2`]'s downstream adapter:
//!
//! - written bytes are the HTTP/1.1 request (head with the route's edits, then the body in its
//!   framing): the head becomes HEADERS (`Host` → `:authority`, connection-specific fields
//!   dropped, `te: trailers` kept — `sluice_core::http2::request_fields`), the body DATA sent
//!   within the stream's send window, chunked trailers HTTP/2 trailers. A write is pending
//!   until the previous one went out: one read of the client's body waits per stream.
//! - the answer's head is **written, not formatted and parsed**: [`H2Upstream::poll_response_head`]
//!   writes the HEADERS into the path's response buffer and `Head` with the core's
//!   `sluice_core::http2::build_response_head` (the HTTP/1.1 layout every reader of a `Head`
//!   works on, its spans, status, content length and framing recorded as written — with
//!   `transfer-encoding: chunked` when the answer has no `content-length` and may have a body,
//!   `content-length: 0` when its HEADERS ended the stream), equal span by span to what a parse
//!   of those bytes gives (property-tested and fuzzed in the core). A head that parse would
//!   refuse (a status outside 100..=599, conflicting lengths, a control character, over the
//!   path's response limits) is refused the same way: a protocol error, answered 502. Interim
//!   (1xx) answers never reach it: `h2` skips them.
//! - reads then give the body as HTTP/1.1: DATA as it comes (as chunks when the head says
//!   `chunked`), HTTP/2 trailers as chunked trailers. Receive window is given back to the
//!   upstream only as the request path reads: a client that does not read stops its upstream
//!   stream after the stream window ([`STREAM_WINDOW`]) plus one DATA frame.
//!
//! A stream dropped before its end (the client went away, a timeout, or an answer that ended
//! while the request body was still being sent) is reset with RST_STREAM(CANCEL) by `h2`; its
//! connection stays for the other streams.
//!
//! ## Refused streams
//!
//! A stream the upstream refused (RST_STREAM `REFUSED_STREAM`) or that a GOAWAY left
//! unprocessed (its id above `last_stream_id`, or opened after the GOAWAY) fails with an error
//! [`is_refused`] recognizes; the request path reports it as `TryFailure::Refused` and the
//! core's exchange sends it again (on another connection: a connection going away is never
//! picked again), whatever the method. Streams at or below `last_stream_id` finish.
//!
//! ## Lost connections
//!
//! A connection the upstream closed or reset **without a GOAWAY** fails its streams with an IO
//! error; [`H2Upstream::connection_lost`] says so for a stream that was **alone** on its pooled
//! connection when it was put on it, and the request path reports such a failure as a possibly
//! stale connection (the HTTP/1.1 keep-alive race: the upstream closed an idle connection as a
//! request went out on it), which the core's exchange sends again once on a fresh connection
//! for an idempotent request. Streams that shared a busy connection are not resent: a crash
//! that kills many streams at once (maybe caused by one of them) must not fan out into as many
//! untracked resends; they fail as resets, for `retry_on` to decide. A stream the upstream reset itself
//! (RST_STREAM) may have been processed and is not such a failure; neither is a connection that
//! got a GOAWAY (it said which streams it processed) nor one that Sluice closed because a PING
//! went unanswered (the upstream is hung, not gone).
//!
//! Cost per stream against HTTP/1.1: the `http::Request` / `HeaderMap` the `h2` crate takes,
//! **one head parse** — the request head the path wrote as HTTP/1.1, parsed back here into
//! HEADERS (the answer's head is written, not parsed: there were two parses per stream before,
//! a test counts them) —, the de-chunking of a body of unknown length the path framed as
//! chunks, a copy of each body chunk into a `Bytes`, and the answer's head bytes copied once
//! into the path's buffer. What remains to type: the request's HEADERS built from the path's
//! typed head and its edit list (`sluice_core::l7::edits`) instead of the parse, and its body
//! taken as pieces rather than in HTTP/1.1 framing.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use h2::client::{ResponseFuture, SendRequest};
use h2::{RecvStream, SendStream};
use sluice_core::Instant;
use sluice_core::config::Http2Keepalive;
use sluice_core::http1::{
    BodyFraming, Chunked, ChunkedDecoder, Head, HttpError, Limits, Method, ParseStatus,
    parse_request, write_trailers,
};
use sluice_core::http2::{
    ResponseHead, build_response_head, is_connection_specific, request_fields,
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::stats::{PoolGauge, WorkerStats, bump, gauge_add};

/// Streams queued on a new connection before the peer's first SETTINGS say how many may be
/// open (RFC 9113 §6.5.2 recommends a limit of at least 100); `h2` opens none of them before.
pub const STREAMS_BEFORE_SETTINGS: usize = 100;
/// The receive window of each upstream stream: what an upstream may send ahead of a client that
/// does not read (h2's default, 64 KiB, throttles a fast upstream on a long path).
pub const STREAM_WINDOW: u32 = 256 * 1024;
/// The receive window of each upstream connection: several streams' worth, so that one slow
/// reader does not stall the others.
pub const CONNECTION_WINDOW: u32 = 4 * STREAM_WINDOW;
/// The largest response header list accepted from an upstream (h2's default is 16 MiB): the
/// HTTP/1.1 path's response head limit.
pub const MAX_HEADER_LIST_SIZE: u32 = 128 * 1024;
/// Bytes `h2` buffers per stream beyond the peer's window (the adapter sends only within it).
const MAX_SEND_BUFFER: usize = 64 * 1024;
/// Limits for the request heads the adapter parses (the request path built them).
const REQUEST_LIMITS: Limits = Limits {
    max_head_bytes: 1024 * 1024,
    max_headers: 1024,
};

/// The `h2` client settings of every upstream connection.
pub(crate) fn client_builder() -> h2::client::Builder {
    let mut b = h2::client::Builder::new();
    b.initial_max_send_streams(0)
        .enable_push(false)
        .initial_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_header_list_size(MAX_HEADER_LIST_SIZE)
        .max_send_buffer_size(MAX_SEND_BUFFER);
    b
}

/// One pooled HTTP/2 connection.
pub(crate) struct H2Conn {
    send: SendRequest<Bytes>,
    /// Streams open on it (held by [`H2Upstream`]s).
    streams: Cell<usize>,
    /// The task driving the connection ended (closed, failed).
    ended: Rc<Cell<bool>>,
    /// A GOAWAY arrived (seen by a stream or by the pool).
    going_away: Cell<bool>,
    /// Sluice closed it because a keepalive PING went unanswered.
    ping_unanswered: Rc<Cell<bool>>,
    /// When its last stream ended (for the idle timeout).
    idle_since: Cell<Instant>,
    /// Its cluster and host (`None`: an `original_dst` destination), whose pool gauges count
    /// it and its streams.
    cluster: usize,
    host: Option<usize>,
}

impl H2Conn {
    /// Whether `h2` saw a GOAWAY on the connection (kept as its connection error after the
    /// EOF that follows a graceful shutdown), read without IO.
    fn got_goaway(&self) -> bool {
        let mut probe = self.send.clone();
        matches!(
            probe.poll_ready(&mut Context::from_waker(Waker::noop())),
            Poll::Ready(Err(e)) if e.is_go_away()
        )
    }

    /// Whether a new stream may go on it: alive, not going away, below the peer's limit.
    fn usable(&self, stats: &WorkerStats) -> bool {
        if self.ended.get() || self.going_away.get() {
            return false;
        }
        // A GOAWAY sets h2's connection error: a fresh handle's readiness says so without IO.
        let mut probe = self.send.clone();
        match probe.poll_ready(&mut Context::from_waker(Waker::noop())) {
            Poll::Ready(Ok(())) => {}
            Poll::Ready(Err(e)) => {
                if e.is_go_away() {
                    bump(&stats.http2_upstream_goaway_received, 1);
                }
                self.going_away.set(true);
                return false;
            }
            Poll::Pending => return false,
        }
        let limit = match self.send.current_max_send_streams() {
            0 => STREAMS_BEFORE_SETTINGS,
            n => n,
        };
        self.streams.get() < limit
    }
}

/// One cluster's connections, per host.
type ClusterConns = Vec<Vec<Rc<H2Conn>>>;

/// Where a pooled connection goes: one of its cluster's hosts (by index), or, for an
/// `original_dst` cluster, a destination address (its one placeholder host stands for them
/// all).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Peer {
    Host(usize),
    Destination(SocketAddr),
}

/// Destinations of `original_dst` clusters with HTTP/2 connections pooled, per worker (as many
/// as HTTP/1.1's [`crate::pool::MAX_IDLE_DESTINATIONS`]). A connection to one more destination
/// takes the place of the destination idle the longest (no stream open on any of its
/// connections), whose connections close; when every destination has a stream open, of the one
/// with the fewest streams open: its connections leave the pool (no new stream goes on them),
/// finish the streams they carry and then close — so the new destination is pooled, and a
/// burst to it still opens one connection.
pub const MAX_DESTINATIONS: usize = crate::pool::MAX_IDLE_DESTINATIONS;

/// Connections of `original_dst` clusters by `(cluster, destination)`; an entry whose last
/// connection went is removed.
type ByDestination = HashMap<(usize, SocketAddr), Vec<Rc<H2Conn>>>;

/// The worker's HTTP/2 upstream connections, `[cluster][host]`, and those of `original_dst`
/// clusters by destination.
pub struct H2Pool {
    conns: RefCell<Vec<ClusterConns>>,
    /// `original_dst` clusters: `(cluster, destination)` → connections, at most
    /// [`MAX_DESTINATIONS`] entries; the multiplexing rules are a host's.
    by_destination: RefCell<ByDestination>,
    timeouts: Vec<Duration>,
    /// Connections being established, `[cluster][host]`: a request that finds every
    /// connection full waits for one of these rather than opening its own (a burst opens one
    /// connection, not one per request). With each count, the host id's generation: moved
    /// when the id names another host ([`H2Pool::forget_host`]), which forgets the attempts to
    /// the old one — its requests no longer wait for them.
    connecting: RefCell<Vec<Vec<Attempts>>>,
    /// The same for destinations of `original_dst` clusters: attempts under way by
    /// `(cluster, destination)` (an entry leaves with its last attempt).
    connecting_to: RefCell<HashMap<(usize, SocketAddr), usize>>,
    /// Woken when a connection attempt ends (made or failed).
    settled: tokio::sync::Notify,
    /// [`MAX_DESTINATIONS`] (smaller in tests).
    max_destinations: usize,
}

/// Connection attempts under way to one host id, and the id's generation (see
/// [`H2Pool::connecting`]).
#[derive(Clone, Copy, Debug, Default)]
struct Attempts {
    generation: u64,
    count: usize,
}

/// Counts one connection attempt to a host or destination while alive (see
/// [`H2Pool::connecting`]).
pub(crate) struct Connecting<'a> {
    pool: &'a H2Pool,
    cluster: usize,
    peer: Peer,
    /// The host id's generation when the attempt started: it no longer counts once the id
    /// names another host.
    generation: u64,
}

impl Drop for Connecting<'_> {
    fn drop(&mut self) {
        match self.peer {
            Peer::Host(host) => {
                let mut connecting = self.pool.connecting.borrow_mut();
                let attempts = &mut connecting[self.cluster][host];
                if attempts.generation == self.generation {
                    attempts.count -= 1;
                }
            }
            Peer::Destination(d) => {
                let mut connecting = self.pool.connecting_to.borrow_mut();
                if let Some(count) = connecting.get_mut(&(self.cluster, d)) {
                    *count -= 1;
                    if *count == 0 {
                        connecting.remove(&(self.cluster, d));
                    }
                }
            }
        }
        self.pool.settled.notify_waiters();
    }
}

/// The first connection of `list` with room for one more stream; connections found closed or
/// going away leave the list.
fn pick(list: &mut Vec<Rc<H2Conn>>, stats: &WorkerStats) -> Option<Rc<H2Conn>> {
    list.retain(|c| !c.ended.get() && !c.going_away.get());
    let found = list.iter().find(|c| c.usable(stats)).cloned();
    list.retain(|c| !c.going_away.get());
    found
}

/// Keeps the connections of `list` that are alive, not going away, and busy or idle for less
/// than `timeout`; returns how many it dropped.
fn sweep_list(list: &mut Vec<Rc<H2Conn>>, now: Instant, timeout: Duration) -> usize {
    let before = list.len();
    list.retain(|c| {
        !c.ended.get()
            && !c.going_away.get()
            && (c.streams.get() > 0 || now.duration_since(c.idle_since.get()) < timeout)
    });
    before - list.len()
}

impl H2Pool {
    /// An empty pool shaped like the clusters: `(host count, idle timeout)` of each.
    pub fn new(clusters: impl Iterator<Item = (usize, Duration)>) -> Self {
        let (conns, timeouts): (Vec<ClusterConns>, Vec<Duration>) = clusters
            .map(|(n, timeout)| ((0..n).map(|_| Vec::new()).collect(), timeout))
            .unzip();
        let connecting = conns
            .iter()
            .map(|hosts| vec![Attempts::default(); hosts.len()])
            .collect();
        H2Pool {
            conns: RefCell::new(conns),
            by_destination: RefCell::default(),
            timeouts,
            connecting: RefCell::new(connecting),
            connecting_to: RefCell::default(),
            settled: tokio::sync::Notify::new(),
            max_destinations: MAX_DESTINATIONS,
        }
    }

    /// Marks a connection attempt to the host or destination until the guard is dropped
    /// (after the new connection is in the pool, or failed).
    pub(crate) fn connecting(&self, cluster: usize, peer: Peer) -> Connecting<'_> {
        let generation = match peer {
            Peer::Host(host) => {
                let mut connecting = self.connecting.borrow_mut();
                let attempts = &mut connecting[cluster][host];
                attempts.count += 1;
                attempts.generation
            }
            Peer::Destination(d) => {
                *self
                    .connecting_to
                    .borrow_mut()
                    .entry((cluster, d))
                    .or_default() += 1;
                0
            }
        };
        Connecting {
            pool: self,
            cluster,
            peer,
            generation,
        }
    }

    /// Connection attempts under way to the host or destination.
    fn attempts(&self, cluster: usize, peer: Peer) -> usize {
        match peer {
            Peer::Host(host) => self.connecting.borrow()[cluster][host].count,
            Peer::Destination(d) => self
                .connecting_to
                .borrow()
                .get(&(cluster, d))
                .copied()
                .unwrap_or(0),
        }
    }

    /// A connection with room for one more stream: one in the pool, or the next one being
    /// established to the host or destination (waited for until `deadline`). `None`: open a
    /// new one.
    pub(crate) async fn wait_for_room(
        &self,
        cluster: usize,
        peer: Peer,
        stats: &WorkerStats,
        deadline: tokio::time::Instant,
    ) -> Option<Rc<H2Conn>> {
        loop {
            if let Some(c) = self.take(cluster, peer, stats) {
                return Some(c);
            }
            if self.attempts(cluster, peer) == 0 {
                return None;
            }
            // Created before any await: a notification from now on is not missed.
            let settled = self.settled.notified();
            tokio::select! {
                biased;
                () = settled => {}
                () = tokio::time::sleep_until(deadline) => return None,
            }
        }
    }

    /// A connection to the host or destination with room for one more stream, if any;
    /// connections found closed or going away leave the pool.
    pub(crate) fn take(
        &self,
        cluster: usize,
        peer: Peer,
        stats: &WorkerStats,
    ) -> Option<Rc<H2Conn>> {
        match peer {
            Peer::Host(host) => pick(&mut self.conns.borrow_mut()[cluster][host], stats),
            Peer::Destination(d) => {
                let mut all = self.by_destination.borrow_mut();
                let list = all.get_mut(&(cluster, d))?;
                let found = pick(list, stats);
                if list.is_empty() {
                    all.remove(&(cluster, d));
                }
                found
            }
        }
    }

    /// Forgets the host's connections (a DNS answer gave its id to another address): no new
    /// stream goes on them; streams already open finish, and each connection closes when its
    /// last stream is dropped.
    pub(crate) fn forget_host(&self, cluster: usize, host: usize) {
        if let Some(list) = self.conns.borrow_mut()[cluster].get_mut(host) {
            list.clear();
        }
        // Attempts to the old host no longer hold the new one's requests back: they open
        // their own connection (an attempt that finishes is not pooled for the new host).
        if let Some(attempts) = self.connecting.borrow_mut()[cluster].get_mut(host) {
            attempts.generation += 1;
            attempts.count = 0;
        }
        self.settled.notify_waiters();
    }

    /// Hands a new connection (from [`crate::h2_upstream::handshake`]) to the pool. A
    /// destination beyond [`MAX_DESTINATIONS`] makes room (see there).
    pub(crate) fn put(&self, cluster: usize, peer: Peer, conn: Rc<H2Conn>) {
        let d = match peer {
            Peer::Host(host) => {
                self.conns.borrow_mut()[cluster][host].push(conn);
                return;
            }
            Peer::Destination(d) => d,
        };
        let mut all = self.by_destination.borrow_mut();
        if all.len() >= self.max_destinations && !all.contains_key(&(cluster, d)) {
            // The destination idle the longest goes; when every one has a stream open, the
            // one with the fewest (its streams finish on connections that left the pool).
            let streams =
                |list: &Vec<Rc<H2Conn>>| list.iter().map(|c| c.streams.get()).sum::<usize>();
            let idle_since = |list: &Vec<Rc<H2Conn>>| list.iter().map(|c| c.idle_since.get()).max();
            let leaving = all
                .iter()
                .min_by_key(|(_, list)| (streams(list), idle_since(list)))
                .map(|(k, _)| *k);
            if let Some(k) = leaving {
                all.remove(&k);
            }
        }
        all.entry((cluster, d)).or_default().push(conn);
    }

    /// Drops the connections that ended, go away, or had no stream for their cluster's idle
    /// timeout (and the destinations left with none); returns how many.
    pub fn sweep(&self, now: Instant) -> usize {
        let mut dropped = 0;
        for (hosts, &timeout) in self.conns.borrow_mut().iter_mut().zip(&self.timeouts) {
            for list in hosts {
                dropped += sweep_list(list, now, timeout);
            }
        }
        self.by_destination
            .borrow_mut()
            .retain(|&(cluster, _), list| {
                dropped += sweep_list(list, now, self.timeouts[cluster]);
                !list.is_empty()
            });
        dropped
    }

    /// HTTP/2 connections in the pool.
    pub fn connection_count(&self) -> usize {
        self.conns
            .borrow()
            .iter()
            .flatten()
            .map(Vec::len)
            .sum::<usize>()
            + self
                .by_destination
                .borrow()
                .values()
                .map(Vec::len)
                .sum::<usize>()
    }

    /// Destinations of `original_dst` clusters with connections in the pool.
    pub fn destination_count(&self) -> usize {
        self.by_destination.borrow().len()
    }
}

/// Starts HTTP/2 on a new upstream connection to `peer` of cluster `cluster` (`io` holds the
/// connection's accounting: its host's `cx_active` and its `max_connections` unit, given back
/// when the connection closes) and spawns the task that drives it; the connection counts in
/// its cluster's and host's [`PoolGauge::Http2Connections`] while that task runs. Must run
/// inside the worker's `LocalSet`.
pub(crate) async fn handshake<S>(
    io: S,
    stats: &Arc<WorkerStats>,
    now: Instant,
    keepalive: Option<Http2Keepalive>,
    cluster: usize,
    peer: Peer,
    jitter_seed: u64,
) -> io::Result<Rc<H2Conn>>
where
    S: AsyncRead + AsyncWrite + Unpin + 'static,
{
    // Whether bytes came from the upstream since the keepalive's last look (Envoy extends a
    // PING's timeout while frames arrive: its ACK may be queued behind them).
    let received = Rc::new(Cell::new(false));
    let io = Watched {
        inner: io,
        received: received.clone(),
    };
    let (send, mut connection) = client_builder()
        .handshake::<_, Bytes>(io)
        .await
        .map_err(io::Error::other)?;
    bump(&stats.http2_upstream_cx_total, 1);
    let ended = Rc::new(Cell::new(false));
    let done = ended.clone();
    let ping_unanswered = Rc::new(Cell::new(false));
    let hung = ping_unanswered.clone();
    let task_stats = stats.clone();
    let host = match peer {
        Peer::Host(h) => Some(h),
        Peer::Destination(_) => None,
    };
    gauge_add(&stats.http2_upstream_cx_active, true);
    stats.pool_gauge_add(cluster, host, PoolGauge::Http2Connections, 1);
    let pings = keepalive.and_then(|k| Some((k, connection.ping_pong()?)));
    tokio::task::spawn_local(async move {
        let ended = match pings {
            None => (&mut connection).await,
            Some((keepalive, pings)) => {
                let jitter = sluice_core::rng::Rng::from_seed(jitter_seed);
                let ping = Keepalive {
                    settings: keepalive,
                    pings,
                    jitter,
                    received: &received,
                };
                drive_with_keepalive(&mut connection, ping, &task_stats, &hung).await
            }
        };
        if let Err(e) = ended {
            tracing::debug!(error = %e, "HTTP/2 upstream connection ended");
        }
        // Dropping the connection fails the streams still on it (as resets).
        drop(connection);
        done.set(true);
        gauge_add(&task_stats.http2_upstream_cx_active, false);
        task_stats.pool_gauge_add(cluster, host, PoolGauge::Http2Connections, -1);
    });
    Ok(Rc::new(H2Conn {
        send,
        streams: Cell::new(0),
        ended,
        going_away: Cell::new(false),
        ping_unanswered,
        idle_since: Cell::new(now),
        cluster,
        host,
    }))
}

/// A connection's PING keepalive: its settings, `h2`'s PING handle, the jitter's draws, and
/// whether bytes came from the upstream since the last look.
struct Keepalive<'a> {
    settings: Http2Keepalive,
    pings: h2::PingPong,
    jitter: sluice_core::rng::Rng,
    received: &'a Cell<bool>,
}

/// Drives a connection while sending a PING every `interval` (plus its jitter); one not
/// answered within `timeout` ends it (`Ok`, with `unanswered` set: the caller drops the
/// connection, which closes the socket and fails its streams as resets, seen by outlier
/// detection like any reset). As in Envoy, bytes that arrive while the PING is out extend its
/// timeout by another `timeout` (its ACK may be queued behind a large response).
async fn drive_with_keepalive<C>(
    connection: &mut C,
    mut k: Keepalive<'_>,
    stats: &WorkerStats,
    unanswered: &Cell<bool>,
) -> Result<(), h2::Error>
where
    C: Future<Output = Result<(), h2::Error>> + Unpin,
{
    loop {
        let wait = k.settings.next_ping_after(k.jitter.next_u32());
        tokio::select! {
            r = &mut *connection => return r,
            () = tokio::time::sleep(wait) => {}
        }
        k.received.set(false);
        let ping = k.pings.ping(h2::Ping::opaque());
        tokio::pin!(ping);
        let pong = loop {
            tokio::select! {
                r = &mut *connection => return r,
                pong = &mut ping => break pong,
                () = tokio::time::sleep(k.settings.timeout) => {
                    if k.received.replace(false) {
                        continue;
                    }
                    bump(&stats.http2_upstream_keepalive_timeout, 1);
                    unanswered.set(true);
                    tracing::debug!("HTTP/2 upstream PING unanswered: closing the connection");
                    return Ok(());
                }
            }
        };
        if pong.is_err() {
            // The connection failed: its own poll says how.
            return connection.await;
        }
    }
}

/// What `h2` reads from an upstream passes here, which notes that bytes came (for the PING
/// keepalive: [`drive_with_keepalive`]); writes go straight through.
struct Watched<S> {
    inner: S,
    received: Rc<Cell<bool>>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let from = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > from {
            self.received.set(true);
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
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

/// What an upstream did to a stream that says it was never processed.
#[derive(Debug)]
struct Unprocessed(h2::Error);

impl std::fmt::Display for Unprocessed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "refused by the upstream, not processed: {}", self.0)
    }
}

impl std::error::Error for Unprocessed {}

/// Whether `e` is an HTTP/2 upstream's refusal of a stream it did not process
/// (`REFUSED_STREAM`, or a GOAWAY that left the stream out).
pub(crate) fn is_refused(e: &io::Error) -> bool {
    e.get_ref().is_some_and(|inner| inner.is::<Unprocessed>())
}

/// Whether an `h2` stream error means the upstream did not process the stream: its own
/// `REFUSED_STREAM`, or its GOAWAY (`h2` fails with it only the streams above the GOAWAY's
/// `last_stream_id`, and the streams opened after it).
fn refused(e: &h2::Error) -> bool {
    e.is_remote()
        && (e.is_go_away() || (e.is_reset() && e.reason() == Some(h2::Reason::REFUSED_STREAM)))
}

#[cfg(test)]
thread_local! {
    /// Head parses on the upstream hop on this thread (a test's engine runs on its thread):
    /// what a written head saves.
    pub(crate) static UPSTREAM_HEAD_PARSES: Cell<u32> = const { Cell::new(0) };
}

/// Counts one parse of a head on the upstream hop (tests only).
#[cfg(test)]
pub(crate) fn note_head_parsed() {
    UPSTREAM_HEAD_PARSES.with(|n| n.set(n.get() + 1));
}

/// Where the request stands.
enum RequestState {
    /// The head is being gathered.
    Head,
    /// `content-length`: payload bytes left.
    Length(u64),
    Chunked(ChunkedDecoder),
    /// The body is complete; END_STREAM (or the trailers) not sent yet.
    Ending,
    /// END_STREAM sent.
    Sent,
}

/// How the response body is given to the reader.
#[derive(Clone, Copy, PartialEq, Eq)]
enum ResponseBody {
    /// DATA as it comes (the response has a `content-length`, or no body).
    Raw,
    /// DATA as chunks, trailers as chunked trailers.
    Chunked,
}

/// One request carried as an HTTP/2 stream, seen by the request path as an HTTP/1.1 upstream
/// connection (see the module doc).
pub(crate) struct H2Upstream {
    conn: Rc<H2Conn>,
    stats: Arc<WorkerStats>,
    tls: bool,
    /// The request head as written, until parsed.
    head_buf: Vec<u8>,
    head: Head,
    state: RequestState,
    /// Payload written but not sent yet (waiting for send window).
    pending: Vec<u8>,
    /// The request's chunked trailer section (sent as HTTP/2 trailers).
    trailers: Vec<u8>,
    scanned: u64,
    send: Option<SendStream<Bytes>>,
    response: Option<ResponseFuture>,
    recv: Option<RecvStream>,
    body: ResponseBody,
    /// Response bytes formatted but not read yet.
    out: Vec<u8>,
    out_at: usize,
    /// The response ended (EOF to the reader).
    finished: bool,
    /// The stream failed (counted once).
    failed: bool,
    /// It failed because the upstream closed or reset the connection without a GOAWAY.
    connection_lost: bool,
    /// No other stream was open on the connection when this one was put on it.
    alone: bool,
    /// The `grpc-status` of the response's trailers, once they arrived.
    grpc_status: Option<u8>,
}

impl H2Upstream {
    /// A new stream on `conn` (taken from the pool or just made).
    pub(crate) fn new(conn: Rc<H2Conn>, stats: &Arc<WorkerStats>, tls: bool) -> Self {
        let open = conn.streams.get() + 1;
        conn.streams.set(open);
        // The pool picks a connection below the peer's limit: one above it waits inside `h2`.
        let limit = conn.send.current_max_send_streams();
        if limit > 0 && open > limit {
            bump(&stats.http2_upstream_streams_queued, 1);
        }
        bump(&stats.http2_upstream_streams_total, 1);
        gauge_add(&stats.http2_upstream_streams_active, true);
        stats.pool_gauge_add(conn.cluster, conn.host, PoolGauge::Http2Streams, 1);
        H2Upstream {
            conn,
            stats: stats.clone(),
            tls,
            head_buf: Vec::new(),
            head: Head::default(),
            state: RequestState::Head,
            pending: Vec::new(),
            trailers: Vec::new(),
            scanned: 0,
            send: None,
            response: None,
            recv: None,
            body: ResponseBody::Raw,
            out: Vec::new(),
            out_at: 0,
            finished: false,
            failed: false,
            connection_lost: false,
            alone: open == 1,
            grpc_status: None,
        }
    }

    /// The `grpc-status` of the response's trailers (`None` before them, or without one).
    pub(crate) fn grpc_status(&self) -> Option<u8> {
        self.grpc_status
    }

    /// Whether the stream failed because the upstream closed or reset the whole connection
    /// without a GOAWAY (see "Lost connections" in the module doc).
    pub(crate) fn connection_lost(&self) -> bool {
        self.connection_lost
    }

    /// An `h2` error as the IO error the request path sees; a refusal is marked for
    /// [`is_refused`], a lost connection for [`Self::connection_lost`], and a GOAWAY takes the
    /// connection out of the pool.
    fn error(&mut self, e: h2::Error) -> io::Error {
        if e.is_go_away() && e.is_remote() && !self.conn.going_away.replace(true) {
            bump(&self.stats.http2_upstream_goaway_received, 1);
        }
        if e.is_io()
            && self.alone
            && !self.conn.going_away.get()
            && !self.conn.ping_unanswered.get()
            && !self.conn.got_goaway()
        {
            self.connection_lost = true;
        }
        if !self.failed {
            self.failed = true;
            if refused(&e) {
                bump(&self.stats.http2_upstream_refused, 1);
            } else if e.is_remote() || e.is_io() {
                bump(&self.stats.http2_upstream_rx_reset, 1);
                let code = if e.is_io() || e.is_go_away() {
                    None
                } else {
                    e.reason().map(u32::from)
                };
                bump(
                    &self.stats.http2_upstream_rx_reset_code[crate::stats::reset_code(code)],
                    1,
                );
            }
        }
        if refused(&e) {
            io::Error::new(io::ErrorKind::ConnectionRefused, Unprocessed(e))
        } else if e.is_io() {
            e.into_io()
                .unwrap_or_else(|| io::ErrorKind::BrokenPipe.into())
        } else {
            io::Error::new(io::ErrorKind::ConnectionReset, e)
        }
    }

    /// Sends the parsed head as HEADERS; `end` when the request has no body.
    fn send_head(&mut self, end: bool) -> io::Result<()> {
        let buf = &self.head_buf;
        let head = &self.head;
        let target = head.target(buf);
        let authority = head.host(buf).unwrap_or(b"");
        let uri = if target.first() == Some(&b'/') {
            let mut uri = Vec::with_capacity(8 + authority.len() + target.len());
            uri.extend_from_slice(if self.tls { b"https://" } else { b"http://" });
            uri.extend_from_slice(authority);
            uri.extend_from_slice(target);
            http::Uri::try_from(uri)
        } else {
            http::Uri::try_from(target)
        }
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let method = http::Method::from_bytes(head.method_bytes(buf))
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let mut request = http::Request::builder()
            .method(method)
            .uri(uri)
            .version(http::Version::HTTP_2);
        if let Some(headers) = request.headers_mut() {
            headers.reserve(head.headers(buf).len());
            for (name, value) in request_fields(head.headers(buf)) {
                let value = value.trim_ascii();
                if let (Ok(n), Ok(v)) = (
                    http::HeaderName::from_bytes(name),
                    http::HeaderValue::from_bytes(value),
                ) {
                    headers.append(n, v);
                }
            }
        }
        let request = request
            .body(())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let (response, send) = match self.conn.send.clone().send_request(request, end) {
            Ok(r) => r,
            Err(e) => return Err(self.error(e)),
        };
        self.response = Some(response);
        self.send = Some(send);
        Ok(())
    }

    /// Sends what waits in `pending` within the send window, then the end of the stream once
    /// the body is complete.
    fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let Some(send) = &mut self.send else {
            return Poll::Ready(Ok(()));
        };
        while !self.pending.is_empty() {
            send.reserve_capacity(self.pending.len());
            let capacity = match send.poll_capacity(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(c))) => c,
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Err(self.error(e))),
                Poll::Ready(None) => return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into())),
            };
            if capacity == 0 {
                continue;
            }
            let n = capacity.min(self.pending.len());
            let chunk = Bytes::copy_from_slice(&self.pending[..n]);
            self.pending.drain(..n);
            if let Err(e) = send.send_data(chunk, false) {
                return Poll::Ready(Err(self.error(e)));
            }
        }
        if matches!(self.state, RequestState::Ending) {
            self.state = RequestState::Sent;
            let sent = match trailer_map(&self.trailers) {
                Some(t) => send.send_trailers(t),
                None => send.send_data(Bytes::new(), true),
            };
            if let Err(e) = sent {
                return Poll::Ready(Err(self.error(e)));
            }
        }
        Poll::Ready(Ok(()))
    }

    /// Moves the payload of `data` (body bytes in the request's HTTP/1.1 framing) to `pending`.
    fn take_payload(&mut self, data: &[u8]) -> io::Result<()> {
        match &mut self.state {
            RequestState::Head | RequestState::Ending | RequestState::Sent => {}
            RequestState::Length(left) => {
                let n = (data.len() as u64).min(*left) as usize;
                self.pending.extend_from_slice(&data[..n]);
                *left -= n as u64;
                if *left == 0 {
                    self.state = RequestState::Ending;
                }
            }
            RequestState::Chunked(dec) => {
                let mut at = 0;
                while at < data.len() {
                    let (c, run) = dec
                        .feed_payload(&data[at..])
                        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
                    if let Some(r) = run {
                        self.pending.extend_from_slice(&data[at..][r]);
                    }
                    let (consumed, done) = match c {
                        Chunked::NeedMore { consumed } => (consumed, false),
                        Chunked::Done { consumed } => (consumed, true),
                    };
                    if let Some(start) = dec.trailers_start() {
                        let from = start.saturating_sub(self.scanned).min(consumed as u64) as usize;
                        self.trailers
                            .extend_from_slice(&data[at + from..at + consumed]);
                    }
                    self.scanned += consumed as u64;
                    at += consumed;
                    if done {
                        self.state = RequestState::Ending;
                        break;
                    }
                }
            }
        }
        Ok(())
    }

    /// The response head, once the upstream's HEADERS came: written as the HTTP/1.1 head the
    /// request path reads (`sluice_core::http2::build_response_head`: the bytes given to
    /// `into`, their spans, status and framing recorded in `rhead` as written, never parsed
    /// back), as the answer to a request with `method`, under the path's response `limits`.
    /// `Ok(Err(_))`: a head the parse of those bytes would refuse, with its error (answered
    /// 502 as such). The body then follows through `poll_read`, as chunks when the head says
    /// so (no `content-length`).
    pub(crate) fn poll_response_head(
        &mut self,
        cx: &mut Context<'_>,
        method: Method,
        limits: &Limits,
        rhead: &mut Head,
        into: impl FnOnce(&[u8]),
    ) -> Poll<io::Result<Result<(), HttpError>>> {
        // The request's body may still be waiting for window (see `poll_read`).
        let _ = self.poll_send(cx);
        let Some(pending) = &mut self.response else {
            return Poll::Ready(Err(io::Error::other("no response head awaited")));
        };
        let response = match Pin::new(pending).poll(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Ok(r)) => r,
            Poll::Ready(Err(e)) => {
                self.response = None;
                return Poll::Ready(Err(self.error(e)));
            }
        };
        self.response = None;
        let end = response.body().is_end_stream();
        let (parts, body) = response.into_parts();
        self.finished = end;
        self.recv = Some(body);
        let answer = ResponseHead {
            status: parts.status.as_u16(),
            reason: parts.status.canonical_reason().unwrap_or("").as_bytes(),
            fields: parts
                .headers
                .iter()
                .map(|(name, value)| (name.as_str().as_bytes(), value.as_bytes())),
            end_stream: end,
        };
        debug_assert!(self.out.is_empty());
        self.out.clear();
        self.out_at = 0;
        if let Err(e) = build_response_head(&mut self.out, answer, method, limits, rhead) {
            return Poll::Ready(Ok(Err(e)));
        }
        self.body = if rhead.framing() == BodyFraming::Chunked {
            ResponseBody::Chunked
        } else {
            ResponseBody::Raw
        };
        into(&self.out);
        self.out.clear();
        Poll::Ready(Ok(Ok(())))
    }

    /// Fills `out` with the next part of the response; `Ready(Ok(false))` at its end.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<bool>> {
        if self.response.is_some() {
            // The path takes the head first (`poll_response_head`).
            debug_assert!(false, "the response body read before its head");
            return Poll::Ready(Err(io::Error::other("response body read before its head")));
        }
        let Some(recv) = &mut self.recv else {
            return Poll::Ready(Ok(false));
        };
        match recv.poll_data(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(Ok(data))) => {
                // The window goes back as the request path takes the bytes (they are in `out`
                // until it reads them, which it does as it writes them downstream).
                let _ = recv.flow_control().release_capacity(data.len());
                if data.is_empty() {
                    return Poll::Ready(Ok(true));
                }
                if self.body == ResponseBody::Chunked {
                    use std::io::Write as _;
                    let _ = write!(self.out, "{:x}\r\n", data.len());
                    self.out.extend_from_slice(&data);
                    self.out.extend_from_slice(b"\r\n");
                } else {
                    self.out.extend_from_slice(&data);
                }
                Poll::Ready(Ok(true))
            }
            Poll::Ready(Some(Err(e))) => {
                self.recv = None;
                Poll::Ready(Err(self.error(e)))
            }
            Poll::Ready(None) => {
                let trailers = match recv.poll_trailers(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Ok(t)) => t,
                    Poll::Ready(Err(e)) => {
                        self.recv = None;
                        return Poll::Ready(Err(self.error(e)));
                    }
                };
                self.recv = None;
                self.finished = true;
                self.grpc_status = trailers
                    .as_ref()
                    .and_then(|t| t.get("grpc-status"))
                    .and_then(|v| v.to_str().ok()?.trim().parse().ok());
                if self.body == ResponseBody::Chunked {
                    self.out.extend_from_slice(b"0\r\n");
                    for (name, value) in trailers.iter().flatten() {
                        self.out.extend_from_slice(name.as_str().as_bytes());
                        self.out.extend_from_slice(b": ");
                        self.out.extend_from_slice(value.as_bytes());
                        self.out.extend_from_slice(b"\r\n");
                    }
                    self.out.extend_from_slice(b"\r\n");
                    return Poll::Ready(Ok(true));
                }
                Poll::Ready(Ok(false))
            }
        }
    }
}

/// A chunked trailer section as HTTP/2 trailers, without the fields a trailer must not carry;
/// `None` when it has no field.
fn trailer_map(section: &[u8]) -> Option<http::HeaderMap> {
    if section.len() <= 2 {
        return None;
    }
    let mut filtered = Vec::with_capacity(section.len());
    write_trailers(&mut filtered, section);
    let mut map = http::HeaderMap::new();
    for line in filtered.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        if let (Ok(n), Ok(v)) = (
            http::HeaderName::from_bytes(&line[..colon]),
            http::HeaderValue::from_bytes(line[colon + 1..].trim_ascii()),
        ) && !is_connection_specific(n.as_str().as_bytes())
        {
            map.append(n, v);
        }
    }
    (!map.is_empty()).then_some(map)
}

impl AsyncWrite for H2Upstream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        // One write waits at a time: the previous one goes out first.
        match this.poll_send(cx) {
            Poll::Ready(Ok(())) => {}
            other => return other.map(|r| r.map(|()| 0)),
        }
        if matches!(this.state, RequestState::Head) {
            this.head_buf.extend_from_slice(data);
            #[cfg(test)]
            note_head_parsed();
            match parse_request(&this.head_buf, &REQUEST_LIMITS, &mut this.head) {
                Ok(ParseStatus::Complete) => {}
                Ok(ParseStatus::Partial) => return Poll::Ready(Ok(data.len())),
                Err(e) => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        e.to_string(),
                    )));
                }
            }
            let (state, end) = match this.head.framing() {
                BodyFraming::None | BodyFraming::CloseDelimited | BodyFraming::ContentLength(0) => {
                    (RequestState::Sent, true)
                }
                BodyFraming::ContentLength(n) => (RequestState::Length(n), false),
                BodyFraming::Chunked => {
                    (RequestState::Chunked(ChunkedDecoder::new(64 * 1024)), false)
                }
            };
            this.send_head(end)?;
            this.state = state;
            let head_len = this.head.head_len();
            let rest = this.head_buf.split_off(head_len);
            this.take_payload(&rest)?;
            return Poll::Ready(Ok(data.len()));
        }
        this.take_payload(data)?;
        Poll::Ready(Ok(data.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().poll_send(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl AsyncRead for H2Upstream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.out_at < this.out.len() {
                let n = (this.out.len() - this.out_at).min(buf.remaining());
                buf.put_slice(&this.out[this.out_at..this.out_at + n]);
                this.out_at += n;
                if this.out_at == this.out.len() {
                    this.out.clear();
                    this.out_at = 0;
                }
                return Poll::Ready(Ok(()));
            }
            // The request's body may still be waiting for window (a response can come first).
            // A failure to send it is the writer's to see (its next write fails the same way):
            // the answer is still read — an upstream may answer whole and then reset the
            // stream with NO_ERROR while the body was still coming (RFC 9113 §8.1); one that
            // reset it before its answer fails the read below.
            let _ = this.poll_send(cx);
            match this.poll_fill(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(false)) => return Poll::Ready(Ok(())),
                Poll::Ready(Ok(true)) => {}
            }
        }
    }
}

impl Drop for H2Upstream {
    fn drop(&mut self) {
        let finished = self.finished || self.recv.as_ref().is_some_and(RecvStream::is_end_stream);
        // A request still being sent when its answer ended (full duplex) is reset too — unless
        // the upstream reset it already (a server that ends its answer first usually sends
        // RST_STREAM(NO_ERROR), RFC 9113 §8.1).
        let sent = matches!(self.state, RequestState::Sent);
        let reset_by_peer = finished
            && !sent
            && self.send.as_mut().is_some_and(|s| {
                s.poll_reset(&mut Context::from_waker(Waker::noop()))
                    .is_ready()
            });
        let over = (finished && sent) || reset_by_peer || self.failed;
        let unfinished = !over && self.send.is_some();
        if unfinished {
            // Dropping the stream's handles makes h2 send RST_STREAM(CANCEL).
            bump(&self.stats.http2_upstream_tx_reset, 1);
        }
        gauge_add(&self.stats.http2_upstream_streams_active, false);
        self.stats.pool_gauge_add(
            self.conn.cluster,
            self.conn.host,
            PoolGauge::Http2Streams,
            -1,
        );
        let left = self.conn.streams.get() - 1;
        self.conn.streams.set(left);
        if left == 0 {
            self.conn.idle_since.set(crate::now());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering::Relaxed;

    fn destination(i: u8) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, i], 80))
    }

    fn at(ms: u64) -> Instant {
        Instant::from_origin(Duration::from_millis(ms))
    }

    /// A pooled connection to an in-memory HTTP/2 server that accepts everything (run inside
    /// a `LocalSet`), idle since `idle_since`.
    async fn connection(stats: &Arc<WorkerStats>, idle_since: Instant) -> Rc<H2Conn> {
        let (client, server) = tokio::io::duplex(64 * 1024);
        tokio::task::spawn_local(async move {
            let Ok(mut conn) = h2::server::handshake(server).await else {
                return;
            };
            while let Some(Ok(_)) = conn.accept().await {}
        });
        handshake(
            client,
            stats,
            idle_since,
            None,
            0,
            Peer::Destination(destination(0)),
            0,
        )
        .await
        .unwrap()
    }

    fn stats() -> Arc<WorkerStats> {
        let config = sluice_core::config::Config::from_yaml(
            "listeners: [ { name: t, address: 127.0.0.1:1, tcp_proxy: { cluster: a } } ]\n\
             clusters: [ { name: a, type: original_dst, protocol: http2 } ]\n",
        )
        .unwrap();
        Arc::new(WorkerStats::new(&config))
    }

    /// An `original_dst` cluster's HTTP/2 connections are pooled per destination, multiplexed
    /// (a connection is handed out again while it has room), bounded in destinations (the one
    /// idle the longest goes; a connection to one more is not pooled while every destination
    /// is busy) and swept when idle past the cluster's idle timeout (the destination with
    /// them).
    #[tokio::test]
    async fn original_dst_connections_are_pooled_by_destination_bounded_and_swept() {
        let local = tokio::task::LocalSet::new();
        local
            .run_until(async {
                let stats = stats();
                // The original_dst cluster has no host slots: only destinations.
                let mut pool = H2Pool::new(std::iter::once((0, Duration::from_secs(30))));
                pool.max_destinations = 2;
                let (d1, d2, d3, d4) = (
                    destination(1),
                    destination(2),
                    destination(3),
                    destination(4),
                );
                assert!(pool.take(0, Peer::Destination(d1), &stats).is_none());
                let c1 = connection(&stats, at(0)).await;
                pool.put(0, Peer::Destination(d1), c1.clone());
                // Handed out again and again (multiplexed), to its destination only.
                for _ in 0..3 {
                    let got = pool.take(0, Peer::Destination(d1), &stats).expect("pooled");
                    assert!(Rc::ptr_eq(&got, &c1));
                }
                assert!(pool.take(0, Peer::Destination(d2), &stats).is_none());
                // A connect under way to a destination holds its requests back (a burst opens
                // one connection); another destination's do not wait.
                let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
                let attempt = pool.connecting(0, Peer::Destination(d2));
                let waited = tokio::time::timeout(
                    Duration::from_millis(20),
                    pool.wait_for_room(0, Peer::Destination(d2), &stats, deadline),
                )
                .await;
                assert!(waited.is_err(), "did not wait for the connect under way");
                let other = pool
                    .wait_for_room(0, Peer::Destination(d3), &stats, deadline)
                    .await;
                assert!(other.is_none());
                drop(attempt);
                assert!(pool.connecting_to.borrow().is_empty(), "attempt entry left");

                let c2 = connection(&stats, at(10)).await;
                pool.put(0, Peer::Destination(d2), c2.clone());
                // A third destination: the one idle the longest (d1) makes room.
                let c3 = connection(&stats, at(20)).await;
                pool.put(0, Peer::Destination(d3), c3.clone());
                assert_eq!(pool.destination_count(), 2);
                assert!(pool.take(0, Peer::Destination(d1), &stats).is_none());
                // Every destination busy: the one with the fewest streams open (d3) leaves the
                // pool — its connection keeps its streams, takes no new one — and the new
                // destination is pooled, so its next requests share its connection.
                c2.streams.set(2);
                c3.streams.set(1);
                let c4 = connection(&stats, at(30)).await;
                pool.put(0, Peer::Destination(d4), c4.clone());
                assert_eq!(pool.destination_count(), 2);
                assert!(pool.take(0, Peer::Destination(d3), &stats).is_none());
                let got = pool
                    .take(0, Peer::Destination(d4), &stats)
                    .expect("d4 pooled");
                assert!(Rc::ptr_eq(&got, &c4));
                assert!(
                    !c3.ended.get(),
                    "a connection that left the pool keeps its streams"
                );
                assert_eq!(pool.connection_count(), 2);
                // The sweep: a busy connection stays whatever its age; an idle one past the
                // timeout goes, and its destination with it.
                c4.streams.set(0);
                c4.idle_since.set(at(30));
                c2.streams.set(1);
                assert_eq!(pool.sweep(at(25_000)), 0);
                assert_eq!(pool.sweep(at(60_000)), 1);
                assert_eq!(pool.destination_count(), 1);
                assert!(pool.take(0, Peer::Destination(d2), &stats).is_some());
                c2.streams.set(0);
                assert_eq!(pool.sweep(at(60_000)), 1);
                assert_eq!(pool.destination_count(), 0);
                assert_eq!(pool.connection_count(), 0);

                // The pool gauges: destinations count under their cluster (no host entry),
                // connections while open (in the pool or not), streams while they exist.
                let c = &stats.clusters[0];
                let open = || c.upstream_cx_http2_active.load(Relaxed);
                let streams = || c.upstream_rq_http2_streams_active.load(Relaxed);
                assert_eq!(open(), 4);
                let stream = H2Upstream::new(c2.clone(), &stats, false);
                assert_eq!(streams(), 1);
                drop(stream);
                assert_eq!(streams(), 0);
                drop((c1, c2, c3, c4, got));
                for _ in 0..100 {
                    if open() == 0 {
                        break;
                    }
                    tokio::task::yield_now().await;
                }
                assert_eq!(open(), 0, "closed connections still counted");
            })
            .await;
    }

    #[tokio::test]
    async fn requests_stop_waiting_for_a_connect_to_the_host_their_slot_no_longer_names() {
        let config = sluice_core::config::Config::from_yaml(
            "listeners: [ { name: t, address: 127.0.0.1:1, tcp_proxy: { cluster: a } } ]\n\
             clusters: [ { name: a, hosts: [ { address: 127.0.0.1:2 } ] } ]\n",
        )
        .unwrap();
        let stats = WorkerStats::new(&config);
        let pool = H2Pool::new(std::iter::once((1, Duration::from_secs(60))));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        let old = pool.connecting(0, Peer::Host(0));
        // While a connect to the host is under way, a request for it waits for that one.
        let waited = tokio::time::timeout(
            Duration::from_millis(20),
            pool.wait_for_room(0, Peer::Host(0), &stats, deadline),
        )
        .await;
        assert!(waited.is_err(), "did not wait for the connect under way");
        // A DNS answer gives the id to another host: its requests open their own at once.
        pool.forget_host(0, 0);
        let waited = tokio::time::timeout(
            Duration::from_millis(20),
            pool.wait_for_room(0, Peer::Host(0), &stats, deadline),
        )
        .await;
        assert!(
            matches!(waited, Ok(None)),
            "still waiting for the old host's connect"
        );
        // The old attempt ending does not count against the new host's.
        let new = pool.connecting(0, Peer::Host(0));
        drop(old);
        assert_eq!(pool.connecting.borrow()[0][0].count, 1);
        drop(new);
        assert_eq!(pool.connecting.borrow()[0][0].count, 0);
    }

    /// What the raw HTTP/2 upstream of [`hop_through_the_proxy`] saw of each request: its
    /// method and URI, then its fields in order, one `name: value` per line.
    type Seen = Rc<RefCell<Vec<String>>>;

    /// A raw HTTP/2 upstream on `l` that notes each request's HEADERS in `seen` and answers
    /// per its path (`/0`, `/1`...: see [`hop_through_the_proxy`]).
    async fn raw_h2_upstream(l: tokio::net::TcpListener, seen: Seen) {
        loop {
            let (s, _) = l.accept().await.unwrap();
            let seen = seen.clone();
            tokio::task::spawn_local(async move {
                let Ok(mut conn) = h2::server::handshake(s).await else {
                    return;
                };
                while let Some(Ok((request, mut respond))) = conn.accept().await {
                    let mut noted = format!("{} {}\n", request.method(), request.uri());
                    for (name, value) in request.headers() {
                        noted.push_str(&format!(
                            "{name}: {}\n",
                            String::from_utf8_lossy(value.as_bytes())
                        ));
                    }
                    seen.borrow_mut().push(noted);
                    let case: usize = request.uri().path()[1..].parse().unwrap_or(0);
                    let answer = |status: u16, fields: &[(&str, &str)]| {
                        let mut r = http::Response::builder().status(status);
                        for (n, v) in fields {
                            r = r.header(*n, http::HeaderValue::from_bytes(v.as_bytes()).unwrap());
                        }
                        r.body(()).unwrap()
                    };
                    let data = |send: &mut SendStream<Bytes>, b: &'static [u8], end: bool| {
                        send.send_data(Bytes::from_static(b), end).unwrap();
                    };
                    match case {
                        // A length, and a value with whitespace around it.
                        0 => {
                            let mut send = respond
                                .send_response(
                                    answer(200, &[("content-length", "5"), ("x-pad", "  v ")]),
                                    false,
                                )
                                .unwrap();
                            data(&mut send, b"hello", true);
                        }
                        // No length: chunked for the HTTP/1.1 client.
                        1 => {
                            let mut send = respond
                                .send_response(
                                    answer(200, &[("content-type", "text/plain")]),
                                    false,
                                )
                                .unwrap();
                            data(&mut send, b"ab", false);
                            data(&mut send, b"c", true);
                        }
                        // HEADERS that end the stream, no length.
                        2 => {
                            respond.send_response(answer(200, &[]), true).unwrap();
                        }
                        3 => {
                            respond
                                .send_response(answer(204, &[("x-a", "1")]), true)
                                .unwrap();
                        }
                        // A status the HTTP/1.1 path refuses: 502.
                        4 => {
                            respond.send_response(answer(600, &[]), true).unwrap();
                        }
                        // gRPC: trailers.
                        5 => {
                            let mut send = respond
                                .send_response(
                                    answer(200, &[("content-type", "application/grpc")]),
                                    false,
                                )
                                .unwrap();
                            data(&mut send, b"\0\0\0\0\0", false);
                            let mut trailers = http::HeaderMap::new();
                            trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
                            send.send_trailers(trailers).unwrap();
                        }
                        // A HEAD answer keeps its length, without a body.
                        _ => {
                            respond
                                .send_response(
                                    answer(404, &[("content-length", "7"), ("set-cookie", "a=1")]),
                                    true,
                                )
                                .unwrap();
                        }
                    }
                }
            });
        }
    }

    /// Sends `request` (HTTP/1.1 text, `connection: close`) to the proxy at `at` and reads
    /// the answer to its end.
    async fn exchange(at: SocketAddr, request: &str) -> String {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let mut c = tokio::net::TcpStream::connect(at).await.unwrap();
        c.write_all(request.as_bytes()).await.unwrap();
        let mut got = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), c.read_to_end(&mut got))
            .await
            .expect("answered in time")
            .unwrap();
        String::from_utf8_lossy(&got).into_owned()
    }

    /// An HTTP/1.1 request to a `protocol: http2` cluster, end to end through the engine: the
    /// HEADERS the raw upstream sees (the route's edits, hop-by-hop fields dropped, `te:
    /// trailers` kept, `Host` as `:authority`, cookies as sent), the answer head the client
    /// gets for a table of upstream answers, and how many heads the hop parsed per stream.
    #[test]
    fn hop_through_the_proxy() {
        crate::test_support::on_local_runtime(async {
            let (up, up_at) = crate::test_support::bound();
            let seen = Seen::default();
            tokio::task::spawn_local(raw_h2_upstream(up, seen.clone()));
            let (listener, at) = crate::test_support::bound();
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
                request_headers_to_add:
                  - {{ name: x-added, value: by-route }}
                request_headers_to_remove: [ x-drop ]
clusters:
  - name: up
    protocol: http2
    hosts: [ {{ address: "{up_at}" }} ]
"#
            );
            let _engine = crate::test_support::serve(&yaml, listener);
            let request = |path: &str, method: &str| {
                format!(
                    "{method} /{path}?q=1 HTTP/1.1\r\nHost: svc.local:8080\r\nCookie: a=1\r\n\
                     Cookie: b=2\r\nx-drop: no\r\nconnection: close, x-hop\r\nx-hop: 1\r\n\
                     keep-alive: 5\r\nte: trailers\r\nx-request-id: r1\r\nx-kept:  v \r\n\r\n"
                )
            };
            let cases: &[(&str, &str, &str)] = &[
                (
                    "0",
                    "GET",
                    "HTTP/1.1 200 OK\r\ncontent-length: 5\r\nx-pad: v\r\nconnection: close\r\n\r\nhello",
                ),
                (
                    "1",
                    "GET",
                    "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ntransfer-encoding: chunked\r\n\
                     connection: close\r\n\r\n2\r\nab\r\n1\r\nc\r\n0\r\n\r\n",
                ),
                (
                    "2",
                    "GET",
                    "HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                ),
                (
                    "3",
                    "GET",
                    "HTTP/1.1 204 No Content\r\nx-a: 1\r\nconnection: close\r\n\r\n",
                ),
                ("4", "GET", "HTTP/1.1 502 Bad Gateway\r\n"),
                (
                    "5",
                    "POST",
                    "HTTP/1.1 200 OK\r\ncontent-type: application/grpc\r\n\
                     transfer-encoding: chunked\r\nconnection: close\r\n\r\n5\r\n\0\0\0\0\0\r\n0\r\n\
                     grpc-status: 0\r\n\r\n",
                ),
                (
                    "6",
                    "HEAD",
                    "HTTP/1.1 404 Not Found\r\ncontent-length: 7\r\nset-cookie: a=1\r\n\
                     connection: close\r\n\r\n",
                ),
            ];
            for (path, method, want) in cases {
                UPSTREAM_HEAD_PARSES.with(|n| n.set(0));
                let got = exchange(at, &request(path, method)).await;
                if path == &"4" {
                    assert!(got.starts_with(want), "{path}: {got:?}");
                } else {
                    assert_eq!(&got, want, "answer {path}");
                }
                // Per stream: the request head the path wrote, parsed back by the adapter.
                assert_eq!(
                    UPSTREAM_HEAD_PARSES.with(Cell::get),
                    1,
                    "head parses, answer {path}"
                );
            }
            let seen = seen.borrow();
            assert_eq!(seen.len(), cases.len());
            let want = "GET http://svc.local:8080/0?q=1\n\
                        cookie: a=1\n\
                        cookie: b=2\n\
                        x-request-id: r1\n\
                        x-kept: v\n\
                        x-forwarded-for: 127.0.0.1\n\
                        x-forwarded-proto: http\n\
                        x-added: by-route\n\
                        te: trailers\n";
            let first = &seen[0];
            assert_eq!(first, want);
        });
    }
}
