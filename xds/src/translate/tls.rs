//! TLS transport sockets (`envoy.transport_sockets.tls`) and SDS secrets → a cluster's or a
//! listener's `tls`.
//!
//! Mapped, on a Cluster (`UpstreamTlsContext` → `clusters[].tls`): `sni`;
//! `common_tls_context.tls_certificates` (one: the client certificate) or
//! `tls_certificate_sds_secret_configs`; the validation context — inline `validation_context`,
//! `validation_context_sds_secret_config`, or `combined_validation_context` (its
//! `default_validation_context` merged with the SDS one, as Istio sends) — whose `trusted_ca`
//! becomes `ca` and whose exact DNS / URI SAN matchers (`match_typed_subject_alt_names`,
//! `match_subject_alt_names`) become `verify_subject_alt_names`; `alpn_protocols`; `tls_params`
//! versions within TLS 1.2–1.3 and `cipher_suites`; `max_session_keys` only at its default,
//! 1. No CA is refused: Sluice never originates TLS to an unverified upstream.
//!
//! On a filter chain (`DownstreamTlsContext` → `listeners[].tls`): the certificates (inline or
//! SDS; several are chosen by SNI as in a file config), `require_client_certificate` (Envoy's
//! default, `false`, is written out: the file's default is `true`), the validation context →
//! `client_ca` and `verify_subject_alt_names`, `alpn_protocols`, `tls_params` versions,
//! `ecdh_curves` and `cipher_suites`, `prefer_client_ciphers`, `disable_stateful_session_resumption` (→
//! `session_cache: false`) and `disable_stateless_session_resumption` (→
//! `session_tickets: false`). `session_timeout` is
//! refused by path (resumption is Sluice's own, with a fixed lifetime), not ignored.
//!
//! PEM: a `filename` stays a file (read, checked and watched by the runtime); inline bytes or
//! strings and SDS secrets become inline PEM (`{ inline, secret }`), parsed here so that a
//! secret that does not parse is refused naming the secret ([`super::ResourceType::Secret`]); its
//! bytes never appear in a message.
//!
//! SDS: over ADS (`sds_config: { ads: {} }`), or from an SDS source the bootstrap declares
//! (`xds.sds_sources`), named as Istio names its agent's: `sds_config: { api_config_source: {
//! api_type: GRPC, grpc_services: [{ envoy_grpc: { cluster_name: sds-grpc } }] } }` — a source
//! the bootstrap does not declare is refused by path (an xDS resource never says where a
//! source is: the socket or cluster is the operator's). A secret not received yet is an error
//! the warming rule waits on ([`sds_names`] and [`source_sds_names`] say which secrets a set of
//! resources needs, and from where).

use std::collections::{BTreeMap, BTreeSet};

use envoy_types::pb::envoy::config::core::v3::{
    ApiVersion, ConfigSource, DataSource, GrpcService, TransportSocket, api_config_source::ApiType,
    config_source::ConfigSourceSpecifier, data_source::Specifier, grpc_service::TargetSpecifier,
    transport_socket::ConfigType,
};
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CertificateValidationContext, CommonTlsContext, DownstreamTlsContext, SdsSecretConfig, Secret,
    SubjectAltNameMatcher, TlsCertificate, TlsParameters, UpstreamTlsContext,
    common_tls_context::ValidationContextType, downstream_tls_context::SessionTicketKeysType,
    secret, subject_alt_name_matcher::SanType, tls_parameters::TlsProtocol,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{StringMatcher, string_matcher::MatchPattern};
use prost::{Message, Name};
use rustls::crypto::aws_lc_rs;
use rustls::sign::CertifiedKey;
use serde_json::{Map, Value, json};
use sluice_core::config::tls::{
    EcdhCurve, ISTIO_PEER_EXCHANGE_ALPN, MAX_PEM_BYTES, parse_cipher_suites,
};
use sluice_core::tls::pem::{describe, parse_certificates, parse_chain, parse_key};

use super::cluster::config_source;
use super::{At, Notes, TranslateError, reject_rest, take, unpack};

/// The SDS secrets translation reads: those received over ADS, and those of each SDS source
/// the bootstrap declares (`declared`; `sources` holds those received, by source).
#[derive(Clone, Copy, Debug)]
pub struct Secrets<'a> {
    /// Over ADS, by name.
    pub ads: &'a BTreeMap<String, Secret>,
    /// The names of the bootstrap's `xds.sds_sources`.
    pub declared: &'a BTreeSet<String>,
    /// From each source, by source then name.
    pub sources: &'a BTreeMap<String, BTreeMap<String, Secret>>,
}

static NO_SECRETS: BTreeMap<String, Secret> = BTreeMap::new();
static NO_SOURCES: BTreeSet<String> = BTreeSet::new();
static NO_SOURCE_SECRETS: BTreeMap<String, BTreeMap<String, Secret>> = BTreeMap::new();

impl Secrets<'static> {
    /// No secret and no source.
    pub const NONE: Secrets<'static> = Secrets {
        ads: &NO_SECRETS,
        declared: &NO_SOURCES,
        sources: &NO_SOURCE_SECRETS,
    };
}

/// Where an SDS secret comes from.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SecretOrigin {
    /// The aggregated stream (`ads: {}`, `self: {}`).
    Ads,
    /// An SDS source of its own, by the cluster name the `api_config_source` gives.
    Source(String),
}

/// The transport socket name of TLS.
pub const TLS_TRANSPORT_SOCKET: &str = "envoy.transport_sockets.tls";

/// Which side a TLS context is for.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    Upstream,
    Downstream,
}

/// A cluster's `transport_socket` → its `tls` value. Istio's `istio-peer-exchange` is dropped
/// from `alpn_protocols` and noted ([`ISTIO_PEER_EXCHANGE_ALPN`]: a peer that selects it
/// speaks Istio's metadata exchange, which Sluice does not); its mesh markers (`istio`,
/// `istio-http/1.0`, `istio-http/1.1`, `istio-h2`) are kept.
pub(crate) fn upstream_tls(
    ts: &TransportSocket,
    at: &At<'_>,
    secrets: &Secrets<'_>,
    notes: &mut Notes,
) -> Result<Value, TranslateError> {
    let any = tls_any(ts, at, UpstreamTlsContext::type_url())?;
    let t_at = at.field("typed_config");
    let mut u: UpstreamTlsContext = unpack(any, &t_at)?;
    let sni = take(&mut u.sni);
    // The client's session cache: Sluice resumes with its own (rustls') cache. Envoy's
    // default, 1, is accepted; 0 (no resumption) or another size is refused by path.
    if let Some(n) = take(&mut u.max_session_keys)
        && n.value != 1
    {
        return Err(t_at.field("max_session_keys").error(
            "unsupported (only 1, the default: Sluice resumes sessions with its own cache)",
        ));
    }
    let common = take(&mut u.common_tls_context).unwrap_or_default();
    reject_rest(&u, &t_at)?;
    let mut c = common_context(
        common,
        &t_at.field("common_tls_context"),
        secrets,
        Side::Upstream,
    )?;
    if let Some(i) = c.alpn.iter().position(|p| p == ISTIO_PEER_EXCHANGE_ALPN) {
        c.alpn.remove(i);
        t_at.field("common_tls_context.alpn_protocols").note(
            notes,
            "istio-peer-exchange (dropped: negotiated metadata exchange, which Sluice does not \
             speak)",
        );
    }
    let Some(ca) = c.ca else {
        return Err(t_at.field("common_tls_context").error(
            "no validation context with a trusted_ca: Sluice never originates TLS to an \
             upstream it does not verify",
        ));
    };
    if c.certificates.len() > 1 {
        return Err(t_at
            .field("common_tls_context.tls_certificates")
            .error("at most one client certificate"));
    }
    if sni.is_empty() && c.sans.is_empty() {
        return Err(t_at.error(
            "give `sni` or subject alt name matchers: the identity the upstream's certificate \
             must prove",
        ));
    }
    let mut m = Map::new();
    if !sni.is_empty() {
        m.insert("sni".to_owned(), json!(sni));
    }
    m.insert("ca".to_owned(), ca);
    if let Some((chain, key)) = c.certificates.into_iter().next() {
        m.insert("cert_chain".to_owned(), chain);
        m.insert("private_key".to_owned(), key);
    }
    if !c.sans.is_empty() {
        m.insert("verify_subject_alt_names".to_owned(), json!(c.sans));
    }
    if !c.alpn.is_empty() {
        m.insert("alpn".to_owned(), json!(c.alpn));
    }
    if !c.params.cipher_suites.is_empty() {
        m.insert("cipher_suites".to_owned(), json!(c.params.cipher_suites));
    }
    Ok(Value::Object(m))
}

/// A filter chain's `transport_socket` → its listener's `tls` value.
pub(crate) fn downstream_tls(
    ts: &TransportSocket,
    at: &At<'_>,
    secrets: &Secrets<'_>,
) -> Result<Value, TranslateError> {
    let any = tls_any(ts, at, DownstreamTlsContext::type_url())?;
    let t_at = at.field("typed_config");
    let mut d: DownstreamTlsContext = unpack(any, &t_at)?;
    let require = take(&mut d.require_client_certificate).map(|b| b.value);
    // Session resumption is Sluice's own (a cache and tickets with a fixed lifetime): a
    // timeout would be a promise it does not keep, so it is refused by path. Turning either
    // kind of resumption off is honoured (`session_cache` / `session_tickets: false`).
    if take(&mut d.session_timeout).is_some() {
        return Err(t_at.field("session_timeout").error(
            "unsupported (Sluice resumes sessions with its own cache and tickets; their \
             lifetime is not configurable)",
        ));
    }
    let no_cache = take(&mut d.disable_stateful_session_resumption);
    let client_order = take(&mut d.prefer_client_ciphers);
    let no_tickets = match take(&mut d.session_ticket_keys_type) {
        None => false,
        Some(SessionTicketKeysType::DisableStatelessSessionResumption(off)) => off,
        Some(other) => {
            // Keys of the control plane's: Sluice makes and rotates its own.
            let field = match other {
                SessionTicketKeysType::SessionTicketKeys(_) => "session_ticket_keys",
                _ => "session_ticket_keys_sds_secret_config",
            };
            return Err(t_at
                .field(field)
                .error("unsupported (Sluice makes and rotates its own session ticket keys)"));
        }
    };
    let common = take(&mut d.common_tls_context).unwrap_or_default();
    reject_rest(&d, &t_at)?;
    let c_at = t_at.field("common_tls_context");
    let c = common_context(common, &c_at, secrets, Side::Downstream)?;
    if c.certificates.is_empty() {
        return Err(
            c_at.error("no certificate (tls_certificates or tls_certificate_sds_secret_configs)")
        );
    }
    let mut m = Map::new();
    m.insert(
        "certificates".to_owned(),
        Value::Array(
            c.certificates
                .into_iter()
                .map(|(chain, key)| json!({ "cert_chain": chain, "private_key": key }))
                .collect(),
        ),
    );
    match c.ca {
        Some(ca) => {
            m.insert("client_ca".to_owned(), ca);
            // Envoy's default is not to require one; the file's is to require it.
            m.insert(
                "require_client_certificate".to_owned(),
                json!(require.unwrap_or(false)),
            );
            if !c.sans.is_empty() {
                m.insert("verify_subject_alt_names".to_owned(), json!(c.sans));
            }
        }
        None if require == Some(true) => {
            return Err(t_at
                .field("require_client_certificate")
                .error("set without a validation context (trusted_ca) to verify clients with"));
        }
        None if !c.sans.is_empty() => {
            return Err(c_at.error("subject alt name matchers without a trusted_ca"));
        }
        None => {}
    }
    if !c.alpn.is_empty() {
        m.insert("alpn".to_owned(), json!(c.alpn));
    }
    if let Some(v) = c.params.min_version {
        m.insert("min_version".to_owned(), json!(v));
    }
    if let Some(v) = c.params.max_version {
        m.insert("max_version".to_owned(), json!(v));
    }
    if !c.params.ecdh_curves.is_empty() {
        m.insert("ecdh_curves".to_owned(), json!(c.params.ecdh_curves));
    }
    if !c.params.cipher_suites.is_empty() {
        m.insert("cipher_suites".to_owned(), json!(c.params.cipher_suites));
    }
    if no_tickets {
        m.insert("session_tickets".to_owned(), json!(false));
    }
    if no_cache {
        m.insert("session_cache".to_owned(), json!(false));
    }
    if client_order {
        m.insert("prefer_client_ciphers".to_owned(), json!(true));
    }
    Ok(Value::Object(m))
}

/// The `Any` of a TLS transport socket, refusing any other socket.
fn tls_any<'t>(
    ts: &'t TransportSocket,
    at: &At<'_>,
    type_url: String,
) -> Result<&'t envoy_types::pb::google::protobuf::Any, TranslateError> {
    let any = match &ts.config_type {
        Some(ConfigType::TypedConfig(any)) => any,
        None => {
            return Err(at.error(format!(
                "{:?}: unsupported (only {TLS_TRANSPORT_SOCKET} with a typed_config)",
                ts.name
            )));
        }
    };
    if any.type_url != type_url {
        return Err(at.error(format!(
            "{:?} ({}): unsupported (only {TLS_TRANSPORT_SOCKET}: {type_url})",
            ts.name, any.type_url
        )));
    }
    Ok(any)
}

/// What a `CommonTlsContext` gives.
struct Common {
    /// (cert_chain, private_key) PEM values.
    certificates: Vec<(Value, Value)>,
    ca: Option<Value>,
    sans: Vec<String>,
    alpn: Vec<String>,
    params: Params,
}

/// What `tls_params` gives (only a listener takes a maximum version or curves).
#[derive(Default)]
struct Params {
    min_version: Option<&'static str>,
    max_version: Option<&'static str>,
    ecdh_curves: Vec<String>,
    /// As given (names, and BoringSSL's `[A|B]` groups), each member a suite the config model
    /// knows: the config's decoder skips the ones Sluice does not negotiate.
    cipher_suites: Vec<String>,
}

fn common_context(
    mut c: CommonTlsContext,
    at: &At<'_>,
    secrets: &Secrets<'_>,
    side: Side,
) -> Result<Common, TranslateError> {
    let alpn = take(&mut c.alpn_protocols);
    let params = match take(&mut c.tls_params) {
        Some(p) => tls_params(p, &at.field("tls_params"), side)?,
        None => Params::default(),
    };
    let mut certificates = Vec::new();
    for (i, cert) in take(&mut c.tls_certificates).into_iter().enumerate() {
        certificates.push(certificate(
            cert,
            &at.field("tls_certificates").index(i),
            None,
        )?);
    }
    for (i, sds) in take(&mut c.tls_certificate_sds_secret_configs)
        .into_iter()
        .enumerate()
    {
        let s_at = at.field("tls_certificate_sds_secret_configs").index(i);
        let (name, source, secret) = sds_secret(sds, &s_at, secrets)?;
        let s_at = At::secret(&name, source.as_deref());
        match secret {
            Some(secret::Type::TlsCertificate(cert)) => {
                certificates.push(certificate(
                    cert,
                    &s_at.field("tls_certificate"),
                    Some(&name),
                )?);
            }
            _ => {
                return Err(s_at.error(
                    "is used as a certificate (tls_certificate_sds_secret_configs) but holds no \
                     tls_certificate",
                ));
            }
        }
    }
    let (mut ca, mut sans) = (None, Vec::new());
    match take(&mut c.validation_context_type) {
        None => {}
        Some(ValidationContextType::ValidationContext(v)) => {
            (ca, sans) = validation(v, &at.field("validation_context"), None)?;
        }
        Some(ValidationContextType::ValidationContextSdsSecretConfig(sds)) => {
            (ca, sans) = sds_validation(
                sds,
                &at.field("validation_context_sds_secret_config"),
                secrets,
            )?;
        }
        Some(ValidationContextType::CombinedValidationContext(mut combined)) => {
            let c_at = at.field("combined_validation_context");
            if let Some(default) = take(&mut combined.default_validation_context) {
                (ca, sans) = validation(default, &c_at.field("default_validation_context"), None)?;
            }
            if let Some(sds) = take(&mut combined.validation_context_sds_secret_config) {
                let (sds_ca, sds_sans) = sds_validation(
                    sds,
                    &c_at.field("validation_context_sds_secret_config"),
                    secrets,
                )?;
                if sds_ca.is_some() {
                    if ca.is_some() {
                        return Err(c_at.error(
                            "trusted_ca in both the default and the SDS validation context",
                        ));
                    }
                    ca = sds_ca;
                }
                sans.extend(sds_sans);
            }
            reject_rest(&combined, &c_at)?;
        }
        Some(_) => return Err(at.field("validation_context_type").unsupported()),
    }
    reject_rest(&c, at)?;
    // The default and the SDS context may both list a SAN: once each, in order.
    let mut seen = BTreeSet::new();
    sans.retain(|s| seen.insert(s.clone()));
    Ok(Common {
        certificates,
        ca,
        sans,
        alpn,
        params,
    })
}

/// Only TLS 1.2 and 1.3 exist here (rustls). On a listener: both versions and `ecdh_curves`
/// (Envoy's names, in order); on a cluster: the minimum at 1.2 and the maximum at 1.3. On
/// both: `cipher_suites` (checked by the config model's rules, named by index here). No
/// signature algorithm lists.
fn tls_params(mut p: TlsParameters, at: &At<'_>, side: Side) -> Result<Params, TranslateError> {
    let min = TlsProtocol::try_from(take(&mut p.tls_minimum_protocol_version));
    let max = TlsProtocol::try_from(take(&mut p.tls_maximum_protocol_version));
    let curves = take(&mut p.ecdh_curves);
    let suites = take(&mut p.cipher_suites);
    reject_rest(&p, at)?;
    let mut params = Params::default();
    let max_at = at.field("tls_maximum_protocol_version");
    match (max, side) {
        (Ok(TlsProtocol::TlsAuto | TlsProtocol::TlSv13), _) => {}
        (Ok(TlsProtocol::TlSv12), Side::Downstream) => params.max_version = Some("1.2"),
        (Ok(TlsProtocol::TlSv12), Side::Upstream) => {
            return Err(
                max_at.error("TLSv1_2 is unsupported on a cluster (it offers TLS 1.2 and 1.3)")
            );
        }
        _ => {
            return Err(
                max_at.error("only TLS_AUTO, TLSv1_2 or TLSv1_3 (Sluice speaks TLS 1.2 and 1.3)")
            );
        }
    }
    let min_at = at.field("tls_minimum_protocol_version");
    match (min, side) {
        (Ok(TlsProtocol::TlsAuto | TlsProtocol::TlSv12), _) => {}
        (Ok(TlsProtocol::TlSv13), Side::Downstream) if params.max_version.is_some() => {
            return Err(min_at.error("TLSv1_3 is above tls_maximum_protocol_version (TLSv1_2)"));
        }
        (Ok(TlsProtocol::TlSv13), Side::Downstream) => params.min_version = Some("1.3"),
        (Ok(TlsProtocol::TlSv13), Side::Upstream) => {
            return Err(
                min_at.error("TLSv1_3 is unsupported on a cluster (it offers TLS 1.2 and 1.3)")
            );
        }
        _ => {
            return Err(
                min_at.error("only TLS_AUTO, TLSv1_2 or TLSv1_3 (Sluice speaks TLS 1.2 and 1.3)")
            );
        }
    }
    if !curves.is_empty() {
        let c_at = at.field("ecdh_curves");
        if side == Side::Upstream {
            return Err(c_at.error("unsupported on a cluster (it offers the default groups)"));
        }
        for (i, name) in curves.iter().enumerate() {
            if curves[..i].contains(name) {
                return Err(c_at.index(i).error(format!("{name:?} is listed twice")));
            }
            if !EcdhCurve::ALL.iter().any(|(n, _)| n == name) {
                let known: Vec<&str> = EcdhCurve::ALL.iter().map(|(n, _)| *n).collect();
                return Err(c_at.index(i).error(format!(
                    "{name:?}: unsupported (Sluice offers {})",
                    known.join(", ")
                )));
            }
        }
        if params.min_version.is_none() && curves.iter().all(|c| c == "X25519MLKEM768") {
            return Err(c_at.error(
                "X25519MLKEM768 is TLS 1.3 only and the listener admits TLS 1.2: a TLS 1.2 \
                 client would find no group in common",
            ));
        }
        params.ecdh_curves = curves;
    }
    if !suites.is_empty() {
        // Checked here to name the field; the config's decoder reads the same list again.
        if let Err(e) = parse_cipher_suites(&suites, params.min_version.is_none()) {
            let s_at = at.field("cipher_suites");
            return Err(match e.index {
                Some(i) => s_at.index(i).error(e.message),
                None => s_at.error(e.message),
            });
        }
        params.cipher_suites = suites;
    }
    Ok(params)
}

/// A certificate and its key as PEM values, parsed (`secret`: the SDS secret it is from).
fn certificate(
    mut t: TlsCertificate,
    at: &At<'_>,
    secret: Option<&str>,
) -> Result<(Value, Value), TranslateError> {
    let chain_source = take(&mut t.certificate_chain);
    let key_source = take(&mut t.private_key);
    reject_rest(&t, at)?;
    let c_at = at.field("certificate_chain");
    let chain = pem(chain_source.as_ref(), &c_at, secret, |b| {
        certificates(parse_chain(b))
    })?;
    let k_at = at.field("private_key");
    let key = pem(key_source.as_ref(), &k_at, secret, |b| {
        parse_key(b).map(drop)
    })?;
    if let (Some(chain_pem), Some(key_pem)) =
        (inline(chain_source.as_ref()), inline(key_source.as_ref()))
    {
        // Both parsed above. Files are read (and paired) by the runtime when it loads them;
        // inline ones (SDS secrets) are paired here, so that a mismatch is refused with the
        // secret, not by the apply it would fail (charged to every response in it).
        let pair = parse_chain(chain_pem).and_then(|chain| {
            let key = parse_key(key_pem)?;
            CertifiedKey::from_der(chain, key, &aws_lc_rs::default_provider())
                .map(drop)
                .map_err(|e| e.to_string())
        });
        if let Err(e) = pair {
            return Err(k_at.error(format!(
                "does not go with the leaf of certificate_chain (they cannot be served \
                 together): {e}"
            )));
        }
    }
    Ok((chain, key))
}

/// The bytes of an inline `DataSource` (none for a file).
fn inline(source: Option<&DataSource>) -> Option<&[u8]> {
    match source?.specifier.as_ref()? {
        Specifier::InlineBytes(b) => Some(b),
        Specifier::InlineString(s) => Some(s.as_bytes()),
        _ => None,
    }
}

/// Every certificate of a parsed PEM is an X.509 certificate.
fn certificates<D: AsRef<[u8]>>(parsed: Result<Vec<D>, String>) -> Result<(), String> {
    for (i, der) in parsed?.iter().enumerate() {
        describe(der.as_ref()).map_err(|e| format!("certificate {i}: {e}"))?;
    }
    Ok(())
}

/// A `DataSource` of PEM → a file path or `{ inline, secret }`, inline PEM checked by `parse`.
fn pem(
    source: Option<&DataSource>,
    at: &At<'_>,
    secret: Option<&str>,
    parse: impl Fn(&[u8]) -> Result<(), String>,
) -> Result<Value, TranslateError> {
    let Some(source) = source else {
        return Err(at.error("missing"));
    };
    let mut rest = source.clone();
    let spec = take(&mut rest.specifier);
    reject_rest(&rest, at)?;
    let bytes = match spec {
        Some(Specifier::Filename(f)) if !f.is_empty() => return Ok(json!(f)),
        Some(Specifier::InlineBytes(b)) => b,
        Some(Specifier::InlineString(s)) => s.into_bytes(),
        Some(Specifier::EnvironmentVariable(_)) => {
            return Err(at.field("environment_variable").unsupported());
        }
        _ => return Err(at.error("missing (filename, inline_bytes or inline_string)")),
    };
    // Never the bytes in a message: the parser's errors name what is wrong, not the content;
    // `at` names the secret (or the resource's field) the PEM came from.
    if bytes.len() as u64 > MAX_PEM_BYTES {
        return Err(at.error(format!(
            "{} bytes of PEM: larger than {MAX_PEM_BYTES} bytes",
            bytes.len()
        )));
    }
    let text = String::from_utf8(bytes).map_err(|_| at.error("not PEM (not UTF-8 text)"))?;
    parse(text.as_bytes()).map_err(|e| at.error(format!("not usable PEM: {e}")))?;
    let mut m = Map::new();
    m.insert("inline".to_owned(), Value::String(text));
    if let Some(name) = secret {
        m.insert("secret".to_owned(), json!(name));
    }
    Ok(Value::Object(m))
}

/// A validation context → (`ca` PEM value, SANs).
fn validation(
    mut v: CertificateValidationContext,
    at: &At<'_>,
    secret: Option<&str>,
) -> Result<(Option<Value>, Vec<String>), TranslateError> {
    let ca = take(&mut v.trusted_ca);
    let typed = take(&mut v.match_typed_subject_alt_names);
    #[allow(deprecated)]
    let plain = take(&mut v.match_subject_alt_names);
    reject_rest(&v, at)?;
    let ca = ca
        .map(|ca| {
            pem(Some(&ca), &at.field("trusted_ca"), secret, |b| {
                certificates(parse_certificates(b))
            })
        })
        .transpose()?;
    let mut sans = Vec::new();
    for (i, m) in typed.iter().enumerate() {
        sans.push(typed_san(
            m,
            &at.field("match_typed_subject_alt_names").index(i),
        )?);
    }
    for (i, m) in plain.iter().enumerate() {
        sans.push(exact(m, &at.field("match_subject_alt_names").index(i))?);
    }
    Ok((ca, sans))
}

/// A typed SAN matcher. DNS and URI SANs end up in one list (`verify_subject_alt_names`), and
/// a certificate's DNS SANs are compared with it as well as its URI SANs, so a value that
/// could match the other type is refused: a DNS name never holds `://`, a URI always has a
/// scheme.
fn typed_san(m: &SubjectAltNameMatcher, at: &At<'_>) -> Result<String, TranslateError> {
    let uri = match SanType::try_from(m.san_type) {
        Ok(SanType::Dns) => false,
        Ok(SanType::Uri) => true,
        _ => {
            return Err(at
                .field("san_type")
                .error("only DNS and URI subject alt names are matched"));
        }
    };
    if !m.oid.is_empty() {
        return Err(at.field("oid").unsupported());
    }
    let Some(matcher) = &m.matcher else {
        return Err(at.field("matcher").error("missing"));
    };
    let m_at = at.field("matcher");
    let value = exact(matcher, &m_at)?;
    let has_scheme = value
        .split_once(':')
        .is_some_and(|(scheme, _)| !scheme.is_empty() && !scheme.contains(['.', '/']));
    if uri && !has_scheme {
        return Err(m_at.error(format!(
            "{value:?} is not a URI (no scheme, e.g. spiffe://...): a URI SAN matcher"
        )));
    }
    if !uri && value.contains("://") {
        return Err(m_at.error(format!(
            "{value:?} is not a DNS name: a DNS SAN matcher (use san_type URI)"
        )));
    }
    Ok(value)
}

/// Only exact, case-sensitive matchers (DNS names are compared without case anyway).
fn exact(m: &StringMatcher, at: &At<'_>) -> Result<String, TranslateError> {
    match (&m.match_pattern, m.ignore_case) {
        (Some(MatchPattern::Exact(s)), false) if !s.is_empty() => Ok(s.clone()),
        _ => Err(at.error("unsupported (only a non-empty `exact` without ignore_case)")),
    }
}

/// An SDS secret reference: its name and, when received, its content, over ADS or from a
/// declared SDS source.
fn sds_secret(
    mut sds: SdsSecretConfig,
    at: &At<'_>,
    secrets: &Secrets<'_>,
) -> Result<(String, Option<String>, Option<secret::Type>), TranslateError> {
    let name = take(&mut sds.name);
    let c_at = at.field("sds_config");
    let origin = match take(&mut sds.sds_config) {
        Some(source) if is_ads(&source) => {
            config_source(&source, &c_at)?;
            SecretOrigin::Ads
        }
        Some(source) => sds_source(&source, &c_at, secrets.declared)?,
        None => {
            return Err(c_at.error(
                "missing (secrets come over ADS, `sds_config: { ads: {} }`, or from an SDS \
                 source of `xds.sds_sources`; static secrets are not supported)",
            ));
        }
    };
    reject_rest(&sds, at)?;
    if name.is_empty() {
        return Err(at.field("name").error("missing"));
    }
    let received = match &origin {
        SecretOrigin::Ads => secrets.ads.get(&name),
        SecretOrigin::Source(source) => secrets.sources.get(source).and_then(|s| s.get(&name)),
    };
    let Some(secret) = received else {
        return Err(match origin {
            SecretOrigin::Ads => at.error(format!("secret {name:?} not received")),
            SecretOrigin::Source(source) => at.error(format!(
                "secret {name:?} not received from SDS source {source:?}"
            )),
        });
    };
    let source = match origin {
        SecretOrigin::Ads => None,
        SecretOrigin::Source(source) => Some(source),
    };
    Ok((name, source, secret.r#type.clone()))
}

/// An `sds_config` naming an SDS source of its own: `api_config_source` of type GRPC with one
/// `envoy_grpc` service, whose `cluster_name` must be a source the bootstrap declares. What
/// the client does not do is refused by path (REST, delta, Google gRPC, request timeouts, rate
/// limits); `transport_api_version` V3 and `set_node_on_first_message_only` are what it does.
fn sds_source(
    source: &ConfigSource,
    at: &At<'_>,
    declared: &BTreeSet<String>,
) -> Result<SecretOrigin, TranslateError> {
    let mut rest = source.clone();
    take(&mut rest.resource_api_version);
    // Ignored: warming waits for a secret without a timeout, as for ADS secrets (a TLS
    // context cannot handshake without it; see the ADS machine's module doc).
    take(&mut rest.initial_fetch_timeout);
    let Some(ConfigSourceSpecifier::ApiConfigSource(mut api)) =
        take(&mut rest.config_source_specifier)
    else {
        return Err(at.error(
            "only `ads: {}` or an `api_config_source` of type GRPC naming an SDS source of the \
             bootstrap's `xds.sds_sources` (Istio's `sds-grpc`)",
        ));
    };
    reject_rest(&rest, at)?;
    let a_at = at.field("api_config_source");
    if take(&mut api.api_type) != ApiType::Grpc as i32 {
        return Err(a_at
            .field("api_type")
            .error("only GRPC (state of the world, what Istio's agent serves) for an SDS source"));
    }
    let version = take(&mut api.transport_api_version);
    if version != ApiVersion::V3 as i32 && version != ApiVersion::Auto as i32 {
        return Err(a_at.field("transport_api_version").error("only V3"));
    }
    // The client sends the node on a stream's first request only, whatever this says.
    take(&mut api.set_node_on_first_message_only);
    let services = take(&mut api.grpc_services);
    reject_rest(&api, &a_at)?;
    let g_at = a_at.field("grpc_services");
    let [service] = <[GrpcService; 1]>::try_from(services).map_err(|v| {
        g_at.error(format!(
            "{} services: exactly one `envoy_grpc` naming an SDS source",
            v.len()
        ))
    })?;
    let s_at = g_at.index(0);
    let mut service = service;
    let Some(TargetSpecifier::EnvoyGrpc(mut envoy)) = take(&mut service.target_specifier) else {
        return Err(s_at.error(
            "only `envoy_grpc: { cluster_name }` naming an SDS source (google_grpc is not \
             supported)",
        ));
    };
    reject_rest(&service, &s_at)?;
    let e_at = s_at.field("envoy_grpc");
    let cluster = take(&mut envoy.cluster_name);
    reject_rest(&envoy, &e_at)?;
    if !declared.contains(&cluster) {
        let known = if declared.is_empty() {
            "none is declared".to_owned()
        } else {
            format!(
                "declared: {}",
                declared.iter().cloned().collect::<Vec<_>>().join(", ")
            )
        };
        return Err(e_at.field("cluster_name").error(format!(
            "{cluster:?} is not an SDS source of the bootstrap's `xds.sds_sources` ({known})"
        )));
    }
    Ok(SecretOrigin::Source(cluster))
}

fn sds_validation(
    sds: SdsSecretConfig,
    at: &At<'_>,
    secrets: &Secrets<'_>,
) -> Result<(Option<Value>, Vec<String>), TranslateError> {
    let (name, source, secret) = sds_secret(sds, at, secrets)?;
    let s_at = At::secret(&name, source.as_deref());
    match secret {
        Some(secret::Type::ValidationContext(v)) => {
            validation(v, &s_at.field("validation_context"), Some(&name))
        }
        _ => Err(s_at.error("is used as a validation context but holds no validation_context")),
    }
}

/// Whether an `sds_config` names the ADS stream (`ads: {}` or `self: {}`).
fn is_ads(source: &ConfigSource) -> bool {
    matches!(
        source.config_source_specifier,
        Some(ConfigSourceSpecifier::Ads(_) | ConfigSourceSpecifier::Self_(_))
    )
}

/// Every SDS secret name the clusters' and listeners' TLS contexts refer to over ADS (what to
/// subscribe to, and what warming waits for). Undecodable contexts, and secrets from any other
/// source, name nothing here (translation refuses them at once rather than waiting for them).
#[must_use]
pub fn sds_names<'a>(
    clusters: impl IntoIterator<Item = &'a envoy_types::pb::envoy::config::cluster::v3::Cluster>,
    listeners: impl IntoIterator<Item = &'a Listener>,
) -> BTreeSet<String> {
    sds_refs(clusters, listeners)
        .into_iter()
        .filter_map(|(origin, name)| (origin == SecretOrigin::Ads).then_some(name))
        .collect()
}

/// Every SDS secret name the clusters' and listeners' TLS contexts refer to from an SDS source
/// of their own (`api_config_source` GRPC naming one `envoy_grpc` cluster), by that source's
/// name: what to subscribe to on each source's stream, and what warming waits for. Whether the
/// source is declared is translation's matter (it refuses one that is not, by path).
#[must_use]
pub fn source_sds_names<'a>(
    clusters: impl IntoIterator<Item = &'a envoy_types::pb::envoy::config::cluster::v3::Cluster>,
    listeners: impl IntoIterator<Item = &'a Listener>,
) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (origin, name) in sds_refs(clusters, listeners) {
        if let SecretOrigin::Source(source) = origin {
            out.entry(source).or_default().insert(name);
        }
    }
    out
}

/// The origin of an `sds_config`, if it is one secrets can come from (ADS, or an
/// `api_config_source` naming one `envoy_grpc` cluster).
fn origin_of(source: &ConfigSource) -> Option<SecretOrigin> {
    match &source.config_source_specifier {
        Some(ConfigSourceSpecifier::Ads(_) | ConfigSourceSpecifier::Self_(_)) => {
            Some(SecretOrigin::Ads)
        }
        Some(ConfigSourceSpecifier::ApiConfigSource(api)) => match api.grpc_services.as_slice() {
            [
                GrpcService {
                    target_specifier: Some(TargetSpecifier::EnvoyGrpc(e)),
                    ..
                },
            ] if !e.cluster_name.is_empty() => Some(SecretOrigin::Source(e.cluster_name.clone())),
            _ => None,
        },
        _ => None,
    }
}

/// Every (origin, secret name) the TLS contexts refer to.
fn sds_refs<'a>(
    clusters: impl IntoIterator<Item = &'a envoy_types::pb::envoy::config::cluster::v3::Cluster>,
    listeners: impl IntoIterator<Item = &'a Listener>,
) -> BTreeSet<(SecretOrigin, String)> {
    let mut out = BTreeSet::new();
    let mut from_common = |c: &CommonTlsContext| {
        let mut add = |s: &SdsSecretConfig| {
            if !s.name.is_empty()
                && let Some(origin) = s.sds_config.as_ref().and_then(origin_of)
            {
                out.insert((origin, s.name.clone()));
            }
        };
        for s in &c.tls_certificate_sds_secret_configs {
            add(s);
        }
        match &c.validation_context_type {
            Some(ValidationContextType::ValidationContextSdsSecretConfig(s)) => add(s),
            Some(ValidationContextType::CombinedValidationContext(c)) => {
                if let Some(s) = &c.validation_context_sds_secret_config {
                    add(s);
                }
            }
            _ => {}
        }
    };
    // A cluster's own transport socket and those of its `transport_socket_matches`.
    let sockets = clusters.into_iter().flat_map(|c| {
        c.transport_socket.iter().chain(
            c.transport_socket_matches
                .iter()
                .filter_map(|m| m.transport_socket.as_ref()),
        )
    });
    for ts in sockets {
        if let TransportSocket {
            config_type: Some(ConfigType::TypedConfig(any)),
            ..
        } = ts
            && any.type_url == UpstreamTlsContext::type_url()
            && let Ok(u) = UpstreamTlsContext::decode(any.value.as_slice())
            && let Some(common) = &u.common_tls_context
        {
            from_common(common);
        }
    }
    for l in listeners {
        for chain in &l.filter_chains {
            if let Some(TransportSocket {
                config_type: Some(ConfigType::TypedConfig(any)),
                ..
            }) = &chain.transport_socket
                && any.type_url == DownstreamTlsContext::type_url()
                && let Ok(d) = DownstreamTlsContext::decode(any.value.as_slice())
                && let Some(common) = &d.common_tls_context
            {
                from_common(common);
            }
        }
    }
    out
}
