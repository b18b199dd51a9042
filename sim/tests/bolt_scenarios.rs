//! Bolt (SOFARPC) scenarios, swept over seeds (`SLUICE_SIM_SEEDS=K`) or replayed
//! (`SLUICE_SIM_SEED=N`).

use sluice_sim::bolt::{BoltScenario, run};
use sluice_sim::sweep;

#[test]
fn bolt_upstream_crash() {
    sweep("bolt_upstream_crash", "bolt_scenarios", |seed| {
        run(BoltScenario::UpstreamCrash, seed)
    });
}

#[test]
fn bolt_upstream_partition() {
    sweep("bolt_upstream_partition", "bolt_scenarios", |seed| {
        run(BoltScenario::UpstreamPartition, seed)
    });
}

#[test]
fn bolt_seed_replays_to_the_same_trace_digest() {
    let a = run(BoltScenario::UpstreamPartition, 7);
    let b = run(BoltScenario::UpstreamPartition, 7);
    assert!(a.violations.is_empty(), "{:?}", a.violations);
    assert_eq!(a.digest, b.digest);
    let c = run(BoltScenario::UpstreamCrash, 7);
    let d = run(BoltScenario::UpstreamCrash, 7);
    assert_eq!(c.digest, d.digest);
}
