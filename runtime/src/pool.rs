//! Per-worker upstream keep-alive pool: idle connections by cluster and host.
//!
//! Owned by one worker (no locks). A connection is checked out only if it is still open — a
//! non-blocking poll must find it neither readable (EOF or stray bytes) nor errored — and it has
//! been idle less than its cluster's `upstream_idle_timeout` (default 30 s). An idle connection
//! older than that is also closed by [`Pool::sweep`], which the engine runs periodically (every
//! [`Pool::sweep_interval`]), so that it does not stay open upstream until its next use. At most
//! [`MAX_IDLE_PER_HOST`] idle connections are kept per host ([`MAX_IDLE_PER_DESTINATION`] per
//! original destination); the oldest are reused last (LIFO
//! keeps the warmest connections busy and lets the cold ones time out).
//!
//! The pool publishes how many connections it holds idle in the worker's stats (per host and
//! per cluster, `original_dst` destinations under their cluster only: [`PoolGauge::Http1Idle`]):
//! every connection put in adds one, every connection that leaves — taken, found dead at a
//! checkout, evicted, swept — takes one away. Invariant: the gauges equal the idle lists'
//! lengths.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use sluice_core::Instant;

use tokio::io::{AsyncRead, ReadBuf};

use crate::stats::{PoolGauge, WorkerStats};

/// Idle connections kept per host and worker. As many as Envoy's default `max_connections`
/// breaker allows a cluster: under a burst of N concurrent requests a host's N connections stay
/// for the next burst instead of being closed and opened again (at 64, h2load with 500 streams
/// in flight made Sluice open a connection for one request in four). An idle connection holds
/// no buffer here (only its socket); `upstream_idle_timeout` closes the ones not reused.
pub const MAX_IDLE_PER_HOST: usize = 1024;

/// Idle connections kept per `original_dst` destination and worker (up to
/// [`MAX_IDLE_DESTINATIONS`] destinations).
pub const MAX_IDLE_PER_DESTINATION: usize = 64;

struct Idle<S> {
    stream: S,
    since: Instant,
}

/// Destinations of `original_dst` clusters with idle connections kept, per worker; past it
/// the destination idle the longest loses its connections.
pub const MAX_IDLE_DESTINATIONS: usize = 1024;

/// Idle connections of `original_dst` clusters by `(cluster, destination)`.
type ByDestination<S> = std::collections::HashMap<(usize, SocketAddr), Vec<Idle<S>>>;

/// Idle upstream connections, `[cluster][host]`, and those of `original_dst` clusters by
/// destination.
pub struct Pool<S> {
    idle: RefCell<Vec<Vec<Vec<Idle<S>>>>>,
    /// `original_dst` clusters: `(cluster, destination)` → idle connections (LIFO, at most
    /// [`MAX_IDLE_PER_DESTINATION`] each, at most [`MAX_IDLE_DESTINATIONS`] entries; an entry whose
    /// last connection went is removed, so idle destinations are cleaned up by the sweep).
    by_destination: RefCell<ByDestination<S>>,
    /// Each cluster's idle timeout.
    timeouts: Vec<Duration>,
    /// The worker's stats, where the idle gauges are published.
    stats: Arc<WorkerStats>,
}

impl<S: AsyncRead + Unpin> Pool<S> {
    /// An empty pool shaped like the clusters: `(host count, idle timeout)` of each; it
    /// publishes its idle counts in `stats`.
    pub fn new(clusters: impl Iterator<Item = (usize, Duration)>, stats: Arc<WorkerStats>) -> Self {
        let (idle, timeouts) = clusters
            .map(|(n, timeout)| ((0..n).map(|_| Vec::new()).collect(), timeout))
            .unzip();
        Pool {
            idle: RefCell::new(idle),
            by_destination: RefCell::default(),
            timeouts,
            stats,
        }
    }

    /// Adds `delta` to the idle gauges of the cluster and host (`None`: a destination).
    fn count(&self, cluster: usize, host: Option<usize>, delta: usize, up: bool) {
        if delta > 0 {
            let delta = i64::try_from(delta).unwrap_or(i64::MAX);
            let delta = if up { delta } else { -delta };
            self.stats
                .pool_gauge_add(cluster, host, PoolGauge::Http1Idle, delta);
        }
    }

    /// A live idle connection to the host, if any.
    pub fn take(&self, cluster: usize, host: usize, now: Instant) -> Option<S> {
        let timeout = self.timeouts[cluster];
        let mut idle = self.idle.borrow_mut();
        let list = &mut idle[cluster][host];
        while let Some(mut c) = list.pop() {
            self.count(cluster, Some(host), 1, false);
            if now.duration_since(c.since) < timeout && still_open(&mut c.stream) {
                return Some(c.stream);
            }
        }
        None
    }

    /// Closes (drops) the idle connections that reached their cluster's idle timeout; returns
    /// how many.
    pub fn sweep(&self, now: Instant) -> usize {
        let mut closed = 0;
        let mut idle = self.idle.borrow_mut();
        for (ci, (hosts, &timeout)) in idle.iter_mut().zip(&self.timeouts).enumerate() {
            for (hi, list) in hosts.iter_mut().enumerate() {
                let before = list.len();
                list.retain(|c| now.duration_since(c.since) < timeout);
                self.count(ci, Some(hi), before - list.len(), false);
                closed += before - list.len();
            }
        }
        self.by_destination
            .borrow_mut()
            .retain(|(cluster, _), list| {
                let before = list.len();
                list.retain(|c| now.duration_since(c.since) < self.timeouts[*cluster]);
                self.count(*cluster, None, before - list.len(), false);
                closed += before - list.len();
                !list.is_empty()
            });
        closed
    }

    /// How often [`Pool::sweep`] should run: half the shortest idle timeout, within 100 ms..=5 s
    /// (so a connection is closed at most that long after its timeout).
    pub fn sweep_interval(&self) -> Duration {
        let shortest = self
            .timeouts
            .iter()
            .min()
            .copied()
            .unwrap_or(Duration::from_secs(30));
        (shortest / 2).clamp(Duration::from_millis(100), Duration::from_secs(5))
    }

    /// Gives back a connection that finished a response cleanly and may be reused.
    pub fn put(&self, cluster: usize, host: usize, stream: S, now: Instant) {
        let mut idle = self.idle.borrow_mut();
        let list = &mut idle[cluster][host];
        if list.len() >= MAX_IDLE_PER_HOST {
            list.remove(0);
        } else {
            self.count(cluster, Some(host), 1, true);
        }
        list.push(Idle { stream, since: now });
    }

    /// A live idle connection of the `original_dst` cluster `cluster` to `destination`.
    pub fn take_to(&self, cluster: usize, destination: SocketAddr, now: Instant) -> Option<S> {
        let timeout = self.timeouts[cluster];
        let mut all = self.by_destination.borrow_mut();
        let list = all.get_mut(&(cluster, destination))?;
        let mut found = None;
        while let Some(mut c) = list.pop() {
            self.count(cluster, None, 1, false);
            if now.duration_since(c.since) < timeout && still_open(&mut c.stream) {
                found = Some(c.stream);
                break;
            }
        }
        if list.is_empty() {
            all.remove(&(cluster, destination));
        }
        found
    }

    /// Gives back a connection of the `original_dst` cluster `cluster` to `destination`.
    pub fn put_to(&self, cluster: usize, destination: SocketAddr, stream: S, now: Instant) {
        let mut all = self.by_destination.borrow_mut();
        if all.len() >= MAX_IDLE_DESTINATIONS && !all.contains_key(&(cluster, destination)) {
            // The destination whose newest idle connection is the oldest goes (rare: a worker
            // talking to over a thousand destinations at once).
            let coldest = all
                .iter()
                .min_by_key(|(_, list)| list.last().map(|c| c.since))
                .map(|(k, _)| *k);
            if let Some(k) = coldest
                && let Some(list) = all.remove(&k)
            {
                self.count(k.0, None, list.len(), false);
            }
        }
        let list = all.entry((cluster, destination)).or_default();
        if list.len() >= MAX_IDLE_PER_DESTINATION {
            list.remove(0);
        } else {
            self.count(cluster, None, 1, true);
        }
        list.push(Idle { stream, since: now });
    }

    /// Idle connections held now.
    pub fn idle_count(&self) -> usize {
        self.idle
            .borrow()
            .iter()
            .flatten()
            .map(Vec::len)
            .sum::<usize>()
            + self
                .by_destination
                .borrow()
                .values()
                .map(Vec::len)
                .sum::<usize>()
    }
}

/// A connection that is idle must have nothing to read: EOF, bytes or an error all mean it
/// cannot carry a new request. Polling with a no-op waker costs no syscall when the socket had
/// no readiness event.
fn still_open<S: AsyncRead + Unpin>(stream: &mut S) -> bool {
    let mut cx = Context::from_waker(Waker::noop());
    let mut byte = [0u8; 1];
    let mut buf = ReadBuf::new(&mut byte);
    matches!(Pin::new(stream).poll_read(&mut cx, &mut buf), Poll::Pending)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering::Relaxed;

    fn at(ms: u64) -> Instant {
        Instant::from_origin(Duration::from_millis(ms))
    }

    fn destination(i: usize) -> SocketAddr {
        SocketAddr::from(([10, 0, (i >> 8) as u8, i as u8], 80))
    }

    #[test]
    fn a_burst_of_connections_to_one_host_stays_pooled_up_to_the_bound() {
        let config = sluice_core::config::Config::from_yaml(
            "listeners: [ { name: t, address: 127.0.0.1:1, tcp_proxy: { cluster: a } } ]\n\
             clusters: [ { name: a, hosts: [ { address: 127.0.0.1:2 } ] }, \
                         { name: o, type: original_dst } ]\n",
        )
        .unwrap();
        let stats = Arc::new(WorkerStats::new(&config));
        let pool: Pool<tokio::io::DuplexStream> = Pool::new(
            [(1, Duration::from_secs(30)), (0, Duration::from_secs(30))].into_iter(),
            stats,
        );
        let mut peers = Vec::new();
        let mut conn = || {
            let (a, b) = tokio::io::duplex(64);
            peers.push(b);
            a
        };
        // The 500 connections of 500 concurrent requests all come back and stay (at 64, 436
        // of them were closed, and the next burst opened them again).
        for i in 0..500 {
            pool.put(0, 0, conn(), at(i));
        }
        assert_eq!(pool.idle_count(), 500);
        for i in 0..(MAX_IDLE_PER_HOST as u64) {
            pool.put(0, 0, conn(), at(500 + i));
        }
        assert_eq!(pool.idle_count(), MAX_IDLE_PER_HOST);
        // Per original destination the bound stays small (up to 1024 destinations).
        for i in 0..100 {
            pool.put_to(1, destination(1), conn(), at(i));
        }
        assert_eq!(
            pool.idle_count(),
            MAX_IDLE_PER_HOST + MAX_IDLE_PER_DESTINATION
        );
    }

    #[test]
    fn original_dst_connections_are_pooled_by_destination_and_bounded() {
        let config = sluice_core::config::Config::from_yaml(
            "listeners: [ { name: t, address: 127.0.0.1:1, tcp_proxy: { cluster: a } } ]\n\
             clusters: [ { name: a, type: original_dst } ]\n",
        )
        .unwrap();
        let stats = Arc::new(WorkerStats::new(&config));
        let idle = || stats.clusters[0].upstream_cx_http1_idle.load(Relaxed);
        let pool: Pool<tokio::io::DuplexStream> =
            Pool::new([(1, Duration::from_secs(30))].into_iter(), stats.clone());
        // Peers kept alive: a connection whose peer closed is not handed out.
        let mut peers = Vec::new();
        let mut conn = || {
            let (a, b) = tokio::io::duplex(64);
            peers.push(b);
            a
        };
        pool.put_to(0, destination(1), conn(), at(0));
        assert!(pool.take_to(0, destination(2), at(1)).is_none());
        assert!(pool.take_to(0, destination(1), at(1)).is_some());
        // Taken: the destination is forgotten.
        assert_eq!(pool.idle_count(), 0);
        assert_eq!(idle(), 0);
        assert!(pool.by_destination.borrow().is_empty());
        // At most MAX_IDLE_DESTINATIONS destinations: the coldest goes.
        for i in 0..=MAX_IDLE_DESTINATIONS {
            pool.put_to(0, destination(i), conn(), at(10 + i as u64));
        }
        assert_eq!(pool.idle_count(), MAX_IDLE_DESTINATIONS);
        assert_eq!(
            idle(),
            MAX_IDLE_DESTINATIONS as u64,
            "the gauge follows the pool"
        );
        assert!(pool.take_to(0, destination(0), at(5000)).is_none());
        assert!(pool.take_to(0, destination(1), at(5000)).is_some());
        // The sweep closes idle ones past the timeout and forgets their destinations.
        assert_eq!(pool.sweep(at(60_000)), MAX_IDLE_DESTINATIONS - 1);
        assert_eq!(pool.idle_count(), 0);
        assert_eq!(idle(), 0);
        assert!(pool.by_destination.borrow().is_empty());
    }
}
