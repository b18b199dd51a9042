use super::*;
use crate::config::http::{HeaderMatcher, RouteAction, RouteMatch};
use crate::config::{Config, ListenerFilter};
use crate::rng::Rng;
use proptest::prelude::*;

/// The `http` section of a YAML config (clusters `a`, `b`, `c` exist).
fn http_config(vhosts: &str) -> HttpConfig {
    let text = format!(
        "listeners:\n  - name: h\n    address: 127.0.0.1:1\n    http:\n      virtual_hosts:\n{vhosts}\n\
         clusters:\n  - {{ name: a, hosts: [ {{ address: 127.0.0.1:2 }} ] }}\n\
         \x20 - {{ name: b, hosts: [ {{ address: 127.0.0.1:3 }} ] }}\n\
         \x20 - {{ name: c, hosts: [ {{ address: 127.0.0.1:4 }} ] }}\n"
    );
    http_of(&text)
}

fn http_of(text: &str) -> HttpConfig {
    let config = Config::from_yaml(text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    match &config.listeners[0].filter {
        ListenerFilter::Http(h) => (**h).clone(),
        other => panic!("not http: {other:?}"),
    }
}

fn router(vhosts: &str) -> Router {
    Router::new(&http_config(vhosts)).unwrap()
}

fn no_headers(_: &str) -> Option<&'static [u8]> {
    None
}

/// Routes with these request headers; returns `(virtual host name, route index)`.
fn route_with(
    r: &Router,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Option<(String, usize)> {
    let lookup = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_bytes())
    };
    r.route(host.as_bytes(), path.as_bytes(), &lookup)
        .map(|m| (m.virtual_host.name.clone(), m.route_index))
}

const DOMAINS: &str = r#"
        - { name: exact, domains: ["example.com", "[::1]", "10.0.0.1"], routes: [ { match: { prefix: / }, route: { cluster: a } } ] }
        - { name: suffix_long, domains: ["*.api.example.com"], routes: [ { match: { prefix: / }, route: { cluster: a } } ] }
        - { name: suffix_short, domains: ["*.example.com"], routes: [ { match: { prefix: / }, route: { cluster: a } } ] }
        - { name: suffix_dash, domains: ["*-bar.example.com"], routes: [ { match: { prefix: / }, route: { cluster: a } } ] }
        - { name: prefix_long, domains: ["example.co.*"], routes: [ { match: { prefix: / }, route: { cluster: a } } ] }
        - { name: prefix_short, domains: ["example.*"], routes: [ { match: { prefix: / }, route: { cluster: a } } ] }
        - { name: upper, domains: ["ADMIN.Example.com"], routes: [ { match: { prefix: / }, route: { cluster: a } } ] }
        - { name: any, domains: ["*"], routes: [ { match: { prefix: / }, route: { cluster: a } } ] }"#;

#[test]
fn virtual_host_precedence() {
    let r = router(DOMAINS);
    let table: &[(&[u8], &str)] = &[
        (b"example.com", "exact"),
        (b"EXAMPLE.COM:8080", "exact"),
        (b" example.com ", "exact"),
        (b"[::1]", "exact"),
        (b"[::1]:80", "exact"),
        (b"10.0.0.1:9000", "exact"),
        (b"a.example.com", "suffix_short"),
        (b"A.Example.Com:443", "suffix_short"),
        (b"\xff.example.com", "suffix_short"),
        (b"x.api.example.com", "suffix_long"),
        // `*.api.example.com` needs at least one character before `.api`.
        (b"api.example.com", "suffix_short"),
        (b"foo-bar.example.com", "suffix_dash"),
        (b"-bar.example.com", "suffix_short"),
        // Exact beats every wildcard.
        (b"admin.EXAMPLE.com:443", "upper"),
        (b"example.org", "prefix_short"),
        (b"example.co.uk", "prefix_long"),
        // A suffix wildcard beats a prefix wildcard.
        (b"example.example.com", "suffix_short"),
        // `*` never matches the empty string.
        (b".example.com", "any"),
        (b"example.", "any"),
        (b"a.example.org", "any"),
        (b"[::1", "any"),
        (b"::1", "any"),
        (b"", "any"),
        (b"\xff\xfe", "any"),
    ];
    for (host, want) in table {
        let got = r
            .virtual_host_index(host)
            .map(|i| r.virtual_hosts()[i].name.as_str());
        assert_eq!(got, Some(*want), "host {:?}", String::from_utf8_lossy(host));
    }
}

#[test]
fn without_a_catch_all_an_unknown_host_has_no_route() {
    let r = router(
        r#"        - { name: only, domains: ["example.com"], routes: [ { match: { prefix: / }, route: { cluster: a } } ] }"#,
    );
    assert_eq!(
        route_with(&r, "example.com", "/", &[]),
        Some(("only".into(), 0))
    );
    assert_eq!(route_with(&r, "other.com", "/", &[]), None);
    assert_eq!(route_with(&r, "", "/", &[]), None);
}

const ROUTES: &str = r#"
        - name: v
          domains: ["*"]
          routes:
            - match: { path: /exact }
              direct_response: { status: 200 }
            - match: { prefix: /api/, headers: [ { name: X-Canary, exact: "1" } ] }
              route: { cluster: a }
            - match: { prefix: /api/, headers: [ { name: x-user, prefix: admin- }, { name: x-debug, present: true } ] }
              route: { cluster: b }
            - match: { safe_regex: "/v[0-9]+/items" }
              route: { cluster: c }
            - match: { prefix: /ua, headers: [ { name: user-agent, safe_regex: "curl/[0-9.]+" } ] }
              route: { cluster: a }
            - match: { prefix: /, headers: [ { name: authorization, present: false } ] }
              direct_response: { status: 401 }
            - match: { prefix: / }
              route: { cluster: c }"#;

#[test]
fn routes_in_order_first_match_wins() {
    let r = router(ROUTES);
    const NONE: usize = usize::MAX;
    let auth = ("authorization", "Bearer x");
    type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], usize);
    let cases: &[Case] = &[
        ("/exact", &[], 0),
        // Paths are case-sensitive and exact means whole.
        ("/EXACT", &[], 5),
        ("/exact/", &[], 5),
        ("/exact", &[auth], 0),
        // Header names are looked up in lowercase; the caller's lookup is case-insensitive.
        ("/api/users", &[("x-canary", "1"), auth], 1),
        ("/api/users", &[("X-CANARY", "1"), auth], 1),
        // Header values are case-sensitive and exact means whole.
        ("/api/users", &[("x-canary", "10"), auth], 6),
        // Every header rule must hold.
        (
            "/api/users",
            &[("x-user", "admin-bob"), ("x-debug", ""), auth],
            2,
        ),
        ("/api/users", &[("x-user", "admin-bob"), auth], 6),
        (
            "/api/users",
            &[("x-user", "bob"), ("x-debug", "1"), auth],
            6,
        ),
        // The first matching route wins, even when a later one also matches.
        (
            "/api/users",
            &[("x-canary", "1"), ("x-user", "admin-x"), ("x-debug", "1")],
            1,
        ),
        ("/v1/items", &[], 3),
        ("/v10/items", &[], 3),
        // A regex must match the whole path.
        ("/v1/items/", &[], 5),
        ("/x/v1/items", &[], 5),
        ("/vx/items", &[auth], 6),
        // ... and the whole header value.
        ("/ua", &[("user-agent", "curl/8.5.0"), auth], 4),
        ("/ua", &[("user-agent", "xcurl/8.5.0"), auth], 6),
        ("/ua", &[("user-agent", "curl/8.5.0 extra"), auth], 6),
        // An absent header fails every rule but `present: false`.
        ("/ua", &[auth], 6),
        ("/anything", &[], 5),
        ("/anything", &[auth], 6),
        ("", &[auth], NONE),
    ];
    for (path, headers, want) in cases {
        let got = route_with(&r, "host", path, headers).map(|(_, i)| i);
        let want = (*want != NONE).then_some(*want);
        assert_eq!(got, want, "{path} {headers:?}");
    }
}

#[test]
fn regexes_match_whole_paths_only() {
    let r = router(
        r#"
        - name: v
          domains: ["*"]
          routes:
            - { match: { safe_regex: "a|ab" }, route: { cluster: a } }
            - { match: { safe_regex: "^/v1$" }, route: { cluster: a } }
            - { match: { safe_regex: "(?m)^/m$" }, route: { cluster: a } }
            - { match: { safe_regex: "/[a-z]+" }, route: { cluster: a } }
            - { match: { safe_regex: "(?s)/s.*" }, route: { cluster: a } }"#,
    );
    let route = |path: &[u8]| r.route(b"h", path, &no_headers).map(|m| m.route_index);
    // Anchoring wraps the alternation: both branches must span the whole path.
    assert_eq!(route(b"ab"), Some(0));
    assert_eq!(route(b"a"), Some(0));
    assert_eq!(route(b"abc"), None);
    // Anchors written by the user do no harm.
    assert_eq!(route(b"/v1"), Some(1));
    assert_eq!(route(b"/v1/"), None);
    // A multi-line flag inside cannot turn a line match into a whole match.
    assert_eq!(route(b"/m"), Some(2));
    assert_eq!(route(b"/m\n/x"), None);
    assert_eq!(route(b"/x\n/m"), None);
    assert_eq!(route(b"/abc"), Some(3));
    assert_eq!(route(b"/abc/"), None);
    assert_eq!(route(b"/ABC"), None);
    // Unicode mode: `.` matches a UTF-8 character, never a byte that is not UTF-8.
    assert_eq!(route("/sé".as_bytes()), Some(4));
    assert_eq!(route(b"/s\xff\xfe"), None);
    assert_eq!(route(b"/\xff"), None);
}

#[test]
fn the_result_names_the_virtual_host_and_route() {
    let config = http_config(ROUTES);
    let r = Router::new(&config).unwrap();
    let m = r.route(b"h", b"/v1/items", &no_headers).unwrap();
    assert_eq!(m.virtual_host_index, 0);
    assert_eq!(m.virtual_host, &config.virtual_hosts[0]);
    assert_eq!(m.route_index, 3);
    assert_eq!(m.route, &config.virtual_hosts[0].routes[3]);
}

#[test]
fn an_unvalidated_config_with_a_bad_regex_is_refused() {
    let mut config = http_config(ROUTES);
    config.virtual_hosts[0].routes[4].matcher.headers[0] = HeaderMatcher {
        name: "x".into(),
        rule: HeaderRule::Regex("(".into()),
    };
    let err = Router::new(&config).unwrap_err();
    assert_eq!(
        err.path,
        "virtual_hosts[0].routes[4].match.headers[0].safe_regex"
    );
    assert!(err.message.starts_with("regex parse error:"), "{err}");
    let err = err.to_string();
    assert!(
        err.starts_with(
            "virtual_hosts[0].routes[4].match.headers[0].safe_regex: regex parse error:"
        ),
        "{err}"
    );
    config.virtual_hosts[0].routes[0].matcher = RouteMatch {
        path: PathMatch::Regex("[".into()),
        headers: vec![],
    };
    let err = Router::new(&config).unwrap_err();
    assert_eq!(err.path, "virtual_hosts[0].routes[0].match.safe_regex");
    let err = err.to_string();
    assert!(
        err.starts_with("virtual_hosts[0].routes[0].match.safe_regex: regex parse error:"),
        "{err}"
    );
    assert!(!err.contains('\n'));
}

#[test]
fn of_duplicate_domains_in_an_unvalidated_config_the_first_wins() {
    let mut config = http_config(DOMAINS);
    config.virtual_hosts[7].domains = vec!["EXAMPLE.COM".into(), "*.example.com".into()];
    config.virtual_hosts[6].domains.push("*".into());
    let r = Router::new(&config).unwrap();
    assert_eq!(r.virtual_host_index(b"example.com"), Some(0));
    assert_eq!(r.virtual_host_index(b"a.example.com"), Some(2));
    assert_eq!(r.virtual_host_index(b"nowhere"), Some(6));
}

#[test]
fn a_trailing_dot_in_the_host_is_the_same_name() {
    let r = router(DOMAINS);
    let name = |host: &str| r.virtual_host_index(host.as_bytes());
    assert_eq!(name("example.com."), Some(0));
    assert_eq!(name("example.com.:8080"), Some(0));
    assert_eq!(name("admin.example.com."), Some(6));
    assert_eq!(name("a.api.example.com."), Some(1));
    // One dot only, and a lone dot is no name.
    assert_eq!(name("example.com.."), Some(5));
    assert_eq!(name("."), Some(7));
}

fn weighted(weights: &[u32]) -> ClusterTarget {
    ClusterTarget::Weighted(
        weights
            .iter()
            .enumerate()
            .map(|(i, &weight)| WeightedCluster {
                cluster: format!("c{i}"),
                cluster_index: i,
                weight,
            })
            .collect(),
    )
}

#[test]
fn weighted_clusters_are_picked_in_proportion() {
    const PICKS: u32 = 10_000;
    for (seed, weights) in [
        (1, &[90, 10][..]),
        (2, &[50, 30, 20]),
        (3, &[1, 1, 1, 1]),
        (4, &[1000, 1]),
    ] {
        let target = weighted(weights);
        let mut rng = Rng::from_seed(seed);
        let mut counts = vec![0u32; weights.len()];
        for _ in 0..PICKS {
            counts[pick_cluster(&target, &mut rng).cluster_index] += 1;
        }
        let total: u32 = weights.iter().sum();
        for (i, (&w, &n)) in weights.iter().zip(&counts).enumerate() {
            let want = f64::from(w) / f64::from(total);
            let got = f64::from(n) / f64::from(PICKS);
            assert!(
                (got - want).abs() <= 0.03,
                "weights {weights:?}, cluster {i}: {got:.4} vs {want:.4} ({counts:?})"
            );
        }
    }
}

#[test]
fn picking_is_deterministic_and_a_single_cluster_draws_nothing() {
    let target = weighted(&[3, 5, 7]);
    let picks = |seed| {
        let mut rng = Rng::from_seed(seed);
        (0..64)
            .map(|_| pick_cluster(&target, &mut rng).cluster_index)
            .collect::<Vec<_>>()
    };
    assert_eq!(picks(9), picks(9));
    assert_ne!(picks(9), picks(10));

    let single = ClusterTarget::Cluster(WeightedCluster {
        cluster: "a".into(),
        cluster_index: 4,
        weight: 1,
    });
    let mut rng = Rng::from_seed(5);
    let mut untouched = rng.clone();
    assert_eq!(pick_cluster(&single, &mut rng).cluster_index, 4);
    assert_eq!(rng.next_u64(), untouched.next_u64());
    // One weighted cluster is always picked.
    let one = weighted(&[7]);
    assert!((0..100).all(|_| pick_cluster(&one, &mut rng).cluster_index == 0));
}

#[test]
fn prefix_rewrites() {
    let cases: &[(&[u8], &str, &str, &[u8])] = &[
        (b"/api/users", "/api/", "/", b"/users"),
        (b"/api/", "/api/", "/", b"/"),
        (b"/api", "/api", "/v2", b"/v2"),
        (b"/api/x", "/api", "/v2", b"/v2/x"),
        (b"/api/x/y", "/api/", "/v1/", b"/v1/x/y"),
        // Nothing is normalized (as in Envoy).
        (b"/api/x", "/api", "/", b"//x"),
        (b"/apix", "/api", "/v2", b"/v2x"),
        (b"/api/\xff", "/api/", "/", b"/\xff"),
        // Not a match of the prefix: unchanged.
        (b"/other", "/api", "/v2", b"/other"),
        (b"/ap", "/api", "/v2", b"/ap"),
    ];
    let mut out = b"left over".to_vec();
    for (path, prefix, replacement, want) in cases {
        rewrite_prefix(path, prefix, replacement, &mut out);
        assert_eq!(
            out,
            *want,
            "{:?} {prefix} → {replacement}",
            String::from_utf8_lossy(path)
        );
    }
}

#[test]
fn the_example_config_routes_as_documented() {
    let config = http_of(include_str!("../../../configs/http.yaml"));
    let r = Router::new(&config).unwrap();
    let target = |host: &str, path: &str, headers: &[(&str, &str)]| {
        let lookup = |name: &str| {
            headers
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.as_bytes())
        };
        let m = r.route(host.as_bytes(), path.as_bytes(), &lookup)?;
        Some(match &m.route.action {
            RouteAction::DirectResponse { status, .. } => format!("{status}"),
            RouteAction::Forward(f) => match &f.target {
                ClusterTarget::Cluster(c) => c.cluster.clone(),
                ClusterTarget::Weighted(_) => "weighted".into(),
            },
        })
    };
    let t = |host, path, headers| target(host, path, headers).unwrap();
    assert_eq!(t("example.com", "/hello", &[]), "200");
    assert_eq!(t("www.example.com:8080", "/healthz", &[]), "204");
    assert_eq!(
        t("example.com", "/api/users", &[("x-canary", "1")]),
        "api_canary"
    );
    assert_eq!(t("example.com", "/api/users", &[]), "api_v1");
    assert_eq!(t("example.com", "/v3/items", &[]), "weighted");
    assert_eq!(t("localhost", "/index.html", &[]), "web");
    assert_eq!(t("ADMIN.example.com", "/", &[]), "401");
    assert_eq!(
        t("admin.internal", "/", &[("authorization", "Basic x")]),
        "web"
    );
}

/// Host names built from pieces of the configured domains, so that random hosts often hit a
/// table (arbitrary bytes almost never do).
fn host_strategy() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        Just(b"example".to_vec()),
        Just(b"EXAMPLE".to_vec()),
        Just(b".".to_vec()),
        Just(b"com".to_vec()),
        Just(b"co".to_vec()),
        Just(b"api".to_vec()),
        Just(b"admin".to_vec()),
        Just(b"-bar".to_vec()),
        Just(b"x".to_vec()),
        Just(b":".to_vec()),
        Just(b"80".to_vec()),
        Just(b"[".to_vec()),
        Just(b"]".to_vec()),
        Just(b"::1".to_vec()),
        Just(b"10.0.0.1".to_vec()),
        Just(b" ".to_vec()),
        Just(b"*".to_vec()),
        proptest::collection::vec(any::<u8>(), 0..4),
    ];
    prop_oneof![
        proptest::collection::vec(piece, 0..7).prop_map(|p| p.concat()),
        proptest::collection::vec(any::<u8>(), 0..40),
    ]
}

/// The virtual host selection rules, written the slow and obvious way.
fn reference_virtual_host(config: &HttpConfig, host: &[u8]) -> Option<usize> {
    let host = host.trim_ascii();
    let host: &[u8] = if host.starts_with(b"[") {
        match host.iter().position(|&b| b == b']') {
            Some(end) => &host[..=end],
            None => host,
        }
    } else {
        let name = if host.iter().filter(|&&b| b == b':').count() == 1 {
            &host[..host.iter().position(|&b| b == b':').unwrap()]
        } else {
            host
        };
        // One trailing dot (a fully qualified name) is dropped, unless it is all there is.
        if name.len() > 1 && name.ends_with(b".") {
            &name[..name.len() - 1]
        } else {
            name
        }
    };
    let host = host.to_ascii_lowercase();
    // (rank, length of the fixed part): exact 3, suffix 2, prefix 1, any 0.
    let mut best: Option<((u8, usize), usize)> = None;
    for (v, vh) in config.virtual_hosts.iter().enumerate() {
        for d in &vh.domains {
            let d = d.to_ascii_lowercase().into_bytes();
            let score = if d == b"*" {
                Some((0, 0))
            } else if let Some(s) = d.strip_prefix(b"*") {
                (host.len() > s.len() && host.ends_with(s)).then_some((2, s.len()))
            } else if let Some(p) = d.strip_suffix(b"*") {
                (host.len() > p.len() && host.starts_with(p)).then_some((1, p.len()))
            } else {
                (host == d).then_some((3, d.len()))
            };
            if let Some(score) = score
                && best.is_none_or(|(b, _)| score > b)
            {
                best = Some((score, v));
            }
        }
    }
    best.map(|(_, v)| v)
}

proptest! {
    #[test]
    fn route_never_panics_and_agrees_with_the_reference(
        host in host_strategy(),
        path in proptest::collection::vec(any::<u8>(), 0..48),
        header_values in proptest::collection::vec(proptest::option::of(proptest::collection::vec(any::<u8>(), 0..12)), 8),
    ) {
        let names = ["x-canary", "x-user", "x-debug", "user-agent", "authorization", "x-b", "x-c", "host"];
        for config in [http_config(DOMAINS), http_config(ROUTES), http_of(include_str!("../../../configs/http.yaml"))] {
            let r = Router::new(&config).unwrap();
            let lookup = |name: &str| {
                names.iter().position(|n| *n == name).and_then(|i| header_values[i].as_deref())
            };
            let vh = r.virtual_host_index(&host);
            prop_assert_eq!(vh, reference_virtual_host(&config, &host));
            match r.route(&host, &path, &lookup) {
                Some(m) => {
                    prop_assert_eq!(Some(m.virtual_host_index), vh);
                    prop_assert!(m.route_index < m.virtual_host.routes.len());
                    prop_assert_eq!(m.route, &config.virtual_hosts[m.virtual_host_index].routes[m.route_index]);
                    if let PathMatch::Prefix(p) = &m.route.matcher.path {
                        prop_assert!(path.starts_with(p.as_bytes()));
                    }
                    if let PathMatch::Exact(p) = &m.route.matcher.path {
                        prop_assert_eq!(&path[..], p.as_bytes());
                    }
                }
                None => {
                    // No route: either no virtual host, or none of its routes matches, and
                    // in particular no `prefix: /` route without headers (every path there
                    // starts with '/').
                    if let Some(v) = vh {
                        let catch_all = config.virtual_hosts[v].routes.iter().any(|rt| {
                            rt.matcher.headers.is_empty() && rt.matcher.path == PathMatch::Prefix("/".into())
                        });
                        prop_assert!(!(catch_all && path.starts_with(b"/")));
                    }
                }
            }
        }
    }

    #[test]
    fn rewrite_keeps_the_rest_of_the_path(
        rest in proptest::collection::vec(any::<u8>(), 0..32),
        prefix in "/[a-z/]{0,6}",
        replacement in "/[a-z/]{0,6}",
    ) {
        let mut path = prefix.as_bytes().to_vec();
        path.extend_from_slice(&rest);
        let mut out = Vec::new();
        rewrite_prefix(&path, &prefix, &replacement, &mut out);
        prop_assert!(out.starts_with(replacement.as_bytes()));
        prop_assert_eq!(&out[replacement.len()..], &rest[..]);
    }
}
