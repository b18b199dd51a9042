//! TLS settings of a listener (termination). Types and defaults only: the runtime reads the
//! PEM files and builds the rustls configuration from them.
//!
//! PEM comes from a file or from the config itself ([`Pem`]): a file is read when the TLS
//! contexts are built and watched for rotation; inline PEM (`{ inline: PEM }`, what xDS
//! translation produces from inline bytes and SDS secrets) changes only with the config.
//! Invariant: inline PEM never leaves the process through `Debug` or the config dump — both
//! show its secret's name and its length, never its bytes.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use super::http::HttpCodec;
use super::ser_duration;

/// PEM larger than this is refused, from a file, the YAML config or xDS (a certificate bundle
/// is a few KiB); the message names the file, field or secret, never the bytes.
pub const MAX_PEM_BYTES: u64 = 1 << 20;

/// The default `handshake_timeout`: a handshake not complete by then is closed.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// `listeners[].tls`: terminate TLS on this listener.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ListenerTls {
    /// Certificates with their keys. Per handshake, the one whose DNS SANs match the client's
    /// server name (exact, then wildcard) is chosen; with no server name or no match, the first.
    pub certificates: Vec<CertificateFiles>,
    /// ALPN protocols offered, in preference order (empty: no ALPN). A client that offers
    /// ALPN but none of these is refused. When not given: [`default_listener_alpn`].
    pub alpn: Vec<String>,
    /// PEM of the CAs that sign client certificates (mutual TLS).
    pub client_ca: Option<Pem>,
    /// With `client_ca`: refuse a client that presents no certificate (default `true`).
    #[serde(skip_serializing_if = "is_default_require")]
    pub require_client_certificate: bool,
    /// With `client_ca`: the client certificate must carry one of these SANs (exact DNS names
    /// or URIs such as `spiffe://cluster.local/ns/default/sa/client`); empty: any verified
    /// certificate.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub verify_subject_alt_names: Vec<String>,
    /// The lowest TLS version accepted.
    pub min_version: TlsVersion,
    /// The highest TLS version offered (default 1.3; 1.2 pins the listener to TLS 1.2).
    #[serde(skip_serializing_if = "is_default_max")]
    pub max_version: TlsVersion,
    /// The key exchange groups accepted (empty: the provider's defaults,
    /// [`DEFAULT_ECDH_CURVES`]); among them the client's preference picks.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ecdh_curves: Vec<EcdhCurve>,
    /// The cipher suites accepted, in the listener's order of preference (empty:
    /// [`DEFAULT_CIPHER_SUITES`]). TLS 1.3 and TLS 1.2 suites are listed together; a list that
    /// names none of one version's suites leaves that version's defaults
    /// ([`effective_cipher_suites`]).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cipher_suites: Vec<CipherSuite>,
    /// Choose the suite by the client's order among the accepted ones (Envoy's
    /// `prefer_client_ciphers`); default `false`: the listener's order wins, in TLS 1.2 as in
    /// Envoy and — unlike BoringSSL, which follows the client there — in TLS 1.3 too.
    #[serde(skip_serializing_if = "is_false")]
    pub prefer_client_ciphers: bool,
    /// Issue stateless session tickets (TLS 1.3 and 1.2) that a client resumes with
    /// (default `true`; Envoy's `disable_stateless_session_resumption` is its negation).
    #[serde(skip_serializing_if = "is_true")]
    pub session_tickets: bool,
    /// Keep a per-listener session cache that a client resumes from by session id (TLS 1.2)
    /// or by a stateful ticket (TLS 1.3, when `session_tickets` is off) (default `true`;
    /// Envoy's `disable_stateful_session_resumption` is its negation).
    #[serde(skip_serializing_if = "is_true")]
    pub session_cache: bool,
    /// A handshake not complete in this time is closed.
    #[serde(serialize_with = "ser_duration")]
    pub handshake_timeout: Duration,
}

fn is_default_max(version: &TlsVersion) -> bool {
    *version == TlsVersion::Tls13
}

fn is_true(value: &bool) -> bool {
    *value
}

fn is_false(value: &bool) -> bool {
    !*value
}

/// A key exchange group (`ecdh_curves`), named as Envoy's `tls_params.ecdh_curves` names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum EcdhCurve {
    /// Curve25519 (RFC 7748).
    #[serde(rename = "X25519")]
    X25519,
    /// NIST P-256 (secp256r1).
    #[serde(rename = "P-256")]
    P256,
    /// NIST P-384 (secp384r1).
    #[serde(rename = "P-384")]
    P384,
    /// The post-quantum hybrid of X25519 and ML-KEM-768 (TLS 1.3 only).
    #[serde(rename = "X25519MLKEM768")]
    X25519MlKem768,
}

impl EcdhCurve {
    /// Every group, with the name the config uses for it.
    pub const ALL: [(&'static str, EcdhCurve); 4] = [
        ("X25519", EcdhCurve::X25519),
        ("P-256", EcdhCurve::P256),
        ("P-384", EcdhCurve::P384),
        ("X25519MLKEM768", EcdhCurve::X25519MlKem768),
    ];
}

/// The groups a listener accepts when its `tls` names none, in order of preference: rustls'
/// defaults with its aws-lc-rs provider (the post-quantum hybrid first).
pub const DEFAULT_ECDH_CURVES: [EcdhCurve; 4] = [
    EcdhCurve::X25519MlKem768,
    EcdhCurve::P384,
    EcdhCurve::X25519,
    EcdhCurve::P256,
];

/// A cipher suite Sluice negotiates (rustls with aws-lc-rs: AEAD suites only, ECDHE key
/// exchange for TLS 1.2). TLS 1.2 suites are named as OpenSSL and BoringSSL name them (Envoy's
/// `tls_params.cipher_suites`), TLS 1.3 suites by their IANA names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum CipherSuite {
    /// TLS 1.3 AES-128-GCM with SHA-256.
    #[serde(rename = "TLS_AES_128_GCM_SHA256")]
    Tls13Aes128GcmSha256,
    /// TLS 1.3 AES-256-GCM with SHA-384.
    #[serde(rename = "TLS_AES_256_GCM_SHA384")]
    Tls13Aes256GcmSha384,
    /// TLS 1.3 ChaCha20-Poly1305 with SHA-256.
    #[serde(rename = "TLS_CHACHA20_POLY1305_SHA256")]
    Tls13Chacha20Poly1305Sha256,
    /// TLS 1.2 ECDHE, ECDSA certificate, AES-128-GCM.
    #[serde(rename = "ECDHE-ECDSA-AES128-GCM-SHA256")]
    EcdheEcdsaAes128GcmSha256,
    /// TLS 1.2 ECDHE, ECDSA certificate, ChaCha20-Poly1305.
    #[serde(rename = "ECDHE-ECDSA-CHACHA20-POLY1305")]
    EcdheEcdsaChacha20Poly1305,
    /// TLS 1.2 ECDHE, RSA certificate, AES-128-GCM.
    #[serde(rename = "ECDHE-RSA-AES128-GCM-SHA256")]
    EcdheRsaAes128GcmSha256,
    /// TLS 1.2 ECDHE, RSA certificate, ChaCha20-Poly1305.
    #[serde(rename = "ECDHE-RSA-CHACHA20-POLY1305")]
    EcdheRsaChacha20Poly1305,
    /// TLS 1.2 ECDHE, ECDSA certificate, AES-256-GCM.
    #[serde(rename = "ECDHE-ECDSA-AES256-GCM-SHA384")]
    EcdheEcdsaAes256GcmSha384,
    /// TLS 1.2 ECDHE, RSA certificate, AES-256-GCM.
    #[serde(rename = "ECDHE-RSA-AES256-GCM-SHA384")]
    EcdheRsaAes256GcmSha384,
}

impl CipherSuite {
    /// Every suite, with the name the config uses for it, in the default order.
    pub const ALL: [(&'static str, CipherSuite); 9] = [
        ("TLS_AES_128_GCM_SHA256", CipherSuite::Tls13Aes128GcmSha256),
        ("TLS_AES_256_GCM_SHA384", CipherSuite::Tls13Aes256GcmSha384),
        (
            "TLS_CHACHA20_POLY1305_SHA256",
            CipherSuite::Tls13Chacha20Poly1305Sha256,
        ),
        (
            "ECDHE-ECDSA-AES128-GCM-SHA256",
            CipherSuite::EcdheEcdsaAes128GcmSha256,
        ),
        (
            "ECDHE-ECDSA-CHACHA20-POLY1305",
            CipherSuite::EcdheEcdsaChacha20Poly1305,
        ),
        (
            "ECDHE-RSA-AES128-GCM-SHA256",
            CipherSuite::EcdheRsaAes128GcmSha256,
        ),
        (
            "ECDHE-RSA-CHACHA20-POLY1305",
            CipherSuite::EcdheRsaChacha20Poly1305,
        ),
        (
            "ECDHE-ECDSA-AES256-GCM-SHA384",
            CipherSuite::EcdheEcdsaAes256GcmSha384,
        ),
        (
            "ECDHE-RSA-AES256-GCM-SHA384",
            CipherSuite::EcdheRsaAes256GcmSha384,
        ),
    ];

    /// Whether this is a TLS 1.3 suite (else TLS 1.2).
    #[must_use]
    pub fn is_tls13(self) -> bool {
        matches!(
            self,
            CipherSuite::Tls13Aes128GcmSha256
                | CipherSuite::Tls13Aes256GcmSha384
                | CipherSuite::Tls13Chacha20Poly1305Sha256
        )
    }
}

/// The suites of a listener or cluster whose `tls` names none, in order of preference: for
/// TLS 1.3 BoringSSL's list on a CPU with AES instructions (AES-128 first, whose SHA-256 the
/// CPU hashes in hardware where it has SHA instructions — BoringSSL itself, as a server,
/// follows the client's order in TLS 1.3; Sluice's listeners follow this one unless
/// `prefer_client_ciphers`), for TLS 1.2 Envoy's default `cipher_suites` (ECDHE with AEAD only,
/// AES-128 and ChaCha20 before AES-256; Envoy's `[A|B]` equal-preference groups flattened).
pub const DEFAULT_CIPHER_SUITES: [CipherSuite; 9] = [
    CipherSuite::Tls13Aes128GcmSha256,
    CipherSuite::Tls13Aes256GcmSha384,
    CipherSuite::Tls13Chacha20Poly1305Sha256,
    CipherSuite::EcdheEcdsaAes128GcmSha256,
    CipherSuite::EcdheEcdsaChacha20Poly1305,
    CipherSuite::EcdheRsaAes128GcmSha256,
    CipherSuite::EcdheRsaChacha20Poly1305,
    CipherSuite::EcdheEcdsaAes256GcmSha384,
    CipherSuite::EcdheRsaAes256GcmSha384,
];

/// TLS 1.2 suites that OpenSSL and BoringSSL know and Sluice does not negotiate (RSA key
/// exchange without forward secrecy, CBC modes): a `cipher_suites` list may name them — Istio's
/// inbound listeners list `AES128-GCM-SHA256` and `AES256-GCM-SHA384` — and they are skipped.
pub const UNNEGOTIATED_CIPHER_SUITES: [&str; 14] = [
    "AES128-GCM-SHA256",
    "AES256-GCM-SHA384",
    "AES128-SHA",
    "AES256-SHA",
    "ECDHE-ECDSA-AES128-SHA",
    "ECDHE-ECDSA-AES256-SHA",
    "ECDHE-RSA-AES128-SHA",
    "ECDHE-RSA-AES256-SHA",
    "PSK-AES128-CBC-SHA",
    "PSK-AES256-CBC-SHA",
    "ECDHE-PSK-AES128-CBC-SHA",
    "ECDHE-PSK-CHACHA20-POLY1305",
    "ECDHE-PSK-AES256-CBC-SHA",
    "DES-CBC3-SHA",
];

/// The IANA names of the TLS 1.2 suites Sluice negotiates, which BoringSSL (and so Envoy) takes
/// as well as OpenSSL's: each with the suite it names.
pub const IANA_TLS12_NAMES: [(&str, CipherSuite); 6] = [
    (
        "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
        CipherSuite::EcdheEcdsaAes128GcmSha256,
    ),
    (
        "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
        CipherSuite::EcdheEcdsaChacha20Poly1305,
    ),
    (
        "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
        CipherSuite::EcdheRsaAes128GcmSha256,
    ),
    (
        "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
        CipherSuite::EcdheRsaChacha20Poly1305,
    ),
    (
        "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
        CipherSuite::EcdheEcdsaAes256GcmSha384,
    ),
    (
        "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
        CipherSuite::EcdheRsaAes256GcmSha384,
    ),
];

/// Why a `cipher_suites` list is refused: the entry at `index` (`None`: the list as a whole)
/// and what is wrong with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CipherSuiteListError {
    /// The offending entry's index in the list, or `None` for the list as a whole.
    pub index: Option<usize>,
    /// What is wrong, naming the suite.
    pub message: String,
}

/// Reads a `cipher_suites` list (the YAML field and Envoy's `tls_params.cipher_suites` alike):
/// names in order of preference, each a suite Sluice negotiates ([`CipherSuite::ALL`], or a
/// TLS 1.2 one by its IANA name, [`IANA_TLS12_NAMES`]) or a TLS 1.2 suite it knows and skips
/// ([`UNNEGOTIATED_CIPHER_SUITES`]); an entry may hold several joined by `:` (BoringSSL's
/// cipher string, which Envoy builds from the list), and BoringSSL's equal-preference groups
/// (`[A|B]`, in Envoy's own default list) are read as their members in order (rustls has no
/// equal preference). A suite named again is taken at its first place (BoringSSL accepts it).
/// Refused: an empty list, an unknown name, a list left with no suite Sluice negotiates, and —
/// where TLS 1.2 is admitted (`admits_tls12`) — a list naming TLS 1.2 suites none of which
/// Sluice negotiates (every TLS 1.2 peer would be refused). Unlike Envoy, TLS 1.3 names are
/// taken too (they order and narrow TLS 1.3; Envoy has no TLS 1.3 suite setting).
///
/// # Errors
///
/// The entry (or the list) that is refused and why.
pub fn parse_cipher_suites<S: AsRef<str>>(
    entries: &[S],
    admits_tls12: bool,
) -> Result<Vec<CipherSuite>, CipherSuiteListError> {
    let whole = |message: &str| CipherSuiteListError {
        index: None,
        message: message.to_owned(),
    };
    if entries.is_empty() {
        return Err(whole(
            "must name at least one suite (leave it out for the defaults)",
        ));
    }
    let mut suites = Vec::new();
    let mut seen: Vec<&str> = Vec::new();
    let mut names_tls12 = false;
    for (i, entry) in entries.iter().enumerate() {
        let entry = entry.as_ref();
        let mut members: Vec<&str> = Vec::new();
        for part in entry.split(':') {
            match part.strip_prefix('[').and_then(|e| e.strip_suffix(']')) {
                Some(group) => members.extend(group.split('|')),
                None => members.push(part),
            }
        }
        for name in members {
            let at = |message: String| CipherSuiteListError {
                index: Some(i),
                message,
            };
            if seen.contains(&name) {
                continue;
            }
            seen.push(name);
            let negotiated = CipherSuite::ALL
                .iter()
                .chain(IANA_TLS12_NAMES.iter())
                .find(|(n, _)| *n == name);
            if let Some((_, suite)) = negotiated {
                names_tls12 |= !suite.is_tls13();
                if !suites.contains(suite) {
                    suites.push(*suite);
                }
            } else if UNNEGOTIATED_CIPHER_SUITES.contains(&name) {
                names_tls12 = true;
            } else {
                let known: Vec<&str> = CipherSuite::ALL.iter().map(|(n, _)| *n).collect();
                return Err(at(format!(
                    "unknown cipher suite {name:?} (Sluice negotiates {})",
                    known.join(", ")
                )));
            }
        }
    }
    if suites.is_empty() {
        return Err(whole(
            "names no suite Sluice negotiates (RSA key exchange and CBC suites are skipped)",
        ));
    }
    if admits_tls12 && names_tls12 && suites.iter().all(|s| s.is_tls13()) {
        return Err(whole(
            "names TLS 1.2 suites, none of which Sluice negotiates (RSA key exchange and CBC \
             suites are skipped), and TLS 1.2 is admitted: every TLS 1.2 peer would be \
             refused; add an ECDHE AEAD suite (e.g. ECDHE-ECDSA-AES128-GCM-SHA256), or admit \
             TLS 1.3 only",
        ));
    }
    Ok(suites)
}

/// The suites a context enables, in order, for a configured list: the list's TLS 1.3 suites
/// (or the default ones when it names none), then its TLS 1.2 suites (or the default ones when
/// it names none) — as in Envoy, where `cipher_suites` orders TLS 1.2 and leaves TLS 1.3 to
/// the library, a list of TLS 1.2 names does not turn TLS 1.3 off.
#[must_use]
pub fn effective_cipher_suites(listed: &[CipherSuite]) -> Vec<CipherSuite> {
    let pick = |tls13: bool| {
        let own: Vec<CipherSuite> = listed
            .iter()
            .copied()
            .filter(|s| s.is_tls13() == tls13)
            .collect();
        if own.is_empty() {
            DEFAULT_CIPHER_SUITES
                .iter()
                .copied()
                .filter(|s| s.is_tls13() == tls13)
                .collect()
        } else {
            own
        }
    };
    let mut out = pick(true);
    out.extend(pick(false));
    out
}

/// The config dump leaves `require_client_certificate` out when it has its default, `true`:
/// the config refuses the field on a listener without `client_ca`, where it is always `true`.
fn is_default_require(require: &bool) -> bool {
    *require
}

/// The ALPN protocols a TLS listener offers when its `tls` gives no `alpn`: what its HTTP
/// codec serves (`codec`: the listener's HTTP codec; `None`: not an HTTP listener — `tcp_proxy`
/// and `bolt` offer none). ALPN then picks the codec of each connection.
#[must_use]
pub fn default_listener_alpn(codec: Option<HttpCodec>) -> &'static [&'static str] {
    match codec {
        Some(HttpCodec::Auto) => &["h2", "http/1.1"],
        Some(HttpCodec::Http1) => &["http/1.1"],
        Some(HttpCodec::Http2) => &["h2"],
        None => &[],
    }
}

/// The ALPN protocol a TLS cluster of `protocol: http1` offers, when its `tls` gives no `alpn`,
/// if an HTTP route, an HTTP health check or the OTLP exporter uses it (`protocol: http2`
/// offers `h2`: `UpstreamProtocol::alpn`).
pub const DEFAULT_HTTP_UPSTREAM_ALPN: &str = "http/1.1";

/// Istio's `istio-peer-exchange` ALPN id, which an upstream's `alpn` may not offer: a peer
/// sidecar's inbound TCP chains offer it, and when it is selected istio/proxy's
/// `metadata_exchange` filter writes its node metadata first and expects a metadata exchange
/// header back — a protocol Sluice does not speak, whose bytes would reach the application.
/// Refused in YAML; xDS translation drops it (and notes it).
pub const ISTIO_PEER_EXCHANGE_ALPN: &str = "istio-peer-exchange";

/// One certificate chain and its private key, as PEM (files or inline).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CertificateFiles {
    /// PEM: the leaf certificate first, then intermediates.
    pub cert_chain: Pem,
    /// PEM: the private key (PKCS#8, PKCS#1 RSA or SEC1 EC).
    pub private_key: Pem,
}

/// Where PEM comes from: a file path (written as a string) or the config itself (written
/// `{ inline: PEM, secret: NAME }`; `secret`, optional, names the SDS secret it came from).
#[derive(Clone, PartialEq, Eq)]
pub enum Pem {
    /// A PEM file, read when the TLS contexts are built and watched for rotation.
    File(String),
    /// PEM given in the config (from xDS: inline bytes or an SDS secret).
    Inline {
        /// The SDS secret it came from, if any (for messages and the dump).
        secret: Option<String>,
        /// The PEM text.
        pem: Arc<str>,
    },
}

impl Pem {
    /// The file, if this is one.
    #[must_use]
    pub fn file(&self) -> Option<&str> {
        match self {
            Pem::File(f) => Some(f),
            Pem::Inline { .. } => None,
        }
    }

    /// A stable name for what this PEM is, without its secret bytes: the file path, or for
    /// inline PEM its secret's name (if any) and a 64-bit FNV-1a digest of its content (only
    /// for public material such as a CA: the ticket keys of a listener are tied to its client
    /// CA by it, so new CA content under the same SDS secret name is a new identity — a
    /// client of a removed CA cannot resume).
    #[must_use]
    pub fn identity(&self) -> String {
        match self {
            Pem::File(f) => f.clone(),
            Pem::Inline { secret, pem } => {
                let mut h: u64 = 0xcbf2_9ce4_8422_2325;
                for b in pem.bytes() {
                    h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
                }
                match secret {
                    Some(name) => format!("sds secret {name:?} {h:016x}"),
                    None => format!("inline PEM {h:016x}"),
                }
            }
        }
    }
}

/// In messages: the file's path, `sds secret "NAME"`, or `inline PEM` — never the bytes.
impl fmt::Display for Pem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Pem::File(file) => f.write_str(file),
            Pem::Inline {
                secret: Some(name), ..
            } => write!(f, "sds secret {name:?}"),
            Pem::Inline { secret: None, .. } => f.write_str("inline PEM"),
        }
    }
}

/// Redacted: a file's path, or an inline PEM's secret name and length.
impl fmt::Debug for Pem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Pem::File(file) => f.debug_tuple("File").field(file).finish(),
            Pem::Inline { secret, pem } => f
                .debug_struct("Inline")
                .field("secret", secret)
                .field("bytes", &pem.len())
                .finish_non_exhaustive(),
        }
    }
}

/// A file as its path; inline PEM as `{ inline: "[redacted: N bytes]", secret: NAME }`.
impl Serialize for Pem {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        match self {
            Pem::File(file) => s.serialize_str(file),
            Pem::Inline { secret, pem } => {
                let mut m = s.serialize_map(None)?;
                m.serialize_entry("inline", &format!("[redacted: {} bytes]", pem.len()))?;
                if let Some(name) = secret {
                    m.serialize_entry("secret", name)?;
                }
                m.end()
            }
        }
    }
}

/// A TLS protocol version.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum TlsVersion {
    /// TLS 1.2.
    #[serde(rename = "1.2")]
    Tls12,
    /// TLS 1.3.
    #[serde(rename = "1.3")]
    Tls13,
}

/// `clusters[].tls`: originate TLS to the cluster's hosts, always verified.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct UpstreamTls {
    /// The server name sent (SNI) and, unless `verify_subject_alt_names` is given, the DNS
    /// name the upstream's certificate must carry.
    pub sni: Option<String>,
    /// PEM of the CAs that sign the upstreams' certificates (required: an upstream is
    /// never accepted unverified).
    pub ca: Pem,
    /// PEM files of a client certificate and key, for upstreams that want mutual TLS
    /// (written `cert_chain` and `private_key` beside `ca`).
    #[serde(flatten)]
    pub client_certificate: Option<CertificateFiles>,
    /// The upstream's certificate must carry one of these SANs (DNS names or URIs, e.g. a
    /// SPIFFE ID) instead of `sni`.
    pub verify_subject_alt_names: Vec<String>,
    /// ALPN protocols offered (empty: none). When not given and an HTTP route or health check
    /// uses the cluster: `[http/1.1]` ([`DEFAULT_HTTP_UPSTREAM_ALPN`]).
    pub alpn: Vec<String>,
    /// The cipher suites offered, in order (empty: [`DEFAULT_CIPHER_SUITES`]); as on a
    /// listener, a version none of whose suites is listed keeps its defaults.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cipher_suites: Vec<CipherSuite>,
}
