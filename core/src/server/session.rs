//! BuildKit sessions on the daemon side: a client's `Control.Session` stream carries an HTTP/2
//! connection (BuildKit's "hijacked" gRPC stream) on which the *client* serves gRPC — file sync
//! of its local dirs, file send for outputs, secrets, SSH, auth. This module tunnels that stream
//! into a tonic [`Channel`] the daemon calls through, keeps the sessions by id (the
//! `X-Docker-Expose-Session-Uuid` header) for solves to find, checks their health as BuildKit
//! does, and forgets a session when its stream ends.

use super::proto::control::BytesMessage;
use super::proto::health::v1::health_client::HealthClient;
use super::proto::health::v1::HealthCheckRequest;
use crate::session::tunnel_io::tunnel_io;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::Notify;
use tonic::metadata::MetadataMap;
use tonic::transport::{Channel, Endpoint};
use tonic::{Status, Streaming};

/// How long a solve waits for the session it names to attach (the client opens it beside the
/// solve).
pub const ATTACH_WAIT: Duration = Duration::from_secs(10);
/// How long the HTTP/2 handshake with the client may take.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(15);
/// Health checks: every `HEALTH_PERIOD`, each bounded by `HEALTH_TIMEOUT`; two failures in a row
/// end the session (BuildKit's `monitorHealth`).
pub const HEALTH_PERIOD: Duration = Duration::from_secs(5);
/// See [`HEALTH_PERIOD`].
pub const HEALTH_TIMEOUT: Duration = Duration::from_secs(30);

/// One attached client session.
#[derive(Debug)]
pub struct Session {
    /// The session id.
    pub id: String,
    /// The client's name for it.
    pub name: String,
    /// The client's key for what its sessions share (`X-Docker-Expose-Session-Sharedkey`): the
    /// same key names the same local dirs, so their synced copies are kept for its next build.
    pub shared_key: String,
    /// The gRPC methods the client serves on it (`/moby.filesync.v1.FileSync/DiffCopy`, ...).
    pub methods: Vec<String>,
    /// The connection to the client's services.
    pub channel: Channel,
}

impl Session {
    /// Whether the client serves `method` (a full path such as `/moby.filesync.v1.FileSync/DiffCopy`).
    pub fn serves(&self, method: &str) -> bool {
        self.methods.iter().any(|m| m.eq_ignore_ascii_case(method))
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The attached sessions, by id.
#[derive(Default, Clone)]
pub struct Sessions {
    map: Arc<Mutex<HashMap<String, Arc<Session>>>>,
    attached: Arc<Notify>,
}

/// Removes a session from the table when its stream ends.
struct Detach {
    sessions: Sessions,
    id: String,
}

impl Drop for Detach {
    fn drop(&mut self) {
        lock(&self.sessions.map).remove(&self.id);
        tracing::debug!(session = %self.id, "session detached");
    }
}

fn header(md: &MetadataMap, key: &str) -> Option<String> {
    md.get(key).and_then(|v| v.to_str().ok()).map(str::to_owned)
}

/// The stream of messages to the client: what our end of the tunnel writes.
type Outbound = futures::stream::Map<
    futures::channel::mpsc::Receiver<prost::bytes::Bytes>,
    fn(prost::bytes::Bytes) -> Result<BytesMessage, Status>,
>;

impl Sessions {
    /// Attaches the stream of a `Control.Session` call: returns the stream of bytes to send back
    /// to the client; the session is usable by id once the HTTP/2 handshake completed.
    pub async fn attach(&self, md: &MetadataMap, mut inbound: Streaming<BytesMessage>) -> Result<Outbound, Status> {
        let id = header(md, "x-docker-expose-session-uuid")
            .ok_or_else(|| Status::invalid_argument("a session needs the X-Docker-Expose-Session-Uuid header"))?;
        let name = header(md, "x-docker-expose-session-name").unwrap_or_default();
        let shared_key = header(md, "x-docker-expose-session-sharedkey").unwrap_or_default();
        let methods: Vec<String> = md
            .get_all("x-docker-expose-session-grpc-method")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(',').map(|m| m.trim().to_owned()))
            .filter(|m| !m.is_empty())
            .collect();
        // The client's messages are what our HTTP/2 client reads; its writes are our messages.
        let (ours, mut feed, written) = tunnel_io();
        let outbound = futures::StreamExt::map(written, (|data| Ok(BytesMessage { data })) as fn(_) -> _);
        // Client → daemon bytes.
        let inbound_done = Arc::new(Notify::new());
        let done = inbound_done.clone();
        tokio::spawn(async move {
            while let Ok(Some(m)) = inbound.message().await {
                if futures::SinkExt::send(&mut feed, m.data).await.is_err() {
                    break;
                }
            }
            // Dropping the feeder is the end of the stream for our HTTP/2 client.
            drop(feed);
            done.notify_waiters();
        });
        let io = Arc::new(Mutex::new(Some(ours)));
        let connector = tower::service_fn(move |_: tonic::transport::Uri| {
            let io = lock(&io).take();
            async move {
                io.map(hyper_util::rt::TokioIo::new).ok_or_else(|| {
                    std::io::Error::new(std::io::ErrorKind::NotConnected, "the session's connection is gone")
                })
            }
        });
        let endpoint = Endpoint::from_static("http://session.kiln")
            .connect_timeout(HANDSHAKE_TIMEOUT)
            .initial_stream_window_size(crate::session::STREAM_WINDOW)
            .initial_connection_window_size(crate::session::CONNECTION_WINDOW)
            .max_frame_size(crate::session::MAX_FRAME);
        let channel = tokio::time::timeout(HANDSHAKE_TIMEOUT, endpoint.connect_with_connector(connector))
            .await
            .map_err(|_| Status::deadline_exceeded("the session's HTTP/2 handshake timed out"))?
            .map_err(|e| Status::unavailable(format!("the session's HTTP/2 handshake failed: {e}")))?;
        let session = Arc::new(Session { id: id.clone(), name, shared_key, methods, channel: channel.clone() });
        lock(&self.map).insert(id.clone(), session.clone());
        self.attached.notify_waiters();
        tracing::debug!(session = %id, methods = ?session.methods, "session attached");
        let detach = Detach { sessions: self.clone(), id };
        tokio::spawn(async move {
            let _detach = detach;
            tokio::select! {
                _ = inbound_done.notified() => {}
                _ = monitor_health(channel) => {}
            }
        });
        Ok(outbound)
    }

    /// The session `id`, waiting (bounded) for it to attach.
    pub async fn get(&self, id: &str) -> Result<Arc<Session>, Status> {
        let deadline = tokio::time::Instant::now() + ATTACH_WAIT;
        loop {
            let notified = self.attached.notified();
            if let Some(s) = lock(&self.map).get(id) {
                return Ok(s.clone());
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Err(Status::failed_precondition(format!("no session {id:?} is attached to this server")));
            }
        }
    }
}

/// Returns when the client stops answering health checks (two failures in a row).
async fn monitor_health(channel: Channel) {
    let mut client = HealthClient::new(channel);
    let mut failed_before = false;
    let mut tick = tokio::time::interval(HEALTH_PERIOD);
    tick.tick().await;
    loop {
        tick.tick().await;
        let ok = matches!(
            tokio::time::timeout(HEALTH_TIMEOUT, client.check(HealthCheckRequest::default())).await,
            Ok(Ok(_))
        );
        if ok {
            failed_before = false;
        } else if failed_before {
            tracing::warn!("a session's health check failed twice: ending it");
            return;
        } else {
            failed_before = true;
        }
    }
}
