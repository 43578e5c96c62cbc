//! `Engine`: a thin facade. It opens a root into a [`CacheManager`] (which owns the lock, stores
//! and workers) and a [`Solver`], and forwards solves, disk usage, prune and
//! worker listing to them — or, connected ([`Engine::connect`], feature `api`), forwards them
//! to a daemon through [`crate::client::Client`]. The public face bindings use. Nothing below
//! imports this module.

use crate::cache::CacheManager;
use crate::error::{Error, ErrorKind, Result};
use crate::graph::Definition;
use crate::solver::{self, Solver};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

mod image;
pub(crate) use image::LoggedInResolver;

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

/// An open build engine on one root, or connected to a daemon that speaks BuildKit's API
/// (`kiln serve`, buildkitd): the same surface either way.
#[derive(Debug, Clone)]
pub struct Engine {
    backend: Backend,
}

#[derive(Debug, Clone)]
enum Backend {
    Local(Arc<Solver>),
    #[cfg(feature = "api")]
    Remote(crate::client::Client),
}

/// What a connected engine cannot do.
#[cfg(feature = "api")]
fn remote_unsupported(what: &str) -> Error {
    Error::new(ErrorKind::Unsupported, format!("{what} applies to an embedded engine, not one connected to a daemon"))
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
        Ok(Engine { backend: Backend::Local(Arc::new(Solver::new(cache, opts.parallelism, registry))) })
    }

    /// Connects to a daemon speaking BuildKit's API at `addr` (`unix:///path/to.sock`,
    /// `tcp://HOST:PORT`): `kiln serve` or a real buildkitd. The engine then solves there —
    /// locals streamed from this machine, `local`/`tar`/`oci` outputs and secrets on this side —
    /// with the surface of an embedded one; what only an embedded engine has (its root, its
    /// snapshots) is an [`ErrorKind::Unsupported`] error. Fails when the daemon cannot be
    /// reached (its workers are listed here).
    #[cfg(feature = "api")]
    pub async fn connect(addr: &str, opts: &crate::client::ConnectOptions) -> Result<Engine> {
        Ok(Engine { backend: Backend::Remote(crate::client::Client::connect(addr, opts).await?) })
    }

    /// The daemon's address when connected, `None` for an embedded engine.
    pub fn address(&self) -> Option<&str> {
        match &self.backend {
            Backend::Local(_) => None,
            #[cfg(feature = "api")]
            Backend::Remote(c) => Some(c.addr()),
        }
    }

    fn solver(&self) -> Result<&Arc<Solver>> {
        match &self.backend {
            Backend::Local(s) => Ok(s),
            #[cfg(feature = "api")]
            Backend::Remote(_) => Err(remote_unsupported("this call")),
        }
    }

    /// The root directory (empty for a connected engine: the root is the daemon's).
    pub fn root(&self) -> &Path {
        match &self.backend {
            Backend::Local(s) => s.cache.root(),
            #[cfg(feature = "api")]
            Backend::Remote(_) => Path::new(""),
        }
    }

    /// The workers, default first.
    pub fn workers(&self) -> Vec<WorkerInfo> {
        match &self.backend {
            Backend::Local(s) => s
                .cache
                .workers()
                .all()
                .iter()
                .map(|w| WorkerInfo { name: w.name.clone(), labels: w.labels.clone() })
                .collect(),
            #[cfg(feature = "api")]
            Backend::Remote(c) => {
                c.workers().iter().map(|w| WorkerInfo { name: w.id.clone(), labels: w.labels.clone() }).collect()
            }
        }
    }

    /// Solves `def`, runs the exporters of `opts`. Dropping the future cancels the solve: running
    /// containers are killed and every snapshot and mount is released.
    pub async fn solve(&self, def: &Definition, opts: SolveOptions) -> Result<SolveResult> {
        opts.check(def)?;
        match &self.backend {
            Backend::Local(s) => {
                crate::options::destinations::check_outside_root(self.root(), &opts.outputs, &opts.cache_exports)?;
                s.solve(def, opts).await
            }
            #[cfg(feature = "api")]
            Backend::Remote(c) => c.solve(crate::client::Target::Definition(def), opts).await,
        }
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
        #[cfg(feature = "api")]
        if let Backend::Remote(c) = &self.backend {
            return crate::client::build::run(c, opts, f).await;
        }
        let solver = self.solver()?;
        crate::options::destinations::check_outside_root(self.root(), &opts.solve.outputs, &opts.solve.cache_exports)?;
        let _gate = solver.read_gate().await;
        crate::build::run(solver.clone(), opts, f).await
    }

    /// Runs a built-in frontend as a client-side build (BuildKit's `Solve` with a frontend):
    /// `frontend` is `dockerfile.v0` (also accepted: `dockerfile`), its options are
    /// `opts.frontend_attrs` under BuildKit's names (`filename`, `target`, `build-arg:NAME`,
    /// `label:NAME`, `no-cache`, `platform`, `context:NAME`, `cache-imports`, ...), the Dockerfile
    /// comes from the local named `dockerfile` and the build context from the local named
    /// `context` (both in `opts.solve.locals`). Base images resolve through this engine (registry
    /// or OCI layout). The result and its image config go to the outputs of `opts.solve`.
    pub async fn build_frontend(&self, frontend: &str, opts: BuildOptions) -> Result<SolveResult> {
        #[cfg(feature = "api")]
        if let Backend::Remote(c) = &self.backend {
            let name =
                if frontend == "dockerfile" { crate::frontend::dockerfile::build::FRONTEND_NAME } else { frontend };
            let target = crate::client::Target::Frontend { name, attrs: &opts.frontend_attrs };
            return c.solve(target, opts.solve).await;
        }
        match frontend {
            crate::frontend::dockerfile::build::FRONTEND_NAME | "dockerfile" => {
                let resolver: crate::frontend::dockerfile::build::SharedResolver =
                    Arc::new(LoggedInResolver::new(self.clone(), opts.solve.registry_credentials.clone()));
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
        if let Backend::Local(s) = &self.backend {
            s.wait_idle().await
        }
    }

    /// Cache records and their sizes.
    pub async fn disk_usage(&self) -> Result<Vec<UsageRecord>> {
        #[cfg(feature = "api")]
        if let Backend::Remote(c) = &self.backend {
            return c.disk_usage().await;
        }
        let solver = self.solver()?;
        let _gate = solver.read_gate().await;
        solver.cache.disk_usage()
    }

    /// Removes cache records, least recently used first, until at most `keep_bytes` remain
    /// (`all` removes everything), then every snapshot no record or child needs.
    pub async fn prune(&self, keep_bytes: u64, all: bool) -> Result<PruneReport> {
        #[cfg(feature = "api")]
        if let Backend::Remote(c) = &self.backend {
            return c.prune(keep_bytes, all).await;
        }
        let solver = self.solver()?;
        let _gate = solver.write_gate().await;
        let cache = solver.cache.clone();
        tokio::task::spawn_blocking(move || cache.prune(keep_bytes, all))
            .await
            .map_err(|e| Error::with_source(ErrorKind::Internal, "prune task", e))?
    }

    /// Snapshot ids per worker (leak checks; feature `test-support`).
    #[cfg(feature = "test-support")]
    pub fn snapshots(&self) -> Result<BTreeMap<String, Vec<String>>> {
        self.solver()?.cache.snapshots()
    }

    /// Distinct (worker, snapshot) pairs referenced by cache records (leak checks; feature
    /// `test-support`).
    #[cfg(feature = "test-support")]
    pub fn recorded_snapshots(&self) -> Result<std::collections::BTreeSet<(String, String)>> {
        self.solver()?.cache.recorded_snapshots()
    }

    /// Cache keys whose dedup lock is in use right now (0 when the engine is idle): the lock
    /// map holds only keys in use (leak checks; feature `test-support`).
    #[cfg(feature = "test-support")]
    pub fn key_locks_in_use(&self) -> usize {
        self.solver().map(|s| s.key_locks_in_use()).unwrap_or(0)
    }

    /// Containers the runtime still knows about (an idle engine has none; the Python and Node
    /// bindings expose this, so it is public API, not a test helper).
    pub fn running_containers(&self) -> Result<Vec<String>> {
        match self.solver()?.cache.workers().all().first() {
            Some(w) => w.executor.list_containers(),
            None => Ok(Vec::new()),
        }
    }
}
