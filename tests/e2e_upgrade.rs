//! Binary upgrade (`sluice run -c FILE --upgrade`) with real processes: the new instance
//! receives the listening sockets over the control socket (SCM_RIGHTS), serves them, and the
//! old one drains and exits — under wrk load, twice, with a config reload in between, and no
//! failed request.

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use support::*;

fn config(listen: u16, admin: u16, upstream: u16, version: &str, extra: &str) -> String {
    versioned_http_config(listen, admin, upstream, version, extra, "10s")
}

/// Starts `sluice run` on the config file at `path` with the control socket `control`.
fn sluice(
    dir: &TempDir,
    name: &str,
    path: &std::path::Path,
    control: &std::path::Path,
    upgrade: bool,
) -> Proc {
    let mut args = vec![
        "run",
        "-c",
        path.to_str().unwrap(),
        "--workers",
        "2",
        "--control-socket",
        control.to_str().unwrap(),
    ];
    if upgrade {
        args.push("--upgrade");
    }
    spawn(dir, name, sluice_bin(), &args)
}

/// Waits for `p` to exit by itself; its exit status.
fn wait_exit(p: &mut Proc, within: Duration) -> std::process::ExitStatus {
    let end = Instant::now() + within;
    loop {
        if let Some(status) = p.child.try_wait().unwrap() {
            return status;
        }
        assert!(
            Instant::now() < end,
            "{} did not exit within {within:?}:\n{}",
            p.name,
            p.log_text()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until the process logs `needle`.
fn wait_log(p: &mut Proc, needle: &str, within: Duration) {
    let end = Instant::now() + within;
    while !p.log_text().contains(needle) {
        if let Some(status) = p.child.try_wait().unwrap() {
            panic!(
                "{} exited ({status}) before {needle:?}:\n{}",
                p.name,
                p.log_text()
            );
        }
        assert!(
            Instant::now() < end,
            "{} never logged {needle:?}:\n{}",
            p.name,
            p.log_text()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn two_upgrades_and_a_reload_under_load_fail_no_request() {
    if !require_peers(&["nginx", "wrk"]) {
        return;
    }
    let dir = TempDir::new("upgrade");
    let (up, listen, admin) = (free_port(), free_port(), free_port());
    let _nginx = start_nginx(&dir, "up", up, "hello");
    let path = dir.write("sluice.yaml", &config(listen, admin, up, "v1", ""));
    let control = dir.path().join("control.sock");
    let mut first = sluice(&dir, "sluice-1", &path, &control, false);
    wait_log(&mut first, "sluice ready", Duration::from_secs(20));

    // A second instance without --upgrade is refused, naming the control socket.
    let out = Command::new(sluice_bin())
        .args(["run", "-c", path.to_str().unwrap(), "--control-socket"])
        .arg(&control)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("another sluice instance serves this config") && err.contains("--upgrade"),
        "{err}"
    );
    assert_eq!(
        http_request(addr(listen), "GET", "/version"),
        (200, "v1".into())
    );

    let wrk = {
        let url = format!("http://127.0.0.1:{listen}/");
        std::thread::spawn(move || run("wrk", &["-t2", "-c16", "-d9s", &url]))
    };
    // The upgrade below happens under load: once wrk's requests come (beyond the one above).
    assert!(
        eventually(Duration::from_secs(20), || {
            admin_stat(admin, "listener.web.http.rq_total") > 16
        }),
        "wrk's requests never reached the proxy"
    );

    // Upgrade 1: the new instance takes the sockets; the old one drains and exits 0.
    let mut second = sluice(&dir, "sluice-2", &path, &control, true);
    wait_log(&mut second, "sluice ready", Duration::from_secs(20));
    assert!(
        wait_exit(&mut first, Duration::from_secs(15)).success(),
        "{}",
        first.log_text()
    );
    assert!(
        first
            .log_text()
            .contains("a new instance serves our sockets")
    );
    std::thread::sleep(Duration::from_millis(1000));

    // A reload of the new instance, still under load.
    std::fs::write(&path, config(listen, admin, up, "v2", "")).unwrap();
    second.signal("HUP");
    let end = Instant::now() + Duration::from_secs(5);
    while http_request(addr(listen), "GET", "/version").1 != "v2" {
        assert!(Instant::now() < end, "the reload did not apply");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(1000));

    // Upgrade 2.
    let mut third = sluice(&dir, "sluice-3", &path, &control, true);
    wait_log(&mut third, "sluice ready", Duration::from_secs(20));
    assert!(
        wait_exit(&mut second, Duration::from_secs(15)).success(),
        "{}",
        second.log_text()
    );

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
    // The last instance serves, the admin API included (its socket was handed over too).
    assert_eq!(
        http_request(addr(listen), "GET", "/version"),
        (200, "v2".into())
    );
    assert_eq!(
        http_request(addr(admin), "GET", "/ready"),
        (200, "LIVE\n".into())
    );
}

/// Two upgrades with a slow upstream (30 ms to the head, 30 ms more to the body) and the default
/// drain settings: responses are in flight whenever the old instance starts draining, and each
/// must either announce the close or leave its connection open for the next request, which is
/// then answered (with `connection: close`) before the old instance lets go. No request fails.
#[test]
fn upgrades_with_a_slow_upstream_fail_no_request() {
    if !require_peers(&["python3"]) {
        return;
    }
    let dir = TempDir::new("upgrade-slow");
    let (up, listen, admin) = (free_port(), free_port(), free_port());
    let _upstream = start_py_upstream(&dir, "slow", up);
    let path = dir.write("sluice.yaml", &config(listen, admin, up, "v1", ""));
    let control = dir.path().join("control.sock");
    let mut old = sluice(&dir, "sluice-1", &path, &control, false);
    wait_log(&mut old, "sluice ready", Duration::from_secs(20));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let answered = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let load = keep_alive_load(
        addr(listen),
        "/split/30",
        16,
        stop.clone(),
        answered.clone(),
        false,
    );
    // Each upgrade happens under load: at least 100 more answers first (not a fixed sleep,
    // which a loaded machine can spend on little load).
    let mut seen = 0;
    let mut more_load = || {
        wait_for_answers(&answered, &stop, seen + 100, Duration::from_secs(30));
        seen = answered.load(std::sync::atomic::Ordering::Relaxed);
    };
    more_load();
    let mut logs = vec![];
    for name in ["sluice-2", "sluice-3"] {
        let mut new = sluice(&dir, name, &path, &control, true);
        wait_log(&mut new, "sluice ready", Duration::from_secs(20));
        assert!(
            wait_exit(&mut old, Duration::from_secs(15)).success(),
            "{}",
            old.log_text()
        );
        logs.push(old.log_text());
        old = new;
        more_load();
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let report = load.join().unwrap();
    eprintln!(
        "{} responses, {} announced a close",
        report.ok, report.closes_announced
    );
    assert!(
        report.failures.is_empty(),
        "{} failed requests:\n{}\nold instances' logs:\n{}",
        report.failures.len(),
        report.failures.join("\n"),
        logs.join("\n----\n")
    );
    assert!(report.ok > 200, "too little load: {report:?}");
    assert!(
        report.closes_announced >= 32,
        "the upgrades drained too few connections: {report:?}"
    );
}

#[test]
fn a_new_instance_that_fails_halfway_leaves_the_old_one_serving() {
    if !require_peers(&["nginx"]) {
        return;
    }
    let dir = TempDir::new("upgrade-rollback");
    let (up, listen, admin) = (free_port(), free_port(), free_port());
    let _nginx = start_nginx(&dir, "up", up, "hello");
    let path = dir.write("sluice.yaml", &config(listen, admin, up, "v1", ""));
    let control = dir.path().join("control.sock");
    let mut first = sluice(&dir, "sluice-1", &path, &control, false);
    wait_log(&mut first, "sluice ready", Duration::from_secs(20));

    // The new config adds a listener on a port someone else holds: the new instance receives
    // the sockets, then fails to bind that one and exits before saying it serves.
    let squatter = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = squatter.local_addr().unwrap().port();
    let extra = format!("  - name: extra\n    address: 127.0.0.1:{taken}\n    echo: {{}}\n");
    let bad = dir.write("bad.yaml", &config(listen, admin, up, "v9", &extra));
    let out = Command::new(sluice_bin())
        .args([
            "run",
            "-c",
            bad.to_str().unwrap(),
            "--upgrade",
            "--control-socket",
        ])
        .arg(&control)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot listen on"), "{err}");

    // The old instance never stopped: it serves, it is live, and it can still be upgraded.
    assert_eq!(
        http_request(addr(listen), "GET", "/version"),
        (200, "v1".into())
    );
    assert_eq!(
        http_request(addr(admin), "GET", "/ready"),
        (200, "LIVE\n".into())
    );
    assert!(
        first.child.try_wait().unwrap().is_none(),
        "the old instance exited"
    );
    let mut second = sluice(&dir, "sluice-2", &path, &control, true);
    wait_log(&mut second, "sluice ready", Duration::from_secs(20));
    assert!(wait_exit(&mut first, Duration::from_secs(15)).success());
    assert_eq!(
        http_request(addr(listen), "GET", "/version"),
        (200, "v1".into())
    );
}

/// The same with SOFARPC: the real sofa-rpc-node client keeps 20 invokes in flight on its one
/// connection while Sluice is upgraded. Bolt cannot ask a client to reconnect, so the old
/// instance migrates the connection (MOSN's feature): it stops reading, lets the requests in
/// flight finish, and passes the socket with its unread bytes to the new instance, which serves
/// the rest. No invoke fails, and the old instance exits long before the client is done.
#[test]
fn an_upgrade_under_sofa_rpc_load_migrates_the_connection_and_fails_no_invoke() {
    if !require_peers(&["sofa-rpc-node"]) {
        return;
    }
    let dir = TempDir::new("upgrade-bolt");
    let (pa, listen, admin) = (free_port(), free_port(), free_port());
    let _a = start_sofa_server(&dir, "a", pa);
    let yaml = format!(
        r#"
admin: {{ address: 127.0.0.1:{admin} }}
listeners:
  - name: rpc_in
    address: 127.0.0.1:{listen}
    bolt:
      routes:
        - match: {{ service: "com.example.EchoService:1.0" }}
          route: {{ cluster: rpc }}
clusters:
  - name: rpc
    hosts: [ {{ address: 127.0.0.1:{pa} }} ]
drain_timeout: 60s
"#
    );
    let path = dir.write("sluice.yaml", &yaml);
    let control = dir.path().join("control.sock");
    let mut first = sluice(&dir, "sluice-1", &path, &control, false);
    wait_log(&mut first, "sluice ready", Duration::from_secs(20));
    let target = format!("127.0.0.1:{listen}");
    let client = {
        let t = target.clone();
        std::thread::spawn(move || {
            sofa_client(&t, "echo", &["--count", "100000", "--concurrency", "20"])
        })
    };
    // The connection to migrate is busy: the client's invokes come through the old instance.
    assert!(
        eventually(Duration::from_secs(20), || admin_stat(
            admin,
            "bolt.requests"
        ) > 20),
        "the client's invokes never reached the proxy:\n{}",
        first.log_text()
    );
    let mut second = sluice(&dir, "sluice-2", &path, &control, true);
    wait_log(&mut second, "sluice ready", Duration::from_secs(20));
    // The busy connection moved: the old instance is gone while the client still invokes.
    assert!(
        wait_exit(&mut first, Duration::from_secs(5)).success(),
        "{}",
        first.log_text()
    );
    assert!(
        first
            .log_text()
            .contains("connections migrated to the new instance"),
        "{}",
        first.log_text()
    );
    assert!(
        !client.is_finished(),
        "the client ended before the old instance"
    );
    let v = client.join().unwrap();
    assert_eq!(v["ok"], 100000, "{v}");
    assert_eq!(v["error_count"], 0, "{v}");
    assert_eq!(v["mismatches"], 0, "{v}");
    assert!(
        second
            .log_text()
            .contains("adopted the previous instance's connections"),
        "{}",
        second.log_text()
    );
    // A new client is served by the new instance.
    let v = sofa_client(&target, "echo", &["--count", "200", "--concurrency", "20"]);
    assert_eq!(v["ok"], 200, "{v}");
    assert!(second.child.try_wait().unwrap().is_none());
}

/// The new instance starts with the old one's health verdicts: a host the old instance knows to
/// be down is not tried while the new instance's own (slow) probes are still running. Without
/// them every host would start unknown — panic mode, balancing over the dead host too.
#[test]
fn an_upgraded_instance_keeps_the_health_verdicts() {
    if !require_peers(&["python3"]) {
        return;
    }
    let dir = TempDir::new("upgrade-health");
    let (alive, dead, listen, admin) = (free_port(), free_port(), free_port(), free_port());
    let _up = start_py_upstream(&dir, "alive", alive);
    // The probe of the live host takes 2.5 s (/sleep/2500); the dead host fails at once.
    let yaml = format!(
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
            - match: {{ prefix: / }}
              route: {{ cluster: app }}
clusters:
  - name: app
    health_check:
      http: {{ path: /sleep/2500 }}
      interval: 30s
      timeout: 10s
      unhealthy_threshold: 1
      healthy_threshold: 1
      no_traffic_interval: 30s
    hosts: [ {{ address: 127.0.0.1:{alive} }}, {{ address: 127.0.0.1:{dead} }} ]
"#
    );
    let path = dir.write("sluice.yaml", &yaml);
    let control = dir.path().join("control.sock");
    let mut first = sluice(&dir, "sluice-1", &path, &control, false);
    wait_log(&mut first, "sluice ready", Duration::from_secs(20));
    let end = Instant::now() + Duration::from_secs(15);
    loop {
        let (_, stats) = http_request(addr(admin), "GET", "/stats?filter=health_check.success");
        if stats.contains("cluster.app.health_check.success: 1") {
            break;
        }
        assert!(Instant::now() < end, "the live host never passed: {stats}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut second = sluice(&dir, "sluice-2", &path, &control, true);
    wait_log(&mut second, "sluice ready", Duration::from_secs(20));
    // Within the new instance's first 2.5 s its own probe of the live host is still running.
    let statuses: Vec<u16> = (0..20)
        .map(|_| http_request(addr(listen), "GET", "/status/200").0)
        .collect();
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    assert!(wait_exit(&mut first, Duration::from_secs(15)).success());
}

#[test]
fn a_unix_admin_socket_is_handed_over_by_an_upgrade() {
    let dir = TempDir::new("upgrade-admin-unix");
    let listen = free_port();
    let socket = dir.path().join("admin.sock");
    let path = dir.write(
        "sluice.yaml",
        &format!(
            "admin: {{ path: {}, mode: 0600 }}\nlisteners:\n  - {{ name: echo, address: 127.0.0.1:{listen}, echo: {{}} }}\n",
            socket.display()
        ),
    );
    let control = dir.path().join("control.sock");
    let mut first = sluice(&dir, "sluice-1", &path, &control, false);
    wait_log(&mut first, "sluice ready", Duration::from_secs(20));
    assert_eq!(
        unix_http_request(&socket, "GET", "/ready"),
        (200, "LIVE\n".into())
    );
    let inode = {
        use std::os::unix::fs::MetadataExt;
        std::fs::symlink_metadata(&socket).unwrap().ino()
    };

    // The new instance's config changes the mode.
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, text.replace("mode: 0600", "mode: 0640")).unwrap();
    let mut second = sluice(&dir, "sluice-2", &path, &control, true);
    wait_log(&mut second, "sluice ready", Duration::from_secs(20));
    assert!(
        wait_exit(&mut first, Duration::from_secs(15)).success(),
        "{}",
        first.log_text()
    );
    // The same socket file, served by the new instance with its mode; the old one did not
    // remove it.
    {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::symlink_metadata(&socket).unwrap();
        assert_eq!((meta.ino(), meta.mode() & 0o777), (inode, 0o640));
    }
    assert_eq!(
        unix_http_request(&socket, "GET", "/ready"),
        (200, "LIVE\n".into())
    );
    assert_eq!(echo_once(addr(listen), b"ping").unwrap(), b"ping");
    // Its admin API stops it, and the file goes with it.
    assert_eq!(
        unix_http_request(&socket, "POST", "/quitquitquit"),
        (200, "OK\n".into())
    );
    assert!(wait_exit(&mut second, Duration::from_secs(10)).success());
    assert!(!socket.exists(), "the admin socket file was left behind");
}

#[test]
fn the_default_control_socket_is_private_and_an_open_directory_is_refused() {
    if !running_as_root() {
        return;
    }
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let dir = TempDir::new("control-default");
    let listen = free_port();
    let path = dir.write(
        "sluice.yaml",
        &format!("listeners:\n  - {{ name: echo, address: 127.0.0.1:{listen}, echo: {{}} }}\n"),
    );
    // Without XDG_RUNTIME_DIR, root's default is /run/sluice (0700), never a /tmp name that
    // any user can compute and create first.
    let log = dir.path().join("default.log");
    let out = std::fs::File::create(&log).unwrap();
    let child = Command::new(sluice_bin())
        .args(["run", "-c", path.to_str().unwrap(), "--workers", "1"])
        .env_remove("XDG_RUNTIME_DIR")
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .unwrap();
    let mut p = Proc {
        child,
        name: "sluice-default".into(),
        log,
    };
    wait_log(&mut p, "sluice ready", Duration::from_secs(20));
    assert!(
        p.log_text().contains("/run/sluice/sluice-"),
        "{}",
        p.log_text()
    );
    let meta = std::fs::metadata("/run/sluice").unwrap();
    assert_eq!((meta.uid(), meta.mode() & 0o777), (0, 0o700));
    p.signal("TERM");
    assert!(wait_exit(&mut p, Duration::from_secs(10)).success());

    // A control socket in a directory others can write (sticky like /tmp, or not) is refused,
    // for `run` and `run --upgrade` alike.
    let open = dir.path().join("open");
    std::fs::create_dir(&open).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let control = open.join("control.sock");
    for upgrade in [false, true] {
        let mut args = vec!["run", "-c", path.to_str().unwrap(), "--control-socket"];
        args.push(control.to_str().unwrap());
        if upgrade {
            args.push("--upgrade");
        }
        let out = run(sluice_bin(), &args);
        assert_eq!(out.status.code(), Some(1), "upgrade {upgrade}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(&format!(
                "its directory {} is writable by other users (mode 1777)",
                open.display()
            )),
            "upgrade {upgrade}: {err}"
        );
    }
    assert!(!control.exists());
}

#[test]
fn an_upgrade_refuses_a_control_socket_squatted_by_another_user() {
    if !require_peers(&["python3", "setpriv"]) {
        return;
    }
    if !running_as_root() {
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    // Another user's process answers on the control socket path and would hand over a
    // listening socket of its own: the new instance refuses it before sending anything.
    let dir = TempDir::new("control-squat");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let listen = free_port();
    let path = dir.write(
        "sluice.yaml",
        &format!("listeners:\n  - {{ name: echo, address: 127.0.0.1:{listen}, echo: {{}} }}\n"),
    );
    let theirs = dir.path().join("theirs");
    std::fs::create_dir(&theirs).unwrap();
    std::os::unix::fs::chown(&theirs, Some(65534), Some(65534)).unwrap();
    let squat = theirs.join("control.sock");
    let script = format!(
        r#"
import json, socket, struct, sys, time
l = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
l.bind(("127.0.0.1", {listen})); l.listen(); l.setblocking(False)
s = socket.socket(socket.AF_UNIX); s.bind(sys.argv[1]); s.listen()
print("ready", flush=True)
c, _ = s.accept()
c.settimeout(5)
try:
    got = c.recv(4096)
except Exception:
    got = b""
print("request", len(got), flush=True)
if got:
    offer = json.dumps({{"v": 1, "type": "offer", "workers": 1, "admin": None, "health": [],
                         "listeners": [{{"address": "127.0.0.1:{listen}", "fds": 1}}]}}).encode()
    socket.send_fds(c, [struct.pack(">II", len(offer), 1) + offer], [l.fileno()])
time.sleep(30)
"#
    );
    let script_path = dir.write("squatter.py", &script);
    require("setpriv");
    let mut squatter = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "/usr/bin/python3",
        ])
        .arg(&script_path)
        .arg(&squat)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines =
        std::io::BufRead::lines(std::io::BufReader::new(squatter.stdout.take().unwrap()));
    assert_eq!(lines.next().unwrap().unwrap(), "ready");
    // The squatter's socket ends up at our path, in our directory, as our file (as if it had
    // got past the file checks): the peer's uid still gives it away.
    let control = dir.path().join("control.sock");
    std::fs::rename(&squat, &control).unwrap();
    std::os::unix::fs::chown(&control, Some(0), Some(0)).unwrap();

    let mut new = sluice(&dir, "sluice-new", &path, &control, true);
    let status = wait_exit(&mut new, Duration::from_secs(10));
    assert_eq!(status.code(), Some(1), "{}", new.log_text());
    assert!(
        new.log_text().contains("runs as uid 65534"),
        "{}",
        new.log_text()
    );
    // It sent nothing to the squatter.
    assert_eq!(lines.next().unwrap().unwrap(), "request 0");
    let _ = squatter.kill();
    let _ = squatter.wait();
}

/// Session tickets outlive a binary upgrade and a reload: the old instance hands its TLS
/// listeners' ticket keys to the new one over the control socket, and a reload that keeps a
/// listener keeps its keys — a client resumes (`Reused`) with a ticket the first instance
/// issued, after an upgrade and then after a reload of the new instance, with TLS 1.3 and 1.2.
/// A listener whose admission rules change (`require_client_certificate`) gets new keys.
#[test]
fn session_tickets_resume_across_an_upgrade_and_a_reload() {
    use support::pki::*;
    if !require_peers(&["openssl"]) {
        return;
    }
    let dir = TempDir::new("upgrade-tickets");
    let ca = make_ca(&dir, "ca");
    let (cert, key) = leaf(&dir, &ca, "svc", &["svc.example"], None);
    let (listen, admin) = (free_port(), free_port());
    let yaml = |version: &str| {
        format!(
            r#"
admin: {{ address: 127.0.0.1:{admin} }}
listeners:
  - name: tls_in
    address: 127.0.0.1:{listen}
    tls: {{ certificates: [ {{ cert_chain: {c}, private_key: {k} }} ] }}
    http:
      virtual_hosts:
        - name: all
          domains: ["*"]
          routes:
            - match: {{ prefix: / }}
              direct_response: {{ status: 200, body: "{version}" }}
clusters: []
"#,
            c = p(&cert),
            k = p(&key),
        )
    };
    let path = dir.write("sluice.yaml", &yaml("v1"));
    let control = dir.path().join("control.sock");
    let mut first = sluice(&dir, "sluice-1", &path, &control, false);
    wait_log(&mut first, "sluice ready", Duration::from_secs(20));
    let session = |v: &str| dir.path().join(format!("session-{v}.pem"));
    for v in ["tls1_3", "tls1_2"] {
        let (ok, text) = s_client_request(listen, &[&format!("-{v}"), "-sess_out", p(&session(v))]);
        assert!(ok, "{v}: {text}");
        assert!(session(v).exists(), "{v}: no session written:\n{text}");
    }
    let resumes = |who: &str| {
        for (v, name) in [("tls1_3", "TLSv1.3"), ("tls1_2", "TLSv1.2")] {
            let (ok, text) =
                s_client_request(listen, &[&format!("-{v}"), "-sess_in", p(&session(v))]);
            assert!(
                ok && text.contains(&format!("Reused, {name}")),
                "{who}: the {name} session did not resume:\n{text}"
            );
        }
    };
    resumes("the first instance");

    let mut second = sluice(&dir, "sluice-2", &path, &control, true);
    wait_log(&mut second, "sluice ready", Duration::from_secs(20));
    assert!(wait_exit(&mut first, Duration::from_secs(15)).success());
    resumes("the upgraded instance");
    assert!(
        second
            .log_text()
            .contains("took over the session-ticket keys"),
        "{}",
        second.log_text()
    );

    std::fs::write(&path, yaml("v2")).unwrap();
    let (status, body) = http_request(addr(admin), "POST", "/reload");
    assert_eq!(status, 200, "{body}");
    resumes("the upgraded instance after a reload");

    // Stricter admission rules: the tickets of the old rules are not honoured.
    let stricter = yaml("v3").replace(
        "tls: { certificates:",
        &format!(
            "tls: {{ client_ca: {}, require_client_certificate: false, verify_subject_alt_names: [ spiffe://x ], certificates:",
            p(&ca.pem)
        ),
    );
    std::fs::write(&path, stricter).unwrap();
    let (status, body) = http_request(addr(admin), "POST", "/reload");
    assert_eq!(status, 200, "{body}");
    let (ok, text) = s_client_request(listen, &["-tls1_3", "-sess_in", p(&session("tls1_3"))]);
    assert!(ok && text.contains("New, TLSv1.3"), "{text}");
    // The key material never reaches the log.
    assert!(
        !second.log_text().contains("secret"),
        "{}",
        second.log_text()
    );
    second.signal("TERM");
    assert!(wait_exit(&mut second, Duration::from_secs(15)).success());
}
