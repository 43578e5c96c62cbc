//! `Engine`: opens a root (exclusive lock, metadata db, content store, workers), solves
//! definitions, reports disk usage and prunes. The public face bindings use.

use crate::cache::metadata::now_secs;
use crate::cache::{MetadataStore, RootLock};
use crate::content::ContentStore;
use crate::error::{Error, ErrorKind, IoContext, Result};
use crate::graph::{Definition, ImageConfig};
use crate::options::{CacheExportSpec, CacheImportSpec, Entitlement, OutputSpec};
use crate::snapshot::{self, SnapshotId, Snapshotter};
use crate::solver::{self, ProgressSink};
use crate::worker::pool::{Worker, WorkerPool};
use crate::worker::RuncExecutor;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

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

/// A worker as `kiln workers` shows it.
#[derive(Debug, Clone)]
pub struct WorkerInfo {
    /// Worker name.
    pub name: String,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
}

/// One cache record in disk usage.
#[derive(Debug, Clone)]
pub struct UsageRecord {
    /// Snapshot id.
    pub id: String,
    /// Worker holding it.
    pub worker: String,
    /// Vertex that made it.
    pub description: String,
    /// Bytes of its own data, including its layer blobs in the content store.
    pub size: u64,
    /// Unix seconds of last use.
    pub last_used: u64,
}

/// What a prune removed.
#[derive(Debug, Clone, Default)]
pub struct PruneReport {
    /// Snapshots removed.
    pub removed: usize,
    /// Bytes freed (snapshots and the content store's layer blobs).
    pub freed_bytes: u64,
}

/// Shared engine state (internal).
#[derive(Debug)]
pub(crate) struct EngineInner {
    pub root: PathBuf,
    pub meta: MetadataStore,
    pub content: ContentStore,
    pub workers: WorkerPool,
    pub limiter: Arc<tokio::sync::Semaphore>,
    pub key_locks: KeyLocks,
    pub gc: tokio::sync::RwLock<()>,
    pub cache_mounts: solver::cache_mounts::CacheMounts,
    pub tmp: PathBuf,
    /// Vertex tasks alive (including cancelled ones still cleaning up).
    pub tasks: Arc<TaskCount>,
    /// Timeouts and retries of every registry client.
    pub registry: crate::registry::RegistryOptions,
    _lock: RootLock,
}

/// Counts live vertex tasks so callers can wait until a cancelled solve has cleaned up.
#[derive(Debug, Default)]
pub(crate) struct TaskCount {
    n: std::sync::atomic::AtomicUsize,
    idle: tokio::sync::Notify,
}

/// Held by a vertex task; dropped last when the task finishes or is aborted.
pub(crate) struct TaskToken(Arc<TaskCount>);

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

impl TaskCount {
    /// Returns once no token is alive.
    pub async fn wait_idle(&self) {
        loop {
            let notified = self.idle.notified();
            if self.n.load(std::sync::atomic::Ordering::SeqCst) == 0 {
                return;
            }
            notified.await;
        }
    }

    pub fn token(self: &Arc<Self>) -> TaskToken {
        self.n.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        TaskToken(self.clone())
    }
}

impl Drop for TaskToken {
    fn drop(&mut self) {
        if self.0.n.fetch_sub(1, std::sync::atomic::Ordering::SeqCst) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

impl EngineInner {
    /// The async lock serialising work on one cache key (dedup of identical vertices).
    pub fn key_lock(&self, key: &str) -> KeyLockHandle<'_> {
        self.key_locks.handle(key)
    }
}

/// Per-key async locks (dedup of identical vertices across solves). An entry lives exactly as
/// long as a [`KeyLockHandle`] for its key does: the last handle dropped removes it, so the map
/// holds only keys in use and every operation is O(1) however many keys are held at once (a
/// 200,000-op chain holds one per op while it waits for its inputs).
#[derive(Debug, Default)]
pub(crate) struct KeyLocks {
    map: std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl KeyLocks {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<tokio::sync::Mutex<()>>>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A handle on `key`'s lock (created on first use). Every clone and drop of the shared
    /// `Arc`s happens under the map's mutex, so the strong count seen there is exact.
    pub fn handle(&self, key: &str) -> KeyLockHandle<'_> {
        let lock = self.map().entry(key.to_owned()).or_default().clone();
        KeyLockHandle { locks: self, key: key.to_owned(), lock }
    }

    /// Keys with a live handle.
    pub fn len(&self) -> usize {
        self.map().len()
    }
}

/// A reference to one key's lock; see [`KeyLocks`].
#[derive(Debug)]
pub(crate) struct KeyLockHandle<'a> {
    locks: &'a KeyLocks,
    key: String,
    lock: Arc<tokio::sync::Mutex<()>>,
}

impl KeyLockHandle<'_> {
    /// Waits for the key's lock.
    pub async fn lock(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.lock.lock().await
    }
}

impl Drop for KeyLockHandle<'_> {
    fn drop(&mut self) {
        let mut m = self.locks.map();
        // Taken out (leaving a private placeholder) so our reference is released under the mutex.
        let l = std::mem::take(&mut self.lock);
        // Ours and the map's: we are the last handle.
        if Arc::strong_count(&l) == 2 && m.get(&self.key).is_some_and(|cur| Arc::ptr_eq(cur, &l)) {
            m.remove(&self.key);
        }
        drop(l);
    }
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
    inner: Arc<EngineInner>,
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
        let inner = EngineInner {
            cache_mounts: solver::cache_mounts::CacheMounts::new(root.join("cache-mounts"))?,
            root,
            meta,
            content,
            workers: WorkerPool::new(workers),
            limiter: Arc::new(tokio::sync::Semaphore::new(opts.parallelism.max(1))),
            key_locks: Default::default(),
            gc: Default::default(),
            tmp,
            tasks: Default::default(),
            registry,
            _lock: lock,
        };
        let engine = Engine { inner: Arc::new(inner) };
        engine.remove_orphans()?;
        Ok(engine)
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.inner.root
    }

    /// The workers, default first.
    pub fn workers(&self) -> Vec<WorkerInfo> {
        self.inner.workers.all().iter().map(|w| WorkerInfo { name: w.name.clone(), labels: w.labels.clone() }).collect()
    }

    /// Solves `def`, runs the exporters of `opts`. Dropping the future cancels the solve: running
    /// containers are killed and every snapshot and mount is released.
    pub async fn solve(&self, def: &Definition, opts: SolveOptions) -> Result<SolveResult> {
        crate::options::destinations::check_outside_root(&self.inner.root, &opts.outputs, &opts.cache_exports)?;
        let _gc = self.inner.gc.read().await;
        solver::solve(self.inner.clone(), def, opts).await
    }

    /// Waits until no vertex task is alive: after a cancelled (dropped) solve, its containers are
    /// killed and its mounts and snapshots released when this returns.
    pub async fn wait_idle(&self) {
        self.inner.tasks.wait_idle().await
    }

    /// Cache records and their sizes.
    pub async fn disk_usage(&self) -> Result<Vec<UsageRecord>> {
        let _gc = self.inner.gc.read().await;
        let mut seen = BTreeSet::new();
        let mut out = Vec::new();
        let mut blobs = BlobUsage::of(&self.inner)?;
        for (_, rec) in self.inner.meta.records()? {
            if !seen.insert((rec.worker.clone(), rec.snapshot.clone())) {
                continue;
            }
            let Some(w) = self.inner.workers.get(&rec.worker) else { continue };
            let blobs: u64 = blobs.owned.remove(&rec.snapshot).unwrap_or(0);
            let size = w.snapshotter.usage(&SnapshotId(rec.snapshot.clone())).unwrap_or(0) + blobs;
            out.push(UsageRecord {
                id: rec.snapshot,
                worker: rec.worker,
                description: rec.description,
                size,
                last_used: rec.last_used,
            });
        }
        let unowned = blobs.unowned + blobs.owned.values().sum::<u64>();
        if unowned > 0 {
            out.push(UsageRecord {
                id: "content".into(),
                worker: String::new(),
                description: "layer blobs no cache record uses (freed by prune)".into(),
                size: unowned,
                last_used: 0,
            });
        }
        Ok(out)
    }

    /// Removes cache records, least recently used first, until at most `keep_bytes` remain
    /// (`all` removes everything), then every snapshot no record or child needs.
    pub async fn prune(&self, keep_bytes: u64, all: bool) -> Result<PruneReport> {
        let _gc = self.inner.gc.write().await;
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || prune_blocking(&inner, keep_bytes, all))
            .await
            .map_err(|e| Error::with_source(ErrorKind::Internal, "prune task", e))?
    }

    /// Snapshot ids per worker (for leak checks and `kiln du --verbose`).
    pub fn snapshots(&self) -> Result<BTreeMap<String, Vec<String>>> {
        let mut out = BTreeMap::new();
        for w in self.inner.workers.all() {
            out.insert(w.name.clone(), w.snapshotter.list()?.into_iter().map(|s| s.0).collect());
        }
        Ok(out)
    }

    /// Distinct (worker, snapshot) pairs referenced by cache records.
    pub fn recorded_snapshots(&self) -> Result<BTreeSet<(String, String)>> {
        Ok(self.inner.meta.records()?.into_iter().map(|(_, r)| (r.worker, r.snapshot)).collect())
    }

    /// Cache keys whose dedup lock is in use right now (0 when the engine is idle): the lock
    /// map holds only keys in use. For tests.
    #[doc(hidden)]
    pub fn key_locks_in_use(&self) -> usize {
        self.inner.key_locks.len()
    }

    /// Containers the runtime still knows about (for leak checks).
    pub fn running_containers(&self) -> Result<Vec<String>> {
        match self.inner.workers.all().first() {
            Some(w) => w.executor.list_containers(),
            None => Ok(Vec::new()),
        }
    }

    fn remove_orphans(&self) -> Result<()> {
        let recorded = self.recorded_snapshots()?;
        for w in self.inner.workers.all() {
            remove_unreferenced(w, &recorded)?;
        }
        Ok(())
    }
}

/// The content store's blobs by the snapshot whose layer they are (a snapshot's layers are
/// computed for exports and kept with it), and the bytes of blobs no snapshot owns.
struct BlobUsage {
    owned: HashMap<String, u64>,
    unowned: u64,
}

/// Snapshot id → digests of its layer blobs, from the metadata's layer entries.
fn layer_owners(inner: &EngineInner) -> Result<Vec<(String, String)>> {
    Ok(inner
        .meta
        .layer_entries()?
        .into_iter()
        .filter_map(|(key, v)| {
            let snapshot = key.split('/').next()?.to_owned();
            let digest = v.get("digest")?.as_str()?.to_owned();
            Some((snapshot, digest))
        })
        .collect())
}

impl BlobUsage {
    fn of(inner: &EngineInner) -> Result<BlobUsage> {
        let owner: HashMap<String, String> = layer_owners(inner)?.into_iter().map(|(s, d)| (d, s)).collect();
        let mut usage = BlobUsage { owned: HashMap::new(), unowned: 0 };
        for (d, size) in inner.content.list()? {
            match owner.get(&d.to_string()) {
                Some(s) => *usage.owned.entry(s.clone()).or_default() += size,
                None => usage.unowned += size,
            }
        }
        Ok(usage)
    }
}

/// Forgets the layer entries of snapshots that no longer exist, then deletes every blob of the
/// content store that no remaining entry names (computed layers and fetched blobs are cache:
/// they are made again when needed). Runs under the GC write lock, so no solve is using them.
fn collect_blobs(inner: &EngineInner) -> Result<(usize, u64)> {
    let mut existing = BTreeSet::new();
    for w in inner.workers.all() {
        existing.extend(w.snapshotter.list()?.into_iter().map(|s| s.0));
    }
    let owners = layer_owners(inner)?;
    let stale: Vec<String> = owners.iter().filter(|(s, _)| !existing.contains(s)).map(|(s, _)| s.clone()).collect();
    inner.meta.remove_layers_of(&stale)?;
    let live: BTreeSet<&String> = owners.iter().filter(|(s, _)| existing.contains(s)).map(|(_, d)| d).collect();
    let (mut n, mut freed) = (0, 0);
    for (d, size) in inner.content.list()? {
        if !live.contains(&d.to_string()) {
            inner.content.delete(&d)?;
            n += 1;
            freed += size;
        }
    }
    Ok((n, freed))
}

/// Removes the snapshots of `w` that no record references and that have no children, repeatedly.
fn remove_unreferenced(w: &Worker, recorded: &BTreeSet<(String, String)>) -> Result<(usize, u64)> {
    let mut removed = 0;
    let mut freed = 0;
    loop {
        let all = w.snapshotter.list()?;
        // The common case (nothing unreferenced) needs no parent lookups.
        if all.iter().all(|s| recorded.contains(&(w.name.clone(), s.0.clone()))) {
            return Ok((removed, freed));
        }
        let mut parents = BTreeSet::new();
        for s in &all {
            if let Ok(Some(p)) = w.snapshotter.parent(s) {
                parents.insert(p);
            }
        }
        let victims: Vec<SnapshotId> = all
            .into_iter()
            .filter(|s| !parents.contains(s) && !recorded.contains(&(w.name.clone(), s.0.clone())))
            .collect();
        if victims.is_empty() {
            return Ok((removed, freed));
        }
        let mut progress = false;
        for s in victims {
            let size = w.snapshotter.usage(&s).unwrap_or(0);
            match w.snapshotter.remove(&s) {
                Ok(()) => {
                    removed += 1;
                    freed += size;
                    progress = true;
                }
                Err(e) => tracing::warn!(snapshot = %s, error = %e, "could not remove unreferenced snapshot"),
            }
        }
        if !progress {
            return Ok((removed, freed));
        }
    }
}

fn prune_blocking(inner: &EngineInner, keep_bytes: u64, all: bool) -> Result<PruneReport> {
    let mut records = inner.meta.records()?;
    records.sort_by_key(|(_, r)| r.last_used);
    let mut sizes: HashMap<(String, String), u64> = HashMap::new();
    for (_, r) in &records {
        let size = inner
            .workers
            .get(&r.worker)
            .and_then(|w| w.snapshotter.usage(&SnapshotId(r.snapshot.clone())).ok())
            .unwrap_or(0);
        sizes.insert((r.worker.clone(), r.snapshot.clone()), size);
    }
    let mut total: u64 = sizes.values().sum();
    let mut drop_keys = Vec::new();
    for (k, r) in &records {
        if !all && total <= keep_bytes {
            break;
        }
        drop_keys.push(k.clone());
        // Several records can share a snapshot; its bytes go only when the last one does.
        let still_used = records
            .iter()
            .any(|(k2, r2)| !drop_keys.contains(k2) && r2.worker == r.worker && r2.snapshot == r.snapshot);
        if !still_used {
            total = total.saturating_sub(sizes.get(&(r.worker.clone(), r.snapshot.clone())).copied().unwrap_or(0));
        }
    }
    inner.meta.remove_records(&drop_keys)?;
    let recorded: BTreeSet<(String, String)> =
        inner.meta.records()?.into_iter().map(|(_, r)| (r.worker, r.snapshot)).collect();
    let mut report = PruneReport::default();
    for w in inner.workers.all() {
        let before: BTreeSet<String> = w.snapshotter.list()?.into_iter().map(|s| s.0).collect();
        let (n, freed) = remove_unreferenced(w, &recorded)?;
        report.removed += n;
        report.freed_bytes += freed;
        let after: BTreeSet<String> = w.snapshotter.list()?.into_iter().map(|s| s.0).collect();
        let gone: Vec<String> = before.difference(&after).cloned().collect();
        inner.meta.remove_layers_of(&gone)?;
    }
    let (blobs, blob_bytes) = collect_blobs(inner)?;
    report.freed_bytes += blob_bytes;
    tracing::debug!(removed = report.removed, blobs, freed = report.freed_bytes, at = now_secs(), "prune done");
    Ok(report)
}

#[cfg(test)]
mod key_lock_tests {
    use super::KeyLocks;
    use std::sync::Arc;

    #[test]
    fn entries_live_as_long_as_their_handles() {
        let locks = KeyLocks::default();
        let a = locks.handle("k");
        let b = locks.handle("k");
        assert_eq!(locks.len(), 1);
        drop(a);
        assert_eq!(locks.len(), 1, "b still holds k");
        drop(b);
        assert_eq!(locks.len(), 0);
    }

    #[test]
    fn many_held_keys_stay_linear() {
        // 200,000 keys held at once (a 200,000-op chain): each handle is O(1); the old map rescanned
        // every entry on each call once 4,096 were held.
        let locks = KeyLocks::default();
        let handles: Vec<_> = (0..200_000).map(|i| locks.handle(&format!("w/{i}"))).collect();
        assert_eq!(locks.len(), 200_000);
        drop(handles);
        assert_eq!(locks.len(), 0);
    }

    #[test]
    fn serialises_and_cleans_up_under_concurrency() {
        use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(4).enable_all().build().expect("runtime");
        let locks = Arc::new(KeyLocks::default());
        let inside = Arc::new(AtomicUsize::new(0));
        let busy: Arc<Vec<AtomicBool>> = Arc::new((0..8).map(|_| AtomicBool::new(false)).collect());
        rt.block_on(async {
            let mut tasks = Vec::new();
            for t in 0..64 {
                let (locks, inside, busy) = (locks.clone(), inside.clone(), busy.clone());
                tasks.push(tokio::spawn(async move {
                    for i in 0..200 {
                        let k = (t + i) % 8;
                        let h = locks.handle(&format!("k{k}"));
                        let _g = h.lock().await;
                        assert!(!busy[k].swap(true, Ordering::SeqCst), "two holders of k{k} at once");
                        inside.fetch_add(1, Ordering::SeqCst);
                        tokio::task::yield_now().await;
                        busy[k].store(false, Ordering::SeqCst);
                    }
                }));
            }
            for t in tasks {
                assert!(t.await.is_ok());
            }
        });
        assert_eq!(inside.load(Ordering::SeqCst), 64 * 200);
        assert_eq!(locks.len(), 0, "every entry removed with its last handle");
    }
}
