//! `apply_layer` safety and whiteout handling on hand-built (including malicious) layer tars.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use kiln::snapshot::apply_layer;
use kiln::ErrorKind;
use tar::{EntryType, Header};

/// One raw tar entry; names and link names are written byte for byte (no sanitising).
struct E<'a> {
    name: &'a str,
    ty: EntryType,
    link: &'a str,
    data: &'a [u8],
}

fn file<'a>(name: &'a str, data: &'a [u8]) -> E<'a> {
    E { name, ty: EntryType::Regular, link: "", data }
}
fn dir(name: &str) -> E<'_> {
    E { name, ty: EntryType::Directory, link: "", data: b"" }
}
fn symlink<'a>(name: &'a str, link: &'a str) -> E<'a> {
    E { name, ty: EntryType::Symlink, link, data: b"" }
}
fn hardlink<'a>(name: &'a str, link: &'a str) -> E<'a> {
    E { name, ty: EntryType::Link, link, data: b"" }
}

fn layer(entries: &[E<'_>]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        let mut h = Header::new_gnu();
        h.set_entry_type(e.ty);
        h.set_mode(if e.ty == EntryType::Directory { 0o755 } else { 0o644 });
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_600_000_000);
        h.set_size(e.data.len() as u64);
        let old = h.as_old_mut();
        old.name[..e.name.len()].copy_from_slice(e.name.as_bytes());
        old.linkname[..e.link.len()].copy_from_slice(e.link.as_bytes());
        h.set_cksum();
        b.append(&h, e.data).unwrap();
    }
    b.into_inner().unwrap()
}

/// Everything under `base` except `root` and its contents: path -> (kind, size, mtime, nlink, content).
fn outside_state(base: &Path, root: &Path) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![base.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p == root {
                continue;
            }
            let m = fs::symlink_metadata(&p).unwrap();
            let content = if m.is_file() { fs::read(&p).unwrap() } else { Vec::new() };
            out.insert(p.clone(), format!("{:o} {} {} {} {:?}", m.mode(), m.len(), m.mtime(), m.nlink(), content));
            if m.is_dir() {
                stack.push(p);
            }
        }
    }
    out
}

struct Fixture {
    _t: tempfile::TempDir,
    base: PathBuf,
    root: PathBuf,
}

fn fixture() -> Fixture {
    let t = tempfile::tempdir().unwrap();
    let base = t.path().join("base");
    let root = base.join("a/b/root");
    fs::create_dir_all(&root).unwrap();
    fs::write(base.join("outside"), "precious").unwrap();
    fs::write(base.join("a/outside"), "precious").unwrap();
    fs::write(base.join("a/b/x"), "precious").unwrap();
    Fixture { _t: t, base, root }
}

fn assert_refused(entries: &[E<'_>], why: &str) {
    let f = fixture();
    let before = outside_state(&f.base, &f.root);
    let err = apply_layer(&f.root, &layer(entries)[..]).expect_err(why);
    assert_eq!(err.kind(), ErrorKind::Snapshot, "{why}: {err}");
    assert_eq!(outside_state(&f.base, &f.root), before, "{why}: something outside root changed");
}

#[test]
fn refuses_parent_dir_components() {
    assert_refused(&[file("../x", b"pwned")], "../x");
    assert_refused(&[file("ok/../../x", b"pwned")], "ok/../../x");
}

#[test]
fn refuses_absolute_escapes() {
    assert_refused(&[file("/abs/../../x", b"pwned")], "/abs/../../x");
}

#[test]
fn refuses_traversing_absolute_symlink() {
    assert_refused(&[symlink("evil", "/etc"), file("evil/passwd", b"pwned")], "evil -> /etc");
    let f = fixture();
    let target = f.base.to_string_lossy().into_owned();
    let before = outside_state(&f.base, &f.root);
    let tar = layer(&[symlink("evil", &target), file("evil/outside", b"pwned")]);
    assert!(apply_layer(&f.root, &tar[..]).is_err());
    assert_eq!(outside_state(&f.base, &f.root), before);
    assert_eq!(fs::read_to_string(f.base.join("outside")).unwrap(), "precious");
}

#[test]
fn refuses_traversing_relative_symlink_out_of_root() {
    assert_refused(&[symlink("a", "../../.."), file("a/x", b"pwned")], "a -> ../../..");
    assert_refused(&[dir("d/"), symlink("d/up", "../.."), file("d/up/x", b"pwned")], "d/up -> ../..");
    assert_refused(&[symlink("l1", "l2"), symlink("l2", "l1"), file("l1/x", b"loop")], "symlink loop");
    // Whiteouts must not delete through an escaping symlink either.
    assert_refused(&[symlink("a", "../.."), file("a/.wh.x", b"")], "whiteout via a -> ../..");
}

#[test]
fn refuses_existing_symlink_out_of_root() {
    let f = fixture();
    std::os::unix::fs::symlink(&f.base, f.root.join("pre")).unwrap();
    let before = outside_state(&f.base, &f.root);
    assert!(apply_layer(&f.root, &layer(&[file("pre/outside", b"pwned")])[..]).is_err());
    assert_eq!(outside_state(&f.base, &f.root), before);
}

#[test]
fn refuses_hardlink_outside() {
    assert_refused(&[hardlink("h", "../outside")], "hardlink ../outside");
    assert_refused(&[hardlink("h", "/../../outside")], "hardlink /../../outside");
    assert_refused(&[symlink("up", "../.."), hardlink("h", "up/outside")], "hardlink via escaping symlink");
}

#[test]
fn replaces_final_symlinks_instead_of_following_them() {
    let f = fixture();
    std::os::unix::fs::symlink(f.base.join("outside"), f.root.join("s")).unwrap();
    std::os::unix::fs::symlink(&f.base, f.root.join("sd")).unwrap();
    let before = outside_state(&f.base, &f.root);
    let tar = layer(&[file("s", b"inside"), dir("sd/"), hardlink("h", "s")]);
    apply_layer(&f.root, &tar[..]).unwrap();
    assert_eq!(outside_state(&f.base, &f.root), before);
    assert_eq!(fs::read_to_string(f.root.join("s")).unwrap(), "inside");
    assert!(fs::symlink_metadata(f.root.join("sd")).unwrap().is_dir());
    assert_eq!(fs::metadata(f.root.join("h")).unwrap().ino(), fs::metadata(f.root.join("s")).unwrap().ino());
}

#[test]
fn follows_symlinks_that_stay_inside() {
    let f = fixture();
    let tar = layer(&[dir("usr/"), dir("usr/lib/"), symlink("lib", "usr/lib"), file("lib/libc.so", b"elf")]);
    let n = apply_layer(&f.root, &tar[..]).unwrap();
    assert_eq!(n, 3);
    assert_eq!(fs::read_to_string(f.root.join("usr/lib/libc.so")).unwrap(), "elf");
    assert!(fs::symlink_metadata(f.root.join("lib")).unwrap().file_type().is_symlink());
}

#[test]
fn whiteouts_and_opaque_dirs() {
    let f = fixture();
    let r = &f.root;
    apply_layer(
        r,
        &layer(&[
            file("a", b"a"),
            dir("d/"),
            file("d/x", b"x"),
            file("d/y", b"y"),
            dir("o/"),
            file("o/old", b"old"),
            dir("o/sub/"),
            file("o/sub/z", b"z"),
            dir("gone/"),
            file("gone/inner", b"i"),
        ])[..],
    )
    .unwrap();
    let tar = layer(&[
        file(".wh.a", b""),
        file("d/.wh.x", b""),
        file(".wh.gone", b""),
        dir("o/"),
        file("o/new", b"new"),
        file("o/.wh..wh..opq", b""),
        // Whiteouts only hide lower layers: an entry of this same layer survives.
        file("n", b"n"),
        file(".wh.n", b""),
        // Whiteout of something that never existed is fine.
        file(".wh.never", b""),
    ]);
    apply_layer(r, &tar[..]).unwrap();
    assert!(!r.join("a").exists());
    assert!(!r.join("d/x").exists());
    assert_eq!(fs::read_to_string(r.join("d/y")).unwrap(), "y");
    assert!(!r.join("gone").exists());
    let mut o: Vec<_> = fs::read_dir(r.join("o")).unwrap().map(|e| e.unwrap().file_name()).collect();
    o.sort();
    assert_eq!(o, vec!["new"]);
    assert_eq!(fs::read_to_string(r.join("n")).unwrap(), "n");
    assert!(!r.join(".wh.a").exists() && !r.join("o/.wh..wh..opq").exists());
    // Directory mtimes come from the layer even though children were written afterwards.
    assert_eq!(fs::metadata(r.join("o")).unwrap().mtime(), 1_600_000_000);
}

#[test]
fn type_changes_replace_entries() {
    let f = fixture();
    let r = &f.root;
    apply_layer(r, &layer(&[dir("x/"), file("x/child", b"c"), file("y", b"y")])[..]).unwrap();
    apply_layer(r, &layer(&[file("x", b"file now"), dir("y/"), file("y/inner", b"i")])[..]).unwrap();
    assert_eq!(fs::read_to_string(r.join("x")).unwrap(), "file now");
    assert_eq!(fs::read_to_string(r.join("y/inner")).unwrap(), "i");
}

#[test]
fn long_names_and_ownership() {
    let f = fixture();
    let long = format!("{}/{}", "d".repeat(120), "f".repeat(150));
    let mut b = tar::Builder::new(Vec::new());
    let mut h = Header::new_gnu();
    h.set_entry_type(EntryType::Regular);
    h.set_mode(0o4750);
    h.set_uid(4242);
    h.set_gid(4343);
    h.set_mtime(1_500_000_000);
    h.set_size(2);
    b.append_data(&mut h, &long, &b"hi"[..]).unwrap();
    let tar = b.into_inner().unwrap();
    apply_layer(&f.root, &tar[..]).unwrap();
    let m = fs::symlink_metadata(f.root.join(&long)).unwrap();
    assert_eq!((m.uid(), m.gid(), m.mode() & 0o7777, m.mtime()), (4242, 4343, 0o4750, 1_500_000_000));
}

#[test]
fn existing_directories_the_layer_does_not_name_keep_their_times() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("root");
    fs::create_dir_all(root.join("d")).unwrap();
    fs::write(root.join("d/f"), "old").unwrap();
    fs::write(root.join("d/gone"), "x").unwrap();
    let old = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000);
    for p in [root.join("d"), root.clone()] {
        fs::File::open(&p).unwrap().set_modified(old).unwrap();
    }
    // The layer replaces d/f, adds d/new and whites out d/gone without an entry for d itself.
    apply_layer(&root, &layer(&[file("d/f", b"new"), file("d/new", b"n"), file("d/.wh.gone", b"")])[..]).unwrap();
    assert_eq!(fs::read_to_string(root.join("d/f")).unwrap(), "new");
    assert!(!root.join("d/gone").exists());
    assert_eq!(fs::metadata(root.join("d")).unwrap().modified().unwrap(), old);
}
