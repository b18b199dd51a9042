//! The Bolt (SOFARPC) driver of one worker: runs the core's [`BoltProxy`] over real (or
//! simulated) connections.
//!
//! ## Tasks and buffers
//!
//! - one task per **downstream** connection (a session of the engine): reads, decodes each
//!   complete frame in place, hands it to the proxy, and acts on the verdict — patches the request
//!   id in the read buffer and appends the frame's bytes to the upstream connection's outbox, or
//!   writes a reply into its own outbox. Its read buffer is borrowed from the worker's
//!   [`BufPool`] while unprocessed bytes sit in it, and given back once every byte read is
//!   processed: an idle connection holds none (each poll of its wait borrows one for the read
//!   and gives it back when nothing came; issue 15);
//! - one task per **upstream** connection (opened when the proxy asks, one per host per worker,
//!   multiplexed): connects within the cluster's `connect_timeout`, flushes its outbox, reads
//!   responses, restores their ids and appends them to their downstream's outbox;
//! - one **timer** task per worker: sleeps until the proxy's next deadline and lets it answer
//!   expired requests (status 7); it also wakes when an active health check's verdict changes,
//!   and closes this worker's connection to a host that failed its check (its requests answered
//!   status 16) at once — a downstream task looks at the verdicts only when a batch of frames
//!   arrives, and none may come while every client waits on that host.
//!
//! Per batch, not per frame: a downstream task decodes every complete frame a read brought,
//! then once for the batch applies the health verdicts (before the batch's first frame is
//! routed), drains the proxy's actions, re-arms the worker's timer, publishes the counters and
//! wakes each upstream connection it fed; an upstream task does the same once per read. Each
//! downstream task keeps one timer (its frame/idle deadline and a handover pause's end, re-armed
//! lazily: armed at or before the next wake-up due) and one stop watch for its whole life.
//!
//! An [`Outbox`] is a byte buffer plus a wake-up: any task appends, the owning task writes it out
//! with one `write_all` per batch (swapping buffers, so appends go on meanwhile). Frames are never
//! re-encoded on the way through: the bytes read are the bytes written, with the 4-byte id (and a
//! v2 CRC) patched.
//!
//! ## Access log
//!
//! A `bolt` listener with an `access_log` gets one line per request/response exchange, written
//! when the answer is queued for the client: the upstream's response (`BOLT_STATUS` its status),
//! or the proxy's own answer with its Envoy-style flag — `NR` no route, `UH` no host (or no
//! original destination), `UO` overflow (status 4), `UT` timeout (status 7), `UF`/`UC` the
//! upstream connection failed to open / was lost (status 16). A oneway request gets its line
//! when it is forwarded (or dropped: `NR`, `UH` or `UO`, as the core's [`Dropped`] says) with
//! no status; a request whose client closed before its answer gets `DC` and no status when the
//! connection ends. Heartbeats are answered by the proxy and not logged (a client sends one
//! every few seconds per connection; MOSN does not log them either). The facts of a request in
//! flight (start, service, method, upstream) wait in [`BoltWorker`]'s `exchanges`, keyed by the
//! upstream connection and the id the request carries there (unique while in flight, where a
//! client's own id is not), their buffers reused from `spare_exchanges`, so a logged request
//! allocates nothing once warm; a listener without a log costs one `Option` check per frame.
//!
//! All state is the worker's own (`RefCell`s, borrowed for one statement at a time); nothing is
//! shared with other workers.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::poll_fn;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::Ordering::Relaxed;
use std::task::Poll;
use std::time::{Duration, SystemTime};

use sluice_core::Instant;

use sluice_core::bolt::{
    self, Action, BoltProxy, BoltStats, DownstreamId, DownstreamVerdict, Dropped, Frame, Kind,
    ProxyReply, ResponseStatus, UpstreamId, UpstreamVerdict,
};
use sluice_core::cluster::HostRef;
use sluice_core::config::bolt::{DEFAULT_BOLT_FRAME_TIMEOUT, DEFAULT_BOLT_IDLE_TIMEOUT};
use sluice_core::config::{Config, ListenerFilter};
use sluice_core::health::UpstreamResult;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, ReadBuf};
use tokio::sync::Notify;
use tracing::debug;

use crate::access_log::BoltEntry;
use crate::bufpool::BufPool;
use crate::downstream::Downstream;
use crate::engine::Engine;
use crate::http::far_future;
use crate::net::Network;
use crate::now;
use crate::shared_io::Shared;
use crate::stats::bump;

/// First size of a connection's read buffer (a pooled read buffer of the worker's); it grows
/// (up to the frame size limit) for larger frames.
const READ_CHUNK: usize = crate::bufpool::READ_BUFFER;
/// How long a connection being handed over stops reading while its requests in flight finish.
/// Past it, it reads (and forwards) what its client sent meanwhile, then pauses again: a request
/// stuck on a slow or faulty upstream must not hold the client's later requests unread until
/// their own timeouts pass. The handover happens at the first pause in which every request in
/// flight is answered.
const MIGRATION_PAUSE: Duration = Duration::from_millis(50);

/// A connection's pending output: appended to by any task of the worker, written by the owner.
#[derive(Debug, Default)]
pub(crate) struct Outbox {
    buf: RefCell<Vec<u8>>,
    wake: Notify,
    /// Set to make the owning task close its connection.
    close: Cell<bool>,
    /// Notified whenever the owner took what was queued (a write finished) or closed.
    drained: Notify,
}

/// Bytes queued for one upstream connection above which the downstream connections writing to
/// it stop reading until it drains (backpressure: a slow or stuck upstream must not make the
/// proxy buffer without bound).
const UPSTREAM_OUTBOX_HIGH: usize = 4 << 20;
/// Bytes queued for one downstream connection (answers its client does not read) above which
/// that connection is closed: one slow client must not stall the shared upstream connection
/// nor grow the proxy's memory without bound.
const DOWNSTREAM_OUTBOX_LIMIT: usize = 64 << 20;

impl Outbox {
    fn push(&self, f: impl FnOnce(&mut Vec<u8>)) {
        f(&mut self.buf.borrow_mut());
        self.wake.notify_one();
    }
}

/// A map keyed by the proxy's small ids, looked up per request: a fast fixed-seed hasher
/// (SipHash was ~6 % of the Bolt path's instructions). The keys are the proxy's own counters,
/// not a peer's choice, so a hash-flooding peer has nothing to aim at.
type IdMap<K, V> = HashMap<K, V, foldhash::fast::FixedState>;

/// The Bolt state of one worker.
pub(crate) struct BoltWorker {
    proxy: RefCell<BoltProxy>,
    downs: RefCell<IdMap<DownstreamId, Rc<Outbox>>>,
    ups: RefCell<IdMap<UpstreamId, Rc<Outbox>>>,
    /// Wakes the timer task when the proxy's next deadline moved earlier than `armed`.
    timer: Notify,
    armed: Cell<Option<Instant>>,
    /// Last published counters (to add deltas to the worker's stats).
    published: Cell<bolt::BoltStats>,
    /// Sum of the clusters' health generations last seen (to notice verdict changes).
    health_seen: Cell<u64>,
    /// Per cluster and host: the health verdict last seen (a connection closes only when its
    /// host goes from healthy to unhealthy, not while it is still unknown).
    was_healthy: RefCell<Vec<Vec<bool>>>,
    /// The access-log facts of each logged request in flight, by the upstream connection it
    /// went on and the id it carries there — unique while it is in flight, where the id its
    /// client gave it is not (a client may reuse an id before its answer; requests on listeners
    /// with an access log only).
    exchanges: RefCell<IdMap<(UpstreamId, u32), Exchange>>,
    /// Finished exchanges, kept so that their buffers are reused.
    spare_exchanges: RefCell<Vec<Exchange>>,
    /// The flag of the status-16 answers being made: `UF` while an upstream connection that
    /// never connected is being forgotten, else `UC`.
    lost_flag: Cell<&'static str>,
}

/// A logged request in flight: what its access-log line needs once it is answered.
struct Exchange {
    /// The connection it came on and the id its client gave it.
    down: DownstreamId,
    request_id: u32,
    start: SystemTime,
    t0: Instant,
    listener: usize,
    peer: SocketAddr,
    original_dst: Option<SocketAddr>,
    cluster: Option<usize>,
    upstream: Option<SocketAddr>,
    bytes_received: u64,
    service: Vec<u8>,
    method: Vec<u8>,
}

/// The connection a logged request came on.
struct LoggedConnection {
    listener: usize,
    down: DownstreamId,
    peer: SocketAddr,
    original_dst: Option<SocketAddr>,
}

/// Finished exchanges a worker keeps for reuse (beyond it, a burst's extra ones are freed).
/// The longest service or method name an access-log line carries (the rest is cut).
const MAX_LOGGED_NAME: usize = 512;

/// The first [`MAX_LOGGED_NAME`] bytes of a name for the access log.
fn logged(v: &[u8]) -> &[u8] {
    &v[..v.len().min(MAX_LOGGED_NAME)]
}
const MAX_SPARE_EXCHANGES: usize = 1024;

/// The Bolt header key carrying the method name.
const METHOD_KEY: &[u8] = b"sofa_head_method_name";

/// The size of the response frame a proxy's own answer is (no class, header or content).
fn reply_len(r: &ProxyReply) -> u64 {
    (r.version.fixed_header_len(Kind::Response) + r.version.trailer_len()) as u64
}

impl BoltWorker {
    /// The worker's Bolt state, when the config has a Bolt (or auto) listener.
    pub(crate) fn for_config(config: &Config) -> std::io::Result<Option<BoltWorker>> {
        let has_bolt = config.listeners.iter().any(|l| {
            matches!(
                l.filter,
                sluice_core::config::ListenerFilter::Bolt(_)
                    | sluice_core::config::ListenerFilter::Auto { .. }
            )
        });
        if !has_bolt {
            return Ok(None);
        }
        let proxy = BoltProxy::from_config(config).map_err(std::io::Error::other)?;
        Ok(Some(BoltWorker {
            proxy: RefCell::new(proxy),
            downs: RefCell::default(),
            ups: RefCell::default(),
            timer: Notify::new(),
            armed: Cell::new(None),
            published: Cell::new(bolt::BoltStats::default()),
            health_seen: Cell::new(u64::MAX),
            was_healthy: RefCell::new(Vec::new()),
            exchanges: RefCell::default(),
            spare_exchanges: RefCell::default(),
            lost_flag: Cell::new("UC"),
        }))
    }
}

/// Keeps the unread part `buf[start..end]` of a read buffer and makes room to read more: moves
/// it to the front when the buffer is full or half consumed, and grows the buffer (up to the
/// frame size limit) for a frame larger than it — when `may_grow(new length)` allows it; else
/// returns `false` and leaves the buffer full.
fn make_room(
    buf: &mut Vec<u8>,
    start: &mut usize,
    end: &mut usize,
    max_frame: usize,
    may_grow: impl FnOnce(usize) -> bool,
) -> bool {
    if *start == *end {
        *start = 0;
        *end = 0;
    } else if *start > 0 && (*end == buf.len() || *start > buf.len() / 2) {
        buf.copy_within(*start..*end, 0);
        *end -= *start;
        *start = 0;
    }
    if *end == buf.len() {
        let grown = (buf.len() * 2)
            .min(max_frame.saturating_add(64))
            .max(buf.len() + 1);
        if !may_grow(grown) {
            return false;
        }
        buf.resize(grown, 0);
    }
    true
}

/// Reads into `buf` from byte `end` on. A `buf` that holds nothing (an idle connection's) is
/// borrowed from `pool` for each poll's read and given back when nothing came, so waiting for
/// the next request holds no buffer; one that came back with bytes stays in `buf`.
async fn read_pooled<R: AsyncRead + Unpin>(
    r: &mut R,
    buf: &mut Vec<u8>,
    end: usize,
    pool: &BufPool,
) -> std::io::Result<usize> {
    if !buf.is_empty() {
        return r.read(&mut buf[end..]).await;
    }
    poll_fn(|cx| {
        let mut taken = pool.take_read();
        let mut rb = ReadBuf::new(&mut taken);
        let read = Pin::new(&mut *r).poll_read(cx, &mut rb);
        let n = rb.filled().len();
        match read {
            Poll::Ready(Ok(())) if n > 0 => {
                *buf = taken;
                Poll::Ready(Ok(n))
            }
            other => {
                pool.untake_read(taken);
                other.map(|r| r.map(|()| 0))
            }
        }
    })
    .await
}

/// The bytes of one downstream connection's read buffer beyond its first [`READ_CHUNK`],
/// reserved from the process's Bolt partial-frame budget (given back on drop).
struct PartialFrameHold<'a> {
    limits: &'a crate::limits::ProcessLimits,
    held: usize,
}

impl PartialFrameHold<'_> {
    /// Reserves what a buffer of `len` bytes needs beyond what is held; `false` when the
    /// budget cannot take it.
    fn grow_to(&mut self, len: usize) -> bool {
        let need = len.saturating_sub(READ_CHUNK);
        if need <= self.held {
            return true;
        }
        if !self.limits.hold_bolt(need - self.held) {
            return false;
        }
        self.held = need;
        true
    }

    /// Gives everything back (the buffer shrank to its first chunk).
    fn release(&mut self) {
        self.limits.release_bolt(std::mem::take(&mut self.held));
    }
}

impl Drop for PartialFrameHold<'_> {
    fn drop(&mut self) {
        self.release();
    }
}

/// How an upstream response counts for outlier detection: status 0 and server exceptions (the
/// application's own errors) are successes of the host; a busy server is a gateway failure;
/// anything else a 5xx.
fn upstream_result(status: Option<u16>) -> UpstreamResult {
    match status.and_then(ResponseStatus::from_u16) {
        Some(ResponseStatus::Success | ResponseStatus::ServerException) => UpstreamResult::Success,
        Some(ResponseStatus::ServerThreadpoolBusy) => UpstreamResult::Status(503),
        _ => UpstreamResult::Status(500),
    }
}

impl<N: Network> Engine<N> {
    fn bolt(&self) -> &BoltWorker {
        self.bolt
            .as_ref()
            .expect("a Bolt listener implies the worker's Bolt state")
    }

    /// A DNS answer changed cluster `ci`'s hosts: this worker's idle Bolt connections to hosts
    /// that left their slot are closed, giving back their `max_connections` unit (busy ones
    /// close after their last response).
    pub(crate) fn bolt_hosts_changed(self: &Rc<Self>, ci: usize) {
        let Some(bw) = self.bolt.as_ref() else {
            return;
        };
        let closed = bw
            .proxy
            .borrow_mut()
            .close_stale_upstreams(ci, &mut self.upstreams.all_clusters_mut());
        if closed > 0 {
            self.bolt_after_input();
            self.publish_bolt_stats();
        }
    }

    /// Serves one downstream Bolt connection; `initial` holds bytes already read from it (by
    /// protocol detection, or the unread bytes of a `migrated` connection). `original_dst`:
    /// where a captured connection was going (its requests routed to an `original_dst`
    /// cluster go there; without one they are answered status 6).
    ///
    /// Timeouts (the listener's `frame_timeout` and `idle_timeout`): a new connection must send
    /// its first whole frame within `frame_timeout`; a frame started must complete within
    /// `frame_timeout` of the last frame completed; with nothing in flight and no partial
    /// frame, the connection closes after `idle_timeout`. `accepted`: when the connection was
    /// accepted — the first frame's deadline counts from then, TLS handshake included; `None`
    /// for a migrated connection, which was already proven a client's and skips that deadline.
    pub(crate) async fn bolt_connection(
        self: &Rc<Self>,
        listener: usize,
        mut stream: Downstream<N::Stream>,
        peer: SocketAddr,
        initial: &[u8],
        original_dst: Option<SocketAddr>,
        accepted: Option<sluice_core::Instant>,
    ) {
        let migrated = accepted.is_none();
        let bw = self.bolt();
        let (frame_timeout, idle_timeout) = match &self.config.listeners[listener].filter {
            ListenerFilter::Bolt(b) | ListenerFilter::Auto { bolt: b, .. } => {
                (b.frame_timeout, b.idle_timeout)
            }
            _ => (DEFAULT_BOLT_FRAME_TIMEOUT, Some(DEFAULT_BOLT_IDLE_TIMEOUT)),
        };
        let started = accepted.map_or_else(tokio::time::Instant::now, crate::to_tokio);
        // Whether a whole frame arrived yet (a migrated connection needs none to prove itself),
        // and when the connection last made progress (a frame completed or an answer went out).
        let mut framed = migrated;
        let mut progress = started;
        let (down, max_frame) = {
            let mut p = bw.proxy.borrow_mut();
            (
                p.open_captured_downstream(listener, Some(peer), original_dst),
                p.max_frame_size(listener),
            )
        };
        let outbox = Rc::new(Outbox::default());
        bw.downs.borrow_mut().insert(down, outbox.clone());
        let logged = self.serving.bolt_access_log(listener).is_some();
        let lstats = self.stats().listener(listener);
        // Bytes beyond the first chunk (a large frame, or a migrated connection's unread
        // bytes) come out of the process's partial-frame budget.
        let mut hold = PartialFrameHold {
            limits: &self.limits,
            held: 0,
        };
        let mut overflow = !hold.grow_to(initial.len());
        // The read buffer: the worker's, borrowed while bytes sit in it (issue 15). While it is
        // empty (`buf.is_empty()`: nothing unprocessed) the connection holds none.
        let pool = &self.http_buffers;
        let mut buf = Vec::new();
        if !initial.is_empty() {
            buf = pool.take_read();
            if buf.len() < initial.len() {
                buf.resize(initial.len(), 0);
            }
            buf[..initial.len()].copy_from_slice(initial);
        }
        let (mut start, mut end) = (0usize, initial.len());
        if let Some(l) = lstats {
            bump(&l.downstream_bytes_received, initial.len() as u64);
        }
        let mut spare: Vec<u8> = Vec::new();
        let expired = self.lifecycle.drain_expired();
        tokio::pin!(expired);
        // A drain deadline that passed before the watch above began (during a TLS handshake's
        // last steps or protocol detection) closes the connection at once.
        let mut close = overflow || self.lifecycle.drain_deadline_passed();
        // Upstream outboxes this connection wrote to in the current batch, by connection: a
        // batch's frames (usually all for one upstream) find theirs here without a map lookup,
        // and each is woken once, when the batch is queued.
        let mut touched: Vec<(UpstreamId, Rc<Outbox>)> = Vec::new();
        // While handing over: until when reading stays paused (see MIGRATION_PAUSE).
        let mut paused_until: Option<tokio::time::Instant> = None;
        // One timer for the connection's own deadline and the end of a handover pause, armed
        // lazily: a deadline that moved later (the connection made progress) is not re-armed
        // until the timer fires early, so a busy connection neither builds a timer nor touches
        // the timer wheel per batch. Invariant: it is armed at or before the next wake-up due.
        let timer = tokio::time::sleep_until(far_future());
        tokio::pin!(timer);
        // Completes when the engine starts stopping; made once (a `Notified` created before
        // the stop sees it), disabled once it fired.
        let stop = self.lifecycle.stop_accepting();
        tokio::pin!(stop);
        let mut stop_seen = false;
        loop {
            // Every complete frame in the buffer.
            let now = now();
            let mut frames = 0usize;
            while !close {
                let decoded = bolt::decode(&buf[start..end], max_frame);
                match decoded {
                    Ok(Some(frame)) => {
                        if frames == 0 {
                            // The health verdicts a batch's routing sees.
                            self.refresh_bolt_availability(now);
                        }
                        frames += 1;
                        let len = frame.len;
                        let before = logged.then(|| *bw.proxy.borrow().stats());
                        let verdict = bw.proxy.borrow_mut().handle_downstream_frame(
                            now,
                            down,
                            &frame,
                            &mut self.upstreams.all_clusters_mut(),
                            &mut self.rng.borrow_mut(),
                        );
                        if let Some(before) = &before {
                            let conn = LoggedConnection {
                                listener,
                                down,
                                peer,
                                original_dst,
                            };
                            self.bolt_log_request(&conn, &frame, verdict, before, now);
                        }
                        match verdict {
                            DownstreamVerdict::Forward { up, request_id } => {
                                let bytes = &mut buf[start..start + len];
                                bolt::set_request_id(bytes, request_id);
                                let o = match touched.iter().find(|(u, _)| *u == up) {
                                    Some((_, o)) => o,
                                    None => {
                                        // The connection may be new: its Connect is still in
                                        // poll_action, and its outbox is made here.
                                        let o = bw.ups.borrow_mut().entry(up).or_default().clone();
                                        touched.push((up, o));
                                        &touched[touched.len() - 1].1
                                    }
                                };
                                // Woken once the batch is queued (below).
                                o.buf.borrow_mut().extend_from_slice(bytes);
                            }
                            DownstreamVerdict::AnswerHeartbeat => {
                                bolt::encode_heartbeat_reply(&mut outbox.buf.borrow_mut(), &frame);
                            }
                            DownstreamVerdict::Reply(r) => r.encode(&mut outbox.buf.borrow_mut()),
                            DownstreamVerdict::Drop(_) => {}
                        }
                        start += len;
                    }
                    Ok(None) => break,
                    Err(e) => {
                        debug!(%peer, error = %e, "bolt: codec error from downstream; closing");
                        // The proxy forgets the connection now: its logged requests end here.
                        if logged && bw.proxy.borrow().downstream_in_flight(down) > 0 {
                            self.bolt_log_abandoned(down);
                        }
                        let reply = bw.proxy.borrow_mut().handle_downstream_codec_error(
                            now,
                            down,
                            &buf[start..end],
                        );
                        if let Some(r) = reply {
                            r.encode(&mut outbox.buf.borrow_mut());
                        }
                        close = true;
                    }
                }
            }
            // Once per batch, not per frame: the proxy's actions (connections to open, and the
            // idle connections a new destination evicted), the timer, the counters, the clock,
            // and one wake-up per upstream connection fed.
            if frames > 0 || close {
                self.bolt_after_input();
                self.publish_bolt_stats();
            }
            if frames > 0 {
                framed = true;
                progress = tokio::time::Instant::now();
            }
            for (_, o) in &touched {
                o.wake.notify_one();
            }
            // Backpressure: wait while an upstream this connection feeds has too much queued.
            for (_, o) in touched.drain(..) {
                while o.buf.borrow().len() > UPSTREAM_OUTBOX_HIGH && !o.close.get() {
                    let drained = o.drained.notified();
                    tokio::select! {
                        biased;
                        () = &mut expired => break,
                        () = drained => {}
                    }
                }
            }
            if outbox.close.get() {
                debug!(%peer, "bolt: the client does not read its answers; closing");
                break;
            }
            if start == end && !buf.is_empty() {
                // Every byte read is processed: the buffer goes back to the worker's pool (one
                // that grew for a large frame is freed, and its budget given back), and an
                // idle connection holds none.
                if buf.len() > READ_CHUNK {
                    hold.release();
                }
                pool.give_read(std::mem::take(&mut buf));
                (start, end) = (0, 0);
            }
            if !close
                && !buf.is_empty()
                && !make_room(&mut buf, &mut start, &mut end, max_frame, |len| {
                    hold.grow_to(len)
                })
            {
                // Its partial frame would take the process beyond its budget (Envoy's
                // overload manager): this connection goes, the others are served.
                overflow = true;
                close = true;
            }
            // Write what is pending (replies, answers forwarded by upstream tasks).
            if !outbox.buf.borrow().is_empty() {
                std::mem::swap(&mut spare, &mut outbox.buf.borrow_mut());
                let n = spare.len() as u64;
                // Flushed: over TLS the end of a batch could otherwise wait inside rustls while
                // this loop goes back to reading.
                if crate::http::write_flushed(&mut stream, &spare)
                    .await
                    .is_err()
                {
                    break;
                }
                spare.clear();
                if let Some(l) = lstats {
                    bump(&l.downstream_bytes_sent, n);
                }
                progress = tokio::time::Instant::now();
                continue;
            }
            if close {
                break;
            }
            // Draining: close once nothing is in flight for this connection — or, when a new
            // instance took over, stop reading (what the client sends next waits in the
            // socket), let the requests in flight finish, and hand the connection over with the
            // bytes read but not processed.
            // A TLS connection stays (its session keys are this process's): it closes once
            // nothing is in flight, as without a new instance.
            let migrate = if self.lifecycle.is_stopping() && !stream.is_tls() {
                self.ready_handoff()
            } else {
                None
            };
            if self.lifecycle.is_stopping() && bw.proxy.borrow().downstream_in_flight(down) == 0 {
                if let Some(to) = migrate.as_ref()
                    && end - start <= to.max_unread()
                {
                    let unread = buf[start..end].to_vec();
                    bw.downs.borrow_mut().remove(&down);
                    bw.proxy.borrow_mut().handle_downstream_closed(down);
                    self.bolt_after_input();
                    self.publish_bolt_stats();
                    debug!(%peer, unread = unread.len(), "bolt: connection handed over");
                    if let Ok(socket) = stream.into_socket() {
                        to.take(
                            self.config.listeners[listener].address,
                            socket,
                            peer,
                            unread,
                        );
                    }
                    return;
                }
                break;
            }
            // Handing over: stop reading (what the client sends next waits in the socket) for
            // up to MIGRATION_PAUSE at a time — unless a partial frame too large to travel
            // with the connection must complete here first.
            let pausing = migrate
                .as_ref()
                .is_some_and(|to| end - start <= to.max_unread());
            if !pausing {
                paused_until = None;
            } else if paused_until.is_none() {
                paused_until = Some(tokio::time::Instant::now() + MIGRATION_PAUSE);
            }
            let paused = paused_until.filter(|&t| tokio::time::Instant::now() < t);
            // The connection's own deadline: its first frame, the frame it is sending, or idle.
            let deadline = if !framed {
                Some(started + frame_timeout)
            } else if end > start {
                Some(progress + frame_timeout)
            } else if bw.proxy.borrow().downstream_in_flight(down) == 0 {
                idle_timeout.map(|t| progress + t)
            } else {
                None
            };
            let wake_at = match (deadline, paused) {
                (Some(d), Some(p)) => Some(d.min(p)),
                (d, p) => d.or(p),
            };
            if let Some(at) = wake_at
                && at < timer.deadline()
            {
                timer.as_mut().reset(at);
            }
            tokio::select! {
                biased;
                () = &mut expired => break,
                () = &mut timer, if wake_at.is_some() => {
                    if deadline.is_some_and(|d| d <= tokio::time::Instant::now()) {
                        bump(&self.stats().bolt.downstream_timeouts, 1);
                        debug!(%peer, framed, partial = end - start, "bolt: downstream frame or idle timeout; closing");
                        break;
                    }
                    // Early (the deadline moved on since), or a pause's end: re-armed above.
                    timer.as_mut().reset(far_future());
                }
                () = outbox.wake.notified() => {}
                () = &mut stop, if !stop_seen => stop_seen = true,
                r = read_pooled(&mut stream, &mut buf, end, pool), if paused.is_none() => match r {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        end += n;
                        if let Some(l) = lstats {
                            bump(&l.downstream_bytes_received, n as u64);
                        }
                        // Forward what was read, then pause again.
                        paused_until = None;
                    }
                },
            }
        }
        if overflow {
            bump(&self.stats().bolt.partial_frame_overflow, 1);
            debug!(
                %peer,
                buffered = end - start,
                "bolt: partial frame beyond limits.bolt_partial_frame_bytes; closing"
            );
        }
        drop(hold);
        pool.give_read(buf);
        bw.downs.borrow_mut().remove(&down);
        if logged && bw.proxy.borrow().downstream_in_flight(down) > 0 {
            self.bolt_log_abandoned(down);
        }
        bw.proxy.borrow_mut().handle_downstream_closed(down);
        self.bolt_after_input();
        self.publish_bolt_stats();
        let _ = stream.shutdown().await;
    }

    /// Drains the proxy's actions (connections to open, replies to queue) and re-arms the timer
    /// when its next deadline moved earlier. Call after every input to the proxy.
    fn bolt_after_input(self: &Rc<Self>) {
        let bw = self.bolt();
        loop {
            let action = bw.proxy.borrow_mut().poll_action();
            match action {
                None => break,
                Some(Action::Reply(r)) => {
                    if let Some(o) = bw.downs.borrow().get(&r.down) {
                        o.push(|b| r.encode(b));
                    }
                    let flag = match r.status {
                        ResponseStatus::Timeout => "UT",
                        ResponseStatus::ConnectionClosed => bw.lost_flag.get(),
                        _ => "-",
                    };
                    // An answer given as the request arrived was logged then.
                    if let Some(stream) = r.stream {
                        self.bolt_log_answer(
                            stream,
                            Some(r.status.code()),
                            Some(flag),
                            reply_len(&r),
                        );
                    }
                }
                Some(Action::Close { up }) => {
                    // An idle connection the proxy forgot (a destination's, or one to a host that
                    // left its slot): its task ends it.
                    if let Some(o) = bw.ups.borrow().get(&up) {
                        o.close.set(true);
                        o.wake.notify_one();
                    }
                }
                Some(Action::Connect {
                    up,
                    cluster,
                    host,
                    address,
                    transport,
                }) => {
                    let outbox = bw.ups.borrow_mut().entry(up).or_default().clone();
                    let engine = self.clone();
                    tokio::task::spawn_local(async move {
                        engine
                            .bolt_upstream(up, cluster, host, (address, transport), outbox)
                            .await;
                    });
                }
            }
        }
        let next = bw.proxy.borrow().poll_timeout();
        if next.is_some_and(|n| bw.armed.get().is_none_or(|a| n < a)) {
            bw.timer.notify_one();
        }
    }

    /// One upstream connection: connect, then relay responses until it closes.
    async fn bolt_upstream(
        self: Rc<Self>,
        up: UpstreamId,
        cluster: usize,
        picked: HostRef,
        (address, transport): (SocketAddr, sluice_core::host::Transport),
        outbox: Rc<Outbox>,
    ) {
        let host = picked.id;
        let bw = self.bolt();
        // The connect and, to a TLS cluster, the handshake (verified) within connect_timeout: a
        // failed handshake is a connect failure, and no frame is written before it succeeded.
        let deadline = tokio::time::Instant::now() + self.config.clusters[cluster].connect_timeout;
        let stream = match self
            .upstreams
            .connect(&self.tls, cluster, transport, address, Some(deadline))
            .await
        {
            Ok(s) => s,
            Err(e) => {
                self.upstreams
                    .count_connect_failure(cluster, host, e.is_timeout());
                debug!(%address, error = %e, "bolt: upstream connect failed");
                self.upstreams.report_upstream_result(
                    cluster,
                    picked,
                    UpstreamResult::ConnectFailure,
                );
                self.end_upstream(up);
                return;
            }
        };
        bw.proxy.borrow_mut().handle_upstream_connected(up);
        if let Some(h) = self.stats().host(cluster, host.index()) {
            bump(&h.cx_total, 1);
            h.cx_active
                .store(h.cx_active.load(Relaxed).wrapping_add(1), Relaxed);
        }
        let mut buf = vec![0u8; READ_CHUNK];
        let (mut start, mut end) = (0usize, 0usize);
        let mut spare: Vec<u8> = Vec::new();
        let mut written = 0usize;
        let mut unflushed = false;
        // Read and write from this one task: two lock-free handles on one cell, not
        // `tokio::io::split`'s halves (a lock taken on every poll).
        let stream = std::cell::RefCell::new(stream);
        let (mut rd, mut wr) = (Shared(&stream), Shared(&stream));
        // Upstream frames are bounded by the largest listener limit (16 MiB by default).
        let max_frame = self
            .config
            .listeners
            .iter()
            .enumerate()
            .map(|(i, _)| bw.proxy.borrow().max_frame_size(i))
            .max()
            .unwrap_or(bolt::DEFAULT_MAX_FRAME_SIZE);
        let mut lost = false;
        let host_stats = self.stats().host(cluster, host.index());
        loop {
            let now = now();
            loop {
                let decoded = bolt::decode(&buf[start..end], max_frame);
                match decoded {
                    Ok(Some(frame)) => {
                        let len = frame.len;
                        let status = frame.status;
                        let upstream_id = frame.request_id;
                        let verdict = bw.proxy.borrow_mut().handle_upstream_frame(
                            now,
                            up,
                            &frame,
                            &mut self.upstreams.all_clusters_mut(),
                        );
                        match verdict {
                            UpstreamVerdict::Forward { down, request_id } => {
                                let bytes = &mut buf[start..start + len];
                                bolt::set_request_id(bytes, request_id);
                                if let Some(o) = bw.downs.borrow().get(&down) {
                                    if o.buf.borrow().len() > DOWNSTREAM_OUTBOX_LIMIT {
                                        o.close.set(true);
                                        o.wake.notify_one();
                                    } else {
                                        o.push(|b| b.extend_from_slice(bytes));
                                    }
                                }
                                self.upstreams.report_upstream_result(
                                    cluster,
                                    picked,
                                    upstream_result(status),
                                );
                                self.bolt_log_answer((up, upstream_id), status, None, len as u64);
                                if let Some(h) = host_stats {
                                    bump(&h.rq_total, 1);
                                }
                            }
                            UpstreamVerdict::AnswerHeartbeat => {
                                bolt::encode_heartbeat_reply(&mut outbox.buf.borrow_mut(), &frame);
                            }
                            UpstreamVerdict::Drop => {}
                        }
                        start += len;
                    }
                    Ok(None) => break,
                    Err(e) => {
                        debug!(%address, error = %e, "bolt: codec error from upstream; closing it");
                        lost = true;
                        break;
                    }
                }
            }
            // Once per read, not per response: the proxy's actions (the close of a connection
            // to a host that left its slot, once its last stream ended) and the timer.
            self.bolt_after_input();
            if lost {
                break;
            }
            make_room(&mut buf, &mut start, &mut end, max_frame, |_| true);
            if outbox.close.get() {
                break;
            }
            // Take what is queued once the previous batch is written.
            if written == spare.len() && !outbox.buf.borrow().is_empty() {
                spare.clear();
                written = 0;
                std::mem::swap(&mut spare, &mut outbox.buf.borrow_mut());
                outbox.drained.notify_waiters();
            }
            // Read and write at once: an upstream that stops reading while its own answers
            // back up must still have them read, or both sides would wait on each other.
            let writing = written < spare.len();
            tokio::select! {
                biased;
                r = rd.read(&mut buf[end..]) => match r {
                    Ok(0) | Err(_) => break,
                    Ok(n) => end += n,
                },
                // A written batch is flushed before waiting for more: over TLS its end could
                // otherwise stay inside rustls (a no-op on a plain socket).
                r = async {
                    if writing {
                        wr.write(&spare[written..]).await.map(Some)
                    } else {
                        wr.flush().await.map(|()| None)
                    }
                }, if writing || unflushed => match r {
                    Ok(Some(0)) | Err(_) => break,
                    Ok(Some(n)) => {
                        written += n;
                        unflushed = true;
                    }
                    Ok(None) => unflushed = false,
                },
                () = outbox.wake.notified(), if !writing && !unflushed => {}
            }
        }

        if let Some(h) = self.stats().host(cluster, host.index()) {
            h.cx_active
                .store(h.cx_active.load(Relaxed).wrapping_sub(1), Relaxed);
        }
        let in_flight = bw.proxy.borrow().upstream_in_flight(up);
        if in_flight > 0 {
            self.upstreams
                .report_upstream_result(cluster, picked, UpstreamResult::Reset);
        }
        debug!(%address, in_flight, "bolt: upstream connection closed");
        self.end_upstream(up);
    }

    /// Forgets an upstream connection: its requests in flight are answered status 16.
    fn end_upstream(self: &Rc<Self>, up: UpstreamId) {
        let bw = self.bolt();
        let connected = bw.proxy.borrow().upstream(up).is_some_and(|(_, _, c)| c);
        bw.lost_flag.set(if connected { "UC" } else { "UF" });
        let gone = bw.ups.borrow_mut().remove(&up);
        if let Some(o) = gone {
            // Whoever waits on this outbox must not wait for a connection that is gone.
            o.close.set(true);
            o.buf.borrow_mut().clear();
            o.drained.notify_waiters();
        }
        bw.proxy.borrow_mut().handle_upstream_closed(
            now(),
            up,
            &mut self.upstreams.all_clusters_mut(),
        );
        self.bolt_after_input();
        bw.lost_flag.set("UC");
        self.publish_bolt_stats();
    }

    /// The worker's Bolt timer: answers requests whose deadline passed (status 7). It also
    /// follows the active health checks' verdicts as they change, so that this worker's
    /// connection to a host that failed its check closes then (its requests answered status
    /// 16), not at the next downstream frame: the downstream connections look at the verdicts
    /// only per batch of frames, and when every client waits on answers from that host (a
    /// partition, its pipelines full) no frame comes until the requests time out.
    pub(crate) async fn bolt_timer(self: Rc<Self>) {
        let bw = self.bolt();
        let health = self.upstreams.shared_health().clone();
        loop {
            // Made before the look at the verdicts, so a change after the look wakes it.
            let verdict_changed = health.verdict_changed();
            self.refresh_bolt_availability(now());
            let next = bw.proxy.borrow().poll_timeout();
            bw.armed.set(next);
            let sleep_until = next.map_or_else(
                || tokio::time::Instant::now() + Duration::from_secs(3600),
                crate::to_tokio,
            );
            tokio::select! {
                () = tokio::time::sleep_until(sleep_until) => {
                    bw.proxy
                        .borrow_mut()
                        .handle_timeout(now(), &mut self.upstreams.all_clusters_mut());
                    self.bolt_after_input();
                    self.publish_bolt_stats();
                }
                () = bw.timer.notified() => {}
                () = verdict_changed => {}
            }
        }
    }

    /// Applies the health checks' and outlier detectors' latest verdicts to every cluster (a
    /// Bolt request's cluster is known only once it is routed).
    ///
    /// When an active health check marks a host down, this worker's multiplexed connection to
    /// it is closed (Envoy's `close_connections_on_host_health_failure`): a connection that
    /// silently stopped delivering (a partition that drops packets, a stateful firewall) would
    /// otherwise be reused once the host passes its checks again — on fresh connections — and
    /// every request sent on it would time out. Its requests in flight are answered status 16.
    fn refresh_bolt_availability(&self, now: Instant) {
        for ci in 0..self.upstreams.cluster_count() {
            self.upstreams.refresh_availability_at(ci, now);
        }
        let bw = self.bolt();
        let seen = self.upstreams.shared_health().generation_sum();
        if seen == bw.health_seen.replace(seen) {
            return;
        }
        // Hosts that went from healthy to unhealthy since the last look.
        let mut was = bw.was_healthy.borrow_mut();
        let first_look = was.is_empty();
        let mut went_down: Vec<(usize, usize)> = Vec::new();
        was.resize_with(self.config.clusters.len(), Vec::new);
        for (ci, c) in self.config.clusters.iter().enumerate() {
            was[ci].resize(c.host_slots(), false);
            for (hi, w) in was[ci].iter_mut().enumerate() {
                let now = self.upstreams.shared_health().is_healthy(ci, hi);
                if *w && !now && !first_look {
                    went_down.push((ci, hi));
                }
                *w = now;
            }
        }
        drop(was);
        if went_down.is_empty() {
            return;
        }
        let proxy = bw.proxy.borrow();
        for (up, outbox) in bw.ups.borrow().iter() {
            if let Some((ci, host, _)) = proxy.upstream(*up)
                && went_down.contains(&(ci, host.id.index()))
                && !outbox.close.replace(true)
            {
                debug!(
                    cluster = ci,
                    host = host.id.index(),
                    "bolt: host failed its health check; closing its connection"
                );
                outbox.wake.notify_one();
            }
        }
    }

    /// Adds what the proxy counted since the last call to the worker's counters.
    fn publish_bolt_stats(&self) {
        let bw = self.bolt();
        let now = *bw.proxy.borrow().stats();
        let was = bw.published.replace(now);
        let s = &self.stats().bolt;
        bump(&s.requests, now.requests - was.requests);
        bump(&s.oneway, now.oneway - was.oneway);
        bump(&s.heartbeats, now.heartbeats - was.heartbeats);
        bump(&s.responses, now.responses - was.responses);
        bump(
            &s.responses_dropped,
            now.responses_dropped - was.responses_dropped,
        );
        bump(&s.no_route, now.no_route - was.no_route);
        bump(&s.no_host, now.no_host - was.no_host);
        bump(
            &s.no_original_dst,
            now.no_original_dst - was.no_original_dst,
        );
        bump(
            &s.destinations_closed,
            now.destinations_closed - was.destinations_closed,
        );
        bump(&s.overflow, now.overflow - was.overflow);
        bump(&s.timeouts, now.timeouts - was.timeouts);
        bump(&s.codec_errors, now.codec_errors - was.codec_errors);
        bump(&s.upstream_lost, now.upstream_lost - was.upstream_lost);
    }

    /// A request frame from a downstream of a logged listener, and the proxy's verdict on it:
    /// its exchange begins (forwarded, expecting an answer), or its line is written now (the
    /// proxy answered or dropped it, or it is oneway). `before`: the proxy's counters before the
    /// frame, which tell why it answered status 6 or dropped a oneway request.
    fn bolt_log_request(
        &self,
        conn: &LoggedConnection,
        frame: &Frame<'_>,
        verdict: DownstreamVerdict,
        before: &BoltStats,
        now: Instant,
    ) {
        if frame.is_heartbeat() || frame.kind == Kind::Response {
            return;
        }
        let bw = self.bolt();
        let oneway = frame.kind == Kind::Oneway;
        let mut x = self.take_exchange(conn, now);
        x.request_id = frame.request_id;
        x.bytes_received = frame.len as u64;
        // At most MAX_LOGGED_NAME bytes of each: a client's names must not make the log's
        // reusable buffers (and its lines) as large as a frame.
        x.service
            .extend_from_slice(logged(bolt::router::service(frame).unwrap_or_default()));
        x.method
            .extend_from_slice(logged(frame.header.get(METHOD_KEY).unwrap_or_default()));
        let (status, flag, bytes_sent) = match verdict {
            DownstreamVerdict::Forward { up, request_id } => {
                let proxy = bw.proxy.borrow();
                if let Some((cluster, host, _)) = proxy.upstream(up) {
                    x.cluster = Some(cluster);
                    x.upstream = proxy.upstream_destination(up).or_else(|| {
                        self.upstreams
                            .all_clusters()
                            .get(cluster)
                            .map(|c| c.host(host.id).address)
                    });
                }
                drop(proxy);
                if !oneway {
                    let old = self
                        .bolt()
                        .exchanges
                        .borrow_mut()
                        .insert((up, request_id), x);
                    // The proxy never gives one id to two requests in flight on a connection.
                    debug_assert!(old.is_none(), "an upstream id in flight twice");
                    if let Some(old) = old {
                        self.give_back(old);
                    }
                    return;
                }
                (None, None, 0)
            }
            DownstreamVerdict::Reply(r) => {
                let stats = *bw.proxy.borrow().stats();
                let flag = match r.status {
                    ResponseStatus::ServerThreadpoolBusy => "UO",
                    ResponseStatus::NoProcessor if stats.no_route > before.no_route => "NR",
                    ResponseStatus::NoProcessor => "UH",
                    _ => "-",
                };
                (Some(r.status.code()), Some(flag), reply_len(&r))
            }
            DownstreamVerdict::Drop(Dropped::NoRoute) => (None, Some("NR"), 0),
            DownstreamVerdict::Drop(Dropped::NoHost) => (None, Some("UH"), 0),
            DownstreamVerdict::Drop(Dropped::Overflow) => (None, Some("UO"), 0),
            DownstreamVerdict::Drop(Dropped::NotARequest) | DownstreamVerdict::AnswerHeartbeat => {
                self.give_back(x);
                return;
            }
        };
        // Answered or dropped by the proxy: which route (and cluster) it took, if any.
        if x.cluster.is_none() {
            x.cluster = bw
                .proxy
                .borrow()
                .router(conn.listener)
                .and_then(|r| r.route(frame))
                .map(|r| r.cluster_index);
        }
        self.write_exchange(&x, status, flag, bytes_sent, now);
        self.give_back(x);
    }

    /// A logged request was answered (by its upstream, `flag` `None`, or by the proxy): writes
    /// its line. Nothing for a request that is not logged.
    fn bolt_log_answer(
        &self,
        stream: (UpstreamId, u32),
        status: Option<u16>,
        flag: Option<&'static str>,
        bytes_sent: u64,
    ) {
        let bw = self.bolt();
        if bw.exchanges.borrow().is_empty() {
            return;
        }
        let Some(x) = bw.exchanges.borrow_mut().remove(&stream) else {
            return;
        };
        self.write_exchange(&x, status, flag, bytes_sent, now());
        self.give_back(x);
    }

    /// Downstream `down` closes with logged requests in flight: each gets its line, flag `DC`
    /// and no status (its answer, if any comes, is dropped).
    fn bolt_log_abandoned(&self, down: DownstreamId) {
        let bw = self.bolt();
        let mine: Vec<(UpstreamId, u32)> = bw
            .exchanges
            .borrow()
            .iter()
            .filter(|(_, x)| x.down == down)
            .map(|(key, _)| *key)
            .collect();
        let now = now();
        for key in mine {
            if let Some(x) = bw.exchanges.borrow_mut().remove(&key) {
                self.write_exchange(&x, None, Some("DC"), 0, now);
                self.give_back(x);
            }
        }
    }

    fn write_exchange(
        &self,
        x: &Exchange,
        status: Option<u16>,
        flag: Option<&'static str>,
        bytes_sent: u64,
        now: Instant,
    ) {
        let Some(log) = self.serving.bolt_access_log(x.listener) else {
            return;
        };
        log.borrow_mut().log_bolt(&BoltEntry {
            start: x.start,
            duration_ms: now.duration_since(x.t0).as_millis() as u64,
            downstream: x.peer,
            listener: &self.config.listeners[x.listener].name,
            original_dst: x.original_dst,
            cluster: x
                .cluster
                .and_then(|c| self.config.clusters.get(c))
                .map(|c| c.name.as_str()),
            upstream: x.upstream,
            flag: flag.filter(|f| *f != "-"),
            bytes_received: x.bytes_received,
            bytes_sent,
            service: &x.service,
            method: &x.method,
            request_id: x.request_id,
            status,
        });
    }

    /// A cleared exchange for a request of `conn` starting now (a spare one when there is one).
    fn take_exchange(&self, conn: &LoggedConnection, now: Instant) -> Exchange {
        let spare = self.bolt().spare_exchanges.borrow_mut().pop();
        let mut x = spare.unwrap_or_else(|| Exchange {
            down: conn.down,
            request_id: 0,
            start: SystemTime::UNIX_EPOCH,
            t0: now,
            listener: 0,
            peer: conn.peer,
            original_dst: None,
            cluster: None,
            upstream: None,
            bytes_received: 0,
            service: Vec::new(),
            method: Vec::new(),
        });
        x.down = conn.down;
        x.start = SystemTime::now();
        x.t0 = now;
        x.listener = conn.listener;
        x.peer = conn.peer;
        x.original_dst = conn.original_dst;
        x.cluster = None;
        x.upstream = None;
        x.service.clear();
        x.method.clear();
        x
    }

    /// Keeps a finished exchange's buffers for the next one (a bounded number of them).
    fn give_back(&self, x: Exchange) {
        let mut spare = self.bolt().spare_exchanges.borrow_mut();
        if spare.len() < MAX_SPARE_EXCHANGES
            && x.service.capacity() <= 4096
            && x.method.capacity() <= 4096
        {
            spare.push(x);
        }
    }
}

#[cfg(test)]
mod health_tests;
#[cfg(test)]
mod idle_tests;
#[cfg(test)]
mod test_support;
