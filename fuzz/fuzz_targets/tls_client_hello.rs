//! `peek_client_hello` on arbitrary bytes; the first byte picks the size limit (64 B × (b + 1)).
//!
//! Properties, whatever the bytes:
//! - nothing panics; `NeedMore { at_least }` asks for more than the input holds;
//! - a verdict other than `NeedMore` is the same on every prefix that is not `NeedMore`, and on
//!   sampled prefixes (every one for short inputs) — a driver that peeks after each read sees
//!   one verdict;
//! - a ClientHello lies within the input and the limit; its name is a lowercase DNS name
//!   without a trailing dot, its ALPN names non-empty; built again from what was read, in one
//!   record and in about eight, it reads back the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice_core::tls::client_hello::build::{Hello, client_hello_records};
use sluice_core::tls::{ClientHello, Peek, peek_client_hello};

fuzz_target!(|data: &[u8]| {
    let Some((&knob, bytes)) = data.split_first() else {
        return;
    };
    let limit = 64 * (usize::from(knob) + 1);
    let whole = peek_client_hello(bytes, limit);
    match &whole {
        Peek::NeedMore { at_least } => assert!(*at_least > bytes.len()),
        Peek::ClientHello(hello) => check_hello(hello, bytes.len(), limit),
        Peek::NotTls | Peek::Invalid(_) => {}
    }
    // Every prefix of a short input, about 64 of a long one.
    let step = (bytes.len() / 64).max(1);
    for k in (0..bytes.len()).step_by(step) {
        match peek_client_hello(&bytes[..k], limit) {
            Peek::NeedMore { at_least } => assert!(at_least > k),
            part => assert_eq!(part, whole, "prefix {k} decided otherwise"),
        }
    }
});

fn check_hello(hello: &ClientHello, input_len: usize, limit: usize) {
    assert!(hello.records_len <= input_len);
    if let Some(name) = &hello.server_name {
        assert!(!name.is_empty() && name.len() <= 253 && !name.ends_with('.'));
        assert!(
            name.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b))
        );
    }
    assert!(hello.alpn.iter().all(|n| !n.is_empty()));
    let alpn: Vec<&[u8]> = hello.alpn.iter().map(Vec::as_slice).collect();
    let again = Hello {
        server_name: hello.server_name.as_deref().map(str::as_bytes),
        alpn: (!alpn.is_empty()).then_some(alpn.as_slice()),
        tls13: hello.offers_tls13,
        padding: 0,
    };
    // In one record, and in about eight (within the 32-record limit).
    let whole = client_hello_records(&again, 16 * 1024).len();
    for fragment in [16 * 1024, whole / 8 + 1] {
        let bytes = client_hello_records(&again, fragment);
        match peek_client_hello(&bytes, limit.max(bytes.len())) {
            Peek::ClientHello(back) => {
                assert_eq!(back.server_name, hello.server_name);
                assert_eq!(back.alpn, hello.alpn);
                assert_eq!(back.offers_tls13, hello.offers_tls13);
            }
            other => panic!("the rebuilt hello reads as {other:?}"),
        }
    }
}
