//! Both drivers over real sockets: a keep-alive upstream that answers each request with a body
//! naming it (path and request body echoed), requests through the proxy on several connections,
//! and every response's bytes compared exactly; a `Connection: close` request closes the
//! client's connection after its answer; the sockets of closed pairs are closed (1500
//! connections, three times the io_uring driver's provided buffers).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

/// An upstream answering `200` with body `path=<path> body=<request body>`, keep-alive.
fn upstream() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let s = s.unwrap();
            std::thread::spawn(move || serve_upstream(s));
        }
    });
    addr
}

fn serve_upstream(s: TcpStream) {
    let mut w = s.try_clone().unwrap();
    let mut r = BufReader::new(s);
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let path = line.split(' ').nth(1).unwrap_or("").to_string();
        let mut len = 0usize;
        loop {
            let mut h = String::new();
            r.read_line(&mut h).unwrap();
            if h == "\r\n" {
                break;
            }
            let lower = h.to_ascii_lowercase();
            if let Some(v) = lower.strip_prefix("content-length:") {
                len = v.trim().parse().unwrap();
            }
        }
        let mut body = vec![0u8; len];
        r.read_exact(&mut body).unwrap();
        let out = format!("path={path} body={}", String::from_utf8_lossy(&body));
        let resp = format!(
            "HTTP/1.1 200 OK\r\nX-Up: 1\r\nContent-Length: {}\r\n\r\n{out}",
            out.len()
        );
        if w.write_all(resp.as_bytes()).is_err() {
            return;
        }
    }
}

fn free_addr() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

fn start(driver: &'static str) -> SocketAddr {
    let up = upstream();
    let listen = free_addr();
    std::thread::spawn(move || {
        let r = if driver == "uring" {
            uring_exp::uring::run(listen, up, false)
        } else if driver == "uring-fixed" {
            uring_exp::uring::run(listen, up, true)
        } else {
            uring_exp::epoll::run(listen, up)
        };
        panic!("{driver} driver stopped: {r:?}");
    });
    for _ in 0..200 {
        if TcpStream::connect(listen).is_ok() {
            return listen;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("{driver} driver not listening");
}

/// Reads one response with a Content-Length body; returns all its bytes.
fn read_response(r: &mut BufReader<TcpStream>) -> Vec<u8> {
    let mut out = Vec::new();
    let mut len = 0usize;
    loop {
        let mut h = String::new();
        assert!(
            r.read_line(&mut h).unwrap() > 0,
            "connection closed mid-head"
        );
        out.extend_from_slice(h.as_bytes());
        if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
            len = v.trim().parse().unwrap();
        }
        if h == "\r\n" {
            break;
        }
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).unwrap();
    out.extend_from_slice(&body);
    out
}

fn expected(path: &str, body: &str, close: bool) -> Vec<u8> {
    let out = format!("path={path} body={body}");
    let conn = if close { "connection: close\r\n" } else { "" };
    format!(
        "HTTP/1.1 200 OK\r\nX-Up: 1\r\nContent-Length: {}\r\n{conn}\r\n{out}",
        out.len()
    )
    .into_bytes()
}

fn check(driver: &'static str) {
    let addr = start(driver);
    // 1500 connections one after the other (3 × the buffer ring), 3 requests each, the POST
    // body sent in a separate write.
    for c in 0..1500 {
        let s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.set_nodelay(true).unwrap(); // the POST body's own write goes out at once
        let mut w = s.try_clone().unwrap();
        let mut r = BufReader::new(s);
        for i in 0..2 {
            let path = format!("/c{c}/r{i}?q=1");
            w.write_all(format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes())
                .unwrap();
            assert_eq!(
                read_response(&mut r),
                expected(&path, "", false),
                "{driver}"
            );
        }
        let body = format!("payload-{c}");
        w.write_all(
            format!(
                "POST /p HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
                body.len()
            )
            .as_bytes(),
        )
        .unwrap();
        w.write_all(body.as_bytes()).unwrap();
        assert_eq!(
            read_response(&mut r),
            expected("/p", &body, true),
            "{driver}"
        );
        let mut rest = Vec::new();
        r.read_to_end(&mut rest).unwrap();
        assert!(rest.is_empty(), "{driver}: bytes after the close: {rest:?}");
    }
    // Every closed pair's two sockets were closed: 1500 leaked pairs would hold 3000 fds.
    std::thread::sleep(Duration::from_millis(200));
    let fds = std::fs::read_dir("/proc/self/fd").unwrap().count();
    assert!(
        fds < 1000,
        "{driver}: {fds} fds open after 1500 closed connections"
    );
    // Pipelined: two requests in one write, answered in order.
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut w = s.try_clone().unwrap();
    let mut r = BufReader::new(s);
    w.write_all(b"GET /a HTTP/1.1\r\nHost: t\r\n\r\nGET /b HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    assert_eq!(read_response(&mut r), expected("/a", "", false), "{driver}");
    assert_eq!(read_response(&mut r), expected("/b", "", false), "{driver}");
}

#[test]
fn epoll_driver_forwards_bytes_intact() {
    check("epoll");
}

#[test]
fn uring_driver_forwards_bytes_intact() {
    check("uring");
}

#[test]
fn uring_driver_with_fixed_files_forwards_bytes_intact() {
    check("uring-fixed");
}
