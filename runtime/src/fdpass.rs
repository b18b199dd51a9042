//! Passing file descriptors between processes over a Unix stream socket (`SCM_RIGHTS`).
//!
//! This module exists because a binary upgrade hands the running instance's *listening sockets*
//! to the new one: the kernel keeps one accept queue per socket, so a socket that changes hands
//! (instead of being closed and re-bound) never refuses a connection. The only way to give a file
//! descriptor to another process is `sendmsg(2)` with an `SCM_RIGHTS` control message, and the
//! only way to take ownership of the descriptors that arrive is to wrap raw integers in
//! [`OwnedFd`] — which is `unsafe`. It is one of the three modules of the runtime with `unsafe`
//! (with [`crate::memtrim`]'s one glibc call and [`crate::tcp_info`]'s one `getsockopt`), and
//! that is the whole of it: everything else goes
//! through [`nix`]'s safe wrappers.
//!
//! ## Framing
//!
//! One message is a header `payload_len: u32 BE, fd_count: u32 BE`, the payload, and then one
//! marker byte per extra batch of descriptors. The descriptors ride in batches of at most
//! [`MAX_FDS_PER_MESSAGE`] (Linux caps one `SCM_RIGHTS` at 253): the first batch on the first
//! `sendmsg` (header and payload), each further batch on its own one-byte `sendmsg`. The
//! receiver never reads past the end of the message, so descriptors of the next message (which
//! the kernel attaches to its first byte) are never picked up early. Received descriptors are
//! close-on-exec.

#![deny(unsafe_op_in_unsafe_fn)]

use std::io::{self, IoSlice, IoSliceMut, Write as _};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

use nix::errno::Errno;
use nix::sys::socket::{ControlMessage, ControlMessageOwned, MsgFlags, recvmsg, sendmsg};

/// The most descriptors sent with one `sendmsg`; more are split over several.
pub const MAX_FDS_PER_MESSAGE: usize = 250;

/// The largest payload accepted (a guard against a confused peer).
pub const MAX_PAYLOAD: usize = 1 << 20;

const HEADER: usize = 8;

fn io_err(e: Errno) -> io::Error {
    io::Error::from(e)
}

/// Sends `payload` and `fds` as one message (the descriptors are duplicated by the kernel into
/// the receiver; the caller keeps its own). Blocking, subject to the stream's write timeout.
pub fn send(stream: &UnixStream, payload: &[u8], fds: &[BorrowedFd<'_>]) -> io::Result<()> {
    if payload.len() > MAX_PAYLOAD {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("payload of {} bytes is over {MAX_PAYLOAD}", payload.len()),
        ));
    }
    let raw: Vec<RawFd> = fds.iter().map(AsRawFd::as_raw_fd).collect();
    let mut batches = raw.chunks(MAX_FDS_PER_MESSAGE);
    let mut header = [0u8; HEADER];
    header[..4].copy_from_slice(&(payload.len() as u32).to_be_bytes());
    header[4..].copy_from_slice(&(raw.len() as u32).to_be_bytes());

    let first = batches.next().unwrap_or(&[]);
    let sent = send_batch(stream, &[&header, payload], first)?;
    // A blocking stream socket sends all of it unless interrupted; finish the bytes if not
    // (the descriptors went with the first byte).
    if sent < HEADER {
        (&*stream).write_all(&header[sent..])?;
    }
    (&*stream).write_all(&payload[sent.saturating_sub(HEADER)..])?;
    for batch in batches {
        let sent = send_batch(stream, &[&[0u8]], batch)?;
        debug_assert_eq!(sent, 1);
    }
    Ok(())
}

/// One `sendmsg` with `fds` attached; returns the bytes sent (at least one).
fn send_batch(stream: &UnixStream, parts: &[&[u8]], fds: &[RawFd]) -> io::Result<usize> {
    let iov: Vec<IoSlice<'_>> = parts.iter().map(|p| IoSlice::new(p)).collect();
    let rights = [ControlMessage::ScmRights(fds)];
    let cmsgs: &[ControlMessage<'_>] = if fds.is_empty() { &[] } else { &rights };
    loop {
        match sendmsg::<()>(
            stream.as_raw_fd(),
            &iov,
            cmsgs,
            MsgFlags::MSG_NOSIGNAL,
            None,
        ) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => return Ok(n),
            Err(Errno::EINTR) => {}
            Err(e) => return Err(io_err(e)),
        }
    }
}

/// Receives one message sent by [`send`]: its payload and its descriptors, now owned by this
/// process. Blocking, subject to the stream's read timeout (a timeout is `WouldBlock` or
/// `TimedOut`); the peer closing first is `UnexpectedEof`.
pub fn recv(stream: &UnixStream) -> io::Result<(Vec<u8>, Vec<OwnedFd>)> {
    let mut fds = Vec::new();
    let mut header = [0u8; HEADER];
    recv_exact(stream, &mut header, &mut fds)?;
    let len = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
    let count = u32::from_be_bytes([header[4], header[5], header[6], header[7]]) as usize;
    if len > MAX_PAYLOAD || count > 64 * 1024 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("message header out of range: {len} bytes, {count} descriptors"),
        ));
    }
    let extra = count.div_ceil(MAX_FDS_PER_MESSAGE).saturating_sub(1);
    let mut body = vec![0u8; len + extra];
    recv_exact(stream, &mut body, &mut fds)?;
    body.truncate(len);
    if fds.len() != count {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "expected {count} descriptors with the message, got {}",
                fds.len()
            ),
        ));
    }
    Ok((body, fds))
}

/// Fills `buf` exactly, collecting any descriptors that arrive on the way.
fn recv_exact(stream: &UnixStream, buf: &mut [u8], fds: &mut Vec<OwnedFd>) -> io::Result<()> {
    let mut cmsg = nix::cmsg_space!([RawFd; MAX_FDS_PER_MESSAGE]);
    let mut filled = 0;
    while filled < buf.len() {
        let mut iov = [IoSliceMut::new(&mut buf[filled..])];
        let msg = match recvmsg::<()>(
            stream.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg),
            MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            Ok(m) => m,
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(io_err(e)),
        };
        let got = msg.bytes;
        // Take ownership of whatever arrived first, so that an error below closes it.
        let mut truncated = msg.flags.contains(MsgFlags::MSG_CTRUNC);
        match msg.cmsgs() {
            Ok(iter) => {
                for c in iter {
                    if let ControlMessageOwned::ScmRights(raw) = c {
                        for fd in raw {
                            // SAFETY: `fd` was just installed in this process's descriptor
                            // table by the kernel for this SCM_RIGHTS message; nothing else
                            // knows it, so this `OwnedFd` is its only owner and closes it once.
                            fds.push(unsafe { OwnedFd::from_raw_fd(fd) });
                        }
                    }
                }
            }
            Err(_) => truncated = true,
        }
        if truncated {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "control message truncated: too many descriptors in one batch",
            ));
        }
        if got == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the peer closed the control connection",
            ));
        }
        filled += got;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::io::{Read as _, Write as _};
    use std::net::{TcpListener, TcpStream};
    use std::os::fd::AsFd as _;
    use std::time::Duration;

    use super::*;

    #[test]
    fn passes_listening_sockets_that_still_accept() {
        let (a, b) = UnixStream::pair().unwrap();
        let listeners: Vec<TcpListener> = (0..3)
            .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
            .collect();
        let addrs: Vec<_> = listeners.iter().map(|l| l.local_addr().unwrap()).collect();
        let borrowed: Vec<_> = listeners.iter().map(|l| l.as_fd()).collect();
        send(&a, b"hello", &borrowed).unwrap();
        // The sender closes its copies: the receiver's are the only ones left.
        drop(borrowed);
        drop(listeners);
        let (payload, fds) = recv(&b).unwrap();
        assert_eq!(payload, b"hello");
        assert_eq!(fds.len(), 3);
        for (fd, addr) in fds.into_iter().zip(addrs) {
            let listener = TcpListener::from(fd);
            assert_eq!(listener.local_addr().unwrap(), addr);
            let mut client = TcpStream::connect(addr).unwrap();
            client.write_all(b"ping").unwrap();
            let (mut server, _) = listener.accept().unwrap();
            let mut buf = [0u8; 4];
            server.read_exact(&mut buf).unwrap();
            assert_eq!(&buf, b"ping");
        }
    }

    #[test]
    fn splits_many_descriptors_and_keeps_messages_apart() {
        let (a, b) = UnixStream::pair().unwrap();
        let n = MAX_FDS_PER_MESSAGE * 2 + 7;
        let files: Vec<std::fs::File> = (0..n)
            .map(|_| std::fs::File::open("/dev/null").unwrap())
            .collect();
        let payload = vec![7u8; 100_000];
        let writer = {
            let a = a.try_clone().unwrap();
            let payload = payload.clone();
            std::thread::spawn(move || {
                let fds: Vec<_> = files.iter().map(|f| f.as_fd()).collect();
                send(&a, &payload, &fds).unwrap();
                send(&a, b"second", &fds[..1]).unwrap();
                send(&a, b"third", &[]).unwrap();
            })
        };
        let (p1, f1) = recv(&b).unwrap();
        assert_eq!(p1, payload);
        assert_eq!(f1.len(), n);
        let (p2, f2) = recv(&b).unwrap();
        assert_eq!((p2.as_slice(), f2.len()), (&b"second"[..], 1));
        let (p3, f3) = recv(&b).unwrap();
        assert_eq!((p3.as_slice(), f3.len()), (&b"third"[..], 0));
        writer.join().unwrap();
    }

    #[test]
    fn eof_and_timeout_are_errors() {
        let (a, b) = UnixStream::pair().unwrap();
        b.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        let e = recv(&b).unwrap_err();
        assert!(
            matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ),
            "{e:?}"
        );
        drop(a);
        assert_eq!(recv(&b).unwrap_err().kind(), io::ErrorKind::UnexpectedEof);
    }
}
