//! mkdir, mkfile, rm and symlink on real directories.

use kiln::fileops::{mkdir, mkfile, rm, symlink, Owner};
use kiln::ErrorKind;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

const TS: i64 = 1_600_000_000_123_456_789;

fn mode(p: &Path) -> u32 {
    fs::symlink_metadata(p).unwrap().mode() & 0o7777
}

#[test]
fn mkdir_creates_with_mode_owner_and_time() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path();
    mkdir(root, "/a", 0o750, false, Some(Owner { uid: 1000, gid: 1001 }), Some(TS)).unwrap();
    let m = fs::metadata(root.join("a")).unwrap();
    assert!(m.is_dir());
    assert_eq!(m.mode() & 0o7777, 0o750);
    assert_eq!((m.uid(), m.gid()), (1000, 1001));
    assert_eq!((m.mtime(), m.mtime_nsec()), (1_600_000_000, 123_456_789));
    // existing dir is fine and unchanged
    mkdir(root, "a", 0o700, false, None, None).unwrap();
    assert_eq!(mode(&root.join("a")), 0o750);
}

#[test]
fn mkdir_defaults_to_root_owner_even_under_setgid_dir() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path();
    fs::create_dir(root.join("g")).unwrap();
    std::os::unix::fs::chown(root.join("g"), Some(0), Some(4242)).unwrap();
    fs::set_permissions(root.join("g"), fs::Permissions::from_mode(0o2775)).unwrap();
    mkdir(root, "/g/sub", 0o755, false, None, None).unwrap();
    mkfile(root, "/g/f", 0o644, b"x", None, None).unwrap();
    for p in ["g/sub", "g/f"] {
        let m = fs::metadata(root.join(p)).unwrap();
        assert_eq!((m.uid(), m.gid()), (0, 0), "{p}");
    }
}

#[test]
fn mkdir_parents() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path();
    let e = mkdir(root, "/x/y/z", 0o755, false, None, None).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::FileOp);
    assert!(e.to_string().contains("mkdir /x/y/z") && e.to_string().contains("/x/y does not exist"), "{e}");
    mkdir(root, "/x/y/z", 0o711, true, Some(Owner { uid: 7, gid: 8 }), Some(TS)).unwrap();
    for p in ["x", "x/y", "x/y/z"] {
        let m = fs::metadata(root.join(p)).unwrap();
        assert_eq!(m.mode() & 0o777, 0o711, "{p}");
        assert_eq!((m.uid(), m.gid(), m.mtime()), (7, 8, 1_600_000_000), "{p}");
    }
}

#[test]
fn mkdir_over_file_fails() {
    let t = tempfile::tempdir().unwrap();
    fs::write(t.path().join("f"), "x").unwrap();
    let e = mkdir(t.path(), "/f", 0o755, true, None, None).unwrap_err();
    assert!(e.to_string().contains("not a directory"), "{e}");
    assert_eq!(e.kind(), ErrorKind::FileOp);
}

#[test]
fn mkfile_writes_and_replaces() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path();
    mkfile(root, "/f", 0o640, b"hello", Some(Owner { uid: 5, gid: 6 }), Some(TS)).unwrap();
    let m = fs::metadata(root.join("f")).unwrap();
    assert_eq!(fs::read(root.join("f")).unwrap(), b"hello");
    assert_eq!((m.mode() & 0o7777, m.uid(), m.gid(), m.mtime()), (0o640, 5, 6, 1_600_000_000));
    mkfile(root, "f", 0o600, b"bye", None, None).unwrap();
    assert_eq!(fs::read(root.join("f")).unwrap(), b"bye");
    // As BuildKit (os.WriteFile): an existing file keeps its mode and owner.
    assert_eq!(mode(&root.join("f")), 0o640);
    assert_eq!(fs::metadata(root.join("f")).unwrap().uid(), 5);
    // no temporary files left behind
    assert_eq!(fs::read_dir(root).unwrap().count(), 1);
}

#[test]
fn mkfile_errors() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path();
    let e = mkfile(root, "/nodir/f", 0o644, b"", None, None).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::FileOp);
    assert!(e.to_string().contains("mkfile /nodir/f") && e.to_string().contains("/nodir does not exist"), "{e}");
    fs::create_dir(root.join("d")).unwrap();
    let e = mkfile(root, "/d", 0o644, b"", None, None).unwrap_err();
    assert!(e.to_string().contains("is a directory"), "{e}");
    assert!(mkfile(root, "/", 0o644, b"", None, None).is_err());
}

#[test]
fn mkfile_through_symlink_writes_target_inside_root() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path();
    fs::create_dir(root.join("real")).unwrap();
    std::os::unix::fs::symlink("/real", root.join("dirlink")).unwrap();
    std::os::unix::fs::symlink("real/target", root.join("filelink")).unwrap();
    mkfile(root, "/dirlink/a", 0o644, b"1", None, None).unwrap();
    mkfile(root, "/filelink", 0o644, b"2", None, None).unwrap();
    assert_eq!(fs::read(root.join("real/a")).unwrap(), b"1");
    assert_eq!(fs::read(root.join("real/target")).unwrap(), b"2");
    assert!(fs::symlink_metadata(root.join("filelink")).unwrap().file_type().is_symlink());
}

#[test]
fn rm_variants() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path();
    fs::create_dir_all(root.join("d/sub")).unwrap();
    fs::write(root.join("d/sub/f"), "x").unwrap();
    fs::write(root.join("a.txt"), "x").unwrap();
    fs::write(root.join("b.txt"), "x").unwrap();
    fs::write(root.join("c.log"), "x").unwrap();
    fs::create_dir(root.join("keep")).unwrap();
    fs::write(root.join("keep/k"), "x").unwrap();
    std::os::unix::fs::symlink("/keep", root.join("link")).unwrap();

    rm(root, "/d", false, false).unwrap();
    assert!(!root.join("d").exists());

    // As BuildKit v0.11.6 (os.RemoveAll): nothing to remove is not an error.
    rm(root, "/d", false, false).unwrap();
    rm(root, "/d", true, false).unwrap();

    rm(root, "/*.txt", false, true).unwrap();
    assert!(!root.join("a.txt").exists() && !root.join("b.txt").exists() && root.join("c.log").exists());
    rm(root, "/*.txt", false, true).unwrap();
    rm(root, "/*.txt", true, true).unwrap();
    // without allow_wildcard the star is literal
    rm(root, "/*.log", false, false).unwrap();
    assert!(root.join("c.log").exists());

    // a symlink is removed, never followed
    rm(root, "/link", false, false).unwrap();
    assert!(fs::symlink_metadata(root.join("link")).is_err());
    assert!(root.join("keep/k").exists());

    assert!(rm(root, "/", false, false).is_err());
    assert!(root.join("keep").exists());
}

#[test]
fn symlink_creates_and_refuses_existing() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path();
    symlink(root, "/etc/passwd", "/pw", Some(Owner { uid: 3, gid: 4 }), Some(TS)).unwrap();
    let m = fs::symlink_metadata(root.join("pw")).unwrap();
    assert!(m.file_type().is_symlink());
    assert_eq!(fs::read_link(root.join("pw")).unwrap().to_str().unwrap(), "/etc/passwd");
    assert_eq!((m.uid(), m.gid(), m.mtime()), (3, 4, 1_600_000_000));
    let e = symlink(root, "x", "/pw", None, None).unwrap_err();
    assert!(e.to_string().contains("already exists"), "{e}");
    let e = symlink(root, "x", "/no/such/link", None, None).unwrap_err();
    assert!(e.to_string().contains("does not exist"), "{e}");
    assert_eq!(e.kind(), ErrorKind::FileOp);
}
