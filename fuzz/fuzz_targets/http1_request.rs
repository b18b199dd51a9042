//! `parse_request` on arbitrary bytes, with small limits, and the writer on what it accepts.
//!
//! Properties, whatever the bytes:
//! - nothing panics; `Partial` only below `max_head_bytes`; an error is a request error with
//!   status 400 or 431 and a message;
//! - a complete head lies within the input and the limits, and every span of it can be read;
//! - writing the head back with no edit and parsing that again succeeds, with the same method,
//!   target path and query, host, version, framing and upgrade, the written length as head
//!   length, and writing it once more gives the same bytes (the writer is idempotent);
//! - with edits (a new path, a removed field, an added one, force close) the written head
//!   parses again, with the new path and `keep_alive() == false`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice_core::http1::{
    Head, HeadEdits, Limits, MAX_HEADERS, Message, ParseStatus, TargetForm, parse_request,
    write_request_head,
};

const LIMITS: Limits = Limits {
    max_head_bytes: 1024,
    max_headers: 16,
};

/// Writing can lengthen a head a little (`Host` from an absolute-form target,
/// `connection: upgrade`, added fields): the second parse gets room for that.
const ROOMY: Limits = Limits {
    max_head_bytes: 4096,
    max_headers: MAX_HEADERS,
};

fuzz_target!(|data: &[u8]| {
    let mut head = Head::new();
    match parse_request(data, &LIMITS, &mut head) {
        Ok(ParseStatus::Partial) => assert!(data.len() < LIMITS.max_head_bytes),
        Err(e) => {
            assert_eq!(e.message(), Some(Message::Request), "{e:?}");
            assert!(matches!(e.status(), 400 | 431), "{e:?}");
            assert!(!e.to_string().is_empty());
        }
        Ok(ParseStatus::Complete) => check_complete(data, &head),
    }
});

fn check_complete(data: &[u8], head: &Head) {
    assert!(head.head_len() <= data.len() && head.head_len() <= LIMITS.max_head_bytes);
    assert!(head.headers(data).len() <= LIMITS.max_headers);
    for (name, _value) in head.headers(data) {
        assert!(!name.is_empty());
    }

    let mut out = Vec::new();
    write_request_head(&mut out, data, head, &HeadEdits::NONE);
    let mut again = Head::new();
    let r = parse_request(&out, &ROOMY, &mut again);
    assert_eq!(
        r,
        Ok(ParseStatus::Complete),
        "written head does not parse: {:?}",
        String::from_utf8_lossy(&out)
    );
    assert_eq!(again.head_len(), out.len());
    assert_eq!(again.method(), head.method());
    assert_eq!(again.method_bytes(&out), head.method_bytes(data));
    assert_eq!(again.path(&out), head.path(data));
    assert_eq!(again.query(&out), head.query(data));
    assert_eq!(again.host(&out), head.host(data));
    assert_eq!(again.version(), head.version());
    assert_eq!(again.framing(), head.framing());
    assert_eq!(again.upgrade(), head.upgrade());
    let form = match head.target_form() {
        TargetForm::Absolute => TargetForm::Origin,
        f => f,
    };
    assert_eq!(again.target_form(), form);
    let mut twice = Vec::new();
    write_request_head(&mut twice, &out, &again, &HeadEdits::NONE);
    assert_eq!(
        String::from_utf8_lossy(&twice),
        String::from_utf8_lossy(&out)
    );

    let edits = HeadEdits {
        path: Some(b"/fuzz/path"),
        remove: &["user-agent", "host"],
        add: &[("host", b"rewritten.example"), ("x-fuzz", b"1")],
        force_close: true,
        version: None,
    };
    out.clear();
    write_request_head(&mut out, data, head, &edits);
    assert_eq!(
        parse_request(&out, &ROOMY, &mut again),
        Ok(ParseStatus::Complete),
        "edited head does not parse: {:?}",
        String::from_utf8_lossy(&out)
    );
    assert!(!again.keep_alive());
    assert_eq!(again.framing(), head.framing());
    assert_eq!(again.header(&out, "user-agent"), None);
    if matches!(
        head.target_form(),
        TargetForm::Origin | TargetForm::Absolute
    ) {
        assert_eq!(again.path(&out), b"/fuzz/path");
        assert_eq!(again.query(&out), head.query(data));
        assert_eq!(again.host(&out), Some(&b"rewritten.example"[..]));
    }
}
