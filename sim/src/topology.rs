//! The parts every scenario's world shares: a seeded simulation, the upstream hosts, the sidecar
//! host running the real engine, an observer that reads the sidecar's counters once the clients
//! are done, the loop that steps the simulation under a fault schedule, and the run's report.

use std::cell::RefCell;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use sluice_core::config::Config;
use sluice_runtime::engine::Engine;
use sluice_runtime::net::TurmoilNet;
use sluice_runtime::stats::WorkerStats;
use turmoil::net::TcpListener;

use crate::RunReport;
use crate::trace::Trace;

/// The sidecar's host name.
pub const SIDECAR: &str = "sidecar";

/// A simulation seeded with `seed`, on IPv6 link-local addresses, with message latencies from
/// 1 ms to `max_latency`, stopped (as a hang) after 60 simulated seconds.
#[must_use]
pub fn new_sim<'a>(seed: u64, max_latency: Duration) -> turmoil::Sim<'a> {
    turmoil::Builder::new()
        .rng_seed(seed)
        .ip_version(turmoil::IpVersion::V6)
        .min_message_latency(Duration::from_millis(1))
        .max_message_latency(max_latency)
        .simulation_duration(Duration::from_secs(60))
        .build()
}

/// Simulated time since the start (inside a host or client).
#[must_use]
pub fn elapsed() -> Duration {
    turmoil::sim_elapsed().unwrap_or_default()
}

/// YAML list items `- { address: "[ip]:port" }` for a cluster's hosts (6-space indent).
#[must_use]
pub fn hosts_yaml(upstreams: &[IpAddr], port: u16) -> String {
    upstreams
        .iter()
        .map(|ip| {
            format!(
                "      - {{ address: \"{}\" }}\n",
                SocketAddr::new(*ip, port)
            )
        })
        .collect()
}

/// Where the sidecar's counters appear once it has started (a bounce replaces them).
pub type StatsSlot = Rc<RefCell<Option<Arc<WorkerStats>>>>;

/// Adds the sidecar host: the real engine, with the config `config` makes from the upstreams'
/// addresses, listening on `[::]:port` (the config's single listener). The engine's RNG is
/// seeded with `seed`.
pub fn add_sidecar<'a>(
    sim: &mut turmoil::Sim<'a>,
    seed: u64,
    port: u16,
    upstreams: &'static [&'static str],
    config: fn(&[IpAddr]) -> Config,
) -> StatsSlot {
    let slot = StatsSlot::default();
    let mine = slot.clone();
    sim.host(SIDECAR, move || {
        let slot = mine.clone();
        async move {
            let ips: Vec<IpAddr> = upstreams.iter().map(|u| turmoil::lookup(*u)).collect();
            let config = Arc::new(config(&ips));
            // Shaped like the real server's, so per-listener, per-cluster and per-host counters
            // run in the simulation too.
            let stats = Arc::new(WorkerStats::new(&config));
            *slot.borrow_mut() = Some(stats.clone());
            let listener =
                TcpListener::bind(SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port)).await?;
            let engine = Engine::new(TurmoilNet, config, 0, seed, stats)?;
            engine.run(vec![listener], std::future::pending()).await;
            Ok(())
        }
    });
    slot
}

/// Adds one client host, `name`, running `count` concurrent client tasks (`task(i)` for
/// `i in 0..count`) and ending when all have.
///
/// One host, not one per client: turmoil steps every host's runtime on every tick, so the cost
/// of a run grows with the number of hosts far more than with the number of tasks (the
/// breaker scenario's thirty client hosts made it ~7× slower than thirty tasks on one). The
/// clients' connections differ by source port only, which no scenario's faults (which hit the
/// upstreams and the sidecar) or checks tell apart.
pub fn add_clients<'a, F, Fut>(sim: &mut turmoil::Sim<'a>, name: &str, count: usize, task: F)
where
    F: Fn(usize) -> Fut + 'static,
    Fut: Future<Output = ()> + 'static,
{
    sim.client(name, async move {
        let tasks: Vec<_> = (0..count)
            .map(|i| tokio::task::spawn_local(task(i)))
            .collect();
        for t in tasks {
            t.await?;
        }
        Ok(())
    });
}

/// Adds a client that waits until `done()` holds, then `settle` more (so idle sessions are
/// reaped), then reads the sidecar's counters with `read` (e.g. [`WorkerStats::snapshot`], or
/// [`WorkerStats::detailed`] for every counter per listener, cluster and host).
pub fn add_observer<'a, T: 'static>(
    sim: &mut turmoil::Sim<'a>,
    done: impl Fn() -> bool + 'static,
    settle: Duration,
    stats: StatsSlot,
    read: fn(&WorkerStats) -> T,
) -> Rc<RefCell<Option<T>>> {
    let result = Rc::new(RefCell::new(None));
    let out = result.clone();
    sim.client("observer", async move {
        while !done() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tokio::time::sleep(settle).await;
        let snapshot = stats.borrow().as_deref().map(read);
        *out.borrow_mut() = snapshot;
        Ok(())
    });
    result
}

/// Adds one host per name in `upstreams`, each running `serve(index, world, trace)` (again
/// after a bounce).
pub fn add_upstreams<'a, W, F, Fut>(
    sim: &mut turmoil::Sim<'a>,
    upstreams: &[&str],
    world: &W,
    trace: &Trace,
    serve: F,
) where
    W: Clone + 'static,
    F: Fn(usize, W, Trace) -> Fut + Copy + 'static,
    Fut: Future<Output = turmoil::Result> + 'static,
{
    for (i, name) in upstreams.iter().enumerate() {
        let (world, trace) = (world.clone(), trace.clone());
        sim.host(*name, move || serve(i, world.clone(), trace.clone()));
    }
}

/// Steps the simulation until every client is done, calling `before_step` (the fault schedule)
/// before each step; a simulation error (a host failed or a client hung) is a violation.
pub fn run_to_end<'a>(
    sim: &mut turmoil::Sim<'a>,
    violations: &mut Vec<String>,
    mut before_step: impl FnMut(&mut turmoil::Sim<'a>, Duration),
) {
    loop {
        let now = sim.elapsed();
        before_step(sim, now);
        match sim.step() {
            Ok(true) => break,
            Ok(false) => {}
            Err(e) => {
                violations.push(format!(
                    "simulation error (a host failed or a client hung): {e}"
                ));
                break;
            }
        }
    }
}

/// The report of a finished run; the trace is printed when the run failed and
/// `SLUICE_SIM_TRACE` is set, and after every run with `SLUICE_SIM_TRACE=all` (to diff two
/// runs of a seed).
#[must_use]
pub fn report(seed: u64, trace: &Trace, violations: Vec<String>, summary: String) -> RunReport {
    if crate::trace::wanted(!violations.is_empty()) {
        eprintln!("trace of seed {seed}:\n{}", trace.dump());
    }
    RunReport {
        seed,
        digest: trace.digest(),
        events: trace.len(),
        violations,
        summary,
    }
}

/// The fault schedule of a scenario with one faulty upstream, for [`run_to_end`]: at `at`,
/// `victim` crashes, or, when `repair_at` is given, is partitioned from the sidecar until then.
pub fn crash_or_partition<'a>(
    trace: &Trace,
    victim: &'static str,
    at: Duration,
    repair_at: Option<Duration>,
) -> impl FnMut(&mut turmoil::Sim<'a>, Duration) {
    let trace = trace.clone();
    let (mut faulted, mut healed) = (false, false);
    move |sim, now| {
        if !faulted && now >= at {
            if repair_at.is_some() {
                sim.partition(SIDECAR, victim);
            } else {
                sim.crash(victim);
            }
            trace.record(now, "SIM", format!("fault on {victim}"));
            faulted = true;
        }
        if let Some(repair_at) = repair_at
            && !healed
            && now >= repair_at
        {
            sim.repair(SIDECAR, victim);
            trace.record(now, "SIM", format!("repair {victim}"));
            healed = true;
        }
    }
}
