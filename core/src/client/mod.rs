//! The client of BuildKit's API (issue 11): [`Client`] drives a `kiln serve` daemon or a real
//! buildkitd through `moby.buildkit.v1.Control` — solves of LLB definitions or of the
//! `dockerfile.v0` frontend, their progress, disk usage, prune, workers — and serves what the
//! daemon asks of its client over a session: the local dirs a solve names, its outputs, its
//! secrets. [`crate::Engine::connect`] wraps it so a connected engine has the embedded one's
//! surface.
//!
//! Boundaries: [`transport`] makes the gRPC channel (unix socket or TCP, TLS); [`session`] opens
//! the session stream and serves the client's services on it ([`services`]); [`request`] turns
//! [`SolveOptions`] into a `SolveRequest`; [`status`] turns the daemon's progress back into
//! [`ProgressEvent`](crate::progress::ProgressEvent)s and counts cached and executed vertices.

pub mod build;
pub mod content;
pub mod forward;
pub mod request;
pub mod services;
pub mod session;
pub mod status;
pub mod tls;
pub mod transport;

use crate::api::control::control_client::ControlClient;
use crate::api::control::{DiskUsageRequest, ListWorkersRequest, PruneRequest};
use crate::cache::{PruneReport, UsageRecord};
use crate::error::{Error, ErrorKind, Result};
use crate::graph::Definition;
use crate::solver::{SolveOptions, SolveResult};
use std::collections::BTreeMap;
use tonic::transport::Channel;

pub use transport::{ConnectOptions, TlsOptions};

/// Largest message the client accepts or sends (a big definition, a big status batch).
pub const MAX_MESSAGE: usize = 64 << 20;

/// A worker of the daemon: its id and labels.
#[derive(Debug, Clone)]
pub struct RemoteWorker {
    /// Worker id.
    pub id: String,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
}

/// A connection to a BuildKit API daemon (`kiln serve` or buildkitd). Cheap to clone; every
/// call opens its own streams on the one HTTP/2 connection.
#[derive(Debug, Clone)]
pub struct Client {
    channel: Channel,
    addr: String,
    workers: Vec<RemoteWorker>,
}

/// What a solve asks the daemon to build: an LLB definition, or a frontend with its options.
#[derive(Debug, Clone)]
pub enum Target<'a> {
    /// An LLB definition.
    Definition(&'a Definition),
    /// A frontend (`dockerfile.v0`) and its attributes (`filename`, `target`, `build-arg:…`).
    Frontend {
        /// The frontend's name.
        name: &'a str,
        /// Its options, by BuildKit's names.
        attrs: &'a BTreeMap<String, String>,
    },
}

/// The Solve response headers in which `kiln serve` reports its engine's counts of cached and
/// executed vertices (BuildKit's daemon sends none; the status stream is counted then).
pub const CACHED_KEY: &str = "kiln-cached";
/// See [`CACHED_KEY`].
pub const EXECUTED_KEY: &str = "kiln-executed";

/// The gRPC metadata key `kiln serve` puts an error's [`ErrorKind`] in (`exec`, `option`, ...),
/// so a connected engine raises the same typed errors as an embedded one.
pub const ERROR_KIND_KEY: &str = "kiln-error-kind";

/// A daemon's error as a kiln error: the kind `kiln serve` names, else one guessed from the
/// status code and BuildKit's wording.
pub(crate) fn status_error(what: &str, s: tonic::Status) -> Error {
    let named = s
        .metadata()
        .get(ERROR_KIND_KEY)
        .and_then(|v| v.to_str().ok())
        .and_then(|name| ErrorKind::ALL.iter().copied().find(|k| k.as_str() == name));
    let msg = s.message();
    let kind = named.unwrap_or(match s.code() {
        tonic::Code::InvalidArgument => ErrorKind::Definition,
        tonic::Code::Unimplemented => ErrorKind::Unsupported,
        tonic::Code::Cancelled => ErrorKind::Cancelled,
        tonic::Code::Unavailable => ErrorKind::Io,
        _ if msg.contains("did not complete successfully") => ErrorKind::Exec,
        _ => ErrorKind::Worker,
    });
    let msg = if msg.is_empty() { s.code().description() } else { msg };
    Error::new(kind, format!("{what}: {msg}"))
}

impl Client {
    /// Connects to `addr` (`unix:///path/to.sock`, `tcp://HOST:PORT`) and lists the daemon's
    /// workers, so an unreachable or foreign daemon fails here, not at the first build.
    pub async fn connect(addr: &str, opts: &ConnectOptions) -> Result<Client> {
        let channel = transport::channel(addr, opts).await?;
        let mut client = Client { channel, addr: addr.to_owned(), workers: Vec::new() };
        client.workers = client.list_workers().await?;
        Ok(client)
    }

    /// The address it was connected to.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// The daemon's workers as listed at connect time.
    pub fn workers(&self) -> &[RemoteWorker] {
        &self.workers
    }

    pub(crate) fn control(&self) -> ControlClient<Channel> {
        ControlClient::new(self.channel.clone())
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE)
    }

    async fn list_workers(&self) -> Result<Vec<RemoteWorker>> {
        let resp = self
            .control()
            .list_workers(ListWorkersRequest::default())
            .await
            .map_err(|s| status_error(&format!("listing the workers of {}", self.addr), s))?;
        Ok(resp
            .into_inner()
            .record
            .into_iter()
            .map(|w| RemoteWorker { id: w.id, labels: w.labels.into_iter().collect() })
            .collect())
    }

    /// Solves `target` on the daemon with `opts`: locals are streamed from this machine,
    /// outputs of type `local`, `tar` and `oci` are written here, secrets are read from here,
    /// `image` outputs and registry caches are handled by the daemon. Dropping the future ends
    /// the session and the status stream, which cancels the build on the daemon.
    pub async fn solve(&self, target: Target<'_>, opts: SolveOptions) -> Result<SolveResult> {
        request::solve(self, target, opts).await
    }

    /// The daemon's cache records.
    pub async fn disk_usage(&self) -> Result<Vec<UsageRecord>> {
        let resp =
            self.control().disk_usage(DiskUsageRequest::default()).await.map_err(|s| status_error("disk usage", s))?;
        Ok(resp.into_inner().record.into_iter().map(usage_record).collect())
    }

    /// Prunes the daemon's cache down to `keep_bytes` (`all`: everything).
    pub async fn prune(&self, keep_bytes: u64, all: bool) -> Result<PruneReport> {
        let req = PruneRequest { all, keep_bytes: i64::try_from(keep_bytes).unwrap_or(i64::MAX), ..Default::default() };
        let mut stream = self.control().prune(req).await.map_err(|s| status_error("prune", s))?.into_inner();
        let mut report = PruneReport::default();
        while let Some(r) = stream.message().await.map_err(|s| status_error("prune", s))? {
            report.removed += 1;
            report.freed_bytes += u64::try_from(r.size).unwrap_or(0);
        }
        Ok(report)
    }
}

fn usage_record(r: crate::api::control::UsageRecord) -> UsageRecord {
    let last = r.last_used_at.or(r.created_at).map(|t| u64::try_from(t.seconds).unwrap_or(0)).unwrap_or(0);
    UsageRecord {
        id: r.id,
        record_type: r.record_type,
        worker: String::new(),
        description: r.description,
        size: u64::try_from(r.size).unwrap_or(0),
        last_used: last,
    }
}
