//! xDS for Sluice: configuration from an Envoy v3 management server.
//!
//! - [`translate`]: Envoy v3 resources (Listener, RouteConfiguration, Cluster,
//!   ClusterLoadAssignment, and the TLS transport sockets with their SDS Secrets) into the
//!   core's config model, through the same validation as the YAML file.
//! - [`ads`]: the sans-IO Aggregated Discovery Service state machine — versions, nonces,
//!   ACK/NACK, warming, and when a complete config can be applied. It never reads a clock and
//!   does no IO: responses and timer expiries are its inputs, requests and configs to apply
//!   its outputs.
//! - [`sds`]: the sans-IO client of an SDS source of its own (Istio's agent, `sds-grpc`), whose
//!   secrets the ADS machine warms and applies with the rest.
//! - `test_server` (feature `test-server`): an ADS management server's service for the
//!   runtime's end-to-end tests and the simulator.
//!
//! The crate is separate from `sluice-core` so that the core does not compile the Envoy protos
//! (`envoy-types`, prost, and the tonic it brings).
#![forbid(unsafe_code)]

pub use envoy_types;

pub mod ads;
pub mod fixtures;
pub mod fuzzing;
pub mod sds;
#[cfg(feature = "test-server")]
pub mod test_server;
pub mod translate;
