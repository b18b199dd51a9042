//! Issue 15: a downstream Bolt connection holds its read buffer only while unprocessed bytes sit
//! in it. Counts come from the worker's [`crate::bufpool::BufPool`] (read buffers taken with
//! bytes in them, and those waiting in the pool), on real loopback sockets through a one-worker
//! engine in front of a Bolt echo upstream.

use std::time::Duration;

use sluice_core::bolt::{self, ResponseStatus, encode_response};
use tokio::io::AsyncWriteExt as _;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::spawn_local;

use super::test_support::{self, bolt_upstream, read_frame, until};
use crate::engine::Engine;
use crate::net::TokioNet;
use crate::test_support::{bound, on_local_runtime, serve};

/// Answers every request on every connection with status 0 and the request's content.
async fn echo_upstream(l: TcpListener) {
    bolt_upstream(l, |f, out| {
        encode_response(
            out,
            f.version,
            f.request_id,
            f.codec,
            ResponseStatus::Success,
            b"",
            &[],
            f.content,
        )
        .unwrap();
    })
    .await;
}

fn request(id: u32, content: &[u8]) -> Vec<u8> {
    test_support::request(id, content, 3000)
}

/// Reads one answer and checks it answers request `id` with status 0 and `content`.
async fn expect_answer(c: &mut TcpStream, id: u32, content: &[u8]) {
    let have = read_frame(
        c,
        Duration::from_secs(5),
        &format!("the answer to request {id}"),
    )
    .await;
    let f = bolt::decode(&have, 1 << 20).unwrap().unwrap();
    assert_eq!(
        (f.request_id, f.status, f.content),
        (id, Some(0), content),
        "the answer to request {id}"
    );
    assert_eq!(f.len, have.len(), "nothing after the answer");
}

fn proxy(up_at: std::net::SocketAddr) -> (std::rc::Rc<Engine<TokioNet>>, std::net::SocketAddr) {
    let (listener, at) = bound();
    let yaml = format!(
        "listeners:\n  - name: rpc\n    address: {at}\n    bolt:\n      routes: [ {{ match: {{ service: svc }}, route: {{ cluster: up }} }} ]\n\
         clusters:\n  - {{ name: up, hosts: [ {{ address: \"{up_at}\" }} ] }}\n"
    );
    (serve(&yaml, listener), at)
}

#[test]
fn idle_bolt_connections_hold_no_read_buffer() {
    on_local_runtime(async {
        let (up, up_at) = bound();
        spawn_local(echo_upstream(up));
        let (engine, at) = proxy(up_at);
        let pool = &engine.http_buffers;
        // Three clients, one request each, one after the other, then all idle: each took a
        // read buffer for its request and gave it back once the frame was handled, so the one
        // buffer went round and waits in the pool.
        let mut clients = Vec::new();
        for id in 1..=3u32 {
            let mut c = TcpStream::connect(at).await.unwrap();
            c.write_all(&request(id, b"hello")).await.unwrap();
            expect_answer(&mut c, id, b"hello").await;
            clients.push(c);
        }
        until("every connection's buffer back", || pool.pooled().0 >= 1).await;
        assert_eq!(pool.read_takes(), 3, "one read buffer taken per request");
        assert_eq!(
            pool.pooled().0,
            1,
            "the connections gave the buffer back: the same one served all three"
        );
        // A frame that arrives in two parts: the connection keeps the buffer holding its first
        // part (it is not processed yet), and the answer is whole once the rest arrives.
        let frame = request(9, b"split in two");
        let (first, rest) = frame.split_at(frame.len() / 2);
        let c = &mut clients[1];
        c.write_all(first).await.unwrap();
        until("the first part read", || pool.read_takes() == 4).await;
        assert_eq!(pool.pooled().0, 0, "a partial frame holds its buffer");
        tokio::time::sleep(Duration::from_millis(50)).await;
        c.write_all(rest).await.unwrap();
        expect_answer(c, 9, b"split in two").await;
        until("the buffer back after the whole frame", || {
            pool.pooled().0 == 1
        })
        .await;
        // Still served: a second request on an idle connection.
        let c = &mut clients[2];
        c.write_all(&request(10, b"again")).await.unwrap();
        expect_answer(c, 10, b"again").await;
    });
}
