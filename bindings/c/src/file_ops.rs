//! File actions on a `kiln_state`: copy, mkdir, mkfile, rm and symlink, with their `KILN_COPY_*`,
//! `KILN_MKDIR_*` and `KILN_RM_*` flags.

use crate::errors::kiln_status;
use crate::ffi::{bytes_arg, ref_arg, str_arg};
use crate::state::{check_flags, kiln_state, new_state};
use kiln::graph::{CopyOptions, MkdirOptions, MkfileOptions, RmOptions};
use std::ffi::c_char;

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

/// Copies `src_path` of `src` to `dest_path` on top of `dest`; `flags` is a bitwise OR of
/// `KILN_COPY_*` (unknown bits: KILN_ERR_INVALID_ARGUMENT). Result in `*out` (caller owns it).
///
/// Thread safety: see the header preamble.
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
/// Thread safety: see the header preamble.
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
/// Thread safety: see the header preamble.
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
/// Thread safety: see the header preamble.
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
/// Thread safety: see the header preamble.
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
