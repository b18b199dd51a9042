//! The network as the engine sees it: accept on a bound listener, connect to an address,
//! resolve a name (DNS clusters).
//!
//! Two implementations: [`TokioNet`] (real sockets, `TCP_NODELAY` on every stream, upstream
//! sockets marked with the config's `upstream_mark`, original destinations read from the kernel:
//! [`crate::transparent`]) and, with the `turmoil` feature, [`TurmoilNet`] (turmoil's simulated
//! TCP, which has no packet filter: no connection has an original destination there). Binding is not part of the trait:
//! the real server binds one `SO_REUSEPORT` socket per worker and listener before the workers
//! start (so a bind error stops startup with a clear message), and the simulator binds inside
//! its simulated host.

use std::future::Future;
use std::io;
use std::net::SocketAddr;

use sluice_core::config::{Config, OriginalDst};
use tokio::io::{AsyncRead, AsyncWrite};

/// What the engine needs from a network.
pub trait Network: Clone + 'static {
    /// A connected byte stream.
    /// (A real socket says so for the splicing relay: [`crate::splice::AsTcpStream`].)
    type Stream: AsyncRead + AsyncWrite + crate::splice::AsTcpStream + Unpin + 'static;
    /// A bound, listening socket.
    type Listener: 'static;

    /// Accepts the next connection.
    fn accept(
        &self,
        listener: &Self::Listener,
    ) -> impl Future<Output = io::Result<(Self::Stream, SocketAddr)>>;

    /// Copies the bytes waiting on `stream` into `buf` without consuming them (`MSG_PEEK`: a
    /// filter chain is picked from a connection's first bytes, which its filter then reads
    /// again); waits until at least one byte is there, 0 when the peer closed. Called again, it
    /// returns at once with what is there, new bytes or not.
    fn peek(stream: &mut Self::Stream, buf: &mut [u8]) -> impl Future<Output = io::Result<usize>>;

    /// Peeks (as [`Network::peek`]) once at least `want` bytes wait on `stream` (1 ≤ `want`
    /// ≤ `buf.len()`), or once the peer has closed its side: how many bytes wait (at most
    /// `buf.len()`; 0: closed before a byte), and whether the peer's FIN (or a reset) came — no
    /// more bytes will. A filter chain's ClientHello peek waits with it for the bytes its parser
    /// needs next (a hello split over segments), and tells a client that sent part of one and
    /// closed. Dropped before it returns (a timeout), it leaves the stream as it found it: its
    /// next read sees the bytes that wait.
    ///
    /// By default (the simulator), peeks again after 1 ms, then after waits doubling up to
    /// 32 ms (a peek returns at once while bytes wait, new or not), and sees a close only
    /// before the first byte. Real sockets ([`TokioNet`]) wait for the socket's readiness
    /// instead, which the kernel gives only once `want` bytes (or the FIN) are there.
    fn peek_grown(
        stream: &mut Self::Stream,
        buf: &mut [u8],
        want: usize,
    ) -> impl Future<Output = io::Result<(usize, bool)>> {
        async move {
            let mut wait = std::time::Duration::from_millis(1);
            loop {
                let n = Self::peek(stream, buf).await?;
                if n == 0 || n >= want {
                    return Ok((n, n == 0));
                }
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(std::time::Duration::from_millis(32));
            }
        }
    }

    /// Opens a connection (no timeout here: the session state machine owns timeouts).
    fn connect(&self, address: SocketAddr) -> impl Future<Output = io::Result<Self::Stream>>;

    /// Resolves `name` (a DNS name or an IP literal) to addresses with `port`, in the
    /// resolver's order ([`crate::dns`] calls it, off the data path; no timeout here). By
    /// default the system's resolver, [`getaddrinfo`]; when the caller needs the answer's TTL
    /// (`with_ttl`: the cluster has `respect_dns_ttl`), the DNS client of
    /// [`crate::resolver`], which asks the name servers itself and reports it.
    fn resolve(
        &self,
        name: &str,
        port: u16,
        with_ttl: bool,
    ) -> impl Future<Output = io::Result<Resolved>> {
        let name = name.to_owned();
        async move {
            if with_ttl {
                crate::resolver::resolve(&name, port).await
            } else {
                getaddrinfo(name, port).await
            }
        }
    }

    /// This network as an engine for `config` uses it (the real one marks its upstream sockets
    /// with `upstream_mark`).
    #[must_use]
    fn configured(&self, _config: &Config) -> Self {
        self.clone()
    }

    /// The original destination of a connection accepted on a capture listener bound to
    /// `listener` (see [`crate::transparent::original_destination`]); `None` when it was not
    /// captured or this network cannot tell (the simulator).
    fn original_destination(
        &self,
        _stream: &Self::Stream,
        _how: OriginalDst,
        _listener: SocketAddr,
    ) -> Option<SocketAddr> {
        None
    }

    /// The connection's socket, to hand it to another process (connection migration on an
    /// upgrade); `None` when this network cannot (the simulator) — the stream is then closed.
    fn into_fd(stream: Self::Stream) -> Option<std::os::fd::OwnedFd> {
        drop(stream);
        None
    }
}

/// A DNS answer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Resolved {
    /// The addresses, in the resolver's order.
    pub addresses: Vec<SocketAddr>,
    /// How long the answer may be cached, when the resolver says (`getaddrinfo` does not).
    pub ttl: Option<std::time::Duration>,
}

/// The system's resolver: `getaddrinfo` (tokio's `lookup_host`) on tokio's blocking pool, so
/// the worker's event loop never waits for it. It honours `/etc/hosts`, `resolv.conf` (search
/// domains, which Kubernetes' short names rely on) and nsswitch, and reports no TTL.
///
/// A name that does not exist (`EAI_NONAME`: NXDOMAIN) or has no address (`EAI_NODATA`) is a
/// successful answer with no address, as Envoy treats them; any other error (`EAI_AGAIN`, a
/// resolver that cannot be reached) is a failure.
pub async fn getaddrinfo(name: String, port: u16) -> io::Result<Resolved> {
    let addresses: Vec<SocketAddr> = match tokio::net::lookup_host((name.as_str(), port)).await {
        Ok(found) => found.collect(),
        Err(e) if is_no_such_name(&e) => Vec::new(),
        Err(e) => return Err(e),
    };
    Ok(Resolved {
        addresses,
        ttl: None,
    })
}

/// `gai_strerror`'s text for `EAI_NONAME` and `EAI_NODATA` (glibc, then musl): the standard
/// library's lookup error carries only that text (`failed to lookup address information:
/// TEXT`), not the code. The process never calls `setlocale`, so the texts are these.
pub const NO_SUCH_NAME: [&str; 4] = [
    "Name or service not known",
    "No address associated with hostname",
    "Name does not resolve",
    "Name has no usable address",
];

/// Whether a lookup error says the name does not exist or has no address (see
/// [`NO_SUCH_NAME`]).
#[must_use]
pub fn is_no_such_name(e: &io::Error) -> bool {
    let text = e.to_string();
    NO_SUCH_NAME.iter().any(|m| text.ends_with(m))
}

/// Real sockets through tokio.
#[derive(Clone, Copy, Debug, Default)]
pub struct TokioNet {
    /// `SO_MARK` for upstream sockets (the config's `upstream_mark`).
    upstream_mark: Option<u32>,
}

impl Network for TokioNet {
    type Stream = tokio::net::TcpStream;
    type Listener = tokio::net::TcpListener;

    async fn accept(&self, listener: &Self::Listener) -> io::Result<(Self::Stream, SocketAddr)> {
        let (stream, peer) = listener.accept().await?;
        stream.set_nodelay(true)?;
        Ok((stream, peer))
    }

    async fn peek(stream: &mut Self::Stream, buf: &mut [u8]) -> io::Result<usize> {
        stream.peek(buf).await
    }

    async fn peek_grown(
        stream: &mut Self::Stream,
        buf: &mut [u8],
        want: usize,
    ) -> io::Result<(usize, bool)> {
        peek_grown(stream, buf, want).await
    }

    async fn connect(&self, address: SocketAddr) -> io::Result<Self::Stream> {
        let stream = match self.upstream_mark {
            Some(mark) => crate::transparent::connect_marked(address, mark).await?,
            None => tokio::net::TcpStream::connect(address).await?,
        };
        stream.set_nodelay(true)?;
        Ok(stream)
    }

    fn configured(&self, config: &Config) -> Self {
        TokioNet {
            upstream_mark: config.upstream_mark,
        }
    }

    fn original_destination(
        &self,
        stream: &Self::Stream,
        how: OriginalDst,
        listener: SocketAddr,
    ) -> Option<SocketAddr> {
        crate::transparent::original_destination(stream, how, listener)
    }

    fn into_fd(stream: Self::Stream) -> Option<std::os::fd::OwnedFd> {
        // Deregisters it from this runtime; the socket stays open.
        stream.into_std().ok().map(Into::into)
    }
}

#[cfg(test)]
thread_local! {
    /// How many `MSG_PEEK`s [`peek_grown`] made on this thread (a test's engine runs on it).
    pub(crate) static PEEKS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// [`Network::peek_grown`] on a real socket: a non-blocking `MSG_PEEK` each time the socket
/// turns readable, until `want` bytes wait or the peer's FIN came.
///
/// A peek that saw too few clears the readiness it ran under (tokio clears it only if no event
/// came since, so bytes or a FIN landing during the peek are not missed) and waits for the next
/// edge; `EPOLLRDHUP` reports the FIN even behind queued bytes. While it waits, the socket's
/// `SO_RCVLOWAT` is `want`: the kernel wakes it only once that many bytes are queued (or on the
/// FIN, an error, or memory pressure), so a client that sends its hello a byte a segment costs
/// a few peeks, not one a byte. No timer, and no syscall while nothing happens.
///
/// When it returns or is dropped (the listener-filter timeout, the drain), the low-water mark
/// goes back to one byte — the chain's reads need it — and setting it makes the kernel signal
/// the socket readable at once when bytes wait (Linux's `tcp_set_rcvlowat`). That re-arms the
/// readiness a peek cleared: without it, a chain serving the connection after a timeout
/// (`continue_on_listener_filters_timeout`) would wait for bytes beyond those queued, which a
/// client waiting for an answer never sends.
pub(crate) async fn peek_grown(
    stream: &tokio::net::TcpStream,
    buf: &mut [u8],
    want: usize,
) -> io::Result<(usize, bool)> {
    use nix::sys::socket::{MsgFlags, recv, setsockopt};
    use std::os::fd::AsRawFd;
    use tokio::io::Interest;

    /// `SO_RCVLOWAT` as set while a peek waits, back to one byte when it ends.
    struct LowWater<'s> {
        stream: &'s tokio::net::TcpStream,
        raised: bool,
    }
    impl LowWater<'_> {
        fn raise(&mut self, to: usize) -> io::Result<()> {
            if !self.raised {
                // Set before the next wait: bytes queued since the peek that cleared the
                // readiness are signalled by the setting itself.
                setsockopt(self.stream, RcvLowat, &to)?;
                self.raised = true;
            }
            Ok(())
        }
    }
    impl Drop for LowWater<'_> {
        fn drop(&mut self) {
            if self.raised {
                // Cannot fail on a TCP socket that a raise succeeded on; were it to, the
                // connection's next read would wait for `want` bytes, and its timeouts apply.
                let _ = setsockopt(self.stream, RcvLowat, &1);
            }
        }
    }

    let fd = stream.as_raw_fd();
    let mut low_water = LowWater {
        stream,
        raised: false,
    };
    loop {
        let ready = stream.ready(Interest::READABLE).await?;
        let closed = ready.is_read_closed();
        let peeked = stream.try_io(Interest::READABLE, || {
            #[cfg(test)]
            PEEKS.with(|p| p.set(p.get() + 1));
            let n = recv(fd, buf, MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT)?;
            if n >= want || n == 0 || closed {
                Ok(n)
            } else {
                Err(io::ErrorKind::WouldBlock.into())
            }
        });
        match peeked {
            Ok(n) => return Ok((n, closed || n == 0)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => low_water.raise(want)?,
            Err(e) => return Err(e),
        }
    }
}

/// `SO_RCVLOWAT`, which nix has no option type for: nix's own macro writes the `setsockopt`.
mod rcvlowat {
    use nix::{setsockopt_impl, sockopt_impl};
    sockopt_impl!(
        /// The socket's receive low-water mark: how many bytes must be queued before it is
        /// readable.
        RcvLowat,
        SetOnly,
        libc::SOL_SOCKET,
        libc::SO_RCVLOWAT,
        usize
    );
}
use rcvlowat::RcvLowat;

/// Checks that no other socket listens on `address`, by binding (and at once closing) a socket
/// *without* `SO_REUSEPORT` there.
///
/// Why a probe: the workers' sockets need `SO_REUSEPORT` to share one address, but with it the
/// kernel also lets them join the listening group of *another process* of the same user (a
/// second `sluice run` with a different config) and then splits connections between the two.
/// A socket without `SO_REUSEPORT` conflicts with every socket listening on an overlapping
/// address (the same one, or a wildcard and a specific address on the same port), reuseport or
/// not, so its bind failing with `EADDRINUSE` is the "address in use" nginx and HAProxy report.
/// `SO_REUSEADDR` keeps connections in `TIME_WAIT` from a previous run from failing it. The
/// window between the probe and the workers' binds is a few syscalls; what it guards against
/// is a mistake, not an adversary. Port 0 (any free port) has nothing to probe.
pub fn probe_unshared(address: SocketAddr) -> io::Result<()> {
    use socket2::{Domain, Socket, Type};
    if address.port() == 0 {
        return Ok(());
    }
    let socket = Socket::new(Domain::for_address(address), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.bind(&address.into())
}

/// Binds a listening socket with `SO_REUSEPORT`, so that every worker can own a socket on the
/// same address and the kernel spreads connections over them.
pub fn bind_reuseport(address: SocketAddr, backlog: i32) -> io::Result<std::net::TcpListener> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(address), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&address.into())?;
    socket.listen(backlog)?;
    Ok(socket.into())
}

#[cfg(feature = "turmoil")]
pub use simulated::TurmoilNet;

#[cfg(feature = "turmoil")]
mod simulated {
    use super::*;

    /// turmoil's simulated TCP: the same engine, on simulated hosts, in virtual time.
    #[derive(Clone, Copy, Debug, Default)]
    pub struct TurmoilNet;

    impl Network for TurmoilNet {
        type Stream = turmoil::net::TcpStream;
        type Listener = turmoil::net::TcpListener;

        async fn accept(
            &self,
            listener: &Self::Listener,
        ) -> io::Result<(Self::Stream, SocketAddr)> {
            listener.accept().await
        }

        async fn connect(&self, address: SocketAddr) -> io::Result<Self::Stream> {
            turmoil::net::TcpStream::connect(address).await
        }

        /// turmoil's peek sees the first segment waiting only (not several): a ClientHello
        /// written in two writes never completes there, and its peek times out. Clients in the
        /// simulator write a hello at once (rustls does).
        async fn peek(stream: &mut Self::Stream, buf: &mut [u8]) -> io::Result<usize> {
            stream.peek(buf).await
        }

        /// The answer scripted for `name` ([`TurmoilNet::script_dns`]), with its scripted TTL
        /// (whether or not the caller wants it); a name with no script does not resolve.
        async fn resolve(&self, name: &str, port: u16, _with_ttl: bool) -> io::Result<Resolved> {
            DNS_SCRIPT.with(|s| match s.borrow().get(name) {
                Some(Some((ips, ttl))) => Ok(Resolved {
                    addresses: ips.iter().map(|&ip| SocketAddr::new(ip, port)).collect(),
                    ttl: *ttl,
                }),
                Some(None) => Err(io::Error::other(format!("{name}: scripted failure"))),
                None => Err(io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("{name}: no scripted answer"),
                )),
            })
        }
    }

    /// Scripted DNS answers: name → addresses and TTL, or `None` (the lookup fails).
    type Script = std::collections::HashMap<
        String,
        Option<(Vec<std::net::IpAddr>, Option<std::time::Duration>)>,
    >;

    thread_local! {
        // turmoil runs every simulated host on the simulation's thread: one script per run.
        static DNS_SCRIPT: std::cell::RefCell<Script> = std::cell::RefCell::default();
    }

    impl TurmoilNet {
        /// From now on `name` answers `answer` (`None`: the lookup fails); `ttl` as a real
        /// resolver would report it.
        pub fn script_dns(
            name: &str,
            answer: Option<Vec<std::net::IpAddr>>,
            ttl: Option<std::time::Duration>,
        ) {
            DNS_SCRIPT.with(|s| {
                s.borrow_mut()
                    .insert(name.to_owned(), answer.map(|a| (a, ttl)))
            });
        }

        /// Forgets every scripted answer (a new run).
        pub fn clear_dns() {
            DNS_SCRIPT.with(|s| s.borrow_mut().clear());
        }
    }
}
