//! Circuit breakers: caps on how much a cluster may have in flight, answered with an overflow
//! (HTTP 503 with the `UO` flag; Bolt status 4) instead of queueing without bound.
//!
//! Four counters, each with its limit: connections, pending requests (waiting for a
//! connection), requests (active), retries (active). [`CircuitBreakers::try_acquire`] takes one
//! unit and hands back a [`Permit`]; [`CircuitBreakers::release`] gives it back. A permit is
//! neither `Clone` nor `Copy`, so a unit can only be released once.
//!
//! ## Per cluster across workers
//!
//! Envoy's limits hold per cluster across all worker threads (shared atomic counters). Sluice's
//! workers share nothing, so the runtime keeps one `CircuitBreakers` per worker and splits each
//! limit across them with [`CircuitBreakers::per_worker`]: the workers' limits add up to the
//! cluster's, so the cluster-wide cap holds exactly. The deviation: one worker can overflow while
//! another still has room (with `SO_REUSEPORT` spreading connections evenly this is rare, and a
//! limit smaller than the worker count leaves some workers at 0 for that resource).
//!
//! ## Retries: a budget by default, or a fixed cap
//!
//! A fixed `max_retries` split across workers leaves each worker one or two concurrent retries,
//! so a host crash that fails several in-flight requests at once turns retries that the policy
//! allows into errors. The default is therefore a **retry budget** ([`RetryBudgetSettings`]),
//! kept whole by every worker (not split): retries made in the last `window` may add up to
//! `budget_percent` of the requests started in that window, plus a floor of
//! `min_retries_per_second × window` so that a quiet cluster can still retry. This is the token
//! budget of Finagle and linkerd2-proxy (20 %, 10/s, 10 s): it absorbs the burst of a crash (a
//! few dozen retries against a window of thousands of requests) while a cluster that fails
//! everything gets at most `budget_percent` extra load — Envoy's concurrency-based
//! `retry_budget` (a share of *active* requests) cannot tell those apart, because a crash fails
//! a third of the active requests at the same instant. An explicit `max_retries` in the config
//! selects the old fixed cap (concurrent retrying requests, split across workers).
//!
//! ## Invariants (checked in debug builds)
//!
//! - `in_use(r) ≤ limit(r)` for every resource;
//! - `in_use(r)` equals acquisitions minus releases (never underflows).

use crate::time::Instant;

use crate::config::{CircuitBreakerSettings, RetryBudgetSettings};

/// The configured limit of one resource.
fn configured_limit(settings: &CircuitBreakerSettings, r: Resource) -> u32 {
    match r {
        Resource::Connections => settings.max_connections,
        Resource::PendingRequests => settings.max_pending_requests,
        Resource::Requests => settings.max_requests,
        // With a budget, the number of retrying requests is not capped by a count.
        Resource::Retries if settings.retry_budget.is_some() => u32::MAX,
        Resource::Retries => settings.max_retries,
    }
}

/// The sliding-window state of a [`RetryBudgetSettings`]: requests and retries counted per
/// whole second in a ring of `window` slots (each slot knows its second, so a slot left over
/// from an earlier lap of the ring is recognised and reset).
#[derive(Clone, Debug)]
struct RetryBudget {
    settings: RetryBudgetSettings,
    slots: [BudgetSlot; RetryBudgetSettings::MAX_WINDOW_SECS as usize],
}

#[derive(Clone, Copy, Debug, Default)]
struct BudgetSlot {
    second: u64,
    requests: u32,
    retries: u32,
}

impl RetryBudget {
    fn new(settings: RetryBudgetSettings) -> Self {
        RetryBudget {
            settings,
            // `u64::MAX` marks a slot never used (no second matches it).
            slots: [BudgetSlot {
                second: u64::MAX,
                ..BudgetSlot::default()
            }; RetryBudgetSettings::MAX_WINDOW_SECS as usize],
        }
    }

    fn window_secs(&self) -> u64 {
        self.settings
            .window
            .as_secs()
            .clamp(1, RetryBudgetSettings::MAX_WINDOW_SECS)
    }

    /// The slot of `now`'s second, reset when it last held another second.
    fn slot(&mut self, now: Instant) -> &mut BudgetSlot {
        let second = now.since_origin().as_secs();
        let slot = &mut self.slots[(second % self.window_secs()) as usize];
        if slot.second != second {
            *slot = BudgetSlot {
                second,
                requests: 0,
                retries: 0,
            };
        }
        slot
    }

    fn record_request(&mut self, now: Instant) {
        let slot = self.slot(now);
        slot.requests = slot.requests.saturating_add(1);
    }

    /// (requests, retries) in the window ending at `now`.
    fn totals(&self, now: Instant) -> (u64, u64) {
        let second = now.since_origin().as_secs();
        let n = self.window_secs();
        self.slots[..n as usize]
            .iter()
            .filter(|s| s.second <= second && second - s.second < n)
            .fold((0, 0), |(rq, rt), s| {
                (rq + u64::from(s.requests), rt + u64::from(s.retries))
            })
    }

    fn remaining(&self, now: Instant) -> u64 {
        let (requests, retries) = self.totals(now);
        let allowed = requests * u64::from(self.settings.budget_percent) / 100
            + u64::from(self.settings.min_retries_per_second) * self.window_secs();
        allowed.saturating_sub(retries)
    }

    fn try_spend(&mut self, now: Instant) -> bool {
        if self.remaining(now) == 0 {
            return false;
        }
        let slot = self.slot(now);
        slot.retries = slot.retries.saturating_add(1);
        true
    }
}

/// A resource the breakers cap.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Resource {
    /// An upstream connection.
    Connections,
    /// A request waiting for a connection.
    PendingRequests,
    /// A request in flight.
    Requests,
    /// A retry in flight.
    Retries,
}

impl Resource {
    /// Every resource, in a fixed order (for counters).
    pub const ALL: [Resource; 4] = [
        Resource::Connections,
        Resource::PendingRequests,
        Resource::Requests,
        Resource::Retries,
    ];

    /// Position in [`Resource::ALL`].
    #[must_use]
    pub fn index(self) -> usize {
        self as usize
    }

    /// A stable snake_case name, for metrics (Envoy's `upstream_cx_overflow` and friends).
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Resource::Connections => "connections",
            Resource::PendingRequests => "pending_requests",
            Resource::Requests => "requests",
            Resource::Retries => "retries",
        }
    }
}

/// One unit of a resource, held until given back with [`CircuitBreakers::release`].
#[must_use = "a permit must be released, or the unit leaks"]
#[derive(Debug, PartialEq, Eq)]
pub struct Permit(Resource);

impl Permit {
    /// Which resource it holds.
    #[must_use]
    pub fn resource(&self) -> Resource {
        self.0
    }
}

/// The limit of a resource was reached: answer with an overflow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("circuit breaker open: {} at its limit", .0.as_str())]
pub struct Overflow(pub Resource);

/// The breakers of one cluster in one worker. See the module doc.
#[derive(Clone, Debug)]
pub struct CircuitBreakers {
    limits: [u32; 4],
    in_use: [u32; 4],
    overflows: [u64; 4],
    retry_budget: Option<RetryBudget>,
}

impl CircuitBreakers {
    /// Breakers with the whole limits of `settings` (one worker, or a test).
    #[must_use]
    pub fn new(settings: CircuitBreakerSettings) -> Self {
        CircuitBreakers {
            limits: Resource::ALL.map(|r| configured_limit(&settings, r)),
            in_use: [0; 4],
            overflows: [0; 4],
            retry_budget: settings.retry_budget.map(RetryBudget::new),
        }
    }

    /// One breaker set per worker (`workers ≥ 1`), each limit split so that the workers' limits
    /// add up to the cluster's: worker `i` gets `⌊limit / workers⌋`, plus one if `i < limit mod
    /// workers`. A retry budget is not split: every worker keeps the whole budget over its own
    /// requests (a share of requests scales with the worker's traffic by itself).
    #[must_use]
    pub fn per_worker(settings: CircuitBreakerSettings, workers: usize) -> Vec<Self> {
        debug_assert!(workers >= 1);
        let workers = workers.max(1);
        (0..workers)
            .map(|i| {
                let share = |limit: u32| {
                    let (q, r) = (limit as usize / workers, limit as usize % workers);
                    (q + usize::from(i < r)) as u32
                };
                CircuitBreakers {
                    limits: Resource::ALL.map(|r| match (r, settings.retry_budget) {
                        (Resource::Retries, Some(_)) => u32::MAX,
                        _ => share(configured_limit(&settings, r)),
                    }),
                    in_use: [0; 4],
                    overflows: [0; 4],
                    retry_budget: settings.retry_budget.map(RetryBudget::new),
                }
            })
            .collect()
    }

    /// Takes one unit of `resource`, or reports (and counts) an overflow.
    pub fn try_acquire(&mut self, resource: Resource) -> Result<Permit, Overflow> {
        let i = resource.index();
        if self.in_use[i] >= self.limits[i] {
            self.overflows[i] += 1;
            return Err(Overflow(resource));
        }
        self.in_use[i] += 1;
        self.check_invariants();
        Ok(Permit(resource))
    }

    /// Counts a request started at `now` towards the retry budget (no-op with a fixed
    /// `max_retries`). Call once per request, not per try.
    pub fn record_request(&mut self, now: Instant) {
        if let Some(b) = &mut self.retry_budget {
            b.record_request(now);
        }
    }

    /// Asks for one retry at `now`. `held` is the requester's retry unit: with a fixed
    /// `max_retries` one unit is taken on the first retry and covers the request's later
    /// retries; with a budget every retry spends from the budget, and the unit (taken on the
    /// first) only counts retrying requests for the gauges. On refusal the overflow is counted
    /// and `held` is left as it was.
    pub fn try_retry(&mut self, now: Instant, held: &mut Option<Permit>) -> Result<(), Overflow> {
        let Some(budget) = &mut self.retry_budget else {
            if held.is_none() {
                *held = Some(self.try_acquire(Resource::Retries)?);
            }
            return Ok(());
        };
        if !budget.try_spend(now) {
            self.overflows[Resource::Retries.index()] += 1;
            return Err(Overflow(Resource::Retries));
        }
        if held.is_none() {
            *held = Some(self.try_acquire(Resource::Retries)?);
        }
        Ok(())
    }

    /// Retries the budget would still allow at `now` (`None` with a fixed `max_retries`).
    #[must_use]
    pub fn retry_budget_remaining(&self, now: Instant) -> Option<u64> {
        self.retry_budget.as_ref().map(|b| b.remaining(now))
    }

    /// Gives a unit back.
    pub fn release(&mut self, permit: Permit) {
        let i = permit.0.index();
        debug_assert!(
            self.in_use[i] > 0,
            "release of {:?} never acquired",
            permit.0
        );
        self.in_use[i] = self.in_use[i].saturating_sub(1);
        self.check_invariants();
    }

    /// Units of `resource` held now.
    #[must_use]
    pub fn in_use(&self, resource: Resource) -> u32 {
        self.in_use[resource.index()]
    }

    /// This breaker's limit for `resource`.
    #[must_use]
    pub fn limit(&self, resource: Resource) -> u32 {
        self.limits[resource.index()]
    }

    /// Units of `resource` that can still be acquired (Envoy's `remaining_*` gauges).
    #[must_use]
    pub fn remaining(&self, resource: Resource) -> u32 {
        self.limit(resource) - self.in_use(resource)
    }

    /// Whether the next `try_acquire(resource)` would overflow (Envoy's `*_open` gauges).
    #[must_use]
    pub fn is_open(&self, resource: Resource) -> bool {
        self.remaining(resource) == 0
    }

    /// Overflows of `resource` since creation (Envoy's `upstream_rq_pending_overflow` etc.).
    #[must_use]
    pub fn overflows(&self, resource: Resource) -> u64 {
        self.overflows[resource.index()]
    }

    fn check_invariants(&self) {
        debug_assert!(
            self.retry_budget.is_none() || self.limit(Resource::Retries) == u32::MAX,
            "a retry budget leaves the retry count uncapped"
        );
        for r in Resource::ALL {
            debug_assert!(self.in_use(r) <= self.limit(r), "{r:?} over its limit");
        }
    }
}
