//! The HTTP/1.1 codec (RFC 9112), sans-IO, written for a proxy.
//!
//! The codec owns three things, and nothing else: parsing a message head out of a caller-owned
//! buffer ([`parse_request`], [`parse_response`]), scanning a chunked body as it streams through
//! ([`ChunkedDecoder`]), and writing heads to forward or to answer locally
//! ([`write_request_head`], [`write_response_head`], [`write_local_response`]). It never reads
//! or writes a socket, never allocates while parsing (a [`Head`] is reused across the requests of
//! a connection and its `Vec` keeps its capacity), and never copies a body: its job is to say
//! exactly where each body, and each chunk of a chunked one, ends (the runtime forwards a
//! response body as it came, and frames a chunked request body's chunks again).
//!
//! ## The API at a glance
//!
//! ```text
//! parse_request(buf, &Limits, &mut Head) -> Result<ParseStatus, HttpError>
//! parse_response(buf, request_method, &Limits, &mut Head) -> Result<ParseStatus, HttpError>
//!     ParseStatus::{Complete, Partial}; HttpError::status() → 400 / 431 (request), 502 (response)
//! Head: method() method_bytes(buf) status() reason(buf) target(buf) target_form() path(buf)
//!       query(buf) version() header(buf, name) header_values(buf, name) headers(buf)
//!       header_spans() head_len() framing() keep_alive() expect_continue() upgrade()
//!       host(buf) content_length() is_informational()
//! ChunkedDecoder::new(max_trailer_bytes).feed(input) -> Result<Chunked, HttpError>
//!     Chunked::{NeedMore { consumed }, Done { consumed }}; payload_bytes(); is_done();
//!     trailers_start()
//! write_trailers(out, section)   (a trailer section without TRAILER_FORBIDDEN fields)
//! write_request_head(out, buf, &Head, &HeadEdits)
//! write_response_head(out, buf, &Head, &HeadEdits)
//! HeadEdits { path, remove, add, force_close, version }   (HeadEdits::NONE: no edit)
//! write_local_response(out, status, extra_headers, body, close)    reason_phrase(status)
//! ```
//!
//! Every accessor that returns bytes takes the buffer the head was parsed from: a [`Head`] holds
//! offsets, never borrows, so the driver can keep it next to its read buffer. Its contents are
//! meaningful only after `Ok(Complete)`.
//!
//! ## How a driver uses it
//!
//! ```text
//!  read bytes into buf ──▶ parse_request(buf, limits, &mut head)
//!        ▲                    │ Ok(Partial)   → read more (the same call parses from scratch;
//!        │                    │                 the cost is bounded by max_head_bytes)
//!        │                    │ Err(e)        → answer e.status() (400/431) with
//!        │                    │                 write_local_response(.., close = true), close
//!        │                    │ Ok(Complete)  → head.head_len() bytes are the head
//!        │                    ▼
//!        │     write_request_head(out, buf, &head, &edits) → send upstream
//!        │     body per head.framing():
//!        │        None              → nothing
//!        │        ContentLength(n)  → forward exactly n bytes
//!        │        Chunked           → feed bytes to a ChunkedDecoder, forward `consumed` of them
//!        │                            until Done { consumed }
//!        │     the rest of buf (after head_len + body) is the next, pipelined request
//!        └──────────────────────── if head.keep_alive()
//! ```
//!
//! Responses go the same way with [`parse_response`], which needs the request's method (a
//! response to `HEAD` has no body; a 2xx answer to `CONNECT` is a tunnel). A 1xx response is
//! interim: forward it, then parse the next response for the same request. A response with
//! [`BodyFraming::CloseDelimited`] ends when the upstream closes; [`write_response_head`] then
//! writes `connection: close`, as the downstream connection has to close after it too.
//!
//! When [`Head::expect_continue`] holds, the driver answers `100 Continue` itself
//! (`write_local_response(out, 100, &[], b"", false)`) before it waits for the body, since the
//! writer drops `Expect`. A 101 answer to a request with [`Head::upgrade`], or a 2xx answer to
//! `CONNECT`, turns both connections into a byte tunnel after the response head.
//!
//! ## Strictness (request smuggling)
//!
//! A proxy that frames a message differently from the server behind it lets one request hide
//! inside another. The parser therefore accepts only what has one reading, and rejects
//! (400 for requests; an error the runtime turns into 502 for responses):
//!
//! - both `Content-Length` and `Transfer-Encoding`;
//! - in a request, any transfer coding other than exactly one `chunked` (`gzip, chunked`,
//!   `chunked, chunked`, `identity`, `chunked;x=y`, ...), and any `Transfer-Encoding` in an
//!   HTTP/1.0 message; in a response, `chunked` anywhere but last;
//! - a malformed `Content-Length` (non-digits, a sign, empty, an empty list element, more than
//!   `u64::MAX`), or differing values (`5, 5` or two equal fields are accepted as 5);
//! - obs-fold, whitespace between a field name and its colon, a line ending that is not CRLF
//!   (a bare LF or a bare CR), a control character in a field value;
//! - in a request: a missing `Host` (HTTP/1.1), more than one `Host`, a `Host` that is not an
//!   authority; a target that is not origin-form or absolute-form (`*` only for `OPTIONS`,
//!   authority-form only, and always, for `CONNECT`), or that holds a byte outside
//!   `%x21-7E` or a `#`;
//! - a head longer than [`Limits::max_head_bytes`] (also while still incomplete) or with more
//!   than [`Limits::max_headers`] fields: 431.
//!
//! The checks run in a fixed order, so one input always gives the same error: line syntax, control
//! characters included (the first bad byte; a bare LF once the head is complete), then the
//! target, then `Host`, then framing (both CL and TE, TE in HTTP/1.0, the transfer coding, then
//! `Content-Length`).
//!
//! ## Forwarding (the writers)
//!
//! The writers copy the start line (with [`HeadEdits::path`] and [`HeadEdits::version`] applied)
//! and the original field lines in order, minus the hop-by-hop ones: `Connection`, `Keep-Alive`,
//! `Proxy-Connection`, `TE`, `Trailer`, `Upgrade`, and every field a `Connection` header names;
//! `Expect` is dropped from requests (the proxy answers `100-continue` itself). They keep
//! `Transfer-Encoding` (the body is forwarded chunked, as it came), and when [`Head::upgrade`]
//! holds they keep `Upgrade` and write `connection: upgrade`. A `Connection` header can never
//! remove `Host`, `Content-Length` or `Transfer-Encoding` (`Connection: content-length` would
//! otherwise unframe the body), and [`HeadEdits::remove`] cannot remove the last two.
//! `Content-Length` is written once, normalized to its value. An absolute-form target is
//! written in origin-form, with `Host` set to its authority (RFC 9112 §3.2.2).
//!
//! ## Invariants (checked in debug builds after every complete parse)
//!
//! - every span of a [`Head`] lies within `0..head_len`, and `head_len ≤ buf.len()`;
//! - `head_len ≤ max_head_bytes` and `headers().count() ≤ max_headers`;
//! - a [`ChunkedDecoder`] never reports more consumed bytes than it was given.

mod assemble;
mod chunked;
pub mod conn;
mod parse;
mod write;

#[cfg(any(test, feature = "reference-parser"))]
#[cfg_attr(not(test), allow(dead_code))]
mod reference;
#[cfg(any(test, feature = "reference-parser"))]
mod reference_parse;
/// The head parser as it was before the one-pass one (`httparse` finds the lines, then the
/// strict byte scan and the field classification walk the head again), kept as the reference
/// that the differential fuzz target `http1_differential` compares [`parse_request`] and
/// [`parse_response`] with: the same outcome and the same [`Head`] for every input. Only with
/// the non-default feature `reference-parser` (fuzz/ enables it); the unit tests use it too.
#[cfg(feature = "reference-parser")]
pub mod reference_parser {
    pub use super::reference_parse::{parse_request, parse_response};
}
#[cfg(test)]
mod tests;

use std::fmt;
use std::ops::Range;

pub use assemble::{RequestHeadWriter, ResponseHeadWriter};
pub use chunked::{Chunked, ChunkedDecoder, MAX_CHUNK_EXTENSION_BYTES};
pub use parse::{parse_request, parse_response};
pub use write::{
    FieldValue, HeadEdits, TRAILER_FORBIDDEN, for_each_response_field, reason_phrase,
    write_local_response, write_request_head, write_response_head, write_trailers,
};

/// The most header fields a head may have, whatever [`Limits::max_headers`] says (the parser
/// keeps their positions on the stack).
pub const MAX_HEADERS: usize = 256;

/// Bounds on one message head.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// The longest head accepted, from the first byte to the empty line included; longer → 431.
    pub max_head_bytes: usize,
    /// The most field lines accepted (capped at [`MAX_HEADERS`]); more → 431.
    pub max_headers: usize,
}

impl Limits {
    /// 64 KiB and 100 fields.
    pub const DEFAULT: Limits = Limits {
        max_head_bytes: 64 * 1024,
        max_headers: 100,
    };
}

impl Default for Limits {
    fn default() -> Self {
        Limits::DEFAULT
    }
}

/// The HTTP version of a message.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub enum Version {
    /// `HTTP/1.0`.
    Http10,
    /// `HTTP/1.1`.
    #[default]
    Http11,
}

impl Version {
    /// `HTTP/1.0` or `HTTP/1.1`.
    #[must_use]
    pub fn as_bytes(self) -> &'static [u8; 8] {
        match self {
            Version::Http10 => b"HTTP/1.0",
            Version::Http11 => b"HTTP/1.1",
        }
    }
}

/// A request method. Methods are case-sensitive: `get` is [`Method::Other`].
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub enum Method {
    /// `GET`.
    #[default]
    Get,
    /// `HEAD`.
    Head,
    /// `POST`.
    Post,
    /// `PUT`.
    Put,
    /// `DELETE`.
    Delete,
    /// `CONNECT`.
    Connect,
    /// `OPTIONS`.
    Options,
    /// `TRACE`.
    Trace,
    /// `PATCH`.
    Patch,
    /// Any other token; [`Head::method_bytes`] gives it.
    Other,
}

impl Method {
    /// The method of a token (case-sensitive).
    #[must_use]
    pub fn from_token(token: &[u8]) -> Method {
        match token {
            b"GET" => Method::Get,
            b"HEAD" => Method::Head,
            b"POST" => Method::Post,
            b"PUT" => Method::Put,
            b"DELETE" => Method::Delete,
            b"CONNECT" => Method::Connect,
            b"OPTIONS" => Method::Options,
            b"TRACE" => Method::Trace,
            b"PATCH" => Method::Patch,
            _ => Method::Other,
        }
    }

    /// The token, or `None` for [`Method::Other`].
    #[must_use]
    pub fn as_str(self) -> Option<&'static str> {
        Some(match self {
            Method::Get => "GET",
            Method::Head => "HEAD",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Delete => "DELETE",
            Method::Connect => "CONNECT",
            Method::Options => "OPTIONS",
            Method::Trace => "TRACE",
            Method::Patch => "PATCH",
            Method::Other => return None,
        })
    }

    /// Idempotent per RFC 9110 §9.2.2 (GET, HEAD, PUT, DELETE, OPTIONS, TRACE): a retry after a
    /// failure cannot change the outcome.
    #[must_use]
    pub fn is_idempotent(self) -> bool {
        matches!(
            self,
            Method::Get
                | Method::Head
                | Method::Put
                | Method::Delete
                | Method::Options
                | Method::Trace
        )
    }
}

/// How the body after a head is delimited (RFC 9112 §6).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub enum BodyFraming {
    /// No body: the next message starts right after the head.
    #[default]
    None,
    /// Exactly this many bytes.
    ContentLength(u64),
    /// A chunked body: scan it with a [`ChunkedDecoder`].
    Chunked,
    /// Everything until the server closes the connection (responses only).
    CloseDelimited,
}

/// The form of a request target (RFC 9112 §3.2).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub enum TargetForm {
    /// `/path?query`.
    #[default]
    Origin,
    /// `http://authority/path?query`.
    Absolute,
    /// `host:port` (CONNECT).
    Authority,
    /// `*` (OPTIONS).
    Asterisk,
}

/// Which kind of message an error is about.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub enum Message {
    /// A request (from downstream).
    #[default]
    Request,
    /// A response (from upstream).
    Response,
}

impl fmt::Display for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Message::Request => "request",
            Message::Response => "response",
        })
    }
}

/// One field line: where its name and its value (without surrounding whitespace) are in the head
/// bytes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HeaderSpan {
    /// The field name.
    pub name: Range<usize>,
    /// The field value.
    pub value: Range<usize>,
    /// What the codec knows the name as, found once by the parser (the writers act on it too).
    known: Known,
}

/// Whether a parse found a whole head.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum ParseStatus {
    /// The head is complete; [`Head::head_len`] bytes of the buffer are the head.
    Complete,
    /// More bytes are needed; call again with the same bytes and more.
    Partial,
}

/// A parsed request or response head: positions into the buffer it was parsed from, plus what
/// the codec derived from it.
///
/// Reused across the requests of a connection: parsing into it does not allocate (the `Vec` of
/// field positions keeps its capacity). Its contents are meaningful only after a parse returned
/// [`ParseStatus::Complete`], and only together with the same buffer.
#[derive(Clone, Debug, Default)]
pub struct Head {
    message: Message,
    method: Method,
    method_span: Range<usize>,
    status: u16,
    /// The request target, or the reason phrase of a response.
    target: Range<usize>,
    path: Range<usize>,
    /// The query without its `?`; `None` when the target has no `?`.
    query: Option<Range<usize>>,
    form: TargetForm,
    version: Version,
    headers: Vec<HeaderSpan>,
    head_len: usize,
    framing: BodyFraming,
    keep_alive: bool,
    expect_continue: bool,
    upgrade: bool,
    /// A `Connection` header names a field other than close/keep-alive/upgrade.
    connection_options: bool,
    host: Option<Range<usize>>,
    content_length: Option<u64>,
}

impl Head {
    /// An empty head, to parse into.
    #[must_use]
    pub fn new() -> Head {
        Head::default()
    }

    fn reset(&mut self, message: Message) {
        let mut headers = std::mem::take(&mut self.headers);
        headers.clear();
        *self = Head {
            message,
            headers,
            ..Head::default()
        };
    }

    /// Whether this is a request or a response head.
    #[must_use]
    pub fn message(&self) -> Message {
        self.message
    }

    /// The request method ([`Method::Get`] for a response).
    #[must_use]
    pub fn method(&self) -> Method {
        self.method
    }

    /// The method token as sent (empty for a response).
    #[must_use]
    pub fn method_bytes<'b>(&self, buf: &'b [u8]) -> &'b [u8] {
        &buf[self.method_span.clone()]
    }

    /// The status code of a response (0 for a request).
    #[must_use]
    pub fn status(&self) -> u16 {
        self.status
    }

    /// Whether a response is interim (1xx): the final response is still to come.
    #[must_use]
    pub fn is_informational(&self) -> bool {
        (100..200).contains(&self.status)
    }

    /// The reason phrase of a response (may be empty; empty for a request).
    #[must_use]
    pub fn reason<'b>(&self, buf: &'b [u8]) -> &'b [u8] {
        match self.message {
            Message::Request => &[],
            Message::Response => &buf[self.target.clone()],
        }
    }

    /// The request target as sent (empty for a response).
    #[must_use]
    pub fn target<'b>(&self, buf: &'b [u8]) -> &'b [u8] {
        match self.message {
            Message::Request => &buf[self.target.clone()],
            Message::Response => &[],
        }
    }

    /// The form of the request target.
    #[must_use]
    pub fn target_form(&self) -> TargetForm {
        self.form
    }

    /// The path of the target, without the query: `/a/b` for `/a/b?x` and for
    /// `http://h/a/b?x`, `/` for `http://h`, `*` for `*`, and the whole `host:port` of a
    /// CONNECT.
    #[must_use]
    pub fn path<'b>(&self, buf: &'b [u8]) -> &'b [u8] {
        if self.path.is_empty() && self.form == TargetForm::Absolute {
            return b"/";
        }
        &buf[self.path.clone()]
    }

    /// The query of the target, without its `?` (`None` when there is no `?`).
    #[must_use]
    pub fn query<'b>(&self, buf: &'b [u8]) -> Option<&'b [u8]> {
        self.query.clone().map(|q| &buf[q])
    }

    /// The HTTP version.
    #[must_use]
    pub fn version(&self) -> Version {
        self.version
    }

    /// The positions of the field lines, in order.
    #[must_use]
    pub fn header_spans(&self) -> &[HeaderSpan] {
        &self.headers
    }

    /// The value of the first field named `name` (ASCII case-insensitive).
    #[must_use]
    pub fn header<'b>(&self, buf: &'b [u8], name: &str) -> Option<&'b [u8]> {
        self.header_values(buf, name).next()
    }

    /// The values of every field named `name` (ASCII case-insensitive), in order.
    pub fn header_values<'s, 'b, 'n>(
        &'s self,
        buf: &'b [u8],
        name: &'n str,
    ) -> impl Iterator<Item = &'b [u8]> + use<'s, 'b, 'n> {
        self.headers
            .iter()
            .filter(move |h| buf[h.name.clone()].eq_ignore_ascii_case(name.as_bytes()))
            .map(move |h| &buf[h.value.clone()])
    }

    /// Every field as `(name, value)`, in order.
    pub fn headers<'s, 'b>(
        &'s self,
        buf: &'b [u8],
    ) -> impl ExactSizeIterator<Item = (&'b [u8], &'b [u8])> + Clone + use<'s, 'b> {
        self.headers
            .iter()
            .map(move |h| (&buf[h.name.clone()], &buf[h.value.clone()]))
    }

    /// The length of the head, empty line included: the body (or the next message) starts at
    /// `buf[head_len()..]`.
    #[must_use]
    pub fn head_len(&self) -> usize {
        self.head_len
    }

    /// How the body is delimited.
    #[must_use]
    pub fn framing(&self) -> BodyFraming {
        self.framing
    }

    /// Whether the connection may carry another message after this one: HTTP/1.1 unless
    /// `Connection: close`, HTTP/1.0 only with `Connection: keep-alive`, never after a
    /// close-delimited response.
    #[must_use]
    pub fn keep_alive(&self) -> bool {
        self.keep_alive
    }

    /// An HTTP/1.1 request with `Expect: 100-continue`.
    #[must_use]
    pub fn expect_continue(&self) -> bool {
        self.expect_continue
    }

    /// HTTP/1.1 with a `Connection: upgrade` token and an `Upgrade` field (for a response, only a
    /// 101 counts).
    #[must_use]
    pub fn upgrade(&self) -> bool {
        self.upgrade
    }

    /// The host a request is for: its `Host` value, or the authority of an absolute-form or
    /// authority-form target (which takes precedence, RFC 9112 §3.2.2). `None` for responses
    /// and for HTTP/1.0 requests without either.
    #[must_use]
    pub fn host<'b>(&self, buf: &'b [u8]) -> Option<&'b [u8]> {
        self.host.clone().map(|h| &buf[h])
    }

    /// The value of `Content-Length`, when present and valid (also when it does not frame the
    /// body, e.g. in a response to HEAD).
    #[must_use]
    pub fn content_length(&self) -> Option<u64> {
        self.content_length
    }

    fn debug_check(&self, buf_len: usize, limits: &Limits) {
        if cfg!(debug_assertions) {
            let h = self.head_len;
            assert!(h <= buf_len && h <= limits.max_head_bytes, "head_len {h}");
            assert!(self.headers.len() <= limits.max_headers.min(MAX_HEADERS));
            let within = |r: &Range<usize>| r.start <= r.end && r.end <= h;
            assert!(within(&self.method_span) && within(&self.target) && within(&self.path));
            assert!(self.query.as_ref().is_none_or(within));
            assert!(self.host.as_ref().is_none_or(within));
            assert!(
                self.headers
                    .iter()
                    .all(|s| within(&s.name) && within(&s.value))
            );
        }
    }
}

/// What is wrong with a message, or with a chunked body.
///
/// [`HttpError::status`] is the status to answer a request error with; errors in a response
/// (its head, or a chunked response body) are the upstream's fault and the runtime answers 502
/// (or resets, when the response head was already forwarded).
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
pub enum HttpError {
    /// The head did not end within `max_head_bytes`.
    #[error("{msg} head is larger than {limit} bytes")]
    HeadTooLarge {
        /// Request or response.
        msg: Message,
        /// `max_head_bytes`.
        limit: usize,
    },
    /// More field lines than `max_headers`.
    #[error("{msg} has more than {limit} header fields")]
    TooManyHeaders {
        /// Request or response.
        msg: Message,
        /// `max_headers`.
        limit: usize,
    },
    /// The request line is not `method SP target SP version CRLF`.
    #[error("malformed request line")]
    InvalidRequestLine,
    /// The request target is not acceptable.
    #[error("invalid request target: {0}")]
    InvalidTarget(&'static str),
    /// The status line is not `version SP 3DIGIT SP reason CRLF`, or the code is outside
    /// 100..=599.
    #[error("malformed status line")]
    InvalidStatusLine,
    /// Not HTTP/1.0 or HTTP/1.1.
    #[error("{msg} has an unsupported HTTP version (only HTTP/1.0 and HTTP/1.1 are)")]
    UnsupportedVersion {
        /// Request or response.
        msg: Message,
    },
    /// A line of the head ends with a bare LF, or holds a bare CR.
    #[error("{msg} has a line not terminated by CRLF")]
    InvalidLineEnding {
        /// Request or response.
        msg: Message,
    },
    /// A field line starts with whitespace (obsolete line folding, RFC 9112 §5.2).
    #[error("{msg} has an obsolete line folding (a header line starting with whitespace)")]
    ObsFold {
        /// Request or response.
        msg: Message,
    },
    /// Whitespace between a field name and its colon (RFC 9112 §5.1).
    #[error("{msg} has whitespace between a header name and its colon")]
    WhitespaceBeforeColon {
        /// Request or response.
        msg: Message,
    },
    /// A field name that is empty, not a token, or a line without a colon.
    #[error("{msg} has a malformed header name")]
    InvalidHeaderName {
        /// Request or response.
        msg: Message,
    },
    /// A control character (other than HTAB) in a field value.
    #[error("{msg} has a control character 0x{byte:02x} in a header value")]
    ControlCharacter {
        /// Request or response.
        msg: Message,
        /// The offending byte.
        byte: u8,
    },
    /// Both `Content-Length` and `Transfer-Encoding`.
    #[error("{msg} has both Content-Length and Transfer-Encoding")]
    ContentLengthAndTransferEncoding {
        /// Request or response.
        msg: Message,
    },
    /// A `Content-Length` that is not a list of decimal numbers fitting a u64.
    #[error("{msg} has a malformed Content-Length")]
    InvalidContentLength {
        /// Request or response.
        msg: Message,
    },
    /// `Content-Length` values that differ.
    #[error("{msg} has differing Content-Length values")]
    ConflictingContentLength {
        /// Request or response.
        msg: Message,
    },
    /// A request whose transfer codings are anything but a single `chunked`.
    #[error("request has a transfer coding other than a single `chunked`")]
    UnsupportedTransferCoding,
    /// A response `Transfer-Encoding` with an empty element or `chunked` with parameters.
    #[error("response has a malformed Transfer-Encoding")]
    InvalidTransferEncoding,
    /// A response whose `chunked` is not the final transfer coding.
    #[error("response has `chunked` before its final transfer coding")]
    ChunkedNotFinal,
    /// `Transfer-Encoding` in an HTTP/1.0 message (RFC 9112 §6.1: faulty framing).
    #[error("HTTP/1.0 {msg} has Transfer-Encoding")]
    TransferEncodingInHttp10 {
        /// Request or response.
        msg: Message,
    },
    /// An HTTP/1.1 request without `Host`.
    #[error("HTTP/1.1 request has no Host header")]
    MissingHost,
    /// A request with more than one `Host`.
    #[error("request has more than one Host header")]
    MultipleHost,
    /// A `Host` value that is not an authority.
    #[error("request has an invalid Host header value")]
    InvalidHost,
    /// A byte that does not belong in a chunk size line.
    #[error("invalid byte 0x{byte:02x} in a chunk size line")]
    InvalidChunkSize {
        /// The offending byte.
        byte: u8,
    },
    /// A chunk size of more than 16 hex digits.
    #[error("chunk size has more than 16 hex digits")]
    ChunkSizeTooLong,
    /// A chunk extension longer than [`MAX_CHUNK_EXTENSION_BYTES`].
    #[error("chunk extension is longer than {limit} bytes")]
    ChunkExtensionTooLong {
        /// The bound.
        limit: usize,
    },
    /// A chunk size line that does not end with CRLF.
    #[error("chunk size line not terminated by CRLF")]
    ChunkSizeLineEnding,
    /// Chunk data not followed by CRLF.
    #[error("chunk data not followed by CRLF")]
    ChunkDataNotTerminated,
    /// A malformed trailer field line (or a bad line ending in the trailer section).
    #[error("malformed trailer field line")]
    InvalidTrailer,
    /// A trailer section longer than the decoder's bound.
    #[error("trailer section is larger than {limit} bytes")]
    TrailersTooLarge {
        /// `max_trailer_bytes`.
        limit: usize,
    },
    /// Chunk sizes adding up to more than `u64::MAX`.
    #[error("chunked body is longer than 2^64-1 bytes")]
    ChunkedBodyTooLarge,
}

impl HttpError {
    /// The status to answer with: 431 for a request head over the limits, 400 for any other
    /// request or body error, 502 for an error in a response head.
    #[must_use]
    pub fn status(&self) -> u16 {
        match self.message() {
            Some(Message::Response) => 502,
            Some(Message::Request) => match self {
                HttpError::HeadTooLarge { .. } | HttpError::TooManyHeaders { .. } => 431,
                _ => 400,
            },
            None => 400,
        }
    }

    /// Which kind of message head the error is about; `None` for errors in a chunked body
    /// (the driver knows which body it was scanning).
    #[must_use]
    pub fn message(&self) -> Option<Message> {
        use HttpError as E;
        match self {
            E::HeadTooLarge { msg, .. }
            | E::TooManyHeaders { msg, .. }
            | E::UnsupportedVersion { msg }
            | E::InvalidLineEnding { msg }
            | E::ObsFold { msg }
            | E::WhitespaceBeforeColon { msg }
            | E::InvalidHeaderName { msg }
            | E::ControlCharacter { msg, .. }
            | E::ContentLengthAndTransferEncoding { msg }
            | E::InvalidContentLength { msg }
            | E::ConflictingContentLength { msg }
            | E::TransferEncodingInHttp10 { msg } => Some(*msg),
            E::InvalidRequestLine
            | E::InvalidTarget(_)
            | E::UnsupportedTransferCoding
            | E::MissingHost
            | E::MultipleHost
            | E::InvalidHost => Some(Message::Request),
            E::InvalidStatusLine | E::InvalidTransferEncoding | E::ChunkedNotFinal => {
                Some(Message::Response)
            }
            E::InvalidChunkSize { .. }
            | E::ChunkSizeTooLong
            | E::ChunkExtensionTooLong { .. }
            | E::ChunkSizeLineEnding
            | E::ChunkDataNotTerminated
            | E::InvalidTrailer
            | E::TrailersTooLarge { .. }
            | E::ChunkedBodyTooLarge => None,
        }
    }
}

/// Header names the codec acts on.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
enum Known {
    Host,
    ContentLength,
    TransferEncoding,
    Connection,
    KeepAlive,
    ProxyConnection,
    Te,
    Trailer,
    Upgrade,
    Expect,
    #[default]
    Other,
}

impl Known {
    /// Classifies a field name. The length and the first letter rule out almost every other
    /// name (`Server`, `Date`, `Content-Type`...) before any comparison, which is word-wise.
    fn of(name: &[u8]) -> Known {
        let Some(&first) = name.first() else {
            return Known::Other;
        };
        let is = |lower: &[u8]| eq_lowercase(name, lower);
        match (name.len(), first | 0x20) {
            (2, b't') if is(b"te") => Known::Te,
            (4, b'h') if is(b"host") => Known::Host,
            (6, b'e') if is(b"expect") => Known::Expect,
            (7, b'u') if is(b"upgrade") => Known::Upgrade,
            (7, b't') if is(b"trailer") => Known::Trailer,
            (10, b'c') if is(b"connection") => Known::Connection,
            (10, b'k') if is(b"keep-alive") => Known::KeepAlive,
            (14, b'c') if is(b"content-length") => Known::ContentLength,
            (16, b'p') if is(b"proxy-connection") => Known::ProxyConnection,
            (17, b't') if is(b"transfer-encoding") => Known::TransferEncoding,
            _ => Known::Other,
        }
    }
}

/// `name.eq_ignore_ascii_case(lower)` for a `lower` of lowercase letters and `-`, 8 bytes at a
/// time: setting bit 0x20 of the name's bytes where `lower` has a letter lowercases exactly the
/// uppercase letters into their lowercase ones (a `-` is compared as it is: 0x2d | 0x20 would
/// also match CR).
fn eq_lowercase(name: &[u8], lower: &[u8]) -> bool {
    debug_assert!(lower.iter().all(|&b| b.is_ascii_lowercase() || b == b'-'));
    if name.len() != lower.len() {
        return false;
    }
    name.chunks(8).zip(lower.chunks(8)).all(|(n, l)| {
        let (n, l) = (word(n), word(l));
        // 0x20 where `lower` has a letter (0x61..=0x7a: bit 0x40 set), 0 where it has `-`.
        let letters = (l & 0x4040_4040_4040_4040) >> 1;
        n | letters == l
    })
}

/// Up to 8 bytes as a little-endian word, zero-padded.
fn word(bytes: &[u8]) -> u64 {
    let mut w = [0u8; 8];
    w[..bytes.len()].copy_from_slice(bytes);
    u64::from_le_bytes(w)
}

/// tchar (RFC 9110 §5.6.2).
pub(crate) fn is_tchar(b: u8) -> bool {
    TCHAR[usize::from(b)]
}

static TCHAR: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] = c.is_ascii_alphanumeric()
            || matches!(
                c,
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
            );
        b += 1;
    }
    table
};

/// A control character that may not appear in a field value (everything below 0x20 but HTAB,
/// and DEL).
fn is_value_ctl(b: u8) -> bool {
    (b < 0x20 && b != b'\t') || b == 0x7f
}

/// The first control character of `s` (see [`is_value_ctl`]). The common case, none, is a
/// branch-free pass that the compiler vectorizes.
fn find_value_ctl(s: &[u8]) -> Option<u8> {
    let any = s.iter().fold(false, |acc, &b| acc | is_value_ctl(b));
    if any {
        s.iter().copied().find(|&b| is_value_ctl(b))
    } else {
        None
    }
}

/// The elements of a comma-separated list, each trimmed of optional whitespace (empty elements
/// included).
fn list_elements(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value.split(|&b| b == b',').map(trim_ows)
}

fn trim_ows(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}
