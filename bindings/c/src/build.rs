//! Client-side builds from C (BuildKit's LLB bridge, embedded): `kiln_engine_build` runs the
//! caller's callback with a `kiln_build_ctx` that solves graphs into `kiln_ref`s, reads files,
//! directories and stats out of them (`kiln_file_stat`, `kiln_dir_entries`), warns, and sets the
//! build's result. Everything is core's `Engine::build`; this module translates, runs the callback
//! on a thread of the library's runtime, and cuts every `kiln_ref` off its build when it ends.

use crate::bytes::kiln_bytes;
use crate::engine::{kiln_engine, kiln_result, not_on_runtime_thread, runtime, solve_options};
use crate::errors::{kiln_error, kiln_status};
use crate::ffi::{bytes_arg, catch, cstring, guard, out_arg, put, ref_arg, str_arg, take_free};
use crate::solve::{kiln_solve_opts, UserData};
use crate::state::kiln_state;
use kiln::engine::{BuildContext, BuildOptions, BuildOutput, FileStat, Ref, SolveRequest};
use kiln::{Definition, Error, ErrorKind};
use std::cell::Cell;
use std::ffi::{c_char, c_int, c_void, CString};
use std::future::Future;
use std::ptr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};

/// The context of one client-side build, handed to the build callback. Borrowed: valid only
/// until the callback returns (kiln frees it then); never free it.
///
/// Thread safety: every `kiln_build_ctx_*` function may be called from the callback's thread and,
/// while the callback runs, from any thread of the caller's, concurrently (e.g. inner solves in
/// parallel from pthreads the callback starts and joins); all of those calls must have returned
/// before the callback returns. Not from kiln's other threads, such as a progress callback
/// (KILN_ERR_WRONG_THREAD).
#[allow(non_camel_case_types)]
pub struct kiln_build_ctx {
    ctx: BuildContext,
    build: Arc<BuildShared>,
}

/// The result of an inner solve of a build (`kiln_build_ctx_solve`): read its files, list and
/// stat its paths, force it to exist, or set it as the build's result. Owned by the caller, who
/// frees it with `kiln_ref_free` — during the build or after it.
///
/// A ref is usable while its build's callback runs. Once the callback has returned, the build
/// ends and releases what the ref points at: calls on it then return KILN_ERR_UNSUPPORTED saying
/// the build has ended (never undefined behaviour; certainly so once `kiln_engine_build` has
/// returned), and only `kiln_ref_free` remains useful.
///
/// Thread safety: immutable; any thread may read one ref concurrently (not kiln's own threads,
/// e.g. a progress callback: KILN_ERR_WRONG_THREAD).
#[allow(non_camel_case_types)]
pub struct kiln_ref {
    slot: Arc<RefSlot>,
}

/// One path of a build ref: name, mode, owner, size, mtime and link target. Immutable; any
/// thread; freed with `kiln_file_stat_free` (those returned by `kiln_dir_entries_get` are
/// borrowed from their list instead).
#[allow(non_camel_case_types)]
pub struct kiln_file_stat {
    stat: FileStat,
    name: CString,
    link_target: Option<CString>,
}

/// The entries of a directory of a build ref (`kiln_ref_read_dir`), sorted by name. Immutable;
/// any thread; freed with `kiln_dir_entries_free`.
#[allow(non_camel_case_types)]
pub struct kiln_dir_entries {
    entries: Vec<kiln_file_stat>,
}

/// The build callback. It runs once, on a kiln thread (not the thread that called
/// `kiln_engine_build`), with the build's context and the caller's `user_data`. It returns 0 for
/// success and nonzero to fail the build (KILN_ERR_CALLBACK with that value as
/// `kiln_error_exit_code`, and the message or error given to `kiln_build_ctx_fail` /
/// `kiln_build_ctx_fail_with` if the callback called one).
#[allow(non_camel_case_types)]
pub type kiln_build_cb = Option<unsafe extern "C" fn(ctx: *mut kiln_build_ctx, user_data: *mut c_void) -> c_int>;

type BuildFn = unsafe extern "C" fn(*mut kiln_build_ctx, *mut c_void) -> c_int;

/// What the binding keeps per build, shared by its context and its refs.
#[derive(Default)]
struct BuildShared {
    /// Every ref handed out (weakly: a ref freed early is forgotten), emptied when the build ends.
    refs: Mutex<Vec<Weak<RefSlot>>>,
    /// The error the callback gave (`kiln_build_ctx_fail*`), then the callback's failure.
    failure: Mutex<Option<kiln_error>>,
    /// The build is over: the callback must not start any more.
    ended: AtomicBool,
}

/// The core ref behind a `kiln_ref`, until its build ends.
struct RefSlot {
    build: Weak<BuildShared>,
    r: Mutex<Option<Ref>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl BuildShared {
    /// Ends the build for C: no callback starts any more and every ref lets go of the core ref.
    fn end(&self) {
        self.ended.store(true, Ordering::SeqCst);
        let slots = std::mem::take(&mut *lock(&self.refs));
        for s in slots.iter().filter_map(Weak::upgrade) {
            drop(lock(&s.r).take());
        }
    }

    fn track(self: &Arc<Self>, r: Ref) -> kiln_ref {
        let slot = Arc::new(RefSlot { build: Arc::downgrade(self), r: Mutex::new(Some(r)) });
        let mut refs = lock(&self.refs);
        refs.retain(|w| w.strong_count() > 0);
        refs.push(Arc::downgrade(&slot));
        kiln_ref { slot }
    }
}

impl kiln_ref {
    /// The core ref, or the error of a ref whose build has ended.
    fn live(&self) -> Result<Ref, kiln_error> {
        lock(&self.slot.r).clone().ok_or_else(|| {
            kiln_error::from(Error::new(
                ErrorKind::Unsupported,
                "the build of this ref has ended and released it; read refs inside the build callback",
            ))
        })
    }
}

thread_local! {
    /// True on the thread running a build callback: it may block on ctx and ref calls although
    /// it is a thread of the runtime (a blocking-pool one, where blocking is allowed).
    static IN_CALLBACK: Cell<bool> = const { Cell::new(false) };
}

/// Marks the current thread as running a build callback until dropped.
struct InCallback;

impl InCallback {
    fn enter() -> InCallback {
        IN_CALLBACK.with(|c| c.set(true));
        InCallback
    }
}

impl Drop for InCallback {
    fn drop(&mut self) {
        IN_CALLBACK.with(|c| c.set(false));
    }
}

/// Clears the build callback's mark while a progress callback runs on its thread (a warning
/// is delivered on the thread that gives it): in there, ctx and ref calls are refused as on
/// every other kiln thread (a solve would wait for the progress delivery it is inside of).
pub(crate) struct ProgressDelivery(bool);

impl ProgressDelivery {
    pub(crate) fn enter() -> ProgressDelivery {
        ProgressDelivery(IN_CALLBACK.with(|c| c.replace(false)))
    }
}

impl Drop for ProgressDelivery {
    fn drop(&mut self) {
        IN_CALLBACK.with(|c| c.set(self.0));
    }
}

/// Ctx and ref calls are made on a build callback's thread or a thread of the caller's.
fn check_thread(what: &str) -> Result<(), kiln_error> {
    if IN_CALLBACK.with(Cell::get) {
        return Ok(());
    }
    not_on_runtime_thread(what)
}

/// Runs `f` to completion on the library's runtime from a thread that may block.
fn block_on<T>(what: &str, f: impl Future<Output = T>) -> Result<T, kiln_error> {
    check_thread(what)?;
    Ok(runtime()?.block_on(f))
}

/// Runs a client-side build on `engine`: calls `callback(ctx, user_data)` once, on a kiln thread,
/// and blocks until the build has ended. Inside the callback, `kiln_build_ctx_solve` solves
/// graphs into refs to read, and `kiln_build_ctx_set_result` (or `_set_result_state`) sets the
/// result, which then goes to the outputs and cache exports of `opts` (NULL: none) like a solve's
/// (a callback that sets no result exports the empty filesystem). Locals, secrets, cache imports,
/// platform and entitlements of `opts` apply to every inner solve; its progress callback gets
/// the events of every inner solve and the build's warnings; its cancel token cancels the whole
/// build (KILN_ERR_CANCELLED; calls the callback is making then fail, and the build still waits
/// for the callback to return).
///
/// On success `*out` holds a new result (caller owns it; free with `kiln_result_free`) with the
/// exporters' response and the counts of every inner solve. On failure the status and `*err` (if
/// `err` is non-NULL; caller frees it) say why: KILN_ERR_CALLBACK when the callback returned
/// nonzero or called `kiln_build_ctx_fail` (or the error it passed to `kiln_build_ctx_fail_with`,
/// unchanged), KILN_ERR_DEFINITION "result already set", an export error, ...
///
/// When this returns — success or failure — the callback has returned, no progress callback
/// runs any more, and everything the build held is released: no container runs, no mount stays,
/// no snapshot is left unrecorded, and every `kiln_ref` of the build is cut off (later calls on
/// it return KILN_ERR_UNSUPPORTED; the caller still frees each with `kiln_ref_free`).
/// `user_data` is only passed to the callback; kiln never reads it.
///
/// Thread safety: `engine` and `opts` are only read; several builds and solves may run on one
/// engine at once. Must not be called from a kiln thread, e.g. inside a build or progress
/// callback (KILN_ERR_WRONG_THREAD): solve from a callback with `kiln_build_ctx_solve`.
#[no_mangle]
pub extern "C" fn kiln_engine_build(
    engine: *const kiln_engine,
    opts: *const kiln_solve_opts,
    callback: kiln_build_cb,
    user_data: *mut c_void,
    out: *mut *mut kiln_result,
    err: *mut *mut kiln_error,
) -> kiln_status {
    guard(err, || {
        let out = out_arg(out, "out")?;
        let engine = ref_arg(engine, "engine")?;
        let cb = callback.ok_or_else(|| kiln_error::null("callback"))?;
        not_on_runtime_thread("kiln_engine_build")?;
        let rt = runtime()?;
        let frontend_attrs =
            if opts.is_null() { Default::default() } else { ref_arg(opts, "opts")?.frontend_attrs.clone() };
        let (so, progress) = solve_options(opts)?;
        let shared = Arc::new(BuildShared::default());
        let ud = UserData(user_data);
        // Dropped when the callback has returned (or when it will never run): then the
        // caller's `user_data` and callback are no longer used.
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let for_build = shared.clone();
        let r = rt.block_on(engine.engine.build(BuildOptions { solve: so, frontend_attrs }, move |ctx| async move {
            let task = tokio::task::spawn_blocking(move || {
                let _done = done_tx;
                run_callback(cb, ud, ctx, for_build)
            });
            match task.await {
                Ok(r) => r.map(|()| None),
                Err(e) => Err(Error::with_source(ErrorKind::Internal, "the build callback's thread", e)),
            }
        }));
        // The build ended: a callback not yet started never starts; one still running (the
        // build was cancelled) is waited for, then every ref is cut off.
        shared.ended.store(true, Ordering::SeqCst);
        let _ = done_rx.recv();
        {
            // Core refs may hold runtime resources: drop them with the runtime entered.
            let _rt = rt.enter();
            shared.end();
        }
        progress.finish();
        match r {
            Ok(res) => {
                put(out, kiln_result::of(&res));
                Ok(())
            }
            // Cancellation wins over whatever the callback then made of it.
            Err(e) if e.kind() == ErrorKind::Cancelled => Err(kiln_error::from(e)),
            Err(e) => Err(lock(&shared.failure).take().unwrap_or_else(|| kiln_error::from(e))),
        }
    })
}

/// Runs the C callback (on a blocking thread of the runtime) and turns its outcome into the
/// build function's: a failure is kept in `shared` for `kiln_engine_build` to return as is.
fn run_callback(cb: BuildFn, ud: UserData, ctx: BuildContext, shared: Arc<BuildShared>) -> kiln::Result<()> {
    if shared.ended.load(Ordering::SeqCst) {
        return Err(Error::Cancelled);
    }
    let mut c = kiln_build_ctx { ctx, build: shared.clone() };
    let code = {
        let _mark = InCallback::enter();
        // SAFETY: `cb` is the caller's callback with the documented signature; `c` outlives the
        // call (the contract forbids using it afterwards) and `ud` is only passed back.
        unsafe { cb(&mut c, ud.0) }
    };
    drop(c);
    let mut failure = lock(&shared.failure);
    let failed = match failure.take() {
        None if code == 0 => return Ok(()),
        None => kiln_error::callback(
            code,
            format!("the build callback failed with code {code} (kiln_build_ctx_fail gives a message)"),
        ),
        Some(e) => e.with_callback_code(code),
    };
    // Core only needs to know the function failed; C gets `failed` itself.
    let e = Error::new(ErrorKind::Internal, failed.message_string());
    *failure = Some(failed);
    Err(e)
}

/// The context of a ctx call made from an allowed thread (see `kiln_build_ctx`).
fn ctx_arg<'a>(ctx: *mut kiln_build_ctx, what: &str) -> Result<&'a kiln_build_ctx, kiln_error> {
    let c = ref_arg(ctx.cast_const(), "ctx")?;
    check_thread(what)?;
    Ok(c)
}

fn solve_into(
    ctx: *mut kiln_build_ctx,
    def: impl FnOnce() -> Result<Definition, kiln_error>,
    out: *mut *mut kiln_ref,
    err: *mut *mut kiln_error,
) -> kiln_status {
    guard(err, || {
        let out = out_arg(out, "out")?;
        let c = ctx_arg(ctx, "kiln_build_ctx_solve")?;
        let def = def()?;
        let r = block_on("kiln_build_ctx_solve", c.ctx.solve(&def, SolveRequest::default()))??;
        put(out, c.build.track(r));
        Ok(())
    })
}

/// Solves `state` inside the build (with the build's options, sharing work with every other
/// solve and build on the engine) into `*out`: a new ref the caller owns and frees with
/// `kiln_ref_free`. A result the cache already knows is loaded only when first read, evaluated
/// or exported. Errors as `kiln_engine_solve` (KILN_ERR_EXEC with exit code and log tail, ...).
///
/// Thread safety: see `kiln_build_ctx`.
#[no_mangle]
pub extern "C" fn kiln_build_ctx_solve(
    ctx: *mut kiln_build_ctx,
    state: *const kiln_state,
    out: *mut *mut kiln_ref,
    err: *mut *mut kiln_error,
) -> kiln_status {
    solve_into(ctx, || Ok(ref_arg(state, "state")?.st.to_definition()?), out, err)
}

/// Like `kiln_build_ctx_solve`, for a marshalled LLB definition in `data[0..len]` (copied).
/// Malformed bytes: KILN_ERR_DEFINITION.
///
/// Thread safety: see `kiln_build_ctx`.
#[no_mangle]
pub extern "C" fn kiln_build_ctx_solve_definition(
    ctx: *mut kiln_build_ctx,
    data: *const u8,
    len: usize,
    out: *mut *mut kiln_ref,
    err: *mut *mut kiln_error,
) -> kiln_status {
    solve_into(ctx, || Ok(Definition::from_bytes(bytes_arg(data, len, "data")?)?), out, err)
}

/// A ref of this build (a ref of another build is KILN_ERR_INVALID_ARGUMENT).
fn own_ref(c: &kiln_build_ctx, r: *const kiln_ref) -> Result<Ref, kiln_error> {
    let r = ref_arg(r, "ref")?;
    if !ptr::eq(r.slot.build.as_ptr(), Arc::as_ptr(&c.build)) {
        return Err(kiln_error::invalid("ref comes from another build; a build's result is one of its own refs"));
    }
    r.live()
}

/// Sets the build's result to `ref` (a ref of this build; only read: the caller still frees it).
/// Once per build: a second call returns KILN_ERR_DEFINITION "result already set" and the first
/// result stays.
///
/// Thread safety: see `kiln_build_ctx`.
#[no_mangle]
pub extern "C" fn kiln_build_ctx_set_result(
    ctx: *mut kiln_build_ctx,
    r#ref: *const kiln_ref,
    err: *mut *mut kiln_error,
) -> kiln_status {
    guard(err, || {
        let c = ctx_arg(ctx, "kiln_build_ctx_set_result")?;
        let r = own_ref(c, r#ref)?;
        Ok(c.ctx.set_result(BuildOutput::of(r))?)
    })
}

/// Solves `state` (as `kiln_build_ctx_solve`) and sets the result to it, with the image config
/// of `state` (env, cwd, ...) for image outputs. Once per build, as `kiln_build_ctx_set_result`.
///
/// Thread safety: see `kiln_build_ctx`.
#[no_mangle]
pub extern "C" fn kiln_build_ctx_set_result_state(
    ctx: *mut kiln_build_ctx,
    state: *const kiln_state,
    err: *mut *mut kiln_error,
) -> kiln_status {
    guard(err, || {
        let c = ctx_arg(ctx, "kiln_build_ctx_set_result_state")?;
        let st = &ref_arg(state, "state")?.st;
        let def = st.to_definition()?;
        let r = block_on("kiln_build_ctx_set_result_state", c.ctx.solve(&def, SolveRequest::default()))??;
        Ok(c.ctx.set_result(BuildOutput::of(r).with_image_config(st.image_config()))?)
    })
}

/// Reports a warning about `vertex` (an op digest, or any name to show) with `message` (both
/// copied) as a KILN_PROGRESS_WARNING event `vertex: message` of the build.
///
/// Thread safety: see `kiln_build_ctx`.
#[no_mangle]
pub extern "C" fn kiln_build_ctx_warn(
    ctx: *mut kiln_build_ctx,
    vertex: *const c_char,
    message: *const c_char,
) -> kiln_status {
    guard(ptr::null_mut(), || {
        let c = ctx_arg(ctx, "kiln_build_ctx_warn")?;
        c.ctx.warn(str_arg(vertex, "vertex")?, str_arg(message, "message")?);
        Ok(())
    })
}

/// Fails the build with `message` (copied): `kiln_engine_build` returns KILN_ERR_CALLBACK with
/// this message (and the callback's return value as `kiln_error_exit_code`), even if the
/// callback then returns 0. A later call replaces the error.
///
/// Thread safety: see `kiln_build_ctx`.
#[no_mangle]
pub extern "C" fn kiln_build_ctx_fail(ctx: *mut kiln_build_ctx, message: *const c_char) -> kiln_status {
    guard(ptr::null_mut(), || {
        let c = ctx_arg(ctx, "kiln_build_ctx_fail")?;
        let m = str_arg(message, "message")?;
        *lock(&c.build.failure) = Some(kiln_error::callback(0, m));
        Ok(())
    })
}

/// Fails the build with a copy of `error` (e.g. one a ctx or ref call returned; the caller still
/// frees its own): `kiln_engine_build` returns it unchanged — status, kind, message, exit code,
/// vertex, log tail — even if the callback then returns 0. A later call replaces the error.
///
/// Thread safety: see `kiln_build_ctx`.
#[no_mangle]
pub extern "C" fn kiln_build_ctx_fail_with(ctx: *mut kiln_build_ctx, error: *const kiln_error) -> kiln_status {
    guard(ptr::null_mut(), || {
        let c = ctx_arg(ctx, "kiln_build_ctx_fail_with")?;
        let e = ref_arg(error, "error")?.clone();
        *lock(&c.build.failure) = Some(e);
        Ok(())
    })
}

/// Reads the file at `path` of `ref` into `*out` (a new buffer the caller owns; free with
/// `kiln_bytes_free`): `length` bytes from `offset` (fewer at the end of the file, none past it);
/// `length == SIZE_MAX` reads to the end, so `(0, SIZE_MAX)` is the whole file and `length == 0`
/// reads nothing. Paths resolve inside the ref: `..` and symlinks (absolute or relative) never
/// leave it; symlinks are followed inside it. A missing path is KILN_ERR_NOT_FOUND, a directory
/// KILN_ERR_FILE_OP.
///
/// Thread safety: see `kiln_ref`.
#[no_mangle]
pub extern "C" fn kiln_ref_read_file(
    r#ref: *const kiln_ref,
    path: *const c_char,
    offset: u64,
    length: usize,
    out: *mut *mut kiln_bytes,
    err: *mut *mut kiln_error,
) -> kiln_status {
    guard(err, || {
        let out = out_arg(out, "out")?;
        let r = ref_arg(r#ref, "ref")?;
        let path = str_arg(path, "path")?;
        let range = match (offset, length) {
            (0, usize::MAX) => None,
            (o, usize::MAX) => Some((o, u64::MAX)),
            (o, l) => Some((o, l as u64)),
        };
        let live = r.live()?;
        let data = block_on("kiln_ref_read_file", live.read_file(path, range))??;
        put(out, kiln_bytes::new(data));
        Ok(())
    })
}

/// Lists the directory at `path` of `ref` into `*out` (a new list the caller owns; free with
/// `kiln_dir_entries_free`), sorted by name; with `include_pattern` (NULL or "": every entry)
/// only the entries whose name it matches (`*`, `?`, `[...]`, `**`, as BuildKit's include
/// patterns). Symlinks are listed, not followed. Paths resolve inside the ref as in
/// `kiln_ref_read_file`. A missing path is KILN_ERR_NOT_FOUND.
///
/// Thread safety: see `kiln_ref`.
#[no_mangle]
pub extern "C" fn kiln_ref_read_dir(
    r#ref: *const kiln_ref,
    path: *const c_char,
    include_pattern: *const c_char,
    out: *mut *mut kiln_dir_entries,
    err: *mut *mut kiln_error,
) -> kiln_status {
    guard(err, || {
        let out = out_arg(out, "out")?;
        let r = ref_arg(r#ref, "ref")?;
        let path = str_arg(path, "path")?;
        let pattern = if include_pattern.is_null() { None } else { Some(str_arg(include_pattern, "include_pattern")?) };
        let live = r.live()?;
        let entries = block_on("kiln_ref_read_dir", live.read_dir(path, pattern))??;
        put(out, kiln_dir_entries { entries: entries.into_iter().map(file_stat).collect() });
        Ok(())
    })
}

/// What is at `path` of `ref` (symlinks followed inside the ref; the name is the path's last
/// component) into `*out` (a new stat the caller owns; free with `kiln_file_stat_free`). A missing
/// path is KILN_ERR_NOT_FOUND.
///
/// Thread safety: see `kiln_ref`.
#[no_mangle]
pub extern "C" fn kiln_ref_stat_file(
    r#ref: *const kiln_ref,
    path: *const c_char,
    out: *mut *mut kiln_file_stat,
    err: *mut *mut kiln_error,
) -> kiln_status {
    guard(err, || {
        let out = out_arg(out, "out")?;
        let r = ref_arg(r#ref, "ref")?;
        let path = str_arg(path, "path")?;
        let live = r.live()?;
        let st = block_on("kiln_ref_stat_file", live.stat_file(path))??;
        put(out, file_stat(st));
        Ok(())
    })
}

/// Forces the result of `ref` to exist locally (executes it, or fetches it from an imported
/// cache, when the solve only knew it was available). Errors as `kiln_engine_solve`.
///
/// Thread safety: see `kiln_ref`.
#[no_mangle]
pub extern "C" fn kiln_ref_evaluate(r#ref: *const kiln_ref, err: *mut *mut kiln_error) -> kiln_status {
    guard(err, || {
        let live = ref_arg(r#ref, "ref")?.live()?;
        Ok(block_on("kiln_ref_evaluate", live.evaluate())??)
    })
}

/// Frees a ref and sets `*ref` to NULL (NULL / `*ref == NULL`: no-op). Allowed during the build
/// (what the ref read through is released at once if nothing else uses it) and after it.
///
/// Thread safety: must not race with any other use of the same ref.
#[no_mangle]
pub extern "C" fn kiln_ref_free(r#ref: *mut *mut kiln_ref) {
    catch((), || {
        // Dropping the last core ref unmounts its view: do it with the runtime entered.
        let _rt = runtime().ok().map(|rt| rt.enter());
        take_free(r#ref)
    })
}

fn file_stat(stat: FileStat) -> kiln_file_stat {
    kiln_file_stat { name: cstring(stat.path.as_str()), link_target: stat.link_target.as_deref().map(cstring), stat }
}

/// The name: the entry's name for `kiln_ref_read_dir`, the path's last component for
/// `kiln_ref_stat_file` (`/` for the root). Borrowed: valid until the stat (or its list) is
/// freed. NULL if `stat` is NULL.
///
/// Thread safety: any thread, concurrently.
#[no_mangle]
pub extern "C" fn kiln_file_stat_name(stat: *const kiln_file_stat) -> *const c_char {
    catch(ptr::null(), || ref_arg(stat, "stat").map(|s| s.name.as_ptr()).unwrap_or(ptr::null()))
}

/// The Unix `st_mode`: file type bits (test with `S_ISDIR`, `S_ISREG`, `S_ISLNK`, ...) and
/// permission bits including setuid, setgid and sticky. 0 if `stat` is NULL.
///
/// Thread safety: any thread, concurrently.
#[no_mangle]
pub extern "C" fn kiln_file_stat_mode(stat: *const kiln_file_stat) -> u32 {
    catch(0, || ref_arg(stat, "stat").map(|s| s.stat.mode).unwrap_or(0))
}

/// The owner's user id; 0 if `stat` is NULL.
///
/// Thread safety: any thread, concurrently.
#[no_mangle]
pub extern "C" fn kiln_file_stat_uid(stat: *const kiln_file_stat) -> u32 {
    catch(0, || ref_arg(stat, "stat").map(|s| s.stat.uid).unwrap_or(0))
}

/// The owner's group id; 0 if `stat` is NULL.
///
/// Thread safety: any thread, concurrently.
#[no_mangle]
pub extern "C" fn kiln_file_stat_gid(stat: *const kiln_file_stat) -> u32 {
    catch(0, || ref_arg(stat, "stat").map(|s| s.stat.gid).unwrap_or(0))
}

/// The size in bytes (0 for directories, as BuildKit reports them); 0 if `stat` is NULL.
///
/// Thread safety: any thread, concurrently.
#[no_mangle]
pub extern "C" fn kiln_file_stat_size(stat: *const kiln_file_stat) -> u64 {
    catch(0, || ref_arg(stat, "stat").map(|s| s.stat.size).unwrap_or(0))
}

/// The modification time in nanoseconds since the Unix epoch; 0 if `stat` is NULL.
///
/// Thread safety: any thread, concurrently.
#[no_mangle]
pub extern "C" fn kiln_file_stat_mtime_ns(stat: *const kiln_file_stat) -> i64 {
    catch(0, || ref_arg(stat, "stat").map(|s| s.stat.mtime_ns).unwrap_or(0))
}

/// The target of a symlink as stored (not resolved); NULL for anything else or if `stat` is
/// NULL. Borrowed: valid until the stat (or its list) is freed.
///
/// Thread safety: any thread, concurrently.
#[no_mangle]
pub extern "C" fn kiln_file_stat_link_target(stat: *const kiln_file_stat) -> *const c_char {
    catch(ptr::null(), || {
        ref_arg(stat, "stat").ok().and_then(|s| s.link_target.as_ref()).map(|t| t.as_ptr()).unwrap_or(ptr::null())
    })
}

/// Frees a stat from `kiln_ref_stat_file` and sets `*stat` to NULL (NULL / `*stat == NULL`:
/// no-op). Never for one borrowed from `kiln_dir_entries_get`.
///
/// Thread safety: must not race with any other use of the same stat.
#[no_mangle]
pub extern "C" fn kiln_file_stat_free(stat: *mut *mut kiln_file_stat) {
    take_free(stat)
}

/// How many entries the list holds; 0 if `entries` is NULL.
///
/// Thread safety: any thread, concurrently.
#[no_mangle]
pub extern "C" fn kiln_dir_entries_len(entries: *const kiln_dir_entries) -> usize {
    catch(0, || ref_arg(entries, "entries").map(|e| e.entries.len()).unwrap_or(0))
}

/// Entry `index` (0-based, in name order); NULL if out of range or `entries` is NULL. Borrowed:
/// valid until the list is freed; never free it.
///
/// Thread safety: any thread, concurrently.
#[no_mangle]
pub extern "C" fn kiln_dir_entries_get(entries: *const kiln_dir_entries, index: usize) -> *const kiln_file_stat {
    catch(ptr::null(), || {
        ref_arg(entries, "entries")
            .ok()
            .and_then(|e| e.entries.get(index))
            .map(|s| s as *const kiln_file_stat)
            .unwrap_or(ptr::null())
    })
}

/// Frees a directory listing (and every entry borrowed from it) and sets `*entries` to NULL
/// (NULL / `*entries == NULL`: no-op).
///
/// Thread safety: must not race with any other use of the same list.
#[no_mangle]
pub extern "C" fn kiln_dir_entries_free(entries: *mut *mut kiln_dir_entries) {
    take_free(entries)
}
