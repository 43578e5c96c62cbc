//! Result references and the guard that keeps snapshots and records consistent: an `Active`
//! snapshot is removed unless committed (and [`super::CacheManager::commit_and_record`] records every
//! committed output at once, so no snapshot exists without a record: the leak invariant).

use crate::error::Result;
use crate::snapshot::{SnapshotId, Snapshotter};
use crate::worker::pool::Worker;
use std::sync::Arc;

/// A vertex output: a committed snapshot on a worker, with the cache key consumers use.
#[derive(Debug, Clone)]
pub struct ResultRef {
    /// Worker holding the snapshot.
    pub worker: Arc<Worker>,
    /// The committed snapshot.
    pub snapshot: SnapshotId,
}

/// A writable snapshot being built; removed on drop unless committed.
pub struct Active {
    sn: Arc<dyn Snapshotter>,
    /// Its id.
    pub id: SnapshotId,
    done: bool,
}

impl Active {
    /// Prepares a new active snapshot on `parent`.
    pub fn prepare(sn: &Arc<dyn Snapshotter>, parent: Option<&SnapshotId>) -> Result<Active> {
        let id = sn.prepare(parent)?;
        Ok(Active { sn: sn.clone(), id, done: false })
    }

    /// Commits and hands back the id (no longer removed on drop).
    pub fn commit(mut self) -> Result<SnapshotId> {
        self.sn.commit(&self.id)?;
        self.done = true;
        Ok(self.id.clone())
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        if !self.done {
            if let Err(e) = self.sn.remove(&self.id) {
                tracing::warn!(snapshot = %self.id, error = %e, "could not remove abandoned snapshot");
            }
        }
    }
}
