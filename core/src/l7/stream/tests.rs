use std::time::Duration;

use proptest::prelude::*;

use super::*;
use crate::config::http::RetryOn;
use crate::config::{ClusterConfig, HostConfig, LbPolicy};
use crate::health::{CircuitBreakerSettings, UpstreamResult};
use crate::l7::exchange::RetryPolicyView;
use crate::rng::Rng;
use crate::test_support::epoch;

/// Small limits so that the overflow paths are reachable: 1 request, 2 connections, 1 pending
/// connect, 1 concurrent retry.
fn cluster(hosts: usize) -> ClusterState {
    ClusterState::from_config(&ClusterConfig {
        name: "c".into(),
        connect_timeout: Duration::from_secs(1),
        lb_policy: LbPolicy::RoundRobin,
        hosts: (0..hosts)
            .map(|i| HostConfig {
                address: format!("127.0.0.1:{}", 9000 + i).parse().unwrap(),
                weight: 1,
                priority: 0,
                transport_socket_match: None,
                health: Default::default(),
            })
            .collect(),
        circuit_breakers: CircuitBreakerSettings {
            max_connections: 2,
            max_pending_requests: 1,
            max_requests: 1,
            max_retries: 1,
            retry_budget: None,
        },
        ..ClusterConfig::default()
    })
}

fn config(timeout_ms: u64, retries: u32) -> ExchangeConfig {
    ExchangeConfig {
        timeout: Some(Duration::from_millis(timeout_ms)),
        connect_timeout: Duration::from_secs(1),
        retry: Some(RetryPolicyView {
            retry_on: RetryOn {
                grpc_codes: 0,
                connect_failure: true,
                reset: true,
                server_error: true,
                gateway_error: true,
                retriable_4xx: false,
                refused_stream: false,
                retriable_status_codes: false,
                status_codes: Default::default(),
            },
            num_retries: retries,
            per_try_timeout: Some(Duration::from_secs(2)),
        }),
        idempotent: true,
        replayable: true,
        hash: None,
        request_complete: true,
    }
}

fn drain(s: &mut Stream) -> Vec<Output> {
    std::iter::from_fn(|| s.poll_output()).collect()
}

fn events(outputs: &[Output]) -> Vec<Event> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::Event(e) => Some(*e),
            _ => None,
        })
        .collect()
}

fn in_use(c: &ClusterState, r: Resource) -> u32 {
    c.breakers().in_use(r)
}

#[test]
fn a_request_forwarded_on_a_fresh_connection() {
    let (mut c, mut rng, now) = (cluster(1), Rng::from_seed(1), epoch());
    let mut s = Stream::new(now, config(15_000, 1));
    s.handle_input(now, Input::Admit, &mut c, &mut rng);
    assert_eq!(events(&drain(&mut s)), [Event::Admitted]);
    assert_eq!(in_use(&c, Resource::Requests), 1);
    s.handle_input(now, Input::Start, &mut c, &mut rng);
    let out = drain(&mut s);
    let host = HostId(0);
    assert_eq!(
        out,
        [
            Output::Event(Event::TryStarted { host, retry: false }),
            Output::Connect {
                host,
                address: "127.0.0.1:9000".parse().unwrap(),
                allow_pooled: true
            },
            Output::ArmTimer {
                timer: Timer::Route,
                at: now + Duration::from_secs(15)
            },
            Output::ArmTimer {
                timer: Timer::Try,
                at: now + Duration::from_secs(1)
            },
        ]
    );
    // Nothing pooled: a fresh connection takes a connection and a pending unit.
    s.handle_input(now, Input::OpenConnection, &mut c, &mut rng);
    assert_eq!(drain(&mut s), [Output::OpenConnection]);
    assert_eq!(in_use(&c, Resource::Connections), 1);
    assert_eq!(in_use(&c, Resource::PendingRequests), 1);
    s.handle_input(now, Input::Connected { reused: false }, &mut c, &mut rng);
    let mut out = drain(&mut s);
    let Output::ConnectionPermit(permit) = out.remove(0) else {
        panic!("the connection's unit is handed over: {out:?}")
    };
    assert_eq!(
        out,
        [Output::ArmTimer {
            timer: Timer::Try,
            at: now + Duration::from_secs(2)
        }],
        "the per-try timer replaces the connect timer"
    );
    assert_eq!(in_use(&c, Resource::PendingRequests), 0);
    s.handle_input(now, Input::RequestWritten, &mut c, &mut rng);
    assert!(drain(&mut s).is_empty());
    s.handle_input(
        now,
        Input::ResponseHead {
            status: 200,
            grpc_status: None,
        },
        &mut c,
        &mut rng,
    );
    assert_eq!(
        drain(&mut s),
        [
            Output::Event(Event::ResponseStarted { status: 200 }),
            Output::ForwardResponse,
            Output::CancelTimer(Timer::Try),
        ]
    );
    s.handle_input(now, Input::ResponseComplete, &mut c, &mut rng);
    assert_eq!(
        drain(&mut s),
        [
            Output::Event(Event::Finished { flag: None }),
            Output::CancelTimer(Timer::Route),
        ]
    );
    assert!(s.is_finished());
    assert_eq!(in_use(&c, Resource::Requests), 0);
    // The connection outlives the stream, holding its unit.
    assert_eq!(in_use(&c, Resource::Connections), 1);
    c.breakers_mut().release(permit);
    assert_eq!(c.hosts()[0].active, 0);
}

/// The bug this stream fixes, at its level: the route timer firing during a connect is a
/// route timeout (504), gives back the connect's units, and blames no host.
#[test]
fn a_route_timeout_during_a_connect_is_the_routes() {
    let (mut c, mut rng, now) = (cluster(1), Rng::from_seed(1), epoch());
    let mut s = Stream::new(now, config(100, 2));
    s.handle_input(now, Input::Admit, &mut c, &mut rng);
    s.handle_input(now, Input::Start, &mut c, &mut rng);
    s.handle_input(now, Input::OpenConnection, &mut c, &mut rng);
    drain(&mut s);
    assert_eq!(s.poll_timeout(), Some(now + Duration::from_millis(100)));
    let later = now + Duration::from_millis(100);
    s.handle_input(later, Input::Timeout, &mut c, &mut rng);
    let out = drain(&mut s);
    assert!(
        out.contains(&Output::Respond {
            status: 504,
            flag: ResponseFlag::UpstreamTimeout
        }),
        "{out:?}"
    );
    let evs = events(&out);
    assert_eq!(
        evs,
        [
            Event::Exchange(exchange::Event::RouteTimedOut {
                host: Some(HostId(0)),
                connected: false
            }),
            Event::Finished {
                flag: Some(ResponseFlag::UpstreamTimeout)
            }
        ]
    );
    let Event::Exchange(e) = evs[0] else {
        unreachable!()
    };
    assert_eq!(e.upstream_result(), None);
    for r in [
        Resource::Requests,
        Resource::PendingRequests,
        Resource::Connections,
    ] {
        assert_eq!(in_use(&c, r), 0, "{r:?}");
    }
}

#[test]
fn a_connect_timeout_retries_and_blames_the_host() {
    let (mut c, mut rng, now) = (cluster(2), Rng::from_seed(1), epoch());
    let mut s = Stream::new(now, config(15_000, 1));
    s.handle_input(now, Input::Admit, &mut c, &mut rng);
    s.handle_input(now, Input::Start, &mut c, &mut rng);
    s.handle_input(now, Input::OpenConnection, &mut c, &mut rng);
    drain(&mut s);
    let later = now + Duration::from_secs(1);
    s.handle_input(later, Input::Timeout, &mut c, &mut rng);
    let evs = events(&drain(&mut s));
    let [Event::Exchange(e)] = evs[..] else {
        panic!("{evs:?}")
    };
    assert_eq!(
        e.upstream_result(),
        Some((HostId(0), UpstreamResult::ConnectFailure))
    );
    assert_eq!(in_use(&c, Resource::Connections), 0);
    assert_eq!(in_use(&c, Resource::PendingRequests), 0);
    // After the backoff, the retry goes to the other host.
    let at = s.poll_timeout().unwrap();
    s.handle_input(at, Input::Timeout, &mut c, &mut rng);
    assert!(events(&drain(&mut s)).contains(&Event::TryStarted {
        host: HostId(1),
        retry: true
    }));
    s.handle_input(at, Input::Abort, &mut c, &mut rng);
    drain(&mut s);
    for r in [
        Resource::Requests,
        Resource::PendingRequests,
        Resource::Connections,
        Resource::Retries,
    ] {
        assert_eq!(in_use(&c, r), 0, "{r:?}");
    }
}

#[test]
fn overflows_answer_503_uo_and_hold_nothing() {
    let (mut c, mut rng, now) = (cluster(1), Rng::from_seed(1), epoch());
    // max_requests (1) taken by another request.
    let other = c.breakers_mut().try_acquire(Resource::Requests).unwrap();
    let mut s = Stream::new(now, config(15_000, 1));
    s.handle_input(now, Input::Admit, &mut c, &mut rng);
    let out = drain(&mut s);
    assert_eq!(
        out,
        [
            Output::Event(Event::Overflow(Resource::Requests)),
            Output::Respond {
                status: 503,
                flag: ResponseFlag::UpstreamOverflow
            },
            Output::Event(Event::Finished {
                flag: Some(ResponseFlag::UpstreamOverflow)
            }),
        ]
    );
    c.breakers_mut().release(other);
    // max_pending_requests (1) taken: the connection unit taken first is given back.
    let pending = c
        .breakers_mut()
        .try_acquire(Resource::PendingRequests)
        .unwrap();
    let mut s = Stream::new(now, config(15_000, 1));
    s.handle_input(now, Input::Admit, &mut c, &mut rng);
    s.handle_input(now, Input::Start, &mut c, &mut rng);
    drain(&mut s);
    s.handle_input(now, Input::OpenConnection, &mut c, &mut rng);
    assert!(events(&drain(&mut s)).contains(&Event::Overflow(Resource::PendingRequests)));
    assert!(s.is_finished());
    c.breakers_mut().release(pending);
    for r in [
        Resource::Requests,
        Resource::PendingRequests,
        Resource::Connections,
    ] {
        assert_eq!(in_use(&c, r), 0, "{r:?}");
    }
}

#[test]
fn an_upgrade_keeps_the_request_unit_until_the_tunnel_closes() {
    let (mut c, mut rng, now) = (cluster(1), Rng::from_seed(1), epoch());
    let mut s = Stream::new(now, config(15_000, 0));
    for input in [
        Input::Admit,
        Input::Start,
        Input::Connected { reused: true },
        Input::ResponseHead {
            status: 101,
            grpc_status: None,
        },
        Input::Upgraded,
    ] {
        s.handle_input(now, input, &mut c, &mut rng);
        drain(&mut s);
    }
    assert_eq!(c.hosts()[0].active, 0, "the upstream try is over");
    assert_eq!(in_use(&c, Resource::Requests), 1, "the tunnel is a request");
    s.handle_input(now, Input::ResponseComplete, &mut c, &mut rng);
    assert!(events(&drain(&mut s)).contains(&Event::Finished { flag: None }));
    assert_eq!(in_use(&c, Resource::Requests), 0);
}

/// One step of a driver, applied when it fits the stream's state (see the proptest).
#[derive(Clone, Debug)]
enum Step {
    UsePooled,
    Open,
    Connected,
    ConnectFailed,
    Written,
    Complete,
    Closed(bool, bool),
    Protocol,
    Head(u16),
    Upgrade,
    Done,
    Abort,
    Advance(u64),
    CloseConnection,
    HoldUnit(u8),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        Just(Step::UsePooled),
        Just(Step::Open),
        Just(Step::Connected),
        Just(Step::ConnectFailed),
        Just(Step::Written),
        Just(Step::Complete),
        (any::<bool>(), any::<bool>()).prop_map(|(w, r)| Step::Closed(w, r)),
        Just(Step::Protocol),
        prop::sample::select(vec![101u16, 200, 409, 500, 503]).prop_map(Step::Head),
        Just(Step::Upgrade),
        Just(Step::Done),
        Just(Step::Abort),
        (0u64..3_000).prop_map(Step::Advance),
        Just(Step::CloseConnection),
        (0u8..4).prop_map(Step::HoldUnit),
    ]
}

/// What the test's driver knows of the stream, from its outputs alone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Seen {
    Idle,
    Connect { allow_pooled: bool },
    Opening,
    Connected,
    Forwarding,
    Tunnel,
    Over,
}

proptest! {
    /// Whatever the driver sees and however the breakers are loaded by others: every unit the
    /// stream takes is given back exactly once (the breakers' counts always equal the stream's
    /// units plus the connections it handed over plus the others'), at most one answer
    /// (forwarded or local) goes out, `Finished` comes exactly once, and once finished (or
    /// aborted) the stream holds nothing.
    #[test]
    fn every_permit_is_released_exactly_once(
        steps in prop::collection::vec(step(), 0..60),
        retries in 0u32..3,
        streamed: bool,
        seed: u64,
    ) {
        let (mut c, mut rng, mut now) = (cluster(3), Rng::from_seed(seed), epoch());
        let mut cfg = config(4_000, retries);
        cfg.request_complete = !streamed;
        cfg.replayable = !streamed;
        let mut s = Stream::new(now, cfg);
        let mut others: Vec<Permit> = Vec::new();
        let mut connections: Vec<Permit> = Vec::new();
        let mut seen = Seen::Idle;
        let (mut answers, mut finished) = (0, 0);
        let resources = [Resource::Requests, Resource::PendingRequests, Resource::Connections, Resource::Retries];
        s.handle_input(now, Input::Admit, &mut c, &mut rng);
        let mut started = false;
        for (i, st) in steps.into_iter().enumerate() {
            let input = match (st, seen) {
                _ if !started && seen != Seen::Over => { started = true; Some(Input::Start) }
                (Step::UsePooled, Seen::Connect { allow_pooled: true }) => Some(Input::Connected { reused: true }),
                (Step::Open, Seen::Connect { .. }) => Some(Input::OpenConnection),
                (Step::Connected, Seen::Opening) => Some(Input::Connected { reused: false }),
                (Step::ConnectFailed, Seen::Opening) => Some(Input::ConnectFailed),
                (Step::Written, Seen::Connected) => Some(Input::RequestWritten),
                (Step::Complete, _) => Some(Input::RequestComplete),
                (Step::Closed(w, r), Seen::Connected) => Some(Input::TryFailed(TryFailure::Closed { request_written: w, reused: r })),
                (Step::Protocol, Seen::Connected) => Some(Input::TryFailed(TryFailure::ProtocolError)),
                (Step::Head(st), Seen::Connected) => Some(Input::ResponseHead { status: st, grpc_status: None }),
                (Step::Upgrade, Seen::Forwarding) => Some(Input::Upgraded),
                (Step::Done, Seen::Forwarding | Seen::Tunnel) => Some(Input::ResponseComplete),
                (Step::Abort, _) => Some(Input::Abort),
                (Step::Advance(ms), _) => {
                    now += Duration::from_millis(ms);
                    s.poll_timeout().filter(|t| *t <= now).map(|_| Input::Timeout)
                }
                (Step::CloseConnection, _) => {
                    if let Some(p) = connections.pop() { c.breakers_mut().release(p); }
                    None
                }
                (Step::HoldUnit(k), _) => {
                    // Another request takes (or gives back) a unit.
                    let r = resources[usize::from(k)];
                    if let Some(at) = others.iter().position(|p| p.resource() == r) {
                        c.breakers_mut().release(others.swap_remove(at));
                    } else if let Ok(p) = c.breakers_mut().try_acquire(r) {
                        others.push(p);
                    }
                    None
                }
                _ => None,
            };
            if let Some(input) = input {
                s.handle_input(now, input, &mut c, &mut rng);
                if input == Input::Timeout || matches!(input, Input::ConnectFailed | Input::TryFailed(_)) {
                    // A failed or timed-out try: the driver drops its connection (what comes
                    // next, a retry or an answer, is in the outputs).
                    if matches!(seen, Seen::Connect { .. } | Seen::Connected | Seen::Opening) { seen = Seen::Idle; }
                }
                if let Input::Connected { .. } = input { seen = Seen::Connected; }
                if input == Input::Upgraded { seen = Seen::Tunnel; }
            }
            while let Some(o) = s.poll_output() {
                match o {
                    Output::Connect { allow_pooled, .. } => seen = Seen::Connect { allow_pooled },
                    Output::OpenConnection => seen = Seen::Opening,
                    Output::ConnectionPermit(p) => connections.push(p),
                    Output::ForwardResponse => { answers += 1; seen = Seen::Forwarding; }
                    Output::DiscardResponse => seen = Seen::Idle,
                    Output::Respond { .. } => { answers += 1; seen = Seen::Over; }
                    Output::AbortResponse => {
                        prop_assert_eq!(seen, Seen::Forwarding);
                        seen = Seen::Over;
                    }
                    Output::Event(Event::Finished { .. }) => { finished += 1; seen = Seen::Over; }
                    Output::ArmTimer { .. } | Output::CancelTimer(_) | Output::Event(_) => {}
                }
            }
            let (rq, pending, cx) = s.permits_held();
            // What the stream holds is what the driver's view says it needs: the request's
            // unit until it is finished, the opening units only while a connect is pending.
            prop_assert_eq!(rq, !s.is_finished(), "step {}", i);
            prop_assert_eq!(pending, seen == Seen::Opening, "step {}", i);
            prop_assert_eq!(cx, seen == Seen::Opening, "step {}", i);
            let others_of = |r: Resource| others.iter().filter(|p| p.resource() == r).count() as u32;
            prop_assert_eq!(in_use(&c, Resource::Requests), u32::from(rq) + others_of(Resource::Requests), "step {}", i);
            prop_assert_eq!(in_use(&c, Resource::PendingRequests), u32::from(pending) + others_of(Resource::PendingRequests), "step {}", i);
            prop_assert_eq!(
                in_use(&c, Resource::Connections),
                u32::from(cx) + connections.len() as u32 + others_of(Resource::Connections),
                "step {}", i
            );
            prop_assert!(answers <= 1, "two answers");
            prop_assert!(finished <= 1, "finished twice");
            prop_assert_eq!(finished == 1, s.is_finished());
            if s.is_finished() {
                prop_assert_eq!((rq, pending, cx), (false, false, false));
                prop_assert_eq!(s.poll_timeout(), None, "a finished stream keeps no timer");
            }
        }
        s.handle_input(now, Input::Abort, &mut c, &mut rng);
        while let Some(o) = s.poll_output() {
            prop_assert!(!matches!(o, Output::ConnectionPermit(_)), "a permit handed out on Abort");
        }
        for p in others.drain(..).chain(connections.drain(..)) {
            c.breakers_mut().release(p);
        }
        for r in resources {
            prop_assert_eq!(in_use(&c, r), 0, "{:?} leaked", r);
        }
        prop_assert!(c.hosts().iter().all(|h| h.active == 0), "host load leaked");
    }
}
