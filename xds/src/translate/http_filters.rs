//! The HTTP filters an `HttpConnectionManager` puts before its router, as istiod writes them
//! on its sidecar listeners. Only filters that change nothing of the traffic are accepted, each
//! noted in [`Notes`]:
//!
//! - `envoy.filters.http.grpc_stats` (`grpc_stats.v3.FilterConfig`, any settings): telemetry
//!   only (per-method gRPC counters);
//! - Istio's stats filter (`stats.PluginConfig`, itself or in a `TypedStruct`): telemetry only;
//! - Istio's HTTP metadata exchange (`istio.metadata_exchange`: a `TypedStruct` of
//!   `io.istio.http.peer_metadata.Config`): it exchanges the workloads' metadata in the
//!   `x-envoy-peer-metadata` and `x-envoy-peer-metadata-id` headers for Istio's stats labels.
//!   Sluice writes none, but it does what the filter always does to a peer's: removes them
//!   (Istio removes them from requests on inbound and from responses on outbound; Sluice from
//!   both on every HCM that has the filter) — else the application would read the peer's node
//!   metadata, and could forge a source identity for the next sidecar's telemetry. Not a no-op
//!   then: [`no_op`] says [`Accepted::StripsPeerMetadata`], and [`strip_peer_metadata`] adds
//!   both names to the request and response removals of every forwarding route of the HCM;
//! - `envoy.filters.http.cors` (`cors.v3.Cors`, which has no fields): it acts only on a CORS
//!   policy of a virtual host or route, which the route translation refuses by path — with none
//!   it passes every request;
//! - `envoy.filters.http.fault` (`fault.v3.HTTPFault`) with an empty config: no delay, no
//!   abort, no header-controlled fault, no rate limit — Envoy then injects nothing (per-route
//!   fault settings are refused by the route translation).
//!
//! A fault filter with any setting is refused by the path of that setting; any other filter
//! (not `is_optional` nor `disabled`) by its own path, as before.
//!
//! Accepted filters are noted ("telemetry only", "no effect", "peer metadata headers
//! removed").

use envoy_types::pb::envoy::extensions::filters::http::cors::v3::Cors;
use envoy_types::pb::envoy::extensions::filters::http::fault::v3::HttpFault;
use envoy_types::pb::envoy::extensions::filters::http::grpc_stats::v3::FilterConfig as GrpcStats;
use envoy_types::pb::google::protobuf::Any;
use prost::Name;
use serde_json::Value;

use super::{At, Notes, TranslateError, reject_rest, unpack};

/// Istio's HTTP metadata exchange filter's config type.
const PEER_METADATA: &str = "type.googleapis.com/io.istio.http.peer_metadata.Config";

/// The headers Istio's HTTP metadata exchange carries a workload's metadata in, removed where
/// the filter is.
pub(super) const PEER_METADATA_HEADERS: [&str; 2] =
    ["x-envoy-peer-metadata", "x-envoy-peer-metadata-id"];

/// What an accepted HTTP filter asks of the translation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Accepted {
    /// Nothing: it changes nothing of the traffic.
    NoOp,
    /// Istio's metadata exchange: [`strip_peer_metadata`] on the HCM's routes.
    StripsPeerMetadata,
}

/// Checks an HTTP filter placed before the router (`named`: its path with its name):
/// `Ok(Some(_))` when it is one of the filters above (noted), `Ok(None)` when it is none of
/// them (the caller decides), `Err` for a known filter with settings that would act.
pub(super) fn no_op(
    any: &Any,
    named: &At<'_>,
    notes: &mut Notes,
) -> Result<Option<Accepted>, TranslateError> {
    let real = super::network_filters::real_type(any);
    if real == GrpcStats::type_url() {
        noted(named, "(telemetry only)", notes);
    } else if real == PEER_METADATA {
        noted(
            named,
            "(Istio peer metadata: none exchanged; x-envoy-peer-metadata and \
             x-envoy-peer-metadata-id removed from requests and responses)",
            notes,
        );
        return Ok(Some(Accepted::StripsPeerMetadata));
    } else if real == super::network_filters::ISTIO_STATS {
        noted(named, "(Istio stats: telemetry only)", notes);
    } else if any.type_url == Cors::type_url() {
        let c: Cors = unpack(any, named)?;
        reject_rest(&c, &named.field("typed_config"))?;
        noted(named, "(no CORS policy on any route: no effect)", notes);
    } else if any.type_url == HttpFault::type_url() {
        let f: HttpFault = unpack(any, named)?;
        reject_rest(&f, &named.field("typed_config"))?;
        noted(named, "(no fault configured: no effect)", notes);
    } else {
        return Ok(None);
    }
    Ok(Some(Accepted::NoOp))
}

/// Adds [`PEER_METADATA_HEADERS`] to `request_headers_to_remove` and
/// `response_headers_to_remove` of every route that forwards (a `route` action) in
/// `virtual_hosts` (translated ones); a direct response goes to no upstream and carries
/// neither.
pub(super) fn strip_peer_metadata(virtual_hosts: &mut [Value]) {
    let routes = virtual_hosts
        .iter_mut()
        .filter_map(|vh| vh.get_mut("routes").and_then(Value::as_array_mut))
        .flatten();
    for action in routes.filter_map(|r| r.get_mut("route").and_then(Value::as_object_mut)) {
        for key in ["request_headers_to_remove", "response_headers_to_remove"] {
            let list = action
                .entry(key)
                .or_insert_with(|| Value::Array(Vec::new()));
            let Value::Array(list) = list else {
                continue;
            };
            for name in PEER_METADATA_HEADERS {
                let listed = list
                    .iter()
                    .any(|n| n.as_str().is_some_and(|n| n.eq_ignore_ascii_case(name)));
                if !listed {
                    list.push(Value::String(name.to_owned()));
                }
            }
        }
    }
}

/// Notes the filter at `named` with why it was let through.
fn noted(named: &At<'_>, why: &str, notes: &mut Notes) {
    At {
        path: format!("{} {why}", named.path),
        ..named.clone()
    }
    .note(notes, "");
}
