//! TLS settings of a listener (termination). Types and defaults only: the runtime reads the
//! PEM files and builds the rustls configuration from them.

use std::time::Duration;

use serde::Serialize;

use super::http::HttpCodec;
use super::ser_duration;

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
    /// PEM file of the CAs that sign client certificates (mutual TLS).
    pub client_ca: Option<String>,
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
    /// A handshake not complete in this time is closed.
    #[serde(serialize_with = "ser_duration")]
    pub handshake_timeout: Duration,
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

/// One certificate chain and its private key, as PEM files.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CertificateFiles {
    /// PEM file: the leaf certificate first, then intermediates.
    pub cert_chain: String,
    /// PEM file: the private key (PKCS#8, PKCS#1 RSA or SEC1 EC).
    pub private_key: String,
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
    /// PEM file of the CAs that sign the upstreams' certificates (required: an upstream is
    /// never accepted unverified).
    pub ca: String,
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
