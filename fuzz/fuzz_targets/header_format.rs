//! The `%VAR%` header value parser (`sluice_core::config::header_format`) over arbitrary text, and the
//! rendering of what it accepts.
//!
//! Properties:
//! - parsing never panics; a value without `%` has no format, one with `%` is a format or an
//!   error (never sent literally);
//! - rendering what parsed never panics, appends to the buffer (what was there stays), and a
//!   format of literal pieces only renders exactly their text.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice_core::config::header_format::{FormatContext, HeaderFormat, RequestLine, Segment};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let parsed = HeaderFormat::parse(text);
    if !text.contains('%') {
        assert_eq!(parsed, Ok(None));
        return;
    }
    let Ok(Some(format)) = parsed else {
        assert!(
            parsed.is_err(),
            "a value with % always has a format or an error"
        );
        return;
    };
    let lookup = |name: &str| -> Option<&[u8]> { (name.len() % 2 == 0).then_some(b"value") };
    let ctx = FormatContext {
        downstream_remote: "[2001:db8::1]:65535".parse().unwrap(),
        protocol: "HTTP/1.1",
        hostname: "host",
        request_header: &lookup,
        request_line: RequestLine {
            authority: Some(b"authority:80"),
            method: b"GET",
            path: Some(b"/path"),
            query: Some(b"q"),
            scheme: "http",
        },
    };
    let mut out = b"before".to_vec();
    format.render(&ctx, &mut out);
    assert!(out.starts_with(b"before"));
    let literal: Option<String> = format
        .segments()
        .iter()
        .map(|s| match s {
            Segment::Literal(t) => Some(t.as_str()),
            Segment::Var { .. } => None,
        })
        .collect();
    if let Some(l) = literal {
        assert_eq!(&out[6..], l.as_bytes());
    }
});
