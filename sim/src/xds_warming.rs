//! xDS warming scenario (`xds_withheld_assignment_under_traffic`): the management server
//! adds a cluster `fresh` and a route to it (`/new`) but withholds `fresh`'s
//! ClusterLoadAssignment, under HTTP traffic to the route that already serves (`/` → cluster
//! `app`). The sidecar, the server and the upstreams are those of the xDS scenario
//! ([`crate::xds`]): the real xDS client as a task, each config switched to or applied in
//! place as the binary does; the bootstrap's `initial_fetch_timeout` is [`FETCH_TIMEOUT`].
//!
//! Schedule (each step jittered by the seed): v1 = `app` {up1}, routes `/` → `app`; v2 adds
//! cluster `fresh` (EDS) and the route `/new` → `fresh`, without an assignment for `fresh`;
//! v3, while `fresh` warms, gives `app` a second host (up2); after the timeout, v4 finally
//! sends `fresh`'s assignment {up3}. Clients send `/item` (→ `app`) all along; a probe sends
//! `/new` all along.
//!
//! Invariants checked after every run:
//!
//! 1. every `/item` request got a 200 carrying its own id, within its deadline: a warming
//!    cluster and the listener waiting for it hold back nothing that serves;
//! 2. the update pushed meanwhile applies: the sidecar applies `app` = {up1, up2} within
//!    [`APPLY_WITHIN`] of v3, before `fresh`'s timeout;
//! 3. after the timeout (plus [`SETTLE`]), until v4, `/new` answers 503 (the route serves, its
//!    cluster has no endpoints) — not a crash, not a NACK: no request to the server carries an
//!    `error_detail`, and the sidecar refused no config;
//! 4. once the assignment is sent, `/new` serves: every `/new` request started
//!    [`SERVE_WITHIN`] after v4 got a 200 carrying its own id.
//!
//! Shown failing with what they guard disabled (see `docs/simulation.md`).

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sluice_core::rng::Rng;
use sluice_xds::ads::XdsMode;
use sluice_xds::envoy_types::pb::envoy::config::route::v3::route_match::PathSpecifier;
use sluice_xds::envoy_types::pb::google::protobuf::Any;
use sluice_xds::fixtures::{any, assignment, eds_cluster, http_listener, route_config};
use sluice_xds::test_server::{AdsLog, AdsService, Snapshot};
use sluice_xds::translate::ResourceType;

use crate::RunReport;
use crate::peers;
use crate::peers::http::{ClientPlan, Req};
use crate::topology::{SIDECAR, elapsed, new_sim, report, run_to_end};
use crate::trace::Trace;
use crate::xds::{
    CLIENT_DEADLINE, LISTEN_PORT, PUSH_SPACING, SERVER, Shared, UPSTREAM_PORT, UPSTREAMS,
};

/// The bootstrap's `initial_fetch_timeout`.
pub const FETCH_TIMEOUT: Duration = Duration::from_millis(2_000);
/// An update pushed while `fresh` warms is applied within this (a push and an apply).
pub const APPLY_WITHIN: Duration = Duration::from_millis(500);
/// After the timeout, the config serving `fresh` empty is applied within this.
pub const SETTLE: Duration = Duration::from_millis(500);
/// After the assignment is pushed, `/new` serves within this.
pub const SERVE_WITHIN: Duration = Duration::from_millis(700);
const CLIENTS: usize = 2;
const TRAFFIC_FROM: Duration = Duration::from_millis(600);

/// The schedule: when each version is pushed.
struct Plan {
    v2: Duration,
    v3: Duration,
    v4: Duration,
    until: Duration,
}

fn plan(seed: u64) -> Plan {
    let mut r = Rng::from_seed(seed ^ 0x3a7e_11ed);
    let mut j = |base: u64, spread: u64| Duration::from_millis(base + r.below(spread));
    let v2 = j(1_000, 300);
    let v3 = v2 + j(300, 700);
    let v4 = v2 + FETCH_TIMEOUT + j(800, 500);
    let until = v4 + j(1_200, 300);
    Plan { v2, v3, v4, until }
}

/// The resources of version `version` (1 to 4), with the upstreams' addresses `ips`.
fn resources(version: u64, ips: &[IpAddr]) -> BTreeMap<String, Vec<Any>> {
    let ip = |i: usize| ips[i].to_string();
    let (up1, up2, up3) = (ip(0), ip(1), ip(2));
    let port = u32::from(UPSTREAM_PORT);
    let app_hosts: Vec<(&str, u32, i32)> = if version >= 3 {
        vec![(up1.as_str(), port, 0), (up2.as_str(), port, 0)]
    } else {
        vec![(up1.as_str(), port, 0)]
    };
    let mut clusters = vec![any(&eds_cluster("app"))];
    let mut assignments = vec![any(&assignment("app", &app_hosts))];
    let mut routes = route_config("routes", "app");
    if version >= 2 {
        clusters.push(any(&eds_cluster("fresh")));
        // `/new` → fresh, before the catch-all `/` → app.
        let mut to_fresh = route_config("routes", "fresh").virtual_hosts[0].routes[0].clone();
        if let Some(m) = to_fresh.r#match.as_mut() {
            m.path_specifier = Some(PathSpecifier::Prefix("/new".to_owned()));
        }
        routes.virtual_hosts[0].routes.insert(0, to_fresh);
    }
    if version >= 4 {
        assignments.push(any(&assignment("fresh", &[(up3.as_str(), port, 0)])));
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
            vec![any(&routes)],
        ),
    ])
}

/// Runs the scenario for one seed.
#[must_use]
pub fn run(seed: u64) -> RunReport {
    let trace = Trace::default();
    let world: Shared = Rc::default();
    let plan = plan(seed);
    let mut sim = new_sim(seed, Duration::from_millis(15));
    sim.set_max_message_latency(Duration::from_millis(15));
    for (i, name) in UPSTREAMS.iter().enumerate().take(3) {
        let (world, trace) = (world.clone(), trace.clone());
        sim.host(*name, move || {
            crate::xds::upstream(i, world.clone(), trace.clone())
        });
    }
    let ips: Vec<IpAddr> = UPSTREAMS.iter().take(3).map(|u| sim.lookup(*u)).collect();
    let snapshot = |version: u64| Snapshot {
        version,
        resources: resources(version, &ips),
    };
    let (snapshots, receiver) = tokio::sync::watch::channel(snapshot(1));
    let log = Arc::new(Mutex::new(AdsLog::default()));
    {
        let service = AdsService::new(receiver, log.clone(), PUSH_SPACING, elapsed);
        let trace = trace.clone();
        sim.host(SERVER, move || {
            crate::xds::server(service.clone(), trace.clone(), false)
        });
    }
    {
        let (world, trace) = (world.clone(), trace.clone());
        sim.host(SIDECAR, move || {
            crate::xds::sidecar(
                seed,
                XdsMode::Sotw,
                Some(FETCH_TIMEOUT),
                world.clone(),
                trace.clone(),
            )
        });
    }
    let until = plan.until;
    for c in 0..=CLIENTS {
        let (world, trace) = (world.clone(), trace.clone());
        let client_seed = seed.wrapping_mul(131).wrapping_add(c as u64);
        // The last one is the probe of `/new`.
        let path = if c == CLIENTS { "/new" } else { "/item" };
        sim.client(format!("client{c}"), async move {
            client(c, path, client_seed, until, world, trace).await;
            Ok(())
        });
    }
    let mut violations = Vec::new();
    let mut next = 2u64;
    let t = trace.clone();
    run_to_end(&mut sim, &mut violations, |_, now| {
        let due = [plan.v2, plan.v3, plan.v4];
        while next <= 4 && now >= due[(next - 2) as usize] {
            snapshots.send_replace(snapshot(next));
            t.record(now, "SIM", format!("push v{next}"));
            next += 1;
        }
    });
    drop(sim);
    let w = world.borrow();
    let log = log.lock().expect("ads log");
    check(&w, &log, &plan, &ips, &mut violations);
    let probes: Vec<&Req> = w
        .traffic
        .requests
        .iter()
        .filter(|r| r.id.starts_with('n'))
        .collect();
    let count = |status: u16| probes.iter().filter(|r| r.outcome == Ok(status)).count();
    let summary = format!(
        "xds warming: {} requests, /new: {} 404, {} 503, {} 200; {} configs applied, {} requests \
         to the server",
        w.traffic.requests.len(),
        count(404),
        count(503),
        count(200),
        w.applied.len(),
        log.requests.len()
    );
    report(seed, &trace, violations, summary)
}

fn check(
    w: &crate::xds::World,
    log: &AdsLog,
    plan: &Plan,
    ips: &[IpAddr],
    violations: &mut Vec<String>,
) {
    // 1. Traffic to the route that serves never fails.
    let items: Vec<&Req> = w
        .traffic
        .requests
        .iter()
        .filter(|r| r.id.starts_with('c'))
        .collect();
    if items.is_empty() {
        violations.push("1: no /item request was made".to_owned());
    }
    for r in &items {
        if r.outcome != Ok(200) {
            violations.push(format!(
                "1: /item request {} ({:?}..{:?}) got {:?}",
                r.id, r.start, r.end, r.outcome
            ));
        } else if r.end - r.start > CLIENT_DEADLINE {
            violations.push(format!("1: /item request {} past its deadline", r.id));
        }
    }
    // 2. The update pushed while `fresh` warms applies before the timeout.
    let both: BTreeSet<SocketAddr> = ips[..2]
        .iter()
        .map(|&ip| SocketAddr::new(ip, UPSTREAM_PORT))
        .collect();
    let timeout_at = plan.v2 + FETCH_TIMEOUT;
    match w
        .applied
        .iter()
        .find(|(at, hosts)| *at >= plan.v3 && *hosts == both)
    {
        Some((at, _)) if *at <= plan.v3 + APPLY_WITHIN && *at < timeout_at => {}
        Some((at, _)) => violations.push(format!(
            "2: app's second host (v3 at {:?}) applied at {at:?}: later than {APPLY_WITHIN:?} \
             or not before fresh's timeout ({timeout_at:?})",
            plan.v3
        )),
        None => violations.push(format!(
            "2: app's second host (v3 at {:?}) never applied",
            plan.v3
        )),
    }
    // 3. After the timeout, until the assignment: `/new` answers 503; nothing NACKed or
    // refused.
    let probes: Vec<&Req> = w
        .traffic
        .requests
        .iter()
        .filter(|r| r.id.starts_with('n'))
        .collect();
    let after_timeout: Vec<&&Req> = probes
        .iter()
        .filter(|r| r.start >= timeout_at + SETTLE && r.end < plan.v4)
        .collect();
    if after_timeout.is_empty() {
        violations.push("3: no /new request between the timeout and the assignment".to_owned());
    }
    for r in after_timeout {
        if r.outcome != Ok(503) {
            violations.push(format!(
                "3: /new request {} ({:?}, after the timeout at {timeout_at:?}, before the \
                 assignment at {:?}) got {:?}, not 503",
                r.id, r.start, plan.v4, r.outcome
            ));
        }
    }
    for (at, req) in &log.requests {
        if let Some(e) = &req.error_detail {
            violations.push(format!(
                "3: NACK at {at:?} ({}): {}",
                req.type_url, e.message
            ));
        }
    }
    for why in &w.refused {
        violations.push(format!("3: the sidecar refused a config: {why}"));
    }
    // 4. Once the assignment is sent, `/new` serves.
    let served: Vec<&&Req> = probes
        .iter()
        .filter(|r| r.start >= plan.v4 + SERVE_WITHIN)
        .collect();
    if served.is_empty() {
        violations.push("4: no /new request after the assignment".to_owned());
    }
    for r in served {
        if r.outcome != Ok(200) {
            violations.push(format!(
                "4: /new request {} at {:?} ({SERVE_WITHIN:?} after the assignment at {:?}) got \
                 {:?}",
                r.id, r.start, plan.v4, r.outcome
            ));
        }
    }
}

/// A client: requests to `path` on one kept-alive connection (reopened when closed) every
/// 0–60 ms until `until`; ids `c…` for `/item`, `n…` for `/new`.
async fn client(c: usize, path: &str, seed: u64, until: Duration, world: Shared, trace: Trace) {
    let plan = ClientPlan {
        index: c,
        path,
        id_prefix: if path == "/new" { 'n' } else { 'c' },
        port: LISTEN_PORT,
        from: TRAFFIC_FROM,
        until,
        max_pause_ms: 60,
        deadline: CLIENT_DEADLINE,
    };
    peers::http::keep_alive_client(plan, seed, world, trace).await;
}
