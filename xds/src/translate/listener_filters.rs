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
//!   on the destination port before it peeks. Any other predicate (`and_match`, nested sets),
//!   more than [`MAX_PORT_RANGES`] ranges in one predicate, and `filter_disabled` on
//!   `original_dst` are refused by path.
//!
//! An inspector listed twice (or more) is accepted as Envoy accepts it — each entry runs, on
//! the connections its own `filter_disabled` leaves it, and the second finds what the first
//! found — so the listener's inspector runs on the union of their ports (noted as merged, not
//! ignored), computed on
//! sorted, merged ranges (never port by port).
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
    /// Whether the inspector runs on `port` (what [`Ports::union`] must agree with).
    #[cfg(test)]
    fn contains(&self, port: u16) -> bool {
        let within = |r: &[(u16, u16)]| r.iter().any(|&(a, b)| (a..=b).contains(&port));
        match self {
            Ports::All => true,
            Ports::Except(r) => !within(r),
            Ports::Only(r) => within(r),
        }
    }

    /// The ports either runs on (two entries of one inspector: each runs where its own
    /// `filter_disabled` lets it), in the shorter of the two forms, its ranges sorted and
    /// merged: O(R log R) in the ranges, never a walk of the port space.
    fn union(&self, other: &Ports) -> Ports {
        let on = |p: &Ports| match p {
            Ports::All => vec![(0, u16::MAX)],
            Ports::Except(r) => complement(&merged(r.clone())),
            Ports::Only(r) => merged(r.clone()),
        };
        let mut both = on(self);
        both.extend(on(other));
        let on = merged(both);
        let off = complement(&on);
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

/// `ranges` (inclusive) sorted, overlapping and adjacent ones merged.
fn merged(mut ranges: Vec<(u16, u16)>) -> Vec<(u16, u16)> {
    ranges.sort_unstable();
    let mut out: Vec<(u16, u16)> = Vec::with_capacity(ranges.len());
    for (a, b) in ranges {
        match out.last_mut() {
            Some(last) if u32::from(a) <= u32::from(last.1) + 1 => last.1 = last.1.max(b),
            _ => out.push((a, b)),
        }
    }
    out
}

/// The ports of `0..=65535` outside `ranges` (sorted and merged, as [`merged`] makes them).
fn complement(ranges: &[(u16, u16)]) -> Vec<(u16, u16)> {
    let mut out = Vec::with_capacity(ranges.len() + 1);
    // The first port not yet covered (65536: none left).
    let mut next = 0u32;
    for &(a, b) in ranges {
        if u32::from(a) > next {
            out.push((next as u16, a - 1));
        }
        next = u32::from(b) + 1;
    }
    if next <= u32::from(u16::MAX) {
        out.push((next as u16, u16::MAX));
    }
    out
}

/// The most port ranges one `filter_disabled` may list (Istio writes a handful: the ports of
/// an inbound listener whose protocol is known); more is refused, by path.
pub(super) const MAX_PORT_RANGES: usize = 1024;

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
                named.merged(notes, "listed again, runs where either entry runs");
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
                    named.merged(notes, "listed again, runs where either entry runs");
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
            if set.rules.len() > MAX_PORT_RANGES {
                return Err(s_at.error(format!(
                    "{} port ranges: at most {MAX_PORT_RANGES}",
                    set.rules.len()
                )));
            }
            let mut out = Vec::with_capacity(set.rules.len());
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The union runs exactly where either side runs, port by port, for every pair of forms,
    /// with overlapping, adjacent, unsorted and repeated ranges; its ranges come sorted and
    /// merged (`Only ∪ Only` too).
    #[test]
    fn union_runs_where_either_runs_in_merged_ranges() {
        fn next(seed: &mut u64, below: u32) -> u32 {
            *seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            u32::try_from(*seed >> 33).unwrap() % below
        }
        fn ranges(seed: &mut u64, n: u32) -> Vec<(u16, u16)> {
            let mut out: Vec<(u16, u16)> = (0..n)
                .map(|_| {
                    // Clustered low, so that ranges overlap and touch.
                    let a = u16::try_from(1 + next(seed, 200)).unwrap();
                    (a, a + u16::try_from(next(seed, 30)).unwrap())
                })
                .collect();
            let edges = next(seed, 3) as usize;
            out.extend([(65000, 65535), (1, 1)].into_iter().take(edges));
            out
        }
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let forms = |r: Vec<(u16, u16)>| [Ports::Except(r.clone()), Ports::Only(r), Ports::All];
        for _ in 0..12 {
            let (nx, ny) = (1 + next(&mut seed, 12), next(&mut seed, 12));
            let (x, y) = (ranges(&mut seed, nx), ranges(&mut seed, ny));
            for a in forms(x.clone()) {
                for b in forms(y.clone()) {
                    let u = a.union(&b);
                    for port in 0..=u16::MAX {
                        assert_eq!(
                            u.contains(port),
                            a.contains(port) || b.contains(port),
                            "{a:?} ∪ {b:?} = {u:?} at {port}"
                        );
                    }
                    if let Ports::Except(r) | Ports::Only(r) = &u {
                        assert!(
                            r.windows(2)
                                .all(|w| u32::from(w[0].1) + 1 < u32::from(w[1].0)),
                            "{u:?}"
                        );
                    }
                }
            }
        }
        assert_eq!(
            Ports::Only(vec![(5, 10)]).union(&Ports::Only(vec![(8, 20), (1, 3), (21, 22)])),
            Ports::Only(vec![(1, 3), (5, 22)])
        );
        assert_eq!(
            Ports::Except(vec![(1, 10)]).union(&Ports::Only(vec![(1, 10)])),
            Ports::All
        );
    }
}
