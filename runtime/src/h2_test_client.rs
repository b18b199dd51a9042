//! The HTTP/2 client side the runtime's unit tests share (compiled for tests only): an h2c
//! connection to a test engine's listener, a stream's answer awaited with a deadline, and a
//! body read to its end. The tests of `http2.rs` and `http/mod.rs` speak to the proxy through
//! it, so that each asserts only what it is about.
//!
//! It owns no state: what it spawns (the client connection's task) lives on the caller's
//! `LocalSet` (see [`crate::test_support::on_local_runtime`]); the caller aborts or awaits it.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use h2::client::{ResponseFuture, SendRequest};

/// How long a stream waits for its answer head before the test fails: generous, so that only
/// an answer that never comes fails it.
const ANSWER_DEADLINE: Duration = Duration::from_secs(10);

/// An h2c (prior knowledge) connection to `at`: its request handle, and the connection's task
/// (spawned on the caller's `LocalSet`).
pub(crate) async fn h2c_client(
    at: SocketAddr,
) -> (
    SendRequest<Bytes>,
    tokio::task::JoinHandle<Result<(), h2::Error>>,
) {
    let tcp = tokio::net::TcpStream::connect(at).await.unwrap();
    let (client, conn) = h2::client::handshake(tcp).await.unwrap();
    (client, tokio::task::spawn_local(conn))
}

/// A stream's answer head; the test fails if it does not come within [`ANSWER_DEADLINE`] or
/// the stream is reset.
pub(crate) async fn answered(response: ResponseFuture) -> http::Response<h2::RecvStream> {
    tokio::time::timeout(ANSWER_DEADLINE, response)
        .await
        .expect("answered in time")
        .expect("answered, not reset")
}

/// The payload of `body` to its end (each piece's flow-control capacity given back); the test
/// fails if the stream does not end cleanly. `body` is left for its trailers.
pub(crate) async fn body_to_end(body: &mut h2::RecvStream) -> Vec<u8> {
    let mut got = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.expect("the body ends cleanly");
        let _ = body.flow_control().release_capacity(chunk.len());
        got.extend_from_slice(&chunk);
    }
    got
}
