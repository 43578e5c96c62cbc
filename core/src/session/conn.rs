//! Message streams the session protocols run over: a sending half ([`MsgTx`], shared by the
//! protocol's concurrent parts, hence `&self`) and a receiving half ([`MsgRx`]), with adaptors
//! for both directions of a tonic bidirectional call and an in-memory [`pipe`] for tests.
//!
//! Ending the sending half (dropping [`Conn`]) is gRPC's CloseSend: the peer sees end-of-stream.

use crate::error::{Error, ErrorKind, Result};
use std::future::Future;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

/// The sending half of a message stream.
pub trait MsgTx<M>: Send + Sync {
    /// Sends one message; an error when the peer has gone away.
    fn send(&self, msg: M) -> impl Future<Output = Result<()>> + Send;
}

/// The receiving half of a message stream.
pub trait MsgRx<M>: Send {
    /// The next message; `None` at the peer's end of stream.
    fn recv(&mut self) -> impl Future<Output = Result<Option<M>>> + Send;
}

/// Both halves of one bidirectional stream.
#[derive(Debug)]
pub struct Conn<T, R> {
    /// What we send on.
    pub tx: T,
    /// What we receive from.
    pub rx: R,
}

impl<T, R> Conn<T, R> {
    /// Pairs the halves.
    pub fn new(tx: T, rx: R) -> Conn<T, R> {
        Conn { tx, rx }
    }
}

fn closed() -> Error {
    Error::new(ErrorKind::Io, "session stream closed: the peer went away while a message was being sent")
}

/// The request side of a client call (`tx` of a call we make; the request stream is the
/// [`ReceiverStream`] of [`request_stream`]), and the in-memory pipe's halves.
impl<M: Send + 'static> MsgTx<M> for mpsc::Sender<M> {
    async fn send(&self, msg: M) -> Result<()> {
        mpsc::Sender::send(self, msg).await.map_err(|_| closed())
    }
}

impl<M: Send + 'static> MsgRx<M> for mpsc::Receiver<M> {
    async fn recv(&mut self) -> Result<Option<M>> {
        Ok(mpsc::Receiver::recv(self).await)
    }
}

/// The response side of a call we serve: what a tonic handler's response stream carries.
#[derive(Debug, Clone)]
pub struct ServerTx<M>(pub mpsc::Sender<Result<M, tonic::Status>>);

impl<M: Send + 'static> MsgTx<M> for ServerTx<M> {
    async fn send(&self, msg: M) -> Result<()> {
        self.0.send(Ok(msg)).await.map_err(|_| closed())
    }
}

/// The response stream of a call we make, or the request stream of a call we serve.
impl<M: Send + 'static> MsgRx<M> for tonic::Streaming<M> {
    async fn recv(&mut self) -> Result<Option<M>> {
        self.message().await.map_err(status_error)
    }
}

/// The response stream of a call whose peer answers only after it has received something (a Go
/// gRPC server sends its response headers with its first message): the call is awaited on the
/// first `recv`, so the caller can send first. BuildKit's client receiving an export (fsutil's
/// receiver speaks only after the sender's stats) is such a peer.
pub struct LazyResponse<M> {
    call: Option<
        std::pin::Pin<
            Box<dyn Future<Output = std::result::Result<tonic::Response<tonic::Streaming<M>>, tonic::Status>> + Send>,
        >,
    >,
    stream: Option<tonic::Streaming<M>>,
}

impl<M> LazyResponse<M> {
    /// Wraps the (not yet awaited) call.
    pub fn new(
        call: impl Future<Output = std::result::Result<tonic::Response<tonic::Streaming<M>>, tonic::Status>>
            + Send
            + 'static,
    ) -> LazyResponse<M> {
        LazyResponse { call: Some(Box::pin(call)), stream: None }
    }
}

impl<M: Send + 'static> MsgRx<M> for LazyResponse<M> {
    async fn recv(&mut self) -> Result<Option<M>> {
        if let Some(call) = self.call.take() {
            self.stream = Some(call.await.map_err(status_error)?.into_inner());
        }
        match self.stream.as_mut() {
            Some(s) => s.message().await.map_err(status_error),
            None => Ok(None),
        }
    }
}

/// A transport failure of the session stream as a kiln error (the status message is the
/// peer's; BuildKit puts its error text there).
pub fn status_error(s: tonic::Status) -> Error {
    Error::new(ErrorKind::Io, format!("session stream failed: {}: {}", s.code(), s.message()))
}

/// Messages buffered per direction: enough to keep a stream busy, few enough to bound memory
/// (a DiffCopy data packet is at most 512 KiB from kiln, 4 MiB by gRPC's default limit).
pub const STREAM_BUFFER: usize = 16;

/// For a call we make: the sender to hand to [`Conn::new`] and the request stream to pass to
/// the tonic client method (`client.diff_copy(stream)`); its response's `Streaming` is the `rx`.
pub fn request_stream<M>() -> (mpsc::Sender<M>, ReceiverStream<M>) {
    let (tx, rx) = mpsc::channel(STREAM_BUFFER);
    (tx, ReceiverStream::new(rx))
}

/// The response stream a tonic handler returns, and the connection to run the protocol on (in
/// a spawned task: the handler must return the stream before the protocol can make progress).
pub type ResponseStream<M> = ReceiverStream<Result<M, tonic::Status>>;

/// For a call we serve: the connection over the request stream and the response stream.
pub fn serve_stream<M>(request: tonic::Streaming<M>) -> (Conn<ServerTx<M>, tonic::Streaming<M>>, ResponseStream<M>) {
    let (tx, rx) = mpsc::channel(STREAM_BUFFER);
    (Conn::new(ServerTx(tx), request), ReceiverStream::new(rx))
}

/// An in-memory bidirectional stream: what one end sends the other receives.
pub type PipeConn<M> = Conn<mpsc::Sender<M>, mpsc::Receiver<M>>;

/// Two connected ends, each buffering `cap` messages per direction.
pub fn pipe<M>(cap: usize) -> (PipeConn<M>, PipeConn<M>) {
    let (a_tx, b_rx) = mpsc::channel(cap.max(1));
    let (b_tx, a_rx) = mpsc::channel(cap.max(1));
    (Conn::new(a_tx, a_rx), Conn::new(b_tx, b_rx))
}
