//! The configuration model: what a config (a YAML file today, xDS later) can say — types,
//! defaults and limits only.
//!
//! The model is a leaf of the core: it imports no other module of the crate, and every other
//! module reads it (the router, the balancers, health checking, the Bolt and TCP proxies, the
//! runtime). Settings that a state machine consumes live here too (health checks, outlier
//! detection, circuit breakers: [`upstream`]; path normalization: [`http`]), and the state
//! machines re-export them. Turning text into a `Config` is [`yaml`]'s job
//! ([`Config::from_yaml`]); the model never depends on it, so that another source (xDS) can
//! produce the same types and reuse the same validation rules.
//!
//! Invariant of a `Config` produced by a decoder: every reference resolves
//! (`TcpProxyConfig::cluster_index`, `xds::XdsConfig::cluster_index` (a static cluster) and
//! every `http::WeightedCluster::cluster_index` of an
//! `http` listener — or of a listener's filter chain — index `Config::clusters`), names are
//! unique, a listener's filter chains never overlap ([`crate::filter_chain::overlap`]) and
//! [`ListenerFilter::Close`] appears only on a listener with chains, and the clusters the
//! xDS client and the span exporter dial have hosts. An `http` listener also keeps the
//! invariants listed in the module doc of the YAML
//! `http` decoder (every regex compiles, domains are well-formed and unique, ...), which the
//! router relies on. A cluster may have no hosts: a static one with `hosts: []` (Envoy's STATIC
//! cluster without endpoints, istiod's `BlackHoleCluster`: HTTP routes to it are answered 503,
//! a `tcp_proxy` to it closes), a DNS one before its names resolve, and one of
//! [`ClusterKind::OriginalDst`] always (it connects to each connection's original
//! destination; only a `tcp_proxy` or HTTP routes refer to one). A `Config` built in code
//! (tests) must keep them too.
//!
//! The `Serialize` impls are the admin API's config dump, in the input schema: [`Config::from_tree`]
//! reads a dump back into the same `Config`. Types whose YAML shape is their Rust shape derive
//! it; the others are written by hand in `dump`. Durations are written the way the config
//! writes them ([`format_duration`]).

pub mod bolt;
pub mod diff;
mod dump;
pub mod header_format;
pub mod http;
pub mod tls;
pub mod tracing;
pub mod upstream;
pub mod xds;
pub mod yaml;

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use serde::Serialize;

pub use upstream::{
    CircuitBreakerSettings, DEFAULT_PANIC_THRESHOLD_PERCENT, DnsLookupFamily, DnsName, DnsSettings,
    HealthCheckSettings, OutlierSettings, RetryBudgetSettings,
};

/// One problem in a config: where, and what is wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// Dotted path to the offending value, e.g. `listeners[0].tcp_proxy.cluster`; empty for the
    /// whole document.
    pub path: String,
    /// What is wrong, naming the bad value where there is one.
    pub message: String,
    /// Where in the YAML text it is (the offending key or value, or the closest enclosing
    /// one that is there); `None` for a config not read from text, or no place to point at.
    /// Not part of the `Display` text, which names the place by `path`.
    pub position: Option<TextPosition>,
}

/// A place in a config's text: 1-based line and column (in characters).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct TextPosition {
    /// The line, from 1.
    pub line: usize,
    /// The column, from 1, in characters.
    pub column: usize,
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

/// Formats a duration the way the config writes it (the inverse of [`yaml::parse_duration`] for
/// the values it produces).
#[must_use]
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if d.is_zero() {
        "0s".to_owned()
    } else if !d.subsec_nanos().is_multiple_of(1_000_000) {
        format!("{}us", d.as_micros())
    } else if ms.is_multiple_of(3_600_000) {
        format!("{}h", ms / 3_600_000)
    } else if ms.is_multiple_of(60_000) {
        format!("{}m", ms / 60_000)
    } else if ms.is_multiple_of(1_000) {
        format!("{}s", ms / 1_000)
    } else {
        format!("{ms}ms")
    }
}

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
    /// `SO_MARK` set on every socket the proxy opens upstream (connections and health probes),
    /// so that the capture rules of a transparent sidecar can leave the proxy's own traffic
    /// alone; `None`: unmarked. Process-wide: every upstream socket must be excluded from
    /// capture, whatever its cluster, or it would loop back into the proxy.
    pub upstream_mark: Option<u32>,
    /// How often the runtime looks at the TLS files (certificate chains, keys, CAs) of the
    /// listeners and clusters for a change of content, and rotates to them when they changed;
    /// zero: never (they are read again on a reload only).
    #[serde(serialize_with = "ser_duration")]
    pub tls_file_check_interval: Duration,
    /// Trace propagation and span export (`tracing`); `None`: trace headers pass untouched.
    pub tracing: Option<tracing::TracingConfig>,
    /// Who this proxy is to an xDS management server (`node`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<xds::NodeConfig>,
    /// The xDS management server (`xds`); `None`: the config is the file alone.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub xds: Option<xds::XdsConfig>,
}

/// Default for [`Config::tls_file_check_interval`].
pub const DEFAULT_TLS_FILE_CHECK_INTERVAL: Duration = Duration::from_secs(5);

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
#[derive(Clone, Debug, PartialEq)]
pub struct AdminConfig {
    /// Where it listens: a TCP address (`address`) or a Unix socket (`path`, `mode`).
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
    /// What it does with each accepted connection (its key names the filter: `tcp_proxy`,
    /// `http`…).
    #[serde(flatten)]
    pub filter: ListenerFilter,
    /// Connections open at once on this listener (all workers); beyond it a new connection is
    /// accepted and closed at once. `None`: only the process-wide limit applies.
    pub max_connections: Option<u64>,
    /// Terminate TLS on this listener (`tcp_proxy` listeners).
    pub tls: Option<Box<tls::ListenerTls>>,
    /// How a connection's original destination (the address the client dialled before the
    /// packet filter steered it here) is read; `None`: connections are not captured.
    pub original_dst: Option<OriginalDst>,
    /// Hand each connection to the listener whose address matches its original destination
    /// (Envoy's `use_original_dst`; see [`crate::handoff`]); when none does, serve it here.
    /// Needs `original_dst`.
    pub use_original_dst: bool,
    /// Whether the listener binds its address (the default). `false` (Envoy's
    /// `bind_to_port: false`, a *virtual* listener): nothing is bound; the listener only serves
    /// connections a `use_original_dst` capture listener hands it by their original
    /// destination. Not with `original_dst`; needs a `use_original_dst` listener in the config.
    #[serde(skip_serializing_if = "is_true")]
    pub bind_to_port: bool,
    /// Filter chains (Envoy's `filter_chains`): each connection is served by the chain whose
    /// `filter_chain_match` fits it best ([`crate::filter_chain::select`]), with that chain's
    /// own filter and `tls`; when none fits, by the listener's own `filter` and `tls` (Envoy's
    /// `default_filter_chain`), or closed when the listener has none
    /// ([`ListenerFilter::Close`]). Empty (the default): the listener's filter serves every
    /// connection, nothing is peeked at.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub filter_chains: Vec<FilterChain>,
    /// With `filter_chains` that look at the first bytes (`server_names`,
    /// `transport_protocol`, `application_protocols`): how long the first bytes may take to
    /// say whether the connection is TLS and what its ClientHello asks for, or, plaintext,
    /// whether it is HTTP (Envoy's `listener_filters_timeout`, default 15 s). Zero: no limit
    /// (Envoy's `0s`, Istio's default `protocolDetectionTimeout`): the connection waits for
    /// its first bytes as long as the client keeps it open (the drain deadline still ends
    /// the wait).
    #[serde(
        serialize_with = "ser_duration",
        skip_serializing_if = "is_default_listener_filters_timeout"
    )]
    pub listener_filters_timeout: Duration,
    /// When `listener_filters_timeout` passes: `false` (the default, Envoy's) closes the
    /// connection; `true` picks a chain as for a plaintext connection without a ClientHello
    /// (Istio sets it on its inbound listener: a server-first protocol sends nothing first).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub continue_on_listener_filters_timeout: bool,
    /// On which destination ports the ClientHello peek runs (Envoy's `tls_inspector` and its
    /// `filter_disabled`). Where it does not, every connection counts as plaintext
    /// (`raw_buffer`), with no server name and no ALPN.
    #[serde(skip_serializing_if = "InspectorPorts::is_all")]
    pub tls_inspector: InspectorPorts,
    /// On which destination ports a plaintext connection's first bytes are sniffed for
    /// HTTP/1.x or h2c ([`crate::detect`], Envoy's `http_inspector` and its `filter_disabled`)
    /// when a chain asks for `application_protocols` `http/1.0`, `http/1.1` or `h2c`. Where it
    /// does not, a plaintext connection has no application protocol.
    #[serde(skip_serializing_if = "InspectorPorts::is_all")]
    pub http_inspector: InspectorPorts,
}

/// Which destination ports a first-bytes inspector runs on (`tls_inspector`,
/// `http_inspector` of a listener with `filter_chains`): every port (the default), every port
/// but some, or only some. Envoy's `filter_disabled` predicates of destination port ranges,
/// as Istio sends them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum InspectorPorts {
    /// Every port.
    #[default]
    All,
    /// Every port but these.
    ExceptPorts(Vec<PortRange>),
    /// Only these ports.
    OnlyPorts(Vec<PortRange>),
}

impl InspectorPorts {
    /// Whether it runs on every port (the default).
    #[must_use]
    pub fn is_all(&self) -> bool {
        *self == InspectorPorts::All
    }

    /// Whether the inspector runs on a connection to `port`.
    #[must_use]
    pub fn runs_on(&self, port: u16) -> bool {
        match self {
            InspectorPorts::All => true,
            InspectorPorts::ExceptPorts(r) => !r.iter().any(|r| r.contains(port)),
            InspectorPorts::OnlyPorts(r) => r.iter().any(|r| r.contains(port)),
        }
    }
}

/// A range of ports, both ends included (written `8080` or `"8000-8099"`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortRange {
    /// The first port.
    pub first: u16,
    /// The last port (`>= first`).
    pub last: u16,
}

impl PortRange {
    /// Whether `port` is in the range.
    #[must_use]
    pub fn contains(self, port: u16) -> bool {
        (self.first..=self.last).contains(&port)
    }
}

impl Serialize for PortRange {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.first == self.last {
            s.serialize_u16(self.first)
        } else {
            s.collect_str(&format_args!("{}-{}", self.first, self.last))
        }
    }
}

/// Default for [`ListenerConfig::listener_filters_timeout`] (Envoy's).
pub const DEFAULT_LISTENER_FILTERS_TIMEOUT: Duration = Duration::from_secs(15);

fn is_default_listener_filters_timeout(d: &Duration) -> bool {
    *d == DEFAULT_LISTENER_FILTERS_TIMEOUT
}

/// One entry of a listener's `filter_chains`: which connections it takes, and how it serves
/// them (its own filter, `http` or `tcp_proxy`, and its own terminating `tls`).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FilterChain {
    /// Which connections the chain takes; every criterion given must hold.
    #[serde(skip_serializing_if = "FilterChainMatch::is_empty")]
    pub filter_chain_match: FilterChainMatch,
    /// Terminate TLS with these settings (`None`: the bytes are served as they come, TLS or
    /// not — a `tcp_proxy` passes TLS through).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<Box<tls::ListenerTls>>,
    /// What serves the connection: `http` or `tcp_proxy` (its key names it).
    #[serde(flatten)]
    pub filter: ListenerFilter,
}

/// `filter_chain_match`: the criteria of a chain, all optional (Envoy's `FilterChainMatch`,
/// the fields Sluice supports). Precedence between chains: [`crate::filter_chain`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct FilterChainMatch {
    /// The connection's destination port: its original destination's on a capture listener
    /// (`original_dst`), else the listener's own port.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub destination_port: Option<u16>,
    /// The ClientHello's server name: exact lowercase DNS names, or `*.` + a suffix (any name
    /// ending in `.suffix`, one or more labels before it).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub server_names: Vec<String>,
    /// TLS (a ClientHello came) or not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transport_protocol: Option<TransportProtocol>,
    /// One of the ALPN protocols the ClientHello offers must be among these.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub application_protocols: Vec<String>,
}

impl FilterChainMatch {
    /// Whether it has no criterion (the chain takes any connection).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        *self == FilterChainMatch::default()
    }

    /// Whether a connection's ClientHello (or its absence) must be seen to decide.
    #[must_use]
    pub fn needs_client_hello(&self) -> bool {
        !self.server_names.is_empty()
            || self.transport_protocol.is_some()
            || !self.application_protocols.is_empty()
    }
}

/// `filter_chain_match.transport_protocol`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TransportProtocol {
    /// The connection starts with a TLS ClientHello.
    Tls,
    /// It does not (plaintext, or any other protocol).
    RawBuffer,
}

impl TransportProtocol {
    /// The names the config accepts (Envoy's).
    pub const CHOICES: [(&'static str, TransportProtocol); 2] = [
        ("tls", TransportProtocol::Tls),
        ("raw_buffer", TransportProtocol::RawBuffer),
    ];
}

impl ListenerConfig {
    /// The listener as filter chain `chain` serves a connection: this listener with the
    /// chain's filter and `tls`, and no chains (what the runtime compiles per chain, so that a
    /// chain is served by the same code as a listener). `None` for an index out of range.
    #[must_use]
    pub fn chain_as_listener(&self, chain: usize) -> Option<ListenerConfig> {
        let c = self.filter_chains.get(chain)?;
        Some(ListenerConfig {
            filter: c.filter.clone(),
            tls: c.tls.clone(),
            filter_chains: Vec::new(),
            ..self.clone_without_chains()
        })
    }

    fn clone_without_chains(&self) -> ListenerConfig {
        ListenerConfig {
            name: self.name.clone(),
            address: self.address,
            filter: ListenerFilter::Close,
            max_connections: self.max_connections,
            tls: None,
            original_dst: self.original_dst,
            use_original_dst: self.use_original_dst,
            bind_to_port: self.bind_to_port,
            filter_chains: Vec::new(),
            listener_filters_timeout: self.listener_filters_timeout,
            continue_on_listener_filters_timeout: self.continue_on_listener_filters_timeout,
            tls_inspector: self.tls_inspector.clone(),
            http_inspector: self.http_inspector.clone(),
        }
    }
}

#[allow(clippy::trivially_copy_pass_by_ref)] // serde's skip_serializing_if passes a reference
fn is_true(b: &bool) -> bool {
    *b
}

/// How a capture listener learns a connection's original destination.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OriginalDst {
    /// The packet filter rewrote the destination (iptables `REDIRECT` / `DNAT`): the original
    /// is read back from connection tracking (`SO_ORIGINAL_DST`, `IP6T_SO_ORIGINAL_DST`).
    Redirect,
    /// The packet filter delivered the connection unchanged (iptables `TPROXY`): the listener
    /// binds with `IP_TRANSPARENT`, and an accepted socket's local address is the original.
    Tproxy,
}

impl OriginalDst {
    /// The names the config accepts.
    pub const CHOICES: [(&'static str, OriginalDst); 2] = [
        ("redirect", OriginalDst::Redirect),
        ("tproxy", OriginalDst::Tproxy),
    ];
}

/// What a listener does with a connection. Exactly one per listener.
#[derive(Clone, Debug, PartialEq)]
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
    /// No filter of its own (a listener with `filter_chains` and no default chain, Envoy's
    /// listener without `default_filter_chain`): a connection no chain takes is closed, and
    /// counted (`downstream_cx_no_filter_chain_match`). Only with `filter_chains`.
    Close,
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
    /// TLS passthrough by server name: a connection whose ClientHello names one of a route's
    /// `server_names` goes to that route's cluster, its bytes untouched (nothing is
    /// terminated); any other connection (no match, no SNI, not TLS) goes to `cluster`. Empty:
    /// no ClientHello is awaited.
    pub sni_routes: Vec<SniRoute>,
    /// How long to wait for a complete ClientHello when `sni_routes` is set (then the
    /// connection is closed).
    #[serde(serialize_with = "ser_duration")]
    pub client_hello_timeout: Duration,
    /// One line per session at its close; templates use only [`http::TCP_LOG_FIELDS`] and
    /// `ORIGINAL_DST`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub access_log: Option<http::AccessLogConfig>,
    /// Relay a plaintext session's bytes by `splice(2)` (socket → pipe → socket in the kernel,
    /// no copy into the proxy) rather than by reading and writing them (default `true`; TLS
    /// sessions always copy: their bytes pass through rustls).
    pub splice: bool,
}

/// One `sni_routes` entry of a `tcp_proxy`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SniRoute {
    /// Lowercase DNS names without a trailing dot; `*.example.com` matches any name ending in
    /// `.example.com` (one or more labels before it). Exact names win over wildcards, and a
    /// longer wildcard suffix over a shorter one.
    pub server_names: Vec<String>,
    /// Name of the upstream cluster.
    pub cluster: String,
    /// Index of that cluster in [`Config::clusters`].
    #[serde(skip)]
    pub cluster_index: usize,
}

/// How long a `tcp_proxy` with `sni_routes` waits for the ClientHello by default (Envoy's
/// listener filter timeout).
pub const DEFAULT_CLIENT_HELLO_TIMEOUT: Duration = Duration::from_secs(15);

impl TcpProxyConfig {
    /// The cluster index for a connection whose ClientHello named `server_name` (lowercase,
    /// no trailing dot; `None`: no name or not TLS), and whether a route matched.
    #[must_use]
    pub fn cluster_for_server_name(&self, server_name: Option<&str>) -> (usize, bool) {
        let Some(name) = server_name else {
            return (self.cluster_index, false);
        };
        let mut best: Option<(usize, usize)> = None; // (suffix length, cluster)
        for route in &self.sni_routes {
            for pattern in &route.server_names {
                if let Some(suffix) = pattern.strip_prefix('*') {
                    // `suffix` is `.example.com`: at least one label before it.
                    if name.len() > suffix.len()
                        && name.ends_with(suffix)
                        && best.is_none_or(|(len, _)| suffix.len() > len)
                    {
                        best = Some((suffix.len(), route.cluster_index));
                    }
                } else if pattern == name {
                    return (route.cluster_index, true);
                }
            }
        }
        best.map_or((self.cluster_index, false), |(_, c)| (c, true))
    }
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
#[derive(Clone, Debug, PartialEq, Eq)]
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
#[derive(Clone, Debug, PartialEq)]
pub struct ClusterConfig {
    /// Unique cluster name.
    pub name: String,
    /// Give up a connect attempt after this long.
    pub connect_timeout: Duration,
    /// Close a pooled (idle keep-alive) upstream HTTP connection after this long unused
    /// (Envoy's `common_http_protocol_options.idle_timeout`); > 0.
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
    /// disables); with priority levels, per level ([`crate::lb::priority`]).
    pub panic_threshold_percent: u32,
    /// How much a level's usable share is scaled to give its health, in percent (Envoy's
    /// `overprovisioning_factor`: default [`DEFAULT_OVERPROVISIONING_FACTOR`], 140 = 1.4; > 0).
    /// With several levels it sets how load moves between them; with one, a level is in panic
    /// only while its health is below 100 too, so the factor also decides whether a single
    /// level's panic threshold can apply (at 140, only below 1/1.4 ≈ 71.4 % usable: a
    /// threshold above that acts as 71 %; at 100, the threshold alone) ([`crate::lb::priority`]).
    pub overprovisioning_factor: u32,
    /// Where its hosts come from (`type`).
    pub kind: ClusterKind,
    /// The hosts; empty for a [`ClusterKind::Static`] cluster of no hosts (`hosts: []`,
    /// istiod's `BlackHoleCluster`: every request to it answered 503, every TCP connection
    /// closed), always empty for an [`ClusterKind::OriginalDst`] one and for a DNS one (whose
    /// hosts are resolved: `dns`).
    pub hosts: Vec<HostConfig>,
    /// The names a [`ClusterKind::StrictDns`] or [`ClusterKind::LogicalDns`] cluster resolves
    /// and how; `None` for the other types.
    pub dns: Option<upstream::DnsSettings>,
    /// An `original_dst` cluster: an HTTP request's `x-envoy-original-dst-host` (`IP:PORT`)
    /// says where it goes, before the connection's original destination (Envoy's
    /// `use_http_header`). Off by default: whoever can send a request could make the proxy
    /// connect anywhere it can reach.
    pub use_http_header: bool,
    /// Originate TLS to the hosts (`tcp_proxy` listeners only, so far).
    pub tls: Option<Box<tls::UpstreamTls>>,
    /// Per-host transport choice (Envoy's `transport_socket_matches`, Istio auto-mTLS): a
    /// host's `transport_socket_match` labels pick the first entry whose every key/value the
    /// host carries ([`pick_transport_socket`]); no entry matched: `tls` above. Empty: every
    /// host uses `tls`.
    pub transport_socket_matches: Vec<TransportSocketMatch>,
    /// The HTTP version spoken to the hosts by HTTP routes (`protocol`, default `http1`).
    pub protocol: UpstreamProtocol,
    /// PING keepalive on the cluster's HTTP/2 connections (`protocol: http2` or `downstream`;
    /// `http2.connection_keepalive`,
    /// Envoy's name); `None` (the default, as in Envoy): no PINGs.
    pub http2_keepalive: Option<Http2Keepalive>,
    /// Whether its hosts may change in place, without a generation switch (an endpoints-only
    /// xDS update: [`diff::only_endpoints_differ`]): set by the loader on every `static`
    /// cluster of a config with `xds`, never by the user. Such a cluster keeps spare host ids
    /// ([`spare_host_slots`]) so that growth stays in place too.
    pub hosts_change_in_place: bool,
}

/// How many host ids a `static` cluster whose hosts change in place keeps for `hosts` hosts:
/// `hosts + clamp(hosts, MIN_SPARE_HOST_IDS, MAX_SPARE_HOST_IDS)` — at least 16 spare ids
/// (a small service scaling out: 2 → 18 replicas stays in place), twice the hosts for a larger
/// one (a rolling update or a blue/green deploy doubles the endpoints for a while), at most
/// 1024 spare (10 000 hosts keep 11 024 ids, not 20 000: a spare id costs about 150 bytes
/// per worker, see `docs/configuration/xds.md`). Growth past it switches generations, which
/// sizes the ids afresh from the new host count.
#[must_use]
pub fn spare_host_slots(hosts: usize) -> usize {
    hosts + hosts.clamp(MIN_SPARE_HOST_IDS, MAX_SPARE_HOST_IDS)
}

/// Envoy's default `overprovisioning_factor`: 140 (a level with ≥ 1/1.4 ≈ 71.4 % of its hosts
/// usable takes all the load it is offered).
pub const DEFAULT_OVERPROVISIONING_FACTOR: u32 = 140;

/// Fewest spare host ids of a cluster whose hosts change in place ([`spare_host_slots`]).
pub const MIN_SPARE_HOST_IDS: usize = 16;
/// Most spare host ids of a cluster whose hosts change in place ([`spare_host_slots`]).
pub const MAX_SPARE_HOST_IDS: usize = 1024;

/// `http2.connection_keepalive` of a `protocol: http2` cluster or of an `http` listener: each
/// connection sends a PING every `interval` plus a random jitter of up to
/// `interval_jitter_percent` of it; one not answered within `timeout` closes the connection
/// (upstream: failing its streams as resets; downstream: after a GOAWAY).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Http2Keepalive {
    /// Time between PINGs (> 0), before the jitter.
    #[serde(serialize_with = "ser_duration")]
    pub interval: Duration,
    /// How long a PING may go unanswered (> 0).
    #[serde(serialize_with = "ser_duration")]
    pub timeout: Duration,
    /// Most jitter added to each `interval`, in percent of it (0–100; default
    /// [`DEFAULT_KEEPALIVE_JITTER_PERCENT`], Envoy's `interval_jitter`): connections opened
    /// together (a reconnect storm, a pool filled at once) do not PING in lockstep.
    pub interval_jitter_percent: u8,
}

/// Envoy's default `connection_keepalive.interval_jitter`: 15 %.
pub const DEFAULT_KEEPALIVE_JITTER_PERCENT: u8 = 15;

impl Http2Keepalive {
    /// The wait before the next PING: `interval` plus `jitter` (uniform in `0..=u32::MAX`)
    /// scaled to at most `interval_jitter_percent` % of `interval`. Pure: the caller draws.
    #[must_use]
    pub fn next_ping_after(&self, jitter: u32) -> Duration {
        let most = self.interval.as_nanos() * u128::from(self.interval_jitter_percent) / 100;
        let extra = most * u128::from(jitter) / u128::from(u32::MAX);
        self.interval + Duration::from_nanos(u64::try_from(extra).unwrap_or(u64::MAX))
    }
}

/// A cluster's `protocol`: the HTTP version its hosts are spoken to in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum UpstreamProtocol {
    /// HTTP/1.1, a request at a time per pooled keep-alive connection.
    #[default]
    Http1,
    /// HTTP/2 (h2c by prior knowledge, or ALPN `h2` over TLS), requests multiplexed as
    /// streams on a few connections per host (per destination on an `original_dst` cluster).
    Http2,
    /// The client's own version, request by request (Envoy's `use_downstream_protocol_config`,
    /// which Istio puts on its pass-through and inbound clusters): a request that came over
    /// HTTP/1.1 goes up in HTTP/1.1, one that came over HTTP/2 (gRPC included) in HTTP/2
    /// (h2c by prior knowledge; not with `tls`, whose ALPN offer is one list per cluster).
    Downstream,
}

impl UpstreamProtocol {
    /// The names the config accepts.
    pub const CHOICES: [(&'static str, UpstreamProtocol); 3] = [
        ("http1", UpstreamProtocol::Http1),
        ("http2", UpstreamProtocol::Http2),
        ("downstream", UpstreamProtocol::Downstream),
    ];

    /// The ALPN protocol a TLS cluster offers for it when its `tls` gives no `alpn`
    /// (`downstream` is refused with `tls`; it would offer HTTP/1.1's).
    #[must_use]
    pub fn alpn(self) -> &'static str {
        match self {
            UpstreamProtocol::Http1 | UpstreamProtocol::Downstream => {
                tls::DEFAULT_HTTP_UPSTREAM_ALPN
            }
            UpstreamProtocol::Http2 => "h2",
        }
    }

    /// Whether a request that came in over HTTP/2 (`downstream_http2`) goes up in HTTP/2.
    #[must_use]
    pub fn speaks_http2(self, downstream_http2: bool) -> bool {
        match self {
            UpstreamProtocol::Http1 => false,
            UpstreamProtocol::Http2 => true,
            UpstreamProtocol::Downstream => downstream_http2,
        }
    }

    /// Whether some requests go up in HTTP/2 (the cluster's `http2` options apply).
    #[must_use]
    pub fn may_speak_http2(self) -> bool {
        self != UpstreamProtocol::Http1
    }
}

/// A cluster's `type`: where its upstream addresses come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ClusterKind {
    /// The `hosts` listed in the config.
    Static,
    /// Each connection goes to its own original destination (a transparent sidecar's
    /// pass-through): no hosts, no balancing, no health checking.
    OriginalDst,
    /// Every address of every name in `hosts` is a host; hosts come and go as the answers
    /// change (Envoy's `STRICT_DNS`).
    StrictDns,
    /// One logical host per name, which connects to the first address of the name's latest
    /// answer; a changed answer leaves open connections alone (Envoy's `LOGICAL_DNS`).
    LogicalDns,
}

impl ClusterKind {
    /// The names the config accepts.
    pub const CHOICES: [(&'static str, ClusterKind); 4] = [
        ("static", ClusterKind::Static),
        ("strict_dns", ClusterKind::StrictDns),
        ("logical_dns", ClusterKind::LogicalDns),
        ("original_dst", ClusterKind::OriginalDst),
    ];

    /// The name the config uses for it.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        Self::CHOICES
            .iter()
            .find(|(_, k)| *k == self)
            .map_or("?", |(n, _)| n)
    }

    /// Whether its hosts come from DNS.
    #[must_use]
    pub fn is_dns(self) -> bool {
        matches!(self, ClusterKind::StrictDns | ClusterKind::LogicalDns)
    }
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
            overprovisioning_factor: DEFAULT_OVERPROVISIONING_FACTOR,
            kind: ClusterKind::Static,
            hosts: Vec::new(),
            dns: None,
            use_http_header: false,
            tls: None,
            transport_socket_matches: Vec::new(),
            protocol: UpstreamProtocol::Http1,
            http2_keepalive: None,
            hosts_change_in_place: false,
        }
    }
}

/// A cluster's active health check: what a probe is, and when and how its results count.
#[derive(Clone, Debug, PartialEq, Eq)]
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
    /// A `grpc.health.v1.Health/Check` call over HTTP/2 (h2c, or h2 by ALPN over the
    /// cluster's TLS), whatever the cluster's `protocol`; success when it answers `SERVING`
    /// (Envoy's `grpc_health_check`).
    Grpc {
        /// `HealthCheckRequest.service`: empty (the default) asks for the server's overall
        /// health.
        service_name: String,
        /// The request's `:authority`; default the cluster's name.
        authority: Option<String>,
    },
}

/// One upstream host.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct HostConfig {
    /// Its address.
    pub address: SocketAddr,
    /// Relative weight, 1 to 1000 (default 1).
    pub weight: u32,
    /// Its priority level (default 0, the most preferred; a cluster's priorities are
    /// contiguous from 0): requests go to a level by the level loads
    /// ([`crate::lb::priority`]). Not shown in the dump when 0.
    #[serde(skip_serializing_if = "is_zero")]
    pub priority: u32,
    /// The labels its cluster's `transport_socket_matches` are matched against (from xDS: the
    /// endpoint's `envoy.transport_socket_match` metadata); `None`: no labels (only an entry
    /// with an empty `match` applies).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transport_socket_match: Option<Box<TransportLabels>>,
    /// The health its source declares (`health`; from xDS: the endpoint's `health_status`),
    /// default `healthy`. A host declared `unhealthy`, `draining` or `timeout` is never picked
    /// (unless its level is in panic) whatever health checking says, yet counts among its
    /// level's hosts ([`crate::lb::priority`]). Not shown in the dump when `healthy`.
    #[serde(skip_serializing_if = "DeclaredHealth::is_healthy")]
    pub health: DeclaredHealth,
}

/// The health a host's source declares for it: a file's `hosts[].health`, or an EDS
/// endpoint's `health_status` (Envoy's names, lower case). Envoy flags a host declared
/// `UNHEALTHY`, `DRAINING` or `TIMEOUT` `FAILED_EDS_HEALTH`: it stays in the host set and counts
/// in its level's health, but is not usable — independently of active health checking, which
/// still probes it (a host is usable only if neither says no). `DEGRADED` is taken as
/// healthy here (Envoy's separate degraded tier, used only when a level lacks healthy hosts,
/// is not modelled). Not part of which host it is: a change keeps the host's id and its
/// health-checking and outlier state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DeclaredHealth {
    /// Nothing said against it (EDS `UNKNOWN` or `HEALTHY`): usable as far as health
    /// checking and outlier detection say.
    #[default]
    Healthy,
    /// EDS `DEGRADED`: treated as `Healthy` (see the type's doc).
    Degraded,
    /// EDS `UNHEALTHY`: not usable.
    Unhealthy,
    /// EDS `DRAINING`: not usable (its open connections finish).
    Draining,
    /// EDS `TIMEOUT`: not usable.
    Timeout,
}

impl DeclaredHealth {
    /// The names the config accepts.
    pub const CHOICES: [(&'static str, DeclaredHealth); 5] = [
        ("healthy", DeclaredHealth::Healthy),
        ("degraded", DeclaredHealth::Degraded),
        ("unhealthy", DeclaredHealth::Unhealthy),
        ("draining", DeclaredHealth::Draining),
        ("timeout", DeclaredHealth::Timeout),
    ];

    /// Whether the balancer may use the host as far as its source says (Envoy: no
    /// `FAILED_EDS_HEALTH` flag).
    #[must_use]
    pub fn is_usable(self) -> bool {
        matches!(self, DeclaredHealth::Healthy | DeclaredHealth::Degraded)
    }

    /// Whether it is the default, `healthy`.
    #[must_use]
    pub fn is_healthy(&self) -> bool {
        *self == DeclaredHealth::Healthy
    }

    /// Its config name.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        Self::CHOICES
            .iter()
            .find(|(_, h)| *h == self)
            .map_or("healthy", |(n, _)| n)
    }
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// How many priority levels `hosts` have (0 for none): one past the highest priority.
#[must_use]
pub fn priority_levels(hosts: &[HostConfig]) -> u32 {
    hosts.iter().map(|h| h.priority + 1).max().unwrap_or(0)
}

/// A host's `transport_socket_match` labels, or an entry's `match`: string keys and values,
/// sorted (so that equal label sets compare equal).
pub type TransportLabels = std::collections::BTreeMap<String, String>;

/// `clusters[].transport_socket_matches[]`: the transport of the hosts whose labels hold every
/// key/value of `match`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TransportSocketMatch {
    /// Its name (unique in the cluster; for messages and stats).
    pub name: String,
    /// Every key/value a host must carry; empty: any host.
    #[serde(rename = "match")]
    pub matches: TransportLabels,
    /// The TLS originated to such a host; `None`: plaintext (not shown in the dump).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<Box<tls::UpstreamTls>>,
}

/// Which transport a host with `labels` gets: the index of the first entry of `matches` whose
/// every key/value is in `labels` (an empty `match` takes any host, with or without labels),
/// or `None`: the cluster's own `tls` (Envoy's rule for `transport_socket_matches`).
#[must_use]
pub fn pick_transport_socket(
    matches: &[TransportSocketMatch],
    labels: Option<&TransportLabels>,
) -> Option<usize> {
    matches.iter().position(|m| {
        m.matches
            .iter()
            .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
    })
}

impl ClusterConfig {
    /// The transport of `host`, one of its hosts: the entry of `transport_socket_matches` its
    /// labels pick ([`pick_transport_socket`]), or `None`: the cluster's own `tls` (the
    /// host's `Transport` in its slot, part of which host it is).
    #[must_use]
    pub fn host_transport(&self, host: &HostConfig) -> Option<usize> {
        pick_transport_socket(
            &self.transport_socket_matches,
            host.transport_socket_match.as_deref(),
        )
    }

    /// The transport of a host without labels: one resolved by DNS, an `original_dst` cluster's
    /// destination.
    #[must_use]
    pub fn unlabelled_transport(&self) -> Option<usize> {
        pick_transport_socket(&self.transport_socket_matches, None)
    }

    /// The name of transport `transport` (an entry index of this cluster): its entry's name,
    /// or `None` for the cluster's own `tls` (or an index it does not have). What names a pick
    /// outside this config (indices are not stable across configs or instances).
    #[must_use]
    pub fn transport_name(&self, transport: Option<usize>) -> Option<&str> {
        Some(self.transport_socket_matches.get(transport?)?.name.as_str())
    }

    /// Whether `transport` of this cluster and `other_transport` of `other` (the same cluster
    /// in another config) are the same pick: the same index when both have the same
    /// `transport_socket_matches`, else the same entry name (unique in a cluster); the
    /// cluster's own `tls` on both sides is.
    #[must_use]
    pub fn same_transport(
        &self,
        transport: Option<usize>,
        other: &ClusterConfig,
        other_transport: Option<usize>,
    ) -> bool {
        if self.transport_socket_matches == other.transport_socket_matches {
            return transport == other_transport;
        }
        match (transport, other_transport) {
            (None, None) => true,
            (Some(_), Some(_)) => match (
                self.transport_name(transport),
                other.transport_name(other_transport),
            ) {
                (Some(a), Some(b)) => a == b,
                _ => false,
            },
            _ => false,
        }
    }

    /// Whether it originates TLS to any of its hosts: its own `tls`, or an entry of its
    /// `transport_socket_matches`.
    #[must_use]
    pub fn originates_tls(&self) -> bool {
        self.tls.is_some()
            || self
                .transport_socket_matches
                .iter()
                .any(|m| m.tls.is_some())
    }

    /// How many host ids a worker keeps for this cluster: its hosts (static), with spare ids
    /// when its hosts change in place ([`ClusterConfig::hosts_change_in_place`]:
    /// [`spare_host_slots`]), one per name (`logical_dns`), `max_hosts` (`strict_dns`: slots
    /// the answers fill and free), none (`original_dst`: its one placeholder host has no
    /// per-host state). Per-host state (counters, pools, health) is kept per id.
    ///
    /// A generation's tables are sized by its own config's count: after its hosts changed in
    /// place, a later config of the same generation may say another number (the serving
    /// config's hosts are not the generation's); size nothing by that.
    #[must_use]
    pub fn host_slots(&self) -> usize {
        match (&self.dns, self.kind) {
            (Some(d), ClusterKind::LogicalDns) => d.names.len(),
            (Some(d), _) => d.max_hosts as usize,
            (None, ClusterKind::Static) if self.hosts_change_in_place => {
                spare_host_slots(self.hosts.len())
            }
            (None, _) => self.hosts.len(),
        }
    }
}

impl Config {
    /// Every filter chain of every listener, as (listener index, chain index), listeners in
    /// order and each one's chains in order. A runtime that keeps per-listener state (TLS
    /// contexts, routers, access logs) keeps it for chain `n` of this list at index
    /// `listeners.len() + n` (a *serving slot*), so that a chain is served like a listener.
    #[must_use]
    pub fn chain_slots(&self) -> Vec<(usize, usize)> {
        self.listeners
            .iter()
            .enumerate()
            .flat_map(|(l, lc)| (0..lc.filter_chains.len()).map(move |c| (l, c)))
            .collect()
    }

    /// The `tls` of every serving slot (see [`Config::chain_slots`]): each listener's, then
    /// each chain's, with the config path of the field and the name its TLS session state
    /// (ticket keys) is kept under.
    #[must_use]
    pub fn tls_slots(&self) -> Vec<(Option<&tls::ListenerTls>, String, String)> {
        let mut slots: Vec<_> = self
            .listeners
            .iter()
            .enumerate()
            .map(|(i, l)| {
                (
                    l.tls.as_deref(),
                    format!("listeners[{i}].tls"),
                    l.name.clone(),
                )
            })
            .collect();
        for (l, c) in self.chain_slots() {
            let lc = &self.listeners[l];
            slots.push((
                lc.filter_chains[c].tls.as_deref(),
                format!("listeners[{l}].filter_chains[{c}].tls"),
                format!("{}#filter_chains[{c}]", lc.name),
            ));
        }
        slots
    }

    /// The cluster a name refers to.
    #[must_use]
    pub fn cluster(&self, name: &str) -> Option<&ClusterConfig> {
        self.clusters.iter().find(|c| c.name == name)
    }
}
