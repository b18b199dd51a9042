//! `TcpSession` driven by an arbitrary sequence of events, the way a driver would drive it
//! (the proptest `any_event_sequence_keeps_the_invariants` in core/src/tcp_proxy/tests.rs, with
//! more freedom: 1 to 4 hosts, any policy, any attempt budget the config allows, optional idle
//! timeout).
//!
//! Properties, whatever the events:
//! - at most `max_connect_attempts` `Connect`s, each to a host of the cluster;
//! - at most one `Close`, nothing after it, and `close_reason()` agrees with it;
//! - a timer is armed whenever the session waits for a connect or relays with an idle timeout;
//! - every cluster host's `active` is zero after `release`.
#![no_main]

use std::time::Duration;

use sluice_core::Instant;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use sluice_core::cluster::{ClusterState, HostId};
use sluice_core::config::{ClusterConfig, HostConfig, LbPolicy};
use sluice_core::rng::Rng;
use sluice_core::tcp_proxy::{Action, ConnectFailure, SessionConfig, Side, TcpSession};

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Policy {
    RoundRobin,
    WeightedRoundRobin,
    Random,
    LeastRequest,
}

impl From<Policy> for LbPolicy {
    fn from(p: Policy) -> Self {
        match p {
            Policy::RoundRobin => LbPolicy::RoundRobin,
            Policy::WeightedRoundRobin => LbPolicy::WeightedRoundRobin,
            Policy::Random => LbPolicy::Random,
            Policy::LeastRequest => LbPolicy::LeastRequest,
        }
    }
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Event {
    Connected,
    ConnectFailed {
        timeout: bool,
    },
    /// `downstream` picks the side; `n == 0` is EOF.
    Read {
        downstream: bool,
        n: u16,
    },
    Error {
        downstream: bool,
    },
    /// Advance the clock by this many milliseconds, then fire the timer if it is due.
    Advance(u16),
    Drain,
    SetAvailable {
        host: u8,
        available: bool,
    },
}

#[derive(Arbitrary, Debug)]
struct Input {
    hosts: u8,
    weights: [u8; 4],
    policy: Policy,
    attempts: u8,
    connect_timeout_ms: u16,
    idle_timeout_ms: Option<u16>,
    initially_unavailable: u8,
    seed: u64,
    events: Vec<Event>,
}

fn side(downstream: bool) -> Side {
    if downstream {
        Side::Downstream
    } else {
        Side::Upstream
    }
}

fn drain(s: &mut TcpSession, into: &mut Vec<Action>) {
    while let Some(a) = s.poll_action() {
        into.push(a);
    }
}

fuzz_target!(|input: Input| {
    let n_hosts = usize::from(input.hosts % 4) + 1;
    let attempts = u32::from(input.attempts % 10) + 1;
    let mut cluster = ClusterState::from_config(&ClusterConfig {
        name: "c".into(),
        connect_timeout: Duration::from_millis(u64::from(input.connect_timeout_ms) + 1),
        lb_policy: input.policy.into(),
        hosts: (0..n_hosts)
            .map(|i| HostConfig {
                address: format!("127.0.0.1:{}", 7000 + i).parse().unwrap(),
                weight: u32::from(input.weights[i]) % 1000 + 1,
                priority: 0,
                transport_socket_match: None,
                health: Default::default(),
            })
            .collect(),
        ..ClusterConfig::default()
    });
    for i in 0..n_hosts {
        if input.initially_unavailable & (1 << i) != 0 {
            cluster.set_available(HostId(i as u32), false);
        }
    }
    let config = SessionConfig {
        connect_timeout: Duration::from_millis(u64::from(input.connect_timeout_ms) + 1),
        idle_timeout: input
            .idle_timeout_ms
            .map(|ms| Duration::from_millis(u64::from(ms) + 1)),
        max_connect_attempts: attempts,
    };
    let mut rng = Rng::from_seed(input.seed);
    let t0 = Instant::ORIGIN;
    let mut now = t0;

    let mut s = TcpSession::new(now, config);
    s.start(now, &mut cluster, &mut rng);
    let mut actions = Vec::new();
    drain(&mut s, &mut actions);
    // Whether the driver has a connect in flight: the last Connect not yet answered.
    let mut connecting = matches!(actions.last(), Some(Action::Connect { .. }));
    let mut relaying = false;

    for e in input.events {
        match e {
            Event::Connected if connecting => {
                s.handle_connected(now, &mut cluster);
                connecting = false;
                relaying = true;
            }
            Event::ConnectFailed { timeout } if connecting => {
                let why = if timeout {
                    ConnectFailure::Timeout
                } else {
                    ConnectFailure::Refused
                };
                connecting = false;
                s.handle_connect_failed(now, &mut cluster, &mut rng, why);
            }
            Event::Connected | Event::ConnectFailed { .. } => {}
            Event::Read { downstream, n } => s.handle_read(now, side(downstream), usize::from(n)),
            Event::Error { downstream } => s.handle_error(now, side(downstream)),
            Event::Advance(ms) => {
                now += Duration::from_millis(u64::from(ms));
                if s.poll_timeout().is_some_and(|t| t <= now) {
                    // A connect timing out is the session's own decision: the driver drops the
                    // attempt, and any new Connect below starts another.
                    if connecting {
                        connecting = false;
                    }
                    s.handle_timeout(now, &mut cluster, &mut rng);
                }
            }
            Event::Drain => s.handle_drain_timeout(now),
            Event::SetAvailable { host, available } => {
                cluster.set_available(HostId(u32::from(host) % n_hosts as u32), available);
            }
        }
        let before = actions.len();
        drain(&mut s, &mut actions);
        for a in &actions[before..] {
            match a {
                Action::Connect { host, address } => {
                    assert!(host.index() < n_hosts, "{a:?}");
                    assert_eq!(*address, cluster.host(*host).address);
                    connecting = true;
                }
                Action::Close(_) => {
                    connecting = false;
                    relaying = false;
                }
                Action::ShutdownUpstreamWrite | Action::ShutdownDownstreamWrite => {
                    assert!(relaying, "half-close while not relaying: {a:?}");
                }
            }
        }
        if connecting {
            // A connect is pending: its timeout must be armed.
            assert!(s.poll_timeout().is_some(), "connecting without a timer");
            assert!(s.host().is_some());
        }
        if relaying && config.idle_timeout.is_some() {
            assert!(s.poll_timeout().is_some(), "relaying without an idle timer");
        }
        if s.close_reason().is_some() {
            assert_eq!(s.poll_timeout(), None, "closed with a timer armed");
        }
    }

    let connects = actions
        .iter()
        .filter(|a| matches!(a, Action::Connect { .. }))
        .count();
    assert!(
        connects as u32 <= attempts,
        "{connects} connects for {attempts} attempts: {actions:?}"
    );
    assert_eq!(s.attempts() as usize, connects);
    let closes: Vec<usize> = actions
        .iter()
        .enumerate()
        .filter(|(_, a)| matches!(a, Action::Close(_)))
        .map(|(i, _)| i)
        .collect();
    assert!(closes.len() <= 1, "more than one Close: {actions:?}");
    match closes.first() {
        Some(&i) => {
            assert_eq!(i, actions.len() - 1, "something after Close: {actions:?}");
            assert_eq!(
                actions[i],
                Action::Close(s.close_reason().expect("Close emitted, no close_reason"))
            );
        }
        None => assert!(s.close_reason().is_none(), "close_reason without a Close"),
    }
    s.release(&mut cluster);
    s.release(&mut cluster);
    assert!(
        cluster.hosts().iter().all(|h| h.active == 0),
        "active left after release: {:?}",
        cluster.hosts()
    );
});
