//! Calling a DiffCopy method with fsutil packets whatever its declared message type: BuildKit's
//! daemon sends a `type=local` export as `fsutil.types.Packet`s over `FileSend.DiffCopy`, which
//! filesync.proto declares with `BytesMessage` (Go's gRPC marshals whatever it is given), so the
//! generated `FileSendClient` cannot make that call.

use crate::session::proto::fsutil::types::Packet;
use tonic::codegen::{http, Body, Bytes, StdError};

/// `FileSync.DiffCopy`: the daemon receives a local directory.
pub const FILE_SYNC_DIFF_COPY: &str = "/moby.filesync.v1.FileSync/DiffCopy";
/// `FileSend.DiffCopy`: the daemon sends a `type=local` export (as packets).
pub const FILE_SEND_DIFF_COPY: &str = "/moby.filesync.v1.FileSend/DiffCopy";

/// Makes a bidirectional call of `method` (one of the constants above) on `channel` with
/// packets both ways. The response's `Streaming` and the request's sender form the
/// [`Conn`](crate::session::conn::Conn) that `fsutil::send`/`receive` run on.
pub async fn call_with_packets<T>(
    channel: T,
    method: &'static str,
    request: impl tonic::IntoStreamingRequest<Message = Packet>,
) -> std::result::Result<tonic::Response<tonic::Streaming<Packet>>, tonic::Status>
where
    T: tonic::client::GrpcService<tonic::body::Body>,
    T::Error: Into<StdError>,
    T::ResponseBody: Body<Data = Bytes> + Send + 'static,
    <T::ResponseBody as Body>::Error: Into<StdError> + Send,
{
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.map_err(|e| tonic::Status::unknown(format!("session channel not ready: {}", e.into())))?;
    let codec = tonic_prost::ProstCodec::<Packet, Packet>::default();
    grpc.streaming(request.into_streaming_request(), http::uri::PathAndQuery::from_static(method), codec).await
}
