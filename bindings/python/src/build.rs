//! Client-side builds for Python (`Engine.build`, `Engine.build_async`). The core's
//! `kiln::Engine::build` runs on the binding's tokio runtime; its function hands the
//! `BuildContext` over to Python and awaits Python's answer (what the user's function returned,
//! or that it raised). `kiln._build` calls the user's function (on the calling thread, or on the
//! asyncio loop) and, when it raised, raises that same exception once the build has cleaned up.
//! `BuildContext`, `Ref` and `DirEntry` wrap the core's types: blocking calls release the GIL
//! (Ctrl-C cancels the build), `*_async` calls are asyncio awaitables. No build logic lives here:
//! the set-once result, reads, confinement and cleanup are the core's.

use crate::engine::{async_progress_sink, solve_options, PyEngine, PySolveResult, SolveIo};
use crate::errors::to_pyerr;
use crate::graph::{image_config_from_py, state_of, PyDefinition};
use crate::progress::Progress;
use crate::runtime::{runtime, KilnRuntime};
use kiln::engine::{BuildContext, BuildOptions, BuildOutput, FileStat, Ref, SolveRequest};
use kiln::graph::ImageConfig;
use kiln::solver::{ProgressEvent, ProgressSink};
use kiln::{CancelToken, Definition, Error, ErrorKind, SolveResult};
use pyo3::exceptions::{PyRuntimeError, PyTypeError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{oneshot, watch};

/// How long a blocked thread sleeps (GIL released) between checks for Ctrl-C.
const SIGNAL_POLL: Duration = Duration::from_millis(50);

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn rt() -> PyResult<&'static tokio::runtime::Runtime> {
    runtime().map_err(|e| PyRuntimeError::new_err(format!("tokio runtime: {e}")))
}

fn internal(msg: &str) -> Error {
    Error::new(ErrorKind::Internal, msg)
}

/// What a build's context and its refs share.
struct Shared {
    /// Cancels the whole build (Ctrl-C in a blocking call, a failing progress callback).
    cancel: CancelToken,
    /// `image_config=` was given to the build: it wins over the config of a returned State.
    explicit_image_config: bool,
}

impl Shared {
    /// The image config of a result made from `state`: the state's own, unless the build was
    /// given one (then `None`: the core uses the build's).
    fn config_of(&self, state: &kiln::State) -> Option<ImageConfig> {
        (!self.explicit_image_config).then(|| state.image_config())
    }
}

/// Runs `fut` on the runtime and blocks until it is done, the GIL released; Ctrl-C (checked
/// every [`SIGNAL_POLL`]) cancels the whole build and raises `KeyboardInterrupt` (the build's
/// cleanup is waited for when `Engine.build` returns).
fn block<T: Send + 'static>(
    py: Python<'_>,
    cancel: &CancelToken,
    fut: impl Future<Output = kiln::Result<T>> + Send + 'static,
) -> PyResult<T> {
    let (tx, mut rx) = mpsc::channel();
    rt()?.spawn(async move {
        let _ = tx.send(fut.await);
    });
    loop {
        // The receiver is moved through the detached closure: `Receiver` is Send, not Sync.
        let (back, r) = py.detach(move || {
            let r = rx.recv_timeout(SIGNAL_POLL);
            (rx, r)
        });
        rx = back;
        match r {
            Ok(v) => return v.map_err(|e| to_pyerr(py, &e)),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => {
                return Err(to_pyerr(py, &internal("a build task ended without a result")))
            }
        }
        if let Err(interrupt) = py.check_signals() {
            cancel.cancel();
            return Err(interrupt);
        }
    }
}

/// `fut` as an asyncio awaitable on the running loop.
fn awaitable<'py, T>(
    py: Python<'py>,
    fut: impl Future<Output = kiln::Result<T>> + Send + 'static,
) -> PyResult<Bound<'py, PyAny>>
where
    T: for<'a> IntoPyObject<'a> + Send + 'static,
{
    pyo3_async_runtimes::generic::future_into_py::<KilnRuntime, _, T>(py, async move {
        fut.await.map_err(|e| Python::attach(|py| to_pyerr(py, &e)))
    })
}

/// A `Definition` and the image config a result made of it carries, from a State, ExecState or
/// Definition (`what` names the call in the TypeError).
fn definition_of(
    py: Python<'_>,
    shared: &Shared,
    obj: &Bound<'_, PyAny>,
    what: &str,
) -> PyResult<(Definition, Option<ImageConfig>)> {
    if let Ok(d) = obj.cast::<PyDefinition>() {
        return Ok((d.get().inner.clone(), None));
    }
    let state = state_of(obj).map_err(|_| {
        PyTypeError::new_err(format!(
            "{what} takes a kiln.State, kiln.ExecState or kiln.Definition, not {}",
            type_name(obj)
        ))
    })?;
    let def = state.to_definition().map_err(|e| to_pyerr(py, &e))?;
    Ok((def, shared.config_of(&state)))
}

fn type_name(obj: &Bound<'_, PyAny>) -> String {
    obj.get_type().name().map(|n| n.to_string()).unwrap_or_else(|_| "?".into())
}

/// What Python answers the core build's function.
enum Answer {
    /// The function returned a Ref (`Some`) or None.
    Output(Box<Option<BuildOutput>>),
    /// The function returned a State or Definition: solved into the result.
    Solve(Box<(Definition, Option<ImageConfig>)>),
    /// The function raised (Python keeps the exception and raises it after the build).
    Failed,
}

/// The progress of a blocking build: events cross from the engine to one delivery thread that
/// hands them to the display or the callable (the engine never waits for the GIL). A callable
/// that raises cancels the build; `Engine.build` raises its exception.
struct Delivery {
    tx: mpsc::Sender<Option<ProgressEvent>>,
    thread: Option<std::thread::JoinHandle<()>>,
    error: Arc<Mutex<Option<PyErr>>>,
}

impl Delivery {
    fn start(progress: Progress, cancel: CancelToken) -> PyResult<(ProgressSink, Option<Delivery>)> {
        if matches!(progress, Progress::Quiet) {
            return Ok((ProgressSink::none(), None));
        }
        let (tx, rx) = mpsc::channel::<Option<ProgressEvent>>();
        let error = Arc::new(Mutex::new(None));
        let err = error.clone();
        let thread = std::thread::Builder::new()
            .name("kiln-py-progress".into())
            .spawn(move || deliver(progress, rx, err, cancel))
            .map_err(|e| PyRuntimeError::new_err(format!("progress thread: {e}")))?;
        let events = tx.clone();
        let sink = ProgressSink::new(move |e| drop(events.send(Some(e))));
        Ok((sink, Some(Delivery { tx, thread: Some(thread), error })))
    }

    /// Delivers the events sent so far, then stops the thread (the GIL released while waiting).
    fn finish(&mut self, py: Python<'_>) {
        let _ = self.tx.send(None);
        if let Some(t) = self.thread.take() {
            py.detach(|| drop(t.join()));
        }
    }
}

impl Drop for Delivery {
    fn drop(&mut self) {
        // Without a join: the thread ends on its own once it reads this.
        let _ = self.tx.send(None);
    }
}

/// The delivery thread: each batch of waiting events is handled under one GIL acquisition.
fn deliver(
    mut progress: Progress,
    rx: mpsc::Receiver<Option<ProgressEvent>>,
    error: Arc<Mutex<Option<PyErr>>>,
    cancel: CancelToken,
) {
    let mut open = true;
    while open {
        let mut batch = Vec::new();
        match rx.recv() {
            Ok(Some(e)) => batch.push(e),
            Ok(None) | Err(_) => open = false,
        }
        while open {
            match rx.try_recv() {
                Ok(Some(e)) => batch.push(e),
                Ok(None) | Err(mpsc::TryRecvError::Disconnected) => open = false,
                Err(mpsc::TryRecvError::Empty) => break,
            }
        }
        Python::attach(|py| {
            for e in &batch {
                let mut slot = lock(&error);
                if slot.is_some() {
                    break;
                }
                if let Err(err) = progress.handle(py, e) {
                    *slot = Some(err);
                    cancel.cancel();
                }
            }
            if !open {
                progress.finish();
            }
        });
    }
}

/// Sets its watch channel to true when dropped: the build task's future is gone.
struct DoneOnDrop(watch::Sender<bool>);

impl Drop for DoneOnDrop {
    fn drop(&mut self) {
        self.0.send_replace(true);
    }
}

/// A build started by `Engine.build` / `Engine.build_async` (internal; `kiln._build` drives
/// it): hands out the context, takes the function's answer, and returns or awaits the outcome.
#[pyclass(frozen, name = "_BuildTask", module = "kiln._native")]
pub struct PyBuildTask {
    started: Mutex<Option<oneshot::Receiver<BuildContext>>>,
    answer: Mutex<Option<oneshot::Sender<Answer>>>,
    result: Mutex<Option<oneshot::Receiver<kiln::Result<SolveResult>>>>,
    done: watch::Receiver<bool>,
    delivery: Mutex<Option<Delivery>>,
    /// The exception a progress callable raised (it cancelled the build).
    progress_error: Mutex<Option<PyErr>>,
    shared: Arc<Shared>,
}

impl PyBuildTask {
    fn context(&self, ctx: BuildContext) -> PyBuildContext {
        PyBuildContext { ctx, shared: self.shared.clone() }
    }

    fn send_answer(&self, a: Answer) {
        if let Some(tx) = lock(&self.answer).take() {
            // The build may be over already (cancelled): then nobody listens.
            let _ = tx.send(a);
        }
    }

    /// Blocks (GIL released) until the build task has returned, its cleanup done.
    fn wait_done(&self, py: Python<'_>) -> PyResult<()> {
        let mut done = self.done.clone();
        let rt = rt()?;
        py.detach(|| rt.block_on(async move { drop(done.wait_for(|d| *d).await) }));
        Ok(())
    }

    /// Ends progress delivery (the build is over), keeping a callable's exception.
    fn end_delivery(&self, py: Python<'_>) {
        let d = lock(&self.delivery).take();
        if let Some(mut d) = d {
            d.finish(py);
            if let Some(e) = lock(&d.error).take() {
                *lock(&self.progress_error) = Some(e);
            }
        }
    }

    /// Cancels the build, waits for its cleanup and ends progress delivery (Ctrl-C).
    fn abort(&self, py: Python<'_>) -> PyResult<()> {
        self.shared.cancel.cancel();
        self.send_answer(Answer::Failed);
        self.wait_done(py)?;
        self.end_delivery(py);
        Ok(())
    }
}

#[pymethods]
impl PyBuildTask {
    /// Blocks until the build calls its function: its `BuildContext`, or None when the build
    /// ended before (an option or a cancellation failed it; `wait()` says why).
    fn started_wait(&self, py: Python<'_>) -> PyResult<Option<PyBuildContext>> {
        let Some(rx) = lock(&self.started).take() else {
            return Ok(None);
        };
        let r = block(py, &self.shared.cancel, async move { Ok(rx.await.ok()) });
        match r {
            Ok(ctx) => Ok(ctx.map(|c| self.context(c))),
            Err(interrupt) => {
                self.abort(py)?;
                Err(interrupt)
            }
        }
    }

    /// Awaitable of `started_wait()`.
    fn started<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        let me = slf.clone().unbind();
        let rx = lock(&slf.get().started).take();
        pyo3_async_runtimes::generic::future_into_py::<KilnRuntime, _, Option<PyBuildContext>>(py, async move {
            let ctx = match rx {
                Some(rx) => rx.await.ok(),
                None => None,
            };
            Ok(ctx.map(|c| me.get().context(c)))
        })
    }

    /// Hands the function's return value to the build: a Ref, a State, ExecState or Definition
    /// (solved into the result), or None. Raises TypeError for anything else.
    fn finish(&self, py: Python<'_>, value: &Bound<'_, PyAny>) -> PyResult<()> {
        let answer = if value.is_none() {
            Answer::Output(Box::new(None))
        } else if let Ok(r) = value.cast::<PyRef>() {
            Answer::Output(Box::new(Some(BuildOutput::of(r.get().inner.clone()))))
        } else {
            let (def, config) =
                definition_of(py, &self.shared, value, "a build function's return value").map_err(|_| {
                    PyTypeError::new_err(format!(
                        "a build function returns a kiln.State, ExecState, Definition, Ref or None, not {}",
                        type_name(value)
                    ))
                })?;
            Answer::Solve(Box::new((def, config)))
        };
        self.send_answer(answer);
        Ok(())
    }

    /// Tells the build its function raised (the build fails; Python raises the exception).
    fn fail(&self) {
        self.send_answer(Answer::Failed);
    }

    /// Blocks (GIL released) until the build returned and cleaned up: its `SolveResult`, or its
    /// `KilnError`. Ctrl-C cancels it and raises KeyboardInterrupt once cleaned up.
    fn wait(&self, py: Python<'_>) -> PyResult<PySolveResult> {
        let rx =
            lock(&self.result).take().ok_or_else(|| PyRuntimeError::new_err("this build was already waited for"))?;
        let r = block(py, &self.shared.cancel, async move { Ok(rx.await.unwrap_or(Err(Error::Cancelled))) });
        match r {
            Ok(r) => {
                // The result is sent before the task's guards drop: wait for them too.
                self.wait_done(py)?;
                self.end_delivery(py);
                r.map(PySolveResult::from).map_err(|e| to_pyerr(py, &e))
            }
            Err(interrupt) => {
                self.abort(py)?;
                Err(interrupt)
            }
        }
    }

    /// Awaitable of the build's `SolveResult` (raises its `KilnError`). Once only.
    fn result<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let rx = lock(&self.result).take().ok_or_else(|| PyRuntimeError::new_err("this build was already awaited"))?;
        let mut done = self.done.clone();
        awaitable(py, async move {
            let r = rx.await.unwrap_or(Err(Error::Cancelled));
            let _ = done.wait_for(|d| *d).await;
            r.map(PySolveResult::from)
        })
    }

    /// Awaitable that cancels the build and completes once it has cleaned up.
    fn cancel<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.shared.cancel.cancel();
        self.send_answer(Answer::Failed);
        let mut done = self.done.clone();
        pyo3_async_runtimes::generic::future_into_py::<KilnRuntime, _, ()>(py, async move {
            let _ = done.wait_for(|d| *d).await;
            Ok(())
        })
    }

    /// The exception a progress callable raised (it cancelled the build), once the build ended.
    fn progress_error(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        lock(&self.progress_error).take().map(|e| e.into_value(py).into_any())
    }
}

/// Starts a build on `engine`: the options converted, the core build spawned, progress wired
/// (`asyncio`: as `solve_async` does; otherwise through a delivery thread).
#[allow(clippy::too_many_arguments)]
pub(crate) fn start(
    py: Python<'_>,
    engine: &PyEngine,
    io: SolveIo,
    secrets: Option<&Bound<'_, PyDict>>,
    image_config: Option<&Bound<'_, PyAny>>,
    progress: Option<&Bound<'_, PyAny>>,
    more: crate::engine::MoreArgs<'_>,
    frontend_opts: Option<BTreeMap<String, String>>,
    asyncio: bool,
) -> PyResult<PyBuildTask> {
    let engine = engine.engine()?;
    let mut opts = solve_options(py, io, secrets, image_config, more)?;
    let cancel = CancelToken::new();
    let delivery = if asyncio {
        let locals = pyo3_async_runtimes::generic::get_current_locals::<KilnRuntime>(py)?;
        opts.progress = async_progress_sink(py, progress, &locals)?;
        None
    } else {
        let (sink, delivery) = Delivery::start(Progress::from_py(py, progress)?, cancel.clone())?;
        opts.progress = sink;
        delivery
    };
    opts.cancel = Some(cancel.clone());
    let mut build_opts = BuildOptions::new(opts);
    build_opts.frontend_attrs = frontend_opts.unwrap_or_default();
    let (started_tx, started_rx) = oneshot::channel::<BuildContext>();
    let (answer_tx, answer_rx) = oneshot::channel::<Answer>();
    let (result_tx, result_rx) = oneshot::channel();
    let (done_tx, done_rx) = watch::channel(false);
    rt()?.spawn(async move {
        // Declared first, dropped last: `done` turns true once the build and the engine handle
        // are gone.
        let _done = DoneOnDrop(done_tx);
        let engine = engine;
        let r = engine
            .build(build_opts, move |ctx: BuildContext| async move {
                let _ = started_tx.send(ctx.clone());
                match answer_rx.await {
                    Ok(Answer::Output(out)) => Ok(*out),
                    Ok(Answer::Solve(solve)) => {
                        let (def, image_config) = *solve;
                        let r = ctx.solve(&def, SolveRequest::default()).await?;
                        Ok(Some(BuildOutput { image_config, ..BuildOutput::of(r) }))
                    }
                    Ok(Answer::Failed) | Err(_) => Err(internal("the Python build function raised an exception")),
                }
            })
            .await;
        // As in `solve`: release the engine handle before handing out the result.
        drop(engine);
        let _ = result_tx.send(r);
    });
    Ok(PyBuildTask {
        started: Mutex::new(Some(started_rx)),
        answer: Mutex::new(Some(answer_tx)),
        result: Mutex::new(Some(result_rx)),
        done: done_rx,
        delivery: Mutex::new(delivery),
        progress_error: Mutex::new(None),
        shared: Arc::new(Shared { cancel, explicit_image_config: image_config.is_some_and(|c| !c.is_none()) }),
    })
}

/// What a build function is given: solve graphs into `Ref`s, set the result, warn, read the
/// frontend options. Blocking methods release the GIL; `*_async` ones return awaitables.
#[pyclass(frozen, name = "BuildContext", module = "kiln._native")]
pub struct PyBuildContext {
    ctx: BuildContext,
    shared: Arc<Shared>,
}

impl PyBuildContext {
    fn request(py: Python<'_>, cache_imports: Option<Vec<String>>, evaluate: bool) -> PyResult<SolveRequest> {
        let mut req = SolveRequest { evaluate, ..Default::default() };
        for c in cache_imports.unwrap_or_default() {
            req.cache_imports.push(c.parse().map_err(|e: Error| to_pyerr(py, &e))?);
        }
        Ok(req)
    }

    fn wrap(&self, inner: Ref) -> PyRef {
        PyRef { inner, shared: self.shared.clone() }
    }
}

#[pymethods]
impl PyBuildContext {
    /// Solves `target` (a State, ExecState or Definition) with the build's options, plus
    /// `cache_imports` for this solve; blocks with the GIL released. Returns a `Ref` to read or
    /// to return as the build's result. `evaluate=True` loads the result even when a cache
    /// already knows it.
    #[pyo3(signature = (target, *, cache_imports=None, evaluate=false))]
    fn solve(
        &self,
        py: Python<'_>,
        target: &Bound<'_, PyAny>,
        cache_imports: Option<Vec<String>>,
        evaluate: bool,
    ) -> PyResult<PyRef> {
        let (def, _) = definition_of(py, &self.shared, target, "BuildContext.solve()")?;
        let req = Self::request(py, cache_imports, evaluate)?;
        let ctx = self.ctx.clone();
        let r = block(py, &self.shared.cancel, async move { ctx.solve(&def, req).await })?;
        Ok(self.wrap(r))
    }

    /// `solve` as an awaitable (for coroutine build functions).
    #[pyo3(signature = (target, *, cache_imports=None, evaluate=false))]
    fn solve_async<'py>(
        &self,
        py: Python<'py>,
        target: &Bound<'py, PyAny>,
        cache_imports: Option<Vec<String>>,
        evaluate: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        let (def, _) = definition_of(py, &self.shared, target, "BuildContext.solve_async()")?;
        let req = Self::request(py, cache_imports, evaluate)?;
        let ctx = self.ctx.clone();
        let shared = self.shared.clone();
        awaitable(py, async move { ctx.solve(&def, req).await.map(|inner| PyRef { inner, shared }) })
    }

    /// Sets the build's result: a `Ref`, or a State/ExecState/Definition (solved first,
    /// blocking). `image_config` (a dict as `State.image_config()` returns) is what image outputs
    /// write; by default a State's own config, else the build's `image_config`. Once only: a
    /// second call, or the function then returning a result, raises `DefinitionError` "result
    /// already set".
    #[pyo3(signature = (result, image_config=None))]
    fn set_result(
        &self,
        py: Python<'_>,
        result: &Bound<'_, PyAny>,
        image_config: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let explicit = match image_config.filter(|c| !c.is_none()) {
            Some(c) => Some(image_config_from_py(c)?),
            None => None,
        };
        let output = if let Ok(r) = result.cast::<PyRef>() {
            BuildOutput::of(r.get().inner.clone())
        } else {
            let (def, config) = definition_of(py, &self.shared, result, "BuildContext.set_result()").map_err(|_| {
                PyTypeError::new_err(format!(
                    "set_result() takes a kiln.Ref, State, ExecState or Definition, not {}",
                    type_name(result)
                ))
            })?;
            let ctx = self.ctx.clone();
            let r = block(py, &self.shared.cancel, async move { ctx.solve(&def, SolveRequest::default()).await })?;
            BuildOutput { image_config: config, ..BuildOutput::of(r) }
        };
        let mut output = output;
        if explicit.is_some() {
            output.image_config = explicit;
        }
        self.ctx.set_result(output).map_err(|e| to_pyerr(py, &e))
    }

    /// Reports a warning about `vertex` (an op digest or any name) as a `warning` progress
    /// event `"vertex: message"`.
    fn warn(&self, vertex: &str, message: &str) {
        self.ctx.warn(vertex, message)
    }

    /// The build's frontend options (`frontend_opts=` of `Engine.build`).
    #[getter]
    fn frontend_opts(&self) -> BTreeMap<String, String> {
        self.ctx.frontend_attrs().clone()
    }

    fn __repr__(&self) -> String {
        "<kiln.BuildContext>".to_owned()
    }
}

/// The result of `BuildContext.solve`: read its files, list and stat its paths, or return it as
/// the build's result. Paths resolve inside the result only (`..` and symlinks never leave it);
/// nothing is copied. Usable until the build ends; afterwards every call raises
/// `UnsupportedError`.
#[pyclass(frozen, name = "Ref", module = "kiln._native")]
pub struct PyRef {
    inner: Ref,
    shared: Arc<Shared>,
}

fn range(offset: u64, length: Option<u64>) -> Option<(u64, u64)> {
    match (offset, length) {
        (0, None) => None,
        (o, l) => Some((o, l.unwrap_or(u64::MAX))),
    }
}

fn entries(dir: &str, stats: Vec<FileStat>) -> Vec<PyDirEntry> {
    stats
        .into_iter()
        .map(|st| {
            let path = if dir.is_empty() || dir.ends_with('/') {
                format!("{dir}{}", st.path)
            } else {
                format!("{dir}/{}", st.path)
            };
            PyDirEntry { path, stat: st }
        })
        .collect()
}

/// File contents on their way to Python: `bytes` once converted (under the GIL the awaitable's
/// completion holds anyway, not on an engine thread).
struct Data(Vec<u8>);

impl<'py> IntoPyObject<'py> for Data {
    type Target = PyBytes;
    type Output = Bound<'py, PyBytes>;
    type Error = std::convert::Infallible;

    fn into_pyobject(self, py: Python<'py>) -> Result<Self::Output, Self::Error> {
        Ok(PyBytes::new(py, &self.0))
    }
}

#[pymethods]
impl PyRef {
    /// The contents of the file at `path` (symlinks followed inside the result), or `length`
    /// bytes from `offset` (fewer at the end of the file, none past it). Raises
    /// `NotFoundError` when nothing is there, `FileOpError` for a directory.
    #[pyo3(signature = (path, offset=0, length=None))]
    fn read_file(&self, py: Python<'_>, path: String, offset: u64, length: Option<u64>) -> PyResult<Py<PyBytes>> {
        let r = self.inner.clone();
        let data = block(py, &self.shared.cancel, async move { r.read_file(&path, range(offset, length)).await })?;
        Ok(PyBytes::new(py, &data).unbind())
    }

    /// `read_file` as an awaitable.
    #[pyo3(signature = (path, offset=0, length=None))]
    fn read_file_async<'py>(
        &self,
        py: Python<'py>,
        path: String,
        offset: u64,
        length: Option<u64>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let r = self.inner.clone();
        awaitable(py, async move { r.read_file(&path, range(offset, length)).await.map(Data) })
    }

    /// The entries of the directory at `path`, sorted by name; with `include_pattern` (`*`,
    /// `?`, `[...]`, `**`) only those whose name matches. Raises `NotFoundError` when nothing is
    /// there.
    #[pyo3(signature = (path, include_pattern=None))]
    fn read_dir(&self, py: Python<'_>, path: String, include_pattern: Option<String>) -> PyResult<Vec<PyDirEntry>> {
        let r = self.inner.clone();
        let dir = path.clone();
        let stats = block(py, &self.shared.cancel, async move { r.read_dir(&path, include_pattern.as_deref()).await })?;
        Ok(entries(&dir, stats))
    }

    /// `read_dir` as an awaitable.
    #[pyo3(signature = (path, include_pattern=None))]
    fn read_dir_async<'py>(
        &self,
        py: Python<'py>,
        path: String,
        include_pattern: Option<String>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let r = self.inner.clone();
        awaitable(py, async move {
            let stats = r.read_dir(&path, include_pattern.as_deref()).await?;
            Ok(entries(&path, stats))
        })
    }

    /// What is at `path` (symlinks followed inside the result). Raises `NotFoundError` when
    /// nothing is there.
    fn stat_file(&self, py: Python<'_>, path: String) -> PyResult<PyDirEntry> {
        let r = self.inner.clone();
        let asked = path.clone();
        let stat = block(py, &self.shared.cancel, async move { r.stat_file(&path).await })?;
        Ok(PyDirEntry { path: asked, stat })
    }

    /// `stat_file` as an awaitable.
    fn stat_file_async<'py>(&self, py: Python<'py>, path: String) -> PyResult<Bound<'py, PyAny>> {
        let r = self.inner.clone();
        awaitable(py, async move { r.stat_file(&path).await.map(|stat| PyDirEntry { path, stat }) })
    }

    /// Forces the result to exist locally (runs it, or fetches it from an imported cache, if a
    /// solve only knew it was available).
    fn evaluate(&self, py: Python<'_>) -> PyResult<()> {
        let r = self.inner.clone();
        block(py, &self.shared.cancel, async move { r.evaluate().await })
    }

    /// `evaluate` as an awaitable.
    fn evaluate_async<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let r = self.inner.clone();
        awaitable(py, async move { r.evaluate().await })
    }

    /// True when the result is the empty filesystem (`scratch`).
    #[getter]
    fn is_scratch(&self) -> bool {
        self.inner.is_scratch()
    }

    fn __repr__(&self) -> String {
        match self.inner.output() {
            Some((digest, index)) => format!("<kiln.Ref {digest}:{index}>"),
            None => "<kiln.Ref scratch>".to_owned(),
        }
    }
}

/// One path of a `Ref` (`read_dir`, `stat_file`), as BuildKit's `fsutil` stat describes it.
#[pyclass(frozen, name = "DirEntry", module = "kiln._native")]
pub struct PyDirEntry {
    /// The listed directory joined with the name (`read_dir`), or the path asked (`stat_file`).
    path: String,
    stat: FileStat,
}

#[pymethods]
impl PyDirEntry {
    /// The base name.
    #[getter]
    fn name(&self) -> &str {
        &self.stat.path
    }

    /// The listed directory joined with the name (`read_dir`), or the path asked (`stat_file`).
    #[getter]
    fn path(&self) -> &str {
        &self.path
    }

    /// Unix `st_mode`: type and permission bits (use the `stat` module's `S_IS*`/`S_IMODE`).
    #[getter]
    fn mode(&self) -> u32 {
        self.stat.mode
    }

    /// Owner user id.
    #[getter]
    fn uid(&self) -> u32 {
        self.stat.uid
    }

    /// Owner group id.
    #[getter]
    fn gid(&self) -> u32 {
        self.stat.gid
    }

    /// Size in bytes (0 for a directory).
    #[getter]
    fn size(&self) -> u64 {
        self.stat.size
    }

    /// Modification time, seconds since the epoch.
    #[getter]
    fn mtime(&self) -> f64 {
        self.stat.mtime_ns as f64 / 1e9
    }

    /// Modification time, nanoseconds since the epoch.
    #[getter]
    fn mtime_ns(&self) -> i64 {
        self.stat.mtime_ns
    }

    /// The target of a symlink as stored (not resolved), else None.
    #[getter]
    fn link_target(&self) -> Option<String> {
        self.stat.link_target.clone()
    }

    /// True for a directory.
    fn is_dir(&self) -> bool {
        self.stat.is_dir()
    }

    /// True for a regular file.
    fn is_file(&self) -> bool {
        self.stat.is_file()
    }

    /// True for a symlink.
    fn is_symlink(&self) -> bool {
        self.stat.is_symlink()
    }

    fn __repr__(&self) -> String {
        format!("<kiln.DirEntry {:?} mode={:o} size={}>", self.path, self.stat.mode, self.stat.size)
    }
}
