//! End-to-end tests of listener filter chains: one port, several chains picked per connection
//! by the ClientHello's server name and ALPN and by TLS-or-not (Istio's PERMISSIVE inbound),
//! each chain with its own certificate and its own filter; a connection no chain takes is
//! closed and counted; the wait for the first bytes is bounded. Real clients (curl, openssl
//! s_client), nginx upstreams, a test PKI made here (rcgen).

mod support;

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use support::pki::*;
use support::*;

fn route_to(cluster: &str) -> String {
    format!(
        r#"{{ virtual_hosts: [ {{ name: v, domains: ["*"], routes: [ {{ match: {{ prefix: / }}, route: {{ cluster: {cluster} }} }} ] }} ] }}"#
    )
}

/// Chains by server name (each its own certificate: an `http` chain and a `tcp_proxy` one,
/// both terminating TLS), by ALPN (Istio's `istio-peer-exchange`/`istio`), and plaintext on the
/// same port (`transport_protocol: raw_buffer`); a TLS connection no chain takes is closed and
/// counted, and so is one that never sends its first bytes. A second listener keeps its own
/// filter as the default chain.
#[test]
fn chains_are_picked_by_server_name_alpn_and_transport_protocol_on_one_port() {
    if !require_peers(&["openssl", "curl", "nginx"]) {
        return;
    }
    let dir = TempDir::new("chains");
    let ca = make_ca(&dir, "chains-ca");
    let (a_cert, a_key) = leaf(&dir, &ca, "a", &["a.example"], None);
    let (b_cert, b_key) = leaf(&dir, &ca, "b", &["b.example"], None);
    let (m_cert, m_key) = leaf(&dir, &ca, "mesh", &["mesh.example"], None);
    let (up_a, up_b, up_mesh, up_plain, up_default) = (
        free_port(),
        free_port(),
        free_port(),
        free_port(),
        free_port(),
    );
    let _na = start_nginx(&dir, "ua", up_a, "chain a");
    let _nb = start_nginx(&dir, "ub", up_b, "chain b");
    let _nm = start_nginx(&dir, "um", up_mesh, "chain mesh");
    let _np = start_nginx(&dir, "up", up_plain, "chain plaintext");
    let _nd = start_nginx(&dir, "ud", up_default, "default chain");
    let (listen, with_default, admin) = (free_port(), free_port(), free_port());
    let config = format!(
        r#"
admin: {{ address: 127.0.0.1:{admin} }}
listeners:
  - name: inbound
    address: 127.0.0.1:{listen}
    listener_filters_timeout: 1s
    filter_chains:
      - filter_chain_match: {{ server_names: [a.example] }}
        tls: {{ certificates: [ {{ cert_chain: {ac}, private_key: {ak} }} ] }}
        http: {http_a}
      - filter_chain_match: {{ server_names: [b.example] }}
        tls: {{ certificates: [ {{ cert_chain: {bc}, private_key: {bk} }} ] }}
        tcp_proxy: {{ cluster: b }}
      - filter_chain_match:
          transport_protocol: tls
          application_protocols: [istio-peer-exchange, istio]
        tls: {{ certificates: [ {{ cert_chain: {mc}, private_key: {mk} }} ] }}
        tcp_proxy: {{ cluster: mesh }}
      - filter_chain_match: {{ transport_protocol: raw_buffer }}
        http: {http_plain}
  - name: with_default
    address: 127.0.0.1:{with_default}
    filter_chains:
      - filter_chain_match: {{ server_names: [a.example] }}
        tls: {{ certificates: [ {{ cert_chain: {ac}, private_key: {ak} }} ] }}
        tcp_proxy: {{ cluster: a }}
    http: {http_default}
clusters:
  - {{ name: a, hosts: [ {{ address: 127.0.0.1:{up_a} }} ] }}
  - {{ name: b, hosts: [ {{ address: 127.0.0.1:{up_b} }} ] }}
  - {{ name: mesh, hosts: [ {{ address: 127.0.0.1:{up_mesh} }} ] }}
  - {{ name: plain, hosts: [ {{ address: 127.0.0.1:{up_plain} }} ] }}
  - {{ name: dflt, hosts: [ {{ address: 127.0.0.1:{up_default} }} ] }}
"#,
        ac = p(&a_cert),
        ak = p(&a_key),
        bc = p(&b_cert),
        bk = p(&b_key),
        mc = p(&m_cert),
        mk = p(&m_key),
        http_a = route_to("a"),
        http_plain = route_to("plain"),
        http_default = route_to("dflt"),
    );
    let _s = start_sluice(&dir, &config, 1, addr(listen));
    let https = |port: u16, name: &str| {
        let resolve = format!("{name}:{port}:127.0.0.1");
        let url = format!("https://{name}:{port}/");
        let out = run(
            "curl",
            &["-s", "--cacert", p(&ca.pem), "--resolve", &resolve, &url],
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };

    // By server name, each chain with its own certificate (curl verifies it against the name)
    // and its own filter: HTTP routing, and a tcp_proxy over the terminated TLS.
    assert_eq!(https(listen, "a.example"), "chain a");
    assert_eq!(https(listen, "b.example"), "chain b");
    for (name, cn) in [("a.example", "a"), ("b.example", "b")] {
        let (ok, text) = s_client(listen, &["-brief", "-servername", name]);
        assert!(ok, "{name}: {text}");
        assert_eq!(peer_cn(&text), cn, "{name}");
    }
    // Plaintext on the same port: the raw_buffer chain.
    let (status, body) = http_request(addr(listen), "GET", "/");
    assert_eq!((status, body.as_str()), (200, "chain plaintext"));
    // By ALPN: a TLS client offering `istio` (Istio's mTLS between sidecars), whatever its
    // server name, gets the mesh chain's certificate and cluster.
    let (ok, text) = s_client_request(
        listen,
        &["-servername", "svc.ns.svc.cluster.local", "-alpn", "istio"],
    );
    assert!(ok, "{text}");
    assert!(
        text.contains("CN = mesh") || text.contains("CN=mesh"),
        "{text}"
    );
    assert!(text.contains("chain mesh"), "{text}");
    // The server name comes first: `a.example` offering `istio` (and `h2`, which chain a's
    // HTTP speaks) is still chain a's.
    let (ok, text) = s_client(
        listen,
        &["-brief", "-servername", "a.example", "-alpn", "istio,h2"],
    );
    assert!(ok, "{text}");
    assert_eq!(peer_cn(&text), "a");
    // TLS that no chain takes (another name, no istio ALPN): closed, counted, no listener
    // default to fall back to.
    assert_eq!(
        stat(
            admin,
            "listener.inbound.downstream_cx_no_filter_chain_match"
        ),
        0
    );
    let (ok, text) = s_client(
        listen,
        &["-brief", "-servername", "c.example", "-alpn", "h2"],
    );
    assert!(!ok, "{text}");
    assert_eq!(
        stat(
            admin,
            "listener.inbound.downstream_cx_no_filter_chain_match"
        ),
        1
    );
    // A client that sends nothing is closed after listener_filters_timeout (1s), counted.
    let t0 = Instant::now();
    let mut silent = TcpStream::connect(addr(listen)).unwrap();
    silent
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut buf = [0u8; 16];
    assert_eq!(
        silent.read(&mut buf).unwrap_or(0),
        0,
        "closed without a byte"
    );
    let waited = t0.elapsed();
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(5),
        "{waited:?}"
    );
    assert_eq!(
        stat(admin, "listener.inbound.downstream_listener_filter_timeout"),
        1
    );

    // The listener's own filter is its default chain: plaintext and other names go there.
    let (status, body) = http_request(addr(with_default), "GET", "/");
    assert_eq!((status, body.as_str()), (200, "default chain"));
    assert_eq!(https(with_default, "a.example"), "chain a");
    assert_eq!(
        stat(
            admin,
            "listener.with_default.downstream_cx_no_filter_chain_match"
        ),
        0
    );

    // Per listener, not per chain: every connection counted once on `inbound`.
    // 2 curl, 2 s_client by name, 1 plaintext, 1 istio, 1 a+istio, 1 unmatched, 1 silent,
    // and the readiness probe of start_sluice.
    assert_eq!(stat(admin, "listener.inbound.downstream_cx_total"), 10);
}

/// `continue_on_listener_filters_timeout: true` (what Istio sets on its inbound listener):
/// a client that waits for the server before it speaks is served as plaintext once the wait
/// for a ClientHello passes, not closed.
#[test]
fn a_silent_client_is_served_as_plaintext_when_the_listener_continues_on_timeout() {
    if !require_peers(&["nginx"]) {
        return;
    }
    let dir = TempDir::new("chains-continue");
    let up = free_port();
    let _n = start_nginx(&dir, "up", up, "served late");
    let (listen, admin) = (free_port(), free_port());
    let config = format!(
        r#"
admin: {{ address: 127.0.0.1:{admin} }}
listeners:
  - name: inbound
    address: 127.0.0.1:{listen}
    listener_filters_timeout: 300ms
    continue_on_listener_filters_timeout: true
    filter_chains:
      - filter_chain_match: {{ transport_protocol: raw_buffer }}
        tcp_proxy: {{ cluster: up }}
clusters:
  - {{ name: up, hosts: [ {{ address: 127.0.0.1:{up} }} ] }}
"#
    );
    let _s = start_sluice(&dir, &config, 1, addr(listen));
    let mut s = TcpStream::connect(addr(listen)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    std::thread::sleep(Duration::from_millis(800));
    s.write_all(b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .unwrap();
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.ends_with("served late"), "{text}");
    assert_eq!(
        stat(admin, "listener.inbound.downstream_listener_filter_timeout"),
        1
    );
    assert_eq!(
        stat(
            admin,
            "listener.inbound.downstream_cx_no_filter_chain_match"
        ),
        0
    );
}

/// A reload that changes a chain (its cluster) applies to new connections, on the same port;
/// one with a chain that cannot load (its certificate file is missing) is refused, naming the
/// chain, and the chains in service stay.
#[test]
fn a_reload_changes_a_chain_and_a_bad_chain_is_refused_at_its_path() {
    if !require_peers(&["curl", "nginx"]) {
        return;
    }
    let dir = TempDir::new("chains-reload");
    let ca = make_ca(&dir, "reload-ca");
    let (a_cert, a_key) = leaf(&dir, &ca, "a", &["a.example"], None);
    let (one, two) = (free_port(), free_port());
    let _n1 = start_nginx(&dir, "one", one, "before");
    let _n2 = start_nginx(&dir, "two", two, "after");
    let listen = free_port();
    let config = |cluster: &str, cert: &str| {
        format!(
            r#"
listeners:
  - name: inbound
    address: 127.0.0.1:{listen}
    filter_chains:
      - filter_chain_match: {{ server_names: [a.example] }}
        tls: {{ certificates: [ {{ cert_chain: {cert}, private_key: {ak} }} ] }}
        http: {http}
      - filter_chain_match: {{ transport_protocol: raw_buffer }}
        http: {http}
clusters:
  - {{ name: one, hosts: [ {{ address: 127.0.0.1:{one} }} ] }}
  - {{ name: two, hosts: [ {{ address: 127.0.0.1:{two} }} ] }}
"#,
            ak = p(&a_key),
            http = route_to(cluster),
        )
    };
    let sluice = start_sluice(&dir, &config("one", p(&a_cert)), 1, addr(listen));
    let https = || {
        let resolve = format!("a.example:{listen}:127.0.0.1");
        let url = format!("https://a.example:{listen}/");
        let out = run(
            "curl",
            &["-s", "--cacert", p(&ca.pem), "--resolve", &resolve, &url],
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_eq!(https(), "before");
    assert_eq!(http_request(addr(listen), "GET", "/").1, "before");

    dir.write("sluice.yaml", &config("two", p(&a_cert)));
    sluice.signal("HUP");
    assert!(
        eventually(Duration::from_secs(10), || https() == "after"),
        "the reload did not change the chain:\n{}",
        sluice.log_text()
    );
    assert_eq!(http_request(addr(listen), "GET", "/").1, "after");

    dir.write("sluice.yaml", &config("one", "/nonexistent/a.pem"));
    sluice.signal("HUP");
    assert!(
        eventually(Duration::from_secs(10), || sluice.log_text().contains(
            "listeners[0].filter_chains[0].tls.certificates[0].cert_chain"
        )),
        "the bad chain was not reported at its path:\n{}",
        sluice.log_text()
    );
    assert_eq!(https(), "after", "the chains in service stay");
}

/// Istio's two kinds of mesh TLS chains on one port, by ALPN: TCP (`istio-peer-exchange`,
/// `istio`) and HTTP (`istio-http/1.0`, `istio-http/1.1`, `istio-h2`). A client offering both
/// kinds gets the chain of the protocol it lists first (Envoy walks the client's list), with
/// the chains in either order in the config: the certificate says which chain answered.
#[test]
fn an_alpn_offered_first_picks_its_chain_whatever_the_chains_order() {
    if !require_peers(&["openssl"]) {
        return;
    }
    let dir = TempDir::new("chains-alpn");
    let ca = make_ca(&dir, "alpn-ca");
    let (t_cert, t_key) = leaf(&dir, &ca, "tcp", &["tcp.example"], None);
    let (h_cert, h_key) = leaf(&dir, &ca, "http", &["http.example"], None);
    let (tcp_first, http_first) = (free_port(), free_port());
    let tcp_chain = format!(
        r#"      - filter_chain_match:
          transport_protocol: tls
          application_protocols: [istio-peer-exchange, istio]
        tls: {{ certificates: [ {{ cert_chain: {tc}, private_key: {tk} }} ] }}
        tcp_proxy: {{ cluster: up }}
"#,
        tc = p(&t_cert),
        tk = p(&t_key)
    );
    let http_chain = format!(
        r#"      - filter_chain_match:
          transport_protocol: tls
          application_protocols: [istio-http/1.0, istio-http/1.1, istio-h2]
        tls: {{ certificates: [ {{ cert_chain: {hc}, private_key: {hk} }} ] }}
        tcp_proxy: {{ cluster: up }}
"#,
        hc = p(&h_cert),
        hk = p(&h_key)
    );
    let config = format!(
        r#"
listeners:
  - name: tcp_first
    address: 127.0.0.1:{tcp_first}
    filter_chains:
{tcp_chain}{http_chain}  - name: http_first
    address: 127.0.0.1:{http_first}
    filter_chains:
{http_chain}{tcp_chain}clusters:
  - {{ name: up, hosts: [ {{ address: 127.0.0.1:9 }} ] }}
"#
    );
    let _s = start_sluice(&dir, &config, 1, addr(tcp_first));
    for port in [tcp_first, http_first] {
        for (alpn, cn) in [
            ("istio-http/1.1,istio", "http"),
            ("istio,istio-http/1.1", "tcp"),
            ("h2,istio-h2,istio-peer-exchange", "http"),
        ] {
            let (ok, text) = s_client(port, &["-brief", "-servername", "svc", "-alpn", alpn]);
            assert!(ok, "{port} {alpn}: {text}");
            assert_eq!(peer_cn(&text), cn, "port {port}, client offers {alpn}");
        }
    }
}

/// Istio's passthrough chains, sniffed: on one plaintext port, HTTP/1.1 (curl) and h2c (curl
/// `--http2-prior-knowledge`) go to the `http` chain that lists `[http/1.1, h2c]`, other bytes
/// to the `tcp_proxy` chain; where `http_inspector` does not run (`except_ports`), HTTP is just
/// bytes for the TCP chain. With `listener_filters_timeout: 0s` (Istio's default) a client
/// that is silent for longer than a bounded wait is still served.
#[test]
fn plaintext_http_and_h2c_are_sniffed_into_their_chain() {
    if !require_peers(&["curl", "nginx"]) {
        return;
    }
    let dir = TempDir::new("sniff");
    let up = free_port();
    let _n = start_nginx(&dir, "up", up, "http chain");
    let (listen, unsniffed, echo, admin) = (free_port(), free_port(), free_port(), free_port());
    let chains = format!(
        r#"
    filter_chains:
      - filter_chain_match: {{ transport_protocol: raw_buffer, application_protocols: [http/1.1, h2c] }}
        http: {http}
      - filter_chain_match: {{ transport_protocol: raw_buffer }}
        tcp_proxy: {{ cluster: echo }}"#,
        // A short head timeout: it runs from the chain's pick, not from the accept.
        http = route_to("app").replacen("{ ", "{ request_headers_timeout: 1s, ", 1),
    );
    let config = format!(
        r#"
admin: {{ address: 127.0.0.1:{admin} }}
listeners:
  - name: inbound
    address: 127.0.0.1:{listen}
    listener_filters_timeout: 0s
    {chains}
  - name: unsniffed
    address: 127.0.0.1:{unsniffed}
    http_inspector: {{ except_ports: [{unsniffed}] }}
    {chains}
  - name: echo
    address: 127.0.0.1:{echo}
    echo: {{}}
clusters:
  - {{ name: app, hosts: [ {{ address: 127.0.0.1:{up} }} ] }}
  - {{ name: echo, hosts: [ {{ address: 127.0.0.1:{echo} }} ] }}
"#
    );
    let _s = start_sluice(&dir, &config, 1, addr(echo));
    let curl = |port: u16, extra: &[&str]| {
        let url = format!("http://127.0.0.1:{port}/");
        let mut args = vec!["-s", "-w", "|%{http_version}|%{http_code}"];
        args.extend_from_slice(extra);
        args.push(&url);
        String::from_utf8_lossy(&run("curl", &args).stdout).into_owned()
    };
    // HTTP/1.1 and h2c: the HTTP chain (h2c answered over HTTP/2 by its `codec: auto`).
    assert_eq!(curl(listen, &["--http1.1"]), "http chain|1.1|200");
    assert_eq!(
        curl(listen, &["--http2-prior-knowledge"]),
        "http chain|2|200"
    );
    // Other plaintext: the TCP chain (the echo listener sends it back).
    assert_eq!(
        echo_once(addr(listen), b"\x00\x01binary, not HTTP\n").unwrap(),
        b"\x00\x01binary, not HTTP\n"
    );
    // A few bytes that are clearly not HTTP, the client waiting for an answer: decided at
    // once (no wait for more bytes, no timeout with 0s), relayed by the TCP chain.
    let mut short = TcpStream::connect(addr(listen)).unwrap();
    short
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    short.write_all(b"\x00\x01\x02").unwrap();
    let mut back = [0u8; 3];
    short
        .read_exact(&mut back)
        .expect("echoed without more bytes");
    assert_eq!(&back, b"\x00\x01\x02");
    // A request line that has not ended within 8 KiB: closed, as Envoy does, counted.
    let mut long = TcpStream::connect(addr(listen)).unwrap();
    long.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut line = b"GET /".to_vec();
    line.resize(9000, b'a');
    long.write_all(&line).unwrap();
    let mut rest = Vec::new();
    assert_eq!(
        long.read_to_end(&mut rest).map(|_| rest.len()).unwrap_or(0),
        0
    );
    assert_eq!(
        stat(
            admin,
            "listener.inbound.downstream_listener_filter_refused.too_large"
        ),
        1
    );
    // No sniff on the port `http_inspector` skips: an HTTP request is echoed as bytes.
    let request = b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    assert_eq!(echo_once(addr(unsniffed), request).unwrap(), request);
    // No limit on the wait for first bytes: a client silent for 1.5 s is still served
    // (with a 1 s limit it is closed: the first test), though its chain's
    // `request_headers_timeout` is 1 s: that counts from the pick (its first bytes), not from
    // the accept.
    let mut late = TcpStream::connect(addr(listen)).unwrap();
    late.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    late.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut reply = String::new();
    late.read_to_string(&mut reply).unwrap();
    assert!(
        reply.starts_with("HTTP/1.1 200") && reply.ends_with("http chain"),
        "{reply}"
    );
    assert_eq!(
        stat(admin, "listener.inbound.downstream_listener_filter_timeout"),
        0
    );
}
