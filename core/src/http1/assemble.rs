//! Request heads written rather than parsed. A codec that receives a request's parts already
//! separated (HTTP/2: the HPACK-decoded pseudo-header fields and fields) writes them with a
//! [`RequestHeadWriter`] into a buffer, in the layout of an HTTP/1.1 head, and the writer
//! records in a [`Head`] what [`parse_request`](super::parse_request) would have found in those
//! bytes — the method, the target and its form, path and query, each field's span and what the
//! codec knows its name as, the host, the content-length, the framing — without reading them
//! back. A `Head` is the request head every codec hands to the request path: HTTP/1.1 by
//! parsing, HTTP/2 by writing.
//!
//! The layout is HTTP/1.1's so that every reader of a `Head` works on it unchanged, the
//! forwarding writers too (they copy field lines as they are).
//!
//! The writer checks nothing: its caller has (`http2::request_head` holds an HTTP/2 request to
//! RFC 9113 §8 and to the [`Limits`](super::Limits) before it writes). What it may be given: a
//! token method, an origin-form target or `*`, field names that are tokens and values without
//! a control character (but HTAB) or surrounding whitespace, one `host`, `content-length`
//! values that are equal decimal numbers, no `connection` nor `upgrade` field (the head keeps
//! its connection and upgrades nothing), and a `transfer-encoding` only as exactly `chunked`
//! without a `content-length`.
//!
//! Invariant (property-tested and fuzzed against the parser in `http2::request_head`): for
//! such parts, the written head equals, span by span, the parse of the same bytes.

use std::ops::Range;

use super::parse::{Scan, parse_decimal, response_semantics};
use super::{
    BodyFraming, Head, HeaderSpan, HttpError, Known, Limits, MAX_HEADERS, Message, Method,
    TargetForm, Version, find_value_ctl, is_tchar,
};

/// Writes one request head into a buffer and records it in a [`Head`] (see the module doc).
///
/// The head starts where the buffer ended when [`RequestHeadWriter::start`] was called; the
/// `Head`'s spans are relative to that point: read it with `&out[start..]`.
pub struct RequestHeadWriter<'a> {
    out: &'a mut Vec<u8>,
    start: usize,
    head: &'a mut Head,
    chunked: bool,
}

impl<'a> RequestHeadWriter<'a> {
    /// Starts a request head at the end of `out` with its request line, `method target
    /// HTTP/1.1`. `target` is origin-form (`/path?query`) or, for `OPTIONS`, `*`.
    pub fn start(out: &'a mut Vec<u8>, head: &'a mut Head, method: &[u8], target: &[u8]) -> Self {
        head.reset(Message::Request);
        let start = out.len();
        head.method = Method::from_token(method);
        head.method_span = 0..method.len();
        out.extend_from_slice(method);
        out.push(b' ');
        let at = out.len() - start;
        out.extend_from_slice(target);
        out.extend_from_slice(b" HTTP/1.1\r\n");
        head.version = Version::Http11;
        head.target = at..at + target.len();
        if target == b"*" {
            head.form = TargetForm::Asterisk;
            head.path = head.target.clone();
        } else {
            debug_assert_eq!(target.first(), Some(&b'/'), "an origin-form target");
            head.form = TargetForm::Origin;
            match target.iter().position(|&b| b == b'?') {
                Some(q) => {
                    head.path = at..at + q;
                    head.query = Some(at + q + 1..head.target.end);
                }
                None => head.path = head.target.clone(),
            }
        }
        RequestHeadWriter {
            out,
            start,
            head,
            chunked: false,
        }
    }

    /// Appends a field line, `name: value`.
    pub fn field(&mut self, name: &[u8], value: &[u8]) {
        self.field_of(name, std::iter::once(value), b"");
    }

    /// Appends one field line whose value is `parts` joined by `separator` (HTTP/2's cookie
    /// crumbs, RFC 9113 §8.2.3).
    pub fn field_of<'v>(
        &mut self,
        name: &[u8],
        parts: impl Iterator<Item = &'v [u8]>,
        separator: &[u8],
    ) {
        let (span, value) = write_field_line(self.out, self.start, name, parts, separator);
        let value = &self.out[self.start + value.start..self.start + value.end];
        match span.known {
            Known::Host => {
                debug_assert!(self.head.host.is_none(), "one host");
                self.head.host = Some(span.value.clone());
            }
            Known::ContentLength => {
                let n = parse_decimal(value);
                debug_assert!(n.is_some(), "a decimal content-length");
                debug_assert!(self.head.content_length.is_none_or(|m| Some(m) == n));
                self.head.content_length = n;
            }
            Known::TransferEncoding => {
                debug_assert_eq!(value, b"chunked", "only a single chunked coding");
                self.chunked = true;
            }
            Known::Expect => {
                self.head.expect_continue |= value.eq_ignore_ascii_case(b"100-continue");
            }
            Known::Connection | Known::Upgrade => {
                debug_assert!(false, "a written head has no connection management fields");
            }
            Known::KeepAlive
            | Known::ProxyConnection
            | Known::Te
            | Known::Trailer
            | Known::Other => {}
        }
        self.head.headers.push(span);
    }

    /// The head's bytes so far.
    #[must_use]
    pub fn len(&self) -> usize {
        self.out.len() - self.start
    }

    /// Whether nothing was written (never, once started).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The field lines so far.
    #[must_use]
    pub fn fields(&self) -> usize {
        self.head.headers.len()
    }

    /// Ends the head with its empty line and sets what depends on all of it (the framing, the
    /// connection semantics). Returns the head's length.
    pub fn finish(self) -> usize {
        debug_assert!(!(self.chunked && self.head.content_length.is_some()));
        self.out.extend_from_slice(b"\r\n");
        let head = self.head;
        head.head_len = self.out.len() - self.start;
        head.framing = match (self.chunked, head.content_length) {
            (true, _) => BodyFraming::Chunked,
            (false, Some(n)) => BodyFraming::ContentLength(n),
            (false, None) => BodyFraming::None,
        };
        head.keep_alive = true;
        head.upgrade = false;
        head.connection_options = false;
        head.head_len
    }

    /// Takes back what was written: `out` is as it was before [`RequestHeadWriter::start`]
    /// (the `Head` holds nothing meaningful).
    pub fn abandon(self) {
        self.out.truncate(self.start);
    }
}

/// Appends the field line `name: value` (the value `parts` joined by `separator`) to `out`,
/// and returns its spans relative to `start` as the parser records them, with the value's
/// bytes as written (trimmed, relative to `start`; an empty value's span is pinned after the
/// name but its bytes are empty either way).
fn write_field_line<'v>(
    out: &mut Vec<u8>,
    start: usize,
    name: &[u8],
    parts: impl Iterator<Item = &'v [u8]>,
    separator: &[u8],
) -> (HeaderSpan, Range<usize>) {
    let name_at = out.len() - start;
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    let mut value_at = out.len() - start;
    for (i, part) in parts.enumerate() {
        if i > 0 {
            out.extend_from_slice(separator);
        }
        out.extend_from_slice(part);
    }
    let mut value_end = out.len() - start;
    out.extend_from_slice(b"\r\n");
    // As the parser does: the value's span leaves out whitespace around it (an HTTP/2
    // cookie whose last crumb is empty is written "a=1; ", and parsed as "a=1;").
    let written = &out[start..];
    while value_at < value_end && matches!(written[value_at], b' ' | b'\t') {
        value_at += 1;
    }
    while value_end > value_at && matches!(written[value_end - 1], b' ' | b'\t') {
        value_end -= 1;
    }
    let name_span = name_at..name_at + name.len();
    // As the parser does: an empty value is pinned after the name.
    let value_span = if value_end == value_at {
        name_span.end..name_span.end
    } else {
        value_at..value_end
    };
    let span = HeaderSpan {
        name: name_span,
        value: value_span,
        known: Known::of(name),
    };
    (span, value_at..value_end)
}

/// Writes one response head into a buffer and records it in a [`Head`], as
/// [`parse_response`](super::parse_response) would have read those bytes (see the module doc):
/// the status line `HTTP/1.1 code reason`, then each field line, then the empty line.
///
/// What it may be given: a status of three digits, a reason phrase without control
/// characters, field names that are tokens, values without CR or LF (what an HTTP/2 library
/// hands over). Within that, it refuses what the parse refuses, with the parse's error: a control
/// character in a value, more fields than the limit, a head longer than the limit, a status
/// outside 100..=599, then the framing faults (conflicting or malformed `content-length`,
/// `transfer-encoding` with it...) by the same rule as the parse ([`response_semantics`]).
/// Outside it (a name that is not a token, a CR or LF in a value) it refuses where a parse of
/// the bytes might not: it is never less strict.
///
/// The head starts where the buffer ended when [`ResponseHeadWriter::start`] was called; the
/// `Head`'s spans are relative to that point: read it with `&out[start..]`.
pub struct ResponseHeadWriter<'a> {
    out: &'a mut Vec<u8>,
    start: usize,
    head: &'a mut Head,
    limits: Limits,
    /// What the field lines say (the parse's own fold).
    scan: Scan,
    /// The first fault a parse of the bytes would stop at, with how many bytes of the head it
    /// needs to see it (a fault beyond `max_head_bytes` is never seen: the head is too large).
    fault: Option<(usize, HttpError)>,
}

impl<'a> ResponseHeadWriter<'a> {
    /// Starts a response head at the end of `out` with its status line, `HTTP/1.1 status
    /// reason`; `limits` are the ones the parse would apply.
    pub fn start(
        out: &'a mut Vec<u8>,
        head: &'a mut Head,
        status: u16,
        reason: &[u8],
        limits: &Limits,
    ) -> Self {
        head.reset(Message::Response);
        let start = out.len();
        out.extend_from_slice(b"HTTP/1.1 ");
        let digits = status.clamp(100, 999);
        out.extend_from_slice(&[
            b'0' + (digits / 100) as u8,
            b'0' + (digits / 10 % 10) as u8,
            b'0' + (digits % 10) as u8,
            b' ',
        ]);
        let at = out.len() - start;
        out.extend_from_slice(reason);
        out.extend_from_slice(b"\r\n");
        head.version = Version::Http11;
        head.status = status;
        head.target = at..at + reason.len();
        // Outside the contract: refused rather than written as something else.
        let fault = (digits != status || find_value_ctl(reason).is_some())
            .then_some((1, HttpError::InvalidStatusLine));
        ResponseHeadWriter {
            out,
            start,
            head,
            limits: *limits,
            scan: Scan::default(),
            fault,
        }
    }

    /// Appends a field line, `name: value`.
    pub fn field(&mut self, name: &[u8], value: &[u8]) {
        let line_at = self.out.len() - self.start;
        let (span, value_at) =
            write_field_line(self.out, self.start, name, [value].into_iter(), b"");
        if self.fault.is_none() {
            const MSG: Message = Message::Response;
            // Where a parse would stop: the first control character of the value (its
            // position in the line as written), else one field line more than the limit
            // (seen at its end).
            let value_start = line_at + name.len() + 2;
            let line_end = self.out.len() - self.start;
            self.fault = if name.is_empty() || !name.iter().all(|&b| is_tchar(b)) {
                Some((line_at + 1, HttpError::InvalidHeaderName { msg: MSG }))
            } else if let Some(byte) = find_value_ctl(value) {
                let i = value.iter().position(|&b| b == byte).unwrap_or(0);
                Some((
                    value_start + i + 1,
                    HttpError::ControlCharacter { msg: MSG, byte },
                ))
            } else if self.head.headers.len() == self.limits.max_headers.min(MAX_HEADERS) {
                Some((
                    line_end,
                    HttpError::TooManyHeaders {
                        msg: MSG,
                        limit: self.limits.max_headers.min(MAX_HEADERS),
                    },
                ))
            } else {
                None
            };
        }
        let value = &self.out[self.start + value_at.start..self.start + value_at.end];
        self.scan.add(span.known, value, &span.value);
        self.head.headers.push(span);
    }

    /// Ends the head with its empty line and sets what depends on all of it (the framing, the
    /// content length, the connection semantics: `request_method` is the method of the request
    /// it answers, as for the parse). Returns the head's length; on an error (the parse's),
    /// `out` is left as it was before [`ResponseHeadWriter::start`].
    pub fn finish(self, request_method: Method) -> Result<usize, HttpError> {
        self.out.extend_from_slice(b"\r\n");
        let head_len = self.out.len() - self.start;
        let max = self.limits.max_head_bytes;
        let refused = match self.fault {
            Some((needed, e)) if needed <= max => Some(e),
            _ if head_len > max => Some(HttpError::HeadTooLarge {
                msg: Message::Response,
                limit: max,
            }),
            _ if !(100..=599).contains(&self.head.status) => Some(HttpError::InvalidStatusLine),
            _ => response_semantics(self.head, &self.scan, request_method).err(),
        };
        if let Some(e) = refused {
            self.out.truncate(self.start);
            return Err(e);
        }
        self.head.head_len = head_len;
        Ok(head_len)
    }
}
