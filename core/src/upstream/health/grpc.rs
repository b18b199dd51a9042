//! The messages of the `grpc` health probe (`grpc.health.v1.Health/Check`, Envoy's
//! `grpc_health_check`), and the verdict on its answer. No IO: the runtime makes the HTTP/2
//! call and hands the answer's status, headers and body here.
//!
//! ## Wire format
//!
//! A gRPC message is framed as one byte of flags (0: not compressed), a 4-byte big-endian
//! length, then the protobuf bytes. The request is `HealthCheckRequest { string service = 1; }`
//! ([`encode_request`]); the answer `HealthCheckResponse { ServingStatus status = 1; }` with
//! `UNKNOWN = 0, SERVING = 1, NOT_SERVING = 2, SERVICE_UNKNOWN = 3`.
//!
//! ## The verdict ([`check_answer`])
//!
//! Healthy only when every one of these holds (Envoy's rules):
//! - the HTTP status is 200 and the `content-type` is gRPC's;
//! - `grpc-status` (trailers, or the headers of a trailers-only answer) is `0`;
//! - the body is exactly one message, not compressed, that decodes to `status = SERVING`.
//!
//! The answer is untrusted input: [`decode_response`] takes at most [`MAX_RESPONSE_BYTES`]
//! (the runtime stops reading past it), reads varints of at most 10 bytes, skips unknown fields
//! of the four wire types proto3 uses, refuses groups and truncation, and never panics
//! (fuzzed by `fuzz/fuzz_targets/grpc_health.rs`).

use thiserror::Error;

/// The largest answer body read: a `HealthCheckResponse` is 2 bytes, plus its 5-byte frame.
pub const MAX_RESPONSE_BYTES: usize = 16 * 1024;

/// The longest `service_name` accepted by the config (it goes in one request message).
pub const MAX_SERVICE_NAME: usize = 1024;

/// The method path of the call.
pub const PATH: &str = "/grpc.health.v1.Health/Check";

/// `HealthCheckResponse.status`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServingStatus {
    /// 0 (also an empty message).
    Unknown,
    /// 1: the only healthy answer.
    Serving,
    /// 2.
    NotServing,
    /// 3: the server does not know the service asked about.
    ServiceUnknown,
    /// Any other value (proto3 enums are open).
    Other(u64),
}

impl ServingStatus {
    fn from_value(v: u64) -> Self {
        match v {
            0 => ServingStatus::Unknown,
            1 => ServingStatus::Serving,
            2 => ServingStatus::NotServing,
            3 => ServingStatus::ServiceUnknown,
            n => ServingStatus::Other(n),
        }
    }
}

/// Why an answer is not healthy.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum ProbeError {
    /// The HTTP status is not 200.
    #[error("HTTP status {0}, not 200")]
    HttpStatus(u16),
    /// The `content-type` is missing or not `application/grpc*`.
    #[error("not a gRPC answer (content-type)")]
    NotGrpc,
    /// No `grpc-status` in the trailers nor in trailers-only headers.
    #[error("no grpc-status")]
    NoGrpcStatus,
    /// A `grpc-status` other than 0 (`None`: not a number).
    #[error("grpc-status {0:?}")]
    GrpcStatus(Option<u32>),
    /// The body is not one well-formed `HealthCheckResponse`.
    #[error("bad response message: {0}")]
    Decode(#[from] DecodeError),
    /// The server answered, but not `SERVING`.
    #[error("status {0:?}")]
    NotServing(ServingStatus),
}

/// Why a response body does not decode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Error)]
pub enum DecodeError {
    /// Longer than [`MAX_RESPONSE_BYTES`].
    #[error("longer than {MAX_RESPONSE_BYTES} bytes")]
    TooLarge,
    /// No message: an empty body, or only empty frames.
    #[error("no message")]
    NoMessage,
    /// More than one message in a unary answer.
    #[error("more than one message")]
    Streaming,
    /// The frame ends before its length, or a field before its end.
    #[error("truncated")]
    Truncated,
    /// The frame's flags say compressed (the probe offers no compression), or are unknown.
    #[error("compressed or unknown frame flags {0:#x}")]
    Flags(u8),
    /// A varint longer than 10 bytes.
    #[error("malformed varint")]
    Varint,
    /// A wire type proto3 does not use (groups, 6, 7), or field 1 not as a varint.
    #[error("wire type {wire_type} for field {field}")]
    WireType {
        /// The field number.
        field: u64,
        /// Its wire type.
        wire_type: u8,
    },
}

/// Appends the framed `HealthCheckRequest { service }` to `out`.
pub fn encode_request(service: &str, out: &mut Vec<u8>) {
    let mut message = Vec::with_capacity(service.len() + 11);
    if !service.is_empty() {
        message.push(0x0a); // field 1, length-delimited
        put_varint(service.len() as u64, &mut message);
        message.extend_from_slice(service.as_bytes());
    }
    out.push(0);
    out.extend_from_slice(&(message.len() as u32).to_be_bytes());
    out.extend_from_slice(&message);
}

fn put_varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Reads a varint at `*at`, moving past it.
fn varint(buf: &[u8], at: &mut usize) -> Result<u64, DecodeError> {
    let mut v: u64 = 0;
    for i in 0..10 {
        let Some(&b) = buf.get(*at) else {
            return Err(DecodeError::Truncated);
        };
        *at += 1;
        v |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err(DecodeError::Varint)
}

/// `bytes` more from `*at`, moving past them.
fn skip(buf: &[u8], at: &mut usize, bytes: u64) -> Result<(), DecodeError> {
    let end = usize::try_from(bytes)
        .ok()
        .and_then(|n| at.checked_add(n))
        .filter(|&end| end <= buf.len())
        .ok_or(DecodeError::Truncated)?;
    *at = end;
    Ok(())
}

/// Decodes one `HealthCheckResponse` message (the protobuf bytes, unframed).
pub fn decode_message(msg: &[u8]) -> Result<ServingStatus, DecodeError> {
    let mut status = 0;
    let mut at = 0;
    while at < msg.len() {
        let key = varint(msg, &mut at)?;
        let field = key >> 3;
        let wire_type = (key & 7) as u8;
        match (field, wire_type) {
            (1, 0) => status = varint(msg, &mut at)?,
            (1, _) => return Err(DecodeError::WireType { field, wire_type }),
            (_, 0) => {
                varint(msg, &mut at)?;
            }
            (_, 1) => skip(msg, &mut at, 8)?,
            (_, 2) => {
                let len = varint(msg, &mut at)?;
                skip(msg, &mut at, len)?;
            }
            (_, 5) => skip(msg, &mut at, 4)?,
            _ => return Err(DecodeError::WireType { field, wire_type }),
        }
    }
    Ok(ServingStatus::from_value(status))
}

/// Decodes a unary answer's body: exactly one framed, uncompressed message. Empty frames are
/// allowed around it (as Envoy allows), but an empty body is no answer.
pub fn decode_response(body: &[u8]) -> Result<ServingStatus, DecodeError> {
    if body.len() > MAX_RESPONSE_BYTES {
        return Err(DecodeError::TooLarge);
    }
    let mut found = None;
    let mut rest = body;
    while !rest.is_empty() {
        let Some((head, tail)) = rest.split_first_chunk::<5>() else {
            return Err(DecodeError::Truncated);
        };
        let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
        if tail.len() < len {
            return Err(DecodeError::Truncated);
        }
        let (msg, tail) = tail.split_at(len);
        rest = tail;
        if head[0] != 0 {
            return Err(DecodeError::Flags(head[0]));
        }
        if len == 0 {
            // Envoy skips empty frames; an empty message (status UNKNOWN) is no answer then.
            continue;
        }
        if found.is_some() {
            return Err(DecodeError::Streaming);
        }
        found = Some(decode_message(msg)?);
    }
    found.ok_or(DecodeError::NoMessage)
}

/// The verdict on one answer: `Ok` only for HTTP 200, a gRPC content-type, `grpc-status: 0`
/// (`grpc_status`: from the trailers, or from the headers when the answer is trailers-only)
/// and one message saying `SERVING`. See the module doc.
pub fn check_answer(
    http_status: u16,
    content_type: Option<&[u8]>,
    grpc_status: Option<&[u8]>,
    body: &[u8],
) -> Result<(), ProbeError> {
    if http_status != 200 {
        return Err(ProbeError::HttpStatus(http_status));
    }
    if !content_type.is_some_and(is_grpc) {
        return Err(ProbeError::NotGrpc);
    }
    let status = grpc_status.ok_or(ProbeError::NoGrpcStatus)?;
    let code = std::str::from_utf8(status)
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok());
    if code != Some(0) {
        return Err(ProbeError::GrpcStatus(code));
    }
    match decode_response(body)? {
        ServingStatus::Serving => Ok(()),
        other => Err(ProbeError::NotServing(other)),
    }
}

/// `application/grpc`, alone or followed by `+format` or `;parameters` (as
/// `l7::grpc::is_grpc`, which this layer does not read).
fn is_grpc(content_type: &[u8]) -> bool {
    const GRPC: &[u8] = b"application/grpc";
    content_type.len() >= GRPC.len()
        && content_type[..GRPC.len()].eq_ignore_ascii_case(GRPC)
        && matches!(content_type.get(GRPC.len()), None | Some(b'+' | b';'))
}

/// Whether `s` is an `:authority` the probe can send: a host (a name or IPv4 address in
/// RFC 3986's reg-name characters, or a bracketed IPv6 address) with an optional numeric port;
/// no userinfo, path, spaces.
#[must_use]
pub fn is_authority(s: &str) -> bool {
    if s.is_empty() || s.len() > 255 {
        return false;
    }
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let Some((ip, after)) = rest.split_once(']') else {
            return false;
        };
        if ip.is_empty()
            || !ip
                .bytes()
                .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
        {
            return false;
        }
        match after {
            "" => ("x", None),
            _ => match after.strip_prefix(':') {
                Some(port) => ("x", Some(port)),
                None => return false,
            },
        }
    } else {
        match s.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (s, None),
        }
    };
    let host_ok = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=".contains(&b));
    let port_ok =
        port.is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()));
    host_ok && port_ok
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn frame(msg: &[u8]) -> Vec<u8> {
        let mut out = vec![0];
        out.extend_from_slice(&(msg.len() as u32).to_be_bytes());
        out.extend_from_slice(msg);
        out
    }

    #[test]
    fn the_request_is_one_framed_message_with_the_service() {
        let mut out = Vec::new();
        encode_request("", &mut out);
        assert_eq!(out, [0, 0, 0, 0, 0]);
        out.clear();
        encode_request("echo.Echo", &mut out);
        let mut want = vec![0, 0, 0, 0, 11, 0x0a, 9];
        want.extend_from_slice(b"echo.Echo");
        assert_eq!(out, want);
        // A name of 200 bytes: a 2-byte length varint.
        out.clear();
        encode_request(&"s".repeat(200), &mut out);
        assert_eq!(&out[..8], &[0, 0, 0, 0, 203, 0x0a, 0xc8, 0x01]);
    }

    #[test]
    fn serving_statuses_decode() {
        assert_eq!(decode_response(&frame(&[8, 1])), Ok(ServingStatus::Serving));
        assert_eq!(
            decode_response(&frame(&[8, 2])),
            Ok(ServingStatus::NotServing)
        );
        assert_eq!(
            decode_response(&frame(&[8, 3])),
            Ok(ServingStatus::ServiceUnknown)
        );
        assert_eq!(decode_response(&frame(&[8, 0])), Ok(ServingStatus::Unknown));
        assert_eq!(
            decode_response(&frame(&[8, 0x80, 0x01])),
            Ok(ServingStatus::Other(128))
        );
        // Unknown fields of every wire type are skipped; the last field 1 wins.
        let msg = [
            0x10, 0x05, // field 2 varint
            0x19, 1, 2, 3, 4, 5, 6, 7, 8, // field 3 fixed64
            0x22, 2, b'h', b'i', // field 4 bytes
            0x2d, 1, 2, 3, 4, // field 5 fixed32
            8, 2, 8, 1,
        ];
        assert_eq!(decode_response(&frame(&msg)), Ok(ServingStatus::Serving));
        // Empty frames around the message are allowed.
        let mut body = frame(&[]);
        body.extend(frame(&[8, 1]));
        body.extend(frame(&[]));
        assert_eq!(decode_response(&body), Ok(ServingStatus::Serving));
    }

    #[test]
    fn malformed_bodies_are_errors() {
        assert_eq!(decode_response(&[]), Err(DecodeError::NoMessage));
        // An empty message is status UNKNOWN, skipped as an empty frame: no answer.
        assert_eq!(decode_response(&frame(&[])), Err(DecodeError::NoMessage));
        assert_eq!(decode_response(&[0, 0, 0]), Err(DecodeError::Truncated));
        assert_eq!(
            decode_response(&[0, 0, 0, 0, 3, 8, 1]),
            Err(DecodeError::Truncated)
        );
        let mut two = frame(&[8, 1]);
        two.extend(frame(&[8, 1]));
        assert_eq!(decode_response(&two), Err(DecodeError::Streaming));
        let mut compressed = frame(&[8, 1]);
        compressed[0] = 1;
        assert_eq!(decode_response(&compressed), Err(DecodeError::Flags(1)));
        assert_eq!(decode_response(&frame(&[8])), Err(DecodeError::Truncated));
        assert_eq!(
            decode_response(&frame(&[
                8, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 1
            ])),
            Err(DecodeError::Varint)
        );
        assert_eq!(
            decode_response(&frame(&[0x0a, 1, 1])),
            Err(DecodeError::WireType {
                field: 1,
                wire_type: 2
            })
        );
        assert_eq!(
            decode_response(&frame(&[0x13])),
            Err(DecodeError::WireType {
                field: 2,
                wire_type: 3
            })
        );
        assert_eq!(
            decode_response(&frame(&[0x12, 0xff, 0xff, 0xff, 0xff, 0x0f])),
            Err(DecodeError::Truncated)
        );
        let big = vec![0u8; MAX_RESPONSE_BYTES + 1];
        assert_eq!(decode_response(&big), Err(DecodeError::TooLarge));
    }

    #[test]
    fn only_200_grpc_status_0_and_serving_is_healthy() {
        let ct = Some(&b"application/grpc"[..]);
        let ok = Some(&b"0"[..]);
        let serving = frame(&[8, 1]);
        assert_eq!(check_answer(200, ct, ok, &serving), Ok(()));
        assert_eq!(
            check_answer(200, Some(b"application/grpc+proto"), ok, &serving),
            Ok(())
        );
        assert_eq!(
            check_answer(503, ct, ok, &serving),
            Err(ProbeError::HttpStatus(503))
        );
        assert_eq!(
            check_answer(200, Some(b"text/plain"), ok, &serving),
            Err(ProbeError::NotGrpc)
        );
        assert_eq!(
            check_answer(200, None, ok, &serving),
            Err(ProbeError::NotGrpc)
        );
        assert_eq!(
            check_answer(200, ct, None, &serving),
            Err(ProbeError::NoGrpcStatus)
        );
        assert_eq!(
            check_answer(200, ct, Some(b"12"), &[]),
            Err(ProbeError::GrpcStatus(Some(12)))
        );
        assert_eq!(
            check_answer(200, ct, Some(b"x"), &serving),
            Err(ProbeError::GrpcStatus(None))
        );
        assert_eq!(
            check_answer(200, ct, ok, &frame(&[8, 2])),
            Err(ProbeError::NotServing(ServingStatus::NotServing))
        );
        assert_eq!(
            check_answer(200, ct, ok, &frame(&[8, 3])),
            Err(ProbeError::NotServing(ServingStatus::ServiceUnknown))
        );
        assert_eq!(
            check_answer(200, ct, ok, &[]),
            Err(ProbeError::Decode(DecodeError::NoMessage))
        );
    }

    #[test]
    fn authorities() {
        for ok in ["app", "app.ns.svc:8080", "10.0.0.1:80", "[::1]:80"] {
            assert!(is_authority(ok), "{ok}");
        }
        for bad in [
            "",
            "a b",
            "a/b",
            "u@h",
            "a?b",
            "a#b",
            "outbound|80||x",
            "a:b",
            "a:1:2",
            "a[b",
            "[::1",
            "[::1]x",
            "a%2",
            ":80",
            "a:",
        ] {
            assert!(!is_authority(bad), "{bad}");
        }
    }

    proptest! {
        #[test]
        fn decoding_never_panics(body in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode_response(&body);
            let _ = decode_message(&body);
        }

        #[test]
        fn a_framed_status_decodes_to_itself(status in any::<u64>(), junk in 2u64..100) {
            // An unknown varint field before it does not matter.
            let mut msg = Vec::new();
            put_varint(junk << 3, &mut msg);
            put_varint(status, &mut msg);
            msg.push(8);
            put_varint(status, &mut msg);
            prop_assert_eq!(decode_response(&frame(&msg)), Ok(ServingStatus::from_value(status)));
        }

        #[test]
        fn requests_round_trip(service in "[a-zA-Z0-9._]{0,300}") {
            let mut out = Vec::new();
            encode_request(&service, &mut out);
            let len = u32::from_be_bytes([out[1], out[2], out[3], out[4]]) as usize;
            prop_assert_eq!(len + 5, out.len());
            if service.is_empty() {
                prop_assert_eq!(len, 0);
            } else {
                let mut at = 6;
                let n = varint(&out, &mut at).unwrap() as usize;
                prop_assert_eq!(&out[at..at + n], service.as_bytes());
            }
        }
    }
}
