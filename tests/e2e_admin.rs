//! End-to-end tests of the admin API of the `sluice` binary: traffic through an HTTP listener
//! to an nginx upstream, then the counters (`/stats`, `/stats/prometheus`), the cluster view,
//! the config dump and the HTML index read back through the admin port with curl; `/ready`
//! transitions (health-check override, SIGTERM drain), `/drain_listeners`, `/quitquitquit`,
//! 405 on a GET of a mutation, and SIGUSR1 reopening the access log after rotation.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use support::*;

/// One admin request through curl: (status, body).
fn admin(method: &str, port: u16, path: &str) -> (u16, String) {
    require("curl");
    let url = format!("http://127.0.0.1:{port}{path}");
    let out = run(
        "curl",
        &[
            "-sS",
            "-g",
            "--max-time",
            "10",
            "-X",
            method,
            "-w",
            "\n%{http_code}",
            &url,
        ],
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, status) = text
        .rsplit_once('\n')
        .unwrap_or_else(|| panic!("no status from curl for {path}: {text:?}"));
    let status = status
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("bad status for {path}: {text:?}"));
    (status, body.to_owned())
}

fn get(port: u16, path: &str) -> (u16, String) {
    admin("GET", port, path)
}

fn post(port: u16, path: &str) -> (u16, String) {
    admin("POST", port, path)
}

/// Polls `check` for up to 10 s.
fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let end = Instant::now() + Duration::from_secs(10);
    while Instant::now() < end {
        if check() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("not within 10 s: {what}");
}

fn wait_ready(port: u16) {
    eventually("/ready answers 200", || get(port, "/ready").0 == 200);
}

/// The value of one Prometheus sample line `name{labels} value`.
fn sample(text: &str, series: &str) -> u64 {
    let prefix = format!("{series} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no sample {series} in:\n{text}"))
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("sample {series} is not a whole number"))
}

fn http_config(listen: u16, admin_port: u16, upstream: u16, dead: u16) -> String {
    format!(
        r#"
admin: {{ address: 127.0.0.1:{admin_port} }}
listeners:
  - name: http_in
    address: 127.0.0.1:{listen}
    http:
      virtual_hosts:
        - name: any
          domains: ["*"]
          routes:
            - match: {{ path: /teapot }}
              direct_response: {{ status: 418, body: "short and stout\n" }}
            - match: {{ prefix: /dead/ }}
              route:
                cluster: dead
                retry_policy: {{ retry_on: [connect-failure], num_retries: 2 }}
            - match: {{ prefix: / }}
              route: {{ cluster: app }}
clusters:
  - name: app
    connect_timeout: 1s
    hosts:
      - {{ address: 127.0.0.1:{upstream}, weight: 3 }}
  - name: dead
    connect_timeout: 1s
    hosts:
      - {{ address: 127.0.0.1:{dead} }}
drain_timeout: 2s
"#
    )
}

fn echo_config(listen: u16, admin_port: u16, drain: &str) -> String {
    format!(
        r#"
admin: {{ address: 127.0.0.1:{admin_port} }}
listeners:
  - name: echo_in
    address: 127.0.0.1:{listen}
    echo: {{}}
drain_timeout: {drain}
"#
    )
}

#[test]
fn counters_clusters_config_dump_and_index_after_traffic() {
    if !require_peers(&["curl", "nginx"]) {
        return;
    }
    let dir = TempDir::new("admin-traffic");
    let (listen, admin_port) = (free_port(), free_port());
    let (up, dead) = (free_port(), free_port());
    let _nginx = start_nginx(&dir, "nginx", up, "from nginx");
    let config = http_config(listen, admin_port, up, dead);
    let _sluice = start_sluice(&dir, &config, 2, addr(listen));
    wait_ready(admin_port);

    // 20 proxied requests, each on its own connection, and 2 direct 418s on one connection.
    for i in 0..20 {
        let url = format!("http://127.0.0.1:{listen}/item/{i}");
        let out = run("curl", &["-sS", "--max-time", "10", &url]);
        assert_eq!(String::from_utf8_lossy(&out.stdout), "from nginx");
    }
    let teapot = format!("http://127.0.0.1:{listen}/teapot");
    let out = run(
        "curl",
        &[
            "-sS",
            "--max-time",
            "10",
            "-o",
            "/dev/null",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}\n",
            &teapot,
            &teapot,
        ],
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "418\n418\n");
    // One request to a cluster whose only host refuses: 1 try + 2 retries, then 502.
    let url = format!("http://127.0.0.1:{listen}/dead/x");
    let out = run(
        "curl",
        &[
            "-sS",
            "--max-time",
            "10",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            &url,
        ],
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "502");

    // Connections close as curl exits; wait until the workers have seen every close.
    eventually("downstream connections all closed", || {
        let (_, p) = get(admin_port, "/stats/prometheus");
        sample(&p, "sluice_downstream_cx_active{listener=\"http_in\"}") == 0
    });
    let (status, p) = get(admin_port, "/stats/prometheus");
    assert_eq!(status, 200);
    assert!(
        p.contains("# TYPE sluice_http_requests_total counter\n"),
        "{p}"
    );
    assert!(p.contains("# HELP sluice_http_requests_total "), "{p}");
    assert_eq!(
        sample(&p, "sluice_http_requests_total{listener=\"http_in\"}"),
        23
    );
    assert_eq!(
        sample(
            &p,
            "sluice_http_responses_total{listener=\"http_in\",class=\"2xx\"}"
        ),
        20
    );
    assert_eq!(
        sample(
            &p,
            "sluice_http_responses_total{listener=\"http_in\",class=\"4xx\"}"
        ),
        2
    );
    assert_eq!(
        sample(
            &p,
            "sluice_http_responses_total{listener=\"http_in\",class=\"5xx\"}"
        ),
        1
    );
    assert_eq!(
        sample(&p, "sluice_http_local_replies_total{listener=\"http_in\"}"),
        1
    );
    // 20 + 1 + 1 curl connections, and the start-up probe that waited for the listener.
    assert_eq!(
        sample(&p, "sluice_downstream_cx_total{listener=\"http_in\"}"),
        23
    );
    assert!(
        sample(
            &p,
            "sluice_downstream_bytes_received_total{listener=\"http_in\"}"
        ) > 0
    );
    assert!(
        sample(
            &p,
            "sluice_downstream_bytes_sent_total{listener=\"http_in\"}"
        ) > 0
    );
    assert_eq!(
        sample(&p, "sluice_upstream_requests_total{cluster=\"app\"}"),
        20
    );
    assert_eq!(
        sample(&p, "sluice_upstream_retries_total{cluster=\"app\"}"),
        0
    );
    assert_eq!(
        sample(
            &p,
            "sluice_upstream_cx_connect_failures_total{cluster=\"app\"}"
        ),
        0
    );
    assert_eq!(
        sample(
            &p,
            "sluice_upstream_request_timeouts_total{cluster=\"app\"}"
        ),
        0
    );
    let dead_cluster = |name: &str| sample(&p, &format!("{name}{{cluster=\"dead\"}}"));
    assert_eq!(dead_cluster("sluice_upstream_requests_total"), 1);
    assert_eq!(dead_cluster("sluice_upstream_retries_total"), 2);
    assert_eq!(dead_cluster("sluice_upstream_cx_total"), 3);
    assert_eq!(dead_cluster("sluice_upstream_cx_connect_failures_total"), 3);
    let dead_host = |name: &str| {
        sample(
            &p,
            &format!("{name}{{cluster=\"dead\",host=\"127.0.0.1:{dead}\"}}"),
        )
    };
    assert_eq!(
        dead_host("sluice_upstream_host_cx_connect_failures_total"),
        3
    );
    assert_eq!(dead_host("sluice_upstream_host_requests_total"), 0);
    let host = format!("cluster=\"app\",host=\"127.0.0.1:{up}\"");
    assert_eq!(
        sample(
            &p,
            &format!("sluice_upstream_host_requests_total{{{host}}}")
        ),
        20
    );
    assert_eq!(
        sample(
            &p,
            &format!("sluice_upstream_host_requests_active{{{host}}}")
        ),
        0
    );
    // Kept alive in the workers' pools: one or two connections (one per worker that proxied).
    let cx_total = sample(&p, &format!("sluice_upstream_host_cx_total{{{host}}}"));
    assert!((1..=2).contains(&cx_total), "cx_total {cx_total}");
    assert_eq!(
        sample(&p, &format!("sluice_upstream_host_cx_active{{{host}}}")),
        cx_total
    );
    assert_eq!(
        sample(&p, "sluice_downstream_request_duration_seconds_count"),
        23
    );
    assert_eq!(
        sample(
            &p,
            "sluice_downstream_request_duration_seconds_bucket{le=\"+Inf\"}"
        ),
        23
    );
    assert_eq!(
        sample(&p, "sluice_upstream_request_duration_seconds_count"),
        20
    );
    assert!(p.contains("# TYPE sluice_upstream_request_duration_seconds histogram\n"));
    assert_eq!(sample(&p, "sluice_server_workers"), 2);
    assert_eq!(sample(&p, "sluice_server_live"), 1);

    // /stats: text, filter, json.
    let (status, text) = get(admin_port, "/stats");
    assert_eq!(status, 200);
    assert!(
        text.contains("listener.http_in.http.rq_2xx: 20\n"),
        "{text}"
    );
    assert!(
        text.contains("cluster.app.upstream_rq_total: 20\n"),
        "{text}"
    );
    let names: Vec<&str> = text
        .lines()
        .map(|l| l.split(": ").next().unwrap())
        .collect();
    let mut sorted = names.clone();
    sorted.sort_unstable();
    assert_eq!(names, sorted, "/stats is sorted");
    let (_, filtered) = get(
        admin_port,
        "/stats?filter=^cluster%5C.app%5C.upstream_rq_total$",
    );
    assert_eq!(filtered, "cluster.app.upstream_rq_total: 20\n");
    let (_, json) = get(admin_port, "/stats?format=json&filter=rq_4xx");
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(
        v,
        // The two 4xx were the proxy's own answers: no cluster saw a 4xx from its hosts.
        serde_json::json!({ "stats": [
            { "name": "cluster.app.upstream_rq_4xx", "value": 0 },
            { "name": "cluster.dead.upstream_rq_4xx", "value": 0 },
            { "name": "listener.http_in.http.rq_4xx", "value": 2 },
        ] })
    );
    assert_eq!(get(admin_port, "/stats?filter=(").0, 400);

    // /clusters, text and JSON.
    let (status, clusters) = get(admin_port, "/clusters");
    assert_eq!(status, 200);
    assert!(
        clusters.contains(&format!("app::127.0.0.1:{up}::weight::3\n")),
        "{clusters}"
    );
    assert!(
        clusters.contains(&format!("app::127.0.0.1:{up}::rq_total::20\n")),
        "{clusters}"
    );
    assert!(
        clusters.contains(&format!("app::127.0.0.1:{up}::health::healthy\n")),
        "{clusters}"
    );
    let (_, json) = get(admin_port, "/clusters?format=json");
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["clusters"][0]["name"], "app");
    assert_eq!(
        v["clusters"][0]["hosts"][0]["address"],
        format!("127.0.0.1:{up}")
    );
    assert_eq!(v["clusters"][0]["hosts"][0]["rq_active"], 0);

    // /config_dump.
    let (status, dump) = get(admin_port, "/config_dump");
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_str(&dump).unwrap();
    assert_eq!(v["listeners"][0]["name"], "http_in");
    assert_eq!(v["clusters"][0]["hosts"][0]["weight"], 3);
    assert_eq!(v["drain_timeout"], "2s");

    // /server_info.
    let (_, info) = get(admin_port, "/server_info");
    let v: serde_json::Value = serde_json::from_str(&info).unwrap();
    assert_eq!(v["state"], "LIVE");
    assert_eq!(v["workers"], 2);
    assert!(v["version"].is_string());

    // The index page: every endpoint linked, and one cluster table row per host.
    let (status, html) = get(admin_port, "/");
    assert_eq!(status, 200);
    for path in [
        "/ready",
        "/stats",
        "/stats/prometheus",
        "/clusters",
        "/config_dump",
    ] {
        assert!(
            html.contains(&format!("href=\"{path}\"")),
            "{path} not linked"
        );
    }
    for path in ["/healthcheck/fail", "/quitquitquit", "/drain_listeners"] {
        assert!(
            html.contains(&format!("action=\"{path}\"")),
            "{path} missing"
        );
    }
    let rows = table_rows(&html, "clusters");
    assert_eq!(
        rows[0],
        [
            "cluster",
            "host",
            "weight",
            "health",
            "outlier",
            "available",
            "active requests",
            "active connections",
            "requests",
            "idle HTTP/1.1 connections",
            "HTTP/2 connections",
            "HTTP/2 streams"
        ]
    );
    assert_eq!(rows.len(), 3, "{rows:?}");
    let row = &rows[1];
    assert_eq!(
        row[..7],
        [
            "app",
            &format!("127.0.0.1:{up}"),
            "3",
            "healthy",
            "none",
            "yes",
            "0"
        ]
    );
    assert_eq!(row[7], cx_total.to_string());
    assert_eq!(row[8], "20");
    // The pool's columns: an HTTP/1.1 cluster's idle connections (at most those it opened),
    // and no HTTP/2 connection or stream.
    let idle: u64 = row[9].parse().unwrap();
    assert!(idle <= cx_total, "{row:?}");
    assert_eq!(row[10..12], ["0", "0"]);
    assert_eq!(
        rows[2][..4],
        ["dead", &format!("127.0.0.1:{dead}"), "1", "healthy"]
    );

    // The log filter changes at runtime.
    assert_eq!(post(admin_port, "/logging?level=debug").0, 200);
    assert_eq!(post(admin_port, "/logging?level=%5B%5B").0, 400);
}

/// The cells of every row of `<table id="ID">` (header and data cells alike).
fn table_rows(html: &str, id: &str) -> Vec<Vec<String>> {
    let start = html
        .find(&format!("<table id=\"{id}\">"))
        .unwrap_or_else(|| panic!("no table {id} in {html}"));
    let end = start + html[start..].find("</table>").expect("table not closed");
    let cell = regex::Regex::new(r"<t[dh][^>]*>([^<]*)</t[dh]>").unwrap();
    html[start..end]
        .split("<tr>")
        .skip(1)
        .map(|row| {
            cell.captures_iter(row)
                .map(|c| c[1].to_owned())
                .collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn ready_follows_healthcheck_override_and_mutations_need_post() {
    if !require_peers(&["curl"]) {
        return;
    }
    let dir = TempDir::new("admin-ready");
    let (listen, admin_port) = (free_port(), free_port());
    let _sluice = start_sluice(
        &dir,
        &echo_config(listen, admin_port, "1s"),
        1,
        addr(listen),
    );
    wait_ready(admin_port);
    assert_eq!(get(admin_port, "/ready"), (200, "LIVE\n".to_owned()));
    let url = format!("http://127.0.0.1:{admin_port}/ready");
    let head = run("curl", &["-sS", "-I", &url]);
    let head = String::from_utf8_lossy(&head.stdout);
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(head.contains("content-length: 5\r\n"), "{head}");

    for path in [
        "/healthcheck/fail",
        "/healthcheck/ok",
        "/drain_listeners",
        "/quitquitquit",
        "/logging?level=debug",
    ] {
        assert_eq!(get(admin_port, path).0, 405, "GET {path}");
    }
    assert_eq!(post(admin_port, "/stats").0, 405);
    assert_eq!(get(admin_port, "/no_such_thing").0, 404);
    // Still live: none of the GETs did anything.
    assert_eq!(get(admin_port, "/ready").0, 200);

    assert_eq!(post(admin_port, "/healthcheck/fail").0, 200);
    assert_eq!(get(admin_port, "/ready"), (503, "FAILED\n".to_owned()));
    // Traffic still flows: failing the health check only takes the instance out of rotation.
    assert_eq!(
        echo_once(addr(listen), b"still here").unwrap(),
        b"still here"
    );
    assert_eq!(post(admin_port, "/healthcheck/ok").0, 200);
    assert_eq!(get(admin_port, "/ready").0, 200);
}

#[test]
fn sigterm_makes_ready_503_while_draining_then_exits_0() {
    if !require_peers(&["curl"]) {
        return;
    }
    let dir = TempDir::new("admin-sigterm");
    let (listen, admin_port) = (free_port(), free_port());
    let mut sluice = start_sluice(
        &dir,
        &echo_config(listen, admin_port, "20s"),
        2,
        addr(listen),
    );
    wait_ready(admin_port);

    // An open connection keeps the drain going.
    let mut held = TcpStream::connect(addr(listen)).unwrap();
    held.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    held.write_all(b"ping").unwrap();
    let mut got = [0u8; 4];
    held.read_exact(&mut got).unwrap();

    sluice.signal("TERM");
    eventually("/ready answers 503 while draining", || {
        get(admin_port, "/ready") == (503, "DRAINING\n".to_owned())
    });
    let (_, info) = get(admin_port, "/server_info");
    assert!(info.contains("\"state\": \"DRAINING\""), "{info}");
    assert!(
        sluice.child.try_wait().unwrap().is_none(),
        "exited while a connection was open"
    );
    // The held connection is still served while draining.
    held.write_all(b"pong").unwrap();
    held.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"pong");
    drop(held);

    let status = sluice
        .wait_exit(Duration::from_secs(10))
        .expect("sluice did not exit after its last connection closed");
    assert!(status.success(), "exit {status}:\n{}", sluice.log_text());
}

/// `/listeners` counts an open connection, `/memory` reads the process, `/help` lists every
/// endpoint, `/reset_counters` zeroes `/stats` counters (POST only) and leaves Prometheus
/// alone, and the page's `/logging` form sets the level it posts.
#[test]
fn listeners_memory_help_reset_counters_and_the_logging_form() {
    if !require_peers(&["curl"]) {
        return;
    }
    let dir = TempDir::new("admin-ops");
    let (listen, admin_port) = (free_port(), free_port());
    let _sluice = start_sluice(
        &dir,
        &echo_config(listen, admin_port, "1s"),
        2,
        addr(listen),
    );
    wait_ready(admin_port);
    let held = TcpStream::connect(addr(listen)).unwrap();
    eventually("/listeners counts the open connection", || {
        get(admin_port, "/listeners").1
            == format!(
                "echo_in::address::127.0.0.1:{listen}\necho_in::kind::echo\n\
                 echo_in::open_connections::1\n"
            )
    });
    let (status, memory) = get(admin_port, "/memory");
    assert_eq!(status, 200);
    let memory: serde_json::Value = serde_json::from_str(&memory).unwrap();
    assert!(
        memory["resident_bytes"].as_u64().unwrap() > 1_000_000,
        "{memory}"
    );
    let (status, help) = get(admin_port, "/help");
    assert_eq!(status, 200);
    for line in [
        "GET /listeners: ",
        "GET /memory: ",
        "POST /reset_counters: ",
        "GET /help: ",
    ] {
        assert!(help.contains(line), "{line} in:\n{help}");
    }
    assert_eq!(get(admin_port, "/reset_counters").0, 405);
    // (start_sluice's readiness probe was a connection too.)
    let stat = |name: &str| -> u64 {
        let stats = get(admin_port, "/stats").1;
        stats
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}: ")))
            .unwrap_or_else(|| panic!("no {name} in:\n{stats}"))
            .parse()
            .unwrap()
    };
    let total = "listener.echo_in.downstream_cx_total";
    let before = stat(total);
    assert!(before >= 1);
    assert_eq!(post(admin_port, "/reset_counters").0, 200);
    assert_eq!(stat(total), 0);
    assert_eq!(stat("listener.echo_in.downstream_cx_active"), 1, "a gauge");
    let prom = get(admin_port, "/stats/prometheus").1;
    assert_eq!(
        sample(&prom, "sluice_downstream_cx_total{listener=\"echo_in\"}"),
        before
    );
    let again = TcpStream::connect(addr(listen)).unwrap();
    eventually("counting goes on from 0", || stat(total) == 1);
    drop(again);
    assert!(
        prom.lines()
            .any(|l| l.starts_with("sluice_build_info{version=\"") && l.ends_with("} 1")),
        "{prom}"
    );
    assert!(sample(&prom, "process_open_fds") > 3);
    // The page's form, as a browser submits it.
    let out = run(
        "curl",
        &[
            "-sS",
            "--max-time",
            "10",
            "-w",
            "\n%{http_code}",
            "--data-urlencode",
            "level=warning",
            &format!("http://127.0.0.1:{admin_port}/logging"),
        ],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.ends_with("\n200"), "{text}");
    assert!(text.contains("log filter set to warn"), "{text}");
    drop(held);
}

#[test]
fn quitquitquit_drains_and_exits_0() {
    if !require_peers(&["curl"]) {
        return;
    }
    let dir = TempDir::new("admin-quit");
    let (listen, admin_port) = (free_port(), free_port());
    let mut sluice = start_sluice(
        &dir,
        &echo_config(listen, admin_port, "5s"),
        2,
        addr(listen),
    );
    wait_ready(admin_port);
    assert_eq!(post(admin_port, "/quitquitquit"), (200, "OK\n".to_owned()));
    let status = sluice
        .wait_exit(Duration::from_secs(10))
        .expect("sluice did not exit after /quitquitquit");
    assert!(status.success(), "exit {status}:\n{}", sluice.log_text());
    assert!(sluice.log_text().contains("/quitquitquit"));
}

#[test]
fn drain_listeners_stops_accepting_but_keeps_connections() {
    if !require_peers(&["curl"]) {
        return;
    }
    let dir = TempDir::new("admin-drain-listeners");
    let (listen, admin_port) = (free_port(), free_port());
    let _sluice = start_sluice(
        &dir,
        &echo_config(listen, admin_port, "5s"),
        2,
        addr(listen),
    );
    wait_ready(admin_port);
    let mut held = TcpStream::connect(addr(listen)).unwrap();
    held.set_read_timeout(Some(Duration::from_secs(5))).unwrap();

    assert_eq!(post(admin_port, "/drain_listeners").0, 200);
    eventually("new connections are refused", || {
        TcpStream::connect_timeout(&addr(listen), Duration::from_millis(200)).is_err()
    });
    assert_eq!(get(admin_port, "/ready").0, 503);
    held.write_all(b"still served").unwrap();
    let mut got = [0u8; 12];
    held.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"still served");
    let (_, p) = get(admin_port, "/stats/prometheus");
    assert_eq!(
        sample(&p, "sluice_downstream_cx_active{listener=\"echo_in\"}"),
        1
    );
}

#[test]
fn a_non_loopback_admin_address_must_be_allowed_explicitly() {
    let dir = TempDir::new("admin-open");
    let open = echo_config(free_port(), 9901, "1s").replace("127.0.0.1:9901", "0.0.0.0:9901");
    let path = dir.write("open.yaml", &open);
    let out = run(sluice_bin(), &["validate", "-c", path.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("admin.address: 0.0.0.0:9901 is not a loopback address"),
        "{err}"
    );
    let allowed = open.replace(
        "address: 0.0.0.0:9901 }",
        "address: 0.0.0.0:9901, allow_non_loopback: true }",
    );
    let path = dir.write("allowed.yaml", &allowed);
    let out = run(sluice_bin(), &["validate", "-c", path.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn sigusr1_reopens_access_logs_for_rotation() {
    if !require_peers(&["curl", "nginx"]) {
        return;
    }
    let dir = TempDir::new("admin-logrotate");
    let (listen, admin_port, up) = (free_port(), free_port(), free_port());
    let _nginx = start_nginx(&dir, "nginx", up, "from nginx");
    let log = dir.path().join("access.log");
    let config = http_config(listen, admin_port, up, free_port()).replace(
        "    http:\n",
        &format!(
            "    http:\n      access_log: {{ format: json, path: {} }}\n",
            log.display()
        ),
    );
    let sluice = start_sluice(&dir, &config, 1, addr(listen));
    wait_ready(admin_port);
    let lines = |p: &std::path::Path| {
        std::fs::read_to_string(p)
            .unwrap_or_default()
            .lines()
            .count()
    };
    let request = |path: &str| {
        let url = format!("http://127.0.0.1:{listen}{path}");
        let out = run("curl", &["-sS", "--max-time", "10", &url]);
        assert_eq!(String::from_utf8_lossy(&out.stdout), "from nginx");
    };
    request("/before");
    eventually("the first line is flushed", || lines(&log) == 1);

    // Rotate: move the file away, then tell sluice to reopen by path.
    let rotated = dir.path().join("access.log.1");
    std::fs::rename(&log, &rotated).unwrap();
    sluice.signal("USR1");
    eventually("sluice reopened the log", || log.exists());
    request("/after");
    eventually("the second line lands in the new file", || lines(&log) == 1);
    assert_eq!(lines(&rotated), 1);
    let new = std::fs::read_to_string(&log).unwrap();
    assert!(new.contains("/after"), "{new}");
    assert!(
        std::fs::read_to_string(&rotated)
            .unwrap()
            .contains("/before")
    );
    // Still serving, still live.
    assert_eq!(get(admin_port, "/ready").0, 200);
}

fn unix_admin_config(socket: &std::path::Path, mode: &str, listen: u16) -> String {
    format!(
        "admin: {{ path: {}, mode: {mode} }}\nlisteners:\n  - {{ name: echo, address: 127.0.0.1:{listen}, echo: {{}} }}\n",
        socket.display()
    )
}

#[test]
fn the_admin_api_on_a_unix_socket_answers_only_whom_its_mode_allows() {
    if !require_peers(&["curl", "setpriv"]) {
        return;
    }
    if !running_as_root() {
        return;
    }
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    require("curl");
    let dir = TempDir::new("admin-unix");
    // Others may traverse the directory (so that the mode alone decides), not write it.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let socket = dir.path().join("admin.sock");
    let listen = free_port();
    let mut sluice = start_sluice(
        &dir,
        &unix_admin_config(&socket, "0600", listen),
        1,
        addr(listen),
    );
    let meta = std::fs::symlink_metadata(&socket).unwrap();
    assert_eq!(meta.mode() & 0o777, 0o600);
    assert_eq!(meta.uid(), 0);
    // start_sluice returns once the listener accepts, a moment before the server is live
    // (as wait_ready does for a TCP admin address, wait for it).
    eventually("/ready answers 200 LIVE on the Unix socket", || {
        unix_http_request(&socket, "GET", "/ready") == (200, "LIVE\n".into())
    });
    let (status, info) = unix_http_request(&socket, "GET", "/server_info");
    assert_eq!(status, 200);
    assert!(
        info.contains(&format!("\"admin_address\": \"unix:{}\"", socket.display())),
        "{info}"
    );
    // Another local user cannot connect: no /quitquitquit for them.
    let url = "http://localhost/quitquitquit";
    let sock = socket.to_str().unwrap();
    let out = run_as_nobody("curl", &["-sS", "-X", "POST", "--unix-socket", sock, url]);
    assert_eq!(out.status.code(), Some(7), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Permission denied")
            || String::from_utf8_lossy(&out.stderr).contains("Couldn't connect"),
        "{out:?}"
    );
    assert_eq!(
        unix_http_request(&socket, "GET", "/ready"),
        (200, "LIVE\n".into())
    );
    // Its owner can; the socket file goes with the process.
    assert_eq!(
        unix_http_request(&socket, "POST", "/quitquitquit"),
        (200, "OK\n".into())
    );
    let status = sluice.wait_exit(Duration::from_secs(10));
    assert!(status.is_some_and(|s| s.success()), "{}", sluice.log_text());
    assert!(!socket.exists(), "the admin socket file was left behind");

    // A stale socket file of this user is replaced; with mode 0666 any user may connect.
    drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
    let mut sluice = start_sluice(
        &dir,
        &unix_admin_config(&socket, "0666", listen),
        1,
        addr(listen),
    );
    // The listener accepts a moment before the workers report live: wait out PRE_INITIALIZING.
    let ready = || {
        run_as_nobody(
            "curl",
            &["-sS", "--unix-socket", sock, "http://localhost/ready"],
        )
    };
    let mut out = ready();
    for _ in 0..100 {
        if String::from_utf8_lossy(&out.stdout) != "PRE_INITIALIZING\n" {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
        out = ready();
    }
    assert_eq!(String::from_utf8_lossy(&out.stdout), "LIVE\n", "{out:?}");
    // A second instance cannot take the live socket (nor remove it).
    let out = run(
        sluice_bin(),
        &[
            "run",
            "-c",
            dir.path().join("sluice.yaml").to_str().unwrap(),
            "--control-socket",
            dir.path().join("other.sock").to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "admin.path: cannot listen on {sock}: another process answers on this socket"
        )),
        "{err}"
    );
    assert_eq!(
        unix_http_request(&socket, "GET", "/ready"),
        (200, "LIVE\n".into())
    );
    sluice.signal("TERM");
    assert!(sluice.wait_exit(Duration::from_secs(10)).is_some());
}

/// The exit summary counts HTTP bytes too (it counted only TCP-proxy bytes: `bytes_in=0
/// bytes_out=0` after any number of HTTP requests), from the counters `/stats` shows.
#[test]
fn the_exit_summary_counts_http_bytes_as_stats_does() {
    let dir = TempDir::new("admin-exit-summary");
    let (listen, admin_port) = (free_port(), free_port());
    let mut sluice = start_sluice(
        &dir,
        &http_config(listen, admin_port, free_port(), free_port()),
        2,
        addr(listen),
    );
    wait_listening(addr(admin_port), &mut sluice);
    for _ in 0..5 {
        assert_eq!(http_request(addr(listen), "GET", "/teapot").0, 418);
    }
    let counter = |name: &str| -> u64 {
        let (_, stats) = http_request(
            addr(admin_port),
            "GET",
            &format!("/stats?filter=listener.http_in.{name}"),
        );
        stats
            .lines()
            .find(|l| l.starts_with(&format!("listener.http_in.{name}:")))
            .and_then(|l| l.split(": ").nth(1))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {stats}"))
    };
    let (received, sent) = (
        counter("downstream_bytes_received"),
        counter("downstream_bytes_sent"),
    );
    assert!(received > 0 && sent > 0, "{received} {sent}");
    sluice.signal("TERM");
    assert!(
        sluice
            .wait_exit(Duration::from_secs(10))
            .is_some_and(|s| s.success())
    );
    let log = sluice.log_text();
    let stopped = log
        .lines()
        .find(|l| l.contains("stopped"))
        .unwrap_or_else(|| panic!("no exit summary in {log}"));
    assert!(
        stopped.contains(&format!("bytes_in={received} bytes_out={sent}")),
        "{stopped}"
    );
}

/// `/config_dump` is a config: saved to a file it passes `sluice validate`, and a proxy run
/// from it behaves as the one it came from (the same answers on every route, the direct
/// response's body included).
#[test]
fn a_config_dump_validates_and_runs_the_same() {
    if !require_peers(&["curl", "nginx"]) {
        return;
    }
    let dir = TempDir::new("admin-dump-run");
    let (listen, admin_port) = (free_port(), free_port());
    let (up, dead) = (free_port(), free_port());
    let _nginx = start_nginx(&dir, "nginx", up, "from nginx");
    let answers = |listen: u16| -> Vec<(String, String)> {
        ["/teapot", "/item/1", "/dead/x"]
            .iter()
            .map(|path| {
                let url = format!("http://127.0.0.1:{listen}{path}");
                let out = run(
                    "curl",
                    &["-sS", "--max-time", "10", "-w", " %{http_code}", &url],
                );
                (
                    path.to_string(),
                    String::from_utf8_lossy(&out.stdout).into_owned(),
                )
            })
            .collect()
    };
    let mut first = start_sluice(
        &dir,
        &http_config(listen, admin_port, up, dead),
        1,
        addr(listen),
    );
    wait_ready(admin_port);
    let before = answers(listen);
    assert_eq!(before[0].1, "short and stout\n 418");
    assert_eq!(before[1].1, "from nginx 200");
    let (status, dump) = get(admin_port, "/config_dump");
    assert_eq!(status, 200);
    first.signal("TERM");
    assert!(
        first
            .wait_exit(Duration::from_secs(10))
            .is_some_and(|s| s.success())
    );

    let file = dir.write("dump.yaml", &dump);
    let out = run(sluice_bin(), &["validate", "-c", file.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let _second = start_sluice(&dir, &dump, 1, addr(listen));
    wait_ready(admin_port);
    assert_eq!(answers(listen), before);
    let (_, dump_again) = get(admin_port, "/config_dump");
    assert_eq!(dump_again, dump, "a dump of the dump is the dump");
}

/// A keep-alive HTTP/1.1 request on `s` (one of the test's client connections): the status.
fn keep_alive_get(s: &mut TcpStream, path: &str) -> u16 {
    s.write_all(format!("GET {path} HTTP/1.1\r\nhost: x\r\n\r\n").as_bytes())
        .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(s.read(&mut byte).unwrap(), 1, "the answer ended early");
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap();
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().unwrap())
        })
        .expect("a content-length");
    let mut body = vec![0; length];
    s.read_exact(&mut body).unwrap();
    head.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// `/clusters?format=json`'s pool numbers of cluster `app` and of its first host: `[cluster
/// http1_cx_idle, host http1_cx_idle, host cx_active]`.
fn http1_pool(admin_port: u16) -> [u64; 3] {
    let (_, json) = get(admin_port, "/clusters?format=json");
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let c = &v["clusters"][0];
    [
        c["pool"]["http1_cx_idle"].as_u64().unwrap(),
        c["hosts"][0]["http1_cx_idle"].as_u64().unwrap(),
        c["hosts"][0]["cx_active"].as_u64().unwrap(),
    ]
}

/// `/clusters` shows the HTTP/1.1 keep-alive pool: three requests in flight at once (three
/// client keep-alive connections) leave three upstream connections idle in the pool, per host
/// and for the cluster, in JSON, text and Prometheus; a request that reuses one takes it out
/// and puts it back (still three, not four); the idle sweep closes them, and the counts go
/// back to 0.
#[test]
fn clusters_show_the_http11_keep_alive_pool_until_the_idle_sweep() {
    let dir = TempDir::new("admin-pool-http1");
    let (listen, admin_port, up) = (free_port(), free_port(), free_port());
    let _up = start_py_upstream(&dir, "up", up);
    // The default idle timeout is 30 s: shorter here, so that the sweep is seen.
    let config = format!(
        r#"
admin: {{ address: 127.0.0.1:{admin_port} }}
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
    upstream_idle_timeout: 2s
    hosts: [ {{ address: 127.0.0.1:{up} }} ]
"#
    );
    let _s = start_sluice(&dir, &config, 1, addr(listen));
    wait_ready(admin_port);
    assert_eq!(http1_pool(admin_port), [0, 0, 0]);

    let mut clients: Vec<TcpStream> = (0..3)
        .map(|_| TcpStream::connect(addr(listen)).unwrap())
        .collect();
    for c in &clients {
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    }
    // Three at once: each needs its own upstream connection.
    std::thread::scope(|scope| {
        for c in &mut clients {
            scope.spawn(|| assert_eq!(keep_alive_get(c, "/sleep/300"), 200));
        }
    });
    eventually("three idle pooled connections", || {
        http1_pool(admin_port) == [3, 3, 3]
    });
    let (_, text) = get(admin_port, "/clusters");
    assert!(text.contains("app::pool::http1_cx_idle::3\n"), "{text}");
    assert!(
        text.contains(&format!("app::127.0.0.1:{up}::http1_cx_idle::3\n")),
        "{text}"
    );
    let (_, metrics) = get(admin_port, "/stats/prometheus");
    assert_eq!(
        sample(
            &metrics,
            &format!(
                "sluice_upstream_host_http1_cx_idle{{cluster=\"app\",host=\"127.0.0.1:{up}\"}}"
            )
        ),
        3
    );
    assert_eq!(
        sample(&metrics, "sluice_upstream_http1_cx_idle{cluster=\"app\"}"),
        3
    );

    // Reused: taken out for the request and put back after it.
    assert_eq!(keep_alive_get(&mut clients[0], "/again"), 200);
    eventually("still three idle", || http1_pool(admin_port) == [3, 3, 3]);

    // The idle sweep closes them (2 s idle timeout, a sweep every second).
    eventually("the sweep closed them", || {
        http1_pool(admin_port) == [0, 0, 0]
    });
}
