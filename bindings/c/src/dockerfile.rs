//! A Dockerfile in a directory as a `kiln_state` (`kiln_dockerfile`, `kiln_engine_dockerfile`):
//! `kiln_dockerfile_opts` fills core's `DockerfileOptions`, core converts
//! (`kiln::frontend::dockerfile::state_from_dir`, `Engine::dockerfile`).

use crate::engine::{kiln_engine, not_on_runtime_thread, runtime};
use crate::errors::{kiln_error, kiln_status};
use crate::ffi::{guard, mut_arg, out_arg, put, ref_arg, str_arg, take_free};
use crate::state::{kiln_state, new_state, optional_str};
use kiln::graph::{DockerfileOptions, Platform};
use std::ffi::c_char;
use std::path::{Path, PathBuf};
use std::ptr;

/// Options of `kiln_dockerfile` / `kiln_engine_dockerfile` (BuildKit's dockerfile.v0 options):
/// created by `kiln_dockerfile_opts_new`, freed with `kiln_dockerfile_opts_free`.
#[allow(non_camel_case_types)]
pub struct kiln_dockerfile_opts {
    inner: DockerfileOptions,
}

/// New default options into `*out` (Dockerfile `Dockerfile`, the last stage, the context read
/// from the local `context`); caller owns them.
///
/// Thread safety: any thread.
#[no_mangle]
pub extern "C" fn kiln_dockerfile_opts_new(out: *mut *mut kiln_dockerfile_opts) -> kiln_status {
    guard(ptr::null_mut(), || {
        put(out_arg(out, "out")?, kiln_dockerfile_opts { inner: DockerfileOptions::default() });
        Ok(())
    })
}

/// Frees options and sets `*opts` to NULL (NULL / `*opts == NULL`: no-op).
///
/// Thread safety: must not race with any other use of the same options.
#[no_mangle]
pub extern "C" fn kiln_dockerfile_opts_free(opts: *mut *mut kiln_dockerfile_opts) {
    take_free(opts)
}

fn edit(
    opts: *mut kiln_dockerfile_opts,
    f: impl FnOnce(&mut DockerfileOptions) -> Result<(), kiln_error>,
) -> kiln_status {
    guard(ptr::null_mut(), || f(&mut mut_arg(opts, "opts")?.inner))
}

/// The Dockerfile, relative to the context directory or absolute (default `Dockerfile`;
/// BuildKit's `filename`); errors name it as given.
///
/// Thread safety: mutates `opts`; no concurrent use of the same options.
#[no_mangle]
pub extern "C" fn kiln_dockerfile_opts_set_dockerfile(
    opts: *mut kiln_dockerfile_opts,
    path: *const c_char,
) -> kiln_status {
    edit(opts, |o| {
        o.dockerfile = str_arg(path, "path")?.to_owned();
        Ok(())
    })
}

/// The stage to build (NULL: the last one).
///
/// Thread safety: mutates `opts`; no concurrent use of the same options.
#[no_mangle]
pub extern "C" fn kiln_dockerfile_opts_set_target(
    opts: *mut kiln_dockerfile_opts,
    target: *const c_char,
) -> kiln_status {
    edit(opts, |o| {
        o.target = optional_str(target, "target")?;
        Ok(())
    })
}

/// The local source name the build context is read from at solve time (default `context`):
/// give the context directory under it with `kiln_solve_opts_add_local`.
///
/// Thread safety: mutates `opts`; no concurrent use of the same options.
#[no_mangle]
pub extern "C" fn kiln_dockerfile_opts_set_context_name(
    opts: *mut kiln_dockerfile_opts,
    name: *const c_char,
) -> kiln_status {
    edit(opts, |o| {
        o.context_name = str_arg(name, "name")?.to_owned();
        Ok(())
    })
}

/// Adds a build argument (`build-arg:NAME`); a repeated name replaces the earlier value.
///
/// Thread safety: mutates `opts`; no concurrent use of the same options.
#[no_mangle]
pub extern "C" fn kiln_dockerfile_opts_add_build_arg(
    opts: *mut kiln_dockerfile_opts,
    name: *const c_char,
    value: *const c_char,
) -> kiln_status {
    edit(opts, |o| {
        o.build_args.insert(str_arg(name, "name")?.to_owned(), str_arg(value, "value")?.to_owned());
        Ok(())
    })
}

/// Adds a label to the image config (`label:NAME`).
///
/// Thread safety: mutates `opts`; no concurrent use of the same options.
#[no_mangle]
pub extern "C" fn kiln_dockerfile_opts_add_label(
    opts: *mut kiln_dockerfile_opts,
    name: *const c_char,
    value: *const c_char,
) -> kiln_status {
    edit(opts, |o| {
        o.labels.insert(str_arg(name, "name")?.to_owned(), str_arg(value, "value")?.to_owned());
        Ok(())
    })
}

/// Adds a named context (`context:NAME`): `docker-image://REF`, `oci-layout://DIR[:TAG]`,
/// `local:NAME` or `https://URL`, used for `FROM NAME` / `COPY --from=NAME`. A bad value fails
/// the conversion with KILN_ERR_OPTION or KILN_ERR_UNSUPPORTED.
///
/// Thread safety: mutates `opts`; no concurrent use of the same options.
#[no_mangle]
pub extern "C" fn kiln_dockerfile_opts_add_context(
    opts: *mut kiln_dockerfile_opts,
    name: *const c_char,
    value: *const c_char,
) -> kiln_status {
    edit(opts, |o| {
        o.contexts.insert(str_arg(name, "name")?.to_owned(), str_arg(value, "value")?.to_owned());
        Ok(())
    })
}

/// The target platform `os/arch[/variant]` (NULL: the host's; another is refused). Invalid:
/// KILN_ERR_OPTION.
///
/// Thread safety: mutates `opts`; no concurrent use of the same options.
#[no_mangle]
pub extern "C" fn kiln_dockerfile_opts_set_platform(
    opts: *mut kiln_dockerfile_opts,
    platform: *const c_char,
) -> kiln_status {
    edit(opts, |o| {
        o.platform = optional_str(platform, "platform")?.map(|p| p.parse::<Platform>()).transpose()?;
        Ok(())
    })
}

/// No step uses the cache (`no-cache`).
///
/// Thread safety: mutates `opts`; no concurrent use of the same options.
#[no_mangle]
pub extern "C" fn kiln_dockerfile_opts_set_no_cache(opts: *mut kiln_dockerfile_opts, no_cache: bool) -> kiln_status {
    edit(opts, |o| {
        o.no_cache = no_cache;
        Ok(())
    })
}

fn options_of(opts: *const kiln_dockerfile_opts) -> Result<DockerfileOptions, kiln_error> {
    if opts.is_null() {
        return Ok(DockerfileOptions::default());
    }
    Ok(ref_arg(opts, "opts")?.inner.clone())
}

fn context_arg(context_dir: *const c_char) -> Result<PathBuf, kiln_error> {
    let p = Path::new(str_arg(context_dir, "context_dir")?);
    Ok(std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf()))
}

/// The Dockerfile of the directory `context_dir` converted into its target stage's state, in
/// `*out` (caller owns it): it carries the target's image config (image exports write it; later
/// runs use its env, working dir and user) and can be extended. Solve it with `context_dir`
/// given as the local `context` (`kiln_solve_opts_add_local`; see
/// `kiln_dockerfile_opts_set_context_name`). `opts` may be NULL (defaults). Bases come from
/// named contexts (`kiln_dockerfile_opts_add_context(o, "base", "local:rootfs")`) or scratch; a
/// registry or OCI-layout base is KILN_ERR_UNSUPPORTED here: use `kiln_engine_dockerfile`. A
/// Dockerfile error is KILN_ERR_DEFINITION naming the file and line (`Dockerfile:2: ...`).
///
/// Thread safety: any thread; `opts` is only read.
#[no_mangle]
pub extern "C" fn kiln_dockerfile(
    context_dir: *const c_char,
    opts: *const kiln_dockerfile_opts,
    out: *mut *mut kiln_state,
) -> kiln_status {
    new_state(out, || {
        let dir = context_arg(context_dir)?;
        let o = options_of(opts)?;
        Ok(kiln::frontend::dockerfile::state_from_dir(&dir, &o, None)?)
    })
}

/// `kiln_dockerfile` with base images resolved through `engine` (registry images and OCI
/// layouts; the state inherits their configs, as `kiln_engine_image`). Blocks while registries
/// answer. Errors as `kiln_engine_solve` (`err` may be NULL).
///
/// Thread safety: any thread except kiln engine threads (KILN_ERR_WRONG_THREAD).
#[no_mangle]
pub extern "C" fn kiln_engine_dockerfile(
    engine: *const kiln_engine,
    context_dir: *const c_char,
    opts: *const kiln_dockerfile_opts,
    out: *mut *mut kiln_state,
    err: *mut *mut kiln_error,
) -> kiln_status {
    guard(err, || {
        let out = out_arg(out, "out")?;
        let engine = ref_arg(engine, "engine")?;
        let dir = context_arg(context_dir)?;
        let o = options_of(opts)?;
        not_on_runtime_thread("kiln_engine_dockerfile")?;
        let st = runtime()?.block_on(engine.engine.dockerfile(dir, &o))?;
        put(out, kiln_state { st });
        Ok(())
    })
}
