//! `Cluster` and `ClusterLoadAssignment` → a `clusters[]` entry.
//!
//! Mapped: `name`; `type` STATIC, EDS (hosts from the assignment named by
//! `eds_cluster_config.service_name`, else the cluster's name) and ORIGINAL_DST; `lb_policy`
//! (Envoy's ROUND_ROBIN is weighted: `weighted_round_robin`); `ring_hash_lb_config.minimum_ring_size`;
//! `connect_timeout`; one `health_checks` entry (HTTP, TCP or gRPC: `grpc_health_check`'s
//! `service_name` and `authority`; `initial_metadata` refused); `outlier_detection`
//! (consecutive 5xx and gateway failures with their `enforcing_*` at 0 or 100, ejection times and
//! percentage); `circuit_breakers` (DEFAULT priority); `common_lb_config.healthy_panic_threshold`.
//! Endpoints: every locality, its `priority` kept on each of its hosts (priorities contiguous
//! from 0, else NACKed at the first locality past the gap; a locality without endpoints is no
//! level, the levels after it move up), `policy.overprovisioning_factor` kept
//! (`overprovisioning_factor`), every host kept with its `health_status` as its declared
//! `health` (UNHEALTHY, DRAINING, TIMEOUT: Envoy's FAILED_EDS_HEALTH — never picked outside
//! panic, yet counted in its level's health, so a level with such hosts spills load to the
//! next one; DEGRADED taken as healthy), `load_balancing_weight` kept; an assignment that lists
//! no endpoint (or a STATIC cluster without `load_assignment`, istiod's `BlackHoleCluster`) is
//! a cluster of no hosts, as in Envoy: HTTP requests to it are answered 503, TCP connections
//! closed; one whose every endpoint is declared unhealthy is accepted, as in Envoy (its level
//! has no health: the next level serves, or with none, panic picks among them). The upstream HTTP version
//! (`HttpProtocolOptions`: `explicit_http_config` → `http1` / `http2`,
//! `use_downstream_protocol_config` → `downstream`) becomes `protocol`, HTTP/2 keepalive
//! `http2.connection_keepalive`; other protocol options are noted, telemetry fields ignored.
//! `transport_socket` (TLS, `UpstreamTlsContext`) becomes `tls` ([`super::tls`]).

use envoy_types::pb::envoy::config::cluster::v3::{
    CircuitBreakers, Cluster, OutlierDetection,
    cluster::{ClusterDiscoveryType, DiscoveryType, LbConfig, LbPolicy},
};
use envoy_types::pb::envoy::config::core::v3::{
    Address, ConfigSource, HealthCheck, HealthStatus, RoutingPriority, address,
    config_source::ConfigSourceSpecifier, health_check::HealthChecker, socket_address,
};
use envoy_types::pb::envoy::config::endpoint::v3::{
    ClusterLoadAssignment, lb_endpoint::HostIdentifier,
};
use serde_json::{Value, json};

use super::{At, Notes, ResourceType, TranslateError, duration, object, reject_rest, take};

/// The EDS service name a cluster's endpoints come under (`None`: not an EDS cluster).
#[must_use]
pub fn eds_service_name(c: &Cluster) -> Option<&str> {
    match c.cluster_discovery_type {
        Some(ClusterDiscoveryType::Type(t)) if t == DiscoveryType::Eds as i32 => {
            Some(match &c.eds_cluster_config {
                Some(eds) if !eds.service_name.is_empty() => eds.service_name.as_str(),
                _ => c.name.as_str(),
            })
        }
        _ => None,
    }
}

/// Translates a cluster; `endpoints` is its assignment when it is an EDS cluster (`None`: not
/// received yet, an error); `secrets` the SDS secrets received, by name.
pub fn translate_cluster(
    c: &Cluster,
    endpoints: Option<&ClusterLoadAssignment>,
    secrets: &super::Secrets<'_>,
    notes: &mut Notes,
) -> Result<Value, TranslateError> {
    let at = At::root(ResourceType::Cluster, &c.name);
    let mut rest = c.clone();
    let name = take(&mut rest.name);
    config_name(&name, &at.field("name"))?;
    for (set, field) in [
        (!take(&mut rest.alt_stat_name).is_empty(), "alt_stat_name"),
        (take(&mut rest.metadata).is_some(), "metadata"),
        (
            take(&mut rest.track_cluster_stats).is_some(),
            "track_cluster_stats",
        ),
        (take(&mut rest.stats_matcher).is_some(), "stats_matcher"),
    ] {
        if set {
            at.note(notes, field);
        }
    }
    let discovery = take(&mut rest.cluster_discovery_type);
    let kind = match discovery {
        None => DiscoveryType::Static,
        Some(ClusterDiscoveryType::Type(t)) => match DiscoveryType::try_from(t) {
            Ok(t @ (DiscoveryType::Static | DiscoveryType::Eds | DiscoveryType::OriginalDst)) => t,
            Ok(other) => {
                return Err(at
                    .field("type")
                    .error(format!("{} is unsupported", other.as_str_name())));
            }
            Err(_) => return Err(at.field("type").error(format!("unknown type {t}"))),
        },
        Some(ClusterDiscoveryType::ClusterType(_)) => {
            return Err(at.field("cluster_type").unsupported());
        }
    };
    if let Some(mut eds) = take(&mut rest.eds_cluster_config) {
        let eds_at = at.field("eds_cluster_config");
        if kind != DiscoveryType::Eds {
            return Err(eds_at.error("set on a cluster whose type is not EDS"));
        }
        take(&mut eds.service_name);
        if let Some(source) = take(&mut eds.eds_config) {
            config_source(&source, &eds_at.field("eds_config"))?;
        }
        reject_rest(&eds, &eds_at)?;
    }
    // Without DNS these do nothing.
    if take(&mut rest.dns_lookup_family) != 0 {
        at.note(notes, "dns_lookup_family");
    }
    let connect_timeout = take(&mut rest.connect_timeout)
        .map(|d| duration(&d, &at.field("connect_timeout")))
        .transpose()?;
    let lb = take(&mut rest.lb_policy);
    let lb_policy = match (kind, LbPolicy::try_from(lb)) {
        (DiscoveryType::OriginalDst, Ok(LbPolicy::ClusterProvided)) => None,
        (DiscoveryType::OriginalDst, _) => {
            return Err(at
                .field("lb_policy")
                .error("an ORIGINAL_DST cluster takes lb_policy CLUSTER_PROVIDED"));
        }
        (_, Ok(LbPolicy::RoundRobin)) => Some("weighted_round_robin"),
        (_, Ok(LbPolicy::LeastRequest)) => Some("least_request"),
        (_, Ok(LbPolicy::Random)) => Some("random"),
        (_, Ok(LbPolicy::RingHash)) => Some("ring_hash"),
        (_, Ok(LbPolicy::Maglev)) => Some("maglev"),
        (_, Ok(other)) => {
            return Err(at
                .field("lb_policy")
                .error(format!("{} is unsupported", other.as_str_name())));
        }
        (_, Err(_)) => return Err(at.field("lb_policy").error(format!("unknown policy {lb}"))),
    };
    let ring_hash = match take(&mut rest.lb_config) {
        None => None,
        Some(LbConfig::RingHashLbConfig(mut r)) => {
            let r_at = at.field("ring_hash_lb_config");
            let min =
                take(&mut r.minimum_ring_size).map(|v| json!({ "minimum_ring_size": v.value }));
            reject_rest(&r, &r_at)?;
            min
        }
        Some(_) => return Err(at.field("lb_config").unsupported()),
    };
    let health_checks = take(&mut rest.health_checks);
    let health_check = match health_checks.as_slice() {
        [] => None,
        [hc] => Some(health_check(hc, &at.field("health_checks").index(0))?),
        _ => {
            return Err(at
                .field("health_checks")
                .index(1)
                .error("at most one health check"));
        }
    };
    let outlier_detection = take(&mut rest.outlier_detection)
        .map(|o| outlier(o, &at.field("outlier_detection")))
        .transpose()?;
    let circuit_breakers = take(&mut rest.circuit_breakers)
        .map(|cb| circuit_breakers(cb, &at.field("circuit_breakers")))
        .transpose()?;
    let panic_threshold = match take(&mut rest.common_lb_config) {
        None => None,
        Some(mut common) => {
            let c_at = at.field("common_lb_config");
            let p = take(&mut common.healthy_panic_threshold).map(|p| p.value);
            reject_rest(&common, &c_at)?;
            match p {
                Some(v) if (0.0..=100.0).contains(&v) && v.fract() == 0.0 => Some(json!(v as u32)),
                Some(v) => {
                    return Err(c_at
                        .field("healthy_panic_threshold")
                        .error(format!("{v} is not a whole percentage from 0 to 100")));
                }
                None => None,
            }
        }
    };
    // The upstream HTTP version: the deprecated `http2_protocol_options`, or the explicit
    // config of `HttpProtocolOptions` (the protocol is read; its other options are noted).
    let mut protocol: Option<&str> = None;
    let mut http2: Option<Value> = None;
    #[allow(deprecated)]
    if let Some(o) = take(&mut rest.http2_protocol_options) {
        protocol = Some("http2");
        http2 = http2_settings(&o, &at.field("http2_protocol_options"))?;
        at.note(
            notes,
            "http2_protocol_options (settings other than the protocol)",
        );
    }
    for (key, any) in take(&mut rest.typed_extension_protocol_options) {
        let k_at = at.field(&format!("typed_extension_protocol_options[{key:?}]"));
        if key == "envoy.extensions.upstreams.http.v3.HttpProtocolOptions" {
            use envoy_types::pb::envoy::extensions::upstreams::http::v3::HttpProtocolOptions;
            use envoy_types::pb::envoy::extensions::upstreams::http::v3::http_protocol_options::{
                UpstreamProtocolOptions, explicit_http_config::ProtocolConfig,
            };
            let opts: HttpProtocolOptions = super::unpack(&any, &k_at)?;
            // SNI and the SAN to verify taken from each request's host: security-relevant,
            // so refused by path rather than noted (Sluice sends the cluster's `sni` and
            // verifies its SAN matchers). Their defaults (false, empty) are what Sluice does.
            if let Some(u) = &opts.upstream_http_protocol_options {
                let u_at = k_at.field("upstream_http_protocol_options");
                for (set, field) in [
                    (u.auto_sni, "auto_sni"),
                    (u.auto_san_validation, "auto_san_validation"),
                    (
                        !u.override_auto_sni_header.is_empty(),
                        "override_auto_sni_header",
                    ),
                ] {
                    if set {
                        return Err(u_at.field(field).error(
                            "unsupported (Sluice sends the cluster's `sni` and verifies the \
                             transport socket's SAN matchers, not per request host)",
                        ));
                    }
                }
            }
            match opts.upstream_protocol_options {
                Some(UpstreamProtocolOptions::ExplicitHttpConfig(e)) => match e.protocol_config {
                    Some(ProtocolConfig::HttpProtocolOptions(_)) => protocol = Some("http1"),
                    Some(ProtocolConfig::Http2ProtocolOptions(o)) => {
                        protocol = Some("http2");
                        http2 = http2_settings(
                            &o,
                            &k_at.field("explicit_http_config.http2_protocol_options"),
                        )?;
                    }
                    Some(ProtocolConfig::Http3ProtocolOptions(_)) => {
                        return Err(k_at
                            .field("explicit_http_config.http3_protocol_options")
                            .unsupported());
                    }
                    None => {}
                },
                // The client's version, request by request (Istio's pass-through and inbound
                // clusters): HTTP/1.1 options are noted like explicit_http_config's, HTTP/2's
                // keepalive applies to the cluster's HTTP/2 connections, and HTTP/3 (which no
                // client of Sluice speaks) is refused as there.
                Some(UpstreamProtocolOptions::UseDownstreamProtocolConfig(d)) => {
                    let d_at = k_at.field("use_downstream_protocol_config");
                    if d.http3_protocol_options.is_some() {
                        return Err(d_at.field("http3_protocol_options").unsupported());
                    }
                    protocol = Some("downstream");
                    if let Some(o) = &d.http2_protocol_options {
                        http2 = http2_settings(o, &d_at.field("http2_protocol_options"))?;
                    }
                }
                Some(UpstreamProtocolOptions::AutoConfig(_)) => {
                    return Err(k_at.field("auto_config").error(
                        "unsupported (no upstream protocol is negotiated by ALPN: give \
                         explicit_http_config or use_downstream_protocol_config)",
                    ));
                }
                None => {}
            }
            at.note(
                notes,
                &format!(
                    "typed_extension_protocol_options[{key:?}] (settings other than the protocol)"
                ),
            );
        } else {
            return Err(k_at.unsupported());
        }
    }
    let tls = take(&mut rest.transport_socket)
        .map(|ts| super::tls::upstream_tls(&ts, &at.field("transport_socket"), secrets, notes))
        .transpose()?;
    let transport_socket_matches = transport_socket_matches(
        take(&mut rest.transport_socket_matches),
        &at,
        secrets,
        notes,
    )?;
    let load_assignment = take(&mut rest.load_assignment);
    reject_rest(&rest, &at)?;

    let (type_name, assignment) = match kind {
        DiscoveryType::OriginalDst => ("original_dst", None),
        DiscoveryType::Eds => {
            if load_assignment.is_some() {
                return Err(at.field("load_assignment").error("set on an EDS cluster"));
            }
            let service = eds_service_name(c).unwrap_or(&c.name);
            let Some(cla) = endpoints else {
                return Err(at.error(format!("no ClusterLoadAssignment {service:?} received")));
            };
            let cla_at = At::root(ResourceType::Endpoints, &cla.cluster_name);
            ("static", Some(hosts(cla, &cla_at, notes)?))
        }
        // Without a `load_assignment` (istiod's `BlackHoleCluster`), or with one that lists
        // no endpoint, a cluster of no hosts: requests to it are answered 503, a TCP
        // proxy to it closes the connection (Envoy's no-healthy-upstream).
        _ => match load_assignment {
            None => ("static", Some(Assignment::default())),
            Some(cla) => (
                "static",
                Some(hosts(&cla, &at.field("load_assignment"), notes)?),
            ),
        },
    };
    Ok(object([
        ("name", Some(json!(name))),
        ("type", Some(json!(type_name))),
        ("connect_timeout", connect_timeout),
        ("lb_policy", lb_policy.map(|p| json!(p))),
        ("protocol", protocol.map(|p| json!(p))),
        ("http2", http2),
        ("tls", tls),
        ("transport_socket_matches", transport_socket_matches),
        ("ring_hash", ring_hash),
        ("health_check", health_check),
        ("outlier_detection", outlier_detection),
        ("circuit_breakers", circuit_breakers),
        ("panic_threshold", panic_threshold),
        (
            "overprovisioning_factor",
            assignment
                .as_ref()
                .and_then(|a| a.overprovisioning_factor)
                .map(|f| json!(f)),
        ),
        ("hosts", assignment.map(|a| Value::Array(a.hosts))),
    ]))
}

/// The endpoint metadata namespace whose string values a host's transport is matched on.
const TRANSPORT_SOCKET_MATCH: &str = "envoy.transport_socket_match";

/// Envoy's `raw_buffer` transport socket (plaintext), what a `transport_socket_matches` entry
/// may give instead of TLS.
const RAW_BUFFER: &str = "envoy.transport_sockets.raw_buffer";

/// A `Struct` of string values (a `match`, or an endpoint's `envoy.transport_socket_match`
/// metadata) as labels; any other kind of value is refused at its path.
fn string_labels(
    s: &envoy_types::pb::google::protobuf::Struct,
    at: &At<'_>,
) -> Result<Value, TranslateError> {
    use envoy_types::pb::google::protobuf::value::Kind;
    let mut labels = serde_json::Map::new();
    for (k, v) in &s.fields {
        match &v.kind {
            Some(Kind::StringValue(text)) => {
                labels.insert(k.clone(), json!(text));
            }
            _ => {
                return Err(at.field(k).error(
                    "only string values are supported (a host's transport is matched on \
                     string labels)",
                ));
            }
        }
    }
    Ok(Value::Object(labels))
}

/// `transport_socket_matches`: each entry's `name`, `match` (string values) and
/// `transport_socket` (TLS → its `tls`; `raw_buffer` or none → `tls: null`, plaintext).
/// `None` when there are none.
fn transport_socket_matches(
    matches: Vec<envoy_types::pb::envoy::config::cluster::v3::cluster::TransportSocketMatch>,
    at: &At<'_>,
    secrets: &super::Secrets<'_>,
    notes: &mut Notes,
) -> Result<Option<Value>, TranslateError> {
    if matches.is_empty() {
        return Ok(None);
    }
    let mut out = Vec::with_capacity(matches.len());
    for (i, mut m) in matches.into_iter().enumerate() {
        let m_at = at.field("transport_socket_matches").index(i);
        let name = take(&mut m.name);
        config_name(&name, &m_at.field("name"))?;
        let labels = match take(&mut m.r#match) {
            Some(s) => string_labels(&s, &m_at.field("match"))?,
            None => json!({}),
        };
        let tls = match take(&mut m.transport_socket) {
            None => Value::Null,
            Some(ts) if ts.name == RAW_BUFFER => {
                use envoy_types::pb::envoy::config::core::v3::transport_socket::ConfigType;
                match &ts.config_type {
                    None => {}
                    Some(ConfigType::TypedConfig(any))
                        if any.type_url.ends_with(
                            "envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer",
                        ) => {}
                    Some(_) => {
                        return Err(m_at
                            .field("transport_socket")
                            .error("raw_buffer takes no configuration"));
                    }
                }
                Value::Null
            }
            Some(ts) => {
                super::tls::upstream_tls(&ts, &m_at.field("transport_socket"), secrets, notes)?
            }
        };
        reject_rest(&m, &m_at)?;
        out.push(json!({ "name": name, "match": labels, "tls": tls }));
    }
    Ok(Some(Value::Array(out)))
}

/// Only the ADS stream (`ads: {}`, or `self: {}`, the server the resource came from) exists.
pub(crate) fn config_source(source: &ConfigSource, at: &At<'_>) -> Result<(), TranslateError> {
    let mut rest = source.clone();
    take(&mut rest.resource_api_version);
    take(&mut rest.initial_fetch_timeout);
    match take(&mut rest.config_source_specifier) {
        None | Some(ConfigSourceSpecifier::Ads(_) | ConfigSourceSpecifier::Self_(_)) => {}
        Some(_) => {
            return Err(at.error("only `ads` (the aggregated stream) is supported"));
        }
    }
    reject_rest(&rest, at)
}

/// An assignment's usable hosts (`clusters[].hosts`, each with its `priority`) and its
/// `policy.overprovisioning_factor`.
#[derive(Debug, Default)]
struct Assignment {
    hosts: Vec<Value>,
    overprovisioning_factor: Option<u32>,
}

/// The hosts of an assignment, each with its locality's priority (contiguous from 0; empty
/// localities are no level, see the module doc) and its declared health (`health_status`). An
/// assignment that lists no endpoint is a cluster of no hosts.
fn hosts(
    cla: &ClusterLoadAssignment,
    at: &At<'_>,
    notes: &mut Notes,
) -> Result<Assignment, TranslateError> {
    let mut rest = cla.clone();
    take(&mut rest.cluster_name);
    let mut overprovisioning_factor = None;
    if let Some(mut policy) = take(&mut rest.policy) {
        let p_at = at.field("policy");
        if let Some(f) = take(&mut policy.overprovisioning_factor) {
            if f.value == 0 {
                return Err(p_at
                    .field("overprovisioning_factor")
                    .error("must be greater than 0"));
            }
            overprovisioning_factor = Some(f.value);
        }
        reject_rest(&policy, &p_at)?;
    }
    let localities = take(&mut rest.endpoints);
    reject_rest(&rest, at)?;
    check_priorities_contiguous(&localities, at)?;
    // (host, its locality's priority), in order.
    let mut out: Vec<(Value, u32)> = Vec::new();
    for (i, mut locality) in localities.into_iter().enumerate() {
        let l_at = at.field("endpoints").index(i);
        let priority = take(&mut locality.priority);
        for (set, field) in [
            (take(&mut locality.locality).is_some(), "locality"),
            (take(&mut locality.metadata).is_some(), "metadata"),
            (
                take(&mut locality.load_balancing_weight).is_some(),
                "load_balancing_weight",
            ),
        ] {
            if set {
                l_at.note(notes, field);
            }
        }
        let endpoints = take(&mut locality.lb_endpoints);
        reject_rest(&locality, &l_at)?;
        for (j, mut lb) in endpoints.into_iter().enumerate() {
            let e_at = l_at.field("lb_endpoints").index(j);
            let mut labels = None;
            if let Some(mut metadata) = take(&mut lb.metadata) {
                let m_at = e_at.field("metadata");
                if let Some(s) = metadata.filter_metadata.remove(TRANSPORT_SOCKET_MATCH) {
                    let f_at = m_at.field("filter_metadata").field(TRANSPORT_SOCKET_MATCH);
                    labels = Some(string_labels(&s, &f_at)?);
                }
                if metadata != Default::default() {
                    e_at.note(notes, "metadata (other than envoy.transport_socket_match)");
                }
            }
            let status = take(&mut lb.health_status);
            let weight = take(&mut lb.load_balancing_weight).map(|w| json!(w.value));
            let endpoint = match take(&mut lb.host_identifier) {
                Some(HostIdentifier::Endpoint(e)) => e,
                Some(HostIdentifier::EndpointName(_)) => {
                    return Err(e_at.field("endpoint_name").unsupported());
                }
                None => return Err(e_at.error("no endpoint")),
            };
            reject_rest(&lb, &e_at)?;
            let mut endpoint = endpoint;
            let ep_at = e_at.field("endpoint");
            take(&mut endpoint.hostname);
            take(&mut endpoint.observability_name);
            let address = take(&mut endpoint.address);
            reject_rest(&endpoint, &ep_at)?;
            let address = socket_address(address.as_ref(), &ep_at.field("address"))?;
            // Envoy keeps a host whatever its status: UNHEALTHY, DRAINING and TIMEOUT flag it
            // FAILED_EDS_HEALTH (never picked, yet one of its level's hosts, so the level
            // spills load), DEGRADED is taken as healthy (see `DeclaredHealth`). An unknown
            // value is UNKNOWN's: healthy.
            let health = match HealthStatus::try_from(status) {
                Ok(HealthStatus::Unhealthy) => Some("unhealthy"),
                Ok(HealthStatus::Draining) => Some("draining"),
                Ok(HealthStatus::Timeout) => Some("timeout"),
                Ok(HealthStatus::Degraded) => Some("degraded"),
                Ok(HealthStatus::Unknown | HealthStatus::Healthy) | Err(_) => None,
            };
            out.push((
                object([
                    ("address", Some(json!(address))),
                    ("weight", weight),
                    ("transport_socket_match", labels),
                    ("health", health.map(|h| json!(h))),
                ]),
                priority,
            ));
        }
    }
    // Renumber the levels that have a host 0, 1, 2, ... in order (contiguous for the config:
    // a locality with no endpoint is no level; it would take no load anyway).
    let mut kept: Vec<u32> = out.iter().map(|(_, p)| *p).collect();
    kept.sort_unstable();
    kept.dedup();
    let hosts = out
        .into_iter()
        .map(|(mut host, priority)| {
            let level = kept.partition_point(|&p| p < priority);
            if level > 0
                && let Value::Object(m) = &mut host
            {
                m.insert("priority".into(), json!(level));
            }
            host
        })
        .collect();
    Ok(Assignment {
        hosts,
        overprovisioning_factor,
    })
}

/// Envoy's rule: priorities range from 0 to N without skipping. A gap is refused at the first
/// locality whose priority lies past it.
fn check_priorities_contiguous(
    localities: &[envoy_types::pb::envoy::config::endpoint::v3::LocalityLbEndpoints],
    at: &At<'_>,
) -> Result<(), TranslateError> {
    let mut levels: Vec<u32> = localities.iter().map(|l| l.priority).collect();
    levels.sort_unstable();
    levels.dedup();
    let Some(missing) = (0u32..).zip(&levels).find(|(want, have)| want != *have) else {
        return Ok(());
    };
    let missing = missing.0;
    let (i, l) = localities
        .iter()
        .enumerate()
        .find(|(_, l)| l.priority > missing)
        .expect("a level past the gap exists");
    Err(at
        .field("endpoints")
        .index(i)
        .field("priority")
        .error(format!(
            "priorities must be contiguous from 0 (Envoy's rule): no locality has priority \
         {missing}, and this one has {}",
            l.priority
        )))
}

/// `ip:port` of a TCP socket address (no named ports, no resolver). The IP address and the
/// port are checked here, so that a bad one is refused by its xDS path
/// (`address.socket_address.port_value`) rather than by the config's (`listeners[0].address`).
pub(crate) fn socket_address(a: Option<&Address>, at: &At<'_>) -> Result<String, TranslateError> {
    let Some(address::Address::SocketAddress(sa)) = a.and_then(|a| a.address.as_ref()) else {
        return Err(at.error("expected a socket_address"));
    };
    let sa_at = at.field("socket_address");
    let mut rest = sa.clone();
    let ip_text = take(&mut rest.address);
    let port = match take(&mut rest.port_specifier) {
        Some(socket_address::PortSpecifier::PortValue(p)) => p,
        Some(socket_address::PortSpecifier::NamedPort(_)) => {
            return Err(sa_at.field("named_port").unsupported());
        }
        None => 0,
    };
    if take(&mut rest.protocol) != 0 {
        return Err(sa_at.field("protocol").error("only TCP is supported"));
    }
    reject_rest(&rest, &sa_at)?;
    // Envoy's own bound (`port_value` is `lte: 65535`).
    let Ok(port) = u16::try_from(port) else {
        return Err(sa_at
            .field("port_value")
            .error(format!("{port} is not a port (0 to 65535)")));
    };
    // No resolver: an IP address, as Envoy requires of a listener's and a STATIC or EDS
    // cluster's endpoint's address.
    let ip: std::net::IpAddr = ip_text.parse().map_err(|_| {
        sa_at
            .field("address")
            .error(format!("{ip_text:?} is not an IP address"))
    })?;
    Ok(std::net::SocketAddr::new(ip, port).to_string())
}

/// A name the config takes (a cluster's, a listener's, a virtual host's...), checked by the
/// config's own rule, refused at `at` (its xDS path).
pub(crate) fn config_name(name: &str, at: &At<'_>) -> Result<(), TranslateError> {
    sluice_core::config::yaml::check_name(name).map_err(|e| at.error(e))
}

fn health_check(hc: &HealthCheck, at: &At<'_>) -> Result<Value, TranslateError> {
    let mut rest = hc.clone();
    let interval = take(&mut rest.interval)
        .map(|d| duration(&d, &at.field("interval")))
        .transpose()?;
    let timeout = take(&mut rest.timeout)
        .map(|d| duration(&d, &at.field("timeout")))
        .transpose()?;
    let no_traffic = take(&mut rest.no_traffic_interval)
        .map(|d| duration(&d, &at.field("no_traffic_interval")))
        .transpose()?;
    let jitter = match take(&mut rest.interval_jitter_percent) {
        0 => None,
        p => Some(json!(p)),
    };
    let unhealthy = take(&mut rest.unhealthy_threshold).map(|v| json!(v.value));
    let healthy = take(&mut rest.healthy_threshold).map(|v| json!(v.value));
    let probe = match take(&mut rest.health_checker) {
        Some(HealthChecker::TcpHealthCheck(t)) => {
            reject_rest(&t, &at.field("tcp_health_check"))?;
            ("tcp", json!({}))
        }
        Some(HealthChecker::HttpHealthCheck(mut h)) => {
            let h_at = at.field("http_health_check");
            let path = take(&mut h.path);
            let host = match take(&mut h.host) {
                s if s.is_empty() => None,
                s => Some(json!(s)),
            };
            let statuses: Vec<Value> = take(&mut h.expected_statuses)
                .into_iter()
                // Envoy's ranges are half-open.
                .map(|r| json!(format!("{}-{}", r.start, r.end.saturating_sub(1))))
                .collect();
            reject_rest(&h, &h_at)?;
            let statuses = (!statuses.is_empty()).then(|| Value::Array(statuses));
            (
                "http",
                object([
                    ("path", Some(json!(path))),
                    ("host", host),
                    ("expected_statuses", statuses),
                ]),
            )
        }
        Some(HealthChecker::GrpcHealthCheck(mut g)) => {
            let g_at = at.field("grpc_health_check");
            // Envoy's empty defaults: the overall health, the cluster's name as authority.
            let service_name = json!(take(&mut g.service_name));
            let authority = match take(&mut g.authority) {
                s if s.is_empty() => None,
                s => Some(json!(s)),
            };
            // `initial_metadata` (headers added to the call) is not supported: named.
            reject_rest(&g, &g_at)?;
            (
                "grpc",
                object([
                    ("service_name", Some(service_name)),
                    ("authority", authority),
                ]),
            )
        }
        Some(_) => {
            return Err(at.error(
                "only http_health_check, tcp_health_check and grpc_health_check are supported",
            ));
        }
        None => return Err(at.error("no health checker")),
    };
    reject_rest(&rest, at)?;
    let mut v = object([
        ("interval", interval),
        ("timeout", timeout),
        ("jitter", jitter),
        ("unhealthy_threshold", unhealthy),
        ("healthy_threshold", healthy),
        ("no_traffic_interval", no_traffic),
    ]);
    if let Value::Object(m) = &mut v {
        m.insert(probe.0.to_owned(), probe.1);
    }
    Ok(v)
}

/// `enforcing_*` is a percentage; only all (100) or nothing (0) can be said here.
fn enforced(v: Option<u32>, default: bool, at: &At<'_>) -> Result<bool, TranslateError> {
    match v {
        None => Ok(default),
        Some(0) => Ok(false),
        Some(100) => Ok(true),
        Some(p) => Err(at.error(format!("{p}: only 0 or 100 is supported"))),
    }
}

fn outlier(mut o: OutlierDetection, at: &At<'_>) -> Result<Value, TranslateError> {
    let c5xx = take(&mut o.consecutive_5xx).map_or(5, |v| v.value);
    let c5xx_on = enforced(
        take(&mut o.enforcing_consecutive_5xx).map(|v| v.value),
        true,
        &at.field("enforcing_consecutive_5xx"),
    )?;
    let gw = take(&mut o.consecutive_gateway_failure).map_or(5, |v| v.value);
    // Envoy does not enforce gateway failures unless told to.
    let gw_on = enforced(
        take(&mut o.enforcing_consecutive_gateway_failure).map(|v| v.value),
        false,
        &at.field("enforcing_consecutive_gateway_failure"),
    )?;
    let d = |v: Option<envoy_types::pb::google::protobuf::Duration>, f: &str| {
        v.map(|d| duration(&d, &at.field(f))).transpose()
    };
    let interval = d(take(&mut o.interval), "interval")?;
    let base = d(take(&mut o.base_ejection_time), "base_ejection_time")?;
    let max = d(take(&mut o.max_ejection_time), "max_ejection_time")?;
    let pct = take(&mut o.max_ejection_percent).map(|v| json!(v.value));
    // Envoy's success-rate detection runs only with enough traffic; it is not translated, so
    // settings of it are refused below — but its enforcement defaults are left alone.
    reject_rest(&o, at)?;
    Ok(object([
        (
            "consecutive_5xx",
            Some(json!(if c5xx_on { c5xx } else { 0 })),
        ),
        (
            "consecutive_gateway_failure",
            Some(json!(if gw_on { gw } else { 0 })),
        ),
        // Envoy counts connect failures as 5xx (no split of local-origin errors).
        ("consecutive_connect_failure", Some(json!(0))),
        ("interval", interval),
        ("base_ejection_time", base),
        ("max_ejection_time", max),
        ("max_ejection_percent", pct),
    ]))
}

/// The largest circuit-breaker threshold the config model takes.
const BREAKER_CEILING: u32 = 10_000_000;

fn circuit_breakers(mut cb: CircuitBreakers, at: &At<'_>) -> Result<Value, TranslateError> {
    let thresholds = take(&mut cb.thresholds);
    reject_rest(&cb, at)?;
    let mut out = serde_json::Map::new();
    for (i, mut t) in thresholds.into_iter().enumerate() {
        let t_at = at.field("thresholds").index(i);
        if take(&mut t.priority) != RoutingPriority::Default as i32 {
            return Err(t_at.field("priority").error("only DEFAULT is supported"));
        }
        if take(&mut t.track_remaining) {
            // A stat only.
        }
        for (key, v) in [
            ("max_connections", take(&mut t.max_connections)),
            ("max_pending_requests", take(&mut t.max_pending_requests)),
            ("max_requests", take(&mut t.max_requests)),
            ("max_retries", take(&mut t.max_retries)),
        ] {
            if let Some(v) = v {
                // Istio writes u32::MAX for "no limit"; the model's ceiling (ten million at
                // once) is as good as none for one sidecar, so larger limits are capped to it.
                out.insert(key.to_owned(), json!(v.value.min(BREAKER_CEILING)));
            }
        }
        reject_rest(&t, &t_at)?;
    }
    Ok(Value::Object(out))
}

/// The settings of an upstream `Http2ProtocolOptions` that Sluice applies: its
/// `connection_keepalive` (`interval`, `timeout`, `interval_jitter`; the idle interval is left
/// out, with the rest, as the caller notes). `None` when there is none or it sends no periodic
/// PING.
fn http2_settings(
    o: &envoy_types::pb::envoy::config::core::v3::Http2ProtocolOptions,
    at: &At<'_>,
) -> Result<Option<Value>, TranslateError> {
    let Some(k) = &o.connection_keepalive else {
        return Ok(None);
    };
    let k_at = at.field("connection_keepalive");
    let positive = |d: &Option<envoy_types::pb::google::protobuf::Duration>, field: &str| {
        let f_at = k_at.field(field);
        match d {
            Some(d) if d.seconds > 0 || d.nanos > 0 => super::duration(d, &f_at),
            _ => Err(f_at.error("must be set and above zero")),
        }
    };
    // Envoy: no interval (or zero) sends no periodic PING.
    if k.interval.is_none_or(|d| d.seconds == 0 && d.nanos == 0) {
        return Ok(None);
    }
    let interval = positive(&k.interval, "interval")?;
    let timeout = positive(&k.timeout, "timeout")?;
    let jitter = super::keepalive_jitter(k.interval_jitter, &k_at)?;
    Ok(Some(json!({ "connection_keepalive": {
        "interval": interval, "timeout": timeout, "interval_jitter_percent": jitter
    } })))
}
