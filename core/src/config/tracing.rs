//! `tracing`: trace-context propagation on every HTTP listener and, optionally, span export
//! over OTLP. Types and defaults only: the request path decides each hop's span with
//! [`crate::l7::trace::decide_hop`]; the runtime exports.

use std::time::Duration;

use serde::Serialize;

use super::ser_duration;

/// Default [`OtlpConfig::service_name`].
pub const DEFAULT_SERVICE_NAME: &str = "sluice";
/// Default [`OtlpConfig::path`]: OTLP/HTTP's traces path.
pub const DEFAULT_OTLP_PATH: &str = "/v1/traces";
/// Default [`OtlpConfig::export_interval`] (the OpenTelemetry SDK's batch span processor's
/// schedule delay).
pub const DEFAULT_EXPORT_INTERVAL: Duration = Duration::from_secs(5);
/// Default [`OtlpConfig::max_batch`] (the SDK's `maxExportBatchSize`).
pub const DEFAULT_MAX_BATCH: usize = 512;
/// Default [`OtlpConfig::max_queue`] (the SDK's `maxQueueSize`), per worker.
pub const DEFAULT_MAX_QUEUE: usize = 2048;
/// Default [`OtlpConfig::timeout`] for one export request.
pub const DEFAULT_EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// `tracing`: when present, every request an HTTP listener forwards continues the trace its
/// headers carry (W3C `traceparent`, else B3) with a new span of the proxy's, or starts one.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TracingConfig {
    /// Percent (0–100) of the traces that start here, or come without a sampling decision,
    /// that are sampled. A decision that came with the request is kept.
    pub sampling: f64,
    /// Export the sampled spans over OTLP/HTTP, if set.
    pub otlp: Option<OtlpConfig>,
}

impl TracingConfig {
    /// [`Self::sampling`] in millionths (what [`crate::l7::trace::decide_hop`] takes).
    #[must_use]
    pub fn sampling_per_million(&self) -> u32 {
        (self.sampling * 10_000.0).round().clamp(0.0, 1_000_000.0) as u32
    }
}

/// `tracing.otlp`: spans sent as OTLP/HTTP JSON (`POST {path}`, `content-type:
/// application/json`) to a host of `cluster`, in batches, from each worker.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct OtlpConfig {
    /// The collector's cluster (HTTP/1.1; TLS when the cluster has `tls`).
    pub cluster: String,
    /// Index of `cluster` in `Config::clusters`.
    #[serde(skip)]
    pub cluster_index: usize,
    /// `service.name` of the exported resource.
    pub service_name: String,
    /// The request path.
    pub path: String,
    /// How often a worker sends what it has (sooner when `max_batch` spans wait).
    #[serde(serialize_with = "ser_duration")]
    pub export_interval: Duration,
    /// Most spans in one request.
    pub max_batch: usize,
    /// Most spans a worker holds waiting for export; past it new spans are dropped (counted).
    pub max_queue: usize,
    /// Longest one export request may take.
    #[serde(serialize_with = "ser_duration")]
    pub timeout: Duration,
}
