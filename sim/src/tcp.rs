//! TCP proxy scenarios: clients → sidecar (real engine, `tcp_proxy`) → three echo upstreams.
//!
//! Every client connection writes a seeded payload, reads it back byte for byte, half-closes,
//! and expects a clean EOF. Invariants checked after every run:
//!
//! 1. every client connection either completed its echo exchange byte for byte, or failed
//!    cleanly (error or EOF) within its deadline — none hangs;
//! 2. a connection that *started* after a fault began succeeded: failover hides the fault from
//!    new connections (only connections in flight at the fault may fail);
//! 3. the sidecar accepted exactly the connections the clients opened, and at the end no
//!    session is left open;
//! 4. scenario-specific: traffic is spread over the live upstreams; a recovered or repaired
//!    upstream receives traffic again.

use std::cell::RefCell;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::rc::Rc;
use std::time::Duration;

use sluice_core::config::Config;
use sluice_core::rng::Rng;
use sluice_runtime::stats::{StatsSnapshot, WorkerStats};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use turmoil::net::{TcpListener, TcpStream};

use crate::RunReport;
use crate::topology::{
    SIDECAR, add_clients, add_observer, add_sidecar, add_upstreams, elapsed, hosts_yaml, new_sim,
    report, run_to_end,
};
use crate::trace::Trace;

const UPSTREAMS: [&str; 3] = ["up1", "up2", "up3"];
const LISTEN_PORT: u16 = 10_000;
const UPSTREAM_PORT: u16 = 7_000;
const CLIENTS: usize = 4;
/// Clients open connections until this simulated time; faults all happen well before it.
const TRAFFIC_UNTIL: Duration = Duration::from_millis(4_000);
const CONNECT_TIMEOUT_MS: u64 = 300;
const IDLE_TIMEOUT_MS: u64 = 2_000;
/// A client gives up on a connection after this long (bounded: no connection hangs).
const CLIENT_DEADLINE: Duration = Duration::from_secs(3);

/// The four TCP scenarios of the foundation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TcpScenario {
    /// Steady traffic over three upstreams.
    SteadyTraffic,
    /// One upstream crashes mid-traffic and stays down.
    UpstreamCrash,
    /// One upstream crashes, then comes back and receives traffic again.
    UpstreamCrashAndRecover,
    /// The sidecar is partitioned from one upstream, then the partition is repaired.
    UpstreamPartition,
}

#[derive(Clone, Copy, Debug)]
enum Fault {
    Crash(usize),
    Bounce(usize),
    Partition(usize),
    Repair(usize),
}

#[derive(Debug)]
struct ConnRecord {
    client: usize,
    index: usize,
    start: Duration,
    end: Duration,
    outcome: Result<usize, String>,
}

#[derive(Default)]
struct World {
    connections: Vec<ConnRecord>,
    /// (upstream index, accept time)
    upstream_accepts: Vec<(usize, Duration)>,
    connections_started: usize,
    clients_done: usize,
}

fn sidecar_config(upstreams: &[IpAddr]) -> Config {
    let hosts = hosts_yaml(upstreams, UPSTREAM_PORT);
    let yaml = format!(
        r#"
listeners:
  - name: sim_in
    address: "[::]:{LISTEN_PORT}"
    tcp_proxy: {{ cluster: app, idle_timeout: {IDLE_TIMEOUT_MS}ms, max_connect_attempts: 3 }}
clusters:
  - name: app
    connect_timeout: {CONNECT_TIMEOUT_MS}ms
    lb_policy: round_robin
    hosts:
{hosts}drain_timeout: 1s
"#
    );
    Config::from_yaml(&yaml).unwrap_or_else(|e| panic!("sim config invalid: {e}\n{yaml}"))
}

/// Runs one scenario for one seed.
#[must_use]
pub fn run(scenario: TcpScenario, seed: u64) -> RunReport {
    let trace = Trace::default();
    let world = Rc::new(RefCell::new(World::default()));
    let mut schedule_rng = Rng::from_seed(seed ^ 0x5ca1_ab1e);
    let t1 = Duration::from_millis(500 + schedule_rng.below(1000));
    let t2 = t1 + Duration::from_millis(400 + schedule_rng.below(800));
    let victim = schedule_rng.below(UPSTREAMS.len() as u64) as usize;
    let mut faults: Vec<(Duration, Fault)> = match scenario {
        TcpScenario::SteadyTraffic => vec![],
        TcpScenario::UpstreamCrash => vec![(t1, Fault::Crash(victim))],
        TcpScenario::UpstreamCrashAndRecover => {
            vec![(t1, Fault::Crash(victim)), (t2, Fault::Bounce(victim))]
        }
        TcpScenario::UpstreamPartition => {
            vec![(t1, Fault::Partition(victim)), (t2, Fault::Repair(victim))]
        }
    };

    let mut sim = new_sim(seed, Duration::from_millis(20));

    add_upstreams(&mut sim, &UPSTREAMS, &world, &trace, echo_upstream);

    let sidecar = add_sidecar(&mut sim, seed, LISTEN_PORT, &UPSTREAMS, sidecar_config);

    {
        let (world, trace) = (world.clone(), trace.clone());
        add_clients(&mut sim, "clients", CLIENTS, move |c| {
            let client_seed = seed.wrapping_mul(31).wrapping_add(c as u64);
            client(c, client_seed, world.clone(), trace.clone())
        });
    }

    let final_stats = {
        let world = world.clone();
        let settle = Duration::from_millis(IDLE_TIMEOUT_MS + 500);
        add_observer(
            &mut sim,
            move || world.borrow().clients_done == CLIENTS,
            settle,
            sidecar,
            WorkerStats::snapshot,
        )
    };

    let mut violations = Vec::new();
    faults.sort_by_key(|f| f.0);
    let mut next_fault = 0;
    let mut fault_times: Vec<(Duration, Fault)> = Vec::new();
    run_to_end(&mut sim, &mut violations, |sim, _| {
        while next_fault < faults.len() && sim.elapsed() >= faults[next_fault].0 {
            let (_, fault) = faults[next_fault];
            let at = sim.elapsed();
            match fault {
                Fault::Crash(u) => sim.crash(UPSTREAMS[u]),
                Fault::Bounce(u) => sim.bounce(UPSTREAMS[u]),
                Fault::Partition(u) => sim.partition(SIDECAR, UPSTREAMS[u]),
                Fault::Repair(u) => sim.repair(SIDECAR, UPSTREAMS[u]),
            }
            trace.record(at, "SIM", format!("{fault:?}"));
            fault_times.push((at, fault));
            next_fault += 1;
        }
    });
    drop(sim);

    let w = world.borrow();
    check(
        scenario,
        &w,
        final_stats.borrow().as_ref(),
        &fault_times,
        &mut violations,
    );
    let ok = w.connections.iter().filter(|c| c.outcome.is_ok()).count();
    let summary = format!(
        "{scenario:?}: {} connections, {ok} ok, {} failed cleanly",
        w.connections.len(),
        w.connections.len() - ok
    );
    report(seed, &trace, violations, summary)
}

fn check(
    scenario: TcpScenario,
    w: &World,
    final_stats: Option<&StatsSnapshot>,
    faults: &[(Duration, Fault)],
    violations: &mut Vec<String>,
) {
    if w.connections.len() != w.connections_started {
        violations.push(format!(
            "{} of {} client connections finished",
            w.connections.len(),
            w.connections_started
        ));
    }
    let first_fault = faults.first().map(|f| f.0);
    for c in &w.connections {
        let took = c.end - c.start;
        if took > CLIENT_DEADLINE + Duration::from_millis(10) {
            violations.push(format!(
                "client{} connection {} took {took:?}, past its {CLIENT_DEADLINE:?} deadline",
                c.client, c.index
            ));
        }
        if let Err(e) = &c.outcome {
            // Only a connection already open (or opening) when the first fault hit may fail;
            // the margin covers a connect whose SYN was in flight at that instant.
            let may_fail = first_fault.is_some_and(|f| c.start <= f + Duration::from_millis(25));
            if !may_fail || e.starts_with("CORRUPT") {
                violations.push(format!(
                    "client{} connection {} (started at {:?}) failed: {e}",
                    c.client, c.index, c.start
                ));
            }
        }
    }
    match final_stats {
        None => violations.push("the observer never read the sidecar's counters".into()),
        Some(snap) => {
            let open = snap.downstream_cx_active();
            if open != 0 {
                violations.push(format!("{open} sidecar session(s) still open at the end"));
            }
            if snap.downstream_cx_total != w.connections.len() as u64 {
                violations.push(format!(
                    "sidecar accepted {} connections, clients opened {}",
                    snap.downstream_cx_total,
                    w.connections.len()
                ));
            }
        }
    }
    let accepts_of = |u: usize, after: Duration| {
        w.upstream_accepts
            .iter()
            .filter(|(x, t)| *x == u && *t >= after)
            .count()
    };
    match scenario {
        TcpScenario::SteadyTraffic => {
            for (u, name) in UPSTREAMS.iter().enumerate() {
                if accepts_of(u, Duration::ZERO) == 0 {
                    violations.push(format!("{name} received no traffic"));
                }
            }
        }
        TcpScenario::UpstreamCrash => {}
        TcpScenario::UpstreamCrashAndRecover | TcpScenario::UpstreamPartition => {
            if let Some((healed, fault)) = faults.get(1) {
                let (Fault::Bounce(u) | Fault::Repair(u)) = fault else {
                    unreachable!()
                };
                if accepts_of(*u, *healed) == 0 {
                    violations.push(format!(
                        "{} received no traffic after it came back ({fault:?} at {healed:?})",
                        UPSTREAMS[*u]
                    ));
                }
            } else {
                violations.push("the healing fault never ran".into());
            }
        }
    }
}

async fn echo_upstream(index: usize, world: Rc<RefCell<World>>, trace: Trace) -> turmoil::Result {
    let listener = TcpListener::bind(SocketAddr::new(
        IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        UPSTREAM_PORT,
    ))
    .await?;
    trace.record(elapsed(), UPSTREAMS[index], "listening");
    loop {
        let (mut stream, _) = listener.accept().await?;
        world.borrow_mut().upstream_accepts.push((index, elapsed()));
        tokio::task::spawn_local(async move {
            let mut buf = vec![0u8; 4096];
            loop {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if stream.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                }
            }
            let _ = stream.shutdown().await;
        });
    }
}

async fn client(c: usize, seed: u64, world: Rc<RefCell<World>>, trace: Trace) {
    let mut rng = Rng::from_seed(seed);
    let who = format!("client{c}");
    let mut index = 0;
    while elapsed() < TRAFFIC_UNTIL {
        tokio::time::sleep(Duration::from_millis(rng.below(120))).await;
        world.borrow_mut().connections_started += 1;
        let len = 1 + rng.below(8192) as usize;
        let payload: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
        // The payload goes out in a few chunks with pauses, so that connections stay open
        // long enough (~50–400 ms) for faults to catch some of them in flight.
        let pauses: Vec<Duration> = (0..1 + rng.below(4))
            .map(|_| Duration::from_millis(rng.below(100)))
            .collect();
        let start = elapsed();
        let outcome = match tokio::time::timeout(CLIENT_DEADLINE, exchange(&payload, &pauses)).await
        {
            Ok(r) => r,
            Err(_) => Err("gave up at the deadline".to_owned()),
        };
        let end = elapsed();
        trace.record(
            end,
            &who,
            format_args!("conn {index} ({len} bytes) -> {outcome:?}"),
        );
        world.borrow_mut().connections.push(ConnRecord {
            client: c,
            index,
            start,
            end,
            outcome,
        });
        index += 1;
    }
    world.borrow_mut().clients_done += 1;
}

/// Connects through the sidecar, echoes `payload` (sent in `pauses.len()` chunks, pausing
/// before each), half-closes, and expects a clean EOF.
async fn exchange(payload: &[u8], pauses: &[Duration]) -> Result<usize, String> {
    let s = TcpStream::connect((SIDECAR, LISTEN_PORT))
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let (mut r, mut w) = s.into_split();
    let write = async {
        let chunk = payload.len().div_ceil(pauses.len());
        for (part, pause) in payload.chunks(chunk).zip(pauses) {
            tokio::time::sleep(*pause).await;
            w.write_all(part).await.map_err(|e| format!("write: {e}"))?;
        }
        w.shutdown().await.map_err(|e| format!("shutdown: {e}"))
    };
    let read = async {
        let mut got = Vec::with_capacity(payload.len());
        let mut buf = [0u8; 4096];
        loop {
            match r.read(&mut buf).await {
                Ok(0) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) => return Err(format!("read: {e} after {} bytes", got.len())),
            }
        }
        Ok(got)
    };
    let (w, got) = tokio::join!(write, read);
    let got = got?;
    if got.len() != payload.len() {
        return Err(format!(
            "EOF after {} of {} bytes{}",
            got.len(),
            payload.len(),
            w.err().map(|e| format!(" ({e})")).unwrap_or_default()
        ));
    }
    w?;
    if got != payload {
        let at = got
            .iter()
            .zip(payload)
            .position(|(a, b)| a != b)
            .unwrap_or(0);
        // Corruption is never a clean failure: report it loudly.
        return Err(format!("CORRUPT: echoed bytes differ at offset {at}"));
    }
    Ok(payload.len())
}
