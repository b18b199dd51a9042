//! What the Bolt unit tests (`health_tests`, `idle_tests`) share (compiled for tests only): a
//! SOFARPC request frame, an upstream that hands each frame it reads to the test, a read of
//! the proxy's next answer frame with a deadline, and a condition polled with a deadline. Real loopback sockets; each test makes its own upstream.
//!
//! It owns no state: each helper makes what it returns.

use std::time::Duration;

use sluice_core::bolt::{self, CMD_REQUEST, CMD_VERSION, RequestSpec, Version, encode_request};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::spawn_local;

/// A Bolt v1 SOFARPC request `id` for service `svc` carrying `content`, with the request's
/// own timeout.
pub(super) fn request(id: u32, content: &[u8], timeout_ms: i32) -> Vec<u8> {
    let mut out = Vec::new();
    encode_request(
        &mut out,
        &RequestSpec {
            version: Version::V1,
            oneway: false,
            cmd_code: CMD_REQUEST,
            cmd_version: CMD_VERSION,
            request_id: id,
            codec: 1,
            timeout_ms,
            class: b"com.alipay.sofa.rpc.core.request.SofaRequest",
            header: &[(b"service", Some(b"svc"))],
            content,
        },
    )
    .unwrap();
    out
}

/// Reads from `c` until its bytes hold a whole frame (decode it from the start of what this
/// returns); the test fails if none comes within `limit` or `c` closes first (`what` names
/// the awaited answer).
pub(super) async fn read_frame(c: &mut TcpStream, limit: Duration, what: &str) -> Vec<u8> {
    let mut have = Vec::new();
    let mut chunk = vec![0u8; 4096];
    while bolt::decode(&have, 1 << 20).unwrap().is_none() {
        let n = tokio::time::timeout(limit, c.read(&mut chunk))
            .await
            .unwrap_or_else(|_| panic!("{what} within {limit:?}"))
            .unwrap();
        assert!(n > 0, "closed before {what}");
        have.extend_from_slice(&chunk[..n]);
    }
    have
}

/// Polls `done` every 10 ms; the test fails if it is not true within 10 s (generous: only a
/// condition that never comes fails it).
pub(super) async fn until(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..1000 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("not reached in 10 s: {what}");
}

/// A Bolt upstream on `l` (each connection a local task; call it inside
/// [`crate::test_support::on_local_runtime`]): every frame it reads, on any connection, goes to
/// `on_frame` with the connection's pending output, which is written once the frames read
/// together are handled (nothing written when it stays empty). Connections stay open until
/// their peer closes them.
pub(super) async fn bolt_upstream(
    l: TcpListener,
    on_frame: impl Fn(&bolt::Frame<'_>, &mut Vec<u8>) + Clone + 'static,
) {
    loop {
        let (mut s, _) = l.accept().await.unwrap();
        let on_frame = on_frame.clone();
        spawn_local(async move {
            let mut have = Vec::new();
            let mut chunk = vec![0u8; 4096];
            loop {
                let n = s.read(&mut chunk).await.unwrap_or(0);
                if n == 0 {
                    return;
                }
                have.extend_from_slice(&chunk[..n]);
                let mut out = Vec::new();
                while let Some(f) = bolt::decode(&have, 1 << 20).unwrap() {
                    on_frame(&f, &mut out);
                    let len = f.len;
                    have.drain(..len);
                }
                if !out.is_empty() {
                    s.write_all(&out).await.unwrap();
                }
            }
        });
    }
}
