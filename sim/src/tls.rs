//! TLS scenario: clients → sidecar (real engine: a `tcp_proxy` listener that terminates TLS,
//! its cluster originating TLS to the hosts, verified against the mesh CA) → three TLS echo
//! upstreams. One upstream presents an **expired** certificate from the right CA; another
//! crashes mid-traffic; beside the well-behaved clients, hostile ones stall, abort or send
//! garbage in the middle of a handshake. The listener and cluster use the default
//! `handshake_timeout` (10 s).
//!
//! Invariants checked after every run:
//!
//! 1. every well-behaved connection either echoed its payload byte for byte through both TLS
//!    hops, or failed cleanly within its deadline; one that started after the crash succeeded
//!    (failover hides it, and the expired host is never what a client sees);
//! 2. **no byte of application data reaches the expired upstream**: the sidecar refuses it in
//!    the handshake (a verification failure is a connect failure: the next host is tried), and
//!    the refusals are counted in `upstream_tls_fail`;
//! 3. a client that stalls in the middle of its ClientHello is closed by the sidecar at the
//!    handshake timeout (not before, and not more than 100 ms after), counted `timeout`; a
//!    client that sends garbage is closed at once (counted `other`), one that aborts mid-hello
//!    is counted `closed`; none of them disturbs the others;
//! 4. the sidecar accepted exactly the connections the clients opened; every well-behaved one
//!    is counted as a completed handshake; at the end no session is left open.
//!
//! The test PKI uses Ed25519 keys and fixed serial numbers and validity, so every handshake
//! message has the same size from run to run and a seed replays to the same trace digest.

use std::cell::RefCell;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use sluice_core::config::Config;
use sluice_core::rng::Rng;
use sluice_runtime::stats::{DetailedSnapshot, WorkerStats};
use sluice_runtime::tls::HandshakeOutcome;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use turmoil::net::{TcpListener, TcpStream};

use crate::RunReport;
use crate::topology::{
    SIDECAR, add_clients, add_observer, add_sidecar, add_upstreams, elapsed, hosts_yaml, new_sim,
    report, run_to_end,
};
use crate::trace::Trace;

pub mod rotation;

const UPSTREAMS: [&str; 3] = ["up1", "up2", "up3"];
const LISTEN_PORT: u16 = 10_443;
const UPSTREAM_PORT: u16 = 7_443;
const CLIENTS: usize = 3;
const TRAFFIC_UNTIL: Duration = Duration::from_millis(4_000);
const CLIENT_DEADLINE: Duration = Duration::from_secs(3);
/// The listener's `handshake_timeout` default (the config does not set it).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// The name the upstreams' certificates carry and the cluster's `sni` asks for.
const UPSTREAM_NAME: &str = "app.mesh.sim";
/// The name of the sidecar's certificate, which the clients verify.
const SIDECAR_NAME: &str = "sidecar.mesh.sim";

/// The test PKI, made once per process: the files the sidecar's config names, and the
/// configs of the simulated TLS peers.
struct Pki {
    dir: PathBuf,
    ca: CertificateDer<'static>,
    good_upstream: Arc<rustls::ServerConfig>,
    expired_upstream: Arc<rustls::ServerConfig>,
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

fn pki() -> &'static Pki {
    static PKI: OnceLock<Pki> = OnceLock::new();
    PKI.get_or_init(|| {
        use rcgen::{
            BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair,
            KeyUsagePurpose, PKCS_ED25519, SerialNumber, date_time_ymd,
        };
        let params = |name: &str, serial: u64, from: (i32, u8, u8), to: (i32, u8, u8)| {
            let mut p = CertificateParams::new(vec![name.to_owned()]).unwrap();
            p.distinguished_name.push(DnType::CommonName, name);
            p.serial_number = Some(SerialNumber::from(serial));
            p.not_before = date_time_ymd(from.0, from.1, from.2);
            p.not_after = date_time_ymd(to.0, to.1, to.2);
            p
        };
        let mut ca_params = params("mesh-ca.sim", 1, (2024, 1, 1), (2099, 1, 1));
        ca_params.subject_alt_names.clear();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let issuer =
            CertifiedIssuer::self_signed(ca_params, KeyPair::generate_for(&PKCS_ED25519).unwrap())
                .unwrap();
        let leaf = |name: &str, serial: u64, from, to| {
            let key = KeyPair::generate_for(&PKCS_ED25519).unwrap();
            let cert = params(name, serial, from, to)
                .signed_by(&key, &issuer)
                .unwrap();
            (cert, key)
        };
        let (sidecar, sidecar_key) = leaf(SIDECAR_NAME, 2, (2024, 1, 1), (2099, 1, 1));
        let (good, good_key) = leaf(UPSTREAM_NAME, 3, (2024, 1, 1), (2099, 1, 1));
        // From the right CA, for the right name, but expired years ago.
        let (expired, expired_key) = leaf(UPSTREAM_NAME, 4, (2019, 1, 1), (2020, 1, 1));

        let dir = std::env::temp_dir().join(format!("sluice-sim-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("ca.pem"), issuer.pem()).unwrap();
        std::fs::write(dir.join("sidecar.pem"), sidecar.pem()).unwrap();
        std::fs::write(dir.join("sidecar.key"), sidecar_key.serialize_pem()).unwrap();

        let server = |cert: &rcgen::Certificate, key: &KeyPair| {
            let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
            Arc::new(
                rustls::ServerConfig::builder_with_provider(provider())
                    .with_safe_default_protocol_versions()
                    .unwrap()
                    .with_no_client_auth()
                    .with_single_cert(vec![cert.der().clone()], key)
                    .unwrap(),
            )
        };
        Pki {
            good_upstream: server(&good, &good_key),
            expired_upstream: server(&expired, &expired_key),
            ca: issuer.der().clone(),
            dir,
        }
    })
}

/// The client side of the clients' TLS: trusts the mesh CA.
fn client_config() -> Arc<rustls::ClientConfig> {
    static CONFIG: OnceLock<Arc<rustls::ClientConfig>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let mut roots = rustls::RootCertStore::empty();
            roots.add(pki().ca.clone()).unwrap();
            Arc::new(
                rustls::ClientConfig::builder_with_provider(provider())
                    .with_safe_default_protocol_versions()
                    .unwrap()
                    .with_root_certificates(roots)
                    .with_no_client_auth(),
            )
        })
        .clone()
}

/// What a hostile client does in the middle of its handshake.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Hostile {
    /// Sends the first bytes of a ClientHello, then nothing (holds the connection open).
    Stall,
    /// Sends an HTTP request instead of a ClientHello.
    Garbage,
    /// Sends the first bytes of a ClientHello, then closes.
    Abort,
}

#[derive(Debug)]
struct ConnRecord {
    client: usize,
    index: usize,
    start: Duration,
    end: Duration,
    outcome: Result<usize, String>,
}

#[derive(Debug)]
struct HostileRecord {
    kind: Hostile,
    start: Duration,
    /// When the sidecar closed the connection (EOF or error on read); `None`: it never did.
    closed_at: Option<Duration>,
}

#[derive(Default)]
struct World {
    connections: Vec<ConnRecord>,
    connections_started: usize,
    clients_done: usize,
    hostile: Vec<HostileRecord>,
    hostile_done: bool,
    /// Per upstream: TLS handshakes it completed, and application bytes it received.
    upstream_handshakes: [usize; 3],
    upstream_bytes: [usize; 3],
}

fn sidecar_config(upstreams: &[IpAddr]) -> Config {
    let hosts = hosts_yaml(upstreams, UPSTREAM_PORT);
    let dir = pki().dir.display();
    let yaml = format!(
        r#"
listeners:
  - name: sim_tls
    address: "[::]:{LISTEN_PORT}"
    tls:
      certificates: [ {{ cert_chain: "{dir}/sidecar.pem", private_key: "{dir}/sidecar.key" }} ]
    tcp_proxy: {{ cluster: app, idle_timeout: 2s, max_connect_attempts: 3 }}
clusters:
  - name: app
    connect_timeout: 300ms
    lb_policy: round_robin
    tls: {{ ca: "{dir}/ca.pem", sni: {UPSTREAM_NAME} }}
    hosts:
{hosts}drain_timeout: 1s
"#
    );
    Config::from_yaml(&yaml).unwrap_or_else(|e| panic!("sim config invalid: {e}\n{yaml}"))
}

/// Runs the scenario for one seed.
#[must_use]
pub fn run(seed: u64) -> RunReport {
    let trace = Trace::default();
    let world = Rc::new(RefCell::new(World::default()));
    let mut schedule_rng = Rng::from_seed(seed ^ 0x7150_7150);
    let expired = schedule_rng.below(UPSTREAMS.len() as u64) as usize;
    let crashed = (expired + 1 + schedule_rng.below(2) as usize) % UPSTREAMS.len();
    let crash_at = Duration::from_millis(800 + schedule_rng.below(1500));
    let hostile_starts: Vec<(Hostile, Duration)> =
        [Hostile::Stall, Hostile::Garbage, Hostile::Abort]
            .into_iter()
            .map(|h| (h, Duration::from_millis(schedule_rng.below(3000))))
            .collect();

    let mut sim = new_sim(seed, Duration::from_millis(20));
    add_upstreams(
        &mut sim,
        &UPSTREAMS,
        &(world.clone(), expired),
        &trace,
        tls_echo_upstream,
    );
    let sidecar = add_sidecar(&mut sim, seed, LISTEN_PORT, &UPSTREAMS, sidecar_config);

    {
        let (world, trace) = (world.clone(), trace.clone());
        add_clients(&mut sim, "clients", CLIENTS, move |c| {
            let client_seed = seed.wrapping_mul(31).wrapping_add(c as u64);
            client(c, client_seed, world.clone(), trace.clone())
        });
    }
    {
        let (world, trace) = (world.clone(), trace.clone());
        sim.client("hostile", async move {
            hostile_clients(hostile_starts, world, trace).await;
            Ok(())
        });
    }

    let final_stats = {
        let world = world.clone();
        add_observer(
            &mut sim,
            move || {
                let w = world.borrow();
                w.clients_done == CLIENTS && w.hostile_done
            },
            Duration::from_millis(2_500),
            sidecar,
            WorkerStats::detailed,
        )
    };

    let mut violations = Vec::new();
    let mut crashed_at = None;
    run_to_end(&mut sim, &mut violations, |sim, now| {
        if crashed_at.is_none() && now >= crash_at {
            sim.crash(UPSTREAMS[crashed]);
            trace.record(now, "SIM", format!("crash {}", UPSTREAMS[crashed]));
            crashed_at = Some(now);
        }
    });
    drop(sim);

    let w = world.borrow();
    check(
        &w,
        final_stats.borrow().as_ref(),
        expired,
        crashed_at,
        &mut violations,
    );
    let ok = w.connections.iter().filter(|c| c.outcome.is_ok()).count();
    let closed: Vec<String> = final_stats
        .borrow()
        .as_ref()
        .map(|s| {
            sluice_core::tcp_proxy::CloseReason::ALL
                .iter()
                .filter(|r| s.listeners[0].tcp_session_closed[r.index()] > 0)
                .map(|r| {
                    format!(
                        "{} {}",
                        r.as_str(),
                        s.listeners[0].tcp_session_closed[r.index()]
                    )
                })
                .chain(s.clusters[0].hosts.iter().enumerate().map(|(i, h)| {
                    format!(
                        "[{}: cx {} fail {}]",
                        UPSTREAMS[i], h.cx_total, h.cx_connect_fail
                    )
                }))
                .collect()
        })
        .unwrap_or_default();
    let summary = format!(
        "{} TLS connections, {ok} ok, {} failed cleanly; expired upstream {}, crashed {}; \
         upstream handshakes {:?}; sessions closed: {}",
        w.connections.len(),
        w.connections.len() - ok,
        UPSTREAMS[expired],
        UPSTREAMS[crashed],
        w.upstream_handshakes,
        closed.join(", "),
    );
    report(seed, &trace, violations, summary)
}

fn check(
    w: &World,
    stats: Option<&DetailedSnapshot>,
    expired: usize,
    crashed_at: Option<Duration>,
    violations: &mut Vec<String>,
) {
    // 1. well-behaved connections.
    if w.connections.len() != w.connections_started {
        violations.push(format!(
            "{} of {} client connections finished",
            w.connections.len(),
            w.connections_started
        ));
    }
    for c in &w.connections {
        let took = c.end - c.start;
        if took > CLIENT_DEADLINE + Duration::from_millis(10) {
            violations.push(format!(
                "client{} connection {} took {took:?}, past its {CLIENT_DEADLINE:?} deadline",
                c.client, c.index
            ));
        }
        if let Err(e) = &c.outcome {
            let may_fail = crashed_at.is_some_and(|f| c.start <= f + Duration::from_millis(25));
            if !may_fail || e.starts_with("CORRUPT") {
                violations.push(format!(
                    "client{} connection {} (started at {:?}) failed: {e}",
                    c.client, c.index, c.start
                ));
            }
        }
    }
    // 2. the expired upstream never gets application data.
    if w.upstream_bytes[expired] != 0 || w.upstream_handshakes[expired] != 0 {
        violations.push(format!(
            "{} presents an expired certificate, yet {} handshake(s) with it completed and it \
             received {} application byte(s)",
            UPSTREAMS[expired], w.upstream_handshakes[expired], w.upstream_bytes[expired]
        ));
    }
    // 3. hostile clients.
    if !w.hostile_done || w.hostile.len() != 3 {
        violations.push(format!("hostile clients unfinished: {:?}", w.hostile));
    }
    for h in &w.hostile {
        let Some(closed) = h.closed_at else {
            violations.push(format!("the sidecar never closed the {:?} client", h.kind));
            continue;
        };
        let after = closed - h.start;
        match h.kind {
            Hostile::Stall => {
                if after < HANDSHAKE_TIMEOUT
                    || after > HANDSHAKE_TIMEOUT + Duration::from_millis(100)
                {
                    violations.push(format!(
                        "a client stalled mid-ClientHello was closed after {after:?}, not at \
                         the {HANDSHAKE_TIMEOUT:?} handshake timeout"
                    ));
                }
            }
            Hostile::Garbage => {
                if after > Duration::from_millis(100) {
                    violations.push(format!(
                        "a client that sent garbage was closed only after {after:?}"
                    ));
                }
            }
            Hostile::Abort => {}
        }
    }
    // 4. the sidecar's own view.
    let Some(snap) = stats else {
        violations.push("the observer never read the sidecar's counters".into());
        return;
    };
    let open = snap.worker.downstream_cx_active();
    if open != 0 {
        violations.push(format!("{open} sidecar session(s) still open at the end"));
    }
    let opened = (w.connections.len() + w.hostile.len()) as u64;
    if snap.worker.downstream_cx_total != opened {
        violations.push(format!(
            "sidecar accepted {} connections, clients opened {opened}",
            snap.worker.downstream_cx_total
        ));
    }
    let handshakes = &snap.listeners[0].tls_handshakes;
    let count = |o: HandshakeOutcome| handshakes[o as usize];
    let good_handshakes = w
        .connections
        .iter()
        .filter(|c| {
            !c.outcome
                .as_ref()
                .is_err_and(|e| e.starts_with("handshake"))
        })
        .count() as u64;
    if count(HandshakeOutcome::Ok) != good_handshakes {
        violations.push(format!(
            "{} handshakes counted ok, {good_handshakes} clients completed one",
            count(HandshakeOutcome::Ok)
        ));
    }
    for (kind, outcome) in [
        (Hostile::Stall, HandshakeOutcome::Timeout),
        (Hostile::Garbage, HandshakeOutcome::Other),
        (Hostile::Abort, HandshakeOutcome::Closed),
    ] {
        if count(outcome) != 1 {
            violations.push(format!(
                "{kind:?} client: handshakes counted {} = {}, expected 1 ({handshakes:?})",
                outcome.as_str(),
                count(outcome)
            ));
        }
    }
    let refused: u64 = snap.clusters[0].upstream_tls_fail.iter().sum();
    if refused == 0 {
        violations.push(format!(
            "no upstream TLS failure counted, though {} presents an expired certificate",
            UPSTREAMS[expired]
        ));
    }
}

async fn tls_echo_upstream(
    index: usize,
    (world, expired): (Rc<RefCell<World>>, usize),
    trace: Trace,
) -> turmoil::Result {
    let config = if index == expired {
        pki().expired_upstream.clone()
    } else {
        pki().good_upstream.clone()
    };
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let listener = TcpListener::bind(SocketAddr::new(
        IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        UPSTREAM_PORT,
    ))
    .await?;
    trace.record(elapsed(), UPSTREAMS[index], "listening");
    loop {
        let (stream, _) = listener.accept().await?;
        let (acceptor, world, trace) = (acceptor.clone(), world.clone(), trace.clone());
        tokio::task::spawn_local(async move {
            let mut tls = match acceptor.accept(stream).await {
                Ok(tls) => tls,
                Err(e) => {
                    trace.record(
                        elapsed(),
                        UPSTREAMS[index],
                        format!("handshake failed: {e}"),
                    );
                    return;
                }
            };
            world.borrow_mut().upstream_handshakes[index] += 1;
            let mut buf = vec![0u8; 4096];
            let mut echoed = 0;
            loop {
                match tls.read(&mut buf).await {
                    Ok(0) => {
                        if echoed == 0 {
                            trace.record(elapsed(), UPSTREAMS[index], "EOF before any byte");
                        }
                        break;
                    }
                    Err(e) => {
                        trace.record(
                            elapsed(),
                            UPSTREAMS[index],
                            format!("read failed after {echoed} bytes: {e}"),
                        );
                        break;
                    }
                    Ok(n) => {
                        world.borrow_mut().upstream_bytes[index] += n;
                        echoed += n;
                        if let Err(e) = tls.write_all(&buf[..n]).await {
                            trace.record(
                                elapsed(),
                                UPSTREAMS[index],
                                format!("write failed after {echoed} bytes: {e}"),
                            );
                            break;
                        }
                    }
                }
            }
            // Close as nginx's lingering close does: close_notify and FIN, then read until the
            // peer's FIN before the socket goes. A socket dropped with anything unread sends
            // a RST (RFC 9293 §3.10.4; turmoil models it), which may overtake the echo still
            // on its way to the sidecar.
            let _ = tls.shutdown().await;
            let (mut io, _) = tls.into_inner();
            let mut rest = [0u8; 512];
            while let Ok(n) = io.read(&mut rest).await
                && n > 0
            {}
        });
    }
}

async fn client(c: usize, seed: u64, world: Rc<RefCell<World>>, trace: Trace) {
    let mut rng = Rng::from_seed(seed);
    let who = format!("client{c}");
    let mut index = 0;
    while elapsed() < TRAFFIC_UNTIL {
        tokio::time::sleep(Duration::from_millis(rng.below(150))).await;
        world.borrow_mut().connections_started += 1;
        let len = 1 + rng.below(8192) as usize;
        let payload: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
        let pauses: Vec<Duration> = (0..1 + rng.below(4))
            .map(|_| Duration::from_millis(rng.below(100)))
            .collect();
        let start = elapsed();
        let outcome = match tokio::time::timeout(CLIENT_DEADLINE, exchange(&payload, &pauses)).await
        {
            Ok(r) => r,
            Err(_) => Err("gave up at the deadline".to_owned()),
        };
        let end = elapsed();
        trace.record(
            end,
            &who,
            format_args!("conn {index} ({len} bytes) -> {outcome:?}"),
        );
        world.borrow_mut().connections.push(ConnRecord {
            client: c,
            index,
            start,
            end,
            outcome,
        });
        index += 1;
    }
    world.borrow_mut().clients_done += 1;
}

/// Connects through the sidecar over TLS (verifying its certificate), writes `payload` in
/// chunks while reading the echo, and once all of it is back ends with close_notify and FIN,
/// then reads until the sidecar's end of the stream.
///
/// Why the close comes last, unlike the TCP scenarios' half-close: turmoil has no FIN_WAIT
/// state, so a FIN that reaches a socket the sidecar already closed is answered with a RST (a
/// kernel would accept it), and the RST can overtake echo bytes still in flight to the client.
/// Over TLS the sidecar ends a session on close_notify, which precedes the FIN, so it may
/// close before the FIN arrives; a reset after the whole echo arrived is therefore not a
/// failure. The sidecar's own close is still checked: its sessions must all end (none open at
/// the end) and be counted.
async fn exchange(payload: &[u8], pauses: &[Duration]) -> Result<usize, String> {
    let tcp = TcpStream::connect((SIDECAR, LISTEN_PORT))
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let name = ServerName::try_from(SIDECAR_NAME).unwrap();
    let tls = tokio_rustls::TlsConnector::from(client_config())
        .connect(name, tcp)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    let (mut r, mut w) = tokio::io::split(tls);
    let got = {
        let write = async {
            let chunk = payload.len().div_ceil(pauses.len());
            for (part, pause) in payload.chunks(chunk).zip(pauses) {
                tokio::time::sleep(*pause).await;
                w.write_all(part).await.map_err(|e| format!("write: {e}"))?;
            }
            Ok::<(), String>(())
        };
        let read = async {
            let mut got = Vec::with_capacity(payload.len());
            let mut buf = [0u8; 4096];
            while got.len() < payload.len() {
                match r.read(&mut buf).await {
                    Ok(0) => break,
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                    Err(e) => return Err(format!("read: {e} after {} bytes", got.len())),
                }
            }
            Ok(got)
        };
        let (written, got) = tokio::join!(write, read);
        let got = got?;
        written?;
        got
    };
    if got.len() != payload.len() {
        return Err(format!(
            "EOF after {} of {} bytes",
            got.len(),
            payload.len()
        ));
    }
    if got != payload {
        let at = got
            .iter()
            .zip(payload)
            .position(|(a, b)| a != b)
            .unwrap_or(0);
        return Err(format!("CORRUPT: echoed bytes differ at offset {at}"));
    }
    w.shutdown().await.map_err(|e| format!("shutdown: {e}"))?;
    let mut rest = [0u8; 64];
    match r.read(&mut rest).await {
        Ok(0) | Err(_) => Ok(payload.len()),
        Ok(n) => Err(format!("{n} bytes past the echo")),
    }
}

/// The start of a TLS 1.2/1.3 ClientHello record whose header promises 512 bytes.
const PARTIAL_HELLO: &[u8] = &[
    0x16, 0x03, 0x01, 0x02, 0x00, // record: handshake, TLS 1.0 compat, 512 bytes
    0x01, 0x00, 0x01, 0xfc, // ClientHello, 508 bytes
    0x03, 0x03, // legacy version TLS 1.2
    0x5a, 0x5a, 0x5a, 0x5a, 0x5a, 0x5a, 0x5a, 0x5a, // the first bytes of the random
];

async fn hostile_clients(
    starts: Vec<(Hostile, Duration)>,
    world: Rc<RefCell<World>>,
    trace: Trace,
) {
    let mut tasks = Vec::new();
    for (kind, at) in starts {
        let (world, trace) = (world.clone(), trace.clone());
        tasks.push(tokio::task::spawn_local(async move {
            tokio::time::sleep(at).await;
            let start = elapsed();
            let closed_at = hostile(kind).await;
            trace.record(
                elapsed(),
                "hostile",
                format!("{kind:?} closed at {closed_at:?}"),
            );
            world.borrow_mut().hostile.push(HostileRecord {
                kind,
                start,
                closed_at,
            });
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    world.borrow_mut().hostile_done = true;
}

/// One hostile connection; returns when the sidecar closed it (`None`: it did not within
/// twice the handshake timeout, or the connect failed).
async fn hostile(kind: Hostile) -> Option<Duration> {
    let mut s = TcpStream::connect((SIDECAR, LISTEN_PORT)).await.ok()?;
    match kind {
        Hostile::Stall => s.write_all(PARTIAL_HELLO).await.ok()?,
        Hostile::Garbage => s
            .write_all(b"GET / HTTP/1.1\r\nhost: sidecar\r\n\r\n")
            .await
            .ok()?,
        Hostile::Abort => {
            s.write_all(PARTIAL_HELLO).await.ok()?;
            drop(s);
            return Some(elapsed());
        }
    }
    let mut buf = [0u8; 1024];
    let wait = async {
        loop {
            match s.read(&mut buf).await {
                // An alert may come first; the close is what counts.
                Ok(0) | Err(_) => return elapsed(),
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(HANDSHAKE_TIMEOUT * 2, wait).await.ok()
}
