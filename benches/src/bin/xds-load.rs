//! `xds-load`: the xDS push benchmark (issue 13; [`sluice_benches::xds_load`] says what is
//! measured and how). Starts the in-repo ADS server in-process on a loopback port and
//! `sluice run --workers 2` processes fed by it, pushes, and prints a markdown table.
//!
//! ```text
//! xds-load --sluice target/release/sluice            # 1000 endpoints ×20, 1000 clusters ×5
//! xds-load --sluice target/debug/sluice --smoke      # tiny sizes, a few seconds
//! xds-load --sluice S [--workers N] [--endpoints N] [--pushes N] [--clusters N]
//!          [--cluster-endpoints N] [--cluster-pushes N] [--json]
//! ```

use std::path::PathBuf;

use sluice_benches::xds_load::{self, Options};

fn usage() -> ! {
    eprintln!(
        "usage: xds-load --sluice PATH [--smoke] [--workers N] [--endpoints N] [--pushes N] \
         [--clusters N] [--cluster-endpoints N] [--cluster-pushes N] [--json]"
    );
    std::process::exit(2);
}

fn value<T: std::str::FromStr>(args: &[String], name: &str) -> Option<T> {
    let i = args.iter().position(|a| a == name)?;
    Some(
        args.get(i + 1)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| usage()),
    )
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "-h" || a == "--help") {
        usage();
    }
    let sluice: PathBuf = value(&args, "--sluice").unwrap_or_else(|| usage());
    let mut o = if args.iter().any(|a| a == "--smoke") {
        Options::smoke(sluice)
    } else {
        Options::full(sluice)
    };
    o.workers = value(&args, "--workers").unwrap_or(o.workers);
    o.endpoints = value(&args, "--endpoints").unwrap_or(o.endpoints);
    o.pushes = value(&args, "--pushes").unwrap_or(o.pushes);
    o.clusters = value(&args, "--clusters").unwrap_or(o.clusters);
    o.cluster_endpoints = value(&args, "--cluster-endpoints").unwrap_or(o.cluster_endpoints);
    o.cluster_pushes = value(&args, "--cluster-pushes").unwrap_or(o.cluster_pushes);
    match xds_load::run(&o) {
        Ok(report) => {
            print!("{}", report.table());
            if args.iter().any(|a| a == "--json") {
                println!("{}", report.json());
            }
            let _ = std::fs::remove_dir_all(&o.work_dir);
        }
        Err(e) => {
            eprintln!("xds-load: {e}\n(logs under {})", o.work_dir.display());
            std::process::exit(1);
        }
    }
}
