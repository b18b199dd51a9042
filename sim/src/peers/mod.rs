//! The simulated peers the scenarios share: HTTP/1.1 clients and Bolt upstreams. They speak
//! their protocols with their own minimal code (`httparse`, [`crate::bolt::wire`]) — not with
//! Sluice's codecs — so the tests do not share the code under test.

use std::time::Duration;

pub mod bolt;
pub mod http;

/// An upstream's processing time for a request (deterministic per `content`, below `max_ms`),
/// so that faults land between a request's arrival and its answer.
#[must_use]
pub fn work(content: &[u8], max_ms: u64) -> Duration {
    let h = content
        .iter()
        .fold(7u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(*b)));
    Duration::from_millis(h % max_ms)
}
