//! # sluice-sim — the real engine in a deterministic network simulation
//!
//! A scenario builds a turmoil world: a **sidecar** host running the real
//! [`sluice_runtime::engine::Engine`] over [`sluice_runtime::net::TurmoilNet`], **upstream**
//! hosts (echo servers), and **client** hosts that open connections through the sidecar and
//! check every byte that comes back. The reload, drain and upgrade scenarios run the sidecar's
//! engines through the runtime's [`sluice_runtime::worker::Worker`], the same code a worker
//! thread of the binary runs (no copy of generation switching here). A fault schedule (crash,
//! bounce, partition, repair), drawn from the seed, runs from the outside while the simulation
//! steps. After the run, the scenario's invariants are checked against what every party
//! recorded.
//!
//! Everything that varies comes from the seed: turmoil's network (latencies, host order), the
//! clients' payloads and pacing, the fault times, the engine's balancer RNG. The event trace
//! (what each party saw, stamped with simulated time) is hashed into a digest; running one
//! seed twice gives the same digest, in any process and after any other runs — so a trace
//! records nothing of the process (its id, a temporary path, a generated key, a hash seed).
//! `sim/tests/cli.rs` checks that for one seed of every scenario.
//!
//! - `SLUICE_SIM_SEED=N` runs exactly seed N (replay);
//! - `SLUICE_SIM_SEEDS=K` sweeps seeds `0..K` (default [`DEFAULT_SEEDS`]).
//!
//! A failure names the seed and the command that replays it.
//!
//! The simulated topology uses turmoil's IPv6 link-local addresses: nothing here resembles a
//! real network address.

pub mod bolt;
pub mod dns;
pub mod drain;
pub mod h2_upstream;
pub mod http;
pub mod peers;
pub mod registry;
pub mod resilience;
pub mod tcp;
pub mod tls;
pub mod topology;
pub mod trace;
pub mod upgrade;
pub mod xds;
pub mod xds_warming;

use std::fmt::Write as _;

/// Seeds swept when `SLUICE_SIM_SEEDS` is not set.
pub const DEFAULT_SEEDS: u64 = 16;

/// The seeds to run: `SLUICE_SIM_SEED` (one), else `0..SLUICE_SIM_SEEDS`, else
/// `0..DEFAULT_SEEDS`.
#[must_use]
pub fn seeds() -> Vec<u64> {
    if let Some(seed) = env_u64("SLUICE_SIM_SEED") {
        return vec![seed];
    }
    (0..env_u64("SLUICE_SIM_SEEDS").unwrap_or(DEFAULT_SEEDS)).collect()
}

fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    match v.trim().parse() {
        Ok(n) => Some(n),
        Err(_) => panic!("{name}={v:?} is not a whole number"),
    }
}

/// The outcome of one scenario run for one seed.
#[derive(Clone, Debug)]
pub struct RunReport {
    /// The seed.
    pub seed: u64,
    /// Digest of the event trace.
    pub digest: u64,
    /// Number of trace events.
    pub events: usize,
    /// Invariant violations; empty when the run passed.
    pub violations: Vec<String>,
    /// A one-line summary (connections, outcomes) for logs.
    pub summary: String,
}

/// Runs `run` for every seed from [`seeds`], and panics with every failing seed and the command
/// that replays it. `test_path` is the test's name as `cargo test` filters it.
pub fn sweep(test_path: &str, package_test: &str, run: impl Fn(u64) -> RunReport) {
    let mut failures = String::new();
    let seeds = seeds();
    for &seed in &seeds {
        let report = run(seed);
        eprintln!(
            "{test_path} seed {seed}: digest {:016x}, {} events; {}",
            report.digest, report.events, report.summary
        );
        if !report.violations.is_empty() {
            let _ = writeln!(
                failures,
                "\n{test_path} FAILED for seed {seed}:\n  - {}\n  replay: SLUICE_SIM_SEED={seed} cargo test -p sluice-sim --test {package_test} -- --exact {test_path}",
                report.violations.join("\n  - ")
            );
            if let Some(scenario) = registry::find(test_path) {
                let _ = writeln!(
                    failures,
                    "  replay: sluice sim {} --seed {seed}",
                    scenario.name
                );
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} seed(s) failed:{failures}",
        failures.matches(" FAILED ").count()
    );
}
