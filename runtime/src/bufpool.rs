//! A worker's pool of connection buffers (HTTP's and the L4 relay's): an HTTP/1.1 connection
//! holds its read and write buffers only while a request is in flight and gives them back here
//! when it goes idle, a `tcp_proxy` session its relay buffers only while bytes are in flight
//! (issue 15: an idle keep-alive connection or TCP session holds no buffer).
//!
//! Owns bounded free lists, one per kind of buffer:
//! - **read** buffers: `Vec<u8>` of exactly [`READ_BUFFER`] bytes, length and capacity (a
//!   `ReadBuffer` reads into their whole length); a buffer that grew (a long head) is freed,
//!   not pooled;
//! - **write** buffers: empty `Vec<u8>` with a capacity of at most [`READ_BUFFER`] bytes;
//! - **L4 relay buffers** (`Box<[u8]>` of [`crate::relay::BUFFER_SIZE`]): a `tcp_proxy`
//!   direction takes one when its source is readable and gives it back once its bytes are
//!   written (an idle session holds none), the ClientHello peek one for its reads;
//! - **HTTP/2 stream states** ([`crate::http2::StreamBuffers`], without their read and write
//!   buffers, which come back to the lists above): a stream takes one when it starts and gives it
//!   back when it ends (its parsed heads and scratch keep their capacity, up to a few KiB per
//!   copy: `Scratch::shed`; the sink's buffer up to [`READ_BUFFER`]) — at most ~32 KiB each,
//!   typically under 1 KiB.
//!
//! Invariants: a pooled buffer is never held by a connection; each list holds at most
//! [`MAX_POOLED`] buffers (a burst's surplus is freed), so the pool's own memory is bounded
//! whatever the number of connections. Taking and giving are a `Vec` pop and push on the
//! worker's thread (a `RefCell`, never shared across workers: no lock); a worker's steady state
//! allocates nothing. `!Send`, like the engine that owns it.
//!
//! **Sizing.** The bound is large enough for the swing of a busy worker's buffers in use (500
//! HTTP/2 streams in flight hold 1,000 read buffers, and hundreds come back and are taken again
//! within a millisecond as a batch of responses goes out): with a small bound each such swing
//! freed buffers that the next batch allocated and zeroed again (a 16 KiB `calloc` per buffer,
//! ~2.5 % of the proxy's CPU on `h2load -c 50 -m 10`). What a burst leaves behind is given back
//! by [`BufPool::trim`], run by the worker's periodic sweep: the buffers that stayed in the pool
//! through a whole sweep interval (the list's low-water mark since the last trim) were not
//! needed, and are freed, down to [`KEPT_WHEN_IDLE`].

#[cfg(test)]
use std::cell::Cell;
use std::cell::RefCell;

use crate::http2::StreamBuffers;

/// Size of a pooled read buffer (the HTTP/1.1 read size).
pub(crate) const READ_BUFFER: usize = 16 * 1024;
/// Buffers of each kind kept for reuse per worker (16 MiB of read buffers at most, only while
/// a burst's buffers wait for [`BufPool::trim`]).
pub(crate) const MAX_POOLED: usize = 1024;
/// Buffers of each kind that [`BufPool::trim`] leaves in the pool however long they were unused
/// (1 MiB of read buffers: a quiet worker's next requests allocate nothing).
pub(crate) const KEPT_WHEN_IDLE: usize = 64;

/// L4 relay buffers (32 KiB each, two per copying session) [`BufPool::trim`] leaves however
/// long they were unused: 512 KiB.
pub(crate) const RELAY_KEPT_WHEN_IDLE: usize = 16;

/// One free list and its low-water mark since the last trim (also the worker's pool of splice
/// pipes, [`crate::splice::PipePool`]).
pub(crate) struct FreeList<T> {
    items: Vec<T>,
    /// The fewest items the list held since the last [`FreeList::trim`].
    low_water: usize,
}

impl<T> Default for FreeList<T> {
    fn default() -> Self {
        FreeList {
            items: Vec::new(),
            low_water: 0,
        }
    }
}

impl<T> FreeList<T> {
    pub(crate) fn pop(&mut self) -> Option<T> {
        let item = self.items.pop();
        self.low_water = self.low_water.min(self.items.len());
        item
    }

    /// Keeps `item` for reuse (drops it when the list holds [`MAX_POOLED`]).
    fn push(&mut self, item: T) {
        self.push_at_most(item, MAX_POOLED);
    }

    /// Keeps `item` for reuse (drops it when the list holds `max`).
    pub(crate) fn push_at_most(&mut self, item: T, max: usize) {
        if self.items.len() < max {
            self.items.push(item);
        }
    }

    /// Drops the items no pop reached since the last trim (keeping `kept_when_idle`).
    pub(crate) fn trim(&mut self, kept_when_idle: usize) {
        let unused = self.low_water;
        let keep = self
            .items
            .len()
            .saturating_sub(unused)
            .max(kept_when_idle.min(self.items.len()));
        self.items.truncate(keep);
        self.items.shrink_to(keep.max(kept_when_idle));
        self.low_water = self.items.len();
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.items.len()
    }

    #[cfg(test)]
    pub(crate) fn items(&self) -> &[T] {
        &self.items
    }
}

/// See the module doc.
#[derive(Default)]
pub(crate) struct BufPool {
    read: RefCell<FreeList<Vec<u8>>>,
    write: RefCell<FreeList<Vec<u8>>>,
    /// Boxed: a stream's future holds a pointer, and taking or giving one moves no more.
    streams: RefCell<FreeList<Box<StreamBuffers>>>,
    /// The L4 relay's buffers ([`crate::relay::BUFFER_SIZE`], two per copying session, and
    /// the ClientHello peeks'): trimmed like the others, so a storm of copied TCP sessions
    /// does not keep 32 MiB per worker for good.
    relay: RefCell<FreeList<Box<[u8]>>>,
    /// L4 relay buffers taken and not given back (tests: an idle relay holds none).
    #[cfg(test)]
    relay_out: Cell<isize>,
    /// Read buffers taken so far (tests: a busy connection takes none between its requests).
    #[cfg(test)]
    read_takes: Cell<usize>,
    /// HTTP/2 stream states made because the pool had none (tests: streams reuse them).
    #[cfg(test)]
    streams_made: Cell<usize>,
}

impl BufPool {
    /// A read buffer of [`READ_BUFFER`] bytes (its contents are unspecified).
    pub(crate) fn take_read(&self) -> Vec<u8> {
        #[cfg(test)]
        self.read_takes.set(self.read_takes.get() + 1);
        self.read
            .borrow_mut()
            .pop()
            .unwrap_or_else(|| vec![0u8; READ_BUFFER])
    }

    /// Gives a read buffer back (freed when it is not of the pooled size or the pool is full).
    pub(crate) fn give_read(&self, buf: Vec<u8>) {
        if buf.len() != READ_BUFFER || buf.capacity() != READ_BUFFER {
            return;
        }
        self.read.borrow_mut().push(buf);
    }

    /// Gives back a read buffer taken for one poll that read nothing into it (not counted as
    /// taken).
    pub(crate) fn untake_read(&self, buf: Vec<u8>) {
        #[cfg(test)]
        self.read_takes.set(self.read_takes.get() - 1);
        self.give_read(buf);
    }

    /// An empty write buffer (a pooled one keeps its capacity; else unallocated).
    pub(crate) fn take_write(&self) -> Vec<u8> {
        self.write.borrow_mut().pop().unwrap_or_default()
    }

    /// Gives a write buffer back, emptied (freed when it grew past [`READ_BUFFER`] or the pool
    /// is full; an unallocated one is just dropped).
    pub(crate) fn give_write(&self, mut buf: Vec<u8>) {
        if buf.capacity() == 0 || buf.capacity() > READ_BUFFER {
            return;
        }
        buf.clear();
        self.write.borrow_mut().push(buf);
    }

    /// Frees the buffers of each kind that stayed in the pool since the last call (see the
    /// module doc); the worker's periodic sweep calls it.
    pub(crate) fn trim(&self) {
        self.read.borrow_mut().trim(KEPT_WHEN_IDLE);
        self.write.borrow_mut().trim(KEPT_WHEN_IDLE);
        self.streams.borrow_mut().trim(KEPT_WHEN_IDLE);
        self.relay.borrow_mut().trim(RELAY_KEPT_WHEN_IDLE);
    }

    /// An L4 relay buffer of [`crate::relay::BUFFER_SIZE`] bytes (contents unspecified).
    pub(crate) fn take_relay(&self) -> Box<[u8]> {
        #[cfg(test)]
        self.relay_out.set(self.relay_out.get() + 1);
        self.relay
            .borrow_mut()
            .pop()
            .unwrap_or_else(|| vec![0u8; crate::relay::BUFFER_SIZE].into_boxed_slice())
    }

    /// Gives an L4 relay buffer back (freed when the pool is full).
    pub(crate) fn give_relay(&self, buf: Box<[u8]>) {
        #[cfg(test)]
        self.relay_out.set(self.relay_out.get() - 1);
        self.relay.borrow_mut().push(buf);
    }

    /// L4 relay buffers taken and not given back now.
    #[cfg(test)]
    pub(crate) fn relay_out(&self) -> isize {
        self.relay_out.get()
    }

    /// L4 relay buffers in the pool now.
    #[cfg(test)]
    pub(crate) fn relay_pooled(&self) -> usize {
        self.relay.borrow().len()
    }

    /// An HTTP/2 stream's state kept from an earlier stream, if any.
    pub(crate) fn take_stream(&self) -> Option<Box<StreamBuffers>> {
        self.streams.borrow_mut().pop()
    }

    /// Keeps an ended HTTP/2 stream's state (its buffers already given back) for a next stream.
    pub(crate) fn give_stream(&self, state: Box<StreamBuffers>) {
        self.streams.borrow_mut().push(state);
    }

    /// Counts an HTTP/2 stream state made because [`BufPool::take_stream`] had none.
    #[cfg(test)]
    pub(crate) fn note_stream_made(&self) {
        self.streams_made.set(self.streams_made.get() + 1);
    }

    /// HTTP/2 stream states made so far.
    #[cfg(test)]
    pub(crate) fn streams_made(&self) -> usize {
        self.streams_made.get()
    }

    /// Read buffers taken so far.
    #[cfg(test)]
    pub(crate) fn read_takes(&self) -> usize {
        self.read_takes.get()
    }

    /// Buffers in the pool now: (read, write).
    #[cfg(test)]
    pub(crate) fn pooled(&self) -> (usize, usize) {
        (self.read.borrow().len(), self.write.borrow().len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pool_keeps_only_buffers_of_its_sizes_and_at_most_its_bound() {
        let pool = BufPool::default();
        let a = pool.take_read();
        assert_eq!(a.len(), READ_BUFFER);
        pool.give_read(a);
        pool.give_read(vec![0u8; 2 * READ_BUFFER]);
        assert_eq!(pool.pooled(), (1, 0));
        let mut w = pool.take_write();
        w.extend_from_slice(b"response");
        pool.give_write(w);
        pool.give_write(Vec::new());
        pool.give_write(Vec::with_capacity(READ_BUFFER + 1));
        assert_eq!(pool.pooled(), (1, 1));
        assert!(pool.take_write().is_empty());
        for _ in 0..MAX_POOLED + 10 {
            pool.give_read(vec![0u8; READ_BUFFER]);
        }
        assert_eq!(pool.pooled().0, MAX_POOLED);
    }

    #[test]
    fn relay_buffers_a_storm_left_are_freed_by_the_sweeps() {
        let pool = BufPool::default();
        let taken: Vec<Box<[u8]>> = (0..300).map(|_| pool.take_relay()).collect();
        for b in taken {
            pool.give_relay(b);
        }
        assert_eq!(pool.relay_pooled(), 300);
        pool.trim(); // the storm's interval: its takes reached every buffer
        pool.trim(); // a whole interval with no take
        assert_eq!(pool.relay_pooled(), RELAY_KEPT_WHEN_IDLE);
    }

    #[test]
    fn trim_frees_what_no_take_reached_since_the_last_trim() {
        let pool = BufPool::default();
        // A burst: 600 read and 300 write buffers in use at once, then all given back.
        let reads: Vec<_> = (0..600).map(|_| pool.take_read()).collect();
        let writes: Vec<_> = (0..300)
            .map(|_| {
                let mut w = pool.take_write();
                w.reserve(100);
                w
            })
            .collect();
        reads.into_iter().for_each(|b| pool.give_read(b));
        writes.into_iter().for_each(|b| pool.give_write(b));
        assert_eq!(pool.pooled(), (600, 300));
        // Everything was taken during the interval: nothing is freed.
        pool.trim();
        assert_eq!(pool.pooled(), (600, 300));
        // Next interval: at most 100 reads in use at once; the 500 others stayed unused.
        for _ in 0..3 {
            let some: Vec<_> = (0..100).map(|_| pool.take_read()).collect();
            some.into_iter().for_each(|b| pool.give_read(b));
        }
        pool.trim();
        assert_eq!(pool.pooled(), (100, KEPT_WHEN_IDLE));
        // A quiet interval: down to the floor, never below it.
        pool.trim();
        assert_eq!(pool.pooled(), (KEPT_WHEN_IDLE, KEPT_WHEN_IDLE));
        pool.trim();
        assert_eq!(pool.pooled(), (KEPT_WHEN_IDLE, KEPT_WHEN_IDLE));
    }
}
