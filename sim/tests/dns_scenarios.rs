//! The DNS scenario, swept over seeds (`SLUICE_SIM_SEEDS=K`) or replayed (`SLUICE_SIM_SEED=N`).

use sluice_sim::dns::run;
use sluice_sim::sweep;

#[test]
fn dns_answers_change_under_traffic() {
    sweep("dns_answers_change_under_traffic", "dns_scenarios", run);
}

#[test]
fn dns_seed_replays_to_the_same_trace_digest() {
    let a = run(7);
    let b = run(7);
    assert!(a.violations.is_empty(), "{:?}", a.violations);
    assert_eq!(a.digest, b.digest);
}
