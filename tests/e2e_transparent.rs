//! End-to-end tests of transparent capture in network namespaces: an application namespace
//! (Sluice and its "pod", with the application's own server) and a server namespace, joined by
//! a veth pair. Sluice runs in the application namespace with the capture rules `sluice
//! iptables` prints for its config (so the printed rules are what is tested). The application's
//! connections to the server's real address (outbound), and the server's to the application's
//! server (inbound), must go through Sluice (its counters and access log say so) and reach
//! their peer exactly once each: the proxy's own upstream connections, marked with
//! `upstream_mark`, are not captured again (no loop, no connection storm). Each of REDIRECT and
//! TPROXY runs over IPv4 and over IPv6 (`[::]` listeners, `ip6tables`). The namespaces have
//! their own ports, so the fixed ports here cannot clash with another test.
//!
//! Needs root (namespaces, iptables), `ip`, `iptables`, `python3` and `curl`; skipped with a
//! line saying why otherwise (a failure under `tests/run.sh`, which installs them). Every
//! namespace is removed at the end, also on failure (a drop guard); the veth pair and the rules
//! live inside the namespaces and go with them.

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use support::netns::{self, Netns, in_ns, ip, spawn_in, wait_listening_in};
use support::pki::stat as pki_stat;
use support::*;

/// The addresses of one test: the application's and the server's, on the veth pair.
struct Family {
    app: &'static str,
    server: &'static str,
    prefix: u8,
    /// The wildcard address the listeners bind (`[::]` takes IPv4 too).
    any: &'static str,
}

const IPV4: Family = Family {
    app: "10.77.0.1",
    server: "10.77.0.2",
    prefix: 24,
    any: "0.0.0.0",
};

const IPV6: Family = Family {
    app: "fd00:77::1",
    server: "fd00:77::2",
    prefix: 64,
    any: "[::]",
};

/// `ip:port` as a socket address is written (`[v6]:port`).
fn sock(ip: &str, port: u16) -> String {
    std::net::SocketAddr::new(ip.parse().unwrap(), port).to_string()
}
const HTTP_PORT: u16 = 8080;
const ECHO_PORT: u16 = 9000;
const ADMIN: &str = "127.0.0.1:15000";
/// The application's own server in its namespace (inbound traffic goes to it).
const LOCAL_APP_PORT: u16 = 7070;

/// Whether this machine can run the tests; says why not when it cannot.
fn can_run() -> bool {
    netns::can_run("e2e_transparent", &["ip", "iptables", "python3", "curl"])
}

const ECHO_SERVER: &str = r#"
import socket, sys, threading
l = socket.socket(socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET)
l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
l.bind((sys.argv[1], int(sys.argv[2])))
l.listen(64)
def serve(c):
    while True:
        d = c.recv(65536)
        if not d:
            break
        c.sendall(d)
    c.close()
while True:
    c, peer = l.accept()
    print("connection from", peer[0], flush=True)
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"#;

const ECHO_CLIENT: &str = r#"
import socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), 5)
s.settimeout(5)
s.sendall(sys.argv[3].encode())
s.shutdown(socket.SHUT_WR)
got = b""
while True:
    d = s.recv(65536)
    if not d:
        break
    got += d
sys.stdout.write(got.decode())
"#;

fn config(original_dst: &str, access_log: &str, f: &Family) -> String {
    let any = f.any;
    let web = sock(f.server, HTTP_PORT);
    format!(
        "admin: {{ address: {ADMIN} }}
upstream_mark: 1337
listeners:
  - name: outbound
    address: \"{any}:15001\"
    original_dst: {original_dst}
    use_original_dst: true
    tcp_proxy: {{ cluster: passthrough }}
  - name: inbound
    address: \"{any}:15006\"
    original_dst: {original_dst}
    tcp_proxy: {{ cluster: passthrough }}
  - name: http_{HTTP_PORT}
    address: \"{any}:{HTTP_PORT}\"
    http:
      access_log: {{ format: text, template: \"%LISTENER% %METHOD% %PATH% %STATUS% %ORIGINAL_DST%\", path: {access_log} }}
      virtual_hosts:
        - name: all
          domains: [\"*\"]
          routes: [ {{ match: {{ prefix: / }}, route: {{ cluster: web }} }} ]
clusters:
  - {{ name: passthrough, type: original_dst, connect_timeout: 2s }}
  - {{ name: web, hosts: [ {{ address: \"{web}\" }} ] }}
"
    )
}

/// `/stats` of the Sluice in `app`, as `name value` pairs.
fn stats(app: &Netns) -> Vec<(String, u64)> {
    let out = in_ns(
        app,
        "curl",
        &["-sS", "--max-time", "5", &format!("http://{ADMIN}/stats")],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(": ")?;
            Some((k.to_owned(), v.trim().parse().ok()?))
        })
        .collect()
}

fn stat(all: &[(String, u64)], name: &str) -> u64 {
    all.iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| *v)
        .unwrap_or_else(|| panic!("no {name} in /stats: {all:?}"))
}

/// An application namespace and a server namespace for the test `tag`, joined by a veth pair
/// (`veth0` in the application's, `veth1` in the server's) with `f`'s addresses, links and
/// loopback up. Every namespace and veth goes when the `Netns` are dropped.
fn namespaces(tag: &str, f: &Family) -> (Netns, Netns) {
    let pid = std::process::id();
    let app = Netns::new(format!("sluice-{pid}-{tag}-app"));
    let server = Netns::new(format!("sluice-{pid}-{tag}-srv"));
    ip(&[
        "-n", &app.0, "link", "add", "veth0", "type", "veth", "peer", "name", "veth1", "netns",
        &server.0,
    ]);
    // No duplicate address detection: an IPv6 address is usable at once.
    let nodad: &[&str] = if f.prefix == 64 { &["nodad"] } else { &[] };
    for (ns, ip_address, dev) in [(&app, f.app, "veth0"), (&server, f.server, "veth1")] {
        let cidr = format!("{ip_address}/{}", f.prefix);
        let mut args = vec!["-n", &ns.0, "addr", "add", &cidr, "dev", dev];
        args.extend_from_slice(nodad);
        ip(&args);
        ip(&["-n", &ns.0, "link", "set", dev, "up"]);
        ip(&["-n", &ns.0, "link", "set", "lo", "up"]);
    }
    (app, server)
}

/// Starts Sluice in `app` on the config at `config_path` (its admin on 127.0.0.1:15000), then
/// applies there the capture rules `sluice iptables` prints for that config.
fn start_capturing(dir: &TempDir, app: &Netns, config_path: &str) -> Proc {
    let mut sluice = spawn_in(
        dir,
        app,
        "sluice",
        sluice_bin(),
        &["run", "-c", config_path, "--workers", "1"],
    );
    wait_listening_in(app, "127.0.0.1", 15000, &mut sluice);
    let printed = Command::new(sluice_bin())
        .args(["iptables", "-c", config_path])
        .output()
        .unwrap();
    assert!(
        printed.status.success(),
        "{}",
        String::from_utf8_lossy(&printed.stderr)
    );
    let rules = String::from_utf8(printed.stdout).unwrap();
    let applied = in_ns(app, "sh", &["-c", &rules]);
    assert!(
        applied.status.success(),
        "the printed rules did not apply:\n{rules}\n{}",
        String::from_utf8_lossy(&applied.stderr)
    );
    sluice
}

/// Outbound TCP and HTTP from the application namespace to the server's real address, and
/// inbound HTTP from the server namespace to the application's own server, captured by the
/// rules `sluice iptables` prints for listeners with `original_dst: MODE`.
fn capture(mode: &str, tag: &str, f: &Family) {
    if !can_run() {
        return;
    }
    let (app_ip, server_ip) = (f.app, f.server);
    let dir = TempDir::new(&format!("transparent-{tag}"));
    // Declared before any process in them: dropped last, after every process is gone.
    let (app, server) = namespaces(tag, f);

    // The server: an echo on ECHO_PORT, an HTTP file server on HTTP_PORT.
    let files = dir.path().join("www");
    std::fs::create_dir_all(&files).unwrap();
    std::fs::write(files.join("hello.txt"), "hello from the server namespace\n").unwrap();
    let echo_script = dir.write("echo.py", ECHO_SERVER);
    let mut echo = spawn_in(
        &dir,
        &server,
        "echo",
        "python3",
        &[
            "-u",
            echo_script.to_str().unwrap(),
            server_ip,
            &ECHO_PORT.to_string(),
        ],
    );
    let mut http = spawn_in(
        &dir,
        &server,
        "http",
        "python3",
        &[
            "-u",
            "-m",
            "http.server",
            &HTTP_PORT.to_string(),
            "--bind",
            server_ip,
            "--directory",
            files.to_str().unwrap(),
        ],
    );
    wait_listening_in(&server, server_ip, ECHO_PORT, &mut echo);
    wait_listening_in(&server, server_ip, HTTP_PORT, &mut http);
    // The application's own server, in its namespace.
    let mut local_app = spawn_in(
        &dir,
        &app,
        "local_app",
        "python3",
        &[
            "-u",
            "-m",
            "http.server",
            &LOCAL_APP_PORT.to_string(),
            "--bind",
            app_ip,
            "--directory",
            files.to_str().unwrap(),
        ],
    );
    wait_listening_in(&app, app_ip, LOCAL_APP_PORT, &mut local_app);
    // Probing connected once to each: what the servers count from here on is the test's.
    let probes_echo = echo.log_text().lines().count();

    // Sluice in the application namespace.
    let access_log = dir.path().join("access.log");
    let config_path = dir.write(
        "sluice.yaml",
        &config(mode, access_log.to_str().unwrap(), f),
    );
    let config_path = config_path.to_str().unwrap();
    let mut sluice = start_capturing(&dir, &app, config_path);

    // TCP to the server's real address: no listener for the echo's port, so the capture
    // listener's own chain passes it through to the original destination.
    let client = in_ns(
        &app,
        "python3",
        &[
            "-c",
            ECHO_CLIENT,
            server_ip,
            &ECHO_PORT.to_string(),
            "through sluice",
        ],
    );
    assert!(
        client.status.success(),
        "{}",
        String::from_utf8_lossy(&client.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&client.stdout), "through sluice");

    // HTTP to the server's real address: handed off by the original destination to the
    // http_8080 listener, which routes it to the `web` cluster (the server).
    let url = format!("http://{}/hello.txt", sock(server_ip, HTTP_PORT));
    let got = in_ns(
        &app,
        "curl",
        &["-sS", "--max-time", "10", "-w", "\n%{http_code}", &url],
    );
    assert!(
        got.status.success(),
        "{}",
        String::from_utf8_lossy(&got.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&got.stdout),
        "hello from the server namespace\n\n200"
    );

    // Inbound HTTP from the server namespace to the application's own server: captured by the
    // inbound listener, passed through to its original destination.
    let url = format!("http://{}/hello.txt", sock(app_ip, LOCAL_APP_PORT));
    let got = in_ns(
        &server,
        "curl",
        &["-sS", "--max-time", "10", "-w", "\n%{http_code}", &url],
    );
    assert!(
        got.status.success(),
        "{}",
        String::from_utf8_lossy(&got.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&got.stdout),
        "hello from the server namespace\n\n200"
    );

    // Through Sluice, once each: the proxy's own upstream connections were not captured again.
    let s = stats(&app);
    let log = sluice.log_text();
    assert_eq!(stat(&s, "listener.outbound.capture.handed_off"), 1, "{log}");
    assert_eq!(stat(&s, "listener.outbound.capture.own_chain"), 1, "{log}");
    assert_eq!(
        stat(&s, "listener.outbound.capture.no_original_dst"),
        0,
        "{log}"
    );
    assert_eq!(
        stat(&s, "listener.outbound.downstream_cx_total"),
        1,
        "{log}"
    );
    assert_eq!(
        stat(
            &s,
            &format!("listener.http_{HTTP_PORT}.downstream_cx_total")
        ),
        1
    );
    assert_eq!(stat(&s, "listener.inbound.capture.own_chain"), 1, "{log}");
    assert_eq!(
        stat(&s, "listener.inbound.capture.no_original_dst"),
        0,
        "{log}"
    );
    assert_eq!(stat(&s, "listener.inbound.downstream_cx_total"), 1, "{log}");
    // The outbound echo and the inbound request.
    assert_eq!(stat(&s, "cluster.passthrough.upstream_cx_total"), 2);
    assert_eq!(stat(&s, "cluster.web.upstream_cx_total"), 1);
    // The access log names the original destination (flushed at exit).
    sluice.signal("TERM");
    assert!(
        sluice.wait_exit(Duration::from_secs(20)).is_some(),
        "{}",
        sluice.log_text()
    );
    let lines = std::fs::read_to_string(&access_log).unwrap_or_default();
    assert_eq!(
        lines,
        format!(
            "http_{HTTP_PORT} GET /hello.txt 200 {}\n",
            sock(server_ip, HTTP_PORT)
        ),
        "{}",
        sluice.log_text()
    );
    // And the servers saw exactly those connections, from the application's address.
    let echo_log = echo.log_text();
    let seen: Vec<&str> = echo_log.lines().skip(probes_echo).collect();
    assert_eq!(seen, [format!("connection from {app_ip}")], "{echo_log}");
    let http_log = http.log_text();
    let requests: Vec<&str> = http_log
        .lines()
        .filter(|l| l.contains("GET /hello.txt"))
        .collect();
    assert_eq!(requests.len(), 1, "{http_log}");
    assert!(requests[0].starts_with(app_ip), "{http_log}");
    // The application's server got the inbound request once, from the proxy (the source
    // address is not kept yet).
    let local_log = local_app.log_text();
    let requests: Vec<&str> = local_log
        .lines()
        .filter(|l| l.contains("GET /hello.txt"))
        .collect();
    assert_eq!(requests.len(), 1, "{local_log}");
    assert!(requests[0].starts_with(app_ip), "{local_log}");
}

#[test]
fn redirect_capture_reaches_the_real_peers_once() {
    capture("redirect", "r", &IPV4);
}

#[test]
fn redirect_capture_over_ipv6_reaches_the_real_peers_once() {
    capture("redirect", "r6", &IPV6);
}

#[test]
fn tproxy_capture_reaches_the_real_peers_once() {
    capture("tproxy", "t", &IPV4);
}

#[test]
fn tproxy_capture_over_ipv6_reaches_the_real_peers_once() {
    capture("tproxy", "t6", &IPV6);
}

/// Marking sockets needs `CAP_NET_ADMIN`: without it, `upstream_mark` stops the start with a
/// message naming the setting (rather than failing every upstream connection later).
#[test]
fn upstream_mark_without_cap_net_admin_stops_the_start_naming_it() {
    if !require_peers(&["setpriv", "timeout"]) || !running_as_root() {
        return;
    }
    let dir = TempDir::new("transparent-mark");
    let port = free_port();
    let path = dir.write(
        "sluice.yaml",
        &format!(
            "upstream_mark: 1337
listeners:
  - {{ name: out, address: 127.0.0.1:{port}, original_dst: redirect, tcp_proxy: {{ cluster: pass }} }}
clusters:
  - {{ name: pass, type: original_dst }}
"
        ),
    );
    // As `nobody` (no capability); bounded, should it start and serve instead.
    let out = Command::new("timeout")
        .args([
            "20",
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            sluice_bin(),
            "run",
            "-c",
            path.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("upstream_mark 1337: cannot mark sockets (SO_MARK needs CAP_NET_ADMIN)"),
        "{stderr}"
    );
}

/// An HTTP server that answers every GET with the `Host` it was sent, logging each request.
const HOST_ECHO_SERVER: &str = r#"
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        body = ("host=" + self.headers.get("Host", "")).encode()
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, fmt, *args):
        print("request", self.client_address[0], self.requestline, flush=True)
ThreadingHTTPServer.address_family = __import__("socket").AF_INET
ThreadingHTTPServer((sys.argv[1], int(sys.argv[2])), H).serve_forever()
"#;

/// Issue 14: an HTTP route to a cluster of `type: original_dst`. The application's request to
/// the server's real address is captured by REDIRECT, handed off by its original destination
/// to the HTTP listener, routed, and sent to that original destination — exactly once, with
/// the application's `Host`. A request that was not captured (the application dialling the
/// HTTP listener itself) has no original destination: 503, and nothing is sent anywhere.
#[test]
fn redirect_capture_routes_http_to_the_original_destination() {
    if !can_run() {
        return;
    }
    let f = &IPV4;
    let tag = "http-odst";
    let (app_ip, server_ip) = (f.app, f.server);
    let dir = TempDir::new(&format!("transparent-{tag}"));
    // Declared before any process in them: dropped last, after every process is gone.
    let (app, server) = namespaces(tag, f);
    let script = dir.write("host_echo.py", HOST_ECHO_SERVER);
    let mut web = spawn_in(
        &dir,
        &server,
        "web",
        "python3",
        &[
            "-u",
            script.to_str().unwrap(),
            server_ip,
            &HTTP_PORT.to_string(),
        ],
    );
    wait_listening_in(&server, server_ip, HTTP_PORT, &mut web);
    let access_log = dir.path().join("access.log");
    let config = format!(
        "admin: {{ address: {ADMIN} }}
upstream_mark: 1337
listeners:
  - name: outbound
    address: \"0.0.0.0:15001\"
    original_dst: redirect
    use_original_dst: true
    tcp_proxy: {{ cluster: passthrough }}
  - name: http_{HTTP_PORT}
    address: \"0.0.0.0:{HTTP_PORT}\"
    http:
      access_log: {{ format: text, template: \"%LISTENER% %REQ(HOST)% %STATUS% %UPSTREAM_HOST% %ORIGINAL_DST%\", path: {log} }}
      virtual_hosts:
        - name: all
          domains: [\"*\"]
          routes: [ {{ match: {{ prefix: / }}, route: {{ cluster: original }} }} ]
clusters:
  - {{ name: passthrough, type: original_dst, connect_timeout: 2s }}
  - {{ name: original, type: original_dst, connect_timeout: 2s }}
",
        log = access_log.display()
    );
    let config_path = dir.write("sluice.yaml", &config);
    let config_path = config_path.to_str().unwrap();
    let mut sluice = start_capturing(&dir, &app, config_path);
    let probes = web.log_text().lines().filter(|l| l.contains("GET")).count();

    // Captured: to the original destination, with the application's Host.
    let url = format!("http://{}/hello", sock(server_ip, HTTP_PORT));
    let got = in_ns(
        &app,
        "curl",
        &[
            "-sS",
            "--max-time",
            "10",
            "-H",
            "Host: api.example",
            "-w",
            " %{http_code}",
            &url,
        ],
    );
    assert_eq!(
        String::from_utf8_lossy(&got.stdout),
        "host=api.example 200",
        "{}\n{}",
        String::from_utf8_lossy(&got.stderr),
        sluice.log_text()
    );
    // Not captured (loopback is excluded from capture): no original destination, 503.
    let direct = in_ns(
        &app,
        "curl",
        &[
            "-sS",
            "--max-time",
            "10",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            &format!("http://127.0.0.1:{HTTP_PORT}/direct"),
        ],
    );
    assert_eq!(String::from_utf8_lossy(&direct.stdout), "503");

    let s = stats(&app);
    let log = sluice.log_text();
    assert_eq!(stat(&s, "listener.outbound.capture.handed_off"), 1, "{log}");
    assert_eq!(stat(&s, "cluster.original.upstream_rq_total"), 1, "{log}");
    assert_eq!(stat(&s, "cluster.original.upstream_cx_total"), 1, "{log}");
    sluice.signal("TERM");
    assert!(sluice.wait_exit(Duration::from_secs(20)).is_some(), "{log}");
    // The server got the captured request once, from the application's address.
    let web_log = web.log_text();
    let requests: Vec<&str> = web_log
        .lines()
        .filter(|l| l.contains("GET"))
        .skip(probes)
        .collect();
    assert_eq!(
        requests,
        [format!("request {app_ip} GET /hello HTTP/1.1")],
        "{web_log}"
    );
    let lines = std::fs::read_to_string(&access_log).unwrap_or_default();
    let dest = sock(server_ip, HTTP_PORT);
    assert_eq!(
        lines,
        format!(
            "http_{HTTP_PORT} api.example 200 {dest} {dest}\nhttp_{HTTP_PORT} 127.0.0.1:{HTTP_PORT} 503 - -\n"
        ),
        "{log}"
    );
}

/// gRPC (grpc-js on both sides) captured by REDIRECT to an `original_dst` cluster with
/// `protocol: http2`: each call reaches the real server it was addressed to, over HTTP/2
/// (grpc-js serves nothing else), with its status, message and trailers as the server sent
/// them; the calls to one destination share one upstream connection (a burst of 20 calls to a
/// new destination opens one), and a second destination gets its own.
#[test]
fn redirect_capture_routes_grpc_over_http2_to_the_original_destination() {
    if !netns::can_run("e2e_transparent", &["ip", "iptables", "python3", "grpc-js"]) {
        return;
    }
    let f = &IPV4;
    let tag = "grpc-odst";
    let server_ip = f.server;
    let dir = TempDir::new(&format!("transparent-{tag}"));
    // Declared before any process in them: dropped last, after every process is gone.
    let (app, server) = namespaces(tag, f);
    // Two gRPC servers at two destinations of the server namespace.
    let peer = repo().join("tests/grpc/peer.js");
    let peer = peer.to_str().unwrap();
    let (port_a, port_b) = (HTTP_PORT, HTTP_PORT + 1);
    let mut servers = Vec::new();
    for (name, port) in [("a", port_a), ("b", port_b)] {
        let mut p = spawn_in(
            &dir,
            &server,
            name,
            "node",
            &[peer, "server", &sock(server_ip, port), name],
        );
        wait_listening_in(&server, server_ip, port, &mut p);
        servers.push(p);
    }
    let route = "http: { virtual_hosts: [ { name: all, domains: [\"*\"], routes: [ { match: { prefix: / }, route: { cluster: original } } ] } ] }";
    let config = format!(
        "admin: {{ address: {ADMIN} }}
upstream_mark: 1337
listeners:
  - name: outbound
    address: \"0.0.0.0:15001\"
    original_dst: redirect
    use_original_dst: true
    tcp_proxy: {{ cluster: passthrough }}
  - name: grpc_a
    address: \"0.0.0.0:{port_a}\"
    {route}
  - name: grpc_b
    address: \"0.0.0.0:{port_b}\"
    {route}
clusters:
  - {{ name: passthrough, type: original_dst, connect_timeout: 2s }}
  - {{ name: original, type: original_dst, protocol: http2, connect_timeout: 2s }}
"
    );
    let config_path = dir.write("sluice.yaml", &config);
    let config_path = config_path.to_str().unwrap();
    let mut sluice = start_capturing(&dir, &app, config_path);
    // A grpc-js client in the application namespace calls the server's real address.
    let call = |port: u16, case: &str| -> serde_json::Value {
        let out = in_ns(
            &app,
            "timeout",
            &["20", "node", peer, "client", &sock(server_ip, port), case],
        );
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        serde_json::from_str(text.trim()).unwrap_or_else(|e| {
            panic!(
                "{case}: {e}: {text} {}\n{}",
                String::from_utf8_lossy(&out.stderr),
                sluice.log_text()
            )
        })
    };

    // 20 calls at once to destination a: all answered by a.
    let unary = call(port_a, "unary:20");
    assert_eq!(unary["ok"], true, "{unary}");
    assert_eq!(unary["by"], serde_json::json!({ "a": 20 }), "{unary}");
    // A server's error status and message (in its trailers) reach the client as sent.
    let error = call(port_a, "error");
    assert_eq!(error["code"], 5, "{error}");
    assert_eq!(error["details"], "told to fail: e", "{error}");
    // Destination b: a server stream, then 20 calls.
    let stream = call(port_b, "stream");
    assert_eq!(stream["ok"], true, "{stream}");
    assert_eq!(
        stream["got"],
        serde_json::json!(["s:0", "s:1", "s:2", "s:3", "s:4"])
    );
    let unary = call(port_b, "unary:20");
    assert_eq!(unary["ok"], true, "{unary}");
    assert_eq!(unary["by"], serde_json::json!({ "b": 20 }), "{unary}");

    let s = stats(&app);
    let log = sluice.log_text();
    assert_eq!(stat(&s, "listener.outbound.capture.handed_off"), 4, "{log}");
    assert_eq!(stat(&s, "cluster.original.upstream_rq_total"), 42, "{log}");
    // One HTTP/2 connection per destination, reused by every call to it.
    assert_eq!(stat(&s, "cluster.original.upstream_cx_total"), 2, "{log}");
    assert_eq!(stat(&s, "http2.upstream_cx_total"), 2, "{log}");
    assert_eq!(stat(&s, "http2.upstream_streams_total"), 42, "{log}");
    assert_eq!(stat(&s, "http2.upstream_streams_active"), 0, "{log}");
    sluice.signal("TERM");
    assert!(sluice.wait_exit(Duration::from_secs(20)).is_some(), "{log}");
}

/// `use_http_header` on an `original_dst` cluster (Envoy's): a request's
/// `x-envoy-original-dst-host: IP:PORT` says where it goes, on a connection that was not
/// captured too. Without it the header is ignored (anyone who can send a request could
/// otherwise make the proxy connect anywhere), and a request with no destination is a 503.
/// A gRPC request goes to its destination over HTTP/2 from a `protocol: http2` cluster
/// (`grpc-timeout`, `te: trailers`, the answer's trailers as for any HTTP/2 cluster); from an
/// HTTP/1.1 one it is answered UNAVAILABLE at once and sent nowhere.
/// Loopback only: no namespace, no root needed.
#[test]
fn use_http_header_sends_a_request_where_its_header_says() {
    if !require_peers(&["python3", "curl", "node"]) {
        return;
    }
    let dir = TempDir::new("transparent-http-header");
    let (up, h2_up, admin) = (free_port(), free_port(), free_port());
    let _upstream = start_py_upstream(&dir, "up", up);
    let h2_log = dir.path().join("h2.requests");
    let script = repo().join("tests/grpc/h2_upstream.js");
    let mut h2_upstream = spawn(
        &dir,
        "h2",
        "node",
        &[
            script.to_str().unwrap(),
            &h2_up.to_string(),
            "h2",
            h2_log.to_str().unwrap(),
        ],
    );
    wait_listening(addr(h2_up), &mut h2_upstream);
    let (trusting, plain, trusting_h2) = (free_port(), free_port(), free_port());
    let route = |cluster: &str| {
        format!(
            "http: {{ virtual_hosts: [ {{ name: all, domains: [\"*\"], routes: [ {{ match: {{ prefix: / }}, route: {{ cluster: {cluster} }} }} ] }} ] }}"
        )
    };
    let config = format!(
        "admin: {{ address: 127.0.0.1:{admin} }}
listeners:
  - name: trusting
    address: 127.0.0.1:{trusting}
    {}
  - name: plain
    address: 127.0.0.1:{plain}
    {}
  - name: trusting_h2
    address: 127.0.0.1:{trusting_h2}
    {}
clusters:
  - {{ name: by_header, type: original_dst, use_http_header: true }}
  - {{ name: by_connection, type: original_dst }}
  - {{ name: by_header_h2, type: original_dst, use_http_header: true, protocol: http2 }}
",
        route("by_header"),
        route("by_connection"),
        route("by_header_h2"),
    );
    let _sluice = start_sluice(&dir, &config, 1, addr(trusting));
    let status = |port: u16, header: Option<String>| {
        let url = format!("http://127.0.0.1:{port}/status/200");
        let mut args = vec![
            "-sS".to_owned(),
            "--max-time".into(),
            "10".into(),
            "-o".into(),
            "/dev/null".into(),
            "-w".into(),
            "%{http_code}".into(),
        ];
        if let Some(h) = header {
            args.extend(["-H".to_owned(), h]);
        }
        args.push(url);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        String::from_utf8_lossy(&run("curl", &args).stdout).into_owned()
    };
    let header = Some(format!("x-envoy-original-dst-host: 127.0.0.1:{up}"));
    assert_eq!(status(trusting, header.clone()), "200");
    assert_eq!(status(trusting, None), "503");
    assert_eq!(
        status(trusting, Some("x-envoy-original-dst-host: nonsense".into())),
        "503"
    );
    assert_eq!(status(plain, header.clone()), "503");
    // gRPC (curl over h2c, with a deadline) to the HTTP/2 cluster: to the header's
    // destination, over HTTP/2, with the time left as `grpc-timeout` and `te: trailers`; the
    // answer's trailers reach the client.
    let grpc = |port: u16, to: u16, path: &str| {
        let out = run(
            "curl",
            &[
                "-sS",
                "--max-time",
                "10",
                "--http2-prior-knowledge",
                "-D",
                "-",
                "-H",
                "content-type: application/grpc",
                "-H",
                "te: trailers",
                "-H",
                "grpc-timeout: 5S",
                "-H",
                &format!("x-envoy-original-dst-host: 127.0.0.1:{to}"),
                "--data-binary",
                "@/dev/null",
                &format!("http://127.0.0.1:{port}{path}"),
            ],
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    for _ in 0..3 {
        let got = grpc(trusting_h2, h2_up, "/pkg.Svc/Call");
        let (head, body) = got.split_once("\r\n\r\n").expect("a head");
        assert!(head.to_ascii_lowercase().starts_with("http/2 200"), "{got}");
        let seen: serde_json::Value =
            serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {got}"));
        assert_eq!(seen["version"], "2.0", "{seen}");
        assert_eq!(seen["method"], "POST", "{seen}");
        assert_eq!(seen["path"], "/pkg.Svc/Call", "{seen}");
        assert_eq!(
            seen["headers"]["content-type"], "application/grpc",
            "{seen}"
        );
        assert_eq!(seen["headers"]["te"], "trailers", "{seen}");
        // The time left of the client's 5 s.
        let timeout = seen["headers"]["grpc-timeout"].as_str().unwrap_or("");
        let (value, unit) = timeout.split_at(timeout.len().saturating_sub(1));
        let per_ms = match unit {
            "m" => 1.0,
            "u" => 1e-3,
            "n" => 1e-6,
            _ => panic!("grpc-timeout {timeout:?}: {seen}"),
        };
        let left_ms = value.parse::<f64>().unwrap_or(0.0) * per_ms;
        assert!(left_ms > 4000.0 && left_ms <= 5000.0, "{seen}");
    }
    let got = grpc(trusting_h2, h2_up, "/trailers");
    assert!(got.contains("x-checksum: "), "no trailer: {got:.300}");
    // Every request to the one destination went on one connection.
    assert_eq!(pki_stat(admin, "cluster.by_header_h2.upstream_rq_total"), 4);
    assert_eq!(pki_stat(admin, "cluster.by_header_h2.upstream_cx_total"), 1);
    assert_eq!(pki_stat(admin, "http2.upstream_cx_total"), 1);
    let h2_requests = std::fs::read_to_string(&h2_log).unwrap_or_default();
    assert_eq!(h2_requests.lines().count(), 4, "{h2_requests}");
    // A stream the destination refuses (REFUSED_STREAM) is sent again, a POST too, as to a
    // host.
    let out = run(
        "curl",
        &[
            "-sS",
            "--max-time",
            "10",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-d",
            "x",
            "-H",
            &format!("x-envoy-original-dst-host: 127.0.0.1:{h2_up}"),
            &format!("http://127.0.0.1:{trusting_h2}/refuse-once/odst"),
        ],
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "200");
    let h2_requests = std::fs::read_to_string(&h2_log).unwrap_or_default();
    let last: Vec<&str> = h2_requests.lines().skip(4).collect();
    assert_eq!(last.len(), 2, "{h2_requests}");
    assert!(
        last[0].contains(r#""refused":"/refuse-once/odst""#),
        "{h2_requests}"
    );
    assert!(
        last[1].contains(r#""path":"/refuse-once/odst""#),
        "{h2_requests}"
    );
    assert_eq!(pki_stat(admin, "http2.upstream_refused"), 1);
    assert_eq!(pki_stat(admin, "http2.upstream_cx_total"), 1);
    // To the HTTP/1.1 cluster, gRPC is answered UNAVAILABLE at once, trailers-only, and sent
    // nowhere.
    let got = grpc(trusting, up, "/pkg.Svc/Call").to_ascii_lowercase();
    assert!(got.starts_with("http/2 200"), "{got}");
    assert!(got.contains("grpc-status: 14"), "{got}");
    let requests = std::fs::read_to_string(dir.path().join("up.requests")).unwrap_or_default();
    assert_eq!(requests.lines().count(), 1, "{requests}");
}

/// An HTTP/2 server over TLS (node): answers each request with the ALPN protocol, the
/// `:authority` and the client's port (which says which connection carried it).
const H2_TLS_SERVER: &str = r#"
const http2 = require('http2');
const fs = require('fs');
const [port, cert, key] = process.argv.slice(2);
const server = http2.createSecureServer({ cert: fs.readFileSync(cert), key: fs.readFileSync(key) });
server.on('stream', (stream, headers) => {
  stream.respond({ ':status': 200, 'content-type': 'text/plain' });
  stream.end(`${stream.session.alpnProtocol} ${headers[':authority']} ${stream.session.socket.remotePort}`);
});
server.listen(Number(port), '127.0.0.1');
"#;

/// An `original_dst` cluster with `protocol: http2` and `tls`: the destination is verified
/// (`sni`, `ca`) and spoken to in HTTP/2 over TLS (ALPN `h2`), its requests multiplexed on
/// one connection. Loopback (`use_http_header`): no namespace, no root needed.
#[test]
fn an_original_destination_is_spoken_to_in_http2_over_tls() {
    if !require_peers(&["node", "curl"]) {
        return;
    }
    let dir = TempDir::new("transparent-h2-tls");
    let ca = support::pki::make_ca(&dir, "ca");
    let (cert, key) = support::pki::leaf(&dir, &ca, "upstream", &["upstream.example"], None);
    let (up, listen, admin) = (free_port(), free_port(), free_port());
    let script = dir.write("h2_tls.js", H2_TLS_SERVER);
    let mut upstream = spawn(
        &dir,
        "up",
        "node",
        &[
            script.to_str().unwrap(),
            &up.to_string(),
            cert.to_str().unwrap(),
            key.to_str().unwrap(),
        ],
    );
    wait_listening(addr(up), &mut upstream);
    let config = format!(
        "admin: {{ address: 127.0.0.1:{admin} }}
listeners:
  - name: web
    address: 127.0.0.1:{listen}
    http: {{ virtual_hosts: [ {{ name: all, domains: [\"*\"], routes: [ {{ match: {{ prefix: / }}, route: {{ cluster: h2_tls }} }} ] }} ] }}
clusters:
  - name: h2_tls
    type: original_dst
    use_http_header: true
    protocol: http2
    tls: {{ sni: upstream.example, ca: {} }}
",
        ca.pem.display()
    );
    let _sluice = start_sluice(&dir, &config, 1, addr(listen));
    let mut ports = Vec::new();
    for _ in 0..3 {
        let out = run(
            "curl",
            &[
                "-sS",
                "--max-time",
                "10",
                "--http1.1",
                "-H",
                "Host: api.example",
                "-H",
                &format!("x-envoy-original-dst-host: 127.0.0.1:{up}"),
                &format!("http://127.0.0.1:{listen}/x"),
            ],
        );
        let body = String::from_utf8_lossy(&out.stdout).into_owned();
        let words: Vec<&str> = body.split(' ').collect();
        assert_eq!(
            words[..2],
            ["h2", "api.example"],
            "{body} {}",
            String::from_utf8_lossy(&out.stderr)
        );
        ports.push(words[2].to_owned());
    }
    ports.dedup();
    assert_eq!(ports.len(), 1, "not one connection: {ports:?}");
    assert_eq!(pki_stat(admin, "http2.upstream_cx_total"), 1);
    assert_eq!(pki_stat(admin, "cluster.h2_tls.upstream_rq_total"), 3);
}

/// A Bolt v1 server: answers each request status 0 with `srv:` and the request's content, and
/// prints each connection's peer.
const BOLT_SERVER: &str = r#"
import socket, struct, sys, threading
l = socket.socket(socket.AF_INET)
l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
l.bind((sys.argv[1], int(sys.argv[2])))
l.listen(64)
def read(c, n):
    b = b""
    while len(b) < n:
        d = c.recv(n - len(b))
        if not d:
            return None
        b += d
    return b
def serve(c):
    while True:
        h = read(c, 22)
        if h is None:
            break
        rid, codec = h[5:9], h[9:10]
        cl, hl, bl = struct.unpack(">HHI", h[14:22])
        rest = read(c, cl + hl + bl)
        if rest is None:
            break
        body = b"srv:" + rest[cl + hl:]
        c.sendall(b"\x01\x00\x00\x02\x01" + rid + codec + struct.pack(">HHHI", 0, 0, 0, len(body)) + body)
    c.close()
while True:
    c, peer = l.accept()
    print("connection from", peer[0], flush=True)
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"#;

/// A Bolt v1 client: on one connection to `ip port`, sends requests for service `svc` with
/// ids and contents from the arguments that follow; prints `id status content` per answer.
const BOLT_CLIENT: &str = r#"
import socket, struct, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), 5)
s.settimeout(5)
svc = sys.argv[3].encode()
reqs = sys.argv[4:]
for i, content in enumerate(reqs):
    header = struct.pack(">I", 7) + b"service" + struct.pack(">I", len(svc)) + svc
    body = content.encode()
    s.sendall(struct.pack(">BBHBIBiHHI", 1, 1, 1, 1, 100 + i, 1, 5000, 0, len(header), len(body)) + header + body)
def read(n):
    b = b""
    while len(b) < n:
        d = s.recv(n - len(b))
        if not d:
            raise SystemExit("closed after " + repr(b))
        b += d
    return b
for _ in reqs:
    h = read(20)
    rid, = struct.unpack(">I", h[5:9])
    status, cl, hl, bl = struct.unpack(">HHHI", h[10:20])
    rest = read(cl + hl + bl)
    print(rid, status, rest[cl + hl:].decode(), flush=True)
"#;

const BOLT_PORT: u16 = 12200;

/// Bolt to an `original_dst` cluster: a Bolt request on a connection captured by REDIRECT and
/// handed to the Bolt listener goes to the connection's original destination (the real server,
/// reached once, from the application's address); a request on a connection that was not
/// captured is answered status 6 (no processor), counted, and nothing is sent anywhere.
#[test]
fn redirect_capture_routes_bolt_to_the_original_destination() {
    if !can_run() {
        return;
    }
    let f = &IPV4;
    let tag = "bolt-odst";
    let (app_ip, server_ip) = (f.app, f.server);
    let dir = TempDir::new(&format!("transparent-{tag}"));
    // Declared before any process in them: dropped last, after every process is gone.
    let (app, server) = namespaces(tag, f);
    let script = dir.write("bolt_server.py", BOLT_SERVER);
    let mut rpc = spawn_in(
        &dir,
        &server,
        "rpc",
        "python3",
        &[
            "-u",
            script.to_str().unwrap(),
            server_ip,
            &BOLT_PORT.to_string(),
        ],
    );
    wait_listening_in(&server, server_ip, BOLT_PORT, &mut rpc);
    let probes = rpc.log_text().lines().count();
    let access_log = dir.path().join("bolt.log");
    let config = format!(
        "admin: {{ address: {ADMIN} }}
upstream_mark: 1337
listeners:
  - name: outbound
    address: \"0.0.0.0:15001\"
    original_dst: redirect
    use_original_dst: true
    tcp_proxy: {{ cluster: passthrough }}
  - name: bolt_{BOLT_PORT}
    address: \"0.0.0.0:{BOLT_PORT}\"
    bolt:
      access_log: {{ path: {log}, template: \"%LISTENER% %BOLT_SERVICE% %BOLT_REQUEST_ID% %BOLT_STATUS% %RESPONSE_FLAGS% %UPSTREAM_CLUSTER% %UPSTREAM_HOST% %ORIGINAL_DST%\" }}
      routes: [ {{ match: {{ service: \"com.example.Echo:1.0\" }}, route: {{ cluster: original }} }} ]
clusters:
  - {{ name: passthrough, type: original_dst, connect_timeout: 2s }}
  - {{ name: original, type: original_dst, connect_timeout: 2s }}
",
        log = access_log.display()
    );
    let config_path = dir.write("sluice.yaml", &config);
    let config_path = config_path.to_str().unwrap();
    let mut sluice = start_capturing(&dir, &app, config_path);

    // Captured: both requests of the connection reach the real server, answered in order
    // with their own ids.
    let got = in_ns(
        &app,
        "python3",
        &[
            "-c",
            BOLT_CLIENT,
            server_ip,
            &BOLT_PORT.to_string(),
            "com.example.Echo:1.0",
            "one",
            "two",
        ],
    );
    assert_eq!(
        String::from_utf8_lossy(&got.stdout),
        "100 0 srv:one\n101 0 srv:two\n",
        "{}\n{}",
        String::from_utf8_lossy(&got.stderr),
        sluice.log_text()
    );
    // Not captured (loopback is excluded from capture): no original destination, status 6.
    let direct = in_ns(
        &app,
        "python3",
        &[
            "-c",
            BOLT_CLIENT,
            "127.0.0.1",
            &BOLT_PORT.to_string(),
            "com.example.Echo:1.0",
            "direct",
        ],
    );
    assert_eq!(
        String::from_utf8_lossy(&direct.stdout),
        "100 6 \n",
        "{}",
        String::from_utf8_lossy(&direct.stderr)
    );

    let s = stats(&app);
    let log = sluice.log_text();
    assert_eq!(stat(&s, "listener.outbound.capture.handed_off"), 1, "{log}");
    assert_eq!(stat(&s, "bolt.requests"), 2, "{log}");
    assert_eq!(stat(&s, "bolt.responses"), 2, "{log}");
    assert_eq!(stat(&s, "bolt.no_original_dst"), 1, "{log}");
    assert_eq!(stat(&s, "cluster.original.upstream_cx_total"), 1, "{log}");
    sluice.signal("TERM");
    assert!(sluice.wait_exit(Duration::from_secs(20)).is_some(), "{log}");
    // The server saw one connection (both requests multiplexed on it), from the application's
    // address: the proxy's own connection was not captured again.
    let rpc_log = rpc.log_text();
    let seen: Vec<&str> = rpc_log.lines().skip(probes).collect();
    assert_eq!(seen, [format!("connection from {app_ip}")], "{rpc_log}");
    // Sluice's access log: each captured request with its original destination (where it was
    // sent), the direct one with none (answered by the proxy: no host to send it to).
    let lines = std::fs::read_to_string(&access_log).unwrap_or_default();
    let to = format!("{server_ip}:{BOLT_PORT}");
    assert_eq!(
        lines,
        format!(
            "bolt_{BOLT_PORT} com.example.Echo:1.0 100 0 - original {to} {to}\n\
             bolt_{BOLT_PORT} com.example.Echo:1.0 101 0 - original {to} {to}\n\
             bolt_{BOLT_PORT} com.example.Echo:1.0 100 6 UH original - -\n"
        ),
        "{log}"
    );
}

/// A TCP server that prints each connection's peer and holds it open (it speaks no HTTP/2: the
/// test looks only at where the connection came from).
const PEER_LOGGER: &str = r#"
import socket, sys
l = socket.socket(socket.AF_INET)
l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
l.bind((sys.argv[1], int(sys.argv[2])))
l.listen(64)
held = []
while True:
    c, peer = l.accept()
    held.append(c)
    print("connection from", peer[0], flush=True)
"#;

const XDS_PORT: u16 = 18000;

/// The xDS client's connection under outbound capture (the rules `sluice iptables` prints):
/// it carries `upstream_mark`, so the rules leave it alone — it reaches the management server
/// directly from the application's address, and the capture listener never sees it (neither
/// handed off nor passed through). Without the mark it would be captured into the proxy itself
/// (here passed through by the capture listener's own chain; with listeners only from xDS,
/// refused, and the proxy would never get a config).
#[test]
fn the_xds_connection_is_not_captured() {
    if !can_run() {
        return;
    }
    let f = &IPV4;
    let tag = "xds-mark";
    let (app_ip, server_ip) = (f.app, f.server);
    let dir = TempDir::new(&format!("transparent-{tag}"));
    // Declared before any process in them: dropped last, after every process is gone.
    let (app, server) = namespaces(tag, f);
    let script = dir.write("peer_logger.py", PEER_LOGGER);
    let mut control_plane = spawn_in(
        &dir,
        &server,
        "control-plane",
        "python3",
        &[
            "-u",
            script.to_str().unwrap(),
            server_ip,
            &XDS_PORT.to_string(),
        ],
    );
    wait_listening_in(&server, server_ip, XDS_PORT, &mut control_plane);
    let probes = control_plane.log_text().lines().count();
    let config = format!(
        "admin: {{ address: {ADMIN} }}
upstream_mark: 1337
node: {{ id: sidecar-1, cluster: e2e }}
xds: {{ cluster: xds_server }}
listeners:
  - name: outbound
    address: \"0.0.0.0:15001\"
    original_dst: redirect
    use_original_dst: true
    tcp_proxy: {{ cluster: passthrough }}
clusters:
  - {{ name: passthrough, type: original_dst, connect_timeout: 2s }}
  - {{ name: xds_server, connect_timeout: 2s, hosts: [ {{ address: \"{}\" }} ] }}
",
        sock(server_ip, XDS_PORT)
    );
    let config_path = dir.write("sluice.yaml", &config);
    let config_path = config_path.to_str().unwrap();
    let printed = Command::new(sluice_bin())
        .args(["iptables", "-c", config_path])
        .output()
        .unwrap();
    assert!(
        printed.status.success(),
        "{}",
        String::from_utf8_lossy(&printed.stderr)
    );
    let rules = String::from_utf8(printed.stdout).unwrap();
    // The rules are in place before the proxy starts: its first connection is already subject
    // to them.
    let applied = in_ns(&app, "sh", &["-c", &rules]);
    assert!(
        applied.status.success(),
        "{rules}\n{}",
        String::from_utf8_lossy(&applied.stderr)
    );
    let mut sluice = spawn_in(
        &dir,
        &app,
        "sluice",
        sluice_bin(),
        &["run", "-c", config_path, "--workers", "1"],
    );
    wait_listening_in(&app, "127.0.0.1", 15000, &mut sluice);
    let deadline = Instant::now() + Duration::from_secs(20);
    while control_plane.log_text().lines().count() == probes {
        assert!(
            Instant::now() < deadline,
            "the xDS client never reached the management server\n{}",
            sluice.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let s = stats(&app);
    let log = sluice.log_text();
    assert_eq!(stat(&s, "listener.outbound.capture.handed_off"), 0, "{log}");
    assert_eq!(stat(&s, "listener.outbound.capture.own_chain"), 0, "{log}");
    assert_eq!(
        stat(&s, "cluster.passthrough.upstream_cx_total"),
        0,
        "{log}"
    );
    sluice.signal("TERM");
    assert!(sluice.wait_exit(Duration::from_secs(20)).is_some(), "{log}");
    let seen = control_plane.log_text();
    let seen: Vec<&str> = seen.lines().skip(probes).collect();
    assert!(
        !seen.is_empty()
            && seen
                .iter()
                .all(|l| *l == format!("connection from {app_ip}")),
        "{seen:?}"
    );
}

/// A virtual listener (`bind_to_port: false`): a captured HTTP connection to the server's port
/// is handed to it and served (to its original destination), while nothing listens on its
/// port in the application's namespace — a direct connection is refused.
#[test]
fn a_virtual_listener_serves_hand_offs_and_binds_nothing() {
    if !can_run() {
        return;
    }
    let f = &IPV4;
    let tag = "virtual";
    let server_ip = f.server;
    let dir = TempDir::new(&format!("transparent-{tag}"));
    // Declared before any process in them: dropped last, after every process is gone.
    let (app, server) = namespaces(tag, f);
    let script = dir.write("host_echo.py", HOST_ECHO_SERVER);
    let mut web = spawn_in(
        &dir,
        &server,
        "web",
        "python3",
        &[
            "-u",
            script.to_str().unwrap(),
            server_ip,
            &HTTP_PORT.to_string(),
        ],
    );
    wait_listening_in(&server, server_ip, HTTP_PORT, &mut web);
    let config = format!(
        "admin: {{ address: {ADMIN} }}
upstream_mark: 1337
listeners:
  - name: outbound
    address: \"0.0.0.0:15001\"
    original_dst: redirect
    use_original_dst: true
    tcp_proxy: {{ cluster: passthrough }}
  - name: http_{HTTP_PORT}
    address: \"0.0.0.0:{HTTP_PORT}\"
    bind_to_port: false
    http:
      virtual_hosts:
        - name: all
          domains: [\"*\"]
          routes: [ {{ match: {{ prefix: / }}, route: {{ cluster: original }} }} ]
clusters:
  - {{ name: passthrough, type: original_dst, connect_timeout: 2s }}
  - {{ name: original, type: original_dst, connect_timeout: 2s }}
"
    );
    let config_path = dir.write("sluice.yaml", &config);
    let config_path = config_path.to_str().unwrap();
    let mut sluice = spawn_in(
        &dir,
        &app,
        "sluice",
        sluice_bin(),
        &["run", "-c", config_path, "--workers", "2"],
    );
    wait_listening_in(&app, "127.0.0.1", 15000, &mut sluice);
    let printed = Command::new(sluice_bin())
        .args(["iptables", "-c", config_path])
        .output()
        .unwrap();
    assert!(printed.status.success());
    let rules = String::from_utf8(printed.stdout).unwrap();
    let applied = in_ns(&app, "sh", &["-c", &rules]);
    assert!(
        applied.status.success(),
        "{rules}\n{}",
        String::from_utf8_lossy(&applied.stderr)
    );

    // Nothing listens on the virtual listener's port: refused (loopback is not captured).
    let direct = in_ns(
        &app,
        "curl",
        &[
            "-sS",
            "--max-time",
            "5",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            &format!("http://127.0.0.1:{HTTP_PORT}/direct"),
        ],
    );
    assert_eq!(direct.status.code(), Some(7), "curl: could not connect");
    let probe = format!("import socket; socket.create_connection(('127.0.0.1', {HTTP_PORT}), 2)");
    let direct = in_ns(&app, "python3", &["-c", &probe]);
    assert!(
        String::from_utf8_lossy(&direct.stderr).contains("ConnectionRefusedError"),
        "{}",
        String::from_utf8_lossy(&direct.stderr)
    );
    // Captured and handed off to it: served, to the original destination.
    let url = format!("http://{}/hello", sock(server_ip, HTTP_PORT));
    let got = in_ns(
        &app,
        "curl",
        &[
            "-sS",
            "--max-time",
            "10",
            "-H",
            "Host: api.example",
            "-w",
            " %{http_code}",
            &url,
        ],
    );
    assert_eq!(
        String::from_utf8_lossy(&got.stdout),
        "host=api.example 200",
        "{}\n{}",
        String::from_utf8_lossy(&got.stderr),
        sluice.log_text()
    );
    let s = stats(&app);
    let log = sluice.log_text();
    assert_eq!(stat(&s, "listener.outbound.capture.handed_off"), 1, "{log}");
    assert_eq!(
        stat(
            &s,
            &format!("listener.http_{HTTP_PORT}.downstream_cx_total")
        ),
        1,
        "{log}"
    );
    assert_eq!(stat(&s, "cluster.original.upstream_rq_total"), 1, "{log}");
    // The admin view says it is virtual.
    let listeners = in_ns(
        &app,
        "curl",
        &[
            "-sS",
            "--max-time",
            "5",
            &format!("http://{ADMIN}/listeners"),
        ],
    );
    let listeners = String::from_utf8_lossy(&listeners.stdout);
    assert!(
        listeners.contains(&format!("http_{HTTP_PORT}::virtual::true\n")),
        "{listeners}"
    );
    assert!(!listeners.contains("outbound::virtual"), "{listeners}");
    sluice.signal("TERM");
    assert!(sluice.wait_exit(Duration::from_secs(20)).is_some(), "{log}");
}
