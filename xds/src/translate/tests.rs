use envoy_types::pb::envoy::config::core::v3::{
    HeaderValue, HeaderValueOption, HealthStatus, header_value_option::HeaderAppendAction,
};
use envoy_types::pb::envoy::config::route::v3::{
    DirectResponseAction, HeaderMatcher, RetryPolicy, Route, RouteAction, RouteConfiguration,
    RouteMatch, WeightedCluster, header_matcher::HeaderMatchSpecifier, route::Action,
    route_action::ClusterSpecifier, route_match::PathSpecifier, weighted_cluster::ClusterWeight,
};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpFilter, http_connection_manager::RouteSpecifier, http_filter,
};
use envoy_types::pb::google::protobuf::{Duration as PbDuration, UInt32Value};
use serde_json::json;
use sluice_core::config::http::{
    AppendAction, ClusterTarget, HeaderRule, PathMatch, RouteAction as Action2,
};
use sluice_core::config::{ClusterKind, LbPolicy, ListenerFilter};

use super::*;
use crate::fixtures::*;

fn bootstrap() -> Value {
    json!({ "listeners": [], "clusters": [] })
}

fn resources() -> Resources {
    let mut r = Resources::default();
    r.clusters.insert("web".into(), eds_cluster("web"));
    r.endpoints.insert(
        "web".into(),
        assignment(
            "web",
            &[
                ("127.0.0.1", 8001, HealthStatus::Healthy as i32),
                ("127.0.0.1", 8002, HealthStatus::Unhealthy as i32),
                ("127.0.0.1", 8003, HealthStatus::Draining as i32),
                ("127.0.0.1", 8004, HealthStatus::Unknown as i32),
                ("127.0.0.1", 8005, HealthStatus::Timeout as i32),
            ],
        ),
    );
    r.listeners.insert(
        "in".into(),
        http_listener("in", "127.0.0.1", 9000, "routes"),
    );
    r.routes
        .insert("routes".into(), route_config("routes", "web"));
    r
}

fn errors(r: &Resources) -> Vec<String> {
    assemble(&bootstrap(), r)
        .expect_err("refused")
        .iter()
        .map(ToString::to_string)
        .collect()
}

#[test]
fn listener_routes_cluster_and_endpoints_become_the_config_model() {
    let a = assemble(&bootstrap(), &resources()).expect("valid");
    let c = &a.config;
    assert_eq!(c.clusters.len(), 1);
    let web = &c.clusters[0];
    assert_eq!(web.name, "web");
    assert_eq!(web.kind, ClusterKind::Static);
    // Envoy's ROUND_ROBIN honours weights.
    assert_eq!(web.lb_policy, LbPolicy::WeightedRoundRobin);
    assert_eq!(web.connect_timeout, std::time::Duration::from_secs(1));
    // Every host kept (Envoy's host set): UNHEALTHY, DRAINING and TIMEOUT ones flagged as
    // their source declares them (never picked, yet counted in their level); UNKNOWN is healthy.
    use sluice_core::config::DeclaredHealth;
    let hosts: Vec<(u16, DeclaredHealth)> = web
        .hosts
        .iter()
        .map(|h| (h.address.port(), h.health))
        .collect();
    assert_eq!(
        hosts,
        [
            (8001, DeclaredHealth::Healthy),
            (8002, DeclaredHealth::Unhealthy),
            (8003, DeclaredHealth::Draining),
            (8004, DeclaredHealth::Healthy),
            (8005, DeclaredHealth::Timeout),
        ]
    );
    assert_eq!(c.listeners.len(), 1);
    let l = &c.listeners[0];
    assert_eq!(
        (l.name.as_str(), l.address.to_string().as_str()),
        ("in", "127.0.0.1:9000")
    );
    let ListenerFilter::Http(h) = &l.filter else {
        panic!("an http listener: {:?}", l.filter)
    };
    assert_eq!(h.virtual_hosts[0].domains, ["*"]);
    let route = &h.virtual_hosts[0].routes[0];
    assert_eq!(route.matcher.path, PathMatch::Prefix("/".into()));
    let Action2::Forward(f) = &route.action else {
        panic!("forward")
    };
    let ClusterTarget::Cluster(w) = &f.target else {
        panic!("one cluster")
    };
    assert_eq!((w.cluster.as_str(), w.cluster_index), ("web", 0));
    // The stat prefix is telemetry: ignored, and said so.
    assert_eq!(
        a.notes.ignored,
        ["listener \"in\" filter_chains[0].filters[0].typed_config.stat_prefix"]
    );
    // Counted by the type of the resource holding it (`sluice_xds_ignored_fields`).
    assert_eq!(a.notes.ignored_by_type, [0, 0, 1, 0, 0]);
}

#[test]
fn static_parts_of_the_bootstrap_stay_and_dynamic_entries_follow_them() {
    let boot = json!({
        "listeners": [ { "name": "static", "address": "127.0.0.1:9100", "echo": {} } ],
        "clusters": [ { "name": "xds", "hosts": [ { "address": "127.0.0.1:18000" } ] } ],
    });
    let mut r = resources();
    r.listeners
        .insert("tcp".into(), tcp_listener("tcp", "127.0.0.1", 9001, "xds"));
    let c = assemble(&boot, &r).expect("valid").config;
    let names: Vec<&str> = c.listeners.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(names, ["static", "in", "tcp"]);
    let ListenerFilter::TcpProxy(t) = &c.listeners[2].filter else {
        panic!("tcp")
    };
    assert_eq!((t.cluster.as_str(), t.cluster_index), ("xds", 0));
    assert_eq!(c.clusters[1].name, "web");
}

#[test]
fn an_unsupported_http_filter_is_named_with_its_path() {
    let mut r = resources();
    let mut l = http_listener("in", "127.0.0.1", 9000, "routes");
    edit_hcm(&mut l, |hcm| {
        hcm.http_filters.insert(
            0,
            HttpFilter {
                name: "envoy.filters.http.jwt_authn".into(),
                ..Default::default()
            },
        );
    });
    r.listeners.insert("in".into(), l);
    assert_eq!(
        errors(&r),
        [
            "listener \"in\" filter_chains[0].filters[0].typed_config.http_filters[0] \
             (envoy.filters.http.jwt_authn): unsupported"
        ]
    );
}

/// An HCM's `http2_protocol_options.connection_keepalive` becomes the listener's
/// `http2.connection_keepalive`; none (or no periodic interval) leaves it off; the keepalive's
/// other fields and the options' others are refused by path.
#[test]
fn hcm_http2_connection_keepalive_is_the_listeners() {
    use envoy_types::pb::envoy::config::core::v3::{Http2ProtocolOptions, KeepaliveSettings};
    let with = |o: Http2ProtocolOptions| {
        let mut r = resources();
        let mut l = http_listener("in", "127.0.0.1", 9000, "routes");
        edit_hcm(&mut l, |hcm| hcm.http2_protocol_options = Some(o.clone()));
        r.listeners.insert("in".into(), l);
        r
    };
    let keepalive = |interval: i64, timeout: i64| KeepaliveSettings {
        interval: Some(PbDuration {
            seconds: interval,
            nanos: 0,
        }),
        timeout: Some(PbDuration {
            seconds: timeout,
            nanos: 0,
        }),
        ..Default::default()
    };
    let http2 = |r: &Resources| {
        let a = assemble(&bootstrap(), r).expect("valid");
        let ListenerFilter::Http(h) = &a.config.listeners[0].filter else {
            panic!("an http listener")
        };
        h.http2
    };
    assert_eq!(http2(&resources()).connection_keepalive, None);
    assert_eq!(
        http2(&with(Http2ProtocolOptions::default())),
        sluice_core::config::http::Http2Settings::DEFAULT
    );
    let on = with(Http2ProtocolOptions {
        connection_keepalive: Some(keepalive(30, 5)),
        ..Default::default()
    });
    assert_eq!(
        http2(&on).connection_keepalive,
        Some(sluice_core::config::Http2Keepalive {
            interval: std::time::Duration::from_secs(30),
            timeout: std::time::Duration::from_secs(5),
            interval_jitter_percent: 15,
        })
    );
    let no_interval = with(Http2ProtocolOptions {
        connection_keepalive: Some(keepalive(0, 5)),
        ..Default::default()
    });
    assert_eq!(http2(&no_interval).connection_keepalive, None);
    let at = "listener \"in\" filter_chains[0].filters[0].typed_config.http2_protocol_options";
    let no_timeout = with(Http2ProtocolOptions {
        connection_keepalive: Some(keepalive(30, 0)),
        ..Default::default()
    });
    assert_eq!(
        errors(&no_timeout),
        [format!(
            "{at}.connection_keepalive.timeout: must be set and above zero"
        )]
    );
    let jitter = with(Http2ProtocolOptions {
        connection_keepalive: Some(KeepaliveSettings {
            connection_idle_interval: Some(PbDuration {
                seconds: 10,
                nanos: 0,
            }),
            ..keepalive(30, 5)
        }),
        ..Default::default()
    });
    assert_eq!(
        errors(&jitter),
        [format!(
            "{at}.connection_keepalive.connection_idle_interval: unsupported"
        )]
    );
    let other = with(Http2ProtocolOptions {
        max_concurrent_streams: Some(UInt32Value { value: 50 }),
        ..Default::default()
    });
    assert_eq!(
        errors(&other),
        [format!("{at}.max_concurrent_streams: unsupported")]
    );
}

#[test]
fn optional_and_disabled_http_filters_are_ignored_and_counted() {
    let mut r = resources();
    let mut l = http_listener("in", "127.0.0.1", 9000, "routes");
    edit_hcm(&mut l, |hcm| {
        for (name, optional, disabled) in [("a.opt", true, false), ("b.off", false, true)] {
            hcm.http_filters.insert(
                0,
                HttpFilter {
                    name: name.into(),
                    is_optional: optional,
                    disabled,
                    config_type: Some(http_filter::ConfigType::TypedConfig(Default::default())),
                },
            );
        }
    });
    r.listeners.insert("in".into(), l);
    let a = assemble(&bootstrap(), &r).expect("valid");
    assert_eq!(a.notes.ignored.len(), 3, "{:?}", a.notes.ignored);
    assert_eq!(
        a.notes.ignored[1..],
        [
            "listener \"in\" filter_chains[0].filters[0].typed_config.http_filters[0] (b.off)",
            "listener \"in\" filter_chains[0].filters[0].typed_config.http_filters[1] (a.opt)",
        ]
    );
}

#[test]
fn a_field_the_model_cannot_express_is_refused_by_name() {
    let mut r = resources();
    let mut l = http_listener("in", "127.0.0.1", 9000, "routes");
    l.per_connection_buffer_limit_bytes = Some(UInt32Value { value: 1024 });
    r.listeners.insert("in".into(), l);
    assert_eq!(
        errors(&r),
        ["listener \"in\" per_connection_buffer_limit_bytes: unsupported"]
    );

    let mut r = resources();
    r.clusters.get_mut("web").expect("web").lb_policy = 6; // CLUSTER_PROVIDED
    assert_eq!(
        errors(&r),
        ["cluster \"web\" lb_policy: CLUSTER_PROVIDED is unsupported"]
    );
}

#[test]
fn the_config_validation_refuses_and_the_error_names_the_resource() {
    // What only the whole config can tell (two listeners on one address): by the config's
    // path, mapped back to the resource.
    let mut r = resources();
    r.listeners.insert(
        "in2".into(),
        http_listener("in2", "127.0.0.1", 9000, "routes"),
    );
    let e = errors(&r);
    assert_eq!(
        e,
        [
            "listener \"in2\": listeners[1].address: duplicate address \"127.0.0.1:9000\" \
             (already used by listeners[0]) (as the config's listeners[1].address)"
        ]
    );

    // A route to a cluster nobody sent.
    let mut r = resources();
    r.routes
        .insert("routes".into(), route_config("routes", "nowhere"));
    let e = errors(&r);
    assert!(
        e[0].starts_with("listener \"in\": ") && e[0].contains("nowhere"),
        "{e:?}"
    );
}

/// What translation can check by itself — a port out of range, an address that is not an IP
/// address, a name the config would refuse — is refused by the resource's name and the xDS
/// field's path (not the config's), for listeners, endpoints, clusters and virtual hosts.
#[test]
fn bad_ports_addresses_and_names_are_refused_by_their_xds_field_path() {
    let refused = |change: &dyn Fn(&mut Resources)| {
        let mut r = resources();
        change(&mut r);
        errors(&r)
    };
    assert_eq!(
        refused(&|r| {
            r.listeners.insert(
                "in".into(),
                http_listener("in", "127.0.0.1", 99999, "routes"),
            );
        }),
        ["listener \"in\" address.socket_address.port_value: 99999 is not a port (0 to 65535)"]
    );
    assert_eq!(
        refused(&|r| {
            r.listeners.insert(
                "in".into(),
                http_listener("in", "localhost", 9000, "routes"),
            );
        }),
        ["listener \"in\" address.socket_address.address: \"localhost\" is not an IP address"]
    );
    assert_eq!(
        refused(&|r| {
            r.listeners
                .insert("in".into(), http_listener("", "127.0.0.1", 9000, "routes"));
        }),
        [
            "listener \"\" name: \"\" is not a valid name (1 to 128 characters: letters, digits, \
             '_', '-', '.', ':', '|')"
        ]
    );
    assert_eq!(
        refused(&|r| {
            r.endpoints.insert(
                "web".into(),
                assignment(
                    "web",
                    &[
                        ("127.0.0.1", 8001, HealthStatus::Healthy as i32),
                        ("127.0.0.1", 65536, HealthStatus::Healthy as i32),
                    ],
                ),
            );
        }),
        [
            "cluster_load_assignment \"web\" endpoints[0].lb_endpoints[1].endpoint.address.\
             socket_address.port_value: 65536 is not a port (0 to 65535)"
        ]
    );
    assert_eq!(
        refused(&|r| {
            r.endpoints.insert(
                "web".into(),
                assignment("web", &[("", 8001, HealthStatus::Healthy as i32)]),
            );
        }),
        [
            "cluster_load_assignment \"web\" endpoints[0].lb_endpoints[0].endpoint.address.\
             socket_address.address: \"\" is not an IP address"
        ]
    );
    assert_eq!(
        refused(&|r| {
            r.clusters.insert(
                "web two".into(),
                static_cluster("web two", &[("127.0.0.1", 8001, 0)]),
            );
        }),
        [
            "cluster \"web two\" name: \"web two\" is not a valid name (1 to 128 characters: \
             letters, digits, '_', '-', '.', ':', '|')"
        ]
    );
    assert_eq!(
        refused(&|r| {
            let mut routes = route_config("routes", "web");
            routes.virtual_hosts[0].name = String::new();
            r.routes.insert("routes".into(), routes);
        }),
        [
            "route_configuration \"routes\" virtual_hosts[0].name: \"\" is not a valid name (1 \
             to 128 characters: letters, digits, '_', '-', '.', ':', '|')"
        ]
    );
    // An IPv6 address is written in brackets for the config.
    let mut r = resources();
    r.listeners
        .insert("in".into(), http_listener("in", "::1", 9000, "routes"));
    let a = assemble(&bootstrap(), &r).expect("valid");
    assert_eq!(a.config.listeners[0].address.to_string(), "[::1]:9000");
}

/// An assignment that lists no endpoint (a service with no ready pod), or only localities
/// without endpoints, is a cluster of no hosts, as in Envoy. One whose every endpoint is
/// UNHEALTHY, DRAINING or TIMEOUT is accepted, as Envoy accepts it: its hosts are kept,
/// declared unusable (a level without health: panic picks among them, or the next level
/// serves). One not received is still waited for.
#[test]
fn an_eds_cluster_of_declared_unhealthy_hosts_keeps_them_and_one_without_endpoints_has_none() {
    use envoy_types::pb::envoy::config::endpoint::v3::{
        ClusterLoadAssignment, LocalityLbEndpoints,
    };
    use sluice_core::config::DeclaredHealth;
    let mut r = resources();
    r.endpoints.insert(
        "web".into(),
        assignment(
            "web",
            &[
                ("127.0.0.1", 8002, HealthStatus::Unhealthy as i32),
                ("127.0.0.1", 8003, HealthStatus::Draining as i32),
                ("127.0.0.1", 8004, HealthStatus::Timeout as i32),
            ],
        ),
    );
    let a = assemble(&bootstrap(), &r).expect("accepted");
    let web = a.config.clusters.iter().find(|c| c.name == "web").unwrap();
    let health: Vec<DeclaredHealth> = web.hosts.iter().map(|h| h.health).collect();
    assert_eq!(
        health,
        [
            DeclaredHealth::Unhealthy,
            DeclaredHealth::Draining,
            DeclaredHealth::Timeout
        ]
    );
    for empty in [
        assignment("web", &[]),
        ClusterLoadAssignment {
            cluster_name: "web".into(),
            ..Default::default()
        },
        ClusterLoadAssignment {
            cluster_name: "web".into(),
            endpoints: vec![LocalityLbEndpoints::default(); 2],
            ..Default::default()
        },
    ] {
        r.endpoints.insert("web".into(), empty);
        let a = assemble(&bootstrap(), &r).expect("accepted");
        let web = a.config.clusters.iter().find(|c| c.name == "web");
        assert!(web.is_some_and(|c| c.hosts.is_empty()), "{web:?}");
    }
    r.endpoints.clear();
    assert_eq!(
        errors(&r),
        ["cluster \"web\": no ClusterLoadAssignment \"web\" received"]
    );
}

fn edit_hcm(
    l: &mut envoy_types::pb::envoy::config::listener::v3::Listener,
    f: impl FnOnce(&mut envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::HttpConnectionManager),
) {
    use envoy_types::pb::envoy::config::listener::v3::filter::ConfigType;
    use prost::Message;
    let Some(ConfigType::TypedConfig(a)) = &mut l.filter_chains[0].filters[0].config_type else {
        panic!("typed")
    };
    let mut hcm = envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::HttpConnectionManager::decode(a.value.as_slice()).expect("hcm");
    f(&mut hcm);
    *a = any(&hcm);
}

fn overwrite(name: &str, value: &str) -> HeaderValueOption {
    HeaderValueOption {
        header: Some(HeaderValue {
            key: name.into(),
            value: value.into(),
            ..Default::default()
        }),
        append_action: HeaderAppendAction::OverwriteIfExistsOrAdd as i32,
        ..Default::default()
    }
}

#[test]
fn route_features_translate() {
    let mut r = resources();
    r.clusters.insert("api".into(), eds_cluster("api"));
    r.endpoints
        .insert("api".into(), assignment("api", &[("127.0.0.1", 8100, 0)]));
    let mut rc = route_config("routes", "web");
    let vh = &mut rc.virtual_hosts[0];
    vh.request_headers_to_add
        .push(overwrite("x-level", "vhost"));
    vh.routes.insert(
        0,
        Route {
            r#match: Some(RouteMatch {
                path_specifier: Some(PathSpecifier::Prefix("/api/".into())),
                headers: vec![HeaderMatcher {
                    name: "x-canary".into(),
                    header_match_specifier: Some(HeaderMatchSpecifier::PresentMatch(true)),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            request_headers_to_add: vec![overwrite("x-level", "route"), overwrite("x-route", "1")],
            action: Some(Action::Route(RouteAction {
                cluster_specifier: Some(ClusterSpecifier::WeightedClusters(WeightedCluster {
                    clusters: vec![
                        ClusterWeight {
                            name: "web".into(),
                            weight: Some(UInt32Value { value: 90 }),
                            ..Default::default()
                        },
                        ClusterWeight {
                            name: "api".into(),
                            weight: Some(UInt32Value { value: 10 }),
                            ..Default::default()
                        },
                    ],
                    ..Default::default()
                })),
                prefix_rewrite: "/".into(),
                timeout: Some(PbDuration {
                    seconds: 2,
                    nanos: 500_000_000,
                }),
                retry_policy: Some(RetryPolicy {
                    retry_on: "5xx,connect-failure".into(),
                    num_retries: Some(UInt32Value { value: 2 }),
                    ..Default::default()
                }),
                ..Default::default()
            })),
            ..Default::default()
        },
    );
    vh.routes.insert(
        0,
        Route {
            r#match: Some(RouteMatch {
                path_specifier: Some(PathSpecifier::Path("/healthz".into())),
                ..Default::default()
            }),
            action: Some(Action::DirectResponse(DirectResponseAction {
                status: 204,
                ..Default::default()
            })),
            ..Default::default()
        },
    );
    r.routes.insert("routes".into(), rc.clone());
    // A direct response cannot take the virtual host's header edits.
    let e = errors(&r);
    assert_eq!(
        e,
        [
            "route_configuration \"routes\" virtual_hosts[0].routes[0].direct_response: header \
          edits on a direct response are unsupported (route, virtual host or route \
          configuration level)"
        ]
    );
    rc.virtual_hosts[0].request_headers_to_add.clear();
    rc.virtual_hosts[0].routes[1]
        .request_headers_to_add
        .insert(0, overwrite("x-level", "route-first"));
    r.routes.insert("routes".into(), rc);
    let c = assemble(&bootstrap(), &r).expect("valid").config;
    let ListenerFilter::Http(h) = &c.listeners[0].filter else {
        panic!("http")
    };
    let routes = &h.virtual_hosts[0].routes;
    assert_eq!(routes.len(), 3);
    assert_eq!(routes[0].matcher.path, PathMatch::Exact("/healthz".into()));
    assert!(matches!(
        routes[0].action,
        Action2::DirectResponse { status: 204, .. }
    ));
    assert_eq!(routes[1].matcher.headers[0].rule, HeaderRule::Present(true));
    let Action2::Forward(f) = &routes[1].action else {
        panic!("forward")
    };
    let ClusterTarget::Weighted(ws) = &f.target else {
        panic!("weighted")
    };
    let ws: Vec<(&str, u32)> = ws.iter().map(|w| (w.cluster.as_str(), w.weight)).collect();
    assert_eq!(ws, [("web", 90), ("api", 10)]);
    assert_eq!(f.prefix_rewrite.as_deref(), Some("/"));
    assert_eq!(f.timeout, Some(std::time::Duration::from_millis(2500)));
    let retry = f.retry_policy.as_ref().expect("retry");
    assert_eq!(retry.num_retries, 2);
    assert!(retry.retry_on.server_error && retry.retry_on.connect_failure);
    // Two edits of one name at one level: the later wins, as in Envoy.
    let added: Vec<(&str, &str)> = f
        .request_headers_to_add
        .iter()
        .map(|h| (h.name.as_str(), h.value.as_str()))
        .collect();
    assert_eq!(added, [("x-level", "route"), ("x-route", "1")]);
}

/// A route's `upgrade_configs` become its `upgrade_configs` (lowercase, `enabled` true when
/// unset), over the HCM's `upgrade_types` for the types they name; `connect_config`,
/// `CONNECT` and a type listed twice are refused by path.
#[test]
fn a_routes_upgrade_configs_translate_and_connect_is_refused_by_path() {
    use envoy_types::pb::envoy::config::route::v3::route_action::{
        UpgradeConfig, upgrade_config::ConnectConfig,
    };
    use envoy_types::pb::google::protobuf::BoolValue;
    use sluice_core::config::http::{RouteUpgrade, upgrade_allowed};
    let mut r = resources();
    let mut rc = route_config("routes", "web");
    fn action(rc: &mut RouteConfiguration) -> &mut RouteAction {
        let Some(Action::Route(a)) = &mut rc.virtual_hosts[0].routes[0].action else {
            panic!("route")
        };
        a
    }
    action(&mut rc).upgrade_configs = vec![
        UpgradeConfig {
            upgrade_type: "WebSocket".into(),
            enabled: Some(BoolValue { value: false }),
            ..Default::default()
        },
        UpgradeConfig {
            upgrade_type: "h2c".into(),
            ..Default::default()
        },
    ];
    r.routes.insert("routes".into(), rc.clone());
    // The HCM lists websocket (as istiod's does).
    let mut l = http_listener("in", "127.0.0.1", 9000, "routes");
    edit_hcm(&mut l, |h| {
        h.upgrade_configs = vec![
            envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::http_connection_manager::UpgradeConfig {
                upgrade_type: "websocket".into(),
                ..Default::default()
            },
        ];
    });
    r.listeners.insert("in".into(), l);
    let c = assemble(&bootstrap(), &r).expect("valid").config;
    let ListenerFilter::Http(h) = &c.listeners[0].filter else {
        panic!("http")
    };
    let Action2::Forward(f) = &h.virtual_hosts[0].routes[0].action else {
        panic!("forward")
    };
    assert_eq!(
        f.upgrade_configs,
        [
            RouteUpgrade {
                upgrade_type: "websocket".into(),
                enabled: false
            },
            RouteUpgrade {
                upgrade_type: "h2c".into(),
                enabled: true
            },
        ]
    );
    let types = h.upgrade_types.as_deref();
    assert_eq!(types, Some(&["websocket".to_owned()][..]));
    assert!(!upgrade_allowed(
        types,
        &f.upgrade_configs,
        [&b"websocket"[..]]
    ));
    assert!(upgrade_allowed(types, &f.upgrade_configs, [&b"h2c"[..]]));
    // Refused by path.
    let at = "route_configuration \"routes\" virtual_hosts[0].routes[0].route.upgrade_configs";
    action(&mut rc).upgrade_configs[1].connect_config = Some(ConnectConfig::default());
    r.routes.insert("routes".into(), rc.clone());
    assert_eq!(errors(&r), [format!("{at}[1].connect_config: unsupported")]);
    action(&mut rc).upgrade_configs[1] = UpgradeConfig {
        upgrade_type: "CONNECT".into(),
        ..Default::default()
    };
    r.routes.insert("routes".into(), rc.clone());
    assert_eq!(
        errors(&r),
        [format!("{at}[1].upgrade_type: CONNECT is unsupported")]
    );
    action(&mut rc).upgrade_configs[1].upgrade_type = "websocket".into();
    r.routes.insert("routes".into(), rc);
    assert_eq!(
        errors(&r),
        [format!(
            "{at}[1].upgrade_type: \"websocket\" is listed twice"
        )]
    );
}

fn add(name: &str, value: &str) -> HeaderValueOption {
    HeaderValueOption {
        header: Some(HeaderValue {
            key: name.into(),
            value: value.into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The forward action of the first route of the translated `routes` configuration.
fn first_forward(rc: RouteConfiguration) -> sluice_core::config::http::ForwardAction {
    let mut r = resources();
    r.routes.insert("routes".into(), rc);
    let c = assemble(&bootstrap(), &r).expect("valid").config;
    let ListenerFilter::Http(h) = &c.listeners[0].filter else {
        panic!("http")
    };
    let Action2::Forward(f) = &h.virtual_hosts[0].routes[0].action else {
        panic!("forward")
    };
    f.clone()
}

type Added<'a> = Vec<(&'a str, &'a str, AppendAction)>;

fn added(list: &[sluice_core::config::http::HeaderValue]) -> Added<'_> {
    list.iter()
        .map(|h| (h.name.as_str(), h.value.as_str(), h.append_action))
        .collect()
}

const APPEND: AppendAction = AppendAction::AppendIfExistsOrAdd;
const OVERWRITE: AppendAction = AppendAction::OverwriteIfExistsOrAdd;

/// What istiod writes for a VirtualService's `headers.request.add` (APPEND_IF_EXISTS_OR_ADD,
/// which is also a `HeaderValueOption` left at its defaults) appends; its `set`
/// (OVERWRITE_IF_EXISTS_OR_ADD) and the deprecated `append: false` overwrite; `append: true`
/// appends.
#[test]
fn istiod_add_appends_and_set_overwrites() {
    use envoy_types::pb::google::protobuf::BoolValue;
    let mut rc = route_config("routes", "web");
    let route = &mut rc.virtual_hosts[0].routes[0];
    let mut explicit = add("x-istio-add", "2");
    explicit.append_action = HeaderAppendAction::AppendIfExistsOrAdd as i32;
    #[allow(deprecated)]
    let old_false = HeaderValueOption {
        append: Some(BoolValue { value: false }),
        ..add("x-old-false", "3")
    };
    #[allow(deprecated)]
    let old_true = HeaderValueOption {
        append: Some(BoolValue { value: true }),
        ..add("x-old-true", "4")
    };
    route.request_headers_to_add = vec![
        add("x-a", "2"),
        explicit,
        overwrite("x-set", "1"),
        old_false,
        old_true,
    ];
    route.response_headers_to_add = vec![add("x-r", "2"), overwrite("x-rs", "1")];
    let f = first_forward(rc);
    assert_eq!(
        added(&f.request_headers_to_add),
        [
            ("x-set", "1", OVERWRITE),
            ("x-old-false", "3", OVERWRITE),
            ("x-a", "2", APPEND),
            ("x-istio-add", "2", APPEND),
            ("x-old-true", "4", APPEND),
        ]
    );
    assert_eq!(
        added(&f.response_headers_to_add),
        [("x-rs", "1", OVERWRITE), ("x-r", "2", APPEND)]
    );
    assert!(f.request_headers_to_remove.is_empty());
}

/// Levels apply as Envoy applies them — the route's edits, then the virtual host's, then the
/// route configuration's, each its removals, then its overwrites, then its appends —: appends from every level
/// all go out; an outer overwrite replaces inner additions of its name; an outer append after
/// an inner overwrite keeps both fields (the overwrite's removal stays); an outer removal
/// drops an inner addition. `most_specific_header_mutations_wins` reverses the order.
#[test]
fn levels_merge_in_envoys_order_with_appends() {
    let mut rc = route_config("routes", "web");
    rc.request_headers_to_add = vec![add("x-a", "config"), overwrite("x-e", "config")];
    let vh = &mut rc.virtual_hosts[0];
    vh.request_headers_to_add = vec![
        add("x-a", "vhost"),
        add("x-b", "vhost"),
        overwrite("x-c", "vhost"),
    ];
    vh.request_headers_to_remove = vec!["X-D".into()];
    vh.routes[0].request_headers_to_add = vec![
        add("x-a", "route"),
        overwrite("x-b", "route"),
        add("x-c", "route"),
        add("x-d", "route"),
        add("x-e", "route"),
    ];
    let f = first_forward(rc.clone());
    assert_eq!(
        added(&f.request_headers_to_add),
        [
            ("x-b", "route", APPEND),
            ("x-a", "route", APPEND),
            ("x-c", "vhost", OVERWRITE),
            ("x-a", "vhost", APPEND),
            ("x-b", "vhost", APPEND),
            ("x-e", "config", OVERWRITE),
            ("x-a", "config", APPEND),
        ]
    );
    assert_eq!(f.request_headers_to_remove, ["x-d", "x-b"]);

    // Most specific last: the route configuration's overwrite of x-e, then the route's append.
    rc.most_specific_header_mutations_wins = true;
    let f = first_forward(rc);
    let e: Added<'_> = added(&f.request_headers_to_add)
        .into_iter()
        .filter(|h| h.0 == "x-e")
        .collect();
    assert_eq!(e, [("x-e", "config", APPEND), ("x-e", "route", APPEND)]);
    assert!(f.request_headers_to_remove.contains(&"x-e".to_owned()));
}

/// Envoy adds nothing for an empty value unless `keep_empty_value` (neither appends nor
/// overwrites, so the message's field stays).
#[test]
fn an_empty_value_is_dropped_unless_keep_empty_value() {
    let mut rc = route_config("routes", "web");
    rc.virtual_hosts[0].routes[0].request_headers_to_add = vec![
        overwrite("x-empty", ""),
        HeaderValueOption {
            keep_empty_value: true,
            ..overwrite("x-kept", "")
        },
        add("x-a", "1"),
    ];
    let f = first_forward(rc);
    assert_eq!(
        added(&f.request_headers_to_add),
        [("x-kept", "", OVERWRITE), ("x-a", "1", APPEND)]
    );
}

fn with_action(name: &str, value: &str, action: HeaderAppendAction) -> HeaderValueOption {
    HeaderValueOption {
        append_action: action as i32,
        ..add(name, value)
    }
}

const ADD_IF_ABSENT: AppendAction = AppendAction::AddIfAbsent;
const OVERWRITE_IF_EXISTS: AppendAction = AppendAction::OverwriteIfExists;

/// `ADD_IF_ABSENT` and `OVERWRITE_IF_EXISTS` on a name no level touched before stay
/// conditional (the proxy asks the message); on a name an inner level added they are decided
/// as "present" (dropped / an overwrite), on a name it removed as "absent" (an append /
/// dropped); a second `ADD_IF_ABSENT` of a name never adds, and an outer overwrite replaces
/// a conditional entry.
#[test]
fn conditional_actions_are_kept_or_decided_by_what_inner_levels_did() {
    use HeaderAppendAction as H;
    let mut rc = route_config("routes", "web");
    rc.request_headers_to_add = vec![
        with_action("x-added", "config", H::AddIfAbsent),
        with_action("x-added2", "config", H::OverwriteIfExists),
        with_action("x-removed", "config", H::AddIfAbsent),
        with_action("x-removed2", "config", H::OverwriteIfExists),
        with_action("x-twice", "config", H::AddIfAbsent),
        overwrite("x-then-set", "config"),
    ];
    let vh = &mut rc.virtual_hosts[0];
    vh.request_headers_to_remove = vec!["x-removed".into(), "x-removed2".into()];
    vh.request_headers_to_add = vec![
        with_action("x-twice", "vhost", H::AddIfAbsent),
        with_action("x-then-set", "vhost", H::OverwriteIfExists),
    ];
    let route = &mut vh.routes[0];
    route.request_headers_to_add = vec![
        with_action("x-absent", "route", H::AddIfAbsent),
        with_action("x-present", "route", H::OverwriteIfExists),
        add("x-added", "route"),
        add("x-added2", "route"),
    ];
    route.response_headers_to_add = vec![with_action("x-r", "route", H::AddIfAbsent)];
    let f = first_forward(rc);
    assert_eq!(
        added(&f.request_headers_to_add),
        [
            ("x-present", "route", OVERWRITE_IF_EXISTS),
            ("x-absent", "route", ADD_IF_ABSENT),
            ("x-added", "route", APPEND),
            ("x-twice", "vhost", ADD_IF_ABSENT),
            ("x-added2", "config", OVERWRITE),
            ("x-then-set", "config", OVERWRITE),
            ("x-removed", "config", APPEND),
        ]
    );
    assert_eq!(f.request_headers_to_remove, ["x-removed", "x-removed2"]);
    assert_eq!(
        added(&f.response_headers_to_add),
        [("x-r", "route", ADD_IF_ABSENT)]
    );
}

/// Within a level Envoy sets before it adds: an append written before an overwrite of its
/// name still goes out, after it.
#[test]
fn a_level_overwrites_before_it_appends() {
    let mut rc = route_config("routes", "web");
    rc.virtual_hosts[0].routes[0].request_headers_to_add =
        vec![add("x-a", "appended"), overwrite("x-a", "set")];
    let f = first_forward(rc);
    assert_eq!(
        added(&f.request_headers_to_add),
        [("x-a", "set", APPEND), ("x-a", "appended", APPEND)]
    );
    assert_eq!(f.request_headers_to_remove, ["x-a"]);
}

/// Values with variables (istiod's `%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%`) are parsed and
/// kept as written; an unknown variable, a stray `%` and `keep_empty_value` with variables
/// are NACKed by the field's path.
#[test]
fn header_values_with_variables_are_parsed_or_refused_by_path() {
    let mut rc = route_config("routes", "web");
    rc.virtual_hosts[0].routes[0].request_headers_to_add = vec![
        overwrite("x-client", "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%"),
        overwrite("x-pct", "100%%"),
    ];
    let f = first_forward(rc);
    let h = &f.request_headers_to_add;
    assert_eq!(h[0].value, "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%");
    assert!(h[0].format.is_some() && h[1].format.is_some());
    let at = "route_configuration \"routes\" virtual_hosts[0].routes[0]";
    for (value, keep, want) in [
        (
            "%NOPE%",
            false,
            format!(
                "{at}.request_headers_to_add[0].header.value: \"%NOPE%\": unknown variable %NOPE% \
                 at byte 0 (supported: {})",
                sluice_core::config::header_format::SUPPORTED
            ),
        ),
        (
            "50%",
            false,
            format!(
                "{at}.request_headers_to_add[0].header.value: \"50%\": no valid variable at byte 2 \
                 (a variable is %NAME%, %NAME(ARG)% or either with :N before the closing %; \
                 write %% for a literal %)"
            ),
        ),
        (
            "%PROTOCOL%",
            true,
            format!(
                "{at}.request_headers_to_add[0].keep_empty_value: unsupported with a value that \
                 has variables (one that renders empty is not added)"
            ),
        ),
    ] {
        let mut r = resources();
        let mut rc = route_config("routes", "web");
        rc.virtual_hosts[0].routes[0].request_headers_to_add = vec![HeaderValueOption {
            keep_empty_value: keep,
            ..overwrite("x-a", value)
        }];
        r.routes.insert("routes".into(), rc);
        assert_eq!(errors(&r), [want], "{value}");
    }
}

/// What the model cannot express exactly is NACKed by path: a conditional entry sharing its
/// name with another entry of its level, an append or another condition after a conditional
/// entry of an inner level, and `append` set with a non-default `append_action` (Envoy refuses
/// it).
#[test]
fn conditional_combinations_and_append_with_append_action_are_refused_by_path() {
    use HeaderAppendAction as H;
    use envoy_types::pb::google::protobuf::BoolValue;
    let at = "route_configuration \"routes\" virtual_hosts[0]";
    let mut r = resources();
    let mut rc = route_config("routes", "web");
    rc.virtual_hosts[0].response_headers_to_add = vec![
        add("x-ok", "1"),
        add("x-a", "1"),
        with_action("X-A", "2", H::AddIfAbsent),
    ];
    r.routes.insert("routes".into(), rc);
    assert_eq!(
        errors(&r),
        [format!(
            "{at}.response_headers_to_add[2].append_action: \"X-A\" is also added by \
             virtual_hosts[0].response_headers_to_add[1] on this level; a conditional action \
             (ADD_IF_ABSENT, OVERWRITE_IF_EXISTS) must be the only entry of its name on its level"
        )]
    );
    let mut r = resources();
    let mut rc = route_config("routes", "web");
    rc.virtual_hosts[0].request_headers_to_add = vec![add("x-a", "vhost")];
    rc.virtual_hosts[0].routes[0].request_headers_to_add =
        vec![with_action("x-a", "route", H::OverwriteIfExists)];
    r.routes.insert("routes".into(), rc);
    assert_eq!(
        errors(&r),
        [format!(
            "{at}.request_headers_to_add[0].append_action: APPEND_IF_EXISTS_OR_ADD of \"x-a\" \
             after OVERWRITE_IF_EXISTS at virtual_hosts[0].routes[0].request_headers_to_add[0] \
             (which depends on the message) is unsupported: the outcome would need two entries \
             of the name around a condition"
        )]
    );
    let mut r = resources();
    let mut rc = route_config("routes", "web");
    #[allow(deprecated)]
    let both = HeaderValueOption {
        append: Some(BoolValue { value: true }),
        ..overwrite("x-a", "1")
    };
    rc.virtual_hosts[0].routes[0].request_headers_to_add = vec![both];
    r.routes.insert("routes".into(), rc);
    assert_eq!(
        errors(&r),
        [format!(
            "{at}.routes[0].request_headers_to_add[0].append: set together with append_action \
             (Envoy refuses both; keep append_action)"
        )]
    );
}

#[test]
fn a_retry_condition_the_model_lacks_is_named() {
    let mut r = resources();
    let mut rc = route_config("routes", "web");
    let Some(Action::Route(a)) = &mut rc.virtual_hosts[0].routes[0].action else {
        panic!("route")
    };
    a.retry_policy = Some(RetryPolicy {
        retry_on: "5xx,envoy-ratelimited".into(),
        ..Default::default()
    });
    r.routes.insert("routes".into(), rc);
    let e = errors(&r);
    assert!(
        e[0].starts_with(
            "route_configuration \"routes\" virtual_hosts[0].routes[0].route.retry_policy.retry_on: \
             \"envoy-ratelimited\" is unsupported"
        ),
        "{e:?}"
    );
}

#[test]
fn inline_routes_are_errors_of_the_listener() {
    let mut r = resources();
    let mut rc = route_config("inline", "web");
    rc.virtual_hosts[0].routes[0].r#match = None;
    r.listeners.insert(
        "in".into(),
        http_listener_with(
            "in",
            "127.0.0.1",
            9000,
            RouteSpecifier::RouteConfig(rc.clone()),
        ),
    );
    assert_eq!(
        errors(&r),
        [
            "listener \"in\" filter_chains[0].filters[0].typed_config.route_config.\
             virtual_hosts[0].routes[0].match: missing"
        ]
    );
    rc.virtual_hosts[0].routes[0].r#match = route_config("x", "web").virtual_hosts[0].routes[0]
        .r#match
        .clone();
    r.listeners.insert(
        "in".into(),
        http_listener_with("in", "127.0.0.1", 9000, RouteSpecifier::RouteConfig(rc)),
    );
    r.routes.clear();
    assert!(assemble(&bootstrap(), &r).is_ok());
}

#[test]
fn first_set_field_names_the_field() {
    let mut l = envoy_types::pb::envoy::config::listener::v3::Listener::default();
    assert_eq!(first_set_field(&l), None);
    l.freebind = Some(Default::default());
    assert_eq!(first_set_field(&l).as_deref(), Some("freebind"));
    let c = envoy_types::pb::envoy::config::cluster::v3::Cluster {
        per_connection_buffer_limit_bytes: Some(UInt32Value { value: 1 }),
        ..Default::default()
    };
    assert_eq!(
        first_set_field(&c).as_deref(),
        Some("per_connection_buffer_limit_bytes")
    );
}

/// Resources shaped like what istiod generates for a sidecar (field choices and values as in
/// published config dumps of Istio 1.2x, written by hand): each is refused with a named field,
/// and none panics.
mod istio {
    use envoy_types::pb::envoy::config::cluster::v3::{
        CircuitBreakers, Cluster, circuit_breakers::Thresholds, cluster::CommonLbConfig,
        cluster::TransportSocketMatch,
    };
    use envoy_types::pb::envoy::config::core::v3::{Metadata, TransportSocket};
    use envoy_types::pb::envoy::config::listener::v3::ListenerFilter as EnvoyListenerFilter;
    use envoy_types::pb::envoy::config::route::v3::{
        RetryPolicy, RouteAction, RouteConfiguration, VirtualHost,
        retry_policy::RetryHostPredicate, retry_policy::retry_host_predicate, route::Action,
        route_action::MaxStreamDuration,
    };
    use envoy_types::pb::google::protobuf::Any;
    use envoy_types::pb::google::protobuf::{BoolValue, Duration as PbDuration, UInt32Value};

    use super::*;

    fn outbound_cluster() -> Cluster {
        let mut c = eds_cluster("outbound|9080||reviews.default.svc.cluster.local");
        c.connect_timeout = Some(PbDuration {
            seconds: 10,
            nanos: 0,
        });
        c.circuit_breakers = Some(CircuitBreakers {
            thresholds: vec![Thresholds {
                max_connections: Some(UInt32Value { value: u32::MAX }),
                max_pending_requests: Some(UInt32Value { value: u32::MAX }),
                max_requests: Some(UInt32Value { value: u32::MAX }),
                max_retries: Some(UInt32Value { value: u32::MAX }),
                track_remaining: true,
                ..Default::default()
            }],
            ..Default::default()
        });
        c.common_lb_config = Some(CommonLbConfig::default());
        c.metadata = Some(Metadata::default());
        c.transport_socket_matches = vec![TransportSocketMatch {
            name: "tlsMode-istio".into(),
            transport_socket: Some(TransportSocket {
                name: "envoy.transport_sockets.tls".into(),
                ..Default::default()
            }),
            ..Default::default()
        }];
        c
    }

    #[test]
    fn an_outbound_clusters_transport_socket_matches_are_translated_and_checked_by_path() {
        let mut notes = Notes::default();
        let e = translate_cluster(
            &outbound_cluster(),
            None,
            &crate::translate::Secrets::NONE,
            &mut notes,
        )
        .expect_err("refused");
        assert_eq!(
            e.to_string(),
            "cluster \"outbound|9080||reviews.default.svc.cluster.local\" \
             transport_socket_matches[0].transport_socket: \"envoy.transport_sockets.tls\": \
             unsupported (only envoy.transport_sockets.tls with a typed_config)"
        );
        // The matches are translated (an entry's socket is checked at its path: here one with
        // no typed_config; a complete Istio cluster: tests_tls.rs). Without them it is accepted
        // under Istio's own name (`|` is a name character), so routes and metrics use the names
        // istiod sends.
        let mut c = outbound_cluster();
        c.transport_socket_matches.clear();
        let mut r = Resources::default();
        r.clusters.insert(c.name.clone(), c.clone());
        r.endpoints.insert(
            c.name.clone(),
            assignment(&c.name, &[("10.0.0.7", 9080, HealthStatus::Healthy as i32)]),
        );
        let bootstrap = json!({
            "listeners": [{
                "name": "out",
                "address": "127.0.0.1:15001",
                "tcp_proxy": { "cluster": "outbound|9080||reviews.default.svc.cluster.local" }
            }],
            "clusters": []
        });
        let assembled = assemble(&bootstrap, &r).expect("accepted");
        let names: Vec<&str> = assembled
            .config
            .clusters
            .iter()
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(names, ["outbound|9080||reviews.default.svc.cluster.local"]);
    }

    #[test]
    fn the_virtual_outbound_listener_is_refused_at_use_original_dst() {
        let mut l = tcp_listener("virtualOutbound", "0.0.0.0", 15001, "PassthroughCluster");
        l.use_original_dst = Some(BoolValue { value: true });
        l.listener_filters = vec![EnvoyListenerFilter {
            name: "envoy.filters.listener.original_dst".into(),
            ..Default::default()
        }];
        l.traffic_direction = 2; // OUTBOUND
        let mut notes = Notes::default();
        let e = translate_listener(
            &l,
            &BTreeMap::new(),
            &crate::translate::Secrets::NONE,
            &mut notes,
        )
        .expect_err("refused");
        assert_eq!(
            e.to_string(),
            "listener \"virtualOutbound\" use_original_dst: unsupported"
        );
    }

    /// The route istiod sends for an outbound service port: its default retry policy
    /// (`retriable-status-codes` with 503, `refused-stream`, `previous_hosts`), the attempt count
    /// header, a zero `max_stream_duration` and `grpc_timeout_header_max`.
    fn istio_route() -> RouteConfiguration {
        let mut rc = route_config("9080", "outbound|9080||reviews.default.svc.cluster.local");
        rc.validate_clusters = Some(BoolValue { value: false });
        let vh: &mut VirtualHost = &mut rc.virtual_hosts[0];
        vh.name = "reviews.default.svc.cluster.local:9080".into();
        vh.domains = vec![
            "reviews.default.svc.cluster.local".into(),
            "reviews:9080".into(),
        ];
        vh.include_request_attempt_count = true;
        let route = &mut vh.routes[0];
        route.name = "default".into();
        let Some(Action::Route(a)) = &mut route.action else {
            panic!("route")
        };
        a.timeout = Some(PbDuration::default());
        a.retry_policy = Some(RetryPolicy {
            retry_on: "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes"
                .into(),
            num_retries: Some(UInt32Value { value: 2 }),
            retry_host_predicate: vec![RetryHostPredicate {
                name: "envoy.retry_host_predicates.previous_hosts".into(),
                config_type: Some(retry_host_predicate::ConfigType::TypedConfig(Any {
                    type_url: "type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate".into(),
                    value: Vec::new(),
                })),
            }],
            host_selection_retry_max_attempts: 5,
            retriable_status_codes: vec![503],
            ..Default::default()
        });
        a.max_stream_duration = Some(MaxStreamDuration {
            max_stream_duration: Some(PbDuration::default()),
            grpc_timeout_header_max: Some(PbDuration::default()),
            ..Default::default()
        });
        rc
    }

    fn istio_action(rc: &mut RouteConfiguration) -> &mut RouteAction {
        let Some(Action::Route(a)) = &mut rc.virtual_hosts[0].routes[0].action else {
            panic!("route")
        };
        a
    }

    #[test]
    fn an_istio_route_with_its_default_retry_policy_is_accepted() {
        let mut notes = Notes::default();
        let vhosts = translate_route_configuration(&istio_route(), &mut notes).expect("accepted");
        assert_eq!(vhosts.len(), 1);
        let vh = &vhosts[0];
        assert_eq!(vh["include_request_attempt_count"], true);
        assert_eq!(
            vh["domains"],
            serde_json::json!(["reviews.default.svc.cluster.local", "reviews"])
        );
        let retry = &vh["routes"][0]["route"]["retry_policy"];
        assert_eq!(
            retry["retry_on"],
            serde_json::json!([
                "connect-failure",
                "refused-stream",
                "unavailable",
                "cancelled",
                "retriable-status-codes"
            ])
        );
        assert_eq!(retry["retriable_status_codes"], serde_json::json!([503]));
        assert_eq!(retry["num_retries"], 2);

        // What Sluice cannot do is refused, naming the field.
        let refused = |edit: &dyn Fn(&mut RouteAction), error: &str| {
            let mut rc = istio_route();
            edit(istio_action(&mut rc));
            let e = translate_route_configuration(&rc, &mut Notes::default())
                .expect_err(error)
                .to_string();
            assert!(e.contains(error), "{e}");
        };
        refused(
            &|a| {
                a.retry_policy.as_mut().unwrap().retry_host_predicate[0] = RetryHostPredicate {
                    name: "envoy.retry_host_predicates.omit_canary_hosts".into(),
                    config_type: None,
                };
            },
            "retry_policy.retry_host_predicate[0]: \"envoy.retry_host_predicates.omit_canary_hosts\" is unsupported",
        );
        refused(
            &|a| {
                a.max_stream_duration.as_mut().unwrap().max_stream_duration = Some(PbDuration {
                    seconds: 30,
                    nanos: 0,
                });
            },
            "max_stream_duration.max_stream_duration: unsupported (only 0: no limit)",
        );
        refused(
            &|a| {
                a.max_stream_duration
                    .as_mut()
                    .unwrap()
                    .grpc_timeout_header_max = Some(PbDuration {
                    seconds: 5,
                    nanos: 0,
                });
            },
            "max_stream_duration.grpc_timeout_header_max: unsupported",
        );
        // Through the whole assembly (the config model's own validation), behind an RDS
        // listener, next to the outbound cluster (without its mTLS matching).
        let mut c = outbound_cluster();
        c.transport_socket_matches.clear();
        let mut r = Resources::default();
        r.clusters.insert(c.name.clone(), c.clone());
        r.endpoints.insert(
            c.name.clone(),
            assignment(&c.name, &[("10.0.0.7", 9080, HealthStatus::Healthy as i32)]),
        );
        r.listeners.insert(
            "out".into(),
            http_listener("out", "127.0.0.1", 15001, "9080"),
        );
        r.routes.insert("9080".into(), istio_route());
        let assembled = assemble(&bootstrap(), &r).expect("accepted");
        let sluice_core::config::ListenerFilter::Http(http) = &assembled.config.listeners[0].filter
        else {
            panic!("http")
        };
        let vh = &http.virtual_hosts[0];
        assert!(vh.include_request_attempt_count);
        let sluice_core::config::http::RouteAction::Forward(f) = &vh.routes[0].action else {
            panic!("forward")
        };
        let on = f.retry_policy.as_ref().expect("retry policy").retry_on;
        assert!(on.retriable_status_codes && on.refused_stream && on.connect_failure);
        assert!(on.grpc(14) && on.grpc(1));
        assert_eq!(on.status_codes.iter().collect::<Vec<_>>(), [503]);
        assert_eq!(f.timeout, None, "0s: no timeout");

        // What Envoy takes and the YAML model would refuse: codes without the condition are
        // ignored, the condition without codes retries nothing, and a policy left with no
        // condition is no policy.
        let policy_of = |edit: &dyn Fn(&mut RetryPolicy)| {
            let mut rc = istio_route();
            edit(istio_action(&mut rc).retry_policy.as_mut().unwrap());
            let v = translate_route_configuration(&rc, &mut Notes::default()).expect("accepted");
            v[0]["routes"][0]["route"]["retry_policy"].clone()
        };
        let p = policy_of(&|r| r.retry_on = "connect-failure".into());
        assert_eq!(p["retry_on"], serde_json::json!(["connect-failure"]));
        assert_eq!(p["retriable_status_codes"], serde_json::Value::Null);
        let p = policy_of(&|r| r.retriable_status_codes.clear());
        assert_eq!(
            p["retry_on"],
            serde_json::json!([
                "connect-failure",
                "refused-stream",
                "unavailable",
                "cancelled"
            ])
        );
        let p = policy_of(&|r| {
            r.retry_on = "retriable-status-codes".into();
            r.retriable_status_codes.clear();
        });
        assert_eq!(p, serde_json::Value::Null, "no policy");
        refused(
            &|a| a.retry_policy.as_mut().unwrap().retriable_status_codes = vec![503, 700],
            "retry_policy.retriable_status_codes: 700 is not an HTTP status code (100–599)",
        );

        // A code listed twice (Envoy takes it) is one code.
        let mut rc = istio_route();
        istio_action(&mut rc)
            .retry_policy
            .as_mut()
            .unwrap()
            .retriable_status_codes = vec![503, 429, 503];
        let vhosts = translate_route_configuration(&rc, &mut Notes::default()).expect("accepted");
        assert_eq!(
            vhosts[0]["routes"][0]["route"]["retry_policy"]["retriable_status_codes"],
            serde_json::json!([503, 429])
        );
    }
}

/// A fixed test PKI for the fuzz corpus (generated once with openssl: a P-256 CA `fuzz-ca`
/// and a leaf `fuzz-leaf` for `in.example.com`, valid for a century). Test material only.
const FUZZ_CA: &str = "-----BEGIN CERTIFICATE-----\nMIIBjDCCATGgAwIBAgIUeXBO3YBA2QcKKAxgmVOpwQKW2FAwCgYIKoZIzj0EAwIw\nEjEQMA4GA1UEAwwHZnV6ei1jYTAgFw0yNjEyMDYxOTQ0NDNaGA8yMTI2MTExMjE5\nNDQ0M1owEjEQMA4GA1UEAwwHZnV6ei1jYTBZMBMGByqGSM49AgEGCCqGSM49AwEH\nA0IABCraM4zKjAUZa7vDHIWcRuAVo2Cd83eOHKKFR82PrS+oV1DiJrIV0cvXK8Tb\nDyZWDCMbD7PjRCpmm4SZT0dvsv+jYzBhMB0GA1UdDgQWBBSWcllks7hNWZAJJRvn\nQsEm8zkbEzAfBgNVHSMEGDAWgBSWcllks7hNWZAJJRvnQsEm8zkbEzAPBgNVHRMB\nAf8EBTADAQH/MA4GA1UdDwEB/wQEAwICBDAKBggqhkjOPQQDAgNJADBGAiEA5Zj9\nDqM8qbzWr35mNedxMFwXeomh+cl0PB9dJKUxXvECIQDeVOfD6Li/lSFGv5I6dsaQ\nsf1ZM7jzMkj71/b9AnZ+PQ==\n-----END CERTIFICATE-----\n";
const FUZZ_CHAIN: &str = "-----BEGIN CERTIFICATE-----\nMIIBhzCCAS2gAwIBAgIUAlw42J8kXR7zCL8nzk99jBOIPrMwCgYIKoZIzj0EAwIw\nEjEQMA4GA1UEAwwHZnV6ei1jYTAgFw0yNjEyMDYxOTQ0NDNaGA8yMTI2MTExMjE5\nNDQ0M1owFDESMBAGA1UEAwwJZnV6ei1sZWFmMFkwEwYHKoZIzj0CAQYIKoZIzj0D\nAQcDQgAEuPqBwV/Hdgvz4R55k93nKVuHQ0iYU3EJ6H+e/zbfQ8p/GKar3hL4MAZs\nzPMw/Zboa3yZBKaznLZMEpqEKKv3pqNdMFswGQYDVR0RBBIwEIIOaW4uZXhhbXBs\nZS5jb20wHQYDVR0OBBYEFEGBqAxFEqR0SMnyU2y+g8OCLrTEMB8GA1UdIwQYMBaA\nFJZyWWSzuE1ZkAklG+dCwSbzORsTMAoGCCqGSM49BAMCA0gAMEUCIQD5IUYyA1GB\nW1psApH7XKIFedn2WM9pgQjLNYvnHrObLAIgZJ6hCF+Er6ReX1gzltGeh9REzhgA\nlT21ddOUa8eKA/4=\n-----END CERTIFICATE-----\n";
const FUZZ_KEY: &str = "-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgLbNI3PLTKtrhuM9d\n4soU65NaLFsQS2XnN13CjprEHDmhRANCAAS4+oHBX8d2C/PhHnmT3ecpW4dDSJhT\ncQnof57/Nt9Dyn8YpqveEvgwBmzM8zD9luhrfJkEprOctkwSmoQoq/em\n-----END PRIVATE KEY-----\n";

/// The committed corpus of the `xds_translate` fuzz target: real-looking resources, encoded
/// for `crate::fuzzing`. `SLUICE_BLESS=1` rewrites it; every run drives each entry.
#[test]
fn fuzz_corpus_entries_drive_without_panicking() {
    use crate::fuzzing::{REMOVE, drive, drive_delta, encode, encode_tagged, tag};
    use prost::Message;
    let web = eds_cluster("web");
    let cla = assignment("web", &[("127.0.0.1", 8001, 0), ("127.0.0.1", 8002, 2)]);
    let listener = http_listener("in", "127.0.0.1", 9000, "routes");
    let routes = route_config("routes", "web");
    let tcp = tcp_listener("tcp", "127.0.0.1", 9001, "web");
    // TLS: a cluster trusting the SDS CA `root-ca`, a TCP listener serving the SDS certificate
    // `server-cert` (fixed PEM: the corpus must not change from run to run).
    let mut tls_web = eds_cluster("web");
    tls_web.transport_socket = Some(tls_socket(&upstream_tls_sds("web.example.com", "root-ca")));
    let mut tls_tcp = tcp.clone();
    tls_tcp.filter_chains[0].transport_socket =
        Some(tls_socket(&downstream_tls_sds("server-cert")));
    let (ca, chain, key) = (FUZZ_CA, FUZZ_CHAIN, FUZZ_KEY);
    let corpus: Vec<(&str, Vec<u8>)> = vec![
        (
            "full_http",
            encode(&[
                (ResourceType::Cluster, web.encode_to_vec()),
                (ResourceType::Listener, listener.encode_to_vec()),
                (ResourceType::Endpoints, cla.encode_to_vec()),
                (ResourceType::Route, routes.encode_to_vec()),
            ]),
        ),
        (
            "tcp_proxy",
            encode(&[
                (ResourceType::Cluster, web.encode_to_vec()),
                (ResourceType::Endpoints, cla.encode_to_vec()),
                (ResourceType::Listener, tcp.encode_to_vec()),
            ]),
        ),
        (
            "bad_port",
            encode(&[
                (ResourceType::Cluster, web.encode_to_vec()),
                (ResourceType::Endpoints, cla.encode_to_vec()),
                (
                    ResourceType::Listener,
                    http_listener("in", "127.0.0.1", 99999, "routes").encode_to_vec(),
                ),
                (ResourceType::Route, routes.encode_to_vec()),
            ]),
        ),
        (
            "istio_outbound",
            encode(&[
                (ResourceType::Cluster, istio_cluster_bytes()),
                (ResourceType::Listener, listener.encode_to_vec()),
            ]),
        ),
        (
            // Delta: the full config, then removals: of the cluster a route uses (refused), of
            // the listener (applies), of the cluster's endpoints (waits, then serves none).
            "delta_removals",
            encode_tagged(&[
                (tag(ResourceType::Cluster), web.encode_to_vec()),
                (tag(ResourceType::Listener), listener.encode_to_vec()),
                (tag(ResourceType::Endpoints), cla.encode_to_vec()),
                (tag(ResourceType::Route), routes.encode_to_vec()),
                (0xff, vec![0]),
                (tag(ResourceType::Cluster) | REMOVE, b"web".to_vec()),
                (0xff, vec![0]),
                (tag(ResourceType::Listener) | REMOVE, b"in".to_vec()),
                (0xff, vec![0]),
                (tag(ResourceType::Endpoints) | REMOVE, b"web".to_vec()),
            ]),
        ),
        (
            // TLS passthrough: filter chains by server name and a default chain.
            "sni_passthrough",
            {
                let r = super::tests_tls::sni_listener(&[
                    (&["api.example.com"], "api"),
                    (&[], "fallback"),
                ]);
                let mut records: Vec<(ResourceType, Vec<u8>)> = r
                    .clusters
                    .values()
                    .map(|c| (ResourceType::Cluster, c.encode_to_vec()))
                    .collect();
                records.push((ResourceType::Listener, r.listeners["sni"].encode_to_vec()));
                encode(&records)
            },
        ),
        (
            // TLS both ways with SDS secrets, then a rotated certificate, then a secret that
            // does not parse (refused).
            "tls_sds",
            encode_tagged(&[
                (tag(ResourceType::Cluster), tls_web.encode_to_vec()),
                (tag(ResourceType::Endpoints), cla.encode_to_vec()),
                (tag(ResourceType::Listener), tls_tcp.encode_to_vec()),
                (
                    tag(ResourceType::Secret),
                    ca_secret("root-ca", ca).encode_to_vec(),
                ),
                (
                    tag(ResourceType::Secret),
                    certificate_secret("server-cert", chain, key).encode_to_vec(),
                ),
                (0xff, vec![0]),
                (
                    tag(ResourceType::Secret),
                    certificate_secret("server-cert", chain, key).encode_to_vec(),
                ),
                (0xff, vec![0]),
                (
                    tag(ResourceType::Secret),
                    ca_secret(
                        "root-ca",
                        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
                    )
                    .encode_to_vec(),
                ),
            ]),
        ),
        (
            // Istio's inbound listener: filter chains by destination port, transport protocol
            // and ALPN, one terminating mTLS with SDS secrets, and a passthrough chain.
            "istio_inbound_chains",
            {
                let r = super::tests_chains::virtual_inbound_with(ca, chain, key);
                let mut records: Vec<(u8, Vec<u8>)> = r
                    .clusters
                    .values()
                    .map(|c| (tag(ResourceType::Cluster), c.encode_to_vec()))
                    .collect();
                records.push((0xff, vec![0]));
                records.push((
                    tag(ResourceType::Listener),
                    r.listeners["virtualInbound"].encode_to_vec(),
                ));
                for s in r.secrets.values() {
                    records.push((tag(ResourceType::Secret), s.encode_to_vec()));
                }
                encode_tagged(&records)
            },
        ),
        (
            // istiod's own inbound listener: http_inspector and tls_inspector with
            // filter_disabled, listener_filters_timeout 0s, metadata exchange and stats
            // filters before the terminal ones.
            "istiod_virtual_inbound",
            {
                let r =
                    crate::fixtures::istiod::virtual_inbound(ca, chain, key, ("127.0.0.1", 8080));
                let mut records: Vec<(u8, Vec<u8>)> = r
                    .clusters
                    .values()
                    .map(|c| (tag(ResourceType::Cluster), c.encode_to_vec()))
                    .collect();
                records.push((0xff, vec![0]));
                records.push((
                    tag(ResourceType::Listener),
                    r.listeners["virtualInbound"].encode_to_vec(),
                ));
                // Its secrets come from the agent's SDS server (`sds-grpc`), on its own stream.
                for s in r.source_secrets[crate::fixtures::istiod::SDS_GRPC].values() {
                    records.push((crate::fuzzing::SOURCE_SECRET, s.encode_to_vec()));
                }
                encode_tagged(&records)
            },
        ),
    ];
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/xds_translate");
    let bless = std::env::var_os("SLUICE_BLESS").is_some_and(|v| v == "1");
    if bless {
        std::fs::create_dir_all(&dir).expect("corpus dir");
    }
    for (name, bytes) in &corpus {
        if bless {
            std::fs::write(dir.join(name), bytes).expect("write");
        } else {
            let committed = std::fs::read(dir.join(name)).expect("the corpus is committed");
            assert_eq!(&committed, bytes, "{name}: regenerate with SLUICE_BLESS=1");
        }
    }
    // Warming per resource: the cluster applies once its endpoints came, then the listener
    // once its routes did.
    assert_eq!(drive(&corpus[0].1), 2, "the cluster, then the listener");
    // The cluster and its endpoints apply first (nothing waits for them), then the listener.
    assert_eq!(drive(&corpus[1].1), 2);
    assert_eq!(
        drive(&corpus[2].1),
        1,
        "the cluster applies, a listener on port 99999 never does"
    );
    drive(&corpus[3].1);
    assert_eq!(
        drive_delta(&corpus[0].1),
        2,
        "the cluster, then the listener (delta)"
    );
    assert_eq!(drive_delta(&corpus[1].1), 2);
    assert_eq!(drive_delta(&corpus[2].1), 1);
    assert_eq!(
        drive_delta(&corpus[4].1),
        4,
        "the cluster, the listener, then the listener's removal; the cluster's removal is \
         refused; the endpoints' removal makes the cluster wait, then serve none at the timeout"
    );
    assert_eq!(
        drive(&corpus[5].1),
        2,
        "the clusters apply (nothing waits for them), then the passthrough listener"
    );
    assert_eq!(
        drive(&corpus[6].1),
        1,
        "TLS with its secrets applies; the same secret again changes nothing; a bad CA is refused"
    );
    assert_eq!(drive_delta(&corpus[6].1), 1);
    assert_eq!(
        drive(&corpus[7].1),
        2,
        "the clusters, then Istio's inbound listener once its secrets came"
    );
    assert_eq!(drive_delta(&corpus[7].1), 2);
    assert_eq!(
        drive(&corpus[8].1),
        2,
        "the clusters, then istiod's virtualInbound once the SDS source's secrets came"
    );
    assert_eq!(drive_delta(&corpus[8].1), 2);
    // Truncated and garbled inputs.
    for (_, bytes) in &corpus {
        for cut in [1, 2, 3, bytes.len() / 2, bytes.len() - 1] {
            drive(&bytes[..cut]);
            drive_delta(&bytes[..cut]);
        }
        let flipped: Vec<u8> = bytes.iter().map(|b| b ^ 0x55).collect();
        drive(&flipped);
        drive_delta(&flipped);
    }
}

fn istio_cluster_bytes() -> Vec<u8> {
    use prost::Message;
    let mut c = eds_cluster("outbound|9080||reviews.default.svc.cluster.local");
    c.common_lb_config = Some(Default::default());
    c.encode_to_vec()
}

/// The upstream HTTP version a CDS cluster asks for (`HttpProtocolOptions`' explicit config)
/// becomes its `protocol`; one negotiated by ALPN (`auto_config`) is refused by name.
#[test]
fn the_explicit_http_protocol_of_a_cluster_is_its_protocol() {
    use envoy_types::pb::envoy::config::core::v3::{Http2ProtocolOptions, KeepaliveSettings};
    use envoy_types::pb::envoy::extensions::upstreams::http::v3::HttpProtocolOptions;
    use envoy_types::pb::envoy::extensions::upstreams::http::v3::http_protocol_options::{
        AutoHttpConfig, ExplicitHttpConfig, UpstreamProtocolOptions,
        explicit_http_config::ProtocolConfig,
    };
    use envoy_types::pb::google::protobuf::{Any, Duration as PbDuration};
    use prost::{Message as _, Name as _};
    const KEY: &str = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions";
    let with = |u: UpstreamProtocolOptions| {
        let mut r = resources();
        let o = HttpProtocolOptions {
            upstream_protocol_options: Some(u),
            ..Default::default()
        };
        r.clusters
            .get_mut("web")
            .expect("web")
            .typed_extension_protocol_options
            .insert(
                KEY.into(),
                Any {
                    type_url: HttpProtocolOptions::type_url(),
                    value: o.encode_to_vec(),
                },
            );
        r
    };
    let h2 = with(UpstreamProtocolOptions::ExplicitHttpConfig(
        ExplicitHttpConfig {
            protocol_config: Some(ProtocolConfig::Http2ProtocolOptions(
                Http2ProtocolOptions::default(),
            )),
        },
    ));
    let a = assemble(&bootstrap(), &h2).expect("valid");
    assert_eq!(
        a.config.clusters[0].protocol,
        sluice_core::config::UpstreamProtocol::Http2
    );
    assert_eq!(a.config.clusters[0].http2_keepalive, None);
    // Its PING keepalive is the cluster's (without a periodic interval Envoy sends none).
    let keepalive_jittered = |interval: i64, timeout: i64, jitter: Option<f64>| {
        with(UpstreamProtocolOptions::ExplicitHttpConfig(
            ExplicitHttpConfig {
                protocol_config: Some(ProtocolConfig::Http2ProtocolOptions(Http2ProtocolOptions {
                    connection_keepalive: Some(KeepaliveSettings {
                        interval: Some(PbDuration {
                            seconds: interval,
                            nanos: 0,
                        }),
                        timeout: Some(PbDuration {
                            seconds: timeout,
                            nanos: 0,
                        }),
                        interval_jitter: jitter
                            .map(|value| envoy_types::pb::envoy::r#type::v3::Percent { value }),
                        ..Default::default()
                    }),
                    ..Default::default()
                })),
            },
        ))
    };
    let keepalive = |interval: i64, timeout: i64| keepalive_jittered(interval, timeout, None);
    let a = assemble(&bootstrap(), &keepalive(30, 5)).expect("valid");
    assert_eq!(
        a.config.clusters[0].http2_keepalive,
        Some(sluice_core::config::Http2Keepalive {
            interval: std::time::Duration::from_secs(30),
            timeout: std::time::Duration::from_secs(5),
            interval_jitter_percent: 15,
        })
    );
    // `interval_jitter`: rounded to a whole percent; outside 0–100 refused by its path.
    let a = assemble(&bootstrap(), &keepalive_jittered(30, 5, Some(4.6))).expect("valid");
    assert_eq!(
        a.config.clusters[0]
            .http2_keepalive
            .map(|k| k.interval_jitter_percent),
        Some(5)
    );
    let a = assemble(&bootstrap(), &keepalive_jittered(30, 5, Some(0.3))).expect("valid");
    assert_eq!(
        a.config.clusters[0]
            .http2_keepalive
            .map(|k| k.interval_jitter_percent),
        Some(1)
    );
    let errs = errors(&keepalive_jittered(30, 5, Some(150.0)));
    assert!(
        errs[0].contains(
            "connection_keepalive.interval_jitter: 150 is not a percentage from 0 to 100"
        ),
        "{errs:?}"
    );
    let a = assemble(&bootstrap(), &keepalive(0, 5)).expect("valid");
    assert_eq!(a.config.clusters[0].http2_keepalive, None);
    let errs = errors(&keepalive(30, 0));
    assert!(
        errs[0].contains(
            "http2_protocol_options.connection_keepalive.timeout: must be set and above zero"
        ),
        "{errs:?}"
    );
    let plain = assemble(&bootstrap(), &resources()).expect("valid");
    assert_eq!(
        plain.config.clusters[0].protocol,
        sluice_core::config::UpstreamProtocol::Http1
    );
    let auto = with(UpstreamProtocolOptions::AutoConfig(
        AutoHttpConfig::default(),
    ));
    let errs = errors(&auto);
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(
        errs[0].starts_with(&format!(
            "cluster \"web\" typed_extension_protocol_options[{KEY:?}].auto_config: unsupported"
        )),
        "{errs:?}"
    );
}

/// `use_downstream_protocol_config` (Istio's pass-through and inbound clusters) becomes
/// `protocol: downstream`, its HTTP/2 options' keepalive the cluster's `http2` one; its
/// HTTP/3 options are refused by their path (no client of Sluice speaks HTTP/3).
#[test]
fn use_downstream_protocol_config_is_the_downstream_protocol() {
    use envoy_types::pb::envoy::config::core::v3::{
        Http1ProtocolOptions, Http2ProtocolOptions, Http3ProtocolOptions, KeepaliveSettings,
    };
    use envoy_types::pb::envoy::extensions::upstreams::http::v3::HttpProtocolOptions;
    use envoy_types::pb::envoy::extensions::upstreams::http::v3::http_protocol_options::{
        UpstreamProtocolOptions, UseDownstreamHttpConfig,
    };
    use envoy_types::pb::google::protobuf::{Any, Duration as PbDuration};
    use prost::{Message as _, Name as _};
    const KEY: &str = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions";
    let with = |d: UseDownstreamHttpConfig| {
        let mut r = resources();
        let o = HttpProtocolOptions {
            upstream_protocol_options: Some(UpstreamProtocolOptions::UseDownstreamProtocolConfig(
                d,
            )),
            ..Default::default()
        };
        r.clusters
            .get_mut("web")
            .expect("web")
            .typed_extension_protocol_options
            .insert(
                KEY.into(),
                Any {
                    type_url: HttpProtocolOptions::type_url(),
                    value: o.encode_to_vec(),
                },
            );
        r
    };
    // As Istio writes it: both versions' options, no keepalive.
    let istio = with(UseDownstreamHttpConfig {
        http_protocol_options: Some(Http1ProtocolOptions::default()),
        http2_protocol_options: Some(Http2ProtocolOptions::default()),
        http3_protocol_options: None,
    });
    let a = assemble(&bootstrap(), &istio).expect("valid");
    assert_eq!(
        a.config.clusters[0].protocol,
        sluice_core::config::UpstreamProtocol::Downstream
    );
    assert_eq!(a.config.clusters[0].http2_keepalive, None);
    let keepalive = with(UseDownstreamHttpConfig {
        http2_protocol_options: Some(Http2ProtocolOptions {
            connection_keepalive: Some(KeepaliveSettings {
                interval: Some(PbDuration {
                    seconds: 30,
                    nanos: 0,
                }),
                timeout: Some(PbDuration {
                    seconds: 5,
                    nanos: 0,
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    });
    let a = assemble(&bootstrap(), &keepalive).expect("valid");
    assert_eq!(
        a.config.clusters[0].http2_keepalive,
        Some(sluice_core::config::Http2Keepalive {
            interval: std::time::Duration::from_secs(30),
            timeout: std::time::Duration::from_secs(5),
            interval_jitter_percent: 15,
        })
    );
    let errs = errors(&with(UseDownstreamHttpConfig {
        http2_protocol_options: Some(Http2ProtocolOptions {
            connection_keepalive: Some(KeepaliveSettings {
                interval: Some(PbDuration {
                    seconds: 30,
                    nanos: 0,
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }));
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(
        errs[0].contains(
            "use_downstream_protocol_config.http2_protocol_options.connection_keepalive.timeout: \
             must be set and above zero"
        ),
        "{errs:?}"
    );
    let errs = errors(&with(UseDownstreamHttpConfig {
        http3_protocol_options: Some(Http3ProtocolOptions::default()),
        ..Default::default()
    }));
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(
        errs[0].starts_with(&format!(
            "cluster \"web\" typed_extension_protocol_options[{KEY:?}].\
             use_downstream_protocol_config.http3_protocol_options: unsupported"
        )),
        "{errs:?}"
    );
}

/// Istio lists each service with and without its port (`reviews`, `reviews:9080`); Sluice
/// matches the Host header without its port, so they become one domain each.
#[test]
fn virtual_host_domains_lose_their_ports() {
    use envoy_types::pb::envoy::config::route::v3::VirtualHost;
    let mut rc = route_config("9080", "web");
    let vh: &mut VirtualHost = &mut rc.virtual_hosts[0];
    vh.domains = [
        "reviews.default.svc.cluster.local",
        "reviews.default.svc.cluster.local:9080",
        "reviews",
        "reviews:9080",
        "10.96.0.7:9080",
        "[fd00::7]:9080",
        "[fd00::7]",
    ]
    .map(String::from)
    .to_vec();
    let mut notes = Notes::default();
    let v = translate_route_configuration(&rc, &mut notes).expect("accepted");
    assert_eq!(
        v[0]["domains"],
        serde_json::json!([
            "reviews.default.svc.cluster.local",
            "reviews",
            "10.96.0.7",
            "[fd00::7]"
        ])
    );
}

fn grpc_health_check(
    g: envoy_types::pb::envoy::config::core::v3::health_check::GrpcHealthCheck,
) -> envoy_types::pb::envoy::config::core::v3::HealthCheck {
    use envoy_types::pb::envoy::config::core::v3::{HealthCheck, health_check::HealthChecker};
    HealthCheck {
        timeout: Some(PbDuration {
            seconds: 2,
            nanos: 0,
        }),
        interval: Some(PbDuration {
            seconds: 5,
            nanos: 0,
        }),
        unhealthy_threshold: Some(UInt32Value { value: 3 }),
        healthy_threshold: Some(UInt32Value { value: 1 }),
        health_checker: Some(HealthChecker::GrpcHealthCheck(g)),
        ..HealthCheck::default()
    }
}

#[test]
fn a_grpc_health_check_translates_and_initial_metadata_is_named() {
    use envoy_types::pb::envoy::config::core::v3::health_check::GrpcHealthCheck;
    use sluice_core::config::HealthProbe;

    let with = |g: GrpcHealthCheck| {
        let mut r = resources();
        r.clusters
            .get_mut("web")
            .expect("web")
            .health_checks
            .push(grpc_health_check(g));
        r
    };
    // Envoy's defaults (empty): the overall health, the cluster's name as authority.
    let c = assemble(&bootstrap(), &with(GrpcHealthCheck::default()))
        .expect("valid")
        .config;
    let hc = c.clusters[0].health_check.as_ref().expect("checked");
    assert_eq!(
        hc.probe,
        HealthProbe::Grpc {
            service_name: String::new(),
            authority: None
        }
    );
    assert_eq!(hc.settings.interval, std::time::Duration::from_secs(5));
    assert_eq!(hc.settings.timeout, std::time::Duration::from_secs(2));
    assert_eq!(
        (
            hc.settings.unhealthy_threshold,
            hc.settings.healthy_threshold
        ),
        (3, 1)
    );

    let c = assemble(
        &bootstrap(),
        &with(GrpcHealthCheck {
            service_name: "reviews.Reviews".into(),
            authority: "reviews.default.svc".into(),
            ..GrpcHealthCheck::default()
        }),
    )
    .expect("valid")
    .config;
    assert_eq!(
        c.clusters[0].health_check.as_ref().expect("checked").probe,
        HealthProbe::Grpc {
            service_name: "reviews.Reviews".into(),
            authority: Some("reviews.default.svc".into())
        }
    );

    // Headers added to the call: not supported, named with their path (a NACK).
    let e = errors(&with(GrpcHealthCheck {
        initial_metadata: vec![overwrite("x-probe", "1")],
        ..GrpcHealthCheck::default()
    }));
    assert_eq!(
        e,
        ["cluster \"web\" health_checks[0].grpc_health_check.initial_metadata: unsupported"]
    );
    // An authority the config refuses: the error names the resource and the config path.
    let e = errors(&with(GrpcHealthCheck {
        authority: "a b".into(),
        ..GrpcHealthCheck::default()
    }));
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(
        e[0].starts_with("cluster \"web\"") && e[0].contains("health_check.grpc.authority"),
        "{e:?}"
    );
}

#[test]
fn other_health_checkers_are_refused_by_name() {
    use envoy_types::pb::envoy::config::core::v3::{
        HealthCheck, health_check::CustomHealthCheck, health_check::HealthChecker,
    };
    let mut r = resources();
    r.clusters
        .get_mut("web")
        .expect("web")
        .health_checks
        .push(HealthCheck {
            health_checker: Some(HealthChecker::CustomHealthCheck(
                CustomHealthCheck::default(),
            )),
            ..grpc_health_check(Default::default())
        });
    let e = errors(&r);
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(
        e[0].contains("only http_health_check, tcp_health_check and grpc_health_check"),
        "{e:?}"
    );
}

/// A route configuration several listeners use is translated for each, and its ignored
/// fields are counted once (`sluice_xds_ignored_fields` is a count of fields, not of uses).
#[test]
fn a_shared_route_configurations_ignored_fields_count_once() {
    let mut r = resources();
    for (i, port) in [9001u32, 9002, 9003].into_iter().enumerate() {
        let name = format!("in{i}");
        r.listeners.insert(
            name.clone(),
            http_listener(&name, "127.0.0.1", port, "routes"),
        );
    }
    r.routes.get_mut("routes").unwrap().metadata = Some(Default::default());
    let a = assemble(&bootstrap(), &r).expect("accepted");
    let route = ResourceType::ALL
        .iter()
        .position(|k| *k == ResourceType::Route)
        .unwrap();
    let of_routes: Vec<&String> = a
        .notes
        .ignored
        .iter()
        .filter(|n| n.starts_with("route_configuration \"routes\""))
        .collect();
    assert_eq!(
        of_routes,
        ["route_configuration \"routes\" metadata"],
        "{:#?}",
        a.notes
    );
    assert_eq!(a.notes.ignored_by_type[route], 1, "{:#?}", a.notes);
}

/// An entry whose value has variables adds nothing when it renders empty, so level merging
/// cannot assume it adds its header: an overwrite with variables is never turned into a
/// removal plus an append, never replaces an inner level's entry, and no condition is decided
/// on it — those combinations are NACKed by the value's path; appends on both sides, and a
/// plain overwrite after it, merge as before.
#[test]
fn values_with_variables_merge_only_where_an_empty_rendering_keeps_its_meaning() {
    use HeaderAppendAction as H;
    let at = "route_configuration \"routes\" virtual_hosts[0]";
    let refused = |route: HeaderValueOption, vhost: HeaderValueOption| {
        let mut r = resources();
        let mut rc = route_config("routes", "web");
        rc.virtual_hosts[0].request_headers_to_add = vec![vhost];
        rc.virtual_hosts[0].routes[0].request_headers_to_add = vec![route];
        r.routes.insert("routes".into(), rc);
        errors(&r)
    };
    let vars = "%REQ(x-in)%";
    // An inner overwrite with variables, then an outer append: not remove + append.
    let e = refused(overwrite("x-a", vars), add("x-a", "vhost"));
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(
        e[0].starts_with(&format!(
            "{at}.routes[0].request_headers_to_add[0].header.value: a value with variables"
        )),
        "{e:?}"
    );
    // An outer overwrite with variables would replace the inner entry even when empty.
    let e = refused(add("x-a", "route"), overwrite("x-a", vars));
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(
        e[0].starts_with(&format!(
            "{at}.request_headers_to_add[0].header.value: a value with variables"
        )),
        "{e:?}"
    );
    // A second ADD_IF_ABSENT after one with variables is not "never added".
    let e = refused(
        with_action("x-a", vars, H::AddIfAbsent),
        with_action("x-a", "vhost", H::AddIfAbsent),
    );
    assert_eq!(e.len(), 1, "{e:?}");
    // An outer OVERWRITE_IF_EXISTS is not decided "present" after a value with variables.
    let e = refused(
        add("x-a", vars),
        with_action("x-a", "vhost", H::OverwriteIfExists),
    );
    assert_eq!(e.len(), 1, "{e:?}");

    // What keeps its meaning still merges.
    let mut rc = route_config("routes", "web");
    rc.virtual_hosts[0].request_headers_to_add =
        vec![add("x-a", "vhost"), overwrite("x-b", "vhost")];
    rc.virtual_hosts[0].routes[0].request_headers_to_add =
        vec![add("x-a", vars), overwrite("x-b", vars)];
    let f = first_forward(rc);
    assert_eq!(
        added(&f.request_headers_to_add),
        [
            ("x-a", vars, APPEND),
            ("x-b", "vhost", OVERWRITE),
            ("x-a", "vhost", APPEND),
        ]
    );
}

/// An added header value with a control character (which HTTP/1.1 would write as a space and
/// HTTP/2 drop with its field) is refused by the resource, the entry's path and the header, at
/// each level and in `raw_value` too; HTAB and non-ASCII text are taken as written.
#[test]
fn an_added_header_value_with_a_control_character_is_refused_by_path() {
    let why =
        "(a header value is visible characters, spaces, tabs and non-ASCII text: RFC 9110 §5.5)";
    let mut r = resources();
    let mut rc = route_config("routes", "web");
    rc.virtual_hosts[0].routes[0].response_headers_to_add = vec![add("x-a", "a\u{1}b")];
    r.routes.insert("routes".into(), rc);
    assert_eq!(
        errors(&r),
        [format!(
            "route_configuration \"routes\" virtual_hosts[0].routes[0].response_headers_to_add[0].header.value: \
             value \"a\\u{{1}}b\" of header \"x-a\" contains the control character 0x01 at byte 1 {why}"
        )]
    );
    let mut rc = route_config("routes", "web");
    let mut raw = add("x-raw", "");
    raw.header.as_mut().expect("header").raw_value = b"ok\x7f".to_vec();
    rc.virtual_hosts[0].request_headers_to_add = vec![add("x-tab", "a\tb \u{e9}"), raw];
    r.routes.insert("routes".into(), rc);
    assert_eq!(
        errors(&r),
        [format!(
            "route_configuration \"routes\" virtual_hosts[0].request_headers_to_add[1].header.raw_value: \
             value \"ok\\u{{7f}}\" of header \"x-raw\" contains the control character 0x7f at byte 2 {why}"
        )]
    );
    let mut rc = route_config("routes", "web");
    rc.response_headers_to_add = vec![add("x-tab", "a\tb \u{e9}")];
    r.routes.insert("routes".into(), rc);
    let c = assemble(&bootstrap(), &r).expect("valid").config;
    let ListenerFilter::Http(h) = &c.listeners[0].filter else {
        panic!("http")
    };
    let Action2::Forward(f) = &h.virtual_hosts[0].routes[0].action else {
        panic!("forward")
    };
    assert_eq!(
        added(&f.response_headers_to_add),
        [("x-tab", "a\tb \u{e9}", APPEND)]
    );
}
