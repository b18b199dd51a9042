//! [`decode`]: one frame out of the start of a buffer, validated, without allocating; and the
//! in-place request id patch ([`set_request_id`]).

use super::{
    BoltError, Frame, HeaderMap, Kind, NULL_LEN, PROTOCOL_V1, PROTOCOL_V2, Version, crc32,
};

fn u16_at(buf: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([buf[at], buf[at + 1]])
}

fn u32_at(buf: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]])
}

/// Offsets of the fields shared by every layout, per version: `(shift of type..codec, shift of
/// timeout/status and the lengths)`. v2 inserts `ver1` after the protocol byte and `switch`
/// after the codec.
const fn shifts(version: Version) -> (usize, usize) {
    match version {
        Version::V1 => (0, 0),
        Version::V2 { .. } => (1, 2),
    }
}

/// Where the request id (4 bytes, big-endian) of a frame of this version starts: 5 in v1, 6 in
/// v2. It is at the same place in requests and responses.
pub const fn request_id_offset(version: Version) -> usize {
    5 + shifts(version).0
}

/// Decodes the frame at the start of `buf`.
///
/// `Ok(None)`: `buf` holds only the beginning of a frame (possibly nothing); read more and call
/// again with the longer buffer. `Ok(Some(frame))`: `buf[..frame.len]` is one whole, valid frame
/// and the rest of `buf` is untouched. `Err`: the connection carries no Bolt, or a frame that the
/// proxy must not take (see the module doc for the checks and their order). A frame declaring
/// more than `max_frame_size` bytes is refused as soon as its fixed header is in.
pub fn decode(buf: &[u8], max_frame_size: usize) -> Result<Option<Frame<'_>>, BoltError> {
    let Some(&proto) = buf.first() else {
        return Ok(None);
    };
    let (version, type_at) = match proto {
        PROTOCOL_V1 => (Version::V1, 1),
        PROTOCOL_V2 => {
            if buf.len() < 12 {
                // `ver1` and `switch` are not in yet; the type (byte 2) may be: check it early.
                if let Some(&t) = buf.get(2) {
                    Kind::from_code(t).ok_or(BoltError::UnknownType { byte: t, offset: 2 })?;
                }
                return Ok(None);
            }
            (
                Version::V2 {
                    ver1: buf[1],
                    switch: buf[11],
                },
                2,
            )
        }
        byte => return Err(BoltError::UnknownProtocol { byte }),
    };
    let Some(&type_byte) = buf.get(type_at) else {
        return Ok(None);
    };
    let kind = Kind::from_code(type_byte).ok_or(BoltError::UnknownType {
        byte: type_byte,
        offset: type_at,
    })?;
    let fixed = version.fixed_header_len(kind);
    if buf.len() < fixed {
        return Ok(None);
    }

    let (s1, s2) = shifts(version);
    let cmd_code = u16_at(buf, 2 + s1);
    let cmd_version = buf[4 + s1];
    let request_id = u32_at(buf, 5 + s1);
    let codec = buf[9 + s1];
    let (timeout_ms, status, lengths_at) = match kind {
        Kind::Response => (None, Some(u16_at(buf, 10 + s2)), 12 + s2),
        Kind::Request | Kind::Oneway => (Some(u32_at(buf, 10 + s2) as i32), None, 14 + s2),
    };
    let class_len = u16_at(buf, lengths_at);
    let header_len = u16_at(buf, lengths_at + 2);
    let content_len = u32_at(buf, lengths_at + 4);
    debug_assert_eq!(lengths_at + 8, fixed);

    let trailer = version.trailer_len();
    let declared = fixed as u64
        + u64::from(class_len)
        + u64::from(header_len)
        + u64::from(content_len)
        + trailer as u64;
    if declared > max_frame_size as u64 {
        return Err(BoltError::FrameTooLarge {
            declared,
            limit: max_frame_size,
            class_len,
            header_len,
            content_len,
        });
    }
    // `declared ≤ max_frame_size`, a usize: no truncation.
    let len = declared as usize;
    if buf.len() < len {
        return Ok(None);
    }

    let class_end = fixed + usize::from(class_len);
    let header_end = class_end + usize::from(header_len);
    let content_end = header_end + content_len as usize;
    let header = &buf[class_end..header_end];
    validate_header_map(header, class_end)?;

    let crc = if trailer == 4 {
        let carried = u32_at(buf, content_end);
        let computed = crc32(&buf[..content_end]);
        if carried != computed {
            return Err(BoltError::CrcMismatch {
                carried,
                computed,
                offset: content_end,
            });
        }
        Some(carried)
    } else {
        None
    };

    let frame = Frame {
        version,
        kind,
        cmd_code,
        cmd_version,
        request_id,
        codec,
        timeout_ms,
        status,
        class: &buf[fixed..class_end],
        header: HeaderMap { bytes: header },
        content: &buf[header_end..content_end],
        crc,
        len,
    };
    debug_assert!(frame.len <= buf.len() && frame.len <= max_frame_size);
    debug_assert_eq!(
        fixed + frame.class.len() + frame.header.bytes.len() + frame.content.len() + trailer,
        frame.len
    );
    debug_assert_eq!(frame.timeout_ms.is_some(), kind.is_request());
    debug_assert_eq!(frame.status.is_some(), !kind.is_request());
    debug_assert_eq!(frame.crc.is_some(), version.has_crc());
    Ok(Some(frame))
}

/// Splits one `u32 len | bytes` string off the front of `bytes`: `Ok((None, rest))` for a null.
/// `Err(declared)` when it runs past the end (`declared` 0 when not even the length fits).
pub(super) fn split_string(bytes: &[u8]) -> Result<(Option<&[u8]>, &[u8]), u32> {
    let Some((len, rest)) = bytes.split_first_chunk::<4>() else {
        return Err(0);
    };
    let len = u32::from_be_bytes(*len);
    if len == NULL_LEN {
        return Ok((None, rest));
    }
    match rest.split_at_checked(len as usize) {
        Some((s, rest)) => Ok((Some(s), rest)),
        None => Err(len),
    }
}

/// Checks that `section` (starting at offset `base` of the frame) is whole pairs.
fn validate_header_map(section: &[u8], base: usize) -> Result<(), BoltError> {
    let section_end = base + section.len();
    let mut rest = section;
    while !rest.is_empty() {
        for what in ["key", "value"] {
            let offset = section_end - rest.len();
            rest = split_string(rest)
                .map_err(|declared| BoltError::MalformedHeaderMap {
                    what,
                    offset,
                    declared,
                    section_end,
                })?
                .1;
        }
    }
    Ok(())
}

/// The value of the first header `key` of `frame` (e.g. `b"service"`), `None` when absent or
/// null.
pub fn header_value<'a>(frame: &Frame<'a>, key: &[u8]) -> Option<&'a [u8]> {
    frame.header.get(key)
}

/// Writes `id` as the request id of the frame `frame_bytes` in place, and recomputes its CRC when
/// it is a v2 frame that carries one. Everything else is left as it came, so a proxy forwards the
/// original bytes.
///
/// `frame_bytes` must be exactly one frame, as [`decode`] found it: `&mut buf[..frame.len]`.
///
/// # Panics
///
/// When `frame_bytes` is shorter than a fixed header or does not start with a protocol byte
/// (never for the bytes of a decoded frame).
pub fn set_request_id(frame_bytes: &mut [u8], id: u32) {
    let version = match frame_bytes[0] {
        PROTOCOL_V1 => Version::V1,
        PROTOCOL_V2 => Version::V2 {
            ver1: frame_bytes[1],
            switch: frame_bytes[11],
        },
        byte => panic!("set_request_id on a non-Bolt frame (first byte {byte:#04x})"),
    };
    let at = request_id_offset(version);
    frame_bytes[at..at + 4].copy_from_slice(&id.to_be_bytes());
    if version.has_crc() {
        let end = frame_bytes.len() - 4;
        let crc = crc32(&frame_bytes[..end]);
        frame_bytes[end..].copy_from_slice(&crc.to_be_bytes());
    }
}
