//! Extracting OCI layer tars into a snapshot's mounted view, honouring whiteouts, and never
//! writing outside the target root.
//!
//! Safety rules: entry names and hardlink targets must not contain `..` (leading `/` and `.` are
//! ignored). Parent directories are resolved component by component; a symlink on the way is
//! followed only if its (relative) target stays inside the root — absolute targets and targets
//! climbing above the root reject the entry. The final component is never followed: an existing
//! entry there is replaced (unlinked first, new files created with `O_EXCL | O_NOFOLLOW`).

use std::collections::{HashSet, VecDeque};
use std::ffi::{OsStr, OsString};
use std::fs;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path, PathBuf};

use nix::sys::stat::SFlag;
use tar::EntryType;

use super::diff::{OPAQUE, WHITEOUT_PREFIX};
use super::fsutil::{make_node, set_mode, set_owner, set_times, set_xattr};
use crate::error::{Error, ErrorKind, IoContext, Result};

/// How many symlinks one path resolution may follow (as the kernel's limit).
const MAX_SYMLINK_HOPS: usize = 40;

fn unsafe_entry(name: &Path, why: impl std::fmt::Display) -> Error {
    Error::new(
        ErrorKind::Snapshot,
        format!(
            "unsafe layer entry {:?}: {why}; entries must stay inside the root (no `..`, no symlinks leading outside)",
            name
        ),
    )
}

fn bad_entry(name: &Path, why: impl std::fmt::Display) -> Error {
    Error::new(ErrorKind::Snapshot, format!("invalid layer entry {name:?}: {why}"))
}

/// Extracts an uncompressed OCI layer tar into `root` (a mounted view), honouring OCI whiteouts,
/// preserving modes, ownership, mtimes, symlinks, hardlinks (within the layer) and xattrs (PAX
/// `SCHILY.xattr.*`; failures to set one are logged). Never writes outside `root`: rejects
/// entries with `..` components and any path that would traverse a symlink (existing or created
/// by the layer) pointing outside root; hardlink targets must be inside root. Returns the bytes
/// of regular file content extracted.
pub fn apply_layer(root: &Path, tar: impl Read) -> Result<u64> {
    apply_layer_counting(root, tar).map(|(bytes, _)| bytes)
}

/// [`apply_layer`], also counting the layer's whiteout and opaque markers (whether or not they
/// hid anything): returns (content bytes, markers).
pub fn apply_layer_counting(root: &Path, tar: impl Read) -> Result<(u64, u64)> {
    let mut a = Applier {
        root: root.to_path_buf(),
        created: HashSet::new(),
        dirs: Vec::new(),
        parents: Vec::new(),
        noted: HashSet::new(),
        bytes: 0,
        whiteouts: 0,
    };
    let mut archive = tar::Archive::new(tar);
    let entries = archive.entries().map_err(|e| Error::with_source(ErrorKind::Snapshot, "reading layer tar", e))?;
    for entry in entries {
        let entry = entry.map_err(|e| Error::with_source(ErrorKind::Snapshot, "reading layer tar entry", e))?;
        a.entry(entry)?;
    }
    // Existing directories the layer changes without naming keep their times (a layer lists a
    // changed file, not its unchanged parent), then the layer's own directories, deepest first:
    // creating children changed them.
    for (d, atime, mtime) in a.parents.iter().rev() {
        set_times(d, *atime, *mtime)?;
    }
    for (d, mtime) in a.dirs.iter().rev() {
        set_times(d, (*mtime, 0), (*mtime, 0))?;
    }
    Ok((a.bytes, a.whiteouts))
}

struct Applier {
    root: PathBuf,
    /// Host paths written by this layer: whiteouts only hide what lower layers had.
    created: HashSet<PathBuf>,
    dirs: Vec<(PathBuf, i64)>,
    /// Directories that existed before the layer and whose entries it changes, with their times.
    parents: Vec<(PathBuf, (i64, i64), (i64, i64))>,
    noted: HashSet<PathBuf>,
    bytes: u64,
    /// Whiteout and opaque markers seen.
    whiteouts: u64,
}

/// Splits an entry name into normal components, rejecting `..`.
fn clean(name: &Path) -> Result<Vec<OsString>> {
    let mut out = Vec::new();
    for c in name.components() {
        match c {
            Component::Normal(n) => out.push(n.to_os_string()),
            Component::CurDir | Component::RootDir => {}
            Component::ParentDir => return Err(unsafe_entry(name, "`..` component")),
            Component::Prefix(_) => return Err(unsafe_entry(name, "path prefix")),
        }
    }
    Ok(out)
}

impl Applier {
    /// Resolves directory components to a real directory inside root, following symlinks that
    /// stay inside; creates missing directories (0755, root-owned) when `create`. `Ok(None)` when
    /// a component is missing and `create` is false.
    fn resolve_dir(&mut self, name: &Path, comps: &[OsString], create: bool) -> Result<Option<PathBuf>> {
        let mut stack: Vec<OsString> = Vec::new();
        let mut pending: VecDeque<OsString> = comps.iter().cloned().collect();
        let mut hops = 0;
        while let Some(c) = pending.pop_front() {
            if c == ".." {
                if stack.pop().is_none() {
                    return Err(unsafe_entry(name, "a symlink on its path climbs above the root"));
                }
                continue;
            }
            let cur: PathBuf = stack.iter().fold(self.root.clone(), |p, s| p.join(s));
            let host = cur.join(&c);
            match fs::symlink_metadata(&host) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    if !create {
                        return Ok(None);
                    }
                    fs::create_dir(&host).with_path("creating directory", &host)?;
                    set_mode(&host, 0o755)?;
                    self.created.insert(host);
                    stack.push(c);
                }
                Err(e) => return Err(Error::io("reading metadata of", host, e)),
                Ok(m) if m.is_dir() => stack.push(c),
                Ok(m) if m.file_type().is_symlink() => {
                    hops += 1;
                    if hops > MAX_SYMLINK_HOPS {
                        return Err(unsafe_entry(name, "too many levels of symlinks"));
                    }
                    let target = fs::read_link(&host).with_path("reading symlink", &host)?;
                    if target.has_root() {
                        return Err(unsafe_entry(
                            name,
                            format!(
                                "its path traverses symlink {} -> {} (absolute target)",
                                host.display(),
                                target.display()
                            ),
                        ));
                    }
                    let mut expanded: Vec<OsString> = Vec::new();
                    for tc in target.components() {
                        match tc {
                            Component::Normal(n) => expanded.push(n.to_os_string()),
                            Component::ParentDir => expanded.push(OsString::from("..")),
                            _ => {}
                        }
                    }
                    for tc in expanded.into_iter().rev() {
                        pending.push_front(tc);
                    }
                }
                Ok(_) => return Err(bad_entry(name, format!("{} is not a directory", host.display()))),
            }
        }
        Ok(Some(stack.iter().fold(self.root.clone(), |p, s| p.join(s))))
    }

    /// Remembers the times of `dir` before the layer first changes its entries (once, and only
    /// for a directory that existed before this layer).
    fn note_parent(&mut self, dir: &Path) {
        if self.created.contains(dir) || !self.noted.insert(dir.to_path_buf()) {
            return;
        }
        if let Ok(m) = fs::symlink_metadata(dir) {
            use std::os::unix::fs::MetadataExt;
            self.parents.push((dir.to_path_buf(), (m.atime(), m.atime_nsec()), (m.mtime(), m.mtime_nsec())));
        }
    }

    fn entry<R: Read>(&mut self, mut entry: tar::Entry<'_, R>) -> Result<()> {
        let name = entry
            .path()
            .map_err(|e| Error::with_source(ErrorKind::Snapshot, "reading layer entry name", e))?
            .into_owned();
        let ty = entry.header().entry_type();
        if matches!(ty, EntryType::XGlobalHeader | EntryType::XHeader | EntryType::GNULongName | EntryType::GNULongLink)
        {
            return Ok(());
        }
        let comps = clean(&name)?;
        let Some((base, parent)) = comps.split_last() else {
            tracing::debug!(?name, "ignoring layer entry for the root itself");
            return Ok(());
        };
        let base_b = base.as_bytes();
        if base_b == OPAQUE.as_bytes() {
            self.whiteouts += 1;
            if let Some(dir) = self.resolve_dir(&name, parent, false)? {
                self.note_parent(&dir);
                for child in super::fsutil::sorted_names(&dir)? {
                    let p = dir.join(child);
                    if !self.created.contains(&p) {
                        remove_any(&p)?;
                    }
                }
            }
            return Ok(());
        }
        if let Some(hidden) = base_b.strip_prefix(WHITEOUT_PREFIX.as_bytes()) {
            if hidden.is_empty() || hidden == b"." || hidden == b".." {
                return Err(bad_entry(&name, "whiteout names no file"));
            }
            self.whiteouts += 1;
            if let Some(dir) = self.resolve_dir(&name, parent, false)? {
                self.note_parent(&dir);
                let p = dir.join(OsStr::from_bytes(hidden));
                if !self.created.contains(&p) {
                    remove_any(&p)?;
                }
            }
            return Ok(());
        }

        let dir = self.resolve_dir(&name, parent, true)?.ok_or_else(|| bad_entry(&name, "parent missing"))?;
        self.note_parent(&dir);
        let host = dir.join(base);
        let h = entry.header();
        let mode = h.mode().map_err(|e| Error::with_source(ErrorKind::Snapshot, format!("mode of {name:?}"), e))?;
        let uid = h.uid().map_err(|e| Error::with_source(ErrorKind::Snapshot, format!("uid of {name:?}"), e))?;
        let gid = h.gid().map_err(|e| Error::with_source(ErrorKind::Snapshot, format!("gid of {name:?}"), e))?;
        let mtime = h.mtime().map_err(|e| Error::with_source(ErrorKind::Snapshot, format!("mtime of {name:?}"), e))?;
        let (uid, gid, mtime) = (
            u32::try_from(uid).map_err(|_| bad_entry(&name, "uid out of range"))?,
            u32::try_from(gid).map_err(|_| bad_entry(&name, "gid out of range"))?,
            i64::try_from(mtime).map_err(|_| bad_entry(&name, "mtime out of range"))?,
        );
        let xattrs = pax_xattrs(&mut entry)?;
        let existing = fs::symlink_metadata(&host).ok();

        match ty {
            EntryType::Directory => {
                match existing {
                    Some(m) if m.is_dir() => {}
                    Some(_) => {
                        remove_any(&host)?;
                        fs::create_dir(&host).with_path("creating directory", &host)?;
                    }
                    None => fs::create_dir(&host).with_path("creating directory", &host)?,
                }
                self.finish_meta(&host, uid, gid, Some(mode), &xattrs)?;
                self.dirs.push((host.clone(), mtime));
            }
            EntryType::Regular | EntryType::Continuous => {
                if existing.is_some() {
                    remove_any(&host)?;
                }
                let mut f = fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .custom_flags(libc::O_NOFOLLOW)
                    .open(&host)
                    .with_path("creating file", &host)?;
                self.bytes += std::io::copy(&mut entry, &mut f).with_path("writing file", &host)?;
                drop(f);
                self.finish_meta(&host, uid, gid, Some(mode), &xattrs)?;
                set_times(&host, (mtime, 0), (mtime, 0))?;
            }
            EntryType::Symlink => {
                let target = entry
                    .link_name()
                    .map_err(|e| Error::with_source(ErrorKind::Snapshot, format!("symlink target of {name:?}"), e))?
                    .ok_or_else(|| bad_entry(&name, "symlink without target"))?
                    .into_owned();
                if existing.is_some() {
                    remove_any(&host)?;
                }
                std::os::unix::fs::symlink(&target, &host).with_path("creating symlink", &host)?;
                self.finish_meta(&host, uid, gid, None, &xattrs)?;
                set_times(&host, (mtime, 0), (mtime, 0))?;
            }
            EntryType::Link => {
                let target = entry
                    .link_name()
                    .map_err(|e| Error::with_source(ErrorKind::Snapshot, format!("hardlink target of {name:?}"), e))?
                    .ok_or_else(|| bad_entry(&name, "hardlink without target"))?
                    .into_owned();
                let tcomps = clean(&target).map_err(|e| e.context(format!("hardlink {name:?}")))?;
                let Some((tbase, tparent)) = tcomps.split_last() else {
                    return Err(bad_entry(&name, "hardlink to the root"));
                };
                let tdir = self
                    .resolve_dir(&name, tparent, false)?
                    .ok_or_else(|| bad_entry(&name, format!("hardlink target {target:?} does not exist")))?;
                let thost = tdir.join(tbase);
                match fs::symlink_metadata(&thost) {
                    Ok(m) if m.is_dir() => return Err(bad_entry(&name, "hardlink to a directory")),
                    Ok(_) => {}
                    Err(_) => return Err(bad_entry(&name, format!("hardlink target {target:?} does not exist"))),
                }
                if thost == host {
                    return Ok(());
                }
                if existing.is_some() {
                    remove_any(&host)?;
                }
                // linkat without AT_SYMLINK_FOLLOW: a symlink target is linked, not followed.
                fs::hard_link(&thost, &host).with_path("creating hardlink", &host)?;
            }
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                let (kind, rdev) = if ty == EntryType::Fifo {
                    (SFlag::S_IFIFO, 0)
                } else {
                    let major = h_dev(entry.header().device_major(), &name)?;
                    let minor = h_dev(entry.header().device_minor(), &name)?;
                    let kind = if ty == EntryType::Char { SFlag::S_IFCHR } else { SFlag::S_IFBLK };
                    (kind, libc::makedev(major, minor) as u64)
                };
                if existing.is_some() {
                    remove_any(&host)?;
                }
                make_node(&host, kind, mode, rdev)?;
                self.finish_meta(&host, uid, gid, Some(mode), &xattrs)?;
                set_times(&host, (mtime, 0), (mtime, 0))?;
            }
            other => {
                return Err(bad_entry(
                    &name,
                    format!(
                        "unsupported entry type {other:?}; accepted: file, dir, symlink, hardlink, char, block, fifo"
                    ),
                ))
            }
        }
        self.created.insert(host);
        Ok(())
    }

    fn finish_meta(
        &self,
        host: &Path,
        uid: u32,
        gid: u32,
        mode: Option<u32>,
        xattrs: &[(OsString, Vec<u8>)],
    ) -> Result<()> {
        set_owner(host, uid, gid)?;
        if let Some(mode) = mode {
            // After chown, which clears setuid/setgid.
            set_mode(host, mode)?;
        }
        for (k, v) in xattrs {
            if let Err(e) = set_xattr(host, k, v) {
                tracing::warn!(error = %e, "could not set xattr from layer");
            }
        }
        Ok(())
    }
}

fn h_dev(v: std::io::Result<Option<u32>>, name: &Path) -> Result<u32> {
    v.map_err(|e| Error::with_source(ErrorKind::Snapshot, format!("device number of {name:?}"), e))?
        .ok_or_else(|| bad_entry(name, "device entry without device number"))
}

fn pax_xattrs<R: Read>(entry: &mut tar::Entry<'_, R>) -> Result<Vec<(OsString, Vec<u8>)>> {
    let mut out = Vec::new();
    let Some(exts) =
        entry.pax_extensions().map_err(|e| Error::with_source(ErrorKind::Snapshot, "reading PAX headers", e))?
    else {
        return Ok(out);
    };
    for ext in exts {
        let ext = ext.map_err(|e| Error::with_source(ErrorKind::Snapshot, "reading PAX header", e))?;
        if let Some(k) = ext.key_bytes().strip_prefix(b"SCHILY.xattr.") {
            out.push((OsStr::from_bytes(k).to_os_string(), ext.value_bytes().to_vec()));
        }
    }
    Ok(out)
}

/// Removes whatever is at `p` (a directory recursively); absent is fine.
fn remove_any(p: &Path) -> Result<()> {
    match fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(p).with_path("removing", p),
        Ok(_) => fs::remove_file(p).with_path("removing", p),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io("reading metadata of", p, e)),
    }
}
