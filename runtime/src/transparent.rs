//! The socket side of transparent capture: reading a captured connection's original
//! destination, binding a `tproxy` listener, marking the proxy's own upstream sockets.
//!
//! The choice of *which listener* serves a captured connection is pure and lives in the core
//! ([`sluice_core::handoff`]); this module only talks to the kernel, through `socket2`'s safe
//! wrappers of `getsockopt` / `setsockopt` (no `unsafe` here: [`crate::fdpass`],
//! [`crate::memtrim`] and [`crate::tcp_info`] stay the only modules of the runtime that have
//! any).
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

/// Whether this process may mark its upstream sockets with the config's `upstream_mark`
/// (`SO_MARK` needs `CAP_NET_ADMIN`): checked once at startup and on a reload, so that a
/// missing capability stops them with a message naming the setting, rather than failing every
/// upstream connection.
pub fn check_upstream_mark(config: &sluice_core::config::Config) -> io::Result<()> {
    let Some(mark) = config.upstream_mark else {
        return Ok(());
    };
    let probe = Socket::new(Domain::IPV4, Type::STREAM, None)?;
    probe.set_mark(mark).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("upstream_mark {mark}: cannot mark sockets (SO_MARK needs CAP_NET_ADMIN): {e}"),
        )
    })
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

/// The engine's side of capture, without a packet filter: a network whose "kernel" reports a
/// chosen original destination for every accepted connection.
#[cfg(test)]
mod engine_tests {
    use std::cell::Cell;
    use std::rc::Rc;
    use std::sync::Arc;
    use std::sync::atomic::Ordering::Relaxed;
    use std::time::Duration;

    use sluice_core::config::{Config, OriginalDst};
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    use super::*;
    use crate::engine::Engine;
    use crate::net::{Network, TokioNet};
    use crate::stats::{CaptureOutcome, WorkerStats};
    use crate::test_support::{bound, on_local_runtime};
    use crate::worker::{Worker, WorkerHooks};

    #[derive(Clone, Default)]
    struct CapturedNet {
        original_dst: Rc<Cell<Option<SocketAddr>>>,
    }

    impl Network for CapturedNet {
        type Stream = tokio::net::TcpStream;
        type Listener = tokio::net::TcpListener;

        async fn accept(
            &self,
            listener: &Self::Listener,
        ) -> io::Result<(Self::Stream, SocketAddr)> {
            TokioNet::default().accept(listener).await
        }

        async fn connect(&self, address: SocketAddr) -> io::Result<Self::Stream> {
            TokioNet::default().connect(address).await
        }

        async fn peek(stream: &mut Self::Stream, buf: &mut [u8]) -> io::Result<usize> {
            stream.peek(buf).await
        }

        async fn peek_grown(
            stream: &mut Self::Stream,
            buf: &mut [u8],
            want: usize,
        ) -> io::Result<(usize, bool)> {
            crate::net::peek_grown(stream, buf, want).await
        }

        fn original_destination(
            &self,
            _stream: &Self::Stream,
            _how: OriginalDst,
            _listener: SocketAddr,
        ) -> Option<SocketAddr> {
            self.original_dst.get()
        }
    }

    /// Sends `what`, half-closes, and reads until the proxy closes.
    async fn exchange(to: SocketAddr, what: &[u8]) -> Vec<u8> {
        let mut s = tokio::net::TcpStream::connect(to).await.unwrap();
        s.write_all(what).await.unwrap();
        s.shutdown().await.unwrap();
        let mut back = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut back))
            .await
            .expect("the proxy answers in time")
            .unwrap_or_default();
        back
    }

    /// Sends `what[..cut]`, then (100 ms later, the worker waiting for more) the rest and its
    /// FIN together, and reads until the proxy closes.
    async fn exchange_in_two(to: SocketAddr, what: Vec<u8>, cut: usize) -> Vec<u8> {
        let mut s = tokio::net::TcpStream::connect(to).await.unwrap();
        s.write_all(&what[..cut]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        s.write_all(&what[cut..]).await.unwrap();
        s.shutdown().await.unwrap();
        let mut back = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut back))
            .await
            .expect("the proxy answers in time")
            .unwrap_or_default();
        back
    }

    /// A TLS 1.3 ClientHello for `name` with `padding` bytes of padding, in records of at most
    /// `fragment` bytes.
    fn hello(name: &'static [u8], padding: usize, fragment: usize) -> Vec<u8> {
        use sluice_core::tls::client_hello::build::{Hello, client_hello_records};
        client_hello_records(
            &Hello {
                server_name: Some(name),
                tls13: true,
                padding,
                ..Hello::default()
            },
            fragment,
        )
    }

    /// [`hello`] for `a.example`.
    fn a_hello(padding: usize, fragment: usize) -> Vec<u8> {
        hello(b"a.example", padding, fragment)
    }

    /// Starts an upstream on a fresh port: each connection gets `answer(bytes read until the
    /// client's FIN)` written back, then closed; the returned counter says how many it took.
    fn answering(answer: fn(Vec<u8>) -> Vec<u8>) -> (SocketAddr, Rc<Cell<usize>>) {
        let (l, at) = bound();
        let taken = Rc::new(Cell::new(0));
        let count = taken.clone();
        tokio::task::spawn_local(async move {
            while let Ok((mut s, _)) = l.accept().await {
                count.set(count.get() + 1);
                tokio::task::spawn_local(async move {
                    let mut buf = Vec::new();
                    let _ = s.read_to_end(&mut buf).await;
                    let _ = s.write_all(&answer(buf)).await;
                });
            }
        });
        (at, taken)
    }

    /// Starts a worker serving `yaml` on `net` with `listeners` (already bound, in the order of
    /// the config's listeners).
    fn start<N: Network<Listener = tokio::net::TcpListener>>(
        net: N,
        listeners: Vec<tokio::net::TcpListener>,
        yaml: &str,
    ) -> (Arc<WorkerStats>, Worker<N>) {
        let config = Arc::new(Config::from_yaml(yaml).unwrap_or_else(|e| panic!("{e}")));
        let stats = Arc::new(WorkerStats::new(&config));
        let engine = Engine::new(net, config, 0, 1, stats.clone()).unwrap();
        let worker = Worker::start(
            engine,
            listeners,
            WorkerHooks {
                close_listeners: None,
                on_event: None,
            },
        );
        (stats, worker)
    }

    /// Starts a worker serving `yaml` on `net`, its `L` listeners bound on fresh ports: their
    /// addresses stand for `{at}` (the first), `{at1}`, `{at2}`… in `yaml`, and are returned.
    fn serve<N: Network<Listener = tokio::net::TcpListener>, const L: usize>(
        net: N,
        yaml: &str,
    ) -> ([SocketAddr; L], Arc<WorkerStats>, Worker<N>) {
        let listeners: [_; L] = std::array::from_fn(|_| bound());
        let addresses = listeners.each_ref().map(|(_, at)| *at);
        let mut yaml = yaml.to_owned();
        for (i, at) in addresses.iter().enumerate() {
            let key = if i == 0 {
                "{at}".to_owned()
            } else {
                format!("{{at{i}}}")
            };
            yaml = yaml.replace(&key, &at.to_string());
        }
        let (stats, worker) = start(net, listeners.into_iter().map(|(l, _)| l).collect(), &yaml);
        (addresses, stats, worker)
    }

    #[test]
    fn captured_connections_are_handed_off_passed_through_or_closed_and_counted() {
        on_local_runtime(async {
            // The "real peer" a pass-through reaches: echoes, then closes.
            let (peer_at, _) = answering(|b| b);
            let net = CapturedNet::default();
            let dst = net.original_dst.clone();
            let ([capture_at, echo_at], stats, _worker) = serve(
                net,
                "listeners:
  - { name: capture, address: {at}, original_dst: redirect, use_original_dst: true, tcp_proxy: { cluster: pass } }
  - { name: echo, address: {at1}, echo: {} }
clusters:
  - { name: pass, type: original_dst }
",
            );
            let outcome = |o: CaptureOutcome| {
                stats.listener(0).unwrap().capture_outcome[o as usize].load(Relaxed)
            };

            // Dialled the echo listener's address: handed to it.
            dst.set(Some(echo_at));
            assert_eq!(exchange(capture_at, b"to the echo").await, b"to the echo");
            assert_eq!(outcome(CaptureOutcome::HandedOff), 1);
            assert_eq!(
                stats.listener(1).unwrap().downstream_cx_total.load(Relaxed),
                1
            );
            assert_eq!(
                stats.listener(0).unwrap().downstream_cx_total.load(Relaxed),
                0
            );

            // Dialled an address no listener has: passed through to it.
            dst.set(Some(peer_at));
            assert_eq!(exchange(capture_at, b"to the peer").await, b"to the peer");
            assert_eq!(outcome(CaptureOutcome::OwnChain), 1);
            assert_eq!(
                stats.listener(0).unwrap().downstream_cx_total.load(Relaxed),
                1
            );

            // Not captured: no original destination, nothing to pass through to.
            dst.set(None);
            assert_eq!(exchange(capture_at, b"to nowhere").await, b"");
            assert_eq!(outcome(CaptureOutcome::NoOriginalDst), 1);
            assert_eq!(outcome(CaptureOutcome::HandedOff), 1);
            assert_eq!(outcome(CaptureOutcome::OwnChain), 1);
        });
    }

    /// A ClientHello that comes in two parts (a large one: a post-quantum key share spans two
    /// segments) is peeked at until whole, and then every byte of it — none consumed by the
    /// peek — goes to the chain its server name picks; another name goes to the default chain.
    #[test]
    fn a_client_hello_in_two_parts_picks_its_chain_and_reaches_it_whole() {
        on_local_runtime(async {
            // Chain a's upstream echoes; the default chain's answers `default`.
            let (a_at, _) = answering(|b| b);
            let (d_at, _) = answering(|_| b"default".to_vec());
            let ([at], _, _worker) = serve(
                TokioNet::default(),
                &format!(
                    "listeners:
  - name: l
    address: {{at}}
    filter_chains:
      - filter_chain_match: {{ server_names: [a.example] }}
        tcp_proxy: {{ cluster: a }}
    tcp_proxy: {{ cluster: d }}
clusters:
  - {{ name: a, hosts: [ {{ address: {a_at} }} ] }}
  - {{ name: d, hosts: [ {{ address: {d_at} }} ] }}
"
                ),
            );
            let split = |bytes: Vec<u8>| exchange_in_two(at, bytes, 1200);
            let a_hello = hello(b"a.example", 2500, 16 * 1024);
            assert_eq!(
                split(a_hello.clone()).await,
                a_hello,
                "every byte, to chain a"
            );
            assert_eq!(
                split(hello(b"b.example", 2500, 16 * 1024)).await,
                b"default"
            );
        });
    }

    /// A client that sends part of a ClientHello and closes its side (a FIN behind the queued
    /// bytes, which a peek keeps returning) is closed at once — with the default 15 s
    /// `listener_filters_timeout`, not after it — and neither served by the plaintext chain
    /// nor counted as a timeout: counted as refused, `closed`, like one that closes before a
    /// byte. A hello the parser takes (16 380 bytes of message) split over four records, 16 400
    /// bytes on the wire, is not refused as too large: its chain gets every byte.
    #[test]
    fn a_client_closing_during_its_client_hello_is_closed_at_once_and_a_split_full_size_hello_is_taken()
     {
        use crate::stats::ChainPeekRefusal;
        on_local_runtime(async {
            let (a_at, _) = answering(|b| b);
            let (plain_at, plain_taken) = answering(|_| b"plaintext".to_vec());
            let ([at], stats, _worker) = serve(
                TokioNet::default(),
                &format!(
                    "listeners:
  - name: l
    address: {{at}}
    filter_chains:
      - filter_chain_match: {{ server_names: [a.example] }}
        tcp_proxy: {{ cluster: a }}
      - filter_chain_match: {{ transport_protocol: raw_buffer }}
        tcp_proxy: {{ cluster: plain }}
clusters:
  - {{ name: a, hosts: [ {{ address: {a_at} }} ] }}
  - {{ name: plain, hosts: [ {{ address: {plain_at} }} ] }}
"
                ),
            );
            let refused = |r: ChainPeekRefusal| {
                stats
                    .listener(0)
                    .unwrap()
                    .downstream_listener_filter_refused[r as usize]
                    .load(Relaxed)
            };
            let hello = a_hello;
            let t0 = tokio::time::Instant::now();
            let partial = hello(2500, 16 * 1024);
            assert_eq!(exchange(at, &partial[..700]).await, b"");
            assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
            assert_eq!(refused(ChainPeekRefusal::Closed), 1);
            // Closed before a byte: the same reason.
            assert_eq!(exchange(at, b"").await, b"");
            assert_eq!(refused(ChainPeekRefusal::Closed), 2);
            // Reset during the hello (linger 0): the same reason, not a read error.
            let mut s = tokio::net::TcpStream::connect(at).await.unwrap();
            s.write_all(&partial[..700]).await.unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
            socket2::SockRef::from(&s)
                .set_linger(Some(Duration::ZERO))
                .unwrap();
            drop(s);
            for _ in 0..100 {
                if refused(ChainPeekRefusal::Closed) == 3 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            assert_eq!(refused(ChainPeekRefusal::Closed), 3);
            assert_eq!(refused(ChainPeekRefusal::Error), 0);
            let l = stats.listener(0).unwrap();
            assert_eq!(l.downstream_listener_filter_timeout.load(Relaxed), 0);
            assert_eq!(plain_taken.get(), 0, "not served as plaintext");

            // A hello of 16 380 message bytes (the limit is 16 KiB) in records of 4 KiB.
            let one_record = hello(0, 16 * 1024);
            // (The padding extension takes 4 bytes of header besides its padding.)
            let padding = 16_380 - (one_record.len() - 5) - 4;
            assert_eq!(hello(padding, 16 * 1024).len() - 5, 16_380);
            let split = hello(padding, 4096);
            assert_eq!(split.len(), 16_380 + 4 * 5, "four records, over 16 KiB");
            assert_eq!(exchange(at, &split).await, split, "every byte, to chain a");
            assert_eq!(refused(ChainPeekRefusal::TooLarge), 0);
            // One byte more of message is refused, counted.
            let over = hello(padding + 5, 4096);
            assert_eq!(exchange(at, &over).await, b"");
            assert_eq!(refused(ChainPeekRefusal::TooLarge), 1);
        });
    }

    /// A port whose chain asks nothing of the ClientHello is served without waiting for the
    /// client's first bytes, even when another chain of the listener routes by server name:
    /// a server-first protocol (postgres, SMTP: the upstream speaks first) on its own port
    /// gets its banner through while the client has sent nothing.
    #[test]
    fn a_server_first_port_is_served_before_the_client_speaks_beside_an_sni_chain() {
        on_local_runtime(async {
            // The server-first upstream: its banner at once, then what it reads.
            let (db, db_at) = bound();
            tokio::task::spawn_local(async move {
                while let Ok((mut s, _)) = db.accept().await {
                    tokio::task::spawn_local(async move {
                        let _ = s.write_all(b"220 banner\r\n").await;
                        let mut buf = Vec::new();
                        let _ = s.read_to_end(&mut buf).await;
                        let _ = s.write_all(&buf).await;
                    });
                }
            });
            let (a_at, _) = answering(|b| b);
            let net = CapturedNet::default();
            let dst = net.original_dst.clone();
            let ([at], stats, _worker) = serve(
                net,
                &format!(
                    "listeners:
  - name: inbound
    address: {{at}}
    original_dst: redirect
    filter_chains:
      - filter_chain_match: {{ server_names: [a.example] }}
        tcp_proxy: {{ cluster: a }}
      - filter_chain_match: {{ destination_port: 5432 }}
        tcp_proxy: {{ cluster: db }}
clusters:
  - {{ name: a, hosts: [ {{ address: {a_at} }} ] }}
  - {{ name: db, hosts: [ {{ address: {db_at} }} ] }}
"
                ),
            );
            dst.set(Some(SocketAddr::new(db_at.ip(), 5432)));
            let mut s = tokio::net::TcpStream::connect(at).await.unwrap();
            let mut banner = [0u8; 12];
            tokio::time::timeout(Duration::from_secs(3), s.read_exact(&mut banner))
                .await
                .expect("the banner comes before the client sends a byte")
                .unwrap();
            assert_eq!(&banner, b"220 banner\r\n");
            s.write_all(b"then the client").await.unwrap();
            s.shutdown().await.unwrap();
            let mut rest = Vec::new();
            s.read_to_end(&mut rest).await.unwrap();
            assert_eq!(rest, b"then the client");
            let l = stats.listener(0).unwrap();
            assert_eq!(l.downstream_listener_filter_timeout.load(Relaxed), 0);
            assert_eq!(l.downstream_cx_no_filter_chain_match.load(Relaxed), 0);
        });
    }

    /// Istio's inbound shape: a capture listener whose filter chains are picked by the
    /// original destination's port — a chain for port 8080 (an echo), the passthrough chain
    /// for every other port (to the original destination), and plaintext vs TLS on 8080
    /// (`raw_buffer` takes this plaintext client; a TLS chain for 8080 exists beside it).
    #[test]
    fn a_capture_listener_picks_its_filter_chain_by_the_original_destination_port() {
        on_local_runtime(async {
            // The "real peer" a pass-through reaches: answers `passed`, then closes.
            let (peer_at, _) = answering(|_| b"passed".to_vec());
            // Where port 8080's chain sends: echoes.
            let (app_at, _) = answering(|b| b);
            let net = CapturedNet::default();
            let dst = net.original_dst.clone();
            let ([inbound_at], stats, _worker) = serve(
                net,
                &format!(
                    "listeners:
  - name: inbound
    address: {{at}}
    original_dst: redirect
    filter_chains:
      - filter_chain_match: {{ destination_port: 8080, transport_protocol: tls }}
        tcp_proxy: {{ cluster: nowhere }}
      - filter_chain_match: {{ destination_port: 8080, transport_protocol: raw_buffer }}
        tcp_proxy: {{ cluster: app }}
      - tcp_proxy: {{ cluster: pass }}
clusters:
  - {{ name: pass, type: original_dst }}
  - {{ name: app, hosts: [ {{ address: {app_at} }} ] }}
  - {{ name: nowhere, hosts: [ {{ address: 127.0.0.1:9 }} ] }}
"
                ),
            );
            // To port 8080 of the workload: the 8080 plaintext chain.
            dst.set(Some(SocketAddr::new(peer_at.ip(), 8080)));
            assert_eq!(exchange(inbound_at, b"to 8080").await, b"to 8080");
            // To another port: the passthrough chain, to the original destination.
            dst.set(Some(peer_at));
            assert_eq!(exchange(inbound_at, b"elsewhere").await, b"passed");
            let l = stats.listener(0).unwrap();
            assert_eq!(l.downstream_cx_total.load(Relaxed), 2);
            assert_eq!(l.downstream_cx_no_filter_chain_match.load(Relaxed), 0);
        });
    }

    /// A worker whose listener's one chain takes the ClientHellos for `a.example` to an upstream
    /// that echoes ([`answering`]) and closes what else comes: the listener's address, the count
    /// of connections the upstream took, the stats, the worker.
    fn serve_a_chain_only() -> (
        SocketAddr,
        Rc<Cell<usize>>,
        Arc<WorkerStats>,
        Worker<TokioNet>,
    ) {
        let (a_at, a_taken) = answering(|b| b);
        let ([at], stats, worker) = serve(
            TokioNet::default(),
            &format!(
                "listeners:
  - name: l
    address: {{at}}
    filter_chains:
      - filter_chain_match: {{ server_names: [a.example] }}
        tcp_proxy: {{ cluster: a }}
clusters:
  - {{ name: a, hosts: [ {{ address: {a_at} }} ] }}
"
            ),
        );
        (at, a_taken, stats, worker)
    }

    /// With `continue_on_listener_filters_timeout`, a client that sent part of a ClientHello
    /// and then waits (sends nothing more, keeps its side open) is served by the default chain
    /// once `listener_filters_timeout` passes — and that chain reads the bytes the peek saw
    /// without waiting for new ones: the peek that waited for more cleared the socket's
    /// readiness, and the first read after it must not wait for an edge that never comes.
    #[test]
    fn after_the_listener_filters_timeout_the_chain_reads_the_peeked_bytes_without_new_ones() {
        on_local_runtime(async {
            // The default chain's upstream echoes as it reads (the client never closes).
            let (echo, echo_at) = bound();
            tokio::task::spawn_local(async move {
                while let Ok((mut s, _)) = echo.accept().await {
                    tokio::task::spawn_local(async move {
                        let (mut r, mut w) = s.split();
                        let _ = tokio::io::copy(&mut r, &mut w).await;
                    });
                }
            });
            let (a_at, a_taken) = answering(|b| b);
            let ([at], stats, _worker) = serve(
                TokioNet::default(),
                &format!(
                    "listeners:
  - name: l
    address: {{at}}
    listener_filters_timeout: 200ms
    continue_on_listener_filters_timeout: true
    filter_chains:
      - filter_chain_match: {{ server_names: [a.example] }}
        tcp_proxy: {{ cluster: a }}
    tcp_proxy: {{ cluster: d }}
clusters:
  - {{ name: a, hosts: [ {{ address: {a_at} }} ] }}
  - {{ name: d, hosts: [ {{ address: {echo_at} }} ] }}
"
                ),
            );
            let partial = &a_hello(2500, 16 * 1024)[..700];
            let mut s = tokio::net::TcpStream::connect(at).await.unwrap();
            s.write_all(partial).await.unwrap();
            let mut back = vec![0u8; partial.len()];
            tokio::time::timeout(Duration::from_secs(3), s.read_exact(&mut back))
                .await
                .expect("the default chain relays the peeked bytes without new ones")
                .unwrap();
            assert_eq!(back, partial, "every peeked byte, echoed");
            let l = stats.listener(0).unwrap();
            assert_eq!(l.downstream_listener_filter_timeout.load(Relaxed), 1);
            assert_eq!(a_taken.get(), 0);
        });
    }

    /// A client that sends the rest of its ClientHello and its FIN together, while the peek
    /// waits for the first record: the peeks that follow see the FIN with a full buffer — more
    /// bytes may wait behind it — so the hello is taken and its chain gets every byte, not
    /// refused as "closed during its ClientHello". Deterministic: the client is a task of the
    /// worker's own thread, and writes the rest and shuts down in one poll, so the worker's
    /// next look at the socket sees both.
    #[test]
    fn a_fin_seen_with_a_full_peek_buffer_is_not_a_close_during_the_client_hello() {
        use crate::stats::ChainPeekRefusal;
        on_local_runtime(async {
            let (at, a_taken, stats, _worker) = serve_a_chain_only();
            // Three records: after the first, a peek for each header and one for the rest,
            // each filling its buffer.
            let hello = a_hello(9000, 4096);
            // The worker peeks the first 100 bytes and waits for the first record's 4 101.
            let back = exchange_in_two(at, hello.clone(), 100).await;
            assert_eq!(back, hello, "every byte, to chain a");
            assert_eq!(a_taken.get(), 1);
            let l = stats.listener(0).unwrap();
            assert_eq!(
                l.downstream_listener_filter_refused[ChainPeekRefusal::Closed as usize]
                    .load(Relaxed),
                0
            );
        });
    }

    /// A client that sends its ClientHello one byte a segment costs a few peeks, not one a
    /// segment: the socket wakes the peek only once the bytes the parser needs are there.
    #[test]
    fn a_client_hello_sent_a_byte_a_segment_costs_a_few_peeks_not_one_a_byte() {
        on_local_runtime(async {
            let (at, _, _, _worker) = serve_a_chain_only();
            let hello = a_hello(300, 16 * 1024);
            let sent = hello.clone();
            let client = tokio::task::spawn_blocking(move || {
                use std::io::{Read as _, Write as _};
                let mut s = std::net::TcpStream::connect(at).unwrap();
                s.set_nodelay(true).unwrap();
                for b in &sent {
                    s.write_all(std::slice::from_ref(b)).unwrap();
                    std::thread::sleep(Duration::from_micros(200));
                }
                s.shutdown(std::net::Shutdown::Write).unwrap();
                s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                let mut back = Vec::new();
                s.read_to_end(&mut back).unwrap();
                back
            });
            crate::net::PEEKS.with(|p| p.set(0));
            assert_eq!(client.await.unwrap(), hello, "every byte, to chain a");
            let peeks = crate::net::PEEKS.with(std::cell::Cell::get);
            assert!(
                peeks <= 8,
                "{peeks} peeks for a hello of {} one-byte segments",
                hello.len()
            );
        });
    }
}

/// A request routed to an `original_dst` cluster on a connection that was not captured (a
/// client dialled the listener itself): there is nowhere to send it, and the listener's own
/// address would loop.
#[derive(Debug, PartialEq, Eq)]
pub struct NoOriginalDestination;

/// The header that names a request's destination for an `original_dst` cluster with
/// `use_http_header` (Envoy's).
pub const ORIGINAL_DST_HOST_HEADER: &str = "x-envoy-original-dst-host";

/// Where a request routed to the cluster `cluster` goes when that is not one of its hosts:
/// `Ok(None)` for a cluster with hosts; `Ok(Some(d))` for an `original_dst` cluster — the
/// `IP:PORT` of the request's `x-envoy-original-dst-host` when the cluster has
/// `use_http_header` and the value parses (`header` reads a request header), else the original
/// destination of the request's connection.
pub fn request_destination<'h>(
    cluster: &sluice_core::config::ClusterConfig,
    original_dst: Option<SocketAddr>,
    header: impl FnOnce(&str) -> Option<&'h [u8]>,
) -> Result<Option<SocketAddr>, NoOriginalDestination> {
    match cluster.kind {
        sluice_core::config::ClusterKind::OriginalDst => {
            let named = cluster
                .use_http_header
                .then(|| header(ORIGINAL_DST_HOST_HEADER))
                .flatten()
                .and_then(|v| std::str::from_utf8(v).ok()?.trim().parse().ok());
            named
                .or(original_dst)
                .map(Some)
                .ok_or(NoOriginalDestination)
        }
        _ => Ok(None),
    }
}
