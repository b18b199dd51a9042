//! The gRPC health probe's answer (`sluice_core::health::grpc`): the body decoder and the
//! verdict on arbitrary bytes.
//!
//! The first input byte picks the HTTP status (bit 0: 200 or 503), the content-type (bit 1:
//! gRPC's or none) and the `grpc-status` (bits 2–3: `0`, `14`, absent, or the next byte);
//! the rest is the body.
//!
//! Properties, whatever the bytes:
//! - nothing panics;
//! - the verdict is healthy only when the status is 200, the content-type gRPC's, the
//!   grpc-status `0` and the body decodes to `SERVING`;
//! - a body longer than `MAX_RESPONSE_BYTES` never decodes;
//! - a decoded message re-framed alone decodes to the same status.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice_core::health::grpc::{
    MAX_RESPONSE_BYTES, ServingStatus, check_answer, decode_message, decode_response,
};

fuzz_target!(|data: &[u8]| {
    let [knobs, rest @ ..] = data else {
        return;
    };
    let status = if knobs & 1 == 0 { 200 } else { 503 };
    let content_type: Option<&[u8]> = (knobs & 2 == 0).then_some(b"application/grpc");
    let (grpc_status, body): (Option<&[u8]>, &[u8]) = match (knobs >> 2) & 3 {
        0 => (Some(b"0"), rest),
        1 => (Some(b"14"), rest),
        2 => (None, rest),
        _ => match rest {
            [s, body @ ..] => (Some(std::slice::from_ref(s)), body),
            [] => (None, rest),
        },
    };
    let decoded = decode_response(body);
    if body.len() > MAX_RESPONSE_BYTES {
        assert!(decoded.is_err());
    }
    let verdict = check_answer(status, content_type, grpc_status, body);
    if verdict.is_ok() {
        assert_eq!(status, 200);
        assert!(content_type.is_some());
        assert_eq!(grpc_status, Some(&b"0"[..]));
        assert_eq!(decoded, Ok(ServingStatus::Serving));
    }
    // The message bytes alone, when they decode, decode the same once framed.
    if let Ok(s) = decode_message(body) {
        if !body.is_empty() && body.len() + 5 <= MAX_RESPONSE_BYTES {
            let mut framed = vec![0];
            framed.extend_from_slice(&(body.len() as u32).to_be_bytes());
            framed.extend_from_slice(body);
            assert_eq!(decode_response(&framed), Ok(s));
        }
    }
});
