//! The Bolt stream layer of one worker: many downstream connections multiplexed over shared
//! upstream connections, with request ids rewritten per upstream connection, sans-IO.
//!
//! The proxy never holds frame bytes. The driver reads into its own buffers, decodes a frame
//! with [`super::decode`], hands the [`Frame`] to [`BoltProxy::handle_downstream_frame`] (or
//! [`BoltProxy::handle_upstream_frame`]) and is told, by the returned verdict, what to do with
//! *that frame's bytes*: patch its id with [`super::set_request_id`] and append it to another
//! connection's write buffer, answer it, or drop it. Everything that is not about the frame just
//! handed in — connections to open, replies to other requests (timeouts, upstream losses) —
//! comes out of [`BoltProxy::poll_action`]. Timers: [`BoltProxy::poll_timeout`] /
//! [`BoltProxy::handle_timeout`].
//!
//! ## How a driver uses it
//!
//! ```text
//! proxy = BoltProxy::from_config(&config)?                 one per worker and config snapshot
//! accept     → d = proxy.open_downstream(listener, peer)
//! read down  → decode(&buf, proxy.max_frame_size(listener)):
//!     Ok(Some(f)) → match proxy.handle_downstream_frame(now, d, &f, clusters, rng):
//!         Forward { up, request_id } → set_request_id(frame bytes, request_id); append them to
//!                                      up's write buffer (created on first use: `up` may be
//!                                      a connection whose Connect is still in poll_action)
//!         AnswerHeartbeat           → encode_heartbeat_reply(d's write buffer, &f)
//!         Reply(r)                  → r.encode(d's write buffer)
//!         Drop                      → nothing
//!     Err(_)      → if let Some(r) = proxy.handle_downstream_codec_error(now, d, &buf, clusters)
//!                   { r.encode(d's write buffer) }; flush, close d (the proxy forgot d)
//! down closed → proxy.handle_downstream_closed(d)
//! read up    → decode(&buf, limit): Ok(Some(f)) → match proxy.handle_upstream_frame(now, up, &f, clusters):
//!         Forward { down, request_id } → set_request_id(frame bytes, request_id); append to down
//!         AnswerHeartbeat              → encode_heartbeat_reply(up's write buffer, &f)
//!         Drop                         → nothing
//!     Err(_) → close up, then as "up closed"
//! connected  → proxy.handle_upstream_connected(up); flush up's write buffer
//! up closed / connect failed or timed out (the driver times connects with the cluster's
//!              connect_timeout) → proxy.handle_upstream_closed(now, up, clusters); drop up's buffer
//! after every input: while let Some(a) = proxy.poll_action() {
//!         Connect { up, cluster, host, address, transport } → open it
//!         Reply(r)                              → r.encode(r.down's write buffer) }
//! timer      → sleep until proxy.poll_timeout(); proxy.handle_timeout(now, clusters)
//! ```
//!
//! ## States
//!
//! ```text
//! downstream:  open ──codec error / closed──▶ forgotten (its streams become orphans)
//! upstream:    Connecting ──handle_upstream_connected──▶ Connected
//!                   └────────────── handle_upstream_closed ─────────────┴──▶ forgotten
//!                                       idle past its timeout (original_dst) ──▶ Action::Close
//!              (one per (cluster, host, destination); opened on demand when a request picks
//!               a host that has none; holds one `max_connections` breaker unit while it exists)
//! stream:      registered (request forwarded; holds a `max_requests` unit and a host `begin`)
//!                 ├─ upstream response   → Forward to its downstream with its original id
//!                 ├─ deadline            → Reply status 7
//!                 └─ upstream lost       → Reply status 16
//!              each ends the stream: the unit is released and the host `end`ed, at once.
//!              An orphan (its downstream closed first) ends the same way, with nothing sent.
//! ```
//!
//! Per request (type 1, `cmd_code` ≠ 0): route ([`BoltRouter`]) → no route: status 6; pick a
//! host of the route's cluster with the cluster's policy ([`ClusterState::pick_hashed`], the
//! hash from the cluster's `hash_policy` over the Bolt header map and the downstream's IP) →
//! none available: status 6; a `max_requests` unit → overflow: status 4; the host's upstream
//! connection, opened when missing (a `max_connections` unit → overflow: status 4); a fresh
//! upstream request id. The deadline is the shorter of the frame's timeout field (when > 0) and
//! the route's `timeout` (when set); without either the stream waits for its response or the
//! loss of its upstream connection.
//!
//! ## `original_dst` clusters
//!
//! A cluster of type `original_dst` has one placeholder host; a request routed to it goes to
//! the *original destination* of its downstream connection (given to
//! [`BoltProxy::open_captured_downstream`] by the driver, read from the kernel for a connection
//! a capture listener took). Multiplexing stays per destination: one upstream connection per
//! (cluster, destination), ids remapped as for any host. A request on a connection that has no
//! original destination (it dialled the listener itself) is answered status 6 (no processor:
//! there is nowhere to send it, and the listener's own address would loop), counted in
//! [`BoltStats::no_original_dst`]. Destinations are bounded and cleaned up like the HTTP/1.1
//! pool's: a destination's connection with no request in flight for the cluster's
//! `upstream_idle_timeout` is closed ([`Action::Close`]), and at most
//! [`MAX_DESTINATIONS`] destination connections exist per proxy (one worker) — a new
//! destination past it closes the one idle the longest, or, when every one is busy, is
//! answered status 4 (overflow).
//!
//! Heartbeats (`cmd_code` 0, type 1) are answered by the proxy, from either side. A oneway
//! request (type 2) is routed and forwarded with a fresh upstream id (so that it cannot collide
//! with a request in flight) and registers nothing; when it cannot be forwarded it is dropped
//! (it expects no answer). A frame of the wrong direction (a response from a downstream, a
//! request other than a heartbeat from an upstream, a oneway heartbeat) is dropped.
//!
//! A codec error on a downstream ([`BoltProxy::handle_downstream_codec_error`], including a
//! frame declaring more than `max_frame_size`, which the decoder reports from its fixed header)
//! is answered with status 9 when the request id can be read from the bytes (protocol byte known
//! and the id's bytes in), then the connection must be closed; it harms no other connection.
//!
//! Upstream ids: each upstream connection has a wrapping `u32` counter; a new id skips any id
//! still in flight on that connection. A stream that timed out is forgotten at once, so its
//! late response (if any) finds no stream and is dropped, as long as it arrives before the
//! counter wraps around to the same id (2³² requests later on that connection).
//!
//! ## Invariants (checked in debug builds after every input; [`BoltProxy::check_invariants`])
//!
//! - every request accepted from a downstream gets exactly one answer (its upstream response,
//!   or one proxy reply) unless that downstream closed first;
//! - an answer goes only to the downstream that sent the request, with its original id;
//! - upstream ids in flight are unique per upstream connection (they are map keys);
//! - there is at most one upstream connection per (cluster, host, destination), and `by_host`
//!   and the connections agree; every destination connection (and none other) has one idle
//!   timer; there are at most [`MAX_DESTINATIONS`] of them;
//! - every stream with a deadline has exactly one live timer; dead timers (of streams that
//!   ended) are at most as many as live ones plus a constant, and never the next one due;
//! - a downstream's `in_flight` is the number of streams that answer to it;
//! - host `active` counts and breaker units held by the proxy are exactly its streams (one
//!   `begin` and one `max_requests` unit each) and its connections (one `max_connections` unit
//!   each), so they return to zero when everything is done.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

mod deadlines;
use deadlines::Deadlines;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use crate::time::Instant;

use super::router::BoltRouter;
use super::{CMD_HEARTBEAT, Frame, Kind, PROTOCOL_V1, PROTOCOL_V2, ResponseStatus, Version};
use super::{encode_response, request_id_offset};
use crate::cluster::{ClusterState, HostId, HostRef};
use crate::config::{ClusterKind, Config, HashPolicy, ListenerFilter};
use crate::health::{Permit, Resource};
use crate::lb::request_hash;
use crate::pattern::RegexError;
use crate::rng::Rng;

/// A downstream connection, as numbered by [`BoltProxy::open_downstream`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DownstreamId(pub u64);

/// An upstream connection, as numbered by the proxy in [`Action::Connect`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UpstreamId(pub u64);

/// A response the proxy makes itself, to be written to `down`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProxyReply {
    /// Where it goes.
    pub down: DownstreamId,
    /// The request's original id.
    pub request_id: u32,
    /// The request's version.
    pub version: Version,
    /// The request's codec.
    pub codec: u8,
    /// Why.
    pub status: ResponseStatus,
    /// The upstream stream it answers in place of (its connection and the id the request
    /// carried there): a timeout or a lost connection. `None` for an answer given when the
    /// request arrived.
    pub stream: Option<(UpstreamId, u32)>,
}

impl ProxyReply {
    /// Appends the response frame (`cmd_code` 2, empty class, header and content) to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        encode_response(
            out,
            self.version,
            self.request_id,
            self.codec,
            self.status,
            b"",
            &[],
            b"",
        )
        .expect("an empty response always fits");
    }
}

/// What to do with the bytes of a frame read from a downstream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DownstreamVerdict {
    /// `set_request_id(frame bytes, request_id)`, then append them to `up`'s write buffer.
    Forward {
        /// The upstream connection (maybe still connecting: see [`Action::Connect`]).
        up: UpstreamId,
        /// The id it carries upstream.
        request_id: u32,
    },
    /// Append `encode_heartbeat_reply(&frame)` to this downstream's write buffer.
    AnswerHeartbeat,
    /// Append this reply to this downstream's write buffer.
    Reply(ProxyReply),
    /// Nothing to write, and why.
    Drop(Dropped),
}

/// Why a frame from a downstream was dropped with nothing written back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dropped {
    /// Not a request to forward: a response or a oneway heartbeat from a client, or a frame
    /// of a connection the proxy does not know.
    NotARequest,
    /// A oneway request no route matched.
    NoRoute,
    /// A oneway request with nowhere to go: no available host, or (an `original_dst` cluster)
    /// no original destination.
    NoHost,
    /// A oneway request over a circuit breaker's limit (connections, or destinations).
    Overflow,
}

/// What to do with the bytes of a frame read from an upstream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpstreamVerdict {
    /// `set_request_id(frame bytes, request_id)` (the original id), then append them to
    /// `down`'s write buffer.
    Forward {
        /// The downstream that sent the request.
        down: DownstreamId,
        /// Its original request id.
        request_id: u32,
    },
    /// Append `encode_heartbeat_reply(&frame)` to this upstream's write buffer.
    AnswerHeartbeat,
    /// Nothing to write (a late or orphaned response, or a frame of the wrong direction).
    Drop,
}

/// Upstream connections to original destinations (`original_dst` clusters) one proxy (one
/// worker) keeps at most: the HTTP/1.1 pool's bound on destinations.
pub const MAX_DESTINATIONS: usize = 1024;

/// An output that is not about the frame just handed in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Open a connection to `address` (host `host` of cluster `cluster`); then call
    /// [`BoltProxy::handle_upstream_connected`] or [`BoltProxy::handle_upstream_closed`].
    Connect {
        /// Its id.
        up: UpstreamId,
        /// Index in `Config::clusters`.
        cluster: usize,
        /// The host, with its slot's epoch (a DNS cluster's slot may have another host by the
        /// time the connection reports: its results are for this one).
        host: HostRef,
        /// The host's address.
        address: SocketAddr,
        /// How the host is reached (its slot's transport: which of the cluster's
        /// `transport_socket_matches`, or its own `tls`), read with its address.
        transport: crate::host::Transport,
    },
    /// Append this reply to `reply.down`'s write buffer.
    Reply(ProxyReply),
    /// Close upstream connection `up` (a destination connection idle past its timeout, or
    /// evicted for a new destination): it has no request in flight, and the proxy already
    /// forgot it, so its closing answers nobody.
    Close {
        /// The connection.
        up: UpstreamId,
    },
}

/// Counters of one proxy.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BoltStats {
    /// Requests forwarded upstream (and registered).
    pub requests: u64,
    /// Oneway requests forwarded.
    pub oneway: u64,
    /// Oneway requests dropped (no route, no host, overflow).
    pub oneway_dropped: u64,
    /// Heartbeats answered (from either side).
    pub heartbeats: u64,
    /// Upstream responses forwarded downstream.
    pub responses: u64,
    /// Upstream responses dropped (late, orphaned, unknown id).
    pub responses_dropped: u64,
    /// Frames of the wrong direction dropped.
    pub unexpected_frames: u64,
    /// Status 6 replies (no route).
    pub no_route: u64,
    /// Status 6 replies (no available host).
    pub no_host: u64,
    /// Status 6 replies: routed to an `original_dst` cluster on a connection with no original
    /// destination.
    pub no_original_dst: u64,
    /// Destination connections closed idle (or evicted for a new destination).
    pub destinations_closed: u64,
    /// Connections to a host whose slot has another host now (a DNS answer moved it), closed
    /// once idle ([`BoltProxy::close_stale_upstreams`]).
    pub stale_closed: u64,
    /// Status 4 replies.
    pub overflow: u64,
    /// Status 7 replies.
    pub timeouts: u64,
    /// Downstream codec errors (status 9 replies when the id was readable).
    pub codec_errors: u64,
    /// Status 16 replies.
    pub upstream_lost: u64,
    /// Upstream connections opened.
    pub upstream_connects: u64,
}

#[derive(Debug)]
struct Listener {
    router: BoltRouter,
    max_frame_size: usize,
}

#[derive(Debug)]
struct Downstream {
    listener: usize,
    peer: Option<IpAddr>,
    /// Where the connection was going, when a capture listener took it.
    original_dst: Option<SocketAddr>,
    in_flight: usize,
}

/// What an upstream connection is for: a host of a cluster — the host, not the slot: with the
/// slot's epoch, so that when a DNS answer gives the slot to another address, that host's
/// requests open a connection of their own rather than go to the old address — and for an
/// `original_dst` cluster's placeholder host, the destination.
type UpstreamKey = (usize, HostRef, Option<SocketAddr>);

#[derive(Debug)]
struct Upstream {
    cluster: usize,
    host: HostRef,
    /// `Some` for a connection to an original destination.
    destination: Option<SocketAddr>,
    /// A destination connection: when it last had a request forwarded or answered (its idle
    /// timer is lazily moved on from this).
    last_used: Instant,
    connected: bool,
    next_id: u32,
    /// Keyed by the upstream request id. A hash map (a fixed-seed hasher: iteration order is a
    /// function of the inputs alone, as the simulator needs) — a B-tree's insert and remove were
    /// a fifth of the Bolt path's instructions; where order shows (replies on upstream loss),
    /// ids are sorted.
    streams: StreamMap,
    permit: Permit,
}

/// Whether the deadline-heap entry `(at, up, id)` still has its stream.
fn timer_is_live(
    upstreams: &BTreeMap<UpstreamId, Upstream>,
    at: Instant,
    up: UpstreamId,
    id: u32,
) -> bool {
    upstreams
        .get(&up)
        .and_then(|u| u.streams.get(&id))
        .is_some_and(|s| s.deadline == Some(at))
}

/// An upstream connection's streams by upstream request id.
// The lint is for `RandomState`: with a fixed seed the order is a function of the inputs.
#[allow(clippy::disallowed_types)]
type StreamMap = std::collections::HashMap<u32, Stream, foldhash::fast::FixedState>;

/// The open downstream connections by id.
#[allow(clippy::disallowed_types)]
type DownstreamMap =
    std::collections::HashMap<DownstreamId, Downstream, foldhash::fast::FixedState>;

/// A per-request collection emptied with more room than this gives it back.
const SHRINK_ABOVE: usize = 256;

/// Dead entries the deadline heap may hold beyond as many as it has live ones.
const TIMER_SLACK: usize = 64;

#[derive(Debug)]
struct Stream {
    /// `None` once the downstream closed (an orphan).
    down: Option<DownstreamId>,
    request_id: u32,
    version: Version,
    codec: u8,
    deadline: Option<Instant>,
    permit: Permit,
}

/// The Bolt stream layer of one worker. See the module doc.
#[derive(Debug)]
pub struct BoltProxy {
    listeners: Vec<Option<Listener>>,
    hash_policies: Vec<Vec<HashPolicy>>,
    /// Per cluster: its `upstream_idle_timeout` when it is of type `original_dst`.
    original_dst: Vec<Option<Duration>>,
    /// Looked up three times per request (arrival, registration, answer): a hash map. Never
    /// iterated where order would show.
    downstreams: DownstreamMap,
    upstreams: BTreeMap<UpstreamId, Upstream>,
    by_host: BTreeMap<UpstreamKey, UpstreamId>,
    /// Request deadlines, earliest first ([`Deadlines`]), with lazy removal: an answered
    /// stream's entry stays until it comes first (dropped then: `settle_timers`) or the queue is
    /// compacted (when it holds more than twice the live entries plus [`TIMER_SLACK`]), so an
    /// answer costs no search. An entry is *live* when its upstream has a stream with that id
    /// and that deadline. The first entry is always live after an input, so
    /// [`BoltProxy::poll_timeout`] never names a deadline nothing waits for.
    timers: Deadlines,
    /// Streams with a deadline (the live entries of `timers`).
    live_timers: usize,
    /// One per destination connection: not before then may it be closed idle.
    idle_timers: BTreeSet<(Instant, UpstreamId)>,
    actions: VecDeque<Action>,
    next_down: u64,
    next_up: u64,
    stats: BoltStats,
    /// Whether debug builds check the invariants after every input (on unless a test turned
    /// it off: [`BoltProxy::set_invariant_checks`]).
    invariant_checks: bool,
}

/// The version, request id and codec of a frame whose decoding failed, when its bytes carry
/// them (a known protocol byte and the id and codec bytes in).
#[must_use]
pub fn readable_request(buf: &[u8]) -> Option<(Version, u32, u8)> {
    let version = match *buf.first()? {
        PROTOCOL_V1 => Version::V1,
        PROTOCOL_V2 => Version::V2 {
            ver1: *buf.get(1)?,
            switch: *buf.get(11)?,
        },
        _ => return None,
    };
    let at = request_id_offset(version);
    let id = u32::from_be_bytes(buf.get(at..at + 4)?.try_into().ok()?);
    let codec = *buf.get(at + 4)?;
    Some((version, id, codec))
}

/// A `bolt` listener whose routes do not compile ([`BoltProxy::from_config`]; never for a
/// validated config).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("listener {listener}: bolt.{source}")]
pub struct ListenerRoutesError {
    /// The listener's name.
    pub listener: String,
    /// The pattern that does not compile, and where it is in the listener's `bolt` section.
    #[source]
    pub source: RegexError,
}

impl BoltProxy {
    /// A proxy for the `bolt` (and `protocol: auto`) listeners of `config`; listeners are
    /// indexed as in `config.listeners`. Fails only when a router does not compile (never for a
    /// validated config).
    pub fn from_config(config: &Config) -> Result<BoltProxy, ListenerRoutesError> {
        let listeners = config
            .listeners
            .iter()
            .map(|l| match &l.filter {
                ListenerFilter::Bolt(b) | ListenerFilter::Auto { bolt: b, .. } => {
                    Ok(Some(Listener {
                        router: BoltRouter::new(b).map_err(|source| ListenerRoutesError {
                            listener: l.name.clone(),
                            source,
                        })?,
                        max_frame_size: b.max_frame_size,
                    }))
                }
                _ => Ok(None),
            })
            .collect::<Result<Vec<_>, ListenerRoutesError>>()?;
        let hash_policies = config
            .clusters
            .iter()
            .map(|c| c.hash_policy.clone())
            .collect();
        let original_dst = config
            .clusters
            .iter()
            .map(|c| (c.kind == ClusterKind::OriginalDst).then_some(c.upstream_idle_timeout))
            .collect();
        Ok(BoltProxy {
            listeners,
            hash_policies,
            original_dst,
            downstreams: DownstreamMap::default(),
            upstreams: BTreeMap::new(),
            by_host: BTreeMap::new(),
            timers: Deadlines::default(),
            live_timers: 0,
            idle_timers: BTreeSet::new(),
            actions: VecDeque::new(),
            next_down: 0,
            next_up: 0,
            stats: BoltStats::default(),
            invariant_checks: true,
        })
    }

    /// The `max_frame_size` of a listener (the default for one that is not a Bolt listener).
    #[must_use]
    pub fn max_frame_size(&self, listener: usize) -> usize {
        self.listeners
            .get(listener)
            .and_then(Option::as_ref)
            .map_or(super::DEFAULT_MAX_FRAME_SIZE, |l| l.max_frame_size)
    }

    /// The router of a listener.
    #[must_use]
    pub fn router(&self, listener: usize) -> Option<&BoltRouter> {
        self.listeners
            .get(listener)
            .and_then(Option::as_ref)
            .map(|l| &l.router)
    }

    /// A downstream connection accepted on `listener` from `peer` (its IP feeds a `source_ip`
    /// hash policy).
    pub fn open_downstream(&mut self, listener: usize, peer: Option<SocketAddr>) -> DownstreamId {
        self.open_captured_downstream(listener, peer, None)
    }

    /// A downstream connection, as [`BoltProxy::open_downstream`], that a capture listener
    /// took on its way to `original_dst` (`None`: not captured): its requests routed to an
    /// `original_dst` cluster go there.
    pub fn open_captured_downstream(
        &mut self,
        listener: usize,
        peer: Option<SocketAddr>,
        original_dst: Option<SocketAddr>,
    ) -> DownstreamId {
        let id = DownstreamId(self.next_down);
        self.next_down += 1;
        self.downstreams.insert(
            id,
            Downstream {
                listener,
                peer: peer.map(|p| p.ip()),
                original_dst,
                in_flight: 0,
            },
        );
        id
    }

    /// A frame decoded from downstream `down`. See [`DownstreamVerdict`].
    pub fn handle_downstream_frame(
        &mut self,
        now: Instant,
        down: DownstreamId,
        frame: &Frame<'_>,
        clusters: &mut [ClusterState],
        rng: &mut Rng,
    ) -> DownstreamVerdict {
        let verdict = self.downstream_frame(now, down, frame, clusters, rng);
        self.debug_check();
        verdict
    }

    fn downstream_frame(
        &mut self,
        now: Instant,
        down: DownstreamId,
        frame: &Frame<'_>,
        clusters: &mut [ClusterState],
        rng: &mut Rng,
    ) -> DownstreamVerdict {
        let Some(d) = self.downstreams.get(&down) else {
            return DownstreamVerdict::Drop(Dropped::NotARequest);
        };
        let oneway = match frame.kind {
            Kind::Response => {
                self.stats.unexpected_frames += 1;
                return DownstreamVerdict::Drop(Dropped::NotARequest);
            }
            Kind::Request if frame.cmd_code == CMD_HEARTBEAT => {
                self.stats.heartbeats += 1;
                return DownstreamVerdict::AnswerHeartbeat;
            }
            Kind::Oneway if frame.cmd_code == CMD_HEARTBEAT => {
                self.stats.unexpected_frames += 1;
                return DownstreamVerdict::Drop(Dropped::NotARequest);
            }
            Kind::Request => false,
            Kind::Oneway => true,
        };
        let (listener, peer, original_dst) = (d.listener, d.peer, d.original_dst);
        let reply = |status| {
            DownstreamVerdict::Reply(ProxyReply {
                down,
                request_id: frame.request_id,
                version: frame.version,
                codec: frame.codec,
                status,
                stream: None,
            })
        };
        let route = self
            .listeners
            .get(listener)
            .and_then(Option::as_ref)
            .and_then(|l| l.router.route(frame));
        let Some(route) = route else {
            if oneway {
                self.stats.oneway_dropped += 1;
                return DownstreamVerdict::Drop(Dropped::NoRoute);
            }
            self.stats.no_route += 1;
            return reply(ResponseStatus::NoProcessor);
        };
        let (cluster, route_timeout) = (route.cluster_index, route.timeout);
        let Some(state) = clusters.get_mut(cluster) else {
            if oneway {
                self.stats.oneway_dropped += 1;
                return DownstreamVerdict::Drop(Dropped::NoHost);
            }
            self.stats.no_host += 1;
            return reply(ResponseStatus::NoProcessor);
        };
        // An original_dst cluster sends to the connection's original destination; without
        // one there is nowhere to send (see the module doc).
        let destination = match self.original_dst.get(cluster).copied().flatten() {
            None => None,
            Some(_) => match original_dst {
                Some(d) => Some(d),
                None => {
                    if oneway {
                        self.stats.oneway_dropped += 1;
                        return DownstreamVerdict::Drop(Dropped::NoHost);
                    }
                    self.stats.no_original_dst += 1;
                    return reply(ResponseStatus::NoProcessor);
                }
            },
        };
        let policies = self
            .hash_policies
            .get(cluster)
            .map_or(&[][..], Vec::as_slice);
        let hash = if policies.is_empty() {
            None
        } else {
            request_hash(policies, |name| frame.header.get(name.as_bytes()), peer)
        };
        let Some(host) = state.pick_hashed(rng, &[], hash) else {
            if oneway {
                self.stats.oneway_dropped += 1;
                return DownstreamVerdict::Drop(Dropped::NoHost);
            }
            self.stats.no_host += 1;
            return reply(ResponseStatus::NoProcessor);
        };
        let permit = if oneway {
            None
        } else {
            match state.breakers_mut().try_acquire(Resource::Requests) {
                Ok(p) => Some(p),
                Err(_) => {
                    self.stats.overflow += 1;
                    return reply(ResponseStatus::ServerThreadpoolBusy);
                }
            }
        };
        let picked = state.host_ref(host);
        let key = (cluster, picked, destination);
        let existing = self.by_host.get(&key).copied();
        // A new destination past the bound: the one idle the longest makes room, if any.
        if existing.is_none()
            && destination.is_some()
            && self.idle_timers.len() >= MAX_DESTINATIONS
            && !self.evict_idle_destination(clusters)
        {
            let state = &mut clusters[cluster];
            if let Some(p) = permit {
                state.breakers_mut().release(p);
                self.stats.overflow += 1;
                return reply(ResponseStatus::ServerThreadpoolBusy);
            }
            self.stats.oneway_dropped += 1;
            return DownstreamVerdict::Drop(Dropped::Overflow);
        }
        let state = &mut clusters[cluster];
        let up = match existing {
            Some(up) => up,
            None => match state.breakers_mut().try_acquire(Resource::Connections) {
                Ok(conn_permit) => {
                    let up = UpstreamId(self.next_up);
                    self.next_up += 1;
                    self.upstreams.insert(
                        up,
                        Upstream {
                            cluster,
                            host: picked,
                            destination,
                            last_used: now,
                            connected: false,
                            next_id: 1,
                            streams: StreamMap::default(),
                            permit: conn_permit,
                        },
                    );
                    self.by_host.insert(key, up);
                    if let Some(idle) = self.original_dst.get(cluster).copied().flatten() {
                        self.idle_timers.insert((now + idle, up));
                    }
                    self.stats.upstream_connects += 1;
                    self.actions.push_back(Action::Connect {
                        up,
                        cluster,
                        host: picked,
                        address: destination.unwrap_or(state.host(host).address),
                        transport: state.transport(host),
                    });
                    up
                }
                Err(_) => {
                    if let Some(p) = permit {
                        state.breakers_mut().release(p);
                        self.stats.overflow += 1;
                        return reply(ResponseStatus::ServerThreadpoolBusy);
                    }
                    self.stats.oneway_dropped += 1;
                    return DownstreamVerdict::Drop(Dropped::Overflow);
                }
            },
        };
        let upstream = self
            .upstreams
            .get_mut(&up)
            .expect("by_host names a live upstream");
        upstream.last_used = now;
        let request_id = loop {
            let id = upstream.next_id;
            upstream.next_id = upstream.next_id.wrapping_add(1);
            if !upstream.streams.contains_key(&id) {
                break id;
            }
        };
        let Some(permit) = permit else {
            self.stats.oneway += 1;
            return DownstreamVerdict::Forward { up, request_id };
        };
        let frame_timeout = frame
            .timeout_ms
            .filter(|&t| t > 0)
            .map(|t| Duration::from_millis(t as u64));
        let timeout = match (frame_timeout, route_timeout) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let deadline = timeout.map(|t| now + t);
        state.begin(host);
        upstream.streams.insert(
            request_id,
            Stream {
                down: Some(down),
                request_id: frame.request_id,
                version: frame.version,
                codec: frame.codec,
                deadline,
                permit,
            },
        );
        if let Some(at) = deadline {
            self.push_timer(at, up, request_id);
        }
        self.downstreams
            .get_mut(&down)
            .expect("checked above")
            .in_flight += 1;
        self.stats.requests += 1;
        DownstreamVerdict::Forward { up, request_id }
    }

    /// Downstream `down` sent bytes that do not decode (`buf` is its read buffer from the start
    /// of the frame that failed). Returns the status-9 reply to write when the request id could
    /// be read; the driver then closes the connection. The proxy forgets `down` as
    /// [`BoltProxy::handle_downstream_closed`] does.
    pub fn handle_downstream_codec_error(
        &mut self,
        _now: Instant,
        down: DownstreamId,
        buf: &[u8],
    ) -> Option<ProxyReply> {
        if !self.downstreams.contains_key(&down) {
            return None;
        }
        self.stats.codec_errors += 1;
        let reply = readable_request(buf).map(|(version, request_id, codec)| ProxyReply {
            down,
            request_id,
            version,
            codec,
            status: ResponseStatus::CodecException,
            stream: None,
        });
        self.handle_downstream_closed(down);
        reply
    }

    /// Downstream `down` closed (or was closed). Its streams become orphans: they keep their
    /// upstream id, host `begin` and breaker unit until their response, deadline or upstream
    /// loss ends them, with nothing sent. Idempotent.
    pub fn handle_downstream_closed(&mut self, down: DownstreamId) {
        if let Some(d) = self.downstreams.remove(&down)
            && d.in_flight > 0
        {
            for u in self.upstreams.values_mut() {
                for s in u.streams.values_mut() {
                    if s.down == Some(down) {
                        s.down = None;
                    }
                }
            }
        }
        self.debug_check();
    }

    /// Upstream `up` is connected (its buffered bytes can be written).
    pub fn handle_upstream_connected(&mut self, up: UpstreamId) {
        if let Some(u) = self.upstreams.get_mut(&up) {
            u.connected = true;
        }
    }

    /// A frame decoded from upstream `up`. See [`UpstreamVerdict`].
    pub fn handle_upstream_frame(
        &mut self,
        now: Instant,
        up: UpstreamId,
        frame: &Frame<'_>,
        clusters: &mut [ClusterState],
    ) -> UpstreamVerdict {
        let verdict = self.upstream_frame(now, up, frame, clusters);
        self.debug_check();
        verdict
    }

    fn upstream_frame(
        &mut self,
        now: Instant,
        up: UpstreamId,
        frame: &Frame<'_>,
        clusters: &mut [ClusterState],
    ) -> UpstreamVerdict {
        let Some(u) = self.upstreams.get_mut(&up) else {
            return UpstreamVerdict::Drop;
        };
        u.last_used = now;
        match frame.kind {
            Kind::Request if frame.cmd_code == CMD_HEARTBEAT => {
                self.stats.heartbeats += 1;
                return UpstreamVerdict::AnswerHeartbeat;
            }
            Kind::Request | Kind::Oneway => {
                self.stats.unexpected_frames += 1;
                return UpstreamVerdict::Drop;
            }
            Kind::Response => {}
        }
        let Some(s) = u.streams.remove(&frame.request_id) else {
            self.stats.responses_dropped += 1;
            return UpstreamVerdict::Drop;
        };
        // A map keeps its largest size: after a burst, an emptied one gives it back (the
        // B-tree it replaced freed its nodes as they emptied).
        if u.streams.is_empty() && u.streams.capacity() > SHRINK_ABOVE {
            u.streams.shrink_to(0);
        }
        let (cluster, host) = (u.cluster, u.host.id);
        let had_deadline = s.deadline.is_some();
        let down = end_stream(&mut self.downstreams, clusters, cluster, host, s);
        if had_deadline {
            self.live_timers -= 1;
            self.settle_timers();
        }
        self.close_if_stale_and_idle(up, clusters);
        match down {
            Some((down, request_id, _, _)) => {
                self.stats.responses += 1;
                UpstreamVerdict::Forward { down, request_id }
            }
            None => {
                self.stats.responses_dropped += 1;
                UpstreamVerdict::Drop
            }
        }
    }

    /// Upstream `up` closed, or its connect failed or timed out: each of its streams whose
    /// downstream is open gets status 16 (in [`BoltProxy::poll_action`]); the next request for
    /// its host opens a new connection.
    pub fn handle_upstream_closed(
        &mut self,
        _now: Instant,
        up: UpstreamId,
        clusters: &mut [ClusterState],
    ) {
        if let Some(u) = self.upstreams.remove(&up) {
            self.by_host.remove(&(u.cluster, u.host, u.destination));
            if u.destination.is_some() {
                self.idle_timers.retain(|&(_, t)| t != up);
            }
            // In id order, as the replies go out (the map's order is not the ids').
            let mut streams: Vec<(u32, Stream)> = u.streams.into_iter().collect();
            streams.sort_unstable_by_key(|&(id, _)| id);
            for (id, s) in streams {
                if s.deadline.is_some() {
                    self.live_timers -= 1;
                }
                if let Some((down, request_id, version, codec)) =
                    end_stream(&mut self.downstreams, clusters, u.cluster, u.host.id, s)
                {
                    self.stats.upstream_lost += 1;
                    self.actions.push_back(Action::Reply(ProxyReply {
                        down,
                        request_id,
                        version,
                        codec,
                        status: ResponseStatus::ConnectionClosed,
                        stream: Some((up, id)),
                    }));
                }
            }
            if let Some(c) = clusters.get_mut(u.cluster) {
                c.breakers_mut().release(u.permit);
            }
            self.settle_timers();
        }
        self.debug_check();
    }

    /// The next output that is not about a frame just handed in.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// When [`BoltProxy::handle_timeout`] must next be called.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        let request = self.timers.peek().map(|(at, _, _)| at);
        let idle = self.idle_timers.first().map(|&(at, _)| at);
        match (request, idle) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Ends every stream whose deadline is at or before `now`: status 7 to its downstream
    /// (when open); its late response, if any, will be dropped. Closes destination
    /// connections idle for their cluster's `upstream_idle_timeout` ([`Action::Close`]).
    pub fn handle_timeout(&mut self, now: Instant, clusters: &mut [ClusterState]) {
        self.expire_requests(now, clusters);
        self.expire_idle_destinations(now, clusters);
        self.debug_check();
    }

    /// Destination connections whose idle timer is due: closed when nothing is in flight and
    /// nothing was sent or answered for the idle timeout; else the timer moves on.
    fn expire_idle_destinations(&mut self, now: Instant, clusters: &mut [ClusterState]) {
        while let Some(&(at, up)) = self.idle_timers.first() {
            if at > now {
                break;
            }
            self.idle_timers.pop_first();
            let Some(u) = self.upstreams.get(&up) else {
                continue;
            };
            let idle = self
                .original_dst
                .get(u.cluster)
                .copied()
                .flatten()
                .unwrap_or_default();
            let due = u.last_used + idle;
            if u.streams.is_empty() && due <= now {
                self.close_destination(up, clusters);
            } else {
                // Busy or used since: look again one idle timeout after the last use (or
                // after now, while requests are in flight).
                self.idle_timers.insert((due.max(now + idle), up));
            }
        }
    }

    /// Closes the destination connection idle the longest (nothing in flight) to make room
    /// for a new one; `false` when every one is busy.
    fn evict_idle_destination(&mut self, clusters: &mut [ClusterState]) -> bool {
        let victim = self
            .upstreams
            .iter()
            .filter(|(_, u)| u.destination.is_some() && u.streams.is_empty())
            .min_by_key(|(_, u)| u.last_used)
            .map(|(&up, _)| up);
        match victim {
            Some(up) => {
                self.close_destination(up, clusters);
                true
            }
            None => false,
        }
    }

    /// Forgets destination connection `up` (no stream in flight) and tells the driver to close
    /// it.
    fn close_destination(&mut self, up: UpstreamId, clusters: &mut [ClusterState]) {
        self.close_idle(up, clusters);
    }

    /// Forgets connection `up` (no stream in flight: a destination connection, or one to a
    /// host that left its slot), gives its `max_connections` unit back, and tells the driver
    /// to close it.
    fn close_idle(&mut self, up: UpstreamId, clusters: &mut [ClusterState]) {
        let Some(u) = self.upstreams.remove(&up) else {
            return;
        };
        debug_assert!(u.streams.is_empty(), "closing a busy upstream connection");
        self.by_host.remove(&(u.cluster, u.host, u.destination));
        self.idle_timers.retain(|&(_, t)| t != up);
        if let Some(c) = clusters.get_mut(u.cluster) {
            c.breakers_mut().release(u.permit);
        }
        if u.destination.is_some() {
            self.stats.destinations_closed += 1;
        } else {
            self.stats.stale_closed += 1;
        }
        self.actions.push_back(Action::Close { up });
    }

    /// Cluster `cluster`'s hosts changed (a DNS answer): its idle connections to hosts whose
    /// slot has another host now are closed ([`Action::Close`]); a busy one closes when its
    /// last stream ends. (No request goes on them either way: connections are kept per host
    /// *and* slot epoch.) Returns how many were closed now.
    pub fn close_stale_upstreams(
        &mut self,
        cluster: usize,
        clusters: &mut [ClusterState],
    ) -> usize {
        let Some(state) = clusters.get(cluster) else {
            return 0;
        };
        let stale: Vec<UpstreamId> = self
            .upstreams
            .iter()
            .filter(|(_, u)| {
                u.cluster == cluster
                    && u.destination.is_none()
                    && u.streams.is_empty()
                    && !state.is_current(u.host)
            })
            .map(|(&up, _)| up)
            .collect();
        for &up in &stale {
            self.close_idle(up, clusters);
        }
        stale.len()
    }

    fn expire_requests(&mut self, now: Instant, clusters: &mut [ClusterState]) {
        while let Some((at, up, id)) = self.timers.peek() {
            if at > now {
                break;
            }
            self.timers.pop();
            let Some(u) = self.upstreams.get_mut(&up) else {
                continue;
            };
            // A dead entry (its stream answered, or the id reused by a later stream with
            // another deadline) is dropped.
            if u.streams.get(&id).is_none_or(|s| s.deadline != Some(at)) {
                continue;
            }
            let s = u.streams.remove(&id).expect("looked up above");
            self.live_timers -= 1;
            let (cluster, host) = (u.cluster, u.host.id);
            if let Some((down, request_id, version, codec)) =
                end_stream(&mut self.downstreams, clusters, cluster, host, s)
            {
                self.stats.timeouts += 1;
                self.actions.push_back(Action::Reply(ProxyReply {
                    down,
                    request_id,
                    version,
                    codec,
                    status: ResponseStatus::Timeout,
                    stream: Some((up, id)),
                }));
            }
            self.close_if_stale_and_idle(up, clusters);
        }
        self.settle_timers();
    }

    /// Records a deadline for stream `id` of `up`.
    fn push_timer(&mut self, at: Instant, up: UpstreamId, id: u32) {
        self.live_timers += 1;
        self.timers.push((at, up, id));
        // A push leaves the first entry live: only the size may need restoring.
        if self.timers.len() > 2 * self.live_timers + TIMER_SLACK {
            self.settle_timers();
        }
    }

    /// Restores the deadline heap's bounds after a change: when dead entries outnumber the
    /// live ones by more than [`TIMER_SLACK`] it is compacted (amortised O(1): the next
    /// compaction is at least half as many changes away as the heap is long), else dead entries
    /// are popped off its top, so that the next deadline is a live one.
    fn settle_timers(&mut self) {
        if self.live_timers == 0 {
            self.timers.clear_and_shrink(SHRINK_ABOVE);
            return;
        }
        if self.timers.len() > 2 * self.live_timers + TIMER_SLACK {
            let upstreams = &self.upstreams;
            self.timers
                .retain(|&(at, up, id)| timer_is_live(upstreams, at, up, id));
            return;
        }
        while let Some((at, up, id)) = self.timers.peek() {
            if timer_is_live(&self.upstreams, at, up, id) {
                break;
            }
            self.timers.pop();
        }
    }

    /// Closes `up` if it has no stream left and goes to a host that left its slot (a DNS
    /// answer moved it): nothing else will go on it.
    fn close_if_stale_and_idle(&mut self, up: UpstreamId, clusters: &mut [ClusterState]) {
        let Some(u) = self.upstreams.get(&up) else {
            return;
        };
        if u.streams.is_empty()
            && u.destination.is_none()
            && clusters
                .get(u.cluster)
                .is_some_and(|c| !c.is_current(u.host))
        {
            self.close_idle(up, clusters);
        }
    }

    /// The counters.
    #[must_use]
    pub fn stats(&self) -> &BoltStats {
        &self.stats
    }

    /// Requests in flight (orphans included).
    #[must_use]
    pub fn in_flight(&self) -> usize {
        self.upstreams.values().map(|u| u.streams.len()).sum()
    }

    /// Requests in flight from `down` (0 for an unknown downstream).
    #[must_use]
    pub fn downstream_in_flight(&self, down: DownstreamId) -> usize {
        self.downstreams.get(&down).map_or(0, |d| d.in_flight)
    }

    /// Open downstream connections.
    #[must_use]
    pub fn downstream_count(&self) -> usize {
        self.downstreams.len()
    }

    /// Upstream connections (connecting or connected).
    #[must_use]
    pub fn upstream_count(&self) -> usize {
        self.upstreams.len()
    }

    /// The original destination an upstream connection goes to (`None`: a host's address, or
    /// an unknown connection).
    #[must_use]
    pub fn upstream_destination(&self, up: UpstreamId) -> Option<SocketAddr> {
        self.upstreams.get(&up).and_then(|u| u.destination)
    }

    /// The cluster, host (as picked: id and slot epoch) and connectedness of an upstream
    /// connection.
    #[must_use]
    pub fn upstream(&self, up: UpstreamId) -> Option<(usize, HostRef, bool)> {
        self.upstreams
            .get(&up)
            .map(|u| (u.cluster, u.host, u.connected))
    }

    /// The upstream ids in flight on `up`, ascending.
    pub fn upstream_ids_in_flight(&self, up: UpstreamId) -> impl Iterator<Item = u32> + '_ {
        self.upstreams.get(&up).into_iter().flat_map(|u| {
            let mut ids: Vec<u32> = u.streams.keys().copied().collect();
            ids.sort_unstable();
            ids
        })
    }

    /// Requests in flight on upstream connection `up` (orphans included).
    #[must_use]
    pub fn upstream_in_flight(&self, up: UpstreamId) -> usize {
        self.upstreams.get(&up).map_or(0, |u| u.streams.len())
    }

    fn debug_check(&self) {
        #[cfg(debug_assertions)]
        if self.invariant_checks {
            self.check_invariants();
        }
    }

    /// Turns the debug builds' check of the invariants after every input off (or back on): a
    /// test that counts the allocations of the request path turns it off, as the check itself
    /// allocates. Release builds never check.
    pub fn set_invariant_checks(&mut self, on: bool) {
        self.invariant_checks = on;
    }

    /// Checks the invariants of the module doc that the proxy can see alone; panics on a
    /// violation. Runs after every input in debug builds.
    pub fn check_invariants(&self) {
        assert_eq!(
            self.by_host.len(),
            self.upstreams.len(),
            "by_host/upstreams"
        );
        for (&(cluster, host, destination), up) in &self.by_host {
            let u = &self.upstreams[up];
            assert_eq!(
                (u.cluster, u.host, u.destination),
                (cluster, host, destination),
                "by_host of {up:?}"
            );
        }
        let destinations = self
            .upstreams
            .values()
            .filter(|u| u.destination.is_some())
            .count();
        assert_eq!(destinations, self.idle_timers.len(), "idle timers");
        assert!(destinations <= MAX_DESTINATIONS, "destinations bounded");
        for &(_, up) in &self.idle_timers {
            assert!(
                self.upstreams
                    .get(&up)
                    .is_some_and(|u| u.destination.is_some()),
                "idle timer of {up:?}"
            );
        }
        let mut in_flight: BTreeMap<DownstreamId, usize> = BTreeMap::new();
        let mut deadlines = 0;
        let timers: BTreeSet<(Instant, UpstreamId, u32)> = self.timers.iter().copied().collect();
        for (&up, u) in &self.upstreams {
            for (&id, s) in &u.streams {
                if let Some(d) = s.down {
                    assert!(self.downstreams.contains_key(&d), "stream of closed {d:?}");
                    *in_flight.entry(d).or_default() += 1;
                }
                if let Some(at) = s.deadline {
                    deadlines += 1;
                    assert!(timers.contains(&(at, up, id)), "no timer for {up:?}/{id}");
                }
            }
        }
        assert_eq!(deadlines, self.live_timers, "live timers");
        let live = self
            .timers
            .iter()
            .filter(|&&(at, up, id)| timer_is_live(&self.upstreams, at, up, id))
            .count();
        assert_eq!(live, deadlines, "one timer per stream with a deadline");
        assert!(
            self.timers.len() <= 2 * self.live_timers + TIMER_SLACK,
            "dead timers bounded"
        );
        if let Some((at, up, id)) = self.timers.peek() {
            assert!(
                timer_is_live(&self.upstreams, at, up, id),
                "the next timer is live"
            );
        }
        for (d, ds) in &self.downstreams {
            assert_eq!(
                ds.in_flight,
                in_flight.get(d).copied().unwrap_or(0),
                "in_flight of {d:?}"
            );
        }
    }
}

/// Ends a stream: the host's `end`, the breaker unit back, the downstream's count down. Returns
/// where an answer goes (downstream, original id, version, codec) when its downstream is open.
fn end_stream(
    downstreams: &mut DownstreamMap,
    clusters: &mut [ClusterState],
    cluster: usize,
    host: HostId,
    s: Stream,
) -> Option<(DownstreamId, u32, Version, u8)> {
    if let Some(c) = clusters.get_mut(cluster) {
        c.end(host);
        c.breakers_mut().release(s.permit);
    }
    let down = s.down?;
    let d = downstreams.get_mut(&down)?;
    d.in_flight -= 1;
    Some((down, s.request_id, s.version, s.codec))
}

#[cfg(test)]
mod tests;
