use super::*;
use crate::http1::{BodyFraming, ParseStatus, parse_response};
use proptest::prelude::*;

type Fields<'a> = &'a [(&'a [u8], &'a [u8])];

/// The HTTP/1.1 text the HTTP/2 upstream adapter formatted an answer's head as before heads
/// were written (and the request path parsed).
fn formatted(status: u16, reason: &[u8], fields: Fields<'_>, end: bool, method: Method) -> Vec<u8> {
    let mut out = format!("HTTP/1.1 {status} ").into_bytes();
    out.extend_from_slice(reason);
    out.extend_from_slice(b"\r\n");
    let mut content_length = false;
    for &(name, value) in fields {
        if is_connection_specific(name) {
            continue;
        }
        content_length |= name == b"content-length";
        out.extend_from_slice(name);
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    }
    let bodiless =
        method == Method::Head || (100..200).contains(&status) || status == 204 || status == 304;
    if !bodiless && !content_length {
        out.extend_from_slice(if end {
            b"content-length: 0\r\n"
        } else {
            b"transfer-encoding: chunked\r\n"
        });
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// What the path got before: the formatted text parsed (the bytes, and the `Head` as `Debug`
/// prints every span and derived value), or the parse's error.
fn formatted_then_parsed(
    status: u16,
    reason: &[u8],
    fields: Fields<'_>,
    end: bool,
    method: Method,
    limits: &Limits,
) -> Result<(Vec<u8>, String), HttpError> {
    let out = formatted(status, reason, fields, end, method);
    let mut head = Head::default();
    match parse_response(&out, method, limits, &mut head)? {
        ParseStatus::Complete => Ok((out, format!("{head:?}"))),
        ParseStatus::Partial => panic!("a formatted head is whole"),
    }
}

/// The same through [`build_response_head`], written after bytes already in the buffer (which
/// must stay, also on an error).
fn built(
    status: u16,
    reason: &[u8],
    fields: Fields<'_>,
    end: bool,
    method: Method,
    limits: &Limits,
) -> Result<(Vec<u8>, String), HttpError> {
    const BEFORE: &[u8] = b"earlier bytes";
    let mut out = BEFORE.to_vec();
    let mut head = Head::default();
    let answer = ResponseHead {
        status,
        reason,
        fields: fields.iter().copied(),
        end_stream: end,
    };
    let result = build_response_head(&mut out, answer, method, limits, &mut head);
    assert!(out.starts_with(BEFORE));
    match result {
        Ok(()) => {
            assert_eq!(head.head_len(), out.len() - BEFORE.len());
            Ok((out[BEFORE.len()..].to_vec(), format!("{head:?}")))
        }
        Err(e) => {
            assert_eq!(out, BEFORE, "a refused head leaves the buffer as it was");
            assert_eq!(e.status(), 502);
            Err(e)
        }
    }
}

fn both(
    status: u16,
    fields: Fields<'_>,
    end: bool,
    method: Method,
) -> Result<(Vec<u8>, String), HttpError> {
    let limits = Limits::DEFAULT;
    let got = built(status, b"OK", fields, end, method, &limits);
    assert_eq!(
        got,
        formatted_then_parsed(status, b"OK", fields, end, method, &limits)
    );
    got
}

fn written(status: u16, fields: Fields<'_>, end: bool, method: Method) -> (String, Head) {
    let mut out = Vec::new();
    let mut head = Head::default();
    let answer = ResponseHead {
        status,
        reason: b"OK",
        fields: fields.iter().copied(),
        end_stream: end,
    };
    build_response_head(&mut out, answer, method, &Limits::DEFAULT, &mut head).unwrap();
    (String::from_utf8(out).unwrap(), head)
}

#[test]
fn a_grpc_answer_is_written_chunked_and_reads_as_parsed() {
    let fields: Fields<'_> = &[
        (b"content-type", b"application/grpc"),
        (b"x-a", b" padded\t"),
        (b"x-empty", b""),
        (b"grpc-encoding", b"identity"),
    ];
    both(200, fields, false, Method::Post).unwrap();
    let (text, head) = written(200, fields, false, Method::Post);
    assert_eq!(
        text,
        "HTTP/1.1 200 OK\r\ncontent-type: application/grpc\r\nx-a:  padded\t\r\nx-empty: \r\n\
         grpc-encoding: identity\r\ntransfer-encoding: chunked\r\n\r\n"
    );
    assert_eq!(head.framing(), BodyFraming::Chunked);
    assert_eq!(head.status(), 200);
    assert!(head.keep_alive());
    let bytes = text.as_bytes();
    assert_eq!(head.reason(bytes), b"OK");
    assert_eq!(head.header(bytes, "x-a"), Some(&b"padded"[..]));
    assert_eq!(head.header(bytes, "x-empty"), Some(&b""[..]));
}

#[test]
fn framing_follows_content_length_end_of_stream_and_bodiless_answers() {
    let cl: Fields<'_> = &[(b"content-length", b"12")];
    let (text, head) = written(200, cl, false, Method::Get);
    assert_eq!(text, "HTTP/1.1 200 OK\r\ncontent-length: 12\r\n\r\n");
    assert_eq!(head.framing(), BodyFraming::ContentLength(12));
    // HEADERS with END_STREAM and no content-length: an empty body, said so.
    let (text, head) = written(200, &[], true, Method::Get);
    assert_eq!(text, "HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n");
    assert_eq!(head.framing(), BodyFraming::ContentLength(0));
    // No body whatever the fields: HEAD, 204, 304 (a HEAD answer keeps its content-length).
    for (status, method, fields) in [
        (200, Method::Head, cl),
        (200, Method::Head, &[][..]),
        (204, Method::Get, &[][..]),
        (304, Method::Get, cl),
    ] {
        let (text, head) = written(status, fields, false, method);
        assert!(!text.contains("transfer-encoding"), "{text}");
        assert_eq!(head.framing(), BodyFraming::None, "{text}");
        both(status, fields, false, method).unwrap();
    }
    // Connection-specific fields are not written (h2 refuses them before).
    let hop: Fields<'_> = &[
        (b"connection", b"close"),
        (b"keep-alive", b"x"),
        (b"a", b"b"),
    ];
    let (text, head) = written(200, hop, true, Method::Get);
    assert_eq!(text, "HTTP/1.1 200 OK\r\na: b\r\ncontent-length: 0\r\n\r\n");
    assert!(head.keep_alive());
}

#[test]
fn an_answer_the_parse_refuses_is_refused_with_its_error() {
    let cases: &[(u16, Fields<'_>, HttpError)] = &[
        (
            200,
            &[(b"content-length", b"3"), (b"content-length", b"4")],
            HttpError::ConflictingContentLength {
                msg: crate::http1::Message::Response,
            },
        ),
        (
            200,
            &[(b"content-length", b"+3")],
            HttpError::InvalidContentLength {
                msg: crate::http1::Message::Response,
            },
        ),
        (
            200,
            &[(b"x", b"a\x01b")],
            HttpError::ControlCharacter {
                msg: crate::http1::Message::Response,
                byte: 1,
            },
        ),
        (
            200,
            &[(b"x", b"a\x7f")],
            HttpError::ControlCharacter {
                msg: crate::http1::Message::Response,
                byte: 0x7f,
            },
        ),
        (600, &[], HttpError::InvalidStatusLine),
        (999, &[], HttpError::InvalidStatusLine),
    ];
    for (status, fields, error) in cases {
        assert_eq!(
            both(*status, fields, false, Method::Get),
            Err(error.clone())
        );
    }
    // The limits: one field more than allowed, one byte more than allowed.
    let many: Vec<(&[u8], &[u8])> = vec![(b"x", b"y"); 5];
    let limits = Limits {
        max_head_bytes: 1024,
        max_headers: 4,
    };
    let got = built(200, b"OK", &many, true, Method::Get, &limits);
    assert!(matches!(
        got,
        Err(HttpError::TooManyHeaders { limit: 4, .. })
    ));
    assert_eq!(
        got,
        formatted_then_parsed(200, b"OK", &many, true, Method::Get, &limits)
    );
    let long = [(&b"x"[..], &[b'v'; 100][..])];
    let size = formatted(200, b"OK", &long, true, Method::Get).len();
    for max_head_bytes in [size - 1, size] {
        let limits = Limits {
            max_head_bytes,
            max_headers: 100,
        };
        let got = built(200, b"OK", &long, true, Method::Get, &limits);
        assert_eq!(got.is_ok(), max_head_bytes == size);
        assert_eq!(
            got,
            formatted_then_parsed(200, b"OK", &long, true, Method::Get, &limits)
        );
    }
}

#[test]
fn a_fault_is_seen_only_within_the_head_limit_as_by_the_parse() {
    // A control character at the last byte the limit lets the parse see is its error; one
    // byte further on, the head is too large.
    let fields: Fields<'_> = &[(b"x", b"ab\x01")];
    let text = formatted(200, b"OK", fields, true, Method::Get);
    let at = text.iter().position(|&b| b == 1).unwrap();
    for max_head_bytes in [at, at + 1, at + 2] {
        let limits = Limits {
            max_head_bytes,
            max_headers: 100,
        };
        let got = built(200, b"OK", fields, true, Method::Get, &limits);
        let want = if max_head_bytes > at {
            HttpError::ControlCharacter {
                msg: crate::http1::Message::Response,
                byte: 1,
            }
        } else {
            HttpError::HeadTooLarge {
                msg: crate::http1::Message::Response,
                limit: max_head_bytes,
            }
        };
        assert_eq!(got, Err(want));
        assert_eq!(
            got,
            formatted_then_parsed(200, b"OK", fields, true, Method::Get, &limits)
        );
    }
    // The same for one field more than allowed: seen once its line is whole within the limit.
    let fields: Fields<'_> = &[(b"a", b"1"), (b"b", b"2")];
    let text = formatted(200, b"OK", fields, true, Method::Get);
    let second_line_end = text.windows(6).position(|w| w == b"b: 2\r\n").unwrap() + 6;
    for max_head_bytes in [second_line_end - 1, second_line_end] {
        let limits = Limits {
            max_head_bytes,
            max_headers: 1,
        };
        let got = built(200, b"OK", fields, true, Method::Get, &limits);
        assert_eq!(
            matches!(got, Err(HttpError::TooManyHeaders { .. })),
            max_head_bytes == second_line_end
        );
        assert_eq!(
            got,
            formatted_then_parsed(200, b"OK", fields, true, Method::Get, &limits)
        );
    }
}

#[test]
fn outside_the_contract_it_refuses_rather_than_writes_another_head() {
    // A CR LF in a value would inject a field into the text; a name that is not a token would
    // read as another one. Neither comes from h2; both are refused.
    let limits = Limits::DEFAULT;
    let injected: Fields<'_> = &[(b"x", b"a\r\nset-cookie: evil")];
    assert!(built(200, b"OK", injected, true, Method::Get, &limits).is_err());
    let colon: Fields<'_> = &[(b"a:b", b"c")];
    assert!(built(200, b"OK", colon, true, Method::Get, &limits).is_err());
    assert!(built(99, b"OK", &[], true, Method::Get, &limits).is_err());
    assert!(built(200, b"O\nK", &[], true, Method::Get, &limits).is_err());
}

fn bytes_from(alphabet: &'static [&'static [u8]]) -> impl Strategy<Value = Vec<u8>> {
    proptest::sample::select(alphabet).prop_map(<[u8]>::to_vec)
}

/// Field values without CR or LF (h2 hands over no other): mostly plain, sometimes with
/// whitespace at an edge, a control character, obs-text, a comma list, a number.
fn value() -> impl Strategy<Value = Vec<u8>> {
    let no_line_end = any::<u8>().prop_filter("no CR or LF", |b| !matches!(b, b'\r' | b'\n'));
    prop_oneof![
        16 => "[!-~]([ !-~]{0,10}[!-~])?".prop_map(String::into_bytes),
        1 => proptest::collection::vec(prop_oneof![0x21u8..0x7f, Just(b' '), Just(b'\t')], 0..8),
        1 => proptest::collection::vec(no_line_end, 0..6),
        3 => bytes_from(&[b"0", b"3", b"10", b"3, 3", b"3, 4", b"+3", b"", b"chunked",
            b"gzip, chunked", b"chunked, gzip", b"close", b"keep-alive", b"upgrade", b"\xc3\xa9",
            b" x", b"x ", b"18446744073709551616"]),
    ]
}

/// Field names (lowercase tokens, as h2 gives them): mostly plain, sometimes one the codec acts
/// on.
fn name() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        12 => "[a-z][a-z0-9-]{0,9}".prop_map(String::into_bytes),
        2 => bytes_from(&[b"content-length", b"transfer-encoding", b"connection", b"upgrade",
            b"keep-alive", b"proxy-connection", b"te", b"trailer", b"host", b"grpc-status",
            b"set-cookie", b"x-a!#$%&'*+.^_`|~"]),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    /// Any HTTP/2 answer h2 can hand over: the written head is the formatted-then-parsed one
    /// (the same bytes, every span and derived value), or both refuse it with one error.
    #[test]
    fn writing_an_answer_head_equals_formatting_and_parsing_it(
        status in prop_oneof![
            4 => proptest::sample::select(&[100u16, 103, 200, 204, 206, 301, 304, 404, 500, 503][..]),
            1 => 100u16..=999,
        ],
        reason in bytes_from(&[b"OK", b"", b"Not Found", b"I'm a teapot", b"x\xff"]),
        fields in proptest::collection::vec((name(), value()), 0..12),
        end in any::<bool>(),
        method in proptest::sample::select(&[Method::Get, Method::Head, Method::Post,
            Method::Connect, Method::Other][..]),
        max_headers in 0usize..14,
        max_head_bytes in 10usize..300,
    ) {
        let borrowed: Vec<(&[u8], &[u8])> =
            fields.iter().map(|(n, v)| (&n[..], &v[..])).collect();
        for limits in [Limits::DEFAULT, Limits { max_head_bytes, max_headers }] {
            prop_assert_eq!(
                built(status, &reason, &borrowed, end, method, &limits),
                formatted_then_parsed(status, &reason, &borrowed, end, method, &limits)
            );
        }
    }
}
