//! What a solve is asked to do and what it reports: [`SolveOptions`], [`SolveResult`], and the
//! [`CancelToken`] that stops one solve.

use crate::error::Result;
use crate::graph::ImageConfig;
use crate::options::{CacheExportSpec, CacheImportSpec, Entitlement, OutputSpec};
use crate::progress::ProgressSink;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;

/// What to do with a solve's result and how to watch it.
#[derive(Debug, Default, Clone)]
pub struct SolveOptions {
    /// Local directories by name (`local://NAME` sources).
    pub locals: BTreeMap<String, PathBuf>,
    /// Result exporters.
    pub outputs: Vec<OutputSpec>,
    /// Secret values by id (mounted as files; never cached or exported).
    pub secrets: BTreeMap<String, Vec<u8>>,
    /// Image config written by image exporters.
    pub image_config: ImageConfig,
    /// Where progress events go.
    pub progress: ProgressSink,
    /// Cache exporters run after the solve (`type=local,dest=DIR` / `type=registry,ref=...`).
    pub cache_exports: Vec<CacheExportSpec>,
    /// Cache importers consulted on a local cache miss.
    pub cache_imports: Vec<CacheImportSpec>,
    /// Cancels this solve (see [`CancelToken`]).
    pub cancel: Option<CancelToken>,
    /// SSH agent sockets by id (`ssh` mounts; buildctl's `--ssh ID=SOCKET`, id `default` when
    /// the mount names none). Each mount gets its own relay socket owned by the mount's uid/gid.
    pub ssh: BTreeMap<String, PathBuf>,
    /// Entitlements granted to this solve (buildctl's `--allow`): execs with `network=host` need
    /// [`Entitlement::NetworkHost`], `security=insecure` needs [`Entitlement::SecurityInsecure`];
    /// a definition using one that is not granted is refused before anything runs.
    pub entitlements: BTreeSet<Entitlement>,
}

impl SolveOptions {
    /// Adds an output from its CSV form (`type=local,dest=out`).
    pub fn output(mut self, csv: &str) -> Result<Self> {
        self.outputs.push(csv.parse()?);
        Ok(self)
    }

    /// Adds a cache exporter from its CSV form (`type=local,dest=DIR,mode=max`).
    pub fn cache_export(mut self, csv: &str) -> Result<Self> {
        self.cache_exports.push(csv.parse()?);
        Ok(self)
    }

    /// Adds a cache importer from its CSV form (`type=local,src=DIR`).
    pub fn cache_import(mut self, csv: &str) -> Result<Self> {
        self.cache_imports.push(csv.parse()?);
        Ok(self)
    }

    /// Adds a secret value by id.
    pub fn secret(mut self, id: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        self.secrets.insert(id.into(), value.into());
        self
    }

    /// Adds an SSH agent socket for `ssh` mounts with this id.
    pub fn ssh(mut self, id: impl Into<String>, socket: impl Into<PathBuf>) -> Self {
        self.ssh.insert(id.into(), socket.into());
        self
    }

    /// Grants an entitlement.
    pub fn allow(mut self, entitlement: Entitlement) -> Self {
        self.entitlements.insert(entitlement);
        self
    }

    /// Adds a local directory.
    pub fn local(mut self, name: impl Into<String>, dir: impl Into<PathBuf>) -> Self {
        self.locals.insert(name.into(), dir.into());
        self
    }
}

/// The outcome of a solve.
#[derive(Debug, Clone, Default)]
pub struct SolveResult {
    /// Exporter metadata (e.g. `containerimage.digest`).
    pub exporter_response: BTreeMap<String, String>,
    /// Vertices whose result came from the cache.
    pub cached: usize,
    /// Vertices that executed.
    pub executed: usize,
}

/// Cancels one solve. `cancel()` may be called from any thread; the solve then returns
/// `Error::Cancelled` once its own containers are killed and its mounts and snapshots released
/// (other solves on the engine are not waited for). Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct CancelToken {
    inner: Arc<CancelInner>,
}

#[derive(Debug, Default)]
struct CancelInner {
    cancelled: std::sync::atomic::AtomicBool,
    notify: tokio::sync::Notify,
}

impl CancelToken {
    /// A token not yet cancelled.
    pub fn new() -> Self {
        Self::default()
    }

    /// Requests cancellation (idempotent).
    pub fn cancel(&self) {
        self.inner.cancelled.store(true, std::sync::atomic::Ordering::SeqCst);
        self.inner.notify.notify_waiters();
    }

    /// True once `cancel` was called.
    pub fn is_cancelled(&self) -> bool {
        self.inner.cancelled.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Resolves when the token is cancelled.
    pub async fn cancelled(&self) {
        loop {
            let notified = self.inner.notify.notified();
            if self.is_cancelled() {
                return;
            }
            notified.await;
        }
    }
}
