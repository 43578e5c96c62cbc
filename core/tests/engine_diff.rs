//! LLB diff ops on a real runc and overlayfs. The expected trees are what BuildKit v0.11.6's
//! buildkitd produced for the same definitions (`buildctl build --output type=tar`), with the
//! `/dev`, `/proc`, `/sys` mount-point directories of Run outputs left out of the comparison.

mod common;

use common::kit::{base, cached, read, sh, started, Kit};
use kiln::graph::{pb, CopyOptions, MountSpec, OpKind, State};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// `b1`: busybox plus a /data tree.
fn b1() -> State {
    base()
        .run(sh("mkdir -p /data/sub /data/keep /data/mode && echo a > /data/a && echo m > /data/m && \
                 echo del > /data/del && echo s > /data/sub/s && echo k > /data/keep/k && chmod 700 /data/mode"))
        .root()
}

/// A Run on `b1` that adds, modifies and deletes files.
fn changed() -> State {
    b1().run(sh("echo new > /data/new && echo mod > /data/m && rm /data/del && rm -r /data/sub && \
                 mkdir /data/newdir && echo n > /data/newdir/f && echo k2 > /data/keep/k2 && echo z > /data/mode/z"))
        .root()
}

/// Another base with files the diff deletes.
fn base2() -> State {
    base()
        .run(sh("mkdir -p /data/sub && echo other > /data/del && echo o > /data/sub/o && echo a2 > /data/a && \
                 echo t > /data/tmpf && echo g > /data/gone"))
        .root()
}

/// Every entry under `root` as `path mode` (dirs end in `/`), sorted; `/dev`, `/proc`, `/sys`
/// mount points and `/bin` are left out.
fn tree(root: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        let mut names: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name()).collect();
        names.sort();
        for n in names {
            let p = dir.join(&n);
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().to_string();
            if dir == root && ["dev", "proc", "sys", "bin"].contains(&rel.as_str()) {
                continue;
            }
            let m = std::fs::symlink_metadata(&p).unwrap();
            if m.is_dir() {
                out.push(format!("{rel}/ {:o}", m.mode() & 0o7777));
                walk(root, &p, out);
            } else {
                out.push(format!("{rel} {:o}", m.mode() & 0o7777));
            }
        }
    }
    let mut out = Vec::new();
    walk(root, root, &mut out);
    out
}

fn strs(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

async fn export(k: &Kit, st: &State, name: &str) -> std::path::PathBuf {
    let out = k.path(name);
    let (r, ev) = k.solve(st, k.opts().output(&format!("type=local,dest={}", out.display())).unwrap()).await;
    r.unwrap_or_else(|e| panic!("{name}: {e}: {ev:#?}"));
    out
}

#[test]
fn diff_marshals_as_go_llb() {
    let d = State::diff(&b1(), &changed()).to_definition().unwrap();
    let v = d.vertices().iter().find(|v| v.kind() == OpKind::Diff).expect("a diff op");
    let Some(pb::op::Op::Diff(op)) = &v.op.op else { panic!("not a diff") };
    assert_eq!(op.lower.as_ref().map(|l| l.input), Some(0));
    assert_eq!(op.upper.as_ref().map(|u| u.input), Some(1));
    assert_eq!(v.op.inputs.len(), 2);
    assert!(v.op.platform.is_none(), "diff ops are not platform specific");
    assert_eq!(v.metadata.caps.get("diffop"), Some(&true));
    // Upper scratch: input -1; lower scratch: the upper state itself (no diff op).
    let d = State::diff(&b1(), &State::scratch()).to_definition().unwrap();
    let v = d.vertices().iter().find(|v| v.kind() == OpKind::Diff).expect("a diff op");
    let Some(pb::op::Op::Diff(op)) = &v.op.op else { panic!("not a diff") };
    assert_eq!(op.upper.as_ref().map(|u| u.input), Some(-1));
    let same = State::diff(&State::scratch(), &b1()).to_definition().unwrap();
    assert!(same.vertices().iter().all(|v| v.kind() != OpKind::Diff));
    assert_eq!(same.terminal_digest(), b1().to_definition().unwrap().terminal_digest());
}

#[tokio::test(flavor = "multi_thread")]
async fn diff_of_a_run_alone_and_merged_onto_another_base() {
    let mut k = Kit::new();
    let d = State::diff(&b1(), &changed());
    // Alone: what the Run added or changed, with parent directories; deletions invisible.
    let out = export(&k, &d, "d").await;
    let expect_d = strs(&[
        "data/ 755",
        "data/keep/ 755",
        "data/keep/k2 644",
        "data/m 644",
        "data/mode/ 700",
        "data/mode/z 644",
        "data/new 644",
        "data/newdir/ 755",
        "data/newdir/f 644",
    ]);
    assert_eq!(tree(&out), expect_d);
    assert_eq!(read(&out.join("data/m")), "mod\n");
    // Merged: the Run's deletions delete in the other base (BuildKit applies the whiteouts).
    let m = State::merge(vec![base2(), d.clone()]);
    let out = export(&k, &m, "m").await;
    let data: Vec<String> = tree(&out).into_iter().filter(|l| l.starts_with("data/")).collect();
    assert_eq!(
        data,
        strs(&[
            "data/ 755",
            "data/a 644",
            "data/gone 644",
            "data/keep/ 755",
            "data/keep/k2 644",
            "data/m 644",
            "data/mode/ 700",
            "data/mode/z 644",
            "data/new 644",
            "data/newdir/ 755",
            "data/newdir/f 644",
            "data/tmpf 644",
        ])
    );
    assert_eq!(read(&out.join("data/a")), "a2\n");
    assert!(out.join("bin/busybox").is_file());
    // Re-solved after a restart: all cached, same tree.
    k.reopen();
    let out2 = k.path("d2");
    let (r, ev) = k.solve(&d, k.opts().output(&format!("type=local,dest={}", out2.display())).unwrap()).await;
    let r = r.unwrap();
    assert_eq!(r.executed, 0, "{:?}", started(&ev));
    assert!(cached(&ev).iter().any(|n| n == "diff"), "{ev:#?}");
    assert_eq!(tree(&out2), expect_d);
    k.assert_no_leaks();
}

#[tokio::test(flavor = "multi_thread")]
async fn diff_over_several_layers_keeps_every_deletion() {
    let k = Kit::new();
    let up = b1().run(sh("echo t > /data/tmpf && echo x > /data/x")).root().run(sh("rm /data/tmpf /data/a")).root();
    let d = State::diff(&b1(), &up);
    assert_eq!(tree(&export(&k, &d, "d").await), strs(&["data/ 755", "data/x 644"]));
    // /data/tmpf was created and deleted above `lower`: BuildKit still deletes base2's.
    let out = export(&k, &State::merge(vec![base2(), d]), "m").await;
    let data: Vec<String> = tree(&out).into_iter().filter(|l| l.starts_with("data/")).collect();
    assert_eq!(
        data,
        strs(&["data/ 755", "data/del 644", "data/gone 644", "data/sub/ 755", "data/sub/o 644", "data/x 644"])
    );
    k.assert_no_leaks();
}

#[tokio::test(flavor = "multi_thread")]
async fn diff_of_unrelated_states_compares_trees() {
    let k = Kit::new();
    let lo =
        // Old mtimes in `lo`: the two runs may execute in the same clock tick.
        base()
            .run(sh("mkdir /data && echo 1 > /data/one && echo same > /data/same && echo g > /data/gone && \
                     touch -t 200101010000 /data/one /data/same"))
            .root();
    let hi = base()
        .run(sh("mkdir /data && echo 2 > /data/one && echo same > /data/same && echo added > /data/added"))
        .root();
    let d = State::diff(&lo, &hi);
    // Files rewritten with new mtimes are changes (as BuildKit's double-walking differ).
    assert_eq!(
        tree(&export(&k, &d, "d").await),
        strs(&["data/ 755", "data/added 644", "data/one 644", "data/same 644"])
    );
    let out = export(&k, &State::merge(vec![base2(), d.clone()]), "m").await;
    assert!(!out.join("data/gone").exists(), "the deletion of /data/gone applies to base2");
    assert_eq!(read(&out.join("data/one")), "2\n");
    assert_eq!(read(&out.join("data/a")), "a2\n");
    // Upper scratch: everything of lower is deleted (BuildKit's merge result is empty).
    let gone = State::diff(&b1(), &State::scratch());
    assert!(tree(&export(&k, &gone, "gone").await).is_empty());
    let out = export(&k, &State::merge(vec![base2(), gone]), "m-gone").await;
    assert_eq!(std::fs::read_dir(&out).unwrap().count(), 0);
    k.assert_no_leaks();
}

#[tokio::test(flavor = "multi_thread")]
async fn diff_as_mount_copy_source_and_diffed_again() {
    let k = Kit::new();
    let d = State::diff(&b1(), &changed());
    let listing = base().run(sh("find /mnt | sort > /listing").mount(MountSpec::bind("/mnt", &d, true))).root();
    let out = export(&k, &listing, "listing").await;
    assert_eq!(
        read(&out.join("listing")),
        "/mnt\n/mnt/data\n/mnt/data/keep\n/mnt/data/keep/k2\n/mnt/data/m\n/mnt/data/mode\n/mnt/data/mode/z\n\
         /mnt/data/new\n/mnt/data/newdir\n/mnt/data/newdir/f\n"
    );
    let cp =
        State::scratch().copy(&d, "/data", "/copied", CopyOptions { create_dest_path: true, ..Default::default() });
    assert_eq!(
        tree(&export(&k, &cp, "cp").await),
        strs(&[
            "copied/ 755",
            "copied/keep/ 755",
            "copied/keep/k2 644",
            "copied/m 644",
            "copied/mode/ 700",
            "copied/mode/z 644",
            "copied/new 644",
            "copied/newdir/ 755",
            "copied/newdir/f 644",
        ])
    );
    // A diff's diff against a merge containing it: what base2 brought (the diff's own files are
    // unchanged).
    let dd = State::diff(&d, &State::merge(vec![base2(), d.clone()]));
    let out = export(&k, &dd, "dd").await;
    let data: Vec<String> = tree(&out).into_iter().filter(|l| l.starts_with("data/")).collect();
    assert_eq!(data, strs(&["data/ 755", "data/a 644", "data/gone 644", "data/tmpf 644"]));
    assert!(out.join("bin/busybox").is_file() && out.join("etc/passwd").is_file());
    // A diff as the rootfs of a Run (busybox mounted in).
    let run = d
        .run(
            kiln::graph::ExecOptions::new(["/bb/bin/busybox", "sh", "-c", "/bb/bin/busybox ls /data > /seen"])
                .mount(MountSpec::bind("/bb", &base(), true)),
        )
        .root();
    let out = export(&k, &run, "run").await;
    assert_eq!(read(&out.join("seen")), "keep\nm\nmode\nnew\nnewdir\n");
    k.assert_no_leaks();
}

#[tokio::test(flavor = "multi_thread")]
async fn diff_survives_a_max_cache_export_and_import() {
    let a = Kit::new();
    let d = State::diff(&b1(), &changed());
    let cache = a.path("cache");
    let (r, ev) =
        a.solve(&d, a.opts().cache_export(&format!("type=local,dest={},mode=max", cache.display())).unwrap()).await;
    r.unwrap_or_else(|e| panic!("{e}: {ev:#?}"));
    // A fresh root: the diff comes from the cache and its deletions still apply in a new merge.
    let b = Kit::new();
    let m = State::merge(vec![base2(), d.clone()]);
    let out = b.path("m");
    let (r, ev) = b
        .solve(
            &m,
            b.opts()
                .cache_import(&format!("type=local,src={}", cache.display()))
                .unwrap()
                .output(&format!("type=local,dest={}", out.display()))
                .unwrap(),
        )
        .await;
    r.unwrap_or_else(|e| panic!("{e}: {ev:#?}"));
    assert!(cached(&ev).iter().any(|n| n == "diff"), "the diff vertex must hit the imported cache: {ev:#?}");
    assert!(!started(&ev).iter().any(|n| n == "diff" || n.contains("rm /data/del")), "{:?}", started(&ev));
    assert!(!out.join("data/del").exists() && !out.join("data/sub").exists(), "deletions survive the cache");
    assert_eq!(read(&out.join("data/m")), "mod\n");
    assert_eq!(read(&out.join("data/a")), "a2\n");
    b.assert_no_leaks();
}
