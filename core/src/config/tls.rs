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
}
