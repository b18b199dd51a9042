use super::*;
use crate::config::http::RetryOn;
use crate::rng::Rng;
use crate::test_support::{self, epoch};
use proptest::prelude::*;

fn cluster(n: usize) -> ClusterState {
    test_support::cluster(n, 8000)
}

fn all_retry_on() -> RetryOn {
    RetryOn {
        grpc_codes: 0,
        connect_failure: true,
        reset: true,
        server_error: true,
        gateway_error: true,
        retriable_4xx: true,
        refused_stream: true,
        retriable_status_codes: false,
        status_codes: Default::default(),
    }
}

fn config(idempotent: bool, retries: u32) -> ExchangeConfig {
    ExchangeConfig {
        timeout: Some(Duration::from_secs(15)),
        connect_timeout: Duration::from_secs(1),
        retry: Some(RetryPolicyView {
            retry_on: all_retry_on(),
            num_retries: retries,
            per_try_timeout: Some(Duration::from_secs(2)),
        }),
        idempotent,
        replayable: true,
        hash: None,
        request_complete: true,
    }
}

#[test]
fn timeouts_start_when_a_streamed_request_is_complete() {
    let (mut c, mut rng, mut now) = (cluster(1), Rng::from_seed(1), epoch());
    let mut e = Exchange::new(
        now,
        ExchangeConfig {
            request_complete: false,
            replayable: false,
            ..config(true, 1)
        },
    );
    e.start(now, &mut c, &mut rng);
    let Some(Action::Connect { .. }) = e.poll_action() else {
        panic!("connect first")
    };
    // Connecting: only the connect timeout runs.
    assert_eq!(e.poll_timeout(), Some(now + Duration::from_secs(1)));
    e.handle_connected(now, false, &mut c);
    e.handle_request_written();
    // Uploading for a minute: no route (15 s) nor per-try (2 s) timeout runs.
    assert_eq!(e.poll_timeout(), None);
    now += Duration::from_secs(60);
    e.handle_request_complete(now);
    assert_eq!(e.poll_timeout(), Some(now + Duration::from_secs(2)));
    // Called again: nothing moves.
    e.handle_request_complete(now + Duration::from_secs(1));
    assert_eq!(e.poll_timeout(), Some(now + Duration::from_secs(2)));
}

/// Runs the exchange's timers until the next action.
fn next_action(e: &mut Exchange, now: &mut Instant, c: &mut ClusterState, rng: &mut Rng) -> Action {
    for _ in 0..10 {
        if let Some(a) = e.poll_action() {
            return a;
        }
        *now = e.poll_timeout().expect("a timer when no action is pending");
        e.handle_timeout(*now, c, rng);
    }
    panic!("no action")
}

#[test]
fn connect_failures_retry_on_other_hosts_then_answer_502() {
    let (mut c, mut rng, mut now) = (cluster(3), Rng::from_seed(1), epoch());
    let mut e = Exchange::new(now, config(false, 2));
    e.start(now, &mut c, &mut rng);
    let mut hosts = Vec::new();
    for _ in 0..3 {
        let Action::Connect {
            host, allow_pooled, ..
        } = next_action(&mut e, &mut now, &mut c, &mut rng)
        else {
            panic!()
        };
        assert!(allow_pooled);
        hosts.push(host);
        e.handle_failure(now, TryFailure::ConnectFailed, &mut c, &mut rng);
    }
    hosts.sort();
    assert_eq!(
        hosts,
        [HostId(0), HostId(1), HostId(2)],
        "each retry on another host"
    );
    assert_eq!(
        next_action(&mut e, &mut now, &mut c, &mut rng),
        Action::LocalReply {
            status: 502,
            flag: ResponseFlag::UpstreamConnectFailure
        }
    );
    assert!(e.is_done());
}

#[test]
fn backoff_is_jittered_and_bounded() {
    let (mut c, mut rng, now) = (cluster(2), Rng::from_seed(7), epoch());
    let mut e = Exchange::new(now, config(true, 10));
    e.start(now, &mut c, &mut rng);
    let mut t = now;
    for n in 1..=6u32 {
        assert!(matches!(e.poll_action(), Some(Action::Connect { .. })));
        e.handle_failure(t, TryFailure::ConnectFailed, &mut c, &mut rng);
        let until = e.poll_timeout().unwrap();
        let ceiling = (BACKOFF_BASE * (1 << (n - 1))).min(BACKOFF_MAX);
        assert!(
            until - t <= ceiling,
            "retry {n}: {:?} > {ceiling:?}",
            until - t
        );
        t = until;
        e.handle_timeout(t, &mut c, &mut rng);
    }
}

#[test]
fn non_idempotent_request_is_not_retried_once_written() {
    let (mut c, mut rng, mut now) = (cluster(2), Rng::from_seed(1), epoch());
    let mut e = Exchange::new(now, config(false, 3));
    e.start(now, &mut c, &mut rng);
    next_action(&mut e, &mut now, &mut c, &mut rng);
    e.handle_connected(now, true, &mut c);
    e.handle_request_written();
    e.handle_failure(
        now,
        TryFailure::Closed {
            request_written: true,
            reused: true,
        },
        &mut c,
        &mut rng,
    );
    assert_eq!(
        e.poll_action(),
        Some(Action::LocalReply {
            status: 502,
            flag: ResponseFlag::UpstreamConnectionTermination
        })
    );
    assert!(c.hosts().iter().all(|h| h.active == 0));
}

#[test]
fn stale_pooled_connection_is_retried_once_fresh_even_without_a_policy() {
    let (mut c, mut rng, mut now) = (cluster(2), Rng::from_seed(1), epoch());
    let mut cfg = config(true, 0);
    cfg.retry = None;
    let mut e = Exchange::new(now, cfg);
    e.start(now, &mut c, &mut rng);
    next_action(&mut e, &mut now, &mut c, &mut rng);
    e.handle_connected(now, true, &mut c);
    e.handle_request_written();
    e.handle_failure(
        now,
        TryFailure::Closed {
            request_written: true,
            reused: true,
        },
        &mut c,
        &mut rng,
    );
    let Some(Action::Connect { allow_pooled, .. }) = e.poll_action() else {
        panic!("expected a fresh retry")
    };
    assert!(!allow_pooled, "the stale retry uses a fresh connection");
    e.handle_connected(now, false, &mut c);
    e.handle_request_written();
    e.handle_failure(
        now,
        TryFailure::Closed {
            request_written: true,
            reused: false,
        },
        &mut c,
        &mut rng,
    );
    assert!(
        matches!(
            e.poll_action(),
            Some(Action::LocalReply { status: 502, .. })
        ),
        "only once"
    );
}

#[test]
fn retriable_5xx_for_idempotent_requests_then_the_last_answer_is_forwarded() {
    let (mut c, mut rng, mut now) = (cluster(2), Rng::from_seed(1), epoch());
    let mut e = Exchange::new(now, config(true, 1));
    e.start(now, &mut c, &mut rng);
    next_action(&mut e, &mut now, &mut c, &mut rng);
    e.handle_connected(now, false, &mut c);
    assert_eq!(
        e.handle_response_head(now, 503, &mut c, &mut rng),
        Verdict::Retry
    );
    next_action(&mut e, &mut now, &mut c, &mut rng);
    e.handle_connected(now, false, &mut c);
    assert_eq!(
        e.handle_response_head(now, 503, &mut c, &mut rng),
        Verdict::Forward,
        "budget spent"
    );
    e.handle_response_complete(&mut c);
    assert!(e.is_done());
    assert!(c.hosts().iter().all(|h| h.active == 0));
    // POST: a 5xx is forwarded at once.
    let mut e = Exchange::new(now, config(false, 3));
    e.start(now, &mut c, &mut rng);
    next_action(&mut e, &mut now, &mut c, &mut rng);
    e.handle_connected(now, false, &mut c);
    assert_eq!(
        e.handle_response_head(now, 500, &mut c, &mut rng),
        Verdict::Forward
    );
}

#[test]
fn retriable_status_codes_retry_the_listed_codes_only() {
    use crate::config::http::StatusCodes;
    let mut codes = StatusCodes::default();
    assert!(codes.insert(429) && codes.insert(503) && !codes.insert(600));
    let retry_on = RetryOn {
        retriable_status_codes: true,
        status_codes: codes,
        ..RetryOn::default()
    };
    let with = |idempotent: bool| ExchangeConfig {
        retry: Some(RetryPolicyView {
            retry_on,
            num_retries: 2,
            per_try_timeout: None,
        }),
        ..config(idempotent, 2)
    };
    let (mut c, mut rng, mut now) = (cluster(2), Rng::from_seed(1), epoch());
    for (status, idempotent, verdict) in [
        (503, true, Verdict::Retry),
        (429, true, Verdict::Retry),
        (500, true, Verdict::Forward),
        (502, true, Verdict::Forward),
        // A non-idempotent request that reached an upstream is never sent twice.
        (503, false, Verdict::Forward),
    ] {
        let mut e = Exchange::new(now, with(idempotent));
        e.start(now, &mut c, &mut rng);
        next_action(&mut e, &mut now, &mut c, &mut rng);
        e.handle_connected(now, false, &mut c);
        assert_eq!(
            e.handle_response_head(now, status, &mut c, &mut rng),
            verdict,
            "{status} idempotent={idempotent}"
        );
        if verdict == Verdict::Forward {
            e.handle_response_complete(&mut c);
        } else {
            next_action(&mut e, &mut now, &mut c, &mut rng);
            e.handle_connected(now, false, &mut c);
            e.handle_response_head(now, 200, &mut c, &mut rng);
            e.handle_response_complete(&mut c);
        }
        assert!(e.is_done());
    }
    // The condition alone retries nothing; the codes alone neither.
    for retry_on in [
        RetryOn {
            retriable_status_codes: true,
            ..RetryOn::default()
        },
        RetryOn {
            status_codes: codes,
            ..RetryOn::default()
        },
    ] {
        let mut e = Exchange::new(
            now,
            ExchangeConfig {
                retry: Some(RetryPolicyView {
                    retry_on,
                    num_retries: 2,
                    per_try_timeout: None,
                }),
                ..config(true, 2)
            },
        );
        e.start(now, &mut c, &mut rng);
        next_action(&mut e, &mut now, &mut c, &mut rng);
        e.handle_connected(now, false, &mut c);
        assert_eq!(
            e.handle_response_head(now, 503, &mut c, &mut rng),
            Verdict::Forward
        );
    }
}

#[test]
fn global_timeout_answers_504_and_per_try_timeout_retries() {
    let (mut c, mut rng, mut now) = (cluster(2), Rng::from_seed(1), epoch());
    let t0 = now;
    let mut e = Exchange::new(now, config(true, 5));
    e.start(now, &mut c, &mut rng);
    next_action(&mut e, &mut now, &mut c, &mut rng);
    e.handle_connected(now, false, &mut c);
    e.handle_request_written();
    // per-try timeout (2s) → retry on the other host
    let Action::Connect { .. } = next_action(&mut e, &mut now, &mut c, &mut rng) else {
        panic!()
    };
    assert!(now - t0 >= Duration::from_secs(2));
    e.handle_connected(now, false, &mut c);
    e.handle_request_written();
    let mut last = None;
    for _ in 0..20 {
        match next_action(&mut e, &mut now, &mut c, &mut rng) {
            Action::Connect { .. } => {
                e.handle_connected(now, false, &mut c);
                e.handle_request_written();
            }
            a @ Action::LocalReply { .. } => {
                last = Some(a);
                break;
            }
        }
    }
    assert_eq!(
        last,
        Some(Action::LocalReply {
            status: 504,
            flag: ResponseFlag::UpstreamTimeout
        })
    );
    assert!(
        now - t0 <= Duration::from_secs(15),
        "the route timeout bounds all retries"
    );
    assert!(c.hosts().iter().all(|h| h.active == 0));
}

#[test]
fn no_available_host_is_503() {
    let (mut c, mut rng, now) = (cluster(1), Rng::from_seed(1), epoch());
    c.set_available(HostId(0), false);
    let mut e = Exchange::new(now, config(true, 1));
    e.start(now, &mut c, &mut rng);
    assert_eq!(
        e.poll_action(),
        Some(Action::LocalReply {
            status: 503,
            flag: ResponseFlag::NoHealthyUpstream
        })
    );
}

#[derive(Clone, Debug)]
enum Ev {
    Connected(bool),
    Written,
    ConnectFailed,
    Closed(bool, bool),
    Protocol,
    Head(u16),
    Complete,
    Advance(u64),
}

fn ev() -> impl Strategy<Value = Ev> {
    prop_oneof![
        any::<bool>().prop_map(Ev::Connected),
        Just(Ev::Written),
        Just(Ev::ConnectFailed),
        (any::<bool>(), any::<bool>()).prop_map(|(a, b)| Ev::Closed(a, b)),
        Just(Ev::Protocol),
        prop::sample::select(vec![200u16, 404, 409, 500, 502, 503, 504]).prop_map(Ev::Head),
        Just(Ev::Complete),
        (0u64..5_000).prop_map(Ev::Advance),
    ]
}

proptest! {
    /// Whatever happens: a non-idempotent request is never connected again after one of its
    /// bytes was written; there is at most one terminal output; tries stay within
    /// 1 + num_retries + 1 (the stale retry); host load returns to zero.
    #[test]
    fn invariants_hold_for_any_event_sequence(
        idempotent: bool,
        replayable: bool,
        retries in 0u32..4,
        events in prop::collection::vec(ev(), 0..40),
        seed: u64,
    ) {
        let (mut c, mut rng, mut now) = (cluster(3), Rng::from_seed(seed), epoch());
        let mut cfg = config(idempotent, retries);
        cfg.replayable = replayable;
        let mut e = Exchange::new(now, cfg);
        e.start(now, &mut c, &mut rng);
        let mut written_once = false;
        let mut terminals = 0;
        let mut actions = Vec::new();
        for ev in events {
            match (&ev, e.state) {
                (Ev::Connected(r), State::Connecting { .. }) => e.handle_connected(now, *r, &mut c),
                (Ev::Written, State::Waiting { .. }) => { e.handle_request_written(); written_once = true; }
                (Ev::ConnectFailed, State::Connecting { .. }) => e.handle_failure(now, TryFailure::ConnectFailed, &mut c, &mut rng),
                (Ev::Closed(w, r), State::Waiting { written, .. }) => {
                    e.handle_failure(now, TryFailure::Closed { request_written: *w && written, reused: *r }, &mut c, &mut rng)
                }
                (Ev::Protocol, State::Waiting { .. }) => e.handle_failure(now, TryFailure::ProtocolError, &mut c, &mut rng),
                (Ev::Head(s), State::Waiting { .. }) => {
                    let verdict = e.handle_response_head(now, *s, &mut c, &mut rng);
                    terminals += usize::from(verdict == Verdict::Forward);
                }
                (Ev::Complete, State::Responding { .. }) => e.handle_response_complete(&mut c),
                (Ev::Advance(ms), _) => {
                    now += Duration::from_millis(*ms);
                    if e.poll_timeout().is_some_and(|t| t <= now) { e.handle_timeout(now, &mut c, &mut rng); }
                }
                _ => {}
            }
            while let Some(a) = e.poll_action() {
                match a {
                    Action::Connect { .. } => prop_assert!(
                        !written_once || idempotent,
                        "a non-idempotent request was sent again"
                    ),
                    Action::LocalReply { .. } => terminals += 1,
                }
                actions.push(a);
            }
            prop_assert!(terminals <= 1, "{actions:?}");
        }
        prop_assert!(e.tries() as u32 <= 2 + retries);
        e.release(&mut c);
        prop_assert!(c.hosts().iter().all(|h| h.active == 0));
        prop_assert_eq!(c.breakers().in_use(crate::health::Resource::Retries), 0);
    }
}

/// The `max_retries` breaker caps exchanges retrying at once: with a limit of 1, a second
/// exchange that fails while the first is retrying answers at once, flagged as overflowed; once
/// the first ends, retries are possible again.
#[test]
fn max_retries_breaker_caps_concurrent_retries() {
    use crate::config::{ClusterConfig, HostConfig};
    use crate::health::{CircuitBreakerSettings, Resource};
    let mut c = ClusterState::from_config(&ClusterConfig {
        name: "c".into(),
        hosts: (0..3)
            .map(|i| HostConfig {
                address: format!("127.0.0.1:{}", 9000 + i).parse().unwrap(),
                weight: 1,
                priority: 0,
                transport_socket_match: None,
                health: Default::default(),
            })
            .collect(),
        circuit_breakers: CircuitBreakerSettings {
            max_retries: 1,
            retry_budget: None,
            ..CircuitBreakerSettings::default()
        },
        ..ClusterConfig::default()
    });
    let (mut rng, now) = (Rng::from_seed(7), epoch());
    let mut a = Exchange::new(now, config(true, 3));
    a.start(now, &mut c, &mut rng);
    assert!(matches!(a.poll_action(), Some(Action::Connect { .. })));
    a.handle_failure(now, TryFailure::ConnectFailed, &mut c, &mut rng);
    assert_eq!(a.poll_action(), None, "a backs off before its retry");
    assert!(!a.retry_overflowed());
    assert_eq!(c.breakers().in_use(Resource::Retries), 1);

    let mut b = Exchange::new(now, config(true, 3));
    b.start(now, &mut c, &mut rng);
    assert!(matches!(b.poll_action(), Some(Action::Connect { .. })));
    b.handle_failure(now, TryFailure::ConnectFailed, &mut c, &mut rng);
    assert_eq!(
        b.poll_action(),
        Some(Action::LocalReply {
            status: 502,
            flag: ResponseFlag::UpstreamConnectFailure
        })
    );
    assert!(b.retry_overflowed());
    assert_eq!(c.breakers().overflows(Resource::Retries), 1);

    // a's retry connects and answers; its unit comes back.
    let mut t = now;
    let act = next_action(&mut a, &mut t, &mut c, &mut rng);
    assert!(matches!(act, Action::Connect { .. }));
    a.handle_connected(t, false, &mut c);
    a.handle_request_written();
    assert_eq!(
        a.handle_response_head(t, 200, &mut c, &mut rng),
        Verdict::Forward
    );
    assert_eq!(
        c.breakers().in_use(Resource::Retries),
        1,
        "held until the end"
    );
    a.handle_response_complete(&mut c);
    assert_eq!(c.breakers().in_use(Resource::Retries), 0);

    // A 5xx answer whose retry overflows is forwarded, not dropped.
    let mut hold = Exchange::new(t, config(true, 3));
    hold.start(t, &mut c, &mut rng);
    let _ = hold.poll_action();
    hold.handle_failure(t, TryFailure::ConnectFailed, &mut c, &mut rng);
    let mut d = Exchange::new(t, config(true, 3));
    d.start(t, &mut c, &mut rng);
    let _ = d.poll_action();
    d.handle_connected(t, false, &mut c);
    d.handle_request_written();
    assert_eq!(
        d.handle_response_head(t, 503, &mut c, &mut rng),
        Verdict::Forward
    );
    assert!(d.retry_overflowed());
    d.handle_response_complete(&mut c);
    hold.release(&mut c);
    assert_eq!(c.breakers().in_use(Resource::Retries), 0);
    assert!(c.hosts().iter().all(|h| h.active == 0));
}

fn drain_events(e: &mut Exchange) -> Vec<Event> {
    std::iter::from_fn(|| e.poll_event()).collect()
}

/// The route deadline caps the connect deadline: when it fires during a connect, the request
/// gets the route's 504 and the event says route timeout — not a connect timeout, and nothing
/// for outlier detection to count against the host.
#[test]
fn a_route_timeout_during_a_connect_is_not_the_hosts_fault() {
    let (mut c, mut rng, mut now) = (cluster(1), Rng::from_seed(1), epoch());
    let mut e = Exchange::new(
        now,
        ExchangeConfig {
            timeout: Some(Duration::from_millis(100)),
            connect_timeout: Duration::from_secs(1),
            ..config(true, 2)
        },
    );
    e.start(now, &mut c, &mut rng);
    let Some(Action::Connect { host, .. }) = e.poll_action() else {
        panic!("connect first")
    };
    assert_eq!(e.poll_timeout(), Some(now + Duration::from_millis(100)));
    now += Duration::from_millis(100);
    e.handle_timeout(now, &mut c, &mut rng);
    assert_eq!(
        e.poll_action(),
        Some(Action::LocalReply {
            status: 504,
            flag: ResponseFlag::UpstreamTimeout
        })
    );
    let events = drain_events(&mut e);
    assert_eq!(
        events,
        [Event::RouteTimedOut {
            host: Some(host),
            connected: false
        }]
    );
    assert_eq!(events[0].upstream_result(), None);
    assert!(e.is_done());
}

/// A connect timeout shorter than the route's is the host's: counted as a connect failure.
#[test]
fn a_connect_timeout_is_a_connect_failure_of_the_host() {
    let (mut c, mut rng, mut now) = (cluster(1), Rng::from_seed(1), epoch());
    let mut e = Exchange::new(now, config(true, 0));
    e.start(now, &mut c, &mut rng);
    let Some(Action::Connect { host, .. }) = e.poll_action() else {
        panic!("connect first")
    };
    now += Duration::from_secs(1);
    e.handle_timeout(now, &mut c, &mut rng);
    assert_eq!(
        e.poll_action(),
        Some(Action::LocalReply {
            status: 502,
            flag: ResponseFlag::UpstreamConnectFailure
        })
    );
    let events = drain_events(&mut e);
    assert_eq!(events, [Event::ConnectTimedOut { host }]);
    assert_eq!(
        events[0].upstream_result(),
        Some((host, UpstreamResult::ConnectFailure))
    );
}

/// Once connected, a route timeout is a timeout of the host (as a per-try timeout is).
#[test]
fn route_and_per_try_timeouts_after_the_connect_are_timeouts_of_the_host() {
    let (mut c, mut rng, mut now) = (cluster(2), Rng::from_seed(1), epoch());
    let mut e = Exchange::new(
        now,
        ExchangeConfig {
            timeout: Some(Duration::from_secs(3)),
            ..config(true, 1)
        },
    );
    e.start(now, &mut c, &mut rng);
    let Some(Action::Connect { host: first, .. }) = e.poll_action() else {
        panic!("connect first")
    };
    e.handle_connected(now, false, &mut c);
    e.handle_request_written();
    now += Duration::from_secs(2);
    e.handle_timeout(now, &mut c, &mut rng);
    assert_eq!(
        drain_events(&mut e),
        [Event::PerTryTimedOut { host: first }]
    );
    let Action::Connect { host: second, .. } = next_action(&mut e, &mut now, &mut c, &mut rng)
    else {
        panic!("a retry")
    };
    e.handle_connected(now, false, &mut c);
    now = epoch() + Duration::from_secs(3);
    e.handle_timeout(now, &mut c, &mut rng);
    let events = drain_events(&mut e);
    assert_eq!(
        events,
        [Event::RouteTimedOut {
            host: Some(second),
            connected: true
        }]
    );
    assert_eq!(
        events[0].upstream_result(),
        Some((second, UpstreamResult::Timeout))
    );
}

/// Every kind of try at once — ten retries, the stale resend, three refused resends — stays
/// within the exchange's bounds (a refused stream after the last retry used to index past its
/// list of tried hosts).
#[test]
fn retries_then_a_stale_connection_then_refusals_stay_in_bounds() {
    let (mut c, mut rng, mut now) = (cluster(2), Rng::from_seed(1), epoch());
    let mut e = Exchange::new(now, config(true, 10));
    e.start(now, &mut c, &mut rng);
    for _ in 0..10 {
        next_action(&mut e, &mut now, &mut c, &mut rng);
        e.handle_connected(now, false, &mut c);
        e.handle_request_written();
        assert_eq!(
            e.handle_response_head(now, 503, &mut c, &mut rng),
            Verdict::Retry
        );
    }
    next_action(&mut e, &mut now, &mut c, &mut rng);
    e.handle_connected(now, true, &mut c);
    e.handle_request_written();
    e.handle_failure(
        now,
        TryFailure::Closed {
            request_written: true,
            reused: true,
        },
        &mut c,
        &mut rng,
    );
    assert!(
        matches!(
            e.poll_action(),
            Some(Action::Connect {
                allow_pooled: false,
                ..
            })
        ),
        "stale resend"
    );
    for _ in 0..super::MAX_UNPROCESSED_RETRIES {
        e.handle_connected(now, false, &mut c);
        e.handle_request_written();
        e.handle_failure(now, TryFailure::Refused, &mut c, &mut rng);
        assert!(
            matches!(e.poll_action(), Some(Action::Connect { .. })),
            "refused: sent again"
        );
    }
    e.handle_connected(now, false, &mut c);
    e.handle_request_written();
    e.handle_failure(now, TryFailure::Refused, &mut c, &mut rng);
    assert!(matches!(
        e.poll_action(),
        Some(Action::LocalReply { status: 502, .. })
    ));
    assert!(c.hosts().iter().all(|h| h.active == 0));
}

#[test]
fn refused_unprocessed_try_is_sent_again_whatever_the_method() {
    let (mut c, mut rng, mut now) = (cluster(2), Rng::from_seed(1), epoch());
    // A POST (not idempotent) with a buffered body and no retry policy.
    let mut cfg = config(false, 0);
    cfg.retry = None;
    let mut e = Exchange::new(now, cfg);
    e.start(now, &mut c, &mut rng);
    next_action(&mut e, &mut now, &mut c, &mut rng);
    for _ in 0..super::MAX_UNPROCESSED_RETRIES {
        e.handle_connected(now, true, &mut c);
        e.handle_request_written();
        e.handle_failure(now, TryFailure::Refused, &mut c, &mut rng);
        assert!(
            matches!(e.poll_action(), Some(Action::Connect { .. })),
            "a refused stream is sent again"
        );
        let mut refused = false;
        while let Some(ev) = e.poll_event() {
            refused |= matches!(ev, Event::UpstreamRefused { .. });
            assert!(ev.upstream_result().is_none(), "not a host fault: {ev:?}");
        }
        assert!(refused);
    }
    e.handle_connected(now, true, &mut c);
    e.handle_request_written();
    e.handle_failure(now, TryFailure::Refused, &mut c, &mut rng);
    assert_eq!(
        e.poll_action(),
        Some(Action::LocalReply {
            status: 502,
            flag: ResponseFlag::UpstreamConnectionTermination
        }),
        "bounded"
    );
    assert!(c.hosts().iter().all(|h| h.active == 0));
}

#[test]
fn refused_try_with_a_streamed_body_is_not_sent_again() {
    let (mut c, mut rng, mut now) = (cluster(2), Rng::from_seed(1), epoch());
    let mut cfg = config(true, 3);
    cfg.replayable = false;
    let mut e = Exchange::new(now, cfg);
    e.start(now, &mut c, &mut rng);
    next_action(&mut e, &mut now, &mut c, &mut rng);
    e.handle_connected(now, false, &mut c);
    e.handle_request_written();
    e.handle_failure(now, TryFailure::Refused, &mut c, &mut rng);
    assert!(matches!(
        e.poll_action(),
        Some(Action::LocalReply { status: 502, .. })
    ));
}

#[test]
fn a_grpc_status_named_in_retry_on_is_retried_for_a_post() {
    let (mut c, mut rng, mut now) = (cluster(2), Rng::from_seed(1), epoch());
    let mut cfg = config(false, 2);
    cfg.retry = Some(RetryPolicyView {
        retry_on: RetryOn {
            grpc_codes: 1 << 14,
            ..RetryOn::default()
        },
        num_retries: 2,
        per_try_timeout: None,
    });
    let mut e = Exchange::new(now, cfg);
    e.start(now, &mut c, &mut rng);
    next_action(&mut e, &mut now, &mut c, &mut rng);
    e.handle_connected(now, false, &mut c);
    e.handle_request_written();
    // UNAVAILABLE in a trailers-only answer: retried, although the call is a POST.
    assert_eq!(
        e.handle_grpc_response_head(now, 200, Some(14), &mut c, &mut rng),
        Verdict::Retry
    );
    next_action(&mut e, &mut now, &mut c, &mut rng);
    e.handle_connected(now, false, &mut c);
    e.handle_request_written();
    // A status not named is forwarded; so is an answer without one.
    assert_eq!(
        e.handle_grpc_response_head(now, 200, Some(13), &mut c, &mut rng),
        Verdict::Forward
    );
}

/// A body streamed as it arrives is not replayable until the driver says it kept all of it: a
/// reset before that answers 502; once `handle_body_buffered` came, the same failure retries.
#[test]
fn a_streamed_body_becomes_replayable_once_buffered_whole() {
    let reset_after_writing = |buffered: bool| {
        let (mut c, mut rng, mut now) = (cluster(2), Rng::from_seed(1), epoch());
        let mut cfg = config(true, 3);
        cfg.replayable = false;
        cfg.request_complete = false;
        let mut e = Exchange::new(now, cfg);
        e.start(now, &mut c, &mut rng);
        next_action(&mut e, &mut now, &mut c, &mut rng);
        e.handle_connected(now, false, &mut c);
        e.handle_request_written();
        if buffered {
            e.handle_body_buffered();
        }
        e.handle_request_complete(now);
        e.handle_failure(
            now,
            TryFailure::Closed {
                request_written: true,
                reused: false,
            },
            &mut c,
            &mut rng,
        );
        next_action(&mut e, &mut now, &mut c, &mut rng)
    };
    assert!(matches!(
        reset_after_writing(false),
        Action::LocalReply { status: 502, .. }
    ));
    assert!(matches!(reset_after_writing(true), Action::Connect { .. }));
}

/// A try that failed while its body was still arriving asks for the body only when having it
/// whole changes the decision: a refused POST (unprocessed) and a reset PUT under
/// `retry_on: reset` do; a reset POST (not idempotent) does not; nor does anything once the
/// body is replayable. Then, once `handle_body_buffered` came, the refusal is sent again.
#[test]
fn a_failure_while_the_body_arrives_asks_for_the_body_only_when_it_would_retry() {
    let setup = |idempotent: bool| {
        let (mut c, mut rng, mut now) = (cluster(2), Rng::from_seed(1), epoch());
        let mut cfg = config(idempotent, 3);
        cfg.replayable = false;
        cfg.request_complete = false;
        let mut e = Exchange::new(now, cfg);
        e.start(now, &mut c, &mut rng);
        next_action(&mut e, &mut now, &mut c, &mut rng);
        e.handle_connected(now, false, &mut c);
        e.handle_request_written();
        (e, c, rng, now)
    };
    let reset = TryFailure::Closed {
        request_written: true,
        reused: false,
    };
    let (e, ..) = setup(false);
    assert!(e.retry_wants_body(epoch(), TryFailure::Refused));
    assert!(!e.retry_wants_body(epoch(), reset));
    assert!(!e.retry_wants_body(epoch(), TryFailure::ProtocolError));
    let (mut e, mut c, mut rng, mut now) = setup(true);
    assert!(e.retry_wants_body(now, reset));
    e.handle_body_buffered();
    assert!(!e.retry_wants_body(now, reset));
    e.handle_request_complete(now);
    e.handle_failure(now, TryFailure::Refused, &mut c, &mut rng);
    assert!(matches!(
        next_action(&mut e, &mut now, &mut c, &mut rng),
        Action::Connect { .. }
    ));
}

/// A stream refused as its head went out (nothing of the request written on this try) is sent
/// again even when its body streams and is not replayable: none of it was consumed yet.
#[test]
fn a_refused_try_that_wrote_nothing_is_sent_again_with_a_streamed_body() {
    let (mut c, mut rng, mut now) = (cluster(2), Rng::from_seed(1), epoch());
    let mut cfg = config(false, 0);
    cfg.replayable = false;
    cfg.request_complete = false;
    let mut e = Exchange::new(now, cfg);
    e.start(now, &mut c, &mut rng);
    next_action(&mut e, &mut now, &mut c, &mut rng);
    e.handle_connected(now, false, &mut c);
    e.handle_failure(now, TryFailure::Refused, &mut c, &mut rng);
    assert!(matches!(
        next_action(&mut e, &mut now, &mut c, &mut rng),
        Action::Connect { .. }
    ));
}

/// A response head that arrives while the body is still arriving asks for the body only when
/// having it whole would make it retried: a 503 to a PUT under `retry_on: 5xx` does; a 503 to
/// a POST, a 200, or a 503 without a retry policy does not; nor does anything once the body is
/// replayable. Then, once `handle_body_buffered` and the request's end came, the 503 is retried
/// (and without them forwarded).
#[test]
fn an_early_answer_while_the_body_arrives_asks_for_the_body_only_when_it_would_retry() {
    let setup = |idempotent: bool, policy: bool| {
        let (mut c, mut rng, mut now) = (cluster(2), Rng::from_seed(1), epoch());
        let mut cfg = config(idempotent, 3);
        cfg.replayable = false;
        cfg.request_complete = false;
        if !policy {
            cfg.retry = None;
        }
        let mut e = Exchange::new(now, cfg);
        e.start(now, &mut c, &mut rng);
        next_action(&mut e, &mut now, &mut c, &mut rng);
        e.handle_connected(now, false, &mut c);
        e.handle_request_written();
        (e, c, rng, now)
    };
    let (e, ..) = setup(false, true);
    assert!(!e.response_wants_body(epoch(), 503, None));
    let (e, ..) = setup(true, false);
    assert!(!e.response_wants_body(epoch(), 503, None));
    let (mut e, mut c, mut rng, now) = setup(true, true);
    assert!(e.response_wants_body(now, 503, None));
    assert!(!e.response_wants_body(now, 200, None));
    e.handle_body_buffered();
    assert!(!e.response_wants_body(now, 503, None));
    e.handle_request_complete(now);
    assert_eq!(
        e.handle_response_head(now, 503, &mut c, &mut rng),
        Verdict::Retry
    );
    // Without the body kept whole, the same answer is forwarded.
    let (mut e, mut c, mut rng, now) = setup(true, true);
    e.handle_request_complete(now);
    assert_eq!(
        e.handle_response_head(now, 503, &mut c, &mut rng),
        Verdict::Forward
    );
}
