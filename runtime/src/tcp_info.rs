//! What the kernel knows of a TCP connection's progress (`getsockopt(TCP_INFO)`): how many of
//! the bytes sent on it the peer's TCP has acknowledged, and how many wait in the send queue
//! (`tcpi_bytes_acked`, `tcpi_bytes_sent`, `tcpi_bytes_retrans`, `tcpi_notsent_bytes`: Linux
//! 4.19 and later).
//!
//! The HTTP/2 keepalive ([`crate::http2`]) reads it when a PING is sent and at the PING's
//! deadline: while the client's TCP acknowledges the bytes that were queued *ahead of* the PING,
//! the client is taking in a response the PING waits behind, and the proxy may have nothing more
//! to write that could show it. An acknowledgement says the client's kernel took the bytes, not
//! that its program read them: hence only the bytes ahead of the PING count (a bounded amount),
//! never a trickle that goes on after it.
//!
//! This module is one of the three in the runtime with `unsafe` (with [`crate::fdpass`] and
//! [`crate::memtrim`]): one `getsockopt` into a `libc::tcp_info` (plain integers: every bit
//! pattern is a valid value), whose length as the kernel reports it is checked to cover the
//! fields read. Elsewhere than Linux, on an older kernel, or on a socket that is not TCP, there
//! is no answer (`None`) and the keepalive goes by the bytes it receives alone.

use std::os::fd::RawFd;

/// Where a connection's sending stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SendProgress {
    /// Bytes the peer's TCP has acknowledged so far.
    pub acked: u64,
    /// Bytes written to the socket and not yet acknowledged: sent and in flight, or not sent.
    pub queued: u64,
}

/// Where the sending of the connection on `socket` stands; `None` when the kernel does not say
/// (not TCP, an old kernel, another platform, a closed descriptor).
///
/// A raw descriptor: the caller's socket is owned by a driver it cannot borrow from (`h2`'s
/// connection). The caller must ask only while it owns that connection — a descriptor closed
/// and reused by another socket would answer for that one.
#[must_use]
pub(crate) fn send_progress(socket: RawFd) -> Option<SendProgress> {
    #[cfg(target_os = "linux")]
    {
        let mut info = std::mem::MaybeUninit::<libc::tcp_info>::zeroed();
        let size = std::mem::size_of::<libc::tcp_info>();
        let mut len = libc::socklen_t::try_from(size).ok()?;
        // SAFETY: `info` is a live, writable `tcp_info` of `len` bytes, `len` a live
        // `socklen_t`; the kernel writes at most `len` bytes into it and the length it wrote
        // back into `len`. A bad descriptor is the kernel's to refuse (EBADF, ENOTSOCK).
        let rc = unsafe {
            libc::getsockopt(
                socket,
                libc::IPPROTO_TCP,
                libc::TCP_INFO,
                info.as_mut_ptr().cast(),
                &raw mut len,
            )
        };
        let end_of = |offset: usize| offset + std::mem::size_of::<u64>();
        let needed = [
            end_of(std::mem::offset_of!(libc::tcp_info, tcpi_bytes_acked)),
            end_of(std::mem::offset_of!(libc::tcp_info, tcpi_bytes_sent)),
            end_of(std::mem::offset_of!(libc::tcp_info, tcpi_bytes_retrans)),
        ];
        let written = usize::try_from(len).ok()?;
        if rc != 0 || needed.iter().any(|n| written < *n) {
            return None;
        }
        // SAFETY: zeroed first, then (partly) written by the kernel: every byte is initialised,
        // and `tcp_info` is integers only.
        let info = unsafe { info.assume_init() };
        // Sent once each (retransmissions are counted in both sent and retrans).
        let in_flight = info
            .tcpi_bytes_sent
            .saturating_sub(info.tcpi_bytes_retrans)
            .saturating_sub(info.tcpi_bytes_acked);
        Some(SendProgress {
            acked: info.tcpi_bytes_acked,
            queued: in_flight + u64::from(info.tcpi_notsent_bytes),
        })
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = socket;
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::fd::AsRawFd;

    /// Bytes written count as queued until the peer's TCP acknowledges them, then as acked (at
    /// once on loopback, give or take a moment); a socket that is not TCP has no answer.
    #[test]
    fn send_progress_moves_written_bytes_from_queued_to_acked() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (mut server, _) = listener.accept().unwrap();
        let fd = server.as_raw_fd();
        let before = send_progress(fd).expect("TCP_INFO on a TCP socket");
        assert_eq!(before.queued, 0);
        server.write_all(&[7u8; 10_000]).unwrap();
        let mut got = vec![0u8; 10_000];
        client.read_exact(&mut got).unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let mut after = send_progress(fd).unwrap();
        while after.acked < before.acked + 10_000 && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(5));
            after = send_progress(fd).unwrap();
        }
        assert_eq!((after.acked - before.acked, after.queued), (10_000, 0));
        // A peer that reads nothing and has a full receive buffer: bytes stay queued.
        let big = vec![1u8; 8 << 20];
        server.set_nonblocking(true).unwrap();
        let mut written = 0;
        while let Ok(n) = server.write(&big[written..]) {
            written += n;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
        let stuck = send_progress(fd).unwrap();
        assert!(stuck.queued > 0, "{stuck:?} after {written} bytes");
        assert_eq!(stuck.acked + stuck.queued, after.acked + written as u64);
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        assert_eq!(send_progress(a.as_raw_fd()), None);
    }
}
