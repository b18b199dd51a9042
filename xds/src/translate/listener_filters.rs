//! A listener's `listener_filters` → what the config says of first-bytes inspection.
//!
//! Mapped (on a listener with filter chains):
//! - `envoy.filters.listener.original_dst` → `original_dst: redirect`;
//! - `envoy.filters.listener.tls_inspector` (its JA3/JA4 and read-buffer settings noted): the
//!   ClientHello peek, which the runtime does whenever a chain asks (also without the filter,
//!   as before);
//! - `envoy.filters.listener.http_inspector`: the HTTP sniff of plaintext connections
//!   ([`sluice_core::detect`]) feeding `application_protocols` `http/1.0`, `http/1.1`, `h2c`.
//!   Without it (Envoy never sets those protocols on plaintext), a listener whose chains list
//!   them gets `http_inspector: { only_ports: [] }`: sniffed nowhere, as in Envoy;
//! - an inspector's `filter_disabled` (a `ListenerFilterChainMatchPredicate`) as Istio writes
//!   it — a `destination_port_range`, an `or_match` of them (→ `except_ports`), a `not_match`
//!   of either (→ `only_ports`), `any_match` (→ `only_ports: []`) — evaluated by the runtime
//!   on the destination port before it peeks. Any other predicate (`and_match`, nested sets)
//!   is refused by path, and so is `filter_disabled` on `original_dst`.
//!
//! An inspector listed twice (or more) is accepted as Envoy accepts it — each entry runs, on
//! the connections its own `filter_disabled` leaves it, and the second finds what the first
//! found — so the listener's inspector runs on the union of their ports (noted).
//! `original_dst` twice is the same as once.
//!
//! Any other listener filter is refused by path.

use envoy_types::pb::envoy::config::listener::v3::{
    ListenerFilter, ListenerFilterChainMatchPredicate, listener_filter,
    listener_filter_chain_match_predicate::Rule,
};
use envoy_types::pb::envoy::extensions::filters::listener::http_inspector::v3::HttpInspector;
use envoy_types::pb::envoy::extensions::filters::listener::original_dst::v3::OriginalDst as OriginalDstFilter;
use envoy_types::pb::envoy::extensions::filters::listener::tls_inspector::v3::TlsInspector;
use envoy_types::pb::envoy::r#type::v3::Int32Range;
use prost::Name;
use serde_json::{Value, json};

use super::{At, Notes, TranslateError, reject_rest, take, unpack};

pub(super) const ORIGINAL_DST: &str = "envoy.filters.listener.original_dst";
pub(super) const TLS_INSPECTOR: &str = "envoy.filters.listener.tls_inspector";
pub(super) const HTTP_INSPECTOR: &str = "envoy.filters.listener.http_inspector";

/// Which destination ports an inspector runs on (the config's `InspectorPorts`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Ports {
    All,
    /// Every port but these ranges (inclusive).
    Except(Vec<(u16, u16)>),
    /// Only these.
    Only(Vec<(u16, u16)>),
}

impl Ports {
    /// Whether the inspector runs on `port`.
    fn contains(&self, port: u16) -> bool {
        let within = |r: &[(u16, u16)]| r.iter().any(|&(a, b)| (a..=b).contains(&port));
        match self {
            Ports::All => true,
            Ports::Except(r) => !within(r),
            Ports::Only(r) => within(r),
        }
    }

    /// The ports either runs on (two entries of one inspector: each runs where its own
    /// `filter_disabled` lets it), in the shorter of the two forms.
    fn union(&self, other: &Ports) -> Ports {
        match (self, other) {
            (Ports::All, _) | (_, Ports::All) => return Ports::All,
            (Ports::Only(a), Ports::Only(b)) => {
                return Ports::Only(a.iter().chain(b).copied().collect());
            }
            _ => {}
        }
        // Runs of ports, enabled or not, over the whole port space.
        let (mut on, mut off) = (Vec::new(), Vec::new());
        let mut start = 0u16;
        let mut state = self.contains(0) || other.contains(0);
        for port in 1..=u16::MAX {
            let now = self.contains(port) || other.contains(port);
            if now != state {
                if state { &mut on } else { &mut off }.push((start, port - 1));
                start = port;
                state = now;
            }
        }
        if state { &mut on } else { &mut off }.push((start, u16::MAX));
        if off.is_empty() {
            Ports::All
        } else if off.len() <= on.len() {
            Ports::Except(off)
        } else {
            Ports::Only(on)
        }
    }

    /// The config's `tls_inspector` / `http_inspector` value; `None` for every port (the
    /// default).
    pub(super) fn to_json(&self) -> Option<Value> {
        let list = |r: &[(u16, u16)]| {
            Value::Array(
                r.iter()
                    .map(|&(a, b)| {
                        if a == b {
                            json!(a)
                        } else {
                            json!(format!("{a}-{b}"))
                        }
                    })
                    .collect(),
            )
        };
        match self {
            Ports::All => None,
            Ports::Except(r) => Some(json!({ "except_ports": list(r) })),
            Ports::Only(r) => Some(json!({ "only_ports": list(r) })),
        }
    }
}

/// What a listener's filters say.
#[derive(Debug)]
pub(super) struct Inspection {
    /// `original_dst`: read each connection's original destination.
    pub original_dst: bool,
    /// Where the ClientHello peek runs.
    pub tls: Ports,
    /// Where plaintext is sniffed for HTTP; `None`: no `http_inspector` filter.
    pub http: Option<Ports>,
}

/// The listener filters of a listener with filter chains (`at`: `listener_filters`).
pub(super) fn listener_filters(
    filters: &[ListenerFilter],
    at: &At<'_>,
    notes: &mut Notes,
) -> Result<Inspection, TranslateError> {
    let mut out = Inspection {
        original_dst: false,
        tls: Ports::All,
        http: None,
    };
    let mut tls_seen = false;
    for (i, f) in filters.iter().enumerate() {
        let f_at = at.index(i);
        let named = At {
            path: format!("{} ({})", f_at.path, f.name),
            ..f_at.clone()
        };
        let any = match &f.config_type {
            Some(listener_filter::ConfigType::TypedConfig(any)) => Some(any),
            Some(listener_filter::ConfigType::ConfigDiscovery(_)) => {
                return Err(named.field("config_discovery").unsupported());
            }
            None => None,
        };
        let is = |name: &str, url: String| any.map_or(f.name == name, |a| a.type_url == url);
        if is(ORIGINAL_DST, OriginalDstFilter::type_url()) {
            if f.filter_disabled.is_some() {
                return Err(named.field("filter_disabled").unsupported());
            }
            if let Some(any) = any {
                let o: OriginalDstFilter = unpack(any, &named)?;
                reject_rest(&o, &named)?;
            }
            out.original_dst = true;
        } else if is(TLS_INSPECTOR, TlsInspector::type_url()) {
            if let Some(any) = any {
                tls_inspector_config(any, &named, notes)?;
            }
            let ports = scope(f.filter_disabled.as_ref(), &named)?;
            out.tls = if tls_seen {
                named.note(notes, "listed again: runs where either entry runs");
                out.tls.union(&ports)
            } else {
                ports
            };
            tls_seen = true;
        } else if is(HTTP_INSPECTOR, HttpInspector::type_url()) {
            if let Some(any) = any {
                let h: HttpInspector = unpack(any, &named)?;
                reject_rest(&h, &named)?;
            }
            let ports = scope(f.filter_disabled.as_ref(), &named)?;
            out.http = Some(match &out.http {
                Some(before) => {
                    named.note(notes, "listed again: runs where either entry runs");
                    before.union(&ports)
                }
                None => ports,
            });
        } else {
            return Err(named.error(format!(
                "unsupported (only {TLS_INSPECTOR}, {HTTP_INSPECTOR} and {ORIGINAL_DST}, with \
                 filter chains)"
            )));
        }
    }
    Ok(out)
}

/// Only `envoy.filters.listener.tls_inspector`, without `filter_disabled` (the compact TLS
/// passthrough form, whose `sni_routes` peek on every connection).
pub(super) fn tls_inspector(
    f: &ListenerFilter,
    at: &At<'_>,
    notes: &mut Notes,
) -> Result<(), TranslateError> {
    let named = At {
        path: format!("{} ({})", at.path, f.name),
        ..at.clone()
    };
    if f.filter_disabled.is_some() {
        return Err(named.field("filter_disabled").unsupported());
    }
    match &f.config_type {
        None if f.name == TLS_INSPECTOR => Ok(()),
        Some(listener_filter::ConfigType::TypedConfig(any))
            if any.type_url == TlsInspector::type_url() =>
        {
            tls_inspector_config(any, &named, notes)
        }
        _ => Err(named.error(format!(
            "unsupported (only {TLS_INSPECTOR} with server names alone; {HTTP_INSPECTOR} and \
             {ORIGINAL_DST} with filter chains)"
        ))),
    }
}

/// A `TlsInspector`: its fingerprinting and read-buffer settings are noted (telemetry, and a
/// buffer size the peek chooses itself).
fn tls_inspector_config(
    any: &envoy_types::pb::google::protobuf::Any,
    named: &At<'_>,
    notes: &mut Notes,
) -> Result<(), TranslateError> {
    let mut t: TlsInspector = unpack(any, named)?;
    for (set, field) in [
        (
            take(&mut t.enable_ja3_fingerprinting).is_some(),
            "enable_ja3_fingerprinting",
        ),
        (
            take(&mut t.enable_ja4_fingerprinting).is_some(),
            "enable_ja4_fingerprinting",
        ),
        (
            take(&mut t.initial_read_buffer_size).is_some(),
            "initial_read_buffer_size",
        ),
    ] {
        if set {
            named.note(notes, field);
        }
    }
    reject_rest(&t, named)
}

/// Where an inspector runs, from its `filter_disabled` (`None`: everywhere).
fn scope(
    disabled: Option<&ListenerFilterChainMatchPredicate>,
    at: &At<'_>,
) -> Result<Ports, TranslateError> {
    let Some(p) = disabled else {
        return Ok(Ports::All);
    };
    let at = at.field("filter_disabled");
    Ok(match &p.rule {
        Some(Rule::NotMatch(inner)) => {
            let n_at = at.field("not_match");
            match &inner.rule {
                // `not_match { any_match }`: disabled on no connection.
                Some(Rule::AnyMatch(true)) => Ports::All,
                _ => Ports::Only(port_ranges(inner, &n_at)?),
            }
        }
        Some(Rule::AnyMatch(true)) => Ports::Only(Vec::new()),
        _ => Ports::Except(port_ranges(p, &at)?),
    })
}

/// The ports a predicate of destination port ranges matches: a `destination_port_range` or
/// an `or_match` of them.
fn port_ranges(
    p: &ListenerFilterChainMatchPredicate,
    at: &At<'_>,
) -> Result<Vec<(u16, u16)>, TranslateError> {
    const WHAT: &str = "unsupported (Istio's predicates only: destination_port_range, or_match \
                        of them, not_match of either, any_match)";
    match &p.rule {
        Some(Rule::DestinationPortRange(r)) => {
            Ok(port_range(r, &at.field("destination_port_range"))?
                .into_iter()
                .collect())
        }
        Some(Rule::OrMatch(set)) => {
            let s_at = at.field("or_match").field("rules");
            let mut out = Vec::new();
            for (i, rule) in set.rules.iter().enumerate() {
                let r_at = s_at.index(i);
                match &rule.rule {
                    Some(Rule::DestinationPortRange(r)) => {
                        out.extend(port_range(r, &r_at.field("destination_port_range"))?);
                    }
                    _ => return Err(r_at.error(WHAT)),
                }
            }
            Ok(out)
        }
        Some(Rule::AndMatch(_)) => Err(at.field("and_match").error(WHAT)),
        Some(Rule::NotMatch(_)) => Err(at.field("not_match").error(WHAT)),
        Some(Rule::AnyMatch(_)) => Err(at.field("any_match").error(WHAT)),
        None => Err(at.error("empty predicate (no rule)")),
    }
}

/// `[start, end)` as an inclusive port range; `None` when it holds no port (Istio writes
/// `[0, 1)` for the chains without a destination port).
fn port_range(r: &Int32Range, at: &At<'_>) -> Result<Option<(u16, u16)>, TranslateError> {
    if r.start < 0 || r.end > 65536 || r.start >= r.end {
        return Err(at.error(format!(
            "[{}, {}) is not a range of ports (0 <= start < end <= 65536)",
            r.start, r.end
        )));
    }
    if r.end <= 1 {
        return Ok(None);
    }
    // 1 <= first <= last <= 65535 after the check above.
    let first = u16::try_from(r.start.max(1)).unwrap_or(u16::MAX);
    let last = u16::try_from(r.end - 1).unwrap_or(u16::MAX);
    Ok(Some((first, last)))
}
