//! Dockerfile cases: each is built by buildkitd (`buildctl build --frontend dockerfile.v0`) and
//! by kiln (`kiln build --frontend dockerfile.v0`) with the same context, Dockerfile and
//! options; the exported trees are compared, and for `config` cases the image configs of an
//! `oci` export. The base image is the busybox rootfs fixture as the named context `base`
//! (`--opt context:base=local:rootfs`), which both engines support offline.

/// One Dockerfile case.
pub struct DockerfileCase {
    /// The Dockerfile.
    pub dockerfile: &'static str,
    /// Context files (`NAME.tar` holds a tar of one file `inner.txt` with the given content).
    pub files: &'static [(&'static str, &'static str)],
    /// Extra `--opt KEY=VALUE`s.
    pub opts: &'static [&'static str],
    /// Compare the image configs too.
    pub config: bool,
}

const BASE: &[(&str, &str)] = &[("a.txt", "a\n"), ("b.log", "log\n"), ("dir/c.txt", "c\n"), ("dir/sub/d.txt", "d\n")];

/// The cases by name.
pub const CASES: &[(&str, DockerfileCase)] = &[
    ("df_multi_stage", DockerfileCase {
        dockerfile: "FROM base AS build\nRUN mkdir /out && echo built > /out/x\nFROM base AS unused\nRUN false\n\
                     FROM scratch\nCOPY --from=build /out /res\n",
        files: BASE,
        opts: &[],
        config: true,
    }),
    ("df_args_env", DockerfileCase {
        dockerfile: "ARG V=one\nARG IMG=base\nFROM ${IMG}\nARG V\nARG W=two\nENV E=\"$V-$W\" F=${MISSING:-dflt}\n\
                     RUN echo \"$E $F $TARGETOS\" > /r.txt\nARG TARGETOS\nRUN echo \"$TARGETOS $W\" > /t.txt\n\
                     ENV G=${E:+set}\nRUN env | grep -E '^(E|F|G|V|W)=' | sort > /env.txt\n",
        files: BASE,
        opts: &["build-arg:W=three"],
        config: true,
    }),
    ("df_copy_flags", DockerfileCase {
        dockerfile: "FROM base\nCOPY --chown=65534:65534 a.txt /o/\nCOPY --chmod=700 dir /p\nCOPY --chown=nobody:nogroup dir/ /q/\n\
                     COPY *.txt missing* /w/\nCOPY dir/c.txt /newdir/sub/renamed\n",
        files: BASE,
        opts: &[],
        config: false,
    }),
    ("df_copy_link", DockerfileCase {
        dockerfile: "FROM base AS s\nRUN echo s > /s.txt\nFROM base\nCOPY --link a.txt /l/\nCOPY --link --from=s /s.txt /l/s.txt\n\
                     COPY --link --chmod=600 dir /m\n",
        files: BASE,
        opts: &[],
        config: false,
    }),
    ("df_workdir_user", DockerfileCase {
        dockerfile: "FROM base\nWORKDIR /a/b\nWORKDIR c\nRUN pwd > p.txt\nUSER nobody\nWORKDIR /home/nb\nUSER root\nRUN id > /a/id.txt\n",
        files: BASE,
        opts: &[],
        config: true,
    }),
    ("df_heredocs", DockerfileCase {
        dockerfile: "FROM base\nARG X=ex\nRUN <<EOF\necho one > /h1\necho two >> /h1\nEOF\n\
                     RUN <<EOF\n#!/bin/sh\necho script > /h2\nEOF\nCOPY <<EOF /h3\nvalue $X\nEOF\nCOPY <<'EOF' /h4\nraw $X\nEOF\n",
        files: BASE,
        opts: &[],
        config: false,
    }),
    ("df_run_mounts", DockerfileCase {
        dockerfile: "FROM base\nRUN --mount=type=cache,target=/c echo x > /c/f && cp /c/f /cf\n\
                     RUN --mount=type=tmpfs,target=/t touch /t/x && ls /t > /tl\n\
                     RUN --mount=type=bind,source=dir,target=/m cat /m/c.txt > /mc\n\
                     RUN --mount=type=bind,target=/m,rw touch /m/new && ls /m > /ml\n",
        files: BASE,
        opts: &[],
        config: false,
    }),
    ("df_add_tar", DockerfileCase {
        dockerfile: "FROM scratch\nADD arch.tar /x/\nADD a.txt dir /y/\n",
        files: &[("arch.tar", "in the tar\n"), ("a.txt", "a\n"), ("dir/c.txt", "c\n")],
        opts: &[],
        config: false,
    }),
    ("df_dockerignore", DockerfileCase {
        dockerfile: "FROM scratch\nCOPY . /all/\n",
        files: &[(".dockerignore", "*.log\ndir/sub\n!keep.log\n"), ("a.txt", "a\n"), ("b.log", "b\n"), ("keep.log", "k\n"), ("dir/c.txt", "c\n"), ("dir/sub/d.txt", "d\n")],
        opts: &[],
        config: false,
    }),
    ("df_target", DockerfileCase {
        dockerfile: "FROM base AS one\nRUN echo one > /one\nFROM one AS two\nRUN echo two > /two\nFROM scratch\nCOPY --from=two /two /\n",
        files: BASE,
        opts: &["target=two"],
        config: true,
    }),
    ("df_image_config", DockerfileCase {
        dockerfile: "FROM base\nENV A=1 B=\"two words\"\nLABEL l1=v1 \"l 2\"=v2\nEXPOSE 80 53/udp 8000-8001\nVOLUME /data [\"/v2\"]\n\
                     STOPSIGNAL SIGINT\nHEALTHCHECK --interval=5s --retries=2 CMD [\"true\"]\nSHELL [\"/bin/sh\", \"-ec\"]\n\
                     ONBUILD RUN echo child\nUSER nobody\nWORKDIR /w\nENTRYPOINT echo hi\nCMD [\"x\"]\n",
        files: BASE,
        opts: &["label:extra=yes"],
        config: true,
    }),
];
