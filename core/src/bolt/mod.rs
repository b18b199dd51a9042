//! The SOFARPC Bolt codec (v1 and v2), sans-IO, written for a proxy.
//!
//! The wire format is in `shared/protocols/bolt.md`: a fixed header (20 to 24 bytes, by version
//! and type), then the class name, the header map and the content, whose three lengths the fixed
//! header gives; a v2 frame whose `ver1` is `2` and whose switch has bit 0 set ends with a CRC32
//! of everything before it. Both versions may be mixed on one connection.
//!
//! The codec owns three things, and nothing else: finding and validating one frame at the start
//! of a caller-owned buffer ([`decode`]), patching the request id of a frame in place so that a
//! proxy forwards the original bytes ([`set_request_id`]), and writing the frames the proxy makes
//! itself ([`encode_response`], [`encode_heartbeat_reply`], [`encode_request`]). It never reads or
//! writes a socket and never allocates while decoding: a [`Frame`] borrows the buffer, and its
//! [`HeaderMap`] is a view of the header section that is walked (once, to validate it) without
//! building anything.
//!
//! ## The API at a glance
//!
//! ```text
//! decode(buf, max_frame_size) -> Result<Option<Frame<'_>>, BoltError>
//!     Ok(None) → need more bytes;  Ok(Some(f)) → buf[..f.len] is one frame
//! Frame { version: V1 | V2 { ver1, switch }, kind: Request | Oneway | Response, cmd_code,
//!         cmd_version, request_id, codec, timeout_ms (requests), status (responses),
//!         class, header: HeaderMap, content, crc (v2 with CRC), len }
//!     is_heartbeat() response_status()
//! HeaderMap: iter() → (key, Option<value>) (a 0xFFFFFFFF length is a null), get(key), as_bytes()
//! header_value(&frame, key)                      e.g. header_value(&f, b"service")
//! request_id_offset(version)  set_request_id(&mut buf[..f.len], id)   (recomputes a v2 CRC)
//! encode_response(out, version, request_id, codec, status, class, header, content)
//! encode_heartbeat_reply(out, &request)          same version and id, cmd_code 0, status 0
//! encode_request(out, &RequestSpec)              requests, oneway requests, heartbeats
//! ResponseStatus::{Success, ..., ServerDeserialException}  from_u16() code()
//! ```
//!
//! ## How a driver uses it
//!
//! ```text
//!  read bytes into buf ──▶ decode(&buf[start..], max_frame_size)
//!        ▲                    │ Ok(None)     → read more (the next call decodes from scratch; the
//!        │                    │                fixed header is 24 bytes at most, so re-checking
//!        │                    │                it costs nothing)
//!        │                    │ Err(e)       → close this connection (a frame declaring more than
//!        │                    │                max_frame_size fails as soon as its fixed header
//!        │                    │                is in, before any of its body is buffered)
//!        │                    │ Ok(Some(f))  → route on header_value(&f, b"service"), answer
//!        │                    ▼                heartbeats with encode_heartbeat_reply
//!        │     set_request_id(&mut buf[start..start + f.len], upstream_id) → forward those bytes
//!        └──── start += f.len (the rest is the next, pipelined frame)
//! ```
//!
//! Requests whose `type` is oneway get no response. A response answers the request with the same
//! id on the same connection; restoring the downstream id on the way back is again
//! [`set_request_id`].
//!
//! ## Checks (in this order; one input always gives the same error)
//!
//! 1. the protocol byte is `0x01` or `0x02` ([`BoltError::UnknownProtocol`], decided from the
//!    first byte alone, so protocol sniffing can use it);
//! 2. the type is 0, 1 or 2 ([`BoltError::UnknownType`]);
//! 3. the declared frame (fixed header + the three lengths + a CRC) is at most `max_frame_size`
//!    ([`BoltError::FrameTooLarge`]), checked once the fixed header is in;
//! 4. the header map is a sequence of whole `u32 len | bytes` pairs that ends exactly at the end
//!    of its section ([`BoltError::MalformedHeaderMap`]);
//! 5. a v2 CRC matches ([`BoltError::CrcMismatch`]).
//!
//! Command codes, command versions, codecs and status codes are not checked: a proxy forwards
//! them as they came (a `cmd_code` of 0 is a heartbeat).
//!
//! ## Invariants (checked in debug builds after every decoded frame)
//!
//! - `len ≤ buf.len()` and `len ≤ max_frame_size`;
//! - `class`, `header` and `content` lie in the frame, in that order, with no gap;
//! - `timeout_ms` is `Some` exactly for requests and `status` exactly for responses; `crc` is
//!   `Some` exactly when the version carries one.

mod crc32;
mod decode;
mod encode;
pub mod proxy;
pub mod router;

#[cfg(test)]
mod tests;

pub use crc32::crc32;
pub use decode::{decode, header_value, request_id_offset, set_request_id};
pub use encode::{RequestSpec, encode_heartbeat_reply, encode_request, encode_response};
pub use proxy::{
    Action, BoltProxy, BoltStats, DownstreamId, DownstreamVerdict, Dropped, ListenerRoutesError,
    ProxyReply, UpstreamId, UpstreamVerdict,
};
pub use router::BoltRouter;

/// The protocol byte of Bolt v1.
pub const PROTOCOL_V1: u8 = 0x01;
/// The protocol byte of Bolt v2.
pub const PROTOCOL_V2: u8 = 0x02;
/// Command code of a heartbeat and of its reply.
pub const CMD_HEARTBEAT: u16 = 0;
/// Command code of an RPC request.
pub const CMD_REQUEST: u16 = 1;
/// Command code of an RPC response.
pub const CMD_RESPONSE: u16 = 2;
/// The command version every known peer sends.
pub const CMD_VERSION: u8 = 1;
/// The Hessian2 codec (serializer) id.
pub const CODEC_HESSIAN2: u8 = 1;
/// The default `max_frame_size` of a listener: 16 MiB (a config default, re-exported here
/// beside the codec that enforces it).
pub use crate::config::bolt::DEFAULT_MAX_FRAME_SIZE;
/// A header-map length meaning a null (Java) string, followed by no bytes.
pub const NULL_LEN: u32 = 0xFFFF_FFFF;

/// The framing of a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Version {
    /// Protocol byte `0x01`.
    V1,
    /// Protocol byte `0x02`, with its protocol version and switch bytes.
    V2 {
        /// Protocol version; `2` allows a CRC.
        ver1: u8,
        /// Option bits; bit 0 set (with `ver1 == 2`) means a CRC32 follows the content.
        switch: u8,
    },
}

impl Version {
    /// The first byte of a frame of this version.
    pub const fn protocol_byte(self) -> u8 {
        match self {
            Version::V1 => PROTOCOL_V1,
            Version::V2 { .. } => PROTOCOL_V2,
        }
    }

    /// Whether a frame of this version ends with a CRC32 (v2, `ver1 == 2`, switch bit 0).
    pub const fn has_crc(self) -> bool {
        matches!(self, Version::V2 { ver1: 2, switch } if switch & 1 == 1)
    }

    /// The length of the fixed header of a frame of this version and kind.
    pub const fn fixed_header_len(self, kind: Kind) -> usize {
        let base = match kind {
            Kind::Response => 20,
            Kind::Request | Kind::Oneway => 22,
        };
        match self {
            Version::V1 => base,
            Version::V2 { .. } => base + 2,
        }
    }

    /// Bytes after the content: 4 with a CRC, else 0.
    pub const fn trailer_len(self) -> usize {
        if self.has_crc() { 4 } else { 0 }
    }
}

/// The `type` byte of a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// `0`: a response (or heartbeat reply).
    Response,
    /// `1`: a request that expects a response.
    Request,
    /// `2`: a request that expects none.
    Oneway,
}

impl Kind {
    /// The `type` byte.
    pub const fn code(self) -> u8 {
        match self {
            Kind::Response => 0,
            Kind::Request => 1,
            Kind::Oneway => 2,
        }
    }

    /// The kind of a `type` byte, `None` when unknown.
    pub const fn from_code(code: u8) -> Option<Kind> {
        match code {
            0 => Some(Kind::Response),
            1 => Some(Kind::Request),
            2 => Some(Kind::Oneway),
            _ => None,
        }
    }

    /// Request or oneway request.
    pub const fn is_request(self) -> bool {
        !matches!(self, Kind::Response)
    }
}

/// The status codes of a response (`bolt.md`, "Status codes").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum ResponseStatus {
    /// 0: success.
    Success = 0,
    /// 1: error.
    Error = 1,
    /// 2: server exception.
    ServerException = 2,
    /// 3: unknown.
    Unknown = 3,
    /// 4: server thread pool busy (the proxy's overflow / circuit breaker open).
    ServerThreadpoolBusy = 4,
    /// 5: communication error.
    CommunicationError = 5,
    /// 6: no processor (the proxy's no route / no healthy upstream).
    NoProcessor = 6,
    /// 7: timeout.
    Timeout = 7,
    /// 8: client send error.
    ClientSendError = 8,
    /// 9: codec exception.
    CodecException = 9,
    /// 16 (0x10): connection closed.
    ConnectionClosed = 16,
    /// 17 (0x11): server serialization exception.
    ServerSerialException = 17,
    /// 18 (0x12): server deserialization exception.
    ServerDeserialException = 18,
}

impl ResponseStatus {
    /// Every status, in code order.
    pub const ALL: [ResponseStatus; 13] = [
        ResponseStatus::Success,
        ResponseStatus::Error,
        ResponseStatus::ServerException,
        ResponseStatus::Unknown,
        ResponseStatus::ServerThreadpoolBusy,
        ResponseStatus::CommunicationError,
        ResponseStatus::NoProcessor,
        ResponseStatus::Timeout,
        ResponseStatus::ClientSendError,
        ResponseStatus::CodecException,
        ResponseStatus::ConnectionClosed,
        ResponseStatus::ServerSerialException,
        ResponseStatus::ServerDeserialException,
    ];

    /// The wire code.
    pub const fn code(self) -> u16 {
        self as u16
    }

    /// The status of a wire code, `None` when the code is not one of `bolt.md`.
    pub const fn from_u16(code: u16) -> Option<ResponseStatus> {
        Some(match code {
            0 => ResponseStatus::Success,
            1 => ResponseStatus::Error,
            2 => ResponseStatus::ServerException,
            3 => ResponseStatus::Unknown,
            4 => ResponseStatus::ServerThreadpoolBusy,
            5 => ResponseStatus::CommunicationError,
            6 => ResponseStatus::NoProcessor,
            7 => ResponseStatus::Timeout,
            8 => ResponseStatus::ClientSendError,
            9 => ResponseStatus::CodecException,
            16 => ResponseStatus::ConnectionClosed,
            17 => ResponseStatus::ServerSerialException,
            18 => ResponseStatus::ServerDeserialException,
            _ => return None,
        })
    }
}

/// One decoded frame: a view of the buffer it was decoded from (`buf[..len]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Frame<'a> {
    /// v1 or v2 (with its `ver1` and switch bytes).
    pub version: Version,
    /// Request, oneway request or response.
    pub kind: Kind,
    /// Command code: 0 heartbeat, 1 RPC request, 2 RPC response.
    pub cmd_code: u16,
    /// Command version (`1`).
    pub cmd_version: u8,
    /// The request id (for a response: of the request it answers).
    pub request_id: u32,
    /// The serializer id of class, header values and content (`1` Hessian2).
    pub codec: u8,
    /// The caller's timeout in milliseconds (requests and oneway requests; heartbeats carry -1).
    pub timeout_ms: Option<i32>,
    /// The raw status code (responses); see [`Frame::response_status`].
    pub status: Option<u16>,
    /// The class name (e.g. `com.alipay.sofa.rpc.core.request.SofaRequest`); empty for a heartbeat.
    pub class: &'a [u8],
    /// The header map.
    pub header: HeaderMap<'a>,
    /// The content (the serialized payload, opaque to a proxy).
    pub content: &'a [u8],
    /// The CRC32 carried after the content (v2 with `ver1 == 2` and switch bit 0), already
    /// checked.
    pub crc: Option<u32>,
    /// Total bytes of the frame, CRC included.
    pub len: usize,
}

impl Frame<'_> {
    /// Command code 0.
    pub fn is_heartbeat(&self) -> bool {
        self.cmd_code == CMD_HEARTBEAT
    }

    /// The status of a response, `None` for a request or an unknown code.
    pub fn response_status(&self) -> Option<ResponseStatus> {
        self.status.and_then(ResponseStatus::from_u16)
    }
}

/// The header map of a frame: a view of its header section, validated by [`decode`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeaderMap<'a> {
    bytes: &'a [u8],
}

impl<'a> HeaderMap<'a> {
    /// The raw header section (`u32 len | bytes` pairs).
    pub fn as_bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// No pair at all.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// The pairs in wire order: `(key, value)`, `None` for a null value. A null key is given as
    /// an empty key.
    pub fn iter(&self) -> HeaderIter<'a> {
        HeaderIter { rest: self.bytes }
    }

    /// The value of the first pair whose key is `key`; `None` when there is none or its value
    /// is null.
    pub fn get(&self, key: &[u8]) -> Option<&'a [u8]> {
        self.iter().find(|&(k, _)| k == key).and_then(|(_, v)| v)
    }
}

impl<'a> IntoIterator for HeaderMap<'a> {
    type Item = (&'a [u8], Option<&'a [u8]>);
    type IntoIter = HeaderIter<'a>;

    fn into_iter(self) -> HeaderIter<'a> {
        self.iter()
    }
}

/// The pairs of a [`HeaderMap`], in wire order.
#[derive(Clone, Debug)]
pub struct HeaderIter<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for HeaderIter<'a> {
    type Item = (&'a [u8], Option<&'a [u8]>);

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        // The section was validated by `decode`; a malformed one (never built by this module)
        // simply ends the iteration.
        let (key, rest) = decode::split_string(self.rest).ok()?;
        let (value, rest) = decode::split_string(rest).ok()?;
        self.rest = rest;
        Some((key.unwrap_or_default(), value))
    }
}

/// Why bytes are not a Bolt frame. Every one of these closes the connection: after it, the
/// stream has no frame boundary to resynchronise on.
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
pub enum BoltError {
    /// The first byte is neither `0x01` (v1) nor `0x02` (v2).
    #[error("unknown Bolt protocol byte {byte:#04x} at offset 0 (expected 0x01 or 0x02)")]
    UnknownProtocol {
        /// The byte.
        byte: u8,
    },
    /// The type byte is not 0 (response), 1 (request) or 2 (oneway).
    #[error(
        "unknown Bolt frame type {byte} at offset {offset} (expected 0 response, 1 request or 2 oneway)"
    )]
    UnknownType {
        /// The byte.
        byte: u8,
        /// Its offset in the frame (1 in v1, 2 in v2).
        offset: usize,
    },
    /// The fixed header declares a frame larger than `max_frame_size`.
    #[error(
        "Bolt frame declares {declared} bytes (class {class_len}, header {header_len}, content {content_len}), more than max_frame_size {limit}"
    )]
    FrameTooLarge {
        /// Total bytes declared (fixed header, class, header, content, CRC).
        declared: u64,
        /// The limit.
        limit: usize,
        /// Declared class length.
        class_len: u16,
        /// Declared header length.
        header_len: u16,
        /// Declared content length.
        content_len: u32,
    },
    /// A key or value length of the header map runs past the end of the header section.
    #[error(
        "malformed Bolt header map: the {what} length at offset {offset} of the frame declares {declared} bytes, but the header section ends at offset {section_end}"
    )]
    MalformedHeaderMap {
        /// `"key"` or `"value"`.
        what: &'static str,
        /// Offset of the length field (or of where it should start) in the frame.
        offset: usize,
        /// The declared length (0 when not even the 4 length bytes fit).
        declared: u32,
        /// Offset in the frame one past the header section.
        section_end: usize,
    },
    /// The CRC32 after the content does not match the frame.
    #[error(
        "Bolt v2 CRC mismatch at offset {offset}: the frame carries {carried:#010x}, its bytes give {computed:#010x}"
    )]
    CrcMismatch {
        /// The CRC carried in the frame.
        carried: u32,
        /// The CRC of the frame's bytes.
        computed: u32,
        /// Offset of the CRC in the frame.
        offset: usize,
    },
    /// An encoder was given a class or header longer than 65535 bytes, or content longer than
    /// `u32::MAX`.
    #[error("cannot encode a Bolt {field} of {len} bytes (at most {max})")]
    TooLong {
        /// `"class"`, `"header"` or `"content"`.
        field: &'static str,
        /// The length given.
        len: usize,
        /// The largest the wire can carry.
        max: u64,
    },
}
