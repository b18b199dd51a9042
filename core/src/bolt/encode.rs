//! Encoders for the frames the proxy makes itself: its own responses (no route, overflow,
//! timeout, ...), heartbeat replies, and requests (health checks, tests, benches). Forwarded
//! frames are never re-encoded; see [`super::set_request_id`].

use super::{
    BoltError, CMD_HEARTBEAT, CMD_RESPONSE, CMD_VERSION, Frame, Kind, NULL_LEN, ResponseStatus,
    Version, crc32,
};

/// A request to encode with [`encode_request`].
#[derive(Clone, Copy, Debug)]
pub struct RequestSpec<'a> {
    /// v1 or v2 (a CRC is appended when the version carries one).
    pub version: Version,
    /// A oneway request (`type` 2) rather than a request (`type` 1).
    pub oneway: bool,
    /// Command code: [`super::CMD_REQUEST`], or [`super::CMD_HEARTBEAT`] for a heartbeat.
    pub cmd_code: u16,
    /// Command version, normally [`CMD_VERSION`].
    pub cmd_version: u8,
    /// Request id.
    pub request_id: u32,
    /// Serializer id.
    pub codec: u8,
    /// Timeout in milliseconds (-1 for a heartbeat).
    pub timeout_ms: i32,
    /// Class name.
    pub class: &'a [u8],
    /// Header pairs in order; a `None` value is written as a null.
    pub header: &'a [(&'a [u8], Option<&'a [u8]>)],
    /// Content.
    pub content: &'a [u8],
}

fn check_len(field: &'static str, len: usize, max: u64) -> Result<(), BoltError> {
    if len as u64 > max {
        return Err(BoltError::TooLong { field, len, max });
    }
    Ok(())
}

/// The encoded length of a header section.
fn header_len<'h>(pairs: impl Iterator<Item = (&'h [u8], Option<&'h [u8]>)>) -> usize {
    pairs
        .map(|(k, v)| 8 + k.len() + v.map_or(0, <[u8]>::len))
        .sum()
}

fn put_string(out: &mut Vec<u8>, s: Option<&[u8]>) {
    match s {
        // A string longer than u32::MAX cannot be in a ≤ 65535-byte section (checked before).
        Some(s) => out.extend_from_slice(&(s.len() as u32).to_be_bytes()),
        None => out.extend_from_slice(&NULL_LEN.to_be_bytes()),
    }
    out.extend_from_slice(s.unwrap_or_default());
}

/// Writes a whole frame; `timeout_or_status` is the i32 timeout of a request or the u16 status of
/// a response.
#[allow(clippy::too_many_arguments)]
fn encode_frame<'h>(
    out: &mut Vec<u8>,
    version: Version,
    kind: Kind,
    cmd_code: u16,
    cmd_version: u8,
    request_id: u32,
    codec: u8,
    timeout_or_status: i32,
    class: &[u8],
    header: impl Iterator<Item = (&'h [u8], Option<&'h [u8]>)> + Clone,
    content: &[u8],
) -> Result<(), BoltError> {
    let hlen = header_len(header.clone());
    check_len("class", class.len(), u64::from(u16::MAX))?;
    check_len("header", hlen, u64::from(u16::MAX))?;
    check_len("content", content.len(), u64::from(u32::MAX))?;

    let start = out.len();
    let fixed = version.fixed_header_len(kind);
    out.reserve(fixed + class.len() + hlen + content.len() + version.trailer_len());
    out.push(version.protocol_byte());
    if let Version::V2 { ver1, .. } = version {
        out.push(ver1);
    }
    out.push(kind.code());
    out.extend_from_slice(&cmd_code.to_be_bytes());
    out.push(cmd_version);
    out.extend_from_slice(&request_id.to_be_bytes());
    out.push(codec);
    if let Version::V2 { switch, .. } = version {
        out.push(switch);
    }
    match kind {
        Kind::Response => out.extend_from_slice(&(timeout_or_status as u16).to_be_bytes()),
        Kind::Request | Kind::Oneway => out.extend_from_slice(&timeout_or_status.to_be_bytes()),
    }
    out.extend_from_slice(&(class.len() as u16).to_be_bytes());
    out.extend_from_slice(&(hlen as u16).to_be_bytes());
    out.extend_from_slice(&(content.len() as u32).to_be_bytes());
    debug_assert_eq!(out.len() - start, fixed);
    out.extend_from_slice(class);
    for (k, v) in header {
        put_string(out, Some(k));
        put_string(out, v);
    }
    out.extend_from_slice(content);
    if version.has_crc() {
        let crc = crc32(&out[start..]);
        out.extend_from_slice(&crc.to_be_bytes());
    }
    Ok(())
}

/// Appends an RPC response (`cmd_code` 2, command version 1) to `out`: what the proxy sends when
/// it answers a request itself (no route → [`ResponseStatus::NoProcessor`], overflow →
/// [`ResponseStatus::ServerThreadpoolBusy`], timeout → [`ResponseStatus::Timeout`], ...), with
/// the request's version and id. A v2 version that carries a CRC gets one.
///
/// Errors only when `class` or the header section is longer than 65535 bytes, or `content`
/// longer than `u32::MAX`; `out` is then unchanged.
#[allow(clippy::too_many_arguments)]
pub fn encode_response(
    out: &mut Vec<u8>,
    version: Version,
    request_id: u32,
    codec: u8,
    status: ResponseStatus,
    class: &[u8],
    header: &[(&[u8], &[u8])],
    content: &[u8],
) -> Result<(), BoltError> {
    encode_frame(
        out,
        version,
        Kind::Response,
        CMD_RESPONSE,
        CMD_VERSION,
        request_id,
        codec,
        i32::from(status.code()),
        class,
        header.iter().map(|&(k, v)| (k, Some(v))),
        content,
    )
}

/// Appends the reply to the heartbeat `request`: the same version (and, in v2, the same `ver1`
/// and switch, so a CRC when it had one), the same request id and codec, `cmd_code` 0, status 0,
/// nothing else.
pub fn encode_heartbeat_reply(out: &mut Vec<u8>, request: &Frame<'_>) {
    encode_frame(
        out,
        request.version,
        Kind::Response,
        CMD_HEARTBEAT,
        request.cmd_version,
        request.request_id,
        request.codec,
        i32::from(ResponseStatus::Success.code()),
        b"",
        std::iter::empty(),
        b"",
    )
    .expect("an empty frame always fits");
}

/// Appends a request, oneway request or heartbeat (by `spec.cmd_code`) to `out`.
///
/// Errors only when the class or the header section is longer than 65535 bytes, or the content
/// longer than `u32::MAX`; `out` is then unchanged.
pub fn encode_request(out: &mut Vec<u8>, spec: &RequestSpec<'_>) -> Result<(), BoltError> {
    encode_frame(
        out,
        spec.version,
        if spec.oneway {
            Kind::Oneway
        } else {
            Kind::Request
        },
        spec.cmd_code,
        spec.cmd_version,
        spec.request_id,
        spec.codec,
        spec.timeout_ms,
        spec.class,
        spec.header.iter().copied(),
        spec.content,
    )
}
