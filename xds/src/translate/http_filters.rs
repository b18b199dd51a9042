//! The HTTP filters an `HttpConnectionManager` puts before its router, as istiod writes them
//! on its sidecar listeners. Only filters that change nothing of the traffic are accepted, each
//! noted in [`Notes`]:
//!
//! - `envoy.filters.http.grpc_stats` (`grpc_stats.v3.FilterConfig`, any settings): telemetry
//!   only (per-method gRPC counters);
//! - Istio's stats filter (`stats.PluginConfig`, itself or in a `TypedStruct`): telemetry only;
//! - Istio's HTTP metadata exchange (`istio.metadata_exchange`: a `TypedStruct` of
//!   `io.istio.http.peer_metadata.Config`): it exchanges the workloads' metadata in
//!   `x-envoy-peer-metadata` headers for Istio's stats labels only; Sluice writes none and
//!   leaves a peer's to pass (telemetry only);
//! - `envoy.filters.http.cors` (`cors.v3.Cors`, which has no fields): it acts only on a CORS
//!   policy of a virtual host or route, which the route translation refuses by path — with none
//!   it passes every request;
//! - `envoy.filters.http.fault` (`fault.v3.HTTPFault`) with an empty config: no delay, no
//!   abort, no header-controlled fault, no rate limit — Envoy then injects nothing (per-route
//!   fault settings are refused by the route translation).
//!
//! A fault filter with any setting is refused by the path of that setting; any other filter
//! (not `is_optional` nor `disabled`) by its own path, as before.

use envoy_types::pb::envoy::extensions::filters::http::cors::v3::Cors;
use envoy_types::pb::envoy::extensions::filters::http::fault::v3::HttpFault;
use envoy_types::pb::envoy::extensions::filters::http::grpc_stats::v3::FilterConfig as GrpcStats;
use envoy_types::pb::google::protobuf::Any;
use prost::Name;

use super::{At, Notes, TranslateError, reject_rest, unpack};

/// Istio's HTTP metadata exchange filter's config type.
const PEER_METADATA: &str = "type.googleapis.com/io.istio.http.peer_metadata.Config";

/// Checks an HTTP filter placed before the router (`named`: its path with its name): `Ok(true)`
/// when it is one of the no-op filters above (noted), `Ok(false)` when it is none of them (the
/// caller decides), `Err` for a known filter with settings that would act.
pub(super) fn no_op(any: &Any, named: &At<'_>, notes: &mut Notes) -> Result<bool, TranslateError> {
    let real = super::network_filters::real_type(any);
    if real == GrpcStats::type_url() {
        noted(named, "(telemetry only)", notes);
    } else if real == PEER_METADATA {
        noted(
            named,
            "(Istio peer metadata: telemetry only, no headers exchanged)",
            notes,
        );
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
        return Ok(false);
    }
    Ok(true)
}

/// Notes the filter at `named` with why it was let through.
fn noted(named: &At<'_>, why: &str, notes: &mut Notes) {
    At {
        path: format!("{} {why}", named.path),
        ..named.clone()
    }
    .note(notes, "");
}
