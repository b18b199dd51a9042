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

use std::net::SocketAddr;

use bytes::{BufMut, Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use tokio::net::{TcpListener, TcpStream};

const PATH: &str = "/bench.Echo/Call";
const GRPC: &str = "application/grpc";

fn usage() -> ! {
    eprintln!(
        "usage: grpc-echo serve --listen ADDR\n       grpc-echo probe --target ADDR [--payload N]\n       grpc-echo frame --out PATH [--payload N]"
    );
    std::process::exit(2);
}

fn arg<T: std::str::FromStr>(args: &[String], name: &str, default: Option<T>) -> T {
    match args.iter().position(|a| a == name) {
        Some(i) => args
            .get(i + 1)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| usage()),
        None => default.unwrap_or_else(|| usage()),
    }
}

/// One uncompressed gRPC message of `payload` bytes (a recognisable pattern, not zeros).
fn message(payload: usize) -> Bytes {
    let mut b = BytesMut::with_capacity(5 + payload);
    b.put_u8(0);
    b.put_u32(u32::try_from(payload).expect("payload under 4 GiB"));
    b.extend((0..payload).map(|i| b'a' + (i % 26) as u8));
    b.freeze()
}

/// Whether `body` is exactly one uncompressed, length-prefixed gRPC message.
fn well_formed(body: &[u8]) -> bool {
    body.len() >= 5
        && body[0] == 0
        && u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize == body.len() - 5
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    match args.first().map(String::as_str) {
        Some("serve") => {
            let listen: SocketAddr = arg(&args, "--listen", None);
            rt.block_on(serve(listen));
        }
        Some("probe") => {
            let target: SocketAddr = arg(&args, "--target", None);
            let payload: usize = arg(&args, "--payload", Some(64));
            match rt.block_on(probe(target, payload)) {
                Ok(()) => println!("ok"),
                Err(e) => {
                    eprintln!("grpc-echo probe {target}: {e}");
                    std::process::exit(1);
                }
            }
        }
        Some("frame") => {
            let out: String = arg(&args, "--out", None);
            let payload: usize = arg(&args, "--payload", Some(64));
            std::fs::write(&out, message(payload))
                .unwrap_or_else(|e| panic!("cannot write {out}: {e}"));
        }
        _ => usage(),
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

async fn probe(target: SocketAddr, payload: usize) -> Result<(), String> {
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
