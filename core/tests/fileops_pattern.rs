//! Pattern matching and the filtered walk on real directories.

use kiln::fileops::{walk_matching, Decision, PatternMatcher};
use std::fs;
use std::path::Path;

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

fn layout() -> tempfile::TempDir {
    let t = tempfile::tempdir().unwrap();
    let r = t.path();
    for d in ["src/a/b", "src/c", "node_modules/x", "docs", "dir/keep", "dir/drop"] {
        fs::create_dir_all(r.join(d)).unwrap();
    }
    for f in [
        "src/main.rs",
        "src/a/lib.rs",
        "src/a/b/deep.rs",
        "src/a/b/notes.md",
        "src/c/x.txt",
        "node_modules/x/index.js",
        "docs/readme.md",
        "dir/keep/k.txt",
        "dir/drop/d.txt",
        "dir/top.txt",
        "Dockerfile",
        "a.log",
    ] {
        fs::write(r.join(f), f).unwrap();
    }
    t
}

fn walk(root: &Path, inc: &[&str], exc: &[&str], follow: &[&str]) -> Vec<String> {
    let m = PatternMatcher::new(&s(inc), &s(exc)).unwrap();
    walk_matching(root, &m, &s(follow)).unwrap().into_iter().map(|e| e.rel).collect()
}

#[test]
fn no_patterns_selects_all_sorted() {
    let t = layout();
    let all = walk(t.path(), &[], &[], &[]);
    assert_eq!(all.len(), 22);
    assert_eq!(&all[..4], &["Dockerfile", "a.log", "dir", "dir/drop"]);
    let pos = |p: &str| all.iter().position(|x| x == p).unwrap();
    assert!(pos("src/a") < pos("src/a/b") && pos("src/a/b/notes.md") < pos("src/a/lib.rs"));
}

#[test]
fn double_star_and_exceptions() {
    let t = layout();
    assert_eq!(
        walk(t.path(), &["**/*.rs"], &[], &[]),
        ["src", "src/a", "src/a/b", "src/a/b/deep.rs", "src/a/lib.rs", "src/main.rs"]
    );
    assert_eq!(
        walk(t.path(), &[], &["dir", "!dir/keep"], &[])
            .into_iter()
            .filter(|p| p.starts_with("dir"))
            .collect::<Vec<_>>(),
        ["dir", "dir/keep", "dir/keep/k.txt"]
    );
    let got = walk(t.path(), &[], &["**/*.md", "node_modules", "*.log"], &[]);
    assert!(!got.iter().any(|p| p.ends_with(".md") || p.starts_with("node_modules") || p == "a.log"), "{got:?}");
    assert!(got.contains(&"docs".to_string()) && got.contains(&"src/c/x.txt".to_string()));
    // an exception re-including something under a dir excluded with a wildcard
    let got = walk(t.path(), &[], &["src/*", "!src/a/b/*.md"], &[]);
    assert_eq!(
        got.into_iter().filter(|p| p.starts_with("src")).collect::<Vec<_>>(),
        ["src", "src/a", "src/a/b", "src/a/b/notes.md"]
    );
    // include and exclude together
    assert_eq!(walk(t.path(), &["src"], &["src/a"], &[]), ["src", "src/c", "src/c/x.txt", "src/main.rs"]);
}

#[test]
fn follow_paths_select_link_targets() {
    let t = layout();
    std::os::unix::fs::symlink("docs/readme.md", t.path().join("README")).unwrap();
    assert_eq!(walk(t.path(), &[], &[], &["README"]), ["README", "docs", "docs/readme.md"]);
    assert_eq!(walk(t.path(), &[], &[], &["Dockerfile"]), ["Dockerfile"]);
}

#[test]
fn decisions_and_bad_patterns() {
    let m = PatternMatcher::new(&[], &s(&["dir", "!dir/keep"])).unwrap();
    assert_eq!(m.is_included("dir", true), Decision::ExcludeButDescend);
    assert_eq!(m.is_included("dir/keep/x", false), Decision::Include);
    assert_eq!(m.is_included("dir/drop", true), Decision::Exclude);
    for bad in ["[", "a/[]", "x\\", "!"] {
        let e = PatternMatcher::new(&[], &s(&[bad])).unwrap_err();
        assert!(e.to_string().contains(&format!("{bad:?}")), "{e}");
    }
}
