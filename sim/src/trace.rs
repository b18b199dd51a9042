//! The event trace of a run: what each party saw, stamped with simulated time, and its digest.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

/// A shared, append-only event log (the simulation is single-threaded).
#[derive(Clone, Default)]
pub struct Trace {
    events: Rc<RefCell<Vec<String>>>,
}

impl Trace {
    /// Records an event at simulated time `at`.
    pub fn record(&self, at: Duration, who: &str, what: impl std::fmt::Display) {
        self.events.borrow_mut().push(format!(
            "{:>10.3}ms {who}: {what}",
            at.as_secs_f64() * 1000.0
        ));
    }

    /// Number of events.
    #[must_use]
    pub fn len(&self) -> usize {
        self.events.borrow().len()
    }

    /// Whether nothing was recorded.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// FNV-1a over every event, in order: equal traces give equal digests.
    #[must_use]
    pub fn digest(&self) -> u64 {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for e in self.events.borrow().iter() {
            for b in e.bytes().chain(std::iter::once(b'\n')) {
                h ^= u64::from(b);
                h = h.wrapping_mul(0x0100_0000_01b3);
            }
        }
        h
    }

    /// The events, for printing a failing run.
    #[must_use]
    pub fn dump(&self) -> String {
        self.events.borrow().join("\n")
    }
}

/// Whether a run's trace is to be printed: `SLUICE_SIM_TRACE` set and the run `failed`, or
/// `SLUICE_SIM_TRACE=all` (every run, e.g. to diff two replays of a seed).
#[must_use]
pub fn wanted(failed: bool) -> bool {
    match std::env::var_os("SLUICE_SIM_TRACE") {
        None => false,
        Some(v) => failed || v == "all",
    }
}
