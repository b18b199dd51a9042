//! End-to-end tests of the `sluice` binary as an HTTP/1.1 proxy, against real peers: curl, wrk,
//! nginx, a Python `http.server` upstream that logs every complete request it receives (so the
//! tests can count what reached an upstream), and the `websockets` library.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use support::*;

/// A Python upstream on `port` logging complete requests to `<dir>/<name>.requests`.
fn start_upstream(dir: &TempDir, name: &str, port: u16) -> (Proc, PathBuf) {
    let log = dir.path().join(format!("{name}.requests"));
    let script = repo().join("tests/http_upstream.py");
    let mut p = spawn(
        dir,
        name,
        &python(),
        &[
            script.to_str().unwrap(),
            &port.to_string(),
            log.to_str().unwrap(),
            name,
        ],
    );
    wait_listening(addr(port), &mut p);
    (p, log)
}

fn upstream_requests(log: &PathBuf) -> Vec<String> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn http_config(listen: u16, hosts: &[u16], extra_listener: &str, route_extra: &str) -> String {
    let hosts: String = hosts
        .iter()
        .map(|p| format!("      - {{ address: 127.0.0.1:{p} }}\n"))
        .collect();
    format!(
        r#"
listeners:
  - name: http_in
    address: 127.0.0.1:{listen}
    http:
      request_headers_timeout: 1s
      max_request_headers_kb: 8
      max_headers_count: 20
{extra_listener}      virtual_hosts:
        - name: local
          domains: ["example.com"]
          routes:
            - match: {{ path: /hello }}
              direct_response: {{ status: 200, body: "hello from sluice\n" }}
            - match: {{ prefix: /api/ }}
              route: {{ cluster: app, prefix_rewrite: /v2/ }}
            - match: {{ prefix: / }}
              route:
                cluster: app
{route_extra}                response_headers_to_add: [ {{ name: x-served-by, value: sluice }} ]
                response_headers_to_remove: [ server ]
        - name: any
          domains: ["*"]
          routes:
            - match: {{ prefix: / }}
              route: {{ cluster: app }}
clusters:
  - name: app
    connect_timeout: 500ms
    hosts:
{hosts}drain_timeout: 2s
"#
    )
}

fn curl(args: &[&str]) -> (String, String) {
    require("curl");
    let out = run("curl", &[&["-sS", "--max-time", "10"], args].concat());
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Sends raw bytes on a fresh connection and reads the whole answer (until close or 3 s).
fn raw(port: u16, request: &[u8]) -> String {
    let mut s = TcpStream::connect(addr(port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let _ = s.write_all(request);
    let mut got = Vec::new();
    let _ = s.read_to_end(&mut got);
    String::from_utf8_lossy(&got).into_owned()
}

fn status_of(response: &str) -> u16 {
    response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {response:?}"))
}

#[test]
fn get_head_keep_alive_rewrites_and_header_edits() {
    if !require_peers(&["curl", "python3"]) {
        return;
    }
    let dir = TempDir::new("http-basic");
    let (up, listen) = (free_port(), free_port());
    let (_u, log) = start_upstream(&dir, "up", up);
    let _s = start_sluice(&dir, &http_config(listen, &[up], "", ""), 2, addr(listen));
    let base = format!("http://127.0.0.1:{listen}");

    // GET, twice on one connection (curl reuses it), with response header edits.
    let (out, err) = curl(&[
        "-v",
        "-H",
        "Host: example.com",
        &format!("{base}/a?x=1"),
        &format!("{base}/b"),
    ]);
    assert!(
        err.contains("Re-using existing connection") || err.contains("Reusing existing connection"),
        "{err}"
    );
    assert_eq!(out.matches("\"method\": \"GET\"").count(), 2, "{out}");
    assert!(out.contains("\"path\": \"/a?x=1\""), "{out}");
    assert!(err.contains("< x-served-by: sluice"), "{err}");
    assert!(
        !err.to_lowercase().contains("< server:"),
        "server header removed: {err}"
    );
    // x-forwarded-for and x-request-id reach the upstream.
    assert!(out.contains("\"x-forwarded-for\": \"127.0.0.1\""), "{out}");
    assert!(out.contains("\"x-request-id\": \""), "{out}");

    // HEAD: headers only.
    let (out, err) = curl(&["-I", "-H", "Host: example.com", &format!("{base}/h")]);
    assert!(out.starts_with("HTTP/1.1 200"), "{out} {err}");
    assert!(out.to_lowercase().contains("content-length:"), "{out}");

    // prefix rewrite /api/ → /v2/
    let (out, _) = curl(&["-H", "Host: example.com", &format!("{base}/api/items?q=2")]);
    assert!(out.contains("\"path\": \"/v2/items?q=2\""), "{out}");

    // a direct response and a 404
    let (out, _) = curl(&["-H", "Host: example.com", &format!("{base}/hello")]);
    assert_eq!(out, "hello from sluice\n");
    let no_route = raw(
        listen,
        b"GET /x HTTP/1.1\r\nHost: example.com\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status_of(&no_route), 200, "the catch-all route serves /x");
    let requests = upstream_requests(&log);
    assert_eq!(requests.len(), 5, "{requests:?}");
}

/// A route's appending header edits keep the message's own fields of the name — the upstream
/// receives its client's `x-a: 1` and the route's `x-a: 2`, the client the upstream's
/// `x-upstream: up` and the route's `x-upstream: sluice` — while an overwriting one (the
/// default) replaces them.
#[test]
fn appended_route_headers_keep_the_messages_own_fields() {
    if !require_peers(&["python3"]) {
        return;
    }
    let dir = TempDir::new("http-append");
    let (up, listen) = (free_port(), free_port());
    let (_u, _log) = start_upstream(&dir, "up", up);
    let config = http_config(listen, &[up], "", "").replace(
        "response_headers_to_add: [ { name: x-served-by, value: sluice } ]",
        "request_headers_to_add: [ { name: x-a, value: \"2\", append_action: append_if_exists_or_add }, { name: x-b, value: new } ]\n                \
         response_headers_to_add: [ { name: x-upstream, value: sluice, append_action: append_if_exists_or_add }, { name: x-served-by, value: sluice } ]",
    );
    assert!(config.contains("append_if_exists_or_add"), "{config}");
    let _s = start_sluice(&dir, &config, 2, addr(listen));
    let answer = raw(
        listen,
        b"GET /fields HTTP/1.1\r\nHost: example.com\r\nx-a: 1\r\nx-b: old\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status_of(&answer), 200, "{answer}");
    let (head, body) = answer.split_once("\r\n\r\n").expect("a head");
    let head = head.to_ascii_lowercase();
    let upstream_fields: Vec<&str> = head
        .lines()
        .filter(|l| l.starts_with("x-upstream:"))
        .collect();
    assert_eq!(
        upstream_fields,
        ["x-upstream: up", "x-upstream: sluice"],
        "{head}"
    );
    let fields: serde_json::Value = serde_json::from_str(body).expect("json");
    let named = |name: &str| -> Vec<String> {
        fields["fields"]
            .as_array()
            .expect("fields")
            .iter()
            .filter(|f| f[0] == name)
            .map(|f| f[1].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(named("x-a"), ["1", "2"], "{body}");
    assert_eq!(named("x-b"), ["new"], "{body}");
}

/// Header values with `%VAR%` go out rendered for each request, in Envoy's formats: the
/// upstream receives the client's address and port as the client's own socket has them, the
/// protocol, the machine's host name, a request header cut to 3 bytes, a literal `%`, and
/// nothing for a request header the request lacks, the pseudo-headers `:method`, `:scheme`,
/// `:authority` and `:path` of an HTTP/1.1 request; the client gets a response header built
/// from its request.
#[test]
fn header_values_with_variables_are_rendered_per_request() {
    if !require_peers(&["python3"]) {
        return;
    }
    let dir = TempDir::new("http-vars");
    let (up, listen) = (free_port(), free_port());
    let (_u, _log) = start_upstream(&dir, "up", up);
    let config = http_config(listen, &[up], "", "").replace(
        "response_headers_to_add: [ { name: x-served-by, value: sluice } ]",
        "request_headers_to_add: [ { name: x-client, value: '%DOWNSTREAM_REMOTE_ADDRESS%' }, \
         { name: x-client-ip, value: 'ip %DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%' }, \
         { name: x-proto, value: '%PROTOCOL%' }, { name: x-host, value: '%HOSTNAME%' }, \
         { name: x-cut, value: '%REQ(X-In):3%' }, { name: x-pct, value: '100%%' }, \
         { name: x-missing, value: '%REQ(x-none)%' }, \
         { name: x-was-user, value: '%REQ(x-user)%' }, \
         { name: x-target, value: '%REQ(:method)% %REQ(:scheme)%://%REQ(:authority)%%REQ(:path)%' } ]\n                \
         request_headers_to_remove: [ x-user ]\n                \
         response_headers_to_add: [ { name: x-seen, value: '%REQ(x-in)%/%PROTOCOL%' }, \
         { name: x-request-id, value: '%REQ(x-request-id)%' }, \
         { name: x-echo-client, value: '%REQ(x-client)%' }, \
         { name: x-echo-user, value: '%REQ(x-user)%' }, \
         { name: x-echo-path, value: '%REQ(:PATH)%' } ]",
    );
    assert!(config.contains("%HOSTNAME%"), "{config}");
    let _s = start_sluice(&dir, &config, 1, addr(listen));
    let mut s = TcpStream::connect(addr(listen)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let me = s.local_addr().unwrap();
    s.write_all(
        b"GET /fields/a/../b?q=1 HTTP/1.1\r\nHost: example.com\r\nx-in: abcdef\r\nx-user: admin\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    assert_eq!(status_of(&answer), 200, "{answer}");
    let (head, body) = answer.split_once("\r\n\r\n").expect("a head");
    // Each field line ends in CRLF, the last one too.
    let head = head.to_ascii_lowercase() + "\r\n";
    assert!(head.contains("\r\nx-seen: abcdef/http/1.1"), "{head}");
    let fields: serde_json::Value = serde_json::from_str(body).expect("json");
    let named = |name: &str| -> Vec<String> {
        fields["fields"]
            .as_array()
            .expect("fields")
            .iter()
            .filter(|f| f[0] == name)
            .map(|f| f[1].as_str().unwrap().to_owned())
            .collect()
    };
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    assert_eq!(named("x-client"), [me.to_string()], "{body}");
    assert_eq!(named("x-client-ip"), [format!("ip {}", me.ip())], "{body}");
    assert_eq!(named("x-proto"), ["HTTP/1.1"], "{body}");
    assert_eq!(named("x-host"), [hostname.trim()], "{body}");
    assert_eq!(named("x-cut"), ["abc"], "{body}");
    assert_eq!(named("x-pct"), ["100%"], "{body}");
    assert!(named("x-missing").is_empty(), "{body}");
    // The pseudo-headers of an HTTP/1.1 request: its method, the scheme of its connection
    // (cleartext), its Host and its target, the path as normalized (`..` resolved), with the
    // query.
    assert_eq!(
        named("x-target"),
        ["GET http://example.com/fields/b?q=1"],
        "{body}"
    );
    assert!(
        head.contains("\r\nx-echo-path: /fields/b?q=1\r\n"),
        "{head}"
    );
    // Values are rendered against the request as edited (Envoy's order): a header the route
    // removes feeds no value (not upstream, not in the response), the request id the proxy
    // generated is echoed as the upstream got it, and the response sees the route's additions.
    assert!(named("x-user").is_empty(), "{body}");
    assert!(named("x-was-user").is_empty(), "{body}");
    assert!(!head.contains("x-echo-user"), "{head}");
    let id = named("x-request-id");
    assert_eq!(id.len(), 1, "{body}");
    assert!(
        head.contains(&format!("\r\nx-request-id: {}\r\n", id[0])),
        "{head}"
    );
    assert!(
        head.contains(&format!("\r\nx-echo-client: {me}\r\n")),
        "{head}"
    );
}

/// An HTTP/1.0 client that asks for keep-alive is told so and can send a second request.
#[test]
fn http_1_0_keep_alive_is_honoured() {
    if !require_peers(&["python3"]) {
        return;
    }
    let dir = TempDir::new("http-10");
    let (up, listen) = (free_port(), free_port());
    let (_u, log) = start_upstream(&dir, "up", up);
    let _s = start_sluice(&dir, &http_config(listen, &[up], "", ""), 1, addr(listen));
    let mut s = TcpStream::connect(addr(listen)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let read_one = |s: &mut TcpStream| {
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        // One response: the head, then content-length bytes.
        loop {
            let n = s.read(&mut buf).unwrap();
            assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&got));
            got.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&got).to_string();
            if let Some(end) = text.find("\r\n\r\n") {
                let len: usize = text
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length: ")
                            .map(|v| v.trim().parse().unwrap())
                    })
                    .unwrap();
                if got.len() >= end + 4 + len {
                    return text;
                }
            }
        }
    };
    for i in 0..2 {
        s.write_all(
            format!("GET /k{i} HTTP/1.0\r\nHost: example.com\r\nConnection: keep-alive\r\n\r\n")
                .as_bytes(),
        )
        .unwrap();
        let r = read_one(&mut s);
        assert!(
            r.to_ascii_lowercase().contains("connection: keep-alive"),
            "{r}"
        );
        assert!(r.contains(&format!("\"path\": \"/k{i}\"")), "{r}");
    }
    assert_eq!(upstream_requests(&log).len(), 2);
}

#[test]
fn no_route_is_404() {
    if !require_peers(&["python3"]) {
        return;
    }
    let dir = TempDir::new("http-404");
    let (up, listen) = (free_port(), free_port());
    let (_u, log) = start_upstream(&dir, "up", up);
    let config = http_config(listen, &[up], "", "")
        .replace("domains: [\"*\"]", "domains: [\"other.example\"]");
    let _s = start_sluice(&dir, &config, 1, addr(listen));
    let r = raw(
        listen,
        b"GET / HTTP/1.1\r\nHost: nowhere.example\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status_of(&r), 404, "{r}");
    assert!(r.ends_with("no route matched the request\n"), "{r}");
    assert!(upstream_requests(&log).is_empty());
}

#[test]
fn chunked_post_and_100_continue_bodies_arrive_intact() {
    if !require_peers(&["curl", "python3"]) {
        return;
    }
    let dir = TempDir::new("http-body");
    let (up, listen) = (free_port(), free_port());
    let (_u, log) = start_upstream(&dir, "up", up);
    let _s = start_sluice(&dir, &http_config(listen, &[up], "", ""), 1, addr(listen));
    let body: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let file = dir.write("body.bin", "");
    std::fs::write(&file, &body).unwrap();
    let sha = {
        let out = run("sha256sum", &[file.to_str().unwrap()]);
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .next()
            .unwrap()
            .to_owned()
    };
    let url = format!("http://127.0.0.1:{listen}/upload");
    let data = format!("@{}", file.display());
    // chunked (large: streamed)
    let (out, err) = curl(&[
        "-H",
        "Host: example.com",
        "-H",
        "Transfer-Encoding: chunked",
        "--data-binary",
        &data,
        &url,
    ]);
    assert!(
        out.contains(&format!("\"body_sha256\": \"{sha}\"")),
        "{out} {err}"
    );
    assert!(out.contains("\"transfer-encoding\": \"chunked\""), "{out}");
    // Expect: 100-continue with content-length (curl sends Expect for bodies > 1 MiB or when asked)
    let (out, err) = curl(&[
        "-v",
        "-H",
        "Host: example.com",
        "-H",
        "Expect: 100-continue",
        "--data-binary",
        &data,
        &url,
    ]);
    assert!(err.contains("HTTP/1.1 100 Continue"), "{err}");
    assert!(
        out.contains(&format!("\"body_sha256\": \"{sha}\"")),
        "{out}"
    );
    assert!(
        !out.contains("\"expect\""),
        "Expect is answered by the proxy, not forwarded: {out}"
    );
    // small chunked (buffered)
    let (out, _) = curl(&[
        "-H",
        "Host: example.com",
        "-H",
        "Transfer-Encoding: chunked",
        "--data-binary",
        "tiny",
        &url,
    ]);
    assert!(out.contains("\"body_len\": 4"), "{out}");
    assert_eq!(upstream_requests(&log).len(), 3);
}

#[test]
fn smuggling_and_limit_cases_are_rejected_and_never_reach_an_upstream() {
    if !require_peers(&["python3"]) {
        return;
    }
    let dir = TempDir::new("http-smuggle");
    let (up, listen) = (free_port(), free_port());
    let (_u, log) = start_upstream(&dir, "up", up);
    let _s = start_sluice(&dir, &http_config(listen, &[up], "", ""), 1, addr(listen));
    let many_headers: String = (0..30).map(|i| format!("x-h{i}: v\r\n")).collect();
    let big_header = format!("x-big: {}\r\n", "a".repeat(9000));
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        ("CL and TE", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".to_vec(), 400),
        ("TE not chunked-final", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n".to_vec(), 400),
        ("unknown TE", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n".to_vec(), 400),
        ("differing CL", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!".to_vec(), 400),
        ("bad CL", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\nhello".to_vec(), 400),
        ("bad chunk size", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n".to_vec(), 400),
        ("obs-fold", b"GET / HTTP/1.1\r\nHost: a\r\nX-A: b\r\n c\r\n\r\n".to_vec(), 400),
        ("NUL in value", b"GET / HTTP/1.1\r\nHost: a\r\nX-A: b\0c\r\n\r\n".to_vec(), 400),
        ("space before colon", b"GET / HTTP/1.1\r\nHost : a\r\n\r\n".to_vec(), 400),
        ("missing Host", b"GET / HTTP/1.1\r\nX-A: b\r\n\r\n".to_vec(), 400),
        ("two Hosts", b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n".to_vec(), 400),
        ("too many headers", format!("GET / HTTP/1.1\r\nHost: a\r\n{many_headers}\r\n").into_bytes(), 431),
        ("head too large", format!("GET / HTTP/1.1\r\nHost: a\r\n{big_header}\r\n").into_bytes(), 431),
    ];
    for (name, request, want) in &cases {
        let r = raw(listen, request);
        assert_eq!(status_of(&r), *want, "{name}: {r}");
        assert!(
            r.to_lowercase().contains("connection: close"),
            "{name}: closes: {r}"
        );
    }
    // slowloris: half a head, then silence → 408 after request_headers_timeout (1 s)
    let t = Instant::now();
    let mut s = TcpStream::connect(addr(listen)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\nX-Slow: ")
        .unwrap();
    let mut got = String::new();
    let _ = s.read_to_string(&mut got);
    assert_eq!(status_of(&got), 408, "{got}");
    assert!(
        t.elapsed() >= Duration::from_millis(900),
        "{:?}",
        t.elapsed()
    );
    assert!(
        upstream_requests(&log).is_empty(),
        "nothing reached the upstream: {:?}",
        upstream_requests(&log)
    );
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    if !require_peers(&["python3"]) {
        return;
    }
    let dir = TempDir::new("http-pipeline");
    let (up, listen) = (free_port(), free_port());
    let (_u, _log) = start_upstream(&dir, "up", up);
    let _s = start_sluice(&dir, &http_config(listen, &[up], "", ""), 1, addr(listen));
    let mut req = Vec::new();
    for i in 0..5 {
        req.extend_from_slice(
            format!("GET /p{i} HTTP/1.1\r\nHost: example.com\r\n\r\n").as_bytes(),
        );
    }
    req.extend_from_slice(b"GET /hello HTTP/1.1\r\nHost: example.com\r\nConnection: close\r\n\r\n");
    let r = raw(listen, &req);
    let positions: Vec<usize> = (0..5)
        .map(|i| r.find(&format!("\"path\": \"/p{i}\"")).unwrap())
        .collect();
    assert!(
        positions.windows(2).all(|w| w[0] < w[1]),
        "in order: {positions:?}"
    );
    assert!(r.ends_with("hello from sluice\n"), "{r}");
    assert_eq!(r.matches("HTTP/1.1 200").count(), 6);
}

#[test]
fn connect_failures_are_retried_on_another_host() {
    if !require_peers(&["python3"]) {
        return;
    }
    let dir = TempDir::new("http-retry");
    let (up, dead, listen) = (free_port(), free_port(), free_port());
    let (_u, log) = start_upstream(&dir, "up", up);
    let retry = "                timeout: 1s\n                retry_policy: { retry_on: [connect-failure, 5xx], num_retries: 2 }\n";
    let _s = start_sluice(
        &dir,
        &http_config(listen, &[dead, up], "", retry),
        1,
        addr(listen),
    );
    for i in 0..10 {
        let r = raw(listen, format!("POST /r{i} HTTP/1.1\r\nHost: example.com\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi").as_bytes());
        assert_eq!(status_of(&r), 200, "request {i}: {r}");
    }
    assert_eq!(
        upstream_requests(&log).len(),
        10,
        "each request reached the live upstream once"
    );
}

/// Istio's default route retry policy (`retriable-status-codes` with 503) on a virtual host
/// with `include_request_attempt_count`: each try carries its number, replacing the client's.
#[test]
fn retriable_status_codes_retry_the_listed_codes_and_each_try_carries_its_number() {
    if !require_peers(&["python3"]) {
        return;
    }
    let dir = TempDir::new("http-retriable-codes");
    let (up1, up2, listen) = (free_port(), free_port(), free_port());
    let (_u1, log1) = start_upstream(&dir, "up1", up1);
    let (_u2, log2) = start_upstream(&dir, "up2", up2);
    // The route adds its own attempt count too: the proxy's replaces it (one field upstream).
    let retry = "                retry_policy: { retry_on: [connect-failure, refused-stream, retriable-status-codes], retriable_status_codes: [503], num_retries: 2 }\n                request_headers_to_add: [ { name: x-envoy-attempt-count, value: \"9\" } ]\n";
    let config = http_config(listen, &[up1, up2], "", retry).replace(
        "        - name: local\n",
        "        - name: local\n          include_request_attempt_count: true\n",
    );
    let _s = start_sluice(&dir, &config, 1, addr(listen));
    let reached = || upstream_requests(&log1).len() + upstream_requests(&log2).len();
    let attempt = |path: &str| -> (u16, String) {
        let r = raw(
            listen,
            format!("GET {path} HTTP/1.1\r\nHost: example.com\r\nx-envoy-attempt-count: 7\r\nConnection: close\r\n\r\n").as_bytes(),
        );
        let status = status_of(&r);
        let body = r.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        let v: serde_json::Value =
            serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
        let n = v["headers"]["x-envoy-attempt-count"]
            .as_str()
            .unwrap_or_else(|| panic!("no attempt count upstream: {body}"))
            .to_owned();
        assert_eq!(v["repeated"], serde_json::json!([]), "{body}");
        (status, n)
    };
    // 503 is listed: tried three times, and the answer forwarded is the third try's.
    assert_eq!(attempt("/status/503"), (503, "3".to_owned()));
    assert_eq!(reached(), 3);
    // 500 is not: forwarded from the first try.
    assert_eq!(attempt("/status/500"), (500, "1".to_owned()));
    assert_eq!(reached(), 4);
    assert_eq!(attempt("/fine"), (200, "1".to_owned()));
}

#[test]
fn idempotent_5xx_answers_are_retried_and_timeouts_answer_504() {
    if !require_peers(&["python3"]) {
        return;
    }
    let dir = TempDir::new("http-5xx");
    let (up1, up2, listen) = (free_port(), free_port(), free_port());
    let (_u1, log1) = start_upstream(&dir, "up1", up1);
    let (_u2, log2) = start_upstream(&dir, "up2", up2);
    let retry = "                timeout: 1s\n                retry_policy: { retry_on: [connect-failure, 5xx], num_retries: 2 }\n";
    let _s = start_sluice(
        &dir,
        &http_config(listen, &[up1, up2], "", retry),
        1,
        addr(listen),
    );
    let reached = || upstream_requests(&log1).len() + upstream_requests(&log2).len();
    // 5xx on an idempotent request is retried (twice, alternating hosts), then forwarded.
    let r = raw(
        listen,
        b"GET /status/503 HTTP/1.1\r\nHost: example.com\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status_of(&r), 503);
    assert_eq!(reached(), 3, "1 try + 2 retries");
    assert!(
        !upstream_requests(&log1).is_empty() && !upstream_requests(&log2).is_empty(),
        "retries go to the other host"
    );
    // a POST answered 5xx is not retried
    let r = raw(listen, b"POST /status/500 HTTP/1.1\r\nHost: example.com\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    assert_eq!(status_of(&r), 500);
    assert_eq!(reached(), 4);
    // route timeout 1 s: a slow upstream gets 504 within the timeout
    let t = Instant::now();
    let r = raw(
        listen,
        b"GET /sleep/3000 HTTP/1.1\r\nHost: example.com\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status_of(&r), 504, "{r}");
    assert!(
        t.elapsed() < Duration::from_millis(2500),
        "{:?}",
        t.elapsed()
    );
}

#[test]
fn an_ambiguously_framed_or_vanishing_upstream_answer_is_a_502() {
    if !require_peers(&["python3"]) {
        return;
    }
    let dir = TempDir::new("http-badframe");
    let (up, listen) = (free_port(), free_port());
    let (_u, log) = start_upstream(&dir, "up", up);
    let _s = start_sluice(&dir, &http_config(listen, &[up], "", ""), 1, addr(listen));
    let r = raw(
        listen,
        b"GET /ambiguous HTTP/1.1\r\nHost: example.com\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status_of(&r), 502, "{r}");
    assert!(r.contains("upstream sent a malformed response"), "{r}");
    assert!(
        !r.contains("Transfer-Encoding"),
        "nothing of the bad answer is forwarded: {r}"
    );
    // An upstream that closes without answering: 502 as well (a POST is not retried).
    let r = raw(listen, b"POST /close HTTP/1.1\r\nHost: example.com\r\nContent-Length: 1\r\nConnection: close\r\n\r\nx");
    assert_eq!(status_of(&r), 502, "{r}");
    assert_eq!(upstream_requests(&log).len(), 2);
    // An upstream that sends a head and dies before its body: nothing has reached the client
    // yet (the head waits for the first body bytes), so the client gets a 502 rather than a
    // connection closed under its request.
    let r = raw(
        listen,
        b"POST /head-then-close HTTP/1.1\r\nHost: example.com\r\nContent-Length: 1\r\n\r\nx",
    );
    assert_eq!(status_of(&r), 502, "{r}");
    assert!(r.contains("connection: close"), "{r}");
    assert_eq!(upstream_requests(&log).len(), 3);
    // A 101 to a request that asked for no upgrade: a 502, not a tunnel nobody agreed on.
    let r = raw(
        listen,
        b"POST /switch HTTP/1.1\r\nHost: example.com\r\nContent-Length: 1\r\n\r\nx",
    );
    assert_eq!(status_of(&r), 502, "{r}");
    assert_eq!(upstream_requests(&log).len(), 4);
}

#[test]
fn all_hosts_down_is_a_fast_502() {
    let dir = TempDir::new("http-down");
    let (dead, listen) = (free_port(), free_port());
    let _s = start_sluice(&dir, &http_config(listen, &[dead], "", ""), 1, addr(listen));
    let t = Instant::now();
    let r = raw(
        listen,
        b"GET / HTTP/1.1\r\nHost: example.com\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status_of(&r), 502, "{r}");
    assert!(r.contains("upstream connect error"), "{r}");
    assert!(t.elapsed() < Duration::from_secs(2));
}

/// A static cluster of no hosts (`hosts: []`, Envoy's STATIC cluster without endpoints,
/// istiod's `BlackHoleCluster`): an HTTP route to it is answered 503 "no healthy upstream"
/// and counted; a TCP proxy to it closes the connection at once, counted by reason.
#[test]
fn a_cluster_of_no_hosts_answers_503_and_closes_tcp() {
    let dir = TempDir::new("http-blackhole");
    let (listen, tcp, admin) = (free_port(), free_port(), free_port());
    let config = format!(
        r#"
admin: {{ address: 127.0.0.1:{admin} }}
listeners:
  - name: web
    address: 127.0.0.1:{listen}
    http:
      virtual_hosts:
        - name: any
          domains: ["*"]
          routes:
            - match: {{ prefix: / }}
              route: {{ cluster: BlackHoleCluster }}
  - name: l4
    address: 127.0.0.1:{tcp}
    tcp_proxy: {{ cluster: BlackHoleCluster }}
clusters:
  - name: BlackHoleCluster
    hosts: []
"#
    );
    let _s = start_sluice(&dir, &config, 1, addr(listen));
    for _ in 0..2 {
        let r = raw(
            listen,
            b"GET /x HTTP/1.1\r\nHost: example.com\r\nConnection: close\r\n\r\n",
        );
        assert_eq!(status_of(&r), 503, "{r}");
        assert!(r.ends_with("no healthy upstream\n"), "{r}");
    }
    assert_eq!(admin_stat(admin, "listener.web.http.rq_5xx"), 2);
    assert_eq!(admin_stat(admin, "listener.web.http.local_reply"), 2);
    // TCP: closed without a byte, whatever the client sent.
    let mut s = TcpStream::connect(addr(tcp)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let _ = s.write_all(b"hello");
    let mut got = Vec::new();
    let t = Instant::now();
    let _ = s.read_to_end(&mut got);
    assert!(got.is_empty(), "{got:?}");
    assert!(t.elapsed() < Duration::from_secs(2), "closed at once");
    assert!(eventually(Duration::from_secs(3), || admin_stat(
        admin,
        "listener.l4.tcp.closed.no_healthy_upstream"
    ) == 1));
}

/// `upgrade_types: [websocket]` (what istiod's `upgrade_configs` becomes): a websocket
/// upgrade is tunnelled — the upstream's 101, then bytes both ways —, another upgrade type is
/// answered 403, the connection closed, and counted; the upstream never sees it.
#[test]
fn only_listed_upgrade_types_are_tunnelled() {
    use std::net::TcpListener;
    let dir = TempDir::new("http-upgrade-types");
    let (listen, admin) = (free_port(), free_port());
    // An upstream that answers every head with a 101 and then echoes, counting heads.
    let up = TcpListener::bind("127.0.0.1:0").unwrap();
    let up_port = up.local_addr().unwrap().port();
    let heads = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = heads.clone();
    std::thread::spawn(move || {
        for conn in up.incoming() {
            let Ok(mut c) = conn else { return };
            let seen = seen.clone();
            std::thread::spawn(move || {
                let mut head = Vec::new();
                let mut b = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    if c.read(&mut b).unwrap_or(0) == 0 {
                        return;
                    }
                    head.push(b[0]);
                }
                seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                // `/h2c`: the upstream picks h2c, whatever was asked.
                let to: &[u8] = if head.starts_with(b"GET /h2c ") {
                    b"h2c"
                } else {
                    b"websocket"
                };
                let _ = c.write_all(
                    &[
                        &b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: "[..],
                        to,
                        b"\r\n\r\n",
                    ]
                    .concat(),
                );
                let mut buf = [0u8; 1024];
                while let Ok(n) = c.read(&mut buf) {
                    if n == 0 || c.write_all(&buf[..n]).is_err() {
                        return;
                    }
                }
            });
        }
    });
    let config = format!(
        r#"
admin: {{ address: 127.0.0.1:{admin} }}
listeners:
  - name: web
    address: 127.0.0.1:{listen}
    http:
      upgrade_types: [ websocket ]
      virtual_hosts:
        - name: any
          domains: ["*"]
          routes:
            - match: {{ prefix: / }}
              route: {{ cluster: app }}
clusters:
  - name: app
    hosts: [ {{ address: 127.0.0.1:{up_port} }} ]
"#
    );
    let _s = start_sluice(&dir, &config, 1, addr(listen));
    // websocket (any case): tunnelled.
    let mut c = TcpStream::connect(addr(listen)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    c.write_all(
        b"GET /chat HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: WebSocket\r\n\r\n",
    )
    .unwrap();
    let mut got = Vec::new();
    let mut b = [0u8; 1];
    while !got.ends_with(b"\r\n\r\n") {
        assert_eq!(
            c.read(&mut b).unwrap(),
            1,
            "{}",
            String::from_utf8_lossy(&got)
        );
        got.push(b[0]);
    }
    assert!(
        got.starts_with(b"HTTP/1.1 101 "),
        "{}",
        String::from_utf8_lossy(&got)
    );
    c.write_all(b"ping through the tunnel").unwrap();
    let mut echo = [0u8; 23];
    c.read_exact(&mut echo).unwrap();
    assert_eq!(&echo, b"ping through the tunnel");
    drop(c);
    assert_eq!(heads.load(std::sync::atomic::Ordering::SeqCst), 1);
    // Another type: 403, closed, counted; nothing upstream.
    let r = raw(
        listen,
        b"GET /chat HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n",
    );
    assert_eq!(status_of(&r), 403, "{r}");
    assert_eq!(
        r.matches("HTTP/1.1").count(),
        1,
        "closed after the 403: {r}"
    );
    assert_eq!(heads.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert_eq!(
        admin_stat(admin, "listener.web.http.downstream_rq_ws_on_non_ws_route"),
        1
    );
    // A listed type beside another — in a second `Upgrade` field or a second element of
    // one —: 403 too (the upstream would be free to pick h2c); nothing upstream.
    for upgrade in [
        &b"Upgrade: websocket\r\nUpgrade: h2c\r\n"[..],
        b"Upgrade: h2c\r\nUpgrade: websocket\r\n",
        b"Upgrade: websocket, h2c\r\n",
    ] {
        let r = raw(
            listen,
            &[
                &b"GET /chat HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\n"[..],
                upgrade,
                b"\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n",
            ]
            .concat(),
        );
        assert_eq!(status_of(&r), 403, "{r}");
        assert_eq!(
            r.matches("HTTP/1.1").count(),
            1,
            "closed after the 403: {r}"
        );
    }
    assert_eq!(heads.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert_eq!(
        admin_stat(admin, "listener.web.http.downstream_rq_ws_on_non_ws_route"),
        4
    );
    // An upstream that switches to a protocol the listener does not list: 502, no tunnel.
    let r = raw(
        listen,
        b"GET /h2c HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
    );
    assert_eq!(status_of(&r), 502, "{r}");
    assert!(!r.contains(" 101 "), "{r}");
}

/// A route's `upgrade_configs` override the listener's `upgrade_types` for the types they
/// name (Envoy's `RouteAction.upgrade_configs`): a route that disables websocket refuses it
/// (403, nothing upstream) though the listener lists it; a route that enables h2c tunnels it
/// though the listener does not; other routes keep the listener's list.
#[test]
fn a_routes_upgrade_configs_override_the_listeners_upgrade_types() {
    use std::net::TcpListener;
    let dir = TempDir::new("http-route-upgrades");
    let (listen, admin) = (free_port(), free_port());
    // An upstream that switches to the protocol asked for, then echoes; counts heads.
    let up = TcpListener::bind("127.0.0.1:0").unwrap();
    let up_port = up.local_addr().unwrap().port();
    let heads = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = heads.clone();
    std::thread::spawn(move || {
        for conn in up.incoming() {
            let Ok(mut c) = conn else { return };
            let seen = seen.clone();
            std::thread::spawn(move || {
                let mut head = Vec::new();
                let mut b = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    if c.read(&mut b).unwrap_or(0) == 0 {
                        return;
                    }
                    head.push(b[0]);
                }
                seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
                let to = head
                    .lines()
                    .find_map(|l| l.strip_prefix("upgrade: "))
                    .unwrap_or("none")
                    .to_owned();
                let _ = c.write_all(
                    format!("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: {to}\r\n\r\n")
                        .as_bytes(),
                );
                let mut buf = [0u8; 1024];
                while let Ok(n) = c.read(&mut buf) {
                    if n == 0 || c.write_all(&buf[..n]).is_err() {
                        return;
                    }
                }
            });
        }
    });
    let config = format!(
        r#"
admin: {{ address: 127.0.0.1:{admin} }}
listeners:
  - name: web
    address: 127.0.0.1:{listen}
    http:
      upgrade_types: [ websocket ]
      virtual_hosts:
        - name: any
          domains: ["*"]
          routes:
            - match: {{ prefix: /no-ws }}
              route:
                cluster: app
                upgrade_configs: [ {{ upgrade_type: websocket, enabled: false }} ]
            - match: {{ prefix: /h2c }}
              route:
                cluster: app
                upgrade_configs: [ {{ upgrade_type: h2c }} ]
            - match: {{ prefix: / }}
              route: {{ cluster: app }}
clusters:
  - name: app
    hosts: [ {{ address: 127.0.0.1:{up_port} }} ]
"#
    );
    let _s = start_sluice(&dir, &config, 1, addr(listen));
    let tunnelled = |path: &str, upgrade: &str| {
        let mut c = TcpStream::connect(addr(listen)).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        c.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: {upgrade}\r\n\r\n")
                .as_bytes(),
        )
        .unwrap();
        let mut got = Vec::new();
        let mut b = [0u8; 1];
        while !got.ends_with(b"\r\n\r\n") {
            assert_eq!(
                c.read(&mut b).unwrap(),
                1,
                "{}",
                String::from_utf8_lossy(&got)
            );
            got.push(b[0]);
        }
        let got = String::from_utf8_lossy(&got).into_owned();
        assert!(got.starts_with("HTTP/1.1 101 "), "{path} {upgrade}: {got}");
        c.write_all(b"ping through the tunnel").unwrap();
        let mut echo = [0u8; 23];
        c.read_exact(&mut echo).unwrap();
        assert_eq!(&echo, b"ping through the tunnel");
    };
    let refused = |path: &str, upgrade: &str| {
        let r = raw(
            listen,
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: {upgrade}\r\n\r\n")
                .as_bytes(),
        );
        assert_eq!(status_of(&r), 403, "{path} {upgrade}: {r}");
    };
    let count = || heads.load(std::sync::atomic::Ordering::SeqCst);
    // The route enables h2c, which the listener does not list: tunnelled.
    tunnelled("/h2c", "h2c");
    // The listener's websocket still holds on that route (the route names only h2c).
    tunnelled("/h2c", "websocket");
    // Other routes: the listener's list alone.
    tunnelled("/", "websocket");
    assert_eq!(count(), 3);
    refused("/", "h2c");
    // The route disables websocket, which the listener lists: 403, nothing upstream.
    refused("/no-ws", "websocket");
    refused("/no-ws", "WebSocket");
    assert_eq!(count(), 3);
    assert_eq!(
        admin_stat(admin, "listener.web.http.downstream_rq_ws_on_non_ws_route"),
        3
    );
}

/// `server_name` (istiod's `istio-envoy`): the `server` header of a forwarded response is the
/// listener's (`overwrite`, the default), or the upstream's when it has one
/// (`append_if_absent`); without `server_name` the upstream's passes.
#[test]
fn server_name_sets_the_server_header_of_forwarded_responses() {
    if !require_peers(&["nginx"]) {
        return;
    }
    let dir = TempDir::new("http-server-name");
    let (up, overwrite, if_absent, plain) = (free_port(), free_port(), free_port(), free_port());
    let _n = start_nginx(&dir, "nginx", up, "hello");
    let listener = |name: &str, port: u16, extra: &str| {
        format!(
            r#"  - name: {name}
    address: 127.0.0.1:{port}
    http:
{extra}      virtual_hosts:
        - name: any
          domains: ["*"]
          routes: [ {{ match: {{ prefix: / }}, route: {{ cluster: app }} }} ]
"#
        )
    };
    let config = format!(
        "listeners:\n{}{}{}clusters:\n  - name: app\n    hosts: [ {{ address: 127.0.0.1:{up} }} ]\n",
        listener("overwrite", overwrite, "      server_name: istio-envoy\n"),
        listener(
            "if_absent",
            if_absent,
            "      server_name: istio-envoy\n      server_header_transformation: append_if_absent\n"
        ),
        listener("plain", plain, ""),
    );
    let _s = start_sluice(&dir, &config, 1, addr(overwrite));
    let server = |port: u16| {
        let r = raw(
            port,
            b"GET / HTTP/1.1\r\nHost: example.com\r\nConnection: close\r\n\r\n",
        );
        assert_eq!(status_of(&r), 200, "{r}");
        let servers: Vec<String> = r
            .lines()
            .filter_map(|l| {
                l.strip_prefix("server: ")
                    .or_else(|| l.strip_prefix("Server: "))
            })
            .map(str::to_owned)
            .collect();
        servers
    };
    assert_eq!(server(overwrite), ["istio-envoy"]);
    let kept = server(if_absent);
    assert!(kept.len() == 1 && kept[0].starts_with("nginx"), "{kept:?}");
    assert_eq!(server(plain), kept);
}

/// The listener's `server_name` is on the proxy's own answers too, as Envoy sets it on every
/// response it sends: 404 (no route), 503 (no host), 403 (refused upgrade), a direct
/// response, a gRPC request's trailers-only answer, a rejected head (400), and over HTTP/2;
/// `pass_through` has nothing to pass on a local reply (no `server`).
#[test]
fn server_name_is_on_the_proxys_own_answers() {
    let dir = TempDir::new("http-server-name-local");
    let (listen, passing) = (free_port(), free_port());
    let listener = |name: &str, port: u16, extra: &str| {
        format!(
            r#"  - name: {name}
    address: 127.0.0.1:{port}
    http:
      server_name: edge-proxy
      upgrade_types: [websocket]
{extra}      virtual_hosts:
        - name: known
          domains: ["known.example"]
          routes:
            - match: {{ prefix: /direct }}
              direct_response: {{ status: 200, body: "hi\n" }}
            - match: {{ prefix: / }}
              route: {{ cluster: empty }}
"#
        )
    };
    let config = format!(
        "listeners:\n{}{}clusters:\n  - name: empty\n    hosts: []\n",
        listener("overwrite", listen, ""),
        listener(
            "passing",
            passing,
            "      server_header_transformation: pass_through\n"
        ),
    );
    let _s = start_sluice(&dir, &config, 1, addr(listen));
    let servers = |r: &str| -> Vec<String> {
        let head = r.split("\r\n\r\n").next().unwrap_or("");
        head.lines()
            .filter_map(|l| l.strip_prefix("server: "))
            .map(str::to_owned)
            .collect()
    };
    let cases: [(&[u8], u16); 6] = [
        (
            b"GET / HTTP/1.1\r\nHost: other.example\r\nConnection: close\r\n\r\n",
            404,
        ),
        (
            b"GET / HTTP/1.1\r\nHost: known.example\r\nConnection: close\r\n\r\n",
            503,
        ),
        (
            b"GET /direct HTTP/1.1\r\nHost: known.example\r\nConnection: close\r\n\r\n",
            200,
        ),
        (
            b"GET / HTTP/1.1\r\nHost: known.example\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n",
            403,
        ),
        (
            b"POST /svc/M HTTP/1.1\r\nHost: known.example\r\ncontent-type: application/grpc\r\n\
              Content-Length: 0\r\nConnection: close\r\n\r\n",
            200,
        ),
        (
            b"GET / HTTP/1.1\r\nHost: known.example\r\nContent-Length: x\r\n\r\n",
            400,
        ),
    ];
    for (request, status) in cases {
        let r = raw(listen, request);
        assert_eq!(status_of(&r), status, "{r}");
        assert_eq!(servers(&r), ["edge-proxy"], "{r}");
        let r = raw(passing, request);
        assert_eq!(status_of(&r), status, "{r}");
        assert!(servers(&r).is_empty(), "{r}");
    }
    // The gRPC answer is the proxy's (no host: UNAVAILABLE).
    let r = raw(
        listen,
        b"POST /svc/M HTTP/1.1\r\nHost: known.example\r\ncontent-type: application/grpc\r\n\
          Content-Length: 0\r\nConnection: close\r\n\r\n",
    );
    assert!(r.contains("grpc-status: 14\r\n"), "{r}");
    // HTTP/2 (h2c, prior knowledge): the same field in the HEADERS of a local reply.
    if require_peers(&["curl"]) {
        let out = run(
            "curl",
            &[
                "-sS",
                "-i",
                "--http2-prior-knowledge",
                "--max-time",
                "10",
                "-H",
                "host: other.example",
                &format!("http://127.0.0.1:{listen}/"),
            ],
        );
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.starts_with("HTTP/2 404"), "{text}");
        assert_eq!(servers(&text), ["edge-proxy"], "{text}");
    }
}

#[test]
fn websocket_upgrade_becomes_a_tunnel() {
    if !require_peers(&["python3", "test-venv"]) {
        return;
    }
    let dir = TempDir::new("http-ws");
    let (up, listen) = (free_port(), free_port());
    let script = repo().join("tests/ws_echo.py");
    let mut ws = spawn(
        &dir,
        "ws",
        &python(),
        &[script.to_str().unwrap(), "server", &up.to_string()],
    );
    wait_listening(addr(up), &mut ws);
    let _s = start_sluice(&dir, &http_config(listen, &[up], "", ""), 1, addr(listen));
    let out = run(
        &python(),
        &[
            script.to_str().unwrap(),
            "client",
            &format!("ws://127.0.0.1:{listen}/chat"),
            "40",
        ],
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "ok 40",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn wrk_keep_alive_load_has_no_errors_and_the_access_log_has_every_request() {
    if !require_peers(&["nginx", "wrk"]) {
        return;
    }
    let dir = TempDir::new("http-wrk");
    let (up, listen) = (free_port(), free_port());
    let _n = start_nginx(&dir, "nginx", up, "hello");
    let log = dir.path().join("access.log");
    let access = format!(
        "      access_log: {{ format: json, path: {} }}\n",
        log.display()
    );
    let mut s = start_sluice(
        &dir,
        &http_config(listen, &[up], &access, ""),
        2,
        addr(listen),
    );
    let out = run(
        "wrk",
        &[
            "-t2",
            "-c20",
            "-d2s",
            "-H",
            "Host: example.com",
            &format!("http://127.0.0.1:{listen}/"),
        ],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!text.contains("Socket errors"), "{text}");
    assert!(!text.contains("Non-2xx"), "{text}");
    let requests: usize = text
        .lines()
        .find(|l| l.contains("requests in"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{text}"));
    assert!(requests > 1000, "{text}");
    s.signal("TERM");
    assert!(
        s.wait_exit(Duration::from_secs(10))
            .is_some_and(|st| st.success())
    );
    let lines = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = lines.lines().collect();
    // wrk counts completed responses; requests in flight when it stopped are logged too.
    assert!(
        lines.len() >= requests && lines.len() <= requests + 20,
        "{} log lines, {requests} requests",
        lines.len()
    );
    let first: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
    assert_eq!(first["status"], 200);
    assert_eq!(first["method"], "GET");
    assert_eq!(first["upstream_host"], format!("127.0.0.1:{up}"));
}

/// A listener whose `/admin` (and whole `internal.example.com`) is closed by a 403 direct
/// response in front of a catch-all route to the upstream.
fn guarded_config(listen: u16, up: u16, knobs: &str) -> String {
    format!(
        r#"
listeners:
  - name: http_in
    address: 127.0.0.1:{listen}
    http:
{knobs}      virtual_hosts:
        - name: internal
          domains: ["internal.example.com"]
          routes:
            - match: {{ prefix: / }}
              direct_response: {{ status: 403, body: "internal\n" }}
        - name: any
          domains: ["*"]
          routes:
            - match: {{ prefix: /admin }}
              direct_response: {{ status: 403, body: "forbidden\n" }}
            - match: {{ prefix: / }}
              route: {{ cluster: app }}
clusters:
  - name: app
    connect_timeout: 500ms
    hosts: [ {{ address: 127.0.0.1:{up} }} ]
"#
    )
}

fn get(port: u16, host: &str, path: &str) -> String {
    raw(
        port,
        format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
}

#[test]
fn paths_are_normalized_before_routing_and_forwarded_normalized() {
    if !require_peers(&["python3"]) {
        return;
    }
    let dir = TempDir::new("http-normalize");
    let (up, listen) = (free_port(), free_port());
    let (_u, log) = start_upstream(&dir, "up", up);
    let _s = start_sluice(&dir, &guarded_config(listen, up, ""), 1, addr(listen));
    let attacks = [
        ("/x/../admin", 403),
        ("/%61dmin", 403),
        ("//admin", 403),
        ("/./admin", 403),
        ("/x/..%2fadmin", 400),
    ];
    for (path, want) in attacks {
        let r = get(listen, "example.com", path);
        assert_eq!(status_of(&r), want, "{path}: {r}");
    }
    let r = get(listen, "internal.example.com.", "/");
    assert_eq!(status_of(&r), 403, "trailing dot host: {r}");
    assert!(r.ends_with("internal\n"), "{r}");
    // A benign path reaches the upstream normalized, the query as sent.
    let r = get(listen, "example.com", "/a/./b//c?q=/../x");
    assert_eq!(status_of(&r), 200, "{r}");
    assert!(r.contains(r#""path": "/a/b/c?q=/../x""#), "{r}");
    // The upstream saw only the benign request (it logs each complete request in order).
    assert_eq!(upstream_requests(&log), ["GET /a/b/c?q=/../x 0"]);
}

#[test]
fn path_normalization_knobs_turn_it_off_or_unescape_slashes() {
    if !require_peers(&["python3"]) {
        return;
    }
    let dir = TempDir::new("http-normalize-knobs");
    let (up, listen) = (free_port(), free_port());
    let (_u, log) = start_upstream(&dir, "up", up);
    let knobs = "      merge_slashes: false\n      path_with_escaped_slashes_action: unescape_and_forward\n";
    let _s = start_sluice(&dir, &guarded_config(listen, up, knobs), 1, addr(listen));
    let r = get(listen, "example.com", "/x/..%2fadmin");
    assert_eq!(status_of(&r), 403, "unescaped, then dot-resolved: {r}");
    let r = get(listen, "example.com", "/a//b/%2e/c");
    assert_eq!(status_of(&r), 200, "{r}");
    assert_eq!(upstream_requests(&log), ["GET /a//b/c 0"]);
}

#[test]
fn an_http_1_0_request_without_host_gets_one_upstream() {
    if !require_peers(&["python3"]) {
        return;
    }
    let dir = TempDir::new("http-10-no-host");
    let (up, listen) = (free_port(), free_port());
    let (_u, log) = start_upstream(&dir, "up", up);
    let _s = start_sluice(&dir, &http_config(listen, &[up], "", ""), 1, addr(listen));
    // Sent upstream as HTTP/1.1, which requires Host: the cluster's name.
    let r = raw(listen, b"GET /old HTTP/1.0\r\n\r\n");
    assert_eq!(status_of(&r), 200, "{r}");
    assert!(r.contains(r#""host": "app""#), "{r}");
    // An absolute-form target gives its authority; a Host header is kept as sent.
    let r = raw(listen, b"GET http://example.com/abs HTTP/1.0\r\n\r\n");
    assert!(r.contains(r#""host": "example.com""#), "{r}");
    let r = raw(listen, b"GET /h HTTP/1.0\r\nHost: example.com\r\n\r\n");
    assert!(r.contains(r#""host": "example.com""#), "{r}");
    assert_eq!(r.matches(r#""host""#).count(), 1, "{r}");
    assert_eq!(upstream_requests(&log).len(), 3);
}

#[test]
fn request_trailers_lose_the_fields_a_trailer_must_not_carry() {
    if !require_peers(&["python3"]) {
        return;
    }
    let dir = TempDir::new("http-trailers");
    let (up, listen) = (free_port(), free_port());
    let (_u, log) = start_upstream(&dir, "up", up);
    let _s = start_sluice(&dir, &http_config(listen, &[up], "", ""), 1, addr(listen));
    let trailers = "X-Checksum: abc\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\
                    Host: evil.example\r\nTrailer: x\r\nConnection: close\r\nAuthorization: x\r\n\
                    Content-Type: text/evil\r\nX-Forwarded-For: 6.6.6.6\r\n\
                    X-Request-Id: forged\r\nX-Forwarded-Proto: https\r\nX-Other: 1\r\n\r\n";
    // Small (buffered, replayable) and large (streamed) bodies take different paths.
    for size in [4usize, 100_000] {
        let mut request = format!(
            "POST /t HTTP/1.1\r\nHost: example.com\r\nTransfer-Encoding: chunked\r\n\
             Connection: close\r\n\r\n{size:x}\r\n"
        )
        .into_bytes();
        request.extend(std::iter::repeat_n(b'z', size));
        request.extend_from_slice(b"\r\n0\r\n");
        request.extend_from_slice(trailers.as_bytes());
        let r = raw(listen, &request);
        assert_eq!(status_of(&r), 200, "{size}: {r}");
        assert!(r.contains(&format!("\"body_len\": {size}")), "{size}: {r}");
        assert!(
            r.contains(r#""trailers": ["X-Checksum: abc", "X-Other: 1"]"#),
            "{size}: {r}"
        );
    }
    assert_eq!(upstream_requests(&log).len(), 2);
}

/// An upstream's `Trailer` field is end-to-end (RFC 9110 §6.6.2), as in Envoy: it reaches the
/// HTTP/1.1 client with the chunked answer and the trailer it announces.
#[test]
fn an_upstream_answers_trailer_field_reaches_the_client() {
    if !require_peers(&["python3"]) {
        return;
    }
    let dir = TempDir::new("http-trailer-field");
    let (up, listen) = (free_port(), free_port());
    let (_u, _log) = start_upstream(&dir, "up", up);
    let _s = start_sluice(&dir, &http_config(listen, &[up], "", ""), 1, addr(listen));
    let r = raw(
        listen,
        b"GET /trailers HTTP/1.1\r\nHost: example.com\r\nTE: trailers\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status_of(&r), 200, "{r}");
    let (head, body) = r.split_once("\r\n\r\n").expect("a head");
    assert!(head.contains("\r\nTrailer: x-checksum"), "{head}");
    assert!(body.contains("\r\n0\r\nx-checksum: "), "{body}");
}

/// Sends a POST of `total` bytes (Content-Length) in `pieces` equal parts, `gap` apart, then
/// reads the whole answer.
fn slow_post(
    port: u16,
    total: usize,
    pieces: usize,
    gap: Duration,
    stop_after: Option<usize>,
) -> String {
    let mut s = TcpStream::connect(addr(port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(
        format!(
            "POST /upload HTTP/1.1\r\nHost: example.com\r\nContent-Length: {total}\r\n\
             Connection: close\r\n\r\n"
        )
        .as_bytes(),
    )
    .unwrap();
    let piece = vec![b'u'; total / pieces];
    for i in 0..pieces {
        if stop_after == Some(i) {
            break;
        }
        std::thread::sleep(gap);
        if s.write_all(&piece).is_err() {
            break;
        }
    }
    let mut got = Vec::new();
    let _ = s.read_to_end(&mut got);
    String::from_utf8_lossy(&got).into_owned()
}

#[test]
fn the_route_timeout_starts_after_the_upload_and_a_stalled_upload_is_a_408() {
    if !require_peers(&["python3"]) {
        return;
    }
    let dir = TempDir::new("http-upload-timeout");
    let (up, listen) = (free_port(), free_port());
    let (_u, log) = start_upstream(&dir, "up", up);
    let cfg = http_config(
        listen,
        &[up],
        "      stream_idle_timeout: 1s\n",
        "                timeout: 1s\n",
    );
    let _s = start_sluice(&dir, &cfg, 1, addr(listen));
    // A 200 kB upload (streamed, over the 64 KiB replay buffer) taking ~2 s, twice the route
    // timeout, with no gap as long as stream_idle_timeout: answered.
    let r = slow_post(listen, 200_000, 8, Duration::from_millis(250), None);
    assert_eq!(status_of(&r), 200, "{r}");
    assert!(r.contains("\"body_len\": 200000"), "{r}");
    // Uploads that stop half-way: 408 once the body stalls for 1 s, streamed or buffered.
    for total in [200_000, 20_000] {
        let r = slow_post(listen, total, 8, Duration::from_millis(10), Some(4));
        assert_eq!(status_of(&r), 408, "{total}: {r}");
    }
    // Only the whole upload reached the upstream whole.
    let requests = upstream_requests(&log);
    assert_eq!(
        requests.iter().filter(|l| l.ends_with(" 200000")).count(),
        1,
        "{requests:?}"
    );
    assert!(
        !requests.iter().any(|l| l.ends_with(" 20000")),
        "{requests:?}"
    );
}

/// The access log's request id is the one forwarded upstream: the id sluice generated for a
/// request without one (the text log showed `-` for it), and the client's own otherwise.
#[test]
fn the_access_log_shows_the_request_id_that_was_forwarded() {
    if !require_peers(&["curl", "python3"]) {
        return;
    }
    let dir = TempDir::new("http-request-id");
    let (up, listen) = (free_port(), free_port());
    let (_u, requests) = start_upstream(&dir, "up", up);
    let log = dir.path().join("access.log");
    let access = format!("      access_log: {{ path: {} }}\n", log.display());
    let mut s = start_sluice(
        &dir,
        &http_config(listen, &[up], &access, ""),
        1,
        addr(listen),
    );
    let base = format!("http://127.0.0.1:{listen}");
    let (generated, _) = curl(&["-H", "Host: example.com", &format!("{base}/generated")]);
    let (given, _) = curl(&[
        "-H",
        "Host: example.com",
        "-H",
        "x-request-id: client-chose-this",
        &format!("{base}/given"),
    ]);
    let seen = |answer: &str| -> String {
        let v: serde_json::Value =
            serde_json::from_str(answer).unwrap_or_else(|e| panic!("{e}: {answer}"));
        v["headers"]["x-request-id"]
            .as_str()
            .unwrap_or_else(|| panic!("no x-request-id upstream: {answer}"))
            .to_owned()
    };
    let generated_id = seen(&generated);
    assert_eq!(generated_id.len(), 36, "a UUID: {generated_id}");
    assert_eq!(seen(&given), "client-chose-this");
    drop(requests);

    s.signal("TERM");
    assert!(
        s.wait_exit(Duration::from_secs(10))
            .is_some_and(|st| st.success())
    );
    let text = std::fs::read_to_string(&log).unwrap();
    let line = |path: &str| {
        text.lines()
            .find(|l| l.contains(&format!("\"GET {path} HTTP/1.1\"")))
            .unwrap_or_else(|| panic!("no {path} in {text}"))
            .to_owned()
    };
    assert!(
        line("/generated").ends_with(&format!("\"{generated_id}\"")),
        "{text}"
    );
    assert!(line("/given").ends_with("\"client-chose-this\""), "{text}");
}

/// An HTTP/1.1 upstream on `listener` (threads, one per connection) for the full-duplex test:
/// `POST /pingpong` (chunked) is answered at once with a chunked response that echoes each
/// request chunk as it arrives (`got N: <first bytes>`), and ends after the request's last
/// chunk; `POST /watch` (chunked) likewise, with six `tick K` chunks 250 ms apart for each
/// request chunk; `POST /early` is answered whole at once, before its body is read, and the rest of the
/// connection is read to its end (`early_eof` set then); `GET /plain` gets `ok`. Counts the
/// connections it accepted.
fn duplex_upstream(
    listener: std::net::TcpListener,
    conns: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    early_eof: std::sync::Arc<std::sync::atomic::AtomicBool>,
) {
    use std::io::BufRead;
    use std::sync::atomic::Ordering;
    for s in listener.incoming() {
        let Ok(mut w) = s else { return };
        conns.fetch_add(1, Ordering::SeqCst);
        let early_eof = early_eof.clone();
        std::thread::spawn(move || {
            let mut r = std::io::BufReader::new(w.try_clone().unwrap());
            loop {
                let mut line = String::new();
                if r.read_line(&mut line).unwrap_or(0) == 0 {
                    return;
                }
                let path = line.split(' ').nth(1).unwrap_or("").to_owned();
                loop {
                    let mut h = String::new();
                    if r.read_line(&mut h).unwrap_or(0) == 0 {
                        return;
                    }
                    if h == "\r\n" {
                        break;
                    }
                }
                match path.as_str() {
                    "/pingpong" => {
                        w.write_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
                            .unwrap();
                        loop {
                            let mut size = String::new();
                            r.read_line(&mut size).unwrap();
                            let n = usize::from_str_radix(size.trim(), 16).unwrap();
                            if n == 0 {
                                let mut end = String::new();
                                r.read_line(&mut end).unwrap();
                                w.write_all(b"0\r\n\r\n").unwrap();
                                break;
                            }
                            let mut data = vec![0; n + 2];
                            r.read_exact(&mut data).unwrap();
                            let head = String::from_utf8_lossy(&data[..n.min(8)]).into_owned();
                            let echo = format!("got {n}: {head}");
                            w.write_all(format!("{:x}\r\n{echo}\r\n", echo.len()).as_bytes())
                                .unwrap();
                        }
                    }
                    "/watch" => {
                        w.write_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
                            .unwrap();
                        loop {
                            let mut size = String::new();
                            // The proxy may close the connection mid-body (a stalled client).
                            if r.read_line(&mut size).unwrap_or(0) == 0 {
                                return;
                            }
                            let n = usize::from_str_radix(size.trim(), 16).unwrap();
                            if n == 0 {
                                let mut end = String::new();
                                r.read_line(&mut end).unwrap();
                                w.write_all(b"0\r\n\r\n").unwrap();
                                break;
                            }
                            let mut data = vec![0; n + 2];
                            r.read_exact(&mut data).unwrap();
                            for k in 0..6 {
                                std::thread::sleep(Duration::from_millis(250));
                                w.write_all(format!("6\r\ntick {k}\r\n").as_bytes())
                                    .unwrap();
                            }
                        }
                    }
                    "/early" => {
                        // Some of the body first, so that the bytes the proxy counts as
                        // received are more than the head whatever the scheduling (answering
                        // on the head alone raced the proxy's first body read).
                        let mut part = [0u8; 4096];
                        r.read_exact(&mut part).unwrap();
                        w.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nearly")
                            .unwrap();
                        let mut sink = Vec::new();
                        let _ = r.read_to_end(&mut sink);
                        early_eof.store(true, Ordering::SeqCst);
                        return;
                    }
                    _ => w
                        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                        .unwrap(),
                }
            }
        });
    }
}

/// Reads a response head from `r` (lines up to the empty one).
fn read_head(r: &mut impl std::io::BufRead) -> String {
    let mut head = String::new();
    loop {
        let mut line = String::new();
        assert!(
            r.read_line(&mut line).expect("a response head") > 0,
            "{head}"
        );
        head.push_str(&line);
        if line == "\r\n" {
            return head;
        }
    }
}

/// HTTP/1.1 both sides, full duplex: a chunked upload streams (its first chunk is over the
/// 64 KiB replay buffer) while the upstream's answer, started at once, streams back — the
/// client sends each next chunk only once the echo of the previous one arrived. The answer
/// started before the request ended, so the client's connection closes after it (`connection:
/// close`, as Envoy does). An upstream that answers whole after reading 4 KiB of the body: the answer
/// reaches the client, the rest of the body is not sent, and that upstream connection is closed,
/// never reused (the next request opens another).
#[test]
fn a_streamed_http11_upload_and_its_early_streamed_answer_flow_at_once() {
    use std::io::BufRead;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    let dir = TempDir::new("http-duplex");
    let (listen, admin) = (free_port(), free_port());
    let upstream = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let up = upstream.local_addr().unwrap().port();
    let conns = Arc::new(AtomicUsize::new(0));
    let early_eof = Arc::new(AtomicBool::new(false));
    {
        let (conns, early_eof) = (conns.clone(), early_eof.clone());
        std::thread::spawn(move || duplex_upstream(upstream, conns, early_eof));
    }
    let cfg = format!(
        "admin: {{ address: 127.0.0.1:{admin} }}\n{}",
        http_config(listen, &[up], "", "")
    );
    let _s = start_sluice(&dir, &cfg, 1, addr(listen));

    // Ping-pong: 20 rounds, each chunk sent only after the previous one's echo came back.
    let mut s = TcpStream::connect(addr(listen)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut r = std::io::BufReader::new(s.try_clone().unwrap());
    s.write_all(b"POST /pingpong HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        .unwrap();
    let first = "a".repeat(70_000);
    let mut head = None;
    for i in 0..20 {
        let chunk = if i == 0 {
            first.clone()
        } else {
            format!("p{i}")
        };
        s.write_all(format!("{:x}\r\n{chunk}\r\n", chunk.len()).as_bytes())
            .unwrap();
        if head.is_none() {
            head = Some(read_head(&mut r));
        }
        let mut size = String::new();
        r.read_line(&mut size)
            .unwrap_or_else(|e| panic!("round {i}: no echo: {e}"));
        let n = usize::from_str_radix(size.trim(), 16).unwrap();
        let mut data = vec![0; n + 2];
        r.read_exact(&mut data).unwrap();
        let want = if i == 0 {
            "got 70000: aaaaaaaa".to_owned()
        } else {
            format!("got {}: p{i}", chunk.len())
        };
        assert_eq!(String::from_utf8_lossy(&data[..n]), want, "round {i}");
    }
    s.write_all(b"0\r\n\r\n").unwrap();
    let mut end = String::new();
    r.read_line(&mut end).unwrap();
    assert_eq!(end, "0\r\n");
    let mut rest = Vec::new();
    r.read_to_end(&mut rest)
        .expect("the proxy closes the connection");
    assert_eq!(rest, b"\r\n");
    let head = head.unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("connection: close"),
        "{head}"
    );

    // An early whole answer to a 200 kB upload of which the client sent half and then waits.
    let received = "listener.http_in.downstream_bytes_received";
    let received_before = admin_stat(admin, received);
    let mut s = TcpStream::connect(addr(listen)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"POST /early HTTP/1.1\r\nHost: x\r\nContent-Length: 200000\r\n\r\n")
        .unwrap();
    s.write_all(&[b'e'; 100_000]).unwrap();
    let mut got = Vec::new();
    s.read_to_end(&mut got)
        .expect("the answer, then the proxy closes");
    let got = String::from_utf8_lossy(&got);
    assert!(got.starts_with("HTTP/1.1 200"), "{got}");
    assert!(got.ends_with("\r\n\r\nearly"), "{got}");
    assert!(
        got.to_ascii_lowercase().contains("connection: close"),
        "{got}"
    );
    // The proxy closed that upstream connection rather than pool it with a body half sent.
    assert!(
        eventually(Duration::from_secs(3), || early_eof.load(Ordering::SeqCst)),
        "the early upstream connection stayed open"
    );
    // What of the cut-short upload went upstream counts as received (not the head alone).
    let early_received = admin_stat(admin, received) - received_before;
    assert!(early_received > 1_000, "{early_received}");
    let (status, body) = http_request(addr(listen), "GET", "/plain");
    assert_eq!((status, body.as_str()), (200, "ok"));
    // The ping-pong's connection (request sent whole) was reused for /early; /early's was
    // not reused: /plain opened a second one.
    assert_eq!(conns.load(Ordering::SeqCst), 2);
    assert_eq!(admin_stat(admin, "cluster.app.upstream_rq_total"), 3);
    assert_eq!(admin_stat(admin, "cluster.app.upstream_rq_2xx"), 3);
    assert_eq!(admin_stat(admin, "cluster.app.upstream_cx_total"), 2);
}

/// Full duplex keeps Envoy's stream idle rule: the stream is idle only when neither way moves.
/// A watch whose client sends nothing for 1.5 s (over `stream_idle_timeout: 1s`) while its
/// answer flows (a tick every 250 ms) is not cut as a stalled upload.
#[test]
fn a_streamed_upload_is_not_idle_while_its_answer_flows() {
    use std::io::BufRead;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize};
    let dir = TempDir::new("http-duplex-idle");
    let listen = free_port();
    let upstream = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let up = upstream.local_addr().unwrap().port();
    let (conns, early_eof) = (
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicBool::new(false)),
    );
    std::thread::spawn(move || duplex_upstream(upstream, conns, early_eof));
    let cfg = http_config(listen, &[up], "      stream_idle_timeout: 1s\n", "");
    let _s = start_sluice(&dir, &cfg, 1, addr(listen));

    let mut s = TcpStream::connect(addr(listen)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut r = std::io::BufReader::new(s.try_clone().unwrap());
    s.write_all(b"POST /watch HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        .unwrap();
    for (round, chunk) in ["a".repeat(70_000), "again".to_owned()].iter().enumerate() {
        s.write_all(format!("{:x}\r\n{chunk}\r\n", chunk.len()).as_bytes())
            .unwrap();
        if round == 0 {
            let head = read_head(&mut r);
            assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        }
        for k in 0..6 {
            let mut line = String::new();
            r.read_line(&mut line).unwrap();
            assert_eq!(line, "6\r\n", "round {round} tick {k}");
            line.clear();
            r.read_line(&mut line).unwrap();
            assert_eq!(line, format!("tick {k}\r\n"), "round {round}");
        }
    }
    s.write_all(b"0\r\n\r\n").unwrap();
    let mut rest = Vec::new();
    r.read_to_end(&mut rest).unwrap();
    assert_eq!(rest, b"0\r\n\r\n");
}

/// Full duplex from an HTTP/2 client (node's `http2`) to an HTTP/1.1 upstream: the request's
/// DATA stream upstream as chunks while the upstream's answer, started at once, echoes each
/// chunk; the client sends each next message only once the previous one was echoed whole.
#[test]
fn an_http2_upload_to_an_http11_upstream_is_carried_full_duplex() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize};
    if !require_peers(&["node"]) {
        return;
    }
    let dir = TempDir::new("http-duplex-h2");
    let listen = free_port();
    let upstream = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let up = upstream.local_addr().unwrap().port();
    let (conns, early_eof) = (
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicBool::new(false)),
    );
    std::thread::spawn(move || duplex_upstream(upstream, conns, early_eof));
    let _s = start_sluice(&dir, &http_config(listen, &[up], "", ""), 1, addr(listen));

    let script = format!(
        r#"
const http2 = require('http2');
const c = http2.connect('http://127.0.0.1:{listen}');
const req = c.request({{ ':method': 'POST', ':path': '/pingpong', host: 'x' }});
const t0 = Date.now();
let text = '', want = 70000, round = 0, status = 0;
req.setEncoding('utf8');
req.on('response', (h) => {{ status = h[':status']; }});
req.on('data', (d) => {{
  text += d;
  const got = [...text.matchAll(/got (\d+):/g)].reduce((a, m) => a + Number(m[1]), 0);
  if (got !== want) return;
  round += 1;
  if (round === 10) return req.end();
  const m = 'p' + round;
  want += m.length;
  req.write(m);
}});
req.on('end', () => {{
  console.log(JSON.stringify({{ status, rounds: round, want, text, ms: Date.now() - t0 }}));
  c.close();
}});
req.on('error', (e) => {{ console.log(JSON.stringify({{ error: String(e), rounds: round }})); process.exit(0); }});
req.write('a'.repeat(70000));
"#
    );
    let out = run("timeout", &["10", "node", "-e", &script]);
    let line = String::from_utf8_lossy(&out.stdout).into_owned();
    let v: serde_json::Value = serde_json::from_str(line.trim())
        .unwrap_or_else(|e| panic!("{e}: {line} {}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(v["status"], 200, "{v}");
    assert_eq!(v["rounds"], 10, "{v}");
    let text = v["text"].as_str().unwrap();
    for i in 1..10 {
        assert!(text.contains(&format!("got 2: p{i}")), "{text}");
    }
    assert!(v["ms"].as_u64().unwrap() < 3_000, "{v}");
}

/// A streamed upload that stalls while its answer is silent too (neither way moves for
/// `stream_idle_timeout`) ends the call: the answer already under way is cut short (the
/// client's connection closes without the last chunk) and nothing more waits on it.
#[test]
fn a_duplex_call_idle_both_ways_is_cut_after_stream_idle_timeout() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize};
    let dir = TempDir::new("http-duplex-stall");
    let listen = free_port();
    let upstream = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let up = upstream.local_addr().unwrap().port();
    let (conns, early_eof) = (
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicBool::new(false)),
    );
    std::thread::spawn(move || duplex_upstream(upstream, conns, early_eof));
    let cfg = http_config(listen, &[up], "      stream_idle_timeout: 1s\n", "");
    let _s = start_sluice(&dir, &cfg, 1, addr(listen));

    let mut s = TcpStream::connect(addr(listen)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut r = std::io::BufReader::new(s.try_clone().unwrap());
    s.write_all(b"POST /watch HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        .unwrap();
    let chunk = "a".repeat(70_000);
    s.write_all(format!("{:x}\r\n{chunk}\r\n", chunk.len()).as_bytes())
        .unwrap();
    let head = read_head(&mut r);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let t0 = Instant::now();
    // Six ticks over 1.5 s, then silence both ways: cut about 1 s after the last tick.
    let mut rest = Vec::new();
    r.read_to_end(&mut rest)
        .expect("the proxy closes the connection");
    let rest = String::from_utf8_lossy(&rest);
    assert!(rest.contains("tick 5"), "{rest}");
    assert!(
        !rest.contains("0\r\n\r\n"),
        "the answer ended cleanly: {rest}"
    );
    let waited = t0.elapsed();
    assert!(
        waited > Duration::from_millis(2_200) && waited < Duration::from_millis(4_000),
        "{waited:?}"
    );
}

/// Reads a request head from `r` and returns it with its `content-length`.
fn read_request_head(r: &mut impl std::io::BufRead) -> (String, usize) {
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).unwrap_or(0) == 0 {
            return (head, 0);
        }
        head.push_str(&line);
        if line == "\r\n" {
            break;
        }
    }
    let length = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().unwrap())
        })
        .unwrap_or(0);
    (head, length)
}

/// A small body (200 bytes, well within the 64 KiB replay buffer) whose client sends the first
/// half, then waits for the answer: the first 100 bytes reach the upstream as they arrive, and
/// the upstream's answer — sent once it read them — reaches the client before the rest is
/// sent (a proxy that holds small bodies whole until they end would wait for ever). Defaults.
/// (An answer that ends before the request does ends the call: the rest is not sent.)
#[test]
fn a_small_body_streams_upstream_as_it_arrives() {
    let dir = TempDir::new("http-small-streamed");
    let listen = free_port();
    let upstream = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let up = upstream.local_addr().unwrap().port();
    // Answers once it read 100 bytes of the body, echoing them.
    let upstream = std::thread::spawn(move || {
        let (s, _) = upstream.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut w = s.try_clone().unwrap();
        let mut r = std::io::BufReader::new(s);
        let (_, length) = read_request_head(&mut r);
        assert_eq!(length, 200);
        let mut first = vec![0; 100];
        r.read_exact(&mut first).unwrap();
        let answer = format!("got:{}", String::from_utf8_lossy(&first));
        w.write_all(
            format!(
                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{answer}",
                answer.len()
            )
            .as_bytes(),
        )
        .unwrap();
    });
    let _s = start_sluice(&dir, &http_config(listen, &[up], "", ""), 1, addr(listen));
    let mut c = TcpStream::connect(addr(listen)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    c.write_all(
        format!(
            "POST /watch HTTP/1.1\r\nHost: example.com\r\nContent-Length: 200\r\n\r\n{}",
            "a".repeat(100)
        )
        .as_bytes(),
    )
    .unwrap();
    let mut r = std::io::BufReader::new(c.try_clone().unwrap());
    let head = read_head(&mut r);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let mut body = vec![0; 104];
    r.read_exact(&mut body)
        .expect("the answer before the rest of the body");
    assert_eq!(body, format!("got:{}", "a".repeat(100)).as_bytes());
    upstream.join().unwrap();
}

/// A small body that streamed (its client sent it in two parts, 300 ms apart) is kept for
/// retries: the upstream reads all of it and resets the connection without answering, and the
/// retry (`retry_on: [reset]`, an idempotent PUT) sends the whole body again — the second
/// connection gets all 200 bytes, and the client its answer.
#[test]
fn a_streamed_small_body_is_replayed_whole_by_a_retry() {
    let dir = TempDir::new("http-small-replayed");
    let listen = free_port();
    let upstream = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let up = upstream.local_addr().unwrap().port();
    // First connection: reads the whole request, then closes unanswered. Second: answers with
    // what it got.
    let seen = std::thread::spawn(move || {
        let mut bodies = Vec::new();
        for answer in [false, true] {
            let (s, _) = upstream.accept().unwrap();
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let mut w = s.try_clone().unwrap();
            let mut r = std::io::BufReader::new(s);
            let (_, length) = read_request_head(&mut r);
            let mut body = vec![0; length];
            r.read_exact(&mut body).unwrap();
            let body = String::from_utf8(body).unwrap();
            if answer {
                let text = format!("len={}", body.len());
                w.write_all(
                    format!(
                        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{text}",
                        text.len()
                    )
                    .as_bytes(),
                )
                .unwrap();
            }
            bodies.push(body);
        }
        bodies
    });
    let _s = start_sluice(
        &dir,
        &http_config(
            listen,
            &[up],
            "",
            "                retry_policy: { retry_on: [reset], num_retries: 1 }\n",
        ),
        1,
        addr(listen),
    );
    let mut c = TcpStream::connect(addr(listen)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    c.write_all(
        format!(
            "PUT /doc HTTP/1.1\r\nHost: example.com\r\nContent-Length: 200\r\n\
             Connection: close\r\n\r\n{}",
            "a".repeat(100)
        )
        .as_bytes(),
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    c.write_all("b".repeat(100).as_bytes()).unwrap();
    let mut got = String::new();
    let _ = c.read_to_string(&mut got);
    assert_eq!(status_of(&got), 200, "{got}");
    assert!(got.ends_with("len=200"), "{got}");
    let whole = format!("{}{}", "a".repeat(100), "b".repeat(100));
    assert_eq!(seen.join().unwrap(), [whole.clone(), whole]);
}

/// Answers one connection's request (head and `content-length` body) with `len=N`, N the body
/// length it read; returns the body.
fn answer_with_length(s: std::net::TcpStream) -> String {
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut w = s.try_clone().unwrap();
    let mut r = std::io::BufReader::new(s);
    let (_, length) = read_request_head(&mut r);
    let mut body = vec![0; length];
    r.read_exact(&mut body).unwrap();
    let text = format!("len={length}");
    w.write_all(
        format!(
            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{text}",
            text.len()
        )
        .as_bytes(),
    )
    .unwrap();
    String::from_utf8(body).unwrap()
}

/// Sends `method /doc` with a 200-byte body in two parts 200 ms apart (`a`s, then `b`s) and
/// returns the whole answer.
fn two_part_request(listen: u16, method: &str) -> String {
    let mut c = TcpStream::connect(addr(listen)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    c.write_all(
        format!(
            "{method} /doc HTTP/1.1\r\nHost: example.com\r\nContent-Length: 200\r\n\
             Connection: close\r\n\r\n{}",
            "a".repeat(100)
        )
        .as_bytes(),
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    c.write_all("b".repeat(100).as_bytes()).unwrap();
    let mut got = String::new();
    let _ = c.read_to_string(&mut got);
    got
}

/// A pooled keep-alive connection the upstream closes once the next request's head arrived
/// (the stale keep-alive race), while that request's body (a PUT, in two parts 200 ms apart)
/// is still arriving: the proxy reads the rest of the body into its replay copy and sends the
/// request again, whole, on a fresh connection — with the defaults (no retry policy), as for a
/// body that arrived whole.
#[test]
fn a_stale_pooled_connection_is_retried_while_a_small_body_still_arrives() {
    let dir = TempDir::new("http-stale-streamed");
    let listen = free_port();
    let upstream = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let up = upstream.local_addr().unwrap().port();
    let seen = std::thread::spawn(move || {
        // The first connection answers /warm, keeps alive, and closes once the next head came.
        let (s, _) = upstream.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut w = s.try_clone().unwrap();
        let mut r = std::io::BufReader::new(s);
        let (warm, _) = read_request_head(&mut r);
        assert!(warm.starts_with("GET /warm"), "{warm}");
        w.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
            .unwrap();
        let (next, _) = read_request_head(&mut r);
        drop((r, w));
        let (s, _) = upstream.accept().unwrap();
        (next, answer_with_length(s))
    });
    let _s = start_sluice(&dir, &http_config(listen, &[up], "", ""), 1, addr(listen));
    let warm = raw(
        listen,
        b"GET /warm HTTP/1.1\r\nHost: example.com\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status_of(&warm), 200, "{warm}");
    let got = two_part_request(listen, "PUT");
    assert_eq!(status_of(&got), 200, "{got}");
    assert!(got.ends_with("len=200"), "{got}");
    let (stale_head, body) = seen.join().unwrap();
    assert!(stale_head.starts_with("PUT /doc"), "{stale_head}");
    assert_eq!(body, format!("{}{}", "a".repeat(100), "b".repeat(100)));
}

/// Sends `method /doc` with a 200-byte body in two parts (`a`s, then `b`s): the second only
/// once `upstream_has_first` says the upstream read the first (so the body streamed: a proxy
/// that held it whole until its end fails here), 200 ms after that; returns the whole answer.
fn request_streamed_past_the_upstream(
    listen: u16,
    method: &str,
    upstream_has_first: &std::sync::mpsc::Receiver<()>,
) -> String {
    let mut c = TcpStream::connect(addr(listen)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    c.write_all(
        format!(
            "{method} /doc HTTP/1.1\r\nHost: example.com\r\nContent-Length: 200\r\n\
             Connection: close\r\n\r\n{}",
            "a".repeat(100)
        )
        .as_bytes(),
    )
    .unwrap();
    upstream_has_first
        .recv_timeout(Duration::from_secs(5))
        .expect("the upstream has the body's first part before the client sends the rest");
    std::thread::sleep(Duration::from_millis(200));
    c.write_all("b".repeat(100).as_bytes()).unwrap();
    let mut got = String::new();
    let _ = c.read_to_string(&mut got);
    got
}

/// A PUT whose upstream closes the connection mid-upload (it read the head and the first 100
/// of 200 bytes, the rest not yet sent by the client) is retried under
/// `retry_on: [reset]`: the proxy reads the rest into its replay copy, and the second
/// connection gets the whole body.
#[test]
fn a_reset_mid_upload_is_retried_with_the_whole_body() {
    let dir = TempDir::new("http-reset-mid-upload");
    let listen = free_port();
    let upstream = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let up = upstream.local_addr().unwrap().port();
    let (has_first, upstream_has_first) = std::sync::mpsc::channel();
    let seen = std::thread::spawn(move || {
        let (s, _) = upstream.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut r = std::io::BufReader::new(s);
        let (_, length) = read_request_head(&mut r);
        assert_eq!(length, 200);
        let mut first = vec![0; 100];
        r.read_exact(&mut first).unwrap();
        drop(r);
        has_first.send(()).unwrap();
        let (s, _) = upstream.accept().unwrap();
        (String::from_utf8(first).unwrap(), answer_with_length(s))
    });
    let _s = start_sluice(
        &dir,
        &http_config(
            listen,
            &[up],
            "",
            "                retry_policy: { retry_on: [reset], num_retries: 1 }\n",
        ),
        1,
        addr(listen),
    );
    let got = request_streamed_past_the_upstream(listen, "PUT", &upstream_has_first);
    assert_eq!(status_of(&got), 200, "{got}");
    assert!(got.ends_with("len=200"), "{got}");
    let (first, whole) = seen.join().unwrap();
    assert_eq!(first, "a".repeat(100));
    assert_eq!(whole, format!("{}{}", "a".repeat(100), "b".repeat(100)));
}

/// A PUT whose upstream answers 503 as soon as it read the first 100 of 200 bytes (the rest
/// not yet sent by the client) is retried under `retry_on: [5xx]` rather than answered 503:
/// the proxy reads the rest of the body into its replay copy — nothing more of it goes to the
/// upstream that answered — drops the 503, and the second connection gets the whole body.
#[test]
fn a_503_answered_while_the_body_still_arrives_is_retried_with_the_whole_body() {
    let dir = TempDir::new("http-503-mid-upload");
    let listen = free_port();
    let upstream = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let up = upstream.local_addr().unwrap().port();
    let (has_first, upstream_has_first) = std::sync::mpsc::channel();
    let seen = std::thread::spawn(move || {
        let (s, _) = upstream.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut w = s.try_clone().unwrap();
        let mut r = std::io::BufReader::new(s);
        let (_, length) = read_request_head(&mut r);
        assert_eq!(length, 200);
        let mut first = vec![0; 100];
        r.read_exact(&mut first).unwrap();
        w.write_all(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 4\r\n\r\nbusy")
            .unwrap();
        has_first.send(()).unwrap();
        // What else reaches this connection until the proxy closes it.
        let mut more = Vec::new();
        let _ = r.read_to_end(&mut more);
        let (s, _) = upstream.accept().unwrap();
        (
            String::from_utf8(first).unwrap(),
            more,
            answer_with_length(s),
        )
    });
    let _s = start_sluice(
        &dir,
        &http_config(
            listen,
            &[up],
            "",
            "                retry_policy: { retry_on: [5xx], num_retries: 1 }\n",
        ),
        1,
        addr(listen),
    );
    let got = request_streamed_past_the_upstream(listen, "PUT", &upstream_has_first);
    assert_eq!(status_of(&got), 200, "{got}");
    assert!(got.ends_with("len=200"), "{got}");
    let (first, more, whole) = seen.join().unwrap();
    assert_eq!(first, "a".repeat(100));
    assert_eq!(String::from_utf8_lossy(&more), "");
    assert_eq!(whole, format!("{}{}", "a".repeat(100), "b".repeat(100)));
}

/// An answer that comes while the body still arrives goes to the client when it will not be
/// retried after all, under `retry_on: [5xx]`: a POST's 503 at once (not idempotent: the rest
/// of the body is not waited for), a PUT's 503 once the rest of its body did not come within
/// the 3 s the proxy waits for it (the client waits for the answer before it sends more).
#[test]
fn a_503_answered_while_the_body_still_arrives_is_forwarded_when_it_will_not_be_retried() {
    let dir = TempDir::new("http-503-forwarded");
    let listen = free_port();
    let upstream = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let up = upstream.local_addr().unwrap().port();
    // Each connection: 503 once the first 100 of 200 bytes arrived, then hold it open.
    let (both_answered, answered) = std::sync::mpsc::channel();
    let answering = std::thread::spawn(move || {
        let mut held = Vec::new();
        for _ in 0..2 {
            let (s, _) = upstream.accept().unwrap();
            let mut w = s.try_clone().unwrap();
            let mut r = std::io::BufReader::new(s);
            read_request_head(&mut r);
            let mut first = vec![0; 100];
            r.read_exact(&mut first).unwrap();
            w.write_all(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 4\r\n\r\nbusy")
                .unwrap();
            held.push(r);
        }
        // A retry would be a third connection, by the time both answers are in.
        answered.recv().unwrap();
        std::thread::sleep(Duration::from_millis(300));
        upstream.set_nonblocking(true).unwrap();
        (held, upstream.accept().is_ok())
    });
    let _s = start_sluice(
        &dir,
        &http_config(
            listen,
            &[up],
            "",
            "                retry_policy: { retry_on: [5xx], num_retries: 1 }\n",
        ),
        1,
        addr(listen),
    );
    // The first half only; the answer must come anyway. (status, body, seconds waited)
    let half_then_wait = |method: &str| {
        let mut c = TcpStream::connect(addr(listen)).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let started = Instant::now();
        c.write_all(
            format!(
                "{method} /doc HTTP/1.1\r\nHost: example.com\r\nContent-Length: 200\r\n\r\n{}",
                "a".repeat(100)
            )
            .as_bytes(),
        )
        .unwrap();
        let mut r = std::io::BufReader::new(c);
        let head = read_head(&mut r);
        let mut body = [0; 4];
        r.read_exact(&mut body).unwrap();
        (
            status_of(&head),
            String::from_utf8_lossy(&body).into_owned(),
            started.elapsed().as_secs_f64(),
        )
    };
    let (status, body, waited) = half_then_wait("POST");
    assert_eq!((status, body.as_str()), (503, "busy"));
    assert!(waited < 1.5, "the POST's 503 took {waited} s");
    let (status, body, waited) = half_then_wait("PUT");
    assert_eq!((status, body.as_str()), (503, "busy"));
    assert!(
        (2.5..6.0).contains(&waited),
        "the PUT's 503 took {waited} s"
    );
    both_answered.send(()).unwrap();
    // No retry went out: one connection per request.
    let (held, third) = answering.join().unwrap();
    assert_eq!((held.len(), third), (2, false));
}

/// A POST (not idempotent: not retried once written) whose upstream closes mid-upload under
/// `retry_on: [reset]` is answered 502 at once: the proxy reads the rest of a body only for a
/// retry, so a client that waits for the answer before finishing its body is not left waiting.
#[test]
fn a_reset_mid_upload_that_will_not_be_retried_is_answered_without_waiting_for_the_body() {
    let dir = TempDir::new("http-reset-no-retry");
    let listen = free_port();
    let upstream = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let up = upstream.local_addr().unwrap().port();
    let closer = std::thread::spawn(move || {
        let (s, _) = upstream.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut r = std::io::BufReader::new(s);
        let (_, length) = read_request_head(&mut r);
        let mut first = vec![0; 100];
        r.read_exact(&mut first).unwrap();
        length
    });
    let _s = start_sluice(
        &dir,
        &http_config(
            listen,
            &[up],
            "",
            "                retry_policy: { retry_on: [reset], num_retries: 1 }\n",
        ),
        1,
        addr(listen),
    );
    let mut c = TcpStream::connect(addr(listen)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    c.write_all(
        format!(
            "POST /doc HTTP/1.1\r\nHost: example.com\r\nContent-Length: 200\r\n\r\n{}",
            "a".repeat(100)
        )
        .as_bytes(),
    )
    .unwrap();
    // The rest of the body is never sent: the answer must come anyway.
    let mut r = std::io::BufReader::new(c.try_clone().unwrap());
    let head = read_head(&mut r);
    assert_eq!(status_of(&head), 502, "{head}");
    assert_eq!(closer.join().unwrap(), 200);
}
