//! End-to-end tests of the `sluice` binary as an L4 proxy, with real peers: nginx upstreams,
//! curl and wrk clients, and raw sockets checking bytes.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use support::*;

fn tcp_proxy_config(listen: u16, hosts: &[u16], extra_cluster: &str, drain: &str) -> String {
    let hosts: String = hosts
        .iter()
        .map(|p| format!("      - {{ address: 127.0.0.1:{p} }}\n"))
        .collect();
    format!(
        r#"
listeners:
  - name: tcp_in
    address: 127.0.0.1:{listen}
    tcp_proxy: {{ cluster: app }}
clusters:
  - name: app
    connect_timeout: 1s
{extra_cluster}    hosts:
{hosts}drain_timeout: {drain}
"#
    )
}

#[test]
fn every_example_config_validates_and_every_invalid_one_is_rejected() {
    let mut checked = 0;
    for entry in std::fs::read_dir(repo().join("configs")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") {
            let out = run(sluice_bin(), &["validate", "-c", path.to_str().unwrap()]);
            assert!(
                out.status.success(),
                "{} should be valid:\n{}",
                path.display(),
                String::from_utf8_lossy(&out.stderr)
            );
            checked += 1;
        }
    }
    assert!(checked >= 2, "expected example configs in configs/");
    for entry in std::fs::read_dir(repo().join("configs/invalid")).unwrap() {
        let path = entry.unwrap().path();
        let out = run(sluice_bin(), &["validate", "-c", path.to_str().unwrap()]);
        assert_eq!(
            out.status.code(),
            Some(1),
            "{} should be invalid",
            path.display()
        );
    }
}

const MANY_MISTAKES: [&str; 6] = [
    r#"clusters[0].connect_timeout: "fast" is not a duration (expected a number and a unit: 250ms, 1s, 5m, 1h)"#,
    r#"clusters[0].lb_policy: unknown value "least_loaded" (expected one of: round_robin, weighted_round_robin, random, least_request, ring_hash, maglev)"#,
    "clusters[0].hosts[0].weight: 0 is not a whole number from 1 to 1000",
    r#"listeners[0].address: "127.0.0.1:99999" is not a socket address (port out of range)"#,
    r#"listeners[0].tcp_proxy.cluster: unknown cluster "nowhere" (known: c1)"#,
    "listeners[0].tcp_proxy.idle_timout: unknown field (expected one of: cluster, idle_timeout, max_connect_attempts, sni_routes, client_hello_timeout, access_log, splice); did you mean 'idle_timeout'?",
];

/// Where each of [`MANY_MISTAKES`] is in the file (`LINE:COL`), in file order.
const MANY_MISTAKES_AT: [(&str, usize); 6] = [
    ("4:14", 3),
    ("5:27", 4),
    ("5:36", 5),
    ("8:22", 0),
    ("9:16", 1),
    ("11:44", 2),
];

#[test]
fn validate_lists_every_problem_with_its_path() {
    let path = repo().join("configs/invalid/many-mistakes.yaml");
    let out = run(sluice_bin(), &["validate", "-c", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("6 problems in the config:"), "{stderr}");
    // Each as `FILE:LINE:COL: path: message`, in file order.
    let file = path.display().to_string();
    let listed: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with(&format!("{file}:")) && !l.ends_with("in the config:"))
        .collect();
    let expected: Vec<String> = MANY_MISTAKES_AT
        .iter()
        .map(|(at, i)| format!("{file}:{at}: {}", MANY_MISTAKES[*i]))
        .collect();
    assert_eq!(listed, expected, "{stderr}");
}

#[test]
fn run_refuses_to_start_on_an_invalid_config() {
    let path = repo().join("configs/invalid/many-mistakes.yaml");
    let out = run(sluice_bin(), &["run", "-c", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    for line in MANY_MISTAKES {
        assert!(stderr.contains(line), "missing {line:?} in:\n{stderr}");
    }
    assert!(stderr.contains("not starting"), "{stderr}");
    let missing = run(
        sluice_bin(),
        &["validate", "-c", "/nonexistent/sluice.yaml"],
    );
    assert_eq!(missing.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&missing.stderr)
            .contains("/nonexistent/sluice.yaml: cannot read the config")
    );
}

#[test]
fn version_prints_the_package_version() {
    let out = run(sluice_bin(), &["--version"]);
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("sluice {}", env!("CARGO_PKG_VERSION"))
    );
}

/// A test whose peers are missing skips with one line naming the test and the peer, unless
/// `SLUICE_REQUIRE_PEERS` is set (as `tests/run.sh` does): then it fails. This test binary runs
/// the wrk test again with a `PATH` where nothing is found.
#[test]
fn a_missing_peer_skips_the_test_or_fails_it_when_peers_are_required() {
    let empty = TempDir::new("no-peers");
    let rerun = |require: bool| {
        let mut cmd = std::process::Command::new(std::env::current_exe().unwrap());
        cmd.args([
            "--exact",
            "wrk_load_through_the_proxy_has_no_errors",
            "--nocapture",
        ])
        .env("PATH", empty.path())
        .env_remove(REQUIRE_PEERS_VAR);
        if require {
            cmd.env(REQUIRE_PEERS_VAR, "1");
        }
        let out = cmd.output().unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    };
    let why = "nginx not found on PATH (tests/run.sh installs it); \
               wrk not found on PATH (tests/run.sh installs it)";

    let (passed, text) = rerun(false);
    assert!(passed, "{text}");
    let skipped = format!("SKIPPED e2e_tcp::wrk_load_through_the_proxy_has_no_errors: {why}\n");
    assert!(text.contains(&skipped), "{text}");

    let (passed, text) = rerun(true);
    assert!(!passed, "{text}");
    assert!(
        text.contains(&format!(
            "e2e_tcp::wrk_load_through_the_proxy_has_no_errors: {why}; SLUICE_REQUIRE_PEERS is set"
        )),
        "{text}"
    );
}

/// The quickstart config serves on its own: bytes come back through proxy → echo listeners,
/// byte for byte, on many concurrent connections over two workers.
#[test]
fn quickstart_echoes_byte_for_byte_on_concurrent_connections() {
    let dir = TempDir::new("quickstart");
    let config = std::fs::read_to_string(repo().join("configs/quickstart.yaml")).unwrap();
    let _sluice = start_sluice(&dir, &config, 2, addr(10000));
    let threads: Vec<_> = (0..16u32)
        .map(|i| {
            std::thread::spawn(move || {
                let len = 1 + (i as usize * 37_813) % 300_000;
                let data: Vec<u8> = (0..len)
                    .map(|j| (j as u32 ^ i.wrapping_mul(2_654_435_761)) as u8)
                    .collect();
                let got = echo_once(addr(10000), &data).unwrap();
                assert_eq!(got.len(), data.len(), "connection {i}: length");
                assert!(got == data, "connection {i}: bytes differ");
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

fn curl_body(port: u16) -> Result<String, String> {
    let out = run(
        "curl",
        &[
            "-sS",
            "--max-time",
            "5",
            "-w",
            " %{http_code}",
            &format!("http://127.0.0.1:{port}/"),
        ],
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if out.status.success() && text.ends_with(" 200") {
        Ok(text.trim_end_matches(" 200").to_owned())
    } else {
        Err(format!("{text} {}", String::from_utf8_lossy(&out.stderr)))
    }
}

/// Two nginx upstreams behind the proxy; one is killed with SIGKILL: every new connection
/// still succeeds (connect failover), and the survivor serves them all.
#[test]
fn every_new_connection_succeeds_with_one_of_two_upstreams_killed() {
    if !require_peers(&["curl", "nginx"]) {
        return;
    }
    let dir = TempDir::new("failover");
    let (p1, p2, listen) = (free_port(), free_port(), free_port());
    let _up1 = start_nginx(&dir, "up1", p1, "up1");
    let mut up2 = start_nginx(&dir, "up2", p2, "up2");
    let _sluice = start_sluice(
        &dir,
        &tcp_proxy_config(listen, &[p1, p2], "", "5s"),
        2,
        addr(listen),
    );

    let mut served = [0usize; 2];
    for i in 0..40 {
        let body = curl_body(listen).unwrap_or_else(|e| panic!("request {i} failed: {e}"));
        served[if body == "up1" { 0 } else { 1 }] += 1;
    }
    assert!(
        served[0] > 0 && served[1] > 0,
        "both upstreams serve: {served:?}"
    );

    up2.signal("KILL");
    let _ = up2.child.wait();
    assert!(TcpStream::connect(addr(p2)).is_err(), "up2 is dead");
    for i in 0..60 {
        let body =
            curl_body(listen).unwrap_or_else(|e| panic!("request {i} after the kill failed: {e}"));
        assert_eq!(body, "up1", "request {i} after the kill");
    }
}

/// wrk keep-alive load through the proxy: zero socket errors, zero non-2xx.
#[test]
fn wrk_load_through_the_proxy_has_no_errors() {
    if !require_peers(&["nginx", "wrk"]) {
        return;
    }
    let dir = TempDir::new("wrk");
    let (p1, listen) = (free_port(), free_port());
    let _up = start_nginx(&dir, "up1", p1, "hello");
    let sluice = start_sluice(
        &dir,
        &tcp_proxy_config(listen, &[p1], "    lb_policy: least_request\n", "5s"),
        2,
        addr(listen),
    );
    let out = run(
        "wrk",
        &[
            "-t2",
            "-c20",
            "-d2s",
            &format!("http://127.0.0.1:{listen}/"),
        ],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        !text.contains("Socket errors"),
        "wrk saw socket errors:\n{text}"
    );
    assert!(
        !text.contains("Non-2xx"),
        "wrk saw non-2xx answers:\n{text}"
    );
    let requests: u64 = text
        .lines()
        .find(|l| l.contains("requests in"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no request count in:\n{text}"));
    assert!(requests > 1000, "only {requests} requests:\n{text}");
    drop(sluice);
}

/// SIGTERM: new connections are refused at once, an open session keeps working until it
/// ends, then the process exits 0.
#[test]
fn sigterm_stops_accepting_and_lets_open_sessions_finish() {
    if !require_peers(&["nginx"]) {
        return;
    }
    let dir = TempDir::new("drain");
    let (p1, listen) = (free_port(), free_port());
    let _up = start_nginx(&dir, "up1", p1, "still here");
    let mut sluice = start_sluice(
        &dir,
        &tcp_proxy_config(listen, &[p1], "", "20s"),
        2,
        addr(listen),
    );

    let mut open = TcpStream::connect(addr(listen)).unwrap();
    open.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let request = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    let read_response = |s: &mut TcpStream| {
        let mut buf = [0u8; 4096];
        let n = s.read(&mut buf).unwrap();
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    open.write_all(request).unwrap();
    assert!(read_response(&mut open).ends_with("still here"));

    sluice.signal("TERM");
    let mut refused = false;
    for _ in 0..100 {
        if TcpStream::connect(addr(listen)).is_err() {
            refused = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(refused, "new connections must be refused once draining");
    assert!(
        sluice.child.try_wait().unwrap().is_none(),
        "must wait for the open session"
    );

    open.write_all(request).unwrap();
    assert!(
        read_response(&mut open).ends_with("still here"),
        "the open session keeps working"
    );
    drop(open);
    let status = sluice
        .wait_exit(Duration::from_secs(10))
        .expect("exits once the session ended");
    assert!(status.success(), "{status}:\n{}", sluice.log_text());
}

/// A session still open when the drain timeout passes is closed, and the process exits 0.
#[test]
fn drain_timeout_closes_what_is_left() {
    if !require_peers(&["nginx"]) {
        return;
    }
    let dir = TempDir::new("drain-timeout");
    let (p1, listen, admin) = (free_port(), free_port(), free_port());
    let _up = start_nginx(&dir, "up1", p1, "x");
    let config = format!(
        "{}admin: {{ address: 127.0.0.1:{admin} }}\n",
        tcp_proxy_config(listen, &[p1], "", "1s")
    );
    let mut sluice = start_sluice(&dir, &config, 1, addr(listen));
    let mut idle = TcpStream::connect(addr(listen)).unwrap();
    idle.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    // The proxy has taken the session (a connection still in the listen queue at SIGTERM is
    // not one the drain has to wait for).
    assert!(
        eventually(Duration::from_secs(10), || {
            admin_stat(admin, "listener.tcp_in.downstream_cx_active") == 1
        }),
        "the proxy never took the connection:\n{}",
        sluice.log_text()
    );
    sluice.signal("TERM");
    let status = sluice
        .wait_exit(Duration::from_secs(8))
        .expect("exits after the drain timeout");
    assert!(status.success());
    let mut buf = [0u8; 16];
    assert_eq!(
        idle.read(&mut buf).unwrap_or(0),
        0,
        "the idle session was closed"
    );
    assert!(
        sluice.log_text().contains("drain timeout passed"),
        "{}",
        sluice.log_text()
    );
}

/// An address already taken stops startup with a message naming the listener.
#[test]
fn an_address_in_use_is_reported_with_its_listener() {
    let dir = TempDir::new("bind");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let path = dir.write("c.yaml", &tcp_proxy_config(port, &[1], "", "1s"));
    let out = run(
        sluice_bin(),
        &["run", "-c", path.to_str().unwrap(), "--workers", "1"],
    );
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "listeners[0] (tcp_in): cannot listen on 127.0.0.1:{port}"
        )),
        "{stderr}"
    );
}

/// A self-signed P-256 certificate for `cn` (and its key), made with the openssl CLI.
fn self_signed(dir: &TempDir, cn: &str) -> (String, String) {
    let cert = dir.path().join(format!("{cn}.pem"));
    let key = dir.path().join(format!("{cn}.key"));
    let out = run(
        "openssl",
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "1",
            "-subj",
            &format!("/CN={cn}"),
            "-keyout",
            key.to_str().unwrap(),
            "-out",
            cert.to_str().unwrap(),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (
        cert.to_str().unwrap().to_owned(),
        key.to_str().unwrap().to_owned(),
    )
}

/// The subject CN of the certificate the TLS server behind `port` presents when asked for
/// `server_name` (`None`: no SNI), read by `openssl s_client` after a full handshake.
fn served_cn(port: u16, server_name: Option<&str>) -> String {
    let target = format!("127.0.0.1:{port}");
    let mut args = vec!["s_client", "-connect", &target, "-brief"];
    match server_name {
        Some(name) => args.extend(["-servername", name]),
        None => args.push("-noservername"),
    }
    let out = run("openssl", &args);
    let text =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("CONNECTION ESTABLISHED"),
        "no TLS handshake through the proxy for {server_name:?}:\n{text}"
    );
    text.lines()
        .find_map(|l| l.strip_prefix("Peer certificate: CN = "))
        .unwrap_or_else(|| panic!("no peer certificate in:\n{text}"))
        .trim()
        .to_owned()
}

/// `sni_routes`: each TLS connection reaches the backend its server name picks — exact name,
/// then the longest wildcard, else the listener's cluster — with the handshake passed through
/// untouched (openssl completes it against the backend's own certificate); a connection that is
/// not TLS goes to the default cluster, a malformed ClientHello and one that never completes are
/// closed; every outcome is counted.
#[test]
fn sni_routes_pass_tls_through_to_the_cluster_the_server_name_picks() {
    if !require_peers(&["openssl"]) {
        return;
    }
    let dir = TempDir::new("sni");
    let (api, web, fallback) = (free_port(), free_port(), free_port());
    let mut backends = Vec::new();
    for (cn, port) in [("api", api), ("web", web), ("fallback", fallback)] {
        let (cert, key) = self_signed(&dir, cn);
        let mut p = spawn(
            &dir,
            cn,
            "openssl",
            &[
                "s_server",
                "-accept",
                &format!("127.0.0.1:{port}"),
                "-cert",
                &cert,
                "-key",
                &key,
                "-www",
            ],
        );
        wait_listening(addr(port), &mut p);
        backends.push(p);
    }
    let (listen, slow_listen, admin) = (free_port(), free_port(), free_port());
    let config = format!(
        r#"
admin: {{ address: 127.0.0.1:{admin} }}
listeners:
  - name: tls_in
    address: 127.0.0.1:{listen}
    tcp_proxy:
      cluster: fallback
      sni_routes:
        - {{ server_names: [api.example.com, "*.eu.example.com"], cluster: api }}
        - {{ server_names: ["*.example.com"], cluster: web }}
  - name: tls_slow
    address: 127.0.0.1:{slow_listen}
    tcp_proxy:
      cluster: fallback
      client_hello_timeout: 300ms
      sni_routes: [ {{ server_names: [api.example.com], cluster: api }} ]
clusters:
  - {{ name: api, hosts: [ {{ address: 127.0.0.1:{api} }} ] }}
  - {{ name: web, hosts: [ {{ address: 127.0.0.1:{web} }} ] }}
  - {{ name: fallback, hosts: [ {{ address: 127.0.0.1:{fallback} }} ] }}
"#
    );
    let _s = start_sluice(&dir, &config, 1, addr(listen));

    assert_eq!(served_cn(listen, Some("api.example.com")), "api");
    assert_eq!(served_cn(listen, Some("API.Example.com.")), "api");
    assert_eq!(served_cn(listen, Some("x.eu.example.com")), "api"); // longer wildcard
    assert_eq!(served_cn(listen, Some("www.example.com")), "web");
    assert_eq!(served_cn(listen, Some("example.org")), "fallback");
    assert_eq!(served_cn(listen, None), "fallback");
    // A whole HTTPS exchange through the passthrough (s_server -www answers a status page).
    let out = run(
        "curl",
        &[
            "-sk",
            "--resolve",
            &format!("www.example.com:{listen}:127.0.0.1"),
            &format!("https://www.example.com:{listen}/"),
        ],
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("Ciphers supported in s_server binary"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    // Not TLS: relayed to the default cluster as is (openssl there answers with an alert or
    // closes; what matters is that it got there).
    let mut plain = TcpStream::connect(addr(listen)).unwrap();
    plain
        .write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        .unwrap();
    plain
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let _ = plain.read(&mut [0; 64]);
    // A handshake record that is not a ClientHello (a ServerHello): closed without a byte.
    let mut bad = TcpStream::connect(addr(listen)).unwrap();
    bad.write_all(&[22, 3, 3, 0, 6, 2, 0, 0, 2, 3, 3]).unwrap();
    bad.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    assert_eq!(
        bad.read(&mut [0; 64]).unwrap(),
        0,
        "closed, nothing relayed"
    );
    // The start of a ClientHello and then nothing: closed once client_hello_timeout passes.
    let mut stalled = TcpStream::connect(addr(slow_listen)).unwrap();
    stalled.write_all(&[22, 3, 1, 0, 200, 1]).unwrap();
    stalled
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    assert_eq!(
        stalled.read(&mut [0; 64]).unwrap(),
        0,
        "closed by the timeout"
    );

    let (status, stats) = http_request(addr(admin), "GET", "/stats");
    assert_eq!(status, 200);
    let stat = |name: &str| -> u64 {
        stats
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}: ")))
            .unwrap_or_else(|| panic!("no {name} in /stats:\n{stats}"))
            .trim()
            .parse()
            .unwrap()
    };
    assert_eq!(stat("listener.tls_in.tcp.sni.matched"), 5);
    assert_eq!(stat("listener.tls_in.tcp.sni.unmatched"), 2);
    assert_eq!(stat("listener.tls_in.tcp.sni.not_tls"), 1);
    assert_eq!(stat("listener.tls_in.tcp.sni.invalid"), 1);
    assert_eq!(stat("listener.tls_slow.tcp.sni.timeout"), 1);
}

/// A TCP echo server on `port` (a thread per connection) that waits `pause` before echoing
/// each connection, for the life of the test process.
fn start_slow_echo(port: u16, pause: Duration) {
    let listener = std::net::TcpListener::bind(addr(port)).unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            std::thread::spawn(move || {
                std::thread::sleep(pause);
                let mut reader = conn.try_clone().unwrap();
                let _ = std::io::copy(&mut reader, &mut conn);
                let _ = conn.shutdown(std::net::Shutdown::Write);
            });
        }
    });
}

/// Plaintext sessions are relayed by splice(2) (the default) and, with `splice: false`, by
/// copying: both deliver every byte in order through a half-close, under backpressure (an
/// upstream that reads nothing for 300 ms while 8 MiB are sent), and are counted by mode.
#[test]
fn splice_and_copy_relays_deliver_every_byte_and_are_counted() {
    let dir = TempDir::new("tcp-splice");
    let (echo, spliced, copied, admin) = (free_port(), free_port(), free_port(), free_port());
    start_slow_echo(echo, Duration::from_millis(300));
    let config = format!(
        r#"
admin: {{ address: 127.0.0.1:{admin} }}
listeners:
  - name: spliced
    address: 127.0.0.1:{spliced}
    tcp_proxy: {{ cluster: echo }}
  - name: copied
    address: 127.0.0.1:{copied}
    tcp_proxy: {{ cluster: echo, splice: false }}
clusters:
  - name: echo
    hosts: [ {{ address: 127.0.0.1:{echo} }} ]
"#
    );
    // Ready when the admin API answers (the listeners are bound before it starts): a probe of
    // a proxy listener would be a session of its own.
    let _sluice = start_sluice(&dir, &config, 2, addr(admin));
    let threads: Vec<_> = (0..8u32)
        .map(|i| {
            let port = if i % 2 == 0 { spliced } else { copied };
            std::thread::spawn(move || {
                let len = (8 << 20) + i as usize * 4099;
                let data: Vec<u8> = (0..len)
                    .map(|j| (j as u32).wrapping_mul(2_654_435_761).rotate_left(i) as u8)
                    .collect();
                let got = echo_once(addr(port), &data).unwrap();
                assert_eq!(got.len(), data.len(), "connection {i}: length");
                assert!(got == data, "connection {i}: bytes differ");
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(admin_stat(admin, "server.tcp_relay_spliced"), 4);
    assert_eq!(admin_stat(admin, "server.tcp_relay_copied"), 4);
}

/// Issue 16's one connect path, counted once per attempt by its `tcp_proxy` caller: an
/// upstream that refuses (nothing listens on its port) is tried `max_connect_attempts` times
/// per client connection (default 3, the one host again: there is no other), and each try is
/// exactly one connect failure on the cluster and on the host — none a timeout — while the
/// client's connection is closed. Beside it, an active health check's probes of a refusing
/// host count as `health_check.failure` (the docs' place), never as connect failures.
/// Defaults throughout (no `connect_timeout`, no `max_connect_attempts`, two workers).
#[test]
fn a_refusing_upstream_counts_one_connect_failure_per_attempt_and_none_timed_out() {
    let dir = TempDir::new("tcp-refused");
    let (listen, admin, refusing, probed) = (free_port(), free_port(), free_port(), free_port());
    let config = format!(
        r#"
admin: {{ address: 127.0.0.1:{admin} }}
listeners:
  - name: tcp_in
    address: 127.0.0.1:{listen}
    tcp_proxy: {{ cluster: app }}
clusters:
  - name: app
    hosts: [ {{ address: 127.0.0.1:{refusing} }} ]
  - name: probed
    health_check: {{ tcp: {{}}, interval: 1h, no_traffic_interval: 1h }}
    hosts: [ {{ address: 127.0.0.1:{probed} }} ]
"#
    );
    let _sluice = start_sluice(&dir, &config, 2, addr(listen));
    let stat = |name: &str| admin_stat(admin, name);
    let host = format!("cluster.app.host.127.0.0.1:{refusing}");
    // The start-up probe that waited for the listener was a session too: its three attempts
    // are counted before its connection closed.
    assert!(
        eventually(Duration::from_secs(10), || stat(
            "listener.tcp_in.tcp.closed.connect_failed"
        ) == 1),
        "the start-up probe's session ends connect_failed"
    );
    assert_eq!(stat("cluster.app.upstream_cx_connect_fail"), 3);

    const N: u64 = 5;
    for i in 0..N {
        let mut s = TcpStream::connect(addr(listen)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut rest = Vec::new();
        // Closed once the attempts failed (an EOF, or a reset): nothing relayed.
        let _ = s.read_to_end(&mut rest);
        assert!(rest.is_empty(), "connection {i} got bytes: {rest:?}");
    }
    assert!(
        eventually(Duration::from_secs(10), || stat(
            "listener.tcp_in.tcp.closed.connect_failed"
        ) == N + 1),
        "every session ends connect_failed"
    );
    let attempts = 3 * (N + 1);
    assert_eq!(stat("cluster.app.upstream_rq_total"), N + 1);
    assert_eq!(stat("cluster.app.upstream_cx_total"), attempts);
    assert_eq!(stat("cluster.app.upstream_cx_connect_fail"), attempts);
    assert_eq!(stat("cluster.app.upstream_cx_connect_timeout"), 0);
    assert_eq!(stat(&format!("{host}.cx_connect_fail")), attempts);

    // The health check probed its refusing host once (the first probe, at start; the next
    // is an hour away): one failure where the docs count it, and no connect failure.
    assert!(
        eventually(Duration::from_secs(10), || stat(
            "cluster.probed.health_check.failure"
        ) == 1),
        "the first probe fails"
    );
    assert_eq!(stat("cluster.probed.health_check.attempt"), 1);
    assert_eq!(stat("cluster.probed.health_check.success"), 0);
    assert_eq!(stat("cluster.probed.upstream_cx_connect_fail"), 0);
    assert_eq!(stat("cluster.probed.upstream_cx_connect_timeout"), 0);
    assert_eq!(
        stat(&format!(
            "cluster.probed.host.127.0.0.1:{probed}.cx_connect_fail"
        )),
        0
    );
}
