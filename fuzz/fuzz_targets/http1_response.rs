//! `parse_response` on arbitrary bytes (the first byte picks the request method), with small
//! limits, and the writer on what it accepts.
//!
//! Properties, whatever the bytes:
//! - nothing panics; `Partial` only below `max_head_bytes`; an error is a response error
//!   (status 502) with a message;
//! - a complete head lies within the input and the limits;
//! - writing the head back with no edit and parsing that again (for the same method) succeeds
//!   with the same status, reason, version, framing, Content-Length and upgrade, the written
//!   length as head length; a close-delimited body is announced with `connection: close`; and
//!   writing it once more gives the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice_core::http1::{
    BodyFraming, Head, HeadEdits, Limits, MAX_HEADERS, Message, Method, ParseStatus,
    parse_response, write_response_head,
};

const LIMITS: Limits = Limits {
    max_head_bytes: 1024,
    max_headers: 16,
};

const ROOMY: Limits = Limits {
    max_head_bytes: 4096,
    max_headers: MAX_HEADERS,
};

const METHODS: [Method; 5] = [
    Method::Get,
    Method::Head,
    Method::Post,
    Method::Connect,
    Method::Other,
];

fuzz_target!(|data: &[u8]| {
    let Some((&first, data)) = data.split_first() else {
        return;
    };
    let method = METHODS[usize::from(first) % METHODS.len()];
    let mut head = Head::new();
    match parse_response(data, method, &LIMITS, &mut head) {
        Ok(ParseStatus::Partial) => assert!(data.len() < LIMITS.max_head_bytes),
        Err(e) => {
            assert_eq!(e.message(), Some(Message::Response), "{e:?}");
            assert_eq!(e.status(), 502, "{e:?}");
            assert!(!e.to_string().is_empty());
        }
        Ok(ParseStatus::Complete) => check_complete(data, method, &head),
    }
});

fn check_complete(data: &[u8], method: Method, head: &Head) {
    assert!(head.head_len() <= data.len() && head.head_len() <= LIMITS.max_head_bytes);
    assert!(head.headers(data).len() <= LIMITS.max_headers);
    assert!((100..=599).contains(&head.status()));
    if head.framing() == BodyFraming::CloseDelimited {
        assert!(!head.keep_alive());
    }

    let mut out = Vec::new();
    write_response_head(&mut out, data, head, &HeadEdits::NONE);
    let mut again = Head::new();
    assert_eq!(
        parse_response(&out, method, &ROOMY, &mut again),
        Ok(ParseStatus::Complete),
        "written head does not parse: {:?}",
        String::from_utf8_lossy(&out)
    );
    assert_eq!(again.head_len(), out.len());
    assert_eq!(again.status(), head.status());
    assert_eq!(again.reason(&out), head.reason(data));
    assert_eq!(again.version(), head.version());
    assert_eq!(again.framing(), head.framing());
    assert_eq!(again.content_length(), head.content_length());
    assert_eq!(again.upgrade(), head.upgrade());
    if head.framing() == BodyFraming::CloseDelimited {
        assert_eq!(again.header(&out, "connection"), Some(&b"close"[..]));
    }
    let mut twice = Vec::new();
    write_response_head(&mut twice, &out, &again, &HeadEdits::NONE);
    assert_eq!(
        String::from_utf8_lossy(&twice),
        String::from_utf8_lossy(&out)
    );
}
