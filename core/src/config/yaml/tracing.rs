//! `tracing` → [`TracingConfig`]. Checks: `sampling` a percentage from 0 to 100,
//! `otlp.cluster` an existing cluster that can be reached over HTTP/1.1 (not `original_dst`),
//! `otlp.path` an origin-form path, positive batch and queue sizes with the batch no larger
//! than the queue, non-zero interval and timeout.

use serde_json::Value;

use super::decoder::{self, Decoder};
use crate::config::tracing::{
    DEFAULT_EXPORT_INTERVAL, DEFAULT_EXPORT_TIMEOUT, DEFAULT_MAX_BATCH, DEFAULT_MAX_QUEUE,
    DEFAULT_OTLP_PATH, DEFAULT_SERVICE_NAME, OtlpConfig, TracingConfig,
};

/// Largest `max_batch` / `max_queue` (a span is at most about 2 KiB: 64 Ki spans, 128 MiB
/// per worker at worst).
const MAX_SPANS: u64 = 1 << 16;

pub(super) fn decode_tracing(
    dec: &mut Decoder,
    path: &str,
    v: &Value,
    cluster_names: &[&str],
) -> Option<TracingConfig> {
    let mut obj = dec.object(path, v)?;
    let sampling = obj.opt("sampling");
    let otlp = obj.opt("otlp");
    obj.finish(dec);
    let sampling = match sampling {
        None => Some(100.0),
        Some((v, p)) => match v.as_f64() {
            // Sampling is drawn in millionths: a smaller share would silently be 0.
            Some(s) if s > 0.0 && s < 0.0001 => {
                dec.error(
                    &p,
                    format!("{v} is below the smallest sampling step, 0.0001 (percent)"),
                );
                None
            }
            Some(s) if (0.0..=100.0).contains(&s) => Some(s),
            _ => {
                dec.error(&p, format!("{v} is not a percentage from 0 to 100"));
                None
            }
        },
    };
    let otlp = match otlp {
        None => Some(None),
        Some((v, p)) => decode_otlp(dec, &p, v, cluster_names).map(Some),
    };
    Some(TracingConfig {
        sampling: sampling?,
        otlp: otlp?,
    })
}

fn decode_otlp(
    dec: &mut Decoder,
    path: &str,
    v: &Value,
    cluster_names: &[&str],
) -> Option<OtlpConfig> {
    let mut obj = dec.object(path, v)?;
    let cluster = obj
        .req(dec, "cluster")
        .and_then(|(v, p)| super::cluster_ref(dec, &p, v, cluster_names));
    let service_name = obj.opt("service_name");
    let req_path = obj.opt("path");
    let interval = obj.opt("export_interval");
    let max_batch = obj.opt("max_batch");
    let max_queue = obj.opt("max_queue");
    let timeout = obj.opt("timeout");
    obj.finish(dec);
    let service_name = match service_name {
        None => Some(DEFAULT_SERVICE_NAME.to_owned()),
        Some((v, p)) => dec.name(&p, v),
    };
    let req_path = match req_path {
        None => Some(DEFAULT_OTLP_PATH.to_owned()),
        Some((v, p)) => dec.parsed(&p, v, |s| {
            if s.starts_with('/') && s.bytes().all(|b| b.is_ascii_graphic()) {
                Ok(s.to_owned())
            } else {
                Err(format!(
                    "{s:?} is not a request path (it starts with `/`, without spaces)"
                ))
            }
        }),
    };
    let nonzero_duration = |dec: &mut Decoder, found: Option<(&Value, String)>, default| match found
    {
        None => Some(default),
        Some((v, p)) => {
            let d = dec.duration(&p, v)?;
            if d.is_zero() {
                dec.error(&p, "must be more than 0");
                return None;
            }
            Some(d)
        }
    };
    let export_interval = nonzero_duration(dec, interval, DEFAULT_EXPORT_INTERVAL);
    let timeout = nonzero_duration(dec, timeout, DEFAULT_EXPORT_TIMEOUT);
    let size = |dec: &mut Decoder, found: Option<(&Value, String)>, default: usize| match found {
        None => Some(default),
        Some((v, p)) => dec.u64_in(&p, v, 1..=MAX_SPANS).map(|n| n as usize),
    };
    let max_batch = size(dec, max_batch.clone(), DEFAULT_MAX_BATCH);
    let max_queue_v = max_queue.clone();
    let max_queue = size(dec, max_queue, DEFAULT_MAX_QUEUE);
    if let (Some(b), Some(q)) = (max_batch, max_queue)
        && b > q
    {
        let p = max_queue_v.map_or_else(|| decoder::child(path, "max_batch"), |(_, p)| p);
        dec.error(
            &p,
            format!("max_batch ({b}) is more than max_queue ({q}): a batch could never fill"),
        );
        return None;
    }
    let (cluster, cluster_index) = cluster?;
    Some(OtlpConfig {
        cluster,
        cluster_index,
        service_name: service_name?,
        path: req_path?,
        export_interval: export_interval?,
        max_batch: max_batch?,
        max_queue: max_queue?,
        timeout: timeout?,
    })
}
