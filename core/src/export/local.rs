//! `type=local`: copies a result tree into a destination directory — regular files, directories,
//! symlinks (as symlinks), fifos and device nodes, with modes and mtimes, and ownership when
//! running as root. Existing files are replaced atomically (temp + rename in the same directory);
//! nothing is ever written through a symlink that already exists in the destination.

use crate::error::{Error, ErrorKind, IoContext, Result};
use nix::sys::stat::{utimensat, UtimensatFlags};
use nix::sys::time::TimeSpec;
use std::fs::{self, File};
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

/// Makes temp names unique across concurrent exports in one process.
static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Copies the tree at `src_root` into `dest` (created if missing; existing files overwritten).
pub fn export_local(src_root: &Path, dest: &Path) -> Result<()> {
    let root_meta = fs::symlink_metadata(src_root).with_path("reading export source", src_root)?;
    if !root_meta.is_dir() {
        return Err(Error::new(
            ErrorKind::Export,
            format!("local export source {} is not a directory", src_root.display()),
        ));
    }
    // The destination root itself may be a symlink to a directory (the caller chose it).
    match fs::metadata(dest) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return Err(Error::new(
                ErrorKind::Export,
                format!("local export destination {} exists and is not a directory", dest.display()),
            ))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            fs::create_dir_all(dest).with_path("creating export destination", dest)?
        }
        Err(e) => return Err(Error::io("reading export destination", dest, e)),
    }
    let as_root = nix::unistd::geteuid().is_root();
    // Directory metadata is applied after their contents, deepest first, so that writing the
    // children does not disturb the mtimes (or a read-only mode does not block the writes).
    let mut dirs = Vec::new();
    for entry in walkdir::WalkDir::new(src_root).min_depth(1).follow_links(false).sort_by_file_name() {
        let entry = entry.map_err(|e| {
            let path = e.path().map(Path::to_path_buf).unwrap_or_else(|| src_root.to_path_buf());
            Error::io("walking export source", path, e.into())
        })?;
        let rel = entry.path().strip_prefix(src_root).map_err(|_| {
            Error::new(ErrorKind::Internal, format!("{} is outside {}", entry.path().display(), src_root.display()))
        })?;
        let target = dest.join(rel);
        let meta = fs::symlink_metadata(entry.path()).with_path("reading", entry.path())?;
        let ft = meta.file_type();
        if ft.is_dir() {
            match fs::symlink_metadata(&target) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => {
                    remove_any(&target)?;
                    fs::create_dir(&target).with_path("creating directory", &target)?;
                }
                Err(_) => fs::create_dir(&target).with_path("creating directory", &target)?,
            }
            // Writable while we fill it; the real mode is applied afterwards.
            fs::set_permissions(&target, fs::Permissions::from_mode(0o700)).with_path("setting mode of", &target)?;
            dirs.push((target, meta));
            continue;
        }
        let parent = target.parent().unwrap_or(dest);
        let n = TMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        let tmp = parent.join(format!(".kiln-export-{}-{n}", std::process::id()));
        let _ = fs::remove_file(&tmp);
        if ft.is_file() {
            copy_file(entry.path(), &tmp)?;
        } else if ft.is_symlink() {
            let link = fs::read_link(entry.path()).with_path("reading symlink", entry.path())?;
            std::os::unix::fs::symlink(&link, &tmp).with_path("creating symlink", &tmp)?;
        } else if (ft.is_char_device() || ft.is_block_device()) && !as_root {
            tracing::warn!(path = %entry.path().display(), "local export skips device nodes when not root");
            continue;
        } else if ft.is_fifo() || ft.is_char_device() || ft.is_block_device() {
            make_special(&meta, &tmp)?;
        } else {
            tracing::warn!(path = %entry.path().display(), "local export skips sockets");
            continue;
        }
        apply_metadata(&tmp, &meta, as_root)?;
        if fs::symlink_metadata(&target).map(|m| m.is_dir()).unwrap_or(false) {
            remove_any(&target)?;
        }
        fs::rename(&tmp, &target).with_path("moving exported file into place", &target)?;
    }
    for (dir, meta) in dirs.iter().rev() {
        apply_metadata(dir, meta, as_root)?;
    }
    Ok(())
}

fn remove_any(path: &Path) -> Result<()> {
    let m = fs::symlink_metadata(path).with_path("reading", path)?;
    if m.is_dir() {
        fs::remove_dir_all(path).with_path("removing", path)
    } else {
        fs::remove_file(path).with_path("removing", path)
    }
}

fn copy_file(src: &Path, dst: &Path) -> Result<()> {
    let mut from = File::open(src).with_path("opening", src)?;
    let mut to = fs::OpenOptions::new().write(true).create_new(true).open(dst).with_path("creating", dst)?;
    io::copy(&mut from, &mut to).with_path("copying into", dst)?;
    to.sync_all().with_path("syncing", dst)
}

fn make_special(meta: &fs::Metadata, dst: &Path) -> Result<()> {
    use nix::sys::stat::{Mode, SFlag};
    let ft = meta.file_type();
    let kind = if ft.is_fifo() {
        SFlag::S_IFIFO
    } else if ft.is_char_device() {
        SFlag::S_IFCHR
    } else {
        SFlag::S_IFBLK
    };
    let mode = Mode::from_bits_truncate(meta.mode() & 0o7777);
    nix::sys::stat::mknod(dst, kind, mode, meta.rdev())
        .map_err(|e| Error::io("creating special file", dst, io::Error::from(e)))
}

/// Ownership (as root), mode (not for symlinks) and times, without following symlinks.
fn apply_metadata(path: &Path, meta: &fs::Metadata, as_root: bool) -> Result<()> {
    let is_link = meta.file_type().is_symlink();
    if as_root {
        std::os::unix::fs::lchown(path, Some(meta.uid()), Some(meta.gid())).with_path("setting owner of", path)?;
    }
    if !is_link {
        // After chown, which clears setuid/setgid bits.
        fs::set_permissions(path, fs::Permissions::from_mode(meta.mode() & 0o7777))
            .with_path("setting mode of", path)?;
    }
    let atime = TimeSpec::new(meta.atime(), meta.atime_nsec());
    let mtime = TimeSpec::new(meta.mtime(), meta.mtime_nsec());
    utimensat(None, path, &atime, &mtime, UtimensatFlags::NoFollowSymlink)
        .map_err(|e| Error::io("setting times of", path, io::Error::from(e)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_tree_and_overwrites() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        fs::create_dir_all(src.join("d/e")).unwrap();
        fs::write(src.join("d/e/f"), b"new").unwrap();
        fs::set_permissions(src.join("d/e/f"), fs::Permissions::from_mode(0o751)).unwrap();
        let dest = dir.path().join("dest");
        fs::create_dir_all(dest.join("d/e")).unwrap();
        fs::write(dest.join("d/e/f"), b"old old").unwrap();
        fs::write(dest.join("keep"), b"k").unwrap();
        export_local(&src, &dest).unwrap();
        assert_eq!(fs::read(dest.join("d/e/f")).unwrap(), b"new");
        assert_eq!(fs::metadata(dest.join("d/e/f")).unwrap().mode() & 0o7777, 0o751);
        assert_eq!(fs::read(dest.join("keep")).unwrap(), b"k");
        let sm = fs::metadata(src.join("d")).unwrap();
        let dm = fs::metadata(dest.join("d")).unwrap();
        assert_eq!((sm.mtime(), sm.mtime_nsec()), (dm.mtime(), dm.mtime_nsec()));
        assert_eq!(sm.mode(), dm.mode());
    }

    #[test]
    fn destination_root_may_be_a_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        fs::create_dir(&src).unwrap();
        fs::write(src.join("f"), b"x").unwrap();
        let real = dir.path().join("real");
        fs::create_dir(&real).unwrap();
        std::os::unix::fs::symlink(&real, dir.path().join("link")).unwrap();
        export_local(&src, &dir.path().join("link")).unwrap();
        assert_eq!(fs::read(real.join("f")).unwrap(), b"x");
    }

    #[test]
    fn never_writes_through_existing_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        fs::create_dir_all(src.join("sub")).unwrap();
        fs::write(src.join("sub/file"), b"x").unwrap();
        let outside = dir.path().join("outside");
        fs::create_dir(&outside).unwrap();
        let dest = dir.path().join("dest");
        fs::create_dir(&dest).unwrap();
        std::os::unix::fs::symlink(&outside, dest.join("sub")).unwrap();
        export_local(&src, &dest).unwrap();
        assert!(fs::symlink_metadata(dest.join("sub")).unwrap().is_dir());
        assert_eq!(fs::read_dir(&outside).unwrap().count(), 0);
    }
}
