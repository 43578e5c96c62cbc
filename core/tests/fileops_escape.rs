//! Symlink escape attempts: no file action may touch anything outside its root.

use kiln::fileops::{checksum_selection, copy, mkdir, mkfile, resolve_in_root, rm, symlink, CopyOptions};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// `<tmp>/sentinel` (outside the root, holding a file) and `<tmp>/root/` with hostile symlinks.
struct Setup {
    _t: tempfile::TempDir,
    root: PathBuf,
    sentinel: PathBuf,
    src: PathBuf,
}

fn setup() -> Setup {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("root");
    let sentinel = t.path().join("sentinel");
    let src = t.path().join("src");
    fs::create_dir_all(root.join("etc")).unwrap();
    fs::create_dir_all(sentinel.join("deep")).unwrap();
    fs::write(sentinel.join("precious"), "keep me").unwrap();
    fs::write(sentinel.join("deep/file"), "keep me too").unwrap();
    fs::create_dir_all(src.join("d")).unwrap();
    fs::write(src.join("payload"), "evil").unwrap();
    fs::write(src.join("d/precious"), "evil").unwrap();
    let links: &[(&str, &str)] = &[
        ("up", "/../../.."),
        ("uprel", "../../../.."),
        ("sentinel_rel", "../sentinel"),
        ("sentinel_abs", "/../sentinel"),
        ("etc_abs", "/etc"),
        ("passwd", "/etc/passwd"),
        ("chain", "up/sentinel"),
        ("tmp_abs", "/tmp"),
    ];
    for (name, target) in links {
        std::os::unix::fs::symlink(target, root.join(name)).unwrap();
    }
    Setup { _t: t, root, sentinel, src }
}

type Snap = Vec<(String, u32, i64, Vec<u8>)>;

fn snapshot(dir: &Path) -> Snap {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let m = fs::symlink_metadata(&d).unwrap();
        let content = if m.is_file() { fs::read(&d).unwrap() } else { Vec::new() };
        out.push((d.to_string_lossy().into_owned(), m.mode(), m.mtime(), content));
        if m.is_dir() {
            for e in fs::read_dir(&d).unwrap() {
                stack.push(e.unwrap().path());
            }
        }
    }
    out.sort();
    out
}

/// Everything directly in the temp dir besides the root, plus host /etc's top-level names.
fn outside(s: &Setup) -> (Snap, Vec<String>, Vec<String>) {
    let parent = s.root.parent().unwrap();
    let mut names: Vec<String> =
        fs::read_dir(parent).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    let mut etc: Vec<String> =
        fs::read_dir("/etc").unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    etc.sort();
    (snapshot(&s.sentinel), names, etc)
}

#[test]
fn resolution_never_leaves_root() {
    let s = setup();
    for p in ["/up", "/uprel/x", "/sentinel_rel/precious", "/sentinel_abs", "/chain/deep", "/etc_abs/passwd", "../../x"]
    {
        let r = resolve_in_root(&s.root, p, true).unwrap();
        assert!(r.starts_with(&s.root), "{p} -> {}", r.display());
    }
    assert_eq!(resolve_in_root(&s.root, "/sentinel_rel/precious", true).unwrap(), s.root.join("sentinel/precious"));
    assert_eq!(resolve_in_root(&s.root, "/passwd", true).unwrap(), s.root.join("etc/passwd"));
}

#[test]
fn actions_through_hostile_links_stay_inside() {
    let s = setup();
    let before = outside(&s);
    let host_passwd = fs::read("/etc/passwd").unwrap();

    mkfile(&s.root, "/passwd", 0o644, b"pwned", None, None).unwrap();
    assert_eq!(fs::read(s.root.join("etc/passwd")).unwrap(), b"pwned");
    let _ = mkfile(&s.root, "/sentinel_rel/precious", 0o644, b"pwned", None, None);
    let _ = mkfile(&s.root, "/up/sentinel/precious", 0o644, b"pwned", None, None);
    let _ = mkfile(&s.root, "/chain/deep/file", 0o644, b"pwned", None, None);
    let _ = mkfile(&s.root, "/etc_abs/kiln-escape-test", 0o644, b"pwned", None, None);
    let _ = mkdir(&s.root, "/sentinel_abs/newdir", 0o755, true, None, None);
    let _ = mkdir(&s.root, "/up/sentinel/deep/x", 0o755, true, None, None);
    let _ = mkdir(&s.root, "/tmp_abs/kiln-escape-test", 0o755, true, None, None);
    let _ = symlink(&s.root, "/", "/sentinel_rel/newlink", None, None);
    let _ = symlink(&s.root, "/", "/uprel/sentinel/newlink2", None, None);
    let _ = rm(&s.root, "/sentinel_rel/precious", false, false);
    let _ = rm(&s.root, "/up/sentinel/deep", false, false);
    let _ = rm(&s.root, "/chain/*", true, true);
    let _ = rm(&s.root, "/sentinel_abs/deep/file", false, false);

    let all = CopyOptions { create_dest_path: true, ..Default::default() };
    let _ = copy(&s.src, "/payload", &s.root, "/sentinel_rel/precious", &all);
    let _ = copy(&s.src, "/payload", &s.root, "/up/sentinel/deep/", &all);
    let _ = copy(&s.src, "/d", &s.root, "/sentinel_abs", &CopyOptions { dir_copy_contents: true, ..all.clone() });
    let _ = copy(&s.src, "/d", &s.root, "/chain/x/y", &all);
    // reading: a source symlink may not pull in files from outside the source root
    let follow = CopyOptions { follow_symlinks: true, create_dest_path: true, ..Default::default() };
    let _ = copy(&s.root, "/sentinel_rel/precious", &s.src, "/stolen", &follow);
    let _ = copy(&s.root, "/up/sentinel", &s.src, "/stolen2", &follow);
    assert!(!s.src.join("stolen").exists() || fs::read(s.src.join("stolen")).unwrap() != b"keep me");
    assert!(
        !s.src.join("stolen2/precious").exists() || fs::read(s.src.join("stolen2/precious")).unwrap() != b"keep me"
    );
    // the link reads the root's own /sentinel/precious (written above), never the host sentinel
    assert_eq!(
        checksum_selection(&s.root, "/sentinel_rel/precious", &follow).unwrap(),
        checksum_selection(&s.root, "/sentinel/precious", &follow).unwrap()
    );

    // things that did land, landed inside the root
    assert!(s.root.join("sentinel").exists());
    assert_eq!(outside(&s), before, "something outside the root changed");
    assert_eq!(fs::read("/etc/passwd").unwrap(), host_passwd);
    assert!(!Path::new("/etc/kiln-escape-test").exists());
    assert!(!Path::new("/tmp/kiln-escape-test").exists());
}

#[test]
fn copy_into_dest_with_nested_hostile_link() {
    // The destination holds `d -> ../sentinel`; a copied tree with d/precious must not write there.
    let s = setup();
    let before = outside(&s);
    std::os::unix::fs::symlink("../../sentinel", s.root.join("etc/d")).unwrap();
    let opts = CopyOptions { dir_copy_contents: true, ..Default::default() };
    // the link resolves (inside the root) to the missing /sentinel: refused, nothing written
    let e = copy(&s.src, "/", &s.root, "/etc", &opts).unwrap_err();
    assert!(e.to_string().contains("non-directory /etc/d"), "{e}");
    assert_eq!(outside(&s), before);
    // once /sentinel exists inside the root, the link is followed there
    fs::create_dir(s.root.join("sentinel")).unwrap();
    copy(&s.src, "/", &s.root, "/etc", &opts).unwrap();
    assert_eq!(outside(&s), before);
    assert_eq!(fs::read(s.root.join("sentinel/precious")).unwrap(), b"evil");
}
