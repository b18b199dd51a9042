//! Decoding and validation of a listener's `http` section into an [`HttpConfig`].
//!
//! Like the rest of the config decoder it keeps going after a problem, so that every problem is
//! reported at once, each at its path
//! (`listeners[0].http.virtual_hosts[0].routes[2].route.weighted_clusters[1].cluster`), and an
//! unknown field is an error at every level.
//!
//! Invariants of a returned [`HttpConfig`] (what [`crate::router::Router`] and the HTTP driver
//! rely on):
//! - `max_request_headers_kb` is 1..=8192, `max_headers_count` 1..=[`MAX_HEADERS_COUNT_LIMIT`],
//!   `request_headers_timeout` > 0; `normalize_path` and `merge_slashes` are booleans and
//!   `path_with_escaped_slashes_action` one of its three names; `codec` is `auto`, `http1` or
//!   `http2`; `forwarded_proto` is `overwrite` or `preserve`; `http2.max_concurrent_streams` is 1..=10000, `max_header_list_size` 1 KiB..=1 MiB,
//!   the windows 65535..=2^31-1 with the connection window at least the stream window,
//!   `connection_keepalive` (when set) has `interval` and `timeout` both > 0; an access log `template` only comes with the text format;
//! - there is at least one virtual host; their names are unique; each has at least one domain;
//!   a domain is `*`, a host name with at most one `*` at its start or end, or an IPv6 address
//!   in brackets, never with a port; domains are unique (case-insensitively) across the
//!   listener;
//! - a route has exactly one path rule and exactly one action; `path` and `prefix` start with
//!   `/`; every `safe_regex` compiles as written and anchored to the whole path or value;
//! - a header matcher's name is a lowercase token and it has exactly one rule;
//! - every cluster reference resolves (`cluster_index` indexes `Config::clusters`); a weighted
//!   list is non-empty, its weights are 1..=1000 and its clusters distinct;
//! - `prefix_rewrite` comes only with a `prefix` match and starts with `/`;
//! - a retry policy has at least one condition, `num_retries` 0..=10, `per_try_timeout` > 0;
//! - header names to add or remove are tokens (stored lowercase when removed), never a
//!   pseudo-header nor one the proxy manages (`host`, `connection`, `transfer-encoding`,
//!   `content-length`); values have no control character (RFC 9110 §5.5: HTAB allowed); `append_action` is
//!   `overwrite_if_exists_or_add` (the default) or `append_if_exists_or_add`; a name added by an
//!   overwriting entry has no other entry on its list (appending entries of one name may repeat);
//! - a direct response has a status 200..=599 and no body when the status is 204 or 304.

use std::ops::RangeInclusive;
use std::time::Duration;

use serde_json::Value;

use super::decoder::{Decoder, Obj, child, index};
use super::{cluster_ref, opt_duration};
use crate::config::http::{
    AccessLogConfig, AccessLogFormat, AccessLogKind, AppendAction, ClientCertDetails,
    ClusterTarget, DEFAULT_HTTP_IDLE_TIMEOUT, DEFAULT_MAX_HEADERS_COUNT,
    DEFAULT_MAX_REQUEST_HEADERS_KB, DEFAULT_NUM_RETRIES, DEFAULT_REQUEST_HEADERS_TIMEOUT,
    DEFAULT_ROUTE_TIMEOUT, DEFAULT_STREAM_IDLE_TIMEOUT, EscapedSlashesAction, ForwardAction,
    ForwardClientCert, ForwardedProto, H2_MAX_WINDOW_SIZE, H2_MIN_WINDOW_SIZE, HeaderMatcher,
    HeaderRule, HeaderValue, Http2Settings, HttpCodec, HttpConfig, MAX_HEADERS_COUNT_LIMIT,
    PathMatch, PathNormalization, RetryOn, RetryPolicy, Route, RouteAction, RouteMatch,
    RouteUpgrade, ServerHeader, ServerHeaderTransformation, StatusCodes, VirtualHost,
    WeightedCluster, header_value_problem, template_placeholders,
};
use crate::pattern::compile_full_match;

/// Largest accepted `http2.max_concurrent_streams`.
const H2_MAX_CONCURRENT_STREAMS_LIMIT: u32 = 10_000;
/// Largest accepted `http2.max_header_list_size` (1 MiB; h2's default is 16 MiB).
const H2_MAX_HEADER_LIST_SIZE_LIMIT: u32 = 1024 * 1024;

/// Largest accepted `max_request_headers_kb` (Envoy's limit).
const MAX_REQUEST_HEADERS_KB_LIMIT: u64 = 8192;

/// Headers that the proxy itself writes or interprets: a route may neither add nor remove them
/// (pseudo-headers, `:`-prefixed, neither).
const MANAGED_HEADERS: [&str; 4] = ["host", "connection", "transfer-encoding", "content-length"];

/// Sets one retry condition.
type SetRetryOn = fn(&mut RetryOn);

/// The retry conditions by config name; the same names, in the same order, as
/// [`RetryOn::NAMES`].
const RETRY_ON: [(&str, SetRetryOn); 12] = [
    ("connect-failure", |r| r.connect_failure = true),
    ("reset", |r| r.reset = true),
    ("5xx", |r| r.server_error = true),
    ("gateway-error", |r| r.gateway_error = true),
    ("retriable-4xx", |r| r.retriable_4xx = true),
    ("refused-stream", |r| r.refused_stream = true),
    ("retriable-status-codes", |r| {
        r.retriable_status_codes = true
    }),
    // gRPC statuses (Envoy's x-envoy-retry-grpc-on names), read from a trailers-only answer.
    ("cancelled", |r| r.grpc_codes |= 1 << 1),
    ("deadline-exceeded", |r| r.grpc_codes |= 1 << 4),
    ("internal", |r| r.grpc_codes |= 1 << 13),
    ("resource-exhausted", |r| r.grpc_codes |= 1 << 8),
    ("unavailable", |r| r.grpc_codes |= 1 << 14),
];

/// The path rules of a `match`, as config keys.
const PATH_RULES: [&str; 3] = ["path", "prefix", "safe_regex"];

/// Decodes `listeners[i].http`; `cluster_names` are the cluster names as written in the file.
pub(super) fn decode_http(
    dec: &mut Decoder,
    path: &str,
    v: &Value,
    cluster_names: &[&str],
) -> Option<HttpConfig> {
    let mut obj = dec.object(path, v)?;
    let max_request_headers_kb = opt_u32(
        dec,
        &mut obj,
        "max_request_headers_kb",
        1..=MAX_REQUEST_HEADERS_KB_LIMIT,
        DEFAULT_MAX_REQUEST_HEADERS_KB,
    );
    let max_headers_count = opt_u32(
        dec,
        &mut obj,
        "max_headers_count",
        1..=u64::from(MAX_HEADERS_COUNT_LIMIT),
        DEFAULT_MAX_HEADERS_COUNT,
    );
    let request_headers_timeout = opt_positive_duration(dec, &mut obj, "request_headers_timeout")
        .map(|d| d.unwrap_or(DEFAULT_REQUEST_HEADERS_TIMEOUT));
    let stream_idle_timeout = opt_duration(
        dec,
        &mut obj,
        "stream_idle_timeout",
        DEFAULT_STREAM_IDLE_TIMEOUT,
    )
    .map(nonzero);
    let idle_timeout =
        opt_duration(dec, &mut obj, "idle_timeout", DEFAULT_HTTP_IDLE_TIMEOUT).map(nonzero);
    let path_normalization = decode_path_normalization(dec, &mut obj);
    let codec = match obj.opt("codec") {
        Some((v, p)) => dec.one_of(
            &p,
            v,
            &[
                ("auto", HttpCodec::Auto),
                ("http1", HttpCodec::Http1),
                ("http2", HttpCodec::Http2),
            ],
        ),
        None => Some(HttpCodec::Auto),
    };
    let http2 = match obj.opt("http2") {
        Some((v, p)) => decode_http2(dec, &p, v),
        None => Some(Http2Settings::DEFAULT),
    };
    let forwarded_proto = match obj.opt("forwarded_proto") {
        Some((v, p)) => dec.one_of(
            &p,
            v,
            &[
                ("overwrite", ForwardedProto::Overwrite),
                ("preserve", ForwardedProto::Preserve),
            ],
        ),
        None => Some(ForwardedProto::Overwrite),
    };
    let upgrade_types = match obj.opt("upgrade_types") {
        Some((v, p)) => decode_upgrade_types(dec, &p, v).map(Some),
        None => Some(None),
    };
    let server_name = match obj.opt("server_name") {
        Some((v, p)) => header_value(dec, &p, v).and_then(|name| {
            if name.is_empty() {
                dec.error(&p, "cannot be empty");
                return None;
            }
            Some(Some(name))
        }),
        None => Some(None),
    };
    let transformation = match obj.opt("server_header_transformation") {
        Some((v, p)) => {
            if matches!(server_name, Some(None)) {
                dec.error(&p, "applies only with `server_name`");
            }
            dec.one_of(&p, v, &ServerHeaderTransformation::CHOICES)
        }
        None => Some(ServerHeaderTransformation::Overwrite),
    };
    let server_header = match (server_name, transformation) {
        (Some(name), Some(transformation)) => Some(name.map(|name| ServerHeader {
            name,
            transformation,
        })),
        _ => None,
    };
    let forward_client_cert = match obj.opt("forward_client_cert") {
        Some((v, p)) => dec.one_of(&p, v, &ForwardClientCert::CHOICES),
        None => Some(ForwardClientCert::Sanitize),
    };
    let cert_details = match obj.opt("set_current_client_cert_details") {
        Some((v, p)) => decode_cert_details(dec, &p, v),
        None => Some(ClientCertDetails::default()),
    };
    let access_log = match obj.opt("access_log") {
        Some((v, p)) => decode_access_log(dec, &p, v, AccessLogKind::Http).map(Some),
        None => Some(None),
    };
    let virtual_hosts = obj.req(dec, "virtual_hosts").and_then(|(v, p)| {
        let vhosts = dec.list(&p, v, |dec, path, v| {
            decode_virtual_host(dec, path, v, cluster_names)
        });
        // On the list as written, so that a duplicate is reported even when a virtual host has
        // other problems.
        check_virtual_hosts_unique(dec, &p, v);
        let vhosts = vhosts?;
        if vhosts.is_empty() {
            dec.error(&p, "at least one virtual host is required");
            return None;
        }
        Some(vhosts)
    });
    obj.finish(dec);
    Some(HttpConfig {
        max_request_headers_kb: max_request_headers_kb?,
        max_headers_count: max_headers_count?,
        request_headers_timeout: request_headers_timeout?,
        stream_idle_timeout: stream_idle_timeout?,
        idle_timeout: idle_timeout?,
        path_normalization: path_normalization?,
        codec: codec?,
        http2: http2?,
        forwarded_proto: forwarded_proto?,
        upgrade_types: upgrade_types?,
        server_header: server_header?,
        forward_client_cert: forward_client_cert?,
        set_current_client_cert_details: cert_details?,
        virtual_hosts: virtual_hosts?,
        access_log: access_log?,
    })
}

/// `http.http2`: stream limit, header list limit, flow-control windows and PING keepalive
/// (`connection_keepalive`, off by default); the connection
/// window must be at least the stream window.
fn decode_http2(dec: &mut Decoder, path: &str, v: &Value) -> Option<Http2Settings> {
    let mut obj = dec.object(path, v)?;
    let d = Http2Settings::DEFAULT;
    let max_concurrent_streams = opt_u32(
        dec,
        &mut obj,
        "max_concurrent_streams",
        1..=u64::from(H2_MAX_CONCURRENT_STREAMS_LIMIT),
        d.max_concurrent_streams,
    );
    let max_header_list_size = opt_u32(
        dec,
        &mut obj,
        "max_header_list_size",
        1024..=u64::from(H2_MAX_HEADER_LIST_SIZE_LIMIT),
        d.max_header_list_size,
    );
    let window = u64::from(H2_MIN_WINDOW_SIZE)..=u64::from(H2_MAX_WINDOW_SIZE);
    let stream_window = opt_u32(
        dec,
        &mut obj,
        "initial_stream_window_size",
        window.clone(),
        d.initial_stream_window_size,
    );
    let connection_window = opt_u32(
        dec,
        &mut obj,
        "initial_connection_window_size",
        window,
        d.initial_connection_window_size,
    );
    if let (Some(s), Some(c)) = (stream_window, connection_window)
        && c < s
    {
        dec.error(
            &child(path, "initial_connection_window_size"),
            format!(
                "{c} is smaller than initial_stream_window_size ({s}): one stream could stop the connection"
            ),
        );
    }
    let connection_keepalive = match obj.opt("connection_keepalive") {
        Some((v, p)) => super::cluster_http2::keepalive(dec, &p, v).map(Some),
        None => Some(None),
    };
    obj.finish(dec);
    let (s, c) = (stream_window?, connection_window?);
    if c < s {
        return None;
    }
    Some(Http2Settings {
        max_concurrent_streams: max_concurrent_streams?,
        max_header_list_size: max_header_list_size?,
        initial_stream_window_size: s,
        initial_connection_window_size: c,
        connection_keepalive: connection_keepalive?,
    })
}

/// `normalize_path` and `merge_slashes` (booleans, default true) and
/// `path_with_escaped_slashes_action` (default `reject_request`).
fn decode_path_normalization(dec: &mut Decoder, obj: &mut Obj<'_>) -> Option<PathNormalization> {
    let mut flag = |dec: &mut Decoder, key: &'static str| match obj.opt(key) {
        Some((v, p)) => boolean(dec, &p, v),
        None => Some(true),
    };
    let normalize_path = flag(dec, "normalize_path");
    let merge_slashes = flag(dec, "merge_slashes");
    let escaped_slashes = match obj.opt("path_with_escaped_slashes_action") {
        Some((v, p)) => dec.one_of(
            &p,
            v,
            &[
                ("reject_request", EscapedSlashesAction::RejectRequest),
                ("keep_unchanged", EscapedSlashesAction::KeepUnchanged),
                (
                    "unescape_and_forward",
                    EscapedSlashesAction::UnescapeAndForward,
                ),
            ],
        ),
        None => Some(EscapedSlashesAction::RejectRequest),
    };
    Some(PathNormalization {
        normalize_path: normalize_path?,
        merge_slashes: merge_slashes?,
        escaped_slashes: escaped_slashes?,
    })
}

/// `http.upgrade_types`: `Upgrade` values (tokens, stored lowercase), each once; `[]` refuses
/// every upgrade.
fn decode_upgrade_types(dec: &mut Decoder, path: &str, v: &Value) -> Option<Vec<String>> {
    let types = dec.list(path, v, |dec, p, v| {
        let s = dec.string(p, v)?;
        if s.is_empty() || !s.bytes().all(is_token_byte) {
            dec.error(p, format!("{s:?} is not an upgrade token (e.g. websocket)"));
            return None;
        }
        Some(s.to_ascii_lowercase())
    })?;
    for (i, t) in types.iter().enumerate() {
        if types[..i].contains(t) {
            dec.error(&index(path, i), format!("{t:?} is listed twice"));
            return None;
        }
    }
    Some(types)
}

/// `http.set_current_client_cert_details`: `{ cert, chain, subject, uri, dns }`, booleans
/// (false when left out).
fn decode_cert_details(dec: &mut Decoder, path: &str, v: &Value) -> Option<ClientCertDetails> {
    let mut obj = dec.object(path, v)?;
    let mut flag = |dec: &mut Decoder, key: &'static str| match obj.opt(key) {
        Some((v, p)) => boolean(dec, &p, v),
        None => Some(false),
    };
    let cert = flag(dec, "cert");
    let chain = flag(dec, "chain");
    let subject = flag(dec, "subject");
    let uri = flag(dec, "uri");
    let dns = flag(dec, "dns");
    obj.finish(dec);
    Some(ClientCertDetails {
        cert: cert?,
        chain: chain?,
        subject: subject?,
        uri: uri?,
        dns: dns?,
    })
}

/// An RFC 9110 token character.
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn nonzero(d: Duration) -> Option<Duration> {
    (!d.is_zero()).then_some(d)
}

fn opt_u32(
    dec: &mut Decoder,
    obj: &mut Obj<'_>,
    key: &'static str,
    range: RangeInclusive<u64>,
    default: u32,
) -> Option<u32> {
    match obj.opt(key) {
        Some((v, p)) => dec.u64_in(&p, v, range).map(|n| n as u32),
        None => Some(default),
    }
}

/// An optional duration that must not be zero: `Some(None)` when absent.
fn opt_positive_duration(
    dec: &mut Decoder,
    obj: &mut Obj<'_>,
    key: &'static str,
) -> Option<Option<Duration>> {
    let Some((v, p)) = obj.opt(key) else {
        return Some(None);
    };
    let d = dec.duration(&p, v)?;
    if d.is_zero() {
        dec.error(&p, "must be greater than zero");
        return None;
    }
    Some(Some(d))
}

/// Exactly one of a set of alternative keys: `found` holds one entry per key present.
fn exactly_one<T>(
    dec: &mut Decoder,
    path: &str,
    mut found: Vec<Option<T>>,
    what: &str,
    choices: &str,
) -> Option<T> {
    match found.len() {
        0 => {
            dec.error(path, format!("no {what}: give one of {choices}"));
            None
        }
        1 => found.pop().flatten(),
        _ => {
            dec.error(
                path,
                format!("more than one {what}: give exactly one of {choices}"),
            );
            None
        }
    }
}

/// A string; a number or a boolean (which YAML reads from unquoted `1` or `true`) gets a hint
/// to quote it.
fn text<'v>(dec: &mut Decoder, path: &str, v: &'v Value) -> Option<&'v str> {
    match v {
        Value::Number(_) | Value::Bool(_) => {
            let kind = if v.is_boolean() {
                "the boolean"
            } else {
                "the number"
            };
            dec.error(
                path,
                format!("expected a string, found {kind} {v} (write it in quotes: \"{v}\")"),
            );
            None
        }
        _ => dec.string(path, v),
    }
}

fn boolean(dec: &mut Decoder, path: &str, v: &Value) -> Option<bool> {
    match v {
        Value::Bool(b) => Some(*b),
        other => {
            dec.error(path, format!("expected true or false, found {other}"));
            None
        }
    }
}

/// An `access_log` block of a listener of `kind`, whose template may use only the fields that
/// kind has.
pub(super) fn decode_access_log(
    dec: &mut Decoder,
    path: &str,
    v: &Value,
    kind: AccessLogKind,
) -> Option<AccessLogConfig> {
    let mut obj = dec.object(path, v)?;
    let json = match obj.opt("format") {
        Some((v, p)) => dec.one_of(&p, v, &[("text", false), ("json", true)]),
        None => Some(false),
    };
    let template = match obj.opt("template") {
        Some((v, p)) => dec.string(&p, v).and_then(|t| {
            if json == Some(true) {
                dec.error(&p, "only allowed with `format: text`");
                None
            } else if t.is_empty() {
                dec.error(&p, "is empty (leave `template` out for the default line)");
                None
            } else if let Some((field, owner)) =
                template_placeholders(t).find_map(|f| kind.refuses(f).map(|owner| (f, owner)))
            {
                let has = match kind.fields() {
                    Some(fields) => format!("a {} access log has {fields}", kind.name()),
                    None => "an http access log has every other field".to_owned(),
                };
                dec.error(&p, format!("%{field}% is a field of {owner}; {has}"));
                None
            } else {
                Some(Some(t.to_owned()))
            }
        }),
        None => Some(None),
    };
    let file = match obj.opt("path") {
        Some((v, p)) => dec.string(&p, v).and_then(|s| {
            if s.is_empty() {
                dec.error(&p, "is empty (leave `path` out to log to stdout)");
                None
            } else if s.contains('\0') {
                dec.error(&p, format!("{s:?} contains a NUL character"));
                None
            } else {
                Some(Some(s.to_owned()))
            }
        }),
        None => Some(None),
    };
    let request_headers = match obj.opt("request_headers") {
        Some((_, p)) if kind == AccessLogKind::Tcp => {
            dec.error(
                &p,
                "not for a tcp_proxy (a TCP session has no request headers)",
            );
            None
        }
        Some((_, p)) if kind == AccessLogKind::Bolt => {
            dec.error(
                &p,
                "not for a bolt listener (its JSON lines carry bolt_service and bolt_method)",
            );
            None
        }
        Some((v, p)) => decode_log_headers(dec, &p, v, json),
        None => Some(Vec::new()),
    };
    obj.finish(dec);
    let format = if json? {
        AccessLogFormat::Json
    } else {
        AccessLogFormat::Text(template?)
    };
    Some(AccessLogConfig {
        format,
        path: file?,
        request_headers: request_headers?,
    })
}

/// `request_headers: [x-tenant, ...]`: header names (tokens), JSON lines only.
fn decode_log_headers(
    dec: &mut Decoder,
    path: &str,
    v: &Value,
    json: Option<bool>,
) -> Option<Vec<String>> {
    if json == Some(false) {
        dec.error(
            path,
            "only allowed with `format: json` (a text template names a header as `%REQ(NAME)%`)",
        );
        return None;
    }
    let Value::Array(items) = v else {
        dec.error(path, format!("expected a list of header names, found {v}"));
        return None;
    };
    let mut names = Vec::with_capacity(items.len());
    let mut ok = true;
    for (i, item) in items.iter().enumerate() {
        let p = format!("{path}[{i}]");
        match dec.string(&p, item) {
            Some(n) if is_header_name(n) => names.push(n.to_owned()),
            Some(n) => {
                dec.error(&p, format!("{n:?} is not a header name"));
                ok = false;
            }
            None => ok = false,
        }
    }
    ok.then_some(names)
}

/// An HTTP field name (RFC 9110 token), or a request pseudo-header (`:authority`, `:path`,
/// `:method`).
fn is_header_name(n: &str) -> bool {
    let tchar = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    matches!(
        n.to_ascii_lowercase().as_str(),
        ":authority" | ":path" | ":method"
    ) || (!n.is_empty() && n.bytes().all(tchar))
}

/// Duplicate virtual host names, and duplicate domains (case-insensitively) across the
/// listener, on the list as written.
fn check_virtual_hosts_unique(dec: &mut Decoder, path: &str, v: &Value) {
    let Value::Array(items) = v else {
        return;
    };
    let mut names: Vec<(&str, String)> = Vec::new();
    let mut domains: Vec<(String, String)> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let vh_path = index(path, i);
        if let Some(name) = item.get("name").and_then(Value::as_str) {
            match names.iter().find(|(n, _)| *n == name) {
                Some((_, first)) => dec.error(
                    &child(&vh_path, "name"),
                    format!("duplicate name {name:?} (already used by {first})"),
                ),
                None => names.push((name, vh_path.clone())),
            }
        }
        let Some(Value::Array(list)) = item.get("domains") else {
            continue;
        };
        for (j, domain) in list.iter().enumerate() {
            let Some(domain) = domain.as_str() else {
                continue;
            };
            let lower = domain.to_ascii_lowercase();
            let d_path = index(&child(&vh_path, "domains"), j);
            match domains.iter().find(|(d, _)| *d == lower) {
                Some((_, first)) => dec.error(
                    &d_path,
                    format!("duplicate domain {domain:?} (already used by {first})"),
                ),
                None => domains.push((lower, d_path)),
            }
        }
    }
}

fn decode_virtual_host(
    dec: &mut Decoder,
    path: &str,
    v: &Value,
    cluster_names: &[&str],
) -> Option<VirtualHost> {
    let mut obj = dec.object(path, v)?;
    let name = obj.req(dec, "name").and_then(|(v, p)| dec.name(&p, v));
    let domains = obj.req(dec, "domains").and_then(|(v, p)| {
        let domains = dec.list(&p, v, decode_domain)?;
        if domains.is_empty() {
            dec.error(&p, "at least one domain is required (`*` matches any host)");
            return None;
        }
        Some(domains)
    });
    let routes = obj.req(dec, "routes").and_then(|(v, p)| {
        dec.list(&p, v, |dec, path, v| {
            decode_route(dec, path, v, cluster_names)
        })
    });
    let include_request_attempt_count = match obj.opt("include_request_attempt_count") {
        Some((v, p)) => boolean(dec, &p, v),
        None => Some(false),
    };
    obj.finish(dec);
    Some(VirtualHost {
        name: name?,
        domains: domains?,
        routes: routes?,
        include_request_attempt_count: include_request_attempt_count?,
    })
}

fn decode_domain(dec: &mut Decoder, path: &str, v: &Value) -> Option<String> {
    let s = dec.string(path, v)?;
    match check_domain(s) {
        Ok(()) => Some(s.to_owned()),
        Err(why) => {
            dec.error(path, why);
            None
        }
    }
}

/// `*`, a host name with at most one `*` at its start or end, or an IPv6 address in brackets;
/// never a port.
fn check_domain(s: &str) -> Result<(), String> {
    const FORMS: &str = "*.example.com, example.*, *";
    if s.is_empty() {
        return Err("a domain cannot be empty".to_owned());
    }
    if s == "*" {
        return Ok(());
    }
    if let Some(inner) = s.strip_prefix('[') {
        let (addr, rest) = inner.split_once(']').unwrap_or((inner, ""));
        if addr.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(format!(
                "{s:?} is not a valid domain ({addr:?} is not an IPv6 address)"
            ));
        }
        return if rest.starts_with(':') {
            Err(port_error(s, &s[..s.len() - rest.len()]))
        } else if !rest.is_empty() {
            Err(format!("{s:?} is not a valid domain (text after ']')"))
        } else if !inner.ends_with(']') {
            Err(format!("{s:?} is not a valid domain (no closing ']')"))
        } else {
            Ok(())
        };
    }
    let stars = s.matches('*').count();
    if stars > 1 || (stars == 1 && !s.starts_with('*') && !s.ends_with('*')) {
        return Err(format!(
            "{s:?} is not a valid domain (one `*` at most, and only at its start or end: {FORMS})"
        ));
    }
    if let Some((host, _)) = s.split_once(':') {
        return Err(port_error(s, host));
    }
    let ok = s
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-._*".contains(&b));
    if !ok {
        return Err(format!(
            "{s:?} is not a valid domain (letters, digits, '-', '.', '_' and one `*` at its \
             start or end, or an IPv6 address in brackets)"
        ));
    }
    Ok(())
}

fn port_error(s: &str, without: &str) -> String {
    format!("{s:?} has a port (the Host header's port is ignored when matching: write {without:?})")
}

fn decode_route(dec: &mut Decoder, path: &str, v: &Value, cluster_names: &[&str]) -> Option<Route> {
    let mut obj = dec.object(path, v)?;
    let found = obj.req(dec, "match");
    // The path rule as written, so that `prefix_rewrite` is checked even when the match has
    // other problems.
    let path_rule = found.as_ref().and_then(|(v, _)| {
        let mut present = PATH_RULES.iter().filter(|k| v.get(**k).is_some());
        match (present.next(), present.next()) {
            (Some(k), None) => Some(*k),
            _ => None,
        }
    });
    let matcher = found.and_then(|(v, p)| decode_match(dec, &p, v));
    let mut actions = Vec::new();
    if let Some((v, p)) = obj.opt("route") {
        actions
            .push(decode_forward(dec, &p, v, cluster_names, path_rule).map(RouteAction::Forward));
    }
    if let Some((v, p)) = obj.opt("direct_response") {
        actions.push(decode_direct_response(dec, &p, v));
    }
    let action = exactly_one(dec, path, actions, "action", "`route`, `direct_response`");
    obj.finish(dec);
    Some(Route {
        matcher: matcher?,
        action: action?,
    })
}

fn decode_match(dec: &mut Decoder, path: &str, v: &Value) -> Option<RouteMatch> {
    let mut obj = dec.object(path, v)?;
    let mut rules = Vec::new();
    if let Some((v, p)) = obj.opt("path") {
        rules.push(request_path(dec, &p, v).map(PathMatch::Exact));
    }
    if let Some((v, p)) = obj.opt("prefix") {
        rules.push(request_path(dec, &p, v).map(PathMatch::Prefix));
    }
    if let Some((v, p)) = obj.opt("safe_regex") {
        rules.push(regex(dec, &p, v).map(PathMatch::Regex));
    }
    let headers = match obj.opt("headers") {
        Some((v, p)) => dec.list(&p, v, decode_header_matcher),
        None => Some(Vec::new()),
    };
    let rule = exactly_one(
        dec,
        path,
        rules,
        "path rule",
        "`path`, `prefix`, `safe_regex`",
    );
    obj.finish(dec);
    Some(RouteMatch {
        path: rule?,
        headers: headers?,
    })
}

/// A request path (or the start of one): starts with `/`, no query, no fragment, nothing a
/// request line cannot carry.
fn request_path(dec: &mut Decoder, path: &str, v: &Value) -> Option<String> {
    let s = dec.string(path, v)?;
    let problem = if !s.starts_with('/') {
        Some("does not start with '/' (request paths do)".to_owned())
    } else if let Some(c) = s.chars().find(|c| *c == '?' || *c == '#') {
        Some(format!(
            "contains {c:?} (the query string and fragment are not part of the path)"
        ))
    } else if s.bytes().any(|b| b <= b' ' || b == 0x7f) {
        Some("contains a space or a control character (never part of a request path)".to_owned())
    } else {
        None
    };
    match problem {
        Some(why) => {
            dec.error(path, format!("{s:?} {why}"));
            None
        }
        None => Some(s.to_owned()),
    }
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

fn decode_header_matcher(dec: &mut Decoder, path: &str, v: &Value) -> Option<HeaderMatcher> {
    let mut obj = dec.object(path, v)?;
    let name = obj
        .req(dec, "name")
        .and_then(|(v, p)| header_name(dec, &p, v, Use::Match))
        .map(|n| n.to_ascii_lowercase());
    let mut rules = Vec::new();
    if let Some((v, p)) = obj.opt("exact") {
        rules.push(header_value(dec, &p, v).map(HeaderRule::Exact));
    }
    if let Some((v, p)) = obj.opt("prefix") {
        rules.push(header_value(dec, &p, v).map(HeaderRule::Prefix));
    }
    if let Some((v, p)) = obj.opt("present") {
        rules.push(boolean(dec, &p, v).map(HeaderRule::Present));
    }
    if let Some((v, p)) = obj.opt("safe_regex") {
        rules.push(regex(dec, &p, v).map(HeaderRule::Regex));
    }
    let rule = exactly_one(
        dec,
        path,
        rules,
        "rule",
        "`exact`, `prefix`, `present`, `safe_regex`",
    );
    obj.finish(dec);
    Some(HeaderMatcher {
        name: name?,
        rule: rule?,
    })
}

/// What a header name is for: matching a request, or adding/removing a header.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Use {
    Match,
    Edit,
}

/// An RFC 9110 `tchar`.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// A header name (a token), as written.
fn header_name(dec: &mut Decoder, path: &str, v: &Value, usage: Use) -> Option<String> {
    let s = dec.string(path, v)?;
    let lower = s.to_ascii_lowercase();
    let problem = if s.starts_with(':') {
        Some(match usage {
            Use::Match => {
                "is a pseudo-header (a route matches the path with `path`, `prefix` \
                           or `safe_regex`, and the host with the virtual host's `domains`)"
            }
            Use::Edit => "is a pseudo-header (the proxy writes those)",
        })
    } else if s.is_empty() || !s.bytes().all(is_tchar) {
        Some("is not a valid header name (letters, digits and !#$%&'*+-.^_`|~)")
    } else if usage == Use::Edit && MANAGED_HEADERS.contains(&lower.as_str()) {
        Some(
            "cannot be added or removed (the proxy manages host, connection, \
             transfer-encoding and content-length)",
        )
    } else {
        None
    };
    match problem {
        Some(why) => {
            dec.error(path, format!("{s:?} {why}"));
            None
        }
        None => Some(s.to_owned()),
    }
}

/// A header value: text without control characters ([`header_value_problem`]).
fn header_value(dec: &mut Decoder, path: &str, v: &Value) -> Option<String> {
    let s = text(dec, path, v)?;
    if let Some(why) = header_value_problem(s) {
        dec.error(path, format!("{s:?} {why}"));
        return None;
    }
    Some(s.to_owned())
}

fn decode_forward(
    dec: &mut Decoder,
    path: &str,
    v: &Value,
    cluster_names: &[&str],
    path_rule: Option<&str>,
) -> Option<ForwardAction> {
    let mut obj = dec.object(path, v)?;
    let mut targets = Vec::new();
    if let Some((v, p)) = obj.opt("cluster") {
        targets.push(
            cluster_ref(dec, &p, v, cluster_names).map(|(cluster, cluster_index)| {
                ClusterTarget::Cluster(WeightedCluster {
                    cluster,
                    cluster_index,
                    weight: 1,
                })
            }),
        );
    }
    if let Some((v, p)) = obj.opt("weighted_clusters") {
        targets
            .push(decode_weighted_clusters(dec, &p, v, cluster_names).map(ClusterTarget::Weighted));
    }
    let target = exactly_one(
        dec,
        path,
        targets,
        "target",
        "`cluster`, `weighted_clusters`",
    );
    let timeout = opt_duration(dec, &mut obj, "timeout", DEFAULT_ROUTE_TIMEOUT).map(nonzero);
    let prefix_rewrite = match obj.opt("prefix_rewrite") {
        Some((v, p)) => match path_rule {
            Some(rule) if rule != "prefix" => {
                dec.error(
                    &p,
                    format!("only allowed with a `prefix` match (this route matches by `{rule}`)"),
                );
                None
            }
            _ => request_path(dec, &p, v).map(Some),
        },
        None => Some(None),
    };
    let retry_policy = match obj.opt("retry_policy") {
        Some((v, p)) => decode_retry_policy(dec, &p, v).map(Some),
        None => Some(None),
    };
    let request_headers_to_add = headers_to_add(dec, &mut obj, "request_headers_to_add");
    let request_headers_to_remove = headers_to_remove(dec, &mut obj, "request_headers_to_remove");
    let response_headers_to_add = headers_to_add(dec, &mut obj, "response_headers_to_add");
    let response_headers_to_remove = headers_to_remove(dec, &mut obj, "response_headers_to_remove");
    let upgrade_configs = match obj.opt("upgrade_configs") {
        Some((v, p)) => decode_route_upgrades(dec, &p, v),
        None => Some(Vec::new()),
    };
    obj.finish(dec);
    Some(ForwardAction {
        target: target?,
        timeout: timeout?,
        prefix_rewrite: prefix_rewrite?,
        retry_policy: retry_policy?,
        request_headers_to_add: request_headers_to_add?,
        request_headers_to_remove: request_headers_to_remove?,
        response_headers_to_add: response_headers_to_add?,
        response_headers_to_remove: response_headers_to_remove?,
        upgrade_configs: upgrade_configs?,
    })
}

/// A route's `upgrade_configs`: `{ upgrade_type, enabled }` (a token, stored lowercase;
/// `enabled` true when left out), each type once.
fn decode_route_upgrades(dec: &mut Decoder, path: &str, v: &Value) -> Option<Vec<RouteUpgrade>> {
    let list = dec.list(path, v, |dec, p, v| {
        let mut obj = dec.object(p, v)?;
        let upgrade_type = obj.req(dec, "upgrade_type").and_then(|(v, p)| {
            let s = dec.string(&p, v)?;
            if s.is_empty() || !s.bytes().all(is_token_byte) {
                dec.error(
                    &p,
                    format!("{s:?} is not an upgrade token (e.g. websocket)"),
                );
                return None;
            }
            Some(s.to_ascii_lowercase())
        });
        let enabled = match obj.opt("enabled") {
            Some((v, p)) => boolean(dec, &p, v),
            None => Some(true),
        };
        obj.finish(dec);
        Some(RouteUpgrade {
            upgrade_type: upgrade_type?,
            enabled: enabled?,
        })
    })?;
    for (i, u) in list.iter().enumerate() {
        if list[..i].iter().any(|o| o.upgrade_type == u.upgrade_type) {
            dec.error(
                &child(&index(path, i), "upgrade_type"),
                format!("{:?} is listed twice", u.upgrade_type),
            );
            return None;
        }
    }
    Some(list)
}

fn decode_weighted_clusters(
    dec: &mut Decoder,
    path: &str,
    v: &Value,
    cluster_names: &[&str],
) -> Option<Vec<WeightedCluster>> {
    let list = dec.list(path, v, |dec, path, v| {
        let mut obj = dec.object(path, v)?;
        let cluster = obj
            .req(dec, "cluster")
            .and_then(|(v, p)| cluster_ref(dec, &p, v, cluster_names));
        let weight = obj
            .req(dec, "weight")
            .and_then(|(v, p)| dec.u64_in(&p, v, 1..=1000))
            .map(|w| w as u32);
        obj.finish(dec);
        let (cluster, cluster_index) = cluster?;
        Some(WeightedCluster {
            cluster,
            cluster_index,
            weight: weight?,
        })
    })?;
    if list.is_empty() {
        dec.error(path, "at least one cluster is required");
        return None;
    }
    let mut ok = true;
    for (i, c) in list.iter().enumerate() {
        if let Some(first) = list[..i].iter().position(|d| d.cluster == c.cluster) {
            dec.error(
                &child(&index(path, i), "cluster"),
                format!(
                    "duplicate cluster {:?} (already used by {})",
                    c.cluster,
                    index(path, first)
                ),
            );
            ok = false;
        }
    }
    ok.then_some(list)
}

fn decode_retry_policy(dec: &mut Decoder, path: &str, v: &Value) -> Option<RetryPolicy> {
    let mut obj = dec.object(path, v)?;
    let retry_on = obj
        .req(dec, "retry_on")
        .and_then(|(v, p)| decode_retry_on(dec, &p, v));
    let codes = match obj.opt("retriable_status_codes") {
        Some((v, p)) => decode_status_codes(dec, &p, v).map(Some),
        None => Some(None),
    };
    let num_retries = opt_u32(dec, &mut obj, "num_retries", 0..=10, DEFAULT_NUM_RETRIES);
    let per_try_timeout = opt_positive_duration(dec, &mut obj, "per_try_timeout");
    obj.finish(dec);
    let (mut retry_on, codes) = (retry_on?, codes?);
    // Each needs the other: codes without the condition would never be retried, and the
    // condition without codes retries nothing (Envoy accepts both silently).
    match (retry_on.retriable_status_codes, codes) {
        (true, Some(codes)) => retry_on.status_codes = codes,
        (true, None) => {
            dec.error(
                &format!("{path}.retry_on"),
                "retriable-status-codes needs the codes: add retriable_status_codes: [503, …]",
            );
            return None;
        }
        (false, Some(_)) => {
            dec.error(
                &format!("{path}.retriable_status_codes"),
                "the codes are retried only with retriable-status-codes in retry_on",
            );
            return None;
        }
        (false, None) => {}
    }
    Some(RetryPolicy {
        retry_on,
        num_retries: num_retries?,
        per_try_timeout: per_try_timeout?,
    })
}

/// `retriable_status_codes`: a non-empty list of distinct codes, 100–599.
fn decode_status_codes(dec: &mut Decoder, path: &str, v: &Value) -> Option<StatusCodes> {
    let codes = dec.list(path, v, |dec, p, v| {
        let range = u64::from(StatusCodes::MIN)..=u64::from(StatusCodes::MAX);
        dec.u64_in(p, v, range).and_then(|c| u16::try_from(c).ok())
    })?;
    if codes.is_empty() {
        dec.error(path, "at least one status code is required");
        return None;
    }
    let mut set = StatusCodes::default();
    for (i, c) in codes.into_iter().enumerate() {
        if set.contains(c) {
            dec.error(&format!("{path}[{i}]"), format!("{c} is listed twice"));
            return None;
        }
        set.insert(c);
    }
    Some(set)
}

fn decode_retry_on(dec: &mut Decoder, path: &str, v: &Value) -> Option<RetryOn> {
    if let Value::String(s) = v {
        // Envoy writes `retry_on: 5xx,reset`; here it is a list.
        let items: Vec<&str> = s.split(',').map(str::trim).collect();
        dec.error(
            path,
            format!(
                "expected a list, found the string {s:?} (write it as a list: [{}])",
                items.join(", ")
            ),
        );
        return None;
    }
    let setters = dec.list(path, v, |dec, p, v| dec.one_of(p, v, &RETRY_ON))?;
    if setters.is_empty() {
        dec.error(
            path,
            format!(
                "at least one retry condition is required (any of: {})",
                RetryOn::NAMES.join(", ")
            ),
        );
        return None;
    }
    let mut on = RetryOn::default();
    for set in setters {
        set(&mut on);
    }
    Some(on)
}

fn headers_to_add(
    dec: &mut Decoder,
    obj: &mut Obj<'_>,
    key: &'static str,
) -> Option<Vec<HeaderValue>> {
    let Some((v, p)) = obj.opt(key) else {
        return Some(Vec::new());
    };
    let list = dec.list(&p, v, |dec, path, v| {
        let mut obj = dec.object(path, v)?;
        let name = obj
            .req(dec, "name")
            .and_then(|(v, p)| header_name(dec, &p, v, Use::Edit));
        let value = obj.req(dec, "value").and_then(|(v, p)| {
            let value = text(dec, &p, v)?;
            if let Some(why) = header_value_problem(value) {
                // Named by the header as well as by the path: the entry's name may be wrong too.
                let header = name.as_deref().unwrap_or("?");
                dec.error(&p, format!("value {value:?} of header {header:?} {why}"));
                return None;
            }
            let value = value.to_owned();
            match crate::config::header_format::HeaderFormat::parse(&value) {
                Ok(format) => Some((value, format)),
                Err(e) => {
                    dec.error(&p, format!("{value:?}: {e}"));
                    None
                }
            }
        });
        let append_action = match obj.opt("append_action") {
            Some((v, p)) => append_action(dec, &p, v),
            None => Some(AppendAction::default()),
        };
        obj.finish(dec);
        let (value, format) = value?;
        Some(HeaderValue {
            name: name?,
            value,
            format,
            append_action: append_action?,
        })
    })?;
    // An entry that does more than append is alone with its name: with another one, the
    // list's order would decide which fields survive (Envoy decides the conditional actions on
    // the message as it was before the list and applies overwrites before appends), which
    // nobody reading the file should have to work out.
    let mut ok = true;
    for (i, h) in list.iter().enumerate() {
        let Some(first) = list[..i]
            .iter()
            .position(|g| g.name.eq_ignore_ascii_case(&h.name))
        else {
            continue;
        };
        if !h.append_action.is_append() || !list[first].append_action.is_append() {
            dec.error(
                &child(&index(&p, i), "name"),
                format!(
                    "duplicate header {:?} (already added by {}; an entry that does not append \
                     (append_action: overwrite_if_exists_or_add, the default, add_if_absent or \
                     overwrite_if_exists) must be the only one of its name — give every entry \
                     of the name append_action: append_if_exists_or_add to add several fields)",
                    h.name,
                    index(&p, first)
                ),
            );
            ok = false;
        }
    }
    ok.then_some(list)
}

/// `append_action`: one of Envoy's four `HeaderValueOption.HeaderAppendAction`s, lowercase.
fn append_action(dec: &mut Decoder, path: &str, v: &Value) -> Option<AppendAction> {
    dec.one_of(path, v, &AppendAction::CHOICES)
}

fn headers_to_remove(
    dec: &mut Decoder,
    obj: &mut Obj<'_>,
    key: &'static str,
) -> Option<Vec<String>> {
    match obj.opt(key) {
        Some((v, p)) => dec.list(&p, v, |dec, path, v| {
            header_name(dec, path, v, Use::Edit).map(|n| n.to_ascii_lowercase())
        }),
        None => Some(Vec::new()),
    }
}

fn decode_direct_response(dec: &mut Decoder, path: &str, v: &Value) -> Option<RouteAction> {
    let mut obj = dec.object(path, v)?;
    let status = obj
        .req(dec, "status")
        .and_then(|(v, p)| dec.u64_in(&p, v, 200..=599))
        .map(|s| s as u16);
    let body = match obj.opt("body") {
        Some((v, p)) => text(dec, &p, v).map(|b| (b.to_owned(), p)),
        None => Some((String::new(), String::new())),
    };
    obj.finish(dec);
    let (status, (body, body_path)) = (status?, body?);
    if matches!(status, 204 | 304) && !body.is_empty() {
        dec.error(
            &body_path,
            format!("a {status} response has no body (leave `body` out)"),
        );
        return None;
    }
    Some(RouteAction::DirectResponse { status, body })
}

#[cfg(test)]
mod tests;
