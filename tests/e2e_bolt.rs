//! The Bolt proxy end to end: real SOFARPC peers (npm `sofa-rpc-node`) through `sluice`, and
//! every status the proxy generates itself read from the raw response frame.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use sluice_core::bolt::{self, RequestSpec, ResponseStatus, Version};
use support::*;

const SERVICE: &str = "com.example.EchoService:1.0";

fn admin_stat(admin: u16, name: &str) -> u64 {
    let text = http_get_text(addr(admin), "/stats");
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}: ")))
        .unwrap_or_else(|| panic!("no {name} in /stats:\n{text}"))
        .trim()
        .parse()
        .unwrap()
}

fn http_get_text(to: SocketAddr, path: &str) -> String {
    let mut s = TcpStream::connect(to).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or(out)
}

/// A Bolt v1 (or v2) request for `service`, with `timeout_ms` in its timeout field.
fn request(version: Version, id: u32, service: &str, timeout_ms: i32) -> Vec<u8> {
    let mut out = Vec::new();
    let header: [(&[u8], Option<&[u8]>); 1] = [(b"service", Some(service.as_bytes()))];
    bolt::encode_request(
        &mut out,
        &RequestSpec {
            version,
            oneway: false,
            cmd_code: bolt::CMD_REQUEST,
            cmd_version: bolt::CMD_VERSION,
            request_id: id,
            codec: bolt::CODEC_HESSIAN2,
            timeout_ms,
            class: b"com.alipay.sofa.rpc.core.request.SofaRequest",
            header: &header,
            content: b"payload",
        },
    )
    .unwrap();
    out
}

fn heartbeat(version: Version, id: u32) -> Vec<u8> {
    let mut out = Vec::new();
    bolt::encode_request(
        &mut out,
        &RequestSpec {
            version,
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

/// One response frame read from `s`: (version, request id, cmd code, status).
fn read_response(s: &mut TcpStream, buf: &mut Vec<u8>) -> (Version, u32, u16, u16) {
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    loop {
        if let Some(f) = bolt::decode(buf, 1 << 20).unwrap() {
            let out = (f.version, f.request_id, f.cmd_code, f.status.unwrap());
            let n = f.len;
            buf.drain(..n);
            return out;
        }
        let mut chunk = [0u8; 4096];
        let n = s
            .read(&mut chunk)
            .expect("a response before the read timeout");
        assert!(n > 0, "connection closed before a response; have {buf:?}");
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// An upstream that accepts connections and reads, but never answers; with `close_after_read`,
/// it closes each connection once it has read something.
struct SilentUpstream {
    port: u16,
    stop: Arc<AtomicBool>,
}

impl SilentUpstream {
    fn start(close_after_read: bool) -> Self {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        l.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        std::thread::spawn(move || {
            let mut held = Vec::new();
            while !flag.load(Ordering::Relaxed) {
                match l.accept() {
                    Ok((mut s, _)) => {
                        s.set_nonblocking(false).unwrap();
                        if close_after_read {
                            std::thread::spawn(move || {
                                let mut b = [0u8; 4096];
                                let _ = s.read(&mut b);
                                // Dropped: closes with the request unanswered.
                            });
                        } else {
                            held.push(s);
                        }
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        SilentUpstream { port, stop }
    }
}

impl Drop for SilentUpstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn bolt_config(listen: u16, admin: u16, cluster_extra: &str, hosts: &[u16], route: &str) -> String {
    let hosts: String = hosts
        .iter()
        .map(|p| format!("      - {{ address: 127.0.0.1:{p} }}\n"))
        .collect();
    format!(
        r#"
admin: {{ address: 127.0.0.1:{admin} }}
listeners:
  - name: rpc_in
    address: 127.0.0.1:{listen}
    bolt:
      max_frame_size: 64KiB
      routes:
        - match: {{ service: "{SERVICE}" }}
          route: {{ cluster: rpc{route} }}
clusters:
  - name: rpc
    connect_timeout: 500ms
    lb_policy: round_robin
{cluster_extra}
    hosts:
{hosts}drain_timeout: 1s
"#
    )
}

#[test]
fn sofa_rpc_round_trips_through_the_proxy() {
    if !require_peers(&["sofa-rpc-node"]) {
        return;
    }
    let dir = TempDir::new("bolt-sofa");
    let (pa, pb, listen, admin) = (free_port(), free_port(), free_port(), free_port());
    let _a = start_sofa_server(&dir, "a", pa);
    let _b = start_sofa_server(&dir, "b", pb);
    let _sluice = start_sluice(
        &dir,
        &bolt_config(listen, admin, "", &[pa, pb], ""),
        2,
        addr(listen),
    );
    let target = format!("127.0.0.1:{listen}");

    // Hundreds of concurrent invokes, every result right, both servers used.
    let v = sofa_client(&target, "echo", &["--count", "600", "--concurrency", "100"]);
    assert_eq!(v["ok"], 600, "{v}");
    assert_eq!(v["mismatches"], 0, "{v}");
    assert_eq!(v["error_count"], 0, "{v}");
    let (a, b) = (
        v["servers"]["a"].as_u64().unwrap_or(0),
        v["servers"]["b"].as_u64().unwrap_or(0),
    );
    assert!(a > 100 && b > 100, "round robin per request: {v}");

    // Two clients at once: both number their requests from 1, so their ids collide at the
    // proxy; each must get only its own answers.
    let clients: Vec<_> = (0..2)
        .map(|_| {
            let t = target.clone();
            std::thread::spawn(move || {
                sofa_client(&t, "plus", &["--count", "400", "--concurrency", "50"])
            })
        })
        .collect();
    for c in clients {
        let v = c.join().unwrap();
        assert_eq!(v["ok"], 400, "{v}");
        assert_eq!(v["mismatches"], 0, "{v}");
    }

    // A server-side exception reaches the client as an exception with its message.
    let v = sofa_client(&target, "fail", &["--timeout", "3000"]);
    assert_eq!(v["threw"], true, "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("boom"),
        "{v}"
    );
    assert!(admin_stat(admin, "bolt.requests") >= 1401);
    assert_eq!(admin_stat(admin, "bolt.timeouts"), 0);
}

#[test]
fn a_server_killed_mid_flight_gives_clean_errors() {
    if !require_peers(&["sofa-rpc-node"]) {
        return;
    }
    let dir = TempDir::new("bolt-kill");
    let (pb, listen, admin) = (free_port(), free_port(), free_port());
    let b = start_sofa_server(&dir, "b", pb);
    // A Bolt heartbeat health check against the real SOFARPC server.
    let hc = "    health_check: { bolt: {}, interval: 200ms, timeout: 200ms, no_traffic_interval: 200ms }";
    let _sluice = start_sluice(
        &dir,
        &bolt_config(listen, admin, hc, &[pb], ""),
        1,
        addr(listen),
    );
    let target = format!("127.0.0.1:{listen}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while admin_stat(admin, "cluster.rpc.health_check.success") < 2 {
        assert!(
            Instant::now() < deadline,
            "the sofa-rpc-node server never answered the Bolt heartbeat probe"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(admin_stat(admin, "cluster.rpc.health_check.failure"), 0);
    let client = {
        let t = target.clone();
        std::thread::spawn(move || {
            sofa_client(&t, "sleep", &["--ms", "10000", "--timeout", "20000"])
        })
    };
    // Killed while the call is in flight: once the server has started the sleep.
    assert!(
        eventually(Duration::from_secs(20), || b
            .log_text()
            .lines()
            .any(|l| l.trim() == "SLEEPING 10000")),
        "the server never started the sleep:\n{}",
        b.log_text()
    );
    // From the kill, not from the client's start (node's start-up is no part of it).
    let started = Instant::now();
    b.signal("KILL");
    let v = client.join().unwrap();
    assert_eq!(v["ok"], false, "{v}");
    // The proxy answered status 16 at once (an error reply, not a client-side timeout).
    assert_ne!(v["error"]["name"], "RpcResponseTimeoutError", "{v}");
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "took {:?}: {v}",
        started.elapsed()
    );
    assert_eq!(admin_stat(admin, "bolt.upstream_lost"), 1);
    // The proxy keeps serving: the next invoke gets a clean error too (no server left).
    let v = sofa_client(&target, "echo", &["--count", "1", "--timeout", "3000"]);
    assert_eq!(v["ok"], 0, "{v}");
    assert_eq!(v["error_count"], 1, "{v}");
    assert!(
        !v["errors"][0]
            .as_str()
            .unwrap()
            .contains("RpcResponseTimeoutError"),
        "{v}"
    );
}

/// Every status the proxy makes itself, read from the raw frame: heartbeat 0 (v1 and v2), no
/// route 6, overflow 4, timeout 7, codec error 9, upstream lost 16, no healthy host 6.
#[test]
fn proxy_generated_statuses_on_the_wire() {
    let dir = TempDir::new("bolt-status");
    let silent = SilentUpstream::start(false);
    let closing = SilentUpstream::start(true);
    let dead = free_port();
    let (listen, admin) = (free_port(), free_port());
    let config = format!(
        r#"
admin: {{ address: 127.0.0.1:{admin} }}
listeners:
  - name: rpc_in
    address: 127.0.0.1:{listen}
    bolt:
      max_frame_size: 64KiB
      routes:
        - match: {{ service: "silent" }}
          route: {{ cluster: silent }}
        - match: {{ service: "closing" }}
          route: {{ cluster: closing }}
        - match: {{ service: "dead" }}
          route: {{ cluster: dead }}
clusters:
  - name: silent
    circuit_breakers: {{ max_requests: 1 }}
    hosts: [ {{ address: 127.0.0.1:{} }} ]
  - name: closing
    hosts: [ {{ address: 127.0.0.1:{} }} ]
  - name: dead
    connect_timeout: 200ms
    panic_threshold: 0%
    health_check: {{ tcp: {{}}, interval: 100ms, timeout: 100ms, unhealthy_threshold: 1, no_traffic_interval: 100ms }}
    hosts: [ {{ address: 127.0.0.1:{dead} }} ]
"#,
        silent.port, closing.port
    );
    let _sluice = start_sluice(&dir, &config, 1, addr(listen));
    let mut s = TcpStream::connect(addr(listen)).unwrap();
    let mut buf = Vec::new();

    // Heartbeats, both versions: status 0, same id, same version, command code 0.
    s.write_all(&heartbeat(Version::V1, 41)).unwrap();
    assert_eq!(read_response(&mut s, &mut buf), (Version::V1, 41, 0, 0));
    let v2 = Version::V2 { ver1: 1, switch: 1 };
    s.write_all(&heartbeat(v2, 42)).unwrap();
    let (version, id, cmd, status) = read_response(&mut s, &mut buf);
    assert_eq!((version, id, cmd, status), (v2, 42, 0, 0));

    // No route: 6.
    s.write_all(&request(Version::V1, 7, "com.nowhere.Service:1.0", 0))
        .unwrap();
    assert_eq!(
        read_response(&mut s, &mut buf),
        (Version::V1, 7, 2, ResponseStatus::NoProcessor.code())
    );

    // The silent upstream holds request 100 (its frame timeout: 700 ms); max_requests is 1, so
    // request 101 overflows at once: 4. Then 100 times out: 7, with its own id.
    let t0 = Instant::now();
    s.write_all(&request(Version::V1, 100, "silent", 700))
        .unwrap();
    // A pause between the two, not a wait for a condition (no counter shows a Bolt request in
    // flight): read in one batch or two, 100 takes the breaker's one slot before 101 is seen.
    std::thread::sleep(Duration::from_millis(100));
    s.write_all(&request(Version::V1, 101, "silent", 700))
        .unwrap();
    assert_eq!(
        read_response(&mut s, &mut buf),
        (
            Version::V1,
            101,
            2,
            ResponseStatus::ServerThreadpoolBusy.code()
        )
    );
    assert_eq!(
        read_response(&mut s, &mut buf),
        (Version::V1, 100, 2, ResponseStatus::Timeout.code())
    );
    let waited = t0.elapsed();
    assert!(
        waited >= Duration::from_millis(650),
        "timed out after {waited:?}, before the frame's 700 ms"
    );

    // The upstream closes the connection with the request in flight: 16.
    s.write_all(&request(Version::V1, 200, "closing", 5000))
        .unwrap();
    assert_eq!(
        read_response(&mut s, &mut buf),
        (Version::V1, 200, 2, ResponseStatus::ConnectionClosed.code())
    );

    // Every host of `dead` fails its health check (panic threshold 0): 6, at once.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        s.write_all(&request(Version::V1, 300, "dead", 5000))
            .unwrap();
        let (_, id, _, status) = read_response(&mut s, &mut buf);
        assert_eq!(id, 300);
        if status == ResponseStatus::NoProcessor.code() {
            break;
        }
        // Before the health check marks it down, the connect fails: 16.
        assert_eq!(status, ResponseStatus::ConnectionClosed.code());
        assert!(
            Instant::now() < deadline,
            "the dead host was never marked unhealthy"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // A codec error (an unknown type byte) is answered 9 with the id, and closes only that
    // connection.
    let mut bad = request(Version::V1, 500, "silent", 0);
    bad[1] = 9;
    let mut s2 = TcpStream::connect(addr(listen)).unwrap();
    let mut buf2 = Vec::new();
    s2.write_all(&bad).unwrap();
    assert_eq!(
        read_response(&mut s2, &mut buf2),
        (Version::V1, 500, 2, ResponseStatus::CodecException.code())
    );
    let mut rest = Vec::new();
    s2.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    assert_eq!(s2.read_to_end(&mut rest).unwrap(), 0, "closed after the 9");

    // A frame declaring more than max_frame_size (64 KiB) closes that connection at once.
    let mut huge = request(Version::V1, 600, "silent", 0);
    huge[18..22].copy_from_slice(&(1u32 << 20).to_be_bytes()); // v1 request: content length @18
    assert!(
        bolt::decode(&huge, 64 * 1024).is_err(),
        "the frame declares > 64 KiB"
    );
    let mut s3 = TcpStream::connect(addr(listen)).unwrap();
    s3.write_all(&huge).unwrap();
    s3.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut rest = Vec::new();
    let _ = s3.read_to_end(&mut rest);
    if !rest.is_empty() {
        let f = bolt::decode(&rest, 1 << 20).unwrap().unwrap();
        assert_eq!(f.status, Some(ResponseStatus::CodecException.code()));
    }

    // The first connection was harmed by none of that.
    s.write_all(&heartbeat(Version::V1, 700)).unwrap();
    assert_eq!(read_response(&mut s, &mut buf), (Version::V1, 700, 0, 0));
    assert!(admin_stat(admin, "bolt.codec_errors") >= 2);
    assert_eq!(admin_stat(admin, "bolt.overflow"), 1);
    assert_eq!(admin_stat(admin, "bolt.timeouts"), 1);
}

#[test]
fn protocol_auto_serves_http_and_bolt_and_closes_anything_else() {
    if !require_peers(&["sofa-rpc-node"]) {
        return;
    }
    let dir = TempDir::new("bolt-auto");
    let (pa, listen, admin) = (free_port(), free_port(), free_port());
    let _a = start_sofa_server(&dir, "a", pa);
    let config = format!(
        r#"
admin: {{ address: 127.0.0.1:{admin} }}
listeners:
  - name: mixed_in
    address: 127.0.0.1:{listen}
    protocol: auto
    http:
      virtual_hosts:
        - name: all
          domains: ["*"]
          routes:
            - match: {{ prefix: / }}
              direct_response: {{ status: 200, body: "http here\n" }}
    bolt:
      routes:
        - route: {{ cluster: rpc }}
clusters:
  - name: rpc
    hosts: [ {{ address: 127.0.0.1:{pa} }} ]
"#
    );
    let _sluice = start_sluice(&dir, &config, 1, addr(listen));
    assert_eq!(http_get_text(addr(listen), "/x"), "http here\n");
    let v = sofa_client(
        &format!("127.0.0.1:{listen}"),
        "echo",
        &["--count", "50", "--concurrency", "10"],
    );
    assert_eq!(v["ok"], 50, "{v}");
    assert_eq!(v["servers"]["a"], 50, "{v}");
    // Neither HTTP nor Bolt: closed without an answer, and counted.
    let mut s = TcpStream::connect(addr(listen)).unwrap();
    s.write_all(b"\x16\x03\x01\x02\x00hello").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut rest = Vec::new();
    assert_eq!(s.read_to_end(&mut rest).unwrap(), 0);
    assert_eq!(admin_stat(admin, "bolt.sniff_failed"), 1);
}

#[test]
fn the_bolt_example_config_validates() {
    let path = repo().join("configs/bolt.yaml");
    let out = run(sluice_bin(), &["validate", "-c", path.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("ok (2 listeners, 3 clusters)"));
}

/// 12 MiB frames both ways through an upstream that handles one request at a time and blocks
/// writing its answer (it reads the next request only once the answer is out), like many simple
/// servers: every answer arrives, whole and in order of completion, on the shared connection.
/// (The proxy reads an upstream connection while it writes to it; on this machine's loopback
/// the socket buffers absorb these frames even without that, so this test guards the big-frame
/// path rather than proving the deadlock fix, which the review reproduced with a Python peer.)
#[test]
fn big_pipelined_frames_through_a_one_at_a_time_upstream_do_not_deadlock() {
    const COUNT: u32 = 8;
    const SIZE: usize = 12 << 20;
    let dir = TempDir::new("bolt-duplex");
    let upstream = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let up_port = upstream.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in upstream.incoming() {
            let Ok(mut s) = conn else { return };
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                let mut chunk = vec![0u8; 64 * 1024];
                loop {
                    // One whole request, then its answer (the request's content echoed).
                    let frame = loop {
                        if let Ok(Some(f)) = bolt::decode(&buf, 16 << 20) {
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
                            break (out, f.len);
                        }
                        match s.read(&mut chunk) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    };
                    buf.drain(..frame.1);
                    if s.write_all(&frame.0).is_err() {
                        return;
                    }
                }
            });
        }
    });
    let (listen, admin) = (free_port(), free_port());
    let config = bolt_config(listen, admin, "", &[up_port], "").replace("64KiB", "16MiB");
    let _sluice = start_sluice(&dir, &config, 1, addr(listen));
    let mut s = TcpStream::connect(addr(listen)).unwrap();
    let writer = {
        let mut s = s.try_clone().unwrap();
        std::thread::spawn(move || {
            let head = request(Version::V1, 0, SERVICE, 30_000).len() - b"payload".len();
            for id in 1..=COUNT {
                let mut frame = request(Version::V1, id, SERVICE, 30_000);
                // SIZE bytes of content instead of "payload": answers larger than what the
                // sockets buffer, so a proxy that does not read while it writes locks up.
                frame.truncate(head);
                frame[18..22].copy_from_slice(&(SIZE as u32).to_be_bytes());
                frame.extend(std::iter::repeat_n(b'x', SIZE));
                s.write_all(&frame).unwrap();
            }
        })
    };
    let mut buf = Vec::new();
    let mut answered = 0u32;
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    while answered < COUNT {
        if let Some(f) = bolt::decode(&buf, 16 << 20).unwrap() {
            assert_eq!(f.status, Some(0), "request {} failed", f.request_id);
            assert_eq!(f.content.len(), SIZE);
            let n = f.len;
            buf.drain(..n);
            answered += 1;
            continue;
        }
        let mut chunk = vec![0u8; 256 * 1024];
        let n = s.read(&mut chunk).expect("answers keep coming");
        assert!(n > 0, "closed after {answered} answers");
        buf.extend_from_slice(&chunk[..n]);
    }
    writer.join().unwrap();
}

/// Bolt downstream timeouts: a connection that sends nothing, one that starts a frame and never
/// ends it, and one that goes quiet after a heartbeat are closed (counted), while a connection
/// that keeps sending heartbeats stays; on a `protocol: auto` listener two Bolt bytes do not
/// escape the deadline either (the connection-limit lock-out an outside review found).
#[test]
fn silent_trickling_and_idle_bolt_connections_are_closed() {
    let dir = TempDir::new("bolt-timeouts");
    let (listen, auto, admin) = (free_port(), free_port(), free_port());
    let config = format!(
        r#"
admin: {{ address: 127.0.0.1:{admin} }}
listeners:
  - name: rpc_in
    address: 127.0.0.1:{listen}
    bolt:
      frame_timeout: 600ms
      idle_timeout: 1500ms
      routes:
        - route: {{ cluster: rpc }}
  - name: mixed_in
    address: 127.0.0.1:{auto}
    protocol: auto
    http:
      request_headers_timeout: 600ms
      virtual_hosts:
        - name: all
          domains: ["*"]
          routes:
            - match: {{ prefix: / }}
              direct_response: {{ status: 200, body: "http here\n" }}
    bolt:
      frame_timeout: 600ms
      routes:
        - route: {{ cluster: rpc }}
clusters:
  - name: rpc
    hosts: [ {{ address: 127.0.0.1:1 }} ]
"#
    );
    let _sluice = start_sluice(&dir, &config, 1, addr(admin));
    let closed_within = |s: &mut TcpStream, limit: Duration| {
        s.set_read_timeout(Some(limit)).unwrap();
        let t = Instant::now();
        let mut rest = Vec::new();
        match s.read_to_end(&mut rest) {
            Ok(_) => t.elapsed(),
            Err(e) => panic!("not closed within {limit:?}: {e} (read {rest:?})"),
        }
    };
    let silent = &mut TcpStream::connect(addr(listen)).unwrap();
    let partial = &mut TcpStream::connect(addr(listen)).unwrap();
    // Half of a heartbeat: the fixed header starts, the rest never comes.
    partial.write_all(&heartbeat(Version::V1, 1)[..10]).unwrap();
    let sniffed = &mut TcpStream::connect(addr(auto)).unwrap();
    sniffed.write_all(b"\x01\x01").unwrap();
    let quiet = &mut TcpStream::connect(addr(listen)).unwrap();
    let mut buf = Vec::new();
    quiet.write_all(&heartbeat(Version::V1, 2)).unwrap();
    assert_eq!(read_response(quiet, &mut buf), (Version::V1, 2, 0, 0));
    let chatty = &mut TcpStream::connect(addr(listen)).unwrap();
    let mut chatty_buf = Vec::new();
    chatty.write_all(&heartbeat(Version::V1, 9)).unwrap();
    assert_eq!(
        read_response(chatty, &mut chatty_buf),
        (Version::V1, 9, 0, 0)
    );

    for (name, s) in [
        ("silent", silent),
        ("partial", partial),
        ("sniffed", sniffed),
    ] {
        let took = closed_within(s, Duration::from_secs(5));
        eprintln!("{name} closed after {took:?}");
    }
    // The chatty client sends a heartbeat every 400 ms for 2.4 s: past idle_timeout, still open.
    for id in 10..16 {
        chatty.write_all(&heartbeat(Version::V1, id)).unwrap();
        assert_eq!(
            read_response(chatty, &mut chatty_buf),
            (Version::V1, id, 0, 0)
        );
        std::thread::sleep(Duration::from_millis(400));
    }
    let took = closed_within(quiet, Duration::from_secs(5));
    eprintln!("quiet closed {took:?} after the chatty client's run");
    chatty.write_all(&heartbeat(Version::V1, 99)).unwrap();
    assert_eq!(
        read_response(chatty, &mut chatty_buf),
        (Version::V1, 99, 0, 0)
    );
    assert_eq!(admin_stat(admin, "bolt.downstream_timeouts"), 4);
    assert_eq!(admin_stat(admin, "listener.rpc_in.downstream_cx_active"), 1);
}

/// The Bolt access log with the defaults a user gets (one line per exchange, JSON here so that
/// the test reads fields by name): sofa-rpc-node invokes through the proxy give one line each
/// with their service, method, status 0, cluster and upstream host; the proxy's own answers
/// carry its flags (`NR` no route, `UF` upstream connect failed) and their status; a heartbeat
/// gives no line.
#[test]
fn bolt_access_log_has_one_line_per_exchange() {
    if !require_peers(&["sofa-rpc-node"]) {
        return;
    }
    let dir = TempDir::new("bolt-access-log");
    let (pa, listen, admin, dead) = (free_port(), free_port(), free_port(), free_port());
    let log_path = dir.path().join("bolt.log");
    let _a = start_sofa_server(&dir, "a", pa);
    let silent = SilentUpstream::start(false);
    let config = format!(
        r#"
admin: {{ address: 127.0.0.1:{admin} }}
listeners:
  - name: rpc_in
    address: 127.0.0.1:{listen}
    bolt:
      access_log: {{ format: json, path: {log} }}
      routes:
        - match: {{ service: "{SERVICE}" }}
          route: {{ cluster: rpc }}
        - match: {{ service: "dead" }}
          route: {{ cluster: dead }}
        - match: {{ service: "silent" }}
          route: {{ cluster: silent }}
clusters:
  - name: rpc
    hosts: [ {{ address: 127.0.0.1:{pa} }} ]
  - name: silent
    hosts: [ {{ address: 127.0.0.1:{} }} ]
  - name: dead
    connect_timeout: 500ms
    hosts: [ {{ address: 127.0.0.1:{dead} }} ]
"#,
        silent.port,
        log = log_path.display()
    );
    let sluice = start_sluice(&dir, &config, 1, addr(listen));
    let target = format!("127.0.0.1:{listen}");
    let v = sofa_client(&target, "echo", &["--count", "20", "--concurrency", "5"]);
    assert_eq!(v["ok"], 20, "{v}");

    let mut s = TcpStream::connect(addr(listen)).unwrap();
    let mut buf = Vec::new();
    s.write_all(&heartbeat(Version::V1, 7)).unwrap();
    assert_eq!(read_response(&mut s, &mut buf).3, 0);
    // A request as SOFARPC (Java) sends it: the method in the header map.
    let mut with_method = Vec::new();
    let header: [(&[u8], Option<&[u8]>); 2] = [
        (b"service", Some(b"nowhere")),
        (b"sofa_head_method_name", Some(b"sayHello")),
    ];
    bolt::encode_request(
        &mut with_method,
        &RequestSpec {
            version: Version::V1,
            oneway: false,
            cmd_code: bolt::CMD_REQUEST,
            cmd_version: bolt::CMD_VERSION,
            request_id: 41,
            codec: bolt::CODEC_HESSIAN2,
            timeout_ms: 3000,
            class: b"com.alipay.sofa.rpc.core.request.SofaRequest",
            header: &header,
            content: b"payload",
        },
    )
    .unwrap();
    s.write_all(&with_method).unwrap();
    assert_eq!(
        read_response(&mut s, &mut buf),
        (Version::V1, 41, bolt::CMD_RESPONSE, 6)
    );
    s.write_all(&request(Version::V1, 42, "dead", 3000))
        .unwrap();
    assert_eq!(
        read_response(&mut s, &mut buf),
        (Version::V1, 42, bolt::CMD_RESPONSE, 16)
    );
    // A client that leaves before its answer: its line says so when its connection ends.
    s.write_all(&request(Version::V1, 43, "silent", 0)).unwrap();
    let forwarded = Instant::now() + Duration::from_secs(10);
    while admin_stat(admin, "bolt.requests") < 21 {
        assert!(Instant::now() < forwarded, "request 43 never forwarded");
        std::thread::sleep(Duration::from_millis(20));
    }
    // The client reuses id 43 while the first is in flight (the proxy gives each its own id
    // upstream): the second gets its own line, and the first keeps its own.
    s.write_all(&request(Version::V1, 43, "dead", 3000))
        .unwrap();
    assert_eq!(
        read_response(&mut s, &mut buf),
        (Version::V1, 43, bolt::CMD_RESPONSE, 16)
    );
    drop(s);

    // Lines are flushed within half a second.
    let deadline = Instant::now() + Duration::from_secs(10);
    let lines: Vec<serde_json::Value> = loop {
        let text = std::fs::read_to_string(&log_path).unwrap_or_default();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect();
        if lines.len() >= 24 || Instant::now() > deadline {
            break lines;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(lines.len(), 24, "{lines:#?}\n{}", sluice.log_text());
    let (invokes, own): (Vec<_>, Vec<_>) = lines.iter().partition(|l| l["bolt_service"] == SERVICE);
    assert_eq!(invokes.len(), 20, "{lines:#?}");
    for l in &invokes {
        assert_eq!(l["bolt_status"], 0, "{l}");
        // sofa-rpc-node puts the method in the header map only with protobuf (with Hessian2
        // it is inside the content, which the proxy does not decode).
        assert_eq!(l["bolt_method"], serde_json::Value::Null, "{l}");
        assert_eq!(l["response_flags"], "-", "{l}");
        assert_eq!(l["upstream_cluster"], "rpc", "{l}");
        assert_eq!(l["upstream_host"], format!("127.0.0.1:{pa}"), "{l}");
        assert_eq!(l["listener"], "rpc_in", "{l}");
        assert_eq!(l["original_dst"], serde_json::Value::Null, "{l}");
        assert!(l["bytes_received"].as_u64().unwrap() > 22, "{l}");
        assert!(l["bytes_sent"].as_u64().unwrap() > 20, "{l}");
    }
    // The client numbers its requests: each id once.
    let mut ids: Vec<u64> = invokes
        .iter()
        .map(|l| l["bolt_request_id"].as_u64().unwrap())
        .collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 20, "{ids:?}");
    let no_route = own
        .iter()
        .find(|l| l["bolt_request_id"] == 41)
        .expect("a line for the request without a route");
    assert_eq!(no_route["bolt_service"], "nowhere");
    assert_eq!(no_route["bolt_method"], "sayHello");
    assert_eq!(no_route["bytes_received"], with_method.len());
    assert_eq!(no_route["bolt_status"], 6);
    assert_eq!(no_route["response_flags"], "NR");
    assert_eq!(no_route["upstream_cluster"], serde_json::Value::Null);
    assert_eq!(no_route["bytes_sent"], 20);
    let failed = own
        .iter()
        .find(|l| l["bolt_request_id"] == 42)
        .expect("a line for the request to the dead host");
    assert_eq!(failed["bolt_status"], 16);
    assert_eq!(failed["response_flags"], "UF");
    assert_eq!(failed["upstream_cluster"], "dead");
    assert_eq!(failed["upstream_host"], format!("127.0.0.1:{dead}"));
    let (left, reused): (Vec<_>, Vec<_>) = own
        .iter()
        .filter(|l| l["bolt_request_id"] == 43)
        .partition(|l| l["bolt_service"] == "silent");
    assert_eq!((left.len(), reused.len()), (1, 1), "{own:#?}");
    let (left, reused): (&serde_json::Value, &serde_json::Value) = (left[0], reused[0]);
    assert_eq!(reused["bolt_service"], "dead");
    assert_eq!(reused["bolt_status"], 16);
    assert_eq!(reused["response_flags"], "UF");
    assert_eq!(left["bolt_status"], serde_json::Value::Null);
    assert_eq!(left["response_flags"], "DC");
    assert_eq!(left["upstream_cluster"], "silent");
    assert_eq!(left["upstream_host"], format!("127.0.0.1:{}", silent.port));
    assert_eq!(left["bytes_sent"], 0);
}

/// Issue 16's one connect path, counted once per attempt by its Bolt caller: a route whose
/// only host refuses (nothing listens on its port). Bolt does not retry, so each request
/// sent after the previous one's answer opens one upstream connection — one attempt — and
/// gets status 16 (`ConnectionClosed`, the docs' "failed connect") with its own id; each
/// attempt is exactly one connect failure on the cluster and on the host, none a timeout.
/// Defaults throughout (no `connect_timeout`, two workers).
#[test]
fn a_refusing_upstream_counts_one_connect_failure_per_attempt() {
    let dir = TempDir::new("bolt-refused");
    let (listen, admin, refusing) = (free_port(), free_port(), free_port());
    let config = format!(
        r#"
admin: {{ address: 127.0.0.1:{admin} }}
listeners:
  - name: rpc_in
    address: 127.0.0.1:{listen}
    bolt:
      routes:
        - match: {{ service: "{SERVICE}" }}
          route: {{ cluster: rpc }}
clusters:
  - name: rpc
    hosts: [ {{ address: 127.0.0.1:{refusing} }} ]
"#
    );
    let _sluice = start_sluice(&dir, &config, 2, addr(listen));
    let mut s = TcpStream::connect(addr(listen)).unwrap();
    let mut buf = Vec::new();
    const K: u32 = 4;
    for id in 0..K {
        s.write_all(&request(Version::V1, 900 + id, SERVICE, 5000))
            .unwrap();
        assert_eq!(
            read_response(&mut s, &mut buf),
            (
                Version::V1,
                900 + id,
                2,
                ResponseStatus::ConnectionClosed.code()
            ),
            "request {id}"
        );
    }
    let stat = |name: &str| admin_stat(admin, name);
    let k = u64::from(K);
    assert_eq!(stat("bolt.requests"), k);
    assert_eq!(stat("bolt.upstream_lost"), k);
    assert_eq!(stat("cluster.rpc.upstream_cx_total"), k);
    assert_eq!(stat("cluster.rpc.upstream_cx_connect_fail"), k);
    assert_eq!(stat("cluster.rpc.upstream_cx_connect_timeout"), 0);
    assert_eq!(
        stat(&format!(
            "cluster.rpc.host.127.0.0.1:{refusing}.cx_connect_fail"
        )),
        k
    );
    // The connection is unharmed: a heartbeat is still answered.
    s.write_all(&heartbeat(Version::V1, 999)).unwrap();
    assert_eq!(read_response(&mut s, &mut buf), (Version::V1, 999, 0, 0));
}
