//! `Router::route` does not allocate on its non-regex path, and once a regex has run on a
//! thread it does not allocate there again; `pick_cluster` and `rewrite_prefix` (into a buffer
//! with room) never do; nor do `request_hash` and the consistent-hash picks (a Maglev table
//! rebuilt after an availability change reuses its memory). Counted with a per-thread counting global allocator (which is why this
//! is an integration test: the library itself forbids `unsafe`).

use sluice_core::cluster::{ClusterState, HostId};
use sluice_core::config::http::{HttpConfig, RouteAction};
use sluice_core::config::{
    ClusterConfig, Config, HashPolicy, HostConfig, LbPolicy, ListenerFilter,
};
use sluice_core::lb::request_hash;
use sluice_core::rng::Rng;
use sluice_core::router::{Router, pick_cluster, rewrite_prefix};

mod common;
use common::allocations_in;

fn example() -> HttpConfig {
    let config = Config::from_yaml(include_str!("../../configs/http.yaml")).unwrap();
    match &config.listeners[0].filter {
        ListenerFilter::Http(h) => (**h).clone(),
        _ => panic!("configs/http.yaml: the first listener is not http"),
    }
}

const HEADERS: [(&str, &[u8]); 2] = [("x-canary", b"1"), ("authorization", b"Basic x")];

fn lookup(name: &str) -> Option<&'static [u8]> {
    HEADERS.iter().find(|(n, _)| *n == name).map(|(_, v)| *v)
}

fn none(_: &str) -> Option<&'static [u8]> {
    None
}

#[test]
fn the_counter_counts() {
    assert_eq!(
        allocations_in(|| drop(std::hint::black_box(Box::new(7u64)))),
        1
    );
}

#[test]
fn routing_does_not_allocate() {
    let router = Router::new(&example()).unwrap();
    // Requests that every route before the regex one decides.
    type Lookup = dyn Fn(&str) -> Option<&'static [u8]>;
    let plain: [(&[u8], &[u8], &Lookup); 6] = [
        (b"example.com", b"/hello", &none),
        (b"WWW.Example.com:8080", b"/healthz", &none),
        (b"example.com", b"/api/users", &lookup),
        (b"admin.example.com", b"/", &none),
        (b"admin.internal:1", b"/x", &lookup),
        (b"[::1]:80", b"/hello", &none),
    ];
    let n = allocations_in(|| {
        for (host, path, headers) in plain {
            assert!(router.route(host, path, headers).is_some());
        }
    });
    assert_eq!(n, 0, "allocations routing without a regex");

    // A regex allocates its scratch space on its first run on a thread, then reuses it.
    let with_regex: [(&[u8], &[u8]); 3] = [
        (b"example.com", b"/v2/items"),
        (b"example.com", b"/index.html"),
        (b"example.com", b"/v2/items/x"),
    ];
    for (host, path) in with_regex {
        router.route(host, path, &none).unwrap();
    }
    let n = allocations_in(|| {
        for _ in 0..100 {
            for (host, path) in with_regex {
                assert!(router.route(host, path, &none).is_some());
            }
        }
    });
    assert_eq!(
        n, 0,
        "allocations routing through a regex already used on this thread"
    );
}

#[test]
fn picking_and_rewriting_do_not_allocate() {
    let config = example();
    let router = Router::new(&config).unwrap();
    let weighted = router.route(b"example.com", b"/v1/items", &none).unwrap();
    let RouteAction::Forward(forward) = &weighted.route.action else {
        panic!("the regex route forwards")
    };
    let mut rng = Rng::from_seed(1);
    let mut out = Vec::with_capacity(256);
    let n = allocations_in(|| {
        for _ in 0..1000 {
            pick_cluster(&forward.target, &mut rng);
            rewrite_prefix(b"/api/users/42", "/api/", "/v1/", &mut out);
        }
    });
    assert_eq!(n, 0);
    assert_eq!(out, b"/v1/users/42");
}

#[test]
fn hashing_and_hashed_picks_do_not_allocate() {
    let policies = [
        HashPolicy::Header("x-missing".into()),
        HashPolicy::Header("x-canary".into()),
        HashPolicy::SourceIp,
    ];
    let peer = Some("10.0.0.9".parse().unwrap());
    for lb_policy in [LbPolicy::RingHash, LbPolicy::Maglev] {
        let mut cluster = ClusterState::from_config(&ClusterConfig {
            name: "hashed".into(),
            lb_policy,
            hosts: (1..=8)
                .map(|i| HostConfig {
                    address: format!("10.1.0.{i}:80").parse().unwrap(),
                    weight: i,
                    priority: 0,
                    transport_socket_match: None,
                    health: Default::default(),
                })
                .collect(),
            ..ClusterConfig::default()
        });
        let mut rng = Rng::from_seed(1);
        let n = allocations_in(|| {
            for i in 0..1000u64 {
                let hash = request_hash(&policies, lookup, peer).map(|h| h ^ i);
                assert!(hash.is_some());
                let first = cluster.pick_hashed(&mut rng, &[], hash).unwrap();
                let second = cluster.pick_hashed(&mut rng, &[first], hash).unwrap();
                assert_ne!(first, second);
                assert!(cluster.pick_hashed(&mut rng, &[], None).is_some());
                // Availability changes, and the Maglev table's rebuild at the next pick.
                if i % 100 == 0 {
                    let h = HostId((i / 100 % 8) as u32);
                    cluster.set_available(h, false);
                    assert_ne!(cluster.pick_hashed(&mut rng, &[], hash), Some(h));
                    cluster.set_available(h, true);
                }
            }
        });
        assert_eq!(n, 0, "{lb_policy:?}");
    }
}
