//! The config model written back in the input schema: the `Serialize` impls of the types whose
//! YAML shape differs from their Rust shape (the others derive it next to their definition).
//!
//! What it owns: the one promise of the admin API's `/config_dump` — a dump is a config.
//! [`Config::from_tree`](super::Config::from_tree) reads a dump back into the same
//! [`Config`](super::Config) (`runtime/tests/docs_yaml.rs` checks it for every config in the
//! docs and `configs/`), so an operator can save what runs, edit it and load it. Durations are
//! written the way the config writes them (`"1s"`), defaults are written out (a dump says what
//! applies, not only what was written), and `None` is an absent key: the dump leaves out nulls
//! (`runtime/src/admin.rs`), since the decoder reads a null as a type error, not as "unset".

use serde::ser::{Serialize, SerializeMap, Serializer};

use super::upstream::CircuitBreakerSettings;
use super::{
    AdminConfig, AdminListen, ClusterConfig, ClusterKind, HashPolicy, HealthCheckConfig,
    HealthProbe, LbPolicy, ListenerFilter, format_duration,
};

/// A map with string keys, written as it is built.
struct Map<M>(M);

impl<M: SerializeMap> Map<M> {
    fn put<V: Serialize + ?Sized>(&mut self, key: &str, value: &V) -> Result<(), M::Error> {
        self.0.serialize_entry(key, value)
    }
}

/// An empty mapping: `tcp: {}`.
struct Empty;

impl Serialize for Empty {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_map(Some(0))?.end()
    }
}

impl Serialize for AdminConfig {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = Map(s.serialize_map(None)?);
        match &self.listen {
            AdminListen::Tcp { address } => {
                m.put("address", address)?;
                if self.allow_non_loopback {
                    m.put("allow_non_loopback", &true)?;
                }
            }
            AdminListen::Unix { path, mode } => {
                m.put("path", path)?;
                // An octal string: a bare number would be read as its decimal digits.
                m.put("mode", &format!("0{mode:o}"))?;
            }
        }
        m.0.end()
    }
}

/// A listener's filter, as the key that names it: flattened into the listener's mapping.
impl Serialize for ListenerFilter {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = Map(s.serialize_map(None)?);
        match self {
            ListenerFilter::TcpProxy(t) => m.put("tcp_proxy", t)?,
            ListenerFilter::Echo => m.put("echo", &Empty)?,
            ListenerFilter::Http(h) => m.put("http", h)?,
            ListenerFilter::Bolt(b) => m.put("bolt", b)?,
            ListenerFilter::Auto { http, bolt } => {
                m.put("protocol", "auto")?;
                m.put("http", http)?;
                m.put("bolt", bolt)?;
            }
            ListenerFilter::Close => {}
        }
        m.0.end()
    }
}

impl Serialize for HashPolicy {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = Map(s.serialize_map(Some(1))?);
        match self {
            HashPolicy::Header(name) => m.put("header", name)?,
            HashPolicy::SourceIp => m.put("source_ip", &true)?,
        }
        m.0.end()
    }
}

impl Serialize for ClusterConfig {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = Map(s.serialize_map(None)?);
        m.put("name", &self.name)?;
        if self.kind != ClusterKind::Static {
            m.put("type", &self.kind)?;
        }
        if self.use_http_header {
            m.put("use_http_header", &true)?;
        }
        if self.protocol != super::UpstreamProtocol::Http1 {
            m.put("protocol", &self.protocol)?;
        }
        if let Some(k) = &self.http2_keepalive {
            m.put(
                "http2",
                &serde_json::json!({ "connection_keepalive": {
                    "interval": format_duration(k.interval),
                    "timeout": format_duration(k.timeout),
                } }),
            )?;
        }
        m.put("connect_timeout", &format_duration(self.connect_timeout))?;
        m.put(
            "upstream_idle_timeout",
            &format_duration(self.upstream_idle_timeout),
        )?;
        // An original_dst cluster has no hosts to balance over: the config refuses these.
        let balanced = self.kind != ClusterKind::OriginalDst;
        if balanced {
            m.put("lb_policy", &self.lb_policy)?;
        }
        if !self.hash_policy.is_empty() {
            m.put("hash_policy", &self.hash_policy)?;
        }
        if self.lb_policy == LbPolicy::RingHash {
            let mut ring = serde_json::Map::new();
            ring.insert(
                "minimum_ring_size".into(),
                serde_json::Value::from(self.minimum_ring_size),
            );
            m.put("ring_hash", &ring)?;
        }
        if let Some(hc) = &self.health_check {
            m.put("health_check", hc)?;
        }
        if let Some(od) = &self.outlier_detection {
            m.put("outlier_detection", od)?;
        }
        m.put("circuit_breakers", &self.circuit_breakers)?;
        if balanced {
            m.put("panic_threshold", &self.panic_threshold_percent)?;
        }
        if self.overprovisioning_factor != super::DEFAULT_OVERPROVISIONING_FACTOR {
            m.put("overprovisioning_factor", &self.overprovisioning_factor)?;
        }
        if let Some(tls) = &self.tls {
            m.put("tls", tls)?;
        }
        if !self.transport_socket_matches.is_empty() {
            m.put("transport_socket_matches", &self.transport_socket_matches)?;
        }
        if self.kind == ClusterKind::Static {
            m.put("hosts", &self.hosts)?;
        }
        if let Some(dns) = &self.dns {
            let hosts: Vec<serde_json::Value> = dns
                .names
                .iter()
                .map(|n| {
                    let address = if n.name.contains(':') {
                        format!("[{}]:{}", n.name, n.port)
                    } else {
                        format!("{}:{}", n.name, n.port)
                    };
                    serde_json::json!({ "address": address, "weight": n.weight })
                })
                .collect();
            m.put("hosts", &hosts)?;
            m.put("dns_refresh_rate", &format_duration(dns.refresh_rate))?;
            m.put("respect_dns_ttl", &dns.respect_dns_ttl)?;
            m.put("dns_lookup_family", &dns.lookup_family)?;
            // (`logical_dns` refuses it: one host per name.)
            if self.kind == ClusterKind::StrictDns {
                m.put("max_hosts", &dns.max_hosts)?;
            }
        }
        m.0.end()
    }
}

impl Serialize for HealthCheckConfig {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = Map(s.serialize_map(None)?);
        match &self.probe {
            HealthProbe::Tcp => m.put("tcp", &Empty)?,
            HealthProbe::Bolt => m.put("bolt", &Empty)?,
            HealthProbe::Grpc {
                service_name,
                authority,
            } => {
                let mut grpc = serde_json::Map::new();
                grpc.insert("service_name".into(), service_name.as_str().into());
                if let Some(a) = authority {
                    grpc.insert("authority".into(), a.as_str().into());
                }
                m.put("grpc", &grpc)?;
            }
            HealthProbe::Http {
                path,
                host,
                expected_statuses,
            } => {
                let mut http = serde_json::Map::new();
                http.insert("path".into(), path.as_str().into());
                if let Some(h) = host {
                    http.insert("host".into(), h.as_str().into());
                }
                let ranges: Vec<serde_json::Value> = expected_statuses
                    .iter()
                    .map(|&(lo, hi)| {
                        if lo == hi {
                            lo.into()
                        } else {
                            format!("{lo}-{hi}").into()
                        }
                    })
                    .collect();
                http.insert("expected_statuses".into(), ranges.into());
                m.put("http", &http)?;
            }
        }
        let st = &self.settings;
        m.put("interval", &format_duration(st.interval))?;
        m.put("timeout", &format_duration(st.timeout))?;
        m.put("jitter", &st.jitter_percent)?;
        m.put("unhealthy_threshold", &st.unhealthy_threshold)?;
        m.put("healthy_threshold", &st.healthy_threshold)?;
        m.put(
            "no_traffic_interval",
            &format_duration(st.no_traffic_interval),
        )?;
        m.0.end()
    }
}

/// `max_retries` or `retry_budget`, whichever caps retries (the config takes one of them).
impl Serialize for CircuitBreakerSettings {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = Map(s.serialize_map(None)?);
        m.put("max_connections", &self.max_connections)?;
        m.put("max_pending_requests", &self.max_pending_requests)?;
        m.put("max_requests", &self.max_requests)?;
        match &self.retry_budget {
            Some(b) => m.put("retry_budget", b)?,
            None => m.put("max_retries", &self.max_retries)?,
        }
        m.0.end()
    }
}

mod http_impls {
    use serde::ser::{Serialize, SerializeMap, Serializer};

    use super::Map;
    use crate::config::format_duration;
    use crate::config::http::{
        AccessLogConfig, AccessLogFormat, ClusterTarget, ForwardAction, HeaderMatcher, HeaderRule,
        PathMatch, RetryOn, RetryPolicy, Route, RouteAction, RouteMatch,
    };

    /// `match:` then the action's key (`route:` or `direct_response:`).
    impl Serialize for Route {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            let mut m = Map(s.serialize_map(Some(2))?);
            m.put("match", &self.matcher)?;
            match &self.action {
                RouteAction::Forward(f) => m.put("route", f)?,
                RouteAction::DirectResponse { status, body } => {
                    let mut d = serde_json::Map::new();
                    d.insert("status".into(), (*status).into());
                    d.insert("body".into(), body.as_str().into());
                    m.put("direct_response", &d)?;
                }
            }
            m.0.end()
        }
    }

    impl Serialize for RouteMatch {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            let mut m = Map(s.serialize_map(None)?);
            match &self.path {
                PathMatch::Exact(p) => m.put("path", p)?,
                PathMatch::Prefix(p) => m.put("prefix", p)?,
                PathMatch::Regex(r) => m.put("safe_regex", r)?,
            }
            if !self.headers.is_empty() {
                m.put("headers", &self.headers)?;
            }
            m.0.end()
        }
    }

    impl Serialize for HeaderMatcher {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            let mut m = Map(s.serialize_map(Some(2))?);
            m.put("name", &self.name)?;
            match &self.rule {
                HeaderRule::Exact(v) => m.put("exact", v)?,
                HeaderRule::Prefix(v) => m.put("prefix", v)?,
                HeaderRule::Present(p) => m.put("present", p)?,
                HeaderRule::Regex(r) => m.put("safe_regex", r)?,
            }
            m.0.end()
        }
    }

    impl Serialize for ForwardAction {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            let mut m = Map(s.serialize_map(None)?);
            match &self.target {
                ClusterTarget::Cluster(c) => m.put("cluster", &c.cluster)?,
                ClusterTarget::Weighted(w) => m.put("weighted_clusters", w)?,
            }
            // No timeout is written `0`.
            m.put(
                "timeout",
                &format_duration(self.timeout.unwrap_or_default()),
            )?;
            if let Some(p) = &self.prefix_rewrite {
                m.put("prefix_rewrite", p)?;
            }
            if let Some(r) = &self.retry_policy {
                m.put("retry_policy", r)?;
            }
            if !self.upgrade_configs.is_empty() {
                m.put("upgrade_configs", &self.upgrade_configs)?;
            }
            for (key, list) in [
                ("request_headers_to_add", &self.request_headers_to_add),
                ("response_headers_to_add", &self.response_headers_to_add),
            ] {
                if !list.is_empty() {
                    m.put(key, list)?;
                }
            }
            for (key, list) in [
                ("request_headers_to_remove", &self.request_headers_to_remove),
                (
                    "response_headers_to_remove",
                    &self.response_headers_to_remove,
                ),
            ] {
                if !list.is_empty() {
                    m.put(key, list)?;
                }
            }
            m.0.end()
        }
    }

    impl Serialize for RetryPolicy {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            let mut m = Map(s.serialize_map(None)?);
            m.put("retry_on", &self.retry_on)?;
            if !self.retry_on.status_codes.is_empty() {
                let codes: Vec<u16> = self.retry_on.status_codes.iter().collect();
                m.put("retriable_status_codes", &codes)?;
            }
            m.put("num_retries", &self.num_retries)?;
            if let Some(t) = self.per_try_timeout {
                m.put("per_try_timeout", &format_duration(t))?;
            }
            m.0.end()
        }
    }

    /// The list of condition names, as written.
    impl Serialize for RetryOn {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            // gRPC status names in `NAMES` order, with their codes.
            const GRPC: [(&str, u8); 5] = [
                ("cancelled", 1),
                ("deadline-exceeded", 4),
                ("internal", 13),
                ("resource-exhausted", 8),
                ("unavailable", 14),
            ];
            let on = [
                self.connect_failure,
                self.reset,
                self.server_error,
                self.gateway_error,
                self.retriable_4xx,
                self.refused_stream,
                self.retriable_status_codes,
            ];
            let names: Vec<&str> = RetryOn::NAMES
                .iter()
                .zip(on)
                .filter_map(|(n, set)| set.then_some(*n))
                .chain(
                    GRPC.iter()
                        .filter(|(_, code)| self.grpc(*code))
                        .map(|(n, _)| *n),
                )
                .collect();
            names.serialize(s)
        }
    }

    impl Serialize for AccessLogConfig {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            let mut m = Map(s.serialize_map(None)?);
            match &self.format {
                AccessLogFormat::Json => m.put("format", "json")?,
                AccessLogFormat::Text(template) => {
                    m.put("format", "text")?;
                    if let Some(t) = template {
                        m.put("template", t)?;
                    }
                }
            }
            if let Some(p) = &self.path {
                m.put("path", p)?;
            }
            if !self.request_headers.is_empty() {
                m.put("request_headers", &self.request_headers)?;
            }
            m.0.end()
        }
    }
}

mod bolt_impls {
    use serde::ser::{Serialize, SerializeMap, Serializer};

    use super::Map;
    use crate::config::bolt::{
        BoltHeaderMatcher, BoltHeaderRule, BoltRoute, BoltRouteMatch, ServiceMatch,
    };

    impl Serialize for BoltRoute {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            let mut m = Map(s.serialize_map(Some(2))?);
            m.put("match", &self.matcher)?;
            m.put("route", &self.action)?;
            m.0.end()
        }
    }

    impl Serialize for BoltRouteMatch {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            let mut m = Map(s.serialize_map(None)?);
            match &self.service {
                Some(ServiceMatch::Exact(name)) => m.put("service", name)?,
                Some(ServiceMatch::Regex(r)) => m.put("service_regex", r)?,
                None => {}
            }
            if !self.headers.is_empty() {
                m.put("headers", &self.headers)?;
            }
            m.0.end()
        }
    }

    impl Serialize for BoltHeaderMatcher {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            let mut m = Map(s.serialize_map(Some(2))?);
            m.put("name", &self.name)?;
            match &self.rule {
                BoltHeaderRule::Exact(v) => m.put("exact", v)?,
                BoltHeaderRule::Regex(r) => m.put("regex", r)?,
                BoltHeaderRule::Present(p) => m.put("present", p)?,
            }
            m.0.end()
        }
    }
}
