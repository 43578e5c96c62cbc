//! Resolving a container path inside a root filesystem on the host, following symlinks as the
//! container would see them (absolute targets and `..` never escape the root), like runc's
//! `securejoin`. Used before a container starts, when the rootfs is only a directory on the host.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::io;
use std::path::{Component, Path, PathBuf};

/// Symlink hops after which resolution gives up (same limit as securejoin).
const MAX_SYMLINK_HOPS: usize = 255;

/// Pushes the components of `path` in front of `queue`, keeping their order.
fn push_front_components(queue: &mut VecDeque<OsString>, path: &Path) {
    let parts: Vec<OsString> = path
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_os_string()),
            Component::ParentDir => Some(OsString::from("..")),
            _ => None,
        })
        .collect();
    for part in parts.into_iter().rev() {
        queue.push_front(part);
    }
}

/// The host path of `container_path` inside `root`, with every symlink on the way resolved inside
/// `root`. Missing components are kept as they are (the result may not exist). Returns the path
/// relative to `root` as components, so callers can walk it.
pub(crate) fn resolve_components(root: &Path, container_path: &Path) -> io::Result<Vec<OsString>> {
    let mut queue = VecDeque::new();
    push_front_components(&mut queue, container_path);
    let mut resolved: Vec<OsString> = Vec::new();
    let mut hops = 0usize;
    while let Some(part) = queue.pop_front() {
        if part == ".." {
            resolved.pop();
            continue;
        }
        let mut candidate = root.to_path_buf();
        candidate.extend(&resolved);
        candidate.push(&part);
        match std::fs::symlink_metadata(&candidate) {
            Ok(meta) if meta.file_type().is_symlink() => {
                hops += 1;
                if hops > MAX_SYMLINK_HOPS {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!("too many levels of symbolic links resolving {}", container_path.display()),
                    ));
                }
                let target = std::fs::read_link(&candidate)?;
                if target.is_absolute() {
                    resolved.clear();
                }
                push_front_components(&mut queue, &target);
            }
            Ok(_) => resolved.push(part),
            // A missing path, or one below a non-directory: the caller decides what that means.
            Err(e) if e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ENOTDIR) => {
                resolved.push(part)
            }
            Err(e) => return Err(e),
        }
    }
    Ok(resolved)
}

/// Like [`resolve_components`] but returns the joined host path.
pub(crate) fn resolve_in_root(root: &Path, container_path: &Path) -> io::Result<PathBuf> {
    let mut out = root.to_path_buf();
    out.extend(resolve_components(root, container_path)?);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn absolute_symlinks_and_dotdot_stay_inside_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("real/etc")).unwrap();
        symlink("/real/etc", root.join("etc")).unwrap();
        symlink("../../../../outside", root.join("real/up")).unwrap();
        assert_eq!(resolve_in_root(root, Path::new("/etc/hosts")).unwrap(), root.join("real/etc/hosts"));
        assert_eq!(resolve_in_root(root, Path::new("/real/up/x")).unwrap(), root.join("outside/x"));
        assert_eq!(resolve_in_root(root, Path::new("/../../x")).unwrap(), root.join("x"));
    }

    #[test]
    fn symlink_loops_fail() {
        let dir = tempfile::tempdir().unwrap();
        symlink("b", dir.path().join("a")).unwrap();
        symlink("a", dir.path().join("b")).unwrap();
        assert!(resolve_in_root(dir.path(), Path::new("/a/x")).is_err());
    }
}
