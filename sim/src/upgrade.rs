//! Hot-upgrade scenarios: the binary-upgrade handover, modelled inside one simulated host,
//! under HTTP/1.1 and Bolt traffic with an upstream fault at the same time.
//!
//! The simulator cannot pass file descriptors, so both "processes" live in the sidecar host:
//! the **old instance** (a [`Worker`] — the runtime's, as a worker thread of the binary runs it
//! — and a driver of [`sluice_core::handover::OldInstance`]) and the **new instance** (a driver
//! of [`sluice_core::handover::NewInstance`] that starts its own [`Worker`] on what it
//! receives). What the checks know of engine generations (start, end, open connections) comes
//! from the Workers' events and status.
//! The drivers talk over an in-memory control connection (two channels, each message delayed by
//! a seed-chosen latency; dropping a side's end is the connection closing). The offer carries the
//! listening sockets themselves, taken off the old instance's serving engine
//! ([`Worker::take_listeners`]):
//! turmoil's listener object moves intact, with the connections queued on it, which is what the
//! kernel's socket (and its backlog) does between two processes holding it.
//!
//! Model of the shared socket: the offer carries a slot holding the listeners, referenced by
//! both drivers — the socket stays open while either process holds a descriptor of it. The new
//! instance takes the listeners out of the slot when it starts its engine on them
//! ([`NewAction::StartServing`]); on a rollback, the old instance takes them back from the slot
//! (the new one never took them) and resumes accepting by switching its [`Worker`] to a fresh
//! engine generation on them ([`Worker::switch`], the code a reload runs) while the generation
//! that gave them up drains its own connections. Unlike the real runtime (where the old keeps accepting
//! on its own descriptors during the handover), no engine accepts between the offer and the new
//! engine's start (or the rollback): connection attempts then wait in the listener's queue,
//! which is the harder case for the invariants.
//!
//! A crash of the new instance is modelled before it starts its engine (the only crash a
//! single-host model can represent without destroying the shared socket): right after it reads
//! the offer, or right after the sockets "arrived"; either as a crash (its task ends, dropping
//! its end of the control connection: the old sees the close) or as a hang (it stops making
//! progress while holding the connection: the old's handover timeout fires).
//!
//! Traffic: HTTP/1.1 clients (keep-alive GETs with unique ids; a `connection: close` answer
//! makes them reconnect) and Bolt clients (ids numbered from 1 on every connection, so they
//! collide at the proxy; pipelined; heartbeats and v2 frames mixed in; a connection closed by
//! the sidecar is replaced by a new one), plus a prober that opens a connection to each listener
//! every few milliseconds. One upstream (each serves HTTP and Bolt on two ports) crashes or is
//! partitioned from the sidecar around the upgrade.
//!
//! Invariants checked after every run:
//!
//! 1. no connection attempt to the sidecar is refused or left waiting at any moment;
//! 2. every HTTP request gets exactly one response, with its own id (2xx), within its
//!    deadline; a 5xx only near the fault; never an EOF or a reset instead of a response;
//! 3. every Bolt request and heartbeat written is answered exactly once on its connection, in
//!    its version, within its timeout: status 0 with exactly its own body (from an upstream that
//!    did receive it), or a proxy status 7/16/6 near the fault; a connection closed by the
//!    sidecar with nothing in flight is fine, a request written and never answered is not;
//!    no Bolt request reaches the upstreams twice;
//! 4. the handover went as planned: the old instance's state machine reached `Exited` and the
//!    engine generations it ran all returned (the old instance ended) before the end; the new
//!    instance's generation serves to the end; in the crash scenario the first attempt failed,
//!    the old rolled back, traffic was served after the rollback (HTTP 2xx and Bolt status 0
//!    on connections made after it), and a second upgrade then succeeded;
//! 5. at the end, no engine generation has an open downstream connection.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use sluice_core::config::Config;
use sluice_core::handover::{ConnId, NewAction, NewInstance, OldAction, OldInstance, OldState};
use sluice_core::rng::Rng;
use sluice_runtime::engine::{Engine, Handoff};
use sluice_runtime::net::TurmoilNet;
use sluice_runtime::now;
use sluice_runtime::stats::WorkerStats;
use sluice_runtime::worker::{Worker, WorkerEvent, WorkerHooks, WorkerStatus};
use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, oneshot};
use turmoil::net::{TcpListener, TcpStream};

use crate::RunReport;
use crate::bolt::wire;
use crate::peers;
use crate::topology::{
    SIDECAR, add_clients, add_upstreams, elapsed, hosts_yaml, new_sim, report, run_to_end,
};
use crate::trace::Trace;

const UPSTREAMS: [&str; 3] = ["up1", "up2", "up3"];
const HTTP_PORT: u16 = 10_000;
const BOLT_PORT: u16 = 12_200;
const UP_HTTP_PORT: u16 = 8_080;
const UP_BOLT_PORT: u16 = 12_200;
const MAX_LATENCY: Duration = Duration::from_millis(10);
const HTTP_CLIENTS: usize = 3;
const BOLT_CLIENTS: usize = 4;
/// HTTP and Bolt clients, and the prober.
const CLIENTS: usize = HTTP_CLIENTS + BOLT_CLIENTS + 1;
const TRAFFIC_UNTIL: Duration = Duration::from_millis(4_000);
/// A connection attempt must complete within this (it may wait in the listener's queue while
/// the sockets change hands, never longer).
const CONNECT_DEADLINE: Duration = Duration::from_secs(2);
const HTTP_DEADLINE: Duration = Duration::from_secs(5);
const HTTP_ROUTE_TIMEOUT: Duration = Duration::from_millis(3_000);
const IDLE_MS: u64 = 1_500;
/// Bolt requests in flight per connection, at most.
const PIPELINE: usize = 4;
/// The timeout field of every Bolt request (shorter than the route's).
const REQ_TIMEOUT: Duration = Duration::from_millis(800);
const BOLT_ROUTE_TIMEOUT: Duration = Duration::from_millis(2_000);
/// An answer must arrive within its request's timeout plus this.
const SLACK: Duration = Duration::from_millis(2 * 10 + 5);
const MAX_WORK_MS: u64 = 60;
const SERVICE: &str = "com.example.EchoService:1.0";
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);
/// The old instance's handover timeout: longer than the new one's (see the handover module).
const OLD_HANDOVER_TIMEOUT: Duration = Duration::from_millis(500);
const NEW_HANDOVER_TIMEOUT: Duration = Duration::from_millis(300);

/// Health checks (TCP connect) on both clusters.
const HC_INTERVAL_MS: u64 = 200;
const HC_TIMEOUT_MS: u64 = 100;
const HC_JITTER_PERCENT: u64 = 10;
const UNHEALTHY_THRESHOLD: u64 = 2;
/// From the fault (or from the start of a generation, which learns health afresh), the bound
/// by which the health checks have drained the faulty host.
const DETECT: Duration = Duration::from_millis(
    (UNHEALTHY_THRESHOLD + 1) * (HC_INTERVAL_MS * (100 + HC_JITTER_PERCENT) / 100)
        + HC_TIMEOUT_MS
        + 2 * 10
        + 5,
);

/// The upgrade scenarios.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpgradeScenario {
    /// One upgrade in the middle of HTTP/1.1 and Bolt traffic, an upstream fault at the same
    /// time.
    UnderTraffic,
    /// An upgrade whose new instance crashes (or hangs) halfway: rollback; later a second
    /// upgrade succeeds.
    NewInstanceCrashes,
}

/// How a new instance fails (before it serves).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Failure {
    /// Its task ends right after it read the offer.
    CrashAfterOffer,
    /// Its task ends once the sockets arrived, before it starts its engine.
    CrashWhenStarting,
    /// It stops making progress right after it read the offer.
    HangAfterOffer,
    /// It stops making progress once the sockets arrived.
    HangWhenStarting,
}

/// The listening sockets while they change hands (see the module doc).
type Sockets = Rc<RefCell<Option<Vec<TcpListener>>>>;

enum ToOld {
    Request,
    Serving,
}

enum ToNew {
    Offer(Sockets),
    Refused(String),
    Draining,
}

/// The old instance's end of a control connection.
struct ControlConn {
    id: ConnId,
    rx: mpsc::UnboundedReceiver<ToOld>,
    tx: mpsc::UnboundedSender<ToNew>,
}

#[derive(Debug)]
struct HttpReq {
    id: String,
    start: Duration,
    end: Duration,
    /// Status, or what happened instead of a response.
    outcome: Result<u16, String>,
    /// The connection was made after this time (for "served after the rollback").
    conn_at: Duration,
}

#[derive(Debug)]
struct BoltDone {
    who: String,
    id: u32,
    heartbeat: bool,
    content: String,
    start: Duration,
    end: Duration,
    status: u16,
    body: String,
}

/// An engine generation, as its Worker's events reported it.
struct GenRecord {
    name: String,
    started: Duration,
    ended: Option<Duration>,
}

#[derive(Default)]
struct World {
    http: Vec<HttpReq>,
    http_started: usize,
    bolt: Vec<BoltDone>,
    /// Violations seen as they happened.
    violations: Vec<String>,
    /// Bolt content → upstreams that received it.
    bolt_received: BTreeMap<String, Vec<usize>>,
    connects: u64,
    clients_done: usize,
    generations: Vec<GenRecord>,
    /// Every instance's Worker: how it names its generations, and its status.
    workers: Vec<(Namer, WorkerStatus)>,
    rollbacks: Vec<Duration>,
    /// When each new instance's handover finished (it serves), by attempt.
    upgraded: Vec<(usize, Duration, bool)>,
    /// Attempts that failed, with why.
    failed: Vec<(usize, String)>,
    old_exited: Option<Duration>,
    /// Open downstream connections per generation, read by the observer at the end.
    final_open: Option<Vec<(String, u64, bool)>>,
    /// The new instance's engine once it serves: where the old instance's draining Bolt
    /// connections migrate (the runtime passes them as file descriptors; here the stream
    /// object moves).
    successor: Option<Rc<Engine<TurmoilNet>>>,
}

/// Connection migration in the model: to the new instance's engine once there is one.
struct ToSuccessor(Shared);

impl Handoff<TcpStream> for ToSuccessor {
    fn ready(&self) -> bool {
        self.0.borrow().successor.is_some()
    }

    fn take(&self, listener: SocketAddr, stream: TcpStream, peer: SocketAddr, unread: Vec<u8>) {
        let next = self.0.borrow().successor.clone();
        if let Some(next) = next {
            next.adopt(listener, stream, peer, unread);
        }
    }
}

type Shared = Rc<RefCell<World>>;

fn config(upstreams: &[IpAddr]) -> Config {
    let http_hosts = hosts_yaml(upstreams, UP_HTTP_PORT);
    let bolt_hosts = hosts_yaml(upstreams, UP_BOLT_PORT);
    let ms = |d: Duration| d.as_millis();
    let hc = format!(
        "{{ tcp: {{}}, interval: {HC_INTERVAL_MS}ms, timeout: {HC_TIMEOUT_MS}ms, jitter: {HC_JITTER_PERCENT}%, unhealthy_threshold: {UNHEALTHY_THRESHOLD}, healthy_threshold: 2, no_traffic_interval: {HC_INTERVAL_MS}ms }}"
    );
    let yaml = format!(
        r#"
listeners:
  - name: http_in
    address: "[::]:{HTTP_PORT}"
    http:
      idle_timeout: {IDLE_MS}ms
      virtual_hosts:
        - name: all
          domains: ["*"]
          routes:
            - match: {{ prefix: / }}
              route:
                cluster: web
                timeout: {}ms
                retry_policy: {{ retry_on: [connect-failure, reset, 5xx], num_retries: 2, per_try_timeout: 800ms }}
  - name: rpc_in
    address: "[::]:{BOLT_PORT}"
    bolt:
      routes:
        - match: {{ service: "{SERVICE}" }}
          route: {{ cluster: rpc, timeout: {}ms }}
clusters:
  - name: web
    connect_timeout: 300ms
    lb_policy: round_robin
    health_check: {hc}
    hosts:
{http_hosts}  - name: rpc
    connect_timeout: 200ms
    lb_policy: round_robin
    health_check: {hc}
    hosts:
{bolt_hosts}drain_timeout: {}ms
"#,
        ms(HTTP_ROUTE_TIMEOUT),
        ms(BOLT_ROUTE_TIMEOUT),
        ms(DRAIN_TIMEOUT),
    );
    Config::from_yaml(&yaml).unwrap_or_else(|e| panic!("sim config invalid: {e}\n{yaml}"))
}

/// One upgrade attempt: when the new instance starts, and how it fails (if it does).
#[derive(Clone, Copy, Debug)]
struct Attempt {
    at: Duration,
    failure: Option<Failure>,
}

/// What the seed decided.
#[derive(Clone, Debug)]
struct Plan {
    attempts: Vec<Attempt>,
    fault_at: Duration,
    victim: usize,
    partition: bool,
    control_latency: Duration,
}

fn plan(scenario: UpgradeScenario, seed: u64) -> Plan {
    let mut r = Rng::from_seed(seed ^ 0x0b6d_a7e5);
    let first = Duration::from_millis(700 + r.below(600));
    // The fault lands within 150 ms of the upgrade, either side.
    let fault_at = first + Duration::from_millis(r.below(300)) - Duration::from_millis(150);
    let victim = r.below(3) as usize;
    let partition = r.below(2) == 0;
    let control_latency = Duration::from_millis(1 + r.below(5));
    let attempts = match scenario {
        UpgradeScenario::UnderTraffic => vec![Attempt {
            at: first,
            failure: None,
        }],
        UpgradeScenario::NewInstanceCrashes => {
            let failure = match r.below(4) {
                0 => Failure::CrashAfterOffer,
                1 => Failure::CrashWhenStarting,
                2 => Failure::HangAfterOffer,
                _ => Failure::HangWhenStarting,
            };
            vec![
                Attempt {
                    at: first,
                    failure: Some(failure),
                },
                Attempt {
                    at: first + Duration::from_millis(1_300 + r.below(300)),
                    failure: None,
                },
            ]
        }
    };
    Plan {
        attempts,
        fault_at,
        victim,
        partition,
        control_latency,
    }
}

/// Runs one upgrade scenario for one seed.
#[must_use]
pub fn run(scenario: UpgradeScenario, seed: u64) -> RunReport {
    let trace = Trace::default();
    let world = Shared::default();
    let plan = plan(scenario, seed);
    trace.record(Duration::ZERO, "SIM", format_args!("{plan:?}"));

    let mut sim = new_sim(seed, MAX_LATENCY);
    add_upstreams(&mut sim, &UPSTREAMS, &world, &trace, upstream);
    {
        let (world, trace, plan) = (world.clone(), trace.clone(), plan.clone());
        sim.host(SIDECAR, move || {
            let (world, trace, plan) = (world.clone(), trace.clone(), plan.clone());
            async move { sidecar(seed, plan, world, trace).await }
        });
    }
    {
        let (world, trace) = (world.clone(), trace.clone());
        add_clients(&mut sim, "http_clients", HTTP_CLIENTS, move |c| {
            let client_seed = seed.wrapping_mul(131).wrapping_add(c as u64);
            http_client(c, client_seed, world.clone(), trace.clone())
        });
    }
    {
        let (world, trace) = (world.clone(), trace.clone());
        add_clients(&mut sim, "bolt_clients", BOLT_CLIENTS, move |c| {
            let client_seed = seed.wrapping_mul(137).wrapping_add(100 + c as u64);
            bolt_client(c, client_seed, world.clone(), trace.clone())
        });
    }
    {
        let (world, trace) = (world.clone(), trace.clone());
        let prober_seed = seed.wrapping_mul(139).wrapping_add(7);
        sim.client("prober", async move {
            prober(prober_seed, world, trace).await;
            Ok(())
        });
    }
    {
        let world = world.clone();
        sim.client("observer", async move {
            while world.borrow().clients_done < CLIENTS {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            tokio::time::sleep(Duration::from_millis(1_000)).await;
            let open = world
                .borrow()
                .workers
                .iter()
                .flat_map(|(name, status)| {
                    status
                        .generations()
                        .into_iter()
                        .map(move |g| (name(g.generation), g.open_connections(), g.ended.is_none()))
                })
                .collect();
            world.borrow_mut().final_open = Some(open);
            Ok(())
        });
    }

    let mut violations = Vec::new();
    let mut faulted = false;
    run_to_end(&mut sim, &mut violations, |sim, now| {
        if !faulted && now >= plan.fault_at {
            let victim = UPSTREAMS[plan.victim];
            if plan.partition {
                sim.partition(SIDECAR, victim);
            } else {
                sim.crash(victim);
            }
            trace.record(
                now,
                "SIM",
                format!(
                    "{} {victim}",
                    if plan.partition { "partition" } else { "crash" }
                ),
            );
            faulted = true;
        }
    });
    let end = sim.elapsed();
    drop(sim);

    let w = world.borrow();
    check(scenario, &plan, &w, end, &mut violations);
    let http_ok = w
        .http
        .iter()
        .filter(|r| matches!(r.outcome, Ok(200..=299)))
        .count();
    let bolt_ok = w.bolt.iter().filter(|d| d.status == 0).count();
    let summary = format!(
        "{scenario:?}: {} connects, {} HTTP ({http_ok} 2xx), {} Bolt ({bolt_ok} ok), {} rollback(s), old ended at {:?}, generations {}",
        w.connects,
        w.http.len(),
        w.bolt.len(),
        w.rollbacks.len(),
        w.old_exited,
        w.generations
            .iter()
            .map(|g| g.name.as_str())
            .collect::<Vec<_>>()
            .join(" → ")
    );
    report(seed, &trace, violations, summary)
}

fn check(
    scenario: UpgradeScenario,
    plan: &Plan,
    w: &World,
    end: Duration,
    violations: &mut Vec<String>,
) {
    violations.extend(w.violations.iter().cloned());
    let fault = plan.fault_at;
    // A generation learns health afresh: failures are allowed from a little before the fault
    // until DETECT after the later of the fault and the start of the generation serving then —
    // the latest generation started before the request ended, since a request sent just before
    // a handover can be served by the next generation (a Bolt connection migrates with the
    // requests it has not read yet).
    let near_fault = |start: Duration, end: Duration, before: Duration| {
        let anchor = w
            .generations
            .iter()
            .filter(|g| g.started <= end)
            .map(|g| g.started)
            .max()
            .unwrap_or_default()
            .max(fault);
        start + before >= fault && start < anchor + DETECT
    };

    // 2. HTTP.
    if w.http.len() != w.http_started {
        violations.push(format!(
            "{} of {} HTTP requests finished",
            w.http.len(),
            w.http_started
        ));
    }
    for r in &w.http {
        if r.end - r.start > HTTP_DEADLINE + Duration::from_millis(10) {
            violations.push(format!("HTTP {} took {:?}", r.id, r.end - r.start));
        }
        match &r.outcome {
            Ok(200..=299) => {}
            Ok(500..=599) if near_fault(r.start, r.end, HTTP_ROUTE_TIMEOUT) => {}
            other => violations.push(format!(
                "HTTP {} (started {:?}, connection from {:?}) got {other:?}",
                r.id, r.start, r.conn_at
            )),
        }
    }

    // 3. Bolt.
    for (content, ups) in &w.bolt_received {
        if ups.len() > 1 {
            violations.push(format!(
                "Bolt {content} reached the upstreams {} times ({ups:?})",
                ups.len()
            ));
        }
    }
    for d in &w.bolt {
        let who = format!("{} id {} ({})", d.who, d.id, d.content);
        if d.end - d.start > REQ_TIMEOUT + SLACK {
            violations.push(format!(
                "{who} answered after {:?} (started {:?}, status {})",
                d.end - d.start,
                d.start,
                d.status
            ));
        }
        if d.heartbeat {
            if d.status != 0 {
                violations.push(format!("{who}: heartbeat answered with {}", d.status));
            }
            continue;
        }
        match d.status {
            0 => {
                let good = d
                    .body
                    .strip_prefix(&d.content)
                    .and_then(|rest| rest.strip_prefix('@'))
                    .and_then(|up| UPSTREAMS.iter().position(|u| *u == up))
                    .is_some_and(|u| {
                        w.bolt_received
                            .get(&d.content)
                            .is_some_and(|r| r.contains(&u))
                    });
                if !good {
                    violations.push(format!("CROSSED: {who} answered with {:?}", d.body));
                }
            }
            7 | 16 | 6 if near_fault(d.start, d.end, REQ_TIMEOUT) => {}
            other => violations.push(format!(
                "{who} started at {:?} (fault at {fault:?}) and got status {other}",
                d.start
            )),
        }
    }

    // 4. The handover.
    match w.old_exited {
        None => violations.push("the old instance never ended".into()),
        Some(t) if t >= end => violations.push(format!("the old instance ended at {t:?}")),
        Some(_) => {}
    }
    let Some(last) = w.generations.last() else {
        violations.push("no engine ever ran".into());
        return;
    };
    if !last.name.starts_with("new") {
        violations.push(format!(
            "the generation serving at the end is {}, not the new instance's",
            last.name
        ));
    }
    if let Some(t) = last.ended {
        violations.push(format!("{} stopped serving at {t:?}", last.name));
    }
    for g in &w.generations[..w.generations.len() - 1] {
        match g.ended {
            None => violations.push(format!("{} (old instance) never returned", g.name)),
            Some(t) if Some(t) > w.old_exited => violations.push(format!(
                "{} returned at {t:?}, after the old instance exited",
                g.name
            )),
            Some(_) => {}
        }
    }
    let last_attempt = plan.attempts.len() - 1;
    if !w.upgraded.iter().any(|(a, _, _)| *a == last_attempt) {
        violations.push(format!("upgrade attempt {last_attempt} never finished"));
    }
    match scenario {
        UpgradeScenario::UnderTraffic => {
            if !w.rollbacks.is_empty() || !w.failed.is_empty() {
                violations.push(format!(
                    "unexpected rollback {:?} / failure {:?}",
                    w.rollbacks, w.failed
                ));
            }
        }
        UpgradeScenario::NewInstanceCrashes => {
            // The first new instance crashed or hung: it never finished (nor reported).
            if w.upgraded.iter().any(|(a, _, _)| *a == 0) || !w.failed.is_empty() {
                violations.push(format!(
                    "attempt 0 was to crash: finished {:?}, failed {:?}",
                    w.upgraded, w.failed
                ));
            }
            match w.rollbacks.as_slice() {
                [r] => {
                    let second = plan.attempts[1].at;
                    let http_after = w.http.iter().any(|q| {
                        q.conn_at > *r && q.end < second && matches!(q.outcome, Ok(200..=299))
                    });
                    // Bolt clients keep their connections: the generation that took the
                    // sockets back adopts them from the one that gave them up, so a request
                    // written after the rollback is served by it.
                    let bolt_after = w
                        .bolt
                        .iter()
                        .any(|d| !d.heartbeat && d.start > *r && d.end < second && d.status == 0);
                    if !(http_after && bolt_after) {
                        violations.push(format!(
                            "no traffic served after the rollback at {r:?} (HTTP on new connections {http_after}, Bolt requests {bolt_after})"
                        ));
                    }
                }
                other => violations.push(format!("rollbacks at {other:?}, expected one")),
            }
        }
    }

    // 5. Nothing left open.
    match &w.final_open {
        None => violations.push("the observer never read the counters".into()),
        Some(open) => {
            for (name, n, _) in open {
                if *n != 0 {
                    violations.push(format!("{name} has {n} connections still open"));
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The sidecar host: the old instance, and the new instance(s) started by the plan.

/// How an instance names its Worker's generations (by number) in the trace and the checks.
type Namer = Rc<dyn Fn(u64) -> String>;

/// A Worker's events, recorded in the world and the trace, its generations named by `name`.
fn hooks(name: &Namer, world: &Shared, trace: &Trace) -> WorkerHooks {
    let (name, world, trace) = (name.clone(), world.clone(), trace.clone());
    WorkerHooks {
        close_listeners: None,
        on_event: Some(Box::new(move |event| match event {
            WorkerEvent::GenerationStarted { generation } => {
                let name = name(generation);
                trace.record(elapsed(), SIDECAR, format_args!("{name} serves"));
                world.borrow_mut().generations.push(GenRecord {
                    name,
                    started: elapsed(),
                    ended: None,
                });
            }
            WorkerEvent::GenerationDraining { .. } => {}
            WorkerEvent::GenerationEnded { generation } => {
                let name = name(generation);
                if let Some(g) = world
                    .borrow_mut()
                    .generations
                    .iter_mut()
                    .find(|g| g.name == name)
                {
                    g.ended = Some(elapsed());
                }
                trace.record(elapsed(), SIDECAR, format_args!("{name} returned"));
            }
        })),
    }
}

/// Starts an instance's Worker on `engine` and `listeners`, its status registered in the
/// world.
fn start_worker(
    name: Namer,
    engine: Rc<Engine<TurmoilNet>>,
    listeners: Vec<TcpListener>,
    world: &Shared,
    trace: &Trace,
) -> Worker<TurmoilNet> {
    let worker = Worker::start(engine, listeners, hooks(&name, world, trace));
    world.borrow_mut().workers.push((name, worker.status()));
    worker
}

fn new_engine(config: &Arc<Config>, seed: u64) -> std::io::Result<Rc<Engine<TurmoilNet>>> {
    let stats = Arc::new(WorkerStats::new(config));
    Engine::new(TurmoilNet, config.clone(), 0, seed, stats)
}

async fn sidecar(seed: u64, plan: Plan, world: Shared, trace: Trace) -> turmoil::Result {
    let ips: Vec<IpAddr> = UPSTREAMS.iter().map(|u| turmoil::lookup(*u)).collect();
    let config = Arc::new(config(&ips));
    let any = IpAddr::V6(Ipv6Addr::UNSPECIFIED);
    let listeners = vec![
        TcpListener::bind(SocketAddr::new(any, HTTP_PORT)).await?,
        TcpListener::bind(SocketAddr::new(any, BOLT_PORT)).await?,
    ];
    let engine = new_engine(&config, seed)?;
    engine.set_handoff(Rc::new(ToSuccessor(world.clone())));
    let old_name: Namer = Rc::new(|generation| format!("old#{}", generation + 1));
    let first = start_worker(old_name, engine, listeners, &world, &trace);
    let (conns_tx, conns_rx) = mpsc::unbounded_channel();
    {
        let (config, world, trace) = (config.clone(), world.clone(), trace.clone());
        let latency = plan.control_latency;
        tokio::task::spawn_local(async move {
            old_instance(first, config, seed, latency, conns_rx, world, trace).await;
        });
    }
    for (attempt, a) in plan.attempts.iter().enumerate() {
        tokio::time::sleep(a.at.saturating_sub(elapsed())).await;
        trace.record(
            elapsed(),
            SIDECAR,
            format_args!("upgrade attempt {attempt} starts ({:?})", a.failure),
        );
        let (config, world, trace, conns) = (
            config.clone(),
            world.clone(),
            trace.clone(),
            conns_tx.clone(),
        );
        let new_seed = seed ^ (0x5eed_0000 + attempt as u64);
        let (failure, latency) = (a.failure, plan.control_latency);
        tokio::task::spawn_local(async move {
            new_instance(
                attempt, failure, new_seed, latency, config, conns, world, trace,
            )
            .await;
        });
    }
    std::future::pending::<()>().await;
    Ok(())
}

async fn sleep_opt(deadline: Option<sluice_core::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(sluice_runtime::to_tokio(d)).await,
        None => std::future::pending().await,
    }
}

async fn recv_active(active: &mut Option<ControlConn>) -> Option<ToOld> {
    match active {
        Some(c) => c.rx.recv().await,
        None => std::future::pending().await,
    }
}

async fn wait_opt(rx: &mut Option<oneshot::Receiver<()>>) {
    match rx {
        Some(r) => {
            let _ = r.await;
        }
        None => std::future::pending().await,
    }
}

/// The old instance's driver: serves with `worker`, answers upgrade requests arriving on
/// `conns` with [`OldInstance`], until it exits.
async fn old_instance(
    mut worker: Worker<TurmoilNet>,
    config: Arc<Config>,
    seed: u64,
    latency: Duration,
    mut conns: mpsc::UnboundedReceiver<ControlConn>,
    world: Shared,
    trace: Trace,
) {
    let who = "old";
    let mut sm = OldInstance::new(OLD_HANDOVER_TIMEOUT);
    // Connections that sent a request and wait for an action.
    let mut waiting: BTreeMap<ConnId, ControlConn> = BTreeMap::new();
    // The connection of the handover in progress (or of the new instance we drain for).
    let mut active: Option<ControlConn> = None;
    let mut offered: Option<Sockets> = None;
    let mut drained: Option<oneshot::Receiver<()>> = None;
    let mut generation_no = 1;
    loop {
        tokio::select! {
            biased;
            () = wait_opt(&mut drained) => {
                drained = None;
                sm.handle_drained(now());
            }
            c = conns.recv() => {
                let Some(mut c) = c else { continue };
                let first = c.rx.recv().await;
                tokio::time::sleep(latency).await;
                if let Some(ToOld::Request) = first {
                    trace.record(elapsed(), who, format_args!("request on conn {}", c.id));
                    let id = c.id;
                    waiting.insert(id, c);
                    sm.handle_upgrade_request(now(), id);
                }
            }
            m = recv_active(&mut active) => {
                let id = active.as_ref().map_or(0, |c| c.id);
                match m {
                    Some(ToOld::Serving) => {
                        tokio::time::sleep(latency).await;
                        trace.record(elapsed(), who, format_args!("conn {id}: new serves"));
                        sm.handle_serving(now(), id);
                    }
                    Some(ToOld::Request) => {}
                    None => {
                        trace.record(elapsed(), who, format_args!("conn {id} closed"));
                        if matches!(sm.state(), OldState::HandingOver { .. }) {
                            sm.handle_closed(now(), id);
                        } else {
                            active = None;
                        }
                    }
                }
            }
            () = sleep_opt(sm.poll_timeout()) => sm.handle_timeout(now()),
        }
        while let Some(action) = sm.poll_action() {
            trace.record(elapsed(), who, format_args!("{action:?}"));
            match action {
                OldAction::SendOffer { conn } => {
                    let Some(c) = waiting.remove(&conn) else {
                        continue;
                    };
                    let listeners: Vec<TcpListener> = worker
                        .take_listeners()
                        .await
                        .into_iter()
                        .flatten()
                        .collect();
                    let sockets: Sockets = Rc::new(RefCell::new(Some(listeners)));
                    offered = Some(sockets.clone());
                    let _ = c.tx.send(ToNew::Offer(sockets));
                    active = Some(c);
                }
                OldAction::Refuse { conn, reason } => {
                    if let Some(c) = waiting.remove(&conn) {
                        let _ = c.tx.send(ToNew::Refused(reason.to_string()));
                    }
                }
                OldAction::Rollback { .. } => {
                    // Close the connection; take the sockets back and accept on them again.
                    active = None;
                    world.borrow_mut().rollbacks.push(elapsed());
                    let back = offered.take().and_then(|s| s.borrow_mut().take());
                    let Some(listeners) = back else {
                        world
                            .borrow_mut()
                            .violations
                            .push(format!("rollback at {:?}: the sockets are gone", elapsed()));
                        continue;
                    };
                    generation_no += 1;
                    let gen_seed = seed ^ (0x01d0_0000 + generation_no);
                    // The Worker switches generations as on a reload: the one that gave the
                    // sockets up drains, its Bolt connections migrate to the new one.
                    match new_engine(&config, gen_seed) {
                        Ok(next) => {
                            next.set_handoff(Rc::new(ToSuccessor(world.clone())));
                            worker.switch(next, listeners);
                        }
                        Err(e) => world
                            .borrow_mut()
                            .violations
                            .push(format!("rollback: cannot start old#{generation_no}: {e}")),
                    }
                }
                OldAction::StopAccepting => {
                    // The sockets already moved with the offer: stop the Worker (its serving
                    // generation drains), and wait for every generation of it to return.
                    worker.stop();
                    let every = worker.drained();
                    let (tx, rx) = oneshot::channel();
                    tokio::task::spawn_local(async move {
                        every.await;
                        let _ = tx.send(());
                    });
                    drained = Some(rx);
                }
                OldAction::SendDraining { conn } => {
                    if let Some(c) = active.as_ref().filter(|c| c.id == conn) {
                        let _ = c.tx.send(ToNew::Draining);
                    }
                }
                OldAction::Exit => {
                    world.borrow_mut().old_exited = Some(elapsed());
                    return;
                }
            }
        }
    }
}

/// A new instance's driver: asks the old instance for its sockets over a fresh control
/// connection and serves them, or fails as `failure` says.
#[allow(clippy::too_many_arguments)]
async fn new_instance(
    attempt: usize,
    failure: Option<Failure>,
    seed: u64,
    latency: Duration,
    config: Arc<Config>,
    conns: mpsc::UnboundedSender<ControlConn>,
    world: Shared,
    trace: Trace,
) {
    let who = format!("new{attempt}");
    let (to_old, old_rx) = mpsc::unbounded_channel();
    let (new_tx, mut from_old) = mpsc::unbounded_channel();
    let mut conn = Some(ControlConn {
        id: attempt as ConnId,
        rx: old_rx,
        tx: new_tx,
    });
    let mut sm = NewInstance::new(now(), NEW_HANDOVER_TIMEOUT);
    let mut sockets: Option<Sockets> = None;
    // Held for as long as this instance lives: it serves until the end of the run.
    let mut serving: Option<Worker<TurmoilNet>> = None;
    let fail_here = |at: Failure, who: &str| -> Option<bool> {
        (failure == Some(at)).then(|| {
            let crash = matches!(at, Failure::CrashAfterOffer | Failure::CrashWhenStarting);
            trace.record(elapsed(), who, if crash { "CRASHES" } else { "HANGS" });
            crash
        })
    };
    loop {
        while let Some(action) = sm.poll_action() {
            trace.record(elapsed(), &who, format_args!("{action:?}"));
            match action {
                NewAction::SendRequest => {
                    let _ = to_old.send(ToOld::Request);
                    if let Some(c) = conn.take() {
                        let _ = conns.send(c);
                    }
                }
                NewAction::StartServing => {
                    for at in [Failure::CrashWhenStarting, Failure::HangWhenStarting] {
                        match fail_here(at, &who) {
                            Some(true) => return,
                            Some(false) => std::future::pending::<()>().await,
                            None => {}
                        }
                    }
                    let Some(listeners) = sockets.take().and_then(|s| s.borrow_mut().take()) else {
                        world.borrow_mut().violations.push(format!(
                            "{who}: the offer's sockets were gone at {:?}",
                            elapsed()
                        ));
                        return;
                    };
                    match new_engine(&config, seed) {
                        Ok(engine) => {
                            let name: Namer = Rc::new(move |_| format!("new#{attempt}"));
                            let w = start_worker(name, engine, listeners, &world, &trace);
                            world.borrow_mut().successor = Some(w.engine());
                            serving = Some(w);
                        }
                        Err(e) => {
                            world
                                .borrow_mut()
                                .violations
                                .push(format!("{who}: cannot start its engine: {e}"));
                            return;
                        }
                    }
                    sm.handle_started(now());
                }
                NewAction::SendServing => {
                    let _ = to_old.send(ToOld::Serving);
                }
                NewAction::Finished { acknowledged } => {
                    world
                        .borrow_mut()
                        .upgraded
                        .push((attempt, elapsed(), acknowledged));
                    // Serve to the end.
                    let _keep = serving.take();
                    std::future::pending::<()>().await;
                }
                NewAction::Fail(e) => {
                    world.borrow_mut().failed.push((attempt, e.to_string()));
                    return;
                }
            }
        }
        tokio::select! {
            m = from_old.recv() => {
                tokio::time::sleep(latency).await;
                match m {
                    Some(ToNew::Offer(s)) => {
                        for at in [Failure::CrashAfterOffer, Failure::HangAfterOffer] {
                            match fail_here(at, &who) {
                                Some(true) => return,
                                Some(false) => std::future::pending::<()>().await,
                                None => {}
                            }
                        }
                        sm.handle_offer(now());
                        sockets = Some(s);
                        sm.handle_fds(now());
                    }
                    Some(ToNew::Refused(r)) => sm.handle_refused(now(), r),
                    Some(ToNew::Draining) => sm.handle_ack(now()),
                    None => sm.handle_closed(now()),
                }
            }
            () = sleep_opt(sm.poll_timeout()) => sm.handle_timeout(now()),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Upstreams: HTTP on one port, Bolt on another.

async fn upstream(index: usize, world: Shared, trace: Trace) -> turmoil::Result {
    let any = IpAddr::V6(Ipv6Addr::UNSPECIFIED);
    let http = TcpListener::bind(SocketAddr::new(any, UP_HTTP_PORT)).await?;
    let bolt = TcpListener::bind(SocketAddr::new(any, UP_BOLT_PORT)).await?;
    trace.record(elapsed(), UPSTREAMS[index], "listening");
    tokio::task::spawn_local(peers::bolt::serve(
        bolt,
        Rc::new(BoltUpstream {
            index,
            world,
            trace,
        }),
        MAX_WORK_MS,
    ));
    loop {
        let (stream, _) = http.accept().await?;
        tokio::task::spawn_local(peers::http::slow_upstream_conn(stream, 0, 100));
    }
}

/// A Bolt echo upstream.
struct BoltUpstream {
    index: usize,
    world: Shared,
    trace: Trace,
}

impl peers::bolt::Upstream for BoltUpstream {
    fn name(&self) -> &'static str {
        UPSTREAMS[self.index]
    }

    fn oneway(&self) -> bool {
        false
    }

    fn violation(&self, what: String) {
        self.world.borrow_mut().violations.push(what);
    }

    fn received(&self, _: &wire::Frame, content: &str) {
        self.trace
            .record(elapsed(), self.name(), format_args!("got {content}"));
        self.world
            .borrow_mut()
            .bolt_received
            .entry(content.to_owned())
            .or_default()
            .push(self.index);
    }
}

// ---------------------------------------------------------------------------------------------
// Clients.

/// Connects to the sidecar's `port`; a refusal or a connect that does not complete within
/// [`CONNECT_DEADLINE`] is a violation.
async fn connect(port: u16, who: &str, world: &Shared, trace: &Trace) -> Option<TcpStream> {
    world.borrow_mut().connects += 1;
    let start = elapsed();
    let r = tokio::time::timeout(CONNECT_DEADLINE, TcpStream::connect((SIDECAR, port))).await;
    let failure = match r {
        Ok(Ok(s)) => return Some(s),
        Ok(Err(e)) => format!("refused: {e}"),
        Err(_) => format!("not accepted within {CONNECT_DEADLINE:?}"),
    };
    trace.record(elapsed(), who, format_args!("connect {port} {failure}"));
    world.borrow_mut().violations.push(format!(
        "{who}: connection attempt to port {port} at {start:?} {failure}"
    ));
    None
}

/// Opens a connection to each listener every few milliseconds and closes it at once.
async fn prober(seed: u64, world: Shared, trace: Trace) {
    let mut rng = Rng::from_seed(seed);
    let mut n = 0u64;
    while elapsed() < TRAFFIC_UNTIL {
        tokio::time::sleep(Duration::from_millis(3 + rng.below(20))).await;
        let port = if n.is_multiple_of(2) {
            HTTP_PORT
        } else {
            BOLT_PORT
        };
        n += 1;
        if let Some(s) = connect(port, "prober", &world, &trace).await {
            drop(s);
        }
    }
    world.borrow_mut().clients_done += 1;
}

async fn http_client(c: usize, seed: u64, world: Shared, trace: Trace) {
    let mut rng = Rng::from_seed(seed);
    let who = format!("http{c}");
    let mut seq = 0;
    let mut conn: Option<(TcpStream, Duration)> = None;
    let mut buf = Vec::with_capacity(4096);
    while elapsed() < TRAFFIC_UNTIL {
        tokio::time::sleep(Duration::from_millis(rng.below(60))).await;
        let id = format!("h{c}-{seq}");
        seq += 1;
        let request = format!(
            "GET /item HTTP/1.1\r\nhost: sim\r\nx-sim-id: {id}\r\ncontent-length: 0\r\n\r\n"
        );
        world.borrow_mut().http_started += 1;
        let start = elapsed();
        if conn.is_none() {
            conn = connect(HTTP_PORT, &who, &world, &trace)
                .await
                .map(|s| (s, elapsed()));
            buf.clear();
        }
        let conn_at = conn.as_ref().map_or(start, |c| c.1);
        let outcome = match conn.as_mut() {
            None => Err("connect failed".to_owned()),
            Some((s, _)) => {
                match tokio::time::timeout(
                    HTTP_DEADLINE,
                    exchange(s, &mut buf, request.as_bytes(), &id),
                )
                .await
                {
                    Ok(r) => r,
                    Err(_) => Err("no response by the deadline".to_owned()),
                }
            }
        };
        let keep = matches!(&outcome, Ok((_, true)));
        let outcome = outcome.map(|(status, _)| status);
        if !keep {
            conn = None;
        }
        let end = elapsed();
        trace.record(end, &who, format_args!("{id} -> {outcome:?} keep {keep}"));
        world.borrow_mut().http.push(HttpReq {
            id,
            start,
            end,
            outcome,
            conn_at,
        });
    }
    world.borrow_mut().clients_done += 1;
}

/// Sends one request and reads its response; `Ok((status, keep_alive))`.
async fn exchange(
    s: &mut TcpStream,
    buf: &mut Vec<u8>,
    request: &[u8],
    id: &str,
) -> Result<(u16, bool), String> {
    peers::http::exchange::<4096>(s, buf, request)
        .await
        .map_err(|e| match e {
            peers::http::Failure::Eof(_) => format!("{e}: written and never answered"),
            e => e.to_string(),
        })?
        .answering(id)
}

struct BoltPending {
    heartbeat: bool,
    version: u8,
    content: String,
    start: Duration,
}

type InFlight = Rc<RefCell<BTreeMap<u32, BoltPending>>>;

/// One client connection: its write half, what is in flight on it, and whether the sidecar
/// closed it (the reader saw EOF).
struct BoltConn {
    wr: turmoil::net::tcp::OwnedWriteHalf,
    in_flight: InFlight,
    closed: Rc<RefCell<Option<Duration>>>,
    reader: tokio::task::JoinHandle<()>,
    next_id: u32,
    at: Duration,
}

async fn bolt_client(c: usize, seed: u64, world: Shared, trace: Trace) {
    let mut rng = Rng::from_seed(seed);
    let who = format!("bolt{c}");
    tokio::time::sleep(Duration::from_millis(rng.below(50))).await;
    let mut conn: Option<BoltConn> = None;
    let mut seq = 0u32;
    while elapsed() < TRAFFIC_UNTIL {
        if conn.as_ref().is_some_and(|k| k.closed.borrow().is_some()) {
            let k = conn.take().expect("connection");
            trace.record(elapsed(), &who, "the sidecar closed the connection");
            finish_bolt_conn(k, &who, &world).await;
        }
        let Some(k) = conn.as_mut() else {
            match connect(BOLT_PORT, &who, &world, &trace).await {
                Some(s) => {
                    let (rd, wr) = s.into_split();
                    let in_flight = InFlight::default();
                    let closed = Rc::new(RefCell::new(None));
                    let at = elapsed();
                    let reader = tokio::task::spawn_local(read_answers(
                        who.clone(),
                        rd,
                        in_flight.clone(),
                        closed.clone(),
                        world.clone(),
                        trace.clone(),
                    ));
                    conn = Some(BoltConn {
                        wr,
                        in_flight,
                        closed,
                        reader,
                        next_id: 1,
                        at,
                    });
                }
                None => tokio::time::sleep(Duration::from_millis(20)).await,
            }
            continue;
        };
        tokio::time::sleep(Duration::from_millis(rng.below(25))).await;
        if k.closed.borrow().is_some() || k.in_flight.borrow().len() >= PIPELINE {
            continue;
        }
        let heartbeat = rng.below(10) == 0;
        let version = if rng.below(6) == 0 { 2 } else { 1 };
        let id = k.next_id;
        k.next_id += 1;
        let mut out = Vec::new();
        let start = elapsed();
        let content = if heartbeat {
            wire::request(&mut out, version, 1, 0, id, -1, "", &[], b"");
            "heartbeat".to_owned()
        } else {
            let content = format!("b{c}-{seq}");
            seq += 1;
            let timeout = i32::try_from(REQ_TIMEOUT.as_millis()).expect("timeout");
            wire::request(
                &mut out,
                version,
                1,
                1,
                id,
                timeout,
                "com.alipay.sofa.rpc.core.request.SofaRequest",
                &[("service", SERVICE), ("sofa_head_method_name", "echo")],
                content.as_bytes(),
            );
            content
        };
        trace.record(start, &who, format_args!("id {id} {content} v{version}"));
        k.in_flight.borrow_mut().insert(
            id,
            BoltPending {
                heartbeat,
                version,
                content,
                start,
            },
        );
        if let Err(e) = k.wr.write_all(&out).await {
            // Not written: nothing to answer. The connection is gone.
            k.in_flight.borrow_mut().remove(&id);
            trace.record(elapsed(), &who, format_args!("write failed: {e}"));
            k.closed.borrow_mut().get_or_insert(elapsed());
        }
    }
    if let Some(mut k) = conn.take() {
        let limit = elapsed() + REQ_TIMEOUT + SLACK + Duration::from_millis(100);
        while !k.in_flight.borrow().is_empty() && elapsed() < limit {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let _ = k.wr.shutdown().await;
        finish_bolt_conn(k, &who, &world).await;
    }
    world.borrow_mut().clients_done += 1;
}

/// Waits for the reader of a connection to end, then reports what was never answered.
async fn finish_bolt_conn(k: BoltConn, who: &str, world: &Shared) {
    let BoltConn {
        wr,
        in_flight,
        closed,
        reader,
        at,
        ..
    } = k;
    if tokio::time::timeout(Duration::from_secs(2), reader)
        .await
        .is_err()
    {
        world.borrow_mut().violations.push(format!(
            "{who}: the sidecar did not close the connection made at {at:?} after the client did"
        ));
    }
    drop(wr);
    let closed_at = *closed.borrow();
    let mut w = world.borrow_mut();
    for (id, p) in in_flight.borrow().iter() {
        w.violations.push(format!(
            "{who} id {id} ({}, v{}, written at {:?}) was never answered: the connection made at {at:?} closed at {closed_at:?}",
            p.content, p.version, p.start
        ));
    }
}

async fn read_answers(
    who: String,
    mut rd: turmoil::net::tcp::OwnedReadHalf,
    in_flight: InFlight,
    closed: Rc<RefCell<Option<Duration>>>,
    world: Shared,
    trace: Trace,
) {
    let mut buf = Vec::with_capacity(4096);
    loop {
        let frame = match peers::bolt::next_frame(&mut rd, &mut buf).await {
            Ok(Some(f)) => f,
            Ok(None) => {
                closed.borrow_mut().get_or_insert(elapsed());
                return;
            }
            Err(e) => {
                world
                    .borrow_mut()
                    .violations
                    .push(format!("{who}: undecodable answer: {e}"));
                closed.borrow_mut().get_or_insert(elapsed());
                return;
            }
        };
        let end = elapsed();
        let body = String::from_utf8_lossy(&frame.content).into_owned();
        trace.record(
            end,
            &who,
            format_args!("answer id {} status {} {body}", frame.id, frame.status),
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
        let want_cmd = if p.heartbeat { 0 } else { 2 };
        if frame.kind != 0
            || frame.version != p.version
            || (frame.status == 0 && frame.cmd != want_cmd)
        {
            w.violations.push(format!(
                "{who}: id {} ({}) sent as v{}, answered with v{} type {} cmd {}",
                frame.id, p.content, p.version, frame.version, frame.kind, frame.cmd
            ));
        }
        w.bolt.push(BoltDone {
            who: who.clone(),
            id: frame.id,
            heartbeat: p.heartbeat,
            content: p.content,
            start: p.start,
            end,
            status: frame.status,
            body,
        });
    }
}
