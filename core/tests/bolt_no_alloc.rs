//! `bolt::decode`, header lookups and `set_request_id` never allocate; `encode_response` into a
//! `Vec` with room does not either. Counted with a per-thread counting global allocator (an
//! integration test, as the library forbids `unsafe`).

mod common;
use common::allocations_in;

#[test]
fn the_counter_counts() {
    assert_eq!(
        allocations_in(|| drop(std::hint::black_box(Box::new(7u64)))),
        1
    );
}

use sluice_core::bolt::{
    CMD_REQUEST, CMD_VERSION, DEFAULT_MAX_FRAME_SIZE, RequestSpec, ResponseStatus, Version, decode,
    encode_heartbeat_reply, encode_request, encode_response, header_value, set_request_id,
};

#[test]
fn bolt_decode_and_patch_do_not_allocate() {
    for version in [Version::V1, Version::V2 { ver1: 2, switch: 1 }] {
        let mut buf = Vec::new();
        encode_request(
            &mut buf,
            &RequestSpec {
                version,
                oneway: false,
                cmd_code: CMD_REQUEST,
                cmd_version: CMD_VERSION,
                request_id: 1,
                codec: 1,
                timeout_ms: 3000,
                class: b"com.alipay.sofa.rpc.core.request.SofaRequest",
                header: &[
                    (b"service", Some(b"com.nodejs.test.TestService:1.0")),
                    (b"z", None),
                ],
                content: &[7; 239],
            },
        )
        .unwrap();
        let mut out = Vec::with_capacity(1024);
        let n = allocations_in(|| {
            for cut in 0..=buf.len() {
                let _ = std::hint::black_box(decode(&buf[..cut], DEFAULT_MAX_FRAME_SIZE));
            }
            let f = decode(&buf, DEFAULT_MAX_FRAME_SIZE).unwrap().unwrap();
            assert!(header_value(&f, b"service").is_some());
            assert_eq!(f.header.iter().count(), 2);
            encode_heartbeat_reply(&mut out, &f);
            out.clear();
            encode_response(
                &mut out,
                version,
                1,
                1,
                ResponseStatus::NoProcessor,
                b"",
                &[(b"k", b"v")],
                b"",
            )
            .unwrap();
            let len = f.len;
            set_request_id(&mut buf[..len], 99);
        });
        assert_eq!(n, 0, "{version:?}: {n} allocations");
    }
}

#[test]
fn bolt_routing_does_not_allocate() {
    use sluice_core::bolt::BoltRouter;
    use sluice_core::config::{Config, ListenerFilter};

    let config = Config::from_yaml(
        r#"
listeners:
  - name: rpc
    address: 127.0.0.1:12200
    bolt:
      routes:
        - match: { service: "com.example.EchoService:1.0" }
          route: { cluster: echo, timeout: 3s }
        - match: { service_regex: "^com\\.example\\..*", headers: [ { name: zone, exact: gz }, { name: canary, present: false } ] }
          route: { cluster: gz }
        - match: { headers: [ { name: sofa_head_method_name, regex: "get[A-Z].*" } ] }
          route: { cluster: gz }
clusters:
  - { name: echo, hosts: [ { address: 127.0.0.1:1 } ] }
  - { name: gz, hosts: [ { address: 127.0.0.1:2 } ] }
"#,
    )
    .unwrap();
    let ListenerFilter::Bolt(b) = &config.listeners[0].filter else {
        panic!("not bolt")
    };
    let router = BoltRouter::new(b).unwrap();
    let frame = |service: &'static [u8],
                 extra: &'static [(&'static [u8], Option<&'static [u8]>)]| {
        let mut header: Vec<(&[u8], Option<&[u8]>)> = vec![(b"service", Some(service))];
        header.extend_from_slice(extra);
        let mut buf = Vec::new();
        encode_request(
            &mut buf,
            &RequestSpec {
                version: Version::V1,
                oneway: false,
                cmd_code: CMD_REQUEST,
                cmd_version: CMD_VERSION,
                request_id: 1,
                codec: 1,
                timeout_ms: 3000,
                class: b"com.alipay.sofa.rpc.core.request.SofaRequest",
                header: &header,
                content: &[7; 64],
            },
        )
        .unwrap();
        buf
    };
    let cases = [
        (frame(b"com.example.EchoService:1.0", &[]), Some(0)),
        (
            frame(b"com.example.Other:1.0", &[(b"zone", Some(b"gz"))]),
            Some(1),
        ),
        (
            frame(
                b"com.example.Other:1.0",
                &[(b"zone", Some(b"gz")), (b"canary", Some(b"1"))],
            ),
            None,
        ),
        (
            frame(b"x", &[(b"sofa_head_method_name", Some(b"getUser"))]),
            Some(2),
        ),
        (frame(b"x", &[]), None),
    ];
    // The regexes' scratch space is allocated on their first run on this thread.
    for (buf, want) in &cases {
        let f = decode(buf, DEFAULT_MAX_FRAME_SIZE).unwrap().unwrap();
        assert_eq!(router.route_index(&f), *want);
    }
    let n = allocations_in(|| {
        for _ in 0..10 {
            for (buf, want) in &cases {
                let f = decode(buf, DEFAULT_MAX_FRAME_SIZE).unwrap().unwrap();
                assert_eq!(router.route_index(&f), *want);
                std::hint::black_box(router.route(&f));
            }
        }
    });
    assert_eq!(n, 0, "{n} allocations");
}

/// The whole core path of a request and its response, as the loopback benchmark drives it
/// (32 downstream connections keeping 8 requests each in flight on one multiplexed upstream
/// connection, each answer followed by a new request, a route timeout on every request):
/// decode, route, pick, register, deadline, id patch both ways, end of stream — allocates
/// nothing once the maps and the deadline queue reached their working size.
#[test]
fn bolt_proxy_requests_and_responses_do_not_allocate_once_warm() {
    use sluice_core::Instant;
    use sluice_core::bolt::{
        Action, BoltProxy, CODEC_HESSIAN2, DownstreamId, DownstreamVerdict, UpstreamVerdict,
    };
    use sluice_core::cluster::ClusterState;
    use sluice_core::config::Config;
    use sluice_core::rng::Rng;
    use std::time::Duration;

    const CONNECTIONS: usize = 32;
    const PIPELINE: usize = 8;
    let config = Config::from_yaml(
        r#"
listeners:
  - name: rpc
    address: 127.0.0.1:12200
    bolt:
      routes:
        - match: { service: "com.example.EchoService:1.0" }
          route: { cluster: echo, timeout: 3s }
clusters:
  - { name: echo, hosts: [ { address: 127.0.0.1:1 } ] }
"#,
    )
    .unwrap();
    let mut proxy = BoltProxy::from_config(&config).unwrap();
    let mut clusters: Vec<ClusterState> = config
        .clusters
        .iter()
        .map(ClusterState::from_config)
        .collect();
    let mut rng = Rng::from_seed(7);
    let downs: Vec<DownstreamId> = (0..CONNECTIONS)
        .map(|i| proxy.open_downstream(0, format!("127.0.0.1:{}", 40000 + i).parse().ok()))
        .collect();
    let mut request = Vec::new();
    encode_request(
        &mut request,
        &RequestSpec {
            version: Version::V1,
            oneway: false,
            cmd_code: CMD_REQUEST,
            cmd_version: CMD_VERSION,
            request_id: 1,
            codec: CODEC_HESSIAN2,
            timeout_ms: 3000,
            class: b"com.alipay.sofa.rpc.core.request.SofaRequest",
            header: &[(b"service", Some(b"com.example.EchoService:1.0"))],
            content: &[7; 64],
        },
    )
    .unwrap();
    let mut response = Vec::new();
    encode_response(
        &mut response,
        Version::V1,
        1,
        CODEC_HESSIAN2,
        ResponseStatus::Success,
        b"",
        &[],
        &[7; 64],
    )
    .unwrap();
    // In flight, oldest first: (downstream index, upstream connection, upstream id).
    let mut in_flight = std::collections::VecDeque::with_capacity(CONNECTIONS * PIPELINE + 1);
    let mut now = Instant::ORIGIN;
    let mut send = |proxy: &mut BoltProxy,
                    clusters: &mut Vec<ClusterState>,
                    in_flight: &mut std::collections::VecDeque<_>,
                    now: Instant,
                    d: usize| {
        let f = decode(&request, DEFAULT_MAX_FRAME_SIZE).unwrap().unwrap();
        let DownstreamVerdict::Forward { up, request_id } =
            proxy.handle_downstream_frame(now, downs[d], &f, clusters, &mut rng)
        else {
            panic!("not forwarded")
        };
        let len = f.len;
        set_request_id(&mut request[..len], request_id);
        while let Some(a) = proxy.poll_action() {
            if let Action::Connect { up, .. } = a {
                proxy.handle_upstream_connected(up);
            }
        }
        in_flight.push_back((d, up, request_id));
    };
    let mut answer_one = |proxy: &mut BoltProxy,
                          clusters: &mut Vec<ClusterState>,
                          in_flight: &mut std::collections::VecDeque<_>,
                          now: Instant|
     -> usize {
        let (d, up, id): (usize, _, u32) = in_flight.pop_front().unwrap();
        set_request_id(&mut response, id);
        let f = decode(&response, DEFAULT_MAX_FRAME_SIZE).unwrap().unwrap();
        let verdict = proxy.handle_upstream_frame(now, up, &f, clusters);
        assert!(
            matches!(verdict, UpstreamVerdict::Forward { down, .. } if down == downs[d]),
            "{verdict:?}"
        );
        let len = f.len;
        set_request_id(&mut response[..len], 1);
        d
    };
    for d in 0..CONNECTIONS {
        for _ in 0..PIPELINE {
            send(&mut proxy, &mut clusters, &mut in_flight, now, d);
        }
    }
    // Each answer lets its connection send its next request, a little later.
    let mut step = |proxy: &mut BoltProxy,
                    clusters: &mut Vec<ClusterState>,
                    in_flight: &mut std::collections::VecDeque<_>,
                    now: &mut Instant| {
        *now += Duration::from_micros(3);
        let d = answer_one(proxy, clusters, in_flight, *now);
        send(proxy, clusters, in_flight, *now, d);
        proxy.handle_timeout(*now, clusters);
    };
    for _ in 0..300 {
        step(&mut proxy, &mut clusters, &mut in_flight, &mut now);
    }
    // Debug builds check the proxy's invariants after every input (checked for the first
    // steps above, and once at the end); the check allocates, the product path must not.
    proxy.set_invariant_checks(false);
    for _ in 300..20_000 {
        step(&mut proxy, &mut clusters, &mut in_flight, &mut now);
    }
    let n = allocations_in(|| {
        for _ in 0..20_000 {
            step(&mut proxy, &mut clusters, &mut in_flight, &mut now);
        }
    });
    proxy.set_invariant_checks(true);
    proxy.check_invariants();
    assert_eq!(n, 0, "{n} allocations in 20000 requests and responses");
    assert_eq!(proxy.in_flight(), CONNECTIONS * PIPELINE);
    assert_eq!(proxy.stats().responses, 40_000);
    assert_eq!(proxy.stats().timeouts, 0);
}
