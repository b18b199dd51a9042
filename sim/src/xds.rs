//! xDS scenario (`xds_control_plane_fails_under_traffic`, and over the delta protocol
//! `xds_delta_control_plane_fails_under_traffic`): the sidecar takes its listener, route,
//! cluster and endpoints from an ADS management server on its own turmoil host, and keeps
//! serving HTTP clients while that server churns endpoints, crashes mid-push, is partitioned
//! from the sidecar and sends one invalid update.
//!
//! The sidecar runs the real xDS client ([`sluice_runtime::xds::run`], the loop the binary's
//! `xds` thread runs) as a task of its host, over turmoil's network
//! ([`TurmoilXdsConnector`]), with its backoff jitter seeded from the seed. Each config it
//! assembles is applied as the binary's server loop does: an engine built for it, the
//! listeners it adds bound first, then the runtime's [`Worker`] reloads to it; the reply
//! (switched or refused) goes back to the client, which ACKs or NACKs.
//!
//! The management server is the ADS service of `sluice_xds::test_server` (the one the
//! runtime's e2e tests serve; state of the world is what this scenario speaks), hosted over
//! hyper on turmoil. It serves the snapshot of a `watch` channel that the
//! simulation (outside every host) sets on a seeded schedule, so the snapshot survives the
//! server's crash the way a real control plane's store does. A push sends the four types one
//! after another, [`PUSH_SPACING`] apart, so that the crash lands mid-push.
//!
//! Schedule (each step jittered by the seed): v1 = {up1, up2}; v2 adds up3; v3 removes up1;
//! v4 = {up2, up3, up4} is pushed and the server crashes during that push, restarting
//! [`DOWN_FOR`] later; then the sidecar is partitioned from the server, v5 = {up3, up4} (up2
//! removed) is pushed during the partition, and the partition is repaired; v6 is invalid (an
//! endpoint at priority 1, which Sluice refuses), pushed once the sidecar is back (after
//! [`REPAIRED_WITHIN`]); v7 = {up1, up3, up4}. Every upstream stays
//! up all along: no request has a reason to fail.
//!
//! The partition is turmoil's `partition` and the repair its `repair`: every segment between
//! the two hosts is dropped, on the established ADS connection too, and neither end is told —
//! a black-holed connection, what a long real partition or a server host gone without a reset
//! gives. The sidecar's xDS cluster has `protocol: http2` and
//! `http2: { connection_keepalive: { interval: 300ms, timeout: 300ms } }`: the client PINGs the
//! silent connection, no answer comes, the stream ends within interval + timeout, and the client
//! retries with its backoff; after the repair the next attempt connects, the new stream's
//! requests get the server's current snapshot. Without the keepalive the client waits on the
//! silent stream for ever. Unlike TCP, a connect inside the partition is refused at once
//! (turmoil drops the SYN with the sender of its answer) rather than timing out at the
//! cluster's `connect_timeout`, so the client makes more attempts inside the partition than it
//! would over TCP, and its backoff grows faster: [`REPAIRED_WITHIN`] allows for it.
//!
//! Invariants checked after every run:
//!
//! 1. every request got a 200 carrying its own id, within its deadline — traffic went on
//!    while the server was down and while it was partitioned (requests were answered in both
//!    windows);
//! 2. never a half-applied config: the endpoints of every config applied are those of a valid
//!    snapshot;
//! 3. no request reaches a host after an applied config removed it (allowing
//!    [`DRAIN_MARGIN`] for one in flight), unless a later one added it back;
//! 4. ACKed versions per type never go backwards: the `version_info` of the requests the
//!    server received, per type, in arrival order, never decreases (across streams);
//! 5. the invalid update is NACKed (a request with `error_detail` for the endpoints type) once
//!    the server sent it (a sidecar still backing off may only ever see v7), and never ACKed
//!    nor applied;
//! 6. convergence: after the server's restart and after the repair, the sidecar comes back (its
//!    first request) within its backoff's cap and then ACKs the endpoints version served at the
//!    event (or a later one) within [`STREAM_CONVERGE`] of that return; within
//!    [`CONVERGE_WITHIN`] of the last push it ACKs the last version, and the last config
//!    applied has v7's endpoints. ([`RESUBSCRIBED_WITHIN`] and [`REPAIRED_WITHIN`] only space
//!    the schedule: the usual return times, not bounds.) A sidecar whose attempts were refused
//!    many times in a row (an attempt at the very instant of the restart, then the partition
//!    while it was still away: seeds 1510 and 1511) may wait most of [`BACKOFF_MAX`] before it
//!    returns, as Envoy's would: the run then lasts until it is back and has converged (at most
//!    [`RETURN_CAP`] after the repair), and the last push's bound counts from that return.
//!
//! Shown failing with what they guard disabled, each by a temporary change (see
//! `docs/simulation.md`): without the ADS machine's requests on a new stream, the sidecar never
//! takes a version pushed after the crash (5 and 6 fail on every seed); a translator that takes
//! a locality at priority 1 applies the invalid update (2 and 5); a sidecar that ACKs configs
//! without switching to them sends requests to removed hosts (3), and so does one that takes an
//! endpoints-only update in place ([`Worker::apply_endpoints`]) without applying it to the
//! worker's clusters (3, seed 39 of 0..40); without the keepalive in the
//! xDS cluster the sidecar stays on its silent stream after the repair (5 and 6 fail on every
//! seed; 1–4 hold).
//!
//! The server crashes strictly inside the push of v4 (one to three of its four types sent) in
//! 48 of seeds 0..64, before its first type in the other 16.
//!
//! **Delta** ([`run_delta`]): the bootstrap says `mode: delta` and the server's delta stream
//! serves the same snapshots: per type, only the resources whose version (a hash of their
//! bytes) differs from what the client has, and `removed_resources`. Since a delta push sends
//! only what changed (the endpoints, for most versions), v4 also adds a cluster `spare` (EDS,
//! one endpoint, no route to it): the push the crash cuts is a cluster response then one or two
//! endpoints responses. v5, pushed while the sidecar is cut off, removes `spare`: the removal
//! reaches the sidecar only because its new stream's `initial_resource_versions` say it has
//! `spare`. The invalid v6 is NACKed, which ends the stream (a resync) and, until v7, comes
//! again on each new stream. The server's log has each response's stream, nonce, version and
//! resources, so that invariants 4–6 read what each ACK or NACK answers by its nonce (see
//! [`check_delta`], which also checks 7: each new stream's `initial_resource_versions`).
//! Invariant 2 holds per resource there (a push's types apply as they arrive: a config may
//! have v5's clusters and v4's endpoints), and the last config applied has no `spare`.
//! Shown failing (all of seeds 0..16, each by a temporary change): with
//! `initial_resource_versions` left empty (7, and `spare` is never removed), with
//! `removed_resources` ignored (`spare` stays), without the resync after a NACK (no new stream
//! after it), with a translator that takes a locality at priority 1 (2 and 5). The delta
//! server also PINGs its connections (see [`server`]): seeds must replay.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sluice_core::config::Config;
use sluice_core::rng::Rng;
use sluice_runtime::engine::Engine;
use sluice_runtime::net::TurmoilNet;
use sluice_runtime::stats::WorkerStats;
use sluice_runtime::worker::{Worker, WorkerHooks};
use sluice_runtime::xds::{Bootstrap, TurmoilXdsConnector, Update};
use sluice_xds::envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_server::AggregatedDiscoveryServiceServer;
use sluice_xds::envoy_types::pb::google::protobuf::Any;
use sluice_xds::ads::XdsMode;
use sluice_xds::test_server::{AdsLog, AdsService, Snapshot, content_version};
use sluice_xds::fixtures::{any, assignment, eds_cluster, http_listener, route_config};
use sluice_xds::translate::ResourceType;
use turmoil::net::TcpListener;

use crate::RunReport;
use crate::peers;
use crate::peers::http::{ClientPlan, Traffic};
use crate::topology::{SIDECAR, elapsed, new_sim, report, run_to_end};
use crate::trace::Trace;

pub(crate) const UPSTREAMS: [&str; 4] = ["up1", "up2", "up3", "up4"];
pub(crate) const SERVER: &str = "xds";
const SERVER_PORT: u16 = 18_000;
pub(crate) const LISTEN_PORT: u16 = 10_000;
pub(crate) const UPSTREAM_PORT: u16 = 8_080;
/// Delta: the port of the spare cluster's one endpoint (on `up1`'s address; nothing routes
/// there, nothing listens).
const SPARE_PORT: u16 = 9_999;
const CLIENTS: usize = 3;
const TRAFFIC_FROM: Duration = Duration::from_millis(800);
const TRAFFIC_UNTIL: Duration = Duration::from_millis(7_000);
pub(crate) const CLIENT_DEADLINE: Duration = Duration::from_secs(5);
/// Between two types' responses of one push.
pub(crate) const PUSH_SPACING: Duration = Duration::from_millis(20);
const DOWN_FOR: Duration = Duration::from_millis(700);
const PARTITION_FOR: Duration = Duration::from_millis(900);
/// The xDS cluster's `http2.connection_keepalive`: a PING after this long without a frame
/// from the server...
const KEEPALIVE_INTERVAL: Duration = Duration::from_millis(300);
/// ...and the connection closed when it is not answered within this.
const KEEPALIVE_TIMEOUT: Duration = Duration::from_millis(300);
/// How long after its removal a request may still reach a removed host (one picked just before
/// the switch: an upstream takes at most 120 ms) plus latencies.
const DRAIN_MARGIN: Duration = Duration::from_millis(300);
/// The bound on taking the version served after the server's restart: the crash ends a stream
/// that delivered responses, so the backoff starts again at 250 ms and the attempts while the
/// server is down (700 ms) wait at most 250, 500 and 1000 ms: the last one starts at most
/// ~1.05 s after the restart, then a stream's setup and one push (4 types, 20 ms apart).
const RESUBSCRIBED_WITHIN: Duration = Duration::from_millis(1_500);
/// The convergence bound after the last push (the stream is healthy then): a stream's setup
/// and one push, with room.
const CONVERGE_WITHIN: Duration = Duration::from_millis(3_000);
/// How soon a new stream takes the version served: its setup and one push (4 types, 20 ms
/// apart), with room — measured from the sidecar's return (its first request after the event),
/// so that the backoff's jitter (unbounded in the number of quick failures it allows) is no
/// part of it.
const STREAM_CONVERGE: Duration = Duration::from_millis(1_000);
/// The ADS client's longest wait between attempts (runtime/src/xds.rs `BACKOFF_MAX`).
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// The latest the sidecar may come back after the restart or the repair: a silent stream ends
/// within the keepalive's interval + timeout, and no wait between attempts exceeds the cap.
const RETURN_CAP: Duration = BACKOFF_MAX
    .saturating_add(KEEPALIVE_INTERVAL)
    .saturating_add(KEEPALIVE_TIMEOUT);
/// The convergence bound after the repair. The keepalive ends the silent stream within
/// [`KEEPALIVE_INTERVAL`] + [`KEEPALIVE_TIMEOUT`] (+ a latency) of the partition, so ~0.3–0.63 s
/// into it; the client then retries with its backoff, jittered below 250, 500, 1000, 2000 ms…,
/// and each attempt inside the partition fails at once (turmoil drops the SYN and the connect
/// is refused). k failed attempts leave a wait below 250 ms · 2^k after the repair; in the
/// ≤ 0.6 s left, seeds 0..256 see at most four (the first request of the new stream comes at
/// most 3.5 s after the repair): a wait below 4 s, then a stream's setup and one push (4 types,
/// 20 ms apart). A fifth needs four jittered waits under ~0.6 s in all: not an absolute bound.
const REPAIRED_WITHIN: Duration = Duration::from_millis(4_500);

// ---------------------------------------------------------------------------------------------
// The management server.

/// The server's host: accepts HTTP/2 connections and serves the ADS service on each (again
/// after a restart: the snapshot lives outside the host).
///
/// Delta: the server PINGs its connections too (the sidecar's keepalive settings), so that it
/// closes the black-holed one during the partition. Left open, its stream would answer the
/// next snapshot change beside the sidecar's new one, and which of the two writes first —
/// hence which draws which latency from the simulation's RNG — is the order in which a
/// `tokio::sync::watch` wakes its waiters: random (tokio's thread RNG, unseeded without
/// `tokio_unstable`), so a seed would not replay. (The state-of-the-world twin keeps its
/// schedule: its dead stream is written after the repair and reset.)
pub(crate) async fn server(service: AdsService, trace: Trace, keepalive: bool) -> turmoil::Result {
    let listener = TcpListener::bind(SocketAddr::new(
        IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        SERVER_PORT,
    ))
    .await?;
    trace.record(elapsed(), SERVER, "listening");
    let service = AggregatedDiscoveryServiceServer::new(service);
    loop {
        let (stream, _) = listener.accept().await?;
        let service = hyper_util::service::TowerToHyperService::new(service.clone());
        tokio::spawn(async move {
            let mut builder =
                hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
            if keepalive {
                builder
                    .http2()
                    .timer(hyper_util::rt::TokioTimer::new())
                    .keep_alive_interval(KEEPALIVE_INTERVAL)
                    .keep_alive_timeout(KEEPALIVE_TIMEOUT);
            }
            let _ = builder
                .http2_only()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await;
        });
    }
}

/// The resources of a snapshot whose cluster `app` has `hosts`; `invalid`: its locality is
/// at priority 1, which Sluice refuses (one priority level only); `spare`: with cluster
/// `spare` (EDS, one endpoint at `spare`, no route to it).
fn resources(hosts: &[IpAddr], invalid: bool, spare: Option<IpAddr>) -> BTreeMap<String, Vec<Any>> {
    let ips: Vec<String> = hosts.iter().map(ToString::to_string).collect();
    let refs: Vec<(&str, u32, i32)> = ips
        .iter()
        .map(|ip| (ip.as_str(), u32::from(UPSTREAM_PORT), 0))
        .collect();
    let mut endpoints = assignment("app", &refs);
    if invalid {
        endpoints.endpoints[0].priority = 1;
    }
    let mut clusters = vec![any(&eds_cluster("app"))];
    let mut assignments = vec![any(&endpoints)];
    if let Some(ip) = spare {
        let ip = ip.to_string();
        clusters.push(any(&eds_cluster("spare")));
        assignments.push(any(&assignment(
            "spare",
            &[(ip.as_str(), u32::from(SPARE_PORT), 0)],
        )));
    }
    BTreeMap::from([
        (ResourceType::Cluster.type_url().to_owned(), clusters),
        (ResourceType::Endpoints.type_url().to_owned(), assignments),
        (
            ResourceType::Listener.type_url().to_owned(),
            vec![any(&http_listener(
                "in",
                "::",
                u32::from(LISTEN_PORT),
                "routes",
            ))],
        ),
        (
            ResourceType::Route.type_url().to_owned(),
            vec![any(&route_config("routes", "app"))],
        ),
    ])
}

// ---------------------------------------------------------------------------------------------
// The world.

#[derive(Default)]
pub(crate) struct World {
    /// What the clients and upstreams did.
    pub(crate) traffic: Traffic,
    /// Each config the sidecar switched to: when, and the addresses of cluster `app`'s hosts.
    pub(crate) applied: Vec<(Duration, BTreeSet<SocketAddr>)>,
    /// The dynamic clusters of each config in `applied` (same index).
    pub(crate) applied_clusters: Vec<BTreeSet<String>>,
    /// Configs the sidecar could not switch to.
    pub(crate) refused: Vec<String>,
}

impl AsMut<Traffic> for World {
    fn as_mut(&mut self) -> &mut Traffic {
        &mut self.traffic
    }
}

pub(crate) type Shared = Rc<RefCell<World>>;

/// One step of the schedule: at `at`, the server serves `hosts` (indices in [`UPSTREAMS`]) as
/// `version`, in a valid update or not.
struct Push {
    at: Duration,
    version: u64,
    hosts: Vec<usize>,
    invalid: bool,
    /// Delta: with cluster `spare` (v4 only; v5, pushed during the partition, removes it).
    spare: bool,
}

impl Push {
    fn valid(&self) -> bool {
        !self.invalid
    }

    /// The dynamic clusters of its config.
    fn clusters(&self) -> BTreeSet<String> {
        let mut c = BTreeSet::from(["app".to_owned()]);
        if self.spare {
            c.insert("spare".to_owned());
        }
        c
    }

    fn addresses(&self, ips: &[IpAddr]) -> BTreeSet<SocketAddr> {
        self.hosts
            .iter()
            .map(|&h| SocketAddr::new(ips[h], UPSTREAM_PORT))
            .collect()
    }
}

struct Plan {
    pushes: Vec<Push>,
    crash: Duration,
    restart: Duration,
    partition: Duration,
    repair: Duration,
}

fn plan(seed: u64, mode: XdsMode) -> Plan {
    let mut r = Rng::from_seed(seed ^ 0x0ad5_c0de);
    let mut j = |base: u64, spread: u64| Duration::from_millis(base + r.below(spread));
    let v2 = j(1_200, 300);
    let v3 = v2 + j(500, 300);
    let v4 = v3 + j(500, 300);
    // Within the push of v4 (four types, PUSH_SPACING apart, after a latency).
    let crash = v4 + j(5, 60);
    let restart = crash + DOWN_FOR;
    // Once the sidecar has had time to reconnect and take v4 (see RESUBSCRIBED_WITHIN).
    let partition = restart + RESUBSCRIBED_WITHIN + j(0, 300);
    let v5 = partition + j(150, 300);
    let repair = partition + PARTITION_FOR;
    // Once the sidecar is back (see REPAIRED_WITHIN): it sees the invalid update.
    let v6 = repair + REPAIRED_WITHIN + j(0, 300);
    let v7 = v6 + j(400, 300);
    let p = |at, version, hosts: &[usize], invalid| Push {
        at,
        version,
        hosts: hosts.to_vec(),
        invalid,
        spare: mode == XdsMode::Delta && version == 4,
    };
    Plan {
        pushes: vec![
            p(Duration::ZERO, 1, &[0, 1], false),
            p(v2, 2, &[0, 1, 2], false),
            p(v3, 3, &[1, 2], false),
            p(v4, 4, &[1, 2, 3], false),
            p(v5, 5, &[2, 3], false),
            // Invalid (priority 1), with endpoints no valid version has.
            p(v6, 6, &[0, 2], true),
            p(v7, 7, &[0, 2, 3], false),
        ],
        crash,
        restart,
        partition,
        repair,
    }
}

// ---------------------------------------------------------------------------------------------
// The run.

/// Runs the xDS scenario for one seed (state of the world).
#[must_use]
pub fn run(seed: u64) -> RunReport {
    run_mode(XdsMode::Sotw, seed)
}

/// Runs the xDS scenario for one seed over the delta protocol
/// (`xds_delta_control_plane_fails_under_traffic`).
#[must_use]
pub fn run_delta(seed: u64) -> RunReport {
    run_mode(XdsMode::Delta, seed)
}

fn run_mode(mode: XdsMode, seed: u64) -> RunReport {
    let trace = Trace::default();
    let world: Shared = Rc::default();
    let plan = plan(seed, mode);
    let mut sim = new_sim(seed, Duration::from_millis(15));
    sim.set_max_message_latency(Duration::from_millis(15));

    for (i, name) in UPSTREAMS.iter().enumerate() {
        let (world, trace) = (world.clone(), trace.clone());
        sim.host(*name, move || upstream(i, world.clone(), trace.clone()));
    }
    let ips: Vec<IpAddr> = UPSTREAMS.iter().map(|u| sim.lookup(*u)).collect();
    let snapshot = |push: &Push| Snapshot {
        version: push.version,
        resources: resources(
            &push.hosts.iter().map(|&h| ips[h]).collect::<Vec<_>>(),
            push.invalid,
            push.spare.then_some(ips[0]),
        ),
    };
    let (snapshots, receiver) = tokio::sync::watch::channel(snapshot(&plan.pushes[0]));
    let log = Arc::new(Mutex::new(AdsLog::default()));
    {
        let service = AdsService::new(receiver, log.clone(), PUSH_SPACING, elapsed);
        let trace = trace.clone();
        let keepalive = mode == XdsMode::Delta;
        sim.host(SERVER, move || {
            server(service.clone(), trace.clone(), keepalive)
        });
    }
    {
        let (world, trace) = (world.clone(), trace.clone());
        sim.host(SIDECAR, move || {
            sidecar(seed, mode, None, world.clone(), trace.clone())
        });
    }
    for c in 0..CLIENTS {
        let (world, trace) = (world.clone(), trace.clone());
        let client_seed = seed.wrapping_mul(131).wrapping_add(c as u64);
        sim.client(format!("client{c}"), async move {
            client(c, client_seed, world, trace).await;
            Ok(())
        });
    }
    // The run lasts until the last push has had time to converge — and, when the sidecar is
    // still waiting out its backoff after the repair then (attempts refused in a row, the
    // restart's and the partition's, grow the wait towards BACKOFF_MAX, as Envoy's does), until
    // it is back and has converged as a fresh stream, or its backoff's cap has passed.
    let run_until = plan.pushes.last().expect("pushes").at + CONVERGE_WITHIN;
    // Delta: likewise after the last NACK, which ends its stream (a resync): until the
    // sidecar is back on a new stream and has converged, or the backoff's cap has passed.
    {
        let log = log.clone();
        let repair = plan.repair;
        sim.client("clock", async move {
            tokio::time::sleep(run_until).await;
            loop {
                let (since, back) = {
                    let log = log.lock().expect("ads log");
                    match mode {
                        XdsMode::Sotw => (repair, returned(&log, mode, repair)),
                        XdsMode::Delta => match last_nack(&log) {
                            Some((at, stream)) if at >= repair => {
                                (at, first_request_after_stream(&log, stream))
                            }
                            _ => (repair, returned(&log, mode, repair)),
                        },
                    }
                };
                match back {
                    Some(t) => {
                        let until = t + STREAM_CONVERGE;
                        tokio::time::sleep(until.saturating_sub(elapsed())).await;
                        break;
                    }
                    None if elapsed() >= since + RETURN_CAP => break,
                    None => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
            Ok(())
        });
    }

    let mut violations = Vec::new();
    let mut next = 1;
    let (mut crashed, mut restarted, mut parted, mut repaired) = (false, false, false, false);
    let t = trace.clone();
    run_to_end(&mut sim, &mut violations, |sim, now| {
        while next < plan.pushes.len() && now >= plan.pushes[next].at {
            let push = &plan.pushes[next];
            snapshots.send_replace(snapshot(push));
            t.record(now, "SIM", format!("push v{}", push.version));
            next += 1;
        }
        if !crashed && now >= plan.crash {
            sim.crash(SERVER);
            t.record(now, "SIM", "crash the management server");
            crashed = true;
        }
        if !restarted && now >= plan.restart {
            sim.bounce(SERVER);
            t.record(now, "SIM", "restart the management server");
            restarted = true;
        }
        if !parted && now >= plan.partition {
            // Every segment between the two dropped, neither end told: the ADS connection
            // goes silent, and the sidecar's keepalive PINGs go unanswered.
            sim.partition(SIDECAR, SERVER);
            t.record(now, "SIM", "partition sidecar / management server");
            parted = true;
        }
        if !repaired && now >= plan.repair {
            sim.repair(SIDECAR, SERVER);
            t.record(now, "SIM", "repair sidecar / management server");
            repaired = true;
        }
    });
    drop(sim);

    let w = world.borrow();
    let log = log.lock().unwrap();
    match mode {
        XdsMode::Sotw => check(&w, &log, &plan, &ips, &mut violations),
        XdsMode::Delta => check_delta(&w, &log, &plan, &ips, &mut violations),
    }
    let ok = w
        .traffic
        .requests
        .iter()
        .filter(|r| matches!(r.outcome, Ok(200)))
        .count();
    let per_host: Vec<usize> = (0..UPSTREAMS.len())
        .map(|i| w.traffic.received.get(&i).map_or(0, Vec::len))
        .collect();
    // How much of the push cut by the crash went out (the crash lands within it).
    let cut = &plan.pushes[3];
    // How long after the repair the sidecar was back: its first request to the server (the
    // keepalive ended the silent stream during the partition, a new one opens after it).
    let back = returned(&log, mode, plan.repair).map(|at| at - plan.repair);
    let summary = match mode {
        XdsMode::Sotw => {
            let cut_sent = log
                .sent
                .iter()
                .filter(|(at, _, v)| *v == cut.version && *at < plan.crash)
                .count();
            format!(
                "xds: {} requests, {ok} 200, received per host {per_host:?}, {} configs applied, {} ADS \
                 streams, {} requests to the server, {cut_sent}/4 types of v{} sent before the crash, \
                 back {back:?} after the repair",
                w.traffic.requests.len(),
                w.applied.len(),
                log.streams,
                log.requests.len(),
                cut.version
            )
        }
        XdsMode::Delta => {
            let cut_sent = log
                .delta_sent
                .iter()
                .filter(|d| d.version == cut.version && d.at < plan.crash)
                .count();
            let nacks = log
                .delta_requests
                .iter()
                .filter(|(_, _, r)| r.error_detail.is_some())
                .count();
            format!(
                "xds delta: {} requests, {ok} 200, received per host {per_host:?}, {} configs \
                 applied, {} ADS streams, {} requests to the server ({nacks} NACKs), {} responses, \
                 {cut_sent} responses of v{} sent before the crash, back {back:?} after the repair",
                w.traffic.requests.len(),
                w.applied.len(),
                log.streams,
                log.delta_requests.len(),
                log.delta_sent.len(),
                cut.version
            )
        }
    };
    report(seed, &trace, violations, summary)
}

/// Invariants 1–3 and the last config applied, the same on both protocols.
fn check_common(w: &World, plan: &Plan, ips: &[IpAddr], violations: &mut Vec<String>) {
    // 1. Every request 200, traffic through the outage and the partition.
    if w.traffic.requests.len() != w.traffic.started {
        violations.push(format!(
            "{} of {} requests finished",
            w.traffic.requests.len(),
            w.traffic.started
        ));
    }
    for r in &w.traffic.requests {
        if r.outcome != Ok(200) {
            violations.push(format!(
                "{} started at {:?} and got {:?} (every upstream was up)",
                r.id, r.start, r.outcome
            ));
        }
    }
    for (what, from, to) in [
        ("the management server was down", plan.crash, plan.restart),
        (
            "the sidecar was partitioned from it",
            plan.partition,
            plan.repair,
        ),
    ] {
        let answered = w
            .traffic
            .requests
            .iter()
            .filter(|r| r.end >= from && r.end < to && r.outcome == Ok(200))
            .count();
        if answered == 0 {
            violations.push(format!(
                "no request answered while {what} ({from:?}..{to:?}): traffic stopped"
            ));
        }
    }
    // 2. Never a half-applied config.
    // (Per resource: a push's types are applied as they arrive, so a config may hold the
    // clusters of one version and the endpoints of the one before.)
    let valid: Vec<BTreeSet<SocketAddr>> = plan
        .pushes
        .iter()
        .filter(|p| p.valid())
        .map(|p| p.addresses(ips))
        .collect();
    for (at, hosts) in &w.applied {
        if !valid.contains(hosts) {
            violations.push(format!(
                "at {at:?} a config with endpoints {hosts:?} was applied: no valid snapshot has them"
            ));
        }
    }
    let valid: Vec<BTreeSet<String>> = plan
        .pushes
        .iter()
        .filter(|p| p.valid())
        .map(Push::clusters)
        .collect();
    for ((at, _), clusters) in w.applied.iter().zip(&w.applied_clusters) {
        if !valid.contains(clusters) {
            violations.push(format!(
                "at {at:?} a config with clusters {clusters:?} was applied: no valid snapshot has them"
            ));
        }
    }
    for why in &w.refused {
        violations.push(format!("a config from the server was refused: {why}"));
    }
    // 3. No request to a host after its removal (unless added back).
    let serving = |t: Duration| {
        w.applied
            .iter()
            .rev()
            .find(|(at, _)| *at <= t)
            .map(|(_, h)| h)
    };
    for (&host, times) in &w.traffic.received {
        let addr = SocketAddr::new(ips[host], UPSTREAM_PORT);
        for &t in times {
            let in_window = w
                .applied
                .iter()
                .any(|(at, h)| *at + DRAIN_MARGIN >= t && *at <= t && h.contains(&addr));
            let before = serving(t.saturating_sub(DRAIN_MARGIN)).is_some_and(|h| h.contains(&addr));
            let now = serving(t).is_some_and(|h| h.contains(&addr));
            if !(in_window || before || now) {
                violations.push(format!(
                    "{} received a request at {t:?}, after an applied config removed it",
                    UPSTREAMS[host]
                ));
            }
        }
    }
    // The last config applied is the last version's: its endpoints, and (delta) not the
    // cluster an update sent while the sidecar was cut off removed.
    let last_push = plan.pushes.last().expect("pushes");
    if w.applied.last().map(|(_, h)| h) != Some(&last_push.addresses(ips)) {
        violations.push(format!(
            "the last config applied has endpoints {:?}, not v{}'s",
            w.applied.last().map(|(_, h)| h),
            last_push.version
        ));
    }
    if w.applied_clusters.last() != Some(&last_push.clusters()) {
        violations.push(format!(
            "the last config applied has clusters {:?}, not v{}'s {:?}",
            w.applied_clusters.last(),
            last_push.version,
            last_push.clusters()
        ));
    }
}

/// Invariants 4–6, state of the world: from the `version_info` of the requests.
fn check(w: &World, log: &AdsLog, plan: &Plan, ips: &[IpAddr], violations: &mut Vec<String>) {
    check_common(w, plan, ips, violations);
    // 4. ACKed versions never go backwards, per type.
    let mut last: BTreeMap<&str, (u64, Duration)> = BTreeMap::new();
    for (at, r) in &log.requests {
        if r.version_info.is_empty() {
            continue;
        }
        let Ok(v) = r.version_info.parse::<u64>() else {
            violations.push(format!("a request carries version {:?}", r.version_info));
            continue;
        };
        if let Some(&(before, when)) = last.get(r.type_url.as_str())
            && v < before
        {
            violations.push(format!(
                "{}: version {v} at {at:?} after {before} at {when:?}: went backwards",
                r.type_url
            ));
        }
        last.insert(r.type_url.as_str(), (v, *at));
    }
    // 5. The invalid update NACKed once the sidecar got it, never ACKed or applied.
    let endpoints = ResourceType::Endpoints.type_url();
    let bad = &plan.pushes[5];
    // Sent on a stream of the sidecar's (one it opened after the repair: the server may write
    // into the dead one of before until the reset tells it).
    let back_after_repair = log
        .requests
        .iter()
        .find(|(t, _)| *t >= plan.repair)
        .map(|(t, _)| *t);
    let delivered = log.sent.iter().any(|(at, t, v)| {
        t == endpoints && *v == bad.version && back_after_repair.is_some_and(|b| *at >= b)
    });
    let nacked = log
        .requests
        .iter()
        .any(|(at, r)| *at >= bad.at && r.type_url == endpoints && r.error_detail.is_some());
    if delivered && !nacked {
        violations.push(format!("the invalid v{} was not NACKed", bad.version));
    }
    if log.requests.iter().any(|(_, r)| {
        r.type_url == endpoints
            && r.version_info == bad.version.to_string()
            && r.error_detail.is_none()
    }) {
        // The other types of v6 are valid (and ACKed): versions are per type.
        violations.push(format!(
            "the invalid v{}'s endpoints were ACKed",
            bad.version
        ));
    }
    // 6. Convergence within the bound after the restart, the repair and the last push.
    let acked = |version: u64, by: Duration| {
        log.requests.iter().any(|(at, r)| {
            *at <= by
                && r.type_url == endpoints
                && r.error_detail.is_none()
                && r.version_info.parse::<u64>().is_ok_and(|v| v >= version)
        })
    };
    let last_push = plan.pushes.last().expect("pushes");
    let serving_at = |at: Duration| {
        plan.pushes
            .iter()
            .filter(|p| p.at <= at && p.valid())
            .map(|p| p.version)
            .max()
            .unwrap_or(1)
    };
    // After the restart and the repair: the sidecar is back (its first request to the server
    // after the event) within its backoff's cap — the wait before an attempt is jittered below
    // 250 ms · 2^k after k failures, capped at BACKOFF_MAX — and from then on converges as a
    // fresh stream does, within STREAM_CONVERGE.
    for (what, at) in [
        ("the server's restart", plan.restart),
        ("the repair", plan.repair),
    ] {
        let back = log.requests.iter().find(|(t, _)| *t >= at).map(|(t, _)| *t);
        match back {
            None => violations.push(format!("the sidecar never came back after {what} ({at:?})")),
            Some(t) if t - at > RETURN_CAP => {
                violations.push(format!(
                    "the sidecar came back {:?} after {what}: past its backoff's cap",
                    t - at
                ));
            }
            Some(t) => {
                let serving = serving_at(at);
                if !acked(serving, t + STREAM_CONVERGE) {
                    violations.push(format!(
                        "v{serving} (served at {what}, {at:?}) not ACKed within \
                         {STREAM_CONVERGE:?} of the sidecar's return at {t:?}"
                    ));
                }
            }
        }
    }
    // A sidecar still backing off at the last push (back after it) converges as a fresh
    // stream does, from its return.
    let serving = serving_at(last_push.at);
    let by = (last_push.at + CONVERGE_WITHIN)
        .max(back_after_repair.map_or(Duration::ZERO, |t| t + STREAM_CONVERGE));
    if !acked(serving, by) {
        violations.push(format!(
            "v{serving} (served at the last push, {:?}) not ACKed by {by:?}",
            last_push.at,
        ));
    }
}

/// The sidecar's first request to the server at or after `at` (its return after an event).
fn returned(log: &AdsLog, mode: XdsMode, at: Duration) -> Option<Duration> {
    match mode {
        XdsMode::Sotw => log.requests.iter().find(|(t, _)| *t >= at).map(|(t, _)| *t),
        XdsMode::Delta => log
            .delta_requests
            .iter()
            .find(|(t, _, _)| *t >= at)
            .map(|(t, _, _)| *t),
    }
}

/// Delta: the last NACK the server received: when, and on which stream.
fn last_nack(log: &AdsLog) -> Option<(Duration, usize)> {
    log.delta_requests
        .iter()
        .rev()
        .find(|(_, _, r)| r.error_detail.is_some())
        .map(|(t, s, _)| (*t, *s))
}

/// Delta: the first request of a stream opened after `stream` (the return after a resync).
fn first_request_after_stream(log: &AdsLog, stream: usize) -> Option<Duration> {
    log.delta_requests
        .iter()
        .find(|(_, s, _)| *s > stream)
        .map(|(t, _, _)| *t)
}

/// Per type URL, each resource's version (name → version).
type Versions = BTreeMap<String, BTreeMap<String, String>>;

/// Per type URL, the version a delta stream gives each resource of `push`'s snapshot.
fn content_versions(push: &Push, ips: &[IpAddr]) -> Versions {
    let hosts: Vec<IpAddr> = push.hosts.iter().map(|&h| ips[h]).collect();
    resources(&hosts, push.invalid, push.spare.then_some(ips[0]))
        .into_iter()
        .map(|(type_url, anys)| {
            let versions = anys
                .iter()
                .map(|a| {
                    let name = sluice_xds::fixtures::resource_name(a).expect("named");
                    (name, content_version(a))
                })
                .collect();
            (type_url, versions)
        })
        .collect()
}

/// Invariants 4–6 over the delta protocol, and 7, its own. A delta request has no
/// `version_info`: what an ACK or NACK answers is the response of its nonce on its stream (the
/// server's log), and what a new stream starts from is its `initial_resource_versions`.
///
/// 7. `initial_resource_versions`: the first cluster and endpoints requests of every stream
///    after the first name every cluster serving (those of the last config applied, or of the
///    one before while an apply completes) and the endpoints of `app` serving, each at the
///    version the server gave it, and besides only clusters accepted but still warming (sent
///    by the server at that version, not serving: `spare` waiting for its endpoints when the
///    crash cut the push) — so that the server sends only what changed while the stream was
///    down, and the removals (`spare`, removed by v5 while the sidecar is cut off, reaches it
///    only so, warming or not: the last config's clusters in [`check_common`]).
fn check_delta(w: &World, log: &AdsLog, plan: &Plan, ips: &[IpAddr], violations: &mut Vec<String>) {
    use sluice_xds::test_server::DeltaSent;
    check_common(w, plan, ips, violations);
    let endpoints = ResourceType::Endpoints.type_url();
    let clusters = ResourceType::Cluster.type_url();
    let sent: BTreeMap<(usize, &str), &DeltaSent> = log
        .delta_sent
        .iter()
        .map(|d| ((d.stream, d.nonce.as_str()), d))
        .collect();
    // Each ACK and NACK with the response it answers.
    let mut answers: Vec<(Duration, bool, &DeltaSent)> = Vec::new();
    for (at, stream, r) in &log.delta_requests {
        if r.response_nonce.is_empty() {
            continue;
        }
        match sent.get(&(*stream, r.response_nonce.as_str())) {
            Some(d) if d.type_url == r.type_url => answers.push((*at, r.error_detail.is_none(), d)),
            _ => violations.push(format!(
                "at {at:?} a {} request answers nonce {:?}, which stream {stream} never sent",
                r.type_url, r.response_nonce
            )),
        }
    }
    let carries_app = |d: &DeltaSent| d.resources.iter().any(|(n, _)| n == "app");
    // 4. ACKed versions never go backwards, per type.
    let mut last: BTreeMap<&str, (u64, Duration)> = BTreeMap::new();
    for (at, ack, d) in &answers {
        if !ack {
            continue;
        }
        if let Some(&(before, when)) = last.get(d.type_url.as_str())
            && d.version < before
        {
            violations.push(format!(
                "{}: v{} ACKed at {at:?} after v{before} at {when:?}: went backwards",
                d.type_url, d.version
            ));
        }
        last.insert(d.type_url.as_str(), (d.version, *at));
    }
    // 5. The invalid update NACKed once the sidecar got it, never ACKed or applied.
    let bad = &plan.pushes[5];
    let back_after_repair = returned(log, XdsMode::Delta, plan.repair);
    let delivered = log.delta_sent.iter().any(|d| {
        d.type_url == endpoints
            && d.version == bad.version
            && carries_app(d)
            && back_after_repair.is_some_and(|b| d.at >= b)
    });
    let nacked = answers.iter().any(|(_, ack, d)| {
        !ack && d.type_url == endpoints && d.version == bad.version && carries_app(d)
    });
    if delivered && !nacked {
        violations.push(format!("the invalid v{} was not NACKed", bad.version));
    }
    if answers.iter().any(|(_, ack, d)| {
        *ack && d.type_url == endpoints && d.version == bad.version && carries_app(d)
    }) {
        violations.push(format!(
            "the invalid v{}'s endpoints were ACKed",
            bad.version
        ));
    }
    // 6. Convergence. The sidecar has taken version v once it ACKed `app`'s endpoints of v
    // (or later), or named them in a new stream's `initial_resource_versions` (taken while
    // the server was away: a delta server then sends them no more, and nothing is ACKed).
    let versions: Vec<(u64, Versions)> = plan
        .pushes
        .iter()
        .map(|p| (p.version, content_versions(p, ips)))
        .collect();
    let app_version_of = |content: &str| {
        plan.pushes.iter().zip(&versions).find_map(|(p, (_, v))| {
            (p.valid() && v[endpoints].get("app").is_some_and(|c| c == content))
                .then_some(p.version)
        })
    };
    // An ACK accepts the response of its nonce and the earlier ones of its type on its stream
    // not NACKed (responses that arrive during an apply are folded and answered together).
    let nacked_responses: BTreeSet<(usize, &str)> = answers
        .iter()
        .filter(|(_, ack, _)| !ack)
        .map(|(_, _, d)| (d.stream, d.nonce.as_str()))
        .collect();
    let nonce_number = |d: &DeltaSent| d.nonce.parse::<u64>().unwrap_or(u64::MAX);
    // The latest version of `app`'s endpoints an ACK accepts.
    let accepted_app = |ack: &DeltaSent| -> Option<u64> {
        log.delta_sent
            .iter()
            .filter(|d| {
                d.stream == ack.stream
                    && d.type_url == ack.type_url
                    && nonce_number(d) <= nonce_number(ack)
                    && carries_app(d)
                    && !nacked_responses.contains(&(d.stream, d.nonce.as_str()))
            })
            .map(|d| d.version)
            .max()
    };
    let took = |version: u64, by: Duration| {
        answers.iter().any(|(at, ack, d)| {
            *at <= by
                && *ack
                && d.type_url == endpoints
                && accepted_app(d).is_some_and(|v| v >= version)
        }) || log.delta_requests.iter().any(|(at, _, r)| {
            *at <= by
                && r.type_url == endpoints
                && r.initial_resource_versions
                    .get("app")
                    .and_then(|c| app_version_of(c))
                    .is_some_and(|v| v >= version)
        })
    };
    let serving_at = |at: Duration| {
        plan.pushes
            .iter()
            .filter(|p| p.at <= at && p.valid())
            .map(|p| p.version)
            .max()
            .unwrap_or(1)
    };
    for (what, at) in [
        ("the server's restart", plan.restart),
        ("the repair", plan.repair),
    ] {
        match returned(log, XdsMode::Delta, at) {
            None => violations.push(format!("the sidecar never came back after {what} ({at:?})")),
            Some(t) if t - at > RETURN_CAP => {
                violations.push(format!(
                    "the sidecar came back {:?} after {what}: past its backoff's cap",
                    t - at
                ));
            }
            Some(t) => {
                let serving = serving_at(at);
                if !took(serving, t + STREAM_CONVERGE) {
                    violations.push(format!(
                        "v{serving} (served at {what}, {at:?}) not taken within \
                         {STREAM_CONVERGE:?} of the sidecar's return at {t:?}"
                    ));
                }
            }
        }
    }
    // A NACK ends its stream (a resync): the sidecar is back on a new one within its
    // backoff's cap.
    let resync = last_nack(log).map(|(at, stream)| (at, first_request_after_stream(log, stream)));
    match resync {
        Some((at, None)) => violations.push(format!(
            "no new stream after the NACK at {at:?}: the resync never came"
        )),
        Some((at, Some(t))) if t - at > RETURN_CAP => violations.push(format!(
            "the sidecar came back {:?} after the NACK at {at:?}: past its backoff's cap",
            t - at
        )),
        _ => {}
    }
    let last_push = plan.pushes.last().expect("pushes");
    let serving = serving_at(last_push.at);
    let by = (last_push.at + CONVERGE_WITHIN)
        .max(back_after_repair.map_or(Duration::ZERO, |t| t + STREAM_CONVERGE))
        .max(
            resync
                .and_then(|(_, t)| t)
                .map_or(Duration::ZERO, |t| t + STREAM_CONVERGE),
        );
    if !took(serving, by) {
        violations.push(format!(
            "v{serving} (served at the last push, {:?}) not ACKed by {by:?}",
            last_push.at,
        ));
    }
    // 7. A new stream's initial_resource_versions name what serves, at its versions.
    // The versions of the resources of an applied config: per type, name → version.
    let spare_versions = versions
        .iter()
        .find(|(v, _)| *v == 4)
        .map(|(_, v)| v.clone())
        .expect("v4");
    let expected = |applied: usize| -> Option<BTreeMap<&str, BTreeMap<String, String>>> {
        let (_, hosts) = &w.applied[applied];
        let names = &w.applied_clusters[applied];
        let app = plan
            .pushes
            .iter()
            .zip(&versions)
            .find(|(p, _)| p.valid() && p.addresses(ips) == *hosts)
            .map(|(_, (_, v))| v[endpoints]["app"].clone())?;
        let mut eds = BTreeMap::from([("app".to_owned(), app)]);
        let mut cds = BTreeMap::new();
        for name in names {
            cds.insert(name.clone(), spare_versions[clusters].get(name)?.clone());
            if name != "app" {
                eds.insert(name.clone(), spare_versions[endpoints].get(name)?.clone());
            }
        }
        Some(BTreeMap::from([(clusters, cds), (endpoints, eds)]))
    };
    let first_stream = log.delta_requests.first().map_or(0, |(_, s, _)| *s);
    let mut seen: BTreeSet<(usize, &str)> = BTreeSet::new();
    for (at, stream, r) in &log.delta_requests {
        let t = r.type_url.as_str();
        if *stream == first_stream
            || (t != clusters && t != endpoints)
            || !seen.insert((*stream, t))
        {
            continue;
        }
        let named: BTreeMap<String, String> = r
            .initial_resource_versions
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        // The last config applied by then, or the one before (its apply completing).
        let n = w.applied.iter().filter(|(a, _)| a <= at).count();
        let fits = (n.saturating_sub(2)..n).filter_map(expected).any(|v| {
            let serving = &v[t];
            if t == clusters {
                // The clusters serving, at their versions; besides, only clusters accepted
                // but warming (`spare` waiting for its endpoints when the stream dropped: a
                // cluster the server sent at that version and that does not serve).
                serving.iter().all(|(k, c)| named.get(k) == Some(c))
                    && named.iter().all(|(k, c)| {
                        serving.contains_key(k)
                            || log.delta_sent.iter().any(|d| {
                                d.at < *at
                                    && d.type_url == clusters
                                    && d.resources.iter().any(|(n, v)| n == k && v == c)
                            })
                    })
            } else {
                // Endpoints: of the names subscribed to (`app` always).
                named.contains_key("app") && named.iter().all(|(k, c)| serving.get(k) == Some(c))
            }
        });
        if n > 0 && !fits {
            let names: Vec<String> = named
                .iter()
                .map(|(k, c)| match app_version_of(c) {
                    Some(v) if t == endpoints && k == "app" => format!("{k}: v{v}'s"),
                    _ => format!("{k}: {c}"),
                })
                .collect();
            violations.push(format!(
                "the first {t} request of stream {stream} (at {at:?}) has \
                 initial_resource_versions {names:?}, not those of the config serving ({:?}, \
                 clusters {:?})",
                w.applied[n - 1].1,
                w.applied_clusters[n - 1]
            ));
        }
    }
    if crate::trace::wanted(!violations.is_empty()) {
        eprintln!("delta ADS log (server side):");
        dump_delta_log(log);
    }
}

/// Prints the delta requests and responses the server logged, in time order.
fn dump_delta_log(log: &AdsLog) {
    let short = |t: &str| t.rsplit('.').next().unwrap_or(t).to_owned();
    let mut lines: Vec<(Duration, String)> = log
        .delta_requests
        .iter()
        .map(|(at, s, r)| {
            (
                *at,
                format!(
                    "<- stream {s} {} nonce {:?} subscribe {:?} unsubscribe {:?} initial {:?}{}",
                    short(&r.type_url),
                    r.response_nonce,
                    r.resource_names_subscribe,
                    r.resource_names_unsubscribe,
                    r.initial_resource_versions,
                    r.error_detail
                        .as_ref()
                        .map_or(String::new(), |e| format!(" NACK: {}", e.message))
                ),
            )
        })
        .chain(log.delta_sent.iter().map(|d| {
            (
                d.at,
                format!(
                    "-> stream {} {} nonce {} v{} resources {:?} removed {:?}",
                    d.stream,
                    short(&d.type_url),
                    d.nonce,
                    d.version,
                    d.resources,
                    d.removed
                ),
            )
        }))
        .collect();
    lines.sort_by_key(|(at, _)| *at);
    for (at, line) in lines {
        eprintln!("{:>10.3}ms {line}", at.as_secs_f64() * 1000.0);
    }
}

// ---------------------------------------------------------------------------------------------
// The sidecar, upstreams and clients.

fn bootstrap_yaml(server: IpAddr, mode: XdsMode, fetch_timeout: Option<Duration>) -> String {
    format!(
        r#"
node: {{ id: sidecar-1, cluster: sim }}
xds: {{ cluster: xds_server{}{} }}
listeners: []
clusters:
  - name: xds_server
    connect_timeout: 250ms
    protocol: http2
    http2: {{ connection_keepalive: {{ interval: {}ms, timeout: {}ms }} }}
    hosts: [ {{ address: "{}" }} ]
drain_timeout: 1s
"#,
        match mode {
            XdsMode::Sotw => "",
            XdsMode::Delta => ", mode: delta",
        },
        fetch_timeout.map_or(String::new(), |t| format!(
            ", initial_fetch_timeout: {}ms",
            t.as_millis()
        )),
        KEEPALIVE_INTERVAL.as_millis(),
        KEEPALIVE_TIMEOUT.as_millis(),
        SocketAddr::new(server, SERVER_PORT)
    )
}

fn engine(config: Arc<Config>, seed: u64) -> std::io::Result<Rc<Engine<TurmoilNet>>> {
    let stats = Arc::new(WorkerStats::new(&config));
    Engine::new(TurmoilNet, config, 0, seed, stats)
}

/// The sidecar: the real xDS client as a task, and the server loop's part: each config it
/// assembles switched to through the [`Worker`], its new listeners bound first — or, when
/// only endpoints changed, applied in place ([`Worker::apply_endpoints`]), as the binary does.
pub(crate) async fn sidecar(
    seed: u64,
    mode: XdsMode,
    fetch_timeout: Option<Duration>,
    world: Shared,
    trace: Trace,
) -> turmoil::Result {
    let yaml = bootstrap_yaml(turmoil::lookup(SERVER), mode, fetch_timeout);
    let config = Config::from_yaml(&yaml).map_err(|e| format!("bootstrap: {e}"))?;
    let tree: serde_json::Value =
        serde_saphyr::from_str(&yaml).map_err(|e| format!("bootstrap: {e}"))?;
    let bootstrap = Bootstrap::new(&config, tree)?;
    let connector = TurmoilXdsConnector::new(&bootstrap);
    let (updates, mut incoming) = tokio::sync::mpsc::unbounded_channel::<Update>();
    tokio::task::spawn_local(sluice_runtime::xds::run(
        bootstrap, updates, connector, seed,
    ));
    let mut serving = Arc::new(config);
    let mut worker = Worker::start(
        engine(serving.clone(), seed)?,
        vec![],
        WorkerHooks {
            close_listeners: None,
            on_event: None,
        },
    );
    let mut generation = 0u64;
    while let Some(Update { config, reply }) = incoming.recv().await {
        generation += 1;
        let config = Arc::new(*config);
        let changes = sluice_core::config::diff::diff(&serving, &config);
        let mut fresh = BTreeMap::new();
        for i in changes.to_bind() {
            fresh.insert(i, TcpListener::bind(config.listeners[i].address).await?);
        }
        let hosts: BTreeSet<SocketAddr> = config
            .clusters
            .iter()
            .find(|c| c.name == "app")
            .map(|c| c.hosts.iter().map(|h| h.address).collect())
            .unwrap_or_default();
        let clusters: BTreeSet<String> = config
            .clusters
            .iter()
            .filter(|c| c.name != "xds_server")
            .map(|c| c.name.clone())
            .collect();
        // Only endpoints changed (and the slots have room): in place, as the binary does.
        if let Some(changed) = sluice_core::config::diff::only_endpoints_differ(&serving, &config)
            && let Some(update) = worker.apply_endpoints(&serving, &config, &changed)
        {
            let summary = update.summary(&config);
            serving = config;
            trace.record(
                elapsed(),
                SIDECAR,
                format_args!("applied {hosts:?} in place"),
            );
            {
                let mut w = world.borrow_mut();
                w.applied.push((elapsed(), hosts));
                w.applied_clusters.push(clusters);
            }
            let _ = reply.send(Ok(summary));
            continue;
        }
        let next = engine(config.clone(), seed ^ generation)?;
        let outcome = worker
            .reload(next, |i| {
                fresh
                    .remove(&i)
                    .ok_or_else(|| std::io::Error::other(format!("no socket for listener {i}")))
            })
            .await;
        match outcome {
            Ok(()) => {
                serving = config;
                trace.record(elapsed(), SIDECAR, format_args!("applied {hosts:?}"));
                {
                    let mut w = world.borrow_mut();
                    w.applied.push((elapsed(), hosts));
                    w.applied_clusters.push(clusters);
                }
                let _ = reply.send(Ok("switched".to_owned()));
            }
            Err(e) => {
                let why = format!("{e:?}");
                world.borrow_mut().refused.push(why.clone());
                let _ = reply.send(Err(why));
            }
        }
    }
    Ok(())
}

pub(crate) async fn upstream(index: usize, world: Shared, trace: Trace) -> turmoil::Result {
    peers::http::echo_upstream(UPSTREAMS[index], UPSTREAM_PORT, index, world, trace).await
}

async fn client(c: usize, seed: u64, world: Shared, trace: Trace) {
    let plan = ClientPlan {
        index: c,
        path: "/item",
        id_prefix: 'c',
        port: LISTEN_PORT,
        from: TRAFFIC_FROM,
        until: TRAFFIC_UNTIL,
        max_pause_ms: 60,
        deadline: CLIENT_DEADLINE,
    };
    peers::http::keep_alive_client(plan, seed, world, trace).await;
}
