//! End-to-end tests of HTTP/2 upstreams (`protocol: http2` clusters) against real peers: node's
//! `http2` module as the h2c upstream (`tests/grpc/h2_upstream.js`, which describes each request
//! it got as JSON and logs it), curl over HTTP/1.1 and HTTP/2, node and h2load as clients.

mod support;

use std::collections::HashMap;
use std::io::ErrorKind;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use support::pki::stat;
use support::*;

fn start_h2_upstream(dir: &TempDir, name: &str, port: u16) -> (Proc, PathBuf) {
    let log = dir.path().join(format!("{name}.requests"));
    let script = repo().join("tests/grpc/h2_upstream.js");
    let mut p = spawn(
        dir,
        name,
        "node",
        &[
            script.to_str().unwrap(),
            &port.to_string(),
            name,
            log.to_str().unwrap(),
        ],
    );
    wait_listening(addr(port), &mut p);
    (p, log)
}

/// One `http` listener (the defaults a user gets) routing everything to cluster `app`, which
/// speaks HTTP/2 to its hosts; an admin port for the stats.
fn config(listen: u16, admin: u16, upstreams: &[u16]) -> String {
    let hosts: Vec<String> = upstreams
        .iter()
        .map(|p| format!("{{ address: 127.0.0.1:{p} }}"))
        .collect();
    format!(
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
            - match: {{ prefix: / }}
              route: {{ cluster: app }}
clusters:
  - name: app
    protocol: http2
    hosts: [ {} ]
"#,
        hosts.join(", ")
    )
}

/// `curl` with `args`: (status, body).
fn curl(args: &[&str]) -> (u16, String) {
    let mut all = vec!["-sS", "-o", "-", "-w", "\n%{http_code}", "--max-time", "10"];
    all.extend_from_slice(args);
    let out = run("curl", &all);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').expect("curl's -w line");
    (code.trim().parse().unwrap_or(0), body.to_owned())
}

fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

fn log_lines(log: &PathBuf) -> Vec<serde_json::Value> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(json)
        .collect()
}

#[test]
fn an_http11_client_reaches_an_http2_upstream_with_host_as_authority_and_bodies_as_data() {
    if !require_peers(&["node", "curl"]) {
        return;
    }
    let dir = TempDir::new("h2up-curl");
    let (listen, admin, up) = (free_port(), free_port(), free_port());
    let (_u, log) = start_h2_upstream(&dir, "up", up);
    let _sluice = start_sluice(&dir, &config(listen, admin, &[up]), 1, addr(listen));
    let base = format!("http://127.0.0.1:{listen}");

    let (status, body) = curl(&[
        "--http1.1",
        "-H",
        "Host: api.example",
        "-H",
        "TE: trailers",
        "-H",
        "Connection: keep-alive, x-hop",
        "-H",
        "x-hop: 1",
        &format!("{base}/x?q=1"),
    ]);
    assert_eq!(status, 200, "{body}");
    let seen = json(&body);
    assert_eq!(seen["method"], "GET");
    assert_eq!(seen["path"], "/x?q=1");
    assert_eq!(seen["authority"], "api.example");
    assert_eq!(seen["scheme"], "http");
    assert_eq!(seen["headers"]["te"], "trailers", "{seen}");
    assert!(seen["headers"].get("host").is_none(), "{seen}");
    assert!(seen["headers"].get("connection").is_none(), "{seen}");
    assert!(seen["headers"].get("x-hop").is_none(), "{seen}");
    assert!(seen["headers"].get("x-forwarded-for").is_some(), "{seen}");

    // A body of known length (larger than the stream window) and a chunked one with trailers.
    let payload = "a".repeat(300_000);
    let file = dir.write("payload", &payload);
    let at_file = format!("@{}", file.display());
    let (status, body) = curl(&[
        "--http1.1",
        "--data-binary",
        &at_file,
        &format!("{base}/upload"),
    ]);
    assert_eq!(status, 200, "{body}");
    let seen = json(&body);
    assert_eq!(seen["method"], "POST");
    assert_eq!(seen["body_len"], 300_000, "{seen}");
    assert_eq!(seen["headers"]["content-length"], "300000");

    let (status, body) = curl(&[
        "--http1.1",
        "--data-binary",
        &at_file,
        "-H",
        "Content-Length:",
        "-H",
        "Transfer-Encoding: chunked",
        &format!("{base}/chunked"),
    ]);
    assert_eq!(status, 200, "{body}");
    let seen = json(&body);
    assert_eq!(seen["body_len"], 300_000, "{seen}");
    assert!(seen["headers"].get("transfer-encoding").is_none(), "{seen}");

    // A response with trailers and no length reaches an HTTP/1.1 client chunked, trailers
    // included.
    let (status, raw) = curl(&[
        "--http1.1",
        "--raw",
        "-H",
        "TE: trailers",
        &format!("{base}/trailers"),
    ]);
    assert_eq!(status, 200, "{raw}");
    assert!(
        raw.contains("\r\n0\r\nx-checksum: "),
        "no chunked trailer: {raw:.200}"
    );
    assert_eq!(log_lines(&log).len(), 4);
    assert_eq!(
        stat(admin, "http2.upstream_cx_total"),
        1,
        "one multiplexed connection"
    );
    assert_eq!(stat(admin, "http2.upstream_streams_total"), 4);
}

/// Full duplex from an HTTP/1.1 client to an HTTP/2 upstream: a chunked upload streams (its
/// first chunk is over the 64 KiB replay buffer) while the upstream's answer, started at once,
/// streams back the size of each DATA frame it got; the client sends each next chunk only once
/// the sizes of the previous one came back.
#[test]
fn an_http11_upload_to_an_http2_upstream_is_carried_full_duplex() {
    use std::io::{BufRead, Read, Write};
    if !require_peers(&["node"]) {
        return;
    }
    let dir = TempDir::new("h2up-duplex");
    let (listen, admin, up) = (free_port(), free_port(), free_port());
    let (_u, _log) = start_h2_upstream(&dir, "up", up);
    let _sluice = start_sluice(&dir, &config(listen, admin, &[up]), 1, addr(listen));

    let mut s = std::net::TcpStream::connect(addr(listen)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut r = std::io::BufReader::new(s.try_clone().unwrap());
    s.write_all(b"POST /echo-sizes HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        .unwrap();
    // Reads response chunks until the echoed sizes add up to `want` more bytes.
    let mut text = String::new();
    let mut echoed = 0usize;
    let read_chunk = |r: &mut std::io::BufReader<std::net::TcpStream>, text: &mut String| {
        let mut size = String::new();
        r.read_line(&mut size).expect("an answer chunk");
        let n = usize::from_str_radix(size.trim(), 16).unwrap();
        let mut data = vec![0; n + 2];
        r.read_exact(&mut data).unwrap();
        text.push_str(std::str::from_utf8(&data[..n]).unwrap());
        n
    };
    let mut head = String::new();
    for i in 0..11 {
        let chunk = if i == 0 {
            "a".repeat(70_000)
        } else {
            format!("p{i}")
        };
        s.write_all(format!("{:x}\r\n{chunk}\r\n", chunk.len()).as_bytes())
            .unwrap();
        if i == 0 {
            loop {
                let mut line = String::new();
                r.read_line(&mut line).expect("a response head");
                head.push_str(&line);
                if line == "\r\n" {
                    break;
                }
            }
        }
        let target = echoed + chunk.len();
        while echoed < target {
            read_chunk(&mut r, &mut text);
            echoed = text
                .split(';')
                .filter_map(|n| n.parse::<usize>().ok())
                .sum();
        }
        assert_eq!(echoed, target, "round {i}: {text}");
    }
    s.write_all(b"0\r\n\r\n").unwrap();
    while !text.ends_with("end") {
        assert!(read_chunk(&mut r, &mut text) > 0, "{text}");
    }
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("x-upstream: up"), "{head}");
    assert_eq!(stat(admin, "http2.upstream_streams_total"), 1);
    assert_eq!(stat(admin, "http2.upstream_tx_reset"), 0);
}

/// An HTTP/2 upstream that answers whole before it read the request body (full duplex): the
/// client gets the whole answer at once although it has not finished sending, the proxy stops
/// sending, and the upstream's stream does not stay open.
#[test]
fn an_answer_that_ends_before_the_request_body_ends_the_call_and_its_upstream_stream() {
    if !require_peers(&["node"]) {
        return;
    }
    let dir = TempDir::new("h2up-early");
    let (listen, admin, up) = (free_port(), free_port(), free_port());
    let (_u, log) = start_h2_upstream(&dir, "up", up);
    let _sluice = start_sluice(&dir, &config(listen, admin, &[up]), 1, addr(listen));
    // An HTTP/2 client that sends 100 kB (streamed: over the replay buffer) and never ends its
    // request; it reports the answer once it ended.
    let script = format!(
        r#"
const http2 = require('http2');
const c = http2.connect('http://127.0.0.1:{listen}');
const req = c.request({{ ':method': 'POST', ':path': '/answer-early' }});
let body = '', status = 0;
req.setEncoding('utf8');
req.on('response', (h) => {{ status = h[':status']; }});
req.on('data', (d) => {{ body += d; }});
req.on('error', () => {{}});
req.on('end', () => {{ console.log(JSON.stringify({{ status, body }})); c.close(); c.destroy(); }});
req.write('x'.repeat(100000));
"#
    );
    let out = run("timeout", &["5", "node", "-e", &script]);
    let line = String::from_utf8_lossy(&out.stdout).into_owned();
    let v = json(line.trim());
    assert_eq!(v["status"], 200, "{v}");
    assert_eq!(v["body"], "early", "{v}");
    let mut closed = None;
    for _ in 0..100 {
        closed = log_lines(&log)
            .into_iter()
            .find(|l| l.get("early_closed").is_some());
        if closed.is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    // Closed by the upstream's own RST_STREAM(NO_ERROR) after its answer (RFC 9113 §8.1, as
    // node does) or by the proxy's CANCEL, whichever came first; either way not left open.
    let closed = closed.expect("the upstream stream stayed open");
    let code = closed["early_closed"].as_u64().unwrap();
    assert!(code == 0 || code == 8, "{closed}");
    assert_eq!(stat(admin, "http2.upstream_streams_active"), 0);
    assert_eq!(stat(admin, "cluster.app.upstream_rq_2xx"), 1);
}

#[test]
fn http2_client_to_http2_upstream_passes_trailers_through() {
    if !require_peers(&["node"]) {
        return;
    }
    let dir = TempDir::new("h2up-h2h2");
    let (listen, admin, up) = (free_port(), free_port(), free_port());
    let (_u, _log) = start_h2_upstream(&dir, "up", up);
    let _sluice = start_sluice(&dir, &config(listen, admin, &[up]), 1, addr(listen));
    let script = format!(
        r#"
const http2 = require('http2');
const crypto = require('crypto');
const session = http2.connect('http://127.0.0.1:{listen}');
const req = session.request({{ ':method': 'POST', ':path': '/trailers', 'te': 'trailers' }}, {{ waitForTrailers: true }});
req.on('wantTrailers', () => req.sendTrailers({{ 'x-sum': 'abc' }}));
const chunks = [];
let trailers = null;
req.on('response', (h) => console.log('status ' + h[':status']));
req.on('data', (d) => chunks.push(d));
req.on('trailers', (t) => trailers = t);
req.on('end', () => {{
  const body = Buffer.concat(chunks);
  const sum = crypto.createHash('sha256').update(body).digest('hex');
  const seen = JSON.parse(body.toString().slice(0, body.length / 50));
  console.log('request trailers ' + JSON.stringify(seen.trailers));
  console.log('checksum ' + (trailers && trailers['x-checksum'] === sum ? 'matches' : 'missing: ' + JSON.stringify(trailers)));
  session.close();
}});
req.end('hello');
"#
    );
    let out = run("node", &["-e", &script]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(
        text.trim(),
        "status 200\nrequest trailers {\"x-sum\":\"abc\"}\nchecksum matches",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn h2load_through_an_http2_upstream_with_slow_answers_has_no_failure() {
    if !require_peers(&["node", "h2load"]) {
        return;
    }
    let dir = TempDir::new("h2up-h2load");
    let (listen, admin, a, b) = (free_port(), free_port(), free_port(), free_port());
    let (_a, log_a) = start_h2_upstream(&dir, "a", a);
    let (_b, log_b) = start_h2_upstream(&dir, "b", b);
    let _sluice = start_sluice(&dir, &config(listen, admin, &[a, b]), 1, addr(listen));
    let out = run(
        "h2load",
        &[
            "-n",
            "400",
            "-c",
            "4",
            "-m",
            "25",
            &format!("http://127.0.0.1:{listen}/slow/30/x"),
        ],
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        text.contains("400 succeeded, 0 failed, 0 errored"),
        "{text}"
    );
    assert!(text.contains("status codes: 400 2xx"), "{text}");
    let (na, nb) = (log_lines(&log_a).len(), log_lines(&log_b).len());
    assert_eq!(na + nb, 400);
    assert!(na > 0 && nb > 0, "both upstreams used: {na} / {nb}");
    // Multiplexed: a few connections per upstream, not one per request in flight.
    assert!(
        stat(admin, "http2.upstream_cx_total") <= 20,
        "{}",
        stat(admin, "http2.upstream_cx_total")
    );
    assert_eq!(stat(admin, "http2.upstream_streams_active"), 0);
}

/// Runs `n` HTTP/1.1 POSTs at once (one connection each) and prints each status.
fn concurrent_posts(listen: u16, paths: &[&str]) -> Vec<u16> {
    let list = serde_json::to_string(paths).unwrap();
    let script = format!(
        r#"
const http = require('http');
const agent = new http.Agent({{ keepAlive: true, maxSockets: 64 }});
const paths = {list};
Promise.all(paths.map((p) => new Promise((resolve) => {{
  const req = http.request({{ host: '127.0.0.1', port: {listen}, method: 'POST', path: p, agent,
    headers: {{ 'content-type': 'text/plain' }} }}, (res) => {{ res.resume(); res.on('end', () => resolve(res.statusCode)); }});
  req.on('error', () => resolve(0));
  req.end('payload');
}}))).then((codes) => {{ console.log(codes.join(' ')); agent.destroy(); }});
"#
    );
    let out = run("node", &["-e", &script]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.split_whitespace()
        .map(|c| {
            c.parse()
                .unwrap_or_else(|_| panic!("{text} {}", String::from_utf8_lossy(&out.stderr)))
        })
        .collect()
}

#[test]
fn streams_a_goaway_left_unprocessed_are_sent_again_even_posts_and_processed_ones_finish() {
    if !require_peers(&["node", "curl"]) {
        return;
    }
    let dir = TempDir::new("h2up-goaway");
    let (listen, admin, up) = (free_port(), free_port(), free_port());
    let (_u, log) = start_h2_upstream(&dir, "up", up);
    let _sluice = start_sluice(&dir, &config(listen, admin, &[up]), 1, addr(listen));
    // The connection exists, so that the four requests share it.
    let (status, _) = curl(&["--http1.1", &format!("http://127.0.0.1:{listen}/warm")]);
    assert_eq!(status, 200);
    let paths = ["/goaway/a", "/goaway/b", "/goaway/c", "/goaway/d"];
    let codes = concurrent_posts(listen, &paths);
    assert_eq!(codes, vec![200; 4]);
    // Every POST was processed exactly once: two before the GOAWAY, two after it on a new
    // connection.
    let mut processed: HashMap<String, usize> = HashMap::new();
    for line in log_lines(&log) {
        if let Some(p) = line["path"].as_str()
            && p.starts_with("/goaway/")
        {
            *processed.entry(p.to_owned()).or_default() += 1;
        }
    }
    assert_eq!(processed.len(), 4, "{processed:?}");
    assert!(processed.values().all(|&n| n == 1), "{processed:?}");
    assert_eq!(stat(admin, "http2.upstream_refused"), 2);
    assert_eq!(stat(admin, "http2.upstream_cx_total"), 2);
    // The upstream's GOAWAY, counted once for its connection.
    assert_eq!(stat(admin, "http2.upstream_goaway_received"), 1);
}

#[test]
fn a_refused_stream_is_sent_again_whatever_the_method() {
    if !require_peers(&["node", "curl"]) {
        return;
    }
    let dir = TempDir::new("h2up-refused");
    let (listen, admin, up) = (free_port(), free_port(), free_port());
    let (_u, log) = start_h2_upstream(&dir, "up", up);
    let _sluice = start_sluice(&dir, &config(listen, admin, &[up]), 1, addr(listen));
    let (status, body) = curl(&[
        "--http1.1",
        "-d",
        "x",
        &format!("http://127.0.0.1:{listen}/refuse-once/t1"),
    ]);
    assert_eq!(status, 200, "{body}");
    assert_eq!(json(&body)["method"], "POST");
    let lines = log_lines(&log);
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_eq!(lines[0]["refused"], "/refuse-once/t1");
    assert_eq!(lines[1]["path"], "/refuse-once/t1");
    assert_eq!(stat(admin, "http2.upstream_refused"), 1);
}

/// A POST whose body arrives in two reads 200 ms apart, refused (REFUSED_STREAM) by the
/// upstream as soon as its HEADERS arrived — before the body's end: the proxy reads the rest of
/// the body into its replay copy and sends the request again, whole; the client gets 200 and
/// the upstream the whole 200 bytes. (Defaults: no retry policy.)
#[test]
fn a_stream_refused_while_its_body_still_arrives_is_sent_again_whole() {
    if !require_peers(&["node"]) {
        return;
    }
    let dir = TempDir::new("h2up-refused-early");
    let (listen, admin, up) = (free_port(), free_port(), free_port());
    let (_u, log) = start_h2_upstream(&dir, "up", up);
    let _sluice = start_sluice(&dir, &config(listen, admin, &[up]), 1, addr(listen));
    use std::io::{Read, Write};
    // The body in three parts 200 ms apart, framed by a content-length and then chunked (the
    // chunked copy went through another path).
    let chunk = |c: char, n: usize| format!("{n:x}\r\n{}\r\n", c.to_string().repeat(n));
    let framings = [
        (
            "Content-Length: 200",
            ["a".repeat(60), "b".repeat(70), "c".repeat(70)],
        ),
        (
            "Transfer-Encoding: chunked",
            [
                chunk('a', 60),
                chunk('b', 70),
                format!("{}0\r\n\r\n", chunk('c', 70)),
            ],
        ),
    ];
    for (i, (framing, parts)) in framings.iter().enumerate() {
        let mut c = std::net::TcpStream::connect(addr(listen)).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        c.write_all(
            format!(
                "POST /refuse-early/t{i} HTTP/1.1\r\nHost: example.com\r\n{framing}\r\n\
                 Connection: close\r\n\r\n{}",
                parts[0]
            )
            .as_bytes(),
        )
        .unwrap();
        for part in &parts[1..] {
            std::thread::sleep(Duration::from_millis(200));
            c.write_all(part.as_bytes()).unwrap();
        }
        let mut got = String::new();
        let _ = c.read_to_string(&mut got);
        assert!(got.starts_with("HTTP/1.1 200"), "{framing}: {got}");
        let (_, body) = got.split_once("\r\n\r\n").expect("a response head");
        let seen = json(
            body.trim_start_matches(|c: char| c.is_ascii_hexdigit() || c == '\r' || c == '\n'),
        );
        assert_eq!(seen["method"], "POST", "{framing}: {seen}");
        assert_eq!(seen["body_len"], 200, "{framing}: {seen}");
        let lines = log_lines(&log);
        assert_eq!(lines.len(), 2 * (i + 1), "{framing}: {lines:?}");
        assert_eq!(lines[2 * i]["refused"], format!("/refuse-early/t{i}"));
        assert_eq!(lines[2 * i + 1]["path"], format!("/refuse-early/t{i}"));
        assert_eq!(stat(admin, "http2.upstream_refused"), i as u64 + 1);
    }
}

/// A PUT whose HTTP/2 upstream answers 503 at once, before the body's end (the body in three
/// parts 200 ms apart), under `retry_on: [5xx]`: the proxy reads the rest of the body into its
/// replay copy, drops the 503 (the upstream's stream is reset) and sends the request again,
/// whole; the client gets 200 and the upstream the whole 200 bytes. An HTTP/1.1 client, then
/// an HTTP/2 one.
#[test]
fn a_503_from_an_http2_upstream_while_the_body_still_arrives_is_retried_whole() {
    if !require_peers(&["node"]) {
        return;
    }
    let dir = TempDir::new("h2up-503-early");
    let (listen, admin, up) = (free_port(), free_port(), free_port());
    let (_u, log) = start_h2_upstream(&dir, "up", up);
    let yaml = config(listen, admin, &[up]).replace(
        "route: { cluster: app }",
        "route: { cluster: app, retry_policy: { retry_on: [5xx], num_retries: 1 } }",
    );
    let _sluice = start_sluice(&dir, &yaml, 1, addr(listen));
    use std::io::{Read, Write};
    let mut c = std::net::TcpStream::connect(addr(listen)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    c.write_all(
        format!(
            "PUT /503-early/t HTTP/1.1\r\nHost: example.com\r\nContent-Length: 200\r\n\
             Connection: close\r\n\r\n{}",
            "a".repeat(60)
        )
        .as_bytes(),
    )
    .unwrap();
    for part in ["b".repeat(70), "c".repeat(70)] {
        std::thread::sleep(Duration::from_millis(200));
        c.write_all(part.as_bytes()).unwrap();
    }
    let mut got = String::new();
    let _ = c.read_to_string(&mut got);
    assert!(got.starts_with("HTTP/1.1 200"), "{got}");
    let (_, body) = got.split_once("\r\n\r\n").expect("a response head");
    let seen = json(body);
    assert_eq!(seen["method"], "PUT", "{seen}");
    assert_eq!(seen["body_len"], 200, "{seen}");
    let lines = log_lines(&log);
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_eq!(lines[0]["early_503"], "/503-early/t");
    assert_eq!(lines[1]["path"], "/503-early/t");

    // The same from an HTTP/2 client (its body in DATA frames 200 ms apart).
    let script = format!(
        r#"
const http2 = require('http2');
const session = http2.connect('http://127.0.0.1:{listen}');
session.on('error', (e) => {{ console.log('error ' + e.code); process.exit(1); }});
const req = session.request({{ ':method': 'PUT', ':path': '/503-early/h2', 'content-length': '200' }});
let status = 0, body = '';
req.on('response', (h) => {{ status = h[':status']; }});
req.on('data', (d) => body += d);
req.on('end', () => {{ console.log(status + ' ' + body); session.close(); }});
req.write('a'.repeat(60));
setTimeout(() => req.write('b'.repeat(70)), 200);
setTimeout(() => req.end('c'.repeat(70)), 400);
"#
    );
    let out = run("node", &["-e", &script]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (status, body) = text.trim().split_once(' ').expect("status and body");
    assert_eq!(
        status,
        "200",
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seen = json(body);
    assert_eq!(
        (&seen["method"], &seen["body_len"]),
        (&"PUT".into(), &200.into()),
        "{seen}"
    );
    let lines = log_lines(&log);
    assert_eq!(lines.len(), 4, "{lines:?}");
    assert_eq!(lines[2]["early_503"], "/503-early/h2");
    assert_eq!(lines[3]["path"], "/503-early/h2");
}

#[test]
fn a_refused_stream_whose_client_waits_before_the_rest_of_its_body_is_answered_without_the_retry() {
    if !require_peers(&["node"]) {
        return;
    }
    let dir = TempDir::new("h2up-refused-waiting");
    let (listen, admin, up) = (free_port(), free_port(), free_port());
    let (_u, log) = start_h2_upstream(&dir, "up", up);
    // Defaults: `stream_idle_timeout` is 5 minutes.
    let _sluice = start_sluice(&dir, &config(listen, admin, &[up]), 1, addr(listen));
    use std::io::{Read, Write};
    let mut c = std::net::TcpStream::connect(addr(listen)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    // Half the body, then the client waits for an answer (a watch-like client): the refused
    // try cannot be replayed until the body is whole, which it will not be.
    c.write_all(
        format!(
            "POST /refuse-early/w HTTP/1.1\r\nHost: example.com\r\nContent-Length: 200\r\n\r\n{}",
            "a".repeat(100)
        )
        .as_bytes(),
    )
    .unwrap();
    let mut got = String::new();
    let _ = c.read_to_string(&mut got);
    assert!(got.starts_with("HTTP/1.1 502"), "{got:?}");
    assert!(
        got.to_ascii_lowercase().contains("connection: close"),
        "{got}"
    );
    let lines = log_lines(&log);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["refused"], "/refuse-early/w");
    assert_eq!(stat(admin, "http2.upstream_refused"), 1);
}

#[test]
fn a_pooled_connection_the_upstream_dropped_without_goaway_is_stale_for_idempotent_requests() {
    if !require_peers(&["node", "curl"]) {
        return;
    }
    let dir = TempDir::new("h2up-dropped");
    let (listen, admin, up) = (free_port(), free_port(), free_port());
    let (_u, log) = start_h2_upstream(&dir, "up", up);
    let _sluice = start_sluice(&dir, &config(listen, admin, &[up]), 1, addr(listen));
    let base = format!("http://127.0.0.1:{listen}");
    assert_eq!(curl(&["--http1.1", &format!("{base}/warm")]).0, 200);
    assert_eq!(stat(admin, "http2.upstream_cx_total"), 1);

    // The upstream closes the pooled connection as the GET goes out on it, with no GOAWAY: the
    // GET is sent again once, on a fresh connection (the keep-alive race, as for HTTP/1.1).
    let (status, body) = curl(&["--http1.1", &format!("{base}/drop-connection/get")]);
    assert_eq!(status, 200, "{body}");
    let lines = log_lines(&log);
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert_eq!(lines[1]["dropped"], "/drop-connection/get");
    assert_eq!(lines[2]["path"], "/drop-connection/get");
    assert_eq!(stat(admin, "http2.upstream_cx_total"), 2);

    // A POST that met the same fate may have been acted on: never sent twice (502 UC).
    let (status, body) = curl(&[
        "--http1.1",
        "-d",
        "x",
        &format!("{base}/drop-connection/post"),
    ]);
    assert_eq!(status, 502, "{body}");
    let lines = log_lines(&log);
    assert_eq!(lines.len(), 4, "{lines:?}");
    assert_eq!(lines[3]["dropped"], "/drop-connection/post");
    assert_eq!(lines[3]["method"], "POST");
    assert_eq!(stat(admin, "http2.upstream_cx_total"), 2);
}

/// A TCP relay from `listen` to `to` that forwards both ways until `stall` is set, then holds
/// the connections it had accepted without reading or writing (an upstream that stops
/// answering, PINGs included), until `stop` is set; connections accepted later are relayed.
fn stalling_relay(listen: u16, to: u16, stall: Arc<AtomicBool>, stop: Arc<AtomicBool>) {
    let listener = std::net::TcpListener::bind(addr(listen)).unwrap();
    listener.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        while !stop.load(Ordering::SeqCst) {
            let Ok((down, _)) = listener.accept() else {
                std::thread::sleep(Duration::from_millis(10));
                continue;
            };
            down.set_nonblocking(false).unwrap();
            let up = std::net::TcpStream::connect(addr(to)).unwrap();
            // A connection accepted once the stall began is relayed: only the earlier ones
            // stand for a dead path.
            let stalls = !stall.load(Ordering::SeqCst);
            for (from, into) in [
                (down.try_clone().unwrap(), up.try_clone().unwrap()),
                (up, down),
            ] {
                let (stall, stop) = (stall.clone(), stop.clone());
                std::thread::spawn(move || {
                    let never = AtomicBool::new(false);
                    relay_one_way(from, into, if stalls { &stall } else { &never }, &stop)
                });
            }
        }
    });
}

fn relay_one_way(
    mut from: std::net::TcpStream,
    mut into: std::net::TcpStream,
    stall: &AtomicBool,
    stop: &AtomicBool,
) {
    use std::io::{Read, Write};
    from.set_read_timeout(Some(Duration::from_millis(20)))
        .unwrap();
    let mut buf = [0u8; 16 * 1024];
    while !stop.load(Ordering::SeqCst) {
        if stall.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(20));
            continue;
        }
        match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                // A read already in progress when the stall begins must not forward what it
                // got: the bytes are held until `stop`, so nothing crosses once stalled.
                while stall.load(Ordering::SeqCst) && !stop.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(20));
                }
                if stop.load(Ordering::SeqCst) || into.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => break,
        }
    }
    let _ = into.shutdown(std::net::Shutdown::Write);
}

#[test]
fn an_unanswered_keepalive_ping_closes_the_connection_and_fails_its_streams_as_resets() {
    if !require_peers(&["node", "curl"]) {
        return;
    }
    let dir = TempDir::new("h2up-keepalive");
    let (listen, admin, up, relay) = (free_port(), free_port(), free_port(), free_port());
    let (_u, _log) = start_h2_upstream(&dir, "up", up);
    let (stall, stop) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicBool::new(false)),
    );
    stalling_relay(relay, up, stall.clone(), stop.clone());
    let yaml = config(listen, admin, &[relay]).replace(
        "    protocol: http2\n",
        "    protocol: http2\n    http2: { connection_keepalive: { interval: 200ms, timeout: 300ms } }\n",
    );
    let _sluice = start_sluice(&dir, &yaml, 1, addr(listen));
    let base = format!("http://127.0.0.1:{listen}");
    // Answered PINGs keep the connection: a request after a few intervals reuses it.
    assert_eq!(curl(&["--http1.1", &format!("{base}/first")]).0, 200);
    std::thread::sleep(Duration::from_millis(700));
    assert_eq!(curl(&["--http1.1", &format!("{base}/second")]).0, 200);
    assert_eq!(stat(admin, "http2.upstream_cx_total"), 1);
    assert_eq!(stat(admin, "http2.upstream_keepalive_timeout"), 0);

    // The upstream stops answering: the request's stream fails as a reset (502 UC) once a PING
    // goes unanswered, long before the route's 15 s timeout (curl gives up at 10 s).
    stall.store(true, Ordering::SeqCst);
    let (status, body) = curl(&["--http1.1", &format!("{base}/stalled")]);
    assert_eq!(status, 502, "{body}");
    assert!(stat(admin, "http2.upstream_keepalive_timeout") >= 1);
    assert!(stat(admin, "http2.upstream_rx_reset") >= 1);
    // No RST_STREAM: the streams were cut by their connection ending.
    assert_eq!(
        stat(admin, "http2.upstream_rx_reset_code.connection"),
        stat(admin, "http2.upstream_rx_reset")
    );
    stop.store(true, Ordering::SeqCst);
}

/// A relay from `listen` to `to` whose upstream-to-client direction carries at most `rate`
/// bytes a second (2 KiB every `2048 / rate` s): a slow path, where the upstream's PING ACK
/// queues behind the response it is sending.
fn throttling_relay(listen: u16, to: u16, rate: u64, stop: Arc<AtomicBool>) {
    let listener = std::net::TcpListener::bind(addr(listen)).unwrap();
    listener.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        while !stop.load(Ordering::SeqCst) {
            let Ok((down, _)) = listener.accept() else {
                std::thread::sleep(Duration::from_millis(10));
                continue;
            };
            down.set_nonblocking(false).unwrap();
            let up = std::net::TcpStream::connect(addr(to)).unwrap();
            let (s1, s2) = (stop.clone(), stop.clone());
            let (d, u) = (down.try_clone().unwrap(), up.try_clone().unwrap());
            std::thread::spawn(move || {
                let never = AtomicBool::new(false);
                relay_one_way(d, u, &never, &s1);
            });
            std::thread::spawn(move || {
                use std::io::{Read, Write};
                let (mut from, mut into) = (up, down);
                let mut buf = [0u8; 2048];
                let pause = Duration::from_micros(2048 * 1_000_000 / rate);
                while !s2.load(Ordering::SeqCst) {
                    match from.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if into.write_all(&buf[..n]).is_err() {
                                break;
                            }
                            std::thread::sleep(pause);
                        }
                    }
                }
                let _ = into.shutdown(std::net::Shutdown::Write);
            });
        }
    });
}

/// As in Envoy, frames that arrive while a keepalive PING is out extend its timeout: behind a
/// slow path, an upstream's PING ACK queues behind the large response it is sending, and the
/// connection — whose bytes keep coming — is not taken for hung (the response completes).
#[test]
fn an_upstream_whose_ping_ack_queues_behind_a_large_response_is_not_taken_for_hung() {
    if !require_peers(&["node", "curl"]) {
        return;
    }
    let dir = TempDir::new("h2up-keepalive-slow-path");
    let (listen, admin, up, relay) = (free_port(), free_port(), free_port(), free_port());
    let (_u, _log) = start_h2_upstream(&dir, "up", up);
    let stop = Arc::new(AtomicBool::new(false));
    throttling_relay(relay, up, 150_000, stop.clone());
    let yaml = config(listen, admin, &[relay]).replace(
        "    protocol: http2\n",
        "    protocol: http2\n    http2: { connection_keepalive: { interval: 200ms, timeout: 300ms } }\n",
    );
    let _sluice = start_sluice(&dir, &yaml, 1, addr(listen));
    // 600 KB at 150 KB/s: about 4 s, the ACK of each PING a stream window (256 KiB) behind.
    let (status, body) = curl(&[
        "--http1.1",
        &format!("http://127.0.0.1:{listen}/bytes/600000"),
    ]);
    assert_eq!((status, body.len()), (200, 600_000));
    assert_eq!(stat(admin, "http2.upstream_keepalive_timeout"), 0);
    assert_eq!(stat(admin, "http2.upstream_cx_total"), 1);
    stop.store(true, Ordering::SeqCst);
}

/// An idle pooled HTTP/2 connection whose PING goes unanswered (the path to its upstream died
/// silently) leaves the pool: the next request opens a new connection and is answered, instead
/// of being sent into the dead one (where, without keepalive, it waits past curl's 10 s).
#[test]
fn an_idle_upstream_connection_whose_ping_goes_unanswered_leaves_the_pool() {
    if !require_peers(&["node", "curl"]) {
        return;
    }
    let dir = TempDir::new("h2up-keepalive-pool");
    let (listen, admin, up, relay) = (free_port(), free_port(), free_port(), free_port());
    let (_u, _log) = start_h2_upstream(&dir, "up", up);
    let (stall, stop) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicBool::new(false)),
    );
    stalling_relay(relay, up, stall.clone(), stop.clone());
    let yaml = config(listen, admin, &[relay]).replace(
        "    protocol: http2\n",
        "    protocol: http2\n    http2: { connection_keepalive: { interval: 200ms, timeout: 300ms } }\n",
    );
    let _sluice = start_sluice(&dir, &yaml, 1, addr(listen));
    let base = format!("http://127.0.0.1:{listen}");
    assert_eq!(curl(&["--http1.1", &format!("{base}/first")]).0, 200);
    assert_eq!(stat(admin, "http2.upstream_cx_total"), 1);
    // The pooled connection's path goes dead while it is idle; its next PING is not answered.
    stall.store(true, Ordering::SeqCst);
    let mut timeouts = 0;
    for _ in 0..50 {
        timeouts = stat(admin, "http2.upstream_keepalive_timeout");
        if timeouts > 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(timeouts, 1);
    let (status, body) = curl(&["--http1.1", &format!("{base}/after")]);
    assert_eq!(status, 200, "{body}");
    assert_eq!(stat(admin, "http2.upstream_cx_total"), 2);
    assert_eq!(stat(admin, "http2.upstream_rx_reset"), 0);
    stop.store(true, Ordering::SeqCst);
}

// ---- gRPC with grpc-js (tests/grpc/peer.js) on both sides ----------------------------------

fn start_grpc_server(dir: &TempDir, name: &str, port: u16) -> Proc {
    let script = repo().join("tests/grpc/peer.js");
    let mut p = spawn(
        dir,
        name,
        "node",
        &[script.to_str().unwrap(), "server", &port.to_string(), name],
    );
    wait_listening(addr(port), &mut p);
    p
}

/// Runs a grpc-js client case through the proxy on `listen`; its JSON line.
fn grpc_client(listen: u16, case: &str) -> serde_json::Value {
    let script = repo().join("tests/grpc/peer.js");
    let out = run(
        "timeout",
        &[
            "20",
            "node",
            script.to_str().unwrap(),
            "client",
            &format!("127.0.0.1:{listen}"),
            case,
        ],
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    serde_json::from_str(text.trim()).unwrap_or_else(|e| {
        panic!(
            "{case}: {e}: {text} {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// [`config`] with the route's `timeout` set.
fn config_with_timeout(listen: u16, admin: u16, upstreams: &[u16], timeout: &str) -> String {
    config(listen, admin, upstreams).replace(
        "route: { cluster: app }",
        &format!("route: {{ cluster: app, timeout: {timeout} }}"),
    )
}

#[test]
fn grpc_unary_streaming_bidi_and_errors_through_an_http2_cluster() {
    if !require_peers(&["grpc-js"]) {
        return;
    }
    let dir = TempDir::new("grpc-calls");
    let (listen, admin, a, b) = (free_port(), free_port(), free_port(), free_port());
    let _a = start_grpc_server(&dir, "a", a);
    let _b = start_grpc_server(&dir, "b", b);
    let _sluice = start_sluice(&dir, &config(listen, admin, &[a, b]), 1, addr(listen));

    // 200 unary calls (20 in flight, 20 ms answers) over two upstreams: all answered, both used.
    let unary = grpc_client(listen, "unary:200");
    assert_eq!(unary["ok"], true, "{unary}");
    let (na, nb) = (
        unary["by"]["a"].as_u64().unwrap_or(0),
        unary["by"]["b"].as_u64().unwrap_or(0),
    );
    assert_eq!(na + nb, 200, "{unary}");
    assert!(na > 0 && nb > 0, "{unary}");

    let stream = grpc_client(listen, "stream");
    assert_eq!(stream["ok"], true, "{stream}");
    assert_eq!(
        stream["got"],
        serde_json::json!(["s:0", "s:1", "s:2", "s:3", "s:4"])
    );

    let bidi = grpc_client(listen, "bidi");
    assert_eq!(bidi["ok"], true, "{bidi}");
    assert_eq!(bidi["got"], serde_json::json!(["b0", "b1", "b2"]));

    // An error status of the server reaches the client as it was sent.
    let error = grpc_client(listen, "error");
    assert_eq!(error["code"], 5, "{error}");
    assert_eq!(error["details"], "told to fail: e", "{error}");
    assert_eq!(stat(admin, "http2.upstream_streams_active"), 0);
}

/// A bidirectional call whose client waits for each answer before it sends its next message
/// (ping-pong): the proxy reads and forwards the upstream's answers while the request body is
/// still open (full duplex), so each round trip takes milliseconds and the call ends well
/// before its 10 s deadline — rather than stalling until it.
#[test]
fn a_grpc_bidi_call_whose_client_waits_for_each_echo_is_carried_full_duplex() {
    if !require_peers(&["grpc-js"]) {
        return;
    }
    let dir = TempDir::new("grpc-pingpong");
    let (listen, admin, a) = (free_port(), free_port(), free_port());
    let _a = start_grpc_server(&dir, "a", a);
    let _sluice = start_sluice(&dir, &config(listen, admin, &[a]), 1, addr(listen));

    let call = grpc_client(listen, "pingpong:20");
    assert_eq!(call["ok"], true, "{call}");
    let want: Vec<String> = (0..20).map(|i| format!("a:p{i}")).collect();
    assert_eq!(call["got"], serde_json::json!(want), "{call}");
    let ms = call["ms"].as_u64().unwrap();
    assert!(ms < 5_000, "20 rounds took {ms} ms: {call}");
    // One call, one upstream stream, answered 200 (grpc-status 0 in its trailers), nothing
    // reset either way and nothing left open.
    assert_eq!(stat(admin, "cluster.app.upstream_rq_total"), 1);
    assert_eq!(stat(admin, "cluster.app.upstream_rq_2xx"), 1);
    assert_eq!(stat(admin, "http2.upstream_streams_total"), 1);
    assert_eq!(stat(admin, "http2.upstream_tx_reset"), 0);
    assert_eq!(stat(admin, "http2.upstream_rx_reset"), 0);
    assert_eq!(stat(admin, "http2.upstream_streams_active"), 0);
}

#[test]
fn the_access_log_has_each_grpc_calls_status_over_http2_and_http11() {
    if !require_peers(&["grpc-js", "curl"]) {
        return;
    }
    let with_log = |yaml: String, log: &PathBuf| {
        yaml.replace(
            "    http:\n",
            &format!(
                "    http:\n      access_log: {{ format: json, path: {} }}\n",
                log.display()
            ),
        )
    };
    let statuses = |log: &PathBuf| -> Vec<(String, String, serde_json::Value)> {
        log_lines(log)
            .into_iter()
            .map(|l| {
                let path = l["path"].as_str().unwrap_or("");
                let method = path.rsplit('/').next().unwrap_or("").to_owned();
                (
                    l["protocol"].as_str().unwrap_or("").to_owned(),
                    method,
                    l["grpc_status"].clone(),
                )
            })
            .collect()
    };
    let dir = TempDir::new("grpc-log");
    let (listen, admin, up, dead) = (free_port(), free_port(), free_port(), free_port());
    let _up = start_grpc_server(&dir, "up", up);
    let log = dir.path().join("access.log");
    let sluice = start_sluice(
        &dir,
        &with_log(config(listen, admin, &[up]), &log),
        1,
        addr(listen),
    );
    // HTTP/2 clients: a success (status 0 in the trailers), an error (trailers-only, 5).
    assert_eq!(grpc_client(listen, "unary:1")["ok"], true);
    assert_eq!(grpc_client(listen, "error")["code"], 5);
    // HTTP/1.1 clients: a gRPC call to a method the server lacks (trailers-only
    // UNIMPLEMENTED, 12), and a request that is not gRPC.
    let base = format!("http://127.0.0.1:{listen}");
    let nope = format!("{base}/sluice.Nope/Nope");
    let grpc_type = "content-type: application/grpc";
    assert_eq!(
        curl(&["--http1.1", "-H", grpc_type, "-d", "x", &nope]).0,
        200
    );
    curl(&["--http1.1", &format!("{base}/plain")]);
    // Lines are written at the latest when the process ends (SIGTERM).
    stop_gracefully(sluice, Duration::from_secs(10));
    assert_eq!(
        statuses(&log),
        [
            ("HTTP/2".into(), "Unary".into(), serde_json::json!(0)),
            ("HTTP/2".into(), "Unary".into(), serde_json::json!(5)),
            ("HTTP/1.1".into(), "Nope".into(), serde_json::json!(12)),
            ("HTTP/1.1".into(), "plain".into(), serde_json::Value::Null),
        ]
    );

    // The proxy's own answer to a gRPC call (no upstream: UNAVAILABLE, 14).
    let (listen, admin) = (free_port(), free_port());
    let log = dir.path().join("access-dead.log");
    let sluice = start_sluice(
        &dir,
        &with_log(config(listen, admin, &[dead]), &log),
        1,
        addr(listen),
    );
    assert_eq!(grpc_client(listen, "error")["code"], 14);
    stop_gracefully(sluice, Duration::from_secs(10));
    assert_eq!(
        statuses(&log),
        [("HTTP/2".into(), "Unary".into(), serde_json::json!(14))]
    );
}

#[test]
fn grpc_errors_the_proxy_answers_are_trailers_only_with_envoys_status() {
    if !require_peers(&["grpc-js"]) {
        return;
    }
    let dir = TempDir::new("grpc-local");
    let (listen, admin, up, dead) = (free_port(), free_port(), free_port(), free_port());
    // The route's timeout passes before the answer: DEADLINE_EXCEEDED from the proxy. (An
    // upstream that ignores `grpc-timeout`: a grpc-js server enforces the deadline the proxy
    // sends it — the time left of the route's — and its own DEADLINE_EXCEEDED could reach the
    // client first on a loaded machine.)
    let (_up, _) = start_h2_upstream(&dir, "up", up);
    let _sluice = start_sluice(
        &dir,
        &config_with_timeout(listen, admin, &[up], "300ms"),
        1,
        addr(listen),
    );
    let out = run(
        "curl",
        &[
            "-sS",
            "--max-time",
            "10",
            "--http2-prior-knowledge",
            "-D",
            "-",
            "-o",
            "/dev/null",
            "-H",
            "content-type: application/grpc",
            "-H",
            "te: trailers",
            "--data-binary",
            "",
            &format!("http://127.0.0.1:{listen}/slow/3000/sluice.test.Echo/Unary"),
        ],
    );
    let head = String::from_utf8_lossy(&out.stdout).to_lowercase();
    assert!(head.starts_with("http/2 200"), "{head}");
    assert!(head.contains("grpc-status: 4\r\n"), "{head}");
    assert!(
        head.contains("grpc-message: upstream request timeout\r\n"),
        "{head}"
    );

    // No upstream listening: UNAVAILABLE with the proxy's reason.
    let dir2 = TempDir::new("grpc-local-dead");
    let (listen2, admin2) = (free_port(), free_port());
    let _sluice2 = start_sluice(&dir2, &config(listen2, admin2, &[dead]), 1, addr(listen2));
    let refused = grpc_client(listen2, "error");
    assert_eq!(refused["code"], 14, "{refused}");
    assert_eq!(refused["details"], "upstream connect error", "{refused}");
}

#[test]
fn a_grpc_upstream_killed_mid_stream_ends_the_call_unavailable() {
    if !require_peers(&["grpc-js"]) {
        return;
    }
    let dir = TempDir::new("grpc-die");
    let (listen, admin, up) = (free_port(), free_port(), free_port());
    let _up = start_grpc_server(&dir, "up", up);
    let _sluice = start_sluice(&dir, &config(listen, admin, &[up]), 1, addr(listen));
    let died = grpc_client(listen, "die");
    assert_eq!(died["code"], 14, "{died}");
    assert_eq!(died["got"], 2, "{died}");
}

#[test]
fn grpc_timeout_caps_the_route_timeout_and_the_upstream_gets_the_time_left() {
    if !require_peers(&["node", "curl"]) {
        return;
    }
    let dir = TempDir::new("grpc-timeout");
    let (listen, admin, up) = (free_port(), free_port(), free_port());
    let (_u, _log) = start_h2_upstream(&dir, "up", up);
    let _sluice = start_sluice(
        &dir,
        &config_with_timeout(listen, admin, &[up], "1s"),
        1,
        addr(listen),
    );
    let seen_timeout = |value: &str| -> f64 {
        let (status, body) = curl(&[
            "--http2-prior-knowledge",
            "-H",
            "content-type: application/grpc",
            "-H",
            &format!("grpc-timeout: {value}"),
            &format!("http://127.0.0.1:{listen}/x"),
        ]);
        assert_eq!(status, 200, "{body}");
        let seen = json(&body);
        let v = seen["headers"]["grpc-timeout"]
            .as_str()
            .unwrap_or_else(|| panic!("{seen}"))
            .to_owned();
        let (digits, unit) = v.split_at(v.len() - 1);
        let n: f64 = digits.parse().unwrap();
        n * match unit {
            "H" => 3600.0,
            "M" => 60.0,
            "S" => 1.0,
            "m" => 1e-3,
            "u" => 1e-6,
            "n" => 1e-9,
            u => panic!("unit {u}"),
        }
    };
    // Shorter than the route's 1 s: the upstream gets it (less the time spent so far).
    let left = seen_timeout("500m");
    assert!(left > 0.0 && left <= 0.5, "{left}");
    // Longer: the route's timeout caps it.
    let left = seen_timeout("30S");
    assert!(left > 0.0 && left <= 1.0, "{left}");
}

#[test]
fn retry_on_unavailable_retries_a_grpc_call_on_the_other_upstream() {
    if !require_peers(&["grpc-js"]) {
        return;
    }
    let dir = TempDir::new("grpc-retry");
    let (listen, admin, a, b) = (free_port(), free_port(), free_port(), free_port());
    let _a = start_grpc_server(&dir, "a", a);
    let _b = start_grpc_server(&dir, "b", b);
    let text = config(listen, admin, &[a, b]).replace(
        "route: { cluster: app }",
        "route: { cluster: app, retry_policy: { retry_on: [unavailable], num_retries: 2 } }",
    );
    let _sluice = start_sluice(&dir, &text, 1, addr(listen));
    // Upstream `a` answers every call UNAVAILABLE (trailers-only): each goes on to `b`.
    let calls = grpc_client(listen, "retry:10");
    assert_eq!(calls["succeeded"], 10, "{calls}");
    let retries = stat(admin, "cluster.app.upstream_rq_retry");
    assert!((5..=10).contains(&retries), "{retries}");
}

#[test]
fn a_client_reset_cancels_the_upstream_stream_and_gives_everything_back() {
    if !require_peers(&["node"]) {
        return;
    }
    let dir = TempDir::new("h2up-cancel");
    let (listen, admin, up) = (free_port(), free_port(), free_port());
    let (_u, log) = start_h2_upstream(&dir, "up", up);
    let _sluice = start_sluice(&dir, &config(listen, admin, &[up]), 1, addr(listen));
    // The client resets its stream once the upstream has it (its answer would come in 10 s).
    let script = format!(
        r#"
const http2 = require('http2');
const session = http2.connect('http://127.0.0.1:{listen}');
const req = session.request({{ ':path': '/slow/10000/x' }});
req.on('error', () => {{}});
req.on('close', () => {{ console.log('closed ' + req.rstCode); session.close(); }});
setTimeout(() => req.close(http2.constants.NGHTTP2_CANCEL), 500);
"#
    );
    let out = run("node", &["-e", &script]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "closed 8",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The upstream sees its stream cancelled (RST_STREAM CANCEL = 8), well before its answer.
    let mut cancelled = None;
    for _ in 0..100 {
        cancelled = log_lines(&log)
            .into_iter()
            .find(|l| l.get("cancelled").is_some());
        if cancelled.is_some() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let cancelled = cancelled.expect("the upstream stream was not cancelled");
    assert_eq!(cancelled["cancelled"], "/slow/10000/x");
    assert_eq!(cancelled["code"], 8, "{cancelled}");
    assert_eq!(stat(admin, "http2.upstream_tx_reset"), 1);
    assert_eq!(stat(admin, "http2.upstream_streams_active"), 0);
    // The connection stays for the next request; after it, the host's in-flight count (the
    // gauge is published as requests pass) shows the cancelled request gave its unit back.
    // It is published just after the response's last byte is written: the client can read
    // the stats first, so the gauge gets a moment to be published (it stays 1 for good if the
    // cancelled request kept its unit).
    let (status, _) = curl(&["--http1.1", &format!("http://127.0.0.1:{listen}/after")]);
    assert_eq!(status, 200);
    assert_eq!(stat(admin, "http2.upstream_cx_total"), 1);
    let gauge = format!("cluster.app.host.127.0.0.1:{up}.rq_active");
    let mut active = stat(admin, &gauge);
    for _ in 0..40 {
        if active == 0 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
        active = stat(admin, &gauge);
    }
    assert_eq!(active, 0);
}

/// `protocol: downstream` (Envoy's `use_downstream_protocol_config`, on Istio's pass-through and
/// inbound clusters): one cluster, one host that speaks both versions; an HTTP/1.1 client's
/// requests go up in HTTP/1.1 on a pooled keep-alive connection, an HTTP/2 client's (gRPC
/// included: `te: trailers` kept, trailers back) in HTTP/2 as streams of one connection.
#[test]
fn protocol_downstream_speaks_each_clients_version_upstream() {
    if !require_peers(&["node", "curl"]) {
        return;
    }
    let dir = TempDir::new("h2up-downstream");
    let (listen, admin, up) = (free_port(), free_port(), free_port());
    let log = dir.path().join("up.requests");
    let script = repo().join("tests/grpc/h2_upstream.js");
    let mut upstream = spawn(
        &dir,
        "up",
        "node",
        &[
            script.to_str().unwrap(),
            &up.to_string(),
            "up",
            log.to_str().unwrap(),
            "both",
        ],
    );
    wait_listening(addr(up), &mut upstream);
    let config = config(listen, admin, &[up]).replace("protocol: http2", "protocol: downstream");
    let _sluice = start_sluice(&dir, &config, 1, addr(listen));
    let base = format!("http://127.0.0.1:{listen}");

    for i in 0..2 {
        let (status, body) = curl(&["--http1.1", &format!("{base}/h1/{i}")]);
        assert_eq!(status, 200, "{body}");
        let seen = json(&body);
        assert_eq!(seen["version"], "1.1", "{seen}");
        assert_eq!(seen["path"], format!("/h1/{i}"), "{seen}");
    }
    for i in 0..2 {
        let (status, body) = curl(&["--http2-prior-knowledge", &format!("{base}/h2/{i}")]);
        assert_eq!(status, 200, "{body}");
        let seen = json(&body);
        assert_eq!(seen["version"], "2.0", "{seen}");
        assert_eq!(seen["path"], format!("/h2/{i}"), "{seen}");
    }
    // gRPC over h2c: HTTP/2 upstream with `te: trailers`; the answer's trailers come back.
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
            "--data-binary",
            "@/dev/null",
            &format!("{base}/trailers/grpc"),
        ],
    );
    let got = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(got.starts_with("HTTP/2 200"), "{got:.300}");
    assert!(got.contains("x-checksum: "), "no trailer: {got:.300}");
    let (_, body) = got.split_once("\r\n\r\n").expect("a head");
    // (The body is the description 50 times over.)
    let seen = json(&body[..body.find("}{").map_or(body.len(), |i| i + 1)]);
    assert_eq!(seen["version"], "2.0", "{seen}");
    assert_eq!(seen["headers"]["te"], "trailers", "{seen}");

    let versions: Vec<(String, String)> = log_lines(&log)
        .iter()
        .map(|l| {
            (
                l["version"].as_str().unwrap_or("").to_owned(),
                l["path"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    let want: Vec<(String, String)> = [
        ("1.1", "/h1/0"),
        ("1.1", "/h1/1"),
        ("2.0", "/h2/0"),
        ("2.0", "/h2/1"),
        ("2.0", "/trailers/grpc"),
    ]
    .iter()
    .map(|(v, p)| ((*v).to_owned(), (*p).to_owned()))
    .collect();
    assert_eq!(versions, want);
    // One keep-alive HTTP/1.1 connection and one HTTP/2 connection carrying three streams.
    assert_eq!(stat(admin, "cluster.app.upstream_cx_total"), 2);
    assert_eq!(stat(admin, "http2.upstream_cx_total"), 1);
    assert_eq!(stat(admin, "http2.upstream_streams_total"), 3);
}

// ---- gRPC health checks (grpc.health.v1, served by tests/grpc/peer.js) ----------------------

/// A grpc-js Echo server that also serves `grpc.health.v1.Health/Check`, answering the status
/// written in `health` for `services` (a comma list; `None`: the overall health and Echo's).
fn start_grpc_health_server(
    dir: &TempDir,
    name: &str,
    port: u16,
    health: &std::path::Path,
    services: Option<&str>,
) -> Proc {
    let script = repo().join("tests/grpc/peer.js");
    let port = port.to_string();
    let mut args = vec![
        script.to_str().unwrap(),
        "server",
        &port,
        name,
        health.to_str().unwrap(),
    ];
    args.extend(services);
    let mut p = spawn(dir, name, "node", &args);
    wait_listening(addr(port.parse().unwrap()), &mut p);
    p
}

/// The `health` of host `127.0.0.1:port` of cluster `app` in `/clusters`.
fn host_health(admin: u16, port: u16) -> String {
    let (status, body) = curl(&[&format!("http://127.0.0.1:{admin}/clusters?format=json")]);
    assert_eq!(status, 200, "/clusters: {body}");
    let view = json(&body);
    let want = format!("127.0.0.1:{port}");
    view["clusters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "app")
        .and_then(|c| {
            c["hosts"]
                .as_array()
                .unwrap()
                .iter()
                .find(|h| h["address"] == want.as_str())
        })
        .map(|h| h["health"].as_str().unwrap_or("?").to_owned())
        .unwrap_or_else(|| panic!("no host {want} in cluster app: {body}"))
}

/// Waits until host `port` is `health`; how long it took (panics past `limit`).
fn wait_host_health(
    admin: u16,
    port: u16,
    health: &str,
    limit: Duration,
    sluice: &Proc,
) -> Duration {
    let start = std::time::Instant::now();
    while start.elapsed() < limit {
        if host_health(admin, port) == health {
            return start.elapsed();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!(
        "127.0.0.1:{port} not {health} after {limit:?} (is {}):\n{}",
        host_health(admin, port),
        sluice.log_text()
    );
}

/// Fast probes for the tests (the cadence, not the probe, is what they shorten).
const GRPC_HEALTH_CHECK: &str = "    health_check:
      grpc: {}
      interval: 200ms
      timeout: 1s
      unhealthy_threshold: 2
      healthy_threshold: 2
      no_traffic_interval: 200ms
";

#[test]
fn a_grpc_health_check_drains_a_not_serving_host_and_readmits_it_when_serving() {
    if !require_peers(&["grpc-js"]) {
        return;
    }
    let dir = TempDir::new("grpc-hc");
    let (listen, admin, a, b) = (free_port(), free_port(), free_port(), free_port());
    let health_a = dir.write("a.health", "SERVING\n");
    let health_b = dir.write("b.health", "SERVING\n");
    let _a = start_grpc_health_server(&dir, "a", a, &health_a, None);
    let _b = start_grpc_health_server(&dir, "b", b, &health_b, None);
    let cfg = format!("{}{GRPC_HEALTH_CHECK}", config(listen, admin, &[a, b]));
    let sluice = start_sluice(&dir, &cfg, 2, addr(listen));
    wait_host_health(admin, a, "healthy", Duration::from_secs(10), &sluice);
    wait_host_health(admin, b, "healthy", Duration::from_secs(10), &sluice);

    let by = |case: &str| {
        let out = grpc_client(listen, case);
        assert_eq!(out["ok"], true, "{out}");
        (
            out["by"]["a"].as_u64().unwrap_or(0),
            out["by"]["b"].as_u64().unwrap_or(0),
        )
    };
    let (na, nb) = by("unary:40");
    assert_eq!(na + nb, 40);
    assert!(na > 0 && nb > 0, "both serve: a {na}, b {nb}");

    // B says NOT_SERVING: drained after unhealthy_threshold (2) probes 200 ms apart.
    std::fs::write(&health_b, "NOT_SERVING\n").unwrap();
    let took = wait_host_health(admin, b, "unhealthy", Duration::from_secs(5), &sluice);
    eprintln!("b unhealthy after {took:?}");
    // Not before two NOT_SERVING answers; about 2 × 200 ms (slack for a loaded machine).
    let not_serving = std::fs::read_to_string(dir.path().join("b.log"))
        .unwrap()
        .matches(r#""status":"NOT_SERVING""#)
        .count();
    assert!(
        not_serving >= 2,
        "unhealthy after {not_serving} NOT_SERVING answers"
    );
    assert!(took < Duration::from_secs(3), "drained after {took:?}");
    assert_eq!(host_health(admin, a), "healthy");
    assert_eq!(by("unary:40"), (40, 0), "only a serves once b is drained");

    // SERVING again: readmitted after healthy_threshold probes, and used.
    std::fs::write(&health_b, "SERVING\n").unwrap();
    let took = wait_host_health(admin, b, "healthy", Duration::from_secs(5), &sluice);
    eprintln!("b healthy again after {took:?}");
    let (na, nb) = by("unary:40");
    assert_eq!(na + nb, 40);
    assert!(nb > 0, "b readmitted: a {na}, b {nb}");

    // Counted with the other probes' stats.
    let (ok, failed, attempts) = (
        stat(admin, "cluster.app.health_check.success"),
        stat(admin, "cluster.app.health_check.failure"),
        stat(admin, "cluster.app.health_check.attempt"),
    );
    assert!(failed >= 2 && ok >= 4, "success {ok}, failure {failed}");
    assert!(ok + failed <= attempts, "{ok} + {failed} > {attempts}");
    // The probes asked for the server's overall health (service ""), as `service_name`'s
    // default says, with the cluster's name as the authority.
    let log = std::fs::read_to_string(dir.path().join("b.log")).unwrap();
    let checks: Vec<serde_json::Value> = log
        .lines()
        .filter(|l| l.starts_with("{\"check\""))
        .map(json)
        .collect();
    assert!(checks.len() >= 6, "{log}");
    assert!(checks.iter().all(|c| c["check"] == ""), "{log}");
    assert!(checks.iter().all(|c| c["authority"] == "app"), "{log}");
}

#[test]
fn a_grpc_health_check_fails_an_unknown_service_and_a_server_that_is_not_grpc() {
    if !require_peers(&["grpc-js", "python3"]) {
        return;
    }
    let dir = TempDir::new("grpc-hc-bad");
    let (listen, admin) = (free_port(), free_port());
    let (good, unknown, plain) = (free_port(), free_port(), free_port());
    let health = dir.write("serving.health", "SERVING\n");
    // Both grpc-js servers say SERVING; only `good` knows the service asked about.
    let _good = start_grpc_health_server(&dir, "good", good, &health, None);
    let _unknown = start_grpc_health_server(&dir, "unknown", unknown, &health, Some(""));
    // An HTTP/1.1 server that answers every GET with 200.
    let mut http1 = spawn(
        &dir,
        "plain",
        "python3",
        &[
            "-m",
            "http.server",
            "--bind",
            "127.0.0.1",
            &plain.to_string(),
        ],
    );
    wait_listening(addr(plain), &mut http1);
    // The cluster speaks HTTP/1.1 (the default protocol): the probe is HTTP/2 all the same.
    let cfg = format!(
        "{}{}",
        config(listen, admin, &[good, unknown, plain]).replace("    protocol: http2\n", ""),
        GRPC_HEALTH_CHECK.replace(
            "grpc: {}",
            "grpc: { service_name: sluice.test.Echo, authority: echo.internal }"
        )
    );
    let sluice = start_sluice(&dir, &cfg, 1, addr(listen));
    wait_host_health(admin, good, "healthy", Duration::from_secs(10), &sluice);
    wait_host_health(
        admin,
        unknown,
        "unhealthy",
        Duration::from_secs(10),
        &sluice,
    );
    wait_host_health(admin, plain, "unhealthy", Duration::from_secs(10), &sluice);
    // They stay so.
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(host_health(admin, good), "healthy");
    assert_eq!(host_health(admin, unknown), "unhealthy");
    assert_eq!(host_health(admin, plain), "unhealthy");
    let log = std::fs::read_to_string(dir.path().join("unknown.log")).unwrap();
    assert!(
        log.contains(
            r#"{"check":"sluice.test.Echo","status":"SERVING","authority":"echo.internal"}"#
        ),
        "the service name and authority were sent: {log}"
    );
}

#[test]
fn a_grpc_health_check_over_tls_offers_h2_whatever_the_clusters_alpn() {
    if !require_peers(&["grpc-js"]) {
        return;
    }
    let dir = TempDir::new("grpc-hc-tls");
    let ca = support::pki::make_ca(&dir, "ca");
    let (cert, key) = support::pki::leaf(&dir, &ca, "front", &["front.example"], None);
    let (listen, front, admin, up) = (free_port(), free_port(), free_port(), free_port());
    let health = dir.write("up.health", "SERVING\n");
    let _up = start_grpc_health_server(&dir, "up", up, &health, None);
    // Cluster `app` (HTTP/1.1, used by an HTTP route: its TLS offers ALPN http/1.1) reaches
    // a TLS listener of the proxy itself, whose ALPN (h2, http/1.1) picks the codec, in front
    // of the grpc-js server. A probe offering the cluster's http/1.1 would be answered in
    // HTTP/1.1 and fail; the probe offers h2 alone.
    let cfg = format!(
        r#"
admin: {{ address: 127.0.0.1:{admin} }}
listeners:
  - name: http_in
    address: 127.0.0.1:{listen}
    http:
      virtual_hosts:
        - {{ name: any, domains: ["*"], routes: [ {{ match: {{ prefix: / }}, route: {{ cluster: app }} }} ] }}
  - name: tls_front
    address: 127.0.0.1:{front}
    tls: {{ certificates: [ {{ cert_chain: {c}, private_key: {k} }} ] }}
    http:
      virtual_hosts:
        - {{ name: any, domains: ["*"], routes: [ {{ match: {{ prefix: / }}, route: {{ cluster: grpc_up }} }} ] }}
clusters:
  - name: app
    hosts: [ {{ address: 127.0.0.1:{front} }} ]
    tls: {{ sni: front.example, ca: {ca} }}
{GRPC_HEALTH_CHECK}  - name: grpc_up
    protocol: http2
    hosts: [ {{ address: 127.0.0.1:{up} }} ]
"#,
        c = support::pki::p(&cert),
        k = support::pki::p(&key),
        ca = support::pki::p(&ca.pem),
    );
    let sluice = start_sluice(&dir, &cfg, 1, addr(listen));
    wait_host_health(admin, front, "healthy", Duration::from_secs(10), &sluice);
    // The probe went through the TLS listener, as HTTP/2, to the gRPC server.
    assert!(stat(admin, "cluster.grpc_up.upstream_rq_total") >= 1);
    let log = std::fs::read_to_string(dir.path().join("up.log")).unwrap();
    assert!(
        log.contains(r#"{"check":"","status":"SERVING","authority":"app"}"#),
        "{log}"
    );
    std::fs::write(&health, "NOT_SERVING\n").unwrap();
    wait_host_health(admin, front, "unhealthy", Duration::from_secs(5), &sluice);
}

/// `/clusters?format=json`'s HTTP/2 pool numbers: `[cluster http2_cx_active, cluster
/// http2_streams_active, host http2_cx_active, host http2_streams_active]`.
fn http2_pool(admin: u16) -> [u64; 4] {
    let (status, body) = curl(&[&format!("http://127.0.0.1:{admin}/clusters?format=json")]);
    assert_eq!(status, 200);
    let v = json(&body);
    let c = &v["clusters"][0];
    let n = |v: &serde_json::Value| v.as_u64().unwrap_or_else(|| panic!("{body}"));
    [
        n(&c["pool"]["http2_cx_active"]),
        n(&c["pool"]["http2_streams_active"]),
        n(&c["hosts"][0]["http2_cx_active"]),
        n(&c["hosts"][0]["http2_streams_active"]),
    ]
}

/// Polls `check` for up to 10 s.
fn within_10s(what: &str, mut check: impl FnMut() -> bool) {
    for _ in 0..200 {
        if check() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("not within 10 s: {what}");
}

/// `/clusters` shows the HTTP/2 pool: three requests held by a slow upstream are three streams
/// on one connection (per host and for the cluster, in JSON, text and Prometheus); once
/// answered, the connection stays with no stream, and the idle sweep closes it (0 again).
#[test]
fn clusters_show_http2_connections_and_their_active_streams() {
    if !require_peers(&["node", "curl"]) {
        return;
    }
    let dir = TempDir::new("h2up-pool");
    let (listen, admin, up) = (free_port(), free_port(), free_port());
    let (_u, _log) = start_h2_upstream(&dir, "up", up);
    // The default idle timeout is 30 s: shorter here, so that the sweep is seen.
    let text = config(listen, admin, &[up]).replace(
        "protocol: http2\n",
        "protocol: http2\n    upstream_idle_timeout: 2s\n",
    );
    let _sluice = start_sluice(&dir, &text, 1, addr(listen));
    assert_eq!(http2_pool(admin), [0, 0, 0, 0]);

    std::thread::scope(|scope| {
        let get = |i: usize| {
            let url = format!("http://127.0.0.1:{listen}/slow/2000/{i}");
            move || assert_eq!(curl(&["--http1.1", &url]).0, 200)
        };
        scope.spawn(get(0));
        within_10s("one stream", || http2_pool(admin) == [1, 1, 1, 1]);
        scope.spawn(get(1));
        scope.spawn(get(2));
        within_10s("three streams on one connection", || {
            http2_pool(admin) == [1, 3, 1, 3]
        });
        let (_, clusters) = curl(&[&format!("http://127.0.0.1:{admin}/clusters")]);
        for line in [
            "app::pool::http2_cx_active::1\n".to_owned(),
            "app::pool::http2_streams_active::3\n".to_owned(),
            format!("app::127.0.0.1:{up}::http2_cx_active::1\n"),
            format!("app::127.0.0.1:{up}::http2_streams_active::3\n"),
        ] {
            assert!(clusters.contains(&line), "{line} in {clusters}");
        }
        let (_, metrics) = curl(&[&format!("http://127.0.0.1:{admin}/stats/prometheus")]);
        for line in [
            "sluice_upstream_http2_cx_active{cluster=\"app\"} 1\n".to_owned(),
            "sluice_upstream_http2_streams_active{cluster=\"app\"} 3\n".to_owned(),
            format!(
                "sluice_upstream_host_http2_streams_active{{cluster=\"app\",host=\"127.0.0.1:{up}\"}} 3\n"
            ),
        ] {
            assert!(metrics.contains(&line), "{line} in {metrics}");
        }
    });
    // Answered: the connection is pooled with no stream, until the sweep closes it.
    within_10s("no stream, the connection pooled", || {
        http2_pool(admin) == [1, 0, 1, 0]
    });
    within_10s("the sweep closed the connection", || {
        http2_pool(admin) == [0, 0, 0, 0]
    });
    assert_eq!(stat(admin, "http2.upstream_cx_total"), 1);
}

/// An HTTP/1.1 upstream that answers gRPC with its status in a chunked trailer section (an
/// HTTP/1.1 gRPC bridge, `tests/http_upstream.py`'s `/grpc-status/N`, whose trailer section
/// arrives in two pieces): the access log's `GRPC_STATUS` is that status, for an HTTP/1.1 and
/// an HTTP/2 client; a request that is not gRPC logs none.
#[test]
fn the_access_log_has_the_grpc_status_of_an_http11_upstreams_chunked_trailers() {
    if !require_peers(&["curl", "python3"]) {
        return;
    }
    let dir = TempDir::new("grpc-h1-trailers");
    let (listen, admin, up) = (free_port(), free_port(), free_port());
    let _up = start_py_upstream(&dir, "up", up);
    let log = dir.path().join("access.log");
    let yaml = config(listen, admin, &[up])
        .replace("    protocol: http2\n", "")
        .replace(
            "    http:\n",
            &format!(
                "    http:\n      access_log: {{ format: json, path: {} }}\n",
                log.display()
            ),
        );
    let sluice = start_sluice(&dir, &yaml, 1, addr(listen));
    let base = format!("http://127.0.0.1:{listen}");
    let grpc = ["-H", "content-type: application/grpc", "-H", "te: trailers"];
    let (status, _) = curl(
        &[
            &["--http1.1"][..],
            &grpc,
            &["-d", "x", &format!("{base}/grpc-status/7")],
        ]
        .concat(),
    );
    assert_eq!(status, 200);
    let (status, _) = curl(
        &[
            &["--http2-prior-knowledge"][..],
            &grpc,
            &["-d", "x", &format!("{base}/grpc-status/13")],
        ]
        .concat(),
    );
    assert_eq!(status, 200);
    // Not gRPC: no status logged, whatever the trailers say.
    let (status, _) = curl(&["--http1.1", &format!("{base}/grpc-status/5")]);
    assert_eq!(status, 200);
    // Lines are written at the latest when the process ends (SIGTERM).
    stop_gracefully(sluice, Duration::from_secs(10));
    let logged: Vec<(String, String, serde_json::Value)> = log_lines(&log)
        .into_iter()
        .map(|l| {
            (
                l["protocol"].as_str().unwrap_or("").to_owned(),
                l["path"].as_str().unwrap_or("").to_owned(),
                l["grpc_status"].clone(),
            )
        })
        .collect();
    assert_eq!(
        logged,
        [
            (
                "HTTP/1.1".into(),
                "/grpc-status/7".into(),
                serde_json::json!(7)
            ),
            (
                "HTTP/2".into(),
                "/grpc-status/13".into(),
                serde_json::json!(13)
            ),
            (
                "HTTP/1.1".into(),
                "/grpc-status/5".into(),
                serde_json::Value::Null
            ),
        ]
    );
}
