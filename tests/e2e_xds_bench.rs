//! The xDS push benchmark's tool (`xds-load`, `sluice_benches::xds_load`) in its smoke mode,
//! against this build's `sluice` with its defaults (state-of-the-world xDS, 2 workers): every
//! measured EDS push is ACKed, and `/clusters` lists that push's hosts as soon as its ACK
//! arrives (the ACK follows the switch of every worker, which is what the benchmark's latency
//! relies on); the clusters of the memory scenario are all served with their endpoints, and
//! the last push of them is the one serving; requests through a static listener are answered,
//! none failing, with no push and during back-to-back pushes. The figures themselves are not asserted (a shared,
//! busy machine): BENCHMARKS.md has them, from a release build.

use sluice_benches::xds_load::{self, Options};

#[test]
fn xds_load_smoke_measures_pushes_that_every_worker_took() {
    let mut o = Options::smoke(env!("CARGO_BIN_EXE_sluice").into());
    o.work_dir = std::env::temp_dir().join(format!("sluice-xds-bench-{}", std::process::id()));
    let report = xds_load::run(&o).unwrap_or_else(|e| panic!("xds-load --smoke: {e}"));
    eprintln!("{}", report.table());
    // One latency per measured push, each verified against /clusters right after its ACK.
    assert_eq!(report.eds_latency.len(), o.pushes);
    assert_eq!(report.verified, o.pushes);
    assert!(report.eds_latency.iter().all(|d| !d.is_zero()));
    assert_eq!(report.hosts_seen, o.endpoints);
    // The cross-checked push: /clusters polled from the send showed it.
    assert!(!report.check_seen.is_zero());
    assert_eq!(report.clusters_seen, o.clusters);
    assert_eq!(report.clusters_latency.len(), o.cluster_pushes);
    assert!(report.rss_bootstrap_kib > 0 && report.rss_clusters_kib > 0);
    // The traffic scenario: requests answered in both phases, none failed, and pushes were
    // ACKed while they ran (the push phase measured what it says).
    for t in [
        &report.traffic_quiet,
        &report.traffic_pushing,
        &report.traffic_building,
    ] {
        assert!(!t.latency.is_empty(), "{t:?}");
        assert_eq!(t.errors, 0, "{t:?}");
    }
    assert_eq!(report.traffic_quiet.pushes, 0);
    assert!(report.traffic_pushing.pushes > 0);
    assert!(report.traffic_building.pushes <= report.traffic_pushing.pushes);
    let _ = std::fs::remove_dir_all(&o.work_dir);
}
