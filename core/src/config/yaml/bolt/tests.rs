use std::time::Duration;

use super::parse_size;
use crate::config::bolt::*;
use crate::config::{Config, ListenerFilter};

/// The example of issue 4, whole (with the `http` block of the `auto` listener filled in).
const EXAMPLE: &str = r#"
listeners:
  - name: rpc_in
    address: 127.0.0.1:12200
    bolt:
      max_frame_size: 16MiB
      routes:
        - match: { service: "com.example.EchoService:1.0" }
          route: { cluster: echo_rpc, timeout: 3s }
        - match: { service_regex: "^com\\.example\\..*", headers: [ { name: zone, exact: gz } ] }
          route: { cluster: gz_rpc }
  - name: mixed_in
    address: 127.0.0.1:12201
    protocol: auto
    http: { virtual_hosts: [ { name: all, domains: ["*"], routes: [ { match: { prefix: / }, route: { cluster: web } } ] } ] }
    bolt:
      max_frame_size: 64KiB
      routes:
        - match: { headers: [ { name: canary, present: true }, { name: sofa_head_method_name, regex: "get.*" } ] }
          route: { cluster: gz_rpc, timeout: 250ms }
        - route: { cluster: echo_rpc }
clusters:
  - { name: echo_rpc, hosts: [ { address: 127.0.0.1:12220 } ] }
  - { name: gz_rpc, hosts: [ { address: 127.0.0.1:12221 } ] }
  - { name: web, hosts: [ { address: 127.0.0.1:8080 } ] }
"#;

fn errors(text: &str) -> Vec<String> {
    match Config::from_yaml(text) {
        Ok(c) => panic!("expected errors, got {c:?}"),
        Err(e) => e.0.iter().map(ToString::to_string).collect(),
    }
}

#[test]
fn parses_the_issue_example() {
    let c = Config::from_yaml(EXAMPLE).unwrap_or_else(|e| panic!("{e}"));
    let ListenerFilter::Bolt(b) = &c.listeners[0].filter else {
        panic!("not bolt: {:?}", c.listeners[0].filter)
    };
    assert_eq!(b.max_frame_size, DEFAULT_MAX_FRAME_SIZE);
    assert_eq!(
        b.routes,
        vec![
            BoltRoute {
                matcher: BoltRouteMatch {
                    service: Some(ServiceMatch::Exact("com.example.EchoService:1.0".into())),
                    headers: vec![],
                },
                action: BoltRouteAction {
                    cluster: "echo_rpc".into(),
                    cluster_index: 0,
                    timeout: Some(Duration::from_secs(3)),
                },
            },
            BoltRoute {
                matcher: BoltRouteMatch {
                    service: Some(ServiceMatch::Regex(r"^com\.example\..*".into())),
                    headers: vec![BoltHeaderMatcher {
                        name: "zone".into(),
                        rule: BoltHeaderRule::Exact("gz".into()),
                    }],
                },
                action: BoltRouteAction {
                    cluster: "gz_rpc".into(),
                    cluster_index: 1,
                    timeout: None,
                },
            },
        ]
    );
    let ListenerFilter::Auto { http, bolt } = &c.listeners[1].filter else {
        panic!("not auto: {:?}", c.listeners[1].filter)
    };
    assert_eq!(http.virtual_hosts[0].name, "all");
    assert_eq!(bolt.max_frame_size, 64 << 10);
    assert_eq!(
        bolt.routes[0].matcher.headers,
        vec![
            BoltHeaderMatcher {
                name: "canary".into(),
                rule: BoltHeaderRule::Present(true),
            },
            BoltHeaderMatcher {
                name: "sofa_head_method_name".into(),
                rule: BoltHeaderRule::Regex("get.*".into()),
            },
        ]
    );
    assert_eq!(
        bolt.routes[0].action.timeout,
        Some(Duration::from_millis(250))
    );
    assert_eq!(bolt.routes[1].matcher.service, None);
    assert!(bolt.routes[1].matcher.headers.is_empty());
    // The dump is JSON with the size in bytes and the timeout as written.
    let dump = serde_json::to_value(&c).unwrap();
    assert_eq!(dump["listeners"][0]["bolt"]["max_frame_size"], 16 << 20);
    assert_eq!(
        dump["listeners"][0]["bolt"]["routes"][0]["route"]["timeout"],
        "3s"
    );
}

#[test]
fn sizes() {
    assert_eq!(parse_size("16MiB"), Ok(16 << 20));
    assert_eq!(parse_size("64KiB"), Ok(64 << 10));
    assert_eq!(parse_size("1GiB"), Ok(1 << 30));
    assert_eq!(parse_size("4096"), Ok(4096));
    assert_eq!(parse_size("4096B"), Ok(4096));
    assert!(
        parse_size("16MB")
            .unwrap_err()
            .contains("unknown unit \"MB\"")
    );
    assert!(parse_size("MiB").unwrap_err().contains("not a size"));
    assert!(parse_size("-1KiB").unwrap_err().contains("not a size"));
    assert!(
        parse_size("99999999999999999999GiB")
            .unwrap_err()
            .contains("not a size")
    );
    assert!(
        parse_size("17179869184GiB")
            .unwrap_err()
            .contains("too large")
    );
}

#[test]
fn reports_every_bolt_mistake_with_its_path() {
    let text = r#"
listeners:
  - name: rpc_in
    address: 127.0.0.1:12200
    bolt:
      max_frame_size: 16MB
      rutes: []
  - name: rpc2
    address: 127.0.0.1:12201
    bolt:
      max_frame_size: 100
      routes:
        - match: { service: "a", service_regex: "b" }
          route: { cluster: nowhere, timeout: 0s }
        - match: { service: "", headers: [ { name: zone } ] }
          route: { cluster: c1, timeout: soon }
        - match: { service_regex: "(" , headers: [ { name: "", exact: x }, { name: z, exact: a, regex: b } ] }
          route: { cluster: c1, colour: red }
        - match: { servise: x, headers: [ { name: z, regex: "[" }, { name: z, present: yes } ] }
        - route: {}
  - name: rpc3
    address: 127.0.0.1:12202
    bolt: { max_frame_size: 2GiB, routes: [] }
  - name: mixed
    address: 127.0.0.1:12203
    protocol: auto
    bolt: { routes: [ { route: { cluster: c1 } } ] }
  - name: mixed2
    address: 127.0.0.1:12204
    protocol: sniff
    bolt: { routes: [ { route: { cluster: c1 } } ] }
  - name: two
    address: 127.0.0.1:12205
    echo: {}
    bolt: { routes: [ { route: { cluster: c1 } } ] }
  - name: mixed3
    address: 127.0.0.1:12206
    protocol: auto
    echo: {}
    http: { virtual_hosts: [ { name: all, domains: ["*"], routes: [ { match: { prefix: / }, route: { cluster: c1 } } ] } ] }
    bolt: { routes: "all" }
clusters:
  - { name: c1, hosts: [ { address: 127.0.0.1:1 } ] }
"#;
    let got = errors(text);
    let want = [
        "listeners[0].bolt.max_frame_size: \"16MB\" has an unknown unit \"MB\" (expected a number of bytes, or a number and a unit: 64KiB, 16MiB)",
        "listeners[0].bolt.routes: missing (this field is required)",
        "listeners[0].bolt.rutes: unknown field (expected one of: max_frame_size, frame_timeout, idle_timeout, routes, access_log); did you mean 'routes'?",
        "listeners[1].bolt.max_frame_size: 100 bytes is out of range (1KiB to 1GiB, i.e. 1024 to 1073741824)",
        "listeners[1].bolt.routes[0].match: both `service` and `service_regex`: give at most one of them",
        "listeners[1].bolt.routes[0].route.cluster: unknown cluster \"nowhere\" (known: c1)",
        "listeners[1].bolt.routes[0].route.timeout: must be greater than zero (leave it out for no route timeout)",
        "listeners[1].bolt.routes[1].match.service: must not be empty",
        "listeners[1].bolt.routes[1].match.headers[0]: no rule: give exactly one of `exact`, `regex`, `present`",
        "listeners[1].bolt.routes[1].route.timeout: \"soon\" is not a duration (expected a number and a unit: 250ms, 1s, 5m, 1h)",
        "listeners[1].bolt.routes[2].match.service_regex: \"(\" is not a valid regular expression: regex parse error: ( ^ error: unclosed group",
        "listeners[1].bolt.routes[2].match.headers[0].name: \"\" is not a valid header key (non-empty, no control characters)",
        "listeners[1].bolt.routes[2].match.headers[1]: more than one rule: give exactly one of `exact`, `regex`, `present`",
        "listeners[1].bolt.routes[2].route.colour: unknown field (expected one of: cluster, timeout)",
        "listeners[1].bolt.routes[3].match.headers[0].regex: \"[\" is not a valid regular expression: regex parse error: [ ^ error: unclosed character class",
        "listeners[1].bolt.routes[3].match.servise: unknown field (expected one of: service, service_regex, headers); did you mean 'service'?",
        "listeners[1].bolt.routes[3].route: missing (this field is required)",
        "listeners[1].bolt.routes[4].route.cluster: missing (this field is required)",
        "listeners[2].bolt.max_frame_size: 2147483648 bytes is out of range (1KiB to 1GiB, i.e. 1024 to 1073741824)",
        "listeners[2].bolt.routes: at least one route is required",
        "listeners[3].protocol: `protocol: auto` needs exactly the filters `http` and `bolt` (given: bolt)",
        "listeners[4].protocol: unknown value \"sniff\" (expected one of: auto)",
        "listeners[5]: more than one filter: give exactly one of `tcp_proxy`, `echo`, `http`, `bolt` (or `protocol: auto` with `http` and `bolt`)",
        "listeners[6].bolt.routes: expected a list, found a string",
        "listeners[6].protocol: `protocol: auto` needs exactly the filters `http` and `bolt` (given: echo, http, bolt)",
    ];
    assert_eq!(got, want, "\n{}", got.join("\n"));
}

/// A `bolt` listener's `access_log`: the Bolt fields and the common ones load; an HTTP-only or
/// TCP-only field, and `request_headers`, are refused naming the field; an HTTP or tcp_proxy
/// template refuses the Bolt fields.
#[test]
fn bolt_access_log_takes_only_bolt_fields() {
    let with = |log: &str| {
        format!(
            "listeners:\n  - name: rpc\n    address: 127.0.0.1:12200\n    bolt:\n      \
             access_log: {log}\n      routes: [ {{ route: {{ cluster: c1 }} }} ]\n\
             clusters:\n  - {{ name: c1, hosts: [ {{ address: 127.0.0.1:1 }} ] }}\n"
        )
    };
    let c = Config::from_yaml(&with(
        "{ path: /tmp/bolt.log, template: '%START_TIME% %BOLT_SERVICE% %BOLT_METHOD% \
         %BOLT_REQUEST_ID% %BOLT_STATUS% %RESPONSE_FLAGS% %UPSTREAM_CLUSTER% %UPSTREAM_HOST% \
         %ORIGINAL_DST% %BYTES_RECEIVED% %BYTES_SENT% %DURATION% %LISTENER% \
         %DOWNSTREAM_REMOTE_ADDRESS%' }",
    ))
    .unwrap_or_else(|e| panic!("{e}"));
    let ListenerFilter::Bolt(b) = &c.listeners[0].filter else {
        panic!("not bolt")
    };
    assert_eq!(
        b.access_log.as_ref().unwrap().path.as_deref(),
        Some("/tmp/bolt.log")
    );
    assert!(Config::from_yaml(&with("{ format: json }")).is_ok());
    let fields = crate::config::http::BOLT_LOG_FIELDS.join(", ");
    assert_eq!(
        errors(&with("{ template: '%BOLT_STATUS% %STATUS%' }")),
        [format!(
            "listeners[0].bolt.access_log.template: %STATUS% is a field of HTTP requests; a bolt \
             access log has {fields}"
        )]
    );
    assert_eq!(
        errors(&with("{ template: '%CLOSE_REASON%' }")),
        [format!(
            "listeners[0].bolt.access_log.template: %CLOSE_REASON% is a field of TCP sessions; a \
             bolt access log has {fields}"
        )]
    );
    assert!(
        errors(&with("{ template: '%REQ(X-A)%' }"))[0].contains("%REQ(X-A)% is a field of HTTP")
    );
    assert_eq!(
        errors(&with("{ format: json, request_headers: [x-a] }")),
        [
            "listeners[0].bolt.access_log.request_headers: not for a bolt listener (its JSON \
             lines carry bolt_service and bolt_method)"
        ]
    );
    let http = "listeners:\n  - name: web\n    address: 127.0.0.1:8080\n    http:\n      \
                access_log: { template: '%STATUS% %BOLT_STATUS%' }\n      virtual_hosts: [ { \
                name: all, domains: ['*'], routes: [ { match: { prefix: / }, route: { cluster: \
                c1 } } ] } ]\nclusters:\n  - { name: c1, hosts: [ { address: 127.0.0.1:1 } ] }\n";
    assert_eq!(
        errors(http),
        [
            "listeners[0].http.access_log.template: %BOLT_STATUS% is a field of Bolt requests; an \
             http access log has every other field"
        ]
    );
    let tcp = "listeners:\n  - name: t\n    address: 127.0.0.1:8080\n    tcp_proxy: { cluster: \
               c1, access_log: { template: '%BOLT_SERVICE%' } }\nclusters:\n  - { name: c1, \
               hosts: [ { address: 127.0.0.1:1 } ] }\n";
    assert!(errors(tcp)[0].contains("%BOLT_SERVICE% is a field of Bolt requests; a tcp_proxy"));
}
