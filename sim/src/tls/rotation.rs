//! TLS scenario "certificate rotation during traffic": clients → sidecar (the real engine under
//! a [`Worker`], as a worker thread of the binary runs it: a `tcp_proxy` listener terminating
//! TLS) → three echo upstreams. While clients keep opening TLS connections, the listener's
//! certificate is replaced four times, at seeded moments:
//!
//! 1. **reload to a new pair** (serial 11): a config naming other files, switched in by
//!    [`Worker::reload`] as `POST /reload` does;
//! 2. **reload to a bad pair** (a certificate with another certificate's key): the new engine
//!    cannot be built, the reload is refused, the old generation serves on;
//! 3. **the files rewritten in place with a bad pair**, then looked at
//!    ([`sluice_runtime::tls::check_files`], what the file watcher runs): refused and counted
//!    in `ROTATIONS_FAILED`, the previous contexts serve on;
//! 4. **the files rewritten in place with a good pair** (serial 13), looked at: rotated.
//!
//! A long-lived client opens its connection before the first change and keeps exchanging
//! messages on it until after the last.
//!
//! Invariants checked after every run:
//!
//! - **R1 no request fails**: every short connection echoes its payload byte for byte, every
//!   round of the long-lived connection too, and every connection started finishes;
//! - **R2 handshakes see the certificate in force**: a handshake presents the serial of the
//!   last change completed before its connection started, or of one that began before its
//!   handshake ended (a change in progress) — never an older one, never a refused one;
//! - **R3 open connections keep working**: the long-lived connection, opened under serial 10,
//!   still echoes after the last change (and presented serial 10);
//! - **R4 a bad pair keeps the old one and is counted**: the bad reload is refused, the bad
//!   rewrite is reported as failed and counted exactly once, and connections between the bad
//!   pair and the next good one present serial 11 (R2 checks them);
//! - **R5 every phase is exercised**: at least one handshake completes under each serial the
//!   scenario expects (10, 11, 13), so the invariants above are never vacuous.
//!
//! The clients do not resume sessions: a resumed handshake presents no certificate (the
//! sidecar's ticket keys outlive a rotation by design, so resumption keeps a session's first
//! identity until its ticket expires); R2 is about full handshakes.
//!
//! Each run writes its certificate files in a directory of its own, removed at the end; its
//! name holds the process id (two processes may run the same seed at once), so the trace
//! names the files relative to it (`$DIR/second.pem`: [`in_dir`]) — with the full path, the
//! sidecar's messages made every process's digest of a seed a different one. The PKI uses
//! Ed25519 keys with fixed serials and validity, so handshakes have the same size from run to
//! run (the keys differ between processes) and a seed replays to the same trace.

use std::cell::RefCell;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use rustls::pki_types::{CertificateDer, ServerName};
use sluice_core::config::Config;
use sluice_core::rng::Rng;
use sluice_runtime::engine::Engine;
use sluice_runtime::net::TurmoilNet;
use sluice_runtime::stats::WorkerStats;
use sluice_runtime::tls::{FileCheck, ROTATIONS_FAILED, check_files};
use sluice_runtime::worker::{Worker, WorkerHooks};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use turmoil::net::{TcpListener, TcpStream};

use super::provider;
use crate::RunReport;
use crate::topology::{
    SIDECAR, add_clients, add_upstreams, elapsed, hosts_yaml, new_sim, report, run_to_end,
};
use crate::trace::Trace;

const UPSTREAMS: [&str; 3] = ["up1", "up2", "up3"];
const LISTEN_PORT: u16 = 10_443;
const UPSTREAM_PORT: u16 = 7_000;
const CLIENTS: usize = 3;
const TRAFFIC_UNTIL: Duration = Duration::from_millis(4_000);
const CLIENT_DEADLINE: Duration = Duration::from_secs(3);
const SIDECAR_NAME: &str = "sidecar.mesh.sim";
/// The serials of the leaf certificates: the first pair, the reloaded one, the one whose key
/// does not match (never served), the one rotated in place.
const SERIAL_FIRST: u64 = 10;
const SERIAL_RELOADED: u64 = 11;
const SERIAL_BAD: u64 = 12;
const SERIAL_ROTATED: u64 = 13;

/// The rotation PKI, made once per process: PEMs of each leaf and its key, by serial.
struct Pki {
    ca: CertificateDer<'static>,
    leaves: Vec<(u64, String, String, CertificateDer<'static>)>,
}

impl Pki {
    fn leaf(&self, serial: u64) -> &(u64, String, String, CertificateDer<'static>) {
        self.leaves
            .iter()
            .find(|l| l.0 == serial)
            .expect("a serial of the PKI")
    }

    /// The serial of a certificate the sidecar presented (`None`: not one of ours).
    fn serial_of(&self, der: &CertificateDer<'_>) -> Option<u64> {
        self.leaves
            .iter()
            .find(|l| l.3.as_ref() == der.as_ref())
            .map(|l| l.0)
    }
}

fn pki() -> &'static Pki {
    static PKI: OnceLock<Pki> = OnceLock::new();
    PKI.get_or_init(|| {
        use rcgen::{
            BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair,
            KeyUsagePurpose, PKCS_ED25519, SerialNumber, date_time_ymd,
        };
        let params = |name: &str, serial: u64| {
            let mut p = CertificateParams::new(vec![name.to_owned()]).unwrap();
            p.distinguished_name.push(DnType::CommonName, name);
            p.serial_number = Some(SerialNumber::from(serial));
            p.not_before = date_time_ymd(2024, 1, 1);
            p.not_after = date_time_ymd(2099, 1, 1);
            p
        };
        let mut ca_params = params("rotation-ca.sim", 1);
        ca_params.subject_alt_names.clear();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let issuer =
            CertifiedIssuer::self_signed(ca_params, KeyPair::generate_for(&PKCS_ED25519).unwrap())
                .unwrap();
        let leaves = [SERIAL_FIRST, SERIAL_RELOADED, SERIAL_BAD, SERIAL_ROTATED]
            .into_iter()
            .map(|serial| {
                let key = KeyPair::generate_for(&PKCS_ED25519).unwrap();
                let cert = params(SIDECAR_NAME, serial)
                    .signed_by(&key, &issuer)
                    .unwrap();
                (serial, cert.pem(), key.serialize_pem(), cert.der().clone())
            })
            .collect();
        Pki {
            ca: issuer.der().clone(),
            leaves,
        }
    })
}

fn client_config() -> Arc<rustls::ClientConfig> {
    static CONFIG: OnceLock<Arc<rustls::ClientConfig>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let mut roots = rustls::RootCertStore::empty();
            roots.add(pki().ca.clone()).unwrap();
            let mut config = rustls::ClientConfig::builder_with_provider(provider())
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth();
            // Full handshakes only: a resumed session presents no certificate (rustls reports
            // the one of the session's first handshake), and the sidecar's ticket keys survive
            // reloads and rotations on purpose, so a resuming client would go on seeing the
            // first certificate until its ticket expires.
            config.resumption = rustls::client::Resumption::disabled();
            Arc::new(config)
        })
        .clone()
}

/// Writes the pair `files` (`NAME.pem`, `NAME.key` in `dir`): the certificate of serial
/// `cert` with the key of serial `key` (the same for a good pair).
fn write_pair(dir: &Path, files: &str, cert: u64, key: u64) {
    let p = pki();
    std::fs::write(dir.join(format!("{files}.pem")), &p.leaf(cert).1).unwrap();
    std::fs::write(dir.join(format!("{files}.key")), &p.leaf(key).2).unwrap();
}

/// The sidecar's config, serving the pair `files`.
fn config(upstreams: &[IpAddr], dir: &Path, files: &str) -> Config {
    let hosts = hosts_yaml(upstreams, UPSTREAM_PORT);
    let dir = dir.display();
    let yaml = format!(
        r#"
listeners:
  - name: sim_tls
    address: "[::]:{LISTEN_PORT}"
    tls:
      certificates: [ {{ cert_chain: "{dir}/{files}.pem", private_key: "{dir}/{files}.key" }} ]
    tcp_proxy: {{ cluster: app, idle_timeout: 5s }}
clusters:
  - name: app
    connect_timeout: 300ms
    lb_policy: round_robin
    hosts:
{hosts}drain_timeout: 10s
"#
    );
    Config::from_yaml(&yaml).unwrap_or_else(|e| panic!("sim config invalid: {e}\n{yaml}"))
}

/// A change of the listener's certificate, as the sidecar made it.
#[derive(Debug)]
struct Change {
    what: &'static str,
    began: Duration,
    done: Duration,
    /// The serial served from then on; `None`: the change was refused (nothing changed).
    serial: Option<u64>,
}

#[derive(Debug)]
struct ConnRecord {
    client: usize,
    index: usize,
    start: Duration,
    /// When the handshake completed, and the serial the sidecar presented.
    handshake: Option<(Duration, Option<u64>)>,
    outcome: Result<usize, String>,
}

#[derive(Default)]
struct World {
    connections: Vec<ConnRecord>,
    connections_started: usize,
    clients_done: usize,
    changes: Vec<Change>,
    /// The long-lived connection: its serial, the rounds echoed (and when the last was), and
    /// its failure, if any.
    long_serial: Option<u64>,
    long_rounds: usize,
    long_last_round: Duration,
    long_error: Option<String>,
    long_done: bool,
    /// `ROTATIONS_FAILED` counted by the bad rewrite (the difference across it).
    rotations_failed: u64,
    /// What `check_files` said after each rewrite.
    file_checks: Vec<String>,
    sidecar_errors: Vec<String>,
}

type Shared = Rc<RefCell<World>>;

/// When the seed makes each change happen.
#[derive(Clone, Copy)]
struct Plan {
    reload: Duration,
    bad_reload: Duration,
    bad_rewrite: Duration,
    rewrite: Duration,
}

/// Runs the scenario for one seed.
#[must_use]
pub fn run(seed: u64) -> RunReport {
    let trace = Trace::default();
    let world: Shared = Rc::default();
    let mut rng = Rng::from_seed(seed ^ 0x0c3e_7207);
    let plan = Plan {
        reload: Duration::from_millis(700 + rng.below(400)),
        bad_reload: Duration::from_millis(1_500 + rng.below(300)),
        bad_rewrite: Duration::from_millis(2_000 + rng.below(300)),
        rewrite: Duration::from_millis(2_700 + rng.below(500)),
    };
    let dir = std::env::temp_dir().join(format!(
        "sluice-sim-rotation-{}-{seed:x}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    write_pair(&dir, "first", SERIAL_FIRST, SERIAL_FIRST);
    write_pair(&dir, "second", SERIAL_RELOADED, SERIAL_RELOADED);
    write_pair(&dir, "bad", SERIAL_BAD, SERIAL_FIRST);

    let mut sim = new_sim(seed, Duration::from_millis(20));
    add_upstreams(&mut sim, &UPSTREAMS, &(), &trace, echo_upstream);
    {
        let (world, trace, dir) = (world.clone(), trace.clone(), dir.clone());
        sim.host(SIDECAR, move || {
            sidecar(seed, dir.clone(), plan, world.clone(), trace.clone())
        });
    }
    {
        let (world, trace) = (world.clone(), trace.clone());
        add_clients(&mut sim, "clients", CLIENTS, move |c| {
            let client_seed = seed.wrapping_mul(31).wrapping_add(c as u64);
            client(c, client_seed, world.clone(), trace.clone())
        });
    }
    {
        let (world, trace) = (world.clone(), trace.clone());
        let pauses = Rng::from_seed(seed ^ 0x1005);
        sim.client("long", async move {
            long_lived(pauses, world, trace).await;
            Ok(())
        });
    }

    let mut violations = Vec::new();
    run_to_end(&mut sim, &mut violations, |_, _| {});
    drop(sim);
    let _ = std::fs::remove_dir_all(&dir);

    let w = world.borrow();
    check(&w, &mut violations);
    let ok = w.connections.iter().filter(|c| c.outcome.is_ok()).count();
    let mut by_serial = std::collections::BTreeMap::<u64, usize>::new();
    for c in &w.connections {
        if let Some((_, Some(s))) = c.handshake {
            *by_serial.entry(s).or_default() += 1;
        }
    }
    let summary = format!(
        "{} TLS connections, {ok} ok; handshakes by serial {by_serial:?}; long-lived: {} rounds \
         (serial {:?}); changes: {}",
        w.connections.len(),
        w.long_rounds,
        w.long_serial,
        w.changes
            .iter()
            .map(|c| format!("{} at {:?} -> {:?}", c.what, c.done, c.serial))
            .collect::<Vec<_>>()
            .join(", "),
    );
    report(seed, &trace, violations, summary)
}

impl Plan {
    fn at(&self) -> [(Duration, &'static str); 4] {
        [
            (self.reload, "reload"),
            (self.bad_reload, "bad reload"),
            (self.bad_rewrite, "bad rewrite"),
            (self.rewrite, "rewrite"),
        ]
    }
}

fn new_engine(config: Config, seed: u64) -> std::io::Result<Rc<Engine<TurmoilNet>>> {
    let config = Arc::new(config);
    let stats = Arc::new(WorkerStats::new(&config));
    Engine::new(TurmoilNet, config, 0, seed, stats)
}

async fn sidecar(
    seed: u64,
    dir: PathBuf,
    plan: Plan,
    world: Shared,
    trace: Trace,
) -> turmoil::Result {
    let ips: Vec<IpAddr> = UPSTREAMS.iter().map(|u| turmoil::lookup(*u)).collect();
    let listener = TcpListener::bind(SocketAddr::new(
        IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        LISTEN_PORT,
    ))
    .await?;
    let engine = new_engine(config(&ips, &dir, "first"), seed)?;
    let mut worker = Worker::start(
        engine,
        vec![listener],
        WorkerHooks {
            close_listeners: None,
            on_event: None,
        },
    );
    let mut generation = 0u64;
    for (at, what) in plan.at() {
        tokio::time::sleep(at.saturating_sub(elapsed())).await;
        let began = elapsed();
        trace.record(began, SIDECAR, what);
        let serial = match what {
            "reload" | "bad reload" => {
                let files = if what == "reload" { "second" } else { "bad" };
                generation += 1;
                // As a worker of the binary reloads: the new engine first (a bad pair fails
                // here, and nothing changes), then the switch.
                match new_engine(config(&ips, &dir, files), seed ^ generation) {
                    Ok(engine) => {
                        let failed = worker
                            .reload(engine, |i| {
                                Err(std::io::Error::other(format!(
                                    "listener {i}: the reload configs keep its address"
                                )))
                            })
                            .await;
                        match failed {
                            Ok(()) => Some(SERIAL_RELOADED),
                            Err(e) => {
                                let e = format!("{what}: {e:?}");
                                world.borrow_mut().sidecar_errors.push(e);
                                None
                            }
                        }
                    }
                    Err(e) => {
                        trace.record(
                            elapsed(),
                            SIDECAR,
                            in_dir(&dir, format!("{what} refused: {e}")),
                        );
                        if what == "reload" {
                            world
                                .borrow_mut()
                                .sidecar_errors
                                .push(format!("the good reload was refused: {e}"));
                        }
                        None
                    }
                }
            }
            _ => {
                // The files the serving generation names, rewritten in place, then looked at
                // as the watcher thread does.
                let failed_before = ROTATIONS_FAILED.load(Ordering::Relaxed);
                if what == "bad rewrite" {
                    write_pair(&dir, "second", SERIAL_BAD, SERIAL_RELOADED);
                } else {
                    write_pair(&dir, "second", SERIAL_ROTATED, SERIAL_ROTATED);
                }
                let checked = check_files();
                trace.record(
                    elapsed(),
                    SIDECAR,
                    in_dir(&dir, format!("{what}: {checked:?}")),
                );
                let mut w = world.borrow_mut();
                if what == "bad rewrite" {
                    w.rotations_failed = ROTATIONS_FAILED.load(Ordering::Relaxed) - failed_before;
                }
                let rotated = matches!(checked, FileCheck::Rotated(_));
                w.file_checks.push(format!(
                    "{what}: {}",
                    match checked {
                        FileCheck::Nothing => "nothing",
                        FileCheck::Unchanged => "unchanged",
                        FileCheck::Rotated(_) => "rotated",
                        FileCheck::Failed(..) => "failed",
                    }
                ));
                rotated.then_some(SERIAL_ROTATED)
            }
        };
        world.borrow_mut().changes.push(Change {
            what,
            began,
            done: elapsed(),
            serial,
        });
    }
    // Keeps the Worker: dropping it would drain the serving generation.
    let _keep = worker;
    std::future::pending::<()>().await;
    Ok(())
}

/// `text` (a message of the sidecar's naming the run's files) with the run's directory shown
/// as `$DIR`: the trace, and so the digest, must not hold the process id the directory's name
/// does.
fn in_dir(dir: &Path, text: String) -> String {
    text.replace(&*dir.to_string_lossy(), "$DIR")
}

async fn echo_upstream(index: usize, (): (), trace: Trace) -> turmoil::Result {
    let listener = TcpListener::bind(SocketAddr::new(
        IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        UPSTREAM_PORT,
    ))
    .await?;
    trace.record(elapsed(), UPSTREAMS[index], "listening");
    loop {
        let (mut stream, _) = listener.accept().await?;
        tokio::task::spawn_local(async move {
            let mut buf = vec![0u8; 4096];
            while let Ok(n) = stream.read(&mut buf).await
                && n > 0
            {
                if stream.write_all(&buf[..n]).await.is_err() {
                    break;
                }
            }
        });
    }
}

/// Connects and handshakes with the sidecar, verifying its certificate; returns the stream,
/// when the handshake completed, and the serial presented.
async fn connect() -> Result<
    (
        tokio_rustls::client::TlsStream<TcpStream>,
        Duration,
        Option<u64>,
    ),
    String,
> {
    let tcp = TcpStream::connect((SIDECAR, LISTEN_PORT))
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let name = ServerName::try_from(SIDECAR_NAME).unwrap();
    let tls = tokio_rustls::TlsConnector::from(client_config())
        .connect(name, tcp)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    let serial = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .and_then(|c| pki().serial_of(c));
    Ok((tls, elapsed(), serial))
}

/// Sends `payload` and reads back as many bytes; `Err` when they are not the same.
async fn round<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    tls: &mut S,
    payload: &[u8],
) -> Result<(), String> {
    tls.write_all(payload)
        .await
        .map_err(|e| format!("write: {e}"))?;
    let mut got = vec![0u8; payload.len()];
    tls.read_exact(&mut got)
        .await
        .map_err(|e| format!("read: {e}"))?;
    if got != payload {
        return Err("CORRUPT: the echo differs".into());
    }
    Ok(())
}

async fn client(c: usize, seed: u64, world: Shared, trace: Trace) {
    let mut rng = Rng::from_seed(seed);
    let who = format!("client{c}");
    let mut index = 0;
    while elapsed() < TRAFFIC_UNTIL {
        tokio::time::sleep(Duration::from_millis(rng.below(120))).await;
        world.borrow_mut().connections_started += 1;
        let len = 1 + rng.below(4096) as usize;
        let payload: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
        let start = elapsed();
        let mut handshake = None;
        let attempt = async {
            let (mut tls, at, serial) = connect().await?;
            handshake = Some((at, serial));
            round(&mut tls, &payload).await?;
            let _ = tls.shutdown().await;
            Ok(len)
        };
        let outcome = match tokio::time::timeout(CLIENT_DEADLINE, attempt).await {
            Ok(r) => r,
            Err(_) => Err("gave up at the deadline".to_owned()),
        };
        trace.record(
            elapsed(),
            &who,
            format_args!("conn {index} serial {handshake:?} -> {outcome:?}"),
        );
        world.borrow_mut().connections.push(ConnRecord {
            client: c,
            index,
            start,
            handshake,
            outcome,
        });
        index += 1;
    }
    world.borrow_mut().clients_done += 1;
}

/// One connection opened at once (before any change), exchanging a message every 50–250 ms
/// until past the traffic's end.
async fn long_lived(mut rng: Rng, world: Shared, trace: Trace) {
    let result = async {
        let (mut tls, _, serial) = connect().await?;
        world.borrow_mut().long_serial = serial;
        let mut n = 0u32;
        while elapsed() < TRAFFIC_UNTIL + Duration::from_millis(200) {
            tokio::time::sleep(Duration::from_millis(50 + rng.below(200))).await;
            round(&mut tls, format!("round {n}").as_bytes())
                .await
                .map_err(|e| format!("round {n}: {e}"))?;
            n += 1;
            let mut w = world.borrow_mut();
            w.long_rounds += 1;
            w.long_last_round = elapsed();
        }
        let _ = tls.shutdown().await;
        Ok::<(), String>(())
    }
    .await;
    trace.record(elapsed(), "long", format_args!("done: {result:?}"));
    let mut w = world.borrow_mut();
    w.long_error = result.err();
    w.long_done = true;
}

fn check(w: &World, violations: &mut Vec<String>) {
    violations.extend(w.sidecar_errors.iter().cloned());
    // R1: no request fails.
    if w.clients_done != CLIENTS || w.connections.len() != w.connections_started {
        violations.push(format!(
            "{} of {} client connections finished ({} of {CLIENTS} clients done)",
            w.connections.len(),
            w.connections_started,
            w.clients_done
        ));
    }
    for c in &w.connections {
        if let Err(e) = &c.outcome {
            violations.push(format!(
                "client{} connection {} (started at {:?}) failed: {e}",
                c.client, c.index, c.start
            ));
        }
    }
    // R2: each handshake presents the certificate in force.
    let served: Vec<&Change> = w.changes.iter().filter(|c| c.serial.is_some()).collect();
    let in_force_at = |t: Duration, edge: fn(&Change) -> Duration| {
        served
            .iter()
            .rev()
            .find(|c| edge(c) <= t)
            .and_then(|c| c.serial)
            .unwrap_or(SERIAL_FIRST)
    };
    for c in &w.connections {
        let Some((at, serial)) = c.handshake else {
            continue;
        };
        let allowed = [
            in_force_at(c.start, |c| c.done),
            in_force_at(at, |c| c.began),
        ];
        if !serial.is_some_and(|s| allowed.contains(&s)) {
            violations.push(format!(
                "client{} connection {} (started at {:?}, handshake at {at:?}) was presented \
                 serial {serial:?}, not the certificate in force ({allowed:?})",
                c.client, c.index, c.start
            ));
        }
    }
    // R3: the connection opened before every change kept working through them all.
    if !w.long_done {
        violations.push("the long-lived connection never finished".into());
    }
    if let Some(e) = &w.long_error {
        violations.push(format!(
            "the long-lived connection failed after {} rounds: {e}",
            w.long_rounds
        ));
    }
    if w.long_serial != Some(SERIAL_FIRST) {
        violations.push(format!(
            "the long-lived connection was presented serial {:?}, not {SERIAL_FIRST}",
            w.long_serial
        ));
    }
    let last_change = w.changes.last().map_or(Duration::ZERO, |c| c.done);
    if w.long_last_round <= last_change {
        violations.push(format!(
            "the long-lived connection's last round ({:?}) was not after the last change \
             ({last_change:?})",
            w.long_last_round
        ));
    }
    // R4: the bad pair is refused, counted, and the old one serves on.
    let outcome = |what: &str| w.changes.iter().find(|c| c.what == what).map(|c| c.serial);
    if outcome("reload") != Some(Some(SERIAL_RELOADED)) {
        violations.push(format!(
            "the reload to a good pair did not switch: {:?}",
            w.changes
        ));
    }
    if outcome("bad reload") != Some(None) {
        violations.push(format!(
            "the reload to a bad pair was not refused: {:?}",
            w.changes
        ));
    }
    if w.file_checks != ["bad rewrite: failed", "rewrite: rotated"] {
        violations.push(format!(
            "the files rewritten in place (bad, then good) were seen as {:?}",
            w.file_checks
        ));
    }
    if w.rotations_failed != 1 {
        violations.push(format!(
            "the bad rewrite counted {} failed rotations, not 1",
            w.rotations_failed
        ));
    }
    // R5: every phase saw handshakes.
    for serial in [SERIAL_FIRST, SERIAL_RELOADED, SERIAL_ROTATED] {
        let seen = w
            .connections
            .iter()
            .filter(|c| c.handshake.is_some_and(|(_, s)| s == Some(serial)))
            .count();
        if seen == 0 {
            violations.push(format!("no handshake presented serial {serial}"));
        }
    }
    // Between the bad pair and the good rewrite, the reloaded pair serves (R2 checks the
    // serial; this checks that such handshakes happened).
    let bad_from = w
        .changes
        .iter()
        .find(|c| c.what == "bad reload")
        .map(|c| c.began);
    let good_at = w
        .changes
        .iter()
        .find(|c| c.what == "rewrite")
        .map(|c| c.began);
    if let (Some(from), Some(to)) = (bad_from, good_at) {
        let kept = w
            .connections
            .iter()
            .filter(|c| c.start > from && c.handshake.is_some_and(|(at, _)| at < to))
            .count();
        if kept == 0 {
            violations.push("no handshake between the bad pair and the good rewrite".into());
        }
    }
}
