//! Trace-context headers, parsed and written: W3C Trace Context (`traceparent`) and Zipkin B3
//! (`x-b3-traceid` / `x-b3-spanid` / `x-b3-sampled` / `x-b3-flags`, and the single `b3`
//! header). Pure code over byte slices: no allocation, no clock, no randomness (a caller that
//! starts a trace brings its own random ids).
//!
//! A parse either yields a whole [`TraceContext`] or `None`: a malformed header is never
//! half-read (the caller then starts a new trace rather than forwarding a broken one).
//!
//! Invariants of a [`TraceContext`] this module returns: the trace id and the span id are not
//! all zero (both specifications call such ids invalid). A 64-bit B3 trace id is widened to 128
//! bits with leading zeros, as B3 prescribes.

/// Length of a version-00 `traceparent` value: `00-<32 hex>-<16 hex>-<2 hex>`.
pub const TRACEPARENT_LEN: usize = 55;

/// One hop's view of a trace: the trace, the span that sent the request, and the sampling
/// decision it carried (`None`: none was made — B3 lets a caller defer it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceContext {
    /// The trace (16 bytes; a 64-bit B3 id has 8 leading zero bytes).
    pub trace_id: [u8; 16],
    /// The sender's span: the parent of the span this hop creates.
    pub span_id: [u8; 8],
    /// Whether the trace is sampled, when the sender said.
    pub sampled: Option<bool>,
}

/// What a single `b3` header says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum B3Single {
    /// `{trace}-{span}[-{sampling}[-{parent}]]`.
    Context(TraceContext),
    /// Only a sampling decision (`0`, `1` or `d`): no trace to continue.
    SamplingOnly(bool),
}

/// Parses a `traceparent` value (W3C Trace Context level 1): version `00` exactly
/// [`TRACEPARENT_LEN`] bytes; a later version (not `ff`) may carry more after a `-`. Hex must
/// be lowercase, ids not all zero.
#[must_use]
pub fn parse_traceparent(v: &[u8]) -> Option<TraceContext> {
    let v = trim(v);
    if v.len() < TRACEPARENT_LEN || v[2] != b'-' || v[35] != b'-' || v[52] != b'-' {
        return None;
    }
    let version = lower_hex::<1>(&v[..2])?[0];
    if version == 0xff || (version == 0 && v.len() != TRACEPARENT_LEN) {
        return None;
    }
    if v.len() > TRACEPARENT_LEN && v[TRACEPARENT_LEN] != b'-' {
        return None;
    }
    let trace_id = lower_hex::<16>(&v[3..35])?;
    let span_id = lower_hex::<8>(&v[36..52])?;
    let flags = lower_hex::<1>(&v[53..55])?[0];
    valid(trace_id, span_id, Some(flags & 1 == 1))
}

/// Writes a version-00 `traceparent`: `00-{trace}-{span}-{01|00}`.
#[must_use]
pub fn format_traceparent(
    trace_id: &[u8; 16],
    span_id: &[u8; 8],
    sampled: bool,
) -> [u8; TRACEPARENT_LEN] {
    let mut out = [b'-'; TRACEPARENT_LEN];
    out[..2].copy_from_slice(b"00");
    write_hex(trace_id, &mut out[3..35]);
    write_hex(span_id, &mut out[36..52]);
    out[53..].copy_from_slice(if sampled { b"01" } else { b"00" });
    out
}

/// Parses the multi-header B3 form: `x-b3-traceid` (16 or 32 hex), `x-b3-spanid` (16 hex),
/// `x-b3-sampled` (`1`/`0`, or `true`/`false`) and `x-b3-flags` (`1`: debug, which implies
/// sampled). Hex of either case is accepted (B3 propagators in the wild send both).
#[must_use]
pub fn parse_b3_multi(
    trace_id: &[u8],
    span_id: &[u8],
    sampled: Option<&[u8]>,
    flags: Option<&[u8]>,
) -> Option<TraceContext> {
    let trace_id = b3_trace_id(trim(trace_id))?;
    let span_id = any_hex::<8>(trim(span_id))?;
    let debug = match flags.map(trim) {
        None => false,
        Some(b"1") => true,
        Some(b"0") => false,
        Some(_) => return None,
    };
    let sampled = match sampled.map(trim) {
        None => None,
        Some(s) => Some(sampling(s)?),
    };
    valid(trace_id, span_id, if debug { Some(true) } else { sampled })
}

/// Parses a single `b3` header: `{trace}-{span}[-{sampling}[-{parent}]]`, or a lone sampling
/// state (`0`, `1`, `d`).
#[must_use]
pub fn parse_b3_single(v: &[u8]) -> Option<B3Single> {
    let v = trim(v);
    if v.len() == 1 {
        return sampling(v).map(B3Single::SamplingOnly);
    }
    let mut parts = v.split(|&b| b == b'-');
    let trace_id = b3_trace_id(parts.next()?)?;
    let span_id = any_hex::<8>(parts.next()?)?;
    let sampled = match parts.next() {
        None => None,
        Some(s) => Some(sampling(s)?),
    };
    if let Some(parent) = parts.next() {
        any_hex::<8>(parent)?;
    }
    if parts.next().is_some() {
        return None;
    }
    valid(trace_id, span_id, sampled).map(B3Single::Context)
}

/// Writes a single `b3` header with a 128-bit trace id: `{trace}-{span}-{1|0}`; returns the
/// length written (`out` holds the longest, 32 + 1 + 16 + 2 bytes).
pub fn format_b3_single(
    trace_id: &[u8; 16],
    span_id: &[u8; 8],
    sampled: bool,
    out: &mut [u8; 51],
) -> usize {
    write_hex(trace_id, &mut out[..32]);
    out[32] = b'-';
    write_hex(span_id, &mut out[33..49]);
    out[49] = b'-';
    out[50] = if sampled { b'1' } else { b'0' };
    51
}

/// Lowercase hex of `bytes` into `out` (twice as long).
pub fn write_hex(bytes: &[u8], out: &mut [u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for (i, b) in bytes.iter().enumerate() {
        out[2 * i] = HEX[usize::from(b >> 4)];
        out[2 * i + 1] = HEX[usize::from(b & 15)];
    }
}

fn valid(trace_id: [u8; 16], span_id: [u8; 8], sampled: Option<bool>) -> Option<TraceContext> {
    (trace_id != [0; 16] && span_id != [0; 8]).then_some(TraceContext {
        trace_id,
        span_id,
        sampled,
    })
}

fn sampling(s: &[u8]) -> Option<bool> {
    match s {
        b"1" | b"d" | b"true" => Some(true),
        b"0" | b"false" => Some(false),
        _ => None,
    }
}

fn b3_trace_id(s: &[u8]) -> Option<[u8; 16]> {
    match s.len() {
        32 => any_hex::<16>(s),
        16 => {
            let low = any_hex::<8>(s)?;
            let mut id = [0; 16];
            id[8..].copy_from_slice(&low);
            Some(id)
        }
        _ => None,
    }
}

fn trim(v: &[u8]) -> &[u8] {
    v.trim_ascii()
}

fn nibble(c: u8, upper_ok: bool) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' if upper_ok => Some(c - b'A' + 10),
        _ => None,
    }
}

fn hex<const N: usize>(s: &[u8], upper_ok: bool) -> Option<[u8; N]> {
    if s.len() != 2 * N {
        return None;
    }
    let mut out = [0; N];
    for (i, pair) in s.chunks_exact(2).enumerate() {
        out[i] = nibble(pair[0], upper_ok)? << 4 | nibble(pair[1], upper_ok)?;
    }
    Some(out)
}

fn lower_hex<const N: usize>(s: &[u8]) -> Option<[u8; N]> {
    hex(s, false)
}

fn any_hex<const N: usize>(s: &[u8]) -> Option<[u8; N]> {
    hex(s, true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const TP: &[u8] = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn traceparent_examples() {
        let c = parse_traceparent(TP).unwrap();
        assert_eq!(c.trace_id[0], 0x4b);
        assert_eq!(c.span_id[7], 0xb7);
        assert_eq!(c.sampled, Some(true));
        assert_eq!(format_traceparent(&c.trace_id, &c.span_id, true), TP);
        for bad in [
            &b"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01"[..], // uppercase
            b"00-00000000000000000000000000000000-00f067aa0ba902b7-01",      // zero trace
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",      // zero span
            b"ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",      // version ff
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x",    // 00 with more
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0",
            b"00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            b"",
        ] {
            assert_eq!(
                parse_traceparent(bad),
                None,
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        // A later version may carry more fields after a dash.
        assert!(
            parse_traceparent(b"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00-ab")
                .is_some_and(|c| c.sampled == Some(false))
        );
    }

    #[test]
    fn b3_examples() {
        let single = parse_b3_single(
            b"80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b90",
        )
        .unwrap();
        let B3Single::Context(c) = single else {
            panic!("{single:?}")
        };
        assert_eq!(c.sampled, Some(true));
        assert_eq!(parse_b3_single(b"d"), Some(B3Single::SamplingOnly(true)));
        assert_eq!(parse_b3_single(b"0"), Some(B3Single::SamplingOnly(false)));
        assert_eq!(parse_b3_single(b"x"), None);
        assert_eq!(
            parse_b3_single(b"80f198ee56343ba8-e457b5a2e4d86bd1-1-2-3"),
            None
        );
        let m = parse_b3_multi(b"463ac35c9f6413ad", b"A2FB4A1D1A96D312", Some(b"0"), None).unwrap();
        assert_eq!(&m.trace_id[..8], &[0; 8], "64-bit id widened");
        assert_eq!(m.span_id[0], 0xa2);
        assert_eq!(m.sampled, Some(false));
        // x-b3-flags: 1 (debug) means sampled.
        let d = parse_b3_multi(
            b"463ac35c9f6413ad",
            b"a2fb4a1d1a96d312",
            Some(b"0"),
            Some(b"1"),
        );
        assert_eq!(d.unwrap().sampled, Some(true));
        assert_eq!(
            parse_b3_multi(b"463ac35c9f6413a", b"a2fb4a1d1a96d312", None, None),
            None
        );
        assert_eq!(
            parse_b3_multi(b"463ac35c9f6413ad", b"a2fb4a1d1a96d312", Some(b"yes"), None),
            None
        );
    }

    proptest! {
        #[test]
        fn traceparent_round_trips(t in any::<[u8; 16]>(), s in any::<[u8; 8]>(), sampled: bool) {
            let v = format_traceparent(&t, &s, sampled);
            let parsed = parse_traceparent(&v);
            if t == [0; 16] || s == [0; 8] {
                prop_assert_eq!(parsed, None);
            } else {
                prop_assert_eq!(parsed, Some(TraceContext { trace_id: t, span_id: s, sampled: Some(sampled) }));
            }
        }

        #[test]
        fn b3_single_round_trips(t in any::<[u8; 16]>(), s in any::<[u8; 8]>(), sampled: bool) {
            prop_assume!(t != [0; 16] && s != [0; 8]);
            let mut out = [0; 51];
            let n = format_b3_single(&t, &s, sampled, &mut out);
            prop_assert_eq!(
                parse_b3_single(&out[..n]),
                Some(B3Single::Context(TraceContext { trace_id: t, span_id: s, sampled: Some(sampled) }))
            );
        }

        /// Whatever a parse accepts, written again, parses to the same context.
        #[test]
        fn accepted_headers_reformat_to_themselves(v in proptest::collection::vec(any::<u8>(), 0..80)) {
            if let Some(c) = parse_traceparent(&v) {
                let again = format_traceparent(&c.trace_id, &c.span_id, c.sampled == Some(true));
                prop_assert_eq!(parse_traceparent(&again), Some(c));
            }
            if let Some(B3Single::Context(c)) = parse_b3_single(&v) {
                let mut out = [0; 51];
                let n = format_b3_single(&c.trace_id, &c.span_id, c.sampled == Some(true), &mut out);
                let B3Single::Context(back) = parse_b3_single(&out[..n]).unwrap() else {
                    panic!("not a context");
                };
                prop_assert_eq!((back.trace_id, back.span_id), (c.trace_id, c.span_id));
            }
        }

        /// A valid traceparent with any one byte changed parses to something valid or nothing.
        #[test]
        fn mutated_traceparent_never_half_parses(i in 0..TRACEPARENT_LEN, b: u8) {
            let mut v = TP.to_vec();
            v[i] = b;
            if let Some(c) = parse_traceparent(&v) {
                // Ids exactly as sent (the flags byte may carry other bits than sampled); the
                // version is written as 00, the one this codec speaks, whatever later version
                // (a changed version byte, e.g. `10`) came in.
                let again = format_traceparent(&c.trace_id, &c.span_id, c.sampled == Some(true));
                prop_assert_eq!(&again[..2], b"00");
                prop_assert_eq!(&again[2..53], &v[2..53]);
            }
        }
    }
}
