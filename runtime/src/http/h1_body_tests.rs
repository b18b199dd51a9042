//! Issue 16: an HTTP/1.1 client's request body decoded by its connection into the pieces an
//! HTTP/2 stream's comes in (`body::RequestBody`), and framed for the upstream once, by the
//! same framer: the exact bytes an upstream reads for a `content-length` body, a chunked one
//! with trailers (re-framed, its trailer section sifted), held or streamed, and the pipelined
//! requests after a body; a chunked body scanned by one decoder, once.

use std::time::Duration;

use sluice_core::http1::{Chunked, ChunkedDecoder};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};

use crate::http::REPLAY_LIMIT;
use crate::http::body::HELD_MAX;
use crate::http::body::{REQUEST_CHUNK_BYTES_SCANNED, REQUEST_CHUNK_SCANS, UPLOAD_WRITES};
use crate::test_support::{bound, on_local_runtime, serve};

/// An HTTP/1.1 upstream that reads each request whole — its head, then its body by its framing
/// (`content-length`, or chunked up to the end of its trailer section) — passes on its bytes
/// as they came (head and body) and answers `200` with the request's path as its body. Every
/// read's bytes go to `reads` too.
async fn whole_request_upstream(
    l: tokio::net::TcpListener,
    requests: UnboundedSender<Vec<u8>>,
    reads: UnboundedSender<Vec<u8>>,
) {
    loop {
        let (mut s, _) = l.accept().await.unwrap();
        let requests = requests.clone();
        let reads = reads.clone();
        tokio::task::spawn_local(async move {
            let mut have = Vec::new();
            let mut buf = vec![0u8; 4096];
            loop {
                // One whole request at the front of `have`, or a read for more.
                if let Some(h) = have.windows(4).position(|w| w == b"\r\n\r\n") {
                    let head = String::from_utf8_lossy(&have[..h]).to_lowercase();
                    let body = &have[h + 4..];
                    let length = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .map(|v| v.trim().parse::<usize>().unwrap());
                    let body_len = if head.contains("transfer-encoding: chunked") {
                        match ChunkedDecoder::new(1 << 16).feed(body).unwrap() {
                            Chunked::Done { consumed } => Some(consumed),
                            Chunked::NeedMore { .. } => None,
                        }
                    } else {
                        let n = length.unwrap_or(0);
                        (body.len() >= n).then_some(n)
                    };
                    if let Some(n) = body_len {
                        let whole: Vec<u8> = have.drain(..h + 4 + n).collect();
                        let path = head.split(' ').nth(1).unwrap_or("").to_owned();
                        let _ = requests.send(whole);
                        let answer = format!(
                            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{path}",
                            path.len()
                        );
                        if s.write_all(answer.as_bytes()).await.is_err() {
                            return;
                        }
                        continue;
                    }
                }
                let n = s.read(&mut buf).await.unwrap_or(0);
                if n == 0 {
                    return;
                }
                have.extend_from_slice(&buf[..n]);
                let _ = reads.send(buf[..n].to_vec());
            }
        });
    }
}

/// Waits until the upstream's reads so far (gathered in `got`) hold `want`.
async fn upstream_got(reads: &mut UnboundedReceiver<Vec<u8>>, got: &mut Vec<u8>, want: &str) {
    while !got.windows(want.len()).any(|w| w == want.as_bytes()) {
        let read = tokio::time::timeout(Duration::from_secs(10), reads.recv())
            .await
            .unwrap_or_else(|_| panic!("the upstream never got {want:?}"))
            .expect("the upstream is up");
        got.extend_from_slice(&read);
    }
}

/// The next request the upstream read whole: its request line, and its body (after the head),
/// as text.
async fn next_request(requests: &mut UnboundedReceiver<Vec<u8>>) -> (String, String) {
    let whole = tokio::time::timeout(Duration::from_secs(10), requests.recv())
        .await
        .expect("the upstream got a request in time")
        .expect("the upstream is up");
    let line = whole.windows(2).position(|w| w == b"\r\n").unwrap();
    let h = whole.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    (
        String::from_utf8_lossy(&whole[..line]).into_owned(),
        String::from_utf8_lossy(&whole[h + 4..]).into_owned(),
    )
}

/// The next request's body, its request line `line`.
async fn next_body(requests: &mut UnboundedReceiver<Vec<u8>>, line: &str) -> String {
    let (got, body) = next_request(requests).await;
    assert_eq!(got, line);
    body
}

/// Reads `n` whole answers (each `content-length` framed) from `client`; returns their bodies.
async fn answers(client: &mut tokio::net::TcpStream, n: usize) -> Vec<String> {
    let mut have = Vec::new();
    let mut buf = vec![0u8; 4096];
    let mut bodies = Vec::new();
    while bodies.len() < n {
        if let Some(h) = have.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&have[..h]).to_lowercase();
            assert!(head.starts_with("http/1.1 200"), "{head}");
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map(|v| v.trim().parse().unwrap())
                .unwrap();
            if have.len() >= h + 4 + len {
                bodies.push(String::from_utf8_lossy(&have[h + 4..h + 4 + len]).into_owned());
                have.drain(..h + 4 + len);
                continue;
            }
        }
        let n = tokio::time::timeout(Duration::from_secs(10), client.read(&mut buf))
            .await
            .expect("answered in time")
            .unwrap();
        assert!(n > 0, "the proxy closed the connection; got {bodies:?}");
        have.extend_from_slice(&buf[..n]);
    }
    bodies
}

const CONFIG: &str = r#"
listeners:
  - name: web
    address: {at}
    http:
      virtual_hosts:
        - name: all
          domains: ["*"]
          routes: [ { match: { prefix: / }, route: { cluster: up } } ]
clusters:
  - name: up
    hosts: [ { address: "{up_at}" } ]
"#;

/// Three requests in one write — a `content-length` body, a chunked body with a chunk
/// extension and trailers (one of them a field a trailer must not carry), a GET — each reach
/// the upstream with exactly their bodies, framed for it once: the `content-length` payload as
/// it came, the chunked body re-framed from its decoded pieces (the extension gone, the
/// forbidden trailer field sifted out), and the pipelined requests after a body are served in
/// order on the same connection. The chunked body is scanned by one decoder, its bytes once.
#[test]
fn an_http1_request_body_is_decoded_into_pieces_and_framed_once() {
    on_local_runtime(async {
        let (up, up_at) = bound();
        let (tx, mut requests) = unbounded_channel();
        let (reads_tx, _reads) = unbounded_channel();
        tokio::task::spawn_local(whole_request_upstream(up, tx, reads_tx));
        let (listener, at) = bound();
        let yaml = CONFIG
            .replace("{at}", &at.to_string())
            .replace("{up_at}", &up_at.to_string());
        let _engine = serve(&yaml, listener);
        REQUEST_CHUNK_SCANS.with(|n| n.set(0));
        REQUEST_CHUNK_BYTES_SCANNED.with(|n| n.set(0));

        let chunked =
            "3;ext=1\r\nabc\r\n2\r\nde\r\n0\r\nx-checksum: 1\r\nauthorization: no\r\n\r\n";
        let pipelined = format!(
            "POST /a HTTP/1.1\r\nhost: svc\r\ncontent-length: 5\r\n\r\nhello\
             POST /b HTTP/1.1\r\nhost: svc\r\ntransfer-encoding: chunked\r\n\r\n{chunked}\
             GET /c HTTP/1.1\r\nhost: svc\r\n\r\n"
        );
        let mut client = tokio::net::TcpStream::connect(at).await.unwrap();
        client.write_all(pipelined.as_bytes()).await.unwrap();
        assert_eq!(answers(&mut client, 3).await, ["/a", "/b", "/c"]);
        assert_eq!(next_body(&mut requests, "POST /a HTTP/1.1").await, "hello");
        assert_eq!(
            next_body(&mut requests, "POST /b HTTP/1.1").await,
            "3\r\nabc\r\n2\r\nde\r\n0\r\nx-checksum: 1\r\n\r\n"
        );
        assert_eq!(next_body(&mut requests, "GET /c HTTP/1.1").await, "");
        assert_eq!(REQUEST_CHUNK_SCANS.with(std::cell::Cell::get), 1);
        assert_eq!(
            REQUEST_CHUNK_BYTES_SCANNED.with(std::cell::Cell::get),
            chunked.len() as u64,
            "the chunked body's bytes were not scanned exactly once"
        );
    });
}

/// A chunked body that streams (its first piece goes upstream before the client sends the
/// rest, which comes in pieces cut anywhere — inside a chunk's data, inside a size line, inside
/// the trailer section) reaches the upstream framed once from its decoded pieces, each of the
/// client's chunks one chunk of the same size (a chunk's start goes before its end came), and
/// the request after it on the connection is served. Scanned once, by one
/// decoder, though the body was partly held first and then streamed.
#[test]
fn a_streamed_http1_chunked_body_is_framed_once_from_its_pieces() {
    on_local_runtime(async {
        let (up, up_at) = bound();
        let (tx, mut requests) = unbounded_channel();
        let (reads_tx, mut reads) = unbounded_channel();
        tokio::task::spawn_local(whole_request_upstream(up, tx, reads_tx));
        let (listener, at) = bound();
        let yaml = CONFIG
            .replace("{at}", &at.to_string())
            .replace("{up_at}", &up_at.to_string());
        let _engine = serve(&yaml, listener);
        REQUEST_CHUNK_SCANS.with(|n| n.set(0));
        REQUEST_CHUNK_BYTES_SCANNED.with(|n| n.set(0));

        // Each part, and what the upstream has once it went (before the next is sent).
        let parts: [(&str, &str); 4] = [
            (
                "POST /s HTTP/1.1\r\nhost: svc\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhel",
                "\r\n5\r\nhel",
            ),
            ("lo\r\n1", "hello\r\n"),
            (
                "0\r\n0123456789abcdef\r\n0\r\nx-a: 1\r",
                "10\r\n0123456789abcdef\r\n",
            ),
            (
                "\nte: no\r\n\r\nGET /next HTTP/1.1\r\nhost: svc\r\n\r\n",
                "/next",
            ),
        ];
        let mut client = tokio::net::TcpStream::connect(at).await.unwrap();
        let mut got = Vec::new();
        for (part, then) in parts {
            client.write_all(part.as_bytes()).await.unwrap();
            upstream_got(&mut reads, &mut got, then).await;
        }
        assert_eq!(answers(&mut client, 2).await, ["/s", "/next"]);
        assert_eq!(
            next_body(&mut requests, "POST /s HTTP/1.1").await,
            "5\r\nhello\r\n10\r\n0123456789abcdef\r\n0\r\nx-a: 1\r\n\r\n"
        );
        assert_eq!(next_body(&mut requests, "GET /next HTTP/1.1").await, "");
        let sent: String = parts.iter().map(|(part, _)| *part).collect();
        let body_len = sent.find("GET /next").unwrap() - sent.find("\r\n\r\n").unwrap() - 4;
        assert_eq!(REQUEST_CHUNK_SCANS.with(std::cell::Cell::get), 1);
        assert_eq!(
            REQUEST_CHUNK_BYTES_SCANNED.with(std::cell::Cell::get),
            body_len as u64,
            "the chunked body's bytes were not scanned exactly once"
        );
    });
}

/// A `content-length` body that streams (larger than a read) reaches the upstream byte for byte
/// and the pipelined request after it is served.
#[test]
fn a_streamed_http1_content_length_body_goes_upstream_as_it_came() {
    on_local_runtime(async {
        let (up, up_at) = bound();
        let (tx, mut requests) = unbounded_channel();
        let (reads_tx, mut reads) = unbounded_channel();
        tokio::task::spawn_local(whole_request_upstream(up, tx, reads_tx));
        let (listener, at) = bound();
        let yaml = CONFIG
            .replace("{at}", &at.to_string())
            .replace("{up_at}", &up_at.to_string());
        let _engine = serve(&yaml, listener);

        let payload: String = (0..200_000u32)
            .map(|i| char::from(b'a' + (i % 26) as u8))
            .collect();
        let mut client = tokio::net::TcpStream::connect(at).await.unwrap();
        let first = format!(
            "PUT /big HTTP/1.1\r\nhost: svc\r\ncontent-length: {}\r\n\r\n{}",
            payload.len(),
            &payload[..1000]
        );
        client.write_all(first.as_bytes()).await.unwrap();
        // The start went upstream before the rest is sent: the body streams.
        upstream_got(&mut reads, &mut Vec::new(), &payload[..1000]).await;
        let rest = format!(
            "{}GET /after HTTP/1.1\r\nhost: svc\r\n\r\n",
            &payload[1000..]
        );
        client.write_all(rest.as_bytes()).await.unwrap();
        assert_eq!(answers(&mut client, 2).await, ["/big", "/after"]);
        assert!(
            next_body(&mut requests, "PUT /big HTTP/1.1").await == payload,
            "the body changed on its way"
        );
        assert_eq!(next_body(&mut requests, "GET /after HTTP/1.1").await, "");
    });
}

/// The same body path for an HTTP/2 client: a `content-length` body all here goes upstream
/// held with the head, as it is (no chunk framing: the framer frames only a body of unknown
/// length), and the upstream reads exactly the payload.
#[test]
fn an_http2_content_length_body_goes_upstream_as_it_is() {
    on_local_runtime(async {
        let (up, up_at) = bound();
        let (tx, mut requests) = unbounded_channel();
        let (reads_tx, _reads) = unbounded_channel();
        tokio::task::spawn_local(whole_request_upstream(up, tx, reads_tx));
        let (listener, at) = bound();
        let yaml = CONFIG
            .replace("{at}", &at.to_string())
            .replace("{up_at}", &up_at.to_string());
        let _engine = serve(&yaml, listener);
        let tcp = tokio::net::TcpStream::connect(at).await.unwrap();
        let (client, conn) = h2::client::handshake(tcp).await.unwrap();
        let conn = tokio::task::spawn_local(conn);
        let mut client = client.ready().await.unwrap();
        let request = http::Request::post("http://svc/h2")
            .header("content-length", "11")
            .body(())
            .unwrap();
        let (response, mut body) = client.send_request(request, false).unwrap();
        body.send_data(bytes::Bytes::from_static(b"hello world"), true)
            .unwrap();
        let response = tokio::time::timeout(Duration::from_secs(10), response)
            .await
            .expect("answered in time")
            .unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(
            next_body(&mut requests, "POST /h2 HTTP/1.1").await,
            "hello world"
        );
        conn.abort();
    });
}

/// An HTTP/2 client's `content-length` body in many DATA frames goes upstream as it is, held
/// (all of it here with the head) or streamed (its start goes before the client sends the
/// rest): the upstream reads exactly the payload and nothing after it — no chunk framing of a
/// frame, which would put bytes past the length on the pooled connection, read as the next
/// request — and the next request on the connection parses cleanly.
#[test]
fn an_http2_content_length_body_in_many_frames_goes_upstream_as_it_is() {
    on_local_runtime(async {
        let (up, up_at) = bound();
        let (tx, mut requests) = unbounded_channel();
        let (reads_tx, mut reads) = unbounded_channel();
        tokio::task::spawn_local(whole_request_upstream(up, tx, reads_tx));
        let (listener, at) = bound();
        let yaml = CONFIG
            .replace("{at}", &at.to_string())
            .replace("{up_at}", &up_at.to_string());
        let _engine = serve(&yaml, listener);
        let tcp = tokio::net::TcpStream::connect(at).await.unwrap();
        let (client, conn) = h2::client::handshake(tcp).await.unwrap();
        let conn = tokio::task::spawn_local(conn);
        let frames = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot"];
        let payload = frames.concat();
        for (path, streamed) in [("/held", false), ("/streamed", true)] {
            let mut client = client.clone().ready().await.unwrap();
            let request = http::Request::post(format!("http://svc{path}"))
                .header("content-length", payload.len().to_string())
                .body(())
                .unwrap();
            let (response, mut body) = client.send_request(request, false).unwrap();
            for (i, frame) in frames.iter().enumerate() {
                if streamed && i == 3 {
                    // The first frames went upstream before the rest is sent: it streams.
                    upstream_got(&mut reads, &mut Vec::new(), &frames[..3].concat()).await;
                }
                body.send_data(bytes::Bytes::from_static(frame.as_bytes()), i == 5)
                    .unwrap();
            }
            let response = tokio::time::timeout(Duration::from_secs(10), response)
                .await
                .expect("answered in time")
                .unwrap();
            assert_eq!(response.status(), 200);
            let line = format!("POST {path} HTTP/1.1");
            assert_eq!(next_body(&mut requests, &line).await, payload);
            // The next request on the upstream connection: a clean request line, no body.
            let mut client = client.ready().await.unwrap();
            let get = http::Request::get("http://svc/next").body(()).unwrap();
            let (response, _) = client.send_request(get, true).unwrap();
            let response = tokio::time::timeout(Duration::from_secs(10), response)
                .await
                .expect("answered in time")
                .unwrap();
            assert_eq!(response.status(), 200);
            assert_eq!(next_body(&mut requests, "GET /next HTTP/1.1").await, "");
        }
        conn.abort();
    });
}

/// A streamed chunked body of many tiny chunks arriving in one client write goes upstream in
/// a few writes, not three per chunk (size line, data, CRLF each a write: 30,000 here before),
/// and the upstream reads it exactly, re-framed with the client's chunk sizes.
#[test]
fn many_tiny_chunks_go_upstream_in_a_few_writes() {
    on_local_runtime(async {
        let (up, up_at) = bound();
        let (tx, mut requests) = unbounded_channel();
        let (reads_tx, mut reads) = unbounded_channel();
        tokio::task::spawn_local(whole_request_upstream(up, tx, reads_tx));
        let (listener, at) = bound();
        let yaml = CONFIG
            .replace("{at}", &at.to_string())
            .replace("{up_at}", &up_at.to_string());
        let _engine = serve(&yaml, listener);
        let mut client = tokio::net::TcpStream::connect(at).await.unwrap();
        client
            .write_all(b"PUT /tiny HTTP/1.1\r\nhost: svc\r\ntransfer-encoding: chunked\r\n\r\n")
            .await
            .unwrap();
        // The head went upstream alone: the body streams.
        upstream_got(&mut reads, &mut Vec::new(), "PUT /tiny").await;
        UPLOAD_WRITES.with(|n| n.set(0));
        let chunks = "1\r\na\r\n".repeat(10_000);
        client.write_all(chunks.as_bytes()).await.unwrap();
        // All of them went upstream before the end is sent.
        let mut got = Vec::new();
        while got.len() < chunks.len() {
            let read = tokio::time::timeout(Duration::from_secs(10), reads.recv())
                .await
                .expect("the upstream got the chunks in time")
                .unwrap();
            got.extend_from_slice(&read);
        }
        let writes = UPLOAD_WRITES.with(std::cell::Cell::get);
        client.write_all(b"0\r\n\r\n").await.unwrap();
        assert_eq!(answers(&mut client, 1).await, ["/tiny"]);
        assert!(
            next_body(&mut requests, "PUT /tiny HTTP/1.1").await == format!("{chunks}0\r\n\r\n"),
            "the body changed on its way"
        );
        // A write per batch of pieces (at most 16 KiB each, or what one client read held):
        // 60,000 bytes in a few reads make a handful; 100 leaves room for a read cut small.
        assert!(
            writes < 100,
            "{writes} upstream writes for 10,000 one-byte chunks"
        );
    });
}

/// A chunked body whose data fits the replay limit but whose trailer section does not is not
/// held (a held body is at most `REPLAY_LIMIT` framed bytes, its trailer section counted): it
/// streams, its end sent after the data, and the upstream reads it exactly.
#[test]
fn a_trailer_section_past_the_replay_limit_is_not_held() {
    on_local_runtime(async {
        let (up, up_at) = bound();
        let (tx, mut requests) = unbounded_channel();
        let (reads_tx, _reads) = unbounded_channel();
        tokio::task::spawn_local(whole_request_upstream(up, tx, reads_tx));
        let (listener, at) = bound();
        let yaml = CONFIG
            .replace("{at}", &at.to_string())
            .replace("{up_at}", &up_at.to_string());
        let _engine = serve(&yaml, listener);
        HELD_MAX.with(|m| m.set(0));
        let data = "d".repeat(REPLAY_LIMIT - 1024);
        let trailer = format!("x-sum: {}\r\n", "t".repeat(8 * 1024));
        let body = format!("{:x}\r\n{data}\r\n0\r\n{trailer}\r\n", data.len());
        let request =
            format!("POST /t HTTP/1.1\r\nhost: svc\r\ntransfer-encoding: chunked\r\n\r\n{body}");
        // One write, before the proxy runs (one thread): all of it is here to be held.
        let mut client = tokio::net::TcpStream::connect(at).await.unwrap();
        client.write_all(request.as_bytes()).await.unwrap();
        assert_eq!(answers(&mut client, 1).await, ["/t"]);
        assert!(
            next_body(&mut requests, "POST /t HTTP/1.1").await == body,
            "the body changed on its way"
        );
        let held = HELD_MAX.with(std::cell::Cell::get);
        assert!(held <= REPLAY_LIMIT, "held {held} framed bytes");
    });
}

/// Reads what the proxy sends until it closes the connection.
async fn read_to_close(client: &mut tokio::net::TcpStream) -> String {
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), client.read_to_end(&mut got))
        .await
        .expect("the proxy answered and closed in time")
        .unwrap();
    String::from_utf8_lossy(&got).into_owned()
}

/// A request body's failure is answered with a text naming it — a malformed chunk, a trailer
/// section over its limit, a body that stalls past `stream_idle_timeout` (the only setting
/// changed) — not the generic `bad request` or a header limit's text.
#[test]
fn a_failed_request_body_is_answered_with_what_failed() {
    on_local_runtime(async {
        let (up, up_at) = bound();
        let (tx, _requests) = unbounded_channel();
        let (reads_tx, _reads) = unbounded_channel();
        tokio::task::spawn_local(whole_request_upstream(up, tx, reads_tx));
        let (listener, at) = bound();
        let yaml = CONFIG
            .replace("{at}", &at.to_string())
            .replace("{up_at}", &up_at.to_string())
            .replace("    http:\n", "    http:\n      stream_idle_timeout: 1s\n");
        let _engine = serve(&yaml, listener);
        let head = "POST /f HTTP/1.1\r\nhost: svc\r\ntransfer-encoding: chunked\r\n\r\n";
        let big_trailer = format!("0\r\nx-big: {}\r\n\r\n", "t".repeat(17 * 1024));
        let cases = [
            (
                format!("{head}zz\r\nabc\r\n0\r\n\r\n"),
                "400",
                "malformed chunked request body",
            ),
            (
                format!("{head}{big_trailer}"),
                "400",
                "request trailer section over 16 KiB",
            ),
            (format!("{head}5\r\nab"), "408", "request body timeout"),
        ];
        for (request, status, text) in cases {
            let mut client = tokio::net::TcpStream::connect(at).await.unwrap();
            client.write_all(request.as_bytes()).await.unwrap();
            let got = read_to_close(&mut client).await;
            assert!(got.starts_with(&format!("HTTP/1.1 {status} ")), "{got}");
            let body = &got[got.find("\r\n\r\n").unwrap() + 4..];
            assert!(body.starts_with(text), "{text}: {got}");
        }
    });
}
