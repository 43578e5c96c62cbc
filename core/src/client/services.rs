//! What a BuildKit client serves its daemon on the session: health checks, the local dirs a
//! solve names (`FileSync.DiffCopy`, fsutil's sender), the solve's output (`FileSend.DiffCopy`:
//! fsutil packets into a directory for `type=local`, raw bytes into a file for `type=tar` and
//! `type=oci`), secrets (`Secrets.GetSecret`), local cache directories (see [`super::content`]),
//! SSH agents and registry logins (see [`super::forward`]).

use crate::api::health::v1::health_server::{Health, HealthServer};
use crate::api::health::v1::{health_check_response::ServingStatus, HealthCheckRequest, HealthCheckResponse};
use crate::api::secrets::v1::secrets_server::{Secrets, SecretsServer};
use crate::api::secrets::v1::{GetSecretRequest, GetSecretResponse};
use crate::fileops::Owner;
use crate::session::conn::{serve_stream, ResponseStream};
use crate::session::fsutil::{self, ReceiveOpts, SyncRequest};
use crate::session::packet_call::{FILE_SEND_DIFF_COPY, FILE_SYNC_DIFF_COPY};
use crate::session::proto::filesync::file_sync_server::{FileSync, FileSyncServer};
use crate::session::proto::filesync::BytesMessage;
use crate::session::proto::fsutil::types::Packet;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use tonic::codegen::{http, Body, BoxFuture, StdError};
use tonic::{Request, Response, Status, Streaming};

/// The health check method.
pub const HEALTH_CHECK: &str = "/grpc.health.v1.Health/Check";
/// The secrets method.
pub const GET_SECRET: &str = "/moby.buildkit.secrets.v1.Secrets/GetSecret";

/// Where the solve's one client-side output goes.
#[derive(Debug, Clone)]
pub enum OutputTarget {
    /// `type=local`: a directory (created; existing files not in the result are kept, as
    /// BuildKit's client does).
    Dir(PathBuf),
    /// `type=tar` / `type=oci`: an archive written to this file (`-`: standard output).
    File(PathBuf),
    /// `type=oci,tar=false`: an OCI layout directory the daemon writes blobs into through the
    /// content store `export`; this side tags the manifest afterwards.
    Layout(PathBuf),
}

/// Everything the client serves for one solve.
#[derive(Debug, Clone, Default)]
pub struct SessionServices {
    /// Local dirs by name.
    pub locals: BTreeMap<String, PathBuf>,
    /// Secret values by id.
    pub secrets: BTreeMap<String, Vec<u8>>,
    /// SSH agent sockets by id.
    pub ssh: BTreeMap<String, PathBuf>,
    /// The output written on this side, if any.
    pub output: Option<OutputTarget>,
    /// Local cache directories the daemon reads and writes, by store id.
    pub stores: super::content::Stores,
    /// The first failure of a transfer, kept so the solve can report it over the daemon's
    /// (often vaguer) error.
    pub failure: Arc<Mutex<Option<crate::Error>>>,
}

impl SessionServices {
    /// The methods these services answer (the session's `X-Docker-Expose-Session-Grpc-Method`).
    pub fn methods(&self) -> Vec<&'static str> {
        let mut m = vec![HEALTH_CHECK, FILE_SYNC_DIFF_COPY];
        if matches!(self.output, Some(OutputTarget::Dir(_) | OutputTarget::File(_))) {
            m.push(FILE_SEND_DIFF_COPY);
        }
        m.push(GET_SECRET);
        if !self.ssh.is_empty() {
            m.extend_from_slice(super::forward::SSH_METHODS);
        }
        m.extend_from_slice(super::forward::AUTH_METHODS);
        if !self.stores.0.is_empty() {
            m.extend_from_slice(super::content::METHODS);
        }
        m
    }

    fn fail(&self, e: crate::Error) {
        let mut slot = self.failure.lock().unwrap_or_else(|p| p.into_inner());
        slot.get_or_insert(e);
    }

    /// The tonic router serving them.
    pub fn router(&self) -> tonic::transport::server::Router {
        tonic::transport::Server::builder()
            .initial_stream_window_size(crate::session::STREAM_WINDOW)
            .initial_connection_window_size(crate::session::CONNECTION_WINDOW)
            .max_frame_size(crate::session::MAX_FRAME)
            .add_service(HealthServer::new(HealthService))
            .add_service(FileSyncServer::new(LocalDirs(self.clone())))
            .add_service(FileSendService(self.clone()))
            .add_service(SecretsServer::new(SecretValues(self.secrets.clone())))
            .add_service(self.stores.service())
            .add_service(super::forward::ssh_service(self.ssh.clone()))
            .add_service(super::forward::auth_service())
    }
}

struct HealthService;

#[tonic::async_trait]
impl Health for HealthService {
    async fn check(&self, _: Request<HealthCheckRequest>) -> Result<Response<HealthCheckResponse>, Status> {
        Ok(Response::new(HealthCheckResponse { status: ServingStatus::Serving as i32 }))
    }
}

struct SecretValues(BTreeMap<String, Vec<u8>>);

#[tonic::async_trait]
impl Secrets for SecretValues {
    async fn get_secret(&self, req: Request<GetSecretRequest>) -> Result<Response<GetSecretResponse>, Status> {
        let id = &req.get_ref().id;
        match self.0.get(id) {
            Some(v) => Ok(Response::new(GetSecretResponse { data: v.clone() })),
            None => Err(Status::not_found(format!("secret {id} not found: the client was given no secret of that id"))),
        }
    }
}

struct LocalDirs(SessionServices);

#[tonic::async_trait]
impl FileSync for LocalDirs {
    type DiffCopyStream = ResponseStream<Packet>;

    async fn diff_copy(&self, req: Request<Streaming<Packet>>) -> Result<Response<Self::DiffCopyStream>, Status> {
        let sync = SyncRequest::from_metadata(req.metadata()).map_err(|e| Status::invalid_argument(e.to_string()))?;
        let Some(dir) = self.0.locals.get(&sync.dir_name).cloned() else {
            let known: Vec<&String> = self.0.locals.keys().collect();
            return Err(Status::not_found(format!(
                "no local directory named {:?} was given to this client (given: {known:?})",
                sync.dir_name
            )));
        };
        let (conn, out) = serve_stream(req.into_inner());
        let services = self.0.clone();
        tokio::spawn(async move {
            if let Err(e) = fsutil::send(conn, &dir, &sync.opts).await {
                tracing::debug!(local = %sync.dir_name, error = %e, "sending a local dir failed");
                services.fail(e);
            }
        });
        Ok(Response::new(out))
    }

    type TarStreamStream = ResponseStream<Packet>;

    async fn tar_stream(&self, _: Request<Streaming<Packet>>) -> Result<Response<Self::TarStreamStream>, Status> {
        Err(Status::unimplemented("FileSync.TarStream is not served by kiln's client; use DiffCopy"))
    }
}

/// `FileSend.DiffCopy`, whose messages are packets or bytes depending on the output (see
/// `session::packet_call`), so it is routed by hand rather than generated.
#[derive(Clone)]
struct FileSendService(SessionServices);

impl tonic::server::NamedService for FileSendService {
    const NAME: &'static str = "moby.filesync.v1.FileSend";
}

struct ReceiveDir(SessionServices, PathBuf);

impl tonic::server::StreamingService<Packet> for ReceiveDir {
    type Response = Packet;
    type ResponseStream = ResponseStream<Packet>;
    type Future = BoxFuture<Response<Self::ResponseStream>, Status>;

    fn call(&mut self, req: Request<Streaming<Packet>>) -> Self::Future {
        let (services, dest) = (self.0.clone(), self.1.clone());
        Box::pin(async move {
            let (conn, out) = serve_stream(req.into_inner());
            let owner = Owner { uid: nix::unistd::geteuid().as_raw(), gid: nix::unistd::getegid().as_raw() };
            let opts = ReceiveOpts { merge: true, owner: Some(owner), ..Default::default() };
            tokio::spawn(async move {
                if let Err(e) = fsutil::receive(conn, &dest, &opts).await {
                    services.fail(e);
                }
            });
            Ok(Response::new(out))
        })
    }
}

struct ReceiveFile(SessionServices, PathBuf);

impl tonic::server::StreamingService<BytesMessage> for ReceiveFile {
    type Response = BytesMessage;
    type ResponseStream = ResponseStream<BytesMessage>;
    type Future = BoxFuture<Response<Self::ResponseStream>, Status>;

    fn call(&mut self, req: Request<Streaming<BytesMessage>>) -> Self::Future {
        let (services, dest) = (self.0.clone(), self.1.clone());
        Box::pin(async move {
            let (tx, out) = tokio::sync::mpsc::channel(1);
            tokio::spawn(async move {
                let r = write_archive(req.into_inner(), &dest).await;
                if let Err(e) = &r {
                    services.fail(e.clone());
                    let _ = tx.send(Err(Status::internal(e.to_string()))).await;
                }
                // Ending the response stream acknowledges the archive.
                drop(tx);
            });
            Ok(Response::new(tokio_stream::wrappers::ReceiverStream::new(out)))
        })
    }
}

/// Writes the archive's chunks to `dest` (through a temp file renamed at the end, so a failed
/// transfer leaves no partial file) or to standard output for `-`.
async fn write_archive(mut stream: Streaming<BytesMessage>, dest: &std::path::Path) -> crate::Result<()> {
    use tokio::io::AsyncWriteExt;
    let fail = |what: &str, e: std::io::Error| crate::Error::io(what, dest, e);
    if dest == std::path::Path::new("-") {
        let mut out = tokio::io::stdout();
        while let Some(m) = stream.message().await.map_err(crate::session::conn::status_error)? {
            out.write_all(&m.data).await.map_err(|e| fail("write the output to stdout", e))?;
        }
        return out.flush().await.map_err(|e| fail("write the output to stdout", e));
    }
    let dir = dest.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(std::path::Path::new("."));
    let tmp = tempfile::NamedTempFile::new_in(dir).map_err(|e| fail("create the output file", e))?;
    let (file, tmp_path) = tmp.into_parts();
    let mut file = tokio::fs::File::from_std(file);
    while let Some(m) = stream.message().await.map_err(crate::session::conn::status_error)? {
        file.write_all(&m.data).await.map_err(|e| fail("write the output file", e))?;
    }
    file.sync_all().await.map_err(|e| fail("sync the output file", e))?;
    tmp_path.persist(dest).map_err(|e| fail("rename the output file into place", e.error))?;
    Ok(())
}

impl<B> tower::Service<http::Request<B>> for FileSendService
where
    B: Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let services = self.0.clone();
        Box::pin(async move {
            if req.uri().path() != FILE_SEND_DIFF_COPY {
                return Ok(
                    Status::unimplemented(format!("{} is not served by kiln's client", req.uri().path())).into_http()
                );
            }
            let resp = match services.output.clone() {
                Some(OutputTarget::Dir(d)) => {
                    let codec = tonic_prost::ProstCodec::<Packet, Packet>::default();
                    let mut grpc = tonic::server::Grpc::new(codec)
                        .apply_max_message_size_config(Some(super::MAX_MESSAGE), Some(super::MAX_MESSAGE));
                    grpc.streaming(ReceiveDir(services, d), req).await
                }
                Some(OutputTarget::File(f)) => {
                    let codec = tonic_prost::ProstCodec::<BytesMessage, BytesMessage>::default();
                    let mut grpc = tonic::server::Grpc::new(codec)
                        .apply_max_message_size_config(Some(super::MAX_MESSAGE), Some(super::MAX_MESSAGE));
                    grpc.streaming(ReceiveFile(services, f), req).await
                }
                Some(OutputTarget::Layout(_)) | None => {
                    Status::failed_precondition("this client expects no output over FileSend").into_http()
                }
            };
            Ok(resp)
        })
    }
}
