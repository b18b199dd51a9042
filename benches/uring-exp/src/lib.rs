//! Issue 15's io_uring experiment: ONE minimal HTTP/1.1 keep-alive reverse-proxy loop, written
//! once against the core's HTTP/1.1 codec (`sluice_core::http1`), and two drivers of it
//! ([`epoll`]: a tokio current-thread runtime, what Sluice uses; [`uring`]: io_uring with
//! multishot accept, multishot recv into a provided-buffer ring, send SQEs and one
//! `io_uring_enter` per loop turn). The protocol work is the same code on both, so the ratio of
//! their requests per CPU-second isolates the driver.
//!
//! This module owns [`Pair`]: the state of one downstream connection and its one upstream
//! connection (upstream keep-alive: the upstream connection lives as long as the downstream
//! one). It is sans-IO: a driver hands it the bytes it received ([`Pair::on_down`],
//! [`Pair::on_up`]), sends what it has to send ([`Pair::pending_up`], [`Pair::pending_down`])
//! and reports what was sent ([`Pair::sent_up`], [`Pair::sent_down`]).
//!
//! ## States
//!
//! - *idle*: no request forwarded; downstream bytes are parsed as a request head
//!   (`parse_request`); once the head and its `Content-Length` body are all there, the head is
//!   written with `write_request_head` (version HTTP/1.1, as Sluice does) and the body appended
//!   to the upstream output, in one buffer (one send).
//! - *awaiting* (a method is remembered): upstream bytes are parsed as the response head
//!   (`parse_response`); once head and body are there, `write_response_head` and the body go
//!   to the downstream output, and the pair is idle again (a pipelined request already
//!   buffered is forwarded then).
//! - *closing*: after a response without keep-alive or an error answer, once the downstream
//!   output is sent ([`Pair::finished`]).
//!
//! ## Invariants
//!
//! - An output buffer is written only while it is empty (everything before was reported
//!   sent), so a driver may hand its bytes to the kernel (an io_uring send SQE) and keep them
//!   untouched until the completion.
//! - No allocation per request once the buffers have grown to the messages' size: the heads
//!   and buffers are reused, bytes that are consumed are drained in place.
//! - A message is forwarded whole (head + body in one buffer): bodies are `Content-Length` up
//!   to [`MAX_BODY`]; chunked or close-delimited bodies are out of scope (the minimal loop's
//!   load, wrk against nginx `return 200`, has none) and close the pair.

pub mod epoll;
pub mod uring;

use sluice_core::http1::{
    BodyFraming, Head, HeadEdits, HttpError, Limits, Method, ParseStatus, Version, parse_request,
    parse_response, write_local_response, write_request_head, write_response_head,
};

/// The largest `Content-Length` body forwarded.
pub const MAX_BODY: u64 = 1 << 20;

/// Why a pair stops.
#[derive(Debug, PartialEq, Eq)]
pub enum Error {
    /// The request could not be forwarded; an error answer is queued downstream.
    BadRequest(u16),
    /// The upstream's response is malformed or outside this loop's scope.
    BadResponse(String),
    /// The upstream sent bytes while no request was outstanding.
    UnsolicitedResponse,
}

/// One downstream connection and its upstream connection: see the module docs.
#[derive(Default)]
pub struct Pair {
    down_in: Vec<u8>,
    up_in: Vec<u8>,
    to_up: Vec<u8>,
    up_sent: usize,
    to_down: Vec<u8>,
    down_sent: usize,
    req: Head,
    resp: Head,
    /// The method of the forwarded request whose response is awaited.
    awaiting: Option<Method>,
    /// Whether the downstream connection stays open after the awaited response.
    keep_down: bool,
    /// Close once `to_down` is sent.
    closing: bool,
    /// Requests answered (a response forwarded).
    pub responses: u64,
}

impl Pair {
    /// A pair with empty buffers.
    #[must_use]
    pub fn new() -> Pair {
        Pair::default()
    }

    /// Bytes still to send upstream.
    #[must_use]
    pub fn pending_up(&self) -> &[u8] {
        &self.to_up[self.up_sent..]
    }

    /// Bytes still to send downstream.
    #[must_use]
    pub fn pending_down(&self) -> &[u8] {
        &self.to_down[self.down_sent..]
    }

    /// Whether a request is forwarded and its response not complete yet.
    #[must_use]
    pub fn awaiting_response(&self) -> bool {
        self.awaiting.is_some()
    }

    /// Whether the pair is done: closing and everything sent downstream.
    #[must_use]
    pub fn finished(&self) -> bool {
        self.closing && self.pending_down().is_empty()
    }

    /// `n` bytes of [`Pair::pending_up`] were sent.
    pub fn sent_up(&mut self, n: usize) -> Result<(), Error> {
        self.up_sent += n;
        debug_assert!(self.up_sent <= self.to_up.len());
        if self.up_sent == self.to_up.len() {
            self.to_up.clear();
            self.up_sent = 0;
        }
        Ok(())
    }

    /// `n` bytes of [`Pair::pending_down`] were sent; a pipelined request may go now.
    pub fn sent_down(&mut self, n: usize) -> Result<(), Error> {
        self.down_sent += n;
        debug_assert!(self.down_sent <= self.to_down.len());
        if self.down_sent == self.to_down.len() {
            self.to_down.clear();
            self.down_sent = 0;
            let r = self.try_buffered_request();
            self.closing |= r.is_err();
            return r;
        }
        Ok(())
    }

    /// Bytes received from downstream. Parsed straight from `data` when nothing is buffered (the
    /// usual case: a whole request in one read), else appended and parsed from the buffer.
    pub fn on_down(&mut self, data: &[u8]) -> Result<(), Error> {
        let r = self.on_down_inner(data);
        self.closing |= r.is_err();
        r
    }

    /// Bytes received from upstream. After an error the pair is closing: the driver sends what
    /// is pending downstream (an error answer, if any) and closes both connections.
    pub fn on_up(&mut self, data: &[u8]) -> Result<(), Error> {
        let r = self.on_up_inner(data);
        self.closing |= r.is_err();
        r
    }

    fn on_down_inner(&mut self, data: &[u8]) -> Result<(), Error> {
        if self.closing {
            return Ok(()); // what a client sends after its last request is not read
        }
        if self.down_in.is_empty() && self.ready_for_request() {
            let used = self.forward_request(data)?;
            self.down_in.extend_from_slice(&data[used..]);
            Ok(())
        } else {
            self.down_in.extend_from_slice(data);
            self.try_buffered_request()
        }
    }

    fn on_up_inner(&mut self, data: &[u8]) -> Result<(), Error> {
        if self.awaiting.is_none() || self.closing {
            return Err(Error::UnsolicitedResponse);
        }
        if self.up_in.is_empty() && self.to_down.is_empty() {
            let used = self.forward_response(data)?;
            self.up_in.extend_from_slice(&data[used..]);
        } else {
            self.up_in.extend_from_slice(data);
            if self.to_down.is_empty() {
                let buf = std::mem::take(&mut self.up_in);
                let used = self.forward_response(&buf);
                self.up_in = buf;
                self.up_in.drain(..used?);
            }
        }
        if self.awaiting.is_none() && !self.up_in.is_empty() {
            return Err(Error::UnsolicitedResponse);
        }
        if self.awaiting.is_none() {
            self.try_buffered_request()?;
        }
        Ok(())
    }

    fn ready_for_request(&self) -> bool {
        self.awaiting.is_none() && self.to_up.is_empty() && self.to_down.is_empty() && !self.closing
    }

    fn try_buffered_request(&mut self) -> Result<(), Error> {
        if self.down_in.is_empty() || !self.ready_for_request() {
            return Ok(());
        }
        let buf = std::mem::take(&mut self.down_in);
        let used = self.forward_request(&buf);
        self.down_in = buf;
        self.down_in.drain(..used?);
        Ok(())
    }

    /// Forwards the request at the start of `buf` if it is complete; returns the bytes used.
    fn forward_request(&mut self, buf: &[u8]) -> Result<usize, Error> {
        match parse_request(buf, &Limits::DEFAULT, &mut self.req) {
            Ok(ParseStatus::Partial) => return Ok(0),
            Ok(ParseStatus::Complete) => {}
            Err(e) => return Err(self.answer_error(&e)),
        }
        let head_len = self.req.head_len();
        let body = match self.req.framing() {
            BodyFraming::None => 0,
            BodyFraming::ContentLength(n) if n <= MAX_BODY => n as usize,
            _ => return Err(self.answer(501)),
        };
        if buf.len() < head_len + body {
            return Ok(0);
        }
        write_request_head(
            &mut self.to_up,
            buf,
            &self.req,
            &HeadEdits {
                version: Some(Version::Http11),
                ..HeadEdits::NONE
            },
        );
        self.to_up
            .extend_from_slice(&buf[head_len..head_len + body]);
        self.awaiting = Some(self.req.method());
        self.keep_down = self.req.keep_alive();
        Ok(head_len + body)
    }

    /// Forwards the response at the start of `buf` if it is complete; returns the bytes used.
    fn forward_response(&mut self, buf: &[u8]) -> Result<usize, Error> {
        let method = self.awaiting.unwrap_or_default();
        match parse_response(buf, method, &Limits::DEFAULT, &mut self.resp) {
            Ok(ParseStatus::Partial) => return Ok(0),
            Ok(ParseStatus::Complete) => {}
            Err(e) => return Err(Error::BadResponse(e.to_string())),
        }
        let head_len = self.resp.head_len();
        let body = match self.resp.framing() {
            _ if self.resp.is_informational() || self.resp.upgrade() => {
                return Err(Error::BadResponse("1xx/upgrade: out of scope".into()));
            }
            BodyFraming::None => 0,
            BodyFraming::ContentLength(n) if n <= MAX_BODY => n as usize,
            f => {
                return Err(Error::BadResponse(format!(
                    "body framing {f:?}: out of scope"
                )));
            }
        };
        if buf.len() < head_len + body {
            return Ok(0);
        }
        let keep = self.keep_down && self.resp.keep_alive();
        write_response_head(
            &mut self.to_down,
            buf,
            &self.resp,
            &HeadEdits {
                force_close: !keep,
                ..HeadEdits::NONE
            },
        );
        self.to_down
            .extend_from_slice(&buf[head_len..head_len + body]);
        self.awaiting = None;
        self.closing = !keep;
        self.responses += 1;
        Ok(head_len + body)
    }

    fn answer_error(&mut self, e: &HttpError) -> Error {
        self.answer(e.status())
    }

    /// Queues a local error answer (connection: close) and closes after it.
    fn answer(&mut self, status: u16) -> Error {
        if self.to_down.is_empty() {
            write_local_response(&mut self.to_down, status, &[], b"", true);
        }
        self.closing = true;
        Error::BadRequest(status)
    }
}

/// Parses `--driver epoll|uring --listen ADDR --upstream ADDR` (the binary's arguments).
#[derive(Debug, Clone)]
pub struct Args {
    /// `epoll` or `uring`.
    pub driver: String,
    /// Where to accept downstream connections.
    pub listen: std::net::SocketAddr,
    /// The one upstream address.
    pub upstream: std::net::SocketAddr,
    /// io_uring: fixed (registered) file descriptors for the sockets.
    pub fixed_files: bool,
}

impl Args {
    /// From `std::env::args()`-like items (without the program name).
    pub fn parse(mut it: impl Iterator<Item = String>) -> Result<Args, String> {
        let (mut driver, mut listen, mut upstream, mut fixed_files) = (None, None, None, false);
        while let Some(flag) = it.next() {
            let mut value = |name: &str| it.next().ok_or(format!("{name} needs a value"));
            match flag.as_str() {
                "--driver" => driver = Some(value("--driver")?),
                "--listen" => listen = Some(value("--listen")?),
                "--upstream" => upstream = Some(value("--upstream")?),
                "--fixed-files" => fixed_files = true,
                other => return Err(format!("unknown argument {other:?}")),
            }
        }
        let addr = |name: &str, v: Option<String>| -> Result<std::net::SocketAddr, String> {
            let v = v.ok_or(format!("{name} is required"))?;
            v.parse().map_err(|e| format!("{name} {v:?}: {e}"))
        };
        let driver = driver.unwrap_or_else(|| "epoll".into());
        if driver != "epoll" && driver != "uring" {
            return Err(format!("--driver {driver:?}: expected epoll or uring"));
        }
        Ok(Args {
            driver,
            listen: addr("--listen", listen)?,
            upstream: addr("--upstream", upstream)?,
            fixed_files,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REQ: &[u8] = b"GET /a?b HTTP/1.1\r\nHost: x\r\nUser-Agent: t\r\n\r\n";
    const RESP: &[u8] = b"HTTP/1.1 200 OK\r\nServer: n\r\nContent-Length: 6\r\n\r\nhello\n";

    fn take_up(p: &mut Pair) -> Vec<u8> {
        let v = p.pending_up().to_vec();
        p.sent_up(v.len()).unwrap();
        v
    }

    fn take_down(p: &mut Pair) -> Vec<u8> {
        let v = p.pending_down().to_vec();
        p.sent_down(v.len()).unwrap();
        v
    }

    #[test]
    fn forwards_request_and_response_bytes() {
        let mut p = Pair::new();
        p.on_down(REQ).unwrap();
        assert_eq!(
            take_up(&mut p),
            b"GET /a?b HTTP/1.1\r\nHost: x\r\nUser-Agent: t\r\n\r\n"
        );
        p.on_up(RESP).unwrap();
        assert_eq!(
            take_down(&mut p),
            b"HTTP/1.1 200 OK\r\nServer: n\r\nContent-Length: 6\r\n\r\nhello\n"
        );
        assert!(!p.finished());
        assert_eq!(p.responses, 1);
    }

    #[test]
    fn split_reads_pipelining_and_bodies() {
        let mut p = Pair::new();
        let post = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc";
        let mut two = post.to_vec();
        two.extend_from_slice(REQ);
        // The first request in three pieces, the second right behind it.
        p.on_down(&two[..10]).unwrap();
        assert!(p.pending_up().is_empty());
        p.on_down(&two[10..post.len() - 1]).unwrap();
        assert!(p.pending_up().is_empty(), "body incomplete");
        p.on_down(&two[post.len() - 1..]).unwrap();
        assert_eq!(take_up(&mut p), post);
        // The response in two pieces; the pipelined GET goes once it is sent downstream.
        p.on_up(&RESP[..20]).unwrap();
        assert!(p.pending_down().is_empty());
        p.on_up(&RESP[20..]).unwrap();
        assert!(p.pending_up().is_empty(), "one request at a time");
        assert_eq!(take_down(&mut p), RESP);
        assert_eq!(take_up(&mut p), REQ);
    }

    #[test]
    fn close_and_errors() {
        let mut p = Pair::new();
        p.on_down(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .unwrap();
        take_up(&mut p);
        p.on_up(RESP).unwrap();
        let out = take_down(&mut p);
        assert!(
            out.windows(17).any(|w| w == b"connection: close"),
            "{out:?}"
        );
        assert!(p.finished());

        let mut p = Pair::new();
        assert_eq!(
            p.on_down(b"GET / HTTP/1.1\r\n\r\n"),
            Err(Error::BadRequest(400))
        );
        assert!(p.pending_down().starts_with(b"HTTP/1.1 400 "));
        assert!(p.pending_up().is_empty());

        let mut p = Pair::new();
        assert_eq!(p.on_up(RESP), Err(Error::UnsolicitedResponse));
    }
}
