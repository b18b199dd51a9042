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

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use sluice_core::bolt::{
    CMD_REQUEST, CMD_VERSION, CODEC_HESSIAN2, DEFAULT_MAX_FRAME_SIZE, RequestSpec, ResponseStatus,
    Version, decode, encode_request, encode_response, header_value, set_request_id,
};

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

criterion_group!(benches, decode_bench, set_request_id_bench, encode_bench);
criterion_main!(benches);
