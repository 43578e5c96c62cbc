//! Content checksums of file selections, used as cache keys of copies and local sources. A
//! checksum covers each selected path's relative name, type, permission bits, owner, symlink
//! target and file content — never timestamps or inode numbers.

use super::copy::{select_sources, stat_source, CopyOptions};
use super::meta::in_action;
use super::pattern::{walk_matching, WalkEntry};
use super::resolve::{clean_keep_trailing, go_base, path_has_wildcard};
use crate::digest::Digest;
use crate::error::{Error, ErrorKind, IoContext, Result};
use sha2::{Digest as _, Sha256};
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The size and sha256 of one file's content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileDigest {
    /// Bytes of content.
    pub size: u64,
    /// sha256 of those bytes.
    pub sha256: [u8; 32],
}

/// File digests by path relative to a directory (`a/b`, as a walk names it).
pub type FileDigests = std::collections::HashMap<String, FileDigest>;

/// Read buffer for content hashing: large reads keep sha2 busy instead of the syscall layer.
const BUF_SIZE: usize = 1 << 20;

/// Checksum of what [`copy`](super::copy)`(root, src, …, opts)` would read: the same wildcard
/// expansion, symlink following and include/exclude selection. Missing sources fail as the copy
/// would; an allowed empty wildcard has the checksum of an empty selection.
pub fn checksum_selection(root: &Path, src: &str, opts: &CopyOptions) -> Result<Digest> {
    let src_c = clean_keep_trailing(src);
    let action = format!("checksum {src_c}");
    let matcher = opts.matcher().map_err(|e| in_action(&action, e))?;
    let wildcard = opts.allow_wildcard && path_has_wildcard(&src_c);
    let mut h = Sha256::new();
    for s in select_sources(&action, root, &src_c, opts)? {
        let (host, meta) = stat_source(&action, root, &s, opts.follow_symlinks)?;
        // Wildcard matches are copied under their own names, so the names are part of the input.
        h.update(b"S");
        put_bytes(&mut h, if wildcard { go_base(&s).as_bytes() } else { b"" });
        let mut entries = vec![WalkEntry { rel: String::new(), path: host.clone(), meta }];
        if entries[0].meta.is_dir() {
            entries.extend(walk_matching(&host, &matcher, &[]).map_err(|e| in_action(&action, e))?);
        }
        hash_entries(&mut h, &entries).map_err(|e| in_action(&action, e))?;
    }
    finish(h)
}

/// The digest of a finished hasher.
pub(crate) fn finish(h: Sha256) -> Result<Digest> {
    Digest::parse(&format!("sha256:{}", hex::encode(h.finalize())))
}

fn put_bytes(h: &mut Sha256, b: &[u8]) {
    h.update((b.len() as u64).to_le_bytes());
    h.update(b);
}

/// Feeds one record per entry into `h`, in order; regular file contents are hashed in parallel.
pub(crate) fn hash_entries(h: &mut Sha256, entries: &[WalkEntry]) -> Result<()> {
    hash_entries_known(h, entries, &FileDigests::new())
}

/// [`hash_entries`], taking the content digest of a regular file from `known` (by its relative
/// path) when listed there with the file's current size, instead of reading the file.
pub(crate) fn hash_entries_known(h: &mut Sha256, entries: &[WalkEntry], known: &FileDigests) -> Result<()> {
    let lookup = |e: &WalkEntry| known.get(&e.rel).filter(|d| d.size == e.meta.len()).map(|d| d.sha256);
    let files: Vec<&Path> =
        entries.iter().filter(|e| e.meta.is_file() && lookup(e).is_none()).map(|e| e.path.as_path()).collect();
    let mut read = hash_files(&files)?.into_iter();
    let mut digests = Vec::new();
    for e in entries.iter().filter(|e| e.meta.is_file()) {
        let d = match lookup(e) {
            Some(d) => d,
            None => read.next().ok_or_else(|| Error::new(ErrorKind::Internal, "file digest count mismatch"))?,
        };
        digests.push(d);
    }
    let mut next = digests.iter();
    for e in entries {
        let ft = e.meta.file_type();
        let kind: u8 = if ft.is_dir() {
            b'd'
        } else if ft.is_file() {
            b'f'
        } else if ft.is_symlink() {
            b'l'
        } else if ft.is_char_device() {
            b'c'
        } else if ft.is_block_device() {
            b'b'
        } else if ft.is_fifo() {
            b'p'
        } else {
            b's'
        };
        h.update(b"E");
        put_bytes(h, e.rel.as_bytes());
        h.update([kind]);
        h.update((e.meta.mode() & 0o7777).to_le_bytes());
        h.update(e.meta.uid().to_le_bytes());
        h.update(e.meta.gid().to_le_bytes());
        match kind {
            b'f' => {
                let d = next.next().ok_or_else(|| Error::new(ErrorKind::Internal, "file digest count mismatch"))?;
                h.update(d);
            }
            b'l' => {
                let target = std::fs::read_link(&e.path).with_path("checksum: cannot read symlink", &e.path)?;
                put_bytes(h, target.as_os_str().as_bytes());
            }
            b'c' | b'b' => h.update(e.meta.rdev().to_le_bytes()),
            _ => {}
        }
    }
    Ok(())
}

/// File digests tagged with their index in the input.
type Indexed = Vec<(usize, [u8; 32])>;

/// sha256 of each file's content, computed by a few threads (hashing is CPU-bound with the
/// page cache warm, and a build context is often many small files).
fn hash_files(files: &[&Path]) -> Result<Vec<[u8; 32]>> {
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1).min(4).min(files.len());
    if threads <= 1 {
        let mut buf = vec![0u8; BUF_SIZE];
        return files.iter().map(|p| hash_file(p, &mut buf)).collect();
    }
    let next = AtomicUsize::new(0);
    let results: Vec<Result<Indexed>> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    let mut buf = vec![0u8; BUF_SIZE];
                    let mut out = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(p) = files.get(i) else { return Ok(out) };
                        out.push((i, hash_file(p, &mut buf)?));
                    }
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().unwrap_or_else(|_| Err(Error::new(ErrorKind::Internal, "checksum worker panicked"))))
            .collect()
    });
    let mut all = vec![[0u8; 32]; files.len()];
    for r in results {
        for (i, d) in r? {
            all[i] = d;
        }
    }
    Ok(all)
}

fn hash_file(path: &Path, buf: &mut [u8]) -> Result<[u8; 32]> {
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .with_path("checksum: cannot open", path)?;
    let mut h = Sha256::new();
    loop {
        let n = match f.read(buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e).with_path("checksum: cannot read", path),
        };
        h.update(&buf[..n]);
    }
    Ok(h.finalize().into())
}
