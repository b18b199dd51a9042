//! Helpers shared by the core's unit tests.

use std::time::Duration;

use crate::time::Instant;

use crate::cluster::ClusterState;
use crate::config::{ClusterConfig, HostConfig, LbPolicy};

/// The instant tests start from: state machines only compare instants they were given, and
/// no test reads a clock.
pub(crate) fn epoch() -> Instant {
    Instant::ORIGIN
}

/// A round-robin cluster of `n` weight-1 hosts on `127.0.0.1:base_port+i`.
pub(crate) fn cluster(n: usize, base_port: u16) -> ClusterState {
    ClusterState::from_config(&ClusterConfig {
        name: "c".into(),
        connect_timeout: Duration::from_secs(1),
        lb_policy: LbPolicy::RoundRobin,
        hosts: (0..n)
            .map(|i| HostConfig {
                address: format!("127.0.0.1:{}", base_port as usize + i)
                    .parse()
                    .unwrap(),
                weight: 1,
                priority: 0,
                transport_socket_match: None,
                health: Default::default(),
            })
            .collect(),
        ..ClusterConfig::default()
    })
}
