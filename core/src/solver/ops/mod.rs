//! One module per op kind, each implementing [`OpSolver`] for its typed op
//! ([`crate::graph::op`]): which outputs it has, its cache key, and how it executes — as
//! BuildKit's `solver/llbsolver/ops/{exec,file,source,merge,diff}.go`. [`op_solver`] is the one
//! place a vertex is mapped to its implementation; adding an op kind touches its typed op, its
//! module here and that match.

pub(crate) mod diff;
pub(crate) mod exec;
pub(crate) mod file;
pub(crate) mod merge;
pub(crate) mod source;

use super::keys;
use super::refs::ResultRef;
use super::Solve;
use crate::digest::Digest;
use crate::error::Result;
use crate::graph::op::Op;
use crate::graph::Vertex;
use crate::worker::pool::Worker;
use futures::future::BoxFuture;
use std::collections::BTreeMap;
use std::sync::Arc;

/// The outputs an op produced, by output index (`None` = empty filesystem).
pub(crate) type Outputs = BTreeMap<i64, Option<ResultRef>>;

/// What the solver needs from an op kind. Futures are boxed: every vertex task waits with its
/// whole state machine allocated, so inlining the largest op (exec) would cost that much per
/// vertex of a graph (and a trait object needs a nameable future type).
pub(crate) trait OpSolver: Sync {
    /// The output indexes the op produces, in the op's order (its records are looked up, imported
    /// and exported for these). Default: the one output 0.
    fn outputs(&self) -> &[i64] {
        &[0]
    }

    /// The vertex's cache key from its inputs' output keys (in input order); an op that reads
    /// content (a local source, a copy) folds content checksums in. See [`keys`]. Default: the
    /// op's identity and its inputs' keys ([`plain_key`]).
    fn cache_key<'a>(
        &'a self,
        _solve: &'a Arc<Solve>,
        v: &'a Vertex,
        input_keys: &'a [Digest],
    ) -> BoxFuture<'a, Result<Digest>> {
        plain_key(v, input_keys)
    }

    /// Runs the op on `worker` with its inputs' results (in input order, on that worker) and
    /// commits and records every output under `key`.
    fn execute<'a>(
        &'a self,
        solve: &'a Arc<Solve>,
        v: &'a Vertex,
        worker: &'a Arc<Worker>,
        key: &'a Digest,
        inputs: &'a [Option<ResultRef>],
    ) -> BoxFuture<'a, Result<Outputs>>;
}

/// The implementation of vertex `v`'s op kind: the one dispatch point of the solver.
pub(crate) fn op_solver(v: &Vertex) -> &dyn OpSolver {
    match &v.typed {
        Op::Source(s) => s,
        Op::Exec(e) => e.as_ref(),
        Op::File(f) => f,
        Op::Merge(m) => m,
        Op::Diff(d) => d,
    }
}

/// The cache key of an op whose key is its identity and its inputs' keys (no content read).
pub(super) fn plain_key<'a>(v: &'a Vertex, input_keys: &'a [Digest]) -> BoxFuture<'a, Result<Digest>> {
    let key = keys::vertex_key(keys::op_identity(&v.op, |_| {}), Vec::new(), keys::input_parts(input_keys));
    Box::pin(std::future::ready(Ok(key)))
}
