//! The socket side of transparent capture: reading a captured connection's original
//! destination, binding a `tproxy` listener, marking the proxy's own upstream sockets.
//!
//! The choice of *which listener* serves a captured connection is pure and lives in the core
//! ([`sluice_core::handoff`]); this module only talks to the kernel, through `socket2`'s safe
//! wrappers of `getsockopt` / `setsockopt` (no `unsafe` here: [`crate::fdpass`] stays the only
//! module of the runtime that has any).
//!
//! - `original_dst: redirect` — iptables `REDIRECT` rewrote the destination; connection
//!   tracking remembers the original, read back with `SO_ORIGINAL_DST` (IPv4) or
//!   `IP6T_SO_ORIGINAL_DST` (IPv6). An IPv4 connection accepted on a dual-stack `[::]` socket is
//!   tracked as IPv4, so its local address's family (not the socket's) picks the option.
//! - `original_dst: tproxy` — iptables `TPROXY` delivered the connection unchanged to a socket
//!   bound with `IP_TRANSPARENT`; the accepted socket's local address *is* the original.
//! - `upstream_mark` — `SO_MARK` on every upstream socket before it connects, so that capture
//!   rules matching `! --mark` (or `-m mark --mark`) leave it alone.
//!
//! A connection that was not captured (a client dialled the capture listener itself) has no
//! original destination: with `redirect`, connection tracking reports the address it already
//! has; with `tproxy`, the local address is on the listener's own port. Both read as `None`, so
//! that a pass-through never connects the proxy to itself.

use std::io;
use std::net::SocketAddr;

use sluice_core::config::OriginalDst;
use socket2::{Domain, SockRef, Socket, Type};

/// The original destination of an accepted connection on a listener bound to `listener`, or
/// `None` when it was not captured or the kernel cannot tell (no connection tracking entry).
pub fn original_destination(
    stream: &tokio::net::TcpStream,
    how: OriginalDst,
    listener: SocketAddr,
) -> Option<SocketAddr> {
    let local = stream.local_addr().ok()?;
    match how {
        OriginalDst::Redirect => {
            let socket = SockRef::from(stream);
            let v4 = match local {
                SocketAddr::V4(_) => true,
                SocketAddr::V6(v6) => v6.ip().to_ipv4_mapped().is_some(),
            };
            let original = if v4 {
                socket.original_dst_v4()
            } else {
                socket.original_dst_v6()
            };
            let original = original.ok()?.as_socket()?;
            (unmapped(original) != unmapped(local)).then_some(original)
        }
        OriginalDst::Tproxy => (local.port() != listener.port()).then_some(local),
    }
}

fn unmapped(a: SocketAddr) -> SocketAddr {
    match a {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(v4.into(), a.port()),
            None => a,
        },
        SocketAddr::V4(_) => a,
    }
}

/// Binds a listening socket like [`crate::net::bind_reuseport`], with `IP_TRANSPARENT` first
/// when `transparent` (a `tproxy` listener: the kernel then delivers it connections addressed
/// to other hosts). Setting it needs `CAP_NET_ADMIN`; the error says so.
pub fn bind_listener(
    address: SocketAddr,
    backlog: i32,
    transparent: bool,
) -> io::Result<std::net::TcpListener> {
    if !transparent {
        return crate::net::bind_reuseport(address, backlog);
    }
    let socket = Socket::new(Domain::for_address(address), Type::STREAM, None)?;
    let set = if address.is_ipv4() {
        socket.set_ip_transparent_v4(true)
    } else {
        socket.set_ip_transparent_v6(true)
    };
    set.map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("original_dst: tproxy needs IP_TRANSPARENT, which needs CAP_NET_ADMIN: {e}"),
        )
    })?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&address.into())?;
    socket.listen(backlog)?;
    Ok(socket.into())
}

/// Connects to `address` from a socket marked with `mark` (`SO_MARK`).
pub async fn connect_marked(address: SocketAddr, mark: u32) -> io::Result<tokio::net::TcpStream> {
    let socket = if address.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    SockRef::from(&socket).set_mark(mark).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("upstream_mark {mark}: SO_MARK needs CAP_NET_ADMIN: {e}"),
        )
    })?;
    socket.connect(address).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_uncaptured_connection_has_no_original_destination() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let at = listener.local_addr().unwrap();
        let _client = tokio::net::TcpStream::connect(at).await.unwrap();
        let (accepted, _) = listener.accept().await.unwrap();
        // tproxy: the local address is on the listener's own port.
        assert_eq!(
            original_destination(&accepted, OriginalDst::Tproxy, at),
            None
        );
        // redirect: no NAT entry (or one that says the address it has).
        assert_eq!(
            original_destination(&accepted, OriginalDst::Redirect, at),
            None
        );
        // A socket on another port than the listener's (what TPROXY delivers) is its own
        // original destination.
        let elsewhere: SocketAddr = "0.0.0.0:1".parse().unwrap();
        assert_eq!(
            original_destination(&accepted, OriginalDst::Tproxy, elsewhere),
            Some(at)
        );
    }
}
