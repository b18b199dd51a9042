//! `sluice`: the command line.
//!
//! - `sluice run -c FILE [--workers N] [--log-format text|json] [--log-level LEVEL]`
//! - `sluice validate -c FILE`
//! - `sluice --version`

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand, ValueEnum};
use sluice_core::config::Config;
use sluice_runtime::admin::LogControl;
use sluice_runtime::server::{self, ServerOptions};

#[derive(Parser)]
#[command(name = "sluice", version = sluice_runtime::VERSION, about = "Sluice: a service-mesh sidecar data plane")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy on a config file until SIGTERM/SIGINT.
    Run {
        /// Config file (YAML).
        #[arg(short, long)]
        config: PathBuf,
        /// Worker threads, each pinned to a core [default: the cores available].
        #[arg(long)]
        workers: Option<usize>,
        /// Log line format.
        #[arg(long, value_enum, default_value_t = LogFormat::Text)]
        log_format: LogFormat,
        /// Log level or filter (`info`, `debug`, `sluice_runtime=debug`); `RUST_LOG` overrides it.
        #[arg(long, default_value = "info")]
        log_level: String,
        /// Seed of the balancers' random choices (for reproducible runs).
        #[arg(long, default_value_t = 0x5eed)]
        seed: u64,
    },
    /// Check a config file without running it: exit 0 when valid, 1 with every problem listed.
    Validate {
        /// Config file (YAML).
        #[arg(short, long)]
        config: PathBuf,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

fn load(path: &Path) -> Result<Config, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("{}: cannot read the config: {e}", path.display()))?;
    Config::from_yaml(&text).map_err(|errors| {
        let n = errors.0.len();
        let mut out = format!(
            "{}: {n} problem{} in the config:",
            path.display(),
            if n == 1 { "" } else { "s" }
        );
        for e in &errors.0 {
            out.push_str("\n  ");
            out.push_str(&e.to_string());
        }
        out
    })
}

/// Installs the subscriber with a reloadable filter; returns the control the admin API's
/// `/logging` uses to change it.
fn init_logging(format: LogFormat, level: &str) -> LogControl {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_thread_names(true);
    fn parse(level: &str) -> Result<EnvFilter, String> {
        EnvFilter::try_new(level)
            .map_err(|e| format!("{level:?} is not a log level or filter: {e}"))
    }
    match format {
        LogFormat::Text => {
            let builder = builder.with_filter_reloading();
            let handle = builder.reload_handle();
            builder.init();
            LogControl(Arc::new(move |level: &str| {
                handle.reload(parse(level)?).map_err(|e| e.to_string())
            }))
        }
        LogFormat::Json => {
            let builder = builder.json().with_filter_reloading();
            let handle = builder.reload_handle();
            builder.init();
            LogControl(Arc::new(move |level: &str| {
                handle.reload(parse(level)?).map_err(|e| e.to_string())
            }))
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Validate { config } => match load(&config) {
            Ok(c) => {
                println!(
                    "{}: ok ({} listener{}, {} cluster{})",
                    config.display(),
                    c.listeners.len(),
                    if c.listeners.len() == 1 { "" } else { "s" },
                    c.clusters.len(),
                    if c.clusters.len() == 1 { "" } else { "s" },
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::FAILURE
            }
        },
        Command::Run {
            config,
            workers,
            log_format,
            log_level,
            seed,
        } => {
            let config = match load(&config) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("{e}");
                    eprintln!("sluice: not starting.");
                    return ExitCode::FAILURE;
                }
            };
            let log_control = init_logging(log_format, &log_level);
            let workers = workers.unwrap_or_else(|| {
                std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
            });
            match server::run(
                config,
                ServerOptions {
                    workers,
                    seed,
                    log_control: Some(log_control),
                },
            ) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{e}");
                    eprintln!("sluice: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
