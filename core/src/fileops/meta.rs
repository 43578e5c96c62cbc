//! Applying ownership, permission bits and timestamps to created paths, and creating missing
//! directories inside a root without ever traversing a symlink.

use super::resolve::display_in_root;
use super::Owner;
use crate::error::{Error, ErrorKind, Result};
use nix::sys::stat::{utimensat, UtimensatFlags};
use nix::sys::time::TimeSpec;
use std::fs::Metadata;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Builds a FileOp error for an I/O failure of `action` on a path shown inside the container.
pub(crate) fn io_err(action: &str, what: &str, shown: &str, e: std::io::Error) -> Error {
    Error::with_source(ErrorKind::FileOp, format!("{action}: {what} {shown}: {e}"), e)
}

/// A FileOp error with a message prefixed by the action.
pub(crate) fn op_err(action: &str, msg: impl std::fmt::Display) -> Error {
    Error::new(ErrorKind::FileOp, format!("{action}: {msg}"))
}

/// Re-labels any error as a FileOp failure of `action` (keeping it as the cause). An I/O error on
/// a path stays an [`Error::Io`] (with `action` in front of its context), so callers keep its path
/// and cause.
pub(crate) fn in_action(action: &str, e: Error) -> Error {
    if matches!(e.kind(), ErrorKind::FileOp | ErrorKind::Io) {
        return e.context(action);
    }
    Error::with_source(ErrorKind::FileOp, format!("{action}: {e}"), e)
}

/// [`resolve_in_root`](super::resolve_in_root) with errors attributed to `action`.
pub(crate) fn resolve(action: &str, root: &Path, path: &str, follow_final: bool) -> Result<PathBuf> {
    super::resolve_in_root(root, path, follow_final).map_err(|e| in_action(action, e))
}

/// Whether this process may chown to arbitrary ids (the engine normally runs as root).
pub(crate) fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// `lchown` to `owner`, or to 0:0 when none is given and we are root (a setgid parent directory
/// would otherwise leak its group into new files).
pub(crate) fn chown_default(path: &Path, owner: Option<Owner>) -> std::io::Result<()> {
    match owner {
        Some(o) => std::os::unix::fs::lchown(path, Some(o.uid), Some(o.gid)),
        None if is_root() => std::os::unix::fs::lchown(path, Some(0), Some(0)),
        None => Ok(()),
    }
}

fn timespec(nanos: i64) -> TimeSpec {
    TimeSpec::new(nanos.div_euclid(1_000_000_000), nanos.rem_euclid(1_000_000_000))
}

/// Sets atime and mtime of `path` (not following a final symlink) to `nanos` since the epoch.
pub(crate) fn set_times(path: &Path, nanos: i64) -> std::io::Result<()> {
    let ts = timespec(nanos);
    utimensat(None, path, &ts, &ts, UtimensatFlags::NoFollowSymlink).map_err(std::io::Error::from)
}

/// How copied metadata is overridden.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct MetaOverride {
    pub owner: Option<Owner>,
    pub mode: Option<u32>,
    pub timestamp: Option<i64>,
}

/// Gives `dst` the ownership, permission bits and timestamps of source metadata `src`, with the
/// overrides applied. Ownership is set before the mode because chown clears setuid bits.
pub(crate) fn copy_meta(dst: &Path, src: &Metadata, ov: &MetaOverride) -> std::io::Result<()> {
    let (uid, gid) = ov.owner.map(|o| (o.uid, o.gid)).unwrap_or((src.uid(), src.gid()));
    if ov.owner.is_some() || is_root() {
        std::os::unix::fs::lchown(dst, Some(uid), Some(gid))?;
    }
    if !src.file_type().is_symlink() {
        let mut mode = src.mode() & 0o7777;
        if let Some(m) = ov.mode {
            mode = (mode & !0o777) | (m & 0o777);
        }
        std::fs::set_permissions(dst, std::fs::Permissions::from_mode(mode))?;
    }
    let (atime, mtime) = match ov.timestamp {
        Some(t) => (timespec(t), timespec(t)),
        None => (TimeSpec::new(src.atime(), src.atime_nsec()), TimeSpec::new(src.mtime(), src.mtime_nsec())),
    };
    utimensat(None, dst, &atime, &mtime, UtimensatFlags::NoFollowSymlink).map_err(std::io::Error::from)
}

/// Creates every missing directory of `host` (a resolved path inside `root`) with `mode`, the
/// given owner (0:0 by default) and timestamp. Existing directories are left untouched; an
/// existing non-directory or symlink on the way is an error. Returns the created directories.
pub(crate) fn mkdir_all_in_root(
    action: &str,
    root: &Path,
    host: &Path,
    mode: u32,
    owner: Option<Owner>,
    timestamp: Option<i64>,
) -> Result<Vec<PathBuf>> {
    let rel = host.strip_prefix(root).map_err(|_| {
        Error::new(ErrorKind::Internal, format!("{action}: {} is outside root {}", host.display(), root.display()))
    })?;
    let mut cur = root.to_path_buf();
    let mut created = Vec::new();
    for comp in rel.components() {
        cur.push(comp);
        match std::fs::symlink_metadata(&cur) {
            Ok(m) if m.is_dir() => continue,
            Ok(m) if m.file_type().is_symlink() => {
                return Err(op_err(
                    action,
                    format!("{} changed into a symlink while in use", display_in_root(root, &cur)),
                ))
            }
            Ok(_) => {
                return Err(op_err(action, format!("{} exists and is not a directory", display_in_root(root, &cur))))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(action, "cannot stat", &display_in_root(root, &cur), e)),
        }
        let shown = display_in_root(root, &cur);
        std::fs::create_dir(&cur).map_err(|e| io_err(action, "cannot create directory", &shown, e))?;
        std::fs::set_permissions(&cur, std::fs::Permissions::from_mode(mode & 0o7777))
            .map_err(|e| io_err(action, "cannot chmod", &shown, e))?;
        chown_default(&cur, owner).map_err(|e| io_err(action, "cannot chown", &shown, e))?;
        created.push(cur.clone());
    }
    // Timestamps last, parents included, so creating a child does not bump a parent's mtime.
    if let Some(ts) = timestamp {
        for d in created.iter().rev() {
            set_times(d, ts).map_err(|e| io_err(action, "cannot set times of", &display_in_root(root, d), e))?;
        }
    }
    Ok(created)
}
