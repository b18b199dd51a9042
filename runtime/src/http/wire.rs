//! The forwarded exchange's heads in HTTP/1.1 framing (which an HTTP/2 upstream's adapter turns
//! into frames): the upstream request written once for all tries with the core's header edits
//! ([`Engine::write_upstream_request`]) and its per-try fields rewritten in place
//! ([`rewrite_try_fields`]); sending it ([`send_request`]); reading the response head, interim
//! answers and `101`s checked ([`read_response_head`]); the client's response head with the
//! route's and the listener's edits ([`write_downstream_head`]).

use std::cell::Cell;
use std::future::poll_fn;
use std::task::{Context, Poll};
use std::time::Duration;

use sluice_core::config::header_format::{FormatContext, RequestLine};
use sluice_core::config::http::{
    ForwardAction, HeaderValue, RouteUpgrade, ServerHeader, ServerHeaderTransformation,
    upgrade_allowed,
};
use sluice_core::http1::{
    Head, HeadEdits, HttpError, Limits, Method, ParseStatus, TargetForm, Version, parse_response,
    write_request_head,
};
use sluice_core::http2::te_wants_trailers;
use sluice_core::l7::edits::{
    HeaderEdits, Rendered, RequestFacts, format_request_id, forwarded_for, has_variables,
    request_edits_before_additions,
};
use sluice_core::l7::exchange::TryFailure;
use sluice_core::l7::grpc;
use sluice_core::l7::stream::Stream;
use sluice_core::router::rewrite_prefix;
use tokio::io::{AsyncRead, AsyncWrite};

use super::body::{Detach, RequestBody, UploadFault, fault_of, stream_request_body};
use super::respond::{ForwardedHead, Respond, stage_head};
use super::stream::Forwarding;
use super::upstream::Upstream;
use super::{ReadBuffer, Scratch, downstream_protocol, hostname, write_flushed};
use crate::engine::Engine;
use crate::h2_upstream::is_refused;
use crate::net::Network;
use crate::now;
use crate::shared_io::Shared;

/// Limits for upstream response heads.
const RESPONSE_LIMITS: Limits = Limits {
    max_head_bytes: 64 * 1024,
    max_headers: 256,
};
/// Interim (1xx) responses accepted before the final one (Go's limit); one more is a 502 and
/// the upstream connection is closed, so that an endless `100 Continue` stream cannot pin a
/// worker for the whole route timeout.
const MAX_INTERIM_RESPONSES: u32 = 5;

/// The `grpc-timeout` value written upstream before each try's time left is known: as wide as
/// the longest value (8 digits and a unit), rewritten in place.
const GRPC_TIMEOUT_SLOT: &[u8] = b"99999999H";

/// The field a virtual host with `include_request_attempt_count` adds to each try, as written
/// (the value follows in a slot of [`ATTEMPT_COUNT_SLOT`]'s width, rewritten before each try).
const ATTEMPT_COUNT_FIELD: &[u8] = b"x-envoy-attempt-count: ";
/// Two digits, right-aligned (a leading space is optional whitespace to every HTTP parser): a
/// request has at most 1 + 10 retries + the stale resend + 3 unprocessed resends tries.
const ATTEMPT_COUNT_SLOT: &[u8] = b" 1";

/// Writes try number `n` (from 1) into an attempt-count slot.
fn write_attempt_count(slot: &mut [u8], n: u32) {
    let n = n.min(99) as u8;
    slot[0] = if n >= 10 { b'0' + n / 10 } else { b' ' };
    slot[1] = b'0' + n % 10;
}

/// Writes `left` as a `grpc-timeout` value into its slot, padded with spaces (optional
/// whitespace after a field value, which HTTP/1.1 and the HTTP/2 adapter drop).
fn write_grpc_timeout(slot: &mut [u8], left: Duration) {
    let mut buf = [0u8; 9];
    let value = grpc::format_grpc_timeout(left, &mut buf);
    slot.fill(b' ');
    slot[..value.len()].copy_from_slice(value);
}

/// Writes the request: the head and a buffered body, or the head then the body streamed as it
/// arrives (each read of it within `stream_idle`). A failure of the client's side of the body
/// sets `upload_fault` (the try fails, but not through the upstream's fault).
#[allow(clippy::too_many_arguments)]
pub(super) async fn send_request<U, D>(
    up: &mut U,
    down: &mut D,
    request: &[u8],
    rbuf: &mut ReadBuffer,
    head_len: usize,
    body: &mut RequestBody,
    stream_body: bool,
    stream_idle: Option<Duration>,
    written: &mut bool,
    bytes_received: &Cell<u64>,
    upload_fault: &mut Option<UploadFault>,
) -> Result<(), TryFailure>
where
    U: AsyncRead + AsyncWrite + Unpin,
    D: Respond,
{
    let closed = |written: bool| TryFailure::Closed {
        request_written: written,
        reused: false,
    };
    if let Err(e) = write_flushed(up, request).await {
        if is_refused(&e) {
            return Err(TryFailure::Refused);
        }
        return Err(closed(*written));
    }
    *written = true;
    if stream_body {
        match stream_request_body(
            up,
            down,
            rbuf,
            head_len,
            body,
            stream_idle,
            None,
            bytes_received,
            None,
            &Detach::default(),
        )
        .await
        {
            Ok(_) => {}
            Err(e) => {
                *upload_fault = fault_of(&e);
                return Err(closed(true));
            }
        }
    }
    Ok(())
}

/// Reads the response head into `ubuf`/`rhead`, skipping interim 1xx answers other than 101 —
/// at most [`MAX_INTERIM_RESPONSES`] of them: one more is a protocol error (`too_many_interim`
/// set). A 101 to a request that asked for no upgrade (`upgrade` `None`) is a protocol error
/// too, and so is one to a protocol the listener's `upgrade_types` and the route's
/// `upgrade_configs` (`upgrade`'s value) do not allow.
pub(super) async fn read_response_head<U>(
    up: &mut U,
    ubuf: &mut ReadBuffer,
    rhead: &mut Head,
    method: Method,
    upgrade: Option<(Option<&[String]>, &[RouteUpgrade])>,
    too_many_interim: &mut bool,
) -> Result<(), TryFailure>
where
    U: ResponseSource,
{
    if up.writes_head() {
        // An HTTP/2 stream: its answer's head is written into `ubuf` and `rhead` as it came,
        // not parsed (`h2` skips interim answers; a refused one is as a parse refusal).
        debug_assert!(ubuf.is_empty());
        return match poll_fn(|cx| up.poll_written_head(cx, ubuf, rhead, method)).await {
            Ok(Ok(())) => final_head(ubuf, rhead, upgrade),
            Ok(Err(_)) => Err(TryFailure::ProtocolError),
            Err(e) if is_refused(&e) => Err(TryFailure::Refused),
            Err(_) => Err(TryFailure::Closed {
                request_written: true,
                reused: false,
            }),
        };
    }
    let mut interim = 0;
    loop {
        #[cfg(test)]
        crate::h2_upstream::note_head_parsed();
        match parse_response(ubuf.bytes(), method, &RESPONSE_LIMITS, rhead) {
            Ok(ParseStatus::Complete) => {
                let status = rhead.status();
                if (100..200).contains(&status) && status != 101 {
                    interim += 1;
                    if interim > MAX_INTERIM_RESPONSES {
                        *too_many_interim = true;
                        return Err(TryFailure::ProtocolError);
                    }
                    ubuf.consume(rhead.head_len());
                    continue;
                }
                return final_head(ubuf, rhead, upgrade);
            }
            Ok(ParseStatus::Partial) => {}
            Err(_) => return Err(TryFailure::ProtocolError),
        }
        match ubuf.fill(up).await {
            // An HTTP/2 upstream said it did not process the request.
            Err(e) if is_refused(&e) => return Err(TryFailure::Refused),
            Ok(0) | Err(_) => {
                return Err(TryFailure::Closed {
                    request_written: true,
                    reused: false,
                });
            }
            Ok(_) => {}
        }
    }
}

/// The checks of a final answer's head: a 101 to a request that asked for no upgrade
/// (`upgrade` `None`) is a protocol error, and so is one to a protocol the listener's
/// `upgrade_types` and the route's `upgrade_configs` (`upgrade`'s value) do not allow.
fn final_head(
    ubuf: &ReadBuffer,
    rhead: &Head,
    upgrade: Option<(Option<&[String]>, &[RouteUpgrade])>,
) -> Result<(), TryFailure> {
    if rhead.status() == 101 {
        // Switching protocols for a request that asked for no upgrade, or to a protocol the
        // listener does not tunnel: the connection would carry something neither side
        // agreed on.
        let Some((types, route)) = upgrade else {
            return Err(TryFailure::ProtocolError);
        };
        let switched_to = rhead.header_values(ubuf.bytes(), "upgrade");
        if !upgrade_allowed(types, route, switched_to) {
            return Err(TryFailure::ProtocolError);
        }
    }
    Ok(())
}

/// An upstream a response head is read from: an HTTP/1.1 connection's bytes, parsed, or an
/// HTTP/2 stream, whose head is written as it came
/// ([`crate::h2_upstream::H2Upstream::poll_response_head`]).
pub(super) trait ResponseSource: AsyncRead + Unpin {
    /// Whether the head comes written ([`ResponseSource::poll_written_head`]), not as bytes.
    fn writes_head(&self) -> bool;

    /// The head written into `ubuf` (empty) and `rhead`, as the answer to a request with
    /// `method`; `Ok(Err(_))`: a head the parse would refuse.
    fn poll_written_head(
        &mut self,
        cx: &mut Context<'_>,
        ubuf: &mut ReadBuffer,
        rhead: &mut Head,
        method: Method,
    ) -> Poll<std::io::Result<Result<(), HttpError>>>;
}

impl<S: AsyncRead + AsyncWrite + Unpin> ResponseSource for Shared<'_, &mut Upstream<S>> {
    fn writes_head(&self) -> bool {
        matches!(**self.0.borrow(), Upstream::Http2(_))
    }

    fn poll_written_head(
        &mut self,
        cx: &mut Context<'_>,
        ubuf: &mut ReadBuffer,
        rhead: &mut Head,
        method: Method,
    ) -> Poll<std::io::Result<Result<(), HttpError>>> {
        match &mut **self.0.borrow_mut() {
            Upstream::Http2(h2) => {
                h2.poll_response_head(cx, method, &RESPONSE_LIMITS, rhead, |head| {
                    ubuf.extend(head);
                })
            }
            Upstream::Http1(_) => Poll::Ready(Err(std::io::Error::other(
                "an HTTP/1.1 upstream's head is parsed",
            ))),
        }
    }
}

impl<N: Network> Engine<N> {
    /// Writes the upstream request into `out` once for all its tries: the head with the core's
    /// header edits (`l7::edits`: x-forwarded-for, request id, missing host, forwarded proto,
    /// client certificate, the route's edits, tracing), the normalized or rewritten path, and
    /// the slots a try rewrites in place (`grpc-timeout`, `x-envoy-attempt-count`: see
    /// [`rewrite_try_fields`]) — a held body follows it there (`body::buffer_body`). Sets the request's route timeout (the
    /// route's, capped by a gRPC request's `grpc-timeout`). No heap allocation once the
    /// connection is warm.
    pub(super) fn write_upstream_request(
        &self,
        req: &mut Forwarding<'_>,
        matched_prefix: Option<&str>,
        scratch: &mut Scratch,
        rbuf: &mut ReadBuffer,
        out: &mut Vec<u8>,
    ) {
        let (head, action, http2) = (req.head, req.action, req.http2);
        let cluster_cfg = &self.config.clusters[req.ci];
        out.clear();
        let path = if scratch.normalized {
            &scratch.norm[..]
        } else {
            head.path(rbuf.bytes())
        };
        let path_edit = match (&action.prefix_rewrite, matched_prefix) {
            (Some(replacement), Some(prefix)) => {
                rewrite_prefix(path, prefix, replacement, &mut scratch.path);
                Some(scratch.path.as_slice())
            }
            _ => scratch.normalized.then_some(scratch.norm.as_slice()),
        };
        let xff = forwarded_for(
            head.header(rbuf.bytes(), "x-forwarded-for"),
            scratch.peer_ip.as_bytes(),
            &mut scratch.xff,
        );
        let generate_id = head.header(rbuf.bytes(), "x-request-id").is_none();
        if generate_id {
            let mut rng = self.rng.borrow_mut();
            let (a, b) = (rng.next_u64(), rng.next_u64());
            format_request_id(a, b, &mut scratch.request_id);
            scratch.request_id_generated = true;
        }
        let no_host = head.host(rbuf.bytes()).is_none();
        let client_cert = sluice_core::l7::xfcc::edit(
            scratch.forward_client_cert,
            scratch.client_cert.as_deref(),
            head.header_values(rbuf.bytes(), sluice_core::l7::xfcc::XFCC),
            &mut scratch.xfcc,
        );
        let mut edits = HeaderEdits::new();
        request_edits_before_additions(
            &mut edits,
            &RequestFacts {
                forwarded_for: xff,
                generated_id: generate_id.then_some(&scratch.request_id[..]),
                // HTTP/1.0 without Host (nor an absolute-form target) goes out as HTTP/1.1,
                // which needs one: the cluster's name.
                missing_host: no_host.then_some(cluster_cfg.name.as_bytes()),
                forwarded_proto: scratch.forwarded_proto.value(
                    scratch.over_tls,
                    scratch.forwarded_proto == sluice_core::config::http::ForwardedProto::Preserve
                        && head.header(rbuf.bytes(), "x-forwarded-proto").is_some(),
                ),
                client_cert,
            },
            &action.request_headers_to_remove,
        );
        // The route's values with variables are rendered, as Envoy's, against the request as
        // edited so far: the proxy's fields (a generated `x-request-id`, `x-forwarded-for`)
        // and the route's removals (a removed field feeds no value) — the request values
        // before the route's additions, the response values after them (the request as it
        // went upstream). Every variable is of the request or the connection, so the
        // response's are rendered now too.
        let request = RenderedAgainst {
            head,
            buf: rbuf.bytes(),
            path,
            peer: scratch.peer,
            over_tls: scratch.over_tls,
            protocol: downstream_protocol(scratch.downstream_http2, head.version()),
        };
        if has_variables(&action.request_headers_to_add) {
            request.render(
                &mut scratch.rendered_request,
                &action.request_headers_to_add,
                &edits,
            );
        }
        edits.route_additions(
            &action.request_headers_to_add,
            &|name| head.header(rbuf.bytes(), name).is_some(),
            &scratch.rendered_request,
        );
        if has_variables(&action.response_headers_to_add) {
            request.render(
                &mut scratch.rendered_response,
                &action.response_headers_to_add,
                &edits,
            );
        }
        if scratch.trace.hop.is_some() {
            scratch.trace.headers.edits(&mut edits);
        }
        // HTTP/1.1 drops `te` as hop-by-hop; HTTP/2 keeps `te: trailers` (gRPC needs it).
        if http2
            && head
                .headers(rbuf.bytes())
                .any(|(n, v)| n.eq_ignore_ascii_case(b"te") && te_wants_trailers(v))
        {
            edits.append("te", b"trailers");
        }
        // gRPC: `grpc-timeout` caps the route timeout, and the upstream gets the time left
        // (rewritten in place before each try, in a slot as wide as the longest value).
        let grpc_timeout = if scratch.grpc {
            head.header(rbuf.bytes(), "grpc-timeout")
                .and_then(grpc::parse_grpc_timeout)
        } else {
            None
        };
        let route_timeout = match (action.timeout, grpc_timeout) {
            (Some(route), Some(g)) => Some(route.min(g)),
            (route, g) => route.or(g),
        };
        req.route_timeout = route_timeout;
        if scratch.grpc && route_timeout.is_some() {
            edits.set("grpc-timeout", GRPC_TIMEOUT_SLOT);
        }
        if scratch.include_attempt_count {
            edits.set("x-envoy-attempt-count", ATTEMPT_COUNT_SLOT);
        }
        write_request_head(
            out,
            rbuf.bytes(),
            head,
            &HeadEdits {
                path: path_edit,
                remove: edits.removals(),
                add: edits.additions(),
                force_close: false,
                version: Some(Version::Http11),
            },
        );
        scratch.grpc_timeout_at = if scratch.grpc && route_timeout.is_some() {
            out.windows(GRPC_TIMEOUT_SLOT.len())
                .rposition(|w| w == GRPC_TIMEOUT_SLOT)
        } else {
            None
        };
        // The proxy's own field comes after the request's (which `set` removed).
        scratch.attempt_count_at = if scratch.include_attempt_count {
            out.windows(ATTEMPT_COUNT_FIELD.len())
                .rposition(|w| w == ATTEMPT_COUNT_FIELD)
                .map(|at| at + ATTEMPT_COUNT_FIELD.len())
        } else {
            None
        };
    }
}

/// The request a route's values with variables are rendered against (Envoy's `%REQ(…)%`,
/// `%DOWNSTREAM_REMOTE_ADDRESS%`...): its head as received, with the path as normalized.
struct RenderedAgainst<'a> {
    head: &'a Head,
    buf: &'a [u8],
    /// The path as normalized (Envoy edits headers before it rewrites a prefix).
    path: &'a [u8],
    peer: std::net::SocketAddr,
    over_tls: bool,
    protocol: &'static str,
}

impl RenderedAgainst<'_> {
    /// Renders `values`' entries with variables into `into`, each field read as `edits` leave
    /// it, the pseudo-headers (`%REQ(:path)%`...) from the request's line and its host as
    /// edited. Called only for a list with variables: the usual route builds nothing here.
    fn render(&self, into: &mut Rendered, values: &[HeaderValue], edits: &HeaderEdits<'_>) {
        let (head, buf) = (self.head, self.buf);
        let lookup = |name: &str| edits.value_of(name, &|n: &str| head.header(buf, n));
        into.render(
            values,
            &FormatContext {
                downstream_remote: self.peer,
                protocol: self.protocol,
                hostname: hostname(),
                request_header: &lookup,
                request_line: RequestLine {
                    authority: edits.value_of("host", &|_| head.host(buf)),
                    method: head.method_bytes(buf),
                    path: (head.target_form() != TargetForm::Authority).then_some(self.path),
                    query: head.query(buf),
                    scheme: if self.over_tls { "https" } else { "http" },
                },
            },
        );
    }
}

/// Rewrites a try's fields of the upstream head in `out` in place, in the slots
/// [`Engine::write_upstream_request`] left: a gRPC request's `grpc-timeout` to the time left
/// of the route's timeout (`stream`'s deadline; all of it while the body streams, before the
/// deadline is set), `x-envoy-attempt-count` to this try's number.
pub(super) fn rewrite_try_fields(
    out: &mut [u8],
    scratch: &Scratch,
    route_timeout: Option<Duration>,
    stream: &Stream,
) {
    if let (Some(at), Some(timeout)) = (scratch.grpc_timeout_at, route_timeout) {
        let left = stream
            .deadline()
            .map_or(timeout, |d| d.saturating_duration_since(now()));
        write_grpc_timeout(&mut out[at..at + GRPC_TIMEOUT_SLOT.len()], left);
    }
    if let Some(at) = scratch.attempt_count_at {
        write_attempt_count(&mut out[at..at + ATTEMPT_COUNT_SLOT.len()], scratch.tries);
    }
}

/// Stages the client's response head ([`super::respond::stage_head`]: HTTP/1.1 writes it into
/// `out`): the upstream's (`rhead` over `ubuf`) with the route's response edits, then the
/// listener's `server` (after the route's edits, as Envoy sets it last); `http10_keep_alive`:
/// an HTTP/1.0 client keeps its connection, which the answer must say; `force_close`:
/// `connection: close`.
#[allow(clippy::too_many_arguments)]
pub(super) fn stage_downstream_head<D: Respond>(
    down: &mut D,
    out: &mut Vec<u8>,
    action: &ForwardAction,
    server: Option<&ServerHeader>,
    rendered: &Rendered,
    ubuf: &ReadBuffer,
    rhead: &Head,
    http10_keep_alive: bool,
    force_close: bool,
) -> std::io::Result<()> {
    let mut edits = HeaderEdits::new();
    edits.route(
        &action.response_headers_to_remove,
        &action.response_headers_to_add,
        &|name| rhead.header(ubuf.bytes(), name).is_some(),
        rendered,
    );
    if let Some(s) = server {
        match s.transformation {
            ServerHeaderTransformation::Overwrite => {
                edits.set("server", s.name.as_bytes());
            }
            ServerHeaderTransformation::AppendIfAbsent
                if rhead.header(ubuf.bytes(), "server").is_none() =>
            {
                edits.append("server", s.name.as_bytes());
            }
            ServerHeaderTransformation::AppendIfAbsent
            | ServerHeaderTransformation::PassThrough => {}
        }
    }
    if http10_keep_alive {
        edits.append("connection", b"keep-alive");
    }
    stage_head(
        down,
        out,
        &ForwardedHead {
            buf: ubuf.bytes(),
            head: rhead,
            edits: HeadEdits {
                path: None,
                remove: edits.removals(),
                add: edits.additions(),
                force_close,
                version: None,
            },
        },
    )
}
