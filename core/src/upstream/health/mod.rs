//! Upstream health and resilience, as pure state machines over host indices
//! ([`HostId`](crate::host::HostId)):
//!
//! | piece | decides | driven by |
//! |---|---|---|
//! | [`ActiveHealthChecker`] | when to probe each host, and whether it is healthy | probe results, time |
//! | [`OutlierDetector`] | which hosts to eject (and for how long) from real traffic | request results, time |
//! | [`CircuitBreakers`] | whether one more connection / pending request / request / retry may start | acquire and release |
//! | [`availability`] | which hosts the balancer may pick, and whether the cluster is in panic | the two above |
//!
//! None of them does IO: the runtime runs the probes (TCP connect, HTTP GET, Bolt heartbeat,
//! gRPC `Health/Check`, whose messages and verdict are [`grpc`]'s),
//! feeds the results back, and copies [`Availability`] into its `ClusterState`
//! ([`crate::cluster::ClusterState::apply_availability`]) whenever a [`HealthEvent`] or an
//! [`OutlierEvent`] came out.
//!
//! Their settings (`HealthCheckSettings`, `OutlierSettings`, `CircuitBreakerSettings`,
//! `RetryBudgetSettings`) are part of the config model ([`crate::config::upstream`]), re-exported
//! here; their `Default`s are the defaults of the config example in issue 5.
//!
//! ## Panic threshold (Envoy's `healthy_panic_threshold`)
//!
//! A host is *available* when it is healthy and not ejected. When the share of available hosts
//! falls **strictly below** `panic_threshold_percent`, the cluster is in *panic*: every host is
//! available again, because spreading load over all hosts (some failing) beats piling it onto the
//! few left. `0` disables panic. An empty cluster is never in panic.
//!
//! [`availability`] and [`fill_availability`] decide it over the whole cluster; the runtime
//! hands each host's verdict to its cluster state instead
//! ([`crate::cluster::ClusterState::apply_health`]), which applies the threshold per priority
//! level with Envoy's rule ([`crate::lb::priority`]): the same as this for a cluster of one
//! level, except that a level at ≥ 1/1.4 of its hosts usable (the overprovisioning factor) is
//! never in panic.

mod active;
mod breaker;
pub mod grpc;
mod outlier;

pub use active::{ActiveHealthChecker, HealthAction, HealthEvent, HostHealth, ProbeResult};
pub use breaker::{CircuitBreakers, Overflow, Permit, Resource};
// The settings are part of the config model (a leaf every module reads); re-exported here, at
// the paths they had before they moved, beside the state machines they configure.
pub use crate::config::upstream::{
    CircuitBreakerSettings, DEFAULT_PANIC_THRESHOLD_PERCENT, HealthCheckSettings, OutlierSettings,
    RetryBudgetSettings,
};
pub use outlier::{OutlierDetector, OutlierEvent, UpstreamResult};

/// Which hosts the balancer may pick.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Availability {
    /// `available[i]`: host `i` may be picked.
    pub available: Vec<bool>,
    /// The share of healthy, non-ejected hosts was below the panic threshold, so every host is
    /// available.
    pub panic: bool,
}

/// Which hosts are available, given their health and ejection; see the module doc for panic.
///
/// `hosts_healthy` and `ejected` must have the same length (one entry per host).
#[must_use]
pub fn availability(
    hosts_healthy: &[bool],
    ejected: &[bool],
    panic_threshold_percent: u32,
) -> Availability {
    let mut available = vec![false; hosts_healthy.len()];
    let panic = fill_availability(
        hosts_healthy,
        ejected,
        panic_threshold_percent,
        &mut available,
    );
    Availability { available, panic }
}

/// [`availability`] without allocating: fills `out` (same length as the inputs) and returns
/// whether the cluster is in panic.
pub fn fill_availability(
    hosts_healthy: &[bool],
    ejected: &[bool],
    panic_threshold_percent: u32,
    out: &mut [bool],
) -> bool {
    debug_assert_eq!(hosts_healthy.len(), ejected.len());
    debug_assert_eq!(hosts_healthy.len(), out.len());
    debug_assert!(panic_threshold_percent <= 100);
    let mut usable = 0usize;
    for ((o, &h), &e) in out.iter_mut().zip(hosts_healthy).zip(ejected) {
        *o = h && !e;
        usable += usize::from(*o);
    }
    let total = out.len();
    // usable / total < threshold / 100, in integers.
    let panic = total > 0 && usable * 100 < total * panic_threshold_percent as usize;
    if panic {
        out.fill(true);
    }
    panic
}

/// [`fill_availability`] for a cluster whose ids are slots (DNS): only the `present` ones are
/// hosts, so only they count toward the panic threshold (a cluster with 2 hosts in 64 slots
/// is in panic when both are down, not never); a free slot is unavailable.
pub fn fill_availability_of_present(
    hosts_healthy: &[bool],
    ejected: &[bool],
    present: &[bool],
    panic_threshold_percent: u32,
    out: &mut [bool],
) -> bool {
    debug_assert_eq!(hosts_healthy.len(), present.len());
    debug_assert_eq!(hosts_healthy.len(), out.len());
    let (mut usable, mut total) = (0usize, 0usize);
    for (((o, &h), &e), &p) in out.iter_mut().zip(hosts_healthy).zip(ejected).zip(present) {
        *o = p && h && !e;
        usable += usize::from(*o);
        total += usize::from(p);
    }
    let panic = total > 0 && usable * 100 < total * panic_threshold_percent as usize;
    if panic {
        for (o, &p) in out.iter_mut().zip(present) {
            *o = p;
        }
    }
    panic
}

#[cfg(test)]
mod tests;
