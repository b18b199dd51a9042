//! The `sluice-sim` binary (what `sluice sim` execs): listing, sweeping, replay, exit codes.

use std::process::{Command, Output};

fn sluice_sim(args: &[&str]) -> Output {
    sluice_sim_env(args, false)
}

fn sluice_sim_env(args: &[&str], selftest: bool) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sluice-sim"));
    cmd.args(args)
        .env_remove("SLUICE_SIM_TRACE")
        .env_remove("SLUICE_SIM_SELFTEST");
    if selftest {
        cmd.env("SLUICE_SIM_SELFTEST", "1");
    }
    cmd.output().expect("sluice-sim runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

const SCENARIOS: [&str; 28] = [
    "tcp_steady",
    "tcp_upstream_crash",
    "tcp_crash_and_recover",
    "tcp_partition",
    "http_upstream_crash",
    "http_upstream_partition",
    "http2_upstream_crash",
    "http2_upstream_goaway",
    "http2_upstream_refused_stream",
    "http2_upstream_max_streams",
    "http2_upstream_resets",
    "tls_handshake_failures",
    "tls_certificate_rotation",
    "health_check_flap",
    "outlier_detection_5xx",
    "every_host_down_fast_503",
    "partition_one_upstream_with_health_checks",
    "circuit_breaker_burst",
    "bolt_upstream_crash",
    "bolt_upstream_partition",
    "upgrade_under_http_and_bolt_traffic",
    "upgrade_whose_new_instance_crashes",
    "reload_under_slow_http_traffic",
    "sigterm_drain_under_slow_http_traffic",
    "dns_answers_change_under_traffic",
    "xds_control_plane_fails_under_traffic",
    "xds_delta_control_plane_fails_under_traffic",
    "xds_withheld_assignment_under_traffic",
];

#[test]
fn list_names_every_scenario_and_hides_the_selftest() {
    let o = sluice_sim(&["--list"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = stdout(&o);
    for name in SCENARIOS {
        assert!(
            out.lines().any(|l| l.starts_with(&format!("{name} "))),
            "--list lacks {name}:\n{out}"
        );
    }
    assert!(!out.contains("selftest"), "{out}");

    let o = sluice_sim_env(&["--list"], true);
    assert!(stdout(&o).contains("selftest_fails_on_odd_seeds"));
}

#[test]
fn a_passing_sweep_exits_0_and_counts_its_seeds() {
    let o = sluice_sim(&["tcp_steady", "--seeds", "0..3"]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    assert!(
        stdout(&o).contains("tcp_steady: 3 seeds passed, 0 failed"),
        "{}",
        stdout(&o)
    );
    // Not a terminal: progress is plain lines on stderr, ending at 3/3.
    assert!(
        stderr(&o).contains("tcp_steady: 3/3 seeds"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn seeds_n_means_0_to_n() {
    let o = sluice_sim(&["http_upstream_crash", "--seeds", "2"]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    assert!(
        stdout(&o).contains("http_upstream_crash: 2 seeds passed, 0 failed (seeds 0..2)"),
        "{}",
        stdout(&o)
    );
}

#[test]
fn an_unknown_scenario_exits_2_naming_the_known_ones() {
    let o = sluice_sim(&["no_such_scenario", "--seeds", "0..2"]);
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    assert!(err.contains("no_such_scenario"), "{err}");
    for name in SCENARIOS {
        assert!(err.contains(name), "the error does not name {name}: {err}");
    }
}

#[test]
fn usage_errors_exit_2() {
    for args in [
        &[][..],
        &["tcp_steady", "--seeds", "5..5"],
        &["tcp_steady", "--seeds", "x"],
        &["tcp_steady", "--seeds", "0..2", "--seed", "1"],
        &["all", "--seed", "1"],
    ] {
        let o = sluice_sim(args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
    }
}

#[test]
fn replaying_a_seed_twice_prints_the_same_digest() {
    let digest = || {
        let o = sluice_sim(&["tcp_partition", "--seed", "5"]);
        assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
        let out = stdout(&o);
        assert!(out.contains("summary:"), "{out}");
        out.lines()
            .find_map(|l| l.strip_prefix("digest:").map(|d| d.trim().to_owned()))
            .unwrap_or_else(|| panic!("no digest in:\n{out}"))
    };
    let a = digest();
    assert_eq!(a.len(), 16, "{a}");
    assert_eq!(a, digest());
}

#[test]
fn failing_seeds_exit_1_with_their_replay_commands() {
    let o = sluice_sim_env(&["selftest_fails_on_odd_seeds", "--seeds", "0..4"], true);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(
        out.contains("selftest_fails_on_odd_seeds: 2 seeds passed, 2 failed"),
        "{out}"
    );
    assert!(out.contains("selftest: seed 1 is odd"), "{out}");
    for seed in [1, 3] {
        assert!(
            out.contains(&format!(
                "sluice sim selftest_fails_on_odd_seeds --seed {seed}"
            )),
            "{out}"
        );
    }
    for seed in [0, 2] {
        assert!(
            !out.contains(&format!("--seed {seed}\n")),
            "passing seed {seed} listed as failing:\n{out}"
        );
    }

    // Replaying a failing seed exits 1 too; without the env var the scenario is unknown.
    let o = sluice_sim_env(&["selftest_fails_on_odd_seeds", "--seed", "3"], true);
    assert_eq!(o.status.code(), Some(1));
    let o = sluice_sim(&["selftest_fails_on_odd_seeds", "--seeds", "0..2"]);
    assert_eq!(o.status.code(), Some(2));
}

/// `SCENARIO -> digest` of seed `seed` from a `--digests` sweep's output.
fn digests_of(out: &str, seed: u64) -> std::collections::BTreeMap<String, String> {
    let tail = format!(" seed {seed} digest ");
    out.lines()
        .filter_map(|l| {
            let (name, digest) = l.split_once(&tail)?;
            Some((name.to_owned(), digest.to_owned()))
        })
        .collect()
}

/// The promise that every failing seed replays, for every scenario: one seed of each, run in
/// two processes — one sweeping it after another seed (as a CI sweep reaches it), one running it
/// first (as a replay does) — gives the same trace digest. A run that records something of its
/// process (its id, a key, a hash seed, an address) or of the runs before it in the process
/// fails this.
#[test]
fn every_scenario_replays_to_its_digest_in_another_process() {
    const SEED: u64 = 5;
    let sweep = |seeds: &'static str| {
        std::thread::spawn(move || {
            let o = sluice_sim(&["all", "--seeds", seeds, "--digests"]);
            assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
            digests_of(&stdout(&o), SEED)
        })
    };
    let (after_another, first) = (sweep("4..6"), sweep("5..6"));
    let (after_another, first) = (after_another.join().unwrap(), first.join().unwrap());
    let names: Vec<&str> = first.keys().map(String::as_str).collect();
    let mut expected = SCENARIOS.to_vec();
    expected.sort_unstable();
    assert_eq!(names, expected, "a digest per scenario");
    let differing: Vec<String> = first
        .iter()
        .filter(|(name, digest)| after_another.get(*name) != Some(digest))
        .map(|(name, digest)| format!("{name}: {digest} vs {:?}", after_another.get(name)))
        .collect();
    assert!(
        differing.is_empty(),
        "seed {SEED} does not replay to its digest (compare the runs' traces with \
         SLUICE_SIM_TRACE=all sluice sim SCENARIO --seed {SEED}):\n{}",
        differing.join("\n")
    );
}
