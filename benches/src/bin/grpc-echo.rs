//! `grpc-echo`: a fast gRPC unary echo server over HTTP/2 cleartext (h2c), and a one-call probe,
//! for loading a proxy with gRPC on loopback (benches/loopback/h2load.sh drives it; h2load is the
//! load generator). grpc-js and grpcio answer a few thousand calls per second per core, far less
//! than a proxy forwards, so the benchmark would measure them; this server is the `h2` crate on
//! one current-thread tokio runtime and does nothing per call beyond the framing.
//!
//! - `grpc-echo serve --listen ADDR`: answers every `POST /bench.Echo/Call` with
//!   `content-type: application/grpc` whose body is exactly one well-formed gRPC message
//!   (1-byte compressed flag 0, 4-byte big-endian length, that many bytes) with `:status 200`,
//!   `content-type: application/grpc`, the same message as the response body, and the trailers
//!   `grpc-status: 0` — the framing a gRPC unary call has on the wire. Anything else (another
//!   path or method, another content type, a malformed or compressed message) gets `:status 400`
//!   and no trailers: deliberately not gRPC's "HTTP 200 + grpc-status" error form, so that the
//!   load generator, which counts HTTP statuses only, counts it as a failure. Pin it with
//!   `taskset`.
//! - `grpc-echo probe --target ADDR [--payload N]`: makes one call (the request the benchmark
//!   sends) and checks the whole answer: status 200, `content-type: application/grpc`, the
//!   message echoed byte for byte, trailers with `grpc-status: 0`. Prints `ok` and exits 0, or
//!   says what differed and exits 1. The benchmark probes each proxy before loading it, so a
//!   proxy that drops trailers or mangles the body fails the run instead of being measured.
//! - `grpc-echo frame --payload N --out PATH`: writes the request body h2load sends (`-d PATH`):
//!   one gRPC message of N bytes.
//!
//! `--payload` defaults to 64. The arguments are parsed by clap (`grpc-echo --help`, `grpc-echo
//! probe --help`): a bad, missing or unknown one is an error naming it, exit status 2.

use std::net::SocketAddr;
use std::path::PathBuf;

use bytes::{BufMut, Bytes, BytesMut};
use clap::{Parser, Subcommand};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use tokio::net::{TcpListener, TcpStream};

const PATH: &str = "/bench.Echo/Call";
const GRPC: &str = "application/grpc";

/// The command line (`--help` prints it).
#[derive(Parser)]
#[command(
    name = "grpc-echo",
    version,
    about = "A gRPC unary echo server over h2c, a one-call probe of it, and the request body h2load sends (benches/loopback/h2load.sh)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve gRPC unary echo calls over h2c.
    ///
    /// Answers every `POST /bench.Echo/Call` (content-type application/grpc, one uncompressed
    /// gRPC message) with status 200, the message echoed and the trailer `grpc-status: 0`;
    /// anything else with status 400. One thread: pin it with taskset.
    Serve {
        /// The address to listen on (IP:PORT).
        #[arg(long, value_name = "ADDR")]
        listen: SocketAddr,
    },
    /// Make one call and check the whole answer: prints `ok` (exit 0) or what differed (exit 1).
    ///
    /// The answer must have status 200, content-type application/grpc, the message echoed
    /// byte for byte and the trailer `grpc-status: 0`.
    Probe {
        /// The server or proxy to call (IP:PORT).
        #[arg(long, value_name = "ADDR")]
        target: SocketAddr,
        /// Bytes of the request's gRPC message (after its 5-byte prefix).
        #[arg(long, value_name = "N", default_value_t = 64)]
        payload: u32,
    },
    /// Write the request body h2load sends (its `-d PATH`): one gRPC message.
    Frame {
        /// The file to write.
        #[arg(long, value_name = "PATH")]
        out: PathBuf,
        /// Bytes of the gRPC message (after its 5-byte prefix).
        #[arg(long, value_name = "N", default_value_t = 64)]
        payload: u32,
    },
}

/// One uncompressed gRPC message of `payload` bytes (a recognisable pattern, not zeros).
fn message(payload: u32) -> Bytes {
    let len = usize::try_from(payload).expect("a u32 fits in usize");
    let mut b = BytesMut::with_capacity(5 + len);
    b.put_u8(0);
    b.put_u32(payload);
    b.extend((0..len).map(|i| b'a' + (i % 26) as u8));
    b.freeze()
}

/// Whether `body` is exactly one uncompressed, length-prefixed gRPC message.
fn well_formed(body: &[u8]) -> bool {
    body.len() >= 5
        && body[0] == 0
        && u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize == body.len() - 5
}

fn main() {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    match cli.command {
        Command::Serve { listen } => rt.block_on(serve(listen)),
        Command::Probe { target, payload } => match rt.block_on(probe(target, payload)) {
            Ok(()) => println!("ok"),
            Err(e) => {
                eprintln!("grpc-echo probe {target}: {e}");
                std::process::exit(1);
            }
        },
        Command::Frame { out, payload } => std::fs::write(&out, message(payload))
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", out.display())),
    }
}

async fn serve(listen: SocketAddr) {
    let listener = TcpListener::bind(listen)
        .await
        .unwrap_or_else(|e| panic!("cannot listen on {listen}: {e}"));
    loop {
        let (sock, _) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("accept: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = sock.set_nodelay(true);
        tokio::spawn(async move {
            let mut conn = match h2::server::Builder::new()
                .max_concurrent_streams(1000)
                .handshake::<_, Bytes>(sock)
                .await
            {
                Ok(c) => c,
                Err(_) => return,
            };
            while let Some(Ok((req, respond))) = conn.accept().await {
                tokio::spawn(call(req, respond));
            }
        });
    }
}

/// One call: read the whole request body, answer it (see the module doc).
async fn call(req: Request<h2::RecvStream>, mut respond: h2::server::SendResponse<Bytes>) {
    let grpc = req.method() == Method::POST
        && req.uri().path() == PATH
        && req
            .headers()
            .get(http::header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(GRPC.as_bytes()));
    let mut body = req.into_body();
    let mut buf = BytesMut::new();
    let mut first: Option<Bytes> = None;
    while let Some(chunk) = body.data().await {
        let Ok(chunk) = chunk else { return };
        let _ = body.flow_control().release_capacity(chunk.len());
        // The usual case, one DATA frame: answer with it as it is, no copy.
        match first.take() {
            None if buf.is_empty() => first = Some(chunk),
            prev => {
                if let Some(p) = prev {
                    buf.extend_from_slice(&p);
                }
                buf.extend_from_slice(&chunk);
            }
        }
    }
    let msg = first.unwrap_or_else(|| buf.freeze());
    if !grpc || !well_formed(&msg) {
        let head = Response::builder()
            .status(StatusCode::BAD_REQUEST)
            .body(())
            .expect("response head");
        let _ = respond.send_response(head, true);
        return;
    }
    let head = Response::builder()
        .status(StatusCode::OK)
        .header(http::header::CONTENT_TYPE, GRPC)
        .body(())
        .expect("response head");
    let Ok(mut send) = respond.send_response(head, false) else {
        return;
    };
    if send.send_data(msg, false).is_err() {
        return;
    }
    let mut trailers = HeaderMap::with_capacity(1);
    trailers.insert("grpc-status", HeaderValue::from_static("0"));
    let _ = send.send_trailers(trailers);
}

async fn probe(target: SocketAddr, payload: u32) -> Result<(), String> {
    let sock = TcpStream::connect(target)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let (client, conn) = h2::client::handshake(sock)
        .await
        .map_err(|e| format!("HTTP/2 handshake: {e}"))?;
    tokio::spawn(conn);
    let mut client = client.ready().await.map_err(|e| format!("ready: {e}"))?;
    let req = Request::builder()
        .method(Method::POST)
        .uri(format!("http://{target}{PATH}"))
        .header(http::header::CONTENT_TYPE, GRPC)
        .header("te", "trailers")
        .body(())
        .expect("request head");
    let sent = message(payload);
    let (resp, mut send) = client
        .send_request(req, false)
        .map_err(|e| format!("send request: {e}"))?;
    send.send_data(sent.clone(), true)
        .map_err(|e| format!("send body: {e}"))?;
    let resp = resp.await.map_err(|e| format!("response: {e}"))?;
    if resp.status() != StatusCode::OK {
        return Err(format!("status {} (want 200)", resp.status()));
    }
    let ct = resp.headers().get(http::header::CONTENT_TYPE).cloned();
    if ct.as_ref().map(HeaderValue::as_bytes) != Some(GRPC.as_bytes()) {
        return Err(format!("content-type {ct:?} (want {GRPC})"));
    }
    let mut body = resp.into_body();
    let mut got = BytesMut::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.map_err(|e| format!("response body: {e}"))?;
        let _ = body.flow_control().release_capacity(chunk.len());
        got.extend_from_slice(&chunk);
    }
    if got != sent {
        return Err(format!(
            "response body of {} bytes is not the {} bytes sent",
            got.len(),
            sent.len()
        ));
    }
    let trailers = body
        .trailers()
        .await
        .map_err(|e| format!("trailers: {e}"))?
        .ok_or("no trailers (want grpc-status: 0)")?;
    match trailers.get("grpc-status").map(HeaderValue::as_bytes) {
        Some(b"0") => Ok(()),
        other => Err(format!(
            "trailer grpc-status {:?} (want \"0\")",
            other.map(String::from_utf8_lossy)
        )),
    }
}
