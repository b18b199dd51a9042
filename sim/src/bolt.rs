//! Bolt (SOFARPC) scenarios: six clients → sidecar (real engine, `bolt` listener, TCP health
//! checks) → three Bolt upstreams, with an upstream crash or a partition mid-traffic.
//!
//! The simulated peers speak Bolt with the small codec in [`wire`] — written from
//! `shared/protocols/bolt.md`, not with Sluice's codec — so the test does not share the code
//! under test. Each client holds ONE connection (like `sofa-rpc-node`), numbers its requests
//! from 1 (so every id collides across clients at the proxy), keeps up to [`PIPELINE`] requests
//! in flight, mixes in heartbeats, oneway requests and v2 frames. Every request carries a
//! unique content `c{client}-{seq}` and a timeout of [`REQ_TIMEOUT`]; an upstream answers it,
//! after a processing delay drawn from the content, with status 0 and the body
//! `{content}@{upstream}`, in the version it came in; it answers heartbeats at once.
//!
//! Faults, drawn from the seed: at `t1` the victim upstream crashes and stays down
//! ([`BoltScenario::UpstreamCrash`]), or the sidecar is cut from it until `t2`
//! ([`BoltScenario::UpstreamPartition`]).
//!
//! The partition drops packets (turmoil's `partition`: no retransmission, no reset — in real
//! networks, a blackholing firewall or NAT), so the proxy's multiplexed connection to that host
//! silently never delivers again. The proxy must not reuse it once the host passes its health
//! checks again (on fresh connections): it closes a host's connections when the health check
//! marks the host down. Without that, every request routed to the host after the repair times
//! out (checked: the sweep fails on every seed with the close disabled).
//!
//! Invariants checked after every run:
//!
//! 1. every request and heartbeat a client sent is answered exactly once on its connection:
//!    nothing left unanswered, no response for an id that is not in flight (a duplicate, an
//!    unknown id, or an answer to a oneway request), in the version the request was sent in;
//! 2. within its timeout ([`REQ_TIMEOUT`] + [`SLACK`]);
//! 3. a success (status 0) carries the body of exactly that request (`{content}@{upstream}`,
//!    and that upstream did receive that content): never another client's or another
//!    request's; any other status is a proxy status 7, 16 or 6;
//! 4. no request reached the upstreams twice;
//! 5. heartbeats are answered with status 0 (heartbeat command code);
//! 6. a request that failed started around the fault: after `fault − REQ_TIMEOUT` and before
//!    `fault + DETECT` (the health checks' detection bound); everything else gets status 0;
//! 7. at the end the sidecar has no open downstream connection, and its Bolt counters agree
//!    with what the clients saw: `requests = responses + timeouts + upstream_lost`, each equal
//!    to the clients' count of status 0 / 7 / 16 answers, `heartbeats` and `oneway` equal to
//!    what the clients sent, `no_host + no_route` to the status-6 answers.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::rc::Rc;
use std::time::Duration;

use sluice_core::config::Config;
use sluice_core::rng::Rng;
use sluice_runtime::stats::{DetailedSnapshot, WorkerStats};
use tokio::io::AsyncWriteExt;
use turmoil::net::{TcpListener, TcpStream};

use crate::RunReport;
use crate::peers;
use crate::topology::{
    SIDECAR, add_clients, add_observer, add_sidecar, add_upstreams, crash_or_partition, elapsed,
    hosts_yaml, new_sim, report, run_to_end,
};
use crate::trace::Trace;

const UPSTREAMS: [&str; 3] = ["up1", "up2", "up3"];
const LISTEN_PORT: u16 = 12_200;
const UPSTREAM_PORT: u16 = 12_200;
/// Largest one-way message latency in the simulated network.
const MAX_LATENCY: Duration = Duration::from_millis(10);
const CLIENTS: usize = 6;
/// Requests (and heartbeats) in flight per connection, at most.
const PIPELINE: usize = 4;
const TRAFFIC_UNTIL: Duration = Duration::from_millis(3_500);
/// The timeout field of every request (the route's timeout is longer, so this one applies).
const REQ_TIMEOUT: Duration = Duration::from_millis(800);
const ROUTE_TIMEOUT: Duration = Duration::from_millis(2_000);
/// An answer must arrive within its request's timeout plus this: the network both ways and
/// a tick.
const SLACK: Duration = Duration::from_millis(2 * 10 + 5);
/// Largest processing delay of an upstream.
const MAX_WORK_MS: u64 = 60;
const SERVICE: &str = "com.example.EchoService:1.0";

/// Health checks (TCP connect).
const HC_INTERVAL: Duration = Duration::from_millis(200);
const HC_TIMEOUT: Duration = Duration::from_millis(100);
const HC_JITTER_PERCENT: u32 = 10;
const UNHEALTHY_THRESHOLD: u32 = 2;
const HEALTHY_THRESHOLD: u32 = 2;
/// From the fault, the bound by which the health checks have drained the faulty host: the
/// probe in progress, then `UNHEALTHY_THRESHOLD` failing probes (interval with jitter, each
/// failing at its timeout), plus the network.
const DETECT: Duration = Duration::from_millis(
    (UNHEALTHY_THRESHOLD as u64 + 1) * (200 * (100 + HC_JITTER_PERCENT as u64) / 100)
        + 100
        + 2 * 10
        + 5,
);

/// The Bolt scenarios.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BoltScenario {
    /// One upstream crashes mid-traffic and stays down.
    UpstreamCrash,
    /// The sidecar is partitioned from one upstream (packets dropped), then repaired.
    UpstreamPartition,
}

/// What a client sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Request,
    Heartbeat,
}

#[derive(Debug)]
struct Pending {
    kind: Kind,
    version: u8,
    content: String,
    start: Duration,
}

/// An answered request or heartbeat.
#[derive(Debug)]
struct Done {
    client: usize,
    id: u32,
    kind: Kind,
    content: String,
    start: Duration,
    end: Duration,
    status: u16,
    body: String,
}

#[derive(Default)]
struct World {
    done: Vec<Done>,
    /// Violations seen as they happened (unknown ids, wrong versions, unanswered, …).
    violations: Vec<String>,
    /// content → upstreams that received it.
    received: BTreeMap<String, Vec<usize>>,
    oneway_sent: u64,
    clients_done: usize,
}

/// An independent, minimal Bolt v1/v2 codec (see `shared/protocols/bolt.md`).
pub(crate) mod wire {
    /// A decoded frame.
    #[derive(Debug)]
    pub struct Frame {
        pub version: u8,
        /// 0 response, 1 request, 2 oneway.
        pub kind: u8,
        pub cmd: u16,
        pub id: u32,
        pub codec: u8,
        /// A request's timeout field.
        pub timeout: i32,
        /// A response's status.
        pub status: u16,
        pub headers: Vec<(String, String)>,
        pub content: Vec<u8>,
        /// Bytes the frame took.
        pub len: usize,
    }

    #[allow(clippy::too_many_arguments)]
    fn put_fixed(
        out: &mut Vec<u8>,
        version: u8,
        kind: u8,
        cmd: u16,
        id: u32,
        codec: u8,
        word: &[u8],
        lens: (usize, usize, usize),
    ) {
        out.push(version);
        if version == 2 {
            out.push(1); // ver1: no CRC
        }
        out.push(kind);
        out.extend_from_slice(&cmd.to_be_bytes());
        out.push(1); // command version
        out.extend_from_slice(&id.to_be_bytes());
        out.push(codec);
        if version == 2 {
            out.push(0); // switch: no CRC
        }
        out.extend_from_slice(word);
        out.extend_from_slice(&u16::try_from(lens.0).expect("class").to_be_bytes());
        out.extend_from_slice(&u16::try_from(lens.1).expect("header").to_be_bytes());
        out.extend_from_slice(&u32::try_from(lens.2).expect("content").to_be_bytes());
    }

    fn header_map(headers: &[(&str, &str)]) -> Vec<u8> {
        let mut h = Vec::new();
        for (k, v) in headers {
            for s in [k, v] {
                h.extend_from_slice(&u32::try_from(s.len()).expect("len").to_be_bytes());
                h.extend_from_slice(s.as_bytes());
            }
        }
        h
    }

    /// A request (`kind` 1), oneway (2) or heartbeat (`cmd` 0).
    #[allow(clippy::too_many_arguments)]
    pub fn request(
        out: &mut Vec<u8>,
        version: u8,
        kind: u8,
        cmd: u16,
        id: u32,
        timeout: i32,
        class: &str,
        headers: &[(&str, &str)],
        content: &[u8],
    ) {
        let h = header_map(headers);
        put_fixed(
            out,
            version,
            kind,
            cmd,
            id,
            1,
            &timeout.to_be_bytes(),
            (class.len(), h.len(), content.len()),
        );
        out.extend_from_slice(class.as_bytes());
        out.extend_from_slice(&h);
        out.extend_from_slice(content);
    }

    /// A response: `cmd` 2 (RPC) or 0 (heartbeat reply).
    #[allow(clippy::too_many_arguments)]
    pub fn response(
        out: &mut Vec<u8>,
        version: u8,
        cmd: u16,
        id: u32,
        codec: u8,
        status: u16,
        class: &str,
        content: &[u8],
    ) {
        put_fixed(
            out,
            version,
            0,
            cmd,
            id,
            codec,
            &status.to_be_bytes(),
            (class.len(), 0, content.len()),
        );
        out.extend_from_slice(class.as_bytes());
        out.extend_from_slice(content);
    }

    fn be(b: &[u8]) -> u64 {
        b.iter().fold(0, |a, &x| (a << 8) | u64::from(x))
    }

    /// One frame from the front of `buf`: `Ok(None)` while incomplete.
    pub fn decode(buf: &[u8]) -> Result<Option<Frame>, String> {
        let Some(&version) = buf.first() else {
            return Ok(None);
        };
        let p = match version {
            1 => 0,
            2 => 1,
            other => return Err(format!("protocol byte {other:#04x}")),
        };
        if buf.len() < 2 + p {
            return Ok(None);
        }
        let kind = buf[1 + p];
        let word = if kind == 0 { 2 } else { 4 };
        let fixed = 10 + 2 * p + word + 8;
        if buf.len() < fixed {
            return Ok(None);
        }
        let crc = p == 1 && buf[1] == 2 && buf[11] & 1 == 1;
        let s = 10 + 2 * p;
        let class_len = be(&buf[s + word..s + word + 2]) as usize;
        let header_len = be(&buf[s + word + 2..s + word + 4]) as usize;
        let content_len = be(&buf[s + word + 4..s + word + 8]) as usize;
        let len = fixed + class_len + header_len + content_len + if crc { 4 } else { 0 };
        if buf.len() < len {
            return Ok(None);
        }
        let mut headers = Vec::new();
        let mut h = &buf[fixed + class_len..fixed + class_len + header_len];
        let take = |h: &mut &[u8]| -> Result<String, String> {
            if h.len() < 4 {
                return Err("truncated header map".into());
            }
            let n = be(&h[..4]);
            *h = &h[4..];
            if n == 0xFFFF_FFFF {
                return Ok(String::new());
            }
            let n = n as usize;
            if h.len() < n {
                return Err("truncated header map".into());
            }
            let s = String::from_utf8_lossy(&h[..n]).into_owned();
            *h = &h[n..];
            Ok(s)
        };
        while !h.is_empty() {
            let k = take(&mut h)?;
            let v = take(&mut h)?;
            headers.push((k, v));
        }
        let w = &buf[s..s + word];
        Ok(Some(Frame {
            version,
            kind,
            cmd: be(&buf[2 + p..4 + p]) as u16,
            id: be(&buf[5 + p..9 + p]) as u32,
            codec: buf[9 + p],
            timeout: if kind == 0 { 0 } else { be(w) as u32 as i32 },
            status: if kind == 0 { be(w) as u16 } else { 0 },
            headers,
            content: buf
                [fixed + class_len + header_len..fixed + class_len + header_len + content_len]
                .to_vec(),
            len,
        }))
    }
}

fn config(upstreams: &[IpAddr]) -> Config {
    let hosts = hosts_yaml(upstreams, UPSTREAM_PORT);
    let ms = |d: Duration| d.as_millis();
    let yaml = format!(
        r#"
listeners:
  - name: rpc_in
    address: "[::]:{LISTEN_PORT}"
    bolt:
      routes:
        - match: {{ service: "{SERVICE}" }}
          route: {{ cluster: rpc, timeout: {}ms }}
clusters:
  - name: rpc
    connect_timeout: 200ms
    lb_policy: round_robin
    health_check: {{ tcp: {{}}, interval: {}ms, timeout: {}ms, jitter: {HC_JITTER_PERCENT}%, unhealthy_threshold: {UNHEALTHY_THRESHOLD}, healthy_threshold: {HEALTHY_THRESHOLD}, no_traffic_interval: {}ms }}
    hosts:
{hosts}drain_timeout: 1s
"#,
        ms(ROUTE_TIMEOUT),
        ms(HC_INTERVAL),
        ms(HC_TIMEOUT),
        ms(HC_INTERVAL),
    );
    Config::from_yaml(&yaml).unwrap_or_else(|e| panic!("sim config invalid: {e}\n{yaml}"))
}

/// Runs one Bolt scenario for one seed.
#[must_use]
pub fn run(scenario: BoltScenario, seed: u64) -> RunReport {
    let trace = Trace::default();
    let world = Rc::new(RefCell::new(World::default()));
    let mut schedule = Rng::from_seed(seed ^ 0xb017_5eed);
    let t1 = Duration::from_millis(800 + schedule.below(700));
    let t2 = t1 + Duration::from_millis(800 + schedule.below(500));
    let victim = schedule.below(3) as usize;

    let mut sim = new_sim(seed, MAX_LATENCY);
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
        add_observer(
            &mut sim,
            move || world.borrow().clients_done == CLIENTS,
            Duration::from_millis(500),
            sidecar,
            WorkerStats::detailed,
        )
    };

    let mut violations = Vec::new();
    let repair_at = (scenario == BoltScenario::UpstreamPartition).then_some(t2);
    let fault = crash_or_partition(&trace, UPSTREAMS[victim], t1, repair_at);
    run_to_end(&mut sim, &mut violations, fault);
    drop(sim);

    let w = world.borrow();
    check(&w, final_stats.borrow().as_ref(), t1, &mut violations);
    let ok = w.done.iter().filter(|d| d.status == 0).count();
    let count = |st: u16| w.done.iter().filter(|d| d.status == st).count();
    let dropped = final_stats.borrow().as_ref().map_or(0, |s| {
        s.bolt
            .iter()
            .find(|(n, _)| *n == "responses_dropped")
            .map_or(0, |(_, v)| *v)
    });
    let summary = format!(
        "{scenario:?}: {} answered ({} heartbeats, {} oneway sent), {ok} status 0, {} status 7, {} status 16, {} status 6, {dropped} late responses dropped; victim {} at {:?}",
        w.done.len(),
        w.done.iter().filter(|d| d.kind == Kind::Heartbeat).count(),
        w.oneway_sent,
        count(7),
        count(16),
        count(6),
        UPSTREAMS[victim],
        t1
    );
    report(seed, &trace, violations, summary)
}

fn check(
    w: &World,
    stats: Option<&DetailedSnapshot>,
    fault: Duration,
    violations: &mut Vec<String>,
) {
    violations.extend(w.violations.iter().cloned());
    for (content, ups) in &w.received {
        if ups.len() > 1 {
            violations.push(format!(
                "{content} reached the upstreams {} times ({ups:?})",
                ups.len()
            ));
        }
    }
    let near_fault = |start: Duration| start + REQ_TIMEOUT >= fault && start < fault + DETECT;
    let (mut ok, mut timeouts, mut lost, mut no_host, mut heartbeats) = (0u64, 0, 0, 0, 0);
    for d in &w.done {
        let who = format!("client{} id {} ({})", d.client, d.id, d.content);
        if d.end - d.start > REQ_TIMEOUT + SLACK {
            violations.push(format!(
                "{who} answered after {:?} (started {:?}, status {})",
                d.end - d.start,
                d.start,
                d.status
            ));
        }
        if d.kind == Kind::Heartbeat {
            heartbeats += 1;
            if d.status != 0 {
                violations.push(format!(
                    "{who}: heartbeat answered with status {}",
                    d.status
                ));
            }
            continue;
        }
        match d.status {
            0 => {
                ok += 1;
                let good = d
                    .body
                    .strip_prefix(&d.content)
                    .and_then(|rest| rest.strip_prefix('@'))
                    .and_then(|up| UPSTREAMS.iter().position(|u| *u == up))
                    .is_some_and(|u| w.received.get(&d.content).is_some_and(|r| r.contains(&u)));
                if !good {
                    violations.push(format!("CROSSED: {who} answered with {:?}", d.body));
                }
            }
            7 => timeouts += 1,
            16 => lost += 1,
            6 => no_host += 1,
            other => violations.push(format!("{who}: unexpected status {other}")),
        }
        if d.status != 0 && !near_fault(d.start) {
            violations.push(format!(
                "{who} started at {:?}, away from the fault at {fault:?}, and got status {}",
                d.start, d.status
            ));
        }
    }
    let Some(s) = stats else {
        violations.push("the observer never read the sidecar's counters".into());
        return;
    };
    if s.worker.downstream_cx_active() != 0 {
        violations.push(format!(
            "{} sidecar connections still open",
            s.worker.downstream_cx_active()
        ));
    }
    let counter = |name: &str| {
        s.bolt
            .iter()
            .find(|(n, _)| *n == name)
            .map_or(u64::MAX, |(_, v)| *v)
    };
    let expect = [
        ("requests", ok + timeouts + lost),
        ("responses", ok),
        ("timeouts", timeouts),
        ("upstream_lost", lost),
        ("heartbeats", heartbeats),
        ("oneway", w.oneway_sent),
        ("overflow", 0),
        ("codec_errors", 0),
    ];
    for (name, want) in expect {
        if counter(name) != want {
            violations.push(format!(
                "bolt counter {name} = {}, the clients saw {want}",
                counter(name)
            ));
        }
    }
    if counter("no_host") + counter("no_route") != no_host {
        violations.push(format!(
            "bolt counters no_host + no_route = {}, the clients saw {no_host} status-6 answers",
            counter("no_host") + counter("no_route")
        ));
    }
}

async fn upstream(index: usize, world: Rc<RefCell<World>>, trace: Trace) -> turmoil::Result {
    let name = UPSTREAMS[index];
    let listener = TcpListener::bind(SocketAddr::new(
        IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        UPSTREAM_PORT,
    ))
    .await?;
    trace.record(elapsed(), name, "listening");
    let upstream = Upstream {
        index,
        world,
        trace,
    };
    peers::bolt::serve(listener, Rc::new(upstream), MAX_WORK_MS).await
}

/// An echo upstream that checks the fields Sluice passes through.
struct Upstream {
    index: usize,
    world: Rc<RefCell<World>>,
    trace: Trace,
}

impl peers::bolt::Upstream for Upstream {
    fn name(&self) -> &'static str {
        UPSTREAMS[self.index]
    }

    fn oneway(&self) -> bool {
        true
    }

    fn violation(&self, what: String) {
        self.world.borrow_mut().violations.push(what);
    }

    fn undecodable(&self, e: &str) {
        let name = self.name();
        self.trace
            .record(elapsed(), name, format!("codec error {e}; closing"));
        self.violation(format!("{name} received an undecodable frame: {e}"));
    }

    fn received(&self, frame: &wire::Frame, content: &str) {
        let name = self.name();
        self.trace.record(
            elapsed(),
            name,
            format!("got {content} as id {} v{}", frame.id, frame.version),
        );
        let service = frame
            .headers
            .iter()
            .any(|(k, v)| k == "service" && v == SERVICE);
        if frame.timeout != REQ_TIMEOUT.as_millis() as i32 {
            self.violation(format!(
                "{name}: {content} arrived with timeout field {}",
                frame.timeout
            ));
        }
        if !service {
            self.violation(format!(
                "{name}: {content} arrived without its service header"
            ));
        }
        self.world
            .borrow_mut()
            .received
            .entry(content.to_owned())
            .or_default()
            .push(self.index);
    }
}

type InFlight = Rc<RefCell<BTreeMap<u32, Pending>>>;

async fn client(c: usize, seed: u64, world: Rc<RefCell<World>>, trace: Trace) {
    let mut rng = Rng::from_seed(seed);
    let who = format!("client{c}");
    tokio::time::sleep(Duration::from_millis(rng.below(50))).await;
    let stream = match TcpStream::connect((SIDECAR, LISTEN_PORT)).await {
        Ok(s) => s,
        Err(e) => {
            let mut w = world.borrow_mut();
            w.violations.push(format!("{who}: connect failed: {e}"));
            w.clients_done += 1;
            return;
        }
    };
    let (rd, mut wr) = stream.into_split();
    let in_flight = InFlight::default();
    let reader = {
        let (in_flight, world, trace) = (in_flight.clone(), world.clone(), trace.clone());
        tokio::task::spawn_local(read_answers(c, rd, in_flight, world, trace))
    };
    let mut next_id = 1u32;
    let mut seq = 0u32;
    while elapsed() < TRAFFIC_UNTIL {
        tokio::time::sleep(Duration::from_millis(rng.below(25))).await;
        if in_flight.borrow().len() >= PIPELINE {
            continue;
        }
        let roll = rng.below(20);
        let version = if rng.below(6) == 0 { 2 } else { 1 };
        let id = next_id;
        next_id += 1;
        let mut out = Vec::new();
        let start = elapsed();
        if roll < 2 {
            wire::request(&mut out, version, 1, 0, id, -1, "", &[], b"");
            in_flight.borrow_mut().insert(
                id,
                Pending {
                    kind: Kind::Heartbeat,
                    version,
                    content: "heartbeat".into(),
                    start,
                },
            );
            trace.record(start, &who, format_args!("id {id} heartbeat v{version}"));
        } else {
            let content = format!("c{c}-{seq}");
            seq += 1;
            let oneway = roll == 2;
            let timeout = i32::try_from(REQ_TIMEOUT.as_millis()).expect("timeout");
            wire::request(
                &mut out,
                version,
                if oneway { 2 } else { 1 },
                1,
                id,
                timeout,
                "com.alipay.sofa.rpc.core.request.SofaRequest",
                &[("service", SERVICE), ("sofa_head_method_name", "echo")],
                content.as_bytes(),
            );
            trace.record(
                start,
                &who,
                format_args!(
                    "id {id} {} {content} v{version}",
                    if oneway { "oneway" } else { "request" }
                ),
            );
            if oneway {
                world.borrow_mut().oneway_sent += 1;
            } else {
                in_flight.borrow_mut().insert(
                    id,
                    Pending {
                        kind: Kind::Request,
                        version,
                        content,
                        start,
                    },
                );
            }
        }
        if let Err(e) = wr.write_all(&out).await {
            world
                .borrow_mut()
                .violations
                .push(format!("{who}: write failed at {:?}: {e}", elapsed()));
            break;
        }
    }
    // Wait for the answers still due, then close.
    let limit = elapsed() + REQ_TIMEOUT + SLACK + Duration::from_millis(100);
    while !in_flight.borrow().is_empty() && elapsed() < limit {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let _ = wr.shutdown().await;
    drop(wr);
    if tokio::time::timeout(Duration::from_secs(2), reader)
        .await
        .is_err()
    {
        world.borrow_mut().violations.push(format!(
            "{who}: the sidecar did not close the connection after the client did"
        ));
    }
    let mut w = world.borrow_mut();
    for (id, p) in in_flight.borrow().iter() {
        w.violations.push(format!(
            "{who} id {id} ({}, started {:?}) was never answered",
            p.content, p.start
        ));
    }
    w.clients_done += 1;
}

/// Reads the answers on one client connection and matches them with what is in flight.
async fn read_answers(
    c: usize,
    mut rd: turmoil::net::tcp::OwnedReadHalf,
    in_flight: InFlight,
    world: Rc<RefCell<World>>,
    trace: Trace,
) {
    let who = format!("client{c}");
    let mut buf = Vec::with_capacity(4096);
    loop {
        let frame = match peers::bolt::next_frame(&mut rd, &mut buf).await {
            Ok(Some(f)) => f,
            Ok(None) => return,
            Err(e) => {
                world
                    .borrow_mut()
                    .violations
                    .push(format!("{who}: undecodable answer: {e}"));
                return;
            }
        };
        let end = elapsed();
        let body = String::from_utf8_lossy(&frame.content).into_owned();
        trace.record(
            end,
            &who,
            format_args!(
                "answer id {} status {} v{} {body}",
                frame.id, frame.status, frame.version
            ),
        );
        let pending = in_flight.borrow_mut().remove(&frame.id);
        let mut w = world.borrow_mut();
        let Some(p) = pending else {
            w.violations.push(format!(
                "{who}: answer for id {} which is not in flight (status {}, body {body:?}, at {end:?})",
                frame.id, frame.status
            ));
            continue;
        };
        let want_cmd = if p.kind == Kind::Heartbeat { 0 } else { 2 };
        if frame.kind != 0
            || frame.version != p.version
            || (frame.status == 0 && frame.cmd != want_cmd)
        {
            w.violations.push(format!(
                "{who}: id {} ({}) sent as v{} {:?}, answered with v{} type {} cmd {}",
                frame.id, p.content, p.version, p.kind, frame.version, frame.kind, frame.cmd
            ));
        }
        w.done.push(Done {
            client: c,
            id: frame.id,
            kind: p.kind,
            content: p.content,
            start: p.start,
            end,
            status: frame.status,
            body,
        });
    }
}
