//! Settings of how a cluster's hosts are checked, ejected and limited: the inputs of the
//! state machines in `health` (active health checking, outlier detection, circuit breakers and
//! the retry budget), which re-exports them. Their `Default`s are the defaults of the config
//! example in issue 5 (which match Envoy's, except where a struct's doc says otherwise); a
//! config that omits a field gets these.

use std::time::Duration;

use super::ser_duration;

/// Envoy's default `healthy_panic_threshold`, in percent.
pub const DEFAULT_PANIC_THRESHOLD_PERCENT: u32 = 50;

/// How a cluster's hosts are probed. Defaults: issue 5's config example (Envoy requires these
/// fields and has no defaults for most of them; `no_traffic_interval` is Envoy's 60 s).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct HealthCheckSettings {
    /// Cadence of probes while the cluster has traffic (> 0).
    #[serde(serialize_with = "ser_duration")]
    pub interval: Duration,
    /// A probe with no result after this long is a failure (should be ≤ `interval`).
    #[serde(serialize_with = "ser_duration")]
    pub timeout: Duration,
    /// Each wait is shortened by up to this percentage of it (0–100), from the injected RNG
    /// (never below 1 ms).
    pub jitter_percent: u32,
    /// Consecutive failures that make a healthy (or unknown) host unhealthy (≥ 1).
    pub unhealthy_threshold: u32,
    /// Consecutive successes that make an unhealthy host healthy again (≥ 1).
    pub healthy_threshold: u32,
    /// Cadence of probes while the cluster has seen no traffic (> 0).
    #[serde(serialize_with = "ser_duration")]
    pub no_traffic_interval: Duration,
}

impl Default for HealthCheckSettings {
    fn default() -> Self {
        HealthCheckSettings {
            interval: Duration::from_secs(5),
            timeout: Duration::from_secs(1),
            jitter_percent: 10,
            unhealthy_threshold: 3,
            healthy_threshold: 2,
            no_traffic_interval: Duration::from_secs(60),
        }
    }
}

/// Outlier detection settings. Defaults: issue 5's config example, Envoy's defaults otherwise
/// (Envoy's `consecutive_gateway_failure` is 5 too but not enforced by default; here it is).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct OutlierSettings {
    /// Consecutive 5xx (including local-origin failures) that eject a host; 0 disables.
    pub consecutive_5xx: u32,
    /// Consecutive 502/503/504 (including local-origin failures) that eject a host; 0 disables.
    pub consecutive_gateway_failure: u32,
    /// Consecutive connect failures that eject a host; 0 disables.
    pub consecutive_connect_failure: u32,
    /// An ejection lasts this × the number of ejections in a row (> 0).
    #[serde(serialize_with = "ser_duration")]
    pub base_ejection_time: Duration,
    /// Longest ejection (raised to `base_ejection_time` if lower).
    #[serde(serialize_with = "ser_duration")]
    pub max_ejection_time: Duration,
    /// Most hosts ejected at once, in percent of the cluster (at least one host is always
    /// ejectable).
    pub max_ejection_percent: u32,
    /// The ejection multiplier drops by one per `interval` spent un-ejected (Envoy's 10 s).
    #[serde(serialize_with = "ser_duration")]
    pub interval: Duration,
}

impl Default for OutlierSettings {
    fn default() -> Self {
        OutlierSettings {
            consecutive_5xx: 5,
            consecutive_gateway_failure: 5,
            consecutive_connect_failure: 5,
            base_ejection_time: Duration::from_secs(30),
            max_ejection_time: Duration::from_secs(300),
            max_ejection_percent: 10,
            interval: Duration::from_secs(10),
        }
    }
}

/// Circuit breaker limits of one cluster (Envoy's defaults, which issue 5's example repeats).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CircuitBreakerSettings {
    /// Most connections open to the cluster's hosts.
    pub max_connections: u32,
    /// Most requests waiting for a connection.
    pub max_pending_requests: u32,
    /// Most requests in flight.
    pub max_requests: u32,
    /// Most retries in flight, when [`CircuitBreakerSettings::retry_budget`] is `None`.
    pub max_retries: u32,
    /// The retry budget (the default); `None` when `max_retries` caps retries instead.
    pub retry_budget: Option<RetryBudgetSettings>,
}

/// A retry budget: retries may add `budget_percent` of the requests started in the sliding
/// `window`, and at least `min_retries_per_second` (see `health`'s breaker module doc).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct RetryBudgetSettings {
    /// Retries may add this share (in percent) of the requests started in the window.
    pub budget_percent: u32,
    /// Retries always allowed per second of the window, whatever the traffic.
    pub min_retries_per_second: u32,
    /// The sliding window, in whole seconds (1 s to [`RetryBudgetSettings::MAX_WINDOW_SECS`]).
    #[serde(serialize_with = "ser_duration")]
    pub window: Duration,
}

impl RetryBudgetSettings {
    /// The longest window.
    pub const MAX_WINDOW_SECS: u64 = 60;
}

impl Default for RetryBudgetSettings {
    fn default() -> Self {
        RetryBudgetSettings {
            budget_percent: 20,
            min_retries_per_second: 10,
            window: Duration::from_secs(10),
        }
    }
}

impl Default for CircuitBreakerSettings {
    fn default() -> Self {
        CircuitBreakerSettings {
            max_connections: 1024,
            max_pending_requests: 1024,
            max_requests: 1024,
            max_retries: 3,
            retry_budget: Some(RetryBudgetSettings::default()),
        }
    }
}
