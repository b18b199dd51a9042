//! Criterion micro-benchmarks of the HTTP/1.1 codec (`sluice_core::http1`): head parsing,
//! chunked-body scanning and head writing, as throughput in bytes.
//!
//! ```text
//! cargo bench -p sluice-benches --bench http1 -- --warm-up-time 1 --measurement-time 2
//! cargo bench -p sluice-benches --bench http1 -- parse_request   # one group by filter
//! ```
//!
//! Every bench runs the codec as a worker would: one `Head` reused across iterations (so no
//! allocation per parse), one output `Vec` cleared and reused.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use sluice_core::http1::{
    Chunked, ChunkedDecoder, Head, Limits, Method, ParseStatus, parse_request, parse_response,
    write_request_head, write_response_head,
};

#[path = "common/http1_heads.rs"]
mod heads;

use heads::{
    BROWSER, BROWSER_EDITS, CURL, H2LOAD, NGINX, PROXY_REQUEST_EDITS, PROXY_RESPONSE_EDITS,
    RESPONSE,
};

/// 64 KiB of payload in 4 KiB chunks, then the last chunk.
fn chunked_body() -> Vec<u8> {
    let mut body = Vec::new();
    for i in 0..16u8 {
        body.extend_from_slice(b"1000\r\n");
        body.extend(std::iter::repeat_n(b'a' + i, 4096));
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(b"0\r\n\r\n");
    body
}

fn parse(c: &mut Criterion) {
    let limits = Limits::DEFAULT;
    let mut group = c.benchmark_group("http1/parse_request");
    for (name, input) in [("browser", BROWSER), ("curl", CURL), ("h2load", H2LOAD)] {
        group.throughput(Throughput::Bytes(input.len() as u64));
        group.bench_function(format!("{name}_{}B", input.len()), |b| {
            let mut head = Head::new();
            b.iter(|| {
                let status = parse_request(black_box(input), &limits, &mut head);
                assert_eq!(status, Ok(ParseStatus::Complete));
                black_box(head.framing())
            });
        });
    }
    group.finish();

    let mut group = c.benchmark_group("http1/parse_response");
    for (name, input) in [("api", RESPONSE), ("nginx", NGINX)] {
        group.throughput(Throughput::Bytes(input.len() as u64));
        group.bench_function(format!("{name}_{}B", input.len()), |b| {
            let mut head = Head::new();
            b.iter(|| {
                let status = parse_response(black_box(input), Method::Get, &limits, &mut head);
                assert_eq!(status, Ok(ParseStatus::Complete));
                black_box(head.framing())
            });
        });
    }
    group.finish();
}

fn chunked(c: &mut Criterion) {
    let body = chunked_body();
    let mut group = c.benchmark_group("http1/chunked");
    group.throughput(Throughput::Bytes(body.len() as u64));
    group.bench_function("64KiB_in_4KiB_chunks", |b| {
        b.iter(|| {
            let mut dec = ChunkedDecoder::new(1024);
            let done = dec.feed(black_box(&body));
            assert_eq!(
                done,
                Ok(Chunked::Done {
                    consumed: body.len()
                })
            );
            black_box(dec.payload_bytes())
        });
    });
    // The same body arriving in 1500-byte reads (segment-sized).
    group.bench_function("64KiB_in_1500B_reads", |b| {
        b.iter(|| {
            let mut dec = ChunkedDecoder::new(1024);
            let mut total = 0;
            for read in black_box(&body).chunks(1500) {
                match dec.feed(read) {
                    Ok(Chunked::NeedMore { consumed } | Chunked::Done { consumed }) => {
                        total += consumed
                    }
                    Err(e) => panic!("{e}"),
                }
            }
            assert_eq!(total, body.len());
            black_box(dec.payload_bytes())
        });
    });
    group.finish();
}

fn write(c: &mut Criterion) {
    let mut group = c.benchmark_group("http1/write_request_head");
    for (name, input, edits) in [
        ("browser_with_edits", BROWSER, BROWSER_EDITS),
        ("h2load_proxy_edits", H2LOAD, PROXY_REQUEST_EDITS),
    ] {
        let mut head = Head::new();
        assert_eq!(
            parse_request(input, &Limits::DEFAULT, &mut head),
            Ok(ParseStatus::Complete)
        );
        group.throughput(Throughput::Bytes(input.len() as u64));
        group.bench_function(name, |b| {
            let mut out = Vec::with_capacity(1024);
            b.iter(|| {
                out.clear();
                write_request_head(&mut out, black_box(input), &head, &edits);
                black_box(out.len())
            });
        });
    }
    group.finish();

    let mut group = c.benchmark_group("http1/write_response_head");
    let mut head = Head::new();
    assert_eq!(
        parse_response(NGINX, Method::Get, &Limits::DEFAULT, &mut head),
        Ok(ParseStatus::Complete)
    );
    group.throughput(Throughput::Bytes(NGINX.len() as u64));
    group.bench_function("nginx_server_overwritten", |b| {
        let mut out = Vec::with_capacity(1024);
        b.iter(|| {
            out.clear();
            write_response_head(&mut out, black_box(NGINX), &head, &PROXY_RESPONSE_EDITS);
            black_box(out.len())
        });
    });
    group.finish();
}

fn short() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2))
}

criterion_group! {
    name = benches;
    config = short();
    targets = parse, chunked, write
}
criterion_main!(benches);
