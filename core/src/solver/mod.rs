//! The solver: turns a `Definition` into results. Each vertex gets a cache key (op digest with
//! inputs blanked ⊕ the keys of its inputs ⊕ content checksums for local sources and copies); a key
//! with a record is a hit, otherwise the vertex executes (bounded by the engine's parallelism) and
//! its outputs are recorded. Identical keys are serialised engine-wide, so concurrent solves run
//! identical work once. Each vertex runs as its own task; dropping the solve aborts them all.
pub mod cache_mounts;
pub mod display;
mod exec;
mod exporters;
mod fileop;
mod keys;
mod merge;
pub mod progress;
pub(crate) mod refs;
mod sources;

pub use progress::{LogStream, ProgressEvent, ProgressSink};

use crate::cache::metadata::record_key;
use crate::digest::Digest;
use crate::engine::{EngineInner, SolveOptions, SolveResult};
use crate::error::{Error, ErrorKind, Result};
use crate::graph::pb::op::Op as OpKind;
use crate::graph::{Definition, Vertex};
use crate::snapshot::SnapshotId;
use crate::worker::pool::Worker;
use futures::future::{BoxFuture, FutureExt, Shared};
use refs::ResultRef;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// The outputs of one solved vertex, by output index (`None` = empty filesystem).
#[derive(Debug, Clone)]
pub(crate) struct VertexOutputs {
    pub key: Digest,
    pub outputs: BTreeMap<i64, Option<ResultRef>>,
}

#[derive(Debug, Clone)]
struct SharedError(Arc<Error>);

type VertexFuture = Shared<BoxFuture<'static, std::result::Result<Arc<VertexOutputs>, SharedError>>>;

/// Rebuilds an error from a shared one (errors are not `Clone`; kinds and fields are kept).
pub(crate) fn clone_error(e: &Error) -> Error {
    match e {
        Error::Exec { vertex, command, exit_code, log_tail } => Error::Exec {
            vertex: vertex.clone(),
            command: command.clone(),
            exit_code: *exit_code,
            log_tail: log_tail.clone(),
        },
        Error::Definition { op, message } => Error::Definition { op: op.clone(), message: message.clone() },
        Error::Option { key, value, expected } => {
            Error::Option { key: key.clone(), value: value.clone(), expected: expected.clone() }
        }
        Error::RootInUse { root, pid } => Error::RootInUse { root: root.clone(), pid: *pid },
        Error::Cancelled => Error::Cancelled,
        other => Error::new(other.kind(), other.to_string()),
    }
}

/// State of one solve.
pub(crate) struct Solve {
    pub engine: Arc<EngineInner>,
    pub def: Arc<Definition>,
    pub opts: SolveOptions,
    memo: Mutex<HashMap<Digest, VertexFuture>>,
    /// Downloads made while computing a source's key, reused when the source executes.
    pub fetched: Mutex<HashMap<Digest, tempfile::TempDir>>,
    aborts: Mutex<Vec<tokio::task::AbortHandle>>,
    cached: AtomicUsize,
    executed: AtomicUsize,
}

/// Aborts every vertex task of a solve when the solve future is dropped.
struct AbortOnDrop(Arc<Solve>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        let handles = std::mem::take(&mut *self.0.aborts.lock().unwrap_or_else(|p| p.into_inner()));
        for h in handles {
            h.abort();
        }
        self.0.memo.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }
}

/// Solves `def` on `engine` and runs the exporters.
pub(crate) async fn solve(engine: Arc<EngineInner>, def: &Definition, opts: SolveOptions) -> Result<SolveResult> {
    let solve = Arc::new(Solve {
        engine,
        def: Arc::new(def.clone()),
        opts,
        memo: Mutex::new(HashMap::new()),
        fetched: Mutex::new(HashMap::new()),
        aborts: Mutex::new(Vec::new()),
        cached: AtomicUsize::new(0),
        executed: AtomicUsize::new(0),
    });
    let guard = AbortOnDrop(solve.clone());
    let result = match def.output() {
        None => None,
        Some((d, index)) => {
            let outs = solve.vertex_future(&d).await.map_err(|e| clone_error(&e.0))?;
            outs.outputs.get(&index).cloned().ok_or_else(|| {
                Error::definition(Some(d.as_str()), format!("the result refers to output {index}, which the op lacks"))
            })?
        }
    };
    let exporter_response = exporters::run(&solve, result.as_ref()).await?;
    drop(guard);
    Ok(SolveResult {
        exporter_response,
        cached: solve.cached.load(Ordering::Relaxed),
        executed: solve.executed.load(Ordering::Relaxed),
    })
}

impl Solve {
    fn vertex_future(self: &Arc<Self>, d: &Digest) -> VertexFuture {
        let mut memo = self.memo.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(f) = memo.get(d) {
            return f.clone();
        }
        let this = self.clone();
        let digest = d.clone();
        let handle = tokio::spawn(async move { this.eval(digest).await });
        self.aborts.lock().unwrap_or_else(|p| p.into_inner()).push(handle.abort_handle());
        let fut = async move {
            match handle.await {
                Ok(Ok(v)) => Ok(v),
                Ok(Err(e)) => Err(SharedError(Arc::new(e))),
                Err(e) if e.is_cancelled() => Err(SharedError(Arc::new(Error::Cancelled))),
                Err(e) => {
                    Err(SharedError(Arc::new(Error::with_source(ErrorKind::Internal, "vertex task panicked", e))))
                }
            }
        }
        .boxed()
        .shared();
        memo.insert(d.clone(), fut.clone());
        fut
    }

    /// Emits an event.
    pub fn emit(&self, e: ProgressEvent) {
        self.opts.progress.emit(e)
    }

    async fn eval(self: Arc<Self>, d: Digest) -> Result<Arc<VertexOutputs>> {
        let v = self
            .def
            .vertex(&d)
            .ok_or_else(|| Error::definition(Some(d.as_str()), "input refers to an op missing from the definition"))?
            .clone();
        // Inputs first, concurrently.
        let mut futs = Vec::with_capacity(v.op.inputs.len());
        for inp in &v.op.inputs {
            let dd = Digest::parse(&inp.digest)
                .map_err(|_| Error::definition(Some(d.as_str()), format!("invalid input digest {:?}", inp.digest)))?;
            futs.push(self.vertex_future(&dd));
        }
        let results = futures::future::try_join_all(futs).await.map_err(|e| clone_error(&e.0))?;
        let mut inputs: Vec<Option<ResultRef>> = Vec::with_capacity(results.len());
        let mut input_keys: Vec<Digest> = Vec::with_capacity(results.len());
        for (inp, r) in v.op.inputs.iter().zip(&results) {
            let out = r.outputs.get(&inp.index).cloned().ok_or_else(|| {
                Error::definition(Some(d.as_str()), format!("input {} has no output {}", inp.digest, inp.index))
            })?;
            inputs.push(out);
            input_keys.push(keys::output_key(&r.key, inp.index));
        }
        let filters = v.op.constraints.as_ref().map(|c| c.filter.clone()).unwrap_or_default();
        let worker = self.engine.workers.select(&filters)?.clone();
        let inputs = self.transfer_inputs(&worker, inputs, &input_keys).await?;
        let name = v.name();
        let key = keys::vertex_key(&self, &v, &worker, &inputs, &input_keys).await?;
        let out_indexes = output_indexes(&v);

        let lock = self.engine.key_lock(&format!("{}/{}", worker.name, key));
        let _serial = lock.lock().await;
        if !v.metadata.ignore_cache {
            if let Some(outputs) = self.lookup(&worker, &key, &out_indexes)? {
                self.cached.fetch_add(1, Ordering::Relaxed);
                self.emit(ProgressEvent::VertexCached { vertex: d.to_string(), name });
                return Ok(Arc::new(VertexOutputs { key, outputs }));
            }
        }
        let _permit = self
            .engine
            .limiter
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| Error::with_source(ErrorKind::Internal, "parallelism limiter closed", e))?;
        self.emit(ProgressEvent::VertexStarted { vertex: d.to_string(), name: name.clone() });
        let t0 = Instant::now();
        let res = match &v.op.op {
            Some(OpKind::Exec(e)) => exec::run(&self, &v, e, &worker, &key, &inputs).await,
            Some(OpKind::File(f)) => fileop::run(&self, &v, f, &worker, &key, &inputs).await,
            Some(OpKind::Merge(m)) => merge::run(&self, &v, m, &worker, &key, &inputs).await,
            Some(OpKind::Source(s)) => sources::run(&self, &v, s, &worker, &key).await,
            _ => Err(Error::new(ErrorKind::Unsupported, format!("op {d} is not supported by kiln"))),
        };
        match res {
            Ok(outputs) => {
                self.executed.fetch_add(1, Ordering::Relaxed);
                self.emit(ProgressEvent::VertexCompleted { vertex: d.to_string(), name, duration: t0.elapsed() });
                Ok(Arc::new(VertexOutputs { key, outputs }))
            }
            Err(e) => {
                self.emit(ProgressEvent::VertexError { vertex: d.to_string(), name, error: e.to_string() });
                Err(e)
            }
        }
    }

    fn lookup(
        &self,
        worker: &Arc<Worker>,
        key: &Digest,
        indexes: &[i64],
    ) -> Result<Option<BTreeMap<i64, Option<ResultRef>>>> {
        let mut outputs = BTreeMap::new();
        for &i in indexes {
            let Some(rec) = self.engine.meta.record(&record_key(&worker.name, key, i))? else { return Ok(None) };
            if rec.snapshot_is_empty() {
                outputs.insert(i, None);
                continue;
            }
            let id = SnapshotId(rec.snapshot);
            if worker.snapshotter.parent(&id).is_err() {
                tracing::warn!(snapshot = %id, "cache record points at a missing snapshot; rebuilding");
                return Ok(None);
            }
            outputs.insert(i, Some(ResultRef { worker: worker.clone(), snapshot: id }));
        }
        Ok(Some(outputs))
    }

    /// Moves inputs that live on another worker onto `worker` (a flattened copy, recorded so it
    /// happens once).
    async fn transfer_inputs(
        &self,
        worker: &Arc<Worker>,
        inputs: Vec<Option<ResultRef>>,
        keys: &[Digest],
    ) -> Result<Vec<Option<ResultRef>>> {
        let mut out = Vec::with_capacity(inputs.len());
        for (r, key) in inputs.into_iter().zip(keys) {
            match r {
                Some(r) if r.worker.name != worker.name => {
                    let engine = self.engine.clone();
                    let w = worker.clone();
                    let key = key.clone();
                    let moved = tokio::task::spawn_blocking(move || merge::transfer(&engine, &r, &w, &key))
                        .await
                        .map_err(|e| Error::with_source(ErrorKind::Internal, "transfer task", e))??;
                    out.push(Some(moved));
                }
                other => out.push(other),
            }
        }
        Ok(out)
    }
}

/// The output indexes an op produces.
fn output_indexes(v: &Vertex) -> Vec<i64> {
    match &v.op.op {
        Some(OpKind::Exec(e)) => e.mounts.iter().filter(|m| m.output >= 0).map(|m| m.output).collect(),
        Some(OpKind::File(f)) => f.actions.iter().filter(|a| a.output >= 0).map(|a| a.output).collect(),
        _ => vec![0],
    }
}
