//! The walk of one forwarded request ([`Engine::forward`]), step by step along the core's
//! request stream (`sluice_core::l7::stream`): the body held or left to stream, the upstream
//! head written once (`wire`), admission ([`Engine::admit`]), then tries — a connection for
//! each (`upstream`: [`Engine::connect_try`]), and on it [`Engine::run_try`]: send the request,
//! read the response head, let the core decide ([`Engine::decide_retry`]), relay the answer
//! ([`Engine::relay_response`]).
//!
//! Owns the request's stream in its guard ([`StreamGuard`]: dropped midway, it aborts the
//! stream, which gives back every breaker unit it holds), the per-request state the steps
//! share ([`Forwarding`], fixed across tries, and [`TryState`], one try's), and the driver's
//! side of the stream: [`Engine::stream_input`] feeds one input and carries out its outputs,
//! turning the stream's events into stats and outlier-detection results (the only source of
//! both: connect, per-try and route timeouts are told apart by the core, never guessed here).
//!
//! Invariants: one input at a time, its outputs drained before the next; nothing awaited
//! between the stream's pick and the use of the host it picked; a response byte written means
//! no further try (the core's `ForwardResponse` is final); every path out of a request ends the
//! stream (`ResponseComplete`, `Abort`, or the stream's own answer) or drops its guard.

use std::cell::{Cell, RefCell};
use std::future::{Future, poll_fn};
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::task::Poll;
use std::time::Duration;

use sluice_core::cluster::HostId;
use sluice_core::config::http::{ForwardAction, ServerHeader};
use sluice_core::health::{Permit, Resource, UpstreamResult};
use sluice_core::host::HostRef;
use sluice_core::http1::conn::keeps_alive;
use sluice_core::http1::{BodyFraming, Head, Version};
use sluice_core::l7::edits::Rendered;
use sluice_core::l7::exchange::{
    Event as ExchangeEvent, ExchangeConfig, ResponseFlag, RetryPolicyView, TryFailure, status_for,
};
use sluice_core::l7::grpc;
use sluice_core::l7::stream::{Event as StreamEvent, Input, Output, Stream};
use sluice_core::lb::request_hash;
use sluice_core::router::pick_cluster;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::{Instant as TokioInstant, Sleep};

use super::body::{
    Detach, RequestBody, UploadFault, Uploaded, buffer_body, copy_body, fault_of,
    stream_request_body, tunnel,
};
use super::respond::{Respond, send_continue};
use super::upstream::{BreakerUnit, Connected, Upstream};
use super::wire::{read_response_head, rewrite_try_fields, send_request, stage_downstream_head};
use super::{Outcome, REPLAY_LIMIT, ReadBuffer, Scratch, deadline_of, far_future, write_flushed};
use crate::engine::Engine;
use crate::net::Network;
use crate::now;
use crate::shared_io::Shared;
use crate::stats::bump;
use crate::tls::MaybeTls;
use crate::upstreams::ClusterRef;

/// The longest a failed try waits for the rest of a small streamed body to make it replayable
/// (the detached upload: see the module docs); past it the failure is answered as for a body
/// that cannot be replayed.
const DETACHED_BODY_WAIT: Duration = Duration::from_secs(3);

/// How a step of the response path ([`Engine::alongside`]) ended.
pub(super) enum Alongside<T> {
    Done(T),
    /// A timer of the request's stream fired (its `Timeout` input not given yet).
    Timeout,
    /// The client's side of the streamed body failed (the try is over).
    UploadFailed(UploadFault),
}

/// A request's stream (`sluice_core::l7::stream`) with its cluster: when dropped unfinished (the
/// request's future dropped midway), it aborts the stream, which gives back every breaker unit
/// it holds — the stream does the accounting, the guard only makes sure it is told.
pub(super) struct StreamGuard {
    pub(super) stream: Stream,
    pub(super) cluster: ClusterRef,
    /// A new connection's max_connections unit, between the stream handing it over and the
    /// connection taking it.
    pub(super) connection_permit: Option<Permit>,
    /// The host of the latest try as it was picked (id and slot epoch): what the try's
    /// results and its connection are for, even if a DNS answer gives the slot to another
    /// host before they come back.
    pub(super) picked: Option<HostRef>,
    /// How the latest try's host is reached (its slot's transport when it was picked, as
    /// `picked`): which of the cluster's `transport_socket_matches`, or its own `tls`.
    pub(super) transport: sluice_core::host::Transport,
}

impl StreamGuard {
    pub(super) fn new(cluster: &ClusterRef, stream: Stream) -> Self {
        StreamGuard {
            stream,
            cluster: cluster.clone(),
            connection_permit: None,
            picked: None,
            transport: None,
        }
    }

    /// The new connection's max_connections unit, held until the connection closes.
    pub(super) fn take_connection_unit(&mut self) -> Option<BreakerUnit> {
        self.connection_permit
            .take()
            .map(|p| BreakerUnit::adopt(&self.cluster, p))
    }

    pub(super) fn poll_timeout(&self) -> Option<sluice_core::Instant> {
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

/// What a forwarded request keeps across its tries: what was decided before the first one
/// (its cluster, framing, timeout, destination) and what the tries add to (the body kept for a
/// replay, the bytes that reached the upstream, the latest try's host and address). Plain
/// fields and references, on the request path's future: nothing allocated.
pub(super) struct Forwarding<'r> {
    pub(super) action: &'r ForwardAction,
    /// The cluster's index.
    pub(super) ci: usize,
    pub(super) head: &'r Head,
    pub(super) head_len: usize,
    pub(super) framing: BodyFraming,
    /// The upstream speaks HTTP/2 (the cluster's protocol, or the client's).
    pub(super) http2: bool,
    /// A gRPC request (its `content-type`): its local answers are gRPC's.
    pub(super) grpc: bool,
    /// The listener's `stream_idle_timeout`: the longest wait for the next bytes of a body.
    pub(super) stream_idle: Option<Duration>,
    /// The listener's `server`, on local answers and forwarded ones.
    pub(super) server: Option<&'r ServerHeader>,
    /// The listener's `upgrade_types`.
    pub(super) upgrade_types: Option<&'r [String]>,
    /// The route's timeout, capped by a gRPC request's `grpc-timeout`.
    pub(super) route_timeout: Option<Duration>,
    /// Where an `original_dst` cluster sends this request (set at admission).
    pub(super) destination: Option<SocketAddr>,
    /// The proxy's own answers close the client's connection: a body not held (what is left
    /// of it would be read as a request), or a client that does not keep its connection.
    pub(super) close_on_reply: bool,
    /// The upstream request's head's length in `out` (a held body, or the start of a
    /// streamed one, follows it there).
    pub(super) head_out: usize,
    /// The held body's length after the head in `out`, framed for the upstream; `None` while
    /// it streams. Set too when a retry sends a streamed body that was kept whole.
    pub(super) body_len: Option<usize>,
    /// A streamed body's replay copy is whole (it ended within [`REPLAY_LIMIT`]): a retry
    /// sends it with the head.
    pub(super) body_kept: bool,
    /// What of the request reached the upstream (a streamed body's upload adds to it as it
    /// goes, so that an upload cut short still counts what it sent).
    pub(super) bytes_received: &'r Cell<u64>,
    /// The latest try's host, and the address it went to (for the log).
    pub(super) last_host: Option<HostId>,
    pub(super) upstream_addr: Option<SocketAddr>,
    /// The stream's timer, one per request: each step of a try re-arms it to
    /// `stream.poll_timeout()` ([`arm`]) rather than putting a new sleep in tokio's wheel and
    /// taking it out again (~300 instructions each way, several steps per request).
    pub(super) timer: Pin<&'r mut Sleep>,
}

/// Sets `timer` to fire at `at` (never, for `None`). A registered timer whose deadline moves
/// later is extended in place (tokio's `reset`; the wheel re-files it when its old slot comes
/// up); one already at `at` is left alone.
fn arm(timer: &mut Pin<&mut Sleep>, at: Option<sluice_core::Instant>) {
    let deadline = deadline_of(at);
    if timer.deadline() != deadline {
        timer.as_mut().reset(deadline);
    }
}

/// One try's progress on its connection, shared by its steps ([`Engine::run_try`]).
pub(super) struct TryState {
    pub(super) host: HostId,
    /// The host as picked (id and slot epoch): what the try's results are for.
    pub(super) picked: HostRef,
    pub(super) try_start: sluice_core::Instant,
    /// The whole request body went upstream (at once, or streamed to its end).
    pub(super) request_complete: bool,
    /// Bytes of the request were written upstream.
    pub(super) written: bool,
    /// The upstream sent more interim (1xx) answers than allowed.
    pub(super) too_many_interim: bool,
    /// The client's side of a streamed body failed (the try is over, by the client's fault).
    pub(super) upload_fault: Option<UploadFault>,
}

/// How a try ended ([`Engine::run_try`]).
pub(super) enum TryEnd {
    /// The core goes on with the stream's next output (a retry, or its own answer).
    Retry(Option<Output>),
    /// The request is over.
    Done(Outcome),
}

/// What the core decided on a try whose request went out ([`Engine::decide_retry`]).
pub(super) enum Decision {
    /// The response is forwarded: its status.
    Forward(u16),
    /// The try is over: the stream's next output.
    Retry(Option<Output>),
    /// The client's body failed meanwhile: answered.
    Answered(Outcome),
}

impl<N: Network> Engine<N> {
    /// Answers a request whose client failed its body while it was uploading (it stopped
    /// sending, sent a malformed body, or went away): the client's fault, not the upstream's —
    /// the try is aborted with nothing reported to outlier detection (a client must not get a
    /// healthy host ejected), and the client gets the fault's local answer (400 or 408). When
    /// part of the upstream's answer already reached it (`answered`: that answer's status and
    /// the bytes sent), the request ends there instead, flagged with the fault (its connection
    /// is not reused). `upstream` and `bytes_received` are the try's, for the log.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn answer_upload_fault<D: Respond>(
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
            .local_reply_text(
                grpc,
                server,
                down,
                out,
                status,
                flag,
                fault.reply_text(),
                true,
            )
            .await;
        o.upstream = upstream;
        o.bytes_received = bytes_received;
        o
    }

    /// Forwards a routed request to `action`'s cluster: the walk of one request through the
    /// core's stream, each phase a step below — the request body held or left to stream, the
    /// upstream head written once ([`Engine::write_upstream_request`]), admission
    /// ([`Engine::admit`]), then tries: each gets a connection ([`Engine::connect_try`]) and
    /// runs on it ([`Engine::run_try`]: send, read the response head, let the core decide
    /// whether it is retried, relay the answer) until the core answers or a response went out.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn forward<D: Respond>(
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
        // The listener's `server` and `upgrade_types` (held by a refcount: `scratch` is lent
        // out below).
        let listener_http = Rc::clone(&scratch.listener_http);
        let bytes_received = Cell::new(0);
        let timer = std::pin::pin!(tokio::time::sleep_until(far_future()));
        let mut req = Forwarding {
            action,
            ci,
            head,
            head_len: head.head_len(),
            framing: head.framing(),
            // The HTTP version of the upstream: the cluster's, or (`protocol: downstream`) the
            // client's.
            http2: self.config.clusters[ci]
                .protocol
                .speaks_http2(scratch.downstream_http2),
            grpc: scratch.grpc,
            stream_idle: scratch.stream_idle,
            server: listener_http.server.as_ref(),
            upgrade_types: listener_http.upgrade_types.as_deref(),
            route_timeout: None,
            destination: None,
            close_on_reply: true,
            head_out: 0,
            body_len: None,
            body_kept: false,
            bytes_received: &bytes_received,
            last_host: None,
            upstream_addr: None,
            timer,
        };

        // --- the upstream head, built once ---
        self.write_upstream_request(&mut req, matched_prefix, scratch, rbuf, out);
        req.head_out = out.len();

        // --- the request body: held after the head when small enough to replay ---
        if head.expect_continue() && !matches!(req.framing, BodyFraming::None) {
            let _ = send_continue(down).await;
        }
        let mut body = RequestBody::new(req.framing, D::TYPED);
        let held = match buffer_body(down, rbuf, req.head_len, &mut body, out).await {
            Ok(held) => held,
            Err(fault) => {
                let (status, flag) = fault.status();
                let text = fault.reply_text();
                return self
                    .local_reply_text(req.grpc, req.server, down, out, status, flag, text, true)
                    .await;
            }
        };
        req.body_len = held.whole.then_some(held.framed);
        req.bytes_received.set(req.head_len as u64 + held.received);
        // A streamed body's copy for retries (see `stream_request_body`), this request's only:
        // it starts with what was held (sent with the head).
        scratch.replay.clear();
        if !held.whole {
            scratch.replay.extend_from_slice(&out[req.head_out..]);
        }

        // --- admission: the max_requests breaker, then the hosts' availability ---
        let (mut stream, admitted_at) = match self.admit(&mut req, scratch, rbuf, down, out).await {
            Ok(admitted) => admitted,
            Err(answered) => return answered,
        };

        // --- tries --- (from here until a response byte is written, a drain deadline answers
        // the request 503 rather than closing under it)
        scratch.awaiting.set(true);
        let mut step = self.stream_input_at(ci, &mut stream, Input::Start, admitted_at);
        loop {
            let (host, address, allow_pooled) = match step.take() {
                Some(Output::Respond { status, flag }) => {
                    if let Some(h) = req.last_host {
                        self.publish_host_active(ci, h);
                    }
                    scratch.awaiting.set(false);
                    let mut o = self
                        .local_reply(
                            req.grpc,
                            req.server,
                            down,
                            out,
                            status,
                            flag,
                            req.close_on_reply,
                        )
                        .await;
                    o.upstream = req.upstream_addr;
                    o.bytes_received = req.bytes_received.get();
                    return o;
                }
                Some(Output::Connect {
                    host,
                    address,
                    allow_pooled,
                }) => (host, req.destination.unwrap_or(address), allow_pooled),
                other => {
                    debug_assert!(other.is_none(), "unexpected stream output {other:?}");
                    // Backing off before a retry; the next pick sees the latest availability.
                    tokio::time::sleep_until(deadline_of(stream.poll_timeout())).await;
                    self.upstreams.refresh_availability(ci);
                    step = self.stream_input(ci, &mut stream, Input::Timeout);
                    continue;
                }
            };
            let connected = self
                .connect_try(
                    &mut req,
                    &mut stream,
                    &mut scratch.tries,
                    host,
                    address,
                    allow_pooled,
                )
                .await;
            let conn = match connected {
                Ok(conn) => conn,
                Err(next) => {
                    step = next;
                    continue;
                }
            };
            let ended = self
                .run_try(
                    &mut req,
                    &mut stream,
                    conn,
                    &mut body,
                    down,
                    scratch,
                    rbuf,
                    ubuf,
                    rhead,
                    out,
                )
                .await;
            match ended {
                TryEnd::Retry(next) => step = next,
                TryEnd::Done(outcome) => return outcome,
            }
        }
    }

    /// Admits a request whose head is written: where an `original_dst` cluster sends it (503
    /// when it has nowhere to go), its hash for a consistent-hash cluster, then the core's
    /// stream, which takes the max_requests breaker's unit and sees the hosts' availability.
    /// The stream (in its guard, which aborts it — giving back every breaker unit it holds — if
    /// this future is dropped midway) and when it was admitted; or the proxy's answer.
    async fn admit<D: Respond>(
        &self,
        req: &mut Forwarding<'_>,
        scratch: &Scratch,
        rbuf: &ReadBuffer,
        down: &mut D,
        out: &mut Vec<u8>,
    ) -> Result<(StreamGuard, sluice_core::Instant), Outcome> {
        let ci = req.ci;
        let head = req.head;
        let cluster_cfg = &self.config.clusters[ci];
        let cluster = &self.upstreams.cluster(ci);
        let replayable = req.body_len.is_some();
        req.close_on_reply = !replayable || !head.keep_alive();
        // An `original_dst` cluster: the request goes where its connection was going (one
        // that was not captured has nowhere to go: 503, never a loop back to the proxy).
        let Ok(destination) =
            crate::transparent::request_destination(cluster_cfg, scratch.original_dst, |name| {
                head.header(rbuf.bytes(), name)
            })
        else {
            return Err(self
                .local_reply(
                    req.grpc,
                    req.server,
                    down,
                    out,
                    503,
                    ResponseFlag::NoHealthyUpstream,
                    req.close_on_reply,
                )
                .await);
        };
        req.destination = destination;
        // gRPC needs HTTP/2 upstream: to an original destination that the cluster speaks
        // HTTP/1.1 to, it is answered UNAVAILABLE at once rather than sent to a server that is
        // most likely gRPC's and cannot understand it.
        if req.grpc && destination.is_some() && !req.http2 {
            tracing::debug!(cluster = %cluster_cfg.name, "gRPC to an original_dst cluster that speaks HTTP/1.1: not forwarded");
            return Err(self
                .local_reply(
                    true,
                    req.server,
                    down,
                    out,
                    503,
                    ResponseFlag::NoHealthyUpstream,
                    req.close_on_reply,
                )
                .await);
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
                    timeout: req.route_timeout,
                    connect_timeout: cluster_cfg.connect_timeout,
                    retry: req.action.retry_policy.as_ref().map(RetryPolicyView::from),
                    idempotent: head.method().is_idempotent(),
                    replayable,
                    hash,
                    request_complete: replayable,
                },
            ),
        );
        if let Some(Output::Respond { status, flag }) =
            self.stream_input_at(ci, &mut stream, Input::Admit, admitted_at)
        {
            let mut o = self
                .local_reply(
                    req.grpc,
                    req.server,
                    down,
                    out,
                    status,
                    flag,
                    req.close_on_reply,
                )
                .await;
            o.bytes_received = req.bytes_received.get();
            return Err(o);
        }
        if let Some(c) = self.stats().cluster(ci) {
            bump(&c.upstream_rq_total, 1);
        }
        self.upstreams.shared_health().note_traffic(ci);
        self.upstreams.refresh_availability_at(ci, admitted_at);
        Ok((stream, admitted_at))
    }

    /// Runs one try on its connection to its end: sends the request (a streamed body goes on
    /// alongside the response path, full duplex), reads the response head, lets the core
    /// decide on it ([`Engine::decide_retry`]) and, when it is forwarded, relays the answer
    /// ([`Engine::relay_response`]) and pools the connection when it can carry another
    /// request.
    ///
    /// Both directions share each side's connection through `Shared` handles (each poll
    /// borrows it for its own duration; one task, so never two at once). An upgrade request's
    /// body still goes first (its 101 turns the connection into a tunnel).
    #[allow(clippy::too_many_arguments)]
    async fn run_try<D: Respond>(
        &self,
        req: &mut Forwarding<'_>,
        stream: &mut StreamGuard,
        conn: Connected<MaybeTls<N::Stream>>,
        body: &mut RequestBody,
        down: &mut D,
        scratch: &mut Scratch,
        rbuf: &mut ReadBuffer,
        ubuf: &mut ReadBuffer,
        rhead: &mut Head,
        out: &mut Vec<u8>,
    ) -> TryEnd {
        let (ci, head, action) = (req.ci, req.head, req.action);
        let Connected {
            mut up,
            host,
            picked,
            try_start,
            reused,
            may_be_stale,
        } = conn;
        if req.body_kept && req.body_len.is_none() {
            // A retry of a body an earlier try streamed and kept whole: it goes out with
            // the head, as a held body does (from here on `out` is head and body; the copy
            // starts with what was held after the head).
            out.truncate(req.head_out);
            out.extend_from_slice(&scratch.replay);
            req.body_len = Some(scratch.replay.len());
        }
        let duplex = req.body_len.is_none() && !head.upgrade();
        // The per-try fields of the head: the time left of a gRPC request's timeout and the
        // attempt count.
        rewrite_try_fields(out, scratch, req.route_timeout, &stream.stream);
        // The parts of `scratch` the response path uses, borrowed apart from the replay copy
        // (which a streamed body's upload holds).
        let Scratch {
            replay,
            awaiting,
            grpc_status,
            grpc_trailers,
            rendered_response,
            ..
        } = scratch;
        let (outcome, pooled_at) = {
            let up_cell = RefCell::new(&mut up);
            let down_cell = RefCell::new(&mut *down);
            // The request buffer, lent whole to the upload of a streamed body once the head
            // went out (the upload reads the client into it); before that, and on a path
            // with no upload (an upgrade's tunnel), used here.
            let mut rbuf_slot = Some(&mut *rbuf);
            let mut no_rbuf = ReadBuffer::new();
            let mut upw = Shared(&up_cell);
            let mut downw = Shared(&down_cell);
            // When answer bytes last went to the client, for the upload's idle timer (read
            // from the clock only for a duplex upload: it is the only reader).
            let answered = duplex.then(|| Cell::new(TokioInstant::now()));
            let answered = answered.as_ref();
            // Whether the upload still writes upstream, and whether its copy is whole.
            let detach = Detach::default();
            // The rest of a streamed body, once the head went out; `None` when there is
            // none left to send (held, sent, or given up).
            let mut upload = std::pin::pin!(None);
            let mut t = TryState {
                host,
                picked,
                try_start,
                request_complete: !duplex,
                written: false,
                too_many_interim: false,
                upload_fault: None,
            };
            arm(&mut req.timer, stream.poll_timeout());
            ubuf.clear();
            let sent = {
                let rb = rbuf_slot.as_deref_mut().unwrap_or(&mut no_rbuf);
                tokio::select! {
                    biased;
                    r = send_request(
                        &mut upw, &mut downw, out, rb, req.head_len,
                        &mut *body, req.body_len.is_none() && !duplex, req.stream_idle,
                        &mut t.written, req.bytes_received, &mut t.upload_fault,
                    ) => Some(r),
                    () = req.timer.as_mut() => None,
                }
            };
            // One clock read for the inputs given as the request went out.
            let sent_at = now();
            if t.written {
                self.stream_input_at(ci, stream, Input::RequestWritten, sent_at);
            }
            // The response head (the route timeout starts once the whole request is in).
            let result = match sent {
                Some(Ok(())) => {
                    if duplex && let Some(rb) = rbuf_slot.take() {
                        let (up_w, down_r) = (&up_cell, &down_cell);
                        let (head_len, framing, idle) =
                            (req.head_len, req.framing, req.stream_idle);
                        let body = &mut *body;
                        let received = req.bytes_received;
                        let detach = &detach;
                        // A body that may fit the replay buffer is copied as it goes.
                        let replay = match framing {
                            BodyFraming::ContentLength(n) if n as usize > REPLAY_LIMIT => None,
                            _ => Some(&mut *replay),
                        };
                        // Boxed: only a streamed body pays for the upload's state; the
                        // request path's future (every request's) holds a pointer.
                        upload.set(Some(Box::pin(async move {
                            stream_request_body(
                                &mut Shared(up_w),
                                &mut Shared(down_r),
                                rb,
                                head_len,
                                body,
                                idle,
                                answered,
                                received,
                                replay,
                                detach,
                            )
                            .await
                        })));
                    } else {
                        self.stream_input_at(ci, stream, Input::RequestComplete, sent_at);
                    }
                    let read = read_response_head(
                        &mut upw,
                        ubuf,
                        rhead,
                        head.method(),
                        head.upgrade()
                            .then_some((req.upgrade_types, &action.upgrade_configs[..])),
                        &mut t.too_many_interim,
                    );
                    match self
                        .alongside(
                            ci,
                            stream,
                            req.timer.as_mut(),
                            read,
                            upload.as_mut(),
                            &mut t.request_complete,
                            &mut req.body_kept,
                        )
                        .await
                    {
                        Alongside::Done(r) => Some(r),
                        Alongside::Timeout => None,
                        Alongside::UploadFailed(fault) => {
                            t.upload_fault = Some(fault);
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
                    request_written: request_written || t.written,
                    reused: may_be_stale
                        || (reused
                            && matches!(&**up_cell.borrow(), Upstream::Http2(h) if h.connection_lost())),
                })),
                r => r,
            };
            let decided = self
                .decide_retry(
                    req,
                    stream,
                    &mut t,
                    result,
                    upload.as_mut(),
                    &detach,
                    awaiting,
                    grpc_status,
                    &mut downw,
                    out,
                    ubuf,
                    rhead,
                )
                .await;
            let status = match decided {
                Decision::Forward(status) => status,
                Decision::Retry(next) => return TryEnd::Retry(next),
                Decision::Answered(outcome) => return TryEnd::Done(outcome),
            };
            self.relay_response(
                req,
                stream,
                &mut t,
                status,
                &up_cell,
                &down_cell,
                rbuf_slot.unwrap_or(&mut no_rbuf),
                upload.as_mut(),
                answered,
                awaiting,
                grpc_status,
                grpc_trailers,
                rendered_response,
                ubuf,
                rhead,
                out,
            )
            .await
        };
        // A connection to a host whose slot has another host by now (a DNS answer moved it
        // while this request was in flight) is closed, never pooled under the slot: the
        // pool holds only connections to the slots' current hosts (an answer that moves a
        // slot empties its idle list), so a checkout needs no check of its own.
        let current =
            req.destination.is_some() || self.upstreams.cluster(ci).borrow().is_current(picked);
        if let Some(completed_at) = pooled_at
            && current
            && let Upstream::Http1(up) = up
        {
            match req.destination {
                None => self
                    .upstreams
                    .pool()
                    .put(ci, host.index(), up, completed_at),
                Some(d) => self.upstreams.pool().put_to(ci, d, up, completed_at),
            }
        }
        TryEnd::Done(outcome)
    }

    /// Decides on a try whose request went out: its failure or its response head goes to the
    /// core, which says whether it is retried (`Retry`, with the stream's next output) or its
    /// answer forwarded (`Forward`, the status). A client whose body failed meanwhile is
    /// answered here (`Answered`). A try that failed, or answered with a status the core would
    /// retry, while the body is still arriving and kept whole so far, first reads the rest of
    /// it into the copy (nothing more goes upstream, within [`DETACHED_BODY_WAIT`]) so that the
    /// core decides with the body replayable if it ended within [`REPLAY_LIMIT`]. Not for
    /// gRPC: its client may wait for answers before it sends more.
    #[allow(clippy::too_many_arguments)]
    async fn decide_retry<U, DW>(
        &self,
        req: &mut Forwarding<'_>,
        stream: &mut StreamGuard,
        t: &mut TryState,
        result: Option<Result<(), TryFailure>>,
        mut upload: Pin<&mut Option<U>>,
        detach: &Detach,
        awaiting: &Cell<bool>,
        grpc_status: &mut Option<u8>,
        downw: &mut DW,
        out: &mut Vec<u8>,
        ubuf: &ReadBuffer,
        rhead: &Head,
    ) -> Decision
    where
        U: Future<Output = io::Result<Uploaded>>,
        DW: Respond,
    {
        let ci = req.ci;
        let host = t.host;
        // A try that failed while the body is still arriving, kept whole so far, when the core
        // would retry it were the body replayable: the rest of the body is read into the copy
        // (nothing more goes upstream), each read within `stream_idle_timeout`, and if it ends
        // within REPLAY_LIMIT the body is replayable (`BodyBuffered`) before the core decides.
        if let Some(Err(failure)) = result
            && t.upload_fault.is_none()
            && upload.is_some()
            && !req.grpc
            && !detach.lost.get()
            && stream.stream.retry_wants_body(now(), failure)
        {
            // The client's own failure is answered as such, below.
            t.upload_fault = match self
                .read_rest_detached(upload.as_mut(), detach, req.stream_idle)
                .await
            {
                Ok(true) => {
                    req.body_kept = true;
                    self.stream_input(ci, stream, Input::BodyBuffered);
                    self.stream_input(ci, stream, Input::RequestComplete);
                    None
                }
                Ok(false) => None,
                Err(fault) => Some(fault),
            };
        }
        if let Some(fault) = t.upload_fault {
            return Decision::Answered(
                self.answer_upload_fault(
                    ci,
                    stream,
                    host,
                    fault,
                    req.grpc,
                    req.server,
                    awaiting,
                    downw,
                    out,
                    req.upstream_addr,
                    req.bytes_received.get(),
                    None,
                )
                .await,
            );
        }
        let Some(result) = result else {
            // A per-try or the route timeout (the stream's event says which).
            let next = self.stream_input(ci, stream, Input::Timeout);
            self.publish_host_active(ci, host);
            return Decision::Retry(next);
        };
        let cstats = self.stats().cluster(ci);
        let status = match result {
            Ok(()) => rhead.status(),
            Err(failure) => {
                if t.too_many_interim
                    && let Some(c) = cstats
                {
                    bump(&c.upstream_rq_too_many_interim, 1);
                }
                let next = self.stream_input(ci, stream, Input::TryFailed(failure));
                self.publish_host_active(ci, host);
                return Decision::Retry(next);
            }
        };
        self.upstreams
            .report_upstream_result(ci, t.picked, UpstreamResult::Status(status));
        if let Some(c) = cstats {
            let class = (status / 100).clamp(1, 5) as usize - 1;
            bump(&c.upstream_rq_by_class[class], 1);
        }
        // A gRPC answer's head carries its status when it is trailers-only.
        let head_grpc_status = if req.grpc {
            rhead
                .header(ubuf.bytes(), "grpc-status")
                .and_then(|v| std::str::from_utf8(v).ok()?.trim().parse().ok())
        } else {
            None
        };
        *grpc_status = head_grpc_status;
        // An answer that came while the body is still arriving (kept whole so far), which the
        // core would retry were the body replayable (a 503 under `retry_on: 5xx`): as for a
        // failed try, the rest of the body is read into the copy before the core decides.
        if upload.is_some()
            && !req.grpc
            && !detach.lost.get()
            && stream
                .stream
                .response_wants_body(now(), status, head_grpc_status)
        {
            match self
                .read_rest_detached(upload.as_mut(), detach, req.stream_idle)
                .await
            {
                Ok(true) => {
                    req.body_kept = true;
                    self.stream_input(ci, stream, Input::BodyBuffered);
                }
                // Not replayable after all: the answer is forwarded, and nothing more
                // of the request goes (the route timeout starts; neither connection
                // is reused).
                Ok(false) => {}
                Err(fault) => {
                    return Decision::Answered(
                        self.answer_upload_fault(
                            ci,
                            stream,
                            host,
                            fault,
                            req.grpc,
                            req.server,
                            awaiting,
                            downw,
                            out,
                            req.upstream_addr,
                            req.bytes_received.get(),
                            None,
                        )
                        .await,
                    );
                }
            }
            self.stream_input(ci, stream, Input::RequestComplete);
        }
        let head_input = Input::ResponseHead {
            status,
            grpc_status: head_grpc_status,
        };
        match self.stream_input(ci, stream, head_input) {
            Some(Output::ForwardResponse) => Decision::Forward(status),
            other => {
                debug_assert_eq!(other, Some(Output::DiscardResponse));
                self.publish_host_active(ci, host);
                // The next try waits for the stream's timer (the retry's back-off).
                Decision::Retry(None)
            }
        }
    }

    /// Relays a response the core forwards: its head with the route's and the listener's
    /// edits (staged on the client's responder, `respond`), then its body by its framing (while a streamed request body still goes up
    /// alongside), or, after a `101`, a tunnel. The outcome, and when the response completed if
    /// the upstream connection can carry another request (its idle time in the pool starts
    /// then: one clock read for both). An upstream that fails before the first body byte
    /// reached the client is still answered by the proxy (502 or 504).
    #[allow(clippy::too_many_arguments)]
    async fn relay_response<U, UP, DOWN>(
        &self,
        req: &mut Forwarding<'_>,
        stream: &mut StreamGuard,
        t: &mut TryState,
        status: u16,
        up_cell: &RefCell<&mut Upstream<UP>>,
        down_cell: &RefCell<&mut DOWN>,
        rbuf: &mut ReadBuffer,
        mut upload: Pin<&mut Option<U>>,
        answered: Option<&Cell<TokioInstant>>,
        awaiting: &Cell<bool>,
        grpc_status: &mut Option<u8>,
        grpc_trailers: &mut Vec<u8>,
        rendered_response: &Rendered,
        ubuf: &mut ReadBuffer,
        rhead: &Head,
        out: &mut Vec<u8>,
    ) -> (Outcome, Option<sluice_core::Instant>)
    where
        U: Future<Output = io::Result<Uploaded>>,
        UP: AsyncRead + AsyncWrite + Unpin,
        DOWN: Respond,
    {
        let ci = req.ci;
        let host = t.host;
        let head = req.head;
        let mut upw = Shared(up_cell);
        let mut downw = Shared(down_cell);
        // A response that starts before the request body ended closes the client's
        // connection after it (what the client still sends is not read as a request),
        // as Envoy does for HTTP/1.1.
        let keep_down = t.request_complete
            && keeps_alive(
                head.keep_alive(),
                matches!(rhead.framing(), BodyFraming::CloseDelimited),
                self.lifecycle.is_stopping(),
            );
        let upgrade = status == 101 && head.upgrade();
        if let Err(e) = stage_downstream_head(
            &mut downw,
            out,
            req.action,
            req.server,
            rendered_response,
            ubuf,
            rhead,
            keep_down && !upgrade && head.version() == Version::Http10,
            !keep_down && !upgrade,
        ) {
            // The head cannot go to the client (its stream is gone): the body copy fails.
            tracing::debug!(error = %e, "response head not staged");
        }
        let mut bytes_sent = out.len() as u64;
        ubuf.consume(rhead.head_len());
        if upgrade {
            awaiting.set(false);
            if write_flushed(&mut downw, out).await.is_err() {
                self.stream_input(ci, stream, Input::Abort);
                self.publish_host_active(ci, host);
                let outcome = Outcome {
                    status,
                    flag: None,
                    upstream: req.upstream_addr,
                    bytes_received: req.bytes_received.get(),
                    bytes_sent: 0,
                    reusable: false,
                };
                return (outcome, None);
            }
            // The upstream try is over; the tunnel still counts as a request.
            self.stream_input(ci, stream, Input::Upgraded);
            self.publish_host_active(ci, host);
            bytes_sent += tunnel(&mut downw, &mut upw, rbuf, req.head_len, ubuf).await;
            self.stream_input(ci, stream, Input::ResponseComplete);
            let outcome = Outcome {
                status,
                flag: None,
                upstream: req.upstream_addr,
                bytes_received: req.bytes_received.get(),
                bytes_sent,
                reusable: false,
            };
            return (outcome, None);
        }
        // The head goes out with the first body bytes: one write for a small response.
        // A gRPC answer's chunked trailer section is kept as it passes, for its
        // `grpc-status` (an HTTP/2 upstream's trailers are read by its adapter).
        grpc_trailers.clear();
        let keep_trailers = (req.grpc && !req.http2).then_some(&mut *grpc_trailers);
        let copy = copy_body(
            &mut upw,
            &mut downw,
            ubuf,
            rhead.framing(),
            out,
            awaiting,
            answered,
            keep_trailers,
        );
        let body = match self
            .alongside(
                ci,
                stream,
                req.timer.as_mut(),
                copy,
                upload.as_mut(),
                &mut t.request_complete,
                &mut req.body_kept,
            )
            .await
        {
            Alongside::Done(r) => Some(r),
            Alongside::Timeout => None,
            Alongside::UploadFailed(fault) => {
                // The client's body failed while the answer was under way: the call is
                // over (the upstream's stream is reset or its connection closed). The
                // head still staged means nothing of the answer reached the client.
                let answered = (!downw.head_pending(out)).then_some((status, bytes_sent));
                let outcome = self
                    .answer_upload_fault(
                        ci,
                        stream,
                        host,
                        fault,
                        req.grpc,
                        req.server,
                        awaiting,
                        &mut downw,
                        out,
                        req.upstream_addr,
                        req.bytes_received.get(),
                        answered,
                    )
                    .await;
                return (outcome, None);
            }
        };
        // An answer that ended before the request body: the rest of the body is not
        // sent (an HTTP/2 upstream's stream is reset when dropped; an HTTP/1.1
        // connection is closed, never pooled, below).
        upload.set(None);
        let completed_at = now();
        self.stream_input_at(ci, stream, Input::ResponseComplete, completed_at);
        self.publish_host_active(ci, host);
        // A gRPC status in the upstream's trailers (the usual place): HTTP/2 trailers,
        // or an HTTP/1.1 answer's chunked trailer section.
        if req.grpc {
            let code = match &**up_cell.borrow() {
                Upstream::Http2(h2) => h2.grpc_status(),
                Upstream::Http1(_) => grpc::status_in_trailers(grpc_trailers),
            };
            if code.is_some() {
                *grpc_status = code;
            }
        }
        let cstats = self.stats().cluster(ci);
        let try_time = completed_at.saturating_duration_since(t.try_start);
        self.stats().upstream_rq_time.record(try_time);
        if let Some(c) = cstats {
            c.upstream_rq_time.record(try_time);
        }
        let (complete, sent) = match body {
            Some(Ok(n)) => (true, n),
            Some(Err(_)) | None => (false, 0),
        };
        if !complete && downw.head_pending(out) {
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
            self.upstreams.report_upstream_result(ci, t.picked, result);
            if body.is_none() {
                bump(&self.stats().http_upstream_timeouts, 1);
                if let Some(c) = cstats {
                    bump(&c.upstream_rq_timeout, 1);
                }
            }
            awaiting.set(false);
            let mut o = self
                .local_reply(
                    req.grpc,
                    req.server,
                    &mut downw,
                    out,
                    status_for(flag),
                    flag,
                    true,
                )
                .await;
            o.upstream = req.upstream_addr;
            o.bytes_received = req.bytes_received.get();
            return (o, None);
        }
        bytes_sent += sent;
        // An HTTP/1.1 connection is reused only when the request went out whole: one
        // that answered early while the body was still being sent would read the rest
        // of it as a next request.
        let reuse_up = complete
            && t.request_complete
            && rhead.keep_alive()
            && !matches!(rhead.framing(), BodyFraming::CloseDelimited)
            && ubuf.is_empty();
        let outcome = Outcome {
            status,
            flag: None,
            upstream: req.upstream_addr,
            bytes_received: req.bytes_received.get(),
            bytes_sent,
            reusable: complete && keep_down && t.request_complete,
        };
        (outcome, reuse_up.then_some(completed_at))
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
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn alongside<T, W, U>(
        &self,
        ci: usize,
        stream: &mut StreamGuard,
        mut timer: Pin<&mut Sleep>,
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
            arm(&mut timer, stream.poll_timeout());
            let sending = upload.is_some();
            let sent = tokio::select! {
                biased;
                r = &mut work => return Alongside::Done(r),
                () = timer.as_mut() => return Alongside::Timeout,
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
    pub(super) async fn read_rest_detached<U>(
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

    /// Feeds one input to a request's stream and carries out its outputs but the one action
    /// it returns (connect, open a connection, forward or discard a response head, answer):
    /// events become stats and outlier detection results — connect, per-try and route
    /// timeouts are told apart by the core, never guessed from which timer fired — and a new
    /// connection's breaker unit is kept for the connection. Timers: the caller sleeps until
    /// `stream.poll_timeout()`.
    pub(super) fn stream_input(
        &self,
        ci: usize,
        stream: &mut StreamGuard,
        input: Input,
    ) -> Option<Output> {
        self.stream_input_at(ci, stream, input, now())
    }

    /// [`Engine::stream_input`] at `now`, read by the caller for several inputs given in one
    /// synchronous step (a clock read costs as much as a small input).
    pub(super) fn stream_input_at(
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
    pub(super) fn observe_exchange_event(
        &self,
        ci: usize,
        event: ExchangeEvent,
        picked: Option<HostRef>,
    ) {
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
}
