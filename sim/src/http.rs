//! HTTP scenarios: clients → sidecar (real engine, `http` listener, retries on) → three
//! HTTP/1.1 upstreams, with an upstream crash or a partition mid-traffic. The clients speak
//! HTTP/1.1, or HTTP/2 with prior knowledge (several streams at once on one connection) for
//! [`HttpScenario::Http2UpstreamCrash`].
//!
//! The simulated upstreams and HTTP/1.1 clients speak HTTP with `httparse` directly — not with
//! Sluice's codec — so the test does not share the code under test; the HTTP/2 clients use the
//! `h2` crate's client (the sidecar uses its server side). Every request carries a unique
//! `x-sim-id`; an upstream answers with that id as the body.
//!
//! Invariants checked after every run:
//!
//! 1. every request got exactly one response (or its connection failed cleanly) within its
//!    deadline — none hangs;
//! 2. a response always carries the id of the request it answers (no crossed responses);
//! 3. a non-idempotent request (POST) reached the upstreams at most once in all — never sent
//!    twice, whatever the retries;
//! 4. a request that started after the fault and before the end got a 2xx, unless it was a POST
//!    that had already been written to the faulty upstream (which may answer 502/504);
//! 5. at the end, the sidecar has no open connection left.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::rc::Rc;
use std::time::Duration;

use sluice_core::config::Config;
use sluice_core::rng::Rng;
use sluice_runtime::stats::{StatsSnapshot, WorkerStats};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use turmoil::net::{TcpListener, TcpStream};

use crate::RunReport;
use crate::peers;
use crate::topology::{
    SIDECAR, add_clients, add_observer, add_sidecar, add_upstreams, crash_or_partition, elapsed,
    hosts_yaml, new_sim, report, run_to_end,
};
use crate::trace::Trace;

const UPSTREAMS: [&str; 3] = ["up1", "up2", "up3"];
const LISTEN_PORT: u16 = 10_000;
const UPSTREAM_PORT: u16 = 8_080;
const CLIENTS: usize = 4;
const TRAFFIC_UNTIL: Duration = Duration::from_millis(4_000);
const CLIENT_DEADLINE: Duration = Duration::from_secs(5);
const ROUTE_TIMEOUT_MS: u64 = 3_000;
const IDLE_MS: u64 = 1_500;
/// The most concurrent streams an HTTP/2 client opens at once.
const H2_BATCH: u64 = 4;

/// The HTTP scenarios.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HttpScenario {
    /// One upstream crashes mid-traffic and stays down.
    UpstreamCrash,
    /// The sidecar is partitioned from one upstream, then repaired.
    UpstreamPartition,
    /// One upstream crashes mid-traffic while HTTP/2 clients multiplex streams.
    Http2UpstreamCrash,
}

#[derive(Debug)]
struct Req {
    id: String,
    post: bool,
    start: Duration,
    end: Duration,
    /// Status, or the clean failure.
    outcome: Result<u16, String>,
}

#[derive(Default)]
struct World {
    requests: Vec<Req>,
    started: usize,
    /// id → (upstream, method) for every complete request an upstream received.
    received: BTreeMap<String, Vec<(usize, bool)>>,
    clients_done: usize,
}

fn config(upstreams: &[IpAddr]) -> Config {
    config_with(upstreams, CLIENTS)
}

/// HTTP/2 clients have up to [`H2_BATCH`] requests in flight each: the retry cap is sized to
/// that concurrency, as [`config`]'s is to one request per client.
fn config_h2(upstreams: &[IpAddr]) -> Config {
    config_with(upstreams, CLIENTS * H2_BATCH as usize)
}

fn config_with(upstreams: &[IpAddr], max_retries: usize) -> Config {
    let hosts = hosts_yaml(upstreams, UPSTREAM_PORT);
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
                timeout: {ROUTE_TIMEOUT_MS}ms
                retry_policy: {{ retry_on: [connect-failure, reset, 5xx], num_retries: 2, per_try_timeout: 800ms }}
clusters:
  - name: app
    connect_timeout: 300ms
    lb_policy: round_robin
    # Every client may be retrying at once when a host fails: the retry budget is sized to the
    # concurrency (the default of 3 would turn a fourth concurrent retry into a 502).
    circuit_breakers: {{ max_retries: {max_retries} }}
    hosts:
{hosts}drain_timeout: 1s
"#
    );
    Config::from_yaml(&yaml).unwrap_or_else(|e| panic!("sim config invalid: {e}\n{yaml}"))
}

/// Runs one HTTP scenario for one seed.
#[must_use]
pub fn run(scenario: HttpScenario, seed: u64) -> RunReport {
    let trace = Trace::default();
    let world = Rc::new(RefCell::new(World::default()));
    let mut schedule = Rng::from_seed(seed ^ 0x0417_7b1e);
    let t1 = Duration::from_millis(700 + schedule.below(1000));
    let t2 = t1 + Duration::from_millis(600 + schedule.below(800));
    let victim = schedule.below(3) as usize;

    let mut sim = new_sim(seed, Duration::from_millis(15));

    add_upstreams(&mut sim, &UPSTREAMS, &world, &trace, upstream);
    let sidecar = if scenario == HttpScenario::Http2UpstreamCrash {
        add_sidecar(&mut sim, seed, LISTEN_PORT, &UPSTREAMS, config_h2)
    } else {
        add_sidecar(&mut sim, seed, LISTEN_PORT, &UPSTREAMS, config)
    };
    {
        let (world, trace) = (world.clone(), trace.clone());
        add_clients(&mut sim, "clients", CLIENTS, move |c| {
            let client_seed = seed.wrapping_mul(131).wrapping_add(c as u64);
            let (world, trace) = (world.clone(), trace.clone());
            async move {
                if scenario == HttpScenario::Http2UpstreamCrash {
                    client_h2(c, client_seed, world, trace).await;
                } else {
                    client(c, client_seed, world, trace).await;
                }
            }
        });
    }
    let final_stats = {
        let world = world.clone();
        let settle = Duration::from_millis(IDLE_MS + ROUTE_TIMEOUT_MS + 500);
        add_observer(
            &mut sim,
            move || world.borrow().clients_done == CLIENTS,
            settle,
            sidecar,
            WorkerStats::snapshot,
        )
    };

    let mut violations = Vec::new();
    let repair_at = (scenario == HttpScenario::UpstreamPartition).then_some(t2);
    let fault = crash_or_partition(&trace, UPSTREAMS[victim], t1, repair_at);
    run_to_end(&mut sim, &mut violations, fault);
    drop(sim);

    let w = world.borrow();
    check(&w, final_stats.borrow().as_ref(), t1, &mut violations);
    let ok = w
        .requests
        .iter()
        .filter(|r| matches!(r.outcome, Ok(200..=299)))
        .count();
    let summary = format!(
        "{scenario:?}: {} requests, {ok} 2xx, {} other",
        w.requests.len(),
        w.requests.len() - ok
    );
    report(seed, &trace, violations, summary)
}

fn check(
    w: &World,
    final_stats: Option<&StatsSnapshot>,
    fault: Duration,
    violations: &mut Vec<String>,
) {
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
        let received = w.received.get(&r.id).map_or(0, Vec::len);
        if r.post && received > 1 {
            violations.push(format!(
                "POST {} reached the upstreams {received} times",
                r.id
            ));
        }
        match &r.outcome {
            Err(e) if e.starts_with("CROSSED") => violations.push(format!("{}: {e}", r.id)),
            Ok(200..=299) => {}
            other => {
                // Only requests around the fault may fail, and after it only POSTs that were
                // written to the faulty upstream (never retried, by design).
                let near_fault = r.start <= fault + Duration::from_millis(25);
                if !(near_fault || r.post) {
                    violations.push(format!(
                        "{} ({}) started at {:?}, after the fault, and got {other:?}",
                        r.id,
                        if r.post { "POST" } else { "GET" },
                        r.start
                    ));
                }
            }
        }
    }
    match final_stats {
        None => violations.push("the observer never read the sidecar's counters".into()),
        Some(s) => {
            if s.downstream_cx_active() != 0 {
                violations.push(format!(
                    "{} sidecar connections still open",
                    s.downstream_cx_active()
                ));
            }
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
            let mut buf = Vec::with_capacity(4096);
            let mut chunk = [0u8; 4096];
            loop {
                // One complete request (head + content-length body).
                let (id, post, total) = loop {
                    let mut headers = [httparse::EMPTY_HEADER; 32];
                    let mut req = httparse::Request::new(&mut headers);
                    if let Ok(httparse::Status::Complete(head_len)) = req.parse(&buf) {
                        let find = |n: &str| {
                            req.headers
                                .iter()
                                .find(|h| h.name.eq_ignore_ascii_case(n))
                                .map(|h| String::from_utf8_lossy(h.value).into_owned())
                        };
                        let len: usize = find("content-length")
                            .and_then(|v| v.parse().ok())
                            .unwrap_or(0);
                        if buf.len() >= head_len + len {
                            break (
                                find("x-sim-id").unwrap_or_default(),
                                req.method == Some("POST"),
                                head_len + len,
                            );
                        }
                    }
                    match stream.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                };
                buf.drain(..total);
                world
                    .borrow_mut()
                    .received
                    .entry(id.clone())
                    .or_default()
                    .push((index, post));
                // Processing time (deterministic per id), so that faults can land between a
                // request's arrival and its answer.
                tokio::time::sleep(peers::work(id.as_bytes(), 120)).await;
                let resp = format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{id}",
                    id.len()
                );
                if stream.write_all(resp.as_bytes()).await.is_err() {
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
    let mut buf = Vec::with_capacity(4096);
    while elapsed() < TRAFFIC_UNTIL {
        tokio::time::sleep(Duration::from_millis(rng.below(60))).await;
        let post = rng.below(3) == 0;
        let id = format!("c{c}-{seq}");
        seq += 1;
        let body_len = if post {
            1 + rng.below(2000) as usize
        } else {
            0
        };
        let request = format!(
            "{} /item HTTP/1.1\r\nhost: sim\r\nx-sim-id: {id}\r\ncontent-length: {body_len}\r\n\r\n{}",
            if post { "POST" } else { "GET" },
            "p".repeat(body_len)
        );
        world.borrow_mut().started += 1;
        let start = elapsed();
        if conn.is_none() {
            conn = TcpStream::connect((SIDECAR, LISTEN_PORT)).await.ok();
            buf.clear();
        }
        let outcome = match conn.as_mut() {
            None => Err("connect failed".to_owned()),
            Some(s) => match tokio::time::timeout(
                CLIENT_DEADLINE,
                exchange(s, &mut buf, request.as_bytes(), &id),
            )
            .await
            {
                Ok(r) => r,
                Err(_) => Err("gave up at the deadline".to_owned()),
            },
        };
        let keep = matches!(&outcome, Ok((_, true)));
        let outcome = outcome.map(|(status, _)| status);
        if !keep {
            conn = None;
        }
        let end = elapsed();
        trace.record(end, &who, format_args!("{id} -> {outcome:?}"));
        world.borrow_mut().requests.push(Req {
            id,
            post,
            start,
            end,
            outcome,
        });
    }
    world.borrow_mut().clients_done += 1;
}

/// Sends one request and reads its response; `Ok((status, keep_alive))`.
async fn exchange(
    s: &mut TcpStream,
    buf: &mut Vec<u8>,
    request: &[u8],
    id: &str,
) -> Result<(u16, bool), String> {
    peers::http::exchange::<4096>(s, buf, request)
        .await
        .map_err(|e| e.to_string())?
        .answering(id)
}

/// An HTTP/2 client: batches of 1 to 4 concurrent streams on one h2c connection (a new one
/// after a connection error), each request with its `x-sim-id`.
async fn client_h2(c: usize, seed: u64, world: Rc<RefCell<World>>, trace: Trace) {
    let mut rng = Rng::from_seed(seed);
    let who = format!("client{c}");
    let mut seq = 0;
    let mut conn: Option<h2::client::SendRequest<bytes::Bytes>> = None;
    while elapsed() < TRAFFIC_UNTIL {
        tokio::time::sleep(Duration::from_millis(rng.below(60))).await;
        if conn.is_none() {
            conn = match TcpStream::connect((SIDECAR, LISTEN_PORT)).await {
                Ok(s) => match h2::client::handshake(s).await {
                    Ok((send, connection)) => {
                        tokio::task::spawn_local(async move {
                            let _ = connection.await;
                        });
                        Some(send)
                    }
                    Err(_) => None,
                },
                Err(_) => None,
            };
        }
        let mut batch = Vec::new();
        for _ in 0..1 + rng.below(H2_BATCH) {
            let post = rng.below(3) == 0;
            let id = format!("c{c}-{seq}");
            seq += 1;
            let body = if post {
                "p".repeat(1 + rng.below(2000) as usize)
            } else {
                String::new()
            };
            world.borrow_mut().started += 1;
            let start = elapsed();
            let send = conn.clone();
            let task_id = id.clone();
            let handle = tokio::task::spawn_local(async move {
                match tokio::time::timeout(CLIENT_DEADLINE, h2_exchange(send, &task_id, post, body))
                    .await
                {
                    Ok(r) => r,
                    Err(_) => Err("gave up at the deadline".to_owned()),
                }
            });
            batch.push((id, post, start, handle));
        }
        let mut broken = conn.is_none();
        for (id, post, start, handle) in batch {
            let outcome = handle
                .await
                .unwrap_or_else(|e| Err(format!("task failed: {e}")));
            if matches!(&outcome, Err(e) if !e.starts_with("CROSSED")) {
                broken = true;
            }
            let end = elapsed();
            trace.record(end, &who, format_args!("{id} -> {outcome:?}"));
            world.borrow_mut().requests.push(Req {
                id,
                post,
                start,
                end,
                outcome,
            });
        }
        if broken {
            conn = None;
        }
    }
    drop(conn);
    world.borrow_mut().clients_done += 1;
}

/// One HTTP/2 request; `Ok(status)`, or `Err("CROSSED …")` when a 200 carries another id.
async fn h2_exchange(
    send: Option<h2::client::SendRequest<bytes::Bytes>>,
    id: &str,
    post: bool,
    body: String,
) -> Result<u16, String> {
    let send = send.ok_or("connect failed")?;
    let mut send = send.ready().await.map_err(|e| e.to_string())?;
    let request = http::Request::builder()
        .method(if post { "POST" } else { "GET" })
        .uri("http://sim/item")
        .header("x-sim-id", id)
        // The simulated upstreams read content-length bodies only (as curl sends them).
        .header("content-length", body.len())
        .body(())
        .map_err(|e| e.to_string())?;
    let (response, mut stream) = send
        .send_request(request, body.is_empty())
        .map_err(|e| e.to_string())?;
    if !body.is_empty() {
        stream
            .send_data(bytes::Bytes::from(body), true)
            .map_err(|e| e.to_string())?;
    }
    let response = response.await.map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let mut recv = response.into_body();
    let mut got = Vec::new();
    while let Some(chunk) = recv.data().await {
        let chunk = chunk.map_err(|e| e.to_string())?;
        let _ = recv.flow_control().release_capacity(chunk.len());
        got.extend_from_slice(&chunk);
    }
    if status == 200 && got != id.as_bytes() {
        return Err(format!("CROSSED: got {}", String::from_utf8_lossy(&got)));
    }
    Ok(status)
}
