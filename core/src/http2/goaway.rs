//! Spotting the GOAWAY a downstream HTTP/2 client sends, for the `http2.goaway_received`
//! counter. The `h2` crate (0.4) keeps a client's GOAWAY to itself when its code is
//! `NO_ERROR` — the usual graceful close: the server connection then ends as if the client had
//! just closed its socket — so the runtime watches the bytes it hands to `h2` instead.
//!
//! What it owns: where the next frame header starts in a connection's inbound byte stream
//! (client preface first, then frames, each a 9-byte header and a payload of the length the
//! header says) and whether a GOAWAY was seen. It reads frame headers only, never a payload,
//! and validates nothing: `h2` parses the same bytes and ends the connection on a malformed
//! frame.
//!
//! States: skipping (the preface, or a frame's payload), gathering a frame header (it may come
//! in several reads), and done once the first GOAWAY frame (type 0x7 on stream 0 with the 8
//! bytes of payload the type needs, any error code) has been reported: a connection counts once
//! however many GOAWAY frames its client sends, and costs nothing after that.

use super::PREFACE;

/// The length of an HTTP/2 frame header (RFC 9113 §4.1).
const FRAME_HEADER: usize = 9;
/// The GOAWAY frame type (RFC 9113 §6.8).
const GOAWAY: u8 = 0x7;
/// A GOAWAY's payload: last stream id and error code, then optional debug data.
const GOAWAY_MIN_PAYLOAD: usize = 8;

/// Watches one downstream connection's inbound bytes, from the client preface on, for its
/// first GOAWAY frame.
#[derive(Clone, Debug)]
pub struct GoawayWatch {
    /// Bytes still to pass over before the next frame header (the preface, then payloads).
    skip: usize,
    /// The frame header being gathered.
    head: [u8; FRAME_HEADER],
    /// How many bytes of it have arrived.
    have: usize,
    /// A GOAWAY was reported: nothing more to watch.
    done: bool,
}

impl Default for GoawayWatch {
    fn default() -> Self {
        Self::new()
    }
}

impl GoawayWatch {
    /// A watch for a connection whose first bytes are the client preface.
    #[must_use]
    pub fn new() -> Self {
        GoawayWatch {
            skip: PREFACE.len(),
            head: [0; FRAME_HEADER],
            have: 0,
            done: false,
        }
    }

    /// Feeds the next bytes read from the client, in order; true when they hold the header of
    /// the connection's first GOAWAY frame (reported once).
    pub fn feed(&mut self, mut bytes: &[u8]) -> bool {
        while !self.done && !bytes.is_empty() {
            if self.skip > 0 {
                let n = self.skip.min(bytes.len());
                self.skip -= n;
                bytes = &bytes[n..];
                continue;
            }
            let n = (FRAME_HEADER - self.have).min(bytes.len());
            self.head[self.have..self.have + n].copy_from_slice(&bytes[..n]);
            self.have += n;
            bytes = &bytes[n..];
            if self.have < FRAME_HEADER {
                break;
            }
            self.have = 0;
            let h = &self.head;
            let length = usize::from(h[0]) << 16 | usize::from(h[1]) << 8 | usize::from(h[2]);
            let stream = u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & 0x7fff_ffff;
            if h[3] == GOAWAY && stream == 0 && length >= GOAWAY_MIN_PAYLOAD {
                self.done = true;
                return true;
            }
            self.skip = length;
        }
        false
    }

    /// Whether a GOAWAY was reported.
    #[must_use]
    pub fn seen(&self) -> bool {
        self.done
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn frame(ty: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let len = payload.len();
        let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, ty, 0];
        f.extend_from_slice(&stream.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    fn goaway(code: u32) -> Vec<u8> {
        let mut p = 5u32.to_be_bytes().to_vec();
        p.extend_from_slice(&code.to_be_bytes());
        frame(GOAWAY, 0, &p)
    }

    /// Preface, SETTINGS, HEADERS, a DATA whose payload looks like a GOAWAY header, a PING.
    fn before_goaway() -> Vec<u8> {
        let mut b = PREFACE.to_vec();
        b.extend(frame(0x4, 0, &[0, 3, 0, 0, 0, 100]));
        b.extend(frame(0x1, 1, b"\x82\x86\x84"));
        b.extend(frame(0x0, 1, &goaway(0)));
        b.extend(frame(0x6, 0, &[0; 8]));
        b
    }

    #[test]
    fn no_goaway_in_ordinary_traffic_even_inside_a_payload() {
        let mut w = GoawayWatch::new();
        assert!(!w.feed(&before_goaway()));
        assert!(!w.seen());
    }

    #[test]
    fn a_goaway_is_reported_once_whatever_its_code() {
        let mut bytes = before_goaway();
        bytes.extend(goaway(0));
        let mut w = GoawayWatch::new();
        assert!(w.feed(&bytes));
        assert!(w.seen());
        // A second GOAWAY (two-phase close), or one with an error code: not again.
        assert!(!w.feed(&goaway(1)));
        let mut w = GoawayWatch::new();
        let mut bytes = PREFACE.to_vec();
        bytes.extend(goaway(2));
        assert!(w.feed(&bytes));
    }

    #[test]
    fn a_goaway_on_a_stream_or_too_short_is_not_one() {
        let mut bytes = PREFACE.to_vec();
        bytes.extend(frame(GOAWAY, 1, &[0; 8]));
        bytes.extend(frame(GOAWAY, 0, &[0; 4]));
        let mut w = GoawayWatch::new();
        assert!(!w.feed(&bytes));
    }

    #[test]
    fn a_goaway_split_at_any_byte_is_seen() {
        let mut bytes = before_goaway();
        let at = bytes.len();
        bytes.extend(goaway(0));
        for cut in 0..bytes.len() {
            let mut w = GoawayWatch::new();
            let first = w.feed(&bytes[..cut]);
            let second = w.feed(&bytes[cut..]);
            assert_eq!(first, cut >= at + FRAME_HEADER, "cut {cut}");
            assert!(first ^ second, "cut {cut}");
        }
    }

    proptest! {
        /// However the bytes are cut into reads, the watch says what one read of them says.
        #[test]
        fn reads_do_not_matter(cuts in proptest::collection::vec(0usize..200, 0..12), with in any::<bool>()) {
            let mut bytes = before_goaway();
            if with {
                bytes.extend(goaway(0));
            }
            bytes.extend(frame(0x8, 0, &[0, 0, 1, 0]));
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(bytes.len())).collect();
            cuts.sort_unstable();
            let mut w = GoawayWatch::new();
            let mut reported = 0;
            let mut from = 0;
            for c in cuts.into_iter().chain([bytes.len()]) {
                reported += usize::from(w.feed(&bytes[from..c]));
                from = c;
            }
            prop_assert_eq!(reported, usize::from(with));
        }
    }
}
