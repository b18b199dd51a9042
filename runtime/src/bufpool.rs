//! A worker's pool of HTTP connection buffers: an HTTP/1.1 connection holds its read and write
//! buffers only while a request is in flight and gives them back here when it goes idle
//! (issue 15: an idle keep-alive connection holds no buffer).
//!
//! Owns two bounded free lists, one per kind of buffer:
//! - **read** buffers: `Vec<u8>` of exactly [`READ_BUFFER`] bytes, length and capacity (a
//!   `ReadBuffer` reads into their whole length); a buffer that grew (a long head) is freed,
//!   not pooled;
//! - **write** buffers: empty `Vec<u8>` with a capacity of at most [`READ_BUFFER`] bytes.
//!
//! Invariants: a pooled buffer is never held by a connection; each list holds at most
//! [`MAX_POOLED`] buffers (a burst's surplus is freed), so the pool's own memory is bounded
//! whatever the number of connections. Taking and giving are a `Vec` pop and push on the
//! worker's thread (a `RefCell`, never shared across workers: no lock); a worker's steady state
//! allocates nothing. `!Send`, like the engine that owns it.

#[cfg(test)]
use std::cell::Cell;
use std::cell::RefCell;

/// Size of a pooled read buffer (the HTTP/1.1 read size).
pub(crate) const READ_BUFFER: usize = 16 * 1024;
/// Buffers of each kind kept for reuse per worker (4 MiB of read buffers at most).
pub(crate) const MAX_POOLED: usize = 256;

/// See the module doc.
#[derive(Default)]
pub(crate) struct BufPool {
    read: RefCell<Vec<Vec<u8>>>,
    write: RefCell<Vec<Vec<u8>>>,
    /// Read buffers taken so far (tests: a busy connection takes none between its requests).
    #[cfg(test)]
    read_takes: Cell<usize>,
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
        let mut pool = self.read.borrow_mut();
        if pool.len() < MAX_POOLED {
            pool.push(buf);
        }
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
        let mut pool = self.write.borrow_mut();
        if pool.len() < MAX_POOLED {
            pool.push(buf);
        }
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
}
