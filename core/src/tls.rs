//! TLS pieces that need no TLS library: reading what a ClientHello asks for, so that a
//! connection can be routed by server name before (or without) terminating it.
//! Termination and origination use rustls in the runtime; the PEM and certificate parsing of
//! their files ([`pem`]) is here, pure, so that it is fuzzed.

pub mod client_hello;
pub mod pem;

pub use client_hello::{
    ClientHello, ClientHelloError, DEFAULT_MAX_HELLO_BYTES, Peek, max_hello_wire_bytes,
    peek_client_hello,
};
