//! A driver for counting the instructions of one HTTP/1.1 codec operation (the criterion bench
//! `http1.rs` times them; times on a loaded host are noisy, instruction counts are not).
//!
//! ```text
//! cargo bench -p sluice-benches --bench http1_instructions --no-run
//! benches/http1-instructions.sh            # every operation, under callgrind
//! ```
//!
//! `http1_instructions OP N` runs `OP` `N` times, as a worker would (one `Head`, one output
//! `Vec`, reused). The instructions of one run of `OP` are the difference between the counts
//! of two runs with different `N`, divided by the difference of the `N`s: start-up and the
//! first (warming) iteration cancel out.

use std::hint::black_box;

use sluice_core::http1::{
    Head, HeadEdits, Limits, Method, ParseStatus, parse_request, parse_response,
    write_request_head, write_response_head,
};

#[path = "common/http1_heads.rs"]
mod heads;

use heads::{
    BROWSER, BROWSER_EDITS, CURL, H2LOAD, NGINX, PROXY_REQUEST_EDITS, PROXY_RESPONSE_EDITS,
    RESPONSE,
};

/// Every operation, by name.
const OPS: [&str; 8] = [
    "parse_request/browser",
    "parse_request/curl",
    "parse_request/h2load",
    "parse_response/api",
    "parse_response/nginx",
    "write_request_head/browser_with_edits",
    "write_request_head/h2load_proxy_edits",
    "write_response_head/nginx_server_overwritten",
];

fn main() {
    // `cargo bench` passes `--bench`; the operation and the count are the other arguments.
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let [op, n] = &args[..] else {
        eprintln!(
            "usage: http1_instructions OP N\noperations: {}",
            OPS.join(" ")
        );
        std::process::exit(2);
    };
    let n: u64 = n.parse().expect("N is a count");
    let limits = Limits::DEFAULT;
    let mut head = Head::new();
    let mut out = Vec::with_capacity(1024);
    let parse_req = |input: &[u8], head: &mut Head| {
        let status = parse_request(black_box(input), &limits, head);
        assert_eq!(status, Ok(ParseStatus::Complete));
    };
    let parse_res = |input: &[u8], head: &mut Head| {
        let status = parse_response(black_box(input), Method::Get, &limits, head);
        assert_eq!(status, Ok(ParseStatus::Complete));
    };
    let write_req = |input: &[u8], edits: &HeadEdits<'_>, head: &mut Head, out: &mut Vec<u8>| {
        parse_req(input, head);
        for _ in 0..n {
            out.clear();
            write_request_head(out, black_box(input), head, black_box(edits));
            black_box(out.len());
        }
    };
    match op.as_str() {
        "parse_request/browser" => (0..n).for_each(|_| parse_req(BROWSER, &mut head)),
        "parse_request/curl" => (0..n).for_each(|_| parse_req(CURL, &mut head)),
        "parse_request/h2load" => (0..n).for_each(|_| parse_req(H2LOAD, &mut head)),
        "parse_response/api" => (0..n).for_each(|_| parse_res(RESPONSE, &mut head)),
        "parse_response/nginx" => (0..n).for_each(|_| parse_res(NGINX, &mut head)),
        "write_request_head/browser_with_edits" => {
            write_req(BROWSER, &BROWSER_EDITS, &mut head, &mut out);
        }
        "write_request_head/h2load_proxy_edits" => {
            write_req(H2LOAD, &PROXY_REQUEST_EDITS, &mut head, &mut out);
        }
        "write_response_head/nginx_server_overwritten" => {
            parse_res(NGINX, &mut head);
            for _ in 0..n {
                out.clear();
                write_response_head(
                    &mut out,
                    black_box(NGINX),
                    &head,
                    black_box(&PROXY_RESPONSE_EDITS),
                );
                black_box(out.len());
            }
        }
        _ => {
            eprintln!("unknown operation {op:?}; operations: {}", OPS.join(" "));
            std::process::exit(2);
        }
    }
    black_box(&head);
}
