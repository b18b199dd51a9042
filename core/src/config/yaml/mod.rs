//! YAML → [`Config`]: the decoder and validator of the config file.
//!
//! [`Config::from_yaml`] turns text into a validated [`Config`] or into [`ConfigErrors`]: **every**
//! problem in the file, each naming where it is (`listeners[0].address`) and what is wrong. It
//! checks, in one pass: YAML syntax, shapes and types, unknown fields (a typo is never silently
//! ignored), value grammars (durations, addresses: [`values`]), ranges, unique names and
//! addresses, and references between sections (a listener's cluster must exist).
//!
//! This module reads the config model (`super`) and nothing in the model reads it back: the
//! model is what YAML (and later xDS) decode into. Section decoders: `http` (the HTTP
//! connection manager and its route table), `bolt`, `cluster` (health checks, outlier
//! detection, circuit breakers, hashing); `decoder` is
//! the error-collecting reader they share (it suggests the known name closest to an unknown
//! field or value); [`locate`] finds where each error's path is in the text, so that every
//! error from [`Config::from_yaml`] carries its line and column.
//!
//! The invariants of a returned `Config` are listed in the model's module doc ([`super`]); the
//! `http` and `bolt` decoders list theirs.

mod bolt;
mod chains;
mod cluster;
mod cluster_http2;
mod decoder;
mod http;
pub mod locate;
mod tls;
mod tracing;
pub mod values;
mod xds;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use serde_json::Value;

use super::upstream::{
    CircuitBreakerSettings, DEFAULT_DNS_MAX_HOSTS, DEFAULT_DNS_REFRESH_RATE,
    DEFAULT_PANIC_THRESHOLD_PERCENT, DnsLookupFamily, DnsName, DnsSettings, MAX_DNS_MAX_HOSTS,
};
use super::{
    AdminConfig, AdminListen, ClusterConfig, ClusterKind, Config, ConfigError, ConfigErrors,
    DEFAULT_ADMIN_SOCKET_MODE, DEFAULT_BOLT_PARTIAL_FRAME_BYTES, DEFAULT_CLIENT_HELLO_TIMEOUT,
    DEFAULT_CONNECT_TIMEOUT, DEFAULT_DRAIN_TIMEOUT, DEFAULT_MAX_CONNECT_ATTEMPTS,
    DEFAULT_MINIMUM_RING_SIZE, DEFAULT_OVERPROVISIONING_FACTOR, DEFAULT_TCP_IDLE_TIMEOUT,
    DEFAULT_UPSTREAM_IDLE_TIMEOUT, DeclaredHealth, HostConfig, LbPolicy, LimitsConfig,
    ListenerConfig, ListenerFilter, MAX_CONNECTIONS_LIMIT, OriginalDst, SniRoute, TcpProxyConfig,
    TextPosition, UpstreamProtocol,
};
use decoder::{Decoder, Obj, child, index};
pub use values::{check_name, parse_duration, parse_socket_addr};

impl Config {
    /// Parses and validates YAML text, reporting every problem found.
    pub fn from_yaml(text: &str) -> Result<Config, ConfigErrors> {
        let tree: Value = serde_saphyr::from_str(text).map_err(|e| {
            // The parser's own message; where it is goes in `position` (its rendering with a
            // snippet would come out flattened on one line).
            let position = e.location().map(|l| TextPosition {
                line: usize::try_from(l.line()).unwrap_or(usize::MAX),
                column: usize::try_from(l.column()).unwrap_or(usize::MAX),
            });
            ConfigErrors(vec![ConfigError {
                path: String::new(),
                message: decoder::elide(
                    &format!(
                        "not valid YAML: {}",
                        one_line(&e.without_snippet().to_string())
                    ),
                    decoder::MAX_MESSAGE_CHARS,
                ),
                position,
            }])
        })?;
        Self::from_tree(&tree).map_err(|mut errors| {
            let locator = locate::Locator::new(text);
            for e in &mut errors.0 {
                e.position = locator.position(&e.path, &e.message);
            }
            errors
        })
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
    let upstream_mark = match root.opt("upstream_mark") {
        // 0 is "no mark" to the kernel: it could not be told apart in a capture rule.
        Some((v, p)) => dec
            .u64_in(&p, v, 1..=u64::from(u32::MAX))
            .map(|m| Some(m as u32)),
        None => Some(None),
    };
    let tls_file_check_interval = match root.opt("tls_file_check_interval") {
        Some((v, p)) => dec.duration(&p, v),
        None => Some(crate::config::DEFAULT_TLS_FILE_CHECK_INTERVAL),
    };
    let tracing = match root.opt("tracing") {
        Some((v, p)) => tracing::decode_tracing(dec, &p, v, &cluster_names).map(Some),
        None => Some(None),
    };
    let node = match root.opt("node") {
        Some((v, p)) => xds::decode_node(dec, &p, v).map(Some),
        None => Some(None),
    };
    let xds = match root.opt("xds") {
        Some((v, p)) => xds::decode_xds(dec, &p, v, &cluster_names).map(Some),
        None => Some(None),
    };
    root.finish(dec);

    let (listeners, mut clusters) = (listeners?, clusters?);
    // With xDS, listeners may all come from the management server.
    if listeners.is_empty() && tree.get("xds").is_none_or(Value::is_null) {
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
    check_overlapping_addresses(dec, admin.as_ref().and_then(Option::as_ref), &listeners);
    // A listener that binds nothing is reached only by a hand-off. Envoy accepts one with no
    // capture listener (its listeners come one by one over LDS); a Sluice config is whole, so
    // such a listener could never receive a connection: a mistake, said so.
    if !listeners.iter().any(|l| l.use_original_dst) {
        for (i, l) in listeners.iter().enumerate() {
            if !l.bind_to_port {
                dec.error(
                    &child(&index("listeners", i), "bind_to_port"),
                    "false, but no listener has `use_original_dst: true`: nothing would ever \
                     hand this listener a connection",
                );
            }
        }
    }
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
    let otlp_cluster = tracing
        .as_ref()
        .and_then(|t| t.as_ref())
        .and_then(|t| t.otlp.as_ref())
        .map(|o| o.cluster_index);
    if let Some(ci) = otlp_cluster
        && clusters
            .get(ci)
            .is_some_and(|c| c.kind == ClusterKind::OriginalDst)
    {
        dec.error(
            "tracing.otlp.cluster",
            "an `original_dst` cluster has no hosts to send spans to",
        );
    }
    if let Some(ci) = otlp_cluster
        && clusters
            .get(ci)
            .is_some_and(|c| c.kind == ClusterKind::Static && c.hosts.is_empty())
    {
        dec.error(
            "tracing.otlp.cluster",
            "the cluster has no hosts (`hosts: []`) to send spans to",
        );
    }
    if let Some(ci) = otlp_cluster
        && clusters.get(ci).is_some_and(|c| c.kind.is_dns())
    {
        // The exporter picks among the configured hosts; a DNS cluster's are resolved.
        dec.error(
            "tracing.otlp.cluster",
            "the span exporter needs a static cluster (IP addresses); a DNS cluster is not \
             supported there yet",
        );
    }
    if let Some(ci) = otlp_cluster
        && clusters
            .get(ci)
            .is_some_and(|c| c.protocol == UpstreamProtocol::Http2)
    {
        dec.error(
            "tracing.otlp.cluster",
            "the OTLP exporter speaks HTTP/1.1: its cluster cannot have `protocol: http2`",
        );
    }
    check_tls_clusters(dec, &mut clusters, otlp_cluster);
    // In cleartext too: an h2c host is spoken to in HTTP/2 by prior knowledge, and an HTTP
    // health check probes in HTTP/1.1 (the TLS case is refused in check_tls_clusters).
    for (ci, c) in clusters.iter().enumerate() {
        if c.protocol == UpstreamProtocol::Http2
            && c.tls.is_none()
            && c.health_check
                .as_ref()
                .is_some_and(|hc| matches!(hc.probe, crate::config::HealthProbe::Http { .. }))
        {
            dec.error(
                &format!("clusters[{ci}].health_check"),
                format!(
                    "an HTTP health check probes in HTTP/1.1, which cluster {:?} (protocol: \
                     http2, h2c) cannot carry: use a tcp health check",
                    c.name
                ),
            );
        }
    }
    let xds = xds::check_xds_cluster(dec, xds?, &clusters, otlp_cluster)?;
    // A config with `xds`: its static clusters' hosts may change in place (EDS), with spare
    // host ids for growth (see `ClusterConfig::host_slots`).
    if xds.is_some() {
        for c in &mut clusters {
            c.hosts_change_in_place = c.kind == ClusterKind::Static;
        }
    }
    Some(Config {
        admin: admin.flatten(),
        listeners,
        clusters,
        drain_timeout: drain_timeout?,
        limits,
        upstream_mark: upstream_mark?,
        tls_file_check_interval: tls_file_check_interval?,
        tracing: tracing?,
        node: node?,
        xds,
    })
}

/// TLS clusters used over HTTP — by a route or an HTTP health check — speak their `protocol`
/// upstream: with no `alpn` they offer `[http/1.1]` (`protocol: http1`) or `[h2]`
/// (`protocol: http2`), and an `alpn` other than that is refused at the first route (or the
/// health check) that uses the cluster. An HTTP health check probes in HTTP/1.1, which a TLS
/// cluster offering only `h2` cannot carry: refused.
///
/// The OTLP exporter (`otlp_cluster`) speaks HTTP/1.1 too.
///
/// A `transport_socket_matches` entry's `tls` (issue 13): with no `alpn`, it offers what the
/// cluster's own would. An `alpn` of its own is sent as given (as Envoy does) and may hold ids
/// that name no HTTP version — Istio's mesh markers `istio`, `istio-http/1.0`,
/// `istio-http/1.1`, `istio-h2`, which a peer sidecar matches its filter chains on and never
/// selects — beside at most its protocol's own id (Istio's `[istio, h2]` for an HTTP/2
/// cluster). Not `istio-peer-exchange` (in any upstream `alpn`, refused where it is decoded):
/// a peer that selects it speaks Istio's metadata exchange first. What is
/// refused is what could make a server pick a protocol Sluice does not speak on the
/// connection: another HTTP version's id (`h2` on an HTTP/1.1 cluster, `http/1.1` on an HTTP/2
/// one), any HTTP id on a cluster Bolt uses, and a cluster with TLS entries used by both HTTP
/// and Bolt. (An HTTP health check of an HTTP/2 cluster is refused whatever its transports.)
fn check_tls_clusters(
    dec: &mut Decoder,
    clusters: &mut [ClusterConfig],
    otlp_cluster: Option<usize>,
) {
    for (ci, c) in clusters.iter_mut().enumerate() {
        if !c.transport_socket_matches.iter().any(|m| m.tls.is_some()) {
            continue;
        }
        let mut http_user = dec
            .cluster_refs
            .iter()
            .find(|(i, path)| *i == ci && path.contains(".http."))
            .map(|(_, path)| path.clone());
        let http_health = c
            .health_check
            .as_ref()
            .is_some_and(|hc| matches!(hc.probe, crate::config::HealthProbe::Http { .. }));
        if http_user.is_none() && http_health {
            http_user = Some(format!("clusters[{ci}].health_check"));
        }
        if http_user.is_none() && otlp_cluster == Some(ci) {
            http_user = Some("tracing.otlp.cluster".to_owned());
        }
        let bolt_user = dec
            .cluster_refs
            .iter()
            .find(|(i, path)| *i == ci && path.contains(".bolt."))
            .map(|(_, path)| path.clone())
            .or_else(|| {
                c.health_check
                    .as_ref()
                    .filter(|hc| matches!(hc.probe, crate::config::HealthProbe::Bolt))
                    .map(|_| format!("clusters[{ci}].health_check"))
            });
        let alpn = c.protocol.alpn();
        let own_tls = c.tls.is_some();
        let name = c.name.clone();
        for (m, entry) in c.transport_socket_matches.iter_mut().enumerate() {
            let Some(tls) = entry.tls.as_deref_mut() else {
                continue;
            };
            let at = format!("clusters[{ci}].transport_socket_matches[{m}].tls.alpn");
            if let Some(bolt) = &bolt_user {
                if let Some(http) = &http_user {
                    // Said once, by the cluster's own `tls` when it has one.
                    if !own_tls && m == 0 {
                        dec.error(
                            bolt,
                            format!(
                                "TLS cluster {name:?} is used by Bolt and by HTTP ({http}): its \
                                 ALPN offer cannot suit both; give each protocol a cluster of \
                                 its own"
                            ),
                        );
                    }
                } else if let Some(p) = tls.alpn.iter().find(|p| is_http_alpn(p)) {
                    dec.error(
                        bolt,
                        format!(
                            "cluster {name:?} offers ALPN {p:?} ({at}), an HTTP protocol, but \
                             this route speaks Bolt: remove it"
                        ),
                    );
                }
                continue;
            }
            let Some(http) = &http_user else {
                continue;
            };
            if tls.alpn.is_empty() {
                tls.alpn = vec![alpn.to_owned()];
            } else if let Some(p) = tls.alpn.iter().find(|p| is_http_alpn(p) && *p != alpn) {
                let version = match c.protocol {
                    UpstreamProtocol::Http1 | UpstreamProtocol::Downstream => "HTTP/1.1",
                    UpstreamProtocol::Http2 => "HTTP/2 (protocol: http2)",
                };
                dec.error(
                    http,
                    format!(
                        "cluster {name:?} offers ALPN {p:?} ({at}), but HTTP speaks {version} \
                         upstream: an entry may offer {alpn:?} and ids of no HTTP version \
                         (such as istio, istio-http/1.1), no other HTTP version"
                    ),
                );
            }
        }
    }
    for (ci, c) in clusters.iter_mut().enumerate() {
        let Some(tls) = c.tls.as_deref_mut() else {
            continue;
        };
        let mut http_users: Vec<String> = dec
            .cluster_refs
            .iter()
            .filter(|(i, path)| *i == ci && path.contains(".http."))
            .map(|(_, path)| path.clone())
            .collect();
        if let Some(hc) = &c.health_check
            && matches!(hc.probe, crate::config::HealthProbe::Http { .. })
        {
            http_users.push(format!("clusters[{ci}].health_check"));
        }
        if otlp_cluster == Some(ci) {
            http_users.push("tracing.otlp.cluster".to_owned());
        }
        let mut bolt_users = dec
            .cluster_refs
            .iter()
            .filter(|(i, path)| *i == ci && path.contains(".bolt."))
            .map(|(_, path)| path.clone());
        let bolt_user = bolt_users.next().or_else(|| {
            c.health_check
                .as_ref()
                .filter(|hc| matches!(hc.probe, crate::config::HealthProbe::Bolt))
                .map(|_| format!("clusters[{ci}].health_check"))
        });
        // Bolt is not HTTP: its connections must never offer (and so never get) an HTTP
        // protocol, and one ALPN list cannot be right for both.
        if let Some(bolt) = &bolt_user {
            if let Some(http) = http_users.first() {
                dec.error(
                    bolt,
                    format!(
                        "TLS cluster {:?} is used by Bolt and by HTTP ({http}): its ALPN offer \
                         cannot suit both; give each protocol a cluster of its own",
                        c.name
                    ),
                );
            } else if let Some(p) = tls.alpn.iter().find(|p| is_http_alpn(p)) {
                dec.error(
                    bolt,
                    format!(
                        "cluster {:?} offers ALPN {p:?} (clusters[{ci}].tls.alpn), an HTTP \
                         protocol, but this route speaks Bolt: remove it",
                        c.name
                    ),
                );
            }
            continue;
        }
        if let Some(first) = http_users.first() {
            let alpn = c.protocol.alpn();
            if c.protocol == UpstreamProtocol::Http2
                && let Some(hc) = http_users.iter().find(|p| p.ends_with(".health_check"))
            {
                dec.error(
                    hc,
                    format!(
                        "an HTTP health check probes in HTTP/1.1, which cluster {:?} \
                         (protocol: http2 over TLS, ALPN h2) cannot carry: use a tcp health \
                         check",
                        c.name
                    ),
                );
            }
            if tls.alpn.is_empty() {
                tls.alpn = vec![alpn.to_owned()];
            } else if tls.alpn != [alpn] {
                let version = match c.protocol {
                    UpstreamProtocol::Http1 | UpstreamProtocol::Downstream => "HTTP/1.1",
                    UpstreamProtocol::Http2 => "HTTP/2 (protocol: http2)",
                };
                dec.error(
                    first,
                    format!(
                        "cluster {:?} offers ALPN {:?} (clusters[{ci}].tls.alpn), but HTTP \
                         speaks {version} upstream: give `alpn: [{alpn}]` or none",
                        c.name, tls.alpn
                    ),
                );
            }
        }
    }
}

/// An ALPN protocol id of HTTP (RFC 7301's registry: HTTP/0.9 to HTTP/3 and h2c).
fn is_http_alpn(p: &str) -> bool {
    matches!(
        p,
        "http/0.9" | "http/1.0" | "http/1.1" | "h2" | "h2c" | "h3"
    ) || p.starts_with("h3-")
}

fn decode_limits(dec: &mut Decoder, path: &str, v: &Value) -> Option<LimitsConfig> {
    let mut obj = dec.object(path, v)?;
    let max_connections = match obj.opt("max_connections") {
        Some((v, p)) => dec.u64_in(&p, v, 1..=MAX_CONNECTIONS_LIMIT).map(Some),
        None => Some(None),
    };
    let bolt_partial_frame_bytes = match obj.opt("bolt_partial_frame_bytes") {
        Some((v, p)) => bolt::size_in(
            dec,
            &p,
            v,
            super::bolt::MIN_BOLT_FRAME_SIZE..=(64 << 30),
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

/// Whether two TCP listening addresses take the same port on some local address: equal, or one
/// a wildcard covering the other (`0.0.0.0` every IPv4 address; `[::]` every address of both
/// families, as it listens dual-stack by default on Linux). Port 0 (any free port) never
/// clashes.
#[must_use]
pub fn addresses_overlap(a: SocketAddr, b: SocketAddr) -> bool {
    fn covers(wide: SocketAddr, other: SocketAddr) -> bool {
        match wide.ip() {
            IpAddr::V6(ip) if ip.is_unspecified() => true,
            IpAddr::V4(ip) if ip.is_unspecified() => match other.ip() {
                IpAddr::V4(_) => true,
                IpAddr::V6(v6) => v6.to_ipv4_mapped().is_some(),
            },
            _ => false,
        }
    }
    a.port() == b.port() && a.port() != 0 && (a.ip() == b.ip() || covers(a, b) || covers(b, a))
}

/// Listener addresses that overlap without being equal (equal ones are duplicates, reported by
/// [`check_unique`]), and an admin TCP address that a listener's address overlaps: they could
/// not all listen, and finding out at startup (or worse, at a reload) is too late.
fn check_overlapping_addresses(
    dec: &mut Decoder,
    admin: Option<&AdminConfig>,
    listeners: &[ListenerConfig],
) {
    const WHY: &str = "a wildcard address takes the port on every local address of its family";
    for (i, l) in listeners.iter().enumerate() {
        for (j, first) in listeners[..i].iter().enumerate() {
            if l.address != first.address && addresses_overlap(l.address, first.address) {
                dec.error(
                    &format!("listeners[{i}].address"),
                    format!(
                        "{} overlaps listeners[{j}].address {} ({}): {WHY}, so both cannot listen",
                        l.address, first.address, first.name
                    ),
                );
            }
        }
    }
    if let Some(admin_address) = admin.and_then(AdminConfig::tcp_address) {
        for (i, l) in listeners.iter().enumerate() {
            if admin_address == l.address {
                dec.error(
                    "admin.address",
                    format!(
                        "{admin_address} is also listeners[{i}].address ({}): the admin API \
                         needs an address of its own",
                        l.name
                    ),
                );
            } else if addresses_overlap(admin_address, l.address) {
                dec.error(
                    "admin.address",
                    format!(
                        "{admin_address} overlaps listeners[{i}].address {} ({}): {WHY}, so \
                         both cannot listen",
                        l.address, l.name
                    ),
                );
            }
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
                &decoder::child(path, "address"),
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
            http::decode_http(dec, &p, v, cluster_names).map(|h| ListenerFilter::Http(Box::new(h))),
        ));
    }
    if let Some((v, p)) = obj.opt("bolt") {
        filters.push((
            "bolt",
            bolt::decode_bolt(dec, &p, v, cluster_names).map(|b| ListenerFilter::Bolt(Box::new(b))),
        ));
    }
    let filter_chains = match obj.opt("filter_chains") {
        Some((v, p)) => chains::decode_filter_chains(dec, &p, v, cluster_names),
        None => Some(Vec::new()),
    };
    let has_chains = obj_has(v, "filter_chains");
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
            // No default chain: what no chain takes is closed.
            0 if has_chains => Some(ListenerFilter::Close),
            0 => {
                dec.error(
                    path,
                    "no filter: give one of `tcp_proxy`, `echo`, `http`, `bolt` (or `filter_chains`)",
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
    let tls = match obj.opt("tls") {
        Some((_, p)) if matches!(filter, Some(ListenerFilter::Close)) => {
            dec.error(
                &p,
                "no filter of the listener's own to terminate TLS for: give it a filter (its \
                 default chain), or put `tls` on the filter chains",
            );
            None
        }
        Some((v, p)) => {
            let codec = match &filter {
                Some(ListenerFilter::Http(h) | ListenerFilter::Auto { http: h, .. }) => {
                    Some(h.codec)
                }
                _ => None,
            };
            let bolt = matches!(&filter, Some(ListenerFilter::Bolt(_)));
            tls::decode_listener_tls(dec, &p, v, codec, bolt).map(|t| Some(Box::new(t)))
        }
        None => Some(None),
    };
    let original_dst = match obj.opt("original_dst") {
        Some((v, p)) => dec.one_of(&p, v, &OriginalDst::CHOICES).map(Some),
        None => Some(None),
    };
    let use_original_dst = match obj.opt("use_original_dst") {
        Some((v, p)) => dec.boolean(&p, v).and_then(|on| {
            if on && matches!(original_dst, Some(None)) {
                dec.error(
                    &p,
                    "needs `original_dst: redirect` or `original_dst: tproxy` on this listener \
                     (without it, a connection has no original destination to hand off by)",
                );
                None
            } else {
                Some(on)
            }
        }),
        None => Some(false),
    };
    let bind_to_port = match obj.opt("bind_to_port") {
        Some((v, p)) => dec.boolean(&p, v).and_then(|on| {
            if !on && matches!(original_dst, Some(Some(_))) {
                dec.error(
                    &p,
                    "false is not for a capture listener (`original_dst`): a listener that binds \
                     nothing receives only the connections a capture listener hands it",
                );
                None
            } else {
                Some(on)
            }
        }),
        None => Some(true),
    };
    let listener_filters_timeout = match obj.opt("listener_filters_timeout") {
        // Zero: no limit (Envoy's `0s`).
        Some((v, p)) => dec.duration(&p, v).and_then(|d| {
            if !has_chains {
                dec.error(
                    &p,
                    "only with `filter_chains` (nothing else waits for first bytes)",
                );
                None
            } else {
                Some(d)
            }
        }),
        None => Some(crate::config::DEFAULT_LISTENER_FILTERS_TIMEOUT),
    };
    let continue_on_listener_filters_timeout = match obj.opt("continue_on_listener_filters_timeout")
    {
        Some((v, p)) => dec.boolean(&p, v).and_then(|on| {
            if on && !has_chains {
                dec.error(&p, "only with `filter_chains`");
                None
            } else {
                Some(on)
            }
        }),
        None => Some(false),
    };
    let mut inspector = |key: &'static str| match obj.opt(key) {
        Some((_, p)) if !has_chains => {
            dec.error(
                &p,
                "only with `filter_chains` (nothing else looks at first bytes)",
            );
            None
        }
        Some((v, p)) => chains::decode_inspector(dec, &p, v),
        None => Some(crate::config::InspectorPorts::All),
    };
    let tls_inspector = inspector("tls_inspector");
    let http_inspector = inspector("http_inspector");
    obj.finish(dec);
    Some(ListenerConfig {
        tls_inspector: tls_inspector?,
        http_inspector: http_inspector?,
        filter_chains: filter_chains?,
        listener_filters_timeout: listener_filters_timeout?,
        continue_on_listener_filters_timeout: continue_on_listener_filters_timeout?,
        name: name?,
        address: address?,
        filter: filter?,
        max_connections: max_connections?,
        tls: tls?,
        original_dst: original_dst?,
        use_original_dst: use_original_dst?,
        bind_to_port: bind_to_port?,
    })
}

/// Whether mapping `v` has `key` (given, whatever its value).
fn obj_has(v: &Value, key: &str) -> bool {
    v.get(key).is_some()
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
    let sni_routes = match obj.opt("sni_routes") {
        Some((v, p)) => decode_sni_routes(dec, &p, v, cluster_names),
        None => Some(Vec::new()),
    };
    let client_hello_timeout = match obj.opt("client_hello_timeout") {
        Some((v, p)) => dec.duration(&p, v).and_then(|d| {
            if d.is_zero() {
                dec.error(&p, "must be greater than zero");
                None
            } else {
                Some(d)
            }
        }),
        None => Some(DEFAULT_CLIENT_HELLO_TIMEOUT),
    };
    let access_log = match obj.opt("access_log") {
        Some((v, p)) => {
            http::decode_access_log(dec, &p, v, crate::config::http::AccessLogKind::Tcp).map(Some)
        }
        None => Some(None),
    };
    let splice = match obj.opt("splice") {
        Some((v, p)) => dec.boolean(&p, v),
        None => Some(true),
    };
    obj.finish(dec);
    let (cluster, cluster_index) = cluster?;
    Some(TcpProxyConfig {
        cluster,
        cluster_index,
        idle_timeout: idle_timeout.map(|d| (!d.is_zero()).then_some(d))?,
        max_connect_attempts: max_connect_attempts?,
        sni_routes: sni_routes?,
        client_hello_timeout: client_hello_timeout?,
        access_log: access_log?,
        splice: splice?,
    })
}

/// `sni_routes: [ { server_names: [...], cluster } ]`: names are DNS names or `*.` + a DNS
/// name, kept lowercase without a trailing dot; a name may appear once across all routes.
fn decode_sni_routes(
    dec: &mut Decoder,
    path: &str,
    v: &Value,
    cluster_names: &[&str],
) -> Option<Vec<SniRoute>> {
    let routes = dec.list(path, v, |dec, path, v| {
        let mut obj = dec.object(path, v)?;
        let server_names = obj.req(dec, "server_names").and_then(|(v, p)| {
            let names = dec.list(&p, v, |dec, path, v| {
                let raw = dec.string(path, v)?;
                match sni_pattern(raw) {
                    Ok(name) => Some(name),
                    Err(why) => {
                        dec.error(path, format!("{raw:?} {why}"));
                        None
                    }
                }
            })?;
            if names.is_empty() {
                dec.error(&p, "give at least one server name");
                return None;
            }
            Some(names)
        });
        let cluster = obj
            .req(dec, "cluster")
            .and_then(|(v, p)| cluster_ref(dec, &p, v, cluster_names));
        obj.finish(dec);
        let (cluster, cluster_index) = cluster?;
        Some(SniRoute {
            server_names: server_names?,
            cluster,
            cluster_index,
        })
    })?;
    let mut seen: Vec<(&str, String)> = Vec::new();
    let mut clash = false;
    for (r, route) in routes.iter().enumerate() {
        for (n, name) in route.server_names.iter().enumerate() {
            let here = index(&child(&index(path, r), "server_names"), n);
            if let Some((_, first)) = seen.iter().find(|(s, _)| *s == name) {
                dec.error(&here, format!("{name:?} is already routed at {first}"));
                clash = true;
            } else {
                seen.push((name, here));
            }
        }
    }
    (!clash).then_some(routes)
}

/// A server name as `sni_routes` keeps it: lowercase, no trailing dot; `*.` then a DNS name for
/// a wildcard. The error says what is wrong, after the name.
fn sni_pattern(raw: &str) -> Result<String, &'static str> {
    let lower = raw.to_ascii_lowercase();
    let name = lower.strip_suffix('.').unwrap_or(&lower);
    let dns = name.strip_prefix("*.").unwrap_or(name);
    if dns.is_empty() || dns.len() > 253 {
        return Err("is not a server name (empty, or longer than 253 bytes)");
    }
    for label in dns.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err("is not a server name (an empty label, or one over 63 bytes)");
        }
        if label == "*" || label.contains('*') {
            return Err(
                "is not a server name (`*` only as the whole first label: `*.example.com`)",
            );
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err("is not a server name (letters, digits, `-`, `_` and dots only)");
        }
    }
    Ok(name.to_owned())
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
        Some(index) => {
            dec.cluster_refs.push((index, path.to_owned()));
            Some((name, index))
        }
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
    let kind = match obj.opt("type") {
        Some((v, p)) => dec.one_of(&p, v, &ClusterKind::CHOICES),
        None => Some(ClusterKind::Static),
    };
    if kind == Some(ClusterKind::OriginalDst) {
        // Everything about picking among hosts or checking them has no hosts to apply to.
        for key in [
            "hosts",
            "lb_policy",
            "hash_policy",
            "ring_hash",
            "health_check",
            "outlier_detection",
            "panic_threshold",
            "overprovisioning_factor",
        ] {
            if v.get(key).is_some() {
                dec.error(
                    &child(path, key),
                    "does not apply to a cluster of type original_dst (it connects to each \
                     connection's original destination: no hosts to pick among or check)",
                );
            }
        }
    }
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
        Some((v, p)) => cluster::hash_policy(dec, &p, v).and_then(|h| match lb_policy {
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
            cluster::ring_hash(dec, &p, v, DEFAULT_MINIMUM_RING_SIZE)
        }
        None => Some(DEFAULT_MINIMUM_RING_SIZE),
    };
    let health_check = match obj.opt("health_check") {
        Some((v, p)) => cluster::health_check(dec, &p, v).map(Some),
        None => Some(None),
    };
    let outlier_detection = match obj.opt("outlier_detection") {
        Some((v, p)) => cluster::outlier_detection(dec, &p, v).map(Some),
        None => Some(None),
    };
    let circuit_breakers = match obj.opt("circuit_breakers") {
        Some((v, p)) => cluster::circuit_breakers(dec, &p, v),
        None => Some(CircuitBreakerSettings::default()),
    };
    let panic_threshold_percent = match obj.opt("panic_threshold") {
        Some((v, p)) => cluster::percent(dec, &p, v),
        None => Some(DEFAULT_PANIC_THRESHOLD_PERCENT),
    };
    let overprovisioning_factor = match obj.opt("overprovisioning_factor") {
        Some((v, p)) => dec.u64_in(&p, v, 1..=u64::from(u32::MAX)).map(|f| f as u32),
        None => Some(DEFAULT_OVERPROVISIONING_FACTOR),
    };
    let tls = match obj.opt("tls") {
        Some((v, p)) => tls::decode_upstream_tls(dec, &p, v).map(|t| Some(Box::new(t))),
        None => Some(None),
    };
    let transport_socket_matches = match obj.opt("transport_socket_matches") {
        Some((v, p)) => decode_transport_socket_matches(dec, &p, v),
        None => Some(Vec::new()),
    };
    let use_http_header = match obj.opt("use_http_header") {
        Some((v, p)) => dec.boolean(&p, v).and_then(|on| {
            if on && kind != Some(ClusterKind::OriginalDst) {
                dec.error(
                    &p,
                    "applies only to a cluster of type original_dst (the header names where \
                     the request goes instead of a host)",
                );
                return None;
            }
            Some(on)
        }),
        None => Some(false),
    };
    let protocol = match obj.opt("protocol") {
        Some((v, p)) => dec
            .one_of(&p, v, &UpstreamProtocol::CHOICES)
            .and_then(|proto| {
                // One ALPN list per cluster cannot follow each request's version.
                let matched_tls = transport_socket_matches
                    .as_ref()
                    .is_some_and(|m| m.iter().any(|m| m.tls.is_some()));
                if proto == UpstreamProtocol::Downstream
                    && tls.as_ref().is_some_and(Option::is_some)
                {
                    dec.error(
                        &p,
                        "downstream cannot be combined with `tls` (the ALPN offer is one list \
                         per cluster, and this protocol changes with each request): give \
                         http1 or http2",
                    );
                    return None;
                }
                if proto == UpstreamProtocol::Downstream && matched_tls {
                    dec.error(
                        &p,
                        "downstream cannot be combined with a TLS entry of \
                         `transport_socket_matches` (the ALPN offer is one list per entry, and \
                         this protocol changes with each request): give http1 or http2",
                    );
                    return None;
                }
                Some(proto)
            }),
        None => Some(UpstreamProtocol::Http1),
    };
    let is_dns = kind.is_some_and(ClusterKind::is_dns);
    let dns_fields = dns_fields(dec, &mut obj, path, kind);
    let http2_keepalive = match obj.opt("http2") {
        Some((v, p)) => {
            if protocol.is_some_and(|proto| !proto.may_speak_http2()) {
                dec.error(
                    &p,
                    "applies only to a cluster with `protocol: http2` or `protocol: downstream`",
                );
            }
            cluster_http2::options(dec, &p, v)
        }
        None => Some(None),
    };
    let (hosts, dns) = if kind == Some(ClusterKind::OriginalDst) {
        // Reported above when given.
        obj.opt("hosts");
        (Some(Vec::new()), Some(None))
    } else if is_dns {
        let names = obj.req(dec, "hosts").and_then(|(v, p)| {
            let names = dec.list(&p, v, decode_dns_name)?;
            if names.is_empty() {
                dec.error(&p, "at least one host is required");
            } else if kind == Some(ClusterKind::LogicalDns) && names.len() > 1 {
                // Envoy's rule: a logical_dns cluster is one logical host.
                dec.error(
                    &p,
                    format!(
                        "a logical_dns cluster has exactly one host (found {}); use type: \
                         strict_dns to balance over several names",
                        names.len()
                    ),
                );
                return None;
            }
            Some(names)
        });
        let dns = match (names, dns_fields) {
            (Some(names), Some((refresh_rate, respect_dns_ttl, lookup_family, max_hosts))) => {
                Some(Some(DnsSettings {
                    names,
                    refresh_rate,
                    respect_dns_ttl,
                    lookup_family,
                    max_hosts,
                }))
            }
            _ => None,
        };
        (Some(Vec::new()), dns)
    } else {
        // `hosts: []` (said, not left out) is a cluster with no endpoints, Envoy's STATIC
        // cluster without a `load_assignment` (istiod's `BlackHoleCluster`): HTTP routes to it
        // answer 503 (no healthy upstream), a tcp_proxy to it closes the connection.
        let hosts = obj.req(dec, "hosts").and_then(|(v, p)| {
            let hosts = dec.list(&p, v, decode_host)?;
            check_priorities_contiguous(dec, &p, &hosts);
            Some(hosts)
        });
        (hosts, Some(None))
    };
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
        overprovisioning_factor: overprovisioning_factor?,
        kind: kind?,
        hosts: hosts?,
        dns: dns?,
        use_http_header: use_http_header?,
        tls: tls?,
        transport_socket_matches: transport_socket_matches?,
        protocol: protocol?,
        http2_keepalive: http2_keepalive?,
        // Set once the whole config is read (a config with `xds`).
        hosts_change_in_place: false,
    })
}

/// The DNS settings of a cluster (`dns_refresh_rate`, `respect_dns_ttl`, `dns_lookup_family`,
/// `max_hosts`), each refused on a cluster whose hosts do not come from DNS.
fn dns_fields(
    dec: &mut Decoder,
    obj: &mut Obj<'_>,
    path: &str,
    kind: Option<ClusterKind>,
) -> Option<(Duration, bool, DnsLookupFamily, u32)> {
    const KEYS: [&str; 4] = [
        "dns_refresh_rate",
        "respect_dns_ttl",
        "dns_lookup_family",
        "max_hosts",
    ];
    if !kind.is_some_and(ClusterKind::is_dns) {
        for key in KEYS {
            // (An unknown `type` was reported; these are not reported twice.)
            if obj.opt(key).is_some() && kind.is_some() {
                dec.error(
                    &child(path, key),
                    "applies only to a cluster of type strict_dns or logical_dns",
                );
            }
        }
        return None;
    }
    let refresh_rate = match obj.opt("dns_refresh_rate") {
        Some((v, p)) => dec.duration(&p, v).and_then(|d| {
            if d < Duration::from_millis(1) {
                dec.error(&p, "must be at least 1ms");
                None
            } else {
                Some(d)
            }
        }),
        None => Some(DEFAULT_DNS_REFRESH_RATE),
    };
    let respect_dns_ttl = match obj.opt("respect_dns_ttl") {
        Some((v, p)) => dec.boolean(&p, v),
        None => Some(false),
    };
    let lookup_family = match obj.opt("dns_lookup_family") {
        Some((v, p)) => dec.one_of(&p, v, &DnsLookupFamily::CHOICES),
        None => Some(DnsLookupFamily::Auto),
    };
    let max_hosts = match obj.opt("max_hosts") {
        // One host per name, whatever the answers: nothing for a bound to bound.
        Some((_, p)) if kind == Some(ClusterKind::LogicalDns) => {
            dec.error(
                &p,
                "applies only to a cluster of type strict_dns (a logical_dns cluster has one host per name)",
            );
            None
        }
        Some((v, p)) => dec
            .u64_in(&p, v, 1..=u64::from(MAX_DNS_MAX_HOSTS))
            .map(|n| n as u32),
        None => Some(DEFAULT_DNS_MAX_HOSTS),
    };
    Some((refresh_rate?, respect_dns_ttl?, lookup_family?, max_hosts?))
}

/// A DNS cluster's host: `{ address: NAME:PORT, weight }` (an IP literal is a name that
/// resolves to itself).
fn decode_dns_name(dec: &mut Decoder, path: &str, v: &Value) -> Option<DnsName> {
    let mut obj = dec.object(path, v)?;
    let address = obj
        .req(dec, "address")
        .and_then(|(v, p)| dec.parsed(&p, v, parse_name_and_port));
    let weight = match obj.opt("weight") {
        Some((v, p)) => dec.u64_in(&p, v, 1..=1000).map(|w| w as u32),
        None => Some(1),
    };
    obj.finish(dec);
    let (name, port) = address?;
    Some(DnsName {
        name,
        port,
        weight: weight?,
    })
}

/// `NAME:PORT` (or `IP:PORT`, `[IPv6]:PORT`): a DNS name of letters, digits, `-`, `_` and
/// dots, at most 253 bytes, lowercased; a trailing dot (an absolute name) is kept.
pub fn parse_name_and_port(text: &str) -> Result<(String, u16), String> {
    if let Ok(a) = parse_socket_addr(text) {
        return Ok((a.ip().to_string(), a.port()));
    }
    let bad = |why: &str| format!("{text:?} is not a NAME:PORT address ({why})");
    let (name, port) = text
        .rsplit_once(':')
        .ok_or_else(|| bad("expected NAME:PORT, e.g. backend.default.svc.cluster.local:8080"))?;
    if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad(&format!("{port:?} is not a port number")));
    }
    let port: u16 = port.parse().map_err(|_| bad("port out of range"))?;
    // A trailing dot makes the name absolute (the resolver applies no search domain to it):
    // it is checked without the dot, and kept — resolved, shown and dumped as written.
    let bare = name.strip_suffix('.').unwrap_or(name);
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    if bare.is_empty() || bare.len() > 253 || !bare.split('.').all(label_ok) {
        return Err(bad(&format!("{bare:?} is not a DNS name")));
    }
    Ok((name.to_ascii_lowercase(), port))
}

fn decode_host(dec: &mut Decoder, path: &str, v: &Value) -> Option<HostConfig> {
    let mut obj = dec.object(path, v)?;
    let address = obj.req(dec, "address").and_then(|(v, p)| {
        dec.parsed(&p, v, |text| {
            parse_socket_addr(text).map_err(|e| match parse_name_and_port(text) {
                // A name where an IP address belongs: say how to have it resolved.
                Ok((name, _)) if name.parse::<IpAddr>().is_err() => format!(
                    "{text:?} is a DNS name, and a static cluster's hosts are IP addresses: \
                     use type: strict_dns (or logical_dns) to resolve it"
                ),
                _ => e,
            })
        })
    });
    let weight = match obj.opt("weight") {
        Some((v, p)) => dec.u64_in(&p, v, 1..=1000).map(|w| w as u32),
        None => Some(1),
    };
    let priority = match obj.opt("priority") {
        Some((v, p)) => dec
            .u64_in(&p, v, 0..=u64::from(MAX_PRIORITY))
            .map(|w| w as u32),
        None => Some(0),
    };
    let labels = match obj.opt("transport_socket_match") {
        Some((v, p)) => decode_transport_labels(dec, &p, v).map(|l| Some(Box::new(l))),
        None => Some(None),
    };
    let health = match obj.opt("health") {
        Some((v, p)) => dec.one_of(&p, v, &DeclaredHealth::CHOICES),
        None => Some(DeclaredHealth::Healthy),
    };
    obj.finish(dec);
    Some(HostConfig {
        address: address?,
        weight: weight?,
        priority: priority?,
        transport_socket_match: labels?,
        health: health?,
    })
}

/// The highest `priority` a host may have (Envoy's levels are contiguous from 0, so a cluster
/// has at most as many levels as hosts; this bounds a typo).
const MAX_PRIORITY: u32 = 1023;

/// Envoy's rule: a cluster's priorities are contiguous from 0 — a level with no host between
/// two with hosts is refused, naming the first missing one.
fn check_priorities_contiguous(dec: &mut Decoder, path: &str, hosts: &[HostConfig]) {
    let levels = super::priority_levels(hosts);
    let mut seen = vec![false; levels as usize];
    for h in hosts {
        seen[h.priority as usize] = true;
    }
    if let Some(missing) = seen.iter().position(|s| !s) {
        let highest = levels - 1;
        dec.error(
            path,
            format!(
                "priorities must be contiguous from 0: no host has priority {missing}, and \
                 one has {highest}"
            ),
        );
    }
}

/// At most this many labels in a host's `transport_socket_match` or an entry's `match`.
const MAX_TRANSPORT_LABELS: usize = 64;

/// A host's `transport_socket_match` or an entry's `match`: a mapping of non-empty string keys
/// to string values.
fn decode_transport_labels(
    dec: &mut Decoder,
    path: &str,
    v: &Value,
) -> Option<super::TransportLabels> {
    let Value::Object(map) = v else {
        dec.error(path, "expected a mapping of string keys to string values");
        return None;
    };
    if map.len() > MAX_TRANSPORT_LABELS {
        dec.error(
            path,
            format!(
                "at most {MAX_TRANSPORT_LABELS} labels (found {})",
                map.len()
            ),
        );
        return None;
    }
    let mut labels = super::TransportLabels::new();
    let mut ok = true;
    for (k, v) in map {
        let p = child(path, k);
        if k.is_empty() {
            dec.error(path, "a label's key cannot be empty");
            ok = false;
            continue;
        }
        match dec.string(&p, v) {
            Some(value) => {
                labels.insert(k.clone(), value.to_owned());
            }
            None => ok = false,
        }
    }
    ok.then_some(labels)
}

/// `clusters[].transport_socket_matches`: each entry's `name` (unique), `match` and `tls`
/// (`null` or none: plaintext).
fn decode_transport_socket_matches(
    dec: &mut Decoder,
    path: &str,
    v: &Value,
) -> Option<Vec<super::TransportSocketMatch>> {
    let entries = dec.list(path, v, |dec, path, v| {
        let mut obj = dec.object(path, v)?;
        let name = obj.req(dec, "name").and_then(|(v, p)| dec.name(&p, v));
        let matches = match obj.opt("match") {
            Some((v, p)) => decode_transport_labels(dec, &p, v),
            None => Some(super::TransportLabels::new()),
        };
        // No `tls` (or `null`): plaintext, as an Envoy entry without a transport socket.
        let tls = match obj.opt("tls") {
            Some((Value::Null, _)) | None => Some(None),
            Some((v, p)) => tls::decode_upstream_tls(dec, &p, v).map(|t| Some(Box::new(t))),
        };
        obj.finish(dec);
        Some(super::TransportSocketMatch {
            name: name?,
            matches: matches?,
            tls: tls?,
        })
    })?;
    for (i, m) in entries.iter().enumerate() {
        if let Some(first) = entries[..i].iter().position(|e| e.name == m.name) {
            dec.error(
                &child(&index(path, i), "name"),
                format!("{:?} is already the name of entry {first}", m.name),
            );
            return None;
        }
    }
    Some(entries)
}

#[cfg(test)]
mod tests;
