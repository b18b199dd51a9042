//! The L4 relays on real loopback sockets, through a one-worker engine: both the splicing relay
//! (the default) and the copying one (`splice: false`) hold a pipe or a buffer only while bytes
//! are in flight, keep it while a slow destination drains it, and deliver every byte in order —
//! through pipes, through copies when no pipe is to be had, and across half-closes.
//!
//! Counts come from the worker's pools ([`crate::splice::PipePool`], [`crate::bufpool::BufPool`])
//! and the process's pipe budget ([`crate::limits::ProcessLimits::pipes_open`]).

use std::cell::Cell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use sluice_core::tcp_proxy::CloseReason;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::task::spawn_local;

use crate::engine::Engine;
use crate::net::TokioNet;
use crate::test_support::{bound, on_local_runtime, serve};

/// The pattern's period: byte `i` of every stream is `i % PERIOD`.
const PERIOD: usize = 251;
/// The size of each write: a whole number of periods, so every write is the same bytes.
const WRITE: usize = PERIOD * 256;

/// `PERIOD` + 64 KiB of the pattern: any slice of up to 64 KiB at any offset is in it.
fn pattern() -> Vec<u8> {
    (0..PERIOD + 64 * 1024)
        .map(|i| (i % PERIOD) as u8)
        .collect()
}

/// Writes `len` bytes of the pattern.
async fn send(w: &mut (impl AsyncWrite + Unpin), len: usize) {
    let p = pattern();
    let mut sent = 0;
    while sent < len {
        let n = WRITE.min(len - sent);
        w.write_all(&p[..n]).await.unwrap();
        sent += n;
    }
}

/// Reads until EOF, checking every byte against the pattern; returns how many came.
async fn receive_to_eof(r: &mut (impl AsyncRead + Unpin)) -> usize {
    let p = pattern();
    let mut buf = vec![0u8; 64 * 1024];
    let mut at = 0;
    loop {
        let n = r.read(&mut buf).await.unwrap();
        if n == 0 {
            return at;
        }
        let want = &p[at % PERIOD..at % PERIOD + n];
        if let Some(i) = (0..n).find(|&i| buf[i] != want[i]) {
            panic!(
                "byte {} is {}, not {}: lost or reordered",
                at + i,
                buf[i],
                want[i]
            );
        }
        at += n;
    }
}

/// Reads exactly `len` bytes of the pattern.
async fn receive(r: &mut (impl AsyncRead + Unpin), len: usize) {
    let p = pattern();
    let mut buf = vec![0u8; 64 * 1024];
    let mut at = 0;
    while at < len {
        let n = r.read(&mut buf[..(len - at).min(64 * 1024)]).await.unwrap();
        assert!(n > 0, "EOF after {at} of {len} bytes");
        let want = &p[at % PERIOD..at % PERIOD + n];
        if let Some(i) = (0..n).find(|&i| buf[i] != want[i]) {
            panic!(
                "byte {} is {}, not {}: lost or reordered",
                at + i,
                buf[i],
                want[i]
            );
        }
        at += n;
    }
}

/// An upstream that writes back what it reads, and half-closes after the client's EOF.
async fn echo_upstream(l: TcpListener) {
    loop {
        let (mut s, _) = l.accept().await.unwrap();
        spawn_local(async move {
            let (mut r, mut w) = s.split();
            let _ = tokio::io::copy(&mut r, &mut w).await;
            let _ = w.shutdown().await;
        });
    }
}

/// A `tcp_proxy` listener to `up_at`: by the defaults (splicing), or with `splice: false`.
fn proxy(splice: bool, up_at: SocketAddr) -> (Rc<Engine<TokioNet>>, SocketAddr) {
    let (listener, at) = bound();
    let off = if splice { "" } else { ", splice: false" };
    let yaml = format!(
        "listeners:\n  - name: t\n    address: {at}\n    tcp_proxy: {{ cluster: up{off} }}\n\
         clusters:\n  - {{ name: up, hosts: [ {{ address: \"{up_at}\" }} ] }}\n"
    );
    (serve(&yaml, listener), at)
}

/// Pipes and relay buffers a session holds now: (pipes in use, relay buffers out).
fn held(engine: &Engine<TokioNet>) -> (usize, isize) {
    (engine.pipes.in_use(), engine.http_buffers.relay_out())
}

/// Every open pipe is an empty one in the pool: none is held, none leaked.
fn assert_no_pipe_outside_the_pool(engine: &Engine<TokioNet>) {
    assert_eq!(engine.pipes.in_use(), 0);
    assert_eq!(engine.limits.pipes_open(), engine.pipes.pooled());
    assert!(engine.pipes.pooled_are_empty(), "a pooled pipe holds bytes");
}

/// Waits (up to 5 s) until `done`.
async fn until(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..500 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{what}: not within 5 s");
}

/// `len` bytes each way through an echo, written and read at once; returns the write half.
async fn round_trip(
    r: &mut tokio::net::tcp::OwnedReadHalf,
    mut w: tokio::net::tcp::OwnedWriteHalf,
    len: usize,
) -> tokio::net::tcp::OwnedWriteHalf {
    let writer = spawn_local(async move {
        send(&mut w, len).await;
        w
    });
    receive(r, len).await;
    writer.await.unwrap()
}

#[test]
fn an_idle_spliced_session_holds_no_pipe_and_no_buffer() {
    on_local_runtime(async {
        let (up, up_at) = bound();
        spawn_local(echo_upstream(up));
        let (engine, at) = proxy(true, up_at);
        let (mut r, w) = TcpStream::connect(at).await.unwrap().into_split();
        let w = round_trip(&mut r, w, 1 << 20).await;
        // Every byte back, the session open and idle: it holds nothing; the pipes it used wait
        // empty in the worker's pool.
        assert_eq!(held(&engine), (0, 0));
        assert_no_pipe_outside_the_pool(&engine);
        assert!(engine.pipes.pooled() >= 1, "the bytes went through pipes");
        assert_eq!(engine.stats().tcp_relay_spliced.load(Relaxed), 1);
        assert_eq!(engine.stats().tcp_relay_chunks_copied.load(Relaxed), 0);
        // Still a session: it takes a pipe again for the next bytes, and gives it back.
        let _w = round_trip(&mut r, w, 100_000).await;
        assert_eq!(held(&engine), (0, 0));
        assert!(
            engine.pipes.pooled() <= 2,
            "pooled pipes are reused: one per direction at most"
        );
        assert_no_pipe_outside_the_pool(&engine);
    });
}

/// Small request/response messages are copied (a splice costs more for them), bulk bytes are
/// spliced: a session of small round trips never takes a pipe, and one large transfer does.
#[test]
fn small_messages_are_copied_and_bulk_bytes_spliced() {
    on_local_runtime(async {
        let (up, up_at) = bound();
        spawn_local(echo_upstream(up));
        let (engine, at) = proxy(true, up_at);
        let (mut r, mut w) = TcpStream::connect(at).await.unwrap().into_split();
        for _ in 0..20 {
            w = round_trip(&mut r, w, 200).await;
        }
        assert_eq!(engine.limits.pipes_open(), 0, "no pipe for small messages");
        assert_eq!(engine.stats().tcp_relay_chunks_copied.load(Relaxed), 0);
        let _w = round_trip(&mut r, w, 4 << 20).await;
        assert!(
            engine.pipes.pooled() >= 1,
            "the bulk bytes went through pipes"
        );
        assert_eq!(held(&engine), (0, 0));
    });
}

/// A small message is read with one `recvfrom`, not two: the copying read that found fewer
/// bytes than its buffer took the socket's readiness with it ([`crate::splice`]'s
/// `read_drained`), so the direction waits for the next message instead of trying a read that
/// answers `EAGAIN` (without it: one empty read per message and direction, 40 here).
#[test]
fn a_small_message_costs_no_empty_read() {
    on_local_runtime(async {
        let (up, up_at) = bound();
        spawn_local(echo_upstream(up));
        let (engine, at) = proxy(true, up_at);
        let (mut r, mut w) = TcpStream::connect(at).await.unwrap().into_split();
        w = round_trip(&mut r, w, 200).await;
        crate::splice::EMPTY_READS.set(0);
        for _ in 0..20 {
            w = round_trip(&mut r, w, 200).await;
        }
        let empty = crate::splice::EMPTY_READS.get();
        assert!(
            empty <= 2,
            "{empty} reads found the socket empty in 20 request/response exchanges"
        );
        assert_eq!(engine.stats().tcp_relay_spliced.load(Relaxed), 1);
        drop(w);
    });
}

#[test]
fn an_idle_copied_session_holds_no_buffer() {
    on_local_runtime(async {
        let (up, up_at) = bound();
        spawn_local(echo_upstream(up));
        let (engine, at) = proxy(false, up_at);
        let (mut r, w) = TcpStream::connect(at).await.unwrap().into_split();
        let w = round_trip(&mut r, w, 1 << 20).await;
        assert_eq!(held(&engine), (0, 0));
        assert_eq!(engine.limits.pipes_open(), 0);
        assert_eq!(engine.stats().tcp_relay_copied.load(Relaxed), 1);
        let _w = round_trip(&mut r, w, 100_000).await;
        assert_eq!(held(&engine), (0, 0));
    });
}

/// An upstream that reads nothing until `resume`, then reads to EOF checking every byte, and
/// tells how many came.
async fn stalled_upstream(l: TcpListener, resume: Rc<Notify>, got: Rc<Cell<Option<usize>>>) {
    let (mut s, _) = l.accept().await.unwrap();
    resume.notified().await;
    got.set(Some(receive_to_eof(&mut s).await));
}

/// The client writes the pattern until told to stop (then half-closes) or its connection
/// fails; `sent` says how much went through.
fn writing_client(
    mut w: tokio::net::tcp::OwnedWriteHalf,
    stop: Rc<Cell<bool>>,
    sent: Rc<Cell<usize>>,
) -> tokio::task::JoinHandle<tokio::net::tcp::OwnedWriteHalf> {
    spawn_local(async move {
        let p = pattern();
        while !stop.get() && sent.get() < 1 << 30 {
            if w.write_all(&p[..WRITE]).await.is_err() {
                return w;
            }
            sent.set(sent.get() + WRITE);
        }
        let _ = w.shutdown().await;
        w
    })
}

/// Waits until the client's writes stall (no progress for 300 ms): every buffer between the
/// client and the stalled upstream is full.
async fn until_stalled(sent: &Cell<usize>) {
    let mut last = usize::MAX;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        if sent.get() == last {
            return;
        }
        last = sent.get();
    }
    panic!("the client's writes never stalled");
}

#[test]
fn a_slow_destination_keeps_its_pipe_or_buffer_until_drained_and_loses_no_byte() {
    super::SPLICE_EVERY_CHUNK.set(true);
    for splice in [true, false] {
        on_local_runtime(async {
            let (up, up_at) = bound();
            let resume = Rc::new(Notify::new());
            let got = Rc::new(Cell::new(None));
            spawn_local(stalled_upstream(up, resume.clone(), got.clone()));
            let (engine, at) = proxy(splice, up_at);
            let (_r, w) = TcpStream::connect(at).await.unwrap().into_split();
            let (stop, sent) = (Rc::new(Cell::new(false)), Rc::new(Cell::new(0)));
            let writer = writing_client(w, stop.clone(), sent.clone());
            until_stalled(&sent).await;
            // The upstream reads nothing: the chunk the relay could not move on stays with it
            // (a pipe when splicing, a buffer when copying) — one, for the one busy direction.
            // (Waited for: on a loaded machine the stall can be seen before the last chunk.)
            let want = if splice { (1, 0) } else { (0, 1) };
            until("the stalled chunk held", || held(&engine) == want).await;
            assert_eq!(held(&engine), want, "splice: {splice}");
            // The upstream reads again: every byte arrives, in order, and the session lets go.
            stop.set(true);
            resume.notify_one();
            let _w = writer.await.unwrap();
            until("the upstream reads to EOF", || got.get().is_some()).await;
            assert_eq!(got.get(), Some(sent.get()), "splice: {splice}");
            until("the relay lets go", || held(&engine) == (0, 0)).await;
            assert_no_pipe_outside_the_pool(&engine);
        });
    }
}

#[test]
fn a_pipe_left_holding_bytes_by_a_failed_destination_is_closed_not_pooled() {
    super::SPLICE_EVERY_CHUNK.set(true);
    on_local_runtime(async {
        let (up, up_at) = bound();
        let (engine, at) = proxy(true, up_at);
        let (_r, w) = TcpStream::connect(at).await.unwrap().into_split();
        let (upstream, _) = up.accept().await.unwrap();
        let (stop, sent) = (Rc::new(Cell::new(false)), Rc::new(Cell::new(0)));
        let _writer = writing_client(w, stop, sent.clone());
        until_stalled(&sent).await;
        assert_eq!(held(&engine), (1, 0));
        assert_eq!(engine.limits.pipes_open(), engine.pipes.pooled() + 1);
        // The upstream resets: the session ends with bytes left in its pipe, which is closed
        // (its share of the budget given back), not put in the pool (the other direction may
        // have taken and given back an empty one on the reset's readiness).
        socket2::SockRef::from(&upstream)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
        drop(upstream);
        let reset = CloseReason::UpstreamReset.index();
        until("the session ends", || {
            engine.stats().tcp_session_closed[reset].load(Relaxed) == 1
        })
        .await;
        assert_eq!(held(&engine), (0, 0));
        assert_no_pipe_outside_the_pool(&engine);
    });
}

#[test]
fn a_session_without_pipes_copies_each_chunk_and_takes_a_pipe_again_once_one_is_free() {
    on_local_runtime(async {
        let (up, up_at) = bound();
        spawn_local(echo_upstream(up));
        let (engine, at) = proxy(true, up_at);
        // The process's pipe budget is spent: every chunk goes by copy, every byte in order.
        engine.limits.set_pipes_max(0);
        let (mut r, w) = TcpStream::connect(at).await.unwrap().into_split();
        let w = round_trip(&mut r, w, 1 << 20).await;
        let copied = engine.stats().tcp_relay_chunks_copied.load(Relaxed);
        assert!(copied >= 2, "{copied} chunks copied");
        assert_eq!(engine.limits.pipes_open(), 0);
        assert_eq!(held(&engine), (0, 0));
        // One pipe for the process: the same session splices again, and a chunk that finds
        // the pipe taken by the other direction is copied — both ways at once, every byte in
        // order.
        engine.limits.set_pipes_max(1);
        let w = round_trip(&mut r, w, 8 << 20).await;
        assert_eq!(
            engine.limits.pipes_open(),
            1,
            "the session took a pipe again"
        );
        assert!(
            engine.stats().tcp_relay_chunks_copied.load(Relaxed) > copied,
            "no chunk found the only pipe taken"
        );
        assert_eq!(held(&engine), (0, 0));
        assert_no_pipe_outside_the_pool(&engine);
        drop((r, w));
        assert_eq!(engine.stats().tcp_relay_spliced.load(Relaxed), 1);
    });
}

/// An upstream that either reads the request to EOF then answers `answer` bytes and closes
/// (`answer_first` false), or answers and half-closes first, then reads the request to EOF;
/// returns the request's length.
async fn one_exchange_upstream(l: TcpListener, answer: usize, answer_first: bool) -> usize {
    let (mut s, _) = l.accept().await.unwrap();
    let (mut r, mut w) = s.split();
    if answer_first {
        send(&mut w, answer).await;
        w.shutdown().await.unwrap();
        receive_to_eof(&mut r).await
    } else {
        let got = receive_to_eof(&mut r).await;
        send(&mut w, answer).await;
        w.shutdown().await.unwrap();
        got
    }
}

#[test]
fn half_closes_each_way_deliver_every_byte_then_complete_holding_nothing() {
    // (splice, pipe budget) — copying, splicing, splicing with every chunk copied.
    for (splice, budget) in [(false, None), (true, None), (true, Some(0))] {
        for answer_first in [false, true] {
            on_local_runtime(async {
                let (up, up_at) = bound();
                let (request, answer) = (1_000_003, 3 << 20);
                let upstream = spawn_local(one_exchange_upstream(up, answer, answer_first));
                let (engine, at) = proxy(splice, up_at);
                if let Some(b) = budget {
                    engine.limits.set_pipes_max(b);
                }
                let (mut r, mut w) = TcpStream::connect(at).await.unwrap().into_split();
                let case =
                    format!("splice {splice}, budget {budget:?}, answer first {answer_first}");
                if answer_first {
                    // The upstream's FIN reaches the client after its whole answer, while the
                    // client still sends.
                    assert_eq!(receive_to_eof(&mut r).await, answer, "{case}");
                    send(&mut w, request).await;
                    w.shutdown().await.unwrap();
                } else {
                    send(&mut w, request).await;
                    w.shutdown().await.unwrap();
                    assert_eq!(receive_to_eof(&mut r).await, answer, "{case}");
                }
                assert_eq!(upstream.await.unwrap(), request, "{case}");
                let completed = CloseReason::Completed.index();
                until("the session completes", || {
                    engine.stats().tcp_session_closed[completed].load(Relaxed) == 1
                })
                .await;
                assert_eq!(held(&engine), (0, 0), "{case}");
                assert_no_pipe_outside_the_pool(&engine);
                if budget == Some(0) {
                    assert!(engine.stats().tcp_relay_chunks_copied.load(Relaxed) > 0);
                }
            });
        }
    }
}

/// A draining engine pools no pipe: those pooled are closed at once and one given back is
/// closed, so their descriptors and budget go to the next generation during the drain.
#[test]
fn a_draining_pool_closes_its_pipes_and_pools_none() {
    let config = sluice_core::config::Config::from_yaml(
        "listeners:\n  - { name: e, address: 127.0.0.1:1, echo: {} }\n",
    )
    .unwrap();
    let limits = std::sync::Arc::new(crate::limits::ProcessLimits::new(&config));
    limits.set_pipes_max(8);
    let pool = super::PipePool::new(limits.clone());
    let (a, b) = (pool.take().unwrap(), pool.take().unwrap());
    pool.give(a, true);
    assert_eq!((pool.pooled(), limits.pipes_open()), (1, 2));
    pool.stop_pooling();
    assert_eq!((pool.pooled(), limits.pipes_open()), (0, 1));
    pool.give(b, true);
    assert_eq!((pool.pooled(), limits.pipes_open()), (0, 0));
}
