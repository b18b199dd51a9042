//! A host that fails its active health check has this worker's Bolt connection to it closed
//! when the verdict changes — its requests in flight answered status 16 then — even when no
//! downstream frame arrives afterwards (every client waiting on that host). Real loopback
//! sockets, a one-worker engine (worker 0 runs the checks), defaults but the check's timings.

use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

use sluice_core::bolt;
use tokio::io::AsyncWriteExt as _;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::spawn_local;

use super::test_support::{self, bolt_upstream, read_frame, until};
use crate::test_support::{bound, on_local_runtime, serve};

/// The request's own timeout: far beyond what the check needs to fail the host, so that a
/// status 7 (timed out) rather than 16 means the connection was not closed on the verdict.
const REQUEST_TIMEOUT_MS: i32 = 10_000;

/// Accepts connections (the checks' connects among them); counts the Bolt requests read and
/// never answers them, holding each connection open (a host that stopped answering).
async fn silent_upstream(l: TcpListener, requests: Rc<Cell<usize>>) {
    bolt_upstream(l, move |_, _| requests.set(requests.get() + 1)).await;
}

fn request(id: u32) -> Vec<u8> {
    test_support::request(id, b"stuck", REQUEST_TIMEOUT_MS)
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
        let have = read_frame(&mut c, Duration::from_secs(30), "the answer").await;
        let f = bolt::decode(&have, 1 << 20).unwrap().unwrap();
        let answer = (f.request_id, f.status);
        assert_eq!(
            answer,
            (1, Some(16)),
            "answered status 16 (connection closed on the verdict), not 7 (timed out)"
        );
        assert_eq!(requests.get(), 1, "the request reached the upstream once");
    });
}
