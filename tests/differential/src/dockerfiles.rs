//! Dockerfile cases: each is built by buildkitd (`buildctl build --frontend dockerfile.v0`) and
//! by kiln (`kiln build --frontend dockerfile.v0`) with the same context, Dockerfile and
//! options; the exported trees are compared, and for `config` cases the image configs of an
//! `oci` export. The base image is the busybox rootfs fixture as the named context `base`
//! (`--opt context:base=local:rootfs`), which both engines support offline.

/// One Dockerfile case. In the Dockerfile and the options, `{REG}` stands for the loopback
/// registry holding the base images ([`BASE_IMAGES`]) and `{HTTP}` for the loopback file server
/// (`http://127.0.0.1:PORT`, serving [`HTTP_FILES`]).
pub struct DockerfileCase {
    /// The Dockerfile.
    pub dockerfile: &'static str,
    /// Its name in the dockerfile directory (`filename=` is passed when not `Dockerfile`).
    pub filename: &'static str,
    /// Context files (`NAME.tar` holds a tar of one file `inner.txt` with the given content;
    /// `.tar.gz`, `.tgz`, `.tar.bz2`, `.tar.xz` that tar compressed; `.gz` the content gzipped).
    pub files: &'static [(&'static str, &'static str)],
    /// Files beside the Dockerfile (e.g. `Dockerfile.dockerignore`).
    pub df_files: &'static [(&'static str, &'static str)],
    /// Extra `--opt KEY=VALUE`s.
    pub opts: &'static [&'static str],
    /// Compare the image configs too (fields, author, history).
    pub config: bool,
    /// Both engines must fail.
    pub refused: bool,
}

pub use crate::dfcheck::file_bytes;

/// The defaults cases start from (`..DEF`).
const DEF: DockerfileCase = DockerfileCase {
    dockerfile: "",
    filename: "Dockerfile",
    files: BASE,
    df_files: &[],
    opts: &[],
    config: false,
    refused: false,
};

/// The base images pushed to the loopback registry before the cases run: `(tag, Dockerfile)`,
/// each built by buildkitd on the busybox rootfs (`FROM base`) and pushed as `{REG}/busybox:TAG`.
/// (No `ONBUILD ARG` nor `ONBUILD COPY` from the context: BuildKit v0.11.6's buildkitd panics
/// dispatching either trigger — nil maps in `dispatchArg` and `ctxPaths` — and goes down with
/// every build in flight.)
pub const BASE_IMAGES: &[(&str, &str)] = &[
    ("plain", "FROM base\n"),
    (
        "cfg",
        "FROM base\nENV PATH=/usr/local/bin:/usr/bin:/bin BASEVAR=from-base\nWORKDIR /srv\nLABEL base.label=yes shared=base\n\
         EXPOSE 8080\nVOLUME /basevol\nUSER app\nSTOPSIGNAL SIGTERM\nHEALTHCHECK --interval=9s CMD true\n\
         ENTRYPOINT [\"/bin/sh\", \"-c\"]\nCMD [\"echo base\"]\n",
    ),
    (
        "onbuild",
        "FROM base\nRUN echo base-layer > /base.txt\nONBUILD ENV OBENV=set-by-trigger\n\
         ONBUILD RUN echo \"onbuild $OB $OBENV\" > /onbuild.txt\nONBUILD WORKDIR /obdir\nONBUILD LABEL ob=1\n",
    ),
];

/// The files the loopback HTTP server serves (same naming rules as context files).
pub const HTTP_FILES: &[(&str, &str)] =
    &[("remote.txt", "from http\n"), ("remote.tar.gz", "inside a remote tar\n"), ("other.bin", "bin\n")];

const BASE: &[(&str, &str)] = &[("a.txt", "a\n"), ("b.log", "log\n"), ("dir/c.txt", "c\n"), ("dir/sub/d.txt", "d\n")];

/// The cases by name.
pub const CASES: &[(&str, DockerfileCase)] = &[
    ("df_multi_stage", DockerfileCase {
        dockerfile: "FROM base AS build\nRUN mkdir /out && echo built > /out/x\nFROM base AS unused\nRUN false\n\
                     FROM scratch\nCOPY --from=build /out /res\n",
        config: true,
        ..DEF
    }),
    ("df_args_env", DockerfileCase {
        dockerfile: "ARG V=one\nARG IMG=base\nFROM ${IMG}\nARG V\nARG W=two\nENV E=\"$V-$W\" F=${MISSING:-dflt}\n\
                     RUN echo \"$E $F $TARGETOS\" > /r.txt\nARG TARGETOS\nRUN echo \"$TARGETOS $W\" > /t.txt\n\
                     ENV G=${E:+set}\nRUN env | grep -E '^(E|F|G|V|W)=' | sort > /env.txt\n",
        opts: &["build-arg:W=three"],
        config: true,
        ..DEF
    }),
    ("df_copy_flags", DockerfileCase {
        dockerfile: "FROM base\nCOPY --chown=65534:65534 a.txt /o/\nCOPY --chmod=700 dir /p\nCOPY --chown=nobody:nogroup dir/ /q/\n\
                     COPY *.txt missing* /w/\nCOPY dir/c.txt /newdir/sub/renamed\n",
        ..DEF
    }),
    ("df_copy_link", DockerfileCase {
        dockerfile: "FROM base AS s\nRUN echo s > /s.txt\nFROM base\nCOPY --link a.txt /l/\nCOPY --link --from=s /s.txt /l/s.txt\n\
                     COPY --link --chmod=600 dir /m\n",
        ..DEF
    }),
    ("df_workdir_user", DockerfileCase {
        dockerfile: "FROM base\nWORKDIR /a/b\nWORKDIR c\nRUN pwd > p.txt\nUSER nobody\nWORKDIR /home/nb\nUSER root\nRUN id > /a/id.txt\n",
        config: true,
        ..DEF
    }),
    ("df_heredocs", DockerfileCase {
        dockerfile: "FROM base\nARG X=ex\nRUN <<EOF\necho one > /h1\necho two >> /h1\nEOF\n\
                     RUN <<EOF\n#!/bin/sh\necho script > /h2\nEOF\nCOPY <<EOF /h3\nvalue $X\nEOF\nCOPY <<'EOF' /h4\nraw $X\nEOF\n",
        ..DEF
    }),
    ("df_run_mounts", DockerfileCase {
        dockerfile: "FROM base\nRUN --mount=type=cache,target=/c echo x > /c/f && cp /c/f /cf\n\
                     RUN --mount=type=tmpfs,target=/t touch /t/x && ls /t > /tl\n\
                     RUN --mount=type=bind,source=dir,target=/m cat /m/c.txt > /mc\n\
                     RUN --mount=type=bind,target=/m,rw touch /m/new && ls /m > /ml\n",
        ..DEF
    }),
    ("df_add_tar", DockerfileCase {
        dockerfile: "FROM scratch\nADD arch.tar /x/\nADD a.txt dir /y/\n",
        files: &[("arch.tar", "in the tar\n"), ("a.txt", "a\n"), ("dir/c.txt", "c\n")],
        opts: &[],
        ..DEF
    }),
    ("df_dockerignore", DockerfileCase {
        dockerfile: "FROM scratch\nCOPY . /all/\n",
        files: &[(".dockerignore", "*.log\ndir/sub\n!keep.log\n"), ("a.txt", "a\n"), ("b.log", "b\n"), ("keep.log", "k\n"), ("dir/c.txt", "c\n"), ("dir/sub/d.txt", "d\n")],
        opts: &[],
        ..DEF
    }),
    ("df_target", DockerfileCase {
        dockerfile: "FROM base AS one\nRUN echo one > /one\nFROM one AS two\nRUN echo two > /two\nFROM scratch\nCOPY --from=two /two /\n",
        opts: &["target=two"],
        config: true,
        ..DEF
    }),
    ("df_image_config", DockerfileCase {
        dockerfile: "FROM base\nENV A=1 B=\"two words\"\nLABEL l1=v1 \"l 2\"=v2\nEXPOSE 80 53/udp 8000-8001\nVOLUME /data [\"/v2\"]\n\
                     STOPSIGNAL SIGINT\nHEALTHCHECK --interval=5s --retries=2 CMD [\"true\"]\nSHELL [\"/bin/sh\", \"-ec\"]\n\
                     ONBUILD RUN echo child\nUSER nobody\nWORKDIR /w\nENTRYPOINT echo hi\nCMD [\"x\"]\n",
        opts: &["label:extra=yes"],
        config: true,
        ..DEF
    }),
    ("df_registry_base", DockerfileCase {
        dockerfile: "FROM {REG}/busybox:plain\nRUN echo hi > /hi\nCMD [\"/bin/sh\"]\n",
        config: true,
        ..DEF
    }),
    ("df_registry_config_inherit", DockerfileCase {
        dockerfile: "FROM {REG}/busybox:cfg\nENV EXTRA=1\nLABEL shared=child\n\
                     RUN pwd > /tmp/pwd.txt && id > /tmp/id.txt && env | grep -v -e OTEL -e TRACEPARENT | sort > /tmp/env.txt && echo \"$BASEVAR\" > /tmp/bv\n\
                     EXPOSE 9090/udp\nVOLUME /childvol\n",
        config: true,
        ..DEF
    }),
    ("df_registry_onbuild", DockerfileCase {
        dockerfile: "FROM {REG}/busybox:onbuild\nARG OB\nRUN cat /onbuild.txt > /check && pwd >> /check\n",
        opts: &["build-arg:OB=from-opt"],
        config: true,
        ..DEF
    }),
    ("df_registry_entrypoint_resets_cmd", DockerfileCase {
        dockerfile: "FROM {REG}/busybox:cfg AS a\nENTRYPOINT [\"/bin/echo\"]\nFROM {REG}/busybox:cfg AS b\nCMD [\"other\"]\n\
                     FROM a\nUSER root\nHEALTHCHECK NONE\n",
        config: true,
        ..DEF
    }),
    ("df_registry_stage_chain", DockerfileCase {
        dockerfile: "FROM {REG}/busybox:cfg AS a\nENV A=1\nUSER root\nWORKDIR rel\nFROM a AS b\nRUN echo \"$A $BASEVAR\" > x && pwd >> x\n\
                     FROM b\nCMD [\"b\"]\n",
        config: true,
        ..DEF
    }),
    ("df_copy_from_image", DockerfileCase {
        dockerfile: "FROM scratch\nCOPY --from={REG}/busybox:plain /etc/passwd /p\nCOPY --from=base /etc/group /g\n\
                     COPY --from={REG}/busybox:onbuild /base.txt /b/\n",
        ..DEF
    }),
    ("df_named_context_image", DockerfileCase {
        dockerfile: "FROM scratch AS other\nCOPY --from=img /etc/passwd /p\nFROM img\nRUN echo \"$BASEVAR\" > /tmp/bv\n",
        opts: &["context:img=docker-image://{REG}/busybox:cfg"],
        config: true,
        ..DEF
    }),
    ("df_named_context_local", DockerfileCase {
        dockerfile: "FROM scratch\nCOPY --from=extra dir /d\nCOPY --from=extra file.txt exec.sh /f/\n\
                     FROM base\nRUN --mount=from=extra,target=/e cat /e/file.txt > /from-extra\n",
        opts: &["context:extra=local:ctx"],
        ..DEF
    }),
    ("df_named_context_replaces_stage", DockerfileCase {
        dockerfile: "FROM base AS deps\nRUN echo from-stage > /deps\nFROM scratch\nCOPY --from=deps /etc/passwd /p\n",
        opts: &["context:deps=docker-image://{REG}/busybox:plain"],
        ..DEF
    }),
    ("df_platform_args", DockerfileCase {
        dockerfile: "FROM base AS b-amd64\nRUN echo amd > /arch\nFROM base AS b-arm64\nRUN echo arm > /arch\n\
                     FROM b-${TARGETARCH}\nARG TARGETPLATFORM\nARG TARGETOS\nARG TARGETARCH\nARG TARGETVARIANT\nARG BUILDPLATFORM\n\
                     ARG BUILDOS\nARG BUILDARCH\nARG BUILDVARIANT\n\
                     RUN echo \"$TARGETPLATFORM $TARGETOS $TARGETARCH [$TARGETVARIANT] $BUILDPLATFORM $BUILDOS $BUILDARCH [$BUILDVARIANT]\" > /p\n",
        config: true,
        ..DEF
    }),
    ("df_run_forms", DockerfileCase {
        dockerfile: "FROM base\nRUN [\"/bin/sh\", \"-c\", \"echo exec > /e\"]\nRUN [\"touch\", \"/t\"]\nSHELL [\"/bin/sh\", \"-xc\"]\n\
                     RUN echo shell > /s\nRUN echo a \\\n  && echo b \\\n# a comment inside\n  && echo c > /cont\n\
                     RUN [ \"$(echo x)\" = x ] && echo ok > /brackets\n",
        config: true,
        ..DEF
    }),
    ("df_expansion_forms", DockerfileCase {
        dockerfile: "FROM base\nARG U=app\nARG P=8080\nENV A=a B=\"b c\" C='$A' D=${A}x E=${UNSET:-def} F=${A:+alt} G=\\$A\n\
                     ENV I=${A:-unused} J=${UNSET:+never} K=\"${B} ${C}\"\nWORKDIR /$A/${D}\nCOPY a.txt /${A}-dir/\n\
                     LABEL lab=$B other=\"${E}\"\nEXPOSE $P ${P}/udp\nVOLUME $A\nSTOPSIGNAL ${SIG:-SIGQUIT}\n\
                     RUN env | grep -E '^[A-K]=' | sort > /env.txt\nUSER ${U}\n",
        config: true,
        ..DEF
    }),
    ("df_escape_directive", DockerfileCase {
        dockerfile: "# escape=`\nFROM base\nRUN echo a `\n  && echo b > /x\nCOPY dir/c.txt `\n  /c\nENV P=C:\\dir\\x\n",
        config: true,
        ..DEF
    }),
    ("df_shell_and_cmd_forms", DockerfileCase {
        dockerfile: "FROM base\nSHELL [\"/bin/sh\", \"-ec\"]\nRUN echo $0 > /shell\nENTRYPOINT [\"a\", \"b\"]\nCMD c d \"e f\"\n",
        config: true,
        ..DEF
    }),
    ("df_entrypoint_shell_form", DockerfileCase {
        dockerfile: "FROM base\nCMD [\"x\"]\nENTRYPOINT exec top -b\nSTOPSIGNAL 9\n",
        config: true,
        ..DEF
    }),
    ("df_healthcheck_forms", DockerfileCase {
        dockerfile: "FROM base AS a\nHEALTHCHECK --interval=30s --timeout=3s --start-period=1s --retries=3 CMD wget -q localhost || exit 1\n\
                     FROM a\nHEALTHCHECK CMD [\"/bin/true\", \"x\"]\n",
        config: true,
        ..DEF
    }),
    ("df_maintainer_labels", DockerfileCase {
        dockerfile: "FROM base\nMAINTAINER Some One <one@example.com>\nLABEL multi=\"a \\\n b\" \\\n  second=2\nLABEL \"quoted key\"='single $X'\n\
                     LABEL version=1.0 version=2.0\n",
        opts: &["label:version=opt", "label:new=from-opt"],
        config: true,
        ..DEF
    }),
    ("df_expose_volume_forms", DockerfileCase {
        dockerfile: "FROM base\nEXPOSE 80/tcp 443 1000-1002/udp 53/UDP\nVOLUME [\"/a\", \"/b\"]\nVOLUME /c /d\nRUN ls / > /root-list\n",
        config: true,
        ..DEF
    }),
    ("df_arg_scoping", DockerfileCase {
        dockerfile: "ARG GLOBAL=g\nARG OVER=global-default\nFROM base AS one\nARG LOCAL=l1\nRUN echo \"[$GLOBAL] [$LOCAL]\" > /one\nARG GLOBAL\n\
                     RUN echo \"[$GLOBAL]\" >> /one\nFROM one AS two\nRUN echo \"[$LOCAL] [$GLOBAL]\" > /two\nARG OVER\nARG NODEF\n\
                     ENV OVER=env-wins\nARG OVER=arg-default\nRUN echo \"[$OVER] [$NODEF]\" >> /two\nARG CH=65534\n\
                     COPY --chown=$CH:$CH a.txt /owned\n",
        opts: &["build-arg:OVER=from-opt", "build-arg:NODEF=nd", "build-arg:UNUSED=u"],
        config: true,
        ..DEF
    }),
    ("df_copy_wildcards_slashes", DockerfileCase {
        dockerfile: "FROM scratch\nCOPY dir/*.txt /w/\nCOPY ?.txt /q/\nCOPY [ab].* /br/\nCOPY dir/sub/ /ds\nCOPY a.txt /file-no-slash\n\
                     COPY a.txt b.log /multi/\nCOPY dir /existing/\nCOPY dir /existing/\nCOPY dir/sub/../c.txt /dotdot\n\
                     COPY . /whole\nCOPY dir/* /flat/\n",
        ..DEF
    }),
    ("df_copy_workdir_relative", DockerfileCase {
        dockerfile: "FROM base\nWORKDIR /app\nCOPY a.txt .\nCOPY a.txt rel/\nCOPY dir ./d\nCOPY dir/c.txt renamed\nWORKDIR sub\nCOPY b.log ..\n",
        config: true,
        ..DEF
    }),
    ("df_copy_from_stage_paths", DockerfileCase {
        dockerfile: "FROM base AS s\nRUN mkdir -p /out/in && echo 1 > /out/one && echo 2 > /out/in/two && ln -s one /out/link\n\
                     FROM scratch\nCOPY --from=s /out/ /x\nCOPY --from=s /out/* /y/\nCOPY --from=0 /out/in /z\n\
                     COPY --from=s /out/link /l\nCOPY --from=s --chmod=0640 /out/one /m\n",
        ..DEF
    }),
    ("df_copy_chown_forms", DockerfileCase {
        dockerfile: "FROM base\nARG U=app\nARG G=staff\nCOPY --chown=1000 a.txt /c1\nCOPY --chown=app a.txt /c2\nCOPY --chown=app:50 a.txt /c3\n\
                     COPY --chown=${U}:${G} dir /c4\nCOPY --chown=1234:5678 --chmod=751 a.txt /c5\nADD --chown=app:app b.log /c6\n",
        ..DEF
    }),
    ("df_add_compressed", DockerfileCase {
        dockerfile: "FROM scratch\nADD plain.tar /t/\nADD gz.tar.gz /gz/\nADD tgz.tgz /tgz/\nADD bz.tar.bz2 /bz/\nADD xz.tar.xz /xz/\n\
                     ADD raw.gz /raw/\nCOPY gz.tar.gz /copied/\nADD bz.tar.bz2 /renamed-no-slash\n",
        files: &[
            ("plain.tar", "plain\n"),
            ("gz.tar.gz", "gzip\n"),
            ("tgz.tgz", "tgz\n"),
            ("bz.tar.bz2", "bzip2\n"),
            ("xz.tar.xz", "xz\n"),
            ("raw.gz", "not a tar\n"),
        ],
        ..DEF
    }),
    ("df_add_tar_chown_link", DockerfileCase {
        dockerfile: "FROM base\nADD --chown=app:app arch.tar /owned/\nADD --link arch.tar /linked/\nADD --link --chown=1000 a.txt /la/\n\
                     COPY --link --chown=1000:50 dir /ld\n",
        files: &[("arch.tar", "in the tar\n"), ("a.txt", "a\n"), ("dir/c.txt", "c\n")],
        ..DEF
    }),
    ("df_add_url", DockerfileCase {
        dockerfile: "FROM base\nADD {HTTP}/remote.txt /u/\nADD {HTTP}/remote.txt /named\nADD {HTTP}/remote.tar.gz /t/\n\
                     ADD --chmod=644 {HTTP}/other.bin /m/\nADD --chown=app:app {HTTP}/other.bin /o\nADD --link {HTTP}/remote.txt /lk/\n",
        ..DEF
    }),
    ("df_mount_cache_options", DockerfileCase {
        dockerfile: "FROM base AS seed\nRUN mkdir /seed && echo seeded > /seed/s\n\
                     FROM base\nARG RUNID=x\nRUN --mount=type=cache,target=/c,id=df-cache-opts,sharing=locked,uid=1000,gid=50,mode=0750 \
                     ls -ldn /c | cut -d' ' -f1,3,4 > /stat\n\
                     RUN --mount=type=cache,target=/p,sharing=private ls -ldn /p | cut -d' ' -f1,3,4 > /pstat\n\
                     RUN --mount=type=cache,target=/s,from=seed,source=/seed,id=df-seeded cat /s/s > /seeded\n\
                     RUN --mount=type=cache,target=/r,ro,id=df-ro test -d /r && echo ro > /ro\n\
                     RUN --mount=type=cache,target=/sh,sharing=shared ls -ldn /sh | cut -d' ' -f1,3,4 > /shstat\n",
        ..DEF
    }),
    ("df_mount_bind_from", DockerfileCase {
        dockerfile: "FROM base AS s\nRUN mkdir /out && echo x > /out/x\nFROM base\nRUN --mount=type=bind,from=s,source=/out,target=/m cat /m/x > /y\n\
                     RUN --mount=from=s,target=/whole cat /whole/out/x > /z\n\
                     RUN --mount=type=bind,from={REG}/busybox:onbuild,source=/base.txt,target=/b.txt cat /b.txt > /img\n\
                     RUN --mount=target=/ctx ls /ctx > /ctxlist\nRUN --mount=type=bind,source=a.txt,target=/etc/a.txt cat /etc/a.txt > /af\n",
        ..DEF
    }),
    ("df_mount_secret", DockerfileCase {
        dockerfile: "FROM base\nRUN --mount=type=secret,id=mysecret cat /run/secrets/mysecret > /s1\n\
                     RUN --mount=type=secret,id=mysecret,target=/x/sec,mode=0440,uid=1000,gid=50 ls -ln /x/sec | cut -d' ' -f1,3,4 > /s2 && cat /x/sec >> /s2\n\
                     RUN --mount=type=secret,id=missing,required=false ls /run/secrets > /s3 || echo none > /s3\n\
                     RUN --mount=type=secret,id=mysecret,dst=/d cat /d > /s4\n",
        ..DEF
    }),
    ("df_mount_secret_required_missing", DockerfileCase {
        dockerfile: "FROM base\nRUN --mount=type=secret,id=missing,required=true true\n",
        refused: true,
        ..DEF
    }),
    ("df_mount_ssh", DockerfileCase {
        dockerfile: "FROM base\nRUN --mount=type=ssh test -S \"$SSH_AUTH_SOCK\" && echo \"$SSH_AUTH_SOCK\" > /ssh1\n\
                     RUN --mount=type=ssh,id=default,target=/s.sock,mode=0600,uid=1000 ls -ln /s.sock | cut -d' ' -f1,3,4 > /ssh2\n",
        ..DEF
    }),
    ("df_mount_tmpfs_and_network", DockerfileCase {
        dockerfile: "FROM base\nRUN --mount=type=tmpfs,target=/t,size=1m touch /t/x && ls /t > /tl\nRUN --network=none echo none > /n\n\
                     RUN --network=default echo default > /d\n",
        ..DEF
    }),
    ("df_network_host_refused", DockerfileCase {
        dockerfile: "FROM base\nRUN --network=host true\n",
        refused: true,
        ..DEF
    }),
    ("df_security_insecure_refused", DockerfileCase {
        dockerfile: "FROM base\nRUN --security=insecure true\n",
        refused: true,
        ..DEF
    }),
    ("df_dockerfile_dockerignore", DockerfileCase {
        dockerfile: "FROM scratch\nCOPY . /all/\n",
        filename: "Custom.df",
        files: &[(".dockerignore", "*.txt\n"), ("a.txt", "a\n"), ("b.log", "b\n"), ("dir/c.txt", "c\n")],
        df_files: &[("Custom.df.dockerignore", "*.log\n")],
        ..DEF
    }),
    ("df_workdir_user_owned", DockerfileCase {
        dockerfile: "FROM base\nUSER app\nWORKDIR /work/here\nUSER 1000:50\nWORKDIR /w2\nUSER root\nRUN ls -ldn /work /work/here /w2 | cut -d' ' -f1,3,4 > /stat\n\
                     USER app:staff\nRUN id > /tmp/id1\nUSER 1234\nRUN id > /tmp/id2\n",
        config: true,
        ..DEF
    }),
    ("df_onbuild_stage", DockerfileCase {
        dockerfile: "FROM base AS p\nONBUILD RUN echo trig > /trig\nONBUILD ENV OB=1\nRUN echo p > /p\nFROM p\nRUN cat /trig > /t\n",
        config: true,
        ..DEF
    }),
    ("df_heredoc_variants", DockerfileCase {
        dockerfile: "FROM base\nRUN <<-EOF\n\techo tabs > /tabs\n\tEOF\nRUN cat <<EOF > /stdin\nfed $HOME\nEOF\n\
                     COPY <<A <<B /multi/\nfile a\nA\nfile b\nB\nRUN <<EOF sh -e\necho arg-shell > /as\nEOF\n\
                     COPY --chmod=755 <<EOF /script.sh\n#!/bin/sh\necho hi\nEOF\n",
        ..DEF
    }),
    ("df_no_cache_and_env_forms", DockerfileCase {
        dockerfile: "FROM base\nENV LEGACY value with spaces\nENV Q=\"x\" \\\n    R=y\nRUN echo \"$LEGACY|$Q|$R\" > /e\n",
        opts: &["no-cache="],
        config: true,
        ..DEF
    }),
    ("df_copy_missing_refused", DockerfileCase {
        dockerfile: "FROM base\nCOPY nothere.txt /\n",
        refused: true,
        ..DEF
    }),
    ("df_unknown_stage_refused", DockerfileCase {
        dockerfile: "FROM base\nCOPY --from=nostage /x /\n",
        refused: true,
        ..DEF
    }),
    ("df_from_platform_and_meta_args", DockerfileCase {
        dockerfile: "ARG IMG=scratch\nARG TAG\nFROM --platform=$BUILDPLATFORM base AS tools\nRUN echo \"$TARGETPLATFORM|$BUILDPLATFORM\" > /tp\n\
                     FROM --platform=linux/amd64 ${IMG} AS final\nARG IMG\nARG TAG=stage-default\nCOPY --from=tools /tp /tp\n\
                     RUN echo \"$IMG $TAG\" > /img\n",
        opts: &["build-arg:IMG=base", "platform=linux/amd64"],
        config: true,
        ..DEF
    }),
    ("df_env_self_reference", DockerfileCase {
        dockerfile: "FROM base\nENV A=1\nENV A=2 B=$A C=${A}x\nENV D=\nENV E=\"\"\nENV PATH=/custom:$PATH\nUSER ${NOPE:-root}\n\
                     ENV SIG=SIGUSR1\nSTOPSIGNAL $SIG\nRUN echo \"$A $B $C [$D] [$E] $PATH\" > /e\n",
        config: true,
        ..DEF
    }),
    ("df_stage_name_case", DockerfileCase {
        dockerfile: "FROM base AS Builder\nRUN echo b > /b\nFROM scratch\nCOPY --from=builder /b /b\nCOPY --from=BUILDER /b /b2\n",
        ..DEF
    }),
    ("df_label_legacy_and_quotes", DockerfileCase {
        dockerfile: "FROM base\nLABEL legacy value with spaces\nLABEL a=\"x\\\"y\" b='s q' c=es\\ caped\n",
        config: true,
        ..DEF
    }),
    ("df_context_symlinks_and_modes", DockerfileCase {
        dockerfile: "FROM scratch\nCOPY --from=c . /all/\nCOPY --from=c link-rel /followed\nCOPY --from=c dirlink /dl\n\
                     COPY --from=c dir/sub /sub\nCOPY --from=o sub /owned\n",
        opts: &["context:c=local:ctx", "context:o=local:owned"],
        ..DEF
    }),
    ("df_dockerignore_patterns", DockerfileCase {
        dockerfile: "FROM scratch\nCOPY . /all/\n",
        files: &[
            (".dockerignore", "# comment\n**/*.log\n/dir/sub\n!dir/sub/keep.txt\nDockerfile\n.dockerignore\n"),
            ("a.txt", "a\n"),
            ("b.log", "b\n"),
            ("dir/c.log", "c\n"),
            ("dir/c.txt", "c\n"),
            ("dir/sub/d.txt", "d\n"),
            ("dir/sub/keep.txt", "k\n"),
        ],
        ..DEF
    }),
    ("df_run_opts_hosts_ulimit", DockerfileCase {
        dockerfile: "FROM base\nRUN cat /etc/hosts > /hosts && ulimit -n > /nofile && ulimit -Hn >> /nofile && hostname > /hostname\n\
                     RUN df -k /dev/shm | tail -1 | awk '{print $2}' > /shm\n",
        opts: &["add-hosts=foo=10.1.2.3,Bar=10.4.5.6", "ulimit=nofile=1024:2048", "hostname=myhost", "shm-size=2097152"],
        ..DEF
    }),
    ("df_force_network_none", DockerfileCase {
        dockerfile: "FROM base\nRUN cat /proc/net/dev | wc -l > /ifaces\n",
        opts: &["force-network-mode=none"],
        ..DEF
    }),
    ("df_add_archive_flags", DockerfileCase {
        dockerfile: "FROM base\nADD --chmod=700 arch.tar /ch/\nADD arch.tar /ex/\nADD arch.tar /ex/\nCOPY arch.tar /notextracted/\n\
                     ADD arch.tar gz.tar.gz /both/\nWORKDIR /rel\nADD arch.tar sub/\n",
        files: &[("arch.tar", "in the tar\n"), ("gz.tar.gz", "gz\n")],
        ..DEF
    }),
    ("df_copy_chmod_from_stage_dir", DockerfileCase {
        dockerfile: "FROM base AS s\nRUN mkdir -p /o/d && echo 1 > /o/d/f && chmod 600 /o/d/f\n\
                     FROM base\nCOPY --from=s --chown=app --chmod=0755 /o /x\nCOPY --from=s --chmod=444 /o/d/f /y/\n\
                     COPY --link --from=s --chown=1000:1000 /o /z\n",
        ..DEF
    }),
    ("df_shell_affects_cmd_healthcheck", DockerfileCase {
        dockerfile: "FROM base\nSHELL [\"/bin/sh\", \"-ec\"]\nCMD echo hi\nENTRYPOINT run me\nHEALTHCHECK --retries=65 CMD check it\n\
                     RUN echo \"$0\" > /s\n",
        config: true,
        ..DEF
    }),
    ("df_crlf_and_comments", DockerfileCase {
        dockerfile: "# leading comment\r\nFROM base\r\n\r\n# comment between\r\nRUN echo a \\\r\n    b > /ab\r\n   # indented comment\r\nENV X=1\r\n",
        config: true,
        ..DEF
    }),
    ("df_build_args_in_run_history", DockerfileCase {
        dockerfile: "FROM base\nARG A=1 B\nARG C=${A}c\nENV A=env\nRUN echo \"$A $B $C\" > /abc\nARG D=late\nRUN --mount=type=tmpfs,target=/t echo $D > /d\n",
        opts: &["build-arg:B=given"],
        config: true,
        ..DEF
    }),
    ("df_multi_target_unused_stage_errors", DockerfileCase {
        dockerfile: "FROM base AS bad\nRUN exit 1\nFROM base AS good\nRUN echo ok > /ok\nFROM good\nCOPY --from=good /ok /ok2\n",
        config: true,
        ..DEF
    }),
    ("df_copy_heredoc_and_dest_forms", DockerfileCase {
        dockerfile: "FROM base\nWORKDIR /w\nCOPY <<EOF rel.txt\nrelative $HOME\nEOF\nCOPY <<EOF /abs/\nin dir\nEOF\nCOPY --chown=app:app <<EOF /owned\nx\nEOF\n\
                     RUN <<A cat > /two && <<B cat >> /two\nfirst\nA\nsecond\nB\n",
        config: true,
        ..DEF
    }),
    ("df_registry_via_arg_and_copy", DockerfileCase {
        dockerfile: "ARG IMG={REG}/busybox:cfg\nFROM $IMG AS cfg\nUSER root\nCOPY a.txt rel.txt\nRUN touch made-here\n\
                     FROM {REG}/busybox:onbuild AS ob\nFROM ob\nRUN ls /onbuild.txt > /seen\n\
                     FROM scratch\nCOPY --from=cfg /srv /srv\nCOPY --from={REG}/busybox:cfg etc/passwd /p\nCOPY --from=2 /seen /obdir/ /x/\n",
        config: true,
        ..DEF
    }),
    ("df_user_owned_files", DockerfileCase {
        dockerfile: "FROM base\nUSER app\nCOPY a.txt /tmp/copied\nADD dir /tmp/added\nRUN touch /tmp/made && mkdir /tmp/d\nUSER root\n\
                     RUN ls -ln /tmp | sed 1d | awk '{print $1, $3, $4, $9}' > /owners\n",
        ..DEF
    }),
    ("df_empty_exec_forms", DockerfileCase {
        dockerfile: "FROM {REG}/busybox:cfg AS a\nCMD []\nFROM {REG}/busybox:cfg AS b\nENTRYPOINT []\nFROM base AS c\nENTRYPOINT [\"\"]\nCMD [\"\"]\n\
                     FROM a\n",
        config: true,
        ..DEF
    }),
    ("df_empty_entrypoint_stage", DockerfileCase {
        dockerfile: "FROM {REG}/busybox:cfg\nENTRYPOINT []\n",
        config: true,
        ..DEF
    }),
    ("df_label_opt_over_base", DockerfileCase {
        dockerfile: "FROM {REG}/busybox:cfg\nLABEL mine=1\n",
        opts: &["label:shared=opt", "label:base.label="],
        config: true,
        ..DEF
    }),
    ("df_copy_link_onto_existing", DockerfileCase {
        dockerfile: "FROM base\nRUN mkdir -p /existing/sub && echo old > /existing/f && echo keep > /existing/k\n\
                     COPY --link a.txt /existing\nCOPY --link dir/ /existing/sub/\nCOPY --link b.log /bin/\n",
        ..DEF
    }),
    ("df_workdir_scratch_and_mount_targets", DockerfileCase {
        dockerfile: "FROM base AS s\nRUN mkdir -p /data && echo d > /data/x\nFROM base\nWORKDIR /app/../srv/./x\n\
                     RUN --mount=type=bind,from=s,source=data,target=rel cat rel/x > got && pwd >> got\n\
                     FROM scratch\nWORKDIR app\nCOPY . .\nCOPY --from=1 /srv/x/got ./\n",
        config: true,
        ..DEF
    }),
    ("df_heredoc_quoting", DockerfileCase {
        dockerfile: "FROM base\nARG V=arg\nRUN <<\"EOF\"\necho \"$V\" > /q1\nEOF\nRUN <<-'EOF'\n\techo \"$V\" > /q2\n\tEOF\n\
                     COPY <<\"EOF\" /q3\n$V stays\nEOF\nCOPY <<-EOF /q4\n\t$V expands\n\tEOF\n",
        ..DEF
    }),
    ("df_healthcheck_start_interval_refused", DockerfileCase {
        dockerfile: "FROM base\nHEALTHCHECK --start-interval=1s CMD true\n",
        refused: true,
        ..DEF
    }),
    ("df_parse_errors_refused", DockerfileCase {
        dockerfile: "FROM base\nCOPY\n",
        refused: true,
        ..DEF
    }),
    ("df_stopsignal_invalid_refused", DockerfileCase {
        dockerfile: "FROM base\nSTOPSIGNAL SIGNOPE\n",
        refused: true,
        ..DEF
    }),
    ("df_add_checksum_refused", DockerfileCase {
        dockerfile: "FROM base\nADD --checksum=sha256:0000000000000000000000000000000000000000000000000000000000000000 {HTTP}/remote.txt /r\n",
        refused: true,
        ..DEF
    }),
    ("df_directive_after_unknown_refused", DockerfileCase {
        dockerfile: "# foo=bar\n# ESCAPE=`\nFROM base\nRUN echo a `\n  b > /x\n",
        refused: true,
        ..DEF
    }),
    ("df_directive_uppercase", DockerfileCase {
        dockerfile: "# ESCAPE=`\nFROM base\nRUN echo a `\n  b > /x\n# escape=\\\nENV Y=1\n",
        config: true,
        ..DEF
    }),
    ("df_directive_after_comment_ignored", DockerfileCase {
        dockerfile: "# a comment first\n# escape=`\nFROM base\nRUN echo a \\\n  b > /x\n",
        ..DEF
    }),
    ("df_filename_in_subdir", DockerfileCase {
        dockerfile: "FROM scratch\nCOPY . /all/\n",
        filename: "sub/My.Dockerfile",
        files: &[(".dockerignore", "*.txt\n"), ("a.txt", "a\n"), ("b.log", "b\n"), ("c.md", "c\n")],
        df_files: &[("sub/My.Dockerfile.dockerignore", "*.md\n")],
        ..DEF
    }),
    ("df_target_stage_index_and_no_cache_stage", DockerfileCase {
        dockerfile: "FROM base AS first\nRUN echo 1 > /one\nFROM first AS second\nRUN echo 2 > /two\nLABEL stage=second\nFROM scratch\n",
        opts: &["target=second", "no-cache=first"],
        config: true,
        ..DEF
    }),
];
