//! Criterion micro-benchmarks of the Bolt codec (`sluice_core::bolt`): decoding (throughput in
//! bytes), patching a request id in place, and encoding a proxy-generated response.
//!
//! ```text
//! cargo bench -p sluice-benches --bench bolt -- --warm-up-time 1 --measurement-time 2
//! cargo bench -p sluice-benches --bench bolt -- decode        # one group by filter
//! ```
//!
//! The frames are built as sofa-rpc-node sends them: the 351-byte `plus(1,2)` request of
//! `toolchain.md` §5.1, and the same request with 4 KiB of content. Encoding reuses one cleared
//! output `Vec`, as a worker would.
//!
//! `bolt_route` routes one decoded request with [`BoltRouter`] (issue 4's two routes: an exact
//! service, a service regex with a header); `bolt_proxy` takes one request and its response
//! through [`BoltProxy`] the way a driver does (decode, verdict, patch the id, both ways).

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use sluice_core::Instant;

use sluice_core::bolt::{
    Action, BoltProxy, BoltRouter, CMD_REQUEST, CMD_VERSION, CODEC_HESSIAN2,
    DEFAULT_MAX_FRAME_SIZE, DownstreamVerdict, RequestSpec, ResponseStatus, UpstreamVerdict,
    Version, decode, encode_request, encode_response, header_value, set_request_id,
};
use sluice_core::cluster::ClusterState;
use sluice_core::config::{Config, ListenerFilter};
use sluice_core::rng::Rng;

const SERVICE: &[u8] = b"com.nodejs.test.TestService:1.0";
const CLASS: &[u8] = b"com.alipay.sofa.rpc.core.request.SofaRequest";

fn request(version: Version, content_len: usize) -> Vec<u8> {
    let content: Vec<u8> = (0..content_len).map(|i| (i * 7) as u8).collect();
    let mut out = Vec::new();
    encode_request(
        &mut out,
        &RequestSpec {
            version,
            oneway: false,
            cmd_code: CMD_REQUEST,
            cmd_version: CMD_VERSION,
            request_id: 1,
            codec: CODEC_HESSIAN2,
            timeout_ms: 3000,
            class: CLASS,
            header: &[(b"service", Some(SERVICE))],
            content: &content,
        },
    )
    .expect("fits");
    out
}

fn decode_bench(c: &mut Criterion) {
    let v2_crc = Version::V2 { ver1: 2, switch: 1 };
    let frames = [
        ("v1_351B_sofa_plus", request(Version::V1, 239)),
        ("v1_4KiB_content", request(Version::V1, 4096)),
        ("v2_crc_351B", request(v2_crc, 239)),
        ("v2_crc_4KiB_content", request(v2_crc, 4096)),
    ];
    assert_eq!(frames[0].1.len(), 351);
    let mut g = c.benchmark_group("bolt_decode");
    for (name, frame) in &frames {
        g.throughput(Throughput::Bytes(frame.len() as u64));
        g.bench_function(*name, |b| {
            b.iter(|| {
                let f = decode(black_box(frame), DEFAULT_MAX_FRAME_SIZE)
                    .unwrap()
                    .unwrap();
                black_box(header_value(&f, b"service"));
                f.len
            })
        });
    }
    g.finish();
}

fn set_request_id_bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("bolt_set_request_id");
    g.throughput(Throughput::Elements(1));
    let mut v1 = request(Version::V1, 239);
    let mut v2 = request(Version::V2 { ver1: 2, switch: 1 }, 239);
    let mut id = 0u32;
    g.bench_function("v1_351B", |b| {
        b.iter(|| {
            id = id.wrapping_add(1);
            set_request_id(black_box(&mut v1), id);
        })
    });
    g.bench_function("v2_crc_351B", |b| {
        b.iter(|| {
            id = id.wrapping_add(1);
            set_request_id(black_box(&mut v2), id);
        })
    });
    g.finish();
}

fn encode_bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("bolt_encode_response");
    g.throughput(Throughput::Elements(1));
    let mut out = Vec::with_capacity(1024);
    for (name, version) in [
        ("v1_no_processor", Version::V1),
        ("v2_crc_no_processor", Version::V2 { ver1: 2, switch: 1 }),
    ] {
        g.bench_function(name, |b| {
            b.iter(|| {
                out.clear();
                encode_response(
                    &mut out,
                    version,
                    black_box(7),
                    CODEC_HESSIAN2,
                    ResponseStatus::NoProcessor,
                    b"com.alipay.sofa.rpc.core.response.SofaResponse",
                    &[(b"sluice_error", b"no route for service")],
                    b"",
                )
                .unwrap();
                out.len()
            })
        });
    }
    g.finish();
}

const ROUTED_CONFIG: &str = r#"
listeners:
  - name: rpc_in
    address: 127.0.0.1:12200
    bolt:
      routes:
        - match: { service: "com.example.EchoService:1.0" }
          route: { cluster: echo_rpc, timeout: 3s }
        - match: { service_regex: "^com\\.nodejs\\..*", headers: [ { name: zone, exact: gz } ] }
          route: { cluster: gz_rpc }
clusters:
  - { name: echo_rpc, hosts: [ { address: 127.0.0.1:12220 } ] }
  - { name: gz_rpc, lb_policy: least_request, hosts: [ { address: 127.0.0.1:12221 }, { address: 127.0.0.1:12222 } ] }
"#;

fn routed_request(service: &[u8], zone: Option<&[u8]>) -> Vec<u8> {
    let content: Vec<u8> = (0..239).map(|i| (i * 7) as u8).collect();
    let mut header: Vec<(&[u8], Option<&[u8]>)> = vec![(b"service", Some(service))];
    if let Some(z) = zone {
        header.push((b"zone", Some(z)));
    }
    let mut out = Vec::new();
    encode_request(
        &mut out,
        &RequestSpec {
            version: Version::V1,
            oneway: false,
            cmd_code: CMD_REQUEST,
            cmd_version: CMD_VERSION,
            request_id: 1,
            codec: CODEC_HESSIAN2,
            timeout_ms: 3000,
            class: CLASS,
            header: &header,
            content: &content,
        },
    )
    .expect("fits");
    out
}

fn router_bench(c: &mut Criterion) {
    let config = Config::from_yaml(ROUTED_CONFIG).unwrap();
    let ListenerFilter::Bolt(b) = &config.listeners[0].filter else {
        unreachable!()
    };
    let router = BoltRouter::new(b).unwrap();
    let mut g = c.benchmark_group("bolt_route");
    g.throughput(Throughput::Elements(1));
    for (name, frame) in [
        (
            "exact_first_route",
            routed_request(b"com.example.EchoService:1.0", None),
        ),
        ("regex_and_header", routed_request(SERVICE, Some(b"gz"))),
        ("no_match", routed_request(b"com.other.Service:1.0", None)),
    ] {
        let f = decode(&frame, DEFAULT_MAX_FRAME_SIZE).unwrap().unwrap();
        g.bench_function(name, |b| b.iter(|| router.route_index(black_box(&f))));
    }
    g.finish();
}

/// One request and its response through the proxy, as a driver does it: decode the request,
/// `handle_downstream_frame`, patch its id; decode the response, `handle_upstream_frame`,
/// restore the id (one downstream, a connected upstream, least_request over two hosts).
fn proxy_bench(c: &mut Criterion) {
    let config = Config::from_yaml(ROUTED_CONFIG).unwrap();
    let mut proxy = BoltProxy::from_config(&config).unwrap();
    let mut clusters: Vec<ClusterState> = config
        .clusters
        .iter()
        .map(ClusterState::from_config)
        .collect();
    let mut rng = Rng::from_seed(1);
    let now = Instant::ORIGIN;
    let down = proxy.open_downstream(0, "127.0.0.1:40000".parse().ok());
    let mut g = c.benchmark_group("bolt_proxy");
    g.throughput(Throughput::Elements(1));
    for (name, mut req) in [
        (
            "request_response_exact_route",
            routed_request(b"com.example.EchoService:1.0", None),
        ),
        (
            "request_response_regex_route",
            routed_request(SERVICE, Some(b"gz")),
        ),
    ] {
        let mut resp = Vec::new();
        encode_response(
            &mut resp,
            Version::V1,
            1,
            CODEC_HESSIAN2,
            ResponseStatus::Success,
            b"com.alipay.sofa.rpc.core.response.SofaResponse",
            &[],
            &[9; 80],
        )
        .unwrap();
        g.bench_function(name, |b| {
            b.iter(|| {
                let f = decode(black_box(&req), DEFAULT_MAX_FRAME_SIZE)
                    .unwrap()
                    .unwrap();
                let DownstreamVerdict::Forward { up, request_id } =
                    proxy.handle_downstream_frame(now, down, &f, &mut clusters, &mut rng)
                else {
                    unreachable!()
                };
                let len = f.len;
                set_request_id(&mut req[..len], request_id);
                while let Some(a) = proxy.poll_action() {
                    if let Action::Connect { up, .. } = a {
                        proxy.handle_upstream_connected(up);
                    }
                }
                set_request_id(&mut resp, request_id);
                let r = decode(&resp, DEFAULT_MAX_FRAME_SIZE).unwrap().unwrap();
                let UpstreamVerdict::Forward { request_id, .. } =
                    proxy.handle_upstream_frame(now, up, &r, &mut clusters)
                else {
                    unreachable!()
                };
                let len = r.len;
                set_request_id(&mut resp[..len], request_id);
            })
        });
    }
    g.finish();
}

criterion_group!(
    benches,
    decode_bench,
    set_request_id_bench,
    encode_bench,
    router_bench,
    proxy_bench
);
criterion_main!(benches);
