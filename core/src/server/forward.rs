//! What a build on the daemon asks of its client's session besides files and secrets: SSH agent
//! connections (`moby.sshforward.v1.SSH`: `CheckAgent`, then one `ForwardAgent` stream per
//! connection, agent id in the `buildkit.ssh.id` metadata — BuildKit's `sshforward`) and registry
//! logins (`moby.filesync.v1.Auth/Credentials`, asked when a registry challenges the daemon, as
//! buildkitd's authorizer does). A session that does not serve a method simply has no agents or
//! logins; the solve then reports the missing agent or falls back to the daemon's Docker config.

use super::proto::filesync::auth_client::AuthClient;
use super::proto::filesync::CredentialsRequest;
use super::proto::sshforward::v1::ssh_client::SshClient;
use super::proto::sshforward::v1::{BytesMessage, CheckAgentRequest};
use super::session::Session;
use crate::client::forward::{spawn_reader_to_stream, spawn_stream_to_writer, AGENT_CHUNK};
use crate::error::{Error, ErrorKind};
use crate::solver::{AgentStream, CredentialProvider, RegistryLogin, SshProvider};
use futures::future::BoxFuture;
use std::sync::Arc;

/// `SSH/CheckAgent`.
pub const SSH_CHECK_AGENT: &str = "/moby.sshforward.v1.SSH/CheckAgent";
/// `SSH/ForwardAgent`.
pub const SSH_FORWARD_AGENT: &str = "/moby.sshforward.v1.SSH/ForwardAgent";
/// The metadata key naming the agent of a `ForwardAgent` stream.
pub const SSH_ID_KEY: &str = "buildkit.ssh.id";
/// `Auth/Credentials`.
pub const AUTH_CREDENTIALS: &str = "/moby.filesync.v1.Auth/Credentials";

/// The client's SSH agents (the solve's [`SshProvider`]).
#[derive(Debug)]
pub struct SessionSsh {
    session: Arc<Session>,
}

impl SessionSsh {
    /// Agents of `session`.
    pub fn new(session: Arc<Session>) -> Arc<SessionSsh> {
        Arc::new(SessionSsh { session })
    }
}

fn ssh_error(id: &str, what: &str, s: &tonic::Status) -> Error {
    Error::new(ErrorKind::Source, format!("{what} ssh agent {id:?} of the client: {}: {}", s.code(), s.message()))
}

impl SshProvider for SessionSsh {
    fn check<'a>(&'a self, id: &'a str) -> BoxFuture<'a, crate::Result<bool>> {
        Box::pin(async move {
            if !self.session.serves(SSH_CHECK_AGENT) {
                return Ok(false);
            }
            let mut client = SshClient::new(self.session.channel.clone());
            match client.check_agent(CheckAgentRequest { id: id.to_owned() }).await {
                Ok(_) => Ok(true),
                // The client has no such agent (buildctl answers Unknown "unset ssh forward key").
                Err(s) => {
                    tracing::debug!(id, status = %s, "the client forwards no such ssh agent");
                    Ok(false)
                }
            }
        })
    }

    fn connect<'a>(&'a self, id: &'a str) -> BoxFuture<'a, crate::Result<Box<dyn AgentStream>>> {
        Box::pin(async move {
            let (tx, rx) = tokio::sync::mpsc::channel::<BytesMessage>(4);
            let mut req = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx));
            let value = id.parse().map_err(|_| {
                Error::new(ErrorKind::Source, format!("ssh agent id {id:?} is not valid gRPC metadata"))
            })?;
            req.metadata_mut().insert(SSH_ID_KEY, value);
            let mut client = SshClient::new(self.session.channel.clone());
            let inbound = client.forward_agent(req).await.map_err(|s| ssh_error(id, "forwarding", &s))?.into_inner();
            let (ours, theirs) = tokio::io::duplex(AGENT_CHUNK);
            let (from_container, to_container) = tokio::io::split(theirs);
            // Container → client: ends (closing our send side, as BuildKit's CloseSend) when the
            // container's connection closes.
            spawn_reader_to_stream(from_container, tx, |m| m);
            // Client → container: ends when the client ends its stream.
            spawn_stream_to_writer(inbound, to_container);
            Ok(Box::new(ours) as Box<dyn AgentStream>)
        })
    }
}

/// The client's registry logins (the solve's [`CredentialProvider`]).
#[derive(Debug)]
pub struct SessionAuth {
    session: Arc<Session>,
}

impl SessionAuth {
    /// Logins of `session`.
    pub fn new(session: Arc<Session>) -> Arc<SessionAuth> {
        Arc::new(SessionAuth { session })
    }
}

impl CredentialProvider for SessionAuth {
    fn credentials<'a>(&'a self, host: &'a str) -> BoxFuture<'a, crate::Result<Option<RegistryLogin>>> {
        Box::pin(async move {
            if !self.session.serves(AUTH_CREDENTIALS) {
                return Ok(None);
            }
            let mut client = AuthClient::new(self.session.channel.clone());
            match client.credentials(CredentialsRequest { host: host.to_owned() }).await {
                Ok(r) => {
                    let r = r.into_inner();
                    Ok(Some(RegistryLogin { username: r.username, secret: r.secret }))
                }
                Err(s) if s.code() == tonic::Code::Unimplemented => Ok(None),
                Err(s) => Err(Error::new(
                    ErrorKind::Registry,
                    format!("asking the client for credentials of {host}: {}: {}", s.code(), s.message()),
                )),
            }
        })
    }
}
