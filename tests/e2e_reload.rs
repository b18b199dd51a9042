//! Live config reload (SIGHUP, `POST /reload`) under load: wrk keeps a keep-alive load on the
//! HTTP listener while listeners are added and removed and a route changes; no request fails.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use support::*;

fn config(listen: u16, admin: u16, upstream: u16, version: &str, extra: &str) -> String {
    versioned_http_config(listen, admin, upstream, version, extra, "5s")
}

#[test]
fn reloads_under_load_fail_no_request() {
    if !require_peers(&["nginx", "wrk"]) {
        return;
    }
    let dir = TempDir::new("reload");
    let (up, listen, admin, extra_port) = (free_port(), free_port(), free_port(), free_port());
    let _nginx = start_nginx(&dir, "up", up, "hello");
    let mut sluice = start_sluice(&dir, &config(listen, admin, up, "one", ""), 2, addr(listen));
    wait_listening(addr(admin), &mut sluice);
    let path = dir.path().join("sluice.yaml");
    assert_eq!(
        http_request(addr(listen), "GET", "/version"),
        (200, "one".into())
    );

    // Load for the whole test.
    let wrk = {
        let url = format!("http://127.0.0.1:{listen}/");
        std::thread::spawn(move || run("wrk", &["-t2", "-c16", "-d6s", &url]))
    };
    // The reloads below happen under load: once wrk's requests come (beyond the one above).
    assert!(
        eventually(Duration::from_secs(20), || {
            admin_stat(admin, "listener.web.http.rq_total") > 16
        }),
        "wrk's requests never reached the proxy"
    );

    // 1. SIGHUP: a route changes and a listener is added.
    let echo = format!("  - name: extra\n    address: 127.0.0.1:{extra_port}\n    echo: {{}}\n");
    std::fs::write(&path, config(listen, admin, up, "two", &echo)).unwrap();
    sluice.signal("HUP");
    let deadline = Instant::now() + Duration::from_secs(5);
    while http_request(addr(listen), "GET", "/version").1 != "two" {
        assert!(
            Instant::now() < deadline,
            "SIGHUP did not apply the new route"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut s = TcpStream::connect(addr(extra_port)).expect("the added listener accepts");
    s.write_all(b"ping").unwrap();
    let mut got = [0u8; 4];
    s.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"ping");
    drop(s);
    std::thread::sleep(Duration::from_millis(1000));

    // 2. POST /reload: the listener is removed again, the route changes back.
    std::fs::write(&path, config(listen, admin, up, "three", "")).unwrap();
    let (status, body) = http_request(addr(admin), "POST", "/reload");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("removed listeners: [extra]"), "{body}");
    assert_eq!(
        http_request(addr(listen), "GET", "/version"),
        (200, "three".into())
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while TcpStream::connect(addr(extra_port)).is_ok() {
        assert!(
            Instant::now() < deadline,
            "the removed listener still accepts"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // 3. An invalid file changes nothing: 400 with every problem, counted.
    std::fs::write(
        &path,
        "listeners:\n  - name: web\n    address: 127.0.0.1:99999\n    echo: {}\nclusters: [ { name: x } ]\n",
    )
    .unwrap();
    let (status, body) = http_request(addr(admin), "POST", "/reload");
    assert_eq!(status, 400, "{body}");
    assert!(
        body.contains("listeners[0].address") && body.contains("clusters[0].hosts"),
        "{body}"
    );
    assert_eq!(
        http_request(addr(listen), "GET", "/version"),
        (200, "three".into())
    );
    let (_, stats) = http_request(addr(admin), "GET", "/stats?filter=reloads");
    assert!(stats.contains("server.reloads_ok: 2"), "{stats}");
    assert!(stats.contains("server.reloads_failed: 1"), "{stats}");

    let out = wrk.join().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!text.contains("Socket errors"), "{text}");
    assert!(!text.contains("Non-2xx"), "{text}");
    let requests: u64 = text
        .lines()
        .find(|l| l.contains("requests in"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(requests > 1000, "{text}");
    // The counters carried over the reloads: every wrk request is in them.
    let (_, stats) = http_request(
        addr(admin),
        "GET",
        "/stats?filter=listener.web.http.rq_total",
    );
    let counted: u64 = stats
        .split(": ")
        .nth(1)
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    assert!(
        counted >= requests,
        "counted {counted} < wrk's {requests}: {stats}"
    );
}

/// Runs `keep_alive_load` of 16 connections on `/split/30` (an upstream that waits 30 ms, sends
/// the head, waits 30 ms more, then the body) against `listen`; returns its stop flag, its live
/// answer count and its report.
fn slow_load(
    listen: u16,
    refused_ends: bool,
) -> (
    std::sync::Arc<std::sync::atomic::AtomicBool>,
    std::sync::Arc<std::sync::atomic::AtomicU64>,
    std::thread::JoinHandle<LoadReport>,
) {
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let answered = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let load = keep_alive_load(
        addr(listen),
        "/split/30",
        16,
        stop.clone(),
        answered.clone(),
        refused_ends,
    );
    (stop, answered, load)
}

/// Under load: at least 100 more answers than `*seen` (then `*seen` is the new count). A slow
/// machine takes longer; the test still acts with requests in flight.
fn wait_for_more_load(
    answered: &std::sync::atomic::AtomicU64,
    stop: &std::sync::atomic::AtomicBool,
    seen: &mut u64,
) {
    wait_for_answers(answered, stop, *seen + 100, Duration::from_secs(30));
    *seen = answered.load(std::sync::atomic::Ordering::Relaxed);
}

/// A draining generation must never close a keep-alive connection under a request: with a slow
/// upstream, responses are in flight at every reload, and each one must either announce the
/// close (`connection: close`) or leave the connection open for the next request. With the
/// defaults (no drain settings) and three SIGHUPs, no request fails.
#[test]
fn reloads_with_a_slow_upstream_fail_no_request() {
    if !require_peers(&["python3"]) {
        return;
    }
    let dir = TempDir::new("reload-slow");
    let (up, listen, admin) = (free_port(), free_port(), free_port());
    let _upstream = start_py_upstream(&dir, "slow", up);
    let mut sluice = start_sluice(&dir, &config(listen, admin, up, "one", ""), 2, addr(listen));
    wait_listening(addr(admin), &mut sluice);
    let path = dir.path().join("sluice.yaml");
    let (stop, answered, load) = slow_load(listen, false);
    let mut seen = 0;
    wait_for_more_load(&answered, &stop, &mut seen);
    for version in ["two", "three", "four"] {
        std::fs::write(&path, config(listen, admin, up, version, "")).unwrap();
        sluice.signal("HUP");
        let deadline = Instant::now() + Duration::from_secs(5);
        while http_request(addr(listen), "GET", "/version").1 != version {
            assert!(Instant::now() < deadline, "SIGHUP did not apply {version}");
            std::thread::sleep(Duration::from_millis(20));
        }
        wait_for_more_load(&answered, &stop, &mut seen);
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let report = load.join().unwrap();
    eprintln!(
        "{} responses, {} announced a close",
        report.ok, report.closes_announced
    );
    assert!(
        report.failures.is_empty(),
        "{} failed requests:\n{}\nsluice log:\n{}",
        report.failures.len(),
        report.failures.join("\n"),
        sluice.log_text()
    );
    assert!(report.ok > 200, "too little load: {report:?}");
    assert!(
        report.closes_announced >= 16,
        "the reloads drained no connection: {report:?}"
    );
}

/// SIGTERM with a slow upstream: the instance stops accepting, and every request already sent
/// on an open connection — in flight at the signal, or sent on a connection whose last response
/// did not announce a close — gets its whole response before the connection closes.
#[test]
fn sigterm_with_a_slow_upstream_fails_no_request_on_open_connections() {
    if !require_peers(&["python3"]) {
        return;
    }
    let dir = TempDir::new("sigterm-slow");
    let (up, listen, admin) = (free_port(), free_port(), free_port());
    let _upstream = start_py_upstream(&dir, "slow", up);
    let mut sluice = start_sluice(&dir, &config(listen, admin, up, "one", ""), 2, addr(listen));
    wait_listening(addr(admin), &mut sluice);
    let (stop, answered, load) = slow_load(listen, true);
    // Requests are in flight on all 16 connections at the signal: wait for load, not for time.
    wait_for_more_load(&answered, &stop, &mut 0);
    sluice.signal("TERM");
    let exited = sluice.wait_exit(Duration::from_secs(10));
    assert!(
        exited.is_some_and(|s| s.success()),
        "no clean exit after SIGTERM: {exited:?}\n{}",
        sluice.log_text()
    );
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let report = load.join().unwrap();
    eprintln!(
        "{} responses, {} announced a close",
        report.ok, report.closes_announced
    );
    assert!(
        report.failures.is_empty(),
        "{} failed requests:\n{}\nsluice log:\n{}",
        report.failures.len(),
        report.failures.join("\n"),
        sluice.log_text()
    );
    assert!(report.ok > 100, "too little load: {report:?}");
    assert!(
        report.closes_announced >= 16,
        "the drain closed connections without announcing it: {report:?}"
    );
}

/// `sluice validate -c PATH` under a 2 GB address-space limit (so that a regression that reads
/// `/dev/zero` to the end fails here instead of eating the machine), killed after 10 s: its
/// exit code and output.
fn validate_bounded(path: &str) -> (Option<i32>, String) {
    let dir = TempDir::new("validate-bounded");
    let mut p = spawn(
        &dir,
        "validate",
        "sh",
        &[
            "-c",
            "ulimit -v 2000000; exec \"$0\" validate -c \"$1\"",
            sluice_bin(),
            path,
        ],
    );
    let status = p.wait_exit(Duration::from_secs(10));
    (status.and_then(|s| s.code()), p.log_text())
}

#[test]
fn config_reads_refuse_devices_fifos_and_huge_files() {
    let dir = TempDir::new("config-files");
    // A device that never ends.
    let (code, out) = validate_bounded("/dev/zero");
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains(
            "/dev/zero: cannot read the config: it is a character device, not a regular file"
        ),
        "{out}"
    );
    // A FIFO nobody writes to: refused at once, not waited on.
    let fifo = dir.path().join("fifo.yaml");
    assert!(run("mkfifo", &[fifo.to_str().unwrap()]).status.success());
    let (code, out) = validate_bounded(fifo.to_str().unwrap());
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("it is a FIFO, not a regular file"), "{out}");
    // A directory.
    let (code, out) = validate_bounded(dir.path().to_str().unwrap());
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("cannot read the config"), "{out}");
    // A (sparse) regular file over 64 MiB is refused before it is read.
    let huge = dir.path().join("huge.yaml");
    std::fs::File::create(&huge)
        .unwrap()
        .set_len(64 * 1024 * 1024 + 1)
        .unwrap();
    let (code, out) = validate_bounded(huge.to_str().unwrap());
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("67108865 bytes is over the limit of 67108864 bytes (64 MiB)"),
        "{out}"
    );
    // `run` refuses the same way.
    let out = run(
        sluice_bin(),
        &["run", "-c", fifo.to_str().unwrap(), "--workers", "1"],
    );
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("it is a FIFO, not a regular file"), "{text}");
}

#[test]
fn a_reload_of_a_fifo_is_refused_and_sigterm_still_stops() {
    let dir = TempDir::new("reload-fifo");
    let (listen, admin, up) = (free_port(), free_port(), free_port());
    let mut sluice = start_sluice(&dir, &config(listen, admin, up, "one", ""), 1, addr(listen));
    wait_listening(addr(admin), &mut sluice);
    let path = dir.path().join("sluice.yaml");
    std::fs::remove_file(&path).unwrap();
    assert!(run("mkfifo", &[path.to_str().unwrap()]).status.success());

    // SIGHUP: the reload fails at once (nobody ever writes to the FIFO) and is counted.
    sluice.signal("HUP");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, stats) = http_request(addr(admin), "GET", "/stats?filter=reloads_failed");
        if stats.contains("server.reloads_failed: 1") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the SIGHUP reload of a FIFO did not fail: {stats}\n{}",
            sluice.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        sluice
            .log_text()
            .contains("it is a FIFO, not a regular file"),
        "{}",
        sluice.log_text()
    );
    let (status, body) = http_request(addr(admin), "POST", "/reload");
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("it is a FIFO, not a regular file"), "{body}");
    assert_eq!(
        http_request(addr(listen), "GET", "/version"),
        (200, "one".into())
    );
    sluice.signal("TERM");
    let status = sluice.wait_exit(Duration::from_secs(10));
    assert!(
        status.is_some_and(|s| s.success()),
        "{status:?}\n{}",
        sluice.log_text()
    );
}

/// `drain_timeout` holds for HTTP too: a request still waiting on a slow upstream when the
/// drain's deadline passes is answered 503 and its connection closed, and the instance exits on
/// time instead of waiting for the upstream.
#[test]
fn sigterm_ends_an_http_request_still_in_flight_at_drain_timeout() {
    if !require_peers(&["python3"]) {
        return;
    }
    let dir = TempDir::new("sigterm-drain-timeout");
    let (up, listen, admin) = (free_port(), free_port(), free_port());
    let _upstream = start_py_upstream(&dir, "slow", up);
    let config = versioned_http_config(listen, admin, up, "one", "", "300ms");
    let mut sluice = start_sluice(&dir, &config, 1, addr(listen));
    wait_listening(addr(admin), &mut sluice);
    let mut s = TcpStream::connect(addr(listen)).unwrap();
    s.write_all(b"GET /sleep/8000 HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    // The stop comes once the upstream has the request (its log line, `start_py_upstream`'s
    // `slow.requests`), not after a fixed time that a loaded machine may not honour: the request
    // is then in flight, as the test means it.
    let requests = dir.path().join("slow.requests");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !std::fs::read_to_string(&requests).is_ok_and(|l| l.contains("GET /sleep/8000 ")) {
        assert!(
            Instant::now() < deadline,
            "the request never reached the upstream\n{}",
            sluice.log_text()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    sluice.signal("TERM");
    let exited = sluice.wait_exit(Duration::from_secs(4));
    assert!(
        exited.is_some_and(|e| e.success()),
        "still running 4 s after SIGTERM with drain_timeout 300ms (the request would take 8 s): {exited:?}\n{}",
        sluice.log_text()
    );
    // Nothing of a response had gone out: the request is answered 503, then the connection
    // closes.
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut got = Vec::new();
    let _ = s.read_to_end(&mut got);
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 503 "), "{text}");
    assert!(text.contains("connection: close"), "{text}");
}

/// A reload that adds a listener on an address another process listens on is refused before
/// anything switches: `POST /reload` answers 400 naming the listener and the address, the
/// failure is counted, and the old listeners keep answering with the old config. The occupant
/// is another process's `SO_REUSEPORT` socket (what a second sluice holds): the kernel would
/// let a reuseport bind share it, which must not happen by accident.
#[test]
fn a_reload_whose_new_listener_cannot_bind_changes_nothing() {
    let dir = TempDir::new("reload-occupied");
    let (listen, admin, up) = (free_port(), free_port(), free_port());
    let mut sluice = start_sluice(&dir, &config(listen, admin, up, "one", ""), 2, addr(listen));
    wait_listening(addr(admin), &mut sluice);
    let path = dir.path().join("sluice.yaml");
    for reuseport in [false, true] {
        let occupant = occupy(reuseport);
        let taken = occupant.local_addr().unwrap().port();
        let extra = format!("  - name: extra\n    address: 127.0.0.1:{taken}\n    echo: {{}}\n");
        std::fs::write(&path, config(listen, admin, up, "two", &extra)).unwrap();
        let (status, body) = http_request(addr(admin), "POST", "/reload");
        assert_eq!(status, 400, "occupant reuseport={reuseport}: {body}");
        assert!(
            body.contains("listeners[1] (extra)")
                && body.contains(&format!("127.0.0.1:{taken}"))
                && body.to_lowercase().contains("address already in use"),
            "{body}"
        );
        // Nothing switched: the old generation answers, on every worker's socket.
        for _ in 0..8 {
            assert_eq!(
                http_request(addr(listen), "GET", "/version"),
                (200, "one".into())
            );
        }
        let (_, stats) = http_request(addr(admin), "GET", "/stats?filter=reloads");
        assert!(stats.contains("server.reloads_ok: 0"), "{stats}");
        drop(occupant);
    }
    let (_, stats) = http_request(addr(admin), "GET", "/stats?filter=reloads");
    assert!(stats.contains("server.reloads_failed: 2"), "{stats}");
    assert!(
        sluice.log_text().contains("config reload refused"),
        "{}",
        sluice.log_text()
    );
}

/// A listening socket on a free 127.0.0.1 port, as another process would hold it.
fn occupy(reuseport: bool) -> std::net::TcpListener {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_reuse_address(true).unwrap();
    socket.set_reuse_port(reuseport).unwrap();
    let any: std::net::SocketAddr = "127.0.0.1:0".parse().unwrap();
    socket.bind(&any.into()).unwrap();
    socket.listen(16).unwrap();
    socket.into()
}
