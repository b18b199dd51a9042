//! Request tracing: each forwarded HTTP request's span (decided by
//! [`sluice_core::l7::trace::decide_hop`] from its trace headers) and, with `tracing.otlp`, the
//! export of the sampled spans over OTLP/HTTP in its JSON encoding.
//!
//! ## What it owns
//!
//! - [`Tracer`]: one per worker (engine). The sampling rate, and the export queue when
//!   `otlp` is set.
//! - [`RequestTrace`]: one request's span and the trace headers it sends upstream; it lives in
//!   the connection's scratch, reused by every request (no allocation).
//! - [`SpanQueue`]: the spans a worker waits to export. A span is encoded as JSON into the open
//!   batch when its request ends (the buffer is reused across batches, so recording allocates
//!   nothing once warm); a batch closes at `max_batch` spans. At most `max_queue` spans wait,
//!   open batch included: past that a span is dropped and counted, so a dead collector costs a
//!   bounded amount of memory and never slows a request.
//! - [`Engine::run_span_export`]: the worker's exporter task. Every `export_interval`, or as
//!   soon as a batch is full, it sends the waiting batches, one `POST` each
//!   (`content-type: application/json`, `connection: close`) to a host of the collector's
//!   cluster (hosts in turn, skipping those active health checking marks unhealthy), over TLS
//!   when the cluster has `tls`. A batch whose request fails (no host, connect, timeout, a non-2xx
//!   answer) is dropped and counted: spans are telemetry, never retried at the cost of memory.
//!   When the engine stops (after its drain), what is left is sent once more, within
//!   `timeout` in all.
//!
//! ## Invariants
//!
//! - Spans queued ≤ `max_queue`, the batch being sent included; spans in a batch ≤
//!   `max_batch`; a span's size is bounded whatever the request (the values taken from it —
//!   path, authority — are cut at [`MAX_ATTRIBUTE_BYTES`]; the query is never exported), so a
//!   worker's queue holds at most about `max_queue` × 2 KiB.
//! - Every sampled span is counted exactly once as exported, dropped (queue full) or failed
//!   (export failed), or is still queued.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::io::Write as _;
use std::rc::Rc;
use std::time::{SystemTime, UNIX_EPOCH};

use sluice_core::config::tracing::{OtlpConfig, TracingConfig};
use sluice_core::l7::trace::{Hop, HopHeaders, HopRandom, IncomingHeaders, decide_hop, write_hex};
use tokio::io::AsyncWriteExt as _;
use tokio::sync::Notify;

use crate::access_log::Entry;
use crate::engine::Engine;
use crate::net::Network;
use crate::stats::bump;
use crate::upstreams::{Offer, connect_via};

/// One request's span and the headers that carry it upstream.
#[derive(Debug, Default)]
pub(crate) struct RequestTrace {
    /// The span, when this request has one (reset for every request).
    pub(crate) hop: Option<Hop>,
    /// `hop`'s headers, written when `hop` was set.
    pub(crate) headers: HopHeaders,
}

impl RequestTrace {
    /// The trace id for the access log, when the request has a span.
    pub(crate) fn trace_id(&self) -> Option<&[u8; 32]> {
        self.hop.map(|_| self.headers.trace_id_hex())
    }
}

/// A worker's tracer.
pub(crate) struct Tracer {
    sampling_per_million: u32,
    pub(crate) queue: Option<SpanQueue>,
}

impl Tracer {
    pub(crate) fn new(config: &TracingConfig) -> Self {
        Tracer {
            sampling_per_million: config.sampling_per_million(),
            queue: config.otlp.as_ref().map(SpanQueue::new),
        }
    }

    pub(crate) fn sampling_per_million(&self) -> u32 {
        self.sampling_per_million
    }
}

/// The trace headers of a request, read from its parsed head.
pub(crate) fn incoming<'a>(header: impl Fn(&str) -> Option<&'a [u8]>) -> IncomingHeaders<'a> {
    IncomingHeaders {
        traceparent: header("traceparent"),
        b3: header("b3"),
        b3_trace_id: header("x-b3-traceid"),
        b3_span_id: header("x-b3-spanid"),
        b3_sampled: header("x-b3-sampled"),
        b3_flags: header("x-b3-flags"),
    }
}

struct QueueState {
    /// The open batch: spans as JSON objects separated by commas.
    open: Vec<u8>,
    open_spans: usize,
    /// Closed batches waiting for export, oldest first.
    full: VecDeque<(Vec<u8>, usize)>,
    /// Spans in `open` and `full`.
    queued: usize,
    /// Buffers of sent batches, reused for the next ones.
    spare: Vec<Vec<u8>>,
}

/// The spans a worker waits to export (see the module doc).
pub(crate) struct SpanQueue {
    config: OtlpConfig,
    state: RefCell<QueueState>,
    batch_full: Notify,
    /// The engine stopped: send what is left and end.
    stop: Notify,
    /// The next host to try.
    next_host: Cell<usize>,
}

impl SpanQueue {
    fn new(config: &OtlpConfig) -> Self {
        SpanQueue {
            config: config.clone(),
            state: RefCell::new(QueueState {
                open: Vec::new(),
                open_spans: 0,
                full: VecDeque::new(),
                queued: 0,
                spare: Vec::new(),
            }),
            batch_full: Notify::new(),
            stop: Notify::new(),
            next_host: Cell::new(0),
        }
    }

    /// Encodes a finished request's span into the open batch; false when the queue is full
    /// (the span is dropped).
    pub(crate) fn record(&self, hop: &Hop, e: &Entry<'_>, end: SystemTime) -> bool {
        let mut st = self.state.borrow_mut();
        if st.queued >= self.config.max_queue {
            return false;
        }
        if st.open_spans > 0 {
            st.open.push(b',');
        }
        write_span(&mut st.open, hop, e, end);
        st.open_spans += 1;
        st.queued += 1;
        if st.open_spans >= self.config.max_batch {
            let next = st.spare.pop().unwrap_or_default();
            let batch = std::mem::replace(&mut st.open, next);
            let n = std::mem::take(&mut st.open_spans);
            st.full.push_back((batch, n));
            drop(st);
            self.batch_full.notify_one();
        }
        true
    }

    /// Takes the oldest waiting batch (a full one, else the open one if it has spans).
    fn take_batch(&self) -> Option<(Vec<u8>, usize)> {
        let mut st = self.state.borrow_mut();
        let batch = match st.full.pop_front() {
            Some(b) => b,
            None if st.open_spans > 0 => {
                let next = st.spare.pop().unwrap_or_default();
                let batch = std::mem::replace(&mut st.open, next);
                (batch, std::mem::take(&mut st.open_spans))
            }
            None => return None,
        };
        Some(batch)
    }

    /// A batch taken by [`SpanQueue::take_batch`] is done with (sent or failed): its spans
    /// leave the queue's count only now, so a batch in flight counts against `max_queue`.
    fn give_back(&self, mut buf: Vec<u8>, spans: usize) {
        buf.clear();
        let mut st = self.state.borrow_mut();
        st.queued -= spans;
        if st.spare.len() < 2 {
            st.spare.push(buf);
        }
    }
}

/// OTLP `SPAN_KIND_SERVER`: the proxy's span of a request it received.
const SPAN_KIND_SERVER: u8 = 2;
/// OTLP `STATUS_CODE_ERROR`.
const STATUS_CODE_ERROR: u8 = 2;

fn unix_nanos(t: SystemTime) -> u128 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos())
}

/// One span as an OTLP JSON `Span` (ids as lowercase hex, times as decimal strings, as the
/// OTLP/HTTP JSON encoding prescribes). HTTP attributes follow OpenTelemetry's semantic
/// conventions; a 5xx answer sets the error status.
fn write_span(buf: &mut Vec<u8>, hop: &Hop, e: &Entry<'_>, end: SystemTime) {
    let mut hex = [0u8; 32];
    buf.extend_from_slice(b"{\"traceId\":\"");
    write_hex(&hop.trace_id, &mut hex);
    buf.extend_from_slice(&hex);
    buf.extend_from_slice(b"\",\"spanId\":\"");
    write_hex(&hop.span_id, &mut hex[..16]);
    buf.extend_from_slice(&hex[..16]);
    buf.push(b'"');
    if let Some(p) = hop.parent_span_id {
        buf.extend_from_slice(b",\"parentSpanId\":\"");
        write_hex(&p, &mut hex[..16]);
        buf.extend_from_slice(&hex[..16]);
        buf.push(b'"');
    }
    buf.extend_from_slice(b",\"name\":");
    json_string(buf, e.method);
    let start = unix_nanos(e.start);
    let _ = write!(
        buf,
        ",\"kind\":{SPAN_KIND_SERVER},\"startTimeUnixNano\":\"{start}\",\"endTimeUnixNano\":\"{}\",\"attributes\":[",
        unix_nanos(end).max(start)
    );
    let mut first = true;
    let mut attr = |buf: &mut Vec<u8>, key: &str, value: &[u8]| {
        if !first {
            buf.push(b',');
        }
        first = false;
        let _ = write!(buf, "{{\"key\":\"{key}\",\"value\":{{\"stringValue\":");
        json_string(buf, value);
        buf.extend_from_slice(b"}}");
    };
    attr(buf, "http.request.method", e.method);
    // The path without its query (which may carry credentials: it is never exported), at most
    // MAX_ATTRIBUTE_BYTES of it, like the authority: a span's size does not follow the client's.
    let path = e.path.split(|&b| b == b'?').next().unwrap_or(b"");
    attr(buf, "url.path", clip(path));
    if let Some(a) = e.header(":authority") {
        attr(buf, "server.address", clip(a));
    }
    attr(buf, "network.protocol.name", b"http");
    let version = e.protocol.strip_prefix("HTTP/").unwrap_or(e.protocol);
    attr(buf, "network.protocol.version", version.as_bytes());
    attr(buf, "sluice.listener", e.listener.as_bytes());
    if let Some(c) = e.cluster {
        attr(buf, "sluice.upstream_cluster", c.as_bytes());
    }
    if let Some(f) = e.flag {
        attr(buf, "sluice.response_flags", f.as_bytes());
    }
    // Addresses need no escaping: written straight into the buffer.
    let _ = write!(
        buf,
        ",{{\"key\":\"client.address\",\"value\":{{\"stringValue\":\"{}\"}}}}",
        e.downstream.ip()
    );
    if let Some(u) = e.upstream {
        let _ = write!(
            buf,
            ",{{\"key\":\"sluice.upstream_host\",\"value\":{{\"stringValue\":\"{u}\"}}}}"
        );
    }
    let _ = write!(
        buf,
        ",{{\"key\":\"http.response.status_code\",\"value\":{{\"intValue\":\"{}\"}}}}]",
        e.status
    );
    if e.status >= 500 || e.status == 0 {
        let _ = write!(buf, ",\"status\":{{\"code\":{STATUS_CODE_ERROR}}}");
    }
    buf.push(b'}');
}

/// Longest value of a span attribute taken from the request (path, authority), in bytes.
pub(crate) const MAX_ATTRIBUTE_BYTES: usize = 256;

fn clip(v: &[u8]) -> &[u8] {
    &v[..v.len().min(MAX_ATTRIBUTE_BYTES)]
}

fn json_string(buf: &mut Vec<u8>, bytes: &[u8]) {
    let _ = serde_json::to_writer(&mut *buf, &*String::from_utf8_lossy(bytes));
}

impl<N: Network> Engine<N> {
    /// Decides a request's span from its trace headers (a new trace when they carry none or
    /// are malformed, counted) and writes the headers that carry it upstream.
    pub(crate) fn decide_span(
        &self,
        tracer: &Tracer,
        head: &sluice_core::http1::Head,
        buf: &[u8],
        trace: &mut RequestTrace,
    ) {
        let random = {
            let mut rng = self.rng.borrow_mut();
            HopRandom {
                ids: [rng.next_u64(), rng.next_u64(), rng.next_u64()],
                draw: rng.next_u64(),
            }
        };
        let hop = decide_hop(
            &incoming(|name| head.header(buf, name)),
            random,
            tracer.sampling_per_million(),
        );
        if hop.malformed {
            bump(&self.stats().tracing_malformed_headers, 1);
        }
        trace.headers.write(&hop);
        trace.hop = Some(hop);
    }

    /// Records a finished request's span when it is sampled and exported; counts it.
    pub(crate) fn finish_span(&self, trace: &RequestTrace, e: &Entry<'_>) {
        let (Some(hop), Some(tracer)) = (&trace.hop, &self.tracer) else {
            return;
        };
        if !hop.sampled {
            return;
        }
        bump(&self.stats().tracing_spans_sampled, 1);
        if let Some(q) = &tracer.queue
            && !q.record(hop, e, SystemTime::now())
        {
            bump(&self.stats().tracing_spans_dropped_queue_full, 1);
        }
    }

    /// The worker's exporter task (see the module doc); runs until aborted.
    pub(crate) async fn run_span_export(self: Rc<Self>) {
        let Some(q) = self.tracer.as_ref().and_then(|t| t.queue.as_ref()) else {
            return;
        };
        let mut tick = tokio::time::interval(q.config.export_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let stop = tokio::select! {
                _ = tick.tick() => false,
                () = q.batch_full.notified() => false,
                () = q.stop.notified() => true,
            };
            self.export_waiting().await;
            if stop {
                return;
            }
        }
    }

    /// Ends the exporter task once it has sent what is left, waiting at most the export
    /// `timeout` for that (then it is aborted: what it had not sent is lost, uncounted).
    pub(crate) async fn stop_span_export(&self, task: tokio::task::JoinHandle<()>) {
        let Some(q) = self.tracer.as_ref().and_then(|t| t.queue.as_ref()) else {
            return;
        };
        q.stop.notify_one();
        let abort = task.abort_handle();
        if tokio::time::timeout(q.config.timeout, task).await.is_err() {
            abort.abort();
        }
    }

    /// Sends every waiting batch, one request each.
    pub(crate) async fn export_waiting(&self) {
        let Some(q) = self.tracer.as_ref().and_then(|t| t.queue.as_ref()) else {
            return;
        };
        while let Some((batch, spans)) = q.take_batch() {
            let sent = tokio::time::timeout(q.config.timeout, self.post_spans(q, &batch))
                .await
                .unwrap_or(false);
            let n = spans as u64;
            if sent {
                bump(&self.stats().tracing_spans_exported, n);
            } else {
                bump(&self.stats().tracing_spans_export_failed, n);
            }
            q.give_back(batch, spans);
        }
    }

    /// One export request: true when the collector answered 2xx.
    async fn post_spans(&self, q: &SpanQueue, spans: &[u8]) -> bool {
        let ci = q.config.cluster_index;
        let cluster = &self.config.clusters[ci];
        let hosts = cluster.hosts.len();
        if hosts == 0 {
            return false;
        }
        // Hosts in turn, skipping those active health checking marks unhealthy (all of them
        // unhealthy: try anyway).
        let start = q.next_host.get();
        let pick = (0..hosts)
            .map(|i| (start + i) % hosts)
            .find(|&h| self.upstreams.shared_health().is_healthy(ci, h))
            .unwrap_or(start % hosts);
        q.next_host.set(pick + 1);
        let address = cluster.hosts[pick].address;
        // The one connect path: the host's transport (failing closed), the connect and the
        // handshake within the cluster's connect timeout; nothing counted, no outlier report
        // (an export is not a request).
        let transport = cluster.host_transport(&cluster.hosts[pick]);
        let contexts = self.tls.current();
        let deadline = tokio::time::Instant::now() + cluster.connect_timeout;
        let connected = match contexts.connector(ci, transport) {
            Ok(tls) => connect_via(self.net(), tls, address, Offer::Cluster, Some(deadline)).await,
            Err(e) => Err(e.into()),
        };
        let mut stream = match connected {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(cluster = %cluster.name, %address, error = %e, "span export: connect failed");
                return false;
            }
        };
        // The document around the batch, written in pieces: the batch is not copied.
        let mut prefix = Vec::with_capacity(160);
        prefix.extend_from_slice(
            b"{\"resourceSpans\":[{\"resource\":{\"attributes\":[{\"key\":\"service.name\",\"value\":{\"stringValue\":",
        );
        json_string(&mut prefix, q.config.service_name.as_bytes());
        prefix.extend_from_slice(
            b"}}]},\"scopeSpans\":[{\"scope\":{\"name\":\"sluice\"},\"spans\":[",
        );
        const SUFFIX: &[u8] = b"]}]}]}";
        let host = cluster
            .tls
            .as_ref()
            .and_then(|t| t.sni.clone())
            .unwrap_or_else(|| address.to_string());
        let head = format!(
            "POST {} HTTP/1.1\r\nhost: {host}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nuser-agent: sluice-otlp\r\nconnection: close\r\n\r\n",
            q.config.path,
            prefix.len() + spans.len() + SUFFIX.len()
        );
        let sent = async {
            stream.write_all(head.as_bytes()).await?;
            stream.write_all(&prefix).await?;
            stream.write_all(spans).await?;
            crate::http::write_flushed(&mut stream, SUFFIX).await
        };
        if sent.await.is_err() {
            return false;
        }
        let status = crate::health::read_status(&mut stream).await;
        let _ = stream.shutdown().await;
        match status {
            Some(s) if (200..300).contains(&s) => true,
            other => {
                tracing::debug!(cluster = %cluster.name, %address, status = ?other, "span export refused");
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_core::l7::trace::Propagation;

    fn entry() -> Entry<'static> {
        Entry {
            start: UNIX_EPOCH + std::time::Duration::from_millis(1_000),
            method: b"GET",
            path: b"/a\"b",
            protocol: "HTTP/1.1",
            status: 503,
            flag: Some("UF"),
            bytes_received: 0,
            bytes_sent: 0,
            duration_ms: 0,
            upstream: None,
            request_id: b"",
            downstream: "10.0.0.1:5000".parse().unwrap(),
            listener: "in",
            original_dst: None,
            request: None,
            cluster: Some("web"),
            tries: 1,
            close_reason: None,
            server_name: None,
            trace_id: None,
            grpc_status: None,
        }
    }

    fn hop() -> Hop {
        Hop {
            trace_id: [0xab; 16],
            span_id: [1; 8],
            parent_span_id: Some([2; 8]),
            sampled: true,
            propagation: Propagation::W3c,
            malformed: false,
            had_b3_single: false,
            had_b3_multi: false,
            debug: false,
        }
    }

    fn config(max_batch: usize, max_queue: usize) -> OtlpConfig {
        OtlpConfig {
            cluster: "otel".into(),
            cluster_index: 0,
            service_name: "svc".into(),
            path: "/v1/traces".into(),
            export_interval: std::time::Duration::from_secs(5),
            max_batch,
            max_queue,
            timeout: std::time::Duration::from_secs(1),
        }
    }

    #[test]
    fn a_span_is_otlp_json() {
        let mut buf = Vec::new();
        let end = UNIX_EPOCH + std::time::Duration::from_millis(1_250);
        write_span(&mut buf, &hop(), &entry(), end);
        let v: serde_json::Value = serde_json::from_slice(&buf).unwrap();
        assert_eq!(v["traceId"], "abababababababababababababababab");
        assert_eq!(v["spanId"], "0101010101010101");
        assert_eq!(v["parentSpanId"], "0202020202020202");
        assert_eq!(v["name"], "GET");
        assert_eq!(v["kind"], 2);
        assert_eq!(v["startTimeUnixNano"], "1000000000");
        assert_eq!(v["endTimeUnixNano"], "1250000000");
        assert_eq!(v["status"]["code"], 2);
        let attrs = v["attributes"].as_array().unwrap();
        let get = |k: &str| {
            attrs
                .iter()
                .find(|a| a["key"] == k)
                .map(|a| a["value"].clone())
        };
        assert_eq!(get("url.path").unwrap()["stringValue"], "/a\"b");
        assert_eq!(get("http.response.status_code").unwrap()["intValue"], "503");
        assert_eq!(
            get("sluice.upstream_cluster").unwrap()["stringValue"],
            "web"
        );
        assert_eq!(get("sluice.response_flags").unwrap()["stringValue"], "UF");
    }

    #[test]
    fn the_queue_closes_batches_and_drops_past_its_bound() {
        let q = SpanQueue::new(&config(2, 5));
        let e = entry();
        for _ in 0..5 {
            assert!(q.record(&hop(), &e, SystemTime::now()));
        }
        assert!(
            !q.record(&hop(), &e, SystemTime::now()),
            "the sixth is dropped"
        );
        let (b1, n1) = q.take_batch().unwrap();
        let (_, n2) = q.take_batch().unwrap();
        let (b3, n3) = q.take_batch().unwrap();
        assert_eq!((n1, n2, n3), (2, 2, 1));
        assert!(q.take_batch().is_none());
        let mut doc = b"[".to_vec();
        doc.extend_from_slice(&b1);
        doc.push(b']');
        let spans: serde_json::Value = serde_json::from_slice(&doc).unwrap();
        assert_eq!(spans.as_array().unwrap().len(), 2);
        q.give_back(b3, n3);
        // Room again once taken.
        assert!(q.record(&hop(), &e, SystemTime::now()));
    }
}
