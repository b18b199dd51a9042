//! The admin page in a real browser: Debian's chromium, headless, driven over the DevTools
//! protocol by `tests/browser/admin_page.js` (puppeteer-core). The page must render the
//! listener and cluster tables as served, show each host's health, outlier state and
//! availability, refresh itself (requests sent after the page loaded appear without a
//! reload), and ask before `/quitquitquit`: dismissing the question leaves the proxy serving,
//! accepting it stops the process cleanly. A screenshot is kept in
//! `target/test-artifacts/admin-page.png`.

mod support;

use std::time::Duration;

use serde_json::Value;
use support::*;

/// A cell's text, from the `[{text, class}]` rows the script reports.
fn text(cell: &Value) -> &str {
    cell["text"].as_str().unwrap_or("")
}

fn class(cell: &Value) -> &str {
    cell["class"].as_str().unwrap_or("")
}

/// The rows of one table the script read, by the host (second column) for the cluster table
/// or the name (first column) for the listener table.
fn row<'a>(rows: &'a Value, column: usize, key: &str) -> &'a [Value] {
    rows.as_array()
        .into_iter()
        .flatten()
        .find(|r| text(&r[column]) == key)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_else(|| panic!("no row {key:?} in {rows}"))
}

#[test]
fn the_admin_page_renders_refreshes_itself_and_asks_before_quitting() {
    if !require_peers(&["nginx", "node", "chromium", "puppeteer-core"]) {
        return;
    }
    let dir = TempDir::new("admin-page");
    let (app, dead, ingress, db, admin) = (
        free_port(),
        free_port(),
        free_port(),
        free_port(),
        free_port(),
    );
    let _nginx = start_nginx(&dir, "app", app, "hello");
    // `dead` is a port nothing listens on: its health check fails, so it is unhealthy and not
    // available, and every request goes to nginx.
    let config = format!(
        "admin: {{ address: 127.0.0.1:{admin} }}\n\
         listeners:\n\
         - {{ name: ingress, address: 127.0.0.1:{ingress}, http: {{ virtual_hosts: [ {{ name: all, domains: [\"*\"], routes: [ {{ match: {{ prefix: / }}, route: {{ cluster: app }} }} ] }} ] }} }}\n\
         - {{ name: db, address: 127.0.0.1:{db}, tcp_proxy: {{ cluster: app }} }}\n\
         clusters:\n\
         - name: app\n\
        \x20 hosts: [ {{ address: 127.0.0.1:{app} }}, {{ address: 127.0.0.1:{dead} }} ]\n\
        \x20 health_check: {{ tcp: {{}}, interval: 200ms, timeout: 100ms, unhealthy_threshold: 1, healthy_threshold: 1 }}\n"
    );
    let mut sluice = start_sluice(&dir, &config, 2, addr(ingress));
    // Both health verdicts in before the page loads: one request per host would otherwise
    // depend on when the first probe ran.
    let cluster_ready = || {
        let (status, body) = http_request(addr(admin), "GET", "/clusters?format=json");
        status == 200 && {
            let v: Value = serde_json::from_str(&body).unwrap();
            let hosts = &v["clusters"][0]["hosts"];
            hosts[0]["health"] == "healthy" && hosts[1]["health"] == "unhealthy"
        }
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !cluster_ready() {
        assert!(
            std::time::Instant::now() < deadline,
            "health checks never settled"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    let artifacts = repo().join("target/test-artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    let screenshot = artifacts.join("admin-page.png");
    let _ = std::fs::remove_file(&screenshot);
    let requests = 7;
    let out = std::process::Command::new("node")
        .current_dir(repo().join("tests/browser"))
        .args([
            "admin_page.js",
            &format!("http://127.0.0.1:{admin}/"),
            &format!("http://127.0.0.1:{ingress}/"),
            &requests.to_string(),
            screenshot.to_str().unwrap(),
        ])
        .output()
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report: Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!(
            "no JSON from admin_page.js ({e}): {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert!(
        report.get("error").is_none(),
        "the browser script failed: {report:#}"
    );
    assert_eq!(report["title"], "Sluice admin");

    // As served: both listeners with their address and kind, both hosts with their state.
    for tables in [&report["served"], &report["refreshed"]] {
        let listeners = &tables["listeners"];
        let l = row(listeners, 0, "ingress");
        assert_eq!(
            [text(&l[1]), text(&l[2])],
            [format!("127.0.0.1:{ingress}").as_str(), "http"]
        );
        let l = row(listeners, 0, "db");
        assert_eq!(text(&l[2]), "tcp_proxy");
        let clusters = &tables["clusters"];
        let up = row(clusters, 1, &format!("127.0.0.1:{app}"));
        assert_eq!(text(&up[0]), "app");
        assert_eq!([text(&up[3]), class(&up[3])], ["healthy", "healthy"]);
        assert_eq!(text(&up[4]), "none");
        assert_eq!([text(&up[5]), class(&up[5])], ["yes", "healthy"]);
        let down = row(clusters, 1, &format!("127.0.0.1:{dead}"));
        assert_eq!(
            [text(&down[3]), class(&down[3])],
            ["unhealthy", "unhealthy"]
        );
        assert_eq!([text(&down[5]), class(&down[5])], ["no", "unhealthy"]);
    }
    // Served before any request; refreshed by the page itself after the requests.
    let requests_of = |tables: &Value, host: u16| -> u64 {
        text(&row(&tables["clusters"], 1, &format!("127.0.0.1:{host}"))[8])
            .parse()
            .unwrap()
    };
    assert_eq!(requests_of(&report["served"], app), 0);
    assert_eq!(report["statuses"], serde_json::json!(vec![200; requests]));
    assert_eq!(requests_of(&report["refreshed"], app), requests as u64);
    assert_eq!(requests_of(&report["refreshed"], dead), 0);
    // The upstream pool columns (`/clusters`' per-host fields): nothing pooled before any
    // request; after them, the HTTP/1.1 connection each worker that served one keeps idle
    // (two workers, requests one after the other), and no HTTP/2 connection or stream.
    let pool_of = |tables: &Value, host: u16| -> [u64; 3] {
        let r = row(&tables["clusters"], 1, &format!("127.0.0.1:{host}"));
        [9, 10, 11].map(|i| {
            text(&r[i])
                .parse()
                .unwrap_or_else(|_| panic!("column {i}: {r:?}"))
        })
    };
    assert_eq!(pool_of(&report["served"], app), [0, 0, 0]);
    assert_eq!(pool_of(&report["served"], dead), [0, 0, 0]);
    let [idle, h2_cx, h2_streams] = pool_of(&report["refreshed"], app);
    assert!((1..=2).contains(&idle), "idle HTTP/1.1 connections: {idle}");
    assert_eq!([h2_cx, h2_streams], [0, 0]);
    assert_eq!(pool_of(&report["refreshed"], dead), [0, 0, 0]);
    assert!(
        report["refresh_status"]
            .as_str()
            .is_some_and(|s| s.starts_with("refreshed at")),
        "{report:#}"
    );
    let png = std::fs::read(&screenshot).expect("a screenshot");
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 10_000,
        "{} bytes",
        png.len()
    );

    // The first press asked and was dismissed: nothing posted, the proxy still serves.
    let dialogs = report["dialogs"].as_array().unwrap();
    assert_eq!(dialogs.len(), 2, "{report:#}");
    for d in dialogs {
        assert_eq!(d["type"], "confirm");
        assert!(
            d["message"]
                .as_str()
                .unwrap()
                .starts_with("Stop this Sluice process?"),
            "{d}"
        );
    }
    assert_eq!(
        report["url_after_dismiss"],
        format!("http://127.0.0.1:{admin}/")
    );
    assert_eq!(report["proxy_after_dismiss"], 200);
    // The second was accepted: the form posted, the process drains and exits 0.
    assert_eq!(
        report["url_after_accept"],
        format!("http://127.0.0.1:{admin}/quitquitquit")
    );
    let status = sluice
        .wait_exit(Duration::from_secs(20))
        .expect("sluice exits after /quitquitquit");
    assert!(status.success(), "{status:?}\n{}", sluice.log_text());
}
