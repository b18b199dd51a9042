//! The Bolt proxy's request deadlines: a queue of `(deadline, upstream, upstream id)` that
//! gives the earliest first, with lazy removal.
//!
//! Most requests on a worker get the same timeout (the route's, or one a client sends on every
//! frame), so their deadlines come in order: those go to a FIFO (O(1) push and pop); a deadline
//! earlier than the FIFO's last goes to a binary heap. The earliest is the earlier of the two
//! fronts. An answered request's entry is not searched for: the owner ([`super::BoltProxy`])
//! drops entries whose stream is gone when they reach the front, and compacts the queue when
//! dead entries outnumber live ones (see `BoltProxy::settle_timers`).
//!
//! Invariant: the FIFO's deadlines are non-decreasing front to back.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};

use super::UpstreamId;
use crate::time::Instant;

/// One deadline: when, and the stream it is for.
pub(super) type Deadline = (Instant, UpstreamId, u32);

/// See the module doc.
#[derive(Debug, Default)]
pub(super) struct Deadlines {
    in_order: VecDeque<Deadline>,
    out_of_order: BinaryHeap<Reverse<Deadline>>,
}

impl Deadlines {
    pub(super) fn push(&mut self, d: Deadline) {
        if self.in_order.back().is_none_or(|last| last.0 <= d.0) {
            self.in_order.push_back(d);
        } else {
            self.out_of_order.push(Reverse(d));
        }
    }

    /// The earliest entry.
    pub(super) fn peek(&self) -> Option<Deadline> {
        match (self.in_order.front(), self.out_of_order.peek()) {
            (Some(&a), Some(&Reverse(b))) => Some(if b.0 < a.0 { b } else { a }),
            (a, b) => a.copied().or(b.map(|&Reverse(b)| b)),
        }
    }

    /// Removes the earliest entry.
    pub(super) fn pop(&mut self) -> Option<Deadline> {
        let from_heap = match (self.in_order.front(), self.out_of_order.peek()) {
            (Some(a), Some(Reverse(b))) => b.0 < a.0,
            (None, _) => true,
            (Some(_), None) => false,
        };
        if from_heap {
            self.out_of_order.pop().map(|Reverse(d)| d)
        } else {
            self.in_order.pop_front()
        }
    }

    /// Drops every entry (all dead), giving back the room past `keep` entries.
    pub(super) fn clear_and_shrink(&mut self, keep: usize) {
        self.in_order.clear();
        self.out_of_order.clear();
        if self.in_order.capacity() > keep {
            self.in_order.shrink_to(0);
        }
        if self.out_of_order.capacity() > keep {
            self.out_of_order.shrink_to(0);
        }
    }

    /// Entries it has room for without allocating.
    #[cfg(test)]
    pub(super) fn capacity(&self) -> usize {
        self.in_order.capacity() + self.out_of_order.capacity()
    }

    pub(super) fn len(&self) -> usize {
        self.in_order.len() + self.out_of_order.len()
    }

    /// Keeps only the entries `keep` says to (order kept: a FIFO stays sorted).
    pub(super) fn retain(&mut self, mut keep: impl FnMut(&Deadline) -> bool) {
        self.in_order.retain(|d| keep(d));
        self.out_of_order.retain(|Reverse(d)| keep(d));
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = &Deadline> {
        self.in_order
            .iter()
            .chain(self.out_of_order.iter().map(|Reverse(d)| d))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::test_support::epoch;

    #[test]
    fn entries_come_out_earliest_first_whatever_the_push_order() {
        let t0 = epoch();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let up = UpstreamId(1);
        let mut d = Deadlines::default();
        for (i, ms) in [30, 30, 50, 10, 40, 60, 20, 60].into_iter().enumerate() {
            d.push((at(ms), up, u32::try_from(i).unwrap()));
        }
        assert_eq!(d.len(), 8);
        d.retain(|&(_, _, id)| id != 5);
        let mut out = Vec::new();
        while let Some(e) = d.peek() {
            assert_eq!(d.pop(), Some(e), "pop takes what peek shows");
            out.push(e.0);
        }
        let ms: Vec<u64> = out
            .iter()
            .map(|&t| u64::try_from((t - t0).as_millis()).unwrap())
            .collect();
        assert_eq!(ms, [10, 20, 30, 30, 40, 50, 60]);
        assert_eq!(d.peek(), None);
    }
}
