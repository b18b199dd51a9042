//! The HTTP/1.1 simulated peers: the client side (write one request, read one response), and a
//! slow upstream that sends each response's head and body apart.

use std::fmt;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use turmoil::net::TcpStream;

/// A response read by [`exchange`].
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    /// The `x-upstream` header (the index of the upstream that answered), if any.
    pub upstream: Option<usize>,
    pub body: String,
    /// Whether the response carries `connection: close`.
    pub close: bool,
}

impl Response {
    /// `(status, keep_alive)` for a request whose upstreams answer with its `id` as the body; a
    /// 2xx carrying another body is an error (a crossed response).
    pub fn answering(self, id: &str) -> Result<(u16, bool), String> {
        if (200..300).contains(&self.status) && self.body != id {
            return Err(crossed(id, &self.body));
        }
        Ok((self.status, !self.close))
    }
}

/// The error for a response to `id` that carries `body`, another request's id.
#[must_use]
pub fn crossed(id: &str, body: &str) -> String {
    format!("CROSSED: the response to {id} carries {body:?}")
}

/// Why [`exchange`] got no response.
#[derive(Debug)]
pub enum Failure {
    Write(std::io::Error),
    /// The connection ended after this many bytes of the response.
    Eof(usize),
    Read(std::io::Error),
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Write(e) => write!(f, "write: {e}"),
            Self::Eof(n) => write!(f, "EOF after {n} response bytes"),
            Self::Read(e) => write!(f, "read: {e}"),
        }
    }
}

/// Writes `request` on `s` and reads its response (head and `content-length` body), parsed with
/// `httparse`, reading at most `CHUNK` bytes at a time. `buf` holds what was read past the
/// response, for the next one on the connection.
pub async fn exchange<const CHUNK: usize>(
    s: &mut TcpStream,
    buf: &mut Vec<u8>,
    request: &[u8],
) -> Result<Response, Failure> {
    s.write_all(request).await.map_err(Failure::Write)?;
    let mut chunk = [0u8; CHUNK];
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut resp = httparse::Response::new(&mut headers);
        if let Ok(httparse::Status::Complete(head_len)) = resp.parse(buf) {
            let find = |n: &str| {
                resp.headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case(n))
                    .map(|h| String::from_utf8_lossy(h.value).to_ascii_lowercase())
            };
            let len: usize = find("content-length")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let upstream = find("x-upstream").and_then(|v| v.parse().ok());
            let close = find("connection").is_some_and(|v| v.contains("close"));
            let status = resp.code.unwrap_or(0);
            if buf.len() >= head_len + len {
                let body = String::from_utf8_lossy(&buf[head_len..head_len + len]).into_owned();
                buf.drain(..head_len + len);
                return Ok(Response {
                    status,
                    upstream,
                    body,
                    close,
                });
            }
        }
        match s.read(&mut chunk).await {
            Ok(0) => return Err(Failure::Eof(buf.len())),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) => return Err(Failure::Read(e)),
        }
    }
}

/// Serves one upstream connection: answers each request (keep-alive) with `200` and its
/// `x-sim-id` header's value as the body, after `min_ms` plus 0 to `max_ms - min_ms` of work
/// (deterministic per id, [`super::work`]): half of it before the head, half between the head
/// and the body. A drain that starts while a response is on its way must still keep the
/// keep-alive promise that response's head made.
pub async fn slow_upstream_conn(mut stream: TcpStream, min_ms: u64, max_ms: u64) {
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    loop {
        let (id, total) = loop {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut req = httparse::Request::new(&mut headers);
            if let Ok(httparse::Status::Complete(head_len)) = req.parse(&buf) {
                let id = req
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("x-sim-id"))
                    .map(|h| String::from_utf8_lossy(h.value).into_owned())
                    .unwrap_or_default();
                break (id, head_len);
            }
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        buf.drain(..total);
        let work =
            std::time::Duration::from_millis(min_ms) + super::work(id.as_bytes(), max_ms - min_ms);
        tokio::time::sleep(work / 2).await;
        let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", id.len());
        if stream.write_all(head.as_bytes()).await.is_err() {
            return;
        }
        tokio::time::sleep(work / 2).await;
        if stream.write_all(id.as_bytes()).await.is_err() {
            return;
        }
    }
}
