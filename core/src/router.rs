//! HTTP routing: from a request's Host, path and headers to a virtual host and a route, plus the
//! two small decisions a route implies (which cluster of a weighted set, the rewritten path).
//!
//! A [`Router`] is compiled once per config snapshot from a validated [`HttpConfig`] and is
//! read-only afterwards. It owns copies of the virtual hosts and routes (so that a
//! [`RouteMatchResult`] can hand them out), the compiled regexes, and the domain tables:
//! lowercase domains, sorted for binary search, wildcards grouped by length, longest first.
//!
//! ## Virtual host selection (Envoy's)
//!
//! The Host header's port is dropped (`example.com:8080` → `example.com`, `[::1]:80` →
//! `[::1]`), as is a trailing dot (`example.com.` is the same name, fully qualified: without
//! this it would skip its virtual host), surrounding whitespace is ignored, and the name is compared case-insensitively
//! against, in this order:
//! 1. the exact domains;
//! 2. the suffix wildcards, longest first: `*.example.com` matches `a.example.com` but not
//!    `example.com` (a `*` stands for at least one character);
//! 3. the prefix wildcards, longest first: `example.*` matches `example.org`;
//! 4. `*`.
//!
//! No virtual host, or no route in it, is `None` (a 404).
//!
//! ## Routes
//!
//! A virtual host's routes are tried in order; the first whose path rule and header rules all
//! match wins. Paths and header values are compared as bytes, case-sensitively. A `safe_regex`
//! must match the whole path (or value): it is compiled anchored, `^(?:REGEX)$`, in the regex
//! crate's default Unicode mode, where `.` matches a UTF-8 character and never a byte that is
//! not UTF-8 (well-formed request paths are ASCII: clients percent-encode the rest). A header
//! rule other than `present: false` fails when the header is absent.
//!
//! ## Invariants
//!
//! - [`Router::route`] never panics, whatever the bytes, and does not allocate on its non-regex
//!   path. A regex allocates its scratch space on its first run on a thread and reuses it after
//!   (the regex crate keeps it in a pool inside each regex, fastest on the thread that first used
//!   it: a worker thread should route with its own clone of the router). The integration test
//!   `router_no_alloc` counts allocations to check both.
//! - Each domain is in the tables once: when two virtual hosts name the same domain (a
//!   validated config never does), the first one wins.

use std::cmp::Ordering;

use regex::bytes::Regex;

use crate::config::http::{
    ClusterTarget, HeaderRule, HttpConfig, PathMatch, Route, VirtualHost, WeightedCluster,
};
use crate::pattern::{RegexError, compile_at};
use crate::rng::Rng;

/// The routing table of one `http` listener, compiled from its config.
#[derive(Clone, Debug)]
pub struct Router {
    virtual_hosts: Vec<VirtualHost>,
    /// `routes[v][r]` is the compiled matcher of `virtual_hosts[v].routes[r]`.
    routes: Vec<Vec<CompiledMatch>>,
    /// Exact domains, sorted.
    exact: Vec<Domain>,
    /// `*.example.com` as `.example.com`, grouped by length, longest first.
    suffixes: Vec<DomainGroup>,
    /// `example.*` as `example.`, grouped by length, longest first.
    prefixes: Vec<DomainGroup>,
    /// The virtual host with the `*` domain.
    any: Option<usize>,
}

/// A lowercase domain (or a wildcard's fixed part) and the index of its virtual host.
type Domain = (Box<[u8]>, usize);

/// Wildcard domains whose fixed parts all have this length, sorted.
#[derive(Clone, Debug)]
struct DomainGroup {
    len: usize,
    domains: Vec<Domain>,
}

#[derive(Clone, Debug)]
struct CompiledMatch {
    path: PathTest,
    headers: Vec<HeaderTest>,
}

#[derive(Clone, Debug)]
enum PathTest {
    Exact(Box<[u8]>),
    Prefix(Box<[u8]>),
    Regex(Regex),
}

#[derive(Clone, Debug)]
struct HeaderTest {
    /// Lowercase.
    name: String,
    test: ValueTest,
}

#[derive(Clone, Debug)]
enum ValueTest {
    Exact(Box<[u8]>),
    Prefix(Box<[u8]>),
    Present(bool),
    Regex(Regex),
}

/// The virtual host and route a request matched.
#[derive(Clone, Copy, Debug)]
pub struct RouteMatchResult<'r> {
    /// Index of the virtual host in the listener's `virtual_hosts`.
    pub virtual_host_index: usize,
    /// The virtual host.
    pub virtual_host: &'r VirtualHost,
    /// Index of the route in the virtual host's `routes`.
    pub route_index: usize,
    /// The route.
    pub route: &'r Route,
}

impl Router {
    /// Compiles the routing table of an `http` listener. Never fails for a validated config;
    /// otherwise names the first regex that does not compile.
    pub fn new(config: &HttpConfig) -> Result<Router, RegexError> {
        let mut exact = Vec::new();
        let mut suffixes = Vec::new();
        let mut prefixes = Vec::new();
        let mut any = None;
        let mut routes = Vec::with_capacity(config.virtual_hosts.len());
        for (v, vh) in config.virtual_hosts.iter().enumerate() {
            for domain in &vh.domains {
                let lower = domain.to_ascii_lowercase();
                if lower == "*" {
                    any.get_or_insert(v);
                } else if let Some(suffix) = lower.strip_prefix('*') {
                    suffixes.push((suffix.as_bytes().into(), v));
                } else if let Some(prefix) = lower.strip_suffix('*') {
                    prefixes.push((prefix.as_bytes().into(), v));
                } else {
                    exact.push((lower.into_bytes().into_boxed_slice(), v));
                }
            }
            let compiled = vh
                .routes
                .iter()
                .enumerate()
                .map(|(r, route)| {
                    compile_match(route)
                        .map_err(|e| e.under(&format!("virtual_hosts[{v}].routes[{r}].match.")))
                })
                .collect::<Result<Vec<_>, _>>()?;
            routes.push(compiled);
        }
        Ok(Router {
            virtual_hosts: config.virtual_hosts.clone(),
            routes,
            exact: sorted(exact),
            suffixes: grouped(suffixes),
            prefixes: grouped(prefixes),
            any,
        })
    }

    /// The virtual hosts, as configured.
    #[must_use]
    pub fn virtual_hosts(&self) -> &[VirtualHost] {
        &self.virtual_hosts
    }

    /// The index of the virtual host that serves a Host header value (which may carry a port
    /// and any case), if any.
    #[must_use]
    pub fn virtual_host_index(&self, host: &[u8]) -> Option<usize> {
        let host = host_name(host);
        if let Some(v) = find(&self.exact, host) {
            return Some(v);
        }
        // A `*` stands for at least one character: the fixed part must be shorter than the
        // host.
        for group in self.suffixes.iter().filter(|g| g.len < host.len()) {
            if let Some(v) = find(&group.domains, &host[host.len() - group.len..]) {
                return Some(v);
            }
        }
        for group in self.prefixes.iter().filter(|g| g.len < host.len()) {
            if let Some(v) = find(&group.domains, &host[..group.len]) {
                return Some(v);
            }
        }
        self.any
    }

    /// Routes a request.
    ///
    /// `host`: the Host header value (may include `:port`; case-insensitive); `path`: the
    /// request path without the query; `header`: a case-insensitive lookup of the first value
    /// of a header, called with a lowercase name. (The values' lifetime `'h` is the request's,
    /// not the name's, so that a lookup closure can be kept in a variable.)
    pub fn route<'r, 'h>(
        &'r self,
        host: &[u8],
        path: &[u8],
        header: &dyn Fn(&str) -> Option<&'h [u8]>,
    ) -> Option<RouteMatchResult<'r>> {
        let v = self.virtual_host_index(host)?;
        let virtual_host = &self.virtual_hosts[v];
        let route_index = self.routes[v]
            .iter()
            .position(|m| m.matches(path, header))?;
        Some(RouteMatchResult {
            virtual_host_index: v,
            virtual_host,
            route_index,
            route: &virtual_host.routes[route_index],
        })
    }
}

impl CompiledMatch {
    fn matches<'h>(&self, path: &[u8], header: &dyn Fn(&str) -> Option<&'h [u8]>) -> bool {
        let path_ok = match &self.path {
            PathTest::Exact(p) => path == &**p,
            PathTest::Prefix(p) => path.starts_with(p),
            PathTest::Regex(re) => re.is_match(path),
        };
        path_ok && self.headers.iter().all(|h| h.test.matches(header(&h.name)))
    }
}

impl ValueTest {
    fn matches(&self, value: Option<&[u8]>) -> bool {
        match (self, value) {
            (ValueTest::Present(want), v) => v.is_some() == *want,
            (_, None) => false,
            (ValueTest::Exact(e), Some(v)) => v == &**e,
            (ValueTest::Prefix(p), Some(v)) => v.starts_with(p),
            (ValueTest::Regex(re), Some(v)) => re.is_match(v),
        }
    }
}

fn compile_match(route: &Route) -> Result<CompiledMatch, RegexError> {
    let m = &route.matcher;
    let path = match &m.path {
        PathMatch::Exact(p) => PathTest::Exact(p.as_bytes().into()),
        PathMatch::Prefix(p) => PathTest::Prefix(p.as_bytes().into()),
        PathMatch::Regex(re) => PathTest::Regex(compile_at(re, || "safe_regex".to_owned())?),
    };
    let headers = m
        .headers
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let test = match &h.rule {
                HeaderRule::Exact(e) => ValueTest::Exact(e.as_bytes().into()),
                HeaderRule::Prefix(p) => ValueTest::Prefix(p.as_bytes().into()),
                HeaderRule::Present(b) => ValueTest::Present(*b),
                HeaderRule::Regex(re) => {
                    ValueTest::Regex(compile_at(re, || format!("headers[{i}].safe_regex"))?)
                }
            };
            Ok(HeaderTest {
                name: h.name.to_ascii_lowercase(),
                test,
            })
        })
        .collect::<Result<Vec<_>, RegexError>>()?;
    Ok(CompiledMatch { path, headers })
}

fn sorted(mut domains: Vec<Domain>) -> Vec<Domain> {
    // Stable: of equal domains the first virtual host's stays.
    domains.sort_by(|a, b| a.0.cmp(&b.0));
    domains.dedup_by(|later, earlier| later.0 == earlier.0);
    domains
}

fn grouped(domains: Vec<Domain>) -> Vec<DomainGroup> {
    let domains = sorted(domains);
    let mut lens: Vec<usize> = domains.iter().map(|d| d.0.len()).collect();
    lens.sort_unstable_by(|a, b| b.cmp(a));
    lens.dedup();
    lens.into_iter()
        .map(|len| DomainGroup {
            len,
            domains: domains
                .iter()
                .filter(|d| d.0.len() == len)
                .cloned()
                .collect(),
        })
        .collect()
}

/// The virtual host of a lowercase-keyed table for a key in any case.
fn find(table: &[Domain], key: &[u8]) -> Option<usize> {
    table
        .binary_search_by(|(domain, _)| cmp_lowercase(domain, key))
        .ok()
        .map(|i| table[i].1)
}

fn cmp_lowercase(lower: &[u8], key: &[u8]) -> Ordering {
    lower
        .iter()
        .copied()
        .cmp(key.iter().map(u8::to_ascii_lowercase))
}

/// The host part of a Host header value: `example.com:8080` → `example.com`, `[::1]:80` →
/// `[::1]`, without one trailing dot (`example.com.` → `example.com`). A value with several colons and no brackets is kept whole (it matches only `*`).
fn host_name(host: &[u8]) -> &[u8] {
    let host = host.trim_ascii();
    if host.first() == Some(&b'[') {
        return match host.iter().position(|&b| b == b']') {
            Some(end) => &host[..=end],
            None => host,
        };
    }
    let name = match host.iter().position(|&b| b == b':') {
        Some(colon) if !host[colon + 1..].contains(&b':') => &host[..colon],
        _ => host,
    };
    // `example.com.` (fully qualified) is `example.com`.
    match name {
        [rest @ .., b'.'] if !rest.is_empty() => rest,
        _ => name,
    }
}

/// Picks the cluster of a route target: a single cluster is itself; of weighted clusters, each
/// is picked with probability `weight / Σweight`, drawing from `rng` (one draw per pick).
///
/// # Panics
///
/// On an empty weighted list, which a validated config never has.
pub fn pick_cluster<'t>(target: &'t ClusterTarget, rng: &mut Rng) -> &'t WeightedCluster {
    match target {
        ClusterTarget::Cluster(c) => c,
        ClusterTarget::Weighted(list) => {
            let total: u64 = list.iter().map(|c| u64::from(c.weight)).sum();
            if total == 0 {
                return &list[0];
            }
            let mut point = rng.below(total);
            for c in list {
                let w = u64::from(c.weight);
                if point < w {
                    return c;
                }
                point -= w;
            }
            &list[list.len() - 1]
        }
    }
}

/// Writes into `out` (cleared first) the path of a request whose path matched `prefix`, with
/// that prefix replaced by `replacement`: `/api/users` with `/api/` → `/` gives `/users`.
///
/// `path` is the path without its query (the caller appends the query). When `path` does not
/// start with `prefix` (a caller's mistake), `out` is `path` unchanged. Nothing is normalized:
/// `/api/x` with `/api` → `/` gives `//x`, as in Envoy.
pub fn rewrite_prefix(path: &[u8], prefix: &str, replacement: &str, out: &mut Vec<u8>) {
    out.clear();
    match path.strip_prefix(prefix.as_bytes()) {
        Some(rest) => {
            out.extend_from_slice(replacement.as_bytes());
            out.extend_from_slice(rest);
        }
        None => out.extend_from_slice(path),
    }
}

#[cfg(test)]
mod tests;
