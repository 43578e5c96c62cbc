//! The native snapshotter: every snapshot is a full, real copy of its parent's tree, usable
//! directly as a host path (no mounts, so it works anywhere, also without privileges).
//! Diffs compare the tree with the parent's (see [`super::diff::diff_trees`] for what counts as
//! a change).

use std::path::Path;
use std::sync::Arc;

use super::diff::diff_trees;
use super::fsutil;
use super::store::{PendingChild, Store};
use super::{MountGuard, SnapshotId, Snapshotter};
use crate::error::{Error, ErrorKind, Result};

/// Native snapshotter state.
#[derive(Debug, Clone)]
pub(crate) struct Native {
    store: Arc<Store>,
}

impl Native {
    pub fn open(dir: &Path) -> Result<Native> {
        Ok(Native { store: Arc::new(Store::open(dir)?) })
    }
}

impl Snapshotter for Native {
    fn name(&self) -> &'static str {
        "native"
    }

    fn prepare(&self, parent: Option<&SnapshotId>) -> Result<SnapshotId> {
        let (_pending, _info) = PendingChild::register(&self.store, parent)?;
        let src = parent.map(|p| self.store.fs_dir(p)).transpose()?;
        self.store.create(parent, false, |tmp| match &src {
            Some(src) => fsutil::copy_tree(src, &tmp.join("fs")),
            None => Ok(()),
        })
    }

    /// The snapshot's `fs` directory itself. Committed snapshots are not write-protected:
    /// callers must treat their views as read-only.
    fn mount(&self, id: &SnapshotId) -> Result<MountGuard> {
        let mut uses = self.store.uses();
        let info = self.store.info(id)?;
        let u = uses.entry(id.clone()).or_default();
        let committed = info.committed;
        if committed {
            u.ro += 1;
        } else {
            u.rw += 1;
        }
        let store = self.store.clone();
        let id = id.clone();
        Ok(MountGuard::new(self.store.fs_dir(&id)?, move || {
            if let Some(u) = store.uses().get_mut(&id) {
                if committed {
                    u.ro = u.ro.saturating_sub(1);
                } else {
                    u.rw = u.rw.saturating_sub(1);
                }
            }
        }))
    }

    /// The `fs` dir of an active snapshot that started empty (its view is that dir).
    fn direct_dir(&self, id: &SnapshotId) -> Option<std::path::PathBuf> {
        let info = self.store.info(id).ok()?;
        (!info.committed && info.parent.is_none()).then(|| self.store.fs_dir(id).ok()).flatten()
    }

    fn commit(&self, id: &SnapshotId) -> Result<()> {
        let uses = self.store.uses();
        let info = self.store.info(id)?;
        if info.committed {
            return Err(Error::new(ErrorKind::Snapshot, format!("snapshot {id} is already committed")));
        }
        if uses.get(id).is_some_and(|u| u.rw > 0) {
            return Err(Error::new(
                ErrorKind::Snapshot,
                format!("cannot commit snapshot {id}: it is still mounted writable; drop its mounts first"),
            ));
        }
        self.store.set_committed(id)
    }

    fn remove(&self, id: &SnapshotId) -> Result<()> {
        let mut uses = self.store.uses();
        self.store.remove(&mut uses, id)
    }

    fn is_committed(&self, id: &SnapshotId) -> bool {
        self.store.is_committed(id)
    }

    fn parent(&self, id: &SnapshotId) -> Result<Option<SnapshotId>> {
        Ok(self.store.info(id)?.parent)
    }

    fn list(&self) -> Result<Vec<SnapshotId>> {
        self.store.list()
    }

    fn usage(&self, id: &SnapshotId) -> Result<u64> {
        self.store.info(id)?;
        fsutil::disk_usage(&self.store.fs_dir(id)?)
    }

    fn diff(&self, id: &SnapshotId, out: &mut dyn std::io::Write) -> Result<()> {
        let info = self.store.info(id)?;
        let parent = info.parent.as_ref().map(|p| self.store.fs_dir(p)).transpose()?;
        diff_trees(parent.as_deref(), &self.store.fs_dir(id)?, info.recent_secs(), out)
    }
}
