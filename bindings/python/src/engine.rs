//! `Engine`: opens a root, solves (blocking with the GIL released, or as an asyncio awaitable),
//! reports disk usage, prunes and lists workers. Every solve carries its own `kiln::CancelToken`:
//! Ctrl-C during a blocking solve cancels it, waits until the solve returns (core has then killed
//! its containers and released its mounts, without waiting for other solves of the engine) and
//! raises KeyboardInterrupt; cancelling a `solve_async` task does the same before its
//! `CancelledError` propagates.

use crate::errors::to_pyerr;
use crate::graph::{image_config_from_py, local_dir, secrets_from_py, state_of, PyDefinition, PyState};
use crate::progress::{Progress, PyProgressEvent};
use crate::runtime::{runtime, KilnRuntime};
use kiln::solver::{ProgressEvent, ProgressSink};
use kiln::{Definition, EngineOptions, Error, ErrorKind, SnapshotterKind, SolveOptions, SolveResult};
use pyo3::exceptions::{PyRuntimeError, PyTypeError};
use pyo3::prelude::*;
use pyo3::types::PyDict;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long the waiting thread sleeps (GIL released) between checks for Ctrl-C.
const SIGNAL_POLL: Duration = Duration::from_millis(50);

fn kerr(py: Python<'_>, e: Error) -> PyErr {
    to_pyerr(py, &e)
}

/// The outcome of a solve.
#[pyclass(frozen, get_all, name = "SolveResult", module = "kiln._native")]
pub struct PySolveResult {
    /// Exporter metadata (e.g. `containerimage.digest`).
    exporter_response: BTreeMap<String, String>,
    /// Vertices whose result came from a cache.
    cached: usize,
    /// Vertices that executed.
    executed: usize,
}

impl From<SolveResult> for PySolveResult {
    fn from(r: SolveResult) -> Self {
        PySolveResult { exporter_response: r.exporter_response, cached: r.cached, executed: r.executed }
    }
}

#[pymethods]
impl PySolveResult {
    fn __repr__(&self) -> String {
        format!(
            "<kiln.SolveResult executed={} cached={} exporter_response={:?}>",
            self.executed, self.cached, self.exporter_response
        )
    }
}

/// A cache record as `Engine.disk_usage()` reports it.
#[pyclass(frozen, get_all, name = "UsageRecord", module = "kiln._native")]
pub struct PyUsageRecord {
    /// Snapshot id.
    id: String,
    /// Worker holding it.
    worker: String,
    /// The vertex that made it.
    description: String,
    /// Bytes of its own data.
    size: u64,
    /// Unix seconds of last use.
    last_used: u64,
    /// BuildKit's record type: `regular` (a step's snapshot) or `exec.cachemount` (a cache mount).
    record_type: String,
}

#[pymethods]
impl PyUsageRecord {
    fn __repr__(&self) -> String {
        format!("<kiln.UsageRecord {} {}B {:?}>", self.id, self.size, self.description)
    }
}

/// What `Engine.prune()` removed.
#[pyclass(frozen, get_all, name = "PruneReport", module = "kiln._native")]
pub struct PyPruneReport {
    /// Snapshots removed.
    removed: usize,
    /// Bytes freed.
    freed_bytes: u64,
}

#[pymethods]
impl PyPruneReport {
    fn __repr__(&self) -> String {
        format!("<kiln.PruneReport removed={} freed_bytes={}>", self.removed, self.freed_bytes)
    }
}

/// A worker as `Engine.workers()` reports it.
#[pyclass(frozen, get_all, name = "WorkerInfo", module = "kiln._native")]
pub struct PyWorkerInfo {
    /// Worker name.
    name: String,
    /// Its labels (`executor`, `snapshotter`, `hostname`, ...).
    labels: BTreeMap<String, String>,
}

#[pymethods]
impl PyWorkerInfo {
    fn __repr__(&self) -> String {
        format!("<kiln.WorkerInfo {}>", self.name)
    }
}

/// An open build engine on one root directory (exclusively locked while open). Use it as a
/// context manager, or call `close()`.
#[pyclass(frozen, name = "Engine", module = "kiln._native")]
pub struct PyEngine {
    inner: Mutex<Option<kiln::Engine>>,
    root: PathBuf,
}

/// Messages from the solve task to the thread waiting in `Engine.solve`.
enum Msg {
    Event(ProgressEvent),
    Done(kiln::Result<SolveResult>),
}

/// Locals, outputs, cache exports and cache imports of a solve, as Python passed them.
pub(crate) type SolveIo =
    (Option<BTreeMap<String, PathBuf>>, Option<Vec<String>>, Option<Vec<String>>, Option<Vec<String>>);

/// What a solve runs: a definition, or a built-in frontend with its options (BuildKit's
/// `Solve` with a frontend: `Engine::build_frontend`).
enum Job {
    Definition(Box<Definition>),
    Frontend(String, BTreeMap<String, String>),
}

impl Job {
    async fn run(self, engine: &kiln::Engine, opts: SolveOptions) -> kiln::Result<SolveResult> {
        match self {
            Job::Definition(def) => engine.solve(&def, opts).await,
            Job::Frontend(name, frontend_attrs) => {
                engine.build_frontend(&name, kiln::engine::BuildOptions { solve: opts, frontend_attrs }).await
            }
        }
    }
}

/// Everything a solve needs, converted from Python while the GIL is held.
struct Prepared {
    engine: kiln::Engine,
    job: Job,
    opts: SolveOptions,
}

/// The frontend and its options of a solve.
type FrontendArgs = (Option<String>, Option<BTreeMap<String, String>>);

/// `source_date_epoch`, `platform`, `ssh` (agent sockets by id) and `allow` (entitlements).
pub(crate) type MoreArgs<'a> = (Option<i64>, Option<&'a str>, Option<BTreeMap<String, PathBuf>>, Option<Vec<String>>);

impl PyEngine {
    pub(crate) fn engine(&self) -> PyResult<kiln::Engine> {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or_else(|| Python::attach(|py| kerr(py, Error::engine_closed())))
    }

    #[allow(clippy::too_many_arguments)]
    fn prepare(
        &self,
        py: Python<'_>,
        target: Option<&Bound<'_, PyAny>>,
        io: SolveIo,
        secrets: Option<&Bound<'_, PyDict>>,
        image_config: Option<&Bound<'_, PyAny>>,
        more: MoreArgs<'_>,
        (frontend, frontend_opts): FrontendArgs,
    ) -> PyResult<Prepared> {
        let engine = self.engine()?;
        let opts = solve_options(py, io, secrets, image_config, more)?;
        let target = target.filter(|t| !t.is_none());
        let target = match (target, frontend) {
            (Some(_), Some(_)) => {
                return Err(PyTypeError::new_err("solve() takes a target or frontend=, not both"));
            }
            (None, Some(f)) => {
                let job = Job::Frontend(f, frontend_opts.unwrap_or_default());
                return Ok(Prepared { engine, job, opts });
            }
            (_, None) if frontend_opts.is_some() => {
                return Err(PyTypeError::new_err("solve(): frontend_opts= needs frontend="));
            }
            (Some(t), None) => t,
            (None, None) => {
                return Err(PyTypeError::new_err(
                    "solve() takes a kiln.State, kiln.ExecState or kiln.Definition, or frontend=",
                ));
            }
        };
        let mut opts = opts;
        let def = if let Ok(d) = target.cast::<PyDefinition>() {
            d.get().inner.clone()
        } else {
            let state = state_of(target)
                .map_err(|_| PyTypeError::new_err("solve() takes a kiln.State, kiln.ExecState or kiln.Definition"))?;
            // An explicit `image_config` wins over the state's.
            if image_config.is_none_or(|c| c.is_none()) {
                opts.image_config = state.image_config();
            }
            state.to_definition().map_err(|e| kerr(py, e))?
        };
        Ok(Prepared { engine, job: Job::Definition(Box::new(def)), opts })
    }
}

/// The options `solve`, `solve_async`, `build` and `build_async` share (all but the target and
/// the progress), converted from Python while the GIL is held.
pub(crate) fn solve_options(
    py: Python<'_>,
    (locals, outputs, cache_exports, cache_imports): SolveIo,
    secrets: Option<&Bound<'_, PyDict>>,
    image_config: Option<&Bound<'_, PyAny>>,
    (source_date_epoch, platform, ssh, allow): MoreArgs<'_>,
) -> PyResult<SolveOptions> {
    let mut opts = SolveOptions { source_date_epoch, ..Default::default() };
    for (id, socket) in ssh.unwrap_or_default() {
        opts = opts.ssh(id, socket);
    }
    for name in allow.unwrap_or_default() {
        opts = opts.allow(name.parse().map_err(|e| kerr(py, e))?);
    }
    if let Some(p) = platform {
        opts = opts.platform(p).map_err(|e| kerr(py, e))?;
    }
    if let Some(c) = image_config.filter(|c| !c.is_none()) {
        opts.image_config = image_config_from_py(c)?;
    }
    for (name, dir) in locals.unwrap_or_default() {
        opts = opts.local(name, local_dir(dir));
    }
    for o in outputs.unwrap_or_default() {
        opts = opts.output(&o).map_err(|e| kerr(py, e))?;
    }
    for c in cache_exports.unwrap_or_default() {
        opts = opts.cache_export(&c).map_err(|e| kerr(py, e))?;
    }
    for c in cache_imports.unwrap_or_default() {
        opts = opts.cache_import(&c).map_err(|e| kerr(py, e))?;
    }
    if let Some(secrets) = secrets {
        opts.secrets = secrets_from_py(secrets)?;
    }
    Ok(opts)
}

/// The progress sink of an asyncio solve or build: a callable is called on the event loop of
/// `locals` (`call_soon_threadsafe`), a display writes to `sys.stderr`, `quiet` drops events.
pub(crate) fn async_progress_sink(
    py: Python<'_>,
    progress: Option<&Bound<'_, PyAny>>,
    locals: &pyo3_async_runtimes::TaskLocals,
) -> PyResult<ProgressSink> {
    Ok(match Progress::from_py(py, progress)? {
        Progress::Quiet => ProgressSink::none(),
        Progress::Callback(f) => {
            let event_loop = locals.event_loop(py).unbind();
            ProgressSink::new(move |e| {
                Python::attach(|py| {
                    let ev = PyProgressEvent::from_event(py, &e);
                    if let Err(err) = event_loop.call_method1(py, "call_soon_threadsafe", (&f, ev)) {
                        err.write_unraisable(py, None);
                    }
                })
            })
        }
        Progress::Display(p) => {
            let printer = Arc::new(Mutex::new(Progress::Display(p)));
            ProgressSink::new(move |e| {
                Python::attach(|py| {
                    let mut p = printer.lock().unwrap_or_else(|x| x.into_inner());
                    let _ = p.handle(py, &e);
                })
            })
        }
    })
}

/// Sets its watch channel to true when dropped: the solve task's future is gone.
struct DoneOnDrop(tokio::sync::watch::Sender<bool>);

impl Drop for DoneOnDrop {
    fn drop(&mut self) {
        self.0.send_replace(true);
    }
}

/// A solve started by `Engine.solve_async` (internal; `kiln._aio.run` drives it): `result()`
/// awaits the outcome, `cancel()` cancels the solve (its `CancelToken`) and returns once the solve
/// has returned: its containers are killed and its mounts and snapshots released (other solves of
/// the engine are not waited for).
#[pyclass(frozen, name = "_SolveTask", module = "kiln._native")]
pub struct PySolveTask {
    result: Mutex<Option<tokio::sync::oneshot::Receiver<kiln::Result<SolveResult>>>>,
    cancel: kiln::CancelToken,
    done: tokio::sync::watch::Receiver<bool>,
}

#[pymethods]
impl PySolveTask {
    /// Awaitable of the solve's `SolveResult` (raises the solve's `KilnError`). Once only.
    fn result<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let rx = self
            .result
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .ok_or_else(|| PyRuntimeError::new_err("the result of this solve was already awaited"))?;
        pyo3_async_runtimes::generic::future_into_py::<KilnRuntime, _, PySolveResult>(py, async move {
            // A dropped sender means the solve task was aborted.
            let r = rx.await.unwrap_or(Err(Error::Cancelled));
            r.map(PySolveResult::from).map_err(|e| Python::attach(|py| kerr(py, e)))
        })
    }

    /// Awaitable that cancels the solve and completes when the cancelled solve has cleaned up.
    fn cancel<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.cancel.cancel();
        let mut done = self.done.clone();
        pyo3_async_runtimes::generic::future_into_py::<KilnRuntime, _, ()>(py, async move {
            // The solve returns (Cancelled) only after its own tasks ran their cleanup.
            let _ = done.wait_for(|d| *d).await;
            Ok(())
        })
    }
}

#[pymethods]
impl PyEngine {
    /// Opens (creating if needed) `root` (default: `$XDG_DATA_HOME/kiln`, `/var/lib/kiln` as
    /// root, else `~/.local/share/kiln`). Raises `RootInUseError` if another engine holds it.
    #[new]
    #[pyo3(signature = (root=None, *, parallelism=None, runtime="runc", snapshotters=None))]
    fn new(
        py: Python<'_>,
        root: Option<PathBuf>,
        parallelism: Option<usize>,
        runtime: &str,
        snapshotters: Option<Vec<String>>,
    ) -> PyResult<PyEngine> {
        let mut opts = EngineOptions::new(root.map(local_dir).unwrap_or_else(EngineOptions::default_root));
        if let Some(p) = parallelism {
            opts.parallelism = p.max(1);
        }
        opts.runtime = runtime.to_owned();
        if let Some(s) = snapshotters {
            opts.snapshotters =
                s.iter().map(|k| k.parse::<SnapshotterKind>()).collect::<kiln::Result<_>>().map_err(|e| kerr(py, e))?;
        }
        let rt = crate::runtime::runtime().map_err(|e| PyRuntimeError::new_err(format!("tokio runtime: {e}")))?;
        let engine = py
            .detach(|| {
                let _guard = rt.enter();
                kiln::Engine::open(opts)
            })
            .map_err(|e| kerr(py, e))?;
        let root = engine.root().to_path_buf();
        Ok(PyEngine { inner: Mutex::new(Some(engine)), root })
    }

    /// Connects to a daemon that speaks BuildKit's API at `addr` (`unix:///path/to.sock` or
    /// `tcp://host:port`): `kiln serve` or a BuildKit daemon. The returned engine has this
    /// class's surface — `solve` (definitions and `frontend="dockerfile.v0"`), `disk_usage`,
    /// `prune`, `workers` — with locals and secrets read here and `local`/`tar`/`oci` outputs
    /// written here. TLS (tcp only): `ca_cert`, `cert`, `key` (PEM files), `server_name`.
    /// Raises `KilnError` when the daemon cannot be reached.
    #[staticmethod]
    #[pyo3(signature = (addr, *, ca_cert=None, cert=None, key=None, server_name=None))]
    fn connect(
        py: Python<'_>,
        addr: &str,
        ca_cert: Option<PathBuf>,
        cert: Option<PathBuf>,
        key: Option<PathBuf>,
        server_name: Option<String>,
    ) -> PyResult<PyEngine> {
        let tls = kiln::client::TlsOptions { ca_cert, cert, key, server_name };
        let opts = kiln::client::ConnectOptions { tls };
        let rt = crate::runtime::runtime().map_err(|e| PyRuntimeError::new_err(format!("tokio runtime: {e}")))?;
        let engine = py.detach(|| rt.block_on(kiln::Engine::connect(addr, &opts))).map_err(|e| kerr(py, e))?;
        Ok(PyEngine { inner: Mutex::new(Some(engine)), root: PathBuf::new() })
    }

    /// The root directory (`None` for an engine connected to a daemon).
    #[getter]
    fn root(&self) -> Option<PathBuf> {
        (!self.root.as_os_str().is_empty()).then(|| self.root.clone())
    }

    /// The daemon's address for a connected engine (`None` for an embedded one).
    #[getter]
    fn address(&self) -> PyResult<Option<String>> {
        Ok(self.engine()?.address().map(str::to_owned))
    }

    /// True after `close()`.
    #[getter]
    fn closed(&self) -> bool {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).is_none()
    }

    /// Releases the engine (the root lock goes once running solves finish).
    fn close(&self) {
        let engine = self.inner.lock().unwrap_or_else(|p| p.into_inner()).take();
        drop(engine);
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    #[pyo3(signature = (*_args))]
    fn __exit__(&self, _args: &Bound<'_, pyo3::types::PyTuple>) -> bool {
        self.close();
        false
    }

    /// Solves `target` (a State, ExecState or Definition) and runs the exporters, blocking with
    /// the GIL released. `progress` is a display mode (`auto`, the default: a live view on a
    /// terminal, plain lines otherwise; `tty`, `plain`, `rawjson`, `quiet`) or a callable receiving `ProgressEvent`s on this thread (an exception it
    /// raises cancels the solve and propagates). Ctrl-C cancels the solve cleanly. With
    /// `frontend="dockerfile.v0"` and no target, builds a Dockerfile as BuildKit's frontend does
    /// (`frontend_opts` under BuildKit's names: `filename`, `target`, `build-arg:NAME`, ...; the
    /// Dockerfile from the local `dockerfile`, the context from the local `context`). `ssh` maps
    /// agent ids to agent sockets for `ssh` mounts (`RUN --mount=type=ssh`; id `default` unless
    /// the mount names one), `allow` grants entitlements (`network.host`, `security.insecure`).
    #[pyo3(signature = (target=None, *, locals=None, outputs=None, cache_exports=None, cache_imports=None,
                        secrets=None, image_config=None, progress=None, source_date_epoch=None,
                        platform=None, ssh=None, allow=None, frontend=None, frontend_opts=None))]
    #[allow(clippy::too_many_arguments)]
    fn solve(
        &self,
        py: Python<'_>,
        target: Option<&Bound<'_, PyAny>>,
        locals: Option<BTreeMap<String, PathBuf>>,
        outputs: Option<Vec<String>>,
        cache_exports: Option<Vec<String>>,
        cache_imports: Option<Vec<String>>,
        secrets: Option<&Bound<'_, PyDict>>,
        image_config: Option<&Bound<'_, PyAny>>,
        progress: Option<&Bound<'_, PyAny>>,
        source_date_epoch: Option<i64>,
        platform: Option<&str>,
        ssh: Option<BTreeMap<String, PathBuf>>,
        allow: Option<Vec<String>>,
        frontend: Option<String>,
        frontend_opts: Option<BTreeMap<String, String>>,
    ) -> PyResult<PySolveResult> {
        let Prepared { engine, job, mut opts } = self.prepare(
            py,
            target,
            (locals, outputs, cache_exports, cache_imports),
            secrets,
            image_config,
            (source_date_epoch, platform, ssh, allow),
            (frontend, frontend_opts),
        )?;
        let mut progress = Progress::from_py(py, progress)?;
        let rt = runtime().map_err(|e| PyRuntimeError::new_err(format!("tokio runtime: {e}")))?;
        let (tx, rx) = mpsc::channel::<Msg>();
        // Quiet: no event crosses to this thread at all (a cached 1,000-step solve would
        // otherwise wake it 1,000 times for nothing).
        if !matches!(progress, Progress::Quiet) {
            let events = tx.clone();
            opts.progress = ProgressSink::new(move |e| drop(events.send(Msg::Event(e))));
        }
        let cancel = kiln::CancelToken::new();
        opts.cancel = Some(cancel.clone());
        let solver = engine;
        let task = rt.spawn(async move {
            let r = job.run(&solver, opts).await;
            // The engine handle goes before the result: once `solve` returns, closing the engine
            // releases the root at once (another engine may open it right away).
            drop(solver);
            let _ = tx.send(Msg::Done(r));
        });
        // Cancelling trips this solve's token and waits for the solve task to end: the solve
        // returns Cancelled only once its own vertex tasks ran their cleanup (containers killed,
        // mounts and snapshots released); other solves on the engine are not waited for.
        let mut task = Some(task);
        let mut abort = |py: Python<'_>| {
            if let Some(t) = task.take() {
                cancel.cancel();
                py.detach(|| {
                    rt.block_on(async {
                        let _ = t.await;
                    })
                });
            }
        };
        let mut rx = rx;
        loop {
            // The receiver is moved through the detached closure: `Receiver` is Send, not Sync.
            let (back, msg) = py.detach(move || {
                let m = rx.recv_timeout(SIGNAL_POLL);
                (rx, m)
            });
            rx = back;
            match msg {
                Ok(Msg::Event(e)) => {
                    if let Err(err) = progress.handle(py, &e) {
                        abort(py);
                        progress.finish();
                        return Err(err);
                    }
                }
                Ok(Msg::Done(r)) => {
                    while let Ok(Msg::Event(e)) = rx.try_recv() {
                        progress.handle(py, &e)?;
                    }
                    progress.finish();
                    return r.map(PySolveResult::from).map_err(|e| kerr(py, e));
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    progress.finish();
                    return Err(kerr(py, Error::new(ErrorKind::Internal, "the solve task ended without a result")));
                }
            }
            if let Err(interrupt) = py.check_signals() {
                abort(py);
                progress.finish();
                return Err(interrupt);
            }
        }
    }

    /// `solve` as an asyncio coroutine (the solve starts right away). A callable `progress` is
    /// called on the event loop (`call_soon_threadsafe`). Cancelling the awaiting task cancels the
    /// solve; its `CancelledError` propagates once the containers are killed and the mounts gone.
    #[pyo3(signature = (target=None, *, locals=None, outputs=None, cache_exports=None, cache_imports=None,
                        secrets=None, image_config=None, progress=None, source_date_epoch=None,
                        platform=None, ssh=None, allow=None, frontend=None, frontend_opts=None))]
    #[allow(clippy::too_many_arguments)]
    fn solve_async<'py>(
        &self,
        py: Python<'py>,
        target: Option<&Bound<'py, PyAny>>,
        locals: Option<BTreeMap<String, PathBuf>>,
        outputs: Option<Vec<String>>,
        cache_exports: Option<Vec<String>>,
        cache_imports: Option<Vec<String>>,
        secrets: Option<&Bound<'py, PyDict>>,
        image_config: Option<&Bound<'py, PyAny>>,
        progress: Option<&Bound<'py, PyAny>>,
        source_date_epoch: Option<i64>,
        platform: Option<&str>,
        ssh: Option<BTreeMap<String, PathBuf>>,
        allow: Option<Vec<String>>,
        frontend: Option<String>,
        frontend_opts: Option<BTreeMap<String, String>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let Prepared { engine, job, mut opts } = self.prepare(
            py,
            target,
            (locals, outputs, cache_exports, cache_imports),
            secrets,
            image_config,
            (source_date_epoch, platform, ssh, allow),
            (frontend, frontend_opts),
        )?;
        let rt = runtime().map_err(|e| PyRuntimeError::new_err(format!("tokio runtime: {e}")))?;
        let locals = pyo3_async_runtimes::generic::get_current_locals::<KilnRuntime>(py)?;
        opts.progress = async_progress_sink(py, progress, &locals)?;
        // The solve runs as its own task so that cancelling the awaiting Python task does not
        // just drop a waiter: `kiln._aio.run` then calls `_SolveTask.cancel()`, which cancels the
        // solve's token and waits for it to return (after its cleanup) before the
        // CancelledError propagates.
        let cancel = kiln::CancelToken::new();
        opts.cancel = Some(cancel.clone());
        let (result_tx, result_rx) = tokio::sync::oneshot::channel();
        let (done_tx, done_rx) = tokio::sync::watch::channel(false);
        let solver = engine;
        let task = rt.spawn(async move {
            // Declared first, dropped last: `done` turns true once the solve future and the
            // engine handle are gone.
            let _done = DoneOnDrop(done_tx);
            let solver = solver;
            let r = job.run(&solver, opts).await;
            // As in `solve`: release the engine handle before handing out the result.
            drop(solver);
            let _ = result_tx.send(r);
        });
        // The task runs to completion even when cancelled (the token makes it return early).
        drop(task);
        let task = PySolveTask { result: Mutex::new(Some(result_rx)), cancel, done: done_rx };
        py.import("kiln._aio")?.call_method1("run", (task,))
    }

    /// Runs a client-side build: `function(ctx)` gets a `BuildContext`, solves graphs with
    /// `ctx.solve(...)` into `Ref`s, reads files from them and decides what to build next, then
    /// returns the result (a `State`, `ExecState`, `Definition` or `Ref`; or None: the result
    /// set with `ctx.set_result(...)`, else the empty filesystem), which goes to `outputs` and
    /// `cache_exports` as `solve` would send it. Takes `solve`'s options (they apply to every
    /// inner solve; `cache_imports` too) and `frontend_opts` (read as `ctx.frontend_opts`; a
    /// `cache-imports` entry in BuildKit's JSON form adds cache imports).
    ///
    /// A plain `function` runs on this thread; its `ctx`/`Ref` calls block with the GIL released.
    /// A coroutine function runs on a new asyncio loop on this thread (not allowed while a loop
    /// runs here: use `build_async`) and awaits the `*_async` variants. An exception raised by
    /// `function` fails the build and is raised here, the same object, once the build cleaned up
    /// (every ref released: refs kept past the build raise `UnsupportedError`). A callable
    /// `progress` is called on a kiln thread, in order; an exception it raises cancels the build
    /// and is raised here. Ctrl-C cancels the build cleanly.
    #[pyo3(signature = (function, *, locals=None, outputs=None, cache_exports=None, cache_imports=None,
                        secrets=None, image_config=None, progress=None, source_date_epoch=None,
                        platform=None, ssh=None, allow=None, frontend_opts=None))]
    #[allow(clippy::too_many_arguments)]
    fn build<'py>(
        &self,
        py: Python<'py>,
        function: &Bound<'py, PyAny>,
        locals: Option<BTreeMap<String, PathBuf>>,
        outputs: Option<Vec<String>>,
        cache_exports: Option<Vec<String>>,
        cache_imports: Option<Vec<String>>,
        secrets: Option<&Bound<'py, PyDict>>,
        image_config: Option<&Bound<'py, PyAny>>,
        progress: Option<&Bound<'py, PyAny>>,
        source_date_epoch: Option<i64>,
        platform: Option<&str>,
        ssh: Option<BTreeMap<String, PathBuf>>,
        allow: Option<Vec<String>>,
        frontend_opts: Option<BTreeMap<String, String>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let task = crate::build::start(
            py,
            self,
            (locals, outputs, cache_exports, cache_imports),
            secrets,
            image_config,
            progress,
            (source_date_epoch, platform, ssh, allow),
            frontend_opts,
            false,
        )?;
        py.import("kiln._build")?.call_method1("run", (task, function))
    }

    /// `build` as an asyncio coroutine (the build starts right away). A coroutine `function` runs
    /// on the running loop and awaits the `*_async` methods of `ctx` and its refs; a plain one
    /// runs in a worker thread (`asyncio.to_thread`) with the blocking methods. A callable
    /// `progress` is called on the event loop. Cancelling the awaiting task cancels the build; its
    /// `CancelledError` propagates once the build has cleaned up.
    #[pyo3(signature = (function, *, locals=None, outputs=None, cache_exports=None, cache_imports=None,
                        secrets=None, image_config=None, progress=None, source_date_epoch=None,
                        platform=None, ssh=None, allow=None, frontend_opts=None))]
    #[allow(clippy::too_many_arguments)]
    fn build_async<'py>(
        &self,
        py: Python<'py>,
        function: &Bound<'py, PyAny>,
        locals: Option<BTreeMap<String, PathBuf>>,
        outputs: Option<Vec<String>>,
        cache_exports: Option<Vec<String>>,
        cache_imports: Option<Vec<String>>,
        secrets: Option<&Bound<'py, PyDict>>,
        image_config: Option<&Bound<'py, PyAny>>,
        progress: Option<&Bound<'py, PyAny>>,
        source_date_epoch: Option<i64>,
        platform: Option<&str>,
        ssh: Option<BTreeMap<String, PathBuf>>,
        allow: Option<Vec<String>>,
        frontend_opts: Option<BTreeMap<String, String>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let task = crate::build::start(
            py,
            self,
            (locals, outputs, cache_exports, cache_imports),
            secrets,
            image_config,
            progress,
            (source_date_epoch, platform, ssh, allow),
            frontend_opts,
            true,
        )?;
        py.import("kiln._build")?.call_method1("run_async", (task, function))
    }

    /// Cache records and their sizes.
    fn disk_usage(&self, py: Python<'_>) -> PyResult<Vec<PyUsageRecord>> {
        let engine = self.engine()?;
        let rt = runtime().map_err(|e| PyRuntimeError::new_err(format!("tokio runtime: {e}")))?;
        let recs = py.detach(|| rt.block_on(engine.disk_usage())).map_err(|e| kerr(py, e))?;
        Ok(recs
            .into_iter()
            .map(|r| PyUsageRecord {
                id: r.id,
                worker: r.worker,
                description: r.description,
                size: r.size,
                last_used: r.last_used,
                record_type: r.record_type,
            })
            .collect())
    }

    /// The image `reference` (a registry image) for `platform`, resolved through this engine (its
    /// registry options and `~/.docker/config.json` credentials; loopback registries over plain
    /// http): the state carries the image's config (env, working dir, user, entrypoint, cmd,
    /// labels, ports, volumes, ...), later runs use it and image exports keep it. Blocks with the
    /// GIL released.
    #[pyo3(signature = (reference, **options))]
    fn image(&self, py: Python<'_>, reference: &str, options: Option<&Bound<'_, PyDict>>) -> PyResult<PyState> {
        let engine = self.engine()?;
        let o = kiln::graph::builder::image_options(crate::opts::open(options))?;
        let rt = runtime().map_err(|e| PyRuntimeError::new_err(format!("tokio runtime: {e}")))?;
        let st = py.detach(|| rt.block_on(engine.image(reference, &o))).map_err(|e| kerr(py, e))?;
        Ok(crate::graph::wrap(st))
    }

    /// The Dockerfile of the directory `context` converted into its target stage's State, base
    /// images resolved through this engine (like `Engine.image`): `kiln.dockerfile` with
    /// registry and OCI-layout bases. Blocks with the GIL released.
    #[pyo3(signature = (context, **options))]
    fn dockerfile(&self, py: Python<'_>, context: PathBuf, options: Option<&Bound<'_, PyDict>>) -> PyResult<PyState> {
        let engine = self.engine()?;
        let o = kiln::graph::builder::dockerfile_options(crate::opts::open(options))?;
        let context = std::path::absolute(&context).unwrap_or(context);
        let rt = runtime().map_err(|e| PyRuntimeError::new_err(format!("tokio runtime: {e}")))?;
        let st = py.detach(|| rt.block_on(engine.dockerfile(context, &o))).map_err(|e| kerr(py, e))?;
        Ok(crate::graph::wrap(st))
    }

    /// The image of the OCI layout at `path` (by `tag`, default `latest`, or `digest`) resolved
    /// through this engine: the state carries the image's config, like `Engine.image`.
    #[pyo3(signature = (path, **options))]
    fn oci_layout(&self, py: Python<'_>, path: PathBuf, options: Option<&Bound<'_, PyDict>>) -> PyResult<PyState> {
        let engine = self.engine()?;
        let o = kiln::graph::builder::oci_layout_options(crate::opts::open(options))?;
        let r = o.reference().map_err(|e| kerr(py, e))?;
        let path = std::path::absolute(&path).unwrap_or(path);
        let rt = runtime().map_err(|e| PyRuntimeError::new_err(format!("tokio runtime: {e}")))?;
        let st = py.detach(|| rt.block_on(engine.oci_layout(path, r, &o.image_options()))).map_err(|e| kerr(py, e))?;
        Ok(crate::graph::wrap(st))
    }

    /// Removes cache records, least recently used first, until at most `keep_bytes` remain
    /// (`all=True` removes everything).
    #[pyo3(signature = (*, keep_bytes=0, all=false))]
    fn prune(&self, py: Python<'_>, keep_bytes: u64, all: bool) -> PyResult<PyPruneReport> {
        let engine = self.engine()?;
        let rt = runtime().map_err(|e| PyRuntimeError::new_err(format!("tokio runtime: {e}")))?;
        let r = py.detach(|| rt.block_on(engine.prune(keep_bytes, all))).map_err(|e| kerr(py, e))?;
        Ok(PyPruneReport { removed: r.removed, freed_bytes: r.freed_bytes })
    }

    /// The workers, default first.
    fn workers(&self) -> PyResult<Vec<PyWorkerInfo>> {
        Ok(self.engine()?.workers().into_iter().map(|w| PyWorkerInfo { name: w.name, labels: w.labels }).collect())
    }

    /// Container ids the runtime still knows about (a diagnostic for leak checks).
    fn running_containers(&self, py: Python<'_>) -> PyResult<Vec<String>> {
        self.engine()?.running_containers().map_err(|e| kerr(py, e))
    }

    fn __repr__(&self) -> String {
        format!("<kiln.Engine root={:?}{}>", self.root, if self.closed() { " closed" } else { "" })
    }
}
