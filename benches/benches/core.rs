//! Criterion micro-benchmarks of `sluice-core`: balancer picks, config parsing, and one L4
//! session's whole lifecycle.
//!
//! ```text
//! cargo bench -p sluice-benches -- --warm-up-time 1 --measurement-time 2
//! cargo bench -p sluice-benches -- balancer/least_request   # one group or bench by filter
//! cargo bench -p sluice-benches -- balancer_hashed          # ring hash and Maglev with a hash
//! ```
//!
//! Every bench drives the core exactly as a runtime worker would, with nothing else around it:
//! no IO, no clock reads inside the measured loop, a seeded RNG.

use std::hint::black_box;
use std::time::Duration;

use sluice_core::Instant;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use sluice_core::cluster::{ClusterState, HostId};
use sluice_core::config::{ClusterConfig, Config, HostConfig, LbPolicy};
use sluice_core::rng::Rng;
use sluice_core::tcp_proxy::{Action, CloseReason, SessionConfig, Side, TcpSession};

const HOST_COUNTS: [usize; 3] = [3, 16, 128];

fn cluster(policy: LbPolicy, hosts: usize) -> ClusterState {
    let mut c = ClusterState::from_config(&ClusterConfig {
        name: "bench".into(),
        connect_timeout: Duration::from_secs(1),
        lb_policy: policy,
        hosts: (0..hosts)
            .map(|i| HostConfig {
                address: format!("10.0.{}.{}:8080", i / 250, i % 250 + 1)
                    .parse()
                    .expect("valid address"),
                // Uneven weights (1 to 5), so that the weighted policies have work to do.
                weight: (i % 5) as u32 + 1,
                priority: 0,
                transport_socket_match: None,
                health: Default::default(),
            })
            .collect(),
        ..ClusterConfig::default()
    });
    // Some load, so that least request compares something.
    for i in 0..hosts {
        for _ in 0..(i * 7) % 4 {
            c.begin(HostId(i as u32));
        }
    }
    c
}

fn balancer(c: &mut Criterion) {
    for (name, policy) in LbPolicy::CHOICES {
        let mut group = c.benchmark_group(format!("balancer/{name}"));
        group.throughput(Throughput::Elements(1));
        for hosts in HOST_COUNTS {
            group.bench_with_input(BenchmarkId::from_parameter(hosts), &hosts, |b, &hosts| {
                let mut cluster = cluster(policy, hosts);
                let mut rng = Rng::from_seed(0x5eed);
                b.iter(|| black_box(cluster.pick(&mut rng, black_box(&[]))));
            });
        }
        group.finish();
    }
}

/// The consistent-hash policies picking by a request hash (a fresh random one per pick, as
/// requests with different keys would), with nothing excluded and with the hash's own host
/// excluded (`retry/N`: both picks, the first and the retry that walks on to the next
/// candidate). `balancer/ring_hash` and `balancer/maglev` above are their picks without a hash
/// (random).
fn balancer_hashed(c: &mut Criterion) {
    for policy in [LbPolicy::RingHash, LbPolicy::Maglev] {
        let mut group = c.benchmark_group(format!("balancer_hashed/{}", policy.as_str()));
        group.throughput(Throughput::Elements(1));
        for hosts in HOST_COUNTS {
            group.bench_with_input(BenchmarkId::from_parameter(hosts), &hosts, |b, &hosts| {
                let mut cluster = cluster(policy, hosts);
                let mut rng = Rng::from_seed(0x5eed);
                b.iter(|| {
                    let hash = rng.next_u64();
                    black_box(cluster.pick_hashed(&mut rng, black_box(&[]), Some(hash)))
                });
            });
            group.bench_with_input(BenchmarkId::new("retry", hosts), &hosts, |b, &hosts| {
                let mut cluster = cluster(policy, hosts);
                let mut rng = Rng::from_seed(0x5eed);
                b.iter(|| {
                    let hash = Some(rng.next_u64());
                    let first = cluster.pick_hashed(&mut rng, &[], hash);
                    let tried = [first.expect("a host")];
                    black_box(cluster.pick_hashed(&mut rng, black_box(&tried), hash))
                });
            });
        }
        group.finish();
    }
}

/// A sidecar's config: an admin server, inbound and outbound listeners, an echo listener, and
/// 10 clusters of 5 hosts each with every policy.
fn realistic_config() -> String {
    let policies = [
        "round_robin",
        "weighted_round_robin",
        "random",
        "least_request",
    ];
    let mut y = String::from("admin:\n  address: 127.0.0.1:15000\n\nlisteners:\n");
    y.push_str(
        "  - name: inbound\n    address: 0.0.0.0:15006\n    tcp_proxy:\n      cluster: inbound_app\n      idle_timeout: 1h\n",
    );
    for (i, port) in [(1, 15001), (2, 15002), (3, 15003)] {
        y.push_str(&format!(
            "  - name: outbound_{i}\n    address: 127.0.0.1:{port}\n    tcp_proxy:\n      cluster: service_{i}\n      idle_timeout: 300s\n      max_connect_attempts: 3\n"
        ));
    }
    y.push_str("  - name: echo\n    address: 127.0.0.1:15009\n    echo: {}\n\nclusters:\n");
    y.push_str(
        "  - name: inbound_app\n    connect_timeout: 250ms\n    hosts:\n      - address: 127.0.0.1:8080\n",
    );
    for i in 1..=9 {
        y.push_str(&format!(
            "  - name: service_{i}\n    connect_timeout: {}ms\n    lb_policy: {}\n    hosts:\n",
            500 * i,
            policies[i % policies.len()]
        ));
        for h in 1..=5 {
            y.push_str(&format!(
                "      - {{ address: 10.{i}.0.{h}:9000, weight: {} }}\n",
                h * 10
            ));
        }
    }
    y.push_str("\ndrain_timeout: 45s\n");
    y
}

fn config(c: &mut Criterion) {
    let text = realistic_config();
    let parsed = Config::from_yaml(&text).expect("the bench config is valid");
    assert_eq!(parsed.listeners.len(), 5);
    assert_eq!(parsed.clusters.len(), 10);
    let mut group = c.benchmark_group("config");
    group.throughput(Throughput::Bytes(text.len() as u64));
    group.bench_function("from_yaml/5_listeners_10_clusters", |b| {
        b.iter(|| Config::from_yaml(black_box(&text)).expect("valid"));
    });
    group.finish();
}

/// One L4 session from accept to release: pick and connect, 4 reads each way, EOF from both
/// sides (two half-closes), close, release. Returns the close reason.
fn session_lifecycle(
    t0: Instant,
    config: SessionConfig,
    cluster: &mut ClusterState,
    rng: &mut Rng,
) -> Option<CloseReason> {
    let mut s = TcpSession::new(t0, config);
    let mut closed = None;
    let mut drain = |s: &mut TcpSession| {
        while let Some(a) = s.poll_action() {
            if let Action::Close(r) = a {
                closed = Some(r);
            }
            black_box(a);
        }
    };
    s.start(t0, cluster, rng);
    drain(&mut s);
    s.handle_connected(t0, cluster);
    for i in 1..=4u64 {
        let now = t0 + Duration::from_millis(i);
        s.handle_read(now, Side::Downstream, 16 * 1024);
        s.handle_read(now, Side::Upstream, 64 * 1024);
        drain(&mut s);
        black_box(s.poll_timeout());
    }
    let end = t0 + Duration::from_millis(5);
    s.handle_read(end, Side::Downstream, 0);
    drain(&mut s);
    s.handle_read(end, Side::Upstream, 0);
    drain(&mut s);
    s.release(cluster);
    closed
}

fn tcp_session(c: &mut Criterion) {
    let config = SessionConfig {
        connect_timeout: Duration::from_secs(1),
        idle_timeout: Some(Duration::from_secs(3600)),
        max_connect_attempts: 3,
    };
    let t0 = Instant::ORIGIN;
    let mut cluster = cluster(LbPolicy::RoundRobin, 3);
    let mut rng = Rng::from_seed(1);
    assert_eq!(
        session_lifecycle(t0, config, &mut cluster, &mut rng),
        Some(CloseReason::Completed)
    );
    let mut group = c.benchmark_group("tcp_session");
    group.throughput(Throughput::Elements(1));
    group.bench_function("lifecycle", |b| {
        b.iter(|| session_lifecycle(t0, config, &mut cluster, &mut rng));
    });
    group.finish();
}

fn short() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2))
}

criterion_group! {
    name = benches;
    config = short();
    targets = balancer, balancer_hashed, config, tcp_session
}
criterion_main!(benches);
