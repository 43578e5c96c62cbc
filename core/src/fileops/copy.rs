//! The copy action (BuildKit's FileActionCopy with tonistiigi/fsutil `cp -a` semantics) and the
//! tree writer it shares with local-source syncing.

use super::meta::{copy_meta, in_action, io_err, mkdir_all_in_root, op_err, resolve, set_times, MetaOverride};
use super::pattern::{walk_matching, PatternMatcher, WalkEntry};
use super::resolve::{clean_abs, clean_keep_trailing, display_in_root, go_base, is_missing, path_has_wildcard};
use super::Owner;
use crate::error::{Error, ErrorKind, Result};
use std::collections::HashMap;
use std::fs::Metadata;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

/// Options of [`copy`], mirroring BuildKit's `FileActionCopy`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CopyOptions {
    /// Resolve a symlink named by the source path itself (symlinks below it are always copied as
    /// symlinks).
    pub follow_symlinks: bool,
    /// When the source is a directory, copy its contents rather than the directory itself.
    pub dir_copy_contents: bool,
    /// Create missing parents of the destination; otherwise the destination's parent must exist.
    pub create_dest_path: bool,
    /// The source path may hold `filepath.Match` wildcards (`*`, `?`, `[...]`).
    pub allow_wildcard: bool,
    /// A wildcard matching nothing copies nothing instead of failing.
    pub allow_empty_wildcard: bool,
    /// Patterns (relative to the source path) selecting what is copied from a directory.
    pub include: Vec<String>,
    /// Patterns (relative to the source path) left out of a directory copy.
    pub exclude: Vec<String>,
    /// Owner of everything copied and of created parents (default: kept from the source).
    pub owner: Option<Owner>,
    /// Permission bits (0o777 part) of everything copied (default: kept from the source).
    pub mode: Option<u32>,
    /// atime/mtime of everything copied, in nanoseconds since the epoch (default: kept).
    pub timestamp: Option<i64>,
    /// Replace a destination that has the wrong type (a directory where a file goes, or the
    /// reverse) instead of failing.
    pub always_replace_existing: bool,
    /// A source that is a tar archive (plain, gzip or zstd) is extracted into the destination
    /// instead of copied (BuildKit's `AttemptUnpackDockerCompatibility`, a Dockerfile's ADD).
    pub attempt_unpack: bool,
}

impl CopyOptions {
    pub(crate) fn matcher(&self) -> Result<PatternMatcher> {
        PatternMatcher::new(&self.include, &self.exclude)
    }
}

/// Copies `src` of the filesystem at `src_root` to `dest` of the filesystem at `dest_root`.
///
/// A destination ending with `/` (or `/.`), or naming an existing directory, receives the source
/// under its base name; otherwise the source is copied to the destination path. Modes,
/// timestamps, ownership, symlinks and hardlinks within the copy are preserved unless overridden
/// by `opts`. Errors are [`ErrorKind::FileOp`] and start with `copy SRC DEST:`.
pub fn copy(src_root: &Path, src: &str, dest_root: &Path, dest: &str, opts: &CopyOptions) -> Result<()> {
    let src_c = clean_keep_trailing(src);
    let dest_c = clean_keep_trailing(dest);
    let action = format!("copy {src_c} {dest_c}");
    let matcher = opts.matcher().map_err(|e| in_action(&action, e))?;
    let dest_clean = clean_abs(&dest_c);
    if !opts.create_dest_path {
        let p = resolve(&action, dest_root, &dest_clean, true)?;
        let parent = if p == dest_root { dest_root } else { p.parent().unwrap_or(dest_root) };
        if !std::fs::symlink_metadata(parent).map(|m| m.is_dir()).unwrap_or(false) {
            return Err(op_err(
                &action,
                format!(
                    "destination directory {} does not exist (create_dest_path creates it)",
                    display_in_root(dest_root, parent)
                ),
            ));
        }
    }
    let mut sources = select_sources(&action, src_root, &src_c, opts)?;
    if opts.attempt_unpack {
        // Each archive is extracted in place of being copied (the source path is resolved with
        // its symlinks followed, as BuildKit's `fs.RootPath`).
        let mut rest = Vec::with_capacity(sources.len());
        for s in sources {
            let host = resolve(&action, src_root, &clean_abs(&s), true)?;
            if super::unpack::is_archive(&host) {
                super::unpack::unpack(&action, &host, dest_root, &dest_c, opts.owner)?;
            } else {
                rest.push(s);
            }
        }
        sources = rest;
    }
    if sources.is_empty() {
        return Ok(());
    }

    let into = dest_c.ends_with('/') || dest_c.ends_with("/.");
    let ensure = if into { dest_clean.clone() } else { parent_of(&dest_clean) };
    let ensure_host = resolve(&action, dest_root, &ensure, true)?;
    let mut created = mkdir_all_in_root(&action, dest_root, &ensure_host, 0o755, opts.owner, opts.timestamp)?;
    let dst_host = resolve(&action, dest_root, &dest_clean, true)?;

    let ov = MetaOverride { owner: opts.owner, mode: opts.mode, timestamp: opts.timestamp };
    let mut w = Writer::new(&action, dest_root, ov, opts.always_replace_existing, false);
    for s in &sources {
        let (src_host, meta) = stat_source(&action, src_root, s, opts.follow_symlinks)?;
        let dest_meta = std::fs::metadata(&dst_host).ok();
        let mut target = dst_host.clone();
        let dest_is_dir = dest_meta.as_ref().map(|m| m.is_dir()).unwrap_or(false);
        if (!opts.dir_copy_contents && meta.is_dir() && dest_meta.is_some()) || (!meta.is_dir() && dest_is_dir) {
            let base = go_base(s);
            if base != "." && base != "/" {
                target = target.join(base);
            }
        }
        let make = if opts.dir_copy_contents && meta.is_dir() && dest_meta.is_none() {
            Some(target.as_path())
        } else {
            target.parent()
        };
        if let Some(make) = make.filter(|m| m.starts_with(dest_root)) {
            created.extend(mkdir_all_in_root(&action, dest_root, make, 0o755, opts.owner, opts.timestamp)?);
        }
        let entries = if meta.is_dir() {
            walk_matching(&src_host, &matcher, &[]).map_err(|e| in_action(&action, e))?
        } else {
            Vec::new()
        };
        w.write_tree(&src_host, &meta, &target, &entries)?;
    }
    // Writing into the parents created above bumped their mtimes; an explicit timestamp wins.
    if let Some(ts) = opts.timestamp {
        for d in created.iter().rev() {
            set_times(d, ts).map_err(|e| io_err(&action, "cannot set times of", &display_in_root(dest_root, d), e))?;
        }
    }
    Ok(())
}

/// The source paths a copy reads: the wildcard matches, or the path itself. An empty list means
/// an allowed empty wildcard.
pub(crate) fn select_sources(action: &str, src_root: &Path, src_c: &str, opts: &CopyOptions) -> Result<Vec<String>> {
    if opts.allow_wildcard && path_has_wildcard(src_c) {
        let m = super::resolve::resolve_wildcards(src_root, src_c).map_err(|e| in_action(action, e))?;
        if m.is_empty() && !opts.allow_empty_wildcard {
            return Err(op_err(action, format!("source {} not found: no path matches the wildcard", clean_abs(src_c))));
        }
        return Ok(m);
    }
    Ok(vec![src_c.to_owned()])
}

/// Resolves a source path (following a final symlink only when asked) and stats it.
pub(crate) fn stat_source(action: &str, root: &Path, s: &str, follow: bool) -> Result<(PathBuf, Metadata)> {
    let host = resolve(action, root, &clean_abs(s), follow)?;
    match std::fs::symlink_metadata(&host) {
        Ok(m) => Ok((host, m)),
        Err(e) if is_missing(&e) => Err(op_err(action, format!("source {} not found", clean_abs(s)))),
        Err(e) => Err(io_err(action, "cannot stat source", &clean_abs(s), e)),
    }
}

fn parent_of(p: &str) -> String {
    match p.rfind('/') {
        Some(0) | None => "/".into(),
        Some(i) => p[..i].into(),
    }
}

/// How a destination directory came to be.
#[derive(PartialEq)]
enum DirState {
    Created,
    Existing,
    /// An existing symlink resolved (inside the root) to a directory: written through, its
    /// metadata left alone.
    Followed,
}

/// Writes walked source entries under a destination directory, confined to `root`.
pub(crate) struct Writer<'a> {
    action: &'a str,
    root: &'a Path,
    ov: MetaOverride,
    replace: bool,
    skip_special: bool,
    links: HashMap<(u64, u64), PathBuf>,
    /// Bytes of regular file content written.
    pub bytes: u64,
    /// Hard-link regular files to their source instead of copying them (falling back to a copy
    /// where a link cannot be made): only for a source that nobody changes afterwards, and whose
    /// walk follows no symlinks (a link is made to the path itself).
    pub link_files: bool,
}

impl<'a> Writer<'a> {
    /// A writer for `root`; `skip_special` skips fifos and devices instead of recreating them.
    pub(crate) fn new(action: &'a str, root: &'a Path, ov: MetaOverride, replace: bool, skip_special: bool) -> Self {
        Writer { action, root, ov, replace, skip_special, links: HashMap::new(), bytes: 0, link_files: false }
    }

    fn shown(&self, p: &Path) -> String {
        display_in_root(self.root, p)
    }

    /// Writes the source `src` (metadata `meta`) at `target`; for a directory, `entries` are its
    /// walked contents. An existing target directory keeps its own metadata.
    pub(crate) fn write_tree(
        &mut self,
        src: &Path,
        meta: &Metadata,
        target: &Path,
        entries: &[WalkEntry],
    ) -> Result<()> {
        if !meta.is_dir() {
            return self.write_leaf(src, meta, target);
        }
        let (top, state) = self.ensure_dir(target)?;
        let mut dirs: HashMap<&str, PathBuf> = HashMap::new();
        let mut finalize: Vec<(PathBuf, &Metadata)> = Vec::new();
        for e in entries {
            let (parent_rel, name) = match e.rel.rfind('/') {
                Some(i) => (&e.rel[..i], &e.rel[i + 1..]),
                None => ("", e.rel.as_str()),
            };
            let parent = if parent_rel.is_empty() {
                &top
            } else {
                dirs.get(parent_rel).ok_or_else(|| {
                    Error::new(
                        ErrorKind::Internal,
                        format!("{}: walk yielded {} before its parent", self.action, e.rel),
                    )
                })?
            };
            let t = parent.join(name);
            if e.meta.is_dir() {
                let (d, st) = self.ensure_dir(&t)?;
                if st != DirState::Followed {
                    finalize.push((d.clone(), &e.meta));
                }
                dirs.insert(&e.rel, d);
            } else {
                self.write_leaf(&e.path, &e.meta, &t)?;
            }
        }
        // Directory metadata last and deepest first, so writing children does not bump mtimes.
        for (d, m) in finalize.iter().rev() {
            copy_meta(d, m, &self.ov).map_err(|e| io_err(self.action, "cannot set metadata of", &self.shown(d), e))?;
        }
        if state == DirState::Created {
            copy_meta(&top, meta, &self.ov)
                .map_err(|e| io_err(self.action, "cannot set metadata of", &self.shown(&top), e))?;
        }
        Ok(())
    }

    fn ensure_dir(&self, t: &Path) -> Result<(PathBuf, DirState)> {
        let shown = self.shown(t);
        let existing = match std::fs::symlink_metadata(t) {
            Ok(m) => m,
            Err(e) if is_missing(&e) => {
                std::fs::create_dir(t).map_err(|e| io_err(self.action, "cannot create directory", &shown, e))?;
                return Ok((t.to_path_buf(), DirState::Created));
            }
            Err(e) => return Err(io_err(self.action, "cannot stat", &shown, e)),
        };
        if existing.is_dir() {
            return Ok((t.to_path_buf(), DirState::Existing));
        }
        if existing.file_type().is_symlink() {
            let resolved = resolve(self.action, self.root, &shown, true)?;
            if std::fs::symlink_metadata(&resolved).map(|m| m.is_dir()).unwrap_or(false) {
                return Ok((resolved, DirState::Followed));
            }
        }
        if !self.replace {
            return Err(op_err(self.action, format!("cannot replace non-directory {shown} with a directory")));
        }
        std::fs::remove_file(t).map_err(|e| io_err(self.action, "cannot replace", &shown, e))?;
        std::fs::create_dir(t).map_err(|e| io_err(self.action, "cannot create directory", &shown, e))?;
        Ok((t.to_path_buf(), DirState::Created))
    }

    fn write_leaf(&mut self, src: &Path, meta: &Metadata, t: &Path) -> Result<()> {
        let shown = self.shown(t);
        let ft = meta.file_type();
        if ft.is_socket() || (self.skip_special && (ft.is_fifo() || ft.is_char_device() || ft.is_block_device())) {
            tracing::debug!(path = %src.display(), "skipping special file");
            return Ok(());
        }
        match std::fs::symlink_metadata(t) {
            // Copying a path onto itself (same root, same path): removing it first would lose it.
            Ok(m) if m.dev() == meta.dev() && m.ino() == meta.ino() => return Ok(()),
            Ok(m) if m.is_dir() => {
                if !self.replace {
                    return Err(op_err(self.action, format!("cannot replace directory {shown} with a non-directory")));
                }
                std::fs::remove_dir_all(t).map_err(|e| io_err(self.action, "cannot replace", &shown, e))?;
            }
            Ok(_) => std::fs::remove_file(t).map_err(|e| io_err(self.action, "cannot replace", &shown, e))?,
            Err(e) if is_missing(&e) => {}
            Err(e) => return Err(io_err(self.action, "cannot stat", &shown, e)),
        }
        if ft.is_file() {
            let key = (meta.dev(), meta.ino());
            if meta.nlink() > 1 {
                if let Some(first) = self.links.get(&key) {
                    return std::fs::hard_link(first, t).map_err(|e| io_err(self.action, "cannot hardlink", &shown, e));
                }
            }
            // A link shares the source's inode, so only a source whose metadata the override
            // would keep can be linked: its metadata is then already right and left untouched
            // (a chown, even to the same owner, clears setuid bits for a moment).
            let ov = &self.ov;
            let kept = ov.owner.is_none_or(|o| o.uid == meta.uid() && o.gid == meta.gid())
                && ov.mode.is_none()
                && ov.timestamp.is_none();
            if self.link_files && kept {
                match std::fs::hard_link(src, t) {
                    Ok(()) => {
                        self.bytes += meta.len();
                        return Ok(());
                    }
                    // Another file system or mount, or too many links: copy instead.
                    Err(e) if matches!(e.raw_os_error(), Some(libc::EXDEV | libc::EMLINK | libc::EPERM)) => {}
                    Err(e) => return Err(io_err(self.action, "cannot hardlink", &shown, e)),
                }
            }
            let n = std::fs::copy(src, t).map_err(|e| io_err(self.action, "cannot copy file to", &shown, e))?;
            self.bytes += n;
            if meta.nlink() > 1 {
                self.links.insert(key, t.to_path_buf());
            }
        } else if ft.is_symlink() {
            let link = std::fs::read_link(src)
                .map_err(|e| io_err(self.action, "cannot read symlink", &src.display().to_string(), e))?;
            std::os::unix::fs::symlink(&link, t)
                .map_err(|e| io_err(self.action, "cannot create symlink", &shown, e))?;
        } else {
            let kind = nix::sys::stat::SFlag::from_bits_truncate(meta.mode() & libc::S_IFMT);
            let perm = nix::sys::stat::Mode::from_bits_truncate(meta.mode() & 0o7777);
            nix::sys::stat::mknod(t, kind, perm, meta.rdev())
                .map_err(|e| io_err(self.action, "cannot create special file", &shown, e.into()))?;
        }
        copy_meta(t, meta, &self.ov).map_err(|e| io_err(self.action, "cannot set metadata of", &shown, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parents() {
        assert_eq!(parent_of("/a/b"), "/a");
        assert_eq!(parent_of("/a"), "/");
        assert_eq!(parent_of("/"), "/");
    }
}
