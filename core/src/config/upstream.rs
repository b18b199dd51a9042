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

/// Envoy's default `dns_refresh_rate`.
pub const DEFAULT_DNS_REFRESH_RATE: Duration = Duration::from_secs(5);
/// With `respect_dns_ttl`, a TTL below this refreshes after this long (a TTL of 0 would
/// otherwise resolve in a loop).
pub const MIN_DNS_TTL: Duration = Duration::from_secs(1);
/// With `respect_dns_ttl`, a TTL above this refreshes after this long (a name whose records
/// say "a day" still moves within the hour).
pub const MAX_DNS_TTL: Duration = Duration::from_secs(3600);
/// Default `max_hosts` of a `strict_dns` cluster.
pub const DEFAULT_DNS_MAX_HOSTS: u32 = 64;
/// Largest `max_hosts`.
pub const MAX_DNS_MAX_HOSTS: u32 = 4096;

/// Which address families a DNS cluster asks for (`dns_lookup_family`, Envoy's names).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DnsLookupFamily {
    /// IPv6 addresses when the name has any, else IPv4 ones (Envoy's default, `AUTO`).
    #[default]
    Auto,
    /// IPv4 addresses only.
    V4Only,
    /// IPv6 addresses only.
    V6Only,
}

impl DnsLookupFamily {
    /// The names the config accepts.
    pub const CHOICES: [(&'static str, DnsLookupFamily); 3] = [
        ("auto", DnsLookupFamily::Auto),
        ("v4_only", DnsLookupFamily::V4Only),
        ("v6_only", DnsLookupFamily::V6Only),
    ];

    /// The addresses of an answer this family keeps, in answer order.
    pub fn filter(
        self,
        answer: impl IntoIterator<Item = std::net::SocketAddr> + Clone,
    ) -> Vec<std::net::SocketAddr> {
        match self {
            DnsLookupFamily::V4Only => answer.into_iter().filter(|a| a.is_ipv4()).collect(),
            DnsLookupFamily::V6Only => answer.into_iter().filter(|a| a.is_ipv6()).collect(),
            DnsLookupFamily::Auto => {
                let v6: Vec<_> = answer.clone().into_iter().filter(|a| a.is_ipv6()).collect();
                if v6.is_empty() {
                    answer.into_iter().filter(|a| a.is_ipv4()).collect()
                } else {
                    v6
                }
            }
        }
    }
}

/// One name a DNS cluster resolves: `hosts: [{ address: NAME:PORT, weight }]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DnsName {
    /// The DNS name (or an IP literal, which resolves to itself).
    pub name: String,
    /// The port every address of the name gets.
    pub port: u16,
    /// The weight every address of the name gets (1 to 1000).
    pub weight: u32,
}

/// How a `strict_dns` or `logical_dns` cluster finds its hosts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DnsSettings {
    /// The names, in config order (at least one; a `logical_dns` cluster has exactly one per
    /// logical host).
    pub names: Vec<DnsName>,
    /// Each name is resolved again this long after its last answer (`dns_refresh_rate`,
    /// default 5 s as in Envoy).
    pub refresh_rate: Duration,
    /// Refresh after the answer's TTL instead, within [`MIN_DNS_TTL`]..=[`MAX_DNS_TTL`], when
    /// the resolver reports one (`respect_dns_ttl`, default false as in Envoy).
    pub respect_dns_ttl: bool,
    /// Which address families are used (`dns_lookup_family`, default `auto`).
    pub lookup_family: DnsLookupFamily,
    /// `strict_dns`: most hosts the answers may add up to (`max_hosts`, default 64); the
    /// addresses past it are left out (counted). Every worker keeps that many host slots, so
    /// hosts come and go without a new config generation.
    pub max_hosts: u32,
}
