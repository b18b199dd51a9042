//! End-to-end tests of TLS termination on `tcp_proxy` listeners, with a test PKI made here
//! (rcgen): openssl s_client and curl as clients, nginx as the plaintext upstream. Certificate
//! choice by SNI, TLS versions and resumption, ALPN, mutual TLS with a SPIFFE identity, every
//! handshake outcome counted, and bad files refused with their config path.

mod support;

use std::path::Path;

use rcgen::{CertificateParams, DnType, KeyPair, SanType};
use support::pki::*;
use support::*;

/// Certificates chosen by SNI (exact, then wildcard, else the first), a whole HTTPS request
/// through to a plaintext nginx with the chain verified by curl, TLS 1.2 and 1.3 with 1.2
/// resumption, and ALPN: a client offering only an unknown protocol is refused.
#[test]
fn tls_is_terminated_with_the_certificate_the_server_name_picks() {
    if !require_peers(&["openssl", "curl", "nginx"]) {
        return;
    }
    let dir = TempDir::new("tls-term");
    let ca = make_ca(&dir, "test-ca");
    let (default_cert, default_key) = leaf(&dir, &ca, "default", &["default.example"], None);
    let (api_cert, api_key) = leaf(&dir, &ca, "api", &["api.example.com"], None);
    let (wild_cert, wild_key) = leaf(&dir, &ca, "wildcard", &["*.example.com"], None);
    let upstream = free_port();
    let _nginx = start_nginx(&dir, "up", upstream, "hello over tls");
    let (listen, strict, admin) = (free_port(), free_port(), free_port());
    let config = format!(
        r#"
admin: {{ address: 127.0.0.1:{admin} }}
listeners:
  - name: tls_in
    address: 127.0.0.1:{listen}
    tls:
      certificates:
        - {{ cert_chain: {dc}, private_key: {dk} }}
        - {{ cert_chain: {wc}, private_key: {wk} }}
        - {{ cert_chain: {ac}, private_key: {ak} }}
      alpn: [http/1.1]
    tcp_proxy: {{ cluster: app }}
  - name: tls13_only
    address: 127.0.0.1:{strict}
    tls:
      certificates: [ {{ cert_chain: {dc}, private_key: {dk} }} ]
      min_version: 1.3
    tcp_proxy: {{ cluster: app }}
clusters:
  - {{ name: app, hosts: [ {{ address: 127.0.0.1:{upstream} }} ] }}
"#,
        dc = p(&default_cert),
        dk = p(&default_key),
        wc = p(&wild_cert),
        wk = p(&wild_key),
        ac = p(&api_cert),
        ak = p(&api_key),
    );
    let _s = start_sluice(&dir, &config, 1, addr(listen));

    for (name, cn) in [
        (Some("api.example.com"), "api"),
        (Some("www.example.com"), "wildcard"),
        (Some("a.b.example.com"), "default"), // a wildcard covers one label
        (Some("other.test"), "default"),
        (None, "default"),
    ] {
        let mut args = vec!["-brief"];
        match name {
            Some(n) => args.extend(["-servername", n]),
            None => args.push("-noservername"),
        }
        let (ok, text) = s_client(listen, &args);
        assert!(ok, "{name:?}: {text}");
        assert_eq!(peer_cn(&text), cn, "{name:?}");
    }
    // A whole HTTPS request, the chain and name verified by curl against the test CA.
    let out = run(
        "curl",
        &[
            "-s",
            "--cacert",
            p(&ca.pem),
            "--resolve",
            &format!("api.example.com:{listen}:127.0.0.1"),
            &format!("https://api.example.com:{listen}/"),
        ],
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello over tls");

    // TLS 1.2 and 1.3 both complete on the default listener; 1.3 only on the strict one.
    let (ok, text) = s_client(listen, &["-brief", "-tls1_2"]);
    assert!(ok && text.contains("Protocol version: TLSv1.2"), "{text}");
    let (ok, text) = s_client(listen, &["-brief", "-tls1_3"]);
    assert!(ok && text.contains("Protocol version: TLSv1.3"), "{text}");
    let (ok, text) = s_client(strict, &["-brief", "-tls1_2"]);
    assert!(!ok, "TLS 1.2 accepted with min_version 1.3: {text}");
    assert_eq!(stat(admin, "listener.tls13_only.tls.handshake.version"), 1);

    // Resumption (TLS 1.2 session ids, from the server's session cache).
    let session = dir.path().join("session.pem");
    let (ok, text) = s_client(listen, &["-tls1_2", "-sess_out", p(&session)]);
    assert!(ok, "{text}");
    let (ok, text) = s_client(listen, &["-tls1_2", "-sess_in", p(&session)]);
    assert!(
        ok && text.contains("Reused, TLSv1.2"),
        "not resumed:\n{text}"
    );

    // ALPN: a client that offers only a protocol the listener does not speak is refused.
    let (ok, text) = s_client(listen, &["-brief", "-alpn", "h2"]);
    assert!(!ok, "{text}");
    assert_eq!(stat(admin, "listener.tls_in.tls.handshake.alpn"), 1);
    // A plaintext client gets nothing forwarded: an `other` failure.
    let (status, _) = http_request(addr(listen), "GET", "/");
    assert_eq!(status, 0);
    assert_eq!(stat(admin, "listener.tls_in.tls.handshake.other"), 1);
    // The readiness probe of `start_sluice` connected and closed without a byte.
    assert_eq!(stat(admin, "listener.tls_in.tls.handshake.closed"), 1);
    // 5 SNI probes, curl, 1.2, 1.3, two resumption runs.
    assert_eq!(stat(admin, "listener.tls_in.tls.handshake.ok"), 10);
}

/// Mutual TLS with a SPIFFE identity: the listener admits a client certificate from its CA
/// carrying the allowed URI SAN, and refuses — each counted by reason — no certificate, a
/// certificate from another CA, and one from the right CA with another identity.
#[test]
fn mutual_tls_admits_only_the_allowed_spiffe_identity() {
    if !require_peers(&["curl", "nginx"]) {
        return;
    }
    let dir = TempDir::new("tls-mtls");
    let ca = make_ca(&dir, "mesh-ca");
    let other_ca = make_ca(&dir, "other-ca");
    let (server_cert, server_key) = leaf(&dir, &ca, "server", &["svc.example"], None);
    let allowed = "spiffe://cluster.local/ns/default/sa/client";
    let (good_cert, good_key) = leaf(&dir, &ca, "good", &[], Some(allowed));
    let (stranger_cert, stranger_key) = leaf(
        &dir,
        &ca,
        "stranger",
        &[],
        Some("spiffe://cluster.local/ns/default/sa/stranger"),
    );
    let (foreign_cert, foreign_key) = leaf(&dir, &other_ca, "foreign", &[], Some(allowed));
    let upstream = free_port();
    let _nginx = start_nginx(&dir, "up", upstream, "hello, client");
    let (listen, admin) = (free_port(), free_port());
    let config = format!(
        r#"
admin: {{ address: 127.0.0.1:{admin} }}
listeners:
  - name: mtls_in
    address: 127.0.0.1:{listen}
    tls:
      certificates: [ {{ cert_chain: {sc}, private_key: {sk} }} ]
      client_ca: {ca}
      verify_subject_alt_names: ["{allowed}"]
    tcp_proxy: {{ cluster: app }}
clusters:
  - {{ name: app, hosts: [ {{ address: 127.0.0.1:{upstream} }} ] }}
"#,
        sc = p(&server_cert),
        sk = p(&server_key),
        ca = p(&ca.pem),
    );
    let _s = start_sluice(&dir, &config, 1, addr(listen));
    let curl = |client: Option<(&Path, &Path)>| {
        let resolve = format!("svc.example:{listen}:127.0.0.1");
        let url = format!("https://svc.example:{listen}/");
        let mut args = vec!["-s", "--cacert", p(&ca.pem), "--resolve", &resolve];
        if let Some((cert, key)) = client {
            args.extend(["--cert", p(cert), "--key", p(key)]);
        }
        args.push(&url);
        let out = run("curl", &args);
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_eq!(curl(Some((&good_cert, &good_key))), "hello, client");
    assert_eq!(curl(None), "");
    assert_eq!(curl(Some((&foreign_cert, &foreign_key))), "");
    assert_eq!(curl(Some((&stranger_cert, &stranger_key))), "");
    for (outcome, n) in [
        ("ok", 1),
        ("no_client_certificate", 1),
        ("unknown_ca", 1),
        ("bad_san", 1),
    ] {
        assert_eq!(
            stat(admin, &format!("listener.mtls_in.tls.handshake.{outcome}")),
            n,
            "{outcome}"
        );
    }
}

/// A certificate file that is missing and a key that belongs to another certificate are each
/// refused by `sluice validate`, at their config paths.
#[test]
fn bad_certificate_files_are_refused_at_their_paths() {
    let dir = TempDir::new("tls-bad");
    let ca = make_ca(&dir, "ca");
    let (cert, _) = leaf(&dir, &ca, "one", &["one.example"], None);
    let (_, other_key) = leaf(&dir, &ca, "two", &["two.example"], None);
    let missing = dir.path().join("missing.pem");
    let config = dir.write(
        "bad.yaml",
        &format!(
            r#"
listeners:
  - name: tls_in
    address: 127.0.0.1:1
    tls:
      certificates:
        - {{ cert_chain: {missing}, private_key: {key} }}
        - {{ cert_chain: {cert}, private_key: {key} }}
    tcp_proxy: {{ cluster: app }}
clusters:
  - {{ name: app, hosts: [ {{ address: 127.0.0.1:2 }} ] }}
"#,
            missing = p(&missing),
            cert = p(&cert),
            key = p(&other_key),
        ),
    );
    let out = run(sluice_bin(), &["validate", "-c", p(&config)]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!(
            "listeners[0].tls.certificates[0].cert_chain: cannot read {}",
            missing.display()
        )),
        "{err}"
    );
    assert!(
        err.contains("listeners[0].tls.certificates[1].private_key: ")
            && err.contains("does not go with the certificate"),
        "{err}"
    );
}

/// Rotation by reload: new certificate files + SIGHUP → new handshakes get the new
/// certificate; a bad new pair (a key of another certificate) is refused by the reload with its
/// path, and the listener keeps the last good one.
#[test]
fn a_reload_rotates_the_certificate_and_a_bad_pair_keeps_the_old_one() {
    if !require_peers(&["openssl"]) {
        return;
    }
    let dir = TempDir::new("tls-rotate");
    let ca = make_ca(&dir, "ca");
    let (one_cert, one_key) = leaf(&dir, &ca, "one", &["svc.example"], None);
    let (two_cert, two_key) = leaf(&dir, &ca, "two", &["svc.example"], None);
    let (_, stray_key) = leaf(&dir, &ca, "stray", &["svc.example"], None);
    let (cert, key) = (dir.path().join("live.pem"), dir.path().join("live.key"));
    std::fs::copy(&one_cert, &cert).unwrap();
    std::fs::copy(&one_key, &key).unwrap();
    let upstream = free_port();
    let _echo = spawn(
        &dir,
        "upstream",
        &python(),
        &[
            "-c",
            &format!(
                "import socket\ns=socket.socket();s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n\
                 s.bind(('127.0.0.1',{upstream}));s.listen(64)\nwhile True:\n c,_=s.accept();c.close()"
            ),
        ],
    );
    let listen = free_port();
    let config = format!(
        r#"
listeners:
  - name: tls_in
    address: 127.0.0.1:{listen}
    tls: {{ certificates: [ {{ cert_chain: {c}, private_key: {k} }} ] }}
    tcp_proxy: {{ cluster: app }}
clusters:
  - {{ name: app, hosts: [ {{ address: 127.0.0.1:{upstream} }} ] }}
"#,
        c = p(&cert),
        k = p(&key),
    );
    let sluice = start_sluice(&dir, &config, 1, addr(listen));
    let served = || {
        let (ok, text) = s_client(listen, &["-brief", "-servername", "svc.example"]);
        assert!(ok, "{text}");
        peer_cn(&text).to_owned()
    };
    assert_eq!(served(), "one");

    std::fs::copy(&two_cert, &cert).unwrap();
    std::fs::copy(&two_key, &key).unwrap();
    sluice.signal("HUP");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while served() != "two" {
        assert!(
            std::time::Instant::now() < deadline,
            "the reload did not rotate the certificate:\n{}",
            sluice.log_text()
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }

    std::fs::copy(&stray_key, &key).unwrap();
    sluice.signal("HUP");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !sluice
        .log_text()
        .contains("listeners[0].tls.certificates[0].private_key")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the bad pair was not reported:\n{}",
            sluice.log_text()
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(served(), "two", "the last good certificate is kept");
}

/// One plaintext HTTP/1.0 request through the proxy at `port`: what came back (empty when the
/// proxy closed the connection).
fn through(port: u16) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr(port)).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    s.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// Origination: a cluster's `tls` verifies the upstream against its CA and identity — by `sni`,
/// or by a SPIFFE URI SAN — and presents a client certificate to an upstream that requires one;
/// an upstream from another CA, or proving another name, is a connect failure counted by
/// reason, and nothing is sent to it.
#[test]
fn clusters_originate_verified_tls_and_refuse_an_unverified_upstream() {
    if !require_peers(&["openssl"]) {
        return;
    }
    let dir = TempDir::new("tls-origin");
    let ca = make_ca(&dir, "mesh-ca");
    let other_ca = make_ca(&dir, "other-ca");
    let spiffe = "spiffe://cluster.local/ns/default/sa/upstream";
    let (up_cert, up_key) = leaf(&dir, &ca, "upstream", &["upstream.example"], Some(spiffe));
    let (client_cert, client_key) = leaf(&dir, &ca, "sidecar", &[], None);
    // From the right CA, valid for the host's IP address, with another workload's identity:
    // a reused pod IP. It must not pass for the SPIFFE id the cluster wants.
    let (impostor_cert, impostor_key) = {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "impostor");
        params
            .subject_alt_names
            .push(SanType::IpAddress("127.0.0.1".parse().unwrap()));
        params.subject_alt_names.push(SanType::URI(
            "spiffe://cluster.local/ns/evil/sa/evil".try_into().unwrap(),
        ));
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &ca.issuer).unwrap();
        (
            dir.write("impostor.pem", &cert.pem()),
            dir.write("impostor.key", &key.serialize_pem()),
        )
    };
    let (plain_up, mtls_up, impostor_up) = (free_port(), free_port(), free_port());
    let mut servers = Vec::new();
    for (name, port, cert, key, extra) in [
        ("plain-up", plain_up, &up_cert, &up_key, vec![]),
        (
            "mtls-up",
            mtls_up,
            &up_cert,
            &up_key,
            vec!["-Verify", "1", "-CAfile", p(&ca.pem)],
        ),
        (
            "impostor-up",
            impostor_up,
            &impostor_cert,
            &impostor_key,
            vec![],
        ),
    ] {
        let accept = format!("127.0.0.1:{port}");
        let mut args = vec![
            "s_server",
            "-accept",
            &accept,
            "-cert",
            p(cert),
            "-key",
            p(key),
            "-www",
        ];
        args.extend(extra.iter().copied());
        let mut proc = spawn(&dir, name, "openssl", &args);
        wait_listening(addr(port), &mut proc);
        servers.push(proc);
    }
    let ports: Vec<u16> = (0..7).map(|_| free_port()).collect();
    let admin = free_port();
    let listener = |name: &str, port: u16| {
        format!(
            "  - {{ name: {name}, address: 127.0.0.1:{port}, tcp_proxy: {{ cluster: {name}, max_connect_attempts: 1 }} }}\n"
        )
    };
    let names = [
        "by_sni",
        "by_spiffe",
        "wrong_ca",
        "wrong_name",
        "mtls",
        "mtls_no_cert",
        "impostor",
    ];
    let listeners: String = names
        .iter()
        .zip(&ports)
        .map(|(n, p)| listener(n, *p))
        .collect();
    let (ca_pem, other_pem) = (p(&ca.pem), p(&other_ca.pem));
    let (cc, ck) = (p(&client_cert), p(&client_key));
    let config = format!(
        r#"
admin: {{ address: 127.0.0.1:{admin} }}
listeners:
{listeners}clusters:
  - {{ name: by_sni, hosts: [ {{ address: 127.0.0.1:{plain_up} }} ], tls: {{ sni: upstream.example, ca: {ca_pem} }} }}
  - {{ name: by_spiffe, hosts: [ {{ address: 127.0.0.1:{plain_up} }} ], tls: {{ ca: {ca_pem}, verify_subject_alt_names: ["{spiffe}"] }} }}
  - {{ name: wrong_ca, hosts: [ {{ address: 127.0.0.1:{plain_up} }} ], tls: {{ sni: upstream.example, ca: {other_pem} }} }}
  - {{ name: wrong_name, hosts: [ {{ address: 127.0.0.1:{plain_up} }} ], tls: {{ sni: impostor.example, ca: {ca_pem} }} }}
  - {{ name: mtls, hosts: [ {{ address: 127.0.0.1:{mtls_up} }} ], tls: {{ sni: upstream.example, ca: {ca_pem}, cert_chain: {cc}, private_key: {ck} }} }}
  - {{ name: mtls_no_cert, hosts: [ {{ address: 127.0.0.1:{mtls_up} }} ], tls: {{ sni: upstream.example, ca: {ca_pem} }} }}
  - {{ name: impostor, hosts: [ {{ address: 127.0.0.1:{impostor_up} }} ], tls: {{ ca: {ca_pem}, verify_subject_alt_names: ["{spiffe}"] }} }}
"#
    );
    let _s = start_sluice(&dir, &config, 1, addr(ports[0]));
    let page = "HTTP/1.0 200 ok";
    assert!(through(ports[0]).starts_with(page), "by sni");
    assert!(through(ports[1]).starts_with(page), "by spiffe id");
    assert_eq!(through(ports[2]), "", "an upstream from another CA");
    assert_eq!(through(ports[3]), "", "an upstream proving another name");
    assert!(
        through(ports[4]).starts_with(page),
        "mtls with a client certificate"
    );
    let no_cert = through(ports[5]);
    assert!(
        !no_cert.starts_with(page),
        "mtls without a client certificate: {no_cert}"
    );
    assert_eq!(
        through(ports[6]),
        "",
        "an upstream valid for its IP with another identity"
    );
    assert_eq!(stat(admin, "cluster.impostor.upstream_tls_fail.bad_san"), 1);
    assert_eq!(
        stat(admin, "cluster.wrong_ca.upstream_tls_fail.unknown_ca"),
        1
    );
    assert_eq!(
        stat(admin, "cluster.wrong_name.upstream_tls_fail.bad_san"),
        1
    );
    for name in ["wrong_ca", "wrong_name"] {
        assert_eq!(
            stat(admin, &format!("cluster.{name}.upstream_cx_connect_fail")),
            1
        );
    }
    assert_eq!(stat(admin, "cluster.by_sni.upstream_cx_connect_fail"), 0);
}

/// The TLS contexts are one per config generation, shared by the workers: a session made on one
/// worker resumes on any (with per-worker caches and ticket keys about half failed on 2
/// workers).
#[test]
fn sessions_resume_on_every_worker() {
    if !require_peers(&["openssl"]) {
        return;
    }
    let dir = TempDir::new("tls-resume");
    let ca = make_ca(&dir, "ca");
    let (cert, key) = leaf(&dir, &ca, "svc", &["svc.example"], None);
    let listen = free_port();
    let config = format!(
        r#"
listeners:
  - name: tls_in
    address: 127.0.0.1:{listen}
    tls: {{ certificates: [ {{ cert_chain: {c}, private_key: {k} }} ] }}
    echo: {{}}
clusters: []
"#,
        c = p(&cert),
        k = p(&key),
    );
    // `echo` does not take `tls` (tcp_proxy only): proxy to a local echo listener instead.
    let echo = free_port();
    let config = config.replace(
        "    echo: {}\nclusters: []\n",
        &format!(
            "    tcp_proxy: {{ cluster: echo }}\n  - {{ name: echo, address: 127.0.0.1:{echo}, echo: {{}} }}\nclusters:\n  - {{ name: echo, hosts: [ {{ address: 127.0.0.1:{echo} }} ] }}\n"
        ),
    );
    let _s = start_sluice(&dir, &config, 2, addr(listen));
    let session = dir.path().join("session.pem");
    let (ok, text) = s_client(listen, &["-tls1_2", "-sess_out", p(&session)]);
    assert!(ok, "{text}");
    for i in 0..8 {
        let (ok, text) = s_client(listen, &["-tls1_2", "-sess_in", p(&session)]);
        assert!(
            ok && text.contains("Reused, TLSv1.2"),
            "attempt {i} not resumed:\n{text}"
        );
    }
}

/// `max_version`, `ecdh_curves`, `cipher_suites` and resumption switched off, seen from
/// OpenSSL: the version, group and suite negotiated are the pinned ones, a client that offers
/// nothing in common is refused with an alert, the defaults pick AES-128-GCM over OpenSSL's
/// preference for AES-256-GCM (the listener's order wins, as in Envoy), and a listener
/// without tickets and cache resumes nothing — TLS 1.3 nor 1.2 — while one with the defaults
/// resumes both.
#[test]
fn tls_params_pin_version_and_group_and_resumption_can_be_turned_off() {
    if !require_peers(&["openssl"]) {
        return;
    }
    let dir = TempDir::new("tls-params");
    let ca = make_ca(&dir, "ca");
    let (cert, key) = leaf(&dir, &ca, "svc", &["svc.example"], None);
    let [pinned, no_resume, defaults] = [free_port(), free_port(), free_port()];
    let certs = format!(
        "certificates: [ {{ cert_chain: {}, private_key: {} }} ]",
        p(&cert),
        p(&key)
    );
    // HTTP listeners that answer and close (`Connection: close`): `s_client_request` reads
    // until then, TLS 1.3 tickets included.
    let http = r#"http: { virtual_hosts: [ { name: v, domains: ["*"], routes: [ { match: { prefix: / }, direct_response: { status: 200, body: "ok" } } ] } ] }"#;
    let config = format!(
        r#"
listeners:
  - name: pinned
    address: 127.0.0.1:{pinned}
    tls: {{ {certs}, max_version: 1.2, ecdh_curves: [P-256], cipher_suites: [ECDHE-ECDSA-CHACHA20-POLY1305] }}
    {http}
  - name: no_resume
    address: 127.0.0.1:{no_resume}
    tls: {{ {certs}, session_tickets: false, session_cache: false }}
    {http}
  - name: defaults
    address: 127.0.0.1:{defaults}
    tls: {{ {certs} }}
    {http}
clusters: []
"#
    );
    let sluice = start_sluice(&dir, &config, 1, addr(pinned));
    let (ok, text) = s_client(pinned, &["-brief"]);
    assert!(ok, "{text}");
    assert!(text.contains("Protocol version: TLSv1.2"), "{text}");
    assert!(text.contains("prime256v1"), "not P-256:\n{text}");
    assert!(
        text.contains("Ciphersuite: ECDHE-ECDSA-CHACHA20-POLY1305"),
        "not the listed suite:\n{text}"
    );
    let (ok, text) = s_client(
        pinned,
        &["-brief", "-cipher", "ECDHE-ECDSA-AES128-GCM-SHA256"],
    );
    assert!(!ok && text.contains("alert"), "a suite not listed:\n{text}");
    // OpenSSL offers AES-256-GCM first (TLS 1.3 and 1.2); the defaults choose AES-128-GCM.
    let (ok, text) = s_client(defaults, &["-brief"]);
    assert!(ok, "{text}");
    assert!(
        text.contains("Ciphersuite: TLS_AES_128_GCM_SHA256"),
        "TLS 1.3 defaults:\n{text}"
    );
    let (ok, text) = s_client(defaults, &["-brief", "-tls1_2"]);
    assert!(ok, "{text}");
    assert!(
        text.contains("Ciphersuite: ECDHE-ECDSA-AES128-GCM-SHA256"),
        "TLS 1.2 defaults:\n{text}"
    );
    let (ok, text) = s_client(pinned, &["-brief", "-groups", "X25519"]);
    assert!(!ok && text.contains("alert"), "X25519 only:\n{text}");
    let (ok, text) = s_client(pinned, &["-brief", "-tls1_3"]);
    assert!(!ok && text.contains("alert"), "TLS 1.3 only:\n{text}");

    // Resumption, per version: the first connection writes its session (and TLS 1.3 tickets,
    // read after the handshake), the second offers it.
    let resumed = |port: u16, version: &str| {
        let session = dir.path().join(format!("session-{port}{version}.pem"));
        let (ok, text) = s_client_request(port, &[version, "-sess_out", p(&session)]);
        assert!(ok, "{text}");
        if !session.exists() {
            // TLS 1.3 with no ticket sent: OpenSSL has no session to write, nothing to offer.
            return false;
        }
        let (ok, text) = s_client_request(port, &[version, "-sess_in", p(&session)]);
        assert!(ok, "{text}");
        text.lines().any(|l| l.starts_with("Reused, "))
    };
    for version in ["-tls1_3", "-tls1_2"] {
        assert!(
            resumed(defaults, version),
            "defaults {version}: not resumed"
        );
        assert!(!resumed(no_resume, version), "no_resume {version}: resumed");
    }

    // A client that sends an IP address as its server name (wrk does, on every connection) is
    // served, and the TLS library's warning about it is not a log line per connection.
    for _ in 0..3 {
        let (ok, text) = s_client(defaults, &["-brief", "-servername", "127.0.0.1"]);
        assert!(ok, "{text}");
    }
    // A negative check (no warning line): the pause gives a warning the proxy might still be
    // writing the time to reach the log; there is no event to wait for instead.
    std::thread::sleep(std::time::Duration::from_millis(200));
    let log = sluice.log_text();
    assert!(
        !log.contains("Illegal SNI"),
        "rustls warned per connection:\n{log}"
    );
}

/// A client stuck in its TLS handshake does not hold a stopping proxy past its drain timeout
/// (the handshake watched nothing, and the session then started after the drain deadline had
/// been announced, so it escaped the drain for good).
#[test]
fn a_handshake_in_progress_ends_at_the_drain_deadline() {
    if !require_peers(&[]) {
        return;
    }
    let dir = TempDir::new("tls-drain");
    let ca = make_ca(&dir, "ca");
    let (cert, key) = leaf(&dir, &ca, "svc", &["svc.example"], None);
    let (listen, upstream, admin) = (free_port(), free_port(), free_port());
    let config = format!(
        r#"
admin: {{ address: 127.0.0.1:{admin} }}
listeners:
  - name: tls_in
    address: 127.0.0.1:{listen}
    tls: {{ certificates: [ {{ cert_chain: {c}, private_key: {k} }} ], handshake_timeout: 1h }}
    tcp_proxy: {{ cluster: app }}
clusters:
  - {{ name: app, hosts: [ {{ address: 127.0.0.1:{upstream} }} ] }}
drain_timeout: 1s
"#,
        c = p(&cert),
        k = p(&key),
    );
    let mut sluice = start_sluice(&dir, &config, 1, addr(listen));
    // Connected, and never a byte of ClientHello.
    let _stalled = std::net::TcpStream::connect(addr(listen)).unwrap();
    // The proxy has accepted it and waits in its handshake (one still in the listen queue at
    // SIGTERM would test nothing).
    assert!(
        eventually(std::time::Duration::from_secs(10), || {
            admin_stat(admin, "listener.tls_in.downstream_cx_active") == 1
        }),
        "the proxy never accepted the stalled connection:\n{}",
        sluice.log_text()
    );
    sluice.signal("TERM");
    assert!(
        sluice
            .wait_exit(std::time::Duration::from_secs(60))
            .is_some(),
        "still running a minute after SIGTERM with drain_timeout 1s:\n{}",
        sluice.log_text()
    );
}
