//! Client-side builds in JavaScript (`engine.build(fn, options)`, core's `Engine::build`):
//! `BuildContext` (inner solves, `setResult`, `warn`, `frontendOpts`), `Ref` (reads of a solved
//! result) and `DirEntry` (core's `FileStat`). Translation only: every rule (the set-once result,
//! reads confined to the ref, releasing refs when the build ends) lives in core.
//!
//! Threading (no deadlock by construction): the build future runs on napi's tokio runtime and
//! never blocks the JS thread, and the JS thread never waits for the runtime.
//! 1. `_build` (called by the `engine.build` wrapper in index.js) starts `Engine::build` and
//!    returns a promise. Core calls the Rust build function, which hands a `BuildContext` to JS
//!    through a non-blocking threadsafe function and then *awaits* a oneshot channel (an
//!    async wait: no runtime thread is held).
//! 2. On the JS thread, the wrapper runs the user's `fn(ctx)`; the context's async methods are
//!    ordinary napi promises (each its own task on the runtime).
//! 3. When `fn` settles, the wrapper calls `ctx._finish(value)` or `ctx._fail()`, which only send
//!    on the channel. The build function then returns; core exports the result (or fails) and
//!    releases everything, and `_build`'s promise settles.
//!
//! If the context object is garbage-collected without an outcome (or the threadsafe call fails
//! while Node shuts down), the channel's sender is dropped and the build fails with an error
//! instead of waiting forever. An `AbortSignal` cancels the build through core's cancel token even
//! while `fn` is still running (its pending calls then reject, as the build has ended).
//! When `fn` throws or rejects, `_build` resolves `null` after core's cleanup, and the wrapper
//! rejects with the very value `fn` threw.

use crate::engine::{CoreRunOptions, Engine, RunOptions, SolveOptions, SolveResult};
use crate::errors;
use crate::graph::{Definition, ExecState, ImageConfig, State};
use futures::channel::oneshot;
use kiln::engine::{BuildOptions, BuildOutput, FileStat, SolveRequest as CoreSolveRequest};
use kiln::{Error, ErrorKind};
use napi::bindgen_prelude::{BigInt, Buffer, Either, Either3, Either4, PromiseRaw, Unknown};
use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};
use napi::{Env, Status};
use napi_derive::napi;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// The wrapper's callback receiving the build's context (called on the JS thread).
type ContextFn = ThreadsafeFunction<BuildContext, (), BuildContext, Status, false>;

/// A result given by the build function: returned, or passed to `setResult`.
type ResultArg<'a> = Either4<&'a Ref, &'a State, &'a ExecState, &'a Definition>;

/// A result taken from JS (on the JS thread), solved on the runtime if it is a graph.
enum Value {
    Ref(kiln::engine::Ref),
    State(Box<kiln::graph::State>),
    Definition(Box<kiln::graph::Definition>),
}

impl Value {
    fn of(v: ResultArg) -> Value {
        match v {
            Either4::A(r) => Value::Ref(r.inner.clone()),
            Either4::B(s) => Value::State(Box::new(s.inner.clone())),
            Either4::C(x) => Value::State(Box::new(x.inner.root())),
            Either4::D(d) => Value::Definition(Box::new(d.inner.clone())),
        }
    }
}

/// How the build function ended.
enum Outcome {
    /// It returned this (`undefined`/`null`: `None`).
    Returned(Option<Value>),
    /// It threw or rejected; the wrapper holds the error.
    Failed,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The build output of `v`: a graph is solved into a ref first. The image config is `config`
/// (given to `setResult`), else the build options' `imageConfig` (core's fallback) when given,
/// else a state's own (as `engine.solve` of that state would write).
async fn output_of(
    ctx: &kiln::engine::BuildContext,
    v: Value,
    config: Option<kiln::graph::ImageConfig>,
    explicit_build_config: bool,
) -> kiln::Result<BuildOutput> {
    let (r, own) = match v {
        Value::Ref(r) => (r, None),
        Value::State(s) => {
            let own = s.image_config();
            (ctx.solve_state(&s, CoreSolveRequest::default()).await?, Some(own))
        }
        Value::Definition(d) => (ctx.solve(&d, CoreSolveRequest::default()).await?, None),
    };
    let mut out = BuildOutput::of(r);
    out.image_config = config.or(if explicit_build_config { None } else { own });
    Ok(out)
}

/// Core's build function: hands the context to JS and waits (asynchronously) for the outcome.
async fn run_function(
    ctx: kiln::engine::BuildContext,
    on_context: ContextFn,
    failed: Arc<AtomicBool>,
    explicit_build_config: bool,
) -> kiln::Result<Option<BuildOutput>> {
    let (tx, rx) = oneshot::channel();
    let handle = BuildContext { ctx: ctx.clone(), done: Mutex::new(Some(tx)), explicit_build_config };
    let status = on_context.call(handle, ThreadsafeFunctionCallMode::NonBlocking);
    drop(on_context);
    if status != Status::Ok {
        return Err(Error::new(ErrorKind::Internal, format!("could not call the build function: {status}")));
    }
    match rx.await {
        Err(_) => Err(Error::new(
            ErrorKind::Internal,
            "the build function's context was released without an outcome (garbage-collected or Node shutting down)",
        )),
        Ok(Outcome::Failed) => {
            failed.store(true, Ordering::SeqCst);
            Err(Error::new(ErrorKind::Internal, "the build function failed"))
        }
        Ok(Outcome::Returned(None)) => Ok(None),
        Ok(Outcome::Returned(Some(v))) => Ok(Some(output_of(&ctx, v, None, explicit_build_config).await?)),
    }
}

#[napi]
impl Engine {
    /// The native half of `engine.build` (index.js): runs a client-side build whose function is
    /// the wrapper's `onContext`. Resolves the build's `SolveResult`, or `null` when the function
    /// failed (the wrapper then rejects with the function's own error).
    #[napi(js_name = "_build", skip_typescript)]
    pub fn build_native<'env>(
        &self,
        env: &'env Env,
        on_context: ContextFn,
        options: Option<Unknown<'env>>,
        frontend_opts: Option<HashMap<String, String>>,
    ) -> napi::Result<PromiseRaw<'env, Option<SolveResult>>> {
        let options: Option<SolveOptions> = crate::opts::strict(
            env,
            options,
            "engine.build",
            &[crate::engine::SOLVE_KEYS, crate::engine::FRONTEND_KEYS].concat(),
        )?;
        let engine = self.get();
        let run = RunOptions::read(env, options)?;
        let attrs = frontend_opts.unwrap_or_default();
        let failed = Arc::new(AtomicBool::new(false));
        let failed_in_fn = failed.clone();
        let fut = async move {
            let engine = engine?;
            let CoreRunOptions { opts, display, progress, explicit_image_config } = run.into_core()?;
            let mut bo = BuildOptions::new(opts);
            bo.frontend_attrs = attrs.into_iter().collect();
            let r =
                engine.build(bo, move |ctx| run_function(ctx, on_context, failed_in_fn, explicit_image_config)).await;
            // Refs and contexts JS still holds keep the build's session, not the JS callback.
            progress.close();
            if let Some(d) = &display {
                d.finish();
            }
            r
        };
        env.spawn_future_with_callback(async move { Ok(fut.await) }, move |env, r| match r {
            Ok(res) => Ok(Some(SolveResult::from(res))),
            Err(_) if failed.load(Ordering::SeqCst) => Ok(None),
            Err(e) => Err(errors::throw(env, &e)),
        })
    }
}

/// Options of `ctx.solve(state, options)`.
#[napi(object)]
pub struct SolveRequest {
    /// Cache importers in CSV form for this solve, on top of the build's own `cacheImports`
    /// (which apply to every inner solve).
    pub cache_imports: Option<Vec<String>>,
    /// Load the result now even when a cache already knows it (BuildKit's `Evaluate`).
    pub evaluate: Option<bool>,
}

/// Options of `ctx.setResult(result, options)`.
#[napi(object)]
pub struct SetResultOptions {
    /// The image config image outputs write (default: the build options' `imageConfig`, else a
    /// state's own).
    pub image_config: Option<ImageConfig>,
}

/// What a client-side build function is given (BuildKit's gateway client): inner solves, the
/// set-once result, warnings and the frontend options. Valid while the build runs.
#[napi(js_name = "BuildContext")]
pub struct BuildContext {
    ctx: kiln::engine::BuildContext,
    /// Where the function's outcome goes (taken by `_finish` / `_fail`).
    done: Mutex<Option<oneshot::Sender<Outcome>>>,
    explicit_build_config: bool,
}

#[napi]
impl BuildContext {
    /// Solves `state` (or a `Definition`) with the build's options (locals, secrets, cache
    /// imports, progress, ...), sharing work with every other solve of the engine; resolves a
    /// `Ref` to read or return. Rejects once the build has ended.
    #[napi(
        ts_args_type = "state: State | ExecState | Definition, options?: SolveRequest",
        ts_return_type = "Promise<Ref>"
    )]
    pub fn solve<'env>(
        &self,
        env: &'env Env,
        state: Either3<&State, &ExecState, &Definition>,
        options: Option<SolveRequest>,
    ) -> napi::Result<PromiseRaw<'env, Ref>> {
        let ctx = self.ctx.clone();
        let graph = match state {
            Either3::A(s) => Either::A(s.inner.clone()),
            Either3::B(x) => Either::A(x.inner.root()),
            Either3::C(d) => Either::B(d.inner.clone()),
        };
        let (imports, evaluate) = match options {
            Some(o) => (o.cache_imports.unwrap_or_default(), o.evaluate.unwrap_or(false)),
            None => (Vec::new(), false),
        };
        let fut = async move {
            let mut req = CoreSolveRequest { evaluate, ..Default::default() };
            for c in &imports {
                req.cache_imports.push(c.parse()?);
            }
            match graph {
                Either::A(s) => ctx.solve_state(&s, req).await,
                Either::B(d) => ctx.solve(&d, req).await,
            }
        };
        env.spawn_future_with_callback(async move { Ok(fut.await) }, |env, r| {
            r.map(|inner| Ref { inner }).map_err(|e| errors::throw(env, &e))
        })
    }

    /// Sets the build's result (a `State`/`Definition` is solved first). Once only: a second
    /// call, or the function then returning a result, rejects with `KILN_DEFINITION` "result
    /// already set" (the first result stays). Await it before the function returns.
    #[napi(
        ts_args_type = "result: Ref | State | ExecState | Definition, options?: SetResultOptions",
        ts_return_type = "Promise<void>"
    )]
    pub fn set_result<'env>(
        &self,
        env: &'env Env,
        result: ResultArg,
        options: Option<SetResultOptions>,
    ) -> napi::Result<PromiseRaw<'env, ()>> {
        let ctx = self.ctx.clone();
        let value = Value::of(result);
        let config = options.and_then(|o| o.image_config).map(Into::into);
        let explicit = self.explicit_build_config;
        let fut = async move {
            let out = output_of(&ctx, value, config, explicit).await?;
            ctx.set_result(out)
        };
        env.spawn_future_with_callback(async move { Ok(fut.await) }, |env, r| r.map_err(|e| errors::throw(env, &e)))
    }

    /// A warning about `vertex` (an op digest or any name), reported as a `warning` progress
    /// event `vertex: message`.
    #[napi]
    pub fn warn(&self, vertex: String, message: String) {
        self.ctx.warn(&vertex, &message);
    }

    /// The build's frontend options (`frontendOpts` of `engine.build`).
    #[napi(getter)]
    pub fn frontend_opts(&self) -> HashMap<String, String> {
        self.ctx.frontend_attrs().iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }

    /// The wrapper's report: the function returned `value`. Later reports are ignored.
    #[napi(js_name = "_finish", skip_typescript)]
    pub fn finish(&self, value: Option<ResultArg>) {
        if let Some(tx) = lock(&self.done).take() {
            let _ = tx.send(Outcome::Returned(value.map(Value::of)));
        }
    }

    /// The wrapper's report: the function threw or rejected. Later reports are ignored.
    #[napi(js_name = "_fail", skip_typescript)]
    pub fn fail(&self) {
        if let Some(tx) = lock(&self.done).take() {
            let _ = tx.send(Outcome::Failed);
        }
    }
}

/// Options of `ref.readFile(path, options)`.
#[napi(object)]
pub struct ReadFileOptions {
    /// First byte to read (default 0).
    pub offset: Option<f64>,
    /// Bytes to read at most (default: to the end of the file).
    pub length: Option<f64>,
}

/// Options of `ref.readDir(path, options)`.
#[napi(object)]
pub struct ReadDirOptions {
    /// Only entries whose name matches (`*`, `?`, `[...]`, `**`).
    pub include_pattern: Option<String>,
}

/// One path of a result (core's `FileStat`, BuildKit's `fsutil/types.Stat`).
#[napi(object, object_from_js = false)]
pub struct DirEntry {
    /// The entry's name (`readDir`) or the path's base name (`statFile`).
    pub name: String,
    /// The same as `name` (BuildKit's field name).
    pub path: String,
    /// Unix `st_mode`: file type and permission bits (as `fs.Stats.mode`).
    pub mode: u32,
    /// Owner user id.
    pub uid: u32,
    /// Owner group id.
    pub gid: u32,
    /// Size in bytes (0 for directories).
    pub size: f64,
    /// Modification time in milliseconds since the Unix epoch (as `fs.Stats.mtimeMs`).
    pub mtime_ms: f64,
    /// Modification time in nanoseconds since the Unix epoch.
    pub mtime_ns: BigInt,
    /// The target of a symlink, as stored.
    pub link_target: Option<String>,
    /// True for a directory.
    pub is_dir: bool,
    /// True for a regular file.
    pub is_file: bool,
    /// True for a symlink.
    pub is_symlink: bool,
}

impl From<FileStat> for DirEntry {
    fn from(s: FileStat) -> Self {
        DirEntry {
            name: s.path.clone(),
            is_dir: s.is_dir(),
            is_file: s.is_file(),
            is_symlink: s.is_symlink(),
            path: s.path,
            mode: s.mode,
            uid: s.uid,
            gid: s.gid,
            size: s.size as f64,
            mtime_ms: s.mtime_ns as f64 / 1e6,
            mtime_ns: BigInt::from(s.mtime_ns),
            link_target: s.link_target,
        }
    }
}

/// A byte count option: a non-negative integer.
fn byte_count(env: &Env, key: &str, v: Option<f64>) -> napi::Result<Option<u64>> {
    match v {
        None => Ok(None),
        Some(n) if n.is_finite() && n >= 0.0 && n.fract() == 0.0 && n <= 9_007_199_254_740_991.0 => Ok(Some(n as u64)),
        Some(n) => Err(crate::opts::invalid(env, key, &n.to_string(), "a non-negative integer")),
    }
}

/// The result of `ctx.solve(...)`: read its files, list and stat its paths, force it to exist, or
/// return it as the build's result. Paths resolve inside the result (`..` and symlinks never
/// leave it). Reads reject once the build has ended.
#[napi(js_name = "Ref")]
pub struct Ref {
    pub(crate) inner: kiln::engine::Ref,
}

#[napi]
impl Ref {
    /// The file's contents, or `length` bytes from `offset` (fewer at the end of the file, none
    /// past it). A missing path rejects with `KILN_NOT_FOUND`, a directory with `KILN_FILE_OP`.
    #[napi(ts_return_type = "Promise<Buffer>")]
    pub fn read_file<'env>(
        &self,
        env: &'env Env,
        path: String,
        options: Option<ReadFileOptions>,
    ) -> napi::Result<PromiseRaw<'env, Buffer>> {
        let (offset, length) = match &options {
            Some(o) => (byte_count(env, "offset", o.offset)?, byte_count(env, "length", o.length)?),
            None => (None, None),
        };
        let range = match (offset, length) {
            (None, None) => None,
            (o, l) => Some((o.unwrap_or(0), l.unwrap_or(u64::MAX))),
        };
        let r = self.inner.clone();
        env.spawn_future_with_callback(async move { Ok(r.read_file(&path, range).await) }, |env, r| {
            r.map(Buffer::from).map_err(|e| errors::throw(env, &e))
        })
    }

    /// The entries of the directory at `path`, sorted by name (symlinks are listed, not
    /// followed); with `includePattern`, only those whose name matches. A missing path rejects
    /// with `KILN_NOT_FOUND`.
    #[napi(ts_return_type = "Promise<DirEntry[]>")]
    pub fn read_dir<'env>(
        &self,
        env: &'env Env,
        path: String,
        options: Option<ReadDirOptions>,
    ) -> napi::Result<PromiseRaw<'env, Vec<DirEntry>>> {
        let pattern = options.and_then(|o| o.include_pattern);
        let r = self.inner.clone();
        env.spawn_future_with_callback(async move { Ok(r.read_dir(&path, pattern.as_deref()).await) }, |env, r| {
            r.map(|v| v.into_iter().map(DirEntry::from).collect()).map_err(|e| errors::throw(env, &e))
        })
    }

    /// What is at `path` (symlinks followed inside the result). A missing path rejects with
    /// `KILN_NOT_FOUND`.
    #[napi(ts_return_type = "Promise<DirEntry>")]
    pub fn stat_file<'env>(&self, env: &'env Env, path: String) -> napi::Result<PromiseRaw<'env, DirEntry>> {
        let r = self.inner.clone();
        env.spawn_future_with_callback(async move { Ok(r.stat_file(&path).await) }, |env, r| {
            r.map(DirEntry::from).map_err(|e| errors::throw(env, &e))
        })
    }

    /// Forces the result to exist locally (executes it, or applies it from an imported cache).
    #[napi(ts_return_type = "Promise<void>")]
    pub fn evaluate<'env>(&self, env: &'env Env) -> napi::Result<PromiseRaw<'env, ()>> {
        let r = self.inner.clone();
        env.spawn_future_with_callback(async move { Ok(r.evaluate().await) }, |env, r| {
            r.map_err(|e| errors::throw(env, &e))
        })
    }

    /// True when the result is the empty filesystem (`scratch`).
    #[napi(getter)]
    pub fn is_scratch(&self) -> bool {
        self.inner.is_scratch()
    }
}
