//! The byte stream a session tunnel's HTTP/2 connection runs on: what the connection writes
//! leaves as `Bytes` chunks, each sent as one `BytesMessage` of the `Control.Session` stream,
//! and the messages received are read from as they are. A `tokio::io::duplex` in between cost
//! two more copies of every byte (into its buffer, and out of it into a message).

use futures::channel::mpsc;
use futures::{Sink, Stream};
use prost::bytes::{Bytes, BytesMut};
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Chunks queued in each direction (each at most [`super::TUNNEL_BUFFER`] bytes).
const QUEUE: usize = 4;

/// One end of the tunnel's connection (given to the HTTP/2 client or server).
#[derive(Debug)]
pub struct TunnelIo {
    inbound: mpsc::Receiver<Bytes>,
    /// What is left of the chunk being read.
    chunk: Bytes,
    outbound: mpsc::Sender<Bytes>,
}

/// A tunnel end, the sender feeding what it reads (the messages received: dropping it is the
/// end of the stream) and the receiver of what it writes (ending when the end is shut down or
/// dropped).
pub fn tunnel_io() -> (TunnelIo, mpsc::Sender<Bytes>, mpsc::Receiver<Bytes>) {
    let (in_tx, in_rx) = mpsc::channel(QUEUE);
    let (out_tx, out_rx) = mpsc::channel(QUEUE);
    (TunnelIo { inbound: in_rx, chunk: Bytes::new(), outbound: out_tx }, in_tx, out_rx)
}

fn gone() -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, "the session tunnel's stream is closed")
}

impl AsyncRead for TunnelIo {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        while this.chunk.is_empty() {
            match Pin::new(&mut this.inbound).poll_next(cx) {
                Poll::Ready(Some(b)) => this.chunk = b,
                // End of stream: a read of nothing.
                Poll::Ready(None) => return Poll::Ready(Ok(())),
                Poll::Pending => return Poll::Pending,
            }
        }
        let n = this.chunk.len().min(buf.remaining());
        buf.put_slice(&this.chunk.split_to(n));
        Poll::Ready(Ok(()))
    }
}

impl TunnelIo {
    /// Waits for room for one chunk.
    fn poll_room(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.outbound).poll_ready(cx).map_err(|_| gone())
    }

    fn send(&mut self, chunk: Bytes) -> io::Result<()> {
        Pin::new(&mut self.outbound).start_send(chunk).map_err(|_| gone())
    }
}

impl AsyncWrite for TunnelIo {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        if let Err(e) = std::task::ready!(self.poll_room(cx)) {
            return Poll::Ready(Err(e));
        }
        let n = data.len().min(super::TUNNEL_BUFFER);
        self.send(Bytes::copy_from_slice(&data[..n]))?;
        Poll::Ready(Ok(n))
    }

    /// h2 writes a frame's header and payload as separate slices: gathered into one chunk (one
    /// message), not a message each.
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if let Err(e) = std::task::ready!(self.poll_room(cx)) {
            return Poll::Ready(Err(e));
        }
        let total = bufs.iter().map(|b| b.len()).sum::<usize>().min(super::TUNNEL_BUFFER);
        let mut chunk = BytesMut::with_capacity(total);
        for b in bufs {
            let take = b.len().min(total - chunk.len());
            chunk.extend_from_slice(&b[..take]);
            if chunk.len() == total {
                break;
            }
        }
        self.send(chunk.freeze())?;
        Poll::Ready(Ok(total))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.outbound.close_channel();
        Poll::Ready(Ok(()))
    }
}

/// The client serves its session on this connection: nothing to tell of the peer.
impl tonic::transport::server::Connected for TunnelIo {
    type ConnectInfo = ();

    fn connect_info(&self) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::{SinkExt, StreamExt};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn bytes_cross_in_order_and_the_ends_close() {
        let (mut io, mut feed, mut written) = tunnel_io();
        io.write_all(b"hello ").await.unwrap();
        let slices = [io::IoSlice::new(b"wor"), io::IoSlice::new(b""), io::IoSlice::new(b"ld")];
        assert_eq!(io.write_vectored(&slices).await.unwrap(), 5);
        assert_eq!(written.next().await.unwrap(), Bytes::from_static(b"hello "));
        assert_eq!(written.next().await.unwrap(), Bytes::from_static(b"world"));
        io.shutdown().await.unwrap();
        assert!(written.next().await.is_none(), "shut down: the stream of writes ends");

        feed.send(Bytes::from_static(b"abc")).await.unwrap();
        feed.send(Bytes::new()).await.unwrap();
        feed.send(Bytes::from_static(b"defgh")).await.unwrap();
        drop(feed);
        let mut small = [0u8; 2];
        io.read_exact(&mut small).await.unwrap();
        assert_eq!(&small, b"ab");
        let mut rest = Vec::new();
        io.read_to_end(&mut rest).await.unwrap();
        assert_eq!(rest, b"cdefgh", "an empty message is no end; the dropped feeder is");
    }

    #[tokio::test]
    async fn a_write_after_the_reader_went_fails() {
        let (mut io, _feed, written) = tunnel_io();
        drop(written);
        assert!(io.write_all(b"x").await.is_err());
    }
}
