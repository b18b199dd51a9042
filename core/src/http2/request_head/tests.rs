use super::*;
use crate::http1::{BodyFraming, ParseStatus, parse_request};
use crate::http2::translate::request_to_http1;
use proptest::prelude::*;

/// What the request path got before heads were written: the translation, then a parse of it
/// (the head's bytes, the `Head` as `Debug` prints every span and derived value, the framing),
/// or the status a refusal was answered with.
fn translated_then_parsed(
    h: &RequestHead<'_>,
    limits: &Limits,
) -> Result<(Vec<u8>, String, BodyLength), u16> {
    let mut out = Vec::new();
    let body = request_to_http1(&mut out, h).map_err(TranslateError::status)?;
    let mut head = Head::default();
    match parse_request(&out, limits, &mut head) {
        Ok(ParseStatus::Complete) => Ok((out, format!("{head:?}"), body)),
        Ok(ParseStatus::Partial) => Err(400),
        Err(e) => Err(e.status()),
    }
}

/// The same through [`build_request_head`], written after bytes already in the buffer (which
/// must stay, also on an error).
fn built(h: &RequestHead<'_>, limits: &Limits) -> Result<(Vec<u8>, String, BodyLength), u16> {
    const BEFORE: &[u8] = b"earlier bytes";
    let mut out = BEFORE.to_vec();
    let mut head = Head::default();
    let result = build_request_head(&mut out, h, limits, &mut head);
    assert!(out.starts_with(BEFORE));
    match result {
        Ok(body) => Ok((out[BEFORE.len()..].to_vec(), format!("{head:?}"), body)),
        Err(e) => {
            assert_eq!(out, BEFORE, "a refused head leaves the buffer as it was");
            assert!(!e.to_string().is_empty());
            Err(e.status())
        }
    }
}

fn head<'a>(
    method: &'a [u8],
    authority: Option<&'a [u8]>,
    path: Option<&'a [u8]>,
    fields: &'a [(&'a [u8], &'a [u8])],
    end_stream: bool,
) -> RequestHead<'a> {
    RequestHead {
        method,
        authority,
        path,
        fields,
        end_stream,
    }
}

#[test]
fn a_written_head_reads_as_the_parsed_one() {
    let fields: &[(&[u8], &[u8])] = &[
        (b"cookie", b"a=1"),
        (b"accept", b""),
        (b"expect", b"100-continue"),
        (b"cookie", b"b=2"),
        (b"content-length", b"3"),
        (b"te", b"trailers"),
    ];
    let h = head(b"POST", Some(b"h:8080"), Some(b"/a/b?x=1"), fields, false);
    let (bytes, parsed, body) = built(&h, &Limits::DEFAULT).unwrap();
    assert_eq!(
        String::from_utf8(bytes.clone()).unwrap(),
        "POST /a/b?x=1 HTTP/1.1\r\nhost: h:8080\r\naccept: \r\nexpect: 100-continue\r\n\
         content-length: 3\r\nte: trailers\r\ncookie: a=1; b=2\r\n\r\n"
    );
    assert_eq!(body, BodyLength::Length(3));
    assert_eq!(
        Ok((bytes.clone(), parsed.clone(), body)),
        translated_then_parsed(&h, &Limits::DEFAULT)
    );
    let mut w = Head::default();
    build_request_head(&mut Vec::new(), &h, &Limits::DEFAULT, &mut w).unwrap();
    assert_eq!(w.path(&bytes), b"/a/b");
    assert_eq!(w.query(&bytes), Some(&b"x=1"[..]));
    assert_eq!(w.host(&bytes), Some(&b"h:8080"[..]));
    assert_eq!(w.framing(), BodyFraming::ContentLength(3));
    assert!(w.expect_continue());
    assert_eq!(w.header(&bytes, "cookie"), Some(&b"a=1; b=2"[..]));
    assert_eq!(w.head_len(), bytes.len());

    let unknown = head(b"OPTIONS", Some(b"h"), Some(b"*"), &[], false);
    let (bytes, _, body) = built(&unknown, &Limits::DEFAULT).unwrap();
    assert_eq!(body, BodyLength::Chunked);
    assert!(bytes.ends_with(b"transfer-encoding: chunked\r\n\r\n"));
}

#[test]
fn limits_answer_431_as_for_an_http11_request() {
    let fields: &[(&[u8], &[u8])] = &[(b"a", b"1"), (b"b", b"2")];
    let h = head(b"GET", Some(b"h"), Some(b"/"), fields, true);
    // host + 2 fields.
    let three = Limits {
        max_head_bytes: 1024,
        max_headers: 3,
    };
    assert!(built(&h, &three).is_ok());
    let two = Limits {
        max_head_bytes: 1024,
        max_headers: 2,
    };
    assert_eq!(built(&h, &two), Err(431));
    let mut parsed = Head::default();
    let err = build_request_head(&mut Vec::new(), &h, &two, &mut parsed).unwrap_err();
    assert_eq!(err.to_string(), "request has more than 2 header fields");
    // "GET / HTTP/1.1\r\nhost: h\r\na: 1\r\nb: 2\r\n\r\n" is 39 bytes.
    let exact = Limits {
        max_head_bytes: 39,
        max_headers: 100,
    };
    assert!(built(&h, &exact).is_ok());
    let short = Limits {
        max_head_bytes: 38,
        max_headers: 100,
    };
    assert_eq!(built(&h, &short), Err(431));
    assert_eq!(built(&h, &short), translated_then_parsed(&h, &short));
}

/// A refused field is named in the answer (never by an index: the runtime's fields come grouped
/// by name, not in the client's order), and its value is not echoed (it may be a credential).
#[test]
fn a_refused_field_is_named_not_numbered() {
    let refusal = |fields: &[(&[u8], &[u8])]| {
        let h = head(b"GET", Some(b"h"), Some(b"/"), fields, true);
        let err = build_request_head(&mut Vec::new(), &h, &Limits::DEFAULT, &mut Head::default())
            .unwrap_err();
        (err.status(), err.to_string())
    };
    assert_eq!(
        refusal(&[(b"x-a", b"1"), (b"authorization", b" secret")]),
        (
            400,
            "invalid value of header field \"authorization\"".to_string()
        )
    );
    assert_eq!(
        refusal(&[(b"x-a", b"1"), (b"connection", b"close")]),
        (
            400,
            "connection-specific header field \"connection\" is malformed in HTTP/2".to_string()
        )
    );
    assert_eq!(
        refusal(&[(b"a b\n", b"1")]),
        (400, "invalid header field name \"a b\\n\"".to_string())
    );
    // Not about one field: as before.
    assert_eq!(
        refusal(&[(b"te", b"gzip")]),
        (400, "te may only be \"trailers\" in HTTP/2".to_string())
    );
}

/// An HTTP/2 cookie whose last crumb is empty was written `a=1; ` (found by CI's fuzz run; the
/// proptest rarely draws it, so it is pinned here); an empty crumb is now skipped and one
/// ending in `;` loses it, so the value is a well-formed cookie-string, read as parsed.
#[test]
fn a_cookie_whose_last_crumb_is_empty_reads_as_parsed() {
    let fields: &[(&[u8], &[u8])] = &[(b"cookie", b"a=1"), (b"x", b"y"), (b"cookie", b"")];
    let h = head(b"GET", Some(b"h"), Some(b"/"), fields, true);
    let (bytes, parsed, body) = built(&h, &Limits::DEFAULT).unwrap();
    assert!(bytes.ends_with(b"cookie: a=1\r\n\r\n"));
    assert_eq!(
        Ok((bytes.clone(), parsed, body)),
        translated_then_parsed(&h, &Limits::DEFAULT)
    );
    let mut w = Head::default();
    build_request_head(&mut Vec::new(), &h, &Limits::DEFAULT, &mut w).unwrap();
    assert_eq!(w.header(&bytes, "cookie"), Some(&b"a=1"[..]));
    let crumbs: &[(&[u8], &[u8])] = &[(b"cookie", b"a=1;"), (b"cookie", b""), (b"cookie", b"b=2")];
    let h = head(b"GET", Some(b"h"), Some(b"/"), crumbs, true);
    let mut bytes = Vec::new();
    build_request_head(&mut bytes, &h, &Limits::DEFAULT, &mut w).unwrap();
    assert_eq!(w.header(&bytes, "cookie"), Some(&b"a=1; b=2"[..]));
    let all: &[(&[u8], &[u8])] = &[(b"cookie", b""), (b"cookie", b"")];
    let h = head(b"GET", Some(b"h"), Some(b"/"), all, true);
    assert_eq!(
        built(&h, &Limits::DEFAULT),
        translated_then_parsed(&h, &Limits::DEFAULT)
    );
}

fn bytes_from(alphabet: &'static [&'static [u8]]) -> impl Strategy<Value = Vec<u8>> {
    proptest::sample::select(alphabet).prop_map(<[u8]>::to_vec)
}

/// Field values: mostly plain (a valid value), sometimes with whitespace at an edge, a control
/// character, obs-text, a comma list, a number.
fn value() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        16 => "[!-~]([ !-~]{0,10}[!-~])?".prop_map(String::into_bytes),
        1 => proptest::collection::vec(prop_oneof![0x21u8..0x7f, Just(b' '), Just(b'\t')], 0..8),
        1 => proptest::collection::vec(any::<u8>(), 0..6),
        2 => bytes_from(&[b"0", b"3", b"10", b"3, 3", b"+3", b"trailers", b"gzip", b"100-continue",
            b"chunked", b"close", b"a=1", b"h", b"H", b"\xc3\xa9", b" x", b"x ", b""]),
    ]
}

/// Field names: mostly plain lowercase tokens, sometimes one the codec acts on or an invalid
/// one.
fn name() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        16 => "[a-z][a-z0-9-]{0,9}".prop_map(String::into_bytes),
        1 => bytes_from(&[b"host", b"content-length", b"cookie", b"te", b"expect", b"connection",
            b"transfer-encoding", b"upgrade", b"keep-alive", b"trailer", b"Accept", b":path", b"",
            b"a b", b"x-forwarded-for"]),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    /// Any HTTP/2 request head, valid or not: the written head is the translated-then-parsed
    /// one (the same bytes, every span and derived value), or both refuse it with one status.
    #[test]
    fn writing_a_head_equals_translating_and_parsing_it(
        method in bytes_from(&[b"GET", b"POST", b"OPTIONS", b"CONNECT", b"get", b"G T", b"", b"PURGE"]),
        authority in proptest::option::of(prop_oneof![
            "[a-z][a-z0-9.-]{0,12}(:[0-9]{1,5})?".prop_map(String::into_bytes),
            bytes_from(&[b"", b"a b", b"[::1]:80", b"u@h", b"H"]),
        ]),
        path in proptest::option::of(prop_oneof![
            "/[a-zA-Z0-9/._~?=&%-]{0,20}".prop_map(String::into_bytes),
            bytes_from(&[b"*", b"", b"noslash", b"/a b", b"/a#f", b"/\xff", b"/?", b"/a?b?c",
                b"http://h/x"]),
        ]),
        fields in proptest::collection::vec((name(), value()), 0..14),
        end_stream in any::<bool>(),
        max_headers in 1usize..16,
        max_head_bytes in 16usize..400,
    ) {
        let borrowed: Vec<(&[u8], &[u8])> =
            fields.iter().map(|(n, v)| (&n[..], &v[..])).collect();
        let h = head(&method, authority.as_deref(), path.as_deref(), &borrowed, end_stream);
        for limits in [Limits::DEFAULT, Limits { max_head_bytes, max_headers }] {
            prop_assert_eq!(built(&h, &limits), translated_then_parsed(&h, &limits));
        }
    }
}
