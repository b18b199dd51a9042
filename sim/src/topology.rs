//! The parts every scenario's world shares: a seeded simulation, the sidecar host running the
//! real engine, and an observer that reads the sidecar's counters once the clients are done.

use std::cell::RefCell;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use sluice_core::config::Config;
use sluice_runtime::engine::Engine;
use sluice_runtime::net::TurmoilNet;
use sluice_runtime::stats::{DetailedSnapshot, StatsSnapshot, WorkerStats};
use turmoil::net::TcpListener;

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

/// Adds a client that waits until `done()` holds, then `settle` more (so idle sessions are
/// reaped), then snapshots the sidecar's counters.
pub fn add_observer<'a>(
    sim: &mut turmoil::Sim<'a>,
    done: impl Fn() -> bool + 'static,
    settle: Duration,
    stats: StatsSlot,
) -> Rc<RefCell<Option<StatsSnapshot>>> {
    let result = Rc::new(RefCell::new(None));
    let out = result.clone();
    sim.client("observer", async move {
        while !done() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tokio::time::sleep(settle).await;
        let snapshot = stats.borrow().as_ref().map(|s| s.snapshot());
        *out.borrow_mut() = snapshot;
        Ok(())
    });
    result
}

/// Like [`add_observer`], with every counter (per listener, cluster and host).
pub fn add_detailed_observer<'a>(
    sim: &mut turmoil::Sim<'a>,
    done: impl Fn() -> bool + 'static,
    settle: Duration,
    stats: StatsSlot,
) -> Rc<RefCell<Option<DetailedSnapshot>>> {
    let result = Rc::new(RefCell::new(None));
    let out = result.clone();
    sim.client("observer", async move {
        while !done() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tokio::time::sleep(settle).await;
        let snapshot = stats.borrow().as_ref().map(|s| s.detailed());
        *out.borrow_mut() = snapshot;
        Ok(())
    });
    result
}
