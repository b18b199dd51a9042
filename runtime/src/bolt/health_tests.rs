//! A host that fails its active health check has this worker's Bolt connection to it closed
//! when the verdict changes — its requests in flight answered status 16 then — even when no
//! downstream frame arrives afterwards (every client waiting on that host). Real loopback
//! sockets, a one-worker engine (worker 0 runs the checks), defaults but the check's timings.

use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

use sluice_core::bolt::{self, CMD_REQUEST, CMD_VERSION, RequestSpec, Version, encode_request};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::spawn_local;

use crate::test_support::{bound, on_local_runtime, serve};

/// The request's own timeout: far beyond what the check needs to fail the host, so that a
/// status 7 (timed out) rather than 16 means the connection was not closed on the verdict.
const REQUEST_TIMEOUT_MS: i32 = 10_000;

/// Accepts connections (the checks' connects among them); counts the Bolt requests read and
/// never answers them, holding each connection open (a host that stopped answering).
async fn silent_upstream(l: TcpListener, requests: Rc<Cell<usize>>) {
    loop {
        let (mut s, _) = l.accept().await.unwrap();
        let requests = requests.clone();
        spawn_local(async move {
            let mut have = Vec::new();
            let mut chunk = vec![0u8; 4096];
            loop {
                let n = s.read(&mut chunk).await.unwrap_or(0);
                if n == 0 {
                    return;
                }
                have.extend_from_slice(&chunk[..n]);
                while let Some(f) = bolt::decode(&have, 1 << 20).unwrap() {
                    let len = f.len;
                    have.drain(..len);
                    requests.set(requests.get() + 1);
                }
            }
        });
    }
}

fn request(id: u32) -> Vec<u8> {
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
            timeout_ms: REQUEST_TIMEOUT_MS,
            class: b"com.alipay.sofa.rpc.core.request.SofaRequest",
            header: &[(b"service", Some(b"svc"))],
            content: b"stuck",
        },
    )
    .unwrap();
    out
}

async fn until(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..1000 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("not reached in 10 s: {what}");
}

#[test]
fn bolt_connection_to_a_host_failing_its_check_closes_without_further_frames() {
    on_local_runtime(async {
        let (up, up_at) = bound();
        let requests = Rc::new(Cell::new(0));
        let upstream = spawn_local(silent_upstream(up, requests.clone()));
        let (listener, at) = bound();
        let yaml = format!(
            "listeners:\n  - name: rpc\n    address: {at}\n    bolt:\n      routes: [ {{ match: {{ service: svc }}, route: {{ cluster: up }} }} ]\n\
             clusters:\n  - name: up\n    hosts: [ {{ address: \"{up_at}\" }} ]\n    \
             health_check: {{ tcp: {{}}, interval: 50ms, timeout: 50ms, unhealthy_threshold: 1, healthy_threshold: 1, no_traffic_interval: 50ms }}\n"
        );
        let engine = serve(&yaml, listener);
        let health = engine.upstreams.shared_health().clone();
        until("the host found healthy", || health.is_healthy(0, 0)).await;
        let mut c = TcpStream::connect(at).await.unwrap();
        c.write_all(&request(1)).await.unwrap();
        until("the request at the upstream", || requests.get() == 1).await;
        // The host stops accepting (its listening socket closed): its next check fails. The
        // client sends nothing more.
        upstream.abort();
        let _ = upstream.await;
        until("the host found unhealthy", || !health.is_healthy(0, 0)).await;
        let mut have = Vec::new();
        let mut chunk = vec![0u8; 4096];
        let answer = loop {
            if let Some(f) = bolt::decode(&have, 1 << 20).unwrap() {
                break (f.request_id, f.status);
            }
            let n = tokio::time::timeout(Duration::from_secs(30), c.read(&mut chunk))
                .await
                .expect("an answer within 30 s")
                .unwrap();
            assert!(n > 0, "closed before the answer");
            have.extend_from_slice(&chunk[..n]);
        };
        assert_eq!(
            answer,
            (1, Some(16)),
            "answered status 16 (connection closed on the verdict), not 7 (timed out)"
        );
        assert_eq!(requests.get(), 1, "the request reached the upstream once");
    });
}
