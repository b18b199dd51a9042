//! Decoding a listener's `tls` section into a [`ListenerTls`].
//!
//! Invariants of a returned [`ListenerTls`]: at least one certificate, each with both paths
//! non-empty; ALPN names 1..=255 bytes, unique; `require_client_certificate` and
//! `verify_subject_alt_names` only with `client_ca`; SANs non-empty and unique; the handshake
//! timeout > 0; `min_version` ≤ `max_version`; `ecdh_curves` known, unique, not empty, and not
//! only TLS 1.3 groups on a listener held to TLS 1.2; `cipher_suites` (listeners and clusters)
//! known, unique, at least one negotiated, and a TLS 1.2 one where TLS 1.2 suites are named and
//! TLS 1.2 is admitted. The files themselves are read (and their PEM checked) by the runtime,
//! which reports a problem at the same paths.

use serde_json::Value;

use super::decoder::Decoder;
use crate::config::http::HttpCodec;
use crate::config::tls::{
    CertificateFiles, CipherSuite, DEFAULT_HANDSHAKE_TIMEOUT, EcdhCurve, ISTIO_PEER_EXCHANGE_ALPN,
    ListenerTls, MAX_PEM_BYTES, Pem, TlsVersion, UpstreamTls, default_listener_alpn,
    parse_cipher_suites,
};

/// `codec`: the listener's HTTP codec (`None`: not an HTTP listener), which gives the default
/// `alpn` and the protocols it may list; `bolt`: a `bolt` listener, which may list no HTTP
/// protocol (a `tcp_proxy` may: it can terminate TLS for an HTTP backend).
pub(super) fn decode_listener_tls(
    dec: &mut Decoder,
    path: &str,
    v: &Value,
    codec: Option<HttpCodec>,
    bolt: bool,
) -> Option<ListenerTls> {
    let mut obj = dec.object(path, v)?;
    let certificates = obj.req(dec, "certificates").and_then(|(v, p)| {
        let list = dec.list(&p, v, |dec, path, v| {
            let mut c = dec.object(path, v)?;
            let cert_chain = c.req(dec, "cert_chain").and_then(|(v, p)| file(dec, &p, v));
            let private_key = c
                .req(dec, "private_key")
                .and_then(|(v, p)| file(dec, &p, v));
            c.finish(dec);
            Some(CertificateFiles {
                cert_chain: cert_chain?,
                private_key: private_key?,
            })
        })?;
        if list.is_empty() {
            dec.error(&p, "give at least one certificate");
            return None;
        }
        Some(list)
    });
    let alpn = match obj.opt("alpn") {
        Some((v, p)) => unique_strings(dec, &p, v, "ALPN protocol", 255).and_then(|list| {
            // ALPN picks the codec: never promise one the listener does not serve. An HTTP
            // listener offers only the HTTP protocols its codec serves; a Bolt listener offers
            // no HTTP protocol (a client that negotiated one would be answered in Bolt).
            let served: Option<(&[&str], &str)> = match codec {
                Some(HttpCodec::Http1) => Some((&["http/1.1"], "`codec: http1`")),
                Some(HttpCodec::Http2) => Some((&["h2"], "`codec: http2`")),
                Some(HttpCodec::Auto) => Some((&["h2", "http/1.1"], "`codec: auto`")),
                None => None,
            };
            let offending = match served {
                // Agreed, it makes an Istio client write its metadata-exchange header into
                // the stream, which Sluice would pass on as the application's bytes.
                _ if list.iter().any(|id| id == ISTIO_PEER_EXCHANGE_ALPN) => Some(format!(
                    "{ISTIO_PEER_EXCHANGE_ALPN:?} is negotiated, not a marker: an Istio client \
                     that agreed on it would write its metadata-exchange header into the \
                     stream, which Sluice does not speak (offer \"istio\" instead)"
                )),
                Some((served, codec)) => {
                    list.iter()
                        .find(|p| !served.contains(&p.as_str()))
                        .map(|p| {
                            format!(
                                "{p:?} is not served by this listener ({codec}): a client that \
                             negotiated it would be refused"
                            )
                        })
                }
                None if !bolt => None,
                None => list
                    .iter()
                    .find(|p| *p == "h2" || *p == "http/1.1")
                    .map(|p| {
                        format!(
                            "{p:?} is an HTTP protocol and this listener speaks Bolt: a client \
                             that negotiated it would be answered in Bolt"
                        )
                    }),
            };
            match offending {
                Some(message) => {
                    dec.error(&p, message);
                    None
                }
                None => Some(list),
            }
        }),
        None => Some(
            default_listener_alpn(codec)
                .iter()
                .map(|p| (*p).to_owned())
                .collect(),
        ),
    };
    let client_ca = match obj.opt("client_ca") {
        Some((v, p)) => file(dec, &p, v).map(Some),
        None => Some(None),
    };
    let require = obj.opt("require_client_certificate");
    let sans = obj.opt("verify_subject_alt_names");
    let has_ca = matches!(client_ca, Some(Some(_)));
    for (given, key) in [
        (require.as_ref(), "require_client_certificate"),
        (sans.as_ref(), "verify_subject_alt_names"),
    ] {
        if let Some((_, p)) = given
            && !has_ca
            && obj.opt("client_ca").is_none()
        {
            dec.error(
                p,
                format!("`{key}` needs `client_ca` (the CAs that sign client certificates)"),
            );
        }
    }
    let require_client_certificate = match require {
        Some((v, p)) => dec.boolean(&p, v),
        None => Some(true),
    };
    let verify_subject_alt_names = match sans {
        Some((v, p)) => unique_strings(dec, &p, v, "subject alt name", 2048),
        None => Some(Vec::new()),
    };
    let min_version = match obj.opt("min_version") {
        Some((v, p)) => tls_version(dec, &p, v),
        None => Some(TlsVersion::Tls12),
    };
    let max_version = match obj.opt("max_version") {
        Some((v, p)) => tls_version(dec, &p, v).and_then(|max| {
            if min_version.is_some_and(|min| min == TlsVersion::Tls13 && max == TlsVersion::Tls12) {
                dec.error(&p, "1.2 is below `min_version` (1.3)");
                None
            } else {
                Some(max)
            }
        }),
        None => Some(TlsVersion::Tls13),
    };
    let ecdh_curves = match obj.opt("ecdh_curves") {
        Some((v, p)) => unique_strings(dec, &p, v, "curve", 16).and_then(|names| {
            if names.is_empty() {
                dec.error(
                    &p,
                    "must name at least one curve (leave it out for the defaults)",
                );
                return None;
            }
            let mut curves = Vec::with_capacity(names.len());
            for (i, name) in names.iter().enumerate() {
                match EcdhCurve::ALL.iter().find(|(n, _)| n == name) {
                    Some((_, curve)) => curves.push(*curve),
                    None => {
                        let known: Vec<&str> = EcdhCurve::ALL.iter().map(|(n, _)| *n).collect();
                        dec.error(
                            &format!("{p}[{i}]"),
                            format!(
                                "unknown curve {name:?} (expected one of {})",
                                known.join(", ")
                            ),
                        );
                        return None;
                    }
                }
            }
            // TLS 1.2 has no post-quantum group: a listener that admits it needs a classic one,
            // or every TLS 1.2 client would be refused by a config that says it is welcome.
            if min_version == Some(TlsVersion::Tls12)
                && curves.iter().all(|c| *c == EcdhCurve::X25519MlKem768)
            {
                dec.error(
                    &p,
                    "X25519MLKEM768 is TLS 1.3 only and this listener admits TLS 1.2 \
                     (`min_version` 1.2): add a classic group, or set `min_version: 1.3`",
                );
                return None;
            }
            Some(curves)
        }),
        None => Some(Vec::new()),
    };
    let cipher_suites = match obj.opt("cipher_suites") {
        Some((v, p)) => cipher_suites(dec, &p, v, min_version == Some(TlsVersion::Tls12)),
        None => Some(Vec::new()),
    };
    let prefer_client_ciphers = match obj.opt("prefer_client_ciphers") {
        Some((v, p)) => dec.boolean(&p, v),
        None => Some(false),
    };
    let session_tickets = match obj.opt("session_tickets") {
        Some((v, p)) => dec.boolean(&p, v),
        None => Some(true),
    };
    let session_cache = match obj.opt("session_cache") {
        Some((v, p)) => dec.boolean(&p, v),
        None => Some(true),
    };
    let handshake_timeout = match obj.opt("handshake_timeout") {
        Some((v, p)) => dec.duration(&p, v).and_then(|d| {
            if d.is_zero() {
                dec.error(&p, "must be greater than zero");
                None
            } else {
                Some(d)
            }
        }),
        None => Some(DEFAULT_HANDSHAKE_TIMEOUT),
    };
    obj.finish(dec);
    Some(ListenerTls {
        certificates: certificates?,
        alpn: alpn?,
        client_ca: client_ca?,
        require_client_certificate: require_client_certificate?,
        verify_subject_alt_names: verify_subject_alt_names?,
        min_version: min_version?,
        max_version: max_version?,
        ecdh_curves: ecdh_curves?,
        cipher_suites: cipher_suites?,
        prefer_client_ciphers: prefer_client_ciphers?,
        session_tickets: session_tickets?,
        session_cache: session_cache?,
        handshake_timeout: handshake_timeout?,
    })
}

/// A TLS version, `1.2` or `1.3` (numbers in YAML, or strings).
fn tls_version(dec: &mut Decoder, path: &str, v: &Value) -> Option<TlsVersion> {
    let text = match v {
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.clone(),
        _ => String::new(),
    };
    match text.as_str() {
        "1.2" => Some(TlsVersion::Tls12),
        "1.3" => Some(TlsVersion::Tls13),
        _ => {
            dec.error(
                path,
                format!("unknown TLS version {text:?} (expected 1.2 or 1.3)"),
            );
            None
        }
    }
}

/// PEM: a file path (a non-empty string), or `{ inline: PEM, secret: NAME }` (PEM text in the
/// config, what xDS produces; `secret` optional, the SDS secret it came from).
fn file(dec: &mut Decoder, path: &str, v: &Value) -> Option<Pem> {
    if v.is_object() {
        let mut obj = dec.object(path, v)?;
        let pem = obj.req(dec, "inline").and_then(|(v, p)| {
            let s = dec.string(&p, v)?;
            // The message names the field, never the text (it may hold a private key).
            if s.len() as u64 > MAX_PEM_BYTES {
                dec.error(
                    &p,
                    format!(
                        "{} bytes of PEM: larger than {MAX_PEM_BYTES} bytes",
                        s.len()
                    ),
                );
                return None;
            }
            if !s.contains("-----BEGIN ") {
                dec.error(&p, "not PEM (no -----BEGIN line)");
                return None;
            }
            Some(s.to_owned())
        });
        let secret = match obj.opt("secret") {
            Some((v, p)) => dec.string(&p, v).map(|s| Some(s.to_owned())),
            None => Some(None),
        };
        obj.finish(dec);
        return Some(Pem::Inline {
            secret: secret?,
            pem: pem?.into(),
        });
    }
    let s = dec.string(path, v)?;
    if s.is_empty() {
        dec.error(path, "give a file path");
        return None;
    }
    Some(Pem::File(s.to_owned()))
}

/// A list of distinct non-empty strings of at most `max` bytes.
pub(super) fn unique_strings(
    dec: &mut Decoder,
    path: &str,
    v: &Value,
    what: &str,
    max: usize,
) -> Option<Vec<String>> {
    let list = dec.list(path, v, |dec, path, v| {
        let s = dec.string(path, v)?;
        if s.is_empty() || s.len() > max {
            dec.error(path, format!("a {what} is 1 to {max} bytes"));
            return None;
        }
        Some(s.to_owned())
    })?;
    for (i, s) in list.iter().enumerate() {
        if list[..i].contains(s) {
            dec.error(path, format!("{s:?} is listed twice"));
            return None;
        }
    }
    Some(list)
}

/// `clusters[].tls`: `ca` is required (an upstream is always verified), and either `sni` or
/// `verify_subject_alt_names` says which identity the upstream must prove.
pub(super) fn decode_upstream_tls(dec: &mut Decoder, path: &str, v: &Value) -> Option<UpstreamTls> {
    let mut obj = dec.object(path, v)?;
    let sni = match obj.opt("sni") {
        Some((v, p)) => dec.string(&p, v).and_then(|s| {
            let lower = s.to_ascii_lowercase();
            // A host name (RFC 1123 labels: no `-` at either end), not an IP address (its
            // last label is not all digits): what rustls accepts as a DNS name to verify.
            let labels: Vec<&str> = lower.split('.').collect();
            let ok = !lower.is_empty()
                && lower.len() <= 253
                && labels.iter().all(|l| {
                    !l.is_empty()
                        && l.len() <= 63
                        && !l.starts_with('-')
                        && !l.ends_with('-')
                        && l.bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                })
                && labels
                    .last()
                    .is_some_and(|l| !l.bytes().all(|b| b.is_ascii_digit()));
            if ok {
                Some(Some(lower))
            } else {
                dec.error(&p, format!("{s:?} is not a DNS name"));
                None
            }
        }),
        None => Some(None),
    };
    let ca = obj.req(dec, "ca").and_then(|(v, p)| file(dec, &p, v));
    let cert_chain = match obj.opt("cert_chain") {
        Some((v, p)) => file(dec, &p, v).map(|f| Some((f, p))),
        None => Some(None),
    };
    let private_key = match obj.opt("private_key") {
        Some((v, p)) => file(dec, &p, v).map(|f| Some((f, p))),
        None => Some(None),
    };
    let client_certificate = match (cert_chain, private_key) {
        (Some(Some((cert_chain, _))), Some(Some((private_key, _)))) => {
            Some(Some(CertificateFiles {
                cert_chain,
                private_key,
            }))
        }
        (Some(Some((_, p))), Some(None)) => {
            dec.error(&p, "give `private_key` with `cert_chain`");
            None
        }
        (Some(None), Some(Some((_, p)))) => {
            dec.error(&p, "give `cert_chain` with `private_key`");
            None
        }
        (Some(None), Some(None)) => Some(None),
        _ => None,
    };
    let verify_subject_alt_names = match obj.opt("verify_subject_alt_names") {
        Some((v, p)) => unique_strings(dec, &p, v, "subject alt name", 2048),
        None => Some(Vec::new()),
    };
    let alpn = match obj.opt("alpn") {
        Some((v, p)) => unique_strings(dec, &p, v, "ALPN protocol", 255).and_then(|list| {
            if list.iter().any(|id| id == ISTIO_PEER_EXCHANGE_ALPN) {
                dec.error(
                    &p,
                    format!(
                        "ALPN {ISTIO_PEER_EXCHANGE_ALPN:?} is negotiated, not a marker: a peer \
                         that selects it speaks Istio's metadata exchange first, which Sluice \
                         does not; remove it (`istio` marks the mesh)"
                    ),
                );
                return None;
            }
            Some(list)
        }),
        None => Some(Vec::new()),
    };
    // A cluster offers TLS 1.2 and 1.3.
    let cipher_suites = match obj.opt("cipher_suites") {
        Some((v, p)) => cipher_suites(dec, &p, v, true),
        None => Some(Vec::new()),
    };
    if matches!(sni, Some(None)) && matches!(&verify_subject_alt_names, Some(v) if v.is_empty()) {
        dec.error(
            path,
            "give `sni` or `verify_subject_alt_names`: the identity the upstream's certificate \
             must prove",
        );
    }
    obj.finish(dec);
    Some(UpstreamTls {
        sni: sni?,
        ca: ca?,
        client_certificate: client_certificate?,
        verify_subject_alt_names: verify_subject_alt_names?,
        alpn: alpn?,
        cipher_suites: cipher_suites?,
    })
}

/// `cipher_suites` ([`parse_cipher_suites`]); `tls12`: TLS 1.2 is admitted.
fn cipher_suites(
    dec: &mut Decoder,
    path: &str,
    v: &Value,
    tls12: bool,
) -> Option<Vec<CipherSuite>> {
    let names = dec.list(path, v, |dec, path, v| {
        let s = dec.string(path, v)?;
        if s.is_empty() || s.len() > 512 {
            dec.error(path, "a cipher suite is 1 to 512 bytes");
            return None;
        }
        Some(s.to_owned())
    })?;
    match parse_cipher_suites(&names, tls12) {
        Ok(suites) => Some(suites),
        Err(e) => {
            let at = match e.index {
                Some(i) => format!("{path}[{i}]"),
                None => path.to_owned(),
            };
            dec.error(&at, e.message);
            None
        }
    }
}
