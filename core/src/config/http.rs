//! The HTTP connection manager's configuration: limits, virtual hosts, routes, retry policies,
//! access logs. Decoded and validated in `config::yaml` (its `http` decoder); used by [`crate::router`] and the
//! runtime's HTTP/1.1 driver.

use std::time::Duration;

use serde::Serialize;

use super::{ser_duration, ser_opt_duration};

/// Default for [`HttpConfig::max_request_headers_kb`] (Envoy's default).
pub const DEFAULT_MAX_REQUEST_HEADERS_KB: u32 = 60;
/// Default for [`HttpConfig::max_headers_count`] (Envoy's default).
pub const DEFAULT_MAX_HEADERS_COUNT: u32 = 100;
/// Upper bound accepted for [`HttpConfig::max_headers_count`].
pub const MAX_HEADERS_COUNT_LIMIT: u32 = 256;
/// Default for [`HttpConfig::request_headers_timeout`].
pub const DEFAULT_REQUEST_HEADERS_TIMEOUT: Duration = Duration::from_secs(10);
/// Default for [`HttpConfig::stream_idle_timeout`] (Envoy's default).
pub const DEFAULT_STREAM_IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// Default for [`HttpConfig::idle_timeout`] (Envoy's default).
pub const DEFAULT_HTTP_IDLE_TIMEOUT: Duration = Duration::from_secs(3600);
/// Default for [`ForwardAction::timeout`] (Envoy's default).
pub const DEFAULT_ROUTE_TIMEOUT: Duration = Duration::from_secs(15);
/// Default for [`RetryPolicy::num_retries`] (Envoy's default).
pub const DEFAULT_NUM_RETRIES: u32 = 1;

/// Default for [`Http2Settings::max_concurrent_streams`] (Envoy's and the RFC's recommended
/// minimum).
pub const DEFAULT_H2_MAX_CONCURRENT_STREAMS: u32 = 100;
/// Default for [`Http2Settings::max_header_list_size`]: 64 KiB, about the HTTP/1.1 head limit
/// (`max_request_headers_kb`, 60) — h2's own default, 16 MiB, lets one request hold that much.
pub const DEFAULT_H2_MAX_HEADER_LIST_SIZE: u32 = 64 * 1024;
/// Default for [`Http2Settings::initial_stream_window_size`]: 256 KiB, the most a stream's
/// client may send before the proxy has forwarded some of it.
pub const DEFAULT_H2_INITIAL_STREAM_WINDOW_SIZE: u32 = 256 * 1024;
/// Default for [`Http2Settings::initial_connection_window_size`]: 4 × the stream window, so
/// that one stalled stream cannot stop the others.
pub const DEFAULT_H2_INITIAL_CONNECTION_WINDOW_SIZE: u32 = 1024 * 1024;
/// The largest flow-control window HTTP/2 allows (RFC 9113 §6.9.1).
pub const H2_MAX_WINDOW_SIZE: u32 = (1 << 31) - 1;
/// The smallest: the protocol's initial 65 535 bytes.
pub const H2_MIN_WINDOW_SIZE: u32 = 65_535;

/// Which protocols an HTTP listener speaks to its clients.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum HttpCodec {
    /// HTTP/2 (h2c, prior knowledge) when a connection starts with the HTTP/2 client preface,
    /// HTTP/1.1 otherwise.
    #[default]
    Auto,
    /// HTTP/1.1 only: the HTTP/2 preface is a malformed request (400).
    Http1,
    /// HTTP/2 only: a connection that does not start with the preface is closed.
    Http2,
}

/// `listeners[].http.forwarded_proto`: whose `x-forwarded-proto` the upstream gets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ForwardedProto {
    /// The scheme of the connection this listener accepted — `https` over TLS it terminated,
    /// `http` in cleartext — replacing the client's (Envoy with `use_remote_address: true`).
    /// The default: a sidecar's application then never takes a cleartext client's word that
    /// it came over TLS.
    #[default]
    Overwrite,
    /// The client's own when it sent one, else the connection's scheme (Envoy's non-edge
    /// behaviour): for a listener reached only through a trusted proxy that terminated TLS.
    Preserve,
}

impl ForwardedProto {
    /// The value the proxy sets for a request (`None`: the client's is forwarded as it is).
    #[must_use]
    pub fn value(self, over_tls: bool, client_sent: bool) -> Option<&'static [u8]> {
        let scheme: &'static [u8] = if over_tls { b"https" } else { b"http" };
        match self {
            ForwardedProto::Overwrite => Some(scheme),
            ForwardedProto::Preserve => (!client_sent).then_some(scheme),
        }
    }
}

impl HttpConfig {
    /// Whether an upgrade whose `Upgrade` fields are `values` (every one the message carries)
    /// may be tunnelled on a route without `upgrade_configs`; see [`upgrade_allowed`].
    #[must_use]
    pub fn upgrade_allowed<'v>(&self, values: impl IntoIterator<Item = &'v [u8]>) -> bool {
        upgrade_allowed(self.upgrade_types.as_deref(), &[], values)
    }
}

/// Whether an upgrade whose `Upgrade` fields are `values` may be tunnelled under the
/// listener's `upgrade_types` (`None`: every type) and the route's `upgrade_configs`
/// (`route`). Every protocol the fields name — each field's comma-separated elements, trimmed,
/// compared case-insensitively — must be allowed, and with a listener list at least one must
/// be named: a request cannot slip a second protocol past the check in another element or
/// another `Upgrade` field (the upstream would be free to pick it). Envoy joins repeated fields
/// into one value, which then matches no type: refused too.
///
/// A type the route names is decided by the route alone, as in Envoy: `enabled: false`
/// refuses it even when the listener lists it, `enabled: true` allows it even when the
/// listener does not; a type the route does not name is the listener's call.
#[must_use]
pub fn upgrade_allowed<'v>(
    types: Option<&[String]>,
    route: &[RouteUpgrade],
    values: impl IntoIterator<Item = &'v [u8]>,
) -> bool {
    if types.is_none() && route.is_empty() {
        return true;
    }
    let mut named = false;
    for value in values {
        for token in value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
            if token.is_empty() {
                continue;
            }
            let allowed = match route
                .iter()
                .find(|r| r.upgrade_type.as_bytes().eq_ignore_ascii_case(token))
            {
                Some(r) => r.enabled,
                None => types.is_none_or(|types| {
                    types
                        .iter()
                        .any(|t| t.as_bytes().eq_ignore_ascii_case(token))
                }),
            };
            if !allowed {
                return false;
            }
            named = true;
        }
    }
    named || types.is_none()
}

/// `routes[].route.upgrade_configs[]`: a route's own word on one upgrade type, over the
/// listener's `upgrade_types` (Envoy's `RouteAction.upgrade_configs`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RouteUpgrade {
    /// The `Upgrade` token (lowercase), e.g. `websocket`.
    pub upgrade_type: String,
    /// `true`: tunnelled on this route even when the listener does not list it; `false`:
    /// refused (403) on this route even when it does.
    pub enabled: bool,
}

/// `listeners[].http.server_name` and `server_header_transformation`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ServerHeader {
    /// The value (a valid field value, not empty).
    #[serde(rename = "server_name")]
    pub name: String,
    /// What to do with the upstream's own.
    #[serde(rename = "server_header_transformation")]
    pub transformation: ServerHeaderTransformation,
}

impl ServerHeader {
    /// The `server` field of the proxy's own answers (local replies, direct responses): Envoy
    /// sets `server_name` on every response it sends, its own included — except with
    /// `pass_through`, which only passes an upstream's (a local reply has none).
    #[must_use]
    pub fn local_field(server: Option<&ServerHeader>) -> Option<(&'static str, &[u8])> {
        server
            .filter(|s| s.transformation != ServerHeaderTransformation::PassThrough)
            .map(|s| ("server", s.name.as_bytes()))
    }
}

/// What becomes of an upstream response's `server` header when the listener has a
/// `server_name` (Envoy's `server_header_transformation`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ServerHeaderTransformation {
    /// Replaced by `server_name` (Envoy's default).
    #[default]
    Overwrite,
    /// `server_name` only when the response has none.
    AppendIfAbsent,
    /// The upstream's passes; none is added.
    PassThrough,
}

impl ServerHeaderTransformation {
    /// The names the config accepts.
    pub const CHOICES: [(&'static str, ServerHeaderTransformation); 3] = [
        ("overwrite", ServerHeaderTransformation::Overwrite),
        (
            "append_if_absent",
            ServerHeaderTransformation::AppendIfAbsent,
        ),
        ("pass_through", ServerHeaderTransformation::PassThrough),
    ];
}

/// `listeners[].http.forward_client_cert`: what becomes of the `x-forwarded-client-cert`
/// (XFCC) header (Envoy's `forward_client_cert_details`). "mTLS" is a connection whose client
/// presented a certificate to a listener (or chain) that terminates TLS; on any other
/// connection every mode but `always_forward_only` removes the header.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ForwardClientCert {
    /// The header is removed (Envoy's default).
    #[default]
    Sanitize,
    /// Over mTLS the client's header is forwarded as it is.
    ForwardOnly,
    /// Over mTLS this hop's element is appended to the client's header (`,` between elements).
    AppendForward,
    /// Over mTLS the header is replaced by this hop's element.
    SanitizeSet,
    /// The client's header is forwarded as it is, mTLS or not.
    AlwaysForwardOnly,
}

impl ForwardClientCert {
    /// The names the config accepts.
    pub const CHOICES: [(&'static str, ForwardClientCert); 5] = [
        ("sanitize", ForwardClientCert::Sanitize),
        ("forward_only", ForwardClientCert::ForwardOnly),
        ("append_forward", ForwardClientCert::AppendForward),
        ("sanitize_set", ForwardClientCert::SanitizeSet),
        ("always_forward_only", ForwardClientCert::AlwaysForwardOnly),
    ];

    /// Whether this hop writes an element of its own (over mTLS).
    #[must_use]
    pub fn sets_element(self) -> bool {
        matches!(
            self,
            ForwardClientCert::AppendForward | ForwardClientCert::SanitizeSet
        )
    }
}

/// `listeners[].http.set_current_client_cert_details`: what this hop's XFCC element says of
/// the client certificate besides `By` (this listener's own URI SANs) and `Hash` (SHA-256 of
/// the client certificate, hex), which are always there (Envoy's fields; all off by default).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ClientCertDetails {
    /// `Cert="…"`: the client certificate, PEM, URL-encoded.
    pub cert: bool,
    /// `Chain="…"`: the chain the client sent (its certificate first), PEM, URL-encoded.
    pub chain: bool,
    /// `Subject="…"`: the subject's distinguished name (RFC 2253).
    pub subject: bool,
    /// `URI=…`: each URI SAN (`URI=` when it has none).
    pub uri: bool,
    /// `DNS=…`: each DNS SAN.
    pub dns: bool,
}

/// `listeners[].http.http2`: limits of downstream HTTP/2 connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Http2Settings {
    /// Streams a client may have open at once (`SETTINGS_MAX_CONCURRENT_STREAMS`).
    pub max_concurrent_streams: u32,
    /// Largest request header list, as HTTP/2 counts it (names, values, 32 bytes per field;
    /// `SETTINGS_MAX_HEADER_LIST_SIZE`); `h2` refuses a request over it before the proxy sees it.
    pub max_header_list_size: u32,
    /// Each stream's receive window (`SETTINGS_INITIAL_WINDOW_SIZE`): request body bytes a
    /// client may send ahead of what the proxy forwarded.
    pub initial_stream_window_size: u32,
    /// The connection's receive window, across its streams; at least the stream window.
    pub initial_connection_window_size: u32,
    /// PING keepalive (`connection_keepalive`, Envoy's name): a PING every `interval`, and a
    /// GOAWAY and close when its ACK does not come within `timeout` — a client gone without a
    /// FIN or RST (a NAT that dropped its state) is noticed in seconds, not TCP's minutes.
    /// `None` (the default, as in Envoy): no PINGs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connection_keepalive: Option<super::Http2Keepalive>,
}

impl Http2Settings {
    /// The defaults.
    pub const DEFAULT: Http2Settings = Http2Settings {
        max_concurrent_streams: DEFAULT_H2_MAX_CONCURRENT_STREAMS,
        max_header_list_size: DEFAULT_H2_MAX_HEADER_LIST_SIZE,
        initial_stream_window_size: DEFAULT_H2_INITIAL_STREAM_WINDOW_SIZE,
        initial_connection_window_size: DEFAULT_H2_INITIAL_CONNECTION_WINDOW_SIZE,
        connection_keepalive: None,
    };
}

impl Default for Http2Settings {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// `listeners[].http`: an HTTP/1.1 and HTTP/2 connection manager.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct HttpConfig {
    /// Largest request head (request line + headers) in KiB; over it: 431 and close.
    pub max_request_headers_kb: u32,
    /// Most request headers; over it: 431 and close.
    pub max_headers_count: u32,
    /// From the first byte of a request head to its end (a connection's first request: from
    /// the accept); over it: 408 and close (slowloris), or, when nothing was received, close.
    #[serde(serialize_with = "ser_duration")]
    pub request_headers_timeout: Duration,
    /// The longest wait for the next bytes of a request body (Envoy's `stream_idle_timeout`):
    /// a stalled upload is answered 408 and closed. The route timeout only starts once the
    /// request is complete, so this is what bounds an upload. `None` (written `0`) disables.
    #[serde(serialize_with = "ser_opt_duration")]
    pub stream_idle_timeout: Option<Duration>,
    /// Close a downstream keep-alive connection after this long with no request; `None`
    /// disables.
    #[serde(serialize_with = "ser_opt_duration")]
    pub idle_timeout: Option<Duration>,
    /// How request paths are normalized before routing (`normalize_path`, `merge_slashes`,
    /// `path_with_escaped_slashes_action`; see [`crate::path`]). The normalized path is what is
    /// routed and forwarded.
    #[serde(flatten)]
    pub path_normalization: PathNormalization,
    /// Which protocols the listener speaks to its clients.
    pub codec: HttpCodec,
    /// Limits of HTTP/2 connections (when `codec` allows HTTP/2).
    pub http2: Http2Settings,
    /// Whose `x-forwarded-proto` goes upstream.
    pub forwarded_proto: ForwardedProto,
    /// Which HTTP/1.1 upgrades (`Upgrade:` with `Connection: upgrade`) are tunnelled, by
    /// `Upgrade` value (lowercase, compared case-insensitively): `None` (the key left out),
    /// every one; otherwise only those listed — every protocol a request's `Upgrade` fields
    /// name must be (see [`upgrade_allowed`]) —, and another is answered 403 and the
    /// connection closed (Envoy's `upgrade_configs`); an upstream's 101 to another is a
    /// protocol error (502).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upgrade_types: Option<Vec<String>>,
    /// The `server` header of the responses forwarded to clients (Envoy's `server_name` and
    /// `server_header_transformation`); `None`: the upstream's passes as it is.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub server_header: Option<ServerHeader>,
    /// What becomes of `x-forwarded-client-cert`.
    pub forward_client_cert: ForwardClientCert,
    /// What this hop's XFCC element says (with `append_forward` and `sanitize_set`).
    pub set_current_client_cert_details: ClientCertDetails,
    /// Virtual hosts, in order.
    pub virtual_hosts: Vec<VirtualHost>,
    /// Access log, if any.
    pub access_log: Option<AccessLogConfig>,
}

/// A set of domains and the routes that serve them.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct VirtualHost {
    /// Unique within the listener.
    pub name: String,
    /// `example.com` (exact, case-insensitive, port ignored), `*.example.com` (suffix),
    /// `example.*` (prefix), or `*` (any). Unique across the listener's virtual hosts.
    pub domains: Vec<String>,
    /// Routes, first match wins.
    pub routes: Vec<Route>,
    /// Envoy's `include_request_attempt_count`: each try sent upstream carries
    /// `x-envoy-attempt-count: N` (1 for the first try), replacing the client's.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub include_request_attempt_count: bool,
}

/// A route: what it matches and what it does.
#[derive(Clone, Debug, PartialEq)]
pub struct Route {
    /// The match.
    pub matcher: RouteMatch,
    /// The action.
    pub action: RouteAction,
}

/// What a request must look like for a route to apply.
#[derive(Clone, Debug, PartialEq)]
pub struct RouteMatch {
    /// The path rule (the query string is not part of the path).
    pub path: PathMatch,
    /// Every header matcher must match.
    pub headers: Vec<HeaderMatcher>,
}

/// A path rule.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PathMatch {
    /// `path:` the whole path equals this.
    Exact(String),
    /// `prefix:` the path starts with this.
    Prefix(String),
    /// `safe_regex:` the whole path matches this regular expression (`regex` crate syntax,
    /// linear time, like Envoy's RE2).
    Regex(String),
}

/// A header rule (header names are compared case-insensitively; stored lowercase).
#[derive(Clone, Debug, PartialEq)]
pub struct HeaderMatcher {
    /// Lowercase header name.
    pub name: String,
    /// The rule.
    pub rule: HeaderRule,
}

/// How a header's value must look.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HeaderRule {
    /// `exact:` equals.
    Exact(String),
    /// `prefix:` starts with.
    Prefix(String),
    /// `present: true|false`: is (not) present.
    Present(bool),
    /// `safe_regex:` the whole value matches.
    Regex(String),
}

/// What a route does.
// Config data, built once and read by reference (never moved on the request path): the size
// of the forwarding variant (its retry policy's status-code set) costs nothing there.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RouteAction {
    /// `route:` forward upstream.
    Forward(ForwardAction),
    /// `direct_response:` answer from the proxy.
    DirectResponse {
        /// 200–599.
        status: u16,
        /// The body (may be empty).
        body: String,
    },
}

/// Forwarding settings of a route.
#[derive(Clone, Debug, PartialEq)]
pub struct ForwardAction {
    /// Where to send the request.
    pub target: ClusterTarget,
    /// The whole request, retries included, counted from the end of the downstream request
    /// (its body included); `None` (written `0`) disables.
    pub timeout: Option<Duration>,
    /// With a `prefix` match: replaces the matched prefix.
    pub prefix_rewrite: Option<String>,
    /// Retries, if any.
    pub retry_policy: Option<RetryPolicy>,
    /// Headers added to the request sent upstream, each replacing the fields of its name or
    /// appended after them (its [`HeaderValue::append_action`]).
    pub request_headers_to_add: Vec<HeaderValue>,
    /// Header names (lowercase) removed from the request sent upstream.
    pub request_headers_to_remove: Vec<String>,
    /// Headers added to the response sent downstream, each replacing the fields of its name or
    /// appended after them (its [`HeaderValue::append_action`]).
    pub response_headers_to_add: Vec<HeaderValue>,
    /// Header names (lowercase) removed from the response sent downstream.
    pub response_headers_to_remove: Vec<String>,
    /// This route's overrides of the listener's `upgrade_types`, each type once (see
    /// [`upgrade_allowed`]); empty: the listener's list alone.
    pub upgrade_configs: Vec<RouteUpgrade>,
}

/// A header to add. On one list, a name with an entry that does not simply append
/// (`overwrite_if_exists_or_add`, `add_if_absent`, `overwrite_if_exists`) has no other entry
/// (which one would win is what the list's order would have to say; Envoy decides the
/// conditional ones on the message as it was before the list, and applies the overwrites
/// before the appends — write the outcome instead); appending entries of one name each add a
/// field, in order.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct HeaderValue {
    /// Header name as written (case kept on the wire).
    pub name: String,
    /// Value, as written (`%VAR%` and `%%` included).
    pub value: String,
    /// The value's variables, parsed once at load; `None` when it has no `%` (it goes out as
    /// written). Not in a dump (the value is).
    #[serde(skip)]
    pub format: Option<crate::config::header_format::HeaderFormat>,
    /// What it does to the message's fields of its name; not written in a dump when it is
    /// the default (overwrite).
    #[serde(skip_serializing_if = "AppendAction::is_overwrite")]
    pub append_action: AppendAction,
}

/// Why `value` cannot be a header value the proxy writes, `None` when it can. RFC 9110 §5.5:
/// a field value is visible characters (`VCHAR`), non-ASCII text (`obs-text`), spaces and
/// tabs — no control character (below 0x20 but HTAB, and DEL). Refused at load rather than
/// mended when sent, as each codec would mend it its own way (HTTP/1.1 wrote a space in its
/// place, HTTP/2 dropped the field). Envoy's own load check is the lax one (`strict: false`:
/// NUL, CR and LF only); its strict `HTTP_HEADER_VALUE` rule is this one.
#[must_use]
pub fn header_value_problem(value: &str) -> Option<String> {
    let (at, byte) = value
        .bytes()
        .enumerate()
        .find(|&(_, b)| (b < 0x20 && b != b'\t') || b == 0x7f)?;
    Some(format!(
        "contains the control character 0x{byte:02x} at byte {at} (a header value is visible \
         characters, spaces, tabs and non-ASCII text: RFC 9110 §5.5)"
    ))
}

/// What an added header does to the message's own fields of its name (Envoy's
/// `HeaderValueOption.append_action`). "The message's fields" are those it has when the list
/// applies: its own, less those removed (by the proxy or a `*_headers_to_remove`), plus those
/// the proxy or an earlier edit added (`x-forwarded-for`, `x-request-id`, ...).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AppendAction {
    /// `overwrite_if_exists_or_add` (the file's default): the message's fields of the name
    /// are removed, the added one goes out alone.
    #[default]
    OverwriteIfExistsOrAdd,
    /// `append_if_exists_or_add` (Envoy's default): the field is added after the message's
    /// own fields of the name, which stay.
    AppendIfExistsOrAdd,
    /// `add_if_absent`: added only when the message has no field of the name; else nothing
    /// changes.
    AddIfAbsent,
    /// `overwrite_if_exists`: replaces the message's fields of the name only when it has
    /// some; else nothing is added.
    OverwriteIfExists,
}

impl AppendAction {
    /// The names the config accepts.
    pub const CHOICES: [(&'static str, AppendAction); 4] = [
        (
            "overwrite_if_exists_or_add",
            AppendAction::OverwriteIfExistsOrAdd,
        ),
        ("append_if_exists_or_add", AppendAction::AppendIfExistsOrAdd),
        ("add_if_absent", AppendAction::AddIfAbsent),
        ("overwrite_if_exists", AppendAction::OverwriteIfExists),
    ];

    /// The default, which replaces.
    #[must_use]
    pub fn is_overwrite(&self) -> bool {
        *self == AppendAction::OverwriteIfExistsOrAdd
    }

    /// Whether entries of its name may repeat on one list (only plain appends may).
    #[must_use]
    pub fn is_append(&self) -> bool {
        *self == AppendAction::AppendIfExistsOrAdd
    }
}

/// One cluster, or several with weights.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ClusterTarget {
    /// `cluster: NAME`.
    Cluster(WeightedCluster),
    /// `weighted_clusters: [ { cluster, weight } ]`; weights > 0.
    Weighted(Vec<WeightedCluster>),
}

/// A cluster reference with a weight (1 for a single cluster).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct WeightedCluster {
    /// Cluster name.
    pub cluster: String,
    /// Index in `Config::clusters`.
    #[serde(skip)]
    pub cluster_index: usize,
    /// Relative weight (≥ 1).
    pub weight: u32,
}

/// When and how often to retry (written by `config::dump`: the codes of
/// `retriable-status-codes` go back to their own `retriable_status_codes` key).
#[derive(Clone, Debug, PartialEq)]
pub struct RetryPolicy {
    /// The conditions that allow a retry.
    pub retry_on: RetryOn,
    /// Retries after the first try (0–10).
    pub num_retries: u32,
    /// Each try's own timeout; `None`: only the route timeout applies.
    pub per_try_timeout: Option<Duration>,
}

/// Retry conditions (Envoy's names).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RetryOn {
    /// `connect-failure`: the upstream connect failed or timed out.
    pub connect_failure: bool,
    /// `reset`: the upstream connection reset or closed before a complete response head.
    pub reset: bool,
    /// `5xx`: the upstream answered 5xx (includes `gateway-error`).
    pub server_error: bool,
    /// `gateway-error`: the upstream answered 502, 503 or 504.
    pub gateway_error: bool,
    /// `retriable-4xx`: the upstream answered 409.
    pub retriable_4xx: bool,
    /// `refused-stream`: an HTTP/2 upstream refused the stream (`REFUSED_STREAM`). Such a
    /// stream was not processed and is sent again whether or not this is set (outside
    /// `num_retries`); the condition is accepted, for Envoy's and Istio's policies, and kept.
    pub refused_stream: bool,
    /// `retriable-status-codes`: the upstream answered one of `status_codes`.
    pub retriable_status_codes: bool,
    /// The `retriable_status_codes` of the policy (100–599).
    pub status_codes: StatusCodes,
    /// gRPC statuses that are retried when a gRPC answer carries them in its head (a
    /// trailers-only answer), one bit per code (`1 << code`): `cancelled` (1),
    /// `deadline-exceeded` (4), `resource-exhausted` (8), `internal` (13), `unavailable` (14).
    pub grpc_codes: u32,
}

/// A set of HTTP status codes (100–599), as bits: `Copy`, and a lookup costs no scan.
#[derive(Clone, Copy, Default, PartialEq, Eq)]
pub struct StatusCodes([u64; 8]);

impl StatusCodes {
    /// The lowest code the set holds.
    pub const MIN: u16 = 100;
    /// The highest code the set holds.
    pub const MAX: u16 = 599;

    /// Adds `code`; `false` when it is outside 100–599 (not added).
    pub fn insert(&mut self, code: u16) -> bool {
        if !(Self::MIN..=Self::MAX).contains(&code) {
            return false;
        }
        let bit = usize::from(code - Self::MIN);
        self.0[bit / 64] |= 1 << (bit % 64);
        true
    }

    /// Whether `code` is in the set.
    #[must_use]
    pub fn contains(self, code: u16) -> bool {
        if !(Self::MIN..=Self::MAX).contains(&code) {
            return false;
        }
        let bit = usize::from(code - Self::MIN);
        self.0[bit / 64] & (1 << (bit % 64)) != 0
    }

    /// Whether the set is empty.
    #[must_use]
    pub fn is_empty(self) -> bool {
        self.0.iter().all(|w| *w == 0)
    }

    /// The codes, ascending.
    pub fn iter(self) -> impl Iterator<Item = u16> {
        (Self::MIN..=Self::MAX).filter(move |c| self.contains(*c))
    }
}

impl std::fmt::Debug for StatusCodes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

impl RetryOn {
    /// Whether gRPC status `code` is retried.
    #[must_use]
    pub fn grpc(self, code: u8) -> bool {
        code < 32 && self.grpc_codes & (1 << code) != 0
    }
}

impl RetryOn {
    /// The names the config accepts.
    pub const NAMES: [&'static str; 12] = [
        "connect-failure",
        "reset",
        "5xx",
        "gateway-error",
        "retriable-4xx",
        "refused-stream",
        "retriable-status-codes",
        "cancelled",
        "deadline-exceeded",
        "internal",
        "resource-exhausted",
        "unavailable",
    ];
}

/// Where and how the access log is written.
#[derive(Clone, Debug, PartialEq)]
pub struct AccessLogConfig {
    /// Line format.
    pub format: AccessLogFormat,
    /// A file path, or `None` for stdout.
    pub path: Option<String>,
    /// Request headers a JSON line carries in its `request_headers` object (`format: json`
    /// only; a text template names them as `%REQ(NAME)%`).
    pub request_headers: Vec<String>,
}

/// Access-log fields that a TCP session has too (text placeholders `%NAME%`): the ones a
/// `tcp_proxy` access log may use.
pub const TCP_LOG_FIELDS: [&str; 11] = [
    "START_TIME",
    "DOWNSTREAM_REMOTE_ADDRESS",
    "LISTENER",
    "UPSTREAM_HOST",
    "UPSTREAM_CLUSTER",
    "BYTES_RECEIVED",
    "BYTES_SENT",
    "DURATION",
    "RESPONSE_FLAGS",
    "CLOSE_REASON",
    "REQUESTED_SERVER_NAME",
];

/// Access-log fields only an HTTP request has (and `%REQ(NAME)%`): refused in a `tcp_proxy`
/// access log template rather than printed as `-`. `ORIGINAL_DST` is in neither list: every
/// kind of listener has it.
pub const HTTP_ONLY_LOG_FIELDS: [&str; 10] = [
    "METHOD",
    "PATH",
    "PROTOCOL",
    "STATUS",
    "REQUEST_ID",
    "AUTHORITY",
    "USER_AGENT",
    "RETRY_COUNT",
    "TRACE_ID",
    "GRPC_STATUS",
];

/// Access-log fields only a Bolt request has: refused in an HTTP or `tcp_proxy` template.
pub const BOLT_ONLY_LOG_FIELDS: [&str; 4] = [
    "BOLT_SERVICE",
    "BOLT_METHOD",
    "BOLT_REQUEST_ID",
    "BOLT_STATUS",
];

/// The access-log fields a `bolt` listener's template may use (one line per request/response
/// exchange).
pub const BOLT_LOG_FIELDS: [&str; 14] = [
    "START_TIME",
    "DURATION",
    "DOWNSTREAM_REMOTE_ADDRESS",
    "LISTENER",
    "UPSTREAM_HOST",
    "UPSTREAM_CLUSTER",
    "ORIGINAL_DST",
    "RESPONSE_FLAGS",
    "BYTES_RECEIVED",
    "BYTES_SENT",
    "BOLT_SERVICE",
    "BOLT_METHOD",
    "BOLT_REQUEST_ID",
    "BOLT_STATUS",
];

/// Which kind of listener an access log belongs to: it decides the fields its template may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AccessLogKind {
    /// An `http` listener: one line per request.
    Http,
    /// A `tcp_proxy` listener: one line per session ([`TCP_LOG_FIELDS`], `ORIGINAL_DST`).
    Tcp,
    /// A `bolt` listener: one line per request/response exchange ([`BOLT_LOG_FIELDS`]).
    Bolt,
}

impl AccessLogKind {
    /// What a listener of this kind is called in messages.
    pub const fn name(self) -> &'static str {
        match self {
            AccessLogKind::Http => "http",
            AccessLogKind::Tcp => "tcp_proxy",
            AccessLogKind::Bolt => "bolt",
        }
    }

    /// Why a template placeholder (as [`template_placeholders`] gives it) is refused in this
    /// kind's template (`"HTTP requests"`: it belongs to those), `None` when it is allowed.
    pub fn refuses(self, placeholder: &str) -> Option<&'static str> {
        let http = placeholder.starts_with("REQ(") || HTTP_ONLY_LOG_FIELDS.contains(&placeholder);
        let bolt = BOLT_ONLY_LOG_FIELDS.contains(&placeholder);
        match self {
            AccessLogKind::Http => bolt.then_some("Bolt requests"),
            AccessLogKind::Tcp if http => Some("HTTP requests"),
            AccessLogKind::Tcp => bolt.then_some("Bolt requests"),
            AccessLogKind::Bolt if BOLT_LOG_FIELDS.contains(&placeholder) => None,
            AccessLogKind::Bolt if http => Some("HTTP requests"),
            AccessLogKind::Bolt => Some("TCP sessions"),
        }
    }

    /// The fields this kind's template may use, for messages (`None`: HTTP, nearly all).
    pub fn fields(self) -> Option<String> {
        match self {
            AccessLogKind::Http => None,
            AccessLogKind::Tcp => Some(format!("{}, ORIGINAL_DST", TCP_LOG_FIELDS.join(", "))),
            AccessLogKind::Bolt => Some(BOLT_LOG_FIELDS.join(", ")),
        }
    }
}

/// The placeholders of an access-log template, as the runtime reads it: at each `%`, the text up
/// to the next `%` is a placeholder if it is a field name (`ORIGINAL_DST` included) or
/// `REQ(…)…`; anything else is literal text and the scan moves one character on.
pub fn template_placeholders(template: &str) -> impl Iterator<Item = &str> {
    let mut rest = template;
    std::iter::from_fn(move || {
        loop {
            let start = rest.find('%')?;
            let after = &rest[start + 1..];
            let known = after.find('%').map(|end| &after[..end]).filter(|inner| {
                *inner == "ORIGINAL_DST"
                    || inner.starts_with("REQ(")
                    || TCP_LOG_FIELDS.contains(inner)
                    || HTTP_ONLY_LOG_FIELDS.contains(inner)
                    || BOLT_ONLY_LOG_FIELDS.contains(inner)
            });
            match known {
                Some(inner) => {
                    rest = &after[inner.len() + 1..];
                    return Some(inner);
                }
                None => rest = after,
            }
        }
    })
}

/// Access log line format.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AccessLogFormat {
    /// A text line from a template with `%FIELD%` placeholders (default template when `None`).
    Text(Option<String>),
    /// One JSON object per line.
    Json,
}

/// What to do with `%2F`, `%5C` (any case) and a raw `\` in a request path (Envoy's
/// `path_with_escaped_slashes_action`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EscapedSlashesAction {
    /// Answer 400 (the default): an upstream that decodes `%2F` would see another path than the
    /// one routed.
    #[default]
    RejectRequest,
    /// Forward them as sent (they are neither decoded nor treated as separators).
    KeepUnchanged,
    /// Turn each into `/` before the other steps.
    UnescapeAndForward,
}

/// How a listener normalizes request paths before routing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct PathNormalization {
    /// Decode percent-encoded unreserved characters and remove dot segments.
    pub normalize_path: bool,
    /// Merge runs of `/` into one.
    pub merge_slashes: bool,
    /// Encoded slashes and backslashes.
    #[serde(rename = "path_with_escaped_slashes_action")]
    pub escaped_slashes: EscapedSlashesAction,
}

impl PathNormalization {
    /// Everything on, encoded slashes rejected (the default).
    pub const DEFAULT: PathNormalization = PathNormalization {
        normalize_path: true,
        merge_slashes: true,
        escaped_slashes: EscapedSlashesAction::RejectRequest,
    };

    /// Nothing changed, nothing rejected.
    pub const OFF: PathNormalization = PathNormalization {
        normalize_path: false,
        merge_slashes: false,
        escaped_slashes: EscapedSlashesAction::KeepUnchanged,
    };
}

impl Default for PathNormalization {
    fn default() -> Self {
        PathNormalization::DEFAULT
    }
}
