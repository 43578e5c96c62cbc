//! The graph builder: `kiln_state` (an immutable filesystem state), `kiln_exec_opts` (how a run
//! runs), `kiln_exec` (a run's rootfs and mount outputs) and `kiln_bytes` (a marshalled
//! definition). Every builder call returns a new state and leaves its inputs untouched.

use crate::errors::{kiln_error, kiln_status};
use crate::ffi::{array_arg, bytes_arg, catch, guard, mut_arg, out_arg, put, ref_arg, str_arg, take_free};
use kiln::digest::Digest;
use kiln::graph::{
    CacheSharing, CopyOptions, ExecOptions, ExecState, GitOptions, HttpOptions, MkdirOptions, MkfileOptions, MountSpec,
    Network, OciRef, RmOptions, State,
};
use std::ffi::c_char;
use std::ptr;

/// An immutable filesystem state (the output of an op, or scratch) with its env/cwd metadata.
/// Created by the `kiln_state_*` constructors, freed with `kiln_state_free`. Immutable: any
/// number of threads may use one state concurrently as a `const` argument.
#[allow(non_camel_case_types)]
pub struct kiln_state {
    pub(crate) st: State,
}

/// The result of `kiln_state_run`: the rootfs after the run and the outputs of writable bind
/// mounts. Immutable; any thread; freed with `kiln_exec_free`.
#[allow(non_camel_case_types)]
pub struct kiln_exec {
    ex: ExecState,
}

/// Options of `kiln_state_run` (env, cwd, user, mounts, readonly rootfs, network). A mutable
/// builder: not for concurrent use; freed with `kiln_exec_opts_free`.
#[allow(non_camel_case_types)]
pub struct kiln_exec_opts {
    o: ExecOptions,
}

/// An owned byte buffer (a marshalled LLB definition). Immutable; any thread; freed with
/// `kiln_bytes_free`.
#[allow(non_camel_case_types)]
pub struct kiln_bytes {
    data: Vec<u8>,
}

/// Network mode of a run (values of `kiln_exec_opts_set_network`). Stable numbers.
#[allow(non_camel_case_types)]
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub enum kiln_network {
    /// An own network namespace (the default).
    KILN_NETWORK_SANDBOX = 0,
    /// The host's network namespace.
    KILN_NETWORK_HOST = 1,
    /// No network at all.
    KILN_NETWORK_NONE = 2,
}

/// Sharing mode of a cache mount (values of `kiln_exec_opts_add_cache_mount`). Stable numbers.
#[allow(non_camel_case_types)]
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub enum kiln_cache_sharing {
    /// Concurrent users share one directory.
    KILN_CACHE_SHARED = 0,
    /// Concurrent users get separate directories.
    KILN_CACHE_PRIVATE = 1,
    /// Concurrent users wait for each other.
    KILN_CACHE_LOCKED = 2,
}

/// `kiln_state_copy` flag: create missing parents of the destination.
pub const KILN_COPY_CREATE_DEST_PATH: u32 = 1;
/// `kiln_state_copy` flag: follow a symlink at the source path.
pub const KILN_COPY_FOLLOW_SYMLINKS: u32 = 1 << 1;
/// `kiln_state_copy` flag: copy a directory's contents rather than the directory.
pub const KILN_COPY_DIR_CONTENTS: u32 = 1 << 2;
/// `kiln_state_copy` flag: the source path is a wildcard pattern.
pub const KILN_COPY_ALLOW_WILDCARD: u32 = 1 << 3;
/// `kiln_state_copy` flag: a wildcard matching nothing is not an error.
pub const KILN_COPY_ALLOW_EMPTY_WILDCARD: u32 = 1 << 4;
/// `kiln_state_mkdir` flag: create missing parents.
pub const KILN_MKDIR_PARENTS: u32 = 1;
/// `kiln_state_rm` flag: a missing path is not an error.
pub const KILN_RM_ALLOW_NOT_FOUND: u32 = 1;
/// `kiln_state_rm` flag: the path is a wildcard pattern.
pub const KILN_RM_ALLOW_WILDCARD: u32 = 1 << 1;
/// `kiln_state_git` flag: keep the `.git` directory in the checkout.
pub const KILN_GIT_KEEP_GIT_DIR: u32 = 1;

/// Decodes `argv[0..argc]` (every entry a UTF-8 string; `argv` may be NULL when `argc == 0`).
fn strings_arg(argv: *const *const c_char, argc: usize, arg: &str) -> Result<Vec<String>, kiln_error> {
    array_arg(argv, argc, arg)?
        .iter()
        .enumerate()
        .map(|(i, a)| str_arg(*a, &format!("{arg}[{i}]")).map(str::to_owned))
        .collect()
}

/// A NUL-terminated UTF-8 string, or None for NULL.
fn optional_str(p: *const c_char, arg: &str) -> Result<Option<String>, kiln_error> {
    if p.is_null() {
        return Ok(None);
    }
    str_arg(p, arg).map(|s| Some(s.to_owned()))
}

fn check_flags(flags: u32, known: u32, what: &str) -> Result<(), kiln_error> {
    if flags & !known != 0 {
        return Err(kiln_error::invalid(format!(
            "unknown {what} flag bits {:#x}; accepted: the KILN_{}_* constants (mask {known:#x})",
            flags & !known,
            what.to_uppercase()
        )));
    }
    Ok(())
}

fn new_state(out: *mut *mut kiln_state, f: impl FnOnce() -> Result<State, kiln_error>) -> kiln_status {
    guard(ptr::null_mut(), || {
        let out = out_arg(out, "out")?;
        let st = f()?;
        put(out, kiln_state { st });
        Ok(())
    })
}

/// Frees a state and sets `*state` to NULL (`state == NULL` or `*state == NULL`: no-op). The
/// rule against double free: free through the variable that holds the handle; a second
/// `kiln_state_free(&s)` is then a no-op and passing the NULLed `s` to any function returns
/// KILN_ERR_NULL_ARGUMENT. States built from this one stay valid (they share data internally).
///
/// Thread safety: must not race with any other use of the same state.
#[no_mangle]
pub extern "C" fn kiln_state_free(state: *mut *mut kiln_state) {
    take_free(state)
}

/// The empty filesystem into `*out` (caller owns it; free with `kiln_state_free`).
///
/// Thread safety: any thread.
#[no_mangle]
pub extern "C" fn kiln_state_scratch(out: *mut *mut kiln_state) -> kiln_status {
    new_state(out, || Ok(State::scratch()))
}

/// `local://NAME`: a directory the solve maps with `kiln_solve_opts_add_local(opts, name, dir)`.
/// `name` is copied. Result in `*out` (caller owns it).
///
/// Thread safety: any thread.
#[no_mangle]
pub extern "C" fn kiln_state_local(name: *const c_char, out: *mut *mut kiln_state) -> kiln_status {
    new_state(out, || Ok(State::local(str_arg(name, "name")?)))
}

/// A registry image (`busybox`, `localhost:5000/app:1`, `repo@sha256:...`), normalised like
/// docker does. Result in `*out` (caller owns it).
///
/// Thread safety: any thread.
#[no_mangle]
pub extern "C" fn kiln_state_image(reference: *const c_char, out: *mut *mut kiln_state) -> kiln_status {
    new_state(out, || Ok(State::image(str_arg(reference, "reference")?)))
}

/// An image from the OCI layout directory `dir`; `reference` is a tag (looked up through the
/// `org.opencontainers.image.ref.name` annotation) or a digest `sha256:<64 hex>`. Result in
/// `*out` (caller owns it). A malformed digest returns KILN_ERR_INVALID_ARGUMENT.
///
/// Thread safety: any thread.
#[no_mangle]
pub extern "C" fn kiln_state_oci_layout(
    dir: *const c_char,
    reference: *const c_char,
    out: *mut *mut kiln_state,
) -> kiln_status {
    new_state(out, || {
        let dir = str_arg(dir, "dir")?;
        let r = str_arg(reference, "reference")?;
        let r = if r.starts_with("sha256:") {
            OciRef::Digest(Digest::parse(r).map_err(|e| kiln_error::invalid(format!("reference: {e}")))?)
        } else {
            OciRef::Tag(r.to_owned())
        };
        Ok(State::oci_layout(dir, r))
    })
}

/// A file downloaded from `url` (http or https). `checksum` (`sha256:<64 hex>`, or NULL) is
/// verified; `filename` (or NULL: the URL's last segment) names the file in the result. Result in
/// `*out` (caller owns it). A malformed checksum returns KILN_ERR_INVALID_ARGUMENT.
///
/// Thread safety: any thread.
#[no_mangle]
pub extern "C" fn kiln_state_http(
    url: *const c_char,
    checksum: *const c_char,
    filename: *const c_char,
    out: *mut *mut kiln_state,
) -> kiln_status {
    new_state(out, || {
        let url = str_arg(url, "url")?;
        let checksum = optional_str(checksum, "checksum")?
            .map(|c| Digest::parse(&c).map_err(|e| kiln_error::invalid(format!("checksum: {e}"))))
            .transpose()?;
        let filename = optional_str(filename, "filename")?;
        Ok(State::http(url, HttpOptions { checksum, filename, ..Default::default() }))
    })
}

/// A git checkout of `reference` (branch, tag or commit; NULL or "" = the default branch) from
/// `url`; `subdir` (or NULL) keeps only that directory; `flags`: `KILN_GIT_KEEP_GIT_DIR`. Result
/// in `*out` (caller owns it).
///
/// Thread safety: any thread.
#[no_mangle]
pub extern "C" fn kiln_state_git(
    url: *const c_char,
    reference: *const c_char,
    subdir: *const c_char,
    flags: u32,
    out: *mut *mut kiln_state,
) -> kiln_status {
    new_state(out, || {
        let url = str_arg(url, "url")?;
        let reference = optional_str(reference, "reference")?.unwrap_or_default();
        check_flags(flags, KILN_GIT_KEEP_GIT_DIR, "git")?;
        let o =
            GitOptions { keep_git_dir: flags & KILN_GIT_KEEP_GIT_DIR != 0, subdir: optional_str(subdir, "subdir")? };
        Ok(State::git_with(url, reference, o))
    })
}

/// `base` with user `user` (`name`, `uid` or `uid:gid`) for later runs and the image config.
/// Result in `*out` (caller owns it).
///
/// Thread safety: any thread; `base` is only read.
#[no_mangle]
pub extern "C" fn kiln_state_with_user(
    base: *const kiln_state,
    user: *const c_char,
    out: *mut *mut kiln_state,
) -> kiln_status {
    new_state(out, || Ok(ref_arg(base, "base")?.st.clone().with_user(str_arg(user, "user")?)))
}

/// `base` with image config entrypoint `argv[0..argc]`. Result in `*out` (caller owns it).
///
/// Thread safety: any thread; `base` is only read.
#[no_mangle]
pub extern "C" fn kiln_state_with_entrypoint(
    base: *const kiln_state,
    argv: *const *const c_char,
    argc: usize,
    out: *mut *mut kiln_state,
) -> kiln_status {
    new_state(out, || {
        let b = ref_arg(base, "base")?;
        Ok(b.st.clone().with_entrypoint(strings_arg(argv, argc, "argv")?))
    })
}

/// `base` with image config cmd `argv[0..argc]`. Result in `*out` (caller owns it).
///
/// Thread safety: any thread; `base` is only read.
#[no_mangle]
pub extern "C" fn kiln_state_with_cmd(
    base: *const kiln_state,
    argv: *const *const c_char,
    argc: usize,
    out: *mut *mut kiln_state,
) -> kiln_status {
    new_state(out, || {
        let b = ref_arg(base, "base")?;
        Ok(b.st.clone().with_cmd(strings_arg(argv, argc, "argv")?))
    })
}

/// `base` with image config label `key=value`. Result in `*out` (caller owns it).
///
/// Thread safety: any thread; `base` is only read.
#[no_mangle]
pub extern "C" fn kiln_state_with_label(
    base: *const kiln_state,
    key: *const c_char,
    value: *const c_char,
    out: *mut *mut kiln_state,
) -> kiln_status {
    new_state(out, || {
        let b = ref_arg(base, "base")?;
        Ok(b.st.clone().with_label(str_arg(key, "key")?, str_arg(value, "value")?))
    })
}

/// `base` whose producing op shows as `name` in progress output. It also ends a chain of file
/// actions: the next file action on the result becomes its own step. Result in `*out`.
///
/// Thread safety: any thread; `base` is only read.
#[no_mangle]
pub extern "C" fn kiln_state_with_custom_name(
    base: *const kiln_state,
    name: *const c_char,
    out: *mut *mut kiln_state,
) -> kiln_status {
    new_state(out, || Ok(ref_arg(base, "base")?.st.clone().with_custom_name(str_arg(name, "name")?)))
}

/// `base` whose producing op runs only on workers having every label `keys[i]=values[i]`
/// (`i < n`; see `kiln_engine_worker_label`); no worker matching fails the solve with
/// KILN_ERR_WORKER. Result in `*out` (caller owns it).
///
/// Thread safety: any thread; `base` is only read.
#[no_mangle]
pub extern "C" fn kiln_state_with_worker_selector(
    base: *const kiln_state,
    keys: *const *const c_char,
    values: *const *const c_char,
    n: usize,
    out: *mut *mut kiln_state,
) -> kiln_status {
    new_state(out, || {
        let b = ref_arg(base, "base")?;
        let keys = strings_arg(keys, n, "keys")?;
        let values = strings_arg(values, n, "values")?;
        Ok(b.st.clone().with_worker_selector(keys.into_iter().zip(values).collect()))
    })
}

/// `base` with env var `key=value` for later runs. Result in `*out` (caller owns it).
///
/// Thread safety: any thread; `base` is only read.
#[no_mangle]
pub extern "C" fn kiln_state_with_env(
    base: *const kiln_state,
    key: *const c_char,
    value: *const c_char,
    out: *mut *mut kiln_state,
) -> kiln_status {
    new_state(out, || {
        let b = ref_arg(base, "base")?;
        Ok(b.st.clone().with_env(str_arg(key, "key")?, str_arg(value, "value")?))
    })
}

/// `base` with working directory `dir` for later runs (relative paths join the current one).
/// Result in `*out` (caller owns it).
///
/// Thread safety: any thread; `base` is only read.
#[no_mangle]
pub extern "C" fn kiln_state_with_cwd(
    base: *const kiln_state,
    dir: *const c_char,
    out: *mut *mut kiln_state,
) -> kiln_status {
    new_state(out, || Ok(ref_arg(base, "base")?.st.clone().with_cwd(str_arg(dir, "dir")?)))
}

/// Runs `argv[0..argc]` (argc >= 1, every entry a UTF-8 string) on `base` with `opts` (NULL for
/// defaults). Result in `*out` (caller owns it; free with `kiln_exec_free`); take the rootfs
/// with `kiln_exec_root`. Inputs are copied; the caller keeps ownership of `base`, `argv`, `opts`.
///
/// Thread safety: any thread; `base` and `opts` are only read.
#[no_mangle]
pub extern "C" fn kiln_state_run(
    base: *const kiln_state,
    argv: *const *const c_char,
    argc: usize,
    opts: *const kiln_exec_opts,
    out: *mut *mut kiln_exec,
) -> kiln_status {
    guard(ptr::null_mut(), || {
        let out = out_arg(out, "out")?;
        let base = ref_arg(base, "base")?;
        if argc == 0 {
            return Err(kiln_error::invalid("argc is 0; a run needs at least the program path in argv[0]"));
        }
        let args = strings_arg(argv, argc, "argv")?;
        let mut o = if opts.is_null() { ExecOptions::default() } else { ref_arg(opts, "opts")?.o.clone() };
        o.args = args;
        put(out, kiln_exec { ex: base.st.run(o) });
        Ok(())
    })
}

/// The rootfs after the run into `*out` (caller owns it). With a read-only rootfs this is the
/// input rootfs unchanged; use `kiln_exec_mount_output` to keep such a run.
///
/// Thread safety: any thread; `exec` is only read.
#[no_mangle]
pub extern "C" fn kiln_exec_root(exec: *const kiln_exec, out: *mut *mut kiln_state) -> kiln_status {
    new_state(out, || Ok(ref_arg(exec, "exec")?.ex.root()))
}

/// The output of the writable bind mount at `dest` into `*out` (caller owns it);
/// KILN_ERR_INVALID_ARGUMENT if the run has no writable bind mount there.
///
/// Thread safety: any thread; `exec` is only read.
#[no_mangle]
pub extern "C" fn kiln_exec_mount_output(
    exec: *const kiln_exec,
    dest: *const c_char,
    out: *mut *mut kiln_state,
) -> kiln_status {
    new_state(out, || {
        let ex = ref_arg(exec, "exec")?;
        let dest = str_arg(dest, "dest")?;
        ex.ex.mount_output(dest).ok_or_else(|| {
            kiln_error::invalid(format!("the run has no writable bind mount at {dest:?}; only those have outputs"))
        })
    })
}

/// Frees a run handle and sets `*exec` to NULL (NULL / `*exec == NULL`: no-op; same rule as
/// `kiln_state_free`). States taken from it stay valid.
///
/// Thread safety: must not race with any other use of the same handle.
#[no_mangle]
pub extern "C" fn kiln_exec_free(exec: *mut *mut kiln_exec) {
    take_free(exec)
}

/// New default run options into `*out` (caller owns them; free with `kiln_exec_opts_free`).
///
/// Thread safety: any thread.
#[no_mangle]
pub extern "C" fn kiln_exec_opts_new(out: *mut *mut kiln_exec_opts) -> kiln_status {
    guard(ptr::null_mut(), || {
        put(out_arg(out, "out")?, kiln_exec_opts { o: ExecOptions::default() });
        Ok(())
    })
}

/// Frees run options and sets `*opts` to NULL (NULL / `*opts == NULL`: no-op).
///
/// Thread safety: must not race with any other use of the same options.
#[no_mangle]
pub extern "C" fn kiln_exec_opts_free(opts: *mut *mut kiln_exec_opts) {
    take_free(opts)
}

fn edit_exec(opts: *mut kiln_exec_opts, f: impl FnOnce(&mut ExecOptions) -> Result<(), kiln_error>) -> kiln_status {
    guard(ptr::null_mut(), || f(&mut mut_arg(opts, "opts")?.o))
}

/// Sets the working directory of the run (copied).
///
/// Thread safety: mutates `opts`; no concurrent use of the same options.
#[no_mangle]
pub extern "C" fn kiln_exec_opts_set_cwd(opts: *mut kiln_exec_opts, dir: *const c_char) -> kiln_status {
    edit_exec(opts, |o| {
        o.cwd = Some(str_arg(dir, "dir")?.to_owned());
        Ok(())
    })
}

/// Sets the user of the run (`name`, `uid` or `uid:gid`; copied).
///
/// Thread safety: mutates `opts`; no concurrent use of the same options.
#[no_mangle]
pub extern "C" fn kiln_exec_opts_set_user(opts: *mut kiln_exec_opts, user: *const c_char) -> kiln_status {
    edit_exec(opts, |o| {
        o.user = Some(str_arg(user, "user")?.to_owned());
        Ok(())
    })
}

/// Adds env var `key=value` for this run only (copied).
///
/// Thread safety: mutates `opts`; no concurrent use of the same options.
#[no_mangle]
pub extern "C" fn kiln_exec_opts_add_env(
    opts: *mut kiln_exec_opts,
    key: *const c_char,
    value: *const c_char,
) -> kiln_status {
    edit_exec(opts, |o| {
        let (k, v) = (str_arg(key, "key")?, str_arg(value, "value")?);
        if k.is_empty() || k.contains('=') {
            return Err(kiln_error::invalid(format!("env key {k:?} must be non-empty and contain no '='")));
        }
        o.env.push((k.to_owned(), v.to_owned()));
        Ok(())
    })
}

/// Bind-mounts `state` at `dest`. A writable bind (`readonly == false`) has an output
/// (`kiln_exec_mount_output`). `state` is referenced internally; the caller may free its handle.
///
/// Thread safety: mutates `opts`; no concurrent use of the same options; `state` is only read.
#[no_mangle]
pub extern "C" fn kiln_exec_opts_add_bind_mount(
    opts: *mut kiln_exec_opts,
    dest: *const c_char,
    state: *const kiln_state,
    readonly: bool,
) -> kiln_status {
    edit_exec(opts, |o| {
        let dest = str_arg(dest, "dest")?;
        let st = ref_arg(state, "state")?;
        o.mounts.push(MountSpec::bind(dest, &st.st, readonly));
        Ok(())
    })
}

/// Mounts the persistent cache directory `id` at `dest`; `sharing` is a `kiln_cache_sharing`
/// value (other numbers: KILN_ERR_INVALID_ARGUMENT).
///
/// Thread safety: mutates `opts`; no concurrent use of the same options.
#[no_mangle]
pub extern "C" fn kiln_exec_opts_add_cache_mount(
    opts: *mut kiln_exec_opts,
    dest: *const c_char,
    id: *const c_char,
    sharing: u32,
) -> kiln_status {
    edit_exec(opts, |o| {
        let dest = str_arg(dest, "dest")?;
        let id = str_arg(id, "id")?;
        let sharing = match sharing {
            0 => CacheSharing::Shared,
            1 => CacheSharing::Private,
            2 => CacheSharing::Locked,
            n => {
                return Err(kiln_error::invalid(format!(
                    "cache sharing {n} is unknown; accepted: KILN_CACHE_SHARED (0), KILN_CACHE_PRIVATE (1), KILN_CACHE_LOCKED (2)"
                )))
            }
        };
        o.mounts.push(MountSpec::cache(dest, id, sharing));
        Ok(())
    })
}

/// Mounts a tmpfs at `dest`; `size_bytes` 0 means the runtime default.
///
/// Thread safety: mutates `opts`; no concurrent use of the same options.
#[no_mangle]
pub extern "C" fn kiln_exec_opts_add_tmpfs_mount(
    opts: *mut kiln_exec_opts,
    dest: *const c_char,
    size_bytes: u64,
) -> kiln_status {
    edit_exec(opts, |o| {
        o.mounts.push(MountSpec::tmpfs(str_arg(dest, "dest")?, size_bytes));
        Ok(())
    })
}

/// Mounts secret `id` (given to the solve with `kiln_solve_opts_add_secret`) as a file at `dest`
/// owned by `uid:gid` with permission bits `mode`; `optional` tolerates a missing secret.
///
/// Thread safety: mutates `opts`; no concurrent use of the same options.
#[no_mangle]
pub extern "C" fn kiln_exec_opts_add_secret_mount(
    opts: *mut kiln_exec_opts,
    dest: *const c_char,
    id: *const c_char,
    uid: u32,
    gid: u32,
    mode: u32,
    optional: bool,
) -> kiln_status {
    edit_exec(opts, |o| {
        let (dest, id) = (str_arg(dest, "dest")?, str_arg(id, "id")?);
        if mode > 0o7777 {
            return Err(kiln_error::invalid(format!("secret mode {mode:#o} is not a permission mode (<= 07777)")));
        }
        o.mounts.push(MountSpec::secret(dest, id, uid, gid, mode, optional));
        Ok(())
    })
}

/// Sets the display name of the run in progress output (copied).
///
/// Thread safety: mutates `opts`; no concurrent use of the same options.
#[no_mangle]
pub extern "C" fn kiln_exec_opts_set_custom_name(opts: *mut kiln_exec_opts, name: *const c_char) -> kiln_status {
    edit_exec(opts, |o| {
        o.custom_name = Some(str_arg(name, "name")?.to_owned());
        Ok(())
    })
}

/// Never uses a cached result of the run (it always executes).
///
/// Thread safety: mutates `opts`; no concurrent use of the same options.
#[no_mangle]
pub extern "C" fn kiln_exec_opts_set_ignore_cache(opts: *mut kiln_exec_opts, ignore: bool) -> kiln_status {
    edit_exec(opts, |o| {
        o.ignore_cache = ignore;
        Ok(())
    })
}

/// Sets the hostname inside the run's container (copied).
///
/// Thread safety: mutates `opts`; no concurrent use of the same options.
#[no_mangle]
pub extern "C" fn kiln_exec_opts_set_hostname(opts: *mut kiln_exec_opts, hostname: *const c_char) -> kiln_status {
    edit_exec(opts, |o| {
        o.hostname = Some(str_arg(hostname, "hostname")?.to_owned());
        Ok(())
    })
}

/// Runs only on workers having label `key=value` (repeatable: all must match; copied).
///
/// Thread safety: mutates `opts`; no concurrent use of the same options.
#[no_mangle]
pub extern "C" fn kiln_exec_opts_add_worker_selector(
    opts: *mut kiln_exec_opts,
    key: *const c_char,
    value: *const c_char,
) -> kiln_status {
    edit_exec(opts, |o| {
        o.worker_selector.insert(str_arg(key, "key")?.to_owned(), str_arg(value, "value")?.to_owned());
        Ok(())
    })
}

/// Makes the rootfs read-only for the run (the run then has no rootfs output).
///
/// Thread safety: mutates `opts`; no concurrent use of the same options.
#[no_mangle]
pub extern "C" fn kiln_exec_opts_set_readonly_rootfs(opts: *mut kiln_exec_opts, readonly: bool) -> kiln_status {
    edit_exec(opts, |o| {
        o.readonly_rootfs = readonly;
        Ok(())
    })
}

/// Sets the network mode: a `kiln_network` value (other numbers: KILN_ERR_INVALID_ARGUMENT).
///
/// Thread safety: mutates `opts`; no concurrent use of the same options.
#[no_mangle]
pub extern "C" fn kiln_exec_opts_set_network(opts: *mut kiln_exec_opts, network: u32) -> kiln_status {
    edit_exec(opts, |o| {
        o.network = match network {
            0 => Network::Sandbox,
            1 => Network::Host,
            2 => Network::None,
            n => {
                return Err(kiln_error::invalid(format!(
                    "network {n} is unknown; accepted: KILN_NETWORK_SANDBOX (0), KILN_NETWORK_HOST (1), KILN_NETWORK_NONE (2)"
                )))
            }
        };
        Ok(())
    })
}

/// Copies `src_path` of `src` to `dest_path` on top of `dest`; `flags` is a bitwise OR of
/// `KILN_COPY_*` (unknown bits: KILN_ERR_INVALID_ARGUMENT). Result in `*out` (caller owns it).
///
/// Thread safety: any thread; `dest` and `src` are only read.
#[no_mangle]
pub extern "C" fn kiln_state_copy(
    dest: *const kiln_state,
    src: *const kiln_state,
    src_path: *const c_char,
    dest_path: *const c_char,
    flags: u32,
    out: *mut *mut kiln_state,
) -> kiln_status {
    new_state(out, || {
        let (d, s) = (ref_arg(dest, "dest")?, ref_arg(src, "src")?);
        let (sp, dp) = (str_arg(src_path, "src_path")?, str_arg(dest_path, "dest_path")?);
        check_flags(flags, 0x1f, "copy")?;
        let o = CopyOptions {
            create_dest_path: flags & KILN_COPY_CREATE_DEST_PATH != 0,
            follow_symlinks: flags & KILN_COPY_FOLLOW_SYMLINKS != 0,
            dir_copy_contents: flags & KILN_COPY_DIR_CONTENTS != 0,
            allow_wildcard: flags & KILN_COPY_ALLOW_WILDCARD != 0,
            allow_empty_wildcard: flags & KILN_COPY_ALLOW_EMPTY_WILDCARD != 0,
            ..Default::default()
        };
        Ok(d.st.copy(&s.st, sp, dp, o))
    })
}

/// Creates directory `path` with permission bits `mode` on `base`; `flags`: `KILN_MKDIR_PARENTS`.
/// Result in `*out` (caller owns it).
///
/// Thread safety: any thread; `base` is only read.
#[no_mangle]
pub extern "C" fn kiln_state_mkdir(
    base: *const kiln_state,
    path: *const c_char,
    mode: u32,
    flags: u32,
    out: *mut *mut kiln_state,
) -> kiln_status {
    new_state(out, || {
        let b = ref_arg(base, "base")?;
        let p = str_arg(path, "path")?;
        check_flags(flags, KILN_MKDIR_PARENTS, "mkdir")?;
        let o = MkdirOptions { mode, make_parents: flags & KILN_MKDIR_PARENTS != 0, ..Default::default() };
        Ok(b.st.mkdir(p, o))
    })
}

/// Creates file `path` with permission bits `mode` holding `data[0..len]` (copied; `data` may be
/// NULL when `len == 0`) on `base`. Result in `*out` (caller owns it).
///
/// Thread safety: any thread; `base` is only read.
#[no_mangle]
pub extern "C" fn kiln_state_mkfile(
    base: *const kiln_state,
    path: *const c_char,
    mode: u32,
    data: *const u8,
    len: usize,
    out: *mut *mut kiln_state,
) -> kiln_status {
    new_state(out, || {
        let b = ref_arg(base, "base")?;
        let p = str_arg(path, "path")?;
        let d = bytes_arg(data, len, "data")?;
        Ok(b.st.mkfile(p, mode, d.to_vec(), MkfileOptions::default()))
    })
}

/// Removes `path` from `base`; `flags`: `KILN_RM_*`. Result in `*out` (caller owns it).
///
/// Thread safety: any thread; `base` is only read.
#[no_mangle]
pub extern "C" fn kiln_state_rm(
    base: *const kiln_state,
    path: *const c_char,
    flags: u32,
    out: *mut *mut kiln_state,
) -> kiln_status {
    new_state(out, || {
        let b = ref_arg(base, "base")?;
        let p = str_arg(path, "path")?;
        check_flags(flags, KILN_RM_ALLOW_NOT_FOUND | KILN_RM_ALLOW_WILDCARD, "rm")?;
        let o = RmOptions {
            allow_not_found: flags & KILN_RM_ALLOW_NOT_FOUND != 0,
            allow_wildcard: flags & KILN_RM_ALLOW_WILDCARD != 0,
        };
        Ok(b.st.rm(p, o))
    })
}

/// Creates a symlink at `newpath` pointing to `oldpath` (kept verbatim) on `base`. Result in
/// `*out` (caller owns it).
///
/// Thread safety: any thread; `base` is only read.
#[no_mangle]
pub extern "C" fn kiln_state_symlink(
    base: *const kiln_state,
    oldpath: *const c_char,
    newpath: *const c_char,
    out: *mut *mut kiln_state,
) -> kiln_status {
    new_state(out, || {
        let b = ref_arg(base, "base")?;
        Ok(b.st.symlink(str_arg(oldpath, "oldpath")?, str_arg(newpath, "newpath")?))
    })
}

/// `base` whose producing op never uses a cached result. Result in `*out` (caller owns it).
///
/// Thread safety: any thread; `base` is only read.
#[no_mangle]
pub extern "C" fn kiln_state_ignore_cache(base: *const kiln_state, out: *mut *mut kiln_state) -> kiln_status {
    new_state(out, || Ok(ref_arg(base, "base")?.st.clone().ignore_cache()))
}

/// `base` with hostname `hostname` for later runs. Result in `*out` (caller owns it).
///
/// Thread safety: any thread; `base` is only read.
#[no_mangle]
pub extern "C" fn kiln_state_with_hostname(
    base: *const kiln_state,
    hostname: *const c_char,
    out: *mut *mut kiln_state,
) -> kiln_status {
    new_state(out, || Ok(ref_arg(base, "base")?.st.clone().with_hostname(str_arg(hostname, "hostname")?)))
}

/// Layers `states[0..n]` on top of each other (later ones win); every entry must be non-NULL.
/// Result in `*out` (caller owns it).
///
/// Thread safety: any thread; the states are only read.
#[no_mangle]
pub extern "C" fn kiln_state_merge(
    states: *const *const kiln_state,
    n: usize,
    out: *mut *mut kiln_state,
) -> kiln_status {
    new_state(out, || {
        let list = array_arg(states, n, "states")?
            .iter()
            .enumerate()
            .map(|(i, s)| ref_arg(*s, &format!("states[{i}]")).map(|s| s.st.clone()))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(State::merge(list))
    })
}

/// Marshals `state` into an LLB definition (BuildKit's `pb.Definition` protobuf) in `*out`
/// (caller owns it; free with `kiln_bytes_free`). KILN_ERR_DEFINITION if the graph is invalid.
///
/// Thread safety: any thread; `state` is only read.
#[no_mangle]
pub extern "C" fn kiln_state_to_bytes(state: *const kiln_state, out: *mut *mut kiln_bytes) -> kiln_status {
    guard(ptr::null_mut(), || {
        let out = out_arg(out, "out")?;
        let def = ref_arg(state, "state")?.st.to_definition()?;
        put(out, kiln_bytes { data: def.to_bytes() });
        Ok(())
    })
}

/// The bytes of `bytes` (borrowed: valid until it is freed); NULL if `bytes` is NULL.
///
/// Thread safety: any thread, concurrently.
#[no_mangle]
pub extern "C" fn kiln_bytes_data(bytes: *const kiln_bytes) -> *const u8 {
    catch(ptr::null(), || ref_arg(bytes, "bytes").map(|b| b.data.as_ptr()).unwrap_or(ptr::null()))
}

/// The length of `bytes`; 0 if `bytes` is NULL.
///
/// Thread safety: any thread, concurrently.
#[no_mangle]
pub extern "C" fn kiln_bytes_len(bytes: *const kiln_bytes) -> usize {
    catch(0, || ref_arg(bytes, "bytes").map(|b| b.data.len()).unwrap_or(0))
}

/// Frees a byte buffer and sets `*bytes` to NULL (NULL / `*bytes == NULL`: no-op).
///
/// Thread safety: must not race with any other use of the same buffer.
#[no_mangle]
pub extern "C" fn kiln_bytes_free(bytes: *mut *mut kiln_bytes) {
    take_free(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn handles_shared_across_threads_are_send_and_sync() {
        assert_send_sync::<kiln_state>();
        assert_send_sync::<kiln_exec>();
        assert_send_sync::<kiln_bytes>();
    }

    #[test]
    fn free_nulls_the_pointer_and_a_second_free_is_a_noop() {
        let mut s: *mut kiln_state = ptr::null_mut();
        assert_eq!(kiln_state_scratch(&mut s), kiln_status::KILN_OK);
        assert!(!s.is_null());
        kiln_state_free(&mut s);
        assert!(s.is_null());
        kiln_state_free(&mut s);
        kiln_state_free(ptr::null_mut());
    }

    #[test]
    fn invalid_utf8_is_an_error_status() {
        let mut s: *mut kiln_state = ptr::null_mut();
        let bad = b"ctx\xff\0";
        assert_eq!(kiln_state_local(bad.as_ptr().cast(), &mut s), kiln_status::KILN_ERR_INVALID_UTF8);
        assert!(s.is_null());
    }

    #[test]
    fn marshals_a_small_graph() {
        let mut base = ptr::null_mut();
        assert_eq!(kiln_state_local(c"rootfs".as_ptr(), &mut base), kiln_status::KILN_OK);
        let mut f = ptr::null_mut();
        assert_eq!(kiln_state_mkfile(base, c"/a".as_ptr(), 0o644, b"hi".as_ptr(), 2, &mut f), kiln_status::KILN_OK);
        let mut b = ptr::null_mut();
        assert_eq!(kiln_state_to_bytes(f, &mut b), kiln_status::KILN_OK);
        assert!(kiln_bytes_len(b) > 0);
        assert!(kiln::Definition::from_bytes(&unsafe_bytes(b)).is_ok());
        kiln_bytes_free(&mut b);
        kiln_state_free(&mut f);
        kiln_state_free(&mut base);
    }

    fn unsafe_bytes(b: *const kiln_bytes) -> Vec<u8> {
        // SAFETY: test-only read of a live buffer of kiln_bytes_len bytes.
        unsafe { std::slice::from_raw_parts(kiln_bytes_data(b), kiln_bytes_len(b)) }.to_vec()
    }
}
