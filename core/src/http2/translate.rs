//! HTTP/2 ↔ HTTP/1.1 message heads, for a proxy that takes HTTP/2 from its clients and forwards
//! over HTTP/1.1 (RFC 9113 §8, RFC 9110 §7.6.1).
//!
//! - [`request_to_http1`] checks an HTTP/2 request head (pseudo-header fields and fields, as the
//!   driver received them) and writes the HTTP/1.1 request head that carries it upstream: the
//!   request line from `:method` and `:path`, `Host` from `:authority`, the fields as they came
//!   (the `cookie` crumbs joined back into one field), and the body framing HTTP/1.1 needs. A
//!   malformed request (§8.1.1) is refused with a [`TranslateError`] naming what is wrong; none of
//!   it goes upstream. The runtime writes the same head without this text step
//!   (`super::request_head`, which shares the checks); this form is what that one is tested
//!   against.
//! - [`response_fields`] turns the fields of an HTTP/1.1 response head into HTTP/2 response
//!   fields: the connection-specific ones (and those `Connection` names) are dropped.
//! - [`ContentLengthCheck`] holds a request's DATA to its declared `content-length` (§8.1.1: a
//!   mismatch makes the request malformed).
//!
//! Invariants (property-tested and fuzzed): an accepted request's HTTP/1.1 head parses with the
//! HTTP/1 codec, with the same method, path and host and the same fields; no translated head
//! carries a connection-specific field, a bare CR or LF, or a second `Host`.

use std::fmt;

/// Fields that are specific to one HTTP/1.1 connection: malformed in HTTP/2 (RFC 9113 §8.2.2),
/// dropped from an HTTP/1.1 response forwarded over HTTP/2.
const CONNECTION_SPECIFIC: [&[u8]; 5] = [
    b"connection",
    b"keep-alive",
    b"proxy-connection",
    b"transfer-encoding",
    b"upgrade",
];

/// Whether `name` (lowercase, as HTTP/2 carries it) is a connection-specific field.
#[must_use]
pub fn is_connection_specific(name: &[u8]) -> bool {
    CONNECTION_SPECIFIC
        .iter()
        .any(|c| name.eq_ignore_ascii_case(c))
}

/// Why an HTTP/2 request cannot be forwarded. [`TranslateError::status`] is the answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TranslateError {
    /// No `:method`, or an invalid one.
    BadMethod,
    /// No `:path`, or one that is not an origin-form path and query (or `*`): empty, not
    /// starting with `/`, a fragment, a byte outside visible ASCII.
    BadPath,
    /// `CONNECT` (tunnels over HTTP/2 are not proxied yet).
    Connect,
    /// A connection-specific field (RFC 9113 §8.2.2), by its index in the field list.
    ConnectionSpecific(usize),
    /// `te` with a value other than `trailers`.
    BadTe,
    /// A field name that is not a lowercase token, or a pseudo-header field among the fields.
    BadFieldName(usize),
    /// A field value with CR, LF, NUL or surrounding whitespace.
    BadFieldValue(usize),
    /// `:authority` and `Host` disagree, or there is more than one `Host`.
    HostMismatch,
    /// An invalid `:authority` or `Host` (empty, or characters a host cannot hold).
    BadAuthority,
    /// An invalid `content-length`, differing ones, or one that contradicts an empty body.
    BadContentLength,
}

impl TranslateError {
    /// The status answered: 501 for `CONNECT`, 400 otherwise (a malformed request).
    #[must_use]
    pub fn status(self) -> u16 {
        match self {
            TranslateError::Connect => 501,
            _ => 400,
        }
    }
}

impl fmt::Display for TranslateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TranslateError::BadMethod => f.write_str("missing or invalid :method"),
            TranslateError::BadPath => f.write_str("missing or invalid :path"),
            TranslateError::Connect => {
                f.write_str("CONNECT over HTTP/2 is not supported by this proxy")
            }
            TranslateError::ConnectionSpecific(i) => {
                write!(
                    f,
                    "connection-specific header field (field #{i}) is malformed in HTTP/2"
                )
            }
            TranslateError::BadTe => f.write_str("te may only be \"trailers\" in HTTP/2"),
            TranslateError::BadFieldName(i) => write!(f, "invalid header field name (field #{i})"),
            TranslateError::BadFieldValue(i) => {
                write!(f, "invalid header field value (field #{i})")
            }
            TranslateError::HostMismatch => {
                f.write_str(":authority and host disagree, or more than one host")
            }
            TranslateError::BadAuthority => f.write_str("invalid :authority or host"),
            TranslateError::BadContentLength => f.write_str("invalid content-length"),
        }
    }
}

impl std::error::Error for TranslateError {}

/// The HTTP/2 request head as received: pseudo-header fields and the other fields in order
/// (names lowercase, as HTTP/2 requires).
#[derive(Clone, Copy, Debug)]
pub struct RequestHead<'a> {
    /// `:method`.
    pub method: &'a [u8],
    /// `:authority`, if present.
    pub authority: Option<&'a [u8]>,
    /// `:path`, if present.
    pub path: Option<&'a [u8]>,
    /// The fields (not the pseudo-header fields).
    pub fields: &'a [(&'a [u8], &'a [u8])],
    /// The HEADERS frame ended the stream: the request has no body.
    pub end_stream: bool,
}

/// How the translated HTTP/1.1 request frames its body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyLength {
    /// No body (the stream ended with the head).
    None,
    /// A `content-length` body: the DATA of the stream, which must add up to it.
    Length(u64),
    /// A body of unknown length, sent chunked (`transfer-encoding: chunked` was added); DATA
    /// frames become chunks, HTTP/2 trailers the chunked trailer section.
    Chunked,
}

/// Checks an HTTP/2 request head and appends the HTTP/1.1 request head that forwards it to
/// `out` (request line, `host` first, the fields, `transfer-encoding: chunked` for a body of
/// unknown length, the blank line). On an error, `out` is left as it was.
pub fn request_to_http1(
    out: &mut Vec<u8>,
    head: &RequestHead<'_>,
) -> Result<BodyLength, TranslateError> {
    let Checked { path, host, body } = check(head)?;
    out.extend_from_slice(head.method);
    out.push(b' ');
    out.extend_from_slice(path);
    out.extend_from_slice(b" HTTP/1.1\r\nhost: ");
    out.extend_from_slice(host);
    out.extend_from_slice(b"\r\n");
    let mut cookies = 0;
    for &(name, value) in head.fields {
        match name {
            b"host" => {}
            // HTTP/2 may split a cookie into crumbs; HTTP/1.1 carries one field (§8.2.3).
            b"cookie" => cookies += 1,
            _ => push_field(out, name, value),
        }
    }
    if cookies > 0 {
        out.extend_from_slice(b"cookie: ");
        let mut first = true;
        for &(name, value) in head.fields {
            let crumb = cookie_crumb(value);
            if name == b"cookie" && !crumb.is_empty() {
                if !first {
                    out.extend_from_slice(b"; ");
                }
                first = false;
                out.extend_from_slice(crumb);
            }
        }
        out.extend_from_slice(b"\r\n");
    }
    if body == BodyLength::Chunked {
        out.extend_from_slice(b"transfer-encoding: chunked\r\n");
    }
    out.extend_from_slice(b"\r\n");
    Ok(body)
}

/// A `cookie` field's value as it is joined with the others into one HTTP/1.1 `cookie` field
/// (RFC 9113 §8.2.3: with `; ` between them): without the `;`, spaces and tabs at its edges,
/// so that the joined value is a well-formed cookie-string (RFC 6265 §4.2.1) — no `a=1; ; b=2`
/// from an empty crumb or `a=1;; b=2` from one ending in `;`, no trailing `; `. A crumb left
/// empty is skipped. Envoy joins the values as they came; an application's cookie parser may
/// refuse the empty pairs that gives, and no cookie-pair is lost by dropping them.
#[must_use]
pub(super) fn cookie_crumb(value: &[u8]) -> &[u8] {
    let edge = |b: &u8| matches!(b, b';' | b' ' | b'\t');
    let start = value.iter().position(|b| !edge(b)).unwrap_or(value.len());
    let end = value
        .iter()
        .rposition(|b| !edge(b))
        .map_or(start, |i| i + 1);
    &value[start..end]
}

/// What [`check`] found in a request head it accepts.
pub(super) struct Checked<'a> {
    /// `:path`: origin-form, or `*` for `OPTIONS`.
    pub(super) path: &'a [u8],
    /// `:authority`, else the `host` field.
    pub(super) host: &'a [u8],
    /// How its body is framed.
    pub(super) body: BodyLength,
}

/// Holds an HTTP/2 request head to RFC 9113 §8.1.1 and §8.2 (see [`TranslateError`]), in a
/// fixed order (method, path, each field in order, the authority, the framing), so that one
/// head always gets the same error.
pub(super) fn check<'a>(head: &RequestHead<'a>) -> Result<Checked<'a>, TranslateError> {
    if head.method.is_empty() || !head.method.iter().all(|&b| is_tchar(b)) {
        return Err(TranslateError::BadMethod);
    }
    if head.method == b"CONNECT" {
        return Err(TranslateError::Connect);
    }
    let path = match head.path {
        // Visible ASCII only, as an HTTP/1.1 request-target; a fragment is never sent.
        Some(p) if !p.is_empty() && p.iter().all(|&b| (0x21..0x7f).contains(&b) && b != b'#') => p,
        _ => return Err(TranslateError::BadPath),
    };
    // `*` is the target of a server-wide OPTIONS only (RFC 9113 §8.3.1).
    let asterisk = path == b"*" && head.method == b"OPTIONS";
    if !asterisk && path[0] != b'/' {
        return Err(TranslateError::BadPath);
    }
    let mut host: Option<&[u8]> = None;
    let mut content_length: Option<u64> = None;
    for (i, &(name, value)) in head.fields.iter().enumerate() {
        if name.is_empty() || !name.iter().all(|&b| is_tchar(b) && !b.is_ascii_uppercase()) {
            return Err(TranslateError::BadFieldName(i));
        }
        if !valid_value(value) {
            return Err(TranslateError::BadFieldValue(i));
        }
        if is_connection_specific(name) {
            return Err(TranslateError::ConnectionSpecific(i));
        }
        match name {
            b"te" if value != b"trailers" => return Err(TranslateError::BadTe),
            b"host" => {
                if host.is_some() {
                    return Err(TranslateError::HostMismatch);
                }
                host = Some(value);
            }
            b"content-length" => {
                let n = parse_content_length(value).ok_or(TranslateError::BadContentLength)?;
                if content_length.is_some_and(|m| m != n) {
                    return Err(TranslateError::BadContentLength);
                }
                content_length = Some(n);
            }
            _ => {}
        }
    }
    let host = match (head.authority, host) {
        (Some(a), Some(h)) if !a.eq_ignore_ascii_case(h) => {
            return Err(TranslateError::HostMismatch);
        }
        (Some(a), _) => a,
        (None, Some(h)) => h,
        (None, None) => return Err(TranslateError::BadAuthority),
    };
    if !valid_authority(host) {
        return Err(TranslateError::BadAuthority);
    }
    let body = match (head.end_stream, content_length) {
        (true, Some(n)) if n != 0 => return Err(TranslateError::BadContentLength),
        (true, _) => BodyLength::None,
        (false, Some(n)) => BodyLength::Length(n),
        (false, None) => BodyLength::Chunked,
    };
    Ok(Checked { path, host, body })
}

fn push_field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// The fields of an HTTP/1.1 response head that an HTTP/2 response carries, in order: all but
/// the connection-specific ones and those the response's `Connection` field lists.
pub fn response_fields<'a, I>(fields: I) -> impl Iterator<Item = (&'a [u8], &'a [u8])>
where
    I: Iterator<Item = (&'a [u8], &'a [u8])> + Clone,
{
    let all = fields.clone();
    // The usual response has no `Connection` field: then no field needs the inner scan.
    let listed = all
        .clone()
        .any(|(n, _)| n.eq_ignore_ascii_case(b"connection"));
    let named_by_connection = move |name: &[u8]| {
        listed
            && all.clone().any(|(n, v)| {
                n.eq_ignore_ascii_case(b"connection")
                    && v.split(|&b| b == b',')
                        .any(|token| trim(token).eq_ignore_ascii_case(name))
            })
    };
    fields.filter(move |&(name, _)| !is_connection_specific(name) && !named_by_connection(name))
}

/// The fields of an HTTP/1.1 request head that its HTTP/2 form carries as regular fields, in
/// order: [`response_fields`]' filter, and without `host` (which becomes `:authority`) and `te`
/// unless it is exactly `trailers` (the only `te` HTTP/2 allows, RFC 9113 §8.2.2; gRPC needs
/// it).
pub fn request_fields<'a, I>(fields: I) -> impl Iterator<Item = (&'a [u8], &'a [u8])>
where
    I: Iterator<Item = (&'a [u8], &'a [u8])> + Clone,
{
    response_fields(fields).filter(|&(name, value)| {
        !name.eq_ignore_ascii_case(b"host")
            && (!name.eq_ignore_ascii_case(b"te") || trim(value).eq_ignore_ascii_case(b"trailers"))
    })
}

/// Whether a `te` value names `trailers` (the client accepts trailers: an HTTP/2 request
/// carries `te: trailers` on).
#[must_use]
pub fn te_wants_trailers(value: &[u8]) -> bool {
    value.split(|&b| b == b',').any(|token| {
        let name = token.split(|&b| b == b';').next().unwrap_or(token);
        trim(name).eq_ignore_ascii_case(b"trailers")
    })
}

/// A request's DATA held to its `content-length` (RFC 9113 §8.1.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ContentLengthCheck {
    declared: Option<u64>,
    seen: u64,
}

impl ContentLengthCheck {
    /// For a body framed as `body`.
    #[must_use]
    pub fn new(body: BodyLength) -> Self {
        ContentLengthCheck {
            declared: match body {
                BodyLength::None => Some(0),
                BodyLength::Length(n) => Some(n),
                BodyLength::Chunked => None,
            },
            seen: 0,
        }
    }

    /// `n` more bytes of DATA arrived; an error when they exceed the declared length.
    pub fn data(&mut self, n: u64) -> Result<(), TranslateError> {
        self.seen = self.seen.saturating_add(n);
        match self.declared {
            Some(d) if self.seen > d => Err(TranslateError::BadContentLength),
            _ => Ok(()),
        }
    }

    /// The stream ended; an error when the DATA fell short of the declared length.
    pub fn end(&self) -> Result<(), TranslateError> {
        match self.declared {
            Some(d) if self.seen != d => Err(TranslateError::BadContentLength),
            _ => Ok(()),
        }
    }

    /// DATA bytes seen so far.
    #[must_use]
    pub fn seen(&self) -> u64 {
        self.seen
    }
}

fn parse_content_length(v: &[u8]) -> Option<u64> {
    if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    v.iter().try_fold(0u64, |n, &d| {
        n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })
}

/// A field value HTTP/2 may carry and HTTP/1.1 can write: no CR, LF or NUL (nor another
/// control but HTAB), no leading or trailing whitespace (RFC 9113 §8.2.1).
fn valid_value(v: &[u8]) -> bool {
    let edge = |b: Option<&u8>| !matches!(b, Some(b' ' | b'\t'));
    edge(v.first()) && edge(v.last()) && v.iter().all(|&b| b >= 0x20 && b != 0x7f || b == b'\t')
}

/// A host (`reg-name`, IPv4, `[IPv6]`) with an optional port: the characters RFC 3986 allows
/// there, not empty, no userinfo.
fn valid_authority(a: &[u8]) -> bool {
    !a.is_empty()
        && a.iter().all(|&b| {
            b.is_ascii_alphanumeric()
                || matches!(
                    b,
                    b'-' | b'.'
                        | b'_'
                        | b'~'
                        | b'%'
                        | b'!'
                        | b'$'
                        | b'&'
                        | b'\''
                        | b'('
                        | b')'
                        | b'*'
                        | b'+'
                        | b','
                        | b';'
                        | b'='
                        | b':'
                        | b'['
                        | b']'
                )
        })
}

fn trim(s: &[u8]) -> &[u8] {
    let start = s
        .iter()
        .position(|&b| b != b' ' && b != b'\t')
        .unwrap_or(s.len());
    let end = s
        .iter()
        .rposition(|&b| b != b' ' && b != b'\t')
        .map_or(start, |e| e + 1);
    &s[start..end]
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'!' | b'#'
                | b'$'
                | b'%'
                | b'&'
                | b'\''
                | b'*'
                | b'+'
                | b'-'
                | b'.'
                | b'^'
                | b'_'
                | b'`'
                | b'|'
                | b'~'
        )
}

#[cfg(test)]
mod tests;
