//! The overlayfs snapshotter: each snapshot stores only its changes (the overlay upper dir);
//! views stack the parent chain as lower dirs. Chains too deep or too long for one mount's
//! option page are cut by a flattened snapshot whose `fs` holds its parent's full tree.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use nix::mount::{mount, MsFlags};

use super::diff::{diff_trees, diff_upper};
use super::fsutil;
use super::store::{PendingChild, Store};
use super::{MountGuard, SnapshotId, Snapshotter};
use crate::error::{Error, ErrorKind, IoContext, Result};

/// Most lower layers one mount may stack before `prepare` flattens.
const MAX_LOWERS: usize = 40;
/// Most bytes of mount options before `prepare` flattens (the kernel's limit is one page).
const MAX_OPTIONS: usize = 3000;
/// Options that keep the upper dir a plain tree of changes (what `diff` walks): no redirect or
/// metacopy xattrs, no inode index tying an upper to one set of lowers.
const FIXED_OPTIONS: &str = "index=off,redirect_dir=off,metacopy=off";

/// Overlayfs snapshotter state.
#[derive(Debug, Clone)]
pub(crate) struct Overlay {
    store: Arc<Store>,
}

fn snap_err(msg: impl Into<String>) -> Error {
    Error::new(ErrorKind::Snapshot, msg)
}

fn options(lowers: &[PathBuf], upper: Option<(&Path, &Path)>) -> String {
    let mut s = String::from("lowerdir=");
    for (i, l) in lowers.iter().enumerate() {
        if i > 0 {
            s.push(':');
        }
        s.push_str(&l.to_string_lossy());
    }
    if let Some((u, w)) = upper {
        s.push_str(",upperdir=");
        s.push_str(&u.to_string_lossy());
        s.push_str(",workdir=");
        s.push_str(&w.to_string_lossy());
    }
    s.push(',');
    s.push_str(FIXED_OPTIONS);
    s
}

fn mount_overlay(target: &Path, opts: &str, flags: MsFlags) -> Result<()> {
    mount(Some("overlay"), target, Some("overlay"), flags, Some(opts)).map_err(|e| {
        Error::with_source(
            ErrorKind::Snapshot,
            format!("mounting overlay at {} with options {opts:?}", target.display()),
            std::io::Error::from(e),
        )
    })
}

fn bind(src: &Path, target: &Path, readonly: bool) -> Result<()> {
    let err = |e: nix::Error| {
        Error::with_source(
            ErrorKind::Snapshot,
            format!("bind mounting {} at {}", src.display(), target.display()),
            std::io::Error::from(e),
        )
    };
    mount(Some(src), target, None::<&str>, MsFlags::MS_BIND, None::<&str>).map_err(err)?;
    if readonly {
        let flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
        if let Err(e) = mount(None::<&str>, target, None::<&str>, flags, None::<&str>) {
            fsutil::unmount(target);
            return Err(err(e));
        }
    }
    Ok(())
}

impl Overlay {
    pub fn open(dir: &Path) -> Result<Overlay> {
        let store = Store::open(dir)?;
        let s = store.dir().to_string_lossy();
        if s.contains([',', ':']) {
            return Err(snap_err(format!(
                "overlay snapshot directory {s:?} contains ',' or ':', which overlay mount options cannot carry; choose another root"
            )));
        }
        probe(store.dir())
            .map_err(|e| e.context(format!("overlayfs is not usable under {}", store.dir().display())))?;
        Ok(Overlay { store: Arc::new(store) })
    }

    /// `fs` dirs of `id`'s view, nearest first: its own, then its parents' up to a base.
    fn chain(&self, id: &SnapshotId) -> Result<Vec<PathBuf>> {
        let mut out = Vec::new();
        let mut cur = Some(id.clone());
        while let Some(c) = cur {
            let info = self.store.info(&c)?;
            out.push(self.store.fs_dir(&c)?);
            cur = if info.base { None } else { info.parent };
            if out.len() > 10_000 {
                return Err(snap_err(format!("snapshot {id} has a parent cycle")));
            }
        }
        Ok(out)
    }

    /// A read-only view of a committed snapshot at a fresh mount point.
    fn mount_ro(&self, id: &SnapshotId) -> Result<MountGuard> {
        let mut uses = self.store.uses();
        let lowers = self.chain(id)?;
        let mp = self.store.new_mountpoint()?;
        let res = if lowers.len() == 1 {
            bind(&lowers[0], &mp, true)
        } else {
            mount_overlay(&mp, &options(&lowers, None), MsFlags::MS_RDONLY)
        };
        if let Err(e) = res {
            let _ = fs::remove_dir(&mp);
            return Err(e);
        }
        uses.entry(id.clone()).or_default().ro += 1;
        let store = self.store.clone();
        let id = id.clone();
        let path = mp.clone();
        Ok(MountGuard::new(mp, move || {
            fsutil::unmount(&path);
            if let Err(e) = fs::remove_dir(&path) {
                tracing::warn!(path = %path.display(), error = %e, "could not remove mount point");
            }
            if let Some(u) = store.uses().get_mut(&id) {
                u.ro = u.ro.saturating_sub(1);
            }
        }))
    }

    /// The writable view of an active snapshot at `<id>/merged`, shared by concurrent holders.
    fn mount_rw(&self, id: &SnapshotId, parent: Option<SnapshotId>, base: bool) -> Result<MountGuard> {
        let mut uses = self.store.uses();
        let sd = self.store.snap_dir(id)?;
        let merged = sd.join("merged");
        let u = uses.entry(id.clone()).or_default();
        if u.rw == 0 {
            fs::create_dir_all(&merged).with_path("creating mount point", &merged)?;
            let upper = sd.join("fs");
            let lowers = match parent {
                Some(p) if !base => self.chain(&p)?,
                _ => Vec::new(),
            };
            if lowers.is_empty() {
                bind(&upper, &merged, false)?;
            } else {
                mount_overlay(&merged, &options(&lowers, Some((&upper, &sd.join("work")))), MsFlags::empty())?;
            }
        }
        u.rw += 1;
        let store = self.store.clone();
        let id = id.clone();
        let path = merged.clone();
        Ok(MountGuard::new(merged, move || {
            let mut uses = store.uses();
            if let Some(u) = uses.get_mut(&id) {
                u.rw = u.rw.saturating_sub(1);
                if u.rw == 0 {
                    fsutil::unmount(&path);
                }
            }
        }))
    }
}

/// Mounts a tiny overlay and deletes a lower file through it: overlay must mount here and
/// record the deletion as a whiteout device in the upper dir (what `diff` relies on).
fn probe(dir: &Path) -> Result<()> {
    let p = dir.join(format!(".tmp-probe-{}", std::process::id()));
    let _ = fs::remove_dir_all(&p);
    let res = (|| {
        for d in ["l1", "l2", "u", "w", "m"] {
            fs::create_dir_all(p.join(d)).with_path("creating probe directory", p.join(d))?;
        }
        fs::write(p.join("l1/f"), b"x").with_path("writing probe file", p.join("l1/f"))?;
        let opts = options(&[p.join("l1"), p.join("l2")], Some((&p.join("u"), &p.join("w"))));
        mount_overlay(&p.join("m"), &opts, MsFlags::empty())?;
        let r = fs::remove_file(p.join("m/f")).with_path("deleting through probe overlay", p.join("m/f"));
        fsutil::unmount(&p.join("m"));
        r?;
        let wh = fs::symlink_metadata(p.join("u/f")).with_path("reading probe whiteout", p.join("u/f"))?;
        use std::os::unix::fs::{FileTypeExt, MetadataExt};
        if !(wh.file_type().is_char_device() && wh.rdev() == 0) {
            return Err(snap_err("overlay did not record a deletion as a 0/0 whiteout device"));
        }
        Ok(())
    })();
    if let Err(e) = fs::remove_dir_all(&p) {
        tracing::warn!(path = %p.display(), error = %e, "could not remove overlay probe");
    }
    res
}

impl Snapshotter for Overlay {
    fn name(&self) -> &'static str {
        "overlayfs"
    }

    fn prepare(&self, parent: Option<&SnapshotId>) -> Result<SnapshotId> {
        let (_pending, _info) = PendingChild::register(&self.store, parent)?;
        let flatten = match parent {
            None => false,
            Some(p) => {
                let lowers = self.chain(p)?;
                // Measure with a same-length stand-in for the new snapshot's own dirs.
                let sd = self.store.snap_dir(&SnapshotId("0".repeat(16)))?;
                let len = options(&lowers, Some((&sd.join("fs"), &sd.join("work")))).len();
                lowers.len() >= MAX_LOWERS || len > MAX_OPTIONS
            }
        };
        self.store.create(parent, flatten, |tmp| {
            let work = tmp.join("work");
            fs::create_dir(&work).with_path("creating overlay work dir", &work)?;
            if let (true, Some(p)) = (flatten, parent) {
                tracing::debug!(parent = %p, "flattening deep overlay chain");
                let view = self.mount_ro(p)?;
                fsutil::copy_tree(view.path(), &tmp.join("fs"))?;
            }
            Ok(())
        })
    }

    fn mount(&self, id: &SnapshotId) -> Result<MountGuard> {
        let info = self.store.info(id)?;
        if info.committed {
            self.mount_ro(id)
        } else {
            self.mount_rw(id, info.parent, info.base)
        }
    }

    /// The upper dir of an active snapshot without lower layers: its writable view is a bind
    /// mount of that dir.
    fn direct_dir(&self, id: &SnapshotId) -> Option<PathBuf> {
        let info = self.store.info(id).ok()?;
        let no_lowers = info.parent.is_none() || info.base;
        (!info.committed && no_lowers).then(|| self.store.snap_dir(id).ok().map(|d| d.join("fs"))).flatten()
    }

    fn commit(&self, id: &SnapshotId) -> Result<()> {
        let uses = self.store.uses();
        let info = self.store.info(id)?;
        if info.committed {
            return Err(snap_err(format!("snapshot {id} is already committed")));
        }
        if uses.get(id).is_some_and(|u| u.rw > 0) {
            return Err(snap_err(format!(
                "cannot commit snapshot {id}: it is still mounted writable; drop its mounts first"
            )));
        }
        self.store.set_committed(id)
    }

    fn remove(&self, id: &SnapshotId) -> Result<()> {
        let mut uses = self.store.uses();
        self.store.remove(&mut uses, id)
    }

    fn is_committed(&self, id: &SnapshotId) -> bool {
        self.store.is_committed(id)
    }

    fn parent(&self, id: &SnapshotId) -> Result<Option<SnapshotId>> {
        Ok(self.store.info(id)?.parent)
    }

    fn list(&self) -> Result<Vec<SnapshotId>> {
        self.store.list()
    }

    fn usage(&self, id: &SnapshotId) -> Result<u64> {
        self.store.info(id)?;
        fsutil::disk_usage(&self.store.fs_dir(id)?)
    }

    fn diff(&self, id: &SnapshotId, out: &mut dyn std::io::Write) -> Result<()> {
        let info = self.store.info(id)?;
        let fs_dir = self.store.fs_dir(id)?;
        match (info.base, &info.parent) {
            // A flattened snapshot holds a full tree: compare it with its parent's view.
            (true, Some(p)) => {
                let view = self.mount_ro(p)?;
                diff_trees(Some(view.path()), &fs_dir, info.recent_secs(), out)
            }
            _ => diff_upper(&fs_dir, out),
        }
    }
}
