//! The disk operations of the receiver, as fsutil's DiskWriter does them on Unix: metadata
//! rewrites, times without following symlinks, device nodes, `RemoveAll`.

use super::stat::{unix_perm, MODE_SYMLINK};
use crate::error::{Error, ErrorKind, IoContext, Result};
use crate::session::proto::fsutil::types::Stat;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// fsutil's `rewriteMetadata`: xattrs (best effort, as fsutil ignores their errors), owner,
/// mode (not of symlinks), mtime (of the link itself).
pub(super) fn rewrite_metadata(path: &Path, st: &Stat) -> Result<()> {
    for (k, v) in &st.xattrs {
        let _ = crate::snapshot::set_xattr(path, std::ffi::OsStr::new(k), v);
    }
    if let Err(e) = std::os::unix::fs::lchown(path, Some(st.uid), Some(st.gid)) {
        // fsutil fails here; an unprivileged receiver keeps its own ids instead (BuildKit runs as
        // root, or as root of a user namespace).
        if e.raw_os_error() != Some(libc::EPERM) || crate::fileops::is_root() {
            return Err(Error::io("file transfer: cannot change owner of", path, e));
        }
    }
    if st.mode & MODE_SYMLINK == 0 {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(unix_perm(st.mode)))
            .with_path("file transfer: cannot set mode", path)?;
    }
    set_times(path, st.mod_time)
}

pub(super) fn set_times(path: &Path, nanos: i64) -> Result<()> {
    let ts = nix::sys::time::TimeSpec::new(nanos.div_euclid(1_000_000_000), nanos.rem_euclid(1_000_000_000));
    nix::sys::stat::utimensat(None, path, &ts, &ts, nix::sys::stat::UtimensatFlags::NoFollowSymlink)
        .map_err(|e| Error::io("file transfer: cannot set mtime of", path, std::io::Error::from(e)))
}

pub(super) fn mknod(path: &Path, mode: u32, dev: u64) -> Result<()> {
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).map_err(|_| {
        Error::new(ErrorKind::Source, format!("file transfer: path {} contains a NUL byte", path.display()))
    })?;
    // SAFETY: `c` is a valid NUL-terminated path.
    let r = unsafe { libc::mknod(c.as_ptr(), mode as libc::mode_t, dev as libc::dev_t) };
    if r != 0 {
        return Err(Error::io("file transfer: cannot create device or fifo", path, std::io::Error::last_os_error()));
    }
    Ok(())
}

/// Go's `os.RemoveAll` of one path: a directory with its contents, anything else itself (a
/// symlink, not its target); already gone is fine.
pub(super) fn remove_all(path: &Path) -> Result<()> {
    let r = match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => Err(e),
    };
    match r {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::io("file transfer: cannot remove", path, e)),
        _ => Ok(()),
    }
}
