//! The active health checker: when to probe each host of a cluster, and what the results mean.
//!
//! The driver runs the probes (TCP connect, HTTP GET with expected statuses, Bolt heartbeat) and
//! reports each outcome with [`ActiveHealthChecker::handle_probe_result`]; the checker decides
//! when the next probe is due, times probes out, and applies the thresholds.
//!
//! ## Host states
//!
//! ```text
//!            1 success                         unhealthy_threshold consecutive failures
//!  Unknown ─────────────▶ Healthy ◀──────────────────────────────────────────────────▶ Unhealthy
//!     │                                     healthy_threshold consecutive successes
//!     └── unhealthy_threshold consecutive failures ──▶ Unhealthy
//! ```
//!
//! Hosts start *unknown* (not healthy: [`ActiveHealthChecker::is_healthy`] is false) and, like
//! Envoy at startup, become healthy after a single success. Every transition into `Healthy` or
//! `Unhealthy` from another state emits one [`HealthEvent`]. A timeout counts as a failure.
//!
//! ## Schedule
//!
//! Every host is probed at once when the checker is created. After that, probes of a host start
//! on a fixed cadence measured from the **start** of the previous probe: the next one is due
//! `interval − j` later, `j` uniform in `[0, interval × jitter_percent / 100]` from the injected
//! RNG (`no_traffic_interval` instead of `interval` while the cluster has seen no traffic, see
//! [`ActiveHealthChecker::set_traffic`]). A probe still outstanding when the next is due delays
//! the next until it completes or times out.
//!
//! Jitter only ever *shortens* a wait (Envoy's `interval_jitter_percent` lengthens it). That keeps
//! the drain bound exact: with `timeout ≤ interval`, a host that starts failing at `T` is
//! unhealthy by `T + unhealthy_threshold × interval + timeout`, and one that recovers at `T` is
//! healthy again by `T + healthy_threshold × interval + timeout`.
//!
//! ## Outputs
//!
//! - [`HealthAction::Probe`]: start a probe of this host now;
//! - [`HealthAction::Cancel`]: the host's probe timed out and was counted as a failure; drop it
//!   (any result it still produces is ignored).
//!
//! ## Invariants (checked in debug builds)
//!
//! - at most one probe per host is outstanding (a `Probe` is never emitted for a host with one);
//! - every probe is settled exactly once: by its result or by its timeout, never both — a result
//!   for a host with no outstanding probe (e.g. a late one after a timeout) is ignored;
//! - `probes issued − probes settled = outstanding probes`.

use std::collections::VecDeque;
use std::time::Duration;

use crate::time::Instant;

use crate::config::HealthCheckSettings;
use crate::host::{HostId, HostRef};
use crate::rng::Rng;

/// The shortest wait between two probes of a host (jitter never shortens a wait below it).
const MIN_WAIT: Duration = Duration::from_millis(1);

/// The outcome of one probe, as the driver saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProbeResult {
    /// The host answered as expected (connected; expected status; heartbeat answered).
    Success,
    /// The host answered wrongly or refused.
    Failure,
    /// The driver gave up waiting (same effect as the checker's own timeout).
    Timeout,
}

/// What the driver must do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HealthAction {
    /// Start a probe of this host now and report its result
    /// ([`ActiveHealthChecker::handle_probe_result_for`] with this epoch).
    Probe {
        /// The host to probe.
        host: HostId,
        /// Its slot's epoch (see [`crate::host`]; 0 in a static cluster): the result is for
        /// this host, and dropped if the slot has another by then.
        epoch: u32,
    },
    /// This host's probe timed out (already counted as a failure): abandon it.
    Cancel {
        /// The host whose probe to drop.
        host: HostId,
    },
}

/// A host changed health.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HealthEvent {
    /// The host became healthy (from unknown or unhealthy).
    BecameHealthy(HostId),
    /// The host became unhealthy (from unknown or healthy).
    BecameUnhealthy(HostId),
}

/// A host's health as the checker sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HostHealth {
    /// Not probed successfully yet, nor failed `unhealthy_threshold` times.
    Unknown,
    /// Passing.
    Healthy,
    /// Failing.
    Unhealthy,
}

#[derive(Clone, Debug)]
struct HostState {
    health: HostHealth,
    successes: u32,
    failures: u32,
    /// Deadline of the outstanding probe.
    outstanding: Option<Instant>,
    /// The slot's epoch: which host the id names now ([`ActiveHealthChecker::replace_host`]).
    epoch: u32,
    /// When the next probe is due.
    next_at: Instant,
    /// When the last probe started (the cadence's base).
    last_start: Instant,
}

/// The active health checker of one cluster. See the module doc.
#[derive(Debug)]
pub struct ActiveHealthChecker {
    settings: HealthCheckSettings,
    rng: Rng,
    traffic: bool,
    hosts: Vec<HostState>,
    actions: VecDeque<HealthAction>,
    events: VecDeque<HealthEvent>,
    issued: u64,
    settled: u64,
}

impl ActiveHealthChecker {
    /// A checker for `hosts` hosts (all unknown, first probes due at `now`: drain
    /// [`Self::poll_action`]). The cluster starts as having seen no traffic.
    #[must_use]
    pub fn new(now: Instant, hosts: usize, settings: HealthCheckSettings, rng: Rng) -> Self {
        debug_assert!(settings.interval > Duration::ZERO);
        debug_assert!(settings.no_traffic_interval > Duration::ZERO);
        debug_assert!(settings.jitter_percent <= 100);
        debug_assert!(settings.unhealthy_threshold >= 1 && settings.healthy_threshold >= 1);
        let mut checker = ActiveHealthChecker {
            settings,
            rng,
            traffic: false,
            hosts: vec![
                HostState {
                    health: HostHealth::Unknown,
                    successes: 0,
                    failures: 0,
                    outstanding: None,
                    epoch: 0,
                    next_at: now,
                    last_start: now,
                };
                hosts
            ],
            actions: VecDeque::with_capacity(hosts),
            events: VecDeque::new(),
            issued: 0,
            settled: 0,
        };
        checker.handle_timeout(now);
        checker
    }

    // ---- input ----

    /// The outcome of `host`'s outstanding probe, in a cluster whose ids never change host:
    /// [`ActiveHealthChecker::handle_probe_result_for`] with the id's current epoch.
    pub fn handle_probe_result(&mut self, now: Instant, host: HostId, result: ProbeResult) {
        let epoch = self.hosts.get(host.index()).map_or(0, |h| h.epoch);
        self.handle_probe_result_for(now, HostRef { id: host, epoch }, result);
    }

    /// The outcome of the probe issued for `host` (the epoch its [`HealthAction::Probe`]
    /// carried). Ignored when the host has no probe outstanding (a late result for a probe
    /// that already timed out), and **dropped when the epoch is stale**: the probe went to the
    /// slot's previous host, and its verdict must not count for the new one (whose own probe
    /// may be outstanding). Returns whether the result counted.
    pub fn handle_probe_result_for(
        &mut self,
        now: Instant,
        host: HostRef,
        result: ProbeResult,
    ) -> bool {
        let Some(h) = self.hosts.get_mut(host.id.index()) else {
            debug_assert!(false, "probe result for unknown host {host:?}");
            return false;
        };
        if h.epoch != host.epoch || h.outstanding.take().is_none() {
            return false;
        }
        self.settled += 1;
        self.apply(host.id, result == ProbeResult::Success);
        self.maybe_probe(now, host.id.index());
        self.check_invariants();
        true
    }

    /// Host id `host.id` names another host now, whose slot epoch is `host.epoch` (a DNS
    /// answer moved a new address into its slot, or freed it): it starts over as unknown, as
    /// a new host does, its outstanding probe (to the old address) cancelled — a result of it
    /// that still arrives is stale and dropped — and a probe is due at `now`. No event: the
    /// driver marks the id unknown itself.
    pub fn replace_host(&mut self, now: Instant, host: HostRef) {
        let i = host.id.index();
        if self.hosts[i].outstanding.take().is_some() {
            self.settled += 1;
            self.actions
                .push_back(HealthAction::Cancel { host: host.id });
        }
        self.hosts[i] = HostState {
            health: HostHealth::Unknown,
            successes: 0,
            failures: 0,
            outstanding: None,
            epoch: host.epoch,
            next_at: now,
            last_start: now,
        };
        self.maybe_probe(now, i);
        self.check_invariants();
    }

    /// Time passed: probes may have timed out, others may be due.
    pub fn handle_timeout(&mut self, now: Instant) {
        for i in 0..self.hosts.len() {
            if let Some(deadline) = self.hosts[i].outstanding
                && now >= deadline
            {
                self.hosts[i].outstanding = None;
                self.settled += 1;
                let host = HostId(i as u32);
                self.actions.push_back(HealthAction::Cancel { host });
                self.apply(host, false);
            }
            self.maybe_probe(now, i);
        }
        self.check_invariants();
    }

    /// Whether the cluster has traffic: probes follow `interval` with traffic and
    /// `no_traffic_interval` without. Switching traffic on pulls every pending probe in to at
    /// most `interval` after its host's last probe started — which may be in the past: the
    /// driver re-reads [`Self::poll_timeout`] after this call, as after any input, and a past
    /// instant means "call `handle_timeout` now".
    pub fn set_traffic(&mut self, active: bool) {
        if active && !self.traffic {
            let interval = self.settings.interval;
            for h in &mut self.hosts {
                h.next_at = h.next_at.min(h.last_start + interval);
            }
        }
        self.traffic = active;
    }

    // ---- output ----

    /// The next thing the driver must do, if any.
    pub fn poll_action(&mut self) -> Option<HealthAction> {
        self.actions.pop_front()
    }

    /// The next health change, if any.
    pub fn poll_event(&mut self) -> Option<HealthEvent> {
        self.events.pop_front()
    }

    /// When `handle_timeout` must be called next: the earliest probe deadline or due probe.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.hosts
            .iter()
            .map(|h| h.outstanding.unwrap_or(h.next_at))
            .min()
    }

    // ---- queries ----

    /// Whether `host` is healthy (unknown hosts are not).
    #[must_use]
    pub fn is_healthy(&self, host: HostId) -> bool {
        self.hosts[host.index()].health == HostHealth::Healthy
    }

    /// `host`'s health.
    #[must_use]
    pub fn health(&self, host: HostId) -> HostHealth {
        self.hosts[host.index()].health
    }

    /// The epoch `host` was last given ([`ActiveHealthChecker::replace_host`]; 0 before):
    /// which host of the slot the checker's verdict is about.
    #[must_use]
    pub fn epoch(&self, host: HostId) -> u32 {
        self.hosts[host.index()].epoch
    }

    /// Whether `host` has a probe outstanding.
    #[must_use]
    pub fn probing(&self, host: HostId) -> bool {
        self.hosts[host.index()].outstanding.is_some()
    }

    /// `is_healthy` of every host, in host order (for [`super::availability`]).
    #[must_use]
    pub fn healthy_hosts(&self) -> Vec<bool> {
        self.hosts
            .iter()
            .map(|h| h.health == HostHealth::Healthy)
            .collect()
    }

    /// The settings in force.
    #[must_use]
    pub fn settings(&self) -> &HealthCheckSettings {
        &self.settings
    }

    // ---- internals ----

    /// The wait before the next probe: the current interval shortened by the jitter.
    fn next_wait(&mut self) -> Duration {
        let base = if self.traffic {
            self.settings.interval
        } else {
            self.settings.no_traffic_interval
        };
        let span = base.as_nanos() * u128::from(self.settings.jitter_percent) / 100;
        let span = u64::try_from(span).unwrap_or(u64::MAX);
        if span == 0 {
            return base;
        }
        let wait =
            base.saturating_sub(Duration::from_nanos(self.rng.below(span.saturating_add(1))));
        // Never back to back, even at 100 % jitter.
        wait.max(MIN_WAIT.min(base))
    }

    fn maybe_probe(&mut self, now: Instant, i: usize) {
        let h = &self.hosts[i];
        if h.outstanding.is_some() || now < h.next_at {
            return;
        }
        let wait = self.next_wait();
        let h = &mut self.hosts[i];
        h.outstanding = Some(now + self.settings.timeout);
        h.last_start = now;
        h.next_at = now + wait;
        self.issued += 1;
        let epoch = h.epoch;
        self.actions.push_back(HealthAction::Probe {
            host: HostId(i as u32),
            epoch,
        });
    }

    fn apply(&mut self, host: HostId, success: bool) {
        let (unhealthy_threshold, healthy_threshold) = (
            self.settings.unhealthy_threshold,
            self.settings.healthy_threshold,
        );
        let h = &mut self.hosts[host.index()];
        let before = h.health;
        if success {
            h.failures = 0;
            h.successes = h.successes.saturating_add(1);
            let needed = match h.health {
                HostHealth::Unknown => 1,
                _ => healthy_threshold,
            };
            if h.successes >= needed {
                h.health = HostHealth::Healthy;
            }
        } else {
            h.successes = 0;
            h.failures = h.failures.saturating_add(1);
            if h.failures >= unhealthy_threshold {
                h.health = HostHealth::Unhealthy;
            }
        }
        if h.health != before {
            self.events.push_back(match h.health {
                HostHealth::Healthy => HealthEvent::BecameHealthy(host),
                _ => HealthEvent::BecameUnhealthy(host),
            });
        }
    }

    fn check_invariants(&self) {
        if cfg!(debug_assertions) {
            let outstanding = self
                .hosts
                .iter()
                .filter(|h| h.outstanding.is_some())
                .count();
            debug_assert_eq!(self.issued - self.settled, outstanding as u64);
        }
    }
}
