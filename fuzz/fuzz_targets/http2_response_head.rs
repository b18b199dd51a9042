//! An HTTP/2 upstream's answer head written as the HTTP/1.1 `Head` the request path reads
//! (`build_response_head`), on arbitrary answers within its contract (what `h2` hands over:
//! lowercase token names, values without CR or LF, a reason phrase without control
//! characters, a three-digit status).
//!
//! Input: a flags byte (bit 0: the HEADERS frame ends the stream; bits 1-3: the request's
//! method), two bytes of status (100 + the big-endian number mod 900), a byte of field limit
//! and a byte of head limit (in 4-byte steps; 0 for both: the default limits), then lines: the
//! reason phrase, then `name:value` fields (split at the first `:` after the first byte).
//!
//! Properties, whatever the bytes:
//! - nothing panics; a refusal leaves the buffer as it was and is a 502;
//! - the written bytes are the HTTP/1.1 text the adapter formatted before (the status line,
//!   the fields but the connection-specific ones, `content-length: 0` or `transfer-encoding:
//!   chunked` for an answer with a body and no `content-length`), and the written `Head` is
//!   what `parse_response` reads in them (every span and derived value), or both refuse it
//!   with the same error.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice_core::http1::{Head, Limits, Method, ParseStatus, parse_response};
use sluice_core::http2::translate::is_connection_specific;
use sluice_core::http2::{ResponseHead, build_response_head};

const METHODS: [Method; 8] = [
    Method::Get,
    Method::Head,
    Method::Post,
    Method::Put,
    Method::Connect,
    Method::Options,
    Method::Delete,
    Method::Other,
];

fn is_lower_token(name: &[u8]) -> bool {
    !name.is_empty()
        && name.iter().all(|&b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || b"!#$%&'*+-.^_`|~".contains(&b)
        })
}

fn is_ctl(b: u8) -> bool {
    (b < 0x20 && b != b'\t') || b == 0x7f
}

fuzz_target!(|data: &[u8]| {
    let [flags, hi, lo, max_headers, max_head, rest @ ..] = data else {
        return;
    };
    let end_stream = flags & 1 != 0;
    let method = METHODS[usize::from(flags >> 1 & 7)];
    let status = 100 + u16::from_be_bytes([*hi, *lo]) % 900;
    let limits = if *max_headers == 0 && *max_head == 0 {
        Limits::DEFAULT
    } else {
        Limits {
            max_headers: usize::from(*max_headers),
            max_head_bytes: usize::from(*max_head) * 4,
        }
    };
    let mut lines = rest.split(|&b| b == b'\n');
    let reason = lines.next().unwrap_or(b"");
    let fields: Vec<(&[u8], &[u8])> = lines
        .map(|line| match line.iter().skip(1).position(|&b| b == b':') {
            Some(at) => (&line[..at + 1], &line[at + 2..]),
            None => (line, &b""[..]),
        })
        .collect();
    // The contract: what h2 can hand over.
    if reason.iter().any(|&b| is_ctl(b))
        || fields
            .iter()
            .any(|(n, v)| !is_lower_token(n) || v.contains(&b'\r'))
    {
        return;
    }

    // What the adapter formatted before, as the path parsed it.
    let mut text = format!("HTTP/1.1 {status} ").into_bytes();
    text.extend_from_slice(reason);
    text.extend_from_slice(b"\r\n");
    let mut content_length = false;
    for &(name, value) in &fields {
        if is_connection_specific(name) {
            continue;
        }
        content_length |= name == b"content-length";
        text.extend_from_slice(name);
        text.extend_from_slice(b": ");
        text.extend_from_slice(value);
        text.extend_from_slice(b"\r\n");
    }
    let bodiless =
        method == Method::Head || (100..200).contains(&status) || status == 204 || status == 304;
    if !bodiless && !content_length {
        text.extend_from_slice(if end_stream {
            b"content-length: 0\r\n"
        } else {
            b"transfer-encoding: chunked\r\n"
        });
    }
    text.extend_from_slice(b"\r\n");
    let mut parsed = Head::default();
    let want = match parse_response(&text, method, &limits, &mut parsed) {
        Ok(ParseStatus::Complete) => Ok((&text[..], format!("{parsed:?}"))),
        Ok(ParseStatus::Partial) => panic!("a formatted head is whole"),
        Err(e) => Err(e),
    };

    let mut written = b"kept".to_vec();
    let mut built = Head::default();
    let answer = ResponseHead {
        status,
        reason,
        fields: fields.iter().copied(),
        end_stream,
    };
    let got = match build_response_head(&mut written, answer, method, &limits, &mut built) {
        Ok(()) => Ok((&written[4..], format!("{built:?}"))),
        Err(e) => {
            assert_eq!(written, b"kept");
            assert_eq!(e.status(), 502);
            Err(e)
        }
    };
    assert_eq!(got, want);
});
