//! Image sources resolved through an engine (`kiln_engine_image`, `kiln_engine_oci_layout`: the
//! state inherits the base image's config), the image config setters beyond env/cwd/user/cmd, the
//! solve's SOURCE_DATE_EPOCH and platform, and disk usage by record type.

use crate::engine::{kiln_engine, not_on_runtime_thread, runtime};
use crate::errors::{kiln_error, kiln_status};
use crate::ffi::{guard, mut_arg, out_arg, put, ref_arg, str_arg, value_out};
use crate::solve::kiln_solve_opts;
use crate::state::{kiln_state, new_state, optional_str};
use kiln::graph::{ImageOptions, OciLayoutOptions, Platform};
use std::ffi::c_char;

fn platform_arg(platform: *const c_char) -> Result<Option<Platform>, kiln_error> {
    Ok(optional_str(platform, "platform")?.map(|p| p.parse::<Platform>()).transpose()?)
}

/// The registry image `reference` for `platform` (`os/arch[/variant]`, or NULL: the host's),
/// resolved through `engine` (its registry options and `~/.docker/config.json` credentials;
/// loopback registries over plain http): the new state in `*out` (caller owns it) carries the
/// image's config — env, working dir, user, entrypoint, cmd, labels, ports, volumes — which later
/// runs use and image exports keep. `resolve_digest` pins the source to the resolved manifest
/// digest. Blocks while the registry answers. Errors as `kiln_engine_solve` (`err` may be NULL).
///
/// Thread safety: any thread except kiln engine threads (KILN_ERR_WRONG_THREAD).
#[no_mangle]
pub extern "C" fn kiln_engine_image(
    engine: *const kiln_engine,
    reference: *const c_char,
    platform: *const c_char,
    resolve_digest: bool,
    out: *mut *mut kiln_state,
    err: *mut *mut kiln_error,
) -> kiln_status {
    guard(err, || {
        let out = out_arg(out, "out")?;
        let engine = ref_arg(engine, "engine")?;
        let reference = str_arg(reference, "reference")?;
        let o = ImageOptions { platform: platform_arg(platform)?, resolve_digest };
        not_on_runtime_thread("kiln_engine_image")?;
        let st = runtime()?.block_on(engine.engine.image(reference, &o))?;
        put(out, kiln_state { st });
        Ok(())
    })
}

/// The image of the OCI layout `dir` by `reference` (a tag or `sha256:<64 hex>`), for `platform`
/// (or NULL: the host's), resolved through `engine`: the state in `*out` carries the image's
/// config, like `kiln_engine_image`. Errors as `kiln_engine_solve` (`err` may be NULL).
///
/// Thread safety: any thread except kiln engine threads (KILN_ERR_WRONG_THREAD).
#[no_mangle]
pub extern "C" fn kiln_engine_oci_layout(
    engine: *const kiln_engine,
    dir: *const c_char,
    reference: *const c_char,
    platform: *const c_char,
    out: *mut *mut kiln_state,
    err: *mut *mut kiln_error,
) -> kiln_status {
    guard(err, || {
        let out = out_arg(out, "out")?;
        let engine = ref_arg(engine, "engine")?;
        let dir = str_arg(dir, "dir")?;
        let mut o = OciLayoutOptions::from_reference(str_arg(reference, "reference")?);
        o.platform = platform_arg(platform)?;
        let r = o.reference()?;
        let dir = std::path::absolute(dir).unwrap_or_else(|_| dir.into());
        not_on_runtime_thread("kiln_engine_oci_layout")?;
        let st = runtime()?.block_on(engine.engine.oci_layout(dir, r, &o.image_options()))?;
        put(out, kiln_state { st });
        Ok(())
    })
}

/// A pure registry image source for `platform` (`os/arch[/variant]`, or NULL: the host's), like
/// `kiln_state_image`: nothing is fetched. A malformed platform returns KILN_ERR_OPTION.
///
/// Thread safety: see the header preamble.
#[no_mangle]
pub extern "C" fn kiln_state_image_for(
    reference: *const c_char,
    platform: *const c_char,
    out: *mut *mut kiln_state,
) -> kiln_status {
    new_state(out, || {
        let o = ImageOptions { platform: platform_arg(platform)?, ..Default::default() };
        Ok(kiln::State::image_with_options(str_arg(reference, "reference")?, &o))
    })
}

/// `base` with one string applied by `set` (cbindgen does not expand macros: each setter is a
/// plain function calling this).
fn with_string(
    base: *const kiln_state,
    value: *const c_char,
    arg: &str,
    out: *mut *mut kiln_state,
    set: fn(kiln::State, &str) -> kiln::State,
) -> kiln_status {
    new_state(out, || Ok(set(ref_arg(base, "base")?.st.clone(), str_arg(value, arg)?)))
}

/// `base` with an exposed port in its image config (`80/tcp`, `53/udp`; a bare number means
/// tcp). Result in `*out` (caller owns it).
///
/// Thread safety: see the header preamble.
#[no_mangle]
pub extern "C" fn kiln_state_with_exposed_port(
    base: *const kiln_state,
    port: *const c_char,
    out: *mut *mut kiln_state,
) -> kiln_status {
    with_string(base, port, "port", out, |s, v| s.with_exposed_port(v))
}

/// `base` with a volume in its image config. Result in `*out` (caller owns it).
///
/// Thread safety: see the header preamble.
#[no_mangle]
pub extern "C" fn kiln_state_with_volume(
    base: *const kiln_state,
    path: *const c_char,
    out: *mut *mut kiln_state,
) -> kiln_status {
    with_string(base, path, "path", out, |s, v| s.with_volume(v))
}

/// `base` with the image config stop signal `signal` (`SIGTERM`). Result in `*out`.
///
/// Thread safety: see the header preamble.
#[no_mangle]
pub extern "C" fn kiln_state_with_stop_signal(
    base: *const kiln_state,
    signal: *const c_char,
    out: *mut *mut kiln_state,
) -> kiln_status {
    with_string(base, signal, "signal", out, |s, v| s.with_stop_signal(v))
}

/// `base` with manifest annotation `key=value` (written by image exporters). Result in `*out`.
///
/// Thread safety: see the header preamble.
#[no_mangle]
pub extern "C" fn kiln_state_with_annotation(
    base: *const kiln_state,
    key: *const c_char,
    value: *const c_char,
    out: *mut *mut kiln_state,
) -> kiln_status {
    new_state(out, || {
        let b = ref_arg(base, "base")?;
        Ok(b.st.clone().with_annotation(str_arg(key, "key")?, str_arg(value, "value")?))
    })
}

/// Sets `SOURCE_DATE_EPOCH` (Unix seconds) for solves with these options: image exports clamp
/// file times and the config's `created` to it, so fresh roots export the same digest.
///
/// Thread safety: mutates `opts`; no concurrent use of the same options.
#[no_mangle]
pub extern "C" fn kiln_solve_opts_set_source_date_epoch(opts: *mut kiln_solve_opts, epoch: i64) -> kiln_status {
    guard(std::ptr::null_mut(), || {
        mut_arg(opts, "opts")?.inner.source_date_epoch = Some(epoch);
        Ok(())
    })
}

/// Sets the build platform (`os/arch[/variant]` or `local`; NULL: the host's). Another platform
/// than the host's is refused when solving (kiln has no emulation); image exports record it. A
/// malformed platform returns KILN_ERR_OPTION and leaves `opts` unchanged.
///
/// Thread safety: mutates `opts`; no concurrent use of the same options.
#[no_mangle]
pub extern "C" fn kiln_solve_opts_set_platform(opts: *mut kiln_solve_opts, platform: *const c_char) -> kiln_status {
    guard(std::ptr::null_mut(), || {
        let o = mut_arg(opts, "opts")?;
        o.inner.platform = platform_arg(platform)?;
        Ok(())
    })
}

/// Like `kiln_engine_disk_usage`, counting only records of `record_type` (`regular`: steps'
/// snapshots; `exec.cachemount`: cache mounts; NULL: all).
///
/// Thread safety: any thread except kiln engine threads (KILN_ERR_WRONG_THREAD).
#[no_mangle]
pub extern "C" fn kiln_engine_disk_usage_of(
    engine: *const kiln_engine,
    record_type: *const c_char,
    records: *mut usize,
    bytes: *mut u64,
    err: *mut *mut kiln_error,
) -> kiln_status {
    guard(err, || {
        let engine = ref_arg(engine, "engine")?;
        let (records, bytes) = (value_out(records, "records")?, value_out(bytes, "bytes")?);
        *records = 0;
        *bytes = 0;
        let want = optional_str(record_type, "record_type")?;
        not_on_runtime_thread("kiln_engine_disk_usage_of")?;
        let usage = runtime()?.block_on(engine.engine.disk_usage())?;
        let picked: Vec<_> = usage.iter().filter(|u| want.as_deref().is_none_or(|t| u.record_type == t)).collect();
        *records = picked.len();
        *bytes = picked.iter().map(|u| u.size).sum();
        Ok(())
    })
}
