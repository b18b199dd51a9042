//! Trace-context headers, parsed and written, and each hop's span decided from them
//! ([`decide_hop`], [`HopHeaders`]): W3C Trace Context (`traceparent`) and Zipkin B3
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

use crate::l7::edits::HeaderEdits;

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

/// The trace-context headers of a request as it arrived (each `None` when absent).
#[derive(Clone, Copy, Debug, Default)]
pub struct IncomingHeaders<'a> {
    /// `traceparent`.
    pub traceparent: Option<&'a [u8]>,
    /// The single `b3` header.
    pub b3: Option<&'a [u8]>,
    /// `x-b3-traceid`.
    pub b3_trace_id: Option<&'a [u8]>,
    /// `x-b3-spanid`.
    pub b3_span_id: Option<&'a [u8]>,
    /// `x-b3-sampled`.
    pub b3_sampled: Option<&'a [u8]>,
    /// `x-b3-flags`.
    pub b3_flags: Option<&'a [u8]>,
}

/// Which form a hop's trace context came in, and so which headers carry it upstream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Propagation {
    /// A valid `traceparent` (W3C): `tracestate` goes on with it.
    W3c,
    /// The single `b3` header.
    B3Single,
    /// The `x-b3-*` headers.
    B3Multi,
    /// No usable context: this hop started the trace.
    Started,
}

/// This proxy's span of a request: the trace it belongs to, its own new span id, the span
/// that sent the request (none when the trace starts here) and whether it is sampled.
///
/// Invariants: the ids are not all zero; `parent_span_id` is `None` exactly when
/// `propagation` is [`Propagation::Started`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hop {
    /// The trace.
    pub trace_id: [u8; 16],
    /// The span this hop creates (sent upstream as the parent of the next one).
    pub span_id: [u8; 8],
    /// The sender's span.
    pub parent_span_id: Option<[u8; 8]>,
    /// Sampled: the parent's decision when it made one, else this hop's.
    pub sampled: bool,
    /// Where the context came from.
    pub propagation: Propagation,
    /// A trace header was present but malformed (and so ignored, never half-read).
    pub malformed: bool,
    /// The request carried the single `b3` header (valid or not): it goes on, rewritten.
    pub had_b3_single: bool,
    /// The request carried `x-b3-*` headers (valid or not): they go on, rewritten.
    pub had_b3_multi: bool,
    /// B3's debug flag (`b3: …-d`, `x-b3-flags: 1`) came with the context: it goes on.
    pub debug: bool,
}

/// Randomness for one hop, brought by the caller: three words (the new span id, and the new
/// trace id when the trace starts here) and one for the sampling draw.
#[derive(Clone, Copy, Debug)]
pub struct HopRandom {
    /// Words for ids.
    pub ids: [u64; 3],
    /// The sampling draw.
    pub draw: u64,
}

/// One million: [`decide_hop`]'s sampling rate is in millionths.
pub const SAMPLING_SCALE: u32 = 1_000_000;

/// Decides this hop's span from the request's headers: the first valid context of
/// `traceparent`, the single `b3`, then the `x-b3-*` headers continues (its sampling decision
/// is kept when it made one); with none, a new trace starts. A decision-only B3 (`b3: 0`, or
/// `x-b3-sampled` without ids) is honoured for the new trace. An undecided trace is sampled
/// when `draw % SAMPLING_SCALE < sampling_per_million`.
#[must_use]
pub fn decide_hop(
    incoming: &IncomingHeaders<'_>,
    random: HopRandom,
    sampling_per_million: u32,
) -> Hop {
    // Every form present is parsed, so that a malformed one is counted (and, being rewritten
    // or removed upstream, never goes on) even when another form carries the context.
    let mut malformed = false;
    let w3c = incoming.traceparent.and_then(|v| {
        let c = parse_traceparent(v);
        malformed |= c.is_none();
        c
    });
    let single = incoming.b3.and_then(|v| {
        let c = parse_b3_single(v);
        malformed |= c.is_none();
        c
    });
    let (multi, multi_decision) = match (incoming.b3_trace_id, incoming.b3_span_id) {
        (Some(t), Some(s)) => {
            let c = parse_b3_multi(t, s, incoming.b3_sampled, incoming.b3_flags);
            malformed |= c.is_none();
            (c, None)
        }
        (None, None) => {
            let debug = incoming.b3_flags.map(trim) == Some(b"1");
            let decision = match incoming.b3_sampled.map(trim) {
                _ if debug => Some(true),
                Some(s) => {
                    let d = sampling(s);
                    malformed |= d.is_none();
                    d
                }
                None => None,
            };
            (None, decision)
        }
        // One id without the other.
        _ => {
            malformed = true;
            (None, None)
        }
    };
    let found = w3c
        .map(|c| (c, Propagation::W3c))
        .or(match single {
            Some(B3Single::Context(c)) => Some((c, Propagation::B3Single)),
            _ => None,
        })
        .or(multi.map(|c| (c, Propagation::B3Multi)));
    let decision_only = match single {
        Some(B3Single::SamplingOnly(s)) => Some(s),
        _ => multi_decision,
    };
    let had_b3_single = incoming.b3.is_some();
    let had_b3_multi = incoming.b3_trace_id.is_some()
        || incoming.b3_span_id.is_some()
        || incoming.b3_sampled.is_some()
        || incoming.b3_flags.is_some();
    let debug = incoming.b3_flags.map(trim) == Some(b"1")
        || incoming.b3.is_some_and(|v| {
            let v = trim(v);
            v == b"d" || v.split(|&b| b == b'-').nth(2) == Some(b"d")
        });
    let span_id = nonzero_span(random.ids[0]);
    let drawn = || (random.draw % u64::from(SAMPLING_SCALE)) < u64::from(sampling_per_million);
    match found {
        Some((c, propagation)) => Hop {
            trace_id: c.trace_id,
            span_id: if span_id == c.span_id {
                nonzero_span(random.ids[0] ^ u64::MAX)
            } else {
                span_id
            },
            parent_span_id: Some(c.span_id),
            sampled: c.sampled.unwrap_or_else(drawn),
            propagation,
            malformed,
            had_b3_single,
            had_b3_multi,
            debug,
        },
        None => {
            let mut trace_id = [0; 16];
            trace_id[..8].copy_from_slice(&random.ids[1].to_be_bytes());
            trace_id[8..].copy_from_slice(&random.ids[2].to_be_bytes());
            if trace_id == [0; 16] {
                trace_id[15] = 1;
            }
            Hop {
                trace_id,
                span_id,
                parent_span_id: None,
                sampled: decision_only.unwrap_or_else(drawn),
                propagation: Propagation::Started,
                malformed,
                had_b3_single,
                had_b3_multi,
                debug,
            }
        }
    }
}

fn nonzero_span(word: u64) -> [u8; 8] {
    (if word == 0 { 1 } else { word }).to_be_bytes()
}

/// The trace headers a hop sends upstream, written into fixed buffers (no allocation); see
/// [`HopHeaders::edits`].
#[derive(Clone, Debug)]
pub struct HopHeaders {
    traceparent: [u8; TRACEPARENT_LEN],
    trace_id: [u8; 32],
    span_id: [u8; 16],
    parent_span_id: [u8; 16],
    b3: [u8; 68],
    b3_len: usize,
    sampled: bool,
    propagation: Propagation,
    has_parent: bool,
    b3_single: bool,
    b3_multi: bool,
    debug: bool,
}

impl Default for HopHeaders {
    fn default() -> Self {
        HopHeaders {
            traceparent: [0; TRACEPARENT_LEN],
            trace_id: [0; 32],
            span_id: [0; 16],
            parent_span_id: [0; 16],
            b3: [0; 68],
            b3_len: 0,
            sampled: false,
            propagation: Propagation::Started,
            has_parent: false,
            b3_single: false,
            b3_multi: false,
            debug: false,
        }
    }
}

impl HopHeaders {
    /// Writes `hop`'s headers into the buffers.
    pub fn write(&mut self, hop: &Hop) {
        self.traceparent = format_traceparent(&hop.trace_id, &hop.span_id, hop.sampled);
        write_hex(&hop.trace_id, &mut self.trace_id);
        write_hex(&hop.span_id, &mut self.span_id);
        self.sampled = hop.sampled;
        self.propagation = hop.propagation;
        self.has_parent = hop.parent_span_id.is_some();
        self.b3_single = hop.had_b3_single;
        self.b3_multi = hop.had_b3_multi;
        self.debug = hop.debug;
        if let Some(p) = hop.parent_span_id {
            write_hex(&p, &mut self.parent_span_id);
        }
        let mut single = [0; 51];
        let n = format_b3_single(&hop.trace_id, &hop.span_id, hop.sampled, &mut single);
        self.b3[..n].copy_from_slice(&single[..n]);
        if hop.debug {
            self.b3[n - 1] = b'd';
        }
        self.b3_len = n;
        if self.has_parent {
            self.b3[n] = b'-';
            self.b3[n + 1..n + 17].copy_from_slice(&self.parent_span_id);
            self.b3_len = n + 17;
        }
    }

    /// The edits that carry the hop upstream, one consistent context in every form:
    /// `traceparent` always (replacing the client's); each B3 form the request carried (the
    /// single `b3`, the `x-b3-*` set), valid or not, rewritten with this hop's span, and every
    /// other trace header of the request removed — so no stale, malformed or contradicting
    /// header goes on beside the proxy's. `tracestate` goes on only with the `traceparent` it
    /// belongs to: a trace started here or continued from B3 drops it.
    pub fn edits<'a>(&'a self, edits: &mut HeaderEdits<'a>) {
        edits.set("traceparent", &self.traceparent);
        if self.propagation != Propagation::W3c {
            edits.remove("tracestate");
        }
        if self.b3_single {
            edits.set("b3", &self.b3[..self.b3_len]);
        } else {
            edits.remove("b3");
        }
        if self.b3_multi {
            edits.set("x-b3-traceid", &self.trace_id);
            edits.set("x-b3-spanid", &self.span_id);
            if self.has_parent {
                edits.set("x-b3-parentspanid", &self.parent_span_id);
            } else {
                edits.remove("x-b3-parentspanid");
            }
            edits.set("x-b3-sampled", if self.sampled { b"1" } else { b"0" });
            if self.debug {
                edits.set("x-b3-flags", b"1");
            } else {
                edits.remove("x-b3-flags");
            }
        } else {
            for name in [
                "x-b3-traceid",
                "x-b3-spanid",
                "x-b3-parentspanid",
                "x-b3-sampled",
                "x-b3-flags",
            ] {
                edits.remove(name);
            }
        }
    }

    /// The trace id as 32 lowercase hex digits (the access log's `TRACE_ID`).
    #[must_use]
    pub fn trace_id_hex(&self) -> &[u8; 32] {
        &self.trace_id
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

    const RND: HopRandom = HopRandom {
        ids: [
            0x1111_2222_3333_4444,
            0xaaaa_bbbb_cccc_dddd,
            0x0102_0304_0506_0708,
        ],
        draw: 7,
    };

    fn headers(h: &HopHeaders) -> Vec<(String, String)> {
        let mut e = HeaderEdits::new();
        h.edits(&mut e);
        let mut out: Vec<(String, String)> = e
            .removals()
            .iter()
            .map(|n| (format!("-{n}"), String::new()))
            .collect();
        out.extend(
            e.additions()
                .iter()
                .map(|(n, v)| ((*n).to_owned(), String::from_utf8(v.to_vec()).unwrap())),
        );
        out
    }

    #[test]
    fn a_traceparent_is_continued_with_a_new_span_and_its_decision() {
        let hop = decide_hop(
            &IncomingHeaders {
                traceparent: Some(TP),
                ..Default::default()
            },
            RND,
            0,
        );
        let parent = parse_traceparent(TP).unwrap();
        assert_eq!(hop.trace_id, parent.trace_id);
        assert_eq!(hop.parent_span_id, Some(parent.span_id));
        assert_eq!(hop.span_id, 0x1111_2222_3333_4444u64.to_be_bytes());
        assert!(hop.sampled, "the parent's decision wins over a 0% rate");
        assert_eq!(hop.propagation, Propagation::W3c);
        assert!(!hop.malformed);
        let mut h = HopHeaders::default();
        h.write(&hop);
        assert_eq!(
            headers(&h),
            [
                ("-traceparent".to_owned(), String::new()),
                ("-b3".to_owned(), String::new()),
                ("-x-b3-traceid".to_owned(), String::new()),
                ("-x-b3-spanid".to_owned(), String::new()),
                ("-x-b3-parentspanid".to_owned(), String::new()),
                ("-x-b3-sampled".to_owned(), String::new()),
                ("-x-b3-flags".to_owned(), String::new()),
                (
                    "traceparent".to_owned(),
                    "00-4bf92f3577b34da6a3ce929d0e0e4736-1111222233334444-01".to_owned()
                )
            ]
        );
    }

    #[test]
    fn no_context_starts_a_trace_sampled_by_the_rate() {
        let none = IncomingHeaders::default();
        let hop = decide_hop(&none, RND, SAMPLING_SCALE);
        assert_eq!(hop.propagation, Propagation::Started);
        assert_eq!(hop.parent_span_id, None);
        assert_eq!(&hop.trace_id[..8], &0xaaaa_bbbb_cccc_ddddu64.to_be_bytes());
        assert!(hop.sampled);
        assert!(
            !decide_hop(&none, RND, 7).sampled,
            "draw 7 is not below 7 per million"
        );
        assert!(decide_hop(&none, RND, 8).sampled);
        let mut h = HopHeaders::default();
        h.write(&hop);
        let hs = headers(&h);
        assert!(hs.iter().any(|(k, _)| k == "-tracestate"), "{hs:?}");
        assert!(hs.iter().any(|(k, _)| k == "traceparent"), "{hs:?}");
        // Zero words never make zero ids.
        let zero = decide_hop(
            &none,
            HopRandom {
                ids: [0; 3],
                draw: 0,
            },
            0,
        );
        assert_ne!(zero.trace_id, [0; 16]);
        assert_ne!(zero.span_id, [0; 8]);
    }

    #[test]
    fn a_malformed_traceparent_is_flagged_and_replaced_by_a_new_trace() {
        let bad = IncomingHeaders {
            traceparent: Some(b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7"),
            ..Default::default()
        };
        let hop = decide_hop(&bad, RND, SAMPLING_SCALE);
        assert!(hop.malformed);
        assert_eq!(hop.propagation, Propagation::Started);
        // A valid B3 context next to it is continued, still flagged.
        let both = IncomingHeaders {
            b3: Some(b"80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1"),
            ..bad
        };
        let hop = decide_hop(&both, RND, 0);
        assert!(hop.malformed && hop.sampled);
        assert_eq!(hop.propagation, Propagation::B3Single);
    }

    #[test]
    fn b3_contexts_go_on_in_their_own_form() {
        let multi = IncomingHeaders {
            b3_trace_id: Some(b"463ac35c9f6413ad"),
            b3_span_id: Some(b"A2FB4A1D1A96D312"),
            b3_sampled: Some(b"0"),
            ..Default::default()
        };
        let hop = decide_hop(&multi, RND, SAMPLING_SCALE);
        assert_eq!(hop.propagation, Propagation::B3Multi);
        assert!(!hop.sampled, "the sender decided not to sample");
        let mut h = HopHeaders::default();
        h.write(&hop);
        let hs = headers(&h);
        let get = |n: &str| hs.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
        assert_eq!(
            get("x-b3-traceid").unwrap(),
            "0000000000000000463ac35c9f6413ad"
        );
        assert_eq!(get("x-b3-spanid").unwrap(), "1111222233334444");
        assert_eq!(get("x-b3-parentspanid").unwrap(), "a2fb4a1d1a96d312");
        assert_eq!(get("x-b3-sampled").unwrap(), "0");
        assert_eq!(
            get("traceparent").unwrap(),
            "00-0000000000000000463ac35c9f6413ad-1111222233334444-00"
        );
        assert!(get("-tracestate").is_some());

        let single = IncomingHeaders {
            b3: Some(b"80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b90"),
            ..Default::default()
        };
        let hop = decide_hop(&single, RND, 0);
        h.write(&hop);
        let hs = headers(&h);
        let b3 = hs.iter().find(|(k, _)| k == "b3").unwrap();
        assert_eq!(
            b3.1,
            "80f198ee56343ba864fe8b2a57d3eff7-1111222233334444-1-e457b5a2e4d86bd1"
        );
        // One id without the other is malformed.
        let half = IncomingHeaders {
            b3_trace_id: Some(b"463ac35c9f6413ad"),
            ..Default::default()
        };
        assert!(decide_hop(&half, RND, 0).malformed);
    }

    #[test]
    fn decision_only_b3_is_honoured_for_a_new_trace() {
        for (inc, sampled) in [
            (
                IncomingHeaders {
                    b3: Some(b"0"),
                    ..Default::default()
                },
                false,
            ),
            (
                IncomingHeaders {
                    b3_sampled: Some(b"1"),
                    ..Default::default()
                },
                true,
            ),
            (
                IncomingHeaders {
                    b3_flags: Some(b"1"),
                    b3_sampled: Some(b"0"),
                    ..Default::default()
                },
                true,
            ),
        ] {
            let rate = if sampled { 0 } else { SAMPLING_SCALE };
            let hop = decide_hop(&inc, RND, rate);
            assert_eq!(hop.propagation, Propagation::Started);
            assert_eq!(hop.sampled, sampled, "{inc:?}");
            assert!(!hop.malformed);
        }
    }

    proptest! {
        /// Whatever comes in, the hop has valid ids, a new span different from its parent,
        /// a parent exactly when it continues, and headers that parse back to it.
        #[test]
        fn every_hop_is_valid_and_writes_back_to_itself(
            tp in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..60)),
            b3 in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..70)),
            ids: [u64; 3], draw: u64, rate in 0..=SAMPLING_SCALE,
        ) {
            let inc = IncomingHeaders { traceparent: tp.as_deref(), b3: b3.as_deref(), ..Default::default() };
            let hop = decide_hop(&inc, HopRandom { ids, draw }, rate);
            prop_assert_ne!(hop.trace_id, [0; 16]);
            prop_assert_ne!(hop.span_id, [0; 8]);
            prop_assert_eq!(hop.parent_span_id.is_none(), hop.propagation == Propagation::Started);
            prop_assert_ne!(Some(hop.span_id), hop.parent_span_id);
            let mut h = HopHeaders::default();
            h.write(&hop);
            let back = parse_traceparent(&h.traceparent).unwrap();
            prop_assert_eq!((back.trace_id, back.span_id, back.sampled), (hop.trace_id, hop.span_id, Some(hop.sampled)));
            if hop.propagation == Propagation::B3Single {
                let Some(B3Single::Context(c)) = parse_b3_single(&h.b3[..h.b3_len]) else {
                    panic!("b3 written back does not parse");
                };
                prop_assert_eq!((c.trace_id, c.span_id), (hop.trace_id, hop.span_id));
            }
        }
    }

    /// Every trace header the request carried goes on with the proxy's context, whatever form
    /// it was in and whichever one was continued: nothing stale, malformed or contradicting.
    #[test]
    fn every_form_present_is_rewritten_to_one_context() {
        let all = IncomingHeaders {
            traceparent: Some(TP),
            b3: Some(b"garbage"),
            b3_trace_id: Some(b"1111111111111111"),
            b3_span_id: Some(b"2222222222222222"),
            b3_sampled: Some(b"0"),
            b3_flags: None,
        };
        let hop = decide_hop(&all, RND, 0);
        assert_eq!(hop.propagation, Propagation::W3c);
        assert!(hop.malformed, "the b3 garbage is counted");
        let mut h = HopHeaders::default();
        h.write(&hop);
        let hs = headers(&h);
        let get = |n: &str| hs.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
        let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
        assert_eq!(
            get("b3").unwrap(),
            format!("{trace}-1111222233334444-1-00f067aa0ba902b7")
        );
        assert_eq!(get("x-b3-traceid").unwrap(), trace);
        assert_eq!(get("x-b3-spanid").unwrap(), "1111222233334444");
        assert_eq!(get("x-b3-parentspanid").unwrap(), "00f067aa0ba902b7");
        assert_eq!(
            get("x-b3-sampled").unwrap(),
            "1",
            "the W3C decision, in every form"
        );
        assert!(
            get("-tracestate").is_none(),
            "tracestate goes on with its traceparent"
        );
        assert!(get("-x-b3-flags").is_some());
        // B3's debug flag goes on.
        let debug = IncomingHeaders {
            b3: Some(b"80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-d"),
            ..Default::default()
        };
        let hop = decide_hop(&debug, RND, 0);
        assert!(hop.debug && hop.sampled);
        h.write(&hop);
        let hs = headers(&h);
        let b3 = &hs.iter().find(|(k, _)| k == "b3").unwrap().1;
        assert_eq!(
            b3,
            "80f198ee56343ba864fe8b2a57d3eff7-1111222233334444-d-e457b5a2e4d86bd1"
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
