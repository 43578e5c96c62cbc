//! `kiln_engine` (an open root) and `kiln_result`; the blocking solve (cancellable through a
//! `kiln_cancel_token`) on this library's own tokio runtime, created on first use and shared by
//! every engine of the process; workers, disk usage and prune.

use crate::errors::{kiln_error, kiln_status};
use crate::ffi::{
    bytes_arg, catch, cstring, guard, mut_arg, optional_out, out_arg, put, ref_arg, str_arg, take_free, value_out,
};
use crate::solve::{kiln_solve_opts, ProgressGate};
use crate::state::kiln_state;
use kiln::engine::{Engine, EngineOptions, SnapshotterKind, SolveOptions, SolveResult};
use kiln::solver::display::{DisplayMode, StderrDisplay};
use kiln::Definition;
use std::ffi::{c_char, CString};
use std::ptr;
use std::sync::OnceLock;
use tokio::runtime::Runtime;

/// An open engine holding one root directory (exclusively: a second engine on the same root gets
/// KILN_ERR_ROOT_IN_USE). Thread-safe: any number of threads may solve on one engine at once.
/// Freed with `kiln_engine_free`, which releases the root.
#[allow(non_camel_case_types)]
pub struct kiln_engine {
    pub(crate) engine: Engine,
    /// Worker names and sorted labels, fixed at open (the getters hand out borrowed strings).
    workers: Vec<(CString, Vec<(CString, CString)>)>,
    /// The daemon's address of a connected engine (`kiln_engine_address`).
    address: Option<CString>,
}

/// The outcome of a successful solve. Immutable; any thread; freed with `kiln_result_free`.
#[allow(non_camel_case_types)]
pub struct kiln_result {
    cached: usize,
    executed: usize,
    response: Vec<(CString, CString)>,
}

static RUNTIME: OnceLock<Runtime> = OnceLock::new();

/// The library's runtime, built on first use. Never dropped: its threads live until exit.
pub(crate) fn runtime() -> Result<&'static Runtime, kiln_error> {
    if let Some(rt) = RUNTIME.get() {
        return Ok(rt);
    }
    let rt =
        tokio::runtime::Builder::new_multi_thread().enable_all().thread_name("kiln-engine").build().map_err(|e| {
            kiln_error::from(kiln::Error::with_source(kiln::ErrorKind::Internal, "start the kiln runtime", e))
        })?;
    // Losing a race drops our runtime here, outside any runtime context, which is allowed.
    let _ = RUNTIME.set(rt);
    RUNTIME.get().ok_or_else(|| kiln_error::invalid("kiln runtime vanished"))
}

/// Refuses to block on a runtime thread (tokio would panic; it would also deadlock the solve).
pub(crate) fn not_on_runtime_thread(what: &str) -> Result<(), kiln_error> {
    if tokio::runtime::Handle::try_current().is_ok() {
        return Err(kiln_error::api(
            kiln_status::KILN_ERR_WRONG_THREAD,
            "wrong_thread",
            format!("{what} was called on a kiln engine thread (e.g. inside a progress callback); call it from a thread of your own"),
        ));
    }
    Ok(())
}

/// Opens (creating if needed) the engine root `root` with default workers (runc; overlayfs, else
/// native copies) into `*out` (caller owns it; free with `kiln_engine_free`). Fails with
/// KILN_ERR_ROOT_IN_USE when another engine holds the root, KILN_ERR_WORKER when no worker can
/// run here, KILN_ERR_IO for an unusable directory. Needs root privileges for overlayfs and runc.
///
/// Thread safety: any thread except kiln engine threads (KILN_ERR_WRONG_THREAD).
#[no_mangle]
pub extern "C" fn kiln_engine_open(root: *const c_char, out: *mut *mut kiln_engine) -> kiln_status {
    guard(ptr::null_mut(), || {
        let out = out_arg(out, "out")?;
        let root = root_arg(root)?;
        open(EngineOptions::new(root), out)
    })
}

fn root_arg<'a>(root: *const c_char) -> Result<&'a str, kiln_error> {
    let root = str_arg(root, "root")?;
    if root.is_empty() {
        return Err(kiln_error::invalid("root is empty; give the engine's state directory"));
    }
    Ok(root)
}

/// How to open an engine (`kiln_engine_open_with`): the root plus the options every kiln face
/// has (parallelism, OCI runtime, snapshotters). A mutable builder: not for concurrent use while
/// being changed. Freed with `kiln_engine_opts_free`.
#[allow(non_camel_case_types)]
pub struct kiln_engine_opts {
    inner: EngineOptions,
    /// True once `kiln_engine_opts_add_snapshotter` replaced the default list.
    snapshotters_set: bool,
}

/// New engine options for root directory `root` (copied) with the defaults (parallelism = CPUs,
/// `runc`, snapshotters overlayfs then native) into `*out` (caller owns them; free with
/// `kiln_engine_opts_free`).
///
/// Thread safety: any thread.
#[no_mangle]
pub extern "C" fn kiln_engine_opts_new(root: *const c_char, out: *mut *mut kiln_engine_opts) -> kiln_status {
    guard(ptr::null_mut(), || {
        let out = out_arg(out, "out")?;
        let root = root_arg(root)?;
        put(out, kiln_engine_opts { inner: EngineOptions::new(root), snapshotters_set: false });
        Ok(())
    })
}

/// Frees engine options and sets `*opts` to NULL (NULL / `*opts == NULL`: no-op).
///
/// Thread safety: must not race with any other use of the same options.
#[no_mangle]
pub extern "C" fn kiln_engine_opts_free(opts: *mut *mut kiln_engine_opts) {
    take_free(opts)
}

/// At most `n` steps execute at once (0 counts as 1).
///
/// Thread safety: mutates `opts`; no concurrent use of the same options.
#[no_mangle]
pub extern "C" fn kiln_engine_opts_set_parallelism(opts: *mut kiln_engine_opts, n: usize) -> kiln_status {
    guard(ptr::null_mut(), || {
        mut_arg(opts, "opts")?.inner.parallelism = n.max(1);
        Ok(())
    })
}

/// The OCI runtime binary (`runc`, a path, ...; copied).
///
/// Thread safety: mutates `opts`; no concurrent use of the same options.
#[no_mangle]
pub extern "C" fn kiln_engine_opts_set_runtime(opts: *mut kiln_engine_opts, runtime: *const c_char) -> kiln_status {
    guard(ptr::null_mut(), || {
        let o = mut_arg(opts, "opts")?;
        let r = str_arg(runtime, "runtime")?;
        if r.is_empty() {
            return Err(kiln_error::invalid("runtime is empty; give an OCI runtime binary such as runc"));
        }
        o.inner.runtime = r.to_owned();
        Ok(())
    })
}

/// Adds a snapshotter to try, in call order (`overlayfs` or `native`); the first call replaces
/// the default list. The first that works here becomes the default worker. An unknown name
/// returns KILN_ERR_OPTION naming the accepted ones and leaves `opts` unchanged.
///
/// Thread safety: mutates `opts`; no concurrent use of the same options.
#[no_mangle]
pub extern "C" fn kiln_engine_opts_add_snapshotter(opts: *mut kiln_engine_opts, name: *const c_char) -> kiln_status {
    guard(ptr::null_mut(), || {
        let o = mut_arg(opts, "opts")?;
        let kind: SnapshotterKind = str_arg(name, "name")?.parse()?;
        if !o.snapshotters_set {
            o.inner.snapshotters.clear();
            o.snapshotters_set = true;
        }
        o.inner.snapshotters.push(kind);
        Ok(())
    })
}

/// Opens an engine with `opts` (only read; reusable) into `*out`, like `kiln_engine_open`.
///
/// Thread safety: any thread except kiln engine threads (KILN_ERR_WRONG_THREAD).
#[no_mangle]
pub extern "C" fn kiln_engine_open_with(opts: *const kiln_engine_opts, out: *mut *mut kiln_engine) -> kiln_status {
    guard(ptr::null_mut(), || {
        let out = out_arg(out, "out")?;
        let o = ref_arg(opts, "opts")?;
        open(o.inner.clone(), out)
    })
}

fn open(opts: EngineOptions, out: &mut *mut kiln_engine) -> Result<(), kiln_error> {
    not_on_runtime_thread("kiln_engine_open")?;
    let rt = runtime()?;
    let _ctx = rt.enter();
    put_engine(Engine::open(opts)?, out);
    Ok(())
}

fn put_engine(engine: Engine, out: &mut *mut kiln_engine) {
    let workers = engine
        .workers()
        .into_iter()
        .map(|w| {
            let labels = w.labels.iter().map(|(k, v)| (cstring(k.as_str()), cstring(v.as_str()))).collect();
            (cstring(w.name), labels)
        })
        .collect();
    let address = engine.address().map(cstring);
    put(out, kiln_engine { engine, workers, address });
}

/// TLS settings of `kiln_connect` (tcp:// addresses), as buildctl's `--tlscacert`, `--tlscert`,
/// `--tlskey`, `--tlsservername`. A mutable builder; freed with `kiln_connect_opts_free`.
#[allow(non_camel_case_types)]
#[derive(Default)]
pub struct kiln_connect_opts {
    inner: kiln::client::ConnectOptions,
}

/// New connect options without TLS into `*out` (caller owns them; free with
/// `kiln_connect_opts_free`).
///
/// Thread safety: any thread.
#[no_mangle]
pub extern "C" fn kiln_connect_opts_new(out: *mut *mut kiln_connect_opts) -> kiln_status {
    guard(ptr::null_mut(), || {
        put(out_arg(out, "out")?, kiln_connect_opts::default());
        Ok(())
    })
}

/// Frees connect options and sets `*opts` to NULL (NULL / `*opts == NULL`: no-op).
///
/// Thread safety: must not race with any other use of the same options.
#[no_mangle]
pub extern "C" fn kiln_connect_opts_free(opts: *mut *mut kiln_connect_opts) {
    take_free(opts)
}

/// Sets one TLS setting: `what` names it for errors, `set` stores the copied string.
fn set_tls(
    opts: *mut kiln_connect_opts,
    value: *const c_char,
    what: &str,
    set: impl FnOnce(&mut kiln::client::TlsOptions, String),
) -> kiln_status {
    guard(ptr::null_mut(), || {
        let o = mut_arg(opts, "opts")?;
        let v = str_arg(value, what)?;
        if v.is_empty() {
            return Err(kiln_error::invalid(format!("{what} is empty")));
        }
        set(&mut o.inner.tls, v.to_owned());
        Ok(())
    })
}

/// The PEM file of the CA the daemon's certificate must chain to (copied).
///
/// Thread safety: mutates `opts`; no concurrent use of the same options.
#[no_mangle]
pub extern "C" fn kiln_connect_opts_set_ca_cert(opts: *mut kiln_connect_opts, path: *const c_char) -> kiln_status {
    set_tls(opts, path, "path", |t, v| t.ca_cert = Some(v.into()))
}

/// The PEM file of the client certificate, for daemons that require one (copied).
///
/// Thread safety: mutates `opts`; no concurrent use of the same options.
#[no_mangle]
pub extern "C" fn kiln_connect_opts_set_cert(opts: *mut kiln_connect_opts, path: *const c_char) -> kiln_status {
    set_tls(opts, path, "path", |t, v| t.cert = Some(v.into()))
}

/// The PEM file of the client certificate's key (copied).
///
/// Thread safety: mutates `opts`; no concurrent use of the same options.
#[no_mangle]
pub extern "C" fn kiln_connect_opts_set_key(opts: *mut kiln_connect_opts, path: *const c_char) -> kiln_status {
    set_tls(opts, path, "path", |t, v| t.key = Some(v.into()))
}

/// The name the daemon's certificate must carry (default: the address's host; copied).
///
/// Thread safety: mutates `opts`; no concurrent use of the same options.
#[no_mangle]
pub extern "C" fn kiln_connect_opts_set_server_name(opts: *mut kiln_connect_opts, name: *const c_char) -> kiln_status {
    set_tls(opts, name, "name", |t, v| t.server_name = Some(v))
}

/// Connects to the daemon at `addr` (`unix:///path/to.sock` or `tcp://host:port`: `kiln serve`
/// or a BuildKit daemon) into `*out`, an engine with the embedded one's surface: solves (and
/// `kiln_solve_opts_set_frontend`), disk usage, prune, workers run on the daemon; locals and
/// secrets are read here, `local`/`tar`/`oci` outputs written here. `opts` may be NULL (no TLS).
/// Free with `kiln_engine_free`. Fails with KILN_ERR_IO when the daemon cannot be reached.
///
/// Thread safety: any thread except kiln engine threads (KILN_ERR_WRONG_THREAD).
#[no_mangle]
pub extern "C" fn kiln_connect(
    addr: *const c_char,
    opts: *const kiln_connect_opts,
    out: *mut *mut kiln_engine,
) -> kiln_status {
    guard(ptr::null_mut(), || {
        let out = out_arg(out, "out")?;
        let addr = str_arg(addr, "addr")?;
        let connect = if opts.is_null() { Default::default() } else { ref_arg(opts, "opts")?.inner.clone() };
        not_on_runtime_thread("kiln_connect")?;
        let rt = runtime()?;
        let engine = rt.block_on(Engine::connect(addr, &connect))?;
        let _ctx = rt.enter();
        put_engine(engine, out);
        Ok(())
    })
}

/// The daemon's address of an engine from `kiln_connect`; NULL for an embedded engine (or a
/// NULL `engine`). Borrowed: valid until the engine is freed.
///
/// Thread safety: any thread, concurrently.
#[no_mangle]
pub extern "C" fn kiln_engine_address(engine: *const kiln_engine) -> *const c_char {
    catch(ptr::null(), || {
        ref_arg(engine, "engine").ok().and_then(|e| e.address.as_ref()).map_or(ptr::null(), |a| a.as_ptr())
    })
}

/// Closes an engine (releasing its root) and sets `*engine` to NULL. NULL / `*engine == NULL`:
/// no-op, so a second free through the same variable is harmless.
///
/// Thread safety: only once no other thread uses the engine and no solve on it is running.
#[no_mangle]
pub extern "C" fn kiln_engine_free(engine: *mut *mut kiln_engine) {
    catch((), || {
        // Engine internals may hold tokio resources; drop them with the runtime entered.
        let _ctx = RUNTIME.get().map(|rt| rt.enter());
        take_free(engine)
    })
}

/// A solve's (or build's) options from `opts` (NULL: defaults) with its progress delivery
/// wired in: the C callback (closed by [`Progress::finish`]) and the stderr display.
pub(crate) fn solve_options(opts: *const kiln_solve_opts) -> Result<(SolveOptions, Progress), kiln_error> {
    // A cancel token set on the options travels inside them (`SolveOptions::cancel`): the
    // solve then returns Cancelled once its own steps have cleaned up.
    let (mut so, progress, display) = if opts.is_null() {
        (SolveOptions::default(), None, DisplayMode::Quiet)
    } else {
        let o = ref_arg(opts, "opts")?;
        (o.inner.clone(), o.progress, o.display)
    };
    let (sink, gate) = ProgressGate::sink(progress);
    let display = StderrDisplay::new(display);
    so.progress = match &display {
        Some(d) => sink.tee(d.sink()),
        None => sink,
    };
    Ok((so, Progress { gate, display }))
}

/// The progress delivery of one solve or build.
pub(crate) struct Progress {
    gate: ProgressGate,
    display: Option<StderrDisplay>,
}

impl Progress {
    /// Stops the C callback (returns once a running call has returned) and ends the display.
    pub(crate) fn finish(&self) {
        self.gate.close();
        if let Some(d) = &self.display {
            d.finish();
        }
    }
}

impl kiln_result {
    /// The C view of a solve's (or build's) outcome.
    pub(crate) fn of(r: &SolveResult) -> kiln_result {
        kiln_result {
            cached: r.cached,
            executed: r.executed,
            response: r.exporter_response.iter().map(|(k, v)| (cstring(k.as_str()), cstring(v.as_str()))).collect(),
        }
    }
}

fn solve_def(
    engine: *const kiln_engine,
    def: impl FnOnce() -> Result<(Definition, Option<kiln::graph::ImageConfig>), kiln_error>,
    opts: *const kiln_solve_opts,
    out: *mut *mut kiln_result,
    err: *mut *mut kiln_error,
) -> kiln_status {
    guard(err, || {
        let out = out_arg(out, "out")?;
        let engine = ref_arg(engine, "engine")?;
        let (def, image_config) = def()?;
        not_on_runtime_thread("kiln_engine_solve")?;
        let rt = runtime()?;
        let (mut so, progress) = solve_options(opts)?;
        if let Some(ic) = image_config {
            so.image_config = ic;
        }
        let r = rt.block_on(engine.engine.solve(&def, so));
        progress.finish();
        put(out, kiln_result::of(&r?));
        Ok(())
    })
}

/// A build with the frontend of `opts` (`Engine::build_frontend`), blocking.
fn solve_frontend(
    engine: *const kiln_engine,
    frontend: &str,
    opts: *const kiln_solve_opts,
    out: *mut *mut kiln_result,
    err: *mut *mut kiln_error,
) -> kiln_status {
    guard(err, || {
        let out = out_arg(out, "out")?;
        let engine = ref_arg(engine, "engine")?;
        let frontend_attrs = ref_arg(opts, "opts")?.frontend_attrs.clone();
        not_on_runtime_thread("kiln_engine_solve")?;
        let rt = runtime()?;
        let (so, progress) = solve_options(opts)?;
        let bo = kiln::engine::BuildOptions { solve: so, frontend_attrs };
        let r = rt.block_on(engine.engine.build_frontend(frontend, bo));
        progress.finish();
        put(out, kiln_result::of(&r?));
        Ok(())
    })
}

/// Solves `state` on `engine` with `opts` (NULL: no outputs, no locals), blocking until done, and
/// runs its exporters. The image config (env, cwd, ...) of `state` goes to image exporters.
/// With a frontend set on `opts` (`kiln_solve_opts_set_frontend`), `state` must be NULL and the
/// frontend builds the result (its options: `kiln_solve_opts_add_frontend_opt`).
///
/// On success `*out` holds a new result (caller owns it; free with `kiln_result_free`). On failure
/// the status tells the kind; if `err` is non-NULL, `*err` receives a new error (caller frees it
/// with `kiln_error_free`) with the message, and for KILN_ERR_EXEC the exit code, vertex and log
/// tail; `*err` is set to NULL on success. The same error is also kept as this thread's
/// `kiln_error_last`. The progress callback of `opts`, if any, runs on engine threads and never
/// after this returns. With a cancel token set (`kiln_solve_opts_set_cancel`) that gets
/// cancelled, returns KILN_ERR_CANCELLED once this solve's containers are killed and its mounts
/// and snapshots released; other solves running on the engine are not waited for.
///
/// Thread safety: `engine`, `state` and `opts` are only read; several threads may solve at once
/// with the same engine, state and options. Must not be called from a kiln engine thread, e.g. a
/// progress callback (KILN_ERR_WRONG_THREAD).
#[no_mangle]
pub extern "C" fn kiln_engine_solve(
    engine: *const kiln_engine,
    state: *const kiln_state,
    opts: *const kiln_solve_opts,
    out: *mut *mut kiln_result,
    err: *mut *mut kiln_error,
) -> kiln_status {
    let frontend = ref_arg(opts, "opts").ok().and_then(|o| o.frontend.clone());
    match (state.is_null(), frontend) {
        (true, Some(f)) => return solve_frontend(engine, &f, opts, out, err),
        (false, Some(_)) => {
            return guard(err, || {
                Err(kiln_error::invalid(
                    "kiln_engine_solve takes a state or a frontend (kiln_solve_opts_set_frontend), not both",
                ))
            })
        }
        _ => {}
    }
    solve_def(
        engine,
        || {
            let st = &ref_arg(state, "state")?.st;
            Ok((st.to_definition()?, Some(st.image_config())))
        },
        opts,
        out,
        err,
    )
}

/// Like `kiln_engine_solve`, for a marshalled LLB definition (`pb.Definition` protobuf bytes,
/// e.g. from `kiln_state_to_bytes` or another LLB producer) in `data[0..len]` (copied).
/// Malformed bytes: KILN_ERR_DEFINITION.
///
/// Thread safety: as `kiln_engine_solve`.
#[no_mangle]
pub extern "C" fn kiln_engine_solve_definition(
    engine: *const kiln_engine,
    data: *const u8,
    len: usize,
    opts: *const kiln_solve_opts,
    out: *mut *mut kiln_result,
    err: *mut *mut kiln_error,
) -> kiln_status {
    solve_def(engine, || Ok((Definition::from_bytes(bytes_arg(data, len, "data")?)?, None)), opts, out, err)
}

/// How many workers the engine has (the default first); 0 if `engine` is NULL.
///
/// Thread safety: any thread, concurrently.
#[no_mangle]
pub extern "C" fn kiln_engine_worker_count(engine: *const kiln_engine) -> usize {
    catch(0, || ref_arg(engine, "engine").map(|e| e.workers.len()).unwrap_or(0))
}

/// The name of worker `index` (`runc-overlayfs`); NULL if out of range or `engine` is NULL.
/// Borrowed: valid until the engine is freed.
///
/// Thread safety: any thread, concurrently.
#[no_mangle]
pub extern "C" fn kiln_engine_worker_name(engine: *const kiln_engine, index: usize) -> *const c_char {
    catch(ptr::null(), || {
        ref_arg(engine, "engine")
            .ok()
            .and_then(|e| e.workers.get(index))
            .map(|(n, _)| n.as_ptr())
            .unwrap_or(ptr::null())
    })
}

/// The value of label `key` (`executor`, `snapshotter`, `hostname`, `name`) of worker `index`;
/// NULL if absent, out of range, or an argument is NULL / not UTF-8. Borrowed: valid until the
/// engine is freed.
///
/// Thread safety: any thread, concurrently.
#[no_mangle]
pub extern "C" fn kiln_engine_worker_label(
    engine: *const kiln_engine,
    index: usize,
    key: *const c_char,
) -> *const c_char {
    catch(ptr::null(), || {
        let (Ok(e), Ok(key)) = (ref_arg(engine, "engine"), str_arg(key, "key")) else { return ptr::null() };
        e.workers
            .get(index)
            .and_then(|(_, labels)| labels.iter().find(|(k, _)| k.to_bytes() == key.as_bytes()))
            .map(|(_, v)| v.as_ptr())
            .unwrap_or(ptr::null())
    })
}

/// The build cache's size: the number of cache records into `*records` and the bytes of their
/// own data into `*bytes` (both required). Errors as `kiln_engine_solve` (`err` may be NULL).
///
/// Thread safety: any thread except kiln engine threads (KILN_ERR_WRONG_THREAD); concurrent
/// solves on the engine are fine.
#[no_mangle]
pub extern "C" fn kiln_engine_disk_usage(
    engine: *const kiln_engine,
    records: *mut usize,
    bytes: *mut u64,
    err: *mut *mut kiln_error,
) -> kiln_status {
    guard(err, || {
        let engine = ref_arg(engine, "engine")?;
        let (records, bytes) = (value_out(records, "records")?, value_out(bytes, "bytes")?);
        *records = 0;
        *bytes = 0;
        not_on_runtime_thread("kiln_engine_disk_usage")?;
        let usage = runtime()?.block_on(engine.engine.disk_usage())?;
        *records = usage.len();
        *bytes = usage.iter().map(|u| u.size).sum();
        Ok(())
    })
}

/// Removes build cache records, least recently used first, until at most `keep_bytes` remain
/// (`all`: everything), then every snapshot nothing needs. What went is reported through
/// `removed` (snapshots) and `freed_bytes`, each optional (NULL: not reported). Errors as
/// `kiln_engine_solve` (`err` may be NULL).
///
/// Thread safety: any thread except kiln engine threads (KILN_ERR_WRONG_THREAD); waits for
/// running solves on the engine to finish first.
#[no_mangle]
pub extern "C" fn kiln_engine_prune(
    engine: *const kiln_engine,
    keep_bytes: u64,
    all: bool,
    removed: *mut usize,
    freed_bytes: *mut u64,
    err: *mut *mut kiln_error,
) -> kiln_status {
    guard(err, || {
        let engine = ref_arg(engine, "engine")?;
        let (removed, freed_bytes) = (optional_out(removed), optional_out(freed_bytes));
        not_on_runtime_thread("kiln_engine_prune")?;
        let report = runtime()?.block_on(engine.engine.prune(keep_bytes, all))?;
        if let Some(r) = removed {
            *r = report.removed;
        }
        if let Some(f) = freed_bytes {
            *f = report.freed_bytes;
        }
        Ok(())
    })
}

/// How many vertices of the solve came from the cache; 0 if `result` is NULL.
///
/// Thread safety: any thread, concurrently.
#[no_mangle]
pub extern "C" fn kiln_result_cached(result: *const kiln_result) -> usize {
    catch(0, || ref_arg(result, "result").map(|r| r.cached).unwrap_or(0))
}

/// How many vertices of the solve executed; 0 if `result` is NULL.
///
/// Thread safety: any thread, concurrently.
#[no_mangle]
pub extern "C" fn kiln_result_executed(result: *const kiln_result) -> usize {
    catch(0, || ref_arg(result, "result").map(|r| r.executed).unwrap_or(0))
}

/// How many exporter response entries (e.g. `containerimage.digest`) the result holds, sorted by
/// key; 0 if `result` is NULL.
///
/// Thread safety: any thread, concurrently.
#[no_mangle]
pub extern "C" fn kiln_result_exporter_response_len(result: *const kiln_result) -> usize {
    catch(0, || ref_arg(result, "result").map(|r| r.response.len()).unwrap_or(0))
}

/// The key of exporter response entry `index`; NULL if out of range or `result` is NULL.
/// Borrowed: valid until the result is freed.
///
/// Thread safety: any thread, concurrently.
#[no_mangle]
pub extern "C" fn kiln_result_exporter_response_key(result: *const kiln_result, index: usize) -> *const c_char {
    catch(ptr::null(), || {
        ref_arg(result, "result")
            .ok()
            .and_then(|r| r.response.get(index))
            .map(|(k, _)| k.as_ptr())
            .unwrap_or(ptr::null())
    })
}

/// The value of exporter response entry `index`; NULL if out of range or `result` is NULL.
/// Borrowed: valid until the result is freed.
///
/// Thread safety: any thread, concurrently.
#[no_mangle]
pub extern "C" fn kiln_result_exporter_response_value(result: *const kiln_result, index: usize) -> *const c_char {
    catch(ptr::null(), || {
        ref_arg(result, "result")
            .ok()
            .and_then(|r| r.response.get(index))
            .map(|(_, v)| v.as_ptr())
            .unwrap_or(ptr::null())
    })
}

/// The exporter response value for `key`; NULL if absent, or if `result` or `key` is NULL or
/// `key` is not UTF-8. Borrowed: valid until the result is freed.
///
/// Thread safety: any thread, concurrently.
#[no_mangle]
pub extern "C" fn kiln_result_exporter_response(result: *const kiln_result, key: *const c_char) -> *const c_char {
    catch(ptr::null(), || {
        let (Ok(r), Ok(key)) = (ref_arg(result, "result"), str_arg(key, "key")) else { return ptr::null() };
        r.response.iter().find(|(k, _)| k.to_bytes() == key.as_bytes()).map(|(_, v)| v.as_ptr()).unwrap_or(ptr::null())
    })
}

/// Frees a result and sets `*result` to NULL (NULL / `*result == NULL`: no-op).
///
/// Thread safety: must not race with any other use of the same result.
#[no_mangle]
pub extern "C" fn kiln_result_free(result: *mut *mut kiln_result) {
    take_free(result)
}
