//! Giving freed heap memory back to the operating system after a burst.
//!
//! glibc's `malloc` returns memory to the kernel only from the top of each arena (and each
//! worker thread has its own arena): after a storm of connections has closed, what their tasks
//! and buffers used sits free *inside* the arenas, below memory still in use, and the process
//! keeps it — on the loopback storm benchmark (`benches/loopback/storm_rss.py`, 5,000 held
//! connections) RSS stayed at ×5 its idle size long after every connection had closed, while one
//! `malloc_trim(0)` brought it back to ×1.13. The worker buffer pools already free what they kept
//! for a burst ([`crate::bufpool`]); this module makes the allocator give it back.
//!
//! One background thread (`sluice-memtrim`) looks every [`CHECK_INTERVAL`] at how much the
//! arenas hold free (`mallinfo2`) and calls `malloc_trim(0)` when it is at least [`MIN_FREE`]
//! *and* at least as much as is in use — so a steady load, whose arenas keep a working set of
//! free chunks smaller than what is live, is never trimmed (a trim makes the next allocations
//! fault their pages in again), and a process after a burst is, within one interval. Nothing on
//! the data path: the thread never touches a connection.
//!
//! This module is one of the two in the runtime with `unsafe` (with [`crate::fdpass`]): two
//! calls into glibc through `libc`, with no pointers and no preconditions. On other C libraries
//! (musl) it does nothing.

use std::time::Duration;

use tracing::debug;

/// How often the arenas are looked at.
pub const CHECK_INTERVAL: Duration = Duration::from_secs(10);

/// Free bytes in the arenas below which nothing is trimmed.
pub const MIN_FREE: usize = 8 << 20;

/// The allocator's view: bytes in use and bytes free inside its arenas.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeapUse {
    /// Bytes in allocated chunks (`uordblks`).
    pub in_use: usize,
    /// Bytes in free chunks inside the arenas (`fordblks`): what a trim can give back.
    pub free: usize,
}

/// The allocator's current numbers (`None` where the C library does not say).
#[must_use]
pub fn heap_use() -> Option<HeapUse> {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallinfo2 takes no arguments, returns a struct by value and only reads the
        // allocator's state under its own locks (glibc >= 2.33).
        let mi = unsafe { libc::mallinfo2() };
        Some(HeapUse {
            in_use: mi.uordblks,
            free: mi.fordblks,
        })
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        None
    }
}

/// Whether a process whose heap looks like `heap` should be trimmed (see the module doc).
#[must_use]
pub fn worth_trimming(heap: HeapUse) -> bool {
    heap.free >= MIN_FREE && heap.free >= heap.in_use
}

/// Trims when [`worth_trimming`]; returns the free bytes the arenas held when it did.
pub fn trim_if_worthwhile() -> Option<usize> {
    let heap = heap_use()?;
    if !worth_trimming(heap) {
        return None;
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: malloc_trim takes a size (0: keep no padding) and only works on the
        // allocator's own free chunks under its own locks; no memory of ours is touched.
        unsafe {
            libc::malloc_trim(0);
        }
    }
    Some(heap.free)
}

/// Starts the background thread (see the module doc).
pub fn spawn() -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("sluice-memtrim".into())
        .spawn(|| {
            loop {
                std::thread::sleep(CHECK_INTERVAL);
                if let Some(free) = trim_if_worthwhile() {
                    debug!(free_bytes = free, "heap trimmed: freed memory given back");
                }
            }
        })
        .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rss_bytes() -> usize {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let kb: usize = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().strip_suffix("kB"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap();
        kb * 1024
    }

    #[test]
    fn a_steady_heap_is_left_alone_and_a_drained_one_is_trimmed() {
        assert!(!worth_trimming(HeapUse {
            in_use: 100 << 20,
            free: 40 << 20
        }));
        assert!(!worth_trimming(HeapUse {
            in_use: 1 << 20,
            free: 4 << 20
        }));
        assert!(worth_trimming(HeapUse {
            in_use: 10 << 20,
            free: 40 << 20
        }));
    }

    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn memory_freed_below_live_memory_goes_back_to_the_os() {
        // 64 MiB in 16 KiB blocks (below the mmap threshold: from the arena), touched, then all
        // freed but the last, which pins the arena's top: free() alone cannot give it back.
        let mut blocks: Vec<Vec<u8>> = (0..4096).map(|i| vec![i as u8; 16 << 10]).collect();
        let pin = blocks.pop();
        let before_free = rss_bytes();
        drop(blocks);
        let heap = heap_use().unwrap();
        assert!(heap.free >= 48 << 20, "{heap:?}");
        let held = rss_bytes();
        assert!(
            held + (16 << 20) > before_free,
            "free() alone returned it: nothing to test"
        );
        assert!(trim_if_worthwhile().is_some());
        let after = rss_bytes();
        assert!(
            after + (48 << 20) <= held,
            "RSS {held} → {after}: the trim gave back less than 48 MiB"
        );
        assert!(heap_use().unwrap().free < heap.free);
        drop(pin);
    }
}
