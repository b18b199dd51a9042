//! Bolt routing: from a request frame's service and header map to a route of a listener's
//! `bolt` section.
//!
//! A [`BoltRouter`] is compiled once per config snapshot from a validated [`BoltConfig`] (its
//! regexes compiled then) and is read-only afterwards. Routes are tried in order; the first
//! whose service rule and header rules all match wins; no match is `None` (the proxy answers
//! status 6, no processor).
//!
//! - The service id is the value of the `service` header key, which sofa-rpc-node and SOFARPC
//!   send (`com.example.EchoService:1.0`); when absent (or null), `sofa_head_target_service`.
//!   A request with neither fails every service rule (but matches a route without one).
//! - Header keys are compared as written (Bolt keys are Java map keys: case-sensitive); values
//!   as bytes. A regex (`service_regex`, `regex`) must match the whole value: it is compiled
//!   anchored, `^(?:REGEX)$`, as the HTTP router's `safe_regex`. A rule other than
//!   `present: false` fails when the header is absent or null.
//!
//! [`BoltRouter::route`] never panics and does not allocate (a regex allocates its scratch
//! space on its first run on a thread and reuses it after; `core/tests/bolt_no_alloc.rs`
//! checks).

use regex::bytes::Regex;

use super::Frame;
use crate::config::bolt::{BoltConfig, BoltHeaderRule, BoltRouteAction, ServiceMatch};
use crate::pattern::{RegexError, compile_at};

/// The header key carrying the service id.
pub const SERVICE_KEY: &[u8] = b"service";
/// The fallback header key carrying the service id.
pub const TARGET_SERVICE_KEY: &[u8] = b"sofa_head_target_service";

/// The routing table of one `bolt` listener, compiled from its config.
#[derive(Clone, Debug)]
pub struct BoltRouter {
    routes: Vec<CompiledRoute>,
}

#[derive(Clone, Debug)]
struct CompiledRoute {
    service: Option<ValueTest>,
    headers: Vec<(Box<[u8]>, ValueTest)>,
    action: BoltRouteAction,
}

#[derive(Clone, Debug)]
enum ValueTest {
    Exact(Box<[u8]>),
    Regex(Regex),
    Present(bool),
}

impl ValueTest {
    fn matches(&self, value: Option<&[u8]>) -> bool {
        match (self, value) {
            (ValueTest::Present(want), v) => v.is_some() == *want,
            (_, None) => false,
            (ValueTest::Exact(e), Some(v)) => **e == *v,
            (ValueTest::Regex(re), Some(v)) => re.is_match(v),
        }
    }
}

/// The service id of a request: its `service` header, else `sofa_head_target_service`.
#[must_use]
pub fn service<'a>(frame: &Frame<'a>) -> Option<&'a [u8]> {
    frame
        .header
        .get(SERVICE_KEY)
        .or_else(|| frame.header.get(TARGET_SERVICE_KEY))
}

impl BoltRouter {
    /// Compiles the routes of a `bolt` listener. Never fails for a validated config; otherwise
    /// names the first regex that does not compile (`routes[1].match.service_regex: ...`).
    pub fn new(config: &BoltConfig) -> Result<BoltRouter, RegexError> {
        let routes = config
            .routes
            .iter()
            .enumerate()
            .map(|(r, route)| {
                let service = match &route.matcher.service {
                    None => None,
                    Some(ServiceMatch::Exact(s)) => Some(ValueTest::Exact(s.as_bytes().into())),
                    Some(ServiceMatch::Regex(re)) => {
                        Some(ValueTest::Regex(compile_at(re, || {
                            format!("routes[{r}].match.service_regex")
                        })?))
                    }
                };
                let headers = route
                    .matcher
                    .headers
                    .iter()
                    .enumerate()
                    .map(|(i, h)| {
                        let test = match &h.rule {
                            BoltHeaderRule::Exact(e) => ValueTest::Exact(e.as_bytes().into()),
                            BoltHeaderRule::Present(b) => ValueTest::Present(*b),
                            BoltHeaderRule::Regex(re) => ValueTest::Regex(compile_at(re, || {
                                format!("routes[{r}].match.headers[{i}].regex")
                            })?),
                        };
                        Ok((h.name.as_bytes().into(), test))
                    })
                    .collect::<Result<Vec<_>, RegexError>>()?;
                Ok(CompiledRoute {
                    service,
                    headers,
                    action: route.action.clone(),
                })
            })
            .collect::<Result<Vec<_>, RegexError>>()?;
        Ok(BoltRouter { routes })
    }

    /// The action of the first route matching `frame`, `None` when none does.
    #[must_use]
    pub fn route(&self, frame: &Frame<'_>) -> Option<&BoltRouteAction> {
        self.route_index(frame).map(|i| &self.routes[i].action)
    }

    /// The index (in the config's `routes`) of the first route matching `frame`.
    #[must_use]
    pub fn route_index(&self, frame: &Frame<'_>) -> Option<usize> {
        let service = service(frame);
        self.routes.iter().position(|r| {
            r.service.as_ref().is_none_or(|t| t.matches(service))
                && r.headers
                    .iter()
                    .all(|(name, t)| t.matches(frame.header.get(name)))
        })
    }

    /// The number of routes.
    #[must_use]
    pub fn len(&self) -> usize {
        self.routes.len()
    }

    /// No route at all.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }
}
