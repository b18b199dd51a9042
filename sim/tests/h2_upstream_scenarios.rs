//! HTTP/2 upstream scenarios (GOAWAY, REFUSED_STREAM, stream limit, resets), swept over seeds
//! (`SLUICE_SIM_SEEDS=K`) or replayed (`SLUICE_SIM_SEED=N`).

use sluice_sim::h2_upstream::{H2UpstreamScenario, run};
use sluice_sim::sweep;

fn scenario(name: &str, s: H2UpstreamScenario) {
    sweep(name, "h2_upstream_scenarios", |seed| run(s, seed));
}

#[test]
fn http2_upstream_goaway() {
    scenario("http2_upstream_goaway", H2UpstreamScenario::GoAway);
}

#[test]
fn http2_upstream_refused_stream() {
    scenario(
        "http2_upstream_refused_stream",
        H2UpstreamScenario::RefusedStream,
    );
}

#[test]
fn http2_upstream_max_streams() {
    scenario("http2_upstream_max_streams", H2UpstreamScenario::MaxStreams);
}

#[test]
fn http2_upstream_resets() {
    scenario(
        "http2_upstream_resets",
        H2UpstreamScenario::ResetAfterHeaders,
    );
}

#[test]
fn an_http2_upstream_seed_replays_to_the_same_trace_digest() {
    let a = run(H2UpstreamScenario::GoAway, 5);
    let b = run(H2UpstreamScenario::GoAway, 5);
    assert!(a.violations.is_empty(), "{:?}", a.violations);
    assert_eq!(a.digest, b.digest);
}
