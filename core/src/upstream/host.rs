//! An upstream host as a worker sees it ([`Host`]) and its index in its cluster ([`HostId`]).
//!
//! The bottom of the upstream layer: the balancers ([`crate::lb`]) pick among hosts, health
//! checking and outlier detection ([`crate::health`]) track them by id, and a cluster
//! ([`crate::cluster::ClusterState`]) owns them; this module reads none of those.

use std::net::SocketAddr;

/// Index of a host within its cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HostId(pub u32);

impl HostId {
    /// The index as `usize`.
    #[must_use]
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// One upstream host and its live state.
#[derive(Clone, Debug)]
pub struct Host {
    /// Where it is.
    pub address: SocketAddr,
    /// Its relative weight (≥ 1).
    pub weight: u32,
    /// Whether the balancer may pick it.
    pub available: bool,
    /// Connections (L4) or requests (L7) it is serving now.
    pub active: u32,
    /// Smooth weighted round robin's running weight.
    pub(crate) swrr_current: i64,
}
