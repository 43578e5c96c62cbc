//! The `State` builder encodes ops with BuildKit's conventions and round-trips through bytes.

use kiln::graph::pb;
use kiln::graph::pb::file_action::Action;
use kiln::graph::pb::op::Op as PbOp;
use kiln::graph::{
    CacheSharing, CopyOptions, Definition, ExecOptions, HttpOptions, LocalOptions, MkdirOptions, MkfileOptions,
    MountSpec, Network, OciRef, OpKind, Owner, RmOptions, SourceSpec, State, Vertex,
};
use kiln::Digest;
use std::collections::BTreeMap;

fn exec_of(v: &Vertex) -> &pb::ExecOp {
    match &v.op.op {
        Some(PbOp::Exec(e)) => e,
        other => panic!("not an exec: {other:?}"),
    }
}

fn file_of(v: &Vertex) -> &pb::FileOp {
    match &v.op.op {
        Some(PbOp::File(f)) => f,
        other => panic!("not a file op: {other:?}"),
    }
}

fn result_vertex(def: &Definition) -> &Vertex {
    let (d, _) = def.output().expect("definition has a result");
    def.vertex(&d).expect("result vertex present")
}

fn input_digest(v: &Vertex, i: i64) -> Digest {
    Digest::parse(&v.op.inputs[i as usize].digest).unwrap()
}

fn sample() -> State {
    let ctx = State::local_with("ctx", LocalOptions { exclude: vec!["*.o".into()], ..Default::default() });
    let base = State::image("busybox").with_env("A", "1").with_cwd("/work");
    let built = base
        .run(
            ExecOptions::shell("make")
                .mount(MountSpec::bind("/src", &ctx, true))
                .mount(MountSpec::cache("/root/.cache", "c1", CacheSharing::Locked))
                .custom_name("build it"),
        )
        .root();
    State::scratch().mkdir("/out", MkdirOptions { make_parents: true, ..Default::default() }).copy(
        &built,
        "bin/app",
        "/out/",
        CopyOptions::default(),
    )
}

#[test]
fn round_trip_through_bytes() {
    let def = sample().to_definition().unwrap();
    let bytes = def.to_bytes();
    let back = Definition::from_bytes(&bytes).unwrap();
    assert_eq!(back, def);
    assert_eq!(back.to_bytes(), bytes);
    assert_eq!(def.len(), 4, "local, image, exec, file");
    // Inputs always come before their users.
    for (i, v) in def.vertices().iter().enumerate() {
        for inp in &v.op.inputs {
            let pos = def.vertices().iter().position(|u| u.digest.as_str() == inp.digest).unwrap();
            assert!(pos < i);
        }
    }
}

#[test]
fn same_graph_built_twice_gives_identical_bytes() {
    assert_eq!(sample().to_definition().unwrap().to_bytes(), sample().to_definition().unwrap().to_bytes());
}

#[test]
fn scratch_is_an_empty_definition() {
    let def = State::scratch().to_definition().unwrap();
    assert!(def.is_empty());
    assert_eq!(def.output(), None);
    let back = Definition::from_bytes(&def.to_bytes()).unwrap();
    assert!(back.is_empty());
    assert!(Definition::from_bytes(&[]).unwrap().is_empty());
}

#[test]
fn exec_mounts_follow_buildkit_conventions() {
    let img = State::image("docker.io/library/alpine:3").with_user("1000").with_env("PATH", "/bin");
    let data = State::local("data");
    let out_dir = State::scratch().mkdir("/o", MkdirOptions::default());
    let es = img.run(
        ExecOptions::new(["/bin/true"])
            .mount(MountSpec::tmpfs("/tmp", 1 << 20))
            .mount(MountSpec::bind("/out", &out_dir, false))
            .mount(MountSpec::secret("/run/secrets/tok", "tok", 0, 0, 0o400, true))
            .mount(MountSpec::bind("/data", &data, true).with_selector("/sub"))
            .mount(MountSpec::cache("/cache", "cid", CacheSharing::Private))
            .mount(MountSpec::bind("/scratchrw", &State::scratch(), false))
            .network(Network::None)
            .worker_selector("executor", "runc")
            .ignore_cache(),
    );
    let out_state = es.mount_output("/out").expect("rw bind has an output");
    assert!(es.mount_output("/data").is_none());
    assert!(es.mount_output("/cache").is_none());
    assert!(es.mount_output("/tmp").is_none());
    let def = State::merge(vec![es.root(), out_state, es.mount_output("/scratchrw").unwrap()]).to_definition().unwrap();
    let merge = result_vertex(&def);
    assert_eq!(merge.kind(), OpKind::Merge);
    let exec_d = input_digest(merge, 0);
    let v = def.vertex(&exec_d).unwrap();
    let e = exec_of(v);
    let dests: Vec<&str> = e.mounts.iter().map(|m| m.dest.as_str()).collect();
    assert_eq!(dests, ["/", "/cache", "/data", "/out", "/scratchrw", "/tmp", "/run/secrets/tok"]);
    let io: Vec<(i64, i64, bool)> = e.mounts.iter().map(|m| (m.input, m.output, m.readonly)).collect();
    assert_eq!(
        io,
        [
            (0, 0, false),
            (-1, -1, false),
            (1, -1, true),
            (2, 1, false),
            (-1, 2, false),
            (-1, -1, false),
            (-1, -1, false)
        ]
    );
    assert_eq!(e.mounts[1].mount_type, pb::MountType::Cache as i32);
    assert_eq!(
        e.mounts[1].cache_opt,
        Some(pb::CacheOpt { id: "cid".into(), sharing: pb::CacheSharingOpt::Private as i32 })
    );
    assert_eq!(e.mounts[2].selector, "/sub");
    assert_eq!(e.mounts[5].mount_type, pb::MountType::Tmpfs as i32);
    assert_eq!(e.mounts[5].tmpfs_opt, Some(pb::TmpfsOpt { size: 1 << 20 }));
    assert_eq!(e.mounts[6].mount_type, pb::MountType::Secret as i32);
    assert_eq!(
        e.mounts[6].secret_opt,
        Some(pb::SecretOpt { id: "tok".into(), uid: 0, gid: 0, mode: 0o400, optional: true })
    );
    assert_eq!(e.network, pb::NetMode::None as i32);
    let meta = e.meta.as_ref().unwrap();
    assert_eq!(meta.args, ["/bin/true"]);
    assert_eq!(meta.env, ["PATH=/bin"]);
    assert_eq!(meta.user, "1000");
    assert_eq!(meta.cwd, "/");
    // Merge output indexes: rootfs 0, /out 1, /scratchrw 2.
    let idx: Vec<i64> = merge.op.inputs.iter().map(|i| i.index).collect();
    assert_eq!(idx, [0, 1, 2]);
    assert_eq!(v.op.constraints.as_ref().unwrap().filter, ["executor==runc"]);
    assert_eq!(v.worker_selector().unwrap(), [("executor".to_string(), "runc".to_string())]);
    assert!(v.metadata.ignore_cache);
    for cap in [
        "exec.meta.base",
        "exec.meta.network",
        "exec.mount.bind",
        "exec.mount.cache",
        "exec.mount.cache.sharing",
        "exec.mount.selector",
        "exec.mount.tmpfs",
        "exec.mount.tmpfs.size",
        "exec.mount.secret",
    ] {
        assert_eq!(v.metadata.caps.get(cap), Some(&true), "cap {cap}");
    }
    assert_eq!(v.name(), "/bin/true");
    assert!(v.op.platform.is_some());
}

#[test]
fn exec_on_scratch_and_readonly_rootfs() {
    let s = State::scratch().run(ExecOptions::new(["/x"])).root();
    let def = s.to_definition().unwrap();
    let e = exec_of(result_vertex(&def));
    assert_eq!((e.mounts[0].input, e.mounts[0].output), (-1, 0));
    assert!(result_vertex(&def).op.inputs.is_empty());

    let base = State::image("busybox");
    let keep = State::scratch().mkdir("/k", MkdirOptions::default());
    let es = base.run(ExecOptions::shell("echo").readonly_rootfs().mount(MountSpec::bind("/k", &keep, false)));
    // Readonly rootfs: no rootfs output, root() is the input unchanged; the rw bind is output 0.
    assert_eq!(es.root().to_definition().unwrap(), base.to_definition().unwrap());
    let def = es.mount_output("/k").unwrap().to_definition().unwrap();
    assert_eq!(def.output().unwrap().1, 0);
    let e = exec_of(result_vertex(&def));
    assert_eq!((e.mounts[0].readonly, e.mounts[0].output), (true, -1));
    assert_eq!(e.mounts[1].output, 0);
}

#[test]
fn run_inherits_state_meta_and_overrides() {
    let s = State::image("busybox").with_env("A", "1").with_env("B", "2").with_cwd("/w").with_user("u");
    let es = s.run(ExecOptions::shell("x").env("B", "3").cwd("sub").hostname("h"));
    let def = es.root().to_definition().unwrap();
    let meta = exec_of(result_vertex(&def)).meta.clone().unwrap();
    assert_eq!(meta.env, ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "A=1", "B=3"]);
    assert_eq!(meta.cwd, "/w/sub");
    assert_eq!(meta.user, "u");
    assert_eq!(meta.hostname, "h");
    // root() keeps the base state's meta (not the run's overrides), like Go's llb.
    assert_eq!(es.root().env(), [("A".to_string(), "1".to_string()), ("B".to_string(), "2".to_string())]);
    let cfg = es.root().with_entrypoint(["/app"]).with_cmd(["--help"]).with_label("l", "v").image_config();
    assert_eq!(cfg.env, ["A=1", "B=2"]);
    assert_eq!(cfg.working_dir.as_deref(), Some("/w"));
    assert_eq!(cfg.user.as_deref(), Some("u"));
    assert_eq!(cfg.entrypoint, Some(vec!["/app".to_string()]));
    assert_eq!(cfg.cmd, Some(vec!["--help".to_string()]));
    assert_eq!(cfg.labels.get("l").map(String::as_str), Some("v"));
}

#[test]
fn file_actions_chain_into_one_op() {
    let base = State::image("busybox").with_cwd("/app");
    let ctx = State::local("ctx");
    let s = base
        .mkdir(
            "out",
            MkdirOptions {
                mode: 0o700,
                make_parents: true,
                owner: Some(Owner { uid: 1, gid: 2 }),
                timestamp: None,
                user: None,
            },
        )
        .mkfile("out/a", 0o644, b"hi".to_vec(), MkfileOptions { owner: None, timestamp: Some(5) })
        .copy(
            &ctx,
            "src",
            "out/",
            CopyOptions {
                include: vec!["*.rs".into()],
                create_dest_path: true,
                mode: Some(0o600),
                ..Default::default()
            },
        )
        .rm("/app/tmp", RmOptions { allow_not_found: true, allow_wildcard: true })
        .symlink("out/a", "link");
    let def = s.to_definition().unwrap();
    assert_eq!(def.len(), 3, "image, local, one file op");
    let v = result_vertex(&def);
    let f = file_of(v);
    assert_eq!(v.op.inputs.len(), 2);
    assert_eq!(def.vertex(&input_digest(v, 0)).unwrap().name(), "docker-image://docker.io/library/busybox:latest");
    assert_eq!(def.vertex(&input_digest(v, 1)).unwrap().name(), "local://ctx");
    let io: Vec<(i64, i64, i64)> = f.actions.iter().map(|a| (a.input, a.secondary_input, a.output)).collect();
    assert_eq!(io, [(0, -1, -1), (2, -1, -1), (3, 1, -1), (4, -1, -1), (5, -1, 0)]);
    match &f.actions[0].action {
        Some(Action::Mkdir(m)) => {
            assert_eq!((m.path.as_str(), m.mode, m.make_parents, m.timestamp), ("/app/out", 0o700, true, -1));
            assert_eq!(m.owner.as_ref().unwrap().user, Some(pb::UserOpt { user: Some(pb::user_opt::User::ById(1)) }));
        }
        other => panic!("{other:?}"),
    }
    match &f.actions[1].action {
        Some(Action::Mkfile(m)) => {
            assert_eq!((m.path.as_str(), m.mode, &m.data[..], m.timestamp), ("/app/out/a", 0o644, &b"hi"[..], 5))
        }
        other => panic!("{other:?}"),
    }
    match &f.actions[2].action {
        Some(Action::Copy(c)) => {
            assert_eq!((c.src.as_str(), c.dest.as_str(), c.mode, c.timestamp), ("/src", "/app/out/", 0o600, -1));
            assert!(c.create_dest_path);
            assert_eq!(c.include_patterns, ["*.rs"]);
        }
        other => panic!("{other:?}"),
    }
    match &f.actions[3].action {
        Some(Action::Rm(r)) => assert!(r.allow_not_found && r.allow_wildcard && r.path == "/app/tmp"),
        other => panic!("{other:?}"),
    }
    match &f.actions[4].action {
        Some(Action::Symlink(l)) => assert_eq!((l.oldpath.as_str(), l.newpath.as_str()), ("out/a", "/app/link")),
        other => panic!("{other:?}"),
    }
    for cap in ["file.base", "file.copy.includeexcludepatterns", "file.rm.wildcard", "file.symlink.create"] {
        assert_eq!(v.metadata.caps.get(cap), Some(&true), "{cap}");
    }
    assert_eq!(
        v.name(),
        "mkdir /app/out, mkfile /app/out/a, copy /src /app/out/, rm /app/tmp, symlink /app/link -> out/a"
    );
    assert!(v.op.platform.is_none(), "file ops are not platform specific");
}

#[test]
fn custom_name_ends_a_chain_and_scratch_copy_has_no_secondary() {
    let a = State::scratch().mkdir("/a", MkdirOptions::default()).with_custom_name("make a");
    let b = a.mkdir("/b", MkdirOptions::default());
    let def = b.to_definition().unwrap();
    assert_eq!(def.len(), 2);
    let first = &def.vertices()[0];
    assert_eq!(first.name(), "make a");
    assert_eq!(file_of(first).actions[0].input, -1, "scratch base");
    assert_eq!(def.to_pb().metadata.values().filter(|m| m.caps.contains_key("meta.description")).count(), 1);

    let c = State::image("busybox").copy(&State::scratch(), "/", "/x", CopyOptions::default());
    let def = c.to_definition().unwrap();
    let f = file_of(result_vertex(&def));
    assert_eq!((f.actions[0].input, f.actions[0].secondary_input), (0, -1));
}

#[test]
fn identical_ops_are_deduplicated() {
    let m = State::merge(vec![
        State::local("a").mkdir("/x", MkdirOptions::default()),
        State::local("a").mkdir("/x", MkdirOptions::default()),
        State::scratch(),
    ]);
    let def = m.to_definition().unwrap();
    assert_eq!(def.len(), 3, "local, file, merge");
    let v = result_vertex(&def);
    assert_eq!(v.op.inputs.len(), 2);
    assert_eq!(v.op.inputs[0], v.op.inputs[1]);
    assert_eq!(v.name(), "merge");
    assert_eq!(v.metadata.caps.get("mergeop"), Some(&true));
    // Merging one state is that state; none is scratch.
    assert!(State::merge(vec![State::scratch()]).is_scratch());
    let one = State::local("z");
    assert_eq!(State::merge(vec![one.clone()]).to_definition().unwrap(), one.to_definition().unwrap());
}

#[test]
fn sources_round_trip_to_specs() {
    let d = Digest::of(b"content");
    let states = vec![
        (
            State::local_with(
                "ctx",
                LocalOptions {
                    include: vec!["a".into()],
                    exclude: vec!["b".into()],
                    follow_paths: vec!["c".into()],
                    shared_key_hint: Some("h".into()),
                },
            ),
            SourceSpec::Local {
                name: "ctx".into(),
                include: vec!["a".into()],
                exclude: vec!["b".into()],
                follow_paths: vec!["c".into()],
                shared_key_hint: Some("h".into()),
            },
        ),
        (
            State::oci_layout("/layouts/x", OciRef::Digest(d.clone())),
            SourceSpec::OciLayout { path: "/layouts/x".into(), reference: OciRef::Digest(d.clone()) },
        ),
        (
            State::http(
                "http://127.0.0.1:1/f",
                HttpOptions { checksum: Some(d.clone()), perm: Some(0o755), ..Default::default() },
            ),
            SourceSpec::Http {
                url: "http://127.0.0.1:1/f".into(),
                checksum: Some(d.clone()),
                filename: None,
                perm: Some(0o755),
                uid: None,
                gid: None,
            },
        ),
        (
            State::git("/srv/repo", "main"),
            SourceSpec::Git { remote: "/srv/repo".into(), reference: "main".into(), keep_git_dir: false, subdir: None },
        ),
        (State::image("busybox:1.36"), SourceSpec::DockerImage { reference: "docker.io/library/busybox:1.36".into() }),
    ];
    for (st, spec) in states {
        let def = st.to_definition().unwrap();
        let v = result_vertex(&def);
        assert_eq!(v.kind(), OpKind::Source);
        assert_eq!(v.source_spec().unwrap(), Some(spec.clone()));
        for cap in spec.caps() {
            assert_eq!(v.metadata.caps.get(cap), Some(&true), "{cap}");
        }
    }
    let def = State::git("https://github.com/moby/buildkit.git", "v0.12").to_definition().unwrap();
    match &result_vertex(&def).op.op {
        Some(PbOp::Source(s)) => {
            assert_eq!(s.identifier, "git://github.com/moby/buildkit.git#v0.12");
            assert_eq!(s.attrs.get("git.fullurl").map(String::as_str), Some("https://github.com/moby/buildkit.git"));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn constraints_apply_to_the_producing_op() {
    let mut sel = BTreeMap::new();
    sel.insert("b".to_string(), "2".to_string());
    sel.insert("a".to_string(), "1".to_string());
    let s = State::local("x").with_worker_selector(sel).with_description("k", "v").ignore_cache();
    let def = s.to_definition().unwrap();
    let v = result_vertex(&def);
    assert_eq!(v.op.constraints.as_ref().unwrap().filter, ["a==1", "b==2"]);
    assert_eq!(v.metadata.description.get("k").map(String::as_str), Some("v"));
    assert!(v.metadata.ignore_cache);
    let t = def.to_pb();
    let term_md = &t.metadata[def.terminal_digest().unwrap().as_str()];
    for cap in ["constraints", "platform", "meta.ignorecache", "meta.description"] {
        assert_eq!(term_md.caps.get(cap), Some(&true), "{cap}");
    }
}

#[test]
fn exec_without_args_or_with_duplicate_mounts_fails_to_marshal() {
    let e = State::image("busybox").run(ExecOptions::default()).root().to_definition().unwrap_err();
    assert!(e.to_string().contains("no args"), "{e}");
    let t = State::scratch();
    let e = State::image("busybox")
        .run(ExecOptions::shell("x").mount(MountSpec::tmpfs("/t", 0)).mount(MountSpec::bind("/t", &t, false)))
        .root()
        .to_definition()
        .unwrap_err();
    assert!(e.to_string().contains("/t"), "{e}");
}

#[test]
fn json_dump_has_one_line_per_op() {
    let def = sample().to_definition().unwrap();
    let dump = def.to_json_lines();
    let lines: Vec<serde_json::Value> = dump.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), def.len() + 1);
    for (l, v) in lines.iter().zip(def.vertices()) {
        assert_eq!(l["Digest"], v.digest.as_str());
    }
    let exec = lines.iter().find(|l| l["Op"]["Op"]["exec"].is_object()).unwrap();
    assert_eq!(exec["Op"]["Op"]["exec"]["meta"]["args"][2], "make");
    assert_eq!(exec["OpMetadata"]["description"]["llb.customname"], "build it");
    assert_eq!(exec["Op"]["Op"]["exec"]["mounts"][0]["dest"], "/");
    let last = lines.last().unwrap();
    assert!(last["Op"]["Op"].is_null());
    assert_eq!(last["Op"]["inputs"][0]["index"], 0);
}

#[test]
fn deep_chains_do_not_overflow_the_stack() {
    let mut s = State::scratch();
    for i in 0..10_000 {
        s = s.mkdir(format!("/d{i}"), MkdirOptions::default()).with_custom_name(format!("step {i}"));
    }
    let def = s.to_definition().unwrap();
    assert_eq!(def.len(), 10_000);
    let back = Definition::from_bytes(&def.to_bytes()).unwrap();
    assert_eq!(back.len(), 10_000);
    drop(s);
}
