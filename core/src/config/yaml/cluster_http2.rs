//! Decoding of a `protocol: http2` cluster's `http2` options: `connection_keepalive`
//! (Envoy's `http2_protocol_options.connection_keepalive`: `interval`, `timeout` and
//! `interval_jitter_percent`); the
//! same `connection_keepalive` decoder serves an `http` listener's `http2` options.

use serde_json::Value;

use super::decoder::Decoder;
use crate::config::{DEFAULT_KEEPALIVE_JITTER_PERCENT, Http2Keepalive};

/// `http2: { connection_keepalive: { interval, timeout, interval_jitter_percent } }`; `Some(None)` without a keepalive.
pub(super) fn options(dec: &mut Decoder, path: &str, v: &Value) -> Option<Option<Http2Keepalive>> {
    let mut obj = dec.object(path, v)?;
    let keepalive = match obj.opt("connection_keepalive") {
        Some((v, p)) => keepalive(dec, &p, v).map(Some),
        None => Some(None),
    };
    obj.finish(dec);
    keepalive
}

pub(super) fn keepalive(dec: &mut Decoder, path: &str, v: &Value) -> Option<Http2Keepalive> {
    let mut obj = dec.object(path, v)?;
    let mut positive = |key: &'static str| {
        let (v, p) = obj.req(dec, key)?;
        let d = dec.duration(&p, v)?;
        if d.is_zero() {
            dec.error(&p, "must be greater than zero");
            return None;
        }
        Some(d)
    };
    let interval = positive("interval");
    let timeout = positive("timeout");
    let jitter = match obj.opt("interval_jitter_percent") {
        None => Some(DEFAULT_KEEPALIVE_JITTER_PERCENT),
        Some((v, p)) => match v.as_u64() {
            Some(n) if n <= 100 => u8::try_from(n).ok(),
            _ => {
                dec.error(&p, "must be a whole number of percent, 0 to 100");
                None
            }
        },
    };
    obj.finish(dec);
    Some(Http2Keepalive {
        interval: interval?,
        timeout: timeout?,
        interval_jitter_percent: jitter?,
    })
}
