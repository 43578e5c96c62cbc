//! Result references and the guards that keep snapshots and records consistent: an `Active`
//! snapshot is removed unless committed, and every committed output is recorded at once so that
//! no snapshot exists without a record (the leak invariant).

use crate::cache::metadata::{now_secs, record_key};
use crate::cache::CacheRecord;
use crate::digest::Digest;
use crate::engine::EngineInner;
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

/// Commits `active` and records it as output `index` of the vertex with cache `key`.
pub fn commit_and_record(
    engine: &EngineInner,
    worker: &Arc<Worker>,
    key: &Digest,
    index: i64,
    active: Active,
    description: &str,
) -> Result<ResultRef> {
    let id = active.commit()?;
    record(engine, worker, key, index, &id, description)?;
    Ok(ResultRef { worker: worker.clone(), snapshot: id })
}

/// Records an existing committed snapshot under (`key`, `index`).
pub fn record(
    engine: &EngineInner,
    worker: &Arc<Worker>,
    key: &Digest,
    index: i64,
    id: &SnapshotId,
    description: &str,
) -> Result<()> {
    let now = now_secs();
    engine.meta.put_record(
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

/// The snapshots from the base of `r`'s chain up to `r` itself.
pub fn chain(r: &ResultRef) -> Result<Vec<SnapshotId>> {
    let mut out = vec![r.snapshot.clone()];
    let mut cur = r.snapshot.clone();
    while let Some(p) = r.worker.snapshotter.parent(&cur)? {
        out.push(p.clone());
        cur = p;
    }
    out.reverse();
    Ok(out)
}
