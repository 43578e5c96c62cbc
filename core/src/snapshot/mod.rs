//! Snapshotters (overlayfs, native copy) and layer diff/apply as tar with OCI whiteouts.
//!
//! A snapshot is a filesystem tree that starts as a copy of its parent's. It is *active*
//! (writable) until [`Snapshotter::commit`] freezes it; only committed snapshots can be parents.
//! All calls are synchronous (the solver runs them on blocking threads); every snapshotter is
//! safe to share between threads.
//!
//! On-disk layout under the snapshotter's directory (crash safe: a snapshot appears in `list()`
//! only once fully created, by renaming `.tmp-<id>` to `<id>`; metadata files are written
//! atomically):
//!
//! ```text
//! <id>/fs         the snapshot's own data (overlay: upper dir; native: the full tree)
//! <id>/work       overlay work dir
//! <id>/merged     overlay mount point of the active (writable) view
//! <id>/parent     parent id (absent without parent)
//! <id>/base       overlay only: `fs` is a flattened full tree; the lower chain stops here
//! <id>/created    unix seconds when creation started (tree diffs use it)
//! <id>/committed  present once committed
//! .mnt/<n>        mount points of read-only views
//! ```

mod apply;
mod changes;
mod diff;
mod fsutil;
mod native;
mod overlay;
mod store;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::Result;

pub use apply::{apply_layer, apply_layer_counting};
pub use changes::ChangeSet;
// The session's file transfer reads and writes xattrs as the snapshotters do.
pub(crate) use fsutil::{copy_tree, list_xattrs, set_xattr};

/// Identifier of a snapshot (opaque short string, safe as a directory name).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct SnapshotId(pub String);

impl std::fmt::Display for SnapshotId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Storage of snapshot trees: create, mount, freeze, diff and delete snapshots.
pub trait Snapshotter: Send + Sync + std::fmt::Debug {
    /// The snapshotter's name: `"overlayfs"` or `"native"`.
    fn name(&self) -> &'static str;
    /// A new writable (active) snapshot whose content starts as `parent`'s (None = empty dir).
    /// The parent must be committed.
    fn prepare(&self, parent: Option<&SnapshotId>) -> Result<SnapshotId>;
    /// Makes the snapshot's full filesystem visible at a host path until the guard drops.
    /// Active snapshots: writable view (concurrent mounts share it). Committed: a read-only view
    /// (many concurrent mounts ok, each at its own path).
    fn mount(&self, id: &SnapshotId) -> Result<MountGuard>;
    /// The host directory that holds an active snapshot's files when it has no parent content
    /// (what its writable view shows, as a plain directory): files may be written there without
    /// mounting, in particular hard-linked in, which link(2) refuses through a mount. `None` for
    /// any other snapshot.
    fn direct_dir(&self, _id: &SnapshotId) -> Option<std::path::PathBuf> {
        None
    }
    /// Freezes an active snapshot (must not be mounted writable any more).
    fn commit(&self, id: &SnapshotId) -> Result<()>;
    /// Deletes a snapshot; error if another snapshot has it as parent or it is mounted.
    fn remove(&self, id: &SnapshotId) -> Result<()>;
    /// The snapshot's parent, if any.
    fn parent(&self, id: &SnapshotId) -> Result<Option<SnapshotId>>;
    /// True when the snapshot exists and is committed. Cheap (one `stat`): the solver asks this
    /// for every cache hit.
    fn is_committed(&self, id: &SnapshotId) -> bool;
    /// Every fully created snapshot, sorted.
    fn list(&self) -> Result<Vec<SnapshotId>>;
    /// Bytes used by this snapshot's own data (not its parents').
    fn usage(&self, id: &SnapshotId) -> Result<u64>;
    /// Writes an uncompressed OCI layer tar of `id`'s changes relative to its parent (OCI whiteouts:
    /// `.wh.NAME` for deletions, `.wh..wh..opq` for opaque dirs), deterministic order, to `out`.
    fn diff(&self, id: &SnapshotId, out: &mut dyn std::io::Write) -> Result<()>;
}

/// A snapshot's filesystem made visible at [`MountGuard::path`]; unmounted (or released) on drop.
pub struct MountGuard {
    path: PathBuf,
    release: Option<Box<dyn FnOnce() + Send + Sync>>,
}

impl MountGuard {
    /// Where the snapshot's tree is visible while the guard lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn new(path: PathBuf, release: impl FnOnce() + Send + Sync + 'static) -> Self {
        MountGuard { path, release: Some(Box::new(release)) }
    }
}

impl Drop for MountGuard {
    fn drop(&mut self) {
        // The release closure logs its own failures: drop cannot report them.
        if let Some(release) = self.release.take() {
            release();
        }
    }
}

impl std::fmt::Debug for MountGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MountGuard").field("path", &self.path).finish()
    }
}

/// Which snapshotter a worker uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapshotterKind {
    /// overlayfs (default; needs root and overlay support).
    Overlayfs,
    /// Full copies; works everywhere.
    Native,
}

impl std::str::FromStr for SnapshotterKind {
    type Err = crate::error::Error;
    /// `overlayfs` or `native`; anything else is an option error naming the accepted values.
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "overlayfs" => Ok(SnapshotterKind::Overlayfs),
            "native" => Ok(SnapshotterKind::Native),
            other => Err(crate::error::Error::option("snapshotters", other, "expected overlayfs or native")),
        }
    }
}

impl SnapshotterKind {
    /// `overlayfs` or `native`.
    pub fn as_str(self) -> &'static str {
        match self {
            SnapshotterKind::Overlayfs => "overlayfs",
            SnapshotterKind::Native => "native",
        }
    }

    /// Opens (creating if needed) a snapshotter of this kind storing its state in `dir`.
    pub fn open(self, dir: &Path) -> Result<Arc<dyn Snapshotter>> {
        match self {
            SnapshotterKind::Overlayfs => open_overlay(dir),
            SnapshotterKind::Native => open_native(dir),
        }
    }
}

/// Opens (creating if needed) an overlayfs snapshotter storing its state in `dir`. Verifies that
/// overlayfs works there with a probe mount, else fails with [`crate::ErrorKind::Snapshot`]
/// and the reason. Stale mounts and half-created snapshots of a crashed process are cleaned up.
pub fn open_overlay(dir: &Path) -> Result<Arc<dyn Snapshotter>> {
    Ok(Arc::new(overlay::Overlay::open(dir)?))
}

/// Opens (creating if needed) a native snapshotter (full copies, no mounts) storing its state in
/// `dir`. Works on any filesystem and without privileges (ownership is then not preserved).
pub fn open_native(dir: &Path) -> Result<Arc<dyn Snapshotter>> {
    Ok(Arc::new(native::Native::open(dir)?))
}
