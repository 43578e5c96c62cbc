//! Writing OCI layer tars: from an overlay upper directory (whiteout devices and opaque xattrs
//! become OCI whiteouts) or by comparing two plain trees.
//!
//! Output is deterministic: entries in bytewise-sorted walk order, GNU headers with numeric
//! uid/gid only, mtimes in whole seconds from the files, whiteouts with fixed metadata.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::fs::{self, Metadata};
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use tar::{EntryType, Header};

use super::fsutil::{get_xattr, is_overlay_xattr, list_xattrs, sorted_names};
use crate::error::{Error, ErrorKind, IoContext, Result};

/// Prefix of OCI whiteout files.
pub(crate) const WHITEOUT_PREFIX: &str = ".wh.";
/// Name of the OCI opaque-directory marker.
pub(crate) const OPAQUE: &str = ".wh..wh..opq";

/// A failure writing one tar entry. The cause is part of the message (defect 13a: a full disk
/// showed only "writing layer entry in/part2"); the temp file's errors name its path.
fn tar_err(what: &str, path: &Path, e: std::io::Error) -> Error {
    let sep = if what.is_empty() { "" } else { " " };
    Error::with_source(ErrorKind::Snapshot, format!("writing layer entry {what}{sep}{}: {e}", path.display()), e)
}

/// Streams tar entries for a layer, turning repeated inodes into hardlink entries.
pub(crate) struct LayerWriter<'a> {
    tar: tar::Builder<&'a mut dyn Write>,
    links: HashMap<(u64, u64), PathBuf>,
}

impl<'a> LayerWriter<'a> {
    pub fn new(out: &'a mut dyn Write) -> Self {
        LayerWriter { tar: tar::Builder::new(out), links: HashMap::new() }
    }

    fn header(meta: &Metadata, ty: EntryType) -> Header {
        let mut h = Header::new_gnu();
        h.set_entry_type(ty);
        h.set_mode(meta.mode() & 0o7777);
        h.set_uid(u64::from(meta.uid()));
        h.set_gid(u64::from(meta.gid()));
        h.set_mtime(meta.mtime().max(0) as u64);
        h.set_size(0);
        h
    }

    /// Adds the entry at host path `full` (metadata `meta`) as `rel` in the layer.
    pub fn add(&mut self, rel: &Path, full: &Path, meta: &Metadata) -> Result<()> {
        let ft = meta.file_type();
        let xattrs: Vec<(String, Vec<u8>)> = list_xattrs(full)?
            .into_iter()
            .filter(|(n, _)| !is_overlay_xattr(n))
            .map(|(n, v)| (format!("SCHILY.xattr.{}", n.to_string_lossy()), v))
            .collect();
        if !xattrs.is_empty() {
            self.tar
                .append_pax_extensions(xattrs.iter().map(|(k, v)| (k.as_str(), v.as_slice())))
                .map_err(|e| tar_err("xattrs of", rel, e))?;
        }
        if ft.is_dir() {
            let mut h = Self::header(meta, EntryType::Directory);
            let mut name = rel.as_os_str().to_os_string();
            name.push("/");
            return self.tar.append_data(&mut h, Path::new(&name), std::io::empty()).map_err(|e| tar_err("", rel, e));
        }
        if meta.nlink() > 1 {
            let key = (meta.dev(), meta.ino());
            if let Some(first) = self.links.get(&key) {
                let mut h = Self::header(meta, EntryType::Link);
                let first = first.clone();
                return self.tar.append_link(&mut h, rel, &first).map_err(|e| tar_err("", rel, e));
            }
            self.links.insert(key, rel.to_path_buf());
        }
        if ft.is_file() {
            let mut h = Self::header(meta, EntryType::Regular);
            h.set_size(meta.len());
            let f = fs::File::open(full).with_path("opening file for layer", full)?;
            // A file that changes size while being read would corrupt the tar stream: read exactly
            // the announced size and fail loudly if it shrank.
            let mut r = std::io::Read::take(f, meta.len());
            let mut counted = CountingReader { inner: &mut r, n: 0 };
            self.tar.append_data(&mut h, rel, &mut counted).map_err(|e| tar_err("", rel, e))?;
            if counted.n != meta.len() {
                return Err(Error::new(
                    ErrorKind::Snapshot,
                    format!("file {} changed size while writing the layer", full.display()),
                ));
            }
            Ok(())
        } else if ft.is_symlink() {
            let target = fs::read_link(full).with_path("reading symlink", full)?;
            let mut h = Self::header(meta, EntryType::Symlink);
            self.tar.append_link(&mut h, rel, &target).map_err(|e| tar_err("", rel, e))
        } else if ft.is_char_device() || ft.is_block_device() || ft.is_fifo() {
            let ty = if ft.is_char_device() {
                EntryType::Char
            } else if ft.is_block_device() {
                EntryType::Block
            } else {
                EntryType::Fifo
            };
            let mut h = Self::header(meta, ty);
            if !ft.is_fifo() {
                let rdev = meta.rdev() as libc::dev_t;
                h.set_device_major(libc::major(rdev)).map_err(|e| tar_err("", rel, e))?;
                h.set_device_minor(libc::minor(rdev)).map_err(|e| tar_err("", rel, e))?;
            }
            self.tar.append_data(&mut h, rel, std::io::empty()).map_err(|e| tar_err("", rel, e))
        } else {
            tracing::debug!(path = %full.display(), "skipping socket in layer");
            Ok(())
        }
    }

    /// Adds `.wh.NAME` in directory `rel_dir`: NAME was deleted.
    pub fn whiteout(&mut self, rel_dir: &Path, name: &OsStr) -> Result<()> {
        let mut wh = OsString::from(WHITEOUT_PREFIX);
        wh.push(name);
        self.marker(&rel_dir.join(wh))
    }

    /// Adds `.wh..wh..opq` in directory `rel_dir`: the lower layers' contents are hidden.
    pub fn opaque(&mut self, rel_dir: &Path) -> Result<()> {
        self.marker(&rel_dir.join(OPAQUE))
    }

    fn marker(&mut self, rel: &Path) -> Result<()> {
        let mut h = Header::new_gnu();
        h.set_entry_type(EntryType::Regular);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_size(0);
        self.tar.append_data(&mut h, rel, std::io::empty()).map_err(|e| tar_err("", rel, e))
    }

    /// Writes the end-of-archive marker.
    pub fn finish(mut self) -> Result<()> {
        self.tar.finish().map_err(|e| tar_err("end of archive", Path::new(""), e))
    }
}

struct CountingReader<R> {
    inner: R,
    n: u64,
}

impl<R: std::io::Read> std::io::Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.n += n as u64;
        Ok(n)
    }
}

fn lstat(p: &Path) -> Result<Metadata> {
    fs::symlink_metadata(p).with_path("reading metadata of", p)
}

/// An overlayfs whiteout: a character device 0/0.
fn is_overlay_whiteout(meta: &Metadata) -> bool {
    meta.file_type().is_char_device() && meta.rdev() == 0
}

/// Writes the layer for an overlay upper directory `upper` (its changes over the lower layers).
pub(crate) fn diff_upper(upper: &Path, out: &mut dyn Write) -> Result<()> {
    let mut w = LayerWriter::new(out);
    walk_upper(&mut w, upper, Path::new(""))?;
    w.finish()
}

fn walk_upper(w: &mut LayerWriter<'_>, dir: &Path, rel: &Path) -> Result<()> {
    for name in sorted_names(dir)? {
        let full = dir.join(&name);
        let r = rel.join(&name);
        let meta = lstat(&full)?;
        if is_overlay_whiteout(&meta) {
            w.whiteout(rel, &name)?;
        } else if meta.is_dir() {
            w.add(&r, &full, &meta)?;
            if get_xattr(&full, OsStr::new("trusted.overlay.opaque"))?.as_deref() == Some(b"y") {
                w.opaque(&r)?;
            }
            walk_upper(w, &full, &r)?;
        } else {
            w.add(&r, &full, &meta)?;
        }
    }
    Ok(())
}

/// Writes the layer turning tree `old` (None = empty) into tree `new`.
///
/// Non-directories are unchanged when (type, mode, uid, gid, size, mtime with nanoseconds,
/// device number, symlink target) are equal. Contents are read only for files whose mtime is at
/// or after `recent_secs`: the kernel stamps mtimes with a coarse clock, so a file rewritten
/// (same size) within one tick of its copy into the new tree keeps an equal mtime; callers pass
/// a time shortly before the new tree was copied. Directories are re-emitted when their own
/// (mode, uid, gid, mtime) changed. Xattr-only changes are not detected.
pub(crate) fn diff_trees(old: Option<&Path>, new: &Path, recent_secs: i64, out: &mut dyn Write) -> Result<()> {
    let mut w = LayerWriter::new(out);
    match old {
        Some(old) => compare_dirs(&mut w, old, new, Path::new(""), recent_secs)?,
        None => add_children(&mut w, new, Path::new(""))?,
    }
    w.finish()
}

fn add_children(w: &mut LayerWriter<'_>, dir: &Path, rel: &Path) -> Result<()> {
    for name in sorted_names(dir)? {
        add_tree(w, &dir.join(&name), &rel.join(&name))?;
    }
    Ok(())
}

fn add_tree(w: &mut LayerWriter<'_>, full: &Path, rel: &Path) -> Result<()> {
    let meta = lstat(full)?;
    w.add(rel, full, &meta)?;
    if meta.is_dir() {
        add_children(w, full, rel)?;
    }
    Ok(())
}

fn compare_dirs(w: &mut LayerWriter<'_>, old: &Path, new: &Path, rel: &Path, recent_secs: i64) -> Result<()> {
    let old_names = sorted_names(old)?;
    let new_names = sorted_names(new)?;
    let (mut i, mut j) = (0, 0);
    while i < old_names.len() || j < new_names.len() {
        let ord = match (old_names.get(i), new_names.get(j)) {
            (Some(a), Some(b)) => a.as_bytes().cmp(b.as_bytes()),
            (Some(_), None) => std::cmp::Ordering::Less,
            _ => std::cmp::Ordering::Greater,
        };
        match ord {
            std::cmp::Ordering::Less => {
                w.whiteout(rel, &old_names[i])?;
                i += 1;
            }
            std::cmp::Ordering::Greater => {
                let n = &new_names[j];
                add_tree(w, &new.join(n), &rel.join(n))?;
                j += 1;
            }
            std::cmp::Ordering::Equal => {
                let n = &new_names[j];
                let (o, nf, r) = (old.join(n), new.join(n), rel.join(n));
                let (om, nm) = (lstat(&o)?, lstat(&nf)?);
                if om.is_dir() && nm.is_dir() {
                    if !same_meta(&om, &nm) {
                        w.add(&r, &nf, &nm)?;
                    }
                    compare_dirs(w, &o, &nf, &r, recent_secs)?;
                } else if nm.is_dir()
                    || !same_meta(&om, &nm)
                    || !same_link(&o, &nf, &nm)?
                    || (nm.is_file() && nm.mtime() >= recent_secs && !same_content(&o, &nf)?)
                {
                    add_tree(w, &nf, &r)?;
                }
                i += 1;
                j += 1;
            }
        }
    }
    Ok(())
}

fn same_meta(a: &Metadata, b: &Metadata) -> bool {
    let common = a.mode() == b.mode()
        && a.uid() == b.uid()
        && a.gid() == b.gid()
        && a.mtime() == b.mtime()
        && a.mtime_nsec() == b.mtime_nsec();
    if a.is_dir() {
        return common;
    }
    common && a.len() == b.len() && a.rdev() == b.rdev()
}

fn same_link(old: &Path, new: &Path, meta: &Metadata) -> Result<bool> {
    if !meta.file_type().is_symlink() {
        return Ok(true);
    }
    Ok(fs::read_link(old).with_path("reading symlink", old)? == fs::read_link(new).with_path("reading symlink", new)?)
}

/// Whether two regular files hold the same bytes (read in step, stopping at the first difference).
pub(super) fn same_content(a: &Path, b: &Path) -> Result<bool> {
    use std::io::Read;
    let mut fa = std::io::BufReader::new(fs::File::open(a).with_path("opening", a)?);
    let mut fb = std::io::BufReader::new(fs::File::open(b).with_path("opening", b)?);
    let (mut ba, mut bb) = (vec![0u8; 64 * 1024], vec![0u8; 64 * 1024]);
    loop {
        let na = read_full(&mut fa, &mut ba).with_path("reading", a)?;
        let nb = read_full(&mut fb, &mut bb).with_path("reading", b)?;
        if na != nb || ba[..na] != bb[..nb] {
            return Ok(false);
        }
        if na == 0 {
            return Ok(true);
        }
    }

    fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
        let mut n = 0;
        while n < buf.len() {
            match r.read(&mut buf[n..])? {
                0 => break,
                k => n += k,
            }
        }
        Ok(n)
    }
}
