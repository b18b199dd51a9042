//! Giving freed heap memory back to the operating system after a storm of connections.
//!
//! glibc's `malloc` returns memory to the kernel only from the top of each arena (and each
//! worker thread has its own arena): after a storm of connections has closed, what their tasks
//! and buffers used sits free *inside* the arenas, below memory still in use, and the process
//! keeps it — on the loopback storm benchmark (`benches/loopback/storm_rss.py`, 5,000 held
//! connections) RSS stayed at ×4.8 its idle size long after every connection had closed; one
//! `malloc_trim(0)` brings it back near idle. The worker buffer pools already free what they
//! kept for a burst ([`crate::bufpool`]); this module makes the allocator give it back.
//!
//! One background thread (`sluice-memtrim`, glibc only) looks every [`CHECK_INTERVAL`] at the
//! process's connection count: when at least [`STORM`] fewer connections are open than the most
//! open at once since its last look ([`ProcessLimits::take_peak`]), a storm has closed, and it
//! calls `malloc_trim(0)` then and once more at the next look (the buffer pools free what a
//! burst left only at their next sweeps). A steady load never trims, however fragmented its
//! heap (a trim makes the next allocations fault their pages in again), and the check costs two
//! atomic loads: the allocator is not asked anything (`mallinfo2` walks every free chunk under
//! the arena locks — milliseconds on a fragmented heap). Nothing on the data path: the thread
//! never touches a connection.
//!
//! This module is one of the three in the runtime with `unsafe` (with [`crate::fdpass`] and
//! [`crate::tcp_info`]): one call
//! into glibc through `libc`, with no pointers and no preconditions.

use std::sync::Arc;
use std::time::Duration;

use tracing::{debug, warn};

use crate::limits::ProcessLimits;

/// How often the connection count is looked at.
pub const CHECK_INTERVAL: Duration = Duration::from_secs(10);

/// A drop in open connections (from the most open since the last look) that counts as a storm
/// that closed: at ~10–30 KB each, a thousand connections held ~10–30 MB.
pub const STORM: u64 = 1000;

/// Whether the looks so far call for a trim: `peak` the most connections open at once since the
/// last look, `open` those open now.
#[must_use]
pub fn storm_closed(peak: u64, open: u64) -> bool {
    peak.saturating_sub(open) >= STORM
}

/// Gives the arenas' free memory back to the kernel (`malloc_trim(0)`).
pub fn trim() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim takes a size (0: keep no padding) and only works on the allocator's
    // own free chunks under its own locks; no memory of ours is touched.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// The process's resident set in bytes (for the log line), from `/proc/self/statm`.
fn rss_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    let page = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .and_then(|p| u64::try_from(p).ok())
        .unwrap_or(4096);
    Some(pages * page)
}

/// Starts the background thread (see the module doc); on a C library without `malloc_trim`,
/// nothing. A thread that cannot be started is logged, not fatal: this is an optimisation.
pub fn spawn(limits: Arc<ProcessLimits>) {
    if !cfg!(all(target_os = "linux", target_env = "gnu")) {
        return;
    }
    let started = std::thread::Builder::new()
        .name("sluice-memtrim".into())
        .spawn(move || {
            let mut again = false;
            loop {
                std::thread::sleep(CHECK_INTERVAL);
                let (peak, open) = (limits.take_peak(), limits.open());
                if storm_closed(peak, open) || std::mem::take(&mut again) {
                    again = storm_closed(peak, open);
                    let before = rss_bytes();
                    trim();
                    debug!(
                        peak,
                        open,
                        rss_before = before,
                        rss_after = rss_bytes(),
                        "heap trimmed"
                    );
                }
            }
        });
    if let Err(e) = started {
        warn!(error = %e, "cannot start the heap-trimming thread; freed memory stays in the process");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_drop_of_a_storms_size_calls_for_a_trim() {
        assert!(!storm_closed(0, 0));
        assert!(!storm_closed(10_000, 9_500), "steady load with churn");
        assert!(!storm_closed(500, 0), "a small burst");
        assert!(storm_closed(5_000, 10));
        assert!(
            !storm_closed(10, 5_000),
            "connections opened since: no drop"
        );
    }

    #[test]
    fn the_peak_is_the_most_open_at_once_since_the_last_look() {
        let config = sluice_core::config::Config::from_yaml(
            "limits: { max_connections: 100000 }\nlisteners:\n  - name: e\n    address: 127.0.0.1:1\n    echo: {}\n",
        )
        .unwrap();
        let limits = ProcessLimits::new(&config);
        let listener = limits.listener_counter("127.0.0.1:1".parse().unwrap());
        for _ in 0..1500 {
            limits.admit(&listener, None).unwrap();
        }
        for _ in 0..1490 {
            limits.release(&listener);
        }
        let (peak, open) = (limits.take_peak(), limits.open());
        assert_eq!((peak, open), (1500, 10));
        assert!(storm_closed(peak, open));
        // The next look starts from what is open now: no second storm without new connections.
        assert_eq!(limits.take_peak(), 10);
    }

    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn memory_freed_below_live_memory_goes_back_to_the_os() {
        // RSS is the process's: meaningful only with this test alone in it (nextest runs each
        // test in its own process; `cargo test` runs them as threads of one).
        if std::env::var_os("NEXTEST_RUN_ID").is_none() {
            eprintln!("skipped: needs its own process (run under cargo nextest)");
            return;
        }
        // 64 MiB in 16 KiB blocks (below the mmap threshold: from the arena), touched, then all
        // freed but the last, which pins the arena's top: free() alone cannot give it back.
        let mut blocks: Vec<Vec<u8>> = (0..4096).map(|i| vec![i as u8; 16 << 10]).collect();
        let pin = blocks.pop();
        let before_free = rss_bytes().unwrap();
        drop(blocks);
        let held = rss_bytes().unwrap();
        assert!(
            held + (16 << 20) > before_free,
            "free() alone returned it: {before_free} → {held}"
        );
        trim();
        let after = rss_bytes().unwrap();
        assert!(
            after + (48 << 20) <= held,
            "RSS {held} → {after}: the trim gave back less than 48 MiB"
        );
        drop(pin);
    }
}
