//! The cache manager: opens the root (lock, metadata db, content store, workers) and puts the
//! metadata db, content store and workers' snapshots behind a small API — look records up, commit and record results, the layer blobs remembered for a snapshot,
//! disk usage and prune. The solver uses this instead of reaching into the stores.

use super::metadata::{now_secs, record_key};
use super::mounts::{CacheMounts, MountUsage};
use super::refs::{Active, ResultRef};
use super::{CacheRecord, MetadataStore, RootLock};
use crate::content::ContentStore;
use crate::digest::Digest;
use crate::error::{Error, ErrorKind, IoContext, Result};
use crate::snapshot::{SnapshotId, Snapshotter, SnapshotterKind};
use crate::worker::pool::{Worker, WorkerPool};
use crate::worker::RuncExecutor;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// One cache record in disk usage.
#[derive(Debug, Clone)]
pub struct UsageRecord {
    /// Snapshot id (for a cache mount, its directory's name).
    pub id: String,
    /// BuildKit's record type: [`UsageRecord::REGULAR`] for results (and the content store's
    /// unowned blobs), [`UsageRecord::CACHE_MOUNT`] for the directory of a `type=cache` mount.
    pub record_type: String,
    /// Worker holding it (empty for cache mounts, which every worker shares).
    pub worker: String,
    /// Vertex that made it (for a cache mount: `cached mount DEST from exec ARGS`, the mount
    /// that created it, as BuildKit describes it).
    pub description: String,
    /// Bytes of its own data, including its layer blobs in the content store.
    pub size: u64,
    /// Unix seconds of last use.
    pub last_used: u64,
}

impl UsageRecord {
    /// Record type of a result (BuildKit's `regular`).
    pub const REGULAR: &'static str = "regular";
    /// Record type of a cache mount's directory (BuildKit's `exec.cachemount`).
    pub const CACHE_MOUNT: &'static str = "exec.cachemount";
}

/// What a prune removed.
#[derive(Debug, Clone, Default)]
pub struct PruneReport {
    /// Records removed: snapshots and cache mounts.
    pub removed: usize,
    /// Bytes freed (snapshots, cache mounts and the content store's layer blobs).
    pub freed_bytes: u64,
}

/// The local build cache of one root (owns the root lock: whoever holds the manager holds the root).
#[derive(Debug)]
pub(crate) struct CacheManager {
    root: PathBuf,
    meta: MetadataStore,
    content: ContentStore,
    workers: WorkerPool,
    mounts: CacheMounts,
    tmp: PathBuf,
    _lock: RootLock,
}

impl CacheManager {
    /// Opens (creating if needed) the root: takes its exclusive lock (fails with `RootInUse` if
    /// another engine holds it), keeps it private (0700), opens the metadata db and the content
    /// store, empties `tmp`, builds one worker per snapshotter that opens here (runtime
    /// `runtime`), and removes whatever a crash left unreferenced.
    pub fn open(root: &Path, runtime: &str, snapshotters: &[SnapshotterKind]) -> Result<CacheManager> {
        let existed = root.exists();
        {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(root)
                .with_path("create engine root", root)?;
        }
        let root = root.canonicalize().with_path("resolve engine root", root)?;
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
        let workers = open_workers(&root, runtime, snapshotters)?;
        let mounts = CacheMounts::new(root.join("cache-mounts"))?;
        let cache = CacheManager { root, meta, content, workers, mounts, tmp, _lock: lock };
        cache.remove_orphans()?;
        Ok(cache)
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The root's scratch directory (emptied on open).
    pub fn tmp(&self) -> &Path {
        &self.tmp
    }

    /// The content store (layer blobs).
    pub fn content(&self) -> &ContentStore {
        &self.content
    }

    /// The workers, default first.
    pub fn workers(&self) -> &WorkerPool {
        &self.workers
    }

    /// The directories of `type=cache` mounts.
    pub fn mounts(&self) -> &CacheMounts {
        &self.mounts
    }

    /// The local records of every output `indexes` of cache `key` on `worker`, if all exist and
    /// their snapshots are intact.
    pub fn lookup(
        &self,
        worker: &Arc<Worker>,
        key: &Digest,
        indexes: &[i64],
    ) -> Result<Option<BTreeMap<i64, Option<ResultRef>>>> {
        let mut outputs = BTreeMap::new();
        for &i in indexes {
            let Some(rec) = self.meta.record(&record_key(&worker.name, key, i))? else { return Ok(None) };
            if rec.snapshot_is_empty() {
                outputs.insert(i, None);
                continue;
            }
            let id = SnapshotId(rec.snapshot);
            if !worker.snapshotter.is_committed(&id) {
                tracing::warn!(snapshot = %id, "cache record points at a missing snapshot; rebuilding");
                return Ok(None);
            }
            outputs.insert(i, Some(ResultRef { worker: worker.clone(), snapshot: id }));
        }
        Ok(Some(outputs))
    }

    /// The committed snapshot recorded as output `index` of `key` on `worker`, if it is intact.
    pub fn recorded(&self, worker: &Arc<Worker>, key: &Digest, index: i64) -> Result<Option<SnapshotId>> {
        if let Some(rec) = self.meta.record(&record_key(&worker.name, key, index))? {
            let id = SnapshotId(rec.snapshot);
            if worker.snapshotter.is_committed(&id) {
                return Ok(Some(id));
            }
        }
        Ok(None)
    }

    /// Commits `active` and records it as output `index` of the vertex with cache `key`.
    pub fn commit_and_record(
        &self,
        worker: &Arc<Worker>,
        key: &Digest,
        index: i64,
        active: Active,
        description: &str,
    ) -> Result<ResultRef> {
        let id = active.commit()?;
        self.record(worker, key, index, &id, description)?;
        Ok(ResultRef { worker: worker.clone(), snapshot: id })
    }

    /// Records an existing committed snapshot under (`key`, `index`).
    pub fn record(
        &self,
        worker: &Arc<Worker>,
        key: &Digest,
        index: i64,
        id: &SnapshotId,
        description: &str,
    ) -> Result<()> {
        let now = now_secs();
        self.meta.put_record(
            &record_key(&worker.name, key, index),
            &CacheRecord {
                worker: worker.name.clone(),
                snapshot: id.0.clone(),
                created_at: now,
                last_used: now,
                description: description.to_owned(),
            },
        )
    }

    /// The layer blob remembered for `snapshot` in `format` (`gzip`, `uncompressed`, `diff`, ...).
    pub fn layer<T: DeserializeOwned>(&self, snapshot: &SnapshotId, format: &str) -> Result<Option<T>> {
        self.meta.layer(&snapshot.0, format)
    }

    /// Remembers `layer` as `snapshot`'s layer blob in `format`.
    pub fn put_layer<T: Serialize>(&self, snapshot: &SnapshotId, format: &str, layer: &T) -> Result<()> {
        self.meta.put_layer(&snapshot.0, format, layer)
    }

    /// Cache records and their sizes.
    pub fn disk_usage(&self) -> Result<Vec<UsageRecord>> {
        let mut seen = BTreeSet::new();
        let mut out = Vec::new();
        let mut blobs = BlobUsage::of(self)?;
        for (_, rec) in self.meta.records()? {
            if !seen.insert((rec.worker.clone(), rec.snapshot.clone())) {
                continue;
            }
            let Some(w) = self.workers.get(&rec.worker) else { continue };
            let blobs: u64 = blobs.owned.remove(&rec.snapshot).unwrap_or(0);
            let size = w.snapshotter.usage(&SnapshotId(rec.snapshot.clone())).unwrap_or(0) + blobs;
            out.push(UsageRecord {
                id: rec.snapshot,
                record_type: UsageRecord::REGULAR.into(),
                worker: rec.worker,
                description: rec.description,
                size,
                last_used: rec.last_used,
            });
        }
        for m in self.mounts.usage()? {
            out.push(UsageRecord {
                id: m.name,
                record_type: UsageRecord::CACHE_MOUNT.into(),
                worker: String::new(),
                description: m.description,
                size: m.size,
                last_used: m.last_used,
            });
        }
        let unowned = blobs.unowned + blobs.owned.values().sum::<u64>();
        if unowned > 0 {
            out.push(UsageRecord {
                id: "content".into(),
                record_type: UsageRecord::REGULAR.into(),
                worker: String::new(),
                description: "layer blobs no cache record uses (freed by prune)".into(),
                size: unowned,
                last_used: 0,
            });
        }
        Ok(out)
    }

    /// Removes cache records — results and cache mounts not in use — least recently used first,
    /// until at most `keep_bytes` remain (`all` removes everything), then every snapshot no
    /// record or child needs (blocking; the caller makes sure no solve is running).
    pub fn prune(&self, keep_bytes: u64, all: bool) -> Result<PruneReport> {
        prune_blocking(self, keep_bytes, all)
    }

    /// Snapshot ids per worker (leak checks).
    #[cfg(feature = "test-support")]
    pub fn snapshots(&self) -> Result<BTreeMap<String, Vec<String>>> {
        let mut out = BTreeMap::new();
        for w in self.workers.all() {
            out.insert(w.name.clone(), w.snapshotter.list()?.into_iter().map(|s| s.0).collect());
        }
        Ok(out)
    }

    /// Distinct (worker, snapshot) pairs referenced by cache records.
    pub fn recorded_snapshots(&self) -> Result<BTreeSet<(String, String)>> {
        Ok(self.meta.records()?.into_iter().map(|(_, r)| (r.worker, r.snapshot)).collect())
    }

    /// Removes every snapshot that no record references (left by a crash).
    pub fn remove_orphans(&self) -> Result<()> {
        let recorded = self.recorded_snapshots()?;
        for w in self.workers.all() {
            remove_unreferenced(w, &recorded)?;
        }
        Ok(())
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

/// One worker per snapshotter kind that opens here (the others are skipped with a warning), all
/// sharing one runc executor (stale containers and bundles of a crashed process are cleaned up).
fn open_workers(root: &Path, runtime: &str, snapshotters: &[SnapshotterKind]) -> Result<WorkerPool> {
    let executor = Arc::new(RuncExecutor::new(runtime, root.join("runtime").join(runtime), root.join("bundles"))?);
    executor.cleanup_stale()?;
    let hostname =
        std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_owned()).unwrap_or_default();
    let mut workers = Vec::new();
    for kind in snapshotters {
        let sn: Arc<dyn Snapshotter> = match kind.open(&root.join("snapshots").join(kind.as_str())) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(snapshotter = kind.as_str(), error = %e, "snapshotter unavailable; worker not registered");
                continue;
            }
        };
        let name = format!("{runtime}-{}", kind.as_str());
        let mut labels = BTreeMap::new();
        labels.insert("executor".to_owned(), runtime.to_owned());
        labels.insert("snapshotter".to_owned(), kind.as_str().to_owned());
        labels.insert("hostname".to_owned(), hostname.clone());
        labels.insert("name".to_owned(), name.clone());
        workers.push(Arc::new(Worker { name, labels, executor: executor.clone(), snapshotter: sn }));
    }
    if workers.is_empty() {
        return Err(Error::new(ErrorKind::Worker, "no snapshotter could be opened; see the warnings above"));
    }
    Ok(WorkerPool::new(workers))
}

/// The content store's blobs by the snapshot whose layer they are (a snapshot's layers are
/// computed for exports and kept with it), and the bytes of blobs no snapshot owns.
struct BlobUsage {
    owned: HashMap<String, u64>,
    unowned: u64,
}

/// Snapshot id → digests of its layer blobs, from the metadata's layer entries.
fn layer_owners(inner: &CacheManager) -> Result<Vec<(String, String)>> {
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
    fn of(inner: &CacheManager) -> Result<BlobUsage> {
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
fn collect_blobs(inner: &CacheManager) -> Result<(usize, u64)> {
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

/// A prune candidate: a result record (by metadata key) or a cache mount (by directory name).
enum Candidate<'a> {
    Record(&'a String, &'a CacheRecord),
    Mount(&'a MountUsage),
}

fn prune_blocking(inner: &CacheManager, keep_bytes: u64, all: bool) -> Result<PruneReport> {
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
    // Cache mounts are records too (BuildKit's `exec.cachemount`): prunable unless in use.
    let mounts: Vec<MountUsage> = inner.mounts.usage()?.into_iter().filter(|m| !m.in_use).collect();
    let mut total: u64 = sizes.values().sum::<u64>() + mounts.iter().map(|m| m.size).sum::<u64>();
    let mut candidates: Vec<(u64, Candidate)> =
        records.iter().map(|(k, r)| (r.last_used, Candidate::Record(k, r))).collect();
    candidates.extend(mounts.iter().map(|m| (m.last_used, Candidate::Mount(m))));
    // Stable: records keep their order among themselves.
    candidates.sort_by_key(|(t, _)| *t);
    let mut drop_keys = Vec::new();
    let mut drop_mounts = Vec::new();
    for (_, c) in &candidates {
        if !all && total <= keep_bytes {
            break;
        }
        let (k, r) = match c {
            Candidate::Record(k, r) => (*k, *r),
            Candidate::Mount(m) => {
                drop_mounts.push(*m);
                total = total.saturating_sub(m.size);
                continue;
            }
        };
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
    for m in drop_mounts {
        if inner.mounts.remove(&m.name)? {
            report.removed += 1;
            report.freed_bytes += m.size;
        }
    }
    let (blobs, blob_bytes) = collect_blobs(inner)?;
    report.freed_bytes += blob_bytes;
    tracing::debug!(removed = report.removed, blobs, freed = report.freed_bytes, at = now_secs(), "prune done");
    Ok(report)
}
