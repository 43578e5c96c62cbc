//! `kiln_state`, an immutable filesystem state: the source constructors (scratch, local, image,
//! OCI layout, http, git), the metadata setters (env, cwd, user, hostname, image config, custom
//! name, worker selector, ignore-cache), merge, and the argument helpers the other builder
//! modules share. Every builder call returns a new state and leaves its inputs untouched.
//!
//! The rest of the graph builder lives beside it: [`crate::exec_opts`] (runs), [`crate::file_ops`]
//! (file actions) and [`crate::bytes`] (marshalled definitions); their items are re-exported here
//! so `kiln_capi::state::*` paths keep working. Thread-safety rules: the kiln.h preamble.

pub use crate::bytes::*;
pub use crate::exec_opts::*;
pub use crate::file_ops::*;

use crate::errors::{kiln_error, kiln_status};
use crate::ffi::{array_arg, guard, out_arg, put, ref_arg, str_arg, take_free};
use kiln::graph::{parse_digest, GitOptions, HttpOptions, OciLayoutOptions, State};
use std::ffi::c_char;
use std::ptr;

/// An immutable filesystem state (the output of an op, or scratch) with its env/cwd metadata.
/// Created by the `kiln_state_*` constructors, freed with `kiln_state_free`. Immutable: any
/// number of threads may use one state concurrently as a `const` argument.
#[allow(non_camel_case_types)]
pub struct kiln_state {
    pub(crate) st: State,
}

/// `kiln_state_git` flag: keep the `.git` directory in the checkout.
pub const KILN_GIT_KEEP_GIT_DIR: u32 = 1;

/// Decodes `argv[0..argc]` (every entry a UTF-8 string; `argv` may be NULL when `argc == 0`).
pub(crate) fn strings_arg(argv: *const *const c_char, argc: usize, arg: &str) -> Result<Vec<String>, kiln_error> {
    array_arg(argv, argc, arg)?
        .iter()
        .enumerate()
        .map(|(i, a)| str_arg(*a, &format!("{arg}[{i}]")).map(str::to_owned))
        .collect()
}

/// A NUL-terminated UTF-8 string, or None for NULL.
pub(crate) fn optional_str(p: *const c_char, arg: &str) -> Result<Option<String>, kiln_error> {
    if p.is_null() {
        return Ok(None);
    }
    str_arg(p, arg).map(|s| Some(s.to_owned()))
}

pub(crate) fn check_flags(flags: u32, known: u32, what: &str) -> Result<(), kiln_error> {
    if flags & !known != 0 {
        return Err(kiln_error::invalid(format!(
            "unknown {what} flag bits {:#x}; accepted: the KILN_{}_* constants (mask {known:#x})",
            flags & !known,
            what.to_uppercase()
        )));
    }
    Ok(())
}

pub(crate) fn new_state(out: *mut *mut kiln_state, f: impl FnOnce() -> Result<State, kiln_error>) -> kiln_status {
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
/// Thread safety: see the header preamble.
#[no_mangle]
pub extern "C" fn kiln_state_free(state: *mut *mut kiln_state) {
    take_free(state)
}

/// The empty filesystem into `*out` (caller owns it; free with `kiln_state_free`).
///
/// Thread safety: see the header preamble.
#[no_mangle]
pub extern "C" fn kiln_state_scratch(out: *mut *mut kiln_state) -> kiln_status {
    new_state(out, || Ok(State::scratch()))
}

/// `local://NAME`: a directory the solve maps with `kiln_solve_opts_add_local(opts, name, dir)`.
/// `name` is copied. Result in `*out` (caller owns it).
///
/// Thread safety: see the header preamble.
#[no_mangle]
pub extern "C" fn kiln_state_local(name: *const c_char, out: *mut *mut kiln_state) -> kiln_status {
    new_state(out, || Ok(State::local(str_arg(name, "name")?)))
}

/// A registry image (`busybox`, `localhost:5000/app:1`, `repo@sha256:...`), normalised like
/// docker does. Result in `*out` (caller owns it).
///
/// Thread safety: see the header preamble.
#[no_mangle]
pub extern "C" fn kiln_state_image(reference: *const c_char, out: *mut *mut kiln_state) -> kiln_status {
    new_state(out, || Ok(State::image(str_arg(reference, "reference")?)))
}

/// An image from the OCI layout directory `dir`; `reference` is a tag (looked up through the
/// `org.opencontainers.image.ref.name` annotation) or a digest `sha256:<64 hex>`. Result in
/// `*out` (caller owns it). A malformed digest returns KILN_ERR_OPTION naming `digest`.
///
/// Thread safety: see the header preamble.
#[no_mangle]
pub extern "C" fn kiln_state_oci_layout(
    dir: *const c_char,
    reference: *const c_char,
    out: *mut *mut kiln_state,
) -> kiln_status {
    new_state(out, || {
        let dir = str_arg(dir, "dir")?;
        let r = OciLayoutOptions::from_reference(str_arg(reference, "reference")?).reference()?;
        Ok(State::oci_layout(dir, r))
    })
}

/// A file downloaded from `url` (http or https). `checksum` (`sha256:<64 hex>`, or NULL) is
/// verified; `filename` (or NULL: the URL's last segment) names the file in the result. Result in
/// `*out` (caller owns it). A malformed checksum returns KILN_ERR_OPTION naming `checksum`.
///
/// Thread safety: see the header preamble.
#[no_mangle]
pub extern "C" fn kiln_state_http(
    url: *const c_char,
    checksum: *const c_char,
    filename: *const c_char,
    out: *mut *mut kiln_state,
) -> kiln_status {
    new_state(out, || {
        let url = str_arg(url, "url")?;
        let checksum = optional_str(checksum, "checksum")?.map(|c| parse_digest("checksum", &c)).transpose()?;
        let filename = optional_str(filename, "filename")?;
        Ok(State::http(url, HttpOptions { checksum, filename, ..Default::default() }))
    })
}

/// A git checkout of `reference` (branch, tag or commit; NULL or "" = the default branch) from
/// `url`; `subdir` (or NULL) keeps only that directory; `flags`: `KILN_GIT_KEEP_GIT_DIR`. Result
/// in `*out` (caller owns it).
///
/// Thread safety: see the header preamble.
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
/// Thread safety: see the header preamble.
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
/// Thread safety: see the header preamble.
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
/// Thread safety: see the header preamble.
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
/// Thread safety: see the header preamble.
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
/// Thread safety: see the header preamble.
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
/// Thread safety: see the header preamble.
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
/// Thread safety: see the header preamble.
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
/// Thread safety: see the header preamble.
#[no_mangle]
pub extern "C" fn kiln_state_with_cwd(
    base: *const kiln_state,
    dir: *const c_char,
    out: *mut *mut kiln_state,
) -> kiln_status {
    new_state(out, || Ok(ref_arg(base, "base")?.st.clone().with_cwd(str_arg(dir, "dir")?)))
}

/// `base` whose producing op never uses a cached result. Result in `*out` (caller owns it).
///
/// Thread safety: see the header preamble.
#[no_mangle]
pub extern "C" fn kiln_state_ignore_cache(base: *const kiln_state, out: *mut *mut kiln_state) -> kiln_status {
    new_state(out, || Ok(ref_arg(base, "base")?.st.clone().ignore_cache()))
}

/// `base` with hostname `hostname` for later runs. Result in `*out` (caller owns it).
///
/// Thread safety: see the header preamble.
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
/// Thread safety: see the header preamble.
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
