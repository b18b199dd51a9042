//! The trace-context header parsers (`sluice_core::l7::trace`) over arbitrary bytes: the input
//! is split at its first two NUL bytes into up to three header values, fed to every parser.
//!
//! Properties:
//! - no parser panics, nor the hop decision (`decide_hop`) over the same values;
//! - whatever is accepted has non-zero ids, and written again parses to the same ids (and the
//!   same sampling decision, for the forms that carry one).
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice_core::l7::trace::{
    B3Single, HopRandom, IncomingHeaders, Propagation, TraceContext, decide_hop, format_b3_single,
    format_traceparent, parse_b3_multi, parse_b3_single, parse_traceparent,
};

fn check(c: &TraceContext) {
    assert_ne!(c.trace_id, [0; 16]);
    assert_ne!(c.span_id, [0; 8]);
    let sampled = c.sampled == Some(true);
    let tp = format_traceparent(&c.trace_id, &c.span_id, sampled);
    let back = parse_traceparent(&tp).expect("a written traceparent parses");
    assert_eq!((back.trace_id, back.span_id), (c.trace_id, c.span_id));
    assert_eq!(back.sampled, Some(sampled));
    let mut out = [0; 51];
    let n = format_b3_single(&c.trace_id, &c.span_id, sampled, &mut out);
    assert_eq!(
        parse_b3_single(&out[..n]),
        Some(B3Single::Context(TraceContext {
            sampled: Some(sampled),
            ..*c
        }))
    );
}

fuzz_target!(|data: &[u8]| {
    let mut parts = data.splitn(4, |&b| b == 0);
    let a = parts.next().unwrap_or_default();
    let b = parts.next().unwrap_or_default();
    let c = parts.next();
    let d = parts.next();
    for v in [data, a] {
        if let Some(ctx) = parse_traceparent(v) {
            check(&ctx);
        }
        if let Some(B3Single::Context(ctx)) = parse_b3_single(v) {
            check(&ctx);
        }
    }
    if let Some(ctx) = parse_b3_multi(a, b, c, d) {
        check(&ctx);
    }
    // The hop decided from the same values as headers: valid ids, a parent exactly when it
    // continues a context (never its own span), and a traceparent written back that parses to
    // it.
    let seed = data
        .iter()
        .fold(0u64, |h, &x| h.rotate_left(5) ^ u64::from(x));
    let incoming = IncomingHeaders {
        traceparent: Some(a),
        b3: Some(b),
        b3_trace_id: c,
        b3_span_id: d,
        b3_sampled: None,
        b3_flags: None,
    };
    let hop = decide_hop(
        &incoming,
        HopRandom {
            ids: [seed, !seed, seed.rotate_left(17)],
            draw: seed,
        },
        (seed % 1_000_001) as u32,
    );
    assert_ne!(hop.trace_id, [0; 16]);
    assert_ne!(hop.span_id, [0; 8]);
    assert_eq!(
        hop.parent_span_id.is_none(),
        hop.propagation == Propagation::Started
    );
    assert_ne!(Some(hop.span_id), hop.parent_span_id);
    let tp = format_traceparent(&hop.trace_id, &hop.span_id, hop.sampled);
    let back = parse_traceparent(&tp).expect("the hop's traceparent parses");
    assert_eq!(
        (back.trace_id, back.span_id, back.sampled),
        (hop.trace_id, hop.span_id, Some(hop.sampled))
    );
});
