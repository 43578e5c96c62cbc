//! The copy action on real directories: BuildKit FileActionCopy semantics.

use kiln::fileops::{copy, CopyOptions, Owner};
use kiln::ErrorKind;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

struct Roots {
    _t: tempfile::TempDir,
    src: std::path::PathBuf,
    dst: std::path::PathBuf,
}

/// src: /f.txt (0640, mtime 1e9), /dir/{a.txt,b.log,sub/c.txt,link->a.txt}, /hl1 + /dir/hl2 hardlinked
fn roots() -> Roots {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    let dst = t.path().join("dst");
    fs::create_dir_all(src.join("dir/sub")).unwrap();
    fs::create_dir(&dst).unwrap();
    fs::write(src.join("f.txt"), "file").unwrap();
    fs::set_permissions(src.join("f.txt"), fs::Permissions::from_mode(0o640)).unwrap();
    fs::write(src.join("dir/a.txt"), "a").unwrap();
    fs::write(src.join("dir/b.log"), "b").unwrap();
    fs::write(src.join("dir/sub/c.txt"), "c").unwrap();
    std::os::unix::fs::symlink("a.txt", src.join("dir/link")).unwrap();
    fs::set_permissions(src.join("dir/sub"), fs::Permissions::from_mode(0o700)).unwrap();
    std::os::unix::fs::chown(src.join("dir/a.txt"), Some(1234), Some(4321)).unwrap();
    let ts = filetime(1_000_000_000);
    for p in ["f.txt", "dir/a.txt", "dir/sub", "dir"] {
        set_mtime(&src.join(p), ts);
    }
    Roots { _t: t, src, dst }
}

fn filetime(secs: i64) -> i64 {
    secs
}

fn set_mtime(p: &Path, secs: i64) {
    let c = std::ffi::CString::new(p.to_str().unwrap()).unwrap();
    let ts = [libc::timespec { tv_sec: secs, tv_nsec: 0 }, libc::timespec { tv_sec: secs, tv_nsec: 0 }];
    // SAFETY: c is a valid NUL-terminated path and ts holds two timespecs, as utimensat requires.
    let r = unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), ts.as_ptr(), libc::AT_SYMLINK_NOFOLLOW) };
    assert_eq!(r, 0);
}

fn meta(p: &Path) -> fs::Metadata {
    fs::symlink_metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn tree(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    fn walk(base: &Path, d: &Path, out: &mut Vec<String>) {
        let mut ents: Vec<_> = fs::read_dir(d).unwrap().map(|e| e.unwrap().path()).collect();
        ents.sort();
        for p in ents {
            let rel = p.strip_prefix(base).unwrap().to_str().unwrap().to_owned();
            let m = fs::symlink_metadata(&p).unwrap();
            if m.is_dir() {
                out.push(format!("{rel}/"));
                walk(base, &p, out);
            } else {
                out.push(rel);
            }
        }
    }
    walk(root, root, &mut out);
    out
}

fn o() -> CopyOptions {
    CopyOptions::default()
}

#[test]
fn file_to_file_preserves_metadata() {
    let r = roots();
    copy(&r.src, "/f.txt", &r.dst, "/g.txt", &o()).unwrap();
    let m = meta(&r.dst.join("g.txt"));
    assert_eq!(fs::read(r.dst.join("g.txt")).unwrap(), b"file");
    assert_eq!((m.mode() & 0o7777, m.mtime()), (0o640, 1_000_000_000));
    // overwrite an existing file
    fs::write(r.src.join("f.txt"), "new").unwrap();
    copy(&r.src, "f.txt", &r.dst, "g.txt", &o()).unwrap();
    assert_eq!(fs::read(r.dst.join("g.txt")).unwrap(), b"new");
}

#[test]
fn file_into_dir() {
    let r = roots();
    copy(&r.src, "/f.txt", &r.dst, "/out/", &o()).unwrap();
    assert_eq!(fs::read(r.dst.join("out/f.txt")).unwrap(), b"file");
    // existing dir without trailing slash also means "into"
    copy(&r.src, "/f.txt", &r.dst, "/out", &CopyOptions { mode: Some(0o600), ..o() }).unwrap();
    assert_eq!(meta(&r.dst.join("out/f.txt")).mode() & 0o777, 0o600);
    assert_eq!(tree(&r.dst), ["out/", "out/f.txt"]);
}

#[test]
fn dir_to_new_dir_and_into_existing() {
    let r = roots();
    copy(&r.src, "/dir", &r.dst, "/new", &o()).unwrap();
    assert_eq!(tree(&r.dst), ["new/", "new/a.txt", "new/b.log", "new/link", "new/sub/", "new/sub/c.txt"]);
    assert_eq!(fs::read_link(r.dst.join("new/link")).unwrap().to_str().unwrap(), "a.txt");
    assert_eq!(meta(&r.dst.join("new/sub")).mode() & 0o777, 0o700);
    assert_eq!(meta(&r.dst.join("new")).mtime(), 1_000_000_000);
    assert_eq!(meta(&r.dst.join("new/sub")).mtime(), 1_000_000_000);
    let a = meta(&r.dst.join("new/a.txt"));
    assert_eq!((a.uid(), a.gid()), (1234, 4321));
    // the destination exists now: the dir goes inside it
    copy(&r.src, "/dir", &r.dst, "/new", &o()).unwrap();
    assert!(r.dst.join("new/dir/sub/c.txt").exists());
}

#[test]
fn dir_contents() {
    let r = roots();
    let opts = CopyOptions { dir_copy_contents: true, ..o() };
    copy(&r.src, "/dir", &r.dst, "/c", &opts).unwrap();
    assert_eq!(tree(&r.dst), ["c/", "c/a.txt", "c/b.log", "c/link", "c/sub/", "c/sub/c.txt"]);
    // into an existing dir: merged, the existing dir keeps its own metadata
    fs::create_dir(r.dst.join("e")).unwrap();
    fs::set_permissions(r.dst.join("e"), fs::Permissions::from_mode(0o701)).unwrap();
    fs::write(r.dst.join("e/old"), "o").unwrap();
    copy(&r.src, "/dir/", &r.dst, "/e/", &opts).unwrap();
    assert!(r.dst.join("e/old").exists() && r.dst.join("e/sub/c.txt").exists());
    assert_eq!(meta(&r.dst.join("e")).mode() & 0o777, 0o701);
    // `/.` suffix on the source also copies contents
    copy(&r.src, "/dir/.", &r.dst, "/f/", &o()).unwrap();
    assert!(r.dst.join("f/a.txt").exists() && !r.dst.join("f/dir").exists());
}

#[test]
fn wildcards() {
    let r = roots();
    let w = CopyOptions { allow_wildcard: true, ..o() };
    copy(&r.src, "/dir/*.txt", &r.dst, "/w/", &w).unwrap();
    assert_eq!(tree(&r.dst), ["w/", "w/a.txt"]);
    copy(&r.src, "/d?r/[ab].*", &r.dst, "/w2/", &w).unwrap();
    assert_eq!(tree(&r.dst.join("w2")), ["a.txt", "b.log"]);
    // wildcard matching a directory copies the directory under its name
    copy(&r.src, "/di*", &r.dst, "/w3/", &w).unwrap();
    assert!(r.dst.join("w3/dir/sub/c.txt").exists());
    // empty wildcard
    let e = copy(&r.src, "/*.none", &r.dst, "/w4/", &w).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::FileOp);
    assert!(e.to_string().starts_with("copy /*.none /w4/: source /*.none not found"), "{e}");
    copy(&r.src, "/*.none", &r.dst, "/w4/", &CopyOptions { allow_empty_wildcard: true, ..w.clone() }).unwrap();
    assert!(!r.dst.join("w4").exists());
    // without allow_wildcard a star is a literal name
    let e = copy(&r.src, "/dir/*.txt", &r.dst, "/w5/", &o()).unwrap_err();
    assert!(e.to_string().contains("not found"), "{e}");
}

#[test]
fn missing_source_error_names_action_and_path() {
    let r = roots();
    let e = copy(&r.src, "/a", &r.dst, "/b", &o()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::FileOp);
    assert_eq!(e.to_string(), "copy /a /b: source /a not found");
}

#[test]
fn include_exclude() {
    let r = roots();
    let opts = CopyOptions { exclude: vec!["*.log".into(), "sub".into()], dir_copy_contents: true, ..o() };
    copy(&r.src, "/dir", &r.dst, "/x", &opts).unwrap();
    assert_eq!(tree(&r.dst), ["x/", "x/a.txt", "x/link"]);
    let opts = CopyOptions { include: vec!["**/*.txt".into()], dir_copy_contents: true, ..o() };
    copy(&r.src, "/dir", &r.dst, "/y", &opts).unwrap();
    assert_eq!(tree(&r.dst.join("y")), ["a.txt", "sub/", "sub/c.txt"]);
    // parents created for an included file keep their source metadata
    assert_eq!(meta(&r.dst.join("y/sub")).mode() & 0o777, 0o700);
    let opts = CopyOptions { exclude: vec!["sub".into(), "!sub/c.txt".into(), "*.*".into()], ..o() };
    copy(&r.src, "/dir", &r.dst, "/z", &opts).unwrap();
    assert_eq!(tree(&r.dst.join("z")), ["link", "sub/", "sub/c.txt"]);
    let e = copy(&r.src, "/dir", &r.dst, "/q", &CopyOptions { exclude: vec!["[".into()], ..o() }).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::FileOp);
    assert!(e.to_string().contains("\"[\""), "{e}");
}

#[test]
fn follow_symlinks_applies_to_source_path_only() {
    let r = roots();
    fs::write(r.src.join("target.txt"), "tgt").unwrap();
    std::os::unix::fs::symlink("/target.txt", r.src.join("top")).unwrap();
    copy(&r.src, "/top", &r.dst, "/nofollow", &o()).unwrap();
    assert!(meta(&r.dst.join("nofollow")).file_type().is_symlink());
    copy(&r.src, "/top", &r.dst, "/follow", &CopyOptions { follow_symlinks: true, ..o() }).unwrap();
    assert!(meta(&r.dst.join("follow")).is_file());
    assert_eq!(fs::read(r.dst.join("follow")).unwrap(), b"tgt");
    // a followed link copied into a dir keeps the link's name
    copy(&r.src, "/top", &r.dst, "/d/", &CopyOptions { follow_symlinks: true, ..o() }).unwrap();
    assert_eq!(fs::read(r.dst.join("d/top")).unwrap(), b"tgt");
    // symlinks inside a copied dir stay symlinks even with follow_symlinks
    copy(&r.src, "/dir", &r.dst, "/dd", &CopyOptions { follow_symlinks: true, ..o() }).unwrap();
    assert!(meta(&r.dst.join("dd/link")).file_type().is_symlink());
}

#[test]
fn owner_mode_timestamp_overrides() {
    let r = roots();
    let opts = CopyOptions {
        owner: Some(Owner { uid: 1000, gid: 2000 }),
        mode: Some(0o444),
        timestamp: Some(1_234_567_890_000_000_001),
        create_dest_path: true,
        ..o()
    };
    copy(&r.src, "/dir", &r.dst, "/p/q/r", &opts).unwrap();
    for p in ["p", "p/q", "p/q/r", "p/q/r/a.txt", "p/q/r/sub", "p/q/r/sub/c.txt", "p/q/r/link"] {
        let m = meta(&r.dst.join(p));
        assert_eq!((m.uid(), m.gid()), (1000, 2000), "{p}");
        assert_eq!(m.mtime(), 1_234_567_890, "{p}");
    }
    for p in ["p/q/r", "p/q/r/a.txt", "p/q/r/sub"] {
        assert_eq!(meta(&r.dst.join(p)).mode() & 0o777, 0o444, "{p}");
    }
    assert_eq!(meta(&r.dst.join("p/q/r/a.txt")).mtime_nsec(), 1);
}

#[test]
fn create_dest_path() {
    let r = roots();
    let e = copy(&r.src, "/f.txt", &r.dst, "/a/b/c.txt", &o()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::FileOp);
    assert!(e.to_string().contains("/a/b does not exist"), "{e}");
    assert!(!r.dst.join("a").exists());
    copy(&r.src, "/f.txt", &r.dst, "/a/b/c.txt", &CopyOptions { create_dest_path: true, ..o() }).unwrap();
    assert_eq!(fs::read(r.dst.join("a/b/c.txt")).unwrap(), b"file");
    assert_eq!(meta(&r.dst.join("a")).mode() & 0o777, 0o755);
}

#[test]
fn hardlinks_preserved_within_copy() {
    let r = roots();
    fs::hard_link(r.src.join("dir/a.txt"), r.src.join("dir/sub/hard")).unwrap();
    copy(&r.src, "/dir", &r.dst, "/h", &o()).unwrap();
    let a = meta(&r.dst.join("h/a.txt"));
    let b = meta(&r.dst.join("h/sub/hard"));
    assert_eq!(a.ino(), b.ino());
    assert_eq!(a.nlink(), 2);
    assert_ne!(a.ino(), meta(&r.src.join("dir/a.txt")).ino());
}

#[test]
fn type_conflicts() {
    let r = roots();
    fs::create_dir_all(r.dst.join("x/a.txt")).unwrap();
    let e = copy(&r.src, "/dir", &r.dst, "/x", &CopyOptions { dir_copy_contents: true, ..o() }).unwrap_err();
    assert!(e.to_string().contains("cannot replace directory /x/a.txt"), "{e}");
    let opts = CopyOptions { dir_copy_contents: true, always_replace_existing: true, ..o() };
    copy(&r.src, "/dir", &r.dst, "/x", &opts).unwrap();
    assert_eq!(fs::read(r.dst.join("x/a.txt")).unwrap(), b"a");
    fs::write(r.dst.join("y"), "file").unwrap();
    fs::create_dir(r.dst.join("z")).unwrap();
    fs::write(r.dst.join("z/sub"), "file").unwrap();
    let e = copy(&r.src, "/dir", &r.dst, "/z", &CopyOptions { dir_copy_contents: true, ..o() }).unwrap_err();
    assert!(e.to_string().contains("cannot replace non-directory /z/sub"), "{e}");
}

#[test]
fn copy_through_dest_symlink_dir_stays_in_root() {
    // merged-usr style: /lib -> usr/lib in the destination; copying a tree with lib/ writes into usr/lib
    let r = roots();
    fs::create_dir_all(r.src.join("rootfs/lib")).unwrap();
    fs::write(r.src.join("rootfs/lib/x.so"), "so").unwrap();
    fs::create_dir_all(r.dst.join("usr/lib")).unwrap();
    std::os::unix::fs::symlink("usr/lib", r.dst.join("lib")).unwrap();
    copy(&r.src, "/rootfs/", &r.dst, "/", &CopyOptions { dir_copy_contents: true, ..o() }).unwrap();
    assert_eq!(fs::read(r.dst.join("usr/lib/x.so")).unwrap(), b"so");
    assert!(meta(&r.dst.join("lib")).file_type().is_symlink());
}

#[test]
fn copy_onto_itself_keeps_content() {
    let r = roots();
    copy(&r.src, "/f.txt", &r.src, "/f.txt", &o()).unwrap();
    assert_eq!(fs::read(r.src.join("f.txt")).unwrap(), b"file");
}
