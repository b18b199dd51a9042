//! Per-worker counters.
//!
//! Each worker owns one [`WorkerStats`] and is its only writer, so the atomics are never
//! contended (relaxed loads and stores on a line no other core writes); readers (the admin
//! server, the simulator's invariant checks) sum the workers' snapshots.
//!
//! Besides the worker-wide counters, a [`WorkerStats`] built with [`WorkerStats::new`] carries
//! one [`ListenerStats`] per listener, one [`ClusterStats`] per cluster (with one [`HostStats`]
//! per host), and two [`Histogram`]s of request times. Gauges (`*_active`) are single-writer
//! too: the worker stores its own value; readers add the workers' values. A `WorkerStats`
//! made with `Default` (as the simulator does) has no per-listener or per-cluster slots; the
//! engine then skips those counters.
//!
//! Every per-worker block is aligned to 128 bytes (two cache lines, the unit of the adjacent
//! line prefetcher) so that two workers' counters never share a line, even though they are
//! all allocated by the main thread, next to each other.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use sluice_core::config::Config;
use sluice_core::tcp_proxy::CloseReason;

/// Upper bounds of the histogram buckets in microseconds (0.5 ms to 10 s, log scale); one more
/// bucket counts everything above the last bound (`+Inf`).
pub const HISTOGRAM_BOUNDS_US: [u64; 14] = [
    500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000,
    2_500_000, 5_000_000, 10_000_000,
];

/// A fixed log-scale histogram of durations, written by one worker.
#[derive(Debug, Default)]
pub struct Histogram {
    /// Per bucket (not cumulative): observations `<=` the bound of the same index in
    /// [`HISTOGRAM_BOUNDS_US`] and above the previous one; the last is `+Inf`.
    pub buckets: [AtomicU64; HISTOGRAM_BOUNDS_US.len() + 1],
    /// Sum of observations in microseconds.
    pub sum_us: AtomicU64,
}

impl Histogram {
    /// Records one duration (three relaxed load+store pairs at most: bucket, sum; the count is
    /// the sum of the buckets).
    #[inline]
    pub fn record(&self, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        let i = HISTOGRAM_BOUNDS_US.partition_point(|&b| b < us);
        bump(&self.buckets[i], 1);
        bump(&self.sum_us, us);
    }

    /// A plain copy.
    #[must_use]
    pub fn snapshot(&self) -> HistogramSnapshot {
        HistogramSnapshot {
            buckets: std::array::from_fn(|i| self.buckets[i].load(Relaxed)),
            sum_us: self.sum_us.load(Relaxed),
        }
    }
}

/// A histogram's counts, summable across workers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HistogramSnapshot {
    /// See [`Histogram::buckets`].
    pub buckets: [u64; HISTOGRAM_BOUNDS_US.len() + 1],
    /// See [`Histogram::sum_us`].
    pub sum_us: u64,
}

impl HistogramSnapshot {
    /// Observations.
    #[must_use]
    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }

    /// Adds another worker's counts.
    pub fn add(&mut self, o: &HistogramSnapshot) {
        for (a, b) in self.buckets.iter_mut().zip(o.buckets) {
            *a += b;
        }
        self.sum_us += o.sum_us;
    }

    /// The upper bound (µs) of the bucket holding quantile `q` (0..=1); `None` when empty or in
    /// the `+Inf` bucket.
    #[must_use]
    pub fn quantile_bound_us(&self, q: f64) -> Option<u64> {
        let n = self.count();
        if n == 0 {
            return None;
        }
        let rank = ((q * n as f64).ceil() as u64).clamp(1, n);
        let mut seen = 0;
        for (i, c) in self.buckets.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return HISTOGRAM_BOUNDS_US.get(i).copied();
            }
        }
        None
    }
}

/// Counters of one listener in one worker.
#[derive(Debug, Default)]
#[repr(align(128))]
pub struct ListenerStats {
    /// Connections accepted.
    pub downstream_cx_total: AtomicU64,
    /// Connections closed (active = total - closed).
    pub downstream_cx_closed: AtomicU64,
    /// Connections refused (accepted and closed at once) by a connection limit.
    pub downstream_cx_overflow: AtomicU64,
    /// HTTP connections closed because no byte of a first request arrived within
    /// `request_headers_timeout` of the accept.
    pub downstream_cx_first_byte_timeout: AtomicU64,
    /// Bytes received from downstream.
    pub downstream_bytes_received: AtomicU64,
    /// Bytes sent to downstream.
    pub downstream_bytes_sent: AtomicU64,
    /// HTTP requests received with a complete head (a rejected head is counted only in
    /// `http_responses_by_class` and `http_local_replies`).
    pub http_requests: AtomicU64,
    /// HTTP responses by status class (1xx..5xx).
    pub http_responses_by_class: [AtomicU64; 5],
    /// HTTP answers the proxy generated itself (errors, limits, no route).
    pub http_local_replies: AtomicU64,
    /// TCP sessions ended, by [`CloseReason`].
    pub tcp_session_closed: [AtomicU64; CloseReason::ALL.len()],
}

/// Counters of one upstream host in one worker.
#[derive(Debug, Default)]
#[repr(align(128))]
pub struct HostStats {
    /// Requests (HTTP) or sessions (TCP) served by the host.
    pub rq_total: AtomicU64,
    /// Requests (HTTP) or sessions (TCP) in flight now (a gauge this worker stores).
    pub rq_active: AtomicU64,
    /// Upstream connections opened to the host.
    pub cx_total: AtomicU64,
    /// Upstream connections open now, pooled idle ones included (a gauge).
    pub cx_active: AtomicU64,
    /// Connect attempts that failed or timed out.
    pub cx_connect_fail: AtomicU64,
    /// 1 when the active health check passes (written by the worker running the checks; 0
    /// while unknown or failing; unused without a health check).
    pub healthy: AtomicU64,
    /// 1 when this worker's outlier detector ejected the host (a gauge; summed over workers it
    /// is the number of workers ejecting it).
    pub ejected: AtomicU64,
}

/// Counters of one cluster in one worker.
#[derive(Debug, Default)]
#[repr(align(128))]
pub struct ClusterStats {
    /// Requests (HTTP) or sessions (TCP) sent to the cluster.
    pub upstream_rq_total: AtomicU64,
    /// Connect attempts.
    pub upstream_cx_total: AtomicU64,
    /// Connect attempts refused or errored.
    pub upstream_cx_connect_fail: AtomicU64,
    /// Connect attempts that timed out.
    pub upstream_cx_connect_timeout: AtomicU64,
    /// HTTP tries that hit a per-try or route timeout.
    pub upstream_rq_timeout: AtomicU64,
    /// HTTP retries.
    pub upstream_rq_retry: AtomicU64,
    /// Connections refused by the `max_connections` circuit breaker.
    pub upstream_cx_overflow: AtomicU64,
    /// Requests refused by the `max_pending_requests` circuit breaker.
    pub upstream_rq_pending_overflow: AtomicU64,
    /// Requests refused by the `max_requests` circuit breaker.
    pub upstream_rq_overflow: AtomicU64,
    /// Retries not made because the retry budget was spent (or the `max_retries` circuit breaker was at its limit).
    pub upstream_rq_retry_overflow: AtomicU64,
    /// Tries failed because the upstream sent more interim (1xx) responses than allowed.
    pub upstream_rq_too_many_interim: AtomicU64,
    /// Active health-check probes started.
    pub health_check_attempt: AtomicU64,
    /// Probes that passed.
    pub health_check_success: AtomicU64,
    /// Probes that failed or timed out.
    pub health_check_failure: AtomicU64,
    /// Hosts ejected by outlier detection (this worker's detector).
    pub outlier_ejections_total: AtomicU64,
    /// Ejections not made because `max_ejection_percent` was reached.
    pub outlier_ejections_overflow: AtomicU64,
    /// 1 while this worker balances the cluster in panic mode (a gauge).
    pub lb_panic: AtomicU64,
    /// Times this worker entered panic mode for the cluster.
    pub lb_panic_total: AtomicU64,
    /// Per host, in config order.
    pub hosts: Box<[HostStats]>,
}

/// Bolt counters of one worker (copied from its `BoltProxy` after each batch of input).
#[derive(Debug, Default)]
#[repr(align(128))]
pub struct BoltCounters {
    /// Requests forwarded upstream.
    pub requests: AtomicU64,
    /// Oneway requests forwarded.
    pub oneway: AtomicU64,
    /// Heartbeats answered by the proxy (from either side).
    pub heartbeats: AtomicU64,
    /// Upstream responses forwarded downstream.
    pub responses: AtomicU64,
    /// Upstream responses dropped (late, orphaned, unknown id).
    pub responses_dropped: AtomicU64,
    /// Status 6 answers: no route.
    pub no_route: AtomicU64,
    /// Status 6 answers: no available host.
    pub no_host: AtomicU64,
    /// Status 4 answers: circuit breaker overflow.
    pub overflow: AtomicU64,
    /// Status 7 answers: timeout.
    pub timeouts: AtomicU64,
    /// Downstream codec errors (status 9 when the id was readable; the connection closes).
    pub codec_errors: AtomicU64,
    /// Status 16 answers: upstream connection lost with the request in flight.
    pub upstream_lost: AtomicU64,
    /// Connections on `protocol: auto` listeners that were neither HTTP/1.1 nor Bolt (closed).
    pub sniff_failed: AtomicU64,
    /// Downstream connections closed because their partial frame would have gone beyond
    /// `limits.bolt_partial_frame_bytes`.
    pub partial_frame_overflow: AtomicU64,
    /// Downstream connections closed by the listener's `frame_timeout` (a first frame, or a
    /// frame started, not complete in time) or `idle_timeout`.
    pub downstream_timeouts: AtomicU64,
}

impl BoltCounters {
    /// `(name, value)` of every counter, for the admin API.
    #[must_use]
    pub fn values(&self) -> [(&'static str, u64); 14] {
        [
            ("requests", self.requests.load(Relaxed)),
            ("oneway", self.oneway.load(Relaxed)),
            ("heartbeats", self.heartbeats.load(Relaxed)),
            ("responses", self.responses.load(Relaxed)),
            ("responses_dropped", self.responses_dropped.load(Relaxed)),
            ("no_route", self.no_route.load(Relaxed)),
            ("no_host", self.no_host.load(Relaxed)),
            ("overflow", self.overflow.load(Relaxed)),
            ("timeouts", self.timeouts.load(Relaxed)),
            ("codec_errors", self.codec_errors.load(Relaxed)),
            ("upstream_lost", self.upstream_lost.load(Relaxed)),
            ("sniff_failed", self.sniff_failed.load(Relaxed)),
            (
                "partial_frame_overflow",
                self.partial_frame_overflow.load(Relaxed),
            ),
            (
                "downstream_timeouts",
                self.downstream_timeouts.load(Relaxed),
            ),
        ]
    }
}

/// Counters of one worker.
#[derive(Debug, Default)]
#[repr(align(128))]
pub struct WorkerStats {
    /// Downstream connections accepted.
    pub downstream_cx_total: AtomicU64,
    /// Downstream connections closed.
    pub downstream_cx_closed: AtomicU64,
    /// Downstream connections refused by a connection limit (not in `downstream_cx_total`).
    pub downstream_cx_overflow: AtomicU64,
    /// See [`ListenerStats::downstream_cx_first_byte_timeout`].
    pub downstream_cx_first_byte_timeout: AtomicU64,
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
    /// Per listener, in config order (empty when made with `Default`).
    pub listeners: Box<[ListenerStats]>,
    /// Per cluster, in config order (empty when made with `Default`).
    pub clusters: Box<[ClusterStats]>,
    /// Downstream request time: request head received to response completely sent (HTTP).
    pub downstream_rq_time: Histogram,
    /// Upstream request time: upstream try started to response completely received (HTTP).
    pub upstream_rq_time: Histogram,
    /// Bolt proxy counters.
    pub bolt: BoltCounters,
}

/// A plain copy of counters, summable across workers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// See [`WorkerStats::downstream_cx_total`].
    pub downstream_cx_total: u64,
    /// See [`WorkerStats::downstream_cx_closed`].
    pub downstream_cx_closed: u64,
    /// See [`WorkerStats::downstream_cx_overflow`].
    pub downstream_cx_overflow: u64,
    /// See [`WorkerStats::downstream_cx_first_byte_timeout`].
    pub downstream_cx_first_byte_timeout: u64,
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

/// Moves a single-writer gauge up or down by one (a load and a store; wrapping, so a worker's
/// own value may transiently wrap only if it is decremented before it is incremented).
#[inline]
pub fn gauge_add(gauge: &AtomicU64, up: bool) {
    let v = gauge.load(Relaxed);
    gauge.store(
        if up {
            v.wrapping_add(1)
        } else {
            v.wrapping_sub(1)
        },
        Relaxed,
    );
}

impl WorkerStats {
    /// Counters shaped like `config`: one slot per listener, cluster and host.
    #[must_use]
    pub fn new(config: &Config) -> Self {
        WorkerStats {
            listeners: config
                .listeners
                .iter()
                .map(|_| ListenerStats::default())
                .collect(),
            clusters: config
                .clusters
                .iter()
                .map(|c| ClusterStats {
                    hosts: c.hosts.iter().map(|_| HostStats::default()).collect(),
                    ..ClusterStats::default()
                })
                .collect(),
            ..WorkerStats::default()
        }
    }

    /// Starts these (fresh) counters, shaped like `config`, from `old`'s (shaped like
    /// `old_config`) at a config reload: see [`WorkerStats::transfer`].
    pub fn carry_over(&self, old: &WorkerStats, old_config: &Config, config: &Config) {
        self.transfer(old, &WorkerStats::new(old_config), old_config, config);
        for (cs, cc) in self.clusters.iter().zip(&config.clusters) {
            let Some(oi) = old_config.clusters.iter().position(|o| o.name == cc.name) else {
                continue;
            };
            for (h, hc) in cs.hosts.iter().zip(&cc.hosts) {
                let oh = old_config.clusters[oi]
                    .hosts
                    .iter()
                    .position(|o| o.address == hc.address)
                    .and_then(|ohi| old.clusters.get(oi)?.hosts.get(ohi));
                if let Some(oh) = oh {
                    h.healthy.store(oh.healthy.load(Relaxed), Relaxed);
                }
            }
        }
    }

    /// A plain copy of these counters, same shape (to measure what a draining generation adds
    /// after a reload: [`WorkerStats::transfer`] with it as the base).
    #[must_use]
    pub fn frozen(&self, config: &Config) -> WorkerStats {
        let copy = WorkerStats::new(config);
        copy.transfer(self, &WorkerStats::new(config), config, config);
        copy
    }

    /// Adds `old − base` (both shaped like `old_config`) to these counters (shaped like
    /// `config`): worker-wide counters, and per listener, cluster and host matched by name (and
    /// host address). A reload moves every counter of the old generation this way, and when the
    /// old generation has drained, what it counted meanwhile (with the copy taken at the switch
    /// as the base), so counters stay exact and monotonic. Gauges are not moved; the old
    /// generation's connections count as closed here (they are its own to track while it
    /// drains). Only the worker that owns these counters may call it.
    pub fn transfer(
        &self,
        old: &WorkerStats,
        base: &WorkerStats,
        old_config: &Config,
        config: &Config,
    ) {
        fn c(new: &AtomicU64, old: &AtomicU64, base: &AtomicU64) {
            bump(new, old.load(Relaxed).saturating_sub(base.load(Relaxed)));
        }
        fn all<const N: usize>(new: &[AtomicU64; N], old: &[AtomicU64; N], base: &[AtomicU64; N]) {
            for ((n, o), b) in new.iter().zip(old).zip(base) {
                c(n, o, b);
            }
        }
        c(
            &self.downstream_cx_total,
            &old.downstream_cx_total,
            &base.downstream_cx_total,
        );
        c(
            &self.downstream_cx_closed,
            &old.downstream_cx_total,
            &base.downstream_cx_total,
        );
        c(&self.accept_errors, &old.accept_errors, &base.accept_errors);
        c(
            &self.downstream_cx_overflow,
            &old.downstream_cx_overflow,
            &base.downstream_cx_overflow,
        );
        c(
            &self.downstream_cx_first_byte_timeout,
            &old.downstream_cx_first_byte_timeout,
            &base.downstream_cx_first_byte_timeout,
        );
        c(
            &self.upstream_cx_attempts,
            &old.upstream_cx_attempts,
            &base.upstream_cx_attempts,
        );
        c(
            &self.upstream_cx_connect_fail,
            &old.upstream_cx_connect_fail,
            &base.upstream_cx_connect_fail,
        );
        c(
            &self.upstream_cx_connect_timeout,
            &old.upstream_cx_connect_timeout,
            &base.upstream_cx_connect_timeout,
        );
        c(
            &self.bytes_from_downstream,
            &old.bytes_from_downstream,
            &base.bytes_from_downstream,
        );
        c(
            &self.bytes_from_upstream,
            &old.bytes_from_upstream,
            &base.bytes_from_upstream,
        );
        all(
            &self.tcp_session_closed,
            &old.tcp_session_closed,
            &base.tcp_session_closed,
        );
        c(&self.http_requests, &old.http_requests, &base.http_requests);
        all(
            &self.http_responses_by_class,
            &old.http_responses_by_class,
            &base.http_responses_by_class,
        );
        c(
            &self.http_local_replies,
            &old.http_local_replies,
            &base.http_local_replies,
        );
        c(&self.http_retries, &old.http_retries, &base.http_retries);
        c(
            &self.http_upstream_timeouts,
            &old.http_upstream_timeouts,
            &base.http_upstream_timeouts,
        );
        for (h, o, b) in [
            (
                &self.downstream_rq_time,
                &old.downstream_rq_time,
                &base.downstream_rq_time,
            ),
            (
                &self.upstream_rq_time,
                &old.upstream_rq_time,
                &base.upstream_rq_time,
            ),
        ] {
            all(&h.buckets, &o.buckets, &b.buckets);
            c(&h.sum_us, &o.sum_us, &b.sum_us);
        }
        let (b, ob, bb) = (&self.bolt, &old.bolt, &base.bolt);
        for (n, o, z) in [
            (&b.requests, &ob.requests, &bb.requests),
            (&b.oneway, &ob.oneway, &bb.oneway),
            (&b.heartbeats, &ob.heartbeats, &bb.heartbeats),
            (&b.responses, &ob.responses, &bb.responses),
            (
                &b.responses_dropped,
                &ob.responses_dropped,
                &bb.responses_dropped,
            ),
            (&b.no_route, &ob.no_route, &bb.no_route),
            (&b.no_host, &ob.no_host, &bb.no_host),
            (&b.overflow, &ob.overflow, &bb.overflow),
            (&b.timeouts, &ob.timeouts, &bb.timeouts),
            (&b.codec_errors, &ob.codec_errors, &bb.codec_errors),
            (&b.upstream_lost, &ob.upstream_lost, &bb.upstream_lost),
            (&b.sniff_failed, &ob.sniff_failed, &bb.sniff_failed),
            (
                &b.partial_frame_overflow,
                &ob.partial_frame_overflow,
                &bb.partial_frame_overflow,
            ),
            (
                &b.downstream_timeouts,
                &ob.downstream_timeouts,
                &bb.downstream_timeouts,
            ),
        ] {
            c(n, o, z);
        }
        for (l, lc) in self.listeners.iter().zip(&config.listeners) {
            let Some(oi) = old_config.listeners.iter().position(|o| o.name == lc.name) else {
                continue;
            };
            let (Some(o), Some(z)) = (old.listeners.get(oi), base.listeners.get(oi)) else {
                continue;
            };
            c(
                &l.downstream_cx_total,
                &o.downstream_cx_total,
                &z.downstream_cx_total,
            );
            c(
                &l.downstream_cx_closed,
                &o.downstream_cx_total,
                &z.downstream_cx_total,
            );
            c(
                &l.downstream_cx_overflow,
                &o.downstream_cx_overflow,
                &z.downstream_cx_overflow,
            );
            c(
                &l.downstream_cx_first_byte_timeout,
                &o.downstream_cx_first_byte_timeout,
                &z.downstream_cx_first_byte_timeout,
            );
            c(
                &l.downstream_bytes_received,
                &o.downstream_bytes_received,
                &z.downstream_bytes_received,
            );
            c(
                &l.downstream_bytes_sent,
                &o.downstream_bytes_sent,
                &z.downstream_bytes_sent,
            );
            c(&l.http_requests, &o.http_requests, &z.http_requests);
            all(
                &l.http_responses_by_class,
                &o.http_responses_by_class,
                &z.http_responses_by_class,
            );
            c(
                &l.http_local_replies,
                &o.http_local_replies,
                &z.http_local_replies,
            );
            all(
                &l.tcp_session_closed,
                &o.tcp_session_closed,
                &z.tcp_session_closed,
            );
        }
        for (cs, cc) in self.clusters.iter().zip(&config.clusters) {
            let Some(oi) = old_config.clusters.iter().position(|o| o.name == cc.name) else {
                continue;
            };
            let (Some(o), Some(z)) = (old.clusters.get(oi), base.clusters.get(oi)) else {
                continue;
            };
            for (n, v, b) in [
                (
                    &cs.upstream_rq_total,
                    &o.upstream_rq_total,
                    &z.upstream_rq_total,
                ),
                (
                    &cs.upstream_cx_total,
                    &o.upstream_cx_total,
                    &z.upstream_cx_total,
                ),
                (
                    &cs.upstream_cx_connect_fail,
                    &o.upstream_cx_connect_fail,
                    &z.upstream_cx_connect_fail,
                ),
                (
                    &cs.upstream_cx_connect_timeout,
                    &o.upstream_cx_connect_timeout,
                    &z.upstream_cx_connect_timeout,
                ),
                (
                    &cs.upstream_rq_timeout,
                    &o.upstream_rq_timeout,
                    &z.upstream_rq_timeout,
                ),
                (
                    &cs.upstream_rq_retry,
                    &o.upstream_rq_retry,
                    &z.upstream_rq_retry,
                ),
                (
                    &cs.upstream_cx_overflow,
                    &o.upstream_cx_overflow,
                    &z.upstream_cx_overflow,
                ),
                (
                    &cs.upstream_rq_pending_overflow,
                    &o.upstream_rq_pending_overflow,
                    &z.upstream_rq_pending_overflow,
                ),
                (
                    &cs.upstream_rq_overflow,
                    &o.upstream_rq_overflow,
                    &z.upstream_rq_overflow,
                ),
                (
                    &cs.upstream_rq_retry_overflow,
                    &o.upstream_rq_retry_overflow,
                    &z.upstream_rq_retry_overflow,
                ),
                (
                    &cs.upstream_rq_too_many_interim,
                    &o.upstream_rq_too_many_interim,
                    &z.upstream_rq_too_many_interim,
                ),
                (
                    &cs.health_check_attempt,
                    &o.health_check_attempt,
                    &z.health_check_attempt,
                ),
                (
                    &cs.health_check_success,
                    &o.health_check_success,
                    &z.health_check_success,
                ),
                (
                    &cs.health_check_failure,
                    &o.health_check_failure,
                    &z.health_check_failure,
                ),
                (
                    &cs.outlier_ejections_total,
                    &o.outlier_ejections_total,
                    &z.outlier_ejections_total,
                ),
                (
                    &cs.outlier_ejections_overflow,
                    &o.outlier_ejections_overflow,
                    &z.outlier_ejections_overflow,
                ),
                (&cs.lb_panic_total, &o.lb_panic_total, &z.lb_panic_total),
            ] {
                c(n, v, b);
            }
            let old_hosts = &old_config.clusters[oi].hosts;
            for (h, hc) in cs.hosts.iter().zip(&cc.hosts) {
                let Some(ohi) = old_hosts.iter().position(|o| o.address == hc.address) else {
                    continue;
                };
                let (Some(oh), Some(zh)) = (o.hosts.get(ohi), z.hosts.get(ohi)) else {
                    continue;
                };
                c(&h.rq_total, &oh.rq_total, &zh.rq_total);
                c(&h.cx_total, &oh.cx_total, &zh.cx_total);
                c(&h.cx_connect_fail, &oh.cx_connect_fail, &zh.cx_connect_fail);
            }
        }
    }

    /// One listener's counters, if this `WorkerStats` has slots for listeners.
    #[inline]
    #[must_use]
    pub fn listener(&self, index: usize) -> Option<&ListenerStats> {
        self.listeners.get(index)
    }

    /// One cluster's counters, if this `WorkerStats` has slots for clusters.
    #[inline]
    #[must_use]
    pub fn cluster(&self, index: usize) -> Option<&ClusterStats> {
        self.clusters.get(index)
    }

    /// One host's counters.
    #[inline]
    #[must_use]
    pub fn host(&self, cluster: usize, host: usize) -> Option<&HostStats> {
        self.clusters.get(cluster).and_then(|c| c.hosts.get(host))
    }

    /// A copy of every counter, per listener, cluster and host (for the admin API).
    #[must_use]
    pub fn detailed(&self) -> DetailedSnapshot {
        DetailedSnapshot {
            worker: self.snapshot(),
            listeners: self
                .listeners
                .iter()
                .map(|l| ListenerSnapshot {
                    downstream_cx_total: l.downstream_cx_total.load(Relaxed),
                    downstream_cx_closed: l.downstream_cx_closed.load(Relaxed),
                    downstream_cx_overflow: l.downstream_cx_overflow.load(Relaxed),
                    downstream_cx_first_byte_timeout: l
                        .downstream_cx_first_byte_timeout
                        .load(Relaxed),
                    downstream_bytes_received: l.downstream_bytes_received.load(Relaxed),
                    downstream_bytes_sent: l.downstream_bytes_sent.load(Relaxed),
                    http_requests: l.http_requests.load(Relaxed),
                    http_responses_by_class: std::array::from_fn(|i| {
                        l.http_responses_by_class[i].load(Relaxed)
                    }),
                    http_local_replies: l.http_local_replies.load(Relaxed),
                    tcp_session_closed: std::array::from_fn(|i| {
                        l.tcp_session_closed[i].load(Relaxed)
                    }),
                })
                .collect(),
            clusters: self
                .clusters
                .iter()
                .map(|c| ClusterSnapshot {
                    upstream_rq_total: c.upstream_rq_total.load(Relaxed),
                    upstream_cx_total: c.upstream_cx_total.load(Relaxed),
                    upstream_cx_connect_fail: c.upstream_cx_connect_fail.load(Relaxed),
                    upstream_cx_connect_timeout: c.upstream_cx_connect_timeout.load(Relaxed),
                    upstream_rq_timeout: c.upstream_rq_timeout.load(Relaxed),
                    upstream_rq_retry: c.upstream_rq_retry.load(Relaxed),
                    upstream_cx_overflow: c.upstream_cx_overflow.load(Relaxed),
                    upstream_rq_pending_overflow: c.upstream_rq_pending_overflow.load(Relaxed),
                    upstream_rq_overflow: c.upstream_rq_overflow.load(Relaxed),
                    upstream_rq_retry_overflow: c.upstream_rq_retry_overflow.load(Relaxed),
                    upstream_rq_too_many_interim: c.upstream_rq_too_many_interim.load(Relaxed),
                    health_check_attempt: c.health_check_attempt.load(Relaxed),
                    health_check_success: c.health_check_success.load(Relaxed),
                    health_check_failure: c.health_check_failure.load(Relaxed),
                    outlier_ejections_total: c.outlier_ejections_total.load(Relaxed),
                    outlier_ejections_overflow: c.outlier_ejections_overflow.load(Relaxed),
                    lb_panic: c.lb_panic.load(Relaxed),
                    lb_panic_total: c.lb_panic_total.load(Relaxed),
                    hosts: c
                        .hosts
                        .iter()
                        .map(|h| HostSnapshot {
                            rq_total: h.rq_total.load(Relaxed),
                            rq_active: h.rq_active.load(Relaxed),
                            cx_total: h.cx_total.load(Relaxed),
                            cx_active: h.cx_active.load(Relaxed),
                            cx_connect_fail: h.cx_connect_fail.load(Relaxed),
                            healthy: h.healthy.load(Relaxed),
                            ejected: h.ejected.load(Relaxed),
                        })
                        .collect(),
                })
                .collect(),
            downstream_rq_time: self.downstream_rq_time.snapshot(),
            upstream_rq_time: self.upstream_rq_time.snapshot(),
            bolt: self.bolt.values().to_vec(),
        }
    }

    /// A copy of the counters now.
    #[must_use]
    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            downstream_cx_total: self.downstream_cx_total.load(Relaxed),
            downstream_cx_closed: self.downstream_cx_closed.load(Relaxed),
            downstream_cx_overflow: self.downstream_cx_overflow.load(Relaxed),
            downstream_cx_first_byte_timeout: self.downstream_cx_first_byte_timeout.load(Relaxed),
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
        self.downstream_cx_overflow += o.downstream_cx_overflow;
        self.downstream_cx_first_byte_timeout += o.downstream_cx_first_byte_timeout;
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

/// A listener's counters, summable across workers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ListenerSnapshot {
    /// See [`ListenerStats::downstream_cx_total`].
    pub downstream_cx_total: u64,
    /// See [`ListenerStats::downstream_cx_closed`].
    pub downstream_cx_closed: u64,
    /// See [`ListenerStats::downstream_cx_overflow`].
    pub downstream_cx_overflow: u64,
    /// See [`ListenerStats::downstream_cx_first_byte_timeout`].
    pub downstream_cx_first_byte_timeout: u64,
    /// See [`ListenerStats::downstream_bytes_received`].
    pub downstream_bytes_received: u64,
    /// See [`ListenerStats::downstream_bytes_sent`].
    pub downstream_bytes_sent: u64,
    /// See [`ListenerStats::http_requests`].
    pub http_requests: u64,
    /// See [`ListenerStats::http_responses_by_class`].
    pub http_responses_by_class: [u64; 5],
    /// See [`ListenerStats::http_local_replies`].
    pub http_local_replies: u64,
    /// See [`ListenerStats::tcp_session_closed`].
    pub tcp_session_closed: [u64; CloseReason::ALL.len()],
}

impl ListenerSnapshot {
    /// Connections open now.
    #[must_use]
    pub fn downstream_cx_active(&self) -> u64 {
        self.downstream_cx_total
            .saturating_sub(self.downstream_cx_closed)
    }

    fn add(&mut self, o: &ListenerSnapshot) {
        self.downstream_cx_total += o.downstream_cx_total;
        self.downstream_cx_closed += o.downstream_cx_closed;
        self.downstream_cx_overflow += o.downstream_cx_overflow;
        self.downstream_cx_first_byte_timeout += o.downstream_cx_first_byte_timeout;
        self.downstream_bytes_received += o.downstream_bytes_received;
        self.downstream_bytes_sent += o.downstream_bytes_sent;
        self.http_requests += o.http_requests;
        for (a, b) in self
            .http_responses_by_class
            .iter_mut()
            .zip(o.http_responses_by_class)
        {
            *a += b;
        }
        self.http_local_replies += o.http_local_replies;
        for (a, b) in self.tcp_session_closed.iter_mut().zip(o.tcp_session_closed) {
            *a += b;
        }
    }
}

/// A host's counters, summable across workers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HostSnapshot {
    /// See [`HostStats::rq_total`].
    pub rq_total: u64,
    /// See [`HostStats::rq_active`].
    pub rq_active: u64,
    /// See [`HostStats::cx_total`].
    pub cx_total: u64,
    /// See [`HostStats::cx_active`].
    pub cx_active: u64,
    /// See [`HostStats::cx_connect_fail`].
    pub cx_connect_fail: u64,
    /// See [`HostStats::healthy`].
    pub healthy: u64,
    /// See [`HostStats::ejected`].
    pub ejected: u64,
}

/// A cluster's counters, summable across workers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClusterSnapshot {
    /// See [`ClusterStats::upstream_rq_total`].
    pub upstream_rq_total: u64,
    /// See [`ClusterStats::upstream_cx_total`].
    pub upstream_cx_total: u64,
    /// See [`ClusterStats::upstream_cx_connect_fail`].
    pub upstream_cx_connect_fail: u64,
    /// See [`ClusterStats::upstream_cx_connect_timeout`].
    pub upstream_cx_connect_timeout: u64,
    /// See [`ClusterStats::upstream_rq_timeout`].
    pub upstream_rq_timeout: u64,
    /// See [`ClusterStats::upstream_rq_retry`].
    pub upstream_rq_retry: u64,
    /// See [`ClusterStats::upstream_cx_overflow`].
    pub upstream_cx_overflow: u64,
    /// See [`ClusterStats::upstream_rq_pending_overflow`].
    pub upstream_rq_pending_overflow: u64,
    /// See [`ClusterStats::upstream_rq_overflow`].
    pub upstream_rq_overflow: u64,
    /// See [`ClusterStats::upstream_rq_retry_overflow`].
    pub upstream_rq_retry_overflow: u64,
    /// See [`ClusterStats::upstream_rq_too_many_interim`].
    pub upstream_rq_too_many_interim: u64,
    /// See [`ClusterStats::health_check_attempt`].
    pub health_check_attempt: u64,
    /// See [`ClusterStats::health_check_success`].
    pub health_check_success: u64,
    /// See [`ClusterStats::health_check_failure`].
    pub health_check_failure: u64,
    /// See [`ClusterStats::outlier_ejections_total`].
    pub outlier_ejections_total: u64,
    /// See [`ClusterStats::outlier_ejections_overflow`].
    pub outlier_ejections_overflow: u64,
    /// See [`ClusterStats::lb_panic`].
    pub lb_panic: u64,
    /// See [`ClusterStats::lb_panic_total`].
    pub lb_panic_total: u64,
    /// Per host.
    pub hosts: Vec<HostSnapshot>,
}

/// Every counter of a worker, or the sum over workers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DetailedSnapshot {
    /// The worker-wide counters.
    pub worker: StatsSnapshot,
    /// Per listener.
    pub listeners: Vec<ListenerSnapshot>,
    /// Per cluster.
    pub clusters: Vec<ClusterSnapshot>,
    /// See [`WorkerStats::downstream_rq_time`].
    pub downstream_rq_time: HistogramSnapshot,
    /// See [`WorkerStats::upstream_rq_time`].
    pub upstream_rq_time: HistogramSnapshot,
    /// See [`WorkerStats::bolt`], by name.
    pub bolt: Vec<(&'static str, u64)>,
}

impl DetailedSnapshot {
    /// The sum over workers (read one after another; each worker's copy is taken without
    /// stopping it, so counters of one worker may be a few increments apart).
    #[must_use]
    pub fn sum<'a>(workers: impl IntoIterator<Item = &'a std::sync::Arc<WorkerStats>>) -> Self {
        let mut total = DetailedSnapshot::default();
        for w in workers {
            total.add(&w.detailed());
        }
        total
    }

    /// Adds another worker's counters (slots missing on either side are kept / added).
    pub fn add(&mut self, o: &DetailedSnapshot) {
        self.worker.add(&o.worker);
        if self.listeners.len() < o.listeners.len() {
            self.listeners
                .resize(o.listeners.len(), ListenerSnapshot::default());
        }
        for (a, b) in self.listeners.iter_mut().zip(&o.listeners) {
            a.add(b);
        }
        if self.clusters.len() < o.clusters.len() {
            self.clusters
                .resize(o.clusters.len(), ClusterSnapshot::default());
        }
        for (a, b) in self.clusters.iter_mut().zip(&o.clusters) {
            a.upstream_rq_total += b.upstream_rq_total;
            a.upstream_cx_total += b.upstream_cx_total;
            a.upstream_cx_connect_fail += b.upstream_cx_connect_fail;
            a.upstream_cx_connect_timeout += b.upstream_cx_connect_timeout;
            a.upstream_rq_timeout += b.upstream_rq_timeout;
            a.upstream_rq_retry += b.upstream_rq_retry;
            a.upstream_cx_overflow += b.upstream_cx_overflow;
            a.upstream_rq_pending_overflow += b.upstream_rq_pending_overflow;
            a.upstream_rq_overflow += b.upstream_rq_overflow;
            a.upstream_rq_retry_overflow += b.upstream_rq_retry_overflow;
            a.upstream_rq_too_many_interim += b.upstream_rq_too_many_interim;
            a.health_check_attempt += b.health_check_attempt;
            a.health_check_success += b.health_check_success;
            a.health_check_failure += b.health_check_failure;
            a.outlier_ejections_total += b.outlier_ejections_total;
            a.outlier_ejections_overflow += b.outlier_ejections_overflow;
            a.lb_panic += b.lb_panic;
            a.lb_panic_total += b.lb_panic_total;
            if a.hosts.len() < b.hosts.len() {
                a.hosts.resize(b.hosts.len(), HostSnapshot::default());
            }
            for (x, y) in a.hosts.iter_mut().zip(&b.hosts) {
                x.rq_total += y.rq_total;
                x.rq_active = x.rq_active.wrapping_add(y.rq_active);
                x.cx_total += y.cx_total;
                x.cx_active = x.cx_active.wrapping_add(y.cx_active);
                x.cx_connect_fail += y.cx_connect_fail;
                x.healthy += y.healthy;
                x.ejected += y.ejected;
            }
        }
        self.downstream_rq_time.add(&o.downstream_rq_time);
        self.upstream_rq_time.add(&o.upstream_rq_time);
        if self.bolt.is_empty() {
            self.bolt.clone_from(&o.bolt);
        } else {
            for (a, b) in self.bolt.iter_mut().zip(&o.bolt) {
                a.1 += b.1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_by_upper_bound() {
        let h = Histogram::default();
        h.record(Duration::from_micros(500)); // <= 0.5 ms
        h.record(Duration::from_micros(501)); // <= 1 ms
        h.record(Duration::from_millis(3)); // <= 5 ms
        h.record(Duration::from_secs(60)); // +Inf
        let s = h.snapshot();
        assert_eq!(s.buckets[0], 1);
        assert_eq!(s.buckets[1], 1);
        assert_eq!(s.buckets[3], 1);
        assert_eq!(s.buckets[HISTOGRAM_BOUNDS_US.len()], 1);
        assert_eq!(s.count(), 4);
        assert_eq!(s.sum_us, 500 + 501 + 3000 + 60_000_000);
        assert_eq!(s.quantile_bound_us(0.5), Some(1_000));
        assert_eq!(s.quantile_bound_us(1.0), None);
    }

    #[test]
    fn gauges_and_sums_across_workers() {
        let config = Config::from_yaml(
            "listeners: [ { name: l, address: 127.0.0.1:1, tcp_proxy: { cluster: c } } ]\n\
             clusters: [ { name: c, hosts: [ { address: 127.0.0.1:2 }, { address: 127.0.0.1:3 } ] } ]",
        )
        .unwrap();
        let a = std::sync::Arc::new(WorkerStats::new(&config));
        let b = std::sync::Arc::new(WorkerStats::new(&config));
        gauge_add(&a.host(0, 1).unwrap().rq_active, true);
        gauge_add(&a.host(0, 1).unwrap().rq_active, true);
        gauge_add(&b.host(0, 1).unwrap().rq_active, true);
        gauge_add(&a.host(0, 1).unwrap().rq_active, false);
        bump(&a.listener(0).unwrap().downstream_cx_total, 3);
        bump(&b.listener(0).unwrap().downstream_cx_total, 4);
        bump(&b.listener(0).unwrap().downstream_cx_closed, 1);
        let total = DetailedSnapshot::sum([&a, &b]);
        assert_eq!(total.clusters[0].hosts[1].rq_active, 2);
        assert_eq!(total.clusters[0].hosts[0].rq_active, 0);
        assert_eq!(total.listeners[0].downstream_cx_total, 7);
        assert_eq!(total.listeners[0].downstream_cx_active(), 6);
        assert!(WorkerStats::default().listener(0).is_none());
    }
}
