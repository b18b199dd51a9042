//! A downstream connection as the HTTP and Bolt drivers see it: the accepted socket, or TLS
//! terminated over it (the listener's `tls`).
//!
//! What this module owns: [`Downstream`], the one stream type the protocol code of `http`,
//! `bolt` and `protocol: auto` listeners runs over, and what the TLS session tells that code —
//! the ALPN protocol the handshake agreed on (which picks the HTTP codec, see
//! [`Downstream::alpn`]), whether the request came over TLS (`x-forwarded-proto: https`), and
//! the client's certificate and server name (`x-forwarded-client-cert`, built once per
//! connection from them).
//!
//! Invariants: a `Tls` stream's handshake is complete (the engine's `tls_handshake` built it);
//! only a `Plain` stream can be handed to another process ([`Downstream::into_socket`]) — a TLS
//! session's keys stay with the process that negotiated them.
//!
//! Cost: one predictable branch per read or write; nothing per request.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The ALPN protocol the TLS handshake agreed on, as far as the HTTP codec choice goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Alpn {
    /// Cleartext, or TLS without ALPN: the bytes decide (the h2 preface or HTTP/1.1).
    None,
    /// `h2`: HTTP/2 from the first byte.
    Http2,
    /// `http/1.1`: HTTP/1.1, no sniffing.
    Http1,
    /// Another protocol the listener's `alpn` lists (not an HTTP codec).
    Other,
}

/// A downstream connection: the accepted socket, or TLS over it.
pub(crate) enum Downstream<S> {
    /// Cleartext.
    Plain(S),
    /// TLS terminated by the proxy, handshake complete.
    Tls(Box<tokio_rustls::server::TlsStream<S>>),
}

impl<S> Downstream<S> {
    /// Whether the connection is TLS.
    pub(crate) fn is_tls(&self) -> bool {
        matches!(self, Downstream::Tls(_))
    }

    /// The protocol ALPN agreed on.
    pub(crate) fn alpn(&self) -> Alpn {
        match self {
            Downstream::Plain(_) => Alpn::None,
            Downstream::Tls(tls) => match tls.get_ref().1.alpn_protocol() {
                None => Alpn::None,
                Some(b"h2") => Alpn::Http2,
                Some(b"http/1.1") => Alpn::Http1,
                Some(_) => Alpn::Other,
            },
        }
    }

    /// The client's certificate (the leaf) when it presented one over TLS.
    pub(crate) fn peer_certificate(&self) -> Option<&rustls::pki_types::CertificateDer<'static>> {
        self.peer_certificates()?.first()
    }

    /// The chain the client presented over TLS, its own certificate first (empty: none).
    pub(crate) fn peer_certificates(
        &self,
    ) -> Option<&[rustls::pki_types::CertificateDer<'static>]> {
        match self {
            Downstream::Plain(_) => None,
            Downstream::Tls(tls) => tls.get_ref().1.peer_certificates(),
        }
    }

    /// The server name the client asked for over TLS.
    pub(crate) fn server_name(&self) -> Option<&str> {
        match self {
            Downstream::Plain(_) => None,
            Downstream::Tls(tls) => tls.get_ref().1.server_name(),
        }
    }

    /// The socket, to hand the connection to another process; `Err(self)` for TLS.
    pub(crate) fn into_socket(self) -> Result<S, Self> {
        match self {
            Downstream::Plain(s) => Ok(s),
            tls @ Downstream::Tls(_) => Err(tls),
        }
    }
}

impl<S: crate::splice::AsTcpStream> Downstream<S> {
    /// The TCP socket under the connection, TLS or not (`None` in the simulator).
    pub(crate) fn tcp_socket(&self) -> Option<&tokio::net::TcpStream> {
        match self {
            Downstream::Plain(s) => s.as_tcp_stream(),
            Downstream::Tls(tls) => tls.get_ref().0.as_tcp_stream(),
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for Downstream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Downstream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Downstream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Downstream<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Downstream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Downstream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Downstream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Downstream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }
    fn is_write_vectored(&self) -> bool {
        match self {
            Downstream::Plain(s) => s.is_write_vectored(),
            Downstream::Tls(s) => s.is_write_vectored(),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Downstream::Plain(s) => Pin::new(s).poll_flush(cx),
            Downstream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Downstream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Downstream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}
