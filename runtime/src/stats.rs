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
//! Each counter is declared once, in a `counters!` table (field, reload behaviour, and the
//! [`Metric`] it is exported as: Prometheus name, kind, HELP text, labels, `/stats` name); the
//! blocks, their snapshots, the sums across workers, the transfer at a reload and the export
//! lists ([`LISTENER_METRICS`], [`CLUSTER_METRICS`], [`HOST_METRICS`], [`BOLT_METRICS`],
//! [`WORKER_METRICS`], [`HISTOGRAM_METRICS`]) are derived from it. The admin API
//! (`crate::admin`) writes `/metrics` and `/stats` from those lists, and `docs/metrics.md` is
//! generated from them (`crate::admin::metrics_reference`). Incrementing a counter stays a
//! plain field access: `bump(&stats.http_requests, 1)`.
//!
//! Every per-worker block is aligned to 128 bytes (two cache lines, the unit of the adjacent
//! line prefetcher) so that two workers' counters never share a line, even though they are
//! all allocated by the main thread, next to each other.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use sluice_core::config::Config;
use sluice_core::tcp_proxy::CloseReason;

use crate::tls::HandshakeOutcome;

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

    /// Adds `old − base` (a reload: see [`WorkerStats::transfer`]).
    fn transfer(&self, old: &Histogram, base: &Histogram) {
        self.buckets.transfer(&old.buckets, &base.buckets);
        self.sum_us.transfer(&old.sum_us, &base.sum_us);
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

// ---- metric declarations ---------------------------------------------------------------------
//
// Every counter is declared once, in a `counters!` table below: its field (name, type, doc), how
// a reload moves it (`counter`: the old generation's count is added; `closed`: the old
// generation's accepted connections count as closed; `gauge`: not moved) and, when it is
// exported, its [`Metric`]: Prometheus family, kind, HELP text, labels and `/stats` name. The
// table makes the per-worker struct, its plain snapshot, the sum across workers, the transfer
// at a reload and the list the admin API exports (and `docs/metrics.md` is generated from).

/// What a Prometheus family is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up (reloads and upgrades included).
    Counter,
    /// A value now.
    Gauge,
    /// Cumulative buckets, a sum and a count.
    Histogram,
}

impl Kind {
    /// The `# TYPE` word.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// For which elements of its scope (listeners, clusters, hosts) a metric is exported.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shown {
    /// Every element (a Prometheus family is declared even with no element).
    Always,
    /// Listeners with an `http` filter (the family is declared only when there is one).
    HttpListeners,
    /// Listeners with a `tcp_proxy` filter (the family is declared only when there is one).
    TcpListeners,
    /// `tcp_proxy` listeners with `sni_routes`.
    SniListeners,
    /// Listeners that terminate TLS.
    TlsListeners,
    /// Clusters that originate TLS.
    WithTls,
    /// Listeners with `original_dst` (transparent capture).
    CaptureListeners,
    /// Listeners with `filter_chains`.
    ChainListeners,
    /// Clusters (and their hosts) with a `health_check`.
    WithHealthCheck,
    /// Clusters (and their hosts) with `outlier_detection`.
    WithOutlierDetection,
    /// Clusters of type `strict_dns` or `logical_dns`.
    WithDns,
    /// The server when its process-wide limits are set (always, in a running server).
    WithLimits,
    /// Not exported there.
    Never,
}

/// The label value of element `i` of a counter array (`1xx`, `completed`…).
pub type LabelValue = fn(usize) -> &'static str;

/// How one metric is exported: its Prometheus family and its `/stats` name.
#[derive(Clone, Copy, Debug)]
pub struct Metric<S> {
    /// The Prometheus family name (empty when only in `/stats`).
    pub name: &'static str,
    /// Counter or gauge.
    pub kind: Kind,
    /// The `# HELP` text.
    pub help: &'static str,
    /// For a counter array: the label telling its elements apart, and each element's value.
    pub by: Option<(&'static str, LabelValue)>,
    /// Which elements of the scope the family has samples for.
    pub prometheus: Shown,
    /// The `/stats` name under the scope's prefix (`listener.NAME.`, `cluster.NAME.`…); for a
    /// counter array, the element's label value is appended. Empty when not in `/stats`.
    pub stats_key: &'static str,
    /// Which elements of the scope `/stats` has the name for.
    pub stats: Shown,
    /// A value computed from the snapshot instead of the field's own (the field is then what
    /// it is computed from, e.g. connections closed for connections open).
    pub derived: Option<fn(&S) -> u64>,
}

impl<S> Metric<S> {
    /// A counter in Prometheus only (add [`Metric::stats`] for `/stats`).
    #[must_use]
    pub const fn counter(name: &'static str, help: &'static str) -> Self {
        Metric {
            name,
            kind: Kind::Counter,
            help,
            by: None,
            prometheus: Shown::Always,
            stats_key: "",
            stats: Shown::Never,
            derived: None,
        }
    }

    /// A gauge in Prometheus only (add [`Metric::stats`] for `/stats`).
    #[must_use]
    pub const fn gauge(name: &'static str, help: &'static str) -> Self {
        Metric {
            kind: Kind::Gauge,
            ..Metric::counter(name, help)
        }
    }

    /// A counter in `/stats` only.
    #[must_use]
    pub const fn stats_counter(key: &'static str, help: &'static str) -> Self {
        Metric {
            prometheus: Shown::Never,
            ..Metric::counter("", help)
        }
        .stats(key)
    }

    /// Also in `/stats` as `key`, for every element.
    #[must_use]
    pub const fn stats(self, key: &'static str) -> Self {
        Metric {
            stats_key: key,
            stats: Shown::Always,
            ..self
        }
    }

    /// In Prometheus only for `which` elements.
    #[must_use]
    pub const fn prometheus_for(self, which: Shown) -> Self {
        Metric {
            prometheus: which,
            ..self
        }
    }

    /// In `/stats` only for `which` elements.
    #[must_use]
    pub const fn stats_for(self, which: Shown) -> Self {
        Metric {
            stats: which,
            ..self
        }
    }

    /// One sample per array element, told apart by `label` (`value(i)` for element `i`).
    #[must_use]
    pub const fn by(self, label: &'static str, value: LabelValue) -> Self {
        Metric {
            by: Some((label, value)),
            ..self
        }
    }

    /// Exports `value(snapshot)` instead of the field.
    #[must_use]
    pub const fn derived(self, value: fn(&S) -> u64) -> Self {
        Metric {
            derived: Some(value),
            ..self
        }
    }
}

/// A declared metric and how to read it from a snapshot `S`.
#[derive(Clone, Copy, Debug)]
pub struct Export<S> {
    /// The field it reads (for the reference).
    pub field: &'static str,
    /// How it is exported.
    pub metric: Metric<S>,
    /// Samples per element: 1, or the length of a counter array.
    pub len: usize,
    /// Element `i` of the field.
    pub read: fn(&S, usize) -> u64,
}

impl<S> Export<S> {
    /// Element `i`'s value in `s`.
    #[must_use]
    pub fn value(&self, s: &S, i: usize) -> u64 {
        match self.metric.derived {
            Some(derived) => derived(s),
            None => (self.read)(s, i),
        }
    }

    /// `(label value, value)` of every sample (the label value is empty without [`Metric::by`]).
    pub fn samples<'a>(&'a self, s: &'a S) -> impl Iterator<Item = (&'static str, u64)> + 'a {
        (0..self.len).map(move |i| {
            (
                self.metric.by.map_or("", |(_, name)| name(i)),
                self.value(s, i),
            )
        })
    }
}

/// A counter cell of a per-worker block: one atomic, or an array of them.
pub trait Cell {
    /// Its plain copy.
    type Plain: Plain;
    /// Elements (1 for a single counter).
    const LEN: usize;
    /// A plain copy now.
    fn copy_now(&self) -> Self::Plain;
    /// Adds `old − base` (see [`WorkerStats::transfer`]).
    fn transfer(&self, old: &Self, base: &Self);
}

/// The plain copy of a [`Cell`], summable across workers.
pub trait Plain {
    /// Adds another worker's counts.
    fn add_count(&mut self, other: &Self);
    /// Adds another worker's gauge values (wrapping: a worker's own value may wrap transiently).
    fn add_gauge(&mut self, other: &Self);
    /// Element `i` (0 for a single counter).
    fn element(&self, i: usize) -> u64;
}

impl Cell for AtomicU64 {
    type Plain = u64;
    const LEN: usize = 1;
    fn copy_now(&self) -> u64 {
        self.load(Relaxed)
    }
    fn transfer(&self, old: &Self, base: &Self) {
        bump(self, old.load(Relaxed).saturating_sub(base.load(Relaxed)));
    }
}

impl<const N: usize> Cell for [AtomicU64; N] {
    type Plain = [u64; N];
    const LEN: usize = N;
    fn copy_now(&self) -> [u64; N] {
        std::array::from_fn(|i| self[i].load(Relaxed))
    }
    fn transfer(&self, old: &Self, base: &Self) {
        for ((n, o), b) in self.iter().zip(old).zip(base) {
            n.transfer(o, b);
        }
    }
}

impl Plain for u64 {
    fn add_count(&mut self, other: &Self) {
        *self += other;
    }
    fn add_gauge(&mut self, other: &Self) {
        *self = self.wrapping_add(*other);
    }
    fn element(&self, _: usize) -> u64 {
        *self
    }
}

impl<const N: usize> Plain for [u64; N] {
    fn add_count(&mut self, other: &Self) {
        for (a, b) in self.iter_mut().zip(other) {
            *a += b;
        }
    }
    fn add_gauge(&mut self, other: &Self) {
        for (a, b) in self.iter_mut().zip(other) {
            *a = a.wrapping_add(*b);
        }
    }
    fn element(&self, i: usize) -> u64 {
        self[i]
    }
}

/// Declares a per-worker block of counters: the struct of atomics (plus `extra` fields the
/// table does not cover), its plain snapshot (plus `snapshot_extra` fields), `counters()` (the
/// copy), `transfer_counters()` (a reload's move), `add_counters()` (the sum across workers) and
/// the const list of its exported metrics.
macro_rules! counters {
    (
        $(#[$attr:meta])*
        pub struct $Stats:ident => $Snapshot:ident, exports $EXPORTS:ident {
            $(
                $(#[doc = $doc:literal])*
                $field:ident: $cell:ty, $mode:ident $(=> $metric:expr)?;
            )*
        }
        $( extra { $( $(#[$xattr:meta])* $xfield:ident: $xty:ty, )* } )?
        $( snapshot_extra { $( $(#[$yattr:meta])* $yfield:ident: $yty:ty, )* } )?
    ) => {
        $(#[$attr])*
        #[derive(Debug, Default)]
        pub struct $Stats {
            $( $(#[doc = $doc])* pub $field: $cell, )*
            $( $( $(#[$xattr])* pub $xfield: $xty, )* )?
        }

        #[doc = concat!("A plain copy of a [`", stringify!($Stats), "`], summable across workers.")]
        #[derive(Clone, Debug, Default, PartialEq, Eq)]
        pub struct $Snapshot {
            $(
                #[doc = concat!("See [`", stringify!($Stats), "::", stringify!($field), "`].")]
                pub $field: <$cell as Cell>::Plain,
            )*
            $( $( $(#[$yattr])* pub $yfield: $yty, )* )?
        }

        impl $Stats {
            /// A plain copy of the declared counters (the extra fields are left empty).
            #[must_use]
            #[allow(clippy::needless_update)]
            pub fn counters(&self) -> $Snapshot {
                $Snapshot {
                    $( $field: Cell::copy_now(&self.$field), )*
                    ..$Snapshot::default()
                }
            }

            /// Adds `old − base` to every declared counter, as its mode says (the extra fields
            /// are the caller's).
            fn transfer_counters(&self, old: &$Stats, base: &$Stats) {
                $( counters!(@transfer $mode, self, old, base, $field); )*
            }
        }

        impl $Snapshot {
            /// Adds another worker's declared counters (the extra fields are the caller's).
            pub fn add_counters(&mut self, o: &$Snapshot) {
                $( counters!(@add $mode, self, o, $field); )*
            }
        }

        #[doc = concat!("The metrics exported from a [`", stringify!($Snapshot), "`], in export order.")]
        pub const $EXPORTS: &[Export<$Snapshot>] = &[
            $( $(
                Export {
                    field: stringify!($field),
                    metric: $metric,
                    len: <$cell as Cell>::LEN,
                    read: |s: &$Snapshot, i| Plain::element(&s.$field, i),
                },
            )? )*
        ];
    };
    (@transfer counter, $n:ident, $o:ident, $b:ident, $f:ident) => {
        $n.$f.transfer(&$o.$f, &$b.$f)
    };
    // The old generation's connections count as closed here: they are its own to track while
    // it drains, and "active" is accepted minus closed.
    (@transfer closed, $n:ident, $o:ident, $b:ident, $f:ident) => {
        $n.$f.transfer(&$o.downstream_cx_total, &$b.downstream_cx_total)
    };
    (@transfer gauge, $n:ident, $o:ident, $b:ident, $f:ident) => {};
    (@add gauge, $a:ident, $o:ident, $f:ident) => {
        Plain::add_gauge(&mut $a.$f, &$o.$f)
    };
    (@add $mode:ident, $a:ident, $o:ident, $f:ident) => {
        Plain::add_count(&mut $a.$f, &$o.$f)
    };
}

/// The label value of an HTTP status class (index 0 is `1xx`).
fn status_class(i: usize) -> &'static str {
    ["1xx", "2xx", "3xx", "4xx", "5xx"][i]
}

/// The label value of a [`CloseReason`] by index.
fn close_reason(i: usize) -> &'static str {
    CloseReason::ALL[i].as_str()
}

/// What the ClientHello of a connection on a `tcp_proxy` listener with `sni_routes` said.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SniOutcome {
    /// Its server name matched a route: that route's cluster.
    Matched,
    /// TLS without a server name or with one no route names: the listener's `cluster`.
    Unmatched,
    /// Not TLS: the listener's `cluster`.
    NotTls,
    /// A malformed or too long ClientHello: closed.
    Invalid,
    /// No complete ClientHello within `client_hello_timeout`, or the drain deadline passed:
    /// closed.
    Timeout,
    /// The client closed or reset the connection before its ClientHello was complete (a TCP
    /// health probe lands here).
    Closed,
}

impl SniOutcome {
    /// Every outcome, in counter order.
    pub const ALL: [SniOutcome; 6] = [
        SniOutcome::Matched,
        SniOutcome::Unmatched,
        SniOutcome::NotTls,
        SniOutcome::Invalid,
        SniOutcome::Timeout,
        SniOutcome::Closed,
    ];
    /// The label and `/stats` suffix.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            SniOutcome::Matched => "matched",
            SniOutcome::Unmatched => "unmatched",
            SniOutcome::NotTls => "not_tls",
            SniOutcome::Invalid => "invalid",
            SniOutcome::Timeout => "timeout",
            SniOutcome::Closed => "closed",
        }
    }
}

/// The label value of a [`HandshakeOutcome`] by index.
fn handshake_outcome(i: usize) -> &'static str {
    HandshakeOutcome::ALL[i].as_str()
}

/// What a capture listener (`original_dst`) did with a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CaptureOutcome {
    /// `use_original_dst`: handed to the listener matching the original destination.
    HandedOff,
    /// Served by this listener's own filter: no listener matches the original destination, or
    /// the listener does not hand off.
    OwnChain,
    /// No original destination (the connection was not captured: a client dialled the capture
    /// listener itself): served by this listener's own filter, which cannot pass it through.
    NoOriginalDst,
}

impl CaptureOutcome {
    /// Every outcome, in counter order.
    pub const ALL: [CaptureOutcome; 3] = [
        CaptureOutcome::HandedOff,
        CaptureOutcome::OwnChain,
        CaptureOutcome::NoOriginalDst,
    ];
    /// The label and `/stats` suffix.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            CaptureOutcome::HandedOff => "handed_off",
            CaptureOutcome::OwnChain => "own_chain",
            CaptureOutcome::NoOriginalDst => "no_original_dst",
        }
    }
}

fn capture_outcome(i: usize) -> &'static str {
    CaptureOutcome::ALL[i].as_str()
}

/// Why a connection was closed while its first bytes were peeked at to pick its filter chain
/// (a timeout is counted apart: `downstream_listener_filter_timeout`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChainPeekRefusal {
    /// The client closed (FIN or reset) before its first byte or during its ClientHello (a TCP
    /// health probe lands here).
    Closed,
    /// A malformed ClientHello (or a TLS record that does not start one).
    Invalid,
    /// A ClientHello longer than the limit (16 KiB).
    TooLarge,
    /// The drain deadline passed while waiting.
    Drained,
    /// Reading the socket failed.
    Error,
}

impl ChainPeekRefusal {
    /// Every reason, in counter order.
    pub const ALL: [ChainPeekRefusal; 5] = [
        ChainPeekRefusal::Closed,
        ChainPeekRefusal::Invalid,
        ChainPeekRefusal::TooLarge,
        ChainPeekRefusal::Drained,
        ChainPeekRefusal::Error,
    ];
    /// The label and `/stats` suffix.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            ChainPeekRefusal::Closed => "closed",
            ChainPeekRefusal::Invalid => "invalid",
            ChainPeekRefusal::TooLarge => "too_large",
            ChainPeekRefusal::Drained => "drained",
            ChainPeekRefusal::Error => "error",
        }
    }
}

/// The label value of a [`ChainPeekRefusal`] by index.
fn chain_peek_refusal(i: usize) -> &'static str {
    ChainPeekRefusal::ALL[i].as_str()
}

/// The label value of an [`SniOutcome`] by index.
fn sni_outcome(i: usize) -> &'static str {
    SniOutcome::ALL[i].as_str()
}

/// Why an HTTP/2 stream was reset, as counted: the RST_STREAM error codes seen in practice,
/// `other` for the rest, and `connection` for a stream cut by its connection ending (no
/// RST_STREAM).
pub const RESET_CODES: [&str; 7] = [
    "no_error",
    "protocol_error",
    "internal_error",
    "refused_stream",
    "cancel",
    "other",
    "connection",
];

/// The [`RESET_CODES`] index of an RST_STREAM error code (`None`: the connection ended).
#[must_use]
pub fn reset_code(code: Option<u32>) -> usize {
    match code {
        Some(0) => 0,
        Some(1) => 1,
        Some(2) => 2,
        Some(7) => 3,
        Some(8) => 4,
        Some(_) => 5,
        None => 6,
    }
}

fn reset_code_label(i: usize) -> &'static str {
    RESET_CODES[i]
}

/// Why the proxy sent an HTTP/2 client GOAWAY (the [`WorkerStats::http2_goaway_sent`] index).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GoawayCause {
    /// A drain (reload, upgrade, stop, `/drain_listeners`): `NO_ERROR`, open streams finish.
    Drain,
    /// No stream open for the listener's `idle_timeout`: `NO_ERROR`.
    IdleTimeout,
    /// Too many streams reset prematurely: `ENHANCE_YOUR_CALM`, the connection closes.
    PrematureResets,
    /// A keepalive PING (`http2.connection_keepalive`) went unanswered within its timeout:
    /// `NO_ERROR`, the connection closes.
    KeepaliveTimeout,
}

impl GoawayCause {
    /// Every cause, in counter order.
    pub const ALL: [GoawayCause; 4] = [
        GoawayCause::Drain,
        GoawayCause::IdleTimeout,
        GoawayCause::PrematureResets,
        GoawayCause::KeepaliveTimeout,
    ];
    /// The label and `/stats` suffix.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            GoawayCause::Drain => "drain",
            GoawayCause::IdleTimeout => "idle_timeout",
            GoawayCause::PrematureResets => "premature_resets",
            GoawayCause::KeepaliveTimeout => "keepalive_timeout",
        }
    }
}

fn goaway_cause(i: usize) -> &'static str {
    GoawayCause::ALL[i].as_str()
}

counters! {
    /// Counters of one listener in one worker.
    #[repr(align(128))]
    pub struct ListenerStats => ListenerSnapshot, exports LISTENER_METRICS {
        /// Connections accepted.
        downstream_cx_total: AtomicU64, counter
            => Metric::counter("sluice_downstream_cx_total", "Downstream connections accepted.")
                .stats("downstream_cx_total");
        /// Connections closed (active = total - closed).
        downstream_cx_closed: AtomicU64, closed
            => Metric::gauge("sluice_downstream_cx_active", "Downstream connections open now.")
                .stats("downstream_cx_active")
                .derived(ListenerSnapshot::downstream_cx_active);
        /// Connections refused (accepted and closed at once) by a connection limit.
        downstream_cx_overflow: AtomicU64, counter
            => Metric::counter(
                "sluice_downstream_cx_overflow_total",
                "Downstream connections refused (closed at once) by a connection limit.",
            )
            .stats("downstream_cx_overflow");
        /// HTTP connections closed because no byte of a first request arrived within
        /// `request_headers_timeout` of the accept.
        downstream_cx_first_byte_timeout: AtomicU64, counter
            => Metric::counter(
                "sluice_downstream_cx_first_byte_timeout_total",
                "HTTP connections closed: no byte within request_headers_timeout of the accept (on a listener with filter chains, of the chain's pick).",
            )
            .stats("downstream_cx_first_byte_timeout")
            .stats_for(Shown::HttpListeners);
        /// Bytes received from downstream.
        downstream_bytes_received: AtomicU64, counter
            => Metric::counter("sluice_downstream_bytes_received_total", "Bytes received from downstream.")
                .stats("downstream_bytes_received");
        /// Bytes sent to downstream.
        downstream_bytes_sent: AtomicU64, counter
            => Metric::counter("sluice_downstream_bytes_sent_total", "Bytes sent to downstream.")
                .stats("downstream_bytes_sent");
        /// HTTP requests received with a complete head (a rejected head is counted only in
        /// `http_responses_by_class` and `http_local_replies`).
        http_requests: AtomicU64, counter
            => Metric::counter("sluice_http_requests_total", "HTTP requests received.")
                .stats("http.rq_total")
                .prometheus_for(Shown::HttpListeners)
                .stats_for(Shown::HttpListeners);
        /// HTTP responses by status class (1xx..5xx).
        http_responses_by_class: [AtomicU64; 5], counter
            => Metric::counter(
                "sluice_http_responses_total",
                "HTTP responses sent downstream, by status class.",
            )
            .by("class", status_class)
            .stats("http.rq_")
            .prometheus_for(Shown::HttpListeners)
            .stats_for(Shown::HttpListeners);
        /// HTTP answers the proxy generated itself (errors, limits, no route).
        http_local_replies: AtomicU64, counter
            => Metric::counter(
                "sluice_http_local_replies_total",
                "HTTP answers the proxy made itself (errors, limits, no route).",
            )
            .stats("http.local_reply")
            .prometheus_for(Shown::HttpListeners)
            .stats_for(Shown::HttpListeners);
        /// HTTP/1.1 upgrade requests whose `Upgrade` value the listener's `upgrade_types` (or
        /// the route's `upgrade_configs`) does not allow: answered 403 and closed (Envoy's
        /// `downstream_rq_ws_on_non_ws_route`).
        http_upgrades_refused: AtomicU64, counter
            => Metric::counter(
                "sluice_http_upgrades_refused_total",
                "HTTP/1.1 upgrade requests of a type the listener's upgrade_types (or the route's upgrade_configs) does not allow (answered 403).",
            )
            .stats("http.downstream_rq_ws_on_non_ws_route")
            .prometheus_for(Shown::HttpListeners)
            .stats_for(Shown::HttpListeners);
        /// TCP sessions ended, by [`CloseReason`].
        tcp_session_closed: [AtomicU64; CloseReason::ALL.len()], counter
            => Metric::counter(
                "sluice_tcp_sessions_closed_total",
                "TCP proxy sessions ended, by close reason.",
            )
            .by("reason", close_reason)
            .stats("tcp.closed.")
            .prometheus_for(Shown::TcpListeners)
            .stats_for(Shown::TcpListeners);
        /// Connections routed by their ClientHello, by [`SniOutcome`].
        sni_outcome: [AtomicU64; SniOutcome::ALL.len()], counter
            => Metric::counter(
                "sluice_tcp_sni_connections_total",
                "Connections on tcp_proxy listeners with sni_routes, by what their ClientHello said.",
            )
            .by("outcome", sni_outcome)
            .stats("tcp.sni.")
            .prometheus_for(Shown::SniListeners)
            .stats_for(Shown::SniListeners);
        /// TLS handshakes, by [`HandshakeOutcome`].
        tls_handshakes: [AtomicU64; HandshakeOutcome::ALL.len()], counter
            => Metric::counter(
                "sluice_tls_handshakes_total",
                "TLS handshakes on listeners that terminate TLS, by outcome.",
            )
            .by("outcome", handshake_outcome)
            .stats("tls.handshake.")
            .prometheus_for(Shown::TlsListeners)
            .stats_for(Shown::TlsListeners);
        /// Connections a capture listener accepted, by [`CaptureOutcome`].
        capture_outcome: [AtomicU64; CaptureOutcome::ALL.len()], counter
            => Metric::counter(
                "sluice_capture_connections_total",
                "Connections accepted on capture listeners (original_dst), by what became of them.",
            )
            .by("outcome", capture_outcome)
            .stats("capture.")
            .prometheus_for(Shown::CaptureListeners)
            .stats_for(Shown::CaptureListeners);
        /// Connections no filter chain took, on a listener without a default chain: closed
        /// (Envoy's `downstream_cx_no_filter_chain_match`).
        downstream_cx_no_filter_chain_match: AtomicU64, counter
            => Metric::counter(
                "sluice_downstream_cx_no_filter_chain_match_total",
                "Connections closed because no filter chain of the listener matched them.",
            )
            .stats("downstream_cx_no_filter_chain_match")
            .prometheus_for(Shown::ChainListeners)
            .stats_for(Shown::ChainListeners);
        /// Connections whose first bytes did not come within `listener_filters_timeout`
        /// (closed, or served as plaintext with `continue_on_listener_filters_timeout`).
        downstream_listener_filter_timeout: AtomicU64, counter
            => Metric::counter(
                "sluice_downstream_listener_filter_timeout_total",
                "Connections whose ClientHello (or first bytes) did not come within listener_filters_timeout.",
            )
            .stats("downstream_listener_filter_timeout")
            .prometheus_for(Shown::ChainListeners)
            .stats_for(Shown::ChainListeners);
        /// Connections closed because their first bytes could not pick a chain, by
        /// [`ChainPeekRefusal`].
        downstream_listener_filter_refused: [AtomicU64; ChainPeekRefusal::ALL.len()], counter
            => Metric::counter(
                "sluice_downstream_listener_filter_refused_total",
                "Connections closed while their first bytes were peeked at to pick a filter chain, by why.",
            )
            .by("reason", chain_peek_refusal)
            .stats("downstream_listener_filter_refused.")
            .prometheus_for(Shown::ChainListeners)
            .stats_for(Shown::ChainListeners);
    }
    extra {
        /// This listener's HTTP request times (see [`WorkerStats::downstream_rq_time`]).
        downstream_rq_time: Histogram,
    }
    snapshot_extra {
        /// See [`ListenerStats::downstream_rq_time`].
        downstream_rq_time: HistogramSnapshot,
    }
}

counters! {
    /// Counters of one upstream host in one worker.
    #[repr(align(128))]
    pub struct HostStats => HostSnapshot, exports HOST_METRICS {
        /// Requests (HTTP) or sessions (TCP) served by the host.
        rq_total: AtomicU64, counter
            => Metric::counter(
                "sluice_upstream_host_requests_total",
                "Requests (HTTP) or sessions (TCP) served by the host.",
            )
            .stats("rq_total");
        /// Requests (HTTP) or sessions (TCP) in flight now (a gauge this worker stores).
        rq_active: AtomicU64, gauge
            => Metric::gauge(
                "sluice_upstream_host_requests_active",
                "Requests (HTTP) or sessions (TCP) in flight on the host now.",
            )
            .stats("rq_active");
        /// Upstream connections opened to the host.
        cx_total: AtomicU64, counter
            => Metric::counter("sluice_upstream_host_cx_total", "Upstream connections opened to the host.")
                .stats("cx_total");
        /// Upstream connections open now, pooled idle ones included (a gauge).
        cx_active: AtomicU64, gauge
            => Metric::gauge(
                "sluice_upstream_host_cx_active",
                "Upstream connections to the host open now (idle pooled ones included).",
            )
            .stats("cx_active");
        /// HTTP/1.1 connections to the host idle in this worker's keep-alive pool (a gauge).
        http1_cx_idle: AtomicU64, gauge
            => Metric::gauge(
                "sluice_upstream_host_http1_cx_idle",
                "HTTP/1.1 connections to the host idle in the keep-alive pools now (summed over workers).",
            )
            .stats("http1_cx_idle");
        /// HTTP/2 connections to the host open now, from their handshake until they close
        /// (pooled, or left the pool and finishing their streams) (a gauge).
        http2_cx_active: AtomicU64, gauge
            => Metric::gauge(
                "sluice_upstream_host_http2_cx_active",
                "HTTP/2 connections to the host open now (summed over workers' pools).",
            )
            .stats("http2_cx_active");
        /// Request streams open on the host's HTTP/2 connections now (a gauge).
        http2_streams_active: AtomicU64, gauge
            => Metric::gauge(
                "sluice_upstream_host_http2_streams_active",
                "Request streams open on the host's HTTP/2 connections now.",
            )
            .stats("http2_streams_active");
        /// Connect attempts that failed or timed out.
        cx_connect_fail: AtomicU64, counter
            => Metric::counter(
                "sluice_upstream_host_cx_connect_failures_total",
                "Connect attempts to the host that failed or timed out.",
            )
            .stats("cx_connect_fail");
        /// 1 when the active health check passes (written by the worker running the checks; 0
        /// while unknown or failing). Without a health check nothing writes it: the admin API
        /// reports such hosts healthy ([`crate::admin::scrape`]).
        healthy: AtomicU64, gauge
            => Metric::gauge(
                "sluice_upstream_host_healthy",
                "1 when the host is healthy: it passes its active health check (0 while unknown or failing), or its cluster has no health check (always 1). Outlier ejection is sluice_upstream_host_ejected.",
            )
            .stats("healthy");
        /// 1 when this worker's outlier detector ejected the host (a gauge; summed over workers it
        /// is the number of workers ejecting it).
        ejected: AtomicU64, gauge
            => Metric::gauge(
                "sluice_upstream_host_ejected",
                "Workers whose outlier detection ejects the host now.",
            )
            .stats("ejected")
            .stats_for(Shown::WithOutlierDetection);
    }
}

counters! {
    /// Counters of one cluster in one worker.
    #[repr(align(128))]
    pub struct ClusterStats => ClusterSnapshot, exports CLUSTER_METRICS {
        /// Requests (HTTP) or sessions (TCP) sent to the cluster.
        upstream_rq_total: AtomicU64, counter
            => Metric::counter(
                "sluice_upstream_requests_total",
                "Requests (HTTP) or sessions (TCP) sent to the cluster.",
            )
            .stats("upstream_rq_total");
        /// Connect attempts.
        upstream_cx_total: AtomicU64, counter
            => Metric::counter("sluice_upstream_cx_total", "Upstream connect attempts.")
                .stats("upstream_cx_total");
        /// Connect attempts refused or errored.
        upstream_cx_connect_fail: AtomicU64, counter
            => Metric::counter(
                "sluice_upstream_cx_connect_failures_total",
                "Upstream connect attempts refused or errored.",
            )
            .stats("upstream_cx_connect_fail");
        /// HTTP/1.1 connections idle in this worker's keep-alive pool, all the cluster's hosts
        /// (an `original_dst` cluster's destinations included) (a gauge).
        upstream_cx_http1_idle: AtomicU64, gauge
            => Metric::gauge(
                "sluice_upstream_http1_cx_idle",
                "HTTP/1.1 connections idle in the keep-alive pools now, all the cluster's hosts (original_dst destinations included).",
            )
            .stats("upstream_cx_http1_idle");
        /// HTTP/2 connections open now, all the cluster's hosts and destinations (a gauge).
        upstream_cx_http2_active: AtomicU64, gauge
            => Metric::gauge(
                "sluice_upstream_http2_cx_active",
                "HTTP/2 connections open now, all the cluster's hosts (original_dst destinations included).",
            )
            .stats("upstream_cx_http2_active");
        /// Request streams open on the cluster's HTTP/2 connections now (a gauge).
        upstream_rq_http2_streams_active: AtomicU64, gauge
            => Metric::gauge(
                "sluice_upstream_http2_streams_active",
                "Request streams open on the cluster's HTTP/2 connections now.",
            )
            .stats("upstream_http2_streams_active");
        /// TLS handshakes to the cluster's hosts that failed, by [`HandshakeOutcome`] (each is
        /// also a connect failure).
        upstream_tls_fail: [AtomicU64; HandshakeOutcome::ALL.len()], counter
            => Metric::counter(
                "sluice_upstream_tls_handshake_failures_total",
                "TLS handshakes to upstream hosts that failed, by reason (each is also a connect failure).",
            )
            .by("reason", handshake_outcome)
            .stats("upstream_tls_fail.")
            .prometheus_for(Shown::WithTls)
            .stats_for(Shown::WithTls);
        /// Connect attempts that timed out.
        upstream_cx_connect_timeout: AtomicU64, counter
            => Metric::counter(
                "sluice_upstream_cx_connect_timeouts_total",
                "Upstream connect attempts that timed out.",
            )
            .stats("upstream_cx_connect_timeout");
        /// HTTP tries that hit a per-try or route timeout.
        upstream_rq_timeout: AtomicU64, counter
            => Metric::counter(
                "sluice_upstream_request_timeouts_total",
                "HTTP tries that hit a per-try or route timeout.",
            )
            .stats("upstream_rq_timeout");
        /// HTTP retries.
        upstream_rq_retry: AtomicU64, counter
            => Metric::counter("sluice_upstream_retries_total", "HTTP retries.")
                .stats("upstream_rq_retry");
        /// Connections refused by the `max_connections` circuit breaker.
        upstream_cx_overflow: AtomicU64, counter
            => Metric::counter(
                "sluice_upstream_cx_overflow_total",
                "Connections refused by the max_connections circuit breaker.",
            )
            .stats("upstream_cx_overflow");
        /// Requests refused by the `max_pending_requests` circuit breaker.
        upstream_rq_pending_overflow: AtomicU64, counter
            => Metric::counter(
                "sluice_upstream_rq_pending_overflow_total",
                "Requests refused by the max_pending_requests circuit breaker.",
            )
            .stats("upstream_rq_pending_overflow");
        /// Requests refused by the `max_requests` circuit breaker.
        upstream_rq_overflow: AtomicU64, counter
            => Metric::counter(
                "sluice_upstream_rq_overflow_total",
                "Requests refused by the max_requests circuit breaker.",
            )
            .stats("upstream_rq_overflow");
        /// Retries not made because the retry budget was spent (or the `max_retries` circuit breaker was at its limit).
        upstream_rq_retry_overflow: AtomicU64, counter
            => Metric::counter(
                "sluice_upstream_rq_retry_overflow_total",
                "Retries not made because the retry budget was spent (or the max_retries circuit breaker was at its limit).",
            )
            .stats("upstream_rq_retry_overflow");
        /// HTTP response heads received from the cluster's hosts, by status class (1xx..5xx;
        /// every try's, a response a retry then replaced included — Envoy's
        /// `upstream_rq_<class>`).
        upstream_rq_by_class: [AtomicU64; 5], counter
            => Metric::counter(
                "sluice_upstream_responses_total",
                "HTTP responses received from the cluster's hosts, by status class (every try's).",
            )
            .by("class", status_class)
            .stats("upstream_rq_");
        /// Tries failed because the upstream sent more interim (1xx) responses than allowed.
        upstream_rq_too_many_interim: AtomicU64, counter
            => Metric::counter(
                "sluice_upstream_rq_too_many_interim_total",
                "HTTP tries failed by more interim (1xx) responses than allowed (5).",
            )
            .stats("upstream_rq_too_many_interim");
        /// Active health-check probes started.
        health_check_attempt: AtomicU64, counter
            => Metric::counter("sluice_health_check_attempts_total", "Active health-check probes started.")
                .stats("health_check.attempt")
                .stats_for(Shown::WithHealthCheck);
        /// Probes that passed.
        health_check_success: AtomicU64, counter
            => Metric::counter(
                "sluice_health_check_successes_total",
                "Active health-check probes that passed.",
            )
            .stats("health_check.success")
            .stats_for(Shown::WithHealthCheck);
        /// Probes that failed or timed out.
        health_check_failure: AtomicU64, counter
            => Metric::counter(
                "sluice_health_check_failures_total",
                "Active health-check probes that failed or timed out.",
            )
            .stats("health_check.failure")
            .stats_for(Shown::WithHealthCheck);
        /// Hosts ejected by outlier detection (this worker's detector).
        outlier_ejections_total: AtomicU64, counter
            => Metric::counter(
                "sluice_outlier_ejections_total",
                "Hosts ejected by outlier detection (summed over workers' detectors).",
            )
            .stats("outlier_detection.ejections_total")
            .stats_for(Shown::WithOutlierDetection);
        /// Ejections not made because `max_ejection_percent` was reached.
        outlier_ejections_overflow: AtomicU64, counter
            => Metric::stats_counter(
                "outlier_detection.ejections_overflow",
                "Ejections not made because max_ejection_percent was reached.",
            )
            .stats_for(Shown::WithOutlierDetection);
        /// 1 while this worker balances the cluster in panic mode (a gauge).
        lb_panic: AtomicU64, gauge;
        /// Times this worker entered panic mode for the cluster.
        lb_panic_total: AtomicU64, counter
            => Metric::counter(
                "sluice_lb_panic_total",
                "Times a worker entered panic mode (too few available hosts) for the cluster.",
            )
            .stats("lb_healthy_panic");
        /// DNS resolutions of the cluster's names that answered, an answer with no address
        /// (NXDOMAIN) included (counted on worker 0, which resolves for the process).
        upstream_dns_resolutions: AtomicU64, counter
            => Metric::counter(
                "sluice_upstream_dns_resolutions_total",
                "DNS resolutions of a strict_dns or logical_dns cluster's names that answered (NXDOMAIN, an answer with no address, included).",
            )
            .stats("upstream_dns.resolutions")
            .stats_for(Shown::WithDns);
        /// DNS resolutions that failed (an error other than "no such name", or a timeout): the
        /// last answer is kept.
        upstream_dns_failures: AtomicU64, counter
            => Metric::counter(
                "sluice_upstream_dns_failures_total",
                "DNS resolutions that failed (the last answer is kept).",
            )
            .stats("upstream_dns.failures")
            .stats_for(Shown::WithDns);
        /// Answers that changed the cluster's host set (hosts added, removed or moved).
        upstream_dns_host_changes: AtomicU64, counter
            => Metric::counter(
                "sluice_upstream_dns_host_changes_total",
                "DNS answers that changed a cluster's hosts.",
            )
            .stats("upstream_dns.host_changes")
            .stats_for(Shown::WithDns);
        /// Addresses left out because the cluster's `max_hosts` slots were taken (counted
        /// when a name's answer changes, not again at every refresh of the same answer).
        upstream_dns_hosts_dropped: AtomicU64, counter
            => Metric::counter(
                "sluice_upstream_dns_hosts_dropped_total",
                "Resolved addresses left out because every one of max_hosts was taken (once per new answer, not per refresh).",
            )
            .stats("upstream_dns.hosts_dropped")
            .stats_for(Shown::WithDns);
    }
    extra {
        /// Per host id (`host_slots` of the cluster), allocated at its first write
        /// ([`HostSlot`]).
        hosts: Box<[HostSlot]>,
        /// A DNS cluster: the names' answers and the host set this worker applied last, for
        /// the admin API (written on a change only; the data path never reads it).
        dns: std::sync::Mutex<Option<std::sync::Arc<crate::dns::DnsView>>>,
        /// This cluster's HTTP upstream try times (see [`WorkerStats::upstream_rq_time`]).
        upstream_rq_time: Histogram,
    }
    snapshot_extra {
        /// Per host.
        hosts: Vec<HostSnapshot>,
        /// See [`ClusterStats::upstream_rq_time`].
        upstream_rq_time: HistogramSnapshot,
    }
}

counters! {
    /// Bolt counters of one worker (copied from its `BoltProxy` after each batch of input).
    #[repr(align(128))]
    pub struct BoltCounters => BoltSnapshot, exports BOLT_METRICS {
        /// Requests forwarded upstream.
        requests: AtomicU64, counter
            => Metric::counter("sluice_bolt_requests_total", "Bolt requests forwarded upstream.")
                .stats("bolt.requests");
        /// Oneway requests forwarded.
        oneway: AtomicU64, counter
            => Metric::counter("sluice_bolt_oneway_total", "Bolt oneway requests forwarded.")
                .stats("bolt.oneway");
        /// Heartbeats answered by the proxy (from either side).
        heartbeats: AtomicU64, counter
            => Metric::counter("sluice_bolt_heartbeats_total", "Bolt heartbeats answered by the proxy.")
                .stats("bolt.heartbeats");
        /// Upstream responses forwarded downstream.
        responses: AtomicU64, counter
            => Metric::counter("sluice_bolt_responses_total", "Bolt responses forwarded downstream.")
                .stats("bolt.responses");
        /// Upstream responses dropped (late, orphaned, unknown id).
        responses_dropped: AtomicU64, counter
            => Metric::counter(
                "sluice_bolt_responses_dropped_total",
                "Bolt responses dropped (late, orphaned, unknown id).",
            )
            .stats("bolt.responses_dropped");
        /// Status 6 answers: no route.
        no_route: AtomicU64, counter
            => Metric::counter("sluice_bolt_no_route_total", "Bolt requests answered status 6: no route.")
                .stats("bolt.no_route");
        /// Status 6 answers: no available host.
        no_host: AtomicU64, counter
            => Metric::counter(
                "sluice_bolt_no_host_total",
                "Bolt requests answered status 6: no available host.",
            )
            .stats("bolt.no_host");
        /// Status 6 answers: routed to an `original_dst` cluster on a connection that was not
        /// captured (no original destination).
        no_original_dst: AtomicU64, counter
            => Metric::counter(
                "sluice_bolt_no_original_dst_total",
                "Bolt requests answered status 6: an original_dst cluster, on a connection with no original destination.",
            )
            .stats("bolt.no_original_dst");
        /// Connections to original destinations closed idle (or to make room for a new one).
        destinations_closed: AtomicU64, counter
            => Metric::counter(
                "sluice_bolt_destinations_closed_total",
                "Bolt connections to original destinations closed idle or evicted.",
            )
            .stats("bolt.destinations_closed");
        /// Status 4 answers: circuit breaker overflow.
        overflow: AtomicU64, counter
            => Metric::counter(
                "sluice_bolt_overflow_total",
                "Bolt requests answered status 4: circuit breaker overflow.",
            )
            .stats("bolt.overflow");
        /// Status 7 answers: timeout.
        timeouts: AtomicU64, counter
            => Metric::counter("sluice_bolt_timeouts_total", "Bolt requests answered status 7: timeout.")
                .stats("bolt.timeouts");
        /// Downstream codec errors (status 9 when the id was readable; the connection closes).
        codec_errors: AtomicU64, counter
            => Metric::counter(
                "sluice_bolt_codec_errors_total",
                "Bolt downstream codec errors (connection closed).",
            )
            .stats("bolt.codec_errors");
        /// Status 16 answers: upstream connection lost with the request in flight.
        upstream_lost: AtomicU64, counter
            => Metric::counter(
                "sluice_bolt_upstream_lost_total",
                "Bolt requests answered status 16: upstream connection lost.",
            )
            .stats("bolt.upstream_lost");
        /// Connections on `protocol: auto` listeners that were neither HTTP/1.1 nor Bolt (closed).
        sniff_failed: AtomicU64, counter
            => Metric::counter(
                "sluice_bolt_sniff_failed_total",
                "Connections on protocol: auto listeners that were neither HTTP/1.1 nor Bolt.",
            )
            .stats("bolt.sniff_failed");
        /// Downstream connections closed because their partial frame would have gone beyond
        /// `limits.bolt_partial_frame_bytes`.
        partial_frame_overflow: AtomicU64, counter
            => Metric::counter(
                "sluice_bolt_partial_frame_overflow_total",
                "Bolt connections closed: their partial frame exceeded limits.bolt_partial_frame_bytes.",
            )
            .stats("bolt.partial_frame_overflow");
        /// Downstream connections closed by the listener's `frame_timeout` (a first frame, or a
        /// frame started, not complete in time) or `idle_timeout`.
        downstream_timeouts: AtomicU64, counter
            => Metric::counter(
                "sluice_bolt_downstream_timeouts_total",
                "Bolt downstream connections closed by frame_timeout or idle_timeout.",
            )
            .stats("bolt.downstream_timeouts");
    }
}

impl BoltCounters {
    /// `(name, value)` of every counter, for the admin API.
    #[must_use]
    pub fn values(&self) -> Vec<(&'static str, u64)> {
        let s = self.counters();
        BOLT_METRICS
            .iter()
            .map(|e| (e.field, e.value(&s, 0)))
            .collect()
    }
}

counters! {
    /// Counters of one worker.
    #[repr(align(128))]
    pub struct WorkerStats => StatsSnapshot, exports WORKER_METRICS {
        /// Downstream connections accepted.
        downstream_cx_total: AtomicU64, counter;
        /// Downstream connections closed.
        downstream_cx_closed: AtomicU64, closed;
        /// Downstream connections refused by a connection limit (not in `downstream_cx_total`).
        downstream_cx_overflow: AtomicU64, counter
            => Metric::stats_counter(
                "server.downstream_cx_overflow",
                "Downstream connections refused by a connection limit, all listeners.",
            );
        /// See [`ListenerStats::downstream_cx_first_byte_timeout`].
        downstream_cx_first_byte_timeout: AtomicU64, counter
            => Metric::stats_counter(
                "server.downstream_cx_first_byte_timeout",
                "HTTP connections closed: no byte within request_headers_timeout of the accept (or of the filter chain's pick), all listeners.",
            );
        /// Accept calls that failed.
        accept_errors: AtomicU64, counter
            => Metric::counter("sluice_accept_errors_total", "Accept calls that failed.")
                .stats("server.accept_errors");
        /// Upstream connect attempts.
        upstream_cx_attempts: AtomicU64, counter;
        /// Upstream connect attempts that failed (refused or errored).
        upstream_cx_connect_fail: AtomicU64, counter;
        /// Upstream connect attempts that timed out.
        upstream_cx_connect_timeout: AtomicU64, counter;
        /// `tcp_proxy` sessions relayed by `splice(2)` (plaintext, on real sockets, `splice`
        /// on), whether or not each chunk found a pipe.
        tcp_relay_spliced: AtomicU64, counter
            => Metric::counter(
                "sluice_tcp_relay_spliced_total",
                "tcp_proxy sessions relayed by splice(2) for their bulk bytes, socket to pipe to socket in the kernel (small messages are copied; a bulk chunk that finds no pipe too: sluice_tcp_relay_chunks_copied_total).",
            )
            .stats("server.tcp_relay_spliced");
        /// `tcp_proxy` sessions relayed by copying (TLS on either side, `splice: false`).
        tcp_relay_copied: AtomicU64, counter
            => Metric::counter(
                "sluice_tcp_relay_copied_total",
                "tcp_proxy sessions relayed by reading and writing (TLS on either side, or splice: false).",
            )
            .stats("server.tcp_relay_copied");
        /// Bulk chunks of spliced sessions copied because no pipe was to be had.
        tcp_relay_chunks_copied: AtomicU64, counter
            => Metric::counter(
                "sluice_tcp_relay_chunks_copied_total",
                "Bulk reads of spliced tcp_proxy sessions relayed by copying because no pipe was to be had (the process's pipe budget spent, or no pipe could be made); small messages, copied by choice, are not counted.",
            )
            .stats("server.tcp_relay_chunks_copied");
        /// Bytes read from downstream connections.
        bytes_from_downstream: AtomicU64, counter;
        /// Bytes read from upstream connections.
        bytes_from_upstream: AtomicU64, counter;
        /// TCP sessions ended, by [`CloseReason`] (indexed by `CloseReason::index`).
        tcp_session_closed: [AtomicU64; CloseReason::ALL.len()], counter;
        /// HTTP requests received (complete heads).
        http_requests: AtomicU64, counter;
        /// HTTP responses sent downstream by status class (1xx..5xx).
        http_responses_by_class: [AtomicU64; 5], counter;
        /// HTTP answers the proxy generated itself (errors, limits, no route), not direct responses.
        http_local_replies: AtomicU64, counter;
        /// HTTP upstream retries.
        http_retries: AtomicU64, counter;
        /// HTTP tries that hit a per-try or route timeout.
        http_upstream_timeouts: AtomicU64, counter;
        /// Requests whose trace headers (`traceparent`, B3) were present but malformed, and so
        /// replaced by a new trace (with `tracing`).
        tracing_malformed_headers: AtomicU64, counter
            => Metric::counter(
                "sluice_tracing_malformed_headers_total",
                "Requests whose trace headers were malformed and replaced by a new trace.",
            )
            .stats("tracing.malformed_headers");
        /// Spans sampled (recorded for export, or only propagated when no `otlp` is set).
        tracing_spans_sampled: AtomicU64, counter
            => Metric::counter(
                "sluice_tracing_spans_sampled_total",
                "Request spans sampled.",
            )
            .stats("tracing.spans_sampled");
        /// Spans the OTLP collector accepted (a 2xx answer to their export request).
        tracing_spans_exported: AtomicU64, counter
            => Metric::counter(
                "sluice_tracing_spans_exported_total",
                "Spans the OTLP collector accepted.",
            )
            .stats("tracing.spans_exported");
        /// Sampled spans dropped because the worker's export queue was full.
        tracing_spans_dropped_queue_full: AtomicU64, counter
            => Metric::counter(
                "sluice_tracing_spans_dropped_queue_full_total",
                "Sampled spans dropped: the worker's export queue (max_queue) was full.",
            )
            .stats("tracing.spans_dropped_queue_full");
        /// Spans lost with an export request that failed (no host, connect, timeout, non-2xx).
        tracing_spans_export_failed: AtomicU64, counter
            => Metric::counter(
                "sluice_tracing_spans_export_failed_total",
                "Spans lost with an OTLP export request that failed.",
            )
            .stats("tracing.spans_export_failed");
        /// HTTP/1.1 keep-alive connections that parked: no request within
        /// `IDLE_PARK_GRACE` (1 s) of their last response, they dropped their request state
        /// (once per wait; the next request builds it again).
        http1_cx_parked: AtomicU64, counter
            => Metric::counter(
                "sluice_http1_downstream_cx_parked_total",
                "Idle HTTP/1.1 keep-alive connections that dropped their request state (no request within 1 s of the last response).",
            )
            .stats("http1.downstream_cx_parked");
        /// HTTP/2 downstream connections (h2c) that completed the HTTP/2 handshake.
        http2_downstream_cx_total: AtomicU64, counter
            => Metric::counter(
                "sluice_http2_downstream_cx_total",
                "HTTP/2 downstream connections (h2c) that completed the handshake.",
            )
            .stats("http2.downstream_cx_total");
        /// HTTP/2 downstream connections open now.
        http2_downstream_cx_active: AtomicU64, gauge
            => Metric::gauge(
                "sluice_http2_downstream_cx_active",
                "HTTP/2 downstream connections open now.",
            )
            .stats("http2.downstream_cx_active");
        /// HTTP/2 request streams accepted from clients.
        http2_streams_total: AtomicU64, counter
            => Metric::counter(
                "sluice_http2_streams_total",
                "HTTP/2 request streams accepted from clients.",
            )
            .stats("http2.streams_total");
        /// HTTP/2 request streams being served now.
        http2_streams_active: AtomicU64, gauge
            => Metric::gauge(
                "sluice_http2_streams_active",
                "HTTP/2 request streams being served now.",
            )
            .stats("http2.streams_active");
        /// HTTP/2 streams the client reset (RST_STREAM) before their response was complete.
        http2_rx_reset: AtomicU64, counter
            => Metric::counter(
                "sluice_http2_rx_reset_total",
                "HTTP/2 streams the client reset before their response was complete.",
            )
            .stats("http2.rx_reset");
        /// HTTP/2 client streams reset by the client, by error code ([`RESET_CODES`]; the
        /// total is `http2_rx_reset`).
        http2_rx_reset_code: [AtomicU64; RESET_CODES.len()], counter
            => Metric::counter(
                "sluice_http2_rx_reset_by_code_total",
                "HTTP/2 streams the client reset before their response was complete, by RST_STREAM error code.",
            )
            .by("code", reset_code_label)
            .stats("http2.rx_reset_code.");
        /// HTTP/2 client streams the proxy reset (RST_STREAM INTERNAL_ERROR: the upstream's
        /// answer broke off after its head went out, and the request is not gRPC — a gRPC
        /// client gets UNAVAILABLE trailers instead).
        http2_tx_reset: AtomicU64, counter
            => Metric::counter(
                "sluice_http2_tx_reset_total",
                "HTTP/2 client streams the proxy reset (RST_STREAM INTERNAL_ERROR: the upstream's answer broke off mid-way).",
            )
            .stats("http2.tx_reset");
        /// Client connections the proxy sent GOAWAY on (a graceful shutdown, whatever number of GOAWAY frames it takes), by [`GoawayCause`]; GOAWAYs the `h2` crate sends on its own (protocol errors, its rapid-reset guard) are not counted.
        http2_goaway_sent: [AtomicU64; GoawayCause::ALL.len()], counter
            => Metric::counter(
                "sluice_http2_goaway_sent_total",
                "HTTP/2 client connections the proxy sent GOAWAY on, by cause (drain, idle_timeout, premature_resets, keepalive_timeout); the h2 crate's own GOAWAYs (protocol errors) are not counted.",
            )
            .by("reason", goaway_cause)
            .stats("http2.goaway_sent.");
        /// Client connections closed because a keepalive PING went unanswered within its
        /// timeout (the listener's `http2.connection_keepalive`).
        http2_downstream_keepalive_timeout: AtomicU64, counter
            => Metric::counter(
                "sluice_http2_downstream_keepalive_timeout_total",
                "HTTP/2 client connections closed because a keepalive PING went unanswered within its timeout.",
            )
            .stats("http2.downstream_keepalive_timeout");
        /// Keepalive PING timeouts extended because the client's TCP acknowledged bytes queued
        /// ahead of the PING (a slow reader taking in a response the PING waits behind).
        http2_downstream_keepalive_extended_by_acks: AtomicU64, counter
            => Metric::counter(
                "sluice_http2_downstream_keepalive_extended_by_acks_total",
                "HTTP/2 keepalive PING timeouts extended because the client's TCP acknowledged bytes queued ahead of the PING.",
            )
            .stats("http2.downstream_keepalive_extended_by_acks");
        /// Client connections whose client sent GOAWAY (counted once per connection, whatever
        /// its error code and however many it sends; seen in the inbound bytes by
        /// `sluice_core::http2::goaway`, since `h2` reports no `NO_ERROR` GOAWAY to a server).
        http2_goaway_received: AtomicU64, counter
            => Metric::counter(
                "sluice_http2_goaway_received_total",
                "HTTP/2 client connections whose client sent GOAWAY (once per connection, any error code).",
            )
            .stats("http2.goaway_received");
        /// HTTP/2 connections closed (GOAWAY ENHANCE_YOUR_CALM) because their client reset too
        /// many streams prematurely (sluice_core::http2::premature).
        http2_premature_reset_closed: AtomicU64, counter
            => Metric::counter(
                "sluice_http2_premature_reset_closed_total",
                "HTTP/2 connections closed (GOAWAY ENHANCE_YOUR_CALM) because their client reset too many streams within 1 s of their start.",
            )
            .stats("http2.premature_reset_closed");
        /// HTTP/2 upstream connections opened (`protocol: http2` and `downstream` clusters).
        http2_upstream_cx_total: AtomicU64, counter
            => Metric::counter(
                "sluice_http2_upstream_cx_total",
                "HTTP/2 upstream connections opened (protocol: http2 clusters, original_dst ones included; protocol: downstream clusters for HTTP/2 clients).",
            )
            .stats("http2.upstream_cx_total");
        /// HTTP/2 upstream connections open now.
        http2_upstream_cx_active: AtomicU64, gauge
            => Metric::gauge(
                "sluice_http2_upstream_cx_active",
                "HTTP/2 upstream connections open now.",
            )
            .stats("http2.upstream_cx_active");
        /// HTTP/2 request streams opened to upstreams.
        http2_upstream_streams_total: AtomicU64, counter
            => Metric::counter(
                "sluice_http2_upstream_streams_total",
                "HTTP/2 request streams opened to upstreams.",
            )
            .stats("http2.upstream_streams_total");
        /// HTTP/2 upstream streams open now.
        http2_upstream_streams_active: AtomicU64, gauge
            => Metric::gauge(
                "sluice_http2_upstream_streams_active",
                "HTTP/2 request streams open to upstreams now.",
            )
            .stats("http2.upstream_streams_active");
        /// HTTP/2 upstream streams put on a connection that already had as many open as the
        /// peer's SETTINGS_MAX_CONCURRENT_STREAMS (`h2` holds them until one ends). The pool opens
        /// another connection instead, so this stays 0 unless a peer lowers its limit.
        http2_upstream_streams_queued: AtomicU64, counter
            => Metric::counter(
                "sluice_http2_upstream_streams_queued_total",
                "HTTP/2 upstream streams put on a connection already at the peer's SETTINGS_MAX_CONCURRENT_STREAMS (held until a stream ends; 0 unless a peer lowers its limit).",
            )
            .stats("http2.upstream_streams_queued");
        /// HTTP/2 upstream streams the upstream reset (RST_STREAM) or cut by its connection ending.
        http2_upstream_rx_reset: AtomicU64, counter
            => Metric::counter(
                "sluice_http2_upstream_rx_reset_total",
                "HTTP/2 upstream streams reset by the upstream or cut by its connection ending.",
            )
            .stats("http2.upstream_rx_reset");
        /// The same by error code ([`RESET_CODES`]; `connection` for a stream cut by its
        /// connection ending).
        http2_upstream_rx_reset_code: [AtomicU64; RESET_CODES.len()], counter
            => Metric::counter(
                "sluice_http2_upstream_rx_reset_by_code_total",
                "HTTP/2 upstream streams reset by the upstream, by RST_STREAM error code (connection: cut by the connection ending).",
            )
            .by("code", reset_code_label)
            .stats("http2.upstream_rx_reset_code.");
        /// HTTP/2 upstream streams the proxy cancelled (RST_STREAM CANCEL: the client went away).
        http2_upstream_tx_reset: AtomicU64, counter
            => Metric::counter(
                "sluice_http2_upstream_tx_reset_total",
                "HTTP/2 upstream streams the proxy cancelled (RST_STREAM CANCEL) because the client went away.",
            )
            .stats("http2.upstream_tx_reset");
        /// HTTP/2 upstream streams refused unprocessed (REFUSED_STREAM, or above a GOAWAY's
        /// last stream id), each sent again when it could be.
        http2_upstream_refused: AtomicU64, counter
            => Metric::counter(
                "sluice_http2_upstream_refused_total",
                "HTTP/2 upstream streams refused unprocessed (REFUSED_STREAM or above a GOAWAY's last stream id).",
            )
            .stats("http2.upstream_refused");
        /// HTTP/2 upstream connections closed because a keepalive PING went unanswered
        /// (`http2.connection_keepalive`).
        http2_upstream_keepalive_timeout: AtomicU64, counter
            => Metric::counter(
                "sluice_http2_upstream_keepalive_timeout_total",
                "HTTP/2 upstream connections closed because a keepalive PING went unanswered within its timeout.",
            )
            .stats("http2.upstream_keepalive_timeout");
        /// GOAWAY frames received from HTTP/2 upstreams (seen by a stream or a pool check).
        http2_upstream_goaway_received: AtomicU64, counter
            => Metric::counter(
                "sluice_http2_upstream_goaway_received_total",
                "HTTP/2 upstream connections found going away (GOAWAY received).",
            )
            .stats("http2.upstream_goaway_received");
    }
    extra {
        /// Per listener, in config order (empty when made with `Default`).
        listeners: Box<[ListenerStats]>,
        /// Per cluster, in config order (empty when made with `Default`).
        clusters: Box<[ClusterStats]>,
        /// Downstream request time: request head received to response completely sent (HTTP).
        downstream_rq_time: Histogram,
        /// Upstream request time: upstream try started to response completely received (HTTP).
        upstream_rq_time: Histogram,
        /// Bolt proxy counters.
        bolt: BoltCounters,
    }
}

/// A histogram family of a [`DetailedSnapshot`].
#[derive(Clone, Copy, Debug)]
pub struct HistogramExport {
    /// The Prometheus family (`_bucket`, `_sum`, `_count`).
    pub name: &'static str,
    /// The `# HELP` text.
    pub help: &'static str,
    /// The `/stats` prefix of `.count`, `.sum_us` and `.p50_us_le`, `.p90_us_le`, `.p99_us_le`.
    pub stats_key: &'static str,
    /// The histogram it reads.
    pub read: fn(&DetailedSnapshot) -> &HistogramSnapshot,
}

/// The request-time histograms, in export order.
pub const HISTOGRAM_METRICS: [HistogramExport; 2] = [
    HistogramExport {
        name: "sluice_downstream_request_duration_seconds",
        help: "HTTP request time seen downstream: request head received to response sent.",
        stats_key: "http.downstream_rq_time",
        read: |s| &s.downstream_rq_time,
    },
    HistogramExport {
        name: "sluice_upstream_request_duration_seconds",
        help: "HTTP upstream try time: connect started to response received.",
        stats_key: "http.upstream_rq_time",
        read: |s| &s.upstream_rq_time,
    },
];

/// The request-time histograms labelled by listener (HTTP listeners) and by cluster, in
/// Prometheus as one series set per element; in `/stats` under the element's prefix
/// (`listener.NAME.http.downstream_rq_time.*`, `cluster.NAME.upstream_rq_time.*`).
pub const LISTENER_HISTOGRAM: (&str, &str, &str) = (
    "sluice_listener_request_duration_seconds",
    "HTTP request time seen downstream, by listener: request head received to response sent.",
    "http.downstream_rq_time",
);

/// See [`LISTENER_HISTOGRAM`]: `(Prometheus family, help, /stats key)`.
pub const CLUSTER_HISTOGRAM: (&str, &str, &str) = (
    "sluice_cluster_upstream_request_duration_seconds",
    "HTTP upstream try time, by cluster: connect started to response received.",
    "upstream_rq_time",
);

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

/// One of the upstream pool gauges kept per host and per cluster (see
/// [`WorkerStats::pool_gauge_add`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PoolGauge {
    /// HTTP/1.1 connections idle in the keep-alive pool.
    Http1Idle,
    /// HTTP/2 connections open.
    Http2Connections,
    /// Streams open on HTTP/2 connections.
    Http2Streams,
}

impl WorkerStats {
    /// Adds `delta` to a pool gauge of cluster `cluster` and, unless `host` is `None` (an
    /// `original_dst` destination, which has no host slot), of its host `host`: two relaxed
    /// load-and-stores on this worker's own lines. Counters made with `Default` have no
    /// cluster slots: nothing is counted.
    #[inline]
    pub fn pool_gauge_add(
        &self,
        cluster: usize,
        host: Option<usize>,
        gauge: PoolGauge,
        delta: i64,
    ) {
        let Some(c) = self.clusters.get(cluster) else {
            return;
        };
        let add = |g: &AtomicU64| g.store(g.load(Relaxed).wrapping_add_signed(delta), Relaxed);
        add(match gauge {
            PoolGauge::Http1Idle => &c.upstream_cx_http1_idle,
            PoolGauge::Http2Connections => &c.upstream_cx_http2_active,
            PoolGauge::Http2Streams => &c.upstream_rq_http2_streams_active,
        });
        if let Some(h) = host.and_then(|h| c.hosts.get(h)).map(HostSlot::get) {
            add(match gauge {
                PoolGauge::Http1Idle => &h.http1_cx_idle,
                PoolGauge::Http2Connections => &h.http2_cx_active,
                PoolGauge::Http2Streams => &h.http2_streams_active,
            });
        }
    }
}

/// One host id's counters in one worker, allocated when first written: an id that never held
/// a host (a DNS cluster's `max_hosts` slots, the spare ids of a cluster whose hosts change in
/// place) costs 16 bytes, not a [`HostStats`] (128). Writers take it with
/// [`WorkerStats::host`] (allocating it on first use, on the worker that owns it); readers
/// (snapshots, transfers) see an unallocated one as zeros.
#[derive(Debug, Default)]
pub struct HostSlot(std::sync::OnceLock<Box<HostStats>>);

impl HostSlot {
    /// The counters, allocated now if they were not.
    #[inline]
    pub fn get(&self) -> &HostStats {
        self.0.get_or_init(Box::default)
    }

    /// The counters, if anything was ever written to them.
    #[inline]
    #[must_use]
    pub fn if_used(&self) -> Option<&HostStats> {
        self.0.get().map(|b| &**b)
    }

    /// A copy of the counters (zeros when never written).
    #[must_use]
    pub fn counters(&self) -> HostSnapshot {
        self.if_used().map(HostStats::counters).unwrap_or_default()
    }
}

impl HostStats {
    /// Zeroes the counters (not the gauges: connections and requests of the id's old host
    /// still end here): a new host took the id ([`crate::dns`]). Only the worker that owns
    /// these counters may call it.
    pub fn reset_counters(&self) {
        for c in [&self.rq_total, &self.cx_total, &self.cx_connect_fail] {
            c.store(0, Relaxed);
        }
    }
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
                    hosts: (0..c.host_slots()).map(|_| HostSlot::default()).collect(),
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
                let oh = old.clusters.get(oi).and_then(|o| {
                    o.hosts
                        .get(old_host_index(o, &old_config.clusters[oi], cc, hc)?)?
                        .if_used()
                });
                if let Some(oh) = oh {
                    h.get().healthy.store(oh.healthy.load(Relaxed), Relaxed);
                }
            }
        }
    }

    /// A plain copy of these counters, same shape (to measure what a draining generation adds
    /// after a reload: [`WorkerStats::transfer`] with it as the base).
    #[must_use]
    pub fn frozen(&self, config: &Config) -> WorkerStats {
        let copy = WorkerStats::new(config);
        copy.transfer_shaped(self, &WorkerStats::new(config), config, config, true);
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
        self.transfer_shaped(old, base, old_config, config, false);
    }

    /// [`WorkerStats::transfer`]; with `hosts_by_index`, per-host counters go index to index
    /// (a same-shaped copy: [`WorkerStats::frozen`]) rather than by address — after endpoints
    /// updated in place a host's counters live at its slot, which address matching against
    /// the generation's config would miss (a new host in a freed slot copied as zero, then its
    /// whole count added again when the generation's drain ended).
    fn transfer_shaped(
        &self,
        old: &WorkerStats,
        base: &WorkerStats,
        old_config: &Config,
        config: &Config,
        hosts_by_index: bool,
    ) {
        self.transfer_counters(old, base);
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
            h.transfer(o, b);
        }
        self.bolt.transfer_counters(&old.bolt, &base.bolt);
        for (l, lc) in self.listeners.iter().zip(&config.listeners) {
            let Some(oi) = old_config.listeners.iter().position(|o| o.name == lc.name) else {
                continue;
            };
            let (Some(o), Some(z)) = (old.listeners.get(oi), base.listeners.get(oi)) else {
                continue;
            };
            l.transfer_counters(o, z);
            l.downstream_rq_time
                .transfer(&o.downstream_rq_time, &z.downstream_rq_time);
        }
        for (cs, cc) in self.clusters.iter().zip(&config.clusters) {
            let Some(oi) = old_config.clusters.iter().position(|o| o.name == cc.name) else {
                continue;
            };
            let (Some(o), Some(z)) = (old.clusters.get(oi), base.clusters.get(oi)) else {
                continue;
            };
            cs.transfer_counters(o, z);
            cs.upstream_rq_time
                .transfer(&o.upstream_rq_time, &z.upstream_rq_time);
            // A DNS cluster whose names did not change keeps its slots across the reload (the
            // answers carry over): its hosts' counters go with the slot — unless its transports
            // changed (`tls`, `transport_socket_matches`): then every slot holds another host
            // (`SharedDns::inherit`), whose counters start from zero.
            let oc = &old_config.clusters[oi];
            if cc.dns.is_some()
                && oc.dns == cc.dns
                && !hosts_by_index
                && (oc.tls != cc.tls || oc.transport_socket_matches != cc.transport_socket_matches)
            {
                continue;
            }
            if hosts_by_index || (cc.dns.is_some() && oc.dns == cc.dns) {
                let zero = HostStats::default();
                for ((h, oh), zh) in cs.hosts.iter().zip(&*o.hosts).zip(&*z.hosts) {
                    if let Some(oh) = oh.if_used() {
                        h.get().transfer_counters(oh, zh.if_used().unwrap_or(&zero));
                    }
                }
                continue;
            }
            for (h, hc) in cs.hosts.iter().zip(&cc.hosts) {
                let Some(ohi) = old_host_index(o, &old_config.clusters[oi], cc, hc) else {
                    continue;
                };
                let (Some(oh), Some(zh)) = (o.hosts.get(ohi), z.hosts.get(ohi)) else {
                    continue;
                };
                let Some(oh) = oh.if_used() else { continue };
                let zero = HostStats::default();
                h.get().transfer_counters(oh, zh.if_used().unwrap_or(&zero));
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

    /// One host's counters, to write to (allocated at the first call: [`HostSlot`]); `None`
    /// for an id the cluster does not have.
    #[inline]
    #[must_use]
    pub fn host(&self, cluster: usize, host: usize) -> Option<&HostStats> {
        self.clusters
            .get(cluster)
            .and_then(|c| c.hosts.get(host))
            .map(HostSlot::get)
    }

    /// One host's counters if anything was ever written to them (allocates nothing).
    #[must_use]
    pub fn host_if_used(&self, cluster: usize, host: usize) -> Option<&HostStats> {
        self.clusters
            .get(cluster)
            .and_then(|c| c.hosts.get(host))
            .and_then(HostSlot::if_used)
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
                    downstream_rq_time: l.downstream_rq_time.snapshot(),
                    ..l.counters()
                })
                .collect(),
            clusters: self
                .clusters
                .iter()
                .map(|c| ClusterSnapshot {
                    hosts: c.hosts.iter().map(HostSlot::counters).collect(),
                    upstream_rq_time: c.upstream_rq_time.snapshot(),
                    ..c.counters()
                })
                .collect(),
            downstream_rq_time: self.downstream_rq_time.snapshot(),
            upstream_rq_time: self.upstream_rq_time.snapshot(),
            bolt: self.bolt.values(),
        }
    }

    /// A copy of the worker-wide counters now.
    #[must_use]
    pub fn snapshot(&self) -> StatsSnapshot {
        self.counters()
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
        self.add_counters(o);
    }
}

impl ListenerSnapshot {
    /// Connections open now.
    #[must_use]
    pub fn downstream_cx_active(&self) -> u64 {
        self.downstream_cx_total
            .saturating_sub(self.downstream_cx_closed)
    }
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

    /// Bytes received from and sent to downstream, all listeners together (TCP proxy, echo,
    /// HTTP and Bolt alike): the sums of `listener.*.downstream_bytes_received` / `_sent`.
    #[must_use]
    pub fn downstream_bytes(&self) -> (u64, u64) {
        self.listeners.iter().fold((0, 0), |(received, sent), l| {
            (
                received + l.downstream_bytes_received,
                sent + l.downstream_bytes_sent,
            )
        })
    }

    /// Adds another worker's counters (slots missing on either side are kept / added).
    pub fn add(&mut self, o: &DetailedSnapshot) {
        self.worker.add(&o.worker);
        if self.listeners.len() < o.listeners.len() {
            self.listeners
                .resize(o.listeners.len(), ListenerSnapshot::default());
        }
        for (a, b) in self.listeners.iter_mut().zip(&o.listeners) {
            a.add_counters(b);
            a.downstream_rq_time.add(&b.downstream_rq_time);
        }
        if self.clusters.len() < o.clusters.len() {
            self.clusters
                .resize(o.clusters.len(), ClusterSnapshot::default());
        }
        for (a, b) in self.clusters.iter_mut().zip(&o.clusters) {
            a.add_counters(b);
            a.upstream_rq_time.add(&b.upstream_rq_time);
            if a.hosts.len() < b.hosts.len() {
                a.hosts.resize(b.hosts.len(), HostSnapshot::default());
            }
            for (x, y) in a.hosts.iter_mut().zip(&b.hosts) {
                x.add_counters(y);
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

/// Which host id of a cluster's counters `o` (of a worker whose config of the cluster is
/// `old`) held host `host` of `new` (the cluster in the config reloaded to): the same address
/// and the same pick of `transport_socket_matches` ([`sluice_core::host::SlotHost::key`],
/// compared across the configs with [`ClusterConfig::same_transport`]); its index in the
/// config, or, once the worker applied a view of the cluster's slots (a static cluster whose
/// endpoints were updated in place), its slot.
///
/// [`ClusterConfig::same_transport`]: sluice_core::config::ClusterConfig::same_transport
fn old_host_index(
    o: &ClusterStats,
    old: &sluice_core::config::ClusterConfig,
    new: &sluice_core::config::ClusterConfig,
    host: &sluice_core::config::HostConfig,
) -> Option<usize> {
    let transport = new.host_transport(host);
    let same = |address: std::net::SocketAddr, t| {
        address == host.address && old.same_transport(t, new, transport)
    };
    if old.dns.is_none()
        && let Some(view) = o
            .dns
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .as_ref()
    {
        return view
            .slots
            .iter()
            .position(|s| s.is_some_and(|h| same(h.address, h.transport)));
    }
    old.hosts
        .iter()
        .position(|h| same(h.address, old.host_transport(h)))
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

    /// Issue 13: a host id's counters are allocated at its first write, so the spare ids of a
    /// cluster whose hosts change in place (and a DNS cluster's unused slots) cost a
    /// pointer-sized cell each, and read as zeros; a frozen copy and a transfer by slot move
    /// only the ids that counted.
    #[test]
    fn spare_host_ids_cost_no_counters_until_written() {
        assert_eq!(std::mem::size_of::<HostSlot>(), 16);
        assert!(std::mem::size_of::<HostStats>() >= 128);
        let config = Config::from_yaml(
            "listeners: []\nxds: { cluster: x }\nclusters:\n  - { name: x, hosts: [ { address: 127.0.0.1:9 } ] }\n  \
             - { name: c, hosts: [ { address: 127.0.0.1:2 }, { address: 127.0.0.1:3 } ] }\n",
        )
        .unwrap();
        let stats = WorkerStats::new(&config);
        assert_eq!(stats.clusters[1].hosts.len(), 18);
        assert!((0..18).all(|i| stats.host_if_used(1, i).is_none()));
        bump(&stats.host(1, 5).unwrap().rq_total, 3);
        let used: Vec<usize> = (0..18)
            .filter(|&i| stats.host_if_used(1, i).is_some())
            .collect();
        assert_eq!(used, [5]);
        let snapshot = stats.detailed();
        assert_eq!(snapshot.clusters[1].hosts.len(), 18);
        assert_eq!(snapshot.clusters[1].hosts[5].rq_total, 3);
        assert_eq!(snapshot.clusters[1].hosts[4].rq_total, 0);
        let copy = stats.frozen(&config);
        assert_eq!(
            copy.host_if_used(1, 5).map(|h| h.rq_total.load(Relaxed)),
            Some(3)
        );
        assert!(copy.host_if_used(1, 4).is_none());
        assert!(stats.host(1, 18).is_none(), "no such id");
    }

    /// A switch after endpoints were updated in place (issue 13): a host's counters are found
    /// by its slot (as the worker applied the slots), not by its index in the old config.
    #[test]
    fn a_switch_after_endpoints_in_place_carries_host_counters_by_slot() {
        let yaml = |ports: &[u16]| {
            let hosts: Vec<String> = ports
                .iter()
                .map(|p| format!("{{ address: 127.0.0.1:{p} }}"))
                .collect();
            Config::from_yaml(&format!(
                "listeners: [ {{ name: l, address: 127.0.0.1:1, tcp_proxy: {{ cluster: c }} }} ]\n\
                 clusters: [ {{ name: c, hosts: [{}] }} ]",
                hosts.join(", ")
            ))
            .unwrap()
        };
        let addr = |p: u16| std::net::SocketAddr::from(([127, 0, 0, 1], p));
        let generation = yaml(&[2, 3]);
        let old = WorkerStats::new(&generation);
        bump(&old.host(0, 0).unwrap().rq_total, 5);
        // 3 replaced by 4 in place: 4 takes id 1, as the worker's view says; 4 serves 7.
        *old.cluster(0).unwrap().dns.lock().unwrap() =
            Some(std::sync::Arc::new(crate::dns::DnsView {
                slots: vec![
                    Some(sluice_core::host::SlotHost::plain(addr(2), 1)),
                    Some(sluice_core::host::SlotHost::plain(addr(4), 1)),
                ],
                epochs: vec![0, 1],
                answers: Vec::new(),
                failing: Vec::new(),
            }));
        bump(&old.host(0, 1).unwrap().rq_total, 7);
        // The switch, to [4, 2, 5]: 4's and 2's counters follow them.
        let next = yaml(&[4, 2, 5]);
        let new = WorkerStats::new(&next);
        new.carry_over(&old, &generation, &next);
        let rq = |i| new.host(0, i).unwrap().rq_total.load(Relaxed);
        assert_eq!((rq(0), rq(1), rq(2)), (7, 5, 0));
        // The old generation drains: what it counts meanwhile (4: 3 more, 2: 2 more) is added
        // once it ends, against the copy taken at the switch — by slot, not by the generation
        // config's addresses (4 is not in it: its 7 were counted twice).
        let at_switch = old.frozen(&generation);
        bump(&old.host(0, 1).unwrap().rq_total, 3);
        bump(&old.host(0, 0).unwrap().rq_total, 2);
        new.transfer(&old, &at_switch, &generation, &next);
        assert_eq!((rq(0), rq(1), rq(2)), (10, 7, 0));
    }

    /// Issue 13 (review, LOW): across a reload a host's counters are found by its address and
    /// its pick of `transport_socket_matches` (by entry name when the entries changed: here
    /// reordered), not by its address alone: of two slots of one address, the one of the
    /// host's transport.
    #[test]
    fn a_reload_carries_host_counters_by_address_and_transport() {
        let yaml = |hosts: &str, entries: &str| {
            Config::from_yaml(&format!(
                "listeners: [ {{ name: l, address: 127.0.0.1:1, tcp_proxy: {{ cluster: c }} }} ]\n\
                 clusters: [ {{ name: c, hosts: [ {hosts} ], transport_socket_matches: {entries} }} ]"
            ))
            .unwrap()
        };
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], 2));
        let generation = yaml(
            "{ address: 127.0.0.1:2, transport_socket_match: { tlsMode: istio } }, \
             { address: 127.0.0.1:3 }",
            "[ { name: mtls, match: { tlsMode: istio } }, { name: plain } ]",
        );
        let old = WorkerStats::new(&generation);
        // The worker's slots (updated in place): 127.0.0.1:2 over mTLS (id 0, 5 requests),
        // and over plaintext (id 1, 7 requests).
        let slot = |transport| {
            Some(sluice_core::host::SlotHost {
                address: addr,
                weight: 1,
                transport,
                priority: 0,
                health: Default::default(),
            })
        };
        *old.cluster(0).unwrap().dns.lock().unwrap() =
            Some(std::sync::Arc::new(crate::dns::DnsView {
                slots: vec![slot(Some(0)), slot(Some(1))],
                epochs: vec![0, 1],
                answers: Vec::new(),
                failing: Vec::new(),
            }));
        bump(&old.host(0, 0).unwrap().rq_total, 5);
        bump(&old.host(0, 1).unwrap().rq_total, 7);
        // Reloaded with the entries reordered: the unlabelled host picks `plain` (index 0
        // now, 1 before): the plaintext slot's counters are its own.
        let next = yaml(
            "{ address: 127.0.0.1:2 }",
            "[ { name: plain }, { name: mtls, match: { tlsMode: istio } } ]",
        );
        assert_eq!(
            next.clusters[0].host_transport(&next.clusters[0].hosts[0]),
            Some(0)
        );
        let new = WorkerStats::new(&next);
        new.carry_over(&old, &generation, &next);
        assert_eq!(new.host(0, 0).unwrap().rq_total.load(Relaxed), 7);
    }
}
