//! The named scenarios: what `sluice sim` (the `sluice-sim` binary) can run.
//!
//! Adding a scenario is one entry in [`SCENARIOS`]:
//!
//! ```ignore
//! Scenario::new("name", "one line about it", |seed| my_module::run(MyScenario::X, seed)),
//! ```
//!
//! optionally followed by `.aliases(&["cargo_test_name"])` when the scenario's `cargo test`
//! name differs from its registry name (so [`crate::sweep`] can print the `sluice sim` replay
//! command, and `sluice sim cargo_test_name` works too).

use crate::RunReport;
use crate::bolt::{self, BoltScenario};
use crate::dns;
use crate::drain::{self, DrainScenario};
use crate::h2_upstream::{self, H2UpstreamScenario};
use crate::http::{self, HttpScenario};
use crate::resilience::{self, Resilience};
use crate::tcp::{self, TcpScenario};
use crate::tls;
use crate::upgrade::{self, UpgradeScenario};

/// A named scenario: runs for one seed and reports.
#[derive(Clone, Copy, Debug)]
pub struct Scenario {
    /// The name `sluice sim NAME` takes.
    pub name: &'static str,
    /// One line about what it does.
    pub about: &'static str,
    /// Runs the scenario for one seed.
    pub run: fn(u64) -> RunReport,
    /// Other names it answers to (its `cargo test` name when that differs).
    pub aliases: &'static [&'static str],
}

impl Scenario {
    /// A scenario with no aliases.
    #[must_use]
    pub const fn new(name: &'static str, about: &'static str, run: fn(u64) -> RunReport) -> Self {
        Self {
            name,
            about,
            run,
            aliases: &[],
        }
    }

    /// The same scenario, also answering to `aliases`.
    #[must_use]
    pub const fn aliases(self, aliases: &'static [&'static str]) -> Self {
        Self { aliases, ..self }
    }

    /// Whether it answers to `name` (its name or an alias).
    #[must_use]
    pub fn answers_to(&self, name: &str) -> bool {
        self.name == name || self.aliases.contains(&name)
    }
}

/// Every scenario, in `--list` order. Append new ones here.
pub static SCENARIOS: &[Scenario] = &[
    Scenario::new(
        "tcp_steady",
        "TCP: steady traffic through the sidecar, no faults",
        |seed| tcp::run(TcpScenario::SteadyTraffic, seed),
    )
    .aliases(&["steady_traffic"]),
    Scenario::new(
        "tcp_upstream_crash",
        "TCP: one upstream crashes mid-traffic and stays down",
        |seed| tcp::run(TcpScenario::UpstreamCrash, seed),
    )
    .aliases(&["upstream_crash"]),
    Scenario::new(
        "tcp_crash_and_recover",
        "TCP: one upstream crashes, then comes back",
        |seed| tcp::run(TcpScenario::UpstreamCrashAndRecover, seed),
    )
    .aliases(&["upstream_crash_and_recover"]),
    Scenario::new(
        "tcp_partition",
        "TCP: the sidecar is partitioned from one upstream, then repaired",
        |seed| tcp::run(TcpScenario::UpstreamPartition, seed),
    )
    .aliases(&["upstream_partition"]),
    Scenario::new(
        "http_upstream_crash",
        "HTTP/1.1: one upstream crashes mid-traffic and stays down",
        |seed| http::run(HttpScenario::UpstreamCrash, seed),
    ),
    Scenario::new(
        "http_upstream_partition",
        "HTTP/1.1: the sidecar is partitioned from one upstream, then repaired",
        |seed| http::run(HttpScenario::UpstreamPartition, seed),
    ),
    Scenario::new(
        "http2_upstream_crash",
        "HTTP/2: clients multiplex up to 4 streams on h2c connections; one upstream crashes mid-traffic",
        |seed| http::run(HttpScenario::Http2UpstreamCrash, seed),
    ),
    Scenario::new(
        "http2_upstream_goaway",
        "HTTP/2 upstreams send GOAWAY with a last_stream_id mid-traffic; streams above it are sent again and answered, nothing processed twice",
        |seed| h2_upstream::run(H2UpstreamScenario::GoAway, seed),
    ),
    Scenario::new(
        "http2_upstream_refused_stream",
        "HTTP/2 upstreams refuse a request's first arrivals with REFUSED_STREAM; every request sent again and answered, whatever its method",
        |seed| h2_upstream::run(H2UpstreamScenario::RefusedStream, seed),
    ),
    Scenario::new(
        "http2_upstream_max_streams",
        "HTTP/2 upstreams advertise max_concurrent_streams 2 under 10 concurrent clients; the pool never exceeds it",
        |seed| h2_upstream::run(H2UpstreamScenario::MaxStreams, seed),
    ),
    Scenario::new(
        "http2_upstream_resets",
        "HTTP/2 upstreams reset streams after the request or after the response head; no request processed twice, none hangs",
        |seed| h2_upstream::run(H2UpstreamScenario::ResetAfterHeaders, seed),
    ),
    Scenario::new(
        "tls_handshake_failures",
        "TLS: clients to a terminating tcp_proxy that re-encrypts to its upstreams; one upstream's certificate is expired, one crashes; hostile clients stall, abort or send garbage mid-handshake",
        tls::run,
    ),
    Scenario::new(
        "tls_certificate_rotation",
        "TLS: clients keep connecting while the listener's certificate is replaced by a reload, a refused bad reload, a refused bad rewrite and a good rewrite of its files; a connection opened before keeps working",
        tls::rotation::run,
    ),
    Scenario::new(
        "health_check_flap",
        "health: a host's health check fails then recovers under traffic; drained and readmitted in bounded time",
        |seed| resilience::run(Resilience::HealthFlap, seed),
    ),
    Scenario::new(
        "outlier_detection_5xx",
        "health: two hosts answer 500; ejected after consecutive_5xx, readmitted, never above max_ejection_percent",
        |seed| resilience::run(Resilience::Outlier5xx, seed),
    ),
    Scenario::new(
        "every_host_down_fast_503",
        "health: every upstream crashes; once marked down, requests get a fast 503 and none hangs",
        |seed| resilience::run(Resilience::AllDown, seed),
    ),
    Scenario::new(
        "partition_one_upstream_with_health_checks",
        "health: the sidecar is cut from one upstream under traffic; every request 2xx, readmitted after repair",
        |seed| resilience::run(Resilience::Partition, seed),
    ),
    Scenario::new(
        "circuit_breaker_burst",
        "health: bursts over max_requests get 503 (UO) for the excess only",
        |seed| resilience::run(Resilience::Breaker, seed),
    ),
    Scenario::new(
        "bolt_upstream_crash",
        "Bolt: clients reusing ids, one upstream crashes mid-traffic; every id answered once, to its client, in time",
        |seed| bolt::run(BoltScenario::UpstreamCrash, seed),
    ),
    Scenario::new(
        "bolt_upstream_partition",
        "Bolt: clients reusing ids, the sidecar is partitioned from one upstream, then repaired",
        |seed| bolt::run(BoltScenario::UpstreamPartition, seed),
    ),
    Scenario::new(
        "upgrade_under_http_and_bolt_traffic",
        "upgrade: hot upgrade under HTTP/1.1 and Bolt traffic with an upstream fault; no connect refused, every request answered once, the old instance ends",
        |seed| upgrade::run(UpgradeScenario::UnderTraffic, seed),
    ),
    Scenario::new(
        "upgrade_whose_new_instance_crashes",
        "upgrade: the new instance crashes or hangs before serving; rollback, the old resumes accepting, a second upgrade succeeds",
        |seed| upgrade::run(UpgradeScenario::NewInstanceCrashes, seed),
    ),
    Scenario::new(
        "reload_under_slow_http_traffic",
        "drain: 2-3 config reloads under keep-alive HTTP/1.1 traffic to slow upstreams; every request 2xx once, old generations drain",
        |seed| drain::run(DrainScenario::Reload, seed),
    ),
    Scenario::new(
        "sigterm_drain_under_slow_http_traffic",
        "drain: a SIGTERM drain under keep-alive HTTP/1.1 traffic to slow upstreams; kept-alive requests answered, ends within drain_timeout",
        |seed| drain::run(DrainScenario::Sigterm, seed),
    ),
    Scenario::new(
        "dns_answers_change_under_traffic",
        "DNS: a strict_dns name gains a host, fails, loses a host under HTTP traffic; every request 200, hosts changed in place",
        dns::run,
    ),
    Scenario::new(
        "xds_control_plane_fails_under_traffic",
        "xDS: the management server churns endpoints, crashes mid-push, is partitioned and sends an invalid update under HTTP traffic; every request 200, no half-applied config, NACKed update never applied, versions never go back, converges after repair",
        crate::xds::run,
    ),
    Scenario::new(
        "xds_delta_control_plane_fails_under_traffic",
        "xDS over the delta protocol: the same faults, plus a cluster added mid-push and removed while the sidecar is cut off; the same invariants, ACK/NACK by nonce, resync after the NACK, initial_resource_versions name what serves, the removal reaches the sidecar after the repair",
        crate::xds::run_delta,
    ),
    Scenario::new(
        "xds_withheld_assignment_under_traffic",
        "xDS warming: a new cluster and a route to it come without the cluster's assignment under HTTP traffic; the routes that serve never fail, an update pushed meanwhile applies, the new route answers 503 after initial_fetch_timeout (no NACK), and serves once the assignment comes",
        crate::xds_warming::run,
    ),
];

/// Shown only when `SLUICE_SIM_SELFTEST=1`: fails on odd seeds, to test the failure path of
/// the runner itself.
const SELFTEST: Scenario = Scenario::new(
    "selftest_fails_on_odd_seeds",
    "self-test of the runner: reports a violation on every odd seed",
    selftest,
);

fn selftest(seed: u64) -> RunReport {
    let violations = if seed % 2 == 1 {
        vec![format!("selftest: seed {seed} is odd")]
    } else {
        vec![]
    };
    RunReport {
        seed,
        digest: seed.wrapping_mul(0x9e37_79b9_7f4a_7c15),
        events: 0,
        violations,
        summary: "selftest: nothing simulated".to_owned(),
    }
}

/// Every scenario: [`SCENARIOS`], plus the self-test one when `SLUICE_SIM_SELFTEST=1`.
#[must_use]
pub fn all() -> Vec<Scenario> {
    let mut all = SCENARIOS.to_vec();
    if std::env::var_os("SLUICE_SIM_SELFTEST").is_some_and(|v| v == "1") {
        all.push(SELFTEST);
    }
    all
}

/// The scenario answering to `name` (its name or an alias).
#[must_use]
pub fn find(name: &str) -> Option<Scenario> {
    all().into_iter().find(|s| s.answers_to(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_aliases_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for s in SCENARIOS.iter().chain([&SELFTEST]) {
            for n in std::iter::once(&s.name).chain(s.aliases) {
                assert!(seen.insert(*n), "{n} names two scenarios");
                assert!(
                    !n.is_empty() && n != &"all" && !n.starts_with('-'),
                    "{n:?} cannot be a scenario name"
                );
            }
        }
    }

    #[test]
    fn find_takes_names_and_aliases() {
        assert_eq!(find("tcp_steady").map(|s| s.name), Some("tcp_steady"));
        assert_eq!(find("steady_traffic").map(|s| s.name), Some("tcp_steady"));
        assert!(find("no_such_scenario").is_none());
    }
}
