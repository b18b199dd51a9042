//! What the runtime's unit tests share (compiled for tests only): a loopback listener on a free
//! port, a small HTTP/1.1 upstream, an engine serving a YAML config on a listener, and the
//! current-thread runtime with a `LocalSet` that an engine's `!Send` tasks need.
//!
//! It owns no state: each helper makes what it returns, and what it spawns lives on the
//! caller's `LocalSet` (so it ends with the caller's runtime).

use std::future::Future;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;

use sluice_core::config::Config;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::engine::Engine;
use crate::net::TokioNet;
use crate::stats::WorkerStats;

/// A listener on a free loopback port, and its address.
pub(crate) fn bound() -> (tokio::net::TcpListener, SocketAddr) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.set_nonblocking(true).unwrap();
    let at = l.local_addr().unwrap();
    (tokio::net::TcpListener::from_std(l).unwrap(), at)
}

/// Runs `f` to its end on a current-thread runtime, inside a `LocalSet` (what
/// `tokio::task::spawn_local`, and so an engine, needs).
pub(crate) fn on_local_runtime<F: Future>(f: F) -> F::Output {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    tokio::task::LocalSet::new().block_on(&rt, f)
}

/// An HTTP/1.1 upstream on `l` (each connection a local task; call it inside
/// [`on_local_runtime`]): every request head it reads on a connection — bodies are not
/// expected — is answered with `answer(head)`, the head lowercased, without its blank line.
pub(crate) async fn http1_upstream(l: tokio::net::TcpListener, answer: fn(&str) -> String) {
    loop {
        let (mut s, _) = l.accept().await.unwrap();
        tokio::task::spawn_local(async move {
            let mut buf = vec![0u8; 4096];
            let mut have = Vec::new();
            loop {
                let n = s.read(&mut buf).await.unwrap_or(0);
                if n == 0 {
                    return;
                }
                have.extend_from_slice(&buf[..n]);
                while let Some(end) = have.windows(4).position(|w| w == b"\r\n\r\n") {
                    let head = String::from_utf8_lossy(&have[..end]).to_lowercase();
                    have.drain(..end + 4);
                    s.write_all(answer(&head).as_bytes()).await.unwrap();
                }
            }
        });
    }
}

/// A one-worker engine for `yaml` (its listener bound as `listener`), running as a local task
/// until the caller's runtime ends (call it inside [`on_local_runtime`]).
pub(crate) fn serve(yaml: &str, listener: tokio::net::TcpListener) -> Rc<Engine<TokioNet>> {
    serve_until(yaml, listener, std::future::pending::<()>())
}

/// [`serve`], until `stop` completes: then the engine drains (as on a shutdown).
pub(crate) fn serve_until(
    yaml: &str,
    listener: tokio::net::TcpListener,
    stop: impl Future<Output = ()> + 'static,
) -> Rc<Engine<TokioNet>> {
    let config = Arc::new(Config::from_yaml(yaml).unwrap_or_else(|e| panic!("{e}")));
    let stats = Arc::new(WorkerStats::new(&config));
    let engine = Engine::new(TokioNet::default(), config, 0, 1, stats).unwrap();
    tokio::task::spawn_local(engine.clone().run(vec![listener], stop));
    engine
}
