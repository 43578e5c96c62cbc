//! Content checksums of local sources and copy selections, and local-source syncing.

use kiln::fileops::{checksum_selection, CopyOptions};
use kiln::source::local::{checksum_local, sync_local, LocalSource};
use kiln::ErrorKind;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

fn ctx() -> tempfile::TempDir {
    let t = tempfile::tempdir().unwrap();
    let r = t.path();
    fs::create_dir_all(r.join("app/sub")).unwrap();
    fs::create_dir_all(r.join("ignored")).unwrap();
    fs::write(r.join("app/main.c"), "int main;").unwrap();
    fs::write(r.join("app/sub/x.h"), "#define X").unwrap();
    fs::write(r.join("ignored/big.bin"), vec![7u8; 3 << 20]).unwrap();
    fs::write(r.join("notes.tmp"), "tmp").unwrap();
    std::os::unix::fs::symlink("app/main.c", r.join("link")).unwrap();
    t
}

fn local(dir: &Path, exclude: &[&str]) -> LocalSource {
    LocalSource {
        dir: dir.to_path_buf(),
        exclude: exclude.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

#[test]
fn checksum_local_tracks_selected_content_only() {
    let t = ctx();
    let src = local(t.path(), &["ignored", "*.tmp"]);
    let d0 = checksum_local(&src).unwrap();
    assert_eq!(checksum_local(&src).unwrap(), d0, "stable");

    fs::write(t.path().join("ignored/big.bin"), "changed").unwrap();
    fs::write(t.path().join("notes.tmp"), "changed").unwrap();
    fs::write(t.path().join("ignored/new"), "new").unwrap();
    assert_eq!(checksum_local(&src).unwrap(), d0, "excluded changes must not matter");

    // mtime alone does not matter
    let f = fs::File::options().write(true).open(t.path().join("app/main.c")).unwrap();
    f.set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(5)).unwrap();
    assert_eq!(checksum_local(&src).unwrap(), d0);

    fs::write(t.path().join("app/main.c"), "int main();").unwrap();
    let d1 = checksum_local(&src).unwrap();
    assert_ne!(d1, d0, "content change");
    fs::set_permissions(t.path().join("app/main.c"), fs::Permissions::from_mode(0o755)).unwrap();
    let d2 = checksum_local(&src).unwrap();
    assert_ne!(d2, d1, "mode change");
    fs::remove_file(t.path().join("link")).unwrap();
    std::os::unix::fs::symlink("app/sub/x.h", t.path().join("link")).unwrap();
    let d3 = checksum_local(&src).unwrap();
    assert_ne!(d3, d2, "symlink target change");
    fs::rename(t.path().join("app/sub/x.h"), t.path().join("app/sub/y.h")).unwrap();
    assert_ne!(checksum_local(&src).unwrap(), d3, "rename");
    // without the exclusion the ignored dir counts
    assert_ne!(checksum_local(&local(t.path(), &[])).unwrap(), checksum_local(&src).unwrap());
}

#[test]
fn checksum_local_missing_dir_is_source_error() {
    let t = tempfile::tempdir().unwrap();
    let missing = t.path().join("nope");
    let e = checksum_local(&local(&missing, &[])).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Source);
    assert!(e.to_string().contains(&missing.display().to_string()), "{e}");
    assert_eq!(sync_local(&local(&missing, &[]), t.path()).unwrap_err().kind(), ErrorKind::Source);
    let e = checksum_local(&local(t.path(), &["[bad"])).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Source);
    assert!(e.to_string().contains("[bad"), "{e}");
}

#[test]
fn sync_local_copies_selection_with_metadata() {
    let t = ctx();
    let dest = tempfile::tempdir().unwrap();
    fs::set_permissions(t.path().join("app/sub/x.h"), fs::Permissions::from_mode(0o600)).unwrap();
    std::os::unix::fs::chown(t.path().join("app/sub/x.h"), Some(1001), Some(1002)).unwrap();
    let f = fs::File::options().write(true).open(t.path().join("app/main.c")).unwrap();
    f.set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000)).unwrap();
    nix::unistd::mkfifo(&t.path().join("fifo"), nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
    let src = local(t.path(), &["ignored"]);
    let n = sync_local(&src, dest.path()).unwrap();
    assert_eq!(n, ("int main;".len() + "#define X".len() + 3) as u64);
    assert!(!dest.path().join("ignored").exists());
    assert!(!dest.path().join("fifo").exists());
    assert_eq!(fs::read_link(dest.path().join("link")).unwrap().to_str().unwrap(), "app/main.c");
    let x = fs::metadata(dest.path().join("app/sub/x.h")).unwrap();
    // Owned by root, as BuildKit's clients send a context (buildctl's resetUIDAndGID).
    assert_eq!((x.mode() & 0o7777, x.uid(), x.gid()), (0o600, 0, 0));
    assert_eq!(fs::metadata(dest.path().join("app/main.c")).unwrap().mtime(), 1_000_000);
    // the synced copy has the same checksum as the source selection
    fs::remove_file(t.path().join("fifo")).unwrap();
    std::os::unix::fs::chown(t.path().join("app/sub/x.h"), Some(0), Some(0)).unwrap();
    assert_eq!(checksum_local(&local(dest.path(), &[])).unwrap(), checksum_local(&src).unwrap());
}

#[test]
fn checksum_selection_is_stable_and_precise() {
    let t = ctx();
    let r = t.path();
    let o = CopyOptions::default();
    let app = checksum_selection(r, "/app", &o).unwrap();
    assert_eq!(checksum_selection(r, "app/", &o).unwrap(), app);
    fs::write(r.join("ignored/big.bin"), "x").unwrap();
    fs::write(r.join("notes.tmp"), "x").unwrap();
    assert_eq!(checksum_selection(r, "/app", &o).unwrap(), app, "outside the selection");
    fs::write(r.join("app/sub/x.h"), "#define Y").unwrap();
    let app2 = checksum_selection(r, "/app", &o).unwrap();
    assert_ne!(app2, app);

    // excluded paths do not count, included ones do
    let ex = CopyOptions { exclude: vec!["sub".into()], ..Default::default() };
    let e1 = checksum_selection(r, "/app", &ex).unwrap();
    fs::write(r.join("app/sub/x.h"), "#define Z").unwrap();
    assert_eq!(checksum_selection(r, "/app", &ex).unwrap(), e1);
    fs::write(r.join("app/main.c"), "changed").unwrap();
    assert_ne!(checksum_selection(r, "/app", &ex).unwrap(), e1);

    // wildcards: the selection and its names
    let w = CopyOptions { allow_wildcard: true, ..Default::default() };
    let w1 = checksum_selection(r, "/app/*.c", &w).unwrap();
    fs::write(r.join("app/other.h"), "h").unwrap();
    assert_eq!(checksum_selection(r, "/app/*.c", &w).unwrap(), w1);
    fs::write(r.join("app/other.c"), "c").unwrap();
    assert_ne!(checksum_selection(r, "/app/*.c", &w).unwrap(), w1);
    assert!(checksum_selection(r, "/app/*.none", &w).is_err());
    let empty = CopyOptions { allow_wildcard: true, allow_empty_wildcard: true, ..Default::default() };
    checksum_selection(r, "/app/*.none", &empty).unwrap();

    // follow_symlinks: the link itself vs its target's content
    let l1 = checksum_selection(r, "/link", &o).unwrap();
    let f = CopyOptions { follow_symlinks: true, ..Default::default() };
    let l2 = checksum_selection(r, "/link", &f).unwrap();
    assert_ne!(l1, l2);
    fs::write(r.join("app/main.c"), "changed again").unwrap();
    assert_eq!(checksum_selection(r, "/link", &o).unwrap(), l1);
    assert_ne!(checksum_selection(r, "/link", &f).unwrap(), l2);

    let e = checksum_selection(r, "/missing", &o).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::FileOp);
    assert!(e.to_string().contains("/missing not found"), "{e}");
}
