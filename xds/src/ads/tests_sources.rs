//! Secrets from an SDS source of its own (`xds.sds_sources`, Istio's `sds-grpc`): subscribed
//! to through [`Output::SourceNames`], warmed and applied with the rest, answered with
//! [`Output::SourceVerdict`].

use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CommonTlsContext, UpstreamTlsContext, common_tls_context::ValidationContextType,
};
use serde_json::json;

use super::tests::{applied_config, apply_id, drain, node};
use super::*;
use crate::fixtures::*;
use crate::translate::tests_tls::pki;

fn bootstrap() -> Value {
    json!({
        "xds": {
            "cluster": "xds",
            "sds_sources": [ { "name": "sds-grpc", "path": "/run/sds.sock" } ],
        },
        "listeners": [],
        "clusters": [ { "name": "xds", "hosts": [ { "address": "127.0.0.1:18000" } ] } ],
    })
}

/// Cluster `up`, whose TLS trusts the CA of secret `ROOTCA` from the source `source`.
fn tls_cluster(source: &str) -> Cluster {
    let mut up = static_cluster("up", &[("127.0.0.1", 8443, 0)]);
    up.transport_socket = Some(tls_socket(&UpstreamTlsContext {
        sni: "up.example.com".into(),
        common_tls_context: Some(CommonTlsContext {
            validation_context_type: Some(ValidationContextType::ValidationContextSdsSecretConfig(
                source_sds(source, "ROOTCA"),
            )),
            ..Default::default()
        }),
        ..Default::default()
    }));
    up
}

fn cds(version: &str, nonce: &str, clusters: &[Cluster]) -> Input {
    Input::Response(DiscoveryResponse {
        version_info: version.into(),
        resources: clusters.iter().map(any).collect(),
        type_url: ResourceType::Cluster.type_url().into(),
        nonce: nonce.into(),
        ..Default::default()
    })
}

fn source_secrets(nonce: &str, secrets: Vec<Secret>) -> Input {
    Input::SourceSecrets {
        source: "sds-grpc".into(),
        nonce: nonce.into(),
        secrets,
    }
}

fn verdicts(out: &[Output]) -> Vec<(String, String, Option<String>)> {
    out.iter()
        .filter_map(|o| match o {
            Output::SourceVerdict {
                source,
                nonce,
                error,
            } => Some((source.clone(), nonce.clone(), error.clone())),
            _ => None,
        })
        .collect()
}

fn source_names(out: &[Output]) -> Vec<(String, Vec<String>)> {
    out.iter()
        .filter_map(|o| match o {
            Output::SourceNames { source, names } => {
                Some((source.clone(), names.iter().cloned().collect()))
            }
            _ => None,
        })
        .collect()
}

fn acks(out: &[Output]) -> Vec<(ResourceType, String, Option<String>)> {
    out.iter()
        .filter_map(|o| match o {
            Output::Send(r, _) if !r.response_nonce.is_empty() => Some((
                ResourceType::from_type_url(&r.type_url).unwrap(),
                r.response_nonce.clone(),
                r.error_detail.as_ref().map(|e| e.message.clone()),
            )),
            _ => None,
        })
        .collect()
}

fn ca_of(config: &Config) -> sluice_core::config::tls::Pem {
    config
        .clusters
        .iter()
        .find(|c| c.name == "up")
        .and_then(|c| c.tls.as_deref())
        .expect("tls")
        .ca
        .clone()
}

/// Serving cluster `up` with the CA `ca` of the source's `ROOTCA` (source nonce `s1`).
fn serving(ca: &str) -> Ads {
    let mut a = Ads::new(node(), bootstrap());
    a.handle_input(Input::Connected);
    drain(&mut a);
    a.handle_input(cds("1", "c1", &[tls_cluster("sds-grpc")]));
    let out = drain(&mut a);
    // Warming: no config without the secret; the source is asked for it, ADS is not.
    assert_eq!(apply_id(&out), None, "{out:?}");
    assert_eq!(
        source_names(&out),
        [("sds-grpc".to_owned(), vec!["ROOTCA".to_owned()])]
    );
    assert!(
        !out.iter().any(|o| matches!(o, Output::Send(r, _)
            if r.type_url == ResourceType::Secret.type_url())),
        "no SDS subscription over ADS: {out:?}"
    );
    // Per-resource warming: a secret has no timeout, and the cluster waiting for it was
    // validated (with a placeholder) and added, so CDS is ACKed before the secret comes.
    assert!(
        !out.iter().any(|o| matches!(o, Output::ArmWarmingTimer(_))),
        "a source secret is waited for without a timeout: {out:?}"
    );
    assert_eq!(acks(&out), [(ResourceType::Cluster, "c1".to_owned(), None)]);
    assert_eq!(
        a.warming().iter().collect::<Vec<_>>(),
        [&(ResourceType::Cluster, "up".to_owned())]
    );
    a.handle_input(source_secrets("s1", vec![ca_secret("ROOTCA", ca)]));
    let out = drain(&mut a);
    assert_eq!(
        ca_of(applied_config(&out)),
        sluice_core::config::tls::Pem::Inline {
            secret: Some("ROOTCA".into()),
            pem: ca.into()
        }
    );
    assert!(verdicts(&out).is_empty(), "answered after the switch only");
    a.handle_input(Input::Applied(apply_id(&out).unwrap()));
    let out = drain(&mut a);
    assert_eq!(
        verdicts(&out),
        [("sds-grpc".to_owned(), "s1".to_owned(), None)]
    );
    assert!(acks(&out).is_empty(), "CDS was ACKed already: {out:?}");
    assert!(a.warming().is_empty());
    assert_eq!(
        a.applied().source_secrets["sds-grpc"]["ROOTCA"],
        ca_secret("ROOTCA", ca)
    );
    assert!(a.applied().secrets.is_empty());
    a
}

#[test]
fn a_cluster_naming_a_source_secret_waits_for_it_and_a_rotation_applies_alone() {
    let (ca, _, _) = pki(&["x"]);
    let mut a = serving(&ca);
    // Rotation: the source alone changes; a new config, answered once it serves.
    let (ca2, _, _) = pki(&["x"]);
    a.handle_input(source_secrets("s2", vec![ca_secret("ROOTCA", &ca2)]));
    let out = drain(&mut a);
    assert_eq!(
        ca_of(applied_config(&out)),
        sluice_core::config::tls::Pem::Inline {
            secret: Some("ROOTCA".into()),
            pem: ca2.as_str().into()
        }
    );
    assert!(acks(&out).is_empty(), "nothing to answer on ADS: {out:?}");
    a.handle_input(Input::Applied(apply_id(&out).unwrap()));
    let out = drain(&mut a);
    assert_eq!(
        verdicts(&out),
        [("sds-grpc".to_owned(), "s2".to_owned(), None)]
    );
    // The same secret again changes nothing: answered at once, no apply.
    a.handle_input(source_secrets("s3", vec![ca_secret("ROOTCA", &ca2)]));
    let out = drain(&mut a);
    assert_eq!(apply_id(&out), None);
    assert_eq!(
        verdicts(&out),
        [("sds-grpc".to_owned(), "s3".to_owned(), None)]
    );
}

#[test]
fn a_bad_source_secret_is_refused_to_its_source_and_the_old_one_serves() {
    let (ca, _, _) = pki(&["x"]);
    let mut a = serving(&ca);
    let bad = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
    a.handle_input(source_secrets("s2", vec![ca_secret("ROOTCA", bad)]));
    let out = drain(&mut a);
    assert_eq!(apply_id(&out), None);
    let v = verdicts(&out);
    assert_eq!(v.len(), 1, "{out:?}");
    assert_eq!((v[0].0.as_str(), v[0].1.as_str()), ("sds-grpc", "s2"));
    let error = v[0].2.as_deref().expect("refused");
    assert!(
        error.starts_with("secret \"ROOTCA\" validation_context.trusted_ca: not usable PEM"),
        "{error}"
    );
    assert!(acks(&out).is_empty(), "nothing NACKed on ADS: {out:?}");
    assert_eq!(
        a.applied().source_secrets["sds-grpc"]["ROOTCA"],
        ca_secret("ROOTCA", &ca)
    );
    // A failed apply is the source's refusal too.
    let (ca2, _, _) = pki(&["x"]);
    a.handle_input(source_secrets("s3", vec![ca_secret("ROOTCA", &ca2)]));
    let out = drain(&mut a);
    a.handle_input(Input::ApplyFailed(apply_id(&out).unwrap(), "boom".into()));
    let out = drain(&mut a);
    assert_eq!(
        verdicts(&out),
        [(
            "sds-grpc".to_owned(),
            "s3".to_owned(),
            Some("applying failed: boom".to_owned())
        )]
    );
}

#[test]
fn a_cluster_naming_an_undeclared_source_is_nacked_at_once() {
    let mut a = Ads::new(node(), bootstrap());
    a.handle_input(Input::Connected);
    drain(&mut a);
    a.handle_input(cds("1", "c1", &[tls_cluster("elsewhere")]));
    let out = drain(&mut a);
    assert!(source_names(&out).is_empty(), "{out:?}");
    assert!(
        !out.iter().any(|o| matches!(o, Output::ArmWarmingTimer(_))),
        "not waited for: {out:?}"
    );
    let nacks = acks(&out);
    assert_eq!(nacks.len(), 1, "{out:?}");
    assert_eq!(nacks[0].0, ResourceType::Cluster);
    assert_eq!(
        nacks[0].2.as_deref(),
        Some(
            "cluster \"up\" transport_socket.typed_config.common_tls_context.\
             validation_context_sds_secret_config.sds_config.api_config_source.grpc_services[0].\
             envoy_grpc.cluster_name: \"elsewhere\" is not an SDS source of the bootstrap's \
             `xds.sds_sources` (declared: sds-grpc)"
        )
    );
}

#[test]
fn a_source_secret_nothing_names_any_more_is_unsubscribed_and_dropped() {
    let (ca, _, _) = pki(&["x"]);
    let mut a = serving(&ca);
    a.handle_input(cds(
        "2",
        "c2",
        &[static_cluster("up", &[("127.0.0.1", 8443, 0)])],
    ));
    let out = drain(&mut a);
    assert_eq!(source_names(&out), [("sds-grpc".to_owned(), vec![])]);
    a.handle_input(Input::Applied(apply_id(&out).unwrap()));
    drain(&mut a);
    assert!(a.applied().source_secrets.is_empty());
}

/// Per-resource warming with a source secret: cluster `up`, waiting for its source's
/// `ROOTCA`, holds back nothing else (cluster `other` of the same CDS response applies) and
/// waits without a timeout (no warming timer); the CDS response is ACKed once `other`
/// serves, `up` validated with a placeholder. A bad `ROOTCA` then is refused on the source's
/// stream alone — CDS, ACKed, is not refused later, and `up` keeps waiting — and a good one
/// brings `up` in.
#[test]
fn a_cluster_waiting_for_a_source_secret_holds_back_nothing_else_and_its_bad_secret_is_the_sources_refusal()
 {
    let mut a = Ads::new(node(), bootstrap());
    a.handle_input(Input::Connected);
    drain(&mut a);
    let other = static_cluster("other", &[("127.0.0.1", 8080, 0)]);
    a.handle_input(cds("1", "c1", &[tls_cluster("sds-grpc"), other]));
    let out = drain(&mut a);
    assert!(
        !out.iter().any(|o| matches!(o, Output::ArmWarmingTimer(_))),
        "a source secret has no timeout: {out:?}"
    );
    let names = |config: &Config| -> Vec<String> {
        config.clusters.iter().map(|c| c.name.clone()).collect()
    };
    let served = names(applied_config(&out));
    assert!(served.contains(&"other".to_owned()), "{served:?}");
    assert!(!served.contains(&"up".to_owned()), "{served:?}");
    a.handle_input(Input::Applied(apply_id(&out).unwrap()));
    let out = drain(&mut a);
    assert_eq!(acks(&out), [(ResourceType::Cluster, "c1".to_owned(), None)]);
    assert_eq!(
        a.warming().iter().collect::<Vec<_>>(),
        [&(ResourceType::Cluster, "up".to_owned())]
    );

    let bad = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
    a.handle_input(source_secrets("s1", vec![ca_secret("ROOTCA", bad)]));
    let out = drain(&mut a);
    assert_eq!(apply_id(&out), None, "{out:?}");
    let v = verdicts(&out);
    assert_eq!(v.len(), 1, "{out:?}");
    assert_eq!((v[0].0.as_str(), v[0].1.as_str()), ("sds-grpc", "s1"));
    let error = v[0].2.as_deref().expect("refused");
    assert!(
        error.starts_with("secret \"ROOTCA\" validation_context.trusted_ca: not usable PEM"),
        "{error}"
    );
    assert!(acks(&out).is_empty(), "CDS, ACKed, is not refused: {out:?}");
    assert_eq!(
        a.warming().iter().collect::<Vec<_>>(),
        [&(ResourceType::Cluster, "up".to_owned())]
    );

    let (ca, _, _) = pki(&["x"]);
    a.handle_input(source_secrets("s2", vec![ca_secret("ROOTCA", &ca)]));
    let out = drain(&mut a);
    let served = names(applied_config(&out));
    assert!(served.contains(&"up".to_owned()), "{served:?}");
    assert!(verdicts(&out).is_empty(), "answered once it serves");
    a.handle_input(Input::Applied(apply_id(&out).unwrap()));
    let out = drain(&mut a);
    assert_eq!(
        verdicts(&out),
        [("sds-grpc".to_owned(), "s2".to_owned(), None)]
    );
    assert!(acks(&out).is_empty(), "{out:?}");
    assert!(a.warming().is_empty());
}

/// A source's certificate whose private key does not go with it is refused in validation,
/// charged to that source alone (its verdict names the secret and why); an unrelated CDS
/// update folded with it in time is applied and ACKed, not NACKed for the source's key, and the
/// listener serves on with the previous certificate.
#[test]
fn a_source_certificate_whose_key_does_not_match_is_refused_to_the_source_alone() {
    use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::DownstreamTlsContext;
    let (_, leaf1, key1) = pki(&["a"]);
    let (_, leaf2, _key2) = pki(&["a"]);
    let mut a = Ads::new(node(), bootstrap());
    a.handle_input(Input::Connected);
    drain(&mut a);
    let mut l = tcp_listener("in", "127.0.0.1", 9000, "xds");
    l.filter_chains[0].transport_socket = Some(tls_socket(&DownstreamTlsContext {
        common_tls_context: Some(CommonTlsContext {
            tls_certificate_sds_secret_configs: vec![source_sds("sds-grpc", "default")],
            ..Default::default()
        }),
        ..Default::default()
    }));
    a.handle_input(Input::Response(DiscoveryResponse {
        version_info: "1".into(),
        resources: vec![any(&l)],
        type_url: ResourceType::Listener.type_url().into(),
        nonce: "l1".into(),
        ..Default::default()
    }));
    drain(&mut a);
    a.handle_input(source_secrets(
        "s1",
        vec![certificate_secret("default", &leaf1, &key1)],
    ));
    let out = drain(&mut a);
    a.handle_input(Input::Applied(
        apply_id(&out).expect("listener with its certificate"),
    ));
    let served = a.applied().clone();
    assert!(served.listeners.contains_key("in"));
    // An unrelated cluster update starts an apply; during it a valid CDS update and the
    // source's bad rotation (leaf2 with key1) arrive.
    a.handle_input(cds(
        "2",
        "c2",
        &[static_cluster("b", &[("127.0.0.1", 8002, 0)])],
    ));
    let out = drain(&mut a);
    let first = apply_id(&out).expect("apply c2");
    a.handle_input(cds(
        "3",
        "c3",
        &[static_cluster("b", &[("127.0.0.1", 8003, 0)])],
    ));
    a.handle_input(source_secrets(
        "s2",
        vec![certificate_secret("default", &leaf2, &key1)],
    ));
    a.handle_input(Input::Applied(first));
    let out = drain(&mut a);
    let v = verdicts(&out);
    assert_eq!(v.len(), 1, "{out:?}");
    let (source, nonce, error) = &v[0];
    assert_eq!((source.as_str(), nonce.as_str()), ("sds-grpc", "s2"));
    let error = error.as_deref().expect("refused");
    assert!(
        error.contains("\"default\"")
            && error.contains("private_key")
            && error.contains("does not go with"),
        "{error}"
    );
    assert!(acks(&out).iter().all(|(_, _, e)| e.is_none()), "{out:?}");
    let second = apply_id(&out).expect("c3 applied");
    a.handle_input(Input::Applied(second));
    let out = drain(&mut a);
    assert_eq!(acks(&out), [(ResourceType::Cluster, "c3".to_owned(), None)]);
    assert_eq!(
        a.applied().source_secrets["sds-grpc"]["default"],
        served.source_secrets["sds-grpc"]["default"],
        "the previous certificate serves on"
    );
}

/// Two SDS sources each serving a secret named `ROOTCA` (clusters `up-a` and `up-b` trust one
/// each): a bad `ROOTCA` from `b`, folded with a good rotation from `a` during an apply, is
/// `b`'s refusal alone — `a`'s rotation is applied and accepted, not refused for a secret of
/// the same name from another source.
#[test]
fn a_bad_secret_of_one_source_is_not_charged_to_another_sources_secret_of_that_name() {
    let bootstrap = json!({
        "xds": {
            "cluster": "xds",
            "sds_sources": [
                { "name": "a", "path": "/run/a.sock" },
                { "name": "b", "path": "/run/b.sock" },
            ],
        },
        "listeners": [],
        "clusters": [ { "name": "xds", "hosts": [ { "address": "127.0.0.1:18000" } ] } ],
    });
    let from = |source: &str, nonce: &str, ca: &str| Input::SourceSecrets {
        source: source.into(),
        nonce: nonce.into(),
        secrets: vec![ca_secret("ROOTCA", ca)],
    };
    let named = |name: &str, source: &str| {
        let mut c = tls_cluster(source);
        c.name = name.into();
        c
    };
    let (ca_a, _, _) = pki(&["x"]);
    let (ca_b, _, _) = pki(&["x"]);
    let mut a = Ads::new(node(), bootstrap);
    a.handle_input(Input::Connected);
    drain(&mut a);
    a.handle_input(cds("1", "c1", &[named("up-a", "a"), named("up-b", "b")]));
    drain(&mut a);
    a.handle_input(from("a", "a1", &ca_a));
    let out = drain(&mut a);
    if let Some(id) = apply_id(&out) {
        a.handle_input(Input::Applied(id));
        drain(&mut a);
    }
    a.handle_input(from("b", "b1", &ca_b));
    let out = drain(&mut a);
    a.handle_input(Input::Applied(apply_id(&out).expect("both clusters")));
    drain(&mut a);
    assert_eq!(
        a.applied().source_secrets["b"]["ROOTCA"],
        ca_secret("ROOTCA", &ca_b)
    );
    // An unrelated cluster starts an apply; during it `a`'s rotation and `b`'s bad secret.
    let other = static_cluster("other", &[("127.0.0.1", 8002, 0)]);
    a.handle_input(cds(
        "2",
        "c2",
        &[named("up-a", "a"), named("up-b", "b"), other.clone()],
    ));
    let out = drain(&mut a);
    let first = apply_id(&out).expect("apply c2");
    let (ca_a2, _, _) = pki(&["x"]);
    let bad = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
    a.handle_input(from("a", "a2", &ca_a2));
    a.handle_input(from("b", "b2", bad));
    a.handle_input(Input::Applied(first));
    let mut out = drain(&mut a);
    while let Some(id) = apply_id(&out) {
        a.handle_input(Input::Applied(id));
        out.extend(drain(&mut a));
        if verdicts(&out).iter().any(|(s, _, _)| s == "a") {
            break;
        }
    }
    let v = verdicts(&out);
    let refused: Vec<&str> = v
        .iter()
        .filter(|(_, _, e)| e.is_some())
        .map(|(s, n, _)| if s == "a" { "a" } else { n.as_str() })
        .collect();
    assert_eq!(refused, ["b2"], "only b's update is refused: {v:?}");
    assert!(
        v.contains(&("a".to_owned(), "a2".to_owned(), None)),
        "a's rotation accepted: {v:?}"
    );
    assert_eq!(
        a.applied().source_secrets["a"]["ROOTCA"],
        ca_secret("ROOTCA", &ca_a2)
    );
    assert_eq!(
        a.applied().source_secrets["b"]["ROOTCA"],
        ca_secret("ROOTCA", &ca_b)
    );
}
