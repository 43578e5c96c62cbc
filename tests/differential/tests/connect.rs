//! `Engine::connect`: the same solves through `kiln serve` and through a real buildkitd
//! (`KILN_BUILDKIT_ADDR`, or `../shared/buildkit` started here) give the embedded engine's
//! results — locals streamed from this side, secrets served from here, `local` and `tar`
//! outputs written here, a Dockerfile through the `dockerfile.v0` frontend — with progress,
//! cached counts on a second solve, typed errors, workers and disk usage.

use kiln::graph::state::{ExecOptions, MountSpec};
use kiln::graph::State;
use kiln::{Engine, EngineOptions, ErrorKind, ProgressEvent, ProgressSink, SolveOptions};
use kiln_differential::{fixtures, kiln_bin, repo_root, start_daemon};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A `kiln serve` on a unix socket (killed on drop).
struct KilnServe {
    child: Child,
    sock: PathBuf,
}

impl KilnServe {
    fn start(dir: &Path) -> KilnServe {
        KilnServe::start_with_env(dir, &[])
    }

    /// A `kiln serve` with extra environment (e.g. its own empty `DOCKER_CONFIG`).
    fn start_with_env(dir: &Path, env: &[(&str, &Path)]) -> KilnServe {
        let sock = dir.join("kiln.sock");
        let child = Command::new(kiln_bin().expect("kiln binary"))
            .envs(env.iter().map(|(k, v)| (*k, *v)))
            .arg("--root")
            .arg(dir.join("root"))
            .args(["serve", "--addr", &format!("unix://{}", sock.display())])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn kiln serve");
        wait_for_socket(&sock, "kiln serve");
        KilnServe { child, sock }
    }
}

/// Waits (at most 30 s) until `what` accepts connections on unix socket `sock`.
fn wait_for_socket(sock: &Path, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::os::unix::net::UnixStream::connect(sock).is_err() {
        assert!(Instant::now() < deadline, "{what} did not listen on {} within 30 s", sock.display());
        // Back-off between polls of a bounded loop.
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Drop for KilnServe {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The buildkitd to use: `KILN_BUILDKIT_ADDR`, else one started from `../shared/buildkit` (or
/// `KILN_BUILDKIT_DIR`) under `dir`, stopped when the guard drops.
fn buildkitd(dir: &Path) -> (String, Option<kiln_differential::Daemon>) {
    if let Ok(a) = std::env::var("KILN_BUILDKIT_ADDR") {
        if !a.is_empty() {
            return (a, None);
        }
    }
    let (addr, guard) = start_daemon(&bk_dir(), &dir.join("buildkitd")).unwrap_or_else(|e| panic!("buildkitd: {e}"));
    (addr, Some(guard))
}

/// Where BuildKit's binaries are (`KILN_BUILDKIT_DIR`, else `../shared/buildkit`).
fn bk_dir() -> PathBuf {
    std::env::var_os("KILN_BUILDKIT_DIR").map(PathBuf::from).unwrap_or_else(|| repo_root().join("../shared/buildkit"))
}

/// Every path under `root` with its type, mode, owner, size, content and link target.
fn tree(root: &Path) -> Vec<String> {
    use std::os::unix::fs::MetadataExt;
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("read_dir") {
            let p = e.expect("entry").path();
            let m = std::fs::symlink_metadata(&p).expect("lstat");
            let rel = p.strip_prefix(root).expect("under root").display().to_string();
            let what = if m.file_type().is_symlink() {
                format!("link {}", std::fs::read_link(&p).expect("readlink").display())
            } else if m.is_dir() {
                stack.push(p.clone());
                "dir".to_owned()
            } else {
                format!("file {:?}", String::from_utf8_lossy(&std::fs::read(&p).expect("read")))
            };
            out.push(format!("{rel} {:o} {}:{} {what}", m.mode(), m.uid(), m.gid()));
        }
    }
    out.sort();
    out
}

struct Inputs {
    locals: BTreeMap<String, PathBuf>,
    secrets: BTreeMap<String, Vec<u8>>,
}

impl Inputs {
    fn opts(&self) -> SolveOptions {
        SolveOptions { locals: self.locals.clone(), secrets: self.secrets.clone(), ..Default::default() }
    }
}

/// A RUN on the busybox rootfs reading a local dir and a secret into a mounted output. The
/// rootfs is copied out of its local first: BuildKit keys a local by its session, so a RUN on
/// the local itself would never hit the cache through a new session.
fn graph() -> State {
    let base = State::scratch().copy(&State::local("rootfs"), "/", "/", Default::default());
    let run = base.run(
        ExecOptions::shell("cat /run/secrets/token > /out/secret && cp -a /ctx/. /out/ctx/ && echo hi > /out/hi")
            .mount(MountSpec::bind("/ctx", &State::local("ctx"), true))
            .mount(MountSpec::secret("/run/secrets/token", "token", 0, 0, 0o400, false))
            .mount(MountSpec::bind("/out", &State::scratch(), false)),
    );
    run.mount_output("/out").expect("the /out mount has an output")
}

/// A client-side build: solve the graph, read from its result (file, range, stat, directory,
/// a missing path), then return a second solve built from what was read.
async fn client_side_build(engine: &Engine, inputs: &Inputs, dest: &Path) -> kiln::Result<kiln::SolveResult> {
    let mut solve = inputs.opts();
    solve.outputs.push(format!("type=local,dest={}", dest.display()).parse()?);
    let opts = kiln::engine::BuildOptions::new(solve).frontend_attr("greeting", "hello");
    engine
        .build(opts, |ctx| async move {
            let greeting = ctx.frontend_attrs().get("greeting").cloned().unwrap_or_default();
            let first = ctx.solve_state(&graph(), Default::default()).await?;
            let hi = first.read_file("/hi", None).await?;
            let part = first.read_file("/secret", Some((1, 3))).await?;
            let stat = first.stat_file("/hi").await?;
            let names: Vec<String> = first.read_dir("/", None).await?.into_iter().map(|e| e.path).collect();
            let missing = matches!(first.read_file("/nope", None).await, Err(kiln::Error::NotFound { .. }));
            first.evaluate().await?;
            let report = format!(
                "{greeting} {} {} file={} size={} entries={names:?} missing={missing}\n",
                String::from_utf8_lossy(&hi).trim(),
                String::from_utf8_lossy(&part),
                stat.is_file(),
                stat.size
            );
            ctx.warn("client-side", "a warning from the build function");
            let second = ctx
                .solve_state(
                    &State::scratch().mkfile("/report", 0o644, report.into_bytes(), Default::default()),
                    Default::default(),
                )
                .await?;
            Ok(Some(kiln::engine::BuildOutput::of(second)))
        })
        .await
}

const DOCKERFILE: &str = "FROM base\nCOPY a.txt /app/a.txt\nRUN echo built > /app/built && ls /app > /app/list\n";

fn dockerfile_opts(inputs: &Inputs, dest: &Path) -> kiln::engine::BuildOptions {
    let mut solve = inputs.opts();
    solve.outputs.push(format!("type=local,dest={}", dest.display()).parse().expect("output"));
    let mut b = kiln::engine::BuildOptions::new(solve);
    b.frontend_attrs.insert("context:base".into(), "local:rootfs".into());
    b
}

/// Everything one daemon must do like the embedded engine.
async fn exercise(
    name: &str,
    engine: &Engine,
    inputs: &Inputs,
    (want, want_df, want_build): (&[String], &[String], &[String]),
    work: &Path,
) {
    assert!(!engine.workers().is_empty(), "{name}: the daemon lists workers");
    let def = graph().to_definition().expect("definition");
    let out = work.join(format!("{name}-out"));
    let (sink, mut events) = ProgressSink::channel();
    let mut opts = inputs.opts();
    opts.outputs.push(format!("type=local,dest={}", out.display()).parse().expect("output"));
    opts.progress = sink;
    let r = engine.solve(&def, opts).await.unwrap_or_else(|e| panic!("{name}: solve: {}", e.report()));
    assert_eq!(tree(&out), want, "{name}: the local output equals the embedded engine's");
    assert!(r.executed + r.cached > 0, "{name}: the solve reports its vertices: {r:?}");
    let mut names = Vec::new();
    while let Ok(e) = events.try_recv() {
        if let ProgressEvent::VertexCompleted { name, .. } | ProgressEvent::VertexCached { name, .. } = e {
            names.push(name);
        }
    }
    assert!(names.iter().any(|n| n.contains("cat /run/secrets/token")), "{name}: progress names the RUN: {names:?}");

    // The same solve again: every vertex of the definition is cached.
    let tar = work.join(format!("{name}.tar"));
    let mut opts = inputs.opts();
    opts.outputs.push(format!("type=tar,dest={}", tar.display()).parse().expect("output"));
    let (sink2, mut ev2) = ProgressSink::channel();
    opts.progress = sink2;
    let again = engine.solve(&def, opts).await.unwrap_or_else(|e| panic!("{name}: second solve: {}", e.report()));
    let mut ran = Vec::new();
    let mut cached_run = false;
    while let Ok(e) = ev2.try_recv() {
        match e {
            ProgressEvent::VertexCached { name, .. } => cached_run |= name.contains("cat /run/secrets/token"),
            ProgressEvent::VertexCompleted { name, .. } => ran.push(name),
            _ => {}
        }
    }
    // BuildKit re-sends local sources on every solve (their keys are per session), so only
    // they may report as run; the copy of them and the RUN are cache hits.
    assert!(cached_run, "{name}: the RUN is cached the second time; ran: {ran:?}");
    let rerun = |n: &String| !n.starts_with("local://") && !n.starts_with("exporting");
    assert!(!ran.iter().any(rerun), "{name}: only locals are re-sent (and the export runs): {ran:?}");
    assert!(again.cached > 0, "{name}: the second solve reports cached vertices: {again:?}");
    let list = Command::new("tar").arg("tf").arg(&tar).output().expect("tar tf");
    let listed = String::from_utf8_lossy(&list.stdout).to_string();
    assert!(listed.lines().any(|l| l.trim_start_matches("./") == "hi"), "{name}: the tar output: {listed}");

    // A failing RUN is an exec error; a missing local names it.
    let bad = State::local("rootfs")
        .run(ExecOptions::shell("echo bad-step-output; exit 3"))
        .root()
        .to_definition()
        .expect("definition");
    let e = engine.solve(&bad, inputs.opts()).await.expect_err("exit 3 fails");
    assert_eq!(e.kind(), ErrorKind::Exec, "{name}: {}", e.report());
    match &e {
        kiln::Error::Exec { exit_code, log_tail, command, .. } => {
            assert_eq!(*exit_code, 3, "{name}: {}", e.report());
            assert!(command.contains("exit 3"), "{name}: the command: {command}");
            assert!(log_tail.iter().any(|l| l.contains("bad-step-output")), "{name}: log tail {log_tail:?}");
        }
        other => panic!("{name}: not an exec error with its exit code: {other:?}"),
    }
    let missing = State::scratch()
        .copy(&State::local("nowhere"), "/", "/", Default::default())
        .to_definition()
        .expect("definition");
    let e = engine.solve(&missing, inputs.opts()).await.expect_err("a local nobody gives fails");
    assert!(e.report().contains("nowhere"), "{name}: the error names the local: {}", e.report());

    // The Dockerfile frontend on the daemon, its context and Dockerfile streamed from here.
    let df_out = work.join(format!("{name}-df"));
    let r = engine
        .build_frontend("dockerfile.v0", dockerfile_opts(inputs, &df_out))
        .await
        .unwrap_or_else(|e| panic!("{name}: Dockerfile build: {}", e.report()));
    let _ = r;
    assert_eq!(tree(&df_out), want_df, "{name}: the Dockerfile build equals the embedded engine's");

    // A client-side build through the daemon's LLB bridge reads what the embedded one reads.
    let built = work.join(format!("{name}-build"));
    client_side_build(engine, inputs, &built).await.unwrap_or_else(|e| panic!("{name}: build: {}", e.report()));
    assert_eq!(tree(&built), want_build, "{name}: the client-side build equals the embedded engine's");
    let e = engine
        .build(kiln::engine::BuildOptions::new(inputs.opts()), |_ctx| async move {
            Err::<Option<kiln::engine::BuildOutput>, _>(kiln::Error::new(ErrorKind::Exec, "the function failed"))
        })
        .await
        .expect_err("the function's error is the build's");
    assert!(e.report().contains("the function failed"), "{name}: {}", e.report());

    let du = engine.disk_usage().await.unwrap_or_else(|e| panic!("{name}: disk usage: {}", e.report()));
    assert!(!du.is_empty(), "{name}: the daemon has cache records after building");

    // A local cache directory on this side: exported through the daemon's content-store calls
    // (index.json tagged here), then imported by the emptied daemon — the RUN is a cache hit.
    let cache = work.join(format!("{name}-cache"));
    let mut opts = inputs.opts();
    opts.cache_exports.push(format!("type=local,dest={},mode=max", cache.display()).parse().expect("export"));
    engine.solve(&def, opts).await.unwrap_or_else(|e| panic!("{name}: cache export: {}", e.report()));
    let index = std::fs::read_to_string(cache.join("index.json")).expect("the export wrote index.json");
    assert!(index.contains("\"org.opencontainers.image.ref.name\":\"latest\""), "{name}: tagged: {index}");
    engine.prune(0, true).await.unwrap_or_else(|e| panic!("{name}: prune: {}", e.report()));
    let out = work.join(format!("{name}-imported"));
    let (sink, mut events) = ProgressSink::channel();
    let mut opts = inputs.opts();
    opts.cache_imports.push(format!("type=local,src={}", cache.display()).parse().expect("import"));
    opts.outputs.push(format!("type=local,dest={}", out.display()).parse().expect("output"));
    opts.progress = sink;
    engine.solve(&def, opts).await.unwrap_or_else(|e| panic!("{name}: cache import: {}", e.report()));
    assert_eq!(tree(&out), want, "{name}: the imported result equals the embedded engine's");
    let mut cached_run = false;
    while let Ok(e) = events.try_recv() {
        if let ProgressEvent::VertexCached { name, .. } = e {
            cached_run |= name.contains("cat /run/secrets/token");
        }
    }
    assert!(cached_run, "{name}: the RUN comes from the imported cache");
}

#[test]
fn connect_builds_on_kiln_serve_and_on_buildkitd_like_the_embedded_engine() {
    let tmp = tempfile::Builder::new().prefix("kiln-connect-").tempdir().expect("tempdir");
    let rootfs = tmp.path().join("rootfs");
    fixtures::rootfs(&rootfs).expect("busybox rootfs");
    let ctx = tmp.path().join("ctx");
    std::fs::create_dir_all(ctx.join("sub")).expect("mkdir");
    std::fs::write(ctx.join("a.txt"), b"hello\n").expect("write");
    std::fs::write(ctx.join("sub/b"), vec![b'x'; 200_000]).expect("write");
    std::os::unix::fs::symlink("a.txt", ctx.join("link")).expect("symlink");
    std::fs::write(ctx.join("Dockerfile"), DOCKERFILE).expect("write");
    let inputs = Inputs {
        locals: [
            ("rootfs".to_owned(), rootfs.clone()),
            ("ctx".to_owned(), ctx.clone()),
            ("context".to_owned(), ctx.clone()),
            ("dockerfile".to_owned(), ctx.clone()),
        ]
        .into_iter()
        .collect(),
        secrets: [("token".to_owned(), b"s3cret".to_vec())].into_iter().collect(),
    };
    let rt = tokio::runtime::Runtime::new().expect("runtime");

    // The embedded engine's results are the reference.
    let (want, want_df, want_build) = rt.block_on(async {
        let engine = Engine::open(EngineOptions::new(tmp.path().join("embedded-root"))).expect("open");
        let out = tmp.path().join("embedded-out");
        let mut opts = inputs.opts();
        opts.outputs.push(format!("type=local,dest={}", out.display()).parse().expect("output"));
        let def = graph().to_definition().expect("definition");
        engine.solve(&def, opts).await.unwrap_or_else(|e| panic!("embedded solve: {}", e.report()));
        let df = tmp.path().join("embedded-df");
        engine
            .build_frontend("dockerfile.v0", dockerfile_opts(&inputs, &df))
            .await
            .unwrap_or_else(|e| panic!("embedded Dockerfile build: {}", e.report()));
        let built = tmp.path().join("embedded-build");
        client_side_build(&engine, &inputs, &built).await.unwrap_or_else(|e| panic!("embedded build: {}", e.report()));
        (tree(&out), tree(&df), tree(&built))
    });
    assert!(want.iter().any(|l| l.starts_with("secret ") && l.contains("s3cret")), "{want:?}");
    assert!(
        want_build.iter().any(|l| l.contains("hello hi 3cr file=true size=3") && l.contains("missing=true")),
        "the build function read what it should: {want_build:?}"
    );

    let serve = KilnServe::start(tmp.path());
    let (bk_addr, _daemon) = buildkitd(tmp.path());
    let work = tmp.path().join("work");
    std::fs::create_dir_all(&work).expect("mkdir");
    rt.block_on(async {
        for (name, addr) in [("kiln-serve", format!("unix://{}", serve.sock.display())), ("buildkitd", bk_addr)] {
            let engine = Engine::connect(&addr, &Default::default())
                .await
                .unwrap_or_else(|e| panic!("connect to {name} at {addr}: {}", e.report()));
            assert_eq!(engine.address(), Some(addr.as_str()));
            exercise(name, &engine, &inputs, (&want, &want_df, &want_build), &work).await;
        }
        let e = Engine::connect(&format!("unix://{}", work.join("none.sock").display()), &Default::default())
            .await
            .expect_err("no daemon there");
        assert!(e.report().contains("none.sock"), "the error names the address: {}", e.report());
    });
}

/// Runs `cmd` (stdin: nothing), panicking with its stderr when it fails; returns its stdout.
fn run_ok(cmd: &mut Command) -> String {
    run_ok_with(cmd.stdin(Stdio::null()))
}

/// Runs `cmd` with the stdin it was given (see [`run_ok`]).
fn run_ok_with(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("run {cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Copies the host binary `bin` and the shared libraries `ldd` names into `rootfs` at the same
/// paths, so the busybox rootfs can run it.
fn add_host_binary(rootfs: &Path, bin: &str) {
    let mut files = vec![PathBuf::from(bin)];
    for line in run_ok(Command::new("ldd").arg(bin)).lines() {
        // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" or "/lib64/ld-linux-x86-64.so.2 (0x...)"
        let path = line.split("=>").last().unwrap_or_default().split_whitespace().next().unwrap_or_default();
        if path.starts_with('/') {
            files.push(PathBuf::from(path));
        }
    }
    for f in files {
        let dest = rootfs.join(f.strip_prefix("/").expect("absolute"));
        std::fs::create_dir_all(dest.parent().expect("parent")).expect("mkdir");
        std::fs::copy(&f, &dest).unwrap_or_else(|e| panic!("copy {}: {e}", f.display()));
    }
}

/// A real `ssh-agent` on a socket under `dir`, holding one fresh ed25519 key (killed on drop).
struct SshAgent {
    child: Child,
    sock: PathBuf,
    /// `ssh-add -l`'s line for the key.
    fingerprint: String,
}

impl SshAgent {
    fn start(dir: &Path) -> SshAgent {
        let sock = dir.join("agent.sock");
        let child = Command::new("ssh-agent")
            .args(["-D", "-a"])
            .arg(&sock)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn ssh-agent (install openssh-client: scripts/setup)");
        wait_for_socket(&sock, "ssh-agent");
        let key = dir.join("id_test");
        run_ok(Command::new("ssh-keygen").args(["-q", "-t", "ed25519", "-N", "", "-C", "kiln-test", "-f"]).arg(&key));
        run_ok(Command::new("ssh-add").env("SSH_AUTH_SOCK", &sock).arg(&key));
        let fingerprint = run_ok(Command::new("ssh-add").env("SSH_AUTH_SOCK", &sock).arg("-l")).trim().to_owned();
        assert!(fingerprint.contains("kiln-test"), "{fingerprint}");
        SshAgent { child, sock, fingerprint }
    }
}

impl Drop for SshAgent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `ssh` mounts reach this side's agent through the session: `Engine::connect` against kiln
/// serve and against buildkitd, and the real `buildctl --ssh` against kiln serve, list the
/// agent's key from inside the container (as the embedded engine does); a missing agent is an
/// error naming it, an optional one is skipped.
#[test]
fn ssh_agents_are_forwarded_from_the_client() {
    let tmp = tempfile::Builder::new().prefix("kiln-connect-ssh-").tempdir().expect("tempdir");
    let rootfs = tmp.path().join("rootfs");
    fixtures::rootfs(&rootfs).expect("busybox rootfs");
    add_host_binary(&rootfs, "/usr/bin/ssh-add");
    let agent = SshAgent::start(tmp.path());
    // Its own local name: buildkitd shares a synced local dir between sessions by name (the
    // session's shared key is empty, as buildctl's), and the other tests sync another "rootfs".
    let base = State::scratch().copy(&State::local("ssh-rootfs"), "/", "/", Default::default());
    let run = tmp.path().file_name().expect("name").to_string_lossy().into_owned();
    let listing = |id: &str, optional: bool| {
        let ssh = kiln::graph::state::SshSocket { optional, ..kiln::graph::state::SshSocket::new(id) };
        base.run(
            // The run's own dir name keeps a long-lived buildkitd's cache (which does not key
            // on the agent) from answering with an earlier run's listing.
            ExecOptions::shell(format!(
                "echo {run}; (ssh-add -l || echo no-agent) > /out/keys 2>&1; ls -l $SSH_AUTH_SOCK >> /out/keys 2>&1; true"
            ))
                .ssh(ssh)
                .mount(MountSpec::bind("/out", &State::scratch(), false)),
        )
        .mount_output("/out")
        .expect("the /out mount has an output")
        .to_definition()
        .expect("definition")
    };
    let def = listing("default", false);
    let opts = |dest: &Path| {
        let mut o = SolveOptions::default().local("ssh-rootfs", &rootfs).ssh("default", &agent.sock);
        o.outputs.push(format!("type=local,dest={}", dest.display()).parse().expect("output"));
        o
    };
    let keys = |dest: &Path| std::fs::read_to_string(dest.join("keys")).expect("keys");

    let serve = KilnServe::start(tmp.path());
    let (bk_addr, _daemon) = buildkitd(tmp.path());
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let embedded = Engine::open(EngineOptions::new(tmp.path().join("embedded-root"))).expect("open");
        let out = tmp.path().join("embedded-out");
        embedded.solve(&def, opts(&out)).await.unwrap_or_else(|e| panic!("embedded: {}", e.report()));
        let want = keys(&out);
        assert!(want.contains(&agent.fingerprint), "the embedded engine lists the key: {want}");
        assert!(want.contains("srw-------"), "the socket has the mount's mode: {want}");
        for (name, addr) in [("kiln-serve", format!("unix://{}", serve.sock.display())), ("buildkitd", bk_addr)] {
            let engine = Engine::connect(&addr, &Default::default()).await.expect("connect");
            let out = tmp.path().join(format!("{name}-out"));
            engine.solve(&def, opts(&out)).await.unwrap_or_else(|e| panic!("{name}: {}", e.report()));
            let got = keys(&out);
            assert!(got.contains(&agent.fingerprint), "{name}: the container lists this side's key: {got}");
            assert!(got.contains("srw-------"), "{name}: the socket has the mount's mode: {got}");

            // An agent id this side does not forward: an error naming it; optional: skipped.
            let other = listing("other", false);
            let e = engine.solve(&other, opts(&tmp.path().join(format!("{name}-other")))).await;
            let e = e.expect_err("agent \"other\" is not forwarded");
            assert!(e.report().contains("other"), "{name}: the error names the agent: {}", e.report());
            let optional = listing("other", true);
            let out = tmp.path().join(format!("{name}-optional"));
            engine.solve(&optional, opts(&out)).await.unwrap_or_else(|e| panic!("{name}: {}", e.report()));
            assert!(keys(&out).contains("no-agent"), "{name}: no socket for a missing optional agent");
        }
    });

    // The real buildctl forwards its agent to kiln serve.
    let def_file = tmp.path().join("def.pb");
    std::fs::write(&def_file, def.to_bytes()).expect("write");
    let out = tmp.path().join("buildctl-out");
    run_ok_with(
        Command::new(bk_dir().join("buildctl"))
            .stdin(std::fs::File::open(&def_file).expect("open definition"))
            .arg("--addr")
            .arg(format!("unix://{}", serve.sock.display()))
            .args(["build", "--progress", "plain"])
            .arg("--local")
            .arg(format!("ssh-rootfs={}", rootfs.display()))
            .arg("--ssh")
            .arg(format!("default={}", agent.sock.display()))
            .arg("--output")
            .arg(format!("type=local,dest={}", out.display())),
    );
    let got = keys(&out);
    assert!(got.contains(&agent.fingerprint), "buildctl → kiln serve: the container lists the key: {got}");
}

/// Registry logins come from the client's Docker config over the session (`Auth.Credentials`):
/// a `kiln serve` with no credentials of its own pushes to and pulls from a registry requiring
/// basic auth for a client that has them (kiln's CLI and buildctl), buildkitd pulls with the
/// logins kiln's client serves, and without them the daemon's error says authentication failed.
#[test]
fn registry_logins_come_from_the_client_session() {
    use kiln_differential::servers::Registry;
    let tmp = tempfile::Builder::new().prefix("kiln-connect-auth-").tempdir().expect("tempdir");
    let registry = Registry::start_with_auth(&tmp.path().join("registry"), "kiln", "s3cret-pw").expect("registry");
    let with_login = tmp.path().join("docker-with-login");
    std::fs::create_dir_all(&with_login).expect("mkdir");
    std::fs::write(
        with_login.join("config.json"),
        format!(r#"{{"auths":{{"{}":{{"auth":"a2lsbjpzM2NyZXQtcHc="}}}}}}"#, registry.addr), // kiln:s3cret-pw
    )
    .expect("write config.json");
    let empty = tmp.path().join("docker-empty");
    std::fs::create_dir_all(&empty).expect("mkdir");
    let serve = KilnServe::start_with_env(tmp.path(), &[("DOCKER_CONFIG", &empty)]);
    let (bk_addr, _daemon) = buildkitd(tmp.path());
    let kiln_addr = format!("unix://{}", serve.sock.display());
    let kiln = |addr: &str, docker_config: &Path, def: &Path, output: &str| {
        Command::new(kiln_bin().expect("kiln binary"))
            .env("DOCKER_CONFIG", docker_config)
            .args(["build", "--progress", "plain", "--addr", addr, "--definition"])
            .arg(def)
            .args(["--output", output])
            .stdin(Stdio::null())
            .output()
            .expect("run kiln build")
    };
    let write_def = |name: &str, st: &State| {
        let p = tmp.path().join(name);
        std::fs::write(&p, st.to_definition().expect("definition").to_bytes()).expect("write");
        p
    };

    // Push through kiln serve with the client's login (the daemon has none).
    let image = format!("{}/private/hello:1", registry.addr);
    let pushed = write_def(
        "push.pb",
        &State::scratch().mkfile("/hello", 0o644, b"from a private registry\n".to_vec(), Default::default()),
    );
    let out = kiln(&kiln_addr, &with_login, &pushed, &format!("type=image,name={image},push=true"));
    assert!(out.status.success(), "push through kiln serve: {}", String::from_utf8_lossy(&out.stderr));

    // Pull it back through both daemons with the client's login.
    let pull = write_def("pull.pb", &State::image(&image));
    for (name, addr) in [("kiln-serve", kiln_addr.as_str()), ("buildkitd", bk_addr.as_str())] {
        let dest = tmp.path().join(format!("{name}-pulled"));
        let out = kiln(addr, &with_login, &pull, &format!("type=local,dest={}", dest.display()));
        assert!(out.status.success(), "{name}: pull with the client's login: {}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(std::fs::read_to_string(dest.join("hello")).expect("hello"), "from a private registry\n", "{name}");
    }

    // Without a login on the client, kiln serve is refused by the registry.
    let dest = tmp.path().join("anonymous");
    let out = kiln(&kiln_addr, &empty, &pull, &format!("type=local,dest={}", dest.display()));
    assert!(!out.status.success(), "an anonymous pull of a private image fails");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("401") || err.contains("authentication"), "the error says why: {err}");

    // buildctl's own credentials provider serves kiln serve too.
    let dest = tmp.path().join("buildctl-pulled");
    run_ok_with(
        Command::new(bk_dir().join("buildctl"))
            .stdin(std::fs::File::open(&pull).expect("open definition"))
            .env("DOCKER_CONFIG", &with_login)
            .arg("--addr")
            .arg(&kiln_addr)
            .args(["build", "--progress", "plain"])
            .arg("--output")
            .arg(format!("type=local,dest={}", dest.display())),
    );
    assert_eq!(std::fs::read_to_string(dest.join("hello")).expect("hello"), "from a private registry\n");
}

/// The tag → manifest digest entries of an OCI layout's `index.json`.
fn layout_tags(dir: &Path) -> Vec<(String, String)> {
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("index.json")).expect("index.json")).expect("JSON");
    let mut tags: Vec<(String, String)> = index["manifests"]
        .as_array()
        .expect("manifests")
        .iter()
        .map(|m| {
            let tag = m["annotations"]["org.opencontainers.image.ref.name"].as_str().unwrap_or_default().to_owned();
            (tag, m["digest"].as_str().expect("digest").to_owned())
        })
        .collect();
    tags.sort();
    tags
}

/// `type=oci,tar=false` through a daemon: the daemon writes the blobs into the client's content
/// store `export` and this side tags the manifest in `index.json` (BuildKit's client protocol) —
/// with kiln's client against kiln serve and buildkitd, and with buildctl against kiln serve.
/// The layout is the embedded engine's (same manifest digest) and skopeo reads it.
#[test]
fn oci_layout_outputs_go_through_the_client_content_store() {
    let tmp = tempfile::Builder::new().prefix("kiln-connect-oci-").tempdir().expect("tempdir");
    let st = State::scratch().mkfile("/hello", 0o644, b"an OCI layout over the session\n".to_vec(), Default::default());
    let def = st.to_definition().expect("definition");
    let output = |dest: &Path| format!("type=oci,dest={},tar=false,name=app", dest.display());
    let opts = |dest: &Path| {
        let mut o = SolveOptions::default().source_date_epoch(1_700_000_000);
        o.outputs.push(output(dest).parse().expect("output"));
        o
    };
    let skopeo_reads = |dir: &Path, tag: &str| {
        run_ok(Command::new("skopeo").arg("inspect").arg(format!("oci:{}:{tag}", dir.display())));
    };
    let serve = KilnServe::start(tmp.path());
    let (bk_addr, _daemon) = buildkitd(tmp.path());
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let embedded = Engine::open(EngineOptions::new(tmp.path().join("embedded-root"))).expect("open");
        let want_dir = tmp.path().join("embedded-oci");
        embedded.solve(&def, opts(&want_dir)).await.unwrap_or_else(|e| panic!("embedded: {}", e.report()));
        let want = layout_tags(&want_dir);
        assert_eq!(want.len(), 1, "{want:?}");
        assert_eq!(want[0].0, "app");
        for (name, addr) in [("kiln-serve", format!("unix://{}", serve.sock.display())), ("buildkitd", bk_addr)] {
            let engine = Engine::connect(&addr, &Default::default()).await.expect("connect");
            let dir = tmp.path().join(format!("{name}-oci"));
            engine.solve(&def, opts(&dir)).await.unwrap_or_else(|e| panic!("{name}: {}", e.report()));
            let got = layout_tags(&dir);
            assert_eq!(got.len(), 1, "{name}: one tagged manifest: {got:?}");
            // Tagged with the daemon's normalised image.name, as buildctl tags it.
            assert_eq!(got[0].0, "docker.io/library/app:latest", "{name}: tagged with the output's name");
            if name == "kiln-serve" {
                assert_eq!(got[0].1, want[0].1, "kiln serve writes the embedded engine's image");
            }
            skopeo_reads(&dir, &got[0].0);
        }
    });

    let def_file = tmp.path().join("def.pb");
    std::fs::write(&def_file, def.to_bytes()).expect("write");
    let dir = tmp.path().join("buildctl-oci");
    run_ok_with(
        Command::new(bk_dir().join("buildctl"))
            .stdin(std::fs::File::open(&def_file).expect("open definition"))
            .arg("--addr")
            .arg(format!("unix://{}", serve.sock.display()))
            .args(["build", "--progress", "plain", "--output", &output(&dir)]),
    );
    let got = layout_tags(&dir);
    // buildctl sends no SOURCE_DATE_EPOCH: the digest differs by the created time only.
    assert_eq!(got.len(), 1, "buildctl → kiln serve: {got:?}");
    assert_eq!(got[0].0, "docker.io/library/app:latest", "buildctl → kiln serve");
    skopeo_reads(&dir, &got[0].0);
}
