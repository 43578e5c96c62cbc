//! Filesystem helpers shared by the snapshotters: extended attributes, metadata-preserving tree
//! copies, atomic small files, disk usage and mount bookkeeping.

use std::collections::{HashMap, HashSet};
use std::ffi::{CString, OsStr, OsString};
use std::fs::{self, Metadata};
use std::io::Write;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::sys::stat::{Mode, SFlag, UtimensatFlags};
use nix::sys::time::TimeSpec;

use crate::error::{Error, ErrorKind, IoContext, Result};

fn cpath(path: &Path) -> Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| Error::new(ErrorKind::Snapshot, format!("path {} contains a NUL byte", path.display())))
}

fn xattr_unsupported(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOTSUP) | Some(libc::ENODATA))
}

/// Lists the extended attributes of `path` (not following symlinks). Filesystems without xattr
/// support yield an empty list.
pub(crate) fn list_xattrs(path: &Path) -> Result<Vec<(OsString, Vec<u8>)>> {
    let c = cpath(path)?;
    let mut buf = vec![0u8; 1024];
    let len = loop {
        // SAFETY: `c` is a valid NUL-terminated path and `buf` is writable for `buf.len()` bytes.
        let n = unsafe { libc::llistxattr(c.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
        if n >= 0 {
            break n as usize;
        }
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::ERANGE) {
            buf.resize(buf.len() * 4, 0);
            continue;
        }
        if xattr_unsupported(&e) {
            return Ok(Vec::new());
        }
        return Err(Error::io("listing xattrs of", path, e));
    };
    let mut out = Vec::new();
    for name in buf[..len].split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let name = OsStr::from_bytes(name);
        if let Some(v) = get_xattr(path, name)? {
            out.push((name.to_os_string(), v));
        }
    }
    out.sort();
    Ok(out)
}

/// Reads one extended attribute of `path` (not following symlinks); `None` when absent.
pub(crate) fn get_xattr(path: &Path, name: &OsStr) -> Result<Option<Vec<u8>>> {
    let c = cpath(path)?;
    let cname =
        CString::new(name.as_bytes()).map_err(|_| Error::new(ErrorKind::Snapshot, "xattr name contains a NUL byte"))?;
    let mut buf = vec![0u8; 256];
    loop {
        // SAFETY: `c` and `cname` are valid NUL-terminated strings; `buf` is writable for its length.
        let n = unsafe { libc::lgetxattr(c.as_ptr(), cname.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
        if n >= 0 {
            buf.truncate(n as usize);
            return Ok(Some(buf));
        }
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::ERANGE) {
            buf.resize(buf.len() * 4, 0);
            continue;
        }
        if xattr_unsupported(&e) {
            return Ok(None);
        }
        return Err(Error::io(format!("reading xattr {} of", name.to_string_lossy()), path, e));
    }
}

/// Sets one extended attribute of `path` (not following symlinks).
pub(crate) fn set_xattr(path: &Path, name: &OsStr, value: &[u8]) -> Result<()> {
    let c = cpath(path)?;
    let cname =
        CString::new(name.as_bytes()).map_err(|_| Error::new(ErrorKind::Snapshot, "xattr name contains a NUL byte"))?;
    // SAFETY: `c` and `cname` are valid NUL-terminated strings; `value` is readable for its length.
    let r = unsafe { libc::lsetxattr(c.as_ptr(), cname.as_ptr(), value.as_ptr().cast(), value.len(), 0) };
    if r != 0 {
        return Err(Error::io(
            format!("setting xattr {} on", name.to_string_lossy()),
            path,
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}

/// Whether an xattr belongs to overlayfs' own bookkeeping (never copied into layers or trees).
pub(crate) fn is_overlay_xattr(name: &OsStr) -> bool {
    let b = name.as_bytes();
    b.starts_with(b"trusted.overlay.") || b.starts_with(b"user.overlay.")
}

/// Sets access and modification times of `path` without following a final symlink.
pub(crate) fn set_times(path: &Path, atime: (i64, i64), mtime: (i64, i64)) -> Result<()> {
    let a = TimeSpec::new(atime.0, atime.1);
    let m = TimeSpec::new(mtime.0, mtime.1);
    nix::sys::stat::utimensat(None, path, &a, &m, UtimensatFlags::NoFollowSymlink)
        .map_err(|e| Error::io("setting times of", path, e.into()))
}

/// Changes owner of `path` without following a final symlink. Without root, EPERM is tolerated
/// (the tree keeps the caller's ownership) so that unprivileged use still works.
pub(crate) fn set_owner(path: &Path, uid: u32, gid: u32) -> Result<()> {
    match std::os::unix::fs::lchown(path, Some(uid), Some(gid)) {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EPERM) && !nix::unistd::geteuid().is_root() => {
            tracing::debug!(path = %path.display(), uid, gid, "cannot chown without root; keeping owner");
            Ok(())
        }
        Err(e) => Err(Error::io(format!("changing owner to {uid}:{gid} of"), path, e)),
    }
}

/// Sets permission bits (including setuid/setgid/sticky) of a non-symlink `path`.
pub(crate) fn set_mode(path: &Path, mode: u32) -> Result<()> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode & 0o7777)).with_path("setting mode of", path)
}

/// Creates a device node or FIFO.
pub(crate) fn make_node(path: &Path, kind: SFlag, mode: u32, rdev: u64) -> Result<()> {
    nix::sys::stat::mknod(path, kind, Mode::from_bits_truncate(mode & 0o7777), rdev as libc::dev_t)
        .map_err(|e| Error::io("creating device node", path, e.into()))
}

/// Copies the whole tree under `src` into the existing directory `dst`, preserving modes,
/// ownership, times, symlinks, hardlinks (within the tree), device nodes, FIFOs and xattrs
/// (except overlayfs' own). `dst` itself takes `src`'s metadata. Sockets are skipped.
pub(crate) fn copy_tree(src: &Path, dst: &Path) -> Result<()> {
    let mut links = HashMap::new();
    let mut dirs = Vec::new();
    copy_dir_contents(src, dst, &mut links, &mut dirs)?;
    let meta = fs::symlink_metadata(src).with_path("reading metadata of", src)?;
    copy_metadata(src, dst, &meta)?;
    dirs.push((dst.to_path_buf(), meta));
    // Directory times go last: creating children updates their parent's mtime.
    for (d, m) in &dirs {
        set_times(d, (m.atime(), m.atime_nsec()), (m.mtime(), m.mtime_nsec()))?;
    }
    Ok(())
}

/// Reads a directory's entry names sorted bytewise (the deterministic order of every walk).
pub(crate) fn sorted_names(dir: &Path) -> Result<Vec<OsString>> {
    let mut names = Vec::new();
    for e in fs::read_dir(dir).with_path("reading directory", dir)? {
        names.push(e.with_path("reading directory", dir)?.file_name());
    }
    names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    Ok(names)
}

fn copy_dir_contents(
    src: &Path,
    dst: &Path,
    links: &mut HashMap<(u64, u64), PathBuf>,
    dirs: &mut Vec<(PathBuf, Metadata)>,
) -> Result<()> {
    for name in sorted_names(src)? {
        let s = src.join(&name);
        let d = dst.join(&name);
        let meta = fs::symlink_metadata(&s).with_path("reading metadata of", &s)?;
        let ft = meta.file_type();
        if ft.is_dir() {
            fs::create_dir(&d).with_path("creating directory", &d)?;
            copy_dir_contents(&s, &d, links, dirs)?;
            copy_metadata(&s, &d, &meta)?;
            dirs.push((d, meta));
            continue;
        }
        if meta.nlink() > 1 {
            if let Some(first) = links.get(&(meta.dev(), meta.ino())) {
                fs::hard_link(first, &d).with_path("creating hardlink", &d)?;
                continue;
            }
            links.insert((meta.dev(), meta.ino()), d.clone());
        }
        if ft.is_file() {
            fs::copy(&s, &d).with_path("copying file to", &d)?;
        } else if ft.is_symlink() {
            let target = fs::read_link(&s).with_path("reading symlink", &s)?;
            std::os::unix::fs::symlink(&target, &d).with_path("creating symlink", &d)?;
        } else if ft.is_fifo() {
            make_node(&d, SFlag::S_IFIFO, meta.mode(), 0)?;
        } else if ft.is_char_device() {
            make_node(&d, SFlag::S_IFCHR, meta.mode(), meta.rdev())?;
        } else if ft.is_block_device() {
            make_node(&d, SFlag::S_IFBLK, meta.mode(), meta.rdev())?;
        } else {
            tracing::debug!(path = %s.display(), "skipping socket while copying tree");
            continue;
        }
        copy_metadata(&s, &d, &meta)?;
        set_times(&d, (meta.atime(), meta.atime_nsec()), (meta.mtime(), meta.mtime_nsec()))?;
    }
    Ok(())
}

/// Owner, mode and xattrs (times are set by the caller, after children for directories).
fn copy_metadata(src: &Path, dst: &Path, meta: &Metadata) -> Result<()> {
    set_owner(dst, meta.uid(), meta.gid())?;
    if !meta.file_type().is_symlink() {
        // After chown: chown clears setuid/setgid bits.
        set_mode(dst, meta.mode())?;
    }
    for (name, value) in list_xattrs(src)? {
        if is_overlay_xattr(&name) {
            continue;
        }
        if let Err(e) = set_xattr(dst, &name, &value) {
            tracing::warn!(error = %e, "could not copy xattr");
        }
    }
    Ok(())
}

/// Disk usage of the tree under `root` in bytes (allocated blocks, hardlinked inodes once).
pub(crate) fn disk_usage(root: &Path) -> Result<u64> {
    let mut seen = HashSet::new();
    let mut total = 0u64;
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        let meta = fs::symlink_metadata(&p).with_path("reading metadata of", &p)?;
        if seen.insert((meta.dev(), meta.ino())) {
            total += meta.blocks() * 512;
        }
        if meta.is_dir() {
            for e in fs::read_dir(&p).with_path("reading directory", &p)? {
                stack.push(e.with_path("reading directory", &p)?.path());
            }
        }
    }
    Ok(total)
}

/// Writes a small file atomically: temp file, fsync, rename, fsync of the directory.
pub(crate) fn write_atomic(path: &Path, contents: &[u8]) -> Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| Error::new(ErrorKind::Internal, format!("{} has no parent directory", path.display())))?;
    let mut tmp_name = OsString::from(".");
    tmp_name.push(path.file_name().unwrap_or_default());
    tmp_name.push(".tmp");
    let tmp = dir.join(tmp_name);
    let mut f = fs::File::create(&tmp).with_path("creating", &tmp)?;
    f.write_all(contents).with_path("writing", &tmp)?;
    f.sync_all().with_path("syncing", &tmp)?;
    drop(f);
    fs::rename(&tmp, path).with_path("renaming into place", path)?;
    sync_dir(dir)
}

/// Fsyncs a directory so renames inside it are durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    fs::File::open(dir).and_then(|d| d.sync_all()).with_path("syncing directory", dir)
}

/// Mount points at or below `dir`, deepest first, from /proc/self/mountinfo.
pub(crate) fn mounts_under(dir: &Path) -> Result<Vec<PathBuf>> {
    let info = fs::read_to_string("/proc/self/mountinfo").with_path("reading", "/proc/self/mountinfo")?;
    let mut out: Vec<PathBuf> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(OsString::from_vec(unescape_mountinfo(p))))
        .filter(|p| p.starts_with(dir))
        .collect();
    out.sort_by_key(|p| std::cmp::Reverse(p.as_os_str().len()));
    out.dedup();
    Ok(out)
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape_mountinfo(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c)) {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

/// Unmounts `path`; on failure retries lazily (MNT_DETACH) and logs.
pub(crate) fn unmount(path: &Path) {
    use nix::mount::{umount2, MntFlags};
    if let Err(e) = umount2(path, MntFlags::empty()) {
        tracing::warn!(path = %path.display(), error = %e, "unmount failed; detaching lazily");
        if let Err(e) = umount2(path, MntFlags::MNT_DETACH) {
            tracing::error!(path = %path.display(), error = %e, "lazy unmount failed; mount leaked");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_unescape() {
        assert_eq!(unescape_mountinfo(r"/a\040b\134c"), b"/a b\\c".to_vec());
        assert_eq!(unescape_mountinfo(r"/x\04"), b"/x\\04".to_vec());
    }

    #[test]
    fn copy_tree_preserves_metadata_and_links() {
        let t = tempfile::tempdir().unwrap();
        let src = t.path().join("src");
        let dst = t.path().join("dst");
        fs::create_dir_all(src.join("d/e")).unwrap();
        fs::write(src.join("d/f"), b"hello").unwrap();
        fs::hard_link(src.join("d/f"), src.join("h")).unwrap();
        std::os::unix::fs::symlink("d/f", src.join("l")).unwrap();
        set_mode(&src.join("d/f"), 0o4751).unwrap();
        set_owner(&src.join("d/f"), 123, 456).unwrap();
        set_mode(&src.join("d/f"), 0o4751).unwrap();
        set_xattr(&src.join("d/f"), OsStr::new("user.k"), b"v").unwrap();
        set_times(&src.join("d"), (5, 6), (7, 8)).unwrap();
        fs::create_dir(&dst).unwrap();
        copy_tree(&src, &dst).unwrap();
        let m = fs::symlink_metadata(dst.join("d/f")).unwrap();
        assert_eq!((m.mode() & 0o7777, m.uid(), m.gid(), m.nlink()), (0o4751, 123, 456, 2));
        assert_eq!(fs::read(dst.join("h")).unwrap(), b"hello");
        assert_eq!(fs::metadata(dst.join("h")).unwrap().ino(), m.ino());
        assert_eq!(fs::read_link(dst.join("l")).unwrap(), PathBuf::from("d/f"));
        assert_eq!(get_xattr(&dst.join("d/f"), OsStr::new("user.k")).unwrap(), Some(b"v".to_vec()));
        let d = fs::symlink_metadata(dst.join("d")).unwrap();
        assert_eq!((d.mtime(), d.mtime_nsec()), (7, 8));
    }
}
