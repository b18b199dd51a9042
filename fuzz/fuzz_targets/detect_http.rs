//! `sniff_http` (the HTTP/1.x or h2c sniff of a plaintext connection's first bytes, Envoy's
//! `http_inspector`) on arbitrary bytes.
//!
//! Properties, whatever the bytes:
//! - nothing panics;
//! - a decided verdict is the same on every longer prefix (sampled for long inputs): a
//!   driver that peeks again after each read sees one verdict, and may stop at the first;
//! - `NeedMore` only below `MAX_HTTP_SNIFF_BYTES`, `TooLong` only at it;
//! - `http/1.0` / `http/1.1` only for a first line that ends (LF) within the limit with
//!   `HTTP/d.d` (and a CR), `http/1.1` only for `HTTP/1.1`;
//! - `h2c` exactly when the input starts with the 24-byte HTTP/2 preface.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice_core::detect::{HttpSniff, MAX_HTTP_SNIFF_BYTES, sniff_http};
use sluice_core::http2::PREFACE;

fuzz_target!(|bytes: &[u8]| {
    let whole = sniff_http(bytes);
    if whole == HttpSniff::NeedMore {
        assert!(bytes.len() < MAX_HTTP_SNIFF_BYTES);
    }
    if whole == HttpSniff::TooLong {
        assert!(bytes.len() >= MAX_HTTP_SNIFF_BYTES);
    }
    assert_eq!(
        whole == HttpSniff::H2c,
        bytes.starts_with(PREFACE),
        "h2c iff the preface"
    );
    // Once a prefix is decided, every longer prefix says the same.
    let step = (bytes.len() / 64).max(1);
    let mut decided: Option<HttpSniff> = None;
    for k in (0..=bytes.len()).step_by(step).chain([bytes.len()]) {
        let v = sniff_http(&bytes[..k]);
        match decided {
            Some(d) => assert_eq!(v, d, "prefix {k} decided otherwise"),
            None if v.is_decided() => decided = Some(v),
            None => {}
        }
    }
    if let Some(p) = whole.application_protocol() {
        assert!(sluice_core::detect::PLAINTEXT_PROTOCOLS.contains(&p));
    }
    if matches!(whole, HttpSniff::Http10 | HttpSniff::Http11) {
        // A request line, ended by LF within the bytes sniffed, starting with a token and
        // ending with the version.
        let line_end = bytes.iter().position(|&b| b == b'\n').unwrap();
        assert!(line_end < MAX_HTTP_SNIFF_BYTES);
        let line = bytes[..line_end]
            .strip_suffix(b"\r")
            .unwrap_or(&bytes[..line_end]);
        let version = &line[line.len() - 8..];
        assert!(version.starts_with(b"HTTP/"), "{version:?}");
        assert_eq!(whole == HttpSniff::Http11, version == b"HTTP/1.1");
        assert!(bytes[0].is_ascii_graphic());
    }
});
