//! Unit tests of the converter: the LLB and image config of small Dockerfiles, checked through
//! the marshalled definition's ops and names, with a fake resolver (no registry).

use super::*;
use crate::digest::Digest;
use crate::graph::{pb, ImageRef, Platform, ResolvedImageConfig};

struct Fake;

impl ImageMetaResolver for Fake {
    fn resolve_image_config(&self, image: &ImageRef, _: Option<&Platform>) -> Result<ResolvedImageConfig> {
        let config = ImageConfig {
            env: vec!["PATH=/bin".into(), "BASE=1".into()],
            working_dir: Some("/srv".into()),
            cmd: Some(vec!["sh".into()]),
            on_build: Some(vec!["ENV TRIGGERED=yes".into()]),
            ..Default::default()
        };
        let _ = image;
        Ok(ResolvedImageConfig { digest: Digest::of(b"img"), config, platform: Platform::host() })
    }
}

fn conv(text: &str, opts: ConvertOptions) -> Result<(Converted, Vec<pb::Op>, Vec<String>)> {
    let c = convert_text(text, &opts, &Fake)?;
    let def = c.state.to_definition()?;
    let mut ops = Vec::new();
    let mut names = Vec::new();
    for v in def.vertices() {
        ops.push(v.op.clone());
        names.push(v.name());
    }
    Ok((c, ops, names))
}

fn execs(ops: &[pb::Op]) -> Vec<pb::ExecOp> {
    ops.iter()
        .filter_map(|o| match &o.op {
            Some(pb::op::Op::Exec(e)) => Some(e.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn multi_stage_names_env_and_config() {
    let df = "ARG V=1\nFROM busybox AS build\nARG V\nENV A=$V\nWORKDIR app\nRUN echo $A > f\n\
              FROM scratch\nCOPY --from=build /srv/app/f /f\nENTRYPOINT [\"/f\"]\nLABEL l=x\nEXPOSE 80 53/udp\n";
    let (c, ops, names) = conv(df, ConvertOptions::default()).unwrap();
    let e = execs(&ops);
    assert_eq!(e.len(), 1);
    let meta = e[0].meta.clone().unwrap();
    assert_eq!(meta.args, ["/bin/sh", "-c", "echo $A > f"]);
    assert_eq!(meta.cwd, "/srv/app");
    // Base env, the ONBUILD trigger, the stage ARG and ENV.
    assert_eq!(meta.env, ["PATH=/bin", "BASE=1", "TRIGGERED=yes", "V=1", "A=1"]);
    for n in [
        "[build 1/3] FROM docker.io/library/busybox:latest@",
        "[build 2/3] WORKDIR app",
        "[build 3/3] RUN echo 1 > f",
        "[stage-1 1/1] COPY --from=build /srv/app/f /f",
    ] {
        assert!(names.iter().any(|x| x.starts_with(n)), "{n} not in {names:?}");
    }
    let img = c.image_config;
    assert_eq!(img.entrypoint, Some(vec!["/f".to_owned()]));
    assert_eq!(img.cmd, None);
    assert_eq!(img.working_dir.as_deref(), Some("/"));
    assert_eq!(img.labels.get("l").map(String::as_str), Some("x"));
    assert_eq!(img.exposed_ports.iter().cloned().collect::<Vec<_>>(), ["53/udp", "80/tcp"]);
}

#[test]
fn copy_flags_link_and_context_paths() {
    let df = "FROM scratch\nCOPY --chown=1:2 --chmod=640 a* /d/\nCOPY --link b /b\nADD t.tar /x/\n";
    let (_, ops, names) = conv(df, ConvertOptions::default()).unwrap();
    let copies: Vec<pb::FileActionCopy> = ops
        .iter()
        .filter_map(|o| match &o.op {
            Some(pb::op::Op::File(f)) => Some(f.actions.clone()),
            _ => None,
        })
        .flatten()
        .filter_map(|a| match a.action {
            Some(pb::file_action::Action::Copy(c)) => Some(c),
            _ => None,
        })
        .collect();
    assert_eq!(copies.len(), 3);
    let a = copies.iter().find(|c| c.src == "/a*").unwrap();
    assert_eq!((a.dest.as_str(), a.mode), ("/d/", 0o640));
    assert!(
        a.allow_wildcard && a.allow_empty_wildcard && a.follow_symlink && a.dir_copy_contents && a.create_dest_path
    );
    assert!(!a.attempt_unpack_docker_compatibility);
    assert!(copies.iter().find(|c| c.src == "/t.tar").unwrap().attempt_unpack_docker_compatibility);
    assert!(names.iter().any(|n| n == "[3/3] ADD t.tar /x/"), "{names:?}");
    // The context's follow paths are the paths read.
    let local = ops
        .iter()
        .find_map(|o| match &o.op {
            Some(pb::op::Op::Source(s)) if s.identifier == "local://context" => Some(s.attrs.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(local.get("local.followpaths").map(String::as_str), Some(r#"["a*","b","t.tar"]"#));
    // COPY --link onto a non-empty stage: a merge named LINK.
    assert!(ops.iter().any(|o| matches!(o.op, Some(pb::op::Op::Merge(_)))));
    assert!(names.iter().any(|n| n == "[2/3] LINK COPY --link b /b"), "{names:?}");
}

#[test]
fn run_mounts_and_heredoc() {
    let df = "FROM busybox\nRUN --mount=type=cache,target=/c,sharing=locked --mount=type=tmpfs,target=/t \
              --mount=type=secret,id=s --network=none true\nRUN <<EOF\necho hi\nEOF\n";
    let (_, ops, _) = conv(df, ConvertOptions::default()).unwrap();
    let e = execs(&ops);
    let first = e.iter().find(|e| e.mounts.len() == 4).unwrap();
    assert_eq!(first.network, pb::NetMode::None as i32);
    let cache = first.mounts.iter().find(|m| m.dest == "/c").unwrap();
    assert_eq!(cache.cache_opt.as_ref().unwrap().id, "//c");
    let secret = first.mounts.iter().find(|m| m.mount_type == pb::MountType::Secret as i32).unwrap();
    assert_eq!(secret.dest, "/run/secrets/s");
    assert!(secret.secret_opt.as_ref().unwrap().optional);
    let heredoc = e.iter().find(|e| e.mounts.len() == 1).unwrap();
    assert_eq!(heredoc.meta.as_ref().unwrap().args, ["/bin/sh", "-c", "echo hi\n"]);
}

#[test]
fn target_selection_builds_only_what_it_needs() {
    let df = "FROM busybox AS a\nRUN echo a\nFROM busybox AS b\nRUN echo b\nFROM a\nRUN echo c\n";
    let opts = ConvertOptions { target: "B".into(), ..Default::default() };
    let (_, ops, _) = conv(df, opts).unwrap();
    let args: Vec<String> = execs(&ops).iter().map(|e| e.meta.as_ref().unwrap().args[2].clone()).collect();
    assert_eq!(args, ["echo b"]);
    let (_, ops, _) = conv(df, ConvertOptions::default()).unwrap();
    let mut args: Vec<String> = execs(&ops).iter().map(|e| e.meta.as_ref().unwrap().args[2].clone()).collect();
    args.sort();
    assert_eq!(args, ["echo a", "echo c"]);
}

#[test]
fn errors_name_file_and_line() {
    let err = |df: &str, o: ConvertOptions| conv(df, o).unwrap_err().report();
    assert_eq!(
        err("FROM busybox\nRUNN x\n", ConvertOptions::default()),
        "Dockerfile:2: unknown instruction: RUNN (did you mean RUN?)"
    );
    assert_eq!(
        err("FROM busybox\n", ConvertOptions { target: "nope".into(), ..Default::default() }),
        "Dockerfile: target stage nope could not be found"
    );
    assert!(err("FROM --platform=linux/s390x busybox\n", ConvertOptions::default())
        .starts_with("Dockerfile:1: platform linux/s390x"));
    assert_eq!(err("FROM scratch\nSTOPSIGNAL FOO\n", ConvertOptions::default()), "Dockerfile:2: Invalid signal: FOO");
    assert_eq!(
        err("FROM scratch\nCOPY --from=0 a b\n", ConvertOptions::default()),
        "Dockerfile: circular dependency detected on stage: stage-0"
    );
}

#[test]
fn named_local_context_replaces_an_image() {
    let df = "FROM base\nRUN true\n";
    let mut o = ConvertOptions::default();
    o.named_contexts.insert("base".into(), NamedContext::Local { name: "rootfs".into(), excludes: vec![] });
    let (c, ops, _) = conv(df, o).unwrap();
    assert!(ops.iter().any(|op| matches!(&op.op, Some(pb::op::Op::Source(s)) if s.identifier == "local://rootfs")));
    assert_eq!(c.image_config.env, [format!("PATH={}", crate::graph::state::DEFAULT_PATH)]);
    assert_eq!(c.image_config.working_dir.as_deref(), Some("/"));
}

#[test]
fn run_options_from_frontend_attrs() {
    let attrs = |kv: &[(&str, &str)]| kv.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let o = ConvertOptions::from_frontend_attrs(&attrs(&[
        ("add-hosts", "Foo=10.0.0.1,bar=::1"),
        ("ulimit", "nofile=1024:2048,nproc=10"),
        ("shm-size", "1048576"),
        ("force-network-mode", "none"),
        ("cgroup-parent", "/kiln"),
    ]))
    .unwrap();
    assert_eq!(
        o.extra_hosts,
        vec![("foo".to_owned(), "10.0.0.1".parse().unwrap()), ("bar".to_owned(), "::1".parse().unwrap())]
    );
    assert_eq!(o.ulimits, vec![("nofile".to_owned(), 1024, 2048), ("nproc".to_owned(), 10, 10)]);
    assert_eq!(
        (o.shm_size, o.force_network, o.cgroup_parent.as_deref()),
        (1_048_576, crate::graph::Network::None, Some("/kiln"))
    );
    for (k, v) in
        [("ulimit", "nofile=2:1"), ("ulimit", "bogus=1"), ("add-hosts", "x=notanip"), ("force-network-mode", "weird")]
    {
        assert!(ConvertOptions::from_frontend_attrs(&attrs(&[(k, v)])).is_err(), "{k}={v}");
    }
    // A RUN gets them: /dev/shm tmpfs, ulimits, hosts, the forced network.
    let (_, ops, _) = conv("FROM scratch\nRUN true\n", o).unwrap();
    let exec = execs(&ops).remove(0);
    let meta = exec.meta.unwrap();
    assert_eq!(meta.extra_hosts.len(), 2);
    assert_eq!(meta.ulimit.len(), 2);
    assert_eq!(exec.network, pb::NetMode::None as i32);
    assert!(exec.mounts.iter().any(|m| m.dest == "/dev/shm"));
}
