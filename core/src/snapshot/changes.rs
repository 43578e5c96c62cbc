//! The changes between two trees as one OCI layer, for LLB diff ops.
//!
//! A [`ChangeSet`] is built either from the layers separating `lower` from `upper` (when `lower` is
//! an ancestor of `upper`, as BuildKit does: the diff is then exactly those layers, whiteouts
//! included, flattened into one) or by walking both trees (BuildKit's double-walking differ). It
//! is written as one layer whose entries are read from the `upper` tree: every upserted path, the
//! parent directories of every change (with `upper`'s metadata), `.wh.NAME` for deletions and
//! `.wh..wh..opq` for opaque directories. As BuildKit's differs, an entry identical to `lower`'s
//! (a directory copied up only because a child changed, or whose mtime alone changed) is not a
//! change of its own.

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::fs::{self, Metadata};
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

use super::diff::{LayerWriter, OPAQUE, WHITEOUT_PREFIX};
use super::fsutil::sorted_names;
use crate::error::{Error, ErrorKind, IoContext, Result};

/// Paths (relative, no leading `/`) added or changed, deleted, and made opaque.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ChangeSet {
    upserts: BTreeSet<PathBuf>,
    deletes: BTreeSet<PathBuf>,
    opaques: BTreeSet<PathBuf>,
}

fn under(p: &Path, root: &Path) -> bool {
    p != root && p.starts_with(root)
}

fn drop_under(set: &mut BTreeSet<PathBuf>, root: &Path, inclusive: bool) {
    set.retain(|p| !(under(p, root) || (inclusive && p == root)));
}

/// An entry name of a layer as a clean relative path (`./a/b/` → `a/b`); `..` is rejected.
fn clean(name: &Path) -> Result<PathBuf> {
    let mut out = PathBuf::new();
    for c in name.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir | Component::RootDir => {}
            _ => {
                return Err(Error::new(ErrorKind::Snapshot, format!("invalid layer entry {name:?} while diffing")));
            }
        }
    }
    Ok(out)
}

fn lstat(p: &Path) -> Result<Option<Metadata>> {
    match fs::symlink_metadata(p) {
        Ok(m) => Ok(Some(m)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ENOTDIR) => Ok(None),
        Err(e) => Err(Error::io("reading metadata of", p, e)),
    }
}

impl ChangeSet {
    /// True when nothing changed.
    pub fn is_empty(&self) -> bool {
        self.upserts.is_empty() && self.deletes.is_empty() && self.opaques.is_empty()
    }

    /// Adds the next layer (an uncompressed OCI layer tar) on top of the changes so far. Within
    /// a layer, whiteouts only concern the layers below it, whatever their order in the tar.
    pub fn add_layer(&mut self, tar: impl Read) -> Result<()> {
        let (mut whiteouts, mut opaques, mut upserts) = (Vec::new(), Vec::new(), Vec::new());
        let mut archive = tar::Archive::new(tar);
        let entries = archive.entries().map_err(|e| Error::with_source(ErrorKind::Snapshot, "reading layer tar", e))?;
        for entry in entries {
            let entry = entry.map_err(|e| Error::with_source(ErrorKind::Snapshot, "reading layer tar entry", e))?;
            let raw = entry.path().map_err(|e| Error::with_source(ErrorKind::Snapshot, "layer entry name", e))?;
            let path = clean(&raw)?;
            let Some(name) = path.file_name().map(OsStr::as_bytes) else { continue };
            let parent = path.parent().map(Path::to_path_buf).unwrap_or_default();
            if name == OPAQUE.as_bytes() {
                opaques.push(parent);
            } else if let Some(target) = name.strip_prefix(WHITEOUT_PREFIX.as_bytes()) {
                whiteouts.push(parent.join(OsStr::from_bytes(target)));
            } else {
                upserts.push((path, entry.header().entry_type().is_dir()));
            }
        }
        for d in opaques {
            drop_under(&mut self.upserts, &d, false);
            drop_under(&mut self.deletes, &d, false);
            drop_under(&mut self.opaques, &d, false);
            self.opaques.insert(d);
        }
        for p in whiteouts {
            drop_under(&mut self.upserts, &p, true);
            drop_under(&mut self.deletes, &p, true);
            drop_under(&mut self.opaques, &p, true);
            self.deletes.insert(p);
        }
        for (p, is_dir) in upserts {
            if !is_dir {
                // A non-directory replaces whatever was there, a directory's contents included.
                drop_under(&mut self.upserts, &p, false);
                drop_under(&mut self.deletes, &p, false);
                drop_under(&mut self.opaques, &p, true);
            }
            self.upserts.insert(p);
        }
        Ok(())
    }

    /// The changes turning tree `lower` into tree `upper` found by walking both.
    pub fn compare_trees(lower: &Path, upper: &Path) -> Result<ChangeSet> {
        let mut c = ChangeSet::default();
        c.compare_dirs(lower, upper, Path::new(""))?;
        Ok(c)
    }

    fn compare_dirs(&mut self, lower: &Path, upper: &Path, rel: &Path) -> Result<()> {
        let old: BTreeSet<_> = sorted_names(lower)?.into_iter().collect();
        let new = sorted_names(upper)?;
        for n in old.iter().filter(|n| !new.contains(n)) {
            self.deletes.insert(rel.join(n));
        }
        for n in &new {
            let (o, u, r) = (lower.join(n), upper.join(n), rel.join(n));
            let um = lstat(&u)?.ok_or_else(|| Error::new(ErrorKind::Snapshot, format!("{} vanished", u.display())))?;
            match (old.contains(n), lstat(&o)?) {
                (true, Some(om)) if om.is_dir() && um.is_dir() => {
                    if !same_dirent(&om, &um, &o, &u)? {
                        self.upserts.insert(r.clone());
                    }
                    self.compare_dirs(&o, &u, &r)?;
                }
                (true, Some(om)) if !om.is_dir() && !um.is_dir() && same_dirent(&om, &um, &o, &u)? => {}
                _ => self.add_subtree(&u, &r, &um)?,
            }
        }
        Ok(())
    }

    fn add_subtree(&mut self, full: &Path, rel: &Path, meta: &Metadata) -> Result<()> {
        self.upserts.insert(rel.to_path_buf());
        if meta.is_dir() {
            for n in sorted_names(full)? {
                let (f, r) = (full.join(&n), rel.join(&n));
                if let Some(m) = lstat(&f)? {
                    self.add_subtree(&f, &r, &m)?;
                }
            }
        }
        Ok(())
    }

    /// Settles the set against the final trees: paths gone from `upper` are dropped, a path both
    /// deleted and re-created becomes a replacement (an opaque directory when it is one), and
    /// entries identical in `lower` (None = empty) are not changes of their own.
    pub fn normalize(&mut self, lower: Option<&Path>, upper: &Path) -> Result<()> {
        let mut keep = BTreeSet::new();
        for p in std::mem::take(&mut self.upserts) {
            let Some(um) = lstat(&upper.join(&p))? else { continue };
            if self.deletes.remove(&p) && um.is_dir() {
                self.opaques.insert(p.clone());
            }
            if self.opaques.contains(&p) && !um.is_dir() {
                self.opaques.remove(&p);
            }
            let same = match lower {
                Some(l) if !self.opaques.contains(&p) => match lstat(&l.join(&p))? {
                    Some(lm) => same_dirent(&lm, &um, &l.join(&p), &upper.join(&p))?,
                    None => false,
                },
                _ => false,
            };
            if !same {
                keep.insert(p);
            }
        }
        self.upserts = keep;
        let mut opaques = BTreeSet::new();
        for d in std::mem::take(&mut self.opaques) {
            if lstat(&upper.join(&d))?.is_some_and(|m| m.is_dir()) {
                self.upserts.insert(d.clone());
                opaques.insert(d);
            }
        }
        self.opaques = opaques;
        // A deletion needs its directory in `upper` (else an ancestor's deletion covers it).
        let mut deletes = BTreeSet::new();
        for p in std::mem::take(&mut self.deletes) {
            let parent_ok = match p.parent().filter(|d| !d.as_os_str().is_empty()) {
                Some(d) => lstat(&upper.join(d))?.is_some_and(|m| m.is_dir()),
                None => true,
            };
            if parent_ok && !self.upserts.contains(&p) {
                deletes.insert(p);
            }
        }
        self.deletes = deletes;
        Ok(())
    }

    /// Writes the changes as one layer, entries read from `upper`; parents of every change are
    /// included with `upper`'s metadata. Deterministic order (parents first, names bytewise).
    pub fn write_layer(&self, upper: &Path, out: &mut dyn Write) -> Result<()> {
        #[derive(PartialEq)]
        enum Kind {
            Entry,
            Whiteout,
        }
        let mut all: std::collections::BTreeMap<PathBuf, Kind> = std::collections::BTreeMap::new();
        let mut parents = BTreeSet::new();
        for p in self.upserts.iter().chain(&self.deletes).chain(&self.opaques) {
            let mut a = p.parent();
            while let Some(d) = a.filter(|d| !d.as_os_str().is_empty()) {
                parents.insert(d.to_path_buf());
                a = d.parent();
            }
        }
        for p in self.upserts.iter().chain(&parents).chain(&self.opaques) {
            all.insert(p.clone(), Kind::Entry);
        }
        for p in &self.deletes {
            all.entry(p.clone()).or_insert(Kind::Whiteout);
        }
        let mut w = LayerWriter::new(out);
        for (p, kind) in &all {
            if *kind == Kind::Whiteout {
                let dir = p.parent().unwrap_or(Path::new(""));
                let name = p.file_name().unwrap_or_default();
                w.whiteout(dir, name)?;
                continue;
            }
            let full = upper.join(p);
            let Some(meta) = lstat(&full)? else { continue };
            w.add(p, &full, &meta)?;
            if self.opaques.contains(p) {
                w.opaque(p)?;
            }
        }
        w.finish()
    }
}

/// BuildKit's `sameDirent`: same kind, mode, owner and device; for non-directories also size,
/// mtime and (unlike BuildKit, which only looks when the mtimes lack nanoseconds) content or link
/// target. A directory's mtime is ignored.
fn same_dirent(a: &Metadata, b: &Metadata, pa: &Path, pb: &Path) -> Result<bool> {
    if a.mode() != b.mode() || a.uid() != b.uid() || a.gid() != b.gid() || a.rdev() != b.rdev() {
        return Ok(false);
    }
    if a.is_dir() {
        return Ok(true);
    }
    if a.len() != b.len() || a.mtime() != b.mtime() {
        return Ok(false);
    }
    if a.mtime_nsec() != b.mtime_nsec() {
        return Ok(false);
    }
    // Equal metadata, down to the nanosecond, does not prove equal content: files written by two
    // runs in the same clock tick share an mtime (BuildKit compares content only when the
    // nanoseconds are zero, and then reports such a change as none). kiln always compares.
    if a.file_type().is_symlink() {
        return Ok(fs::read_link(pa).with_path("reading symlink", pa)?
            == fs::read_link(pb).with_path("reading symlink", pb)?);
    }
    if a.len() == 0 || !a.is_file() {
        return Ok(true);
    }
    super::diff::same_content(pa, pb)
}
