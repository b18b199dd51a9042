//! Raw HTTP/2 for the end-to-end tests that need frames no client library sends (a reset in the
//! same write as its HEADERS, a peer that stops answering PINGs): the connection preface, frames
//! built by hand, an HPACK block of literals, reading a stream to its end; and h2load's summary.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// The client connection preface (RFC 9113 §3.4), before the client's SETTINGS.
pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Frame types and flags the tests use.
pub const DATA: u8 = 0x0;
pub const HEADERS: u8 = 0x1;
pub const RST_STREAM: u8 = 0x3;
pub const SETTINGS: u8 = 0x4;
pub const PING: u8 = 0x6;
pub const GOAWAY: u8 = 0x7;
/// `ACK` on SETTINGS and PING, `END_STREAM` on DATA and HEADERS.
pub const ACK: u8 = 0x1;
pub const END_STREAM: u8 = 0x1;
pub const END_HEADERS: u8 = 0x4;

/// One HTTP/2 frame: its 9-byte header and `payload`.
pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).unwrap();
    let mut f = len.to_be_bytes()[1..].to_vec();
    f.extend_from_slice(&[kind, flags]);
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// An h2c connection to `to` (prior knowledge) that has sent the preface and an empty SETTINGS.
pub fn connect(to: SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect(to).unwrap();
    s.write_all(PREFACE).unwrap();
    s.write_all(&frame(SETTINGS, 0, 0, &[])).unwrap();
    s
}

/// A request's HEADERS block in HPACK: each field a literal without indexing, with a literal
/// name, no Huffman coding (names and values under 127 bytes).
pub fn hpack_literals(fields: &[(&str, &str)]) -> Vec<u8> {
    let mut block = Vec::new();
    for (name, value) in fields {
        assert!(name.len() < 127 && value.len() < 127);
        block.push(0x00);
        block.push(name.len() as u8);
        block.extend_from_slice(name.as_bytes());
        block.push(value.len() as u8);
        block.extend_from_slice(value.as_bytes());
    }
    block
}

/// A frame's header: (payload length, type, flags, stream id).
pub fn parse_head(head: &[u8; 9]) -> (usize, u8, u8, u32) {
    let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
    let id = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
    (len, head[3], head[4], id)
}

/// Reads frames from an h2c connection until `stream` ends (a frame of it with END_STREAM, or
/// its RST_STREAM), acknowledging the server's SETTINGS; panics on GOAWAY or after 10 s.
pub fn read_until_end(s: &mut TcpStream, stream: u32) {
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    loop {
        let mut head = [0u8; 9];
        s.read_exact(&mut head).expect("a frame within 10 s");
        let (len, kind, flags, id) = parse_head(&head);
        let mut payload = vec![0u8; len];
        s.read_exact(&mut payload).unwrap();
        match kind {
            SETTINGS if flags & ACK == 0 => s.write_all(&frame(SETTINGS, ACK, 0, &[])).unwrap(),
            GOAWAY => panic!("GOAWAY: {payload:?}"),
            RST_STREAM if id == stream => return,
            DATA | HEADERS if id == stream && flags & END_STREAM != 0 => return,
            _ => {}
        }
    }
}

/// h2load's summary: (succeeded, failed, errored).
pub fn h2load_counts(out: &str) -> (u64, u64, u64) {
    let line = out
        .lines()
        .find(|l| l.starts_with("requests:"))
        .unwrap_or_else(|| panic!("no requests line in h2load output:\n{out}"));
    let number = |word: &str| -> u64 {
        let at = line
            .find(word)
            .unwrap_or_else(|| panic!("{word} in {line}"));
        line[..at]
            .split_whitespace()
            .last()
            .unwrap()
            .parse()
            .unwrap()
    };
    (number(" succeeded"), number(" failed"), number(" errored"))
}
