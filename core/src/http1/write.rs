//! Writing heads: forwarded ones (the parsed head with the hop-by-hop fields dropped and the
//! proxy's edits applied) and local answers.

use std::ops::Range;

use super::{BodyFraming, Head, HeaderSpan, Known, TargetForm, Version, list_elements};

/// Changes a proxy makes to a head it forwards.
#[derive(Clone, Copy, Debug, Default)]
pub struct HeadEdits<'a> {
    /// Replaces the path of an origin-form or absolute-form target (the query is kept).
    pub path: Option<&'a [u8]>,
    /// Fields to drop, by name (ASCII case-insensitive; lowercase by convention).
    /// `Content-Length` and `Transfer-Encoding` are never dropped: they frame the body.
    pub remove: &'a [&'a str],
    /// Fields to write after the original ones. Names must be tokens and values must not hold
    /// control characters other than HTAB; the writer replaces any such byte with a space, so a
    /// bad value cannot inject a field or end the head.
    pub add: &'a [(&'a str, &'a [u8])],
    /// Write `connection: close`.
    pub force_close: bool,
    /// The version to write instead of the message's own. (RFC 9110 §2.5 has a proxy send its
    /// own version, HTTP/1.1; a request upgraded from HTTP/1.0 then needs a `Host`, via `add`.)
    pub version: Option<Version>,
}

impl HeadEdits<'static> {
    /// No edit at all.
    pub const NONE: HeadEdits<'static> = HeadEdits {
        path: None,
        remove: &[],
        add: &[],
        force_close: false,
        version: None,
    };
}

/// Writes a request head to send upstream: the request line (with [`HeadEdits::path`]; an
/// absolute-form target in origin-form), the original fields in order minus the hop-by-hop and
/// removed ones (with `Host` set to the target's authority for an absolute-form target), then
/// `connection: upgrade` when [`Head::upgrade`] holds, `connection: close` when
/// [`HeadEdits::force_close`] does, the added fields, and the empty line.
///
/// `buf` and `head` are what [`super::parse_request`] completed on. An HTTP/1.0 client's wish
/// to keep the connection alive is not forwarded (the upstream connection is the proxy's).
pub fn write_request_head(out: &mut Vec<u8>, buf: &[u8], head: &Head, edits: &HeadEdits<'_>) {
    out.reserve(head.head_len + 64);
    let mut copy = Verbatim::default();
    match verbatim_request_line(buf, head, edits) {
        Some(line) => copy.push(out, buf, line),
        None => {
            out.extend_from_slice(head.method_bytes(buf));
            out.push(b' ');
            match head.form {
                TargetForm::Origin | TargetForm::Absolute => {
                    out.extend_from_slice(edits.path.unwrap_or_else(|| head.path(buf)));
                    if let Some(query) = head.query(buf) {
                        out.push(b'?');
                        out.extend_from_slice(query);
                    }
                }
                TargetForm::Authority | TargetForm::Asterisk => {
                    out.extend_from_slice(head.target(buf));
                }
            }
            out.push(b' ');
            out.extend_from_slice(edits.version.unwrap_or(head.version).as_bytes());
            out.extend_from_slice(b"\r\n");
        }
    }
    let absolute = head.form == TargetForm::Absolute;
    let host_removed = edits.remove.iter().any(|r| r.eq_ignore_ascii_case("host"));
    if absolute && !host_removed && head.header(buf, "host").is_none() {
        // An HTTP/1.0 request without Host: the authority becomes one.
        copy.flush(out, buf);
        push_parsed(out, b"host", head.host(buf).unwrap_or_default());
    }
    write_fields(out, &mut copy, buf, head, edits, true);
    copy.flush(out, buf);
    let upgrade = head.upgrade;
    write_connection(out, upgrade, edits.force_close);
    write_added(out, edits);
    out.extend_from_slice(b"\r\n");
}

/// The request line in `buf` when it is exactly what [`write_request_head`] would write (an
/// origin-form target kept, the version kept, single spaces): it is then copied as it is.
fn verbatim_request_line(buf: &[u8], head: &Head, edits: &HeadEdits<'_>) -> Option<Range<usize>> {
    let version = edits.version.unwrap_or(head.version);
    let target = &head.target;
    let line_end = target.end + 1 + version.as_bytes().len() + 2;
    let kept = head.form == TargetForm::Origin
        && edits.path.is_none()
        && head.method_span.end + 1 == target.start
        && buf.get(head.method_span.end) == Some(&b' ')
        && buf.get(target.end) == Some(&b' ')
        && buf.get(target.end + 1..line_end - 2) == Some(version.as_bytes())
        && buf.get(line_end - 2..line_end) == Some(b"\r\n");
    kept.then_some(head.method_span.start..line_end)
}

/// Writes a response head to send downstream: the status line, the original fields in order
/// minus the hop-by-hop and removed ones, then `connection: upgrade` for a 101 upgrade,
/// `connection: close` when [`HeadEdits::force_close`] holds or the body is close-delimited
/// (the downstream connection must then close too), the added fields, and the empty line.
///
/// To keep an HTTP/1.0 client's connection alive, add `connection: keep-alive` (added fields
/// are written as given).
pub fn write_response_head(out: &mut Vec<u8>, buf: &[u8], head: &Head, edits: &HeadEdits<'_>) {
    out.reserve(head.head_len + 64);
    let mut copy = Verbatim::default();
    match verbatim_status_line(buf, head, edits) {
        Some(line) => copy.push(out, buf, line),
        None => {
            out.extend_from_slice(edits.version.unwrap_or(head.version).as_bytes());
            out.push(b' ');
            push_status(out, head.status);
            out.push(b' ');
            out.extend_from_slice(head.reason(buf));
            out.extend_from_slice(b"\r\n");
        }
    }
    write_fields(out, &mut copy, buf, head, edits, false);
    copy.flush(out, buf);
    let close = edits.force_close || head.framing == BodyFraming::CloseDelimited;
    write_connection(out, head.upgrade, close);
    write_added(out, edits);
    out.extend_from_slice(b"\r\n");
}

/// The status line in `buf` when it is exactly what [`write_response_head`] would write (the
/// version kept, a reason phrase after one space): it is then copied as it is.
fn verbatim_status_line(buf: &[u8], head: &Head, edits: &HeadEdits<'_>) -> Option<Range<usize>> {
    let version = edits.version.unwrap_or(head.version);
    // `HTTP/1.x NNN reason`: the reason starts 13 bytes into the line.
    let reason = &head.target;
    let start = reason.start.checked_sub(13)?;
    let line = buf.get(start..reason.end + 2)?;
    let kept = line[..8] == *version.as_bytes()
        && line[8] == b' '
        && line[9..12] == status_digits(head.status)
        && line[12] == b' '
        && line.ends_with(b"\r\n");
    kept.then_some(start..reason.end + 2)
}

/// Writes a response the proxy makes itself (an error, a redirect, a health answer):
/// `HTTP/1.1 status reason`, `extra_headers`, `content-type: text/plain` when the body is not
/// empty and `extra_headers` has no content-type, `content-length`, `connection: close` when
/// `close`, then the body. A 1xx, 204 or 304 gets neither length nor body.
pub fn write_local_response(
    out: &mut Vec<u8>,
    status: u16,
    extra_headers: &[(&str, &[u8])],
    body: &[u8],
    close: bool,
) {
    out.extend_from_slice(b"HTTP/1.1 ");
    push_status(out, status);
    out.push(b' ');
    out.extend_from_slice(reason_phrase(status).as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in extra_headers {
        push_field(out, name.as_bytes(), value);
    }
    let bodiless = (100..200).contains(&status) || status == 204 || status == 304;
    if !bodiless {
        let has_type = extra_headers
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case("content-type"));
        if !body.is_empty() && !has_type {
            out.extend_from_slice(b"content-type: text/plain\r\n");
        }
        out.extend_from_slice(b"content-length: ");
        push_u64(out, body.len() as u64);
        out.extend_from_slice(b"\r\n");
    }
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    if !bodiless {
        out.extend_from_slice(body);
    }
}

/// Fields that must not be taken from a trailer section (RFC 9110 §6.5.1): framing, routing,
/// request modifiers (controls and conditionals), authentication, response control data, how to
/// process the content, and the hop-by-hop fields — and the fields the proxy itself sets on a
/// request it forwards (`x-forwarded-for`, `x-request-id`, `x-forwarded-proto`,
/// `x-forwarded-client-cert`, the retry and tracing fields): an upstream that merges trailers
/// into the head (RFC 9110 §6.5.2 lets it when it knows the field may be) would otherwise take
/// a client's forged address or id for the one the proxy vouches for. Envoy forwards trailers
/// as they came; a sidecar's application must be able to trust what its proxy set. Lowercase.
pub const TRAILER_FORBIDDEN: [&str; 48] = [
    // framing and hop-by-hop
    "content-length",
    "transfer-encoding",
    "trailer",
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "upgrade",
    // routing and controls
    "host",
    "expect",
    "max-forwards",
    "cache-control",
    "pragma",
    "range",
    // conditionals
    "if-match",
    "if-none-match",
    "if-modified-since",
    "if-unmodified-since",
    "if-range",
    // authentication
    "authorization",
    "proxy-authorization",
    "www-authenticate",
    "proxy-authenticate",
    "authentication-info",
    "proxy-authentication-info",
    "cookie",
    "set-cookie",
    // response control data and content processing
    "age",
    "expires",
    "date",
    "location",
    "retry-after",
    "content-encoding",
    "content-type",
    "content-range",
    // set by the proxy on a forwarded request (`l7::edits`, retries, tracing)
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-client-cert",
    "x-request-id",
    "x-envoy-attempt-count",
    "grpc-timeout",
    "traceparent",
    "b3",
    "x-b3-traceid",
    "x-b3-spanid",
    "x-b3-parentspanid",
    "x-b3-sampled",
    "x-b3-flags",
];

/// Writes a trailer section without the fields in [`TRAILER_FORBIDDEN`]. `section` is a trailer
/// section as a [`super::ChunkedDecoder`] validated it, from
/// [`super::ChunkedDecoder::trailers_start`] to the end of the body: field lines, each ending
/// in CRLF, then CRLF. The final CRLF is always written.
pub fn write_trailers(out: &mut Vec<u8>, section: &[u8]) {
    let mut rest = section;
    while let Some(end) = rest.windows(2).position(|w| w == b"\r\n") {
        let line = &rest[..end];
        rest = &rest[end + 2..];
        if line.is_empty() {
            break;
        }
        let name = line.split(|&b| b == b':').next().unwrap_or(line);
        let forbidden = TRAILER_FORBIDDEN
            .iter()
            .any(|f| name.eq_ignore_ascii_case(f.as_bytes()));
        if !forbidden {
            out.extend_from_slice(line);
            out.extend_from_slice(b"\r\n");
        }
    }
    out.extend_from_slice(b"\r\n");
}

/// The reason phrase of a common status code ("" for others).
#[must_use]
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        206 => "Partial Content",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        411 => "Length Required",
        413 => "Content Too Large",
        414 => "URI Too Long",
        417 => "Expectation Failed",
        421 => "Misdirected Request",
        426 => "Upgrade Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "",
    }
}

/// The value of a forwarded field as the writer gives it: as received, or a `Content-Length`
/// normalized to its one number (`5, 5` or two `5` fields become one `5`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldValue<'b> {
    /// The value as received (or, for an added field, as given).
    Bytes(&'b [u8]),
    /// The message's content length.
    ContentLength(u64),
}

/// The fields of a forwarded response head, in the order [`write_response_head`] writes them,
/// but for the `Connection` field it writes itself (for a 101 upgrade or a close, which only
/// HTTP/1.1 has): the original fields minus the hop-by-hop and removed ones, then the added
/// ones. This is the typed form of a forwarded head, for a codec that does not write HTTP/1.1
/// text (an HTTP/2 stream gives them to its HEADERS frame); names are as received, added
/// values as given (the HTTP/1.1 writer replaces control characters in those with spaces).
pub fn for_each_response_field<'b>(
    buf: &'b [u8],
    head: &Head,
    edits: &HeadEdits<'b>,
    mut field: impl FnMut(&'b [u8], FieldValue<'b>),
) {
    visit_fields(buf, head, edits, false, &mut |name, value, _| {
        field(name, value)
    });
    for (name, value) in edits.add {
        if !name.is_empty() && name.bytes().all(super::is_tchar) {
            field(name.as_bytes(), FieldValue::Bytes(value));
        }
    }
}

/// The original fields, in order, minus the hop-by-hop and removed ones; those written as they
/// came go through `copy`.
fn write_fields(
    out: &mut Vec<u8>,
    copy: &mut Verbatim,
    buf: &[u8],
    head: &Head,
    edits: &HeadEdits<'_>,
    request: bool,
) {
    visit_fields(
        buf,
        head,
        edits,
        request,
        &mut |name, value, span| match (value, span) {
            (FieldValue::Bytes(_), Some(span)) => copy.field(out, buf, span),
            (FieldValue::Bytes(value), None) => {
                copy.flush(out, buf);
                push_parsed(out, name, value);
            }
            (FieldValue::ContentLength(n), span) => {
                let mut digits = [0u8; 20];
                let n = format_u64(n, &mut digits);
                match span {
                    Some(span) if buf[span.value.clone()] == *n => copy.field(out, buf, span),
                    _ => {
                        copy.flush(out, buf);
                        push_parsed(out, name, n);
                    }
                }
            }
        },
    );
}

/// Gives `field` the original fields a forwarded head carries, in order: all but the
/// hop-by-hop and removed ones (`Expect` not on a request), `Content-Length` once and
/// normalized, an absolute-form request's `Host` from its target. With each, the parsed line
/// it comes from when its value is that line's (the HTTP/1.1 writer may copy the line as it
/// came), `None` when the value is not the line's (an absolute-form request's `Host`). One rule
/// for the HTTP/1.1 writer ([`write_fields`]) and the typed form ([`for_each_response_field`]).
#[inline]
fn visit_fields<'b>(
    buf: &'b [u8],
    head: &Head,
    edits: &HeadEdits<'_>,
    request: bool,
    field: &mut impl FnMut(&'b [u8], FieldValue<'b>, Option<&HeaderSpan>),
) {
    let mut content_length_written = false;
    for span in &head.headers {
        let name = &buf[span.name.clone()];
        let value = &buf[span.value.clone()];
        let removed = || {
            edits
                .remove
                .iter()
                .any(|r| name.eq_ignore_ascii_case(r.as_bytes()))
        };
        match span.known {
            Known::Connection | Known::KeepAlive | Known::ProxyConnection | Known::Te => {}
            Known::Upgrade => {
                if head.upgrade && !removed() {
                    field(name, FieldValue::Bytes(value), Some(span));
                }
            }
            Known::Expect if request => {}
            Known::ContentLength => match head.content_length {
                // Once, normalized: `5, 5` or two `5` fields become one `5`.
                Some(n) if !content_length_written => {
                    content_length_written = true;
                    field(name, FieldValue::ContentLength(n), Some(span));
                }
                Some(_) => {}
                // Only a 2xx to CONNECT keeps an unparsed one (the client ignores it).
                None => field(name, FieldValue::Bytes(value), Some(span)),
            },
            Known::TransferEncoding => field(name, FieldValue::Bytes(value), Some(span)),
            Known::Host if head.form == TargetForm::Absolute => {
                if !removed() {
                    field(
                        name,
                        FieldValue::Bytes(head.host(buf).unwrap_or(value)),
                        None,
                    );
                }
            }
            Known::Host | Known::Expect => {
                if !removed() {
                    field(name, FieldValue::Bytes(value), Some(span));
                }
            }
            // `Trailer` is end-to-end (RFC 9110 §6.6.2), as Envoy forwards it.
            Known::Trailer | Known::Other => {
                let hop_by_hop = head.connection_options && named_by_connection(buf, head, name);
                if !hop_by_hop && !removed() {
                    field(name, FieldValue::Bytes(value), Some(span));
                }
            }
        }
    }
}

/// Bytes of the parsed head still to be copied to the output: consecutive lines written as they
/// came (the start line, `name: value` field lines) are copied at once, with one
/// `extend_from_slice`, rather than piece by piece. Anything written to the output other than
/// through it must come after a [`Verbatim::flush`].
#[derive(Default)]
struct Verbatim {
    run: Range<usize>,
}

impl Verbatim {
    /// Appends `bytes` (a range of `buf`) to the output.
    fn push(&mut self, out: &mut Vec<u8>, buf: &[u8], bytes: Range<usize>) {
        if !self.run.is_empty() && self.run.end == bytes.start {
            self.run.end = bytes.end;
        } else {
            self.flush(out, buf);
            self.run = bytes;
        }
    }

    /// Writes a field line as [`push_parsed`] does: its line in `buf` when that line already is
    /// `name: value\r\n`, else the line rebuilt.
    fn field(&mut self, out: &mut Vec<u8>, buf: &[u8], span: &HeaderSpan) {
        let line_end = span.value.end + 2;
        let as_written = span.value.start == span.name.end + 2
            && buf[span.name.end..span.value.start] == *b": "
            && buf.get(span.value.end..line_end) == Some(b"\r\n");
        if as_written {
            self.push(out, buf, span.name.start..line_end);
        } else {
            self.flush(out, buf);
            push_parsed(out, &buf[span.name.clone()], &buf[span.value.clone()]);
        }
    }

    /// Copies what is pending.
    fn flush(&mut self, out: &mut Vec<u8>, buf: &[u8]) {
        if !self.run.is_empty() {
            out.extend_from_slice(&buf[self.run.clone()]);
            self.run = 0..0;
        }
    }
}

/// Whether a `Connection` field lists `name`.
fn named_by_connection(buf: &[u8], head: &Head, name: &[u8]) -> bool {
    head.header_values(buf, "connection")
        .any(|v| list_elements(v).any(|token| token.eq_ignore_ascii_case(name)))
}

fn write_connection(out: &mut Vec<u8>, upgrade: bool, close: bool) {
    match (upgrade, close) {
        (true, true) => out.extend_from_slice(b"connection: upgrade, close\r\n"),
        (true, false) => out.extend_from_slice(b"connection: upgrade\r\n"),
        (false, true) => out.extend_from_slice(b"connection: close\r\n"),
        (false, false) => {}
    }
}

fn write_added(out: &mut Vec<u8>, edits: &HeadEdits<'_>) {
    for (name, value) in edits.add {
        let token = !name.is_empty() && name.bytes().all(super::is_tchar);
        debug_assert!(token, "added field name {name:?} is not a token");
        if token {
            push_field(out, name.as_bytes(), value);
        }
    }
}

/// `name: value\r\n` for a field of a parsed head (the parser rejected control characters).
fn push_parsed(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// `name: value\r\n`, with control characters in the value (the caller's values) replaced by
/// spaces.
fn push_field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    if super::find_value_ctl(value).is_some() {
        out.extend(
            value
                .iter()
                .map(|&b| if super::is_value_ctl(b) { b' ' } else { b }),
        );
    } else {
        out.extend_from_slice(value);
    }
    out.extend_from_slice(b"\r\n");
}

/// Three digits (a status out of 100..=999 is clamped, so the line stays well-formed).
fn push_status(out: &mut Vec<u8>, status: u16) {
    out.extend_from_slice(&status_digits(status));
}

fn status_digits(status: u16) -> [u8; 3] {
    let s = status.clamp(100, 999);
    [
        b'0' + (s / 100) as u8,
        b'0' + (s / 10 % 10) as u8,
        b'0' + (s % 10) as u8,
    ]
}

fn push_u64(out: &mut Vec<u8>, n: u64) {
    let mut digits = [0u8; 20];
    out.extend_from_slice(format_u64(n, &mut digits));
}

/// `n` in decimal, in the end of `digits`.
fn format_u64(mut n: u64, digits: &mut [u8; 20]) -> &[u8] {
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    &digits[i..]
}
