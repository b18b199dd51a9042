//! `Listener` → a `listeners[]` entry.
//!
//! Mapped: `name`, `address` (a TCP socket address), one filter chain without
//! `filter_chain_match`, whose one network filter is an `HttpConnectionManager` (routes from RDS
//! over ADS or inline; `codec_type`; `max_request_headers_kb`; `stream_idle_timeout`;
//! `request_headers_timeout`; `common_http_protocol_options.idle_timeout`;
//! `http2_protocol_options.connection_keepalive` (`interval`, `timeout`; its other fields, and
//! the options' others, refused by path); `normalize_path`,
//! `merge_slashes`, `path_with_escaped_slashes_action`; `upgrade_configs` (the enabled
//! `upgrade_type`s → `upgrade_types`; none: `[]`, Envoy upgrades nothing; a custom `filters`
//! chain or `CONNECT` refused by path); `forward_client_cert_details` and
//! `set_current_client_cert_details` (`cert`, `chain`, `subject`, `uri`, `dns`; `issuer` and a
//! `format` refused by path) → `forward_client_cert`, `set_current_client_cert_details`;
//! `server_name` and `server_header_transformation` (an empty name: none — Envoy would write
//! `envoy`); `generate_request_id` (not false) and the UUID `request_id_extension`
//! (its tracing fields noted); HTTP filters ending with the router, the no-op ones before it
//! noted ([`super::http_filters`]: `grpc_stats`, Istio's stats, an empty `cors` or `fault`;
//! Istio's metadata exchange, noted, its `x-envoy-peer-metadata` headers removed by every
//! forwarding route of the HCM), any other filter only when `is_optional` or `disabled`) or a `TcpProxy` (`cluster`,
//! `idle_timeout`, `max_connect_attempts`). The chain's `transport_socket` (TLS,
//! `DownstreamTlsContext`) becomes the listener's `tls` ([`super::tls`]).
//!
//! Several filter chains (or one with a `filter_chain_match`, or a `default_filter_chain`):
//! - **TLS passthrough by server name**, the compact form, where it fits: every chain a
//!   `tcp_proxy` without `transport_socket`, chosen by `server_names` (`transport_protocol`
//!   `tls` or unset), one chain without a match for the rest, the same tcp_proxy settings but
//!   the cluster — a `tcp_proxy` with `sni_routes`; the listener filters only `tls_inspector`,
//!   `listener_filters_timeout` its `client_hello_timeout`.
//! - otherwise **`filter_chains`**: each chain's `filter_chain_match` (`destination_port`,
//!   `server_names`, `transport_protocol` `tls` / `raw_buffer`, `application_protocols`), its
//!   `transport_socket` as the chain's own `tls`, its `HttpConnectionManager` or `TcpProxy`;
//!   `default_filter_chain` (without a match) as the listener's own filter and `tls`, and
//!   without one, a listener that closes what no chain takes (Envoy's rule);
//!   `listener_filters_timeout` (`0s`: no limit) and `continue_on_listener_filters_timeout` as
//!   such. Listener filters ([`super::listener_filters`]): `tls_inspector`, `http_inspector`
//!   (plaintext sniffed for `http/1.0`, `http/1.1`, `h2c`) with their `filter_disabled` port
//!   predicates → `tls_inspector` / `http_inspector`, and `original_dst` (`original_dst:
//!   redirect`: `destination_port` is then the original destination's port — Istio's
//!   `virtualInbound`). Network filters before the terminal one
//!   ([`super::network_filters`]): Istio's metadata exchange and stats, noted; RBAC only when
//!   it denies nothing.
//!
//! Refused by path: the other match fields (`prefix_ranges` — which older istiod puts on its
//! passthrough chains —, `source_*`, `direct_source_prefix_ranges`, `address_suffix`), another
//! transport protocol, other listener filters and predicates, other network filters, a match
//! on the `default_filter_chain`, and chains two of which could take the same connection (the
//! config's own check).

use std::collections::BTreeMap;

use envoy_types::pb::envoy::config::core::v3::{
    Http2ProtocolOptions, HttpProtocolOptions, KeepaliveSettings,
};
use envoy_types::pb::envoy::config::listener::v3::{
    FilterChain, FilterChainMatch, Listener, filter,
};
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use envoy_types::pb::envoy::extensions::filters::http::router::v3::Router;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager,
    http_connection_manager::{
        CodecType, ForwardClientCertDetails, PathWithEscapedSlashesAction, RouteSpecifier,
        ServerHeaderTransformation, UpgradeConfig,
    },
    http_filter,
};
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::{
    TcpProxy, tcp_proxy::ClusterSpecifier,
};
use envoy_types::pb::envoy::extensions::request_id::uuid::v3::UuidRequestIdConfig;
use prost::Name;
use serde_json::{Value, json};

use sluice_core::detect::PLAINTEXT_PROTOCOLS;

use super::cluster::{config_name, config_source, socket_address};
use super::listener_filters::Ports;
use super::route::translate_route_configuration;
use super::{At, Notes, ResourceType, TranslateError, duration, object, reject_rest, take, unpack};

/// Translates a listener; `routes` are the route configurations received over RDS, by name,
/// `secrets` the SDS secrets.
pub fn translate_listener(
    l: &Listener,
    routes: &BTreeMap<String, RouteConfiguration>,
    secrets: &super::Secrets<'_>,
    notes: &mut Notes,
) -> Result<Value, TranslateError> {
    let at = At::root(ResourceType::Listener, &l.name);
    let mut rest = l.clone();
    let name = take(&mut rest.name);
    config_name(&name, &at.field("name"))?;
    for (set, field) in [
        (!take(&mut rest.stat_prefix).is_empty(), "stat_prefix"),
        (take(&mut rest.metadata).is_some(), "metadata"),
        (!take(&mut rest.access_log).is_empty(), "access_log"),
        (take(&mut rest.traffic_direction) != 0, "traffic_direction"),
        (take(&mut rest.stats_matcher).is_some(), "stats_matcher"),
        // How many connections one wake-up of the accept loop takes (Istio: 1): the runtime's
        // accept loop paces itself.
        (
            take(&mut rest.max_connections_to_accept_per_socket_event).is_some(),
            "max_connections_to_accept_per_socket_event",
        ),
    ] {
        if set {
            at.note(notes, field);
        }
    }
    // Every listening socket has SO_REUSEPORT here.
    take(&mut rest.enable_reuse_port);
    #[allow(deprecated)]
    take(&mut rest.reuse_port);
    let address = socket_address(take(&mut rest.address).as_ref(), &at.field("address"))?;
    let chains = take(&mut rest.filter_chains);
    let default_chain = take(&mut rest.default_filter_chain);
    let matched = |c: &FilterChain| {
        c.filter_chain_match
            .as_ref()
            .is_some_and(|m| *m != FilterChainMatch::default())
    };
    // One chain that takes every connection: the listener's own filter and TLS.
    if default_chain.is_none() && chains.len() == 1 && !matched(&chains[0]) {
        reject_rest(&rest, &at)?;
        return single_chain(name, address, &chains[0], &at, routes, secrets, notes);
    }
    let sni = default_chain.is_none()
        && (chains.len() > 1
            || chains.iter().any(|c| {
                c.filter_chain_match
                    .as_ref()
                    .is_some_and(|m| !m.server_names.is_empty())
            }));
    // TLS passthrough by server name keeps its compact form (a tcp_proxy with sni_routes)
    // where it fits; any other set of chains becomes `filter_chains`.
    if sni {
        let mut trial = notes.clone();
        if let Ok(tcp) = passthrough_form(&rest, &chains, &at, routes, secrets, &mut trial) {
            *notes = trial;
            return Ok(json!({ "name": name, "address": address, "tcp_proxy": tcp }));
        }
    }
    filter_chains(
        name,
        address,
        rest,
        &chains,
        default_chain.as_ref(),
        &at,
        routes,
        secrets,
        notes,
    )
}

/// The compact form of TLS passthrough by server name (see [`sni_passthrough`]), when the
/// chains fit it; `Err` otherwise (then they become `filter_chains`).
fn passthrough_form(
    rest: &Listener,
    chains: &[FilterChain],
    at: &At<'_>,
    routes: &BTreeMap<String, RouteConfiguration>,
    secrets: &super::Secrets<'_>,
    notes: &mut Notes,
) -> Result<Value, TranslateError> {
    let mut rest = rest.clone();
    let timeout = listener_filters_timeout(&mut rest, at)?;
    let filters = take(&mut rest.listener_filters);
    for (i, f) in filters.iter().enumerate() {
        super::listener_filters::tls_inspector(f, &at.field("listener_filters").index(i), notes)?;
    }
    if timeout.as_ref().is_some_and(|t| t == "0s") {
        // `client_hello_timeout` is always bounded: as filter chains instead.
        return Err(at.field("listener_filters_timeout").unsupported());
    }
    reject_rest(&rest, at)?;
    sni_passthrough(chains, at, routes, secrets, timeout, notes)
}

/// `listener_filters_timeout`, taken: `None` when unset; `0s` is Envoy's "no timeout", which
/// the config writes the same way.
fn listener_filters_timeout(
    rest: &mut Listener,
    at: &At<'_>,
) -> Result<Option<Value>, TranslateError> {
    take(&mut rest.listener_filters_timeout)
        .map(|d| duration(&d, &at.field("listener_filters_timeout")))
        .transpose()
}

/// A listener of one chain without a match: its filter and TLS are the listener's.
fn single_chain(
    name: String,
    address: String,
    chain: &FilterChain,
    at: &At<'_>,
    routes: &BTreeMap<String, RouteConfiguration>,
    secrets: &super::Secrets<'_>,
    notes: &mut Notes,
) -> Result<Value, TranslateError> {
    let (key, filter, tls) = filter_chain(
        chain,
        &at.field("filter_chains").index(0),
        routes,
        secrets,
        notes,
    )?;
    let mut v = json!({ "name": name, "address": address });
    if let Value::Object(m) = &mut v {
        m.insert(key.to_owned(), filter);
        if let Some(tls) = tls {
            m.insert("tls".to_owned(), tls);
        }
    }
    Ok(v)
}

/// Chains matched by destination port, server names, transport protocol and ALPN, each
/// with its own filter and TLS: `filter_chains`, the `default_filter_chain` as the listener's
/// own filter and TLS (none: what no chain takes is closed, as in Envoy). Listener filters:
/// `tls_inspector` (the runtime peeks whenever a chain needs it) and `original_dst`
/// (`original_dst: redirect`: `destination_port` is then the original destination's).
#[allow(clippy::too_many_arguments)]
fn filter_chains(
    name: String,
    address: String,
    mut rest: Listener,
    chains: &[FilterChain],
    default_chain: Option<&FilterChain>,
    at: &At<'_>,
    routes: &BTreeMap<String, RouteConfiguration>,
    secrets: &super::Secrets<'_>,
    notes: &mut Notes,
) -> Result<Value, TranslateError> {
    let timeout = listener_filters_timeout(&mut rest, at)?;
    let continue_on_timeout = take(&mut rest.continue_on_listener_filters_timeout);
    let filters = take(&mut rest.listener_filters);
    let inspection =
        super::listener_filters::listener_filters(&filters, &at.field("listener_filters"), notes)?;
    let original_dst = inspection.original_dst;
    reject_rest(&rest, at)?;
    if chains.is_empty() && default_chain.is_none() {
        return Err(at.field("filter_chains").error("no filter chain"));
    }
    let mut out = Vec::with_capacity(chains.len());
    for (i, chain) in chains.iter().enumerate() {
        let c_at = at.field("filter_chains").index(i);
        let m = chain_match(chain.filter_chain_match.as_ref(), &c_at)?;
        let mut chain = chain.clone();
        chain.filter_chain_match = None;
        let (key, filter, tls) = filter_chain(&chain, &c_at, routes, secrets, notes)?;
        let mut c = serde_json::Map::new();
        if let Some(m) = m {
            c.insert("filter_chain_match".to_owned(), m);
        }
        if let Some(tls) = tls {
            c.insert("tls".to_owned(), tls);
        }
        c.insert(key.to_owned(), filter);
        out.push(Value::Object(c));
    }
    let mut v = json!({ "name": name, "address": address });
    let Value::Object(m) = &mut v else {
        unreachable!()
    };
    if original_dst {
        m.insert("original_dst".to_owned(), json!("redirect"));
    }
    if !out.is_empty() {
        // Without `http_inspector`, Envoy gives no plaintext connection an application
        // protocol: chains that list one never take plaintext, so nothing is sniffed.
        let http = inspection.http.unwrap_or_else(|| {
            if chains.iter().any(lists_sniffable_protocol) {
                Ports::Only(Vec::new())
            } else {
                Ports::All
            }
        });
        for (key, ports) in [
            ("tls_inspector", &inspection.tls),
            ("http_inspector", &http),
        ] {
            if let Some(v) = ports.to_json() {
                m.insert(key.to_owned(), v);
            }
        }
        m.insert("filter_chains".to_owned(), Value::Array(out));
        if let Some(t) = timeout {
            m.insert("listener_filters_timeout".to_owned(), t);
        }
        if continue_on_timeout {
            m.insert(
                "continue_on_listener_filters_timeout".to_owned(),
                json!(true),
            );
        }
    }
    if let Some(chain) = default_chain {
        let d_at = at.field("default_filter_chain");
        if chain.filter_chain_match.is_some() {
            return Err(d_at
                .field("filter_chain_match")
                .error("unsupported (the default chain takes what no other chain matches)"));
        }
        let (key, filter, tls) = filter_chain(chain, &d_at, routes, secrets, notes)?;
        m.insert(key.to_owned(), filter);
        if let Some(tls) = tls {
            m.insert("tls".to_owned(), tls);
        }
    }
    Ok(v)
}

/// Whether a chain, not only for TLS, lists an application protocol only the HTTP sniff of a
/// plaintext connection gives.
fn lists_sniffable_protocol(c: &FilterChain) -> bool {
    c.filter_chain_match.as_ref().is_some_and(|m| {
        m.transport_protocol != "tls"
            && m.application_protocols
                .iter()
                .any(|p| PLAINTEXT_PROTOCOLS.contains(&p.as_str()))
    })
}

/// A chain's `filter_chain_match` as the config writes it (`None`: no criterion). Fields
/// other than `destination_port`, `server_names`, `transport_protocol` (`tls`, `raw_buffer`)
/// and `application_protocols` are refused by path.
fn chain_match(m: Option<&FilterChainMatch>, at: &At<'_>) -> Result<Option<Value>, TranslateError> {
    let Some(m) = m else { return Ok(None) };
    let m_at = at.field("filter_chain_match");
    let mut m = m.clone();
    let port = take(&mut m.destination_port).map(|p| json!(p.value));
    let names = take(&mut m.server_names);
    let protocol = match take(&mut m.transport_protocol).as_str() {
        "" => None,
        p @ ("tls" | "raw_buffer") => Some(json!(p)),
        other => {
            return Err(m_at.field("transport_protocol").error(format!(
                "{other:?} is unsupported (only \"tls\" and \"raw_buffer\")"
            )));
        }
    };
    let alpn = take(&mut m.application_protocols);
    reject_rest(&m, &m_at)?;
    let v = object([
        ("destination_port", port),
        ("server_names", (!names.is_empty()).then(|| json!(names))),
        ("transport_protocol", protocol),
        (
            "application_protocols",
            (!alpn.is_empty()).then(|| json!(alpn)),
        ),
    ]);
    Ok((v != json!({})).then_some(v))
}

/// Several filter chains chosen by `filter_chain_match.server_names`, each a `tcp_proxy`
/// without TLS (passed through): a `tcp_proxy` with `sni_routes`, whose `cluster` is the chain
/// without a match (required: Sluice sends a connection no name matches there, where Envoy
/// would close it). The chains' tcp_proxy settings other than the cluster must agree (one
/// tcp_proxy per listener here). `timeout`: `listener_filters_timeout`, the ClientHello wait.
fn sni_passthrough(
    chains: &[FilterChain],
    at: &At<'_>,
    routes: &BTreeMap<String, RouteConfiguration>,
    secrets: &super::Secrets<'_>,
    timeout: Option<Value>,
    notes: &mut Notes,
) -> Result<Value, TranslateError> {
    let mut default: Option<Value> = None;
    let mut sni_routes = Vec::new();
    let mut settings: Option<(usize, Value)> = None;
    for (i, chain) in chains.iter().enumerate() {
        let c_at = at.field("filter_chains").index(i);
        let mut chain = chain.clone();
        let names = match take(&mut chain.filter_chain_match) {
            None => Vec::new(),
            Some(mut m) => {
                let m_at = c_at.field("filter_chain_match");
                let names = take(&mut m.server_names);
                let protocol = take(&mut m.transport_protocol);
                if !protocol.is_empty() && (protocol != "tls" || names.is_empty()) {
                    return Err(m_at
                        .field("transport_protocol")
                        .error("unsupported (only \"tls\", beside server_names)"));
                }
                reject_rest(&m, &m_at)?;
                names
            }
        };
        if chain.transport_socket.is_some() {
            return Err(c_at.field("transport_socket").error(
                "unsupported on one of several filter chains (chains by server name are passed \
                 through to their cluster, not terminated)",
            ));
        }
        let (key, mut value, _) = filter_chain(&chain, &c_at, routes, secrets, notes)?;
        if key != "tcp_proxy" {
            return Err(c_at.field("filters").error(
                "unsupported: with several filter chains, each is a tcp_proxy (TLS passthrough \
                 by server name)",
            ));
        }
        let cluster = value
            .as_object_mut()
            .and_then(|m| m.remove("cluster"))
            .unwrap_or(Value::Null);
        match &settings {
            None => settings = Some((i, value)),
            Some((first, v)) if *v != value => {
                return Err(c_at.field("filters").error(format!(
                    "tcp_proxy settings other than the cluster differ from filter_chains[{first}]'s \
                     (one tcp_proxy per listener)"
                )));
            }
            Some(_) => {}
        }
        if names.is_empty() {
            if default.is_some() {
                return Err(c_at
                    .field("filter_chain_match")
                    .error("a second filter chain without server_names"));
            }
            default = Some(cluster);
        } else {
            sni_routes.push(json!({ "server_names": names, "cluster": cluster }));
        }
    }
    let Some(cluster) = default else {
        return Err(at.field("filter_chains").error(
            "no filter chain without filter_chain_match: Sluice sends a connection that names \
             no listed server (or is not TLS) to that chain's cluster, where Envoy would close it",
        ));
    };
    let mut tcp = settings.map(|(_, v)| v).unwrap_or_else(|| json!({}));
    if let Value::Object(m) = &mut tcp {
        m.insert("cluster".to_owned(), cluster);
        m.insert("sni_routes".to_owned(), Value::Array(sni_routes));
        if let Some(t) = timeout {
            m.insert("client_hello_timeout".to_owned(), t);
        }
    }
    Ok(tcp)
}

/// A filter chain: its terminal filter (key and value) and its TLS (`tls` of the listener).
fn filter_chain(
    chain: &FilterChain,
    at: &At<'_>,
    routes: &BTreeMap<String, RouteConfiguration>,
    secrets: &super::Secrets<'_>,
    notes: &mut Notes,
) -> Result<(&'static str, Value, Option<Value>), TranslateError> {
    let mut rest = chain.clone();
    for (set, field) in [
        (!take(&mut rest.name).is_empty(), "name"),
        (take(&mut rest.metadata).is_some(), "metadata"),
    ] {
        if set {
            at.note(notes, field);
        }
    }
    if let Some(m) = take(&mut rest.filter_chain_match) {
        reject_rest(&m, &at.field("filter_chain_match"))?;
    }
    let mut tls = take(&mut rest.transport_socket)
        .map(|ts| super::tls::downstream_tls(&ts, &at.field("transport_socket"), secrets))
        .transpose()?;
    let filters = take(&mut rest.filters);
    reject_rest(&rest, at)?;
    let mut terminal = None;
    for (i, f) in filters.iter().enumerate() {
        let f_at = at.field("filters").index(i);
        let named = At {
            path: format!("{} ({})", f_at.path, f.name),
            ..f_at.clone()
        };
        let any = match &f.config_type {
            Some(filter::ConfigType::TypedConfig(any)) => any,
            Some(filter::ConfigType::ConfigDiscovery(_)) => {
                return Err(named.error("unsupported (config_discovery)"));
            }
            None => return Err(named.error("unsupported (no typed_config)")),
        };
        if terminal.is_some() {
            return Err(named.error("unsupported (after the terminal filter)"));
        }
        let is_terminal = any.type_url == HttpConnectionManager::type_url()
            || any.type_url == TcpProxy::type_url();
        if !is_terminal {
            // Istio's metadata exchange, stats, and RBAC that denies nothing: ignored, noted.
            super::network_filters::before_terminal(any, &named, notes)?;
            continue;
        }
        terminal = Some(if any.type_url == HttpConnectionManager::type_url() {
            let hcm: HttpConnectionManager = unpack(any, &named)?;
            (
                "http",
                http(hcm, &f_at.field("typed_config"), routes, notes)?,
            )
        } else {
            let tcp: TcpProxy = unpack(any, &named)?;
            (
                "tcp_proxy",
                tcp_proxy(tcp, &f_at.field("typed_config"), notes)?,
            )
        });
    }
    let (key, value) = terminal.ok_or_else(|| {
        at.field("filters")
            .error("no http_connection_manager or tcp_proxy")
    })?;
    // With the exchange filter or without, a client that agreed on its ALPN would write its
    // metadata header into the stream.
    never_negotiate_metadata_exchange(tls.as_mut(), key == "tcp_proxy", at, notes);
    Ok((key, value, tls))
}

/// A chain never negotiates Istio's metadata-exchange ALPN: with `istio-peer-exchange` agreed,
/// the client's filter would write its metadata header into the stream and wait for ours,
/// which Sluice does not speak (see [`super::network_filters`]). That ALPN is dropped from the
/// chain's TLS offer and, on a TCP chain (`tcp`), `istio` (which Istio's clients offer beside
/// it) is offered in its place when missing, so a mesh client still agrees on one; noted.
fn never_negotiate_metadata_exchange(
    tls: Option<&mut Value>,
    tcp: bool,
    at: &At<'_>,
    notes: &mut Notes,
) {
    let Some(alpn) = tls
        .and_then(|t| t.get_mut("alpn"))
        .and_then(Value::as_array_mut)
    else {
        return;
    };
    let before = alpn.len();
    alpn.retain(|p| p != "istio-peer-exchange");
    if alpn.len() == before {
        return;
    }
    // A TCP chain offers `istio` in its place (a mesh client offers both); an HTTP chain
    // offers only what its codec serves.
    if tcp && !alpn.iter().any(|p| p == "istio") {
        alpn.insert(0, json!("istio"));
    }
    at.note(
        notes,
        "transport_socket alpn_protocols istio-peer-exchange (replaced by istio: no metadata exchange)",
    );
}

fn http(
    mut h: HttpConnectionManager,
    at: &At<'_>,
    routes: &BTreeMap<String, RouteConfiguration>,
    notes: &mut Notes,
) -> Result<Value, TranslateError> {
    for (set, field) in [
        (!take(&mut h.stat_prefix).is_empty(), "stat_prefix"),
        (!take(&mut h.access_log).is_empty(), "access_log"),
        (
            take(&mut h.access_log_options).is_some(),
            "access_log_options",
        ),
        (take(&mut h.tracing).is_some(), "tracing"),
    ] {
        if set {
            at.note(notes, field);
        }
    }
    let codec = match CodecType::try_from(take(&mut h.codec_type)) {
        Ok(CodecType::Auto) => None,
        Ok(CodecType::Http1) => Some(json!("http1")),
        Ok(CodecType::Http2) => Some(json!("http2")),
        _ => {
            return Err(at
                .field("codec_type")
                .error("only AUTO, HTTP1 and HTTP2 are supported"));
        }
    };
    // Envoy sets x-forwarded-proto from the connection only at the edge
    // (`use_remote_address: true`); otherwise the client's value passes (`preserve`, which
    // still sets it when absent).
    let forwarded_proto = if take(&mut h.use_remote_address).is_some_and(|b| b.value) {
        "overwrite"
    } else {
        "preserve"
    };
    let max_kb = take(&mut h.max_request_headers_kb).map(|v| json!(v.value));
    let stream_idle = take(&mut h.stream_idle_timeout)
        .map(|d| duration(&d, &at.field("stream_idle_timeout")))
        .transpose()?;
    let headers_timeout = take(&mut h.request_headers_timeout)
        .map(|d| duration(&d, &at.field("request_headers_timeout")))
        .transpose()?;
    let (idle, max_headers) = match take(&mut h.common_http_protocol_options) {
        None => (None, None),
        Some(mut o) => {
            let o_at = at.field("common_http_protocol_options");
            let idle = take(&mut o.idle_timeout)
                .map(|d| duration(&d, &o_at.field("idle_timeout")))
                .transpose()?;
            let max_headers = take(&mut o.max_headers_count).map(|n| json!(n.value));
            reject_rest::<HttpProtocolOptions>(&o, &o_at)?;
            (idle, max_headers)
        }
    };
    let http2 = take(&mut h.http2_protocol_options)
        .map(|o| http2_options(o, &at.field("http2_protocol_options")))
        .transpose()?
        .flatten();
    let normalize = take(&mut h.normalize_path).map(|b| json!(b.value));
    let merge = take(&mut h.merge_slashes).then(|| json!(true));
    let escaped =
        match PathWithEscapedSlashesAction::try_from(take(&mut h.path_with_escaped_slashes_action))
        {
            Ok(PathWithEscapedSlashesAction::ImplementationSpecificDefault) => None,
            Ok(PathWithEscapedSlashesAction::KeepUnchanged) => Some(json!("keep_unchanged")),
            Ok(PathWithEscapedSlashesAction::RejectRequest) => Some(json!("reject_request")),
            Ok(PathWithEscapedSlashesAction::UnescapeAndForward) => {
                Some(json!("unescape_and_forward"))
            }
            _ => {
                return Err(at
                    .field("path_with_escaped_slashes_action")
                    .error("UNESCAPE_AND_REDIRECT is unsupported"));
            }
        };
    request_id(&mut h, at, notes)?;
    // Envoy writes `server: envoy` when `server_name` is empty; Sluice then leaves the
    // upstream's alone (documented).
    let server_name = take(&mut h.server_name);
    let server_transformation =
        match ServerHeaderTransformation::try_from(take(&mut h.server_header_transformation)) {
            Ok(ServerHeaderTransformation::Overwrite) => "overwrite",
            Ok(ServerHeaderTransformation::AppendIfAbsent) => "append_if_absent",
            Ok(ServerHeaderTransformation::PassThrough) => "pass_through",
            Err(_) => {
                return Err(at
                    .field("server_header_transformation")
                    .error("not a ServerHeaderTransformation value"));
            }
        };
    let (server_name, server_transformation) = if server_name.is_empty() {
        (None, None)
    } else {
        (Some(json!(server_name)), Some(json!(server_transformation)))
    };
    let upgrade_types = upgrade_types(take(&mut h.upgrade_configs), at)?;
    let forward_client_cert =
        match ForwardClientCertDetails::try_from(take(&mut h.forward_client_cert_details)) {
            Ok(ForwardClientCertDetails::Sanitize) => None,
            Ok(ForwardClientCertDetails::ForwardOnly) => Some(json!("forward_only")),
            Ok(ForwardClientCertDetails::AppendForward) => Some(json!("append_forward")),
            Ok(ForwardClientCertDetails::SanitizeSet) => Some(json!("sanitize_set")),
            Ok(ForwardClientCertDetails::AlwaysForwardOnly) => Some(json!("always_forward_only")),
            Err(_) => {
                return Err(at
                    .field("forward_client_cert_details")
                    .error("not a ForwardClientCertDetails value"));
            }
        };
    let cert_details = take(&mut h.set_current_client_cert_details)
        .map(|mut d| {
            let d_at = at.field("set_current_client_cert_details");
            let subject = take(&mut d.subject).is_some_and(|b| b.value);
            let cert = take(&mut d.cert);
            let chain = take(&mut d.chain);
            let uri = take(&mut d.uri);
            let dns = take(&mut d.dns);
            // `issuer` and another `format` are not written here.
            reject_rest(&d, &d_at)?;
            Ok(json!({ "cert": cert, "chain": chain, "subject": subject, "uri": uri, "dns": dns }))
        })
        .transpose()?;
    let filters = take(&mut h.http_filters);
    let route_specifier = take(&mut h.route_specifier);
    reject_rest(&h, at)?;
    let f_at = at.field("http_filters");
    let mut router = false;
    let mut strip_peer_metadata = false;
    for (i, mut f) in filters.into_iter().enumerate() {
        let named = At {
            path: format!("{}[{i}] ({})", f_at.path, f.name),
            ..f_at.clone()
        };
        if router {
            return Err(named.error("unsupported (after the router filter)"));
        }
        let any = match take(&mut f.config_type) {
            Some(http_filter::ConfigType::TypedConfig(any)) => Some(any),
            Some(http_filter::ConfigType::ConfigDiscovery(_)) => None,
            None => None,
        };
        if any
            .as_ref()
            .is_some_and(|a| a.type_url == Router::type_url())
        {
            let mut r: Router = unpack(any.as_ref().unwrap_or(&Default::default()), &named)?;
            take(&mut r.dynamic_stats);
            #[allow(deprecated)]
            take(&mut r.start_child_span);
            take(&mut r.upstream_log);
            take(&mut r.upstream_log_options);
            reject_rest(&r, &named)?;
            router = true;
        } else if f.is_optional || f.disabled {
            named.note(notes, "");
        } else if let Some(any) = &any
            && let Some(accepted) = super::http_filters::no_op(any, &named, notes)?
        {
            // grpc_stats, Istio's stats, an empty cors or fault: noted; Istio's metadata
            // exchange: noted, its headers removed below.
            strip_peer_metadata |= accepted == super::http_filters::Accepted::StripsPeerMetadata;
        } else {
            return Err(named.unsupported());
        }
    }
    if !router {
        return Err(f_at.error("the last filter must be the router (envoy.filters.http.router)"));
    }
    let mut virtual_hosts = match route_specifier {
        Some(RouteSpecifier::Rds(mut rds)) => {
            let r_at = at.field("rds");
            if let Some(s) = take(&mut rds.config_source) {
                config_source(&s, &r_at.field("config_source"))?;
            }
            let name = take(&mut rds.route_config_name);
            reject_rest(&rds, &r_at)?;
            let Some(rc) = routes.get(&name) else {
                return Err(r_at.error(format!("route_configuration {name:?} not received")));
            };
            translate_route_configuration(rc, notes)?
        }
        Some(RouteSpecifier::RouteConfig(rc)) => translate_route_configuration(&rc, notes)
            .map_err(|mut e| {
                // Inline: the error belongs to the listener.
                e.path = format!("{}.route_config.{}", at.path, e.path);
                e.kind = ResourceType::Listener;
                e.name = at.name.to_owned();
                e
            })?,
        Some(RouteSpecifier::ScopedRoutes(_)) => {
            return Err(at.field("scoped_routes").unsupported());
        }
        None => return Err(at.error("no routes (rds or route_config)")),
    };
    if strip_peer_metadata {
        super::http_filters::strip_peer_metadata(&mut virtual_hosts);
    }
    Ok(object([
        ("codec", codec),
        ("forwarded_proto", Some(json!(forwarded_proto))),
        ("max_request_headers_kb", max_kb),
        ("max_headers_count", max_headers),
        ("stream_idle_timeout", stream_idle),
        ("request_headers_timeout", headers_timeout),
        ("idle_timeout", idle),
        ("normalize_path", normalize),
        ("merge_slashes", merge),
        ("path_with_escaped_slashes_action", escaped),
        ("upgrade_types", Some(upgrade_types)),
        ("server_name", server_name),
        ("server_header_transformation", server_transformation),
        ("forward_client_cert", forward_client_cert),
        ("set_current_client_cert_details", cert_details),
        ("http2", http2),
        ("virtual_hosts", Some(Value::Array(virtual_hosts))),
    ]))
}

/// `generate_request_id` (unset or true: Sluice generates an `x-request-id` when the request
/// has none, a UUID v4, as Envoy's UUID extension does; false is refused) and
/// `request_id_extension` (the UUID extension only; its `pack_trace_reason` and
/// `use_request_id_for_trace_sampling` concern tracing, which an xDS listener does not do
/// here — `tracing` is noted —, so they are noted), taken.
fn request_id(
    h: &mut HttpConnectionManager,
    at: &At<'_>,
    notes: &mut Notes,
) -> Result<(), TranslateError> {
    if take(&mut h.generate_request_id).is_some_and(|b| !b.value) {
        return Err(at
            .field("generate_request_id")
            .error("false is unsupported (an x-request-id is always generated when absent)"));
    }
    let Some(mut ext) = take(&mut h.request_id_extension) else {
        return Ok(());
    };
    let e_at = at.field("request_id_extension");
    let typed = take(&mut ext.typed_config);
    reject_rest(&ext, &e_at)?;
    let Some(any) = typed else {
        return Ok(());
    };
    let t_at = e_at.field("typed_config");
    let mut uuid: UuidRequestIdConfig = unpack(&any, &t_at).map_err(|_| {
        t_at.error(format!(
            "{:?} is unsupported (only the UUID extension)",
            any.type_url
        ))
    })?;
    take(&mut uuid.pack_trace_reason);
    take(&mut uuid.use_request_id_for_trace_sampling);
    reject_rest(&uuid, &t_at)?;
    at.note(
        notes,
        "request_id_extension (UUID: pack_trace_reason, use_request_id_for_trace_sampling not applied)",
    );
    Ok(())
}

/// `upgrade_configs` → `upgrade_types`: the types enabled (`enabled` unset or true), lowercase.
/// Without any, Envoy upgrades nothing: `[]` (the YAML default, every type, is not Envoy's).
/// A custom `filters` chain, and `CONNECT` (not an `Upgrade` value), are refused by path.
fn upgrade_types(configs: Vec<UpgradeConfig>, at: &At<'_>) -> Result<Value, TranslateError> {
    let u_at = at.field("upgrade_configs");
    let mut types: Vec<String> = Vec::new();
    for (i, mut u) in configs.into_iter().enumerate() {
        let i_at = u_at.index(i);
        let name = take(&mut u.upgrade_type).to_ascii_lowercase();
        let enabled = take(&mut u.enabled).is_none_or(|b| b.value);
        reject_rest(&u, &i_at)?;
        if name.eq_ignore_ascii_case("connect") {
            return Err(i_at.field("upgrade_type").error("CONNECT is unsupported"));
        }
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
        {
            return Err(i_at
                .field("upgrade_type")
                .error(format!("{name:?} is not an upgrade token")));
        }
        if enabled && !types.contains(&name) {
            types.push(name);
        }
    }
    Ok(json!(types))
}

/// An HCM's `http2_protocol_options` → the listener's `http2`: its `connection_keepalive`
/// (`interval`, `timeout`, `interval_jitter`; without a periodic `interval` Envoy sends no
/// PING, so none); every other field, the keepalive's idle interval included, is refused by
/// path.
fn http2_options(
    mut o: Http2ProtocolOptions,
    at: &At<'_>,
) -> Result<Option<Value>, TranslateError> {
    let keepalive = take(&mut o.connection_keepalive);
    reject_rest(&o, at)?;
    let Some(mut k) = keepalive else {
        return Ok(None);
    };
    let k_at = at.field("connection_keepalive");
    let interval = take(&mut k.interval);
    let timeout = take(&mut k.timeout);
    let jitter = take(&mut k.interval_jitter);
    reject_rest::<KeepaliveSettings>(&k, &k_at)?;
    let positive = |d: Option<envoy_types::pb::google::protobuf::Duration>, field: &str| {
        let f_at = k_at.field(field);
        match d {
            Some(d) if d.seconds > 0 || d.nanos > 0 => duration(&d, &f_at),
            _ => Err(f_at.error("must be set and above zero")),
        }
    };
    if interval.is_none_or(|d| d.seconds == 0 && d.nanos == 0) {
        return Ok(None);
    }
    let interval = positive(interval, "interval")?;
    let timeout = positive(timeout, "timeout")?;
    let jitter = super::keepalive_jitter(jitter, &k_at)?;
    Ok(Some(json!({ "connection_keepalive": {
        "interval": interval, "timeout": timeout, "interval_jitter_percent": jitter
    } })))
}

fn tcp_proxy(mut t: TcpProxy, at: &At<'_>, notes: &mut Notes) -> Result<Value, TranslateError> {
    for (set, field) in [
        (!take(&mut t.stat_prefix).is_empty(), "stat_prefix"),
        (!take(&mut t.access_log).is_empty(), "access_log"),
        (
            take(&mut t.access_log_options).is_some(),
            "access_log_options",
        ),
    ] {
        if set {
            at.note(notes, field);
        }
    }
    let cluster = match take(&mut t.cluster_specifier) {
        Some(ClusterSpecifier::Cluster(c)) => c,
        Some(ClusterSpecifier::WeightedClusters(_)) => {
            return Err(at.field("weighted_clusters").unsupported());
        }
        None => return Err(at.error("no cluster")),
    };
    let idle = take(&mut t.idle_timeout)
        .map(|d| duration(&d, &at.field("idle_timeout")))
        .transpose()?;
    let attempts = take(&mut t.max_connect_attempts).map(|v| json!(v.value));
    reject_rest(&t, at)?;
    Ok(object([
        ("cluster", Some(json!(cluster))),
        ("idle_timeout", idle),
        ("max_connect_attempts", attempts),
    ]))
}
