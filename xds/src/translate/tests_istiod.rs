//! istiod's own `virtualInbound` (the fixture [`crate::fixtures::istiod`], written from
//! istiod's generator, PERMISSIVE, one HTTP port) → `filter_chains`; the chain each kind of
//! inbound connection gets; and what of it is refused by path when changed.

use envoy_types::pb::envoy::config::listener::v3::{
    Filter, ListenerFilterChainMatchPredicate, filter,
    listener_filter_chain_match_predicate::{MatchSet, Rule},
};
use envoy_types::pb::envoy::config::rbac::v3::{
    Permission, Policy, Principal, Rbac as RbacRules, permission, principal, rbac::Action,
};
use envoy_types::pb::envoy::extensions::filters::network::rbac::v3::Rbac;
use envoy_types::pb::envoy::extensions::filters::network::wasm::v3::Wasm;
use envoy_types::pb::envoy::extensions::wasm::v3::PluginConfig;
use envoy_types::pb::envoy::r#type::v3::Int32Range;
use envoy_types::pb::google::protobuf::Any;
use serde_json::json;
use sluice_core::config::http::{ClusterTarget, ForwardAction, RouteAction};
use sluice_core::config::{InspectorPorts, ListenerFilter as Filt, PortRange, TransportProtocol};
use sluice_core::detect::sniff_http;
use sluice_core::filter_chain::{ConnectionFacts, needs_client_hello, needs_http_sniff, select};
use sluice_core::http2::PREFACE;

use super::tests_tls::pki;
use super::*;
use crate::fixtures::any;
use crate::fixtures::istiod::{self, BLACKHOLE, INBOUND, PASSTHROUGH};

fn resources() -> Resources {
    let (ca, chain, key) = pki(&["app.default.svc.cluster.local"]);
    istiod::virtual_inbound(&ca, &chain, &key, ("127.0.0.1", 8080))
}

/// The bootstrap an Istio user writes: the management server, and the agent's SDS server
/// (`sds-grpc`) on its Unix socket, which istiod's TLS contexts name.
fn bootstrap() -> Value {
    json!({
        "xds": {
            "cluster": "xds-grpc",
            "sds_sources": [
                { "name": "sds-grpc", "path": "./var/run/secrets/workload-spiffe-uds/socket" }
            ],
        },
        "listeners": [],
        "clusters": [ { "name": "xds-grpc", "hosts": [ { "address": "127.0.0.1:15010" } ] } ],
    })
}

fn errors(r: &Resources) -> Vec<String> {
    assemble(&bootstrap(), r)
        .expect_err("refused")
        .iter()
        .map(ToString::to_string)
        .collect()
}

fn listener(r: &mut Resources) -> &mut envoy_types::pb::envoy::config::listener::v3::Listener {
    r.listeners.get_mut("virtualInbound").unwrap()
}

#[test]
fn istiods_virtual_inbound_translates_to_its_chains() {
    let a = assemble(&bootstrap(), &resources()).expect("istiod's virtualInbound accepted");
    let l = &a.config.listeners[0];
    assert_eq!(l.name, "virtualInbound");
    assert_eq!(l.address.port(), 15006);
    assert_eq!(
        l.original_dst,
        Some(sluice_core::config::OriginalDst::Redirect)
    );
    assert!(l.continue_on_listener_filters_timeout);
    assert_eq!(
        l.listener_filters_timeout,
        std::time::Duration::ZERO,
        "0s: no limit"
    );
    let one = |p| PortRange { first: p, last: p };
    assert_eq!(
        l.tls_inspector,
        InspectorPorts::ExceptPorts(vec![one(15006)])
    );
    assert_eq!(
        l.http_inspector,
        InspectorPorts::ExceptPorts(vec![one(8080), one(15006)])
    );
    assert!(matches!(l.filter, Filt::Close), "no default chain");

    // Each chain: port, transport, ALPN, TLS, filter and cluster.
    let tls = TransportProtocol::Tls;
    let raw = Some(TransportProtocol::RawBuffer);
    // (destination port, transport protocol, ALPN, terminates TLS, cluster)
    type Want<'a> = (
        Option<u16>,
        Option<TransportProtocol>,
        &'a [&'a str],
        bool,
        &'a str,
    );
    let want: [Want<'_>; 8] = [
        (Some(15006), None, &[], false, BLACKHOLE),
        (
            None,
            Some(tls),
            &["istio-http/1.0", "istio-http/1.1", "istio-h2"],
            true,
            PASSTHROUGH,
        ),
        (None, raw, &["http/1.1", "h2c"], false, PASSTHROUGH),
        (
            None,
            Some(tls),
            &["istio-peer-exchange", "istio"],
            true,
            PASSTHROUGH,
        ),
        (None, raw, &[], false, PASSTHROUGH),
        (None, Some(tls), &[], false, PASSTHROUGH),
        (
            Some(8080),
            Some(tls),
            &[
                "istio",
                "istio-peer-exchange",
                "istio-http/1.0",
                "istio-http/1.1",
                "istio-h2",
            ],
            true,
            INBOUND,
        ),
        (Some(8080), raw, &[], false, INBOUND),
    ];
    assert_eq!(l.filter_chains.len(), want.len());
    for (i, (port, transport, alpn, terminates, cluster)) in want.into_iter().enumerate() {
        let c = &l.filter_chains[i];
        let m = &c.filter_chain_match;
        assert_eq!(m.destination_port, port, "chain {i}");
        assert_eq!(m.transport_protocol, transport, "chain {i}");
        assert_eq!(m.application_protocols, alpn, "chain {i}");
        assert_eq!(c.tls.is_some(), terminates, "chain {i}");
        let target = match &c.filter {
            Filt::TcpProxy(t) => t.cluster.clone(),
            Filt::Http(h) => match &h.virtual_hosts[0].routes[0].action {
                RouteAction::Forward(ForwardAction {
                    target: ClusterTarget::Cluster(w),
                    ..
                }) => w.cluster.clone(),
                other => panic!("chain {i}: {other:?}"),
            },
            other => panic!("chain {i}: {other:?}"),
        };
        assert_eq!(target, cluster, "chain {i}");
    }
    // HTTP on chains 1, 2, 6, 7; a TCP proxy on the others. Each HTTP connection manager
    // as istiod sets it: websocket upgrades only, XFCC appended with subject, URI and DNS.
    for i in [1, 2, 6, 7] {
        let Filt::Http(h) = &l.filter_chains[i].filter else {
            panic!("chain {i}: {:?}", l.filter_chains[i].filter);
        };
        assert_eq!(
            h.upgrade_types.as_deref(),
            Some(&["websocket".to_owned()][..])
        );
        assert!(h.upgrade_allowed([&b"WebSocket"[..]]) && !h.upgrade_allowed([&b"h2c"[..]]));
        assert_eq!(
            h.forward_client_cert,
            sluice_core::config::http::ForwardClientCert::AppendForward
        );
        assert_eq!(
            h.set_current_client_cert_details,
            sluice_core::config::http::ClientCertDetails {
                cert: false,
                chain: false,
                subject: true,
                uri: true,
                dns: true
            }
        );
    }
    // The mTLS chains: client certificates required, checked against the mesh root, the
    // ALPN istiod gives them — but for `istio-peer-exchange`, never negotiated (Sluice speaks
    // no metadata exchange: a client agreeing on it would write its metadata header into the
    // stream), `istio` offered in its place.
    for (i, alpn) in [
        (1, &["h2", "http/1.1"][..]),
        (3, &["istio", "h2", "http/1.1"]),
        (6, &["h2", "http/1.1"]),
    ] {
        let t = l.filter_chains[i].tls.as_deref().unwrap();
        assert!(t.require_client_certificate && t.client_ca.is_some(), "{i}");
        assert_eq!(t.alpn, alpn, "{i}");
        // istiod's cipher suites, in its order, but for its two RSA key exchange suites
        // (no forward secrecy; rustls has none), which are skipped.
        use sluice_core::config::tls::CipherSuite as S;
        assert_eq!(
            t.cipher_suites,
            [
                S::EcdheEcdsaAes256GcmSha384,
                S::EcdheRsaAes256GcmSha384,
                S::EcdheEcdsaAes128GcmSha256,
                S::EcdheRsaAes128GcmSha256
            ],
            "{i}"
        );
    }

    // What was ignored: the metadata exchange on every chain, the stats filter on the TCP
    // ones, the accept pacing; each named by its path.
    let ignored = &a.notes.ignored;
    for i in 0..8 {
        let mx = format!(
            "listener \"virtualInbound\" filter_chains[{i}].filters[0] (istio.metadata_exchange)"
        );
        assert!(ignored.contains(&mx), "{mx} not in {ignored:#?}");
    }
    for i in [0, 3, 4, 5] {
        let s = format!("listener \"virtualInbound\" filter_chains[{i}].filters[1] (istio.stats)");
        assert!(ignored.contains(&s), "{s} not in {ignored:#?}");
    }
    let mx_alpn = "listener \"virtualInbound\" filter_chains[3].transport_socket alpn_protocols \
                   istio-peer-exchange (replaced by istio: no metadata exchange)";
    assert!(ignored.iter().any(|n| n == mx_alpn), "{ignored:#?}");
    assert!(
        ignored.contains(
            &"listener \"virtualInbound\" max_connections_to_accept_per_socket_event".to_owned()
        ),
        "{ignored:#?}"
    );
}

/// The chain the runtime gets from the core for each kind of inbound connection, its
/// plaintext protocol sniffed from real first bytes.
#[test]
fn each_kind_of_inbound_connection_gets_istios_chain() {
    let a = assemble(&bootstrap(), &resources()).expect("accepted");
    let l = &a.config.listeners[0];
    let chains = &l.filter_chains;
    let plain = |port: u16, first: &[u8]| {
        // The runtime sniffs only where the HTTP inspector runs and a chain asks.
        let sniffed = (l.http_inspector.runs_on(port) && needs_http_sniff(chains, port))
            .then(|| sniff_http(first).application_protocol())
            .flatten();
        select(
            chains,
            &ConnectionFacts {
                destination_port: port,
                plaintext_protocol: sniffed,
                ..ConnectionFacts::default()
            },
        )
    };
    let tls = |port: u16, alpn: &[&str]| {
        assert!(l.tls_inspector.runs_on(port));
        let alpn: Vec<Vec<u8>> = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
        select(
            chains,
            &ConnectionFacts {
                destination_port: port,
                tls: true,
                server_name: Some("outbound_.8080_._.app.default.svc.cluster.local"),
                alpn: &alpn,
                plaintext_protocol: None,
            },
        )
    };
    let get = b"GET /hello HTTP/1.1\r\nHost: app\r\n\r\n";
    let mut h2c = PREFACE.to_vec();
    h2c.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
    // A port no service declares: plaintext HTTP/1.1 and h2c to the HTTP passthrough chain,
    // anything else to the TCP one.
    assert_eq!(plain(9090, get), Some(2), "plaintext HTTP/1.1");
    assert_eq!(plain(9090, &h2c), Some(2), "plaintext h2c");
    assert_eq!(
        plain(9090, b"\x00\x00\x00\x10mysql"),
        Some(4),
        "other plaintext"
    );
    // Istio's HTTP/1.0 is off by default: such a connection is passed through as TCP.
    assert_eq!(plain(9090, b"GET / HTTP/1.0\r\n\r\n"), Some(4));
    // mTLS from a sidecar: TCP with peer exchange, HTTP by Istio's ALPN; plain TLS from
    // outside the mesh is passed through.
    assert_eq!(tls(9090, &["istio-peer-exchange", "istio"]), Some(3));
    assert_eq!(tls(9090, &["istio-http/1.1", "istio", "http/1.1"]), Some(1));
    assert_eq!(tls(9090, &["h2", "http/1.1"]), Some(5));
    // The declared HTTP port: its own chains, whatever the plaintext (no sniff there).
    assert!(!l.http_inspector.runs_on(8080));
    assert!(!needs_http_sniff(chains, 8080));
    assert_eq!(plain(8080, get), Some(7));
    assert_eq!(plain(8080, &h2c), Some(7));
    assert_eq!(tls(8080, &["istio-peer-exchange", "istio"]), Some(6));
    assert_eq!(tls(8080, &["istio-http/1.1", "istio"]), Some(6));
    // 15006 itself: the blackhole, decided by the port alone (no peek, no sniff).
    assert!(!l.tls_inspector.runs_on(15006) && !l.http_inspector.runs_on(15006));
    assert!(!needs_client_hello(chains, 15006) && !needs_http_sniff(chains, 15006));
    assert_eq!(plain(15006, get), Some(0));
}

fn network_filter<T: prost::Message + prost::Name>(name: &str, m: &T) -> Filter {
    Filter {
        name: name.to_owned(),
        config_type: Some(filter::ConfigType::TypedConfig(any(m))),
    }
}

fn rbac(rules: Option<RbacRules>, shadow: Option<RbacRules>) -> Filter {
    network_filter(
        "envoy.filters.network.rbac",
        &Rbac {
            stat_prefix: "tcp.".into(),
            rules,
            shadow_rules: shadow,
            ..Default::default()
        },
    )
}

fn policy(permission: permission::Rule, principal: principal::Identifier) -> Policy {
    Policy {
        permissions: vec![Permission {
            rule: Some(permission),
        }],
        principals: vec![Principal {
            identifier: Some(principal),
        }],
        ..Default::default()
    }
}

fn rules(action: Action, policies: &[(&str, Policy)]) -> RbacRules {
    RbacRules {
        action: action as i32,
        policies: policies
            .iter()
            .map(|(n, p)| ((*n).to_owned(), p.clone()))
            .collect(),
        ..Default::default()
    }
}

/// The TCP passthrough chain (4) with `f` between the stats filter and the TCP proxy, where
/// istiod puts RBAC.
fn with_filter(f: Filter) -> Resources {
    let mut r = resources();
    listener(&mut r).filter_chains[4].filters.insert(1, f);
    r
}

#[test]
fn rbac_is_accepted_only_when_it_denies_nothing() {
    let allow_all = policy(
        permission::Rule::Any(true),
        principal::Identifier::Any(true),
    );
    let by_port = policy(
        permission::Rule::DestinationPort(8080),
        principal::Identifier::Any(true),
    );
    for (what, f) in [
        ("no rules", rbac(None, None)),
        (
            "shadow rules only (never enforced)",
            rbac(None, Some(rules(Action::Deny, &[("d", allow_all.clone())]))),
        ),
        (
            "ALLOW with an allow-all policy",
            rbac(
                Some(rules(
                    Action::Allow,
                    &[("a", by_port.clone()), ("all", allow_all.clone())],
                )),
                None,
            ),
        ),
        (
            "DENY without policies",
            rbac(Some(rules(Action::Deny, &[])), None),
        ),
        (
            "LOG",
            rbac(Some(rules(Action::Log, &[("p", by_port.clone())])), None),
        ),
    ] {
        let a = assemble(&bootstrap(), &with_filter(f));
        assert!(a.is_ok(), "{what}: {:?}", a.err());
    }
    let at = "listener \"virtualInbound\" filter_chains[4].filters[1] \
              (envoy.filters.network.rbac).typed_config.rules";
    for (what, f, want) in [
        (
            "ALLOW of one port denies the others",
            rbac(Some(rules(Action::Allow, &[("a", by_port.clone())])), None),
            format!("{at}.policies: unsupported: the ALLOW policies would deny"),
        ),
        (
            "ALLOW without policies denies everything (Istio's allow-nothing)",
            rbac(Some(rules(Action::Allow, &[])), None),
            format!("{at}.policies: unsupported: the ALLOW policies would deny"),
        ),
        (
            "DENY with a policy",
            rbac(Some(rules(Action::Deny, &[("d", allow_all.clone())])), None),
            format!("{at}.policies: unsupported: a DENY policy would deny some connections"),
        ),
    ] {
        let e = errors(&with_filter(f));
        assert!(
            e.len() == 1 && e[0].starts_with(&want),
            "{what}: {e:#?}, want {want}"
        );
    }
    // An ALLOW policy with a condition does not match every connection.
    let mut conditional = allow_all.clone();
    conditional.condition = Some(Default::default());
    let e = errors(&with_filter(rbac(
        Some(rules(Action::Allow, &[("c", conditional)])),
        None,
    )));
    assert!(
        e[0].starts_with(&format!("{at}.policies: unsupported")),
        "{e:?}"
    );
}

#[test]
fn other_filters_before_the_terminal_one_are_refused_by_path() {
    use envoy_types::pb::envoy::config::core::v3::{
        AsyncDataSource, DataSource, async_data_source, data_source,
    };
    use envoy_types::pb::envoy::extensions::wasm::v3::{VmConfig, plugin_config};
    // A Wasm plugin of `root_id` running `code` (a null-VM name).
    let wasm = |root_id: &str, code: &str| Wasm {
        config: Some(PluginConfig {
            root_id: root_id.into(),
            vm: Some(plugin_config::Vm::VmConfig(VmConfig {
                code: Some(AsyncDataSource {
                    specifier: Some(async_data_source::Specifier::Local(DataSource {
                        specifier: Some(data_source::Specifier::InlineString(code.into())),
                        ..Default::default()
                    })),
                }),
                ..Default::default()
            })),
            ..Default::default()
        }),
    };
    // Istio's stats as a Wasm plugin (older istiod): ignored, noted.
    let stats_wasm = network_filter("istio.stats", &wasm("stats_inbound", "envoy.wasm.stats"));
    let a = assemble(&bootstrap(), &with_filter(stats_wasm)).expect("stats wasm ignored");
    assert!(
        a.notes.ignored.contains(
            &"listener \"virtualInbound\" filter_chains[4].filters[1] (istio.stats)".to_owned()
        ),
        "{:#?}",
        a.notes.ignored
    );
    // Istio's root id running other code is not Istio's stats: refused (a Wasm filter can
    // close connections).
    let impostor = network_filter("istio.stats", &wasm("stats_inbound", "my.code"));
    let e = errors(&with_filter(impostor));
    assert!(
        e[0].starts_with(
            "listener \"virtualInbound\" filter_chains[4].filters[1] (istio.stats): unsupported"
        ),
        "{e:?}"
    );
    // Any other Wasm plugin, or another filter, is refused by its path.
    let other_wasm = network_filter(
        "my.plugin",
        &Wasm {
            config: Some(PluginConfig {
                root_id: "my_root".into(),
                ..Default::default()
            }),
        },
    );
    let e = errors(&with_filter(other_wasm));
    assert!(
        e[0].starts_with(
            "listener \"virtualInbound\" filter_chains[4].filters[1] (my.plugin): unsupported"
        ),
        "{e:?}"
    );
    let unknown = Filter {
        name: "envoy.filters.network.ext_authz".into(),
        config_type: Some(filter::ConfigType::TypedConfig(Any {
            type_url: "type.googleapis.com/envoy.extensions.filters.network.ext_authz.v3.ExtAuthz"
                .into(),
            value: Vec::new(),
        })),
    };
    let e = errors(&with_filter(unknown));
    assert!(
        e[0].starts_with(
            "listener \"virtualInbound\" filter_chains[4].filters[1] \
             (envoy.filters.network.ext_authz): unsupported before the terminal filter"
        ),
        "{e:?}"
    );
    // A TypedStruct of another type is not Istio's metadata exchange.
    let mut other = istiod::metadata_exchange();
    other.config_type = Some(filter::ConfigType::TypedConfig(istiod::typed_struct(
        "type.googleapis.com/some.Other",
        &[],
    )));
    let e = errors(&with_filter(other));
    assert!(
        e[0].contains("unsupported before the terminal filter"),
        "{e:?}"
    );
}

#[test]
fn inspector_predicates_other_than_istios_are_refused_by_path() {
    let and = ListenerFilterChainMatchPredicate {
        rule: Some(Rule::AndMatch(MatchSet { rules: vec![] })),
    };
    let mut r = resources();
    listener(&mut r).listener_filters[2].filter_disabled = Some(and);
    let e = errors(&r);
    assert!(
        e[0].starts_with(
            "listener \"virtualInbound\" listener_filters[2] \
             (envoy.filters.listener.http_inspector).filter_disabled.and_match: unsupported"
        ),
        "{e:?}"
    );
    // A range that is no range of ports.
    let mut r = resources();
    listener(&mut r).listener_filters[1].filter_disabled =
        Some(ListenerFilterChainMatchPredicate {
            rule: Some(Rule::DestinationPortRange(Int32Range { start: 9, end: 9 })),
        });
    let e = errors(&r);
    assert!(
        e[0].starts_with(
            "listener \"virtualInbound\" listener_filters[1] \
             (envoy.filters.listener.tls_inspector).filter_disabled.destination_port_range: [9, 9)"
        ),
        "{e:?}"
    );
    // `not_match` of ranges (istiod's form when the passthrough chains need no inspector):
    // only those ports; the `[0, 1)` istiod writes for the portless chains holds no port.
    let mut r = resources();
    listener(&mut r).listener_filters[2].filter_disabled =
        Some(ListenerFilterChainMatchPredicate {
            rule: Some(Rule::NotMatch(Box::new(
                ListenerFilterChainMatchPredicate {
                    rule: Some(Rule::OrMatch(MatchSet {
                        rules: [(0, 1), (9080, 9081)]
                            .into_iter()
                            .map(|(start, end)| ListenerFilterChainMatchPredicate {
                                rule: Some(Rule::DestinationPortRange(Int32Range { start, end })),
                            })
                            .collect(),
                    })),
                },
            ))),
        });
    let a = assemble(&bootstrap(), &r).expect("accepted");
    assert_eq!(
        a.config.listeners[0].http_inspector,
        InspectorPorts::OnlyPorts(vec![PortRange {
            first: 9080,
            last: 9080
        }])
    );
    // `filter_disabled` on original_dst means nothing here: refused.
    let mut r = resources();
    listener(&mut r).listener_filters[0].filter_disabled =
        Some(ListenerFilterChainMatchPredicate {
            rule: Some(Rule::AnyMatch(true)),
        });
    let e = errors(&r);
    assert!(
        e[0].starts_with(
            "listener \"virtualInbound\" listener_filters[0] \
             (envoy.filters.listener.original_dst).filter_disabled: unsupported"
        ),
        "{e:?}"
    );
}

/// An inspector listed twice is accepted, as Envoy accepts it: each entry runs where its own
/// `filter_disabled` lets it, so the listener inspects on the union of their ports (noted) —
/// not the last entry's ports alone; the same entry twice is the same as once.
#[test]
fn an_inspector_listed_twice_runs_where_either_entry_runs() {
    let one = |p| PortRange { first: p, last: p };
    let note = "listener \"virtualInbound\" listener_filters[3] (envoy.filters.listener.tls_inspector): listed again, runs where either entry runs";
    let once = assemble(&bootstrap(), &resources()).expect("accepted");
    // istiod's tls_inspector twice, original_dst twice: as once.
    let mut r = resources();
    let l = listener(&mut r);
    let (dst, tls) = (l.listener_filters[0].clone(), l.listener_filters[1].clone());
    l.listener_filters.push(tls.clone());
    l.listener_filters.push(dst);
    let a = assemble(&bootstrap(), &r).expect("duplicates accepted");
    let l = &a.config.listeners[0];
    assert_eq!(
        l.tls_inspector,
        InspectorPorts::ExceptPorts(vec![one(15006)])
    );
    assert_eq!(
        l.original_dst,
        Some(sluice_core::config::OriginalDst::Redirect)
    );
    // Noted as merged, not as ignored: the ignored fields are those of the listener once and
    // the second entry's own `initial_read_buffer_size`.
    assert_eq!(a.notes.merged, [note]);
    assert!(a.notes.ignored.iter().all(|n| !n.contains("listed again")));
    let listener_at = ResourceType::ALL
        .iter()
        .position(|k| *k == ResourceType::Listener)
        .unwrap();
    assert_eq!(
        a.notes.ignored_by_type[listener_at],
        once.notes.ignored_by_type[listener_at] + 1
    );
    // A second tls_inspector disabled everywhere adds no port: the first's scope stays.
    let mut r = resources();
    let mut off = tls.clone();
    off.filter_disabled = Some(ListenerFilterChainMatchPredicate {
        rule: Some(Rule::AnyMatch(true)),
    });
    listener(&mut r).listener_filters.push(off);
    let a = assemble(&bootstrap(), &r).expect("accepted");
    assert_eq!(
        a.config.listeners[0].tls_inspector,
        InspectorPorts::ExceptPorts(vec![one(15006)])
    );
    // A second http_inspector disabled only on 9080 runs on 8080 and 15006, where the first
    // does not; the first runs on 9080: together, every port.
    let mut r = resources();
    let l = listener(&mut r);
    let mut http = l.listener_filters[2].clone();
    http.filter_disabled = Some(ListenerFilterChainMatchPredicate {
        rule: Some(Rule::DestinationPortRange(Int32Range {
            start: 9080,
            end: 9081,
        })),
    });
    l.listener_filters.push(http.clone());
    let a = assemble(&bootstrap(), &r).expect("accepted");
    assert_eq!(a.config.listeners[0].http_inspector, InspectorPorts::All);
    // Disabled on 8080-8090 and on 8085-9000: runs but on 8085-8090.
    let mut r = resources();
    let l = listener(&mut r);
    l.listener_filters[2].filter_disabled = Some(ListenerFilterChainMatchPredicate {
        rule: Some(Rule::DestinationPortRange(Int32Range {
            start: 8080,
            end: 8091,
        })),
    });
    http.filter_disabled = Some(ListenerFilterChainMatchPredicate {
        rule: Some(Rule::DestinationPortRange(Int32Range {
            start: 8085,
            end: 9001,
        })),
    });
    l.listener_filters.push(http);
    let a = assemble(&bootstrap(), &r).expect("accepted");
    assert_eq!(
        a.config.listeners[0].http_inspector,
        InspectorPorts::ExceptPorts(vec![PortRange {
            first: 8085,
            last: 8090
        }])
    );
}

/// An inspector listed many times with many port ranges each (the most a `filter_disabled`
/// may list) is merged in time proportional to the ranges, not to the port space: merging
/// walked every port once per range per entry (3 s here for these 8 entries, 18 ms now). One
/// range more than the most is refused by path.
#[test]
fn many_entries_of_many_port_ranges_merge_and_too_many_are_refused() {
    use crate::translate::listener_filters::MAX_PORT_RANGES;
    use envoy_types::pb::envoy::config::listener::v3::listener_filter_chain_match_predicate::MatchSet;
    let disabled_on = |ranges: &mut dyn Iterator<Item = i32>| ListenerFilterChainMatchPredicate {
        rule: Some(Rule::OrMatch(MatchSet {
            rules: ranges
                .map(|p| ListenerFilterChainMatchPredicate {
                    rule: Some(Rule::DestinationPortRange(Int32Range {
                        start: p,
                        end: p + 1,
                    })),
                })
                .collect(),
        })),
    };
    let mut r = resources();
    let l = listener(&mut r);
    let tls = l.listener_filters[1].clone();
    // Entry d is disabled on the ports 16·i + 1 + d (i < 1024): no port is disabled by
    // all 8, so the inspector runs everywhere; entries 0 and 1 alone leave 1024 ports each.
    for d in 0..8 {
        let mut t = tls.clone();
        t.filter_disabled = Some(disabled_on(&mut (0..1024).map(|i| i * 16 + 1 + d)));
        if d == 0 {
            l.listener_filters[1] = t;
        } else {
            l.listener_filters.push(t);
        }
    }
    // (Its speed is not asserted here — no timing in tests —: on sorted ranges this merge is
    // O(R log R); the old port-by-port merge took seconds at this size.)
    let a = assemble(&bootstrap(), &r).expect("accepted");
    assert_eq!(a.config.listeners[0].tls_inspector, InspectorPorts::All);
    let mut r = resources();
    let l = listener(&mut r);
    l.listener_filters[1].filter_disabled = Some(disabled_on(&mut (0..1024).map(|i| i * 16 + 1)));
    l.listener_filters.push(l.listener_filters[1].clone());
    let mut second = l.listener_filters[1].clone();
    second.filter_disabled = Some(disabled_on(&mut (0..1024).map(|i| i * 16 + 1 + 4)));
    l.listener_filters.push(second);
    let a = assemble(&bootstrap(), &r).expect("accepted");
    assert_eq!(a.config.listeners[0].tls_inspector, InspectorPorts::All);

    let mut r = resources();
    listener(&mut r).listener_filters[1].filter_disabled = Some(disabled_on(
        &mut (0..i32::try_from(MAX_PORT_RANGES).unwrap() + 1).map(|i| i * 16 + 1),
    ));
    let e = errors(&r);
    assert!(
        e[0].starts_with(
            "listener \"virtualInbound\" listener_filters[1] \
             (envoy.filters.listener.tls_inspector).filter_disabled.or_match.rules: 1025 port \
             ranges: at most 1024"
        ),
        "{e:?}"
    );
}

/// Without `http_inspector`, Envoy gives plaintext no application protocol: the chains that
/// ask for `http/1.1` / `h2c` never take it, and Sluice sniffs nothing.
#[test]
fn without_http_inspector_nothing_is_sniffed() {
    let mut r = resources();
    listener(&mut r).listener_filters.remove(2);
    let a = assemble(&bootstrap(), &r).expect("accepted");
    let l = &a.config.listeners[0];
    assert_eq!(l.http_inspector, InspectorPorts::OnlyPorts(vec![]));
    assert!(!l.http_inspector.runs_on(9090));
}

/// What the fixture trims from istiod's inbound HTTP connection manager and clusters is not
/// dropped silently: each is NACKed by its path (the gaps `xds.md` lists).
#[test]
fn what_the_fixture_trims_is_nacked_by_path() {
    use envoy_types::pb::envoy::extensions::filters::http::buffer::v3::Buffer;
    use envoy_types::pb::envoy::extensions::filters::http::fault::v3::{
        FaultAbort, HttpFault, fault_abort,
    };
    use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
        HttpConnectionManager, HttpFilter, http_connection_manager::UpgradeConfig, http_filter,
    };
    use envoy_types::pb::google::protobuf::{BoolValue, UInt32Value};
    use prost::Message;
    // Edits the HCM of chain 7 (port 8080, plaintext).
    let with_hcm = |edit: &dyn Fn(&mut HttpConnectionManager)| {
        let mut r = resources();
        let f = &mut listener(&mut r).filter_chains[7].filters[1];
        let Some(filter::ConfigType::TypedConfig(any)) = &mut f.config_type else {
            unreachable!()
        };
        let mut h = HttpConnectionManager::decode(any.value.as_slice()).unwrap();
        edit(&mut h);
        any.value = h.encode_to_vec();
        r
    };
    let at = "listener \"virtualInbound\" filter_chains[7].filters[1].typed_config";
    // A custom filter chain for an upgrade, and CONNECT, are not Sluice's.
    let e = errors(&with_hcm(&|h| {
        h.upgrade_configs[0].filters = vec![HttpFilter {
            name: "envoy.filters.http.router".into(),
            ..Default::default()
        }];
    }));
    assert_eq!(e, [format!("{at}.upgrade_configs[0].filters: unsupported")]);
    let e = errors(&with_hcm(&|h| {
        h.upgrade_configs.push(UpgradeConfig {
            upgrade_type: "CONNECT".into(),
            ..Default::default()
        });
    }));
    assert_eq!(
        e,
        [format!(
            "{at}.upgrade_configs[1].upgrade_type: CONNECT is unsupported"
        )]
    );
    // The whole client certificate and chain are written (`Cert`, `Chain`); the issuer is not.
    let r = with_hcm(&|h| {
        let d = h.set_current_client_cert_details.as_mut().unwrap();
        d.cert = true;
        d.chain = true;
    });
    let c = assemble(&bootstrap(), &r)
        .expect("cert and chain accepted")
        .config;
    let Filt::Http(h) = &c.listeners[0].filter_chains[7].filter else {
        panic!("http")
    };
    let d = h.set_current_client_cert_details;
    assert!(d.cert && d.chain && d.subject && d.uri && d.dns, "{d:?}");
    let e = errors(&with_hcm(&|h| {
        h.set_current_client_cert_details.as_mut().unwrap().issuer = true;
    }));
    assert_eq!(
        e,
        [format!(
            "{at}.set_current_client_cert_details.issuer: unsupported"
        )]
    );
    // A fault filter that would inject something, a filter that is none of the no-op ones,
    // another request id extension, no request id generated: refused by path.
    let e = errors(&with_hcm(&|h| {
        h.http_filters[2].config_type =
            Some(http_filter::ConfigType::TypedConfig(any(&HttpFault {
                abort: Some(FaultAbort {
                    error_type: Some(fault_abort::ErrorType::HttpStatus(503)),
                    ..Default::default()
                }),
                ..Default::default()
            })));
    }));
    assert_eq!(
        e,
        [format!(
            "{at}.http_filters[2] (envoy.filters.http.fault).typed_config.abort: unsupported"
        )]
    );
    let e = errors(&with_hcm(&|h| {
        h.http_filters.insert(
            0,
            HttpFilter {
                name: "envoy.filters.http.buffer".into(),
                config_type: Some(http_filter::ConfigType::TypedConfig(any(&Buffer {
                    max_request_bytes: Some(UInt32Value { value: 1024 }),
                }))),
                ..Default::default()
            },
        );
    }));
    assert_eq!(
        e,
        [format!(
            "{at}.http_filters[0] (envoy.filters.http.buffer): unsupported"
        )]
    );
    let e = errors(&with_hcm(&|h| {
        h.request_id_extension.as_mut().unwrap().typed_config = Some(any(&Buffer::default()));
    }));
    assert!(
        e[0].starts_with(&format!("{at}.request_id_extension.typed_config: ")),
        "{e:?}"
    );
    let e = errors(&with_hcm(&|h| {
        h.generate_request_id = Some(BoolValue { value: false });
    }));
    assert!(
        e[0].starts_with(&format!("{at}.generate_request_id: false is unsupported")),
        "{e:?}"
    );
}

/// What istiod's HTTP connection managers carry beyond the routes: `server_name` (the
/// `server` header of forwarded responses), the no-op HTTP filters (each noted by its path),
/// the UUID request id extension (noted).
#[test]
fn istiods_hcm_extras_are_honoured_or_noted() {
    use sluice_core::config::http::{ServerHeader, ServerHeaderTransformation};
    let a = assemble(&bootstrap(), &resources()).expect("accepted");
    let l = &a.config.listeners[0];
    let Filt::Http(h) = &l.filter_chains[7].filter else {
        panic!("{:?}", l.filter_chains[7].filter)
    };
    assert_eq!(
        h.server_header,
        Some(ServerHeader {
            name: "istio-envoy".into(),
            transformation: ServerHeaderTransformation::Overwrite
        })
    );
    assert_eq!(h.stream_idle_timeout, None, "0s: none");
    let ignored = &a.notes.ignored;
    let at = "listener \"virtualInbound\" filter_chains[7].filters[1].typed_config";
    for note in [
        format!(
            "{at}.http_filters[0] (istio.metadata_exchange) (Istio peer metadata: none exchanged; x-envoy-peer-metadata and x-envoy-peer-metadata-id removed from requests and responses)"
        ),
        format!("{at}.http_filters[1] (envoy.filters.http.grpc_stats) (telemetry only)"),
        format!("{at}.http_filters[2] (envoy.filters.http.fault) (no fault configured: no effect)"),
        format!(
            "{at}.http_filters[3] (envoy.filters.http.cors) (no CORS policy on any route: no effect)"
        ),
        format!("{at}.http_filters[4] (istio.stats) (Istio stats: telemetry only)"),
        format!(
            "{at}.request_id_extension (UUID: pack_trace_reason, use_request_id_for_trace_sampling not applied)"
        ),
    ] {
        assert!(
            ignored.iter().any(|n| n.ends_with(&note)),
            "{note} not in {ignored:#?}"
        );
    }
}

/// istiod's `BlackHoleCluster` (STATIC, no `load_assignment`) is a cluster of no hosts, and so
/// is one whose assignment lists none (the form other control planes send).
#[test]
fn istiods_blackhole_cluster_is_a_cluster_of_no_hosts() {
    use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
    let r = resources();
    assert!(r.clusters[BLACKHOLE].load_assignment.is_none());
    let a = assemble(&bootstrap(), &r).expect("accepted");
    let hole = a
        .config
        .clusters
        .iter()
        .find(|c| c.name == BLACKHOLE)
        .expect("the blackhole cluster");
    assert_eq!(hole.kind, sluice_core::config::ClusterKind::Static);
    assert!(hole.hosts.is_empty());
    let mut r = resources();
    r.clusters.get_mut(BLACKHOLE).unwrap().load_assignment = Some(ClusterLoadAssignment {
        cluster_name: BLACKHOLE.into(),
        ..Default::default()
    });
    let a = assemble(&bootstrap(), &r).expect("accepted");
    let hole = a.config.clusters.iter().find(|c| c.name == BLACKHOLE);
    assert!(hole.is_some_and(|c| c.hosts.is_empty()));
}

/// istiod's outbound HTTP connection manager (RDS, the common options, XFCC sanitized) is
/// accepted on a listener of its own: websocket only, `server: istio-envoy`, the client's
/// `x-forwarded-client-cert` removed.
#[test]
fn istiods_outbound_hcm_is_accepted() {
    use crate::fixtures::{http_listener, route_config};
    use envoy_types::pb::envoy::config::listener::v3::filter::ConfigType;
    use sluice_core::config::http::ForwardClientCert;
    let mut r = resources();
    let mut l = http_listener("0.0.0.0_9080", "127.0.0.1", 9080, "9080");
    l.filter_chains[0].filters[0].config_type =
        Some(ConfigType::TypedConfig(any(&istiod::outbound_hcm("9080"))));
    r.listeners.insert(l.name.clone(), l);
    r.routes
        .insert("9080".into(), route_config("9080", INBOUND));
    let a = assemble(&bootstrap(), &r).expect("accepted");
    let out = a
        .config
        .listeners
        .iter()
        .find(|l| l.name == "0.0.0.0_9080")
        .expect("the outbound listener");
    let Filt::Http(h) = &out.filter else {
        panic!("{:?}", out.filter)
    };
    assert_eq!(
        h.upgrade_types.as_deref(),
        Some(&["websocket".to_owned()][..])
    );
    assert_eq!(
        h.server_header.as_ref().map(|s| s.name.as_str()),
        Some("istio-envoy")
    );
    assert_eq!(h.forward_client_cert, ForwardClientCert::Sanitize);
}

/// Istiod's HTTP metadata exchange filter removes `x-envoy-peer-metadata` and
/// `x-envoy-peer-metadata-id` (Istio: from requests on inbound, from responses on outbound):
/// an HCM that has it removes both from requests and responses on every route that forwards —
/// the inbound chains' inline routes and the outbound listener's RDS ones, beside a route's
/// own removals, on every virtual host; a direct response (no upstream) is left alone. Without
/// the filter, nothing is removed.
#[test]
fn istiods_metadata_exchange_removes_the_peer_metadata_headers() {
    use crate::fixtures::{http_listener, route_config};
    use envoy_types::pb::envoy::config::listener::v3::filter::ConfigType;
    use envoy_types::pb::envoy::config::route::v3::{
        DirectResponseAction, Route, RouteMatch, route::Action as RAction,
        route_match::PathSpecifier,
    };
    const PEER: [&str; 2] = ["x-envoy-peer-metadata", "x-envoy-peer-metadata-id"];
    let outbound = |with_filter: bool| {
        let mut r = resources();
        let mut l = http_listener("0.0.0.0_9080", "127.0.0.1", 9080, "9080");
        let mut h = istiod::outbound_hcm("9080");
        if !with_filter {
            h.http_filters
                .retain(|f| f.name != "istio.metadata_exchange");
        }
        l.filter_chains[0].filters[0].config_type = Some(ConfigType::TypedConfig(any(&h)));
        r.listeners.insert(l.name.clone(), l);
        // Two virtual hosts: the first with a direct response before its route, the second
        // with removals of its own (edits on a direct response's host would be refused).
        let mut rc = route_config("9080", INBOUND);
        let mut second = rc.virtual_hosts[0].clone();
        second.name = "other".into();
        second.domains = vec!["other.example".into()];
        second.request_headers_to_remove = vec!["x-app-secret".into()];
        second.response_headers_to_remove = vec!["X-Envoy-Peer-Metadata".into()];
        rc.virtual_hosts[0].routes.insert(
            0,
            Route {
                r#match: Some(RouteMatch {
                    path_specifier: Some(PathSpecifier::Path("/healthz".into())),
                    ..Default::default()
                }),
                action: Some(RAction::DirectResponse(DirectResponseAction {
                    status: 200,
                    ..Default::default()
                })),
                ..Default::default()
            },
        );
        rc.virtual_hosts.push(second);
        r.routes.insert("9080".into(), rc);
        assemble(&bootstrap(), &r).expect("accepted")
    };
    let forwarding = |h: &sluice_core::config::http::HttpConfig| -> Vec<ForwardAction> {
        let routes = h.virtual_hosts.iter().flat_map(|vh| &vh.routes);
        routes
            .filter_map(|r| match &r.action {
                RouteAction::Forward(a) => Some(a.clone()),
                RouteAction::DirectResponse { .. } => None,
            })
            .collect()
    };
    // Inbound: every HTTP chain of virtualInbound (inline routes).
    let a = assemble(&bootstrap(), &resources()).expect("accepted");
    for i in [1, 2, 6, 7] {
        let Filt::Http(h) = &a.config.listeners[0].filter_chains[i].filter else {
            panic!("chain {i}");
        };
        let routes = forwarding(h);
        assert!(!routes.is_empty(), "chain {i}");
        for f in routes {
            assert_eq!(f.request_headers_to_remove, PEER, "chain {i}");
            assert_eq!(f.response_headers_to_remove, PEER, "chain {i}");
        }
    }
    // Outbound, over RDS: every forwarding route of both virtual hosts, beside their own.
    let out = |a: &Assembled| {
        let l = a
            .config
            .listeners
            .iter()
            .find(|l| l.name == "0.0.0.0_9080")
            .expect("the outbound listener");
        let Filt::Http(h) = &l.filter else {
            panic!("{:?}", l.filter)
        };
        h.clone()
    };
    let h = out(&outbound(true));
    assert_eq!(h.virtual_hosts.len(), 2);
    assert!(matches!(
        h.virtual_hosts[0].routes[0].action,
        RouteAction::DirectResponse { .. }
    ));
    let f = forwarding(&h);
    assert_eq!(f.len(), 2);
    assert_eq!(f[0].request_headers_to_remove, PEER);
    assert_eq!(f[0].response_headers_to_remove, PEER);
    assert_eq!(
        f[1].request_headers_to_remove,
        ["x-app-secret", PEER[0], PEER[1]]
    );
    assert_eq!(f[1].response_headers_to_remove, PEER, "listed once");
    // Without the filter: only the routes' own removals.
    let h = out(&outbound(false));
    let f = forwarding(&h);
    assert!(f[0].request_headers_to_remove.is_empty());
    assert!(f[0].response_headers_to_remove.is_empty());
    assert_eq!(f[1].request_headers_to_remove, ["x-app-secret"]);
    assert_eq!(f[1].response_headers_to_remove, ["x-envoy-peer-metadata"]);
}

/// istiod's TLS contexts name their secrets `default` and `ROOTCA` from the agent's SDS server,
/// `sds-grpc` (an `api_config_source` of type GRPC): accepted when the bootstrap declares that
/// source, the secrets read from it (not from ADS: the same names over ADS do not stand in).
#[test]
fn istiods_sds_grpc_secrets_come_from_the_declared_source() {
    let (ca, chain, key) = pki(&["app.default.svc.cluster.local"]);
    let r = istiod::virtual_inbound(&ca, &chain, &key, ("127.0.0.1", 8080));
    let a = assemble(&bootstrap(), &r).expect("accepted");
    let tls = a.config.listeners[0].filter_chains[1]
        .tls
        .as_deref()
        .expect("the mTLS chain");
    assert_eq!(
        tls.certificates[0].cert_chain,
        sluice_core::config::tls::Pem::Inline {
            secret: Some("default".into()),
            pem: chain.clone().into()
        }
    );
    assert!(
        matches!(&tls.client_ca, Some(sluice_core::config::tls::Pem::Inline { secret: Some(s), .. }) if s == "ROOTCA"),
        "{:?}",
        tls.client_ca
    );
    // The same secrets over ADS are not the source's.
    let mut r = r;
    let agent = r.source_secrets.remove(istiod::SDS_GRPC).unwrap();
    r.secrets = agent;
    let e = errors(&r);
    assert!(
        e.iter().any(|e| e.ends_with(
            "tls_certificate_sds_secret_configs[0]: secret \"default\" not received from SDS source \"sds-grpc\""
        )),
        "{e:#?}"
    );
}

/// A source the bootstrap does not declare is refused at once, naming the field; so is a
/// shape the client does not speak (delta, Google gRPC).
#[test]
fn an_undeclared_sds_source_is_refused_by_path() {
    use envoy_types::pb::envoy::config::core::v3::{
        api_config_source::ApiType, config_source::ConfigSourceSpecifier,
    };
    let undeclared = json!({ "listeners": [], "clusters": [] });
    let e: Vec<String> = assemble(&undeclared, &resources())
        .expect_err("refused")
        .iter()
        .map(ToString::to_string)
        .collect();
    assert!(
        e.iter().any(
            |e| e.starts_with("listener \"virtualInbound\" filter_chains[")
                && e.ends_with(
                    "sds_config.api_config_source.grpc_services[0].envoy_grpc.cluster_name: \
                 \"sds-grpc\" is not an SDS source of the bootstrap's `xds.sds_sources` (none \
                 is declared)"
                )
        ),
        "{e:#?}"
    );
    // A bootstrap declaring another name.
    let mut other = bootstrap();
    other["xds"]["sds_sources"][0]["name"] = json!("agent");
    let e: Vec<String> = assemble(&other, &resources())
        .expect_err("refused")
        .iter()
        .map(ToString::to_string)
        .collect();
    assert!(e.iter().any(|e| e.ends_with("(declared: agent)")), "{e:#?}");
    // DELTA_GRPC: refused by path.
    let mut r = resources();
    let l = listener(&mut r);
    let chain = l
        .filter_chains
        .iter_mut()
        .find(|c| c.transport_socket.is_some())
        .unwrap();
    let ts = chain.transport_socket.as_mut().unwrap();
    let Some(envoy_types::pb::envoy::config::core::v3::transport_socket::ConfigType::TypedConfig(
        any_ctx,
    )) = &mut ts.config_type
    else {
        panic!()
    };
    let mut ctx: envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::DownstreamTlsContext =
        prost::Message::decode(any_ctx.value.as_slice()).unwrap();
    let sds = &mut ctx
        .common_tls_context
        .as_mut()
        .unwrap()
        .tls_certificate_sds_secret_configs[0];
    let Some(ConfigSourceSpecifier::ApiConfigSource(api)) =
        &mut sds.sds_config.as_mut().unwrap().config_source_specifier
    else {
        panic!()
    };
    api.api_type = ApiType::DeltaGrpc as i32;
    *any_ctx = any(&ctx);
    let e = errors(&r);
    assert!(
        e.iter().any(|e| e.ends_with(
            "tls_certificate_sds_secret_configs[0].sds_config.api_config_source.api_type: only \
             GRPC (state of the world, what Istio's agent serves) for an SDS source"
        )),
        "{e:#?}"
    );
}
