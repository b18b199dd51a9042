//! Upstream health and resilience scenarios (issue 5): clients → sidecar (real engine, `http`
//! listener) → three HTTP upstreams whose health endpoint and data path the scenario controls.
//!
//! | scenario | fault | what must hold |
//! |---|---|---|
//! | [`Resilience::HealthFlap`] | one host's `/health` answers 503 from `t1` to `t2` (its data path stays fine) | it gets no request from `t1 + unhealthy_threshold × interval + timeout` (+ network slack) until `t2 + (healthy_threshold − 1) × interval × (1 − jitter)`, and gets traffic again by `t2 + healthy_threshold × interval + timeout` (+ slack); every request 2xx |
//! | [`Resilience::Outlier5xx`] | two hosts answer 500 from `t1` on; `max_ejection_percent` allows one ejection | a bad host is ejected after at most `consecutive_5xx` (+ requests already in flight) 500s and readmitted after `base_ejection_time`; in every window at least two hosts serve (never more than the cap ejected); the cap was hit (ejection skipped) |
//! | [`Resilience::AllDown`] | every upstream crashes at `t1` (panic threshold 0) | once the health checks have marked them down, every request gets a fast 503 (no connect attempt); none hangs |
//! | [`Resilience::Partition`] | the sidecar is cut from one upstream from `t1` to `t2` | every request 2xx (retries, then the health check drains it); readmitted after the repair |
//! | [`Resilience::Breaker`] | bursts of concurrent requests over `max_requests` to a slow upstream | per burst exactly `max_requests` 2xx and 503 (`upstream overflow`) for the excess; the overflow counter matches |
//!
//! As in [`crate::http`], the upstreams and clients speak HTTP with `httparse`, not with
//! Sluice's codec. Each request carries a unique `x-sim-id`; the upstream answers with that id
//! as the body and names itself in `x-upstream`.

use std::cell::RefCell;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::rc::Rc;
use std::time::Duration;

use sluice_core::config::Config;
use sluice_core::rng::Rng;
use sluice_runtime::stats::{DetailedSnapshot, WorkerStats};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use turmoil::net::{TcpListener, TcpStream};

use crate::RunReport;
use crate::peers;
use crate::topology::{
    SIDECAR, add_clients, add_observer, add_sidecar, add_upstreams, elapsed, hosts_yaml, new_sim,
    report, run_to_end,
};
use crate::trace::Trace;

const UPSTREAMS: [&str; 3] = ["up1", "up2", "up3"];
const LISTEN_PORT: u16 = 10_000;
const UPSTREAM_PORT: u16 = 8_080;
/// Largest one-way message latency in the simulated network.
const MAX_LATENCY: Duration = Duration::from_millis(10);
const CLIENTS: usize = 4;
const TRAFFIC_UNTIL: Duration = Duration::from_millis(6_000);
const ROUTE_TIMEOUT: Duration = Duration::from_millis(2_000);
/// A request must end within this (route timeout + network): nothing hangs.
const CLIENT_DEADLINE: Duration = Duration::from_millis(2_500);
const IDLE_MS: u64 = 1_500;

/// Health-check settings of the scenarios that use it.
const HC_INTERVAL: Duration = Duration::from_millis(200);
const HC_TIMEOUT: Duration = Duration::from_millis(100);
const HC_JITTER_PERCENT: u32 = 10;
const UNHEALTHY_THRESHOLD: u32 = 2;
const HEALTHY_THRESHOLD: u32 = 2;

/// Outlier detection settings of [`Resilience::Outlier5xx`].
const CONSECUTIVE_5XX: usize = 3;
const BASE_EJECTION: Duration = Duration::from_millis(1_000);

/// Circuit breaker of [`Resilience::Breaker`].
const MAX_REQUESTS: usize = 4;
const BURST: usize = 10;
const BURSTS: [Duration; 3] = [
    Duration::from_millis(500),
    Duration::from_millis(1_500),
    Duration::from_millis(2_500),
];
const SLOW_UPSTREAM: Duration = Duration::from_millis(300);

/// Slack for a request that was routed just before a state change and is still in the
/// network: two one-way latencies and a tick.
const NET_SLACK: Duration = Duration::from_millis(2 * 10 + 5);

/// The resilience scenarios; see the module doc.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resilience {
    /// A host's health check fails, then recovers, under traffic.
    HealthFlap,
    /// Two hosts answer 5xx; outlier detection ejects within its cap.
    Outlier5xx,
    /// Every upstream is down: fast 503s.
    AllDown,
    /// The sidecar is partitioned from one upstream, then repaired.
    Partition,
    /// Bursts over `max_requests`.
    Breaker,
}

impl Resilience {
    /// Every scenario, for registries.
    pub const ALL: [Resilience; 5] = [
        Resilience::HealthFlap,
        Resilience::Outlier5xx,
        Resilience::AllDown,
        Resilience::Partition,
        Resilience::Breaker,
    ];
}

#[derive(Debug)]
struct Req {
    id: String,
    start: Duration,
    end: Duration,
    /// (status, upstream index that answered when it says so), or the clean failure.
    outcome: Result<(u16, Option<usize>), String>,
    body: String,
}

#[derive(Default)]
struct World {
    /// Per upstream: `/health` answers 200 (else 503).
    health_ok: [bool; 3],
    /// Per upstream: the data path answers 500.
    fail_5xx: [bool; 3],
    /// Per upstream: data-path processing time.
    delay: Duration,
    requests: Vec<Req>,
    started: usize,
    /// (time received, upstream) of every data-path request an upstream received.
    received: Vec<(Duration, usize)>,
    clients_done: usize,
}

fn config(scenario: Resilience, upstreams: &[IpAddr]) -> Config {
    let hosts = hosts_yaml(upstreams, UPSTREAM_PORT);
    let ms = |d: Duration| d.as_millis();
    let health_check = format!(
        "health_check: {{ {probe}, interval: {}ms, timeout: {}ms, jitter: {HC_JITTER_PERCENT}%, \
         unhealthy_threshold: {UNHEALTHY_THRESHOLD}, healthy_threshold: {HEALTHY_THRESHOLD}, \
         no_traffic_interval: {}ms }}",
        ms(HC_INTERVAL),
        ms(HC_TIMEOUT),
        ms(HC_INTERVAL),
        probe = if scenario == Resilience::AllDown {
            "tcp: {}"
        } else {
            "http: { path: /health }"
        },
    );
    let (retry, cluster_extra) = match scenario {
        Resilience::HealthFlap | Resilience::Partition => (
            "retry_policy: { retry_on: [connect-failure, reset, 5xx], num_retries: 2, per_try_timeout: 400ms }",
            health_check,
        ),
        Resilience::AllDown => (
            "retry_policy: { retry_on: [connect-failure, reset], num_retries: 2, per_try_timeout: 400ms }",
            format!("{health_check}\n    panic_threshold: 0%"),
        ),
        Resilience::Outlier5xx => (
            "",
            format!(
                "outlier_detection: {{ consecutive_5xx: {CONSECUTIVE_5XX}, consecutive_gateway_failure: 0, \
                 base_ejection_time: {}ms, max_ejection_time: 10s, max_ejection_percent: 34 }}",
                ms(BASE_EJECTION)
            ),
        ),
        Resilience::Breaker => (
            "",
            format!("circuit_breakers: {{ max_requests: {MAX_REQUESTS} }}"),
        ),
    };
    let yaml = format!(
        r#"
listeners:
  - name: http_in
    address: "[::]:{LISTEN_PORT}"
    http:
      idle_timeout: {IDLE_MS}ms
      virtual_hosts:
        - name: all
          domains: ["*"]
          routes:
            - match: {{ prefix: / }}
              route:
                cluster: app
                timeout: {}ms
                {retry}
clusters:
  - name: app
    connect_timeout: 200ms
    lb_policy: round_robin
    {cluster_extra}
    hosts:
{hosts}drain_timeout: 1s
"#,
        ms(ROUTE_TIMEOUT)
    );
    Config::from_yaml(&yaml).unwrap_or_else(|e| panic!("sim config invalid: {e}\n{yaml}"))
}

fn config_flap(u: &[IpAddr]) -> Config {
    config(Resilience::HealthFlap, u)
}
fn config_outlier(u: &[IpAddr]) -> Config {
    config(Resilience::Outlier5xx, u)
}
fn config_all_down(u: &[IpAddr]) -> Config {
    config(Resilience::AllDown, u)
}
fn config_partition(u: &[IpAddr]) -> Config {
    config(Resilience::Partition, u)
}
fn config_breaker(u: &[IpAddr]) -> Config {
    config(Resilience::Breaker, u)
}

/// Runs one resilience scenario for one seed.
#[must_use]
pub fn run(scenario: Resilience, seed: u64) -> RunReport {
    let trace = Trace::default();
    let world = Rc::new(RefCell::new(World {
        health_ok: [true; 3],
        delay: if scenario == Resilience::Breaker {
            SLOW_UPSTREAM
        } else {
            Duration::ZERO
        },
        ..World::default()
    }));
    let mut schedule = Rng::from_seed(seed ^ 0x5e5e_11e5);
    let t1 = Duration::from_millis(1_000 + schedule.below(500));
    let t2 = t1 + Duration::from_millis(1_200 + schedule.below(600));
    let victim = schedule.below(3) as usize;
    let second_victim = (victim + 1 + schedule.below(2) as usize) % 3;

    let mut sim = new_sim(seed, MAX_LATENCY);
    add_upstreams(&mut sim, &UPSTREAMS, &world, &trace, upstream);
    let make_config = match scenario {
        Resilience::HealthFlap => config_flap,
        Resilience::Outlier5xx => config_outlier,
        Resilience::AllDown => config_all_down,
        Resilience::Partition => config_partition,
        Resilience::Breaker => config_breaker,
    };
    let sidecar = add_sidecar(&mut sim, seed, LISTEN_PORT, &UPSTREAMS, make_config);
    let clients = if scenario == Resilience::Breaker {
        let (world, trace) = (world.clone(), trace.clone());
        add_clients(&mut sim, "bursts", BURSTS.len() * BURST, move |i| {
            let (b, k) = (i / BURST, i % BURST);
            burst_client(b, k, BURSTS[b], world.clone(), trace.clone())
        });
        BURSTS.len() * BURST
    } else {
        {
            let (world, trace) = (world.clone(), trace.clone());
            add_clients(&mut sim, "clients", CLIENTS, move |c| {
                let client_seed = seed.wrapping_mul(131).wrapping_add(c as u64);
                client(c, client_seed, world.clone(), trace.clone())
            });
        }
        CLIENTS
    };
    let final_stats = {
        let world = world.clone();
        add_observer(
            &mut sim,
            move || world.borrow().clients_done == clients,
            Duration::from_millis(IDLE_MS + 500),
            sidecar,
            WorkerStats::detailed,
        )
    };

    let mut violations = Vec::new();
    let (mut faulted, mut healed) = (false, false);
    run_to_end(&mut sim, &mut violations, |sim, now| {
        if !faulted && now >= t1 && scenario != Resilience::Breaker {
            faulted = true;
            let what = match scenario {
                Resilience::HealthFlap => {
                    world.borrow_mut().health_ok[victim] = false;
                    format!("{} health fails", UPSTREAMS[victim])
                }
                Resilience::Outlier5xx => {
                    let mut w = world.borrow_mut();
                    w.fail_5xx[victim] = true;
                    w.fail_5xx[second_victim] = true;
                    format!(
                        "{} and {} answer 500",
                        UPSTREAMS[victim], UPSTREAMS[second_victim]
                    )
                }
                Resilience::AllDown => {
                    for u in UPSTREAMS {
                        sim.crash(u);
                    }
                    "every upstream crashed".to_owned()
                }
                Resilience::Partition => {
                    sim.partition(SIDECAR, UPSTREAMS[victim]);
                    format!("partition sidecar / {}", UPSTREAMS[victim])
                }
                Resilience::Breaker => unreachable!(),
            };
            trace.record(now, "SIM", what);
        }
        if faulted && !healed && now >= t2 {
            match scenario {
                Resilience::HealthFlap => {
                    healed = true;
                    world.borrow_mut().health_ok[victim] = true;
                    trace.record(now, "SIM", format!("{} health passes", UPSTREAMS[victim]));
                }
                Resilience::Partition => {
                    healed = true;
                    sim.repair(SIDECAR, UPSTREAMS[victim]);
                    trace.record(now, "SIM", format!("repair {}", UPSTREAMS[victim]));
                }
                _ => {}
            }
        }
    });
    drop(sim);

    let w = world.borrow();
    let stats = final_stats.borrow();
    common_checks(&w, stats.as_ref(), &mut violations);
    let ctx = Ctx {
        t1,
        t2,
        victim,
        second_victim,
    };
    match scenario {
        Resilience::HealthFlap => check_flap(&w, &ctx, &mut violations),
        Resilience::Outlier5xx => check_outlier(&w, &ctx, stats.as_ref(), &mut violations),
        Resilience::AllDown => check_all_down(&w, &ctx, &mut violations),
        Resilience::Partition => check_partition(&w, &ctx, &mut violations),
        Resilience::Breaker => check_breaker(&w, stats.as_ref(), &mut violations),
    }
    let ok = w
        .requests
        .iter()
        .filter(|r| matches!(r.outcome, Ok((200..=299, _))))
        .count();
    let summary = format!(
        "{scenario:?}: {} requests, {ok} 2xx, {} other; victim {}",
        w.requests.len(),
        w.requests.len() - ok,
        UPSTREAMS[victim]
    );
    report(seed, &trace, violations, summary)
}

struct Ctx {
    t1: Duration,
    t2: Duration,
    victim: usize,
    second_victim: usize,
}

/// Every scenario: all requests finished, within the deadline, none crossed; no sidecar
/// connection left open.
fn common_checks(w: &World, stats: Option<&DetailedSnapshot>, violations: &mut Vec<String>) {
    if w.requests.len() != w.started {
        violations.push(format!(
            "{} of {} requests finished",
            w.requests.len(),
            w.started
        ));
    }
    for r in &w.requests {
        if r.end - r.start > CLIENT_DEADLINE {
            violations.push(format!("{} hung: took {:?}", r.id, r.end - r.start));
        }
        if let Err(e) = &r.outcome
            && e.starts_with("CROSSED")
        {
            violations.push(format!("{}: {e}", r.id));
        }
    }
    match stats {
        None => violations.push("the observer never read the sidecar's counters".into()),
        Some(s) if s.worker.downstream_cx_active() != 0 => violations.push(format!(
            "{} sidecar connections still open",
            s.worker.downstream_cx_active()
        )),
        Some(_) => {}
    }
}

fn received_by(w: &World, upstream: usize) -> impl Iterator<Item = Duration> + '_ {
    w.received
        .iter()
        .filter(move |(_, u)| *u == upstream)
        .map(|(t, _)| *t)
}

fn all_2xx(w: &World, violations: &mut Vec<String>) {
    for r in &w.requests {
        if !matches!(r.outcome, Ok((200..=299, _))) {
            violations.push(format!(
                "{} (started {:?}) got {:?}",
                r.id, r.start, r.outcome
            ));
        }
    }
}

fn check_flap(w: &World, c: &Ctx, violations: &mut Vec<String>) {
    all_2xx(w, violations);
    let drained_by = c.t1 + HC_INTERVAL * UNHEALTHY_THRESHOLD + HC_TIMEOUT + NET_SLACK;
    let earliest_back =
        c.t2 + (HC_INTERVAL * (HEALTHY_THRESHOLD - 1)) * (100 - HC_JITTER_PERCENT) / 100;
    // Readmitted by then, and traffic (4 clients, ≤ 60 ms apart) reaches it within 150 ms.
    let back_by = c.t2
        + HC_INTERVAL * HEALTHY_THRESHOLD
        + HC_TIMEOUT
        + NET_SLACK
        + Duration::from_millis(150);
    let name = UPSTREAMS[c.victim];
    for t in received_by(w, c.victim) {
        if t > drained_by && t < earliest_back {
            violations.push(format!(
                "{name} received a request at {t:?}, after it should have been drained ({drained_by:?}) \
                 and before it could be readmitted ({earliest_back:?})"
            ));
        }
    }
    if TRAFFIC_UNTIL > back_by + Duration::from_millis(200)
        && !received_by(w, c.victim).any(|t| t >= earliest_back && t <= back_by)
    {
        violations.push(format!(
            "{name} was not readmitted: no request between {earliest_back:?} and {back_by:?}"
        ));
    }
    if !received_by(w, c.victim).any(|t| t < c.t1) {
        violations.push(format!(
            "{name} got no traffic before its health check failed"
        ));
    }
}

fn check_outlier(
    w: &World,
    c: &Ctx,
    stats: Option<&DetailedSnapshot>,
    violations: &mut Vec<String>,
) {
    // Every request answered 200 or the bad hosts' 500; a 500 only ever from a bad host.
    for r in &w.requests {
        match r.outcome {
            Ok((200, _)) => {}
            Ok((500, Some(u))) if u == c.victim || u == c.second_victim => {}
            ref other => violations.push(format!("{} got {other:?}", r.id)),
        }
    }
    let Some(s) = stats else { return };
    let cluster = &s.clusters[0];
    if cluster.outlier_ejections_total == 0 {
        violations.push("no host was ejected".into());
    }
    if cluster.outlier_ejections_overflow == 0 {
        violations.push(
            "the second bad host was never held back by max_ejection_percent (no skipped ejection)"
                .into(),
        );
    }
    // The cap: at most one host ejected, so at least two hosts serve every window.
    let window = Duration::from_millis(400);
    let mut at = c.t1 + Duration::from_millis(300);
    while at + window <= TRAFFIC_UNTIL {
        let mut serving = [false; 3];
        for (t, u) in &w.received {
            if *t >= at && *t < at + window {
                serving[*u] = true;
            }
        }
        let n = serving.iter().filter(|s| **s).count();
        if n < 2 {
            violations.push(format!(
                "only {n} host(s) served from {at:?} to {:?}: more than max_ejection_percent ejected",
                at + window
            ));
        }
        at += window;
    }
    // The first ejection: the bad host whose traffic stops first stopped after at most
    // consecutive_5xx (+ the requests already in flight) 500s, and came back after
    // base_ejection_time. (The other bad host's ejection waits for the cap: not checked here.)
    let first_gap = |bad: usize| {
        let times: Vec<Duration> = received_by(w, bad).filter(|t| *t >= c.t1).collect();
        times
            .windows(2)
            .enumerate()
            .find(|(_, p)| p[1] - p[0] >= BASE_EJECTION * 9 / 10)
            .map(|(k, p)| (p[0], k + 1, p[1] - p[0], bad))
    };
    match [first_gap(c.victim), first_gap(c.second_victim)]
        .into_iter()
        .flatten()
        .min()
    {
        None => violations.push("no bad host shows an ejection gap in its traffic".into()),
        Some((_, answered, gap, bad)) => {
            if answered > CONSECUTIVE_5XX + CLIENTS {
                violations.push(format!(
                    "{} answered {answered} 500s before its ejection (consecutive_5xx is {CONSECUTIVE_5XX})",
                    UPSTREAMS[bad]
                ));
            }
            if gap > BASE_EJECTION + Duration::from_millis(300) {
                violations.push(format!(
                    "{} came back {gap:?} after its ejection (base_ejection_time {BASE_EJECTION:?})",
                    UPSTREAMS[bad]
                ));
            }
        }
    }
}

fn check_all_down(w: &World, c: &Ctx, violations: &mut Vec<String>) {
    let down_by = c.t1 + HC_INTERVAL * UNHEALTHY_THRESHOLD + HC_TIMEOUT + NET_SLACK;
    for r in &w.requests {
        if r.start < c.t1 {
            continue;
        }
        if r.start > down_by {
            let fast = 2 * MAX_LATENCY + Duration::from_millis(5);
            match r.outcome {
                Ok((503, _)) if r.end - r.start <= fast => {}
                ref other => violations.push(format!(
                    "{} started at {:?}, after every host was marked down, and got {other:?} in {:?} \
                     (expected a 503 within {fast:?})",
                    r.id,
                    r.start,
                    r.end - r.start
                )),
            }
        } else if let Ok((200..=299, _)) = r.outcome {
            // Answered before the crash reached it: fine.
        } else if !matches!(r.outcome, Ok((502..=504, _))) {
            violations.push(format!(
                "{} during the crash got {:?} (expected a 5xx from the proxy)",
                r.id, r.outcome
            ));
        }
    }
    if !w.requests.iter().any(|r| r.start > down_by) {
        violations.push("no request ran after every host was marked down".into());
    }
}

fn check_partition(w: &World, c: &Ctx, violations: &mut Vec<String>) {
    all_2xx(w, violations);
    let drained_by = c.t1 + HC_INTERVAL * UNHEALTHY_THRESHOLD + HC_TIMEOUT + NET_SLACK;
    let back_by = c.t2
        + HC_INTERVAL * HEALTHY_THRESHOLD
        + HC_TIMEOUT
        + NET_SLACK
        + Duration::from_millis(150);
    let name = UPSTREAMS[c.victim];
    // Nothing can reach it while partitioned; and once repaired it must come back.
    for t in received_by(w, c.victim) {
        if t > drained_by && t < c.t2 {
            violations.push(format!(
                "{name} received a request at {t:?} while partitioned"
            ));
        }
    }
    if TRAFFIC_UNTIL > back_by + Duration::from_millis(200)
        && !received_by(w, c.victim).any(|t| t >= c.t2 && t <= back_by)
    {
        violations.push(format!(
            "{name} was not readmitted after the repair: no request between {:?} and {back_by:?}",
            c.t2
        ));
    }
}

fn check_breaker(w: &World, stats: Option<&DetailedSnapshot>, violations: &mut Vec<String>) {
    let mut excess_total = 0;
    for b in 0..BURSTS.len() {
        let prefix = format!("b{b}-");
        let burst: Vec<&Req> = w
            .requests
            .iter()
            .filter(|r| r.id.starts_with(&prefix))
            .collect();
        let ok = burst
            .iter()
            .filter(|r| matches!(r.outcome, Ok((200, _))))
            .count();
        let overflow = burst
            .iter()
            .filter(|r| matches!(r.outcome, Ok((503, _))) && r.body == "upstream overflow\n")
            .count();
        if burst.len() != BURST || ok != MAX_REQUESTS || overflow != BURST - MAX_REQUESTS {
            violations.push(format!(
                "burst {b}: {} requests, {ok} 200 and {overflow} 503 overflow (expected {MAX_REQUESTS} and {}): {:?}",
                burst.len(),
                BURST - MAX_REQUESTS,
                burst.iter().map(|r| &r.outcome).collect::<Vec<_>>()
            ));
        }
        excess_total += BURST - MAX_REQUESTS;
    }
    if let Some(s) = stats {
        let counted = s.clusters[0].upstream_rq_overflow;
        if counted != excess_total as u64 {
            violations.push(format!(
                "upstream_rq_overflow is {counted}, expected {excess_total}"
            ));
        }
    }
}

async fn upstream(index: usize, world: Rc<RefCell<World>>, trace: Trace) -> turmoil::Result {
    let listener = TcpListener::bind(SocketAddr::new(
        IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        UPSTREAM_PORT,
    ))
    .await?;
    trace.record(elapsed(), UPSTREAMS[index], "listening");
    loop {
        let (mut stream, _) = listener.accept().await?;
        let world = world.clone();
        tokio::task::spawn_local(async move {
            let mut buf = Vec::with_capacity(1024);
            let mut chunk = [0u8; 2048];
            loop {
                let (id, health, close, total) = loop {
                    let mut headers = [httparse::EMPTY_HEADER; 32];
                    let mut req = httparse::Request::new(&mut headers);
                    if let Ok(httparse::Status::Complete(head_len)) = req.parse(&buf) {
                        let find = |n: &str| {
                            req.headers
                                .iter()
                                .find(|h| h.name.eq_ignore_ascii_case(n))
                                .map(|h| String::from_utf8_lossy(h.value).to_ascii_lowercase())
                        };
                        break (
                            find("x-sim-id").unwrap_or_default(),
                            req.path == Some("/health"),
                            find("connection").is_some_and(|v| v.contains("close")),
                            head_len,
                        );
                    }
                    match stream.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                };
                buf.drain(..total);
                let response = if health {
                    let ok = world.borrow().health_ok[index];
                    format!(
                        "HTTP/1.1 {}\r\ncontent-length: 0\r\n\r\n",
                        if ok {
                            "200 OK"
                        } else {
                            "503 Service Unavailable"
                        }
                    )
                } else {
                    let (fail, delay) = {
                        let mut w = world.borrow_mut();
                        w.received.push((elapsed(), index));
                        (w.fail_5xx[index], w.delay)
                    };
                    if !delay.is_zero() {
                        tokio::time::sleep(delay).await;
                    }
                    format!(
                        "HTTP/1.1 {}\r\nx-upstream: {index}\r\ncontent-length: {}\r\n\r\n{id}",
                        if fail {
                            "500 Internal Server Error"
                        } else {
                            "200 OK"
                        },
                        id.len()
                    )
                };
                if stream.write_all(response.as_bytes()).await.is_err() || close {
                    return;
                }
            }
        });
    }
}

async fn client(c: usize, seed: u64, world: Rc<RefCell<World>>, trace: Trace) {
    let mut rng = Rng::from_seed(seed);
    let who = format!("client{c}");
    let mut seq = 0;
    let mut conn: Option<TcpStream> = None;
    let mut buf = Vec::with_capacity(1024);
    while elapsed() < TRAFFIC_UNTIL {
        tokio::time::sleep(Duration::from_millis(rng.below(60))).await;
        let id = format!("c{c}-{seq}");
        seq += 1;
        if conn.is_none() {
            conn = TcpStream::connect((SIDECAR, LISTEN_PORT)).await.ok();
            buf.clear();
        }
        let (r, keep) = one_request(conn.as_mut(), &mut buf, &id, &world).await;
        if !keep {
            conn = None;
        }
        trace.record(r.end, &who, format_args!("{id} -> {:?}", r.outcome));
        world.borrow_mut().requests.push(r);
    }
    world.borrow_mut().clients_done += 1;
}

async fn burst_client(
    burst: usize,
    k: usize,
    at: Duration,
    world: Rc<RefCell<World>>,
    trace: Trace,
) {
    tokio::time::sleep(at).await;
    let id = format!("b{burst}-{k}");
    let mut conn = TcpStream::connect((SIDECAR, LISTEN_PORT)).await.ok();
    let mut buf = Vec::new();
    let (r, _) = one_request(conn.as_mut(), &mut buf, &id, &world).await;
    trace.record(
        r.end,
        &format!("burst{burst}-{k}"),
        format_args!("{:?}", r.outcome),
    );
    let mut w = world.borrow_mut();
    w.requests.push(r);
    w.clients_done += 1;
}

/// Sends one GET on `conn` and reads its answer (bounded by [`CLIENT_DEADLINE`]); also whether
/// the connection can carry the next request.
async fn one_request(
    conn: Option<&mut TcpStream>,
    buf: &mut Vec<u8>,
    id: &str,
    world: &Rc<RefCell<World>>,
) -> (Req, bool) {
    world.borrow_mut().started += 1;
    let start = elapsed();
    let request = format!("GET /item HTTP/1.1\r\nhost: sim\r\nx-sim-id: {id}\r\n\r\n");
    let mut keep = false;
    let (outcome, body) = match conn {
        None => (Err("connect failed".to_owned()), String::new()),
        Some(s) => {
            match tokio::time::timeout(CLIENT_DEADLINE, exchange(s, buf, request.as_bytes(), id))
                .await
            {
                Ok(Ok((status, upstream, body, close))) => {
                    keep = !close;
                    (Ok((status, upstream)), body)
                }
                Ok(Err(e)) => (Err(e), String::new()),
                Err(_) => (Err("gave up at the deadline".to_owned()), String::new()),
            }
        }
    };
    let req = Req {
        id: id.to_owned(),
        start,
        end: elapsed(),
        outcome,
        body,
    };
    (req, keep)
}

/// Sends one request and reads its response: `(status, x-upstream, body, connection: close)`.
async fn exchange(
    s: &mut TcpStream,
    buf: &mut Vec<u8>,
    request: &[u8],
    id: &str,
) -> Result<(u16, Option<usize>, String, bool), String> {
    let r = peers::http::exchange::<2048>(s, buf, request)
        .await
        .map_err(|e| e.to_string())?;
    if r.upstream.is_some() && r.body != id {
        return Err(peers::http::crossed(id, &r.body));
    }
    Ok((r.status, r.upstream, r.body, r.close))
}
