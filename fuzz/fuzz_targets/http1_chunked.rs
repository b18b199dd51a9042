//! `ChunkedDecoder` on arbitrary bytes, fed whole and in arbitrary pieces.
//!
//! The first input byte seeds the piece sizes (0 to 16 bytes, empty feeds included), the second
//! picks `max_trailer_bytes` (0 to 255); the rest is the body.
//!
//! Properties, whatever the bytes:
//! - nothing panics; `consumed` never exceeds the input of a feed, and `NeedMore` consumes all
//!   of it;
//! - fed in pieces, the decoder ends at the same total offset (or fails with the same error,
//!   or still wants more) with the same payload count as when fed at once;
//! - after `Done`, a feed consumes nothing; after an error, a feed returns it again.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice_core::http1::{Chunked, ChunkedDecoder, HttpError};

/// Where the body ended (`None`: it had not yet), or the error, and the payload bytes.
type Outcome = (Result<Option<usize>, HttpError>, u64);

fuzz_target!(|data: &[u8]| {
    let [seed, max_trailer, body @ ..] = data else {
        return;
    };
    let max_trailer = usize::from(*max_trailer);
    let whole = run(body, max_trailer, &mut |_| usize::MAX);
    let mut state = u32::from(*seed) | 0x100;
    let split = run(body, max_trailer, &mut |_| {
        // xorshift32: deterministic piece sizes from the seed.
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        (state % 17) as usize
    });
    assert_eq!(whole, split);
    let bytewise = run(body, max_trailer, &mut |_| 1);
    assert_eq!(whole, bytewise);
});

fn run(body: &[u8], max_trailer: usize, next_len: &mut dyn FnMut(usize) -> usize) -> Outcome {
    let mut dec = ChunkedDecoder::new(max_trailer);
    let mut at = 0;
    let mut last_empty = false;
    loop {
        // Empty feeds are allowed, but never twice in a row: the loop must progress.
        let mut n = next_len(at).min(body.len() - at);
        if n == 0 && last_empty {
            n = 1.min(body.len() - at);
        }
        last_empty = n == 0;
        let input = &body[at..at + n];
        match dec.feed(input) {
            Ok(Chunked::Done { consumed }) => {
                assert!(consumed <= n);
                assert!(dec.is_done());
                assert_eq!(dec.feed(b"0\r\n\r\n"), Ok(Chunked::Done { consumed: 0 }));
                return (Ok(Some(at + consumed)), dec.payload_bytes());
            }
            Ok(Chunked::NeedMore { consumed }) => {
                assert_eq!(consumed, n);
                at += n;
                if at == body.len() {
                    return (Ok(None), dec.payload_bytes());
                }
            }
            Err(e) => {
                assert_eq!(dec.feed(b"0\r\n\r\n"), Err(e.clone()));
                assert!(!e.to_string().is_empty());
                return (Err(e), dec.payload_bytes());
            }
        }
    }
}
