//! Snapshotter integration tests on real overlayfs (as root) and the native copy snapshotter:
//! lifecycle, diffs with whiteouts, apply round trips, deep chains, and no leaked mounts.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use kiln::snapshot::{apply_layer, open_native, open_overlay, SnapshotId, Snapshotter};
use kiln::ErrorKind;

fn mounts_under(dir: &Path) -> Vec<String> {
    let dir = fs::canonicalize(dir).unwrap();
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(str::to_owned))
        .filter(|m| Path::new(m).starts_with(&dir))
        .collect()
}

fn assert_no_mounts(dir: &Path) {
    assert_eq!(mounts_under(dir), Vec::<String>::new(), "mounts leaked under {}", dir.display());
}

/// A comparable description of every entry under `root` (root itself excluded).
fn tree(root: &Path) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let m = fs::symlink_metadata(&p).unwrap();
            let ft = m.file_type();
            let what = if ft.is_dir() {
                stack.push(p.clone());
                "dir".to_owned()
            } else if ft.is_symlink() {
                format!("symlink->{}", fs::read_link(&p).unwrap().display())
            } else if ft.is_file() {
                format!("file nlink={} {:?}", m.nlink(), String::from_utf8_lossy(&fs::read(&p).unwrap()))
            } else {
                format!("special rdev={} type={:o}", m.rdev(), m.mode() & 0o170000)
            };
            let mode = if ft.is_symlink() { 0 } else { m.mode() & 0o7777 };
            let xattr = xattrs(&p);
            let mtime = if ft.is_symlink() { 0 } else { m.mtime() };
            out.insert(
                p.strip_prefix(root).unwrap().to_path_buf(),
                format!("{what} mode={mode:o} uid={} gid={} mtime={mtime} xattr={xattr}", m.uid(), m.gid()),
            );
        }
    }
    out
}

fn cpath(p: &Path) -> std::ffi::CString {
    std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap()
}

/// All xattrs of `p` (not following symlinks) as `name=value;...`.
fn xattrs(p: &Path) -> String {
    let c = cpath(p);
    let mut names = vec![0u8; 4096];
    // SAFETY: valid NUL-terminated path; the buffer is writable for its length.
    let n = unsafe { libc::llistxattr(c.as_ptr(), names.as_mut_ptr().cast(), names.len()) };
    assert!(n >= 0, "llistxattr {}", p.display());
    let mut out = Vec::new();
    for name in names[..n as usize].split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let cn = std::ffi::CString::new(name).unwrap();
        let mut v = vec![0u8; 4096];
        // SAFETY: valid NUL-terminated strings; the buffer is writable for its length.
        let len = unsafe { libc::lgetxattr(c.as_ptr(), cn.as_ptr(), v.as_mut_ptr().cast(), v.len()) };
        assert!(len >= 0);
        out.push(format!("{}={}", String::from_utf8_lossy(name), String::from_utf8_lossy(&v[..len as usize])));
    }
    out.sort();
    out.join(";")
}

fn set_xattr(p: &Path, name: &str, value: &str) {
    let (c, cn) = (cpath(p), std::ffi::CString::new(name).unwrap());
    // SAFETY: valid NUL-terminated strings; value is readable for its length.
    let r = unsafe { libc::lsetxattr(c.as_ptr(), cn.as_ptr(), value.as_ptr().cast(), value.len(), 0) };
    assert_eq!(r, 0, "lsetxattr {}", p.display());
}

fn populate_a(r: &Path) {
    fs::create_dir_all(r.join("d/sub")).unwrap();
    fs::write(r.join("d/f"), "hello").unwrap();
    fs::write(r.join("d/sub/deep"), "deep").unwrap();
    fs::create_dir_all(r.join("op/sub")).unwrap();
    fs::write(r.join("op/old1"), "1").unwrap();
    fs::write(r.join("op/sub/old2"), "2").unwrap();
    fs::write(r.join("del"), "bye").unwrap();
    fs::create_dir_all(r.join("deldir/sub")).unwrap();
    fs::write(r.join("deldir/sub/file"), "x").unwrap();
    fs::write(r.join("setuid"), "#!/bin/sh").unwrap();
    std::os::unix::fs::chown(r.join("setuid"), Some(1000), Some(1000)).unwrap();
    fs::set_permissions(r.join("setuid"), fs::Permissions::from_mode(0o4755)).unwrap();
    std::os::unix::fs::symlink("d/f", r.join("link")).unwrap();
    fs::write(r.join("hl1"), "linked").unwrap();
    fs::hard_link(r.join("hl1"), r.join("hl2")).unwrap();
    nix::unistd::mkfifo(&r.join("fifo"), nix::sys::stat::Mode::from_bits_truncate(0o640)).unwrap();
    nix::sys::stat::mknod(
        &r.join("null"),
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::from_bits_truncate(0o666),
        nix::sys::stat::makedev(1, 3),
    )
    .unwrap();
    fs::write(r.join("xfile"), "x").unwrap();
    set_xattr(&r.join("xfile"), "user.k", "v");
    fs::create_dir_all(r.join("tofile")).unwrap();
    fs::write(r.join("tofile/child"), "c").unwrap();
    fs::write(r.join("todir"), "t").unwrap();
    fs::write(r.join("chmodme"), "m").unwrap();
    fs::write(r.join("keep"), "keep").unwrap();
    fs::write(r.join("same"), "aaaa").unwrap();
}

fn mutate_b(r: &Path) {
    fs::write(r.join("d/f"), "hello world").unwrap();
    fs::write(r.join("d/sub/new"), "new").unwrap();
    fs::remove_file(r.join("del")).unwrap();
    fs::remove_dir_all(r.join("deldir")).unwrap();
    fs::remove_dir_all(r.join("op")).unwrap();
    fs::create_dir(r.join("op")).unwrap();
    fs::write(r.join("op/fresh"), "f").unwrap();
    fs::remove_dir_all(r.join("tofile")).unwrap();
    fs::write(r.join("tofile"), "now a file").unwrap();
    fs::remove_file(r.join("todir")).unwrap();
    fs::create_dir(r.join("todir")).unwrap();
    fs::write(r.join("todir/inner"), "i").unwrap();
    fs::set_permissions(r.join("chmodme"), fs::Permissions::from_mode(0o600)).unwrap();
    std::os::unix::fs::chown(r.join("d/sub/deep"), Some(5), Some(6)).unwrap();
    fs::write(r.join("nh1"), "new link").unwrap();
    fs::hard_link(r.join("nh1"), r.join("nh2")).unwrap();
    std::os::unix::fs::symlink("../x", r.join("nl")).unwrap();
    // Same size, possibly the same mtime tick as the copy: must still be seen as changed.
    fs::write(r.join("same"), "bbbb").unwrap();
}

/// (name, entry type, link name) of every entry of a layer tar.
fn entries(tar: &[u8]) -> Vec<(String, tar::EntryType, Option<String>)> {
    let mut a = tar::Archive::new(tar);
    a.entries()
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let name = String::from_utf8_lossy(&e.path_bytes()).into_owned();
            let link = e.link_name().unwrap().map(|l| l.to_string_lossy().into_owned());
            (name, e.header().entry_type(), link)
        })
        .collect()
}

fn diff(s: &dyn Snapshotter, id: &SnapshotId) -> Vec<u8> {
    let mut out = Vec::new();
    s.diff(id, &mut out).unwrap();
    out
}

fn roundtrip(s: Arc<dyn Snapshotter>, dir: &Path) {
    let a = s.prepare(None).unwrap();
    {
        let m = s.mount(&a).unwrap();
        populate_a(m.path());
    }
    s.commit(&a).unwrap();
    let b = s.prepare(Some(&a)).unwrap();
    assert_eq!(s.parent(&b).unwrap(), Some(a.clone()));
    assert_eq!(s.parent(&a).unwrap(), None);
    {
        let m = s.mount(&b).unwrap();
        assert_eq!(fs::read_to_string(m.path().join("d/f")).unwrap(), "hello");
        mutate_b(m.path());
    }
    s.commit(&b).unwrap();
    let mut listed = s.list().unwrap();
    listed.sort();
    let mut want = vec![a.clone(), b.clone()];
    want.sort();
    assert_eq!(listed, want);
    assert!(s.usage(&b).unwrap() > 0);

    let tar_a = diff(&*s, &a);
    let tar_b = diff(&*s, &b);
    assert_eq!(tar_b, diff(&*s, &b), "diff must be deterministic");

    let ea = entries(&tar_a);
    let names_a: BTreeSet<&str> = ea.iter().map(|e| e.0.as_str()).collect();
    for n in ["d/", "d/f", "d/sub/deep", "hl1", "hl2", "link", "fifo", "null", "setuid", "op/sub/old2"] {
        assert!(names_a.contains(n), "{n} missing from base layer: {names_a:?}");
    }
    assert!(ea.iter().any(|e| e.0 == "hl2" && e.1 == tar::EntryType::Link && e.2.as_deref() == Some("hl1")));

    let eb = entries(&tar_b);
    let names_b: BTreeSet<&str> = eb.iter().map(|e| e.0.as_str()).collect();
    for n in [
        "d/f",
        "d/sub/new",
        ".wh.del",
        ".wh.deldir",
        "op/",
        "op/fresh",
        "tofile",
        "todir/",
        "todir/inner",
        "chmodme",
        "d/sub/deep",
        "nh1",
        "nh2",
        "nl",
        "same",
    ] {
        assert!(names_b.contains(n), "{n} missing from layer: {names_b:?}");
    }
    for n in ["keep", "hl1", "hl2", "link", "xfile", "setuid", "deldir/sub/file", "del"] {
        assert!(!names_b.contains(n), "unchanged or deleted {n} in layer: {names_b:?}");
    }
    if s.name() == "overlayfs" {
        assert!(names_b.contains("op/.wh..wh..opq"), "overlay opaque dir: {names_b:?}");
    } else {
        assert!(names_b.contains("op/.wh.old1") && names_b.contains("op/.wh.sub"), "{names_b:?}");
    }
    assert!(eb.iter().any(|e| e.0 == "nh2" && e.1 == tar::EntryType::Link && e.2.as_deref() == Some("nh1")));
    assert!(eb.iter().all(|e| !e.0.starts_with('/') && !e.0.split('/').any(|c| c == "..")));

    // Applying the layers in order onto an empty directory reproduces each snapshot.
    let t = tempfile::tempdir().unwrap();
    let out = t.path().join("root");
    fs::create_dir(&out).unwrap();
    apply_layer(&out, &tar_a[..]).unwrap();
    {
        let m = s.mount(&a).unwrap();
        assert_eq!(tree(&out), tree(m.path()), "applied base layer differs from snapshot");
    }
    let n = apply_layer(&out, &tar_b[..]).unwrap();
    assert!(n >= "hello world".len() as u64);
    {
        let m = s.mount(&b).unwrap();
        assert_eq!(tree(&out), tree(m.path()), "applied child layer differs from snapshot");
    }

    // Committed snapshots mount read-only views, each at its own path.
    let v1 = s.mount(&b).unwrap();
    let v2 = s.mount(&b).unwrap();
    assert_eq!(fs::read_to_string(v1.path().join("same")).unwrap(), "bbbb");
    assert_eq!(fs::read_to_string(v2.path().join("op/fresh")).unwrap(), "f");
    if s.name() == "overlayfs" {
        assert_ne!(v1.path(), v2.path());
        assert!(fs::write(v1.path().join("nope"), "x").is_err(), "committed view must be read-only");
    }
    let (p1, p2) = (v1.path().to_path_buf(), v2.path().to_path_buf());
    let err = s.remove(&b).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Snapshot);
    assert!(err.to_string().contains("mounted"), "{err}");
    drop(v1);
    drop(v2);
    if s.name() == "overlayfs" {
        assert!(!p1.exists() && !p2.exists(), "read-only mount points must be removed");
    }

    let err = s.remove(&a).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Snapshot);
    assert!(err.to_string().contains(&b.0), "{err}");
    s.remove(&b).unwrap();
    s.remove(&a).unwrap();
    assert!(s.list().unwrap().is_empty());
    assert_no_mounts(dir);
}

#[test]
fn overlay_roundtrip() {
    let t = tempfile::tempdir().unwrap();
    let s = open_overlay(t.path()).unwrap();
    assert_eq!(s.name(), "overlayfs");
    roundtrip(s, t.path());
    assert_no_mounts(t.path());
}

#[test]
fn native_roundtrip() {
    let t = tempfile::tempdir().unwrap();
    let s = open_native(t.path()).unwrap();
    assert_eq!(s.name(), "native");
    roundtrip(s, t.path());
}

fn lifecycle_rules(s: Arc<dyn Snapshotter>) {
    let a = s.prepare(None).unwrap();
    let err = s.prepare(Some(&a)).unwrap_err();
    assert!(err.to_string().contains("commit it first"), "{err}");
    let m = s.mount(&a).unwrap();
    let m2 = s.mount(&a).unwrap();
    assert_eq!(m.path(), m2.path(), "writable views of one active snapshot are shared");
    fs::write(m.path().join("f"), "1").unwrap();
    drop(m2);
    let err = s.commit(&a).unwrap_err();
    assert!(err.to_string().contains("mounted writable"), "{err}");
    drop(m);
    s.commit(&a).unwrap();
    assert!(s.commit(&a).is_err());
    let bogus = SnapshotId("../../etc".into());
    assert_eq!(s.mount(&bogus).unwrap_err().kind(), ErrorKind::Snapshot);
    assert_eq!(s.remove(&SnapshotId("0123456789abcdef".into())).unwrap_err().kind(), ErrorKind::Snapshot);
    let c = s.prepare(Some(&a)).unwrap();
    assert!(s.remove(&a).is_err());
    // Concurrent read-only views of one committed snapshot, from several threads.
    std::thread::scope(|sc| {
        for _ in 0..8 {
            let s = &s;
            let a = &a;
            sc.spawn(move || {
                for _ in 0..5 {
                    let v = s.mount(a).unwrap();
                    assert_eq!(fs::read_to_string(v.path().join("f")).unwrap(), "1");
                }
            });
        }
    });
    s.remove(&c).unwrap();
    s.remove(&a).unwrap();
}

#[test]
fn overlay_lifecycle_rules() {
    let t = tempfile::tempdir().unwrap();
    lifecycle_rules(open_overlay(t.path()).unwrap());
    assert_no_mounts(t.path());
}

#[test]
fn native_lifecycle_rules() {
    let t = tempfile::tempdir().unwrap();
    lifecycle_rules(open_native(t.path()).unwrap());
}

#[test]
fn overlay_deep_chain_flattens_and_diffs_stay_exact() {
    let t = tempfile::tempdir().unwrap();
    let s = open_overlay(t.path()).unwrap();
    let mut parent: Option<SnapshotId> = None;
    let mut ids = Vec::new();
    for i in 0..120 {
        let id = s.prepare(parent.as_ref()).unwrap();
        {
            let m = s.mount(&id).unwrap();
            let r = m.path();
            fs::write(r.join(format!("layer{i}")), format!("{i}")).unwrap();
            fs::write(r.join("shared"), format!("v{i}")).unwrap();
            if i > 0 {
                fs::remove_file(r.join(format!("tmp{}", i - 1))).unwrap();
            }
            fs::write(r.join(format!("tmp{i}")), "t").unwrap();
        }
        s.commit(&id).unwrap();
        ids.push(id.clone());
        parent = Some(id);
    }
    let top = parent.unwrap();
    // The on-disk layout is documented (kiln::snapshot): flattened snapshots carry a `base` file.
    let flattened = ids.iter().filter(|id| t.path().join(&id.0).join("base").exists()).count();
    assert!((2..=4).contains(&flattened), "120 layers must be cut into chains of <= 40, got {flattened} cuts");
    {
        let m = s.mount(&top).unwrap();
        for i in 0..120 {
            assert_eq!(fs::read_to_string(m.path().join(format!("layer{i}"))).unwrap(), format!("{i}"));
        }
        assert_eq!(fs::read_to_string(m.path().join("shared")).unwrap(), "v119");
        let tmps: Vec<_> = fs::read_dir(m.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.starts_with("tmp"))
            .collect();
        assert_eq!(tmps, vec!["tmp119".to_owned()]);
    }
    // Every layer's diff, flattened or not, holds exactly its own changes.
    let out = t.path().join("applied");
    fs::create_dir(&out).unwrap();
    for (i, id) in ids.iter().enumerate() {
        let tar = diff(&*s, id);
        let names: BTreeSet<String> = entries(&tar).into_iter().map(|e| e.0).collect();
        let mut want: BTreeSet<String> = [format!("layer{i}"), "shared".into(), format!("tmp{i}")].into();
        if i > 0 {
            want.insert(format!(".wh.tmp{}", i - 1));
        }
        assert_eq!(names, want, "layer {i}");
        apply_layer(&out, &tar[..]).unwrap();
    }
    {
        let m = s.mount(&top).unwrap();
        assert_eq!(tree(&out), tree(m.path()));
    }
    // An active child of the deep top also mounts writable.
    let child = s.prepare(Some(&top)).unwrap();
    {
        let m = s.mount(&child).unwrap();
        fs::write(m.path().join("layer0"), "changed").unwrap();
    }
    let names: Vec<String> = entries(&diff(&*s, &child)).into_iter().map(|e| e.0).collect();
    assert_eq!(names, vec!["layer0".to_owned()]);
    s.remove(&child).unwrap();
    for id in ids.iter().rev() {
        s.remove(id).unwrap();
    }
    assert_no_mounts(t.path());
}

#[test]
fn overlay_reopen_cleans_stale_mounts() {
    let t = tempfile::tempdir().unwrap();
    let s = open_overlay(t.path()).unwrap();
    let a = s.prepare(None).unwrap();
    std::mem::forget(s.mount(&a).unwrap());
    fs::create_dir(t.path().join(".tmp-0123456789abcdef")).unwrap();
    assert!(!mounts_under(t.path()).is_empty());
    // A crashed process leaves mounts and half-created entries behind; reopening cleans them.
    let s2 = open_overlay(t.path()).unwrap();
    assert_no_mounts(t.path());
    assert_eq!(s2.list().unwrap(), vec![a.clone()]);
    assert!(!t.path().join(".tmp-0123456789abcdef").exists());
    s2.remove(&a).unwrap();
}

#[test]
fn overlay_open_fails_clearly_where_overlay_cannot_work() {
    // An upper dir on overlayfs itself is refused by the kernel: the probe must report it.
    let t = tempfile::tempdir().unwrap();
    let s = open_overlay(&t.path().join("outer")).unwrap();
    let a = s.prepare(None).unwrap();
    s.commit(&a).unwrap();
    let b = s.prepare(Some(&a)).unwrap();
    {
        let m = s.mount(&b).unwrap();
        let err = open_overlay(&m.path().join("inner")).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Snapshot);
        assert!(err.to_string().contains("overlayfs is not usable"), "{err}");
    }
    s.remove(&b).unwrap();
    s.remove(&a).unwrap();
    assert_no_mounts(t.path());
}
