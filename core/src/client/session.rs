//! The client's end of a BuildKit session: a `Control.Session` call whose byte stream carries
//! an HTTP/2 connection on which the *daemon* is the gRPC client and we serve
//! [`SessionServices`]. The session lives until [`ClientSession`] is dropped (the daemon then
//! sees its end and cancels what still needs it).

use super::services::SessionServices;
use super::Client;
use crate::api::control::BytesMessage;
use crate::error::{Error, ErrorKind, Result};
use crate::session::tunnel_io::tunnel_io;
use std::io::Read;
use tokio::task::JoinSet;

/// An open session (closed when dropped).
pub struct ClientSession {
    id: String,
    tasks: JoinSet<()>,
}

impl std::fmt::Debug for ClientSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientSession").field("id", &self.id).finish()
    }
}

/// A random id (BuildKit's are 25 random base-32 characters; any unique string does).
pub fn random_id() -> Result<String> {
    let mut b = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .map_err(|e| Error::io("read random bytes", "/dev/urandom", e))?;
    Ok(hex::encode(b))
}

/// The session's shared key: the same on every session of this machine and user naming the
/// same local dirs, so a daemon keeps what it synced of them for the next build (only changes
/// cross the session then). Empty, sharing nothing, when the machine has no id to tell it apart
/// from another client of the same daemon with the same paths.
pub fn shared_key(locals: &std::collections::BTreeMap<String, std::path::PathBuf>) -> String {
    use sha2::Digest as _;
    let machine = ["/etc/machine-id", "/var/lib/dbus/machine-id"]
        .iter()
        .find_map(|p| std::fs::read_to_string(p).ok().map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()));
    let Some(machine) = machine else { return String::new() };
    let mut h = sha2::Sha256::new();
    h.update(b"kiln-session-sharedkey-v1\0");
    h.update(machine.as_bytes());
    h.update(nix::unistd::geteuid().as_raw().to_le_bytes());
    for (name, dir) in locals {
        let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.clone());
        h.update(b"\0");
        h.update(name.as_bytes());
        h.update(b"\0");
        h.update(std::os::unix::ffi::OsStrExt::as_bytes(dir.as_os_str()));
    }
    hex::encode(h.finalize())
}

fn ascii(key: &str, v: &str) -> Result<tonic::metadata::MetadataValue<tonic::metadata::Ascii>> {
    v.parse().map_err(|_| Error::new(ErrorKind::Internal, format!("session header {key}={v:?} is not ASCII")))
}

impl ClientSession {
    /// Opens a session on `client`'s daemon serving `services`.
    pub async fn start(client: &Client, services: &SessionServices) -> Result<ClientSession> {
        let id = random_id()?;
        // Our HTTP/2 server's writes are the call's messages; the daemon's messages are what it reads.
        let (ours, mut feed, written) = tunnel_io();
        let outbound = futures::StreamExt::map(written, |data| BytesMessage { data });
        let mut req = tonic::Request::new(outbound);
        let md = req.metadata_mut();
        md.insert("x-docker-expose-session-uuid", ascii("uuid", &id)?);
        md.insert("x-docker-expose-session-name", ascii("name", "kiln")?);
        md.insert("x-docker-expose-session-sharedkey", ascii("sharedkey", &shared_key(&services.locals))?);
        for m in services.methods() {
            md.append("x-docker-expose-session-grpc-method", ascii("method", m)?);
        }
        let mut tasks = JoinSet::new();
        // The daemon → our HTTP/2 server (the call's response arrives once the daemon attached).
        let mut control = client.control();
        tasks.spawn(async move {
            match control.session(req).await {
                Ok(resp) => {
                    let mut inbound = resp.into_inner();
                    while let Ok(Some(m)) = inbound.message().await {
                        if futures::SinkExt::send(&mut feed, m.data).await.is_err() {
                            break;
                        }
                    }
                }
                Err(s) => tracing::debug!(status = %s, "the daemon refused the session"),
            }
            // Dropping the feeder is the end of the stream for our server.
            drop(feed);
        });
        let router = services.router();
        tasks.spawn(async move {
            // One connection, then nothing more: the server runs until the task is aborted.
            let incoming = futures::StreamExt::chain(
                futures::stream::iter([Ok::<_, std::io::Error>(ours)]),
                futures::stream::pending(),
            );
            if let Err(e) = router.serve_with_incoming(incoming).await {
                tracing::debug!(error = %e, "the session's server ended");
            }
        });
        Ok(ClientSession { id, tasks })
    }

    /// The session id the solve request names.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Closes the session.
    pub fn close(mut self) {
        self.tasks.abort_all();
    }
}

impl Drop for ClientSession {
    fn drop(&mut self) {
        self.tasks.abort_all();
    }
}
