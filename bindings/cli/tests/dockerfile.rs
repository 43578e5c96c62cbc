//! `kiln build --frontend dockerfile.v0`: a multi-stage Dockerfile built offline on the busybox
//! rootfs fixture (as the named context `base`), its tree and image config; `--opt` errors;
//! Dockerfile errors naming the file and line; cache export then import on a fresh root
//! (`--opt cache-imports=...` and `--import-cache`, local and on a real registry) with every
//! Dockerfile step CACHED.

#[allow(dead_code)]
mod fault_common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};

fn kiln(root: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kiln"))
        .arg("--root")
        .arg(root)
        .args(args)
        .env_remove("KILN_ROOT")
        .output()
        .expect("run kiln")
}

struct Setup {
    dir: tempfile::TempDir,
}

impl Setup {
    fn new(dockerfile: &str) -> Setup {
        let dir = tempfile::tempdir().expect("tempdir");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/make-rootfs");
        let st = Command::new("sh").arg(&script).arg(dir.path().join("rootfs")).status().expect("make-rootfs");
        assert!(st.success(), "make-rootfs failed (is busybox-static installed?)");
        for d in ["ctx/sub", "df"] {
            std::fs::create_dir_all(dir.path().join(d)).unwrap();
        }
        std::fs::write(dir.path().join("ctx/a.txt"), "a\n").unwrap();
        std::fs::write(dir.path().join("ctx/skip.log"), "x\n").unwrap();
        std::fs::write(dir.path().join("ctx/sub/b.txt"), "b\n").unwrap();
        std::fs::write(dir.path().join("ctx/.dockerignore"), "*.log\n").unwrap();
        std::fs::write(dir.path().join("df/Dockerfile"), dockerfile).unwrap();
        Setup { dir }
    }

    fn build(&self, extra: &[&str]) -> Output {
        self.build_in(&self.dir.path().join("root"), extra)
    }

    /// Builds with the kiln root `root`.
    fn build_in(&self, root: &Path, extra: &[&str]) -> Output {
        let p = |s: &str| self.dir.path().join(s).display().to_string();
        let (ctx, df, rootfs) =
            (format!("context={}", p("ctx")), format!("dockerfile={}", p("df")), format!("rootfs={}", p("rootfs")));
        let mut args =
            vec!["build", "--progress", "plain", "--frontend", "dockerfile.v0", "--local", &ctx, "--local", &df];
        args.extend(["--local", &rootfs, "--opt", "context:base=local:rootfs"]);
        args.extend_from_slice(extra);
        kiln(root, &args)
    }
}

const DOCKERFILE: &str = "ARG MSG=default\nFROM base AS build\nARG MSG\nWORKDIR /w\nCOPY . .\n\
RUN echo \"$MSG\" > msg && ls > list\nFROM scratch\nCOPY --from=build /w /out\nENV K=v\nENTRYPOINT [\"/bin/sh\"]\n";

#[test]
fn multi_stage_build_with_args_and_dockerignore() {
    let s = Setup::new(DOCKERFILE);
    let out = s.dir.path().join("out");
    let dest = format!("type=local,dest={}", out.display());
    let o = s.build(&["--opt", "build-arg:MSG=hello", "-o", &dest]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("[build 3/4] RUN echo \"hello\" > msg && ls > list"), "{err}");
    assert_eq!(std::fs::read_to_string(out.join("out/msg")).unwrap(), "hello\n");
    // .dockerignore left skip.log out of the context.
    assert_eq!(std::fs::read_to_string(out.join("out/list")).unwrap(), "a.txt\nlist\nmsg\nsub\n");

    let oci = s.dir.path().join("img.tar");
    let o = s.build(&["--opt", "build-arg:MSG=hello", "-o", &format!("type=oci,dest={}", oci.display())]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stderr).contains("CACHED"));
}

#[test]
fn errors_name_the_dockerfile_line_and_bad_options() {
    let s = Setup::new("FROM base\nRUNN true\n");
    let o = s.build(&[]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("Dockerfile:2: unknown instruction: RUNN"), "{err}");

    let s = Setup::new("FROM base\n");
    let err = String::from_utf8_lossy(&s.build(&["--opt", "target=nope"]).stderr).into_owned();
    assert!(err.contains("target stage nope could not be found"), "{err}");
    let err = String::from_utf8_lossy(&s.build(&["--opt", "context:x=weird:thing"]).stderr).into_owned();
    assert!(err.contains("unsupported context source weird"), "{err}");
    let o = kiln(&s.dir.path().join("root"), &["build", "--frontend", "nope.v1"]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("frontend \"nope.v1\" is not supported"));
}

/// Dockerfile step name (`[build 3/4] RUN ...`) → final status (`CACHED`, `DONE ...`) in a
/// plain progress log.
fn step_states(log: &str) -> BTreeMap<String, String> {
    let mut names: BTreeMap<usize, String> = BTreeMap::new();
    let mut states: BTreeMap<usize, String> = BTreeMap::new();
    for l in log.lines() {
        let Some((n, tail)) = l.strip_prefix('#').and_then(|r| r.split_once(' ')) else { continue };
        let Ok(n) = n.parse::<usize>() else { continue };
        if tail == "CACHED" || tail.starts_with("DONE") || tail.starts_with("ERROR") {
            states.insert(n, tail.to_owned());
        } else {
            names.entry(n).or_insert_with(|| tail.to_owned());
        }
    }
    names
        .into_iter()
        // Dockerfile steps are named `[STAGE N/M] INSTRUCTION ...` (or `[N/M] ...`).
        .filter(|(_, name)| {
            name.strip_prefix('[').and_then(|r| r.split_once("] ")).is_some_and(|(tag, _)| {
                tag.rsplit(' ').next().is_some_and(|c| {
                    c.split_once('/').is_some_and(|(a, b)| a.parse::<u32>().is_ok() && b.parse::<u32>().is_ok())
                })
            })
        })
        .map(|(n, name)| (name, states.remove(&n).unwrap_or_default()))
        .collect()
}

/// Asserts that `o` succeeded and every Dockerfile step of its log is CACHED (and there are
/// `steps` of them).
fn assert_all_cached(o: &Output, steps: usize, what: &str) {
    let log = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{what}: build failed:\n{log}");
    let states = step_states(&log);
    assert_eq!(states.len(), steps, "{what}: expected {steps} Dockerfile steps, got {states:?}\n{log}");
    let ran: Vec<_> = states.iter().filter(|(_, s)| *s != "CACHED").collect();
    assert!(ran.is_empty(), "{what}: steps not CACHED: {ran:?}\n{log}");
}

/// Several stages, a RUN per stage, a COPY --from: 4 steps.
const CACHE_DOCKERFILE: &str = "FROM base AS one\nRUN echo one > /one\nFROM base AS two\nWORKDIR /w\n\
RUN echo two > two\nFROM one\nCOPY --from=two /w/two /two\n";

#[test]
fn cache_imports_local_round_trip_every_step_cached() {
    let s = Setup::new(CACHE_DOCKERFILE);
    let cache = s.dir.path().join("cache");
    let out = s.dir.path().join("out");
    let export = format!("type=local,dest={},mode=max", cache.display());
    let dest = format!("type=local,dest={}", out.display());
    let o = s.build(&["--export-cache", &export, "-o", &dest]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let steps = step_states(&String::from_utf8_lossy(&o.stderr));
    assert_eq!(steps.len(), 4, "{steps:?}");
    assert!(steps.values().all(|s| s.starts_with("DONE")), "the first build runs every step: {steps:?}");
    assert_eq!(std::fs::read_to_string(out.join("two")).unwrap(), "two\n");

    // BuildKit's frontend option, as buildctl passes it.
    let opt = format!("cache-imports=[{{\"Type\":\"local\",\"Attrs\":{{\"src\":\"{}\"}}}}]", cache.display());
    let o = s.build_in(&s.dir.path().join("fresh-opt"), &["--opt", &opt, "-o", &dest]);
    assert_all_cached(&o, 4, "--opt cache-imports (local)");
    // buildctl's --import-cache.
    let import = format!("type=local,src={}", cache.display());
    let o = s.build_in(&s.dir.path().join("fresh-import"), &["--import-cache", &import, "-o", &dest]);
    assert_all_cached(&o, 4, "--import-cache type=local");
    assert_eq!(std::fs::read_to_string(out.join("one")).unwrap(), "one\n");
}

#[test]
fn cache_imports_registry_round_trip_every_step_cached() {
    let reg = fault_common::Registry::start();
    let s = Setup::new(CACHE_DOCKERFILE);
    let cache_ref = format!("{}/kiln/df-cache:1", reg.addr);
    let export = format!("type=registry,ref={cache_ref},mode=max");
    let o = s.build(&["--export-cache", &export]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    let opt = format!("cache-imports=[{{\"Type\":\"registry\",\"Attrs\":{{\"ref\":\"{cache_ref}\"}}}}]");
    let o = s.build_in(&s.dir.path().join("fresh-opt"), &["--opt", &opt]);
    assert_all_cached(&o, 4, "--opt cache-imports (registry)");
    let import = format!("type=registry,ref={cache_ref}");
    let o = s.build_in(&s.dir.path().join("fresh-import"), &["--import-cache", &import]);
    assert_all_cached(&o, 4, "--import-cache type=registry");
    // And an export of the imported result still yields the tree.
    let out = s.dir.path().join("out");
    let dest = format!("type=local,dest={}", out.display());
    let o = s.build_in(&s.dir.path().join("fresh-out"), &["--import-cache", &import, "-o", &dest]);
    assert_all_cached(&o, 4, "--import-cache type=registry with an output");
    assert_eq!(std::fs::read_to_string(out.join("two")).unwrap(), "two\n");
}
