//! End-to-end tests of `tracing`: trace headers continued (W3C `traceparent`, B3) or started
//! with the proxy's own span, the trace id in the access log, and the sampled spans exported
//! over OTLP/HTTP JSON to a collector — here a small OTLP receiver in the test that keeps what
//! arrives — with the defaults (5 s export interval), and a dead collector costing nothing but
//! counted spans.

mod support;

use std::time::Duration;

use serde_json::Value;
use support::otlp::{attribute, start_otlp_receiver};
use support::*;

/// The request headers the Python upstream saw (it answers them as JSON), sent with `headers`.
fn upstream_saw(port: u16, path: &str, headers: &[&str]) -> Value {
    require("curl");
    let mut args = vec!["-sS", "--max-time", "10"];
    for h in headers {
        args.extend(["-H", h]);
    }
    let url = format!("http://127.0.0.1:{port}{path}");
    args.push(&url);
    let out = run("curl", &args);
    let v: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&out.stdout)));
    let mut lower = serde_json::Map::new();
    for (k, val) in v["headers"].as_object().unwrap() {
        lower.insert(k.to_ascii_lowercase(), val.clone());
    }
    Value::Object(lower)
}

fn traceparent_parts(v: &Value) -> (String, String, String) {
    let tp = v["traceparent"].as_str().expect("a traceparent upstream");
    let parts: Vec<&str> = tp.split('-').collect();
    assert_eq!(parts.len(), 4, "{tp}");
    assert_eq!(parts[0], "00");
    (parts[1].into(), parts[2].into(), parts[3].into())
}

/// `extra`: more lines of the `tracing` block.
fn config(listen: u16, admin: u16, up: u16, collector: u16, log: &str, extra: &str) -> String {
    format!(
        r#"
admin: {{ address: 127.0.0.1:{admin} }}
listeners:
  - name: in
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
{extra}  otlp: {{ cluster: otel, service_name: checkout-sidecar }}
"#
    )
}

/// Every form of incoming context is continued with a new span of the proxy's, a request
/// without one starts a trace, a malformed header is counted and replaced, a `00` decision is
/// kept (propagated, not exported); the exported spans (default batching) match what went
/// upstream and what the access log says.
#[test]
fn trace_headers_are_continued_or_started_and_sampled_spans_reach_the_collector() {
    if !require_peers(&["curl", "python3"]) {
        return;
    }
    let dir = TempDir::new("tracing");
    let (listen, admin, up, collector) = (free_port(), free_port(), free_port(), free_port());
    let spans = start_otlp_receiver(collector);
    let _up = start_py_upstream(&dir, "up", up);
    let log = dir.path().join("access.log");
    let cfg = config(listen, admin, up, collector, &log.display().to_string(), "");
    let s = start_sluice(&dir, &cfg, 2, addr(listen));

    // W3C, sampled, with vendor state.
    let w3c_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let w3c = upstream_saw(
        listen,
        "/w3c",
        &[
            &format!("traceparent: 00-{w3c_trace}-00f067aa0ba902b7-01"),
            "tracestate: vendor=opaque",
        ],
    );
    let (t, w3c_span, flags) = traceparent_parts(&w3c);
    assert_eq!((t.as_str(), flags.as_str()), (w3c_trace, "01"));
    assert_ne!(
        w3c_span, "00f067aa0ba902b7",
        "the proxy's own span goes upstream"
    );
    assert_eq!(w3c["tracestate"], "vendor=opaque");

    // None: a new trace, sampled at the default 100 %.
    let fresh = upstream_saw(listen, "/fresh", &[]);
    let (fresh_trace, fresh_span, flags) = traceparent_parts(&fresh);
    assert_eq!(flags, "01");
    assert_ne!(fresh_trace, "0".repeat(32));

    // B3 (multi): continued in B3 and in traceparent.
    let b3 = upstream_saw(
        listen,
        "/b3",
        &[
            "x-b3-traceid: 463ac35c9f6413ad48485a3953bb6124",
            "x-b3-spanid: a2fb4a1d1a96d312",
            "x-b3-sampled: 1",
        ],
    );
    assert_eq!(b3["x-b3-traceid"], "463ac35c9f6413ad48485a3953bb6124");
    assert_eq!(b3["x-b3-parentspanid"], "a2fb4a1d1a96d312");
    let b3_span = b3["x-b3-spanid"].as_str().unwrap().to_owned();
    assert_ne!(b3_span, "a2fb4a1d1a96d312");
    let (t, s_id, _) = traceparent_parts(&b3);
    assert_eq!(
        (t.as_str(), s_id.as_str()),
        ("463ac35c9f6413ad48485a3953bb6124", &*b3_span)
    );

    // Malformed: replaced by a new trace (and its tracestate dropped), counted.
    let bad = upstream_saw(
        listen,
        "/bad",
        &["traceparent: 00-XYZ-00f067aa0ba902b7-01", "tracestate: a=b"],
    );
    let (bad_trace, _, _) = traceparent_parts(&bad);
    assert_eq!(bad.get("tracestate"), None);
    assert_eq!(admin_stat(admin, "tracing.malformed_headers"), 1);

    // Not sampled by the caller: propagated as such, not exported.
    let unsampled = upstream_saw(
        listen,
        "/unsampled",
        &[&format!("traceparent: 00-{w3c_trace}-1111111111111111-00")],
    );
    assert_eq!(traceparent_parts(&unsampled).2, "00");

    // Four sampled spans reach the collector within the default export interval.
    assert!(
        eventually(Duration::from_secs(20), || {
            admin_stat(admin, "tracing.spans_exported") == 4
        }),
        "exported {}, failed {}",
        admin_stat(admin, "tracing.spans_exported"),
        admin_stat(admin, "tracing.spans_export_failed")
    );
    assert_eq!(admin_stat(admin, "tracing.spans_sampled"), 4);
    let got = spans.lock().unwrap().clone();
    let mut by_path = std::collections::HashMap::new();
    for (line, doc) in &got {
        assert_eq!(line, "POST /v1/traces HTTP/1.1 application/json");
        let rs = &doc["resourceSpans"][0];
        assert_eq!(
            rs["resource"]["attributes"][0],
            serde_json::json!({"key": "service.name", "value": {"stringValue": "checkout-sidecar"}})
        );
        for span in rs["scopeSpans"][0]["spans"].as_array().unwrap() {
            let path = attribute(span, "url.path").unwrap()["stringValue"]
                .as_str()
                .unwrap()
                .to_owned();
            by_path.insert(path, span.clone());
        }
    }
    assert_eq!(by_path.len(), 4, "{by_path:?}");
    let w = &by_path["/w3c"];
    assert_eq!(
        (&w["traceId"], &w["spanId"], &w["parentSpanId"]),
        (
            &Value::from(w3c_trace),
            &Value::from(w3c_span.as_str()),
            &Value::from("00f067aa0ba902b7")
        )
    );
    assert_eq!(w["name"], "GET");
    let f = &by_path["/fresh"];
    assert_eq!(
        (&f["traceId"], &f["spanId"]),
        (
            &Value::from(fresh_trace.as_str()),
            &Value::from(fresh_span.as_str())
        )
    );
    assert_eq!(
        f.get("parentSpanId"),
        None,
        "a trace started here has no parent"
    );
    assert_eq!(by_path["/b3"]["parentSpanId"], "a2fb4a1d1a96d312");
    assert_eq!(by_path["/bad"]["traceId"], Value::from(bad_trace.as_str()));
    assert!(!by_path.contains_key("/unsampled"));
    let status =
        attribute(&by_path["/w3c"], "http.response.status_code").unwrap()["intValue"].clone();
    assert_eq!(status, "200");

    // The access log carries each request's trace id.
    stop_gracefully(s, Duration::from_secs(15));
    let lines = std::fs::read_to_string(&log).unwrap();
    let ids: std::collections::HashMap<String, String> = lines
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            (
                v["path"].as_str().unwrap().to_owned(),
                v["trace_id"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(ids["/w3c"], w3c_trace);
    assert_eq!(ids["/fresh"], fresh_trace);
    assert_eq!(ids["/unsampled"], w3c_trace);
}

/// `sampling: 0` starts unsampled traces (headers still go upstream, flag 00); a collector
/// that is down loses the sampled spans, counted, and never a request.
#[test]
fn zero_sampling_exports_nothing_and_a_dead_collector_only_costs_spans() {
    if !require_peers(&["curl", "python3"]) {
        return;
    }
    let dir = TempDir::new("tracing-dead");
    let (listen, admin, up, collector) = (free_port(), free_port(), free_port(), free_port());
    let _up = start_py_upstream(&dir, "up", up);
    let log = dir.path().join("access.log");
    // Nothing listens on `collector`.
    let cfg = config(
        listen,
        admin,
        up,
        collector,
        &log.display().to_string(),
        "  sampling: 0\n",
    );
    let s = start_sluice(&dir, &cfg, 1, addr(listen));
    for _ in 0..3 {
        let v = upstream_saw(listen, "/x", &[]);
        assert_eq!(traceparent_parts(&v).2, "00");
    }
    // A caller's decision to sample is kept at 0 %: three spans, for a dead collector.
    for _ in 0..3 {
        let v = upstream_saw(
            listen,
            "/y",
            &["traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"],
        );
        assert_eq!(traceparent_parts(&v).2, "01");
    }
    assert!(
        eventually(Duration::from_secs(20), || {
            admin_stat(admin, "tracing.spans_export_failed") == 3
        }),
        "failed {}",
        admin_stat(admin, "tracing.spans_export_failed")
    );
    assert_eq!(admin_stat(admin, "tracing.spans_sampled"), 3);
    assert_eq!(admin_stat(admin, "tracing.spans_exported"), 0);
    stop_gracefully(s, Duration::from_secs(15));
}
