use std::time::Duration;

use super::RETRY_ON;
use crate::config::http::*;
use crate::config::{Config, ListenerFilter};

/// The example of the `http` listener's documentation, whole.
const EXAMPLE: &str = r#"
listeners:
  - name: http_in
    address: 127.0.0.1:10000
    http:
      max_request_headers_kb: 60
      max_headers_count: 100
      request_headers_timeout: 10s
      idle_timeout: 1h
      access_log: { format: text, path: /var/log/sluice/access.log }
      virtual_hosts:
        - name: web
          domains: ["example.com", "*.example.com", "*"]
          routes:
            - match: { path: /hello }
              direct_response: { status: 200, body: "hello from sluice\n" }
            - match: { prefix: /api/, headers: [ { name: x-canary, exact: "1" } ] }
              route: { cluster: api_canary }
            - match: { safe_regex: "^/v[0-9]+/items$" }
              route:
                weighted_clusters: [ { cluster: api_v1, weight: 90 }, { cluster: api_v2, weight: 10 } ]
            - match: { prefix: / }
              route:
                cluster: web
                timeout: 15s
                prefix_rewrite: /
                retry_policy: { retry_on: [connect-failure, reset, 5xx, gateway-error], num_retries: 2, per_try_timeout: 5s }
                request_headers_to_add: [ { name: x-env, value: prod } ]
                request_headers_to_remove: [ x-internal ]
                response_headers_to_add: [ { name: x-served-by, value: sluice } ]
                response_headers_to_remove: [ server ]
clusters:
  - { name: web, hosts: [ { address: 127.0.0.1:8001 } ] }
  - { name: api_canary, hosts: [ { address: 127.0.0.1:8002 } ] }
  - { name: api_v1, hosts: [ { address: 127.0.0.1:8003 } ] }
  - { name: api_v2, hosts: [ { address: 127.0.0.1:8004 } ] }
"#;

fn http(text: &str) -> HttpConfig {
    let config = Config::from_yaml(text).unwrap_or_else(|e| panic!("{e}"));
    match &config.listeners[0].filter {
        ListenerFilter::Http(h) => (**h).clone(),
        other => panic!("not http: {other:?}"),
    }
}

fn errors(text: &str) -> Vec<String> {
    match Config::from_yaml(text) {
        Ok(c) => panic!("expected errors, got {c:?}"),
        Err(e) => e.0.iter().map(ToString::to_string).collect(),
    }
}

/// A config whose only listener is `http` with these virtual hosts (YAML flow or block text,
/// indented for `virtual_hosts:`), and clusters `a`, `b`.
fn with_vhosts(vhosts: &str) -> String {
    format!(
        "listeners:\n  - name: h\n    address: 127.0.0.1:1\n    http:\n      virtual_hosts:\n{vhosts}\n\
         clusters:\n  - {{ name: a, hosts: [ {{ address: 127.0.0.1:2 }} ] }}\n  - {{ name: b, hosts: [ {{ address: 127.0.0.1:3 }} ] }}\n"
    )
}

/// A config with one virtual host (domain `*`) whose single route is `route` (a flow mapping).
fn with_route(route: &str) -> String {
    with_vhosts(&format!(
        "        - {{ name: v, domains: ['*'], routes: [ {route} ] }}"
    ))
}

fn forward(cluster: &str, cluster_index: usize) -> ForwardAction {
    ForwardAction {
        target: ClusterTarget::Cluster(WeightedCluster {
            cluster: cluster.into(),
            cluster_index,
            weight: 1,
        }),
        timeout: Some(DEFAULT_ROUTE_TIMEOUT),
        prefix_rewrite: None,
        retry_policy: None,
        request_headers_to_add: vec![],
        request_headers_to_remove: vec![],
        response_headers_to_add: vec![],
        response_headers_to_remove: vec![],
        upgrade_configs: vec![],
    }
}

#[test]
fn path_normalization_knobs_decode_and_errors_name_their_path() {
    let with = |knobs: &str| {
        format!(
            "listeners:\n  - name: h\n    address: 127.0.0.1:1\n    http:\n{knobs}      virtual_hosts:\n        - {{ name: v, domains: ['*'], routes: [ {{ match: {{ prefix: / }}, direct_response: {{ status: 200 }} }} ] }}\n\
             clusters:\n  - {{ name: a, hosts: [ {{ address: 127.0.0.1:2 }} ] }}\n"
        )
    };
    assert_eq!(
        http(&with("")).path_normalization,
        crate::config::http::PathNormalization::DEFAULT
    );
    let got = http(&with(
        "      normalize_path: false\n      merge_slashes: false\n      path_with_escaped_slashes_action: unescape_and_forward\n",
    ));
    assert_eq!(
        got.path_normalization,
        crate::config::http::PathNormalization {
            normalize_path: false,
            merge_slashes: false,
            escaped_slashes: crate::config::http::EscapedSlashesAction::UnescapeAndForward,
        }
    );
    let errs = errors(&with(
        "      normalize_path: yes please\n      path_with_escaped_slashes_action: drop\n",
    ));
    assert!(
        errs.iter()
            .any(|e| e.contains("listeners[0].http.normalize_path")
                && e.contains("expected true or false")),
        "{errs:?}"
    );
    assert!(
        errs.iter().any(
            |e| e.contains("listeners[0].http.path_with_escaped_slashes_action")
                && e.contains("reject_request, keep_unchanged, unescape_and_forward")
        ),
        "{errs:?}"
    );
}

#[test]
fn decodes_the_full_example() {
    let got = http(EXAMPLE);
    let weighted = |cluster: &str, cluster_index, weight| WeightedCluster {
        cluster: cluster.into(),
        cluster_index,
        weight,
    };
    let header = |name: &str, value: &str| HeaderValue {
        name: name.into(),
        value: value.into(),
        format: None,
        append_action: AppendAction::OverwriteIfExistsOrAdd,
    };
    let want = HttpConfig {
        max_request_headers_kb: 60,
        max_headers_count: 100,
        request_headers_timeout: Duration::from_secs(10),
        stream_idle_timeout: Some(DEFAULT_STREAM_IDLE_TIMEOUT),
        idle_timeout: Some(Duration::from_secs(3600)),
        path_normalization: crate::config::http::PathNormalization::DEFAULT,
        codec: crate::config::http::HttpCodec::Auto,
        http2: crate::config::http::Http2Settings::DEFAULT,
        forwarded_proto: crate::config::http::ForwardedProto::Overwrite,
        upgrade_types: None,
        server_header: None,
        forward_client_cert: crate::config::http::ForwardClientCert::Sanitize,
        set_current_client_cert_details: Default::default(),
        access_log: Some(AccessLogConfig {
            format: AccessLogFormat::Text(None),
            path: Some("/var/log/sluice/access.log".into()),
            request_headers: Vec::new(),
        }),
        virtual_hosts: vec![VirtualHost {
            name: "web".into(),
            domains: vec!["example.com".into(), "*.example.com".into(), "*".into()],
            routes: vec![
                Route {
                    matcher: RouteMatch {
                        path: PathMatch::Exact("/hello".into()),
                        headers: vec![],
                    },
                    action: RouteAction::DirectResponse {
                        status: 200,
                        body: "hello from sluice\n".into(),
                    },
                },
                Route {
                    matcher: RouteMatch {
                        path: PathMatch::Prefix("/api/".into()),
                        headers: vec![HeaderMatcher {
                            name: "x-canary".into(),
                            rule: HeaderRule::Exact("1".into()),
                        }],
                    },
                    action: RouteAction::Forward(forward("api_canary", 1)),
                },
                Route {
                    matcher: RouteMatch {
                        path: PathMatch::Regex("^/v[0-9]+/items$".into()),
                        headers: vec![],
                    },
                    action: RouteAction::Forward(ForwardAction {
                        target: ClusterTarget::Weighted(vec![
                            weighted("api_v1", 2, 90),
                            weighted("api_v2", 3, 10),
                        ]),
                        ..forward("x", 0)
                    }),
                },
                Route {
                    matcher: RouteMatch {
                        path: PathMatch::Prefix("/".into()),
                        headers: vec![],
                    },
                    action: RouteAction::Forward(ForwardAction {
                        timeout: Some(Duration::from_secs(15)),
                        prefix_rewrite: Some("/".into()),
                        retry_policy: Some(RetryPolicy {
                            retry_on: RetryOn {
                                grpc_codes: 0,
                                connect_failure: true,
                                reset: true,
                                server_error: true,
                                gateway_error: true,
                                retriable_4xx: false,
                                refused_stream: false,
                                retriable_status_codes: false,
                                status_codes: Default::default(),
                            },
                            num_retries: 2,
                            per_try_timeout: Some(Duration::from_secs(5)),
                        }),
                        request_headers_to_add: vec![header("x-env", "prod")],
                        request_headers_to_remove: vec!["x-internal".into()],
                        response_headers_to_add: vec![header("x-served-by", "sluice")],
                        response_headers_to_remove: vec!["server".into()],
                        ..forward("web", 0)
                    }),
                },
            ],
            include_request_attempt_count: false,
        }],
    };
    assert_eq!(got, want);
}

#[test]
fn defaults() {
    let got = http(&with_route(
        "{ match: { prefix: / }, route: { cluster: b, retry_policy: { retry_on: [reset] } } }",
    ));
    assert_eq!(got.max_request_headers_kb, DEFAULT_MAX_REQUEST_HEADERS_KB);
    assert_eq!(got.max_headers_count, DEFAULT_MAX_HEADERS_COUNT);
    assert_eq!(got.request_headers_timeout, DEFAULT_REQUEST_HEADERS_TIMEOUT);
    assert_eq!(got.idle_timeout, Some(DEFAULT_HTTP_IDLE_TIMEOUT));
    assert_eq!(got.access_log, None);
    let RouteAction::Forward(f) = &got.virtual_hosts[0].routes[0].action else {
        panic!()
    };
    assert_eq!(
        f.target,
        ClusterTarget::Cluster(WeightedCluster {
            cluster: "b".into(),
            cluster_index: 1,
            weight: 1
        })
    );
    assert_eq!(f.timeout, Some(DEFAULT_ROUTE_TIMEOUT));
    let retry = f.retry_policy.as_ref().unwrap();
    assert_eq!(retry.num_retries, DEFAULT_NUM_RETRIES);
    assert_eq!(retry.per_try_timeout, None);
    assert!(retry.retry_on.reset && !retry.retry_on.connect_failure);
}

#[test]
fn zero_disables_the_idle_and_route_timeouts() {
    let text = with_route("{ match: { prefix: / }, route: { cluster: a, timeout: 0 } }")
        .replace("    http:\n", "    http:\n      idle_timeout: 0s\n");
    let got = http(&text);
    assert_eq!(got.idle_timeout, None);
    let RouteAction::Forward(f) = &got.virtual_hosts[0].routes[0].action else {
        panic!()
    };
    assert_eq!(f.timeout, None);
}

#[test]
fn header_names_are_stored_lowercase_where_compared() {
    let got = http(&with_route(
        "{ match: { prefix: /, headers: [ { name: X-Canary, present: false } ] }, \
         route: { cluster: a, request_headers_to_add: [ { name: X-Env, value: '' } ], \
         request_headers_to_remove: [ X-Internal ] } }",
    ));
    let route = &got.virtual_hosts[0].routes[0];
    assert_eq!(
        route.matcher.headers,
        [HeaderMatcher {
            name: "x-canary".into(),
            rule: HeaderRule::Present(false)
        }]
    );
    let RouteAction::Forward(f) = &route.action else {
        panic!()
    };
    // Added headers keep their case on the wire; removed ones are compared, so lowercase.
    assert_eq!(f.request_headers_to_add[0].name, "X-Env");
    assert_eq!(f.request_headers_to_remove, ["x-internal"]);
}

#[test]
fn access_log_forms() {
    let log = |spec: &str| {
        let text = with_route("{ match: { prefix: / }, route: { cluster: a } }").replace(
            "    http:\n",
            &format!("    http:\n      access_log: {spec}\n"),
        );
        Config::from_yaml(&text).map(|c| match &c.listeners[0].filter {
            ListenerFilter::Http(h) => h.access_log.clone().unwrap(),
            _ => unreachable!(),
        })
    };
    assert_eq!(
        log("{}").unwrap(),
        AccessLogConfig {
            format: AccessLogFormat::Text(None),
            path: None,
            request_headers: Vec::new(),
        }
    );
    assert_eq!(
        log("{ format: json, path: /tmp/a.log }").unwrap(),
        AccessLogConfig {
            format: AccessLogFormat::Json,
            path: Some("/tmp/a.log".into()),
            request_headers: Vec::new(),
        }
    );
    assert_eq!(
        log("{ template: '%START_TIME% %RESPONSE_CODE%' }").unwrap(),
        AccessLogConfig {
            format: AccessLogFormat::Text(Some("%START_TIME% %RESPONSE_CODE%".into())),
            path: None,
            request_headers: Vec::new(),
        }
    );
    let err = |spec: &str| log(spec).unwrap_err().to_string();
    assert_eq!(
        err("{ format: json, template: x }"),
        "listeners[0].http.access_log.template: only allowed with `format: text`"
    );
    assert_eq!(
        err("{ format: xml, path: '', template: '' }"),
        "listeners[0].http.access_log.format: unknown value \"xml\" (expected one of: text, json)\n\
         listeners[0].http.access_log.template: is empty (leave `template` out for the default line)\n\
         listeners[0].http.access_log.path: is empty (leave `path` out to log to stdout)"
    );
    assert_eq!(
        log("{ format: json, request_headers: [X-Tenant, ':authority'] }").unwrap(),
        AccessLogConfig {
            format: AccessLogFormat::Json,
            path: None,
            request_headers: vec!["X-Tenant".into(), ":authority".into()],
        }
    );
    assert_eq!(
        err("{ request_headers: [x-tenant] }"),
        "listeners[0].http.access_log.request_headers: only allowed with `format: json` (a text \
         template names a header as `%REQ(NAME)%`)"
    );
    assert_eq!(
        err("{ format: json, request_headers: [x-ok, 'x bad'] }"),
        "listeners[0].http.access_log.request_headers[1]: \"x bad\" is not a header name"
    );
}

#[test]
fn domain_rules() {
    let check = |domain: &str| -> Result<(), String> { super::check_domain(domain) };
    for ok in [
        "example.com",
        "*.example.com",
        "*-bar.example.com",
        "example.*",
        "*",
        "EXAMPLE.com",
        "localhost",
        "[::1]",
        "[2001:db8::1]",
        "10.0.0.1",
    ] {
        assert_eq!(check(ok), Ok(()), "{ok}");
    }
    let cases = [
        ("", "a domain cannot be empty"),
        (
            "a.*.com",
            r#""a.*.com" is not a valid domain (one `*` at most, and only at its start or end: *.example.com, example.*, *)"#,
        ),
        (
            "*.example.*",
            r#""*.example.*" is not a valid domain (one `*` at most, and only at its start or end: *.example.com, example.*, *)"#,
        ),
        (
            "**",
            r#""**" is not a valid domain (one `*` at most, and only at its start or end: *.example.com, example.*, *)"#,
        ),
        (
            "example.com:8080",
            r#""example.com:8080" has a port (the Host header's port is ignored when matching: write "example.com")"#,
        ),
        (
            "[::1]:80",
            r#""[::1]:80" has a port (the Host header's port is ignored when matching: write "[::1]")"#,
        ),
        ("[::1", r#""[::1" is not a valid domain (no closing ']')"#),
        (
            "[::1]x",
            r#""[::1]x" is not a valid domain (text after ']')"#,
        ),
        (
            "[example.com]",
            r#""[example.com]" is not a valid domain ("example.com" is not an IPv6 address)"#,
        ),
        (
            "exa mple.com",
            r#""exa mple.com" is not a valid domain (letters, digits, '-', '.', '_' and one `*` at its start or end, or an IPv6 address in brackets)"#,
        ),
        (
            "http://example.com",
            r#""http://example.com" has a port (the Host header's port is ignored when matching: write "http")"#,
        ),
    ];
    for (domain, want) in cases {
        assert_eq!(check(domain), Err(want.to_owned()), "{domain}");
    }
}

#[test]
fn header_name_and_value_rules() {
    let text = with_route(
        r#"{ match: { prefix: /, headers: [ { name: ":authority", exact: x }, { name: "bad name", present: true }, { name: host, exact: "a\nb" } ] },
             route: { cluster: a,
               request_headers_to_add: [ { name: Host, value: x }, { name: x-a, value: "a\r\nb" }, { name: X-A, value: 1 } ],
               request_headers_to_remove: [ ":path", Content-Length, "" ],
               response_headers_to_add: [ { name: x-ok, value: ok }, { name: X-OK, value: again } ],
               response_headers_to_remove: [ transfer-encoding, connection, "x\u00e9" ] } }"#,
    );
    let p = "listeners[0].http.virtual_hosts[0].routes[0]";
    let want = [
        format!(
            "{p}.match.headers[0].name: \":authority\" is a pseudo-header (a route matches the path with `path`, `prefix` or `safe_regex`, and the host with the virtual host's `domains`)"
        ),
        format!(
            "{p}.match.headers[1].name: \"bad name\" is not a valid header name (letters, digits and !#$%&'*+-.^_`|~)"
        ),
        format!(
            "{p}.match.headers[2].exact: \"a\\nb\" contains the control character 0x0a at byte 1 (a header value is visible characters, spaces, tabs and non-ASCII text: RFC 9110 §5.5)"
        ),
        format!(
            "{p}.route.request_headers_to_add[0].name: \"Host\" cannot be added or removed (the proxy manages host, connection, transfer-encoding and content-length)"
        ),
        format!(
            "{p}.route.request_headers_to_add[1].value: value \"a\\r\\nb\" of header \"x-a\" contains the control character 0x0d at byte 1 (a header value is visible characters, spaces, tabs and non-ASCII text: RFC 9110 §5.5)"
        ),
        format!(
            "{p}.route.request_headers_to_add[2].value: expected a string, found the number 1 (write it in quotes: \"1\")"
        ),
        format!(
            "{p}.route.request_headers_to_remove[0]: \":path\" is a pseudo-header (the proxy writes those)"
        ),
        format!(
            "{p}.route.request_headers_to_remove[1]: \"Content-Length\" cannot be added or removed (the proxy manages host, connection, transfer-encoding and content-length)"
        ),
        format!(
            "{p}.route.request_headers_to_remove[2]: \"\" is not a valid header name (letters, digits and !#$%&'*+-.^_`|~)"
        ),
        format!(
            "{p}.route.response_headers_to_add[1].name: duplicate header \"X-OK\" (already added by {p}.route.response_headers_to_add[0]; an entry that does not append (append_action: overwrite_if_exists_or_add, the default, add_if_absent or overwrite_if_exists) must be the only one of its name — give every entry of the name append_action: append_if_exists_or_add to add several fields)"
        ),
        format!(
            "{p}.route.response_headers_to_remove[0]: \"transfer-encoding\" cannot be added or removed (the proxy manages host, connection, transfer-encoding and content-length)"
        ),
        format!(
            "{p}.route.response_headers_to_remove[1]: \"connection\" cannot be added or removed (the proxy manages host, connection, transfer-encoding and content-length)"
        ),
        format!(
            "{p}.route.response_headers_to_remove[2]: \"xé\" is not a valid header name (letters, digits and !#$%&'*+-.^_`|~)"
        ),
    ];
    assert_eq!(errors(&text), want);
}

/// A control character other than CR, LF and NUL in an added value (which HTTP/1.1 wrote as a
/// space and HTTP/2 dropped with its field) is refused at load, naming the route's entry and
/// the header; HTAB, non-ASCII text and visible characters are taken as written, at every
/// level that adds headers.
#[test]
fn an_added_header_value_with_a_control_character_is_refused() {
    let text = with_route(
        r#"{ match: { prefix: / },
             route: { cluster: a,
               request_headers_to_add: [ { name: x-ok, value: "tab\there \u00e9 ~!" }, { name: x-soh, value: "a\u0001b" } ],
               response_headers_to_add: [ { name: x-del, value: "ab\u007f" }, { name: x-esc, value: "\u001b[0m" } ] } }"#,
    );
    let p = "listeners[0].http.virtual_hosts[0].routes[0].route";
    let why =
        "(a header value is visible characters, spaces, tabs and non-ASCII text: RFC 9110 §5.5)";
    let want = [
        format!(
            "{p}.request_headers_to_add[1].value: value \"a\\u{{1}}b\" of header \"x-soh\" contains the control character 0x01 at byte 1 {why}"
        ),
        format!(
            "{p}.response_headers_to_add[0].value: value \"ab\\u{{7f}}\" of header \"x-del\" contains the control character 0x7f at byte 2 {why}"
        ),
        format!(
            "{p}.response_headers_to_add[1].value: value \"\\u{{1b}}[0m\" of header \"x-esc\" contains the control character 0x1b at byte 0 {why}"
        ),
    ];
    assert_eq!(errors(&text), want);
    // What RFC 9110 allows loads, as written.
    let ok = with_route(
        r#"{ match: { prefix: / },
             route: { cluster: a,
               response_headers_to_add: [ { name: x-ok, value: "tab\there \u00e9 ~!" } ] } }"#,
    );
    if let Err(e) = Config::from_yaml(&ok) {
        panic!("a value RFC 9110 allows was refused: {e:?}");
    }
}

/// Drops the `null`s of a dump (unset options), as the admin API's `/config_dump` does.
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

/// Values with `%VAR%` are parsed at load (the dump writes them as written and loads back);
/// an unknown variable or a stray `%` is refused at the value's path.
#[test]
fn header_values_with_variables() {
    let text = with_route(
        "{ match: { prefix: / }, route: { cluster: a, request_headers_to_add: [ \
         { name: x-client, value: '%DOWNSTREAM_REMOTE_ADDRESS%' }, { name: x-plain, value: p } ] } }",
    );
    let config = Config::from_yaml(&text).unwrap();
    let got = http(&text);
    let RouteAction::Forward(f) = &got.virtual_hosts[0].routes[0].action else {
        panic!()
    };
    assert!(f.request_headers_to_add[0].format.is_some());
    assert!(f.request_headers_to_add[1].format.is_none());
    let mut dump = serde_json::to_value(&config).unwrap();
    no_nulls(&mut dump);
    assert_eq!(Config::from_tree(&dump).unwrap(), config);
    let text = with_route(
        "{ match: { prefix: / }, route: { cluster: a, response_headers_to_add: [ \
         { name: x-a, value: '%UNKNOWN_THING%' }, { name: x-b, value: '%REQ(' } ] } }",
    );
    let p = "listeners[0].http.virtual_hosts[0].routes[0].route";
    assert_eq!(
        errors(&text),
        [
            format!(
                "{p}.response_headers_to_add[0].value: \"%UNKNOWN_THING%\": unknown variable %UNKNOWN_THING% at byte 0 (supported: {})",
                crate::config::header_format::SUPPORTED
            ),
            format!(
                "{p}.response_headers_to_add[1].value: \"%REQ(\": no valid variable at byte 0 (a variable is %NAME%, %NAME(ARG)% or either with :N before the closing %; write %% for a literal %)"
            ),
        ]
    );
}

/// `append_action`: overwrite by default; appending entries of one name may repeat, in order;
/// an entry that does not append shares its name with no other (refused by path); the
/// conditional actions load and dump back.
#[test]
fn header_append_action() {
    let text = with_route(
        "{ match: { prefix: / }, route: { cluster: a, request_headers_to_add: [ \
         { name: x-a, value: '1', append_action: append_if_exists_or_add }, \
         { name: x-b, value: '2' }, \
         { name: X-A, value: '3', append_action: append_if_exists_or_add }, \
         { name: x-c, value: '4', append_action: overwrite_if_exists_or_add }, \
         { name: x-d, value: '5', append_action: add_if_absent }, \
         { name: x-e, value: '6', append_action: overwrite_if_exists } ] } }",
    );
    // The dump writes the action of appending entries only, and loads back.
    let config = Config::from_yaml(&text).unwrap();
    let mut dump = serde_json::to_value(&config).unwrap();
    no_nulls(&mut dump);
    assert_eq!(
        dump["listeners"][0]["http"]["virtual_hosts"][0]["routes"][0]["route"]["request_headers_to_add"],
        serde_json::json!([
            { "name": "x-a", "value": "1", "append_action": "append_if_exists_or_add" },
            { "name": "x-b", "value": "2" },
            { "name": "X-A", "value": "3", "append_action": "append_if_exists_or_add" },
            { "name": "x-c", "value": "4" },
            { "name": "x-d", "value": "5", "append_action": "add_if_absent" },
            { "name": "x-e", "value": "6", "append_action": "overwrite_if_exists" },
        ])
    );
    assert_eq!(Config::from_tree(&dump).unwrap(), config);
    let got = http(&text);
    let RouteAction::Forward(f) = &got.virtual_hosts[0].routes[0].action else {
        panic!()
    };
    let got: Vec<(&str, &str, AppendAction)> = f
        .request_headers_to_add
        .iter()
        .map(|h| (h.name.as_str(), h.value.as_str(), h.append_action))
        .collect();
    assert_eq!(
        got,
        [
            ("x-a", "1", AppendAction::AppendIfExistsOrAdd),
            ("x-b", "2", AppendAction::OverwriteIfExistsOrAdd),
            ("X-A", "3", AppendAction::AppendIfExistsOrAdd),
            ("x-c", "4", AppendAction::OverwriteIfExistsOrAdd),
            ("x-d", "5", AppendAction::AddIfAbsent),
            ("x-e", "6", AppendAction::OverwriteIfExists),
        ]
    );
    let text = with_route(
        "{ match: { prefix: / }, route: { cluster: a, \
         request_headers_to_add: [ { name: x-a, value: '1', append_action: append_if_exists_or_add }, \
           { name: X-A, value: '2' }, { name: x-b, value: '1' }, \
           { name: x-b, value: '2', append_action: append_if_exists_or_add } ], \
         response_headers_to_add: [ { name: x-ok, value: '1', append_action: append_if_exists_or_add }, \
           { name: x-ok, value: '2', append_action: append_if_exists_or_add }, \
           { name: x-c, value: '1', append_action: add_if_absent }, \
           { name: x-c, value: '2', append_action: append_if_exists_or_add }, \
           { name: x-d, value: '1', append_action: append_if_exists_or_add }, \
           { name: x-d, value: '2', append_action: overwrite_if_exists } ] } }",
    );
    let p = "listeners[0].http.virtual_hosts[0].routes[0].route";
    let dup = "an entry that does not append (append_action: overwrite_if_exists_or_add, the default, add_if_absent or overwrite_if_exists) must be the only one of its name — give every entry of the name append_action: append_if_exists_or_add to add several fields";
    assert_eq!(
        errors(&text),
        [
            format!(
                "{p}.request_headers_to_add[1].name: duplicate header \"X-A\" (already added by {p}.request_headers_to_add[0]; {dup})"
            ),
            format!(
                "{p}.request_headers_to_add[3].name: duplicate header \"x-b\" (already added by {p}.request_headers_to_add[2]; {dup})"
            ),
            format!(
                "{p}.response_headers_to_add[3].name: duplicate header \"x-c\" (already added by {p}.response_headers_to_add[2]; {dup})"
            ),
            format!(
                "{p}.response_headers_to_add[5].name: duplicate header \"x-d\" (already added by {p}.response_headers_to_add[4]; {dup})"
            ),
        ]
    );
    let text = with_route(
        "{ match: { prefix: / }, route: { cluster: a, \
         response_headers_to_add: [ { name: x-e, value: '1', append_action: append } ] } }",
    );
    assert_eq!(
        errors(&text),
        [format!(
            "{p}.response_headers_to_add[0].append_action: unknown value \"append\" (expected one of: overwrite_if_exists_or_add, append_if_exists_or_add, add_if_absent, overwrite_if_exists)"
        )]
    );
}

#[test]
fn regex_errors_name_the_regex_on_one_line() {
    let errs = errors(&with_route(
        r#"{ match: { safe_regex: "/(a" }, route: { cluster: a } }"#,
    ));
    assert_eq!(errs.len(), 1, "{errs:?}");
    let e = &errs[0];
    assert!(
        e.starts_with(
            r#"listeners[0].http.virtual_hosts[0].routes[0].match.safe_regex: "/(a" is not a valid regular expression: regex parse error:"#
        ),
        "{e}"
    );
    assert!(e.contains("unclosed group"), "{e}");
    assert!(!e.contains('\n'), "{e}");
}

#[test]
fn a_verbose_regex_may_end_in_a_comment() {
    let got = http(&with_route(
        r#"{ match: { safe_regex: "(?x) /v[0-9]+ # a version" }, route: { cluster: a } }"#,
    ));
    let router = crate::router::Router::new(&got).unwrap();
    fn none(_: &str) -> Option<&'static [u8]> {
        None
    }
    assert!(router.route(b"x", b"/v2", &none).is_some());
    assert!(router.route(b"x", b"/v2/", &none).is_none());
}

#[test]
fn retry_on_names_are_the_models() {
    let names: Vec<&str> = RETRY_ON.iter().map(|(n, _)| *n).collect();
    assert_eq!(names, RetryOn::NAMES);
    for (i, (_, set)) in RETRY_ON.iter().enumerate() {
        let mut on = RetryOn::default();
        set(&mut on);
        let flags = [
            on.connect_failure,
            on.reset,
            on.server_error,
            on.gateway_error,
            on.retriable_4xx,
            on.refused_stream,
            on.retriable_status_codes,
            on.grpc(1),
            on.grpc(4),
            on.grpc(13),
            on.grpc(8),
            on.grpc(14),
        ];
        assert_eq!(flags.iter().filter(|f| **f).count(), 1);
        assert!(flags[i], "{} sets another flag", RetryOn::NAMES[i]);
    }
}

/// Every kind of mistake the `http` section can hold, in one file: each is reported, once, with
/// its path.
#[test]
fn reports_every_problem_with_its_path() {
    let text = r#"
listeners:
  - name: http_in
    address: 127.0.0.1:10000
    http:
      max_request_headers_kb: 0
      max_headers_count: 1000
      request_headers_timeout: 0s
      idle_timeout: forever
      acess_log: {}
      virtual_hosts:
        - name: web
          domains: ["example.com", "*.example.*", "example.com:80"]
          routes:
            - match: { path: /hello, prefix: /hello }
              direct_response: { status: 100, body: 7 }
            - match: { prefix: api/, headers: [ { name: x-canary, exact: "1", present: true }, { name: x-b } ] }
              route: { cluster: api_canary, weighted_clusters: [ { cluster: a, weight: 1 } ] }
            - match: { safe_regex: "^/v[0-9+/items$" }
              route:
                weighted_clusters: [ { cluster: a, weight: 0 }, { cluster: nowhere, weight: 10 }, { cluster: b } ]
            - match: { path: /exact }
              route:
                cluster: a
                prefix_rewrite: /
                retry_policy: { retry_on: [connect-failure, 5xxx], num_retries: 11, per_try_timeout: 0s, retries: 1 }
            - match: { prefix: /x }
              route: { weighted_clusters: [], prefix_rewrite: x/, retry_policy: { retry_on: [] } }
            - match: { prefix: /y }
            - match: { prefix: /z }
              route: { cluster: a }
              direct_response: { status: 200 }
            - match: { prefix: /q, path: /r }
              route: { cluster: a, retry_policy: { retry_on: "5xx,reset" } }
            - match: { prefix: /w }
              direct_response: { status: 204, body: "no" }
            - match: { }
              route: { cluster: a, timout: 1s }
        - name: web
          domains: ["EXAMPLE.com", "*"]
          routes: []
        - name: empty
          domains: []
          routes: []
clusters:
  - { name: a, hosts: [ { address: 127.0.0.1:8001 } ] }
  - { name: b, hosts: [ { address: 127.0.0.1:8002 } ] }
"#;
    let h = "listeners[0].http";
    let v = format!("{h}.virtual_hosts[0]");
    let r = |i: usize| format!("{v}.routes[{i}]");
    let want = [
        format!("{h}.max_request_headers_kb: 0 is not a whole number from 1 to 8192"),
        format!("{h}.max_headers_count: 1000 is not a whole number from 1 to 256"),
        format!("{h}.request_headers_timeout: must be greater than zero"),
        format!(
            "{h}.idle_timeout: \"forever\" is not a duration (expected a number and a unit: 250ms, 1s, 5m, 1h)"
        ),
        // virtual_hosts[0]
        format!(
            "{v}.domains[1]: \"*.example.*\" is not a valid domain (one `*` at most, and only at its start or end: *.example.com, example.*, *)"
        ),
        format!(
            "{v}.domains[2]: \"example.com:80\" has a port (the Host header's port is ignored when matching: write \"example.com\")"
        ),
        // routes[0]
        format!(
            "{}.match: more than one path rule: give exactly one of `path`, `prefix`, `safe_regex`",
            r(0)
        ),
        format!(
            "{}.direct_response.status: 100 is not a whole number from 200 to 599",
            r(0)
        ),
        format!(
            "{}.direct_response.body: expected a string, found the number 7 (write it in quotes: \"7\")",
            r(0)
        ),
        // routes[1]
        format!(
            "{}.match.prefix: \"api/\" does not start with '/' (request paths do)",
            r(1)
        ),
        format!(
            "{}.match.headers[0]: more than one rule: give exactly one of `exact`, `prefix`, `present`, `safe_regex`",
            r(1)
        ),
        format!(
            "{}.match.headers[1]: no rule: give one of `exact`, `prefix`, `present`, `safe_regex`",
            r(1)
        ),
        format!(
            "{}.route.cluster: unknown cluster \"api_canary\" (known: a, b)",
            r(1)
        ),
        format!(
            "{}.route: more than one target: give exactly one of `cluster`, `weighted_clusters`",
            r(1)
        ),
        // routes[2]
        format!(
            "{}.match.safe_regex: \"^/v[0-9+/items$\" is not a valid regular expression: regex parse error: ^/v[0-9+/items$ ^ error: unclosed character class",
            r(2)
        ),
        format!(
            "{}.route.weighted_clusters[0].weight: 0 is not a whole number from 1 to 1000",
            r(2)
        ),
        format!(
            "{}.route.weighted_clusters[1].cluster: unknown cluster \"nowhere\" (known: a, b)",
            r(2)
        ),
        format!(
            "{}.route.weighted_clusters[2].weight: missing (this field is required)",
            r(2)
        ),
        // routes[3]
        format!(
            "{}.route.prefix_rewrite: only allowed with a `prefix` match (this route matches by `path`)",
            r(3)
        ),
        format!(
            "{}.route.retry_policy.retry_on[1]: unknown value \"5xxx\" (expected one of: connect-failure, reset, 5xx, gateway-error, retriable-4xx, refused-stream, retriable-status-codes, cancelled, deadline-exceeded, internal, resource-exhausted, unavailable); did you mean '5xx'?",
            r(3)
        ),
        format!(
            "{}.route.retry_policy.num_retries: 11 is not a whole number from 0 to 10",
            r(3)
        ),
        format!(
            "{}.route.retry_policy.per_try_timeout: must be greater than zero",
            r(3)
        ),
        format!(
            "{}.route.retry_policy.retries: unknown field (expected one of: retry_on, retriable_status_codes, num_retries, per_try_timeout)",
            r(3)
        ),
        // routes[4]
        format!(
            "{}.route.weighted_clusters: at least one cluster is required",
            r(4)
        ),
        format!(
            "{}.route.prefix_rewrite: \"x/\" does not start with '/' (request paths do)",
            r(4)
        ),
        format!(
            "{}.route.retry_policy.retry_on: at least one retry condition is required (any of: connect-failure, reset, 5xx, gateway-error, retriable-4xx, refused-stream, retriable-status-codes, cancelled, deadline-exceeded, internal, resource-exhausted, unavailable)",
            r(4)
        ),
        // routes[5]
        format!(
            "{}: no action: give one of `route`, `direct_response`",
            r(5)
        ),
        // routes[6]
        format!(
            "{}: more than one action: give exactly one of `route`, `direct_response`",
            r(6)
        ),
        // routes[7]
        format!(
            "{}.match: more than one path rule: give exactly one of `path`, `prefix`, `safe_regex`",
            r(7)
        ),
        format!(
            "{}.route.retry_policy.retry_on: expected a list, found the string \"5xx,reset\" (write it as a list: [5xx, reset])",
            r(7)
        ),
        // routes[8]
        format!(
            "{}.direct_response.body: a 204 response has no body (leave `body` out)",
            r(8)
        ),
        // routes[9]
        format!(
            "{}.match: no path rule: give one of `path`, `prefix`, `safe_regex`",
            r(9)
        ),
        format!(
            "{}.route.timout: unknown field (expected one of: cluster, weighted_clusters, timeout, prefix_rewrite, retry_policy, request_headers_to_add, request_headers_to_remove, response_headers_to_add, response_headers_to_remove, upgrade_configs); did you mean 'timeout'?",
            r(9)
        ),
        // virtual_hosts[2]
        format!(
            "{h}.virtual_hosts[2].domains: at least one domain is required (`*` matches any host)"
        ),
        // across virtual hosts
        format!(
            "{h}.virtual_hosts[1].name: duplicate name \"web\" (already used by {h}.virtual_hosts[0])"
        ),
        format!(
            "{h}.virtual_hosts[1].domains[0]: duplicate domain \"EXAMPLE.com\" (already used by {h}.virtual_hosts[0].domains[0])"
        ),
        format!(
            "{h}.acess_log: unknown field (expected one of: max_request_headers_kb, max_headers_count, request_headers_timeout, stream_idle_timeout, idle_timeout, normalize_path, merge_slashes, path_with_escaped_slashes_action, codec, http2, forwarded_proto, upgrade_types, server_name, server_header_transformation, forward_client_cert, set_current_client_cert_details, access_log, virtual_hosts); did you mean 'access_log'?"
        ),
    ];
    let got = errors(text);
    for w in &want {
        assert!(got.contains(w), "missing {w:?} in {got:#?}");
    }
    assert_eq!(got, want);
}

#[test]
fn listener_level_problems() {
    assert_eq!(
        errors("listeners: [ { name: h, address: 127.0.0.1:1, http: { virtual_hosts: [] } } ]"),
        ["listeners[0].http.virtual_hosts: at least one virtual host is required"]
    );
    assert_eq!(
        errors("listeners: [ { name: h, address: 127.0.0.1:1, http: {} } ]"),
        ["listeners[0].http.virtual_hosts: missing (this field is required)"]
    );
    assert_eq!(
        errors("listeners: [ { name: h, address: 127.0.0.1:1, http: } ]"),
        ["listeners[0].http: expected a mapping, found nothing (null)"]
    );
    assert_eq!(
        errors(
            "listeners: [ { name: h, address: 127.0.0.1:1, echo: {}, http: { virtual_hosts: [ { name: v, domains: ['*'], routes: [] } ] } } ]"
        ),
        [
            "listeners[0]: more than one filter: give exactly one of `tcp_proxy`, `echo`, `http`, `bolt` (or `protocol: auto` with `http` and `bolt`)"
        ]
    );
    assert_eq!(
        errors(&with_vhosts(
            "        - { name: v, domains: ['*'], routes: [ { match: { prefix: / }, route: { cluster: c } } ], extra: 1 }"
        )),
        [
            r#"listeners[0].http.virtual_hosts[0].routes[0].route.cluster: unknown cluster "c" (known: a, b)"#,
            "listeners[0].http.virtual_hosts[0].extra: unknown field (expected one of: name, domains, routes, include_request_attempt_count)",
        ]
    );
    assert_eq!(
        errors(&with_route(
            "{ match: { prefix: /, headers: [ { name: a, present: 'yes' } ] }, route: { cluster: a, weighted_clusters: [ { cluster: a, weight: 1 }, { cluster: a, weight: 2 } ] } }"
        )),
        [
            r#"listeners[0].http.virtual_hosts[0].routes[0].match.headers[0].present: expected true or false, found "yes""#,
            "listeners[0].http.virtual_hosts[0].routes[0].route.weighted_clusters[1].cluster: duplicate cluster \"a\" (already used by listeners[0].http.virtual_hosts[0].routes[0].route.weighted_clusters[0])",
            "listeners[0].http.virtual_hosts[0].routes[0].route: more than one target: give exactly one of `cluster`, `weighted_clusters`",
        ]
    );
    assert_eq!(
        errors(&with_route(
            "{ match: { path: '/a?b', headers: {} }, rout: {} }"
        )),
        [
            r#"listeners[0].http.virtual_hosts[0].routes[0].match.path: "/a?b" contains '?' (the query string and fragment are not part of the path)"#,
            "listeners[0].http.virtual_hosts[0].routes[0].match.headers: expected a list, found a mapping",
            "listeners[0].http.virtual_hosts[0].routes[0]: no action: give one of `route`, `direct_response`",
            "listeners[0].http.virtual_hosts[0].routes[0].rout: unknown field (expected one of: match, route, direct_response); did you mean 'route'?",
        ]
    );
}

#[test]
fn the_example_config_file_is_valid() {
    let text = include_str!("../../../../../configs/http.yaml");
    let config = Config::from_yaml(text).unwrap_or_else(|e| panic!("configs/http.yaml:\n{e}"));
    let ListenerFilter::Http(h) = &config.listeners[0].filter else {
        panic!("configs/http.yaml: the first listener is not http")
    };
    crate::router::Router::new(h).unwrap();
}

#[test]
fn dumps_as_json() {
    let config = Config::from_yaml(EXAMPLE).unwrap();
    let v = serde_json::to_value(&config).unwrap();
    let h = &v["listeners"][0]["http"];
    assert_eq!(h["request_headers_timeout"], "10s");
    assert_eq!(h["idle_timeout"], "1h");
    assert_eq!(
        h["virtual_hosts"][0]["routes"][0]["match"]["path"],
        "/hello"
    );
    assert_eq!(
        h["virtual_hosts"][0]["routes"][3]["route"]["retry_policy"]["per_try_timeout"],
        "5s"
    );
}

#[test]
fn codec_and_http2_settings_decode_with_defaults_and_errors_name_the_field() {
    use crate::config::http::{Http2Settings, HttpCodec};
    let with = |knobs: &str| {
        format!(
            "listeners:\n  - name: h\n    address: 127.0.0.1:1\n    http:\n{knobs}      virtual_hosts:\n        - {{ name: v, domains: ['*'], routes: [ {{ match: {{ prefix: / }}, direct_response: {{ status: 200 }} }} ] }}\n\
             clusters:\n  - {{ name: a, hosts: [ {{ address: 127.0.0.1:2 }} ] }}\n"
        )
    };
    let defaults = http(&with(""));
    assert_eq!(defaults.codec, HttpCodec::Auto);
    assert_eq!(
        defaults.http2,
        Http2Settings {
            max_concurrent_streams: 100,
            max_header_list_size: 65_536,
            initial_stream_window_size: 262_144,
            initial_connection_window_size: 1_048_576,
            connection_keepalive: None,
        }
    );
    let got = http(&with(
        "      codec: http1\n      http2: { max_concurrent_streams: 8, max_header_list_size: 4096, initial_stream_window_size: 65535, initial_connection_window_size: 65535 }\n",
    ));
    assert_eq!(got.codec, HttpCodec::Http1);
    assert_eq!(got.http2.max_concurrent_streams, 8);
    assert_eq!(got.http2.max_header_list_size, 4096);
    assert_eq!(http(&with("      codec: http2\n")).codec, HttpCodec::Http2);

    let errs = errors(&with(
        "      codec: h2c\n      http2: { max_concurrent_streams: 0, max_header_list_size: 100, initial_stream_window_size: 1000, bogus: 1 }\n",
    ));
    for (path, what) in [
        ("listeners[0].http.codec", "auto, http1, http2"),
        (
            "listeners[0].http.http2.max_concurrent_streams",
            "from 1 to 10000",
        ),
        (
            "listeners[0].http.http2.max_header_list_size",
            "from 1024 to 1048576",
        ),
        (
            "listeners[0].http.http2.initial_stream_window_size",
            "from 65535 to 2147483647",
        ),
        ("listeners[0].http.http2.bogus", ""),
    ] {
        assert!(
            errs.iter().any(|e| e.contains(path) && e.contains(what)),
            "{path}: {errs:?}"
        );
    }
    let errs = errors(&with(
        "      http2: { initial_stream_window_size: 1048576, initial_connection_window_size: 65535 }\n",
    ));
    assert!(
        errs.iter().any(
            |e| e.contains("listeners[0].http.http2.initial_connection_window_size")
                && e.contains("smaller than initial_stream_window_size")
        ),
        "{errs:?}"
    );
}

/// A listener's `http2.connection_keepalive` (Envoy's `http2_protocol_options` one): off by
/// default, both durations required and above zero, errors at their paths, and the dump
/// writes it back so that the dumped config loads to the same keepalive.
#[test]
fn listener_http2_connection_keepalive_is_off_by_default_and_validated() {
    use crate::config::Http2Keepalive;
    use std::time::Duration;
    let with = |knobs: &str| {
        format!(
            "listeners:\n  - name: h\n    address: 127.0.0.1:1\n    http:\n{knobs}      virtual_hosts:\n        - {{ name: v, domains: ['*'], routes: [ {{ match: {{ prefix: / }}, direct_response: {{ status: 200 }} }} ] }}\n"
        )
    };
    assert_eq!(http(&with("")).http2.connection_keepalive, None);
    let on = with("      http2: { connection_keepalive: { interval: 30s, timeout: 5s } }\n");
    let want = Some(Http2Keepalive {
        interval: Duration::from_secs(30),
        timeout: Duration::from_secs(5),
        interval_jitter_percent: 15,
    });
    assert_eq!(http(&on).http2.connection_keepalive, want);
    let no_jitter = with(
        "      http2: { connection_keepalive: { interval: 30s, timeout: 5s, interval_jitter_percent: 0 } }\n",
    );
    assert_eq!(
        http(&no_jitter)
            .http2
            .connection_keepalive
            .map(|k| k.interval_jitter_percent),
        Some(0)
    );
    let config = Config::from_yaml(&on).unwrap();
    let dumped = serde_json::to_value(&config.listeners[0]).unwrap();
    let text = dumped.to_string();
    assert!(
        text.contains(
            r#""connection_keepalive":{"interval":"30s","timeout":"5s","interval_jitter_percent":15}"#
        ),
        "{text}"
    );
    // The whole dump (unset options written as null, left out here) loads back the same.
    let mut tree = serde_json::to_value(&config).unwrap();
    no_nulls(&mut tree);
    assert_eq!(Config::from_tree(&tree).unwrap(), config);
    // Turning it on is a change of the listener (a reload applies it; its socket stays).
    let off = Config::from_yaml(&with("")).unwrap();
    let d = crate::config::diff::diff(&off, &config);
    assert_eq!(
        d.listeners,
        [crate::config::diff::Change::Changed {
            previous: 0,
            next: 0
        }]
    );
    assert_eq!(
        d.sockets,
        [crate::config::diff::ListenerSocket::Keep { previous: 0 }]
    );
    let errs = errors(&with(
        "      http2: { connection_keepalive: { interval: 0s, jitter: 1, interval_jitter_percent: 101 } }\n",
    ));
    for (path, what) in [
        (
            "listeners[0].http.http2.connection_keepalive.interval",
            "must be greater than zero",
        ),
        (
            "listeners[0].http.http2.connection_keepalive.timeout",
            "missing",
        ),
        (
            "listeners[0].http.http2.connection_keepalive.jitter",
            "unknown field",
        ),
        (
            "listeners[0].http.http2.connection_keepalive.interval_jitter_percent",
            "must be a whole number of percent, 0 to 100",
        ),
    ] {
        assert!(
            errs.iter().any(|e| e.contains(path) && e.contains(what)),
            "{path}: {errs:?}"
        );
    }
}

#[test]
fn forwarded_proto_is_overwrite_by_default_and_one_of_two_names() {
    use crate::config::http::ForwardedProto;
    let routes = r#"virtual_hosts: [ { name: v, domains: ["*"], routes: [ { match: { prefix: / }, direct_response: { status: 200 } } ] } ]"#;
    let config = |extra: &str| {
        format!(
            "listeners:\n  - name: l\n    address: 127.0.0.1:8080\n    http: {{ {extra}{routes} }}\n"
        )
    };
    assert_eq!(http(&config("")).forwarded_proto, ForwardedProto::Overwrite);
    assert_eq!(
        http(&config("forwarded_proto: preserve, ")).forwarded_proto,
        ForwardedProto::Preserve
    );
    let errs = errors(&config("forwarded_proto: trust, "));
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(
        errs[0].starts_with("listeners[0].http.forwarded_proto: "),
        "{errs:?}"
    );
    // What goes upstream: (over TLS, the client sent one) → the value set.
    let o = ForwardedProto::Overwrite;
    let p = ForwardedProto::Preserve;
    assert_eq!(o.value(false, true), Some(&b"http"[..]));
    assert_eq!(o.value(true, true), Some(&b"https"[..]));
    assert_eq!(p.value(false, true), None);
    assert_eq!(p.value(true, false), Some(&b"https"[..]));
    assert_eq!(p.value(false, false), Some(&b"http"[..]));
}

/// `upgrade_types`: left out, every type; a list, those (lowercase, any case matching); `[]`,
/// none; a duplicate or a non-token refused at its index.
#[test]
fn upgrade_types_list_the_upgrades_tunnelled() {
    let routes = r#"virtual_hosts: [ { name: v, domains: ["*"], routes: [ { match: { prefix: / }, direct_response: { status: 200 } } ] } ]"#;
    let config = |extra: &str| {
        format!(
            "listeners:\n  - name: l\n    address: 127.0.0.1:8080\n    http: {{ {extra}{routes} }}\n"
        )
    };
    let any = http(&config(""));
    assert_eq!(any.upgrade_types, None);
    let one = |v: &'static [u8]| [v];
    assert!(any.upgrade_allowed(one(b"websocket")) && any.upgrade_allowed(one(b"h2c")));
    assert!(any.upgrade_allowed([b"websocket".as_slice(), b"h2c"]));
    let ws = http(&config("upgrade_types: [ WebSocket ], "));
    assert_eq!(ws.upgrade_types, Some(vec!["websocket".to_owned()]));
    assert!(ws.upgrade_allowed(one(b"websocket")) && ws.upgrade_allowed(one(b"WEBSOCKET ")));
    assert!(!ws.upgrade_allowed(one(b"h2c")) && !ws.upgrade_allowed(one(b"")));
    // Every protocol named must be listed: another element, or another field, refuses; an
    // empty element is skipped, but some protocol must be named.
    assert!(ws.upgrade_allowed(one(b"websocket, WebSocket")));
    assert!(ws.upgrade_allowed(one(b"websocket,")));
    assert!(!ws.upgrade_allowed(one(b"websocket, h2c")));
    assert!(!ws.upgrade_allowed(one(b"h2c,websocket")));
    assert!(!ws.upgrade_allowed([b"websocket".as_slice(), b"h2c"]));
    assert!(!ws.upgrade_allowed([b"h2c".as_slice(), b"websocket"]));
    assert!(ws.upgrade_allowed([b"websocket".as_slice(), b"websocket"]));
    assert!(!ws.upgrade_allowed(one(b" , ")) && !ws.upgrade_allowed([]));
    let none = http(&config("upgrade_types: [], "));
    assert!(!none.upgrade_allowed(one(b"websocket")));
    assert_eq!(
        errors(&config(
            "upgrade_types: [ websocket, WEBSOCKET, 'web socket' ], "
        )),
        [
            r#"listeners[0].http.upgrade_types[2]: "web socket" is not an upgrade token (e.g. websocket)"#
        ]
    );
    assert_eq!(
        errors(&config("upgrade_types: [ websocket, WEBSOCKET ], ")),
        [r#"listeners[0].http.upgrade_types[1]: "websocket" is listed twice"#]
    );
}

/// A route's `upgrade_configs` (`{ upgrade_type, enabled }`, enabled by default) override
/// the listener's `upgrade_types` for the types they name, either way; a duplicate or a
/// non-token is refused at its path.
#[test]
fn a_routes_upgrade_configs_override_the_listeners_types() {
    use crate::config::http::{RouteUpgrade, upgrade_allowed};
    let config = with_route(
        "{ match: { prefix: / }, route: { cluster: a, upgrade_configs: [ { upgrade_type: WebSocket, enabled: false }, { upgrade_type: h2c } ] } }",
    );
    let c = Config::from_yaml(&config).unwrap_or_else(|e| panic!("{e}"));
    let ListenerFilter::Http(h) = &c.listeners[0].filter else {
        panic!("http")
    };
    let RouteAction::Forward(f) = &h.virtual_hosts[0].routes[0].action else {
        panic!("forward")
    };
    let route = &f.upgrade_configs;
    assert_eq!(
        route,
        &[
            RouteUpgrade {
                upgrade_type: "websocket".into(),
                enabled: false
            },
            RouteUpgrade {
                upgrade_type: "h2c".into(),
                enabled: true
            },
        ]
    );
    let ws = ["websocket".to_owned()];
    let one = |v: &'static [u8]| [v];
    // The route's word wins for the types it names, whatever the listener's list.
    for listener in [None, Some(&ws[..]), Some(&[][..])] {
        assert!(!upgrade_allowed(listener, route, one(b"websocket")));
        assert!(upgrade_allowed(listener, route, one(b"H2C")));
        assert!(!upgrade_allowed(listener, route, one(b"h2c, websocket")));
    }
    // Other types: the listener's.
    assert!(upgrade_allowed(None, route, one(b"spdy")));
    assert!(!upgrade_allowed(Some(&ws), route, one(b"spdy")));
    let h2c_off = [RouteUpgrade {
        upgrade_type: "h2c".into(),
        enabled: false,
    }];
    assert!(upgrade_allowed(Some(&ws), &h2c_off, one(b"websocket")));
    assert!(!upgrade_allowed(
        Some(&ws),
        &h2c_off,
        [&b"websocket"[..], b"h2c"]
    ));
    // The dump writes them back.
    assert_eq!(
        serde_json::to_value(f).unwrap()["upgrade_configs"],
        serde_json::json!([
            { "upgrade_type": "websocket", "enabled": false },
            { "upgrade_type": "h2c", "enabled": true },
        ])
    );
    assert_eq!(
        errors(&with_route(
            "{ match: { prefix: / }, route: { cluster: a, upgrade_configs: [ { upgrade_type: websocket }, { upgrade_type: WEBSOCKET, enabled: false } ] } }"
        )),
        [
            r#"listeners[0].http.virtual_hosts[0].routes[0].route.upgrade_configs[1].upgrade_type: "websocket" is listed twice"#
        ]
    );
    let e = errors(&with_route(
        "{ match: { prefix: / }, route: { cluster: a, upgrade_configs: [ { upgrade_type: 'web socket', enabld: true } ] } }",
    ));
    assert_eq!(e.len(), 2, "{e:?}");
    assert_eq!(
        e[0],
        r#"listeners[0].http.virtual_hosts[0].routes[0].route.upgrade_configs[0].upgrade_type: "web socket" is not an upgrade token (e.g. websocket)"#
    );
    assert!(
        e[1].starts_with(
            "listeners[0].http.virtual_hosts[0].routes[0].route.upgrade_configs[0].enabld: unknown field"
        ),
        "{e:?}"
    );
}

/// `server_name` (none by default) with `server_header_transformation` (default
/// `overwrite`, only with a name); a name that is no header value, or empty, refused.
#[test]
fn server_name_and_its_transformation() {
    use crate::config::http::{ServerHeader, ServerHeaderTransformation};
    let routes = r#"virtual_hosts: [ { name: v, domains: ["*"], routes: [ { match: { prefix: / }, direct_response: { status: 200 } } ] } ]"#;
    let config = |extra: &str| {
        format!(
            "listeners:\n  - name: l\n    address: 127.0.0.1:8080\n    http: {{ {extra}{routes} }}\n"
        )
    };
    assert_eq!(http(&config("")).server_header, None);
    assert_eq!(
        http(&config("server_name: istio-envoy, ")).server_header,
        Some(ServerHeader {
            name: "istio-envoy".into(),
            transformation: ServerHeaderTransformation::Overwrite
        })
    );
    assert_eq!(
        http(&config(
            "server_name: s, server_header_transformation: pass_through, "
        ))
        .server_header
        .map(|s| s.transformation),
        Some(ServerHeaderTransformation::PassThrough)
    );
    assert_eq!(
        errors(&config("server_header_transformation: overwrite, ")),
        ["listeners[0].http.server_header_transformation: applies only with `server_name`"]
    );
    assert_eq!(
        errors(&config("server_name: '', ")),
        ["listeners[0].http.server_name: cannot be empty"]
    );
    let e = errors(&config("server_name: \"a\\nb\", "));
    assert!(e[0].starts_with("listeners[0].http.server_name: "), "{e:?}");
}

/// `forward_client_cert` (default `sanitize`) and `set_current_client_cert_details`.
#[test]
fn forward_client_cert_takes_envoys_modes() {
    use crate::config::http::{ClientCertDetails, ForwardClientCert};
    let routes = r#"virtual_hosts: [ { name: v, domains: ["*"], routes: [ { match: { prefix: / }, direct_response: { status: 200 } } ] } ]"#;
    let config = |extra: &str| {
        format!(
            "listeners:\n  - name: l\n    address: 127.0.0.1:8080\n    http: {{ {extra}{routes} }}\n"
        )
    };
    let d = http(&config(""));
    assert_eq!(d.forward_client_cert, ForwardClientCert::Sanitize);
    assert_eq!(
        d.set_current_client_cert_details,
        ClientCertDetails::default()
    );
    for (name, mode) in ForwardClientCert::CHOICES {
        assert_eq!(
            http(&config(&format!("forward_client_cert: {name}, "))).forward_client_cert,
            mode
        );
    }
    let h = http(&config(
        "forward_client_cert: append_forward, set_current_client_cert_details: { subject: true, dns: true, chain: true }, ",
    ));
    assert_eq!(
        h.set_current_client_cert_details,
        ClientCertDetails {
            cert: false,
            chain: true,
            subject: true,
            uri: false,
            dns: true
        }
    );
    let errs = errors(&config(
        "forward_client_cert: append, set_current_client_cert_details: { issuer: true }, ",
    ));
    assert_eq!(errs.len(), 2, "{errs:?}");
    assert!(
        errs[0].starts_with("listeners[0].http.forward_client_cert: "),
        "{errs:?}"
    );
    assert!(
        errs[1]
            .starts_with("listeners[0].http.set_current_client_cert_details.issuer: unknown field"),
        "{errs:?}"
    );
}

#[test]
fn retry_on_takes_grpc_status_names() {
    let got = http(&with_route(
        "{ match: { prefix: / }, route: { cluster: b, retry_policy: { retry_on: [unavailable, resource-exhausted, cancelled, deadline-exceeded, internal] } } }",
    ));
    let RouteAction::Forward(f) = &got.virtual_hosts[0].routes[0].action else {
        panic!()
    };
    let on = f.retry_policy.as_ref().unwrap().retry_on;
    for code in [1, 4, 8, 13, 14] {
        assert!(on.grpc(code), "{code}");
    }
    assert!(!on.grpc(2) && !on.reset && !on.server_error);
}

/// Istio's default retry policy, and its virtual hosts' attempt count, as Sluice writes them.
#[test]
fn retriable_status_codes_and_the_attempt_count_decode_and_need_each_other() {
    let yaml = |vhost_extra: &str, retry: &str| {
        format!(
            r#"
listeners:
  - name: in
    address: 127.0.0.1:10000
    http:
      virtual_hosts:
        - name: web
          domains: ["*"]
          {vhost_extra}
          routes:
            - match: {{ prefix: / }}
              route: {{ cluster: app, retry_policy: {retry} }}
clusters:
  - name: app
    hosts: [ {{ address: 127.0.0.1:8080 }} ]
"#
        )
    };
    let ok = Config::from_yaml(&yaml(
        "include_request_attempt_count: true",
        "{ retry_on: [connect-failure, refused-stream, unavailable, cancelled, retriable-status-codes], \
         retriable_status_codes: [503, 429], num_retries: 2 }",
    ))
    .expect("valid");
    let ListenerFilter::Http(http) = &ok.listeners[0].filter else {
        panic!("http")
    };
    let vhost = &http.virtual_hosts[0];
    assert!(vhost.include_request_attempt_count);
    let RouteAction::Forward(f) = &vhost.routes[0].action else {
        panic!("forward")
    };
    let on = f.retry_policy.as_ref().expect("policy").retry_on;
    assert!(on.retriable_status_codes && on.refused_stream && on.connect_failure);
    assert_eq!(on.status_codes.iter().collect::<Vec<_>>(), [429, 503]);

    for (retry, error) in [
        (
            "{ retry_on: [retriable-status-codes] }",
            "retriable-status-codes needs the codes",
        ),
        (
            "{ retry_on: [5xx], retriable_status_codes: [503] }",
            "retried only with retriable-status-codes in retry_on",
        ),
        (
            "{ retry_on: [retriable-status-codes], retriable_status_codes: [503, 503] }",
            "retriable_status_codes[1]: 503 is listed twice",
        ),
        (
            "{ retry_on: [retriable-status-codes], retriable_status_codes: [600] }",
            "600 is not a whole number from 100 to 599",
        ),
        (
            "{ retry_on: [retriable-status-codes], retriable_status_codes: [] }",
            "at least one status code is required",
        ),
    ] {
        let e = Config::from_yaml(&yaml("", retry))
            .expect_err(retry)
            .to_string();
        assert!(e.contains(error), "{retry}: {e}");
    }
    let e = Config::from_yaml(&yaml(
        "include_request_attempt_count: always",
        "{ retry_on: [5xx] }",
    ))
    .expect_err("not a boolean")
    .to_string();
    assert!(e.contains("include_request_attempt_count"), "{e}");
}

/// The keepalive's next PING: `interval` plus at most `interval_jitter_percent` of it, scaled
/// from the caller's draw; no jitter at 0 %.
#[test]
fn keepalive_jitter_stays_within_its_percent_of_the_interval() {
    use crate::config::Http2Keepalive;
    use std::time::Duration;
    let k = Http2Keepalive {
        interval: Duration::from_secs(20),
        timeout: Duration::from_secs(5),
        interval_jitter_percent: 15,
    };
    assert_eq!(k.next_ping_after(0), Duration::from_secs(20));
    assert_eq!(k.next_ping_after(u32::MAX), Duration::from_secs(23));
    assert_eq!(
        k.next_ping_after(u32::MAX / 2),
        Duration::from_nanos(21_499_999_999)
    );
    let none = Http2Keepalive {
        interval_jitter_percent: 0,
        ..k
    };
    assert_eq!(none.next_ping_after(u32::MAX), Duration::from_secs(20));
}
