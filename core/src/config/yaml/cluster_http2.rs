//! Decoding of a `protocol: http2` cluster's `http2` options: `connection_keepalive`
//! (Envoy's `http2_protocol_options.connection_keepalive`, `interval` and `timeout`); the
//! same `connection_keepalive` decoder serves an `http` listener's `http2` options.

use serde_json::Value;

use super::decoder::Decoder;
use crate::config::Http2Keepalive;

/// `http2: { connection_keepalive: { interval, timeout } }`; `Some(None)` without a keepalive.
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
    obj.finish(dec);
    Some(Http2Keepalive {
        interval: interval?,
        timeout: timeout?,
    })
}
