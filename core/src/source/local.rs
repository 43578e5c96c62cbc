//! Local-directory sources (`local://NAME`): the content checksum used as their cache key and
//! the sync of the selected files into a fresh snapshot.

use crate::digest::Digest;
use crate::error::{Error, ErrorKind, Result};
use crate::fileops::{
    finish_checksum, hash_entries_known, walk_matching, FileDigests, MetaOverride, PatternMatcher, WalkEntry, Writer,
};
use sha2::{Digest as _, Sha256};
use std::path::{Path, PathBuf};

/// A host directory and the selection of its paths that a build may read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LocalSource {
    /// The host directory.
    pub dir: PathBuf,
    /// `.dockerignore`-style patterns selecting paths (empty: everything).
    pub include: Vec<String>,
    /// `.dockerignore`-style patterns leaving paths out.
    pub exclude: Vec<String>,
    /// Paths whose symlinks are resolved so their targets are selected too (BuildKit's
    /// FollowPaths); with no include patterns, only these paths are selected.
    pub follow_paths: Vec<String>,
}

impl LocalSource {
    fn selected(&self) -> Result<Vec<WalkEntry>> {
        match std::fs::metadata(&self.dir) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => return Err(self.err("is not a directory")),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(self.err("does not exist")),
            Err(e) => {
                return Err(Error::with_source(
                    ErrorKind::Source,
                    format!("local source directory {} cannot be read: {e}", self.dir.display()),
                    e,
                ))
            }
        }
        let matcher = PatternMatcher::new(&self.include, &self.exclude).map_err(|e| {
            Error::with_source(ErrorKind::Source, format!("local source {}: {e}", self.dir.display()), e)
        })?;
        walk_matching(&self.dir, &matcher, &self.follow_paths)
            .map_err(|e| Error::with_source(ErrorKind::Source, format!("local source {}: {e}", self.dir.display()), e))
    }

    fn err(&self, what: &str) -> Error {
        Error::new(
            ErrorKind::Source,
            format!(
                "local source directory {} {what}; a local source must name an existing directory",
                self.dir.display()
            ),
        )
    }
}

/// Content checksum of the selected paths of `dir`: sha256 over (rel path, file type, mode, uid,
/// gid, symlink target, sha256(content) for files) in sorted order. Used as the cache key of a
/// local source: a change to an excluded or unselected file does not change it.
pub fn checksum_local(src: &LocalSource) -> Result<Digest> {
    checksum_local_known(src, &FileDigests::new())
}

/// [`checksum_local`], taking the content digests of the files listed in `known` (by relative
/// path, with their current size) instead of reading them: a daemon hashed them as it received
/// them. The same files give the same checksum either way.
pub fn checksum_local_known(src: &LocalSource, known: &FileDigests) -> Result<Digest> {
    let entries = src.selected()?;
    let mut h = Sha256::new();
    h.update(b"kiln-local-v1");
    hash_entries_known(&mut h, &entries, known)?;
    finish_checksum(h)
}

/// Copies the selected paths of `dir` into `dest_root` (an empty writable view): regular files,
/// dirs, symlinks (not followed), modes, mtimes, every entry owned by 0:0 (as BuildKit's clients
/// send a context); fifos/sockets/devices skipped with a debug log. Returns the bytes of file content
/// copied.
pub fn sync_local(src: &LocalSource, dest_root: &Path) -> Result<u64> {
    sync_local_linked(src, dest_root, false)
}

/// [`sync_local`]; with `link`, regular files are hard-linked from `src` instead of copied
/// (where the file system allows), for a private source dir nobody changes afterwards (a
/// daemon's staged copy of a client's dir), with no follow paths. The result is the same tree:
/// same entries, content, owners, modes and times.
pub fn sync_local_linked(src: &LocalSource, dest_root: &Path, link: bool) -> Result<u64> {
    let entries = src.selected()?;
    let action = format!("sync local source {}", src.dir.display());
    // Owned by root, like BuildKit's clients send a local context (buildctl's resetUIDAndGID).
    let root_owner = crate::fileops::is_root().then_some(crate::fileops::Owner { uid: 0, gid: 0 });
    let ov = MetaOverride { owner: root_owner, ..MetaOverride::default() };
    let mut w = Writer::new(&action, dest_root, ov, true, true);
    // A followed symlink's entry is its target: link(2) would link the symlink itself.
    w.link_files = link && src.follow_paths.is_empty();
    let top = std::fs::metadata(dest_root).map_err(|e| {
        Error::with_source(ErrorKind::Source, format!("{action}: destination {} unusable: {e}", dest_root.display()), e)
    })?;
    w.write_tree(&src.dir, &top, dest_root, &entries)?;
    Ok(w.bytes)
}
