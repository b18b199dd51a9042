use super::*;
use crate::http1::{BodyFraming, Head, Limits, ParseStatus, parse_request};
use proptest::prelude::*;

const LIMITS: Limits = Limits {
    max_head_bytes: 64 * 1024,
    max_headers: 256,
};

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

fn translate(h: &RequestHead<'_>) -> Result<(String, BodyLength), TranslateError> {
    let mut out = Vec::new();
    let body = request_to_http1(&mut out, h)?;
    Ok((String::from_utf8(out).unwrap(), body))
}

#[test]
fn get_becomes_an_http11_request_with_host_from_authority() {
    let fields: &[(&[u8], &[u8])] = &[(b"accept", b"*/*"), (b"user-agent", b"curl/8")];
    let (text, body) = translate(&head(
        b"GET",
        Some(b"example.com"),
        Some(b"/a?b=c"),
        fields,
        true,
    ))
    .unwrap();
    assert_eq!(
        text,
        "GET /a?b=c HTTP/1.1\r\nhost: example.com\r\naccept: */*\r\nuser-agent: curl/8\r\n\r\n"
    );
    assert_eq!(body, BodyLength::None);
}

#[test]
fn a_body_of_unknown_length_goes_chunked_and_a_declared_one_keeps_its_length() {
    let (text, body) = translate(&head(b"POST", Some(b"h"), Some(b"/"), &[], false)).unwrap();
    assert_eq!(body, BodyLength::Chunked);
    assert!(
        text.ends_with("transfer-encoding: chunked\r\n\r\n"),
        "{text}"
    );

    let fields: &[(&[u8], &[u8])] = &[(b"content-length", b"5")];
    let (text, body) = translate(&head(b"POST", Some(b"h"), Some(b"/"), fields, false)).unwrap();
    assert_eq!(body, BodyLength::Length(5));
    assert!(!text.contains("transfer-encoding"), "{text}");
    assert!(text.contains("content-length: 5\r\n"), "{text}");
}

#[test]
fn host_is_kept_when_equal_and_refused_when_it_differs() {
    let same: &[(&[u8], &[u8])] = &[(b"host", b"Example.com")];
    let (text, _) = translate(&head(b"GET", Some(b"example.com"), Some(b"/"), same, true)).unwrap();
    assert_eq!(text.matches("host:").count(), 1, "{text}");
    let other: &[(&[u8], &[u8])] = &[(b"host", b"evil.com")];
    assert_eq!(
        translate(&head(b"GET", Some(b"example.com"), Some(b"/"), other, true)),
        Err(TranslateError::HostMismatch)
    );
    let two: &[(&[u8], &[u8])] = &[(b"host", b"a"), (b"host", b"a")];
    assert_eq!(
        translate(&head(b"GET", None, Some(b"/"), two, true)),
        Err(TranslateError::HostMismatch)
    );
    // Host alone is enough; neither is a 400.
    let only: &[(&[u8], &[u8])] = &[(b"host", b"h:8080")];
    let (text, _) = translate(&head(b"GET", None, Some(b"/"), only, true)).unwrap();
    assert!(
        text.starts_with("GET / HTTP/1.1\r\nhost: h:8080\r\n"),
        "{text}"
    );
    assert_eq!(
        translate(&head(b"GET", None, Some(b"/"), &[], true)),
        Err(TranslateError::BadAuthority)
    );
    assert_eq!(
        translate(&head(b"GET", Some(b"a b"), Some(b"/"), &[], true)),
        Err(TranslateError::BadAuthority)
    );
}

#[test]
fn connection_specific_fields_are_malformed() {
    for name in [
        &b"connection"[..],
        b"keep-alive",
        b"proxy-connection",
        b"transfer-encoding",
        b"upgrade",
    ] {
        let fields: &[(&[u8], &[u8])] = &[(b"accept", b"x"), (name, b"close")];
        assert_eq!(
            translate(&head(b"GET", Some(b"h"), Some(b"/"), fields, true)),
            Err(TranslateError::ConnectionSpecific(1)),
            "{}",
            String::from_utf8_lossy(name)
        );
    }
}

#[test]
fn te_may_only_be_trailers() {
    let ok: &[(&[u8], &[u8])] = &[(b"te", b"trailers")];
    let (text, _) = translate(&head(b"POST", Some(b"h"), Some(b"/"), ok, false)).unwrap();
    assert!(text.contains("te: trailers\r\n"));
    let bad: &[(&[u8], &[u8])] = &[(b"te", b"gzip")];
    assert_eq!(
        translate(&head(b"GET", Some(b"h"), Some(b"/"), bad, true)),
        Err(TranslateError::BadTe)
    );
}

#[test]
fn path_is_required_and_connect_is_refused() {
    assert_eq!(
        translate(&head(b"GET", Some(b"h"), None, &[], true)),
        Err(TranslateError::BadPath)
    );
    assert_eq!(
        translate(&head(b"GET", Some(b"h"), Some(b""), &[], true)),
        Err(TranslateError::BadPath)
    );
    for bad in [&b"*"[..], b"a b", b"/a b", b"/a#frag", b"noslash", b"/\xff"] {
        assert_eq!(
            translate(&head(b"GET", Some(b"h"), Some(bad), &[], true)),
            Err(TranslateError::BadPath)
        );
    }
    let connect = translate(&head(b"CONNECT", Some(b"h:443"), None, &[], false));
    assert_eq!(connect, Err(TranslateError::Connect));
    assert_eq!(TranslateError::Connect.status(), 501);
    assert_eq!(TranslateError::BadPath.status(), 400);
    assert!(translate(&head(b"OPTIONS", Some(b"h"), Some(b"*"), &[], true)).is_ok());
}

#[test]
fn names_and_values_are_checked() {
    let upper: &[(&[u8], &[u8])] = &[(b"Accept", b"x")];
    assert_eq!(
        translate(&head(b"GET", Some(b"h"), Some(b"/"), upper, true)),
        Err(TranslateError::BadFieldName(0))
    );
    let pseudo: &[(&[u8], &[u8])] = &[(b":path", b"/")];
    assert_eq!(
        translate(&head(b"GET", Some(b"h"), Some(b"/"), pseudo, true)),
        Err(TranslateError::BadFieldName(0))
    );
    for value in [&b"a\r\nx: y"[..], b"a\0", b" a", b"a\t"] {
        let fields: &[(&[u8], &[u8])] = &[(b"x", value)];
        assert_eq!(
            translate(&head(b"GET", Some(b"h"), Some(b"/"), fields, true)),
            Err(TranslateError::BadFieldValue(0))
        );
    }
    assert_eq!(
        translate(&head(b"G T", Some(b"h"), Some(b"/"), &[], true)),
        Err(TranslateError::BadMethod)
    );
}

#[test]
fn content_length_is_checked_against_the_body() {
    let cl: &[(&[u8], &[u8])] = &[(b"content-length", b"3")];
    assert_eq!(
        translate(&head(b"POST", Some(b"h"), Some(b"/"), cl, true)),
        Err(TranslateError::BadContentLength)
    );
    let differing: &[(&[u8], &[u8])] = &[(b"content-length", b"3"), (b"content-length", b"4")];
    assert_eq!(
        translate(&head(b"POST", Some(b"h"), Some(b"/"), differing, false)),
        Err(TranslateError::BadContentLength)
    );
    let bad: &[(&[u8], &[u8])] = &[(b"content-length", b"+3")];
    assert_eq!(
        translate(&head(b"POST", Some(b"h"), Some(b"/"), bad, false)),
        Err(TranslateError::BadContentLength)
    );
    let mut check = ContentLengthCheck::new(BodyLength::Length(5));
    check.data(3).unwrap();
    assert_eq!(check.end(), Err(TranslateError::BadContentLength));
    check.data(2).unwrap();
    check.end().unwrap();
    assert_eq!(check.data(1), Err(TranslateError::BadContentLength));
    let mut chunked = ContentLengthCheck::new(BodyLength::Chunked);
    chunked.data(1 << 40).unwrap();
    chunked.end().unwrap();
}

#[test]
fn cookie_crumbs_are_joined() {
    let fields: &[(&[u8], &[u8])] = &[(b"cookie", b"a=1"), (b"x", b"y"), (b"cookie", b"b=2")];
    let (text, _) = translate(&head(b"GET", Some(b"h"), Some(b"/"), fields, true)).unwrap();
    assert_eq!(
        text,
        "GET / HTTP/1.1\r\nhost: h\r\nx: y\r\ncookie: a=1; b=2\r\n\r\n"
    );
}

/// The joined `cookie` is a well-formed cookie-string whatever the crumbs' edges: an empty
/// crumb adds no `; ; `, a crumb ending (or starting) in `;` no `;;`, the last one no trailing
/// `; `; crumbs that are all empty leave an empty field.
#[test]
fn cookie_crumbs_join_without_empty_pairs() {
    let cases: &[(&[&[u8]], &str)] = &[
        (&[b"a=1", b"", b"b=2"], "a=1; b=2"),
        (&[b"a=1;", b"b=2;"], "a=1; b=2"),
        (&[b"a=1", b";b=2"], "a=1; b=2"),
        (&[b"a=1", b""], "a=1"),
        (&[b"", b"a=1"], "a=1"),
        (&[b"a=1; b=2;", b";", b"c=3"], "a=1; b=2; c=3"),
        (&[b"a=1 ;", b"b=2"], "a=1; b=2"),
        (&[b"", b""], ""),
        (&[b"a=1"], "a=1"),
        (&[b"a=1;"], "a=1"),
    ];
    for &(crumbs, want) in cases {
        let fields: Vec<(&[u8], &[u8])> = crumbs.iter().map(|&c| (&b"cookie"[..], c)).collect();
        let (text, _) = translate(&head(b"GET", Some(b"h"), Some(b"/"), &fields, true)).unwrap();
        let line = if want.is_empty() {
            "cookie: \r\n".to_string()
        } else {
            format!("cookie: {want}\r\n")
        };
        assert_eq!(
            text,
            format!("GET / HTTP/1.1\r\nhost: h\r\n{line}\r\n"),
            "crumbs {crumbs:?}"
        );
    }
}

#[test]
fn response_fields_drop_connection_specific_ones() {
    let fields: Vec<(&[u8], &[u8])> = vec![
        (b"Content-Type", b"text/plain"),
        (b"Connection", b"close, X-Hop"),
        (b"Keep-Alive", b"timeout=5"),
        (b"Transfer-Encoding", b"chunked"),
        (b"x-hop", b"1"),
        (b"Upgrade", b"h2c"),
        (b"Proxy-Connection", b"keep-alive"),
        (b"x-end", b"2"),
    ];
    let kept: Vec<_> = response_fields(fields.iter().copied()).collect();
    assert_eq!(
        kept,
        vec![
            (&b"Content-Type"[..], &b"text/plain"[..]),
            (&b"x-end"[..], &b"2"[..])
        ]
    );
}

fn token() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(
        prop_oneof![b'a'..=b'z', b'0'..=b'9', Just(b'-'), Just(b'_'), Just(b'.')],
        1..12,
    )
}

fn value() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(prop_oneof![0x21u8..0x7f, Just(b' ')], 0..20).prop_map(|mut v| {
        while v.last() == Some(&b' ') {
            v.pop();
        }
        while v.first() == Some(&b' ') {
            v.remove(0);
        }
        v
    })
}

proptest! {
    /// A valid HTTP/2 request head translates to an HTTP/1.1 head the HTTP/1 codec parses with
    /// the same method, path and host, every field (cookies joined) in order, and the framing
    /// the translation chose.
    #[test]
    fn request_round_trip(
        method in prop_oneof![Just(&b"GET"[..]), Just(&b"POST"[..]), Just(&b"DELETE"[..])],
        authority in "[a-z][a-z0-9.-]{0,20}(:[0-9]{1,5})?",
        path in "/[a-zA-Z0-9/._~?=&%-]{0,30}",
        fields in proptest::collection::vec((token(), value()), 0..12),
        end_stream in any::<bool>(),
        length in proptest::option::of(0u64..100),
    ) {
        let mut fields: Vec<(Vec<u8>, Vec<u8>)> = fields
            .into_iter()
            .filter(|(n, _)| {
                !is_connection_specific(n)
                    && !matches!(&n[..], b"te" | b"host" | b"content-length" | b"cookie")
            })
            .collect();
        if let Some(n) = length {
            fields.push((b"content-length".to_vec(), n.to_string().into_bytes()));
        }
        let borrowed: Vec<(&[u8], &[u8])> =
            fields.iter().map(|(n, v)| (&n[..], &v[..])).collect();
        let h = head(method, Some(authority.as_bytes()), Some(path.as_bytes()), &borrowed, end_stream);
        let mut out = Vec::new();
        let result = request_to_http1(&mut out, &h);
        if end_stream && length.is_some_and(|n| n != 0) {
            prop_assert_eq!(result, Err(TranslateError::BadContentLength));
            prop_assert!(out.is_empty());
            return Ok(());
        }
        let body = result.unwrap();
        let mut parsed = Head::default();
        prop_assert_eq!(parse_request(&out, &LIMITS, &mut parsed), Ok(ParseStatus::Complete));
        prop_assert_eq!(parsed.head_len(), out.len());
        prop_assert_eq!(parsed.method_bytes(&out), method);
        prop_assert_eq!(parsed.target(&out), path.as_bytes());
        prop_assert_eq!(parsed.host(&out), Some(authority.as_bytes()));
        let got: Vec<(&[u8], &[u8])> = parsed.headers(&out).skip(1).collect();
        let mut want = borrowed.clone();
        if body == BodyLength::Chunked {
            want.push((b"transfer-encoding", b"chunked"));
        }
        prop_assert_eq!(got, want);
        let framing = parsed.framing();
        match body {
            BodyLength::None => prop_assert!(matches!(framing, BodyFraming::None | BodyFraming::ContentLength(0))),
            BodyLength::Length(n) => prop_assert_eq!(framing, BodyFraming::ContentLength(n)),
            BodyLength::Chunked => prop_assert_eq!(framing, BodyFraming::Chunked),
        }
    }

    /// Whatever the fields, an HTTP/2 response keeps every field but the connection-specific
    /// ones and those `Connection` lists, in order.
    #[test]
    fn response_fields_keep_the_rest(
        fields in proptest::collection::vec((token(), value()), 0..12),
        hop in proptest::option::of(token()),
    ) {
        let mut fields = fields;
        if let Some(h) = &hop {
            fields.push((b"connection".to_vec(), h.clone()));
        }
        let borrowed: Vec<(&[u8], &[u8])> =
            fields.iter().map(|(n, v)| (&n[..], &v[..])).collect();
        let kept: Vec<_> = response_fields(borrowed.iter().copied()).collect();
        let want: Vec<_> = borrowed
            .iter()
            .copied()
            .filter(|(n, _)| !is_connection_specific(n) && hop.as_deref() != Some(*n))
            .collect();
        prop_assert_eq!(kept, want);
    }
}

#[test]
fn request_fields_drop_host_connection_fields_and_te_other_than_trailers() {
    let fields: Vec<(&[u8], &[u8])> = vec![
        (b"Host", b"a.example"),
        (b"Connection", b"keep-alive, x-hop"),
        (b"x-hop", b"1"),
        (b"Transfer-Encoding", b"chunked"),
        (b"content-type", b"application/grpc"),
        (b"TE", b" trailers "),
        (b"x-id", b"7"),
    ];
    let kept: Vec<_> = request_fields(fields.iter().copied()).collect();
    assert_eq!(
        kept,
        vec![
            (&b"content-type"[..], &b"application/grpc"[..]),
            (b"TE", b" trailers "),
            (b"x-id", b"7"),
        ]
    );
    let gzip: Vec<(&[u8], &[u8])> = vec![(b"te", b"gzip")];
    assert_eq!(request_fields(gzip.iter().copied()).count(), 0);
}

#[test]
fn te_trailers_is_found_among_other_codings() {
    assert!(te_wants_trailers(b"trailers"));
    assert!(te_wants_trailers(b"gzip, Trailers"));
    assert!(te_wants_trailers(b"deflate;q=0.5, trailers;q=1"));
    assert!(!te_wants_trailers(b"gzip"));
    assert!(!te_wants_trailers(b""));
}
