//! TLS from xDS end to end: the in-repo ADS server (`support/ads.rs`) pushes a cluster whose
//! `transport_socket` originates TLS to an nginx HTTPS upstream (its CA an SDS secret) and a
//! listener whose filter chain terminates TLS with an SDS certificate; curl reaches the
//! upstream through both, with the defaults (SotW), and over delta. Then a new certificate
//! pushed over ADS is what new handshakes see, while a keep-alive connection opened before
//! carries on, request after request, never told to close (a secret rotation swaps TLS
//! contexts; it is not a reload that drains); a certificate with the wrong key is NACKed and
//! the last good one serves on. And a client CA rotated under the same secret name ends the
//! resumption of sessions its predecessor admitted. Istio's auto-mTLS: `transport_socket_matches`
//! and endpoint labels pick mTLS or plaintext per endpoint, and a label change re-picks. And
//! istiod's own `virtualInbound` over ADS: curl's plaintext HTTP/1.1 and h2c sniffed into its
//! HTTP passthrough chain, a mesh client's mTLS with `istio-peer-exchange` into its TCP one.

#[path = "support/ads.rs"]
#[allow(dead_code)]
mod ads;
mod support;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ads::{AdsServer, Snapshot};
use sluice_xds::envoy_types::pb::google::protobuf::Any;
use sluice_xds::fixtures::{
    any, ca_secret, certificate_secret, downstream_tls_sds, http_listener, route_config,
    static_cluster, tls_socket, upstream_tls_sds,
};
use sluice_xds::translate::ResourceType;
use support::pki::*;
use support::sds::{Held, SdsServer};
use support::*;

/// Listener `in` on `listen` (TLS, certificate: SDS secret `server-cert`) routing to cluster
/// `up` at 127.0.0.1:`upstream` (TLS to `up.example.com`, CA: SDS secret `upstream-ca`); the
/// secrets hold `ca` and the `(chain, key)` given.
fn resources(
    listen: u16,
    upstream: u16,
    ca: &str,
    (chain, key): (&str, &str),
) -> BTreeMap<String, Vec<Any>> {
    let mut up = static_cluster("up", &[("127.0.0.1", u32::from(upstream), 0)]);
    up.transport_socket = Some(tls_socket(&upstream_tls_sds(
        "up.example.com",
        "upstream-ca",
    )));
    let mut l = http_listener("in", "127.0.0.1", u32::from(listen), "routes");
    l.filter_chains[0].transport_socket = Some(tls_socket(&downstream_tls_sds("server-cert")));
    BTreeMap::from([
        (ResourceType::Cluster.type_url().to_owned(), vec![any(&up)]),
        (ResourceType::Listener.type_url().to_owned(), vec![any(&l)]),
        (
            ResourceType::Route.type_url().to_owned(),
            vec![any(&route_config("routes", "up"))],
        ),
        (
            ResourceType::Secret.type_url().to_owned(),
            vec![
                any(&ca_secret("upstream-ca", ca)),
                any(&certificate_secret("server-cert", chain, key)),
            ],
        ),
    ])
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap()
}

/// `curl https://in.example.com:PORT/`, verified against `ca`: its body, or why not.
fn curl(listen: u16, ca: &Path) -> String {
    let out = run(
        "curl",
        &[
            "-sS",
            "--max-time",
            "10",
            "--cacert",
            p(ca),
            "--resolve",
            &format!("in.example.com:{listen}:127.0.0.1"),
            &format!("https://in.example.com:{listen}/"),
        ],
    );
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

/// The common name of the certificate served for `in.example.com`.
fn served_cn(listen: u16) -> String {
    let (ok, text) = s_client(listen, &["-brief", "-servername", "in.example.com"]);
    assert!(ok, "{text}");
    peer_cn(&text).to_owned()
}

/// A TLS connection to the listener, held open by the test (HTTP/1.1 keep-alive).
fn tls_client(
    port: u16,
    ca: &Path,
) -> rustls::StreamOwned<rustls::ClientConnection, std::net::TcpStream> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let conn =
        rustls::ClientConnection::new(Arc::new(config), "in.example.com".try_into().unwrap())
            .unwrap();
    let tcp = std::net::TcpStream::connect(addr(port)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    rustls::StreamOwned::new(conn, tcp)
}

/// One keep-alive `GET /` on `s`: the response head and body (`body_len` bytes).
fn get_on(s: &mut impl ReadWriteish, body_len: usize) -> String {
    s.write_all(b"GET / HTTP/1.1\r\nhost: in.example.com\r\n\r\n")
        .unwrap();
    s.flush().unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&got);
        if let Some((_, body)) = text.split_once("\r\n\r\n")
            && body.len() >= body_len
        {
            return text.into_owned();
        }
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "closed after {text:?}");
        got.extend_from_slice(&buf[..n]);
    }
}

trait ReadWriteish: Read + Write {}
impl<T: Read + Write> ReadWriteish for T {}

fn eventually(what: &str, sluice: &Proc, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !check() {
        assert!(
            Instant::now() < deadline,
            "{what}: not reached\n--- sluice log ---\n{}",
            sluice.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn tls_clusters_and_listeners_with_sds_secrets_serve_and_rotate_over_ads() {
    scenario("sotw");
}

#[test]
fn tls_clusters_and_listeners_with_sds_secrets_serve_and_rotate_over_delta_ads() {
    scenario("delta");
}

/// The whole story over `mode` (`sotw`: the default, or `delta`).
fn scenario(mode: &str) {
    if !require_peers(&["nginx", "curl", "openssl"]) {
        return;
    }
    let sotw = mode == "sotw";
    let dir = TempDir::new("xds-tls");
    // The upstream's PKI (its CA comes over SDS) and the listener's (its certificate does).
    let up_ca = make_ca(&dir, "upstream-ca");
    let (up_cert, up_key) = leaf(&dir, &up_ca, "upstream", &["up.example.com"], None);
    let in_ca = make_ca(&dir, "in-ca");
    let (one_cert, one_key) = leaf(&dir, &in_ca, "sds-one", &["in.example.com"], None);
    let (two_cert, two_key) = leaf(&dir, &in_ca, "sds-two", &["in.example.com"], None);
    let upstream = free_port();
    let _nginx = start_nginx_tls(
        &dir,
        "up",
        upstream,
        (&up_cert, &up_key),
        r#"location / { return 200 "over $ssl_protocol"; }"#,
    );
    let (listen, admin, ads_port) = (free_port(), free_port(), free_port());
    let server = AdsServer::start(ads_port, Snapshot::default());
    server.push(resources(
        listen,
        upstream,
        &read(&up_ca.pem),
        (&read(&one_cert), &read(&one_key)),
    ));
    let config = format!(
        r#"
admin: {{ address: 127.0.0.1:{admin} }}
node: {{ id: sidecar-tls, cluster: e2e }}
xds: {{ cluster: xds_server, mode: {mode} }}
listeners: []
clusters:
  - name: xds_server
    hosts: [ {{ address: 127.0.0.1:{ads_port} }} ]
"#
    );
    let sluice = start_sluice(&dir, &config, 2, addr(admin));

    // TLS in (an SDS certificate curl verifies), TLS out (verified against the SDS CA).
    eventually("the TLS config serves", &sluice, || {
        curl(listen, &in_ca.pem).starts_with("over TLSv1.")
    });
    assert_eq!(served_cn(listen), "sds-one");
    // Every type pushed, SDS included, ACKed; the secrets were asked for by name.
    let secret_names: Vec<String> = if sotw {
        let requests = server.requests();
        let version = server.version().to_string();
        for t in ResourceType::ALL
            .into_iter()
            .filter(|t| *t != ResourceType::Endpoints)
        {
            assert!(
                requests.iter().any(|r| r.type_url == t.type_url()
                    && r.version_info == version
                    && !r.response_nonce.is_empty()
                    && r.error_detail.is_none()),
                "{t:?} not ACKed: {requests:?}"
            );
        }
        requests
            .iter()
            .filter(|r| r.type_url == ResourceType::Secret.type_url())
            .flat_map(|r| r.resource_names.clone())
            .collect()
    } else {
        let requests = server.delta_requests();
        assert!(
            requests
                .iter()
                .any(|r| r.type_url == ResourceType::Secret.type_url()
                    && !r.response_nonce.is_empty()
                    && r.error_detail.is_none()),
            "no SDS ACK: {requests:?}"
        );
        requests
            .iter()
            .filter(|r| r.type_url == ResourceType::Secret.type_url())
            .flat_map(|r| r.resource_names_subscribe.clone())
            .collect()
    };
    assert!(
        secret_names.contains(&"upstream-ca".to_owned())
            && secret_names.contains(&"server-cert".to_owned()),
        "{secret_names:?}"
    );
    // The dump shows where the PEM came from, never what it holds.
    let (status, dump) = http_request(addr(admin), "GET", "/config_dump");
    assert_eq!(status, 200);
    assert!(dump.contains("server-cert"), "{dump}");
    assert!(
        !dump.contains("PRIVATE KEY") && !dump.contains("BEGIN CERTIFICATE"),
        "{dump}"
    );

    // A connection opened before the rotation.
    let mut held = tls_client(listen, &in_ca.pem);
    let first = get_on(&mut held, "over TLSv1.x".len());
    assert!(first.starts_with("HTTP/1.1 200"), "{first}");

    // A new certificate over SDS: new handshakes see it; the held connection carries on.
    server.push(resources(
        listen,
        upstream,
        &read(&up_ca.pem),
        (&read(&two_cert), &read(&two_key)),
    ));
    eventually("the rotated certificate is served", &sluice, || {
        served_cn(listen) == "sds-two"
    });
    assert!(curl(listen, &in_ca.pem).starts_with("over TLSv1."));
    // `/certs` describes the rotated certificate under the secret's name.
    let (status, certs) = http_request(addr(admin), "GET", "/certs");
    assert_eq!(status, 200);
    assert!(
        certs.contains(r#"sds secret \"server-cert\""#) && certs.contains("CN=sds-two"),
        "{certs}"
    );
    // The held keep-alive connection is not drained by the rotation: it keeps serving,
    // never told to close.
    for _ in 0..3 {
        let again = get_on(&mut held, "over TLSv1.x".len());
        assert!(again.starts_with("HTTP/1.1 200"), "{again}");
        assert!(
            !again.to_ascii_lowercase().contains("connection: close"),
            "the rotation drained a keep-alive connection: {again}"
        );
    }

    // A certificate with another certificate's key: refused in validation (NACK naming the
    // secret and the field), and the last good one serves on.
    server.push(resources(
        listen,
        upstream,
        &read(&up_ca.pem),
        (&read(&one_cert), &read(&two_key)),
    ));
    let bad_version = server.version().to_string();
    let refused = |type_url: &str, e: Option<&sluice_xds::envoy_types::pb::google::rpc::Status>| {
        type_url == ResourceType::Secret.type_url()
            && e.is_some_and(|e| {
                e.message
                    .contains(r#"secret "server-cert" tls_certificate.private_key"#)
                    && e.message
                        .contains("does not go with the leaf of certificate_chain")
            })
    };
    eventually("the mismatched pair NACKed", &sluice, || {
        if sotw {
            server
                .requests()
                .iter()
                .any(|r| refused(&r.type_url, r.error_detail.as_ref()))
        } else {
            server
                .delta_requests()
                .iter()
                .any(|r| refused(&r.type_url, r.error_detail.as_ref()))
        }
    });
    // (The unchanged cluster, listener and routes of that version are ACKed: nothing changed.)
    if sotw {
        assert!(
            server
                .requests()
                .iter()
                .all(|r| r.type_url != ResourceType::Secret.type_url()
                    || r.version_info != bad_version),
            "the secrets of the version with the bad pair were ACKed"
        );
    }
    assert_eq!(served_cn(listen), "sds-two");
    assert!(curl(listen, &in_ca.pem).starts_with("over TLSv1."));
    // `/config_dump` says, per resource, where it came from, its version and its refusal: the
    // secret `server-cert` serves its last good version, and the NACK of the bad pair is its
    // `error_state` (never the PEM); `upstream-ca`, pushed again unchanged, has none; the
    // listener is dynamic, the xDS cluster static.
    let (status, dump) = http_request(addr(admin), "GET", "/config_dump");
    assert_eq!(status, 200);
    assert!(
        !dump.contains("PRIVATE KEY") && !dump.contains("BEGIN CERTIFICATE"),
        "{dump}"
    );
    let dump: serde_json::Value = serde_json::from_str(&dump).expect("json");
    let secrets = dump["xds_resources"]["secret"]
        .as_array()
        .unwrap_or_else(|| panic!("{dump}"));
    let secret = |name: &str| {
        secrets
            .iter()
            .find(|s| s["name"] == name)
            .unwrap_or_else(|| panic!("{name}: {dump}"))
    };
    let cert = secret("server-cert");
    assert_eq!(cert["origin"], "dynamic", "{dump}");
    assert!(
        cert["last_updated"].as_u64().is_some_and(|t| t > 0),
        "{dump}"
    );
    let details = cert["error_state"]["details"].as_str().unwrap_or("");
    assert!(
        details.contains(r#"secret "server-cert" tls_certificate.private_key"#),
        "{dump}"
    );
    assert!(
        cert["error_state"]["last_update_attempt"]
            .as_u64()
            .is_some_and(|t| t >= cert["last_updated"].as_u64().unwrap()),
        "{dump}"
    );
    assert!(secret("upstream-ca").get("error_state").is_none(), "{dump}");
    if sotw {
        // The version of the rotation, not the refused one.
        assert_eq!(
            cert["version_info"],
            (server.version() - 1).to_string(),
            "{dump}"
        );
    } else {
        assert!(
            cert["version_info"].as_str().is_some_and(|v| !v.is_empty()),
            "{dump}"
        );
    }
    let entry = |key: &str, name: &str| {
        dump[key]
            .as_array()
            .and_then(|a| a.iter().find(|e| e["name"] == name))
            .map(|e| e["xds_status"].clone())
            .unwrap_or_else(|| panic!("{key} {name}: {dump}"))
    };
    assert_eq!(
        entry("clusters", "xds_server"),
        serde_json::json!({ "origin": "static" })
    );
    assert_eq!(entry("listeners", "in")["origin"], "dynamic", "{dump}");
    assert!(
        entry("listeners", "in").get("error_state").is_none(),
        "{dump}"
    );
    assert_eq!(entry("clusters", "up")["origin"], "dynamic", "{dump}");
    let still = get_on(&mut held, "over TLSv1.x".len());
    assert!(
        still.starts_with("HTTP/1.1 200")
            && !still.to_ascii_lowercase().contains("connection: close"),
        "{still}"
    );
    assert!(
        !sluice.log_text().contains("PRIVATE KEY"),
        "{}",
        sluice.log_text()
    );
}

/// A listener requiring client certificates from the CA of SDS secret `client-ca` (`ca`),
/// serving the certificate of `server-cert`, proxying TCP to 127.0.0.1:`upstream`.
fn mtls_resources(
    listen: u16,
    upstream: u16,
    ca: &str,
    (chain, key): (&str, &str),
) -> BTreeMap<String, Vec<Any>> {
    use sluice_xds::envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::common_tls_context::ValidationContextType;
    use sluice_xds::envoy_types::pb::google::protobuf::BoolValue;
    use sluice_xds::fixtures::{sds, tcp_listener};
    let mut ctx = downstream_tls_sds("server-cert");
    ctx.require_client_certificate = Some(BoolValue { value: true });
    ctx.common_tls_context
        .as_mut()
        .unwrap()
        .validation_context_type = Some(ValidationContextType::ValidationContextSdsSecretConfig(
        sds("client-ca"),
    ));
    let mut l = tcp_listener("in", "127.0.0.1", u32::from(listen), "up");
    l.filter_chains[0].transport_socket = Some(tls_socket(&ctx));
    let up = static_cluster("up", &[("127.0.0.1", u32::from(upstream), 0)]);
    BTreeMap::from([
        (ResourceType::Cluster.type_url().to_owned(), vec![any(&up)]),
        (ResourceType::Listener.type_url().to_owned(), vec![any(&l)]),
        (
            ResourceType::Secret.type_url().to_owned(),
            vec![
                any(&ca_secret("client-ca", ca)),
                any(&certificate_secret("server-cert", chain, key)),
            ],
        ),
    ])
}

/// Rotating the client CA over SDS under the same secret name ends resumption of sessions
/// admitted by the old CA: a client of the removed CA cannot resume (rustls does not verify
/// the client chain again on resumption), it gets a full handshake and is refused (issue 13,
/// M1).
#[test]
fn a_client_ca_rotated_over_sds_ends_resumption_of_the_old_cas_clients() {
    if !require_peers(&["openssl"]) {
        return;
    }
    let dir = TempDir::new("xds-tls-ca");
    let server_ca = make_ca(&dir, "server-ca");
    let (cert, key) = leaf(&dir, &server_ca, "server", &["in.example.com"], None);
    let (old_ca, new_ca) = (
        make_ca(&dir, "old-client-ca"),
        make_ca(&dir, "new-client-ca"),
    );
    let (old_cert, old_key) = leaf(&dir, &old_ca, "old-client", &["client"], None);
    let (new_cert, new_key) = leaf(&dir, &new_ca, "new-client", &["client"], None);
    let (listen, admin, ads_port, upstream) = (free_port(), free_port(), free_port(), free_port());
    // Something to proxy to, so that a session ends cleanly.
    let echo = std::net::TcpListener::bind(addr(upstream)).unwrap();
    std::thread::spawn(move || {
        for s in echo.incoming().flatten() {
            std::thread::spawn(move || {
                let (mut r, mut w) = (s.try_clone().unwrap(), s);
                let _ = std::io::copy(&mut r, &mut w);
            });
        }
    });
    let server = AdsServer::start(ads_port, Snapshot::default());
    let pair = (read(&cert), read(&key));
    server.push(mtls_resources(
        listen,
        upstream,
        &read(&old_ca.pem),
        (&pair.0, &pair.1),
    ));
    let config = format!(
        r#"
admin: {{ address: 127.0.0.1:{admin} }}
node: {{ id: sidecar-mtls, cluster: e2e }}
xds: {{ cluster: xds_server }}
listeners: []
clusters:
  - name: xds_server
    hosts: [ {{ address: 127.0.0.1:{ads_port} }} ]
"#
    );
    let sluice = start_sluice(&dir, &config, 2, addr(admin));
    let session = dir.path().join("session.pem");
    // (admitted: the handshake completed and the listener sent no alert — with TLS 1.2,
    // s_client prints the negotiated session even when the server then refuses the client's
    // certificate with an alert.)
    let connect = |(c, k): (&Path, &Path), extra: &[&str]| {
        let mut args = vec!["-tls1_2", "-cert", p(c), "-key", p(k)];
        args.extend_from_slice(extra);
        let (ok, text) = s_client(listen, &args);
        (ok && !text.contains(" alert "), text)
    };
    eventually("the mTLS listener serves", &sluice, || {
        connect((&old_cert, &old_key), &["-sess_out", p(&session)]).0
    });
    // The control: before the rotation, the old CA's client resumes.
    let (ok, text) = connect((&old_cert, &old_key), &["-sess_in", p(&session)]);
    assert!(
        ok && text.contains("Reused, TLSv1.2"),
        "not resumed:\n{text}"
    );
    let (ok, text) = connect((&new_cert, &new_key), &[]);
    assert!(
        !ok,
        "a client of the new CA admitted before the rotation:\n{text}"
    );
    // The client CA rotated under the same secret name.
    server.push(mtls_resources(
        listen,
        upstream,
        &read(&new_ca.pem),
        (&pair.0, &pair.1),
    ));
    eventually("the new CA admits its clients", &sluice, || {
        connect((&new_cert, &new_key), &[]).0
    });
    let (ok, text) = connect((&old_cert, &old_key), &["-sess_in", p(&session)]);
    assert!(
        !text.contains("Reused,"),
        "a session of the removed CA resumed:\n{text}"
    );
    assert!(
        !ok && text.contains("alert unknown ca"),
        "a client of the removed CA was admitted:\n{text}"
    );
}

/// Istio's auto-mTLS over ADS (issue 13): a cluster's `transport_socket_matches` (mTLS with the
/// SDS CA for endpoints labelled `tlsMode: istio`, `raw_buffer` for the rest) and the labels in
/// each endpoint's `envoy.transport_socket_match` metadata. Both endpoints serve, each in its
/// own transport; then an update takes the label off the TLS endpoint: it is spoken to in
/// plaintext from then on (nginx refuses that with 400), and no pooled TLS connection of the
/// previous choice is reused for it. That update is applied in place (a host whose pick
/// changed is a new host in the cluster's slots: `xds.endpoint_updates_in_place`, no reload):
/// a client connection kept alive across it is neither closed nor told to close.
#[test]
fn endpoint_labels_over_ads_pick_mtls_or_plaintext_per_endpoint() {
    use sluice_xds::envoy_types::pb::envoy::config::cluster::v3::cluster::TransportSocketMatch;
    use sluice_xds::envoy_types::pb::envoy::config::core::v3::{
        Metadata, TransportSocket, transport_socket::ConfigType,
    };
    use sluice_xds::envoy_types::pb::google::protobuf::{Struct, Value, value::Kind};

    if !require_peers(&["nginx"]) {
        return;
    }
    let dir = TempDir::new("xds-tsm");
    let ca = make_ca(&dir, "upstream-ca");
    let (cert, key) = leaf(&dir, &ca, "upstream", &["up.example.com"], None);
    let (tls_up, plain_up) = (free_port(), free_port());
    let _tls = start_nginx_tls(
        &dir,
        "tls-up",
        tls_up,
        (&cert, &key),
        r#"ssl_protocols TLSv1.2 TLSv1.3;
           location / { return 200 "over $ssl_protocol"; }"#,
    );
    let _plain = start_nginx_with(
        &dir,
        "plain-up",
        plain_up,
        r#"location / { return 200 "plain"; }"#,
    );
    let (listen, admin, ads_port) = (free_port(), free_port(), free_port());
    let istio = || Struct {
        fields: [(
            "tlsMode".to_owned(),
            Value {
                kind: Some(Kind::StringValue("istio".into())),
            },
        )]
        .into(),
    };
    let resources = |labelled: bool| {
        let mut up = static_cluster(
            "up",
            &[
                ("127.0.0.1", u32::from(tls_up), 0),
                ("127.0.0.1", u32::from(plain_up), 0),
            ],
        );
        if labelled {
            up.load_assignment.as_mut().unwrap().endpoints[0].lb_endpoints[0].metadata =
                Some(Metadata {
                    filter_metadata: [("envoy.transport_socket_match".to_owned(), istio())].into(),
                    ..Default::default()
                });
        }
        up.transport_socket_matches = vec![
            TransportSocketMatch {
                name: "tlsMode-istio".into(),
                r#match: Some(istio()),
                transport_socket: Some(tls_socket(&upstream_tls_sds(
                    "up.example.com",
                    "upstream-ca",
                ))),
            },
            TransportSocketMatch {
                name: "tlsMode-disabled".into(),
                r#match: Some(Struct::default()),
                transport_socket: Some(TransportSocket {
                    name: "envoy.transport_sockets.raw_buffer".into(),
                    config_type: Some(ConfigType::TypedConfig(Any {
                        type_url: "type.googleapis.com/envoy.extensions.transport_sockets.\
                                   raw_buffer.v3.RawBuffer"
                            .into(),
                        value: Vec::new(),
                    })),
                }),
            },
        ];
        BTreeMap::from([
            (ResourceType::Cluster.type_url().to_owned(), vec![any(&up)]),
            (
                ResourceType::Listener.type_url().to_owned(),
                vec![any(&http_listener(
                    "in",
                    "127.0.0.1",
                    u32::from(listen),
                    "routes",
                ))],
            ),
            (
                ResourceType::Route.type_url().to_owned(),
                vec![any(&route_config("routes", "up"))],
            ),
            (
                ResourceType::Secret.type_url().to_owned(),
                vec![any(&ca_secret("upstream-ca", &read(&ca.pem)))],
            ),
        ])
    };
    let server = AdsServer::start(ads_port, Snapshot::default());
    server.push(resources(true));
    let config = format!(
        r#"
admin: {{ address: 127.0.0.1:{admin} }}
node: {{ id: sidecar-tsm, cluster: e2e }}
xds: {{ cluster: xds_server }}
listeners: []
clusters:
  - name: xds_server
    hosts: [ {{ address: 127.0.0.1:{ads_port} }} ]
"#
    );
    let sluice = start_sluice(&dir, &config, 1, addr(admin));
    let get = || {
        std::net::TcpStream::connect(addr(listen))
            .map(|_| http_request(addr(listen), "GET", "/"))
            .unwrap_or((0, String::new()))
    };
    eventually("the cluster serves", &sluice, || get().0 == 200);
    let bodies: Vec<(u16, String)> = (0..8).map(|_| get()).collect();
    assert!(bodies.iter().all(|(s, _)| *s == 200), "{bodies:?}");
    assert!(
        bodies.iter().any(|(_, b)| b.starts_with("over TLSv1.3")),
        "the labelled endpoint over mTLS: {bodies:?}"
    );
    assert!(
        bodies.iter().any(|(_, b)| b == "plain"),
        "the other in plaintext: {bodies:?}"
    );

    // A line of `/stats`, e.g. `server.reloads_ok: 1`.
    let stat = |name: &str| -> String {
        let (_, text) = http_request(addr(admin), "GET", "/stats");
        text.lines()
            .find(|l| l.starts_with(&format!("{name}:")))
            .unwrap_or_default()
            .to_owned()
    };
    let (in_place, reloads) = (
        stat("xds.endpoint_updates_in_place"),
        stat("server.reloads_ok"),
    );
    assert_eq!(in_place, "xds.endpoint_updates_in_place: 0");
    // An unrelated client connection, kept alive across the update.
    let mut client = std::net::TcpStream::connect(addr(listen)).expect("connect");
    client
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let first = keep_alive_get(&mut client);
    assert!(
        matches!(&first, Some((200, false, _))),
        "the kept-alive client before the update: {first:?}"
    );

    // The label taken off: the endpoint picks plaintext (the catch-all entry) from then on.
    server.push(resources(false));
    eventually(
        "the unlabelled endpoint is spoken to in plaintext",
        &sluice,
        || get().0 == 400,
    );
    let after: Vec<(u16, String)> = (0..8).map(|_| get()).collect();
    assert!(
        after.iter().all(|(_, b)| !b.starts_with("over TLS")),
        "a TLS connection of the old choice was reused: {after:?}"
    );
    assert!(
        after.iter().any(|(s, b)| *s == 200 && b == "plain"),
        "{after:?}"
    );
    // In place: counted as such, no generation switch (not a reload).
    assert_eq!(
        stat("xds.endpoint_updates_in_place"),
        "xds.endpoint_updates_in_place: 1",
        "the label change was applied in place"
    );
    assert_eq!(stat("server.reloads_ok"), reloads, "no generation switch");
    // The kept-alive connection goes on being served by the same generation: answered (by
    // either endpoint: 200 plain or nginx's 400 to plaintext on its TLS port) and never told
    // to close, as a drained generation's connections are.
    for i in 0..4 {
        let answer = keep_alive_get(&mut client);
        assert!(
            matches!(&answer, Some((200 | 400, false, _))),
            "request {i} on the kept-alive client after the update: {answer:?}"
        );
    }
}

/// istiod's own `virtualInbound` (the fixture written from istiod's generator: http_inspector
/// and tls_inspector with istiod's `filter_disabled`, `listener_filters_timeout: 0s`, metadata
/// exchange and stats before every terminal filter, mTLS chains whose secrets, `default` and
/// `ROOTCA`, come from the agent's `sds-grpc` — here the Python SDS server on a Unix socket,
/// declared in `xds.sds_sources`) pushed over ADS and ACKed; on a port no service declares, curl's plaintext HTTP/1.1 and h2c are sniffed
/// into the passthrough HTTP chain, and a mesh client (a client certificate, ALPN
/// `istio-peer-exchange`) gets the mTLS TCP chain. Test-only changes, so that it runs without
/// packet capture: the listener on 127.0.0.1 and without `original_dst` (the destination port
/// is then its own), and the passthrough cluster a static one to nginx.
#[test]
fn istiods_virtual_inbound_over_ads_sniffs_plaintext_http_and_h2c() {
    use sluice_xds::fixtures::istiod::{self, PASSTHROUGH};
    if !require_peers(&["nginx", "curl", "openssl", "xds-protos"]) {
        return;
    }
    let dir = TempDir::new("xds-istiod");
    let mesh = make_ca(&dir, "mesh-root");
    let (cert, key) = leaf(&dir, &mesh, "app", &["app.default.svc.cluster.local"], None);
    let (client_cert, client_key) = leaf(&dir, &mesh, "client", &["client.mesh"], None);
    let (app, pass) = (free_port(), free_port());
    let _a = start_nginx(&dir, "app", app, "app");
    // The HTTP chain's connection manager sets `x-forwarded-proto`; bytes relayed by a TCP
    // chain carry none: the body tells which chain a request came through.
    let _p = start_nginx_with(
        &dir,
        "pass",
        pass,
        r#"location / { return 200 "passthrough $http_x_forwarded_proto"; }"#,
    );
    let (listen, admin, ads_port) = (free_port(), free_port(), free_port());
    let mut r = istiod::virtual_inbound(
        &read(&mesh.pem),
        &read(&cert),
        &read(&key),
        ("127.0.0.1", u32::from(app)),
    );
    let l = r.listeners.get_mut("virtualInbound").unwrap();
    l.address = Some(sluice_xds::fixtures::address(
        "127.0.0.1",
        u32::from(listen),
    ));
    l.listener_filters.remove(0); // original_dst
    r.clusters.insert(
        PASSTHROUGH.into(),
        static_cluster(PASSTHROUGH, &[("127.0.0.1", u32::from(pass), 0)]),
    );
    let mut pushed: BTreeMap<String, Vec<Any>> = BTreeMap::new();
    pushed.insert(
        ResourceType::Cluster.type_url().to_owned(),
        r.clusters.values().map(any).collect(),
    );
    pushed.insert(
        ResourceType::Listener.type_url().to_owned(),
        r.listeners.values().map(any).collect(),
    );
    // Its TLS contexts name `default` and `ROOTCA` from the agent's `sds-grpc`, as istiod's
    // do: the agent's SDS server serves them on its Unix socket.
    assert!(r.secrets.is_empty());
    let socket = dir.path().join("agent.sock");
    let _agent = SdsServer::start(
        &dir,
        &socket,
        "1",
        &[
            ("default", Held::Certificate(&cert, &key)),
            ("ROOTCA", Held::Ca(&mesh.pem)),
        ],
    );
    let server = AdsServer::start(ads_port, Snapshot::default());
    server.push(pushed);
    let config = format!(
        r#"
admin: {{ address: 127.0.0.1:{admin} }}
node: {{ id: sidecar-istiod, cluster: e2e }}
xds:
  cluster: xds_server
  sds_sources: [ {{ name: sds-grpc, path: "{}" }} ]
listeners: []
clusters:
  - name: xds_server
    hosts: [ {{ address: 127.0.0.1:{ads_port} }} ]
"#,
        socket.display()
    );
    let sluice = start_sluice(&dir, &config, 1, addr(admin));
    let curl = |extra: &str| {
        let url = format!("http://127.0.0.1:{listen}/");
        let out = run(
            "curl",
            &[
                "-s",
                "--max-time",
                "10",
                "-w",
                "|%{http_version}",
                extra,
                &url,
            ],
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    eventually("istiod's listener serves", &sluice, || {
        curl("--http1.1") == "passthrough http|1.1"
    });
    // The listener was ACKed, not NACKed.
    let version = server.version().to_string();
    assert!(
        server
            .requests()
            .iter()
            .any(|q| q.type_url == ResourceType::Listener.type_url()
                && q.version_info == version
                && q.error_detail.is_none()),
        "{:?}",
        server.requests()
    );
    // h2c with prior knowledge: the same chain, answered over HTTP/2.
    assert_eq!(curl("--http2-prior-knowledge"), "passthrough http|2");
    // A mesh client: mTLS (client certificate from the mesh root) offering
    // istio-peer-exchange — the TCP passthrough chain terminates it and relays the bytes.
    let (ok, text) = s_client_request(
        listen,
        &[
            "-servername",
            "outbound_.9090_._.app.default.svc.cluster.local",
            "-alpn",
            "istio-peer-exchange,istio",
            "-cert",
            p(&client_cert),
            "-key",
            p(&client_key),
        ],
    );
    assert!(ok, "{text}");
    assert!(
        text.contains("CN = app") || text.contains("CN=app"),
        "{text}"
    );
    assert!(
        text.contains("passthrough") && !text.contains("passthrough http"),
        "relayed as bytes by the TCP chain: {text}"
    );
    // `istio-peer-exchange` is never agreed (Sluice speaks no metadata exchange: the client's
    // filter would write its header into the stream): `istio`, offered beside it.
    assert!(
        text.contains("ALPN protocol: istio\n"),
        "negotiated istio, not istio-peer-exchange: {text}"
    );
    // Without a client certificate the mTLS chain refuses the handshake.
    let (ok, text) = s_client_request(
        listen,
        &["-servername", "x", "-alpn", "istio-peer-exchange,istio"],
    );
    assert!(!ok || !text.contains("passthrough"), "{text}");
}

/// An Istio mesh's secrets over the agent's SDS (`xds.sds_sources`, issue 13): the Python SDS
/// server (`tests/sds_server.py`: grpcio and `xds-protos`, as istio-agent serves
/// `StreamSecrets`) on a Unix socket serves `default` and `ROOTCA`; the management server pushes
/// an istiod-shaped mTLS listener naming them from `sds-grpc`. The handshake serves that
/// certificate and requires a client certificate of that root; the secrets are ACKed on the
/// SDS stream (the node on its first request), shown in `/xds` and `/config_dump` by version
/// (no PEM). A rotated `default` is what new handshakes get (applied as ADS secrets are: a TLS
/// rotation, which the ADS tests above show keeps connections). The agent killed: serving continues on the last secrets and `/xds` says
/// disconnected; restarted: the client reconnects (node and last accepted version again) and
/// takes the next rotation.
#[test]
fn istio_agent_secrets_over_a_unix_socket_serve_rotate_and_survive_the_agent() {
    use sluice_xds::envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
        CommonTlsContext, DownstreamTlsContext, common_tls_context::ValidationContextType,
    };
    use sluice_xds::envoy_types::pb::google::protobuf::BoolValue;
    use sluice_xds::fixtures::{source_sds, tcp_listener};
    if !require_peers(&["nginx", "openssl", "xds-protos"]) {
        return;
    }
    let dir = TempDir::new("xds-sds-agent");
    let mesh = make_ca(&dir, "mesh-root");
    let sans = ["app.default.svc.cluster.local"];
    let (cert1, key1) = leaf(&dir, &mesh, "app-1", &sans, None);
    let (client_cert, client_key) = leaf(&dir, &mesh, "client", &["client.mesh"], None);
    let (listen, admin, ads_port, upstream) = (free_port(), free_port(), free_port(), free_port());
    let _app = start_nginx(&dir, "app", upstream, "app");
    let socket = dir.path().join("workload-spiffe-uds").join("socket");
    std::fs::create_dir_all(socket.parent().unwrap()).unwrap();
    let mut agent = SdsServer::start(
        &dir,
        &socket,
        "1",
        &[
            ("default", Held::Certificate(&cert1, &key1)),
            ("ROOTCA", Held::Ca(&mesh.pem)),
        ],
    );
    // istiod's inbound mTLS: the workload certificate and the mesh root from `sds-grpc`,
    // client certificates required.
    let mut l = tcp_listener("in", "127.0.0.1", u32::from(listen), "app");
    l.filter_chains[0].transport_socket = Some(tls_socket(&DownstreamTlsContext {
        common_tls_context: Some(CommonTlsContext {
            tls_certificate_sds_secret_configs: vec![source_sds("sds-grpc", "default")],
            validation_context_type: Some(ValidationContextType::ValidationContextSdsSecretConfig(
                source_sds("sds-grpc", "ROOTCA"),
            )),
            ..Default::default()
        }),
        require_client_certificate: Some(BoolValue { value: true }),
        ..Default::default()
    }));
    let app = static_cluster("app", &[("127.0.0.1", u32::from(upstream), 0)]);
    let server = AdsServer::start(ads_port, Snapshot::default());
    server.push(BTreeMap::from([
        (ResourceType::Cluster.type_url().to_owned(), vec![any(&app)]),
        (ResourceType::Listener.type_url().to_owned(), vec![any(&l)]),
    ]));
    let config = format!(
        r#"
admin: {{ address: 127.0.0.1:{admin} }}
node: {{ id: sidecar-agent, cluster: e2e }}
xds:
  cluster: xds_server
  sds_sources: [ {{ name: sds-grpc, path: "{}" }} ]
listeners: []
clusters:
  - name: xds_server
    hosts: [ {{ address: 127.0.0.1:{ads_port} }} ]
"#,
        socket.display()
    );
    let sluice = start_sluice(&dir, &config, 1, addr(admin));
    let mesh_client = |extra: &[&str]| {
        let mut args = vec!["-cert", p(&client_cert), "-key", p(&client_key)];
        args.extend_from_slice(extra);
        s_client_request(listen, &args)
    };
    let served = || {
        let (ok, text) = s_client(
            listen,
            &["-brief", "-cert", p(&client_cert), "-key", p(&client_key)],
        );
        ok.then(|| peer_cn(&text).to_owned())
    };
    eventually("the agent's certificate serves", &sluice, || {
        served().as_deref() == Some("app-1")
    });
    let (ok, text) = mesh_client(&[]);
    assert!(
        ok && text.contains("HTTP/1.1 200"),
        "relayed to the app: {text}"
    );
    // Without a client certificate of the mesh root: refused.
    let (_, text) = s_client_request(listen, &[]);
    assert!(!text.contains("HTTP/1.1 200"), "{text}");
    // The SDS stream: the node on its first request, both names, version 1 ACKed.
    eventually("version 1 ACKed on the SDS stream", &sluice, || {
        agent.acked("1") > 0
    });
    let requests = agent.requests();
    assert_eq!(requests[0]["node"], "sidecar-agent", "{requests:?}");
    assert_eq!(
        requests[0]["names"],
        serde_json::json!(["ROOTCA", "default"]),
        "{requests:?}"
    );
    assert!(
        requests[1..].iter().all(|r| r["node"].is_null()),
        "the node on the first request only: {requests:?}"
    );
    let xds = |what: &str| {
        let (status, body) = http_request(addr(admin), "GET", "/xds");
        assert_eq!(status, 200, "{what}: {body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        v["sds_sources"]["sds-grpc"].clone()
    };
    // `/stats/prometheus`, per source: connected, the two secrets of version 1 received and
    // applied, none refused.
    let metric = |name: &str| -> String {
        let (_, text) = http_request(addr(admin), "GET", "/stats/prometheus");
        let sample = format!("{name}{{source=\"sds-grpc\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&sample))
            .unwrap_or_else(|| panic!("no {sample} in:\n{text}"))
            .to_owned()
    };
    let secrets = |metric: &dyn Fn(&str) -> String| {
        [
            "sluice_sds_source_connected",
            "sluice_sds_source_secrets_received_total",
            "sluice_sds_source_secrets_applied_total",
            "sluice_sds_source_secrets_refused_total",
        ]
        .map(metric)
    };
    assert_eq!(secrets(&metric), ["1", "2", "2", "0"]);
    let source = xds("serving");
    assert_eq!(source["connected"], true, "{source}");
    assert_eq!(source["version"], "1", "{source}");
    assert_eq!(
        source["secrets"],
        serde_json::json!({ "ROOTCA": "1", "default": "1" }),
        "{source}"
    );
    assert_eq!(
        source["target"],
        format!("unix:{}", socket.display()),
        "{source}"
    );
    let (status, dump) = http_request(addr(admin), "GET", "/config_dump");
    assert_eq!(status, 200);
    assert!(
        !dump.contains("PRIVATE KEY"),
        "no secret content in the dump"
    );
    let dump: serde_json::Value = serde_json::from_str(&dump).unwrap();
    let entries = dump["xds_resources"]["source_secret"].as_array().unwrap();
    assert_eq!(entries.len(), 2, "{entries:?}");
    assert!(
        entries
            .iter()
            .all(|e| e["source"] == "sds-grpc" && e["version_info"] == "1"),
        "{entries:?}"
    );
    // Rotation of `default` by the agent: new handshakes get it.
    let (cert2, key2) = leaf(&dir, &mesh, "app-2", &sans, None);
    agent.serve(
        "2",
        &[
            ("default", Held::Certificate(&cert2, &key2)),
            ("ROOTCA", Held::Ca(&mesh.pem)),
        ],
    );
    eventually("the rotated certificate serves", &sluice, || {
        served().as_deref() == Some("app-2")
    });
    eventually("version 2 ACKed", &sluice, || agent.acked("2") > 0);
    assert_eq!(secrets(&metric), ["1", "4", "4", "0"]);
    // The agent dies: the listener serves on with the last secrets; `/xds` says so.
    agent.kill();
    eventually("the source shows disconnected", &sluice, || {
        xds("agent killed")["connected"] == false
    });
    assert_eq!(secrets(&metric), ["0", "4", "4", "0"]);
    eventually("the failed reconnects shown", &sluice, || {
        !xds("agent killed")["last_connect_error"].is_null()
    });
    assert_eq!(served().as_deref(), Some("app-2"), "serving continues");
    // The agent comes back: the client reconnects (node and the last accepted version on the
    // new stream's first request) and takes the next rotation.
    let (cert3, key3) = leaf(&dir, &mesh, "app-3", &sans, None);
    agent.serve(
        "3",
        &[
            ("default", Held::Certificate(&cert3, &key3)),
            ("ROOTCA", Held::Ca(&mesh.pem)),
        ],
    );
    let seen = agent.requests().len();
    agent.restart(&dir);
    eventually("the restarted agent's certificate serves", &sluice, || {
        served().as_deref() == Some("app-3")
    });
    let after = agent.requests();
    let first = &after[seen];
    assert_eq!(first["node"], "sidecar-agent", "{first}");
    assert_eq!(
        first["version_info"], "2",
        "the last accepted version: {first}"
    );
    assert_eq!(first["nonce"], "", "{first}");
    eventually("version 3 ACKed", &sluice, || agent.acked("3") > 0);
    let source = xds("restarted");
    assert_eq!(source["connected"], true);
    assert!(
        source["last_connect_error"].is_null(),
        "a failure before the stream opened is over: {source}"
    );
    // The last TLS context using the source goes (its listener removed): the source's stream
    // is closed, as Envoy ends an SDS subscription with no watcher left; the listener back,
    // the source is dialled again and its secrets serve.
    let without_listener = || {
        BTreeMap::from([
            (ResourceType::Cluster.type_url().to_owned(), vec![any(&app)]),
            (ResourceType::Listener.type_url().to_owned(), Vec::new()),
        ])
    };
    server.push(without_listener());
    eventually("the unneeded source's stream closed", &sluice, || {
        let source = xds("listener removed");
        source["connected"] == false && source["subscribed"] == serde_json::json!([])
    });
    assert_eq!(metric("sluice_sds_source_connected"), "0");
    server.push(BTreeMap::from([
        (ResourceType::Cluster.type_url().to_owned(), vec![any(&app)]),
        (ResourceType::Listener.type_url().to_owned(), vec![any(&l)]),
    ]));
    eventually(
        "the listener back serves the source's secret",
        &sluice,
        || served().as_deref() == Some("app-3"),
    );
    assert_eq!(xds("listener back")["connected"], true);
}

/// An SDS source whose socket does not exist (no agent yet): the client says which socket it
/// cannot reach, in its log and in `/xds`, and retries; the listener naming its secrets is
/// not served — it warms (listed in `/xds`), its LDS response ACKed once validated with a
/// placeholder secret, and a secret has no initial fetch timeout: after twice that timeout it
/// still waits, nothing NACKed — and the process serves on (its admin answers).
#[test]
fn a_missing_sds_socket_is_named_in_the_log_and_in_xds() {
    use sluice_xds::fixtures::{downstream_tls_sds, tcp_listener};
    let dir = TempDir::new("xds-sds-missing");
    let (listen, admin, ads_port) = (free_port(), free_port(), free_port());
    let socket = dir.path().join("no-agent").join("socket");
    let mut ctx = downstream_tls_sds("default");
    ctx.common_tls_context
        .as_mut()
        .unwrap()
        .tls_certificate_sds_secret_configs[0] =
        sluice_xds::fixtures::source_sds("sds-grpc", "default");
    let mut l = tcp_listener("in", "127.0.0.1", u32::from(listen), "app");
    l.filter_chains[0].transport_socket = Some(tls_socket(&ctx));
    let app = static_cluster("app", &[("127.0.0.1", 9, 0)]);
    let server = AdsServer::start(ads_port, Snapshot::default());
    server.push(BTreeMap::from([
        (ResourceType::Cluster.type_url().to_owned(), vec![any(&app)]),
        (ResourceType::Listener.type_url().to_owned(), vec![any(&l)]),
    ]));
    let config = format!(
        r#"
admin: {{ address: 127.0.0.1:{admin} }}
node: {{ id: sidecar-agentless, cluster: e2e }}
xds:
  cluster: xds_server
  initial_fetch_timeout: 1s
  sds_sources: [ {{ name: sds-grpc, path: "{}" }} ]
listeners: []
clusters:
  - name: xds_server
    hosts: [ {{ address: 127.0.0.1:{ads_port} }} ]
"#,
        socket.display()
    );
    let sluice = start_sluice(&dir, &config, 1, addr(admin));
    let path = socket.display().to_string();
    eventually("the connect error in /xds", &sluice, || {
        let (_, body) = http_request(addr(admin), "GET", "/xds");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        let source = &v["sds_sources"]["sds-grpc"];
        source["connected"] == false
            && source["last_connect_error"]["error"]
                .as_str()
                .is_some_and(|e| e.contains(&path) && e.contains("No such file"))
    });
    assert!(
        sluice
            .log_text()
            .lines()
            .any(|l| l.contains("cannot connect to the SDS source") && l.contains(&path)),
        "{}",
        sluice.log_text()
    );
    let listener_answers = |nacked: bool| {
        server.requests().iter().any(|q| {
            q.type_url == ResourceType::Listener.type_url()
                && !q.response_nonce.is_empty()
                && q.error_detail.is_some() == nacked
        })
    };
    let warming = || -> serde_json::Value {
        let (_, body) = http_request(addr(admin), "GET", "/xds");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        v["types"]["listener"]["warming"].clone()
    };
    // Warming per resource: the listener waits for its secret, its response ACKed.
    eventually("the listener ACKed and warming", &sluice, || {
        listener_answers(false) && warming() == serde_json::json!(["in"])
    });
    // A secret has no timeout: past twice `initial_fetch_timeout`, still waiting, no NACK.
    std::thread::sleep(Duration::from_secs(2));
    assert!(!listener_answers(true), "nothing NACKed");
    assert_eq!(warming(), serde_json::json!(["in"]));
    assert!(
        std::net::TcpStream::connect(addr(listen)).is_err(),
        "not served"
    );
    let (status, _) = http_request(addr(admin), "GET", "/ready");
    assert!(status > 0, "the process serves on");
}
