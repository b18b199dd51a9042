//! The trace-context header parsers (`sluice_core::l7::trace`) over arbitrary bytes: the input
//! is split at its first two NUL bytes into up to three header values, fed to every parser.
//!
//! Properties:
//! - no parser panics;
//! - whatever is accepted has non-zero ids, and written again parses to the same ids (and the
//!   same sampling decision, for the forms that carry one).
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice_core::l7::trace::{
    B3Single, TraceContext, format_b3_single, format_traceparent, parse_b3_multi,
    parse_b3_single, parse_traceparent,
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
});
