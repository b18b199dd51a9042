//! Per-worker counters.
//!
//! Each worker owns one [`WorkerStats`] and is its only writer, so the atomics are never
//! contended (relaxed loads and stores on a line no other core writes); readers (the admin
//! server, the simulator's invariant checks) sum the workers' snapshots.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use sluice_core::tcp_proxy::CloseReason;

/// Counters of one worker.
#[derive(Debug, Default)]
pub struct WorkerStats {
    /// Downstream connections accepted.
    pub downstream_cx_total: AtomicU64,
    /// Downstream connections closed.
    pub downstream_cx_closed: AtomicU64,
    /// Accept calls that failed.
    pub accept_errors: AtomicU64,
    /// Upstream connect attempts.
    pub upstream_cx_attempts: AtomicU64,
    /// Upstream connect attempts that failed (refused or errored).
    pub upstream_cx_connect_fail: AtomicU64,
    /// Upstream connect attempts that timed out.
    pub upstream_cx_connect_timeout: AtomicU64,
    /// Bytes read from downstream connections.
    pub bytes_from_downstream: AtomicU64,
    /// Bytes read from upstream connections.
    pub bytes_from_upstream: AtomicU64,
    /// TCP sessions ended, by [`CloseReason`] (indexed by `CloseReason::index`).
    pub tcp_session_closed: [AtomicU64; CloseReason::ALL.len()],
    /// HTTP requests received (complete heads).
    pub http_requests: AtomicU64,
    /// HTTP responses sent downstream by status class (1xx..5xx).
    pub http_responses_by_class: [AtomicU64; 5],
    /// HTTP answers the proxy generated itself (errors, limits, no route), not direct responses.
    pub http_local_replies: AtomicU64,
    /// HTTP upstream retries.
    pub http_retries: AtomicU64,
    /// HTTP tries that hit a per-try or route timeout.
    pub http_upstream_timeouts: AtomicU64,
}

/// A plain copy of counters, summable across workers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// See [`WorkerStats::downstream_cx_total`].
    pub downstream_cx_total: u64,
    /// See [`WorkerStats::downstream_cx_closed`].
    pub downstream_cx_closed: u64,
    /// See [`WorkerStats::accept_errors`].
    pub accept_errors: u64,
    /// See [`WorkerStats::upstream_cx_attempts`].
    pub upstream_cx_attempts: u64,
    /// See [`WorkerStats::upstream_cx_connect_fail`].
    pub upstream_cx_connect_fail: u64,
    /// See [`WorkerStats::upstream_cx_connect_timeout`].
    pub upstream_cx_connect_timeout: u64,
    /// See [`WorkerStats::bytes_from_downstream`].
    pub bytes_from_downstream: u64,
    /// See [`WorkerStats::bytes_from_upstream`].
    pub bytes_from_upstream: u64,
    /// See [`WorkerStats::tcp_session_closed`].
    pub tcp_session_closed: [u64; CloseReason::ALL.len()],
    /// See [`WorkerStats::http_requests`].
    pub http_requests: u64,
    /// See [`WorkerStats::http_responses_by_class`].
    pub http_responses_by_class: [u64; 5],
    /// See [`WorkerStats::http_local_replies`].
    pub http_local_replies: u64,
    /// See [`WorkerStats::http_retries`].
    pub http_retries: u64,
    /// See [`WorkerStats::http_upstream_timeouts`].
    pub http_upstream_timeouts: u64,
}

/// Adds to a counter that only this thread writes (a load and a store, no locked RMW).
#[inline]
pub fn bump(counter: &AtomicU64, by: u64) {
    counter.store(counter.load(Relaxed).wrapping_add(by), Relaxed);
}

impl WorkerStats {
    /// A copy of the counters now.
    #[must_use]
    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            downstream_cx_total: self.downstream_cx_total.load(Relaxed),
            downstream_cx_closed: self.downstream_cx_closed.load(Relaxed),
            accept_errors: self.accept_errors.load(Relaxed),
            upstream_cx_attempts: self.upstream_cx_attempts.load(Relaxed),
            upstream_cx_connect_fail: self.upstream_cx_connect_fail.load(Relaxed),
            upstream_cx_connect_timeout: self.upstream_cx_connect_timeout.load(Relaxed),
            bytes_from_downstream: self.bytes_from_downstream.load(Relaxed),
            bytes_from_upstream: self.bytes_from_upstream.load(Relaxed),
            tcp_session_closed: std::array::from_fn(|i| self.tcp_session_closed[i].load(Relaxed)),
            http_requests: self.http_requests.load(Relaxed),
            http_responses_by_class: std::array::from_fn(|i| {
                self.http_responses_by_class[i].load(Relaxed)
            }),
            http_local_replies: self.http_local_replies.load(Relaxed),
            http_retries: self.http_retries.load(Relaxed),
            http_upstream_timeouts: self.http_upstream_timeouts.load(Relaxed),
        }
    }
}

impl StatsSnapshot {
    /// Downstream connections open now.
    #[must_use]
    pub fn downstream_cx_active(&self) -> u64 {
        self.downstream_cx_total - self.downstream_cx_closed
    }

    /// Sessions closed for one reason.
    #[must_use]
    pub fn closed(&self, reason: CloseReason) -> u64 {
        self.tcp_session_closed[reason.index()]
    }

    /// Adds another worker's counters.
    pub fn add(&mut self, o: &StatsSnapshot) {
        self.downstream_cx_total += o.downstream_cx_total;
        self.downstream_cx_closed += o.downstream_cx_closed;
        self.accept_errors += o.accept_errors;
        self.upstream_cx_attempts += o.upstream_cx_attempts;
        self.upstream_cx_connect_fail += o.upstream_cx_connect_fail;
        self.upstream_cx_connect_timeout += o.upstream_cx_connect_timeout;
        self.bytes_from_downstream += o.bytes_from_downstream;
        self.bytes_from_upstream += o.bytes_from_upstream;
        for (a, b) in self.tcp_session_closed.iter_mut().zip(o.tcp_session_closed) {
            *a += b;
        }
        self.http_requests += o.http_requests;
        for (a, b) in self
            .http_responses_by_class
            .iter_mut()
            .zip(o.http_responses_by_class)
        {
            *a += b;
        }
        self.http_local_replies += o.http_local_replies;
        self.http_retries += o.http_retries;
        self.http_upstream_timeouts += o.http_upstream_timeouts;
    }
}
