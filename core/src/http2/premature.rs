//! Premature stream resets per downstream HTTP/2 connection: Envoy's rule against clients that
//! open streams and reset them before their answer, making the proxy do (and the upstream
//! serve) work for nothing at a rate `h2`'s own guards do not see — they count streams reset
//! before they were accepted (rapid reset) and streams the proxy reset for the client's errors
//! ("MadeYouReset"), not streams accepted, forwarded upstream and then cancelled.
//!
//! What it owns: the counts of one connection — streams ended, and of those the ones the
//! client reset within [`MIN_STREAM_LIFETIME`] of their start (*premature*). States: counting,
//! then (once) tripped; the verdict of [`PrematureResets::stream_ended`] says when the
//! connection should go (GOAWAY `ENHANCE_YOUR_CALM`, then close).
//!
//! The rule (Envoy's `overload.premature_reset_*` defaults): before [`TOTAL_STREAMS`] streams
//! have ended, [`TOTAL_STREAMS`] / 2 premature resets trip it; from then on, premature resets
//! making up half or more of the streams ended. A client that cancels now and then (a gRPC
//! deadline, a user closing a page) never comes near it.

use std::time::Duration;

/// A stream the client resets sooner than this after its start is a premature reset.
pub const MIN_STREAM_LIFETIME: Duration = Duration::from_secs(1);

/// Streams ended on a connection before the share rule applies (until then, half of this
/// many premature resets trip it).
pub const TOTAL_STREAMS: u64 = 500;

/// How a stream ended, as the connection's driver saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamEnd {
    /// Answered (or ended by the proxy or the upstream).
    Completed,
    /// The client reset it (RST_STREAM) after this long.
    ResetByClient(Duration),
}

/// What the connection should do after a stream ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Carry on.
    Continue,
    /// Too many premature resets: GOAWAY and close (reported once per connection).
    Close,
}

/// The counts of one downstream HTTP/2 connection.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PrematureResets {
    ended: u64,
    premature: u64,
    tripped: bool,
}

impl PrematureResets {
    /// A new connection's counts.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// A stream ended; whether the connection must go now.
    pub fn stream_ended(&mut self, end: StreamEnd) -> Verdict {
        self.ended += 1;
        if matches!(end, StreamEnd::ResetByClient(lived) if lived < MIN_STREAM_LIFETIME) {
            self.premature += 1;
        }
        if self.tripped {
            return Verdict::Continue;
        }
        let abusive = if self.ended < TOTAL_STREAMS {
            self.premature >= TOTAL_STREAMS / 2
        } else {
            self.premature * 2 >= self.ended
        };
        if abusive {
            self.tripped = true;
            Verdict::Close
        } else {
            Verdict::Continue
        }
    }

    /// Premature resets so far.
    #[must_use]
    pub fn premature(&self) -> u64 {
        self.premature
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const EARLY: StreamEnd = StreamEnd::ResetByClient(Duration::from_millis(5));
    const LATE: StreamEnd = StreamEnd::ResetByClient(Duration::from_secs(2));

    #[test]
    fn half_the_budget_of_early_resets_trips_it_before_the_share_applies() {
        let mut p = PrematureResets::new();
        for _ in 0..TOTAL_STREAMS / 2 - 1 {
            assert_eq!(p.stream_ended(EARLY), Verdict::Continue);
        }
        assert_eq!(p.stream_ended(EARLY), Verdict::Close);
        // Reported once.
        assert_eq!(p.stream_ended(EARLY), Verdict::Continue);
        assert_eq!(p.premature(), TOTAL_STREAMS / 2 + 1);
    }

    #[test]
    fn late_resets_and_answered_streams_never_trip_it() {
        let mut p = PrematureResets::new();
        for i in 0..10 * TOTAL_STREAMS {
            let end = if i % 2 == 0 {
                LATE
            } else {
                StreamEnd::Completed
            };
            assert_eq!(p.stream_ended(end), Verdict::Continue);
        }
        assert_eq!(p.premature(), 0);
    }

    #[test]
    fn past_the_total_half_the_streams_reset_early_trips_it() {
        let mut p = PrematureResets::new();
        for _ in 0..TOTAL_STREAMS {
            assert_eq!(p.stream_ended(StreamEnd::Completed), Verdict::Continue);
        }
        // 500 answered: 499 early resets keep it under half, the 500th reaches it.
        for _ in 0..TOTAL_STREAMS - 1 {
            assert_eq!(p.stream_ended(EARLY), Verdict::Continue);
        }
        assert_eq!(p.stream_ended(EARLY), Verdict::Close);
    }

    proptest! {
        /// A connection whose client resets at most a third of its streams early (in any
        /// order, late resets and answers mixed in) is never closed.
        #[test]
        fn a_third_early_never_trips(ends in prop::collection::vec(0u8..3, 0..3000)) {
            let mut p = PrematureResets::new();
            let mut ended = 0u64;
            for e in ends {
                ended += 1;
                let end = match e {
                    0 if (p.premature() + 1) * 3 <= ended => EARLY,
                    1 => LATE,
                    _ => StreamEnd::Completed,
                };
                prop_assert_eq!(p.stream_ended(end), Verdict::Continue);
            }
        }
    }
}
