//! TLS transport sockets and SDS secrets → the config model's `tls`.

use envoy_types::pb::envoy::config::core::v3::{HealthStatus, TransportSocket};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CertificateValidationContext, CommonTlsContext, DownstreamTlsContext, SubjectAltNameMatcher,
    TlsCertificate, TlsParameters, UpstreamTlsContext,
    common_tls_context::{CombinedCertificateValidationContext, ValidationContextType},
    subject_alt_name_matcher::SanType,
    tls_parameters::TlsProtocol,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{StringMatcher, string_matcher::MatchPattern};
use envoy_types::pb::google::protobuf::BoolValue;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use serde_json::json;
use sluice_core::config::tls::{EcdhCurve, Pem, TlsVersion};

use super::*;
use crate::fixtures::*;

/// A CA's PEM and a leaf it issued for `names`: (ca, chain, key).
pub(crate) fn pki(names: &[&str]) -> (String, String, String) {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    (ca.pem(), leaf.pem(), key.serialize_pem())
}

fn exact_dns(name: &str) -> SubjectAltNameMatcher {
    SubjectAltNameMatcher {
        san_type: SanType::Dns as i32,
        matcher: Some(StringMatcher {
            match_pattern: Some(MatchPattern::Exact(name.to_owned())),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A static cluster `up` with one host and this transport socket.
fn tls_cluster(socket: TransportSocket) -> Resources {
    let mut c = static_cluster("up", &[("127.0.0.1", 8443, HealthStatus::Healthy as i32)]);
    c.transport_socket = Some(socket);
    let mut r = Resources::default();
    r.clusters.insert("up".into(), c);
    r.listeners
        .insert("out".into(), tcp_listener("out", "127.0.0.1", 9001, "up"));
    r
}

/// A TCP proxy listener `in` to cluster `up` (plaintext) with this transport socket.
fn tls_listener(socket: TransportSocket) -> Resources {
    let mut r = Resources::default();
    r.clusters.insert(
        "up".into(),
        static_cluster("up", &[("127.0.0.1", 8080, HealthStatus::Healthy as i32)]),
    );
    let mut l = tcp_listener("in", "127.0.0.1", 9443, "up");
    l.filter_chains[0].transport_socket = Some(socket);
    r.listeners.insert("in".into(), l);
    r
}

fn bootstrap() -> Value {
    json!({ "listeners": [], "clusters": [] })
}

fn errors(r: &Resources) -> Vec<String> {
    assemble(&bootstrap(), r)
        .expect_err("refused")
        .iter()
        .map(ToString::to_string)
        .collect()
}

fn inline(pem: &str, secret: Option<&str>) -> Pem {
    Pem::Inline {
        secret: secret.map(str::to_owned),
        pem: pem.into(),
    }
}

#[test]
fn an_upstream_tls_context_with_an_sds_ca_becomes_the_clusters_tls() {
    let (ca, chain, key) = pki(&["up.example.com"]);
    let mut ctx = upstream_tls_sds("up.example.com", "root-ca");
    let common = ctx.common_tls_context.as_mut().unwrap();
    common.alpn_protocols = vec!["h2".into()];
    common.tls_certificates = vec![TlsCertificate {
        certificate_chain: Some(inline_pem(&chain)),
        private_key: Some(inline_pem(&key)),
        ..Default::default()
    }];
    common.tls_params = Some(TlsParameters {
        tls_minimum_protocol_version: TlsProtocol::TlSv12 as i32,
        tls_maximum_protocol_version: TlsProtocol::TlSv13 as i32,
        ..Default::default()
    });
    let mut r = tls_cluster(tls_socket(&ctx));
    r.secrets
        .insert("root-ca".into(), ca_secret("root-ca", &ca));
    let a = assemble(&bootstrap(), &r).expect("valid");
    let tls = a.config.clusters[0].tls.as_deref().expect("tls");
    assert_eq!(tls.sni.as_deref(), Some("up.example.com"));
    assert_eq!(tls.ca, inline(&ca, Some("root-ca")));
    let client = tls.client_certificate.as_ref().expect("client certificate");
    assert_eq!(client.cert_chain, inline(&chain, None));
    assert_eq!(client.private_key, inline(&key, None));
    assert_eq!(tls.alpn, ["h2"]);
}

#[test]
fn an_inline_validation_context_gives_the_ca_and_the_exact_sans_to_verify() {
    let (ca, _, _) = pki(&["x"]);
    let ctx = UpstreamTlsContext {
        common_tls_context: Some(CommonTlsContext {
            validation_context_type: Some(ValidationContextType::ValidationContext(
                CertificateValidationContext {
                    trusted_ca: Some(inline_pem(&ca)),
                    match_typed_subject_alt_names: vec![
                        exact_dns("up.example.com"),
                        SubjectAltNameMatcher {
                            san_type: SanType::Uri as i32,
                            ..exact_dns("spiffe://cluster.local/ns/default/sa/up")
                        },
                    ],
                    ..Default::default()
                },
            )),
            ..Default::default()
        }),
        ..Default::default()
    };
    let a = assemble(&bootstrap(), &tls_cluster(tls_socket(&ctx))).expect("valid");
    let tls = a.config.clusters[0].tls.as_deref().unwrap();
    assert_eq!(tls.sni, None);
    assert_eq!(tls.ca, inline(&ca, None));
    assert_eq!(
        tls.verify_subject_alt_names,
        ["up.example.com", "spiffe://cluster.local/ns/default/sa/up"]
    );
    // A file stays a file (read and watched by the runtime).
    let ctx = UpstreamTlsContext {
        sni: "up.example.com".into(),
        common_tls_context: Some(CommonTlsContext {
            validation_context_type: Some(ValidationContextType::ValidationContext(
                CertificateValidationContext {
                    trusted_ca: Some(DataSource {
                        specifier: Some(Specifier::Filename("/etc/ca.pem".into())),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
            )),
            ..Default::default()
        }),
        ..Default::default()
    };
    let a = assemble(&bootstrap(), &tls_cluster(tls_socket(&ctx))).expect("valid");
    let tls = a.config.clusters[0].tls.as_deref().unwrap();
    assert_eq!(tls.ca, Pem::File("/etc/ca.pem".into()));
}

use envoy_types::pb::envoy::config::core::v3::{DataSource, data_source::Specifier};

#[test]
fn an_upstream_context_without_a_ca_is_refused_sluice_never_originates_unverified() {
    let ctx = UpstreamTlsContext {
        sni: "up.example.com".into(),
        ..Default::default()
    };
    assert_eq!(
        errors(&tls_cluster(tls_socket(&ctx))),
        [
            "cluster \"up\" transport_socket.typed_config.common_tls_context: no validation \
             context with a trusted_ca: Sluice never originates TLS to an upstream it does not \
             verify"
        ]
    );
}

#[test]
fn unsupported_tls_fields_and_sockets_are_refused_by_path() {
    let (ca, _, _) = pki(&["x"]);
    let with_ca = |mut ctx: UpstreamTlsContext| {
        ctx.common_tls_context
            .get_or_insert_default()
            .validation_context_type = Some(ValidationContextType::ValidationContext(
            CertificateValidationContext {
                trusted_ca: Some(inline_pem(&ca)),
                ..Default::default()
            },
        ));
        ctx.sni = "up.example.com".into();
        ctx
    };
    let at = "cluster \"up\" transport_socket";
    let renegotiate = with_ca(UpstreamTlsContext {
        allow_renegotiation: true,
        ..Default::default()
    });
    assert_eq!(
        errors(&tls_cluster(tls_socket(&renegotiate))),
        [format!(
            "{at}.typed_config.allow_renegotiation: unsupported"
        )]
    );
    // A cluster's cipher suites: what it offers, in order; a list of only suites Sluice does
    // not negotiate (a CBC suite) is refused by path.
    let mut ciphers = with_ca(UpstreamTlsContext::default());
    ciphers.common_tls_context.as_mut().unwrap().tls_params = Some(TlsParameters {
        cipher_suites: vec!["AES128-SHA".into()],
        ..Default::default()
    });
    let e = errors(&tls_cluster(tls_socket(&ciphers)));
    assert!(
        e.len() == 1
            && e[0].starts_with(&format!(
                "{at}.typed_config.common_tls_context.tls_params.cipher_suites: names no suite \
                 Sluice negotiates"
            )),
        "{e:?}"
    );
    ciphers.common_tls_context.as_mut().unwrap().tls_params = Some(TlsParameters {
        cipher_suites: vec!["AES128-SHA".into(), "ECDHE-RSA-AES128-GCM-SHA256".into()],
        ..Default::default()
    });
    let c = assemble(&bootstrap(), &tls_cluster(tls_socket(&ciphers))).unwrap();
    assert_eq!(
        c.config.clusters[0].tls.as_deref().unwrap().cipher_suites,
        [sluice_core::config::tls::CipherSuite::EcdheRsaAes128GcmSha256]
    );
    let mut old = with_ca(UpstreamTlsContext::default());
    old.common_tls_context.as_mut().unwrap().tls_params = Some(TlsParameters {
        tls_minimum_protocol_version: TlsProtocol::TlSv10 as i32,
        ..Default::default()
    });
    assert_eq!(
        errors(&tls_cluster(tls_socket(&old))),
        [format!(
            "{at}.typed_config.common_tls_context.tls_params.tls_minimum_protocol_version: only \
             TLS_AUTO, TLSv1_2 or TLSv1_3 (Sluice speaks TLS 1.2 and 1.3)"
        )]
    );
    let mut prefix = with_ca(UpstreamTlsContext::default());
    if let Some(ValidationContextType::ValidationContext(v)) = &mut prefix
        .common_tls_context
        .as_mut()
        .unwrap()
        .validation_context_type
    {
        v.match_typed_subject_alt_names = vec![SubjectAltNameMatcher {
            matcher: Some(StringMatcher {
                match_pattern: Some(MatchPattern::Prefix("up".into())),
                ..Default::default()
            }),
            ..exact_dns("")
        }];
    }
    assert_eq!(
        errors(&tls_cluster(tls_socket(&prefix))),
        [format!(
            "{at}.typed_config.common_tls_context.validation_context.\
             match_typed_subject_alt_names[0].matcher: unsupported (only a non-empty `exact` \
             without ignore_case)"
        )]
    );
    let raw = TransportSocket {
        name: "envoy.transport_sockets.raw_buffer".into(),
        config_type: None,
    };
    assert_eq!(
        errors(&tls_cluster(raw)),
        [format!(
            "{at}: \"envoy.transport_sockets.raw_buffer\": unsupported (only \
             envoy.transport_sockets.tls with a typed_config)"
        )]
    );
    // A downstream context on a cluster is another type.
    let wrong = tls_socket(&DownstreamTlsContext::default());
    assert!(
        errors(&tls_cluster(wrong))[0].contains("unsupported (only envoy.transport_sockets.tls: type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext)"),
    );
}

/// Session tuning and per-request SNI / SAN validation are refused by path unless at their
/// defaults, which are what Sluice does (issue 13, M4: they were noted and ignored).
#[test]
fn session_and_per_request_sni_settings_are_refused_by_path_unless_default() {
    use envoy_types::pb::envoy::config::core::v3::UpstreamHttpProtocolOptions;
    use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::downstream_tls_context::SessionTicketKeysType;
    use envoy_types::pb::envoy::extensions::upstreams::http::v3::HttpProtocolOptions;
    use envoy_types::pb::google::protobuf::{Any, Duration as PbDuration, UInt32Value};
    use prost::{Message as _, Name as _};
    const KEY: &str = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions";
    let (ca, chain, key) = pki(&["in.example.com"]);
    let upstream = |keys: Option<u32>| {
        let mut ctx = upstream_tls_sds("up.example.com", "root-ca");
        ctx.max_session_keys = keys.map(|value| UInt32Value { value });
        let mut r = tls_cluster(tls_socket(&ctx));
        r.secrets
            .insert("root-ca".into(), ca_secret("root-ca", &ca));
        r
    };
    assert!(assemble(&bootstrap(), &upstream(Some(1))).is_ok());
    assert_eq!(
        errors(&upstream(Some(0))),
        [
            "cluster \"up\" transport_socket.typed_config.max_session_keys: unsupported (only 1, \
          the default: Sluice resumes sessions with its own cache)"
        ]
    );
    let with_options = |u: UpstreamHttpProtocolOptions| {
        let mut r = upstream(None);
        let o = HttpProtocolOptions {
            upstream_http_protocol_options: Some(u),
            ..Default::default()
        };
        r.clusters
            .get_mut("up")
            .unwrap()
            .typed_extension_protocol_options
            .insert(
                KEY.into(),
                Any {
                    type_url: HttpProtocolOptions::type_url(),
                    value: o.encode_to_vec(),
                },
            );
        r
    };
    assert!(
        assemble(
            &bootstrap(),
            &with_options(UpstreamHttpProtocolOptions::default())
        )
        .is_ok()
    );
    for (u, field) in [
        (
            UpstreamHttpProtocolOptions {
                auto_sni: true,
                ..Default::default()
            },
            "auto_sni",
        ),
        (
            UpstreamHttpProtocolOptions {
                auto_san_validation: true,
                ..Default::default()
            },
            "auto_san_validation",
        ),
    ] {
        let e = errors(&with_options(u));
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(
            e[0].starts_with(&format!(
                "cluster \"up\" typed_extension_protocol_options[{KEY:?}].\
                 upstream_http_protocol_options.{field}: unsupported"
            )),
            "{e:?}"
        );
    }
    let downstream = |f: &dyn Fn(&mut DownstreamTlsContext)| {
        let mut ctx = downstream_tls_sds("server-cert");
        f(&mut ctx);
        let mut r = tls_listener(tls_socket(&ctx));
        r.secrets.insert(
            "server-cert".into(),
            certificate_secret("server-cert", &chain, &key),
        );
        r
    };
    assert!(assemble(&bootstrap(), &downstream(&|_| {})).is_ok());
    let at = "listener \"in\" filter_chains[0].transport_socket.typed_config";
    let e = errors(&downstream(&|c| {
        c.session_timeout = Some(PbDuration {
            seconds: 60,
            nanos: 0,
        });
    }));
    assert!(
        e.len() == 1 && e[0].starts_with(&format!("{at}.session_timeout: unsupported")),
        "{e:?}"
    );
    // Turning resumption off is honoured, each kind on its own.
    let tls_of = |r: &Resources| {
        let a = assemble(&bootstrap(), r).expect("valid");
        *a.config.listeners[0].tls.clone().expect("tls")
    };
    let t = tls_of(&downstream(&|c| {
        c.disable_stateful_session_resumption = true
    }));
    assert!(!t.session_cache && t.session_tickets);
    let t = tls_of(&downstream(&|c| {
        c.session_ticket_keys_type = Some(
            SessionTicketKeysType::DisableStatelessSessionResumption(true),
        );
    }));
    assert!(t.session_cache && !t.session_tickets);
    let t = tls_of(&downstream(&|c| {
        c.session_ticket_keys_type = Some(
            SessionTicketKeysType::DisableStatelessSessionResumption(false),
        );
    }));
    assert!(t.session_cache && t.session_tickets);
    // Ticket keys of the control plane's: Sluice makes and rotates its own.
    let e = errors(&downstream(&|c| {
        c.session_ticket_keys_type =
            Some(SessionTicketKeysType::SessionTicketKeys(Default::default()));
    }));
    assert!(
        e.len() == 1 && e[0].starts_with(&format!("{at}.session_ticket_keys: unsupported")),
        "{e:?}"
    );
    // tls_params on a listener: both versions and the curves, in order.
    let params = |p: TlsParameters| {
        move |c: &mut DownstreamTlsContext| {
            c.common_tls_context.as_mut().unwrap().tls_params = Some(p.clone());
        }
    };
    let t = tls_of(&downstream(&params(TlsParameters {
        tls_maximum_protocol_version: TlsProtocol::TlSv12 as i32,
        ecdh_curves: vec!["P-256".into(), "X25519".into()],
        ..Default::default()
    })));
    assert_eq!(t.max_version, TlsVersion::Tls12);
    assert_eq!(t.ecdh_curves, [EcdhCurve::P256, EcdhCurve::X25519]);
    let p_at = format!("{at}.common_tls_context.tls_params");
    let e = errors(&downstream(&params(TlsParameters {
        ecdh_curves: vec!["X25519".into(), "P-521".into()],
        ..Default::default()
    })));
    assert_eq!(
        e,
        [format!(
            "{p_at}.ecdh_curves[1]: \"P-521\": unsupported (Sluice offers X25519, P-256, P-384, \
             X25519MLKEM768)"
        )]
    );
    let e = errors(&downstream(&params(TlsParameters {
        ecdh_curves: vec!["X25519MLKEM768".into()],
        ..Default::default()
    })));
    assert!(
        e.len() == 1
            && e[0].starts_with(&format!(
                "{p_at}.ecdh_curves: X25519MLKEM768 is TLS 1.3 only"
            )),
        "{e:?}"
    );
    let e = errors(&downstream(&params(TlsParameters {
        ecdh_curves: vec!["P-256".into(), "P-256".into()],
        ..Default::default()
    })));
    assert_eq!(
        e,
        [format!("{p_at}.ecdh_curves[1]: \"P-256\" is listed twice")]
    );
    // Cipher suites: istiod's inbound list (its two RSA key exchange suites skipped), in
    // order; an unknown one and one listed twice (inside a BoringSSL group) by index.
    let t = tls_of(&downstream(&params(TlsParameters {
        cipher_suites: [
            "ECDHE-ECDSA-AES256-GCM-SHA384",
            "ECDHE-RSA-AES256-GCM-SHA384",
            "ECDHE-ECDSA-AES128-GCM-SHA256",
            "ECDHE-RSA-AES128-GCM-SHA256",
            "AES256-GCM-SHA384",
            "AES128-GCM-SHA256",
        ]
        .map(String::from)
        .to_vec(),
        ..Default::default()
    })));
    {
        use sluice_core::config::tls::CipherSuite as S;
        assert_eq!(
            t.cipher_suites,
            [
                S::EcdheEcdsaAes256GcmSha384,
                S::EcdheRsaAes256GcmSha384,
                S::EcdheEcdsaAes128GcmSha256,
                S::EcdheRsaAes128GcmSha256
            ]
        );
    }
    let e = errors(&downstream(&params(TlsParameters {
        cipher_suites: vec!["ECDHE-ECDSA-AES128-GCM-SHA256".into(), "RC4-SHA".into()],
        ..Default::default()
    })));
    assert!(
        e.len() == 1
            && e[0].starts_with(&format!(
                "{p_at}.cipher_suites[1]: unknown cipher suite \"RC4-SHA\" (Sluice negotiates"
            )),
        "{e:?}"
    );
    // BoringSSL's reading: a suite named again keeps its first place; an IANA name.
    let t = tls_of(&downstream(&params(TlsParameters {
        cipher_suites: vec![
            "[ECDHE-ECDSA-AES128-GCM-SHA256|ECDHE-ECDSA-CHACHA20-POLY1305]".into(),
            "ECDHE-ECDSA-CHACHA20-POLY1305".into(),
            "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256".into(),
        ],
        ..Default::default()
    })));
    {
        use sluice_core::config::tls::CipherSuite as S;
        assert_eq!(
            t.cipher_suites,
            [
                S::EcdheEcdsaAes128GcmSha256,
                S::EcdheEcdsaChacha20Poly1305,
                S::EcdheRsaAes128GcmSha256
            ]
        );
    }
    assert!(!t.prefer_client_ciphers);
    // prefer_client_ciphers: the client's order.
    let t = tls_of(&downstream(&|c: &mut DownstreamTlsContext| {
        c.prefer_client_ciphers = true;
    }));
    assert!(t.prefer_client_ciphers);
    let e = errors(&downstream(&params(TlsParameters {
        tls_minimum_protocol_version: TlsProtocol::TlSv13 as i32,
        tls_maximum_protocol_version: TlsProtocol::TlSv12 as i32,
        ..Default::default()
    })));
    assert_eq!(
        e,
        [format!(
            "{p_at}.tls_minimum_protocol_version: TLSv1_3 is above tls_maximum_protocol_version \
             (TLSv1_2)"
        )]
    );
}

#[test]
fn a_downstream_context_with_an_sds_certificate_becomes_the_listeners_tls() {
    let (ca, chain, key) = pki(&["in.example.com"]);
    let mut ctx = downstream_tls_sds("server-cert");
    ctx.require_client_certificate = Some(BoolValue { value: true });
    let common = ctx.common_tls_context.as_mut().unwrap();
    common.validation_context_type = Some(ValidationContextType::CombinedValidationContext(
        CombinedCertificateValidationContext {
            default_validation_context: Some(CertificateValidationContext {
                match_typed_subject_alt_names: vec![SubjectAltNameMatcher {
                    san_type: SanType::Uri as i32,
                    ..exact_dns("spiffe://cluster.local/ns/default/sa/client")
                }],
                ..Default::default()
            }),
            validation_context_sds_secret_config: Some(sds("client-ca")),
            ..Default::default()
        },
    ));
    common.tls_params = Some(TlsParameters {
        tls_minimum_protocol_version: TlsProtocol::TlSv13 as i32,
        ..Default::default()
    });
    let mut r = tls_listener(tls_socket(&ctx));
    r.secrets.insert(
        "server-cert".into(),
        certificate_secret("server-cert", &chain, &key),
    );
    r.secrets
        .insert("client-ca".into(), ca_secret("client-ca", &ca));
    let a = assemble(&bootstrap(), &r).expect("valid");
    let tls = a.config.listeners[0].tls.as_deref().expect("tls");
    assert_eq!(tls.certificates.len(), 1);
    assert_eq!(
        tls.certificates[0].cert_chain,
        inline(&chain, Some("server-cert"))
    );
    assert_eq!(
        tls.certificates[0].private_key,
        inline(&key, Some("server-cert"))
    );
    assert_eq!(tls.client_ca, Some(inline(&ca, Some("client-ca"))));
    assert!(tls.require_client_certificate);
    assert_eq!(
        tls.verify_subject_alt_names,
        ["spiffe://cluster.local/ns/default/sa/client"]
    );
    assert_eq!(tls.min_version, TlsVersion::Tls13);

    // Envoy's default: a client certificate is asked for, not required.
    let mut ctx = downstream_tls_sds("server-cert");
    ctx.common_tls_context
        .as_mut()
        .unwrap()
        .validation_context_type = Some(ValidationContextType::ValidationContextSdsSecretConfig(
        sds("client-ca"),
    ));
    r.listeners.get_mut("in").unwrap().filter_chains[0].transport_socket = Some(tls_socket(&ctx));
    let a = assemble(&bootstrap(), &r).expect("valid");
    let tls = a.config.listeners[0].tls.as_deref().unwrap();
    assert!(tls.client_ca.is_some() && !tls.require_client_certificate);
}

#[test]
fn secret_contents_never_appear_in_the_dump_or_debug_output() {
    let (_, chain, key) = pki(&["in.example.com"]);
    let mut r = tls_listener(tls_socket(&downstream_tls_sds("server-cert")));
    r.secrets.insert(
        "server-cert".into(),
        certificate_secret("server-cert", &chain, &key),
    );
    let a = assemble(&bootstrap(), &r).expect("valid");
    let dump = serde_json::to_string(&a.config.listeners[0]).unwrap();
    let debug = format!("{:?}", a.config);
    for text in [&dump, &debug] {
        assert!(!text.contains("PRIVATE KEY"), "{text}");
        assert!(!text.contains("BEGIN CERTIFICATE"), "{text}");
    }
    assert!(dump.contains("\"secret\":\"server-cert\""), "{dump}");
    assert!(dump.contains("[redacted: "), "{dump}");
}

/// A key padded past `MAX_PEM_BYTES` (comment lines parse) is refused at translation, naming
/// the secret and never quoting the text (issue 13, H1).
#[test]
fn an_oversized_secret_is_refused_naming_it_without_its_text() {
    let (_, chain, key) = pki(&["in.example.com"]);
    let padded = format!(
        "{key}{}",
        "# padding padding padding padding padding\n".repeat(34_000)
    );
    assert!(padded.len() > 1 << 20);
    let mut r = tls_listener(tls_socket(&downstream_tls_sds("server-cert")));
    r.secrets.insert(
        "server-cert".into(),
        certificate_secret("server-cert", &chain, &padded),
    );
    let e = errors(&r);
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(
        e[0].starts_with("secret \"server-cert\" tls_certificate.private_key: ")
            && e[0].contains("larger than 1048576 bytes"),
        "{}",
        &e[0][..e[0].len().min(400)]
    );
    assert!(!e[0].contains("BEGIN") && !e[0].contains("padding"));
}

#[test]
fn a_missing_wrong_or_unparsable_secret_is_refused_naming_it() {
    let (ca, chain, key) = pki(&["in.example.com"]);
    let mut r = tls_listener(tls_socket(&downstream_tls_sds("server-cert")));
    assert_eq!(
        errors(&r),
        [
            "listener \"in\" filter_chains[0].transport_socket.typed_config.common_tls_context.\
             tls_certificate_sds_secret_configs[0]: secret \"server-cert\" not received"
        ]
    );
    r.secrets
        .insert("server-cert".into(), ca_secret("server-cert", &ca));
    assert_eq!(
        errors(&r),
        ["secret \"server-cert\": is used as a certificate \
             (tls_certificate_sds_secret_configs) but holds no tls_certificate"]
    );
    let garbage = "-----BEGIN PRIVATE KEY-----\nnot base64!\n-----END PRIVATE KEY-----\n";
    r.secrets.insert(
        "server-cert".into(),
        certificate_secret("server-cert", &chain, garbage),
    );
    let e = errors(&r);
    assert_eq!(e.len(), 1);
    assert!(
        e[0].starts_with("secret \"server-cert\" tls_certificate.private_key: not usable PEM: "),
        "{e:?}"
    );
    assert!(!e[0].contains("not base64!"), "{e:?}");
    // A certificate whose DER is not X.509.
    let not_x509 = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
    r.secrets.insert(
        "server-cert".into(),
        certificate_secret("server-cert", not_x509, &key),
    );
    assert!(
        errors(&r)[0].starts_with(
            "secret \"server-cert\" tls_certificate.certificate_chain: not usable PEM: certificate 0"
        ),
        "{:?}",
        errors(&r)
    );
    // Only over ADS.
    let mut ctx = downstream_tls_sds("server-cert");
    ctx.common_tls_context
        .as_mut()
        .unwrap()
        .tls_certificate_sds_secret_configs[0]
        .sds_config = None;
    let r = tls_listener(tls_socket(&ctx));
    assert!(errors(&r)[0].contains("sds_config: missing (secrets come over ADS"));
}

#[test]
fn a_listener_without_a_certificate_or_with_a_requirement_it_cannot_check_is_refused() {
    let ctx = DownstreamTlsContext::default();
    assert_eq!(
        errors(&tls_listener(tls_socket(&ctx))),
        [
            "listener \"in\" filter_chains[0].transport_socket.typed_config.common_tls_context: \
             no certificate (tls_certificates or tls_certificate_sds_secret_configs)"
        ]
    );
    let (_, chain, key) = pki(&["in.example.com"]);
    let mut ctx = downstream_tls_sds("c");
    ctx.require_client_certificate = Some(BoolValue { value: true });
    let mut r = tls_listener(tls_socket(&ctx));
    r.secrets
        .insert("c".into(), certificate_secret("c", &chain, &key));
    assert_eq!(
        errors(&r),
        [
            "listener \"in\" filter_chains[0].transport_socket.typed_config.\
             require_client_certificate: set without a validation context (trusted_ca) to \
             verify clients with"
        ]
    );
}

#[test]
fn the_secrets_named_by_clusters_and_listeners_are_what_sds_subscribes_to() {
    let mut r = tls_listener(tls_socket(&downstream_tls_sds("server-cert")));
    r.clusters.get_mut("up").unwrap().transport_socket =
        Some(tls_socket(&upstream_tls_sds("up.example.com", "root-ca")));
    let names: Vec<String> = sds_names(r.clusters.values(), r.listeners.values())
        .into_iter()
        .collect();
    assert_eq!(names, ["root-ca", "server-cert"]);
    // A secret from an SDS source of its own (Istio's `sds-grpc`) is not subscribed to over
    // ADS but on that source's stream ([`source_sds_names`]).
    let mut ctx = downstream_tls_sds("server-cert");
    ctx.common_tls_context
        .as_mut()
        .unwrap()
        .tls_certificate_sds_secret_configs[0] =
        crate::fixtures::source_sds("sds-grpc", "server-cert");
    let r = tls_listener(tls_socket(&ctx));
    assert!(sds_names(r.clusters.values(), r.listeners.values()).is_empty());
    let by_source = super::source_sds_names(r.clusters.values(), r.listeners.values());
    assert_eq!(
        by_source,
        BTreeMap::from([(
            "sds-grpc".to_owned(),
            std::collections::BTreeSet::from(["server-cert".to_owned()])
        )])
    );
    // An `api_config_source` of no type naming no gRPC cluster is neither: refused at once, by
    // path.
    let mut ctx = downstream_tls_sds("server-cert");
    ctx.common_tls_context
        .as_mut()
        .unwrap()
        .tls_certificate_sds_secret_configs[0]
        .sds_config = Some(ConfigSource {
        config_source_specifier: Some(ConfigSourceSpecifier::ApiConfigSource(Default::default())),
        ..Default::default()
    });
    let r = tls_listener(tls_socket(&ctx));
    assert!(sds_names(r.clusters.values(), r.listeners.values()).is_empty());
    assert!(super::source_sds_names(r.clusters.values(), r.listeners.values()).is_empty());
    let e = errors(&r);
    assert_eq!(
        e,
        [
            "listener \"in\" filter_chains[0].transport_socket.typed_config.common_tls_context.\
          tls_certificate_sds_secret_configs[0].sds_config.api_config_source.api_type: only \
          GRPC (state of the world, what Istio's agent serves) for an SDS source"
        ]
    );
}

use envoy_types::pb::envoy::config::core::v3::{
    ConfigSource, config_source::ConfigSourceSpecifier,
};

/// DNS and URI SAN matchers share one list, so a value that could match the other type is
/// refused (issue 13, L1).
#[test]
fn a_dns_san_matcher_with_a_scheme_or_a_uri_one_without_is_refused() {
    let (ca, _, _) = pki(&["x"]);
    let with = |m: SubjectAltNameMatcher| {
        let ctx = UpstreamTlsContext {
            common_tls_context: Some(CommonTlsContext {
                validation_context_type: Some(ValidationContextType::ValidationContext(
                    CertificateValidationContext {
                        trusted_ca: Some(inline_pem(&ca)),
                        match_typed_subject_alt_names: vec![m],
                        ..Default::default()
                    },
                )),
                ..Default::default()
            }),
            ..Default::default()
        };
        tls_cluster(tls_socket(&ctx))
    };
    let uri = |v: &str| SubjectAltNameMatcher {
        san_type: SanType::Uri as i32,
        ..exact_dns(v)
    };
    assert!(assemble(&bootstrap(), &with(exact_dns("up.example.com"))).is_ok());
    assert!(assemble(&bootstrap(), &with(uri("spiffe://cluster.local/ns/a/sa/b"))).is_ok());
    let e = errors(&with(exact_dns("spiffe://cluster.local/ns/a/sa/b")));
    assert!(e[0].contains("is not a DNS name"), "{e:?}");
    let e = errors(&with(uri("up.example.com")));
    assert!(e[0].contains("is not a URI"), "{e:?}");
}

/// Listener `sni` on 127.0.0.1:9443 with these filter chains: (server names, cluster).
pub(crate) fn sni_listener(chains: &[(&[&str], &str)]) -> Resources {
    use envoy_types::pb::envoy::config::listener::v3::{FilterChainMatch, ListenerFilter};
    let mut r = Resources::default();
    let mut l = tcp_listener("sni", "127.0.0.1", 9443, "x");
    l.filter_chains = chains
        .iter()
        .map(|(names, cluster)| {
            let mut c = tcp_listener("sni", "127.0.0.1", 9443, cluster).filter_chains[0].clone();
            if !names.is_empty() {
                c.filter_chain_match = Some(FilterChainMatch {
                    server_names: names.iter().map(|n| (*n).to_owned()).collect(),
                    transport_protocol: "tls".into(),
                    ..Default::default()
                });
            }
            r.clusters.insert(
                (*cluster).to_owned(),
                static_cluster(
                    cluster,
                    &[("127.0.0.1", 8443, HealthStatus::Healthy as i32)],
                ),
            );
            c
        })
        .collect();
    l.listener_filters = vec![ListenerFilter {
        name: "envoy.filters.listener.tls_inspector".into(),
        ..Default::default()
    }];
    l.listener_filters_timeout = Some(envoy_types::pb::google::protobuf::Duration {
        seconds: 5,
        nanos: 0,
    });
    r.listeners.insert("sni".into(), l);
    r
}

#[test]
fn filter_chains_by_server_name_become_tls_passthrough_routes() {
    let r = sni_listener(&[
        (&["api.example.com", "*.api.example.com"], "api"),
        (&[], "fallback"),
        (&["*.example.com"], "web"),
    ]);
    let a = assemble(&bootstrap(), &r).expect("valid");
    let sluice_core::config::ListenerFilter::TcpProxy(tcp) = &a.config.listeners[0].filter else {
        panic!("a tcp_proxy: {:?}", a.config.listeners[0].filter)
    };
    assert_eq!(tcp.cluster, "fallback");
    assert_eq!(tcp.client_hello_timeout, std::time::Duration::from_secs(5));
    let routes: Vec<(Vec<&str>, &str)> = tcp
        .sni_routes
        .iter()
        .map(|r| {
            (
                r.server_names.iter().map(String::as_str).collect(),
                r.cluster.as_str(),
            )
        })
        .collect();
    assert_eq!(
        routes,
        [
            (vec!["api.example.com", "*.api.example.com"], "api"),
            (vec!["*.example.com"], "web"),
        ]
    );
    // The route's choice: exact, then the longest wildcard, else the fallback.
    let pick = |name| {
        let (i, _) = tcp.cluster_for_server_name(Some(name));
        a.config.clusters[i].name.clone()
    };
    assert_eq!(pick("api.example.com"), "api");
    assert_eq!(pick("v1.api.example.com"), "api");
    assert_eq!(pick("www.example.com"), "web");
    assert_eq!(pick("other.org"), "fallback");
    // `listener_filters_timeout: 0s` is no timeout in Envoy: the compact form's ClientHello
    // wait is always bounded, so the listener becomes filter chains, which wait without a
    // limit (issue 13).
    let mut r = r.clone();
    r.listeners.get_mut("sni").unwrap().listener_filters_timeout =
        Some(envoy_types::pb::google::protobuf::Duration::default());
    let a = assemble(&bootstrap(), &r).expect("0s accepted");
    let l = &a.config.listeners[0];
    assert_eq!(l.filter_chains.len(), 3, "{l:?}");
    assert_eq!(l.listener_filters_timeout, std::time::Duration::ZERO);
    assert!(l.tls_inspector.is_all() && l.http_inspector.is_all());
}

#[test]
fn chains_the_passthrough_form_cannot_express_become_filter_chains() {
    use sluice_core::config::{ListenerFilter, TransportProtocol};
    // No chain for the rest: Envoy closes such connections, and so does Sluice now (no
    // default chain), instead of refusing the listener.
    let r = sni_listener(&[(&["a.example.com"], "a"), (&["b.example.com"], "b")]);
    let a = assemble(&bootstrap(), &r).expect("valid");
    let l = &a.config.listeners[0];
    assert!(matches!(l.filter, ListenerFilter::Close), "{:?}", l.filter);
    assert_eq!(l.filter_chains.len(), 2);
    assert_eq!(
        l.filter_chains[1].filter_chain_match.server_names,
        ["b.example.com"]
    );
    assert_eq!(
        l.filter_chains[1].filter_chain_match.transport_protocol,
        Some(TransportProtocol::Tls)
    );
    assert_eq!(
        l.listener_filters_timeout,
        std::time::Duration::from_secs(5)
    );
    // A chain that terminates TLS: its own `tls`; the chain without a match stays a chain.
    let (_, chain, key) = pki(&["a.example.com"]);
    let mut r = sni_listener(&[(&["a.example.com"], "a"), (&[], "b")]);
    r.listeners.get_mut("sni").unwrap().filter_chains[0].transport_socket =
        Some(tls_socket(&downstream_tls_sds("a-cert")));
    r.secrets
        .insert("a-cert".into(), certificate_secret("a-cert", &chain, &key));
    let a = assemble(&bootstrap(), &r).expect("valid");
    let l = &a.config.listeners[0];
    assert!(l.filter_chains[0].tls.is_some() && l.filter_chains[1].tls.is_none());
    assert!(l.filter_chains[1].filter_chain_match.is_empty());
    // Chains by ALPN.
    let mut r = sni_listener(&[(&["a.example.com"], "a"), (&[], "b")]);
    r.listeners.get_mut("sni").unwrap().filter_chains[0]
        .filter_chain_match
        .as_mut()
        .unwrap()
        .application_protocols = vec!["h2".into()];
    let a = assemble(&bootstrap(), &r).expect("valid");
    assert_eq!(
        a.config.listeners[0].filter_chains[0]
            .filter_chain_match
            .application_protocols,
        ["h2"]
    );
    // Another listener filter is still refused by its path.
    let mut r = sni_listener(&[(&["a.example.com"], "a"), (&[], "b")]);
    r.listeners.get_mut("sni").unwrap().listener_filters[0].name =
        "envoy.filters.listener.proxy_protocol".into();
    assert!(
        errors(&r)[0].starts_with(
            "listener \"sni\" listener_filters[0] (envoy.filters.listener.proxy_protocol): \
             unsupported"
        ),
        "{:?}",
        errors(&r)
    );
    // Match fields the model lacks, and an unknown transport protocol, by path.
    let mut r = sni_listener(&[(&["a.example.com"], "a"), (&[], "b")]);
    r.listeners.get_mut("sni").unwrap().filter_chains[0]
        .filter_chain_match
        .as_mut()
        .unwrap()
        .source_ports = vec![1234];
    assert_eq!(
        errors(&r),
        ["listener \"sni\" filter_chains[0].filter_chain_match.source_ports: unsupported"]
    );
    let mut r = sni_listener(&[(&["a.example.com"], "a"), (&[], "b")]);
    r.listeners.get_mut("sni").unwrap().filter_chains[0]
        .filter_chain_match
        .as_mut()
        .unwrap()
        .transport_protocol = "quic".into();
    assert_eq!(
        errors(&r),
        [
            "listener \"sni\" filter_chains[0].filter_chain_match.transport_protocol: \"quic\" \
             is unsupported (only \"tls\" and \"raw_buffer\")"
        ]
    );
    // Two chains Sluice could not choose between (the config's rule): refused, named.
    let r = sni_listener(&[(&["a.example.com"], "a"), (&["a.example.com"], "b")]);
    let e = errors(&r);
    assert!(
        e.len() == 1
            && e[0]
                .contains("filter_chains[1].filter_chain_match: matches the same connections as"),
        "{e:?}"
    );
}

/// Istio's outbound cluster: `transport_socket_matches` of mTLS for the endpoints labelled
/// `tlsMode: istio` (a sidecar's) and plaintext (`raw_buffer`) for the rest.
mod transport_socket_matches {
    use envoy_types::pb::envoy::config::cluster::v3::cluster::TransportSocketMatch;
    use envoy_types::pb::envoy::config::core::v3::{Metadata, transport_socket::ConfigType};
    use envoy_types::pb::envoy::config::endpoint::v3::lb_endpoint::HostIdentifier;
    use envoy_types::pb::google::protobuf::{Any, Struct, Value as PbValue, value::Kind};
    use sluice_core::config::pick_transport_socket;

    use super::*;

    const NAME: &str = "outbound|9080||reviews.default.svc.cluster.local";

    fn labels(pairs: &[(&str, Kind)]) -> Struct {
        Struct {
            fields: pairs
                .iter()
                .map(|(k, v)| {
                    (
                        (*k).to_owned(),
                        PbValue {
                            kind: Some(v.clone()),
                        },
                    )
                })
                .collect(),
        }
    }

    fn istio(v: &str) -> Kind {
        Kind::StringValue(v.to_owned())
    }

    fn raw_buffer() -> TransportSocket {
        TransportSocket {
            name: "envoy.transport_sockets.raw_buffer".into(),
            config_type: Some(ConfigType::TypedConfig(Any {
                type_url: "type.googleapis.com/envoy.extensions.transport_sockets.raw_buffer.v3.\
                           RawBuffer"
                    .into(),
                value: Vec::new(),
            })),
        }
    }

    /// The cluster and its endpoints: 10.0.0.7 with a sidecar (`tlsMode: istio`), 10.0.0.8
    /// without; the mesh root CA over SDS (`ROOTCA`).
    fn outbound(ca: &str) -> Resources {
        let mut c = eds_cluster(NAME);
        c.transport_socket_matches = vec![
            TransportSocketMatch {
                name: "tlsMode-istio".into(),
                r#match: Some(labels(&[("tlsMode", istio("istio"))])),
                transport_socket: Some(tls_socket(&upstream_tls_sds(
                    "outbound_.9080_._.reviews.default.svc.cluster.local",
                    "ROOTCA",
                ))),
            },
            TransportSocketMatch {
                name: "tlsMode-disabled".into(),
                r#match: Some(Struct::default()),
                transport_socket: Some(raw_buffer()),
            },
        ];
        let mut cla = assignment(
            NAME,
            &[
                ("10.0.0.7", 9080, HealthStatus::Healthy as i32),
                ("10.0.0.8", 9080, HealthStatus::Healthy as i32),
            ],
        );
        let lb = &mut cla.endpoints[0].lb_endpoints[0];
        lb.metadata = Some(Metadata {
            filter_metadata: [
                (
                    "envoy.transport_socket_match".to_owned(),
                    labels(&[("tlsMode", istio("istio"))]),
                ),
                (
                    "istio".to_owned(),
                    labels(&[("workload", istio("reviews-v1;default"))]),
                ),
            ]
            .into_iter()
            .collect(),
            ..Default::default()
        });
        assert!(matches!(
            lb.host_identifier,
            Some(HostIdentifier::Endpoint(_))
        ));
        let mut r = Resources::default();
        r.clusters.insert(NAME.into(), c);
        r.endpoints.insert(NAME.into(), cla);
        r.secrets.insert("ROOTCA".into(), ca_secret("ROOTCA", ca));
        r.listeners
            .insert("out".into(), tcp_listener("out", "127.0.0.1", 9001, NAME));
        r
    }

    #[test]
    fn an_istio_outbound_cluster_gives_mtls_to_the_sidecar_endpoint_and_plaintext_to_the_other() {
        let (ca, _, _) = pki(&["x"]);
        let r = outbound(&ca);
        let a = assemble(&bootstrap(), &r).expect("accepted");
        let c = &a.config.clusters[0];
        assert!(c.tls.is_none(), "no transport_socket of its own");
        let names: Vec<&str> = c
            .transport_socket_matches
            .iter()
            .map(|m| m.name.as_str())
            .collect();
        assert_eq!(names, ["tlsMode-istio", "tlsMode-disabled"]);
        let mtls = c.transport_socket_matches[0].tls.as_deref().expect("mTLS");
        assert_eq!(mtls.ca, inline(&ca, Some("ROOTCA")));
        assert_eq!(
            mtls.sni.as_deref(),
            Some("outbound_.9080_._.reviews.default.svc.cluster.local")
        );
        assert!(c.transport_socket_matches[1].tls.is_none(), "raw_buffer");
        assert!(c.transport_socket_matches[1].matches.is_empty());
        let picks: Vec<(String, Option<usize>)> = c
            .hosts
            .iter()
            .map(|h| {
                (
                    h.address.to_string(),
                    pick_transport_socket(
                        &c.transport_socket_matches,
                        h.transport_socket_match.as_deref(),
                    ),
                )
            })
            .collect();
        assert_eq!(
            picks,
            [
                ("10.0.0.7:9080".to_owned(), Some(0)),
                ("10.0.0.8:9080".to_owned(), Some(1))
            ]
        );
        // Its SDS secrets are subscribed to (warming waits for the mesh root CA).
        assert!(
            crate::translate::sds_names(r.clusters.values(), r.listeners.values())
                .contains("ROOTCA")
        );
    }

    /// Issue 13 (review, MEDIUM): Istio's TCP-cluster ALPN `[istio-peer-exchange, istio]`:
    /// `istio-peer-exchange` is negotiated (a peer that selects it speaks Istio's metadata
    /// exchange first), so it is dropped and noted; the mesh markers are kept — in an entry's
    /// context and in the cluster's own.
    #[test]
    fn istio_peer_exchange_is_dropped_from_upstream_alpn_and_noted_markers_kept() {
        let (ca, _, _) = pki(&["x"]);
        let mut r = outbound(&ca);
        let context = |alpn: &[&str]| {
            let mut t = upstream_tls_sds(
                "outbound_.9080_._.reviews.default.svc.cluster.local",
                "ROOTCA",
            );
            t.common_tls_context.as_mut().unwrap().alpn_protocols =
                alpn.iter().map(|p| (*p).to_owned()).collect();
            tls_socket(&t)
        };
        let c = r.clusters.get_mut(NAME).unwrap();
        c.transport_socket_matches[0].transport_socket =
            Some(context(&["istio-peer-exchange", "istio"]));
        c.transport_socket = Some(context(&[
            "istio-http/1.0",
            "istio-http/1.1",
            "istio-h2",
            "istio-peer-exchange",
        ]));
        let a = assemble(&bootstrap(), &r).expect("accepted");
        let c = &a.config.clusters[0];
        let entry = c.transport_socket_matches[0].tls.as_deref().expect("mTLS");
        assert_eq!(entry.alpn, ["istio"]);
        assert_eq!(
            c.tls.as_deref().expect("tls").alpn,
            ["istio-http/1.0", "istio-http/1.1", "istio-h2"]
        );
        let noted: Vec<&String> = a
            .notes
            .ignored
            .iter()
            .filter(|n| n.contains("istio-peer-exchange"))
            .collect();
        assert_eq!(
            noted,
            [
                &format!(
                    "cluster {NAME:?} transport_socket.typed_config.common_tls_context.\
                     alpn_protocols.istio-peer-exchange (dropped: negotiated metadata \
                     exchange, which Sluice does not speak)"
                ),
                &format!(
                    "cluster {NAME:?} transport_socket_matches[0].transport_socket.\
                     typed_config.common_tls_context.alpn_protocols.istio-peer-exchange \
                     (dropped: negotiated metadata exchange, which Sluice does not speak)"
                ),
            ]
        );
    }

    #[test]
    fn a_match_or_an_endpoint_label_that_is_not_a_string_is_refused_by_path() {
        let (ca, _, _) = pki(&["x"]);
        let mut r = outbound(&ca);
        r.clusters.get_mut(NAME).unwrap().transport_socket_matches[0].r#match =
            Some(labels(&[("tlsMode", Kind::BoolValue(true))]));
        assert_eq!(
            errors(&r),
            [format!(
                "cluster {NAME:?} transport_socket_matches[0].match.tlsMode: only string \
                 values are supported (a host's transport is matched on string labels)"
            )]
        );
        let mut r = outbound(&ca);
        r.endpoints.get_mut(NAME).unwrap().endpoints[0].lb_endpoints[0]
            .metadata
            .as_mut()
            .unwrap()
            .filter_metadata
            .insert(
                "envoy.transport_socket_match".into(),
                labels(&[("tlsMode", Kind::NumberValue(1.0))]),
            );
        let e = errors(&r);
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(
            e[0].ends_with(
                "endpoints[0].lb_endpoints[0].metadata.filter_metadata.\
                 envoy.transport_socket_match.tlsMode: only string values are supported (a \
                 host's transport is matched on string labels)"
            ),
            "{e:?}"
        );
    }
}
