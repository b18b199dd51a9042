//! The SDS source client alone: subscription, ACK/NACK after the verdict, reconnect.

use envoy_types::pb::envoy::service::discovery::v3::DiscoveryResponse;
use envoy_types::pb::google::protobuf::Any;

use super::*;
use crate::fixtures::{any, ca_secret, certificate_secret};

fn node() -> Node {
    Node {
        id: "sidecar-1".into(),
        ..Default::default()
    }
}

fn drain(s: &mut Sds) -> Vec<Output> {
    std::iter::from_fn(|| s.poll_output()).collect()
}

/// (version, nonce, names, error?, has node, answer) of a request.
type Sent = (String, String, Vec<String>, Option<String>, bool, Answer);

/// Each request sent.
fn sent(out: &[Output]) -> Vec<Sent> {
    out.iter()
        .filter_map(|o| match o {
            Output::Send(r, a) => Some((
                r.version_info.clone(),
                r.response_nonce.clone(),
                r.resource_names.clone(),
                r.error_detail.as_ref().map(|e| e.message.clone()),
                r.node.is_some(),
                *a,
            )),
            Output::Secrets { .. } => None,
        })
        .collect()
}

fn handed(out: &[Output]) -> Vec<(String, Vec<String>)> {
    out.iter()
        .filter_map(|o| match o {
            Output::Secrets { nonce, secrets } => Some((
                nonce.clone(),
                secrets.iter().map(|s| s.name.clone()).collect(),
            )),
            Output::Send(..) => None,
        })
        .collect()
}

fn response(version: &str, nonce: &str, resources: Vec<Any>) -> Input {
    Input::Response(DiscoveryResponse {
        version_info: version.into(),
        resources,
        type_url: Secret::type_url(),
        nonce: nonce.into(),
        ..Default::default()
    })
}

fn names(n: &[&str]) -> BTreeSet<String> {
    n.iter().map(|s| (*s).to_owned()).collect()
}

fn strings(n: &[&str]) -> Vec<String> {
    n.iter().map(|s| (*s).to_owned()).collect()
}

/// Connected, subscribed to `default` and `ROOTCA`, version 1 accepted.
fn serving() -> Sds {
    let mut s = Sds::new(node());
    s.handle_input(Input::Connected);
    assert!(
        drain(&mut s).is_empty(),
        "no names: nothing asked (no wildcard)"
    );
    s.handle_input(Input::Names(names(&["default", "ROOTCA"])));
    let out = drain(&mut s);
    assert_eq!(
        sent(&out),
        [(
            String::new(),
            String::new(),
            strings(&["ROOTCA", "default"]),
            None,
            true,
            Answer::Subscription
        )]
    );
    s.handle_input(response(
        "1",
        "n1",
        vec![
            any(&certificate_secret("default", "chain", "key")),
            any(&ca_secret("ROOTCA", "ca")),
        ],
    ));
    let out = drain(&mut s);
    assert!(sent(&out).is_empty(), "no ACK before the verdict: {out:?}");
    assert_eq!(
        handed(&out),
        [("n1".to_owned(), strings(&["default", "ROOTCA"]))]
    );
    s.handle_input(Input::Verdict {
        nonce: "n1".into(),
        error: None,
    });
    let out = drain(&mut s);
    assert_eq!(
        sent(&out),
        [(
            "1".to_owned(),
            "n1".to_owned(),
            strings(&["ROOTCA", "default"]),
            None,
            false,
            Answer::Ack
        )]
    );
    assert_eq!(s.accepted_version(), "1");
    s
}

#[test]
fn secrets_are_acked_after_the_verdict_with_the_node_on_the_first_request_only() {
    let s = serving();
    assert_eq!(
        s.secret_versions(),
        &BTreeMap::from([
            ("ROOTCA".to_owned(), "1".to_owned()),
            ("default".to_owned(), "1".to_owned())
        ])
    );
}

#[test]
fn a_refused_rotation_is_nacked_with_the_last_accepted_version() {
    let mut s = serving();
    s.handle_input(response(
        "2",
        "n2",
        vec![any(&certificate_secret("default", "bad", "key"))],
    ));
    drain(&mut s);
    s.handle_input(Input::Verdict {
        nonce: "n2".into(),
        error: Some("secret \"default\": not usable PEM".into()),
    });
    let out = drain(&mut s);
    assert_eq!(
        sent(&out),
        [(
            "1".to_owned(),
            "n2".to_owned(),
            strings(&["ROOTCA", "default"]),
            Some("secret \"default\": not usable PEM".to_owned()),
            false,
            Answer::Nack
        )]
    );
    assert_eq!(s.accepted_version(), "1");
    assert_eq!(s.secret_versions()["default"], "1");
}

#[test]
fn undecodable_and_foreign_responses_are_nacked_at_once() {
    let mut s = serving();
    s.handle_input(response(
        "2",
        "n2",
        vec![Any {
            type_url: Secret::type_url(),
            value: vec![0xff, 0xff],
        }],
    ));
    let out = drain(&mut s);
    assert!(handed(&out).is_empty());
    let reqs = sent(&out);
    assert_eq!(reqs.len(), 1);
    assert_eq!((reqs[0].0.as_str(), reqs[0].1.as_str()), ("1", "n2"));
    assert!(
        reqs[0]
            .3
            .as_deref()
            .unwrap()
            .starts_with("resources[0]: undecodable"),
        "{reqs:?}"
    );
    s.handle_input(response(
        "3",
        "n3",
        vec![
            any(&ca_secret("ROOTCA", "a")),
            any(&ca_secret("ROOTCA", "b")),
        ],
    ));
    let reqs = sent(&drain(&mut s));
    assert_eq!(
        reqs[0].3.as_deref(),
        Some("resources[1]: \"ROOTCA\" is listed twice")
    );
    s.handle_input(Input::Response(DiscoveryResponse {
        type_url: "type.googleapis.com/envoy.config.cluster.v3.Cluster".into(),
        nonce: "n4".into(),
        ..Default::default()
    }));
    let reqs = sent(&drain(&mut s));
    assert_eq!(reqs[0].5, Answer::Nack);
    assert_eq!(s.accepted_version(), "1");
}

#[test]
fn secrets_not_subscribed_to_are_dropped_and_counted() {
    let mut s = serving();
    s.handle_input(response(
        "2",
        "n2",
        vec![
            any(&ca_secret("ROOTCA", "b")),
            any(&ca_secret("stranger", "c")),
        ],
    ));
    let out = drain(&mut s);
    assert_eq!(handed(&out), [("n2".to_owned(), strings(&["ROOTCA"]))]);
    assert_eq!(s.unsolicited(), 1);
}

#[test]
fn a_verdict_answers_the_earlier_responses_folded_into_it() {
    let mut s = serving();
    s.handle_input(response("2", "n2", vec![any(&ca_secret("ROOTCA", "b"))]));
    s.handle_input(response(
        "3",
        "n3",
        vec![any(&certificate_secret("default", "c", "k"))],
    ));
    drain(&mut s);
    s.handle_input(Input::Verdict {
        nonce: "n3".into(),
        error: None,
    });
    let reqs = sent(&drain(&mut s));
    assert_eq!(reqs.len(), 1, "one ACK, of the latest: {reqs:?}");
    assert_eq!((reqs[0].0.as_str(), reqs[0].1.as_str()), ("3", "n3"));
    assert_eq!(s.secret_versions()["ROOTCA"], "2");
    assert_eq!(s.secret_versions()["default"], "3");
    // Its earlier one is answered already: a late verdict for it sends nothing.
    s.handle_input(Input::Verdict {
        nonce: "n2".into(),
        error: None,
    });
    assert!(drain(&mut s).is_empty());
}

#[test]
fn a_reconnect_resubscribes_with_the_node_and_the_accepted_version() {
    let mut s = serving();
    s.handle_input(response("2", "n2", vec![any(&ca_secret("ROOTCA", "b"))]));
    drain(&mut s);
    s.handle_input(Input::Disconnected);
    assert!(!s.connected());
    // Nothing is sent while disconnected, and the verdict of the old stream's response is
    // not answered on the new one.
    s.handle_input(Input::Names(names(&["default", "ROOTCA", "extra"])));
    assert!(drain(&mut s).is_empty());
    s.handle_input(Input::Connected);
    let out = drain(&mut s);
    assert_eq!(
        sent(&out),
        [(
            "1".to_owned(),
            String::new(),
            strings(&["ROOTCA", "default", "extra"]),
            None,
            true,
            Answer::Subscription
        )]
    );
    s.handle_input(Input::Verdict {
        nonce: "n2".into(),
        error: None,
    });
    assert!(drain(&mut s).is_empty(), "an old stream's nonce");
    assert_eq!(s.accepted_version(), "1");
}

#[test]
fn a_change_of_names_is_a_request_with_the_last_nonce() {
    let mut s = serving();
    s.handle_input(Input::Names(names(&["default"])));
    let out = drain(&mut s);
    assert_eq!(
        sent(&out),
        [(
            "1".to_owned(),
            "n1".to_owned(),
            strings(&["default"]),
            None,
            false,
            Answer::Subscription
        )]
    );
    assert!(!s.secret_versions().contains_key("ROOTCA"));
    // No name left: nothing sent (an empty list would ask for every secret).
    s.handle_input(Input::Names(BTreeSet::new()));
    assert!(drain(&mut s).is_empty());
}
