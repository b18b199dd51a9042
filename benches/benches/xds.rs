//! Criterion benches of the xDS client's pure steps (issue 13), with no IO and no workers:
//! what the `xds` thread computes for a push before the workers switch (the whole push, with
//! the switch, is `xds-load`'s).
//!
//! - `xds_translate/cluster_1000_endpoints`: one EDS cluster with its 1000-endpoint
//!   ClusterLoadAssignment → its config entry ([`translate_cluster`]).
//! - `xds_translate/assemble_1000_clusters`: 1000 EDS clusters of 3 endpoints, a listener and
//!   a route to each → the validated `Config` ([`assemble`]: translation and the same
//!   validation as a file).
//! - `xds_push/eds_1000_endpoints` and `xds_push/eds_1000_clusters`: the ADS state machine
//!   taking a state-of-the-world EDS response (decoding, folding, assembling the config to
//!   apply) and its ACK once applied — a changed 1000-endpoint assignment of one cluster, and
//!   the 1000 changed assignments of 1000 clusters.
//!
//! ```text
//! cargo bench -p sluice-benches --bench xds -- --warm-up-time 1 --measurement-time 3
//! ```

use std::collections::BTreeMap;
use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use sluice_benches::xds_load::{cluster_name, routes_to};
use sluice_xds::ads::{Ads, Input, Output, XdsMode};
use sluice_xds::envoy_types::pb::envoy::config::core::v3::Node;
use sluice_xds::envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use sluice_xds::envoy_types::pb::envoy::service::discovery::v3::DiscoveryResponse;
use sluice_xds::envoy_types::pb::google::protobuf::Any;
use sluice_xds::fixtures::{any, assignment, eds_cluster, http_listener};
use sluice_xds::translate::{Notes, ResourceType, Resources, Secrets, assemble, translate_cluster};

/// An assignment of `n` loopback endpoints to `cluster`, on ports from `port`.
fn endpoints(cluster: &str, n: usize, port: u32) -> ClusterLoadAssignment {
    let ips: Vec<String> = (0..n)
        .map(|j| format!("127.1.{}.{}", j / 250, j % 250 + 1))
        .collect();
    let hosts: Vec<(&str, u32, i32)> = ips.iter().map(|ip| (ip.as_str(), port, 0)).collect();
    assignment(cluster, &hosts)
}

/// The bootstrap of `xds-load` (no static listener; the xDS cluster).
fn bootstrap() -> serde_json::Value {
    serde_json::json!({
        "xds": { "cluster": "xds_server" },
        "listeners": [],
        "clusters": [ { "name": "xds_server", "protocol": "http2",
                        "hosts": [ { "address": "127.0.0.1:18000" } ] } ],
    })
}

/// `n` EDS clusters of `m` endpoints (ports from `port`), a listener and a route to each.
fn many(n: usize, m: usize, port: u32) -> Resources {
    let names: Vec<String> = (0..n).map(cluster_name).collect();
    Resources {
        listeners: BTreeMap::from([(
            "in".to_owned(),
            http_listener("in", "127.0.0.1", 15000, "routes"),
        )]),
        routes: BTreeMap::from([("routes".to_owned(), routes_to("routes", &names))]),
        clusters: names.iter().map(|c| (c.clone(), eds_cluster(c))).collect(),
        endpoints: names
            .iter()
            .map(|c| (c.clone(), endpoints(c, m, port)))
            .collect(),
        secrets: BTreeMap::new(),
        source_secrets: BTreeMap::new(),
    }
}

fn translate_bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("xds_translate");
    let cluster = eds_cluster("bench");
    let cla = endpoints("bench", 1000, 20_000);
    g.bench_function("cluster_1000_endpoints", |b| {
        b.iter(|| {
            let mut notes = Notes::default();
            translate_cluster(
                black_box(&cluster),
                Some(black_box(&cla)),
                &Secrets::NONE,
                &mut notes,
            )
            .expect("translates")
        })
    });
    let tree = bootstrap();
    let resources = many(1000, 3, 30_000);
    g.sample_size(20);
    g.bench_function("assemble_1000_clusters", |b| {
        b.iter(|| {
            let a = assemble(black_box(&tree), black_box(&resources)).expect("valid");
            assert_eq!(a.config.clusters.len(), 1001);
            a
        })
    });
    g.finish();
}

/// A state-of-the-world response of `kind`.
fn response(kind: ResourceType, version: u64, resources: Vec<Any>) -> Input {
    Input::Response(DiscoveryResponse {
        version_info: version.to_string(),
        nonce: format!("{}-{version}", kind.noun()),
        type_url: kind.type_url().to_owned(),
        resources,
        ..Default::default()
    })
}

/// The id of the config to apply among the machine's outputs (the rest dropped; a NACK
/// panics).
fn drain(a: &mut Ads) -> Option<u64> {
    let mut id = None;
    while let Some(o) = a.poll_output() {
        match o {
            Output::Apply { id: i, .. } => id = Some(i),
            Output::Send(r, _) if r.error_detail.is_some() => {
                panic!("NACK: {:?}", r.error_detail)
            }
            _ => {}
        }
    }
    id
}

/// A machine serving `r` (connected, every type received, applied, ACKed) at version 1.
fn serving(r: &Resources) -> Ads {
    let mut a = Ads::with_mode(XdsMode::Sotw, Node::default(), bootstrap());
    a.handle_input(Input::Connected);
    drain(&mut a);
    let all = |kind| -> Vec<Any> {
        match kind {
            ResourceType::Cluster => r.clusters.values().map(any).collect(),
            ResourceType::Endpoints => r.endpoints.values().map(any).collect(),
            ResourceType::Listener => r.listeners.values().map(any).collect(),
            ResourceType::Route => r.routes.values().map(any).collect(),
            ResourceType::Secret => r.secrets.values().map(any).collect(),
        }
    };
    for kind in ResourceType::ALL {
        a.handle_input(response(kind, 1, all(kind)));
    }
    // The clusters and their endpoints may go first, alone (no listener yet): apply until
    // nothing is left to apply.
    let mut next = drain(&mut a);
    assert!(next.is_some(), "a complete config");
    while let Some(id) = next {
        a.handle_input(Input::Applied(id));
        next = drain(&mut a);
    }
    a
}

/// Benches the machine taking EDS responses `a` and `b` in turn (each changes every
/// assignment it carries) and their apply.
fn push(c: &mut Criterion, name: &str, r: &Resources, a: &[Any], b: &[Any]) {
    let mut machine = serving(r);
    let mut version = 1;
    c.benchmark_group("xds_push")
        .sample_size(20)
        .bench_function(name, |bench| {
            bench.iter(|| {
                version += 1;
                let body = if version % 2 == 0 { a } else { b };
                machine.handle_input(response(ResourceType::Endpoints, version, body.to_vec()));
                let id = drain(&mut machine).expect("an apply");
                machine.handle_input(Input::Applied(id));
                drain(&mut machine);
            })
        });
}

fn push_bench(c: &mut Criterion) {
    let mut one = many(1, 0, 0);
    one.endpoints
        .insert(cluster_name(0), endpoints(&cluster_name(0), 1000, 20_000));
    let a = [any(&endpoints(&cluster_name(0), 1000, 20_001))];
    let b = [any(&endpoints(&cluster_name(0), 1000, 20_002))];
    push(c, "eds_1000_endpoints", &one, &a, &b);

    let thousand = many(1000, 3, 30_000);
    let a: Vec<Any> = (0..1000)
        .map(|i| any(&endpoints(&cluster_name(i), 3, 30_001)))
        .collect();
    let b: Vec<Any> = (0..1000)
        .map(|i| any(&endpoints(&cluster_name(i), 3, 30_002)))
        .collect();
    push(c, "eds_1000_clusters", &thousand, &a, &b);
}

criterion_group!(benches, translate_bench, push_bench);
criterion_main!(benches);
