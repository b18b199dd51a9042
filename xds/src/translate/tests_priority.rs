//! Endpoint priorities (istiod's locality failover): `LocalityLbEndpoints.priority` on each
//! host, `policy.overprovisioning_factor` on the cluster, gaps NACKed by path.

use envoy_types::pb::envoy::config::core::v3::{HealthStatus, Locality};
use envoy_types::pb::envoy::config::endpoint::v3::{
    ClusterLoadAssignment, LocalityLbEndpoints, cluster_load_assignment::Policy,
};
use envoy_types::pb::google::protobuf::UInt32Value;

use super::*;
use crate::fixtures::*;

fn bootstrap() -> Value {
    serde_json::json!({ "listeners": [], "clusters": [] })
}

/// A locality of `region/zone/sub_zone` at `priority` with `hosts` (IP, port, status), the way
/// istiod writes one: locality set, a locality weight.
fn locality(
    (region, zone, sub_zone): (&str, &str, &str),
    priority: u32,
    hosts: &[(&str, u32, i32)],
) -> LocalityLbEndpoints {
    let mut l = assignment("x", hosts).endpoints.remove(0);
    l.locality = Some(Locality {
        region: region.into(),
        zone: zone.into(),
        sub_zone: sub_zone.into(),
    });
    l.load_balancing_weight = Some(UInt32Value {
        value: hosts.len() as u32,
    });
    l.priority = priority;
    l
}

fn resources(cla: ClusterLoadAssignment) -> Resources {
    let mut r = Resources::default();
    r.clusters.insert("web".into(), eds_cluster("web"));
    r.endpoints.insert("web".into(), cla);
    r.listeners.insert(
        "in".into(),
        http_listener("in", "127.0.0.1", 9000, "routes"),
    );
    r.routes
        .insert("routes".into(), route_config("routes", "web"));
    r
}

fn web(r: &Resources) -> sluice_core::config::ClusterConfig {
    let a = assemble(&bootstrap(), r).expect("accepted");
    a.config
        .clusters
        .into_iter()
        .find(|c| c.name == "web")
        .expect("web")
}

fn errors(r: &Resources) -> Vec<String> {
    assemble(&bootstrap(), r)
        .expect_err("refused")
        .iter()
        .map(ToString::to_string)
        .collect()
}

const OK: i32 = HealthStatus::Healthy as i32;

/// What istiod sends a sidecar in us-east/a/1 with failover on (outlier detection and
/// `localityLbSetting`): its own sub-zone at 0, its zone at 1, its region at 2, other regions
/// at 3 — with the default factor unless the assignment says.
fn istiod_failover() -> ClusterLoadAssignment {
    ClusterLoadAssignment {
        cluster_name: "web".into(),
        endpoints: vec![
            locality(("us-east", "a", "2"), 1, &[("10.0.1.1", 8080, OK)]),
            locality(
                ("us-east", "a", "1"),
                0,
                &[("10.0.0.1", 8080, OK), ("10.0.0.2", 8080, OK)],
            ),
            locality(("eu-west", "b", "1"), 3, &[("10.2.0.1", 8080, OK)]),
            locality(("us-east", "b", "1"), 2, &[("10.1.0.1", 8080, OK)]),
        ],
        ..Default::default()
    }
}

#[test]
fn an_istiod_failover_assignment_keeps_its_priorities() {
    let c = web(&resources(istiod_failover()));
    let hosts: Vec<(String, u32)> = c
        .hosts
        .iter()
        .map(|h| (h.address.to_string(), h.priority))
        .collect();
    assert_eq!(
        hosts,
        [
            ("10.0.1.1:8080".to_owned(), 1),
            ("10.0.0.1:8080".to_owned(), 0),
            ("10.0.0.2:8080".to_owned(), 0),
            ("10.2.0.1:8080".to_owned(), 3),
            ("10.1.0.1:8080".to_owned(), 2),
        ]
    );
    assert_eq!(c.overprovisioning_factor, 140);

    let mut cla = istiod_failover();
    cla.policy = Some(Policy {
        overprovisioning_factor: Some(UInt32Value { value: 100 }),
        ..Default::default()
    });
    assert_eq!(web(&resources(cla)).overprovisioning_factor, 100);
}

#[test]
fn a_gap_in_priorities_and_a_zero_factor_are_nacked_by_path() {
    let mut cla = istiod_failover();
    cla.endpoints.remove(0); // no priority 1 left
    assert_eq!(
        errors(&resources(cla)),
        [
            "cluster_load_assignment \"web\" endpoints[1].priority: priorities must be contiguous \
          from 0 (Envoy's rule): no locality has priority 1, and this one has 3"
        ]
    );
    let mut cla = istiod_failover();
    cla.policy = Some(Policy {
        overprovisioning_factor: Some(UInt32Value { value: 0 }),
        ..Default::default()
    });
    assert_eq!(
        errors(&resources(cla)),
        ["cluster_load_assignment \"web\" policy.overprovisioning_factor: must be greater than 0"]
    );
}

/// A level whose every host is declared unusable (DRAINING here) stays a level, its host
/// flagged: Envoy counts it (health 0, its load spills to the next levels), and the levels keep
/// their numbers.
#[test]
fn a_level_of_draining_hosts_stays_a_level_with_its_hosts_flagged() {
    let mut cla = istiod_failover();
    cla.endpoints[0] = locality(
        ("us-east", "a", "2"),
        1,
        &[("10.0.1.1", 8080, HealthStatus::Draining as i32)],
    );
    let c = web(&resources(cla));
    let hosts: Vec<(String, u32, bool)> = c
        .hosts
        .iter()
        .map(|h| (h.address.to_string(), h.priority, h.health.is_usable()))
        .collect();
    assert_eq!(
        hosts,
        [
            ("10.0.1.1:8080".to_owned(), 1, false),
            ("10.0.0.1:8080".to_owned(), 0, true),
            ("10.0.0.2:8080".to_owned(), 0, true),
            ("10.2.0.1:8080".to_owned(), 3, true),
            ("10.1.0.1:8080".to_owned(), 2, true),
        ]
    );
}
