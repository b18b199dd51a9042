//! The Bolt side of the simulated peers: reading frames, and an echo upstream.

use std::rc::Rc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use turmoil::net::TcpListener;
use turmoil::net::tcp::OwnedReadHalf;

use crate::bolt::wire::{self, Frame};

/// Reads the next frame from `rd` (`buf` holds what was read past it): `Ok(None)` when the
/// connection ends, an error when the bytes do not decode.
pub async fn next_frame(
    rd: &mut OwnedReadHalf,
    buf: &mut Vec<u8>,
) -> Result<Option<Frame>, String> {
    let mut chunk = [0u8; 4096];
    loop {
        match wire::decode(buf)? {
            Some(frame) => {
                buf.drain(..frame.len);
                return Ok(Some(frame));
            }
            None => match rd.read(&mut chunk).await {
                Ok(0) | Err(_) => return Ok(None),
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            },
        }
    }
}

/// What a scenario's Bolt upstream records and checks; [`serve`] does the protocol.
pub trait Upstream: 'static {
    /// The upstream's name, in its answers' bodies (`content@name`) and in violations.
    fn name(&self) -> &'static str;
    /// Whether one-way requests are expected (else they are unexpected frames).
    fn oneway(&self) -> bool;
    /// Records a violation.
    fn violation(&self, what: String);
    /// An undecodable frame arrived; the connection is then closed.
    fn undecodable(&self, e: &str) {
        self.violation(format!(
            "{} received an undecodable frame: {e}",
            self.name()
        ));
    }
    /// A request (or a one-way request) carrying `content` arrived.
    fn received(&self, frame: &Frame, content: &str);
}

/// Serves Bolt on `listener`: heartbeats are answered at once, requests after
/// [`super::work`]`(content, max_work_ms)` with `content@name`, one-way requests never.
pub async fn serve<U: Upstream>(
    listener: TcpListener,
    upstream: Rc<U>,
    max_work_ms: u64,
) -> turmoil::Result {
    loop {
        let (stream, _) = listener.accept().await?;
        let up = upstream.clone();
        let (mut rd, mut wr) = stream.into_split();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Vec<u8>>();
        tokio::task::spawn_local(async move {
            while let Some(bytes) = rx.recv().await {
                if wr.write_all(&bytes).await.is_err() {
                    return;
                }
            }
        });
        tokio::task::spawn_local(async move {
            let name = up.name();
            let mut buf = Vec::with_capacity(4096);
            loop {
                let frame = match next_frame(&mut rd, &mut buf).await {
                    Ok(Some(f)) => f,
                    Ok(None) => return,
                    Err(e) => {
                        up.undecodable(&e);
                        return;
                    }
                };
                match (frame.kind, frame.cmd) {
                    (1, 0) => {
                        let mut out = Vec::new();
                        wire::response(
                            &mut out,
                            frame.version,
                            0,
                            frame.id,
                            frame.codec,
                            0,
                            "",
                            b"",
                        );
                        let _ = tx.send(out);
                    }
                    (2, 1) if up.oneway() => {
                        let content = String::from_utf8_lossy(&frame.content).into_owned();
                        up.received(&frame, &content);
                    }
                    (1, 1) => {
                        let content = String::from_utf8_lossy(&frame.content).into_owned();
                        up.received(&frame, &content);
                        let tx = tx.clone();
                        tokio::task::spawn_local(async move {
                            tokio::time::sleep(super::work(content.as_bytes(), max_work_ms)).await;
                            let mut out = Vec::new();
                            let body = format!("{content}@{name}");
                            wire::response(
                                &mut out,
                                frame.version,
                                2,
                                frame.id,
                                frame.codec,
                                0,
                                "java.lang.String",
                                body.as_bytes(),
                            );
                            let _ = tx.send(out);
                        });
                    }
                    other => up.violation(format!("{name} received an unexpected frame {other:?}")),
                }
            }
        });
    }
}
