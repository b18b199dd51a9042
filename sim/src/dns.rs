//! DNS scenario: clients → sidecar (real engine, `http` listener) → a `strict_dns` cluster whose
//! one name's answers change under traffic, through the engine's resolver seam (scripted answers,
//! [`TurmoilNet::script_dns`]).
//!
//! The name first answers `{up1, up2}`; at `t_add` it answers `{up1, up2, up3}` (a host added);
//! from `t_fail` the lookups fail (the last answer must be kept); at `t_remove` it answers
//! `{up2, up3, up4}` (up1 removed — up1 itself stays up, so a request sent to it still
//! completes — and up4 added). The cluster has `max_hosts: 3`, so up4 takes the slot up1 had
//! (host id 0) at once, while up1 still has requests in flight on kept-alive connections: the
//! case of a slot reused while its old host is busy. Every upstream stays alive: no request
//! has a reason to fail.
//!
//! Invariants checked after every run:
//!
//! 1. every request got exactly one response within its deadline, a 200 carrying its own id
//!    (every request had a live host the whole time);
//! 2. requests reach the added host: up3 receives requests after `t_add`;
//! 3. the last answer is kept on failure: up1, up2 and up3 all receive requests while the lookups
//!    fail (between `t_fail` + a refresh and `t_remove`), and the failures are counted;
//! 4. none reaches the removed host once its connections drained: up1 receives no request
//!    later than `t_remove` + a refresh + [`DRAIN_MARGIN`] — in particular every request
//!    picked for slot 0 after up4 took it reaches up4, the address the slot had when the
//!    request was picked: a connection to up1 that finished its request after the change is
//!    not pooled under the slot (with the slot epoch check disabled, up1's kept-alive
//!    connections serve slot 0's requests until the end of the run);
//! 5. the host that took the freed slot serves: up4 receives requests after `t_remove`, none
//!    before;
//! 6. the cluster's host changes were counted (first answer, add, remove), and at the end the
//!    sidecar has no open connection left.

use std::cell::RefCell;
use std::net::IpAddr;
use std::rc::Rc;
use std::time::Duration;

use sluice_core::config::Config;
use sluice_core::rng::Rng;
use sluice_runtime::net::TurmoilNet;
use sluice_runtime::stats::{DetailedSnapshot, WorkerStats};

use crate::RunReport;
use crate::peers;
use crate::peers::http::{ClientPlan, Traffic};
use crate::topology::{add_observer, add_sidecar, add_upstreams, new_sim, report, run_to_end};
use crate::trace::Trace;

const UPSTREAMS: [&str; 4] = ["up1", "up2", "up3", "up4"];
/// The name the cluster resolves.
const NAME: &str = "app.sim.internal";
const LISTEN_PORT: u16 = 10_000;
const UPSTREAM_PORT: u16 = 8_080;
const CLIENTS: usize = 4;
const TRAFFIC_FROM: Duration = Duration::from_millis(200);
const TRAFFIC_UNTIL: Duration = Duration::from_millis(4_500);
const CLIENT_DEADLINE: Duration = Duration::from_secs(5);
const REFRESH_MS: u64 = 200;
/// How long after its removal a request may still reach a removed host: one in flight when
/// the answer came (an upstream takes at most 120 ms) plus latencies.
const DRAIN_MARGIN: Duration = Duration::from_millis(300);

/// The run's record: what the clients and upstreams did.
type World = Traffic;

fn config(_upstreams: &[IpAddr]) -> Config {
    let yaml = format!(
        r#"
listeners:
  - name: http_in
    address: "[::]:{LISTEN_PORT}"
    http:
      virtual_hosts:
        - name: all
          domains: ["*"]
          routes:
            - match: {{ prefix: / }}
              route:
                cluster: app
                timeout: 3s
                retry_policy: {{ retry_on: [connect-failure, reset], num_retries: 2 }}
clusters:
  - name: app
    type: strict_dns
    max_hosts: 3
    dns_refresh_rate: {REFRESH_MS}ms
    connect_timeout: 300ms
    hosts:
      - {{ address: "{NAME}:{UPSTREAM_PORT}" }}
drain_timeout: 1s
"#
    );
    Config::from_yaml(&yaml).unwrap_or_else(|e| panic!("sim config invalid: {e}\n{yaml}"))
}

/// The moments the answers change.
struct Schedule {
    add: Duration,
    fail: Duration,
    remove: Duration,
}

/// Runs the DNS scenario for one seed.
#[must_use]
pub fn run(seed: u64) -> RunReport {
    let trace = Trace::default();
    let world = Rc::new(RefCell::new(World::default()));
    let mut schedule = Rng::from_seed(seed ^ 0x0d45_1a5e);
    let add = Duration::from_millis(700 + schedule.below(500));
    let fail = add + Duration::from_millis(600 + schedule.below(400));
    let remove = fail + Duration::from_millis(600 + schedule.below(400));
    let at = Schedule { add, fail, remove };

    let mut sim = new_sim(seed, Duration::from_millis(15));
    let ips: Vec<IpAddr> = {
        add_upstreams(&mut sim, &UPSTREAMS, &world, &trace, upstream);
        UPSTREAMS.iter().map(|u| sim.lookup(*u)).collect()
    };
    // One script per run, on this (the simulation's) thread.
    TurmoilNet::clear_dns();
    TurmoilNet::script_dns(NAME, Some(vec![ips[0], ips[1]]), None);
    let sidecar = add_sidecar(&mut sim, seed, LISTEN_PORT, &UPSTREAMS, config);
    for c in 0..CLIENTS {
        let (world, trace) = (world.clone(), trace.clone());
        let client_seed = seed.wrapping_mul(131).wrapping_add(c as u64);
        sim.client(format!("client{c}"), async move {
            client(c, client_seed, world, trace).await;
            Ok(())
        });
    }
    let final_stats = {
        let world = world.clone();
        add_observer(
            &mut sim,
            move || world.borrow().clients_done == CLIENTS,
            Duration::from_millis(500),
            sidecar,
            WorkerStats::detailed,
        )
    };

    let mut violations = Vec::new();
    let mut step = 0;
    let t = trace.clone();
    run_to_end(&mut sim, &mut violations, |_, now| {
        let answers: [(Duration, Option<Vec<IpAddr>>, &str); 3] = [
            (at.add, Some(ips[..3].to_vec()), "answers up1, up2, up3"),
            (at.fail, None, "fails"),
            (
                at.remove,
                Some(vec![ips[1], ips[2], ips[3]]),
                "answers up2, up3, up4",
            ),
        ];
        while step < answers.len() && now >= answers[step].0 {
            let (_, answer, what) = &answers[step];
            TurmoilNet::script_dns(NAME, answer.clone(), None);
            t.record(now, "SIM", format!("{NAME} {what}"));
            step += 1;
        }
    });
    drop(sim);
    TurmoilNet::clear_dns();

    let w = world.borrow();
    check(&w, final_stats.borrow().as_ref(), &at, &mut violations);
    let ok = w
        .requests
        .iter()
        .filter(|r| matches!(r.outcome, Ok(200)))
        .count();
    let per_host: Vec<usize> = (0..UPSTREAMS.len())
        .map(|i| w.received.get(&i).map_or(0, Vec::len))
        .collect();
    let summary = format!(
        "dns: {} requests, {ok} 200, received per host {per_host:?}",
        w.requests.len()
    );
    report(seed, &trace, violations, summary)
}

fn check(w: &World, stats: Option<&DetailedSnapshot>, at: &Schedule, violations: &mut Vec<String>) {
    if w.requests.len() != w.started {
        violations.push(format!(
            "{} of {} requests finished",
            w.requests.len(),
            w.started
        ));
    }
    for r in &w.requests {
        if r.end - r.start > CLIENT_DEADLINE + Duration::from_millis(10) {
            violations.push(format!("{} took {:?}", r.id, r.end - r.start));
        }
        if r.outcome != Ok(200) {
            violations.push(format!(
                "{} started at {:?} (a live host all along) and got {:?}",
                r.id, r.start, r.outcome
            ));
        }
    }
    let refresh = Duration::from_millis(REFRESH_MS);
    let received = |host: usize, from: Duration, to: Duration| {
        w.received
            .get(&host)
            .into_iter()
            .flatten()
            .filter(|&&t| t >= from && t < to)
            .count()
    };
    if received(2, at.add, TRAFFIC_UNTIL + refresh) == 0 {
        violations.push(format!(
            "the added host up3 received no request after it was added at {:?}",
            at.add
        ));
    }
    // While the lookups fail the last answer (all three) stays.
    for (host, name) in UPSTREAMS.iter().enumerate().take(3) {
        if received(host, at.fail + refresh, at.remove) == 0 {
            violations.push(format!(
                "{name} received nothing while the lookups failed ({:?}..{:?}): the last answer \
                 was not kept",
                at.fail + refresh,
                at.remove
            ));
        }
    }
    if received(3, at.remove, TRAFFIC_UNTIL + refresh) == 0 {
        violations.push(format!(
            "up4, which took up1's slot at {:?}, received no request",
            at.remove
        ));
    }
    if received(3, Duration::ZERO, at.remove) > 0 {
        violations.push("up4 received a request before it was in an answer".into());
    }
    let drained = at.remove + refresh + DRAIN_MARGIN;
    let late = received(0, drained, Duration::MAX);
    if late > 0 {
        violations.push(format!(
            "the removed host up1 received {late} requests after {drained:?} (removed at {:?})",
            at.remove
        ));
    }
    match stats {
        None => violations.push("the observer never read the sidecar's counters".into()),
        Some(s) => {
            if s.worker.downstream_cx_active() != 0 {
                violations.push(format!(
                    "{} sidecar connections still open",
                    s.worker.downstream_cx_active()
                ));
            }
            let c = &s.clusters[0];
            if c.upstream_dns_failures == 0 {
                violations.push("the failed lookups were not counted".into());
            }
            if c.upstream_dns_host_changes < 3 {
                violations.push(format!(
                    "{} host changes counted; expected at least 3 (first answer, add, remove)",
                    c.upstream_dns_host_changes
                ));
            }
        }
    }
}

async fn upstream(index: usize, world: Rc<RefCell<World>>, trace: Trace) -> turmoil::Result {
    peers::http::echo_upstream(UPSTREAMS[index], UPSTREAM_PORT, index, world, trace).await
}

async fn client(c: usize, seed: u64, world: Rc<RefCell<World>>, trace: Trace) {
    let plan = ClientPlan {
        index: c,
        path: "/item",
        id_prefix: 'c',
        port: LISTEN_PORT,
        from: TRAFFIC_FROM,
        until: TRAFFIC_UNTIL,
        max_pause_ms: 40,
        deadline: CLIENT_DEADLINE,
    };
    peers::http::keep_alive_client(plan, seed, world, trace).await;
}
