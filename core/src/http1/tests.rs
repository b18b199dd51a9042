use super::*;
use proptest::prelude::*;

const LIMITS: Limits = Limits {
    max_head_bytes: 8192,
    max_headers: 64,
};

fn req(buf: &[u8]) -> Result<Head, HttpError> {
    let mut head = Head::new();
    match parse_request(buf, &LIMITS, &mut head)? {
        ParseStatus::Complete => Ok(head),
        ParseStatus::Partial => panic!("partial: {:?}", String::from_utf8_lossy(buf)),
    }
}

fn req_err(buf: &[u8]) -> HttpError {
    match req(buf) {
        Ok(_) => panic!("accepted: {:?}", String::from_utf8_lossy(buf)),
        Err(e) => e,
    }
}

fn res(buf: &[u8], method: Method) -> Result<Head, HttpError> {
    let mut head = Head::new();
    match parse_response(buf, method, &LIMITS, &mut head)? {
        ParseStatus::Complete => Ok(head),
        ParseStatus::Partial => panic!("partial: {:?}", String::from_utf8_lossy(buf)),
    }
}

/// A request with these extra lines after `Host: h`.
fn with_fields(fields: &str) -> Vec<u8> {
    format!("POST /p HTTP/1.1\r\nHost: h\r\n{fields}\r\n").into_bytes()
}

const REQ_MSG: Message = Message::Request;
const RES_MSG: Message = Message::Response;

// ---- requests: the happy path ----

#[test]
fn parses_a_request_head() {
    let buf = b"GET /a/b?x=1&y HTTP/1.1\r\nHost: example.com:8080\r\nAccept: */*\r\nX-Empty:\r\nx-multi: 1\r\nX-Multi: 2\r\n\r\nrest";
    let head = req(buf).unwrap();
    assert_eq!(head.message(), Message::Request);
    assert_eq!(head.method(), Method::Get);
    assert_eq!(head.method_bytes(buf), b"GET");
    assert_eq!(head.target(buf), b"/a/b?x=1&y");
    assert_eq!(head.target_form(), TargetForm::Origin);
    assert_eq!(head.path(buf), b"/a/b");
    assert_eq!(head.query(buf), Some(&b"x=1&y"[..]));
    assert_eq!(head.version(), Version::Http11);
    assert_eq!(head.host(buf), Some(&b"example.com:8080"[..]));
    assert_eq!(head.header(buf, "accept"), Some(&b"*/*"[..]));
    assert_eq!(head.header(buf, "X-EMPTY"), Some(&b""[..]));
    assert_eq!(head.header(buf, "x-multi"), Some(&b"1"[..]));
    assert_eq!(
        head.header_values(buf, "X-multi").collect::<Vec<_>>(),
        [b"1", b"2"]
    );
    assert_eq!(head.header(buf, "missing"), None);
    assert_eq!(head.headers(buf).len(), 5);
    assert_eq!(
        head.headers(buf).next(),
        Some((&b"Host"[..], &b"example.com:8080"[..]))
    );
    assert_eq!(&buf[head.head_len()..], b"rest");
    assert_eq!(head.framing(), BodyFraming::None);
    assert!(head.keep_alive());
    assert!(!head.expect_continue() && !head.upgrade());
    assert_eq!(head.content_length(), None);
}

#[test]
fn other_methods_keep_their_token() {
    let buf = b"PROPFIND /x HTTP/1.1\r\nHost: h\r\n\r\n";
    let head = req(buf).unwrap();
    assert_eq!(head.method(), Method::Other);
    assert_eq!(head.method_bytes(buf), b"PROPFIND");
    // Methods are case-sensitive.
    assert_eq!(
        req(b"get / HTTP/1.1\r\nHost: h\r\n\r\n").unwrap().method(),
        Method::Other
    );
    for m in [
        Method::Get,
        Method::Head,
        Method::Post,
        Method::Put,
        Method::Delete,
        Method::Options,
        Method::Trace,
        Method::Patch,
    ] {
        let token = m.as_str().unwrap();
        let buf = format!("{token} /x HTTP/1.1\r\nHost: h\r\n\r\n");
        assert_eq!(req(buf.as_bytes()).unwrap().method(), m);
        assert_eq!(Method::from_token(token.as_bytes()), m);
    }
    let idempotent: Vec<_> = [
        Method::Get,
        Method::Head,
        Method::Post,
        Method::Put,
        Method::Delete,
        Method::Connect,
        Method::Options,
        Method::Trace,
        Method::Patch,
        Method::Other,
    ]
    .into_iter()
    .filter(|m| m.is_idempotent())
    .collect();
    assert_eq!(
        idempotent,
        [
            Method::Get,
            Method::Head,
            Method::Put,
            Method::Delete,
            Method::Options,
            Method::Trace
        ]
    );
}

#[test]
fn target_forms() {
    let buf = b"GET http://example.com:80/a?q HTTP/1.1\r\nHost: other\r\n\r\n";
    let head = req(buf).unwrap();
    assert_eq!(head.target_form(), TargetForm::Absolute);
    assert_eq!(head.path(buf), b"/a");
    assert_eq!(head.query(buf), Some(&b"q"[..]));
    // RFC 9112 §3.2.2: the target's authority wins over Host.
    assert_eq!(head.host(buf), Some(&b"example.com:80"[..]));

    let buf = b"GET https://example.com HTTP/1.1\r\nHost: example.com\r\n\r\n";
    let head = req(buf).unwrap();
    assert_eq!((head.path(buf), head.query(buf)), (&b"/"[..], None));

    let buf = b"GET https://example.com?x HTTP/1.1\r\nHost: example.com\r\n\r\n";
    let head = req(buf).unwrap();
    assert_eq!(
        (head.path(buf), head.query(buf)),
        (&b"/"[..], Some(&b"x"[..]))
    );

    let buf = b"OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n";
    let head = req(buf).unwrap();
    assert_eq!(
        (head.target_form(), head.path(buf)),
        (TargetForm::Asterisk, &b"*"[..])
    );

    let buf = b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n";
    let head = req(buf).unwrap();
    assert_eq!(head.target_form(), TargetForm::Authority);
    assert_eq!(head.path(buf), b"example.com:443");
    assert_eq!(head.host(buf), Some(&b"example.com:443"[..]));
    assert_eq!(head.framing(), BodyFraming::None);
    req(b"CONNECT [::1]:443 HTTP/1.1\r\nHost: [::1]:443\r\n\r\n").unwrap();

    // An empty query is still a query.
    let buf = b"GET /a? HTTP/1.1\r\nHost: h\r\n\r\n";
    assert_eq!(req(buf).unwrap().query(buf), Some(&b""[..]));
}

#[test]
fn framing_and_flags() {
    let h = req(&with_fields("Content-Length: 12\r\n")).unwrap();
    assert_eq!(h.framing(), BodyFraming::ContentLength(12));
    assert_eq!(h.content_length(), Some(12));
    let h = req(&with_fields("Transfer-Encoding: chunked\r\n")).unwrap();
    assert_eq!(h.framing(), BodyFraming::Chunked);
    // Case-insensitive, whitespace trimmed.
    let h = req(&with_fields("transfer-encoding:   Chunked  \r\n")).unwrap();
    assert_eq!(h.framing(), BodyFraming::Chunked);
    let h = req(&with_fields("Content-Length: 5, 5\r\n")).unwrap();
    assert_eq!(h.framing(), BodyFraming::ContentLength(5));
    let h = req(&with_fields("Content-Length: 5\r\ncontent-length: 005\r\n")).unwrap();
    assert_eq!(h.framing(), BodyFraming::ContentLength(5));
    let h = req(&with_fields("Content-Length: 18446744073709551615\r\n")).unwrap();
    assert_eq!(h.framing(), BodyFraming::ContentLength(u64::MAX));
    let h = req(&with_fields("Expect: 100-Continue\r\n")).unwrap();
    assert!(h.expect_continue());
    let h = req(&with_fields(
        "Connection: Upgrade\r\nUpgrade: websocket\r\n",
    ))
    .unwrap();
    assert!(h.upgrade());
    let h = req(&with_fields("Connection: upgrade\r\n")).unwrap();
    assert!(!h.upgrade(), "no Upgrade field");
    let h = req(&with_fields("Upgrade: websocket\r\n")).unwrap();
    assert!(!h.upgrade(), "no Connection: upgrade");
    // HTTP/1.0 ignores Upgrade and Expect.
    let h = req(
        b"GET / HTTP/1.0\r\nConnection: upgrade\r\nUpgrade: ws\r\nExpect: 100-continue\r\n\r\n",
    )
    .unwrap();
    assert!(!h.upgrade() && !h.expect_continue());
}

#[test]
fn keep_alive_table() {
    let cases: [(&[u8], bool); 8] = [
        (b"GET / HTTP/1.1\r\nHost: h\r\n\r\n", true),
        (
            b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
            false,
        ),
        (
            b"GET / HTTP/1.1\r\nHost: h\r\nConnection: keep-alive, CLOSE\r\n\r\n",
            false,
        ),
        (
            b"GET / HTTP/1.1\r\nHost: h\r\nConnection: x\r\nConnection: close\r\n\r\n",
            false,
        ),
        (b"GET / HTTP/1.0\r\n\r\n", false),
        (b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", true),
        (
            b"GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n",
            false,
        ),
        (
            b"GET / HTTP/1.1\r\nHost: h\r\nConnection: ,, keep-alive ,\r\n\r\n",
            true,
        ),
    ];
    for (buf, keep_alive) in cases {
        assert_eq!(
            req(buf).unwrap().keep_alive(),
            keep_alive,
            "{}",
            String::from_utf8_lossy(buf)
        );
    }
}

#[test]
fn pipelined_requests_in_one_buffer() {
    let buf = b"POST /one HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhelloGET /two HTTP/1.1\r\nHost: h\r\n\r\nPUT /three HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\nGET /four HTTP/1.1\r\nHost: h\r\n\r\n";
    let mut at = 0;
    let mut head = Head::new();
    let mut seen = Vec::new();
    while at < buf.len() {
        let rest = &buf[at..];
        assert_eq!(
            parse_request(rest, &LIMITS, &mut head),
            Ok(ParseStatus::Complete)
        );
        seen.push((head.method(), head.path(rest).to_vec()));
        at += head.head_len();
        match head.framing() {
            BodyFraming::None => {}
            BodyFraming::ContentLength(n) => at += n as usize,
            BodyFraming::Chunked => {
                let mut dec = ChunkedDecoder::new(0);
                match dec.feed(&buf[at..]).unwrap() {
                    Chunked::Done { consumed } => at += consumed,
                    other => panic!("{other:?}"),
                }
                assert_eq!(dec.payload_bytes(), 3);
            }
            BodyFraming::CloseDelimited => unreachable!(),
        }
    }
    assert_eq!(at, buf.len());
    assert_eq!(
        seen,
        [
            (Method::Post, b"/one".to_vec()),
            (Method::Get, b"/two".to_vec()),
            (Method::Put, b"/three".to_vec()),
            (Method::Get, b"/four".to_vec()),
        ]
    );
}

#[test]
fn head_is_reused_without_reallocating() {
    let mut head = Head::new();
    let a = b"GET / HTTP/1.1\r\nHost: h\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n";
    parse_request(a, &LIMITS, &mut head).unwrap();
    let cap = head.headers.capacity();
    let ptr = head.headers.as_ptr();
    let b = b"GET /x HTTP/1.1\r\nHost: h\r\n\r\n";
    parse_request(b, &LIMITS, &mut head).unwrap();
    assert_eq!((head.headers.capacity(), head.headers.as_ptr()), (cap, ptr));
    assert_eq!(head.headers(b).len(), 1);
    assert_eq!(head.path(b), b"/x");
}

#[test]
fn leading_empty_lines_are_skipped() {
    let buf = b"\r\n\r\nGET /x HTTP/1.1\r\nHost: h\r\n\r\n";
    let head = req(buf).unwrap();
    assert_eq!(
        (head.method_bytes(buf), head.path(buf)),
        (&b"GET"[..], &b"/x"[..])
    );
    assert_eq!(head.head_len(), buf.len());
}

// ---- requests: what is rejected, with the exact error ----

#[test]
fn smuggling_framing_is_rejected() {
    use HttpError as E;
    let cases: &[(&str, HttpError)] = &[
        (
            "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
            E::ContentLengthAndTransferEncoding { msg: REQ_MSG },
        ),
        (
            "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n",
            E::ContentLengthAndTransferEncoding { msg: REQ_MSG },
        ),
        (
            "Transfer-Encoding: chunked\r\nContent-Length: x\r\n",
            E::ContentLengthAndTransferEncoding { msg: REQ_MSG },
        ),
        (
            "Transfer-Encoding: gzip, chunked\r\n",
            E::UnsupportedTransferCoding,
        ),
        (
            "Transfer-Encoding: chunked, gzip\r\n",
            E::UnsupportedTransferCoding,
        ),
        (
            "Transfer-Encoding: chunked, chunked\r\n",
            E::UnsupportedTransferCoding,
        ),
        (
            "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
            E::UnsupportedTransferCoding,
        ),
        (
            "Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n",
            E::UnsupportedTransferCoding,
        ),
        (
            "Transfer-Encoding: identity\r\n",
            E::UnsupportedTransferCoding,
        ),
        (
            "Transfer-Encoding: xchunked\r\n",
            E::UnsupportedTransferCoding,
        ),
        (
            "Transfer-Encoding: chunked;x=1\r\n",
            E::UnsupportedTransferCoding,
        ),
        ("Transfer-Encoding: \r\n", E::UnsupportedTransferCoding),
        (
            "Transfer-Encoding: chunked,\r\n",
            E::UnsupportedTransferCoding,
        ),
        (
            "Transfer-Encoding: \"chunked\"\r\n",
            E::UnsupportedTransferCoding,
        ),
        (
            "Content-Length: 5, 6\r\n",
            E::ConflictingContentLength { msg: REQ_MSG },
        ),
        (
            "Content-Length: 5\r\nContent-Length: 6\r\n",
            E::ConflictingContentLength { msg: REQ_MSG },
        ),
        (
            "Content-Length: abc\r\n",
            E::InvalidContentLength { msg: REQ_MSG },
        ),
        (
            "Content-Length: -5\r\n",
            E::InvalidContentLength { msg: REQ_MSG },
        ),
        (
            "Content-Length: +5\r\n",
            E::InvalidContentLength { msg: REQ_MSG },
        ),
        (
            "Content-Length: \r\n",
            E::InvalidContentLength { msg: REQ_MSG },
        ),
        (
            "Content-Length: 5,\r\n",
            E::InvalidContentLength { msg: REQ_MSG },
        ),
        (
            "Content-Length: 5 5\r\n",
            E::InvalidContentLength { msg: REQ_MSG },
        ),
        (
            "Content-Length: 0x5\r\n",
            E::InvalidContentLength { msg: REQ_MSG },
        ),
        (
            "Content-Length: 5.0\r\n",
            E::InvalidContentLength { msg: REQ_MSG },
        ),
        (
            "Content-Length: 18446744073709551616\r\n",
            E::InvalidContentLength { msg: REQ_MSG },
        ),
        (
            "Content-Length: 99999999999999999999999\r\n",
            E::InvalidContentLength { msg: REQ_MSG },
        ),
        ("X: a\r\n b\r\n", E::ObsFold { msg: REQ_MSG }),
        ("X: a\r\n\tb\r\n", E::ObsFold { msg: REQ_MSG }),
        (
            "Content-Length : 5\r\n",
            E::WhitespaceBeforeColon { msg: REQ_MSG },
        ),
        (
            "Transfer-Encoding\t: chunked\r\n",
            E::WhitespaceBeforeColon { msg: REQ_MSG },
        ),
        (": empty name\r\n", E::InvalidHeaderName { msg: REQ_MSG }),
        ("No colon\r\n", E::InvalidHeaderName { msg: REQ_MSG }),
        ("X(y): 1\r\n", E::InvalidHeaderName { msg: REQ_MSG }),
        (
            "X: a\0b\r\n",
            E::ControlCharacter {
                msg: REQ_MSG,
                byte: 0,
            },
        ),
        (
            "X: a\x01\r\n",
            E::ControlCharacter {
                msg: REQ_MSG,
                byte: 1,
            },
        ),
        (
            "X: a\x7fb\r\n",
            E::ControlCharacter {
                msg: REQ_MSG,
                byte: 0x7f,
            },
        ),
        (
            "X: a\rb\r\n",
            E::ControlCharacter {
                msg: REQ_MSG,
                byte: b'\r',
            },
        ),
        (
            "X: a\x0bb\r\n",
            E::ControlCharacter {
                msg: REQ_MSG,
                byte: 0x0b,
            },
        ),
        ("X: a\nY: b\r\n", E::InvalidLineEnding { msg: REQ_MSG }),
        ("Host: h2\r\n", E::MultipleHost),
    ];
    for (fields, want) in cases {
        let buf = with_fields(fields);
        assert_eq!(&req_err(&buf), want, "{fields:?}");
        assert_eq!(want.status(), 400, "{want}");
    }
}

#[test]
fn http10_transfer_encoding_is_rejected() {
    for te in ["chunked", "gzip"] {
        let buf = format!("POST / HTTP/1.0\r\nTransfer-Encoding: {te}\r\n\r\n");
        assert_eq!(
            req_err(buf.as_bytes()),
            HttpError::TransferEncodingInHttp10 { msg: REQ_MSG }
        );
    }
}

#[test]
fn malformed_lines_are_rejected() {
    use HttpError as E;
    let cases: &[(&[u8], HttpError)] = &[
        (
            b"GET / HTTP/1.1\nHost: h\n\n",
            E::InvalidLineEnding { msg: REQ_MSG },
        ),
        (
            b"GET / HTTP/1.1\r\nHost: h\n\r\n",
            E::InvalidLineEnding { msg: REQ_MSG },
        ),
        (
            b"GET / HTTP/1.1\r\nHost: h\r\n\n",
            E::InvalidLineEnding { msg: REQ_MSG },
        ),
        (
            b"\nGET / HTTP/1.1\r\nHost: h\r\n\r\n",
            E::InvalidLineEnding { msg: REQ_MSG },
        ),
        (
            b"GET / HTTP/1.1\r\n Host: h\r\n\r\n",
            E::ObsFold { msg: REQ_MSG },
        ),
        (
            b"GET / HTTP/1.1\r\nHost: h\r\n\rX\r\n\r\n",
            E::InvalidLineEnding { msg: REQ_MSG },
        ),
        (b"G@T / HTTP/1.1\r\nHost: h\r\n\r\n", E::InvalidRequestLine),
        (b"GET  / HTTP/1.1\r\nHost: h\r\n\r\n", E::InvalidRequestLine),
        (
            b"GET / HTTP/2.0\r\nHost: h\r\n\r\n",
            E::UnsupportedVersion { msg: REQ_MSG },
        ),
        (
            b"GET / HTTP/1.2\r\nHost: h\r\n\r\n",
            E::UnsupportedVersion { msg: REQ_MSG },
        ),
        (
            b"GET / http/1.1\r\nHost: h\r\n\r\n",
            E::UnsupportedVersion { msg: REQ_MSG },
        ),
        (
            b"GET /\0 HTTP/1.1\r\nHost: h\r\n\r\n",
            E::InvalidRequestLine,
        ),
    ];
    for (buf, want) in cases {
        assert_eq!(&req_err(buf), want, "{:?}", String::from_utf8_lossy(buf));
    }
}

#[test]
fn host_rules() {
    assert_eq!(req_err(b"GET / HTTP/1.1\r\n\r\n"), HttpError::MissingHost);
    assert_eq!(
        req_err(b"GET / HTTP/1.1\r\nHost: a\r\nhost: a\r\n\r\n"),
        HttpError::MultipleHost
    );
    assert_eq!(
        req_err(b"GET / HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n"),
        HttpError::MultipleHost
    );
    // Absolute-form still needs a Host on HTTP/1.1.
    assert_eq!(
        req_err(b"GET http://a/ HTTP/1.1\r\n\r\n"),
        HttpError::MissingHost
    );
    for bad in ["a b", "user@a", "a/b", "a?b", "a#b", "\"a\""] {
        let buf = format!("GET / HTTP/1.1\r\nHost: {bad}\r\n\r\n");
        assert_eq!(req_err(buf.as_bytes()), HttpError::InvalidHost, "{bad}");
    }
    for good in [
        "a",
        "a.example:8080",
        "[::1]:80",
        "10.0.0.1",
        "xn--bcher-kva.example",
        "",
    ] {
        let buf = format!("GET / HTTP/1.1\r\nHost: {good}\r\n\r\n");
        assert_eq!(
            req(buf.as_bytes()).unwrap().host(buf.as_bytes()),
            Some(good.as_bytes())
        );
    }
    // HTTP/1.0 may do without.
    let buf = b"GET / HTTP/1.0\r\n\r\n";
    assert_eq!(req(buf).unwrap().host(buf), None);
}

#[test]
fn bad_targets_are_rejected() {
    let cases: &[&[u8]] = &[
        b"GET * HTTP/1.1\r\nHost: h\r\n\r\n",
        b"GET example.com:443 HTTP/1.1\r\nHost: h\r\n\r\n",
        b"GET example.com HTTP/1.1\r\nHost: h\r\n\r\n",
        b"GET http:/x HTTP/1.1\r\nHost: h\r\n\r\n",
        b"GET 1http://x/ HTTP/1.1\r\nHost: h\r\n\r\n",
        b"GET http://us@er/ HTTP/1.1\r\nHost: h\r\n\r\n",
        b"GET /a#frag HTTP/1.1\r\nHost: h\r\n\r\n",
        b"GET /caf\xc3\xa9 HTTP/1.1\r\nHost: h\r\n\r\n",
        b"CONNECT /x HTTP/1.1\r\nHost: h\r\n\r\n",
        b"CONNECT example.com HTTP/1.1\r\nHost: h\r\n\r\n",
        b"CONNECT example.com:x HTTP/1.1\r\nHost: h\r\n\r\n",
        b"CONNECT :443 HTTP/1.1\r\nHost: h\r\n\r\n",
        b"CONNECT * HTTP/1.1\r\nHost: h\r\n\r\n",
        b"OPTIONS ** HTTP/1.1\r\nHost: h\r\n\r\n",
    ];
    for buf in cases {
        let e = req_err(buf);
        assert!(
            matches!(e, HttpError::InvalidTarget(_)),
            "{e:?} for {:?}",
            String::from_utf8_lossy(buf)
        );
        assert_eq!(e.status(), 400);
    }
}

#[test]
fn limits_give_431() {
    let limits = Limits {
        max_head_bytes: 64,
        max_headers: 3,
    };
    let mut head = Head::new();
    // Complete but too long.
    let long = format!("GET /{} HTTP/1.1\r\nHost: h\r\n\r\n", "a".repeat(60));
    let e = parse_request(long.as_bytes(), &limits, &mut head).unwrap_err();
    assert_eq!(
        e,
        HttpError::HeadTooLarge {
            msg: REQ_MSG,
            limit: 64
        }
    );
    assert_eq!(e.status(), 431);
    assert_eq!(e.to_string(), "request head is larger than 64 bytes");
    // Still incomplete at the limit: no need to wait for the end.
    let partial = format!("GET /{}", "a".repeat(70));
    assert_eq!(
        parse_request(partial.as_bytes(), &limits, &mut head),
        Err(HttpError::HeadTooLarge {
            msg: REQ_MSG,
            limit: 64
        })
    );
    assert_eq!(
        parse_request(&partial.as_bytes()[..63], &limits, &mut head),
        Ok(ParseStatus::Partial)
    );
    // Exactly at the limit is fine.
    let exact = format!("GET /{} HTTP/1.1\r\nHost: h\r\n\r\n", "a".repeat(64 - 27));
    assert_eq!(exact.len(), 64);
    assert_eq!(
        parse_request(exact.as_bytes(), &limits, &mut head),
        Ok(ParseStatus::Complete)
    );
    // Too many fields.
    let many = b"GET / HTTP/1.1\r\nHost: h\r\na: 1\r\nb: 2\r\nc: 3\r\n\r\n";
    let e = parse_request(many, &limits, &mut head).unwrap_err();
    assert_eq!(
        e,
        HttpError::TooManyHeaders {
            msg: REQ_MSG,
            limit: 3
        }
    );
    assert_eq!(e.status(), 431);
    let three = b"GET / HTTP/1.1\r\nHost: h\r\na: 1\r\nb: 2\r\n\r\n";
    assert_eq!(
        parse_request(three, &limits, &mut head),
        Ok(ParseStatus::Complete)
    );
    // max_headers is capped at MAX_HEADERS.
    let huge = Limits {
        max_head_bytes: 1 << 20,
        max_headers: 10_000,
    };
    let mut buf = b"GET / HTTP/1.1\r\nHost: h\r\n".to_vec();
    for i in 0..MAX_HEADERS {
        buf.extend_from_slice(format!("x{i}: v\r\n").as_bytes());
    }
    buf.extend_from_slice(b"\r\n");
    assert_eq!(
        parse_request(&buf, &huge, &mut head),
        Err(HttpError::TooManyHeaders {
            msg: REQ_MSG,
            limit: MAX_HEADERS
        })
    );
}

#[test]
fn error_messages_say_what_is_wrong() {
    let e = req_err(&with_fields(
        "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
    ));
    assert_eq!(
        e.to_string(),
        "request has both Content-Length and Transfer-Encoding"
    );
    assert_eq!(
        HttpError::ControlCharacter {
            msg: REQ_MSG,
            byte: 0
        }
        .to_string(),
        "request has a control character 0x00 in a header value"
    );
    assert_eq!(
        HttpError::MissingHost.to_string(),
        "HTTP/1.1 request has no Host header"
    );
    assert_eq!(
        HttpError::ContentLengthAndTransferEncoding { msg: RES_MSG }.status(),
        502
    );
    assert_eq!(HttpError::ChunkSizeTooLong.status(), 400);
}

/// Feeding a head one more byte at a time gives `Partial` until the whole head is there, then
/// the same result as parsing it all at once (whether a head or an error).
#[test]
fn byte_by_byte_matches_all_at_once() {
    let inputs: &[&[u8]] = &[
        b"GET /a?b HTTP/1.1\r\nHost: h\r\nX: y\r\n\r\n",
        b"\r\nPOST /a HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc",
        b"GET http://x:1/y HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: h\r\nX: a\r\n b\r\n\r\n",
        b"GET / HTTP/1.1\nHost: h\n\n",
        b"GET / HTTP/1.1\r\nHost: h\r\nX: \x00\r\n\r\n",
        b"GET / HTTP/3.0\r\n\r\n",
    ];
    for input in inputs {
        let mut whole = Head::new();
        let all = parse_request(input, &LIMITS, &mut whole);
        let mut head = Head::new();
        let mut last = None;
        for n in 0..=input.len() {
            let r = parse_request(&input[..n], &LIMITS, &mut head);
            if r != Ok(ParseStatus::Partial) {
                last = Some((n, r));
                break;
            }
        }
        let (n, r) = last.expect("never complete");
        assert_eq!(r, all, "{:?}", String::from_utf8_lossy(input));
        if r.is_ok() {
            assert_eq!(n, whole.head_len());
            assert_eq!(head.path(input), whole.path(input));
            assert_eq!(head.framing(), whole.framing());
            assert_eq!(head.header_spans(), whole.header_spans());
        }
    }
}

// ---- responses ----

#[test]
fn response_framing_table() {
    use BodyFraming as F;
    let cases: &[(Method, &str, F)] = &[
        (
            Method::Get,
            "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n",
            F::ContentLength(10),
        ),
        (
            Method::Get,
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            F::Chunked,
        ),
        (
            Method::Get,
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            F::Chunked,
        ),
        (
            Method::Get,
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
            F::CloseDelimited,
        ),
        (Method::Get, "HTTP/1.1 200 OK\r\n\r\n", F::CloseDelimited),
        (Method::Get, "HTTP/1.0 200 OK\r\n\r\n", F::CloseDelimited),
        (
            Method::Head,
            "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n",
            F::None,
        ),
        (
            Method::Head,
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            F::None,
        ),
        (Method::Get, "HTTP/1.1 100 Continue\r\n\r\n", F::None),
        (
            Method::Get,
            "HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n",
            F::None,
        ),
        (
            Method::Get,
            "HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n",
            F::None,
        ),
        (
            Method::Get,
            "HTTP/1.1 204 No Content\r\nContent-Length: 10\r\n\r\n",
            F::None,
        ),
        (
            Method::Get,
            "HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n",
            F::None,
        ),
        (
            Method::Connect,
            "HTTP/1.1 200 Connection established\r\n\r\n",
            F::None,
        ),
        (
            Method::Connect,
            "HTTP/1.1 200 OK\r\nContent-Length: 10\r\nTransfer-Encoding: chunked\r\n\r\n",
            F::None,
        ),
        (
            Method::Connect,
            "HTTP/1.1 407 Auth\r\nContent-Length: 3\r\n\r\n",
            F::ContentLength(3),
        ),
        (
            Method::Post,
            "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n",
            F::ContentLength(0),
        ),
        (
            Method::Post,
            "HTTP/1.1 500 Oops\r\nContent-Length: 7, 7\r\n\r\n",
            F::ContentLength(7),
        ),
    ];
    for (method, text, want) in cases {
        let head = res(text.as_bytes(), *method).unwrap_or_else(|e| panic!("{e} for {text:?}"));
        assert_eq!(head.framing(), *want, "{method:?} {text:?}");
    }
}

#[test]
fn response_fields() {
    let buf = b"HTTP/1.1 404 Not  Found\r\nServer: x\r\nContent-Length: 0\r\n\r\nnext";
    let head = res(buf, Method::Get).unwrap();
    assert_eq!(head.message(), Message::Response);
    assert_eq!(head.status(), 404);
    assert_eq!(head.reason(buf), b"Not  Found");
    assert_eq!(head.header(buf, "server"), Some(&b"x"[..]));
    assert_eq!(&buf[head.head_len()..], b"next");
    assert!(head.keep_alive());
    // No reason phrase, or one with obs-text.
    let buf = b"HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n";
    assert_eq!(res(buf, Method::Get).unwrap().reason(buf), b"");
    let buf = b"HTTP/1.1 200 \r\nContent-Length: 0\r\n\r\n";
    assert_eq!(res(buf, Method::Get).unwrap().reason(buf), b"");
    let buf = b"HTTP/1.1 200 \xe2\x9c\x93 fine\r\nContent-Length: 0\r\n\r\n";
    assert_eq!(
        res(buf, Method::Get).unwrap().reason(buf),
        b"\xe2\x9c\x93 fine"
    );
    // Keep-alive.
    let ka = |b: &[u8]| res(b, Method::Get).unwrap().keep_alive();
    assert!(!ka(
        b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
    ));
    assert!(!ka(b"HTTP/1.1 200 OK\r\n\r\n"), "close-delimited");
    assert!(!ka(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n"));
    assert!(ka(
        b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n"
    ));
    // Upgrade only counts on a 101.
    let up = |b: &[u8]| res(b, Method::Get).unwrap().upgrade();
    assert!(up(
        b"HTTP/1.1 101 Switching\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
    ));
    assert!(!up(
        b"HTTP/1.1 200 OK\r\nConnection: Upgrade\r\nUpgrade: h2c\r\nContent-Length: 0\r\n\r\n"
    ));
    let buf = b"HTTP/1.1 100 Continue\r\n\r\n";
    assert!(res(buf, Method::Post).unwrap().is_informational());
}

#[test]
fn bad_responses_are_errors() {
    use HttpError as E;
    let cases: &[(&[u8], HttpError)] = &[
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
            E::ContentLengthAndTransferEncoding { msg: RES_MSG },
        ),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
            E::ChunkedNotFinal,
        ),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n\r\n",
            E::ChunkedNotFinal,
        ),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, chunked\r\n\r\n",
            E::ChunkedNotFinal,
        ),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip,,chunked\r\n\r\n",
            E::InvalidTransferEncoding,
        ),
        (
            b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            E::TransferEncodingInHttp10 { msg: RES_MSG },
        ),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 1x\r\n\r\n",
            E::InvalidContentLength { msg: RES_MSG },
        ),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            E::ConflictingContentLength { msg: RES_MSG },
        ),
        (b"HTTP/1.1 000 Zero\r\n\r\n", E::InvalidStatusLine),
        (b"HTTP/1.1 600 Six\r\n\r\n", E::InvalidStatusLine),
        (b"HTTP/1.1 20 OK\r\n\r\n", E::InvalidStatusLine),
        (b"HTTP/1.1 200 O\x01K\r\n\r\n", E::InvalidStatusLine),
        (
            b"HTTP/2 200 OK\r\n\r\n",
            E::UnsupportedVersion { msg: RES_MSG },
        ),
        (
            b"HTTP/1.1 200 OK\nContent-Length: 0\n\n",
            E::InvalidLineEnding { msg: RES_MSG },
        ),
        (
            b"HTTP/1.1 200 OK\r\nX: a\r\n b\r\n\r\n",
            E::ObsFold { msg: RES_MSG },
        ),
        (
            b"HTTP/1.1 200 OK\r\nX : a\r\n\r\n",
            E::WhitespaceBeforeColon { msg: RES_MSG },
        ),
        (
            b"HTTP/1.1 200 OK\r\nX: \x00\r\n\r\n",
            E::ControlCharacter {
                msg: RES_MSG,
                byte: 0,
            },
        ),
    ];
    for (buf, want) in cases {
        let e = res(buf, Method::Get).unwrap_err();
        assert_eq!(&e, want, "{:?}", String::from_utf8_lossy(buf));
        assert_eq!(e.status(), 502, "{e}");
    }
    let mut head = Head::new();
    let limits = Limits {
        max_head_bytes: 32,
        max_headers: 8,
    };
    assert_eq!(
        parse_response(&[b'H'; 40], Method::Get, &limits, &mut head),
        Err(E::UnsupportedVersion { msg: RES_MSG })
    );
    let long = b"HTTP/1.1 200 OK\r\nServer: something-long\r\n\r\n";
    let e = parse_response(long, Method::Get, &limits, &mut head).unwrap_err();
    assert_eq!(
        e,
        E::HeadTooLarge {
            msg: RES_MSG,
            limit: 32
        }
    );
    assert_eq!(e.status(), 502);
}

// ---- the chunked decoder ----

const CHUNKED: &[u8] =
    b"5\r\nhello\r\n1A;name=value;x=\"q;d\"\r\nabcdefghijklmnopqrstuvwxyz\r\n0 ;last\r\nExpires: never\r\nX-Sum: 1\r\n\r\nNEXT";
const CHUNKED_BODY_LEN: usize = CHUNKED.len() - 4;

fn feed_in_pieces(
    data: &[u8],
    max_trailer: usize,
    cuts: &mut dyn Iterator<Item = usize>,
) -> (Result<usize, HttpError>, u64) {
    let mut dec = ChunkedDecoder::new(max_trailer);
    let mut at = 0;
    let mut last_empty = false;
    loop {
        // Empty feeds are allowed, but never twice in a row: the loop must progress.
        let mut n = cuts.next().unwrap_or(usize::MAX).min(data.len() - at);
        if n == 0 && last_empty {
            n = 1.min(data.len() - at);
        }
        last_empty = n == 0;
        match dec.feed(&data[at..at + n]) {
            Ok(Chunked::Done { consumed }) => {
                assert!(consumed <= n);
                return (Ok(at + consumed), dec.payload_bytes());
            }
            Ok(Chunked::NeedMore { consumed }) => {
                assert_eq!(consumed, n);
                at += n;
                if at == data.len() {
                    return (Ok(usize::MAX), dec.payload_bytes());
                }
            }
            Err(e) => return (Err(e), dec.payload_bytes()),
        }
    }
}

#[test]
fn chunked_body_with_extensions_and_trailers() {
    let mut dec = ChunkedDecoder::new(64);
    assert_eq!(
        dec.feed(CHUNKED),
        Ok(Chunked::Done {
            consumed: CHUNKED_BODY_LEN
        })
    );
    assert_eq!(dec.payload_bytes(), 5 + 26);
    assert!(dec.is_done());
    assert_eq!(dec.feed(b"more"), Ok(Chunked::Done { consumed: 0 }));
    // Byte by byte.
    let (r, payload) = feed_in_pieces(CHUNKED, 64, &mut std::iter::repeat(1));
    assert_eq!((r, payload), (Ok(CHUNKED_BODY_LEN), 31));
    // Empty feeds change nothing.
    let mut dec = ChunkedDecoder::new(64);
    assert_eq!(dec.feed(b""), Ok(Chunked::NeedMore { consumed: 0 }));
    assert_eq!(dec.feed(b"0\r\n"), Ok(Chunked::NeedMore { consumed: 3 }));
    assert_eq!(dec.feed(b""), Ok(Chunked::NeedMore { consumed: 0 }));
    assert_eq!(dec.feed(b"\r\n"), Ok(Chunked::Done { consumed: 2 }));
    // Upper-case hex, leading zeros (16 digits at most).
    let mut dec = ChunkedDecoder::new(0);
    assert_eq!(
        dec.feed(b"000000000000000A\r\n0123456789\r\n0\r\n\r\n"),
        Ok(Chunked::Done { consumed: 35 })
    );
}

#[test]
fn chunked_errors() {
    use HttpError as E;
    let cases: &[(&[u8], HttpError)] = &[
        (b"5\nhello\r\n0\r\n\r\n", E::ChunkSizeLineEnding),
        (b"5\r\rhello", E::ChunkSizeLineEnding),
        (b"5\r\nhello\n0\r\n\r\n", E::ChunkDataNotTerminated),
        (b"5\r\nhelloX\r\n", E::ChunkDataNotTerminated),
        (b"5\r\nhello\rX", E::ChunkDataNotTerminated),
        (b"\r\n", E::InvalidChunkSize { byte: b'\r' }),
        (b"x\r\n", E::InvalidChunkSize { byte: b'x' }),
        (b"-1\r\n", E::InvalidChunkSize { byte: b'-' }),
        (b" 5\r\n", E::InvalidChunkSize { byte: b' ' }),
        (b"0x5\r\n", E::InvalidChunkSize { byte: b'x' }),
        (b"5 \r\nhello", E::InvalidChunkSize { byte: b'\r' }),
        (b"5 x\r\nhello", E::InvalidChunkSize { byte: b'x' }),
        (b"5;a\x00\r\n", E::InvalidChunkSize { byte: 0 }),
        (b"5;a\n", E::ChunkSizeLineEnding),
        (b"00000000000000001\r\n", E::ChunkSizeTooLong),
        (b"FFFFFFFFFFFFFFFFF\r\n", E::ChunkSizeTooLong),
        (b"0\r\n\n", E::InvalidTrailer),
        (b"0\r\nX: y\n\r\n", E::InvalidTrailer),
        (b"0\r\nX: y\r\n z\r\n\r\n", E::InvalidTrailer),
        (b"0\r\n: y\r\n\r\n", E::InvalidTrailer),
        (b"0\r\nX y\r\n\r\n", E::InvalidTrailer),
        (b"0\r\nX: \x01\r\n\r\n", E::InvalidTrailer),
        (b"0\r\n\rX", E::InvalidTrailer),
        (
            b"0\r\nLong-Trailer: 0123456789012345678901234567890123456789\r\n\r\n",
            E::TrailersTooLarge { limit: 32 },
        ),
    ];
    for (input, want) in cases {
        let mut dec = ChunkedDecoder::new(32);
        assert_eq!(
            dec.feed(input).as_ref(),
            Err(want),
            "{:?}",
            String::from_utf8_lossy(input)
        );
        // Sticky.
        assert_eq!(dec.feed(b"0\r\n\r\n").as_ref(), Err(want));
        // Byte by byte: the same error.
        let (r, _) = feed_in_pieces(input, 32, &mut std::iter::repeat(1));
        assert_eq!(r.as_ref(), Err(want));
    }
    // A chunk extension is bounded.
    let mut long = b"1;".to_vec();
    long.extend(std::iter::repeat_n(b'x', MAX_CHUNK_EXTENSION_BYTES));
    let mut dec = ChunkedDecoder::new(0);
    assert_eq!(
        dec.feed(&long),
        Err(E::ChunkExtensionTooLong {
            limit: MAX_CHUNK_EXTENSION_BYTES
        })
    );
    let ok = [&long[..long.len() - 1], b"\r\nx\r\n0\r\n\r\n"].concat();
    assert_eq!(
        ChunkedDecoder::new(0).feed(&ok),
        Ok(Chunked::Done { consumed: ok.len() })
    );
    // Sizes adding up past u64::MAX.
    let mut dec = ChunkedDecoder::new(0);
    assert_eq!(
        dec.feed(b"FFFFFFFFFFFFFFFF\r\n"),
        Ok(Chunked::NeedMore { consumed: 18 })
    );
    let mut dec = ChunkedDecoder::new(0);
    assert_eq!(
        dec.feed(b"2\r\nab\r\nFFFFFFFFFFFFFFFF\r\n"),
        Err(E::ChunkedBodyTooLarge)
    );
}

// ---- writers ----

#[test]
fn writes_a_request_with_edits() {
    let buf = b"POST /api/v1/items?page=2 HTTP/1.1\r\n\
Host: shop.example\r\n\
User-Agent: curl/8.5\r\n\
Connection: keep-alive, X-Hop\r\n\
X-Hop: secret\r\n\
Keep-Alive: timeout=5\r\n\
Proxy-Connection: keep-alive\r\n\
TE: trailers\r\n\
Trailer: X-Sum\r\n\
Upgrade: h2c\r\n\
Expect: 100-continue\r\n\
Content-Length: 0003\r\n\
X-Request-Id: abc\r\n\
Accept: */*\r\n\r\nxyz";
    let head = req(buf).unwrap();
    assert!(head.expect_continue() && !head.upgrade());
    let mut out = Vec::new();
    let edits = HeadEdits {
        path: Some(b"/items"),
        remove: &["x-request-id"],
        add: &[("x-forwarded-for", b"10.0.0.1"), ("x-request-id", b"r-1")],
        force_close: true,
        version: None,
    };
    write_request_head(&mut out, buf, &head, &edits);
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "POST /items?page=2 HTTP/1.1\r\n\
Host: shop.example\r\n\
User-Agent: curl/8.5\r\n\
Trailer: X-Sum\r\n\
Content-Length: 3\r\n\
Accept: */*\r\n\
connection: close\r\n\
x-forwarded-for: 10.0.0.1\r\n\
x-request-id: r-1\r\n\r\n"
    );
}

#[test]
fn writer_keeps_framing_and_upgrade() {
    // Chunked stays; a Connection header cannot remove the framing fields nor Host.
    let buf = b"PUT /x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nConnection: transfer-encoding, host, content-length\r\n\r\n";
    let head = req(buf).unwrap();
    let mut out = Vec::new();
    let edits = HeadEdits {
        remove: &["transfer-encoding"],
        ..HeadEdits::NONE
    };
    write_request_head(&mut out, buf, &head, &edits);
    assert_eq!(
        out,
        b"PUT /x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
    );
    let buf = b"POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: 5, 5\r\nContent-Length: 5\r\nConnection: Content-Length\r\n\r\n";
    let head = req(buf).unwrap();
    out.clear();
    write_request_head(&mut out, buf, &head, &HeadEdits::NONE);
    assert_eq!(
        out,
        b"POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\n"
    );

    // A websocket upgrade keeps Upgrade and says so in Connection.
    let buf = b"GET /chat HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: k\r\n\r\n";
    let head = req(buf).unwrap();
    out.clear();
    write_request_head(&mut out, buf, &head, &HeadEdits::NONE);
    assert_eq!(
        out,
        b"GET /chat HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nSec-WebSocket-Key: k\r\nconnection: upgrade\r\n\r\n"
    );
    let buf = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: a\r\n\r\n";
    let head = res(buf, Method::Get).unwrap();
    out.clear();
    write_response_head(&mut out, buf, &head, &HeadEdits::NONE);
    assert_eq!(
        out,
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nSec-WebSocket-Accept: a\r\nconnection: upgrade\r\n\r\n"
    );
}

#[test]
fn writer_turns_absolute_form_into_origin_form() {
    let buf = b"GET http://api.example:8080/v1?q=1 HTTP/1.1\r\nHost: wrong\r\nAccept: */*\r\n\r\n";
    let head = req(buf).unwrap();
    let mut out = Vec::new();
    write_request_head(&mut out, buf, &head, &HeadEdits::NONE);
    assert_eq!(
        out,
        b"GET /v1?q=1 HTTP/1.1\r\nHost: api.example:8080\r\nAccept: */*\r\n\r\n"
    );
    let buf = b"GET http://a.example HTTP/1.0\r\n\r\n";
    let head = req(buf).unwrap();
    out.clear();
    let edits = HeadEdits {
        version: Some(Version::Http11),
        ..HeadEdits::NONE
    };
    write_request_head(&mut out, buf, &head, &edits);
    assert_eq!(out, b"GET / HTTP/1.1\r\nhost: a.example\r\n\r\n");
    // CONNECT and OPTIONS * keep their target whatever the path edit says.
    let buf = b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n";
    let head = req(buf).unwrap();
    out.clear();
    let edits = HeadEdits {
        path: Some(b"/ignored"),
        ..HeadEdits::NONE
    };
    write_request_head(&mut out, buf, &head, &edits);
    assert_eq!(out, b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n");
}

#[test]
fn writes_responses() {
    let buf = b"HTTP/1.0 200 OK\r\nServer: app\r\nConnection: close\r\n\r\nbody until close";
    let head = res(buf, Method::Get).unwrap();
    assert_eq!(head.framing(), BodyFraming::CloseDelimited);
    let mut out = Vec::new();
    let edits = HeadEdits {
        version: Some(Version::Http11),
        remove: &["server"],
        add: &[("via", b"1.1 sluice"), ("x-bad", b"a\r\nInjected: 1")],
        ..HeadEdits::NONE
    };
    write_response_head(&mut out, buf, &head, &edits);
    assert_eq!(
        out,
        b"HTTP/1.1 200 OK\r\nconnection: close\r\nvia: 1.1 sluice\r\nx-bad: a  Injected: 1\r\n\r\n"
    );
    let buf = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\nKeep-Alive: timeout=5\r\n\r\n";
    let head = res(buf, Method::Get).unwrap();
    out.clear();
    write_response_head(&mut out, buf, &head, &HeadEdits::NONE);
    // `Trailer` is end-to-end (RFC 9110 §6.6.2); `Keep-Alive` is hop-by-hop.
    assert_eq!(
        out,
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n"
    );
    // Unless `Connection` names it.
    let buf =
        b"HTTP/1.1 200 OK\r\nConnection: trailer\r\nTrailer: X-Sum\r\ncontent-length: 0\r\n\r\n";
    let head = res(buf, Method::Get).unwrap();
    out.clear();
    write_response_head(&mut out, buf, &head, &HeadEdits::NONE);
    assert_eq!(out, b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n");
}

#[test]
fn writes_local_responses() {
    let mut out = Vec::new();
    write_local_response(
        &mut out,
        502,
        &[("x-sluice", b"upstream reset")],
        b"upstream reset\n",
        true,
    );
    assert_eq!(
        String::from_utf8(out.clone()).unwrap(),
        "HTTP/1.1 502 Bad Gateway\r\nx-sluice: upstream reset\r\ncontent-type: text/plain\r\ncontent-length: 15\r\nconnection: close\r\n\r\nupstream reset\n"
    );
    out.clear();
    write_local_response(&mut out, 100, &[], b"", false);
    assert_eq!(out, b"HTTP/1.1 100 Continue\r\n\r\n");
    out.clear();
    write_local_response(&mut out, 204, &[], b"ignored", false);
    assert_eq!(out, b"HTTP/1.1 204 No Content\r\n\r\n");
    out.clear();
    write_local_response(
        &mut out,
        200,
        &[("content-type", b"application/json")],
        b"{}",
        false,
    );
    assert_eq!(
        out,
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}"
    );
    out.clear();
    write_local_response(&mut out, 599, &[], b"", false);
    assert_eq!(out, b"HTTP/1.1 599 \r\ncontent-length: 0\r\n\r\n");
    // What the proxy writes, it parses back.
    let mut head = Head::new();
    out.clear();
    write_local_response(&mut out, 431, &[], b"too big", true);
    let buf = &out[..];
    assert_eq!(
        parse_response(buf, Method::Get, &LIMITS, &mut head),
        Ok(ParseStatus::Complete)
    );
    assert_eq!(
        (head.status(), head.framing()),
        (431, BodyFraming::ContentLength(7))
    );
}

// ---- properties ----

const METHODS: [&str; 7] = ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "PURGE"];

#[derive(Clone, Debug)]
enum BodySpec {
    None,
    Length(Vec<u8>),
    /// The chunks (non-empty each), extensions on or off, trailer lines.
    Chunked(Vec<Vec<u8>>, bool, Vec<(String, String)>),
}

fn field_name() -> impl Strategy<Value = String> {
    "x-[a-z0-9-]{1,12}"
}

fn field_value() -> impl Strategy<Value = String> {
    "[!-~]([ -~]{0,20}[!-~])?"
}

fn body_spec() -> impl Strategy<Value = BodySpec> {
    prop_oneof![
        Just(BodySpec::None),
        prop::collection::vec(any::<u8>(), 0..200).prop_map(BodySpec::Length),
        (
            prop::collection::vec(prop::collection::vec(any::<u8>(), 1..100), 0..6),
            any::<bool>(),
            prop::collection::vec((field_name(), field_value()), 0..3)
        )
            .prop_map(|(c, e, t)| BodySpec::Chunked(c, e, t)),
    ]
}

fn serialize(
    method: &str,
    path: &str,
    query: &Option<String>,
    fields: &[(String, String)],
    body: &BodySpec,
) -> (Vec<u8>, usize, usize) {
    let mut out = format!("{method} {path}").into_bytes();
    if let Some(q) = query {
        out.extend_from_slice(format!("?{q}").as_bytes());
    }
    out.extend_from_slice(b" HTTP/1.1\r\nHost: svc.local\r\n");
    for (n, v) in fields {
        out.extend_from_slice(format!("{n}: {v}\r\n").as_bytes());
    }
    match body {
        BodySpec::None => {}
        BodySpec::Length(b) => {
            out.extend_from_slice(format!("Content-Length: {}\r\n", b.len()).as_bytes())
        }
        BodySpec::Chunked(..) => out.extend_from_slice(b"Transfer-Encoding: chunked\r\n"),
    }
    out.extend_from_slice(b"\r\n");
    let head_len = out.len();
    match body {
        BodySpec::None => {}
        BodySpec::Length(b) => out.extend_from_slice(b),
        BodySpec::Chunked(chunks, ext, trailers) => {
            for c in chunks {
                out.extend_from_slice(format!("{:x}", c.len()).as_bytes());
                if *ext {
                    out.extend_from_slice(b";ext=\"v\"");
                }
                out.extend_from_slice(b"\r\n");
                out.extend_from_slice(c);
                out.extend_from_slice(b"\r\n");
            }
            out.extend_from_slice(b"0\r\n");
            for (n, v) in trailers {
                out.extend_from_slice(format!("{n}: {v}\r\n").as_bytes());
            }
            out.extend_from_slice(b"\r\n");
        }
    }
    let end = out.len();
    (out, head_len, end)
}

proptest! {
    /// A generated request, serialized, parses back to the same method, path, query, fields and
    /// framing; a chunked body ends exactly where it was written, however it is split; a
    /// pipelined request after it is untouched; writing the head again with no edit gives the
    /// same bytes (nothing in it is hop-by-hop).
    #[test]
    fn serialized_requests_parse_back(
        method in prop::sample::select(&METHODS[..]),
        path in "/[a-zA-Z0-9._~%/-]{0,30}",
        query in prop::option::of("[a-z0-9=&]{0,20}"),
        fields in prop::collection::vec((field_name(), field_value()), 0..12),
        body in body_spec(),
        cuts in prop::collection::vec(1usize..40, 1..20),
    ) {
        let (mut buf, head_len, end) = serialize(method, &path, &query, &fields, &body);
        buf.extend_from_slice(b"GET /next HTTP/1.1\r\nHost: n\r\n\r\n");
        let mut head = Head::new();
        prop_assert_eq!(parse_request(&buf, &LIMITS, &mut head), Ok(ParseStatus::Complete));
        prop_assert_eq!(head.head_len(), head_len);
        prop_assert_eq!(head.method_bytes(&buf), method.as_bytes());
        prop_assert_eq!(head.method(), Method::from_token(method.as_bytes()));
        prop_assert_eq!(head.path(&buf), path.as_bytes());
        prop_assert_eq!(head.query(&buf), query.as_deref().map(str::as_bytes));
        prop_assert_eq!(head.host(&buf), Some(&b"svc.local"[..]));
        let parsed: Vec<(&[u8], &[u8])> = head.headers(&buf).skip(1).take(fields.len()).collect();
        let want: Vec<(&[u8], &[u8])> = fields.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes())).collect();
        prop_assert_eq!(parsed, want);
        prop_assert!(head.keep_alive());
        match &body {
            BodySpec::None => prop_assert_eq!(head.framing(), BodyFraming::None),
            BodySpec::Length(b) => prop_assert_eq!(head.framing(), BodyFraming::ContentLength(b.len() as u64)),
            BodySpec::Chunked(chunks, _, _) => {
                prop_assert_eq!(head.framing(), BodyFraming::Chunked);
                let body_bytes = &buf[head_len..];
                let mut dec = ChunkedDecoder::new(1024);
                prop_assert_eq!(dec.feed(body_bytes), Ok(Chunked::Done { consumed: end - head_len }));
                let total: usize = chunks.iter().map(Vec::len).sum();
                prop_assert_eq!(dec.payload_bytes(), total as u64);
                let (r, payload) = feed_in_pieces(body_bytes, 1024, &mut cuts.iter().copied().cycle());
                prop_assert_eq!(r, Ok(end - head_len));
                prop_assert_eq!(payload, total as u64);
            }
        }
        let mut next = Head::new();
        prop_assert_eq!(parse_request(&buf[end..], &LIMITS, &mut next), Ok(ParseStatus::Complete));
        prop_assert_eq!(next.path(&buf[end..]), b"/next");

        let mut out = Vec::new();
        write_request_head(&mut out, &buf, &head, &HeadEdits::NONE);
        prop_assert_eq!(&out[..], &buf[..head_len]);
    }

    /// Any split of any input gives the chunked decoder the same result as one feed.
    #[test]
    fn chunked_splits_do_not_matter(
        data in prop_oneof![
            prop::collection::vec(any::<u8>(), 0..64),
            prop::collection::vec(prop::sample::select(&b"0123456789aAfF;= \r\n:xX\t"[..]), 0..64),
        ],
        cuts in prop::collection::vec(0usize..10, 1..30),
    ) {
        let whole = feed_in_pieces(&data, 16, &mut std::iter::empty());
        let split = feed_in_pieces(&data, 16, &mut cuts.iter().copied().cycle());
        prop_assert_eq!(whole, split);
    }

    /// Parsing never panics and never reports a head longer than its input or the limit.
    #[test]
    fn parsing_arbitrary_bytes_is_total(
        data in prop_oneof![
            prop::collection::vec(any::<u8>(), 0..128),
            "(GET|POST|HTTP/1.1) [ -~]{0,20}\r\n([A-Za-z:-]{0,10}: [ -~]{0,10}\r\n){0,4}\r\n".prop_map(String::into_bytes),
        ],
    ) {
        let limits = Limits { max_head_bytes: 96, max_headers: 4 };
        let mut head = Head::new();
        if let Ok(ParseStatus::Complete) = parse_request(&data, &limits, &mut head) {
            prop_assert!(head.head_len() <= data.len().min(96));
        }
        if let Ok(ParseStatus::Complete) = parse_response(&data, Method::Get, &limits, &mut head) {
            prop_assert!(head.head_len() <= data.len().min(96));
        }
    }
}

#[test]
fn parse_decimal_edges() {
    use super::parse::parse_decimal as p;
    assert_eq!(p(b"0"), Some(0));
    assert_eq!(p(b"007"), Some(7));
    assert_eq!(p(b""), None);
    assert_eq!(p(b"18446744073709551615"), Some(u64::MAX));
    assert_eq!(p(b"18446744073709551616"), None);
}

#[test]
fn trailers_start_and_forbidden_trailer_fields_are_dropped() {
    let body =
        b"3\r\nabc\r\n0;x=1\r\nX-Sum: 1\r\ncontent-length: 9\r\nHOST: h\r\nX-B: 2\r\n\r\nNEXT";
    // Fed in pieces: the offset is counted across feeds.
    let mut dec = ChunkedDecoder::new(1024);
    assert_eq!(dec.feed(&body[..5]), Ok(Chunked::NeedMore { consumed: 5 }));
    assert_eq!(dec.trailers_start(), None);
    let rest = &body[5..];
    let Ok(Chunked::Done { consumed }) = dec.feed(rest) else {
        panic!("not done");
    };
    let end = 5 + consumed;
    assert_eq!(&body[end..], b"NEXT");
    let at = dec.trailers_start().unwrap() as usize;
    assert_eq!(&body[..at], b"3\r\nabc\r\n0;x=1\r\n");
    let mut out = Vec::new();
    write_trailers(&mut out, &body[at..end]);
    assert_eq!(out, b"X-Sum: 1\r\nX-B: 2\r\n\r\n");
    // No trailers: just the final CRLF.
    let mut out = Vec::new();
    write_trailers(&mut out, b"\r\n");
    assert_eq!(out, b"\r\n");
    assert!(
        TRAILER_FORBIDDEN
            .iter()
            .all(|f| f.bytes().all(|b| !b.is_ascii_uppercase()))
    );
}

#[test]
fn feed_payload_yields_the_data_without_the_framing() {
    let body = b"5;ext=1\r\nhello\r\n1\r\n \r\n6\r\nworld!\r\n0\r\nx-t: 1\r\n\r\nNEXT";
    for piece in [1, 2, 3, 7, body.len()] {
        let mut dec = ChunkedDecoder::new(1024);
        let mut payload = Vec::new();
        let mut at = 0;
        let end = loop {
            let stop = (at + piece).min(body.len());
            let (c, run) = dec.feed_payload(&body[at..stop]).unwrap();
            if let Some(r) = run {
                payload.extend_from_slice(&body[at..stop][r]);
            }
            match c {
                Chunked::Done { consumed } => break at + consumed,
                Chunked::NeedMore { consumed } => at += consumed,
            }
        };
        assert_eq!(payload, b"hello world!", "pieces of {piece}");
        assert_eq!(&body[end..], b"NEXT");
    }
    let mut dec = ChunkedDecoder::new(1024);
    assert!(dec.feed_payload(b"zz\r\n").is_err());
}

/// A run's chunk: `chunk_left` after it says how much of its chunk is still to come, so that a
/// driver that re-frames the payload keeps the client's chunk sizes (a run that starts a chunk
/// knows the chunk's size: the run plus what is left), however the input is cut.
#[test]
fn chunk_left_tells_where_a_chunk_ends() {
    let body = b"5;ext=1\r\nhello\r\nb\r\n world!!!!!\r\n0\r\n\r\n";
    for piece in [1, 2, 3, 7, body.len()] {
        let mut dec = ChunkedDecoder::new(1024);
        let mut sizes = Vec::new();
        let mut in_chunk = false;
        let mut at = 0;
        loop {
            let stop = (at + piece).min(body.len());
            let (c, run) = dec.feed_payload(&body[at..stop]).unwrap();
            if let Some(r) = run {
                if !in_chunk {
                    sizes.push(r.len() as u64 + dec.chunk_left());
                }
                in_chunk = dec.chunk_left() > 0;
            }
            match c {
                Chunked::Done { .. } => break,
                Chunked::NeedMore { consumed } => at += consumed,
            }
        }
        assert_eq!(sizes, [5, 11], "pieces of {piece}");
        assert_eq!(dec.chunk_left(), 0);
    }
}

proptest! {
    /// The typed form of a forwarded response head (`for_each_response_field`) is what the
    /// HTTP/1.1 writer writes, read back: the same fields in the same order (a normalized
    /// content length as its number), minus only the `connection` line the writer adds for a
    /// close — so a codec that takes heads typed (HTTP/2) sends what HTTP/1.1 does.
    #[test]
    fn typed_response_fields_are_what_the_writer_writes(
        fields in prop::collection::vec((field_name(), field_value()), 0..10),
        hop in prop::sample::subsequence(&[
            "Connection: x-a, keep-alive",
            "Keep-Alive: timeout=5",
            "Te: trailers",
            "Trailer: x-t",
            "Content-Length: 3, 3",
            "Content-Length: 3",
            "X-A: named-by-connection",
            "Upgrade: h2c",
        ][..], 0..8),
        remove in prop::collection::vec(field_name(), 0..3),
        add in prop::collection::vec((field_name(), field_value()), 0..3),
        force_close in any::<bool>(),
    ) {
        let mut text = String::from("HTTP/1.1 200 OK\r\n");
        for (n, v) in &fields {
            text.push_str(&format!("{n}: {v}\r\n"));
        }
        for line in &hop {
            text.push_str(line);
            text.push_str("\r\n");
        }
        text.push_str("\r\n");
        let buf = text.into_bytes();
        let head = res(&buf, Method::Get).unwrap();
        let remove: Vec<&str> = remove.iter().map(String::as_str).collect();
        let add: Vec<(&str, &[u8])> = add.iter().map(|(n, v)| (n.as_str(), v.as_bytes())).collect();
        let edits = HeadEdits { remove: &remove, add: &add, force_close, ..HeadEdits::NONE };
        let mut out = Vec::new();
        write_response_head(&mut out, &buf, &head, &edits);
        let written = res(&out, Method::Get).unwrap();
        let want: Vec<(Vec<u8>, Vec<u8>)> = written
            .headers(&out)
            .filter(|(n, _)| !n.eq_ignore_ascii_case(b"connection"))
            .map(|(n, v)| (n.to_vec(), v.to_vec()))
            .collect();
        let mut typed = Vec::new();
        for_each_response_field(&buf, &head, &edits, |n, v| {
            let v = match v {
                FieldValue::Bytes(b) => b.to_vec(),
                FieldValue::ContentLength(n) => n.to_string().into_bytes(),
            };
            typed.push((n.to_vec(), v));
        });
        prop_assert_eq!(typed, want);
    }
}

// ---- the per-request cost cuts (issue 15) change nothing: the current code against the
// ---- code before them (`reference.rs`), on heads built to reach every branch ----

use super::reference as before;
use super::reference_parse;

/// Field names the codec knows and some it must not take for them.
const NAMES: [&str; 17] = [
    "te",
    "host",
    "expect",
    "upgrade",
    "trailer",
    "connection",
    "keep-alive",
    "content-length",
    "proxy-connection",
    "transfer-encoding",
    "server",
    "date",
    "x-other",
    "content-type",
    "hosu",
    "keep_alive",
    "connectiom",
];

/// Bytes that sit next to the ones the fast paths compare (case bits, `-` and CR, obs-text).
const ODD_BYTES: &[u8] = b"\r\n\t -_:^~@[`{\x00\x0d\x2d\x7f\x80\xff\xe9AaZzOo";

/// A name of [`NAMES`] in any case, sometimes with one byte replaced by an odd one.
fn mangled_name() -> impl Strategy<Value = Vec<u8>> {
    (
        prop::sample::select(&NAMES[..]),
        prop::collection::vec(any::<bool>(), 17),
        prop::option::of((0usize..17, prop::sample::select(ODD_BYTES))),
    )
        .prop_map(|(name, upper, replace)| {
            let mut name: Vec<u8> = name
                .bytes()
                .zip(&upper)
                .map(|(b, &up)| if up { b.to_ascii_uppercase() } else { b })
                .collect();
            if let Some((at, byte)) = replace {
                let at = at % name.len();
                name[at] = byte;
            }
            name
        })
}

const START_LINES: [&str; 20] = [
    "GET / HTTP/1.1",
    "GET /a/b?x=1 HTTP/1.0",
    "POST /p HTTP/1.1",
    "\r\nGET /x HTTP/1.1",
    "GET  /a HTTP/1.1",
    "CONNECT h.example:443 HTTP/1.1",
    "OPTIONS * HTTP/1.1",
    "GET http://h.example:8080/p?q HTTP/1.1",
    "GET http://h.example HTTP/1.0",
    "get /lower HTTP/1.1",
    "HTTP/1.1 200 OK",
    "HTTP/1.1 200",
    "HTTP/1.1 200 ",
    "HTTP/1.0 204 No Content",
    "HTTP/1.1 101 Switching Protocols",
    "\r\n\r\nHTTP/1.1 304 Not Modified",
    "HTTP/1.1 200 caf\u{e9}",
    "HTTP/1.1 200  two spaces",
    "HTTP/1.1 099 Low",
    "HTTP/1.1 404 Not\tFound",
];

const SEPARATORS: [&str; 6] = [": ", ":", ":  ", ": \t", ":\t", " : "];

const VALUES: [&str; 16] = [
    "",
    "h.example",
    "615",
    "0615",
    "5, 5",
    "5,6",
    "close",
    "upgrade",
    "Upgrade, x-other",
    "keep-alive, server",
    "chunked",
    "gzip, chunked",
    "websocket",
    "100-continue",
    "v  ",
    "a\u{7f}b",
];

/// A head of mixed line shapes (mostly well-formed, with a `Host` line first most of the time,
/// so that most parse), sometimes with one byte replaced or inserted anywhere.
fn mixed_head() -> impl Strategy<Value = Vec<u8>> {
    let separator = prop_oneof![
        6 => Just(": "),
        1 => prop::sample::select(&SEPARATORS[..]),
    ];
    let value = prop_oneof![
        3 => "[!-~]([ -~]{0,12}[!-~])?".prop_map(String::into_bytes),
        2 => prop::sample::select(&VALUES[..]).prop_map(|v| v.as_bytes().to_vec()),
    ];
    (
        prop::sample::select(&START_LINES[..]),
        prop::option::weighted(0.8, prop::sample::select(&SEPARATORS[..2])),
        prop::collection::vec((mangled_name(), separator, value), 0..8),
        prop::option::weighted(
            0.3,
            (
                any::<prop::sample::Index>(),
                prop::sample::select(ODD_BYTES),
                any::<bool>(),
            ),
        ),
    )
        .prop_map(|(start, host, fields, mutation)| {
            let mut head = start.as_bytes().to_vec();
            head.extend_from_slice(b"\r\n");
            if let Some(separator) = host {
                head.extend_from_slice(b"Host");
                head.extend_from_slice(separator.as_bytes());
                head.extend_from_slice(b"h.example\r\n");
            }
            for (name, separator, value) in fields {
                head.extend_from_slice(&name);
                head.extend_from_slice(separator.as_bytes());
                head.extend_from_slice(&value);
                head.extend_from_slice(b"\r\n");
            }
            head.extend_from_slice(b"\r\n");
            if let Some((at, byte, insert)) = mutation {
                let at = at.index(head.len());
                if insert {
                    head.insert(at, byte);
                } else {
                    head[at] = byte;
                }
            }
            head
        })
}

/// Edits that take every path of the writers.
fn edit_sets() -> [HeadEdits<'static>; 6] {
    [
        HeadEdits::NONE,
        HeadEdits {
            path: Some(b"/new"),
            ..HeadEdits::NONE
        },
        HeadEdits {
            version: Some(Version::Http11),
            ..HeadEdits::NONE
        },
        HeadEdits {
            version: Some(Version::Http10),
            force_close: true,
            ..HeadEdits::NONE
        },
        HeadEdits {
            remove: &["host", "server", "upgrade", "content-length", "x-other"],
            add: &[("x-added", b"1"), ("host", b"added.example")],
            ..HeadEdits::NONE
        },
        HeadEdits {
            remove: &["expect"],
            add: &[("server", b"sluice")],
            force_close: true,
            ..HeadEdits::NONE
        },
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4096))]

    /// Field classification by length, first letter and words gives what a plain
    /// case-insensitive comparison gave, for any bytes.
    #[test]
    fn known_of_is_as_before(
        name in prop_oneof![mangled_name(), prop::collection::vec(any::<u8>(), 0..20)],
    ) {
        prop_assert_eq!(Known::of(&name), before::known_of(&name));
    }

    /// The one-pass parser gives what `httparse` with the strict byte scan and the field
    /// classification after it gave: the same outcome (every error, `Partial`, the limits'
    /// errors) and, for a complete head, the same head — on whole heads and cut ones, with the
    /// default limits and small ones.
    #[test]
    fn parse_is_as_before(
        data in prop_oneof![
            4 => mixed_head(),
            1 => prop::collection::vec(prop::sample::select(ODD_BYTES), 0..80),
            1 => prop::collection::vec(any::<u8>(), 0..80),
        ],
        cut in any::<prop::sample::Index>(),
        small in any::<bool>(),
    ) {
        let limits = if small {
            Limits { max_head_bytes: 48, max_headers: 2 }
        } else {
            LIMITS
        };
        let cut = &data[..cut.index(data.len() + 1)];
        let (mut now, mut then) = (Head::new(), Head::new());
        for bytes in [&data[..], cut] {
            let got = parse_request(bytes, &limits, &mut now);
            prop_assert_eq!(&got, &reference_parse::parse_request(bytes, &limits, &mut then));
            if got == Ok(ParseStatus::Complete) {
                prop_assert_eq!(format!("{now:?}"), format!("{then:?}"));
            }
            for method in [Method::Get, Method::Head, Method::Connect] {
                let got = parse_response(bytes, method, &limits, &mut now);
                prop_assert_eq!(
                    &got,
                    &reference_parse::parse_response(bytes, method, &limits, &mut then)
                );
                if got == Ok(ParseStatus::Complete) {
                    prop_assert_eq!(format!("{now:?}"), format!("{then:?}"));
                }
            }
        }
    }

    /// Whatever head parses, the reason phrase is where it was found before, and the writers
    /// (copying runs of lines written as they came) write the very bytes they wrote before,
    /// with and without edits.
    #[test]
    fn writers_and_reason_are_as_before(data in mixed_head()) {
        let mut head = Head::new();
        let mut now = Vec::new();
        let mut then = Vec::new();
        if parse_request(&data, &LIMITS, &mut head) == Ok(ParseStatus::Complete) {
            for edits in &edit_sets() {
                now.clear();
                then.clear();
                write_request_head(&mut now, &data, &head, edits);
                before::write_request_head(&mut then, &data, &head, edits);
                prop_assert!(now == then, "{:?}\n!= {:?}", now.escape_ascii().to_string(), then.escape_ascii().to_string());
            }
        }
        for method in [Method::Get, Method::Head, Method::Connect] {
            if parse_response(&data, method, &LIMITS, &mut head) == Ok(ParseStatus::Complete) {
                let reason = before::reason_span(&data, head.head_len());
                prop_assert_eq!(head.reason(&data), &data[reason]);
                for edits in &edit_sets() {
                    now.clear();
                    then.clear();
                    write_response_head(&mut now, &data, &head, edits);
                    before::write_response_head(&mut then, &data, &head, edits);
                    prop_assert!(now == then, "{:?}\n!= {:?}", now.escape_ascii().to_string(), then.escape_ascii().to_string());
                }
            }
        }
    }
}
