//! Helpers for end-to-end tests of the built `sluice` binary against real peers.
//!
//! Every process a test starts is killed when its handle drops, so a failing test leaves
//! nothing running. Ports are claimed per test process on 127.0.0.1 (`free_port`).

#![allow(dead_code)]

pub mod netns;
pub mod otlp;
pub mod pki;
pub mod raw_h2;
pub mod sds;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The repository root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The `sluice` binary cargo built for this test.
pub fn sluice_bin() -> &'static str {
    env!("CARGO_BIN_EXE_sluice")
}

/// A TCP port on 127.0.0.1 that no other test process has claimed and nothing is bound to.
///
/// Picking a port by binding port 0 and releasing it raced twice over: the kernel hands the same
/// ephemeral port to the source side of any connection (wrk's, the proxy's upstream ones) before
/// the test binds it, and parallel test processes (nextest runs each test in its own) could be
/// given the same one. So ports come from 20000..32000, below the kernel's default ephemeral range
/// (32768–60999), and a process claims one by holding an exclusive `flock` on
/// `$TMPDIR/sluice-test-ports/PORT` for the rest of its life: the kernel drops the lock when the
/// process exits, so a crashed test leaves no stale claim.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const LOW: u32 = 20_000;
    const SPAN: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let dir = std::env::temp_dir().join("sluice-test-ports");
    std::fs::create_dir_all(&dir).unwrap();
    // Each process starts at its own place in the range, so claims rarely even contend.
    let _ = NEXT.compare_exchange(
        u32::MAX,
        std::process::id().wrapping_mul(2_654_435_761) % SPAN,
        Ordering::Relaxed,
        Ordering::Relaxed,
    );
    for _ in 0..SPAN {
        let port = (LOW + NEXT.fetch_add(1, Ordering::Relaxed) % SPAN) as u16;
        let claim = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join(port.to_string()))
            .unwrap();
        if claim.try_lock().is_err() {
            continue; // another test process holds it
        }
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            // Held until this process exits.
            std::mem::forget(claim);
            return port;
        }
    }
    panic!("no free test port in {LOW}..{}", LOW + SPAN);
}

/// A fresh temporary directory, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let p = std::env::temp_dir().join(format!("sluice-{tag}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A child process killed (SIGKILL) on drop unless it already exited.
pub struct Proc {
    pub child: Child,
    pub name: String,
    pub log: PathBuf,
}

impl Proc {
    /// Sends a signal by number.
    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{sig} {} failed", self.name);
    }

    /// Waits for exit up to `limit`; `None` if it is still running.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let end = Instant::now() + limit;
        while Instant::now() < end {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Stops the proxy as an operator does — SIGTERM: it drains and flushes its access log — and
/// checks that it exits with success within `limit` (its log in the failure).
pub fn stop_gracefully(mut s: Proc, limit: Duration) {
    s.signal("TERM");
    assert!(
        s.wait_exit(limit).is_some_and(|st| st.success()),
        "{} did not exit cleanly within {limit:?}:\n{}",
        s.name,
        s.log_text()
    );
}

/// Starts a program with stdout+stderr to a log file in `dir`.
pub fn spawn(dir: &TempDir, name: &str, program: &str, args: &[&str]) -> Proc {
    let log = dir.path().join(format!("{name}.log"));
    let out = std::fs::File::create(&log).unwrap();
    let err = out.try_clone().unwrap();
    let child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot start {program}: {e} (the test script installs it: bash tests/run.sh)")
        });
    Proc {
        child,
        name: name.to_owned(),
        log,
    }
}

/// Waits until something accepts on `addr`.
pub fn wait_listening(addr: SocketAddr, proc: &mut Proc) {
    let end = Instant::now() + Duration::from_secs(20);
    while Instant::now() < end {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return;
        }
        if let Some(status) = proc.child.try_wait().unwrap() {
            panic!(
                "{} exited ({status}) before listening on {addr}:\n{}",
                proc.name,
                proc.log_text()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!(
        "{} not listening on {addr} after 20s:\n{}",
        proc.name,
        proc.log_text()
    );
}

/// The environment variable `tests/run.sh` sets: with it, a missing peer fails the test that
/// needs it instead of skipping it (the full suite must run every test).
pub const REQUIRE_PEERS_VAR: &str = "SLUICE_REQUIRE_PEERS";

/// Whether the outside peers a test needs are all here; call it first in every end-to-end test
/// that needs one: `if !require_peers(&["nginx", "wrk"]) { return; }`.
///
/// A peer is a program on `PATH` (`nginx`, `wrk`, `curl`, `python3`, `setpriv`…), or one of the
/// installed test peers `tests/run.sh` makes: `sofa-rpc-node` (`node` and
/// `tests/bolt/node_modules`), `grpc-js` (`node` and `tests/grpc/node_modules`) and `test-venv`
/// (`target/test-venv` with the Python `websockets`), `xds-protos` (the test venv with `grpcio`
/// and `xds-protos`). When one is missing the test is skipped with one line on stderr, written past
/// the test harness's capture so that a plain `cargo test` shows it:
/// `SKIPPED e2e_http::foo: nginx not found on PATH (tests/run.sh installs it)`; when
/// [`REQUIRE_PEERS_VAR`] is set (to anything but `0`) it panics with the same words instead.
pub fn require_peers(peers: &[&str]) -> bool {
    let missing: Vec<String> = peers.iter().filter_map(|peer| missing_peer(peer)).collect();
    if missing.is_empty() {
        return true;
    }
    let test = format!(
        "{}::{}",
        env!("CARGO_CRATE_NAME"),
        std::thread::current().name().unwrap_or("?")
    );
    let why = missing.join("; ");
    if std::env::var_os(REQUIRE_PEERS_VAR).is_some_and(|v| !v.is_empty() && v != "0") {
        panic!("{test}: {why}; {REQUIRE_PEERS_VAR} is set, so a missing peer is a failure");
    }
    let _ = writeln!(std::io::stderr(), "SKIPPED {test}: {why}");
    false
}

/// Why `peer` is unusable here, or `None` when it is installed.
fn missing_peer(peer: &str) -> Option<String> {
    match peer {
        "root" => {
            use std::os::unix::fs::MetadataExt;
            let root = std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0);
            (!root).then(|| "needs root to play another user (uid 65534)".to_owned())
        }
        "sofa-rpc-node" => missing_peer("node").or_else(|| {
            let dir = repo().join("tests/bolt/node_modules/sofa-rpc-node");
            (!dir.is_dir()).then(|| {
                "tests/bolt/node_modules is missing (tests/run.sh runs `npm ci` in tests/bolt)"
                    .to_owned()
            })
        }),
        "grpc-js" => missing_peer("node").or_else(|| {
            let dir = repo().join("tests/grpc/node_modules/@grpc/grpc-js");
            (!dir.is_dir()).then(|| {
                "tests/grpc/node_modules is missing (tests/run.sh runs `npm ci` in tests/grpc)"
                    .to_owned()
            })
        }),
        "puppeteer-core" => missing_peer("node").or_else(|| {
            let dir = repo().join("tests/browser/node_modules/puppeteer-core");
            (!dir.is_dir()).then(|| {
                "tests/browser/node_modules is missing (tests/run.sh runs `npm ci` in tests/browser)"
                    .to_owned()
            })
        }),
        "test-venv" => {
            let venv = repo().join("target/test-venv/bin/python");
            let usable = Command::new(&venv)
                .args(["-c", "import websockets"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            (!usable).then(|| {
                "target/test-venv with the Python websockets package is missing \
                 (tests/run.sh makes it from tests/requirements.txt)"
                    .to_owned()
            })
        }
        "xds-protos" => {
            let venv = repo().join("target/test-venv/bin/python");
            let usable = Command::new(&venv)
                .args(["-c", "import grpc, envoy.service.discovery.v3.ads_pb2_grpc"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            (!usable).then(|| {
                "target/test-venv with the Python grpcio and xds-protos packages is missing \
                 (tests/run.sh makes it from tests/requirements.txt)"
                    .to_owned()
            })
        }
        program => (!on_path(program))
            .then(|| format!("{program} not found on PATH (tests/run.sh installs it)")),
    }
}

/// Whether an executable file named `program` is in a directory of `PATH`.
fn on_path(program: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let Some(path) = std::env::var_os("PATH") else {
        return false;
    };
    std::env::split_paths(&path).any(|dir| {
        std::fs::metadata(dir.join(program))
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    })
}

/// Requires a program on PATH, with a message naming the install step.
pub fn require(program: &str) {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        found,
        "{program} is not installed: run the test suite with `bash tests/run.sh`, which installs it"
    );
}

/// Starts `sluice run` on a config text; waits until `ready_addr` accepts.
pub fn start_sluice(dir: &TempDir, config: &str, workers: usize, ready_addr: SocketAddr) -> Proc {
    let path = dir.write("sluice.yaml", config);
    let mut p = spawn(
        dir,
        "sluice",
        sluice_bin(),
        &[
            "run",
            "-c",
            path.to_str().unwrap(),
            "--workers",
            &workers.to_string(),
        ],
    );
    wait_listening(ready_addr, &mut p);
    p
}

/// Starts an nginx that answers every request with `200 body` on 127.0.0.1:`port`.
pub fn start_nginx(dir: &TempDir, name: &str, port: u16, body: &str) -> Proc {
    start_nginx_with(
        dir,
        name,
        port,
        &format!(r#"location / {{ return 200 "{body}"; }}"#),
    )
}

/// Starts an nginx (one process, `master_process off`) on 127.0.0.1:`port` whose `server`
/// block holds `locations` (nginx directives, e.g. `location / { return 500; }`).
pub fn start_nginx_with(dir: &TempDir, name: &str, port: u16, locations: &str) -> Proc {
    start_nginx_listening(dir, name, port, "", locations)
}

/// [`start_nginx_with`] serving HTTPS (HTTP/1.1) with this certificate chain and key.
pub fn start_nginx_tls(
    dir: &TempDir,
    name: &str,
    port: u16,
    (cert, key): (&Path, &Path),
    locations: &str,
) -> Proc {
    let locations = format!(
        "ssl_certificate {};\n        ssl_certificate_key {};\n        {locations}",
        cert.display(),
        key.display()
    );
    start_nginx_listening(dir, name, port, " ssl", &locations)
}

/// An nginx whose `listen` takes `listen_params` (e.g. ` ssl`).
fn start_nginx_listening(
    dir: &TempDir,
    name: &str,
    port: u16,
    listen_params: &str,
    locations: &str,
) -> Proc {
    require("nginx");
    let root = dir.path().join(name);
    std::fs::create_dir_all(&root).unwrap();
    let conf = format!(
        r#"
# One process, so that killing it kills the upstream (a master's orphaned worker would
# keep serving).
master_process off;
worker_processes 1;
pid {root}/nginx.pid;
error_log {root}/error.log;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {root}/body;
    proxy_temp_path {root}/proxy;
    fastcgi_temp_path {root}/fastcgi;
    uwsgi_temp_path {root}/uwsgi;
    scgi_temp_path {root}/scgi;
    keepalive_requests 100000;
    server {{
        listen 127.0.0.1:{port}{listen_params};
        {locations}
    }}
}}
"#,
        root = root.display()
    );
    let conf_path = root.join("nginx.conf");
    std::fs::write(&conf_path, conf).unwrap();
    let mut p = spawn(
        dir,
        name,
        "nginx",
        &[
            "-c",
            conf_path.to_str().unwrap(),
            "-p",
            root.to_str().unwrap(),
            "-g",
            "daemon off;",
        ],
    );
    wait_listening(SocketAddr::from(([127, 0, 0, 1], port)), &mut p);
    p
}

/// Runs a command to completion.
pub fn run(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"))
}

/// One request/response over a fresh connection: writes `data`, half-closes, reads to EOF.
pub fn echo_once(addr: SocketAddr, data: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let writer = {
        let mut w = s.try_clone()?;
        let data = data.to_vec();
        std::thread::spawn(move || -> std::io::Result<()> {
            w.write_all(&data)?;
            w.shutdown(std::net::Shutdown::Write)
        })
    };
    let mut got = Vec::with_capacity(data.len());
    s.read_to_end(&mut got)?;
    writer.join().unwrap()?;
    Ok(got)
}

// ---- SOFARPC (Bolt) peers: tests/bolt/{server,client}.js over the npm package sofa-rpc-node ----

/// The folder of the Node Bolt peers; panics with the install step when `npm ci` has not run.
pub fn sofa_dir() -> PathBuf {
    require("node");
    let dir = repo().join("tests/bolt");
    assert!(
        dir.join("node_modules/sofa-rpc-node").is_dir(),
        "tests/bolt/node_modules is missing: run `bash tests/run.sh` (or `npm ci` in tests/bolt)"
    );
    dir
}

/// Starts a real SOFARPC server (tests/bolt/server.js) on 127.0.0.1:`port` exposing
/// `com.example.EchoService:1.0`, whose `echo(s)` answers `"{name}:{s}"`; waits for `READY`.
pub fn start_sofa_server(dir: &TempDir, name: &str, port: u16) -> Proc {
    let script = sofa_dir().join("server.js");
    let port_s = port.to_string();
    let mut p = spawn(
        dir,
        &format!("sofa-{name}"),
        "node",
        &[script.to_str().unwrap(), "--port", &port_s, "--name", name],
    );
    let ready = format!("READY {port}");
    let end = Instant::now() + Duration::from_secs(20);
    while Instant::now() < end {
        if p.log_text().lines().any(|l| l.trim() == ready) {
            return p;
        }
        if let Some(status) = p.child.try_wait().unwrap() {
            panic!(
                "{} exited ({status}) before READY:\n{}",
                p.name,
                p.log_text()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("{} not READY after 20s:\n{}", p.name, p.log_text());
}

/// Runs the real SOFARPC client (tests/bolt/client.js) against `target` (`host:port`, or several
/// comma-separated) in `mode` (`echo`, `plus`, `fail`, `sleep`) with extra `args` (e.g.
/// `["--count", "300", "--concurrency", "50"]`), and returns the JSON line it prints.
pub fn sofa_client(target: &str, mode: &str, args: &[&str]) -> serde_json::Value {
    let script = sofa_dir().join("client.js");
    let out = Command::new("node")
        .arg(&script)
        .args(["--target", target, "--mode", mode])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run node client.js: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "client.js {mode} {args:?} failed ({}):\nstdout: {stdout}\nstderr: {stderr}",
        out.status
    );
    let line = stdout
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    serde_json::from_str(line).unwrap_or_else(|e| {
        panic!("client.js {mode} printed no JSON line ({e}):\nstdout: {stdout}\nstderr: {stderr}")
    })
}

/// `127.0.0.1:port`.
pub fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// One HTTP/1.1 request with `connection: close`: `(status, body)` (status 0 when the answer
/// does not parse).
pub fn http_request(to: SocketAddr, method: &str, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(to).unwrap();
    // One write: `write!` on a socket sends each piece of the format as its own write, so a
    // server that answers (or refuses, as a TLS listener does) after the first bytes would
    // meet the rest arriving late or fail the write on a closed socket.
    let request = format!(
        "{method} {path} HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
    );
    s.write_all(request.as_bytes()).unwrap();
    let mut out = String::new();
    // A reset (a listener that refuses the request) reads as what arrived before it: status 0
    // when nothing did.
    let _ = s.read_to_string(&mut out);
    status_and_body(&out)
}

/// A `GET path` with `connection: close` to a listener that may not be there (yet, or any
/// more): `(0, "")` when the connection or the write fails, else what arrived before the
/// connection closed or 10 s passed without a byte, as [`status_and_body`].
pub fn get_if_listening(to: SocketAddr, path: &str) -> (u16, String) {
    let Ok(mut s) = TcpStream::connect(to) else {
        return (0, String::new());
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
    let request = format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n");
    if s.write_all(request.as_bytes()).is_err() {
        return (0, String::new());
    }
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    status_and_body(&out)
}

/// One `GET /` on a kept-alive connection, read to the end of its `content-length` body:
/// `(status, whether the answer says connection: close, body)`; `None` when the connection
/// closed first or the answer did not parse.
pub fn keep_alive_get(s: &mut TcpStream) -> Option<(u16, bool, String)> {
    s.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n").ok()?;
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        if s.read(&mut byte).ok()? == 0 {
            return None;
        }
        buf.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&buf).to_ascii_lowercase();
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))?
        .trim()
        .parse()
        .ok()?;
    let mut body = vec![0; length];
    s.read_exact(&mut body).ok()?;
    let close = head.lines().any(|l| l.trim() == "connection: close");
    Some((status, close, String::from_utf8_lossy(&body).into_owned()))
}

/// `(status, body)` of a whole HTTP/1.1 response as read: status 0 when its status line does
/// not parse, the body empty when its head is not complete.
pub fn status_and_body(response: &str) -> (u16, String) {
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// The Python of the test venv (`tests/run.sh` makes it), else `python3`.
pub fn python() -> String {
    let venv = repo().join("target/test-venv/bin/python");
    if venv.exists() {
        venv.to_string_lossy().into_owned()
    } else {
        "python3".to_owned()
    }
}

/// A Python upstream (tests/http_upstream.py) on `port`, answering JSON naming `name`.
pub fn start_py_upstream(dir: &TempDir, name: &str, port: u16) -> Proc {
    require("python3");
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
    p
}

/// An HTTP listener on `listen` whose `/version` answers `version` and whose other paths go to
/// the one host `upstream`, plus the `extra` listeners (YAML list items) and `drain_timeout`;
/// the admin API on `admin`. For the reload and upgrade tests, which switch it under load.
pub fn versioned_http_config(
    listen: u16,
    admin: u16,
    upstream: u16,
    version: &str,
    extra: &str,
    drain_timeout: &str,
) -> String {
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
            - match: {{ prefix: /version }}
              direct_response: {{ status: 200, body: "{version}" }}
            - match: {{ prefix: / }}
              route: {{ cluster: app }}
{extra}clusters:
  - name: app
    hosts: [ {{ address: 127.0.0.1:{upstream} }} ]
drain_timeout: {drain_timeout}
"#
    )
}

/// One HTTP/1.1 request over a Unix socket (the admin API's `admin.path`): `(status, body)`.
pub fn unix_http_request(path: &Path, method: &str, target: &str) -> (u16, String) {
    let mut s = std::os::unix::net::UnixStream::connect(path)
        .unwrap_or_else(|e| panic!("cannot connect to {}: {e}", path.display()));
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "{method} {target} HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status = out
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// Runs `program args` as user `nobody` (uid 65534; the tests run as root): its output.
pub fn run_as_nobody(program: &str, args: &[&str]) -> Output {
    require("setpriv");
    Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", program])
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program} as nobody: {e}"))
}

/// Whether the tests run as root (those that play another local user need it; they are
/// skipped, saying so, otherwise).
/// Through [`require_peers`] (the peer `root`): the skip names the test, and under
/// `tests/run.sh` ([`REQUIRE_PEERS_VAR`]) not being root is a failure, not a silent skip.
pub fn running_as_root() -> bool {
    require_peers(&["root"])
}

/// What [`keep_alive_load`] saw.
#[derive(Debug, Default)]
pub struct LoadReport {
    /// Complete `200` responses.
    pub ok: u64,
    /// Responses that announced `connection: close` (the client reconnected after them).
    pub closes_announced: u64,
    /// Every request that failed, with what happened: a request sent on a connection whose
    /// last response did not announce a close must get a whole response.
    pub failures: Vec<String>,
}

/// Keeps `connections` keep-alive HTTP/1.1 connections busy with `GET path` back to back until
/// `stop` is set, and reports every request that did not get a complete `200`. A response with
/// `connection: close` makes the client reconnect. When `refused_ends` is set, a refused
/// reconnect ends that connection's loop (a draining instance that stopped accepting), and is
/// not a failure; otherwise it is one. `answered` counts the complete `200`s as they come (for a
/// test to wait for load before it acts: [`wait_for_answers`]).
pub fn keep_alive_load(
    target: SocketAddr,
    path: &str,
    connections: usize,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    answered: std::sync::Arc<std::sync::atomic::AtomicU64>,
    refused_ends: bool,
) -> std::thread::JoinHandle<LoadReport> {
    use std::sync::atomic::Ordering;
    let request = format!("GET {path} HTTP/1.1\r\nHost: load.test\r\n\r\n");
    std::thread::spawn(move || {
        let workers: Vec<_> = (0..connections)
            .map(|i| {
                let (request, stop, answered) = (request.clone(), stop.clone(), answered.clone());
                std::thread::spawn(move || {
                    let mut report = LoadReport::default();
                    'connections: while !stop.load(Ordering::Relaxed) {
                        let mut s =
                            match TcpStream::connect_timeout(&target, Duration::from_secs(5)) {
                                Ok(s) => s,
                                Err(e) if refused_ends => {
                                    let _ = e;
                                    break;
                                }
                                Err(e) => {
                                    report
                                        .failures
                                        .push(format!("connection {i}: connect: {e}"));
                                    std::thread::sleep(Duration::from_millis(20));
                                    continue;
                                }
                            };
                        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                        let mut on_this = 0u64;
                        while !stop.load(Ordering::Relaxed) {
                            let fail = |what: String| {
                                format!("connection {i}, request {} on it: {what}", on_this + 1)
                            };
                            if let Err(e) = s.write_all(request.as_bytes()) {
                                report.failures.push(fail(format!("write: {e}")));
                                continue 'connections;
                            }
                            match read_one_response(&mut s) {
                                Ok((200, close)) => {
                                    report.ok += 1;
                                    answered.fetch_add(1, Ordering::Relaxed);
                                    on_this += 1;
                                    if close {
                                        report.closes_announced += 1;
                                        continue 'connections;
                                    }
                                }
                                Ok((status, _)) => {
                                    report.failures.push(fail(format!("status {status}")));
                                    continue 'connections;
                                }
                                Err(e) => {
                                    report.failures.push(fail(e));
                                    continue 'connections;
                                }
                            }
                        }
                    }
                    report
                })
            })
            .collect();
        let mut total = LoadReport::default();
        for w in workers {
            let r = w.join().unwrap();
            total.ok += r.ok;
            total.closes_announced += r.closes_announced;
            total.failures.extend(r.failures);
        }
        total
    })
}

/// Waits until a [`keep_alive_load`] has had `n` answers: a test acts under load however slow
/// the machine is, instead of after a fixed sleep. After `within`, stops the load (`stop`: its
/// threads must not go on reconnecting to a port another test may take) and panics.
pub fn wait_for_answers(
    answered: &std::sync::atomic::AtomicU64,
    stop: &std::sync::atomic::AtomicBool,
    n: u64,
    within: Duration,
) {
    let deadline = std::time::Instant::now() + within;
    while answered.load(std::sync::atomic::Ordering::Relaxed) < n {
        if std::time::Instant::now() >= deadline {
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            panic!(
                "the load had {} answers after {within:?}, wanted {n}",
                answered.load(std::sync::atomic::Ordering::Relaxed)
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Reads one response with a `content-length` body: (status, whether it announced a close).
fn read_one_response(s: &mut TcpStream) -> Result<(u16, bool), String> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match s.read(&mut byte) {
            Ok(0) => {
                return Err(format!(
                    "connection closed after {} bytes of the response head",
                    head.len()
                ));
            }
            Ok(_) => head.push(byte[0]),
            Err(e) => return Err(format!("read after {} bytes: {e}", head.len())),
        }
    }
    let text = String::from_utf8_lossy(&head).to_ascii_lowercase();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_owned()))
    };
    let len: usize = field("content-length:")
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| format!("no content-length in {text:?}"))?;
    let close = field("connection:").is_some_and(|v| v == "close");
    let mut body = vec![0u8; len];
    s.read_exact(&mut body)
        .map_err(|e| format!("body of {len} bytes: {e}"))?;
    Ok((status, close))
}

/// A counter from the admin API's `/stats` (`name: value` lines).
pub fn admin_stat(admin: u16, name: &str) -> u64 {
    let mut s = TcpStream::connect(addr(admin)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET /stats HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text)
        .expect("the admin API answers within 10 s");
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}: ")))
        .unwrap_or_else(|| panic!("no {name} in /stats:\n{text}"))
        .trim()
        .parse()
        .unwrap()
}

/// Polls `check` every 50 ms until it is true or `limit` passed; its last answer.
pub fn eventually(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let until = Instant::now() + limit;
    loop {
        if check() {
            return true;
        }
        if Instant::now() > until {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
