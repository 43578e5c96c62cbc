//! Mount-point stubs: the empty directories and files the executor creates in a rootfs so that
//! every mount has a destination before the container starts (the rootfs may become read-only),
//! and their removal afterwards so they never end up in a snapshot or layer. Like BuildKit's
//! `removeMountStubsRecursive`: only what was created here, only while still empty, and the
//! parent directory's times are restored.

use std::fs::{File, FileTimes};
use std::path::{Path, PathBuf};

use crate::error::{Error, ErrorKind, IoContext, Result};
use crate::worker::rootpath::resolve_components;

/// What the final component of a mount point is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StubKind {
    /// A directory (for directory binds, tmpfs, proc, ...).
    Dir,
    /// An empty regular file (for file binds such as /etc/hosts).
    File,
}

/// The stubs created in one rootfs, in creation order.
#[derive(Debug, Default)]
pub(crate) struct MountStubs {
    /// Host paths created, parents before children.
    created: Vec<PathBuf>,
    /// For each first-created path, its parent directory and that parent's times before.
    parents: Vec<(PathBuf, FileTimes)>,
}

/// Creates every missing component of `dest` inside `root` (symlinks resolved inside `root`) and
/// returns the host paths created, parents first, plus the times of the first created path's
/// parent.
fn create_missing(root: &Path, dest: &Path, kind: StubKind) -> Result<(Vec<PathBuf>, Option<(PathBuf, FileTimes)>)> {
    let components = resolve_components(root, dest).with_path("resolving mount point in rootfs", root.join(dest))?;
    let mut created = Vec::new();
    let mut parent_times = None;
    let mut cur = root.to_path_buf();
    let last = components.len().saturating_sub(1);
    for (i, comp) in components.iter().enumerate() {
        let parent = cur.clone();
        cur.push(comp);
        match std::fs::symlink_metadata(&cur) {
            Ok(meta) => {
                if i != last && !meta.is_dir() {
                    return Err(Error::new(
                        ErrorKind::Worker,
                        format!(
                            "cannot create mount point {} in rootfs: {} exists and is not a directory",
                            dest.display(),
                            cur.display()
                        ),
                    ));
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if parent_times.is_none() {
                    let meta = std::fs::metadata(&parent).with_path("reading times of", &parent)?;
                    let times = FileTimes::new()
                        .set_accessed(meta.accessed().with_path("reading atime of", &parent)?)
                        .set_modified(meta.modified().with_path("reading mtime of", &parent)?);
                    parent_times = Some((parent.clone(), times));
                }
                if i == last && kind == StubKind::File {
                    std::fs::OpenOptions::new()
                        .write(true)
                        .create_new(true)
                        .open(&cur)
                        .with_path("creating mount point file", &cur)?;
                } else {
                    std::fs::create_dir(&cur).with_path("creating mount point directory", &cur)?;
                }
                created.push(cur.clone());
            }
            Err(e) => return Err(Error::io("inspecting mount point", cur, e)),
        }
    }
    Ok((created, parent_times))
}

/// Creates `dir` (a container path) inside `root` with its parents, keeping them (a process's
/// working directory persists, as in BuildKit).
pub(crate) fn ensure_dir(root: &Path, dir: &Path) -> Result<()> {
    create_missing(root, dir, StubKind::Dir).map(|_| ())
}

impl MountStubs {
    /// Makes sure the mount point `dest` (container path) exists in `root`, recording what was
    /// created.
    pub(crate) fn ensure(&mut self, root: &Path, dest: &Path, kind: StubKind) -> Result<()> {
        let (created, parent) = create_missing(root, dest, kind)?;
        self.created.extend(created);
        self.parents.extend(parent);
        Ok(())
    }

    /// The paths created so far (parents first).
    #[cfg(test)]
    pub(crate) fn created(&self) -> &[PathBuf] {
        &self.created
    }

    /// Removes the created stubs that are still empty, children first, then restores the parents'
    /// times. Failures are logged: a leftover stub is cosmetic and must not fail a finished run.
    pub(crate) fn remove(&mut self) {
        for path in self.created.drain(..).rev() {
            let Ok(meta) = std::fs::symlink_metadata(&path) else { continue };
            let result = if meta.is_dir() {
                std::fs::remove_dir(&path)
            } else if meta.is_file() && meta.len() == 0 {
                std::fs::remove_file(&path)
            } else {
                continue;
            };
            if let Err(e) = result {
                // A directory the process filled stays: it is now real content.
                if e.raw_os_error() != Some(libc::ENOTEMPTY) && e.raw_os_error() != Some(libc::EEXIST) {
                    tracing::warn!(path = %path.display(), error = %e, "could not remove mount stub");
                }
            }
        }
        for (parent, times) in self.parents.drain(..).rev() {
            let restored = File::open(&parent).and_then(|f| f.set_times(times));
            if let Err(e) = restored {
                tracing::debug!(path = %parent.display(), error = %e, "could not restore times after removing mount stubs");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stubs_are_created_and_removed_only_when_empty() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir(root.join("etc")).unwrap();
        let mut stubs = MountStubs::default();
        stubs.ensure(root, Path::new("/a/b/c"), StubKind::Dir).unwrap();
        stubs.ensure(root, Path::new("/etc/hosts"), StubKind::File).unwrap();
        stubs.ensure(root, Path::new("/keep/file"), StubKind::File).unwrap();
        assert_eq!(stubs.created().len(), 6);
        assert!(root.join("a/b/c").is_dir());
        assert!(root.join("etc/hosts").is_file());
        // The process wrote into one stub: it and its parent stay.
        std::fs::write(root.join("keep/file"), "data").unwrap();
        stubs.remove();
        assert!(!root.join("a").exists());
        assert!(!root.join("etc/hosts").exists());
        assert!(root.join("etc").is_dir());
        assert!(root.join("keep/file").is_file());
    }

    #[test]
    fn existing_paths_are_not_recorded_and_files_block_dirs() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("proc")).unwrap();
        std::fs::write(root.join("file"), "").unwrap();
        let mut stubs = MountStubs::default();
        stubs.ensure(root, Path::new("/proc"), StubKind::Dir).unwrap();
        assert!(stubs.created().is_empty());
        let e = stubs.ensure(root, Path::new("/file/x"), StubKind::Dir).unwrap_err();
        assert!(e.to_string().contains("not a directory"), "{e}");
    }

    #[test]
    fn parent_mtime_is_restored() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir(root.join("etc")).unwrap();
        let old = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000);
        File::open(root.join("etc")).unwrap().set_modified(old).unwrap();
        let mut stubs = MountStubs::default();
        stubs.ensure(root, Path::new("/etc/resolv.conf"), StubKind::File).unwrap();
        stubs.remove();
        assert_eq!(std::fs::metadata(root.join("etc")).unwrap().modified().unwrap(), old);
    }
}
