//! Outlier detection (Envoy's consecutive-error detectors, sans IO): eject hosts that keep failing
//! real requests, for a time that grows with each ejection.
//!
//! ## Counting
//!
//! Per host, three consecutive-failure counters, each with its own threshold (`0` disables it):
//!
//! | result | 5xx | gateway (502/503/504) | connect |
//! |---|---|---|---|
//! | `Success`, `Status(< 500)` | reset | reset | reset |
//! | `Status(502..=504)` | +1 | +1 | reset |
//! | other `Status(5xx)` | +1 | reset | reset |
//! | `ConnectFailure` | +1 | +1 | +1 |
//! | `Reset`, `Timeout` | +1 | +1 | reset |
//!
//! Local-origin failures count as 503 (connect failure, reset) or 504 (timeout) the way Envoy
//! counts them when `split_external_local_origin_errors` is off (its default). Results for an
//! ejected host are ignored (they are requests that were in flight when it was ejected).
//!
//! ## States of a host
//!
//! ```text
//!              a counter reaches its threshold, cap allows
//!   Active ─────────────────────────────────────────────────▶ Ejected(until)
//!     ▲  │ a counter reaches its threshold, cap reached                 │
//!     │  └──▶ EjectionSkipped (counters reset, stays Active)            │ handle_timeout(now ≥ until)
//!     └─────────────────────────────────────────────────────────────────┘ Unejected (counters reset)
//! ```
//!
//! An ejection lasts `base_ejection_time × n`, capped by `max(max_ejection_time,
//! base_ejection_time)`, where `n` counts the host's ejections in a row (1 for the first). As in
//! Envoy, `n` decays: it drops by one for every `interval` the host spent un-ejected since its
//! last ejection ended (computed when it is next ejected).
//!
//! Envoy un-ejects on its 10 s analysis sweep, so its ejections overrun by up to one `interval`;
//! here an ejection ends exactly at its deadline ([`OutlierDetector::poll_timeout`]).
//!
//! At most `max(1, ⌊hosts × max_ejection_percent / 100⌋)` hosts are ejected at once (Envoy always
//! allows one); an ejection that would pass the cap is skipped, counted, and reported.
//!
//! ## Invariants (checked in debug builds)
//!
//! - the number of ejected hosts never exceeds the cap;
//! - `ejected_count` equals the number of hosts with an ejection deadline.

use std::collections::VecDeque;
use std::time::Duration;

use crate::time::Instant;

use crate::config::OutlierSettings;
use crate::host::{HostId, HostRef};

/// The outcome of one upstream request (or connect), as the driver saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpstreamResult {
    /// A success that carries no status (TCP session, Bolt response with status 0).
    Success,
    /// An HTTP response head with this status.
    Status(u16),
    /// The connect was refused or timed out.
    ConnectFailure,
    /// The connection reset or closed before a complete response.
    Reset,
    /// No response within the (per-try) timeout.
    Timeout,
}

/// A change in ejection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutlierEvent {
    /// The host is ejected until `until`.
    Ejected {
        /// The host.
        host: HostId,
        /// When it comes back.
        until: Instant,
    },
    /// The host's ejection ended.
    Unejected(HostId),
    /// The host met a threshold but the ejection cap was reached.
    EjectionSkipped(HostId),
}

#[derive(Clone, Debug, Default)]
struct HostState {
    c5xx: u32,
    gateway: u32,
    connect: u32,
    /// Ejections in a row (the multiplier, before decay).
    times_ejected: u32,
    ejected_until: Option<Instant>,
    /// When its last ejection ended (for the multiplier's decay).
    unejected_at: Option<Instant>,
    /// The slot's epoch: which host the id names now ([`OutlierDetector::replace_host`]).
    epoch: u32,
}

/// Outlier detection over one cluster's hosts. See the module doc.
#[derive(Debug)]
pub struct OutlierDetector {
    settings: OutlierSettings,
    hosts: Vec<HostState>,
    ejected: usize,
    skipped: u64,
    ejections: u64,
    events: VecDeque<OutlierEvent>,
    /// A DNS cluster: how many of the ids hold a host now (`max_ejection_percent` is of
    /// those, not of the slots); `None`: every id is a host.
    live_hosts: Option<usize>,
}

impl OutlierDetector {
    /// A detector for `hosts` hosts, none ejected.
    #[must_use]
    pub fn new(hosts: usize, settings: OutlierSettings) -> Self {
        debug_assert!(settings.base_ejection_time > Duration::ZERO);
        OutlierDetector {
            settings,
            hosts: vec![HostState::default(); hosts],
            ejected: 0,
            skipped: 0,
            ejections: 0,
            events: VecDeque::new(),
            live_hosts: None,
        }
    }

    // ---- input ----

    /// One request to `host` ended with `result`, in a cluster whose ids never change host:
    /// [`OutlierDetector::handle_result_for`] with the id's current epoch.
    pub fn handle_result(&mut self, now: Instant, host: HostId, result: UpstreamResult) {
        let epoch = self.hosts.get(host.index()).map_or(0, |h| h.epoch);
        self.handle_result_for(now, HostRef { id: host, epoch }, result);
    }

    /// One request to `host` (the id and slot epoch it was picked with) ended with `result`.
    /// **Dropped when the epoch is stale**: the request went to the slot's previous host, and
    /// its result must not count toward (or eject) the new one. Returns whether it counted
    /// (a result for an ejected host does not count either).
    pub fn handle_result_for(
        &mut self,
        now: Instant,
        host: HostRef,
        result: UpstreamResult,
    ) -> bool {
        let s = self.settings;
        let Some(h) = self.hosts.get_mut(host.id.index()) else {
            debug_assert!(false, "result for unknown host {host:?}");
            return false;
        };
        if h.epoch != host.epoch || h.ejected_until.is_some() {
            return false;
        }
        let host = host.id;
        let (is_5xx, is_gateway, is_connect) = match result {
            UpstreamResult::Success => (false, false, false),
            UpstreamResult::Status(code) => (code >= 500, (502..=504).contains(&code), false),
            UpstreamResult::ConnectFailure => (true, true, true),
            UpstreamResult::Reset | UpstreamResult::Timeout => (true, true, false),
        };
        let bump = |c: &mut u32, hit: bool| *c = if hit { c.saturating_add(1) } else { 0 };
        bump(&mut h.c5xx, is_5xx);
        bump(&mut h.gateway, is_gateway);
        bump(&mut h.connect, is_connect);
        let reached = |count: u32, threshold: u32| threshold > 0 && count >= threshold;
        if reached(h.c5xx, s.consecutive_5xx)
            || reached(h.gateway, s.consecutive_gateway_failure)
            || reached(h.connect, s.consecutive_connect_failure)
        {
            h.c5xx = 0;
            h.gateway = 0;
            h.connect = 0;
            self.try_eject(now, host);
        }
        self.check_invariants();
        true
    }

    /// Host id `host.id` names another host now, whose slot epoch is `host.epoch` (a DNS
    /// answer moved a new address into its slot, or freed it): its counts and ejection history
    /// start over; an ejection in force ends (an `Unejected` event, so that the driver's gauges
    /// follow); results still arriving for the old epoch are dropped.
    pub fn replace_host(&mut self, host: HostRef) {
        let Some(h) = self.hosts.get_mut(host.id.index()) else {
            return;
        };
        if h.ejected_until.is_some() {
            self.ejected -= 1;
            self.events.push_back(OutlierEvent::Unejected(host.id));
        }
        *h = HostState {
            epoch: host.epoch,
            ..HostState::default()
        };
        self.check_invariants();
    }

    /// Time passed: ejections may have ended.
    pub fn handle_timeout(&mut self, now: Instant) {
        for (i, h) in self.hosts.iter_mut().enumerate() {
            if let Some(until) = h.ejected_until
                && now >= until
            {
                h.ejected_until = None;
                h.unejected_at = Some(now);
                self.ejected -= 1;
                self.events
                    .push_back(OutlierEvent::Unejected(HostId(i as u32)));
            }
        }
        self.check_invariants();
    }

    // ---- output ----

    /// The next ejection change, if any.
    pub fn poll_event(&mut self) -> Option<OutlierEvent> {
        self.events.pop_front()
    }

    /// When `handle_timeout` must be called next: the earliest end of an ejection.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.hosts.iter().filter_map(|h| h.ejected_until).min()
    }

    // ---- queries ----

    /// Whether `host` is ejected.
    #[must_use]
    pub fn is_ejected(&self, host: HostId) -> bool {
        self.hosts[host.index()].ejected_until.is_some()
    }

    /// `is_ejected` of every host, in host order (for [`super::availability`]).
    #[must_use]
    pub fn ejected_hosts(&self) -> Vec<bool> {
        self.hosts
            .iter()
            .map(|h| h.ejected_until.is_some())
            .collect()
    }

    /// How many hosts are ejected now.
    #[must_use]
    pub fn ejected_count(&self) -> usize {
        self.ejected
    }

    /// A DNS cluster's ids are slots: `n` of them hold a host now, and the ejection cap is a
    /// share of those. Ejections in force stay when the set shrinks (the cap applies when
    /// ejecting, as in Envoy).
    pub fn set_live_hosts(&mut self, n: usize) {
        self.live_hosts = Some(n.min(self.hosts.len()));
    }

    /// The most hosts that may be ejected at once.
    #[must_use]
    pub fn max_ejected(&self) -> usize {
        let n = self.live_hosts.unwrap_or(self.hosts.len());
        (n * self.settings.max_ejection_percent as usize / 100)
            .max(1)
            .min(n)
    }

    /// Ejections skipped because of the cap, since creation.
    #[must_use]
    pub fn ejections_skipped(&self) -> u64 {
        self.skipped
    }

    /// Ejections made, since creation.
    #[must_use]
    pub fn ejections_total(&self) -> u64 {
        self.ejections
    }

    /// The settings in force.
    #[must_use]
    pub fn settings(&self) -> &OutlierSettings {
        &self.settings
    }

    // ---- internals ----

    fn try_eject(&mut self, now: Instant, host: HostId) {
        if self.ejected >= self.max_ejected() {
            self.skipped += 1;
            self.events.push_back(OutlierEvent::EjectionSkipped(host));
            return;
        }
        let s = self.settings;
        let h = &mut self.hosts[host.index()];
        if let Some(back) = h.unejected_at
            && !s.interval.is_zero()
        {
            let decay = (now.saturating_duration_since(back).as_nanos() / s.interval.as_nanos())
                .min(u128::from(u32::MAX)) as u32;
            h.times_ejected = h.times_ejected.saturating_sub(decay);
        }
        h.times_ejected = h.times_ejected.saturating_add(1);
        let cap = s.max_ejection_time.max(s.base_ejection_time);
        let time = s
            .base_ejection_time
            .checked_mul(h.times_ejected)
            .map_or(cap, |t| t.min(cap));
        let until = now + time;
        h.ejected_until = Some(until);
        h.unejected_at = None;
        self.ejected += 1;
        self.ejections += 1;
        self.events.push_back(OutlierEvent::Ejected { host, until });
    }

    fn check_invariants(&self) {
        if cfg!(debug_assertions) {
            let n = self
                .hosts
                .iter()
                .filter(|h| h.ejected_until.is_some())
                .count();
            debug_assert_eq!(n, self.ejected);
            // (A shrinking DNS host set may leave more ejections than its new cap.)
            debug_assert!(
                self.hosts.is_empty()
                    || self.live_hosts.is_some()
                    || self.ejected <= self.max_ejected()
            );
        }
    }
}
