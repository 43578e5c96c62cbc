//! `Engine`: a thin facade. It opens a root (exclusive lock, metadata db, content store,
//! workers) into a [`CacheManager`] and a [`Solver`], and forwards solves, disk usage, prune and
//! worker listing to them. The public face bindings use. Nothing below imports this module.

use crate::cache::{CacheManager, MetadataStore, RootLock};
use crate::content::ContentStore;
use crate::error::{Error, ErrorKind, IoContext, Result};
use crate::graph::Definition;
use crate::snapshot::{self, Snapshotter};
use crate::solver::{self, Solver};
use crate::worker::pool::{Worker, WorkerPool};
use crate::worker::RuncExecutor;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use crate::cache::{PruneReport, UsageRecord};
pub use crate::solver::{CancelToken, SolveOptions, SolveResult};

/// Which snapshotter a worker uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapshotterKind {
    /// overlayfs (default; needs root and overlay support).
    Overlayfs,
    /// Full copies; works everywhere.
    Native,
}

impl SnapshotterKind {
    /// `overlayfs` or `native`.
    pub fn as_str(self) -> &'static str {
        match self {
            SnapshotterKind::Overlayfs => "overlayfs",
            SnapshotterKind::Native => "native",
        }
    }
}

impl std::str::FromStr for SnapshotterKind {
    type Err = Error;
    /// `overlayfs` or `native`; anything else is an option error naming the accepted values.
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "overlayfs" => Ok(SnapshotterKind::Overlayfs),
            "native" => Ok(SnapshotterKind::Native),
            other => Err(Error::option("snapshotters", other, "expected overlayfs or native")),
        }
    }
}

/// How to open an engine.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// The root directory owning all state.
    pub root: PathBuf,
    /// Maximum vertices executing at once.
    pub parallelism: usize,
    /// The OCI runtime binary (`runc`).
    pub runtime: String,
    /// Workers to create, in order (the first that opens is the default). A snapshotter that
    /// cannot work here is skipped with a warning.
    pub snapshotters: Vec<SnapshotterKind>,
    /// Timeouts and retries of registry requests (image pulls and pushes, registry caches).
    /// `None`: the defaults (connect 30 s, idle read/write 60 s, 3 attempts of idempotent
    /// requests), overridden by `KILN_REGISTRY_CONNECT_TIMEOUT`, `KILN_REGISTRY_READ_TIMEOUT`
    /// (seconds) and `KILN_REGISTRY_RETRIES` when set — read by [`Engine::open`], which fails on
    /// an invalid value.
    pub registry: Option<crate::registry::RegistryOptions>,
}

impl EngineOptions {
    /// Defaults for `root`: parallelism = CPUs, runc, overlayfs then native.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        EngineOptions {
            root: root.into(),
            parallelism: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2).max(2),
            runtime: "runc".into(),
            snapshotters: vec![SnapshotterKind::Overlayfs, SnapshotterKind::Native],
            registry: None,
        }
    }

    /// The default root: `$XDG_DATA_HOME/kiln`, else `/var/lib/kiln` as root, else `~/.local/share/kiln`.
    pub fn default_root() -> PathBuf {
        if let Some(x) = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
            return PathBuf::from(x).join("kiln");
        }
        if nix::unistd::geteuid().is_root() {
            return PathBuf::from("/var/lib/kiln");
        }
        let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("."));
        home.join(".local/share/kiln")
    }
}

/// A worker as `kiln workers` shows it.
#[derive(Debug, Clone)]
pub struct WorkerInfo {
    /// Worker name.
    pub name: String,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
}

/// Keeps the root private (0700, as BuildKit's): snapshots hold setuid binaries and device nodes
/// no other local user may reach. An existing root found open to others is fixed, with a warning.
fn private_root(root: &Path, existed: bool) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(root).with_path("reading mode of engine root", root)?.permissions().mode() & 0o7777;
    if mode != 0o700 {
        if existed && mode & 0o077 != 0 {
            tracing::warn!(root = %root.display(), mode = format!("{mode:o}"), "engine root was accessible to other users; setting it to 0700");
        }
        std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o700))
            .with_path("making engine root private", root)?;
    }
    Ok(())
}

/// An open build engine on one root.
#[derive(Debug, Clone)]
pub struct Engine {
    solver: Arc<Solver>,
}

impl Engine {
    /// Opens (creating if needed) the root; fails with `RootInUse` if another engine holds it.
    pub fn open(opts: EngineOptions) -> Result<Engine> {
        let registry = match &opts.registry {
            Some(r) => r.clone(),
            None => crate::registry::RegistryOptions::from_env()?,
        };
        let root = opts.root.clone();
        let existed = root.exists();
        {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&root)
                .with_path("create engine root", &root)?;
        }
        let root = root.canonicalize().with_path("resolve engine root", &root)?;
        private_root(&root, existed)?;
        let lock = RootLock::acquire(&root)?;
        let meta = MetadataStore::open(&root.join("metadata.redb"))?;
        let content = ContentStore::open(&root.join("content"))?;
        content.remove_stale_ingest()?;
        let tmp = root.join("tmp");
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).with_path("clean engine tmp", &tmp)?;
        }
        std::fs::create_dir_all(&tmp).with_path("create engine tmp", &tmp)?;
        solver::exec::remove_stale_secret_dirs(&tmp);
        let executor =
            Arc::new(RuncExecutor::new(&opts.runtime, root.join("runtime").join(&opts.runtime), root.join("bundles"))?);
        executor.cleanup_stale()?;
        let hostname =
            std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_owned()).unwrap_or_default();
        let mut workers = Vec::new();
        for kind in &opts.snapshotters {
            let dir = root.join("snapshots").join(kind.as_str());
            let sn = match kind {
                SnapshotterKind::Overlayfs => snapshot::open_overlay(&dir),
                SnapshotterKind::Native => snapshot::open_native(&dir),
            };
            let sn: Arc<dyn Snapshotter> = match sn {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(snapshotter = kind.as_str(), error = %e, "snapshotter unavailable; worker not registered");
                    continue;
                }
            };
            let name = format!("{}-{}", opts.runtime, kind.as_str());
            let mut labels = BTreeMap::new();
            labels.insert("executor".to_owned(), opts.runtime.clone());
            labels.insert("snapshotter".to_owned(), kind.as_str().to_owned());
            labels.insert("hostname".to_owned(), hostname.clone());
            labels.insert("name".to_owned(), name.clone());
            workers.push(Arc::new(Worker { name, labels, executor: executor.clone(), snapshotter: sn }));
        }
        if workers.is_empty() {
            return Err(Error::new(ErrorKind::Worker, "no snapshotter could be opened; see the warnings above"));
        }
        let cache_mounts = solver::cache_mounts::CacheMounts::new(root.join("cache-mounts"))?;
        let cache = CacheManager::new(root, lock, meta, content, WorkerPool::new(workers), tmp);
        let engine = Engine { solver: Arc::new(Solver::new(cache, opts.parallelism, cache_mounts, registry)) };
        engine.solver.cache.remove_orphans()?;
        Ok(engine)
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        self.solver.cache.root()
    }

    /// The workers, default first.
    pub fn workers(&self) -> Vec<WorkerInfo> {
        self.solver
            .cache
            .workers()
            .all()
            .iter()
            .map(|w| WorkerInfo { name: w.name.clone(), labels: w.labels.clone() })
            .collect()
    }

    /// Solves `def`, runs the exporters of `opts`. Dropping the future cancels the solve: running
    /// containers are killed and every snapshot and mount is released.
    pub async fn solve(&self, def: &Definition, opts: SolveOptions) -> Result<SolveResult> {
        crate::options::destinations::check_outside_root(self.root(), &opts.outputs, &opts.cache_exports)?;
        self.solver.solve(def, opts).await
    }

    /// Waits until no vertex task is alive: after a cancelled (dropped) solve, its containers are
    /// killed and its mounts and snapshots released when this returns.
    pub async fn wait_idle(&self) {
        self.solver.wait_idle().await
    }

    /// Cache records and their sizes.
    pub async fn disk_usage(&self) -> Result<Vec<UsageRecord>> {
        let _gate = self.solver.read_gate().await;
        self.solver.cache.disk_usage()
    }

    /// Removes cache records, least recently used first, until at most `keep_bytes` remain
    /// (`all` removes everything), then every snapshot no record or child needs.
    pub async fn prune(&self, keep_bytes: u64, all: bool) -> Result<PruneReport> {
        let _gate = self.solver.write_gate().await;
        let cache = self.solver.cache.clone();
        tokio::task::spawn_blocking(move || cache.prune(keep_bytes, all))
            .await
            .map_err(|e| Error::with_source(ErrorKind::Internal, "prune task", e))?
    }

    /// Snapshot ids per worker (for leak checks and `kiln du --verbose`).
    pub fn snapshots(&self) -> Result<BTreeMap<String, Vec<String>>> {
        self.solver.cache.snapshots()
    }

    /// Distinct (worker, snapshot) pairs referenced by cache records.
    pub fn recorded_snapshots(&self) -> Result<BTreeSet<(String, String)>> {
        self.solver.cache.recorded_snapshots()
    }

    /// Cache keys whose dedup lock is in use right now (0 when the engine is idle): the lock
    /// map holds only keys in use. For tests.
    #[doc(hidden)]
    pub fn key_locks_in_use(&self) -> usize {
        self.solver.key_locks_in_use()
    }

    /// Containers the runtime still knows about (for leak checks).
    pub fn running_containers(&self) -> Result<Vec<String>> {
        match self.solver.cache.workers().all().first() {
            Some(w) => w.executor.list_containers(),
            None => Ok(Vec::new()),
        }
    }
}
