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
//!
//! The arguments are parsed by clap (`xds-load --help` lists the sizes with both sets of
//! defaults): a bad, missing or unknown one is an error naming it, exit status 2.

use std::path::PathBuf;

use clap::Parser;
use sluice_benches::xds_load::{self, Options};

/// The command line (`--help` prints it). The sizes left out come from `Options::full`, or
/// `Options::smoke` with `--smoke`; their help says both, read from those two.
#[derive(Parser)]
#[command(
    name = "xds-load",
    version,
    about = "The xDS push benchmark: an in-process ADS server feeding `sluice run` processes; prints a markdown table"
)]
struct Cli {
    /// The `sluice` binary to run (e.g. target/release/sluice).
    #[arg(long, value_name = "PATH")]
    sluice: PathBuf,
    /// Tiny sizes, a few seconds (and each measured push checked against /clusters): checks
    /// the tool, measures nothing.
    #[arg(long)]
    smoke: bool,
    #[arg(long, value_name = "N", help = sized("Workers of each `sluice run` process", |o| o.workers))]
    workers: Option<usize>,
    #[arg(long, value_name = "N", help = sized("Endpoints of the EDS cluster of the push-latency scenario", |o| o.endpoints))]
    endpoints: Option<usize>,
    #[arg(long, value_name = "N", help = sized("Measured EDS pushes of that cluster's endpoints", |o| o.pushes))]
    pushes: Option<usize>,
    #[arg(long, value_name = "N", help = sized("EDS clusters of the memory scenario", |o| o.clusters))]
    clusters: Option<usize>,
    #[arg(long, value_name = "N", help = sized("Endpoints of each of those clusters", |o| o.cluster_endpoints))]
    cluster_endpoints: Option<usize>,
    #[arg(long, value_name = "N", help = sized("Measured pushes of all those clusters", |o| o.cluster_pushes))]
    cluster_pushes: Option<usize>,
    #[arg(long, value_name = "N", help = sized("Keep-alive connections of the traffic scenario (requests during pushes)", |o| o.traffic_connections))]
    traffic_connections: Option<usize>,
    #[arg(long, value_name = "SECS", help = sized("Seconds of each of the traffic scenario's three phases (no push, pushes, pushes built but not sent)", |o| o.traffic_secs as usize))]
    traffic_secs: Option<u64>,
    /// Also print the figures as one JSON line after the table.
    #[arg(long)]
    json: bool,
}

/// A size's help line, with its defaults as `Options::full` and `Options::smoke` set them.
fn sized(what: &str, size: fn(&Options) -> usize) -> String {
    let (full, smoke) = (
        size(&Options::full(PathBuf::new())),
        size(&Options::smoke(PathBuf::new())),
    );
    if full == smoke {
        format!("{what} [default: {full}]")
    } else {
        format!("{what} [default: {full}; with --smoke: {smoke}]")
    }
}

fn main() {
    let cli = Cli::parse();
    let mut o = if cli.smoke {
        Options::smoke(cli.sluice)
    } else {
        Options::full(cli.sluice)
    };
    o.workers = cli.workers.unwrap_or(o.workers);
    o.endpoints = cli.endpoints.unwrap_or(o.endpoints);
    o.pushes = cli.pushes.unwrap_or(o.pushes);
    o.clusters = cli.clusters.unwrap_or(o.clusters);
    o.cluster_endpoints = cli.cluster_endpoints.unwrap_or(o.cluster_endpoints);
    o.cluster_pushes = cli.cluster_pushes.unwrap_or(o.cluster_pushes);
    o.traffic_connections = cli.traffic_connections.unwrap_or(o.traffic_connections);
    o.traffic_secs = cli.traffic_secs.unwrap_or(o.traffic_secs);
    match xds_load::run(&o) {
        Ok(report) => {
            print!("{}", report.table());
            if cli.json {
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
