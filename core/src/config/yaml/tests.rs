use super::*;
use crate::config::{HashPolicy, HealthProbe, OriginalDst, RetryBudgetSettings};

const GOOD: &str = r#"
admin: { address: 127.0.0.1:9901 }
listeners:
  - name: tcp_in
    address: 127.0.0.1:10001
    tcp_proxy: { cluster: echo, idle_timeout: 300s }
clusters:
  - name: echo
    connect_timeout: 1s
    lb_policy: round_robin
    hosts:
      - { address: 127.0.0.1:7001 }
      - { address: 127.0.0.1:7002, weight: 2 }
"#;

fn errors(text: &str) -> Vec<String> {
    match Config::from_yaml(text) {
        Ok(c) => panic!("expected errors, got {c:?}"),
        Err(e) => e.0.iter().map(ToString::to_string).collect(),
    }
}

#[test]
fn parses_the_issue_example_with_defaults() {
    let c = Config::from_yaml(GOOD).unwrap();
    assert_eq!(
        c.admin.unwrap().tcp_address(),
        Some("127.0.0.1:9901".parse().unwrap())
    );
    assert_eq!(c.listeners.len(), 1);
    let ListenerFilter::TcpProxy(tp) = &c.listeners[0].filter else {
        panic!("not tcp_proxy")
    };
    assert_eq!(tp.cluster, "echo");
    assert_eq!(tp.cluster_index, 0);
    assert_eq!(tp.idle_timeout, Some(Duration::from_secs(300)));
    assert_eq!(tp.max_connect_attempts, DEFAULT_MAX_CONNECT_ATTEMPTS);
    let cl = &c.clusters[0];
    assert_eq!(cl.connect_timeout, Duration::from_secs(1));
    assert_eq!(cl.upstream_idle_timeout, DEFAULT_UPSTREAM_IDLE_TIMEOUT);
    assert_eq!(cl.lb_policy, LbPolicy::RoundRobin);
    assert_eq!(cl.hosts[0].weight, 1);
    assert_eq!(cl.hosts[1].weight, 2);
    assert_eq!(c.drain_timeout, DEFAULT_DRAIN_TIMEOUT);
}

#[test]
fn reports_every_problem_with_its_path() {
    let text = r#"
listeners:
  - name: tcp_in
    address: 127.0.0.1:99999
    tcp_proxy: { cluster: nowhere, idle_timeout: 5 parsecs }
  - name: tcp_in
    address: 127.0.0.1:10002
    echo: {}
    tpc_proxy: { cluster: c1 }
clusters:
  - name: c1
    connect_timeout: 0s
    upstream_idle_timeout: 0s
    lb_policy: fastest
    hosts:
      - { address: 10.0.0.1:80, weight: 0 }
      - { adress: 10.0.0.2:80 }
drain_timeout: 10
"#;
    let errs = errors(text);
    let expect = [
        r#"listeners[0].address: "127.0.0.1:99999" is not a socket address (port out of range)"#,
        r#"listeners[0].tcp_proxy.cluster: unknown cluster "nowhere" (known: c1)"#,
        r#"listeners[0].tcp_proxy.idle_timeout: "5 parsecs" has an unknown unit " parsecs" (expected a number and a unit: 250ms, 1s, 5m, 1h)"#,
        "listeners[1].tpc_proxy: unknown field (expected one of: name, address, protocol, tcp_proxy, echo, http, bolt, filter_chains, max_connections, tls, original_dst, use_original_dst, bind_to_port, listener_filters_timeout, continue_on_listener_filters_timeout, tls_inspector, http_inspector); did you mean 'tcp_proxy'?",
        "clusters[0].connect_timeout: must be greater than zero",
        "clusters[0].upstream_idle_timeout: must be greater than zero",
        r#"clusters[0].lb_policy: unknown value "fastest" (expected one of: round_robin, weighted_round_robin, random, least_request, ring_hash, maglev)"#,
        "clusters[0].hosts[0].weight: 0 is not a whole number from 1 to 1000",
        "clusters[0].hosts[1].address: missing (this field is required)",
        "clusters[0].hosts[1].adress: unknown field (expected one of: address, weight, priority, transport_socket_match, health); did you mean 'address'?",
        "drain_timeout: 10 has no unit (expected a number and a unit: 250ms, 1s, 5m, 1h)",
    ];
    for e in expect {
        assert!(errs.iter().any(|x| x == e), "missing {e:?} in {errs:#?}");
    }
    assert_eq!(errs.len(), expect.len(), "{errs:#?}");
}

#[test]
fn duplicates_are_named_with_the_first_use() {
    let text = r#"
listeners:
  - { name: a, address: 127.0.0.1:1000, echo: {} }
  - { name: a, address: 127.0.0.1:1000, echo: {} }
clusters:
  - { name: c, hosts: [ { address: 127.0.0.1:1 } ] }
  - { name: c, hosts: [ { address: 127.0.0.1:1 } ] }
"#;
    let errs = errors(text);
    assert_eq!(
        errs,
        [
            r#"clusters[1].name: duplicate name "c" (already used by clusters[0])"#,
            r#"listeners[1].name: duplicate name "a" (already used by listeners[0])"#,
            r#"listeners[1].address: duplicate address "127.0.0.1:1000" (already used by listeners[0])"#,
        ]
    );
}

/// Addresses that could not all listen: a wildcard next to a specific address on the same
/// port (`[::]` covers both families), and the admin API on a listener's address; both are
/// named. Different ports, and a specific IPv6 address next to `0.0.0.0`, are fine.
#[test]
fn overlapping_listener_and_admin_addresses_are_named() {
    let text = r#"
admin: { address: 127.0.0.1:1000 }
listeners:
  - { name: local, address: 127.0.0.1:1000, echo: {} }
  - { name: every, address: 0.0.0.0:1000, echo: {} }
  - { name: v6, address: "[::]:1001", echo: {} }
  - { name: v4, address: 127.0.0.2:1001, echo: {} }
  - { name: fine, address: 0.0.0.0:1002, echo: {} }
  - { name: also_fine, address: "[::1]:1002", echo: {} }
"#;
    assert_eq!(
        errors(text),
        [
            "listeners[1].address: 0.0.0.0:1000 overlaps listeners[0].address 127.0.0.1:1000 \
             (local): a wildcard address takes the port on every local address of its family, \
             so both cannot listen",
            "listeners[3].address: 127.0.0.2:1001 overlaps listeners[2].address [::]:1001 (v6): \
             a wildcard address takes the port on every local address of its family, so both \
             cannot listen",
            "admin.address: 127.0.0.1:1000 is also listeners[0].address (local): the admin API \
             needs an address of its own",
            "admin.address: 127.0.0.1:1000 overlaps listeners[1].address 0.0.0.0:1000 (every): \
             a wildcard address takes the port on every local address of its family, so both \
             cannot listen",
        ]
    );
}

#[test]
fn structural_problems() {
    assert_eq!(
        errors(""),
        ["config is empty (expected a mapping with `listeners` and `clusters`)"]
    );
    assert_eq!(errors("- 1\n- 2"), ["expected a mapping, found a list"]);
    assert_eq!(
        errors("clusters: []"),
        ["listeners: missing (this field is required)"]
    );
    assert_eq!(
        errors("listeners: []"),
        ["listeners: at least one listener is required"]
    );
    assert_eq!(
        errors("listeners: [ { name: x, address: 127.0.0.1:1 } ]"),
        [
            "listeners[0]: no filter: give one of `tcp_proxy`, `echo`, `http`, `bolt` (or `filter_chains`)"
        ]
    );
    assert_eq!(
        errors(
            "listeners: [ { name: x, address: 127.0.0.1:1, echo: {}, tcp_proxy: { cluster: c } } ]"
        ),
        [
            r#"listeners[0].tcp_proxy.cluster: unknown cluster "c" (no clusters are defined)"#,
            "listeners[0]: more than one filter: give exactly one of `tcp_proxy`, `echo`, `http`, `bolt` (or `protocol: auto` with `http` and `bolt`)",
        ]
    );
    assert_eq!(
        errors("listeners: [ { name: 'bad name', address: 127.0.0.1:1, echo: } ]"),
        [
            r#"listeners[0].name: "bad name" is not a valid name (1 to 128 characters: letters, digits, '_', '-', '.', ':', '|')"#
        ]
    );
    // `hosts` must be said; `hosts: []` is a cluster of no hosts (below).
    assert_eq!(
        errors(
            "listeners: [ { name: x, address: 127.0.0.1:1, echo: } ]\nclusters: [ { name: c } ]"
        ),
        ["clusters[0].hosts: missing (this field is required)"]
    );
}

/// `hosts: []`: a static cluster of no hosts (Envoy's STATIC cluster without endpoints,
/// istiod's `BlackHoleCluster`), which routes and TCP proxies may name; the clusters the xDS
/// client and the span exporter dial may not be one.
#[test]
fn a_static_cluster_may_have_no_hosts() {
    let c = Config::from_yaml(
        "listeners: [ { name: x, address: 127.0.0.1:1, tcp_proxy: { cluster: hole } } ]\n\
         clusters: [ { name: hole, hosts: [] } ]",
    )
    .expect("valid");
    assert_eq!(c.clusters[0].kind, ClusterKind::Static);
    assert!(c.clusters[0].hosts.is_empty());
    assert_eq!(
        errors(
            "listeners: []\nclusters: [ { name: hole, hosts: [] } ]\n\
             xds: { cluster: hole }"
        ),
        [
            r#"xds.cluster: cluster "hole" has no hosts: the management server's cluster needs one (its first host is dialled)"#
        ]
    );
    assert_eq!(
        errors(
            "listeners: [ { name: x, address: 127.0.0.1:1, echo: } ]\n\
             clusters: [ { name: hole, hosts: [] } ]\n\
             tracing: { otlp: { cluster: hole } }"
        ),
        ["tracing.otlp.cluster: the cluster has no hosts (`hosts: []`) to send spans to"]
    );
}

#[test]
fn yaml_syntax_errors_say_so() {
    let errs = errors("listeners: [ { name: x\n");
    assert_eq!(errs.len(), 1);
    assert!(errs[0].starts_with("not valid YAML: "), "{errs:?}");
    assert!(!errs[0].contains('\n'));
}

#[test]
fn zero_idle_timeout_disables_it() {
    let c = Config::from_yaml(&GOOD.replace("300s", "0")).unwrap();
    let ListenerFilter::TcpProxy(tp) = &c.listeners[0].filter else {
        panic!()
    };
    assert_eq!(tp.idle_timeout, None);
}

#[test]
fn config_dump_is_json_with_durations_as_written() {
    let c = Config::from_yaml(GOOD).unwrap();
    let v = serde_json::to_value(&c).unwrap();
    assert_eq!(v["clusters"][0]["connect_timeout"], "1s");
    assert_eq!(v["listeners"][0]["tcp_proxy"]["idle_timeout"], "5m");
    assert_eq!(v["listeners"][0]["address"], "127.0.0.1:10001");
}

#[test]
fn admin_defaults_to_loopback_only() {
    let c = Config::from_yaml(GOOD).unwrap();
    assert!(!c.admin.unwrap().allow_non_loopback);
    let ipv6 = GOOD.replace("127.0.0.1:9901", "\"[::1]:9901\"");
    assert!(Config::from_yaml(&ipv6).unwrap().admin.is_some());
}

#[test]
fn non_loopback_admin_must_be_allowed_explicitly() {
    let open = GOOD.replace("127.0.0.1:9901", "0.0.0.0:9901");
    let errs = errors(&open);
    assert_eq!(errs.len(), 1, "{errs:#?}");
    assert!(
        errs[0].starts_with("admin.address: 0.0.0.0:9901 is not a loopback address"),
        "{errs:?}"
    );
    assert!(errs[0].contains("allow_non_loopback: true"), "{errs:?}");

    let allowed = GOOD.replace(
        "admin: { address: 127.0.0.1:9901 }",
        "admin: { address: 0.0.0.0:9901, allow_non_loopback: true }",
    );
    let c = Config::from_yaml(&allowed).unwrap();
    let admin = c.admin.unwrap();
    assert_eq!(admin.tcp_address(), Some("0.0.0.0:9901".parse().unwrap()));
    assert!(admin.allow_non_loopback);

    let bad = GOOD.replace(
        "admin: { address: 127.0.0.1:9901 }",
        "admin: { address: 10.1.2.3:9901, allow_non_loopback: yes please }",
    );
    assert_eq!(
        errors(&bad),
        [r#"admin.allow_non_loopback: expected true or false, found a string"#]
    );
    let typo = GOOD.replace(
        "admin: { address: 127.0.0.1:9901 }",
        "admin: { address: 127.0.0.1:9901, allow_nonloopback: true }",
    );
    assert_eq!(
        errors(&typo),
        [
            "admin.allow_nonloopback: unknown field (expected one of: address, path, mode, allow_non_loopback); did you mean 'allow_non_loopback'?"
        ]
    );
}

const RESILIENT: &str = r#"
listeners:
  - name: tcp_in
    address: 127.0.0.1:10001
    tcp_proxy: { cluster: app }
clusters:
  - name: app
    connect_timeout: 500ms
    lb_policy: ring_hash
    hash_policy: [ { header: X-User-Id }, { source_ip: true } ]
    ring_hash: { minimum_ring_size: 4096 }
    health_check:
      http: { path: /health, expected_statuses: [200-299, 404] }
      interval: 5s
      timeout: 1s
      jitter: 10%
      unhealthy_threshold: 3
      healthy_threshold: 2
      no_traffic_interval: 60s
    outlier_detection:
      consecutive_5xx: 5
      consecutive_gateway_failure: 4
      consecutive_connect_failure: 3
      base_ejection_time: 30s
      max_ejection_time: 300s
      max_ejection_percent: 10
    circuit_breakers: { max_connections: 100, max_pending_requests: 50, max_requests: 200, max_retries: 3 }
    panic_threshold: 40%
    hosts: [ { address: 127.0.0.1:7001 } ]
  - name: plain
    health_check: { tcp: {} }
    hosts: [ { address: 127.0.0.1:7002 } ]
"#;

#[test]
fn parses_the_resilience_knobs_of_issue_5() {
    use crate::config::{CircuitBreakerSettings, HealthCheckSettings, OutlierSettings};
    let c = Config::from_yaml(RESILIENT).unwrap();
    let app = &c.clusters[0];
    assert_eq!(app.lb_policy, LbPolicy::RingHash);
    assert_eq!(
        app.hash_policy,
        vec![HashPolicy::Header("x-user-id".into()), HashPolicy::SourceIp]
    );
    assert_eq!(app.minimum_ring_size, 4096);
    let hc = app.health_check.as_ref().unwrap();
    assert_eq!(
        hc.probe,
        HealthProbe::Http {
            path: "/health".into(),
            host: None,
            expected_statuses: vec![(200, 299), (404, 404)],
        }
    );
    assert_eq!(hc.settings, HealthCheckSettings::default());
    assert_eq!(
        app.outlier_detection,
        Some(OutlierSettings {
            consecutive_gateway_failure: 4,
            consecutive_connect_failure: 3,
            ..OutlierSettings::default()
        })
    );
    assert_eq!(
        app.circuit_breakers,
        CircuitBreakerSettings {
            max_connections: 100,
            max_pending_requests: 50,
            max_requests: 200,
            max_retries: 3,
            retry_budget: None,
        }
    );
    assert_eq!(app.panic_threshold_percent, 40);
    // Defaults.
    let plain = &c.clusters[1];
    assert_eq!(plain.health_check.as_ref().unwrap().probe, HealthProbe::Tcp);
    assert_eq!(plain.outlier_detection, None);
    assert_eq!(plain.circuit_breakers, CircuitBreakerSettings::default());
    assert_eq!(plain.panic_threshold_percent, 50);
    assert_eq!(plain.minimum_ring_size, DEFAULT_MINIMUM_RING_SIZE);
    assert!(plain.hash_policy.is_empty());
}

#[test]
fn reports_every_resilience_mistake_with_its_path() {
    let text = r#"
listeners:
  - name: tcp_in
    address: 127.0.0.1:10001
    tcp_proxy: { cluster: app }
clusters:
  - name: app
    lb_policy: round_robin
    hash_policy: [ { header: x-user-id } ]
    health_check:
      http: { path: health, expected_statuses: [299-200, 700] }
      tcp: {}
      interval: 0s
      jitter: 150%
      unhealthy_threshold: 0
    outlier_detection: { base_ejection_time: 60s, max_ejection_time: 10s, max_ejection_percnt: 5 }
    circuit_breakers: { max_requests: -1 }
    panic_threshold: half
    hosts: [ { address: 127.0.0.1:7001 } ]
  - name: b
    lb_policy: maglev
    hash_policy: [ { header: "bad header" }, {}, { source_ip: false } ]
    health_check: { interval: 1s }
    hosts: [ { address: 127.0.0.1:7002 } ]
"#;
    let errs = errors(text);
    let expected = [
        "clusters[0].hash_policy: applies only to lb_policy ring_hash or maglev (this cluster uses round_robin)",
        "clusters[0].health_check: set only one of http, tcp, bolt, grpc",
        "clusters[0].health_check.interval: must be greater than zero",
        "clusters[0].health_check.jitter: \"150%\" is not a percentage from 0% to 100% (e.g. 10%)",
        "clusters[0].health_check.unhealthy_threshold: 0 is not a whole number from 1 to 1000",
        "clusters[0].outlier_detection.max_ejection_percnt: unknown field",
        "clusters[0].circuit_breakers.max_requests: -1 is not a whole number from 0 to 10000000",
        "clusters[0].panic_threshold: \"half\" is not a percentage from 0% to 100% (e.g. 10%)",
        "clusters[1].hash_policy[0].header: \"bad header\" is not a valid header name",
        "clusters[1].hash_policy[1]: expected one of: header, source_ip",
        "clusters[1].hash_policy[2].source_ip: must be true (leave the entry out instead)",
        "clusters[1].health_check: missing the probe: set one of http, tcp, bolt, grpc",
    ];
    for e in expected {
        assert!(
            errs.iter().any(|got| got.starts_with(e)),
            "missing {e:?} in {errs:#?}"
        );
    }
    // The http probe's own mistakes are reported too when it is the only probe.
    let errs = errors(
        r#"
clusters:
  - name: app
    health_check: { http: { path: health, expected_statuses: [299-200, 700] } }
    outlier_detection: { base_ejection_time: 60s, max_ejection_time: 10s }
    hosts: [ { address: 127.0.0.1:7001 } ]
"#,
    );
    for e in [
        "clusters[0].health_check.http.path: \"health\" is not a request path",
        "clusters[0].health_check.http.expected_statuses[0]: \"299-200\" is not a status",
        "clusters[0].health_check.http.expected_statuses[1]: 700 is not a status",
        "clusters[0].outlier_detection.max_ejection_time: 10s is shorter than base_ejection_time (1m)",
    ] {
        assert!(
            errs.iter().any(|got| got.starts_with(e)),
            "missing {e:?} in {errs:#?}"
        );
    }
}

#[test]
fn retry_budget_is_the_default_and_max_retries_selects_the_fixed_cap() {
    let config = |breakers: &str| {
        format!(
            r#"
listeners:
  - {{ name: l, address: 127.0.0.1:10001, tcp_proxy: {{ cluster: app }} }}
clusters:
  - name: app
    {breakers}
    hosts: [ {{ address: 127.0.0.1:7001 }} ]
"#
        )
    };
    let parsed = |text: String| Config::from_yaml(&text).unwrap().clusters[0].circuit_breakers;
    let default = parsed(config(""));
    assert_eq!(default.retry_budget, Some(RetryBudgetSettings::default()));
    assert_eq!(
        RetryBudgetSettings::default(),
        RetryBudgetSettings {
            budget_percent: 20,
            min_retries_per_second: 10,
            window: Duration::from_secs(10),
        }
    );
    assert_eq!(
        parsed(config("circuit_breakers: { max_requests: 9 }")).retry_budget,
        Some(RetryBudgetSettings::default()),
        "setting another breaker keeps the budget"
    );
    let fixed = parsed(config("circuit_breakers: { max_retries: 5 }"));
    assert_eq!((fixed.max_retries, fixed.retry_budget), (5, None));
    let tuned = parsed(config(
        "circuit_breakers: { retry_budget: { budget_percent: 50, min_retries_per_second: 0, window: 30s } }",
    ));
    assert_eq!(
        tuned.retry_budget,
        Some(RetryBudgetSettings {
            budget_percent: 50,
            min_retries_per_second: 0,
            window: Duration::from_secs(30),
        })
    );
    let partial = parsed(config("circuit_breakers: { retry_budget: { window: 5s } }"));
    assert_eq!(
        partial.retry_budget,
        Some(RetryBudgetSettings {
            window: Duration::from_secs(5),
            ..RetryBudgetSettings::default()
        })
    );

    let errs = errors(&config(
        "circuit_breakers: { max_retries: 3, retry_budget: {} }",
    ));
    assert_eq!(
        errs,
        [
            "clusters[0].circuit_breakers.retry_budget: cannot be combined with \
          clusters[0].circuit_breakers.max_retries: retries are capped either by the budget \
          (the default) or by a fixed max_retries"
        ]
    );
    let errs = errors(&config(
        "circuit_breakers: { retry_budget: { budget_percent: 1001, window: 1500ms, min_retry_concurrency: 3 } }",
    ));
    for e in [
        "clusters[0].circuit_breakers.retry_budget.budget_percent: 1001 is not a whole number from 0 to 1000",
        "clusters[0].circuit_breakers.retry_budget.window: must be a whole number of seconds from 1s to 60s, not 1500ms",
        "clusters[0].circuit_breakers.retry_budget.min_retry_concurrency: unknown field",
    ] {
        assert!(
            errs.iter().any(|got| got.starts_with(e)),
            "missing {e:?} in {errs:#?}"
        );
    }
    let errs = errors(&config(
        "circuit_breakers: { retry_budget: { window: 61s } }",
    ));
    assert_eq!(
        errs,
        [
            "clusters[0].circuit_breakers.retry_budget.window: must be a whole number of seconds from 1s to 60s, not 61s"
        ]
    );
}

#[test]
fn huge_rejected_values_are_elided_in_errors() {
    let huge = "x".repeat(5 * 1024 * 1024);
    let text = format!(
        "listeners:\n  - name: \"{huge}\"\n    address: \"{huge}\"\n    tcp_proxy: {{ cluster: echo }}\n    ? {huge}\n    : 1\nclusters:\n  - name: echo\n    lb_policy: \"{huge}\"\n    hosts: [{{ address: 127.0.0.1:7001 }}]\n"
    );
    let found = errors(&text);
    assert_eq!(
        found.len(),
        4,
        "{:?}",
        found
            .iter()
            .map(|e| &e[..e.len().min(400)])
            .collect::<Vec<_>>()
    );
    for e in &found {
        assert!(e.len() < 1024, "{} bytes: {}", e.len(), &e[..200]);
        assert!(e.contains("characters elided"), "{e}");
    }
    let all = found.join("\n");
    assert!(all.contains("listeners[0].name: \"xxx"), "{all}");
    assert!(
        all.contains("is not a valid name (1 to 128 characters"),
        "{all}"
    );
    assert!(all.contains("listeners[0].address"), "{all}");
    assert!(all.contains("unknown field (expected one of:"), "{all}");
    assert!(
        all.contains("clusters[0].lb_policy: unknown value"),
        "{all}"
    );
    // Short messages are untouched.
    assert!(
        errors(&GOOD.replace("10001", "99999"))
            .iter()
            .all(|e| !e.contains("elided"))
    );
}

#[test]
fn elide_keeps_both_ends_on_char_boundaries() {
    assert_eq!(decoder::elide("short", 10), "short");
    let s = "é".repeat(1000);
    let out = decoder::elide(&s, 100);
    assert!(out.starts_with("éé") && out.ends_with("éé"), "{out}");
    assert!(out.chars().count() <= 100, "{}", out.chars().count());
    assert!(out.contains("characters elided"), "{out}");
}

#[test]
fn admin_on_a_unix_socket_with_a_mode() {
    let unix = |admin: &str| GOOD.replace("admin: { address: 127.0.0.1:9901 }", admin);
    for (yaml, mode) in [
        ("admin: { path: /run/sluice/admin.sock, mode: 0600 }", 0o600),
        ("admin: { path: /run/sluice/admin.sock, mode: 0660 }", 0o660),
        (
            "admin: { path: /run/sluice/admin.sock, mode: \"0640\" }",
            0o640,
        ),
        (
            "admin: { path: /run/sluice/admin.sock, mode: \"0o644\" }",
            0o644,
        ),
        ("admin: { path: /run/sluice/admin.sock }", 0o600),
    ] {
        let c = Config::from_yaml(&unix(yaml)).unwrap_or_else(|e| panic!("{yaml}: {e}"));
        let admin = c.admin.unwrap();
        assert_eq!(
            admin.listen,
            AdminListen::Unix {
                path: "/run/sluice/admin.sock".into(),
                mode
            },
            "{yaml}"
        );
        assert_eq!(admin.tcp_address(), None);
        assert_eq!(admin.listen.to_string(), "unix:/run/sluice/admin.sock");
    }
    for (yaml, want) in [
        (
            "admin: { path: /a.sock, mode: 0800 }",
            "admin.mode: 800 is not a file mode (octal permission bits from 0000 to 0777, e.g. 0600)",
        ),
        (
            "admin: { path: /a.sock, mode: \"rw\" }",
            "admin.mode: \"rw\" is not a file mode",
        ),
        (
            "admin: { path: relative.sock }",
            "admin.path: \"relative.sock\" is not an absolute path",
        ),
        (
            "admin: { path: /a.sock, address: 127.0.0.1:9901 }",
            "admin.path: give either `address` (TCP) or `path` (a Unix socket), not both",
        ),
        (
            "admin: { mode: 0600 }",
            "admin.address: missing (give `address` for TCP, or `path` for a Unix socket)",
        ),
        (
            "admin: { address: 127.0.0.1:9901, mode: 0600 }",
            "admin.mode: `mode` applies to a Unix socket (`path`), not to `address`",
        ),
        (
            "admin: { path: /a.sock, allow_non_loopback: true }",
            "admin.allow_non_loopback: `allow_non_loopback` applies to `address`, not to `path`",
        ),
    ] {
        let errs = errors(&unix(yaml));
        assert_eq!(errs.len(), 1, "{yaml}: {errs:?}");
        assert!(errs[0].starts_with(want), "{yaml}: {errs:?}");
    }
}

#[test]
fn limits_default_and_parse() {
    let c = Config::from_yaml(GOOD).unwrap();
    assert_eq!(c.limits, LimitsConfig::default());
    assert_eq!(c.limits.max_connections, None);
    assert_eq!(
        c.limits.bolt_partial_frame_bytes,
        DEFAULT_BOLT_PARTIAL_FRAME_BYTES
    );
    assert_eq!(c.listeners[0].max_connections, None);
    let text = GOOD.replace(
        "    tcp_proxy: { cluster: echo, idle_timeout: 300s }",
        "    tcp_proxy: { cluster: echo, idle_timeout: 300s }\n    max_connections: 100",
    ) + "limits: { max_connections: 5000, bolt_partial_frame_bytes: 64MiB }\n";
    let c = Config::from_yaml(&text).unwrap();
    assert_eq!(c.listeners[0].max_connections, Some(100));
    assert_eq!(c.limits.max_connections, Some(5000));
    assert_eq!(c.limits.bolt_partial_frame_bytes, 64 << 20);
}

#[test]
fn tls_file_check_interval_defaults_to_5s_and_0s_turns_it_off() {
    let c = Config::from_yaml(GOOD).unwrap();
    assert_eq!(
        c.tls_file_check_interval,
        crate::config::DEFAULT_TLS_FILE_CHECK_INTERVAL
    );
    assert_eq!(c.tls_file_check_interval, Duration::from_secs(5));
    let c = Config::from_yaml(&format!("{GOOD}tls_file_check_interval: 250ms\n")).unwrap();
    assert_eq!(c.tls_file_check_interval, Duration::from_millis(250));
    let c = Config::from_yaml(&format!("{GOOD}tls_file_check_interval: 0s\n")).unwrap();
    assert_eq!(c.tls_file_check_interval, Duration::ZERO);
    assert_eq!(
        errors(&format!("{GOOD}tls_file_check_interval: 5\n")),
        [
            "tls_file_check_interval: 5 has no unit (expected a number and a unit: 250ms, 1s, 5m, 1h)"
        ]
    );
}

#[test]
fn limits_report_bad_values_with_their_paths() {
    let text = r#"
listeners:
  - name: rpc
    address: 127.0.0.1:10001
    max_connections: 0
    bolt:
      max_frame_size: 16MiB
      routes: [ { route: { cluster: c } } ]
clusters:
  - name: c
    hosts: [ { address: 127.0.0.1:7001 } ]
limits:
  max_connections: many
  bolt_partial_frame_bytes: 12 parsecs
  max_conections: 5
"#;
    let errs = errors(text);
    let expect = [
        "listeners[0].max_connections: 0 is not a whole number from 1 to 10000000",
        r#"limits.max_connections: "many" is not a whole number from 1 to 10000000"#,
        r#"limits.bolt_partial_frame_bytes: "12 parsecs" has an unknown unit "parsecs" (expected a number of bytes, or a number and a unit: 64KiB, 16MiB)"#,
        "limits.max_conections: unknown field (expected one of: max_connections, bolt_partial_frame_bytes); did you mean 'max_connections'?",
    ];
    for e in expect {
        assert!(errs.iter().any(|x| x == e), "missing {e:?} in {errs:#?}");
    }
    // A budget smaller than a listener's largest frame could never receive that frame.
    let text = r#"
listeners:
  - name: rpc
    address: 127.0.0.1:10001
    bolt:
      max_frame_size: 16MiB
      routes: [ { route: { cluster: c } } ]
clusters:
  - name: c
    hosts: [ { address: 127.0.0.1:7001 } ]
limits: { bolt_partial_frame_bytes: 8MiB }
"#;
    assert_eq!(
        errors(text),
        [
            "limits.bolt_partial_frame_bytes: 8388608 bytes is less than listeners[0].bolt.max_frame_size (16777216 bytes): such a frame could never be received"
        ]
    );
}

#[test]
fn bolt_timeouts_default_and_parse() {
    let config = |bolt: &str| {
        format!(
            r#"
listeners:
  - name: rpc
    address: 127.0.0.1:12200
    bolt: {{ {bolt} routes: [ {{ route: {{ cluster: c }} }} ] }}
clusters:
  - {{ name: c, hosts: [ {{ address: 127.0.0.1:7001 }} ] }}
"#
        )
    };
    let bolt_of = |c: &Config| match &c.listeners[0].filter {
        ListenerFilter::Bolt(b) => (b.frame_timeout, b.idle_timeout),
        other => panic!("{other:?}"),
    };
    let c = Config::from_yaml(&config("")).unwrap();
    assert_eq!(
        bolt_of(&c),
        (Duration::from_secs(10), Some(Duration::from_secs(3600)))
    );
    let c = Config::from_yaml(&config("frame_timeout: 2s, idle_timeout: 0s,")).unwrap();
    assert_eq!(bolt_of(&c), (Duration::from_secs(2), None));
    let errs = errors(&config("frame_timeout: 0s, idle_timeout: soon,"));
    for e in [
        "listeners[0].bolt.frame_timeout: must be greater than zero",
        "listeners[0].bolt.idle_timeout: \"soon\"",
    ] {
        assert!(
            errs.iter().any(|got| got.starts_with(e)),
            "missing {e:?} in {errs:#?}"
        );
    }
}

const SNI: &str = r#"
listeners:
  - name: tls_passthrough
    address: 127.0.0.1:8443
    tcp_proxy:
      cluster: fallback
      sni_routes:
        - { server_names: [API.example.com., "*.svc.example.com"], cluster: api }
        - { server_names: ["*.example.com", "*.eu.svc.example.com"], cluster: web }
clusters:
  - { name: fallback, hosts: [{ address: 127.0.0.1:9001 }] }
  - { name: api, hosts: [{ address: 127.0.0.1:9002 }] }
  - { name: web, hosts: [{ address: 127.0.0.1:9003 }] }
"#;

#[test]
fn sni_routes_decode_lowercased_with_a_default_timeout() {
    let c = Config::from_yaml(SNI).unwrap();
    let ListenerFilter::TcpProxy(tp) = &c.listeners[0].filter else {
        panic!("not tcp_proxy")
    };
    assert_eq!(tp.client_hello_timeout, DEFAULT_CLIENT_HELLO_TIMEOUT);
    assert_eq!(
        tp.sni_routes[0].server_names,
        ["api.example.com", "*.svc.example.com"]
    );
    assert_eq!(
        (
            tp.sni_routes[0].cluster_index,
            tp.sni_routes[1].cluster_index
        ),
        (1, 2)
    );
    // Without sni_routes nothing changes: no routes, the timeout unused.
    let ListenerFilter::TcpProxy(plain) = &Config::from_yaml(GOOD).unwrap().listeners[0].filter
    else {
        panic!("not tcp_proxy")
    };
    assert!(plain.sni_routes.is_empty());
}

#[test]
fn a_server_name_picks_exact_then_the_longest_wildcard_then_the_default() {
    let c = Config::from_yaml(SNI).unwrap();
    let ListenerFilter::TcpProxy(tp) = &c.listeners[0].filter else {
        panic!("not tcp_proxy")
    };
    let pick = |n: Option<&str>| tp.cluster_for_server_name(n);
    assert_eq!(pick(Some("api.example.com")), (1, true));
    assert_eq!(pick(Some("a.svc.example.com")), (1, true));
    // `*.eu.svc.example.com` (web) is longer than `*.svc.example.com` (api).
    assert_eq!(pick(Some("x.eu.svc.example.com")), (2, true));
    assert_eq!(pick(Some("a.b.example.com")), (2, true));
    // A wildcard needs a label before its suffix; other names and no name take the default.
    assert_eq!(pick(Some("example.com")), (0, false));
    assert_eq!(pick(Some("svc.example.com")), (2, true));
    assert_eq!(pick(Some("example.org")), (0, false));
    assert_eq!(pick(None), (0, false));
}

#[test]
fn bad_sni_routes_are_reported_where_they_are() {
    let text = r#"
listeners:
  - name: tls
    address: 127.0.0.1:8443
    tcp_proxy:
      cluster: a
      client_hello_timeout: 0s
      sni_routes:
        - { server_names: ["a.example", "w*.example", "bad name"], cluster: a }
        - { server_names: ["A.example"], cluster: nowhere }
        - { server_names: [], cluster: a }
clusters:
  - { name: a, hosts: [{ address: 127.0.0.1:9001 }] }
"#;
    let errs = errors(text);
    let want = [
        "listeners[0].tcp_proxy.client_hello_timeout: must be greater than zero",
        "listeners[0].tcp_proxy.sni_routes[0].server_names[1]: \"w*.example\" is not a server name (`*` only as the whole first label: `*.example.com`)",
        "listeners[0].tcp_proxy.sni_routes[0].server_names[2]: \"bad name\" is not a server name (letters, digits, `-`, `_` and dots only)",
        "listeners[0].tcp_proxy.sni_routes[1].cluster: unknown cluster \"nowhere\" (known: a)",
        "listeners[0].tcp_proxy.sni_routes[2].server_names: give at least one server name",
    ];
    for w in want {
        assert!(
            errs.iter().any(|e| e.starts_with(w)),
            "missing {w:?} in {errs:#?}"
        );
    }
    let dup = r#"
listeners:
  - name: tls
    address: 127.0.0.1:8443
    tcp_proxy:
      cluster: a
      sni_routes:
        - { server_names: ["a.example"], cluster: a }
        - { server_names: ["b.example", "A.Example."], cluster: a }
clusters:
  - { name: a, hosts: [{ address: 127.0.0.1:9001 }] }
"#;
    assert_eq!(
        errors(dup),
        [
            "listeners[0].tcp_proxy.sni_routes[1].server_names[1]: \"a.example\" is already routed at listeners[0].tcp_proxy.sni_routes[0].server_names[0]"
        ]
    );
}

#[test]
fn listener_tls_params_decode_and_refuse_what_cannot_be_negotiated() {
    use crate::config::tls::{EcdhCurve, TlsVersion};
    let good = r#"
listeners:
  - name: t
    address: 127.0.0.1:8443
    tls:
      certificates: [ { cert_chain: a.pem, private_key: a.key } ]
      max_version: 1.2
      ecdh_curves: [P-256, X25519]
      session_tickets: false
      session_cache: false
    tcp_proxy: { cluster: a }
  - name: d
    address: 127.0.0.1:8444
    tls: { certificates: [ { cert_chain: a.pem, private_key: a.key } ] }
    tcp_proxy: { cluster: a }
clusters:
  - { name: a, hosts: [{ address: 127.0.0.1:9001 }] }
"#;
    let c = Config::from_yaml(good).unwrap();
    let tls = c.listeners[0].tls.as_deref().unwrap();
    assert_eq!(tls.max_version, TlsVersion::Tls12);
    assert_eq!(tls.ecdh_curves, [EcdhCurve::P256, EcdhCurve::X25519]);
    assert!(!tls.session_tickets && !tls.session_cache);
    let defaults = c.listeners[1].tls.as_deref().unwrap();
    assert_eq!(defaults.max_version, TlsVersion::Tls13);
    assert!(defaults.ecdh_curves.is_empty() && defaults.session_tickets && defaults.session_cache);
    let bad = r#"
listeners:
  - name: t
    address: 127.0.0.1:8443
    tls:
      certificates: [ { cert_chain: a.pem, private_key: a.key } ]
      min_version: 1.3
      max_version: 1.2
      ecdh_curves: [X25519, secp256k1]
      session_tickets: sometimes
    tcp_proxy: { cluster: a }
  - name: u
    address: 127.0.0.1:8444
    tls:
      certificates: [ { cert_chain: a.pem, private_key: a.key } ]
      max_version: 1.2
      ecdh_curves: [X25519MLKEM768]
    tcp_proxy: { cluster: a }
  - name: e
    address: 127.0.0.1:8445
    tls: { certificates: [ { cert_chain: a.pem, private_key: a.key } ], ecdh_curves: [] }
    tcp_proxy: { cluster: a }
  - name: pq
    address: 127.0.0.1:8446
    tls: { certificates: [ { cert_chain: a.pem, private_key: a.key } ], ecdh_curves: [X25519MLKEM768] }
    tcp_proxy: { cluster: a }
  - name: pq13
    address: 127.0.0.1:8447
    tls: { certificates: [ { cert_chain: a.pem, private_key: a.key } ], ecdh_curves: [X25519MLKEM768], min_version: 1.3 }
    tcp_proxy: { cluster: a }
clusters:
  - { name: a, hosts: [{ address: 127.0.0.1:9001 }] }
"#;
    let errs = errors(bad);
    assert!(
        !errs.iter().any(|e| e.starts_with("listeners[4]")),
        "a TLS 1.3-only listener may accept only the hybrid: {errs:#?}"
    );
    for want in [
        "listeners[0].tls.max_version: 1.2 is below `min_version` (1.3)",
        "listeners[0].tls.ecdh_curves[1]: unknown curve \"secp256k1\" (expected one of X25519, P-256, P-384, X25519MLKEM768)",
        "listeners[0].tls.session_tickets:",
        "listeners[1].tls.ecdh_curves: X25519MLKEM768 is TLS 1.3 only and this listener admits TLS 1.2",
        "listeners[3].tls.ecdh_curves: X25519MLKEM768 is TLS 1.3 only and this listener admits TLS 1.2",
        "listeners[2].tls.ecdh_curves: must name at least one curve",
    ] {
        assert!(
            errs.iter().any(|e| e.starts_with(want)),
            "missing {want:?} in {errs:#?}"
        );
    }
}

#[test]
fn cipher_suites_decode_in_order_skip_what_rustls_lacks_and_refuse_the_rest() {
    use crate::config::tls::{CipherSuite, DEFAULT_CIPHER_SUITES, effective_cipher_suites};
    // Istio's inbound list (two RSA key exchange suites skipped), Envoy's default with its
    // equal-preference groups, TLS 1.3 names, and a cluster.
    let good = r#"
listeners:
  - name: istio
    address: 127.0.0.1:8443
    tls:
      certificates: [ { cert_chain: a.pem, private_key: a.key } ]
      cipher_suites: [ECDHE-ECDSA-AES256-GCM-SHA384, ECDHE-RSA-AES256-GCM-SHA384, ECDHE-ECDSA-AES128-GCM-SHA256, ECDHE-RSA-AES128-GCM-SHA256, AES256-GCM-SHA384, AES128-GCM-SHA256]
    tcp_proxy: { cluster: a }
  - name: envoy
    address: 127.0.0.1:8444
    tls:
      certificates: [ { cert_chain: a.pem, private_key: a.key } ]
      cipher_suites: ["[ECDHE-ECDSA-AES128-GCM-SHA256|ECDHE-ECDSA-CHACHA20-POLY1305]", ECDHE-ECDSA-AES256-GCM-SHA384]
    tcp_proxy: { cluster: a }
  - name: t13
    address: 127.0.0.1:8445
    tls:
      certificates: [ { cert_chain: a.pem, private_key: a.key } ]
      cipher_suites: [TLS_CHACHA20_POLY1305_SHA256, TLS_AES_256_GCM_SHA384]
      prefer_client_ciphers: true
    tcp_proxy: { cluster: a }
  - name: d
    address: 127.0.0.1:8446
    tls: { certificates: [ { cert_chain: a.pem, private_key: a.key } ] }
    tcp_proxy: { cluster: a }
clusters:
  - { name: a, hosts: [{ address: 127.0.0.1:9001 }], tls: { ca: ca.pem, sni: a.example, cipher_suites: [TLS_AES_256_GCM_SHA384] } }
"#;
    let c = Config::from_yaml(good).unwrap();
    let tls = |i: usize| c.listeners[i].tls.as_deref().unwrap().cipher_suites.clone();
    use CipherSuite as S;
    assert_eq!(
        tls(0),
        [
            S::EcdheEcdsaAes256GcmSha384,
            S::EcdheRsaAes256GcmSha384,
            S::EcdheEcdsaAes128GcmSha256,
            S::EcdheRsaAes128GcmSha256
        ]
    );
    assert_eq!(
        tls(1),
        [
            S::EcdheEcdsaAes128GcmSha256,
            S::EcdheEcdsaChacha20Poly1305,
            S::EcdheEcdsaAes256GcmSha384
        ]
    );
    assert!(tls(3).is_empty());
    assert!(c.listeners[2].tls.as_deref().unwrap().prefer_client_ciphers);
    assert!(!c.listeners[3].tls.as_deref().unwrap().prefer_client_ciphers);
    // A list of TLS 1.2 suites keeps TLS 1.3's defaults, and the other way round.
    let istio = effective_cipher_suites(&tls(0));
    assert_eq!(
        istio[..4],
        [
            S::Tls13Aes128GcmSha256,
            S::Tls13Aes256GcmSha384,
            S::Tls13Chacha20Poly1305Sha256,
            S::EcdheEcdsaAes256GcmSha384
        ]
    );
    assert_eq!(istio.len(), 7);
    let t13 = effective_cipher_suites(&tls(2));
    assert_eq!(
        t13[..2],
        [S::Tls13Chacha20Poly1305Sha256, S::Tls13Aes256GcmSha384]
    );
    assert_eq!(t13[2..], DEFAULT_CIPHER_SUITES[3..]);
    assert_eq!(effective_cipher_suites(&[]), DEFAULT_CIPHER_SUITES);
    let cluster = c.clusters[0].tls.as_deref().unwrap();
    assert_eq!(cluster.cipher_suites, [S::Tls13Aes256GcmSha384]);
    // As BoringSSL reads them: a suite named again keeps its first place, entries joined by
    // `:`, IANA names of TLS 1.2 suites, skipped suites anywhere.
    let lenient = crate::config::tls::parse_cipher_suites(
        &[
            "ECDHE-RSA-AES128-GCM-SHA256:DES-CBC3-SHA",
            "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
            "[ECDHE-RSA-AES128-GCM-SHA256|ECDHE-ECDSA-AES256-GCM-SHA384]",
        ],
        true,
    )
    .unwrap();
    assert_eq!(
        lenient,
        [S::EcdheRsaAes128GcmSha256, S::EcdheEcdsaAes256GcmSha384]
    );
    let bad = r#"
listeners:
  - name: unknown
    address: 127.0.0.1:8443
    tls: { certificates: [ { cert_chain: a.pem, private_key: a.key } ], cipher_suites: [ECDHE-ECDSA-AES128-GCM-SHA256, SEED-SHA] }
    tcp_proxy: { cluster: a }
  - name: twice-and-unknown-in-a-cipher-string
    address: 127.0.0.1:8444
    tls: { certificates: [ { cert_chain: a.pem, private_key: a.key } ], cipher_suites: ["[ECDHE-ECDSA-AES128-GCM-SHA256|ECDHE-ECDSA-CHACHA20-POLY1305]", "ECDHE-ECDSA-AES128-GCM-SHA256:RC4-MD5"] }
    tcp_proxy: { cluster: a }
  - name: empty
    address: 127.0.0.1:8445
    tls: { certificates: [ { cert_chain: a.pem, private_key: a.key } ], cipher_suites: [] }
    tcp_proxy: { cluster: a }
  - name: only-skipped
    address: 127.0.0.1:8446
    tls: { certificates: [ { cert_chain: a.pem, private_key: a.key } ], cipher_suites: [AES128-GCM-SHA256] }
    tcp_proxy: { cluster: a }
  - name: no-tls12-left
    address: 127.0.0.1:8447
    tls: { certificates: [ { cert_chain: a.pem, private_key: a.key } ], cipher_suites: [TLS_AES_128_GCM_SHA256, AES128-GCM-SHA256] }
    tcp_proxy: { cluster: a }
  - name: tls13-only-may
    address: 127.0.0.1:8448
    tls: { certificates: [ { cert_chain: a.pem, private_key: a.key } ], min_version: 1.3, cipher_suites: [TLS_AES_128_GCM_SHA256, AES128-GCM-SHA256] }
    tcp_proxy: { cluster: a }
clusters:
  - { name: a, hosts: [{ address: 127.0.0.1:9001 }], tls: { ca: ca.pem, sni: a.example, cipher_suites: [AES128-SHA] } }
"#;
    let errs = errors(bad);
    assert!(
        !errs.iter().any(|e| e.starts_with("listeners[5]")),
        "a TLS 1.3-only listener needs no TLS 1.2 suite: {errs:#?}"
    );
    for want in [
        "listeners[0].tls.cipher_suites[1]: unknown cipher suite \"SEED-SHA\" (Sluice negotiates TLS_AES_128_GCM_SHA256,",
        "listeners[1].tls.cipher_suites[1]: unknown cipher suite \"RC4-MD5\"",
        "listeners[2].tls.cipher_suites: must name at least one suite",
        "listeners[3].tls.cipher_suites: names no suite Sluice negotiates",
        "listeners[4].tls.cipher_suites: names TLS 1.2 suites, none of which Sluice negotiates",
        "clusters[0].tls.cipher_suites: names no suite Sluice negotiates",
    ] {
        assert!(
            errs.iter().any(|e| e.starts_with(want)),
            "missing {want:?} in {errs:#?}"
        );
    }
}

#[test]
fn listener_tls_decodes_with_defaults_and_reports_misuse_at_its_path() {
    let good = r#"
listeners:
  - name: t
    address: 127.0.0.1:8443
    tls: { certificates: [ { cert_chain: a.pem, private_key: a.key } ], min_version: 1.3 }
    tcp_proxy: { cluster: a }
clusters:
  - { name: a, hosts: [{ address: 127.0.0.1:9001 }] }
"#;
    let c = Config::from_yaml(good).unwrap();
    let tls = c.listeners[0].tls.as_deref().unwrap();
    assert_eq!(tls.min_version, crate::config::tls::TlsVersion::Tls13);
    assert!(tls.require_client_certificate && tls.client_ca.is_none() && tls.alpn.is_empty());
    assert_eq!(
        tls.handshake_timeout,
        crate::config::tls::DEFAULT_HANDSHAKE_TIMEOUT
    );
    let bad = r#"
listeners:
  - name: t
    address: 127.0.0.1:8443
    tls:
      certificates: []
      min_version: 1.1
      alpn: [h2, h2]
      verify_subject_alt_names: [spiffe://x]
      handshake_timeout: 0s
    tcp_proxy: { cluster: a }
  - name: h
    address: 127.0.0.1:8080
    tls: { certificates: [ { cert_chain: a.pem, private_key: a.key } ], alpn: [h2] }
    http:
      codec: http1
      virtual_hosts: [ { name: v, domains: ["*"], routes: [ { match: { prefix: / }, route: { cluster: a } } ] } ]
clusters:
  - { name: a, hosts: [{ address: 127.0.0.1:9001 }] }
"#;
    let errs = errors(bad);
    for want in [
        "listeners[0].tls.certificates: give at least one certificate",
        "listeners[0].tls.min_version: unknown TLS version \"1.1\" (expected 1.2 or 1.3)",
        "listeners[0].tls.alpn: \"h2\" is listed twice",
        "listeners[0].tls.verify_subject_alt_names: `verify_subject_alt_names` needs `client_ca`",
        "listeners[0].tls.handshake_timeout: must be greater than zero",
        "listeners[1].tls.alpn: \"h2\" is not served by this listener (`codec: http1`)",
    ] {
        assert!(
            errs.iter().any(|e| e.starts_with(want)),
            "missing {want:?} in {errs:#?}"
        );
    }
}

/// PEM fields take a file or `{ inline, secret }` (what xDS produces); inline PEM is redacted
/// in the dump and in `Debug`.
#[test]
fn pem_fields_take_a_file_or_inline_pem_which_the_dump_redacts() {
    use crate::config::tls::Pem;
    let good = r#"
listeners:
  - name: t
    address: 127.0.0.1:8443
    tls:
      certificates:
        - cert_chain: { inline: "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", secret: web-cert }
          private_key: { inline: "-----BEGIN PRIVATE KEY-----\nBBBB\n-----END PRIVATE KEY-----\n", secret: web-cert }
      client_ca: ca.pem
    tcp_proxy: { cluster: a }
clusters:
  - { name: a, hosts: [{ address: 127.0.0.1:9001 }] }
"#;
    let c = Config::from_yaml(good).unwrap();
    let tls = c.listeners[0].tls.as_deref().unwrap();
    assert_eq!(
        tls.certificates[0].private_key,
        Pem::Inline {
            secret: Some("web-cert".into()),
            pem: "-----BEGIN PRIVATE KEY-----\nBBBB\n-----END PRIVATE KEY-----\n".into()
        }
    );
    assert_eq!(tls.client_ca, Some(Pem::File("ca.pem".into())));
    let dump = serde_json::to_value(&c.listeners[0]).unwrap();
    assert_eq!(
        dump["tls"]["certificates"][0]["private_key"],
        serde_json::json!({ "inline": "[redacted: 59 bytes]", "secret": "web-cert" })
    );
    assert_eq!(dump["tls"]["client_ca"], "ca.pem");
    assert!(!format!("{c:?}").contains("BBBB"));
    let bad = r#"
listeners:
  - name: t
    address: 127.0.0.1:8443
    tls:
      certificates: [ { cert_chain: { inline: "not pem" }, private_key: { file: a.key } } ]
    tcp_proxy: { cluster: a }
clusters:
  - { name: a, hosts: [{ address: 127.0.0.1:9001 }] }
"#;
    let errs = errors(bad);
    for want in [
        "listeners[0].tls.certificates[0].cert_chain.inline: not PEM (no -----BEGIN line)",
        "listeners[0].tls.certificates[0].private_key.inline: missing",
        "listeners[0].tls.certificates[0].private_key.file: unknown field",
    ] {
        assert!(
            errs.iter().any(|e| e.starts_with(want)),
            "missing {want:?} in {errs:#?}"
        );
    }
}

/// Inline PEM past `MAX_PEM_BYTES` is refused naming its field, never quoting the text (a
/// private key padded with comment lines: issue 13, H1).
#[test]
fn oversized_inline_pem_is_refused_by_field_without_its_text() {
    let padded = format!(
        "-----BEGIN PRIVATE KEY-----\\nBBBB\\n-----END PRIVATE KEY-----\\n{}",
        "# padding padding padding padding\\n".repeat(40_000)
    );
    let text = format!(
        r#"
listeners:
  - name: t
    address: 127.0.0.1:8443
    tls:
      certificates:
        - cert_chain: a.pem
          private_key: {{ inline: "{padded}", secret: web-key }}
    tcp_proxy: {{ cluster: a }}
clusters:
  - {{ name: a, hosts: [{{ address: 127.0.0.1:9001 }}] }}
"#
    );
    assert!(text.len() > 1 << 20);
    let errs = errors(&text);
    assert_eq!(errs.len(), 1, "{}", errs.len());
    let e = &errs[0];
    assert!(
        e.starts_with("listeners[0].tls.certificates[0].private_key.inline: ")
            && e.contains("larger than 1048576 bytes"),
        "{}",
        &e[..e.len().min(400)]
    );
    assert!(!e.contains("BEGIN") && !e.contains("padding"));
}

/// TLS terminates on every listener kind; with no `alpn`, a listener offers what its HTTP codec
/// serves (ALPN then picks the codec), and a `tcp_proxy` or `bolt` listener offers none.
#[test]
fn listener_tls_on_every_kind_offers_the_alpn_of_its_codec() {
    let routes = r#"virtual_hosts: [ { name: v, domains: ["*"], routes: [ { match: { prefix: / }, route: { cluster: a } } ] } ]"#;
    let text = format!(
        r#"
listeners:
  - {{ name: auto, address: 127.0.0.1:8443, tls: {{ certificates: [ {{ cert_chain: a.pem, private_key: a.key }} ] }}, http: {{ {routes} }} }}
  - {{ name: h1, address: 127.0.0.1:8444, tls: {{ certificates: [ {{ cert_chain: a.pem, private_key: a.key }} ] }}, http: {{ codec: http1, {routes} }} }}
  - {{ name: h2, address: 127.0.0.1:8445, tls: {{ certificates: [ {{ cert_chain: a.pem, private_key: a.key }} ] }}, http: {{ codec: http2, {routes} }} }}
  - {{ name: b, address: 127.0.0.1:8446, tls: {{ certificates: [ {{ cert_chain: a.pem, private_key: a.key }} ] }}, bolt: {{ routes: [ {{ route: {{ cluster: a }} }} ] }} }}
  - {{ name: t, address: 127.0.0.1:8447, tls: {{ certificates: [ {{ cert_chain: a.pem, private_key: a.key }} ] }}, tcp_proxy: {{ cluster: a }} }}
  - {{ name: own, address: 127.0.0.1:8448, tls: {{ certificates: [ {{ cert_chain: a.pem, private_key: a.key }} ], alpn: [http/1.1] }}, http: {{ {routes} }} }}
clusters:
  - {{ name: a, hosts: [{{ address: 127.0.0.1:9001 }}] }}
"#
    );
    let c = Config::from_yaml(&text).unwrap();
    let alpn: Vec<Vec<String>> = c
        .listeners
        .iter()
        .map(|l| l.tls.as_deref().unwrap().alpn.clone())
        .collect();
    assert_eq!(
        alpn,
        [
            vec!["h2".to_owned(), "http/1.1".to_owned()],
            vec!["http/1.1".to_owned()],
            vec!["h2".to_owned()],
            vec![],
            vec![],
            vec!["http/1.1".to_owned()],
        ]
    );
    let http2_only = text.replace("codec: http2,", "codec: http2, ").replace(
        "127.0.0.1:8445, tls: { certificates: [ { cert_chain: a.pem, private_key: a.key } ] }",
        "127.0.0.1:8445, tls: { certificates: [ { cert_chain: a.pem, private_key: a.key } ], alpn: [h2, http/1.1] }",
    );
    assert_eq!(
        errors(&http2_only),
        [
            "listeners[2].tls.alpn: \"http/1.1\" is not served by this listener (`codec: http2`): \
          a client that negotiated it would be refused"
        ]
    );
    // A protocol no HTTP codec serves would be answered as HTTP/1.1; an HTTP protocol on a
    // Bolt listener would be answered in Bolt.
    let foreign = text
        .replace(
            "127.0.0.1:8445, tls: { certificates: [ { cert_chain: a.pem, private_key: a.key } ] }",
            "127.0.0.1:8445, tls: { certificates: [ { cert_chain: a.pem, private_key: a.key } ], alpn: [h2, foo] }",
        )
        .replace(
            "127.0.0.1:8446, tls: { certificates: [ { cert_chain: a.pem, private_key: a.key } ] }",
            "127.0.0.1:8446, tls: { certificates: [ { cert_chain: a.pem, private_key: a.key } ], alpn: [h2] }",
        );
    assert_eq!(
        errors(&foreign),
        [
            "listeners[2].tls.alpn: \"foo\" is not served by this listener (`codec: http2`): \
          a client that negotiated it would be refused",
            "listeners[3].tls.alpn: \"h2\" is an HTTP protocol and this listener speaks Bolt: \
          a client that negotiated it would be answered in Bolt"
        ]
    );
    // Istio's metadata-exchange ALPN, on any listener (here a `tcp_proxy` one): never offered.
    let exchange = text.replace(
        "127.0.0.1:8447, tls: { certificates: [ { cert_chain: a.pem, private_key: a.key } ] }",
        "127.0.0.1:8447, tls: { certificates: [ { cert_chain: a.pem, private_key: a.key } ], alpn: [istio-peer-exchange, istio] }",
    );
    assert_eq!(
        errors(&exchange),
        [
            "listeners[4].tls.alpn: \"istio-peer-exchange\" is negotiated, not a marker: an Istio \
          client that agreed on it would write its metadata-exchange header into the stream, \
          which Sluice does not speak (offer \"istio\" instead)"
        ]
    );
}

#[test]
fn cluster_tls_needs_a_ca_and_an_identity_and_speaks_http1_to_http_routes() {
    let text = r#"
listeners:
  - name: t
    address: 127.0.0.1:8443
    tcp_proxy: { cluster: a }
  - name: h
    address: 127.0.0.1:8080
    http:
      virtual_hosts: [ { name: v, domains: ["*"], routes: [ { match: { prefix: / }, route: { cluster: a } } ] } ]
clusters:
  - { name: a, hosts: [{ address: 127.0.0.1:9001 }], tls: { sni: up.example, ca: ca.pem } }
  - { name: b, hosts: [{ address: 127.0.0.1:9002 }], tls: { cert_chain: c.pem } }
  - { name: c, hosts: [{ address: 127.0.0.1:9003 }], tls: { ca: ca.pem, sni: "not a name" } }
"#;
    // Who uses a cluster is checked once every cluster decodes.
    let used_by_http = text
        .lines()
        .filter(|l| !l.contains("name: b") && !l.contains("name: c"))
        .collect::<Vec<_>>()
        .join("\n");
    // An HTTP route's TLS cluster offers `http/1.1` by ALPN unless told otherwise; another
    // protocol is refused where the route uses it.
    let c = Config::from_yaml(&used_by_http).unwrap();
    assert_eq!(c.clusters[0].tls.as_deref().unwrap().alpn, ["http/1.1"]);
    assert_eq!(
        errors(&used_by_http.replace("ca: ca.pem }", "ca: ca.pem, alpn: [h2, http/1.1] }")),
        [
            "listeners[1].http.virtual_hosts[0].routes[0].route.cluster: cluster \"a\" offers \
          ALPN [\"h2\", \"http/1.1\"] (clusters[0].tls.alpn), but HTTP speaks HTTP/1.1 \
          upstream: give `alpn: [http/1.1]` or none"
        ]
    );
    // A tcp_proxy's TLS cluster offers none, unless an HTTP health check speaks HTTP to it.
    let tcp_only =
        used_by_http.replace("route: { cluster: a }", "direct_response: { status: 200 }");
    let c = Config::from_yaml(&tcp_only).unwrap();
    assert!(c.clusters[0].tls.as_deref().unwrap().alpn.is_empty());
    let checked = tcp_only.replace(
        "tls: { sni: up.example, ca: ca.pem } }",
        "tls: { sni: up.example, ca: ca.pem }, health_check: { http: { path: /healthz } } }",
    );
    let c = Config::from_yaml(&checked).unwrap();
    assert_eq!(c.clusters[0].tls.as_deref().unwrap().alpn, ["http/1.1"]);
    assert_eq!(
        errors(&checked.replace("ca: ca.pem }", "ca: ca.pem, alpn: [h2] }")),
        [
            "clusters[0].health_check: cluster \"a\" offers ALPN [\"h2\"] (clusters[0].tls.alpn), \
          but HTTP speaks HTTP/1.1 upstream: give `alpn: [http/1.1]` or none"
        ]
    );
    let errs = errors(text);
    for want in [
        "clusters[1].tls.ca: ",
        "clusters[1].tls.cert_chain: give `private_key` with `cert_chain`",
        "clusters[1].tls: give `sni` or `verify_subject_alt_names`",
        "clusters[2].tls.sni: \"not a name\" is not a DNS name",
    ] {
        assert!(
            errs.iter().any(|e| e.starts_with(want)),
            "missing {want:?} in {errs:#?}"
        );
    }
    // Names rustls would not take as DNS names are refused here, not dropped later.
    for bad in ["svc.123", "-a.example", "a-.example", "10.0.0.1"] {
        let text = format!(
            "listeners: [{{name: t, address: 127.0.0.1:1, tcp_proxy: {{cluster: a}}}}]\n\
             clusters: [{{name: a, hosts: [{{address: 127.0.0.1:2}}], tls: {{ca: c.pem, sni: \"{bad}\"}}}}]\n"
        );
        assert_eq!(
            errors(&text),
            [format!("clusters[0].tls.sni: {bad:?} is not a DNS name")]
        );
    }
}

/// Errors carry where they are in the text: an unknown field at its key (with the closest
/// known name), a bad value at the value, a missing field at its enclosing mapping, list items
/// by index in block and flow style; a syntax error at the parser's position.
#[test]
fn errors_point_at_their_line_and_column() {
    use crate::config::TextPosition;
    let text = "\
listeners:
  - name: tcp_in
    address: 127.0.0.1:99999
    tcp_proxy: { cluster: c1, idle_timout: 5m }
clusters:
  - name: c1
    conect_timeout: 1s
    hosts: [ { address: 127.0.0.1:1 }, { weight: 3 } ]
";
    let errors = Config::from_yaml(text).unwrap_err().0;
    let at = |path: &str| {
        let e = errors
            .iter()
            .find(|e| e.path == path)
            .unwrap_or_else(|| panic!("no {path} in {errors:#?}"));
        (e.position.map(|p| (p.line, p.column)), e.message.clone())
    };
    let (pos, message) = at("listeners[0].tcp_proxy.idle_timout");
    assert_eq!(pos, Some((4, 31)));
    assert!(
        message.ends_with("; did you mean 'idle_timeout'?"),
        "{message}"
    );
    assert_eq!(at("listeners[0].address").0, Some((3, 14)));
    let (pos, message) = at("clusters[0].conect_timeout");
    assert_eq!(pos, Some((7, 5)));
    assert!(
        message.ends_with("; did you mean 'connect_timeout'?"),
        "{message}"
    );
    // Missing: the item's mapping.
    assert_eq!(at("clusters[0].hosts[1].address").0, Some((8, 40)));

    let syntax = Config::from_yaml("listeners:\n  - name: a\n  bad: [\n")
        .unwrap_err()
        .0;
    assert_eq!(syntax.len(), 1, "{syntax:#?}");
    assert!(
        syntax[0].message.starts_with("not valid YAML: "),
        "{syntax:#?}"
    );
    assert!(
        !syntax[0].message.contains(" | "),
        "no flattened snippet: {syntax:#?}"
    );
    assert_eq!(
        syntax[0].position,
        Some(TextPosition { line: 3, column: 3 })
    );
}

/// A name far from every known one gets no suggestion.
#[test]
fn no_suggestion_for_a_name_far_from_every_known_one() {
    let errs = errors(
        "listeners: [ { name: a, address: 127.0.0.1:1, echo: {}, colour: blue } ]\nclusters: []\n",
    );
    assert_eq!(
        errs,
        [
            "listeners[0].colour: unknown field (expected one of: name, address, protocol, tcp_proxy, echo, http, bolt, filter_chains, max_connections, tls, original_dst, use_original_dst, bind_to_port, listener_filters_timeout, continue_on_listener_filters_timeout, tls_inspector, http_inspector)"
        ]
    );
}

const TRANSPARENT: &str = r#"
upstream_mark: 1337
listeners:
  - name: outbound_capture
    address: 0.0.0.0:15001
    original_dst: redirect
    use_original_dst: true
    tcp_proxy: { cluster: passthrough }
  - name: inbound_capture
    address: 0.0.0.0:15006
    original_dst: tproxy
    tcp_proxy: { cluster: passthrough }
  - name: web
    address: 0.0.0.0:8080
    tcp_proxy: { cluster: web }
clusters:
  - name: passthrough
    type: original_dst
    connect_timeout: 2s
  - name: web
    type: static
    hosts: [ { address: 10.0.0.9:80 } ]
"#;

#[test]
fn parses_a_transparent_sidecar_with_defaults_off() {
    let c = Config::from_yaml(TRANSPARENT).unwrap();
    assert_eq!(c.upstream_mark, Some(1337));
    assert_eq!(c.listeners[0].original_dst, Some(OriginalDst::Redirect));
    assert!(c.listeners[0].use_original_dst);
    assert_eq!(c.listeners[1].original_dst, Some(OriginalDst::Tproxy));
    assert!(!c.listeners[1].use_original_dst);
    assert_eq!(c.listeners[2].original_dst, None);
    assert_eq!(c.clusters[0].kind, ClusterKind::OriginalDst);
    assert!(c.clusters[0].hosts.is_empty());
    assert_eq!(c.clusters[0].connect_timeout, Duration::from_secs(2));
    assert_eq!(c.clusters[1].kind, ClusterKind::Static);
    // The defaults: nothing captured, nothing marked.
    let plain = Config::from_yaml(GOOD).unwrap();
    assert_eq!(plain.upstream_mark, None);
    assert_eq!(plain.listeners[0].original_dst, None);
    assert!(!plain.listeners[0].use_original_dst);
    assert_eq!(plain.clusters[0].kind, ClusterKind::Static);
}

#[test]
fn transparent_settings_are_validated_with_their_paths() {
    let text = r#"
upstream_mark: 0
listeners:
  - name: a
    address: 0.0.0.0:15001
    original_dst: nat
    tcp_proxy: { cluster: pass }
  - name: b
    address: 0.0.0.0:15002
    use_original_dst: true
    tcp_proxy: { cluster: pass }
  - name: c
    address: 0.0.0.0:80
    http:
      virtual_hosts:
        - name: all
          domains: ["*"]
          routes: [ { match: { prefix: / }, route: { cluster: pass } } ]
clusters:
  - name: pass
    type: original_dst
    hosts: [ { address: 10.0.0.1:80 } ]
    health_check: { tcp: {} }
  - name: bad
    type: dynamic
    hosts: [ { address: 10.0.0.1:80 } ]
"#;
    let e = errors(text);
    let want = [
        "upstream_mark: 0 is not a whole number from 1 to 4294967295",
        "listeners[0].original_dst: ",
        "listeners[1].use_original_dst: needs `original_dst: redirect` or `original_dst: tproxy`",
        "clusters[0].hosts: does not apply to a cluster of type original_dst",
        "clusters[0].health_check: does not apply to a cluster of type original_dst",
        "clusters[1].type: ",
    ];
    for w in want {
        assert!(
            e.iter().any(|m| m.starts_with(w)),
            "no error {w:?} in {e:#?}"
        );
    }
}

#[test]
fn bind_to_port_false_is_a_virtual_listener_reached_only_by_hand_off() {
    let text = r#"
listeners:
  - name: outbound
    address: 0.0.0.0:15001
    original_dst: redirect
    use_original_dst: true
    tcp_proxy: { cluster: pass }
  - name: web
    address: 0.0.0.0:80
    bind_to_port: false
    tcp_proxy: { cluster: pass }
clusters:
  - { name: pass, type: original_dst }
"#;
    let c = Config::from_yaml(text).unwrap();
    assert!(c.listeners[0].bind_to_port, "binds by default");
    assert!(!c.listeners[1].bind_to_port);
    // The dump says it (and only for a virtual listener), and loads back.
    let dumped = serde_json::to_string(&c).unwrap();
    assert_eq!(dumped.matches("bind_to_port").count(), 1, "{dumped}");
    // No capture listener to hand it connections; a capture listener that binds nothing.
    let alone = text.replace("    use_original_dst: true\n", "");
    assert_eq!(
        errors(&alone),
        [
            "listeners[1].bind_to_port: false, but no listener has `use_original_dst: true`: \
             nothing would ever hand this listener a connection"
        ]
    );
    let capture = text.replace(
        "    use_original_dst: true\n",
        "    use_original_dst: true\n    bind_to_port: false\n",
    );
    assert_eq!(
        errors(&capture),
        [
            "listeners[0].bind_to_port: false is not for a capture listener (`original_dst`): a \
             listener that binds nothing receives only the connections a capture listener hands it"
        ]
    );
}

#[test]
fn http_and_bolt_routes_may_use_an_original_dst_cluster() {
    let text = r#"
listeners:
  - name: web
    address: 0.0.0.0:80
    http:
      virtual_hosts:
        - name: all
          domains: ["*"]
          routes: [ { match: { prefix: / }, route: { cluster: pass } } ]
clusters:
  - { name: pass, type: original_dst }
"#;
    // HTTP routes connect to the connection's original destination (issue 14).
    let c = Config::from_yaml(text).unwrap();
    assert_eq!(c.clusters[0].kind, ClusterKind::OriginalDst);
    let bolt = text.replace(
        "    http:\n      virtual_hosts:\n        - name: all\n          domains: [\"*\"]\n          routes: [ { match: { prefix: / }, route: { cluster: pass } } ]",
        "    bolt: { routes: [ { route: { cluster: pass } } ] }",
    );
    // So do Bolt routes (each request to its connection's original destination).
    let c = Config::from_yaml(&bolt).unwrap();
    assert!(matches!(c.listeners[0].filter, ListenerFilter::Bolt(_)));
}

/// An `original_dst` cluster speaks HTTP/2 to its destinations when told (over TLS too, offering
/// `h2`); `protocol: downstream` follows each client's version, on any cluster type, with the
/// HTTP/2 options of its HTTP/2 connections, and is refused with `tls` (one ALPN offer per
/// cluster).
#[test]
fn original_dst_clusters_speak_http2_and_any_cluster_the_downstream_protocol() {
    let text = r#"
listeners:
  - name: web
    address: 0.0.0.0:80
    http:
      virtual_hosts:
        - name: all
          domains: ["*"]
          routes:
            - { match: { prefix: /a }, route: { cluster: pass } }
            - { match: { prefix: / }, route: { cluster: down } }
clusters:
  - { name: pass, type: original_dst, protocol: http2 }
  - { name: down, protocol: downstream, hosts: [ { address: 127.0.0.1:9001 } ] }
"#;
    let c = Config::from_yaml(text).unwrap();
    assert_eq!(c.clusters[0].kind, ClusterKind::OriginalDst);
    assert_eq!(c.clusters[0].protocol, UpstreamProtocol::Http2);
    assert_eq!(c.clusters[1].protocol, UpstreamProtocol::Downstream);
    assert!(UpstreamProtocol::Downstream.speaks_http2(true));
    assert!(!UpstreamProtocol::Downstream.speaks_http2(false));
    // The dump names it (and loads back: `runtime/tests/docs_yaml.rs`, with the docs' example).
    let dumped = serde_json::to_string(&c).unwrap();
    assert!(dumped.contains(r#""protocol":"downstream""#), "{dumped}");
    // Its HTTP/2 connections take the HTTP/2 options.
    let keepalive = text.replace(
        "protocol: downstream,",
        "protocol: downstream, http2: { connection_keepalive: { interval: 30s, timeout: 5s } },",
    );
    assert!(
        Config::from_yaml(&keepalive).unwrap().clusters[1]
            .http2_keepalive
            .is_some()
    );
    // Over TLS an original_dst cluster offers h2 for protocol: http2.
    let tls = text.replace(
        "protocol: http2 }",
        "protocol: http2, tls: { sni: up.example, ca: ca.pem } }",
    );
    assert_eq!(
        Config::from_yaml(&tls).unwrap().clusters[0]
            .tls
            .as_deref()
            .unwrap()
            .alpn,
        ["h2"]
    );
    assert_eq!(
        errors(&text.replace(
            "protocol: downstream,",
            "protocol: downstream, tls: { sni: up.example, ca: ca.pem },"
        )),
        [
            "clusters[1].protocol: downstream cannot be combined with `tls` (the ALPN offer is \
             one list per cluster, and this protocol changes with each request): give http1 or \
             http2"
        ]
    );
}

#[test]
fn tcp_proxy_access_log_refuses_http_fields() {
    let with = |log: &str| {
        GOOD.replace(
            "tcp_proxy: { cluster: echo, idle_timeout: 300s }",
            &format!("tcp_proxy: {{ cluster: echo, access_log: {log} }}"),
        )
    };
    let c = Config::from_yaml(&with(
        "{ path: /tmp/tcp.log, template: '100% %START_TIME% %UPSTREAM_CLUSTER% %CLOSE_REASON% %REQUESTED_SERVER_NAME% %ORIGINAL_DST%' }",
    ))
    .unwrap();
    let ListenerFilter::TcpProxy(tp) = &c.listeners[0].filter else {
        panic!("not tcp_proxy")
    };
    let log = tp.access_log.as_ref().unwrap();
    assert_eq!(log.path.as_deref(), Some("/tmp/tcp.log"));
    assert!(Config::from_yaml(&with("{ format: json }")).is_ok());
    assert_eq!(
        errors(&with("{ template: '%START_TIME% %STATUS%' }")),
        [format!(
            "listeners[0].tcp_proxy.access_log.template: %STATUS% is a field of HTTP requests; a \
             tcp_proxy access log has {}, ORIGINAL_DST",
            crate::config::http::TCP_LOG_FIELDS.join(", ")
        )]
    );
    assert!(
        errors(&with("{ template: '%REQ(X-A)%' }"))[0].contains("%REQ(X-A)% is a field of HTTP")
    );
    assert_eq!(
        errors(&with("{ format: json, request_headers: [x-a] }")),
        [
            "listeners[0].tcp_proxy.access_log.request_headers: not for a tcp_proxy (a TCP session \
          has no request headers)"
        ]
    );
}

#[test]
fn tracing_has_defaults_and_checks_its_fields() {
    assert_eq!(Config::from_yaml(GOOD).unwrap().tracing, None);
    let c = Config::from_yaml(&format!("{GOOD}tracing: {{}}\n")).unwrap();
    let t = c.tracing.unwrap();
    assert_eq!(t.sampling, 100.0);
    assert_eq!(t.sampling_per_million(), 1_000_000);
    assert_eq!(t.otlp, None);
    let c = Config::from_yaml(&format!(
        "{GOOD}tracing: {{ sampling: 0.5, otlp: {{ cluster: echo }} }}\n"
    ))
    .unwrap();
    let t = c.tracing.unwrap();
    assert_eq!(t.sampling_per_million(), 5_000);
    let o = t.otlp.unwrap();
    assert_eq!((o.cluster.as_str(), o.cluster_index), ("echo", 0));
    assert_eq!(o.path, "/v1/traces");
    assert_eq!(o.service_name, "sluice");
    assert_eq!(o.export_interval, Duration::from_secs(5));
    assert_eq!((o.max_batch, o.max_queue), (512, 2048));
    assert_eq!(
        errors(&format!("{GOOD}tracing: {{ sampling: 0.00001 }}\n")),
        ["tracing.sampling: 0.00001 is below the smallest sampling step, 0.0001 (percent)"]
    );
    assert_eq!(
        errors(&format!(
            "{GOOD}tracing: {{ sampling: 101, otlp: {{ cluster: nope, path: v1, max_batch: 10, max_queue: 5, export_interval: 0s }}, extra: 1 }}\n"
        )),
        [
            "tracing.extra: unknown field (expected one of: sampling, otlp)",
            "tracing.sampling: 101 is not a percentage from 0 to 100",
            "tracing.otlp.cluster: unknown cluster \"nope\" (known: echo)",
            "tracing.otlp.path: \"v1\" is not a request path (it starts with `/`, without spaces)",
            "tracing.otlp.export_interval: must be more than 0",
            "tracing.otlp.max_queue: max_batch (10) is more than max_queue (5): a batch could never fill",
        ]
    );
}

#[test]
fn a_tls_cluster_of_bolt_routes_never_offers_an_http_protocol() {
    let text = r#"
listeners:
  - name: rpc
    address: 127.0.0.1:12200
    bolt: { routes: [ { route: { cluster: a } } ] }
clusters:
  - { name: a, hosts: [{ address: 127.0.0.1:9001 }], tls: { sni: up.example, ca: ca.pem } }
"#;
    // No ALPN unless given one.
    let c = Config::from_yaml(text).unwrap();
    assert!(c.clusters[0].tls.as_deref().unwrap().alpn.is_empty());
    assert_eq!(
        errors(&text.replace("ca: ca.pem }", "ca: ca.pem, alpn: [sofa, h2] }")),
        [
            "listeners[0].bolt.routes[0].route.cluster: cluster \"a\" offers ALPN \"h2\" \
             (clusters[0].tls.alpn), an HTTP protocol, but this route speaks Bolt: remove it"
        ]
    );
    let c = Config::from_yaml(&text.replace("ca: ca.pem }", "ca: ca.pem, alpn: [sofa] }")).unwrap();
    assert_eq!(c.clusters[0].tls.as_deref().unwrap().alpn, ["sofa"]);
    // Used by HTTP as well: one ALPN list cannot suit both (HTTP would make it `http/1.1`).
    let both = text.replace(
        "clusters:",
        "  - name: web\n    address: 127.0.0.1:8080\n    http:\n      virtual_hosts: [ { name: v, domains: [\"*\"], routes: [ { match: { prefix: / }, route: { cluster: a } } ] } ]\nclusters:",
    );
    let errs = errors(&both);
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(
        errs[0].starts_with(
            "listeners[0].bolt.routes[0].route.cluster: TLS cluster \"a\" is used by Bolt and by HTTP"
        ),
        "{errs:?}"
    );
}

#[test]
fn use_http_header_is_off_by_default_and_only_for_original_dst_clusters() {
    let text = r#"
listeners:
  - name: t
    address: 127.0.0.1:15001
    tcp_proxy: { cluster: pass }
clusters:
  - { name: pass, type: original_dst }
  - { name: web, hosts: [ { address: 127.0.0.1:80 } ] }
"#;
    let c = Config::from_yaml(text).unwrap();
    assert!(!c.clusters[0].use_http_header);
    let on = text.replace(
        "type: original_dst }",
        "type: original_dst, use_http_header: true }",
    );
    assert!(Config::from_yaml(&on).unwrap().clusters[0].use_http_header);
    let wrong = text.replace("{ name: web,", "{ name: web, use_http_header: true,");
    let errs = errors(&wrong);
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(
        errs[0].starts_with(
            "clusters[1].use_http_header: applies only to a cluster of type original_dst"
        ),
        "{errs:?}"
    );
}

#[test]
fn cluster_protocol_defaults_to_http1_and_http2_offers_h2_over_tls() {
    let text = r#"
listeners:
  - name: h
    address: 127.0.0.1:8080
    http:
      virtual_hosts: [ { name: v, domains: ["*"], routes: [ { match: { prefix: / }, route: { cluster: a } } ] } ]
clusters:
  - { name: a, hosts: [{ address: 127.0.0.1:9001 }] }
"#;
    let c = Config::from_yaml(text).unwrap();
    assert_eq!(c.clusters[0].protocol, UpstreamProtocol::Http1);
    let h2 = text.replace("name: a,", "name: a, protocol: http2,");
    let c = Config::from_yaml(&h2).unwrap();
    assert_eq!(c.clusters[0].protocol, UpstreamProtocol::Http2);
    assert_eq!(
        errors(&text.replace("name: a,", "name: a, protocol: h2,")),
        ["clusters[0].protocol: unknown value \"h2\" (expected one of: http1, http2, downstream)"]
    );
    // Over TLS, an HTTP/2 cluster offers `h2` by ALPN; another protocol is refused where a
    // route uses it, and so is an HTTP health check (it probes in HTTP/1.1).
    let tls = h2.replace(
        "9001 }] }",
        "9001 }], tls: { sni: up.example, ca: ca.pem } }",
    );
    let c = Config::from_yaml(&tls).unwrap();
    assert_eq!(c.clusters[0].tls.as_deref().unwrap().alpn, ["h2"]);
    assert_eq!(
        errors(&tls.replace("ca: ca.pem }", "ca: ca.pem, alpn: [http/1.1] }")),
        [
            "listeners[0].http.virtual_hosts[0].routes[0].route.cluster: cluster \"a\" offers \
          ALPN [\"http/1.1\"] (clusters[0].tls.alpn), but HTTP speaks HTTP/2 (protocol: \
          http2) upstream: give `alpn: [h2]` or none"
        ]
    );
    let checked = tls.replace(
        "ca: ca.pem } }",
        "ca: ca.pem }, health_check: { http: { path: /healthz } } }",
    );
    assert_eq!(
        errors(&checked),
        [
            "clusters[0].health_check: an HTTP health check probes in HTTP/1.1, which cluster \
          \"a\" (protocol: http2 over TLS, ALPN h2) cannot carry: use a tcp health check"
        ]
    );
}

#[test]
fn http2_connection_keepalive_is_off_by_default_and_needs_protocol_http2() {
    let text = r#"
listeners:
  - name: h
    address: 127.0.0.1:8080
    http:
      virtual_hosts: [ { name: v, domains: ["*"], routes: [ { match: { prefix: / }, route: { cluster: a } } ] } ]
clusters:
  - { name: a, protocol: http2, hosts: [{ address: 127.0.0.1:9001 }] }
"#;
    assert_eq!(
        Config::from_yaml(text).unwrap().clusters[0].http2_keepalive,
        None
    );
    let on = text.replace(
        "protocol: http2,",
        "protocol: http2, http2: { connection_keepalive: { interval: 30s, timeout: 5s } },",
    );
    assert_eq!(
        Config::from_yaml(&on).unwrap().clusters[0].http2_keepalive,
        Some(crate::config::Http2Keepalive {
            interval: Duration::from_secs(30),
            timeout: Duration::from_secs(5),
            interval_jitter_percent: 15,
        })
    );
    assert_eq!(
        errors(&on.replace("protocol: http2,", "")),
        [
            "clusters[0].http2: applies only to a cluster with `protocol: http2` or `protocol: \
             downstream`"
        ]
    );
    assert_eq!(
        errors(&on.replace("timeout: 5s", "timeout: 0")),
        ["clusters[0].http2.connection_keepalive.timeout: must be greater than zero"]
    );
    assert_eq!(
        errors(&on.replace(", timeout: 5s", "")),
        ["clusters[0].http2.connection_keepalive.timeout: missing (this field is required)"]
    );
    assert_eq!(
        errors(&on.replace("interval: 30s", "interval_jitter: 15")),
        [
            "clusters[0].http2.connection_keepalive.interval: missing (this field is required)",
            "clusters[0].http2.connection_keepalive.interval_jitter: unknown field (expected one of: interval, timeout, interval_jitter_percent)"
        ]
    );
}

const XDS: &str = r#"
node:
  id: sidecar-1
  cluster: web
  metadata: { ISTIO_VERSION: "1.24" }
  locality: { region: eu-west-1, zone: eu-west-1a }
xds: { cluster: xds_server, initial_fetch_timeout: 5s }
listeners: []
clusters:
  - name: xds_server
    hosts: [ { address: 127.0.0.1:18000 } ]
"#;

#[test]
fn the_xds_bootstrap_parses_and_allows_no_static_listener() {
    let c = Config::from_yaml(XDS).unwrap();
    assert!(c.listeners.is_empty());
    let node = c.node.as_ref().unwrap();
    assert_eq!(
        (node.id.as_str(), node.cluster.as_str()),
        ("sidecar-1", "web")
    );
    assert_eq!(node.metadata.as_ref().unwrap()["ISTIO_VERSION"], "1.24");
    assert_eq!(node.locality.as_ref().unwrap().zone, "eu-west-1a");
    let xds = c.xds.as_ref().unwrap();
    assert_eq!((xds.cluster.as_str(), xds.cluster_index), ("xds_server", 0));
    assert_eq!(xds.mode, crate::config::xds::XdsMode::Sotw);
    assert_eq!(xds.initial_fetch_timeout, Duration::from_secs(5));
    let c = Config::from_yaml(&XDS.replace("initial_fetch_timeout: 5s", "mode: delta")).unwrap();
    assert_eq!(c.xds.unwrap().mode, crate::config::xds::XdsMode::Delta);
    // Defaults.
    let c = Config::from_yaml(&XDS.replace(", initial_fetch_timeout: 5s", "")).unwrap();
    assert_eq!(
        c.xds.unwrap().initial_fetch_timeout,
        crate::config::xds::DEFAULT_INITIAL_FETCH_TIMEOUT
    );
    assert!(Config::from_yaml(GOOD).unwrap().xds.is_none());
}

#[test]
fn xds_bootstrap_errors_are_named() {
    assert_eq!(
        errors(&XDS.replace("cluster: xds_server,", "cluster: nowhere,")),
        ["xds.cluster: unknown cluster \"nowhere\" (known: xds_server)"]
    );
    assert_eq!(
        errors(&XDS.replace("initial_fetch_timeout: 5s", "mode: incremental")),
        ["xds.mode: unknown value \"incremental\" (expected one of: sotw, delta)"]
    );
    assert_eq!(
        errors(&XDS.replace("  id: sidecar-1\n", "")),
        ["node.id: missing (this field is required)"]
    );
    assert_eq!(
        errors(&XDS.replace(
            "xds: { cluster: xds_server, initial_fetch_timeout: 5s }\n",
            ""
        )),
        ["listeners: at least one listener is required"]
    );
}

/// Issue 13: the xDS cluster may have `tls` (gRPC over TLS to the management server, whose
/// connection offers `h2` alone, set by the connector): the cluster is left as written (no
/// `alpn` stays none); used by xDS alone, an `alpn` without `h2` is refused at its path, and
/// so are `transport_socket_matches`, which the client would ignore. An HTTP/1.1 route over
/// TLS to the same cluster is the data path's: it gets `[http/1.1]`, without an error.
#[test]
fn the_xds_cluster_takes_tls_offering_h2() {
    let tls = XDS.replace(
        "    hosts: [ { address: 127.0.0.1:18000 } ]",
        "    protocol: http2\n    tls: { ca: ca.pem, sni: xds.example, cert_chain: me.pem, private_key: me.key }\n    hosts: [ { address: 127.0.0.1:18000 } ]",
    );
    let c = Config::from_yaml(&tls).unwrap_or_else(|e| panic!("{e}"));
    let t = c.clusters[0].tls.as_ref().unwrap();
    assert!(t.alpn.is_empty(), "{:?}", t.alpn);
    assert_eq!(t.sni.as_deref(), Some("xds.example"));
    assert!(t.client_certificate.is_some());
    let given = tls.replace(
        "private_key: me.key }",
        "private_key: me.key, alpn: [h2, http/1.1] }",
    );
    assert_eq!(
        Config::from_yaml(&given).unwrap().clusters[0]
            .tls
            .as_ref()
            .unwrap()
            .alpn,
        ["h2", "http/1.1"]
    );
    assert_eq!(
        errors(&tls.replace(
            "private_key: me.key }",
            "private_key: me.key, alpn: [http/1.1] }"
        )),
        [
            "clusters[0].tls.alpn: [\"http/1.1\"] lacks \"h2\": cluster \"xds_server\" is the xDS cluster, used by nothing else, and gRPC to the management server is HTTP/2 (the connection offers `h2` alone): give `alpn: [h2]` or none"
        ]
    );
    // An HTTP/1.1 route over TLS to the xDS cluster: the data path offers `http/1.1` (the
    // xDS connection still `h2`), with `alpn` given as such or not at all.
    let routed = tls.replace("    protocol: http2\n", "").replace(
        "listeners: []",
        "listeners:\n  - { name: in, address: 127.0.0.1:8080, http: { virtual_hosts: [ { name: v, domains: [\"*\"], routes: [ { match: { prefix: / }, route: { cluster: xds_server } } ] } ] } }",
    );
    for yaml in [
        routed.clone(),
        routed.replace(
            "private_key: me.key }",
            "private_key: me.key, alpn: [http/1.1] }",
        ),
    ] {
        let c = Config::from_yaml(&yaml).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.clusters[0].tls.as_ref().unwrap().alpn, ["http/1.1"]);
        assert!(c.xds.is_some());
    }
    let matches = XDS.replace(
        "    hosts: [ { address: 127.0.0.1:18000 } ]",
        "    hosts: [ { address: 127.0.0.1:18000 } ]\n    transport_socket_matches: [ { name: plain } ]",
    );
    assert_eq!(
        errors(&matches),
        [
            "clusters[0].transport_socket_matches: cluster \"xds_server\" is the xDS cluster: its first host is dialled with the cluster's own `tls` (or in cleartext), so per-host transports would be ignored: remove `transport_socket_matches`"
        ]
    );
}

#[test]
fn an_otlp_cluster_speaks_http1_and_an_h2c_cluster_takes_no_http_health_check() {
    let errs = errors(
        &format!("{GOOD}tracing: {{ otlp: {{ cluster: echo }} }}\n").replace(
            "lb_policy: round_robin",
            "lb_policy: round_robin\n    protocol: http2",
        ),
    );
    assert_eq!(
        errs,
        [
            "tracing.otlp.cluster: the OTLP exporter speaks HTTP/1.1: its cluster cannot have `protocol: http2`"
        ]
    );
    let errs = errors(&GOOD.replace(
        "lb_policy: round_robin",
        "lb_policy: round_robin\n    protocol: http2\n    health_check: { http: { path: /healthz } }",
    ));
    assert_eq!(
        errs,
        [
            "clusters[0].health_check: an HTTP health check probes in HTTP/1.1, which cluster \"echo\" (protocol: http2, h2c) cannot carry: use a tcp health check"
        ]
    );
}

/// Istio names its clusters `outbound|PORT||FQDN`: such a name is valid, referable and survives
/// the dump (JSON, which loads back as YAML).
#[test]
fn istio_cluster_names_with_bars_are_valid_names() {
    let text = r#"
listeners:
  - name: virtualOutbound|15001
    address: 127.0.0.1:15001
    tcp_proxy: { cluster: outbound|9080||reviews.default.svc.cluster.local }
clusters:
  - name: outbound|9080||reviews.default.svc.cluster.local
    hosts: [ { address: 10.0.0.7:9080 } ]
"#;
    let c = Config::from_yaml(text).unwrap();
    assert_eq!(
        c.clusters[0].name,
        "outbound|9080||reviews.default.svc.cluster.local"
    );
    // The dump as `/config_dump` serves it: JSON without its null (unset) options.
    fn without_nulls(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::Object(m) => {
                m.retain(|_, c| !c.is_null());
                m.values_mut().for_each(without_nulls);
            }
            serde_json::Value::Array(a) => a.iter_mut().for_each(without_nulls),
            _ => {}
        }
    }
    let mut dumped = serde_json::to_value(&c).unwrap();
    without_nulls(&mut dumped);
    let again = Config::from_yaml(&dumped.to_string()).unwrap();
    assert_eq!(again.clusters[0].name, c.clusters[0].name);
    assert_eq!(again.listeners[0].name, "virtualOutbound|15001");
    // Still refused: characters that need quoting or escaping somewhere names go.
    for bad in ["a b", "a\"b", "a{b", "a/b", "a\\b"] {
        let e = errors(&format!(
            "listeners: [ {{ name: '{bad}', address: 127.0.0.1:1, echo: }} ]"
        ));
        assert!(e[0].contains("is not a valid name"), "{bad}: {e:?}");
    }
}

const DNS: &str = r#"
listeners:
  - name: tcp_in
    address: 127.0.0.1:10001
    tcp_proxy: { cluster: web }
clusters:
  - name: web
    type: strict_dns
    hosts:
      - { address: backend.default.svc.cluster.local:8080 }
      - { address: "10.0.0.9:81", weight: 3 }
  - name: one
    type: logical_dns
    dns_refresh_rate: 30s
    respect_dns_ttl: true
    dns_lookup_family: v4_only
    hosts: [{ address: "API.example.com.:443" }]
"#;

#[test]
fn dns_clusters_take_names_with_envoys_defaults() {
    use crate::config::{DnsLookupFamily, DnsName};
    let c = Config::from_yaml(DNS).unwrap();
    let web = &c.clusters[0];
    assert_eq!(web.kind, ClusterKind::StrictDns);
    assert!(web.hosts.is_empty());
    let dns = web.dns.as_ref().unwrap();
    assert_eq!(
        dns.names,
        vec![
            DnsName {
                name: "backend.default.svc.cluster.local".into(),
                port: 8080,
                weight: 1
            },
            DnsName {
                name: "10.0.0.9".into(),
                port: 81,
                weight: 3
            },
        ]
    );
    assert_eq!(dns.refresh_rate, Duration::from_secs(5));
    assert!(!dns.respect_dns_ttl);
    assert_eq!(dns.lookup_family, DnsLookupFamily::Auto);
    assert_eq!(dns.max_hosts, 64);
    assert_eq!(web.host_slots(), 64);
    let one = &c.clusters[1];
    let dns = one.dns.as_ref().unwrap();
    // Lowercased; the trailing dot kept: an absolute name, resolved without search domains.
    assert_eq!(dns.names[0].name, "api.example.com.");
    assert_eq!(dns.refresh_rate, Duration::from_secs(30));
    assert!(dns.respect_dns_ttl);
    assert_eq!(dns.lookup_family, DnsLookupFamily::V4Only);
    assert_eq!(one.host_slots(), 1);
    // (The dump reading back into the same config: `runtime/tests/docs_yaml.rs`, with the
    // docs' DNS example.)
}

#[test]
fn a_name_in_a_static_cluster_says_to_use_strict_dns() {
    let text = GOOD.replace("127.0.0.1:7002", "backend.local:7002");
    let errs = errors(&text);
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(
        errs[0].contains("clusters[0].hosts[1].address")
            && errs[0].contains("\"backend.local:7002\" is a DNS name")
            && errs[0].contains("use type: strict_dns"),
        "{errs:?}"
    );
}

#[test]
fn dns_settings_are_checked() {
    let errs = errors(&GOOD.replace(
        "lb_policy: round_robin",
        "lb_policy: round_robin\n    dns_refresh_rate: 1s",
    ));
    assert!(
        errs[0].contains("clusters[0].dns_refresh_rate: applies only to a cluster of type strict_dns or logical_dns"),
        "{errs:?}"
    );
    let errs = errors(&DNS.replace("v4_only", "v4"));
    assert!(
        errs[0].contains("clusters[1].dns_lookup_family"),
        "{errs:?}"
    );
    // `max_hosts` bounds a strict_dns cluster's hosts; a logical_dns one has one per name.
    let errs = errors(&DNS.replace("v4_only", "v4_only\n    max_hosts: 4"));
    assert!(
        errs[0].contains("clusters[1].max_hosts: applies only to a cluster of type strict_dns"),
        "{errs:?}"
    );
    let errs = errors(&DNS.replace(
        "hosts: [{ address: \"API.example.com.:443\" }]",
        "hosts: [{ address: \"a:1\" }, { address: \"b:2\" }]",
    ));
    assert!(
        errs[0].contains("clusters[1].hosts: a logical_dns cluster has exactly one host"),
        "{errs:?}"
    );
    let errs = errors(&DNS.replace("backend.default.svc.cluster.local:8080", "bad name:80"));
    assert!(
        errs[0].contains("clusters[0].hosts[0].address") && errs[0].contains("not a DNS name"),
        "{errs:?}"
    );
    let errs = errors(&DNS.replace("backend.default.svc.cluster.local:8080", "backend"));
    assert!(errs[0].contains("expected NAME:PORT"), "{errs:?}");
}

#[test]
fn a_grpc_health_check_takes_envoys_fields_and_names_its_mistakes() {
    let c = Config::from_yaml(
        r#"
listeners:
  - { name: t, address: 127.0.0.1:10001, tcp_proxy: { cluster: plain } }
clusters:
  - name: plain
    health_check: { grpc: {} }
    hosts: [ { address: 127.0.0.1:7001 } ]
  - name: named
    protocol: http2
    health_check:
      grpc: { service_name: sluice.test.Echo, authority: "echo.internal:50051" }
      interval: 2s
    hosts: [ { address: 127.0.0.1:7002 } ]
  - name: empty_authority
    health_check: { grpc: { service_name: "", authority: "" } }
    hosts: [ { address: 127.0.0.1:7003 } ]
"#,
    )
    .unwrap();
    let probe = |i: usize| c.clusters[i].health_check.as_ref().unwrap().probe.clone();
    // Envoy's defaults: the server's overall health, the cluster's name as authority.
    assert_eq!(
        probe(0),
        HealthProbe::Grpc {
            service_name: String::new(),
            authority: None
        }
    );
    assert_eq!(
        probe(1),
        HealthProbe::Grpc {
            service_name: "sluice.test.Echo".into(),
            authority: Some("echo.internal:50051".into())
        }
    );
    assert_eq!(probe(2), probe(0));
    // The dump (without its nulls, as `/config_dump` serves it) loads back into the same
    // clusters, defaults written out.
    let mut dumped = serde_json::to_value(&c).unwrap();
    assert_eq!(
        dumped["clusters"][1]["health_check"]["grpc"],
        serde_json::json!({ "service_name": "sluice.test.Echo", "authority": "echo.internal:50051" })
    );
    assert_eq!(
        dumped["clusters"][0]["health_check"]["grpc"],
        serde_json::json!({ "service_name": "" })
    );
    fn without_nulls(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::Object(m) => {
                m.retain(|_, c| !c.is_null());
                m.values_mut().for_each(without_nulls);
            }
            serde_json::Value::Array(a) => a.iter_mut().for_each(without_nulls),
            _ => {}
        }
    }
    without_nulls(&mut dumped);
    assert_eq!(
        Config::from_yaml(&dumped.to_string()).unwrap().clusters,
        c.clusters
    );

    let errs = errors(
        r#"
clusters:
  - name: a
    health_check: { grpc: { service: x } }
    hosts: [ { address: 127.0.0.1:7001 } ]
  - name: b
    health_check: { grpc: {}, tcp: {} }
    hosts: [ { address: 127.0.0.1:7002 } ]
  - name: c
    health_check: { grpc: { authority: "a b/c", service_name: 7 } }
    hosts: [ { address: 127.0.0.1:7003 } ]
"#,
    );
    for e in [
        "clusters[0].health_check.grpc.service: unknown field",
        "clusters[1].health_check: set only one of http, tcp, bolt, grpc",
        "clusters[2].health_check.grpc.service_name: ",
        "clusters[2].health_check.grpc.authority: \"a b/c\" is not an authority",
    ] {
        assert!(
            errs.iter().any(|got| got.starts_with(e)),
            "missing {e:?} in {errs:#?}"
        );
    }
}

const CHAINS: &str = r#"
listeners:
  - name: inbound
    address: 0.0.0.0:15006
    original_dst: redirect
    continue_on_listener_filters_timeout: true
    listener_filters_timeout: 1s
    filter_chains:
      - filter_chain_match:
          destination_port: 8080
          transport_protocol: tls
          application_protocols: [istio-peer-exchange, istio]
        tls:
          certificates: [ { cert_chain: a.pem, private_key: a.key } ]
          client_ca: ca.pem
        http: { virtual_hosts: [ { name: v, domains: ["*"], routes: [ { match: { prefix: / }, route: { cluster: app } } ] } ] }
      - filter_chain_match: { destination_port: 8080, transport_protocol: raw_buffer }
        http: { virtual_hosts: [ { name: v, domains: ["*"], routes: [ { match: { prefix: / }, route: { cluster: app } } ] } ] }
      - filter_chain_match: { server_names: [WWW.Example.com., "*.example.com"] }
        tcp_proxy: { cluster: app }
clusters:
  - { name: app, hosts: [{ address: 127.0.0.1:8080 }] }
"#;

#[test]
fn filter_chains_decode_dump_and_load_back() {
    use crate::config::{FilterChainMatch, TransportProtocol};
    let c = Config::from_yaml(CHAINS).unwrap();
    let l = &c.listeners[0];
    assert!(
        matches!(l.filter, ListenerFilter::Close),
        "no default chain"
    );
    assert_eq!(l.filter_chains.len(), 3);
    assert_eq!(
        l.filter_chains[0].filter_chain_match,
        FilterChainMatch {
            destination_port: Some(8080),
            server_names: vec![],
            transport_protocol: Some(TransportProtocol::Tls),
            application_protocols: vec!["istio-peer-exchange".into(), "istio".into()],
        }
    );
    assert!(l.filter_chains[0].tls.is_some() && l.filter_chains[1].tls.is_none());
    assert!(matches!(l.filter_chains[1].filter, ListenerFilter::Http(_)));
    assert_eq!(
        l.filter_chains[2].filter_chain_match.server_names,
        ["www.example.com", "*.example.com"]
    );
    assert!(matches!(
        l.filter_chains[2].filter,
        ListenerFilter::TcpProxy(_)
    ));
    assert_eq!(l.listener_filters_timeout, Duration::from_secs(1));
    assert!(l.continue_on_listener_filters_timeout);
    assert_eq!(c.chain_slots(), [(0, 0), (0, 1), (0, 2)]);
    // The dump loads back into the same config.
    let dumped = serde_json::to_value(&c).unwrap();
    assert!(dumped["listeners"][0].get("tcp_proxy").is_none());
    assert_eq!(
        dumped["listeners"][0]["filter_chains"][2]["tcp_proxy"]["cluster"],
        "app"
    );
    // (Unset options are written as null; the admin API's dump leaves them out.)
    fn no_nulls(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::Object(m) => {
                m.retain(|_, v| !v.is_null());
                m.values_mut().for_each(no_nulls);
            }
            serde_json::Value::Array(a) => a.iter_mut().for_each(no_nulls),
            _ => {}
        }
    }
    let mut tree = dumped.clone();
    no_nulls(&mut tree);
    assert_eq!(Config::from_tree(&tree).unwrap(), c);
    // A listener without chains has the defaults, and its dump says nothing of chains.
    let plain = Config::from_yaml(GOOD).unwrap();
    assert!(plain.listeners[0].filter_chains.is_empty());
    assert_eq!(
        plain.listeners[0].listener_filters_timeout,
        crate::config::DEFAULT_LISTENER_FILTERS_TIMEOUT
    );
    let dumped = serde_json::to_string(&plain).unwrap();
    assert!(
        !dumped.contains("filter_chains") && !dumped.contains("listener_filters"),
        "{dumped}"
    );
}

/// Istio's passthrough chains of its inbound listener: plaintext HTTP (sniffed `http/1.1` or
/// `h2c`) apart from other plaintext; the inspectors off on some ports; no limit on the wait
/// for first bytes (`0s`).
const SNIFFED_CHAINS: &str = r#"
listeners:
  - name: inbound
    address: 0.0.0.0:15006
    original_dst: redirect
    continue_on_listener_filters_timeout: true
    listener_filters_timeout: 0s
    tls_inspector: { except_ports: [15006] }
    http_inspector: { except_ports: [8080, "15006-15007"] }
    filter_chains:
      - filter_chain_match: { destination_port: 15006 }
        tcp_proxy: { cluster: app }
      - filter_chain_match: { transport_protocol: raw_buffer, application_protocols: [http/1.1, h2c] }
        http: { virtual_hosts: [ { name: v, domains: ["*"], routes: [ { match: { prefix: / }, route: { cluster: app } } ] } ] }
      - filter_chain_match: { transport_protocol: raw_buffer }
        tcp_proxy: { cluster: app }
clusters:
  - { name: app, hosts: [{ address: 127.0.0.1:8080 }] }
"#;

#[test]
fn sniffed_http_chains_inspector_ports_and_no_timeout_decode_dump_and_load_back() {
    use crate::config::{InspectorPorts, PortRange};
    let c = Config::from_yaml(SNIFFED_CHAINS).unwrap();
    let l = &c.listeners[0];
    assert_eq!(l.listener_filters_timeout, Duration::ZERO, "0s: no limit");
    let one = |p| PortRange { first: p, last: p };
    assert_eq!(
        l.tls_inspector,
        InspectorPorts::ExceptPorts(vec![one(15006)])
    );
    assert_eq!(
        l.http_inspector,
        InspectorPorts::ExceptPorts(vec![
            one(8080),
            PortRange {
                first: 15006,
                last: 15007
            }
        ])
    );
    assert!(l.tls_inspector.runs_on(8080) && !l.tls_inspector.runs_on(15006));
    assert!(l.http_inspector.runs_on(9090) && !l.http_inspector.runs_on(15007));
    assert_eq!(
        l.filter_chains[1].filter_chain_match.application_protocols,
        ["http/1.1", "h2c"]
    );
    let dumped = serde_json::to_value(&c).unwrap();
    assert_eq!(dumped["listeners"][0]["listener_filters_timeout"], "0s");
    assert_eq!(
        dumped["listeners"][0]["http_inspector"],
        serde_json::json!({ "except_ports": [8080, "15006-15007"] })
    );
    let only = SNIFFED_CHAINS.replace("except_ports: [15006]", "only_ports: [9080]");
    let c2 = Config::from_yaml(&only).unwrap();
    assert!(c2.listeners[0].tls_inspector.runs_on(9080));
    assert!(!c2.listeners[0].tls_inspector.runs_on(8080));
    fn no_nulls(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::Object(m) => {
                m.retain(|_, v| !v.is_null());
                m.values_mut().for_each(no_nulls);
            }
            serde_json::Value::Array(a) => a.iter_mut().for_each(no_nulls),
            _ => {}
        }
    }
    let mut tree = dumped.clone();
    no_nulls(&mut tree);
    assert_eq!(Config::from_tree(&tree).unwrap(), c);
    // Without chains, nothing of the inspectors is dumped.
    let plain = serde_json::to_string(&Config::from_yaml(GOOD).unwrap()).unwrap();
    assert!(!plain.contains("inspector"), "{plain}");
}

#[test]
fn bad_inspector_ports_are_reported_by_path() {
    let text = r#"
listeners:
  - name: a
    address: 127.0.0.1:8001
    tls_inspector: { except_ports: [1], only_ports: [2] }
    http_inspector: { except_ports: [0, "9-8", "x", 70000] }
    filter_chains:
      - tcp_proxy: { cluster: c }
  - name: b
    address: 127.0.0.1:8002
    http_inspector: { only_ports: [1] }
    echo: {}
  - name: d
    address: 127.0.0.1:8003
    filter_chains:
      - filter_chain_match: { transport_protocol: raw_buffer, application_protocols: [http/1.1, istio] }
        tcp_proxy: { cluster: c }
clusters:
  - { name: c, hosts: [{ address: 127.0.0.1:9001 }] }
"#;
    let e = errors(text);
    for want in [
        "listeners[0].tls_inspector: give exactly one of `except_ports`, `only_ports`",
        "listeners[0].http_inspector.except_ports[0]: 0 is not a whole number from 1 to 65535",
        "listeners[0].http_inspector.except_ports[1]: \"9-8\" is not a port range",
        "listeners[0].http_inspector.except_ports[2]: \"x\" is not a port range",
        "listeners[0].http_inspector.except_ports[3]: 70000 is not a whole number",
        "listeners[1].http_inspector: only with `filter_chains`",
        "listeners[2].filter_chains[0].filter_chain_match.application_protocols[1]: \"istio\" can never match with `transport_protocol: raw_buffer`",
    ] {
        assert!(
            e.iter().any(|got| got.starts_with(want)),
            "missing {want:?} in {e:#?}"
        );
    }
}

#[test]
fn a_reload_that_changes_a_chain_changes_its_listener() {
    let a = Config::from_yaml(CHAINS).unwrap();
    let b = Config::from_yaml(&CHAINS.replace("[istio-peer-exchange, istio]", "[istio]")).unwrap();
    let d = crate::config::diff::diff(&a, &b);
    assert_eq!(d.listeners.len(), 1, "{d:?}");
}

#[test]
fn bad_filter_chains_are_reported_with_listener_and_chain_index() {
    let text = r#"
listeners:
  - name: ok
    address: 127.0.0.1:8000
    echo: {}
  - name: l
    address: 127.0.0.1:8001
    filter_chains:
      - filter_chain_match: { server_names: [a.example, b.example] }
        tcp_proxy: { cluster: c }
      - filter_chain_match: { server_names: [b.example] }
        tcp_proxy: { cluster: c }
      - filter_chain_match: { transport_protocol: raw_buffer, server_names: [c.example] }
        tcp_proxy: { cluster: c }
      - filter_chain_match: { transport_protocol: raw_buffer, application_protocols: [h2] }
        tcp_proxy: { cluster: c }
      - filter_chain_match: { transport_protocol: quic }
        tcp_proxy: { cluster: c }
      - filter_chain_match: { destination_port: 0 }
        tcp_proxy: { cluster: c }
      - echo: {}
      - filter_chain_match: { transport_protocol: raw_buffer }
        tls: { certificates: [ { cert_chain: a.pem, private_key: a.key } ] }
        tcp_proxy: { cluster: c }
  - name: m
    address: 127.0.0.1:8002
    listener_filters_timeout: 1s
    filter_chains: []
    echo: {}
  - name: n
    address: 127.0.0.1:8003
    continue_on_listener_filters_timeout: true
    echo: {}
  - name: p
    address: 127.0.0.1:8005
    tls: { certificates: [ { cert_chain: a.pem, private_key: a.key } ] }
    filter_chains:
      - tcp_proxy: { cluster: c }
  - name: o
    address: 127.0.0.1:8004
    filter_chains:
      - tcp_proxy: { cluster: c }
      - filter_chain_match: {}
        tcp_proxy: { cluster: c }
clusters:
  - { name: c, hosts: [{ address: 127.0.0.1:9001 }] }
"#;
    let e = errors(text);
    let expect = [
        "listeners[1].filter_chains[2].filter_chain_match.server_names: can never match with `transport_protocol: raw_buffer`",
        "listeners[1].filter_chains[3].filter_chain_match.application_protocols[0]: \"h2\" can never match with `transport_protocol: raw_buffer`",
        "listeners[1].filter_chains[4].filter_chain_match.transport_protocol: unknown value \"quic\"",
        "listeners[1].filter_chains[5].filter_chain_match.destination_port:",
        "listeners[1].filter_chains[6]: no filter: give one of `http`, `tcp_proxy`",
        "listeners[1].filter_chains[6].echo:",
        "listeners[1].filter_chains[7].tls: a chain for `transport_protocol: raw_buffer` (plaintext) connections cannot terminate TLS",
        "listeners[2].filter_chains: give at least one filter chain",
        "listeners[3].continue_on_listener_filters_timeout: only with `filter_chains`",
        "listeners[4].tls: no filter of the listener's own to terminate TLS for",
    ];
    for want in expect {
        assert!(
            e.iter().any(|got| got.starts_with(want)),
            "missing {want:?} in {e:#?}"
        );
    }
    // Overlapping matches (judged once every chain decodes): a shared server name; two
    // chains without any criterion.
    let overlap = r#"
listeners:
  - name: l
    address: 127.0.0.1:8001
    filter_chains:
      - filter_chain_match: { server_names: [a.example, b.example] }
        tcp_proxy: { cluster: c }
      - filter_chain_match: { server_names: [b.example] }
        tcp_proxy: { cluster: c }
      - tcp_proxy: { cluster: c }
      - filter_chain_match: {}
        tcp_proxy: { cluster: c }
      - filter_chain_match: { transport_protocol: tls }
        tcp_proxy: { cluster: c }
clusters:
  - { name: c, hosts: [{ address: 127.0.0.1:9001 }] }
"#;
    assert_eq!(
        errors(overlap),
        [
            "listeners[0].filter_chains[1].filter_chain_match: matches the same connections as \
             listeners[0].filter_chains[0]'s (same destination_port and transport_protocol, and \
             a server name and application protocol in common, or none on both): which one \
             serves them would be ambiguous",
            "listeners[0].filter_chains[3].filter_chain_match: matches the same connections as \
             listeners[0].filter_chains[2]'s (same destination_port and transport_protocol, and \
             a server name and application protocol in common, or none on both): which one \
             serves them would be ambiguous",
        ]
    );
}

/// Issue 13 (Istio auto-mTLS): `transport_socket_matches` and a host's
/// `transport_socket_match` labels; the pick is Envoy's (first entry whose every key/value the
/// host has; an empty `match` takes any host; none: the cluster's own `tls`).
/// Issue 13: an entry's `tls.alpn` is sent as given (as Envoy does) and may carry Istio's
/// mesh markers beside its protocol's own id; another HTTP version's id (which a server could
/// pick while Sluice speaks its protocol) is refused at the user, as is any HTTP id on a
/// cluster Bolt uses, and TLS entries on a cluster both HTTP and Bolt use.
#[test]
fn transport_socket_matches_alpn_may_carry_mesh_markers_but_no_other_http_version() {
    let http = |alpn: &str, protocol: &str| {
        format!(
            r#"
listeners:
  - name: h
    address: 127.0.0.1:8080
    http:
      virtual_hosts: [ {{ name: v, domains: ["*"], routes: [ {{ match: {{ prefix: / }}, route: {{ cluster: a }} }} ] }} ]
clusters:
  - name: a
    {protocol}
    hosts: [ {{ address: 127.0.0.1:9001, transport_socket_match: {{ tlsMode: istio }} }} ]
    transport_socket_matches:
      - {{ name: tlsMode-istio, match: {{ tlsMode: istio }}, tls: {{ ca: mesh-ca.pem, sni: up.mesh{alpn} }} }}
      - {{ name: tlsMode-disabled }}
"#
        )
    };
    let offered = |text: &str| {
        Config::from_yaml(text).unwrap().clusters[0].transport_socket_matches[0]
            .tls
            .as_deref()
            .unwrap()
            .alpn
            .clone()
    };
    // Istio's markers (TCP-style, and HTTP/2's) are sent as given.
    assert_eq!(offered(&http(", alpn: [istio]", "")), ["istio"]);
    // Istio's `istio-peer-exchange` is negotiated (metadata exchange), not a marker: refused
    // where it is written, in an entry and in the cluster's own `tls`.
    let mx = "clusters[0].transport_socket_matches[0].tls.alpn: ALPN \"istio-peer-exchange\" is \
              negotiated, not a marker: a peer that selects it speaks Istio's metadata exchange \
              first, which Sluice does not; remove it (`istio` marks the mesh)";
    assert_eq!(
        errors(&http(", alpn: [istio-peer-exchange, istio]", "")),
        [mx]
    );
    assert_eq!(
        errors(&http(", alpn: [istio-peer-exchange, istio]", "").replace(
            "    transport_socket_matches:",
            "    tls: { ca: mesh-ca.pem, sni: up.mesh, alpn: [istio, istio-peer-exchange] }\n    \
             transport_socket_matches:",
        )),
        [
            mx.replace("transport_socket_matches[0].tls", "tls"),
            mx.to_owned()
        ]
    );
    assert_eq!(
        offered(&http(", alpn: [istio, h2]", "protocol: http2")),
        ["istio", "h2"]
    );
    assert_eq!(
        offered(&http(", alpn: [istio-http/1.1, http/1.1]", "")),
        ["istio-http/1.1", "http/1.1"]
    );
    // None: the protocol's.
    assert_eq!(offered(&http("", "protocol: http2")), ["h2"]);
    // Another HTTP version: refused at the route, naming the entry.
    let route = "listeners[0].http.virtual_hosts[0].routes[0].route.cluster";
    assert_eq!(
        errors(&http(", alpn: [istio, h2]", "")),
        [format!(
            "{route}: cluster \"a\" offers ALPN \"h2\" \
             (clusters[0].transport_socket_matches[0].tls.alpn), but HTTP speaks HTTP/1.1 \
             upstream: an entry may offer \"http/1.1\" and ids of no HTTP version (such as \
             istio, istio-http/1.1), no other HTTP version"
        )]
    );
    assert_eq!(
        errors(&http(", alpn: [http/1.1]", "protocol: http2")).len(),
        1,
        "http/1.1 on an HTTP/2 cluster"
    );
    // Bolt: no HTTP id; and not with HTTP.
    let bolt = |alpn: &str, also_http: bool| {
        let http_listener = if also_http {
            "  - { name: h, address: 127.0.0.1:8080, http: { virtual_hosts: [ { name: v, domains: [\"*\"], routes: [ { match: { prefix: / }, route: { cluster: a } } ] } ] } }\n"
        } else {
            ""
        };
        format!(
            "listeners:\n  - {{ name: rpc, address: 127.0.0.1:10001, bolt: {{ routes: [ {{ route: {{ cluster: a }} }} ] }} }}\n{http_listener}\
             clusters:\n  - name: a\n    hosts: [ {{ address: 127.0.0.1:9001 }} ]\n\
             \x20   transport_socket_matches: [ {{ name: m, tls: {{ ca: mesh-ca.pem, sni: up.mesh{alpn} }} }} ]\n"
        )
    };
    assert_eq!(offered(&bolt(", alpn: [istio]", false)), ["istio"]);
    assert_eq!(
        errors(&bolt(", alpn: [istio-peer-exchange, istio]", false)).len(),
        1,
        "istio-peer-exchange on a Bolt cluster"
    );
    assert_eq!(
        errors(&bolt(", alpn: [istio, h2]", false)),
        [
            "listeners[0].bolt.routes[0].route.cluster: cluster \"a\" offers ALPN \"h2\" \
             (clusters[0].transport_socket_matches[0].tls.alpn), an HTTP protocol, but this \
             route speaks Bolt: remove it"
        ]
    );
    let both = errors(&bolt("", true));
    assert_eq!(both.len(), 1, "{both:?}");
    assert!(both[0].contains("is used by Bolt and by HTTP"), "{both:?}");
}

#[test]
fn transport_socket_matches_pick_per_host_and_are_checked_by_path() {
    use crate::config::pick_transport_socket;
    let text = r#"
listeners:
  - name: h
    address: 127.0.0.1:8080
    http:
      virtual_hosts: [ { name: v, domains: ["*"], routes: [ { match: { prefix: / }, route: { cluster: a } } ] } ]
clusters:
  - name: a
    hosts:
      - { address: 127.0.0.1:9001, transport_socket_match: { tlsMode: istio } }
      - { address: 127.0.0.1:9002 }
      - { address: 127.0.0.1:9003, transport_socket_match: { tlsMode: disabled, zone: a } }
    transport_socket_matches:
      - { name: tlsMode-istio, match: { tlsMode: istio }, tls: { ca: mesh-ca.pem, sni: up.mesh } }
      - { name: zone-a, match: { zone: a }, tls: null }
"#;
    let c = Config::from_yaml(text).unwrap();
    let cl = &c.clusters[0];
    assert_eq!(cl.transport_socket_matches.len(), 2);
    let picks: Vec<Option<usize>> = cl
        .hosts
        .iter()
        .map(|h| {
            pick_transport_socket(
                &cl.transport_socket_matches,
                h.transport_socket_match.as_deref(),
            )
        })
        .collect();
    // 9002 has no labels: no entry matches, the cluster's own (plaintext) `tls`.
    assert_eq!(picks, [Some(0), None, Some(1)]);
    let mtls = cl.transport_socket_matches[0].tls.as_deref().unwrap();
    // Used by an HTTP route: the entry's TLS offers the cluster's protocol, as `tls` would.
    assert_eq!(mtls.alpn, ["http/1.1"]);
    assert!(cl.transport_socket_matches[1].tls.is_none());
    // An empty `match` takes every host, labelled or not; the first match wins.
    let catch_all = text.replace("match: { zone: a }", "match: {}");
    let c = Config::from_yaml(&catch_all).unwrap();
    let cl = &c.clusters[0];
    let picks: Vec<Option<usize>> = cl
        .hosts
        .iter()
        .map(|h| {
            pick_transport_socket(
                &cl.transport_socket_matches,
                h.transport_socket_match.as_deref(),
            )
        })
        .collect();
    assert_eq!(picks, [Some(0), Some(1), Some(1)]);
    // The dump shows both, labels and entries (`match`, `tls: null`).
    let dump = serde_json::to_value(&c).unwrap();
    assert_eq!(
        dump["clusters"][0]["hosts"][0]["transport_socket_match"],
        serde_json::json!({ "tlsMode": "istio" })
    );
    assert_eq!(
        dump["clusters"][0]["transport_socket_matches"][1],
        serde_json::json!({ "name": "zone-a", "match": {} })
    );
    // Errors, by path.
    assert_eq!(
        errors(&text.replace("tlsMode: istio }, tls", "tlsMode: 1 }, tls")),
        [
            "clusters[0].transport_socket_matches[0].match.tlsMode: expected a string, found a number"
        ]
    );
    assert_eq!(
        errors(&text.replace("name: zone-a", "name: tlsMode-istio")),
        [
            "clusters[0].transport_socket_matches[1].name: \"tlsMode-istio\" is already the name \
             of entry 0"
        ]
    );
    assert_eq!(
        errors(&text.replace(
            "    transport_socket_matches:",
            "    protocol: downstream\n    transport_socket_matches:"
        )),
        [
            "clusters[0].protocol: downstream cannot be combined with a TLS entry of \
             `transport_socket_matches` (the ALPN offer is one list per entry, and this \
             protocol changes with each request): give http1 or http2"
        ]
    );
    // No `tls`: plaintext, as `null` (an Envoy entry without a transport socket).
    let c = Config::from_yaml(&text.replace(", tls: null }", " }")).unwrap();
    assert!(c.clusters[0].transport_socket_matches[1].tls.is_none());
    assert_eq!(
        errors(&text.replace("tls: null", "tls: 3")),
        ["clusters[0].transport_socket_matches[1].tls: expected a mapping, found a number"]
    );
    assert_eq!(
        errors(&text.replace(
            "transport_socket_match: { tlsMode: istio }",
            "transport_socket_match: istio"
        )),
        [
            "clusters[0].hosts[0].transport_socket_match: expected a mapping of string keys to string values"
        ]
    );
}

/// Priority levels: `priority` per host (default 0), `overprovisioning_factor` per cluster
/// (default 140), both in the dump only when not the default.
#[test]
fn hosts_take_priorities_and_clusters_an_overprovisioning_factor() {
    let text = r#"
listeners:
  - { name: in, address: 127.0.0.1:10001, tcp_proxy: { cluster: app } }
clusters:
  - name: app
    overprovisioning_factor: 200
    hosts:
      - { address: 10.0.0.1:80 }
      - { address: 10.0.0.2:80, priority: 1 }
      - { address: 10.0.0.3:80, priority: 2 }
      - { address: 10.0.0.4:80, priority: 1 }
  - name: plain
    hosts: [ { address: 10.0.0.5:80 } ]
"#;
    let c = Config::from_yaml(text).unwrap();
    let app = &c.clusters[0];
    assert_eq!(app.overprovisioning_factor, 200);
    let priorities: Vec<u32> = app.hosts.iter().map(|h| h.priority).collect();
    assert_eq!(priorities, [0, 1, 2, 1]);
    assert_eq!(crate::config::priority_levels(&app.hosts), 3);
    assert_eq!(c.clusters[1].overprovisioning_factor, 140);
    assert_eq!(c.clusters[1].hosts[0].priority, 0);
    let dump = serde_json::to_value(&c.clusters[0]).unwrap();
    assert_eq!(dump["overprovisioning_factor"], 200);
    assert_eq!(dump["hosts"][1]["priority"], 1);
    assert!(dump["hosts"][0].get("priority").is_none());
    let plain = serde_json::to_value(&c.clusters[1]).unwrap();
    assert!(plain.get("overprovisioning_factor").is_none());
}

/// Envoy's rule: priorities contiguous from 0; a factor of 0 is refused.
#[test]
fn a_gap_in_priorities_and_a_zero_factor_are_refused() {
    let text = r#"
listeners:
  - { name: in, address: 127.0.0.1:10001, tcp_proxy: { cluster: app } }
clusters:
  - name: app
    overprovisioning_factor: 0
    hosts:
      - { address: 10.0.0.1:80 }
      - { address: 10.0.0.2:80, priority: 2 }
  - name: high
    hosts: [ { address: 10.0.0.3:80, priority: 1 } ]
  - name: huge
    hosts: [ { address: 10.0.0.4:80, priority: 5000 } ]
"#;
    let errs = errors(text);
    let expected = [
        "clusters[0].overprovisioning_factor: 0 is not a whole number from 1 to 4294967295",
        "clusters[0].hosts: priorities must be contiguous from 0: no host has priority 1, and one has 2",
        "clusters[1].hosts: priorities must be contiguous from 0: no host has priority 0, and one has 1",
        "clusters[2].hosts[0].priority: 5000 is not a whole number from 0 to 1023",
    ];
    for e in expected {
        assert!(errs.iter().any(|x| x == e), "missing {e:?} in {errs:#?}");
    }
    assert_eq!(errs.len(), expected.len(), "{errs:#?}");
}

/// `hosts[].health`: the health a host's source declares (EDS `health_status`, Envoy's names
/// lower case), default `healthy` and left out of the dump; an unknown word is refused by path.
#[test]
fn a_hosts_declared_health_is_read_dumped_and_checked() {
    let text = r#"
listeners:
  - { name: in, address: 127.0.0.1:10001, tcp_proxy: { cluster: app } }
clusters:
  - name: app
    hosts:
      - { address: 10.0.0.1:80 }
      - { address: 10.0.0.2:80, health: unhealthy }
      - { address: 10.0.0.3:80, health: draining }
      - { address: 10.0.0.4:80, health: degraded }
"#;
    let c = Config::from_yaml(text).unwrap();
    let health: Vec<_> = c.clusters[0].hosts.iter().map(|h| h.health).collect();
    use crate::config::DeclaredHealth::*;
    assert_eq!(health, [Healthy, Unhealthy, Draining, Degraded]);
    let dump = serde_json::to_value(&c.clusters[0]).unwrap();
    assert!(dump["hosts"][0].get("health").is_none());
    assert_eq!(dump["hosts"][1]["health"], "unhealthy");
    let errs = errors(&text.replace("health: draining", "health: drained"));
    assert_eq!(
        errs,
        [
            "clusters[0].hosts[2].health: unknown value \"drained\" (expected one of: healthy, \
          degraded, unhealthy, draining, timeout)"
        ]
    );
}

/// `xds.sds_sources`: an SDS server of its own (Istio's agent, `sds-grpc`) on a Unix socket or
/// through a static cluster; each declared once, with exactly one of `path` and `cluster`,
/// errors by path.
#[test]
fn sds_sources_are_declared_by_path_or_cluster() {
    let uds = XDS.replace(
        "initial_fetch_timeout: 5s }",
        "initial_fetch_timeout: 5s, sds_sources: [ { name: sds-grpc, path: ./var/run/secrets/workload-spiffe-uds/socket } ] }",
    );
    let c = Config::from_yaml(&uds).unwrap_or_else(|e| panic!("{e}"));
    let sources = &c.xds.as_ref().unwrap().sds_sources;
    assert_eq!(sources.len(), 1);
    assert_eq!(sources[0].name, "sds-grpc");
    assert_eq!(
        sources[0].target,
        crate::config::xds::SdsTarget::Path(
            "./var/run/secrets/workload-spiffe-uds/socket".to_owned()
        )
    );
    let by_cluster = XDS.replace(
        "initial_fetch_timeout: 5s }",
        "sds_sources: [ { name: sds, cluster: xds_server } ] }",
    );
    let c = Config::from_yaml(&by_cluster).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        c.xds.unwrap().sds_sources[0].target,
        crate::config::xds::SdsTarget::Cluster {
            name: "xds_server".to_owned(),
            index: 0
        }
    );
    let with = |s: &str| {
        XDS.replace(
            "initial_fetch_timeout: 5s }",
            &format!("sds_sources: {s} }}"),
        )
    };
    assert_eq!(
        errors(&with("[ { name: sds-grpc } ]")),
        [
            "xds.sds_sources[0]: missing `path` (the SDS server's Unix socket) or `cluster` (a static cluster)"
        ]
    );
    assert_eq!(
        errors(&with("[ { name: a, path: /s, cluster: xds_server } ]")),
        ["xds.sds_sources[0]: give `path` (a Unix socket) or `cluster`, not both"]
    );
    assert_eq!(
        errors(&with("[ { name: a, path: /s }, { name: a, path: /t } ]")),
        ["xds.sds_sources[1].name: \"a\" is declared twice"]
    );
    assert_eq!(
        errors(&with("[ { name: a, cluster: nowhere } ]")),
        ["xds.sds_sources[0].cluster: unknown cluster \"nowhere\" (known: xds_server)"]
    );
    assert_eq!(
        errors(&with("[ { name: a, path: \"\" } ]")),
        ["xds.sds_sources[0].path: cannot be empty"]
    );
    // A source sends private keys: through a cluster without `tls`, only to a loopback host.
    let remote = with("[ { name: a, cluster: agent } ]").replace(
        "clusters:\n",
        "clusters:\n  - name: agent\n    hosts: [ { address: 10.0.0.9:15010 } ]\n",
    );
    assert_eq!(
        errors(&remote),
        [
            "xds.sds_sources[0].cluster: cluster \"agent\" has no `tls` and its first host \
             10.0.0.9:15010 is not a loopback address: an SDS source sends private keys, which \
             must not cross the network in cleartext (give the cluster `tls`, or use a Unix \
             socket `path`)"
        ]
    );
    let unknown = errors(&with("[ { name: a, path: /s, port: 1 } ]"));
    assert!(
        unknown[0].starts_with("xds.sds_sources[0].port: unknown field"),
        "{unknown:?}"
    );
}
