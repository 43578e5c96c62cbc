//! `Engine`: a thin facade. It opens a root into a [`CacheManager`] (which owns the lock, stores
//! and workers) and a [`Solver`], and forwards solves, disk usage, prune and
//! worker listing to them. The public face bindings use. Nothing below imports this module.

use crate::cache::CacheManager;
use crate::error::{Error, ErrorKind, Result};
use crate::graph::Definition;
use crate::solver::{self, Solver};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

mod image;

pub use crate::build::{BuildContext, BuildOptions, BuildOutput, FileStat, Ref, SolveRequest};
pub use crate::cache::{PruneReport, UsageRecord};
pub use crate::snapshot::SnapshotterKind;
pub use crate::solver::{CancelToken, SolveOptions, SolveResult};

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
        let cache = CacheManager::open(&opts.root, &opts.runtime, &opts.snapshotters)?;
        solver::ops::exec::remove_stale_secret_dirs(cache.tmp());
        Ok(Engine { solver: Arc::new(Solver::new(cache, opts.parallelism, registry)) })
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
        opts.check(def)?;
        self.solver.solve(def, opts).await
    }

    /// Runs a client-side build (BuildKit's gateway frontend, embedded): `f` gets a
    /// [`BuildContext`] to solve definitions into [`Ref`]s, read files, directories and stats
    /// from them, warn, and set the result; the result it returns (or sets, once) goes through
    /// the exporters and cache exporters of `opts.solve` as a solve's would.
    ///
    /// Inner solves share work with each other and with every other solve and build on the
    /// engine; the build holds the in-flight gate throughout (prune waits for it). When the build
    /// ends — success, error, a panic in `f` (an [`ErrorKind::Internal`] error), cancellation
    /// through `opts.solve.cancel` or the future being dropped — every ref is released: no view
    /// stays mounted, no container runs, no snapshot is left unrecorded. Returning a result after
    /// one was set is a [`ErrorKind::Definition`] error "result already set".
    pub async fn build<F, Fut>(&self, opts: BuildOptions, f: F) -> Result<SolveResult>
    where
        F: FnOnce(BuildContext) -> Fut,
        Fut: std::future::Future<Output = Result<Option<BuildOutput>>> + Send,
    {
        crate::options::destinations::check_outside_root(self.root(), &opts.solve.outputs, &opts.solve.cache_exports)?;
        let _gate = self.solver.read_gate().await;
        crate::build::run(self.solver.clone(), opts, f).await
    }

    /// Runs a built-in frontend as a client-side build (BuildKit's `Solve` with a frontend):
    /// `frontend` is `dockerfile.v0` (also accepted: `dockerfile`), its options are
    /// `opts.frontend_attrs` under BuildKit's names (`filename`, `target`, `build-arg:NAME`,
    /// `label:NAME`, `no-cache`, `platform`, `context:NAME`, `cache-imports`, ...), the Dockerfile
    /// comes from the local named `dockerfile` and the build context from the local named
    /// `context` (both in `opts.solve.locals`). Base images resolve through this engine (registry
    /// or OCI layout). The result and its image config go to the outputs of `opts.solve`.
    pub async fn build_frontend(&self, frontend: &str, opts: BuildOptions) -> Result<SolveResult> {
        match frontend {
            crate::frontend::dockerfile::build::FRONTEND_NAME | "dockerfile" => {
                let resolver: crate::frontend::dockerfile::build::SharedResolver = Arc::new(self.clone());
                self.build(opts, move |ctx| crate::frontend::dockerfile::build::build(ctx, resolver)).await
            }
            other => Err(Error::new(
                ErrorKind::Unsupported,
                format!("frontend {other:?} is not supported: kiln has the built-in dockerfile.v0"),
            )),
        }
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

    /// Snapshot ids per worker (leak checks; feature `test-support`).
    #[cfg(feature = "test-support")]
    pub fn snapshots(&self) -> Result<BTreeMap<String, Vec<String>>> {
        self.solver.cache.snapshots()
    }

    /// Distinct (worker, snapshot) pairs referenced by cache records (leak checks; feature
    /// `test-support`).
    #[cfg(feature = "test-support")]
    pub fn recorded_snapshots(&self) -> Result<std::collections::BTreeSet<(String, String)>> {
        self.solver.cache.recorded_snapshots()
    }

    /// Cache keys whose dedup lock is in use right now (0 when the engine is idle): the lock
    /// map holds only keys in use (leak checks; feature `test-support`).
    #[cfg(feature = "test-support")]
    pub fn key_locks_in_use(&self) -> usize {
        self.solver.key_locks_in_use()
    }

    /// Containers the runtime still knows about (an idle engine has none; the Python and Node
    /// bindings expose this, so it is public API, not a test helper).
    pub fn running_containers(&self) -> Result<Vec<String>> {
        match self.solver.cache.workers().all().first() {
            Some(w) => w.executor.list_containers(),
            None => Ok(Vec::new()),
        }
    }
}
