//! The codec as it was before the per-request cost cuts (issue 15), kept verbatim as the
//! reference the equivalence proptests in `tests.rs` compare the current code with: the strict
//! byte scan, the field classification, the reason phrase's position and the head writers.
//! Only the names of the writers' entry points are changed.

use super::write::HeadEdits;
use super::{
    BodyFraming, Head, HttpError, Known, Message, TargetForm, is_value_ctl, list_elements,
};

pub(super) fn check_head_bytes(head: &[u8], msg: Message) -> Result<bool, HttpError> {
    let (unpaired, ctl) =
        head.iter()
            .zip(head.iter().skip(1))
            .fold((false, false), |(unpaired, ctl), (&a, &b)| {
                (
                    unpaired | ((a == b'\r') != (b == b'\n')),
                    ctl | (is_value_ctl(a) & (a != b'\r') & (a != b'\n')),
                )
            });
    if unpaired || head.first() == Some(&b'\n') || head.last() == Some(&b'\r') {
        return Err(HttpError::InvalidLineEnding { msg });
    }
    Ok(ctl)
}

/// The reason phrase span of a complete response head of `len` bytes, as found before.
pub(super) fn reason_span(buf: &[u8], len: usize) -> std::ops::Range<usize> {
    let head_bytes = &buf[..len];
    let line_start = head_bytes
        .iter()
        .take_while(|&&b| b == b'\r' || b == b'\n')
        .count();
    let cr = line_start
        + head_bytes[line_start..]
            .iter()
            .position(|&b| b == b'\r')
            .unwrap_or(len - line_start);
    (line_start + 13).min(cr)..cr
}

pub(super) fn known_of(name: &[u8]) -> Known {
    let is = |s: &[u8]| name.eq_ignore_ascii_case(s);
    match name.len() {
        2 if is(b"te") => Known::Te,
        4 if is(b"host") => Known::Host,
        6 if is(b"expect") => Known::Expect,
        7 if is(b"upgrade") => Known::Upgrade,
        7 if is(b"trailer") => Known::Trailer,
        10 if is(b"connection") => Known::Connection,
        10 if is(b"keep-alive") => Known::KeepAlive,
        14 if is(b"content-length") => Known::ContentLength,
        16 if is(b"proxy-connection") => Known::ProxyConnection,
        17 if is(b"transfer-encoding") => Known::TransferEncoding,
        _ => Known::Other,
    }
}

pub(super) fn write_request_head(
    out: &mut Vec<u8>,
    buf: &[u8],
    head: &Head,
    edits: &HeadEdits<'_>,
) {
    out.reserve(head.head_len + 64);
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
        TargetForm::Authority | TargetForm::Asterisk => out.extend_from_slice(head.target(buf)),
    }
    out.push(b' ');
    out.extend_from_slice(edits.version.unwrap_or(head.version).as_bytes());
    out.extend_from_slice(b"\r\n");
    let absolute = head.form == TargetForm::Absolute;
    let host_removed = edits.remove.iter().any(|r| r.eq_ignore_ascii_case("host"));
    if absolute && !host_removed && head.header(buf, "host").is_none() {
        // An HTTP/1.0 request without Host: the authority becomes one.
        push_parsed(out, b"host", head.host(buf).unwrap_or_default());
    }
    write_fields(out, buf, head, edits, true);
    let upgrade = head.upgrade;
    write_connection(out, upgrade, edits.force_close);
    write_added(out, edits);
    out.extend_from_slice(b"\r\n");
}

/// Writes a response head to send downstream: the status line, the original fields in order
/// minus the hop-by-hop and removed ones, then `connection: upgrade` for a 101 upgrade,
/// `connection: close` when [`HeadEdits::force_close`] holds or the body is close-delimited
/// (the downstream connection must then close too), the added fields, and the empty line.
///
/// To keep an HTTP/1.0 client's connection alive, add `connection: keep-alive` (added fields
/// are written as given).
pub(super) fn write_response_head(
    out: &mut Vec<u8>,
    buf: &[u8],
    head: &Head,
    edits: &HeadEdits<'_>,
) {
    out.reserve(head.head_len + 64);
    out.extend_from_slice(edits.version.unwrap_or(head.version).as_bytes());
    out.push(b' ');
    push_status(out, head.status);
    out.push(b' ');
    out.extend_from_slice(head.reason(buf));
    out.extend_from_slice(b"\r\n");
    write_fields(out, buf, head, edits, false);
    let close = edits.force_close || head.framing == BodyFraming::CloseDelimited;
    write_connection(out, head.upgrade, close);
    write_added(out, edits);
    out.extend_from_slice(b"\r\n");
}

/// The original fields, in order, minus the hop-by-hop and removed ones.
fn write_fields(out: &mut Vec<u8>, buf: &[u8], head: &Head, edits: &HeadEdits<'_>, request: bool) {
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
        match known_of(name) {
            Known::Connection | Known::KeepAlive | Known::ProxyConnection | Known::Te => {}
            Known::Upgrade => {
                if head.upgrade && !removed() {
                    push_parsed(out, name, value);
                }
            }
            Known::Expect if request => {}
            Known::ContentLength => match head.content_length {
                // Once, normalized: `5, 5` or two `5` fields become one `5`.
                Some(n) if !content_length_written => {
                    content_length_written = true;
                    out.extend_from_slice(name);
                    out.extend_from_slice(b": ");
                    push_u64(out, n);
                    out.extend_from_slice(b"\r\n");
                }
                Some(_) => {}
                // Only a 2xx to CONNECT keeps an unparsed one (the client ignores it).
                None => push_parsed(out, name, value),
            },
            Known::TransferEncoding => push_parsed(out, name, value),
            Known::Host if head.form == TargetForm::Absolute => {
                if !removed() {
                    push_parsed(out, name, head.host(buf).unwrap_or(value));
                }
            }
            Known::Host | Known::Expect => {
                if !removed() {
                    push_parsed(out, name, value);
                }
            }
            // `Trailer` is end-to-end (RFC 9110 §6.6.2), as Envoy forwards it.
            Known::Trailer | Known::Other => {
                let hop_by_hop = head.connection_options && named_by_connection(buf, head, name);
                if !hop_by_hop && !removed() {
                    push_parsed(out, name, value);
                }
            }
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
    let s = status.clamp(100, 999);
    out.extend_from_slice(&[
        b'0' + (s / 100) as u8,
        b'0' + (s / 10 % 10) as u8,
        b'0' + (s % 10) as u8,
    ]);
}

fn push_u64(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}
