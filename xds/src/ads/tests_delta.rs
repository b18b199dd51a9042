//! The delta protocol: the same rules as state of the world (`tests.rs`), on the delta wire.

use std::collections::HashMap;

use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, Resource,
};

use super::tests::{
    answers, applied_config, apply_id, bootstrap, drain, dynamic_clusters, node, ports, settle,
    timer_of,
};
use super::*;
use crate::fixtures::*;

use ResourceType::{Cluster as Cds, Endpoints as Eds, Listener as Lds, Route as Rds};

fn ads() -> Ads {
    Ads::with_mode(XdsMode::Delta, node(), bootstrap())
}

/// A delta client connected, its first requests (wildcard clusters and listeners) sent.
fn connected() -> Ads {
    let mut a = ads();
    a.handle_input(Input::Connected);
    drain(&mut a);
    a
}

fn sent(outputs: &[Output]) -> Vec<&DeltaDiscoveryRequest> {
    assert!(
        !outputs.iter().any(|o| matches!(o, Output::Send(..))),
        "a state-of-the-world request in delta: {outputs:?}"
    );
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::SendDelta(r, _) => Some(&**r),
            _ => None,
        })
        .collect()
}

/// A delta response of `kind`: `resources` as (name, version, body), and the names removed.
fn response(
    kind: ResourceType,
    system_version: &str,
    nonce: &str,
    resources: Vec<Resource>,
    removed: &[&str],
) -> Input {
    Input::DeltaResponse(DeltaDiscoveryResponse {
        system_version_info: system_version.into(),
        resources,
        type_url: kind.type_url().into(),
        removed_resources: removed.iter().map(|&s| s.to_owned()).collect(),
        nonce: nonce.into(),
        ..Default::default()
    })
}

/// A delta response of `kind` that adds or updates `resources` and removes nothing.
fn push(kind: ResourceType, system_version: &str, nonce: &str, resources: Vec<Resource>) -> Input {
    response(kind, system_version, nonce, resources, &[])
}

/// EDS cluster `name` at `version`.
fn eds_cluster_at(name: &str, version: &str) -> Resource {
    resource(name, version, any(&eds_cluster(name)))
}

/// Static cluster `name` at `version`: one host, 127.0.0.1:`port`.
fn static_cluster_at(name: &str, version: &str, port: u32) -> Resource {
    resource(
        name,
        version,
        any(&static_cluster(name, &[("127.0.0.1", port, 0)])),
    )
}

/// `cluster`'s assignment at `version`: one endpoint, 127.0.0.1:`port`.
fn endpoints_at(cluster: &str, version: &str, port: u32) -> Resource {
    resource(
        cluster,
        version,
        any(&assignment(cluster, &[("127.0.0.1", port, 0)])),
    )
}

/// HTTP listener `name` at `version` on 127.0.0.1:`port`, its routes from RDS `routes`.
fn http_listener_at(name: &str, version: &str, port: u32, routes: &str) -> Resource {
    resource(
        name,
        version,
        any(&http_listener(name, "127.0.0.1", port, routes)),
    )
}

/// TCP proxy listener `name` at `version` on 127.0.0.1:`port` to `cluster`.
fn tcp_listener_at(name: &str, version: &str, port: u32, cluster: &str) -> Resource {
    resource(
        name,
        version,
        any(&tcp_listener(name, "127.0.0.1", port, cluster)),
    )
}

/// Route configuration `name` at `version`: everything to `cluster`.
fn routes_at(name: &str, version: &str, cluster: &str) -> Resource {
    resource(name, version, any(&route_config(name, cluster)))
}

/// (type, nonce, subscribe, unsubscribe, error?) of a request.
type Summary<'a> = (
    ResourceType,
    &'a str,
    Vec<&'a str>,
    Vec<&'a str>,
    Option<&'a str>,
);

fn summary(r: &DeltaDiscoveryRequest) -> Summary<'_> {
    (
        ResourceType::from_type_url(&r.type_url).expect("known type"),
        r.response_nonce.as_str(),
        r.resource_names_subscribe
            .iter()
            .map(String::as_str)
            .collect(),
        r.resource_names_unsubscribe
            .iter()
            .map(String::as_str)
            .collect(),
        r.error_detail.as_ref().map(|e| e.message.as_str()),
    )
}

fn summaries(out: &[Output]) -> Vec<Summary<'_>> {
    sent(out).into_iter().map(summary).collect()
}

/// Reports the apply `out` asked for done: what the client does then.
fn applied(a: &mut Ads, out: &[Output]) -> Vec<Output> {
    a.handle_input(Input::Applied(apply_id(out).expect("apply")));
    drain(a)
}

/// The [`Summary`] of an ACK of response `nonce` of `kind`.
fn ack(kind: ResourceType, nonce: &str) -> Summary<'_> {
    (kind, nonce, vec![], vec![], None)
}

/// The [`Summary`] of a request that subscribes to `names` of `kind` and answers no response.
fn subscribing<'a>(kind: ResourceType, names: &[&'a str]) -> Summary<'a> {
    (kind, "", names.to_vec(), vec![], None)
}

fn versions(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
        .collect()
}

/// Connected, and the first complete config (cluster `web` at version c1 with one endpoint
/// at e1, listener `in` on 127.0.0.1:9000 at l1 with routes `routes` at r1) applied and
/// ACKed; each response's system version is "1".
fn serving() -> Ads {
    let mut a = connected();
    a.handle_input(push(Cds, "1", "n1", vec![eds_cluster_at("web", "c1")]));
    a.handle_input(push(
        Lds,
        "1",
        "n2",
        vec![http_listener_at("in", "l1", 9000, "routes")],
    ));
    a.handle_input(push(Eds, "1", "n3", vec![endpoints_at("web", "e1", 8001)]));
    a.handle_input(push(Rds, "1", "n4", vec![routes_at("routes", "r1", "web")]));
    let out = settle(&mut a);
    assert!(apply_id(&out).is_some(), "complete");
    a
}

fn api_cluster() -> Resource {
    eds_cluster_at("api", "c2")
}

#[test]
fn delta_first_requests_subscribe_to_every_cluster_and_listener_with_the_node() {
    let mut a = ads();
    a.handle_input(Input::Connected);
    let out = drain(&mut a);
    let reqs = sent(&out);
    assert_eq!(
        reqs.iter().map(|r| summary(r)).collect::<Vec<_>>(),
        [subscribing(Cds, &["*"]), subscribing(Lds, &["*"])]
    );
    assert_eq!(
        reqs[0].node.as_ref().map(|n| n.id.as_str()),
        Some("sidecar-1")
    );
    assert!(reqs[1].node.is_none());
    assert!(reqs.iter().all(|r| r.initial_resource_versions.is_empty()));
}

#[test]
fn delta_a_config_is_applied_when_warm_and_acked_by_nonce_after_the_switch() {
    let mut a = connected();
    a.handle_input(push(Cds, "1", "n1", vec![eds_cluster_at("web", "c1")]));
    let out = drain(&mut a);
    // The EDS cluster subscribes to its endpoints, in a request without a nonce, and warms;
    // the response is ACKed (the cluster is added, warming).
    assert_eq!(
        summaries(&out),
        [subscribing(Eds, &["web"]), ack(Cds, "n1")]
    );
    assert!(out.iter().any(|o| matches!(o, Output::ArmWarmingTimer(_))));
    a.handle_input(push(
        Lds,
        "1",
        "n2",
        vec![http_listener_at("in", "l1", 9000, "routes")],
    ));
    let out = drain(&mut a);
    assert_eq!(
        summaries(&out),
        [subscribing(Rds, &["routes"]), ack(Lds, "n2")]
    );
    a.handle_input(push(Eds, "1", "n3", vec![endpoints_at("web", "e1", 8001)]));
    // The cluster applies alone; the listener waits for its routes.
    let out = drain(&mut a);
    assert!(sent(&out).is_empty(), "no ACK before the workers switched");
    assert!(
        applied_config(&out).listeners.is_empty(),
        "the listener waits"
    );
    assert_eq!(summaries(&applied(&mut a, &out)), [ack(Eds, "n3")]);
    a.handle_input(push(Rds, "7", "n4", vec![routes_at("routes", "r1", "web")]));
    let out = drain(&mut a);
    assert!(sent(&out).is_empty(), "no ACK before the workers switched");
    let config = applied_config(&out);
    assert_eq!(config.listeners[0].name, "in");
    assert_eq!(dynamic_clusters(config)[0].hosts.len(), 1);
    let out = applied(&mut a, &out);
    assert_eq!(summaries(&out), [ack(Rds, "n4")]);
    assert_eq!(a.accepted_version(Rds), "7", "the system version");
    assert_eq!(a.resource_versions(Cds), &versions(&[("web", "c1")]));
    assert_eq!(a.resource_versions(Eds), &versions(&[("web", "e1")]));
    assert_eq!(a.resource_versions(Lds), &versions(&[("in", "l1")]));
    assert_eq!(a.resource_versions(Rds), &versions(&[("routes", "r1")]));
}

#[test]
fn delta_responses_add_and_remove_resources_and_subscriptions_follow() {
    let mut a = serving();
    // Only the new cluster comes: `web` stays (a delta response is not the full set).
    a.handle_input(push(Cds, "2", "n5", vec![api_cluster()]));
    let out = drain(&mut a);
    assert_eq!(
        summaries(&out),
        [subscribing(Eds, &["api"]), ack(Cds, "n5")]
    );
    a.handle_input(push(Eds, "2", "n6", vec![endpoints_at("api", "e2", 8100)]));
    let out = drain(&mut a);
    let names: Vec<&str> = applied_config(&out)
        .clusters
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(names, ["xds_server", "api", "web"]);
    applied(&mut a, &out);
    assert_eq!(
        a.resource_versions(Cds),
        &versions(&[("api", "c2"), ("web", "c1")])
    );

    // `api` removed: gone from the config, its endpoints unsubscribed and dropped.
    a.handle_input(response(Cds, "3", "n7", vec![], &["api"]));
    let out = drain(&mut a);
    let names: Vec<&str> = applied_config(&out)
        .clusters
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(names, ["xds_server", "web"]);
    assert_eq!(summaries(&out), [(Eds, "", vec![], vec!["api"], None)]);
    let out = applied(&mut a, &out);
    assert_eq!(summaries(&out), [ack(Cds, "n7")]);
    assert!(!a.applied().clusters.contains_key("api"));
    assert!(!a.applied().endpoints.contains_key("api"));
    assert_eq!(a.resource_versions(Cds), &versions(&[("web", "c1")]));
    assert_eq!(a.resource_versions(Eds), &versions(&[("web", "e1")]));
    assert_eq!(a.accepted_version(Cds), "3");
}

#[test]
fn delta_removing_a_cluster_a_route_still_uses_is_nacked_naming_it() {
    let mut a = serving();
    a.handle_input(response(Cds, "2", "n5", vec![], &["web"]));
    let out = drain(&mut a);
    assert!(apply_id(&out).is_none());
    let reqs = summaries(&out);
    assert_eq!(
        reqs.len(),
        1,
        "only the NACK, no subscription churn: {reqs:?}"
    );
    let (kind, nonce, sub, unsub, error) = reqs[0].clone();
    assert_eq!((kind, nonce, sub, unsub), (Cds, "n5", vec![], vec![]));
    let error = error.expect("error_detail");
    assert!(error.contains("\"web\""), "{error}");
    assert_eq!(sent(&out)[0].error_detail.as_ref().map(|e| e.code), Some(3));
    assert!(a.applied().clusters.contains_key("web"));
    assert_eq!(a.accepted_version(Cds), "1");
    assert_eq!(a.resource_versions(Cds), &versions(&[("web", "c1")]));
}

#[test]
fn delta_a_nack_keeps_the_serving_config_and_the_next_good_update_applies() {
    let mut a = serving();
    a.handle_input(push(
        Lds,
        "2",
        "n5",
        vec![http_listener_at("in", "l2", 99999, "routes")],
    ));
    let out = drain(&mut a);
    assert!(apply_id(&out).is_none());
    let reqs = summaries(&out);
    assert_eq!(reqs.len(), 1);
    let error = reqs[0].4.expect("error_detail");
    assert_eq!((reqs[0].0, reqs[0].1), (Lds, "n5"));
    assert!(
        error.starts_with("listener \"in\" address.socket_address.port_value: ")
            && error.contains("99999"),
        "{error}"
    );
    assert_eq!(
        a.applied().listeners["in"],
        http_listener("in", "127.0.0.1", 9000, "routes")
    );
    assert_eq!(a.resource_versions(Lds), &versions(&[("in", "l1")]));

    a.handle_input(push(
        Lds,
        "3",
        "n6",
        vec![http_listener_at("in", "l3", 9001, "routes")],
    ));
    let out = drain(&mut a);
    assert_eq!(applied_config(&out).listeners[0].address.port(), 9001);
    assert_eq!(summaries(&applied(&mut a, &out)), [ack(Lds, "n6")]);
    assert_eq!(a.resource_versions(Lds), &versions(&[("in", "l3")]));
}

#[test]
fn delta_a_reconnect_resubscribes_with_initial_resource_versions() {
    let mut a = serving();
    a.handle_input(Input::Disconnected);
    assert!(drain(&mut a).is_empty());
    a.handle_input(Input::Connected);
    let out = drain(&mut a);
    let reqs = sent(&out);
    assert_eq!(
        reqs.iter().map(|r| summary(r)).collect::<Vec<_>>(),
        [
            subscribing(Cds, &["*"]),
            subscribing(Eds, &["web"]),
            subscribing(Lds, &["*"]),
            subscribing(Rds, &["routes"]),
        ]
    );
    let initial: Vec<HashMap<String, String>> = reqs
        .iter()
        .map(|r| r.initial_resource_versions.clone())
        .collect();
    let map = |n: &str, v: &str| HashMap::from([(n.to_owned(), v.to_owned())]);
    assert_eq!(
        initial,
        [
            map("web", "c1"),
            map("web", "e1"),
            map("in", "l1"),
            map("routes", "r1")
        ]
    );
    assert!(reqs[0].node.is_some());
    // The server sends only what changed: an EDS update applies.
    a.handle_input(push(Eds, "2", "m1", vec![endpoints_at("web", "e2", 8009)]));
    let out = drain(&mut a);
    assert_eq!(
        dynamic_clusters(applied_config(&out))[0].hosts[0]
            .address
            .port(),
        8009
    );
    assert_eq!(summaries(&applied(&mut a, &out)), [ack(Eds, "m1")]);
    // The same resource again changes nothing: ACKed without an apply.
    a.handle_input(push(Eds, "2", "m2", vec![endpoints_at("web", "e2", 8009)]));
    let out = drain(&mut a);
    assert!(apply_id(&out).is_none());
    assert_eq!(summaries(&out), [ack(Eds, "m2")]);
}

/// Delta: a cluster whose assignment never comes is ACKed when added, serves with no
/// endpoints at the initial fetch timeout (not refused), and its assignment coming later
/// applies; meanwhile an unrelated listener applies and a route to it waits.
#[test]
fn delta_warming_waits_for_endpoints_bounded_by_the_initial_fetch_timeout() {
    let mut a = serving();
    a.handle_input(push(Cds, "2", "n5", vec![api_cluster()]));
    let out = drain(&mut a);
    let timer = timer_of(&out);
    assert!(apply_id(&out).is_none());
    assert_eq!(
        summaries(&out),
        [subscribing(Eds, &["api"]), ack(Cds, "n5")]
    );
    // An unrelated listener goes ahead.
    a.handle_input(push(
        Lds,
        "2",
        "n6",
        vec![tcp_listener_at("tcp", "l2", 9100, "web")],
    ));
    let out = drain(&mut a);
    assert_eq!(applied_config(&out).listeners.len(), 2);
    assert_eq!(summaries(&applied(&mut a, &out)), [ack(Lds, "n6")]);
    // A route to the warming cluster waits: ACKed, not applied.
    a.handle_input(push(Rds, "2", "n7", vec![routes_at("routes", "r2", "api")]));
    let out = drain(&mut a);
    assert!(apply_id(&out).is_none(), "{out:?}");
    assert_eq!(summaries(&out), [ack(Rds, "n7")]);
    assert_eq!(a.applied().routes["routes"], route_config("routes", "web"));
    // The timeout: `api` serves with no endpoints, and the route to it applies with it.
    a.handle_input(Input::WarmingTimeout(timer));
    let out = drain(&mut a);
    assert!(sent(&out).is_empty(), "nothing refused: {out:?}");
    assert_eq!(ports(applied_config(&out), "api"), Vec::<u16>::new());
    assert!(applied(&mut a, &out).is_empty());
    assert_eq!(a.applied().routes["routes"], route_config("routes", "api"));
    assert_eq!(
        a.resource_versions(Cds),
        &versions(&[("api", "c2"), ("web", "c1")])
    );
    assert!(a.warming().is_empty());
    // The assignment, late, applies.
    a.handle_input(push(Eds, "3", "n8", vec![endpoints_at("api", "e3", 8100)]));
    let out = drain(&mut a);
    assert_eq!(ports(applied_config(&out), "api"), [8100]);
    assert_eq!(summaries(&applied(&mut a, &out)), [ack(Eds, "n8")]);
}

/// Delta: an assignment the server removes leaves its cluster waiting for another, as a new
/// one waits: its last endpoints serve on until the initial fetch timeout, then none.
#[test]
fn delta_an_assignment_removed_by_the_server_makes_its_cluster_wait_then_serve_none() {
    let mut a = serving();
    a.handle_input(response(Eds, "2", "n5", vec![], &["web"]));
    let out = drain(&mut a);
    let timer = timer_of(&out);
    assert!(apply_id(&out).is_none());
    assert_eq!(summaries(&out), [ack(Eds, "n5")]);
    assert_eq!(
        a.applied().endpoints["web"],
        assignment("web", &[("127.0.0.1", 8001, 0)])
    );
    a.handle_input(Input::WarmingTimeout(timer));
    let out = drain(&mut a);
    assert!(sent(&out).is_empty(), "{out:?}");
    assert_eq!(ports(applied_config(&out), "web"), Vec::<u16>::new());
}

#[test]
fn delta_malformed_responses_are_nacked_at_once() {
    let mut a = serving();
    let cases: Vec<(Vec<Resource>, &[&str], &str)> = vec![
        (
            vec![resource("other", "c2", any(&eds_cluster("web")))],
            &[],
            "resources[0]: named \"other\" but the cluster inside is \"web\"",
        ),
        (
            vec![Resource {
                name: "web".into(),
                version: "c2".into(),
                ..Default::default()
            }],
            &[],
            "resources[0] (\"web\"): no resource (TTL heartbeats are not supported)",
        ),
        (
            vec![eds_cluster_at("web", "c2")],
            &["web"],
            "removed_resources[0]: \"web\" is also in resources",
        ),
        (
            vec![eds_cluster_at("web", "c2"), eds_cluster_at("web", "c3")],
            &[],
            "resources[1]: \"web\" is listed twice",
        ),
        (
            vec![routes_at("in", "c2", "web")],
            &[],
            "resources[0]: expected ",
        ),
    ];
    for (i, (resources, removed, error)) in cases.into_iter().enumerate() {
        let nonce = format!("bad{i}");
        a.handle_input(response(Cds, "9", &nonce, resources, removed));
        let out = drain(&mut a);
        assert!(apply_id(&out).is_none());
        let reqs = summaries(&out);
        assert_eq!(reqs.len(), 1, "{reqs:?}");
        assert_eq!(reqs[0].1, nonce);
        let got = reqs[0].4.expect("a NACK");
        assert!(got.starts_with(error), "case {i}: {got}");
    }
    assert_eq!(a.resource_versions(Cds), &versions(&[("web", "c1")]));
}

#[test]
fn delta_a_failed_apply_is_nacked() {
    let mut a = serving();
    a.handle_input(push(Eds, "2", "n5", vec![endpoints_at("web", "e2", 8002)]));
    let id = apply_id(&drain(&mut a)).expect("apply");
    a.handle_input(Input::ApplyFailed(id, "bind: address in use".into()));
    assert_eq!(
        summaries(&drain(&mut a)),
        [(
            Eds,
            "n5",
            vec![],
            vec![],
            Some("applying failed: bind: address in use")
        )]
    );
    assert_eq!(a.resource_versions(Eds), &versions(&[("web", "e1")]));
}

fn resyncs(out: &[Output]) -> usize {
    out.iter().filter(|o| matches!(o, Output::Resync)).count()
}

/// The initial resource versions of the first request of `kind` in `out` (a new stream's).
fn initial_versions(out: &[Output], kind: ResourceType) -> BTreeMap<String, String> {
    let req = sent(out)
        .into_iter()
        .find(|r| r.type_url == kind.type_url())
        .expect("a request of the type");
    req.initial_resource_versions
        .iter()
        .map(|(n, v)| (n.clone(), v.clone()))
        .collect()
}

/// A delta server sends a resource once and never again until it changes: a good EDS update
/// NACKed together with a bad LDS one (they were in one apply, which failed: the listener's
/// port was in use) would be lost until a reconnect. The NACK asks for a resync (once per
/// stream); the new stream's `initial_resource_versions` name only what serves, so the server
/// sends the EDS update again and it applies.
#[test]
fn delta_a_good_update_nacked_with_a_bad_one_is_applied_after_the_resync() {
    let mut a = serving();
    // An apply in flight (an endpoint change); meanwhile an EDS and an LDS update arrive.
    a.handle_input(push(Eds, "2", "n5", vec![endpoints_at("web", "e1b", 8003)]));
    let first = apply_id(&drain(&mut a));
    let eds_e2 = || vec![endpoints_at("web", "e2", 8002)];
    let in2 = || vec![tcp_listener_at("in2", "l9", 9002, "web")];
    a.handle_input(push(Eds, "2", "n6", eds_e2()));
    a.handle_input(push(Lds, "2", "n7", in2()));
    a.handle_input(Input::Applied(first.expect("apply")));
    let out = drain(&mut a);
    assert_eq!(
        dynamic_clusters(applied_config(&out))[0].hosts[0]
            .address
            .port(),
        8002
    );
    a.handle_input(Input::ApplyFailed(
        apply_id(&out).expect("apply"),
        "bind 127.0.0.1:9002: address in use".into(),
    ));
    let out = drain(&mut a);
    let nacks: Vec<_> = summaries(&out)
        .into_iter()
        .filter(|s| s.4.is_some())
        .map(|s| (s.0, s.1))
        .collect();
    assert_eq!(nacks, [(Eds, "n6"), (Lds, "n7")], "{out:?}");
    assert_eq!(resyncs(&out), 1, "one resync for the stream: {out:?}");
    assert_eq!(a.resource_versions(Eds), &versions(&[("web", "e1b")]));

    // The runtime ends the stream and, after the backoff, opens a new one.
    a.handle_input(Input::Disconnected);
    drain(&mut a);
    a.handle_input(Input::Connected);
    let out = drain(&mut a);
    assert_eq!(initial_versions(&out, Eds), versions(&[("web", "e1b")]));
    assert_eq!(initial_versions(&out, Lds), versions(&[("in", "l1")]));
    // So the server (which diffs against those) sends the EDS update again: it applies.
    a.handle_input(push(Eds, "2", "m1", eds_e2()));
    let out = drain(&mut a);
    assert_eq!(
        dynamic_clusters(applied_config(&out))[0].hosts[0]
            .address
            .port(),
        8002
    );
    assert_eq!(summaries(&applied(&mut a, &out)), [ack(Eds, "m1")]);
    assert_eq!(a.resource_versions(Eds), &versions(&[("web", "e2")]));
    // The bad listener, sent again, is NACKed again: one more resync, on this stream.
    a.handle_input(push(
        Lds,
        "2",
        "m2",
        vec![http_listener_at("in", "l2", 99999, "routes")],
    ));
    let out = drain(&mut a);
    assert_eq!(summaries(&out)[0].1, "m2");
    assert!(summaries(&out)[0].4.is_some());
    assert_eq!(resyncs(&out), 1);
}

/// A listener whose apply failed (its port briefly in use) comes back after the resync.
#[test]
fn delta_a_failed_apply_resyncs_and_the_listener_comes_back() {
    let mut a = serving();
    let in2 = || vec![tcp_listener_at("in2", "l9", 9002, "web")];
    a.handle_input(push(Lds, "2", "n5", in2()));
    let id = apply_id(&drain(&mut a)).expect("apply");
    a.handle_input(Input::ApplyFailed(id, "bind: address in use".into()));
    let out = drain(&mut a);
    assert_eq!(summaries(&out).len(), 1);
    assert_eq!(resyncs(&out), 1);
    a.handle_input(Input::Disconnected);
    drain(&mut a);
    a.handle_input(Input::Connected);
    let out = drain(&mut a);
    assert_eq!(initial_versions(&out, Lds), versions(&[("in", "l1")]));
    assert_eq!(resyncs(&out), 0);
    a.handle_input(push(Lds, "2", "m1", in2()));
    let out = drain(&mut a);
    assert_eq!(applied_config(&out).listeners.len(), 2);
    assert_eq!(summaries(&applied(&mut a, &out)), [ack(Lds, "m1")]);
    assert_eq!(
        a.resource_versions(Lds),
        &versions(&[("in", "l1"), ("in2", "l9")])
    );
}

/// An ACK or NACK of a type not yet requested on the stream would, with no names, be a
/// wildcard subscription: RDS and EDS answer an unsolicited response only once they have a
/// subscription (then the answer carries it).
#[test]
fn delta_an_unsolicited_response_does_not_subscribe_to_everything() {
    let mut a = connected();
    a.handle_input(push(Rds, "1", "u1", vec![routes_at("routes", "r1", "web")]));
    let out = drain(&mut a);
    assert!(
        sent(&out).iter().all(|r| r.type_url != Rds.type_url()),
        "{out:?}"
    );
    a.handle_input(Input::DeltaResponse(DeltaDiscoveryResponse {
        type_url: Eds.type_url().into(),
        nonce: "u2".into(),
        resources: vec![Resource {
            name: "web".into(),
            resource: Some(Any {
                type_url: Eds.type_url().into(),
                value: vec![0xff, 0xff, 0xff],
            }),
            ..Default::default()
        }],
        ..Default::default()
    }));
    let out = drain(&mut a);
    assert!(sent(&out).is_empty(), "{out:?}");
    assert_eq!(resyncs(&out), 0);
    // Once a listener names "routes", the first RDS request subscribes to it.
    a.handle_input(push(
        Lds,
        "1",
        "n1",
        vec![http_listener_at("in", "l1", 9000, "routes")],
    ));
    let out = drain(&mut a);
    assert!(summaries(&out).contains(&subscribing(Rds, &["routes"])));
}

/// Each request says what it is; an EDS subscription change after an EDS NACK repeats no
/// nonce in delta, and is a subscription.
#[test]
fn delta_requests_say_whether_they_ack_nack_or_subscribe() {
    let mut a = serving();
    a.handle_input(push(Cds, "2", "n5", vec![api_cluster()]));
    let out = drain(&mut a);
    let whats: Vec<_> = out
        .iter()
        .filter_map(|o| match o {
            Output::SendDelta(r, what) => Some((summary(r).0, *what)),
            _ => None,
        })
        .collect();
    // The subscription, then the ACK of the response (`api` added, warming).
    assert_eq!(whats, [(Eds, Answer::Subscription), (Cds, Answer::Ack)]);
}

/// Delta responses of a type arriving during an apply are folded into one as they come: a
/// resource added then removed is gone (and so is its version), the later upsert of a name
/// wins; the latest nonce is ACKed.
#[test]
fn delta_responses_during_an_apply_are_folded_per_type() {
    let mut a = serving();
    a.handle_input(push(Eds, "2", "n5", vec![endpoints_at("web", "e2", 8002)]));
    let first = apply_id(&drain(&mut a)).expect("apply");
    let tcp =
        |name: &str, version: &str, port: u32| vec![tcp_listener_at(name, version, port, "web")];
    a.handle_input(push(Lds, "2", "n6", tcp("in2", "l2", 9002)));
    a.handle_input(response(Lds, "3", "n7", vec![], &["in2"]));
    a.handle_input(push(Lds, "4", "n8", tcp("in3", "l3", 9003)));
    a.handle_input(push(Lds, "5", "n9", tcp("in3", "l4", 9004)));
    a.handle_input(push(Eds, "3", "n10", vec![endpoints_at("web", "e3", 8003)]));
    assert_eq!(a.pending.len(), 2);
    assert!(sent(&drain(&mut a)).is_empty());
    a.handle_input(Input::Applied(first));
    let out = drain(&mut a);
    assert_eq!(summaries(&out), [ack(Eds, "n5")]);
    let config = applied_config(&out);
    let mut ports: Vec<u16> = config.listeners.iter().map(|l| l.address.port()).collect();
    ports.sort_unstable();
    assert_eq!(ports, [9000, 9004]);
    assert_eq!(dynamic_clusters(config)[0].hosts[0].address.port(), 8003);
    assert_eq!(
        summaries(&applied(&mut a, &out)),
        [ack(Eds, "n10"), ack(Lds, "n9")]
    );
    assert_eq!(
        a.resource_versions(Lds),
        &versions(&[("in", "l1"), ("in3", "l4")])
    );
    assert_eq!(a.accepted_version(Lds), "5");
}

#[test]
fn delta_a_listener_naming_an_sds_certificate_subscribes_to_it_and_warms_until_it_arrives() {
    use ResourceType::Secret as Sds;
    let mut a = serving();
    a.handle_input(tls_listener_push());
    let out = drain(&mut a);
    assert_eq!(apply_id(&out), None, "warming: {out:?}");
    let subs: Vec<_> = summaries(&out).into_iter().filter(|s| s.0 == Sds).collect();
    assert_eq!(subs, [subscribing(Sds, &["server-cert"])]);
    a.handle_input(server_cert_push());
    let out = drain(&mut a);
    let config = applied_config(&out);
    let tls = config.listeners[1].tls.as_deref().expect("tls");
    assert_eq!(tls.certificates.len(), 1);
    a.handle_input(Input::Applied(apply_id(&out).unwrap()));
    let out = drain(&mut a);
    let acks = summaries(&out);
    assert!(acks.contains(&ack(Sds, "n6")), "{acks:?}");
    assert_eq!(
        a.resource_versions(Sds),
        &versions(&[("server-cert", "s1")])
    );
}

/// The LDS update of the SDS tests, as response `n5`: `in` (l1, as [`serving`] has it) and
/// `tls` (l2) on 127.0.0.1:9443, its certificate from SDS secret `server-cert`.
fn tls_listener_push() -> Input {
    let mut tls = tcp_listener("tls", "127.0.0.1", 9443, "web");
    tls.filter_chains[0].transport_socket = Some(tls_socket(&downstream_tls_sds("server-cert")));
    push(
        Lds,
        "2",
        "n5",
        vec![
            http_listener_at("in", "l1", 9000, "routes"),
            resource("tls", "l2", any(&tls)),
        ],
    )
}

/// SDS secret `server-cert` (s1, a certificate for in.example.com), as response `n6`.
fn server_cert_push() -> Input {
    let (_, chain, key) = crate::translate::tests_tls::pki(&["in.example.com"]);
    let secret = certificate_secret("server-cert", &chain, &key);
    push(
        ResourceType::Secret,
        "1",
        "n6",
        vec![resource("server-cert", "s1", any(&secret))],
    )
}

/// [`serving`] plus listener `tls` (l2) using SDS secret `server-cert` (s1), applied and ACKed.
fn serving_with_secret() -> Ads {
    let mut a = serving();
    a.handle_input(tls_listener_push());
    drain(&mut a);
    a.handle_input(server_cert_push());
    let out = settle(&mut a);
    assert!(apply_id(&out).is_some(), "complete");
    a
}

/// Removing a secret a listener still uses is NACKed at once, charged to that response alone:
/// no warming wait, the secret serves on, and an update of another type arriving next applies
/// at once (issue 13, M3).
#[test]
fn delta_removing_a_secret_still_in_use_is_nacked_at_once_and_holds_nothing_back() {
    use ResourceType::Secret as Sds;
    let mut a = serving_with_secret();
    a.handle_input(response(Sds, "2", "n7", vec![], &["server-cert"]));
    let out = drain(&mut a);
    assert!(
        !out.iter().any(|o| matches!(o, Output::ArmWarmingTimer(_))),
        "no warming: {out:?}"
    );
    let reqs = summaries(&out);
    assert_eq!(reqs.len(), 1, "{reqs:?}");
    assert_eq!((reqs[0].0, reqs[0].1), (Sds, "n7"));
    let error = reqs[0].4.expect("a NACK");
    assert!(
        error.contains("\"server-cert\"") && error.contains("still used"),
        "{error}"
    );
    assert!(a.applied().secrets.contains_key("server-cert"));
    assert_eq!(
        a.resource_versions(Sds),
        &versions(&[("server-cert", "s1")])
    );
    // An endpoint update right after is applied and ACKed, not held back.
    a.handle_input(push(Eds, "2", "n8", vec![endpoints_at("web", "e2", 8002)]));
    let out = drain(&mut a);
    let id = apply_id(&out).expect("applied at once");
    a.handle_input(Input::Applied(id));
    let out = drain(&mut a);
    let acks = summaries(&out);
    assert!(acks.contains(&ack(Eds, "n8")), "{acks:?}");
    // Once the listener no longer uses it, the removal is accepted.
    a.handle_input(response(Lds, "3", "n9", vec![], &["tls"]));
    let out = drain(&mut a);
    applied(&mut a, &out);
    a.handle_input(response(Sds, "3", "n10", vec![], &["server-cert"]));
    let out = drain(&mut a);
    let reqs = summaries(&out);
    assert!(
        reqs.iter().all(|r| r.4.is_none()),
        "no NACK once unused: {reqs:?}"
    );
}

/// Endpoints nobody subscribed to (a server sending more than asked) are dropped on arrival,
/// as in state of the world: not piled up in the pending response during an apply, and not
/// applied when a cluster that needs them arrives later — that cluster waits for its
/// endpoints and subscribes to them. A removal of a name not subscribed to is dropped too.
#[test]
fn delta_resources_not_subscribed_to_are_dropped_on_arrival() {
    let mut a = serving();
    // An apply in flight: web's endpoints change.
    a.handle_input(push(Eds, "2", "n5", vec![endpoints_at("web", "e2", 8002)]));
    let id = apply_id(&drain(&mut a)).expect("an apply in flight");
    // Unsolicited: `api`'s endpoints (no cluster needs them yet), a removal of a name never
    // subscribed to, and route configurations nobody names.
    a.handle_input(response(
        Eds,
        "3",
        "u1",
        vec![endpoints_at("api", "e9", 8009)],
        &["stranger"],
    ));
    a.handle_input(push(
        Rds,
        "3",
        "u2",
        vec![routes_at("other-routes", "r9", "web")],
    ));
    assert_eq!(a.unsolicited(), 3);
    let pending: Vec<&str> = a.pending.iter().flat_map(|p| p.names()).collect();
    assert!(pending.is_empty(), "unsolicited names pending: {pending:?}");
    // Now a cluster `api` arrives: it needs the endpoints the server sent unasked.
    a.handle_input(push(Cds, "3", "n6", vec![api_cluster()]));
    let out = drain(&mut a);
    assert!(
        summaries(&out).contains(&subscribing(Eds, &["api"])),
        "{:?}",
        summaries(&out)
    );
    a.handle_input(Input::Applied(id));
    let out = drain(&mut a);
    // Not applied with the unsolicited endpoints: it waits for them, subscribed to.
    assert!(
        apply_id(&out).is_none(),
        "applied unasked endpoints: {out:?}"
    );
    assert!(!a.applied().endpoints.contains_key("api"));
    assert!(!a.applied().routes.contains_key("other-routes"));
    assert!(!a.resource_versions(Eds).contains_key("api"));
    assert_eq!(a.resource_versions(Eds), &versions(&[("web", "e2")]));
    // Once subscribed, `api`'s endpoints are taken.
    a.handle_input(push(Eds, "4", "n7", vec![endpoints_at("api", "e9", 8009)]));
    let out = drain(&mut a);
    let config = applied_config(&out);
    assert!(config.clusters.iter().any(|c| c.name == "api"));
}

/// A cluster accepted (ACKed) but still warming is named in the next stream's
/// `initial_resource_versions` at the version accepted (Envoy's subscription state holds
/// warming resources too), and keeps warming there: the server, which has it, does not send it
/// again, and the new stream subscribes to its endpoints again, whose arrival serves it.
#[test]
fn delta_a_warming_cluster_keeps_warming_on_a_new_stream() {
    let mut a = serving();
    a.handle_input(push(Cds, "2", "n5", vec![api_cluster()]));
    drain(&mut a);
    assert_eq!(
        a.resource_versions(Cds),
        &versions(&[("api", "c2"), ("web", "c1")])
    );
    a.handle_input(Input::Disconnected);
    a.handle_input(Input::Connected);
    let out = drain(&mut a);
    assert_eq!(
        initial_versions(&out, Cds),
        versions(&[("api", "c2"), ("web", "c1")])
    );
    let eds = sent(&out)
        .into_iter()
        .find(|r| r.type_url == Eds.type_url())
        .expect("an endpoints request");
    assert_eq!(eds.resource_names_subscribe, ["api", "web"]);
    assert_eq!(initial_versions(&out, Eds), versions(&[("web", "e1")]));
    assert!(a.warming().contains(&(Cds, "api".to_owned())));
    a.handle_input(push(Eds, "2", "n6", vec![endpoints_at("api", "e2", 8002)]));
    let out = settle(&mut a);
    let config = applied_config(&out);
    assert!(config.clusters.iter().any(|c| c.name == "api"));
    assert!(a.warming().is_empty(), "{:?}", a.warming());
}

/// A cluster accepted but still warming for its endpoints when the stream drops is named in
/// the next stream's `initial_resource_versions` (the client holds it, as Envoy's
/// subscription state does), so that a server that deleted it meanwhile sends its removal:
/// it never serves at the initial fetch timeout (a ghost the server no longer knows).
#[test]
fn delta_a_warming_cluster_deleted_while_disconnected_is_removed_not_served() {
    let mut a = connected();
    a.handle_input(push(Cds, "1", "n1", vec![eds_cluster_at("api", "c1")]));
    let out = settle(&mut a);
    let timer = timer_of(&out);
    assert!(a.warming().contains(&(Cds, "api".to_owned())));
    a.handle_input(Input::Disconnected);
    a.handle_input(Input::Connected);
    let out = drain(&mut a);
    assert_eq!(initial_versions(&out, Cds), versions(&[("api", "c1")]));
    // The server deleted it meanwhile: it says so, since the client said it has it.
    a.handle_input(response(Cds, "2", "n2", vec![], &["api"]));
    let out = settle(&mut a);
    assert!(answers(&out).iter().all(|(_, _, e)| e.is_none()), "{out:?}");
    a.handle_input(Input::WarmingTimeout(timer));
    settle(&mut a);
    assert!(
        !a.applied().clusters.contains_key("api"),
        "a ghost cluster serves"
    );
    assert!(a.warming().is_empty(), "{:?}", a.warming());
    assert!(a.resource_versions(Cds).is_empty());
}

/// The same for a listener warming for its routes: deleted while disconnected, it is removed
/// (not bound with a 404 table at the timeout), so the server's next listener on its port is
/// accepted.
#[test]
fn delta_a_warming_listener_deleted_while_disconnected_does_not_hold_its_port() {
    let mut a = connected();
    a.handle_input(push(
        Cds,
        "1",
        "n1",
        vec![static_cluster_at("web", "c1", 8001)],
    ));
    settle(&mut a);
    a.handle_input(push(
        Lds,
        "1",
        "n2",
        vec![http_listener_at("ghost", "l1", 9100, "rg")],
    ));
    let out = settle(&mut a);
    let timer = timer_of(&out);
    a.handle_input(Input::Disconnected);
    a.handle_input(Input::Connected);
    let out = drain(&mut a);
    assert_eq!(initial_versions(&out, Lds), versions(&[("ghost", "l1")]));
    a.handle_input(response(Lds, "2", "n3", vec![], &["ghost"]));
    settle(&mut a);
    a.handle_input(Input::WarmingTimeout(timer));
    settle(&mut a);
    assert!(!a.applied().listeners.contains_key("ghost"));
    a.handle_input(push(
        Lds,
        "3",
        "n4",
        vec![tcp_listener_at("real", "l2", 9100, "web")],
    ));
    let out = settle(&mut a);
    assert!(
        answers(&out).iter().all(|(_, _, e)| e.is_none()),
        "valid listener NACKed: {:?}",
        answers(&out)
    );
    assert!(a.applied().listeners.contains_key("real"));
}

/// An updated cluster waiting for its new assignment serves its previous version: the version
/// shown as serving (`/xds`, `/config_dump`) is that one, not the accepted update's, until
/// the update serves; the accepted version (what a new stream names) is the update's.
#[test]
fn delta_the_version_serving_is_the_old_one_while_an_update_warms() {
    let mut a = connected();
    a.handle_input(push(
        Cds,
        "1",
        "n1",
        vec![static_cluster_at("x", "c1", 8001)],
    ));
    settle(&mut a);
    assert_eq!(a.serving_versions(Cds), &versions(&[("x", "c1")]));
    a.handle_input(push(Cds, "2", "n2", vec![eds_cluster_at("x", "c2")]));
    let out = settle(&mut a);
    assert_eq!(answers(&out), [(Cds, "n2".to_owned(), None)]);
    assert!(a.warming().contains(&(Cds, "x".to_owned())));
    assert_eq!(
        a.serving_versions(Cds),
        &versions(&[("x", "c1")]),
        "the version serving"
    );
    assert_eq!(
        a.resource_versions(Cds),
        &versions(&[("x", "c2")]),
        "the version accepted"
    );
    a.handle_input(push(Eds, "1", "n3", vec![endpoints_at("x", "e1", 8002)]));
    settle(&mut a);
    assert_eq!(a.serving_versions(Cds), &versions(&[("x", "c2")]));
    assert_eq!(a.serving_versions(Eds), &versions(&[("x", "e1")]));
}
