//! Integration tests of the local and tar exporters.

use kiln::export::{export_local, export_tar};
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::process::Command;

fn sample_tree(root: &std::path::Path) {
    fs::create_dir_all(root.join("bin")).unwrap();
    fs::write(root.join("bin/tool"), b"#!/bin/sh\necho hi\n").unwrap();
    fs::set_permissions(root.join("bin/tool"), fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::symlink("tool", root.join("bin/alias")).unwrap();
    std::os::unix::fs::symlink("/does/not/exist", root.join("dangling")).unwrap();
    std::os::unix::fs::symlink("bin", root.join("bindir")).unwrap();
    std::os::unix::fs::chown(root.join("bin/tool"), Some(1234), Some(5678)).unwrap();
}

#[test]
fn export_local_copies_symlinks_as_symlinks() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    sample_tree(&src);
    let dest = dir.path().join("out/nested");
    export_local(&src, &dest).unwrap();
    for (link, target) in [("bin/alias", "tool"), ("dangling", "/does/not/exist"), ("bindir", "bin")] {
        let m = fs::symlink_metadata(dest.join(link)).unwrap();
        assert!(m.file_type().is_symlink(), "{link} must stay a symlink");
        assert_eq!(fs::read_link(dest.join(link)).unwrap().to_str().unwrap(), target);
    }
    let m = fs::metadata(dest.join("bin/tool")).unwrap();
    assert_eq!(m.mode() & 0o7777, 0o755);
    assert_eq!((m.uid(), m.gid()), (1234, 5678), "ownership kept when root");
    let sm = fs::metadata(src.join("bin/tool")).unwrap();
    assert_eq!((m.mtime(), m.mtime_nsec()), (sm.mtime(), sm.mtime_nsec()));
    // Exporting again over the result works and replaces files.
    fs::write(src.join("bin/tool"), b"v2").unwrap();
    export_local(&src, &dest).unwrap();
    assert_eq!(fs::read(dest.join("bin/tool")).unwrap(), b"v2");
}

#[test]
fn export_tar_extracts_with_tar() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    sample_tree(&src);
    let out = dir.path().join("out.tar");
    export_tar(&src, &out).unwrap();
    let x = dir.path().join("x");
    fs::create_dir(&x).unwrap();
    let st = Command::new("tar").arg("-xpf").arg(&out).arg("-C").arg(&x).status().unwrap();
    assert!(st.success());
    assert_eq!(fs::read_link(x.join("bin/alias")).unwrap().to_str().unwrap(), "tool");
    assert_eq!(fs::read(x.join("bin/tool")).unwrap(), fs::read(src.join("bin/tool")).unwrap());
    assert_eq!(fs::metadata(x.join("bin/tool")).unwrap().mode() & 0o7777, 0o755);
    let listing = Command::new("tar").arg("-tvf").arg(&out).output().unwrap();
    let text = String::from_utf8_lossy(&listing.stdout);
    assert!(text.contains("1234/5678"), "owner kept in tar: {text}");
}
