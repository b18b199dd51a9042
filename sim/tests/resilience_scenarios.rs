//! Issue 5's scenarios, each swept over seeds (`SLUICE_SIM_SEEDS`, replay with
//! `SLUICE_SIM_SEED`).

use sluice_sim::resilience::{Resilience, run};
use sluice_sim::sweep;

fn scenario(name: &str, s: Resilience) {
    sweep(name, "resilience_scenarios", |seed| run(s, seed));
}

#[test]
fn health_check_flap() {
    scenario("health_check_flap", Resilience::HealthFlap);
}

#[test]
fn outlier_detection_5xx() {
    scenario("outlier_detection_5xx", Resilience::Outlier5xx);
}

#[test]
fn every_host_down_fast_503() {
    scenario("every_host_down_fast_503", Resilience::AllDown);
}

#[test]
fn partition_one_upstream_with_health_checks() {
    scenario(
        "partition_one_upstream_with_health_checks",
        Resilience::Partition,
    );
}

#[test]
fn circuit_breaker_burst() {
    scenario("circuit_breaker_burst", Resilience::Breaker);
}

#[test]
fn a_resilience_seed_replays_to_the_same_trace_digest() {
    for s in Resilience::ALL {
        let (a, b) = (run(s, 11), run(s, 11));
        assert_eq!(a.digest, b.digest, "{s:?}");
        assert_eq!(a.events, b.events, "{s:?}");
    }
}
