//! The xDS push benchmark (issue 13): how long an EDS push of many endpoints takes to reach
//! every worker, how much memory many clusters cost, and how much CPU a push costs — measured
//! on a real `sluice run` process fed by the in-repo ADS server (`sluice_xds::test_server`,
//! the one the xDS end-to-end tests serve), hosted here in-process on a loopback port.
//!
//! What is measured, and how:
//! - **EDS push → every worker**: the time from the server queueing the
//!   ClusterLoadAssignment response of version V (its log's `sent` stamp) to the ACK of V
//!   arriving (its log's `requests` stamp), both on the server's clock. The client ACKs a
//!   response only once the server loop's switch returned, and the switch returns only when
//!   every worker answered that it runs the new generation (`runtime/src/xds.rs`,
//!   `server::switch_to`): so the ACK's arrival bounds the time for every worker to use the new
//!   host set. One push more is cross-checked from outside: `/clusters?format=json` is polled
//!   until it lists the new host set.
//! - **Memory**: VmRSS (`/proc/PID/status`) of the process with the bootstrap alone (xDS
//!   connected, nothing served), then once N EDS clusters (each with a few endpoints, a route
//!   to each) are applied and ACKed; and after the cluster pushes, to see whether pushes grow it.
//! - **CPU**: utime + stime (`/proc/PID/stat`) of the process across the pushes, per push.
//! - **A small change in a big config**: with every cluster serving, pushes that change only
//!   one cluster's assignment (latency and CPU, as above): an update rebuilds the whole config
//!   and every worker's engine, so its cost follows the config's size, not the change's.
//!
//! Each scenario runs its own `sluice run --workers 2` process (the bootstrap is the only
//! file; listener, routes, clusters and endpoints come from xDS). The in-repo server speaks
//! state of the world (Sluice's default) and sends every type again on each new version: the
//! unchanged listener, routes and clusters of an EDS push are ACKed by the client without an
//! apply. Nothing needs to listen on the endpoints' addresses: no health checks, no traffic.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use sluice_xds::envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use sluice_xds::envoy_types::pb::envoy::config::route::v3::{
    Route, RouteAction, RouteConfiguration, RouteMatch, VirtualHost, route::Action,
    route_action::ClusterSpecifier, route_match::PathSpecifier,
};
use sluice_xds::envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_server::AggregatedDiscoveryServiceServer;
use sluice_xds::envoy_types::pb::google::protobuf::Any;
use sluice_xds::fixtures::{any, assignment, eds_cluster, http_listener, route_config};
use sluice_xds::test_server::{AdsLog, AdsService, Snapshot};
use sluice_xds::translate::ResourceType;

/// What to run.
#[derive(Clone, Debug)]
pub struct Options {
    /// The `sluice` binary.
    pub sluice: PathBuf,
    /// Workers of the `sluice run` process.
    pub workers: usize,
    /// Endpoints of the one EDS cluster of the push-latency scenario.
    pub endpoints: usize,
    /// Measured EDS pushes of that assignment.
    pub pushes: usize,
    /// EDS clusters of the memory scenario.
    pub clusters: usize,
    /// Endpoints of each of those clusters.
    pub cluster_endpoints: usize,
    /// Measured pushes of all those clusters (every assignment changed).
    pub cluster_pushes: usize,
    /// Where the bootstraps and the processes' logs go.
    pub work_dir: PathBuf,
    /// After each measured EDS push's ACK, check that `/clusters` lists that push's hosts
    /// (the smoke test's check that the ACK follows the switch; its CPU is left out of the
    /// per-push figure).
    pub verify_each: bool,
    /// The traffic scenario: seconds of HTTP requests measured without pushes, then as long
    /// with back-to-back EDS pushes of `endpoints` endpoints.
    pub traffic_secs: u64,
    /// Keep-alive client connections of the traffic scenario (each sends its next request
    /// when the previous answer is in).
    pub traffic_connections: usize,
}

impl Options {
    /// The sizes: 1000 endpoints pushed 20 times; 1000 clusters of 3 endpoints,
    /// pushed 5 times.
    #[must_use]
    pub fn full(sluice: PathBuf) -> Self {
        Self {
            sluice,
            workers: 2,
            endpoints: 1000,
            pushes: 20,
            clusters: 1000,
            cluster_endpoints: 3,
            cluster_pushes: 5,
            work_dir: std::env::temp_dir().join(format!("sluice-xds-load-{}", std::process::id())),
            verify_each: false,
            traffic_secs: 5,
            traffic_connections: 4,
        }
    }

    /// Tiny sizes, a few seconds: what the smoke test runs.
    #[must_use]
    pub fn smoke(sluice: PathBuf) -> Self {
        Self {
            endpoints: 20,
            pushes: 3,
            clusters: 10,
            cluster_endpoints: 2,
            cluster_pushes: 2,
            verify_each: true,
            traffic_secs: 1,
            ..Self::full(sluice)
        }
    }
}

/// The figures.
#[derive(Clone, Debug)]
pub struct Report {
    /// The options run.
    pub options: Options,
    /// Each measured EDS push: server sent → ACK received.
    pub eds_latency: Vec<Duration>,
    /// The cross-checked push: server sent → ACK received.
    pub check_ack: Duration,
    /// The cross-checked push: server sent → `/clusters` first listed the new host set
    /// (polled; includes the poll's own time).
    pub check_seen: Duration,
    /// Hosts `/clusters` listed for the EDS cluster at the end (its assignment's size).
    pub hosts_seen: usize,
    /// Measured pushes whose hosts `/clusters` listed as soon as their ACK arrived
    /// ([`Options::verify_each`]; 0 without).
    pub verified: usize,
    /// CPU (utime + stime) per measured EDS push.
    pub eds_cpu: Duration,
    /// RSS (KiB) of the push-latency process after its first config, and after its measured
    /// pushes.
    pub eds_rss_kib: (u64, u64),
    /// RSS (KiB) of the memory scenario's process with the bootstrap alone.
    pub rss_bootstrap_kib: u64,
    /// RSS (KiB) once every cluster is applied and ACKed.
    pub rss_clusters_kib: u64,
    /// RSS (KiB) after the measured cluster pushes.
    pub rss_after_pushes_kib: u64,
    /// Clusters `/clusters` listed once applied.
    pub clusters_seen: usize,
    /// Server sent → ACK received, for the first push of every cluster.
    pub clusters_first_ack: Duration,
    /// Each measured push of every cluster: server sent → ACK received.
    pub clusters_latency: Vec<Duration>,
    /// CPU (utime + stime) per measured push of every cluster.
    pub clusters_cpu: Duration,
    /// With every cluster serving, [`Options::pushes`] pushes changing only the first
    /// cluster's assignment: server sent → ACK.
    pub one_of_many_latency: Vec<Duration>,
    /// CPU (utime + stime) per such push.
    pub one_of_many_cpu: Duration,
    /// The traffic scenario without pushes.
    pub traffic_quiet: Traffic,
    /// The traffic scenario during back-to-back EDS pushes.
    pub traffic_pushing: Traffic,
    /// The control: the same number of pushes built and encoded in this process, at the same
    /// pace, none sent (what the pushes cost the machine outside Sluice).
    pub traffic_building: Traffic,
}

/// Requests through a listener during one phase of the traffic scenario.
#[derive(Clone, Debug, Default)]
pub struct Traffic {
    /// Each answered request's latency (write of the request → last byte of the answer).
    pub latency: Vec<Duration>,
    /// Requests that failed (an error, or an answer other than the backend's 200).
    pub errors: usize,
    /// EDS pushes ACKed during the phase.
    pub pushes: usize,
    /// The phase's length.
    pub elapsed: Duration,
}

impl Traffic {
    /// p50, p99, p99.9 and max latency.
    #[must_use]
    pub fn quantiles(&self) -> [Duration; 4] {
        [0.5, 0.99, 0.999, 1.0].map(|q| quantile(&self.latency, q))
    }
}

/// `q` (0..=1) of `xs`, nearest rank.
fn quantile(xs: &[Duration], q: f64) -> Duration {
    let mut v = xs.to_vec();
    v.sort();
    if v.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

impl Report {
    /// Median, p99 and max of the EDS push latencies.
    #[must_use]
    pub fn eds_quantiles(&self) -> (Duration, Duration, Duration) {
        (
            quantile(&self.eds_latency, 0.5),
            quantile(&self.eds_latency, 0.99),
            quantile(&self.eds_latency, 1.0),
        )
    }

    /// RSS bytes per cluster (RSS with every cluster less RSS with the bootstrap alone,
    /// divided by the clusters); negative growth reads as 0.
    #[must_use]
    pub fn bytes_per_cluster(&self) -> u64 {
        self.rss_clusters_kib.saturating_sub(self.rss_bootstrap_kib) * 1024
            / self.options.clusters.max(1) as u64
    }

    /// The raw figures as one JSON line (durations in ms, RSS in KiB).
    #[must_use]
    pub fn json(&self) -> serde_json::Value {
        let f = |d: Duration| d.as_secs_f64() * 1e3;
        let traffic: Vec<serde_json::Value> = [
            &self.traffic_quiet,
            &self.traffic_pushing,
            &self.traffic_building,
        ]
        .iter()
        .map(|t| {
            serde_json::json!({
                "requests": t.latency.len(),
                "errors": t.errors,
                "pushes": t.pushes,
                "elapsed_ms": f(t.elapsed),
                "p50_p99_p999_max_ms": t.quantiles().map(f),
            })
        })
        .collect();
        serde_json::json!({
            "workers": self.options.workers,
            "endpoints": self.options.endpoints,
            "eds_latency_ms": self.eds_latency.iter().map(|d| f(*d)).collect::<Vec<_>>(),
            "check_ack_ms": f(self.check_ack),
            "check_seen_ms": f(self.check_seen),
            "eds_cpu_ms": f(self.eds_cpu),
            "eds_rss_kib": [self.eds_rss_kib.0, self.eds_rss_kib.1],
            "clusters": self.options.clusters,
            "cluster_endpoints": self.options.cluster_endpoints,
            "rss_bootstrap_kib": self.rss_bootstrap_kib,
            "rss_clusters_kib": self.rss_clusters_kib,
            "rss_after_pushes_kib": self.rss_after_pushes_kib,
            "clusters_first_ack_ms": f(self.clusters_first_ack),
            "clusters_latency_ms": self.clusters_latency.iter().map(|d| f(*d)).collect::<Vec<_>>(),
            "clusters_cpu_ms": f(self.clusters_cpu),
            "one_of_many_latency_ms": self.one_of_many_latency.iter().map(|d| f(*d)).collect::<Vec<_>>(),
            "one_of_many_cpu_ms": f(self.one_of_many_cpu),
            "traffic": traffic,
        })
    }

    /// The figures as a markdown table.
    #[must_use]
    pub fn table(&self) -> String {
        let o = &self.options;
        let (p50, p99, max) = self.eds_quantiles();
        let mut t = String::new();
        let _ = writeln!(
            t,
            "sluice run --workers {}; {} EDS pushes of {} endpoints; {} clusters of {} \
             endpoints, pushed {} times\n",
            o.workers, o.pushes, o.endpoints, o.clusters, o.cluster_endpoints, o.cluster_pushes
        );
        let _ = writeln!(t, "| figure | value |\n|---|---:|");
        let mut row = |k: String, v: String| {
            let _ = writeln!(t, "| {k} | {v} |");
        };
        row(
            format!(
                "EDS push of {} endpoints, sent → ACK (every worker applied it): p50 / p99 / max",
                o.endpoints
            ),
            format!("{} / {} / {}", ms(p50), ms(p99), ms(max)),
        );
        row(
            "cross-check push: sent → ACK / sent → `/clusters` lists the new hosts".into(),
            format!("{} / {}", ms(self.check_ack), ms(self.check_seen)),
        );
        row(
            format!(
                "CPU per EDS push of {} endpoints (utime+stime)",
                o.endpoints
            ),
            ms(self.eds_cpu),
        );
        row(
            format!(
                "RSS, one cluster of {} endpoints: first config → after the pushes",
                o.endpoints
            ),
            format!("{} → {}", mib(self.eds_rss_kib.0), mib(self.eds_rss_kib.1)),
        );
        row(
            "RSS, bootstrap alone (xDS connected)".into(),
            mib(self.rss_bootstrap_kib),
        );
        row(
            format!("RSS, {} EDS clusters applied (a route to each)", o.clusters),
            mib(self.rss_clusters_kib),
        );
        row(
            "RSS per cluster".into(),
            format!("{} B", self.bytes_per_cluster()),
        );
        row(
            format!(
                "RSS after {} more pushes of every cluster",
                o.cluster_pushes
            ),
            mib(self.rss_after_pushes_kib),
        );
        row(
            format!("first push of {} clusters, sent → ACK", o.clusters),
            ms(self.clusters_first_ack),
        );
        row(
            format!(
                "push of {} clusters (every assignment changed), sent → ACK: p50 / max",
                o.clusters
            ),
            format!(
                "{} / {}",
                ms(quantile(&self.clusters_latency, 0.5)),
                ms(quantile(&self.clusters_latency, 1.0))
            ),
        );
        row(
            format!("CPU per push of {} clusters (utime+stime)", o.clusters),
            ms(self.clusters_cpu),
        );
        row(
            format!(
                "EDS push changing one of the {} clusters ({} endpoints), sent → ACK: p50 / max",
                o.clusters, o.cluster_endpoints
            ),
            format!(
                "{} / {}",
                ms(quantile(&self.one_of_many_latency, 0.5)),
                ms(quantile(&self.one_of_many_latency, 1.0))
            ),
        );
        row(
            format!(
                "CPU per EDS push changing one of the {} clusters",
                o.clusters
            ),
            ms(self.one_of_many_cpu),
        );
        for (phase, tr) in [
            ("no push", &self.traffic_quiet),
            ("back-to-back EDS pushes", &self.traffic_pushing),
            (
                "as many pushes built in the bench process, none sent",
                &self.traffic_building,
            ),
        ] {
            let [p50, p99, p999, max] = tr.quantiles();
            row(
                format!(
                    "HTTP requests through a static listener, {} keep-alive connections, {phase} \
                     ({} pushes of {} endpoints): requests / errors; p50 / p99 / p99.9 / max",
                    o.traffic_connections, tr.pushes, o.endpoints
                ),
                format!(
                    "{} / {}; {} / {} / {} / {}",
                    tr.latency.len(),
                    tr.errors,
                    ms(p50),
                    ms(p99),
                    ms(p999),
                    ms(max)
                ),
            );
        }
        t
    }
}

// ---- the management server ------------------------------------------------------------------

/// The server's clock: time since the first reading.
fn clock() -> Duration {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed()
}

/// The in-repo ADS service on 127.0.0.1 (an ephemeral port), on a thread and runtime of its
/// own (as `tests/support/ads.rs` hosts it).
struct Server {
    addr: SocketAddr,
    snapshot: tokio::sync::watch::Sender<Snapshot>,
    log: Arc<Mutex<AdsLog>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    fn start() -> Result<Server, String> {
        let (snapshot, snapshot_rx) = tokio::sync::watch::channel(Snapshot::default());
        let log = Arc::new(Mutex::new(AdsLog::default()));
        let service = AdsService::new(snapshot_rx, log.clone(), Duration::ZERO, clock);
        let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("ADS server: {e}"))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| format!("ADS server: {e}"))?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("ads-server".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a runtime");
                rt.block_on(async move {
                    let listener =
                        tokio::net::TcpListener::from_std(listener).expect("a tokio listener");
                    let service = AggregatedDiscoveryServiceServer::new(service)
                        .max_decoding_message_size(usize::MAX)
                        .max_encoding_message_size(usize::MAX);
                    let server = async move {
                        loop {
                            let Ok((stream, _)) = listener.accept().await else {
                                continue;
                            };
                            let _ = stream.set_nodelay(true);
                            let service =
                                hyper_util::service::TowerToHyperService::new(service.clone());
                            tokio::spawn(async move {
                                let _ = hyper_util::server::conn::auto::Builder::new(
                                    hyper_util::rt::TokioExecutor::new(),
                                )
                                .http2_only()
                                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                                .await;
                            });
                        }
                    };
                    tokio::select! {
                        () = server => {}
                        _ = stopped => {}
                    }
                });
                rt.shutdown_background();
            })
            .map_err(|e| e.to_string())?;
        Ok(Server {
            addr,
            snapshot,
            log,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// Serves `resources` as the next version; returns it.
    fn push(&self, resources: BTreeMap<String, Vec<Any>>) -> u64 {
        let mut version = 0;
        self.snapshot.send_modify(|s| {
            s.version += 1;
            s.resources = resources;
            version = s.version;
        });
        version
    }

    /// Waits until every type of `version` was sent and ACKed; returns, for `kind`, sent → ACK.
    /// A NACK of that version is an error.
    fn wait_acked(
        &self,
        version: u64,
        kind: ResourceType,
        sluice: &mut Sluice,
    ) -> Result<Duration, String> {
        let deadline = Instant::now() + Duration::from_secs(120);
        let v = version.to_string();
        loop {
            {
                let log = self
                    .log
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                // When the response of this version of a type was sent, and ACKed.
                let sent = |t: ResourceType| {
                    log.sent
                        .iter()
                        .find(|(_, url, ver)| url == t.type_url() && *ver == version)
                        .map(|(at, _, _)| *at)
                };
                let acked = |t: ResourceType| {
                    log.requests.iter().find_map(|(at, r)| {
                        (r.type_url == t.type_url()
                            && r.version_info == v
                            && !r.response_nonce.is_empty()
                            && r.error_detail.is_none())
                        .then_some(*at)
                    })
                };
                if let Some((_, r)) = log.requests.iter().find(|(_, r)| r.error_detail.is_some()) {
                    return Err(format!(
                        "sluice NACKed {} (version {}): {}",
                        r.type_url,
                        r.version_info,
                        r.error_detail.as_ref().map_or("", |e| e.message.as_str())
                    ));
                }
                // Secrets are asked for only when a resource names one (none here).
                if ResourceType::ALL
                    .iter()
                    .filter(|t| **t != ResourceType::Secret)
                    .all(|t| acked(*t).is_some())
                {
                    let (Some(s), Some(a)) = (sent(kind), acked(kind)) else {
                        return Err(format!(
                            "version {version}: no {} response logged",
                            kind.noun()
                        ));
                    };
                    return Ok(a.saturating_sub(s));
                }
            }
            sluice.check_alive()?;
            if Instant::now() > deadline {
                return Err(format!(
                    "version {version} not ACKed for every type within 120 s\n{}",
                    sluice.log_tail()
                ));
            }
            std::thread::sleep(Duration::from_micros(500));
        }
    }

    /// When the response of `kind` at `version` was sent, once it was.
    fn sent_at(&self, version: u64, kind: ResourceType) -> Option<Duration> {
        let log = self
            .log
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        log.sent
            .iter()
            .find(|(_, url, ver)| url == kind.type_url() && *ver == version)
            .map(|(at, _, _)| *at)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

// ---- the sluice process ---------------------------------------------------------------------

/// A `sluice run` process, killed when dropped.
struct Sluice {
    child: Child,
    log: PathBuf,
    admin: SocketAddr,
}

impl Sluice {
    /// Starts `sluice run` with a bootstrap whose `xds:` cluster is `ads`, and waits for its
    /// admin API.
    fn start(o: &Options, name: &str, ads: SocketAddr) -> Result<Sluice, String> {
        Self::start_with(o, name, ads, "listeners: []\nclusters:\n")
    }

    /// As [`Sluice::start`], the bootstrap's static listeners and clusters given: `statics`
    /// ends in `clusters:` and its clusters' entries; the xDS cluster's follows.
    fn start_with(
        o: &Options,
        name: &str,
        ads: SocketAddr,
        statics: &str,
    ) -> Result<Sluice, String> {
        let admin = free_addr()?;
        let dir = o.work_dir.join(name);
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let config = dir.join("bootstrap.yaml");
        std::fs::write(
            &config,
            format!(
                "admin: {{ address: \"{admin}\" }}\nnode: {{ id: xds-load, cluster: bench }}\n\
                 xds: {{ cluster: xds_server }}\n{statics}  - name: xds_server\n    \
                 protocol: http2\n    hosts: [ {{ address: \"{ads}\" }} ]\n"
            ),
        )
        .map_err(|e| e.to_string())?;
        let log = dir.join("sluice.log");
        let out = std::fs::File::create(&log).map_err(|e| e.to_string())?;
        let err = out.try_clone().map_err(|e| e.to_string())?;
        let child = Command::new(&o.sluice)
            .arg("run")
            .arg("-c")
            .arg(&config)
            .args(["--workers", &o.workers.to_string(), "--log-level", "warn"])
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("{}: {e}", o.sluice.display()))?;
        let mut s = Sluice { child, log, admin };
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect_timeout(&admin, Duration::from_millis(200)).is_err() {
            s.check_alive()?;
            if Instant::now() > deadline {
                return Err(format!(
                    "sluice: no admin API on {admin} after 20 s\n{}",
                    s.log_tail()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(s)
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn check_alive(&mut self) -> Result<(), String> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => Err(format!("sluice exited ({status})\n{}", self.log_tail())),
            Err(e) => Err(e.to_string()),
        }
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let from = lines.len().saturating_sub(30);
        format!(
            "--- {} (tail) ---\n{}",
            self.log.display(),
            lines[from..].join("\n")
        )
    }

    /// VmRSS in KiB.
    fn rss_kib(&self) -> Result<u64, String> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .map_err(|e| e.to_string())?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .ok_or_else(|| "no VmRSS in /proc/PID/status".to_owned())
    }

    /// utime + stime.
    fn cpu(&self) -> Result<Duration, String> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid()))
            .map_err(|e| e.to_string())?;
        // Fields after the command (which may hold spaces), from field 3 (state) on.
        let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // utime and stime are fields 14 and 15: indexes 11 and 12 from field 3.
        let ticks: u64 = fields
            .get(11..13)
            .ok_or("short /proc/PID/stat")?
            .iter()
            .map(|f| f.parse::<u64>().unwrap_or(0))
            .sum();
        // SAFETY: sysconf only reads a system constant.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        let hz = u64::try_from(hz).ok().filter(|h| *h > 0).unwrap_or(100);
        Ok(Duration::from_nanos(ticks * 1_000_000_000 / hz))
    }

    /// `GET /clusters?format=json`: each cluster's name and its host addresses.
    fn clusters(&self) -> Result<BTreeMap<String, Vec<String>>, String> {
        let body = http_get(self.admin, "/clusters?format=json")?;
        let v: serde_json::Value =
            serde_json::from_str(&body).map_err(|e| format!("/clusters: {e}"))?;
        let mut out = BTreeMap::new();
        for c in v["clusters"].as_array().ok_or("/clusters: no `clusters`")? {
            let hosts = c["hosts"]
                .as_array()
                .map(|hs| {
                    hs.iter()
                        .filter_map(|h| h["address"].as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default();
            out.insert(c["name"].as_str().unwrap_or_default().to_owned(), hosts);
        }
        Ok(out)
    }
}

impl Drop for Sluice {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A free loopback port (bound, then released).
fn free_addr() -> Result<SocketAddr, String> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| format!("a free port: {e}"))
}

/// `GET path` with `connection: close`: the body of a 200.
fn http_get(to: SocketAddr, path: &str) -> Result<String, String> {
    let mut s = TcpStream::connect(to).map_err(|e| format!("GET {path}: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nhost: admin\r\nconnection: close\r\n\r\n").as_bytes(),
    )
    .map_err(|e| format!("GET {path}: {e}"))?;
    let mut out = Vec::new();
    s.read_to_end(&mut out)
        .map_err(|e| format!("GET {path}: {e}"))?;
    let text = String::from_utf8_lossy(&out);
    let (head, body) = text.split_once("\r\n\r\n").ok_or("GET: no response head")?;
    if !head.starts_with("HTTP/1.1 200") {
        return Err(format!("GET {path}: {}", head.lines().next().unwrap_or("")));
    }
    // Chunked bodies: join the chunks.
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        let mut joined = String::new();
        let mut rest = body;
        while let Some((size, after)) = rest.split_once("\r\n") {
            let n = usize::from_str_radix(size.trim(), 16).map_err(|e| e.to_string())?;
            if n == 0 {
                break;
            }
            joined.push_str(after.get(..n).ok_or("a short chunk")?);
            rest = after.get(n + 2..).unwrap_or("");
        }
        return Ok(joined);
    }
    Ok(body.to_owned())
}

// ---- the resources --------------------------------------------------------------------------

/// `n` loopback hosts of push `k`: 127.1.x.y, port 20000, except one in ten (a different tenth
/// at each push) on port 20001 + k: each push moves a tenth of the endpoints (and the tenth the
/// previous push moved comes back).
fn hosts(n: usize, k: usize) -> Vec<(String, u32)> {
    (0..n)
        .map(|j| {
            let port = if j % 10 == k % 10 {
                20_001 + k as u32
            } else {
                20_000
            };
            (format!("127.1.{}.{}", j / 250, j % 250 + 1), port)
        })
        .collect()
}

fn load_assignment(cluster: &str, hosts: &[(String, u32)]) -> ClusterLoadAssignment {
    let hs: Vec<(&str, u32, i32)> = hosts.iter().map(|(ip, p)| (ip.as_str(), *p, 0)).collect();
    assignment(cluster, &hs)
}

fn by_type(
    clusters: Vec<Any>,
    endpoints: Vec<Any>,
    listener: Any,
    routes: Any,
) -> BTreeMap<String, Vec<Any>> {
    BTreeMap::from([
        (ResourceType::Cluster.type_url().to_owned(), clusters),
        (ResourceType::Endpoints.type_url().to_owned(), endpoints),
        (ResourceType::Listener.type_url().to_owned(), vec![listener]),
        (ResourceType::Route.type_url().to_owned(), vec![routes]),
    ])
}

/// One EDS cluster `bench` with `hosts`, and a listener on `listen` routing to it.
fn one_cluster(listen: SocketAddr, hosts: &[(String, u32)]) -> BTreeMap<String, Vec<Any>> {
    by_type(
        vec![any(&eds_cluster("bench"))],
        vec![any(&load_assignment("bench", hosts))],
        any(&http_listener(
            "in",
            "127.0.0.1",
            u32::from(listen.port()),
            "routes",
        )),
        any(&route_config("routes", "bench")),
    )
}

/// The name of cluster `i` of the many-clusters scenario.
#[must_use]
pub fn cluster_name(i: usize) -> String {
    format!("c{i:04}")
}

/// A route configuration with one virtual host (`*`) sending `/NAME/` to each cluster.
#[must_use]
pub fn routes_to(name: &str, clusters: &[String]) -> RouteConfiguration {
    RouteConfiguration {
        name: name.to_owned(),
        virtual_hosts: vec![VirtualHost {
            name: "all".to_owned(),
            domains: vec!["*".to_owned()],
            routes: clusters
                .iter()
                .map(|c| Route {
                    r#match: Some(RouteMatch {
                        path_specifier: Some(PathSpecifier::Prefix(format!("/{c}/"))),
                        ..Default::default()
                    }),
                    action: Some(Action::Route(RouteAction {
                        cluster_specifier: Some(ClusterSpecifier::Cluster(c.clone())),
                        ..Default::default()
                    })),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// `n` EDS clusters of `m` endpoints each (cluster i's on 127.2.x.y, ports from 30000 + m·k:
/// push `k` changes every assignment; the first cluster's from 30000 + m·`k_first`), a route to
/// each, a listener on `listen`.
fn many_clusters(
    listen: SocketAddr,
    n: usize,
    m: usize,
    k: usize,
    k_first: usize,
) -> BTreeMap<String, Vec<Any>> {
    let names: Vec<String> = (0..n).map(cluster_name).collect();
    let clusters = names.iter().map(|c| any(&eds_cluster(c))).collect();
    let endpoints = names
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let ip = format!("127.2.{}.{}", i / 250, i % 250 + 1);
            let k = if i == 0 { k_first } else { k };
            let hs: Vec<(String, u32)> = (0..m)
                .map(|e| (ip.clone(), 30_000 + (m * k + e) as u32))
                .collect();
            any(&load_assignment(c, &hs))
        })
        .collect();
    by_type(
        clusters,
        endpoints,
        any(&http_listener(
            "in",
            "127.0.0.1",
            u32::from(listen.port()),
            "routes",
        )),
        any(&routes_to("routes", &names)),
    )
}

// ---- the scenarios --------------------------------------------------------------------------

/// Waits for the process to settle (RSS read after a quiet moment).
fn settle() {
    std::thread::sleep(Duration::from_millis(500));
}

/// Runs both scenarios.
pub fn run(o: &Options) -> Result<Report, String> {
    std::fs::create_dir_all(&o.work_dir).map_err(|e| format!("{}: {e}", o.work_dir.display()))?;
    let eds = eds_scenario(o)?;
    let many = clusters_scenario(o)?;
    let (traffic_quiet, traffic_pushing, traffic_building) = traffic_scenario(o)?;
    Ok(Report {
        options: o.clone(),
        eds_latency: eds.latency,
        check_ack: eds.check_ack,
        check_seen: eds.check_seen,
        hosts_seen: eds.hosts_seen,
        verified: eds.verified,
        eds_cpu: eds.cpu,
        eds_rss_kib: eds.rss,
        rss_bootstrap_kib: many.rss_bootstrap,
        rss_clusters_kib: many.rss_clusters,
        rss_after_pushes_kib: many.rss_after,
        clusters_seen: many.seen,
        clusters_first_ack: many.first_ack,
        clusters_latency: many.latency,
        clusters_cpu: many.cpu,
        one_of_many_latency: many.one_latency,
        one_of_many_cpu: many.one_cpu,
        traffic_quiet,
        traffic_pushing,
        traffic_building,
    })
}

struct EdsFigures {
    latency: Vec<Duration>,
    check_ack: Duration,
    check_seen: Duration,
    hosts_seen: usize,
    verified: usize,
    cpu: Duration,
    rss: (u64, u64),
}

/// One EDS cluster of `o.endpoints` endpoints: the first config, then `o.pushes` measured
/// pushes of a changed assignment, then one cross-checked push.
fn eds_scenario(o: &Options) -> Result<EdsFigures, String> {
    let server = Server::start()?;
    let mut sluice = Sluice::start(o, "eds", server.addr)?;
    let listen = free_addr()?;
    let v = server.push(one_cluster(listen, &hosts(o.endpoints, 0)));
    server.wait_acked(v, ResourceType::Endpoints, &mut sluice)?;
    settle();
    let rss_first = sluice.rss_kib()?;
    // The host set of push `k`, and the one `/clusters` lists.
    let expect = |k: usize| -> Vec<String> {
        let mut v: Vec<String> = hosts(o.endpoints, k)
            .into_iter()
            .map(|(ip, p)| format!("{ip}:{p}"))
            .collect();
        v.sort();
        v
    };
    let listed = |sluice: &Sluice| -> Result<Vec<String>, String> {
        let mut hs = sluice.clusters()?.remove("bench").unwrap_or_default();
        hs.sort();
        Ok(hs)
    };
    let cpu_before = sluice.cpu()?;
    let mut checks_cpu = Duration::ZERO;
    let mut verified = 0;
    let mut latency = Vec::with_capacity(o.pushes);
    for k in 1..=o.pushes {
        let v = server.push(one_cluster(listen, &hosts(o.endpoints, k)));
        latency.push(server.wait_acked(v, ResourceType::Endpoints, &mut sluice)?);
        if o.verify_each {
            let before = sluice.cpu()?;
            if listed(&sluice)? != expect(k) {
                return Err(format!(
                    "push {k} (version {v}) was ACKed, but /clusters does not list its hosts"
                ));
            }
            verified += 1;
            checks_cpu += sluice.cpu()?.saturating_sub(before);
        }
    }
    let cpu = (sluice.cpu()? - cpu_before).saturating_sub(checks_cpu) / o.pushes.max(1) as u32;
    settle();
    let rss_after = sluice.rss_kib()?;
    // The host set serving is the last push's.
    if listed(&sluice)? != expect(o.pushes) {
        return Err("after the pushes, /clusters does not list the last push's hosts".into());
    }
    // The cross-check: one more push, /clusters polled until it lists the new set.
    let k = o.pushes + 1;
    let want = expect(k);
    let v = server.push(one_cluster(listen, &hosts(o.endpoints, k)));
    let deadline = Instant::now() + Duration::from_secs(60);
    let seen_at = loop {
        if listed(&sluice)? == want {
            break clock();
        }
        sluice.check_alive()?;
        if Instant::now() > deadline {
            return Err(format!(
                "the cross-checked push's hosts never showed in /clusters\n{}",
                sluice.log_tail()
            ));
        }
    };
    let check_ack = server.wait_acked(v, ResourceType::Endpoints, &mut sluice)?;
    let sent = server
        .sent_at(v, ResourceType::Endpoints)
        .ok_or("the cross-checked push was not logged")?;
    Ok(EdsFigures {
        latency,
        check_ack,
        check_seen: seen_at.saturating_sub(sent),
        hosts_seen: listed(&sluice)?.len(),
        verified,
        cpu,
        rss: (rss_first, rss_after),
    })
}

struct ClusterFigures {
    rss_bootstrap: u64,
    rss_clusters: u64,
    rss_after: u64,
    seen: usize,
    first_ack: Duration,
    latency: Vec<Duration>,
    cpu: Duration,
    one_latency: Vec<Duration>,
    one_cpu: Duration,
}

/// `o.clusters` EDS clusters: RSS with the bootstrap alone, then with every cluster applied;
/// then `o.cluster_pushes` measured pushes changing every assignment.
fn clusters_scenario(o: &Options) -> Result<ClusterFigures, String> {
    let server = Server::start()?;
    let mut sluice = Sluice::start(o, "clusters", server.addr)?;
    // The bootstrap alone: the client connected and ACKed the empty version 0 of CDS and LDS.
    let deadline = Instant::now() + Duration::from_secs(20);
    while {
        let log = server
            .log
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        !ResourceType::ALL
            .iter()
            .filter(|t| t.is_full_state())
            .all(|t| {
                log.requests
                    .iter()
                    .any(|(_, r)| r.type_url == t.type_url() && !r.response_nonce.is_empty())
            })
    } {
        sluice.check_alive()?;
        if Instant::now() > deadline {
            return Err(format!(
                "the empty first response was not ACKed\n{}",
                sluice.log_tail()
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    settle();
    let rss_bootstrap = sluice.rss_kib()?;
    let listen = free_addr()?;
    let v = server.push(many_clusters(listen, o.clusters, o.cluster_endpoints, 0, 0));
    let first_ack = server.wait_acked(v, ResourceType::Endpoints, &mut sluice)?;
    settle();
    let rss_clusters = sluice.rss_kib()?;
    let listed = sluice.clusters()?;
    let seen = (0..o.clusters)
        .filter(|i| {
            listed
                .get(&cluster_name(*i))
                .is_some_and(|h| h.len() == o.cluster_endpoints)
        })
        .count();
    if seen != o.clusters {
        return Err(format!(
            "/clusters lists {seen} of the {} clusters with their {} endpoints",
            o.clusters, o.cluster_endpoints
        ));
    }
    let cpu_before = sluice.cpu()?;
    let mut latency = Vec::with_capacity(o.cluster_pushes);
    for k in 1..=o.cluster_pushes {
        let v = server.push(many_clusters(listen, o.clusters, o.cluster_endpoints, k, k));
        latency.push(server.wait_acked(v, ResourceType::Endpoints, &mut sluice)?);
    }
    let cpu = (sluice.cpu()? - cpu_before) / o.cluster_pushes.max(1) as u32;
    settle();
    let rss_after = sluice.rss_kib()?;
    // Small pushes into the big config: only the first cluster's assignment changes.
    let cpu_before = sluice.cpu()?;
    let mut one_latency = Vec::with_capacity(o.pushes);
    let last = o.cluster_pushes;
    for j in 1..=o.pushes {
        let v = server.push(many_clusters(
            listen,
            o.clusters,
            o.cluster_endpoints,
            last,
            last + j,
        ));
        one_latency.push(server.wait_acked(v, ResourceType::Endpoints, &mut sluice)?);
    }
    let one_cpu = (sluice.cpu()? - cpu_before) / o.pushes.max(1) as u32;
    // The assignment serving is the last push's (the first cluster's checked).
    let ports: Vec<String> = (0..o.cluster_endpoints)
        .map(|e| {
            format!(
                "127.2.0.1:{}",
                30_000 + o.cluster_endpoints * (last + o.pushes) + e
            )
        })
        .collect();
    let mut first = sluice
        .clusters()?
        .remove(&cluster_name(0))
        .unwrap_or_default();
    first.sort();
    if first != ports {
        return Err(format!(
            "after the cluster pushes, /clusters lists {first:?} for {}, not {ports:?}",
            cluster_name(0)
        ));
    }
    Ok(ClusterFigures {
        rss_bootstrap,
        rss_clusters,
        rss_after,
        seen,
        first_ack,
        latency,
        cpu,
        one_latency,
        one_cpu,
    })
}

/// Does a push stall the data path? A static HTTP listener and cluster in the bootstrap, to a
/// backend in this process, carry requests from `o.traffic_connections` keep-alive
/// connections for `o.traffic_secs`, first with no push, then while the server pushes a
/// changed `o.endpoints`-endpoint assignment of an xDS cluster as fast as each is ACKed (each
/// ACK follows every worker's switch), then — the control — while this process builds and
/// encodes as many pushes at the same pace without sending them. The traffic's path is
/// untouched by the pushes, but everything shares the machine's cores: the bench process's
/// clients, backend and server, and Sluice's main thread and workers. What the push phase
/// costs the traffic beyond the control is what Sluice's handling of the pushes (its xDS and
/// main threads and the workers' switches) costs it — on a machine with cores to spare, more
/// of it would be the workers' alone.
fn traffic_scenario(o: &Options) -> Result<(Traffic, Traffic, Traffic), String> {
    let backend = Backend::start()?;
    let server = Server::start()?;
    let front = free_addr()?;
    let statics = format!(
        "listeners:\n  - name: live\n    address: \"{front}\"\n    http:\n      \
         virtual_hosts: [ {{ name: all, domains: [\"*\"], routes: [ {{ match: {{ prefix: / }}, \
         route: {{ cluster: live }} }} ] }} ]\nclusters:\n  - name: live\n    \
         hosts: [ {{ address: \"{}\" }} ]\n",
        backend.addr
    );
    let mut sluice = Sluice::start_with(o, "traffic", server.addr, &statics)?;
    let listen = free_addr()?;
    let v = server.push(one_cluster(listen, &hosts(o.endpoints, 0)));
    server.wait_acked(v, ResourceType::Endpoints, &mut sluice)?;
    // Warm-up: every connection answered.
    run_traffic(
        front,
        o.traffic_connections,
        Duration::from_millis(300),
        || Ok(0),
    )?;
    let phase = Duration::from_secs(o.traffic_secs);
    let quiet = run_traffic(front, o.traffic_connections, phase, || Ok(0))?;
    let mut k = 0;
    let pushing = run_traffic(front, o.traffic_connections, phase, || {
        k += 1;
        let v = server.push(one_cluster(listen, &hosts(o.endpoints, k)));
        server.wait_acked(v, ResourceType::Endpoints, &mut sluice)?;
        Ok(1)
    })?;
    // The control: the same pushes built, at the pushing phase's pace.
    let pace = phase / u32::try_from(pushing.pushes.max(1)).unwrap_or(u32::MAX);
    let start = Instant::now();
    let mut built = 0;
    let building = run_traffic(front, o.traffic_connections, phase, || {
        if built >= pushing.pushes {
            return Ok(0);
        }
        k += 1;
        let resources = one_cluster(listen, &hosts(o.endpoints, k));
        std::hint::black_box(&resources);
        built += 1;
        if let Some(wait) =
            (pace * u32::try_from(built).unwrap_or(u32::MAX)).checked_sub(start.elapsed())
        {
            std::thread::sleep(wait);
        }
        Ok(1)
    })?;
    sluice.check_alive()?;
    Ok((quiet, pushing, building))
}

/// Requests from `connections` keep-alive connections to `front` for `length`, while the
/// calling thread runs `between` over and over (a push and its ACK; it returns how many
/// pushes it made; with none, it sleeps).
fn run_traffic(
    front: SocketAddr,
    connections: usize,
    length: Duration,
    mut between: impl FnMut() -> Result<usize, String>,
) -> Result<Traffic, String> {
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..connections)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || client_loop(front, &stop))
        })
        .collect();
    let start = Instant::now();
    let mut pushes = 0;
    let mut failed = None;
    while start.elapsed() < length {
        match between() {
            Ok(0) => std::thread::sleep(Duration::from_millis(20)),
            Ok(n) => pushes += n,
            Err(e) => {
                failed = Some(e);
                break;
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    let elapsed = start.elapsed();
    let mut out = Traffic {
        pushes,
        elapsed,
        ..Traffic::default()
    };
    for c in clients {
        let (latency, errors) = c.join().map_err(|_| "a client thread panicked")?;
        out.latency.extend(latency);
        out.errors += errors;
    }
    if let Some(e) = failed {
        return Err(e);
    }
    out.latency.sort();
    Ok(out)
}

/// What the backend answers to every request.
const BACKEND_ANSWER: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";

/// One keep-alive connection's requests until `stop`: each latency, and the failures (a
/// failed request opens a new connection).
fn client_loop(front: SocketAddr, stop: &AtomicBool) -> (Vec<Duration>, usize) {
    let mut latency = Vec::new();
    let mut errors = 0;
    let mut conn: Option<TcpStream> = None;
    let mut buf = [0u8; 4096];
    while !stop.load(Ordering::Relaxed) {
        let s = match &mut conn {
            Some(s) => s,
            None => match TcpStream::connect(front) {
                Ok(s) => {
                    let _ = s.set_nodelay(true);
                    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
                    conn.insert(s)
                }
                Err(_) => {
                    errors += 1;
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                }
            },
        };
        let t0 = Instant::now();
        let ok = s.write_all(b"GET / HTTP/1.1\r\nhost: live\r\n\r\n").is_ok()
            && read_answer(s, &mut buf);
        if ok {
            latency.push(t0.elapsed());
        } else {
            errors += 1;
            conn = None;
        }
    }
    (latency, errors)
}

/// Reads one answer of the backend's through the proxy: a 200 whose 2-byte body is `ok`.
fn read_answer(s: &mut TcpStream, buf: &mut [u8]) -> bool {
    let mut have = 0;
    loop {
        match s.read(&mut buf[have..]) {
            Ok(0) | Err(_) => return false,
            Ok(n) => have += n,
        }
        let got = &buf[..have];
        if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n")
            && have >= end + 4 + 2
        {
            return got.starts_with(b"HTTP/1.1 200") && &got[end + 4..end + 6] == b"ok";
        }
        if have == buf.len() {
            return false;
        }
    }
}

/// An HTTP/1.1 backend in this process: every request on every connection gets a 200 `ok`.
struct Backend {
    addr: SocketAddr,
}

impl Backend {
    fn start() -> Result<Backend, String> {
        let l = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("backend: {e}"))?;
        let addr = l.local_addr().map_err(|e| e.to_string())?;
        std::thread::spawn(move || {
            for conn in l.incoming().flatten() {
                std::thread::spawn(move || serve_backend(conn));
            }
        });
        Ok(Backend { addr })
    }
}

/// Answers every request head on `conn` (requests have no body) until it closes.
fn serve_backend(mut conn: TcpStream) {
    let _ = conn.set_nodelay(true);
    let mut buf = [0u8; 4096];
    let mut have = 0;
    loop {
        while let Some(end) = buf[..have].windows(4).position(|w| w == b"\r\n\r\n") {
            if conn.write_all(BACKEND_ANSWER).is_err() {
                return;
            }
            buf.copy_within(end + 4..have, 0);
            have -= end + 4;
        }
        if have == buf.len() {
            return;
        }
        match conn.read(&mut buf[have..]) {
            Ok(0) | Err(_) => return,
            Ok(n) => have += n,
        }
    }
}
