//! `Router::route` on arbitrary Host, path and header bytes, against the router of
//! `configs/http.yaml` (the documented example), then `pick_cluster` and `rewrite_prefix` on what
//! it picked.
//!
//! Input: text lines (`\n`-separated, so that corpus files are readable): the Host value, the
//! path, then headers as `name: value`; any bytes, UTF-8 or not.
//!
//! Properties:
//! - nothing panics;
//! - the virtual host is the one the selection rules give, computed the slow and obvious way
//!   (exact, longest `*suffix`, longest `prefix*`, `*`; port dropped; case-insensitive);
//! - the route is the first that matches: no earlier route without a regex matches, and the
//!   picked route, if it has no regex, does match (regex rules are left to the proptests);
//! - a picked weighted cluster is one of the route's; a prefix rewrite keeps the rest of the
//!   path after the replacement.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use sluice_core::config::http::{
    ClusterTarget, HeaderRule, HttpConfig, PathMatch, Route, RouteAction,
};
use sluice_core::config::{Config, ListenerFilter};
use sluice_core::rng::Rng;
use sluice_core::router::{Router, pick_cluster, rewrite_prefix};

static CONFIG: LazyLock<HttpConfig> = LazyLock::new(|| {
    let config = Config::from_yaml(include_str!("../../configs/http.yaml"))
        .unwrap_or_else(|e| panic!("configs/http.yaml:\n{e}"));
    match &config.listeners[0].filter {
        ListenerFilter::Http(h) => (**h).clone(),
        _ => panic!("configs/http.yaml: the first listener is not http"),
    }
});

static ROUTER: LazyLock<Router> = LazyLock::new(|| Router::new(&CONFIG).unwrap());

fuzz_target!(|data: &[u8]| {
    let mut lines = data.split(|&b| b == b'\n');
    let host = lines.next().unwrap_or_default();
    let path = lines.next().unwrap_or_default();
    let headers: Vec<(&[u8], &[u8])> = lines
        .map(|line| match line.iter().position(|&b| b == b':') {
            Some(colon) => (&line[..colon], line[colon + 1..].trim_ascii_start()),
            None => (line, &b""[..]),
        })
        .collect();
    let lookup = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, v)| *v)
    };

    let config = &*CONFIG;
    let router = &*ROUTER;
    let vh = router.virtual_host_index(host);
    assert_eq!(vh, reference_virtual_host(config, host), "host {host:?}");
    let result = router.route(host, path, &lookup);
    let Some(v) = vh else {
        assert!(result.is_none());
        return;
    };
    let routes = &config.virtual_hosts[v].routes;
    let decided = |r: &Route| reference_matches(r, path, &lookup);
    match result {
        None => assert!(
            routes.iter().all(|r| decided(r) != Some(true)),
            "no route, but one matches: {path:?} {headers:?}"
        ),
        Some(m) => {
            assert_eq!(m.virtual_host_index, v);
            assert!(std::ptr::eq(m.route, &m.virtual_host.routes[m.route_index]));
            assert!(
                routes[..m.route_index]
                    .iter()
                    .all(|r| decided(r) != Some(true)),
                "an earlier route matches {path:?}"
            );
            assert_ne!(
                decided(m.route),
                Some(false),
                "route {} does not match",
                m.route_index
            );
            check_action(m.route, path, data);
        }
    }
});

fn check_action(route: &Route, path: &[u8], data: &[u8]) {
    let RouteAction::Forward(forward) = &route.action else {
        return;
    };
    let mut rng = Rng::from_seed(fnv1a(data));
    let picked = pick_cluster(&forward.target, &mut rng);
    match &forward.target {
        ClusterTarget::Cluster(c) => assert_eq!(picked, c),
        ClusterTarget::Weighted(list) => assert!(list.iter().any(|c| c == picked)),
    }
    if let (Some(replacement), PathMatch::Prefix(prefix)) =
        (&forward.prefix_rewrite, &route.matcher.path)
    {
        let mut out = Vec::new();
        rewrite_prefix(path, prefix, replacement, &mut out);
        assert!(out.starts_with(replacement.as_bytes()));
        assert_eq!(&out[replacement.len()..], &path[prefix.len()..]);
    }
}

fn fnv1a(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The virtual host selection rules, written the slow and obvious way.
fn reference_virtual_host(config: &HttpConfig, host: &[u8]) -> Option<usize> {
    let host = host.trim_ascii();
    let colons = host.iter().filter(|&&b| b == b':').count();
    let host: &[u8] = if host.starts_with(b"[") {
        match host.iter().position(|&b| b == b']') {
            Some(end) => &host[..=end],
            None => host,
        }
    } else {
        let name = if colons == 1 {
            &host[..host.iter().position(|&b| b == b':').unwrap()]
        } else {
            host
        };
        // One trailing dot (a fully qualified name) is ignored.
        match name.strip_suffix(b".") {
            Some(rest) if !rest.is_empty() => rest,
            _ => name,
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

/// Whether a route matches, when that can be told without a regex: `None` when a regex rule
/// decides.
fn reference_matches<'h>(
    route: &Route,
    path: &[u8],
    header: &dyn Fn(&str) -> Option<&'h [u8]>,
) -> Option<bool> {
    let mut undecided = false;
    let path_ok = match &route.matcher.path {
        PathMatch::Exact(p) => path == p.as_bytes(),
        PathMatch::Prefix(p) => path.starts_with(p.as_bytes()),
        PathMatch::Regex(_) => {
            undecided = true;
            true
        }
    };
    if !path_ok {
        return Some(false);
    }
    for h in &route.matcher.headers {
        let value = header(&h.name);
        let ok = match (&h.rule, value) {
            (HeaderRule::Present(want), v) => v.is_some() == *want,
            (_, None) => false,
            (HeaderRule::Exact(e), Some(v)) => v == e.as_bytes(),
            (HeaderRule::Prefix(p), Some(v)) => v.starts_with(p.as_bytes()),
            (HeaderRule::Regex(_), Some(_)) => {
                undecided = true;
                true
            }
        };
        if !ok {
            return Some(false);
        }
    }
    (!undecided).then_some(true)
}
