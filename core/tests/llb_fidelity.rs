//! Results identical to BuildKit v0.11.6's, for the differences found by solving the same
//! definitions on both (issue 7): runtime mount points stay, mount stubs are removed as
//! `removeMountStubsRecursive` says, mkfile over a file keeps its mode, a missing working
//! directory belongs to the Run's user, and tar headers carry permission bits only.

mod common;

use common::kit::{base, sh, Kit};
use kiln::digest::Digest;
use kiln::graph::pb::op::Op as PbOp;
use kiln::graph::{pb, Definition, ExecOptions, MkdirOptions, MkfileOptions, Owner, RmOptions, State};
use prost::Message;
use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// Solves `def` with a local output and returns the output directory.
async fn export(k: &Kit, def: &Definition, name: &str) -> std::path::PathBuf {
    let out = k.path(name);
    let opts = k.opts().output(&format!("type=local,dest={}", out.display())).unwrap();
    let (r, ev) = common::kit::solve_def(k.engine(), def, opts).await;
    r.unwrap_or_else(|e| panic!("solve {name}: {e}\n{ev:?}"));
    out
}

/// `def` with every exec op's `removeMountStubsRecursive` set to `recursive`; digests and the
/// inputs naming them are rewritten (ops are in topological order).
fn with_recursive_stubs(def: &Definition, recursive: bool) -> Definition {
    let mut pbdef = def.to_pb();
    let mut renamed: HashMap<String, String> = HashMap::new();
    let mut metadata = HashMap::new();
    for bytes in pbdef.def.iter_mut() {
        let old = Digest::of(bytes).to_string();
        let mut op = pb::Op::decode(bytes.as_slice()).unwrap();
        for i in op.inputs.iter_mut() {
            if let Some(n) = renamed.get(&i.digest) {
                i.digest = n.clone();
            }
        }
        if let Some(PbOp::Exec(e)) = op.op.as_mut() {
            e.meta.as_mut().unwrap().remove_mount_stubs_recursive = recursive;
        }
        *bytes = op.encode_to_vec();
        let new = Digest::of(bytes).to_string();
        if let Some(md) = pbdef.metadata.get(&old) {
            metadata.insert(new.clone(), md.clone());
        }
        renamed.insert(old, new);
    }
    pbdef.metadata = metadata.into_iter().collect();
    Definition::from_pb(pbdef).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn runtime_mount_points_stay_and_stubs_follow_remove_mount_stubs_recursive() {
    let k = Kit::new();
    // A base without /etc: the stubs for /etc/hosts and /etc/resolv.conf create it.
    let no_etc = base().rm("/etc", RmOptions::default());
    let st = no_etc.run(sh("echo hi > /made").mount(kiln::graph::MountSpec::tmpfs("/mnt/deep/t", 0))).root();
    let def = st.to_definition().unwrap();
    let bytes = def.to_bytes();
    let decoded = Definition::from_bytes(&bytes).unwrap();
    let exec = decoded.vertices().iter().find_map(|v| match &v.op.op {
        Some(PbOp::Exec(e)) => Some(e.clone()),
        _ => None,
    });
    assert!(exec.unwrap().meta.unwrap().remove_mount_stubs_recursive, "the builder sets it as Go llb does");

    let out = export(&k, &def, "recursive").await;
    for d in ["dev", "proc", "sys"] {
        let m = std::fs::symlink_metadata(out.join(d)).unwrap_or_else(|e| panic!("/{d} kept: {e}"));
        assert!(m.is_dir());
        assert_eq!(std::fs::read_dir(out.join(d)).unwrap().count(), 0, "/{d} is an empty mount point");
    }
    assert!(!out.join("etc").exists(), "recursive: the created /etc is removed");
    assert!(!out.join("mnt").exists(), "recursive: created parents of a mount are removed");
    assert_eq!(std::fs::read_to_string(out.join("made")).unwrap(), "hi\n");

    let out = export(&k, &with_recursive_stubs(&def, false), "flat").await;
    assert!(out.join("etc").is_dir(), "non-recursive: /etc stays (as on BuildKit)");
    assert!(!out.join("etc/hosts").exists() && !out.join("etc/resolv.conf").exists());
    assert!(out.join("mnt/deep").is_dir() && !out.join("mnt/deep/t").exists());
    assert!(out.join("proc").is_dir());
    k.assert_no_leaks();
}

#[tokio::test(flavor = "multi_thread")]
async fn mkfile_over_an_existing_file_keeps_its_mode_and_owner() {
    let k = Kit::new();
    let st = State::scratch()
        .mkfile("/f", 0o750, "old", MkfileOptions { owner: Some(Owner { uid: 7, gid: 8 }), ..Default::default() })
        .mkfile("/f", 0o600, "new", MkfileOptions::default())
        .mkfile("/g", 0o4755, "suid dropped", MkfileOptions::default());
    let out = export(&k, &st.to_definition().unwrap(), "out").await;
    let m = std::fs::metadata(out.join("f")).unwrap();
    assert_eq!(std::fs::read_to_string(out.join("f")).unwrap(), "new");
    assert_eq!((m.mode() & 0o7777, m.uid(), m.gid()), (0o750, 7, 8));
    assert_eq!(std::fs::metadata(out.join("g")).unwrap().mode() & 0o7777, 0o755);
}

#[tokio::test(flavor = "multi_thread")]
async fn missing_working_directory_belongs_to_the_runs_user() {
    let k = Kit::new();
    let st = base()
        .run(ExecOptions::new(["/bin/sh", "-c", "touch made && id -u > id"]).user("1000:1001").cwd("/home/u/work"))
        .root();
    let out = export(&k, &st.to_definition().unwrap(), "out").await;
    assert_eq!(std::fs::read_to_string(out.join("home/u/work/id")).unwrap(), "1000\n");
    for p in ["home", "home/u", "home/u/work"] {
        let m = std::fs::metadata(out.join(p)).unwrap();
        assert_eq!((m.uid(), m.gid(), m.mode() & 0o777), (1000, 1001, 0o755), "{p}");
    }
    assert!(Path::new(&out.join("home/u/work/made")).is_file());
}

#[tokio::test(flavor = "multi_thread")]
async fn tar_output_modes_have_no_type_bits() {
    let k = Kit::new();
    let st = State::scratch().mkdir("/d", MkdirOptions::default()).mkfile("/d/f", 0o644, "x", MkfileOptions::default());
    let dest = k.path("out.tar");
    let opts = k.opts().output(&format!("type=tar,dest={}", dest.display())).unwrap();
    let (r, _) = common::kit::solve_def(k.engine(), &st.to_definition().unwrap(), opts).await;
    r.unwrap();
    let mut ar = tar::Archive::new(std::fs::File::open(&dest).unwrap());
    let modes: Vec<(String, u32)> = ar
        .entries()
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (e.path().unwrap().display().to_string(), e.header().mode().unwrap())
        })
        .collect();
    assert_eq!(modes, vec![("d".to_owned(), 0o755), ("d/f".to_owned(), 0o644)]);
}
