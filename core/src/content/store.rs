//! `ContentStore`: a content-addressed blob store laid out like an OCI image layout's blob
//! directory (`DIR/blobs/sha256/<hex>`), so one implementation serves the engine's own store and
//! OCI layout directories. Writes go through a temp file in `DIR/ingest` (same filesystem) and are
//! renamed into place only after their digest is known; every read is verified and a blob whose
//! content does not match its name is deleted so that it is fetched or rebuilt instead of reused.
//!
//! A store opened with [`ContentStore::open_readonly`] is a *source* (an `oci-layout://` dir, a
//! cache import dir): nothing in it is ever created, modified or deleted — a corrupt blob there is
//! only an error (a miss) — its `blobs/sha256` must be a real directory (not a symlink elsewhere)
//! and its blobs regular files. Blobs leave a source by reflink or copy, never by hard link, so the
//! user's files never share an inode with the store. The store hard-links only its own blobs, which
//! it makes read-only (mode 0444), into export directories.

use crate::digest::Digest;
use crate::error::{Error, ErrorKind, IoContext, Result};
use sha2::{Digest as _, Sha256};
use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Mode of committed blobs: readable by everyone (other tools such as skopeo may read the layout)
/// and writable by no one, so a hard link of a blob is never edited in place by accident. Only
/// files without write bits are hard-linked out of a store (see [`ContentStore::link_from`]).
const BLOB_MODE: u32 = 0o444;

/// A content-addressed blob store rooted at a directory. Cheap to clone.
#[derive(Debug, Clone)]
pub struct ContentStore {
    dir: PathBuf,
    /// A source: never written to, nothing deleted (see the module docs).
    read_only: bool,
}

impl ContentStore {
    /// Opens (creating if needed) a store rooted at `dir`; blobs live in `dir/blobs/sha256/`.
    pub fn open(dir: &Path) -> Result<ContentStore> {
        let blobs = dir.join("blobs").join("sha256");
        if !blobs.is_dir() {
            fs::create_dir_all(&blobs).with_path("creating content store blob directory", &blobs)?;
        }
        Ok(ContentStore { dir: dir.to_path_buf(), read_only: false })
    }

    /// Opens the blobs of a directory kiln must not modify (a source): nothing is created, a
    /// corrupt blob is reported but kept, and `blobs` and `blobs/sha256` must be real directories
    /// (a symlink to another directory is refused).
    pub fn open_readonly(dir: &Path) -> Result<ContentStore> {
        for sub in [dir.join("blobs"), dir.join("blobs").join("sha256")] {
            match fs::symlink_metadata(&sub) {
                Ok(m) if m.file_type().is_dir() => {}
                Ok(m) if m.file_type().is_symlink() => {
                    return Err(Error::new(
                        ErrorKind::Content,
                        format!(
                            "{} is a symbolic link; refusing to read blobs outside {}",
                            sub.display(),
                            dir.display()
                        ),
                    ))
                }
                Ok(_) => return Err(Error::new(ErrorKind::Content, format!("{} is not a directory", sub.display()))),
                // No blobs at all: every blob is simply missing.
                Err(e) if e.kind() == io::ErrorKind::NotFound => break,
                Err(e) => return Err(Error::io("inspecting blob directory", sub, e)),
            }
        }
        Ok(ContentStore { dir: dir.to_path_buf(), read_only: true })
    }

    /// True for a store opened with [`ContentStore::open_readonly`].
    pub fn is_read_only(&self) -> bool {
        self.read_only
    }

    fn refuse_write(&self, what: &str) -> Result<()> {
        if self.read_only {
            return Err(Error::new(
                ErrorKind::Internal,
                format!("{what} in {}: it is a source, opened read-only", self.dir.display()),
            ));
        }
        Ok(())
    }

    /// Opens blob `d` (a regular file, never through a symlink, never blocking on a FIFO).
    fn open_blob(&self, d: &Digest) -> Result<File> {
        let path = self.blob_path(d);
        match super::limits::open_regular(&path, true) {
            Ok(f) => Ok(f),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(self.missing(d)),
            Err(e) if e.kind() == io::ErrorKind::InvalidInput => {
                Err(Error::new(ErrorKind::Content, format!("blob {d} at {}: {e}", path.display())))
            }
            Err(e) => Err(Error::io("opening blob", path, e)),
        }
    }

    /// The store's root directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where blob `d` lives (whether or not it exists).
    pub fn blob_path(&self, d: &Digest) -> PathBuf {
        self.blobs_dir().join(d.hex())
    }

    fn blobs_dir(&self) -> PathBuf {
        self.dir.join("blobs").join("sha256")
    }

    fn ingest_dir(&self) -> Result<PathBuf> {
        self.refuse_write("writing a blob")?;
        let ingest = self.dir.join("ingest");
        if !ingest.is_dir() {
            fs::create_dir_all(&ingest).with_path("creating content store ingest directory", &ingest)?;
        }
        Ok(ingest)
    }

    /// True when blob `d` is present (its content is verified only when read).
    pub fn has(&self, d: &Digest) -> bool {
        // A symlink is not a blob (it would read outside the store).
        fs::symlink_metadata(self.blob_path(d)).map(|m| m.file_type().is_file()).unwrap_or(false)
    }

    /// The size of blob `d`; a missing blob is a `Content` error.
    pub fn size(&self, d: &Digest) -> Result<u64> {
        let path = self.blob_path(d);
        match fs::symlink_metadata(&path) {
            Ok(m) => Ok(m.len()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(self.missing(d)),
            Err(e) => Err(Error::io("reading size of blob", path, e)),
        }
    }

    fn missing(&self, d: &Digest) -> Error {
        Error::new(ErrorKind::Content, format!("blob {d} not found in content store {}", self.dir.display()))
    }

    /// Removes temp files of writers that no longer run (a process killed mid-write); returns how
    /// many. Files of live processes are kept.
    pub fn remove_stale_ingest(&self) -> Result<usize> {
        if self.read_only {
            return Ok(0);
        }
        let ingest = self.dir.join("ingest");
        let Ok(entries) = fs::read_dir(&ingest) else { return Ok(0) };
        let mut removed = 0;
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            let pid = name.strip_prefix("blob-").and_then(|r| r.split('-').next()).and_then(|p| p.parse::<u32>().ok());
            let alive = pid.map(|p| Path::new(&format!("/proc/{p}")).exists()).unwrap_or(true);
            if !alive {
                fs::remove_file(e.path()).with_path("removing stale ingest file", e.path())?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// A writer for a new blob: bytes are hashed as they are written; call
    /// [`BlobWriter::commit`] to place the blob (dropping it discards the data).
    pub fn writer(&self) -> Result<BlobWriter> {
        let ingest = self.ingest_dir()?;
        // The pid in the name lets `remove_stale_ingest` tell a crashed writer's leftovers apart.
        let tmp = tempfile::Builder::new()
            .prefix(&format!("blob-{}-", std::process::id()))
            .tempfile_in(&ingest)
            .with_path("creating temp file for blob in", &ingest)?;
        Ok(BlobWriter {
            store: self.clone(),
            out: BufWriter::with_capacity(256 * 1024, tmp),
            hasher: Sha256::new(),
            len: 0,
        })
    }

    /// Writes `data` as a blob and returns its digest (a no-op when already present).
    pub fn write_bytes(&self, data: &[u8]) -> Result<Digest> {
        let d = Digest::of(data);
        if self.has(&d) {
            return Ok(d);
        }
        let mut w = self.writer()?;
        w.write_all(data).with_path("writing blob into", self.dir.join("ingest"))?;
        w.commit(Some(&d))?;
        Ok(d)
    }

    /// Reads metadata blob `d` (a manifest, index or config) whole, verifying it; blobs larger
    /// than the metadata cap ([`super::limits::max_metadata_bytes`]) are refused unread. A blob
    /// whose content does not match is reported as a `Content` error (and deleted, unless this
    /// store is a read-only source).
    pub fn read(&self, d: &Digest) -> Result<Vec<u8>> {
        let path = self.blob_path(d);
        let data = super::limits::read_capped(self.open_blob(d)?, &path, "blob")?;
        let actual = Digest::of(&data);
        if &actual != d {
            return Err(corrupt(&path, d, &actual, !self.read_only));
        }
        Ok(data)
    }

    /// Opens blob `d` for streaming. The reader verifies the content as it goes: when it reaches
    /// the end and the content does not match `d`, that read returns an `InvalidData` error and
    /// the corrupt blob is deleted. Callers must read to the end for the check to happen.
    pub fn open_reader(&self, d: &Digest) -> Result<Box<dyn Read + Send>> {
        let file = self.open_blob(d)?;
        Ok(Box::new(self.verifying(file, d)))
    }

    fn verifying(&self, file: File, d: &Digest) -> VerifyingReader {
        VerifyingReader {
            file,
            path: self.blob_path(d),
            expected: d.clone(),
            hasher: Some(Sha256::new()),
            failed: None,
            delete_corrupt: !self.read_only,
        }
    }

    /// Deletes blob `d`; deleting a missing blob is not an error.
    pub fn delete(&self, d: &Digest) -> Result<()> {
        self.refuse_write("deleting a blob")?;
        let path = self.blob_path(d);
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io("deleting blob", path, e)),
        }
    }

    /// Every blob with its size. Files whose names are not sha256 hex digests are ignored.
    pub fn list(&self) -> Result<Vec<(Digest, u64)>> {
        let dir = self.blobs_dir();
        let mut out = Vec::new();
        for entry in fs::read_dir(&dir).with_path("listing blobs in", &dir)? {
            let entry = entry.with_path("listing blobs in", &dir)?;
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else { continue };
            let Ok(d) = Digest::parse(&format!("sha256:{name}")) else { continue };
            let meta = entry.metadata().with_path("reading size of blob", entry.path())?;
            if meta.is_file() {
                out.push((d, meta.len()));
            }
        }
        out.sort();
        Ok(out)
    }

    /// Places blob `d` from another store into this one, verified. Hard-linked only when `other`
    /// is a kiln store and its file is one the store made read-only (no write bits); from a
    /// source (a read-only store: a user's OCI layout or cache dir) the blob is reflinked where
    /// the filesystem can, else copied — never linked, so editing the user's file can never
    /// change the store's, and nothing in the source is modified or deleted. No-op if present.
    pub fn link_from(&self, other: &ContentStore, d: &Digest) -> Result<()> {
        if self.has(d) {
            return Ok(());
        }
        self.refuse_write("placing a blob")?;
        let src = other.blob_path(d);
        let file = other.open_blob(d)?;
        let mode = file.metadata().with_path("inspecting blob", &src)?.permissions().mode();
        if !other.read_only && mode & 0o222 == 0 {
            // Verify the source before sharing its inode: a link would import corruption silently.
            io::copy(&mut other.verifying(file, d), &mut io::sink())
                .map_err(|e| read_error(e, "verifying blob", &src))?;
            let dst = self.blob_path(d);
            match fs::hard_link(&src, &dst) {
                Ok(()) => {
                    sync_dir(&self.blobs_dir())?;
                    tracing::debug!(blob = %d, from = %other.dir.display(), to = %self.dir.display(), "hardlinked blob");
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok(()),
                // EXDEV (other filesystem), EPERM (protected_hardlinks) and friends: copy instead.
                Err(e) => tracing::debug!(blob = %d, error = %e, "hardlink failed, copying blob"),
            }
            let file = other.open_blob(d)?;
            return self.copy_in(other, file, d);
        }
        self.copy_in(other, file, d)
    }

    /// Reflinks (FICLONE) or copies `file` (blob `d` of `other`) into a new blob of this store;
    /// the new file is verified, so a source changing meanwhile cannot slip in.
    fn copy_in(&self, other: &ContentStore, file: File, d: &Digest) -> Result<()> {
        let src = other.blob_path(d);
        let mut w = self.writer()?;
        if reflink(&file, w.out.get_ref().as_file()).is_ok() {
            // Our clone cannot change under us: hash it.
            let tmp_path = w.out.get_ref().path().to_path_buf();
            let mut clone = File::open(&tmp_path).with_path("reading reflinked blob", &tmp_path)?;
            let mut buf = vec![0u8; 256 * 1024];
            loop {
                let n = clone.read(&mut buf).with_path("reading reflinked blob", &tmp_path)?;
                if n == 0 {
                    break;
                }
                w.hasher.update(&buf[..n]);
                w.len += n as u64;
            }
            tracing::debug!(blob = %d, from = %other.dir.display(), "reflinked blob");
        } else {
            let mut r = other.verifying(file, d);
            io::copy(&mut r, &mut w).map_err(|e| read_error(e, "copying blob", &src))?;
        }
        w.commit(Some(d)).map_err(|e| {
            if other.read_only {
                e.context(format!("blob {d} of {} (left unchanged: kiln never modifies a source)", other.dir.display()))
            } else {
                e
            }
        })?;
        Ok(())
    }
}

/// `ioctl(FICLONE)`: shares `src`'s extents with `dst` (copy-on-write) on filesystems that can.
fn reflink(src: &File, dst: &File) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    // _IOW(0x94, 9, int)
    const FICLONE: libc::c_ulong = 0x4004_9409;
    // SAFETY: both descriptors are open for the duration of the call; FICLONE takes an fd value.
    let rc = unsafe { libc::ioctl(dst.as_raw_fd(), FICLONE as _, src.as_raw_fd()) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Maps an I/O error from a verifying reader: a digest mismatch stays a `Content` error.
pub(crate) fn read_error(e: io::Error, context: &str, path: &Path) -> Error {
    if e.kind() == io::ErrorKind::InvalidData {
        Error::new(ErrorKind::Content, format!("{context} {}: {e}", path.display()))
    } else {
        Error::io(context, path, e)
    }
}

/// Builds the corruption error and deletes the corrupt blob (only when `delete`: a source's
/// blob is never deleted, it is a miss).
fn corrupt(path: &Path, expected: &Digest, actual: &Digest, delete: bool) -> Error {
    let removed = if !delete {
        "left it in place (a source is never modified)".to_owned()
    } else {
        match fs::remove_file(path) {
            Ok(()) => "deleted it".to_owned(),
            Err(e) => format!("could not delete it: {e}"),
        }
    };
    tracing::warn!(blob = %expected, actual = %actual, path = %path.display(), "corrupt blob");
    Error::new(
        ErrorKind::Content,
        format!(
            "blob {expected} at {} is corrupt: its content hashes to {actual}; {removed} so it will be fetched or rebuilt",
            path.display()
        ),
    )
}

/// fsyncs a directory so a rename or link in it survives a crash.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|f| f.sync_all()).with_path("syncing directory", dir)
}

/// Reader over a blob that checks its digest when the end is reached.
struct VerifyingReader {
    file: File,
    path: PathBuf,
    expected: Digest,
    /// `None` once the end was reached and checked.
    hasher: Option<Sha256>,
    /// The mismatch message, repeated on every later read so a retry cannot look like success.
    failed: Option<String>,
    /// Delete the blob when it does not match (never for a source).
    delete_corrupt: bool,
}

impl Read for VerifyingReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some(msg) = &self.failed {
            return Err(io::Error::new(io::ErrorKind::InvalidData, msg.clone()));
        }
        let n = self.file.read(buf)?;
        let Some(hasher) = self.hasher.as_mut() else { return Ok(n) };
        if n > 0 || buf.is_empty() {
            hasher.update(&buf[..n]);
            return Ok(n);
        }
        let hasher = self.hasher.take().unwrap_or_default();
        let actual = Digest::parse(&format!("sha256:{}", hex::encode(hasher.finalize())))
            .map_err(|e| io::Error::other(e.to_string()))?;
        if actual != self.expected {
            let msg = corrupt(&self.path, &self.expected, &actual, self.delete_corrupt).to_string();
            self.failed = Some(msg.clone());
            return Err(io::Error::new(io::ErrorKind::InvalidData, msg));
        }
        Ok(0)
    }
}

/// Writes a new blob into a [`ContentStore`], hashing as it goes.
pub struct BlobWriter {
    store: ContentStore,
    out: BufWriter<tempfile::NamedTempFile>,
    hasher: Sha256,
    len: u64,
}

impl std::fmt::Debug for BlobWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlobWriter").field("store", &self.store.dir).field("len", &self.len).finish()
    }
}

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.out.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

impl BlobWriter {
    /// Bytes written so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// True when nothing was written yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Finishes the blob: fsyncs it, checks it against `expected` (a mismatch is a `Content`
    /// error and nothing is stored), renames it into place and fsyncs the blob directory.
    /// Returns the digest and size.
    pub fn commit(self, expected: Option<&Digest>) -> Result<(Digest, u64)> {
        let BlobWriter { store, out, hasher, len } = self;
        let ingest = store.dir.join("ingest");
        let tmp = out.into_inner().map_err(|e| Error::io("flushing blob", &ingest, e.into_error()))?;
        let digest = Digest::parse(&format!("sha256:{}", hex::encode(hasher.finalize())))?;
        if let Some(expected) = expected {
            if expected != &digest {
                return Err(Error::new(
                    ErrorKind::Content,
                    format!(
                        "content written to store {} does not match: expected {expected}, got {digest} ({len} bytes)",
                        store.dir.display()
                    ),
                ));
            }
        }
        let tmp_path = tmp.path().to_path_buf();
        tmp.as_file().sync_all().with_path("syncing blob", &tmp_path)?;
        tmp.as_file()
            .set_permissions(fs::Permissions::from_mode(BLOB_MODE))
            .with_path("setting mode of blob", &tmp_path)?;
        let dst = store.blob_path(&digest);
        if dst.is_file() {
            // Someone else committed the same content; ours is dropped (and its temp removed).
            return Ok((digest, len));
        }
        tmp.persist(&dst).map_err(|e| Error::io("moving blob into place", &dst, e.error))?;
        sync_dir(&store.blobs_dir())?;
        Ok((digest, len))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_read_and_list() {
        let dir = tempfile::tempdir().unwrap();
        let s = ContentStore::open(dir.path()).unwrap();
        let d = s.write_bytes(b"hello").unwrap();
        assert_eq!(d, Digest::of(b"hello"));
        assert!(s.has(&d));
        assert_eq!(s.size(&d).unwrap(), 5);
        assert_eq!(s.read(&d).unwrap(), b"hello");
        assert_eq!(s.list().unwrap(), vec![(d.clone(), 5)]);
        let mut buf = Vec::new();
        s.open_reader(&d).unwrap().read_to_end(&mut buf).unwrap();
        assert_eq!(buf, b"hello");
        let mode = fs::metadata(s.blob_path(&d)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o444);
        s.delete(&d).unwrap();
        assert!(!s.has(&d));
        s.delete(&d).unwrap();
        assert_eq!(s.read(&d).unwrap_err().kind(), ErrorKind::Content);
    }

    #[test]
    fn dropped_writer_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let s = ContentStore::open(dir.path()).unwrap();
        let mut w = s.writer().unwrap();
        w.write_all(b"partial").unwrap();
        drop(w);
        assert_eq!(fs::read_dir(dir.path().join("ingest")).unwrap().count(), 0);
        assert!(s.list().unwrap().is_empty());
    }

    #[test]
    fn commit_with_wrong_expected_digest_fails() {
        let dir = tempfile::tempdir().unwrap();
        let s = ContentStore::open(dir.path()).unwrap();
        let mut w = s.writer().unwrap();
        w.write_all(b"abc").unwrap();
        let err = w.commit(Some(&Digest::of(b"xyz"))).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Content);
        assert!(s.list().unwrap().is_empty());
        assert_eq!(fs::read_dir(dir.path().join("ingest")).unwrap().count(), 0);
    }

    #[test]
    fn link_from_other_store() {
        let dir = tempfile::tempdir().unwrap();
        let a = ContentStore::open(&dir.path().join("a")).unwrap();
        let b = ContentStore::open(&dir.path().join("b")).unwrap();
        let d = a.write_bytes(b"shared").unwrap();
        b.link_from(&a, &d).unwrap();
        assert_eq!(b.read(&d).unwrap(), b"shared");
        b.link_from(&a, &d).unwrap();
        let missing = Digest::of(b"nope");
        assert_eq!(b.link_from(&a, &missing).unwrap_err().kind(), ErrorKind::Content);
    }

    #[test]
    fn link_from_rejects_corrupt_source() {
        let dir = tempfile::tempdir().unwrap();
        let a = ContentStore::open(&dir.path().join("a")).unwrap();
        let b = ContentStore::open(&dir.path().join("b")).unwrap();
        let d = a.write_bytes(b"shared").unwrap();
        fs::write(a.blob_path(&d), b"tampered").unwrap();
        assert_eq!(b.link_from(&a, &d).unwrap_err().kind(), ErrorKind::Content);
        assert!(!b.has(&d));
        assert!(!a.has(&d));
    }
}
