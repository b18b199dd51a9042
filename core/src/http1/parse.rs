//! Parsing request and response heads, in one pass: the lines are found, checked strictly and
//! their fields classified as the bytes go by, then the target, `Host` and the framing are
//! checked and the connection semantics derived.
//!
//! The line scanner is hand-written (it replaced `httparse` plus two more walks over the head,
//! a strict byte scan and the field classification: ~2,500 of the ~4,400 instructions the two
//! heads of a proxied request cost, issue 15) because both strictness and one pass demand it:
//! `httparse` accepts a bare LF as a line ending, so the proxy had to re-read every byte after
//! it. It accepts exactly the syntax `httparse` 1.10 accepted with its default configuration
//! (token method, one SP, a target of visible ASCII or UTF-8, `HTTP/1.0` or `HTTP/1.1`; status
//! code of three digits; field names of tchar followed by a colon; values of HTAB, SP, VCHAR
//! and obs-text) and tells the same errors at the same byte, and adds the check `httparse`
//! lacked: every line ends in CRLF. `reference_parse.rs` keeps the `httparse` parser, and the
//! equivalence proptests in `tests.rs` compare the two on every outcome (error, partial, every
//! position of the head).
//!
//! States of a parse: the start line, then one field line after another, then the empty line;
//! running out of bytes anywhere is `Partial` (the caller parses again from the first byte
//! with more), a byte the grammar does not allow is the error of where it is. Invariants: every
//! CR the scanner passes is followed by an LF; a bare LF is remembered and rejected once the
//! head is complete (as before, a head cut in the middle stays `Partial` until it ends or
//! outgrows the limit).

use std::ops::Range;

use super::{
    BodyFraming, Head, HeaderSpan, HttpError, Known, Limits, MAX_HEADERS, Message, Method,
    ParseStatus, TargetForm, Version, is_tchar, is_value_ctl, list_elements,
};

/// Parses a request head at the start of `buf` into `head`.
///
/// `Partial` means the head is not complete yet: call again once more bytes were appended (the
/// parse restarts from the first byte; `head` holds nothing meaningful meanwhile). `Complete`
/// means `head` describes `buf[..head.head_len()]`. Errors are final: answer
/// [`HttpError::status`] and close the connection.
pub fn parse_request(
    buf: &[u8],
    limits: &Limits,
    head: &mut Head,
) -> Result<ParseStatus, HttpError> {
    const MSG: Message = Message::Request;
    head.reset(MSG);
    let window = &buf[..buf.len().min(limits.max_head_bytes)];
    let max_headers = limits.max_headers.min(MAX_HEADERS);
    let mut lines = Lines::new(window);
    let mut scan = Scan::default();
    let minor = match lines
        .request_line(head)
        .and_then(|minor| lines.fields(max_headers, head, &mut scan).map(|()| minor))
    {
        Ok(minor) => minor,
        Err(Stop::Partial) => return partial(buf.len(), limits, MSG),
        Err(Stop::Bad(e)) => return Err(e.error(window, MSG, max_headers)),
    };
    if lines.bare_lf {
        return Err(HttpError::InvalidLineEnding { msg: MSG });
    }
    head.head_len = lines.pos;
    head.version = version(minor, MSG)?;
    parse_target(buf, head)?;

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
    let mut lines = Lines::new(window);
    let mut scan = Scan::default();
    let (minor, code) = match lines
        .status_line(head)
        .and_then(|start| lines.fields(max_headers, head, &mut scan).map(|()| start))
    {
        Ok(start) => start,
        Err(Stop::Partial) => return partial(buf.len(), limits, MSG),
        Err(Stop::Bad(e)) => return Err(e.error(window, MSG, max_headers)),
    };
    if lines.bare_lf {
        return Err(HttpError::InvalidLineEnding { msg: MSG });
    }
    head.head_len = lines.pos;
    if !(100..=599).contains(&code) {
        return Err(HttpError::InvalidStatusLine);
    }
    head.version = version(minor, MSG)?;
    head.status = code;

    response_semantics(head, &scan, request_method)?;
    head.debug_check(buf.len(), limits);
    Ok(ParseStatus::Complete)
}

/// What a response head's fields mean, once its lines were read (by [`parse_response`] or
/// written by [`super::ResponseHeadWriter`]) and its version and status set: the framing (RFC
/// 9112 §6.3, see [`parse_response`]), the content length, the connection semantics — or the
/// framing error. One rule for the parsed and the written head.
pub(super) fn response_semantics(
    head: &mut Head,
    scan: &Scan,
    request_method: Method,
) -> Result<(), HttpError> {
    const MSG: Message = Message::Response;
    let code = head.status;
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
    Ok(())
}

/// Where the line syntax failed: the kinds of error `httparse` told apart, which decide the
/// error reported ([`LineError::error`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum LineError {
    /// The method or the request target.
    Token,
    /// The version, or the SP after it in a status line.
    Version,
    /// The status code, the byte after it or the reason phrase.
    Status,
    /// A CR not followed by LF, or no line end after the request line.
    NewLine,
    /// A field line that does not start with a name followed by a colon.
    HeaderName,
    /// A byte not allowed in a field value.
    HeaderValue,
    /// One more field line than the limit.
    TooManyHeaders,
}

impl LineError {
    /// The precise error: field-line errors are told apart by re-reading the lines (the error
    /// path only).
    fn error(self, window: &[u8], msg: Message, limit: usize) -> HttpError {
        match self {
            LineError::TooManyHeaders => HttpError::TooManyHeaders { msg, limit },
            LineError::Version => HttpError::UnsupportedVersion { msg },
            LineError::Status => HttpError::InvalidStatusLine,
            LineError::Token if msg == Message::Request => HttpError::InvalidRequestLine,
            _ => diagnose(window, msg),
        }
    }
}

/// Why the scanner stopped before the end of the head.
enum Stop {
    /// The bytes ran out.
    Partial,
    Bad(LineError),
}

impl From<LineError> for Stop {
    fn from(e: LineError) -> Stop {
        Stop::Bad(e)
    }
}

/// The line scanner: a position in the head's bytes, and whether a line ended in a bare LF.
struct Lines<'a> {
    bytes: &'a [u8],
    pos: usize,
    bare_lf: bool,
}

impl<'a> Lines<'a> {
    fn new(bytes: &'a [u8]) -> Lines<'a> {
        Lines {
            bytes,
            pos: 0,
            bare_lf: false,
        }
    }

    /// The next byte, or `Partial`.
    fn next(&mut self) -> Result<u8, Stop> {
        let b = *self.bytes.get(self.pos).ok_or(Stop::Partial)?;
        self.pos += 1;
        Ok(b)
    }

    /// After a CR: the LF, else `error`.
    fn lf(&mut self, error: LineError) -> Result<(), Stop> {
        if self.next()? == b'\n' {
            Ok(())
        } else {
            Err(Stop::Bad(error))
        }
    }

    /// Empty lines before the start line (RFC 9112 §2.2 lets a server ignore them).
    fn skip_empty_lines(&mut self) -> Result<(), Stop> {
        loop {
            match self.bytes.get(self.pos) {
                Some(b'\r') => {
                    self.pos += 1;
                    self.lf(LineError::NewLine)?;
                }
                Some(b'\n') => {
                    self.pos += 1;
                    self.bare_lf = true;
                }
                Some(_) => return Ok(()),
                None => return Err(Stop::Partial),
            }
        }
    }

    /// `HTTP/1.0` or `HTTP/1.1`: its minor version. With fewer than 8 bytes left, those there
    /// are checked (a wrong prefix is an error before the head is complete).
    fn version(&mut self) -> Result<u8, Stop> {
        const PREFIX: &[u8; 7] = b"HTTP/1.";
        let rest = &self.bytes[self.pos..];
        let Some(version) = rest.first_chunk::<8>() else {
            if rest.iter().zip(PREFIX).any(|(a, b)| a != b) {
                return Err(Stop::Bad(LineError::Version));
            }
            return Err(Stop::Partial);
        };
        let minor = match version {
            b"HTTP/1.0" => 0,
            b"HTTP/1.1" => 1,
            _ => return Err(Stop::Bad(LineError::Version)),
        };
        self.pos += 8;
        Ok(minor)
    }

    /// `method SP request-target SP HTTP-version CRLF`: the method's and the target's spans
    /// into `head`; the minor version.
    fn request_line(&mut self, head: &mut Head) -> Result<u8, Stop> {
        self.skip_empty_lines()?;
        let start = self.pos;
        if !is_tchar(self.next()?) {
            return Err(Stop::Bad(LineError::Token));
        }
        loop {
            let b = self.next()?;
            if b == b' ' {
                break;
            }
            if !is_tchar(b) {
                return Err(Stop::Bad(LineError::Token));
            }
        }
        let method = start..self.pos - 1;
        head.method = Method::from_token(&self.bytes[method.clone()]);
        head.method_span = method;

        let start = self.pos;
        let high = self.skip_visible::<0x21>();
        let end = self.pos;
        if self.next()? != b' ' || end == start {
            return Err(Stop::Bad(LineError::Token));
        }
        // A target with obs-text must be UTF-8 here (an error of the line) and is then refused
        // by `parse_target` (only visible ASCII is forwarded).
        if high && std::str::from_utf8(&self.bytes[start..end]).is_err() {
            return Err(Stop::Bad(LineError::Token));
        }
        head.target = start..end;

        let minor = self.version()?;
        match self.next()? {
            b'\r' => self.lf(LineError::NewLine)?,
            b'\n' => self.bare_lf = true,
            _ => return Err(Stop::Bad(LineError::NewLine)),
        }
        Ok(minor)
    }

    /// `HTTP-version SP 3DIGIT [ SP reason-phrase ] CRLF`: the reason phrase's span into
    /// `head.target`; the minor version and the code.
    fn status_line(&mut self, head: &mut Head) -> Result<(u8, u16), Stop> {
        self.skip_empty_lines()?;
        let minor = self.version()?;
        if self.next()? != b' ' {
            return Err(Stop::Bad(LineError::Version));
        }
        let mut code = 0u16;
        for _ in 0..3 {
            let digit = self.next()?;
            if !digit.is_ascii_digit() {
                return Err(Stop::Bad(LineError::Status));
            }
            code = code * 10 + u16::from(digit - b'0');
        }
        match self.next()? {
            b' ' => {
                let start = self.pos;
                loop {
                    let b = self.next()?;
                    if b == b'\r' {
                        self.lf(LineError::Status)?;
                        break;
                    }
                    if b == b'\n' {
                        self.bare_lf = true;
                        break;
                    }
                    if is_value_ctl(b) {
                        return Err(Stop::Bad(LineError::Status));
                    }
                }
                // Without the CRLF (a bare LF is refused once the head is complete).
                head.target = start..self.pos - 2;
            }
            b'\r' => {
                self.lf(LineError::Status)?;
                head.target = self.pos - 2..self.pos - 2;
            }
            b'\n' => {
                self.bare_lf = true;
                head.target = self.pos - 1..self.pos - 1;
            }
            _ => return Err(Stop::Bad(LineError::Status)),
        }
        Ok((minor, code))
    }

    /// The field lines and the empty line: each field's span and kind into `head`, what the
    /// codec acts on into `scan`.
    fn fields(&mut self, max_headers: usize, head: &mut Head, scan: &mut Scan) -> Result<(), Stop> {
        loop {
            let first = self.next()?;
            if first == b'\r' {
                return self.lf(LineError::NewLine);
            }
            if first == b'\n' {
                self.bare_lf = true;
                return Ok(());
            }
            // A field line starts with its name: SP or HTAB here is obs-fold.
            if !is_tchar(first) {
                return Err(Stop::Bad(LineError::HeaderName));
            }
            let name_start = self.pos - 1;
            while self.bytes.get(self.pos).is_some_and(|&b| is_tchar(b)) {
                self.pos += 1;
            }
            // Whitespace before the colon is an error too.
            if self.next()? != b':' {
                return Err(Stop::Bad(LineError::HeaderName));
            }
            let name = name_start..self.pos - 1;

            // The value: from its first byte that is not SP or HTAB to its last one.
            let value = loop {
                match self.next()? {
                    b' ' | b'\t' => {}
                    b'\r' => {
                        self.lf(LineError::HeaderValue)?;
                        break name.end..name.end;
                    }
                    b'\n' => {
                        self.bare_lf = true;
                        break name.end..name.end;
                    }
                    b if is_value_ctl(b) => return Err(Stop::Bad(LineError::HeaderValue)),
                    _ => {
                        let start = self.pos - 1;
                        let end = self.value_end()?;
                        break start..end;
                    }
                }
            };
            if head.headers.len() == max_headers {
                return Err(Stop::Bad(LineError::TooManyHeaders));
            }
            let known = Known::of(&self.bytes[name.clone()]);
            scan.add(known, &self.bytes[value.clone()], &value);
            head.headers.push(HeaderSpan { name, value, known });
        }
    }

    /// Past the value bytes of a field line and its line end: where the value ends, trailing
    /// SP and HTAB left out. The value's first byte is not whitespace.
    fn value_end(&mut self) -> Result<usize, Stop> {
        loop {
            self.skip_visible::<0x20>();
            let end = match self.next()? {
                b'\t' => continue,
                b'\r' => {
                    self.lf(LineError::HeaderValue)?;
                    self.pos - 2
                }
                b'\n' => {
                    self.bare_lf = true;
                    self.pos - 1
                }
                _ => return Err(Stop::Bad(LineError::HeaderValue)),
            };
            let line = &self.bytes[..end];
            let trimmed = line
                .iter()
                .rposition(|&b| b != b' ' && b != b'\t')
                .map_or(end, |last| last + 1);
            return Ok(trimmed);
        }
    }

    /// Moves past the bytes not below `MIN` other than DEL (the visible ASCII and obs-text of
    /// a target for 0x21, and SP too for a value's 0x20), eight at a time; whether any was
    /// obs-text.
    ///
    /// A word's bytes below `MIN` show as the high bit of `(w - MIN..) & !w`, a DEL as that of
    /// the same for `w ^ 0x7f..` against 0x01: a borrow only runs upward from a byte flagged
    /// rightly, so the lowest flag (the first byte, little-endian) is exact.
    fn skip_visible<const MIN: u8>(&mut self) -> bool {
        const ONES: u64 = 0x0101_0101_0101_0101;
        const HIGHS: u64 = 0x8080_8080_8080_8080;
        let mut pos = self.pos;
        let mut high = 0u64;
        while let Some(chunk) = self.bytes.get(pos..).and_then(<[u8]>::first_chunk::<8>) {
            let w = u64::from_le_bytes(*chunk);
            let del = w ^ (ONES * 0x7f);
            let below = w.wrapping_sub(ONES * u64::from(MIN)) & !w;
            let stop = (below | (del.wrapping_sub(ONES) & !del)) & HIGHS;
            if stop != 0 {
                let passed = stop.trailing_zeros() / 8;
                high |= w & HIGHS & ((1u64 << (8 * passed)) - 1);
                self.pos = pos + passed as usize;
                return high != 0;
            }
            high |= w & HIGHS;
            pos += 8;
        }
        while let Some(&b) = self.bytes.get(pos) {
            if b < MIN || b == 0x7f {
                break;
            }
            high |= u64::from(b & 0x80);
            pos += 1;
        }
        self.pos = pos;
        high != 0
    }
}

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
pub(super) fn parse_decimal(s: &[u8]) -> Option<u64> {
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
pub(super) struct Scan {
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

impl Scan {
    /// Folds one field line in.
    pub(super) fn add(&mut self, known: Known, value: &[u8], value_span: &Range<usize>) {
        match known {
            Known::Host => {
                self.hosts += 1;
                self.host = Some(value_span.clone());
            }
            Known::ContentLength => self.cl.add(value),
            Known::TransferEncoding => {
                self.te_lines += 1;
                self.te.add(value);
            }
            Known::Connection => {
                for token in list_elements(value) {
                    if token.eq_ignore_ascii_case(b"close") {
                        self.close = true;
                    } else if token.eq_ignore_ascii_case(b"keep-alive") {
                        self.keep_alive = true;
                    } else if token.eq_ignore_ascii_case(b"upgrade") {
                        self.upgrade_token = true;
                    } else if !token.is_empty() {
                        self.connection_options = true;
                    }
                }
            }
            Known::Upgrade => self.upgrade_header = true,
            Known::Expect => self.expect_continue |= value.eq_ignore_ascii_case(b"100-continue"),
            Known::KeepAlive
            | Known::ProxyConnection
            | Known::Te
            | Known::Trailer
            | Known::Other => {}
        }
    }
}
