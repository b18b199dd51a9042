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
//! ## Invariants (checked in debug builds)
//!
//! - `in_use(r) ≤ limit(r)` for every resource;
//! - `in_use(r)` equals acquisitions minus releases (never underflows).

/// Circuit breaker limits of one cluster (Envoy's defaults, which issue 5's example repeats).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct CircuitBreakerSettings {
    /// Most connections open to the cluster's hosts.
    pub max_connections: u32,
    /// Most requests waiting for a connection.
    pub max_pending_requests: u32,
    /// Most requests in flight.
    pub max_requests: u32,
    /// Most retries in flight.
    pub max_retries: u32,
}

impl Default for CircuitBreakerSettings {
    fn default() -> Self {
        CircuitBreakerSettings {
            max_connections: 1024,
            max_pending_requests: 1024,
            max_requests: 1024,
            max_retries: 3,
        }
    }
}

impl CircuitBreakerSettings {
    fn limit(&self, r: Resource) -> u32 {
        match r {
            Resource::Connections => self.max_connections,
            Resource::PendingRequests => self.max_pending_requests,
            Resource::Requests => self.max_requests,
            Resource::Retries => self.max_retries,
        }
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
}

impl CircuitBreakers {
    /// Breakers with the whole limits of `settings` (one worker, or a test).
    #[must_use]
    pub fn new(settings: CircuitBreakerSettings) -> Self {
        CircuitBreakers {
            limits: Resource::ALL.map(|r| settings.limit(r)),
            in_use: [0; 4],
            overflows: [0; 4],
        }
    }

    /// One breaker set per worker (`workers ≥ 1`), each limit split so that the workers' limits
    /// add up to the cluster's: worker `i` gets `⌊limit / workers⌋`, plus one if `i < limit mod
    /// workers`.
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
                    limits: Resource::ALL.map(|r| share(settings.limit(r))),
                    in_use: [0; 4],
                    overflows: [0; 4],
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
        for r in Resource::ALL {
            debug_assert!(self.in_use(r) <= self.limit(r), "{r:?} over its limit");
        }
    }
}
