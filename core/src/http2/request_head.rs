//! An HTTP/2 request's head as the request path reads it: [`build_request_head`] holds the
//! HPACK-decoded head to RFC 9113 §8 (the checks of [`request_to_http1`]) and to the listener's
//! [`Limits`], then writes it with the HTTP/1 codec's [`RequestHeadWriter`] — the `Head` every
//! codec gives the path — without parsing anything back.
//!
//! What it writes is what [`request_to_http1`] writes (the request line from `:method` and
//! `:path`, `host` first from `:authority`, the fields in order with the cookie crumbs joined,
//! `transfer-encoding: chunked` for a body of unknown length), and the `Head` it records is
//! the one `parse_request` finds in those bytes.
//!
//! Invariant (property-tested here and fuzzed, `fuzz/fuzz_targets/http2_translate.rs`): for
//! any head, the result is that of the translation followed by `parse_request` under the same
//! limits — the same bytes and the same `Head`, or a refusal with the same status (400, 431,
//! 501).

use std::fmt;

use super::translate::{BodyLength, Checked, RequestHead, TranslateError, check, cookie_crumb};
use crate::http1::{Head, HttpError, Limits, MAX_HEADERS, Message, RequestHeadWriter};

/// Why an HTTP/2 request head is refused before routing. [`RequestHeadError::status`] is the
/// answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RequestHeadError {
    /// Malformed (RFC 9113 §8.1.1) or a `CONNECT`: 400 or 501.
    Malformed(TranslateError),
    /// A field malformed by its name or value (a connection-specific one, an invalid name or
    /// value): 400, naming the field. Named, not numbered: the runtime's fields come grouped
    /// by name (`http::HeaderMap`), so an index would not be the client's order.
    MalformedField {
        /// [`TranslateError::BadFieldName`], [`TranslateError::BadFieldValue`] or
        /// [`TranslateError::ConnectionSpecific`].
        error: TranslateError,
        /// The field's name, as received.
        name: Vec<u8>,
    },
    /// More fields than [`Limits::max_headers`] or a head larger than
    /// [`Limits::max_head_bytes`], as HTTP/1.1 would carry it: 431.
    TooLarge(HttpError),
}

impl RequestHeadError {
    /// The status answered.
    #[must_use]
    pub fn status(&self) -> u16 {
        match self {
            RequestHeadError::Malformed(e) | RequestHeadError::MalformedField { error: e, .. } => {
                e.status()
            }
            RequestHeadError::TooLarge(e) => e.status(),
        }
    }

    /// The error `check` gave, with the name of the field it is about.
    fn of(error: TranslateError, head: &RequestHead<'_>) -> Self {
        match error {
            TranslateError::BadFieldName(i)
            | TranslateError::BadFieldValue(i)
            | TranslateError::ConnectionSpecific(i) => match head.fields.get(i) {
                Some(&(name, _)) => RequestHeadError::MalformedField {
                    error,
                    name: name.to_vec(),
                },
                None => RequestHeadError::Malformed(error),
            },
            _ => RequestHeadError::Malformed(error),
        }
    }
}

impl fmt::Display for RequestHeadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RequestHeadError::Malformed(e) => e.fmt(f),
            // The name only: a value may be a credential (`authorization`, `cookie`).
            RequestHeadError::MalformedField { error, name } => {
                let name = name.escape_ascii();
                match error {
                    TranslateError::BadFieldName(_) => {
                        write!(f, "invalid header field name \"{name}\"")
                    }
                    TranslateError::BadFieldValue(_) => {
                        write!(f, "invalid value of header field \"{name}\"")
                    }
                    TranslateError::ConnectionSpecific(_) => write!(
                        f,
                        "connection-specific header field \"{name}\" is malformed in HTTP/2"
                    ),
                    other => write!(f, "{other} (header field \"{name}\")"),
                }
            }
            RequestHeadError::TooLarge(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for RequestHeadError {}

/// Checks an HTTP/2 request head and writes it at the end of `out` into `parsed` (see the module
/// doc); `parsed`'s spans are relative to where `out` ended (read it with `&out[start..]`). On
/// an error, `out` is left as it was.
pub fn build_request_head(
    out: &mut Vec<u8>,
    head: &RequestHead<'_>,
    limits: &Limits,
    parsed: &mut Head,
) -> Result<BodyLength, RequestHeadError> {
    let Checked { path, host, body } = check(head).map_err(|e| RequestHeadError::of(e, head))?;
    let mut w = RequestHeadWriter::start(out, parsed, head.method, path);
    w.field(b"host", host);
    let mut cookies = 0;
    for &(name, value) in head.fields {
        match name {
            b"host" => {}
            // HTTP/2 may split a cookie into crumbs; the head carries one field (§8.2.3).
            b"cookie" => cookies += 1,
            _ => w.field(name, value),
        }
    }
    if cookies > 0 {
        let crumbs = head
            .fields
            .iter()
            .filter(|(name, _)| *name == b"cookie")
            .map(|&(_, value)| cookie_crumb(value))
            .filter(|crumb| !crumb.is_empty());
        w.field_of(b"cookie", crumbs, b"; ");
    }
    if body == BodyLength::Chunked {
        w.field(b"transfer-encoding", b"chunked");
    }
    // The limits an HTTP/1.1 request is held to, on the head as HTTP/1.1 carries it (the
    // empty line included, counted before it is written).
    const MSG: Message = Message::Request;
    let max_headers = limits.max_headers.min(MAX_HEADERS);
    let too_large = if w.fields() > max_headers {
        Some(HttpError::TooManyHeaders {
            msg: MSG,
            limit: max_headers,
        })
    } else if w.len() + 2 > limits.max_head_bytes {
        Some(HttpError::HeadTooLarge {
            msg: MSG,
            limit: limits.max_head_bytes,
        })
    } else {
        None
    };
    if let Some(e) = too_large {
        w.abandon();
        return Err(RequestHeadError::TooLarge(e));
    }
    w.finish();
    Ok(body)
}

#[cfg(test)]
mod tests;
