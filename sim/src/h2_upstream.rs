//! HTTP/2 upstream scenarios: HTTP/1.1 clients → sidecar (real engine, `http` listener, the
//! route's default retry policy — none) → three `protocol: http2` upstreams that misbehave the
//! ways a real HTTP/2 server may, one way per scenario ([`H2UpstreamScenario`]):
//!
//! - **GOAWAY** mid-traffic: after a few streams a connection announces GOAWAY with
//!   `last_stream_id` set to the last stream it accepted; streams above it that were already on
//!   their way are never processed (held, never answered, as RFC 9113 §6.8 allows);
//! - **REFUSED_STREAM**: a request's first one or two arrivals (decided per id) are refused;
//! - **max_concurrent_streams: 2** under ten concurrent clients;
//! - **resets after headers**: some streams are reset (INTERNAL_ERROR) once the request arrived,
//!   before any response; some after the response head.
//!
//! The upstreams are the `h2` crate's server (the sidecar uses its client side). A GOAWAY with a
//! chosen `last_stream_id` is not something `h2`'s server API sends (its graceful shutdown
//! processes every stream already in flight), so the GOAWAY upstream writes it itself, between
//! two of the server's frames ([`GoAwayInjector`]). Every request carries a unique `x-sim-id`;
//! an upstream answers with it as the body.
//!
//! Invariants checked after every run:
//!
//! 1. every request finished within the route timeout (plus the network's slack) — none hangs;
//! 2. a response carries the id of its request (no crossed responses);
//! 3. no request was processed by an upstream twice (the route has no retry policy: only
//!    unprocessed streams may be sent again);
//! 4. every request an upstream never processed (refused, or above a GOAWAY's last stream id) was
//!    sent again and answered 2xx — whatever its method; every request no upstream reset is
//!    answered 2xx;
//! 5. the sidecar never put more streams on a connection than the peer's
//!    `SETTINGS_MAX_CONCURRENT_STREAMS` (`http2.upstream_streams_queued` stays 0), and the
//!    stream-limit upstream refused none;
//! 6. at the end, the sidecar has no client connection left open.
//!
//! Each invariant fails when the feature it guards is disabled (see `docs/simulation.md`).

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use sluice_core::config::Config;
use sluice_core::rng::Rng;
use sluice_runtime::stats::{StatsSnapshot, WorkerStats};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use turmoil::net::{TcpListener, TcpStream};

use crate::RunReport;
use crate::peers;
use crate::topology::{
    SIDECAR, add_clients, add_observer, add_sidecar, add_upstreams, elapsed, hosts_yaml, new_sim,
    report, run_to_end,
};
use crate::trace::Trace;

const UPSTREAMS: [&str; 3] = ["h2up1", "h2up2", "h2up3"];
const LISTEN_PORT: u16 = 10_000;
const UPSTREAM_PORT: u16 = 8_080;
/// Concurrent clients (each one request at a time on its keep-alive connection).
const CLIENTS: usize = 10;
const TRAFFIC_UNTIL: Duration = Duration::from_millis(2_500);
const ROUTE_TIMEOUT_MS: u64 = 2_000;
/// What a client waits before it calls a request hung.
const CLIENT_DEADLINE: Duration = Duration::from_secs(5);
/// The network's share of a request's time beyond the route timeout (the request's own
/// transfer, latencies of at most 15 ms each way).
const SLACK: Duration = Duration::from_millis(200);
const IDLE_MS: u64 = 1_500;
/// The stream limit the stream-limit upstream advertises.
const PEER_MAX_STREAMS: u32 = 2;

/// The HTTP/2 upstream scenarios.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum H2UpstreamScenario {
    /// Each connection sends GOAWAY (NO_ERROR, `last_stream_id` = its last accepted stream)
    /// after a few streams; streams already on their way above it are never processed.
    GoAway,
    /// A request's first one or two arrivals (per id) are refused with REFUSED_STREAM.
    RefusedStream,
    /// The upstreams advertise `SETTINGS_MAX_CONCURRENT_STREAMS: 2`.
    MaxStreams,
    /// Some streams are reset once the request arrived; some after the response head.
    ResetAfterHeaders,
}

#[derive(Debug)]
struct Req {
    id: String,
    post: bool,
    start: Duration,
    end: Duration,
    /// Status, or the clean failure.
    outcome: Result<u16, String>,
}

struct World {
    scenario: H2UpstreamScenario,
    requests: Vec<Req>,
    started: usize,
    /// id → upstreams that processed it (accepted it and went on to answer or reset it).
    processed: BTreeMap<String, Vec<usize>>,
    /// id → arrivals at any upstream (processed or not).
    arrivals: BTreeMap<String, u32>,
    /// Ids an upstream never processed (refused, or left above a GOAWAY's last stream id).
    unprocessed: BTreeSet<String>,
    /// Ids an upstream reset after processing (their clients may fail).
    reset: BTreeSet<String>,
    /// GOAWAY frames the upstreams sent.
    goaways: usize,
    clients_done: usize,
}

type Shared = Rc<RefCell<World>>;

fn config(upstreams: &[IpAddr]) -> Config {
    let hosts = hosts_yaml(upstreams, UPSTREAM_PORT);
    let yaml = format!(
        r#"
listeners:
  - name: http_in
    address: "[::]:{LISTEN_PORT}"
    http:
      idle_timeout: {IDLE_MS}ms
      virtual_hosts:
        - name: all
          domains: ["*"]
          routes:
            - match: {{ prefix: / }}
              route: {{ cluster: app, timeout: {ROUTE_TIMEOUT_MS}ms }}
clusters:
  - name: app
    protocol: http2
    connect_timeout: 300ms
    lb_policy: round_robin
    hosts:
{hosts}drain_timeout: 1s
"#
    );
    Config::from_yaml(&yaml).unwrap_or_else(|e| panic!("sim config invalid: {e}\n{yaml}"))
}

/// Runs one HTTP/2 upstream scenario for one seed.
#[must_use]
pub fn run(scenario: H2UpstreamScenario, seed: u64) -> RunReport {
    let trace = Trace::default();
    let world = Rc::new(RefCell::new(World {
        scenario,
        requests: Vec::new(),
        started: 0,
        processed: BTreeMap::new(),
        arrivals: BTreeMap::new(),
        unprocessed: BTreeSet::new(),
        reset: BTreeSet::new(),
        goaways: 0,
        clients_done: 0,
    }));
    let mut sim = new_sim(seed, Duration::from_millis(15));
    add_upstreams(&mut sim, &UPSTREAMS, &world, &trace, upstream);
    let sidecar = add_sidecar(&mut sim, seed, LISTEN_PORT, &UPSTREAMS, config);
    {
        let (world, trace) = (world.clone(), trace.clone());
        add_clients(&mut sim, "clients", CLIENTS, move |c| {
            let client_seed = seed.wrapping_mul(131).wrapping_add(c as u64);
            client(c, client_seed, world.clone(), trace.clone())
        });
    }
    let final_stats = {
        let world = world.clone();
        let settle = Duration::from_millis(IDLE_MS + 500);
        add_observer(
            &mut sim,
            move || world.borrow().clients_done == CLIENTS,
            settle,
            sidecar,
            WorkerStats::snapshot,
        )
    };

    let mut violations = Vec::new();
    run_to_end(&mut sim, &mut violations, |_, _| {});
    drop(sim);

    let w = world.borrow();
    check(&w, final_stats.borrow().as_ref(), &mut violations);
    let ok = w
        .requests
        .iter()
        .filter(|r| matches!(r.outcome, Ok(200..=299)))
        .count();
    let summary = format!(
        "{scenario:?}: {} requests, {ok} 2xx, {} unprocessed, {} reset, {} GOAWAY",
        w.requests.len(),
        w.unprocessed.len(),
        w.reset.len(),
        w.goaways,
    );
    report(seed, &trace, violations, summary)
}

fn check(w: &World, final_stats: Option<&StatsSnapshot>, violations: &mut Vec<String>) {
    if w.requests.len() != w.started {
        violations.push(format!(
            "{} of {} requests finished",
            w.requests.len(),
            w.started
        ));
    }
    let route_timeout = Duration::from_millis(ROUTE_TIMEOUT_MS);
    for r in &w.requests {
        let method = if r.post { "POST" } else { "GET" };
        if r.end - r.start > route_timeout + SLACK {
            violations.push(format!(
                "{method} {} took {:?}, past the route timeout",
                r.id,
                r.end - r.start
            ));
        }
        if let Err(e) = &r.outcome
            && e.starts_with("CROSSED")
        {
            violations.push(format!("{}: {e}", r.id));
        }
        let processed = w.processed.get(&r.id).map_or(0, Vec::len);
        if processed > 1 {
            violations.push(format!(
                "{method} {} was processed {processed} times (no retry policy)",
                r.id
            ));
        }
        let ok = matches!(r.outcome, Ok(200..=299));
        if !ok && w.unprocessed.contains(&r.id) {
            violations.push(format!(
                "{method} {} was not processed by an upstream and got {:?} instead of being sent again",
                r.id, r.outcome
            ));
        } else if !ok && !w.reset.contains(&r.id) {
            violations.push(format!("{method} {} got {:?}", r.id, r.outcome));
        }
    }
    match final_stats {
        None => violations.push("the observer never read the sidecar's counters".into()),
        Some(s) => {
            if s.http2_upstream_streams_queued != 0 {
                violations.push(format!(
                    "{} streams were put on a connection already at the peer's stream limit",
                    s.http2_upstream_streams_queued
                ));
            }
            if w.scenario == H2UpstreamScenario::MaxStreams && s.http2_upstream_refused != 0 {
                violations.push(format!(
                    "the stream-limit upstream refused {} streams (over its limit)",
                    s.http2_upstream_refused
                ));
            }
            if s.downstream_cx_active() != 0 {
                violations.push(format!(
                    "{} sidecar connections still open",
                    s.downstream_cx_active()
                ));
            }
        }
    }
}

/// A number from 0 to `n - 1` fixed by `id` and `salt`.
fn pick(id: &str, salt: u8, n: u64) -> u64 {
    let h = id
        .bytes()
        .chain([salt])
        .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        });
    h % n
}

async fn upstream(index: usize, world: Shared, trace: Trace) -> turmoil::Result {
    let listener = TcpListener::bind(SocketAddr::new(
        IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        UPSTREAM_PORT,
    ))
    .await?;
    trace.record(elapsed(), UPSTREAMS[index], "listening");
    let mut conns = 0u64;
    loop {
        let (stream, _) = listener.accept().await?;
        conns += 1;
        let (world, trace) = (world.clone(), trace.clone());
        tokio::task::spawn_local(serve_conn(index, conns, stream, world, trace));
    }
}

/// Serves one upstream connection with `h2`'s server.
async fn serve_conn(index: usize, conn_no: u64, stream: TcpStream, world: Shared, trace: Trace) {
    let scenario = world.borrow().scenario;
    let who = UPSTREAMS[index];
    let goaway = Rc::new(GoAway::default());
    let io = GoAwayInjector::new(stream, goaway.clone());
    let mut builder = h2::server::Builder::new();
    if scenario == H2UpstreamScenario::MaxStreams {
        builder.max_concurrent_streams(PEER_MAX_STREAMS);
    }
    let Ok(mut conn) = builder.handshake::<_, Bytes>(io).await else {
        return;
    };
    // The GOAWAY upstream goes away after 2 to 7 streams on each connection.
    let goaway_after =
        (scenario == H2UpstreamScenario::GoAway).then(|| 2 + (conn_no * 7 + index as u64) % 6);
    let mut accepted = 0u64;
    // Streams above the GOAWAY's last stream id: held unanswered (never processed).
    let mut ignored = Vec::new();
    while let Some(next) = conn.accept().await {
        let Ok((request, respond)) = next else { break };
        let sid = u32::from(respond.stream_id());
        let id = request
            .headers()
            .get("x-sim-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let post = request.method() == http::Method::POST;
        let arrival = {
            let mut w = world.borrow_mut();
            let n = w.arrivals.entry(id.clone()).or_default();
            *n += 1;
            *n
        };
        if let Some(last) = goaway.last_stream_id.get()
            && sid > last
        {
            trace.record(
                elapsed(),
                who,
                format_args!("{id} on stream {sid}, above GOAWAY({last}): not processed"),
            );
            world.borrow_mut().unprocessed.insert(id);
            ignored.push((request, respond));
            continue;
        }
        if scenario == H2UpstreamScenario::RefusedStream && u64::from(arrival) <= pick(&id, 1, 3) {
            trace.record(elapsed(), who, format_args!("{id} refused"));
            world.borrow_mut().unprocessed.insert(id);
            let mut respond = respond;
            respond.send_reset(h2::Reason::REFUSED_STREAM);
            continue;
        }
        accepted += 1;
        trace.record(
            elapsed(),
            who,
            format_args!(
                "{id} ({}) on stream {sid}",
                if post { "POST" } else { "GET" }
            ),
        );
        world
            .borrow_mut()
            .processed
            .entry(id.clone())
            .or_default()
            .push(index);
        tokio::task::spawn_local(answer(index, scenario, request, respond, id, world.clone()));
        if goaway_after == Some(accepted) {
            trace.record(elapsed(), who, format_args!("GOAWAY last_stream_id {sid}"));
            world.borrow_mut().goaways += 1;
            goaway.last_stream_id.set(Some(sid));
        }
    }
    drop(ignored);
}

/// Answers one processed stream: reads the request body, works, answers `200` with the id as
/// the body — or, in [`H2UpstreamScenario::ResetAfterHeaders`], resets some streams.
async fn answer(
    index: usize,
    scenario: H2UpstreamScenario,
    request: http::Request<h2::RecvStream>,
    mut respond: h2::server::SendResponse<Bytes>,
    id: String,
    world: Shared,
) {
    let reset = if scenario == H2UpstreamScenario::ResetAfterHeaders {
        pick(&id, 2, 4)
    } else {
        3
    };
    if reset == 0 {
        world.borrow_mut().reset.insert(id);
        respond.send_reset(h2::Reason::INTERNAL_ERROR);
        return;
    }
    let mut body = request.into_body();
    while let Some(chunk) = body.data().await {
        let Ok(chunk) = chunk else { return };
        let _ = body.flow_control().release_capacity(chunk.len());
    }
    let min_ms = if scenario == H2UpstreamScenario::MaxStreams {
        40
    } else {
        0
    };
    tokio::time::sleep(Duration::from_millis(min_ms) + peers::work(id.as_bytes(), 120)).await;
    let response = http::Response::builder()
        .status(200)
        .header("content-length", id.len())
        .header("x-upstream", index)
        .body(())
        .expect("a valid response");
    let Ok(mut send) = respond.send_response(response, false) else {
        return;
    };
    if reset == 1 {
        world.borrow_mut().reset.insert(id);
        send.send_reset(h2::Reason::INTERNAL_ERROR);
        return;
    }
    let _ = send.send_data(Bytes::from(id.into_bytes()), true);
}

async fn client(c: usize, seed: u64, world: Shared, trace: Trace) {
    let mut rng = Rng::from_seed(seed);
    let who = format!("client{c}");
    let mut seq = 0;
    let mut conn: Option<TcpStream> = None;
    let mut buf = Vec::with_capacity(4096);
    while elapsed() < TRAFFIC_UNTIL {
        tokio::time::sleep(Duration::from_millis(rng.below(40))).await;
        let post = rng.below(3) == 0;
        let id = format!("c{c}-{seq}");
        seq += 1;
        let body_len = if post {
            1 + rng.below(2000) as usize
        } else {
            0
        };
        let request = format!(
            "{} /item HTTP/1.1\r\nhost: sim\r\nx-sim-id: {id}\r\ncontent-length: {body_len}\r\n\r\n{}",
            if post { "POST" } else { "GET" },
            "p".repeat(body_len)
        );
        world.borrow_mut().started += 1;
        let start = elapsed();
        if conn.is_none() {
            conn = TcpStream::connect((SIDECAR, LISTEN_PORT)).await.ok();
            buf.clear();
        }
        let outcome = match conn.as_mut() {
            None => Err("connect failed".to_owned()),
            Some(s) => match tokio::time::timeout(
                CLIENT_DEADLINE,
                peers::http::exchange::<4096>(s, &mut buf, request.as_bytes()),
            )
            .await
            {
                Ok(Ok(r)) => r.answering(&id),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err("gave up at the deadline".to_owned()),
            },
        };
        let keep = matches!(&outcome, Ok((_, true)));
        let outcome = outcome.map(|(status, _)| status);
        if !keep {
            conn = None;
        }
        let end = elapsed();
        trace.record(end, &who, format_args!("{id} -> {outcome:?}"));
        world.borrow_mut().requests.push(Req {
            id,
            post,
            start,
            end,
            outcome,
        });
    }
    world.borrow_mut().clients_done += 1;
}

/// When the GOAWAY upstream goes away: the last stream id it announces.
#[derive(Default)]
struct GoAway {
    last_stream_id: Cell<Option<u32>>,
    sent: Cell<bool>,
}

/// The upstream's connection, which writes a GOAWAY frame (NO_ERROR, the chosen last stream id)
/// between two of the `h2` server's frames once [`GoAway::last_stream_id`] is set: before the
/// server's next frame, so it precedes anything the server writes about later streams.
struct GoAwayInjector {
    inner: TcpStream,
    goaway: Rc<GoAway>,
    /// The GOAWAY frame's bytes not written yet.
    out: Vec<u8>,
    /// Where the server's output stands: bytes of a frame header seen, and payload bytes left.
    header: Vec<u8>,
    payload_left: usize,
}

impl GoAwayInjector {
    fn new(inner: TcpStream, goaway: Rc<GoAway>) -> Self {
        Self {
            inner,
            goaway,
            out: Vec::new(),
            header: Vec::with_capacity(9),
            payload_left: 0,
        }
    }

    /// Bytes of `len` up to the end of the server's current frame header or payload (0 at a
    /// frame boundary).
    fn to_boundary(&self, len: usize) -> usize {
        if self.header.is_empty() {
            self.payload_left.min(len)
        } else {
            (9 - self.header.len()).min(len)
        }
    }

    /// Follows the frame structure over `data`, written by the server.
    fn advance(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            if self.payload_left > 0 {
                let n = self.payload_left.min(data.len());
                self.payload_left -= n;
                data = &data[n..];
                continue;
            }
            let n = (9 - self.header.len()).min(data.len());
            self.header.extend_from_slice(&data[..n]);
            data = &data[n..];
            if self.header.len() == 9 {
                let h = &self.header;
                self.payload_left =
                    (usize::from(h[0]) << 16) | (usize::from(h[1]) << 8) | usize::from(h[2]);
                self.header.clear();
            }
        }
    }

    /// Writes out the pending GOAWAY frame.
    fn poll_goaway(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if !self.goaway.sent.get()
            && let Some(last) = self.goaway.last_stream_id.get()
            && self.header.is_empty()
            && self.payload_left == 0
        {
            self.goaway.sent.set(true);
            // Length 8, type GOAWAY (7), no flags, stream 0; last stream id; NO_ERROR.
            self.out.extend_from_slice(&[0, 0, 8, 7, 0, 0, 0, 0, 0]);
            self.out.extend_from_slice(&last.to_be_bytes());
            self.out.extend_from_slice(&0u32.to_be_bytes());
        }
        while !self.out.is_empty() {
            match Pin::new(&mut self.inner).poll_write(cx, &self.out) {
                Poll::Ready(Ok(n)) => {
                    self.out.drain(..n);
                }
                other => return other.map(|r| r.map(|_| ())),
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncRead for GoAwayInjector {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for GoAwayInjector {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match this.poll_goaway(cx) {
            Poll::Ready(Ok(())) => {}
            other => return other.map(|r| r.map(|()| 0)),
        }
        // Up to the end of the current frame only while a GOAWAY waits for a boundary.
        let pending = this.goaway.last_stream_id.get().is_some() && !this.goaway.sent.get();
        let len = match this.to_boundary(data.len()) {
            n if pending && n > 0 => n,
            _ => data.len(),
        };
        let written = Pin::new(&mut this.inner).poll_write(cx, &data[..len]);
        if let Poll::Ready(Ok(n)) = written {
            this.advance(&data[..n]);
        }
        written
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match this.poll_goaway(cx) {
            Poll::Ready(Ok(())) => {}
            other => return other,
        }
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
