//! SSH agent forwarding for `ssh` mounts (BuildKit's `sshforward.MountSSHSocket`).
//!
//! Choice: a **proxy socket**, not a bind mount of the caller's agent socket. BuildKit creates a
//! fresh listening socket (`<tmp>/.buildkit-ssh-sockXXX/ssh_auth_sock`, dir 0711, socket chowned
//! to the mount's uid/gid and chmod'ed to its mode) and relays every connection to the client's
//! agent through the session. kiln does the same with a relay to the socket given in
//! `SolveOptions::ssh`, or to the solve's `SshProvider` (a daemon's client session): the uid/gid/mode of the mount then apply to the socket the container sees
//! without touching the caller's own socket (a bind mount would expose the host socket's owner and
//! mode, and chmod'ing it would change the caller's agent for everyone), and the container gets no
//! path into the host directory holding the agent socket. The relay lives exactly as long as the
//! exec (dropping [`SshProxy`] stops it and closes every relayed connection).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::net::{UnixListener, UnixStream};
use tokio::task::{JoinHandle, JoinSet};

use crate::error::{Error, ErrorKind, IoContext, Result};
use crate::solver::{AgentStream, SshProvider};

/// Where a relay's connections go.
#[derive(Debug, Clone)]
pub(crate) enum Agent {
    /// An agent socket on this machine.
    Socket(PathBuf),
    /// Agent `id` of a provider (one provider connection per relayed connection).
    Provider(Arc<dyn SshProvider>, String),
}

impl Agent {
    fn describe(&self) -> String {
        match self {
            Agent::Socket(p) => p.display().to_string(),
            Agent::Provider(_, id) => format!("the client's agent {id:?}"),
        }
    }

    async fn connect(&self) -> Result<Box<dyn AgentStream>> {
        match self {
            Agent::Socket(p) => {
                let s = UnixStream::connect(p).await.with_path("connect to the ssh agent", p)?;
                Ok(Box::new(s))
            }
            Agent::Provider(provider, id) => provider.connect(id).await,
        }
    }
}

/// A running relay; stops on drop.
pub(crate) struct SshProxy {
    socket: PathBuf,
    task: JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl SshProxy {
    /// The relay's socket on the host (to bind-mount into the container).
    pub(crate) fn socket(&self) -> &Path {
        &self.socket
    }
}

impl Drop for SshProxy {
    fn drop(&mut self) {
        // Aborting the accept loop drops its JoinSet, which aborts every relayed connection.
        self.task.abort();
    }
}

/// Starts a relay from a new socket (owner `uid:gid`, permission bits `mode & 0o777`) to `agent`.
pub(crate) fn start(agent: Agent, uid: u32, gid: u32, mode: u32) -> Result<SshProxy> {
    if let Agent::Socket(path) = &agent {
        let meta = std::fs::metadata(path).with_path("ssh agent socket", path)?;
        if !std::os::unix::fs::FileTypeExt::is_socket(&meta.file_type()) {
            return Err(Error::new(
                ErrorKind::Source,
                format!("ssh agent {} is not a unix socket (kiln forwards agent sockets only)", path.display()),
            ));
        }
    }
    // A short path under the system temp dir: unix socket paths are limited to 107 bytes.
    let dir = tempfile::Builder::new()
        .prefix(".kiln-ssh-sock")
        .tempdir()
        .with_path("create ssh socket dir", std::env::temp_dir())?;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711))
        .with_path("chmod ssh socket dir", dir.path())?;
    let socket = dir.path().join("ssh_auth_sock");
    let listener = UnixListener::bind(&socket).with_path("listen on ssh socket", &socket)?;
    nix::unistd::chown(&socket, Some(nix::unistd::Uid::from_raw(uid)), Some(nix::unistd::Gid::from_raw(gid)))
        .map_err(|e| Error::io("chown ssh socket", &socket, e.into()))?;
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(mode & 0o777))
        .with_path("chmod ssh socket", &socket)?;
    let task = tokio::spawn(async move {
        let mut conns = JoinSet::new();
        loop {
            let (mut client, _) = match listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "ssh relay: accept failed");
                    break;
                }
            };
            let agent = agent.clone();
            conns.spawn(async move {
                // Erroring per connection is allowed (as in BuildKit): the client sees EOF.
                match agent.connect().await {
                    Ok(mut upstream) => {
                        if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
                            tracing::debug!(error = %e, "ssh relay connection ended");
                        }
                    }
                    Err(e) => tracing::warn!(agent = %agent.describe(), error = %e, "ssh relay: cannot reach agent"),
                }
            });
            // Reap finished connections so the set does not grow.
            while conns.try_join_next().is_some() {}
        }
    });
    Ok(SshProxy { socket, task, _dir: dir })
}
