//! The one-pass HTTP/1.1 head parser (`parse_request`, `parse_response`) against the parser it
//! replaced (`http1::reference_parser`: `httparse`, then the strict byte scan and the field
//! walk; core feature `reference-parser`), on arbitrary bytes.
//!
//! Input: a flags byte, then the head's bytes. Flags bit 0: the small limits (48 bytes, 2
//! fields: the limit errors and `Partial` at the limit) instead of the listener's defaults
//! (`Limits::DEFAULT`); bits 1–2 pick the method the response answers (GET, HEAD, CONNECT,
//! POST).
//!
//! Property, whatever the bytes: for the whole input and for it less its last byte (a head
//! cut short), both parsers give the same outcome (`Complete`, `Partial` or the same error),
//! and on `Complete` the same `Head` (every span, field and framing decision: compared as
//! their `Debug` text, as `http1::tests::parse_is_as_before` does) — as a request, and as a
//! response to the picked method.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice_core::http1::{
    Head, Limits, Method, ParseStatus, parse_request, parse_response, reference_parser,
};

const SMALL: Limits = Limits {
    max_head_bytes: 48,
    max_headers: 2,
};

const METHODS: [Method; 4] = [Method::Get, Method::Head, Method::Connect, Method::Post];

fuzz_target!(|data: &[u8]| {
    let Some((&flags, data)) = data.split_first() else {
        return;
    };
    let limits = if flags & 1 == 1 {
        SMALL
    } else {
        Limits::DEFAULT
    };
    let method = METHODS[usize::from(flags >> 1) % METHODS.len()];
    let (mut now, mut then) = (Head::new(), Head::new());
    let cut = &data[..data.len().saturating_sub(1)];
    for bytes in [data, cut] {
        let got = parse_request(bytes, &limits, &mut now);
        let want = reference_parser::parse_request(bytes, &limits, &mut then);
        same(&got, &want, &now, &then, bytes, "request");
        let got = parse_response(bytes, method, &limits, &mut now);
        let want = reference_parser::parse_response(bytes, method, &limits, &mut then);
        same(&got, &want, &now, &then, bytes, "response");
    }
});

fn same<E: std::fmt::Debug + PartialEq>(
    got: &Result<ParseStatus, E>,
    want: &Result<ParseStatus, E>,
    now: &Head,
    then: &Head,
    bytes: &[u8],
    what: &str,
) {
    assert_eq!(
        got,
        want,
        "{what} outcome differs for {:?}",
        String::from_utf8_lossy(bytes)
    );
    if *got == Ok(ParseStatus::Complete) {
        assert_eq!(
            format!("{now:?}"),
            format!("{then:?}"),
            "{what} head differs for {:?}",
            String::from_utf8_lossy(bytes)
        );
    }
}
