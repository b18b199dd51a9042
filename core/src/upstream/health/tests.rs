use super::*;
use crate::host::{HostId, HostRef};
use crate::rng::Rng;
use crate::test_support::{self, epoch};
use proptest::prelude::*;
use std::time::Duration;

use crate::time::Instant;

const S: Duration = Duration::from_secs(1);
const MS: Duration = Duration::from_millis(1);

// ---------------------------------------------------------------------------------------------
// Active health checking
// ---------------------------------------------------------------------------------------------

/// Issue 5's settings without jitter, so instants are exact.
fn hc_settings() -> HealthCheckSettings {
    HealthCheckSettings {
        jitter_percent: 0,
        ..HealthCheckSettings::default()
    }
}

fn actions(c: &mut ActiveHealthChecker) -> Vec<HealthAction> {
    std::iter::from_fn(|| c.poll_action()).collect()
}

fn events(c: &mut ActiveHealthChecker) -> Vec<HealthEvent> {
    std::iter::from_fn(|| c.poll_event()).collect()
}

fn probe(host: u32) -> HealthAction {
    HealthAction::Probe {
        host: HostId(host),
        epoch: 0,
    }
}

fn cancel(host: u32) -> HealthAction {
    HealthAction::Cancel { host: HostId(host) }
}

/// A checker with traffic whose hosts all passed their first probe at `t0`.
fn healthy_checker(
    t0: Instant,
    hosts: usize,
    settings: HealthCheckSettings,
) -> ActiveHealthChecker {
    let mut c = ActiveHealthChecker::new(t0, hosts, settings, Rng::from_seed(1));
    c.set_traffic(true);
    assert_eq!(
        actions(&mut c),
        (0..hosts as u32).map(probe).collect::<Vec<_>>()
    );
    for h in 0..hosts as u32 {
        c.handle_probe_result(t0, HostId(h), ProbeResult::Success);
    }
    assert_eq!(
        events(&mut c),
        (0..hosts as u32)
            .map(|h| HealthEvent::BecameHealthy(HostId(h)))
            .collect::<Vec<_>>()
    );
    c
}

#[test]
fn hosts_start_unknown_and_one_success_makes_them_healthy() {
    let t0 = epoch();
    let mut c = ActiveHealthChecker::new(t0, 3, hc_settings(), Rng::from_seed(1));
    assert_eq!(actions(&mut c), [probe(0), probe(1), probe(2)]);
    for h in 0..3 {
        assert_eq!(c.health(HostId(h)), HostHealth::Unknown);
        assert!(!c.is_healthy(HostId(h)));
        assert!(c.probing(HostId(h)));
    }
    c.handle_probe_result(t0 + 10 * MS, HostId(1), ProbeResult::Success);
    assert_eq!(events(&mut c), [HealthEvent::BecameHealthy(HostId(1))]);
    assert!(c.is_healthy(HostId(1)));
    assert_eq!(c.healthy_hosts(), [false, true, false]);
}

#[test]
fn unknown_host_becomes_unhealthy_after_unhealthy_threshold_failures() {
    let t0 = epoch();
    // No traffic: the cadence is no_traffic_interval (60 s).
    let mut c = ActiveHealthChecker::new(t0, 1, hc_settings(), Rng::from_seed(1));
    assert_eq!(actions(&mut c), [probe(0)]);
    c.handle_probe_result(t0, HostId(0), ProbeResult::Failure);
    assert_eq!(c.poll_timeout(), Some(t0 + 60 * S));
    c.handle_timeout(t0 + 60 * S);
    assert_eq!(actions(&mut c), [probe(0)]);
    c.handle_probe_result(t0 + 60 * S, HostId(0), ProbeResult::Failure);
    assert!(events(&mut c).is_empty());
    assert_eq!(c.health(HostId(0)), HostHealth::Unknown);
    c.handle_timeout(t0 + 120 * S);
    assert_eq!(actions(&mut c), [probe(0)]);
    c.handle_probe_result(t0 + 120 * S, HostId(0), ProbeResult::Failure);
    assert_eq!(events(&mut c), [HealthEvent::BecameUnhealthy(HostId(0))]);
    assert_eq!(c.health(HostId(0)), HostHealth::Unhealthy);
}

/// Scenario 1's bound: a host whose health endpoint stops answering at `T` is unhealthy by
/// `T + unhealthy_threshold × interval + timeout`, and readmitted after `healthy_threshold`
/// successes, by `T' + healthy_threshold × interval + timeout`.
#[test]
fn flapping_host_is_drained_and_readmitted_at_exact_instants() {
    let t0 = epoch();
    let mut c = healthy_checker(t0, 2, hc_settings());
    // Host 1 stays healthy; host 0's endpoint hangs from just after t0 on.
    let mut now;
    let mut unhealthy_at = None;
    for round in 1..=3u32 {
        let start = t0 + 5 * S * round;
        assert_eq!(c.poll_timeout(), Some(start));
        now = start;
        c.handle_timeout(now);
        assert_eq!(actions(&mut c), [probe(0), probe(1)]);
        c.handle_probe_result(now, HostId(1), ProbeResult::Success);
        // Probe 0's deadline comes first.
        assert_eq!(c.poll_timeout(), Some(start + S));
        now = start + S;
        c.handle_timeout(now);
        assert_eq!(actions(&mut c), [cancel(0)]);
        let ev = events(&mut c);
        if round < 3 {
            assert!(ev.is_empty(), "round {round}: {ev:?}");
            assert!(c.is_healthy(HostId(0)));
        } else {
            assert_eq!(ev, [HealthEvent::BecameUnhealthy(HostId(0))]);
            unhealthy_at = Some(now);
        }
        // A late answer for the timed-out probe is ignored (it was counted once, as a failure).
        c.handle_probe_result(now + 100 * MS, HostId(0), ProbeResult::Success);
        assert!(events(&mut c).is_empty());
    }
    assert_eq!(unhealthy_at, Some(t0 + 3 * 5 * S + S));
    assert!(!c.is_healthy(HostId(0)));
    assert!(c.is_healthy(HostId(1)));

    // Host 0 recovers at 16 s: the next probe (20 s) succeeds, the one after (25 s) readmits it.
    let recovered = t0 + 16 * S;
    let mut healthy_at = None;
    for round in 4..=5u32 {
        now = t0 + 5 * S * round;
        assert_eq!(c.poll_timeout(), Some(now));
        c.handle_timeout(now);
        assert_eq!(actions(&mut c), [probe(0), probe(1)]);
        c.handle_probe_result(now + 20 * MS, HostId(0), ProbeResult::Success);
        c.handle_probe_result(now + 20 * MS, HostId(1), ProbeResult::Success);
        let ev = events(&mut c);
        if round == 4 {
            assert!(ev.is_empty());
            assert!(!c.is_healthy(HostId(0)));
        } else {
            assert_eq!(ev, [HealthEvent::BecameHealthy(HostId(0))]);
            healthy_at = Some(now + 20 * MS);
        }
    }
    assert!(healthy_at.unwrap() <= recovered + 2 * 5 * S + S);
}

#[test]
fn a_success_resets_the_failure_count_and_a_failure_the_success_count() {
    let t0 = epoch();
    let mut c = healthy_checker(t0, 1, hc_settings());
    let mut now = t0;
    let mut step = |c: &mut ActiveHealthChecker, r: ProbeResult| {
        now += 5 * S;
        c.handle_timeout(now);
        assert_eq!(actions(c), [probe(0)]);
        c.handle_probe_result(now, HostId(0), r);
        events(c)
    };
    use ProbeResult::{Failure, Success, Timeout};
    // F F S F F: never three in a row.
    for r in [Failure, Timeout, Success, Failure, Failure] {
        assert!(step(&mut c, r).is_empty());
    }
    assert!(c.is_healthy(HostId(0)));
    assert_eq!(
        step(&mut c, Failure),
        [HealthEvent::BecameUnhealthy(HostId(0))]
    );
    // S F S S: the failure restarts the count of successes.
    assert!(step(&mut c, Success).is_empty());
    assert!(step(&mut c, Failure).is_empty());
    assert!(step(&mut c, Success).is_empty());
    assert_eq!(
        step(&mut c, Success),
        [HealthEvent::BecameHealthy(HostId(0))]
    );
}

#[test]
fn a_probe_outstanding_past_the_interval_delays_the_next_one() {
    let t0 = epoch();
    let settings = HealthCheckSettings {
        timeout: 8 * S,
        ..hc_settings()
    };
    let mut c = healthy_checker(t0, 1, settings);
    c.handle_timeout(t0 + 5 * S);
    assert_eq!(actions(&mut c), [probe(0)]);
    // Due again at 10 s but still outstanding until its 13 s deadline: no second probe.
    assert_eq!(c.poll_timeout(), Some(t0 + 13 * S));
    c.handle_timeout(t0 + 10 * S);
    assert!(actions(&mut c).is_empty());
    // Its answer at 11 s lets the overdue probe go at once.
    c.handle_probe_result(t0 + 11 * S, HostId(0), ProbeResult::Success);
    assert_eq!(actions(&mut c), [probe(0)]);
    // The timer now is that probe's deadline; the one after it is due at 16 s.
    assert_eq!(c.poll_timeout(), Some(t0 + 19 * S));
    c.handle_probe_result(t0 + 12 * S, HostId(0), ProbeResult::Success);
    assert_eq!(c.poll_timeout(), Some(t0 + 16 * S));
}

#[test]
fn driver_reported_timeout_counts_once_and_the_checker_deadline_is_dropped() {
    let t0 = epoch();
    let settings = HealthCheckSettings {
        unhealthy_threshold: 1,
        ..hc_settings()
    };
    let mut c = healthy_checker(t0, 1, settings);
    c.handle_timeout(t0 + 5 * S);
    assert_eq!(actions(&mut c), [probe(0)]);
    c.handle_probe_result(t0 + 5 * S + 999 * MS, HostId(0), ProbeResult::Timeout);
    assert_eq!(events(&mut c), [HealthEvent::BecameUnhealthy(HostId(0))]);
    // The checker's own deadline (6 s) no longer fires: the next timer is the next probe.
    assert_eq!(c.poll_timeout(), Some(t0 + 10 * S));
    c.handle_timeout(t0 + 6 * S);
    assert!(actions(&mut c).is_empty());
    assert!(events(&mut c).is_empty());
}

#[test]
fn no_traffic_interval_until_traffic_then_interval() {
    let t0 = epoch();
    let mut c = ActiveHealthChecker::new(t0, 1, hc_settings(), Rng::from_seed(1));
    assert_eq!(actions(&mut c), [probe(0)]);
    c.handle_probe_result(t0, HostId(0), ProbeResult::Success);
    assert_eq!(c.poll_timeout(), Some(t0 + 60 * S));
    // Traffic starts at 2 s: the pending probe moves to last start + interval.
    c.set_traffic(true);
    assert_eq!(c.poll_timeout(), Some(t0 + 5 * S));
    c.handle_timeout(t0 + 5 * S);
    assert_eq!(actions(&mut c), [probe(0)]);
    c.handle_probe_result(t0 + 5 * S, HostId(0), ProbeResult::Success);
    assert_eq!(c.poll_timeout(), Some(t0 + 10 * S));
    // Traffic stops: the next wait after the coming probe is long again.
    c.set_traffic(false);
    assert_eq!(c.poll_timeout(), Some(t0 + 10 * S));
    c.handle_timeout(t0 + 10 * S);
    assert_eq!(actions(&mut c), [probe(0)]);
    c.handle_probe_result(t0 + 10 * S, HostId(0), ProbeResult::Success);
    assert_eq!(c.poll_timeout(), Some(t0 + 70 * S));
}

/// Probe start instants of host 0 over `n` probes, answering each at once.
fn schedule(seed: u64, jitter_percent: u32, n: usize) -> Vec<Duration> {
    let t0 = epoch();
    let settings = HealthCheckSettings {
        jitter_percent,
        ..HealthCheckSettings::default()
    };
    let mut c = ActiveHealthChecker::new(t0, 1, settings, Rng::from_seed(seed));
    c.set_traffic(true);
    let mut starts = vec![];
    let mut now = t0;
    while starts.len() < n {
        c.handle_timeout(now);
        for a in actions(&mut c) {
            assert_eq!(a, probe(0));
            starts.push(now - t0);
            c.handle_probe_result(now, HostId(0), ProbeResult::Success);
        }
        now = c.poll_timeout().unwrap();
    }
    starts
}

#[test]
fn jitter_stays_within_bounds_and_is_deterministic_per_seed() {
    let a = schedule(7, 10, 200);
    assert_eq!(a, schedule(7, 10, 200));
    assert_ne!(a, schedule(8, 10, 200));
    let gaps: Vec<Duration> = a.windows(2).map(|w| w[1] - w[0]).collect();
    for g in &gaps {
        assert!(
            (4500 * MS..=5 * S).contains(g),
            "gap {g:?} outside [4.5 s, 5 s]"
        );
    }
    // The jitter really spreads: the gaps are not all equal and cover most of the range.
    let (min, max) = (gaps.iter().min().unwrap(), gaps.iter().max().unwrap());
    assert!(*max - *min > 400 * MS, "{min:?}..{max:?}");
    // Without jitter, the cadence is exact.
    let exact = schedule(7, 0, 5);
    assert_eq!(exact, [0, 5, 10, 15, 20].map(|s| s * S));
}

#[derive(Clone, Debug)]
enum HcOp {
    Advance(u32),
    Result(u32, ProbeResult),
    Traffic(bool),
}

fn hc_op() -> impl Strategy<Value = HcOp> {
    prop_oneof![
        3 => (1u32..8000).prop_map(HcOp::Advance),
        4 => (0u32..4, prop::sample::select(vec![
            ProbeResult::Success, ProbeResult::Failure, ProbeResult::Timeout,
        ])).prop_map(|(h, r)| HcOp::Result(h, r)),
        1 => any::<bool>().prop_map(HcOp::Traffic),
    ]
}

/// The proptest's shadow of the checker: which probes are out, and the thresholds applied by
/// the book (each probe settled once: by its result, or by the `Cancel` of its timeout).
struct Shadow {
    settings: HealthCheckSettings,
    outstanding: Vec<bool>,
    health: Vec<HostHealth>,
    run: Vec<(bool, u32)>,
    trace: Vec<String>,
}

impl Shadow {
    fn settle(&mut self, h: usize, success: bool) {
        let run = if self.run[h].0 == success {
            self.run[h].1 + 1
        } else {
            1
        };
        self.run[h] = (success, run);
        let s = &self.settings;
        self.health[h] = match (self.health[h], success) {
            (HostHealth::Unknown, true) => HostHealth::Healthy,
            (HostHealth::Unhealthy, true) if run >= s.healthy_threshold => HostHealth::Healthy,
            (_, false) if run >= s.unhealthy_threshold => HostHealth::Unhealthy,
            (h, _) => h,
        };
    }

    fn drain(&mut self, c: &mut ActiveHealthChecker, at: Duration) -> Result<(), TestCaseError> {
        while let Some(a) = c.poll_action() {
            match a {
                HealthAction::Probe { host, .. } => {
                    prop_assert!(!self.outstanding[host.index()], "second probe for {host:?}");
                    self.outstanding[host.index()] = true;
                }
                HealthAction::Cancel { host } => {
                    prop_assert!(self.outstanding[host.index()], "cancel without probe");
                    self.outstanding[host.index()] = false;
                    self.settle(host.index(), false);
                }
            }
            self.trace.push(format!("{at:?} {a:?}"));
        }
        while let Some(e) = c.poll_event() {
            let (h, now_healthy) = match e {
                HealthEvent::BecameHealthy(h) => (h, true),
                HealthEvent::BecameUnhealthy(h) => (h, false),
            };
            prop_assert_eq!(c.is_healthy(h), now_healthy);
            self.trace.push(format!("{at:?} {e:?}"));
        }
        Ok(())
    }
}

/// Runs `ops` against a checker of `hosts` hosts and checks it against the shadow after every
/// step; returns the trace of (elapsed, action or event).
fn run_hc(
    seed: u64,
    hosts: usize,
    settings: HealthCheckSettings,
    ops: &[HcOp],
) -> Result<Vec<String>, TestCaseError> {
    let t0 = epoch();
    let mut c = ActiveHealthChecker::new(t0, hosts, settings, Rng::from_seed(seed));
    let mut now = t0;
    let mut sh = Shadow {
        settings,
        outstanding: vec![false; hosts],
        health: vec![HostHealth::Unknown; hosts],
        run: vec![(false, 0); hosts],
        trace: vec![],
    };
    sh.drain(&mut c, Duration::ZERO)?;
    prop_assert!(sh.outstanding.iter().all(|o| *o));
    for op in ops {
        match *op {
            HcOp::Advance(ms) => {
                let target = now + ms * MS;
                // Fire every timer on the way, as a driver would.
                // (`set_traffic` may have left a timer in the past: it fires at once.)
                while let Some(t) = c.poll_timeout().filter(|t| *t <= target) {
                    now = t.max(now);
                    c.handle_timeout(now);
                    sh.drain(&mut c, now - t0)?;
                }
                now = target;
                c.handle_timeout(now);
                sh.drain(&mut c, now - t0)?;
                if let Some(t) = c.poll_timeout() {
                    prop_assert!(t > now, "a due timer was left after handle_timeout");
                }
            }
            HcOp::Result(h, r) => {
                let h = h as usize % hosts;
                if sh.outstanding[h] {
                    sh.settle(h, r == ProbeResult::Success);
                }
                sh.outstanding[h] = false;
                c.handle_probe_result(now, HostId(h as u32), r);
            }
            HcOp::Traffic(on) => c.set_traffic(on),
        }
        sh.drain(&mut c, now - t0)?;
        for h in 0..hosts {
            prop_assert_eq!(c.probing(HostId(h as u32)), sh.outstanding[h]);
            prop_assert_eq!(c.health(HostId(h as u32)), sh.health[h], "host {}", h);
        }
    }
    Ok(sh.trace)
}

proptest! {
    /// Whatever the results and their timing: at most one probe per host is outstanding, a
    /// cancel only follows a probe, events match `is_healthy`, and the same seed gives the same
    /// schedule.
    #[test]
    fn health_checker_invariants_and_determinism(
        seed: u64,
        hosts in 1usize..5,
        jitter in 0u32..=100,
        thresholds in (1u32..4, 1u32..4),
        timeout_ms in 100u32..7000,
        ops in prop::collection::vec(hc_op(), 0..80),
    ) {
        let settings = HealthCheckSettings {
            timeout: timeout_ms * MS,
            jitter_percent: jitter,
            unhealthy_threshold: thresholds.0,
            healthy_threshold: thresholds.1,
            ..HealthCheckSettings::default()
        };
        let a = run_hc(seed, hosts, settings, &ops)?;
        let b = run_hc(seed, hosts, settings, &ops)?;
        prop_assert_eq!(a, b);
    }
}

/// A probed endpoint: probes started before `flip` get `before`, later ones `after` (`None`:
/// no answer), each `rtt` after they start.
struct Endpoint {
    flip: Instant,
    before: Option<ProbeResult>,
    after: Option<ProbeResult>,
    rtt: Duration,
    pending: Option<(Instant, ProbeResult)>,
}

impl Endpoint {
    /// Drives host 0 until its health is `target`; returns that instant.
    fn drive_until(
        &mut self,
        c: &mut ActiveHealthChecker,
        mut now: Instant,
        target: HostHealth,
    ) -> Instant {
        for _ in 0..10_000 {
            for a in actions(c) {
                self.pending = match a {
                    HealthAction::Probe { .. } => {
                        let r = if now < self.flip {
                            self.before
                        } else {
                            self.after
                        };
                        r.map(|r| (now + self.rtt, r))
                    }
                    HealthAction::Cancel { .. } => None,
                };
            }
            events(c);
            if c.health(HostId(0)) == target {
                return now;
            }
            let timer = c.poll_timeout().expect("a checker always has a timer");
            match self.pending {
                Some((at, r)) if at <= timer => {
                    now = at;
                    self.pending = None;
                    c.handle_probe_result(now, HostId(0), r);
                }
                _ => {
                    now = timer.max(now);
                    c.handle_timeout(now);
                }
            }
        }
        panic!("never became {target:?}");
    }
}

proptest! {
    /// Scenario 1's bounds over random jitter, thresholds, timing and failure modes: a host whose
    /// endpoint starts failing (answering wrongly, or not at all) at `T` is unhealthy by
    /// `T + unhealthy_threshold × interval + timeout`; one that recovers at `T'` is healthy by
    /// `T' + healthy_threshold × interval + timeout`.
    #[test]
    fn drain_and_readmission_bounds_hold(
        seed: u64,
        jitter in 0u32..=100,
        thresholds in (1u32..6, 1u32..6),
        interval_ms in 100u32..10_000,
        timeout_pct in 1u32..=100,
        rtt_pct in 0u32..100,
        hang in any::<bool>(),
        offsets in (0u32..30_000, 0u32..30_000),
    ) {
        let interval = interval_ms * MS;
        let timeout = (interval * timeout_pct / 100).max(MS);
        let settings = HealthCheckSettings {
            interval,
            timeout,
            jitter_percent: jitter,
            unhealthy_threshold: thresholds.0,
            healthy_threshold: thresholds.1,
            ..HealthCheckSettings::default()
        };
        let t0 = epoch();
        let mut c = ActiveHealthChecker::new(t0, 1, settings, Rng::from_seed(seed));
        c.set_traffic(true);
        let failing = if hang { None } else { Some(ProbeResult::Failure) };
        let mut ep = Endpoint {
            flip: t0 + 1000 * S,
            before: Some(ProbeResult::Success),
            after: failing,
            rtt: timeout * rtt_pct / 100,
            pending: None,
        };
        let mut now = ep.drive_until(&mut c, t0, HostHealth::Healthy);
        prop_assert_eq!(now, t0 + ep.rtt);

        ep.flip = now + offsets.0 * MS;
        now = ep.drive_until(&mut c, now, HostHealth::Unhealthy);
        prop_assert!(now <= ep.flip + interval * thresholds.0 + timeout,
            "drained {:?} after the flip", now - ep.flip);

        ep.before = failing;
        ep.after = Some(ProbeResult::Success);
        ep.flip = now + offsets.1 * MS;
        now = ep.drive_until(&mut c, now, HostHealth::Healthy);
        prop_assert!(now <= ep.flip + interval * thresholds.1 + timeout,
            "readmitted {:?} after the recovery", now - ep.flip);
    }
}

// ---------------------------------------------------------------------------------------------
// Outlier detection
// ---------------------------------------------------------------------------------------------

fn od_events(d: &mut OutlierDetector) -> Vec<OutlierEvent> {
    std::iter::from_fn(|| d.poll_event()).collect()
}

fn fail(d: &mut OutlierDetector, now: Instant, host: u32, r: UpstreamResult, times: u32) {
    for _ in 0..times {
        d.handle_result(now, HostId(host), r);
    }
}

#[test]
fn consecutive_5xx_ejects_and_success_resets() {
    let t0 = epoch();
    let mut d = OutlierDetector::new(10, OutlierSettings::default());
    fail(&mut d, t0, 3, UpstreamResult::Status(500), 4);
    d.handle_result(t0, HostId(3), UpstreamResult::Status(404));
    fail(&mut d, t0, 3, UpstreamResult::Status(500), 4);
    d.handle_result(t0, HostId(3), UpstreamResult::Success);
    fail(&mut d, t0, 3, UpstreamResult::Status(500), 4);
    assert!(od_events(&mut d).is_empty());
    assert!(!d.is_ejected(HostId(3)));
    d.handle_result(t0, HostId(3), UpstreamResult::Status(500));
    assert_eq!(
        od_events(&mut d),
        [OutlierEvent::Ejected {
            host: HostId(3),
            until: t0 + 30 * S
        }]
    );
    assert!(d.is_ejected(HostId(3)));
    assert_eq!(d.ejected_count(), 1);
    // Results of requests still in flight to an ejected host are ignored.
    fail(&mut d, t0, 3, UpstreamResult::Status(500), 20);
    assert!(od_events(&mut d).is_empty());
    assert_eq!(d.poll_timeout(), Some(t0 + 30 * S));
    d.handle_timeout(t0 + 30 * S - MS);
    assert!(d.is_ejected(HostId(3)));
    d.handle_timeout(t0 + 30 * S);
    assert_eq!(od_events(&mut d), [OutlierEvent::Unejected(HostId(3))]);
    assert!(!d.is_ejected(HostId(3)));
    assert_eq!(d.poll_timeout(), None);
}

#[test]
fn gateway_and_connect_thresholds_count_their_own_kind() {
    let t0 = epoch();
    let only = |gw: u32, cf: u32| OutlierSettings {
        consecutive_5xx: 0,
        consecutive_gateway_failure: gw,
        consecutive_connect_failure: cf,
        max_ejection_percent: 100,
        ..OutlierSettings::default()
    };
    // Gateway: a 500 in the middle resets the run of 502/503/504.
    let mut d = OutlierDetector::new(2, only(3, 0));
    for code in [502, 503, 500, 504, 502] {
        d.handle_result(t0, HostId(0), UpstreamResult::Status(code));
    }
    assert!(!d.is_ejected(HostId(0)));
    d.handle_result(t0, HostId(0), UpstreamResult::Timeout);
    assert!(d.is_ejected(HostId(0)));
    // Resets and timeouts count as gateway failures too.
    fail(&mut d, t0, 1, UpstreamResult::Reset, 3);
    assert!(d.is_ejected(HostId(1)));

    // Connect: a reset (the connect had worked) breaks the run.
    let mut d = OutlierDetector::new(2, only(0, 2));
    d.handle_result(t0, HostId(0), UpstreamResult::ConnectFailure);
    d.handle_result(t0, HostId(0), UpstreamResult::Reset);
    d.handle_result(t0, HostId(0), UpstreamResult::ConnectFailure);
    assert!(!d.is_ejected(HostId(0)));
    d.handle_result(t0, HostId(0), UpstreamResult::ConnectFailure);
    assert!(d.is_ejected(HostId(0)));

    // All thresholds 0: never ejects.
    let mut d = OutlierDetector::new(1, only(0, 0));
    fail(&mut d, t0, 0, UpstreamResult::ConnectFailure, 100);
    assert!(!d.is_ejected(HostId(0)));
}

#[test]
fn connect_failures_also_count_as_5xx() {
    let t0 = epoch();
    let settings = OutlierSettings {
        consecutive_gateway_failure: 0,
        consecutive_connect_failure: 0,
        ..OutlierSettings::default()
    };
    let mut d = OutlierDetector::new(1, settings);
    fail(&mut d, t0, 0, UpstreamResult::ConnectFailure, 2);
    fail(&mut d, t0, 0, UpstreamResult::Status(503), 2);
    d.handle_result(t0, HostId(0), UpstreamResult::Timeout);
    assert!(d.is_ejected(HostId(0)));
}

#[test]
fn ejection_time_grows_with_each_ejection_and_caps() {
    let t0 = epoch();
    let settings = OutlierSettings {
        max_ejection_time: 100 * S,
        ..OutlierSettings::default()
    };
    let mut d = OutlierDetector::new(1, settings);
    let mut now = t0;
    let mut durations = vec![];
    for _ in 0..6 {
        fail(&mut d, now, 0, UpstreamResult::Status(500), 5);
        let [OutlierEvent::Ejected { until, .. }] = od_events(&mut d)[..] else {
            panic!("no ejection");
        };
        durations.push(until - now);
        now = until;
        d.handle_timeout(now);
        assert_eq!(od_events(&mut d), [OutlierEvent::Unejected(HostId(0))]);
        // Fails again 1 s after coming back (less than the decay interval).
        now += S;
    }
    assert_eq!(durations, [30, 60, 90, 100, 100, 100].map(|s| s * S));
}

#[test]
fn the_multiplier_decays_while_a_host_stays_unejected() {
    let t0 = epoch();
    let mut d = OutlierDetector::new(1, OutlierSettings::default());
    let eject = |d: &mut OutlierDetector, now: Instant| {
        fail(d, now, 0, UpstreamResult::Status(500), 5);
        let [OutlierEvent::Ejected { until, .. }] = od_events(d)[..] else {
            panic!("no ejection");
        };
        d.handle_timeout(until);
        assert_eq!(od_events(d), [OutlierEvent::Unejected(HostId(0))]);
        until - now
    };
    assert_eq!(eject(&mut d, t0), 30 * S); // ×1, back at 30 s
    assert_eq!(eject(&mut d, t0 + 31 * S), 60 * S); // ×2, back at 91 s
    assert_eq!(eject(&mut d, t0 + 92 * S), 90 * S); // ×3, back at 182 s
    // 25 s un-ejected: two intervals of 10 s → ×3 − 2 + 1 = ×2.
    assert_eq!(eject(&mut d, t0 + 207 * S), 60 * S);
}

#[test]
fn max_ejection_percent_caps_ejections_and_counts_skips() {
    let t0 = epoch();
    let settings = OutlierSettings {
        max_ejection_percent: 20,
        ..OutlierSettings::default()
    };
    let mut d = OutlierDetector::new(10, settings);
    assert_eq!(d.max_ejected(), 2);
    for h in 0..4u32 {
        fail(&mut d, t0 + h * MS, h, UpstreamResult::Status(503), 5);
    }
    assert_eq!(
        od_events(&mut d),
        [
            OutlierEvent::Ejected {
                host: HostId(0),
                until: t0 + 30 * S
            },
            OutlierEvent::Ejected {
                host: HostId(1),
                until: t0 + 30 * S + MS
            },
            OutlierEvent::EjectionSkipped(HostId(2)),
            OutlierEvent::EjectionSkipped(HostId(3)),
        ]
    );
    assert_eq!(d.ejected_count(), 2);
    assert_eq!(d.ejections_skipped(), 2);
    // A skipped host's counters restarted: it takes another full run to try again, and once a
    // slot is free it is ejected.
    d.handle_timeout(t0 + 30 * S);
    assert_eq!(od_events(&mut d), [OutlierEvent::Unejected(HostId(0))]);
    fail(&mut d, t0 + 31 * S, 2, UpstreamResult::Status(503), 4);
    assert!(!d.is_ejected(HostId(2)));
    d.handle_result(t0 + 31 * S, HostId(2), UpstreamResult::Status(503));
    assert!(d.is_ejected(HostId(2)));
    assert_eq!(d.ejected_hosts().iter().filter(|e| **e).count(), 2);
}

#[test]
fn at_least_one_host_is_always_ejectable() {
    let t0 = epoch();
    let d = OutlierDetector::new(3, OutlierSettings::default());
    assert_eq!(d.max_ejected(), 1);
    let mut d = OutlierDetector::new(
        3,
        OutlierSettings {
            max_ejection_percent: 0,
            ..OutlierSettings::default()
        },
    );
    fail(&mut d, t0, 0, UpstreamResult::Status(500), 5);
    fail(&mut d, t0, 1, UpstreamResult::Status(500), 5);
    assert!(d.is_ejected(HostId(0)));
    assert!(!d.is_ejected(HostId(1)));
    assert_eq!(d.max_ejected(), 1);
    assert_eq!(
        OutlierDetector::new(0, OutlierSettings::default()).max_ejected(),
        0
    );
}

fn upstream_result() -> impl Strategy<Value = UpstreamResult> {
    prop_oneof![
        2 => Just(UpstreamResult::Success),
        3 => prop::sample::select(vec![200u16, 404, 500, 502, 503, 504]).prop_map(UpstreamResult::Status),
        1 => Just(UpstreamResult::ConnectFailure),
        1 => Just(UpstreamResult::Reset),
        1 => Just(UpstreamResult::Timeout),
    ]
}

proptest! {
    /// Whatever the results: the ejected count never exceeds the cap, events match
    /// `is_ejected`, every ejection lasts between the base and the cap, and every ejection ends
    /// exactly at its deadline.
    #[test]
    fn outlier_detector_invariants(
        hosts in 1usize..25,
        pct in 0u32..=100,
        thresholds in (0u32..4, 0u32..4, 0u32..4),
        ops in prop::collection::vec((0usize..25, upstream_result(), 0u32..20_000), 0..300),
    ) {
        let settings = OutlierSettings {
            consecutive_5xx: thresholds.0,
            consecutive_gateway_failure: thresholds.1,
            consecutive_connect_failure: thresholds.2,
            max_ejection_percent: pct,
            ..OutlierSettings::default()
        };
        let cap = settings.max_ejection_time;
        let t0 = epoch();
        let mut d = OutlierDetector::new(hosts, settings);
        let mut until = vec![None; hosts];
        let mut now = t0;
        for (h, r, advance_ms) in ops {
            now += advance_ms * MS;
            d.handle_timeout(now);
            d.handle_result(now, HostId((h % hosts) as u32), r);
            while let Some(e) = d.poll_event() {
                match e {
                    OutlierEvent::Ejected { host, until: u } => {
                        prop_assert!(until[host.index()].is_none());
                        prop_assert!(u - now >= settings.base_ejection_time && u - now <= cap);
                        until[host.index()] = Some(u);
                    }
                    OutlierEvent::Unejected(host) => {
                        let u = until[host.index()].take();
                        prop_assert!(u.is_some_and(|u| u <= now));
                    }
                    OutlierEvent::EjectionSkipped(host) => {
                        prop_assert!(until[host.index()].is_none());
                        prop_assert_eq!(d.ejected_count(), d.max_ejected());
                    }
                }
            }
            let ejected = until.iter().filter(|u| u.is_some()).count();
            prop_assert_eq!(ejected, d.ejected_count());
            prop_assert!(ejected <= d.max_ejected());
            prop_assert!(until.iter().all(|u| u.is_none_or(|u| u > now)));
            for (i, u) in until.iter().enumerate() {
                prop_assert_eq!(d.is_ejected(HostId(i as u32)), u.is_some());
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Circuit breakers
// ---------------------------------------------------------------------------------------------

#[test]
fn a_burst_over_max_requests_gets_exactly_the_excess_rejected() {
    let mut cb = CircuitBreakers::new(CircuitBreakerSettings::default());
    let results: Vec<_> = (0..1100)
        .map(|_| cb.try_acquire(Resource::Requests))
        .collect();
    let rejected = results.iter().filter(|r| r.is_err()).count();
    assert_eq!(rejected, 1100 - 1024);
    // The first 1024 pass, every later one fails.
    assert!(results[..1024].iter().all(Result::is_ok));
    assert!(
        results[1024..]
            .iter()
            .all(|r| *r == Err(Overflow(Resource::Requests)))
    );
    assert_eq!(cb.overflows(Resource::Requests), 76);
    assert!(cb.is_open(Resource::Requests));
    // Other resources are untouched.
    assert_eq!(cb.in_use(Resource::Connections), 0);
    assert!(cb.try_acquire(Resource::Connections).is_ok());
    // Releasing one admits exactly one more.
    let permits: Vec<Permit> = results.into_iter().filter_map(Result::ok).collect();
    let mut permits = permits.into_iter();
    cb.release(permits.next().unwrap());
    assert_eq!(cb.remaining(Resource::Requests), 1);
    let p = cb.try_acquire(Resource::Requests).unwrap();
    assert_eq!(p.resource(), Resource::Requests);
    assert!(cb.try_acquire(Resource::Requests).is_err());
    cb.release(p);
    for p in permits {
        cb.release(p);
    }
    assert_eq!(cb.in_use(Resource::Requests), 0);
    assert_eq!(cb.remaining(Resource::Requests), 1024);
}

#[test]
fn default_limits_are_envoys() {
    // Envoy's defaults, except that retries spend from a budget (not capped by a count)
    // unless max_retries is set.
    let cb = CircuitBreakers::new(CircuitBreakerSettings::default());
    assert_eq!(
        Resource::ALL.map(|r| cb.limit(r)),
        [1024, 1024, 1024, u32::MAX]
    );
    let fixed = CircuitBreakers::new(CircuitBreakerSettings {
        retry_budget: None,
        ..CircuitBreakerSettings::default()
    });
    assert_eq!(Resource::ALL.map(|r| fixed.limit(r)), [1024, 1024, 1024, 3]);
    assert_eq!(
        Overflow(Resource::PendingRequests).to_string(),
        "circuit breaker open: pending_requests at its limit"
    );
}

#[test]
fn per_worker_limits_add_up_to_the_cluster_limit() {
    let settings = CircuitBreakerSettings {
        max_connections: 10,
        max_pending_requests: 1024,
        max_requests: 7,
        max_retries: 3,
        retry_budget: None,
    };
    let workers = CircuitBreakers::per_worker(settings, 4);
    assert_eq!(workers.len(), 4);
    let limits = |r: Resource| workers.iter().map(|w| w.limit(r)).collect::<Vec<_>>();
    assert_eq!(limits(Resource::Connections), [3, 3, 2, 2]);
    assert_eq!(limits(Resource::PendingRequests), [256; 4]);
    assert_eq!(limits(Resource::Requests), [2, 2, 2, 1]);
    assert_eq!(limits(Resource::Retries), [1, 1, 1, 0]);
    let one = CircuitBreakers::per_worker(settings, 1);
    assert_eq!(one[0].limit(Resource::Requests), 7);
}

proptest! {
    /// Random acquire/release sequences: in use never exceeds the limit nor underflows, and
    /// matches a model; overflows are counted exactly.
    #[test]
    fn breaker_counters_follow_the_model(
        limits in prop::array::uniform4(0u32..6),
        workers in 1usize..5,
        ops in prop::collection::vec((0usize..4, any::<bool>(), 0usize..4), 0..200),
    ) {
        let settings = CircuitBreakerSettings {
            max_connections: limits[0],
            max_pending_requests: limits[1],
            max_requests: limits[2],
            max_retries: limits[3],
            retry_budget: None,
        };
        let mut cbs = CircuitBreakers::per_worker(settings, workers);
        for r in Resource::ALL {
            prop_assert_eq!(cbs.iter().map(|c| c.limit(r)).sum::<u32>(), limits[r.index()]);
        }
        let mut held: Vec<Vec<Permit>> = (0..workers).map(|_| vec![]).collect();
        let mut overflows = vec![[0u64; 4]; workers];
        for (r, acquire, w) in ops {
            let (r, w) = (Resource::ALL[r], w % workers);
            if acquire {
                let before = cbs[w].in_use(r);
                match cbs[w].try_acquire(r) {
                    Ok(p) => {
                        prop_assert!(before < cbs[w].limit(r));
                        held[w].push(p);
                    }
                    Err(Overflow(o)) => {
                        prop_assert_eq!(o, r);
                        prop_assert_eq!(before, cbs[w].limit(r));
                        overflows[w][r.index()] += 1;
                    }
                }
            } else if let Some(i) = held[w].iter().position(|p| p.resource() == r) {
                cbs[w].release(held[w].swap_remove(i));
            }
            for (wi, cb) in cbs.iter().enumerate() {
                for r in Resource::ALL {
                    let model = held[wi].iter().filter(|p| p.resource() == r).count() as u32;
                    prop_assert_eq!(cb.in_use(r), model);
                    prop_assert!(cb.in_use(r) <= cb.limit(r));
                    prop_assert_eq!(cb.overflows(r), overflows[wi][r.index()]);
                }
            }
        }
        for (w, permits) in held.into_iter().enumerate() {
            for p in permits {
                cbs[w].release(p);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Availability and panic
// ---------------------------------------------------------------------------------------------

#[test]
fn available_means_healthy_and_not_ejected() {
    let a = availability(&[true, true, true, false], &[false, true, false, false], 50);
    assert_eq!(
        a,
        Availability {
            available: vec![true, false, true, false],
            panic: false
        }
    );
}

#[test]
fn below_the_panic_threshold_every_host_is_available() {
    // 1 of 3 usable: 33 % < 50 % → panic.
    let a = availability(&[true, false, true], &[false, false, true], 50);
    assert_eq!(a.available, [true, true, true]);
    assert!(a.panic);
    // Exactly at the threshold is not panic.
    let a = availability(&[true, true, false, false], &[false; 4], 50);
    assert!(!a.panic);
    assert_eq!(a.available, [true, true, false, false]);
    // 0 disables panic, even with no host usable.
    let a = availability(&[false, false], &[false, false], 0);
    assert!(!a.panic);
    assert_eq!(a.available, [false, false]);
    // Every host down (default threshold): panic, all available (Envoy's behaviour).
    let a = availability(
        &[false, false],
        &[false, false],
        DEFAULT_PANIC_THRESHOLD_PERCENT,
    );
    assert!(a.panic);
    // Empty cluster: nothing, no panic.
    assert_eq!(
        availability(&[], &[], 50),
        Availability {
            available: vec![],
            panic: false
        }
    );
}

#[test]
fn availability_applies_to_a_cluster() {
    let mut c = test_support::cluster(3, 7100);
    c.apply_availability(&availability(&[true, false, true], &[false; 3], 10));
    assert_eq!(c.available_count(), 2);
    assert!(!c.host(HostId(1)).available);
    let mut out = [false; 3];
    assert!(fill_availability(&[false; 3], &[false; 3], 10, &mut out));
    assert_eq!(out, [true; 3]);
}

#[test]
fn checker_and_detector_feed_availability() {
    let t0 = epoch();
    let mut hc = healthy_checker(t0, 4, hc_settings());
    let mut od = OutlierDetector::new(
        4,
        OutlierSettings {
            max_ejection_percent: 50,
            ..OutlierSettings::default()
        },
    );
    fail(&mut od, t0, 2, UpstreamResult::Status(502), 5);
    // Host 0 fails its next three probes.
    for round in 1..=3u32 {
        let now = t0 + 5 * S * round;
        hc.handle_timeout(now);
        actions(&mut hc);
        for h in 0..4 {
            let r = if h == 0 {
                ProbeResult::Failure
            } else {
                ProbeResult::Success
            };
            hc.handle_probe_result(now, HostId(h), r);
        }
    }
    let a = availability(&hc.healthy_hosts(), &od.ejected_hosts(), 50);
    assert_eq!(a.available, [false, true, false, true]);
    assert!(!a.panic);
    let a = availability(&hc.healthy_hosts(), &od.ejected_hosts(), 60);
    assert!(a.panic);
}

proptest! {
    /// Panic exactly when usable × 100 < total × threshold; otherwise available = healthy ∧ ¬ejected.
    #[test]
    fn availability_matches_its_definition(
        hosts in prop::collection::vec((any::<bool>(), any::<bool>()), 0..20),
        threshold in 0u32..=100,
    ) {
        let healthy: Vec<bool> = hosts.iter().map(|h| h.0).collect();
        let ejected: Vec<bool> = hosts.iter().map(|h| h.1).collect();
        let a = availability(&healthy, &ejected, threshold);
        let usable = hosts.iter().filter(|(h, e)| *h && !*e).count();
        let share = if hosts.is_empty() { 100.0 } else { usable as f64 * 100.0 / hosts.len() as f64 };
        prop_assert_eq!(a.panic, share < f64::from(threshold));
        for (i, (h, e)) in hosts.iter().enumerate() {
            prop_assert_eq!(a.available[i], a.panic || (*h && !*e));
        }
    }
}

// ---- the retry budget ----

fn budget(percent: u32, floor: u32, window_secs: u64) -> CircuitBreakers {
    CircuitBreakers::new(CircuitBreakerSettings {
        retry_budget: Some(RetryBudgetSettings {
            budget_percent: percent,
            min_retries_per_second: floor,
            window: Duration::from_secs(window_secs),
        }),
        ..CircuitBreakerSettings::default()
    })
}

#[test]
fn a_crash_burst_fits_the_default_budget_but_an_overload_is_shed() {
    // 64 connections of traffic for 5 s at ~2,000 requests/s on one worker, then a host crash
    // fails 22 in-flight requests at once: every one of them may retry (a fixed max_retries: 3
    // split across two workers would allow 2).
    let mut cb = CircuitBreakers::per_worker(CircuitBreakerSettings::default(), 2).remove(0);
    let mut now = epoch();
    for _ in 0..10_000 {
        cb.record_request(now);
        now += Duration::from_micros(500);
    }
    let mut held: Vec<Option<Permit>> = (0..22).map(|_| None).collect();
    for h in &mut held {
        assert_eq!(cb.try_retry(now, h), Ok(()));
        assert!(h.is_some());
    }
    assert_eq!(cb.in_use(Resource::Retries), 22);
    for h in &mut held {
        // A second retry of the same request spends again but takes no second unit.
        assert_eq!(cb.try_retry(now, h), Ok(()));
        cb.release(h.take().unwrap());
    }
    assert_eq!(cb.in_use(Resource::Retries), 0);

    // Overload: every request fails and wants 2 retries, for 30 s at 1,000 requests/s. Retries
    // stay within 20 % of the requests of each 10 s window plus the floor of 10/s.
    let mut cb = budget(20, 10, 10);
    let mut now = epoch();
    let (mut requests, mut retries) = (0u64, 0u64);
    for _ in 0..30_000 {
        cb.record_request(now);
        requests += 1;
        let mut held = None;
        for _ in 0..2 {
            if cb.try_retry(now, &mut held).is_ok() {
                retries += 1;
            }
        }
        if let Some(p) = held {
            cb.release(p);
        }
        now += Duration::from_millis(1);
    }
    // Three windows: ≤ 20 % of 30,000 plus 3 × 100 floor.
    assert!(
        retries <= 6_000 + 300,
        "{retries} retries for {requests} requests"
    );
    assert!(
        retries >= 5_000,
        "the budget is used, not starved: {retries}"
    );
    assert_eq!(
        cb.overflows(Resource::Retries),
        2 * requests - retries,
        "every refused retry is counted"
    );
}

#[test]
fn a_quiet_cluster_retries_from_the_floor_and_the_window_slides() {
    let mut cb = budget(20, 2, 5);
    let now = epoch() + Duration::from_secs(100);
    let mut held = None;
    // No requests yet: the floor alone, 2/s × 5 s.
    for _ in 0..10 {
        assert_eq!(cb.try_retry(now, &mut held), Ok(()));
    }
    assert_eq!(
        cb.try_retry(now, &mut held),
        Err(Overflow(Resource::Retries))
    );
    assert_eq!(cb.retry_budget_remaining(now), Some(0));
    // Within the window, nothing comes back; once the window has slid past, all of it does.
    assert_eq!(
        cb.retry_budget_remaining(now + Duration::from_secs(4)),
        Some(0)
    );
    assert_eq!(
        cb.retry_budget_remaining(now + Duration::from_secs(5)),
        Some(10)
    );
    // Requests add their share: 50 requests → 10 more.
    let later = now + Duration::from_secs(5);
    for _ in 0..50 {
        cb.record_request(later);
    }
    assert_eq!(cb.retry_budget_remaining(later), Some(20));
    // A ring slot reused a lap later forgets the old second.
    assert_eq!(
        cb.retry_budget_remaining(later + Duration::from_secs(5)),
        Some(10)
    );
    cb.release(held.unwrap());
}

#[test]
fn a_fixed_max_retries_holds_one_unit_per_retrying_request() {
    let mut cb = CircuitBreakers::new(CircuitBreakerSettings {
        max_retries: 2,
        retry_budget: None,
        ..CircuitBreakerSettings::default()
    });
    let now = epoch();
    let (mut a, mut b, mut c) = (None, None, None);
    assert_eq!(cb.try_retry(now, &mut a), Ok(()));
    assert_eq!(
        cb.try_retry(now, &mut a),
        Ok(()),
        "a's second retry is covered"
    );
    assert_eq!(cb.try_retry(now, &mut b), Ok(()));
    assert_eq!(cb.try_retry(now, &mut c), Err(Overflow(Resource::Retries)));
    assert_eq!(cb.retry_budget_remaining(now), None);
    cb.release(a.unwrap());
    assert_eq!(cb.try_retry(now, &mut c), Ok(()));
    cb.release(b.unwrap());
    cb.release(c.unwrap());
}

proptest! {
    /// Over any sequence of requests and retries, the retries in the window ending at the
    /// second of any retry stay within the budget's share of that window's requests plus the
    /// floor (a window ending at a second without a retry may have lost requests that
    /// justified an earlier retry: the budget is checked when a retry is made).
    #[test]
    fn retries_stay_within_the_budget_in_every_window(
        percent in 0u32..150,
        floor in 0u32..5,
        window in 1u64..6,
        ops in prop::collection::vec((any::<bool>(), 0u64..700), 0..400),
    ) {
        let mut cb = budget(percent, floor, window);
        let mut now = epoch();
        // (second, requests, retries) per event, to check each window afterwards.
        let mut log: Vec<(u64, bool)> = vec![];
        let mut held = None;
        for (is_request, step_ms) in ops {
            now += Duration::from_millis(step_ms);
            let second = now.since_origin().as_secs();
            if is_request {
                cb.record_request(now);
                log.push((second, true));
            } else if cb.try_retry(now, &mut held).is_ok() {
                log.push((second, false));
            }
        }
        let retry_seconds: Vec<u64> = log.iter().filter(|e| !e.1).map(|e| e.0).collect();
        for end in retry_seconds {
            let start = end.saturating_sub(window - 1);
            let in_window = log.iter().filter(|e| (start..=end).contains(&e.0));
            let requests = in_window.clone().filter(|e| e.1).count() as u64;
            let retries = in_window.filter(|e| !e.1).count() as u64;
            prop_assert!(
                retries <= requests * u64::from(percent) / 100 + u64::from(floor) * window,
                "window ending {}: {} retries for {} requests", end, retries, requests
            );
        }
        if let Some(p) = held {
            cb.release(p);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Host ids that change hands (DNS clusters)
// ---------------------------------------------------------------------------------------------

#[test]
fn a_replaced_host_starts_over_unknown_with_a_probe_at_once() {
    let t0 = epoch();
    let mut c = healthy_checker(t0, 2, hc_settings());
    // Host 1's probe is out when its id gets a new address: cancelled, and a new probe sent.
    let t1 = t0 + 5 * S;
    c.handle_timeout(t1);
    assert_eq!(actions(&mut c), [probe(0), probe(1)]);
    let new = HostRef {
        id: HostId(1),
        epoch: 1,
    };
    c.replace_host(t1 + MS, new);
    assert_eq!(
        actions(&mut c),
        [
            cancel(1),
            HealthAction::Probe {
                host: HostId(1),
                epoch: 1
            }
        ]
    );
    assert_eq!(c.health(HostId(1)), HostHealth::Unknown);
    assert!(events(&mut c).is_empty(), "the driver marks the id itself");
    // The old host's probe answers after all (it was under way): stale, dropped, and the new
    // host's probe is still outstanding.
    let old = HostRef {
        id: HostId(1),
        epoch: 0,
    };
    assert!(!c.handle_probe_result_for(t1 + MS, old, ProbeResult::Success));
    assert!(events(&mut c).is_empty());
    assert_eq!(c.health(HostId(1)), HostHealth::Unknown);
    assert!(c.probing(HostId(1)));
    // The new probe passes: healthy again, from unknown (one success).
    c.handle_probe_result(t1 + 2 * MS, HostId(1), ProbeResult::Success);
    assert_eq!(events(&mut c), [HealthEvent::BecameHealthy(HostId(1))]);
    // Host 0 was not touched.
    assert_eq!(c.health(HostId(0)), HostHealth::Healthy);
    assert!(c.probing(HostId(0)));
}

#[test]
fn a_forgotten_host_loses_its_ejection_and_its_counts() {
    let t0 = epoch();
    let mut d = OutlierDetector::new(10, OutlierSettings::default());
    fail(&mut d, t0, 3, UpstreamResult::Status(500), 5);
    assert!(d.is_ejected(HostId(3)));
    let _ = od_events(&mut d);
    fail(&mut d, t0, 4, UpstreamResult::Status(500), 4);
    let renumbered = |id| HostRef {
        id: HostId(id),
        epoch: 1,
    };
    d.replace_host(renumbered(3));
    d.replace_host(renumbered(4));
    assert_eq!(od_events(&mut d), [OutlierEvent::Unejected(HostId(3))]);
    // The old host 4's results still arriving are dropped: four more 5xx of the old epoch
    // plus one of the new do not eject the new host.
    let old = HostRef {
        id: HostId(4),
        epoch: 0,
    };
    for _ in 0..4 {
        assert!(!d.handle_result_for(t0, old, UpstreamResult::Status(500)));
    }
    assert!(d.handle_result_for(t0, renumbered(4), UpstreamResult::Status(500)));
    assert!(!d.is_ejected(HostId(4)));
    // Back to the state the rest of the test expects: the new host's one 5xx forgotten.
    d.replace_host(HostRef {
        id: HostId(4),
        epoch: 2,
    });
    assert!(!d.is_ejected(HostId(3)));
    assert_eq!(d.ejected_count(), 0);
    // Host 4's four 5xx were forgotten: one more does not eject.
    fail(&mut d, t0, 4, UpstreamResult::Status(500), 1);
    assert!(!d.is_ejected(HostId(4)));
}

#[test]
fn only_present_hosts_count_toward_the_panic_threshold() {
    // Two hosts in four slots, both down: panic over the two (not "2 of 4 usable").
    let healthy = [false, false, true, true];
    let ejected = [false; 4];
    let present = [true, true, false, false];
    let mut out = [false; 4];
    assert!(fill_availability_of_present(
        &healthy, &ejected, &present, 50, &mut out
    ));
    assert_eq!(out, [true, true, false, false]);
    // One of the two up: 50 % is not below the threshold; a free slot is never available.
    let healthy = [true, false, true, true];
    assert!(!fill_availability_of_present(
        &healthy, &ejected, &present, 50, &mut out
    ));
    assert_eq!(out, [true, false, false, false]);
}

#[test]
fn the_ejection_cap_of_a_dns_cluster_is_a_share_of_its_live_hosts() {
    let t0 = epoch();
    let settings = OutlierSettings {
        max_ejection_percent: 50,
        ..OutlierSettings::default()
    };
    // 8 slots, 2 hosts: at most one ejected (50 % of 2), not four.
    let mut d = OutlierDetector::new(8, settings);
    d.set_live_hosts(2);
    assert_eq!(d.max_ejected(), 1);
    fail(&mut d, t0, 0, UpstreamResult::Status(500), 5);
    fail(&mut d, t0, 1, UpstreamResult::Status(500), 5);
    assert!(d.is_ejected(HostId(0)));
    assert!(!d.is_ejected(HostId(1)));
    assert_eq!(d.ejections_skipped(), 1);
}
