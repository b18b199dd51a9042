//! Reload and SIGTERM drain scenarios, swept over seeds (`SLUICE_SIM_SEEDS=K`) or replayed
//! (`SLUICE_SIM_SEED=N`).

use sluice_sim::drain::{DrainScenario, run};
use sluice_sim::sweep;

#[test]
fn reload_under_slow_http_traffic() {
    sweep(
        "reload_under_slow_http_traffic",
        "drain_scenarios",
        |seed| run(DrainScenario::Reload, seed),
    );
}

#[test]
fn sigterm_drain_under_slow_http_traffic() {
    sweep(
        "sigterm_drain_under_slow_http_traffic",
        "drain_scenarios",
        |seed| run(DrainScenario::Sigterm, seed),
    );
}

/// Determinism only (the sweeps check the invariants).
#[test]
fn drain_seed_replays_to_the_same_trace_digest() {
    for scenario in [DrainScenario::Reload, DrainScenario::Sigterm] {
        let a = run(scenario, 5);
        let b = run(scenario, 5);
        assert_eq!(a.digest, b.digest, "{scenario:?}");
        assert_eq!(a.events, b.events, "{scenario:?}");
    }
}
