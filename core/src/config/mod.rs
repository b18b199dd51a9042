//! The configuration model: what a YAML file (and later xDS) can say, parsed and validated.
//!
//! [`Config::from_yaml`] turns text into a validated [`Config`] or into [`ConfigErrors`]: **every**
//! problem in the file, each naming where it is (`listeners[0].address`) and what is wrong. It
//! checks, in one pass: YAML syntax, shapes and types, unknown fields (a typo is never silently
//! ignored), value grammars (durations, addresses), ranges, unique names and addresses, and
//! references between sections (a listener's cluster must exist).
//!
//! Invariant of a returned `Config`: every reference resolves (`TcpProxyConfig::cluster_index`
//! and every `http::WeightedCluster::cluster_index` of an `http` listener index
//! `Config::clusters`), names are unique, every cluster has at least one host. An `http`
//! listener also keeps the invariants listed in the module doc of `http_decode` (every regex
//! compiles, domains are well-formed and unique, ...), which [`crate::router::Router::new`]
//! relies on.

pub mod bolt;
mod bolt_decode;
mod cluster_decode;
mod decode;
pub mod diff;
pub mod http;
mod http_decode;
pub mod values;

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;

use crate::health::{
    CircuitBreakerSettings, DEFAULT_PANIC_THRESHOLD_PERCENT, HealthCheckSettings, OutlierSettings,
};
use decode::{Decoder, Obj};
pub use values::{format_duration, parse_duration, parse_socket_addr};

/// One problem in a config: where, and what is wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// Dotted path to the offending value, e.g. `listeners[0].tcp_proxy.cluster`; empty for the
    /// whole document.
    pub path: String,
    /// What is wrong, naming the bad value where there is one.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

impl std::error::Error for ConfigError {}

/// Every problem found in a config; never empty.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Default for [`ClusterConfig::upstream_idle_timeout`] (below the common upstream keep-alive
/// timeouts: nginx 75 s).
pub const DEFAULT_UPSTREAM_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Default for [`ClusterConfig::connect_timeout`] (Envoy's default).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Default for [`TcpProxyConfig::idle_timeout`] (Envoy's default).
pub const DEFAULT_TCP_IDLE_TIMEOUT: Duration = Duration::from_secs(3600);
/// Default for [`TcpProxyConfig::max_connect_attempts`]: a sidecar fails over by default.
pub const DEFAULT_MAX_CONNECT_ATTEMPTS: u32 = 3;
/// Default for [`Config::drain_timeout`].
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

pub(crate) fn ser_duration<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format_duration(*d))
}

fn ser_opt_duration<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format_duration(d.unwrap_or(Duration::ZERO)))
}

/// A whole, validated configuration.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Config {
    /// The admin server, if any.
    pub admin: Option<AdminConfig>,
    /// Listeners, in file order.
    pub listeners: Vec<ListenerConfig>,
    /// Clusters, in file order.
    pub clusters: Vec<ClusterConfig>,
    /// How long a stopping instance lets open connections finish.
    #[serde(serialize_with = "ser_duration")]
    pub drain_timeout: Duration,
    /// Process-wide caps (`limits`).
    pub limits: LimitsConfig,
}

/// Default for [`LimitsConfig::bolt_partial_frame_bytes`] (256 MiB: sixteen frames of the
/// default 16 MiB `max_frame_size`).
pub const DEFAULT_BOLT_PARTIAL_FRAME_BYTES: usize = 256 << 20;
/// Largest accepted `max_connections` (process-wide or per listener).
pub const MAX_CONNECTIONS_LIMIT: u64 = 10_000_000;

/// `limits`: process-wide caps on what clients can make the proxy hold.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LimitsConfig {
    /// Downstream connections open at once in the whole process (every listener and worker);
    /// beyond it a new connection is accepted and closed at once. `None`: the runtime derives
    /// it from the open-file limit (`RLIMIT_NOFILE`).
    pub max_connections: Option<u64>,
    /// Bytes that all Bolt downstream connections together may hold in partial frames (read
    /// buffers grown past their first chunk for a frame not yet complete); a connection whose
    /// frame would go beyond it is closed.
    pub bolt_partial_frame_bytes: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_connections: None,
            bolt_partial_frame_bytes: DEFAULT_BOLT_PARTIAL_FRAME_BYTES,
        }
    }
}

/// The admin server's settings.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AdminConfig {
    /// Where it listens: a TCP address (`address`) or a Unix socket (`path`, `mode`).
    #[serde(flatten)]
    pub listen: AdminListen,
    /// Whether a non-loopback `address` was explicitly allowed (the admin API can stop the
    /// proxy, so exposing it beyond the host must be a written decision).
    pub allow_non_loopback: bool,
}

/// Where the admin server listens.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum AdminListen {
    /// A TCP address; loopback unless `allow_non_loopback` is set. Any local user can connect.
    Tcp {
        /// The address.
        address: SocketAddr,
    },
    /// A Unix stream socket: only who the file's owner and `mode` allow can connect.
    Unix {
        /// The socket file.
        path: String,
        /// Its permission bits (default `0600`: only the service's user).
        mode: u32,
    },
}

impl AdminConfig {
    /// The TCP address, when it listens on TCP.
    #[must_use]
    pub fn tcp_address(&self) -> Option<SocketAddr> {
        match self.listen {
            AdminListen::Tcp { address } => Some(address),
            AdminListen::Unix { .. } => None,
        }
    }
}

impl fmt::Display for AdminListen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AdminListen::Tcp { address } => write!(f, "{address}"),
            AdminListen::Unix { path, .. } => write!(f, "unix:{path}"),
        }
    }
}

/// The default `admin.mode` of a Unix admin socket.
pub const DEFAULT_ADMIN_SOCKET_MODE: u32 = 0o600;

/// A listening socket and what it does with a connection.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ListenerConfig {
    /// Unique listener name (used in stats and logs).
    pub name: String,
    /// Where it listens.
    pub address: SocketAddr,
    /// What it does with each accepted connection.
    pub filter: ListenerFilter,
    /// Connections open at once on this listener (all workers); beyond it a new connection is
    /// accepted and closed at once. `None`: only the process-wide limit applies.
    pub max_connections: Option<u64>,
}

/// What a listener does with a connection. Exactly one per listener.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ListenerFilter {
    /// Proxy the bytes to a host of a cluster.
    TcpProxy(TcpProxyConfig),
    /// Write back every byte read (Envoy's echo filter): a self-contained upstream for smoke
    /// tests and the quickstart.
    Echo,
    /// An HTTP/1.1 connection manager: routes each request (boxed: it is much larger than the
    /// other variants).
    Http(Box<http::HttpConfig>),
    /// A SOFARPC Bolt proxy: routes each request by service and headers.
    Bolt(Box<bolt::BoltConfig>),
    /// `protocol: auto`: sniffs the first bytes of a connection, HTTP/1.1 or Bolt (v1/v2), and
    /// serves it with the matching filter.
    Auto {
        /// The `http` filter.
        http: Box<http::HttpConfig>,
        /// The `bolt` filter.
        bolt: Box<bolt::BoltConfig>,
    },
}

/// L4 proxying settings.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TcpProxyConfig {
    /// Name of the upstream cluster.
    pub cluster: String,
    /// Index of that cluster in [`Config::clusters`].
    #[serde(skip)]
    pub cluster_index: usize,
    /// Close the session after this long without a byte in either direction; `None` disables.
    #[serde(serialize_with = "ser_opt_duration")]
    pub idle_timeout: Option<Duration>,
    /// Connect attempts per session, each to another host when one is available.
    pub max_connect_attempts: u32,
}

/// Load-balancing policy of a cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LbPolicy {
    /// Each available host in turn.
    RoundRobin,
    /// Smooth weighted round robin (nginx's): picks in proportion to weights, interleaved.
    WeightedRoundRobin,
    /// Uniformly random among available hosts.
    Random,
    /// Power of two choices: two random hosts, the one with fewer active requests per weight.
    LeastRequest,
    /// Ketama-style consistent hashing on a ring of virtual nodes (see `hash_policy`).
    RingHash,
    /// Maglev consistent hashing over a lookup table of 65537 entries (see `hash_policy`).
    Maglev,
}

impl LbPolicy {
    /// The names the config accepts.
    pub const CHOICES: [(&'static str, LbPolicy); 6] = [
        ("round_robin", LbPolicy::RoundRobin),
        ("weighted_round_robin", LbPolicy::WeightedRoundRobin),
        ("random", LbPolicy::Random),
        ("least_request", LbPolicy::LeastRequest),
        ("ring_hash", LbPolicy::RingHash),
        ("maglev", LbPolicy::Maglev),
    ];

    /// Whether the policy picks by a request hash (`hash_policy`).
    #[must_use]
    pub fn is_consistent_hash(self) -> bool {
        matches!(self, LbPolicy::RingHash | LbPolicy::Maglev)
    }
}

/// One input of a request's hash for `ring_hash` / `maglev` (Envoy's route `hash_policy`). The
/// hashes of the policies that apply to a request are combined in order; when none applies
/// (the header is absent), the pick is random.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HashPolicy {
    /// The value of this request header (name lowercased); HTTP and Bolt.
    Header(String),
    /// The downstream peer's IP address (no port).
    SourceIp,
}

/// Default for [`ClusterConfig::minimum_ring_size`] (Envoy's).
pub const DEFAULT_MINIMUM_RING_SIZE: u32 = 1024;
/// Largest accepted `ring_hash.minimum_ring_size` (Envoy's maximum ring size).
pub const MAX_RING_SIZE: u32 = 8 * 1024 * 1024;

impl LbPolicy {
    /// The config name of the policy.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        Self::CHOICES
            .iter()
            .find(|(_, p)| *p == self)
            .map_or("?", |(n, _)| n)
    }
}

/// A named set of upstream hosts.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ClusterConfig {
    /// Unique cluster name.
    pub name: String,
    /// Give up a connect attempt after this long.
    #[serde(serialize_with = "ser_duration")]
    pub connect_timeout: Duration,
    /// Close a pooled (idle keep-alive) upstream HTTP connection after this long unused
    /// (Envoy's `common_http_protocol_options.idle_timeout`); > 0.
    #[serde(serialize_with = "ser_duration")]
    pub upstream_idle_timeout: Duration,
    /// How a host is picked.
    pub lb_policy: LbPolicy,
    /// What a request's hash is made of (`ring_hash` / `maglev` only; empty: random pick).
    pub hash_policy: Vec<HashPolicy>,
    /// `ring_hash`: the ring has at least this many virtual nodes (default 1024, at most 8Mi).
    pub minimum_ring_size: u32,
    /// Active health checking; `None`: every host is healthy unless ejected.
    pub health_check: Option<HealthCheckConfig>,
    /// Passive health checking (outlier detection); `None`: off.
    pub outlier_detection: Option<OutlierSettings>,
    /// Limits on connections, pending requests, requests and retries (always on; Envoy's
    /// defaults).
    pub circuit_breakers: CircuitBreakerSettings,
    /// Below this share (percent) of available hosts, balance over all hosts (default 50; 0
    /// disables).
    pub panic_threshold_percent: u32,
    /// The hosts; never empty.
    pub hosts: Vec<HostConfig>,
}

impl Default for ClusterConfig {
    /// An unnamed round-robin cluster with no hosts and every default (for building configs in
    /// code; a parsed config always has hosts).
    fn default() -> Self {
        ClusterConfig {
            name: String::new(),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            upstream_idle_timeout: DEFAULT_UPSTREAM_IDLE_TIMEOUT,
            lb_policy: LbPolicy::RoundRobin,
            hash_policy: Vec::new(),
            minimum_ring_size: DEFAULT_MINIMUM_RING_SIZE,
            health_check: None,
            outlier_detection: None,
            circuit_breakers: CircuitBreakerSettings::default(),
            panic_threshold_percent: DEFAULT_PANIC_THRESHOLD_PERCENT,
            hosts: Vec::new(),
        }
    }
}

/// A cluster's active health check: what a probe is, and when and how its results count.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct HealthCheckConfig {
    /// The probe.
    pub probe: HealthProbe,
    /// Interval, timeout, jitter, thresholds.
    pub settings: HealthCheckSettings,
}

/// What one health probe does.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthProbe {
    /// Connect; success when the connection is established.
    Tcp,
    /// `GET path` over HTTP/1.1; success when the status is in one of the ranges.
    Http {
        /// Request path (starts with `/`).
        path: String,
        /// `Host` header; default the cluster's name.
        host: Option<String>,
        /// Inclusive status ranges that count as healthy (default `[200, 299]`).
        expected_statuses: Vec<(u16, u16)>,
    },
    /// A Bolt v1 heartbeat; success when it is answered with status 0.
    Bolt,
}

/// One upstream host.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct HostConfig {
    /// Its address.
    pub address: SocketAddr,
    /// Relative weight, 1 to 1000 (default 1).
    pub weight: u32,
}

impl Config {
    /// Parses and validates YAML text, reporting every problem found.
    pub fn from_yaml(text: &str) -> Result<Config, ConfigErrors> {
        let tree: Value = serde_saphyr::from_str(text).map_err(|e| {
            ConfigErrors(vec![ConfigError {
                path: String::new(),
                message: decode::elide(
                    &format!("not valid YAML: {}", one_line(&e.to_string())),
                    decode::MAX_MESSAGE_CHARS,
                ),
            }])
        })?;
        Self::from_tree(&tree)
    }

    /// Validates an already parsed tree (the JSON data model), reporting every problem found.
    pub fn from_tree(tree: &Value) -> Result<Config, ConfigErrors> {
        let mut dec = Decoder::default();
        let config = decode_config(&mut dec, tree);
        match config {
            Some(c) if dec.errors.is_empty() => Ok(c),
            _ => {
                if dec.errors.is_empty() {
                    dec.error("", "config is empty");
                }
                Err(ConfigErrors(dec.errors))
            }
        }
    }

    /// The cluster a name refers to.
    #[must_use]
    pub fn cluster(&self, name: &str) -> Option<&ClusterConfig> {
        self.clusters.iter().find(|c| c.name == name)
    }
}

/// `s` with every run of whitespace (newlines included) replaced by one space.
pub(crate) fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn decode_config(dec: &mut Decoder, tree: &Value) -> Option<Config> {
    if tree.is_null() {
        dec.error(
            "",
            "config is empty (expected a mapping with `listeners` and `clusters`)",
        );
        return None;
    }
    let mut root = dec.object("", tree)?;
    let admin = root
        .opt("admin")
        .and_then(|(v, p)| decode_admin(dec, &p, v));
    let clusters = match root.opt("clusters") {
        Some((v, p)) => dec.list(&p, v, decode_cluster),
        None => Some(Vec::new()),
    };
    // References are checked against the cluster names as written, so that a listener with
    // another problem still has its cluster reference checked (all errors at once).
    let cluster_names: Vec<&str> = match tree.get("clusters") {
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(|c| c.get("name").and_then(Value::as_str))
            .collect(),
        _ => Vec::new(),
    };
    let listeners = root.req(dec, "listeners").and_then(|(v, p)| {
        dec.list(&p, v, |dec, path, v| {
            decode_listener(dec, path, v, &cluster_names)
        })
    });
    let drain_timeout = match root.opt("drain_timeout") {
        Some((v, p)) => dec.duration(&p, v),
        None => Some(DEFAULT_DRAIN_TIMEOUT),
    };
    let limits = match root.opt("limits") {
        Some((v, p)) => decode_limits(dec, &p, v),
        None => Some(LimitsConfig::default()),
    };
    root.finish(dec);

    let (listeners, clusters) = (listeners?, clusters?);
    if listeners.is_empty() {
        dec.error("listeners", "at least one listener is required");
    }
    check_unique(
        dec,
        "clusters",
        clusters.iter().map(|c| c.name.as_str()),
        "name",
    );
    check_unique(
        dec,
        "listeners",
        listeners.iter().map(|l| l.name.as_str()),
        "name",
    );
    let addresses: Vec<String> = listeners.iter().map(|l| l.address.to_string()).collect();
    check_unique(
        dec,
        "listeners",
        addresses.iter().map(String::as_str),
        "address",
    );
    let limits = limits?;
    // A Bolt frame larger than the whole partial-frame budget could never be received.
    for (i, l) in listeners.iter().enumerate() {
        if let ListenerFilter::Bolt(b) | ListenerFilter::Auto { bolt: b, .. } = &l.filter
            && b.max_frame_size > limits.bolt_partial_frame_bytes
        {
            dec.error(
                "limits.bolt_partial_frame_bytes",
                format!(
                    "{} bytes is less than listeners[{i}].bolt.max_frame_size ({} bytes): \
                     such a frame could never be received",
                    limits.bolt_partial_frame_bytes, b.max_frame_size
                ),
            );
        }
    }
    Some(Config {
        admin: admin.flatten(),
        listeners,
        clusters,
        drain_timeout: drain_timeout?,
        limits,
    })
}

fn decode_limits(dec: &mut Decoder, path: &str, v: &Value) -> Option<LimitsConfig> {
    let mut obj = dec.object(path, v)?;
    let max_connections = match obj.opt("max_connections") {
        Some((v, p)) => dec.u64_in(&p, v, 1..=MAX_CONNECTIONS_LIMIT).map(Some),
        None => Some(None),
    };
    let bolt_partial_frame_bytes = match obj.opt("bolt_partial_frame_bytes") {
        Some((v, p)) => bolt_decode::size_in(
            dec,
            &p,
            v,
            bolt::MIN_BOLT_FRAME_SIZE..=(64 << 30),
            "1KiB to 64GiB",
        ),
        None => Some(DEFAULT_BOLT_PARTIAL_FRAME_BYTES),
    };
    obj.finish(dec);
    Some(LimitsConfig {
        max_connections: max_connections?,
        bolt_partial_frame_bytes: bolt_partial_frame_bytes?,
    })
}

fn check_unique<'a>(
    dec: &mut Decoder,
    section: &str,
    values: impl Iterator<Item = &'a str>,
    field: &str,
) {
    let values: Vec<&str> = values.collect();
    for (i, v) in values.iter().enumerate() {
        if let Some(first) = values[..i].iter().position(|w| w == v) {
            dec.error(
                &format!("{section}[{i}].{field}"),
                format!("duplicate {field} {v:?} (already used by {section}[{first}])"),
            );
        }
    }
}

fn decode_admin(dec: &mut Decoder, path: &str, v: &Value) -> Option<Option<AdminConfig>> {
    let mut obj = dec.object(path, v)?;
    let address = obj.opt("address");
    let socket_path = obj.opt("path");
    let mode = obj.opt("mode");
    let allow = obj.opt("allow_non_loopback");
    obj.finish(dec);
    let allow_non_loopback = match &allow {
        Some((v, p)) => dec.boolean(p, v)?,
        None => false,
    };
    let listen = match (address, socket_path) {
        (Some(_), Some((_, p))) => {
            dec.error(
                &p,
                "give either `address` (TCP) or `path` (a Unix socket), not both",
            );
            return None;
        }
        (None, None) => {
            dec.error(
                &decode::child(path, "address"),
                "missing (give `address` for TCP, or `path` for a Unix socket)",
            );
            return None;
        }
        (Some((v, address_path)), None) => {
            if let Some((_, p)) = mode {
                dec.error(
                    &p,
                    "`mode` applies to a Unix socket (`path`), not to `address`",
                );
                return None;
            }
            let address = dec.parsed(&address_path, v, parse_socket_addr)?;
            if !address.ip().is_loopback() && !allow_non_loopback {
                dec.error(
                    &address_path,
                    format!(
                        "{address} is not a loopback address: the admin API can stop the proxy \
                         and dump its config, so expose it beyond this host only on purpose, by \
                         adding `allow_non_loopback: true` to `admin`"
                    ),
                );
                return None;
            }
            AdminListen::Tcp { address }
        }
        (None, Some((v, p))) => {
            if let Some((_, ap)) = allow {
                dec.error(
                    &ap,
                    "`allow_non_loopback` applies to `address`, not to `path`",
                );
                return None;
            }
            let socket_path = dec.string(&p, v)?;
            if socket_path.is_empty() || !socket_path.starts_with('/') || socket_path.len() > 107 {
                dec.error(
                    &p,
                    format!(
                        "{socket_path:?} is not an absolute path of at most 107 bytes (a Unix \
                         socket path)"
                    ),
                );
                return None;
            }
            let mode = match mode {
                Some((v, p)) => decode_mode(dec, &p, v)?,
                None => DEFAULT_ADMIN_SOCKET_MODE,
            };
            AdminListen::Unix {
                path: socket_path.to_owned(),
                mode,
            }
        }
    };
    Some(Some(AdminConfig {
        listen,
        allow_non_loopback,
    }))
}

/// File permission bits, written in octal: `0600`, `"0660"`, `"0o600"`. (The YAML parser
/// reads a bare `0600` as the number 600: its decimal digits are the octal mode.)
fn decode_mode(dec: &mut Decoder, path: &str, v: &Value) -> Option<u32> {
    let text = match v {
        Value::String(s) => s.trim_start_matches("0o").to_owned(),
        Value::Number(n) => match (n.as_u64(), n.as_f64()) {
            (Some(n), _) => n.to_string(),
            (None, Some(f)) if f >= 0.0 && f.fract() == 0.0 && f < 1e4 => format!("{f:.0}"),
            _ => String::new(),
        },
        _ => String::new(),
    };
    let mode = u32::from_str_radix(&text, 8).ok().filter(|m| *m <= 0o777);
    match mode {
        Some(m) => Some(m),
        None => {
            let shown = match v {
                Value::String(s) => format!("{s:?}"),
                Value::Number(_) if !text.is_empty() => text,
                other => other.to_string(),
            };
            dec.error(
                path,
                format!("{shown} is not a file mode (octal permission bits from 0000 to 0777, e.g. 0600)"),
            );
            None
        }
    }
}

fn decode_listener(
    dec: &mut Decoder,
    path: &str,
    v: &Value,
    cluster_names: &[&str],
) -> Option<ListenerConfig> {
    let mut obj = dec.object(path, v)?;
    let name = obj.req(dec, "name").and_then(|(v, p)| dec.name(&p, v));
    let address = obj
        .req(dec, "address")
        .and_then(|(v, p)| dec.parsed(&p, v, parse_socket_addr));
    let protocol = match obj.opt("protocol") {
        Some((v, p)) => dec
            .one_of(&p, v, &[("auto", ())])
            .map(|()| Some(p))
            .or(Some(None)),
        None => None,
    };
    let mut filters: Vec<(&str, Option<ListenerFilter>)> = Vec::new();
    if let Some((v, p)) = obj.opt("tcp_proxy") {
        filters.push((
            "tcp_proxy",
            decode_tcp_proxy(dec, &p, v, cluster_names).map(ListenerFilter::TcpProxy),
        ));
    }
    if let Some((v, p)) = obj.opt("echo") {
        filters.push((
            "echo",
            decode_empty(dec, &p, v).map(|()| ListenerFilter::Echo),
        ));
    }
    if let Some((v, p)) = obj.opt("http") {
        filters.push((
            "http",
            http_decode::decode_http(dec, &p, v, cluster_names)
                .map(|h| ListenerFilter::Http(Box::new(h))),
        ));
    }
    if let Some((v, p)) = obj.opt("bolt") {
        filters.push((
            "bolt",
            bolt_decode::decode_bolt(dec, &p, v, cluster_names)
                .map(|b| ListenerFilter::Bolt(Box::new(b))),
        ));
    }
    let filter = match protocol {
        // `protocol` was given but is not a known value: already reported.
        Some(None) => None,
        Some(Some(protocol_path)) => {
            let names: Vec<&str> = filters.iter().map(|(n, _)| *n).collect();
            if names == ["http", "bolt"] {
                let mut it = filters.into_iter().map(|(_, f)| f);
                match (it.next().flatten(), it.next().flatten()) {
                    (Some(ListenerFilter::Http(http)), Some(ListenerFilter::Bolt(bolt))) => {
                        Some(ListenerFilter::Auto { http, bolt })
                    }
                    _ => None,
                }
            } else {
                let given = if names.is_empty() {
                    "none".to_owned()
                } else {
                    names.join(", ")
                };
                dec.error(
                    &protocol_path,
                    format!(
                        "`protocol: auto` needs exactly the filters `http` and `bolt` (given: {given})"
                    ),
                );
                None
            }
        }
        None => match filters.len() {
            0 => {
                dec.error(
                    path,
                    "no filter: give one of `tcp_proxy`, `echo`, `http`, `bolt`",
                );
                None
            }
            1 => filters.pop().and_then(|(_, f)| f),
            _ => {
                dec.error(
                    path,
                    "more than one filter: give exactly one of `tcp_proxy`, `echo`, `http`, \
                     `bolt` (or `protocol: auto` with `http` and `bolt`)",
                );
                None
            }
        },
    };
    let max_connections = match obj.opt("max_connections") {
        Some((v, p)) => dec.u64_in(&p, v, 1..=MAX_CONNECTIONS_LIMIT).map(Some),
        None => Some(None),
    };
    obj.finish(dec);
    Some(ListenerConfig {
        name: name?,
        address: address?,
        filter: filter?,
        max_connections: max_connections?,
    })
}

/// `{}` or nothing: a section that takes no settings (yet).
fn decode_empty(dec: &mut Decoder, path: &str, v: &Value) -> Option<()> {
    if v.is_null() {
        return Some(());
    }
    let obj = dec.object(path, v)?;
    obj.finish(dec);
    Some(())
}

fn decode_tcp_proxy(
    dec: &mut Decoder,
    path: &str,
    v: &Value,
    cluster_names: &[&str],
) -> Option<TcpProxyConfig> {
    let mut obj = dec.object(path, v)?;
    let cluster = obj
        .req(dec, "cluster")
        .and_then(|(v, p)| cluster_ref(dec, &p, v, cluster_names));
    let idle_timeout = opt_duration(dec, &mut obj, "idle_timeout", DEFAULT_TCP_IDLE_TIMEOUT);
    let max_connect_attempts = match obj.opt("max_connect_attempts") {
        Some((v, p)) => dec.u64_in(&p, v, 1..=10).map(|n| n as u32),
        None => Some(DEFAULT_MAX_CONNECT_ATTEMPTS),
    };
    obj.finish(dec);
    let (cluster, cluster_index) = cluster?;
    Some(TcpProxyConfig {
        cluster,
        cluster_index,
        idle_timeout: idle_timeout.map(|d| (!d.is_zero()).then_some(d))?,
        max_connect_attempts: max_connect_attempts?,
    })
}

/// A cluster name that must be one of `cluster_names` (the names as written in the file, so
/// that a reference is checked even when its cluster has other problems): the name and the
/// cluster's index in `Config::clusters`.
fn cluster_ref(
    dec: &mut Decoder,
    path: &str,
    v: &Value,
    cluster_names: &[&str],
) -> Option<(String, usize)> {
    let name = dec.name(path, v)?;
    match cluster_names.iter().position(|c| *c == name) {
        Some(index) => Some((name, index)),
        None => {
            let known = if cluster_names.is_empty() {
                "no clusters are defined".to_owned()
            } else {
                format!("known: {}", cluster_names.join(", "))
            };
            dec.error(path, format!("unknown cluster {name:?} ({known})"));
            None
        }
    }
}

fn opt_duration(
    dec: &mut Decoder,
    obj: &mut Obj<'_>,
    key: &'static str,
    default: Duration,
) -> Option<Duration> {
    match obj.opt(key) {
        Some((v, p)) => dec.duration(&p, v),
        None => Some(default),
    }
}

fn decode_cluster(dec: &mut Decoder, path: &str, v: &Value) -> Option<ClusterConfig> {
    let mut obj = dec.object(path, v)?;
    let name = obj.req(dec, "name").and_then(|(v, p)| dec.name(&p, v));
    let connect_timeout = match obj.opt("connect_timeout") {
        Some((v, p)) => dec.duration(&p, v).and_then(|d| {
            if d.is_zero() {
                dec.error(&p, "must be greater than zero");
                None
            } else {
                Some(d)
            }
        }),
        None => Some(DEFAULT_CONNECT_TIMEOUT),
    };
    let upstream_idle_timeout = match obj.opt("upstream_idle_timeout") {
        Some((v, p)) => dec.duration(&p, v).and_then(|d| {
            if d.is_zero() {
                dec.error(&p, "must be greater than zero");
                None
            } else {
                Some(d)
            }
        }),
        None => Some(DEFAULT_UPSTREAM_IDLE_TIMEOUT),
    };
    let lb_policy = match obj.opt("lb_policy") {
        Some((v, p)) => dec.one_of(&p, v, &LbPolicy::CHOICES),
        None => Some(LbPolicy::RoundRobin),
    };
    let hash_policy = match obj.opt("hash_policy") {
        Some((v, p)) => cluster_decode::hash_policy(dec, &p, v).and_then(|h| match lb_policy {
            Some(policy) if !policy.is_consistent_hash() => {
                dec.error(
                    &p,
                    format!(
                        "applies only to lb_policy ring_hash or maglev (this cluster uses {})",
                        policy.as_str()
                    ),
                );
                None
            }
            _ => Some(h),
        }),
        None => Some(Vec::new()),
    };
    let minimum_ring_size = match obj.opt("ring_hash") {
        Some((v, p)) => {
            if lb_policy.is_some_and(|l| l != LbPolicy::RingHash) {
                dec.error(&p, "applies only to lb_policy ring_hash");
            }
            cluster_decode::ring_hash(dec, &p, v, DEFAULT_MINIMUM_RING_SIZE)
        }
        None => Some(DEFAULT_MINIMUM_RING_SIZE),
    };
    let health_check = match obj.opt("health_check") {
        Some((v, p)) => cluster_decode::health_check(dec, &p, v).map(Some),
        None => Some(None),
    };
    let outlier_detection = match obj.opt("outlier_detection") {
        Some((v, p)) => cluster_decode::outlier_detection(dec, &p, v).map(Some),
        None => Some(None),
    };
    let circuit_breakers = match obj.opt("circuit_breakers") {
        Some((v, p)) => cluster_decode::circuit_breakers(dec, &p, v),
        None => Some(CircuitBreakerSettings::default()),
    };
    let panic_threshold_percent = match obj.opt("panic_threshold") {
        Some((v, p)) => cluster_decode::percent(dec, &p, v),
        None => Some(DEFAULT_PANIC_THRESHOLD_PERCENT),
    };
    let hosts = obj.req(dec, "hosts").and_then(|(v, p)| {
        let hosts = dec.list(&p, v, decode_host)?;
        if hosts.is_empty() {
            dec.error(&p, "at least one host is required");
        }
        Some(hosts)
    });
    obj.finish(dec);
    Some(ClusterConfig {
        name: name?,
        connect_timeout: connect_timeout?,
        upstream_idle_timeout: upstream_idle_timeout?,
        lb_policy: lb_policy?,
        hash_policy: hash_policy?,
        minimum_ring_size: minimum_ring_size?,
        health_check: health_check?,
        outlier_detection: outlier_detection?,
        circuit_breakers: circuit_breakers?,
        panic_threshold_percent: panic_threshold_percent?,
        hosts: hosts?,
    })
}

fn decode_host(dec: &mut Decoder, path: &str, v: &Value) -> Option<HostConfig> {
    let mut obj = dec.object(path, v)?;
    let address = obj
        .req(dec, "address")
        .and_then(|(v, p)| dec.parsed(&p, v, parse_socket_addr));
    let weight = match obj.opt("weight") {
        Some((v, p)) => dec.u64_in(&p, v, 1..=1000).map(|w| w as u32),
        None => Some(1),
    };
    obj.finish(dec);
    Some(HostConfig {
        address: address?,
        weight: weight?,
    })
}

#[cfg(test)]
mod tests;
