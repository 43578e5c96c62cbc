//! The solver: turns a `Definition` into results. Each vertex gets a cache key (op digest with
//! inputs blanked ⊕ the keys of its inputs ⊕ content checksums for local sources and copies); a key
//! with a record is a hit, otherwise the vertex executes (bounded by the engine's parallelism) and
//! its outputs are recorded. Identical keys are serialised engine-wide, so concurrent solves run
//! identical work once. Each vertex runs as its own task; dropping the solve aborts them all.
mod bridge;
mod cache_export;
mod exporters;
mod job;
mod keys;
mod layers;
pub(crate) mod ops;
mod prefetch;
pub(crate) mod refs;
mod ssh;
mod tasks;

// The diff op's module also holds the layer-of-a-snapshot helpers exporters use.
use ops::diff;

// Progress lives in its own module (`crate::progress`); these keep the solver's old paths working.
pub use crate::progress::{self, display, EventFields, LogStream, ProgressEvent, ProgressSink};

pub use crate::fileops::{FileDigest, FileDigests};
pub(crate) use bridge::{BuildSession, SolvedRef};
pub use job::{
    AgentStream, CancelToken, CredentialProvider, LocalProvider, LocalRequest, ProvidedLocal, RegistryLogin,
    SecretProvider, SolveOptions, SolveResult, SshProvider,
};
pub(crate) use tasks::{KeyLockHandle, KeyLocks, TaskCount, TaskToken};

use crate::cache::CacheManager;
use crate::digest::Digest;
use crate::error::{Error, ErrorKind, Result};
use crate::graph::{Definition, Vertex};
use crate::snapshot::SnapshotId;
use crate::worker::pool::Worker;
use futures::future::{BoxFuture, FutureExt, Shared};
use refs::ResultRef;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// The solver of one engine: owns the parallelism limiter, the per-key dedup locks, the live task
/// counts and the gate in-flight solves hold (prune waits for them), and uses the cache through
/// its [`CacheManager`] (as BuildKit's `solver/jobs.go` owns its actives).
#[derive(Debug)]
pub(crate) struct Solver {
    /// The local cache (records, layer blobs, snapshots; holds the root lock).
    pub cache: Arc<CacheManager>,
    /// Bounds the vertices executing at once.
    limiter: Arc<tokio::sync::Semaphore>,
    /// Serialises work on one cache key across solves.
    key_locks: KeyLocks,
    /// Held shared by every in-flight solve (and disk usage), exclusively by prune.
    in_flight: tokio::sync::RwLock<()>,
    /// Vertex tasks alive (including cancelled ones still cleaning up).
    tasks: Arc<TaskCount>,
    /// Timeouts and retries of every registry client.
    registry: crate::registry::RegistryOptions,
}

impl Solver {
    /// A solver on `cache` running at most `parallelism` vertices at once.
    pub fn new(cache: CacheManager, parallelism: usize, registry: crate::registry::RegistryOptions) -> Solver {
        Solver {
            cache: Arc::new(cache),
            limiter: Arc::new(tokio::sync::Semaphore::new(parallelism.max(1))),
            key_locks: Default::default(),
            in_flight: Default::default(),
            tasks: Default::default(),
            registry,
        }
    }

    /// The async lock serialising work on one cache key (dedup of identical vertices).
    pub fn key_lock(&self, key: &str) -> KeyLockHandle<'_> {
        self.key_locks.handle(key)
    }

    /// Cache keys whose dedup lock is in use right now (leak checks).
    #[cfg(feature = "test-support")]
    pub fn key_locks_in_use(&self) -> usize {
        self.key_locks.len()
    }

    /// Returns once no vertex task of any solve is alive.
    pub async fn wait_idle(&self) {
        self.tasks.wait_idle().await
    }

    /// Shared hold on the cache: no prune runs while it is held.
    pub async fn read_gate(&self) -> tokio::sync::RwLockReadGuard<'_, ()> {
        self.in_flight.read().await
    }

    /// Exclusive hold on the cache: waits for every in-flight solve.
    pub async fn write_gate(&self) -> tokio::sync::RwLockWriteGuard<'_, ()> {
        self.in_flight.write().await
    }

    /// Solves `def` (holding the in-flight gate), runs the exporters and cache exporters.
    pub async fn solve(self: &Arc<Self>, def: &Definition, opts: SolveOptions) -> Result<SolveResult> {
        let _gate = self.read_gate().await;
        solve(self.clone(), def, opts).await
    }
}

/// The outputs of one solved vertex, by output index (`None` = empty filesystem).
#[derive(Debug, Clone)]
pub(crate) struct VertexOutputs {
    pub outputs: BTreeMap<i64, Option<ResultRef>>,
}

/// A vertex's cache key and the worker it runs on.
#[derive(Debug, Clone)]
pub(crate) struct KeyInfo {
    pub key: Digest,
    pub worker: Arc<Worker>,
    /// Keys of the inputs, in the op's input order (output keys: vertex key ⊕ output index).
    pub input_keys: Vec<Digest>,
}

#[derive(Debug, Clone)]
pub(crate) struct SharedError(pub(crate) Arc<Error>);

type Shared_<T> = Shared<BoxFuture<'static, std::result::Result<Arc<T>, SharedError>>>;
type VertexFuture = Shared_<VertexOutputs>;
type KeyFuture = Shared_<KeyInfo>;

/// What happened to a vertex in this solve (for progress and counters).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Cached,
    Executed,
    /// Failed (the solve fails; counted in no total).
    Failed,
}

/// State of one solve.
pub(crate) struct Solve {
    pub solver: Arc<Solver>,
    pub def: Arc<Definition>,
    pub opts: SolveOptions,
    /// Remote caches consulted on a local miss.
    pub imports: crate::remotecache::Imports,
    /// Registry timeouts and this solve's interrupt (fired when the solve is cancelled).
    pub registry: crate::registry::ClientSettings,
    keys: Mutex<HashMap<Digest, KeyFuture>>,
    results: Mutex<HashMap<Digest, VertexFuture>>,
    status: Mutex<HashMap<Digest, Status>>,
    /// Cache mounts already restored from an imported cache in this solve.
    restored: Mutex<std::collections::HashSet<String>>,
    /// What a source resolved to while computing its key (git commit, image manifest digest),
    /// reused when it executes.
    pinned: Mutex<HashMap<Digest, String>>,
    /// Downloads made while computing a source's key, reused when the source executes.
    pub fetched: Mutex<HashMap<Digest, tempfile::TempDir>>,
    aborts: Mutex<Vec<tokio::task::AbortHandle>>,
    /// This solve's live vertex tasks (the engine counts them too).
    tasks: Arc<TaskCount>,
    /// Layers made as vertices complete, for the cache exporters (`mode=max`).
    pub(crate) prefetch: prefetch::LayerPrefetch,
}

/// Aborts every vertex task of a solve when the solve future is dropped.
struct AbortOnDrop(Arc<Solve>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort_all();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Fires a solve's registry interrupt when dropped: a solve that ends — cancelled through its
/// token, its future dropped, or finished — leaves no registry request waiting on the network.
struct InterruptOnDrop(crate::registry::Interrupt);

impl Drop for InterruptOnDrop {
    fn drop(&mut self) {
        self.0.fire();
    }
}

/// `spawn_blocking` for work that uses the engine: the thread counts as a live task (of the engine
/// and of the solve, `tokens`) until `f` returned and everything it captured was dropped, so a
/// cancelled solve returns only once the thread let go of the engine (and its root lock).
pub(crate) fn spawn_counted<T: Send + 'static>(
    tokens: (TaskToken, TaskToken),
    f: impl FnOnce() -> T + Send + 'static,
) -> tokio::task::JoinHandle<T> {
    tokio::task::spawn_blocking(move || {
        let _tokens = tokens;
        // Calling `f` consumes it: its captures are dropped before `_tokens`.
        f()
    })
}

/// Solves `def` on `engine`, runs the exporters and cache exporters.
async fn solve(engine: Arc<Solver>, def: &Definition, opts: SolveOptions) -> Result<SolveResult> {
    let registry = crate::registry::ClientSettings {
        options: engine.registry.clone(),
        interrupt: Default::default(),
        logins: opts.registry_credentials.clone().and_then(crate::registry::LoginSource::new),
    };
    let _interrupt = InterruptOnDrop(registry.interrupt.clone());
    let Some(token) = opts.cancel.clone() else {
        return solve_inner(engine, def, opts, Arc::default(), registry).await;
    };
    if token.is_cancelled() {
        return Err(Error::Cancelled);
    }
    // The solve's own task count: a cancelled solve returns once its tasks ran their cleanup.
    let tasks: Arc<TaskCount> = Arc::default();
    let interrupt = registry.interrupt.clone();
    let mut inner = Box::pin(solve_inner(engine, def, opts, tasks.clone(), registry));
    tokio::select! {
        r = &mut inner => return r,
        _ = token.cancelled() => {}
    }
    // End registry requests blocked on the network, then drop the solve: that aborts every
    // vertex task; wait until their guards (and registry threads) have run.
    interrupt.fire();
    drop(inner);
    tasks.wait_idle().await;
    Err(Error::Cancelled)
}

async fn solve_inner(
    engine: Arc<Solver>,
    def: &Definition,
    opts: SolveOptions,
    tasks: Arc<TaskCount>,
    registry: crate::registry::ClientSettings,
) -> Result<SolveResult> {
    let solve = Solve::start(engine, def, opts, tasks, registry).await?;
    let guard = AbortOnDrop(solve.clone());
    let res = run_solve(&solve, def).await;
    if res.is_err() {
        // No layer task outlives the solve (nor its hold on the in-flight gate): those running
        // end after their current layer, the others are skipped.
        solve.abort_all();
        solve.prefetch.wait().await;
    }
    drop(guard);
    res
}

/// Loads the result, runs the exporters and cache exporters of a started solve.
async fn run_solve(solve: &Arc<Solve>, def: &Definition) -> Result<SolveResult> {
    let result = match def.output() {
        None => None,
        // Nothing consumes the result: knowing it exists (locally or in an imported cache) is
        // enough, so a fully cached graph fetches and applies no layer at all.
        Some((d, index))
            if solve.opts.outputs.is_empty()
                && solve.opts.cache_exports.is_empty()
                && solve.known(&d, index).await? =>
        {
            None
        }
        Some((d, index)) => solve.output_ref(&d, index).await?,
    };
    solve.finish_unreported();
    let exporter_response = exporters::run(solve, result.as_ref()).await?;
    cache_export::run(solve).await?;
    solve.prefetch.wait().await;
    let (cached, executed) = solve.counts();
    Ok(SolveResult { exporter_response, cached, executed })
}

impl Solve {
    /// Checks `opts` against `def`, loads the cache imports and makes the state of one solve
    /// (nothing runs yet). Its vertex tasks count in `tasks` and in the engine's count.
    pub(crate) async fn start(
        engine: Arc<Solver>,
        def: &Definition,
        opts: SolveOptions,
        tasks: Arc<TaskCount>,
        registry: crate::registry::ClientSettings,
    ) -> Result<Arc<Solve>> {
        crate::options::cache::validate_exports(&opts.cache_exports)?;
        for v in def.vertices() {
            ops::exec::check_entitlements(v, &opts.entitlements)?;
        }
        let imports = {
            let engine = engine.clone();
            let specs = opts.cache_imports.clone();
            let progress = opts.progress.clone();
            let registry = registry.clone();
            // Counted as a task: a cancelled solve returns once this thread let go of the engine.
            let tokens = (engine.tasks.token(), tasks.token());
            spawn_counted(tokens, move || {
                crate::remotecache::Imports::load(engine.cache.content(), &specs, &progress, &registry)
            })
            .await
            .map_err(|e| Error::with_source(ErrorKind::Internal, "cache import task", e))?
        };
        if registry.interrupt.is_fired() {
            return Err(Error::Cancelled);
        }
        let prefetch = prefetch::LayerPrefetch::new(&opts.cache_exports);
        Ok(Arc::new(Solve {
            solver: engine,
            def: Arc::new(def.clone()),
            opts,
            imports,
            registry,
            keys: Mutex::new(HashMap::new()),
            results: Mutex::new(HashMap::new()),
            status: Mutex::new(HashMap::new()),
            restored: Mutex::new(Default::default()),
            pinned: Mutex::new(HashMap::new()),
            fetched: Mutex::new(HashMap::new()),
            aborts: Mutex::new(Vec::new()),
            prefetch,
            tasks,
        }))
    }

    /// Output `index` of vertex `d`, loaded (executed, or taken from the local or an imported
    /// cache).
    pub(crate) async fn output_ref(self: &Arc<Self>, d: &Digest, index: i64) -> Result<Option<ResultRef>> {
        let outs = self.result_future(d).await.map_err(|e| (*e.0).clone())?;
        outs.outputs.get(&index).cloned().ok_or_else(|| {
            Error::definition(Some(d.as_str()), format!("the result refers to output {index}, which the op lacks"))
        })
    }

    /// Reports every vertex without a final state as cached: its result was never needed (a
    /// dependent came from the cache).
    pub(crate) fn finish_unreported(&self) {
        for v in self.def.vertices() {
            if !lock(&self.status).contains_key(&v.digest) {
                self.finish_cached(&v.digest, v.name());
            }
        }
    }

    /// (cached, executed) vertices so far.
    pub(crate) fn counts(&self) -> (usize, usize) {
        let status = lock(&self.status);
        (
            status.values().filter(|s| **s == Status::Cached).count(),
            status.values().filter(|s| **s == Status::Executed).count(),
        )
    }

    /// Aborts every vertex task of this solve and forgets its memoised futures (the solve ended,
    /// was cancelled, or the build holding it ended).
    pub(crate) fn abort_all(&self) {
        self.prefetch.stop();
        let handles = std::mem::take(&mut *lock(&self.aborts));
        for h in handles {
            h.abort();
        }
        lock(&self.keys).clear();
        lock(&self.results).clear();
    }

    /// Tokens counting a blocking thread of this solve as a live task (engine and solve), so a
    /// cancelled solve returns only once the thread let go of what it used.
    pub(crate) fn task_tokens(&self) -> (TaskToken, TaskToken) {
        (self.solver.tasks.token(), self.tasks.token())
    }

    fn vertex(&self, d: &Digest) -> Result<Vertex> {
        self.def
            .vertex(d)
            .cloned()
            .ok_or_else(|| Error::definition(Some(d.as_str()), "input refers to an op missing from the definition"))
    }

    fn spawn<T: Send + Sync + 'static>(
        self: &Arc<Self>,
        fut: impl std::future::Future<Output = Result<Arc<T>>> + Send + 'static,
    ) -> Shared_<T> {
        let tokens = (self.solver.tasks.token(), self.tasks.token());
        let handle = tokio::spawn(async move {
            // Declared first, dropped last: the task counts as alive until its guards have run.
            let _tokens = tokens;
            fut.await
        });
        lock(&self.aborts).push(handle.abort_handle());
        async move {
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
        .shared()
    }

    /// The (memoised) cache key of vertex `d`.
    pub(crate) fn key_future(self: &Arc<Self>, d: &Digest) -> KeyFuture {
        // Looked up and inserted under one lock: spawning starts the task at once, so two callers
        // racing past a separate check would compute (and report) the vertex twice.
        let mut keys = lock(&self.keys);
        if let Some(f) = keys.get(d) {
            return f.clone();
        }
        let this = self.clone();
        let digest = d.clone();
        let fut = self.spawn(async move { this.eval_key(digest).await });
        keys.insert(d.clone(), fut.clone());
        fut
    }

    /// The (memoised) outputs of vertex `d`.
    pub(crate) fn result_future(self: &Arc<Self>, d: &Digest) -> VertexFuture {
        // One lock for lookup and insert, as in `key_future`: a vertex shared by two branches
        // must run (and report its final state) once.
        let mut results = lock(&self.results);
        if let Some(f) = results.get(d) {
            return f.clone();
        }
        let this = self.clone();
        let digest = d.clone();
        let fut = self.spawn(async move { this.eval_result(digest).await });
        results.insert(d.clone(), fut.clone());
        fut
    }

    /// Remembers what source vertex `d` resolved to.
    pub(crate) fn pin(&self, d: &Digest, resolved: &str) {
        lock(&self.pinned).insert(d.clone(), resolved.to_owned());
    }

    /// What source vertex `d` resolved to while its key was computed.
    pub(crate) fn pinned(&self, d: &Digest) -> Option<String> {
        lock(&self.pinned).get(d).cloned()
    }

    /// Emits an event.
    pub fn emit(&self, e: ProgressEvent) {
        self.opts.progress.emit(e)
    }

    async fn eval_key(self: Arc<Self>, d: Digest) -> Result<Arc<KeyInfo>> {
        let v = self.vertex(&d)?;
        let futs: Vec<_> = v.inputs.iter().map(|i| self.key_future(&i.digest)).collect();
        let infos = futures::future::try_join_all(futs).await.map_err(|e| (*e.0).clone())?;
        let input_keys: Vec<Digest> =
            v.inputs.iter().zip(&infos).map(|(inp, k)| keys::output_key(&k.key, inp.index)).collect();
        let filters = v.op.constraints.as_ref().map(|c| c.filter.clone()).unwrap_or_default();
        let worker = self.solver.cache.workers().select(&filters)?.clone();
        let key = ops::op_solver(&v).cache_key(&self, &v, &input_keys).await?;
        Ok(Arc::new(KeyInfo { key, worker, input_keys }))
    }

    /// Records the final state of vertex `d` and reports it, once: a vertex that already has a
    /// final state keeps it and no second event is emitted (each vertex reports exactly one of
    /// CACHED, DONE or ERROR, and `cached + executed` counts each vertex once).
    fn finish(&self, d: &Digest, s: Status, event: ProgressEvent) {
        let first = match lock(&self.status).entry(d.clone()) {
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(s);
                true
            }
            // A lazily loaded result (a client-side build's ref) is reported CACHED when known,
            // then again when loaded from the cache: the same state, nothing to say.
            std::collections::hash_map::Entry::Occupied(e) if *e.get() == s => false,
            std::collections::hash_map::Entry::Occupied(e) => {
                tracing::warn!(vertex = %d, state = ?e.get(), new = ?s, "vertex already reported a final state");
                false
            }
        };
        if first {
            self.emit(event);
        }
    }

    fn finish_cached(&self, d: &Digest, name: String) {
        self.finish(d, Status::Cached, ProgressEvent::VertexCached { vertex: d.to_string(), name });
    }

    async fn eval_result(self: Arc<Self>, d: Digest) -> Result<Arc<VertexOutputs>> {
        let v = self.vertex(&d)?;
        let ki = self.key_future(&d).await.map_err(|e| (*e.0).clone())?;
        let (key, worker) = (ki.key.clone(), ki.worker.clone());
        let name = v.name();
        let op = ops::op_solver(&v);
        let out_indexes = op.outputs();
        let cacheable = !v.metadata.ignore_cache;
        if cacheable {
            if let Some(outputs) = self.lookup(&worker, &key, out_indexes)? {
                self.finish_cached(&d, name);
                return Ok(Arc::new(VertexOutputs { outputs }));
            }
        }
        let lock_ = self.solver.key_lock(&format!("{}/{}", worker.name, key));
        let _serial = lock_.lock().await;
        if cacheable {
            // Another solve may have produced it while we waited; or a remote cache has it.
            if let Some(outputs) = self.lookup(&worker, &key, out_indexes)? {
                self.finish_cached(&d, name);
                return Ok(Arc::new(VertexOutputs { outputs }));
            }
            if let Some(outputs) = Box::pin(self.import(&v, &worker, &key, out_indexes)).await? {
                self.finish_cached(&d, name);
                return Ok(Arc::new(VertexOutputs { outputs }));
            }
        }
        let futs: Vec<_> = v.inputs.iter().map(|i| self.result_future(&i.digest)).collect();
        let results = futures::future::try_join_all(futs).await.map_err(|e| (*e.0).clone())?;
        let mut inputs: Vec<Option<ResultRef>> = Vec::with_capacity(results.len());
        for (inp, r) in v.inputs.iter().zip(&results) {
            let out = r.outputs.get(&inp.index).cloned().ok_or_else(|| {
                Error::definition(Some(d.as_str()), format!("input {} has no output {}", inp.digest, inp.index))
            })?;
            inputs.push(out);
        }
        let inputs = Box::pin(self.transfer_inputs(&worker, inputs, &ki.input_keys)).await?;
        let _permit = self
            .solver
            .limiter
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| Error::with_source(ErrorKind::Internal, "parallelism limiter closed", e))?;
        self.emit(ProgressEvent::VertexStarted { vertex: d.to_string(), name: name.clone() });
        let t0 = Instant::now();
        let res = op.execute(&self, &v, &worker, &key, &inputs).await;
        match res {
            Ok(outputs) => {
                let done = ProgressEvent::VertexCompleted { vertex: d.to_string(), name, duration: t0.elapsed() };
                self.finish(&d, Status::Executed, done);
                // A local source's own result is never exported (the build context): its layer is
                // made only if a consumer's chain holds it.
                if !matches!(v.source_spec(), Ok(Some(crate::graph::SourceSpec::Local { .. }))) {
                    self.prefetch.executed(&self, outputs.values().flatten());
                }
                Ok(Arc::new(VertexOutputs { outputs }))
            }
            Err(e) => {
                let failed = ProgressEvent::VertexError { vertex: d.to_string(), name, error: e.to_string() };
                self.finish(&d, Status::Failed, failed);
                Err(e)
            }
        }
    }

    /// True when output `index` of vertex `d` is available without executing (a local record or
    /// an imported result); marks the vertex cached.
    pub(crate) async fn known(self: &Arc<Self>, d: &Digest, index: i64) -> Result<bool> {
        let v = self.vertex(d)?;
        if v.metadata.ignore_cache {
            return Ok(false);
        }
        let ki = self.key_future(d).await.map_err(|e| (*e.0).clone())?;
        let local = self.lookup(&ki.worker, &ki.key, &[index])?.is_some();
        if !local && !self.imports.contains(&keys::output_key(&ki.key, index)) {
            return Ok(false);
        }
        self.finish_cached(d, v.name());
        Ok(true)
    }

    /// The local records of every output of a vertex, if all exist and their snapshots are intact.
    pub(crate) fn lookup(
        &self,
        worker: &Arc<Worker>,
        key: &Digest,
        indexes: &[i64],
    ) -> Result<Option<BTreeMap<i64, Option<ResultRef>>>> {
        self.solver.cache.lookup(worker, key, indexes)
    }

    /// Materialises every output of a vertex from an imported remote cache, if it has them all.
    async fn import(
        self: &Arc<Self>,
        v: &Vertex,
        worker: &Arc<Worker>,
        key: &Digest,
        indexes: &[i64],
    ) -> Result<Option<BTreeMap<i64, Option<ResultRef>>>> {
        if self.imports.is_empty() {
            return Ok(None);
        }
        let mut chains = Vec::new();
        for &i in indexes {
            match self.imports.lookup(&keys::output_key(key, i)) {
                Some(hit) => chains.push((i, hit)),
                None => return Ok(None),
            }
        }
        let cache = self.solver.cache.clone();
        let worker = worker.clone();
        let key = key.clone();
        let name = v.name();
        let vertex = v.digest.to_string();
        let this = self.clone();
        // Counted as a task: the thread outlives an aborted vertex task until it returns.
        let tokens = self.task_tokens();
        spawn_counted(tokens, move || {
            let mut out = BTreeMap::new();
            for (i, hit) in chains {
                let fetch = |d: &Digest| this.imports.fetch(hit.importer, d, cache.content());
                // No byte-count events here: the vertex reports CACHED once its layers are in place.
                match layers::apply_chain(&cache, &worker, &hit.layers, &fetch, &name, &vertex, &ProgressSink::none()) {
                    Ok(top) => {
                        let id = top.clone().unwrap_or_else(|| SnapshotId(String::new()));
                        cache.record(&worker, &key, i, &id, &name)?;
                        out.insert(i, top.map(|s| ResultRef { worker: worker.clone(), snapshot: s }));
                    }
                    Err(Error::Cancelled) => return Err(Error::Cancelled),
                    Err(e) => {
                        // An importer failing is a warning and a miss, never a failed build.
                        this.emit(ProgressEvent::Warning { message: format!("cache import for {name} failed: {e}") });
                        return Ok(None);
                    }
                }
            }
            Ok(Some(out))
        })
        .await
        .map_err(|e| Error::with_source(ErrorKind::Internal, "cache import task", e))?
    }

    /// Fills an empty cache mount from an imported cache that carries it (`cache-mounts=true` on
    /// export). Best effort: a failure is a warning and the mount starts empty.
    pub(crate) async fn restore_cache_mount(self: &Arc<Self>, id: &str, dir: &std::path::Path) {
        let key = crate::remotecache::records::cache_mount_key(id);
        let Some(hit) = self.imports.lookup(&key) else { return };
        let empty = std::fs::read_dir(dir).map(|mut d| d.next().is_none()).unwrap_or(false);
        if !empty || !lock(&self.restored).insert(id.to_owned()) {
            return;
        }
        let this = self.clone();
        let dir = dir.to_path_buf();
        let id = id.to_owned();
        let res = tokio::task::spawn_blocking(move || -> Result<()> {
            for l in &hit.layers {
                if !this.solver.cache.content().has(&l.digest) {
                    this.imports.fetch(hit.importer, &l.digest, this.solver.cache.content())?;
                }
                let mut r = crate::content::layer::layer_reader_verified(this.solver.cache.content(), l)?;
                crate::snapshot::apply_layer(&dir, &mut r)?;
                std::io::copy(&mut r, &mut std::io::sink())
                    .map_err(|e| Error::io("verify cache mount layer", &dir, e))?;
            }
            Ok(())
        })
        .await;
        match res {
            Ok(Ok(())) => tracing::debug!(cache = %id, "cache mount restored from imported cache"),
            Ok(Err(e)) => self.emit(ProgressEvent::Warning { message: format!("restoring cache mount {id:?}: {e}") }),
            Err(e) => self.emit(ProgressEvent::Warning { message: format!("restoring cache mount {id:?}: {e}") }),
        }
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
                    let cache = self.solver.cache.clone();
                    let w = worker.clone();
                    let key = key.clone();
                    let moved = tokio::task::spawn_blocking(move || ops::merge::transfer(&cache, &r, &w, &key))
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
