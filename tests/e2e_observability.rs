//! End-to-end tests of what an operator observes: access-log fields (request headers, the
//! routed cluster, retries) for HTTP/1.1 and HTTP/2 requests, against a real nginx upstream
//! and curl.

mod support;

use std::time::Duration;

use support::*;

fn curl(args: &[&str]) -> String {
    require("curl");
    let out = run("curl", &[&["-sS", "--max-time", "10"], args].concat());
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stop(mut s: Proc) {
    s.signal("TERM");
    assert!(
        s.wait_exit(Duration::from_secs(10))
            .is_some_and(|st| st.success()),
        "{}",
        s.log_text()
    );
}

/// `AUTHORITY`, `USER_AGENT`, `UPSTREAM_CLUSTER`, `RETRY_COUNT` and `%REQ(NAME)%` (with a
/// length limit) in a text line, for HTTP/1.1 and HTTP/2 (h2c) requests and for a request
/// whose tries all failed; the same facts as JSON keys, with `request_headers`.
#[test]
fn access_log_request_fields_text_and_json() {
    if !require_peers(&["curl", "nginx"]) {
        return;
    }
    let dir = TempDir::new("obs-access-fields");
    let (up, dead, text_port, json_port) = (free_port(), free_port(), free_port(), free_port());
    let _nginx = start_nginx(&dir, "up", up, "ok");
    let text_log = dir.path().join("text.log");
    let json_log = dir.path().join("json.log");
    let routes = r#"      virtual_hosts:
        - name: any
          domains: ["*"]
          routes:
            - match: { prefix: /dead }
              route:
                cluster: dead
                retry_policy: { retry_on: [connect-failure], num_retries: 2 }
            - match: { prefix: / }
              route: { cluster: app }
"#;
    let config = format!(
        r#"
listeners:
  - name: text_in
    address: 127.0.0.1:{text_port}
    http:
      access_log:
        path: {text_log}
        template: '%PROTOCOL% %PATH% %AUTHORITY% "%USER_AGENT%" %UPSTREAM_CLUSTER% %RETRY_COUNT% %REQ(X-TENANT)% %REQ(x-tenant):3% %REQ(X-NONE)% %STATUS% %RESPONSE_FLAGS%'
{routes}  - name: json_in
    address: 127.0.0.1:{json_port}
    http:
      access_log: {{ format: json, path: {json_log}, request_headers: [x-tenant, x-none] }}
{routes}clusters:
  - name: app
    hosts: [ {{ address: 127.0.0.1:{up} }} ]
  - name: dead
    connect_timeout: 500ms
    hosts: [ {{ address: 127.0.0.1:{dead} }} ]
"#,
        text_log = text_log.display(),
        json_log = json_log.display(),
    );
    let s = start_sluice(&dir, &config, 1, addr(text_port));
    let text = format!("http://127.0.0.1:{text_port}");
    let tenant = ["-A", "agent/1.0", "-H", "x-tenant: acme-corp"];
    assert_eq!(
        curl(&[&tenant[..], &[&format!("{text}/h1")]].concat()),
        "ok"
    );
    assert_eq!(
        curl(
            &[
                &tenant[..],
                &["--http2-prior-knowledge", &format!("{text}/h2")]
            ]
            .concat()
        ),
        "ok"
    );
    curl(&["-A", "agent/1.0", &format!("{text}/dead")]);
    let json = format!("http://127.0.0.1:{json_port}");
    assert_eq!(curl(&[&tenant[..], &[&format!("{json}/j")]].concat()), "ok");
    stop(s);

    let lines = std::fs::read_to_string(&text_log).unwrap();
    let lines: Vec<&str> = lines.lines().collect();
    let host = format!("127.0.0.1:{text_port}");
    assert_eq!(
        lines,
        [
            format!("HTTP/1.1 /h1 {host} \"agent/1.0\" app 0 acme-corp acm - 200 -"),
            format!("HTTP/2 /h2 {host} \"agent/1.0\" app 0 acme-corp acm - 200 -"),
            format!("HTTP/1.1 /dead {host} \"agent/1.0\" dead 2 - - - 502 UF"),
        ]
    );
    let line = std::fs::read_to_string(&json_log).unwrap();
    let v: serde_json::Value = serde_json::from_str(line.trim_end()).unwrap();
    assert_eq!(v["authority"], format!("127.0.0.1:{json_port}"));
    assert_eq!(v["user_agent"], "agent/1.0");
    assert_eq!(v["upstream_cluster"], "app");
    assert_eq!(v["retry_count"], 0);
    assert_eq!(v["request_headers"]["x-tenant"], "acme-corp");
    assert_eq!(v["request_headers"]["x-none"], serde_json::Value::Null);
    assert_eq!(v["status"], 200);
    assert_eq!(v["path"], "/j");
}
