//! The epoll driver: a tokio current-thread runtime (Sluice's own driver), one task per
//! downstream connection, each with its upstream connection. Per request it makes the calls a
//! readiness loop needs: `recvfrom` downstream, `sendto` upstream, `recvfrom` upstream,
//! `sendto` downstream, and `epoll_wait` batched over every connection that became readable.
//! A read that fills less than the buffer clears tokio's readiness, so there is no extra
//! `EAGAIN` read per message.

use std::io;
use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::Pair;

/// Read buffer per connection pair (allocated once per downstream connection).
const READ_BUF: usize = 16 * 1024;

/// Serves until the process is killed.
pub fn run(listen: SocketAddr, upstream: SocketAddr) -> io::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async move {
        let listener = TcpListener::bind(listen).await?;
        loop {
            let (down, _) = listener.accept().await?;
            tokio::task::spawn_local(async move {
                if let Err(e) = serve(down, upstream).await {
                    eprintln!("connection: {e}");
                }
            });
        }
    })
}

async fn serve(mut down: TcpStream, upstream: SocketAddr) -> io::Result<()> {
    down.set_nodelay(true)?;
    let mut up = TcpStream::connect(upstream).await?;
    up.set_nodelay(true)?;
    let mut pair = Pair::new();
    let mut buf = vec![0u8; READ_BUF];
    loop {
        if !pair.pending_up().is_empty() {
            let n = pair.pending_up().len();
            up.write_all(pair.pending_up()).await?;
            let _ = pair.sent_up(n);
            continue;
        }
        if !pair.pending_down().is_empty() {
            let n = pair.pending_down().len();
            down.write_all(pair.pending_down()).await?;
            let _ = pair.sent_down(n);
            continue; // a pipelined request may be waiting to go upstream
        }
        if pair.finished() {
            return Ok(());
        }
        if pair.awaiting_response() {
            let n = up.read(&mut buf).await?;
            if n == 0 {
                return Ok(());
            }
            let _ = pair.on_up(&buf[..n]);
        } else {
            let n = down.read(&mut buf).await?;
            if n == 0 {
                return Ok(());
            }
            let _ = pair.on_down(&buf[..n]);
        }
    }
}
