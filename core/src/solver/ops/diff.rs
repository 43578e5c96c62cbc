//! Diff ops: the changes that turn `lower` into `upper`, as BuildKit's `llb.Diff`.
//!
//! Representation: a diff result is one parentless snapshot holding the diff applied to scratch
//! (what exporters, exec mounts, copies and further diffs see: added and changed entries with
//! their parent directories, deletions invisible), plus its *authoritative layer*: an OCI layer
//! blob with the whiteouts, recorded for the snapshot under the layer-format key [`DIFF_LAYER`].
//! Everything that needs a snapshot's layer (merges, image and cache exports, diffs of diffs)
//! reads that blob instead of asking the snapshotter, so deletions survive into a later merge, a
//! cache export and its import (an imported base layer carrying whiteouts is recorded as
//! authoritative too). When `lower` is an ancestor of `upper` the diff is the layers between
//! them, flattened (BuildKit merges those layers); otherwise both trees are compared.

use super::{OpSolver, Outputs};
use crate::cache::CacheManager;
use crate::content::layer::{layer_reader, write_layer, Compression, LayerBlob};
use crate::digest::Digest;
use crate::error::{Error, ErrorKind, IoContext, Result};
use crate::graph::op::DiffOp;
use crate::graph::Vertex;
use crate::snapshot::{apply_layer, ChangeSet, MountGuard, SnapshotId};
use crate::solver::refs::{chain, Active, ResultRef};
use crate::solver::Solve;
use crate::worker::pool::Worker;
use futures::future::BoxFuture;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::Path;
use std::sync::Arc;

/// Layer-format key of a snapshot's authoritative layer (the one with its whiteouts).
pub const DIFF_LAYER: &str = "diff";

impl OpSolver for DiffOp {
    fn execute<'a>(
        &'a self,
        solve: &'a Arc<Solve>,
        v: &'a Vertex,
        worker: &'a Arc<Worker>,
        key: &'a Digest,
        inputs: &'a [Option<ResultRef>],
    ) -> BoxFuture<'a, Result<Outputs>> {
        Box::pin(run(solve, v, self, worker, key, inputs))
    }
}

/// Runs a diff op.
async fn run(
    solve: &Arc<Solve>,
    v: &Vertex,
    op: &DiffOp,
    worker: &Arc<Worker>,
    key: &Digest,
    inputs: &[Option<ResultRef>],
) -> Result<Outputs> {
    let pick = |i: Option<usize>| -> Result<Option<ResultRef>> {
        let Some(i) = i else { return Ok(None) };
        inputs
            .get(i)
            .cloned()
            .ok_or_else(|| Error::definition(Some(v.digest.as_str()), format!("diff input {i} out of range")))
    };
    let (lower, upper) = (pick(op.lower)?, pick(op.upper)?);
    let scratch_lower = op.lower.is_none();
    let cache = solve.solver.cache.clone();
    let worker = worker.clone();
    let key = key.clone();
    let name = v.name();
    tokio::task::spawn_blocking(move || {
        let out = if scratch_lower {
            // As BuildKit: the diff of scratch and upper is upper itself.
            keep(&cache, &worker, &key, upper, &name)?
        } else {
            match (&lower, &upper) {
                (Some(l), Some(u)) if l.snapshot == u.snapshot => keep(&cache, &worker, &key, None, &name)?,
                (None, None) => keep(&cache, &worker, &key, None, &name)?,
                _ => compute(&cache, &worker, &key, lower.as_ref(), upper.as_ref(), &name)?,
            }
        };
        Ok(BTreeMap::from([(0, out)]))
    })
    .await
    .map_err(|e| Error::with_source(ErrorKind::Internal, "diff task", e))?
}

/// Records an existing result (None = empty) as the diff's output.
fn keep(
    cache: &CacheManager,
    worker: &Arc<Worker>,
    key: &Digest,
    r: Option<ResultRef>,
    name: &str,
) -> Result<Option<ResultRef>> {
    let id = r.as_ref().map(|r| r.snapshot.clone()).unwrap_or_else(|| SnapshotId(String::new()));
    cache.record(worker, key, 0, &id, name)?;
    Ok(r)
}

/// A mounted result, or an empty directory for an empty one.
enum View {
    Mounted(MountGuard),
    Empty(tempfile::TempDir),
}

impl View {
    fn of(cache: &CacheManager, r: Option<&ResultRef>) -> Result<View> {
        match r {
            Some(r) => Ok(View::Mounted(r.worker.snapshotter.mount(&r.snapshot)?)),
            None => Ok(View::Empty(
                tempfile::tempdir_in(cache.tmp()).map_err(|e| Error::io("create empty dir", cache.tmp(), e))?,
            )),
        }
    }

    fn path(&self) -> &Path {
        match self {
            View::Mounted(g) => g.path(),
            View::Empty(t) => t.path(),
        }
    }
}

fn compute(
    cache: &CacheManager,
    worker: &Arc<Worker>,
    key: &Digest,
    lower: Option<&ResultRef>,
    upper: Option<&ResultRef>,
    name: &str,
) -> Result<Option<ResultRef>> {
    let lchain = lower.map(chain).transpose()?.unwrap_or_default();
    let uchain = upper.map(chain).transpose()?.unwrap_or_default();
    let (lv, uv) = (View::of(cache, lower)?, View::of(cache, upper)?);
    let mut changes = if uchain.len() > lchain.len() && uchain.starts_with(&lchain) {
        // `lower` is an ancestor: the diff is the layers above it, whiteouts included.
        let mut c = ChangeSet::default();
        if let Some(u) = upper {
            for s in &uchain[lchain.len()..] {
                with_layer(cache, &u.worker, s, &mut |r| c.add_layer(r))?;
            }
        }
        c
    } else {
        ChangeSet::compare_trees(lv.path(), uv.path())?
    };
    changes.normalize(Some(lv.path()), uv.path())?;
    if changes.is_empty() {
        return keep(cache, worker, key, None, name);
    }
    let blob = write_layer(cache.content(), &Compression::Uncompressed, true, |w| changes.write_layer(uv.path(), w))?;
    drop((lv, uv));
    let sn = &worker.snapshotter;
    let a = Active::prepare(sn, None)?;
    {
        let g = sn.mount(&a.id)?;
        let mut r = layer_reader(cache.content(), &blob.digest, &blob.media_type)?;
        apply_layer(g.path(), &mut r)?;
        std::io::copy(&mut r, &mut std::io::sink()).map_err(|e| Error::io("verify diff layer", g.path(), e))?;
    }
    // Recorded before the commit: a committed diff snapshot never lacks its whiteouts.
    cache.put_layer(&a.id, DIFF_LAYER, &blob)?;
    cache.put_layer(&a.id, "uncompressed", &blob)?;
    Ok(Some(cache.commit_and_record(worker, key, 0, a, name)?))
}

/// The authoritative layer recorded for snapshot `s`, if its blob is present.
pub fn authoritative_layer(cache: &CacheManager, s: &SnapshotId) -> Result<Option<LayerBlob>> {
    Ok(cache.layer::<LayerBlob>(s, DIFF_LAYER)?.filter(|l| cache.content().has(&l.digest)))
}

/// Writes snapshot `s`'s layer (uncompressed): its authoritative layer if it has one, else the
/// snapshotter's diff against its parent.
pub fn write_snapshot_layer(
    cache: &CacheManager,
    worker: &Arc<Worker>,
    s: &SnapshotId,
    out: &mut dyn Write,
) -> Result<()> {
    match authoritative_layer(cache, s)? {
        Some(l) => {
            let mut r = layer_reader(cache.content(), &l.digest, &l.media_type)?;
            std::io::copy(&mut r, out)
                .map_err(|e| Error::io("copy diff layer", cache.content().blob_path(&l.digest), e))?;
            Ok(())
        }
        None => worker.snapshotter.diff(s, out),
    }
}

/// Calls `f` with a reader of snapshot `s`'s layer (see [`write_snapshot_layer`]).
pub fn with_layer<T>(
    cache: &CacheManager,
    worker: &Arc<Worker>,
    s: &SnapshotId,
    f: &mut dyn FnMut(&mut dyn Read) -> Result<T>,
) -> Result<T> {
    if let Some(l) = authoritative_layer(cache, s)? {
        let mut r = layer_reader(cache.content(), &l.digest, &l.media_type)?;
        let out = f(&mut r)?;
        std::io::copy(&mut r, &mut std::io::sink())
            .map_err(|e| Error::io("verify layer", cache.content().blob_path(&l.digest), e))?;
        return Ok(out);
    }
    let (mut reader, mut writer) = std::io::pipe().with_path("create pipe", Path::new("diff"))?;
    let sn = worker.snapshotter.clone();
    std::thread::scope(|scope| {
        let producer = scope.spawn(move || sn.diff(s, &mut writer));
        let consumed = f(&mut reader).and_then(|v| {
            // Drain the end-of-archive padding so the producer never writes into a closed pipe.
            std::io::copy(&mut reader, &mut std::io::sink())
                .map_err(|e| Error::io("read layer", Path::new(&s.0), e))?;
            Ok(v)
        });
        drop(reader);
        let produced = producer.join().map_err(|_| Error::new(ErrorKind::Internal, "diff thread panicked"))?;
        let v = consumed?;
        produced?;
        Ok(v)
    })
}

/// Applies snapshot `s`'s layer (whiteouts included) onto the mounted view at `root`.
pub fn apply_snapshot_layer(cache: &CacheManager, worker: &Arc<Worker>, s: &SnapshotId, root: &Path) -> Result<u64> {
    with_layer(cache, worker, s, &mut |r| apply_layer(root, r))
}
