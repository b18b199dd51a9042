//! gRPC over HTTP/2 details the proxy reads or writes: the `grpc-timeout` header
//! ([gRPC over HTTP/2](https://github.com/grpc/grpc/blob/master/doc/PROTOCOL-HTTP2.md):
//! `TimeoutValue TimeoutUnit`, at most 8 ASCII digits, then one of `H M S m u n`), whether a
//! request is gRPC (its `content-type`), and the answers the proxy gives a gRPC client itself:
//! trailers-only responses (HTTP 200, `grpc-status`, `grpc-message`) with Envoy's mapping from
//! why the proxy answered ([`local_status`]).

use std::time::Duration;

use super::exchange::ResponseFlag;

/// gRPC status codes the proxy produces or reads (a subset of the 17).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum GrpcStatus {
    /// 1: the call was cancelled.
    Cancelled = 1,
    /// 2: unknown error.
    Unknown = 2,
    /// 4: the deadline passed before the call completed.
    DeadlineExceeded = 4,
    /// 7: the caller may not do this.
    PermissionDenied = 7,
    /// 8: a resource (here: a circuit breaker) is exhausted.
    ResourceExhausted = 8,
    /// 12: the method is not implemented (here: no route).
    Unimplemented = 12,
    /// 13: internal error.
    Internal = 13,
    /// 14: the service is unavailable (no host, connect failure, reset); retrying may help.
    Unavailable = 14,
    /// 16: the caller is not authenticated.
    Unauthenticated = 16,
}

impl GrpcStatus {
    /// The numeric code.
    #[must_use]
    pub fn code(self) -> u8 {
        self as u8
    }
}

/// Whether a request's `content-type` is gRPC's: `application/grpc`, alone or followed by
/// `+format` or `;parameters`.
#[must_use]
pub fn is_grpc(content_type: &[u8]) -> bool {
    const GRPC: &[u8] = b"application/grpc";
    content_type.len() >= GRPC.len()
        && content_type[..GRPC.len()].eq_ignore_ascii_case(GRPC)
        && matches!(content_type.get(GRPC.len()), None | Some(b'+' | b';'))
}

/// The gRPC status of an answer the proxy gives a gRPC request itself (Envoy's mapping): by
/// why it answered when that says more than the HTTP status, else by the HTTP status
/// (Envoy's `Grpc::Utility::httpToGrpcStatus`).
#[must_use]
pub fn local_status(flag: ResponseFlag, http_status: u16) -> GrpcStatus {
    match flag {
        ResponseFlag::NoRoute => GrpcStatus::Unimplemented,
        ResponseFlag::NoHealthyUpstream
        | ResponseFlag::UpstreamConnectFailure
        | ResponseFlag::UpstreamConnectionTermination => GrpcStatus::Unavailable,
        ResponseFlag::UpstreamTimeout => GrpcStatus::DeadlineExceeded,
        ResponseFlag::UpstreamOverflow => GrpcStatus::ResourceExhausted,
        ResponseFlag::UpstreamProtocolError
        | ResponseFlag::DownstreamProtocolError
        | ResponseFlag::DownstreamLimit
        | ResponseFlag::UpgradeRefused
        | ResponseFlag::DirectResponse => http_to_grpc(http_status),
    }
}

/// Envoy's mapping of an HTTP status to a gRPC status.
#[must_use]
pub fn http_to_grpc(status: u16) -> GrpcStatus {
    match status {
        400 => GrpcStatus::Internal,
        401 => GrpcStatus::Unauthenticated,
        403 => GrpcStatus::PermissionDenied,
        404 => GrpcStatus::Unimplemented,
        429 | 502..=504 => GrpcStatus::Unavailable,
        _ => GrpcStatus::Unknown,
    }
}

/// Writes a trailers-only gRPC answer as an HTTP/1.1 response (the form the request path
/// writes to any downstream; over HTTP/2 it becomes one HEADERS frame that ends the stream):
/// HTTP 200, `content-type: application/grpc`, `grpc-status`, `grpc-message` (`message`
/// percent-encoded as gRPC requires), `extra_headers` (the listener's `server`), no body.
pub fn write_trailers_only(
    out: &mut Vec<u8>,
    status: GrpcStatus,
    message: &[u8],
    extra_headers: &[(&str, &[u8])],
    close: bool,
) {
    out.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
    for (name, value) in extra_headers {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"content-type: application/grpc\r\ngrpc-status: ");
    let code = status.code();
    if code >= 10 {
        out.push(b'0' + code / 10);
    }
    out.push(b'0' + code % 10);
    out.extend_from_slice(b"\r\ngrpc-message: ");
    push_grpc_message(out, message);
    out.extend_from_slice(b"\r\ncontent-length: 0\r\n");
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// Appends `message` as a `grpc-message` value: percent-encoded as gRPC requires (anything
/// outside printable ASCII, and `%` itself).
pub fn push_grpc_message(out: &mut Vec<u8>, message: &[u8]) {
    for &b in message {
        if (0x20..0x7f).contains(&b) && b != b'%' {
            out.push(b);
        } else {
            const HEX: &[u8; 16] = b"0123456789ABCDEF";
            out.extend_from_slice(&[b'%', HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]]);
        }
    }
}

/// The longest `grpc-timeout` value: 8 digits.
const MAX_VALUE: u64 = 99_999_999;

/// The units, finest first, with their length in nanoseconds.
const UNITS: [(u8, u64); 6] = [
    (b'n', 1),
    (b'u', 1_000),
    (b'm', 1_000_000),
    (b'S', 1_000_000_000),
    (b'M', 60_000_000_000),
    (b'H', 3_600_000_000_000),
];

/// Parses a `grpc-timeout` value; `None` when it is not 1–8 digits followed by a unit.
#[must_use]
pub fn parse_grpc_timeout(value: &[u8]) -> Option<Duration> {
    let (&unit, digits) = value.split_last()?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n = digits
        .iter()
        .fold(0u64, |n, &d| n * 10 + u64::from(d - b'0'));
    let nanos_per = UNITS.iter().find(|(u, _)| *u == unit)?.1;
    // 99_999_999 hours is about 3.6e20 ns: past u64, so multiply in u128.
    let nanos = u128::from(n) * u128::from(nanos_per);
    Some(Duration::new(
        (nanos / 1_000_000_000) as u64,
        (nanos % 1_000_000_000) as u32,
    ))
}

/// The `grpc-status` of an HTTP/1.1 chunked trailer section (its field lines, then the final
/// CRLF: what follows the last-chunk line, as [`crate::http1::ChunkedDecoder::trailers_start`]
/// locates it) — how a gRPC status arrives from an HTTP/1.1 upstream (an HTTP/1.1
/// gRPC bridge). `None` without the field, or when its value is not a code (0–255); the first
/// `grpc-status` line counts.
#[must_use]
pub fn status_in_trailers(section: &[u8]) -> Option<u8> {
    const NAME: &[u8] = b"grpc-status";
    let line = section.split(|&b| b == b'\n').find(|line| {
        line.len() > NAME.len()
            && line[..NAME.len()].eq_ignore_ascii_case(NAME)
            && line[NAME.len()] == b':'
    })?;
    let value = line[NAME.len() + 1..].trim_ascii();
    if value.is_empty() || value.len() > 3 || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    value
        .iter()
        .try_fold(0u8, |n, &d| n.checked_mul(10)?.checked_add(d - b'0'))
}

/// Writes `timeout` as a `grpc-timeout` value into `out` and returns it: the finest unit whose
/// value fits in 8 digits, rounded up to that unit (a time left that is not zero never becomes
/// `0`). A timeout past `99999999H` is written as that.
pub fn format_grpc_timeout(timeout: Duration, out: &mut [u8; 9]) -> &[u8] {
    let nanos = timeout.as_nanos();
    let (value, unit) = UNITS
        .iter()
        .map(|&(unit, per)| (nanos.div_ceil(u128::from(per)), unit))
        .find(|&(v, _)| v <= u128::from(MAX_VALUE))
        .unwrap_or((u128::from(MAX_VALUE), b'H'));
    let mut digits = [0u8; 8];
    let mut v = value as u64;
    let mut len = 0;
    loop {
        digits[len] = b'0' + (v % 10) as u8;
        len += 1;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    for i in 0..len {
        out[i] = digits[len - 1 - i];
    }
    out[len] = unit;
    &out[..=len]
}

#[cfg(test)]
mod grpc_tests {
    use super::*;

    #[test]
    fn grpc_content_types() {
        assert!(is_grpc(b"application/grpc"));
        assert!(is_grpc(b"application/grpc+proto"));
        assert!(is_grpc(b"Application/GRPC;charset=utf-8"));
        assert!(!is_grpc(b"application/grpc-web"));
        assert!(!is_grpc(b"application/json"));
        assert!(!is_grpc(b"application/grp"));
    }

    #[test]
    fn local_answers_map_like_envoy() {
        use GrpcStatus::*;
        let cases = [
            (ResponseFlag::NoRoute, 404, Unimplemented),
            (ResponseFlag::NoHealthyUpstream, 503, Unavailable),
            (ResponseFlag::UpstreamConnectFailure, 502, Unavailable),
            (
                ResponseFlag::UpstreamConnectionTermination,
                502,
                Unavailable,
            ),
            (ResponseFlag::UpstreamTimeout, 504, DeadlineExceeded),
            (ResponseFlag::UpstreamOverflow, 503, ResourceExhausted),
            (ResponseFlag::UpstreamProtocolError, 502, Unavailable),
            (ResponseFlag::DownstreamProtocolError, 400, Internal),
            (ResponseFlag::DownstreamLimit, 431, Unknown),
        ];
        for (flag, http, grpc) in cases {
            assert_eq!(local_status(flag, http), grpc, "{flag:?}");
        }
    }

    #[test]
    fn status_from_a_chunked_trailer_section() {
        assert_eq!(status_in_trailers(b"grpc-status: 7\r\n\r\n"), Some(7));
        assert_eq!(
            status_in_trailers(b"x-a: 1\r\nGRPC-Status:14\r\ngrpc-message: no\r\n\r\n"),
            Some(14)
        );
        assert_eq!(status_in_trailers(b"grpc-status: 0\n\n"), Some(0));
        assert_eq!(status_in_trailers(b"\r\n"), None);
        assert_eq!(
            status_in_trailers(b"grpc-status-details-bin: 3\r\n\r\n"),
            None
        );
        assert_eq!(status_in_trailers(b"grpc-status: x\r\n\r\n"), None);
        assert_eq!(status_in_trailers(b"grpc-status: 256\r\n\r\n"), None);
        assert_eq!(status_in_trailers(b"grpc-status: \r\n\r\n"), None);
    }

    #[test]
    fn trailers_only_answer() {
        let mut out = Vec::new();
        write_trailers_only(
            &mut out,
            GrpcStatus::Unavailable,
            b"no healthy upstream\n%",
            &[],
            false,
        );
        assert_eq!(
            out,
            b"HTTP/1.1 200 OK\r\ncontent-type: application/grpc\r\ngrpc-status: 14\r\n\
              grpc-message: no healthy upstream%0A%25\r\ncontent-length: 0\r\n\r\n"
        );
        out.clear();
        write_trailers_only(
            &mut out,
            GrpcStatus::DeadlineExceeded,
            b"",
            &[("server", b"edge")],
            true,
        );
        assert!(out.starts_with(
            b"HTTP/1.1 200 OK\r\nserver: edge\r\ncontent-type: application/grpc\r\ngrpc-status: 4\r\n"
        ));
        assert!(out.ends_with(b"connection: close\r\n\r\n"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_each_unit() {
        assert_eq!(parse_grpc_timeout(b"1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_grpc_timeout(b"2M"), Some(Duration::from_secs(120)));
        assert_eq!(parse_grpc_timeout(b"3S"), Some(Duration::from_secs(3)));
        assert_eq!(
            parse_grpc_timeout(b"250m"),
            Some(Duration::from_millis(250))
        );
        assert_eq!(parse_grpc_timeout(b"7u"), Some(Duration::from_micros(7)));
        assert_eq!(parse_grpc_timeout(b"0n"), Some(Duration::ZERO));
        assert_eq!(
            parse_grpc_timeout(b"99999999H"),
            Some(Duration::from_secs(99_999_999 * 3600))
        );
    }

    #[test]
    fn rejects_malformed_values() {
        for bad in [
            &b""[..],
            b"S",
            b"100",
            b"100s",
            b"123456789S",
            b"-1S",
            b"1.5S",
            b" 1S",
            b"1S ",
            b"1x",
        ] {
            assert_eq!(
                parse_grpc_timeout(bad),
                None,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn formats_in_the_finest_unit_that_fits() {
        let mut buf = [0u8; 9];
        assert_eq!(
            format_grpc_timeout(Duration::from_nanos(5), &mut buf),
            b"5n"
        );
        assert_eq!(
            format_grpc_timeout(Duration::from_millis(250), &mut buf),
            b"250000u"
        );
        assert_eq!(
            format_grpc_timeout(Duration::from_secs(30), &mut buf),
            b"30000000u"
        );
        assert_eq!(
            format_grpc_timeout(Duration::from_secs(200_000), &mut buf),
            b"200000S"
        );
        assert_eq!(format_grpc_timeout(Duration::ZERO, &mut buf), b"0n");
        // Rounded up: 1 ns past 100 ms in microseconds.
        assert_eq!(
            format_grpc_timeout(Duration::new(0, 100_000_001), &mut buf),
            b"100001u"
        );
        assert_eq!(format_grpc_timeout(Duration::MAX, &mut buf), b"99999999H");
    }

    proptest! {
        /// Formatting then parsing gives the timeout back, rounded up by less than the unit
        /// chosen, and the unit is the finest that fits 8 digits.
        #[test]
        fn format_parse_round_trip(secs in 0u64..400_000_000_000, nanos in 0u32..1_000_000_000) {
            let d = Duration::new(secs, nanos);
            let mut buf = [0u8; 9];
            let text = format_grpc_timeout(d, &mut buf).to_vec();
            prop_assert!(text.len() >= 2 && text.len() <= 9);
            let back = parse_grpc_timeout(&text).expect("formatted value parses");
            let unit = UNITS.iter().find(|(u, _)| *u == *text.last().unwrap()).unwrap().1;
            if d.as_nanos() <= u128::from(MAX_VALUE) * u128::from(UNITS[5].1) {
                prop_assert!(back >= d);
                prop_assert!(back.as_nanos() - d.as_nanos() < u128::from(unit));
            }
        }

        /// Whatever the bytes, parsing never panics, and what parses formats back to a value
        /// that parses to at least as long.
        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..12)) {
            if let Some(d) = parse_grpc_timeout(&bytes) {
                let mut buf = [0u8; 9];
                let again = parse_grpc_timeout(format_grpc_timeout(d, &mut buf)).unwrap();
                prop_assert!(again >= d);
            }
        }
    }
}
