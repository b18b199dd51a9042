//! Decoding of a cluster's resilience settings: `hash_policy`, `ring_hash`, `health_check`,
//! `outlier_detection`, `circuit_breakers` and `panic_threshold`. Like the rest of the decoder,
//! every problem is recorded with its path and decoding goes on.

use std::time::Duration;

use serde_json::Value;

use super::decoder::{Decoder, Obj};
use crate::config::upstream::{
    CircuitBreakerSettings, HealthCheckSettings, OutlierSettings, RetryBudgetSettings,
};
use crate::config::{HashPolicy, HealthCheckConfig, HealthProbe, MAX_RING_SIZE, format_duration};

/// A percentage: `10%`, `10` or `12.5%` is rejected (whole numbers only), 0 to 100.
pub(super) fn percent(dec: &mut Decoder, path: &str, v: &Value) -> Option<u32> {
    let parsed = match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s
            .strip_suffix('%')
            .and_then(|n| n.trim().parse::<u64>().ok()),
        _ => None,
    };
    match parsed {
        Some(n) if n <= 100 => Some(n as u32),
        _ => {
            let shown = match v {
                Value::String(s) => format!("{s:?}"),
                other => other.to_string(),
            };
            dec.error(
                path,
                format!("{shown} is not a percentage from 0% to 100% (e.g. 10%)"),
            );
            None
        }
    }
}

fn positive_duration(dec: &mut Decoder, path: &str, v: &Value) -> Option<Duration> {
    let d = dec.duration(path, v)?;
    if d.is_zero() {
        dec.error(path, "must be greater than zero");
        return None;
    }
    Some(d)
}

fn opt_with<T>(
    dec: &mut Decoder,
    obj: &mut Obj<'_>,
    key: &'static str,
    default: T,
    read: impl FnOnce(&mut Decoder, &str, &Value) -> Option<T>,
) -> Option<T> {
    match obj.opt(key) {
        Some((v, p)) => read(dec, &p, v),
        None => Some(default),
    }
}

fn opt_u32(
    dec: &mut Decoder,
    obj: &mut Obj<'_>,
    key: &'static str,
    default: u32,
    range: std::ops::RangeInclusive<u64>,
) -> Option<u32> {
    opt_with(dec, obj, key, default, |dec, p, v| {
        dec.u64_in(p, v, range).map(|n| n as u32)
    })
}

/// `hash_policy: [ { header: x-user-id }, { source_ip: true } ]`.
pub(super) fn hash_policy(dec: &mut Decoder, path: &str, v: &Value) -> Option<Vec<HashPolicy>> {
    dec.list(path, v, |dec, path, v| {
        let mut obj = dec.object(path, v)?;
        let header = obj.opt("header");
        let source_ip = obj.opt("source_ip");
        let out = match (header, source_ip) {
            (Some((v, p)), None) => dec.string(&p, v).and_then(|name| {
                if name.is_empty() || !name.bytes().all(is_token_byte) {
                    dec.error(&p, format!("{name:?} is not a valid header name"));
                    None
                } else {
                    Some(HashPolicy::Header(name.to_ascii_lowercase()))
                }
            }),
            (None, Some((v, p))) => match dec.boolean(&p, v)? {
                true => Some(HashPolicy::SourceIp),
                false => {
                    dec.error(&p, "must be true (leave the entry out instead)");
                    None
                }
            },
            (Some(_), Some(_)) => {
                dec.error(path, "set one of header, source_ip per entry, not both");
                None
            }
            (None, None) => {
                dec.error(path, "expected one of: header, source_ip");
                None
            }
        };
        obj.finish(dec);
        out
    })
}

fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// `ring_hash: { minimum_ring_size: 1024 }`.
pub(super) fn ring_hash(dec: &mut Decoder, path: &str, v: &Value, default: u32) -> Option<u32> {
    let mut obj = dec.object(path, v)?;
    let size = opt_u32(
        dec,
        &mut obj,
        "minimum_ring_size",
        default,
        1..=u64::from(MAX_RING_SIZE),
    );
    obj.finish(dec);
    size
}

/// `health_check: { http: {...} | tcp: {} | bolt: {} | grpc: {...}, interval, timeout, ... }`.
pub(super) fn health_check(dec: &mut Decoder, path: &str, v: &Value) -> Option<HealthCheckConfig> {
    let mut obj = dec.object(path, v)?;
    let d = HealthCheckSettings::default();
    let probes = [
        obj.opt("http"),
        obj.opt("tcp"),
        obj.opt("bolt"),
        obj.opt("grpc"),
    ];
    let set: Vec<_> = probes
        .iter()
        .enumerate()
        .filter_map(|(i, p)| Some((i, p.as_ref()?)))
        .collect();
    let probe = match set.as_slice() {
        [] => {
            dec.error(path, "missing the probe: set one of http, tcp, bolt, grpc");
            None
        }
        [(0, (v, p))] => http_probe(dec, p, v),
        [(3, (v, p))] => grpc_probe(dec, p, v),
        [(i, (v, p))] => {
            let empty = dec.object(p, v)?;
            empty.finish(dec);
            Some(if *i == 1 {
                HealthProbe::Tcp
            } else {
                HealthProbe::Bolt
            })
        }
        _ => {
            dec.error(path, "set only one of http, tcp, bolt, grpc");
            None
        }
    };
    let interval = opt_with(dec, &mut obj, "interval", d.interval, positive_duration);
    let timeout = opt_with(dec, &mut obj, "timeout", d.timeout, positive_duration);
    let jitter = opt_with(dec, &mut obj, "jitter", d.jitter_percent, percent);
    let unhealthy = opt_u32(
        dec,
        &mut obj,
        "unhealthy_threshold",
        d.unhealthy_threshold,
        1..=1000,
    );
    let healthy = opt_u32(
        dec,
        &mut obj,
        "healthy_threshold",
        d.healthy_threshold,
        1..=1000,
    );
    let no_traffic = opt_with(
        dec,
        &mut obj,
        "no_traffic_interval",
        d.no_traffic_interval,
        positive_duration,
    );
    obj.finish(dec);
    Some(HealthCheckConfig {
        probe: probe?,
        settings: HealthCheckSettings {
            interval: interval?,
            timeout: timeout?,
            jitter_percent: jitter?,
            unhealthy_threshold: unhealthy?,
            healthy_threshold: healthy?,
            no_traffic_interval: no_traffic?,
        },
    })
}

/// `grpc: { service_name: "", authority: "" }` (Envoy's `grpc_health_check` names).
fn grpc_probe(dec: &mut Decoder, path: &str, v: &Value) -> Option<HealthProbe> {
    let mut obj = dec.object(path, v)?;
    let service_name = match obj.opt("service_name") {
        Some((v, p)) => dec.string(&p, v).and_then(|s| {
            if s.len() <= crate::health::grpc::MAX_SERVICE_NAME {
                Some(s.to_owned())
            } else {
                dec.error(
                    &p,
                    format!(
                        "longer than {} bytes",
                        crate::health::grpc::MAX_SERVICE_NAME
                    ),
                );
                None
            }
        }),
        None => Some(String::new()),
    };
    let authority = match obj.opt("authority") {
        // Envoy's empty default: the cluster's name.
        Some((Value::String(s), _)) if s.is_empty() => Some(None),
        Some((v, p)) => dec.string(&p, v).and_then(|s| {
            if crate::health::grpc::is_authority(s) {
                Some(Some(s.to_owned()))
            } else {
                dec.error(
                    &p,
                    format!(
                        "{s:?} is not an authority (host[:port], no spaces, '/', '?', '#', '@')"
                    ),
                );
                None
            }
        }),
        None => Some(None),
    };
    obj.finish(dec);
    Some(HealthProbe::Grpc {
        service_name: service_name?,
        authority: authority?,
    })
}

fn http_probe(dec: &mut Decoder, path: &str, v: &Value) -> Option<HealthProbe> {
    let mut obj = dec.object(path, v)?;
    let probe_path = obj.req(dec, "path").and_then(|(v, p)| {
        let s = dec.string(&p, v)?;
        if s.starts_with('/') && s.bytes().all(|b| b.is_ascii_graphic()) {
            Some(s.to_owned())
        } else {
            dec.error(
                &p,
                format!("{s:?} is not a request path (starts with '/', no spaces)"),
            );
            None
        }
    });
    let host = match obj.opt("host") {
        Some((v, p)) => dec.string(&p, v).and_then(|s| {
            if !s.is_empty() && s.bytes().all(|b| b.is_ascii_graphic()) {
                Some(Some(s.to_owned()))
            } else {
                dec.error(&p, format!("{s:?} is not a valid Host header value"));
                None
            }
        }),
        None => Some(None),
    };
    let statuses = match obj.opt("expected_statuses") {
        Some((v, p)) => dec.list(&p, v, status_range).and_then(|l| {
            if l.is_empty() {
                dec.error(&p, "at least one status or range is required");
                None
            } else {
                Some(l)
            }
        }),
        None => Some(vec![(200, 299)]),
    };
    obj.finish(dec);
    Some(HealthProbe::Http {
        path: probe_path?,
        host: host?,
        expected_statuses: statuses?,
    })
}

/// `200` or `"200-299"` (inclusive).
fn status_range(dec: &mut Decoder, path: &str, v: &Value) -> Option<(u16, u16)> {
    let parse = |s: &str| {
        s.trim()
            .parse::<u16>()
            .ok()
            .filter(|n| (100..=599).contains(n))
    };
    let range = match v {
        Value::Number(n) => n
            .as_u64()
            .and_then(|n| u16::try_from(n).ok())
            .filter(|n| (100..=599).contains(n))
            .map(|n| (n, n)),
        Value::String(s) => match s.split_once('-') {
            Some((a, b)) => parse(a).zip(parse(b)).filter(|(a, b)| a <= b),
            None => parse(s).map(|n| (n, n)),
        },
        _ => None,
    };
    if range.is_none() {
        let shown = match v {
            Value::String(s) => format!("{s:?}"),
            other => other.to_string(),
        };
        dec.error(
            path,
            format!("{shown} is not a status (100-599) or a range like 200-299"),
        );
    }
    range
}

/// `outlier_detection: { consecutive_5xx, ..., max_ejection_percent }`.
pub(super) fn outlier_detection(
    dec: &mut Decoder,
    path: &str,
    v: &Value,
) -> Option<OutlierSettings> {
    let mut obj = dec.object(path, v)?;
    let d = OutlierSettings::default();
    let c5xx = opt_u32(
        dec,
        &mut obj,
        "consecutive_5xx",
        d.consecutive_5xx,
        0..=1_000_000,
    );
    let cgw = opt_u32(
        dec,
        &mut obj,
        "consecutive_gateway_failure",
        d.consecutive_gateway_failure,
        0..=1_000_000,
    );
    let cconn = opt_u32(
        dec,
        &mut obj,
        "consecutive_connect_failure",
        d.consecutive_connect_failure,
        0..=1_000_000,
    );
    let base = opt_with(
        dec,
        &mut obj,
        "base_ejection_time",
        d.base_ejection_time,
        positive_duration,
    );
    let max = opt_with(
        dec,
        &mut obj,
        "max_ejection_time",
        d.max_ejection_time,
        positive_duration,
    );
    let pct = opt_with(
        dec,
        &mut obj,
        "max_ejection_percent",
        d.max_ejection_percent,
        percent,
    );
    let interval = opt_with(dec, &mut obj, "interval", d.interval, positive_duration);
    obj.finish(dec);
    let (base, max) = (base?, max?);
    if max < base {
        dec.error(
            &super::decoder::child(path, "max_ejection_time"),
            format!(
                "{} is shorter than base_ejection_time ({})",
                format_duration(max),
                format_duration(base)
            ),
        );
        return None;
    }
    Some(OutlierSettings {
        consecutive_5xx: c5xx?,
        consecutive_gateway_failure: cgw?,
        consecutive_connect_failure: cconn?,
        base_ejection_time: base,
        max_ejection_time: max,
        max_ejection_percent: pct?,
        interval: interval?,
    })
}

/// `circuit_breakers: { max_connections, max_pending_requests, max_requests, max_retries,
/// retry_budget }`. Retries are capped by the retry budget unless `max_retries` is given (both
/// at once is an error: only one of them can decide).
pub(super) fn circuit_breakers(
    dec: &mut Decoder,
    path: &str,
    v: &Value,
) -> Option<CircuitBreakerSettings> {
    let mut obj = dec.object(path, v)?;
    let d = CircuitBreakerSettings::default();
    const MAX: u64 = 10_000_000;
    let conns = opt_u32(dec, &mut obj, "max_connections", d.max_connections, 0..=MAX);
    let pending = opt_u32(
        dec,
        &mut obj,
        "max_pending_requests",
        d.max_pending_requests,
        0..=MAX,
    );
    let requests = opt_u32(dec, &mut obj, "max_requests", d.max_requests, 0..=MAX);
    let fixed = obj.opt("max_retries");
    let budget = obj.opt("retry_budget");
    let (retries, retry_budget) = match (fixed, budget) {
        (Some((_, fp)), Some((_, bp))) => {
            dec.error(
                &bp,
                format!(
                    "cannot be combined with {fp}: retries are capped either by the budget \
                     (the default) or by a fixed max_retries"
                ),
            );
            (None, None)
        }
        (Some((v, p)), None) => (dec.u64_in(&p, v, 0..=MAX).map(|n| n as u32), Some(None)),
        (None, Some((v, p))) => (Some(d.max_retries), retry_budget(dec, &p, v).map(Some)),
        (None, None) => (Some(d.max_retries), Some(d.retry_budget)),
    };
    obj.finish(dec);
    Some(CircuitBreakerSettings {
        max_connections: conns?,
        max_pending_requests: pending?,
        max_requests: requests?,
        max_retries: retries?,
        retry_budget: retry_budget?,
    })
}

/// `retry_budget: { budget_percent, min_retries_per_second, window }`.
fn retry_budget(dec: &mut Decoder, path: &str, v: &Value) -> Option<RetryBudgetSettings> {
    let mut obj = dec.object(path, v)?;
    let d = RetryBudgetSettings::default();
    let pct = opt_u32(dec, &mut obj, "budget_percent", d.budget_percent, 0..=1000);
    let floor = opt_u32(
        dec,
        &mut obj,
        "min_retries_per_second",
        d.min_retries_per_second,
        0..=1_000_000,
    );
    let window = opt_with(dec, &mut obj, "window", d.window, |dec, p, v| {
        let w = dec.duration(p, v)?;
        let max = RetryBudgetSettings::MAX_WINDOW_SECS;
        if w.subsec_nanos() != 0 || !(1..=max).contains(&w.as_secs()) {
            dec.error(
                p,
                format!(
                    "must be a whole number of seconds from 1s to {max}s, not {}",
                    format_duration(w)
                ),
            );
            return None;
        }
        Some(w)
    });
    obj.finish(dec);
    Some(RetryBudgetSettings {
        budget_percent: pct?,
        min_retries_per_second: floor?,
        window: window?,
    })
}
