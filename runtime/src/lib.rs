//! # sluice-runtime — sockets, workers and the proxy engine
//!
//! This crate does the IO that `sluice-core` leaves out, and nothing else:
//!
//! - [`net`]: the [`net::Network`] trait with a tokio implementation ([`net::TokioNet`]) and,
//!   behind the `turmoil` feature, a simulated one ([`net::TurmoilNet`]). The engine is
//!   written once against the trait; there is no test-only copy of proxy logic.
//! - [`engine`]: one worker's proxy engine — accept loops, L4 sessions driven by
//!   [`sluice_core::tcp_proxy::TcpSession`], the echo filter, graceful drain.
//! - [`upstreams`]: a worker's upstream side (cluster states, health, pools) and the one connect
//!   path every upstream connection takes, with its typed [`upstreams::ConnectError`].
//! - [`relay`]: moves bytes between two sockets with reused buffers and reports every read to
//!   the session state machine.
//! - [`iptables`]: `sluice iptables`, the capture rules for a config (printed, never run).
//! - [`transparent`]: transparent capture's socket options (original destination,
//!   `IP_TRANSPARENT`, `SO_MARK`).
//! - [`limits`]: the process-wide caps every worker shares (connections, Bolt partial frames).
//! - [`logging`]: log level spellings (CLI and `/logging`), colour on terminals only.
//! - [`stats`]: per-worker counters (written only by their worker; summed when read).
//! - [`admin`]: the admin API (readiness, stats, Prometheus metrics, cluster view, config dump,
//!   drain and quit) on its own thread.
//! - [`worker`]: one worker's listening sockets and config generations (reload switching,
//!   drain), driven by [`server`] on each worker thread and by the simulator.
//! - [`server`]: the real process — one pinned current-thread tokio runtime per core, each with
//!   its own `SO_REUSEPORT` listener sockets; signals; drain.
#![warn(missing_docs)]

pub mod access_log;
pub mod admin;
pub mod bolt;
pub mod bufpool;
pub mod config_file;
pub mod control;
pub mod dns;
mod downstream;
pub mod engine;
pub mod fdpass;
#[cfg(test)]
mod h2_test_client;
pub mod h2_upstream;
pub mod health;
pub mod http;
pub mod http2;
pub mod iptables;
pub mod limits;
pub mod logging;
pub mod memtrim;
pub mod net;
mod otlp;
pub mod pool;
pub mod relay;
pub mod resolver;
pub mod server;
mod shared_io;
pub mod splice;
pub mod stats;
pub mod tcp_info;
#[cfg(test)]
mod test_support;
pub mod tls;
pub mod tls_certs;
pub mod tls_tickets;
pub mod transparent;
pub mod upstreams;
pub mod worker;
pub mod xds;
pub mod xds_sds;

/// The origin of the core's [`sluice_core::Instant`]s: a point a minute before the first
/// reading (so that no tokio clock of this process — real, or virtual under turmoil, which
/// starts at its runtime's creation — reads earlier).
static ORIGIN: std::sync::LazyLock<tokio::time::Instant> = std::sync::LazyLock::new(|| {
    let now = tokio::time::Instant::now();
    now.checked_sub(std::time::Duration::from_secs(60))
        .unwrap_or(now)
});

/// The current instant on the runtime's clock (tokio's clock: real time under the real
/// runtime, virtual time under turmoil), as the core counts time. This is the only place the
/// runtime reads a clock for the core.
#[must_use]
pub fn now() -> sluice_core::Instant {
    #[cfg(test)]
    CLOCK_READS.with(|n| n.set(n.get() + 1));
    sluice_core::Instant::from_origin(
        tokio::time::Instant::now().saturating_duration_since(*ORIGIN),
    )
}

// How many times this thread called [`now`] (tests count a request's clock reads: a clock
// read costs as much as a small core input, and the request path shares them where nothing
// waits between two).
#[cfg(test)]
thread_local! {
    pub(crate) static CLOCK_READS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// A core instant (a deadline from `poll_timeout`) on tokio's clock, to sleep until it.
#[must_use]
pub fn to_tokio(at: sluice_core::Instant) -> tokio::time::Instant {
    *ORIGIN + at.since_origin()
}

/// The version string printed by `sluice --version` and the admin API.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
