//! What the kernel knows of a TCP connection's progress (`getsockopt(TCP_INFO)`): how many of
//! the bytes sent on it the peer has acknowledged (`tcpi_bytes_acked`, Linux 4.1 and later).
//!
//! The HTTP/2 keepalive ([`crate::http2`]) reads it when a PING is sent and at the PING's
//! deadline: a client whose TCP acknowledged more bytes in between is reading what it was sent
//! (alive), even when the PING — and so its ACK — still waits behind a large response in the
//! buffers, and the proxy has nothing more to write that could show it.
//!
//! This module is one of the three in the runtime with `unsafe` (with [`crate::fdpass`] and
//! [`crate::memtrim`]): one `getsockopt` into a `libc::tcp_info` (plain integers: every bit
//! pattern is a valid value), whose length as the kernel reports it is checked to cover the
//! field read. Elsewhere than Linux with glibc, or on a socket that is not TCP, there is no
//! answer (`None`) and the keepalive goes by the bytes it receives alone.

use std::os::fd::RawFd;

/// Bytes of the connection on `socket` the peer's TCP has acknowledged so far; `None` when the
/// kernel does not say (not TCP, an old kernel, another platform, a closed descriptor).
///
/// A raw descriptor: the caller's socket is owned by a driver it cannot borrow from (`h2`'s
/// connection), and a descriptor closed meanwhile only makes the answer wrong or `None` — the
/// kernel checks it; no memory depends on it. Callers ask only while they own the connection.
#[must_use]
pub fn bytes_acked(socket: RawFd) -> Option<u64> {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
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
        let covers = usize::try_from(len).ok()?
            >= std::mem::offset_of!(libc::tcp_info, tcpi_bytes_acked) + std::mem::size_of::<u64>();
        if rc != 0 || !covers {
            return None;
        }
        // SAFETY: zeroed first, then (partly) written by the kernel: every byte is initialised,
        // and `tcp_info` is integers only.
        let info = unsafe { info.assume_init() };
        Some(info.tcpi_bytes_acked)
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
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

    /// The count grows by what the peer received (acknowledged at once on loopback), and a
    /// socket that is not TCP has none.
    #[test]
    fn bytes_acked_counts_what_the_peer_received() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (mut server, _) = listener.accept().unwrap();
        let before = bytes_acked(server.as_raw_fd()).expect("TCP_INFO on a TCP socket");
        server.write_all(&[7u8; 10_000]).unwrap();
        let mut got = vec![0u8; 10_000];
        client.read_exact(&mut got).unwrap();
        // The ACK may trail the data by a moment.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let mut after = bytes_acked(server.as_raw_fd()).unwrap();
        while after < before + 10_000 && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(5));
            after = bytes_acked(server.as_raw_fd()).unwrap();
        }
        assert_eq!(after - before, 10_000);
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        assert_eq!(bytes_acked(a.as_raw_fd()), None);
    }
}
