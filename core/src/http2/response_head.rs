//! An HTTP/2 upstream's response head as the request path reads it: [`build_response_head`]
//! writes the `:status` and the HPACK-decoded fields with the HTTP/1 codec's
//! [`ResponseHeadWriter`] — the `Head` a parse of an HTTP/1.1 answer gives the path — without
//! parsing anything back.
//!
//! What it writes is what the HTTP/2 upstream adapter formatted as HTTP/1.1 text before (and the
//! path then parsed): the status line with the reason phrase given, the fields in order but the
//! connection-specific ones (RFC 9113 §8.2.2; an HTTP/2 library refuses them before), and, for
//! an answer that may have a body but has no `content-length`, the framing its body is given in:
//! `content-length: 0` when the HEADERS ended the stream, else `transfer-encoding: chunked` (the
//! adapter then frames DATA as chunks, trailers as a chunked trailer section). An answer to
//! `HEAD`, a 1xx, 204 or 304 gets no framing field (it has no body).
//!
//! Invariant (property-tested here and fuzzed, `fuzz/fuzz_targets/http2_response_head.rs`): for
//! any answer (names that are tokens, values without CR or LF — what `h2` hands over), the
//! bytes are those of that formatting, and the result is that of `parse_response` on them under
//! the same limits — the same `Head`, span by span, or the same error (502 either way).

use crate::http1::{Head, HttpError, Limits, Method, ResponseHeadWriter};

use super::is_connection_specific;

/// An HTTP/2 answer's head, as its HEADERS frame carried it.
#[derive(Clone, Copy, Debug)]
pub struct ResponseHead<'a, I> {
    /// `:status` (three digits).
    pub status: u16,
    /// The reason phrase to write (HTTP/2 has none: the status code's usual one, or empty).
    pub reason: &'a [u8],
    /// The fields, in order (lowercase token names).
    pub fields: I,
    /// The HEADERS frame ended the stream (no body, no trailers).
    pub end_stream: bool,
}

/// Writes an HTTP/2 answer's head at the end of `out` into `head` (see the module doc), as the
/// answer to a request with `request_method`; `head`'s spans are relative to where `out` ended.
/// On an error (the parse's: every one is answered 502), `out` is left as it was.
pub fn build_response_head<'f, I>(
    out: &mut Vec<u8>,
    answer: ResponseHead<'_, I>,
    request_method: Method,
    limits: &Limits,
    head: &mut Head,
) -> Result<(), HttpError>
where
    I: Iterator<Item = (&'f [u8], &'f [u8])>,
{
    let mut w = ResponseHeadWriter::start(out, head, answer.status, answer.reason, limits);
    let mut content_length = false;
    for (name, value) in answer.fields {
        if is_connection_specific(name) {
            continue;
        }
        content_length |= name.eq_ignore_ascii_case(b"content-length");
        w.field(name, value);
    }
    let status = answer.status;
    let bodiless = request_method == Method::Head
        || (100..200).contains(&status)
        || status == 204
        || status == 304;
    if !bodiless && !content_length {
        if answer.end_stream {
            w.field(b"content-length", b"0");
        } else {
            w.field(b"transfer-encoding", b"chunked");
        }
    }
    w.finish(request_method).map(|_| ())
}

#[cfg(test)]
mod tests;
