//! `sluice`: the command line.
//!
//! - `sluice run [-c] FILE [--workers N] [--log-format text|json] [--log-level LEVEL]`
//! - `sluice validate [-c] FILE`
//! - `sluice iptables [-c] FILE [--proxy-uid UID]` (prints capture rules; runs nothing)
//!
//! The config file is given with `-c`/`--config` or alone; `-` reads it from standard input.
//! - `sluice sim ARGS...` (execs the `sluice-sim` binary: deterministic simulation scenarios)
//! - `sluice --version`

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, Parser, Subcommand, ValueEnum};
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
        #[command(flatten)]
        config: ConfigArg,
        /// Worker threads, each pinned to a core [default: the cores available].
        #[arg(long)]
        workers: Option<usize>,
        /// Log line format.
        #[arg(long, value_enum, default_value_t = LogFormat::Text)]
        log_format: LogFormat,
        /// Log level (trace, debug, info, warn/warning, error/err/critical, off) or filter
        /// (`sluice_runtime=debug,info`); `RUST_LOG` overrides it.
        #[arg(long, default_value = "info", value_parser = parse_log_level)]
        log_level: String,
        /// Seed of the workers' random choices (balancing, generated request and trace ids), for
        /// reproducible runs; default: random per process (ids must not repeat across the
        /// proxies of a mesh).
        #[arg(long)]
        seed: Option<u64>,
        /// Take over from the instance running this config (binary upgrade): receive its
        /// listening sockets through the control socket, serve them, then let it drain.
        #[arg(long)]
        upgrade: bool,
        /// The control socket (upgrades) [default: derived from the config path, in
        /// $XDG_RUNTIME_DIR, else /run/sluice for root or /tmp/sluice-UID]; its directory must
        /// be writable only by this user (or root).
        #[arg(long)]
        control_socket: Option<PathBuf>,
    },
    /// Check a config file without running it: exit 0 when valid, 1 with every problem listed.
    Validate {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Print (not run) the iptables / ip rule commands that capture the pod's traffic for the
    /// config's `original_dst` listeners, with the exclusions that keep the proxy's own
    /// connections out of them.
    Iptables {
        #[command(flatten)]
        config: ConfigArg,
        /// Also exclude the proxy's own traffic by its user id (`-m owner --uid-owner`).
        #[arg(long, value_name = "UID")]
        proxy_uid: Option<u32>,
        /// The mark TPROXY gives diverted packets (matched by the policy route).
        #[arg(long, default_value_t = sluice_runtime::iptables::DEFAULT_TPROXY_MARK)]
        tproxy_mark: u32,
        /// The routing table of the TPROXY policy route.
        #[arg(long, default_value_t = sluice_runtime::iptables::DEFAULT_ROUTE_TABLE)]
        route_table: u32,
    },
    /// Run deterministic simulation scenarios over seed ranges (`sluice sim --help`).
    ///
    /// Forwards every argument to the `sluice-sim` binary, found next to `sluice` or on PATH.
    #[command(disable_help_flag = true, disable_version_flag = true)]
    Sim {
        /// Arguments for `sluice-sim`, e.g. `--list`, `SCENARIO --seeds 0..64`, `SCENARIO --seed 7`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, num_args = 0..)]
        args: Vec<OsString>,
    },
}

/// The config file: `-c FILE`, `--config FILE` or `FILE` alone; `-` is standard input.
#[derive(Args, Debug)]
#[group(required = true, multiple = false)]
struct ConfigArg {
    /// Config file (YAML); `-` reads it from standard input.
    #[arg(short, long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Config file (YAML), given without `-c`.
    #[arg(value_name = "FILE")]
    file: Option<PathBuf>,
}

/// Where the config comes from.
#[derive(Debug, PartialEq, Eq)]
enum ConfigSource {
    File(PathBuf),
    Stdin,
}

impl ConfigArg {
    fn source(self) -> ConfigSource {
        match self.config.or(self.file) {
            Some(p) if p.as_os_str() == "-" => ConfigSource::Stdin,
            Some(p) => ConfigSource::File(p),
            None => unreachable!("clap requires the config argument"),
        }
    }
}

const SIM_BINARY: &str = "sluice-sim";

/// `sluice-sim` next to this executable, else on PATH.
fn find_sim_binary() -> Option<PathBuf> {
    fn is_executable(path: &Path) -> bool {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    }
    let beside = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join(SIM_BINARY)));
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .map(|dir| dir.join(SIM_BINARY));
    beside.into_iter().chain(on_path).find(|p| is_executable(p))
}

/// Replaces this process with `sluice-sim ARGS...`; returns only on failure.
fn exec_sim(args: Vec<OsString>) -> ExitCode {
    use std::os::unix::process::CommandExt;
    let Some(binary) = find_sim_binary() else {
        eprintln!(
            "sluice: `sluice sim` needs the {SIM_BINARY} binary next to sluice (build it with \
             `cargo build --release -p sluice-sim`)"
        );
        return ExitCode::from(2);
    };
    let err = std::process::Command::new(&binary).args(args).exec();
    eprintln!("sluice: cannot run {}: {err}", binary.display());
    ExitCode::from(2)
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// `--log-level`: a level in one of its usual spellings, or `TARGET=LEVEL` directives.
fn parse_log_level(s: &str) -> Result<String, String> {
    sluice_runtime::logging::level_filter(s)
}

fn load(source: &ConfigSource) -> Result<Config, String> {
    match source {
        // A file's errors are typed; the CLI prints their text.
        ConfigSource::File(path) => Ok(server::load_config(path)?),
        ConfigSource::Stdin => {
            use std::io::Read as _;
            let limit = server::MAX_CONFIG_BYTES;
            let mut bytes = Vec::new();
            std::io::stdin()
                .lock()
                .take(limit + 1)
                .read_to_end(&mut bytes)
                .map_err(|e| format!("<stdin>: cannot read the config: {e}"))?;
            if bytes.len() as u64 > limit {
                return Err(format!(
                    "<stdin>: cannot read the config: over the limit of {limit} bytes (64 MiB)"
                ));
            }
            let text = String::from_utf8(bytes)
                .map_err(|e| format!("<stdin>: cannot read the config: not UTF-8 text ({e})"))?;
            // The same listing as `server::load_config` gives for a file.
            sluice_runtime::config_file::config_from_text(&text)
                .map_err(|errors| sluice_runtime::config_file::problems("<stdin>", &text, &errors))
        }
    }
}

impl ConfigSource {
    fn display(&self) -> String {
        match self {
            ConfigSource::File(p) => p.display().to_string(),
            ConfigSource::Stdin => "<stdin>".to_owned(),
        }
    }
}

/// Installs the subscriber with a reloadable filter; returns the control the admin API's
/// `/logging` uses to change it.
fn init_logging(format: LogFormat, level: &str) -> LogControl {
    use tracing_subscriber::EnvFilter;
    // `RUST_LOG` overrides `--log-level`; read like it when it is a level or simple filter
    // (so that rustls is held to `error` there too), else as `EnvFilter` reads it.
    let from_env = std::env::var("RUST_LOG")
        .ok()
        .filter(|v| !v.trim().is_empty())
        .and_then(|v| {
            let spec = sluice_runtime::logging::level_filter(&v).unwrap_or(v);
            EnvFilter::try_new(spec).ok()
        });
    let filter = from_env
        .map_or_else(|| EnvFilter::try_new(level), Ok)
        .unwrap_or_else(|_| EnvFilter::new("info"));
    use std::io::IsTerminal as _;
    let colour = sluice_runtime::logging::use_colour(
        std::io::stderr().is_terminal(),
        std::env::var_os("NO_COLOR").as_deref(),
    );
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour)
        .with_writer(std::io::stderr)
        .with_thread_names(true);
    fn parse(level: &str) -> Result<EnvFilter, String> {
        let filter = sluice_runtime::logging::level_filter(level)?;
        EnvFilter::try_new(&filter)
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
        Command::Sim { args } => exec_sim(args),
        Command::Iptables {
            config,
            proxy_uid,
            tproxy_mark,
            route_table,
        } => {
            let options = sluice_runtime::iptables::Options {
                proxy_uid,
                tproxy_mark,
                route_table,
            };
            let source = config.source();
            match load(&source).and_then(|c| {
                sluice_runtime::iptables::script(&c, &options)
                    .map_err(|e| format!("{}: {e}", source.display()))
            }) {
                Ok(script) => {
                    print!("{script}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("{e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Validate { config } => {
            let config = config.source();
            match load(&config) {
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
            }
        }
        Command::Run {
            config,
            workers,
            log_format,
            log_level,
            seed,
            upgrade,
            control_socket,
        } => {
            let source = config.source();
            // A config read from stdin cannot be re-read (no reload), and names no control
            // socket by itself: upgrades need `--control-socket` then.
            let config_path = match &source {
                ConfigSource::File(p) => Some(p.clone()),
                ConfigSource::Stdin => None,
            };
            if config_path.is_none() && upgrade && control_socket.is_none() {
                eprintln!("sluice: --upgrade with the config on stdin needs --control-socket");
                return ExitCode::from(2);
            }
            let config = match load(&source) {
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
                    seed: seed.unwrap_or_else(sluice_runtime::server::random_seed),
                    log_control: Some(log_control),
                    control_socket: control_socket.or_else(|| {
                        config_path
                            .as_deref()
                            .map(sluice_runtime::control::default_path)
                    }),
                    config_path,
                    upgrade,
                },
            ) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    // Once: in the log when errors are logged, else on stderr as it is.
                    if tracing::enabled!(tracing::Level::ERROR) {
                        tracing::error!("{e}");
                    } else {
                        eprintln!("sluice: {e}");
                    }
                    ExitCode::FAILURE
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sim_args(argv: &[&str]) -> Vec<OsString> {
        match Cli::try_parse_from(argv).map(|c| c.command) {
            Ok(Command::Sim { args }) => args,
            Ok(_) => panic!("{argv:?} did not parse as `sim`"),
            Err(e) => panic!("{argv:?}: {e}"),
        }
    }

    #[test]
    fn sim_forwards_its_arguments_untouched() {
        for argv in [
            &["sluice", "sim"][..],
            &["sluice", "sim", "--list"],
            &["sluice", "sim", "--help"],
            &["sluice", "sim", "-h"],
            &["sluice", "sim", "--version"],
            &["sluice", "sim", "tcp_steady", "--seeds", "0..8"],
            &["sluice", "sim", "tcp_partition", "--seed", "7"],
            &["sluice", "sim", "all", "--seeds=4", "--", "-x"],
        ] {
            let want: Vec<OsString> = argv[2..].iter().map(OsString::from).collect();
            assert_eq!(sim_args(argv), want, "{argv:?}");
        }
    }

    #[test]
    fn log_levels_take_the_usual_spellings_and_refuse_the_rest() {
        let level = |l: &str| match Cli::try_parse_from([
            "sluice",
            "run",
            "-c",
            "x.yaml",
            "--log-level",
            l,
        ])
        .map(|c| c.command)
        {
            Ok(Command::Run { log_level, .. }) => Ok(log_level),
            Ok(_) => panic!("not run"),
            Err(e) => Err(e.to_string()),
        };
        assert_eq!(level("warning").as_deref(), Ok("warn,rustls=error"));
        assert_eq!(level("critical").as_deref(), Ok("error"));
        assert_eq!(
            level("sluice_runtime=debug").as_deref(),
            Ok("sluice_runtime=debug")
        );
        let e = level("garbage").unwrap_err();
        assert!(e.contains("not a log level"), "{e}");
        assert!(e.contains(sluice_runtime::logging::ACCEPTED_LEVELS), "{e}");
    }

    fn config_of(argv: &[&str]) -> Result<ConfigSource, String> {
        match Cli::try_parse_from(argv).map(|c| c.command) {
            Ok(Command::Validate { config } | Command::Run { config, .. }) => Ok(config.source()),
            Ok(_) => panic!("{argv:?}: not validate or run"),
            Err(e) => Err(e.to_string()),
        }
    }

    #[test]
    fn the_config_path_is_taken_with_or_without_c_and_dash_is_stdin() {
        let file = |p: &str| Ok(ConfigSource::File(PathBuf::from(p)));
        for cmd in ["validate", "run"] {
            assert_eq!(
                config_of(&["sluice", cmd, "configs/http.yaml"]),
                file("configs/http.yaml")
            );
            assert_eq!(config_of(&["sluice", cmd, "-c", "x.yaml"]), file("x.yaml"));
            assert_eq!(
                config_of(&["sluice", cmd, "--config=x.yaml"]),
                file("x.yaml")
            );
            assert_eq!(
                config_of(&["sluice", cmd, "-c", "-"]),
                Ok(ConfigSource::Stdin)
            );
            assert_eq!(config_of(&["sluice", cmd, "-"]), Ok(ConfigSource::Stdin));
            assert!(
                config_of(&["sluice", cmd]).is_err(),
                "{cmd}: a config is required"
            );
            assert!(
                config_of(&["sluice", cmd, "-c", "a.yaml", "b.yaml"]).is_err(),
                "{cmd}: one config, not two"
            );
        }
        assert_eq!(
            config_of(&["sluice", "run", "x.yaml", "--workers", "2"]),
            file("x.yaml")
        );
    }

    #[test]
    fn the_other_subcommands_still_parse() {
        assert!(matches!(
            Cli::try_parse_from(["sluice", "validate", "-c", "x.yaml"]).map(|c| c.command),
            Ok(Command::Validate { .. })
        ));
        assert!(matches!(
            Cli::try_parse_from(["sluice", "run", "-c", "x.yaml", "--workers", "2"])
                .map(|c| c.command),
            Ok(Command::Run { .. })
        ));
    }
}
