//! Decoding and validation of a listener's `bolt` section into a [`BoltConfig`].
//!
//! Like the rest of the config decoder it keeps going after a problem, so that every problem is
//! reported at once, each at its path (`listeners[0].bolt.routes[1].match.headers[0].regex`),
//! and an unknown field is an error at every level.
//!
//! Invariants of a returned [`BoltConfig`] (what [`crate::bolt::BoltRouter`] relies on):
//! - `max_frame_size` is [`MIN_BOLT_FRAME_SIZE`]..=[`MAX_BOLT_FRAME_SIZE`];
//! - there is at least one route; a match has at most one of `service` and `service_regex`;
//!   `service` is non-empty; every regex compiles as written and anchored to the whole value;
//! - a header matcher has a non-empty key without control characters and exactly one rule;
//! - every cluster reference resolves (`cluster_index` indexes `Config::clusters`); a route
//!   `timeout`, when given, is greater than zero.

use serde_json::Value;

use super::cluster_ref;
use super::decoder::Decoder;
use crate::config::bolt::{
    BoltConfig, BoltHeaderMatcher, BoltHeaderRule, BoltRoute, BoltRouteAction, BoltRouteMatch,
    DEFAULT_BOLT_FRAME_TIMEOUT, DEFAULT_BOLT_IDLE_TIMEOUT, DEFAULT_MAX_FRAME_SIZE,
    MAX_BOLT_FRAME_SIZE, MIN_BOLT_FRAME_SIZE, ServiceMatch,
};
use crate::config::http::AccessLogKind;
use crate::pattern::compile_full_match;

/// Decodes `listeners[i].bolt`; `cluster_names` are the cluster names as written in the file.
pub(super) fn decode_bolt(
    dec: &mut Decoder,
    path: &str,
    v: &Value,
    cluster_names: &[&str],
) -> Option<BoltConfig> {
    let mut obj = dec.object(path, v)?;
    let max_frame_size = match obj.opt("max_frame_size") {
        Some((v, p)) => size(dec, &p, v),
        None => Some(DEFAULT_MAX_FRAME_SIZE),
    };
    let frame_timeout = match obj.opt("frame_timeout") {
        Some((v, p)) => dec.duration(&p, v).and_then(|d| {
            if d.is_zero() {
                dec.error(&p, "must be greater than zero");
                None
            } else {
                Some(d)
            }
        }),
        None => Some(DEFAULT_BOLT_FRAME_TIMEOUT),
    };
    // 0 disables the idle timeout, as for HTTP listeners.
    let idle_timeout = match obj.opt("idle_timeout") {
        Some((v, p)) => dec.duration(&p, v).map(|d| (!d.is_zero()).then_some(d)),
        None => Some(Some(DEFAULT_BOLT_IDLE_TIMEOUT)),
    };
    let routes = obj.req(dec, "routes").and_then(|(v, p)| {
        let routes = dec.list(&p, v, |dec, path, v| {
            decode_route(dec, path, v, cluster_names)
        })?;
        if routes.is_empty() {
            dec.error(&p, "at least one route is required");
            return None;
        }
        Some(routes)
    });
    let access_log = match obj.opt("access_log") {
        Some((v, p)) => super::http::decode_access_log(dec, &p, v, AccessLogKind::Bolt).map(Some),
        None => Some(None),
    };
    obj.finish(dec);
    Some(BoltConfig {
        max_frame_size: max_frame_size?,
        frame_timeout: frame_timeout?,
        idle_timeout: idle_timeout?,
        routes: routes?,
        access_log: access_log?,
    })
}

/// Parses a size: a number of bytes, or a number with a unit `B`, `KiB`, `MiB`, `GiB`.
pub(crate) fn parse_size(text: &str) -> Result<usize, String> {
    const EXPECTED: &str = "expected a number of bytes, or a number and a unit: 64KiB, 16MiB";
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a size ({EXPECTED})"))?;
    let shift = match unit.trim_start() {
        "" | "B" => 0,
        "KiB" => 10,
        "MiB" => 20,
        "GiB" => 30,
        other => {
            return Err(format!(
                "{text:?} has an unknown unit {other:?} ({EXPECTED})"
            ));
        }
    };
    n.checked_mul(1 << shift)
        .and_then(|b| usize::try_from(b).ok())
        .ok_or_else(|| format!("{text:?} is too large"))
}

fn size(dec: &mut Decoder, path: &str, v: &Value) -> Option<usize> {
    size_in(
        dec,
        path,
        v,
        MIN_BOLT_FRAME_SIZE..=MAX_BOLT_FRAME_SIZE,
        "1KiB to 1GiB",
    )
}

/// A size (see [`parse_size`]) in `range`; `shown` is the range as the error message says it.
pub(super) fn size_in(
    dec: &mut Decoder,
    path: &str,
    v: &Value,
    range: std::ops::RangeInclusive<usize>,
    shown: &str,
) -> Option<usize> {
    let bytes = match v {
        Value::Number(n) => match n.as_u64() {
            Some(n) => usize::try_from(n).ok(),
            None => {
                dec.error(path, format!("{n} is not a whole number of bytes"));
                return None;
            }
        },
        _ => dec.parsed(path, v, parse_size),
    }?;
    if range.contains(&bytes) {
        Some(bytes)
    } else {
        dec.error(
            path,
            format!(
                "{bytes} bytes is out of range ({shown}, i.e. {} to {})",
                range.start(),
                range.end()
            ),
        );
        None
    }
}

fn decode_route(
    dec: &mut Decoder,
    path: &str,
    v: &Value,
    cluster_names: &[&str],
) -> Option<BoltRoute> {
    let mut obj = dec.object(path, v)?;
    let matcher = match obj.opt("match") {
        Some((v, p)) => decode_match(dec, &p, v),
        None => Some(BoltRouteMatch {
            service: None,
            headers: Vec::new(),
        }),
    };
    let action = obj
        .req(dec, "route")
        .and_then(|(v, p)| decode_action(dec, &p, v, cluster_names));
    obj.finish(dec);
    Some(BoltRoute {
        matcher: matcher?,
        action: action?,
    })
}

fn decode_match(dec: &mut Decoder, path: &str, v: &Value) -> Option<BoltRouteMatch> {
    if v.is_null() {
        return Some(BoltRouteMatch {
            service: None,
            headers: Vec::new(),
        });
    }
    let mut obj = dec.object(path, v)?;
    let mut services = Vec::new();
    if let Some((v, p)) = obj.opt("service") {
        services.push(non_empty(dec, &p, v).map(ServiceMatch::Exact));
    }
    if let Some((v, p)) = obj.opt("service_regex") {
        services.push(regex(dec, &p, v).map(ServiceMatch::Regex));
    }
    let service = match services.len() {
        0 => Some(None),
        1 => services.pop().flatten().map(Some),
        _ => {
            dec.error(
                path,
                "both `service` and `service_regex`: give at most one of them",
            );
            None
        }
    };
    let headers = match obj.opt("headers") {
        Some((v, p)) => dec.list(&p, v, decode_header_matcher),
        None => Some(Vec::new()),
    };
    obj.finish(dec);
    Some(BoltRouteMatch {
        service: service?,
        headers: headers?,
    })
}

fn non_empty(dec: &mut Decoder, path: &str, v: &Value) -> Option<String> {
    let s = dec.string(path, v)?;
    if s.is_empty() {
        dec.error(path, "must not be empty");
        return None;
    }
    Some(s.to_owned())
}

fn regex(dec: &mut Decoder, path: &str, v: &Value) -> Option<String> {
    let s = dec.string(path, v)?;
    match compile_full_match(s) {
        Ok(_) => Some(s.to_owned()),
        Err(e) => {
            dec.error(
                path,
                format!("{s:?} is not a valid regular expression: {e}"),
            );
            None
        }
    }
}

fn decode_header_matcher(dec: &mut Decoder, path: &str, v: &Value) -> Option<BoltHeaderMatcher> {
    let mut obj = dec.object(path, v)?;
    let name = obj.req(dec, "name").and_then(|(v, p)| {
        let s = dec.string(&p, v)?;
        if s.is_empty() || s.chars().any(char::is_control) {
            dec.error(
                &p,
                format!("{s:?} is not a valid header key (non-empty, no control characters)"),
            );
            return None;
        }
        Some(s.to_owned())
    });
    let mut rules = Vec::new();
    if let Some((v, p)) = obj.opt("exact") {
        rules.push(
            dec.string(&p, v)
                .map(|s| BoltHeaderRule::Exact(s.to_owned())),
        );
    }
    if let Some((v, p)) = obj.opt("regex") {
        rules.push(regex(dec, &p, v).map(BoltHeaderRule::Regex));
    }
    if let Some((v, p)) = obj.opt("present") {
        rules.push(dec.boolean(&p, v).map(BoltHeaderRule::Present));
    }
    let rule = match rules.len() {
        1 => rules.pop().flatten(),
        n => {
            let what = if n == 0 {
                "no rule"
            } else {
                "more than one rule"
            };
            dec.error(
                path,
                format!("{what}: give exactly one of `exact`, `regex`, `present`"),
            );
            None
        }
    };
    obj.finish(dec);
    Some(BoltHeaderMatcher {
        name: name?,
        rule: rule?,
    })
}

fn decode_action(
    dec: &mut Decoder,
    path: &str,
    v: &Value,
    cluster_names: &[&str],
) -> Option<BoltRouteAction> {
    let mut obj = dec.object(path, v)?;
    let cluster = obj
        .req(dec, "cluster")
        .and_then(|(v, p)| cluster_ref(dec, &p, v, cluster_names));
    let timeout = match obj.opt("timeout") {
        Some((v, p)) => dec.duration(&p, v).and_then(|d| {
            if d.is_zero() {
                dec.error(
                    &p,
                    "must be greater than zero (leave it out for no route timeout)",
                );
                None
            } else {
                Some(Some(d))
            }
        }),
        None => Some(None),
    };
    obj.finish(dec);
    let (cluster, cluster_index) = cluster?;
    Some(BoltRouteAction {
        cluster,
        cluster_index,
        timeout: timeout?,
    })
}

#[cfg(test)]
mod tests;
