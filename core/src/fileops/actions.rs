//! The simple file actions: mkdir, mkfile, rm and symlink (BuildKit's FileActionMkDir, MkFile,
//! Rm and Symlink), each confined to its root.

use super::meta::{chown_default, in_action, io_err, mkdir_all_in_root, op_err, resolve, set_times};
use super::resolve::{clean_abs, display_in_root, is_missing, path_has_wildcard, resolve_wildcards};
use super::Owner;
use crate::error::Result;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// Creates directory `path` with permission bits `mode`. An existing directory is fine (left
/// unchanged); a missing parent is an error unless `make_parents`, which creates the missing
/// parents with the same mode, owner and timestamp. Owner defaults to 0:0.
pub fn mkdir(
    root: &Path,
    path: &str,
    mode: u32,
    make_parents: bool,
    owner: Option<Owner>,
    timestamp: Option<i64>,
) -> Result<()> {
    let action = format!("mkdir {}", clean_abs(path));
    let host = resolve(&action, root, path, true)?;
    match std::fs::symlink_metadata(&host) {
        Ok(m) if m.is_dir() => return Ok(()),
        Ok(_) => {
            return Err(op_err(&action, format!("{} exists and is not a directory", display_in_root(root, &host))))
        }
        Err(e) if is_missing(&e) => {}
        Err(e) => return Err(io_err(&action, "cannot stat", &display_in_root(root, &host), e)),
    }
    if !make_parents {
        let parent = host.parent().unwrap_or(root);
        match std::fs::symlink_metadata(parent) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(op_err(&action, format!("parent {} is not a directory", display_in_root(root, parent))))
            }
            Err(_) => {
                return Err(op_err(
                    &action,
                    format!(
                        "parent directory {} does not exist (make_parents creates it)",
                        display_in_root(root, parent)
                    ),
                ))
            }
        }
    }
    mkdir_all_in_root(&action, root, &host, mode, owner, timestamp)?;
    Ok(())
}

/// Writes a regular file `path` holding `data`. A new file gets permission bits `mode & 0o777`
/// and owner 0:0 unless `owner` is given; an existing regular file keeps its mode and owner (see
/// [`overwrite_file`]); any other non-directory (a device node, a fifo) is replaced via a
/// temporary file and a rename, never written through. The parent directory must exist.
pub fn mkfile(
    root: &Path,
    path: &str,
    mode: u32,
    data: &[u8],
    owner: Option<Owner>,
    timestamp: Option<i64>,
) -> Result<()> {
    let action = format!("mkfile {}", clean_abs(path));
    let host = resolve(&action, root, path, true)?;
    let shown = display_in_root(root, &host);
    if host == root {
        return Err(op_err(&action, "/ is a directory"));
    }
    if let Ok(m) = std::fs::symlink_metadata(&host) {
        if m.is_dir() {
            return Err(op_err(&action, format!("{shown} is a directory")));
        }
        if m.is_file() {
            return overwrite_file(&action, &host, &shown, data, owner, timestamp);
        }
    }
    let parent = host.parent().unwrap_or(root);
    if !std::fs::symlink_metadata(parent).map(|m| m.is_dir()).unwrap_or(false) {
        return Err(op_err(&action, format!("parent directory {} does not exist", display_in_root(root, parent))));
    }
    let mut tmp = tempfile::Builder::new()
        .prefix(".kiln-mkfile-")
        .tempfile_in(parent)
        .map_err(|e| io_err(&action, "cannot create temporary file in", &display_in_root(root, parent), e))?;
    tmp.write_all(data).map_err(|e| io_err(&action, "cannot write", &shown, e))?;
    let f = tmp.as_file();
    chown_default(tmp.path(), owner).map_err(|e| io_err(&action, "cannot chown", &shown, e))?;
    // Like Go's `os.WriteFile(p, data, FileMode(mode)&0777)`: no setuid/setgid/sticky bits.
    f.set_permissions(std::fs::Permissions::from_mode(mode & 0o777))
        .map_err(|e| io_err(&action, "cannot chmod", &shown, e))?;
    if let Some(ts) = timestamp {
        set_times(tmp.path(), ts).map_err(|e| io_err(&action, "cannot set times of", &shown, e))?;
    }
    tmp.persist(&host).map_err(|e| io_err(&action, "cannot rename into place", &shown, e.error))?;
    Ok(())
}

/// mkfile over an existing regular file, as BuildKit's `os.WriteFile`: the content is replaced in
/// place, so the file keeps its mode, owner (unless one is given) and hard links.
fn overwrite_file(
    action: &str,
    host: &Path,
    shown: &str,
    data: &[u8],
    owner: Option<Owner>,
    timestamp: Option<i64>,
) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(host)
        .map_err(|e| io_err(action, "cannot open", shown, e))?;
    f.write_all(data).map_err(|e| io_err(action, "cannot write", shown, e))?;
    if let Some(o) = owner {
        std::os::unix::fs::lchown(host, Some(o.uid), Some(o.gid))
            .map_err(|e| io_err(action, "cannot chown", shown, e))?;
    }
    if let Some(ts) = timestamp {
        set_times(host, ts).map_err(|e| io_err(action, "cannot set times of", shown, e))?;
    }
    Ok(())
}

/// Removes `path` (recursively for directories; a final symlink is removed, not followed). With
/// `allow_wildcard`, `path` may hold `filepath.Match` wildcards and every match is removed. A
/// missing path (or no match) is not an error whatever `allow_not_found` says: BuildKit v0.11.6
/// removes with Go's `os.RemoveAll`, which succeeds when there is nothing to remove, and kiln
/// gives the same results (see ARCHITECTURE.md).
pub fn rm(root: &Path, path: &str, _allow_not_found: bool, allow_wildcard: bool) -> Result<()> {
    let clean = clean_abs(path);
    let action = format!("rm {clean}");
    let targets = if allow_wildcard && path_has_wildcard(&clean) {
        resolve_wildcards(root, &clean).map_err(|e| in_action(&action, e))?
    } else {
        vec![clean.clone()]
    };
    for t in targets {
        if t == "/" {
            return Err(op_err(&action, "refusing to remove the root directory"));
        }
        let host = resolve(&action, root, &t, false)?;
        let shown = display_in_root(root, &host);
        let meta = match std::fs::symlink_metadata(&host) {
            Ok(m) => m,
            Err(e) if is_missing(&e) => continue,
            Err(e) => return Err(io_err(&action, "cannot stat", &shown, e)),
        };
        let res = if meta.is_dir() { std::fs::remove_dir_all(&host) } else { std::fs::remove_file(&host) };
        res.map_err(|e| io_err(&action, "cannot remove", &shown, e))?;
    }
    Ok(())
}

/// Creates symlink `newpath` pointing at `oldpath` (stored verbatim; it is resolved later inside
/// the container). `newpath` must not exist and its parent must. Owner defaults to 0:0.
pub fn symlink(root: &Path, oldpath: &str, newpath: &str, owner: Option<Owner>, timestamp: Option<i64>) -> Result<()> {
    let action = format!("symlink {oldpath} -> {}", clean_abs(newpath));
    if clean_abs(newpath) == "/" {
        return Err(op_err(&action, "/ already exists"));
    }
    let host = resolve(&action, root, newpath, false)?;
    let shown = display_in_root(root, &host);
    std::os::unix::fs::symlink(oldpath, &host).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            op_err(&action, format!("{shown} already exists"))
        } else if is_missing(&e) {
            op_err(
                &action,
                format!("parent directory {} does not exist", display_in_root(root, host.parent().unwrap_or(root))),
            )
        } else {
            io_err(&action, "cannot create symlink", &shown, e)
        }
    })?;
    chown_default(&host, owner).map_err(|e| io_err(&action, "cannot chown", &shown, e))?;
    if let Some(ts) = timestamp {
        set_times(&host, ts).map_err(|e| io_err(&action, "cannot set times of", &shown, e))?;
    }
    Ok(())
}
