//! Drain scenarios: a config reload and a SIGTERM drain under keep-alive HTTP/1.1 traffic to slow
//! upstreams (issue 18.2).
//!
//! Four HTTP/1.1 clients send GETs with unique ids back to back (0–20 ms of think time from the
//! seeded RNG) on keep-alive connections; a response announcing `connection: close` makes a
//! client reconnect (and watch that the proxy closes the old connection). A fifth client makes
//! one request and then leaves its keep-alive connection idle. Three upstreams take 20–100 ms
//! per request and send the head and the body apart ([`peers::http::slow_upstream_conn`], shared
//! with the upgrade scenarios), so a drain often starts while a response whose head promised
//! keep-alive is still on its way. No fault is injected.
//!
//! - **`reload_under_slow_http_traffic`**: at 2–3 seeded moments the sidecar's
//!   [`Worker`] — the same type a worker thread of the binary drives — reloads: the sim builds
//!   the new generation's engine (its config differs: its route timeout) and hands it to
//!   [`Worker::reload`], which takes the listening socket (with its queue) off the serving
//!   engine, keeps it for the new one (same address, per the config diff), stops the old one's
//!   health checks, moves its counters, starts the new generation and drains the old one.
//!   There is no Bolt listener, so no connection migrates.
//! - **`sigterm_drain_under_slow_http_traffic`**: at a seeded moment the sidecar's [`Worker`]
//!   is stopped as on SIGTERM ([`Worker::stop`], what the binary's worker does): its engine
//!   stops accepting (the listening socket closes), drains its open connections up to
//!   `drain_timeout`, then returns.
//!
//! What the checks know of generations (when each ended, its open connections at the end)
//! comes from the Worker's reports: its [`WorkerEvent`]s and its [`WorkerStatus`].
//!
//! Invariants of the reload scenario:
//!
//! - R1. every request gets exactly one complete 2xx response carrying its own id (the socket
//!   moves between engines, so no connect fails either), and no byte arrives unasked;
//! - R2. in particular, a request written on a connection whose previous response did not
//!   announce `connection: close` is answered — never an EOF or a reset;
//! - R3. every old generation ends (drained) before the run ends, within `drain_timeout` + 50 ms
//!   of the reload that replaced it; the last one serves on;
//! - R4. no connection is left open at the end (per generation).
//!
//! Invariants of the SIGTERM scenario:
//!
//! - S1. a request sent on an open connection whose last response did not announce a close gets
//!   its whole response (2xx, its own id); so does the first request of a connection made
//!   before the drain started;
//! - S2. a request on a connection made after the drain started may fail to connect, or find
//!   the connection closed (expected, not a violation); a response it gets is still its own;
//! - S3. the engine ends within `drain_timeout` + 50 ms of the drain's start;
//! - S4. no connection is left open at the end.
//!
//! In both: every connection that got a response announcing `connection: close` is closed by
//! the proxy within 200 ms, with nothing more sent on it (C); the idle connection is closed
//! only once a drain started, and gets no bytes (I).
//!
//! Sabotage checks, each over a 64-seed sweep of both scenarios:
//!
//! - the issue 18.2 bug put back in `runtime/src/http.rs` (the connection loop ends on
//!   `!outcome.reusable || self.lifecycle.is_stopping()`: a keep-alive response in flight when
//!   the drain starts is followed by a close) trips R2 (63 of 64 reload seeds) and S1 (57 of
//!   64 SIGTERM seeds): "on a connection kept alive by the previous response ... EOF after 0
//!   response bytes: written and never answered" (a few "Connection reset");
//! - a draining connection not closed after its `connection: close` response (the loop ends on
//!   `!outcome.reusable && !self.lifecycle.is_stopping()`) trips C on every seed of
//!   both;
//! - no bound on a draining engine's idle connections (`DRAIN_IDLE_GRACE` 60 s instead of 1 s)
//!   trips R3 and S3 on every seed of both (the idle connection holds the drain).
//!
//! `drain_timeout` is 1.5 s, above the runtime's 1 s `DRAIN_IDLE_GRACE`, so that idle
//! keep-alive connections are ended by the grace (the path these scenarios check), not cut by the
//! deadline. (When this scenario was written an HTTP/1.1 connection did not observe
//! `drain_timeout` at all; since adf6e2c the deadline ends it, answering 503 to a request still
//! waiting for its upstream — covered end to end by `e2e_reload`'s SIGTERM test with a 300 ms
//! `drain_timeout`.)

use std::cell::RefCell;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use sluice_core::config::Config;
use sluice_core::rng::Rng;
use sluice_runtime::engine::Engine;
use sluice_runtime::net::TurmoilNet;
use sluice_runtime::stats::WorkerStats;
use sluice_runtime::worker::{Worker, WorkerEvent, WorkerHooks, WorkerStatus};
use tokio::io::AsyncReadExt;
use turmoil::net::{TcpListener, TcpStream};

use crate::RunReport;
use crate::peers;
use crate::topology::{
    SIDECAR, add_clients, add_upstreams, elapsed, hosts_yaml, new_sim, report, run_to_end,
};
use crate::trace::Trace;

const UPSTREAMS: [&str; 3] = ["up1", "up2", "up3"];
const PORT: u16 = 10_000;
const UP_PORT: u16 = 8_080;
const MAX_LATENCY: Duration = Duration::from_millis(10);
const CLIENTS: usize = 4;
const TRAFFIC_UNTIL: Duration = Duration::from_millis(3_500);
/// Think time between requests: 0 to this, from the seeded RNG.
const THINK_MS: u64 = 20;
/// Upstream work per request: from `MIN_WORK_MS` to `MAX_WORK_MS`.
const MIN_WORK_MS: u64 = 20;
const MAX_WORK_MS: u64 = 100;
const CONNECT_DEADLINE: Duration = Duration::from_secs(2);
const HTTP_DEADLINE: Duration = Duration::from_secs(5);
const IDLE_MS: u64 = 5_000;
const DRAIN_TIMEOUT: Duration = Duration::from_millis(1_500);
/// How late past `drain_timeout` the drained engine may return.
const END_SLACK: Duration = Duration::from_millis(50);
/// How long after a `connection: close` response the proxy has to close the connection.
const CLOSE_WITHIN: Duration = Duration::from_millis(200);

/// The drain scenarios.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DrainScenario {
    /// 2–3 config reloads under keep-alive traffic to slow upstreams.
    Reload,
    /// A SIGTERM drain under keep-alive traffic to slow upstreams.
    Sigterm,
}

/// What the seed decided: when the reloads happen, or when the drain starts.
#[derive(Clone, Debug)]
struct Plan {
    at: Vec<Duration>,
}

fn plan(scenario: DrainScenario, seed: u64) -> Plan {
    let mut r = Rng::from_seed(seed ^ 0x0d4a_1a5e);
    let at = match scenario {
        DrainScenario::Reload => {
            let n = 2 + r.below(2);
            let mut t = Duration::from_millis(200);
            (0..n)
                .map(|_| {
                    t += Duration::from_millis(300 + r.below(700));
                    t
                })
                .collect()
        }
        DrainScenario::Sigterm => vec![Duration::from_millis(500 + r.below(1_500))],
    };
    Plan { at }
}

#[derive(Debug)]
struct Req {
    id: String,
    start: Duration,
    end: Duration,
    /// Status, or what happened instead of a response.
    outcome: Result<u16, String>,
    /// Written on a connection whose previous response did not announce a close.
    promised: bool,
    /// When the connection's connect started.
    conn_started: Duration,
}

/// A generation, as the Worker's events reported it.
struct GenRecord {
    name: String,
    ended: Option<Duration>,
}

#[derive(Default)]
struct World {
    reqs: Vec<Req>,
    started: usize,
    violations: Vec<String>,
    connects: u64,
    refused: u64,
    closes_announced: u64,
    clients_done: usize,
    generations: Vec<GenRecord>,
    /// The sidecar's Worker's status.
    worker: Option<WorkerStatus>,
    /// Open downstream connections per generation, read by the observer at the end.
    final_open: Option<Vec<(String, u64)>>,
}

type Shared = Rc<RefCell<World>>;

fn config(upstreams: &[IpAddr], generation: u64) -> Config {
    let hosts = hosts_yaml(upstreams, UP_PORT);
    // Each generation's config differs a little (as a reload's does).
    let route_timeout = 3_000 + 100 * generation;
    let yaml = format!(
        r#"
listeners:
  - name: http_in
    address: "[::]:{PORT}"
    http:
      idle_timeout: {IDLE_MS}ms
      virtual_hosts:
        - name: all
          domains: ["*"]
          routes:
            - match: {{ prefix: / }}
              route: {{ cluster: web, timeout: {route_timeout}ms }}
clusters:
  - name: web
    connect_timeout: 300ms
    lb_policy: round_robin
    hosts:
{hosts}drain_timeout: {}ms
"#,
        DRAIN_TIMEOUT.as_millis(),
    );
    Config::from_yaml(&yaml).unwrap_or_else(|e| panic!("sim config invalid: {e}\n{yaml}"))
}

/// Runs one drain scenario for one seed.
#[must_use]
pub fn run(scenario: DrainScenario, seed: u64) -> RunReport {
    let trace = Trace::default();
    let world = Shared::default();
    let plan = plan(scenario, seed);
    trace.record(Duration::ZERO, "SIM", format_args!("{scenario:?} {plan:?}"));

    let mut sim = new_sim(seed, MAX_LATENCY);
    add_upstreams(&mut sim, &UPSTREAMS, &world, &trace, upstream);
    {
        let (world, trace, plan) = (world.clone(), trace.clone(), plan.clone());
        sim.host(SIDECAR, move || {
            let (world, trace, plan) = (world.clone(), trace.clone(), plan.clone());
            async move { sidecar(scenario, seed, plan, world, trace).await }
        });
    }
    {
        let (world, trace) = (world.clone(), trace.clone());
        add_clients(&mut sim, "http_clients", CLIENTS, move |c| {
            let client_seed = seed.wrapping_mul(151).wrapping_add(c as u64);
            client(c, client_seed, world.clone(), trace.clone())
        });
    }
    {
        let (world, trace) = (world.clone(), trace.clone());
        let first_drain = plan.at[0];
        let client_seed = seed.wrapping_mul(157).wrapping_add(3);
        sim.client("idle", async move {
            idle_client(client_seed, first_drain, world, trace).await;
            Ok(())
        });
    }
    {
        let world = world.clone();
        sim.client("observer", async move {
            while world.borrow().clients_done < CLIENTS + 1 {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            // Past the longest drain.
            tokio::time::sleep(DRAIN_TIMEOUT + Duration::from_millis(500)).await;
            let open = world
                .borrow()
                .worker
                .as_ref()
                .map(WorkerStatus::generations)
                .unwrap_or_default()
                .iter()
                .map(|g| (generation_name(g.generation), g.open_connections()))
                .collect();
            world.borrow_mut().final_open = Some(open);
            Ok(())
        });
    }

    let mut violations = Vec::new();
    run_to_end(&mut sim, &mut violations, |_, _| {});
    let end = sim.elapsed();
    drop(sim);

    let w = world.borrow();
    check(scenario, &plan, &w, end, &mut violations);
    let ok = w
        .reqs
        .iter()
        .filter(|r| matches!(r.outcome, Ok(200..=299)))
        .count();
    let promised = w.reqs.iter().filter(|r| r.promised).count();
    let summary = format!(
        "{scenario:?}: {} connects ({} refused), {} requests ({ok} 2xx, {promised} on reused connections), {} close(s) announced, generations {}",
        w.connects,
        w.refused,
        w.reqs.len(),
        w.closes_announced,
        w.generations
            .iter()
            .map(|g| format!("{}(ended {:?})", g.name, g.ended))
            .collect::<Vec<_>>()
            .join(" → ")
    );
    report(seed, &trace, violations, summary)
}

fn check(scenario: DrainScenario, plan: &Plan, w: &World, end: Duration, v: &mut Vec<String>) {
    v.extend(w.violations.iter().cloned());
    if w.reqs.len() != w.started {
        v.push(format!(
            "{} of {} requests finished",
            w.reqs.len(),
            w.started
        ));
    }
    // The SIGTERM drain's start, less a network latency (a connect just before it may still
    // land in the listening socket's queue when the socket closes).
    let drain_at = match scenario {
        DrainScenario::Reload => None,
        DrainScenario::Sigterm => Some(plan.at[0]),
    };
    for r in &w.reqs {
        let what = if r.promised {
            "on a connection kept alive by the previous response"
        } else {
            "first on its connection"
        };
        match &r.outcome {
            Ok(200..=299) => continue,
            // Expected in the SIGTERM drain: a new connection made after the drain started
            // finds no listener (or a socket closed under it). Never for a promised request.
            Err(_)
                if !r.promised && drain_at.is_some_and(|d| r.conn_started + MAX_LATENCY >= d) => {}
            other => v.push(format!(
                "request {} ({what}, connection from {:?}) started at {:?} got {other:?} at {:?}",
                r.id, r.conn_started, r.start, r.end
            )),
        }
    }

    match scenario {
        DrainScenario::Reload => {
            let expected = plan.at.len() + 1;
            if w.generations.len() != expected {
                v.push(format!(
                    "{} generations ran, expected {expected}",
                    w.generations.len()
                ));
            }
            if let Some((last, old)) = w.generations.split_last() {
                if let Some(t) = last.ended {
                    v.push(format!(
                        "{} (the last generation) returned at {t:?}",
                        last.name
                    ));
                }
                // The generation replaced by reload `i` drains within drain_timeout of it.
                for (g, at) in old.iter().zip(&plan.at) {
                    match g.ended {
                        None => v.push(format!("{} never finished draining", g.name)),
                        Some(t) if t >= end || t > *at + DRAIN_TIMEOUT + END_SLACK => {
                            v.push(format!(
                                "{} replaced at {at:?} returned at {t:?}, past drain_timeout {DRAIN_TIMEOUT:?} + {END_SLACK:?} (run ended at {end:?})",
                                g.name
                            ));
                        }
                        Some(_) => {}
                    }
                }
            }
        }
        DrainScenario::Sigterm => {
            let at = plan.at[0];
            match w.generations.first().and_then(|g| g.ended) {
                None => v.push(format!("the engine told to stop at {at:?} never returned")),
                Some(t) if t > at + DRAIN_TIMEOUT + END_SLACK => v.push(format!(
                    "the engine told to stop at {at:?} returned at {t:?}, past drain_timeout {DRAIN_TIMEOUT:?} + {END_SLACK:?}"
                )),
                Some(_) => {}
            }
        }
    }

    match &w.final_open {
        None => v.push("the observer never read the counters".into()),
        Some(open) => {
            for (name, n) in open {
                if *n != 0 {
                    v.push(format!("{name} has {n} connections still open"));
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The sidecar host.

fn generation_name(generation: u64) -> String {
    format!("gen#{generation}")
}

/// The Worker's events, recorded in the world and the trace.
fn hooks(world: &Shared, trace: &Trace) -> WorkerHooks {
    let (world, trace) = (world.clone(), trace.clone());
    WorkerHooks {
        close_listeners: None,
        on_event: Some(Box::new(move |event| match event {
            WorkerEvent::GenerationStarted { generation } => {
                let name = generation_name(generation);
                trace.record(elapsed(), SIDECAR, format_args!("{name} serves"));
                world
                    .borrow_mut()
                    .generations
                    .push(GenRecord { name, ended: None });
            }
            WorkerEvent::GenerationDraining { .. } => {}
            WorkerEvent::GenerationEnded { generation } => {
                let name = generation_name(generation);
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

fn new_engine(config: Config, seed: u64) -> std::io::Result<Rc<Engine<TurmoilNet>>> {
    let config = Arc::new(config);
    let stats = Arc::new(WorkerStats::new(&config));
    Engine::new(TurmoilNet, config, 0, seed, stats)
}

async fn sidecar(
    scenario: DrainScenario,
    seed: u64,
    plan: Plan,
    world: Shared,
    trace: Trace,
) -> turmoil::Result {
    let ips: Vec<IpAddr> = UPSTREAMS.iter().map(|u| turmoil::lookup(*u)).collect();
    let listener =
        TcpListener::bind(SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), PORT)).await?;
    let engine = new_engine(config(&ips, 0), seed)?;
    let mut worker = Worker::start(engine, vec![listener], hooks(&world, &trace));
    world.borrow_mut().worker = Some(worker.status());
    for (i, at) in plan.at.iter().enumerate() {
        tokio::time::sleep(at.saturating_sub(elapsed())).await;
        match scenario {
            DrainScenario::Reload => {
                let generation = i as u64 + 1;
                trace.record(elapsed(), SIDECAR, format_args!("reload {generation}"));
                // As a worker of the binary does on a reload: the new engine first (if it
                // cannot be built nothing changes), then the Worker switches to it.
                let engine = new_engine(config(&ips, generation), seed ^ (0x6e00 + generation))?;
                let failed = worker
                    .reload(engine, |i| {
                        Err(std::io::Error::other(format!(
                            "listener {i} has a new address: the reload configs keep theirs"
                        )))
                    })
                    .await
                    .err()
                    .unwrap_or_default();
                for e in failed {
                    world
                        .borrow_mut()
                        .violations
                        .push(format!("reload {generation}: {e}"));
                }
            }
            DrainScenario::Sigterm => {
                trace.record(elapsed(), SIDECAR, "SIGTERM: drain");
                worker.stop();
            }
        }
    }
    // Keeps the Worker: dropping it would drain the serving generation.
    let _keep = worker;
    std::future::pending::<()>().await;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Upstreams and clients.

async fn upstream(index: usize, _world: Shared, trace: Trace) -> turmoil::Result {
    let any = IpAddr::V6(Ipv6Addr::UNSPECIFIED);
    let listener = TcpListener::bind(SocketAddr::new(any, UP_PORT)).await?;
    trace.record(elapsed(), UPSTREAMS[index], "listening");
    loop {
        let (stream, _) = listener.accept().await?;
        tokio::task::spawn_local(peers::http::slow_upstream_conn(
            stream,
            MIN_WORK_MS,
            MAX_WORK_MS,
        ));
    }
}

/// Connects to the sidecar; `None` (recorded) when refused or not accepted in time.
async fn connect(who: &str, world: &Shared, trace: &Trace) -> Option<TcpStream> {
    world.borrow_mut().connects += 1;
    let r = tokio::time::timeout(CONNECT_DEADLINE, TcpStream::connect((SIDECAR, PORT))).await;
    let failure = match r {
        Ok(Ok(s)) => return Some(s),
        Ok(Err(e)) => format!("connect refused: {e}"),
        Err(_) => format!("connect not accepted within {CONNECT_DEADLINE:?}"),
    };
    world.borrow_mut().refused += 1;
    trace.record(elapsed(), who, &failure);
    None
}

/// After a response announcing `connection: close`: the proxy must close the connection (EOF
/// or reset) within [`CLOSE_WITHIN`], sending nothing more.
async fn expect_close(mut s: TcpStream, what: String, world: Shared, trace: Trace) {
    let mut chunk = [0u8; 1024];
    let r = tokio::time::timeout(CLOSE_WITHIN, s.read(&mut chunk)).await;
    let problem = match r {
        Ok(Ok(0) | Err(_)) => None,
        Ok(Ok(n)) => Some(format!("sent {n} more bytes")),
        Err(_) => Some(format!(
            "was not closed by the proxy within {CLOSE_WITHIN:?}"
        )),
    };
    if let Some(p) = problem {
        trace.record(elapsed(), "close-check", format_args!("{what} {p}"));
        world
            .borrow_mut()
            .violations
            .push(format!("{what} announced connection: close but {p}"));
    }
}

/// Makes one request on a keep-alive connection, then leaves it idle until the end of the
/// traffic: the proxy may close it only once a drain started (after the runtime's `DRAIN_IDLE_GRACE`,
/// 1 s: the connection holds the draining engine that long), and never sends anything on it.
///
async fn idle_client(seed: u64, first_drain: Duration, world: Shared, trace: Trace) {
    let mut rng = Rng::from_seed(seed);
    let who = "idle";
    tokio::time::sleep(Duration::from_millis(rng.below(300))).await;
    let id = "idle-0".to_owned();
    world.borrow_mut().started += 1;
    let start = elapsed();
    let Some(mut s) = connect(who, &world, &trace).await else {
        world.borrow_mut().reqs.push(Req {
            id,
            start,
            end: elapsed(),
            outcome: Err("connect failed".into()),
            promised: false,
            conn_started: start,
        });
        world.borrow_mut().clients_done += 1;
        return;
    };
    let request =
        format!("GET /item HTTP/1.1\r\nhost: sim\r\nx-sim-id: {id}\r\ncontent-length: 0\r\n\r\n");
    let mut buf = Vec::new();
    let outcome = match tokio::time::timeout(
        HTTP_DEADLINE,
        peers::http::exchange::<4096>(&mut s, &mut buf, request.as_bytes()),
    )
    .await
    {
        Err(_) => Err("no response by the deadline".to_owned()),
        Ok(Err(e)) => Err(e.to_string()),
        Ok(Ok(resp)) => resp.answering(&id),
    };
    trace.record(elapsed(), who, format_args!("{id} -> {outcome:?}"));
    let keep = matches!(outcome, Ok((_, true)));
    world.borrow_mut().reqs.push(Req {
        id,
        start,
        end: elapsed(),
        outcome: outcome.map(|(status, _)| status),
        promised: false,
        conn_started: start,
    });
    if keep {
        let mut chunk = [0u8; 1024];
        let until = TRAFFIC_UNTIL.saturating_sub(elapsed());
        let r = tokio::time::timeout(until, s.read(&mut chunk)).await;
        let at = elapsed();
        let problem = match r {
            Err(_) => None,
            Ok(Ok(0) | Err(_)) => {
                trace.record(at, who, "closed by the proxy");
                (at < first_drain).then(|| "closed before any drain started".to_owned())
            }
            Ok(Ok(n)) => Some(format!("sent {n} unrequested bytes")),
        };
        if let Some(p) = problem {
            world.borrow_mut().violations.push(format!(
                "{who}: the idle keep-alive connection was {p} (at {at:?})"
            ));
        }
    }
    world.borrow_mut().clients_done += 1;
}

async fn client(c: usize, seed: u64, world: Shared, trace: Trace) {
    let mut rng = Rng::from_seed(seed);
    let who = format!("http{c}");
    let mut seq = 0;
    // The connection, when its connect started, and whether its last response kept it alive.
    let mut conn: Option<(TcpStream, Duration, bool)> = None;
    let mut buf = Vec::with_capacity(4096);
    let mut closers = Vec::new();
    tokio::time::sleep(Duration::from_millis(rng.below(50))).await;
    while elapsed() < TRAFFIC_UNTIL {
        tokio::time::sleep(Duration::from_millis(rng.below(THINK_MS + 1))).await;
        let id = format!("h{c}-{seq}");
        seq += 1;
        let request = format!(
            "GET /item HTTP/1.1\r\nhost: sim\r\nx-sim-id: {id}\r\ncontent-length: 0\r\n\r\n"
        );
        world.borrow_mut().started += 1;
        let start = elapsed();
        if conn.is_none() {
            buf.clear();
            conn = connect(&who, &world, &trace)
                .await
                .map(|s| (s, start, false));
        }
        let Some((s, conn_started, promised)) = conn.as_mut() else {
            trace.record(elapsed(), &who, format_args!("{id} -> no connection"));
            world.borrow_mut().reqs.push(Req {
                id,
                start,
                end: elapsed(),
                outcome: Err("connect failed".into()),
                promised: false,
                conn_started: start,
            });
            // The sidecar is gone (a SIGTERM drain) or broken (a violation): stop here.
            break;
        };
        let (conn_started, promised) = (*conn_started, *promised);
        if !buf.is_empty() {
            world.borrow_mut().violations.push(format!(
                "{who}: {} unexpected bytes after a response, before {id}",
                buf.len()
            ));
            buf.clear();
        }
        let outcome = match tokio::time::timeout(
            HTTP_DEADLINE,
            peers::http::exchange::<4096>(s, &mut buf, request.as_bytes()),
        )
        .await
        {
            Err(_) => Err("no response by the deadline".to_owned()),
            Ok(Err(peers::http::Failure::Eof(n))) => Err(format!(
                "EOF after {n} response bytes: written and never answered"
            )),
            Ok(Err(e)) => Err(e.to_string()),
            Ok(Ok(resp)) => resp.answering(&id),
        };
        let end = elapsed();
        trace.record(end, &who, format_args!("{id} -> {outcome:?}"));
        let keep = match &outcome {
            Ok((_, keep)) => *keep,
            Err(_) => false,
        };
        let (stream, _, _) = conn.take().expect("connection");
        if keep {
            conn = Some((stream, conn_started, true));
        } else if outcome.is_ok() {
            // The response announced a close: the proxy must close the connection.
            world.borrow_mut().closes_announced += 1;
            closers.push(tokio::task::spawn_local(expect_close(
                stream,
                format!("{who}: the connection that answered {id}"),
                world.clone(),
                trace.clone(),
            )));
        }
        world.borrow_mut().reqs.push(Req {
            id,
            start,
            end,
            outcome: outcome.map(|(status, _)| status),
            promised,
            conn_started,
        });
    }
    drop(conn);
    for c in closers {
        let _ = c.await;
    }
    world.borrow_mut().clients_done += 1;
}
