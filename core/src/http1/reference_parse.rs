//! The head parser as it was before the one-pass parser (issue 15), kept verbatim as the
//! reference the equivalence proptests in `tests.rs` compare `parse.rs` with: `httparse` finds
//! the lines, then the strict byte scan (`reference::check_head_bytes`, the byte-by-byte form)
//! and the field classification walk the head again. Only the imports changed.

use std::mem::MaybeUninit;
use std::ops::Range;

use super::reference::check_head_bytes;
use super::{
    BodyFraming, Head, HeaderSpan, HttpError, Known, Limits, MAX_HEADERS, Message, Method,
    ParseStatus, TargetForm, Version, find_value_ctl, is_tchar, is_value_ctl, list_elements,
};

/// Parses a request head at the start of `buf` into `head`.
///
/// `Partial` means the head is not complete yet: call again once more bytes were appended (the
/// parse restarts from the first byte; `head` holds nothing meaningful meanwhile). `Complete`
/// means `head` describes `buf[..head.head_len()]`. Errors are final: answer
/// [`HttpError::status`] and close the connection.
// `pub` for `http1::reference_parser` (feature `reference-parser`, the fuzz target).
#[allow(unreachable_pub)]
pub fn parse_request(
    buf: &[u8],
    limits: &Limits,
    head: &mut Head,
) -> Result<ParseStatus, HttpError> {
    const MSG: Message = Message::Request;
    head.reset(MSG);
    let window = &buf[..buf.len().min(limits.max_head_bytes)];
    let max_headers = limits.max_headers.min(MAX_HEADERS);
    let mut storage = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut []);
    let len = match req.parse_with_uninit_headers(window, &mut storage[..max_headers]) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return partial(buf.len(), limits, MSG),
        Err(e) => return Err(map_httparse(e, window, MSG, max_headers)),
    };
    let has_ctl = check_head_bytes(&buf[..len], MSG)?;
    head.head_len = len;

    let (Some(method), Some(target), Some(minor)) = (req.method, req.path, req.version) else {
        return Err(HttpError::InvalidRequestLine);
    };
    head.method = Method::from_token(method.as_bytes());
    head.method_span = span_of(buf, method.as_bytes());
    head.version = version(minor, MSG)?;
    head.target = span_of(buf, target.as_bytes());
    parse_target(buf, head)?;

    let scan = scan_headers(buf, req.headers, MSG, has_ctl, head)?;

    // Host (RFC 9112 §3.2).
    match scan.hosts {
        0 if head.version == Version::Http11 => return Err(HttpError::MissingHost),
        0 | 1 => {}
        _ => return Err(HttpError::MultipleHost),
    }
    if let Some(host) = &scan.host
        && !is_authority(&buf[host.clone()])
    {
        return Err(HttpError::InvalidHost);
    }
    if !matches!(head.form, TargetForm::Absolute | TargetForm::Authority) {
        head.host = scan.host.clone();
    }

    // Framing (RFC 9112 §6.3, requests: 4 to 7), strictly.
    let te = scan.te_lines > 0;
    if te && scan.cl != ClState::Absent {
        return Err(HttpError::ContentLengthAndTransferEncoding { msg: MSG });
    }
    if te && head.version == Version::Http10 {
        return Err(HttpError::TransferEncodingInHttp10 { msg: MSG });
    }
    head.framing = if te {
        if !(scan.te.codings == 1 && scan.te.last_chunked && !scan.te.malformed) {
            return Err(HttpError::UnsupportedTransferCoding);
        }
        BodyFraming::Chunked
    } else {
        match scan.cl {
            ClState::Absent => BodyFraming::None,
            ClState::Value(n) => {
                head.content_length = Some(n);
                BodyFraming::ContentLength(n)
            }
            ClState::Invalid => return Err(HttpError::InvalidContentLength { msg: MSG }),
            ClState::Conflict => return Err(HttpError::ConflictingContentLength { msg: MSG }),
        }
    };

    let http11 = head.version == Version::Http11;
    head.keep_alive = if http11 {
        !scan.close
    } else {
        scan.keep_alive && !scan.close
    };
    head.upgrade = http11 && scan.upgrade_token && scan.upgrade_header;
    head.expect_continue = http11 && scan.expect_continue;
    head.connection_options = scan.connection_options;
    head.debug_check(buf.len(), limits);
    Ok(ParseStatus::Complete)
}

/// Parses a response head at the start of `buf` into `head`; `request_method` is the method of
/// the request it answers (it decides the framing of HEAD and CONNECT answers).
///
/// As [`parse_request`]; every error is the upstream's fault ([`HttpError::status`] is 502).
/// The framing follows RFC 9112 §6.3: no body for a HEAD request, 1xx, 204 and 304; none
/// either for a 2xx to CONNECT (the connection becomes a tunnel; its Content-Length and
/// Transfer-Encoding are ignored); then chunked when `chunked` is the final transfer coding,
/// close-delimited for any other transfer coding, the Content-Length, or close-delimited.
// `pub` for `http1::reference_parser` (feature `reference-parser`, the fuzz target).
#[allow(unreachable_pub)]
pub fn parse_response(
    buf: &[u8],
    request_method: Method,
    limits: &Limits,
    head: &mut Head,
) -> Result<ParseStatus, HttpError> {
    const MSG: Message = Message::Response;
    head.reset(MSG);
    let window = &buf[..buf.len().min(limits.max_head_bytes)];
    let max_headers = limits.max_headers.min(MAX_HEADERS);
    let mut storage = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut res = httparse::Response::new(&mut []);
    let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut res,
        window,
        &mut storage[..max_headers],
    );
    let len = match parsed {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return partial(buf.len(), limits, MSG),
        Err(e) => return Err(map_httparse(e, window, MSG, max_headers)),
    };
    let has_ctl = check_head_bytes(&buf[..len], MSG)?;
    head.head_len = len;

    let (Some(minor), Some(code)) = (res.version, res.code) else {
        return Err(HttpError::InvalidStatusLine);
    };
    if !(100..=599).contains(&code) {
        return Err(HttpError::InvalidStatusLine);
    }
    head.version = version(minor, MSG)?;
    head.status = code;
    // The reason phrase, found by hand: httparse gives "" for one with obs-text.
    // The line is `HTTP/1.x NNN[ reason]\r\n`, after optional empty lines (CRLF pairs); httparse
    // checked its first 12 bytes (one SP, three digits), so its CR is searched after them.
    let head_bytes = &buf[..len];
    let line_start = head_bytes
        .iter()
        .take_while(|&&b| b == b'\r' || b == b'\n')
        .count();
    let code_end = line_start + STATUS_LINE_BEFORE_REASON;
    debug_assert!(!head_bytes[line_start..code_end].contains(&b'\r'));
    let cr = code_end
        + head_bytes[code_end..]
            .iter()
            .position(|&b| b == b'\r')
            .unwrap_or(len - code_end);
    head.target = (code_end + 1).min(cr)..cr;

    let scan = scan_headers(buf, res.headers, MSG, has_ctl, head)?;

    let tunnel = request_method == Method::Connect && (200..300).contains(&code);
    if !tunnel {
        let te = scan.te_lines > 0;
        if te && scan.cl != ClState::Absent {
            return Err(HttpError::ContentLengthAndTransferEncoding { msg: MSG });
        }
        if te && head.version == Version::Http10 {
            return Err(HttpError::TransferEncodingInHttp10 { msg: MSG });
        }
        if scan.te.malformed {
            return Err(HttpError::InvalidTransferEncoding);
        }
        if scan.te.chunked_not_final {
            return Err(HttpError::ChunkedNotFinal);
        }
        match scan.cl {
            ClState::Absent => {}
            ClState::Value(n) => head.content_length = Some(n),
            ClState::Invalid => return Err(HttpError::InvalidContentLength { msg: MSG }),
            ClState::Conflict => return Err(HttpError::ConflictingContentLength { msg: MSG }),
        }
        let no_body = request_method == Method::Head
            || (100..200).contains(&code)
            || code == 204
            || code == 304;
        head.framing = if no_body {
            BodyFraming::None
        } else if te && scan.te.last_chunked {
            BodyFraming::Chunked
        } else if te {
            BodyFraming::CloseDelimited
        } else if let Some(n) = head.content_length {
            BodyFraming::ContentLength(n)
        } else {
            BodyFraming::CloseDelimited
        };
    }

    let http11 = head.version == Version::Http11;
    head.keep_alive = head.framing != BodyFraming::CloseDelimited
        && if http11 {
            !scan.close
        } else {
            scan.keep_alive && !scan.close
        };
    head.upgrade = http11 && code == 101 && scan.upgrade_token && scan.upgrade_header;
    head.connection_options = scan.connection_options;
    head.debug_check(buf.len(), limits);
    Ok(ParseStatus::Complete)
}

/// `HTTP/1.x NNN`: the status line up to the SP before its reason phrase.
const STATUS_LINE_BEFORE_REASON: usize = 12;

fn partial(buf_len: usize, limits: &Limits, msg: Message) -> Result<ParseStatus, HttpError> {
    if buf_len >= limits.max_head_bytes {
        // The first max_head_bytes bytes hold no complete head: it can only be longer.
        Err(HttpError::HeadTooLarge {
            msg,
            limit: limits.max_head_bytes,
        })
    } else {
        Ok(ParseStatus::Partial)
    }
}

fn version(minor: u8, msg: Message) -> Result<Version, HttpError> {
    match minor {
        0 => Ok(Version::Http10),
        1 => Ok(Version::Http11),
        _ => Err(HttpError::UnsupportedVersion { msg }),
    }
}

/// Where `part` (a subslice of `buf`) is in `buf`.
fn span_of(buf: &[u8], part: &[u8]) -> Range<usize> {
    let start = (part.as_ptr() as usize).wrapping_sub(buf.as_ptr() as usize);
    debug_assert!(start + part.len() <= buf.len());
    start..start + part.len()
}

/// Turns an httparse error into a precise one, re-reading the lines to tell what was wrong.
fn map_httparse(e: httparse::Error, window: &[u8], msg: Message, limit: usize) -> HttpError {
    match e {
        httparse::Error::TooManyHeaders => HttpError::TooManyHeaders { msg, limit },
        httparse::Error::Version => HttpError::UnsupportedVersion { msg },
        httparse::Error::Status => HttpError::InvalidStatusLine,
        httparse::Error::Token if msg == Message::Request => HttpError::InvalidRequestLine,
        _ => diagnose(window, msg),
    }
}

/// Finds the first bad field line (the error path only).
fn diagnose(window: &[u8], msg: Message) -> HttpError {
    let mut rest = window;
    while let [b'\r' | b'\n', tail @ ..] = rest {
        rest = tail;
    }
    let mut lines = rest.split(|&b| b == b'\n');
    let start_line = lines.next().unwrap_or_default();
    if start_line.contains(&b'\r') && !start_line.ends_with(b"\r") {
        return HttpError::InvalidLineEnding { msg };
    }
    if start_line.iter().any(|&b| b != b'\r' && is_value_ctl(b)) {
        return match msg {
            Message::Request => HttpError::InvalidRequestLine,
            Message::Response => HttpError::InvalidStatusLine,
        };
    }
    for line in lines {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            break;
        }
        if matches!(line[0], b' ' | b'\t') {
            return HttpError::ObsFold { msg };
        }
        if line[0] == b'\r' {
            return HttpError::InvalidLineEnding { msg };
        }
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            if let Some(&byte) = line.iter().find(|&&b| is_value_ctl(b)) {
                return ctl(msg, byte);
            }
            return HttpError::InvalidHeaderName { msg };
        };
        let name = &line[..colon];
        if matches!(name.last(), Some(b' ' | b'\t')) {
            return HttpError::WhitespaceBeforeColon { msg };
        }
        if name.is_empty() || !name.iter().all(|&b| is_tchar(b)) {
            return HttpError::InvalidHeaderName { msg };
        }
        if let Some(&byte) = line[colon + 1..].iter().find(|&&b| is_value_ctl(b)) {
            return ctl(msg, byte);
        }
    }
    HttpError::InvalidLineEnding { msg }
}

fn ctl(msg: Message, byte: u8) -> HttpError {
    HttpError::ControlCharacter { msg, byte }
}

/// Classifies and splits the request target (RFC 9112 §3.2).
fn parse_target(buf: &[u8], head: &mut Head) -> Result<(), HttpError> {
    let start = head.target.start;
    let t = &buf[head.target.clone()];
    let outside = t
        .iter()
        .fold(false, |acc, &b| acc | !(0x21..=0x7e).contains(&b));
    if outside {
        return Err(HttpError::InvalidTarget(
            "byte outside visible ASCII (percent-encode it)",
        ));
    }
    if t.contains(&b'#') {
        return Err(HttpError::InvalidTarget("a fragment (#) is not sent"));
    }
    if head.method == Method::Connect {
        if !is_authority(t) || !has_port(t) {
            return Err(HttpError::InvalidTarget(
                "CONNECT needs authority-form (host:port)",
            ));
        }
        head.form = TargetForm::Authority;
        head.path = head.target.clone();
        head.host = Some(head.target.clone());
        return Ok(());
    }
    if t == b"*" {
        if head.method != Method::Options {
            return Err(HttpError::InvalidTarget(
                "asterisk-form is only for OPTIONS",
            ));
        }
        head.form = TargetForm::Asterisk;
        head.path = head.target.clone();
        return Ok(());
    }
    let path_start = if t[0] == b'/' {
        head.form = TargetForm::Origin;
        0
    } else {
        // absolute-form: scheme "://" authority path-abempty [ "?" query ]
        let Some(colon) = t.iter().position(|&b| b == b':') else {
            return Err(HttpError::InvalidTarget(
                "neither origin-form (/path) nor absolute-form (scheme://host/path)",
            ));
        };
        let scheme = &t[..colon];
        let scheme_ok = scheme.first().is_some_and(u8::is_ascii_alphabetic)
            && scheme
                .iter()
                .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'));
        if !scheme_ok || !t[colon + 1..].starts_with(b"//") {
            return Err(HttpError::InvalidTarget(
                "neither origin-form (/path) nor absolute-form (scheme://host/path)",
            ));
        }
        let auth_start = colon + 3;
        let auth_end = t[auth_start..]
            .iter()
            .position(|&b| b == b'/' || b == b'?')
            .map_or(t.len(), |p| auth_start + p);
        if !is_authority(&t[auth_start..auth_end]) {
            return Err(HttpError::InvalidTarget(
                "invalid authority in absolute-form",
            ));
        }
        head.form = TargetForm::Absolute;
        head.host = Some(start + auth_start..start + auth_end);
        auth_end
    };
    match t[path_start..].iter().position(|&b| b == b'?') {
        Some(q) => {
            head.path = start + path_start..start + path_start + q;
            head.query = Some(start + path_start + q + 1..head.target.end);
        }
        None => head.path = start + path_start..head.target.end,
    }
    Ok(())
}

/// A `uri-host [ ":" port ]` as far as its characters go (reg-name, IPv4, IP-literal); no
/// userinfo. May be empty (RFC 9110 §7.2 allows an empty Host).
fn is_authority(s: &[u8]) -> bool {
    s.iter()
        .fold(true, |acc, &b| acc & AUTHORITY[usize::from(b)])
}

/// unreserved / pct-encoded / sub-delims / ":" / "[" / "]" (RFC 3986 §3.2).
static AUTHORITY: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] = c.is_ascii_alphanumeric()
            || matches!(
                c,
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
            );
        b += 1;
    }
    table
};

/// `host ":" port` with a non-empty host and 1 to 5 digits of port.
fn has_port(s: &[u8]) -> bool {
    let Some(colon) = s.iter().rposition(|&b| b == b':') else {
        return false;
    };
    let (host, port) = (&s[..colon], &s[colon + 1..]);
    !host.is_empty()
        && !host.ends_with(b"[")
        && (1..=5).contains(&port.len())
        && port.iter().all(u8::is_ascii_digit)
}

#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
enum ClState {
    #[default]
    Absent,
    Value(u64),
    Invalid,
    Conflict,
}

impl ClState {
    /// Folds one Content-Length field value in (RFC 9110 §8.6: a list of equal values is one).
    fn add(&mut self, value: &[u8]) {
        for element in list_elements(value) {
            let n = parse_decimal(element);
            *self = match (*self, n) {
                (ClState::Invalid | ClState::Conflict, _) => return,
                (_, None) => ClState::Invalid,
                (ClState::Absent, Some(n)) => ClState::Value(n),
                (ClState::Value(m), Some(n)) if m == n => ClState::Value(n),
                (ClState::Value(_), Some(_)) => ClState::Conflict,
            };
        }
    }
}

/// `1*DIGIT` fitting a u64.
fn parse_decimal(s: &[u8]) -> Option<u64> {
    if s.is_empty() {
        return None;
    }
    s.iter().try_fold(0u64, |n, &b| {
        if b.is_ascii_digit() {
            n.checked_mul(10)?.checked_add(u64::from(b - b'0'))
        } else {
            None
        }
    })
}

/// The transfer codings of every Transfer-Encoding line, in order.
#[derive(Clone, Copy, Debug, Default)]
struct TeState {
    codings: u32,
    last_chunked: bool,
    chunked_not_final: bool,
    /// An empty element, a coding that is not a token, or `chunked` with parameters.
    malformed: bool,
}

impl TeState {
    fn add(&mut self, value: &[u8]) {
        for element in list_elements(value) {
            let (coding, params) = match element.iter().position(|&b| b == b';') {
                Some(p) => (super::trim_ows(&element[..p]), true),
                None => (element, false),
            };
            let chunked = coding.eq_ignore_ascii_case(b"chunked");
            if coding.is_empty() || !coding.iter().all(|&b| is_tchar(b)) || (chunked && params) {
                self.malformed = true;
            }
            if self.last_chunked {
                self.chunked_not_final = true;
            }
            self.codings = self.codings.saturating_add(1);
            self.last_chunked = chunked;
        }
    }
}

/// What the field lines say, gathered in one pass.
#[derive(Default)]
struct Scan {
    hosts: u32,
    host: Option<Range<usize>>,
    cl: ClState,
    te_lines: u32,
    te: TeState,
    close: bool,
    keep_alive: bool,
    upgrade_token: bool,
    connection_options: bool,
    upgrade_header: bool,
    expect_continue: bool,
}

/// Records the field positions in `head` and gathers what the codec acts on.
///
/// `has_ctl` is what [`check_head_bytes`] found: only then are the values searched for the
/// control character (httparse rejects them too; a proxy does not rely on it alone).
fn scan_headers(
    buf: &[u8],
    parsed: &[httparse::Header<'_>],
    msg: Message,
    has_ctl: bool,
    head: &mut Head,
) -> Result<Scan, HttpError> {
    let mut scan = Scan::default();
    for h in parsed {
        let (name, value) = (h.name.as_bytes(), h.value);
        // httparse allows only tchar in names, and check_head_bytes saw no control character.
        debug_assert!(!name.is_empty() && name.iter().all(|&b| is_tchar(b)));
        if has_ctl && let Some(byte) = find_value_ctl(value) {
            return Err(ctl(msg, byte));
        }
        let name_span = span_of(buf, name);
        // An empty value may point anywhere in the line: pin it after the name.
        let value_span = if value.is_empty() {
            name_span.end..name_span.end
        } else {
            span_of(buf, value)
        };
        let known = Known::of(name);
        match known {
            Known::Host => {
                scan.hosts += 1;
                scan.host = Some(value_span.clone());
            }
            Known::ContentLength => scan.cl.add(value),
            Known::TransferEncoding => {
                scan.te_lines += 1;
                scan.te.add(value);
            }
            Known::Connection => {
                for token in list_elements(value) {
                    if token.eq_ignore_ascii_case(b"close") {
                        scan.close = true;
                    } else if token.eq_ignore_ascii_case(b"keep-alive") {
                        scan.keep_alive = true;
                    } else if token.eq_ignore_ascii_case(b"upgrade") {
                        scan.upgrade_token = true;
                    } else if !token.is_empty() {
                        scan.connection_options = true;
                    }
                }
            }
            Known::Upgrade => scan.upgrade_header = true,
            Known::Expect => scan.expect_continue |= value.eq_ignore_ascii_case(b"100-continue"),
            Known::KeepAlive
            | Known::ProxyConnection
            | Known::Te
            | Known::Trailer
            | Known::Other => {}
        }
        head.headers.push(HeaderSpan {
            name: name_span,
            value: value_span,
            known,
        });
    }
    Ok(scan)
}
