//! The xDS scenario, swept over seeds (`SLUICE_SIM_SEEDS=K`) or replayed (`SLUICE_SIM_SEED=N`).

use sluice_sim::sweep;
use sluice_sim::xds::{run, run_delta};

#[test]
fn xds_control_plane_fails_under_traffic() {
    sweep(
        "xds_control_plane_fails_under_traffic",
        "xds_scenarios",
        run,
    );
}

#[test]
fn xds_seed_replays_to_the_same_trace_digest() {
    let a = run(7);
    let b = run(7);
    assert!(a.violations.is_empty(), "{:?}", a.violations);
    assert_eq!(a.digest, b.digest);
}

#[test]
fn xds_delta_control_plane_fails_under_traffic() {
    sweep(
        "xds_delta_control_plane_fails_under_traffic",
        "xds_scenarios",
        run_delta,
    );
}

#[test]
fn xds_delta_seed_replays_to_the_same_trace_digest() {
    let a = run_delta(7);
    let b = run_delta(7);
    assert!(a.violations.is_empty(), "{:?}", a.violations);
    assert_eq!(a.digest, b.digest);
}

#[test]
fn xds_withheld_assignment_under_traffic() {
    sweep(
        "xds_withheld_assignment_under_traffic",
        "xds_scenarios",
        sluice_sim::xds_warming::run,
    );
}

#[test]
fn xds_withheld_assignment_seed_replays_to_the_same_trace_digest() {
    let a = sluice_sim::xds_warming::run(7);
    let b = sluice_sim::xds_warming::run(7);
    assert!(a.violations.is_empty(), "{:?}", a.violations);
    assert_eq!(a.digest, b.digest);
}
