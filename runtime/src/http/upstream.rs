//! A try's upstream: the connection it runs on — a pooled HTTP/1.1 keep-alive connection, a
//! new one (TCP, TLS to a TLS cluster), or a stream on a pooled HTTP/2 connection seen as one
//! ([`Upstream`]) — and how a try gets it ([`Engine::connect_try`]), raced against the request
//! stream's timers; the circuit-breaker units a connection holds ([`BreakerUnit`], given back on
//! drop) and the host gauge it counts in ([`UpstreamConn`]).
//!
//! Invariants: a new connection is opened only after the stream granted it
//! (`Output::OpenConnection`, its breaker units), and keeps its `max_connections` unit until it
//! closes; nothing of the request is written before the connect (and any TLS or HTTP/2
//! handshake) succeeded; a connection is pooled only for the host its slot still has.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use sluice_core::cluster::HostId;
use sluice_core::health::{Permit, Resource};
use sluice_core::host::HostRef;
use sluice_core::l7::exchange::TryFailure;
use sluice_core::l7::stream::{Input, Output};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant as TokioInstant;

use super::deadline_of;
use super::stream::{Forwarding, StreamGuard};
use crate::engine::Engine;
use crate::h2_upstream::{H2Upstream, Peer};
use crate::net::Network;
use crate::now;
use crate::stats::{WorkerStats, bump, gauge_add};
use crate::tls::MaybeTls;
use crate::upstreams::{ClusterRef, ConnectError};

/// An upstream connection, counted in its host's `cx_active` gauge from connect to drop
/// (pooled idle time included). Reads and writes go straight to the stream.
pub(crate) struct UpstreamConn<S> {
    stream: S,
    stats: Arc<WorkerStats>,
    cluster: u32,
    host: u32,
    /// The connection's unit of the cluster's `max_connections` breaker, given back on drop.
    _connection_unit: Option<BreakerUnit>,
}

impl<S> UpstreamConn<S> {
    pub(super) fn new(
        stream: S,
        stats: &Arc<WorkerStats>,
        cluster: usize,
        host: usize,
        connection_unit: Option<BreakerUnit>,
    ) -> Self {
        if let Some(h) = stats.host(cluster, host) {
            bump(&h.cx_total, 1);
            gauge_add(&h.cx_active, true);
        }
        UpstreamConn {
            stream,
            stats: stats.clone(),
            cluster: cluster as u32,
            host: host as u32,
            _connection_unit: connection_unit,
        }
    }
}

/// The upstream of one try: an HTTP/1.1 connection (pooled between requests), or a stream on
/// a pooled HTTP/2 connection seen as one ([`crate::h2_upstream`]).
pub(crate) enum Upstream<S> {
    Http1(UpstreamConn<S>),
    Http2(Box<H2Upstream>),
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for Upstream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Upstream::Http1(c) => Pin::new(c).poll_read(cx, buf),
            Upstream::Http2(s) => Pin::new(&mut **s).poll_read(cx, buf),
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Upstream<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Upstream::Http1(c) => Pin::new(c).poll_write(cx, buf),
            Upstream::Http2(s) => Pin::new(&mut **s).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Upstream::Http1(c) => Pin::new(c).poll_write_vectored(cx, bufs),
            Upstream::Http2(s) => Pin::new(&mut **s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Upstream::Http1(c) => c.is_write_vectored(),
            Upstream::Http2(_) => false,
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Upstream::Http1(c) => Pin::new(c).poll_flush(cx),
            Upstream::Http2(s) => Pin::new(&mut **s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Upstream::Http1(c) => Pin::new(c).poll_shutdown(cx),
            Upstream::Http2(s) => Pin::new(&mut **s).poll_shutdown(cx),
        }
    }
}

/// One unit of a cluster's circuit breaker, given back when dropped (on every path out of a
/// request, and when an upstream connection closes).
pub(crate) struct BreakerUnit {
    cluster: ClusterRef,
    permit: Option<Permit>,
}

impl BreakerUnit {
    /// Takes a unit of `resource`, or `None` (counted by the breaker) at its limit.
    pub(crate) fn acquire(cluster: &ClusterRef, resource: Resource) -> Option<Self> {
        let permit = cluster
            .borrow_mut()
            .breakers_mut()
            .try_acquire(resource)
            .ok()?;
        Some(BreakerUnit {
            cluster: cluster.clone(),
            permit: Some(permit),
        })
    }
}

impl BreakerUnit {
    /// Wraps a unit already taken (by the core's request stream) so that it is given back on
    /// drop.
    pub(crate) fn adopt(cluster: &ClusterRef, permit: Permit) -> Self {
        BreakerUnit {
            cluster: cluster.clone(),
            permit: Some(permit),
        }
    }
}

impl Drop for BreakerUnit {
    fn drop(&mut self) {
        if let Some(p) = self.permit.take() {
            // Never dropped while the cluster is borrowed: borrows in the drivers last one
            // statement. A failed borrow would leak one unit, so it is a bug: assert it.
            match self.cluster.try_borrow_mut() {
                Some(mut c) => c.breakers_mut().release(p),
                None => {
                    debug_assert!(false, "breaker unit dropped while its cluster is borrowed")
                }
            }
        }
    }
}

impl<S> Drop for UpstreamConn<S> {
    fn drop(&mut self) {
        if let Some(h) = self.stats.host(self.cluster as usize, self.host as usize) {
            gauge_add(&h.cx_active, false);
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for UpstreamConn<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for UpstreamConn<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

impl<N: Network> Engine<N> {
    /// Starts HTTP/2 on a new upstream connection to `peer` (the host `host`, or a
    /// destination of an `original_dst` cluster), pools it, and opens the request's stream on
    /// it. `None`: the stream's timer (`timer`) fired first;
    /// `Some(Err)`: the handshake failed (nothing of the request was written).
    pub(super) async fn open_http2(
        &self,
        ci: usize,
        host: HostRef,
        peer: Peer,
        conn: UpstreamConn<MaybeTls<N::Stream>>,
        tls: bool,
        timer: TokioInstant,
    ) -> Option<Result<Upstream<MaybeTls<N::Stream>>, ()>> {
        // Drawn only for a cluster with a keepalive: other draws (balancing) stay as they were.
        let keepalive = self.config.clusters[ci].http2_keepalive;
        let jitter_seed = keepalive.map_or(0, |_| self.rng.borrow_mut().next_u64());
        let handshake = tokio::select! {
            biased;
            r = crate::h2_upstream::handshake(
                conn,
                self.stats(),
                now(),
                keepalive,
                ci,
                peer,
                jitter_seed,
            ) => r,
            () = tokio::time::sleep_until(timer) => return None,
        };
        Some(match handshake {
            Ok(c) => {
                // Pooled only if the slot still has the host it was made for (the connect or
                // handshake may have outlasted a DNS answer that moved the slot): otherwise it
                // serves this request alone, and closes with it. A destination is always current.
                if matches!(peer, Peer::Destination(_))
                    || self.upstreams.cluster(ci).borrow().is_current(host)
                {
                    self.upstreams.h2_pool().put(ci, peer, c.clone());
                }
                Ok(Upstream::Http2(Box::new(H2Upstream::new(
                    c,
                    self.stats(),
                    tls,
                ))))
            }
            Err(e) => {
                tracing::debug!(error = %e, "HTTP/2 upstream handshake failed");
                Err(())
            }
        })
    }
}

/// A try's upstream connection, as [`Engine::connect_try`] got it.
pub(super) struct Connected<S> {
    pub(super) up: Upstream<S>,
    pub(super) host: HostId,
    /// The host as picked (id and slot epoch): what the try's results and its connection are
    /// for, even if a DNS answer gives the slot to another host meanwhile.
    pub(super) picked: HostRef,
    pub(super) try_start: sluice_core::Instant,
    /// Taken from a pool, not opened for this try.
    pub(super) reused: bool,
    /// A pooled HTTP/1.1 connection, which the upstream may have closed meanwhile (the stale
    /// keep-alive race: the core retries such a try once).
    pub(super) may_be_stale: bool,
}

impl<N: Network> Engine<N> {
    /// Gets the connection for a try to `host` at `address` (the stream's pick): a pooled one
    /// when the stream allows it (`allow_pooled`), else a new one — TCP, TLS to a TLS cluster,
    /// HTTP/2's handshake to an HTTP/2 one — each raced against the stream's timers. A new
    /// connection needs the stream's leave first (`OpenConnection`: its breaker units). `Err`:
    /// no connection for this try, with the stream's next output (the failure or timeout has
    /// gone to the core, whose events count it).
    pub(super) async fn connect_try(
        &self,
        req: &mut Forwarding<'_>,
        stream: &mut StreamGuard,
        tries: &mut u32,
        host: HostId,
        address: SocketAddr,
        allow_pooled: bool,
    ) -> Result<Connected<MaybeTls<N::Stream>>, Option<Output>> {
        let (ci, http2, destination) = (req.ci, req.http2, req.destination);
        // The host as picked, and how it is reached (its slot's transport then).
        let (picked, transport) = match stream.picked {
            Some(picked) => (picked, stream.transport),
            None => {
                let c = self.upstreams.cluster(ci).borrow();
                (c.host_ref(host), c.transport(host))
            }
        };
        let try_start = now();
        *tries += 1;
        req.last_host = Some(host);
        req.upstream_addr = Some(address);
        // Connection: pooled or fresh, raced against the stream's timers. The HTTP/2 pool
        // is per host, and per destination for an original_dst cluster.
        let peer = match destination {
            Some(d) => Peer::Destination(d),
            None => Peer::Host(host.index()),
        };
        // Whether this host is spoken to over TLS (the cluster's `tls`, or the host's pick
        // of `transport_socket_matches`): HTTP/2's `:scheme`. Asked only where an HTTP/2
        // stream starts, not per HTTP/1.1 request.
        let tls_cluster = || matches!(self.tls.current().connector(ci, transport), Ok(Some(_)));
        let pooled = if !allow_pooled {
            None
        } else if http2 {
            let timer = deadline_of(stream.poll_timeout());
            self.upstreams
                .h2_pool()
                .wait_for_room(ci, peer, self.stats(), timer)
                .await
                .map(|c| Upstream::Http2(Box::new(H2Upstream::new(c, self.stats(), tls_cluster()))))
        } else {
            match destination {
                None => self.upstreams.pool().take(ci, host.index(), try_start),
                Some(d) => self.upstreams.pool().take_to(ci, d, try_start),
            }
            .map(Upstream::Http1)
        };
        let reused = pooled.is_some();
        // The core retries a try on a pooled connection that closed with no answer once
        // (the stale keep-alive race). For HTTP/2 only a connection the upstream closed or
        // reset without a GOAWAY can be stale (known once the try failed): a GOAWAY says which
        // streams were processed (the others fail as `Refused`), and a reset stream may have
        // been processed — sent again only if `retry_on` says so.
        let may_be_stale = reused && !http2;
        let (up, step) = match pooled {
            Some(s) => {
                // Taking a pooled HTTP/1.1 connection does not wait: the try's start is its
                // connect time too (one clock read per request fewer). HTTP/2 may have waited
                // for room on its connection.
                let at = if http2 { now() } else { try_start };
                let step = self.stream_input_at(
                    ci,
                    stream,
                    Input::Connected {
                        reused: may_be_stale,
                    },
                    at,
                );
                (s, step)
            }
            None => {
                // A new connection needs a unit of max_connections (kept by the connection
                // until it closes) and, while it is being established, of
                // max_pending_requests. Either at its limit: 503 UO.
                let step = self.stream_input(ci, stream, Input::OpenConnection);
                if !matches!(step, Some(Output::OpenConnection)) {
                    return Err(step);
                }
                // Requests for this host (destination) wait for this connection rather than
                // open theirs.
                let _connecting = http2.then(|| self.upstreams.h2_pool().connecting(ci, peer));
                let timer = deadline_of(stream.poll_timeout());
                // The connect and, to a TLS cluster, the handshake (the upstream's chain
                // and identity verified) within the stream's next deadline: a failed
                // handshake is a connect failure, and nothing of the request is written
                // before it succeeded. Boxed (once per new upstream connection): the TLS
                // handshake's state is large and would otherwise be laid out in every
                // connection's request path.
                let connected = Box::pin(self.upstreams.connect(
                    &self.tls,
                    ci,
                    transport,
                    address,
                    Some(timer),
                ))
                .await;
                let s = match connected {
                    Ok(s) => s,
                    Err(ConnectError::Timeout) => {
                        // The connect deadline, or the route's (which caps it): the
                        // stream's event says which.
                        return Err(self.stream_input(ci, stream, Input::Timeout));
                    }
                    Err(e) => {
                        tracing::debug!(%address, error = %e, "upstream connect failed");
                        return Err(self.stream_input(ci, stream, Input::ConnectFailed));
                    }
                };
                let step = self.stream_input(ci, stream, Input::Connected { reused: false });
                let unit = stream.take_connection_unit();
                let conn = UpstreamConn::new(s, self.stats(), ci, host.index(), unit);
                if !http2 {
                    (Upstream::Http1(conn), step)
                } else {
                    let timer = deadline_of(stream.poll_timeout());
                    let opened =
                        Box::pin(self.open_http2(ci, picked, peer, conn, tls_cluster(), timer));
                    match opened.await {
                        Some(Ok(up)) => (up, step),
                        Some(Err(())) => {
                            return Err(self.stream_input(
                                ci,
                                stream,
                                Input::TryFailed(TryFailure::Closed {
                                    request_written: false,
                                    reused: false,
                                }),
                            ));
                        }
                        None => return Err(self.stream_input(ci, stream, Input::Timeout)),
                    }
                }
            }
        };
        debug_assert!(step.is_none(), "unexpected stream output {step:?}");
        if let Some(h) = self.stats().host(ci, host.index()) {
            bump(&h.rq_total, 1);
        }
        self.publish_host_active(ci, host);
        Ok(Connected {
            up,
            host,
            picked,
            try_start,
            reused,
            may_be_stale,
        })
    }
}
