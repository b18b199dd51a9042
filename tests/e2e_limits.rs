//! End-to-end tests of the connection and memory caps of the `sluice` binary: per-listener and
//! process-wide connection limits (refused connections are closed at once and counted), the
//! limit derived from the open-file limit and the admin API answering while clients hold more
//! connections than the process has descriptors, the accept back-off on EMFILE, the first-byte
//! timeout of an HTTP connection that sends nothing, the process-wide budget of Bolt partial
//! frames, and the limit and pipe budget of a splicing `tcp_proxy`. The open-file limit of `sluice` is lowered with `ulimit -n` in a `sh -c`
//! wrapper; clients are raw sockets.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use sluice_core::bolt::{self, RequestSpec, Version};
use support::{admin_stat as stat, *};

/// Polls `check` for up to 15 s.
fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let end = Instant::now() + Duration::from_secs(15);
    while Instant::now() < end {
        if check() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("timed out waiting for: {what}");
}

/// A connection to an echo listener that proved it is served (one byte echoed).
fn served(to: SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect(to).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"x").unwrap();
    let mut b = [0u8; 1];
    assert_eq!(s.read(&mut b).unwrap(), 1, "echo expected");
    s
}

/// Whether a new connection to `to` is closed by the proxy without being served.
fn refused(to: SocketAddr) -> bool {
    let mut s = TcpStream::connect(to).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = s.write_all(b"x");
    let mut b = [0u8; 1];
    // Closed at once: EOF (or a reset, as the byte sent was never read).
    matches!(s.read(&mut b), Ok(0) | Err(_))
}

/// Starts `sluice run` with its open-file limit lowered to `nofile` (soft and hard).
fn start_sluice_nofile(dir: &TempDir, config: &str, nofile: u32, ready: SocketAddr) -> Proc {
    let path = dir.write("sluice.yaml", config);
    let script = format!(
        "ulimit -n {nofile} && exec {} run -c {} --workers 2",
        sluice_bin(),
        path.display()
    );
    let mut p = spawn(dir, "sluice", "sh", &["-c", &script]);
    wait_listening(ready, &mut p);
    p
}

#[test]
fn connections_beyond_the_listener_and_process_limits_are_closed_and_counted() {
    let dir = TempDir::new("limits-cx");
    let (a, b, admin) = (free_port(), free_port(), free_port());
    let config = format!(
        r#"
admin: {{ address: 127.0.0.1:{admin} }}
limits: {{ max_connections: 5 }}
listeners:
  - {{ name: a, address: 127.0.0.1:{a}, max_connections: 3, echo: {{}} }}
  - {{ name: b, address: 127.0.0.1:{b}, echo: {{}} }}
drain_timeout: 1s
"#
    );
    let _sluice = start_sluice(&dir, &config, 2, addr(admin));

    // Listener a: three served (over both workers), the fourth closed at once.
    let mut on_a: Vec<TcpStream> = (0..3).map(|_| served(addr(a))).collect();
    assert!(
        refused(addr(a)),
        "a 4th connection on listener a is refused"
    );
    // Listener b: two more reach the process limit of 5; the next is refused.
    let _on_b: Vec<TcpStream> = (0..2).map(|_| served(addr(b))).collect();
    assert!(
        refused(addr(b)),
        "a 6th connection in the process is refused"
    );
    assert_eq!(stat(admin, "listener.a.downstream_cx_overflow"), 1);
    assert_eq!(stat(admin, "listener.b.downstream_cx_overflow"), 1);
    assert_eq!(stat(admin, "server.downstream_cx_overflow"), 2);
    assert_eq!(stat(admin, "server.downstream_cx_open"), 5);
    assert_eq!(stat(admin, "server.max_connections"), 5);
    let (_, prom) = http_request(addr(admin), "GET", "/stats/prometheus");
    assert!(
        prom.contains("sluice_downstream_cx_overflow_total{listener=\"a\"} 1"),
        "{prom}"
    );

    // One closes: its place is free again (the count follows closes, on every worker).
    drop(on_a.pop());
    eventually("the closed connection counted out", || {
        stat(admin, "server.downstream_cx_open") == 4
    });
    on_a.push(served(addr(a)));
    assert!(refused(addr(a)));
    assert_eq!(stat(admin, "server.downstream_cx_overflow"), 3);
}

#[test]
fn the_admin_api_answers_while_clients_hold_more_connections_than_descriptors() {
    let dir = TempDir::new("limits-nofile");
    let (echo, admin) = (free_port(), free_port());
    let config = format!(
        r#"
admin: {{ address: 127.0.0.1:{admin} }}
listeners:
  - {{ name: e, address: 127.0.0.1:{echo}, echo: {{}} }}
drain_timeout: 1s
"#
    );
    let _sluice = start_sluice_nofile(&dir, &config, 256, addr(echo));
    // The derived limit: (256 - 64) / 2.
    assert_eq!(stat(admin, "server.max_connections"), 96);
    eventually("the readiness probe's connection closed", || {
        stat(admin, "server.downstream_cx_open") == 0
    });
    // More connections than the process has descriptors (the kernel queues them all).
    let clients: Vec<TcpStream> = (0..300)
        .map(|_| TcpStream::connect(addr(echo)).unwrap())
        .collect();
    eventually("every connection accepted or refused", || {
        stat(admin, "server.downstream_cx_open") + stat(admin, "server.downstream_cx_overflow")
            == 300
    });
    assert_eq!(stat(admin, "server.downstream_cx_open"), 96);
    assert_eq!(stat(admin, "server.downstream_cx_overflow"), 204);
    assert_eq!(stat(admin, "server.accept_errors"), 0);
    // Clients closing make room for new ones.
    drop(clients);
    eventually("all closed", || {
        stat(admin, "server.downstream_cx_open") == 0
    });
    drop(served(addr(echo)));
}

#[test]
fn accept_failures_back_off_and_are_logged_at_most_once_a_second() {
    let dir = TempDir::new("limits-emfile");
    let (echo, admin) = (free_port(), free_port());
    // A process limit above the descriptors: accepts fail with EMFILE.
    let config = format!(
        r#"
admin: {{ address: 127.0.0.1:{admin} }}
limits: {{ max_connections: 100000 }}
listeners:
  - {{ name: e, address: 127.0.0.1:{echo}, echo: {{}} }}
drain_timeout: 1s
"#
    );
    let sluice = start_sluice_nofile(&dir, &config, 128, addr(echo));
    let _clients: Vec<TcpStream> = (0..200)
        .map(|_| TcpStream::connect(addr(echo)).unwrap())
        .collect();
    // The admin API answers on its reserved descriptor.
    eventually("accepts failing", || {
        stat(admin, "server.accept_errors") > 0
    });
    let first = stat(admin, "server.accept_errors");
    std::thread::sleep(Duration::from_secs(3));
    let failed = stat(admin, "server.accept_errors") - first;
    // Two workers backing off 100 ms doubling to 1 s: a handful of retries in 3 s, not the
    // hundreds of a 10 ms retry loop.
    assert!(failed <= 30, "{failed} accept failures in 3 s");
    let logged = sluice
        .log_text()
        .lines()
        .filter(|l| l.contains("accept failed") && !l.contains("admin server"))
        .count();
    // At most one line a second per worker (the first included), over the whole run.
    assert!(logged <= 20, "{logged} lines:\n{}", sluice.log_text());
}

#[test]
fn an_http_connection_that_sends_nothing_is_closed_after_the_header_timeout() {
    let dir = TempDir::new("limits-first-byte");
    let (listen, admin) = (free_port(), free_port());
    let config = format!(
        r#"
admin: {{ address: 127.0.0.1:{admin} }}
listeners:
  - name: web
    address: 127.0.0.1:{listen}
    http:
      request_headers_timeout: 2s
      idle_timeout: 1h
      virtual_hosts:
        - name: all
          domains: ["*"]
          routes:
            - match: {{ prefix: / }}
              direct_response: {{ status: 200, body: "hi\n" }}
drain_timeout: 1s
"#
    );
    let _sluice = start_sluice(&dir, &config, 1, addr(admin));
    let before = stat(admin, "listener.web.downstream_cx_first_byte_timeout");
    // Silent: closed (EOF, nothing written) after the header timeout, not the idle timeout.
    let mut silent = TcpStream::connect(addr(listen)).unwrap();
    silent
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut got = Vec::new();
    silent
        .read_to_end(&mut got)
        .expect("closed before the read timeout");
    assert_eq!(got, b"");
    assert_eq!(
        stat(admin, "listener.web.downstream_cx_first_byte_timeout") - before,
        1
    );
    // A slow client: the header timeout counts from the accept, not from its first byte.
    let mut slow = TcpStream::connect(addr(listen)).unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    std::thread::sleep(Duration::from_millis(1400));
    slow.write_all(b"GET / HTTP/1.1\r\n").unwrap();
    let started = Instant::now();
    let mut got = String::new();
    let _ = slow.read_to_string(&mut got);
    assert!(got.starts_with("HTTP/1.1 408"), "{got:?}");
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "408 within the accept's 2 s, not a fresh 2 s from the first byte"
    );
    // A normal request is served.
    assert_eq!(http_request(addr(listen), "GET", "/"), (200, "hi\n".into()));
}

/// The fixed header of a Bolt v1 request declaring a `content_len`-byte body, then `send` bytes
/// of it.
fn partial_bolt_request(id: u32, content_len: usize, send: usize) -> Vec<u8> {
    let content = vec![b'z'; content_len];
    let mut out = Vec::new();
    bolt::encode_request(
        &mut out,
        &RequestSpec {
            version: Version::V1,
            oneway: false,
            cmd_code: bolt::CMD_REQUEST,
            cmd_version: bolt::CMD_VERSION,
            request_id: id,
            codec: bolt::CODEC_HESSIAN2,
            timeout_ms: 1000,
            class: b"com.alipay.sofa.rpc.core.request.SofaRequest",
            header: &[],
            content: &content,
        },
    )
    .unwrap();
    out.truncate(out.len() - content_len + send);
    out
}

#[test]
fn bolt_partial_frames_beyond_the_process_budget_close_the_connection_that_would_exceed_it() {
    let dir = TempDir::new("limits-bolt");
    let (listen, admin, nobody) = (free_port(), free_port(), free_port());
    // Frames up to 256 KiB; 1 MiB for every connection's partial frames together. A buffer
    // grows by doubling to 256 KiB for a 150 KiB partial frame, of which all but its first
    // 16 KiB is counted: four such connections fit (983,040 B), a fifth does not.
    let config = format!(
        r#"
admin: {{ address: 127.0.0.1:{admin} }}
limits: {{ bolt_partial_frame_bytes: 1MiB }}
listeners:
  - name: rpc
    address: 127.0.0.1:{listen}
    bolt:
      max_frame_size: 256KiB
      routes:
        - route: {{ cluster: rpc }}
clusters:
  - name: rpc
    hosts: [ {{ address: 127.0.0.1:{nobody} }} ]
drain_timeout: 1s
"#
    );
    let _sluice = start_sluice(&dir, &config, 2, addr(listen));
    let per_connection = (256 << 10) - (16 << 10);
    let mut held = Vec::new();
    for i in 0..4 {
        let mut s = TcpStream::connect(addr(listen)).unwrap();
        s.write_all(&partial_bolt_request(i + 1, 200 << 10, 150 << 10))
            .unwrap();
        held.push(s);
        let want = (i as u64 + 1) * per_connection;
        let end = Instant::now() + Duration::from_secs(15);
        let mut seen = stat(admin, "server.bolt_partial_frame_bytes");
        while seen != want && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(50));
            seen = stat(admin, "server.bolt_partial_frame_bytes");
        }
        assert_eq!(seen, want, "bytes held after {} partial frames", i + 1);
    }
    // The fifth would take the total beyond 1 MiB: it is closed, the others stay.
    let mut fifth = TcpStream::connect(addr(listen)).unwrap();
    fifth
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    fifth
        .write_all(&partial_bolt_request(5, 200 << 10, 150 << 10))
        .unwrap();
    let mut b = [0u8; 64];
    assert!(
        matches!(fifth.read(&mut b), Ok(0) | Err(_)),
        "the fifth connection is closed"
    );
    assert_eq!(stat(admin, "bolt.partial_frame_overflow"), 1);
    assert_eq!(
        stat(admin, "server.bolt_partial_frame_bytes"),
        4 * per_connection
    );
    for s in &held {
        s.set_nonblocking(true).unwrap();
        let mut b = [0u8; 1];
        assert!(
            matches!(
                (&*s).read(&mut b),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock
            ),
            "the four within the budget stay open"
        );
    }
    // A normal client is served (a heartbeat, answered by the proxy itself).
    let mut hb = Vec::new();
    bolt::encode_request(
        &mut hb,
        &RequestSpec {
            version: Version::V1,
            oneway: false,
            cmd_code: bolt::CMD_HEARTBEAT,
            cmd_version: bolt::CMD_VERSION,
            request_id: 77,
            codec: bolt::CODEC_HESSIAN2,
            timeout_ms: -1,
            class: b"",
            header: &[],
            content: b"",
        },
    )
    .unwrap();
    let mut c = TcpStream::connect(addr(listen)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    c.write_all(&hb).unwrap();
    let mut got = Vec::new();
    let frame = loop {
        let mut chunk = [0u8; 256];
        let n = c.read(&mut chunk).unwrap();
        assert!(n > 0, "heartbeat answered");
        got.extend_from_slice(&chunk[..n]);
        if let Some(f) = bolt::decode(&got, 1 << 20).unwrap() {
            break (f.request_id, f.status);
        }
    };
    assert_eq!(frame, (77, Some(0)));
    // Closing the holders gives their memory back.
    drop(held);
    eventually("the budget released", || {
        stat(admin, "server.bolt_partial_frame_bytes") == 0
    });
}

/// An echo upstream on a free port: one thread per connection, writing back what it reads.
fn echo_upstream() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            std::thread::spawn(move || {
                let mut r = s.try_clone().unwrap();
                let mut w = s;
                let _ = std::io::copy(&mut r, &mut w);
            });
        }
    });
    port
}

/// 100 KB of a pattern through `s` and back, byte for byte.
fn round_trip(s: &mut TcpStream, round: u8) {
    let sent: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8 ^ round).collect();
    s.write_all(&sent).unwrap();
    let mut got = vec![0u8; sent.len()];
    s.read_exact(&mut got).unwrap();
    assert!(got == sent, "the echo differs");
}

/// With splicing (the default for a plaintext `tcp_proxy`), the derived connection limit is
/// `(RLIMIT_NOFILE − 64) × 2 / 5` and the pipe budget a quarter of it: an idle spliced session
/// holds no pipe, so the process can hold its whole limit of spliced sessions open, every one
/// of them moving bytes through pipes in turn, with a handful of pipes.
#[test]
fn a_process_full_of_idle_spliced_sessions_holds_a_few_pipes_within_its_descriptors() {
    let dir = TempDir::new("limits-splice");
    let (tcp, admin) = (free_port(), free_port());
    let up = echo_upstream();
    let config = format!(
        r#"
admin: {{ address: 127.0.0.1:{admin} }}
listeners:
  - {{ name: t, address: 127.0.0.1:{tcp}, tcp_proxy: {{ cluster: up }} }}
clusters:
  - {{ name: up, hosts: [ {{ address: 127.0.0.1:{up} }} ] }}
drain_timeout: 1s
"#
    );
    let _sluice = start_sluice_nofile(&dir, &config, 256, addr(tcp));
    // (256 − 64) × 2 / 5 connections, a quarter of that in pipes: 2 × 76 + 2 × 19 ≤ 192.
    assert_eq!(stat(admin, "server.max_connections"), 76);
    assert_eq!(stat(admin, "server.tcp_splice_pipes_max"), 19);
    // The readiness probe was a session too: counted once it reached its upstream (on a loaded
    // machine its accept may come after the probe closed), then gone.
    eventually("the readiness probe's session counted and closed", || {
        stat(admin, "server.tcp_relay_spliced") >= 1
            && stat(admin, "server.downstream_cx_open") == 0
    });
    let spliced = stat(admin, "server.tcp_relay_spliced");
    // The whole limit of sessions, each relaying 100 KB each way, then held open, idle.
    let mut sessions: Vec<TcpStream> = (0..76)
        .map(|_| {
            let mut s = TcpStream::connect(addr(tcp)).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            round_trip(&mut s, 0);
            s
        })
        .collect();
    assert!(refused(addr(tcp)), "the 77th connection is over the limit");
    // Again on every one: each session takes pipes again while its bytes move.
    for s in &mut sessions {
        round_trip(s, 1);
    }
    assert_eq!(stat(admin, "server.tcp_relay_spliced") - spliced, 76);
    assert_eq!(stat(admin, "server.tcp_relay_copied"), 0);
    // No bulk chunk lacked a pipe (small ones are copied by choice, not counted), pipes were
    // used, and the idle sessions hold none: what is open is what the two workers keep in
    // their pools (at most one per direction of the one busy session each).
    assert_eq!(stat(admin, "server.tcp_relay_chunks_copied"), 0);
    let pipes = stat(admin, "server.tcp_splice_pipes");
    assert!((1..=4).contains(&pipes), "{pipes} pipes open");
    assert_eq!(stat(admin, "server.accept_errors"), 0);
}

/// A soft open-file limit below the hard one (systemd's usual 1024 / 524288) is raised to the
/// hard one at startup, and the derived connection limit follows: `(hard − 64) / 2`.
#[test]
fn the_soft_open_file_limit_is_raised_to_the_hard_one() {
    let dir = TempDir::new("limits-nofile");
    let (listen, admin) = (free_port(), free_port());
    let config = format!(
        r#"
admin: {{ address: 127.0.0.1:{admin} }}
listeners:
  - {{ name: e, address: 127.0.0.1:{listen}, echo: {{}} }}
"#
    );
    let path = dir.write("sluice.yaml", &config);
    let script = format!(
        "ulimit -S -n 1024 && ulimit -H -n 4000 && exec {} run -c {} --workers 1",
        sluice_bin(),
        path.display()
    );
    let mut p = spawn(&dir, "sluice", "sh", &["-c", &script]);
    wait_listening(addr(admin), &mut p);
    assert_eq!(
        stat(admin, "server.max_connections"),
        (4000 - 64) / 2,
        "{}",
        p.log_text()
    );
    assert!(
        p.log_text()
            .contains("raised the open-file limit to its hard limit"),
        "{}",
        p.log_text()
    );
}
