//! Runs: `kiln_exec_opts` (the mutable builder of how a run runs: env, cwd, user, mounts,
//! network, readonly rootfs), `kiln_state_run` and `kiln_exec` (a run's rootfs and the outputs of
//! its writable bind mounts), with the `kiln_network` and `kiln_cache_sharing` enums.

use crate::errors::{kiln_error, kiln_status};
use crate::ffi::{guard, mut_arg, out_arg, put, ref_arg, str_arg, take_free};
use crate::state::{kiln_state, new_state, optional_str, strings_arg};
use kiln::graph::{CacheMountOptions, CacheSharing, ExecOptions, ExecState, MountSpec, Network, SecretMountOptions};
use std::ffi::c_char;
use std::ptr;

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

/// Runs `argv[0..argc]` (argc >= 1, every entry a UTF-8 string) on `base` with `opts` (NULL for
/// defaults). Result in `*out` (caller owns it; free with `kiln_exec_free`); take the rootfs
/// with `kiln_exec_root`. Inputs are copied; the caller keeps ownership of `base`, `argv`, `opts`.
///
/// Thread safety: see the header preamble.
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
        put(out, kiln_exec { ex: base.st.try_run(o)? });
        Ok(())
    })
}

/// The rootfs after the run into `*out` (caller owns it). With a read-only rootfs this is the
/// input rootfs unchanged; use `kiln_exec_mount_output` to keep such a run.
///
/// Thread safety: see the header preamble.
#[no_mangle]
pub extern "C" fn kiln_exec_root(exec: *const kiln_exec, out: *mut *mut kiln_state) -> kiln_status {
    new_state(out, || Ok(ref_arg(exec, "exec")?.ex.root()))
}

/// The output of the writable bind mount at `dest` into `*out` (caller owns it);
/// KILN_ERR_INVALID_ARGUMENT if the run has no writable bind mount there.
///
/// Thread safety: see the header preamble.
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
/// Thread safety: see the header preamble.
#[no_mangle]
pub extern "C" fn kiln_exec_free(exec: *mut *mut kiln_exec) {
    take_free(exec)
}

/// New default run options into `*out` (caller owns them; free with `kiln_exec_opts_free`).
///
/// Thread safety: see the header preamble.
#[no_mangle]
pub extern "C" fn kiln_exec_opts_new(out: *mut *mut kiln_exec_opts) -> kiln_status {
    guard(ptr::null_mut(), || {
        put(out_arg(out, "out")?, kiln_exec_opts { o: ExecOptions::default() });
        Ok(())
    })
}

/// Frees run options and sets `*opts` to NULL (NULL / `*opts == NULL`: no-op).
///
/// Thread safety: see the header preamble.
#[no_mangle]
pub extern "C" fn kiln_exec_opts_free(opts: *mut *mut kiln_exec_opts) {
    take_free(opts)
}

fn edit_exec(opts: *mut kiln_exec_opts, f: impl FnOnce(&mut ExecOptions) -> Result<(), kiln_error>) -> kiln_status {
    guard(ptr::null_mut(), || f(&mut mut_arg(opts, "opts")?.o))
}

/// Sets the working directory of the run (copied).
///
/// Thread safety: see the header preamble.
#[no_mangle]
pub extern "C" fn kiln_exec_opts_set_cwd(opts: *mut kiln_exec_opts, dir: *const c_char) -> kiln_status {
    edit_exec(opts, |o| {
        o.cwd = Some(str_arg(dir, "dir")?.to_owned());
        Ok(())
    })
}

/// Sets the user of the run (`name`, `uid` or `uid:gid`; copied).
///
/// Thread safety: see the header preamble.
#[no_mangle]
pub extern "C" fn kiln_exec_opts_set_user(opts: *mut kiln_exec_opts, user: *const c_char) -> kiln_status {
    edit_exec(opts, |o| {
        o.user = Some(str_arg(user, "user")?.to_owned());
        Ok(())
    })
}

/// Adds env var `key=value` for this run only (copied).
///
/// Thread safety: see the header preamble.
#[no_mangle]
pub extern "C" fn kiln_exec_opts_add_env(
    opts: *mut kiln_exec_opts,
    key: *const c_char,
    value: *const c_char,
) -> kiln_status {
    edit_exec(opts, |o| {
        // Validated with the whole run by core (`State::try_run`), as in every face.
        o.env.push((str_arg(key, "key")?.to_owned(), str_arg(value, "value")?.to_owned()));
        Ok(())
    })
}

/// Bind-mounts `state` at `dest`. A writable bind (`readonly == false`) has an output
/// (`kiln_exec_mount_output`). `state` is referenced internally; the caller may free its handle.
///
/// Thread safety: see the header preamble.
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

/// Mounts the persistent cache directory `id` (NULL: `dest`) at `dest`; `sharing` is a
/// `kiln_cache_sharing` value (other numbers: KILN_ERR_INVALID_ARGUMENT).
///
/// Thread safety: see the header preamble.
#[no_mangle]
pub extern "C" fn kiln_exec_opts_add_cache_mount(
    opts: *mut kiln_exec_opts,
    dest: *const c_char,
    id: *const c_char,
    sharing: u32,
) -> kiln_status {
    edit_exec(opts, |o| {
        let dest = str_arg(dest, "dest")?;
        let id = optional_str(id, "id")?;
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
        o.mounts.push(MountSpec::cache_with(dest, CacheMountOptions { id, sharing }));
        Ok(())
    })
}

/// Mounts a tmpfs at `dest`; `size_bytes` 0 means the runtime default.
///
/// Thread safety: see the header preamble.
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

/// Mounts secret `id` (NULL: the file name of `dest`; given to the solve with
/// `kiln_solve_opts_add_secret_value` or `kiln_solve_opts_add_secret_file`) as a file at `dest`
/// owned by `uid:gid` with permission bits `mode` (at most 07777); `optional` tolerates a missing
/// secret.
///
/// Thread safety: see the header preamble.
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
        let (dest, id) = (str_arg(dest, "dest")?, optional_str(id, "id")?);
        o.mounts.push(MountSpec::secret_with(dest, SecretMountOptions { id, uid, gid, mode, optional })?);
        Ok(())
    })
}

/// Sets the display name of the run in progress output (copied).
///
/// Thread safety: see the header preamble.
#[no_mangle]
pub extern "C" fn kiln_exec_opts_set_custom_name(opts: *mut kiln_exec_opts, name: *const c_char) -> kiln_status {
    edit_exec(opts, |o| {
        o.custom_name = Some(str_arg(name, "name")?.to_owned());
        Ok(())
    })
}

/// Never uses a cached result of the run (it always executes).
///
/// Thread safety: see the header preamble.
#[no_mangle]
pub extern "C" fn kiln_exec_opts_set_ignore_cache(opts: *mut kiln_exec_opts, ignore: bool) -> kiln_status {
    edit_exec(opts, |o| {
        o.ignore_cache = ignore;
        Ok(())
    })
}

/// Sets the hostname inside the run's container (copied).
///
/// Thread safety: see the header preamble.
#[no_mangle]
pub extern "C" fn kiln_exec_opts_set_hostname(opts: *mut kiln_exec_opts, hostname: *const c_char) -> kiln_status {
    edit_exec(opts, |o| {
        o.hostname = Some(str_arg(hostname, "hostname")?.to_owned());
        Ok(())
    })
}

/// Runs only on workers having label `key=value` (repeatable: all must match; copied).
///
/// Thread safety: see the header preamble.
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
/// Thread safety: see the header preamble.
#[no_mangle]
pub extern "C" fn kiln_exec_opts_set_readonly_rootfs(opts: *mut kiln_exec_opts, readonly: bool) -> kiln_status {
    edit_exec(opts, |o| {
        o.readonly_rootfs = readonly;
        Ok(())
    })
}

/// Sets the network mode: a `kiln_network` value (other numbers: KILN_ERR_INVALID_ARGUMENT).
///
/// Thread safety: see the header preamble.
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
