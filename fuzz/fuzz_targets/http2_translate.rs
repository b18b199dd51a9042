//! The HTTP/2 → HTTP/1.1 request head translation, the HTTP/1.1 → HTTP/2 response and request
//! field filters and `grpc-timeout` parsing, on arbitrary heads.
//!
//! Input: a flags byte (bit 0: the HEADERS frame ends the stream; bit 1: there is an
//! `:authority`; bit 2: there is a `:path`), then lines: the method, the authority, the path,
//! then `name:value` fields (split at the first `:` after the first byte).
//!
//! Properties, whatever the bytes:
//! - nothing panics; an error leaves the output untouched;
//! - an accepted head parses with the HTTP/1 codec, completely and exactly, with the same
//!   method, the path as the target, one host (the authority, else the `host` field), and the
//!   framing the translation chose; no connection-specific field but the `transfer-encoding:
//!   chunked` a body of unknown length gets;
//! - the response filter keeps no connection-specific field, and keeps the others in order;
//! - the request filter (HTTP/1.1 → HTTP/2 upstream) keeps a subset of those, in order, with no
//!   `host` and no `te` but one that names `trailers`;
//! - a `grpc-timeout` that parses formats back to a value that parses to at least as long;
//! - the head the runtime writes without a parse (`build_request_head`) is the translated head
//!   as `parse_request` reads it (the same bytes, every span and derived value), or both refuse
//!   it with one status, under the default limits; a refusal leaves the buffer as it was.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice_core::http1::{BodyFraming, Head, Limits, ParseStatus, parse_request};
use sluice_core::http2::build_request_head;
use sluice_core::http2::translate::{
    BodyLength, RequestHead, is_connection_specific, request_fields, request_to_http1,
    response_fields, te_wants_trailers,
};
use sluice_core::l7::grpc::{format_grpc_timeout, parse_grpc_timeout};

/// The HTTP/1 codec's own cap on fields.
const MAX_HEADERS: usize = 256;

const LIMITS: Limits = Limits {
    max_head_bytes: usize::MAX,
    max_headers: usize::MAX,
};

fuzz_target!(|data: &[u8]| {
    let [flags, rest @ ..] = data else {
        return;
    };
    let mut lines = rest.split(|&b| b == b'\n');
    let method = lines.next().unwrap_or(b"");
    let authority = lines.next().filter(|_| flags & 2 != 0);
    let path = lines.next().filter(|_| flags & 4 != 0);
    let fields: Vec<(&[u8], &[u8])> = lines
        .map(|line| match line.iter().skip(1).position(|&b| b == b':') {
            Some(at) => (&line[..at + 1], &line[at + 2..]),
            None => (line, &b""[..]),
        })
        .collect();
    let head = RequestHead {
        method,
        authority,
        path,
        fields: &fields,
        end_stream: flags & 1 != 0,
    };
    let mut out = b"kept".to_vec();
    match request_to_http1(&mut out, &head) {
        Err(e) => {
            assert_eq!(out, b"kept");
            assert!(!e.to_string().is_empty());
            assert!(matches!(e.status(), 400 | 501));
        }
        Ok(body) => {
            let out = &out[4..];
            let mut parsed = Head::default();
            if fields.len() >= MAX_HEADERS - 1 {
                // The HTTP/1 codec holds at most 256 fields (the runtime answers 431, as to
                // such an HTTP/1.1 request).
                return;
            }
            assert_eq!(
                parse_request(out, &LIMITS, &mut parsed),
                Ok(ParseStatus::Complete),
                "{}",
                String::from_utf8_lossy(out)
            );
            assert_eq!(parsed.head_len(), out.len());
            assert_eq!(parsed.method_bytes(out), method);
            assert_eq!(Some(parsed.target(out)), path);
            let host =
                authority.or_else(|| fields.iter().find(|(n, _)| *n == b"host").map(|(_, v)| *v));
            assert_eq!(parsed.host(out), host);
            assert_eq!(parsed.header_values(out, "host").count(), 1);
            for (name, value) in parsed.headers(out) {
                if is_connection_specific(name) {
                    assert_eq!(
                        (name, value, body),
                        (
                            &b"transfer-encoding"[..],
                            &b"chunked"[..],
                            BodyLength::Chunked
                        )
                    );
                }
            }
            match body {
                BodyLength::None => assert!(matches!(
                    parsed.framing(),
                    BodyFraming::None | BodyFraming::ContentLength(0)
                )),
                BodyLength::Length(n) => {
                    assert_eq!(parsed.framing(), BodyFraming::ContentLength(n))
                }
                BodyLength::Chunked => assert_eq!(parsed.framing(), BodyFraming::Chunked),
            }
        }
    }
    // The written head against the translated one as parsed (as the runtime did before).
    let mut reference = Vec::new();
    let mut parsed = Head::default();
    let want = match request_to_http1(&mut reference, &head) {
        Err(e) => Err(e.status()),
        Ok(body) => match parse_request(&reference, &Limits::DEFAULT, &mut parsed) {
            Ok(ParseStatus::Complete) => Ok((&reference[..], format!("{parsed:?}"), body)),
            Ok(ParseStatus::Partial) => Err(400),
            Err(e) => Err(e.status()),
        },
    };
    let mut written = b"kept".to_vec();
    let mut built = Head::default();
    let got = match build_request_head(&mut written, &head, &Limits::DEFAULT, &mut built) {
        Ok(body) => Ok((&written[4..], format!("{built:?}"), body)),
        Err(e) => {
            assert_eq!(written, b"kept");
            Err(e.status())
        }
    };
    assert_eq!(got, want);
    let kept: Vec<_> = response_fields(fields.iter().copied()).collect();
    assert!(kept.iter().all(|(n, _)| !is_connection_specific(n)));
    let mut others = fields
        .iter()
        .copied()
        .filter(|(n, _)| !is_connection_specific(n));
    for k in &kept {
        assert!(others.any(|f| f == *k), "kept fields out of order");
    }
    let sent: Vec<_> = request_fields(fields.iter().copied()).collect();
    let mut from = kept.iter();
    for (n, v) in &sent {
        assert!(
            from.any(|k| k == &(*n, *v)),
            "request fields not a subset of the response filter's, in order"
        );
        assert!(!n.eq_ignore_ascii_case(b"host"));
        assert!(!n.eq_ignore_ascii_case(b"te") || te_wants_trailers(v));
    }
    for (_, value) in &fields {
        if let Some(d) = parse_grpc_timeout(value) {
            let mut buf = [0u8; 9];
            let again = parse_grpc_timeout(format_grpc_timeout(d, &mut buf)).expect("reparses");
            assert!(again >= d);
        }
    }
});
