//! What a BuildKit client forwards to its daemon besides files: SSH agents
//! (`moby.sshforward.v1.SSH`, buildctl's `sshprovider`: `CheckAgent` by id, each `ForwardAgent`
//! stream one connection to the agent socket named in `SolveOptions::ssh`) and registry logins
//! (`moby.filesync.v1.Auth/Credentials`, buildctl's `authprovider`: from this machine's Docker
//! config, so a daemon pulls and pushes with the user's credentials without holding them).
//! The token-authority methods are not served: the daemon then fetches tokens itself with the
//! credentials, as buildkitd does for clients without them.

use crate::api::filesync::auth_server::{Auth, AuthServer};
use crate::api::filesync::{
    CredentialsRequest, CredentialsResponse, FetchTokenRequest, FetchTokenResponse, GetTokenAuthorityRequest,
    GetTokenAuthorityResponse, VerifyTokenAuthorityRequest, VerifyTokenAuthorityResponse,
};
use crate::api::sshforward::v1::ssh_server::{Ssh, SshServer};
use crate::api::sshforward::v1::{BytesMessage, CheckAgentRequest, CheckAgentResponse};
use crate::options::DEFAULT_SSH_ID;
use crate::registry::auth::{Credential, Credentials};
use crate::session::conn::ResponseStream;
use std::collections::BTreeMap;
use std::path::PathBuf;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::{Request, Response, Status, Streaming};

/// `SSH/CheckAgent` and `SSH/ForwardAgent`.
pub const SSH_METHODS: &[&str] = &["/moby.sshforward.v1.SSH/CheckAgent", "/moby.sshforward.v1.SSH/ForwardAgent"];
/// `Auth/Credentials` (the other Auth methods answer `Unimplemented`, as for a client without a
/// token authority).
pub const AUTH_METHODS: &[&str] = &["/moby.filesync.v1.Auth/Credentials"];
/// The metadata key naming the agent of a `ForwardAgent` stream.
const SSH_ID_KEY: &str = "buildkit.ssh.id";
/// Bytes per forwarded message (agent messages are small).
pub(crate) const AGENT_CHUNK: usize = 32 * 1024;

/// The SSH service over the agent sockets by id.
pub fn ssh_service(agents: BTreeMap<String, PathBuf>) -> SshServer<Agents> {
    SshServer::new(Agents(agents))
}

/// The Auth service over this machine's Docker config (read when the daemon asks).
pub fn auth_service() -> AuthServer<Logins> {
    AuthServer::new(Logins)
}

/// Agent sockets by id.
pub struct Agents(BTreeMap<String, PathBuf>);

impl Agents {
    fn socket(&self, id: &str) -> Result<&PathBuf, Status> {
        let id = if id.is_empty() { DEFAULT_SSH_ID } else { id };
        self.0.get(id).ok_or_else(|| {
            let known: Vec<&String> = self.0.keys().collect();
            Status::not_found(format!("unset ssh forward key {id} (this client forwards {known:?})"))
        })
    }
}

#[tonic::async_trait]
impl Ssh for Agents {
    async fn check_agent(&self, req: Request<CheckAgentRequest>) -> Result<Response<CheckAgentResponse>, Status> {
        self.socket(&req.get_ref().id)?;
        Ok(Response::new(CheckAgentResponse {}))
    }

    type ForwardAgentStream = ResponseStream<BytesMessage>;

    async fn forward_agent(
        &self,
        req: Request<Streaming<BytesMessage>>,
    ) -> Result<Response<Self::ForwardAgentStream>, Status> {
        let id = req.metadata().get(SSH_ID_KEY).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
        let path = self.socket(&id)?.clone();
        let agent = tokio::net::UnixStream::connect(&path)
            .await
            .map_err(|e| Status::unavailable(format!("connecting to ssh agent {id:?} at {}: {e}", path.display())))?;
        let (from_agent, to_agent) = agent.into_split();
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        // Daemon → agent: ends when the daemon closes its side (the container's connection closed).
        spawn_stream_to_writer(req.into_inner(), to_agent);
        // Agent → daemon: ends the response stream when the agent closes the connection.
        spawn_reader_to_stream(from_agent, tx, Ok);
        Ok(Response::new(tokio_stream::wrappers::ReceiverStream::new(rx)))
    }
}

/// Copies `reader` into `tx` as [`BytesMessage`]s (each wrapped by `wrap`) until end of file, an
/// error, or the receiver going away — then drops `tx`, ending the stream.
pub(crate) fn spawn_reader_to_stream<R, T>(
    mut reader: R,
    tx: tokio::sync::mpsc::Sender<T>,
    wrap: impl Fn(BytesMessage) -> T + Send + 'static,
) where
    R: tokio::io::AsyncRead + Unpin + Send + 'static,
    T: Send + 'static,
{
    tokio::spawn(async move {
        let mut buf = vec![0u8; AGENT_CHUNK];
        loop {
            match reader.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if tx.send(wrap(BytesMessage { data: buf[..n].to_vec() })).await.is_err() {
                        break;
                    }
                }
            }
        }
    });
}

/// Writes every message of `inbound` to `writer` until the stream ends or fails, then shuts the
/// writer down (the far end sees end of file).
pub(crate) fn spawn_stream_to_writer<W>(mut inbound: Streaming<BytesMessage>, mut writer: W)
where
    W: tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        while let Ok(Some(m)) = inbound.message().await {
            if writer.write_all(&m.data).await.is_err() {
                break;
            }
        }
        let _ = writer.shutdown().await;
    });
}

/// Logins from this machine's Docker config.
pub struct Logins;

#[tonic::async_trait]
impl Auth for Logins {
    async fn credentials(&self, req: Request<CredentialsRequest>) -> Result<Response<CredentialsResponse>, Status> {
        // Read per request, as buildctl's provider does: a login made during the build counts.
        let creds = tokio::task::spawn_blocking(Credentials::load)
            .await
            .map_err(|e| Status::internal(format!("reading registry credentials: {e}")))?
            .map_err(|e| Status::failed_precondition(e.to_string()))?;
        let resp = match creds.get(&req.get_ref().host) {
            Some(Credential::Basic { username, password }) => {
                CredentialsResponse { username: username.clone(), secret: password.clone() }
            }
            Some(Credential::IdentityToken { token, .. }) => {
                CredentialsResponse { username: String::new(), secret: token.clone() }
            }
            // No entry: anonymous (empty), as BuildKit answers.
            None => CredentialsResponse::default(),
        };
        Ok(Response::new(resp))
    }

    async fn fetch_token(&self, _: Request<FetchTokenRequest>) -> Result<Response<FetchTokenResponse>, Status> {
        Err(Status::unimplemented("kiln's client has no token authority; fetch tokens with Auth/Credentials"))
    }

    async fn get_token_authority(
        &self,
        _: Request<GetTokenAuthorityRequest>,
    ) -> Result<Response<GetTokenAuthorityResponse>, Status> {
        Err(Status::unimplemented("kiln's client has no token authority; fetch tokens with Auth/Credentials"))
    }

    async fn verify_token_authority(
        &self,
        _: Request<VerifyTokenAuthorityRequest>,
    ) -> Result<Response<VerifyTokenAuthorityResponse>, Status> {
        Err(Status::unimplemented("kiln's client has no token authority; fetch tokens with Auth/Credentials"))
    }
}
