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
