//! The HTTP/1.1 simulated peers: the client side (write one request, read one response), a
//! keep-alive client and an echoing upstream that record what they did in a scenario's
//! [`Traffic`], and a slow upstream that sends each response's head and body apart.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::rc::Rc;
use std::time::Duration;

use sluice_core::rng::Rng;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use turmoil::net::{TcpListener, TcpStream};

use crate::topology::{SIDECAR, elapsed};
use crate::trace::Trace;

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

/// Reads the next request head on an upstream's connection (`buf` holds what was read past
/// the last one), 4 KiB at a time, and takes it out of `buf`: its `x-sim-id` header's value
/// (empty without one), or `None` once the connection ends or fails. The requests the
/// simulated clients send have no body.
async fn next_request_id(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<String> {
    let mut chunk = [0u8; 4096];
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut req = httparse::Request::new(&mut headers);
        if let Ok(httparse::Status::Complete(head_len)) = req.parse(buf) {
            let id = req
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("x-sim-id"))
                .map(|h| String::from_utf8_lossy(h.value).into_owned())
                .unwrap_or_default();
            buf.drain(..head_len);
            return Some(id);
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
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
    while let Some(id) = next_request_id(&mut stream, &mut buf).await {
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

/// A request a [`keep_alive_client`] made: its status, or why it got none.
#[derive(Debug)]
pub struct Req {
    pub id: String,
    pub start: Duration,
    pub end: Duration,
    pub outcome: Result<u16, String>,
}

/// What a scenario's [`keep_alive_client`]s and [`echo_upstream`]s did. Invariant once every
/// client is done: `requests.len() == started` (each request started ends, answered or not).
#[derive(Default)]
pub struct Traffic {
    /// Every request that ended, in the order they ended.
    pub requests: Vec<Req>,
    pub started: usize,
    /// Per upstream (its index): when it received each request.
    pub received: BTreeMap<usize, Vec<Duration>>,
    pub clients_done: usize,
}

impl AsMut<Traffic> for Traffic {
    fn as_mut(&mut self) -> &mut Traffic {
        self
    }
}

/// What a [`keep_alive_client`] sends, and when.
pub struct ClientPlan<'a> {
    /// The client's index: it is `client{index}` in the trace.
    pub index: usize,
    /// `GET path`, with the ids `{id_prefix}{index}-{sequence}` in `x-sim-id`.
    pub path: &'a str,
    pub id_prefix: char,
    /// The sidecar's listener the client connects to.
    pub port: u16,
    /// The first request goes at `from` (plus a pause), none after `until`.
    pub from: Duration,
    pub until: Duration,
    /// Before each request, a pause of 0 to `max_pause_ms` (excluded) ms.
    pub max_pause_ms: u64,
    /// A request not answered by then is given up (and its connection closed).
    pub deadline: Duration,
}

/// A client making requests on one kept-alive connection to the sidecar (opened again when
/// it closes or a request fails), as `plan` says, with its pauses drawn from `seed`. Each
/// request is counted in [`Traffic::started`] when it starts, traced and recorded in
/// [`Traffic::requests`] when it ends; a 2xx that carries another request's id is an error
/// ([`Response::answering`]). Counts itself in [`Traffic::clients_done`] at the end.
pub async fn keep_alive_client<W: AsMut<Traffic>>(
    plan: ClientPlan<'_>,
    seed: u64,
    world: Rc<RefCell<W>>,
    trace: Trace,
) {
    let mut rng = Rng::from_seed(seed);
    let who = format!("client{}", plan.index);
    let mut seq = 0;
    let mut conn: Option<TcpStream> = None;
    let mut buf = Vec::with_capacity(4096);
    tokio::time::sleep(plan.from).await;
    while elapsed() < plan.until {
        tokio::time::sleep(Duration::from_millis(rng.below(plan.max_pause_ms))).await;
        let id = format!("{}{}-{seq}", plan.id_prefix, plan.index);
        seq += 1;
        let request = format!(
            "GET {} HTTP/1.1\r\nhost: sim\r\nx-sim-id: {id}\r\ncontent-length: 0\r\n\r\n",
            plan.path
        );
        world.borrow_mut().as_mut().started += 1;
        let start = elapsed();
        if conn.is_none() {
            conn = TcpStream::connect((SIDECAR, plan.port)).await.ok();
            buf.clear();
        }
        let outcome = match conn.as_mut() {
            None => Err("connect failed".to_owned()),
            Some(s) => match tokio::time::timeout(
                plan.deadline,
                exchange::<4096>(s, &mut buf, request.as_bytes()),
            )
            .await
            {
                Ok(r) => r.map_err(|e| e.to_string()).and_then(|a| a.answering(&id)),
                Err(_) => Err("gave up at the deadline".to_owned()),
            },
        };
        let keep = matches!(&outcome, Ok((_, true)));
        let outcome = outcome.map(|(status, _)| status);
        if !keep {
            conn = None;
        }
        let end = elapsed();
        trace.record(end, &who, format_args!("{id} -> {outcome:?}"));
        world.borrow_mut().as_mut().requests.push(Req {
            id,
            start,
            end,
            outcome,
        });
    }
    world.borrow_mut().as_mut().clients_done += 1;
}

/// Upstream `name` (index `index` in [`Traffic::received`]) on `[::]:port`: answers each
/// request on a connection (keep-alive) with `200` and its `x-sim-id` header's value as the
/// body, after up to 120 ms of work (deterministic per id, [`super::work`]); records when each
/// request arrived.
pub async fn echo_upstream<W: AsMut<Traffic> + 'static>(
    name: &'static str,
    port: u16,
    index: usize,
    world: Rc<RefCell<W>>,
    trace: Trace,
) -> turmoil::Result {
    let listener =
        TcpListener::bind(SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port)).await?;
    trace.record(elapsed(), name, "listening");
    loop {
        let (mut stream, _) = listener.accept().await?;
        let world = world.clone();
        tokio::task::spawn_local(async move {
            let mut buf = Vec::with_capacity(4096);
            while let Some(id) = next_request_id(&mut stream, &mut buf).await {
                world
                    .borrow_mut()
                    .as_mut()
                    .received
                    .entry(index)
                    .or_default()
                    .push(elapsed());
                tokio::time::sleep(super::work(id.as_bytes(), 120)).await;
                let resp = format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{id}",
                    id.len()
                );
                if stream.write_all(resp.as_bytes()).await.is_err() {
                    return;
                }
            }
        });
    }
}
