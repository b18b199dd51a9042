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
    Chunked, ChunkedDecoder, Head, HeadEdits, Limits, Method, ParseStatus, parse_request,
    parse_response, write_request_head,
};

/// A browser navigation (about 400 bytes of head).
const BROWSER: &[u8] = b"GET /catalog/items/4711?view=full&lang=en HTTP/1.1\r\n\
Host: shop.example.com\r\n\
User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0\r\n\
Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8\r\n\
Accept-Language: en-US,en;q=0.5\r\n\
Accept-Encoding: gzip, deflate, br, zstd\r\n\
Connection: keep-alive\r\n\
Cookie: session=8f14e45fceea167a5a36dedd4bea2543; theme=dark\r\n\
Sec-Fetch-Dest: document\r\n\r\n";

/// What `curl` sends (about 120 bytes).
const CURL: &[u8] = b"GET /api/v1/health?verbose=1 HTTP/1.1\r\n\
Host: backend.svc.cluster.local:8080\r\n\
User-Agent: curl/8.5.0\r\n\
Accept: */*\r\n\r\n";

/// A typical API answer head.
const RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\n\
Server: app/1.4.2\r\n\
Date: Mon, 02 Jun 2025 10:00:00 GMT\r\n\
Content-Type: application/json; charset=utf-8\r\n\
Content-Length: 1432\r\n\
Cache-Control: no-store\r\n\
X-Request-Id: 5f2b7c1e-8d3a-4b6f-9e0d-2a1c3b4d5e6f\r\n\
Vary: Accept-Encoding\r\n\r\n";

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
    for (name, input) in [("browser", BROWSER), ("curl", CURL)] {
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
    group.throughput(Throughput::Bytes(RESPONSE.len() as u64));
    group.bench_function(format!("api_{}B", RESPONSE.len()), |b| {
        let mut head = Head::new();
        b.iter(|| {
            let status = parse_response(black_box(RESPONSE), Method::Get, &limits, &mut head);
            assert_eq!(status, Ok(ParseStatus::Complete));
            black_box(head.framing())
        });
    });
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
    let mut head = Head::new();
    assert_eq!(
        parse_request(BROWSER, &Limits::DEFAULT, &mut head),
        Ok(ParseStatus::Complete)
    );
    let edits = HeadEdits {
        path: Some(b"/items/4711"),
        remove: &["cookie"],
        add: &[
            ("x-forwarded-for", b"10.1.2.3"),
            ("x-request-id", b"5f2b7c1e-8d3a-4b6f-9e0d-2a1c3b4d5e6f"),
        ],
        force_close: false,
        version: None,
    };
    let mut group = c.benchmark_group("http1/write_request_head");
    group.throughput(Throughput::Bytes(BROWSER.len() as u64));
    group.bench_function("browser_with_edits", |b| {
        let mut out = Vec::with_capacity(1024);
        b.iter(|| {
            out.clear();
            write_request_head(&mut out, black_box(BROWSER), &head, &edits);
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
