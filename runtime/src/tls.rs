//! TLS termination with rustls: from a listener's `tls` settings ([`ListenerTls`]) to a
//! [`TlsAcceptor`], and the handshake outcome a connection had.
//!
//! What this module owns:
//! Every `tls` a connection can be served with is one *serving slot*: each listener's, then
//! each filter chain's ([`Config::tls_slots`]), with its own acceptor, session cache and
//! ticket keys (a chain's named `LISTENER#filter_chains[N]`).
//!
//! - **Loading** the PEM files (certificate chains, keys, client CAs), each problem reported at
//!   the config path of the field (`listeners[0].tls.certificates[1].private_key: …`), so that
//!   `sluice validate` and a reload refuse a bad pair before anything serves with it
//!   ([`check_config`]).
//! - **Certificate choice per handshake** ([`SniResolver`]): the certificate whose DNS SANs
//!   match the client's server name — exact first, then a wildcard SAN (`*.example.com` covers
//!   one label: `a.example.com`, not `a.b.example.com`, RFC 6125 §6.4.3) — else the first one.
//! - **Client identities** ([`SanCheckingVerifier`]): with `client_ca`, rustls verifies the
//!   chain; then, when `verify_subject_alt_names` is set, the leaf must carry one of those DNS or
//!   URI SANs (rustls checks chains, not URI SANs — this is where a SPIFFE identity such as
//!   `spiffe://cluster.local/ns/default/sa/client` is admitted or refused).
//! - **Origination** ([`UpstreamConnector`]): a cluster's `tls` as a rustls client config — the
//!   upstream's chain always verified against the cluster's `ca`, then its identity: the `sni`
//!   name, or one of `verify_subject_alt_names` ([`SanCheckingServerVerifier`]); a client
//!   certificate for upstreams that want mTLS. [`MaybeTls`] is an upstream stream either way.
//!   A cluster with `transport_socket_matches` has a connector per entry too
//!   ([`matched_connectors`]); each host's pick of them is the host's own, held in its slot
//!   ([`sluice_core::host::Transport`]) and read with its address where it is picked, and
//!   [`Contexts::connector`] (by cluster and pick: O(1)) is how the one connect path
//!   ([`crate::upstreams`], which HTTP, `tcp_proxy`, Bolt, health checks and OTLP all take)
//!   finds how to reach a host. Invariant: a
//!   slot's transport never changes while it holds a host — a host whose labels pick another
//!   entry is another host (another slot and epoch: [`sluice_core::host::merge_answer`]) — so
//!   per-host pools never hold a connection of the other transport.
//! - **Local identities** ([`Contexts::local_uri_sans`]): each serving slot's certificates'
//!   SANs, read when its contexts are built, so that a connection's `x-forwarded-client-cert`
//!   element names (`By`) the URI SANs of the certificate it was served — the one
//!   [`SniResolver`] picked for its server name (the same choice, [`choose_certificate`]).
//! - **Outcomes** ([`HandshakeOutcome`]): what a failed handshake's error means, for counters.
//! - **Rotation** ([`check_files`], [`WorkerTls`]): the contexts of the current config
//!   generation are published in one process-wide slot with a generation number; the watcher
//!   thread compares the TLS files' content with what they held and, on a change, rebuilds the
//!   contexts from the same config and publishes them. Each worker holds its own handle and
//!   looks at the slot only when the generation number moved (one atomic load per
//!   connection): no lock on the handshake path. A set of files that cannot be used is
//!   refused and the previous contexts serve on.
//!
//! The crypto provider is aws-lc-rs (rustls' default; it builds with a C compiler alone, and is
//! the fastest rustls provider for P-256 and X25519). Session resumption: rustls' in-memory
//! session cache (256 sessions) and stateless tickets sealed with keys Sluice holds
//! ([`crate::tls_tickets`], rotated every 6 hours), one of each per listener shared by the
//! workers ([`contexts`]); the ticket keys outlive a reload that keeps the listener and are
//! handed to the new process by a binary upgrade.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, DistinguishedName, Error,
    PeerIncompatible, RootCertStore, ServerConfig, SignatureScheme,
};
use sluice_core::config::tls::{
    CipherSuite, EcdhCurve, ListenerTls, MAX_PEM_BYTES, Pem, TlsVersion, UpstreamTls,
    effective_cipher_suites,
};
use sluice_core::config::{ClusterConfig, Config, ConfigError, HealthProbe};
use sluice_core::tls::pem::{San, parse_certificates, parse_chain, parse_key, subject_alt_names};
pub use tokio_rustls::{TlsAcceptor, TlsConnector};
use tracing::{info, warn};

use crate::tls_certs::CertFile;

/// The crypto provider every TLS context uses.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// The provider with the suites a context enables, in its order of preference: the listed
/// ones, a version of which none is listed keeping its defaults
/// (`sluice_core::config::tls::effective_cipher_suites`).
fn with_cipher_suites(
    provider: Arc<CryptoProvider>,
    listed: &[CipherSuite],
) -> Arc<CryptoProvider> {
    let mut p = Arc::unwrap_or_clone(provider);
    p.cipher_suites = effective_cipher_suites(listed)
        .into_iter()
        .map(rustls_suite)
        .collect();
    Arc::new(p)
}

/// The provider's suite for a configured one.
fn rustls_suite(suite: CipherSuite) -> rustls::SupportedCipherSuite {
    use rustls::crypto::aws_lc_rs::cipher_suite as cs;
    match suite {
        CipherSuite::Tls13Aes128GcmSha256 => cs::TLS13_AES_128_GCM_SHA256,
        CipherSuite::Tls13Aes256GcmSha384 => cs::TLS13_AES_256_GCM_SHA384,
        CipherSuite::Tls13Chacha20Poly1305Sha256 => cs::TLS13_CHACHA20_POLY1305_SHA256,
        CipherSuite::EcdheEcdsaAes128GcmSha256 => cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        CipherSuite::EcdheEcdsaChacha20Poly1305 => {
            cs::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256
        }
        CipherSuite::EcdheRsaAes128GcmSha256 => cs::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        CipherSuite::EcdheRsaChacha20Poly1305 => cs::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
        CipherSuite::EcdheEcdsaAes256GcmSha384 => cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        CipherSuite::EcdheRsaAes256GcmSha384 => cs::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
    }
}

/// The provider's key exchange group for a configured curve.
fn kx_group(curve: EcdhCurve) -> &'static dyn rustls::crypto::SupportedKxGroup {
    use rustls::crypto::aws_lc_rs::kx_group;
    match curve {
        EcdhCurve::X25519 => kx_group::X25519,
        EcdhCurve::P256 => kx_group::SECP256R1,
        EcdhCurve::P384 => kx_group::SECP384R1,
        EcdhCurve::X25519MlKem768 => kx_group::X25519MLKEM768,
    }
}

/// Builds every TLS listener's context once, to report every problem of the files with its
/// config path (what `sluice validate` and a reload check before applying a config).
#[must_use]
pub fn check_config(config: &Config) -> Vec<ConfigError> {
    let mut errors = Vec::new();
    for (tls, path, _) in config.tls_slots() {
        if let Some(tls) = tls
            && let Err(mut e) = server_config(tls, &path)
        {
            errors.append(&mut e);
        }
    }
    for (i, c) in config.clusters.iter().enumerate() {
        if let Some(tls) = &c.tls
            && let Err(mut e) = client_config(tls, &format!("clusters[{i}].tls"))
        {
            errors.append(&mut e);
        }
        for (m, entry) in c.transport_socket_matches.iter().enumerate() {
            if let Some(tls) = &entry.tls
                && let Err(mut e) = client_config(
                    tls,
                    &format!("clusters[{i}].transport_socket_matches[{m}].tls"),
                )
            {
                errors.append(&mut e);
            }
        }
    }
    errors
}

/// The TLS contexts of one config: an acceptor per listener and a connector per cluster
/// (`None`: plaintext).
pub struct Contexts {
    /// By serving slot: listener index, then `listeners.len()` + filter chain
    /// ([`Config::chain_slots`]).
    pub acceptors: Vec<Option<TlsAcceptor>>,
    /// By cluster index: the cluster's own `tls` (use [`Contexts::connector`], which also
    /// follows `transport_socket_matches`).
    pub connectors: Vec<Option<UpstreamConnector>>,
    /// By cluster index, then entry of its `transport_socket_matches`: their connectors
    /// ([`matched_connectors`]).
    matched: Vec<Box<[Option<UpstreamConnector>]>>,
    /// What the certificate chains and CA files held when these were built (`/certs`).
    pub certificates: Vec<CertFile>,
    /// By listener index: the identity its ticket keys are tied to
    /// ([`crate::tls_tickets::identity`]); a rotation keeps a listener's session cache only
    /// when it is unchanged (new client CA content: sessions of the old one cannot resume).
    identities: Vec<Option<String>>,
    /// By serving slot: each certificate's SANs (what `x-forwarded-client-cert`'s `By` names,
    /// [`Contexts::local_uri_sans`]).
    local: Vec<LocalCerts>,
}

/// A serving slot's certificates' SANs, in config order: DNS (lowercase, as [`SniResolver`]
/// picks by them) and URI.
#[derive(Debug, Default)]
struct LocalCerts(Vec<(Vec<String>, Vec<String>)>);

/// By serving slot: its certificates' SANs, read from the files (a file that cannot be read or
/// parsed leaves its certificate without SANs: the acceptors report it).
fn local_certs(config: &Config) -> Vec<LocalCerts> {
    config
        .tls_slots()
        .into_iter()
        .map(|(tls, _, _)| {
            LocalCerts(
                tls.map(|tls| {
                    tls.certificates
                        .iter()
                        .map(|files| {
                            let sans = read_pem(&files.cert_chain)
                                .ok()
                                .and_then(|pem| parse_chain(&pem).ok())
                                .and_then(|chain| sans(&chain[0]).ok())
                                .unwrap_or_default();
                            let (mut dns, mut uri) = (Vec::new(), Vec::new());
                            for san in sans {
                                match san {
                                    San::Dns(d) => dns.push(d),
                                    San::Uri(u) => uri.push(u),
                                }
                            }
                            (dns, uri)
                        })
                        .collect()
                })
                .unwrap_or_default(),
            )
        })
        .collect()
}

/// What the process serves with now: the contexts of the newest config generation and what
/// its TLS files held when they were last looked at. Replaced by a new generation (a reload)
/// and by a rotation (the files changed, or an xDS update changed only inline PEM:
/// [`rotate_inline`]); taken by a worker only when [`GENERATION`] says it was replaced, by
/// the watcher once per check, never per handshake.
struct Published {
    /// The config the contexts were built from (after [`rotate_inline`], the rotated config,
    /// which the workers' engines do not hold: they go by `lineage`).
    config: Weak<Config>,
    contexts: Arc<Contexts>,
    files: Vec<FileStamp>,
    /// The config generation the contexts are for: new with each generation a reload builds,
    /// kept by rotations. A worker takes published contexts only of its own lineage.
    lineage: u64,
}

static PUBLISHED: Mutex<Option<Published>> = Mutex::new(None);

/// Bumped each time [`PUBLISHED`] is replaced: a worker compares it with the value it last
/// saw (one relaxed-cost atomic load per connection) to know when to look.
static GENERATION: AtomicU64 = AtomicU64::new(0);

/// Rotations since the start: the changed files loaded and swapped in.
pub static ROTATIONS_SUCCEEDED: AtomicU64 = AtomicU64::new(0);
/// Rotations refused: the changed files could not be used; the previous contexts serve on.
pub static ROTATIONS_FAILED: AtomicU64 = AtomicU64::new(0);

fn published() -> std::sync::MutexGuard<'static, Option<Published>> {
    PUBLISHED.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The TLS contexts for `config`, built once per config generation and shared by its
/// workers: the files are read once (the workers cannot disagree about them), and the
/// session cache and ticket keys are one per listener, so a client resumes on any worker. A
/// new generation (a reload) reads the files again and starts a new session cache (the
/// ticket keys stay, [`acceptors`]); between
/// reloads, [`check_files`] rotates to changed files. Taken only while building an engine,
/// never on the data path.
pub fn contexts(config: &Arc<Config>) -> Result<Arc<Contexts>, String> {
    contexts_of_lineage(config).map(|(contexts, _)| contexts)
}

/// [`contexts`], with the lineage they are published under.
fn contexts_of_lineage(config: &Arc<Config>) -> Result<(Arc<Contexts>, u64), String> {
    let mut shared = published();
    if let Some(p) = shared.as_ref()
        && p.config.upgrade().is_some_and(|c| Arc::ptr_eq(&c, config))
    {
        return Ok((p.contexts.clone(), p.lineage));
    }
    let lineage = shared.as_ref().map_or(0, |p| p.lineage + 1);
    // Stamped before they are read: a change in between is seen by the next check.
    let files = stamps(&tls_files(config));
    let contexts = Arc::new(Contexts {
        acceptors: acceptors(config, None)?,
        connectors: connectors(config)?,
        matched: matched_connectors(config)?,
        certificates: described(config),
        identities: identities(config),
        local: local_certs(config),
    });
    *shared = Some(Published {
        config: Arc::downgrade(config),
        contexts: contexts.clone(),
        files,
        lineage,
    });
    GENERATION.fetch_add(1, Ordering::Release);
    Ok((contexts, lineage))
}

/// The identity a listener's ticket keys (and, across a rotation, its session cache) are tied
/// to: [`crate::tls_tickets::identity`], plus, for a client CA from a file, a digest of the
/// file's content as read now — so that a CA file rotated on disk, like new CA content over
/// SDS, ends the resumption of sessions the old CA admitted.
fn listener_identity(name: &str, tls: &ListenerTls) -> String {
    let mut identity = crate::tls_tickets::identity(name, tls);
    if let Some(Pem::File(file)) = &tls.client_ca {
        // FNV-1a, as for inline PEM: stable across builds, so that an upgrade's new process
        // finds the keys it is handed. An unreadable file fails the build that reads it anyway.
        let digest = read_pem_file(file).map_or(0, |bytes| {
            bytes.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
                (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
            })
        });
        identity.push_str(&format!("\nclient_ca_content={digest:016x}"));
    }
    identity
}

/// By serving slot (listeners, then filter chains: [`Config::tls_slots`]): the identity of
/// its ticket keys (`None`: no TLS).
fn identities(config: &Config) -> Vec<Option<String>> {
    config
        .tls_slots()
        .into_iter()
        .map(|(tls, _, name)| tls.map(|tls| listener_identity(&name, tls)))
        .collect()
}

/// An xDS update that changed only inline PEM (SDS secrets rotated:
/// [`sluice_core::config::diff::only_inline_pem_differs`]) applied as a rotation, not a
/// reload: contexts built from `next` are published for the serving generation (`current`'s),
/// so new handshakes on every worker use them from now on while listeners, clusters and open
/// connections are untouched (no drain). A listener keeps its session cache and ticket keys
/// unless its client CA changed. On error nothing changed (the message names the field).
pub fn rotate_inline(current: &Arc<Config>, next: &Arc<Config>) -> Result<(), String> {
    let serving = |p: &Published| p.config.upgrade().is_some_and(|c| Arc::ptr_eq(&c, current));
    let (old, lineage) = match published().as_ref() {
        Some(p) if serving(p) => (p.contexts.clone(), p.lineage),
        _ => return Err("no TLS contexts serve the current config".to_owned()),
    };
    let files = stamps(&tls_files(next));
    let contexts = Contexts {
        acceptors: acceptors(next, Some(&old))?,
        connectors: connectors(next)?,
        matched: matched_connectors(next)?,
        certificates: described(next),
        identities: identities(next),
        local: local_certs(next),
    };
    let mut shared = published();
    if !shared.as_ref().is_some_and(serving) {
        return Err("a reload published other TLS contexts meanwhile".to_owned());
    }
    *shared = Some(Published {
        config: Arc::downgrade(next),
        contexts: Arc::new(contexts),
        files,
        lineage,
    });
    GENERATION.fetch_add(1, Ordering::Release);
    drop(shared);
    info!("tls: secrets rotated; new handshakes use them, open connections carry on");
    Ok(())
}

/// The certificates of `config`'s TLS files, read now; an expired one is served (a client
/// may not check, and refusing to start would take the whole listener down) but logged.
fn described(config: &Config) -> Vec<CertFile> {
    let files = crate::tls_certs::describe(config);
    let now = crate::tls_certs::unix_now();
    for f in &files {
        for c in f.certificates.iter().flatten() {
            if c.not_after < now {
                warn!(
                    field = %f.field,
                    file = %f.file,
                    subject = %c.subject,
                    not_after = %crate::tls_certs::rfc3339(c.not_after),
                    "tls: certificate expired"
                );
            }
        }
    }
    files
}

/// The certificates of `config`'s TLS files as its current contexts were built from them (as
/// read now when no worker built contexts for this config). Off the data path: the admin
/// API's `/certs` and expiry gauge.
#[must_use]
pub fn certificates(config: &Arc<Config>) -> Vec<CertFile> {
    if let Some(p) = published().as_ref()
        && p.config.upgrade().is_some_and(|c| Arc::ptr_eq(&c, config))
    {
        return p.contexts.certificates.clone();
    }
    crate::tls_certs::describe(config)
}

/// One worker's view of its config generation's TLS contexts: its own handle on the shared
/// [`Contexts`], replaced when a rotation published new ones for the same config. Checking is
/// one atomic load per connection; the lock is taken once per worker per rotation.
pub struct WorkerTls {
    /// The [`Published::lineage`] of its config generation.
    lineage: u64,
    /// An `Rc` of its own, so that a connection holding the contexts costs a plain increment,
    /// not an atomic one on a count every worker shares.
    #[allow(clippy::redundant_allocation)]
    current: RefCell<Rc<Arc<Contexts>>>,
    /// The [`GENERATION`] `current` is up to date with.
    seen: Cell<u64>,
}

impl WorkerTls {
    /// The contexts of `config` (built now if no worker built them yet).
    pub fn new(config: &Arc<Config>) -> Result<Self, String> {
        let seen = GENERATION.load(Ordering::Acquire);
        let (contexts, lineage) = contexts_of_lineage(config)?;
        Ok(WorkerTls {
            lineage,
            current: RefCell::new(Rc::new(contexts)),
            seen: Cell::new(seen),
        })
    }

    /// The contexts new connections use: the newest rotation of this config's files.
    #[allow(clippy::redundant_allocation)] // on purpose: see `current`.
    pub fn current(&self) -> Rc<Arc<Contexts>> {
        let generation = GENERATION.load(Ordering::Acquire);
        if generation != self.seen.get() {
            self.seen.set(generation);
            let shared = published();
            // Another config's contexts (a reload built the next generation): this engine
            // drains with its own.
            if let Some(p) = shared.as_ref()
                && p.lineage == self.lineage
                && !Arc::ptr_eq(&p.contexts, &self.current.borrow())
            {
                *self.current.borrow_mut() = Rc::new(p.contexts.clone());
            }
        }
        self.current.borrow().clone()
    }
}

/// A TLS file's content when it was looked at: its size and a hash of its bytes, or why it
/// could not be read. Content, not the modification time or the inode: a Kubernetes secret
/// volume swaps a symlink to a new directory, and a copy may keep the old time.
#[derive(Clone, Debug, PartialEq, Eq)]
struct FileStamp {
    file: String,
    content: Result<(usize, u64), String>,
}

/// Every TLS file of `config` (certificate chains, keys, CAs of listeners and clusters), once.
fn tls_files(config: &Config) -> Vec<String> {
    let mut files: Vec<String> = Vec::new();
    // Inline PEM (from xDS) changes only with the config: nothing to watch.
    let mut add = |pem: &Pem| {
        if let Some(f) = pem.file()
            && !files.iter().any(|have| have == f)
        {
            files.push(f.to_owned());
        }
    };
    for (tls, _, _) in config.tls_slots() {
        if let Some(tls) = tls {
            for c in &tls.certificates {
                add(&c.cert_chain);
                add(&c.private_key);
            }
            if let Some(ca) = &tls.client_ca {
                add(ca);
            }
        }
    }
    for c in &config.clusters {
        let matched = c
            .transport_socket_matches
            .iter()
            .filter_map(|m| m.tls.as_deref());
        for tls in c.tls.as_deref().into_iter().chain(matched) {
            add(&tls.ca);
            if let Some(files) = &tls.client_certificate {
                add(&files.cert_chain);
                add(&files.private_key);
            }
        }
    }
    files
}

fn stamps(files: &[String]) -> Vec<FileStamp> {
    use std::hash::{Hash, Hasher};
    files
        .iter()
        .map(|file| FileStamp {
            file: file.clone(),
            content: read_pem_file(file).map(|bytes| {
                let mut h = std::collections::hash_map::DefaultHasher::new();
                bytes.hash(&mut h);
                (bytes.len(), h.finish())
            }),
        })
        .collect()
}

/// What one look at the TLS files found.
#[derive(Debug, PartialEq, Eq)]
pub enum FileCheck {
    /// No TLS, or no config generation yet.
    Nothing,
    /// Every file as before.
    Unchanged,
    /// Files changed and the contexts were rebuilt from them; new handshakes use them.
    Rotated(Vec<String>),
    /// Files changed but cannot be used (the message names the file and the reason); the
    /// previous contexts serve on. The same content is not tried again.
    Failed(Vec<String>, String),
}

/// Looks at the current generation's TLS files once; when their content changed, rebuilds
/// its contexts from the same config and publishes them (a rotation: not a reload — listeners,
/// clusters and open connections are untouched, and the listeners keep their session cache
/// and ticket keys, so clients keep resuming). Counted in [`ROTATIONS_SUCCEEDED`] and
/// [`ROTATIONS_FAILED`], logged. Called by the watcher thread ([`spawn_watcher`]).
pub fn check_files() -> FileCheck {
    let (config, old, before) = {
        let shared = published();
        let Some(p) = shared.as_ref() else {
            return FileCheck::Nothing;
        };
        let Some(config) = p.config.upgrade() else {
            return FileCheck::Nothing;
        };
        (config, p.contexts.clone(), p.files.clone())
    };
    if before.is_empty() {
        return FileCheck::Nothing;
    }
    let now = stamps(&tls_files(&config));
    if now == before {
        return FileCheck::Unchanged;
    }
    let changed: Vec<String> = now
        .iter()
        .filter(|s| !before.contains(s))
        .map(|s| s.file.clone())
        .collect();
    let rebuilt = acceptors(&config, Some(&old)).and_then(|acceptors| {
        Ok(Contexts {
            acceptors,
            connectors: connectors(&config)?,
            matched: matched_connectors(&config)?,
            certificates: described(&config),
            identities: identities(&config),
            local: local_certs(&config),
        })
    });
    let mut shared = published();
    let Some(p) = shared
        .as_mut()
        .filter(|p| p.config.upgrade().is_some_and(|c| Arc::ptr_eq(&c, &config)))
    else {
        // A reload published another generation meanwhile: it read the files itself.
        return FileCheck::Nothing;
    };
    // Either way this content has been dealt with: a failure is not retried (nor counted
    // again) until the files change once more.
    p.files = now;
    match rebuilt {
        Ok(contexts) => {
            p.contexts = Arc::new(contexts);
            GENERATION.fetch_add(1, Ordering::Release);
            drop(shared);
            ROTATIONS_SUCCEEDED.fetch_add(1, Ordering::Relaxed);
            info!(files = ?changed, "tls: certificate files changed; new handshakes use them");
            FileCheck::Rotated(changed)
        }
        Err(e) => {
            drop(shared);
            ROTATIONS_FAILED.fetch_add(1, Ordering::Relaxed);
            warn!(
                files = ?changed,
                error = %e,
                "tls: certificate files changed but cannot be used; the previous ones serve on"
            );
            FileCheck::Failed(changed, e)
        }
    }
}

/// Starts the thread that runs [`check_files`] every `tls_file_check_interval` of the current
/// config (a reload may change it; `0s`: it only looks at the setting, once a second). It
/// holds nothing between checks and lives as long as the process.
pub fn spawn_watcher() -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("sluice-tls-watch".into())
        .spawn(|| {
            loop {
                let interval = published()
                    .as_ref()
                    .and_then(|p| p.config.upgrade())
                    .map_or(Duration::ZERO, |c| c.tls_file_check_interval);
                if interval.is_zero() {
                    std::thread::sleep(Duration::from_secs(1));
                    continue;
                }
                std::thread::sleep(interval);
                check_files();
            }
        })
        .map(drop)
}

/// The connector of each cluster (`None`: plaintext).
pub fn connectors(config: &Config) -> Result<Vec<Option<UpstreamConnector>>, String> {
    config
        .clusters
        .iter()
        .enumerate()
        .map(|(i, c)| match &c.tls {
            None => Ok(None),
            Some(tls) => upstream_connector(c, tls, &format!("clusters[{i}].tls")).map(Some),
        })
        .collect()
}

/// The connector of `tls`, one of cluster `c`'s (`path`: where it is, for messages).
fn upstream_connector(
    c: &ClusterConfig,
    tls: &UpstreamTls,
    path: &str,
) -> Result<UpstreamConnector, String> {
    client_config(tls, path)
        .map(|(config, sni)| {
            // A gRPC health check speaks HTTP/2 whatever the cluster's protocol:
            // its probes offer `h2` alone, on a connector of their own.
            let grpc_health = c
                .health_check
                .as_ref()
                .is_some_and(|hc| matches!(hc.probe, HealthProbe::Grpc { .. }));
            let h2 = grpc_health.then(|| {
                let mut h2 = config.clone();
                h2.alpn_protocols = vec![b"h2".to_vec()];
                TlsConnector::from(Arc::new(h2))
            });
            UpstreamConnector {
                connector: TlsConnector::from(Arc::new(config)),
                h2,
                sni,
            }
        })
        .map_err(|errors| {
            errors
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ")
        })
}

/// Per cluster, by entry of its `transport_socket_matches` (empty: it has none): the
/// connector of each entry (`None`: plaintext). A host's pick (which entry, or the cluster's
/// own `tls`) is not here: it is the host's, held in its slot ([`sluice_core::host::Transport`],
/// read with the host where it is picked), so a host whose labels change takes another slot
/// and these stay as they are.
pub fn matched_connectors(
    config: &Config,
) -> Result<Vec<Box<[Option<UpstreamConnector>]>>, String> {
    config
        .clusters
        .iter()
        .enumerate()
        .map(|(i, c)| {
            c.transport_socket_matches
                .iter()
                .enumerate()
                .map(|(m, entry)| match &entry.tls {
                    None => Ok(None),
                    Some(tls) => upstream_connector(
                        c,
                        tls,
                        &format!("clusters[{i}].transport_socket_matches[{m}].tls"),
                    )
                    .map(Some),
                })
                .collect()
        })
        .collect()
}

impl Contexts {
    /// The URI SANs of the certificate serving slot `slot` presents to a client that asked for
    /// `server_name` (the one [`SniResolver`] picks): `x-forwarded-client-cert`'s `By`.
    #[must_use]
    pub fn local_uri_sans(&self, slot: usize, server_name: Option<&str>) -> &[String] {
        let Some(LocalCerts(certs)) = self.local.get(slot) else {
            return &[];
        };
        let name = server_name.map(str::to_ascii_lowercase);
        let i = choose_certificate(certs.iter().map(|(dns, _)| &dns[..]), name.as_deref());
        certs.get(i).map_or(&[], |(_, uri)| &uri[..])
    }

    /// How to connect to a host of cluster `ci` reached with `transport` (the host's, read
    /// from its slot where it was picked: [`sluice_core::cluster::ClusterState::transport`]):
    /// its TLS connector, or `None` (plaintext) — entry `transport` of the cluster's
    /// `transport_socket_matches`, or the cluster's own `tls` (`transport: None`). Two indexings,
    /// no hashing; once per new upstream connection (and where an HTTP/2 stream starts, for
    /// its `:scheme`), never per HTTP/1.1 request.
    ///
    /// Fails closed: an entry (or cluster) these contexts do not have — a transport index of
    /// another config, which no slot should hold ([`crate::dns::SharedDns::inherit`]) — is an
    /// error (a connect failure), never plaintext.
    pub fn connector(
        &self,
        ci: usize,
        transport: sluice_core::host::Transport,
    ) -> Result<Option<&UpstreamConnector>, NoTransport> {
        let found = match transport {
            Some(entry) => self.matched.get(ci).and_then(|m| m.get(entry)),
            None => self.connectors.get(ci),
        };
        debug_assert!(
            found.is_some(),
            "cluster {ci}: transport {transport:?} is not in its config"
        );
        match found {
            Some(c) => Ok(c.as_ref()),
            None => Err(NoTransport {
                cluster: ci,
                transport,
            }),
        }
    }
}

/// A host's transport that the config does not have ([`Contexts::connector`]): the connect
/// is refused, never made in plaintext.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error(
    "cluster {cluster}: transport {transport:?} is not in the config's \
     transport_socket_matches: refusing to connect (never plaintext)"
)]
pub struct NoTransport {
    /// The cluster's index.
    pub cluster: usize,
    /// The transport asked for (an entry of `transport_socket_matches`, or `None`: the
    /// cluster's own `tls`).
    pub transport: sluice_core::host::Transport,
}

/// How a worker originates TLS to one cluster's hosts.
#[derive(Clone)]
pub struct UpstreamConnector {
    connector: TlsConnector,
    /// The same, offering ALPN `h2` only: the gRPC health probe's (`None`: the cluster has no
    /// gRPC health check).
    h2: Option<TlsConnector>,
    /// The name sent and verified; `None`: the host's IP address is passed to rustls (which
    /// sends no SNI for an address) and `verify_subject_alt_names` decides.
    sni: Option<ServerName<'static>>,
}

impl UpstreamConnector {
    /// The TLS handshake over `stream` to the host at `address`.
    pub async fn connect<S>(
        &self,
        address: std::net::SocketAddr,
        stream: S,
    ) -> std::io::Result<tokio_rustls::client::TlsStream<S>>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        self.connect_with(&self.connector, address, stream).await
    }

    /// [`UpstreamConnector::connect`] offering ALPN `h2` alone, for the gRPC health probe
    /// (the cluster's own offer when it has no gRPC health check).
    pub async fn connect_h2<S>(
        &self,
        address: std::net::SocketAddr,
        stream: S,
    ) -> std::io::Result<tokio_rustls::client::TlsStream<S>>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        let connector = self.h2.as_ref().unwrap_or(&self.connector);
        self.connect_with(connector, address, stream).await
    }

    async fn connect_with<S>(
        &self,
        connector: &TlsConnector,
        address: std::net::SocketAddr,
        stream: S,
    ) -> std::io::Result<tokio_rustls::client::TlsStream<S>>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        let name = self
            .sni
            .clone()
            .unwrap_or_else(|| ServerName::IpAddress(address.ip().into()));
        connector.connect(name, stream).await
    }
}

/// The rustls client configuration for a cluster's `tls` and the server name to send and
/// verify; errors carry paths under `path`.
pub fn client_config(
    tls: &UpstreamTls,
    path: &str,
) -> Result<(ClientConfig, Option<ServerName<'static>>), Vec<ConfigError>> {
    let provider = provider();
    let mut errors = Vec::new();
    // The name must be a DNS name rustls takes as one: never an IP address, never dropped.
    let sni = match &tls.sni {
        None => None,
        Some(name) => match ServerName::try_from(name.clone()) {
            Ok(n @ ServerName::DnsName(_)) => Some(n),
            _ => {
                errors.push(ConfigError {
                    path: format!("{path}.sni"),
                    message: format!("{name:?} is not a DNS name rustls accepts"),
                    position: None,
                });
                None
            }
        },
    };
    let roots = match load_roots(&tls.ca, &format!("{path}.ca")) {
        Ok(r) => Some(r),
        Err(e) => {
            errors.push(e);
            None
        }
    };
    let client_key = match &tls.client_certificate {
        None => None,
        Some(files) => match load_pair(&files.cert_chain, &files.private_key, path) {
            Ok(pair) => Some(pair),
            Err(mut e) => {
                errors.append(&mut e);
                None
            }
        },
    };
    let Some(roots) = roots.filter(|_| errors.is_empty()) else {
        return Err(errors);
    };
    let webpki = rustls::client::WebPkiServerVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .map_err(|e| {
        vec![ConfigError {
            path: format!("{path}.ca"),
            message: format!("{}: {e}", tls.ca),
            position: None,
        }]
    })?;
    // The client offers the suites in this order; the server's policy decides among them.
    let builder =
        ClientConfig::builder_with_provider(with_cipher_suites(provider, &tls.cipher_suites))
            .with_safe_default_protocol_versions()
            .map_err(|e| {
                vec![ConfigError {
                    path: path.to_owned(),
                    message: e.to_string(),
                    position: None,
                }]
            })?;
    let builder = if tls.verify_subject_alt_names.is_empty() {
        builder.with_webpki_verifier(webpki)
    } else {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(SanCheckingServerVerifier {
                inner: webpki,
                allowed: tls.verify_subject_alt_names.clone(),
            }))
    };
    let mut config = match client_key {
        Some((certified, key)) => {
            builder
                .with_client_auth_cert(certified.cert, key)
                .map_err(|e| {
                    vec![ConfigError {
                        path: format!("{path}.private_key"),
                        message: e.to_string(),
                        position: None,
                    }]
                })?
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = tls.alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    Ok((config, sni))
}

/// rustls' chain verification against the cluster's CA, then the upstream's SANs against the
/// cluster's list (instead of a DNS name): how an upstream proves a SPIFFE identity.
#[derive(Debug)]
pub struct SanCheckingServerVerifier {
    inner: Arc<rustls::client::WebPkiServerVerifier>,
    allowed: Vec<String>,
}

impl rustls::client::danger::ServerCertVerifier for SanCheckingServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, Error> {
        // rustls verifies the chain first and the name after: success or a name error both
        // mean the chain verified — and then the SAN list alone decides the identity (a
        // certificate valid for the name passed to rustls, such as the host's IP address, is
        // not enough: that is how a reused pod IP would pass for the service).
        match self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            Ok(_)
            | Err(Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => san_admitted(end_entity, &self.allowed)
                .map(|()| rustls::client::danger::ServerCertVerified::assertion()),
            Err(e) => Err(e),
        }
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// An upstream stream, plaintext or TLS.
pub enum MaybeTls<S> {
    /// Plaintext.
    Plain(S),
    /// TLS originated by the proxy.
    Tls(Box<tokio_rustls::client::TlsStream<S>>),
}

impl<S> tokio::io::AsyncRead for MaybeTls<S>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => std::pin::Pin::new(s).poll_read(cx, buf),
            MaybeTls::Tls(s) => std::pin::Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl<S> tokio::io::AsyncWrite for MaybeTls<S>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => std::pin::Pin::new(s).poll_write(cx, buf),
            MaybeTls::Tls(s) => std::pin::Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }
    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => std::pin::Pin::new(s).poll_flush(cx),
            MaybeTls::Tls(s) => std::pin::Pin::new(s.as_mut()).poll_flush(cx),
        }
    }
    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => std::pin::Pin::new(s).poll_shutdown(cx),
            MaybeTls::Tls(s) => std::pin::Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// The acceptor of each serving slot — each listener, then each filter chain
/// ([`Config::tls_slots`]) — (`None`: no TLS). A file that cannot be loaded any more (it
/// was checked when the config was) fails the whole build. Each listener seals tickets with
/// its own keys ([`crate::tls_tickets`]): the ones it had before this build (a rotation, a
/// reload that keeps its identity, or the previous process after an upgrade), else new ones.
/// With `previous` (the same generation's contexts, before a rotation), each listener also
/// keeps its session cache, unless its identity changed (new client CA content).
pub fn acceptors(
    config: &Config,
    previous: Option<&Contexts>,
) -> Result<Vec<Option<TlsAcceptor>>, String> {
    let slots = config.tls_slots();
    // The ticket keys kept: those of listeners that issue tickets (the others' go).
    let identities: Vec<String> = slots
        .iter()
        .filter_map(|(tls, _, name)| {
            let tls = (*tls)?;
            tls.session_tickets.then(|| listener_identity(name, tls))
        })
        .collect();
    let built = slots
        .iter()
        .enumerate()
        .map(|(i, (tls, path, name))| match tls {
            None => Ok(None),
            Some(tls) => {
                let identity = listener_identity(name, tls);
                // No keys for a listener that issues no tickets: none are kept or handed over,
                // so a ticket from before it turned them off never resumes after it turns
                // them on again.
                let ticketer = if tls.session_tickets {
                    Some(
                        crate::tls_tickets::for_listener(&identity)
                            .map_err(|e| format!("{path}: {e}"))?,
                    )
                } else {
                    None
                };
                server_config(tls, path)
                    .map(|mut c| {
                        if let Some(ticketer) = ticketer {
                            c.ticketer = ticketer;
                        }
                        if tls.session_cache
                            && let Some(p) = previous
                            && let Some(Some(old)) = p.acceptors.get(i)
                            && old.config().session_storage.can_cache()
                            && p.identities.get(i).and_then(Option::as_deref)
                                == Some(identity.as_str())
                        {
                            c.session_storage = old.config().session_storage.clone();
                        }
                        Some(TlsAcceptor::from(Arc::new(c)))
                    })
                    .map_err(|errors| {
                        errors
                            .iter()
                            .map(ToString::to_string)
                            .collect::<Vec<_>>()
                            .join("; ")
                    })
            }
        })
        .collect();
    // Listeners this config no longer has (or whose admission rules changed) are not handed
    // over; the draining generation keeps its keys in its contexts.
    crate::tls_tickets::retain(&identities);
    built
}

/// The rustls server configuration for `tls`; errors carry paths under `path`.
pub fn server_config(tls: &ListenerTls, path: &str) -> Result<ServerConfig, Vec<ConfigError>> {
    let provider = provider();
    let mut errors = Vec::new();
    let mut certs = Vec::new();
    for (i, files) in tls.certificates.iter().enumerate() {
        let at = format!("{path}.certificates[{i}]");
        match load_pair(&files.cert_chain, &files.private_key, &at) {
            Ok((certified, _)) => match dns_sans(&certified.cert[0]) {
                Ok(names) => certs.push((names, Arc::new(certified))),
                Err(e) => errors.push(ConfigError {
                    path: format!("{at}.cert_chain"),
                    message: e,
                    position: None,
                }),
            },
            Err(mut e) => errors.append(&mut e),
        }
    }
    let verifier: Option<Arc<dyn ClientCertVerifier>> = match &tls.client_ca {
        None => None,
        Some(file) => match load_roots(file, &format!("{path}.client_ca")) {
            Ok(roots) => {
                let builder =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
                let builder = if tls.require_client_certificate {
                    builder
                } else {
                    builder.allow_unauthenticated()
                };
                match builder.build() {
                    Ok(inner) => Some(Arc::new(SanCheckingVerifier {
                        inner,
                        allowed: tls.verify_subject_alt_names.clone(),
                    })),
                    Err(e) => {
                        errors.push(ConfigError {
                            path: format!("{path}.client_ca"),
                            message: format!("{file}: {e}"),
                            position: None,
                        });
                        None
                    }
                }
            }
            Err(e) => {
                errors.push(e);
                None
            }
        },
    };
    if !errors.is_empty() {
        return Err(errors);
    }
    let versions: &[&rustls::SupportedProtocolVersion] = match (tls.min_version, tls.max_version) {
        (TlsVersion::Tls12, TlsVersion::Tls13) => {
            &[&rustls::version::TLS13, &rustls::version::TLS12]
        }
        (TlsVersion::Tls12, TlsVersion::Tls12) => &[&rustls::version::TLS12],
        (TlsVersion::Tls13, _) => &[&rustls::version::TLS13],
    };
    let provider = if tls.ecdh_curves.is_empty() {
        provider
    } else {
        let mut p = (*provider).clone();
        p.kx_groups = tls.ecdh_curves.iter().map(|c| kx_group(*c)).collect();
        Arc::new(p)
    };
    let provider = with_cipher_suites(provider, &tls.cipher_suites);
    // A certificate whose key signs for none of the TLS 1.2 suites accepted would refuse every
    // TLS 1.2 client it is chosen for (an RSA key with ECDSA suites only, or the reverse).
    if tls.min_version == TlsVersion::Tls12 {
        for (i, (_, certified)) in certs.iter().enumerate() {
            let algorithm = certified.key.algorithm();
            let usable = provider.cipher_suites.iter().any(|s| {
                s.version() == &rustls::version::TLS12
                    && s.usable_for_signature_algorithm(algorithm)
            });
            if !usable {
                return Err(vec![ConfigError {
                    path: format!("{path}.cipher_suites"),
                    message: format!(
                        "no TLS 1.2 suite accepted here works with certificates[{i}]'s {algorithm:?} \
                         key: every TLS 1.2 client given that certificate would be refused; \
                         list a suite for it (ECDHE-ECDSA-… for an ECDSA key, ECDHE-RSA-… for \
                         RSA), or admit TLS 1.3 only (`min_version: 1.3`)"
                    ),
                    position: None,
                }]);
            }
        }
    }
    let builder = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .map_err(|e| {
            vec![ConfigError {
                path: format!("{path}.min_version"),
                message: e.to_string(),
                position: None,
            }]
        })?;
    let builder = match verifier {
        Some(v) => builder.with_client_cert_verifier(v),
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_cert_resolver(Arc::new(SniResolver { certs }));
    config.alpn_protocols = tls.alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    // The listener's order of suites wins over the client's unless `prefer_client_ciphers`:
    // in TLS 1.2 as in Envoy; in TLS 1.3 Sluice's own choice (BoringSSL follows the client
    // there) — OpenSSL clients offer AES-256-GCM-SHA384 first, whose SHA-384 costs a server
    // without SHA-512 instructions more per handshake than AES-128-GCM-SHA256's SHA-256.
    config.ignore_client_order = !tls.prefer_client_ciphers;
    if !tls.session_cache {
        config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
        if !tls.session_tickets {
            // No resumption at all: no TLS 1.3 ticket is worth sending.
            config.send_tls13_tickets = 0;
        }
    }
    // Tickets are sealed by the listener's keys, set by `acceptors`: this config may only be a
    // check (`sluice validate`), which must not make keys.
    Ok(config)
}

/// A certificate chain and the private key that goes with its leaf, from their PEM files:
/// each file read and parsed, the chain not empty, the key matching the leaf's public key.
/// Errors are at `{path}.cert_chain` and `{path}.private_key` and name the files. Both the
/// listener certificates and a cluster's client certificate load through here.
fn load_pair(
    cert_file: &Pem,
    key_file: &Pem,
    path: &str,
) -> Result<(CertifiedKey, PrivateKeyDer<'static>), Vec<ConfigError>> {
    let at = |field: &str, message: String| ConfigError {
        path: format!("{path}.{field}"),
        message,
        position: None,
    };
    let chain = read_pem(cert_file)
        .and_then(|pem| parse_chain(&pem).map_err(|e| format!("{cert_file}: {e}")));
    let key =
        read_pem(key_file).and_then(|pem| parse_key(&pem).map_err(|e| format!("{key_file}: {e}")));
    match (chain, key) {
        (Ok(chain), Ok(key)) => match CertifiedKey::from_der(chain, key.clone_key(), &provider()) {
            Ok(certified) => Ok((certified, key)),
            Err(e) => Err(vec![at(
                "private_key",
                format!("{key_file} does not go with the certificate {cert_file}: {e}"),
            )]),
        },
        (chain, key) => Err(chain
            .err()
            .map(|e| at("cert_chain", e))
            .into_iter()
            .chain(key.err().map(|e| at("private_key", e)))
            .collect()),
    }
}

/// The trust anchors in a PEM file of CA certificates (a listener's `client_ca`, a cluster's
/// `ca`); the error is at `path` and names the file.
fn load_roots(file: &Pem, path: &str) -> Result<RootCertStore, ConfigError> {
    read_pem(file)
        .and_then(|pem| parse_roots(&pem).map_err(|e| format!("{file}: {e}")))
        .map_err(|message| ConfigError {
            path: path.to_owned(),
            message,
            position: None,
        })
}

/// Every certificate of a PEM file as a trust anchor; at least one.
fn parse_roots(pem: &[u8]) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    for cert in parse_certificates(pem)? {
        roots
            .add(cert)
            .map_err(|e| format!("not a CA certificate: {e}"))?;
    }
    Ok(roots)
}

/// Whether a verified leaf carries one of `allowed` (DNS names, compared without case, or
/// URIs such as SPIFFE IDs, compared exactly) — the identity check both SAN-checking
/// verifiers make after rustls verified the chain. Empty `allowed`: any certificate.
fn san_admitted(cert: &CertificateDer<'_>, allowed: &[String]) -> Result<(), Error> {
    if allowed.is_empty() {
        return Ok(());
    }
    let sans = sans(cert).map_err(|_| Error::InvalidCertificate(CertificateError::BadEncoding))?;
    let admitted = sans.iter().any(|san| match san {
        San::Dns(d) => allowed.iter().any(|a| a.eq_ignore_ascii_case(d)),
        San::Uri(u) => allowed.iter().any(|a| a == u),
    });
    if admitted {
        Ok(())
    } else {
        Err(Error::InvalidCertificate(CertificateError::NotValidForName))
    }
}

/// The bytes of a PEM file or of inline PEM, or why not (the message names the file or the
/// secret, never inline bytes).
pub(crate) fn read_pem(pem: &Pem) -> Result<std::borrow::Cow<'_, [u8]>, String> {
    match pem {
        Pem::File(file) => read_pem_file(file).map(std::borrow::Cow::Owned),
        // `text`, not `pem`: the message names `pem` (its secret), never the text.
        Pem::Inline { pem: text, .. } if text.len() as u64 > MAX_PEM_BYTES => {
            Err(format!("{pem}: larger than {MAX_PEM_BYTES} bytes"))
        }
        Pem::Inline { pem: text, .. } => Ok(std::borrow::Cow::Borrowed(text.as_bytes())),
    }
}

/// A PEM file's bytes, or why not (the message names the file).
pub(crate) fn read_pem_file(file: &str) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let f = std::fs::File::open(file).map_err(|e| format!("cannot read {file}: {e}"))?;
    let mut bytes = Vec::new();
    f.take(MAX_PEM_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read {file}: {e}"))?;
    if bytes.len() as u64 > MAX_PEM_BYTES {
        return Err(format!("{file}: larger than {MAX_PEM_BYTES} bytes"));
    }
    Ok(bytes)
}

/// The DNS SANs of a certificate, lowercase.
fn dns_sans(cert: &CertificateDer<'_>) -> Result<Vec<String>, String> {
    Ok(sans(cert)?
        .into_iter()
        .filter_map(|san| match san {
            San::Dns(name) => Some(name),
            San::Uri(_) => None,
        })
        .collect())
}

fn sans(cert: &CertificateDer<'_>) -> Result<Vec<San>, String> {
    subject_alt_names(cert.as_ref())
}

/// Chooses the certificate per handshake by the client's server name.
#[derive(Debug)]
pub struct SniResolver {
    /// Each certificate with its DNS SANs (lowercase), in config order.
    certs: Vec<(Vec<String>, Arc<CertifiedKey>)>,
}

impl SniResolver {
    /// The index of the certificate for `server_name` (lowercase): [`choose_certificate`].
    fn choose(&self, server_name: Option<&str>) -> usize {
        choose_certificate(self.certs.iter().map(|(sans, _)| &sans[..]), server_name)
    }
}

/// Of certificates with these DNS SANs (lowercase), the index of the one for `server_name`
/// (lowercase): exact SAN, then a wildcard SAN covering its first label, else the first.
fn choose_certificate<'a>(
    dns_sans: impl Iterator<Item = &'a [String]> + Clone,
    server_name: Option<&str>,
) -> usize {
    let Some(name) = server_name else {
        return 0;
    };
    let name = name.strip_suffix('.').unwrap_or(name);
    if let Some(i) = dns_sans
        .clone()
        .position(|sans| sans.iter().any(|s| s == name))
    {
        return i;
    }
    let parent = name.split_once('.').map(|(_, rest)| rest);
    parent
        .and_then(|parent| {
            dns_sans.clone().position(|sans| {
                sans.iter()
                    .any(|s| s.strip_prefix("*.").is_some_and(|w| w == parent))
            })
        })
        .unwrap_or(0)
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let name = client_hello.server_name().map(str::to_ascii_lowercase);
        self.certs
            .get(self.choose(name.as_deref()))
            .map(|(_, key)| key.clone())
    }
}

/// rustls' chain verification, then the listener's SAN list on the leaf.
#[derive(Debug)]
pub struct SanCheckingVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    /// DNS names or URIs; empty: any verified certificate.
    allowed: Vec<String>,
}

impl ClientCertVerifier for SanCheckingVerifier {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }
    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }
    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        san_admitted(end_entity, &self.allowed).map(|()| verified)
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// How a TLS handshake on a listener ended (the counter label).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HandshakeOutcome {
    /// Completed.
    Ok,
    /// mTLS: the client presented no certificate.
    NoClientCertificate,
    /// mTLS: the client certificate does not chain to `client_ca` (or is expired, revoked…).
    UnknownCa,
    /// mTLS: the client certificate has none of `verify_subject_alt_names`.
    BadSan,
    /// No TLS version (or cipher suite) in common.
    Version,
    /// The client offered ALPN protocols, none of the listener's.
    Alpn,
    /// Not complete within `handshake_timeout`.
    Timeout,
    /// The client closed or reset the connection during the handshake (a TCP health probe
    /// that connects and closes lands here).
    Closed,
    /// The drain deadline passed during the handshake (reload, upgrade, stop).
    Drained,
    /// Anything else: not TLS, a malformed message.
    Other,
}

impl HandshakeOutcome {
    /// Every outcome, in counter order.
    pub const ALL: [HandshakeOutcome; 10] = [
        HandshakeOutcome::Ok,
        HandshakeOutcome::NoClientCertificate,
        HandshakeOutcome::UnknownCa,
        HandshakeOutcome::BadSan,
        HandshakeOutcome::Version,
        HandshakeOutcome::Alpn,
        HandshakeOutcome::Timeout,
        HandshakeOutcome::Closed,
        HandshakeOutcome::Drained,
        HandshakeOutcome::Other,
    ];

    /// The label.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            HandshakeOutcome::Ok => "ok",
            HandshakeOutcome::NoClientCertificate => "no_client_certificate",
            HandshakeOutcome::UnknownCa => "unknown_ca",
            HandshakeOutcome::BadSan => "bad_san",
            HandshakeOutcome::Version => "version",
            HandshakeOutcome::Alpn => "alpn",
            HandshakeOutcome::Timeout => "timeout",
            HandshakeOutcome::Closed => "closed",
            HandshakeOutcome::Drained => "drained",
            HandshakeOutcome::Other => "other",
        }
    }

    /// What a failed handshake's I/O error (tokio-rustls wraps the rustls error) means.
    #[must_use]
    pub fn of_error(e: &std::io::Error) -> HandshakeOutcome {
        let Some(error) = e.get_ref().and_then(|inner| inner.downcast_ref::<Error>()) else {
            return match e.kind() {
                std::io::ErrorKind::UnexpectedEof
                | std::io::ErrorKind::ConnectionReset
                | std::io::ErrorKind::ConnectionAborted
                | std::io::ErrorKind::BrokenPipe => HandshakeOutcome::Closed,
                _ => HandshakeOutcome::Other,
            };
        };
        match error {
            Error::NoCertificatesPresented => HandshakeOutcome::NoClientCertificate,
            Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            ) => HandshakeOutcome::BadSan,
            Error::InvalidCertificate(_) => HandshakeOutcome::UnknownCa,
            Error::NoApplicationProtocol => HandshakeOutcome::Alpn,
            Error::PeerIncompatible(
                PeerIncompatible::Tls12NotOffered
                | PeerIncompatible::Tls12NotOfferedOrEnabled
                | PeerIncompatible::Tls13RequiredForQuic
                | PeerIncompatible::SupportedVersionsExtensionRequired
                | PeerIncompatible::NoCipherSuitesInCommon
                | PeerIncompatible::NoKxGroupsInCommon,
            ) => HandshakeOutcome::Version,
            _ => HandshakeOutcome::Other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The documented default groups are what the provider offers when a listener names none,
    /// in its order (a rustls upgrade that changes them must change the docs).
    #[test]
    fn the_documented_default_curves_are_the_providers() {
        use sluice_core::config::tls::DEFAULT_ECDH_CURVES;
        let provider = provider();
        let named: Vec<_> = DEFAULT_ECDH_CURVES
            .iter()
            .map(|c| kx_group(*c).name())
            .collect();
        let offered: Vec<_> = provider.kx_groups.iter().map(|g| g.name()).collect();
        assert_eq!(named, offered);
    }

    fn key(names: &[&str]) -> (Vec<String>, Arc<CertifiedKey>) {
        let cert = rcgen::generate_simple_self_signed(
            names.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>(),
        )
        .unwrap();
        let der = cert.cert.der().clone();
        let key = PrivateKeyDer::try_from(cert.signing_key.serialize_der()).unwrap();
        let certified = CertifiedKey::from_der(vec![der], key, &provider()).unwrap();
        (dns_sans(&certified.cert[0]).unwrap(), Arc::new(certified))
    }

    /// Issue 13 (review, HIGH): a transport index the config does not have is never
    /// plaintext: a connect error (and a debug assertion: no slot should hold one).
    #[test]
    fn a_transport_the_config_does_not_have_fails_closed() {
        let config = Arc::new(
            Config::from_yaml(
                "listeners:\n  - { name: t, address: 127.0.0.1:1, tcp_proxy: { cluster: a } }\nclusters:\n  - { name: a, hosts: [ { address: 127.0.0.1:9 } ], \
                 transport_socket_matches: [ { name: plain } ] }\n",
            )
            .unwrap(),
        );
        let tls = WorkerTls::new(&config).unwrap();
        let contexts = tls.current();
        assert!(
            matches!(contexts.connector(0, Some(0)), Ok(None)),
            "entry 0: plaintext"
        );
        assert!(
            matches!(contexts.connector(0, None), Ok(None)),
            "no tls of its own"
        );
        let unknown = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            contexts.connector(0, Some(1)).map(|c| c.is_some())
        }));
        if cfg!(debug_assertions) {
            assert!(unknown.is_err(), "a debug build asserts");
        } else {
            assert!(matches!(unknown, Ok(Err(_))), "an error, not plaintext");
        }
    }

    #[test]
    fn the_certificate_is_chosen_exact_then_wildcard_then_first() {
        let r = SniResolver {
            certs: vec![
                key(&["default.example"]),
                key(&["*.example.com"]),
                key(&["api.example.com", "API2.example.com"]),
            ],
        };
        assert_eq!(r.choose(Some("api.example.com")), 2);
        assert_eq!(r.choose(Some("api2.example.com")), 2);
        assert_eq!(r.choose(Some("web.example.com")), 1);
        assert_eq!(r.choose(Some("web.example.com.")), 1);
        // A wildcard covers one label only.
        assert_eq!(r.choose(Some("a.b.example.com")), 0);
        assert_eq!(r.choose(Some("example.com")), 0);
        assert_eq!(r.choose(None), 0);
    }

    /// Oversized inline PEM: the message names the secret, never the text (issue 13, H1).
    #[test]
    fn oversized_inline_pem_is_refused_naming_its_secret_not_its_text() {
        let text = format!(
            "-----BEGIN PRIVATE KEY-----\nBBBB\n-----END PRIVATE KEY-----\n{}",
            "# padding\n".repeat(150_000)
        );
        let pem = Pem::Inline {
            secret: Some("web-key".into()),
            pem: text.into(),
        };
        let e = read_pem(&pem).unwrap_err();
        assert_eq!(e, "sds secret \"web-key\": larger than 1048576 bytes");
        // `/certs` reads through the same function.
        assert_eq!(crate::tls_certs::read(&pem).unwrap_err(), e);
    }

    /// A client CA file rotated on disk is a new identity (new ticket keys, no session cache
    /// kept): the old CA's clients cannot resume.
    #[test]
    fn a_client_ca_file_with_new_content_is_a_new_identity() {
        use sluice_core::config::tls::{CertificateFiles, DEFAULT_HANDSHAKE_TIMEOUT};
        let path = std::env::temp_dir().join(format!("sluice-ca-id-{}.pem", std::process::id()));
        let tls = ListenerTls {
            certificates: vec![CertificateFiles {
                cert_chain: Pem::File("a.pem".into()),
                private_key: Pem::File("a.key".into()),
            }],
            alpn: Vec::new(),
            client_ca: Some(Pem::File(path.display().to_string())),
            require_client_certificate: true,
            verify_subject_alt_names: Vec::new(),
            min_version: TlsVersion::Tls12,
            max_version: TlsVersion::Tls13,
            ecdh_curves: Vec::new(),
            cipher_suites: Vec::new(),
            prefer_client_ciphers: false,
            session_tickets: true,
            session_cache: true,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
        };
        std::fs::write(&path, "-----BEGIN CERTIFICATE-----\nAAAA\n").unwrap();
        let old = listener_identity("in", &tls);
        assert_eq!(listener_identity("in", &tls), old);
        std::fs::write(&path, "-----BEGIN CERTIFICATE-----\nBBBB\n").unwrap();
        assert_ne!(listener_identity("in", &tls), old);
        let _ = std::fs::remove_file(&path);
    }

    /// A filter chain's TLS files are checked like a listener's, reported at the chain's path;
    /// the chain's contexts come after the listeners' (its serving slot).
    #[test]
    fn a_filter_chains_tls_is_checked_at_its_path_and_built_in_its_slot() {
        let yaml = "listeners:
  - name: l
    address: 127.0.0.1:1
    filter_chains:
      - filter_chain_match: { server_names: [a.example] }
        tcp_proxy: { cluster: c }
      - filter_chain_match: { server_names: [b.example] }
        tls: { certificates: [ { cert_chain: /nonexistent/b.pem, private_key: /nonexistent/b.key } ] }
        tcp_proxy: { cluster: c }
clusters:
  - { name: c, hosts: [ { address: 127.0.0.1:2 } ] }
";
        let config = Config::from_yaml(yaml).unwrap();
        let errors: Vec<String> = check_config(&config)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert!(
            !errors.is_empty()
                && errors
                    .iter()
                    .all(|e| e.starts_with("listeners[0].filter_chains[1].tls.certificates[0].")),
            "{errors:?}"
        );
        let slots = config.tls_slots();
        assert_eq!(slots.len(), 3, "one listener, two chains");
        assert!(slots[0].0.is_none() && slots[1].0.is_none() && slots[2].0.is_some());
        assert_eq!(slots[2].2, "l#filter_chains[1]");
    }

    #[test]
    fn sans_are_read_as_dns_names_and_uris() {
        let mut params = rcgen::CertificateParams::new(vec!["Svc.Example".to_owned()]).unwrap();
        params.subject_alt_names.push(rcgen::SanType::URI(
            rcgen::string::Ia5String::try_from("spiffe://cluster.local/ns/default/sa/client")
                .unwrap(),
        ));
        let signing = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&signing).unwrap();
        assert_eq!(
            sans(cert.der()).unwrap(),
            [
                San::Dns("svc.example".into()),
                San::Uri("spiffe://cluster.local/ns/default/sa/client".into())
            ]
        );
    }
}

/// A whole handshake between a rustls client and server in memory; the server's side once
/// done, or the first error either side met.
#[cfg(test)]
fn in_memory_handshake(
    server: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
) -> Result<rustls::ServerConnection, rustls::Error> {
    use rustls::{ClientConnection, ServerConnection};
    let mut c = ClientConnection::new(client, "localhost".try_into().unwrap())?;
    let mut s = ServerConnection::new(server)?;
    for _ in 0..10 {
        let mut buf = Vec::new();
        while c.wants_write() {
            c.write_tls(&mut buf).unwrap();
        }
        if !buf.is_empty() {
            s.read_tls(&mut &buf[..]).unwrap();
            s.process_new_packets()?;
        }
        let mut buf = Vec::new();
        while s.wants_write() {
            s.write_tls(&mut buf).unwrap();
        }
        if !buf.is_empty() {
            c.read_tls(&mut &buf[..]).unwrap();
            c.process_new_packets()?;
        }
        if !c.is_handshaking() && !s.is_handshaking() && !s.wants_write() {
            break;
        }
    }
    Ok(s)
}

/// A self-signed certificate for `localhost` written as `dir/c.pem` and `dir/k.pem`, and the
/// roots that trust it.
#[cfg(test)]
fn self_signed_in(dir: &std::path::Path) -> RootCertStore {
    std::fs::create_dir_all(dir).unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    std::fs::write(dir.join("c.pem"), cert.cert.pem()).unwrap();
    std::fs::write(dir.join("k.pem"), cert.signing_key.serialize_pem()).unwrap();
    let mut roots = RootCertStore::empty();
    roots.add(cert.cert.der().clone()).unwrap();
    roots
}

/// The server configuration [`acceptors`] builds for a `tcp_proxy` listener `name` over
/// [`self_signed_in`]'s files, with `extra` (YAML lines) in its `tls`. The name keys the
/// process-wide ticket keys: each test module uses its own.
#[cfg(test)]
fn test_listener(name: &str, dir: &std::path::Path, extra: &str) -> Arc<ServerConfig> {
    let yaml = format!(
        "listeners:\n  - name: {name}\n    address: 127.0.0.1:1\n    tls:\n      certificates: [ {{ cert_chain: {d}/c.pem, private_key: {d}/k.pem }} ]\n{extra}    tcp_proxy: {{ cluster: a }}\nclusters:\n  - {{ name: a, hosts: [ {{ address: 127.0.0.1:9 }} ] }}\n",
        d = dir.display()
    );
    let config = Config::from_yaml(&yaml).unwrap();
    let built = acceptors(&config, None).unwrap();
    built[0].as_ref().unwrap().config().clone()
}

/// Which cipher suite a listener picks and which ones a cluster offers, with real rustls
/// handshakes in memory.
#[cfg(test)]
mod cipher_suite_choice {
    use super::*;
    use rustls::crypto::aws_lc_rs::cipher_suite as cs;

    fn listener(dir: &std::path::Path, extra: &str) -> Arc<ServerConfig> {
        test_listener("cipher_suite_choice", dir, extra)
    }

    /// A client that offers `suites` in that order, as OpenSSL offers AES-256 first.
    fn client(
        roots: &RootCertStore,
        suites: &[rustls::SupportedCipherSuite],
        tls12_only: bool,
    ) -> Arc<ClientConfig> {
        let mut p = (*provider()).clone();
        p.cipher_suites = suites.to_vec();
        let versions: &[&rustls::SupportedProtocolVersion] = if tls12_only {
            &[&rustls::version::TLS12]
        } else {
            &[&rustls::version::TLS13, &rustls::version::TLS12]
        };
        Arc::new(
            ClientConfig::builder_with_provider(Arc::new(p))
                .with_protocol_versions(versions)
                .unwrap()
                .with_root_certificates(roots.clone())
                .with_no_client_auth(),
        )
    }

    fn negotiated(server: Arc<ServerConfig>, client: Arc<ClientConfig>) -> rustls::CipherSuite {
        in_memory_handshake(server, client)
            .unwrap()
            .negotiated_cipher_suite()
            .unwrap()
            .suite()
    }

    /// The listener's order wins over the client's: by default AES-128-GCM (Sluice's order;
    /// Envoy's in TLS 1.2), and what `cipher_suites` lists otherwise; with
    /// `prefer_client_ciphers` the client's; a TLS 1.2 client with no listed suite is refused,
    /// and a certificate no listed TLS 1.2 suite works with is refused by the config; a cluster
    /// offers its list (TLS 1.3 defaults kept when it lists only TLS 1.2 suites).
    #[test]
    fn the_listeners_order_picks_the_suite_and_a_cluster_offers_its_list() {
        let dir = std::env::temp_dir().join(format!("sluice-suites-{}", std::process::id()));
        let roots = self_signed_in(&dir);
        let openssl_order = [
            cs::TLS13_AES_256_GCM_SHA384,
            cs::TLS13_CHACHA20_POLY1305_SHA256,
            cs::TLS13_AES_128_GCM_SHA256,
            cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
            cs::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
            cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        ];
        let defaults = listener(&dir, "");
        assert_eq!(
            negotiated(defaults.clone(), client(&roots, &openssl_order, false)),
            rustls::CipherSuite::TLS13_AES_128_GCM_SHA256
        );
        assert_eq!(
            negotiated(defaults, client(&roots, &openssl_order, true)),
            rustls::CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
        );
        let listed = listener(
            &dir,
            "      cipher_suites: [TLS_CHACHA20_POLY1305_SHA256, ECDHE-ECDSA-AES256-GCM-SHA384]\n",
        );
        assert_eq!(
            negotiated(listed.clone(), client(&roots, &openssl_order, false)),
            rustls::CipherSuite::TLS13_CHACHA20_POLY1305_SHA256
        );
        assert_eq!(
            negotiated(listed.clone(), client(&roots, &openssl_order, true)),
            rustls::CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384
        );
        // With prefer_client_ciphers, the client's order among the accepted ones.
        let client_order = listener(&dir, "      prefer_client_ciphers: true\n");
        assert_eq!(
            negotiated(client_order.clone(), client(&roots, &openssl_order, false)),
            rustls::CipherSuite::TLS13_AES_256_GCM_SHA384
        );
        assert_eq!(
            negotiated(client_order, client(&roots, &openssl_order, true)),
            rustls::CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384
        );
        // An ECDSA certificate with only RSA TLS 1.2 suites would refuse every TLS 1.2
        // client: the config is refused, naming the field; fine on a TLS 1.3-only listener.
        let yaml = |extra: &str| {
            format!(
                "listeners:\n  - name: cipher_suite_choice\n    address: 127.0.0.1:1\n    tls:\n      certificates: [ {{ cert_chain: {d}/c.pem, private_key: {d}/k.pem }} ]\n      cipher_suites: [ECDHE-RSA-AES128-GCM-SHA256]\n{extra}    tcp_proxy: {{ cluster: a }}\nclusters:\n  - {{ name: a, hosts: [ {{ address: 127.0.0.1:9 }} ] }}\n",
                d = dir.display()
            )
        };
        let errors = check_config(&Config::from_yaml(&yaml("")).unwrap());
        assert!(
            errors.len() == 1
                && errors[0].path == "listeners[0].tls.cipher_suites"
                && errors[0].message.contains("certificates[0]'s ECDSA key"),
            "{errors:?}"
        );
        assert!(
            check_config(&Config::from_yaml(&yaml("      min_version: 1.3\n")).unwrap()).is_empty()
        );
        // A TLS 1.2 client that offers none of the listed TLS 1.2 suites is refused.
        let refused = in_memory_handshake(
            listed,
            client(&roots, &[cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256], true),
        );
        assert!(
            matches!(
                refused,
                Err(rustls::Error::PeerIncompatible(
                    rustls::PeerIncompatible::NoCipherSuitesInCommon
                ))
            ),
            "{refused:?}"
        );
        // A cluster offers what it lists; TLS 1.3's defaults stay with a TLS 1.2 list.
        let yaml = format!(
            "listeners:\n  - {{ name: l, address: 127.0.0.1:1, tcp_proxy: {{ cluster: a }} }}\nclusters:\n  - {{ name: a, hosts: [ {{ address: 127.0.0.1:9 }} ], tls: {{ ca: {d}/c.pem, sni: localhost, cipher_suites: [ECDHE-ECDSA-AES256-GCM-SHA384] }} }}\n",
            d = dir.display()
        );
        let config = Config::from_yaml(&yaml).unwrap();
        let (offered, _) = client_config(config.clusters[0].tls.as_deref().unwrap(), "c").unwrap();
        let names: Vec<_> = offered
            .crypto_provider()
            .cipher_suites
            .iter()
            .map(|s| s.suite())
            .collect();
        assert_eq!(
            names,
            [
                rustls::CipherSuite::TLS13_AES_128_GCM_SHA256,
                rustls::CipherSuite::TLS13_AES_256_GCM_SHA384,
                rustls::CipherSuite::TLS13_CHACHA20_POLY1305_SHA256,
                rustls::CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384
            ]
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// Resumption across reloads that change what a session was made under, with real rustls
/// handshakes in memory through [`acceptors`] (the keys registry is process-wide, as in a
/// running proxy).
#[cfg(test)]
mod resumption_across_reloads {
    use super::*;
    use rustls::{ClientConfig, HandshakeKind};

    fn acceptor(dir: &std::path::Path, extra: &str) -> Arc<ServerConfig> {
        test_listener("resumption_across_reloads", dir, extra)
    }

    /// One TLS 1.2 handshake; what kind it was.
    fn handshake(server: Arc<ServerConfig>, client: Arc<ClientConfig>) -> HandshakeKind {
        in_memory_handshake(server, client)
            .unwrap()
            .handshake_kind()
            .unwrap()
    }

    /// A TLS 1.2 resumption makes no new key exchange, so a session made under a group list
    /// does not resume under a narrower one; and a listener that turned tickets off and on
    /// again does not accept a ticket from before.
    #[test]
    fn sessions_do_not_resume_under_narrower_groups_or_across_a_tickets_off_reload() {
        let dir = std::env::temp_dir().join(format!("sluice-resume-{}", std::process::id()));
        let roots = self_signed_in(&dir);
        let client = Arc::new(
            ClientConfig::builder_with_provider(provider())
                .with_protocol_versions(&[&rustls::version::TLS12])
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth(),
        );
        let x25519 = acceptor(&dir, "      ecdh_curves: [X25519]\n");
        assert_eq!(
            handshake(x25519.clone(), client.clone()),
            HandshakeKind::Full
        );
        assert_eq!(handshake(x25519, client.clone()), HandshakeKind::Resumed);
        // A reload to P-256 only: the X25519 session's ticket is not accepted.
        let p256 = acceptor(&dir, "      ecdh_curves: [P-256]\n");
        assert_eq!(handshake(p256.clone(), client.clone()), HandshakeKind::Full);
        assert_eq!(handshake(p256, client.clone()), HandshakeKind::Resumed);
        let off = "      ecdh_curves: [P-256]\n      session_tickets: false\n      session_cache: false\n";
        assert_eq!(
            handshake(acceptor(&dir, off), client.clone()),
            HandshakeKind::Full
        );
        // Tickets on again: the ticket from before they were turned off is not accepted.
        let on = acceptor(&dir, "      ecdh_curves: [P-256]\n");
        assert_eq!(handshake(on, client), HandshakeKind::Full);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
