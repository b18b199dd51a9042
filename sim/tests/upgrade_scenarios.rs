//! Hot-upgrade scenarios, swept over seeds (`SLUICE_SIM_SEEDS=K`) or replayed
//! (`SLUICE_SIM_SEED=N`).

use sluice_sim::sweep;
use sluice_sim::upgrade::{UpgradeScenario, run};

#[test]
fn upgrade_under_http_and_bolt_traffic() {
    sweep(
        "upgrade_under_http_and_bolt_traffic",
        "upgrade_scenarios",
        |seed| run(UpgradeScenario::UnderTraffic, seed),
    );
}

#[test]
fn upgrade_whose_new_instance_crashes() {
    sweep(
        "upgrade_whose_new_instance_crashes",
        "upgrade_scenarios",
        |seed| run(UpgradeScenario::NewInstanceCrashes, seed),
    );
}

/// Determinism only (the sweeps check the invariants).
#[test]
fn upgrade_seed_replays_to_the_same_trace_digest() {
    for scenario in [
        UpgradeScenario::UnderTraffic,
        UpgradeScenario::NewInstanceCrashes,
    ] {
        let a = run(scenario, 5);
        let b = run(scenario, 5);
        assert_eq!(a.digest, b.digest, "{scenario:?}");
        assert_eq!(a.events, b.events, "{scenario:?}");
    }
}
