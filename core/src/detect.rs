//! First-bytes sniffing of plaintext connections: is this HTTP/1.x or HTTP/2 with prior
//! knowledge (h2c)? What Envoy's `envoy.filters.listener.http_inspector` tells filter chain
//! selection, as an application protocol (`http/1.0`, `http/1.1`, `h2c`) matched against a
//! chain's `application_protocols` ([`crate::filter_chain`]).
//!
//! [`sniff_http`] is a pure function of the bytes a connection has sent so far (peeked, not
//! consumed: the chain's own codec reads them again). It has no state: the runtime calls it
//! again on the longer prefix each time more bytes came, until it stops saying
//! [`HttpSniff::NeedMore`]. It allocates nothing and reads at most
//! [`MAX_HTTP_SNIFF_BYTES`].
//!
//! ## What it decides (Envoy's rules)
//!
//! - The HTTP/2 client preface (RFC 9113 §3.4, the same check as an HTTP listener's
//!   `codec: auto`, [`crate::http2::detect_preface`]), complete: `h2c`. A strict prefix of it
//!   waits for more.
//! - Otherwise an HTTP/1 request line, complete with its line end: `method SP request-target
//!   SP HTTP/d.d` and CRLF (or a bare LF, which Envoy's parser takes too), the method a token
//!   (RFC 9110 §5.6.2, any method), the target visible characters: `http/1.1` for version
//!   1.1, `http/1.0` for any other (as Envoy sets it).
//! - Anything else — a byte the request line cannot hold where it is — is not HTTP: the
//!   connection gets no application protocol (Envoy's `http_not_found`), and chains that ask
//!   for one do not match it.
//! - A request line still undecided after [`MAX_HTTP_SNIFF_BYTES`] is
//!   [`HttpSniff::TooLong`]: Envoy closes such a connection (its `read_error`), and so does
//!   the runtime.
//!
//! Invariant: the verdict for a prefix that is decided never changes when more bytes follow
//! (the decision looks only at bytes before the CRLF, or at the 24 preface bytes), so the
//! runtime can stop at the first decision. Fuzzed (`detect_http`): never panics, and a
//! decided verdict holds for every extension of the input.

use crate::http1::is_tchar;
use crate::http2::{PREFACE, Preface, detect_preface};

/// How many first bytes the sniffer looks at before it says [`HttpSniff::NotHttp`] (Envoy's
/// `http_inspector` reads at most 8 KiB as well).
pub const MAX_HTTP_SNIFF_BYTES: usize = 8192;

/// What the first bytes of a plaintext connection say.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HttpSniff {
    /// Undecided: wait for more bytes (the buffer holds a valid prefix of a request line or of
    /// the HTTP/2 preface, shorter than [`MAX_HTTP_SNIFF_BYTES`]).
    NeedMore,
    /// An HTTP/1.0 request line.
    Http10,
    /// An HTTP/1.1 request line.
    Http11,
    /// The complete HTTP/2 client preface.
    H2c,
    /// Not HTTP (or not recognisable as such).
    NotHttp,
    /// A valid start of a request line, still without its end after
    /// [`MAX_HTTP_SNIFF_BYTES`]: the connection is to be closed.
    TooLong,
}

impl HttpSniff {
    /// The application protocol a chain's `application_protocols` names it by (Envoy's), or
    /// `None` (undecided, or not HTTP).
    #[must_use]
    pub fn application_protocol(self) -> Option<&'static str> {
        match self {
            HttpSniff::Http10 => Some(HTTP10),
            HttpSniff::Http11 => Some(HTTP11),
            HttpSniff::H2c => Some(H2C),
            HttpSniff::NeedMore | HttpSniff::NotHttp | HttpSniff::TooLong => None,
        }
    }

    /// Whether the verdict is final.
    #[must_use]
    pub fn is_decided(self) -> bool {
        self != HttpSniff::NeedMore
    }
}

/// `http/1.0`: what the sniffer calls an HTTP/1.0 connection.
pub const HTTP10: &str = "http/1.0";
/// `http/1.1`.
pub const HTTP11: &str = "http/1.1";
/// `h2c`: HTTP/2 with prior knowledge, on plaintext.
pub const H2C: &str = "h2c";

/// The application protocols [`sniff_http`] can give a plaintext connection: the only ones a
/// chain for plaintext connections can match.
pub const PLAINTEXT_PROTOCOLS: [&str; 3] = [HTTP10, HTTP11, H2C];

/// Classifies the first bytes of a plaintext connection (any length; only the first
/// [`MAX_HTTP_SNIFF_BYTES`] are read). See the module doc.
#[must_use]
pub fn sniff_http(first: &[u8]) -> HttpSniff {
    let first = &first[..first.len().min(MAX_HTTP_SNIFF_BYTES)];
    match detect_preface(first) {
        Preface::Http2 => return HttpSniff::H2c,
        // An empty buffer is a prefix of everything.
        Preface::Partial if first.len() < PREFACE.len() => return HttpSniff::NeedMore,
        Preface::Partial | Preface::Other => {}
    }
    match request_line(first) {
        Line::NeedMore if first.len() < MAX_HTTP_SNIFF_BYTES => HttpSniff::NeedMore,
        Line::NeedMore => HttpSniff::TooLong,
        Line::Invalid => HttpSniff::NotHttp,
        Line::Version(b'1', b'1') => HttpSniff::Http11,
        Line::Version(..) => HttpSniff::Http10,
    }
}

enum Line {
    NeedMore,
    Invalid,
    /// The major and minor version digits of a complete request line.
    Version(u8, u8),
}

/// Checks `method SP target SP HTTP/1.x CRLF` at the start of `b`.
fn request_line(b: &[u8]) -> Line {
    // The method: one or more token characters, then one space.
    let method = b.iter().take_while(|&&c| is_tchar(c)).count();
    let Some(&after) = b.get(method) else {
        return Line::NeedMore;
    };
    if method == 0 || after != b' ' {
        return Line::Invalid;
    }
    // The request target: one or more visible characters (obs-text allowed), then a space.
    let rest = &b[method + 1..];
    let target = rest.iter().take_while(|&&c| c > b' ' && c != 0x7f).count();
    let Some(&after) = rest.get(target) else {
        return Line::NeedMore;
    };
    if target == 0 || after != b' ' {
        return Line::Invalid;
    }
    // The version (`HTTP/d.d`) and the line end.
    let rest = &rest[target + 1..];
    const NAME: &[u8] = b"HTTP/";
    let n = rest.len().min(NAME.len());
    if rest[..n] != NAME[..n] {
        return Line::Invalid;
    }
    let version = &rest[n..];
    let digit = |i: usize| version.get(i).map(u8::is_ascii_digit);
    match (digit(0), version.get(1), digit(2)) {
        (Some(false), ..) | (_, Some(b'.'), Some(false)) => return Line::Invalid,
        (_, Some(c), _) if *c != b'.' => return Line::Invalid,
        (Some(true), Some(_), Some(true)) => {}
        _ => return Line::NeedMore,
    }
    match &version[3..] {
        [] | [b'\r'] => Line::NeedMore,
        [b'\r', b'\n', ..] | [b'\n', ..] => Line::Version(version[0], version[2]),
        _ => Line::Invalid,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every prefix of a decided input is undecided or the same verdict, and the input with
    /// bytes after it keeps the verdict.
    fn decided(input: &[u8], want: HttpSniff) {
        assert_eq!(
            sniff_http(input),
            want,
            "{:?}",
            String::from_utf8_lossy(input)
        );
        for i in 0..input.len() {
            let v = sniff_http(&input[..i]);
            assert!(
                v == HttpSniff::NeedMore || v == want,
                "prefix {:?}: {v:?}",
                String::from_utf8_lossy(&input[..i])
            );
        }
        let mut longer = input.to_vec();
        longer.extend_from_slice(b"Host: x\r\n\r\n\x00\xff");
        assert_eq!(sniff_http(&longer), want);
    }

    #[test]
    fn http1_request_lines_are_told_by_version() {
        decided(b"GET / HTTP/1.1\r\n", HttpSniff::Http11);
        decided(b"POST /a?b=c HTTP/1.0\r\n", HttpSniff::Http10);
        decided(b"OPTIONS * HTTP/1.1\r\n", HttpSniff::Http11);
        decided(b"CONNECT a.example:443 HTTP/1.1\r\n", HttpSniff::Http11);
        decided(b"GET http://a.example/x HTTP/1.1\r\n", HttpSniff::Http11);
        // Any token is a method (extension methods included).
        decided(b"PURGE /cache HTTP/1.1\r\n", HttpSniff::Http11);
        // A bare LF ends the line too; a version other than 1.1 is HTTP/1.0 (Envoy's).
        decided(b"GET / HTTP/1.1\n", HttpSniff::Http11);
        decided(b"GET / HTTP/0.9\r\n", HttpSniff::Http10);
        decided(b"GET / HTTP/2.0\r\n", HttpSniff::Http10);
    }

    #[test]
    fn the_http2_preface_is_h2c_only_when_complete() {
        decided(PREFACE, HttpSniff::H2c);
        assert_eq!(sniff_http(&PREFACE[..23]), HttpSniff::NeedMore);
        assert_eq!(sniff_http(b""), HttpSniff::NeedMore);
        // Not the preface: a request line like any other (Envoy's parser reads it as one,
        // version 2.1, so HTTP/1.0).
        decided(b"PRI * HTTP/2.1\r\n\r\nSM\r\n\r\n", HttpSniff::Http10);
    }

    #[test]
    fn other_bytes_are_not_http() {
        for input in [
            &b"\x16\x03\x01\x02\x00"[..], // a TLS record
            b"SSH-2.0-OpenSSH_9.6\r\n",
            b"GET  / HTTP/1.1\r\n",
            b" GET / HTTP/1.1\r\n",
            b"GET / HTTP/1.12\r\n",
            b"GET / HTTP/1,1\r\n",
            b"GET / HTTP/a.1\r\n",
            b"GET / HTTP/1.1 \r\n",
            b"GET / HTTP/1.1\rx",
            b"GET /a\x01b HTTP/1.1\r\n",
            b"GET / http/1.1\r\n",
            b"\r\n",
        ] {
            decided(input, HttpSniff::NotHttp);
        }
    }

    #[test]
    fn a_line_that_does_not_end_within_the_limit_is_too_long() {
        let mut long = b"GET /".to_vec();
        long.resize(MAX_HTTP_SNIFF_BYTES - 1, b'a');
        assert_eq!(sniff_http(&long), HttpSniff::NeedMore);
        long.push(b'a');
        assert_eq!(sniff_http(&long), HttpSniff::TooLong);
        assert!(HttpSniff::TooLong.is_decided());
        assert_eq!(HttpSniff::TooLong.application_protocol(), None);
        // A request line that ends just within the limit is HTTP.
        let mut fits = b"GET /".to_vec();
        fits.resize(MAX_HTTP_SNIFF_BYTES - b" HTTP/1.1\r\n".len(), b'a');
        fits.extend_from_slice(b" HTTP/1.1\r\n");
        assert_eq!(fits.len(), MAX_HTTP_SNIFF_BYTES);
        assert_eq!(sniff_http(&fits), HttpSniff::Http11);
    }

    #[test]
    fn application_protocols_are_envoys_names() {
        assert_eq!(HttpSniff::Http10.application_protocol(), Some("http/1.0"));
        assert_eq!(HttpSniff::Http11.application_protocol(), Some("http/1.1"));
        assert_eq!(HttpSniff::H2c.application_protocol(), Some("h2c"));
        assert_eq!(HttpSniff::NotHttp.application_protocol(), None);
        assert!(!HttpSniff::NeedMore.is_decided());
    }
}
