use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use envoy_types::pb::google::protobuf::Any;
use serde_json::json;

use super::*;
use crate::fixtures::*;

/// The node of every test (shared with the delta tests).
pub(super) fn node() -> Node {
    Node {
        id: "sidecar-1".into(),
        cluster: "web".into(),
        ..Default::default()
    }
}

fn ads() -> Ads {
    Ads::new(node(), bootstrap())
}

/// The bootstrap of every test: as a user's, an `xds` section and its static cluster (so
/// that a config of clusters only is valid, as it is when clusters warm before listeners).
pub(super) fn bootstrap() -> serde_json::Value {
    json!({
        "node": { "id": "sidecar-1", "cluster": "web" },
        "xds": { "cluster": "xds_server" },
        "listeners": [],
        "clusters": [{ "name": "xds_server", "hosts": [{ "address": "127.0.0.1:18000" }] }],
    })
}

/// The clusters of a config that came from xDS (not the bootstrap's).
pub(super) fn dynamic_clusters(config: &Config) -> Vec<&sluice_core::config::ClusterConfig> {
    config
        .clusters
        .iter()
        .filter(|c| c.name != "xds_server")
        .collect()
}

pub(super) fn drain(a: &mut Ads) -> Vec<Output> {
    std::iter::from_fn(|| a.poll_output()).collect()
}

fn sent(outputs: &[Output]) -> Vec<&DiscoveryRequest> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::Send(r, _) => Some(&**r),
            _ => None,
        })
        .collect()
}

/// Drains the outputs, reporting every apply among them as done (each may lead to the next:
/// resources that warm apply one after another), until none is left; all the outputs seen.
pub(super) fn settle(a: &mut Ads) -> Vec<Output> {
    let mut all = Vec::new();
    loop {
        let out = drain(a);
        let id = apply_id(&out);
        all.extend(out);
        match id {
            Some(id) => a.handle_input(Input::Applied(id)),
            None => return all,
        }
    }
}

pub(super) fn apply_id(outputs: &[Output]) -> Option<u64> {
    outputs.iter().find_map(|o| match o {
        Output::Apply { id, .. } => Some(*id),
        _ => None,
    })
}

/// The answers among `out` (ACKs and NACKs, both protocols): type, nonce, error if a NACK.
pub(super) fn answers(out: &[Output]) -> Vec<(ResourceType, String, Option<String>)> {
    out.iter()
        .filter_map(|o| {
            let (type_url, nonce, error) = match o {
                Output::Send(r, Answer::Ack | Answer::Nack) => {
                    (&r.type_url, &r.response_nonce, &r.error_detail)
                }
                Output::SendDelta(r, Answer::Ack | Answer::Nack) => {
                    (&r.type_url, &r.response_nonce, &r.error_detail)
                }
                _ => return None,
            };
            Some((
                ResourceType::from_type_url(type_url).expect("known type"),
                nonce.clone(),
                error.as_ref().map(|e| e.message.clone()),
            ))
        })
        .collect()
}

pub(super) fn applied_config(outputs: &[Output]) -> &Config {
    outputs
        .iter()
        .find_map(|o| match o {
            Output::Apply { config, .. } => Some(&**config),
            _ => None,
        })
        .expect("an apply")
}

fn response(kind: ResourceType, version: &str, nonce: &str, resources: Vec<Any>) -> Input {
    Input::Response(DiscoveryResponse {
        version_info: version.into(),
        resources,
        type_url: kind.type_url().into(),
        nonce: nonce.into(),
        ..Default::default()
    })
}

/// (type, version, nonce, names, error?) of a request, for compact assertions.
fn summary(r: &DiscoveryRequest) -> (ResourceType, &str, &str, Vec<&str>, Option<&str>) {
    (
        ResourceType::from_type_url(&r.type_url).expect("known type"),
        r.version_info.as_str(),
        r.response_nonce.as_str(),
        r.resource_names.iter().map(String::as_str).collect(),
        r.error_detail.as_ref().map(|e| e.message.as_str()),
    )
}

use ResourceType::{Cluster as Cds, Endpoints as Eds, Listener as Lds, Route as Rds};

/// Connected, and the first complete config (cluster web with one endpoint, listener `in`
/// on 127.0.0.1:9000 with routes `routes`) applied and ACKed, all at version 1.
fn serving() -> Ads {
    let mut a = ads();
    a.handle_input(Input::Connected);
    drain(&mut a);
    a.handle_input(response(Cds, "1", "c1", vec![any(&eds_cluster("web"))]));
    a.handle_input(response(
        Lds,
        "1",
        "l1",
        vec![any(&http_listener("in", "127.0.0.1", 9000, "routes"))],
    ));
    a.handle_input(response(
        Eds,
        "1",
        "e1",
        vec![any(&assignment("web", &[("127.0.0.1", 8001, 0)]))],
    ));
    a.handle_input(response(
        Rds,
        "1",
        "r1",
        vec![any(&route_config("routes", "web"))],
    ));
    let out = settle(&mut a);
    assert!(apply_id(&out).is_some(), "complete");
    a
}

#[test]
fn first_requests_subscribe_to_clusters_and_listeners_with_the_node() {
    let mut a = ads();
    a.handle_input(Input::Connected);
    let out = drain(&mut a);
    let reqs = sent(&out);
    assert_eq!(
        reqs.iter().map(|r| summary(r)).collect::<Vec<_>>(),
        [(Cds, "", "", vec![], None), (Lds, "", "", vec![], None)]
    );
    assert_eq!(
        reqs[0].node.as_ref().map(|n| n.id.as_str()),
        Some("sidecar-1")
    );
    assert!(
        reqs[1].node.is_none(),
        "only the first request carries the node"
    );
}

/// Warming per resource, as Envoy's: a CDS or LDS response whose resources wait is ACKed once
/// they are added (nothing the workers serve changes); each resource applies once what it
/// waits for came, and what that brought is ACKed only after the workers switched.
#[test]
fn a_config_is_applied_only_when_warm_and_acked_only_after_the_switch() {
    let mut a = ads();
    a.handle_input(Input::Connected);
    drain(&mut a);
    // CDS: the EDS cluster makes an EDS subscription and warms; the CDS response is ACKed
    // (the cluster is added, warming), nothing applied.
    a.handle_input(response(Cds, "1", "c1", vec![any(&eds_cluster("web"))]));
    let out = drain(&mut a);
    assert_eq!(
        sent(&out).iter().map(|r| summary(r)).collect::<Vec<_>>(),
        [
            (Eds, "", "", vec!["web"], None),
            (Cds, "1", "c1", vec![], None)
        ]
    );
    assert!(out.iter().any(|o| matches!(o, Output::ArmWarmingTimer(_))));
    assert!(apply_id(&out).is_none());
    assert_eq!(
        a.warming().iter().collect::<Vec<_>>(),
        [&(Cds, "web".into())]
    );
    // LDS: the listener names its routes, and warms too.
    a.handle_input(response(
        Lds,
        "1",
        "l1",
        vec![any(&http_listener("in", "127.0.0.1", 9000, "routes"))],
    ));
    let out = drain(&mut a);
    assert_eq!(
        sent(&out).iter().map(|r| summary(r)).collect::<Vec<_>>(),
        [
            (Rds, "", "", vec!["routes"], None),
            (Lds, "1", "l1", vec![], None)
        ]
    );
    assert!(apply_id(&out).is_none());
    // EDS: the cluster is warm and applies alone; the listener still waits for its routes.
    a.handle_input(response(
        Eds,
        "1",
        "e1",
        vec![any(&assignment("web", &[("127.0.0.1", 8001, 0)]))],
    ));
    let out = drain(&mut a);
    assert!(sent(&out).is_empty(), "no ACK before the workers switched");
    let config = applied_config(&out);
    assert!(
        config.listeners.is_empty(),
        "the listener waits for its routes"
    );
    assert_eq!(dynamic_clusters(config)[0].hosts.len(), 1);
    a.handle_input(Input::Applied(apply_id(&out).expect("apply")));
    let out = drain(&mut a);
    assert_eq!(
        sent(&out).iter().map(|r| summary(r)).collect::<Vec<_>>(),
        [(Eds, "1", "e1", vec!["web"], None)]
    );
    a.handle_input(response(
        Rds,
        "1",
        "r1",
        vec![any(&route_config("routes", "web"))],
    ));
    let out = drain(&mut a);
    assert!(sent(&out).is_empty(), "no ACK before the workers switched");
    let config = applied_config(&out);
    assert_eq!(config.listeners[0].name, "in");
    assert_eq!(dynamic_clusters(config)[0].hosts.len(), 1);
    a.handle_input(Input::Applied(apply_id(&out).expect("apply")));
    let out = drain(&mut a);
    assert_eq!(
        sent(&out).iter().map(|r| summary(r)).collect::<Vec<_>>(),
        [(Rds, "1", "r1", vec!["routes"], None)]
    );
    for kind in [Cds, Eds, Lds, Rds] {
        assert_eq!(a.accepted_version(kind), "1");
    }
    assert!(a.warming().is_empty());
}

#[test]
fn an_invalid_listener_is_nacked_with_the_previous_version_and_a_useful_error() {
    let mut a = serving();
    a.handle_input(response(
        Lds,
        "2",
        "l2",
        vec![any(&http_listener("in", "127.0.0.1", 99999, "routes"))],
    ));
    let out = drain(&mut a);
    assert!(
        apply_id(&out).is_none(),
        "nothing applied: the last good config serves"
    );
    let reqs = sent(&out);
    assert_eq!(reqs.len(), 1);
    let (kind, version, nonce, _, error) = summary(reqs[0]);
    assert_eq!((kind, version, nonce), (Lds, "1", "l2"));
    let error = error.expect("error_detail");
    // Named by the resource and the xDS field's path.
    assert_eq!(
        error,
        "listener \"in\" address.socket_address.port_value: 99999 is not a port (0 to 65535)"
    );
    assert_eq!(reqs[0].error_detail.as_ref().map(|e| e.code), Some(3));
    assert_eq!(a.accepted_version(Lds), "1");
    assert_eq!(
        a.applied().listeners["in"],
        http_listener("in", "127.0.0.1", 9000, "routes")
    );

    // The next good version is taken.
    a.handle_input(response(
        Lds,
        "3",
        "l3",
        vec![any(&http_listener("in", "127.0.0.1", 9001, "routes"))],
    ));
    let out = drain(&mut a);
    assert_eq!(applied_config(&out).listeners[0].address.port(), 9001);
}

#[test]
fn a_cds_update_that_drops_a_cluster_removes_it_and_its_endpoints() {
    let mut a = serving();
    let mut api = eds_cluster("api");
    api.name = "api".into();
    a.handle_input(response(
        Cds,
        "2",
        "c2",
        vec![any(&eds_cluster("web")), any(&api)],
    ));
    let out = drain(&mut a);
    // `api` is added, warming: ACKed (nothing the workers serve changes).
    assert_eq!(
        sent(&out).iter().map(|r| summary(r)).collect::<Vec<_>>(),
        [
            (Eds, "1", "e1", vec!["api", "web"], None),
            (Cds, "2", "c2", vec![], None)
        ]
    );
    assert!(apply_id(&out).is_none());
    a.handle_input(response(
        Eds,
        "2",
        "e2",
        vec![any(&assignment("api", &[("127.0.0.1", 8100, 0)]))],
    ));
    let out = drain(&mut a);
    assert_eq!(dynamic_clusters(applied_config(&out)).len(), 2);
    a.handle_input(Input::Applied(apply_id(&out).expect("apply")));
    drain(&mut a);

    // State of the world: `api` is no longer listed.
    a.handle_input(response(Cds, "3", "c3", vec![any(&eds_cluster("web"))]));
    let out = drain(&mut a);
    let names: Vec<&str> = applied_config(&out)
        .clusters
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(names, ["xds_server", "web"]);
    assert_eq!(
        sent(&out).iter().map(|r| summary(r)).collect::<Vec<_>>(),
        [(Eds, "2", "e2", vec!["web"], None)]
    );
    a.handle_input(Input::Applied(apply_id(&out).expect("apply")));
    assert!(!a.applied().endpoints.contains_key("api"));
}

#[test]
fn removing_a_cluster_a_route_still_uses_is_refused() {
    let mut a = serving();
    a.handle_input(response(Cds, "2", "c2", vec![]));
    let out = drain(&mut a);
    assert!(apply_id(&out).is_none());
    let reqs = sent(&out);
    let nack = reqs
        .iter()
        .map(|r| summary(r))
        .find(|s| s.0 == Cds)
        .expect("a CDS NACK");
    assert_eq!((nack.1, nack.2), ("1", "c2"));
    assert!(nack.4.expect("error").contains("web"), "{nack:?}");
    assert!(a.applied().clusters.contains_key("web"));
}

/// The warming timer armed among `out`.
pub(super) fn timer_of(out: &[Output]) -> u64 {
    out.iter()
        .find_map(|o| match o {
            Output::ArmWarmingTimer(id) => Some(*id),
            _ => None,
        })
        .unwrap_or_else(|| panic!("a warming timer: {out:?}"))
}

/// The hosts' ports of cluster `name` in a config.
pub(super) fn ports(config: &Config, name: &str) -> Vec<u16> {
    config
        .clusters
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("cluster {name} in {:?}", config.clusters))
        .hosts
        .iter()
        .map(|h| h.address.port())
        .collect()
}

/// A cluster whose assignment never comes serves with no endpoints once the initial fetch
/// timeout expires (not refused: its CDS response was ACKed when it was added); the
/// assignment arriving later applies as any update.
#[test]
fn warming_is_bounded_by_the_initial_fetch_timeout() {
    let mut a = serving();
    let mut api = eds_cluster("api");
    api.name = "api".into();
    a.handle_input(response(
        Cds,
        "2",
        "c2",
        vec![any(&eds_cluster("web")), any(&api)],
    ));
    let out = drain(&mut a);
    let timer = timer_of(&out);
    assert!(apply_id(&out).is_none());
    // A stale timer is ignored.
    a.handle_input(Input::WarmingTimeout(timer + 100));
    assert!(drain(&mut a).is_empty());
    assert_eq!(a.warming_timeouts(), [0; 5]);
    a.handle_input(Input::WarmingTimeout(timer));
    // One resource timed out: `api`'s endpoints (cluster, endpoints, listener, route, secret).
    assert_eq!(a.warming_timeouts(), [0, 1, 0, 0, 0]);
    a.handle_input(Input::WarmingTimeout(timer));
    assert_eq!(a.warming_timeouts(), [0, 1, 0, 0, 0], "counted once");
    let out = drain(&mut a);
    assert!(sent(&out).is_empty(), "nothing refused: {out:?}");
    let config = applied_config(&out);
    assert_eq!(ports(config, "api"), Vec::<u16>::new(), "no endpoints: 503");
    assert_eq!(ports(config, "web"), [8001]);
    a.handle_input(Input::Applied(apply_id(&out).expect("apply")));
    assert!(drain(&mut a).is_empty());
    assert!(a.warming().is_empty(), "served, with no endpoints");
    assert_eq!(a.accepted_version(Cds), "2");
    // The assignment comes late: it applies, and is ACKed.
    a.handle_input(response(
        Eds,
        "3",
        "e3",
        vec![any(&assignment("api", &[("127.0.0.1", 8100, 0)]))],
    ));
    let out = drain(&mut a);
    assert_eq!(ports(applied_config(&out), "api"), [8100]);
    a.handle_input(Input::Applied(apply_id(&out).expect("apply")));
    assert_eq!(
        sent(&drain(&mut a))
            .iter()
            .map(|r| summary(r))
            .collect::<Vec<_>>(),
        [(Eds, "3", "e3", vec!["api", "web"], None)]
    );
}

/// A cluster waiting for its endpoints holds back neither an unrelated listener nor a route
/// update; a route to it waits for it.
#[test]
fn a_cluster_waiting_for_endpoints_holds_back_only_what_routes_to_it() {
    let mut a = serving();
    let mut api = eds_cluster("api");
    api.name = "api".into();
    a.handle_input(response(
        Cds,
        "2",
        "c2",
        vec![any(&eds_cluster("web")), any(&api)],
    ));
    drain(&mut a);
    // An unrelated new listener, with its routes (to `web`), applies while `api` waits.
    a.handle_input(response(
        Lds,
        "2",
        "l2",
        vec![
            any(&http_listener("in", "127.0.0.1", 9000, "routes")),
            any(&tcp_listener("tcp", "127.0.0.1", 9100, "web")),
        ],
    ));
    let out = drain(&mut a);
    let config = applied_config(&out);
    assert_eq!(config.listeners.len(), 2, "{:?}", config.listeners);
    assert!(!config.clusters.iter().any(|c| c.name == "api"));
    a.handle_input(Input::Applied(apply_id(&out).expect("apply")));
    assert_eq!(
        sent(&drain(&mut a))
            .iter()
            .map(|r| summary(r))
            .collect::<Vec<_>>(),
        [(Lds, "2", "l2", vec![], None)]
    );
    // A route update to the warming cluster waits (the old routes serve on): ACKed, since
    // the route configuration is accepted, but not applied.
    a.handle_input(response(
        Rds,
        "2",
        "r2",
        vec![any(&route_config("routes", "api"))],
    ));
    let out = drain(&mut a);
    assert!(apply_id(&out).is_none(), "{out:?}");
    assert!(a.warming().contains(&(Rds, "routes".into())));
    assert!(a.warming().contains(&(Cds, "api".into())));
    assert_eq!(
        a.applied().routes["routes"],
        route_config("routes", "web"),
        "the old routes serve on"
    );
    // Its endpoints come: the cluster, then the route to it, apply together.
    a.handle_input(response(
        Eds,
        "2",
        "e2",
        vec![any(&assignment("api", &[("127.0.0.1", 8100, 0)]))],
    ));
    let out = drain(&mut a);
    let config = applied_config(&out);
    assert_eq!(ports(config, "api"), [8100]);
    assert_eq!(
        a.in_flight.as_ref().unwrap().resources.routes["routes"],
        route_config("routes", "api")
    );
    a.handle_input(Input::Applied(apply_id(&out).expect("apply")));
    drain(&mut a);
    assert!(a.warming().is_empty());
}

/// An updated cluster that waits for its new assignment (another EDS service name) keeps
/// serving its previous version and endpoints until the new one comes (`api`: no route names
/// it, so only warming keeps it).
#[test]
fn an_updated_cluster_serves_its_old_endpoints_until_its_new_assignment_comes() {
    let mut a = serving();
    let mut api = eds_cluster("api");
    api.name = "api".into();
    a.handle_input(response(
        Cds,
        "2",
        "c2",
        vec![any(&eds_cluster("web")), any(&api)],
    ));
    a.handle_input(response(
        Eds,
        "2",
        "e2",
        vec![any(&assignment("api", &[("127.0.0.1", 8100, 0)]))],
    ));
    settle(&mut a);
    let mut api2 = api.clone();
    api2.eds_cluster_config.as_mut().expect("eds").service_name = "api-v2".into();
    a.handle_input(response(
        Cds,
        "3",
        "c3",
        vec![any(&eds_cluster("web")), any(&api2)],
    ));
    let out = drain(&mut a);
    assert!(apply_id(&out).is_none(), "{out:?}");
    assert_eq!(a.applied().clusters["api"], api, "the old version serves");
    assert_eq!(
        ports(
            &translate::assemble(&bootstrap(), a.applied())
                .unwrap()
                .config,
            "api"
        ),
        [8100]
    );
    assert!(a.warming().contains(&(Cds, "api".into())));
    // The new version's assignment comes: it applies with it.
    a.handle_input(response(
        Eds,
        "3",
        "e3",
        vec![any(&assignment("api-v2", &[("127.0.0.1", 8200, 0)]))],
    ));
    let out = drain(&mut a);
    assert_eq!(ports(applied_config(&out), "api"), [8200]);
    a.handle_input(Input::Applied(apply_id(&out).expect("apply")));
    assert_eq!(a.applied().clusters["api"], api2);
    assert!(a.warming().is_empty());
}

#[test]
fn a_failed_apply_is_nacked_and_the_next_update_still_applies() {
    let mut a = serving();
    a.handle_input(response(
        Eds,
        "2",
        "e2",
        vec![any(&assignment("web", &[("127.0.0.1", 8002, 0)]))],
    ));
    let out = drain(&mut a);
    let id = apply_id(&out).expect("apply");
    a.handle_input(Input::ApplyFailed(id, "bind: address in use".into()));
    let out = drain(&mut a);
    assert_eq!(
        sent(&out).iter().map(|r| summary(r)).collect::<Vec<_>>(),
        [(
            Eds,
            "1",
            "e2",
            vec!["web"],
            Some("applying failed: bind: address in use")
        )]
    );
    assert_eq!(
        a.applied().endpoints["web"],
        assignment("web", &[("127.0.0.1", 8001, 0)])
    );
}

/// Review of issue 13: an update in place that failed part-way leaves some workers on the
/// refused hosts; the server reverting to the config ACKed before is applied again (the
/// workers brought back to it), not ACKed at once as "nothing changes". Once an apply
/// succeeds, a resend of the serving config is ACKed at once again.
#[test]
fn after_a_failed_apply_the_serving_config_sent_again_is_applied_again() {
    let mut a = serving();
    let first = || vec![any(&assignment("web", &[("127.0.0.1", 8001, 0)]))];
    a.handle_input(response(
        Eds,
        "2",
        "e2",
        vec![any(&assignment("web", &[("127.0.0.1", 8002, 0)]))],
    ));
    let id = apply_id(&drain(&mut a)).expect("apply");
    a.handle_input(Input::ApplyFailed(id, "worker 1 did not answer".into()));
    drain(&mut a);
    // Back to version 1's endpoints: applied, not ACKed at once.
    a.handle_input(response(Eds, "3", "e3", first()));
    let out = drain(&mut a);
    let id = apply_id(&out).expect("the revert is applied");
    assert!(sent(&out).is_empty(), "ACKed only once applied: {out:?}");
    a.handle_input(Input::Applied(id));
    let out = drain(&mut a);
    assert_eq!(
        sent(&out).iter().map(|r| summary(r)).collect::<Vec<_>>(),
        [(Eds, "3", "e3", vec!["web"], None)]
    );
    // Sure again: the same resources once more change nothing (ACKed, no apply).
    a.handle_input(response(Eds, "4", "e4", first()));
    let out = drain(&mut a);
    assert_eq!(apply_id(&out), None);
    assert_eq!(
        sent(&out).iter().map(|r| summary(r)).collect::<Vec<_>>(),
        [(Eds, "4", "e4", vec!["web"], None)]
    );
}

#[test]
fn updates_during_an_apply_wait_for_it_then_apply_together() {
    let mut a = serving();
    a.handle_input(response(
        Eds,
        "2",
        "e2",
        vec![any(&assignment("web", &[("127.0.0.1", 8002, 0)]))],
    ));
    let first = apply_id(&drain(&mut a)).expect("apply");
    a.handle_input(response(
        Eds,
        "3",
        "e3",
        vec![any(&assignment("web", &[("127.0.0.1", 8003, 0)]))],
    ));
    assert!(drain(&mut a).is_empty(), "one apply at a time");
    a.handle_input(Input::Applied(first));
    let out = drain(&mut a);
    assert_eq!(
        sent(&out).iter().map(|r| summary(r)).collect::<Vec<_>>(),
        [(Eds, "2", "e2", vec!["web"], None)]
    );
    assert_eq!(
        dynamic_clusters(applied_config(&out))[0].hosts[0]
            .address
            .port(),
        8003
    );
}

#[test]
fn a_reconnect_resubscribes_with_the_accepted_versions_and_no_nonce() {
    let mut a = serving();
    a.handle_input(Input::Disconnected);
    assert!(drain(&mut a).is_empty());
    a.handle_input(Input::Connected);
    let out = drain(&mut a);
    let reqs = sent(&out);
    assert_eq!(
        reqs.iter().map(|r| summary(r)).collect::<Vec<_>>(),
        [
            (Cds, "1", "", vec![], None),
            (Eds, "1", "", vec!["web"], None),
            (Lds, "1", "", vec![], None),
            (Rds, "1", "", vec!["routes"], None),
        ]
    );
    assert!(reqs[0].node.is_some());
    // The same resources again (the server resends after a reconnect): ACKed, nothing applied.
    a.handle_input(response(Cds, "1", "c9", vec![any(&eds_cluster("web"))]));
    let out = drain(&mut a);
    assert!(apply_id(&out).is_none());
    assert_eq!(
        sent(&out).iter().map(|r| summary(r)).collect::<Vec<_>>(),
        [(Cds, "1", "c9", vec![], None)]
    );
    // A change applies.
    a.handle_input(response(
        Eds,
        "2",
        "e9",
        vec![any(&assignment("web", &[("127.0.0.1", 8009, 0)]))],
    ));
    let out = drain(&mut a);
    assert_eq!(
        dynamic_clusters(applied_config(&out))[0].hosts[0]
            .address
            .port(),
        8009
    );
}

#[test]
fn an_apply_completed_after_a_reconnect_is_not_acked_on_the_new_stream() {
    let mut a = serving();
    a.handle_input(response(
        Eds,
        "2",
        "e2",
        vec![any(&assignment("web", &[("127.0.0.1", 8002, 0)]))],
    ));
    let id = apply_id(&drain(&mut a)).expect("apply");
    a.handle_input(Input::Disconnected);
    a.handle_input(Input::Connected);
    drain(&mut a);
    a.handle_input(Input::Applied(id));
    assert!(sent(&drain(&mut a)).is_empty());
    assert_eq!(a.accepted_version(Eds), "2");
}

#[test]
fn undecodable_or_duplicate_resources_are_nacked_at_once() {
    let mut a = serving();
    a.handle_input(response(
        Cds,
        "2",
        "c2",
        vec![any(&eds_cluster("web")), any(&eds_cluster("web"))],
    ));
    let out = drain(&mut a);
    let reqs: Vec<_> = sent(&out).iter().map(|r| summary(r)).collect();
    assert_eq!(
        reqs,
        [(
            Cds,
            "1",
            "c2",
            vec![],
            Some("resources[1]: \"web\" is listed twice")
        )]
    );
    a.handle_input(response(
        Lds,
        "2",
        "l2",
        vec![any(&route_config("routes", "web"))],
    ));
    let out = drain(&mut a);
    let reqs: Vec<_> = sent(&out).iter().map(|r| summary(r)).collect();
    assert_eq!(reqs[0].2, "l2");
    assert!(
        reqs[0]
            .4
            .expect("error")
            .starts_with("resources[0]: expected ")
    );
    a.handle_input(response(
        Rds,
        "2",
        "r2",
        vec![Any {
            type_url: Rds.type_url().into(),
            value: vec![0xff, 0xff, 0xff],
        }],
    ));
    let out = drain(&mut a);
    assert!(
        sent(&out)[0]
            .error_detail
            .as_ref()
            .is_some_and(|e| e.message.contains("undecodable"))
    );
}

/// What each request says, from the machine: after an EDS NACK, the EDS subscription change a
/// new cluster brings repeats the NACKed nonce without `error_detail`; it is a subscription,
/// not an ACK (the runtime counted it as one).
#[test]
fn requests_say_whether_they_ack_nack_or_subscribe() {
    let whats = |out: &[Output]| -> Vec<(ResourceType, String, Answer)> {
        out.iter()
            .filter_map(|o| match o {
                Output::Send(r, what) => Some((
                    ResourceType::from_type_url(&r.type_url).expect("known"),
                    r.response_nonce.clone(),
                    *what,
                )),
                _ => None,
            })
            .collect()
    };
    let mut a = ads();
    a.handle_input(Input::Connected);
    assert!(
        whats(&drain(&mut a))
            .iter()
            .all(|(_, _, w)| *w == Answer::Subscription)
    );
    let mut a = serving();
    a.handle_input(response(
        Eds,
        "2",
        "e2",
        vec![Any {
            type_url: Eds.type_url().into(),
            value: vec![0xff, 0xff, 0xff],
        }],
    ));
    assert_eq!(
        whats(&drain(&mut a)),
        [(Eds, "e2".to_owned(), Answer::Nack)]
    );
    a.handle_input(response(
        Cds,
        "2",
        "c2",
        vec![any(&eds_cluster("web")), any(&eds_cluster("api"))],
    ));
    let out = drain(&mut a);
    assert_eq!(sent(&out)[0].error_detail, None);
    // The subscription, then the ACK of the CDS response (`api` added, warming).
    assert_eq!(
        whats(&out),
        [
            (Eds, "e2".to_owned(), Answer::Subscription),
            (Cds, "c2".to_owned(), Answer::Ack)
        ]
    );
    a.handle_input(response(
        Eds,
        "3",
        "e3",
        vec![
            any(&assignment("web", &[("127.0.0.1", 8001, 0)])),
            any(&assignment("api", &[("127.0.0.1", 8002, 0)])),
        ],
    ));
    let out = drain(&mut a);
    a.handle_input(Input::Applied(apply_id(&out).expect("apply")));
    assert_eq!(whats(&drain(&mut a)), [(Eds, "e3".to_owned(), Answer::Ack)]);
}

/// A server flooding responses during one apply: each is folded into the pending response of
/// its type (at most one per type, not one per response); when the apply completes, the fold
/// applies as one config and only the latest nonce of each type is ACKed.
#[test]
fn responses_during_an_apply_are_folded_per_type() {
    let mut a = serving();
    a.handle_input(response(
        Eds,
        "2",
        "e2",
        vec![any(&assignment("web", &[("127.0.0.1", 8002, 0)]))],
    ));
    let first = apply_id(&drain(&mut a)).expect("apply");
    for i in 0..1000u32 {
        a.handle_input(response(
            Eds,
            &format!("{}", 3 + i),
            &format!("e{}", 3 + i),
            vec![any(&assignment("web", &[("127.0.0.1", 10_000 + i, 0)]))],
        ));
        a.handle_input(response(
            Lds,
            &format!("{}", 2 + i),
            &format!("l{}", 2 + i),
            vec![any(&http_listener("in", "127.0.0.1", 20_000 + i, "routes"))],
        ));
        assert!(a.pending.len() <= 2, "{} pending", a.pending.len());
        assert!(sent(&drain(&mut a)).is_empty());
    }
    a.handle_input(Input::Applied(first));
    let out = drain(&mut a);
    let reqs: Vec<_> = sent(&out).iter().map(|r| summary(r)).collect();
    assert_eq!(reqs, [(Eds, "2", "e2", vec!["web"], None)]);
    let config = applied_config(&out);
    assert_eq!(dynamic_clusters(config)[0].hosts[0].address.port(), 10_999);
    assert_eq!(config.listeners[0].address.port(), 20_999);
    a.handle_input(Input::Applied(apply_id(&out).expect("apply")));
    let out = drain(&mut a);
    let reqs: Vec<_> = sent(&out).iter().map(|r| summary(r)).collect();
    assert_eq!(
        reqs,
        [
            (Eds, "1002", "e1002", vec!["web"], None),
            (Lds, "1001", "l1001", vec![], None)
        ]
    );
}

use ResourceType::Secret as Sds;

/// Serving: a TCP listener to cluster `up`, whose TLS trusts the CA of SDS secret `root-ca`
/// (version 1 of every type, secret included).
fn serving_tls(ca: &str) -> Ads {
    let mut a = ads();
    a.handle_input(Input::Connected);
    drain(&mut a);
    let mut up = static_cluster("up", &[("127.0.0.1", 8443, 0)]);
    up.transport_socket = Some(tls_socket(&upstream_tls_sds("up.example.com", "root-ca")));
    a.handle_input(response(Cds, "1", "c1", vec![any(&up)]));
    a.handle_input(response(
        Lds,
        "1",
        "l1",
        vec![any(&tcp_listener("out", "127.0.0.1", 9001, "up"))],
    ));
    let out = drain(&mut a);
    // Warming: the cluster waits for its secret (no timeout: a TLS context cannot do without
    // it), the listener for the cluster; a subscription to the secret by name. The CDS and LDS
    // responses are ACKed (their resources are added, warming).
    assert_eq!(apply_id(&out), None, "{out:?}");
    let subs: Vec<_> = sent(&out)
        .iter()
        .map(|r| summary(r))
        .filter(|s| s.0 == Sds)
        .collect();
    assert_eq!(subs, [(Sds, "", "", vec!["root-ca"], None)]);
    assert_eq!(
        a.warming().iter().cloned().collect::<Vec<_>>(),
        [(Cds, "up".into()), (Lds, "out".into())]
    );
    a.handle_input(response(
        Sds,
        "1",
        "s1",
        vec![any(&ca_secret("root-ca", ca))],
    ));
    let out = drain(&mut a);
    let tls = dynamic_clusters(applied_config(&out))[0]
        .tls
        .as_deref()
        .expect("tls");
    assert_eq!(
        tls.ca,
        sluice_core::config::tls::Pem::Inline {
            secret: Some("root-ca".into()),
            pem: ca.into()
        }
    );
    a.handle_input(Input::Applied(apply_id(&out).unwrap()));
    let out = drain(&mut a);
    let acks: Vec<_> = sent(&out).iter().map(|r| summary(r)).collect();
    assert!(
        acks.contains(&(Sds, "1", "s1", vec!["root-ca"], None)),
        "{acks:?}"
    );
    a
}

#[test]
fn a_cluster_naming_an_sds_secret_waits_for_it_then_a_rotation_applies() {
    let (ca, _, _) = crate::translate::tests_tls::pki(&["x"]);
    let mut a = serving_tls(&ca);
    // A new CA over SDS: a new config (new handshakes use it), ACKed after the switch.
    let (ca2, _, _) = crate::translate::tests_tls::pki(&["x"]);
    a.handle_input(response(
        Sds,
        "2",
        "s2",
        vec![any(&ca_secret("root-ca", &ca2))],
    ));
    let out = drain(&mut a);
    let tls = dynamic_clusters(applied_config(&out))[0]
        .tls
        .as_deref()
        .unwrap();
    assert_eq!(
        tls.ca,
        sluice_core::config::tls::Pem::Inline {
            secret: Some("root-ca".into()),
            pem: ca2.as_str().into()
        }
    );
    a.handle_input(Input::Applied(apply_id(&out).unwrap()));
    drain(&mut a);
    assert_eq!(a.accepted_version(Sds), "2");
}

#[test]
fn a_secret_that_does_not_parse_is_nacked_naming_it_and_the_old_one_serves() {
    let (ca, _, _) = crate::translate::tests_tls::pki(&["x"]);
    let mut a = serving_tls(&ca);
    let bad = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
    a.handle_input(response(
        Sds,
        "2",
        "s2",
        vec![any(&ca_secret("root-ca", bad))],
    ));
    let out = drain(&mut a);
    assert_eq!(apply_id(&out), None);
    let reqs: Vec<_> = sent(&out).iter().map(|r| summary(r)).collect();
    assert_eq!(reqs.len(), 1, "{reqs:?}");
    let (kind, version, nonce, _, error) = reqs[0].clone();
    assert_eq!((kind, version, nonce), (Sds, "1", "s2"));
    let error = error.expect("a NACK");
    assert!(
        error.starts_with(
            "secret \"root-ca\" validation_context.trusted_ca: not usable PEM: certificate 0"
        ),
        "{error}"
    );
    assert_eq!(a.accepted_version(Sds), "1");
    assert_eq!(
        a.applied().secrets["root-ca"],
        ca_secret("root-ca", &ca),
        "the serving secret stays"
    );
}

#[test]
fn a_secret_no_resource_names_any_more_is_unsubscribed_and_dropped() {
    let (ca, _, _) = crate::translate::tests_tls::pki(&["x"]);
    let mut a = serving_tls(&ca);
    a.handle_input(response(
        Cds,
        "2",
        "c2",
        vec![any(&static_cluster("up", &[("127.0.0.1", 8443, 0)]))],
    ));
    let out = drain(&mut a);
    let subs: Vec<_> = sent(&out)
        .iter()
        .map(|r| summary(r))
        .filter(|s| s.0 == Sds)
        .collect();
    assert_eq!(subs, [(Sds, "1", "s1", vec![], None)]);
    assert!(dynamic_clusters(applied_config(&out))[0].tls.is_none());
    a.handle_input(Input::Applied(apply_id(&out).unwrap()));
    assert!(a.applied().secrets.is_empty());
}

/// A listener waiting for its secret waits without a timeout (a TLS context cannot handshake
/// without it) and is not refused; its LDS response is ACKed once the listener is validated
/// with a placeholder for the secret — so a listener wrong in itself is refused at once, not
/// once its secret comes.
#[test]
fn a_listener_waits_for_its_secret_without_a_timeout_and_is_validated_meanwhile() {
    let mut a = ads();
    a.handle_input(Input::Connected);
    drain(&mut a);
    let mut l = tcp_listener("tls", "127.0.0.1", 9443, "up");
    l.filter_chains[0].transport_socket = Some(tls_socket(&downstream_tls_sds("server-cert")));
    a.handle_input(response(
        Cds,
        "1",
        "c1",
        vec![any(&static_cluster("up", &[("127.0.0.1", 8080, 0)]))],
    ));
    settle(&mut a);
    a.handle_input(response(Lds, "1", "l1", vec![any(&l)]));
    let out = drain(&mut a);
    assert_eq!(apply_id(&out), None);
    assert!(
        !out.iter().any(|o| matches!(o, Output::ArmWarmingTimer(_))),
        "{out:?}"
    );
    assert_eq!(
        sent(&out).iter().map(|r| summary(r)).collect::<Vec<_>>(),
        [
            (Sds, "", "", vec!["server-cert"], None),
            (Lds, "1", "l1", vec![], None)
        ]
    );
    assert!(a.warming().contains(&(Lds, "tls".into())));
    // Wrong in itself while its secret is still missing: refused now, naming the field.
    let mut bad = l.clone();
    bad.address = tcp_listener("tls", "127.0.0.1", 99999, "up").address;
    a.handle_input(response(Lds, "2", "l2", vec![any(&bad)]));
    let nacks: Vec<_> = sent(&drain(&mut a))
        .iter()
        .map(|r| {
            (
                summary(r).0,
                summary(r).1.to_owned(),
                summary(r).4.map(str::to_owned),
            )
        })
        .collect();
    assert_eq!(nacks.len(), 1, "{nacks:?}");
    assert_eq!((nacks[0].0, nacks[0].1.as_str()), (Lds, "1"));
    assert!(
        nacks[0].2.as_deref().unwrap().contains("99999"),
        "{nacks:?}"
    );
    // The secret comes: the listener applies.
    let (_, chain, key) = crate::translate::tests_tls::pki(&["x"]);
    a.handle_input(response(
        Sds,
        "1",
        "s1",
        vec![any(&certificate_secret("server-cert", &chain, &key))],
    ));
    let out = drain(&mut a);
    assert_eq!(applied_config(&out).listeners[0].name, "tls");
    a.handle_input(Input::Applied(apply_id(&out).expect("apply")));
    drain(&mut a);
    assert!(a.warming().is_empty());
}

/// Secrets nobody subscribed to are dropped on arrival: they do not pile up in the pending
/// response while an apply is in flight (issue 13, L3).
#[test]
fn secrets_not_subscribed_to_are_dropped_on_arrival() {
    let (ca, _, _) = crate::translate::tests_tls::pki(&["x"]);
    let mut a = serving_tls(&ca);
    let (ca2, _, _) = crate::translate::tests_tls::pki(&["x"]);
    a.handle_input(response(
        Sds,
        "2",
        "s2",
        vec![any(&ca_secret("root-ca", &ca2))],
    ));
    let out = drain(&mut a);
    let id = apply_id(&out).expect("an apply in flight");
    for (i, name) in ["stranger-1", "stranger-2"].into_iter().enumerate() {
        a.handle_input(response(
            Sds,
            &format!("{}", 3 + i),
            &format!("s{}", 3 + i),
            vec![any(&ca_secret(name, &ca))],
        ));
    }
    drain(&mut a);
    let pending: Vec<&str> = a.pending.iter().flat_map(|p| p.names()).collect();
    assert!(pending.is_empty(), "{pending:?}");
    a.handle_input(Input::Applied(id));
    drain(&mut a);
    assert!(!a.applied().secrets.contains_key("stranger-1"));
}

/// The resources a NACK refuses, as [`Output::Refused`] names them, after the NACK of its
/// nonce.
fn refused(out: &[Output]) -> Vec<(ResourceType, String, Vec<String>)> {
    out.iter()
        .filter_map(|o| match o {
            Output::Refused { kind, nonce, names } => Some((*kind, nonce.clone(), names.clone())),
            _ => None,
        })
        .collect()
}

/// A refusal names the resources of the refused response that its errors concern, by
/// structure, not by the text of the error: an RDS update routing to an unknown cluster (the
/// error is the listener's, which uses the route configuration) refuses that route
/// configuration; an EDS update the cluster cannot take (the error is the cluster's) refuses
/// those endpoints; a CDS update with one bad cluster of two refuses that one only, and its
/// `error_detail` goes whole. An undecodable response refuses nothing by name.
#[test]
fn refusals_name_the_resources_of_the_refused_update_they_concern() {
    let mut a = serving();
    // A second listener and route configuration, so that the RDS update carries one that is
    // fine.
    a.handle_input(response(
        Lds,
        "2",
        "l2",
        vec![
            any(&http_listener("in", "127.0.0.1", 9000, "routes")),
            any(&http_listener("in2", "127.0.0.1", 9001, "more")),
        ],
    ));
    a.handle_input(response(
        Rds,
        "2",
        "r2",
        vec![any(&route_config("more", "web"))],
    ));
    let id = apply_id(&drain(&mut a)).expect("complete");
    a.handle_input(Input::Applied(id));
    drain(&mut a);
    a.handle_input(response(
        Rds,
        "3",
        "r3",
        vec![
            any(&route_config("routes", "missing")),
            any(&route_config("more", "web")),
        ],
    ));
    let out = drain(&mut a);
    assert_eq!(sent(&out)[0].response_nonce, "r3");
    let detail = &sent(&out)[0].error_detail.as_ref().expect("a NACK").message;
    assert!(detail.starts_with("listener \"in\""), "{detail}");
    assert_eq!(
        refused(&out),
        [(Rds, "r3".to_owned(), vec!["routes".to_owned()])]
    );

    let mut bad = assignment("web", &[("127.0.0.1", 8001, 0)]);
    bad.endpoints[0].priority = 1;
    a.handle_input(response(Eds, "2", "e2", vec![any(&bad)]));
    let out = drain(&mut a);
    assert!(sent(&out)[0].error_detail.is_some(), "{out:?}");
    assert_eq!(
        refused(&out),
        [(Eds, "e2".to_owned(), vec!["web".to_owned()])]
    );

    let mut broken = static_cluster("broken", &[("127.0.0.1", 8001, 0)]);
    broken.lb_policy = 99;
    a.handle_input(response(
        Cds,
        "2",
        "c2",
        vec![any(&eds_cluster("web")), any(&broken)],
    ));
    let out = drain(&mut a);
    let detail = &sent(&out)
        .iter()
        .find_map(|r| r.error_detail.as_ref())
        .expect("a NACK")
        .message;
    assert!(detail.starts_with("cluster \"broken\""), "{detail}");
    assert_eq!(
        refused(&out),
        [(Cds, "c2".to_owned(), vec!["broken".to_owned()])]
    );

    a.handle_input(response(
        Eds,
        "3",
        "e3",
        vec![Any {
            type_url: Eds.type_url().into(),
            value: vec![0xff, 0xff, 0xff],
        }],
    ));
    assert_eq!(refused(&drain(&mut a)), [(Eds, "e3".to_owned(), vec![])]);
}

/// State of the world, endpoints: each assignment keeps the version of the last accepted
/// response that carried it (a response may carry only some).
#[test]
fn sotw_partial_responses_version_only_what_they_carry() {
    let mut a = ads();
    a.handle_input(Input::Connected);
    drain(&mut a);
    a.handle_input(response(
        Cds,
        "1",
        "c1",
        vec![any(&eds_cluster("web")), any(&eds_cluster("api"))],
    ));
    a.handle_input(response(
        Lds,
        "1",
        "l1",
        vec![any(&tcp_listener("in", "127.0.0.1", 9000, "web"))],
    ));
    let hosts = [("127.0.0.1", 8001, 0)];
    a.handle_input(response(
        Eds,
        "1",
        "e1",
        vec![
            any(&assignment("web", &hosts)),
            any(&assignment("api", &hosts)),
        ],
    ));
    let id = apply_id(&drain(&mut a)).expect("complete");
    a.handle_input(Input::Applied(id));
    drain(&mut a);
    a.handle_input(response(
        Eds,
        "2",
        "e2",
        vec![any(&assignment("web", &[("127.0.0.1", 8002, 0)]))],
    ));
    let id = apply_id(&drain(&mut a)).expect("an update");
    a.handle_input(Input::Applied(id));
    drain(&mut a);
    assert_eq!(a.accepted_version(Eds), "2");
    let versions: Vec<(&str, &str)> = a
        .resource_versions(Eds)
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    assert_eq!(versions, [("api", "1"), ("web", "2")]);
    assert!(a.resource_versions(Cds).is_empty());
}

/// A failed apply's error is the server's text: its refusal names the resources of the
/// response that the text names (`sds secret "server-cert"`), not the others it carried, and
/// all of them when it names none.
#[test]
fn a_failed_apply_refuses_the_resources_its_error_names() {
    let carried = ["server-cert", "upstream-ca", "say \"hi\""];
    assert_eq!(
        named_in(
            "listeners[0].tls.certificates[0].private_key: sds secret \"server-cert\" does not \
             go with the certificate sds secret \"server-cert\"",
            ResourceType::Secret,
            &carried,
        ),
        ["server-cert"]
    );
    assert_eq!(
        named_in(
            "secret \"say \\\"hi\\\"\" and secret \"unknown\"",
            ResourceType::Secret,
            &carried
        ),
        ["say \"hi\""]
    );
    assert_eq!(
        named_in("the server loop stopped", ResourceType::Secret, &carried),
        carried
    );
}

/// A listener whose new version waits may keep its port while a new listener for that port is
/// ready: the new one waits until the old one moves (they then switch together), rather than
/// the mix of the two (both on 9000) failing and its failure being charged to the innocent
/// route configuration that made the new listener ready. Nothing ACKed is refused later.
#[test]
fn a_listener_ready_for_a_port_an_old_version_holds_waits_for_it_to_move() {
    let mut a = serving();
    a.handle_input(response(
        Lds,
        "2",
        "l2",
        vec![
            any(&http_listener("in", "127.0.0.1", 9001, "routes2")),
            any(&http_listener("new", "127.0.0.1", 9000, "routesN")),
        ],
    ));
    let out = settle(&mut a);
    assert_eq!(answers(&out), [(Lds, "l2".to_owned(), None)]);
    a.handle_input(response(
        Rds,
        "2",
        "r2",
        vec![any(&route_config("routesN", "web"))],
    ));
    let out = settle(&mut a);
    assert_eq!(answers(&out), [(Rds, "r2".to_owned(), None)], "{out:?}");
    assert_eq!(
        a.applied().listeners["in"],
        http_listener("in", "127.0.0.1", 9000, "routes"),
        "`in` serves its old version"
    );
    assert!(!a.applied().listeners.contains_key("new"));
    assert!(
        a.warming().contains(&(Lds, "new".to_owned())),
        "{:?}",
        a.warming()
    );
    assert!(a.warming().contains(&(Lds, "in".to_owned())));
    // `in`'s routes come: it moves to 9001 and `new` takes 9000, in one switch.
    a.handle_input(response(
        Rds,
        "3",
        "r3",
        vec![
            any(&route_config("routesN", "web")),
            any(&route_config("routes2", "web")),
        ],
    ));
    let out = settle(&mut a);
    assert_eq!(answers(&out), [(Rds, "r3".to_owned(), None)], "{out:?}");
    let config = applied_config(&out);
    let port = |name: &str| {
        config
            .listeners
            .iter()
            .find(|l| l.name == name)
            .map(|l| l.address.port())
    };
    assert_eq!((port("in"), port("new")), (Some(9001), Some(9000)));
    assert!(a.warming().is_empty(), "{:?}", a.warming());
}

/// `in` v1 on 9000 serving; the candidate moves it to 9001 (its new routes missing) and adds
/// `new` on 9000 (its routes there): what to serve, and the resources it is chosen from.
fn port_handover() -> (Ads, Resources) {
    let a = serving();
    let mut candidate = a.applied().clone();
    candidate.listeners.insert(
        "in".into(),
        http_listener("in", "127.0.0.1", 9001, "routes2"),
    );
    candidate.listeners.insert(
        "new".into(),
        http_listener("new", "127.0.0.1", 9000, "routesN"),
    );
    candidate
        .routes
        .insert("routesN".into(), route_config("routesN", "web"));
    (a, candidate)
}

/// [`warm::select`] does not take a listener ready for an address that a listener kept at its
/// applied version holds: it waits to switch with it.
#[test]
fn selection_keeps_a_listener_off_an_address_an_old_version_holds() {
    let (a, candidate) = port_handover();
    let serve = warm::select(
        a.applied(),
        &candidate,
        &warm::Filled::default(),
        &a.statics,
        &a.declared_sources,
    );
    assert_eq!(
        serve.listeners.keys().collect::<Vec<_>>(),
        ["in"],
        "{:?}",
        serve.listeners
    );
    assert_eq!(serve.listeners["in"], a.applied().listeners["in"]);
}

/// A mix of versions that does not assemble holds back the resources its errors name (here a
/// listener on an address taken), not everything: an unrelated new cluster still goes in.
#[test]
fn a_mix_that_does_not_assemble_holds_back_only_what_its_errors_name() {
    let (a, candidate) = port_handover();
    let mut serve = a.applied().clone();
    serve
        .listeners
        .insert("new".into(), candidate.listeners["new"].clone());
    serve
        .routes
        .insert("routesN".into(), candidate.routes["routesN"].clone());
    serve
        .clusters
        .insert("b".into(), static_cluster("b", &[("127.0.0.1", 8002, 0)]));
    assert!(
        translate::assemble(&a.bootstrap, &serve).is_err(),
        "the mix clashes"
    );
    let (held, assembled) = a.assemble_mix(serve);
    assert!(assembled.is_ok(), "{assembled:?}");
    assert!(!held.listeners.contains_key("new"));
    assert!(
        held.clusters.contains_key("b"),
        "the innocent cluster is held back too"
    );
    assert_eq!(held.listeners["in"], a.applied().listeners["in"]);
}

/// Break after make: listener `l` v1 proxies to `x`; CDS v2 adds `y` (waiting for its
/// endpoints), LDS v2 moves `l` to `y`, CDS v3 removes `x`. `l` serves v1 until `y` is ready,
/// so `x` stays served meanwhile (at its applied version), the rest goes ahead and nothing is
/// refused.
#[test]
fn break_after_make_keeps_a_removed_cluster_an_old_listener_uses() {
    let mut a = ads();
    a.handle_input(Input::Connected);
    drain(&mut a);
    a.handle_input(response(
        Cds,
        "1",
        "c1",
        vec![any(&static_cluster("x", &[("127.0.0.1", 8001, 0)]))],
    ));
    a.handle_input(response(
        Lds,
        "1",
        "l1",
        vec![any(&tcp_listener("l", "127.0.0.1", 9000, "x"))],
    ));
    settle(&mut a);
    assert!(a.applied().listeners.contains_key("l"));
    let x = static_cluster("x", &[("127.0.0.1", 8001, 0)]);
    a.handle_input(response(
        Cds,
        "2",
        "c2",
        vec![any(&x), any(&eds_cluster("y"))],
    ));
    let mut out = settle(&mut a);
    a.handle_input(response(
        Lds,
        "2",
        "l2",
        vec![any(&tcp_listener("l", "127.0.0.1", 9000, "y"))],
    ));
    out.extend(settle(&mut a));
    // With an unrelated new cluster `z`, which goes ahead meanwhile.
    let z = static_cluster("z", &[("127.0.0.1", 8003, 0)]);
    a.handle_input(response(
        Cds,
        "3",
        "c3",
        vec![any(&eds_cluster("y")), any(&z)],
    ));
    out.extend(settle(&mut a));
    assert!(
        answers(&out).iter().all(|(_, _, e)| e.is_none()),
        "{:?}",
        answers(&out)
    );
    assert_eq!(a.applied().clusters.get("x"), Some(&x), "x kept for l v1");
    assert_eq!(a.applied().clusters.get("z"), Some(&z), "z serves");
    assert_eq!(
        a.applied().listeners["l"],
        tcp_listener("l", "127.0.0.1", 9000, "x")
    );
    // y's endpoints come: l moves to y, and x goes.
    a.handle_input(response(
        Eds,
        "1",
        "e1",
        vec![any(&assignment("y", &[("127.0.0.1", 8002, 0)]))],
    ));
    settle(&mut a);
    assert_eq!(
        a.applied().listeners["l"],
        tcp_listener("l", "127.0.0.1", 9000, "y")
    );
    assert!(!a.applied().clusters.contains_key("x"));
}
