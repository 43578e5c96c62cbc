//! Merge ops (stack several results into one filesystem by applying each input's layers in order,
//! whiteouts included) and transfers of a result between workers (a flattened copy).

use super::{OpSolver, Outputs};
use crate::cache::CacheManager;
use crate::digest::Digest;
use crate::error::{Error, ErrorKind, Result};
use crate::graph::op::MergeOp;
use crate::graph::Vertex;
use crate::solver::refs::{chain, Active, ResultRef};
use crate::solver::Solve;
use crate::worker::pool::Worker;
use futures::future::BoxFuture;
use std::collections::BTreeMap;
use std::sync::Arc;

impl OpSolver for MergeOp {
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

/// Runs a merge op.
async fn run(
    solve: &Arc<Solve>,
    v: &Vertex,
    m: &MergeOp,
    worker: &Arc<Worker>,
    key: &Digest,
    inputs: &[Option<ResultRef>],
) -> Result<Outputs> {
    let mut refs = Vec::new();
    for &i in &m.inputs {
        let r = inputs
            .get(i)
            .cloned()
            .ok_or_else(|| Error::definition(Some(v.digest.as_str()), format!("merge input {i} out of range")))?;
        refs.extend(r);
    }
    let cache = solve.solver.cache.clone();
    let worker = worker.clone();
    let key = key.clone();
    let name = v.name();
    tokio::task::spawn_blocking(move || {
        let sn = worker.snapshotter.clone();
        let Some((first, rest)) = refs.split_first() else {
            let a = Active::prepare(&sn, None)?;
            return Ok(BTreeMap::from([(0, Some(cache.commit_and_record(&worker, &key, 0, a, &name)?))]));
        };
        let a = Active::prepare(&sn, Some(&first.snapshot))?;
        {
            let g = sn.mount(&a.id)?;
            for r in rest {
                for s in chain(r)? {
                    // A diff result's authoritative layer carries its whiteouts (see diff.rs).
                    super::diff::apply_snapshot_layer(&cache, &r.worker, &s, g.path())?;
                }
            }
        }
        Ok(BTreeMap::from([(0, Some(cache.commit_and_record(&worker, &key, 0, a, &name)?))]))
    })
    .await
    .map_err(|e| Error::with_source(ErrorKind::Internal, "merge task", e))?
}

/// Copies result `r` onto worker `to` (flattened) and records it under `key`, once.
pub fn transfer(cache: &CacheManager, r: &ResultRef, to: &Arc<Worker>, key: &Digest) -> Result<ResultRef> {
    if let Some(id) = cache.recorded(to, key, 0)? {
        return Ok(ResultRef { worker: to.clone(), snapshot: id });
    }
    let a = Active::prepare(&to.snapshotter, None)?;
    {
        let src = r.worker.snapshotter.mount(&r.snapshot)?;
        let dst = to.snapshotter.mount(&a.id)?;
        crate::export::export_local(src.path(), dst.path())?;
    }
    cache.commit_and_record(to, key, 0, a, &format!("transfer from {}", r.worker.name))
}
