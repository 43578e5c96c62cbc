//! `Definition` decoding and validation, including a definition shaped like Go `llb` output.

use kiln::graph::pb;
use kiln::graph::pb::op::Op as PbOp;
use kiln::graph::{Definition, OpKind, SourceSpec, SUPPORTED_CAPS};
use kiln::{Digest, ErrorKind};
use prost::Message;
use std::collections::BTreeMap;

/// Encodes an op in Go's field order (inputs, payload, platform, constraints), as llb.Marshal does.
fn go_encode(op: &pb::Op) -> Vec<u8> {
    let mut buf = Vec::new();
    for i in &op.inputs {
        prost::encoding::message::encode(1, i, &mut buf);
    }
    if let Some(o) = &op.op {
        o.encode(&mut buf);
    }
    if let Some(p) = &op.platform {
        prost::encoding::message::encode(10, p, &mut buf);
    }
    if let Some(c) = &op.constraints {
        prost::encoding::message::encode(11, c, &mut buf);
    }
    buf
}

fn caps(list: &[&str]) -> pb::OpMetadata {
    pb::OpMetadata { caps: list.iter().map(|c| (c.to_string(), true)).collect(), ..Default::default() }
}

fn input(d: &Digest, index: i64) -> pb::Input {
    pb::Input { digest: d.to_string(), index }
}

fn source(id: &str) -> pb::Op {
    pb::Op {
        op: Some(PbOp::Source(pb::SourceOp { identifier: id.into(), attrs: BTreeMap::new() })),
        ..Default::default()
    }
}

fn terminal(d: &Digest, index: i64) -> Vec<u8> {
    go_encode(&pb::Op { inputs: vec![input(d, index)], ..Default::default() })
}

/// Builds a definition from ops (bytes), with optional metadata.
fn def_of(ops: Vec<Vec<u8>>, md: Vec<(Digest, pb::OpMetadata)>) -> Vec<u8> {
    pb::Definition { def: ops, metadata: md.into_iter().map(|(d, m)| (d.to_string(), m)).collect(), source: None }
        .encode_to_vec()
}

fn amd64() -> Option<pb::Platform> {
    Some(pb::Platform { architecture: "amd64".into(), os: "linux".into(), ..Default::default() })
}

#[test]
fn go_shaped_definition_parses() {
    // llb.Local("ctx"): identifier local://ctx, local.unique attr, empty constraints, no platform.
    let mut attrs = BTreeMap::new();
    attrs.insert("local.unique".to_string(), "k2r4b0q3v0hpx1x3w0b9d5g3h".to_string());
    let local = go_encode(&pb::Op {
        op: Some(PbOp::Source(pb::SourceOp { identifier: "local://ctx".into(), attrs })),
        constraints: Some(pb::WorkerConstraints::default()),
        ..Default::default()
    });
    // llb.Image("busybox"): normalized reference, platform, empty constraints.
    let image = go_encode(&pb::Op {
        op: Some(PbOp::Source(pb::SourceOp {
            identifier: "docker-image://docker.io/library/busybox:latest".into(),
            attrs: BTreeMap::new(),
        })),
        platform: amd64(),
        constraints: Some(pb::WorkerConstraints::default()),
        ..Default::default()
    });
    let (ld, id) = (Digest::of(&local), Digest::of(&image));
    // image.Run(Shlex("/bin/sh -c 'cp -r /src /x'"), AddMount("/src", local, Readonly)).
    let run = go_encode(&pb::Op {
        inputs: vec![input(&id, 0), input(&ld, 0)],
        op: Some(PbOp::Exec(pb::ExecOp {
            meta: Some(pb::Meta {
                args: vec!["/bin/sh".into(), "-c".into(), "cp -r /src /x".into()],
                env: vec!["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into()],
                cwd: "/".into(),
                ..Default::default()
            }),
            mounts: vec![
                pb::Mount { input: 0, dest: "/".into(), output: 0, ..Default::default() },
                pb::Mount { input: 1, dest: "/src".into(), output: -1, readonly: true, ..Default::default() },
            ],
            ..Default::default()
        })),
        platform: amd64(),
        constraints: Some(pb::WorkerConstraints::default()),
    });
    let rd = Digest::of(&run);
    // llb.Scratch().File(llb.Copy(run.Root(), "/x", "/out/x")).
    let copy = go_encode(&pb::Op {
        inputs: vec![input(&rd, 0)],
        op: Some(PbOp::File(pb::FileOp {
            actions: vec![pb::FileAction {
                input: -1,
                secondary_input: 0,
                output: 0,
                action: Some(pb::file_action::Action::Copy(pb::FileActionCopy {
                    src: "/x".into(),
                    dest: "/out/x".into(),
                    mode: -1,
                    timestamp: -1,
                    ..Default::default()
                })),
            }],
        })),
        constraints: Some(pb::WorkerConstraints::default()),
        ..Default::default()
    });
    let cd = Digest::of(&copy);
    let term = terminal(&cd, 0);
    let td = Digest::of(&term);
    let bytes = def_of(
        vec![local.clone(), image.clone(), run.clone(), copy.clone(), term],
        vec![
            (ld.clone(), caps(&["source.local", "source.local.unique"])),
            (id.clone(), caps(&["source.image"])),
            (rd.clone(), caps(&["exec.meta.base", "exec.mount.bind"])),
            (cd.clone(), caps(&["file.base"])),
            (td, caps(&["constraints", "platform"])),
        ],
    );
    let def = Definition::from_bytes(&bytes).unwrap();
    assert_eq!(def.len(), 4);
    assert_eq!(def.output(), Some((cd.clone(), 0)));
    let order: Vec<&Digest> = def.vertices().iter().map(|v| &v.digest).collect();
    assert_eq!(order, [&id, &ld, &rd, &cd], "depth-first from the result, inputs in order");
    let lv = def.vertex(&ld).unwrap();
    assert_eq!(lv.kind(), OpKind::Source);
    assert_eq!(
        lv.source_spec().unwrap(),
        Some(SourceSpec::Local {
            name: "ctx".into(),
            include: vec![],
            exclude: vec![],
            follow_paths: vec![],
            shared_key_hint: None
        })
    );
    assert_eq!(
        def.vertex(&id).unwrap().source_spec().unwrap(),
        Some(SourceSpec::DockerImage { reference: "docker.io/library/busybox:latest".into() })
    );
    assert_eq!(def.vertex(&rd).unwrap().name(), "/bin/sh -c cp -r /src /x");
    assert_eq!(def.vertex(&rd).unwrap().kind(), OpKind::Exec);
    assert_eq!(def.vertex(&cd).unwrap().name(), "copy /x /out/x");
    assert_eq!(def.op_bytes(&rd), Some(&run[..]));
    // Re-marshalling keeps every op's bytes, so digests are stable.
    let again = Definition::from_bytes(&def.to_bytes()).unwrap();
    assert_eq!(again, def);
    let pbdef = def.to_pb();
    for raw in [&local, &image, &run, &copy] {
        assert!(pbdef.def.contains(raw));
    }
}

fn expect_err(bytes: &[u8], kind: ErrorKind, needles: &[&str]) {
    let e = Definition::from_bytes(bytes).unwrap_err();
    assert_eq!(e.kind(), kind, "{e}");
    let s = e.to_string();
    for n in needles {
        assert!(s.contains(n), "error {s:?} should mention {n:?}");
    }
}

#[test]
fn garbage_is_rejected() {
    expect_err(b"\xff\xff\xff\xff", ErrorKind::Definition, &["pb.Definition"]);
    // A well-formed definition whose op bytes are not an op names that op's digest.
    let garbage = vec![0x0a, 0xff, 0x01];
    let d = Digest::of(&garbage);
    expect_err(&def_of(vec![garbage], vec![]), ErrorKind::Definition, &[d.as_str(), "decode op"]);
}

#[test]
fn dangling_input_names_the_op() {
    let missing = Digest::of(b"nothing");
    let op = go_encode(&pb::Op {
        inputs: vec![input(&missing, 0)],
        op: Some(PbOp::Merge(pb::MergeOp { inputs: vec![pb::MergeInput { input: 0 }] })),
        ..Default::default()
    });
    let d = Digest::of(&op);
    let t = terminal(&d, 0);
    expect_err(&def_of(vec![op, t], vec![]), ErrorKind::Definition, &[d.as_str(), "dangling", missing.as_str()]);
}

#[test]
fn output_index_out_of_range_names_the_op() {
    let src = go_encode(&source("local://a"));
    let sd = Digest::of(&src);
    let user = go_encode(&pb::Op {
        inputs: vec![input(&sd, 3)],
        op: Some(PbOp::Merge(pb::MergeOp { inputs: vec![pb::MergeInput { input: 0 }] })),
        ..Default::default()
    });
    let ud = Digest::of(&user);
    let t = terminal(&ud, 0);
    expect_err(&def_of(vec![src.clone(), user, t], vec![]), ErrorKind::Definition, &[ud.as_str(), "index 3"]);
    // The terminal pointing at a missing output index.
    let t = terminal(&sd, 1);
    let td = Digest::of(&t);
    expect_err(&def_of(vec![src, t], vec![]), ErrorKind::Definition, &[td.as_str(), "out of range"]);
}

#[test]
fn unsupported_caps_are_listed() {
    let src = go_encode(&source("local://a"));
    let sd = Digest::of(&src);
    let t = terminal(&sd, 0);
    let bytes = def_of(
        vec![src, t],
        vec![(sd.clone(), caps(&["source.local", "exec.meta.security.devices.v1", "unknown.cap"]))],
    );
    expect_err(&bytes, ErrorKind::Unsupported, &[sd.as_str(), "exec.meta.security.devices.v1", "unknown.cap"]);
    assert!(SUPPORTED_CAPS.contains(&"diffop"));
    assert!(SUPPORTED_CAPS.contains(&"source.local"));
    for cap in ["exec.mount.ssh", "exec.meta.security", "exec.meta.ulimit", "exec.secretenv", "exec.validexitcode"] {
        assert!(SUPPORTED_CAPS.contains(&cap), "{cap}");
    }
}

#[test]
fn build_ops_are_unsupported_and_diff_ops_checked() {
    let build = go_encode(&pb::Op { op: Some(PbOp::Build(pb::BuildOp::default())), ..Default::default() });
    let bd = Digest::of(&build);
    let t = terminal(&bd, 0);
    expect_err(
        &def_of(vec![build, t], vec![]),
        ErrorKind::Unsupported,
        &[bd.as_str(), "BuildOp is not supported by kiln"],
    );
    let diff = go_encode(&pb::Op { op: Some(PbOp::Diff(pb::DiffOp::default())), ..Default::default() });
    let dd = Digest::of(&diff);
    let t = terminal(&dd, 0);
    expect_err(&def_of(vec![diff, t], vec![]), ErrorKind::Definition, &[dd.as_str(), "no lower input"]);
    let diff_op = |lower, upper| {
        go_encode(&pb::Op {
            op: Some(PbOp::Diff(pb::DiffOp {
                lower: Some(pb::LowerDiffInput { input: lower }),
                upper: Some(pb::UpperDiffInput { input: upper }),
            })),
            ..Default::default()
        })
    };
    let bad = diff_op(0, -1);
    let bd = Digest::of(&bad);
    let t = terminal(&bd, 0);
    expect_err(&def_of(vec![bad, t], vec![]), ErrorKind::Definition, &[bd.as_str(), "lower input 0 out of range"]);
    let ok = diff_op(-1, -1);
    let t = terminal(&Digest::of(&ok), 0);
    Definition::from_bytes(&def_of(vec![ok, t], vec![])).unwrap();
}

#[test]
fn terminal_rules() {
    let src = go_encode(&source("local://a"));
    let sd = Digest::of(&src);
    // No terminal at all.
    expect_err(&def_of(vec![src.clone()], vec![]), ErrorKind::Definition, &[sd.as_str(), "no terminal"]);
    // Two terminals.
    let t1 = terminal(&sd, 0);
    let t1d = Digest::of(&t1);
    let src2 = go_encode(&source("local://b"));
    let t2 = terminal(&Digest::of(&src2), 0);
    expect_err(
        &def_of(vec![src.clone(), t1, src2, t2], vec![]),
        ErrorKind::Definition,
        &[t1d.as_str(), "multiple terminal"],
    );
    // A payload-less op with no inputs is an unknown op.
    let unknown = go_encode(&pb::Op { platform: amd64(), ..Default::default() });
    let ud = Digest::of(&unknown);
    let t = terminal(&sd, 0);
    expect_err(
        &def_of(vec![unknown, src.clone(), t.clone()], vec![]),
        ErrorKind::Definition,
        &[ud.as_str(), "unknown op"],
    );
    // Duplicate op.
    expect_err(
        &def_of(vec![src.clone(), src.clone(), t], vec![]),
        ErrorKind::Definition,
        &[sd.as_str(), "more than once"],
    );
}

#[test]
fn bad_sources_and_execs_name_the_op() {
    let s3 = go_encode(&source("s3://bucket/key"));
    let d = Digest::of(&s3);
    let t = terminal(&d, 0);
    expect_err(&def_of(vec![s3, t], vec![]), ErrorKind::Unsupported, &[d.as_str(), "s3"]);

    let ssh = go_encode(&pb::Op {
        op: Some(PbOp::Exec(pb::ExecOp {
            meta: Some(pb::Meta { args: vec!["true".into()], cwd: "/".into(), ..Default::default() }),
            mounts: vec![
                pb::Mount { input: -1, dest: "/".into(), output: 0, ..Default::default() },
                pb::Mount {
                    input: -1,
                    dest: "/ssh".into(),
                    output: -1,
                    mount_type: pb::MountType::Ssh as i32,
                    ..Default::default()
                },
            ],
            ..Default::default()
        })),
        ..Default::default()
    });
    let d = Digest::of(&ssh);
    let t = terminal(&d, 0);
    // SSH mounts are supported; one without its SSHOpt is malformed.
    expect_err(&def_of(vec![ssh, t], vec![]), ErrorKind::Definition, &[d.as_str(), "ssh mount /ssh has no SSHOpt"]);

    let bad_mount = go_encode(&pb::Op {
        op: Some(PbOp::Exec(pb::ExecOp {
            meta: Some(pb::Meta { args: vec!["true".into()], cwd: "/".into(), ..Default::default() }),
            mounts: vec![pb::Mount { input: 2, dest: "/".into(), output: 0, ..Default::default() }],
            ..Default::default()
        })),
        ..Default::default()
    });
    let d = Digest::of(&bad_mount);
    let t = terminal(&d, 0);
    expect_err(&def_of(vec![bad_mount, t], vec![]), ErrorKind::Definition, &[d.as_str(), "input 2 out of range"]);
}

#[test]
fn file_action_forward_reference_is_rejected() {
    let f = go_encode(&pb::Op {
        op: Some(PbOp::File(pb::FileOp {
            actions: vec![pb::FileAction {
                input: 0, // no op inputs: 0 would be the output of action 0 itself
                secondary_input: -1,
                output: 0,
                action: Some(pb::file_action::Action::Mkdir(pb::FileActionMkDir {
                    path: "/a".into(),
                    mode: 0o755,
                    ..Default::default()
                })),
            }],
        })),
        ..Default::default()
    });
    let d = Digest::of(&f);
    let t = terminal(&d, 0);
    expect_err(&def_of(vec![f, t], vec![]), ErrorKind::Definition, &[d.as_str(), "file action 0 input 0"]);
}

#[test]
fn metadata_for_unknown_keys_is_ignored() {
    let src = go_encode(&source("local://a"));
    let sd = Digest::of(&src);
    let t = terminal(&sd, 0);
    let mut def = pb::Definition { def: vec![src, t], ..Default::default() };
    def.metadata.insert("not-a-digest".into(), caps(&["whatever.unsupported"]));
    def.metadata.insert(Digest::of(b"other").to_string(), caps(&["also.unsupported"]));
    let d = Definition::from_pb(def).unwrap();
    assert_eq!(d.len(), 1);
    assert_eq!(d.vertices()[0].metadata, pb::OpMetadata::default());
}
