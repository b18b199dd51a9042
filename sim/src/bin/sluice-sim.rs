//! `sluice-sim`: runs the named simulation scenarios over seed ranges (what `sluice sim` execs).
//!
//! - `sluice-sim --list`
//! - `sluice-sim SCENARIO [--seeds A..B | --seeds N]` (N means `0..N`; default `0..16`)
//! - `sluice-sim SCENARIO --seed N` replays one seed: full summary and trace digest
//!   (`SLUICE_SIM_TRACE=1` prints the trace of a failing run; `SLUICE_SIM_LOG=FILTER`, e.g.
//!   `sluice_runtime=debug`, prints the runtime's own log lines, stamped with simulated time)
//! - `sluice-sim all --seeds ...` runs every scenario
//! - `--digests` (with `--seeds`) also prints each seed's trace digest, one line per run
//!   (`SCENARIO seed N digest D`): two processes' lines are equal when every run replays
//!
//! Exit code: 0 when every seed passed, 1 when any failed, 2 on a usage error.

use std::io::{IsTerminal, Write};
use std::ops::Range;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::process::ExitCode;

use clap::Parser;
use sluice_sim::registry::{self, Scenario};
use sluice_sim::{DEFAULT_SEEDS, RunReport};

#[derive(Parser)]
#[command(
    name = "sluice sim",
    bin_name = "sluice sim",
    version,
    about = "Run Sluice's deterministic simulation scenarios over seed ranges",
    after_help = "Every failing seed is printed with the command that replays it.\n\
                  Exit code: 0 all passed, 1 some seed failed, 2 usage error."
)]
struct Cli {
    /// List the scenarios and exit.
    #[arg(long, conflicts_with_all = ["scenario", "seeds", "seed"])]
    list: bool,
    /// The scenario to run (see --list), or `all`.
    #[arg(required_unless_present = "list")]
    scenario: Option<String>,
    /// Seeds to run: `A..B` (B excluded) or `N` (meaning `0..N`) [default: 0..16].
    #[arg(long, value_parser = parse_seeds, conflicts_with = "seed")]
    seeds: Option<Range<u64>>,
    /// Replay exactly one seed, printing its full summary and trace digest.
    #[arg(long)]
    seed: Option<u64>,
    /// With a sweep: print each seed's trace digest (`SCENARIO seed N digest D`), to compare
    /// two processes' runs.
    #[arg(long, conflicts_with = "seed")]
    digests: bool,
}

fn parse_seeds(s: &str) -> Result<Range<u64>, String> {
    let num = |t: &str| {
        t.trim()
            .parse::<u64>()
            .map_err(|_| format!("{t:?} is not a whole number (want A..B or N)"))
    };
    let range = match s.split_once("..") {
        Some((a, b)) => num(a)?..num(b)?,
        None => 0..num(s)?,
    };
    if range.is_empty() {
        return Err(format!("{s:?} is an empty range of seeds"));
    }
    Ok(range)
}

/// The outcome of one scenario over its seeds.
struct Outcome {
    scenario: Scenario,
    total: u64,
    failures: Vec<RunReport>,
}

/// Runs one seed; a panic is a failure like a violated invariant.
fn run_one(scenario: &Scenario, seed: u64) -> RunReport {
    match catch_unwind(AssertUnwindSafe(|| (scenario.run)(seed))) {
        Ok(report) => report,
        Err(panic) => {
            let msg = panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("(non-string panic payload)");
            RunReport {
                seed,
                digest: 0,
                events: 0,
                violations: vec![format!("panicked: {msg}")],
                summary: "panicked".to_owned(),
            }
        }
    }
}

/// A one-line progress display on stderr: redrawn in place on a terminal, else a line every
/// 10%.
struct Progress {
    tty: bool,
    last_decile: u64,
}

impl Progress {
    fn new() -> Self {
        Self {
            tty: std::io::stderr().is_terminal(),
            last_decile: 0,
        }
    }

    fn update(&mut self, name: &str, done: u64, total: u64, failed: usize) {
        let mut err = std::io::stderr().lock();
        if self.tty {
            const WIDTH: u64 = 30;
            let filled = (done * WIDTH / total) as usize;
            let _ = write!(
                err,
                "\r\x1b[2K{name} [{}{}] {done}/{total} seeds, {failed} failed",
                "#".repeat(filled),
                "-".repeat(WIDTH as usize - filled),
            );
            if done == total {
                let _ = writeln!(err);
            }
        } else {
            let decile = done * 10 / total;
            if done == 0 || decile > self.last_decile {
                self.last_decile = decile;
                let _ = writeln!(
                    err,
                    "{name}: {done}/{total} seeds ({}%), {failed} failed",
                    done * 100 / total
                );
            }
        }
        let _ = err.flush();
    }
}

fn sweep(scenario: Scenario, seeds: Range<u64>, digests: bool) -> Outcome {
    let total = seeds.end - seeds.start;
    let mut progress = Progress::new();
    let mut failures = Vec::new();
    progress.update(scenario.name, 0, total, 0);
    for (done, seed) in (1..).zip(seeds) {
        let report = run_one(&scenario, seed);
        if digests {
            println!(
                "{} seed {seed} digest {:016x}",
                scenario.name, report.digest
            );
        }
        if !report.violations.is_empty() {
            failures.push(report);
        }
        progress.update(scenario.name, done, total, failures.len());
    }
    Outcome {
        scenario,
        total,
        failures,
    }
}

fn print_violations(report: &RunReport) {
    for v in &report.violations {
        println!("    - {v}");
    }
}

fn replay(scenario: &Scenario, seed: u64) -> ExitCode {
    let report = run_one(scenario, seed);
    println!("scenario: {}", scenario.name);
    println!("seed:     {seed}");
    println!("digest:   {:016x}", report.digest);
    println!("events:   {}", report.events);
    println!("summary:  {}", report.summary);
    if report.violations.is_empty() {
        println!("result:   passed");
        ExitCode::SUCCESS
    } else {
        println!(
            "result:   FAILED, {} violation(s):",
            report.violations.len()
        );
        print_violations(&report);
        if std::env::var_os("SLUICE_SIM_TRACE").is_none() {
            println!("  (SLUICE_SIM_TRACE=1 prints the event trace)");
        }
        ExitCode::FAILURE
    }
}

fn list() {
    let scenarios = registry::all();
    let width = scenarios.iter().map(|s| s.name.len()).max().unwrap_or(0);
    for s in &scenarios {
        println!("{:<width$}  {}", s.name, s.about);
    }
}

fn usage_error(msg: &str) -> ExitCode {
    eprintln!("sluice sim: {msg}");
    ExitCode::from(2)
}

/// With `SLUICE_SIM_LOG=FILTER` (an `EnvFilter`), a replay prints the runtime's log lines to
/// stderr, each stamped with the simulation's elapsed time like the trace's lines.
fn init_log() {
    let Ok(filter) = std::env::var("SLUICE_SIM_LOG") else {
        return;
    };
    let filter = match tracing_subscriber::EnvFilter::try_new(&filter) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("SLUICE_SIM_LOG={filter:?} is not a log filter: {e}");
            return;
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_timer(SimTime)
        .with_writer(std::io::stderr)
        .init();
}

/// The log lines' time: the simulation's, as the trace prints it.
struct SimTime;

impl tracing_subscriber::fmt::time::FormatTime for SimTime {
    fn format_time(&self, w: &mut tracing_subscriber::fmt::format::Writer<'_>) -> std::fmt::Result {
        match turmoil::sim_elapsed() {
            Some(t) => write!(w, "{:>10.3}ms", t.as_secs_f64() * 1000.0),
            None => write!(w, "{:>12}", "-"),
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if cli.list {
        list();
        return ExitCode::SUCCESS;
    }
    let Some(name) = cli.scenario else {
        return usage_error("no scenario given (see --list)");
    };
    let scenarios = if name == "all" {
        if cli.seed.is_some() {
            return usage_error("--seed replays one scenario; name it instead of `all`");
        }
        registry::all()
    } else if let Some(s) = registry::find(&name) {
        vec![s]
    } else {
        let known: Vec<_> = registry::all().iter().map(|s| s.name).collect();
        return usage_error(&format!(
            "unknown scenario {name:?}; known scenarios: {}, all",
            known.join(", ")
        ));
    };
    if let Some(seed) = cli.seed {
        init_log();
        return replay(&scenarios[0], seed);
    }
    let seeds = cli.seeds.unwrap_or(0..DEFAULT_SEEDS);
    let outcomes: Vec<Outcome> = scenarios
        .into_iter()
        .map(|s| sweep(s, seeds.clone(), cli.digests))
        .collect();

    let mut any_failed = false;
    for o in &outcomes {
        let failed = o.failures.len() as u64;
        println!(
            "{}: {} seeds passed, {failed} failed (seeds {}..{})",
            o.scenario.name,
            o.total - failed,
            seeds.start,
            seeds.end
        );
        for report in &o.failures {
            any_failed = true;
            println!("  seed {} FAILED ({}):", report.seed, report.summary);
            print_violations(report);
            println!(
                "    replay: sluice sim {} --seed {}",
                o.scenario.name, report.seed
            );
        }
    }
    if any_failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
