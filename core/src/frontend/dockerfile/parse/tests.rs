//! Instruction parsing: BuildKit's instructions/parse_test.go and parse_heredoc_test.go cases,
//! plus each instruction's fields, flags, errors (with lines) and expansion.

use std::collections::HashMap;

use crate::frontend::dockerfile::*;

fn one(text: &str) -> Result<Parsed, DockerfileError> {
    let ast = parser::parse(text)?;
    parse_instruction(&ast.children[0])
}

fn err(text: &str) -> String {
    one(text).unwrap_err().message
}

fn instr(text: &str) -> Instruction {
    match one(text).unwrap() {
        Parsed::Command(c) => c.instruction,
        Parsed::Stage(s) => panic!("{text} gave a stage {s:?}"),
    }
}

fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

#[test]
fn argument_counts() {
    for cmd in ["MAINTAINER", "WORKDIR", "USER", "STOPSIGNAL"] {
        assert_eq!(err(cmd), format!("{cmd} requires exactly one argument"));
    }
    for cmd in ["ENV", "LABEL", "ONBUILD", "HEALTHCHECK", "EXPOSE", "VOLUME", "ARG", "SHELL"] {
        assert_eq!(err(cmd), format!("{cmd} requires at least one argument"));
    }
    for cmd in ["ADD", "COPY"] {
        assert_eq!(
            err(&format!("{cmd} arg1")),
            format!(
                "{cmd} requires at least two arguments, but only one was provided. Destination could not be determined"
            )
        );
    }
    assert_eq!(
        err("COPY\t\n\t\tquux \\\n      bar").split('.').next().unwrap(),
        "COPY requires at least two arguments, but only one was provided"
    );
    assert_eq!(err("FROM"), "FROM requires either one or three arguments");
    assert_eq!(err("FROM a b"), "FROM requires either one or three arguments");
    assert_eq!(err("FROM a AS b c"), "FROM requires either one or three arguments");
    assert_eq!(
        err("FROM a AS 1b"),
        "invalid name for build stage: \"1b\", name can't start with a number or contain symbols"
    );
    assert_eq!(
        err("FROM a AS b$"),
        "invalid name for build stage: \"b$\", name can't start with a number or contain symbols"
    );
    assert_eq!(err("ENV =x"), "ENV names can not be blank");
    assert_eq!(err("LABEL =x"), "LABEL names can not be blank");
    assert_eq!(err("ARG =x"), "ARG names can not be blank");
}

#[test]
fn errors_like_buildkit() {
    assert_eq!(err("ONBUILD FROM scratch"), "FROM isn't allowed as an ONBUILD trigger");
    assert_eq!(err("ONBUILD MAINTAINER me"), "MAINTAINER isn't allowed as an ONBUILD trigger");
    assert_eq!(err("ONBUILD ONBUILD RUN touch foobar"), "Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed");
    assert_eq!(err("MAINTAINER --boo joe@example.com"), "unknown flag: boo");
    assert_eq!(err("FOO bar"), "unknown instruction: FOO (did you mean FROM?)");
    assert_eq!(err("foo bar"), "unknown instruction: foo (did you mean from?)");
    assert_eq!(err("XYZZY bar"), "unknown instruction: XYZZY");
    assert_eq!(err("RUNN echo"), "unknown instruction: RUNN (did you mean RUN?)");
    assert_eq!(err("cpy a b"), "unknown instruction: cpy (did you mean copy?)");
    assert_eq!(err("COPY --form=a x y"), "unknown flag: form (did you mean from?)");
    assert_eq!(err("RUN --mnt=type=cache,target=/x ls"), "unknown flag: mnt (did you mean mount?)");
    assert_eq!(err("RUN --security=insecure ls"), "unknown flag: security");
    assert_eq!(err("RUN --network=bridge ls"), "invalid network mode \"bridge\"");
    assert_eq!(err("RUN --network ls"), "missing a value on flag: network");
    assert_eq!(err("COPY --link=maybe a b"), "expecting boolean value for flag link, not: maybe");
    assert_eq!(err("COPY --from=a --from=b x y"), "duplicate flag specified: from");
    assert_eq!(err("ENV --x=1 a=b"), "unknown flag: x");
    assert_eq!(err("SHELL bash -c"), "SHELL requires the arguments to be in JSON form");
    assert_eq!(err("SHELL []"), "SHELL requires at least one argument");
    assert_eq!(err("VOLUME [\"\"]"), "VOLUME specified can not be an empty string");
    assert_eq!(err("COPY /foo <<EOF\nEOF"), "COPY cannot accept a heredoc as a destination");
    assert_eq!(err("FROM --platform a"), "missing a value on flag: platform");
    assert_eq!(err("HEALTHCHECK NONE foo"), "HEALTHCHECK NONE takes no arguments");
    assert_eq!(err("HEALTHCHECK CMD"), "Missing command after HEALTHCHECK CMD");
    assert_eq!(err("HEALTHCHECK CONNECT TCP 7000"), "Unknown type \"CONNECT\" in HEALTHCHECK (try CMD)");
    assert_eq!(err("HEALTHCHECK --interval=50ns CMD x"), "Interval \"interval\" cannot be less than 1ms");
    assert_eq!(err("HEALTHCHECK --start-period=-1s CMD x"), "Interval \"start-period\" cannot be less than 1ms");
    assert_eq!(err("HEALTHCHECK --timeout=5 CMD x"), "time: missing unit in duration \"5\"");
    assert_eq!(err("HEALTHCHECK --retries=-1 CMD x"), "--retries cannot be negative (-1)");
    assert_eq!(err("HEALTHCHECK --retries=x CMD x"), "strconv.ParseInt: parsing \"x\": invalid syntax");
    assert_eq!(err("HEALTHCHECK --bogus=1 CMD x"), "unknown flag: bogus");
    assert_eq!(
        err("RUN --mount=type=bind,from=$X ls"),
        "'from' doesn't support variable expansion, define alias stage instead"
    );
    assert_eq!(
        err("RUN --mount=a\\\"b ls"),
        "failed to parse csv mounts: parse error on line 1, column 2: bare \" in non-quoted-field"
    );
}

#[test]
fn errors_render_with_lines() {
    let e = parse("FROM busybox\n\nRUNN echo\n").unwrap_err();
    assert_eq!(e.to_string(), "Dockerfile:3: unknown instruction: RUNN (did you mean RUN?)");
    assert_eq!(e.kind, DockerfileErrorKind::UnknownInstruction);
    assert_eq!(e.buildkit_message(), "dockerfile parse error on line 3: unknown instruction: RUNN (did you mean RUN?)");
    let e = parse("FROM a\nCOPY --chown=1 \\\n  x\n").unwrap_err();
    assert_eq!(e.location, Some(Location::new(2, 3)));
    assert_eq!(e.to_string(), "Dockerfile:2: COPY requires at least two arguments, but only one was provided. Destination could not be determined");
    let e = parse("RUN ls\nFROM a\n").unwrap_err();
    assert_eq!(e.to_string(), "Dockerfile:1: no build stage in current context");
    let e = parse("FROM a\nRUN [\"a\", 1]\n").unwrap_err();
    assert_eq!(e.to_string(), "Dockerfile:2: when using JSON array syntax, arrays must be comprised of strings only");
    let k: crate::Error = e.into();
    assert_eq!(k.kind(), crate::ErrorKind::Definition);
}

#[test]
fn stages_and_meta_args() {
    let df = parse(
        "# foo sets foo\nARG foo=bar\nARG BASE=alpine\n\n# base defines first stage\nFROM --platform=$BUILDPLATFORM ${BASE} AS Base\n# this is irrelevant\nARG foo\n# bar defines bar\n# baz is something else\nARG bar baz=123\nfrom base\nRUN ls\n",
    )
    .unwrap();
    assert_eq!(df.meta_args.len(), 2);
    assert_eq!(
        df.meta_args[0].arg.args[0],
        ArgDef { key: "foo".into(), value: Some("bar".into()), comment: "sets foo".into() }
    );
    assert_eq!(df.meta_args[1].location, Location::line(3));
    assert_eq!(df.stages.len(), 2);
    let s = &df.stages[0];
    assert_eq!((s.name.as_str(), s.base_name.as_str(), s.platform.as_str()), ("base", "${BASE}", "$BUILDPLATFORM"));
    assert_eq!(s.comment, "defines first stage");
    assert_eq!(s.source_code, "FROM --platform=$BUILDPLATFORM ${BASE} AS Base");
    assert_eq!(s.location, Location::line(6));
    let Instruction::Arg(a) = &s.commands[0].instruction else { panic!() };
    assert_eq!((a.args[0].key.as_str(), a.args[0].comment.as_str()), ("foo", ""));
    let Instruction::Arg(a) = &s.commands[1].instruction else { panic!() };
    assert_eq!(a.args[0], ArgDef { key: "bar".into(), value: None, comment: "defines bar".into() });
    assert_eq!(a.args[1], ArgDef { key: "baz".into(), value: Some("123".into()), comment: "is something else".into() });
    assert_eq!(df.stages[1].name, "");
    assert_eq!(df.stages[1].base_name, "base");
    assert_eq!(df.stages[1].commands[0].name, "RUN");
    assert_eq!(df.stage_index("BASE"), Some(0));
    assert_eq!(df.stage_index(""), None);
    assert_eq!(df.escape, '\\');
}

#[test]
fn run_forms_and_flags() {
    let Instruction::Run(r) = instr("RUN --mount=type=tmpfs,target=/foo/ echo hello") else { panic!() };
    assert_eq!(r.flags_used, ["mount"]);
    assert_eq!(r.cmd, CommandLine { cmd_line: vec!["echo hello".into()], files: vec![], prepend_shell: true });
    assert_eq!(r.mount_specs, ["type=tmpfs,target=/foo/"]);
    assert_eq!(r.network, NetworkMode::Default);
    let Instruction::Run(r) = instr("RUN --network=none [\"echo\", \"a b\"]") else { panic!() };
    assert_eq!(r.cmd.cmd_line, ["echo", "a b"]);
    assert!(!r.cmd.prepend_shell);
    assert_eq!(r.network, NetworkMode::None);
    assert_eq!(r.flags_used, ["network"]);
    let Instruction::Run(r) = instr("RUN --network=host --mount=type=cache,target=/c,from=builder make") else {
        panic!()
    };
    assert_eq!(r.network, NetworkMode::Host);
    assert_eq!(r.mounts[0].from, "builder");
    // Invalid JSON falls back to the shell form.
    let Instruction::Run(r) = instr("RUN ['echo', 'x']") else { panic!() };
    assert_eq!(r.cmd.cmd_line, ["['echo', 'x']"]);
    assert!(r.cmd.prepend_shell);
    // Heredocs become inline files.
    let Instruction::Run(r) = instr("RUN <<-EOF bash\n\techo hi\nEOF\n") else { panic!() };
    assert_eq!(r.cmd.cmd_line, ["<<-EOF bash"]);
    assert_eq!(r.cmd.files, [ShellInlineFile { name: "EOF".into(), data: "\techo hi\n".into(), chomp: true }]);
}

#[test]
fn cmd_entrypoint_shell() {
    let Instruction::Cmd(c) = instr("CMD [\"a\", \"b\"]") else { panic!() };
    assert_eq!((c.cmd.cmd_line.as_slice(), c.cmd.prepend_shell), (&["a".to_owned(), "b".to_owned()][..], false));
    let Instruction::Cmd(c) = instr("CMD echo   $HOME") else { panic!() };
    assert_eq!(c.cmd.cmd_line, ["echo   $HOME"]);
    let Instruction::Entrypoint(e) = instr("ENTRYPOINT []") else { panic!() };
    assert!(e.cmd.cmd_line.is_empty() && !e.cmd.prepend_shell);
    let Instruction::Shell(s) = instr("SHELL [\"powershell\", \"-command\"]") else { panic!() };
    assert_eq!(s.shell, ["powershell", "-command"]);
}

#[test]
fn copy_and_add() {
    let Instruction::Copy(c) = instr("COPY --from=build --chown=1:2 --chmod=755 --link a b* /dst/") else { panic!() };
    assert_eq!((c.from.as_str(), c.chown.as_str(), c.chmod.as_str(), c.link), ("build", "1:2", "755", true));
    assert_eq!(c.files.source_paths, ["a", "b*"]);
    assert_eq!(c.files.dest_path, "/dst/");
    let Instruction::Copy(c) = instr("COPY [\"a b\", \"/c d\"]") else { panic!() };
    assert_eq!((c.files.source_paths.as_slice(), c.files.dest_path.as_str()), (&["a b".to_owned()][..], "/c d"));
    let Instruction::Add(a) = instr("ADD --link=false --keep-git-dir --checksum=sha256:abc https://x/y /z") else {
        panic!()
    };
    assert!(!a.link && a.keep_git_dir);
    assert_eq!(a.checksum, "sha256:abc");
    assert_eq!(err("ADD --from=x a b"), "unknown flag: from");
    // (Dockerfile, [(heredoc path, data, expand)])
    type Case<'a> = (&'a str, &'a [(&'a str, &'a str, bool)]);
    let cases: &[Case] = &[
        ("COPY <<EOF /bar\nEOF", &[("EOF", "", true)]),
        ("COPY <<EOF /bar\nTESTING\nEOF", &[("EOF", "TESTING\n", true)]),
        ("COPY <<-EOF /bar\n\tTESTING\nEOF", &[("EOF", "TESTING\n", true)]),
        ("COPY <<'EOF' /bar\nTESTING\nEOF", &[("EOF", "TESTING\n", false)]),
        (
            "COPY <<EOF1 <<EOF2 /bar\nthis is the first file\nEOF1\nthis is the second file\nEOF2",
            &[("EOF1", "this is the first file\n", true), ("EOF2", "this is the second file\n", true)],
        ),
    ];
    for (text, want) in cases {
        let Instruction::Copy(c) = instr(text) else { panic!() };
        assert_eq!(c.files.dest_path, "/bar");
        assert!(c.files.source_paths.is_empty());
        let got: Vec<(&str, &str, bool)> =
            c.files.source_contents.iter().map(|s| (s.path.as_str(), s.data.as_str(), s.expand)).collect();
        assert_eq!(got, *want, "{text}");
    }
    let Instruction::Copy(c) = instr("COPY <<EOF /x y /dest\nhi\nEOF") else { panic!() };
    assert_eq!(c.files.source_paths, ["/x", "y"]);
    assert_eq!(c.files.source_contents.len(), 1);
}

#[test]
fn env_label_arg() {
    let Instruction::Env(e) = instr("ENV a=1 b=\"x y\" c=z\\ w") else { panic!() };
    let got: Vec<(&str, &str)> = e.env.iter().map(|kv| (kv.key.as_str(), kv.value.as_str())).collect();
    assert_eq!(got, [("a", "1"), ("b", "\"x y\""), ("c", "z\\ w")]);
    let Instruction::Env(e) = instr("ENV legacy  the rest  of it") else { panic!() };
    assert_eq!((e.env[0].key.as_str(), e.env[0].value.as_str()), ("legacy", "the rest  of it"));
    let Instruction::Label(l) = instr("LABEL \"com.example.vendor\"=\"ACME Inc\" version=1.0") else { panic!() };
    assert_eq!(l.labels[0].key, "\"com.example.vendor\"");
    assert_eq!(l.labels[1].value, "1.0");
    let Instruction::Arg(a) = instr("ARG a=1 b c=") else { panic!() };
    let got: Vec<(&str, Option<&str>)> = a.args.iter().map(|d| (d.key.as_str(), d.value.as_deref())).collect();
    assert_eq!(got, [("a", Some("1")), ("b", None), ("c", Some(""))]);
    // ARG and STOPSIGNAL do not check flags, as in BuildKit.
    assert!(one("ARG --x a").is_ok());
    assert!(one("STOPSIGNAL --x SIGTERM").is_ok());
}

#[test]
fn other_instructions() {
    let Instruction::Expose(e) = instr("EXPOSE 9000 5000/udp 6000") else { panic!() };
    assert_eq!(e.ports, ["5000/udp", "6000", "9000"]);
    let Instruction::Volume(v) = instr("VOLUME /a /b") else { panic!() };
    assert_eq!(v.volumes, ["/a", "/b"]);
    let Instruction::Volume(v) = instr("VOLUME [\"/a\", \" /b \"]") else { panic!() };
    assert_eq!(v.volumes, ["/a", "/b"]);
    let Instruction::User(u) = instr("USER app:app") else { panic!() };
    assert_eq!(u.user, "app:app");
    let Instruction::Workdir(w) = instr("WORKDIR /a b") else { panic!() };
    assert_eq!(w.path, "/a b");
    let Instruction::StopSignal(s) = instr("STOPSIGNAL SIGKILL") else { panic!() };
    assert_eq!(s.signal, "SIGKILL");
    let Instruction::Maintainer(m) = instr("MAINTAINER Jane <j@x>") else { panic!() };
    assert_eq!(m.maintainer, "Jane <j@x>");
    let Instruction::Onbuild(o) = instr("onbuild  RUN echo hi") else { panic!() };
    assert_eq!(o.expression, "RUN echo hi");
    let Instruction::Onbuild(o) = instr("ONBUILD COPY <<EOF /x\nhello\nEOF") else { panic!() };
    assert_eq!(o.expression, "COPY <<EOF /x\nhello\nEOF");
    // The trigger parses again as a Dockerfile line.
    assert!(parser::parse(&o.expression).is_ok());
}

#[test]
fn healthchecks() {
    let Instruction::Healthcheck(h) = instr("HEALTHCHECK NONE") else { panic!() };
    assert_eq!(h.health.test, ["NONE"]);
    // Flags on NONE are ignored, as in BuildKit.
    assert!(one("HEALTHCHECK --bogus NONE").is_ok());
    let Instruction::Healthcheck(h) =
        instr("HEALTHCHECK --interval=5s --timeout=3s --retries=3 \\\n  CMD /app/check.sh --quiet")
    else {
        panic!()
    };
    assert_eq!(h.health.test, ["CMD-SHELL", "/app/check.sh --quiet"]);
    assert_eq!((h.health.interval, h.health.timeout, h.health.retries), (5_000_000_000, 3_000_000_000, 3));
    let Instruction::Healthcheck(h) = instr("HEALTHCHECK --start-period=0s --interval=1m30s CMD [\"foo\", \"bar\"]")
    else {
        panic!()
    };
    assert_eq!(h.health.test, ["CMD", "foo", "bar"]);
    assert_eq!((h.health.start_period, h.health.interval), (0, 90_000_000_000));
    let Instruction::Healthcheck(h) = instr("HEALTHCHECK cmd hello world") else { panic!() };
    assert_eq!(h.health.test, ["CMD-SHELL", "hello world"]);
}

#[test]
fn expansion_where_buildkit_expands() {
    let lex = Lex::new('\\');
    let e = env(&[("A", "1"), ("DIR", "/srv"), ("U", "app"), ("SIG", "TERM"), ("N", "x y")]);
    let expand = |text: &str| {
        let df = parse(&format!("FROM scratch\n{text}")).unwrap();
        let mut c = df.stages[0].commands[0].clone();
        c.expand(&lex, &e).map(|_| c.instruction)
    };
    let Ok(Instruction::Env(v)) = expand("ENV k$A=\"$N\" b=${Z:-d}") else { panic!() };
    assert_eq!((v.env[0].key.as_str(), v.env[0].value.as_str(), v.env[1].value.as_str()), ("k1", "x y", "d"));
    let Ok(Instruction::Workdir(w)) = expand("WORKDIR $DIR/app") else { panic!() };
    assert_eq!(w.path, "/srv/app");
    let Ok(Instruction::User(u)) = expand("USER ${U}:$U") else { panic!() };
    assert_eq!(u.user, "app:app");
    let Ok(Instruction::StopSignal(s)) = expand("STOPSIGNAL SIG$SIG") else { panic!() };
    assert_eq!(s.signal, "SIGTERM");
    let Ok(Instruction::Volume(v)) = expand("VOLUME [\"$DIR\", \"/b\"]") else { panic!() };
    assert_eq!(v.volumes, ["/srv", "/b"]);
    let Ok(Instruction::Arg(a)) = expand("ARG X=$A Y") else { panic!() };
    assert_eq!(a.args[0].value.as_deref(), Some("1"));
    let Ok(Instruction::Copy(c)) = expand("COPY --from=$A --chown=$U --chmod=$A $DIR/x 'y' /d/$A/") else { panic!() };
    assert_eq!((c.from.as_str(), c.chown.as_str(), c.chmod.as_str()), ("$A", "app", "$A"));
    assert_eq!(c.files.source_paths, ["/srv/x", "y"]);
    // Shell-form COPY splits on blanks only: a quoted source with a space is two words.
    assert!(expand("COPY \"a b\" /d").is_err());
    assert_eq!(c.files.dest_path, "/d/1/");
    let Ok(Instruction::Add(a)) = expand("ADD --checksum=sha256:$A --chown=$U x /y") else { panic!() };
    assert_eq!((a.checksum.as_str(), a.chown.as_str()), ("sha256:1", "app"));
    // Command lines are left to the shell.
    let Ok(Instruction::Run(r)) = expand("RUN echo $A") else { panic!() };
    assert_eq!(r.cmd.cmd_line, ["echo $A"]);
    let Ok(Instruction::Cmd(c)) = expand("CMD [\"$A\"]") else { panic!() };
    assert_eq!(c.cmd.cmd_line, ["$A"]);
    // Mounts are fully parsed after expansion.
    let Ok(Instruction::Run(r)) = expand("RUN --mount=type=cache,id=c$A,target=$DIR,uid=1$A ls") else { panic!() };
    assert_eq!(r.mounts[0].kind, MountType::Cache);
    assert_eq!((r.mounts[0].cache_id.as_str(), r.mounts[0].target.as_str(), r.mounts[0].uid), ("c1", "/srv", Some(11)));
    let e2 = expand("RUN --mount=type=cache,target=/x,sharing=$A ls").unwrap_err();
    assert_eq!(e2.to_string(), "Dockerfile:2: unsupported sharing value \"1\"");
    assert_eq!(e2.kind, DockerfileErrorKind::Expansion);
    let e3 = expand("WORKDIR ${A").unwrap_err();
    assert_eq!(e3.message, "failed to process \"${A\": missing ':' in substitution");
    // Heredoc contents: expanded only for unquoted delimiters, quotes kept.
    let Ok(Instruction::Copy(c)) = expand("COPY <<EOF <<'RAW' /d\n\"$A\" '$DIR'\nEOF\n$A\nRAW") else { panic!() };
    assert_eq!(c.files.source_contents[0].data, "\"1\" '/srv'\n");
    assert_eq!(c.files.source_contents[1].data, "$A\n");
    // EXPOSE: the converter splits expanded words.
    let Ok(Instruction::Expose(x)) = expand("EXPOSE $N 80") else { panic!() };
    assert_eq!(x.expand_ports(&lex, &e).unwrap(), ["x", "y", "80"]);
    assert!(!Instruction::Cmd(CmdCommand::default()).expands());
    assert!(Instruction::Run(RunCommand::default()).expands());
}

#[test]
fn escape_directive_applies_to_expansion() {
    let df = parse("# escape=`\nFROM scratch\nWORKDIR C:\\dir`$A\n").unwrap();
    assert_eq!(df.escape, '`');
    let mut c = df.stages[0].commands[0].clone();
    c.expand(&Lex::new(df.escape), &env(&[("A", "1")])).unwrap();
    let Instruction::Workdir(w) = c.instruction else { panic!() };
    assert_eq!(w.path, "C:\\dir$A");
}
