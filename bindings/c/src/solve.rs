//! `kiln_solve_opts`: what a solve exports and reads (outputs, locals, secrets, cache exports and
//! imports, all in the CSV syntax of every kiln face), the C progress callback and
//! `kiln_cancel_token` (cancels blocking solves from any thread).

use crate::errors::kiln_status;
use crate::ffi::{bytes_arg, catch, cstring, guard, mut_arg, out_arg, put, ref_arg, str_arg, take_free};
use kiln::engine::{CancelToken, SolveOptions};
use kiln::solver::display::DisplayMode;
use kiln::solver::{LogStream, ProgressEvent, ProgressSink};
use std::ffi::{c_char, c_void, CString};
use std::ptr;
use std::sync::{Arc, Mutex};

/// Options of one solve. A mutable builder: not for concurrent use while being changed; once
/// built it may be passed (as `const`) to any number of concurrent `kiln_engine_solve` calls.
/// Freed with `kiln_solve_opts_free`.
#[allow(non_camel_case_types)]
pub struct kiln_solve_opts {
    pub(crate) inner: SolveOptions,
    pub(crate) progress: Option<(ProgressFn, UserData)>,
    /// The built-in display on stderr (`kiln_solve_opts_set_progress_display`; default quiet).
    pub(crate) display: DisplayMode,
    /// The frontend `kiln_engine_solve` runs with a NULL state (`kiln_solve_opts_set_frontend`).
    pub(crate) frontend: Option<String>,
    /// Frontend options (`kiln_solve_opts_add_frontend_opt`): the frontend's, or a build's.
    pub(crate) frontend_attrs: std::collections::BTreeMap<String, String>,
}

/// A cancellation switch for solves (`kiln_solve_opts_set_cancel`). Once cancelled it stays
/// cancelled: every solve using it, running or started later, returns KILN_ERR_CANCELLED.
/// Thread-safe: `kiln_cancel_token_cancel` may be called from any thread, including a progress
/// callback. Freed with `kiln_cancel_token_free` (options holding it keep their own reference).
#[allow(non_camel_case_types)]
pub struct kiln_cancel_token {
    /// Shared with every options object the token was set on (clones share one flag).
    token: CancelToken,
}

/// A new, not yet cancelled token into `*out` (caller owns it; free with `kiln_cancel_token_free`).
///
/// Thread safety: any thread.
#[no_mangle]
pub extern "C" fn kiln_cancel_token_new(out: *mut *mut kiln_cancel_token) -> kiln_status {
    guard(ptr::null_mut(), || {
        put(out_arg(out, "out")?, kiln_cancel_token { token: CancelToken::new() });
        Ok(())
    })
}

/// Cancels every solve using `token` (running ones and later ones). A running solve returns
/// KILN_ERR_CANCELLED once its own containers are killed and its mounts and snapshots released
/// (it does not wait for other solves of the engine).
/// Idempotent; returns at once (it does not wait for the solves). NULL: KILN_ERR_NULL_ARGUMENT.
///
/// Thread safety: any thread, concurrently, including a progress callback.
#[no_mangle]
pub extern "C" fn kiln_cancel_token_cancel(token: *const kiln_cancel_token) -> kiln_status {
    guard(ptr::null_mut(), || {
        ref_arg(token, "token")?.token.cancel();
        Ok(())
    })
}

/// Whether `token` has been cancelled; false if `token` is NULL.
///
/// Thread safety: any thread, concurrently.
#[no_mangle]
pub extern "C" fn kiln_cancel_token_is_cancelled(token: *const kiln_cancel_token) -> bool {
    catch(false, || ref_arg(token, "token").map(|t| t.token.is_cancelled()).unwrap_or(false))
}

/// Frees a token and sets `*token` to NULL (NULL / `*token == NULL`: no-op). Options it was set on
/// keep working with it (they hold their own reference).
///
/// Thread safety: must not race with any other use of the same handle.
#[no_mangle]
pub extern "C" fn kiln_cancel_token_free(token: *mut *mut kiln_cancel_token) {
    take_free(token)
}

/// What a progress event is. Stable numbers; retired numbers stay reserved.
#[allow(non_camel_case_types)]
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum kiln_progress_kind {
    /// A vertex began executing (`vertex`, `name`).
    KILN_PROGRESS_VERTEX_STARTED = 1,
    /// A vertex's result came from the cache (`vertex`, `name`).
    KILN_PROGRESS_VERTEX_CACHED = 2,
    /// A vertex finished executing (`vertex`, `name`, `duration_secs`).
    KILN_PROGRESS_VERTEX_COMPLETED = 3,
    /// A vertex failed (`vertex`, `name`, `message` = the error).
    KILN_PROGRESS_VERTEX_ERROR = 4,
    /// Container output (`vertex`, `stream`, `data`/`data_len`).
    KILN_PROGRESS_LOG = 5,
    /// A byte count (`vertex`, `message` = what is counted, `current`, `total` if `has_total`).
    KILN_PROGRESS_STATUS = 6,
    /// A non-fatal problem (`message`).
    KILN_PROGRESS_WARNING = 7,
}

/// One progress event. Every pointer is borrowed and valid only during the callback; copy what
/// you keep. Fields a kind does not use are NULL / 0. New fields are only ever appended.
#[allow(non_camel_case_types)]
#[repr(C)]
pub struct kiln_progress_event {
    /// What happened.
    pub kind: kiln_progress_kind,
    /// The op digest (`sha256:...`) or an exporter id (`export:local`); NULL for warnings.
    pub vertex: *const c_char,
    /// The vertex's display name for vertex events.
    pub name: *const c_char,
    /// The error (VERTEX_ERROR), the counter id (STATUS) or the warning text (WARNING).
    pub message: *const c_char,
    /// Log bytes (LOG); not NUL-terminated, may hold any bytes.
    pub data: *const u8,
    /// Length of `data`.
    pub data_len: usize,
    /// LOG: 1 = stdout, 2 = stderr; 0 otherwise.
    pub stream: i32,
    /// STATUS: bytes done.
    pub current: u64,
    /// STATUS: total bytes when `has_total`.
    pub total: u64,
    /// STATUS: whether `total` is known.
    pub has_total: bool,
    /// VERTEX_COMPLETED: wall time of the execution in seconds.
    pub duration_secs: f64,
    /// The whole event as one JSON object (the `rawjson` progress format).
    pub json: *const c_char,
}

/// The progress callback: `ev` and everything it points to are valid only during the call.
/// Called from engine threads (not the thread that called `kiln_engine_solve`), one call at a
/// time per solve, and never after `kiln_engine_solve` has returned. It must not call
/// `kiln_engine_solve` (that returns KILN_ERR_WRONG_THREAD) and should return quickly.
#[allow(non_camel_case_types)]
pub type kiln_progress_cb = Option<unsafe extern "C" fn(ev: *const kiln_progress_event, userdata: *mut c_void)>;

pub(crate) type ProgressFn = unsafe extern "C" fn(*const kiln_progress_event, *mut c_void);

/// The caller's userdata pointer. The caller promised (kiln.h) that it may be used from engine
/// threads; kiln only passes it back.
#[derive(Clone, Copy)]
pub(crate) struct UserData(pub(crate) *mut c_void);
// SAFETY: kiln never dereferences the pointer; the caller guarantees it is usable from other threads.
unsafe impl Send for UserData {}
// SAFETY: as above; calls are serialised by a mutex in `ProgressGate`.
unsafe impl Sync for UserData {}

/// Forwards events to the C callback until closed; closing waits for a running callback, so none
/// runs after `kiln_engine_solve` returns.
pub(crate) struct ProgressGate {
    open: Arc<Mutex<bool>>,
}

impl ProgressGate {
    /// A sink for `opts`' callback (a no-op sink without one) and the gate that stops it.
    pub(crate) fn sink(progress: Option<(ProgressFn, UserData)>) -> (ProgressSink, ProgressGate) {
        let open = Arc::new(Mutex::new(true));
        let gate = ProgressGate { open: open.clone() };
        let Some((cb, ud)) = progress else { return (ProgressSink::none(), gate) };
        let sink = ProgressSink::new(move |ev| {
            let guard = open.lock().unwrap_or_else(|p| p.into_inner());
            if *guard {
                let _mark = crate::build::ProgressDelivery::enter();
                // A panic while building the event must not unwind into the solver.
                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| deliver(cb, ud, &ev)));
            }
        });
        (sink, gate)
    }

    /// Stops delivery; returns after any running callback has returned.
    pub(crate) fn close(&self) {
        *self.open.lock().unwrap_or_else(|p| p.into_inner()) = false;
    }
}

fn deliver(cb: ProgressFn, ud: UserData, ev: &ProgressEvent) {
    let json = cstring(ev.to_json());
    let opt = |s: &str| Some(cstring(s));
    let (kind, vertex, name, message): (_, Option<CString>, Option<CString>, Option<CString>) = match ev {
        ProgressEvent::VertexStarted { vertex, name } => {
            (kiln_progress_kind::KILN_PROGRESS_VERTEX_STARTED, opt(vertex), opt(name), None)
        }
        ProgressEvent::VertexCached { vertex, name } => {
            (kiln_progress_kind::KILN_PROGRESS_VERTEX_CACHED, opt(vertex), opt(name), None)
        }
        ProgressEvent::VertexCompleted { vertex, name, .. } => {
            (kiln_progress_kind::KILN_PROGRESS_VERTEX_COMPLETED, opt(vertex), opt(name), None)
        }
        ProgressEvent::VertexError { vertex, name, error } => {
            (kiln_progress_kind::KILN_PROGRESS_VERTEX_ERROR, opt(vertex), opt(name), opt(error))
        }
        ProgressEvent::Log { vertex, .. } => (kiln_progress_kind::KILN_PROGRESS_LOG, opt(vertex), None, None),
        ProgressEvent::Status { vertex, id, .. } => {
            (kiln_progress_kind::KILN_PROGRESS_STATUS, opt(vertex), None, opt(id))
        }
        ProgressEvent::Warning { message } => (kiln_progress_kind::KILN_PROGRESS_WARNING, None, None, opt(message)),
    };
    let p = |c: &Option<CString>| c.as_ref().map(|c| c.as_ptr()).unwrap_or(ptr::null());
    let mut e = kiln_progress_event {
        kind,
        vertex: p(&vertex),
        name: p(&name),
        message: p(&message),
        data: ptr::null(),
        data_len: 0,
        stream: 0,
        current: 0,
        total: 0,
        has_total: false,
        duration_secs: 0.0,
        json: json.as_ptr(),
    };
    match ev {
        ProgressEvent::Log { stream, data, .. } => {
            e.data = data.as_ptr();
            e.data_len = data.len();
            e.stream = match stream {
                LogStream::Stdout => 1,
                LogStream::Stderr => 2,
            };
        }
        ProgressEvent::Status { current, total, .. } => {
            e.current = *current;
            e.total = total.unwrap_or(0);
            e.has_total = total.is_some();
        }
        ProgressEvent::VertexCompleted { duration, .. } => e.duration_secs = duration.as_secs_f64(),
        _ => {}
    }
    // SAFETY: `cb` is the caller's callback with the documented signature; `e` and the strings
    // it points to outlive the call.
    unsafe { cb(&e, ud.0) };
}

/// New empty solve options into `*out` (caller owns them; free with `kiln_solve_opts_free`).
///
/// Thread safety: any thread.
#[no_mangle]
pub extern "C" fn kiln_solve_opts_new(out: *mut *mut kiln_solve_opts) -> kiln_status {
    guard(ptr::null_mut(), || {
        put(
            out_arg(out, "out")?,
            kiln_solve_opts {
                inner: SolveOptions::default(),
                progress: None,
                display: DisplayMode::Quiet,
                frontend: None,
                frontend_attrs: Default::default(),
            },
        );
        Ok(())
    })
}

/// Frees solve options and sets `*opts` to NULL (NULL / `*opts == NULL`: no-op, so a second free
/// through the same variable is harmless).
///
/// Thread safety: must not race with any other use of the same options (including a solve).
#[no_mangle]
pub extern "C" fn kiln_solve_opts_free(opts: *mut *mut kiln_solve_opts) {
    take_free(opts)
}

fn edit(
    opts: *mut kiln_solve_opts,
    f: impl FnOnce(&mut kiln_solve_opts) -> Result<(), crate::errors::kiln_error>,
) -> kiln_status {
    guard(ptr::null_mut(), || f(mut_arg(opts, "opts")?))
}

/// Adds a result exporter in CSV form: `type=local,dest=DIR`, `type=tar,dest=FILE`,
/// `type=oci,dest=FILE`, `type=image,name=REF,push=true`, ... An invalid string returns
/// KILN_ERR_OPTION and leaves `opts` unchanged; the message names the key and what is accepted.
///
/// Thread safety: mutates `opts`; no concurrent use of the same options.
#[no_mangle]
pub extern "C" fn kiln_solve_opts_add_output(opts: *mut kiln_solve_opts, csv: *const c_char) -> kiln_status {
    edit(opts, |o| {
        o.inner.outputs.push(str_arg(csv, "csv")?.parse()?);
        Ok(())
    })
}

/// Adds a cache exporter in CSV form (`type=local,dest=DIR,mode=max`,
/// `type=registry,ref=HOST/REPO:TAG`, ...). Invalid: KILN_ERR_OPTION, `opts` unchanged.
///
/// Thread safety: mutates `opts`; no concurrent use of the same options.
#[no_mangle]
pub extern "C" fn kiln_solve_opts_add_cache_export(opts: *mut kiln_solve_opts, csv: *const c_char) -> kiln_status {
    edit(opts, |o| {
        o.inner.cache_exports.push(str_arg(csv, "csv")?.parse()?);
        Ok(())
    })
}

/// Adds a cache importer in CSV form (`type=local,src=DIR`, `type=registry,ref=...`).
/// Invalid: KILN_ERR_OPTION, `opts` unchanged.
///
/// Thread safety: mutates `opts`; no concurrent use of the same options.
#[no_mangle]
pub extern "C" fn kiln_solve_opts_add_cache_import(opts: *mut kiln_solve_opts, csv: *const c_char) -> kiln_status {
    edit(opts, |o| {
        o.inner.cache_imports.push(str_arg(csv, "csv")?.parse()?);
        Ok(())
    })
}

/// Sets the frontend `kiln_engine_solve` runs when given a NULL state (BuildKit's `Solve` with
/// a frontend): `dockerfile.v0` reads the Dockerfile from the local `dockerfile` and the build
/// context from the local `context` (`kiln_solve_opts_add_local`); its result and image config go
/// to the outputs. An unknown name fails the solve with KILN_ERR_UNSUPPORTED. NULL unsets it.
///
/// Thread safety: mutates `opts`; no concurrent use of the same options.
#[no_mangle]
pub extern "C" fn kiln_solve_opts_set_frontend(opts: *mut kiln_solve_opts, name: *const c_char) -> kiln_status {
    edit(opts, |o| {
        o.frontend = crate::state::optional_str(name, "name")?;
        Ok(())
    })
}

/// Adds a frontend option under BuildKit's name (`filename`, `target`, `build-arg:NAME`,
/// `label:NAME`, `context:NAME`, `no-cache`, `platform`, `cache-imports`, ...), `key` and
/// `value` copied; a repeated key replaces the earlier value. Read by the frontend of
/// `kiln_solve_opts_set_frontend`, or by a `kiln_engine_build` callback as its build's options.
///
/// Thread safety: mutates `opts`; no concurrent use of the same options.
#[no_mangle]
pub extern "C" fn kiln_solve_opts_add_frontend_opt(
    opts: *mut kiln_solve_opts,
    key: *const c_char,
    value: *const c_char,
) -> kiln_status {
    edit(opts, |o| {
        let (k, v) = (str_arg(key, "key")?, str_arg(value, "value")?);
        o.frontend_attrs.insert(k.to_owned(), v.to_owned());
        Ok(())
    })
}

/// Maps `local://NAME` sources called `name` to directory `dir` (both copied; the directory is
/// read during the solve). A repeated name replaces the earlier directory.
///
/// Thread safety: mutates `opts`; no concurrent use of the same options.
#[no_mangle]
pub extern "C" fn kiln_solve_opts_add_local(
    opts: *mut kiln_solve_opts,
    name: *const c_char,
    dir: *const c_char,
) -> kiln_status {
    edit(opts, |o| {
        let (n, d) = (str_arg(name, "name")?, str_arg(dir, "dir")?);
        if n.is_empty() {
            return Err(crate::errors::kiln_error::invalid("local name is empty; give the NAME of local://NAME"));
        }
        o.inner.locals.insert(n.to_owned(), d.into());
        Ok(())
    })
}

/// Forwards the SSH agent listening on unix socket `socket` to `ssh` mounts with agent id `id`
/// (`default` when a mount names none; both copied). Each mount gets its own relay socket owned
/// by the mount's uid/gid; the agent's own socket is never exposed. A repeated id replaces the
/// earlier socket.
///
/// Thread safety: mutates `opts`; no concurrent use of the same options.
#[no_mangle]
pub extern "C" fn kiln_solve_opts_add_ssh(
    opts: *mut kiln_solve_opts,
    id: *const c_char,
    socket: *const c_char,
) -> kiln_status {
    edit(opts, |o| {
        let (id, socket) = (str_arg(id, "id")?, str_arg(socket, "socket")?);
        let id = if id.is_empty() { kiln::options::DEFAULT_SSH_ID } else { id };
        o.inner.ssh.insert(id.to_owned(), socket.into());
        Ok(())
    })
}

/// Grants entitlement `name` to the solve: `network.host` (execs with host networking) or
/// `security.insecure` (privileged execs); anything else is KILN_ERR_OPTION naming both.
///
/// Thread safety: mutates `opts`; no concurrent use of the same options.
#[no_mangle]
pub extern "C" fn kiln_solve_opts_add_entitlement(opts: *mut kiln_solve_opts, name: *const c_char) -> kiln_status {
    edit(opts, |o| {
        let e: kiln::options::Entitlement = str_arg(name, "name")?.parse()?;
        o.inner.entitlements.insert(e);
        Ok(())
    })
}

/// Loads `source` as secret `id` through core (the same size, file-type and duplicate-id rules,
/// and the same errors, as every other face).
fn add_secret(
    o: &mut kiln_solve_opts,
    id: &str,
    source: kiln::options::SecretSource,
) -> Result<(), crate::errors::kiln_error> {
    let mut all: Vec<(String, kiln::options::SecretSource)> =
        o.inner.secrets.iter().map(|(k, v)| (k.clone(), kiln::options::SecretSource::Value(v.clone()))).collect();
    all.push((id.to_owned(), source));
    o.inner.secrets = kiln::options::load_secrets(all.iter().map(|(k, s)| (k.as_str(), s)))?;
    Ok(())
}

/// Adds secret `id` with value `data[0..len]` (copied; any bytes, at most 500 KiB; `data` may be
/// NULL when `len == 0`). Secrets are mounted as files and never cached or exported; an id given
/// twice is KILN_ERR_OPTION.
///
/// Thread safety: mutates `opts`; no concurrent use of the same options.
#[no_mangle]
pub extern "C" fn kiln_solve_opts_add_secret_value(
    opts: *mut kiln_solve_opts,
    id: *const c_char,
    data: *const u8,
    len: usize,
) -> kiln_status {
    edit(opts, |o| {
        let id = str_arg(id, "id")?;
        let v = bytes_arg(data, len, "data")?.to_vec();
        add_secret(o, id, kiln::options::SecretSource::value(v))
    })
}

/// Adds secret `id` read from the file at `path` now (a regular file of at most 500 KiB).
/// Errors name the id, never the value or the path (a path may be a value given by mistake).
///
/// Thread safety: mutates `opts`; no concurrent use of the same options.
#[no_mangle]
pub extern "C" fn kiln_solve_opts_add_secret_file(
    opts: *mut kiln_solve_opts,
    id: *const c_char,
    path: *const c_char,
) -> kiln_status {
    edit(opts, |o| {
        let id = str_arg(id, "id")?;
        let path = str_arg(path, "path")?;
        add_secret(o, id, kiln::options::SecretSource::file(path))
    })
}

/// Sets (or with `cb == NULL` clears) the progress callback. `userdata` is passed back untouched
/// and must stay valid, and usable from engine threads, until every solve using these options
/// has returned. See `kiln_progress_cb` for when and where it is called.
///
/// Thread safety: mutates `opts`; no concurrent use of the same options.
#[no_mangle]
pub extern "C" fn kiln_solve_opts_set_progress(
    opts: *mut kiln_solve_opts,
    cb: kiln_progress_cb,
    userdata: *mut c_void,
) -> kiln_status {
    edit(opts, |o| {
        o.progress = cb.map(|f| (f, UserData(userdata)));
        Ok(())
    })
}

/// Makes solves with these options cancellable through `token` (or with `token == NULL` not
/// cancellable). The options keep their own reference: the caller may free `token` afterwards
/// (keep it to be able to cancel). See `kiln_cancel_token_cancel`.
///
/// Thread safety: mutates `opts`; no concurrent use of the same options; `token` is only read.
#[no_mangle]
pub extern "C" fn kiln_solve_opts_set_cancel(
    opts: *mut kiln_solve_opts,
    token: *const kiln_cancel_token,
) -> kiln_status {
    edit(opts, |o| {
        // NULL clears the token (instead of being an error as elsewhere).
        o.inner.cancel = if token.is_null() { None } else { Some(ref_arg(token, "token")?.token.clone()) };
        Ok(())
    })
}

/// Shows progress on the process's stderr with kiln's built-in display: `mode` is `auto` (a live
/// view when stderr is a terminal, plain lines otherwise), `tty`, `plain` (buildctl-style
/// lines), `rawjson` (one JSON object per event) or `quiet` (the default). Works together with
/// a progress callback. An unknown mode returns KILN_ERR_OPTION naming the accepted ones and
/// leaves `opts` unchanged.
///
/// Thread safety: mutates `opts`; no concurrent use of the same options.
#[no_mangle]
pub extern "C" fn kiln_solve_opts_set_progress_display(opts: *mut kiln_solve_opts, mode: *const c_char) -> kiln_status {
    edit(opts, |o| {
        o.display = str_arg(mode, "mode")?.parse()?;
        Ok(())
    })
}
