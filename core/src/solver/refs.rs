//! Result references (defined with the cache, [`crate::cache::refs`]) and the chain of a ref.

pub use crate::cache::refs::{Active, ResultRef};
use crate::error::Result;
use crate::snapshot::SnapshotId;

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
