//! A listener's `bolt` section: the SOFARPC Bolt proxy's limits and routes. Decoded and
//! validated in `config::yaml` (its `bolt` decoder); used by [`crate::bolt::BoltRouter`] and
//! [`crate::bolt::BoltProxy`].

use std::time::Duration;

use serde::Serialize;

use super::ser_opt_duration;

/// The default `max_frame_size` of a listener: 16 MiB.
pub const DEFAULT_MAX_FRAME_SIZE: usize = 16 << 20;
/// Smallest accepted `max_frame_size` (1 KiB: a frame's fixed header alone is up to 24 bytes).
pub const MIN_BOLT_FRAME_SIZE: usize = 1 << 10;
/// Largest accepted `max_frame_size` (1 GiB).
pub const MAX_BOLT_FRAME_SIZE: usize = 1 << 30;

/// Default `frame_timeout`.
pub const DEFAULT_BOLT_FRAME_TIMEOUT: Duration = Duration::from_secs(10);
/// Default `idle_timeout`.
pub const DEFAULT_BOLT_IDLE_TIMEOUT: Duration = Duration::from_secs(3600);

/// `listeners[].bolt`: a Bolt (SOFARPC) proxy.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct BoltConfig {
    /// Largest frame accepted from a downstream, in bytes (default 16 MiB); a frame declaring
    /// more closes its connection as soon as its fixed header is in.
    pub max_frame_size: usize,
    /// How long a downstream connection may take to send its first whole frame after it was
    /// accepted, and any later frame from its first byte to its last (default 10 s); past it
    /// the connection closes (a client that connects and sends nothing, or trickles a frame,
    /// must not hold a connection slot or partial-frame memory for ever).
    #[serde(serialize_with = "super::ser_duration")]
    pub frame_timeout: Duration,
    /// How long a downstream connection may stay with nothing in flight and nothing partly
    /// sent before it closes (default 1 h; `None`: never). Client heartbeats count as traffic.
    #[serde(serialize_with = "ser_opt_duration")]
    pub idle_timeout: Option<Duration>,
    /// Routes, first match wins; never empty.
    pub routes: Vec<BoltRoute>,
    /// One line per request/response exchange (and per oneway request); its template uses
    /// only [`super::http::BOLT_LOG_FIELDS`]. Heartbeats are not logged.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub access_log: Option<super::http::AccessLogConfig>,
}

/// A Bolt route: what it matches and where it sends a request.
#[derive(Clone, Debug, PartialEq)]
pub struct BoltRoute {
    /// The match (every part must match; an empty match matches every request).
    pub matcher: BoltRouteMatch,
    /// Where matching requests go.
    pub action: BoltRouteAction,
}

/// What a request must carry for a route to apply.
#[derive(Clone, Debug, PartialEq)]
pub struct BoltRouteMatch {
    /// The service (the `service` header, else `sofa_head_target_service`); `None`: any.
    pub service: Option<ServiceMatch>,
    /// Every header matcher must match.
    pub headers: Vec<BoltHeaderMatcher>,
}

/// A service rule.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ServiceMatch {
    /// `service:` the service id equals this (`com.example.EchoService:1.0`).
    Exact(String),
    /// `service_regex:` the whole service id matches this regular expression.
    Regex(String),
}

/// A header rule. Bolt header keys are compared as written (case-sensitively).
#[derive(Clone, Debug, PartialEq)]
pub struct BoltHeaderMatcher {
    /// The header key.
    pub name: String,
    /// The rule.
    pub rule: BoltHeaderRule,
}

/// How a header's value must look. A rule other than `present: false` fails when the header is
/// absent or null.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BoltHeaderRule {
    /// `exact:` equals.
    Exact(String),
    /// `regex:` the whole value matches.
    Regex(String),
    /// `present: true|false`: is (not) present with a non-null value.
    Present(bool),
}

/// Where a route sends a request.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct BoltRouteAction {
    /// Cluster name.
    pub cluster: String,
    /// Index of that cluster in `Config::clusters`.
    #[serde(skip)]
    pub cluster_index: usize,
    /// The proxy answers status 7 (timeout) after this long; the frame's own timeout field wins
    /// when it is shorter. `None`: only the frame's timeout applies.
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "ser_opt_duration"
    )]
    pub timeout: Option<Duration>,
}
