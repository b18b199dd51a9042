//! DNS clusters end to end: a `strict_dns` cluster on `localhost:PORT` through the system's
//! resolver (`getaddrinfo`), with the defaults a user gets; a name that does not resolve
//! (counted, answered 503 `UH`); a name in a static cluster refused by `sluice validate` with
//! its line and "use type: strict_dns"; a tcp_proxy over a DNS cluster; `respect_dns_ttl`
//! following a 1 s TTL, against a DNS server of the test's in a network namespace.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::process::Command;
use std::time::Duration;

use support::*;

/// An HTTP/1.1 upstream answering every request `200 body` on `port`, on 127.0.0.1 and, when the
/// machine has it, on [::1] (so that `localhost` works whichever address it resolves to).
fn backend(port: u16, body: &'static str) {
    let mut sockets = vec![TcpListener::bind(addr(port)).unwrap()];
    if let Ok(l) = TcpListener::bind(SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, port))) {
        sockets.push(l);
    }
    for l in sockets {
        std::thread::spawn(move || {
            for s in l.incoming() {
                let Ok(mut s) = s else { continue };
                std::thread::spawn(move || {
                    let mut head = Vec::new();
                    let mut byte = [0u8; 1];
                    while !head.ends_with(b"\r\n\r\n") {
                        match s.read(&mut byte) {
                            Ok(1) => head.push(byte[0]),
                            _ => return,
                        }
                    }
                    let _ = s.write_all(
                        format!(
                            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                            body.len()
                        )
                        .as_bytes(),
                    );
                });
            }
        });
    }
}

fn admin_get(port: u16, path: &str) -> (u16, String) {
    http_request(addr(port), "GET", path)
}

/// The first listener routes to cluster `local` (`localhost:UP`), the second to `nowhere` (a
/// name under `.invalid`, which never exists: RFC 6761); defaults everywhere else.
fn config(ports: [u16; 7]) -> String {
    let [listen, listen_bad, tcp, admin, up, checked, logical] = ports;
    format!(
        r#"
admin: {{ address: 127.0.0.1:{admin} }}
listeners:
  - name: web
    address: 127.0.0.1:{listen}
    http:
      virtual_hosts:
        - name: all
          domains: ["*"]
          routes: [ {{ match: {{ prefix: / }}, route: {{ cluster: local }} }} ]
  - name: bad
    address: 127.0.0.1:{listen_bad}
    http:
      virtual_hosts:
        - name: all
          domains: ["*"]
          routes: [ {{ match: {{ prefix: / }}, route: {{ cluster: nowhere }} }} ]
  - name: tcp
    address: 127.0.0.1:{tcp}
    tcp_proxy: {{ cluster: local }}
  - name: checked
    address: 127.0.0.1:{checked}
    tcp_proxy: {{ cluster: checked }}
  - name: logical
    address: 127.0.0.1:{logical}
    tcp_proxy: {{ cluster: logical }}
clusters:
  - name: local
    type: strict_dns
    hosts: [ {{ address: "localhost:{up}" }} ]
  - name: nowhere
    type: strict_dns
    hosts: [ {{ address: "nowhere.invalid:80" }} ]
  - name: checked
    type: strict_dns
    health_check: {{ tcp: {{}}, interval: 1s, no_traffic_interval: 1s }}
    hosts: [ {{ address: "localhost:{up}" }} ]
  - name: logical
    type: logical_dns
    hosts: [ {{ address: "localhost:{up}" }} ]
"#
    )
}

#[test]
fn a_strict_dns_cluster_serves_what_its_name_resolves_to_and_a_dead_name_is_counted() {
    if !require_peers(&[]) {
        return;
    }
    let dir = TempDir::new("dns");
    let ports = [(); 7].map(|()| free_port());
    let [listen, listen_bad, tcp, admin, up, checked, logical] = ports;
    backend(up, "from-localhost");
    let _sluice = start_sluice(&dir, &config(ports), 2, addr(listen));

    // No warming: until the first answer the cluster has no host (503); then it has.
    assert!(
        eventually(Duration::from_secs(20), || http_request(
            addr(listen),
            "GET",
            "/"
        )
        .0 == 200),
        "the cluster never got localhost's address"
    );
    for _ in 0..10 {
        assert_eq!(
            http_request(addr(listen), "GET", "/"),
            (200, "from-localhost".to_owned())
        );
    }
    // tcp_proxy over the same cluster.
    let mut s = std::net::TcpStream::connect(addr(tcp)).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n").unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    assert!(
        answer.starts_with("HTTP/1.1 200") && answer.ends_with("from-localhost"),
        "{answer}"
    );

    // The admin API shows the name and what it resolved to.
    let (status, body) = admin_get(admin, "/clusters?format=json");
    assert_eq!(status, 200, "{body}");
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    let local = &json["clusters"][0];
    assert_eq!(local["type"], "strict_dns", "{local}");
    assert_eq!(local["dns"][0]["name"], "localhost", "{local}");
    let mine = [format!("127.0.0.1:{up}"), format!("[::1]:{up}")];
    let hosts = local["hosts"].as_array().unwrap();
    assert!(!hosts.is_empty(), "{local}");
    for h in hosts {
        assert!(mine.iter().any(|m| h["address"] == m.as_str()), "{local}");
    }
    let (_, text) = admin_get(admin, "/clusters");
    assert!(text.contains("local::dns::localhost:"), "{text}");
    assert!(admin_stat(admin, "cluster.local.upstream_dns.resolutions") >= 1);
    assert_eq!(admin_stat(admin, "cluster.local.upstream_dns.failures"), 0);

    // A name that does not exist: counted, and its requests answered 503 (no host). The
    // resolver says NXDOMAIN (`EAI_NONAME`): an answer with no address, as in Envoy (counted
    // as a resolution); where no resolver can be reached (`EAI_AGAIN`) it is a failure.
    let nowhere_counted = || {
        admin_stat(admin, "cluster.nowhere.upstream_dns.resolutions")
            + admin_stat(admin, "cluster.nowhere.upstream_dns.failures")
            >= 1
    };
    assert!(
        eventually(Duration::from_secs(20), nowhere_counted),
        "the resolution of the name that does not exist was not counted"
    );
    let (status, _) = http_request(addr(listen_bad), "GET", "/");
    assert_eq!(status, 503);
    // A health-checked DNS cluster: its resolved host is probed and found healthy.
    let checked_health = || {
        let (_, body) = admin_get(admin, "/clusters?format=json");
        let json: serde_json::Value = serde_json::from_str(&body).unwrap();
        json["clusters"][2]["hosts"][0]["health"] == "healthy"
    };
    assert!(
        eventually(Duration::from_secs(20), checked_health),
        "the resolved host of the checked cluster never passed its probe"
    );
    assert!(admin_stat(admin, "cluster.checked.health_check.success") >= 1);
    let mut s = std::net::TcpStream::connect(addr(checked)).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n").unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    assert!(answer.ends_with("from-localhost"), "{answer}");

    // logical_dns: one host, the first address of the answer.
    let logical_answers = || {
        let Ok(mut s) = std::net::TcpStream::connect(addr(logical)) else {
            return false;
        };
        let _ = s.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n");
        let mut answer = String::new();
        let _ = s.read_to_string(&mut answer);
        answer.ends_with("from-localhost")
    };
    assert!(eventually(Duration::from_secs(20), logical_answers));
    let (_, body) = admin_get(admin, "/clusters?format=json");
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    let logical = &json["clusters"][3];
    assert_eq!(logical["type"], "logical_dns", "{logical}");
    assert_eq!(
        logical["hosts"].as_array().map(Vec::len),
        Some(1),
        "{logical}"
    );

    let (_, prom) = admin_get(admin, "/stats/prometheus");
    assert!(
        prom.contains("sluice_upstream_dns_failures_total{cluster=\"nowhere\"}"),
        "{prom}"
    );
}

/// A DNS name in a static cluster is a validation error at its line, which says what to do.
#[test]
fn a_name_in_a_static_cluster_is_refused_with_its_line_and_what_to_use() {
    if !require_peers(&[]) {
        return;
    }
    let dir = TempDir::new("dns-validate");
    let path = dir.write(
        "static.yaml",
        "listeners:\n  - { name: a, address: 127.0.0.1:1000, tcp_proxy: { cluster: c } }\n\
         clusters:\n  - name: c\n    hosts:\n      - { address: \"backend.default.svc.cluster.local:8080\" }\n",
    );
    let out = Command::new(sluice_bin())
        .args(["validate", path.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let file = path.display();
    assert!(
        stderr.contains(&format!("{file}:6:")) && stderr.contains("clusters[0].hosts[0].address"),
        "{stderr}"
    );
    assert!(stderr.contains("use type: strict_dns"), "{stderr}");

    // The same with `type: strict_dns` is valid.
    let ok = dir.write(
        "dns.yaml",
        "listeners:\n  - { name: a, address: 127.0.0.1:1000, tcp_proxy: { cluster: c } }\n\
         clusters:\n  - name: c\n    type: strict_dns\n    hosts:\n      - { address: \"backend.default.svc.cluster.local:8080\" }\n",
    );
    let out = Command::new(sluice_bin())
        .args(["validate", ok.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
}

/// A reload keeps an unchanged DNS cluster's hosts (ids, per-host counters) and starts a
/// changed one over.
#[test]
fn a_reload_keeps_the_hosts_of_an_unchanged_dns_cluster() {
    if !require_peers(&[]) {
        return;
    }
    let dir = TempDir::new("dns-reload");
    let [listen, admin, up] = [(); 3].map(|()| free_port());
    backend(up, "from-localhost");
    let config = |version: &str, other_refresh: &str| {
        format!(
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
            - {{ match: {{ path: /version }}, direct_response: {{ status: 200, body: {version} }} }}
            - {{ match: {{ prefix: /other }}, route: {{ cluster: other }} }}
            - {{ match: {{ prefix: / }}, route: {{ cluster: local }} }}
clusters:
  - name: local
    type: strict_dns
    hosts: [ {{ address: "localhost:{up}" }} ]
  - name: other
    type: strict_dns
    dns_refresh_rate: {other_refresh}
    hosts: [ {{ address: "localhost:{up}" }} ]
"#
        )
    };
    let path = dir.write("sluice.yaml", &config("one", "5s"));
    let mut p = spawn(
        &dir,
        "sluice",
        sluice_bin(),
        &["run", "-c", path.to_str().unwrap(), "--workers", "2"],
    );
    wait_listening(addr(listen), &mut p);
    assert!(eventually(Duration::from_secs(20), || {
        http_request(addr(listen), "GET", "/").0 == 200
            && http_request(addr(listen), "GET", "/other").0 == 200
    }));
    for _ in 0..5 {
        assert_eq!(http_request(addr(listen), "GET", "/").0, 200);
        assert_eq!(http_request(addr(listen), "GET", "/other").0, 200);
    }
    let rq_total = |cluster: usize| {
        let (_, body) = admin_get(admin, "/clusters?format=json");
        let json: serde_json::Value = serde_json::from_str(&body).unwrap();
        json["clusters"][cluster]["hosts"][0]["rq_total"]
            .as_u64()
            .unwrap_or(0)
    };
    assert!(rq_total(0) >= 5 && rq_total(1) >= 5);

    // `local` unchanged, `other` changed (its refresh rate).
    std::fs::write(&path, config("two", "7s")).unwrap();
    let (status, body) = http_request(addr(admin), "POST", "/reload");
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        http_request(addr(listen), "GET", "/version"),
        (200, "two".into())
    );
    // The unchanged cluster serves at once and its host kept its counters.
    assert_eq!(http_request(addr(listen), "GET", "/").0, 200);
    assert!(rq_total(0) >= 6, "local's host lost its counters");
    // The changed one resolved again: a new host, counting from 0.
    assert!(eventually(Duration::from_secs(20), || {
        http_request(addr(listen), "GET", "/other").0 == 200
    }));
    assert!(rq_total(1) < 5, "other was not started over");
}

/// An HTTP server answering every GET with `body`, on `ip:port` (run inside a namespace).
const NAMED_HTTP_SERVER: &str = r#"
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        b = sys.argv[3].encode()
        self.send_response(200)
        self.send_header("content-length", str(len(b)))
        self.end_headers()
        self.wfile.write(b)
    def log_message(self, *a):
        pass
http.server.ThreadingHTTPServer((sys.argv[1], int(sys.argv[2])), H).serve_forever()
"#;

/// `respect_dns_ttl`: the name is resolved again when its answer's TTL (1 s here) runs out, not
/// at `dns_refresh_rate` (1 h here), so a changed answer is followed within seconds. The name
/// is served by a DNS server of the test's (`tests/dns/dns_server.py`) on port 53 of a network
/// namespace whose `resolv.conf` names it; Sluice runs in that namespace. (With the system's
/// resolver, which reports no TTL, the change would wait an hour.)
#[test]
fn respect_dns_ttl_follows_the_answers_ttl() {
    use support::netns::{self, Netns, in_ns, ip, spawn_in, wait_listening_in};
    if !netns::can_run("e2e_dns", &["ip", "python3", "curl"]) {
        return;
    }
    let dir = TempDir::new("dns-ttl");
    let ns = Netns::new(format!("sl-dnsttl-{}", std::process::id()));
    ip(&["-n", &ns.0, "link", "set", "lo", "up"]);
    ns.etc_file(
        "resolv.conf",
        "nameserver 127.0.0.1\noptions timeout:1 attempts:2\n",
    );
    let answers = dir.path().join("answers");
    let queries = dir.path().join("queries");
    std::fs::write(&answers, "127.0.0.1\n").unwrap();
    let script = repo().join("tests/dns/dns_server.py");
    let mut dns = spawn_in(
        &dir,
        &ns,
        "dns",
        "python3",
        &[
            script.to_str().unwrap(),
            "127.0.0.1",
            "53",
            answers.to_str().unwrap(),
            "1",
            queries.to_str().unwrap(),
        ],
    );
    let end = std::time::Instant::now() + Duration::from_secs(10);
    while !dns.log_text().contains("listening") {
        assert!(
            std::time::Instant::now() < end,
            "dns server: {}",
            dns.log_text()
        );
        assert!(
            dns.child.try_wait().unwrap().is_none(),
            "{}",
            dns.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut upstreams = Vec::new();
    for (ip, body) in [("127.0.0.1", "one"), ("127.0.0.2", "two")] {
        let mut p = spawn_in(
            &dir,
            &ns,
            body,
            "python3",
            &["-c", NAMED_HTTP_SERVER, ip, "8081", body],
        );
        wait_listening_in(&ns, ip, 8081, &mut p);
        upstreams.push(p);
    }
    let config = dir.write(
        "sluice.yaml",
        r#"
listeners:
  - name: web
    address: 127.0.0.1:8080
    http:
      virtual_hosts:
        - name: any
          domains: ["*"]
          routes: [ { match: { prefix: / }, route: { cluster: svc } } ]
clusters:
  - name: svc
    type: strict_dns
    respect_dns_ttl: true
    dns_refresh_rate: 1h
    hosts: [ { address: svc.sluice.test:8081 } ]
"#,
    );
    let mut sluice = spawn_in(
        &dir,
        &ns,
        "sluice",
        sluice_bin(),
        &["run", "-c", config.to_str().unwrap(), "--workers", "1"],
    );
    wait_listening_in(&ns, "127.0.0.1", 8080, &mut sluice);
    let get = || {
        let out = in_ns(
            &ns,
            "curl",
            &["-sS", "--max-time", "5", "http://127.0.0.1:8080/"],
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    // Until `want` answers (the first resolution, then the changed one), within `within`.
    let answers_within = |want: &str, within: Duration| {
        let end = std::time::Instant::now() + within;
        loop {
            let got = get();
            if got == want {
                return;
            }
            assert!(
                std::time::Instant::now() < end,
                "still {got:?}, not {want:?}; queries:\n{}\nsluice:\n{}",
                std::fs::read_to_string(&queries).unwrap_or_default(),
                sluice.log_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    answers_within("one", Duration::from_secs(10));
    std::fs::write(&answers, "127.0.0.2\n").unwrap();
    answers_within("two", Duration::from_secs(15));
    let asked = std::fs::read_to_string(&queries).unwrap_or_default();
    assert!(
        asked.lines().filter(|l| *l == "A svc.sluice.test").count() >= 2,
        "{asked}"
    );
}
