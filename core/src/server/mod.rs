//! `kiln serve`: BuildKit's gRPC API (`moby.buildkit.v1.Control`, v0.11.6 field-compatible)
//! served over unix sockets or TCP by one [`Engine`], so BuildKit's own clients (`buildctl`)
//! drive kiln unchanged. This module owns listening and the service wiring; [`control`] maps
//! requests onto the engine, [`bridge`] serves the gateway (`LLBBridge`) of client-side builds
//! driven over the control socket, [`status`] keeps each build's progress for `Status`.
//!
//! TCP addresses may be served over TLS with client certificates ([`TlsFiles`]). [`session`]
//! and [`transfer`] reach the client's own services (locals, outputs, secrets) over its session.
//!
//! [`cache_store`] moves local cache directories through the client's content store;
//! [`forward`] reaches the client's SSH agents and registry logins.
//!
//! Not served yet (answered `Unimplemented` with a message): gateway containers.

pub mod bridge;
pub mod cache_store;
pub mod control;
pub mod forward;
pub mod proto;
pub mod session;
pub mod status;
pub mod transfer;

use crate::engine::Engine;
use crate::error::{Error, ErrorKind, Result};
use proto::control::control_server::ControlServer;
use proto::gateway::llb_bridge_server::LlbBridgeServer;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

pub use control::ControlService;

/// Where `kiln serve` listens: the addresses clients dial (`unix://PATH`, `tcp://HOST:PORT`),
/// parsed and printed once, by the client's [`DaemonAddr`](crate::client::transport::DaemonAddr).
pub type ListenAddr = crate::client::transport::DaemonAddr;

impl ListenAddr {
    /// The default address: `/run/kiln/kiln.sock` as root, `$XDG_RUNTIME_DIR/kiln/kiln.sock`
    /// otherwise (or the engine's temp dir when that is unset).
    pub fn default_for_user() -> ListenAddr {
        if nix::unistd::geteuid().is_root() {
            return ListenAddr::Unix(PathBuf::from("/run/kiln/kiln.sock"));
        }
        let base = std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from).unwrap_or_else(std::env::temp_dir);
        ListenAddr::Unix(base.join("kiln/kiln.sock"))
    }
}

fn io(context: String) -> impl FnOnce(std::io::Error) -> Error {
    move |e| Error::with_source(ErrorKind::Io, context, e)
}

/// Binds a unix socket: creates its directory (0700 when new), replaces a stale socket (one
/// nobody listens on) but refuses one in use, and leaves the socket 0660.
fn bind_unix(path: &std::path::Path) -> Result<tokio::net::UnixListener> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(dir) = path.parent() {
        if !dir.exists() {
            std::fs::create_dir_all(dir).map_err(io(format!("create {}", dir.display())))?;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
                .map_err(io(format!("chmod {}", dir.display())))?;
        }
    }
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(Error::new(
                ErrorKind::RootInUse,
                format!("{} is in use by another server; stop it or pick another --addr", path.display()),
            ));
        }
        std::fs::remove_file(path).map_err(io(format!("remove stale socket {}", path.display())))?;
    }
    let l = tokio::net::UnixListener::bind(path).map_err(io(format!("listen on {}", path.display())))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
        .map_err(io(format!("chmod {}", path.display())))?;
    Ok(l)
}

/// How long shutdown waits for running solves before cancelling them.
pub const DRAIN_LIMIT: Duration = Duration::from_secs(30);
/// How long connections may take to close once no solve runs (a client holding an idle session
/// or status stream is cut after this).
pub const CLOSE_LIMIT: Duration = Duration::from_secs(5);

/// The running solves of a server, which shutdown waits for (bounded) and then cancels.
#[derive(Clone)]
pub struct Drain {
    running: Arc<watch::Sender<usize>>,
    abort: Arc<watch::Sender<bool>>,
}

impl Default for Drain {
    fn default() -> Self {
        Drain { running: Arc::new(watch::channel(0).0), abort: Arc::new(watch::channel(false).0) }
    }
}

/// One running solve, counted until dropped.
pub struct Running {
    running: Arc<watch::Sender<usize>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.running.send_modify(|n| *n = n.saturating_sub(1));
    }
}

impl Drain {
    /// Counts a solve until the guard drops.
    pub fn enter(&self) -> Running {
        self.running.send_modify(|n| *n += 1);
        Running { running: self.running.clone() }
    }

    /// Solves running now.
    pub fn running(&self) -> usize {
        *self.running.borrow()
    }

    /// Completes once [`Drain::abort`] is called (at once if it was).
    pub fn aborted(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut rx = self.abort.subscribe();
        async move {
            let _ = rx.wait_for(|a| *a).await;
        }
    }

    /// Cancels every running solve (each answers `Unavailable`).
    pub fn abort(&self) {
        self.abort.send_replace(true);
    }

    /// Waits until no solve runs.
    pub async fn idle(&self) {
        let mut rx = self.running.subscribe();
        let _ = rx.wait_for(|n| *n == 0).await;
    }
}

/// Yields `incoming`'s connections until `stop` turns true, then drops it (closing the listener:
/// new clients are refused) and stays pending, so connections already accepted keep being served
/// until the server's own shutdown signal.
fn until_stopped<S, T>(incoming: S, stop: watch::Receiver<bool>) -> impl futures::Stream<Item = T> + Send
where
    S: futures::Stream<Item = T> + Send + Unpin,
    T: Send,
{
    futures::stream::unfold((Some(incoming), stop), |(mut incoming, mut stop)| async move {
        loop {
            let Some(inner) = incoming.as_mut() else {
                return futures::future::pending().await;
            };
            let item = tokio::select! {
                _ = stop.wait_for(|s| *s) => None,
                item = futures::StreamExt::next(inner) => Some(item),
            };
            match item {
                None => incoming = None,
                Some(item) => return item.map(|i| (i, (incoming, stop))),
            }
        }
    })
}

/// TLS for the TCP addresses, as buildkitd's `--tlscert`/`--tlskey`/`--tlscacert`: the server's
/// certificate and key (PEM) enable TLS; a CA (PEM) makes client certificates required and
/// verified against it. Unix sockets are never wrapped (file permissions guard them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The server's certificate chain (PEM).
    pub cert: PathBuf,
    /// The server's private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// The CA client certificates must chain to; `None` accepts any client.
    pub ca: Option<PathBuf>,
}

impl TlsFiles {
    /// Checks the combination buildkitd accepts: a CA alone (no server certificate) or a
    /// certificate without its key is an option error naming what is missing.
    pub fn from_flags(cert: Option<PathBuf>, key: Option<PathBuf>, ca: Option<PathBuf>) -> Result<Option<TlsFiles>> {
        match (cert, key) {
            (None, None) if ca.is_none() => Ok(None),
            (None, None) => Err(Error::option(
                "tlscacert",
                ca.map(|p| p.display().to_string()).unwrap_or_default(),
                "--tlscert and --tlskey as well (the CA verifies clients of a TLS server)",
            )),
            (Some(c), None) => Err(Error::option("tlscert", c.display().to_string(), "--tlskey with the certificate")),
            (None, Some(k)) => Err(Error::option("tlskey", k.display().to_string(), "--tlscert with the key")),
            (Some(cert), Some(key)) => Ok(Some(TlsFiles { cert, key, ca })),
        }
    }

    /// Reads the files into tonic's server TLS configuration (rustls with ring).
    fn config(&self) -> Result<tonic::transport::ServerTlsConfig> {
        use tonic::transport::{Certificate, Identity, ServerTlsConfig};
        let read = |what: &str, p: &std::path::Path| -> Result<Vec<u8>> {
            let data = std::fs::read(p).map_err(io(format!("read the TLS {what} {}", p.display())))?;
            if !data.windows(11).any(|w| w == b"-----BEGIN ") {
                return Err(Error::option(what, p.display().to_string(), "a PEM file"));
            }
            Ok(data)
        };
        let identity = Identity::from_pem(read("tlscert", &self.cert)?, read("tlskey", &self.key)?);
        let mut cfg = ServerTlsConfig::new().identity(identity);
        if let Some(ca) = &self.ca {
            cfg = cfg.client_ca_root(Certificate::from_pem(read("tlscacert", ca)?)).client_auth_optional(false);
        }
        Ok(cfg)
    }
}

/// Serves `engine` on every address until `shutdown` completes, then stops accepting (listeners
/// closed, unix sockets removed), lets running solves finish — on the connections they use,
/// which keep serving their other calls (a client-side build still needs `LLBBridge.Return`) — for
/// at most [`DRAIN_LIMIT`] before cancelling them, closes connections (at most [`CLOSE_LIMIT`])
/// and returns once the engine is idle. Addresses are bound before this returns its future's
/// first poll result, so a bind error is reported at once.
pub async fn serve(engine: Engine, addrs: &[ListenAddr], shutdown: impl Future<Output = ()>) -> Result<()> {
    serve_with_tls(engine, addrs, None, shutdown).await
}

/// [`serve`], with TLS on the TCP addresses when `tls` is given (see [`TlsFiles`]).
pub async fn serve_with_tls(
    engine: Engine,
    addrs: &[ListenAddr],
    tls: Option<&TlsFiles>,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    if addrs.is_empty() {
        return Err(Error::option("addr", "", "at least one address to listen on"));
    }
    let tls_config = tls.map(TlsFiles::config).transpose()?;
    let fwd = bridge::Forwarder::default();
    let workers = control::worker_records(&engine);
    let drain = Drain::default();
    let service = ControlServer::new(ControlService::new(engine.clone(), fwd.clone()).with_drain(drain.clone()))
        .max_decoding_message_size(64 << 20);
    let gateway = LlbBridgeServer::new(bridge::BridgeService::new(fwd, workers, engine.clone()))
        .max_decoding_message_size(64 << 20);
    let (stop_tx, stop_rx) = watch::channel(false);
    let (accept_tx, accept_rx) = watch::channel(false);
    let mut servers = tokio::task::JoinSet::new();
    let mut sockets = Vec::new();
    for addr in addrs {
        let mut stop = stop_rx.clone();
        let stopped = async move {
            let _ = stop.wait_for(|s| *s).await;
        };
        let mut builder = tonic::transport::Server::builder()
            .initial_stream_window_size(crate::session::STREAM_WINDOW)
            .initial_connection_window_size(crate::session::CONNECTION_WINDOW)
            .max_frame_size(crate::session::MAX_FRAME);
        if let (ListenAddr::Tcp(_), Some(cfg)) = (addr, &tls_config) {
            builder = builder.tls_config(cfg.clone()).map_err(|e| {
                Error::with_source(ErrorKind::Option, "the TLS certificate, key or CA cannot be used", e)
            })?;
        }
        let router = builder.add_service(service.clone()).add_service(gateway.clone());
        match addr {
            ListenAddr::Unix(path) => {
                let l = bind_unix(path)?;
                sockets.push(path.clone());
                let incoming = until_stopped(tokio_stream::wrappers::UnixListenerStream::new(l), accept_rx.clone());
                servers.spawn(router.serve_with_incoming_shutdown(incoming, stopped));
            }
            ListenAddr::Tcp(hp) => {
                let l = tokio::net::TcpListener::bind(hp).await.map_err(io(format!("listen on {hp}")))?;
                let incoming = until_stopped(tokio_stream::wrappers::TcpListenerStream::new(l), accept_rx.clone());
                servers.spawn(router.serve_with_incoming_shutdown(incoming, stopped));
            }
        }
        let secure = matches!(addr, ListenAddr::Tcp(_)) && tls_config.is_some();
        tracing::info!(%addr, tls = secure, "serving BuildKit's API");
    }
    tokio::select! {
        _ = shutdown => {}
        Some(r) = servers.join_next() => {
            // A server ended on its own: stop the others and report why.
            let _ = stop_tx.send(true);
            for p in &sockets {
                let _ = std::fs::remove_file(p);
            }
            return match r {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(Error::with_source(ErrorKind::Io, "the gRPC server failed", e)),
                Err(e) => Err(Error::with_source(ErrorKind::Internal, "the gRPC server task", e)),
            };
        }
    }
    // Stop accepting: listeners closed, sockets removed; accepted connections keep serving.
    let _ = accept_tx.send(true);
    for p in &sockets {
        let _ = std::fs::remove_file(p);
    }
    let running = drain.running();
    if running > 0 {
        tracing::info!(running, limit = ?DRAIN_LIMIT, "draining running solves");
    }
    if tokio::time::timeout(DRAIN_LIMIT, drain.idle()).await.is_err() {
        tracing::warn!(running = drain.running(), "solves still running after the drain limit: cancelling them");
        drain.abort();
        let _ = tokio::time::timeout(CLOSE_LIMIT, drain.idle()).await;
    }
    // Then close connections (HTTP/2 GOAWAY: calls in flight finish), bounded.
    let _ = stop_tx.send(true);
    let closing = async { while servers.join_next().await.is_some() {} };
    if tokio::time::timeout(CLOSE_LIMIT, closing).await.is_err() {
        tracing::warn!("connections still open after {CLOSE_LIMIT:?}: closing them");
        servers.abort_all();
    }
    // Cancelled solves release their containers, mounts and snapshots before we return.
    if tokio::time::timeout(DRAIN_LIMIT, engine.wait_idle()).await.is_err() {
        tracing::warn!("the engine's tasks did not end within {DRAIN_LIMIT:?}");
    }
    Ok(())
}
