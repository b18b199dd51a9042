//! HTTP/2 semantics the proxy needs beside the `h2` crate (which the runtime uses for framing,
//! HPACK and flow control): recognizing a connection's client preface, checking a request head
//! and writing it as the `http1::Head` the request path reads ([`request_head`]), writing an
//! upstream's answer as the `Head` the path reads ([`response_head`]), translating
//! message heads between HTTP/2 and the HTTP/1.1 the upstream path speaks ([`translate`]), Envoy's
//! rule against clients that reset their streams prematurely ([`premature`]), and spotting a
//! client's GOAWAY in its inbound bytes ([`goaway`]).
//!
//! Nothing here reads a socket or knows an `h2` type: heads come in as neutral byte pairs, so the
//! same code is unit-tested, property-tested and fuzzed without a connection.

pub mod goaway;
pub mod premature;
pub mod request_head;
pub mod response_head;
pub mod translate;

pub use request_head::{RequestHeadError, build_request_head};
pub use response_head::{ResponseHead, build_response_head};
pub use translate::{
    BodyLength, ContentLengthCheck, TranslateError, is_connection_specific, request_fields,
    request_to_http1, response_fields, te_wants_trailers,
};

/// The HTTP/2 client connection preface (RFC 9113 §3.4): a connection that starts with it
/// speaks HTTP/2 with prior knowledge (h2c); no HTTP/1.1 request starts like it.
pub const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// What the first bytes of a connection say about HTTP/2.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Preface {
    /// The bytes are the full preface.
    Http2,
    /// The bytes are a strict prefix of the preface: read more to decide.
    Partial,
    /// Not HTTP/2 prior knowledge (HTTP/1.1, or anything else).
    Other,
}

/// Classifies the first bytes read from a connection (any length).
#[must_use]
pub fn detect_preface(first: &[u8]) -> Preface {
    let n = first.len().min(PREFACE.len());
    if first[..n] != PREFACE[..n] {
        Preface::Other
    } else if n == PREFACE.len() {
        Preface::Http2
    } else {
        Preface::Partial
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preface_detection() {
        assert_eq!(detect_preface(PREFACE), Preface::Http2);
        assert_eq!(
            detect_preface(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0"),
            Preface::Http2
        );
        assert_eq!(detect_preface(b""), Preface::Partial);
        assert_eq!(detect_preface(b"PRI * HT"), Preface::Partial);
        assert_eq!(detect_preface(b"PRI * HTTP/1.1\r\n"), Preface::Other);
        assert_eq!(detect_preface(b"GET / HTTP/1.1\r\n"), Preface::Other);
        assert_eq!(detect_preface(b"P"), Preface::Partial);
    }
}
