//! End-to-end tests of TLS on `http`, `bolt` and `protocol: auto` listeners and of TLS
//! upstreams for HTTP and Bolt clusters, with the test PKI of `support::pki`: curl and h2load
//! over HTTPS (ALPN picking HTTP/1.1 or HTTP/2), openssl `s_client` offering an unknown
//! protocol, nginx as an HTTPS upstream verified by name (and never sent a request when it
//! does not verify), raw Bolt frames over rustls through two TLS hops, and a certificate
//! rotation by SIGHUP under wrk over HTTPS. `transport_socket_matches`: TLS or plaintext per
//! host of one cluster, by the host's labels.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice_core::bolt::{self, RequestSpec, ResponseStatus, Version};
use support::pki::*;
use support::raw_h2::h2load_counts;
use support::*;

/// `curl` over HTTPS to `name` (resolved to 127.0.0.1) on `port`, verifying against `ca`:
/// (HTTP version as curl reports it, status, body).
fn curl_https(
    port: u16,
    ca: &Path,
    name: &str,
    path: &str,
    args: &[&str],
) -> (String, u16, String) {
    let resolve = format!("{name}:{port}:127.0.0.1");
    let url = format!("https://{name}:{port}{path}");
    let mut all = vec![
        "-sS",
        "--max-time",
        "10",
        "--cacert",
        p(ca),
        "--resolve",
        &resolve,
        "-w",
        "\n%{http_version} %{http_code}",
    ];
    all.extend_from_slice(args);
    all.push(&url);
    let out = run("curl", &all);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, tail) = text
        .rsplit_once('\n')
        .unwrap_or_else(|| panic!("curl: {text}{}", String::from_utf8_lossy(&out.stderr)));
    let (version, status) = tail.split_once(' ').unwrap();
    (
        version.to_owned(),
        status.parse().unwrap_or(0),
        body.to_owned(),
    )
}

/// Issue 13 (Istio auto-mTLS): a cluster's `transport_socket_matches` pick each host's
/// transport by its labels — the host labelled `tlsMode: istio` is spoken to over TLS verified
/// with the entry's CA, the unlabelled one in plaintext, both serving the same route; a labelled
/// host whose certificate is from another CA fails to connect (502) and is never sent a
/// request, in TLS or in plaintext.
#[test]
fn transport_socket_matches_give_mtls_to_labelled_hosts_and_plaintext_to_the_others() {
    if !require_peers(&["nginx"]) {
        return;
    }
    let dir = TempDir::new("tls-l7-tsm");
    let ca = make_ca(&dir, "mesh-ca");
    let other_ca = make_ca(&dir, "other-ca");
    let (up_cert, up_key) = leaf(&dir, &ca, "sidecar", &["mesh.example"], None);
    let (wrong_cert, wrong_key) = leaf(&dir, &other_ca, "wrong", &["mesh.example"], None);
    let (tls_up, plain_up, wrong_up) = (free_port(), free_port(), free_port());
    let wrong_log = dir.path().join("wrong-access.log");
    let _tls = start_nginx_tls(
        &dir,
        "tls-up",
        tls_up,
        (&up_cert, &up_key),
        r#"ssl_protocols TLSv1.2 TLSv1.3;
           location / { return 200 "secure $ssl_protocol $uri"; }"#,
    );
    let _plain = start_nginx_with(
        &dir,
        "plain-up",
        plain_up,
        r#"location / { return 200 "plain $uri"; }"#,
    );
    let _wrong = start_nginx_tls(
        &dir,
        "wrong-up",
        wrong_up,
        (&wrong_cert, &wrong_key),
        &format!(
            r#"access_log {}; location / {{ return 200 "wrong $uri"; }}"#,
            wrong_log.display()
        ),
    );
    let (listen, admin) = (free_port(), free_port());
    let matches = format!(
        r#"transport_socket_matches:
      - {{ name: tlsMode-istio, match: {{ tlsMode: istio }}, tls: {{ sni: mesh.example, ca: {ca} }} }}
      - {{ name: tlsMode-disabled, match: {{}}, tls: null }}"#,
        ca = p(&ca.pem)
    );
    let config = format!(
        r#"
admin: {{ address: 127.0.0.1:{admin} }}
listeners:
  - name: web
    address: 127.0.0.1:{listen}
    http:
      virtual_hosts:
        - name: all
          domains: ["*"]
          routes:
            - {{ match: {{ prefix: /mesh }}, route: {{ cluster: mesh }} }}
            - {{ match: {{ prefix: /wrong }}, route: {{ cluster: wrong }} }}
clusters:
  - name: mesh
    hosts:
      - {{ address: 127.0.0.1:{tls_up}, transport_socket_match: {{ tlsMode: istio }} }}
      - {{ address: 127.0.0.1:{plain_up} }}
    {matches}
  - name: wrong
    hosts:
      - {{ address: 127.0.0.1:{wrong_up}, transport_socket_match: {{ tlsMode: istio }} }}
    {matches}
"#
    );
    let _sluice = start_sluice(&dir, &config, 1, addr(listen));
    let mut bodies = Vec::new();
    for i in 0..6 {
        let (status, body) = http_request(addr(listen), "GET", &format!("/mesh/{i}"));
        assert_eq!(status, 200, "{body}");
        bodies.push(body);
    }
    // Round robin over both hosts: each served three, each in its own transport.
    let secure = bodies
        .iter()
        .filter(|b| b.starts_with("secure TLSv1.3 /mesh/"))
        .count();
    let plain = bodies
        .iter()
        .filter(|b| b.starts_with("plain /mesh/"))
        .count();
    assert_eq!((secure, plain), (3, 3), "{bodies:?}");
    assert_eq!(stat(admin, "cluster.mesh.upstream_cx_connect_fail"), 0);

    for _ in 0..3 {
        let (status, body) = http_request(addr(listen), "GET", "/wrong");
        assert_eq!((status, body.as_str()), (502, "upstream connect error\n"));
    }
    assert!(stat(admin, "cluster.wrong.upstream_tls_fail.unknown_ca") >= 3);
    // Never a fallback to plaintext (nginx would log the plain request it refused with 400).
    let logged = std::fs::read_to_string(&wrong_log).unwrap_or_default();
    assert!(
        logged.trim().is_empty(),
        "the unverified host was sent: {logged}"
    );
}

fn routes_to(cluster: &str) -> String {
    format!(
        r#"virtual_hosts: [ {{ name: all, domains: ["*"], routes: [ {{ match: {{ prefix: / }}, route: {{ cluster: {cluster} }} }} ] }} ]"#
    )
}

/// An `http` listener with `tls` and no `alpn`: ALPN picks HTTP/1.1 or HTTP/2 per connection
/// (curl and h2load), the request goes upstream with `x-forwarded-proto: https` (the client's own
/// replaced), a client offering only an unknown protocol is refused and counted, and an
/// `http1` listener offers `http/1.1` only.
#[test]
fn https_listeners_pick_the_codec_by_alpn_and_say_https_upstream() {
    if !require_peers(&["openssl", "curl", "nginx", "h2load"]) {
        return;
    }
    let dir = TempDir::new("tls-l7-alpn");
    let ca = make_ca(&dir, "ca");
    let (cert, key) = leaf(&dir, &ca, "web", &["web.example"], None);
    let up = free_port();
    let _nginx = start_nginx_with(
        &dir,
        "up",
        up,
        r#"location / { return 200 "proto=$http_x_forwarded_proto"; }"#,
    );
    let (listen, h1_only, admin) = (free_port(), free_port(), free_port());
    let config = format!(
        r#"
admin: {{ address: 127.0.0.1:{admin} }}
listeners:
  - name: https_in
    address: 127.0.0.1:{listen}
    tls: {{ certificates: [ {{ cert_chain: {c}, private_key: {k} }} ] }}
    http: {{ {routes} }}
  - name: h1_only
    address: 127.0.0.1:{h1_only}
    tls: {{ certificates: [ {{ cert_chain: {c}, private_key: {k} }} ] }}
    http: {{ codec: http1, {routes} }}
clusters:
  - {{ name: app, hosts: [ {{ address: 127.0.0.1:{up} }} ] }}
"#,
        c = p(&cert),
        k = p(&key),
        routes = routes_to("app"),
    );
    let _sluice = start_sluice(&dir, &config, 2, addr(listen));

    let served = |port, args: &[&str]| curl_https(port, &ca.pem, "web.example", "/", args);
    assert_eq!(
        served(listen, &["--http1.1"]),
        ("1.1".into(), 200, "proto=https".into())
    );
    assert_eq!(
        served(listen, &["--http2"]),
        ("2".into(), 200, "proto=https".into())
    );
    // The client's own claim is replaced.
    assert_eq!(
        served(listen, &["--http2", "-H", "x-forwarded-proto: http"]),
        ("2".into(), 200, "proto=https".into())
    );
    assert_eq!(
        served(listen, &["--http1.1", "-H", "x-forwarded-proto: http"]),
        ("1.1".into(), 200, "proto=https".into())
    );
    // An http1 listener offers http/1.1 only: curl's h2 offer ends as HTTP/1.1.
    assert_eq!(
        served(h1_only, &["--http2"]),
        ("1.1".into(), 200, "proto=https".into())
    );

    let out = run(
        "h2load",
        &[
            "-n",
            "2000",
            "-c",
            "4",
            "-m",
            "10",
            &format!("https://127.0.0.1:{listen}/"),
        ],
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(h2load_counts(&text), (2000, 0, 0), "{text}");
    assert!(text.contains("Application protocol: h2"), "{text}");

    // Only a protocol the listener does not have: refused, counted.
    let (ok, text) = s_client(listen, &["-brief", "-alpn", "spdy/3"]);
    assert!(!ok, "{text}");
    assert_eq!(stat(admin, "listener.https_in.tls.handshake.alpn"), 1);
    let (ok, text) = s_client(h1_only, &["-brief", "-alpn", "h2"]);
    assert!(!ok, "{text}");
    assert_eq!(stat(admin, "listener.h1_only.tls.handshake.alpn"), 1);
}

/// nginx as an HTTPS upstream of HTTP routes: verified by `sni` against the cluster's CA, it
/// serves (on pooled keep-alive connections); with a CA that did not sign its certificate the
/// request is answered 502 (`upstream connect error`, as any connect failure), counted as
/// `unknown_ca`, and nginx's access log shows that no request ever reached it. HTTP health
/// checks run over TLS the same way.
#[test]
fn an_https_upstream_is_verified_and_an_unverified_one_is_never_sent_a_request() {
    if !require_peers(&["nginx"]) {
        return;
    }
    let dir = TempDir::new("tls-l7-upstream");
    let ca = make_ca(&dir, "mesh-ca");
    let other_ca = make_ca(&dir, "other-ca");
    let (up_cert, up_key) = leaf(&dir, &ca, "upstream", &["upstream.example"], None);
    let up = free_port();
    let access_log = dir.path().join("upstream-access.log");
    let _nginx = start_nginx_tls(
        &dir,
        "up",
        up,
        (&up_cert, &up_key),
        &format!(
            r#"ssl_protocols TLSv1.2 TLSv1.3; access_log {};
               location / {{ return 200 "secure $ssl_protocol $uri"; }}"#,
            access_log.display()
        ),
    );
    let (listen, admin) = (free_port(), free_port());
    let config = format!(
        r#"
admin: {{ address: 127.0.0.1:{admin} }}
listeners:
  - name: web
    address: 127.0.0.1:{listen}
    http:
      virtual_hosts:
        - name: all
          domains: ["*"]
          routes:
            - {{ match: {{ prefix: /good }}, route: {{ cluster: good }} }}
            - {{ match: {{ prefix: /bad }}, route: {{ cluster: bad }} }}
clusters:
  - name: good
    hosts: [ {{ address: 127.0.0.1:{up} }} ]
    tls: {{ sni: upstream.example, ca: {ca} }}
    health_check: {{ http: {{ path: /healthz-good }}, interval: 200ms, no_traffic_interval: 200ms }}
  - name: bad
    hosts: [ {{ address: 127.0.0.1:{up} }} ]
    tls: {{ sni: upstream.example, ca: {other} }}
  - name: bad_checked
    hosts: [ {{ address: 127.0.0.1:{up} }} ]
    tls: {{ sni: upstream.example, ca: {other} }}
    health_check: {{ http: {{ path: /healthz-bad }}, interval: 200ms, no_traffic_interval: 200ms }}
  - name: tcp_checked
    hosts: [ {{ address: 127.0.0.1:{up} }} ]
    tls: {{ sni: upstream.example, ca: {other} }}
    health_check: {{ tcp: {{}}, interval: 200ms, no_traffic_interval: 200ms }}
  - name: tcp_good
    hosts: [ {{ address: 127.0.0.1:{up} }} ]
    tls: {{ sni: upstream.example, ca: {ca} }}
    health_check: {{ tcp: {{}}, interval: 200ms, no_traffic_interval: 200ms }}
"#,
        ca = p(&ca.pem),
        other = p(&other_ca.pem),
    );
    let sluice = start_sluice(&dir, &config, 1, addr(listen));
    let requests_logged = || {
        std::fs::read_to_string(&access_log)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };

    // A handshake that does not verify is a connect failure, answered as any other: 502 UF.
    for _ in 0..3 {
        let (status, body) = http_request(addr(listen), "GET", "/bad");
        assert_eq!((status, body.as_str()), (502, "upstream connect error\n"));
    }
    assert!(stat(admin, "cluster.bad.upstream_tls_fail.unknown_ca") >= 3);
    // Each failed request is one attempt and one connect failure, counted once (health probes
    // count in `upstream_tls_fail` but not here).
    assert_eq!(stat(admin, "cluster.bad.upstream_cx_connect_fail"), 3);
    assert_eq!(stat(admin, "cluster.bad.upstream_cx_connect_timeout"), 0);

    // Health checks over TLS: the verified host passes, the other fails without a request.
    let deadline = Instant::now() + Duration::from_secs(10);
    // A `tcp` check on a TLS cluster handshakes too: a certificate that does not verify makes
    // the host unhealthy. Probe handshake failures count with the requests' (by reason) and
    // are logged at warn.
    while stat(admin, "cluster.good.health_check.success") < 2
        || stat(admin, "cluster.bad_checked.health_check.failure") < 2
        || stat(admin, "cluster.tcp_checked.health_check.failure") < 2
        || stat(admin, "cluster.tcp_good.health_check.success") < 2
    {
        assert!(Instant::now() < deadline, "no health check results");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(stat(admin, "cluster.bad_checked.health_check.success"), 0);
    assert_eq!(stat(admin, "cluster.tcp_checked.health_check.success"), 0);
    assert_eq!(stat(admin, "cluster.tcp_good.health_check.failure"), 0);
    assert!(stat(admin, "cluster.bad_checked.upstream_tls_fail.unknown_ca") >= 2);
    assert!(stat(admin, "cluster.tcp_checked.upstream_tls_fail.unknown_ca") >= 2);
    let log = sluice.log_text();
    assert!(
        log.lines().any(|l| l.contains("WARN")
            && l.contains("health check: TLS handshake failed")
            && l.contains("tcp_checked")),
        "{log}"
    );

    for i in 0..5 {
        let (status, body) = http_request(addr(listen), "GET", &format!("/good/{i}"));
        assert_eq!(
            (status, body.as_str()),
            (200, &*format!("secure TLSv1.3 /good/{i}"))
        );
    }
    let logged = requests_logged();
    assert_eq!(
        logged.iter().filter(|l| l.contains("GET /good/")).count(),
        5,
        "{logged:?}"
    );
    assert!(
        logged
            .iter()
            .all(|l| l.contains("GET /good/") || l.contains("GET /healthz-good ")),
        "a request reached the upstream that did not verify: {logged:?}"
    );
    assert_eq!(stat(admin, "cluster.good.upstream_tls_fail.unknown_ca"), 0);
}

/// A rustls client to 127.0.0.1:`port` that trusts `ca` and asks for `name`.
fn tls_client(
    port: u16,
    ca: &Path,
    name: &str,
) -> rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let conn = rustls::ClientConnection::new(Arc::new(config), name.to_owned().try_into().unwrap())
        .unwrap();
    let tcp = TcpStream::connect(addr(port)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    rustls::StreamOwned::new(conn, tcp)
}

/// A Bolt upstream (plaintext) that answers every request with its own content.
fn start_bolt_echo() -> u16 {
    let upstream = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = upstream.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in upstream.incoming() {
            let Ok(mut s) = conn else { return };
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    if let Ok(Some(f)) = bolt::decode(&buf, 1 << 20) {
                        let mut out = Vec::new();
                        bolt::encode_response(
                            &mut out,
                            f.version,
                            f.request_id,
                            f.codec,
                            ResponseStatus::Success,
                            b"",
                            &[],
                            f.content,
                        )
                        .unwrap();
                        let n = f.len;
                        buf.drain(..n);
                        if s.write_all(&out).is_err() {
                            return;
                        }
                        continue;
                    }
                    match s.read(&mut chunk) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
            });
        }
    });
    port
}

/// Bolt over TLS both ways: raw Bolt frames from a rustls client to a TLS `bolt` listener, whose
/// cluster originates TLS (verified by `sni`) to a TLS `protocol: auto` listener, whose cluster
/// is the plaintext Bolt upstream; answers come back on the same path. The `auto` listener also
/// serves HTTP/2 over TLS (ALPN `h2`, no sniffing).
#[test]
fn bolt_frames_cross_two_tls_hops_and_auto_serves_https() {
    if !require_peers(&["curl"]) {
        return;
    }
    let dir = TempDir::new("tls-l7-bolt");
    let ca = make_ca(&dir, "ca");
    let (cert, key) = leaf(&dir, &ca, "rpc", &["rpc.example"], None);
    let echo = start_bolt_echo();
    let (outer, inner, admin) = (free_port(), free_port(), free_port());
    let config = format!(
        r#"
admin: {{ address: 127.0.0.1:{admin} }}
listeners:
  - name: bolt_tls
    address: 127.0.0.1:{outer}
    tls: {{ certificates: [ {{ cert_chain: {c}, private_key: {k} }} ] }}
    bolt: {{ routes: [ {{ route: {{ cluster: hop }} }} ] }}
  - name: auto_tls
    address: 127.0.0.1:{inner}
    protocol: auto
    tls: {{ certificates: [ {{ cert_chain: {c}, private_key: {k} }} ] }}
    http:
      virtual_hosts: [ {{ name: all, domains: ["*"], routes: [ {{ match: {{ prefix: / }}, direct_response: {{ status: 200, body: "auto over tls" }} }} ] }} ]
    bolt: {{ routes: [ {{ route: {{ cluster: echo }} }} ] }}
clusters:
  - name: hop
    hosts: [ {{ address: 127.0.0.1:{inner} }} ]
    tls: {{ sni: rpc.example, ca: {ca} }}
  - {{ name: echo, hosts: [ {{ address: 127.0.0.1:{echo} }} ] }}
"#,
        c = p(&cert),
        k = p(&key),
        ca = p(&ca.pem),
    );
    let _sluice = start_sluice(&dir, &config, 1, addr(outer));

    let mut client = tls_client(outer, &ca.pem, "rpc.example");
    let mut buf = Vec::new();
    for id in [7u32, 8, 9] {
        let mut frame = Vec::new();
        let header: [(&[u8], Option<&[u8]>); 1] =
            [(b"service", Some(b"com.example.EchoService:1.0"))];
        let content = format!("payload {id}");
        bolt::encode_request(
            &mut frame,
            &RequestSpec {
                version: Version::V1,
                oneway: false,
                cmd_code: bolt::CMD_REQUEST,
                cmd_version: bolt::CMD_VERSION,
                request_id: id,
                codec: bolt::CODEC_HESSIAN2,
                timeout_ms: 5000,
                class: b"com.alipay.sofa.rpc.core.request.SofaRequest",
                header: &header,
                content: content.as_bytes(),
            },
        )
        .unwrap();
        client.write_all(&frame).unwrap();
        client.flush().unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        let (request_id, status, got) = loop {
            if let Some(f) = bolt::decode(&buf, 1 << 20).unwrap() {
                let out = (f.request_id, f.status, f.content.to_vec());
                let n = f.len;
                buf.drain(..n);
                break out;
            }
            assert!(Instant::now() < deadline, "no answer to request {id}");
            let mut chunk = [0u8; 4096];
            let n = client
                .read(&mut chunk)
                .expect("an answer before the timeout");
            assert!(n > 0, "closed before an answer; have {buf:?}");
            buf.extend_from_slice(&chunk[..n]);
        };
        assert_eq!(
            (request_id, status, got),
            (id, Some(0), content.into_bytes())
        );
    }
    assert!(stat(admin, "listener.bolt_tls.tls.handshake.ok") >= 1);
    assert!(stat(admin, "listener.auto_tls.tls.handshake.ok") >= 1);

    // The auto listener over TLS: ALPN h2 and http/1.1 are HTTP, no sniffing needed.
    for (args, version) in [(["--http2"], "2"), (["--http1.1"], "1.1")] {
        assert_eq!(
            curl_https(inner, &ca.pem, "rpc.example", "/", &args),
            (version.into(), 200, "auto over tls".into())
        );
    }
}

/// A TLS `http` listener with the defaults, rotated by SIGHUP (new certificate files at the
/// same paths) twice under wrk over HTTPS: no request fails, no socket error, and new
/// handshakes present the new certificate.
#[test]
fn a_tls_listener_reloads_under_https_load_without_a_failed_request() {
    if !require_peers(&["openssl", "nginx", "wrk"]) {
        return;
    }
    rotate_under_https_load(
        "tls-l7-reload",
        |dir, port| start_nginx(dir, "up", port, "hello"),
        "/",
        500,
    );
}

/// The same with an upstream that takes 50 ms per request: requests in flight at each reload
/// finish on their old connections.
#[test]
fn a_tls_listener_reloads_under_https_load_with_a_slow_upstream_without_a_failed_request() {
    if !require_peers(&["openssl", "python3", "wrk"]) {
        return;
    }
    rotate_under_https_load(
        "tls-l7-reload-slow",
        |dir, port| start_py_upstream(dir, "up", port),
        "/sleep/50",
        100,
    );
}

/// Serves `path` of the upstream `start` makes through a TLS listener (2 workers, defaults)
/// under wrk over HTTPS while the certificate is rotated twice by SIGHUP; at least
/// `min_requests` must be served, none may fail.
fn rotate_under_https_load(
    tag: &str,
    start: impl FnOnce(&TempDir, u16) -> Proc,
    path: &str,
    min_requests: u64,
) {
    let dir = TempDir::new(tag);
    let ca = make_ca(&dir, "ca");
    let pairs: Vec<_> = ["one", "two", "three"]
        .iter()
        .map(|cn| leaf(&dir, &ca, cn, &["svc.example"], None))
        .collect();
    let (cert, key) = (dir.path().join("live.pem"), dir.path().join("live.key"));
    std::fs::copy(&pairs[0].0, &cert).unwrap();
    std::fs::copy(&pairs[0].1, &key).unwrap();
    let up = free_port();
    let _upstream = start(&dir, up);
    let (listen, admin) = (free_port(), free_port());
    let config = format!(
        r#"
admin: {{ address: 127.0.0.1:{admin} }}
listeners:
  - name: https_in
    address: 127.0.0.1:{listen}
    tls: {{ certificates: [ {{ cert_chain: {c}, private_key: {k} }} ] }}
    http: {{ {routes} }}
clusters:
  - {{ name: app, hosts: [ {{ address: 127.0.0.1:{up} }} ] }}
"#,
        c = p(&cert),
        k = p(&key),
        routes = routes_to("app"),
    );
    let sluice = start_sluice(&dir, &config, 2, addr(listen));
    let served = || {
        let (ok, text) = s_client(listen, &["-brief", "-servername", "svc.example"]);
        assert!(ok, "{text}");
        peer_cn(&text).to_owned()
    };
    assert_eq!(served(), "one");

    let wrk = {
        let url = format!("https://127.0.0.1:{listen}{path}");
        std::thread::spawn(move || run("wrk", &["-t2", "-c16", "-d5s", &url]))
    };
    // The rotations below happen under load: once wrk's requests come.
    assert!(
        eventually(Duration::from_secs(20), || {
            admin_stat(admin, "listener.https_in.http.rq_total") > 16
        }),
        "wrk's requests never reached the proxy:\n{}",
        sluice.log_text()
    );
    for (pair, cn) in pairs[1..].iter().zip(["two", "three"]) {
        std::fs::copy(&pair.0, &cert).unwrap();
        std::fs::copy(&pair.1, &key).unwrap();
        sluice.signal("HUP");
        let deadline = Instant::now() + Duration::from_secs(10);
        while served() != cn {
            assert!(
                Instant::now() < deadline,
                "the reload did not rotate the certificate:\n{}",
                sluice.log_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        std::thread::sleep(Duration::from_millis(1000));
    }
    let out = wrk.join().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!text.contains("Socket errors"), "{text}");
    assert!(!text.contains("Non-2xx"), "{text}");
    let requests: u64 = text
        .lines()
        .find(|l| l.contains("requests in"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(requests >= min_requests, "{text}");
}

/// The first request's header timer (HTTP) and first frame's timer (Bolt) run from the accept,
/// the TLS handshake included: a client that stalls its ClientHello past
/// `request_headers_timeout` (or `frame_timeout`) gets no more time after the handshake. The
/// client here waits 1.5 s before its ClientHello (the handshake timeout is 10 s), then 0.5 s
/// more before its request: with the timers started after the handshake the request was served.
#[test]
fn a_slow_handshake_does_not_extend_the_first_request_timer() {
    let dir = TempDir::new("tls-l7-first-timer");
    let ca = make_ca(&dir, "ca");
    let (cert, key) = leaf(&dir, &ca, "svc", &["svc.example"], None);
    let (web, rpc) = (free_port(), free_port());
    let config = format!(
        r#"
listeners:
  - name: web
    address: 127.0.0.1:{web}
    tls: {{ certificates: [ {{ cert_chain: {c}, private_key: {k} }} ] }}
    http:
      request_headers_timeout: 1s
      virtual_hosts:
        - name: all
          domains: ["*"]
          routes:
            - match: {{ prefix: / }}
              direct_response: {{ status: 200, body: "served" }}
  - name: rpc
    address: 127.0.0.1:{rpc}
    tls: {{ certificates: [ {{ cert_chain: {c}, private_key: {k} }} ] }}
    bolt:
      frame_timeout: 1s
      routes: [ {{ route: {{ cluster: nowhere }} }} ]
clusters:
  - {{ name: nowhere, hosts: [ {{ address: 127.0.0.1:{dead} }} ] }}
"#,
        c = p(&cert),
        k = p(&key),
        dead = free_port(),
    );
    let _sluice = start_sluice(&dir, &config, 1, addr(web));
    // What a client that stalls its ClientHello gets for `request` once the handshake is done.
    let slow_client = |port: u16, request: &[u8]| -> Vec<u8> {
        let mut tls = tls_client(port, &ca.pem, "svc.example");
        std::thread::sleep(Duration::from_millis(1500));
        // The handshake (the proxy's handshake timeout has not passed).
        while tls.conn.is_handshaking() {
            tls.conn.complete_io(&mut tls.sock).unwrap();
        }
        std::thread::sleep(Duration::from_millis(500));
        let _ = tls.write_all(request).and_then(|()| tls.flush());
        let mut got = Vec::new();
        let _ = tls.read_to_end(&mut got);
        got
    };
    let http = slow_client(web, b"GET / HTTP/1.1\r\nHost: svc.example\r\n\r\n");
    assert!(
        !String::from_utf8_lossy(&http).contains("served"),
        "served after the first-request deadline: {}",
        String::from_utf8_lossy(&http)
    );
    // A Bolt heartbeat: the proxy answers it itself when the frame arrives in time.
    let heartbeat = bolt_heartbeat(7);
    let bolt = slow_client(rpc, &heartbeat);
    assert!(
        bolt.is_empty(),
        "answered after the first-frame deadline: {bolt:?}"
    );
    // In time, both are served on the same listeners.
    let mut tls = tls_client(web, &ca.pem, "svc.example");
    tls.write_all(b"GET / HTTP/1.1\r\nHost: svc.example\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut got = Vec::new();
    let _ = tls.read_to_end(&mut got);
    assert!(String::from_utf8_lossy(&got).ends_with("served"), "{got:?}");
    let mut tls = tls_client(rpc, &ca.pem, "svc.example");
    tls.write_all(&heartbeat).unwrap();
    tls.flush().unwrap();
    let mut answer = [0u8; 20];
    tls.read_exact(&mut answer).unwrap();
    assert_eq!(answer[0], 1, "{answer:?}");
}

/// A Bolt v1 heartbeat request.
fn bolt_heartbeat(id: u32) -> Vec<u8> {
    let mut out = Vec::new();
    bolt::encode_request(
        &mut out,
        &RequestSpec {
            version: Version::V1,
            oneway: false,
            cmd_code: bolt::CMD_HEARTBEAT,
            cmd_version: bolt::CMD_VERSION,
            request_id: id,
            codec: bolt::CODEC_HESSIAN2,
            timeout_ms: -1,
            class: b"",
            header: &[],
            content: b"",
        },
    )
    .unwrap();
    out
}

/// `x-forwarded-proto` tells the truth by default (`forwarded_proto: overwrite`): a cleartext
/// client's `https` claim reaches the upstream as `http`, and a TLS request says `https`
/// whatever the client wrote. With `preserve` (a listener behind a trusted TLS-terminating
/// proxy) the client's own value passes, and one is set from the connection when it sent none.
#[test]
fn forwarded_proto_is_the_connections_unless_the_listener_preserves_it() {
    if !require_peers(&["curl", "nginx"]) {
        return;
    }
    let dir = TempDir::new("tls-l7-xfp");
    let ca = make_ca(&dir, "ca");
    let (cert, key) = leaf(&dir, &ca, "web", &["web.example"], None);
    let up = free_port();
    let _nginx = start_nginx_with(
        &dir,
        "up",
        up,
        r#"location / { return 200 "proto=$http_x_forwarded_proto"; }"#,
    );
    let (clear, clear_preserve, tls_preserve) = (free_port(), free_port(), free_port());
    let config = format!(
        r#"
listeners:
  - name: clear
    address: 127.0.0.1:{clear}
    http: {{ {routes} }}
  - name: clear_preserve
    address: 127.0.0.1:{clear_preserve}
    http: {{ forwarded_proto: preserve, {routes} }}
  - name: tls_preserve
    address: 127.0.0.1:{tls_preserve}
    tls: {{ certificates: [ {{ cert_chain: {c}, private_key: {k} }} ] }}
    http: {{ forwarded_proto: preserve, {routes} }}
clusters:
  - {{ name: app, hosts: [ {{ address: 127.0.0.1:{up} }} ] }}
"#,
        c = p(&cert),
        k = p(&key),
        routes = routes_to("app"),
    );
    let _sluice = start_sluice(&dir, &config, 1, addr(clear));
    let cleartext = |port: u16, header: Option<&str>| {
        let url = format!("http://127.0.0.1:{port}/");
        let mut args = vec!["-sS", "--max-time", "10"];
        if let Some(h) = header {
            args.extend(["-H", h]);
        }
        args.push(&url);
        String::from_utf8_lossy(&run("curl", &args).stdout).into_owned()
    };
    assert_eq!(
        cleartext(clear, Some("x-forwarded-proto: https")),
        "proto=http"
    );
    assert_eq!(cleartext(clear, None), "proto=http");
    assert_eq!(
        cleartext(clear_preserve, Some("x-forwarded-proto: https")),
        "proto=https"
    );
    assert_eq!(cleartext(clear_preserve, None), "proto=http");
    let served = |args: &[&str]| curl_https(tls_preserve, &ca.pem, "web.example", "/", args).2;
    assert_eq!(served(&["-H", "x-forwarded-proto: http"]), "proto=http");
    assert_eq!(served(&[]), "proto=https");
}

/// `x-forwarded-client-cert` over mTLS (curl `--cert`), checked by what the upstream (nginx)
/// received: istiod's `append_forward` with subject, URI and DNS appends this hop's element —
/// `By` the listener's own URI SAN, `Hash` the SHA-256 of the client certificate — after the
/// client's own header (over HTTP/2 and HTTP/1.1 alike); `sanitize_set` replaces the client's;
/// the default (`sanitize`) removes it.
#[test]
fn xfcc_carries_the_client_certificate_over_mtls() {
    if !require_peers(&["curl", "nginx"]) {
        return;
    }
    let dir = TempDir::new("tls-l7-xfcc");
    let ca = make_ca(&dir, "ca");
    let app_id = "spiffe://cluster.local/ns/default/sa/app";
    let client_id = "spiffe://cluster.local/ns/default/sa/client";
    let (cert, key) = leaf(&dir, &ca, "app", &["app.example"], Some(app_id));
    let (client_cert, client_key) = leaf(&dir, &ca, "client", &["client.example"], Some(client_id));
    let der = sluice_core::tls::pem::parse_chain(&std::fs::read(&client_cert).unwrap()).unwrap();
    let hash: String = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, der[0].as_ref())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let up = free_port();
    let _nginx = start_nginx_with(
        &dir,
        "up",
        up,
        r#"location / { return 200 "xfcc=$http_x_forwarded_client_cert"; }"#,
    );
    let (append, set, default) = (free_port(), free_port(), free_port());
    let tls = format!(
        "{{ certificates: [ {{ cert_chain: {c}, private_key: {k} }} ], client_ca: {ca} }}",
        c = p(&cert),
        k = p(&key),
        ca = p(&ca.pem),
    );
    let details = "set_current_client_cert_details: { subject: true, uri: true, dns: true }";
    let config = format!(
        r#"
listeners:
  - name: append
    address: 127.0.0.1:{append}
    tls: {tls}
    http: {{ forward_client_cert: append_forward, {details}, {routes} }}
  - name: set
    address: 127.0.0.1:{set}
    tls: {tls}
    http: {{ forward_client_cert: sanitize_set, {details}, {routes} }}
  - name: default
    address: 127.0.0.1:{default}
    tls: {tls}
    http: {{ {routes} }}
clusters:
  - {{ name: app, hosts: [ {{ address: 127.0.0.1:{up} }} ] }}
"#,
        routes = routes_to("app"),
    );
    let _sluice = start_sluice(&dir, &config, 1, addr(append));
    let mine =
        format!("By={app_id};Hash={hash};Subject=\"CN=client\";URI={client_id};DNS=client.example");
    let served = |port: u16, extra: &[&str]| {
        let mut args = vec!["--cert", p(&client_cert), "--key", p(&client_key)];
        args.extend_from_slice(extra);
        let (version, status, body) = curl_https(port, &ca.pem, "app.example", "/", &args);
        assert_eq!(status, 200, "{body}");
        (version, body)
    };
    let theirs = "x-forwarded-client-cert: By=spiffe://evil;Hash=00";
    for version in ["--http2", "--http1.1"] {
        let (v, body) = served(append, &[version, "-H", theirs]);
        assert_eq!(v, if version == "--http2" { "2" } else { "1.1" });
        assert_eq!(
            body,
            format!("xfcc=By=spiffe://evil;Hash=00,{mine}"),
            "{version}"
        );
        // Every field the client sent, joined with `,` (as Envoy joins repeated fields).
        let more = "x-forwarded-client-cert: By=spiffe://evil2;Hash=11";
        assert_eq!(
            served(append, &[version, "-H", theirs, "-H", more]).1,
            format!("xfcc=By=spiffe://evil;Hash=00,By=spiffe://evil2;Hash=11,{mine}"),
            "{version}"
        );
        assert_eq!(
            served(append, &[version]).1,
            format!("xfcc={mine}"),
            "{version}"
        );
        assert_eq!(
            served(set, &[version, "-H", theirs]).1,
            format!("xfcc={mine}"),
            "{version}"
        );
        assert_eq!(
            served(default, &[version, "-H", theirs]).1,
            "xfcc=",
            "{version}"
        );
    }
}

/// `set_current_client_cert_details` `cert` and `chain`: the element carries
/// `Cert="…"` (the client's certificate) and `Chain="…"` (every certificate it sent, its own
/// first), each the PEM OpenSSL writes for it, URL-encoded as Envoy does (every byte but
/// letters, digits, `-`, `.`, `_`, `*` as `%XX`), after `Hash` and before `Subject` — checked
/// against `openssl x509`'s own PEM of each certificate, over HTTP/1.1 and HTTP/2.
#[test]
fn xfcc_cert_and_chain_are_the_clients_url_encoded_pem() {
    if !require_peers(&["curl", "nginx", "openssl"]) {
        return;
    }
    let dir = TempDir::new("tls-l7-xfcc-cert");
    let ca = make_ca(&dir, "ca");
    let (cert, key) = leaf(&dir, &ca, "app", &["app.example"], None);
    let (client_cert, client_key) = leaf(&dir, &ca, "client", &["client.example"], None);
    // The client sends its certificate and the CA's (a chain of two).
    let mut sent = std::fs::read(&client_cert).unwrap();
    sent.extend_from_slice(&std::fs::read(&ca.pem).unwrap());
    let client_chain = dir.write("client-chain.pem", std::str::from_utf8(&sent).unwrap());
    let der = sluice_core::tls::pem::parse_chain(&std::fs::read(&client_cert).unwrap()).unwrap();
    let hash: String = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, der[0].as_ref())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    // OpenSSL's PEM of a certificate file, URL-encoded.
    let encoded = |path: &std::path::Path| -> String {
        let out = run("openssl", &["x509", "-in", p(path)]);
        assert!(out.status.success());
        out.stdout
            .iter()
            .map(|&b| {
                if b.is_ascii_alphanumeric() || b"-._*".contains(&b) {
                    char::from(b).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect()
    };
    let (leaf_pem, ca_pem) = (encoded(&client_cert), encoded(&ca.pem));
    assert!(
        leaf_pem.starts_with("-----BEGIN%20CERTIFICATE-----%0A"),
        "{leaf_pem}"
    );
    let up = free_port();
    let _nginx = start_nginx_with(
        &dir,
        "up",
        up,
        r#"location / { return 200 "xfcc=$http_x_forwarded_client_cert"; }"#,
    );
    let (both, cert_only) = (free_port(), free_port());
    let tls = format!(
        "{{ certificates: [ {{ cert_chain: {c}, private_key: {k} }} ], client_ca: {ca} }}",
        c = p(&cert),
        k = p(&key),
        ca = p(&ca.pem),
    );
    let config = format!(
        r#"
listeners:
  - name: both
    address: 127.0.0.1:{both}
    tls: {tls}
    http: {{ forward_client_cert: sanitize_set, set_current_client_cert_details: {{ cert: true, chain: true, subject: true }}, {routes} }}
  - name: cert_only
    address: 127.0.0.1:{cert_only}
    tls: {tls}
    http: {{ forward_client_cert: sanitize_set, set_current_client_cert_details: {{ cert: true }}, {routes} }}
clusters:
  - {{ name: app, hosts: [ {{ address: 127.0.0.1:{up} }} ] }}
"#,
        routes = routes_to("app"),
    );
    let _sluice = start_sluice(&dir, &config, 1, addr(both));
    let served = |port: u16, version: &str| {
        let args = ["--cert", p(&client_chain), "--key", p(&client_key), version];
        let (_, status, body) = curl_https(port, &ca.pem, "app.example", "/", &args);
        assert_eq!(status, 200, "{body}");
        body
    };
    for version in ["--http1.1", "--http2"] {
        assert_eq!(
            served(both, version),
            format!(
                "xfcc=Hash={hash};Cert=\"{leaf_pem}\";Chain=\"{leaf_pem}{ca_pem}\";Subject=\"CN=client\""
            ),
            "{version}"
        );
        assert_eq!(
            served(cert_only, version),
            format!("xfcc=Hash={hash};Cert=\"{leaf_pem}\""),
            "{version}"
        );
    }
}

/// A TLS upstream that completes its handshake and then never reads: a TLS server in Python
/// that holds every connection open without a `recv`.
const STALLED_TLS_UPSTREAM: &str = r#"
import socket, ssl, sys, threading, time
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(sys.argv[1], sys.argv[2])
l = socket.socket()
l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
l.bind(("127.0.0.1", int(sys.argv[3])))
l.listen(512)
held = []
def hold(c):
    try:
        held.append(ctx.wrap_socket(c, server_side=True))
    except Exception:
        c.close()
while True:
    c, _ = l.accept()
    threading.Thread(target=hold, args=(c,), daemon=True).start()
"#;

/// The proxy's resident memory in KiB.
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// A TLS upstream that stops reading, under load, with the defaults: 64 clients each send a
/// request with a 60 KiB body (kept for a retry, so written whole) to an HTTPS upstream that
/// handshakes and then never reads. Every client gets a bounded answer — the route timeout's
/// 504 (15 s by default) — and the proxy's memory stays bounded (what it holds per request is
/// the request, not a growing queue).
#[test]
fn a_tls_upstream_that_stops_reading_gets_bounded_memory_and_answers() {
    if !require_peers(&["python3"]) {
        return;
    }
    let dir = TempDir::new("tls-l7-stalled-upstream");
    let ca = make_ca(&dir, "ca");
    let (cert, key) = leaf(&dir, &ca, "upstream", &["upstream.example"], None);
    let up = free_port();
    let script = dir.write("stalled.py", STALLED_TLS_UPSTREAM);
    let mut upstream = spawn(
        &dir,
        "stalled",
        "python3",
        &[script.to_str().unwrap(), p(&cert), p(&key), &up.to_string()],
    );
    let end = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(addr(up)).is_err() {
        assert!(Instant::now() < end, "{}", upstream.log_text());
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = upstream.child.try_wait();
    let listen = free_port();
    let config = format!(
        r#"
listeners:
  - name: web
    address: 127.0.0.1:{listen}
    http: {{ {routes} }}
clusters:
  - name: stalled
    hosts: [ {{ address: 127.0.0.1:{up} }} ]
    tls: {{ sni: upstream.example, ca: {ca} }}
"#,
        routes = routes_to("stalled"),
        ca = p(&ca.pem),
    );
    let sluice = start_sluice(&dir, &config, 1, addr(listen));
    let pid = sluice.child.id();
    let before = rss_kib(pid);
    let started = Instant::now();
    let body = vec![b'x'; 60 * 1024];
    let clients: Vec<_> = (0..64)
        .map(|_| {
            let body = body.clone();
            std::thread::spawn(move || {
                let mut s = TcpStream::connect(addr(listen)).unwrap();
                s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
                let head = format!(
                    "POST /upload HTTP/1.1\r\nHost: web\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
                    body.len()
                );
                s.write_all(head.as_bytes()).unwrap();
                s.write_all(&body).unwrap();
                let mut got = Vec::new();
                let _ = s.read_to_end(&mut got);
                String::from_utf8_lossy(&got).into_owned()
            })
        })
        .collect();
    let mut peak = 0;
    while !clients.iter().all(std::thread::JoinHandle::is_finished) {
        peak = peak.max(rss_kib(pid));
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the clients got no answer within a minute"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    for c in clients {
        let answer = c.join().unwrap();
        assert!(
            answer.starts_with("HTTP/1.1 504 "),
            "{answer}\n{}",
            sluice.log_text()
        );
    }
    // 64 requests of 60 KiB are under 4 MiB; a growing queue would be far more.
    assert!(
        peak < before + 32 * 1024,
        "memory grew from {before} KiB to {peak} KiB"
    );
}
