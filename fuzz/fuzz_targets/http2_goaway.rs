//! `GoawayWatch` (the downstream HTTP/2 client's first GOAWAY, spotted in the bytes `h2` reads)
//! on arbitrary frames after the client preface, fed whole, in arbitrary pieces and byte by
//! byte.
//!
//! The first input byte seeds the piece sizes (0 to 16 bytes, empty feeds included); the rest
//! follows the preface.
//!
//! Properties, whatever the bytes:
//! - nothing panics; a GOAWAY is reported at most once;
//! - it is reported exactly when a slow reference walk of the frames (9-byte headers, payloads
//!   skipped by their length) finds a header of type 0x7 on stream 0 with a payload of at least
//!   8 bytes, and in the feed that completes that header, however the bytes are cut.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice_core::http2::PREFACE;
use sluice_core::http2::goaway::GoawayWatch;

fuzz_target!(|data: &[u8]| {
    let [seed, frames @ ..] = data else {
        return;
    };
    let mut stream = PREFACE.to_vec();
    stream.extend_from_slice(frames);
    let want = reference(&stream);
    assert_eq!(
        run(&stream, &mut |_| usize::MAX),
        want.map(|_| stream.len())
    );
    assert_eq!(run(&stream, &mut |_| 1), want);
    let mut state = u32::from(*seed) | 0x100;
    let split = run(&stream, &mut |_| {
        // xorshift32: deterministic piece sizes from the seed.
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        (state % 17) as usize
    });
    // Reported with the piece that completed the header: at or after its end, before the
    // next piece.
    match (split, want) {
        (None, None) => {}
        (Some(at), Some(end)) => assert!(at >= end && at < end + 17, "{at} {end}"),
        other => panic!("{other:?}"),
    }
});

/// Where (the end of the feed) the watch reported its GOAWAY, feeding pieces of
/// `next_len(offset)` bytes; `None`: never.
fn run(stream: &[u8], next_len: &mut dyn FnMut(usize) -> usize) -> Option<usize> {
    let mut w = GoawayWatch::new();
    let mut at = 0;
    let mut reported = None;
    while at < stream.len() {
        let n = next_len(at)
            .min(stream.len() - at)
            .max(usize::from(at == 0));
        let hit = w.feed(&stream[at..at + n]);
        at += n;
        if hit {
            assert!(reported.is_none(), "reported twice");
            reported = Some(at);
        }
        assert_eq!(w.seen(), reported.is_some());
    }
    reported
}

/// The end offset of the first GOAWAY frame header, walking whole frames.
fn reference(stream: &[u8]) -> Option<usize> {
    let mut at = PREFACE.len();
    while stream.len() >= at + 9 {
        let h = &stream[at..at + 9];
        let len = (usize::from(h[0]) << 16) | (usize::from(h[1]) << 8) | usize::from(h[2]);
        let id = u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & 0x7fff_ffff;
        if h[3] == 7 && id == 0 && len >= 8 {
            return Some(at + 9);
        }
        at += 9 + len;
    }
    None
}
