//! [`Ref`]: the result of an inner solve of a client-side build, and the reads on it
//! (BuildKit's `cache/util/fsutil.go`: `ReadFile`, `ReadDir`, `StatFile`). Reads go through a
//! read-only view of the result's snapshot (mounted once per ref, released when the ref is
//! dropped or the build ends; nothing is copied) and resolve every path inside that view:
//! `..` and symlinks, absolute or relative, never leave it.

use crate::error::{Error, ErrorKind, IoContext, Result};
use crate::fileops::{resolve_in_root, Decision, PatternMatcher};
use crate::snapshot::MountGuard;
use crate::solver::{BuildSession, SolvedRef};
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;
use std::sync::{Arc, Mutex};

/// A result of [`crate::build::BuildContext::solve`]: read files from it, list and stat its
/// paths, force it to exist, or return it as the build's result. Cheap to clone; the view it
/// reads through is released when the last clone is dropped or the build ends, whichever comes
/// first (reading it after the build ended is an [`ErrorKind::Unsupported`] error).
#[derive(Debug, Clone)]
pub struct Ref {
    pub(super) inner: RefKind,
}

/// An embedded build's result, or a daemon's ref id.
#[derive(Debug, Clone)]
pub(super) enum RefKind {
    Local(Arc<RefInner>),
    Remote(Arc<RemoteRef>),
}

/// A result of a build a daemon runs: its id there, read through the bridge.
#[derive(Debug)]
pub(crate) struct RemoteRef {
    pub(super) bridge: Arc<dyn super::remote::RemoteBridge>,
    pub(super) id: String,
    pub(super) output: Option<(crate::Digest, i64)>,
}

#[derive(Debug)]
pub(super) struct RefInner {
    pub(super) session: Arc<BuildSession>,
    pub(super) solved: SolvedRef,
    /// The read-only view of the snapshot, mounted on first read (`None` again once released).
    pub(super) view: Mutex<Option<Arc<MountGuard>>>,
}

impl RefInner {
    /// Unmounts the view (the build ended). Reads still running keep their own handle on it and
    /// drop it when they return; the build waits for them.
    pub(super) fn release(&self) {
        let view = lock(&self.view).take();
        drop(view);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// One path of a result, as BuildKit's `fsutil/types.Stat` describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileStat {
    /// For `stat_file`, the base name of the path; for `read_dir`, the entry's name.
    pub path: String,
    /// Unix `st_mode`: file type bits (`S_IFDIR`, `S_IFLNK`, ...) and permission bits, including
    /// setuid, setgid and sticky. [`FileStat::go_mode`] gives BuildKit's wire form.
    pub mode: u32,
    /// Owner user id.
    pub uid: u32,
    /// Owner group id.
    pub gid: u32,
    /// Size in bytes (0 for directories, as BuildKit reports them).
    pub size: u64,
    /// Modification time, nanoseconds since the Unix epoch.
    pub mtime_ns: i64,
    /// The target of a symlink (as stored, not resolved).
    pub link_target: Option<String>,
}

impl FileStat {
    /// True for a directory.
    pub fn is_dir(&self) -> bool {
        self.mode & libc::S_IFMT == libc::S_IFDIR
    }

    /// True for a regular file.
    pub fn is_file(&self) -> bool {
        self.mode & libc::S_IFMT == libc::S_IFREG
    }

    /// True for a symlink.
    pub fn is_symlink(&self) -> bool {
        self.mode & libc::S_IFMT == libc::S_IFLNK
    }

    /// The mode as BuildKit's `types.Stat.Mode` carries it: Go's `os.FileMode` bits (type bits
    /// high, `ModeSetuid`/`ModeSetgid`/`ModeSticky` instead of the Unix bits; the socket bit
    /// cleared as fsutil clears it).
    pub fn go_mode(&self) -> u32 {
        const DIR: u32 = 1 << 31;
        const SYMLINK: u32 = 1 << 27;
        const DEVICE: u32 = 1 << 26;
        const NAMED_PIPE: u32 = 1 << 25;
        const SETUID: u32 = 1 << 23;
        const SETGID: u32 = 1 << 22;
        const CHAR_DEVICE: u32 = 1 << 21;
        const STICKY: u32 = 1 << 20;
        let mut m = self.mode & 0o777;
        m |= match self.mode & libc::S_IFMT {
            libc::S_IFDIR => DIR,
            libc::S_IFLNK => SYMLINK,
            libc::S_IFBLK => DEVICE,
            libc::S_IFCHR => DEVICE | CHAR_DEVICE,
            libc::S_IFIFO => NAMED_PIPE,
            _ => 0,
        };
        for (unix, go) in [(libc::S_ISUID, SETUID), (libc::S_ISGID, SETGID), (libc::S_ISVTX, STICKY)] {
            if self.mode & unix != 0 {
                m |= go;
            }
        }
        m
    }

    fn of(name: String, host: &Path, meta: &std::fs::Metadata) -> Result<FileStat> {
        let link_target = if meta.file_type().is_symlink() {
            let t = std::fs::read_link(host).with_path("read symlink", host)?;
            Some(t.to_string_lossy().into_owned())
        } else {
            None
        };
        Ok(FileStat {
            path: name,
            mode: meta.mode(),
            uid: meta.uid(),
            gid: meta.gid(),
            size: if meta.is_dir() { 0 } else { meta.len() },
            mtime_ns: meta.mtime().saturating_mul(1_000_000_000).saturating_add(meta.mtime_nsec()),
            link_target,
        })
    }
}

/// `path`'s metadata, or [`Error::NotFound`] when nothing is there.
fn lstat(host: &Path, asked: &str) -> Result<std::fs::Metadata> {
    std::fs::symlink_metadata(host).map_err(|e| not_found_or(e, asked, "stat", host))
}

fn not_found_or(e: std::io::Error, asked: &str, what: &str, host: &Path) -> Error {
    if e.kind() == std::io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ENOTDIR) {
        Error::NotFound { path: asked.to_owned() }
    } else {
        Error::io(format!("{what} {asked} in a build result:"), host, e)
    }
}

/// Go's `filepath.Base` of the cleaned path (`/` for the root).
fn base_name(path: &str) -> String {
    path.split('/').rfind(|c| !c.is_empty() && *c != ".").unwrap_or("/").to_owned()
}

impl Ref {
    /// Forces the result to exist locally (executes it, or applies it from an imported cache,
    /// if an earlier solve only knew it was available).
    pub async fn evaluate(&self) -> Result<()> {
        match &self.inner {
            RefKind::Local(i) => {
                check_open(i)?;
                i.solved.load().await.map(|_| ())
            }
            RefKind::Remote(r) => r.bridge.evaluate(&r.id).await,
        }
    }

    /// True when the result is the empty filesystem (a definition without output, `scratch`).
    pub fn is_scratch(&self) -> bool {
        self.output().is_none()
    }

    /// The op digest and output index this ref is (`None` for the empty filesystem).
    pub fn output(&self) -> Option<(crate::Digest, i64)> {
        match &self.inner {
            RefKind::Local(i) => i.solved.output().cloned(),
            RefKind::Remote(r) => r.output.clone(),
        }
    }

    /// The daemon's id of a result of a connected build (`None` for an embedded one).
    pub fn remote_id(&self) -> Option<&str> {
        match &self.inner {
            RefKind::Local(_) => None,
            RefKind::Remote(r) => Some(&r.id),
        }
    }

    /// The embedded result (`None` for a daemon's).
    pub(super) fn local(&self) -> Option<&Arc<RefInner>> {
        match &self.inner {
            RefKind::Local(i) => Some(i),
            RefKind::Remote(_) => None,
        }
    }

    /// The contents of the file at `path`, or only `length` bytes from `offset` with `range`
    /// (fewer at the end of the file; none past it). Symlinks are followed inside the result.
    /// A missing path is [`Error::NotFound`]; a directory is an [`ErrorKind::FileOp`] error.
    pub async fn read_file(&self, path: &str, range: Option<(u64, u64)>) -> Result<Vec<u8>> {
        if let RefKind::Remote(r) = &self.inner {
            return r.bridge.read_file(&r.id, path, range).await;
        }
        let asked = path.to_owned();
        self.with_root(move |root| {
            let host = resolve_in_root(root, &asked, true)?;
            // The resolved path has no symlink left: O_NOFOLLOW only makes sure of it.
            let mut f = std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&host)
                .map_err(|e| not_found_or(e, &asked, "open", &host))?;
            let meta = f.metadata().with_path("stat", &host)?;
            if meta.is_dir() {
                return Err(Error::new(ErrorKind::FileOp, format!("read {asked}: is a directory")));
            }
            let mut out = Vec::new();
            match range {
                None => {
                    out.reserve_exact(usize::try_from(meta.len()).unwrap_or(0));
                    f.read_to_end(&mut out).with_path("read", &host)?;
                }
                Some((offset, length)) => {
                    if offset < meta.len() {
                        out.reserve_exact(usize::try_from(length.min(meta.len() - offset)).unwrap_or(0));
                        f.seek(SeekFrom::Start(offset)).with_path("seek", &host)?;
                        f.take(length).read_to_end(&mut out).with_path("read", &host)?;
                    }
                }
            }
            Ok(out)
        })
        .await
    }

    /// The entries of the directory at `path`, sorted by name, each with its mode, owner, size,
    /// mtime and link target; with `include_pattern`, only entries whose name it matches
    /// (BuildKit's include patterns: `*`, `?`, `[...]`, `**`). A missing path is
    /// [`Error::NotFound`].
    pub async fn read_dir(&self, path: &str, include_pattern: Option<&str>) -> Result<Vec<FileStat>> {
        if let RefKind::Remote(r) = &self.inner {
            return r.bridge.read_dir(&r.id, path, include_pattern).await;
        }
        let asked = path.to_owned();
        let matcher = match include_pattern.filter(|p| !p.is_empty()) {
            Some(p) => Some(PatternMatcher::new(&[p.to_owned()], &[])?),
            None => None,
        };
        self.with_root(move |root| {
            let host = resolve_in_root(root, &asked, true)?;
            let rd = std::fs::read_dir(&host).map_err(|e| not_found_or(e, &asked, "read directory", &host))?;
            let mut out = Vec::new();
            for ent in rd {
                let ent = ent.with_path("read directory", &host)?;
                let name = ent.file_name().to_string_lossy().into_owned();
                let p = ent.path();
                let meta = std::fs::symlink_metadata(&p).with_path("stat", &p)?;
                if let Some(m) = &matcher {
                    if m.is_included(&name, meta.is_dir()) != Decision::Include {
                        continue;
                    }
                }
                out.push(FileStat::of(name, &p, &meta)?);
            }
            out.sort_by(|a, b| a.path.cmp(&b.path));
            Ok(out)
        })
        .await
    }

    /// What is at `path` (symlinks followed inside the result); [`Error::NotFound`] when
    /// nothing is.
    pub async fn stat_file(&self, path: &str) -> Result<FileStat> {
        if let RefKind::Remote(r) = &self.inner {
            return r.bridge.stat_file(&r.id, path).await;
        }
        let asked = path.to_owned();
        self.with_root(move |root| {
            let host = resolve_in_root(root, &asked, true)?;
            let meta = lstat(&host, &asked)?;
            FileStat::of(base_name(&asked), &host, &meta)
        })
        .await
    }

    /// Runs `f` on a blocking thread (counted as a task of the build) with the host path of the
    /// result's read-only view (an empty directory for the empty filesystem). Embedded refs
    /// only: the read methods send a daemon's refs to its bridge first.
    async fn with_root<T: Send + 'static>(&self, f: impl FnOnce(&Path) -> Result<T> + Send + 'static) -> Result<T> {
        let Some(inner) = self.local() else {
            return Err(Error::new(ErrorKind::Internal, "a daemon's build result has no local view"));
        };
        check_open(inner)?;
        let loaded = inner.solved.load().await?;
        let inner = inner.clone();
        let tokens = inner.session.tokens();
        let task = tokio::task::spawn_blocking(move || {
            let _tokens = tokens;
            let Some(r) = loaded else {
                let empty = tempfile::tempdir_in(inner.session.tmp())
                    .map_err(|e| Error::io("create empty dir", inner.session.tmp(), e))?;
                return f(empty.path());
            };
            let view = {
                let mut slot = lock(&inner.view);
                // Checked under the slot's lock: the build's release takes it after setting
                // `closed`, so no view is mounted after the release.
                if inner.session.is_closed() {
                    return Err(BuildSession::closed_error());
                }
                match &*slot {
                    Some(v) => v.clone(),
                    None => {
                        let v = Arc::new(r.worker.snapshotter.mount(&r.snapshot)?);
                        *slot = Some(v.clone());
                        v
                    }
                }
            };
            let res = f(view.path());
            drop(view);
            drop(inner);
            res
        });
        task.await.map_err(|e| Error::with_source(ErrorKind::Internal, "read task of a build ref", e))?
    }
}

fn check_open(inner: &RefInner) -> Result<()> {
    if inner.session.is_closed() {
        return Err(BuildSession::closed_error());
    }
    Ok(())
}
