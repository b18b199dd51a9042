//! HTTP/1.1 and HTTP/2 scenarios, swept over seeds (`SLUICE_SIM_SEEDS=K`) or replayed (`SLUICE_SIM_SEED=N`).

use sluice_sim::http::{HttpScenario, run};
use sluice_sim::sweep;

#[test]
fn http_upstream_crash() {
    sweep("http_upstream_crash", "http_scenarios", |seed| {
        run(HttpScenario::UpstreamCrash, seed)
    });
}

#[test]
fn http_upstream_partition() {
    sweep("http_upstream_partition", "http_scenarios", |seed| {
        run(HttpScenario::UpstreamPartition, seed)
    });
}

#[test]
fn http_seed_replays_to_the_same_trace_digest() {
    let a = run(HttpScenario::UpstreamPartition, 7);
    let b = run(HttpScenario::UpstreamPartition, 7);
    assert!(a.violations.is_empty(), "{:?}", a.violations);
    assert_eq!(a.digest, b.digest);
}

#[test]
fn http2_upstream_crash() {
    sweep("http2_upstream_crash", "http_scenarios", |seed| {
        run(HttpScenario::Http2UpstreamCrash, seed)
    });
}

#[test]
fn http2_seed_replays_to_the_same_trace_digest() {
    let a = run(HttpScenario::Http2UpstreamCrash, 11);
    let b = run(HttpScenario::Http2UpstreamCrash, 11);
    assert!(a.violations.is_empty(), "{:?}", a.violations);
    assert_eq!(a.digest, b.digest);
}
