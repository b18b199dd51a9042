//! End-to-end tests of the `sluice` binary serving HTTP/2 cleartext (h2c, prior knowledge) on an
//! `http` listener and forwarding each stream over HTTP/1.1, against real peers: curl
//! (`--http2-prior-knowledge`), h2load, nginx, and the Python upstream of `tests/http_upstream.py`
//! (which answers with a JSON description of the request it received).

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::time::Duration;

use support::raw_h2::{
    self, ACK, END_HEADERS, END_STREAM, GOAWAY, HEADERS, PING, RST_STREAM, SETTINGS, frame,
    h2load_counts, hpack_literals,
};
use support::{admin_stat as stat, *};

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

/// One listener with the defaults a user gets (`codec` left out unless `codec` is given):
/// `/none/` goes to an empty port (503), `example.com/nothing` matches no route (404).
fn config(listen: u16, upstream: u16, codec: &str) -> String {
    let dead = free_port();
    format!(
        r#"
listeners:
  - name: http_in
    address: 127.0.0.1:{listen}
    http:
{codec}      access_log: {{ format: json }}
      virtual_hosts:
        - name: only
          domains: ["example.com"]
          routes:
            - match: {{ prefix: /app/ }}
              route: {{ cluster: app }}
        - name: any
          domains: ["*"]
          routes:
            - match: {{ prefix: /none/ }}
              route: {{ cluster: dead }}
            - match: {{ prefix: / }}
              route: {{ cluster: app }}
clusters:
  - name: app
    hosts: [ {{ address: 127.0.0.1:{upstream} }} ]
  - name: dead
    connect_timeout: 200ms
    health_check: {{ tcp: {{}}, interval: 100ms, timeout: 100ms, unhealthy_threshold: 1, no_traffic_interval: 100ms }}
    panic_threshold: 0%
    hosts: [ {{ address: 127.0.0.1:{dead} }} ]
drain_timeout: 2s
"#
    )
}

/// `curl --http2-prior-knowledge`: (HTTP version, status, body).
fn curl_h2(url: &str, extra: &[&str]) -> (String, u16, String) {
    let mut args = vec![
        "-sS",
        "--http2-prior-knowledge",
        "-o",
        "-",
        "-w",
        "\n%{http_version} %{http_code}",
        "--max-time",
        "10",
    ];
    args.extend_from_slice(extra);
    args.push(url);
    let out = run("curl", &args);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, tail) = text.rsplit_once('\n').expect("curl's -w line");
    let (version, code) = tail.split_once(' ').unwrap();
    (
        version.to_owned(),
        code.parse().unwrap_or(0),
        body.to_owned(),
    )
}

#[test]
fn curl_get_and_post_reach_an_http11_upstream_with_the_right_host() {
    if !require_peers(&["curl"]) {
        return;
    }
    let dir = TempDir::new("h2-curl");
    let (listen, up) = (free_port(), free_port());
    let (_u, log) = start_upstream(&dir, "up", up);
    let mut sluice = start_sluice(&dir, &config(listen, up, ""), 1, addr(listen));

    let (version, status, body) = curl_h2(
        &format!("http://127.0.0.1:{listen}/app/x?q=1"),
        &["-H", "Host: example.com"],
    );
    assert_eq!((version.as_str(), status), ("2", 200), "{body}");
    let seen: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(seen["method"], "GET");
    assert_eq!(seen["path"], "/app/x?q=1");
    assert_eq!(seen["headers"]["host"], "example.com");
    assert!(seen["headers"].get("x-forwarded-for").is_some(), "{seen}");

    // A body of known length, and one of unknown length (chunked upstream).
    let payload = "a".repeat(100_000);
    let file = dir.write("payload", &payload);
    let at_file = format!("@{}", file.display());
    let (version, status, body) = curl_h2(
        &format!("http://127.0.0.1:{listen}/upload"),
        &["--data-binary", &at_file],
    );
    assert_eq!((version.as_str(), status), ("2", 200), "{body}");
    let seen: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(seen["method"], "POST");
    assert_eq!(seen["body_len"], 100_000, "{seen}");
    assert_eq!(seen["headers"]["content-length"], "100000");
    assert_eq!(seen["headers"]["host"], format!("127.0.0.1:{listen}"));

    let (_, status, body) = curl_h2(
        &format!("http://127.0.0.1:{listen}/chunked"),
        &["--data-binary", &at_file, "-H", "Content-Length:"],
    );
    assert_eq!(status, 200, "{body}");
    let seen: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(seen["body_len"], 100_000, "{seen}");
    assert_eq!(seen["headers"]["transfer-encoding"], "chunked", "{seen}");

    let requests = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(requests.lines().count(), 3, "{requests}");
    sluice.signal("TERM");
    sluice.wait_exit(Duration::from_secs(10));
    assert!(
        sluice.log_text().contains("\"protocol\":\"HTTP/2\""),
        "access log: {}",
        sluice.log_text()
    );
}

#[test]
fn local_replies_are_http2_responses() {
    if !require_peers(&["curl"]) {
        return;
    }
    let dir = TempDir::new("h2-local");
    let (listen, up) = (free_port(), free_port());
    let (_u, _log) = start_upstream(&dir, "up", up);
    let _sluice = start_sluice(&dir, &config(listen, up, ""), 1, addr(listen));
    let (version, status, body) = curl_h2(
        &format!("http://127.0.0.1:{listen}/nothing"),
        &["-H", "Host: example.com"],
    );
    assert_eq!((version.as_str(), status), ("2", 404), "{body}");
    assert_eq!(body, "no route matched the request\n");
    // The dead cluster's only host fails its health check: no healthy upstream, 503 (before
    // the first check it is tried, and the connect fails: 502).
    let mut last = (String::new(), 0, String::new());
    for _ in 0..100 {
        last = curl_h2(&format!("http://127.0.0.1:{listen}/none/x"), &[]);
        if last.1 == 503 {
            break;
        }
        assert_eq!((last.0.as_str(), last.1), ("2", 502), "{}", last.2);
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        (last.0.as_str(), last.1, last.2.as_str()),
        ("2", 503, "no healthy upstream\n")
    );
}

#[test]
fn http11_still_works_on_an_auto_listener_and_http1_only_refuses_h2c() {
    if !require_peers(&["curl"]) {
        return;
    }
    let dir = TempDir::new("h2-codec");
    let (auto, only1, up) = (free_port(), free_port(), free_port());
    let (_u, _log) = start_upstream(&dir, "up", up);
    let _a = start_sluice(&dir, &config(auto, up, ""), 1, addr(auto));
    let (status, body) = http_request(addr(auto), "GET", "/app/one");
    assert_eq!(status, 200, "{body}");
    let out = run(
        "curl",
        &[
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{http_version} %{http_code}",
            &format!("http://127.0.0.1:{auto}/x"),
        ],
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "1.1 200");

    let dir1 = TempDir::new("h2-codec-http1");
    let _b = start_sluice(
        &dir1,
        &config(only1, up, "      codec: http1\n"),
        1,
        addr(only1),
    );
    let mut s = TcpStream::connect(addr(only1)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(raw_h2::PREFACE).unwrap();
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.starts_with("HTTP/1.1 4") || answer.starts_with("HTTP/1.1 5"),
        "{answer}"
    );
}

#[test]
fn h2load_many_concurrent_streams_all_succeed() {
    if !require_peers(&["h2load", "nginx"]) {
        return;
    }
    let dir = TempDir::new("h2-h2load");
    let (listen, up) = (free_port(), free_port());
    let _n = start_nginx(&dir, "nginx", up, "hello");
    let _sluice = start_sluice(&dir, &config(listen, up, ""), 2, addr(listen));
    let out = run(
        "h2load",
        &[
            "-n",
            "2000",
            "-c",
            "4",
            "-m",
            "10",
            &format!("http://127.0.0.1:{listen}/"),
        ],
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(h2load_counts(&text), (2000, 0, 0), "{text}");
}

#[test]
fn h2load_against_a_slow_upstream_answers_everything() {
    if !require_peers(&["h2load"]) {
        return;
    }
    let dir = TempDir::new("h2-slow");
    let (listen, up) = (free_port(), free_port());
    let (_u, _log) = start_upstream(&dir, "up", up);
    let _sluice = start_sluice(&dir, &config(listen, up, ""), 1, addr(listen));
    let out = run(
        "h2load",
        &[
            "-n",
            "200",
            "-c",
            "2",
            "-m",
            "10",
            &format!("http://127.0.0.1:{listen}/sleep/50"),
        ],
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(h2load_counts(&text), (200, 0, 0), "{text}");
}

#[test]
fn a_client_that_resets_streams_does_not_disturb_other_connections() {
    if !require_peers(&["h2load", "nginx", "curl"]) {
        return;
    }
    let dir = TempDir::new("h2-reset");
    let (listen, up, slow) = (free_port(), free_port(), free_port());
    let _n = start_nginx(&dir, "nginx", up, "hello");
    let (_s, _log) = start_upstream(&dir, "slow", slow);
    let _sluice = start_sluice(&dir, &config(listen, slow, ""), 1, addr(listen));
    // curl gives up on slow streams (it resets them) while h2load runs on other connections.
    let resetter = std::thread::spawn(move || {
        for _ in 0..20 {
            let _ = run(
                "curl",
                &[
                    "-sS",
                    "--http2-prior-knowledge",
                    "--max-time",
                    "0.2",
                    "-o",
                    "/dev/null",
                    &format!("http://127.0.0.1:{listen}/sleep/2000"),
                ],
            );
        }
    });
    let out = run(
        "h2load",
        &[
            "-n",
            "500",
            "-c",
            "2",
            "-m",
            "5",
            &format!("http://127.0.0.1:{listen}/"),
        ],
    );
    resetter.join().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(h2load_counts(&text), (500, 0, 0), "{text}");
}

/// Envoy's premature-reset rule: a client that opens streams and cancels each soon after it
/// was accepted (forwarded upstream, then reset: work for nothing, and `h2`'s rapid-reset
/// guard does not see it — those streams were accepted) gets GOAWAY `ENHANCE_YOUR_CALM` once
/// half of 500 streams were reset within a second, and its connection closes; another
/// connection is served meanwhile. A client that cancels a few streams is left alone.
#[test]
fn a_client_resetting_its_streams_prematurely_gets_goaway() {
    if !require_peers(&["node", "curl"]) {
        return;
    }
    let dir = TempDir::new("h2-premature");
    let (listen, up, admin) = (free_port(), free_port(), free_port());
    let (_u, _log) = start_upstream(&dir, "up", up);
    let yaml = format!(
        "{}admin: {{ address: 127.0.0.1:{admin} }}\n",
        config(listen, up, "")
    );
    let _sluice = start_sluice(&dir, &yaml, 1, addr(listen));
    // N streams, 20 open at a time, each cancelled 100 ms after its request went out (its
    // upstream answers after 3 s); prints the GOAWAY's code, or that none came.
    let resetter = move |n: u32| {
        let script = format!(
            r#"
const http2 = require('http2');
const session = http2.connect('http://127.0.0.1:{listen}');
let started = 0, goaway = null;
session.on('error', () => {{}});
session.on('goaway', (code) => {{ goaway = code; }});
session.on('close', () => {{ console.log(goaway === null ? 'closed' : 'goaway ' + goaway); process.exit(0); }});
function next() {{
  if (goaway !== null || session.closed || session.destroyed) return;
  if (started === {n}) {{ console.log('no goaway'); process.exit(0); }}
  started++;
  const req = session.request({{ ':path': '/sleep/3000' }});
  req.on('error', () => {{}});
  req.on('close', next);
  setTimeout(() => req.close(http2.constants.NGHTTP2_CANCEL), 100);
}}
for (let i = 0; i < 20; i++) next();
setTimeout(() => {{ console.log('timed out after ' + started); process.exit(1); }}, 60000);
"#
        );
        let out = run("node", &["-e", &script]);
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    // A few cancels: nothing happens.
    assert_eq!(resetter(40), "no goaway");
    assert_eq!(stat(admin, "http2.premature_reset_closed"), 0);
    // Hundreds: GOAWAY with ENHANCE_YOUR_CALM (11), counted; others still served.
    let abuser = std::thread::spawn(move || resetter(400));
    let (version, status, _) = curl_h2(&format!("http://127.0.0.1:{listen}/x"), &[]);
    assert_eq!((version.as_str(), status), ("2", 200));
    assert_eq!(abuser.join().unwrap(), "goaway 11");
    assert_eq!(stat(admin, "http2.premature_reset_closed"), 1);
    assert_eq!(stat(admin, "http2.goaway_sent.premature_resets"), 1);
    assert_eq!(stat(admin, "http2.goaway_sent.drain"), 0);
    // Every reset was the client's CANCEL, counted by its code.
    let resets = stat(admin, "http2.rx_reset");
    assert!(resets > 40, "{resets}");
    assert_eq!(stat(admin, "http2.rx_reset_code.cancel"), resets);
    let (version, status, _) = curl_h2(&format!("http://127.0.0.1:{listen}/x"), &[]);
    assert_eq!((version.as_str(), status), ("2", 200));
}

#[test]
fn a_drain_lets_open_streams_finish() {
    if !require_peers(&["curl"]) {
        return;
    }
    let dir = TempDir::new("h2-drain");
    let (listen, up) = (free_port(), free_port());
    let (_u, log) = start_upstream(&dir, "up", up);
    let mut sluice = start_sluice(&dir, &config(listen, up, ""), 1, addr(listen));
    // A stream in flight (its upstream answers after 800 ms) when the stop begins: GOAWAY
    // tells the client no new stream is accepted, and this one still gets its answer. The stop
    // waits for the upstream to have the request (its log line), not for a fixed time: a curl
    // slow to start on a loaded machine would otherwise meet a closed listener.
    let client =
        std::thread::spawn(move || curl_h2(&format!("http://127.0.0.1:{listen}/sleep/800"), &[]));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !std::fs::read_to_string(&log).is_ok_and(|l| l.contains("GET /sleep/800 ")) {
        assert!(
            std::time::Instant::now() < deadline,
            "the request never reached the upstream"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    sluice.signal("TERM");
    let (version, status, body) = client.join().unwrap();
    assert_eq!((version.as_str(), status), ("2", 200), "{body}");
    let seen: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(seen["path"], "/sleep/800");
    assert!(sluice.wait_exit(Duration::from_secs(10)).is_some());
}

#[test]
fn expect_100_continue_is_answered_over_http2() {
    if !require_peers(&["curl"]) {
        return;
    }
    let dir = TempDir::new("h2-expect");
    let (listen, up) = (free_port(), free_port());
    let (_u, _log) = start_upstream(&dir, "up", up);
    let _sluice = start_sluice(&dir, &config(listen, up, ""), 1, addr(listen));
    // curl waits for the 100 before it sends the body: far longer than --max-time if none came.
    let (version, status, body) = curl_h2(
        &format!("http://127.0.0.1:{listen}/upload"),
        &[
            "--data-binary",
            "0123456789",
            "-H",
            "Expect: 100-continue",
            "--expect100-timeout",
            "60",
        ],
    );
    assert_eq!((version.as_str(), status), ("2", 200), "{body}");
    let seen: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(seen["body_len"], 10, "{seen}");
}

#[test]
fn an_idle_http2_connection_gets_goaway_after_idle_timeout() {
    if !require_peers(&["node"]) {
        return;
    }
    let dir = TempDir::new("h2-idle");
    let (listen, up, admin) = (free_port(), free_port(), free_port());
    let (_u, _log) = start_upstream(&dir, "up", up);
    let yaml = format!(
        "{}admin: {{ address: 127.0.0.1:{admin} }}\n",
        config(listen, up, "      idle_timeout: 1s\n")
    );
    let _sluice = start_sluice(&dir, &yaml, 1, addr(listen));
    // One request, then nothing: the connection is told GOAWAY and closed by the proxy.
    let script = format!(
        r#"
const http2 = require('http2');
const session = http2.connect('http://127.0.0.1:{listen}');
const events = [];
session.on('goaway', () => events.push('goaway'));
session.on('close', () => {{ console.log(events.concat('close').join(' ')); process.exit(0); }});
session.on('error', (e) => events.push('error ' + e.code));
const req = session.request({{ ':path': '/x' }});
req.on('response', (h) => events.push('status ' + h[':status']));
req.resume();
setTimeout(() => {{ console.log(events.concat('still open').join(' ')); process.exit(1); }}, 15000);
"#
    );
    let out = run("node", &["-e", &script]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        text.trim(),
        "status 200 goaway close",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stat(admin, "http2.goaway_sent.idle_timeout"), 1);
    assert_eq!(stat(admin, "http2.goaway_sent.drain"), 0);
}

/// An upstream that breaks off its answer mid-way (a 100-byte body announced, 4 bytes sent, then
/// the connection closed): the HTTP/2 client's stream is reset by the proxy (INTERNAL_ERROR),
/// counted as a reset the proxy sent.
#[test]
fn an_answer_broken_off_mid_way_resets_the_http2_clients_stream_and_is_counted() {
    if !require_peers(&["curl"]) {
        return;
    }
    let dir = TempDir::new("h2-tx-reset");
    let (listen, admin) = (free_port(), free_port());
    let upstream = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let up = upstream.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in upstream.incoming() {
            let Ok(mut s) = s else { return };
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && s.read(&mut byte).unwrap_or(0) == 1 {
                head.push(byte[0]);
            }
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nhalf");
            let _ = s.flush();
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    let yaml = format!(
        "{}admin: {{ address: 127.0.0.1:{admin} }}\n",
        config(listen, up, "")
    );
    let _sluice = start_sluice(&dir, &yaml, 1, addr(listen));
    let out = run(
        "curl",
        &[
            "-sS",
            "--http2-prior-knowledge",
            "--max-time",
            "10",
            "-o",
            "/dev/null",
            &format!("http://127.0.0.1:{listen}/broken"),
        ],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "curl got the whole answer: {err}");
    assert!(
        err.contains("INTERNAL_ERROR") || err.contains("(92)"),
        "{err}"
    );
    assert_eq!(stat(admin, "http2.tx_reset"), 1);
    assert_eq!(stat(admin, "http2.rx_reset"), 0);
}

/// The proxy's resident memory, in KiB.
fn rss_kib(proc: &Proc) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", proc.child.id())).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn a_client_that_does_not_read_stops_the_upstream_instead_of_growing_the_proxy() {
    if !require_peers(&["node", "nginx"]) {
        return;
    }
    let dir = TempDir::new("h2-slow-reader");
    let (listen, up) = (free_port(), free_port());
    let big = dir.path().join("big.bin");
    std::fs::write(&big, vec![7u8; 64 << 20]).unwrap();
    let _n = start_nginx_with(
        &dir,
        "nginx",
        up,
        &format!("location /big {{ alias {}; }}", big.display()),
    );
    let sluice = start_sluice(&dir, &config(listen, up, ""), 1, addr(listen));
    // Eight streams of 64 MiB each that the client never reads past its window: the proxy may
    // hold one upstream read per stream and the windows, never the bodies.
    let script = format!(
        r#"
const http2 = require('http2');
const session = http2.connect('http://127.0.0.1:{listen}');
let heads = 0;
for (let i = 0; i < 8; i++) {{
  const req = session.request({{ ':path': '/big' }});
  req.on('response', (h) => {{ if (++heads === 8) console.log('heads'); }});
  req.pause();
}}
setTimeout(() => {{ console.log('done'); process.exit(0); }}, 3000);
"#
    );
    let before = rss_kib(&sluice);
    let out = run("node", &["-e", &script]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(
        text.trim(),
        "heads\ndone",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The peak (VmHWM) covers the whole time node held the streams unread. (Sink writes that do
    // not wait for the send window took it past 500 MiB.)
    let status = std::fs::read_to_string(format!("/proc/{}/status", sluice.child.id())).unwrap();
    let peak: u64 = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        peak < before + 32 * 1024,
        "the proxy grew from {before} KiB to a peak of {peak} KiB for 8 unread 64 MiB streams"
    );
}

#[test]
fn a_malformed_http2_request_is_answered_400_and_the_connection_keeps_serving() {
    if !require_peers(&["node"]) {
        return;
    }
    let dir = TempDir::new("h2-malformed");
    let (listen, up) = (free_port(), free_port());
    let (_u, log) = start_upstream(&dir, "up", up);
    let _sluice = start_sluice(&dir, &config(listen, up, ""), 1, addr(listen));
    // A host field that disagrees with :authority (RFC 9113 §8.3.1), then a good request on
    // the same connection.
    let script = format!(
        r#"
const http2 = require('http2');
const session = http2.connect('http://127.0.0.1:{listen}');
const get = (headers) => new Promise((resolve) => {{
  const req = session.request(headers);
  let body = '';
  req.on('response', (h) => {{ req.on('data', (d) => body += d); req.on('end', () => resolve(h[':status'] + ' ' + body.trim())); }});
  req.on('error', (e) => resolve('error ' + e.code));
}});
(async () => {{
  console.log(await get({{ ':path': '/app/a', ':authority': '127.0.0.1:{listen}', 'host': 'elsewhere.example' }}));
  console.log((await get({{ ':path': '/app/b' }})).split(' ')[0]);
  session.close();
}})();
"#
    );
    let out = run("node", &["-e", &script]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(
        text.trim(),
        "400 :authority and host disagree, or more than one host\n200",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let requests = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(
        requests.lines().count(),
        1,
        "only the good request went upstream: {requests}"
    );
}

/// `max_request_headers_kb` holds an HTTP/2 request's head as it holds an HTTP/1.1 one (Envoy's
/// limit is every codec's): over it, 431 and nothing upstream — though the head is well under
/// the HTTP/2 `max_header_list_size` (64 KiB by default), which the `h2` crate enforces.
#[test]
fn an_http2_head_over_max_request_headers_kb_is_answered_431() {
    if !require_peers(&["curl"]) {
        return;
    }
    let dir = TempDir::new("h2-head-limit");
    let (listen, up) = (free_port(), free_port());
    let (_u, log) = start_upstream(&dir, "up", up);
    let _sluice = start_sluice(
        &dir,
        &config(listen, up, "      max_request_headers_kb: 8\n"),
        1,
        addr(listen),
    );
    let url = format!("http://127.0.0.1:{listen}/app/x");
    let under = format!("x-big: {}", "a".repeat(4000));
    let (version, status, _) = curl_h2(&url, &["-H", &under]);
    assert_eq!((version.as_str(), status), ("2", 200));
    let over = format!("x-big: {}", "a".repeat(20_000));
    let (version, status, body) = curl_h2(&url, &["-H", &over]);
    assert_eq!(
        (version.as_str(), status, body.as_str()),
        ("2", 431, "request head is larger than 8192 bytes\n")
    );
    let requests = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(
        requests.lines().count(),
        1,
        "only the request under the limit went upstream: {requests}"
    );
}

#[test]
fn an_http2_only_listener_closes_http11_connections() {
    if !require_peers(&["curl"]) {
        return;
    }
    let dir = TempDir::new("h2-only");
    let (listen, up) = (free_port(), free_port());
    let (_u, _log) = start_upstream(&dir, "up", up);
    let _sluice = start_sluice(
        &dir,
        &config(listen, up, "      codec: http2\n"),
        1,
        addr(listen),
    );
    let mut s = TcpStream::connect(addr(listen)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    assert_eq!(answer, b"", "closed without an answer");
    let (version, status, _) = curl_h2(&format!("http://127.0.0.1:{listen}/app/x"), &[]);
    assert_eq!((version.as_str(), status), ("2", 200));
}

/// The trailers of a chunked answer reach the HTTP/2 client as HTTP/2 trailers, and the
/// `trailer` field announcing them in its HEADERS (RFC 9110 §6.6.2; not connection-specific in
/// RFC 9113 §8.2.2).
#[test]
fn a_chunked_upstream_answers_trailers_reach_the_http2_client() {
    if !require_peers(&["node"]) {
        return;
    }
    let dir = TempDir::new("h2-trailers");
    let (listen, up) = (free_port(), free_port());
    let (_u, _log) = start_upstream(&dir, "up", up);
    let _sluice = start_sluice(&dir, &config(listen, up, ""), 1, addr(listen));
    let script = format!(
        r#"
const http2 = require('http2');
const crypto = require('crypto');
const session = http2.connect('http://127.0.0.1:{listen}');
const req = session.request({{ ':path': '/trailers' }});
const chunks = [];
let trailers = null;
req.on('response', (h) => console.log('status ' + h[':status'] + ' te ' + (h['transfer-encoding'] || 'none') + ' trailer ' + (h['trailer'] || 'none')));
req.on('data', (d) => chunks.push(d));
req.on('trailers', (t) => trailers = t);
req.on('end', () => {{
  const sum = crypto.createHash('sha256').update(Buffer.concat(chunks)).digest('hex');
  console.log('checksum ' + (trailers && trailers['x-checksum'] === sum ? 'matches' : 'missing: ' + JSON.stringify(trailers)));
  session.close();
}});
"#
    );
    let out = run("node", &["-e", &script]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(
        text.trim(),
        "status 200 te none trailer x-checksum\nchecksum matches",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn http2_request_trailers_reach_the_upstream_as_a_chunked_trailer_section() {
    if !require_peers(&["node"]) {
        return;
    }
    let dir = TempDir::new("h2-req-trailers");
    let (listen, up) = (free_port(), free_port());
    let (_u, _log) = start_upstream(&dir, "up", up);
    let _sluice = start_sluice(&dir, &config(listen, up, ""), 1, addr(listen));
    let script = format!(
        r#"
const http2 = require('http2');
const session = http2.connect('http://127.0.0.1:{listen}');
const req = session.request({{ ':method': 'POST', ':path': '/upload' }}, {{ waitForTrailers: true }});
req.on('wantTrailers', () => req.sendTrailers({{
  'x-sum': 'abc', 'x-forwarded-for': '6.6.6.6', 'x-request-id': 'forged',
  'x-forwarded-proto': 'https', 'content-type': 'text/evil',
}}));
let body = '';
req.on('data', (d) => body += d);
req.on('end', () => {{ console.log(body); session.close(); }});
req.end('hello');
"#
    );
    let out = run("node", &["-e", &script]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let seen: serde_json::Value = serde_json::from_str(text.trim())
        .unwrap_or_else(|e| panic!("{e}: {text} {}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(seen["body_len"], 5, "{seen}");
    assert_eq!(seen["headers"]["transfer-encoding"], "chunked", "{seen}");
    assert_eq!(
        seen["trailers"],
        serde_json::json!(["x-sum: abc"]),
        "{seen}"
    );
}

#[test]
fn a_reset_stream_ends_its_request_and_the_connection_serves_on() {
    if !require_peers(&["node"]) {
        return;
    }
    let dir = TempDir::new("h2-rst");
    let (listen, up, admin) = (free_port(), free_port(), free_port());
    let (_u, log) = start_upstream(&dir, "up", up);
    let config = format!(
        "admin: {{ address: 127.0.0.1:{admin} }}\n{}",
        config(listen, up, "")
    );
    let _sluice = start_sluice(&dir, &config, 1, addr(admin));
    // A stream waiting on a slow upstream is reset (CANCEL) once the upstream has it; the next
    // stream on the same connection is answered.
    let script = format!(
        r#"
const http2 = require('http2');
const fs = require('fs');
const session = http2.connect('http://127.0.0.1:{listen}');
const slow = session.request({{ ':path': '/sleep/5000' }});
slow.on('error', () => {{}});
slow.on('close', () => console.log('reset sent'));
const poll = setInterval(() => {{
  if (fs.readFileSync('{log}', 'utf8').includes('/sleep/5000')) {{
    clearInterval(poll);
    slow.close(http2.constants.NGHTTP2_CANCEL);
    const next = session.request({{ ':path': '/app/after' }});
    next.on('response', (h) => {{ console.log('next ' + h[':status']); next.resume(); next.on('end', () => session.close()); }});
  }}
}}, 20);
"#,
        log = log.display()
    );
    let out = run("node", &["-e", &script]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(
        text.trim(),
        "reset sent\nnext 200",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The proxy saw the reset and holds no stream.
    let mut counts = (0, 1);
    for _ in 0..100 {
        counts = (
            stat(admin, "http2.rx_reset"),
            stat(admin, "http2.streams_active"),
        );
        if counts == (1, 0) {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(counts, (1, 0), "(http2.rx_reset, http2.streams_active)");
}

/// A client that sends GOAWAY (NO_ERROR, twice: a two-phase close) while a stream of its is
/// waiting on a slow upstream: the stream still gets its whole answer, the proxy then closes
/// the connection, and `http2.goaway_received` counts the connection once (`h2` does not report
/// a NO_ERROR GOAWAY to a server: the proxy spots it in the bytes). The proxy's own GOAWAY in
/// reply is `h2`'s, not one of the causes of `http2.goaway_sent`. (The client's view of the
/// close is not asserted: Node stops reading a connection once it sent GOAWAY and has no stream
/// left, so it may never see the proxy's GOAWAY and FIN.)
#[test]
fn a_client_goaway_is_counted_and_its_open_stream_still_completes() {
    if !require_peers(&["node"]) {
        return;
    }
    let dir = TempDir::new("h2-client-goaway");
    let (listen, up, admin) = (free_port(), free_port(), free_port());
    let (_u, log) = start_upstream(&dir, "up", up);
    let config = format!(
        "admin: {{ address: 127.0.0.1:{admin} }}\n{}",
        config(listen, up, "")
    );
    let _sluice = start_sluice(&dir, &config, 1, addr(admin));
    assert_eq!(stat(admin, "http2.goaway_received"), 0);
    let script = format!(
        r#"
const http2 = require('http2');
const fs = require('fs');
const session = http2.connect('http://127.0.0.1:{listen}');
const events = [];
session.on('error', (e) => events.push('error ' + e.code));
const slow = session.request({{ ':path': '/sleep/800' }});
slow.on('response', (h) => events.push('status ' + h[':status']));
let body = '';
slow.on('data', (d) => body += d);
slow.on('end', () => {{ events.push('path ' + JSON.parse(body).path); console.log(events.join(' ')); process.exit(0); }});
slow.on('error', (e) => events.push('stream error ' + e.code));
const poll = setInterval(() => {{
  if (fs.readFileSync('{log}', 'utf8').includes('/sleep/800')) {{
    clearInterval(poll);
    session.goaway(http2.constants.NGHTTP2_NO_ERROR, 2147483647);
    setTimeout(() => session.goaway(http2.constants.NGHTTP2_NO_ERROR, 0), 50);
    events.push('goaway sent');
  }}
}}, 20);
setTimeout(() => {{ console.log(events.concat('no answer').join(' ')); process.exit(1); }}, 15000);
"#,
        log = log.display()
    );
    let out = run("node", &["-e", &script]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(
        text.trim(),
        "goaway sent status 200 path /sleep/800",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stat(admin, "http2.goaway_received"), 1);
    assert_eq!(stat(admin, "http2.goaway_sent.drain"), 0);
    assert_eq!(stat(admin, "http2.goaway_sent.idle_timeout"), 0);
    // Nothing is left open.
    let mut open = (1, 1);
    for _ in 0..100 {
        open = (
            stat(admin, "http2.downstream_cx_active"),
            stat(admin, "http2.streams_active"),
        );
        if open == (0, 0) {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        open,
        (0, 0),
        "(http2.downstream_cx_active, http2.streams_active)"
    );
}

/// What a raw h2c client saw of its connection ([`raw_h2c_client`]).
#[derive(Debug)]
struct RawH2c {
    /// PINGs the server sent (not ACKs).
    pings: u32,
    /// The error code of the server's GOAWAY, if one came.
    goaway: Option<u32>,
    /// When the server closed the connection (since the connect), if it did.
    closed_after: Option<Duration>,
}

/// A client that sends the preface and an empty SETTINGS, acknowledges the server's SETTINGS,
/// opens no stream, and answers the server's PINGs only when `answer_pings` — one that stops
/// answering stands for a peer gone without FIN or RST (a NAT that dropped its state). With
/// `own_pings`, it sends a PING of its own that often (bytes that keep coming while the
/// server's PING waits, as DATA would ahead of a queued ACK). Reads until the server closes or
/// `for_at_most` passed.
fn raw_h2c_client(
    listen: u16,
    answer_pings: bool,
    own_pings: Option<Duration>,
    for_at_most: Duration,
) -> RawH2c {
    let start = std::time::Instant::now();
    let mut s = raw_h2::connect(addr(listen));
    let mut seen = RawH2c {
        pings: 0,
        goaway: None,
        closed_after: None,
    };
    let mut next_own = own_pings.map(|every| start + every);
    loop {
        let Some(mut wait) = for_at_most.checked_sub(start.elapsed()) else {
            return seen;
        };
        if let Some(at) = next_own {
            wait = wait.min(at.saturating_duration_since(std::time::Instant::now()));
        }
        s.set_read_timeout(Some(wait.max(Duration::from_millis(1))))
            .unwrap();
        let mut head = [0u8; 9];
        match s.read_exact(&mut head) {
            Ok(()) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                // (A frame header is 9 bytes, sent whole: a timeout never splits one here.)
                if let (Some(at), Some(every)) = (next_own, own_pings)
                    && std::time::Instant::now() >= at
                {
                    if s.write_all(&frame(PING, 0, 0, b"client!!")).is_err() {
                        seen.closed_after = Some(start.elapsed());
                        return seen;
                    }
                    next_own = Some(at + every);
                    continue;
                }
                if start.elapsed() >= for_at_most {
                    return seen;
                }
                continue;
            }
            Err(_) => {
                seen.closed_after = Some(start.elapsed());
                return seen;
            }
        }
        let (len, kind, flags, _) = raw_h2::parse_head(&head);
        let mut payload = vec![0u8; len];
        if s.read_exact(&mut payload).is_err() {
            seen.closed_after = Some(start.elapsed());
            return seen;
        }
        match kind {
            SETTINGS if flags & ACK == 0 => s.write_all(&frame(SETTINGS, ACK, 0, &[])).unwrap(),
            PING if flags & ACK == 0 => {
                seen.pings += 1;
                if answer_pings {
                    s.write_all(&frame(PING, ACK, 0, &payload)).unwrap();
                }
            }
            GOAWAY => {
                seen.goaway = Some(u32::from_be_bytes([
                    payload[4], payload[5], payload[6], payload[7],
                ]));
            }
            _ => {}
        }
    }
}

/// The listener's `http2.connection_keepalive` (Envoy's): a client that stops answering PINGs
/// is sent GOAWAY (NO_ERROR) and closed about `interval + timeout` after it connected, counted
/// in `http2.downstream_keepalive_timeout` and `http2.goaway_sent.keepalive_timeout`; clients
/// that answer — a raw one for several intervals, curl through a slow request — are left open,
/// and so is one whose bytes keep coming while the PING waits (Envoy's extension of the timeout).
/// Without the keepalive (the default) the silent client stays open: checked below too.
#[test]
fn an_http2_client_that_stops_answering_pings_is_closed_and_one_that_answers_is_not() {
    if !require_peers(&["curl"]) {
        return;
    }
    let dir = TempDir::new("h2-keepalive");
    let (listen, up, admin) = (free_port(), free_port(), free_port());
    let (_u, _log) = start_upstream(&dir, "up", up);
    let yaml = format!(
        "{}admin: {{ address: 127.0.0.1:{admin} }}\n",
        config(
            listen,
            up,
            "      http2: { connection_keepalive: { interval: 1s, timeout: 500ms } }\n"
        )
    );
    let _sluice = start_sluice(&dir, &yaml, 1, addr(listen));

    let silent = raw_h2c_client(listen, false, None, Duration::from_secs(10));
    assert_eq!(silent.pings, 1, "{silent:?}");
    assert_eq!(silent.goaway, Some(0), "{silent:?}");
    let after = silent.closed_after.expect("closed by the proxy");
    assert!(
        after >= Duration::from_millis(1400) && after < Duration::from_secs(4),
        "closed after {after:?}, expected about interval + timeout (1.5 s)"
    );
    assert_eq!(stat(admin, "http2.downstream_keepalive_timeout"), 1);
    assert_eq!(stat(admin, "http2.goaway_sent.keepalive_timeout"), 1);

    let answering = raw_h2c_client(listen, true, None, Duration::from_millis(4500));
    assert!(answering.pings >= 3, "{answering:?}");
    assert_eq!(
        (answering.goaway, answering.closed_after),
        (None, None),
        "{answering:?}"
    );
    // One that does not answer but keeps sending (its own PINGs every 200 ms, standing for
    // DATA ahead of a queued ACK) is not taken for dead: each arrival extends the timeout.
    let busy = raw_h2c_client(
        listen,
        false,
        Some(Duration::from_millis(200)),
        Duration::from_secs(3),
    );
    assert_eq!(
        (busy.pings, busy.goaway, busy.closed_after),
        (1, None, None),
        "{busy:?}"
    );
    // curl answers PINGs on its own: a request slower than several intervals completes.
    let (version, status, body) = curl_h2(&format!("http://127.0.0.1:{listen}/sleep/3500"), &[]);
    assert_eq!((version.as_str(), status), ("2", 200), "{body}");
    assert_eq!(stat(admin, "http2.downstream_keepalive_timeout"), 1);

    // The default: no PINGs, so nothing notices the silent client.
    let (listen2, admin2) = (free_port(), free_port());
    let yaml = format!(
        "{}admin: {{ address: 127.0.0.1:{admin2} }}\n",
        config(listen2, up, "")
    );
    let dir2 = TempDir::new("h2-keepalive-off");
    let _sluice2 = start_sluice(&dir2, &yaml, 1, addr(listen2));
    let silent = raw_h2c_client(listen2, false, None, Duration::from_secs(3));
    assert_eq!(
        (silent.pings, silent.goaway, silent.closed_after),
        (0, None, None),
        "{silent:?}"
    );
    assert_eq!(stat(admin2, "http2.downstream_keepalive_timeout"), 0);
}

/// A stream state a worker reuses starts clean: after a stream that carried its own trace
/// (`traceparent`) and a generated `x-request-id`, the next stream on the same connection —
/// and so on the same worker, which takes the state the first gave back — arrives as HEADERS
/// and RST_STREAM in one write, so that it may end before its request path ever ran. Its
/// access-log line carries none of the earlier stream's ids (before the fix it carried both,
/// and exported a second span in the earlier stream's trace), and every trace's spans are its
/// own streams' only. Defaults: tracing samples 100 %; twenty rounds, since which of the
/// request path and the reset a stream sees first varies.
#[test]
fn a_stream_reset_in_its_first_write_logs_and_exports_none_of_an_earlier_streams_ids() {
    if !require_peers(&["python3"]) {
        return;
    }
    let dir = TempDir::new("h2-reset-ids");
    let (listen, up, admin, collector) = (free_port(), free_port(), free_port(), free_port());
    let exports = support::otlp::start_otlp_receiver(collector);
    let (_u, _requests) = start_upstream(&dir, "up", up);
    let log = dir.path().join("access.log");
    let yaml = format!(
        r#"
admin: {{ address: 127.0.0.1:{admin} }}
listeners:
  - name: h2_in
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
  - name: otel
    hosts: [ {{ address: 127.0.0.1:{collector} }} ]
tracing:
  otlp: {{ cluster: otel }}
"#,
        log = log.display()
    );
    let sluice = start_sluice(&dir, &yaml, 1, addr(listen));
    let settled = || {
        eventually(Duration::from_secs(10), || {
            stat(admin, "http2.streams_active") == 0
        })
    };

    let mut c = raw_h2::connect(addr(listen));
    const ROUNDS: u32 = 20;
    let mut traces = Vec::new();
    for round in 0..ROUNDS {
        // A stream with its own trace and no x-request-id (the proxy generates one), answered
        // in full; its state is back in the worker's pool once no stream is active.
        let (earlier, reset) = (4 * round + 1, 4 * round + 3);
        let trace = format!("{:032x}", 0xabc0_0000 + u64::from(round));
        let traceparent = format!("00-{trace}-00f067aa0ba902b7-01");
        let path = format!("/before/{round}");
        let block = hpack_literals(&[
            (":method", "GET"),
            (":scheme", "http"),
            (":path", &path),
            (":authority", "svc"),
            ("traceparent", &traceparent),
        ]);
        c.write_all(&frame(HEADERS, END_HEADERS | END_STREAM, earlier, &block))
            .unwrap();
        raw_h2::read_until_end(&mut c, earlier);
        assert!(settled(), "the earlier stream of round {round} ended");
        traces.push(trace);
        // HEADERS (END_STREAM) and RST_STREAM (CANCEL) of the next stream, in one write.
        let path = format!("/reset/{round}");
        let block = hpack_literals(&[
            (":method", "GET"),
            (":scheme", "http"),
            (":path", &path),
            (":authority", "svc"),
        ]);
        let mut both = frame(HEADERS, END_HEADERS | END_STREAM, reset, &block);
        both.extend_from_slice(&frame(RST_STREAM, 0, reset, &8u32.to_be_bytes()));
        c.write_all(&both).unwrap();
        // The reset counted first: `streams_active` is 0 too before the proxy has read the
        // two frames, so "settled" alone may be seen before this stream began (CI once read
        // 19 resets after the last round).
        assert!(
            eventually(Duration::from_secs(10), || {
                stat(admin, "http2.rx_reset") == u64::from(round + 1)
            }),
            "the reset of round {round} was counted once"
        );
        assert!(settled(), "the reset stream of round {round} ended");
    }
    assert_eq!(stat(admin, "http2.rx_reset"), u64::from(ROUNDS));

    // Every sampled span reaches the collector (default export interval).
    assert!(
        eventually(Duration::from_secs(20), || {
            let sampled = stat(admin, "tracing.spans_sampled");
            sampled >= u64::from(ROUNDS) && stat(admin, "tracing.spans_exported") == sampled
        }),
        "sampled {}, exported {}",
        stat(admin, "tracing.spans_sampled"),
        stat(admin, "tracing.spans_exported")
    );
    let spans = support::otlp::spans(&exports);
    for (round, trace) in traces.iter().enumerate() {
        let paths: Vec<String> = spans
            .iter()
            .filter(|s| s["traceId"] == trace.as_str())
            .map(|s| {
                support::otlp::attribute(s, "url.path")
                    .and_then(|v| v["stringValue"].as_str())
                    .unwrap_or("?")
                    .to_owned()
            })
            .collect();
        assert_eq!(
            paths,
            [format!("/before/{round}")],
            "the spans of trace {trace}"
        );
    }

    // The access log (flushed at exit): each earlier stream's ids are its own line's only.
    drop(c);
    stop_gracefully(sluice, Duration::from_secs(15));
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let field = |v: &serde_json::Value, k: &str| v[k].as_str().unwrap_or("").to_owned();
    let mut earlier_ids = Vec::new();
    for (round, trace) in traces.iter().enumerate() {
        let line = lines
            .iter()
            .find(|v| v["path"] == format!("/before/{round}"))
            .unwrap_or_else(|| panic!("no line for /before/{round}:\n{text}"));
        assert_eq!(line["status"], 200, "{line}");
        assert_eq!(&field(line, "trace_id"), trace, "{line}");
        let id = field(line, "request_id");
        assert_eq!(id.len(), 36, "a generated x-request-id: {line}");
        earlier_ids.push((id, trace.clone()));
    }
    for round in 0..ROUNDS as usize {
        let line = lines
            .iter()
            .find(|v| v["path"] == format!("/reset/{round}"))
            .unwrap_or_else(|| panic!("no line for /reset/{round}:\n{text}"));
        let (id, trace) = (field(line, "request_id"), field(line, "trace_id"));
        for (earlier_id, earlier_trace) in &earlier_ids {
            assert_ne!(&id, earlier_id, "an earlier stream's request id: {line}");
            assert_ne!(
                &trace, earlier_trace,
                "an earlier stream's trace id: {line}"
            );
        }
    }
}

/// An h2c connection through `socket` (connected) with the connection and stream windows
/// opened as far as they go, and one `GET path` on stream 1.
fn h2c_get_wide_open(socket: socket2::Socket, path: &str) -> TcpStream {
    let mut s: TcpStream = socket.into();
    let mut out = raw_h2::PREFACE.to_vec();
    // SETTINGS_INITIAL_WINDOW_SIZE at its most, and the connection window opened as far: flow
    // control never holds the response back.
    out.extend(frame(0x4, 0, 0, &[0, 4, 0x7f, 0xff, 0xff, 0xff]));
    out.extend(frame(0x8, 0, 0, &(0x7fff_ffffu32 - 65_535).to_be_bytes()));
    let block = hpack_literals(&[
        (":method", "GET"),
        (":scheme", "http"),
        (":path", path),
        (":authority", "slow.test"),
    ]);
    out.extend(frame(0x1, 0x5, 1, &block));
    s.write_all(&out).unwrap();
    s
}

/// A listener with `connection_keepalive: { interval: 1s, timeout: T, interval_jitter_percent: 0 }`
/// in front of the test upstream; (listen, admin) and what must stay alive.
fn keepalive_listener(dir: &TempDir, timeout: &str) -> (u16, u16, Vec<Proc>) {
    let (listen, up, admin) = (free_port(), free_port(), free_port());
    let (u, _log) = start_upstream(dir, "up", up);
    let yaml = format!(
        "{}admin: {{ address: 127.0.0.1:{admin} }}\n",
        config(
            listen,
            up,
            &format!(
                "      http2: {{ connection_keepalive: {{ interval: 1s, timeout: {timeout}, interval_jitter_percent: 0 }} }}\n"
            )
        )
    );
    let sluice = start_sluice(dir, &yaml, 1, addr(listen));
    (listen, admin, vec![u, sluice])
}

/// A slow client downloading a large response under `http2.connection_keepalive`: the proxy
/// writes the response and then its PING into the kernel's buffers, so the PING (and the
/// client's ACK) waits behind the response while the client reads it slowly, sending nothing.
/// The client's TCP acknowledging the bytes queued ahead of the PING shows it is taking them in
/// (`TCP_INFO`, counted in `http2.downstream_keepalive_extended_by_acks`): it gets the whole body
/// and is not closed (it answers each PING once it reaches it, as clients do). Without that
/// sign (bytes received, or a write after a full buffer, alone), the PING's `timeout` passes
/// while the response still drains and the connection is closed.
#[test]
fn an_http2_client_reading_a_large_response_slowly_is_not_taken_for_dead() {
    if !require_peers(&["python3"]) {
        return;
    }
    let dir = TempDir::new("h2-keepalive-slow-reader");
    let (listen, admin, _procs) = keepalive_listener(&dir, "1s");
    const BODY: usize = 2_500_000;
    // A small receive buffer: the response waits in the proxy's send buffer, not in ours.
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.connect(&addr(listen).into()).unwrap();
    let mut s = h2c_get_wide_open(socket, &format!("/bytes/{BODY}"));
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let start = std::time::Instant::now();
    let (mut body, mut pings, mut goaway, mut ended) = (0usize, 0, None, false);
    let mut chunk = [0u8; 4096];
    let mut pending: Vec<u8> = Vec::new();
    // About 400 KB/s: the response takes several PING timeouts to drain.
    while !ended && start.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(10));
        let n = match s.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        pending.extend_from_slice(&chunk[..n]);
        while pending.len() >= 9 {
            let len = u32::from_be_bytes([0, pending[0], pending[1], pending[2]]) as usize;
            if pending.len() < 9 + len {
                break;
            }
            let (kind, flags) = (pending[3], pending[4]);
            let payload = pending[9..9 + len].to_vec();
            pending.drain(..9 + len);
            match kind {
                0x0 => {
                    body += len;
                    ended = flags & 0x1 != 0;
                }
                0x4 if flags & 0x1 == 0 => s.write_all(&frame(0x4, 0x1, 0, &[])).unwrap(),
                0x6 if flags & 0x1 == 0 => {
                    pings += 1;
                    s.write_all(&frame(0x6, 0x1, 0, &payload)).unwrap();
                }
                0x7 => goaway = Some(payload),
                _ => {}
            }
        }
    }
    let took = start.elapsed();
    assert_eq!(
        (body, ended, goaway.is_some()),
        (BODY, true, false),
        "after {took:?}, {pings} PINGs"
    );
    assert!(pings >= 1, "no PING while the response drained ({took:?})");
    assert_eq!(stat(admin, "http2.downstream_keepalive_timeout"), 0);
    assert!(
        stat(admin, "http2.downstream_keepalive_extended_by_acks") >= 1,
        "the acknowledgements were not what kept it ({took:?})"
    );
}

/// A hung client (its program reads nothing, its kernel still acknowledges) on a trickling
/// response: what its TCP acknowledges after the PING went is no sign of life — only bytes
/// queued ahead of the PING count — so it is closed `interval + timeout` after it connected,
/// not kept for as long as the trickle lasts.
#[test]
fn a_hung_http2_client_on_a_trickling_response_is_closed_by_the_keepalive() {
    if !require_peers(&["python3"]) {
        return;
    }
    let dir = TempDir::new("h2-keepalive-hung");
    let (listen, admin, _procs) = keepalive_listener(&dir, "1s");
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.connect(&addr(listen).into()).unwrap();
    // 100 bytes every 100 ms for 8 s.
    let mut s = h2c_get_wide_open(socket, "/drip/80/100");
    // Read nothing (not even the SETTINGS) until the keepalive (PING at 1 s, unanswered at
    // 2 s) has closed it; that it was not kept for the acknowledgements is the counter below.
    assert!(
        eventually(Duration::from_secs(30), || stat(
            admin,
            "http2.downstream_keepalive_timeout"
        ) >= 1),
        "the hung client was never closed by the keepalive"
    );
    assert_eq!(stat(admin, "http2.downstream_keepalive_timeout"), 1);
    assert_eq!(
        stat(admin, "http2.downstream_keepalive_extended_by_acks"),
        0
    );
    let mut all = Vec::new();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = s.read_to_end(&mut all);
    let mut at = 0;
    let mut goaway = false;
    while at + 9 <= all.len() {
        let len = u32::from_be_bytes([0, all[at], all[at + 1], all[at + 2]]) as usize;
        goaway |= all[at + 3] == 0x7;
        at += 9 + len;
    }
    assert!(goaway, "no GOAWAY in the {} bytes read", all.len());
}
