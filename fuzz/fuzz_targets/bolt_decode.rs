//! `bolt::decode` on arbitrary bytes, frame after frame through the buffer, as a connection's
//! read loop does, with a 64 KiB `max_frame_size`.
//!
//! Properties, whatever the bytes:
//! - nothing panics; a frame lies within the input (`len ≤` what is left) and within the limit;
//!   its class, header and content add up to its length; a shorter prefix of it is `Ok(None)`;
//! - every header pair can be read, and `header_value` agrees with the first matching pair;
//! - re-encoding a decoded v1 RPC response (known status, no null value) with `encode_response`
//!   gives the same bytes; re-encoding any request with `encode_request` gives the same bytes
//!   (v1 and v2, CRC included) unless its header holds a null key; a heartbeat's reply decodes
//!   as one, with the same version and id;
//! - `set_request_id` keeps a frame decodable, with the new id and everything else unchanged,
//!   and patching the old id back restores the original bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice_core::bolt::{
    CMD_RESPONSE, CMD_VERSION, Frame, Kind, RequestSpec, Version, decode, encode_heartbeat_reply,
    encode_request, encode_response, header_value, set_request_id,
};

const MAX: usize = 64 << 10;

fn check_reencode(bytes: &[u8], f: &Frame<'_>) {
    let pairs: Vec<(&[u8], Option<&[u8]>)> = f.header.iter().collect();
    let mut out = Vec::new();
    match f.kind {
        Kind::Response => {
            if f.version == Version::V1
                && f.cmd_code == CMD_RESPONSE
                && f.cmd_version == CMD_VERSION
                && pairs.iter().all(|(_, v)| v.is_some())
                && let Some(status) = f.response_status()
            {
                let pairs: Vec<(&[u8], &[u8])> =
                    pairs.iter().map(|&(k, v)| (k, v.unwrap())).collect();
                let header_has_null_key = f.header.as_bytes().windows(4).any(|w| w == [0xff; 4]);
                encode_response(
                    &mut out,
                    f.version,
                    f.request_id,
                    f.codec,
                    status,
                    f.class,
                    &pairs,
                    f.content,
                )
                .unwrap();
                if !header_has_null_key {
                    assert_eq!(out, bytes, "v1 response re-encoded differently: {f:?}");
                }
            }
        }
        Kind::Request | Kind::Oneway => {
            encode_request(
                &mut out,
                &RequestSpec {
                    version: f.version,
                    oneway: f.kind == Kind::Oneway,
                    cmd_code: f.cmd_code,
                    cmd_version: f.cmd_version,
                    request_id: f.request_id,
                    codec: f.codec,
                    timeout_ms: f.timeout_ms.unwrap(),
                    class: f.class,
                    header: &pairs,
                    content: f.content,
                },
            )
            .unwrap();
            if !f.header.as_bytes().windows(4).any(|w| w == [0xff; 4]) {
                assert_eq!(out, bytes, "request re-encoded differently: {f:?}");
            }
            if f.is_heartbeat() {
                let mut reply = Vec::new();
                encode_heartbeat_reply(&mut reply, f);
                let r = decode(&reply, MAX).unwrap().unwrap();
                assert_eq!(r.len, reply.len());
                assert!(r.is_heartbeat() && r.kind == Kind::Response);
                assert_eq!(
                    (r.version, r.request_id, r.status),
                    (f.version, f.request_id, Some(0))
                );
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let mut rest = data;
    loop {
        let f = match decode(rest, MAX) {
            Ok(Some(f)) => f,
            Ok(None) | Err(_) => break,
        };
        assert!(f.len > 0 && f.len <= rest.len() && f.len <= MAX);
        let fixed = f.version.fixed_header_len(f.kind);
        assert_eq!(
            fixed
                + f.class.len()
                + f.header.as_bytes().len()
                + f.content.len()
                + f.version.trailer_len(),
            f.len
        );
        assert_eq!(decode(&rest[..f.len - 1], MAX), Ok(None));
        let pairs: Vec<_> = f.header.iter().collect();
        let consumed: usize = pairs
            .iter()
            .map(|(k, v)| 8 + k.len() + v.map_or(0, <[u8]>::len))
            .sum();
        assert_eq!(consumed, f.header.as_bytes().len());
        if let Some(&(k, v)) = pairs.first() {
            assert_eq!(header_value(&f, k), v);
        }

        let frame = &rest[..f.len];
        check_reencode(frame, &f);

        let mut patched = frame.to_vec();
        let new_id = f.request_id.wrapping_mul(2_654_435_761).wrapping_add(1);
        set_request_id(&mut patched, new_id);
        let g = decode(&patched, MAX).unwrap().unwrap();
        assert_eq!(g.request_id, new_id);
        assert_eq!(
            Frame {
                request_id: f.request_id,
                crc: f.crc,
                ..g
            },
            f
        );
        set_request_id(&mut patched, f.request_id);
        assert_eq!(patched, frame);

        rest = &rest[f.len..];
    }
});
