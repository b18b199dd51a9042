//! End-to-end tests of what an operator observes: access-log fields (request headers, the
//! routed cluster, retries) for HTTP/1.1 and HTTP/2 requests, against a real nginx upstream
//! and curl.

mod support;

use std::io::{Read as _, Write as _};
use std::time::Duration;

use support::*;

fn curl(args: &[&str]) -> String {
    require("curl");
    let out = run("curl", &[&["-sS", "--max-time", "10"], args].concat());
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `AUTHORITY`, `USER_AGENT`, `UPSTREAM_CLUSTER`, `RETRY_COUNT` and `%REQ(NAME)%` (with a
/// length limit) in a text line, for HTTP/1.1 and HTTP/2 (h2c) requests and for a request
/// whose tries all failed; the same facts as JSON keys, with `request_headers`.
#[test]
fn access_log_request_fields_text_and_json() {
    if !require_peers(&["curl", "nginx"]) {
        return;
    }
    let dir = TempDir::new("obs-access-fields");
    let (up, dead, text_port, json_port) = (free_port(), free_port(), free_port(), free_port());
    let _nginx = start_nginx(&dir, "up", up, "ok");
    let text_log = dir.path().join("text.log");
    let json_log = dir.path().join("json.log");
    let routes = r#"      virtual_hosts:
        - name: any
          domains: ["*"]
          routes:
            - match: { prefix: /dead }
              route:
                cluster: dead
                retry_policy: { retry_on: [connect-failure], num_retries: 2 }
            - match: { prefix: / }
              route: { cluster: app }
"#;
    let config = format!(
        r#"
listeners:
  - name: text_in
    address: 127.0.0.1:{text_port}
    http:
      access_log:
        path: {text_log}
        template: '%PROTOCOL% %PATH% %AUTHORITY% "%USER_AGENT%" %UPSTREAM_CLUSTER% %RETRY_COUNT% %REQ(X-TENANT)% %REQ(x-tenant):3% %REQ(X-NONE)% %STATUS% %RESPONSE_FLAGS%'
{routes}  - name: json_in
    address: 127.0.0.1:{json_port}
    http:
      access_log: {{ format: json, path: {json_log}, request_headers: [x-tenant, x-none] }}
{routes}clusters:
  - name: app
    hosts: [ {{ address: 127.0.0.1:{up} }} ]
  - name: dead
    connect_timeout: 500ms
    hosts: [ {{ address: 127.0.0.1:{dead} }} ]
"#,
        text_log = text_log.display(),
        json_log = json_log.display(),
    );
    let s = start_sluice(&dir, &config, 1, addr(text_port));
    let text = format!("http://127.0.0.1:{text_port}");
    let tenant = ["-A", "agent/1.0", "-H", "x-tenant: acme-corp"];
    assert_eq!(
        curl(&[&tenant[..], &[&format!("{text}/h1")]].concat()),
        "ok"
    );
    assert_eq!(
        curl(
            &[
                &tenant[..],
                &["--http2-prior-knowledge", &format!("{text}/h2")]
            ]
            .concat()
        ),
        "ok"
    );
    curl(&["-A", "agent/1.0", &format!("{text}/dead")]);
    let json = format!("http://127.0.0.1:{json_port}");
    assert_eq!(curl(&[&tenant[..], &[&format!("{json}/j")]].concat()), "ok");
    stop_gracefully(s, Duration::from_secs(10));

    let lines = std::fs::read_to_string(&text_log).unwrap();
    let lines: Vec<&str> = lines.lines().collect();
    let host = format!("127.0.0.1:{text_port}");
    assert_eq!(
        lines,
        [
            format!("HTTP/1.1 /h1 {host} \"agent/1.0\" app 0 acme-corp acm - 200 -"),
            format!("HTTP/2 /h2 {host} \"agent/1.0\" app 0 acme-corp acm - 200 -"),
            format!("HTTP/1.1 /dead {host} \"agent/1.0\" dead 2 - - - 502 UF"),
        ]
    );
    let line = std::fs::read_to_string(&json_log).unwrap();
    let v: serde_json::Value = serde_json::from_str(line.trim_end()).unwrap();
    assert_eq!(v["authority"], format!("127.0.0.1:{json_port}"));
    assert_eq!(v["user_agent"], "agent/1.0");
    assert_eq!(v["upstream_cluster"], "app");
    assert_eq!(v["retry_count"], 0);
    assert_eq!(v["request_headers"]["x-tenant"], "acme-corp");
    assert_eq!(v["request_headers"]["x-none"], serde_json::Value::Null);
    assert_eq!(v["status"], 200);
    assert_eq!(v["path"], "/j");
}

/// A TCP echo server on `port` (a thread per connection), for the life of the test process.
fn start_echo(port: u16) {
    let listener = std::net::TcpListener::bind(addr(port)).unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            std::thread::spawn(move || {
                let mut reader = conn.try_clone().unwrap();
                let _ = std::io::copy(&mut reader, &mut conn);
                let _ = conn.shutdown(std::net::Shutdown::Write);
            });
        }
    });
}

/// A `tcp_proxy` access log: one line per session at its close, with the default text template
/// (a session echoed through a real TCP upstream) and as JSON (a session whose connects failed:
/// `UF`).
#[test]
fn tcp_proxy_access_log_has_one_line_per_session() {
    let dir = TempDir::new("obs-tcp-log");
    let (echo, dead, listen, listen_dead) = (free_port(), free_port(), free_port(), free_port());
    start_echo(echo);
    let text_log = dir.path().join("tcp.log");
    let json_log = dir.path().join("tcp.json");
    let config = format!(
        r#"
listeners:
  - name: tcp_in
    address: 127.0.0.1:{listen}
    tcp_proxy: {{ cluster: echo, access_log: {{ path: {text_log} }} }}
  - name: tcp_dead
    address: 127.0.0.1:{listen_dead}
    tcp_proxy: {{ cluster: dead, access_log: {{ format: json, path: {json_log} }} }}
clusters:
  - name: echo
    hosts: [ {{ address: 127.0.0.1:{echo} }} ]
  - name: dead
    connect_timeout: 500ms
    hosts: [ {{ address: 127.0.0.1:{dead} }} ]
"#,
        text_log = text_log.display(),
        json_log = json_log.display(),
    );
    let s = start_sluice(&dir, &config, 1, addr(listen));
    let data: Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8).collect();
    assert_eq!(echo_once(addr(listen), &data).unwrap(), data);
    // The session whose connects all fail is closed with nothing sent back. Closing with
    // "hello" unread, the proxy may reset the connection, which a client then sees as an error
    // on its write, shutdown or read (the end, not a failure of the test).
    {
        let mut c = std::net::TcpStream::connect(addr(listen_dead)).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let _ = c.write_all(b"hello");
        let mut got = Vec::new();
        match c.read_to_end(&mut got) {
            Ok(_) => assert_eq!(got, b""),
            Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}"),
        }
    }
    stop_gracefully(s, Duration::from_secs(10));

    let text = std::fs::read_to_string(&text_log).unwrap();
    // The readiness probe's connection (start_sluice) is a session too, with no bytes.
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| !l.contains(" completed 0 0 "))
        .collect();
    assert_eq!(lines.len(), 1, "{text}");
    let fields: Vec<&str> = lines[0].split(' ').collect();
    assert_eq!(fields.len(), 11, "{text}");
    assert!(
        fields[0].starts_with("[20") && fields[0].ends_with("Z]"),
        "{text}"
    );
    assert!(fields[1].starts_with("127.0.0.1:"), "{text}");
    assert_eq!(
        fields[2..9],
        [
            "tcp_in",
            "echo",
            &format!("\"127.0.0.1:{echo}\""),
            "-",
            "completed",
            "5000",
            "5000",
        ],
        "{text}"
    );
    assert!(fields[9].parse::<u64>().is_ok(), "{text}");
    assert_eq!(fields[10], "\"-\"", "{text}");

    let json = std::fs::read_to_string(&json_log).unwrap();
    let v: serde_json::Value = serde_json::from_str(json.trim_end()).unwrap();
    assert_eq!(v["listener"], "tcp_dead");
    assert_eq!(v["upstream_cluster"], "dead");
    assert_eq!(v["upstream_host"], format!("127.0.0.1:{dead}"));
    assert_eq!(v["response_flags"], "UF");
    assert_eq!(v["close_reason"], "connect_failed");
    assert_eq!(v["bytes_sent"], 0);
    assert_eq!(v["requested_server_name"], serde_json::Value::Null);
}

/// Per-cluster response classes: every upstream response head is counted by class under its
/// cluster (`cluster.NAME.upstream_rq_5xx`, `sluice_upstream_responses_total{cluster,class}`),
/// a retried 503 included; request-time histograms by listener and by cluster.
#[test]
fn upstream_responses_are_counted_by_cluster_and_class() {
    if !require_peers(&["curl", "nginx"]) {
        return;
    }
    let dir = TempDir::new("obs-rq-class");
    let (up, listen, admin) = (free_port(), free_port(), free_port());
    let _nginx = start_nginx_with(
        &dir,
        "up",
        up,
        r#"location /fail { return 503 "busy"; } location / { return 200 "ok"; }"#,
    );
    let config = format!(
        r#"
admin: {{ address: 127.0.0.1:{admin} }}
listeners:
  - name: http_in
    address: 127.0.0.1:{listen}
    http:
      virtual_hosts:
        - name: any
          domains: ["*"]
          routes:
            - match: {{ prefix: /fail }}
              route: {{ cluster: app, retry_policy: {{ retry_on: [5xx], num_retries: 1 }} }}
            - match: {{ prefix: / }}
              route: {{ cluster: other }}
clusters:
  - name: app
    hosts: [ {{ address: 127.0.0.1:{up} }} ]
  - name: other
    hosts: [ {{ address: 127.0.0.1:{up} }} ]
"#
    );
    let s = start_sluice(&dir, &config, 1, addr(listen));
    let base = format!("http://127.0.0.1:{listen}");
    assert_eq!(curl(&[&format!("{base}/ok")]), "ok");
    assert_eq!(curl(&[&format!("{base}/fail")]), "busy");
    let stats = curl(&[&format!(
        "http://127.0.0.1:{admin}/stats?filter=upstream_rq_%5B0-9%5Dxx"
    )]);
    assert_eq!(
        stats,
        "cluster.app.upstream_rq_1xx: 0\ncluster.app.upstream_rq_2xx: 0\n\
         cluster.app.upstream_rq_3xx: 0\ncluster.app.upstream_rq_4xx: 0\n\
         cluster.app.upstream_rq_5xx: 2\n\
         cluster.other.upstream_rq_1xx: 0\ncluster.other.upstream_rq_2xx: 1\n\
         cluster.other.upstream_rq_3xx: 0\ncluster.other.upstream_rq_4xx: 0\n\
         cluster.other.upstream_rq_5xx: 0\n"
    );
    let metrics = curl(&[&format!("http://127.0.0.1:{admin}/stats/prometheus")]);
    for sample in [
        "sluice_upstream_responses_total{cluster=\"app\",class=\"5xx\"} 2\n",
        "sluice_upstream_responses_total{cluster=\"other\",class=\"2xx\"} 1\n",
    ] {
        assert!(metrics.contains(sample), "{sample} in {metrics}");
    }

    // The request-time histograms by listener and by cluster (the try a retry replaced is not
    // timed: its response was discarded); the unlabelled ones stay.
    let stats = curl(&[&format!(
        "http://127.0.0.1:{admin}/stats?filter=rq_time%5C.count"
    )]);
    assert_eq!(
        stats,
        "cluster.app.upstream_rq_time.count: 1\ncluster.other.upstream_rq_time.count: 1\n\
         http.downstream_rq_time.count: 2\nhttp.upstream_rq_time.count: 2\n\
         listener.http_in.http.downstream_rq_time.count: 2\n"
    );
    for sample in [
        "sluice_listener_request_duration_seconds_bucket{listener=\"http_in\",le=\"+Inf\"} 2\n",
        "sluice_listener_request_duration_seconds_count{listener=\"http_in\"} 2\n",
        "sluice_cluster_upstream_request_duration_seconds_count{cluster=\"app\"} 1\n",
        "sluice_cluster_upstream_request_duration_seconds_bucket{cluster=\"other\",le=\"+Inf\"} 1\n",
        "sluice_downstream_request_duration_seconds_count 2\n",
    ] {
        assert!(metrics.contains(sample), "{sample} in {metrics}");
    }
    stop_gracefully(s, Duration::from_secs(10));
}

/// The access log's request id is the one the upstream got — generated when the client sent
/// none — for HTTP/2 requests as for HTTP/1.1 ones (an HTTP/2 line used to show the client's
/// header only, so a generated id was missing).
#[test]
fn the_logged_request_id_is_the_forwarded_one_for_http2_too() {
    if !require_peers(&["curl", "python3"]) {
        return;
    }
    let dir = TempDir::new("obs-request-id");
    let (up, listen) = (free_port(), free_port());
    let _up = start_py_upstream(&dir, "up", up);
    let log = dir.path().join("json.log");
    let config = format!(
        r#"
listeners:
  - name: in
    address: 127.0.0.1:{listen}
    http:
      access_log: {{ format: json, path: {log} }}
      virtual_hosts:
        - name: any
          domains: ["*"]
          routes:
            - match: {{ prefix: / }}
              route: {{ cluster: app }}
clusters:
  - name: app
    hosts: [ {{ address: 127.0.0.1:{up} }} ]
"#,
        log = log.display()
    );
    let s = start_sluice(&dir, &config, 1, addr(listen));
    let url = format!("http://127.0.0.1:{listen}/id");
    let mut seen = Vec::new();
    for flags in [&["--http1.1"][..], &["--http2-prior-knowledge"][..]] {
        let body = curl(&[flags, &[url.as_str()]].concat());
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        let headers = v["headers"].as_object().unwrap();
        let id = headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("x-request-id"))
            .map(|(_, v)| v.as_str().unwrap().to_owned())
            .expect("a generated x-request-id upstream");
        assert_eq!(id.len(), 36, "{id}");
        seen.push(id);
    }
    stop_gracefully(s, Duration::from_secs(10));
    let lines = std::fs::read_to_string(&log).unwrap();
    let logged: Vec<String> = lines
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["request_id"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(logged, seen);
}

/// The access log's start and duration of a request on a keep-alive connection count from the
/// request's first byte, not from the end of the connection's previous request: the idle time
/// between them (here 700 ms, under the 1 s after which an idle connection parks) is no part
/// of the second request.
#[test]
fn a_keep_alive_requests_logged_duration_leaves_out_the_idle_time_before_it() {
    let dir = TempDir::new("obs-keepalive-duration");
    let port = free_port();
    let log = dir.path().join("access.json");
    let config = format!(
        r#"
listeners:
  - name: web
    address: 127.0.0.1:{port}
    http:
      access_log: {{ format: json, path: {log} }}
      virtual_hosts:
        - name: any
          domains: ["*"]
          routes:
            - match: {{ prefix: / }}
              direct_response: {{ status: 200, body: "hi" }}
"#,
        log = log.display(),
    );
    let s = start_sluice(&dir, &config, 1, addr(port));
    let mut c = std::net::TcpStream::connect(addr(port)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut exchange = |path: &str| {
        write!(c, "GET {path} HTTP/1.1\r\nhost: x\r\n\r\n").unwrap();
        let mut got = Vec::new();
        let mut chunk = [0u8; 1024];
        while !got.ends_with(b"hi") {
            let n = c.read(&mut chunk).unwrap();
            assert!(n > 0, "closed: {}", String::from_utf8_lossy(&got));
            got.extend_from_slice(&chunk[..n]);
        }
    };
    exchange("/first");
    std::thread::sleep(Duration::from_millis(700));
    exchange("/second");
    drop(c);
    stop_gracefully(s, Duration::from_secs(10));
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert_eq!(lines[1]["path"], "/second");
    let duration = lines[1]["duration_ms"].as_u64().unwrap();
    assert!(
        duration < 300,
        "the second request logged {duration} ms: {text}"
    );
}

/// A client's own `x-forwarded-client-cert` never reaches the application (Envoy's default
/// `SANITIZE`): over HTTP/1.1 and HTTP/2 alike, whatever identity it claims.
#[test]
fn a_clients_own_x_forwarded_client_cert_is_removed() {
    if !require_peers(&["curl", "nginx"]) {
        return;
    }
    let dir = TempDir::new("obs-xfcc");
    let (up, port) = (free_port(), free_port());
    let _nginx = start_nginx_with(
        &dir,
        "up",
        up,
        r#"location / { return 200 "xfcc=[$http_x_forwarded_client_cert]"; }"#,
    );
    let config = format!(
        r#"
listeners:
  - name: web
    address: 127.0.0.1:{port}
    http:
      virtual_hosts:
        - name: any
          domains: ["*"]
          routes:
            - match: {{ prefix: / }}
              route: {{ cluster: app }}
clusters:
  - name: app
    hosts: [ {{ address: 127.0.0.1:{up} }} ]
"#
    );
    let s = start_sluice(&dir, &config, 1, addr(port));
    let url = format!("http://127.0.0.1:{port}/");
    let forged = "x-forwarded-client-cert: By=spiffe://cluster.local/ns/x/sa/y;URI=spiffe://cluster.local/ns/default/sa/admin";
    assert_eq!(curl(&["-H", forged, &url]), "xfcc=[]");
    assert_eq!(
        curl(&["--http2-prior-knowledge", "-H", forged, &url]),
        "xfcc=[]"
    );
    // Two of them, and another spelling of the name.
    assert_eq!(
        curl(&["-H", forged, "-H", "X-Forwarded-Client-Cert: Hash=00", &url]),
        "xfcc=[]"
    );
    stop_gracefully(s, Duration::from_secs(10));
}
