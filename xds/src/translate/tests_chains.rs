//! Filter chains matched on destination port, transport protocol and ALPN, each with its own
//! TLS and filter: Istio's inbound listener (`virtualInbound`) → `filter_chains`.

use envoy_types::pb::envoy::config::cluster::v3::{
    Cluster, cluster::ClusterDiscoveryType, cluster::DiscoveryType, cluster::LbPolicy,
};
use envoy_types::pb::envoy::config::core::v3::CidrRange;
use envoy_types::pb::envoy::config::listener::v3::{
    FilterChain, FilterChainMatch, ListenerFilter, listener_filter,
};
use envoy_types::pb::envoy::extensions::filters::listener::original_dst::v3::OriginalDst;
use envoy_types::pb::envoy::extensions::filters::listener::tls_inspector::v3::TlsInspector;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::http_connection_manager::RouteSpecifier;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    DownstreamTlsContext, common_tls_context::ValidationContextType,
};
use envoy_types::pb::google::protobuf::{BoolValue, Duration as PbDuration, UInt32Value};
use serde_json::json;
use sluice_core::config::{ListenerFilter as Filter, TransportProtocol};

use super::tests_tls::pki;
use super::*;
use crate::fixtures::*;

const INBOUND: &str = "inbound|8080||";
const PASSTHROUGH: &str = "InboundPassthroughClusterIpv4";

/// What istiod sends a sidecar for a workload port 8080 in PERMISSIVE mode, in the shape of
/// `virtualInbound`: on 0.0.0.0:15006, `original_dst` and `tls_inspector` listener filters,
/// `continue_on_listener_filters_timeout`; for port 8080 a chain for mTLS from other sidecars
/// (`transport_protocol: tls`, Istio's ALPN, the workload certificate, client certificates
/// required and checked against the mesh root) and one for plaintext (`raw_buffer`), both an
/// HTTP connection manager to `inbound|8080||`; and the passthrough chain to the original
/// destination for every other port.
fn virtual_inbound() -> Resources {
    let (ca, chain, key) = pki(&["app.default.svc.cluster.local"]);
    virtual_inbound_with(&ca, &chain, &key)
}

/// [`virtual_inbound`] with this PKI (the fuzz corpus needs fixed bytes).
pub(crate) fn virtual_inbound_with(ca: &str, chain: &str, key: &str) -> Resources {
    let mut r = Resources::default();
    r.secrets
        .insert("default".into(), certificate_secret("default", chain, key));
    r.secrets.insert("ROOTCA".into(), ca_secret("ROOTCA", ca));
    r.clusters.insert(
        INBOUND.into(),
        static_cluster(
            INBOUND,
            &[(
                "127.0.0.1",
                8080,
                envoy_types::pb::envoy::config::core::v3::HealthStatus::Healthy as i32,
            )],
        ),
    );
    r.clusters.insert(
        PASSTHROUGH.into(),
        Cluster {
            name: PASSTHROUGH.into(),
            cluster_discovery_type: Some(ClusterDiscoveryType::Type(
                DiscoveryType::OriginalDst as i32,
            )),
            lb_policy: LbPolicy::ClusterProvided as i32,
            connect_timeout: Some(PbDuration {
                seconds: 10,
                nanos: 0,
            }),
            ..Default::default()
        },
    );
    let hcm_chain = |m: FilterChainMatch| {
        let mut c: FilterChain = http_listener_with(
            "virtualInbound",
            "0.0.0.0",
            15006,
            RouteSpecifier::RouteConfig(route_config("inbound|8080||", INBOUND)),
        )
        .filter_chains[0]
            .clone();
        c.name = "0.0.0.0_8080".into();
        c.filter_chain_match = Some(m);
        c
    };
    let mut mtls = hcm_chain(FilterChainMatch {
        destination_port: Some(UInt32Value { value: 8080 }),
        transport_protocol: "tls".into(),
        application_protocols: vec![
            "istio-peer-exchange".into(),
            "istio".into(),
            "istio-http/1.0".into(),
            "istio-http/1.1".into(),
            "istio-h2".into(),
        ],
        ..Default::default()
    });
    let mut ctx: DownstreamTlsContext = downstream_tls_sds("default");
    ctx.require_client_certificate = Some(BoolValue { value: true });
    let common = ctx.common_tls_context.as_mut().unwrap();
    common.alpn_protocols = vec!["h2".into(), "http/1.1".into()];
    common.validation_context_type = Some(ValidationContextType::ValidationContextSdsSecretConfig(
        sds("ROOTCA"),
    ));
    mtls.transport_socket = Some(tls_socket(&ctx));
    let plaintext = hcm_chain(FilterChainMatch {
        destination_port: Some(UInt32Value { value: 8080 }),
        transport_protocol: "raw_buffer".into(),
        ..Default::default()
    });
    let mut passthrough =
        tcp_listener("virtualInbound", "0.0.0.0", 15006, PASSTHROUGH).filter_chains[0].clone();
    passthrough.name = "virtualInbound".into();
    let mut l = tcp_listener("virtualInbound", "0.0.0.0", 15006, PASSTHROUGH);
    l.filter_chains = vec![mtls, plaintext, passthrough];
    l.listener_filters = vec![
        ListenerFilter {
            name: "envoy.filters.listener.original_dst".into(),
            config_type: Some(listener_filter::ConfigType::TypedConfig(any(
                &OriginalDst {},
            ))),
            ..Default::default()
        },
        ListenerFilter {
            name: "envoy.filters.listener.tls_inspector".into(),
            config_type: Some(listener_filter::ConfigType::TypedConfig(any(
                &TlsInspector::default(),
            ))),
            ..Default::default()
        },
    ];
    l.continue_on_listener_filters_timeout = true;
    l.traffic_direction = 1; // INBOUND
    r.listeners.insert("virtualInbound".into(), l);
    r
}

fn bootstrap() -> Value {
    json!({ "listeners": [], "clusters": [] })
}

#[test]
fn istios_permissive_inbound_listener_becomes_filter_chains() {
    let r = virtual_inbound();
    let a = assemble(&bootstrap(), &r).expect("accepted");
    let l = &a.config.listeners[0];
    assert_eq!(l.name, "virtualInbound");
    assert_eq!(
        l.original_dst,
        Some(sluice_core::config::OriginalDst::Redirect)
    );
    assert!(l.continue_on_listener_filters_timeout);
    // No default_filter_chain: what no chain takes is closed.
    assert!(matches!(l.filter, Filter::Close));
    assert_eq!(l.filter_chains.len(), 3);
    let [mtls, plain, pass] = &l.filter_chains[..] else {
        unreachable!()
    };
    assert_eq!(mtls.filter_chain_match.destination_port, Some(8080));
    assert_eq!(
        mtls.filter_chain_match.transport_protocol,
        Some(TransportProtocol::Tls)
    );
    assert_eq!(
        mtls.filter_chain_match.application_protocols[..2],
        ["istio-peer-exchange", "istio"]
    );
    let tls = mtls.tls.as_deref().expect("the mTLS chain terminates TLS");
    assert!(tls.client_ca.is_some() && tls.require_client_certificate);
    assert_eq!(tls.alpn, ["h2", "http/1.1"]);
    assert!(matches!(mtls.filter, Filter::Http(_)));
    assert_eq!(
        plain.filter_chain_match.transport_protocol,
        Some(TransportProtocol::RawBuffer)
    );
    assert!(plain.tls.is_none() && matches!(plain.filter, Filter::Http(_)));
    assert!(pass.filter_chain_match.is_empty() && pass.tls.is_none());
    let Filter::TcpProxy(tp) = &pass.filter else {
        panic!("{:?}", pass.filter)
    };
    assert_eq!(tp.cluster, PASSTHROUGH);

    // The chain the runtime picks for each kind of connection.
    use sluice_core::filter_chain::{ConnectionFacts, select};
    let istio = [b"istio-peer-exchange".to_vec(), b"h2".to_vec()];
    let pick = |port, tls, alpn: &[Vec<u8>]| {
        select(
            &l.filter_chains,
            &ConnectionFacts {
                destination_port: port,
                tls,
                server_name: Some("outbound_.8080_._.app.default.svc.cluster.local"),
                alpn,
                plaintext_protocol: None,
            },
        )
    };
    assert_eq!(pick(8080, true, &istio), Some(0), "mTLS from a sidecar");
    assert_eq!(
        pick(8080, false, &[]),
        Some(1),
        "plaintext from outside the mesh"
    );
    assert_eq!(
        pick(9090, false, &[]),
        Some(2),
        "another port: passed through"
    );
    // Port 8080 prunes the passthrough chain: TLS without Istio's ALPN matches nothing.
    assert_eq!(pick(8080, true, &[b"h2".to_vec()]), None);

    // Istio's passthrough chain as older istiod writes it, with a `prefix_ranges`
    // (0.0.0.0/0): a field the model lacks, refused by path.
    let mut r = virtual_inbound();
    r.listeners.get_mut("virtualInbound").unwrap().filter_chains[2].filter_chain_match =
        Some(FilterChainMatch {
            prefix_ranges: vec![CidrRange {
                address_prefix: "0.0.0.0".into(),
                prefix_len: Some(UInt32Value { value: 0 }),
            }],
            ..Default::default()
        });
    let e: Vec<String> = assemble(&bootstrap(), &r)
        .expect_err("refused")
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        e,
        [
            "listener \"virtualInbound\" filter_chains[2].filter_chain_match.prefix_ranges: unsupported"
        ]
    );
}

#[test]
fn a_default_filter_chain_is_the_listeners_own_filter() {
    let mut r = virtual_inbound();
    let l = r.listeners.get_mut("virtualInbound").unwrap();
    let pass = l.filter_chains.pop().unwrap();
    l.default_filter_chain = Some(pass);
    let a = assemble(&bootstrap(), &r).expect("accepted");
    let l = &a.config.listeners[0];
    assert_eq!(l.filter_chains.len(), 2);
    let Filter::TcpProxy(tp) = &l.filter else {
        panic!("{:?}", l.filter)
    };
    assert_eq!(tp.cluster, PASSTHROUGH);
    // A match on the default chain means nothing in Envoy: refused by path.
    let mut r = virtual_inbound();
    let l = r.listeners.get_mut("virtualInbound").unwrap();
    let mut pass = l.filter_chains.pop().unwrap();
    pass.filter_chain_match = Some(FilterChainMatch {
        destination_port: Some(UInt32Value { value: 1 }),
        ..Default::default()
    });
    l.default_filter_chain = Some(pass);
    let e: Vec<String> = assemble(&bootstrap(), &r)
        .expect_err("refused")
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(
        e[0].starts_with(
            "listener \"virtualInbound\" default_filter_chain.filter_chain_match: unsupported"
        ),
        "{e:?}"
    );
}
