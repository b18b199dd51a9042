//! `bolt-load`: a Bolt v1 load generator and a Bolt echo server, for measuring the Bolt proxy
//! on loopback (benches/loopback/bolt_bench.py drives both).
//!
//! - `bolt-load serve --listen ADDR`: answers every request with status 0 and the request's
//!   content as the response content, same request id; answers heartbeats; ignores oneway
//!   requests. One current-thread runtime (pin it with `taskset`).
//! - `bolt-load load --target ADDR --connections C --pipeline P --seconds S [--payload N]
//!   [--service NAME]`: C connections, each keeping P requests in flight (pipelined: a new request
//!   is written as soon as a response arrives), for S seconds. Every response must carry the id of
//!   a request in flight on its connection and status 0, else it counts as an error. Prints one
//!   JSON line: requests, errors, requests/s, latency p50/p99 (µs). Defaults: 32 connections,
//!   pipeline 8, 10 seconds, 64-byte content, service `com.example.EchoService:1.0`.
//!
//! The arguments are parsed by clap (`bolt-load load --help`): a bad, missing or unknown one is
//! an error naming it, exit status 2.
//!
//! Frames are encoded and decoded with `sluice_core::bolt` (the same codec the proxy uses — the
//! real-peer tests use sofa-rpc-node; this tool is for throughput).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use sluice_core::bolt::{self, RequestSpec, ResponseStatus, Version};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const MAX_FRAME: usize = 16 << 20;

/// The command line (`--help` prints it).
#[derive(Parser)]
#[command(
    name = "bolt-load",
    version,
    about = "A Bolt v1 load generator and echo server for the loopback benchmark (benches/loopback/harness.py --mode bolt)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve Bolt v1: echo every request's content with status 0.
    ///
    /// Answers every request with status 0, its content and its id; answers heartbeats;
    /// ignores oneway requests. One thread: pin it with taskset.
    Serve {
        /// The address to listen on (IP:PORT; port 0: any free port, printed on stderr).
        #[arg(long, value_name = "ADDR")]
        listen: SocketAddr,
    },
    /// Load a Bolt server or proxy, then print one JSON line of figures.
    ///
    /// C connections, each keeping P requests in flight, for S seconds; the JSON line has
    /// requests, errors, seconds, rps, p50_us, p99_us (and the connections, pipeline and
    /// payload run). A response that is not status 0 with the id of a request in flight on its
    /// connection counts as an error.
    Load {
        /// The server or proxy to load (IP:PORT).
        #[arg(long, value_name = "ADDR")]
        target: SocketAddr,
        /// Connections, opened at the start and kept for the whole run.
        #[arg(long, value_name = "C", default_value_t = 32)]
        connections: usize,
        /// Requests in flight on each connection (a new one is written as each response arrives).
        #[arg(long, value_name = "P", default_value_t = 8)]
        pipeline: usize,
        /// Seconds to keep sending new requests (0: each connection sends its pipeline once).
        #[arg(long, value_name = "S", default_value_t = 10)]
        seconds: u64,
        /// Bytes of each request's content.
        #[arg(long, value_name = "N", default_value_t = 64)]
        payload: usize,
        /// The `service` header of each request (what the proxy routes on).
        #[arg(
            long,
            value_name = "NAME",
            default_value = "com.example.EchoService:1.0"
        )]
        service: String,
    },
}

fn main() {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    match cli.command {
        Command::Serve { listen } => rt.block_on(serve(listen)),
        Command::Load {
            target,
            connections,
            pipeline,
            seconds,
            payload,
            service,
        } => {
            let local = tokio::task::LocalSet::new();
            let report = local.block_on(
                &rt,
                load(
                    target,
                    connections,
                    pipeline,
                    Duration::from_secs(seconds),
                    payload,
                    service,
                ),
            );
            println!("{report}");
        }
    }
}

async fn serve(listen: SocketAddr) {
    let listener = TcpListener::bind(listen).await.expect("bind");
    eprintln!(
        "bolt-load serving on {}",
        listener.local_addr().expect("addr")
    );
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(serve_conn(stream));
    }
}

async fn serve_conn(mut s: TcpStream) {
    let mut buf = vec![0u8; 64 * 1024];
    let (mut start, mut end) = (0usize, 0usize);
    let mut out = Vec::with_capacity(64 * 1024);
    loop {
        // Answer every complete frame in the buffer, then write once.
        loop {
            match bolt::decode(&buf[start..end], MAX_FRAME) {
                Ok(Some(f)) => {
                    if f.is_heartbeat() {
                        bolt::encode_heartbeat_reply(&mut out, &f);
                    } else if f.kind == bolt::Kind::Request {
                        let _ = bolt::encode_response(
                            &mut out,
                            f.version,
                            f.request_id,
                            f.codec,
                            ResponseStatus::Success,
                            b"",
                            &[],
                            f.content,
                        );
                    }
                    start += f.len;
                }
                Ok(None) => break,
                Err(e) => {
                    eprintln!("bolt-load serve: bad frame: {e}");
                    return;
                }
            }
        }
        if !out.is_empty() {
            if s.write_all(&out).await.is_err() {
                return;
            }
            out.clear();
        }
        if start == end {
            start = 0;
            end = 0;
        } else if end == buf.len() {
            buf.copy_within(start..end, 0);
            end -= start;
            start = 0;
            if end == buf.len() {
                buf.resize(buf.len() * 2, 0);
            }
        }
        match s.read(&mut buf[end..]).await {
            Ok(0) | Err(_) => return,
            Ok(n) => end += n,
        }
    }
}

#[derive(Default)]
struct Tally {
    requests: u64,
    errors: u64,
    latencies_us: Vec<u32>,
}

async fn load(
    target: SocketAddr,
    connections: usize,
    pipeline: usize,
    duration: Duration,
    payload: usize,
    service: String,
) -> String {
    let until = Instant::now() + duration;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let service = service.clone();
        tasks.push(tokio::task::spawn_local(async move {
            one_connection(target, pipeline, until, payload, &service).await
        }));
    }
    let mut total = Tally::default();
    for t in tasks {
        if let Ok(t) = t.await {
            total.requests += t.requests;
            total.errors += t.errors;
            total.latencies_us.extend(t.latencies_us);
        }
    }
    let secs = started.elapsed().as_secs_f64();
    total.latencies_us.sort_unstable();
    let q = |p: f64| -> u32 {
        if total.latencies_us.is_empty() {
            return 0;
        }
        let i = ((p * total.latencies_us.len() as f64) as usize).min(total.latencies_us.len() - 1);
        total.latencies_us[i]
    };
    format!(
        "{{\"requests\":{},\"errors\":{},\"seconds\":{:.3},\"rps\":{:.0},\"p50_us\":{},\"p99_us\":{},\"connections\":{connections},\"pipeline\":{pipeline},\"payload\":{payload}}}",
        total.requests,
        total.errors,
        secs,
        total.requests as f64 / secs,
        q(0.5),
        q(0.99)
    )
}

async fn one_connection(
    target: SocketAddr,
    pipeline: usize,
    until: Instant,
    payload: usize,
    service: &str,
) -> Tally {
    let mut tally = Tally::default();
    let Ok(mut s) = TcpStream::connect(target).await else {
        tally.errors += 1;
        return tally;
    };
    let _ = s.set_nodelay(true);
    let content = vec![b'x'; payload];
    let header: [(&[u8], Option<&[u8]>); 1] = [(b"service", Some(service.as_bytes()))];
    // In-flight requests by slot: (request id, sent at).
    let mut inflight: Vec<(u32, Instant)> = Vec::with_capacity(pipeline);
    let mut next_id: u32 = 1;
    let mut out = Vec::with_capacity(pipeline * (64 + payload));
    let send = |out: &mut Vec<u8>, inflight: &mut Vec<(u32, Instant)>, next_id: &mut u32| {
        let spec = RequestSpec {
            version: Version::V1,
            oneway: false,
            cmd_code: bolt::CMD_REQUEST,
            cmd_version: bolt::CMD_VERSION,
            request_id: *next_id,
            codec: bolt::CODEC_HESSIAN2,
            timeout_ms: 3000,
            class: b"com.alipay.sofa.rpc.core.request.SofaRequest",
            header: &header,
            content: &content,
        };
        bolt::encode_request(out, &spec).expect("encodes");
        inflight.push((*next_id, Instant::now()));
        *next_id = next_id.wrapping_add(1).max(1);
    };
    for _ in 0..pipeline {
        send(&mut out, &mut inflight, &mut next_id);
    }
    if s.write_all(&out).await.is_err() {
        tally.errors += pipeline as u64;
        return tally;
    }
    out.clear();
    let mut buf = vec![0u8; 64 * 1024];
    let (mut start, mut end) = (0usize, 0usize);
    while !inflight.is_empty() {
        loop {
            match bolt::decode(&buf[start..end], MAX_FRAME) {
                Ok(Some(f)) => {
                    start += f.len;
                    match inflight.iter().position(|(id, _)| *id == f.request_id) {
                        Some(i) if f.response_status() == Some(ResponseStatus::Success) => {
                            let (_, sent) = inflight.swap_remove(i);
                            tally.requests += 1;
                            tally
                                .latencies_us
                                .push(sent.elapsed().as_micros().min(u128::from(u32::MAX)) as u32);
                        }
                        Some(i) => {
                            inflight.swap_remove(i);
                            tally.errors += 1;
                        }
                        None => tally.errors += 1,
                    }
                    if Instant::now() < until {
                        send(&mut out, &mut inflight, &mut next_id);
                    }
                }
                Ok(None) => break,
                Err(_) => {
                    tally.errors += inflight.len() as u64;
                    return tally;
                }
            }
        }
        if !out.is_empty() {
            if s.write_all(&out).await.is_err() {
                tally.errors += inflight.len() as u64;
                return tally;
            }
            out.clear();
        }
        if inflight.is_empty() {
            break;
        }
        if start == end {
            start = 0;
            end = 0;
        } else if end == buf.len() {
            buf.copy_within(start..end, 0);
            end -= start;
            start = 0;
        }
        let deadline = until + Duration::from_secs(5);
        match tokio::time::timeout_at(deadline.into(), s.read(&mut buf[end..])).await {
            Ok(Ok(n)) if n > 0 => end += n,
            _ => {
                tally.errors += inflight.len() as u64;
                return tally;
            }
        }
    }
    tally
}
