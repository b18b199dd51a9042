//! The foundation's TCP scenarios, swept over seeds (`SLUICE_SIM_SEEDS=K`, default 16) or
//! replayed one at a time (`SLUICE_SIM_SEED=N`).

use sluice_sim::sweep;
use sluice_sim::tcp::{TcpScenario, run};

fn scenario(name: &str, s: TcpScenario) {
    sweep(name, "tcp_scenarios", |seed| run(s, seed));
}

#[test]
fn steady_traffic() {
    scenario("steady_traffic", TcpScenario::SteadyTraffic);
}

#[test]
fn upstream_crash() {
    scenario("upstream_crash", TcpScenario::UpstreamCrash);
}

#[test]
fn upstream_crash_and_recover() {
    scenario(
        "upstream_crash_and_recover",
        TcpScenario::UpstreamCrashAndRecover,
    );
}

#[test]
fn upstream_partition() {
    scenario("upstream_partition", TcpScenario::UpstreamPartition);
}

/// The same seed replays to the same trace; another seed gives another trace.
#[test]
fn a_seed_replays_to_the_same_trace_digest() {
    for s in [
        TcpScenario::UpstreamCrashAndRecover,
        TcpScenario::UpstreamPartition,
    ] {
        let a = run(s, 42);
        let b = run(s, 42);
        let c = run(s, 43);
        assert!(a.violations.is_empty(), "{:?}", a.violations);
        assert_eq!(
            a.digest, b.digest,
            "{s:?}: seed 42 ran twice with different traces"
        );
        assert_eq!(a.events, b.events);
        assert_ne!(
            a.digest, c.digest,
            "{s:?}: seeds 42 and 43 gave the same trace"
        );
    }
}
