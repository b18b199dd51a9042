//! Access log: one line per HTTP request, or per `tcp_proxy` session at its close, as text
//! from a `%FIELD%` template or as JSON.
//!
//! Each worker owns its own writer per listener and buffers lines, flushing when the buffer
//! passes [`FLUSH_BYTES`] and on a periodic tick (the engine calls [`AccessLog::flush`]), so
//! logging costs no syscall per request. Lines from different workers never interleave: each
//! flush writes whole lines with one `write` to a file opened in append mode. On SIGUSR1 the
//! server has every worker flush and reopen its file by path ([`AccessLog::reopen`]), so that
//! log rotation can move the old file away.
//!
//! Fields (text placeholders and JSON keys): `START_TIME` (RFC 3339, UTC, ms), `METHOD`,
//! `PATH`, `PROTOCOL`, `STATUS`, `RESPONSE_FLAGS` (`-` or Envoy-style codes like `UF`, `NR`),
//! `BYTES_RECEIVED`, `BYTES_SENT`, `DURATION` (ms), `UPSTREAM_HOST`, `REQUEST_ID`,
//! `DOWNSTREAM_REMOTE_ADDRESS`, `LISTENER`, `ORIGINAL_DST` (the connection's original destination
//! when a capture listener took it, else `-`), `AUTHORITY` (the `Host`, or HTTP/2 `:authority`),
//! `USER_AGENT`, `UPSTREAM_CLUSTER`, `RETRY_COUNT` (tries − 1), `TRACE_ID` (with `tracing`),
//! `GRPC_STATUS` (a gRPC request's status code as a number: from the response's trailers —
//! HTTP/2 trailers or an HTTP/1.1 upstream's chunked trailer section —, its trailers-only head,
//! or the proxy's own answer; `-` for other requests), and
//! `%REQ(NAME)%` — any request
//! header (case-insensitive; `%REQ(A?B)%` falls back to `B`; `%REQ(NAME):N%` keeps the first `N`
//! bytes; `:authority`, `:path` and `:method` name the request line's parts). JSON lines carry
//! the headers listed in `request_headers` under a `request_headers` object.
//!
//! A TCP session's line has `START_TIME`, `DOWNSTREAM_REMOTE_ADDRESS`, `LISTENER`,
//! `UPSTREAM_HOST`, `UPSTREAM_CLUSTER`, `BYTES_RECEIVED`/`BYTES_SENT` (from/to the client),
//! `DURATION`, `RESPONSE_FLAGS` (`UF`, `UH`, `UO`, `DC`, `UC`), `CLOSE_REASON`,
//! `REQUESTED_SERVER_NAME` (SNI) and `ORIGINAL_DST`; the config refuses the HTTP-only fields in
//! a `tcp_proxy` template (`sluice_core::config::http::HTTP_ONLY_LOG_FIELDS`).
//!
//! A Bolt exchange's line (a `bolt` listener's `access_log`, [`AccessLog::log_bolt`]) has
//! `START_TIME`, `DURATION`, `DOWNSTREAM_REMOTE_ADDRESS`, `LISTENER`, `UPSTREAM_HOST`,
//! `UPSTREAM_CLUSTER`, `ORIGINAL_DST`, `RESPONSE_FLAGS` (`NR`, `UH`, `UO`, `UT`, `UF`, `UC`, `DC`),
//! `BYTES_RECEIVED`/`BYTES_SENT` (the request and response frames' sizes), `BOLT_SERVICE` (the
//! `service` header, else `sofa_head_target_service`), `BOLT_METHOD` (`sofa_head_method_name`),
//! `BOLT_REQUEST_ID` (as the client sent it) and `BOLT_STATUS` (the response's status code, `-`
//! when none was sent); the config refuses other fields in a `bolt` template.
//!
//! The template is compiled once into a list of parts; a request's fields are read from its
//! parsed head only when a part asks for them, so a field the template does not use costs
//! nothing (no allocation, no header scan).
//!
//! In text lines, the fields that carry request bytes (`METHOD`, `PATH`, `REQUEST_ID`,
//! `AUTHORITY`, `USER_AGENT`, `REQ(…)`) are
//! escaped as nginx does (`"`, `\`, control characters, DEL and non-ASCII bytes as `\xHH`), so
//! that a request cannot end a quoted field or a line and forge others. JSON lines are escaped by
//! the JSON encoder.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::net::SocketAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use sluice_core::config::http::{AccessLogConfig, AccessLogFormat, AccessLogKind};
use sluice_core::http1::Head;

/// Flush once this many bytes are buffered.
pub const FLUSH_BYTES: usize = 16 * 1024;

/// The default text template (Envoy's default, trimmed to the fields Sluice has).
pub const DEFAULT_TEMPLATE: &str = "[%START_TIME%] \"%METHOD% %PATH% %PROTOCOL%\" %STATUS% %RESPONSE_FLAGS% %BYTES_RECEIVED% %BYTES_SENT% %DURATION% \"%UPSTREAM_HOST%\" \"%REQUEST_ID%\"";

/// The default text template of a `tcp_proxy` access log.
pub const DEFAULT_TCP_TEMPLATE: &str = "[%START_TIME%] %DOWNSTREAM_REMOTE_ADDRESS% %LISTENER% %UPSTREAM_CLUSTER% \"%UPSTREAM_HOST%\" %RESPONSE_FLAGS% %CLOSE_REASON% %BYTES_RECEIVED% %BYTES_SENT% %DURATION% \"%REQUESTED_SERVER_NAME%\"";

/// The default text template of a `bolt` listener's access log.
pub const DEFAULT_BOLT_TEMPLATE: &str = "[%START_TIME%] %DOWNSTREAM_REMOTE_ADDRESS% %LISTENER% \"%BOLT_SERVICE%\" \"%BOLT_METHOD%\" %BOLT_REQUEST_ID% %BOLT_STATUS% %RESPONSE_FLAGS% %UPSTREAM_CLUSTER% \"%UPSTREAM_HOST%\" %BYTES_RECEIVED% %BYTES_SENT% %DURATION% %ORIGINAL_DST%";

/// One Bolt request/response exchange's facts (a oneway request's: no response).
pub struct BoltEntry<'a> {
    /// When the request frame was decoded.
    pub start: SystemTime,
    /// From the request frame to its answer, in milliseconds.
    pub duration_ms: u64,
    /// The client.
    pub downstream: SocketAddr,
    /// Listener name.
    pub listener: &'a str,
    /// The connection's original destination, when a capture listener took it.
    pub original_dst: Option<SocketAddr>,
    /// The cluster the request was routed to.
    pub cluster: Option<&'a str>,
    /// The upstream host (or original destination) it was sent to.
    pub upstream: Option<SocketAddr>,
    /// Why the proxy answered (or dropped) it itself, if it did (Envoy-style code).
    pub flag: Option<&'static str>,
    /// The request frame's size.
    pub bytes_received: u64,
    /// The response frame's size (0 when none was sent).
    pub bytes_sent: u64,
    /// The service id (empty when the request carries none).
    pub service: &'a [u8],
    /// The method (`sofa_head_method_name`; empty when absent).
    pub method: &'a [u8],
    /// The request id as the client sent it.
    pub request_id: u32,
    /// The response's status code (`None`: no response was sent — oneway, or the client left).
    pub status: Option<u16>,
}

/// One request's (or TCP session's) facts.
pub struct Entry<'a> {
    /// When the request head started arriving.
    pub start: SystemTime,
    /// Method token.
    pub method: &'a [u8],
    /// Request target as received.
    pub path: &'a [u8],
    /// `HTTP/1.1` or `HTTP/1.0`.
    pub protocol: &'a str,
    /// Status sent downstream (0 if none was).
    pub status: u16,
    /// Why the proxy answered itself, if it did.
    pub flag: Option<&'a str>,
    /// Request bytes received (head + body).
    pub bytes_received: u64,
    /// Response bytes sent (head + body).
    pub bytes_sent: u64,
    /// Duration in milliseconds.
    pub duration_ms: u64,
    /// The upstream host of the last try.
    pub upstream: Option<SocketAddr>,
    /// `x-request-id`.
    pub request_id: &'a [u8],
    /// The client.
    pub downstream: SocketAddr,
    /// Listener name.
    pub listener: &'a str,
    /// The connection's original destination, when a capture listener (`original_dst`) took it.
    pub original_dst: Option<SocketAddr>,
    /// The parsed request head and the buffer it indexes (HTTP/2 requests: their HTTP/1.1
    /// translation), when the request got that far: `AUTHORITY`, `USER_AGENT` and `REQ(…)`
    /// are read from it, and only when the template uses them.
    pub request: Option<(&'a Head, &'a [u8])>,
    /// The cluster the request was routed to.
    pub cluster: Option<&'a str>,
    /// Upstream tries made (0 when none was: a local reply).
    pub tries: u32,
    /// Why a TCP session ended (`completed`, `connect_failed`…); `None` for HTTP.
    pub close_reason: Option<&'a str>,
    /// The server name the client asked for (TLS SNI), when one was seen.
    pub server_name: Option<&'a str>,
    /// The request's trace id (32 lowercase hex digits), when `tracing` is configured.
    pub trace_id: Option<&'a [u8; 32]>,
    /// A gRPC request's `grpc-status` (`None`: not gRPC, or no status seen).
    pub grpc_status: Option<u8>,
}

impl<'a> Entry<'a> {
    /// A request header (ASCII case-insensitive); `:authority`, `:path` and `:method` are the
    /// request line's (or the HTTP/2 pseudo-headers') values.
    pub(crate) fn header(&self, name: &str) -> Option<&'a [u8]> {
        let (head, buf) = self.request?;
        if name.eq_ignore_ascii_case(":authority") {
            head.host(buf)
        } else if name.eq_ignore_ascii_case(":path") {
            Some(head.target(buf))
        } else if name.eq_ignore_ascii_case(":method") {
            Some(head.method_bytes(buf))
        } else {
            head.header(buf, name)
        }
    }
}

enum Sink {
    Stdout,
    File(File),
}

enum Piece {
    Text(String),
    Field(Field),
    /// `%REQ(NAME?ALT):MAX%`: a request header, its fallback, at most `max` bytes of it.
    Header {
        name: String,
        alt: Option<String>,
        max: Option<usize>,
    },
}

#[derive(Clone, Copy)]
enum Field {
    StartTime,
    Method,
    Path,
    Protocol,
    Status,
    Flags,
    BytesReceived,
    BytesSent,
    Duration,
    UpstreamHost,
    RequestId,
    Downstream,
    Listener,
    OriginalDst,
    Authority,
    UserAgent,
    UpstreamCluster,
    RetryCount,
    CloseReason,
    ServerName,
    TraceId,
    GrpcStatus,
    BoltService,
    BoltMethod,
    BoltRequestId,
    BoltStatus,
}

const FIELDS: [(&str, Field); 26] = [
    ("START_TIME", Field::StartTime),
    ("METHOD", Field::Method),
    ("PATH", Field::Path),
    ("PROTOCOL", Field::Protocol),
    ("STATUS", Field::Status),
    ("RESPONSE_FLAGS", Field::Flags),
    ("BYTES_RECEIVED", Field::BytesReceived),
    ("BYTES_SENT", Field::BytesSent),
    ("DURATION", Field::Duration),
    ("UPSTREAM_HOST", Field::UpstreamHost),
    ("REQUEST_ID", Field::RequestId),
    ("DOWNSTREAM_REMOTE_ADDRESS", Field::Downstream),
    ("LISTENER", Field::Listener),
    ("ORIGINAL_DST", Field::OriginalDst),
    ("AUTHORITY", Field::Authority),
    ("USER_AGENT", Field::UserAgent),
    ("UPSTREAM_CLUSTER", Field::UpstreamCluster),
    ("RETRY_COUNT", Field::RetryCount),
    ("CLOSE_REASON", Field::CloseReason),
    ("REQUESTED_SERVER_NAME", Field::ServerName),
    ("TRACE_ID", Field::TraceId),
    ("GRPC_STATUS", Field::GrpcStatus),
    ("BOLT_SERVICE", Field::BoltService),
    ("BOLT_METHOD", Field::BoltMethod),
    ("BOLT_REQUEST_ID", Field::BoltRequestId),
    ("BOLT_STATUS", Field::BoltStatus),
];

/// A worker's access log writer for one listener.
pub struct AccessLog {
    /// The file, if not stdout (kept for [`AccessLog::reopen`]).
    path: Option<String>,
    json: bool,
    /// Whose log: its JSON lines have that kind's keys.
    kind: AccessLogKind,
    template: Vec<Piece>,
    /// The request headers a JSON line carries (lowercased).
    json_headers: Vec<String>,
    sink: Sink,
    buf: Vec<u8>,
}

impl AccessLog {
    /// Opens an HTTP listener's log: the destination (append), and compiles the template.
    pub fn open(config: &AccessLogConfig) -> io::Result<Self> {
        Self::open_for(config, AccessLogKind::Http)
    }

    /// Opens a `tcp_proxy` listener's log (one line per session).
    pub fn open_tcp(config: &AccessLogConfig) -> io::Result<Self> {
        Self::open_for(config, AccessLogKind::Tcp)
    }

    /// Opens a `bolt` listener's log (one line per exchange: [`AccessLog::log_bolt`]).
    pub fn open_bolt(config: &AccessLogConfig) -> io::Result<Self> {
        Self::open_for(config, AccessLogKind::Bolt)
    }

    fn open_for(config: &AccessLogConfig, kind: AccessLogKind) -> io::Result<Self> {
        let default = match kind {
            AccessLogKind::Http => DEFAULT_TEMPLATE,
            AccessLogKind::Tcp => DEFAULT_TCP_TEMPLATE,
            AccessLogKind::Bolt => DEFAULT_BOLT_TEMPLATE,
        };
        let sink = match &config.path {
            None => Sink::Stdout,
            Some(p) => Sink::File(open_append(p)?),
        };
        let (json, template) = match &config.format {
            AccessLogFormat::Json => (true, Vec::new()),
            AccessLogFormat::Text(t) => (false, compile(t.as_deref().unwrap_or(default))),
        };
        Ok(AccessLog {
            path: config.path.clone(),
            json,
            kind,
            template,
            json_headers: config
                .request_headers
                .iter()
                .map(|h| h.to_ascii_lowercase())
                .collect(),
            sink,
            buf: Vec::with_capacity(FLUSH_BYTES * 2),
        })
    }

    /// Appends one line; flushes when the buffer is full.
    pub fn log(&mut self, e: &Entry<'_>) {
        if self.json && self.kind == AccessLogKind::Tcp {
            write_tcp_json(&mut self.buf, e);
        } else if self.json {
            write_json(&mut self.buf, e, &self.json_headers);
        } else {
            write_pieces(&mut self.buf, &self.template, e);
        }
        self.end_line();
    }

    /// Appends one Bolt exchange's line; flushes when the buffer is full.
    pub fn log_bolt(&mut self, e: &BoltEntry<'_>) {
        if self.json {
            write_bolt_json(&mut self.buf, e);
        } else {
            for piece in &self.template {
                match piece {
                    Piece::Text(t) => self.buf.extend_from_slice(t.as_bytes()),
                    Piece::Field(f) => write_bolt_field(&mut self.buf, *f, e),
                    // Refused by the config for a bolt listener.
                    Piece::Header { .. } => self.buf.push(b'-'),
                }
            }
        }
        self.end_line();
    }

    fn end_line(&mut self) {
        self.buf.push(b'\n');
        if self.buf.len() >= FLUSH_BYTES {
            self.flush();
        }
    }

    /// Flushes, then opens the file again by its path (after log rotation moved it away; on
    /// SIGUSR1). On an error the old file is kept.
    pub fn reopen(&mut self) -> io::Result<()> {
        self.flush();
        if let Some(p) = &self.path {
            self.sink = Sink::File(open_append(p)?);
        }
        Ok(())
    }

    /// Writes out what is buffered.
    pub fn flush(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        let r = match &mut self.sink {
            Sink::Stdout => io::stdout().lock().write_all(&self.buf),
            Sink::File(f) => f.write_all(&self.buf),
        };
        if let Err(e) = r {
            tracing::warn!(error = %e, "access log write failed; lines dropped");
        }
        self.buf.clear();
    }
}

impl Drop for AccessLog {
    fn drop(&mut self) {
        self.flush();
    }
}

fn open_append(path: &str) -> io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| io::Error::new(e.kind(), format!("access log {path}: {e}")))
}

fn compile(template: &str) -> Vec<Piece> {
    let mut out = Vec::new();
    let mut rest = template;
    while let Some(start) = rest.find('%') {
        let after = &rest[start + 1..];
        let field = after
            .find('%')
            .and_then(|end| parse_placeholder(&after[..end]).map(|p| (p, end)));
        match field {
            Some((piece, end)) => {
                if start > 0 {
                    out.push(Piece::Text(rest[..start].to_owned()));
                }
                out.push(piece);
                rest = &after[end + 1..];
            }
            None => {
                out.push(Piece::Text(rest[..=start].to_owned()));
                rest = after;
            }
        }
    }
    if !rest.is_empty() {
        out.push(Piece::Text(rest.to_owned()));
    }
    out
}

/// A placeholder's inside (between the `%`s): a field name, or `REQ(NAME?ALT):MAX`.
fn parse_placeholder(inner: &str) -> Option<Piece> {
    if let Some((_, f)) = FIELDS.iter().find(|(n, _)| *n == inner) {
        return Some(Piece::Field(*f));
    }
    let args = inner.strip_prefix("REQ(")?;
    let close = args.find(')')?;
    let (names, tail) = (&args[..close], &args[close + 1..]);
    let max = match tail {
        "" => None,
        t => Some(t.strip_prefix(':')?.parse::<usize>().ok()?),
    };
    let (name, alt) = match names.split_once('?') {
        Some((n, a)) => (n, Some(a)),
        None => (names, None),
    };
    let token = |n: &str| !n.is_empty() && !n.contains(|c: char| c.is_whitespace() || c == '%');
    if !token(name) || !alt.is_none_or(token) {
        return None;
    }
    Some(Piece::Header {
        name: name.to_owned(),
        alt: alt.map(str::to_owned),
        max,
    })
}

fn write_pieces(buf: &mut Vec<u8>, pieces: &[Piece], e: &Entry<'_>) {
    for piece in pieces {
        match piece {
            Piece::Text(t) => buf.extend_from_slice(t.as_bytes()),
            Piece::Field(f) => write_field(buf, *f, e),
            Piece::Header { name, alt, max } => {
                let value = e
                    .header(name)
                    .or_else(|| alt.as_deref().and_then(|a| e.header(a)));
                match value {
                    Some(v) => write_escaped(buf, &v[..max.map_or(v.len(), |m| m.min(v.len()))]),
                    None => buf.push(b'-'),
                }
            }
        }
    }
}

/// Whether every `%NAME%` in a template names a known field (for config validation messages).
pub fn unknown_fields(template: &str) -> Vec<String> {
    let mut unknown = Vec::new();
    let parts: Vec<&str> = template.split('%').collect();
    for (i, p) in parts.iter().enumerate() {
        if i % 2 == 1 && i + 1 < parts.len() && parse_placeholder(p).is_none() {
            unknown.push((*p).to_owned());
        }
    }
    unknown
}

fn write_field(buf: &mut Vec<u8>, f: Field, e: &Entry<'_>) {
    use std::io::Write as _;
    let _ = match f {
        Field::StartTime => {
            write_rfc3339(buf, e.start);
            Ok(())
        }
        Field::Method => {
            write_escaped(buf, e.method);
            Ok(())
        }
        Field::Path => {
            write_escaped(buf, e.path);
            Ok(())
        }
        Field::Protocol => buf.write_all(e.protocol.as_bytes()),
        Field::Status => write!(buf, "{}", e.status),
        Field::Flags => buf.write_all(e.flag.unwrap_or("-").as_bytes()),
        Field::BytesReceived => write!(buf, "{}", e.bytes_received),
        Field::BytesSent => write!(buf, "{}", e.bytes_sent),
        Field::Duration => write!(buf, "{}", e.duration_ms),
        Field::UpstreamHost => match e.upstream {
            Some(a) => write!(buf, "{a}"),
            None => buf.write_all(b"-"),
        },
        Field::RequestId => {
            write_escaped(
                buf,
                if e.request_id.is_empty() {
                    b"-"
                } else {
                    e.request_id
                },
            );
            Ok(())
        }
        Field::Downstream => write!(buf, "{}", e.downstream),
        Field::Listener => buf.write_all(e.listener.as_bytes()),
        Field::OriginalDst => match e.original_dst {
            Some(a) => write!(buf, "{a}"),
            None => buf.write_all(b"-"),
        },
        Field::Authority => {
            write_escaped(buf, e.header(":authority").unwrap_or(b"-"));
            Ok(())
        }
        Field::UserAgent => {
            write_escaped(buf, e.header("user-agent").unwrap_or(b"-"));
            Ok(())
        }
        Field::UpstreamCluster => buf.write_all(e.cluster.unwrap_or("-").as_bytes()),
        Field::RetryCount => write!(buf, "{}", e.tries.saturating_sub(1)),
        Field::CloseReason => buf.write_all(e.close_reason.unwrap_or("-").as_bytes()),
        Field::ServerName => {
            write_escaped(buf, e.server_name.map_or(b"-", str::as_bytes));
            Ok(())
        }
        Field::TraceId => buf.write_all(e.trace_id.map_or(&b"-"[..], |t| &t[..])),
        Field::GrpcStatus => match e.grpc_status {
            Some(code) => write!(buf, "{code}"),
            None => buf.write_all(b"-"),
        },
        // Refused by the config outside a bolt listener.
        Field::BoltService | Field::BoltMethod | Field::BoltRequestId | Field::BoltStatus => {
            buf.write_all(b"-")
        }
    };
}

/// A field of a Bolt exchange's text line; the fields a Bolt exchange does not have (refused by
/// the config in a bolt template) are `-`.
fn write_bolt_field(buf: &mut Vec<u8>, f: Field, e: &BoltEntry<'_>) {
    use std::io::Write as _;
    let opt_addr = |buf: &mut Vec<u8>, a: Option<SocketAddr>| match a {
        Some(a) => write!(buf, "{a}"),
        None => buf.write_all(b"-"),
    };
    fn or_dash(bytes: &[u8]) -> &[u8] {
        if bytes.is_empty() { b"-" } else { bytes }
    }
    let _ = match f {
        Field::StartTime => {
            write_rfc3339(buf, e.start);
            Ok(())
        }
        Field::Duration => write!(buf, "{}", e.duration_ms),
        Field::Downstream => write!(buf, "{}", e.downstream),
        Field::Listener => buf.write_all(e.listener.as_bytes()),
        Field::UpstreamHost => opt_addr(buf, e.upstream),
        Field::UpstreamCluster => buf.write_all(e.cluster.unwrap_or("-").as_bytes()),
        Field::OriginalDst => opt_addr(buf, e.original_dst),
        Field::Flags => buf.write_all(e.flag.unwrap_or("-").as_bytes()),
        Field::BytesReceived => write!(buf, "{}", e.bytes_received),
        Field::BytesSent => write!(buf, "{}", e.bytes_sent),
        Field::BoltService => {
            write_escaped(buf, or_dash(e.service));
            Ok(())
        }
        Field::BoltMethod => {
            write_escaped(buf, or_dash(e.method));
            Ok(())
        }
        Field::BoltRequestId => write!(buf, "{}", e.request_id),
        Field::BoltStatus => match e.status {
            Some(code) => write!(buf, "{code}"),
            None => buf.write_all(b"-"),
        },
        _ => buf.write_all(b"-"),
    };
}

/// A Bolt exchange's JSON line.
fn write_bolt_json(buf: &mut Vec<u8>, e: &BoltEntry<'_>) {
    use std::io::Write as _;
    let opt_addr = |buf: &mut Vec<u8>, a: Option<SocketAddr>| match a {
        Some(a) => {
            let _ = write!(buf, "\"{a}\"");
        }
        None => buf.extend_from_slice(b"null"),
    };
    let opt_bytes = |buf: &mut Vec<u8>, b: &[u8]| {
        if b.is_empty() {
            buf.extend_from_slice(b"null");
        } else {
            let _ = serde_json::to_writer(&mut *buf, &*String::from_utf8_lossy(b));
        }
    };
    buf.extend_from_slice(b"{\"start_time\":\"");
    write_rfc3339(buf, e.start);
    let _ = write!(
        buf,
        "\",\"downstream_remote_address\":\"{}\",\"listener\":",
        e.downstream
    );
    let _ = serde_json::to_writer(&mut *buf, e.listener);
    buf.extend_from_slice(b",\"bolt_service\":");
    opt_bytes(buf, e.service);
    buf.extend_from_slice(b",\"bolt_method\":");
    opt_bytes(buf, e.method);
    let _ = write!(buf, ",\"bolt_request_id\":{}", e.request_id);
    match e.status {
        Some(code) => {
            let _ = write!(buf, ",\"bolt_status\":{code}");
        }
        None => buf.extend_from_slice(b",\"bolt_status\":null"),
    }
    buf.extend_from_slice(b",\"response_flags\":");
    let _ = serde_json::to_writer(&mut *buf, e.flag.unwrap_or("-"));
    buf.extend_from_slice(b",\"upstream_cluster\":");
    match e.cluster {
        Some(c) => {
            let _ = serde_json::to_writer(&mut *buf, c);
        }
        None => buf.extend_from_slice(b"null"),
    }
    buf.extend_from_slice(b",\"upstream_host\":");
    opt_addr(buf, e.upstream);
    let _ = write!(
        buf,
        ",\"bytes_received\":{},\"bytes_sent\":{},\"duration_ms\":{},\"original_dst\":",
        e.bytes_received, e.bytes_sent, e.duration_ms
    );
    opt_addr(buf, e.original_dst);
    buf.push(b'}');
}

/// Request bytes in a text line, escaped as nginx does: `"`, `\\`, control characters, DEL
/// and bytes ≥ 0x80 as `\xHH`, so a client cannot end a quoted field, forge fields or lines.
/// The common case, nothing to escape, is one copy.
fn write_escaped(buf: &mut Vec<u8>, bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let plain = |b: u8| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\';
    if bytes.iter().all(|&b| plain(b)) {
        buf.extend_from_slice(bytes);
        return;
    }
    for &b in bytes {
        if plain(b) {
            buf.push(b);
        } else {
            buf.extend_from_slice(&[
                b'\\',
                b'x',
                HEX[usize::from(b >> 4)],
                HEX[usize::from(b & 15)],
            ]);
        }
    }
}

/// One JSON object, written straight into the buffer (no intermediate value: nothing is
/// allocated per line). Request bytes that are not UTF-8 are written lossily.
fn write_json(buf: &mut Vec<u8>, e: &Entry<'_>, headers: &[String]) {
    use std::io::Write as _;
    fn string(buf: &mut Vec<u8>, bytes: &[u8]) {
        let _ = serde_json::to_writer(&mut *buf, &*String::from_utf8_lossy(bytes));
    }
    fn opt_string(buf: &mut Vec<u8>, bytes: Option<&[u8]>) {
        match bytes {
            Some(b) => string(buf, b),
            None => buf.extend_from_slice(b"null"),
        }
    }
    fn opt_addr(buf: &mut Vec<u8>, a: Option<SocketAddr>) {
        match a {
            Some(a) => {
                let _ = write!(buf, "\"{a}\"");
            }
            None => buf.extend_from_slice(b"null"),
        }
    }
    buf.extend_from_slice(b"{\"start_time\":\"");
    write_rfc3339(buf, e.start);
    buf.extend_from_slice(b"\",\"method\":");
    string(buf, e.method);
    buf.extend_from_slice(b",\"path\":");
    string(buf, e.path);
    buf.extend_from_slice(b",\"protocol\":");
    string(buf, e.protocol.as_bytes());
    let _ = write!(buf, ",\"status\":{},\"response_flags\":", e.status);
    string(buf, e.flag.unwrap_or("-").as_bytes());
    let _ = write!(
        buf,
        ",\"bytes_received\":{},\"bytes_sent\":{},\"duration_ms\":{},\"upstream_host\":",
        e.bytes_received, e.bytes_sent, e.duration_ms
    );
    opt_addr(buf, e.upstream);
    buf.extend_from_slice(b",\"request_id\":");
    string(buf, e.request_id);
    let _ = write!(
        buf,
        ",\"downstream_remote_address\":\"{}\",\"listener\":",
        e.downstream
    );
    string(buf, e.listener.as_bytes());
    buf.extend_from_slice(b",\"original_dst\":");
    opt_addr(buf, e.original_dst);
    buf.extend_from_slice(b",\"authority\":");
    opt_string(buf, e.header(":authority"));
    buf.extend_from_slice(b",\"user_agent\":");
    opt_string(buf, e.header("user-agent"));
    buf.extend_from_slice(b",\"upstream_cluster\":");
    opt_string(buf, e.cluster.map(str::as_bytes));
    let _ = write!(buf, ",\"retry_count\":{}", e.tries.saturating_sub(1));
    buf.extend_from_slice(b",\"trace_id\":");
    opt_string(buf, e.trace_id.map(|t| &t[..]));
    match e.grpc_status {
        Some(code) => {
            let _ = write!(buf, ",\"grpc_status\":{code}");
        }
        None => buf.extend_from_slice(b",\"grpc_status\":null"),
    }
    if !headers.is_empty() {
        buf.extend_from_slice(b",\"request_headers\":{");
        for (i, name) in headers.iter().enumerate() {
            if i > 0 {
                buf.push(b',');
            }
            string(buf, name.as_bytes());
            buf.push(b':');
            opt_string(buf, e.header(name));
        }
        buf.push(b'}');
    }
    buf.push(b'}');
}

/// A TCP session's JSON line: the fields a session has.
fn write_tcp_json(buf: &mut Vec<u8>, e: &Entry<'_>) {
    use std::io::Write as _;
    let opt_addr = |buf: &mut Vec<u8>, a: Option<SocketAddr>| match a {
        Some(a) => {
            let _ = write!(buf, "\"{a}\"");
        }
        None => buf.extend_from_slice(b"null"),
    };
    let opt_str = |buf: &mut Vec<u8>, s: Option<&str>| match s {
        Some(s) => {
            let _ = serde_json::to_writer(&mut *buf, s);
        }
        None => buf.extend_from_slice(b"null"),
    };
    buf.extend_from_slice(b"{\"start_time\":\"");
    write_rfc3339(buf, e.start);
    let _ = write!(
        buf,
        "\",\"downstream_remote_address\":\"{}\",\"listener\":",
        e.downstream
    );
    opt_str(buf, Some(e.listener));
    buf.extend_from_slice(b",\"upstream_cluster\":");
    opt_str(buf, e.cluster);
    buf.extend_from_slice(b",\"upstream_host\":");
    opt_addr(buf, e.upstream);
    let _ = write!(
        buf,
        ",\"bytes_received\":{},\"bytes_sent\":{},\"duration_ms\":{},\"response_flags\":",
        e.bytes_received, e.bytes_sent, e.duration_ms
    );
    opt_str(buf, Some(e.flag.unwrap_or("-")));
    buf.extend_from_slice(b",\"close_reason\":");
    opt_str(buf, e.close_reason);
    buf.extend_from_slice(b",\"requested_server_name\":");
    opt_str(buf, e.server_name);
    buf.extend_from_slice(b",\"original_dst\":");
    opt_addr(buf, e.original_dst);
    buf.push(b'}');
}

/// `2026-11-27T08:13:04.123Z`
fn write_rfc3339(buf: &mut Vec<u8>, t: SystemTime) {
    use std::io::Write as _;
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let _ = write!(
        buf,
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_millis()
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn rfc3339_dates() {
        let mut b = Vec::new();
        write_rfc3339(
            &mut b,
            UNIX_EPOCH + Duration::from_millis(1_795_767_184_123),
        );
        assert_eq!(String::from_utf8(b).unwrap(), "2026-11-27T08:13:04.123Z");
        let mut b = Vec::new();
        write_rfc3339(&mut b, UNIX_EPOCH + Duration::from_secs(951_782_400)); // leap day
        assert_eq!(String::from_utf8(b).unwrap(), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn request_bytes_are_escaped_in_text_lines() {
        let config = AccessLogConfig {
            format: AccessLogFormat::Text(None),
            path: None,
            request_headers: Vec::new(),
        };
        let mut log = AccessLog::open(&config).unwrap();
        let e = Entry {
            start: UNIX_EPOCH,
            method: b"GET",
            path: b"/a\"b\\c\x01\xff",
            protocol: "HTTP/1.1",
            status: 200,
            flag: None,
            bytes_received: 1,
            bytes_sent: 2,
            duration_ms: 3,
            upstream: None,
            request_id: b"abc\" 200 - 0 0 0 \"forged",
            downstream: "127.0.0.1:1".parse().unwrap(),
            listener: "l",
            original_dst: None,
            request: None,
            cluster: None,
            tries: 0,
            close_reason: None,
            server_name: None,
            trace_id: None,
            grpc_status: None,
        };
        log.log(&e);
        let line = String::from_utf8(std::mem::take(&mut log.buf)).unwrap();
        assert_eq!(
            line,
            "[1970-01-01T00:00:00.000Z] \"GET /a\\x22b\\x5Cc\\x01\\xFF HTTP/1.1\" 200 - 1 2 3 \"-\" \
             \"abc\\x22 200 - 0 0 0 \\x22forged\"\n"
        );
        // Exactly the template's quotes are left.
        assert_eq!(line.matches('"').count(), 6);
    }

    #[test]
    fn template_fields_and_literal_percent() {
        let pieces = compile("a %STATUS% 100% %NOPE% %METHOD% %ORIGINAL_DST%");
        let e = Entry {
            start: UNIX_EPOCH,
            method: b"GET",
            path: b"/x",
            protocol: "HTTP/1.1",
            status: 204,
            flag: None,
            bytes_received: 1,
            bytes_sent: 2,
            duration_ms: 3,
            upstream: None,
            request_id: b"",
            downstream: "127.0.0.1:1".parse().unwrap(),
            listener: "l",
            original_dst: Some("10.0.0.5:80".parse().unwrap()),
            request: None,
            cluster: None,
            tries: 0,
            close_reason: None,
            server_name: None,
            trace_id: None,
            grpc_status: None,
        };
        let mut buf = Vec::new();
        write_pieces(&mut buf, &pieces, &e);
        assert_eq!(
            String::from_utf8(buf).unwrap(),
            "a 204 100% %NOPE% GET 10.0.0.5:80"
        );
        assert_eq!(unknown_fields("%STATUS% %NOPE%"), ["NOPE"]);
    }

    fn parsed(raw: &[u8]) -> Head {
        use sluice_core::http1::{Limits, ParseStatus, parse_request};
        let mut head = Head::default();
        let limits = Limits {
            max_head_bytes: 8192,
            max_headers: 100,
        };
        assert_eq!(
            parse_request(raw, &limits, &mut head).unwrap(),
            ParseStatus::Complete
        );
        head
    }

    fn entry<'a>(request: Option<(&'a Head, &'a [u8])>) -> Entry<'a> {
        Entry {
            start: UNIX_EPOCH,
            method: b"GET",
            path: b"/x",
            protocol: "HTTP/1.1",
            status: 200,
            flag: None,
            bytes_received: 1,
            bytes_sent: 2,
            duration_ms: 3,
            upstream: Some("10.0.0.9:8080".parse().unwrap()),
            request_id: b"id",
            downstream: "127.0.0.1:1".parse().unwrap(),
            listener: "l",
            original_dst: None,
            request,
            cluster: Some("app"),
            tries: 3,
            close_reason: None,
            server_name: None,
            trace_id: None,
            grpc_status: None,
        }
    }

    #[test]
    fn request_fields_and_headers_in_text_lines() {
        let raw = b"GET /x HTTP/1.1\r\nHost: example.com\r\nUser-Agent: curl/8\r\n\
                    X-Tenant: acme\"corp\r\nX-Long: 0123456789\r\n\r\n";
        let head = parsed(raw);
        let pieces = compile(
            "%AUTHORITY% %USER_AGENT% %UPSTREAM_CLUSTER% %RETRY_COUNT% \"%REQ(x-tenant)%\" \
             %REQ(X-LONG):4% %REQ(X-NONE)% %REQ(X-NONE?USER-AGENT)% %REQ(:AUTHORITY)% %REQ(:PATH)% \
             %REQ(bad",
        );
        let mut buf = Vec::new();
        write_pieces(&mut buf, &pieces, &entry(Some((&head, raw))));
        assert_eq!(
            String::from_utf8(buf).unwrap(),
            "example.com curl/8 app 2 \"acme\\x22corp\" 0123 - curl/8 example.com /x %REQ(bad"
        );
        // A request refused before its head was parsed: every request field is `-`.
        let mut buf = Vec::new();
        let mut e = entry(None);
        e.cluster = None;
        e.tries = 0;
        write_pieces(
            &mut buf,
            &compile("%AUTHORITY% %USER_AGENT% %REQ(X-TENANT)% %UPSTREAM_CLUSTER% %RETRY_COUNT%"),
            &e,
        );
        assert_eq!(String::from_utf8(buf).unwrap(), "- - - - 0");
        assert!(unknown_fields("%REQ(X-A):12% %REQ(X-A):z%").len() == 1);
    }

    #[test]
    fn request_fields_and_headers_in_json_lines() {
        let raw = b"GET /x HTTP/1.1\r\nHost: example.com\r\nX-Tenant: acme\r\n\r\n";
        let head = parsed(raw);
        let config = AccessLogConfig {
            format: AccessLogFormat::Json,
            path: None,
            request_headers: vec!["X-Tenant".into(), "x-missing".into()],
        };
        let mut log = AccessLog::open(&config).unwrap();
        log.log(&entry(Some((&head, raw))));
        let line = String::from_utf8(std::mem::take(&mut log.buf)).unwrap();
        let v: serde_json::Value = serde_json::from_str(line.trim_end()).unwrap();
        assert_eq!(v["authority"], "example.com");
        assert_eq!(v["user_agent"], serde_json::Value::Null);
        assert_eq!(v["upstream_cluster"], "app");
        assert_eq!(v["retry_count"], 2);
        assert_eq!(v["request_headers"]["x-tenant"], "acme");
        assert_eq!(v["request_headers"]["x-missing"], serde_json::Value::Null);
        assert_eq!(v["upstream_host"], "10.0.0.9:8080");
        assert_eq!(v["start_time"], "1970-01-01T00:00:00.000Z");
        assert_eq!(v["request_id"], "id");
        assert_eq!(v["status"], 200);
        assert_eq!(v["grpc_status"], serde_json::Value::Null);
    }

    #[test]
    fn grpc_status_in_text_and_json_lines() {
        let pieces = compile("%STATUS% %GRPC_STATUS%");
        let mut e = entry(None);
        let mut buf = Vec::new();
        write_pieces(&mut buf, &pieces, &e);
        assert_eq!(buf, b"200 -");
        e.grpc_status = Some(14);
        buf.clear();
        write_pieces(&mut buf, &pieces, &e);
        assert_eq!(buf, b"200 14");
        let config = AccessLogConfig {
            format: AccessLogFormat::Json,
            path: None,
            request_headers: Vec::new(),
        };
        let mut log = AccessLog::open(&config).unwrap();
        log.log(&e);
        let line = String::from_utf8(std::mem::take(&mut log.buf)).unwrap();
        let v: serde_json::Value = serde_json::from_str(line.trim_end()).unwrap();
        assert_eq!(v["grpc_status"], 14);
    }

    /// The core validates templates with its field lists; they must be exactly this module's.
    #[test]
    fn field_names_match_the_configs_lists() {
        use sluice_core::config::http::{
            BOLT_LOG_FIELDS, BOLT_ONLY_LOG_FIELDS, HTTP_ONLY_LOG_FIELDS, TCP_LOG_FIELDS,
        };
        let mut ours: Vec<&str> = FIELDS.iter().map(|(n, _)| *n).collect();
        // Every Bolt field is a field.
        assert!(BOLT_LOG_FIELDS.iter().all(|f| ours.contains(f)));
        let mut config: Vec<&str> = TCP_LOG_FIELDS
            .iter()
            .chain(&HTTP_ONLY_LOG_FIELDS)
            .chain(&BOLT_ONLY_LOG_FIELDS)
            .copied()
            .chain(["ORIGINAL_DST"])
            .collect();
        ours.sort_unstable();
        config.sort_unstable();
        assert_eq!(ours, config);
    }

    fn bolt_entry() -> BoltEntry<'static> {
        BoltEntry {
            start: UNIX_EPOCH,
            duration_ms: 4,
            downstream: "10.0.0.2:40000".parse().unwrap(),
            listener: "rpc",
            original_dst: Some("10.0.0.9:12200".parse().unwrap()),
            cluster: Some("echo"),
            upstream: Some("10.0.0.9:12200".parse().unwrap()),
            flag: None,
            bytes_received: 120,
            bytes_sent: 60,
            service: b"com.example.Echo:1.0",
            method: b"",
            request_id: 101,
            status: Some(0),
        }
    }

    #[test]
    fn bolt_exchange_lines() {
        let text = |template: Option<&str>| AccessLogConfig {
            format: AccessLogFormat::Text(template.map(str::to_owned)),
            path: None,
            request_headers: Vec::new(),
        };
        let mut log = AccessLog::open_bolt(&text(None)).unwrap();
        log.log_bolt(&bolt_entry());
        // A proxy's own answer: no host, flag and status; a service that would forge a field.
        let mut e = bolt_entry();
        (e.upstream, e.flag, e.status, e.bytes_sent) = (None, Some("UH"), Some(6), 20);
        e.service = b"a\" 0 - x";
        e.method = b"echo";
        log.log_bolt(&e);
        // A oneway request, or one whose client left: no status.
        let mut e = bolt_entry();
        (e.status, e.flag, e.original_dst) = (None, Some("DC"), None);
        log.log_bolt(&e);
        let lines = String::from_utf8(std::mem::take(&mut log.buf)).unwrap();
        assert_eq!(
            lines,
            "[1970-01-01T00:00:00.000Z] 10.0.0.2:40000 rpc \"com.example.Echo:1.0\" \"-\" 101 0 - \
             echo \"10.0.0.9:12200\" 120 60 4 10.0.0.9:12200\n\
             [1970-01-01T00:00:00.000Z] 10.0.0.2:40000 rpc \"a\\x22 0 - x\" \"echo\" 101 6 UH echo \
             \"-\" 120 20 4 10.0.0.9:12200\n\
             [1970-01-01T00:00:00.000Z] 10.0.0.2:40000 rpc \"com.example.Echo:1.0\" \"-\" 101 - DC \
             echo \"10.0.0.9:12200\" 120 60 4 -\n"
        );
        let mut log = AccessLog::open_bolt(&text(Some("%BOLT_STATUS%|%ORIGINAL_DST%"))).unwrap();
        log.log_bolt(&bolt_entry());
        assert_eq!(log.buf, b"0|10.0.0.9:12200\n");
        let json = AccessLogConfig {
            format: AccessLogFormat::Json,
            path: None,
            request_headers: Vec::new(),
        };
        let mut log = AccessLog::open_bolt(&json).unwrap();
        let mut e = bolt_entry();
        e.status = None;
        log.log_bolt(&bolt_entry());
        log.log_bolt(&e);
        let text = String::from_utf8(std::mem::take(&mut log.buf)).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let v = &lines[0];
        assert_eq!(v["bolt_service"], "com.example.Echo:1.0");
        assert_eq!(v["bolt_method"], serde_json::Value::Null);
        assert_eq!(v["bolt_request_id"], 101);
        assert_eq!(v["bolt_status"], 0);
        assert_eq!(v["response_flags"], "-");
        assert_eq!(v["upstream_cluster"], "echo");
        assert_eq!(v["upstream_host"], "10.0.0.9:12200");
        assert_eq!(v["original_dst"], "10.0.0.9:12200");
        assert_eq!(v["bytes_received"], 120);
        assert_eq!(v["bytes_sent"], 60);
        assert_eq!(v["duration_ms"], 4);
        assert_eq!(v["listener"], "rpc");
        assert_eq!(v["downstream_remote_address"], "10.0.0.2:40000");
        assert_eq!(lines[1]["bolt_status"], serde_json::Value::Null);
        assert!(v.get("method").is_none());
    }

    #[test]
    fn tcp_session_lines() {
        let config = AccessLogConfig {
            format: AccessLogFormat::Text(None),
            path: None,
            request_headers: Vec::new(),
        };
        let mut log = AccessLog::open_tcp(&config).unwrap();
        let mut e = entry(None);
        e.flag = Some("UF");
        e.close_reason = Some("connect_failed");
        e.server_name = Some("a.example.com");
        e.upstream = None;
        log.log(&e);
        let line = String::from_utf8(std::mem::take(&mut log.buf)).unwrap();
        assert_eq!(
            line,
            "[1970-01-01T00:00:00.000Z] 127.0.0.1:1 l app \"-\" UF connect_failed 1 2 3 \
             \"a.example.com\"\n"
        );
        let config = AccessLogConfig {
            format: AccessLogFormat::Json,
            path: None,
            request_headers: Vec::new(),
        };
        let mut log = AccessLog::open_tcp(&config).unwrap();
        log.log(&e);
        let line = String::from_utf8(std::mem::take(&mut log.buf)).unwrap();
        let v: serde_json::Value = serde_json::from_str(line.trim_end()).unwrap();
        assert_eq!(v["close_reason"], "connect_failed");
        assert_eq!(v["response_flags"], "UF");
        assert_eq!(v["upstream_cluster"], "app");
        assert_eq!(v["upstream_host"], serde_json::Value::Null);
        assert_eq!(v["requested_server_name"], "a.example.com");
        assert_eq!(v["bytes_received"], 1);
        assert!(v.get("method").is_none());
    }
}
