//! On-disk snapshot metadata shared by both snapshotters (ids, parent/committed/base files,
//! crash-safe creation and removal) and the in-memory record of live mounts.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use sha2::{Digest as _, Sha256};

use super::fsutil::{self, write_atomic};
use super::SnapshotId;
use crate::error::{Error, ErrorKind, IoContext, Result};

/// Length of generated ids (hex digits): short keeps overlay mount options compact.
const ID_LEN: usize = 16;
const TMP_PREFIX: &str = ".tmp-";
const RM_PREFIX: &str = ".rm-";
/// Directory of read-only mount points.
const MNT_DIR: &str = ".mnt";

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// What the metadata files say about one snapshot.
#[derive(Debug, Clone)]
pub(crate) struct Info {
    pub parent: Option<SnapshotId>,
    pub committed: bool,
    pub base: bool,
    /// Unix seconds when creation (the copy of the parent, if any) started.
    pub created_secs: Option<i64>,
}

impl Info {
    /// Files with mtimes at or after this may have been rewritten within one clock tick of the
    /// copy that created the snapshot: tree diffs compare their contents.
    pub fn recent_secs(&self) -> i64 {
        self.created_secs.map_or(i64::MIN, |s| s - 2)
    }
}

/// Live use of one snapshot, tracked in memory (mounts do not survive the process).
#[derive(Debug, Default)]
pub(crate) struct Use {
    /// Holders of the writable view.
    pub rw: usize,
    /// Live read-only views.
    pub ro: usize,
    /// `prepare` calls in flight that use this snapshot as parent.
    pub pending_children: usize,
}

/// The metadata store of one snapshotter directory.
#[derive(Debug)]
pub(crate) struct Store {
    dir: PathBuf,
    uses: Mutex<HashMap<SnapshotId, Use>>,
}

impl Store {
    /// Opens `dir`, creating it, unmounting stale mounts and deleting half-created or
    /// half-removed snapshots left by a crash.
    pub fn open(dir: &Path) -> Result<Store> {
        fs::create_dir_all(dir).with_path("creating snapshot directory", dir)?;
        let dir = fs::canonicalize(dir).with_path("resolving snapshot directory", dir)?;
        for m in fsutil::mounts_under(&dir)? {
            tracing::warn!(path = %m.display(), "unmounting stale snapshot mount");
            fsutil::unmount(&m);
        }
        for name in fsutil::sorted_names(&dir)? {
            let s = name.to_string_lossy();
            if s.starts_with(TMP_PREFIX) || s.starts_with(RM_PREFIX) || s == MNT_DIR {
                let p = dir.join(&name);
                fs::remove_dir_all(&p).with_path("removing stale snapshot state", &p)?;
            }
        }
        let mnt = dir.join(MNT_DIR);
        fs::create_dir_all(&mnt).with_path("creating mount directory", &mnt)?;
        Ok(Store { dir, uses: Mutex::new(HashMap::new()) })
    }

    /// The (canonical) snapshotter directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Locks the live-use table. Poisoning only means another thread panicked mid-update of
    /// counters; the table stays usable.
    pub fn uses(&self) -> MutexGuard<'_, HashMap<SnapshotId, Use>> {
        self.uses.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `dir/<id>`; validates the id so a crafted one cannot name another path.
    pub fn snap_dir(&self, id: &SnapshotId) -> Result<PathBuf> {
        if !is_id(&id.0) {
            return Err(Error::new(
                ErrorKind::Snapshot,
                format!("invalid snapshot id {:?}: expected {ID_LEN} lowercase hex digits", id.0),
            ));
        }
        Ok(self.dir.join(&id.0))
    }

    /// The snapshot's own data directory.
    pub fn fs_dir(&self, id: &SnapshotId) -> Result<PathBuf> {
        Ok(self.snap_dir(id)?.join("fs"))
    }

    /// A fresh, empty mount point for a read-only view.
    pub fn new_mountpoint(&self) -> Result<PathBuf> {
        let p = self.dir.join(MNT_DIR).join(new_id());
        fs::create_dir(&p).with_path("creating mount point", &p)?;
        Ok(p)
    }

    /// True when the snapshot exists and is committed (a single `stat`).
    pub fn is_committed(&self, id: &SnapshotId) -> bool {
        self.snap_dir(id).map(|d| d.join("committed").exists()).unwrap_or(false)
    }

    /// Reads a snapshot's metadata; error if it does not exist.
    pub fn info(&self, id: &SnapshotId) -> Result<Info> {
        let d = self.snap_dir(id)?;
        if !d.is_dir() {
            return Err(Error::new(ErrorKind::Snapshot, format!("snapshot {id} does not exist")));
        }
        let parent = match fs::read_to_string(d.join("parent")) {
            Ok(s) => Some(SnapshotId(s.trim().to_owned())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(Error::io("reading parent of snapshot", d, e)),
        };
        let created_secs = fs::read_to_string(d.join("created")).ok().and_then(|s| s.trim().parse().ok());
        Ok(Info { parent, committed: d.join("committed").exists(), base: d.join("base").exists(), created_secs })
    }

    /// Creates a snapshot: `fill` populates a temporary directory that already holds an empty
    /// `fs`; the result becomes visible atomically. Removed again if `fill` fails.
    pub fn create(
        &self,
        parent: Option<&SnapshotId>,
        base: bool,
        fill: impl FnOnce(&Path) -> Result<()>,
    ) -> Result<SnapshotId> {
        let id = SnapshotId(new_id());
        let tmp = self.dir.join(format!("{TMP_PREFIX}{id}"));
        fs::create_dir(&tmp).with_path("creating snapshot", &tmp)?;
        let res = (|| {
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_secs();
            write_atomic(&tmp.join("created"), now.to_string().as_bytes())?;
            let fs_dir = tmp.join("fs");
            fs::create_dir(&fs_dir).with_path("creating snapshot data directory", &fs_dir)?;
            fsutil::set_mode(&fs_dir, 0o755)?;
            fill(&tmp)?;
            if let Some(p) = parent {
                write_atomic(&tmp.join("parent"), p.0.as_bytes())?;
            }
            if base {
                write_atomic(&tmp.join("base"), b"true")?;
            }
            let dst = self.snap_dir(&id)?;
            fs::rename(&tmp, &dst).with_path("publishing snapshot", &dst)?;
            fsutil::sync_dir(&self.dir)
        })();
        if let Err(e) = res {
            if let Err(e2) = fs::remove_dir_all(&tmp) {
                tracing::warn!(path = %tmp.display(), error = %e2, "could not clean up failed snapshot");
            }
            return Err(e);
        }
        Ok(id)
    }

    /// Marks a snapshot committed (durably).
    pub fn set_committed(&self, id: &SnapshotId) -> Result<()> {
        write_atomic(&self.snap_dir(id)?.join("committed"), b"true")
    }

    /// All fully created snapshots, sorted.
    pub fn list(&self) -> Result<Vec<SnapshotId>> {
        let mut out = Vec::new();
        for name in fsutil::sorted_names(&self.dir)? {
            if let Some(s) = name.to_str().filter(|s| is_id(s)) {
                out.push(SnapshotId(s.to_owned()));
            }
        }
        Ok(out)
    }

    /// Snapshots whose parent is `id`.
    pub fn children(&self, id: &SnapshotId) -> Result<Vec<SnapshotId>> {
        let mut out = Vec::new();
        for c in self.list()? {
            match self.info(&c) {
                Ok(i) if i.parent.as_ref() == Some(id) => out.push(c),
                Ok(_) => {}
                // Removed concurrently: not a child any more.
                Err(e) if e.kind() == ErrorKind::Snapshot => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// Checks the remove preconditions (caller holds the use table lock) and deletes the
    /// snapshot: first renamed out of `list()`, then deleted.
    pub fn remove(&self, uses: &mut HashMap<SnapshotId, Use>, id: &SnapshotId) -> Result<()> {
        let d = self.snap_dir(id)?;
        self.info(id)?;
        if let Some(u) = uses.get(id) {
            if u.rw > 0 || u.ro > 0 {
                return Err(Error::new(
                    ErrorKind::Snapshot,
                    format!("cannot remove snapshot {id}: it is mounted ({} writable, {} read-only)", u.rw, u.ro),
                ));
            }
            if u.pending_children > 0 {
                return Err(Error::new(
                    ErrorKind::Snapshot,
                    format!("cannot remove snapshot {id}: a child snapshot is being prepared from it"),
                ));
            }
        }
        let children = self.children(id)?;
        if !children.is_empty() {
            let names: Vec<_> = children.iter().map(|c| c.0.as_str()).collect();
            return Err(Error::new(
                ErrorKind::Snapshot,
                format!(
                    "cannot remove snapshot {id}: snapshots {} have it as parent; remove them first",
                    names.join(", ")
                ),
            ));
        }
        let trash = self.dir.join(format!("{RM_PREFIX}{id}"));
        fs::rename(&d, &trash).with_path("removing snapshot", &d)?;
        uses.remove(id);
        fs::remove_dir_all(&trash).with_path("deleting snapshot data", &trash)
    }
}

fn is_id(s: &str) -> bool {
    s.len() == ID_LEN && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// A unique id: hash of a process-wide counter, the time and the pid.
fn new_id() -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
    let h = Sha256::digest(format!("{n}:{t}:{}", std::process::id()).as_bytes());
    hex::encode(&h[..ID_LEN / 2])
}

/// Keeps a parent's `pending_children` count raised while a child is being prepared.
pub(crate) struct PendingChild<'a> {
    store: &'a Store,
    parent: Option<SnapshotId>,
}

impl<'a> PendingChild<'a> {
    /// Checks `parent` exists and is committed and registers the pending child, atomically
    /// with respect to `remove`.
    pub fn register(store: &'a Store, parent: Option<&SnapshotId>) -> Result<(Self, Option<Info>)> {
        let Some(p) = parent else {
            return Ok((PendingChild { store, parent: None }, None));
        };
        let mut uses = store.uses();
        let info = store.info(p)?;
        if !info.committed {
            return Err(Error::new(
                ErrorKind::Snapshot,
                format!("cannot prepare a child of snapshot {p}: it is still active; commit it first"),
            ));
        }
        uses.entry(p.clone()).or_default().pending_children += 1;
        Ok((PendingChild { store, parent: Some(p.clone()) }, Some(info)))
    }
}

impl Drop for PendingChild<'_> {
    fn drop(&mut self) {
        if let Some(p) = &self.parent {
            if let Some(u) = self.store.uses().get_mut(p) {
                u.pending_children = u.pending_children.saturating_sub(1);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_and_valid() {
        let a = new_id();
        let b = new_id();
        assert_ne!(a, b);
        assert!(is_id(&a) && is_id(&b));
        assert!(!is_id("../../etc/passw"));
    }

    #[test]
    fn half_created_entries_are_ignored_and_cleaned() {
        let t = tempfile::tempdir().unwrap();
        fs::create_dir_all(t.path().join(".tmp-0123456789abcdef/fs")).unwrap();
        let s = Store::open(t.path()).unwrap();
        assert!(s.list().unwrap().is_empty());
        assert!(!t.path().join(".tmp-0123456789abcdef").exists());
        let id = s.create(None, false, |_| Ok(())).unwrap();
        assert_eq!(s.list().unwrap(), vec![id.clone()]);
        let failed = s.create(None, false, |_| Err(Error::new(ErrorKind::Snapshot, "boom")));
        assert!(failed.is_err());
        assert_eq!(s.list().unwrap(), vec![id]);
        assert!(s.snap_dir(&SnapshotId("../x".into())).is_err());
    }
}
