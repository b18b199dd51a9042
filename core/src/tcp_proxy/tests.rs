use super::*;
use crate::rng::Rng;
use crate::test_support::{self, epoch};
use proptest::prelude::*;

fn cluster(n: usize) -> ClusterState {
    test_support::cluster(n, 7000)
}

fn config(attempts: u32) -> SessionConfig {
    SessionConfig {
        connect_timeout: Duration::from_secs(1),
        idle_timeout: Some(Duration::from_secs(10)),
        max_connect_attempts: attempts,
    }
}

fn drain(s: &mut TcpSession) -> Vec<Action> {
    std::iter::from_fn(|| s.poll_action()).collect()
}

fn connect_to(host: u32) -> Action {
    Action::Connect {
        host: HostId(host),
        address: format!("127.0.0.1:{}", 7000 + host).parse().unwrap(),
    }
}

#[test]
fn happy_path_with_half_close_in_both_orders() {
    for downstream_first in [true, false] {
        let t0 = epoch();
        let (mut c, mut rng) = (cluster(2), Rng::from_seed(1));
        let mut s = TcpSession::new(t0, config(3));
        s.start(t0, &mut c, &mut rng);
        assert_eq!(drain(&mut s), [connect_to(0)]);
        s.handle_connected(t0, &mut c);
        assert_eq!(c.host(HostId(0)).active, 1);
        s.handle_read(t0, Side::Downstream, 100);
        s.handle_read(t0, Side::Upstream, 40);
        let (first, second) = if downstream_first {
            (Side::Downstream, Side::Upstream)
        } else {
            (Side::Upstream, Side::Downstream)
        };
        s.handle_read(t0, first, 0);
        let half = drain(&mut s);
        assert_eq!(half.len(), 1);
        assert!(s.close_reason().is_none(), "half-closed is still open");
        s.handle_read(t0, second, 0);
        let end = drain(&mut s);
        assert_eq!(end.last(), Some(&Action::Close(CloseReason::Completed)));
        assert_eq!(s.bytes(), (100, 40));
        s.release(&mut c);
        s.release(&mut c);
        assert_eq!(c.host(HostId(0)).active, 0);
    }
}

#[test]
fn connect_failure_fails_over_to_another_host() {
    let t0 = epoch();
    let (mut c, mut rng) = (cluster(3), Rng::from_seed(1));
    let mut s = TcpSession::new(t0, config(3));
    s.start(t0, &mut c, &mut rng);
    assert_eq!(drain(&mut s), [connect_to(0)]);
    s.handle_connect_failed(t0, &mut c, &mut rng, ConnectFailure::Refused);
    assert_eq!(drain(&mut s), [connect_to(1)]);
    // The second attempt times out: handle_timeout before the deadline does nothing.
    s.handle_timeout(t0 + Duration::from_millis(999), &mut c, &mut rng);
    assert!(drain(&mut s).is_empty());
    assert_eq!(s.poll_timeout(), Some(t0 + Duration::from_secs(1)));
    s.handle_timeout(t0 + Duration::from_secs(1), &mut c, &mut rng);
    assert_eq!(drain(&mut s), [connect_to(2)]);
    s.handle_connect_failed(t0, &mut c, &mut rng, ConnectFailure::Refused);
    assert_eq!(drain(&mut s), [Action::Close(CloseReason::ConnectFailed)]);
    assert_eq!(s.attempts(), 3);
    assert_eq!(s.poll_timeout(), None);
}

#[test]
fn no_available_host_closes_at_once() {
    let t0 = epoch();
    let (mut c, mut rng) = (cluster(2), Rng::from_seed(1));
    c.set_available(HostId(0), false);
    c.set_available(HostId(1), false);
    let mut s = TcpSession::new(t0, config(3));
    s.start(t0, &mut c, &mut rng);
    assert_eq!(
        drain(&mut s),
        [Action::Close(CloseReason::NoHealthyUpstream)]
    );
}

#[test]
fn idle_timeout_is_lazy_and_moves_with_activity() {
    let t0 = epoch();
    let (mut c, mut rng) = (cluster(1), Rng::from_seed(1));
    let mut s = TcpSession::new(t0, config(1));
    s.start(t0, &mut c, &mut rng);
    drain(&mut s);
    s.handle_connected(t0, &mut c);
    assert_eq!(s.poll_timeout(), Some(t0 + Duration::from_secs(10)));
    s.handle_read(t0 + Duration::from_secs(6), Side::Upstream, 1);
    // The old deadline fires: not idle yet, the timer moves.
    s.handle_timeout(t0 + Duration::from_secs(10), &mut c, &mut rng);
    assert!(drain(&mut s).is_empty());
    assert_eq!(s.poll_timeout(), Some(t0 + Duration::from_secs(16)));
    s.handle_timeout(t0 + Duration::from_secs(16), &mut c, &mut rng);
    assert_eq!(drain(&mut s), [Action::Close(CloseReason::IdleTimeout)]);
}

#[test]
fn errors_name_the_side() {
    let t0 = epoch();
    for (side, reason) in [
        (Side::Downstream, CloseReason::DownstreamReset),
        (Side::Upstream, CloseReason::UpstreamReset),
    ] {
        let (mut c, mut rng) = (cluster(1), Rng::from_seed(1));
        let mut s = TcpSession::new(t0, config(1));
        s.start(t0, &mut c, &mut rng);
        s.handle_connected(t0, &mut c);
        drain(&mut s);
        s.handle_error(t0, side);
        s.handle_error(t0, side.other());
        assert_eq!(drain(&mut s), [Action::Close(reason)]);
    }
}

impl Side {
    fn other(self) -> Side {
        match self {
            Side::Downstream => Side::Upstream,
            Side::Upstream => Side::Downstream,
        }
    }
}

#[derive(Clone, Debug)]
enum Event {
    Connected,
    ConnectFailed,
    Read(bool, usize),
    Error(bool),
    Advance(u64),
    Drain,
    SetAvailable(u32, bool),
}

fn event() -> impl Strategy<Value = Event> {
    prop_oneof![
        Just(Event::Connected),
        Just(Event::ConnectFailed),
        (any::<bool>(), prop_oneof![Just(0usize), 1usize..5000])
            .prop_map(|(d, n)| Event::Read(d, n)),
        any::<bool>().prop_map(Event::Error),
        (0u64..15_000).prop_map(Event::Advance),
        Just(Event::Drain),
        (0u32..3, any::<bool>()).prop_map(|(h, a)| Event::SetAvailable(h, a)),
    ]
}

proptest! {
    /// Whatever happens, in any order: at most `max_connect_attempts` connects, exactly one
    /// close once the session is over and nothing after it, a timer whenever one is needed,
    /// and the cluster's active count back to zero after release.
    #[test]
    fn any_event_sequence_keeps_the_invariants(
        attempts in 1u32..5,
        events in prop::collection::vec(event(), 0..40),
        seed: u64,
    ) {
        let t0 = epoch();
        let mut now = t0;
        let (mut c, mut rng) = (cluster(3), Rng::from_seed(seed));
        let mut s = TcpSession::new(now, config(attempts));
        s.start(now, &mut c, &mut rng);
        let mut actions = drain(&mut s);
        for e in events {
            let connecting = matches!(s.state, State::Connecting { .. });
            match e {
                Event::Connected if connecting => s.handle_connected(now, &mut c),
                Event::ConnectFailed if connecting => {
                    s.handle_connect_failed(now, &mut c, &mut rng, ConnectFailure::Refused)
                }
                Event::Connected | Event::ConnectFailed => {}
                Event::Read(down, n) => s.handle_read(now, if down { Side::Downstream } else { Side::Upstream }, n),
                Event::Error(down) => s.handle_error(now, if down { Side::Downstream } else { Side::Upstream }),
                Event::Advance(ms) => {
                    now += Duration::from_millis(ms);
                    if s.poll_timeout().is_some_and(|t| t <= now) {
                        s.handle_timeout(now, &mut c, &mut rng);
                    }
                }
                Event::Drain => s.handle_drain_timeout(now),
                Event::SetAvailable(h, a) => c.set_available(HostId(h), a),
            }
            actions.extend(drain(&mut s));
            if matches!(s.state, State::Connecting { .. } | State::Relaying { .. })
                && s.config.idle_timeout.is_some()
            {
                prop_assert!(s.poll_timeout().is_some());
            }
        }
        let connects = actions.iter().filter(|a| matches!(a, Action::Connect { .. })).count();
        prop_assert!(connects as u32 <= attempts);
        let closes: Vec<usize> = actions.iter().enumerate()
            .filter(|(_, a)| matches!(a, Action::Close(_))).map(|(i, _)| i).collect();
        prop_assert!(closes.len() <= 1);
        if let Some(&i) = closes.first() {
            prop_assert_eq!(i, actions.len() - 1, "nothing after Close");
            prop_assert!(s.close_reason().is_some());
        } else {
            prop_assert!(s.close_reason().is_none());
        }
        s.release(&mut c);
        prop_assert!(c.hosts().iter().all(|h| h.active == 0));
    }
}

#[test]
fn a_direct_session_connects_to_its_address_and_never_touches_the_cluster() {
    let t0 = epoch();
    // An original_dst cluster has no hosts.
    let (mut c, mut rng) = (cluster(0), Rng::from_seed(1));
    let to: SocketAddr = "10.1.0.2:80".parse().unwrap();
    let direct = Action::Connect {
        host: DIRECT_HOST,
        address: to,
    };
    let mut s = TcpSession::new(t0, config(2));
    s.start_direct(t0, to);
    assert_eq!(drain(&mut s), [direct]);
    s.handle_connect_failed(t0, &mut c, &mut rng, ConnectFailure::Refused);
    assert_eq!(drain(&mut s), [direct], "failover retries the same address");
    s.handle_connected(t0, &mut c);
    assert_eq!(s.host(), Some(DIRECT_HOST));
    s.handle_read(t0, Side::Downstream, 5);
    s.handle_read(t0, Side::Downstream, 0);
    s.handle_read(t0, Side::Upstream, 0);
    assert_eq!(
        drain(&mut s).last(),
        Some(&Action::Close(CloseReason::Completed))
    );
    s.release(&mut c);
    assert_eq!(s.bytes(), (5, 0));
    assert_eq!(s.attempts(), 2);

    let mut s = TcpSession::new(t0, config(1));
    s.start_direct(t0, to);
    drain(&mut s);
    s.handle_timeout(t0 + Duration::from_secs(1), &mut c, &mut rng);
    assert_eq!(drain(&mut s), [Action::Close(CloseReason::ConnectFailed)]);
}
