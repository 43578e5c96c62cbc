//! `kiln build --frontend dockerfile.v0`: a multi-stage Dockerfile built offline on the busybox
//! rootfs fixture (as the named context `base`), its tree and image config; `--opt` errors;
//! Dockerfile errors naming the file and line.

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
        let p = |s: &str| self.dir.path().join(s).display().to_string();
        let (ctx, df, rootfs) =
            (format!("context={}", p("ctx")), format!("dockerfile={}", p("df")), format!("rootfs={}", p("rootfs")));
        let mut args =
            vec!["build", "--progress", "plain", "--frontend", "dockerfile.v0", "--local", &ctx, "--local", &df];
        args.extend(["--local", &rootfs, "--opt", "context:base=local:rootfs"]);
        args.extend_from_slice(extra);
        kiln(&self.dir.path().join("root"), &args)
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
