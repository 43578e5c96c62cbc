//! Mount-point stubs: the empty directories and files a Run's mounts need in its rootfs, and
//! their removal afterwards, exactly as BuildKit's `executor.MountStubsCleaner`: before the run,
//! the paths of `/etc/resolv.conf`, `/etc/hosts` and every mount destination that do not exist
//! yet are recorded (the missing leaf only, or every missing ancestor too when the op sets
//! `removeMountStubsRecursive`); after the run each recorded path that is still an empty
//! directory or an empty file is removed, keeping its parent directory's times. Mount points of
//! the runtime's own mounts (`/dev`, `/proc`, `/sys`) are not stubs: they stay, as in BuildKit.
//! The working directory is created owned by the Run's user (BuildKit's `MkdirAllAndChown`).

use std::fs::{File, FileTimes};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
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

/// The paths recorded as possible stubs of one run, in removal order (each mount's leaf, then
/// its missing ancestors).
#[derive(Debug, Default)]
pub(crate) struct MountStubs {
    paths: Vec<PathBuf>,
}

/// The host path of container path `dest` inside `root` (symlinks resolved inside `root`).
fn host_path(root: &Path, dest: &Path) -> Result<PathBuf> {
    let components = resolve_components(root, dest).with_path("resolving mount point in rootfs", root.join(dest))?;
    let mut p = root.to_path_buf();
    p.extend(components);
    Ok(p)
}

fn missing(path: &Path) -> bool {
    match std::fs::symlink_metadata(path) {
        Ok(_) => false,
        Err(e) => e.kind() == std::io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ENOTDIR),
    }
}

/// Creates every missing component of `dest` inside `root` (directories 0755; the last one a
/// file for [`StubKind::File`]), chowning what it creates to `owner` when given.
fn create_missing(root: &Path, dest: &Path, kind: StubKind, owner: Option<(u32, u32)>) -> Result<()> {
    let components = resolve_components(root, dest).with_path("resolving mount point in rootfs", root.join(dest))?;
    let mut cur = root.to_path_buf();
    let last = components.len().saturating_sub(1);
    for (i, comp) in components.iter().enumerate() {
        cur.push(comp);
        match std::fs::symlink_metadata(&cur) {
            Ok(meta) => {
                if i != last && !meta.is_dir() {
                    return Err(Error::new(
                        ErrorKind::Worker,
                        format!(
                            "cannot create {} in rootfs: {} exists and is not a directory",
                            dest.display(),
                            cur.display()
                        ),
                    ));
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if i == last && kind == StubKind::File {
                    std::fs::OpenOptions::new()
                        .write(true)
                        .create_new(true)
                        .open(&cur)
                        .with_path("creating mount point file", &cur)?;
                } else {
                    std::fs::DirBuilder::new()
                        .mode(0o755)
                        .create(&cur)
                        .with_path("creating directory in rootfs", &cur)?;
                    // Whatever the process umask: a directory that stays must be 0755 as in BuildKit.
                    std::fs::set_permissions(&cur, std::fs::Permissions::from_mode(0o755))
                        .with_path("setting mode of", &cur)?;
                }
                if let Some((uid, gid)) = owner {
                    std::os::unix::fs::lchown(&cur, Some(uid), Some(gid)).with_path("chowning", &cur)?;
                }
            }
            Err(e) => return Err(Error::io("inspecting mount point", cur, e)),
        }
    }
    Ok(())
}

/// Creates the mount point `dest` (container path) in `root` with its missing parents.
pub(crate) fn create_mount_point(root: &Path, dest: &Path, kind: StubKind) -> Result<()> {
    create_missing(root, dest, kind, None)
}

/// Creates the working directory `dir` (container path) in `root` when it does not exist, its
/// missing components 0755 and owned by the Run's user, as BuildKit does; it persists.
pub(crate) fn ensure_workdir(root: &Path, dir: &Path, uid: u32, gid: u32) -> Result<()> {
    let host = host_path(root, dir)?;
    if std::fs::metadata(&host).is_ok() {
        return Ok(());
    }
    create_missing(root, dir, StubKind::Dir, Some((uid, gid)))
}

impl MountStubs {
    /// Records the path of `dest` (container path) in `root` if it does not exist yet, and with
    /// `recursive` also each missing ancestor. Call before anything is created for the run.
    pub(crate) fn record(&mut self, root: &Path, dest: &Path, recursive: bool) {
        let Ok(mut p) = host_path(root, dest) else { return };
        while p != root && missing(&p) {
            self.paths.push(p.clone());
            if !recursive {
                break;
            }
            match p.parent() {
                Some(parent) => p = parent.to_path_buf(),
                None => break,
            }
        }
    }

    /// The paths recorded so far.
    #[cfg(test)]
    pub(crate) fn recorded(&self) -> &[PathBuf] {
        &self.paths
    }

    /// Removes each recorded path that is an empty directory or an empty file, keeping its
    /// parent's times as they are just before the removal. Failures are logged: a leftover stub
    /// is cosmetic and must not fail a finished run.
    pub(crate) fn remove(&mut self) {
        for path in self.paths.drain(..) {
            let Ok(meta) = std::fs::symlink_metadata(&path) else { continue };
            let empty = if meta.is_dir() {
                std::fs::read_dir(&path).map(|mut d| d.next().is_none()).unwrap_or(false)
            } else {
                meta.len() == 0
            };
            if !empty {
                continue;
            }
            let Some(parent) = path.parent() else { continue };
            let times = std::fs::metadata(parent)
                .and_then(|m| Ok(FileTimes::new().set_accessed(m.accessed()?).set_modified(m.modified()?)));
            let times = match times {
                Ok(t) => t,
                Err(e) => {
                    tracing::warn!(path = %parent.display(), error = %e, "cannot read times of a mount stub's parent");
                    continue;
                }
            };
            let removed = if meta.is_dir() { std::fs::remove_dir(&path) } else { std::fs::remove_file(&path) };
            if let Err(e) = removed {
                tracing::warn!(path = %path.display(), error = %e, "could not remove mount stub");
                continue;
            }
            if let Err(e) = File::open(parent).and_then(|f| f.set_times(times)) {
                tracing::debug!(path = %parent.display(), error = %e, "could not restore times after removing a mount stub");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn plan(root: &Path, recursive: bool) -> MountStubs {
        let mut stubs = MountStubs::default();
        for dest in ["/etc/resolv.conf", "/etc/hosts", "/a/b/c", "/keep/file"] {
            stubs.record(root, Path::new(dest), recursive);
        }
        stubs
    }

    fn create_all(root: &Path) {
        create_mount_point(root, Path::new("/etc/resolv.conf"), StubKind::File).unwrap();
        create_mount_point(root, Path::new("/etc/hosts"), StubKind::File).unwrap();
        create_mount_point(root, Path::new("/a/b/c"), StubKind::Dir).unwrap();
        create_mount_point(root, Path::new("/keep/file"), StubKind::File).unwrap();
        // What the runtime creates for its own mounts is not a stub.
        create_mount_point(root, Path::new("/proc"), StubKind::Dir).unwrap();
    }

    #[test]
    fn recursive_removes_every_created_empty_ancestor() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let mut stubs = plan(root, true);
        create_all(root);
        // The process wrote into one stub: it and its parent stay.
        std::fs::write(root.join("keep/file"), "data").unwrap();
        stubs.remove();
        assert!(!root.join("a").exists());
        assert!(!root.join("etc").exists());
        assert!(root.join("keep/file").is_file());
        assert!(root.join("proc").is_dir());
    }

    #[test]
    fn non_recursive_removes_only_the_leaf() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let mut stubs = plan(root, false);
        assert_eq!(stubs.recorded().len(), 4);
        create_all(root);
        stubs.remove();
        assert!(root.join("etc").is_dir());
        assert!(!root.join("etc/hosts").exists());
        assert!(root.join("a/b").is_dir());
        assert!(!root.join("a/b/c").exists());
    }

    #[test]
    fn existing_paths_are_not_recorded_and_files_block_dirs() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::write(root.join("etc/hosts"), "").unwrap();
        std::fs::write(root.join("file"), "").unwrap();
        let mut stubs = MountStubs::default();
        stubs.record(root, Path::new("/etc/hosts"), true);
        assert!(stubs.recorded().is_empty());
        stubs.remove();
        assert!(root.join("etc/hosts").is_file(), "an existing empty file is not a stub");
        let e = create_mount_point(root, Path::new("/file/x"), StubKind::Dir).unwrap_err();
        assert!(e.to_string().contains("not a directory"), "{e}");
    }

    #[test]
    fn parent_mtime_is_kept_across_removal() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir(root.join("etc")).unwrap();
        let mut stubs = MountStubs::default();
        stubs.record(root, Path::new("/etc/resolv.conf"), true);
        create_mount_point(root, Path::new("/etc/resolv.conf"), StubKind::File).unwrap();
        let old = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000);
        File::open(root.join("etc")).unwrap().set_modified(old).unwrap();
        stubs.remove();
        assert!(!root.join("etc/resolv.conf").exists());
        assert_eq!(std::fs::metadata(root.join("etc")).unwrap().modified().unwrap(), old);
    }

    #[test]
    fn workdir_is_owned_by_the_user() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        ensure_workdir(root, Path::new("/home/u/work"), 1000, 1001).unwrap();
        for p in ["home", "home/u", "home/u/work"] {
            let m = std::fs::metadata(root.join(p)).unwrap();
            assert_eq!((m.uid(), m.gid(), m.mode() & 0o777), (1000, 1001, 0o755), "{p}");
        }
        // An existing directory keeps its owner.
        ensure_workdir(root, Path::new("/home"), 0, 0).unwrap();
        assert_eq!(std::fs::metadata(root.join("home")).unwrap().uid(), 1000);
    }
}
