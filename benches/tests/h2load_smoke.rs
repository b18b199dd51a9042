//! Smoke run of the HTTP/2 loopback benchmark (`benches/loopback/h2load.sh --smoke`): the script
//! still runs end to end — h2c and gRPC unary through Sluice and nginx (saturation and
//! fixed-rate runs), idle HTTP/2 connections held against both — and every request of every run
//! was answered 200 (gRPC calls: the probe's whole answer, trailers included). It measures
//! nothing; it keeps the benchmark's command from rotting.
//!
//! Uses this crate's `grpc-echo` and the `sluice` binary of the same target directory and
//! profile (built by the workspace test run, `tests/run.sh`; run alone, build it first:
//! `cargo build -p sluice-runtime`). Needs nginx, h2load, taskset, python3 and bc: without them
//! the test is skipped, unless `SLUICE_REQUIRE_PEERS` is set (then it fails), as the end-to-end
//! tests do.

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Whether everything the script needs is here; a skip message otherwise, or a panic when
/// `SLUICE_REQUIRE_PEERS` says a missing peer is a failure.
fn require(sluice: &Path) -> bool {
    let mut missing: Vec<String> = ["nginx", "h2load", "taskset", "python3", "bc"]
        .iter()
        .filter(|tool| {
            !Command::new("sh")
                .args(["-c", &format!("command -v {tool}")])
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .map(|tool| format!("{tool} is not installed"))
        .collect();
    if !sluice.is_file() {
        missing.push(format!(
            "no sluice binary at {} (cargo build -p sluice-runtime)",
            sluice.display()
        ));
    }
    if missing.is_empty() {
        return true;
    }
    let why = missing.join("; ");
    if std::env::var_os("SLUICE_REQUIRE_PEERS").is_some_and(|v| !v.is_empty() && v != "0") {
        panic!("{why}; SLUICE_REQUIRE_PEERS is set, so a missing peer is a failure");
    }
    eprintln!("SKIPPED h2load_smoke: {why}");
    false
}

/// Six consecutive free ports below the kernel's ephemeral range and the end-to-end tests'
/// 20000–32000, starting at a place that depends on this process.
fn free_ports() -> u16 {
    let start = 12_000 + (std::process::id() % 700) as u16 * 10;
    (0..700u16)
        .map(|i| 12_000 + (start - 12_000 + i * 10) % 7_000)
        .find(|&base| (base..base + 6).all(|p| TcpListener::bind(("127.0.0.1", p)).is_ok()))
        .expect("six free ports between 12000 and 19000")
}

#[test]
fn h2load_benchmark_smoke_answers_every_request_through_both_proxies() {
    let grpc_echo = PathBuf::from(env!("CARGO_BIN_EXE_grpc-echo"));
    // target/<profile>/grpc-echo → target/<profile>/sluice
    let sluice = grpc_echo.with_file_name("sluice");
    if !require(&sluice) {
        return;
    }
    let out = std::env::temp_dir().join(format!("sluice-h2load-smoke-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let run = Command::new("bash")
        .arg(repo().join("benches/loopback/h2load.sh"))
        .arg("--smoke")
        .arg("--sluice")
        .arg(&sluice)
        .arg("--grpc-echo")
        .arg(&grpc_echo)
        .arg("--out")
        .arg(&out)
        .arg("--ports")
        .arg(free_ports().to_string())
        .current_dir(repo())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        run.status.success(),
        "h2load.sh --smoke: {}\n{stdout}\n{stderr}",
        run.status
    );
    let results = std::fs::read_to_string(out.join("results.txt")).unwrap();
    let rows: Vec<BTreeMap<&str, &str>> = results
        .lines()
        .map(|l| {
            l.split_whitespace()
                .filter_map(|f| f.split_once('='))
                .collect()
        })
        .collect();
    for test in [
        "h2c",
        "h2c-rate",
        "grpc",
        "grpc-rate",
        "idle",
        "idle--request",
    ] {
        for proxy in ["nginx", "sluice"] {
            let row = rows
                .iter()
                .find(|r| r["test"] == test && r["proxy"] == proxy)
                .unwrap_or_else(|| panic!("no {test} row for {proxy}:\n{results}"));
            assert_eq!(row["ok"], "1", "{test} {proxy}:\n{results}\n{stderr}");
            if test.starts_with("idle") {
                assert_eq!(row["connections"], "100", "{results}");
                continue;
            }
            let requests: u64 = row["requests"].parse().unwrap();
            assert!(requests > 0, "{results}");
            for key in ["succeeded", "2xx", "log_200"] {
                assert_eq!(
                    row[key],
                    requests.to_string(),
                    "{test} {proxy} {key}:\n{results}"
                );
            }
            assert_eq!(row["failed"], "0", "{results}");
        }
    }
    assert!(stdout.contains("12 runs OK, 0 FAILED"), "{stdout}");
    let _ = std::fs::remove_dir_all(&out);
}
