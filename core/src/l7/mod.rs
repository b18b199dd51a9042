//! The protocol-independent request stream (L7), shared by every codec that carries HTTP
//! semantics: HTTP/1.1, and HTTP/2 streams, which the runtime re-frames as HTTP/1.1 bytes on the
//! same request path for now (`runtime/src/http2.rs`; a codec interface of their own is the
//! next step, see `docs/architecture.md`).
//!
//! - [`exchange`]: tries, retries and timeouts of one request against its cluster, with events
//!   saying what happened (connect failed or timed out, reset, per-try or route timeout);
//! - [`edits`]: the header edits of a hop (`x-forwarded-for`, `x-request-id`, the route's) as a
//!   neutral list a codec applies, allocation-free for the usual sizes;
//! - [`grpc`]: the `grpc-timeout` header, parsed and written;
//! - [`trace`]: trace-context headers (W3C `traceparent`, B3), parsed and written;
//! - [`stream`]: one request from admission to its answer — it owns every circuit-breaker
//!   permit the request takes (request, pending, connection; the retry permit through its
//!   exchange), so that a driver can neither leak nor double-release one, and it is driven
//!   through one input method and one output queue.
//!
//! A codec translates its bytes or frames into [`stream::Input`]s and carries out
//! [`stream::Output`]s; nothing here knows an HTTP/1 byte.

pub mod edits;
pub mod exchange;
pub mod grpc;
pub mod stream;
pub mod trace;
pub mod xfcc;
