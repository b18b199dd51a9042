//! The upstream side of the core: what a worker knows about the hosts it sends to, and how it
//! picks one.
//!
//! Layers, bottom up (no module here reads one above it; `tests/module_graph.rs` checks it):
//!
//! - [`host`]: an upstream host ([`host::Host`]) and its index in its cluster
//!   ([`host::HostId`]);
//! - [`lb`]: the load balancers, over a slice of hosts, and the priority levels' loads
//!   ([`lb::priority`]);
//! - [`health`]: active health checking, outlier detection, circuit breakers and the retry
//!   budget, over host ids, and the availability (panic threshold) they decide;
//! - [`cluster`]: one cluster's hosts, balancer, priority loads and circuit breakers as one
//!   worker sees them.
//!
//! Every setting they take is part of the config model ([`crate::config`]). The modules are
//! also re-exported at the crate root (`sluice_core::cluster`, `sluice_core::lb`, ...), their
//! paths before they were grouped here.

pub mod cluster;
pub mod health;
pub mod host;
pub mod lb;
