//! `kiln serve` driven by BuildKit's own client and by a gRPC client of kiln's generated API: a
//! real `buildctl` (BuildKit v0.11.6, from `KILN_BUILDKIT_DIR`, default `<repo>/../shared/buildkit`)
//! lists workers, reads disk usage and info, prunes, builds over the LLB bridge (pushing an image
//! and a registry cache to a real `docker-registry`, which a fresh server imports), and gets a
//! clear error for what kiln serve does not serve yet; a Control client solves a definition and
//! follows its Status. SIGTERM stops the server cleanly and removes its socket.

mod fault_common;

use kiln::graph::State;
use kiln::server::proto::control::control_client::ControlClient;
use kiln::server::proto::control::{InfoRequest, SolveRequest, StatusRequest};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

fn buildctl() -> PathBuf {
    let dir = std::env::var_os("KILN_BUILDKIT_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/buildkit"));
    let b = dir.join("buildctl");
    assert!(b.exists(), "buildctl not found at {} (set KILN_BUILDKIT_DIR)", b.display());
    b
}

/// A running `kiln serve`, killed if a test fails before stopping it.
struct Server {
    child: Option<Child>,
    _dir: tempfile::TempDir,
    sock: PathBuf,
    tcp: String,
}

impl Server {
    fn start() -> Server {
        let dir = tempfile::tempdir().expect("tempdir");
        let sock = dir.path().join("run/kiln.sock");
        // A free loopback port (bound and released: a tiny race another process would have to win).
        let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
        let tcp = format!("127.0.0.1:{port}");
        let child = Command::new(env!("CARGO_BIN_EXE_kiln"))
            .arg("--root")
            .arg(dir.path().join("root"))
            .args(["serve", "--addr", &format!("unix://{}", sock.display()), "--addr", &format!("tcp://{tcp}")])
            .env_remove("KILN_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn kiln serve");
        let s = Server { child: Some(child), _dir: dir, sock, tcp };
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::os::unix::net::UnixStream::connect(&s.sock).is_err() {
            assert!(Instant::now() < deadline, "kiln serve did not listen within 30 s");
            std::thread::sleep(Duration::from_millis(20));
        }
        s
    }

    fn buildctl(&self, args: &[&str], stdin: &[u8]) -> Output {
        use std::io::Write;
        let mut c = Command::new(buildctl())
            .arg("--addr")
            .arg(format!("unix://{}", self.sock.display()))
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn buildctl");
        let _ = c.stdin.take().expect("stdin").write_all(stdin);
        wait_bounded(c, Duration::from_secs(120), "buildctl")
    }

    /// SIGTERM, then the exit status (bounded).
    fn stop(mut self) -> Output {
        let child = self.child.take().expect("running");
        let st = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status().expect("kill -TERM");
        assert!(st.success(), "kill -TERM failed");
        wait_bounded(child, Duration::from_secs(60), "kiln serve after SIGTERM")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn wait_bounded(mut c: Child, limit: Duration, what: &str) -> Output {
    let deadline = Instant::now() + limit;
    loop {
        if c.try_wait().expect("try_wait").is_some() {
            return c.wait_with_output().expect("output");
        }
        if Instant::now() > deadline {
            let _ = c.kill();
            let out = c.wait_with_output().expect("output");
            panic!("{what} did not finish within {limit:?}: {}", String::from_utf8_lossy(&out.stderr));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Every path under `root` with its type, mode, size, content digest and link target.
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
                let data = std::fs::read(&p).expect("read");
                format!(
                    "file {} {:x}",
                    data.len(),
                    data.iter().fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(*b as u64))
                )
            };
            out.push(format!("{rel} {:o} {}:{} {what}", m.mode(), m.uid(), m.gid()));
        }
    }
    out.sort();
    out
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

#[test]
fn buildctl_drives_kiln_serve() {
    let server = Server::start();

    let w = server.buildctl(&["debug", "workers"], b"");
    assert!(w.status.success(), "debug workers: {}", text(&w));
    let out = text(&w);
    assert!(out.contains("runc-overlayfs") || out.contains("runc-native"), "workers: {out}");
    assert!(out.contains("linux/"), "worker platforms: {out}");

    let i = server.buildctl(&["debug", "info"], b"");
    assert!(i.status.success(), "debug info: {}", text(&i));
    assert!(text(&i).contains("kiln"), "info: {}", text(&i));

    let du = server.buildctl(&["du"], b"");
    assert!(du.status.success(), "du: {}", text(&du));
    assert!(text(&du).contains("Total:"), "du: {}", text(&du));

    let p = server.buildctl(&["prune"], b"");
    assert!(p.status.success(), "prune: {}", text(&p));

    // buildctl build drives its build over the LLB bridge (client.Build): Control.Solve without
    // a definition, then LLBBridge Ping/Solve/Return keyed by the build id.
    let def = State::scratch()
        .mkfile("/hello", 0o644, b"hi\n".to_vec(), Default::default())
        .to_definition()
        .expect("def")
        .to_bytes();
    let b = server.buildctl(&["build", "--progress", "plain"], &def);
    assert!(b.status.success(), "build over the LLB bridge: {}", text(&b));
    assert!(text(&b).contains("mkfile /hello"), "progress names the vertex: {}", text(&b));
    let again = server.buildctl(&["build", "--progress", "plain"], &def);
    assert!(again.status.success(), "{}", text(&again));
    assert!(text(&again).contains("CACHED"), "a second build is cached: {}", text(&again));

    // An image pushed and a registry cache exported, both to a real registry on loopback.
    let reg = fault_common::Registry::start();
    let image = format!("name={}/kiln/serve:1,push=true,registry.insecure=true", reg.addr);
    let cache = format!("type=registry,ref={}/kiln/serve-cache:1,mode=max,registry.insecure=true", reg.addr);
    let out = format!("type=image,{image}");
    let p = server.buildctl(&["build", "--output", &out, "--export-cache", &cache], &def);
    assert!(p.status.success(), "push + cache export: {}", text(&p));
    let inspect = Command::new("skopeo")
        .args(["inspect", "--tls-verify=false", &format!("docker://{}/kiln/serve:1", reg.addr)])
        .output()
        .expect("run skopeo");
    assert!(inspect.status.success(), "skopeo reads the pushed image: {}", text(&inspect));

    // Local dirs come from the client and outputs go back to it over the session (fsutil's
    // DiffCopy both ways, archives as bytes); the tree equals the embedded engine's.
    let work = tempfile::tempdir().expect("tempdir");
    let ctx = work.path().join("ctx");
    std::fs::create_dir_all(ctx.join("sub")).expect("mkdir");
    std::fs::write(ctx.join("a"), b"hello\n").expect("write");
    std::fs::write(ctx.join("sub/b"), vec![7u8; 300_000]).expect("write");
    std::os::unix::fs::symlink("a", ctx.join("link")).expect("symlink");
    let def2 = State::scratch()
        .copy(&State::local("ctx"), "/", "/app", Default::default())
        .mkfile("/hello", 0o644, b"hi\n".to_vec(), Default::default())
        .to_definition()
        .expect("def")
        .to_bytes();
    let local_arg = format!("ctx={}", ctx.display());
    let via_serve = work.path().join("served");
    let out = format!("type=local,dest={}", via_serve.display());
    let l = server.buildctl(&["build", "--local", &local_arg, "--output", &out], &def2);
    assert!(l.status.success(), "local dir in, local output out: {}", text(&l));
    let embedded = work.path().join("embedded");
    let e = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .arg("--root")
        .arg(work.path().join("root"))
        .args(["build", "--local", &local_arg, "--output", &format!("type=local,dest={}", embedded.display())])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map(|mut c| {
            use std::io::Write;
            let _ = c.stdin.take().expect("stdin").write_all(&def2);
            c
        })
        .expect("spawn kiln build");
    let e = wait_bounded(e, Duration::from_secs(120), "kiln build");
    assert!(e.status.success(), "embedded build: {}", text(&e));
    assert_eq!(std::fs::read(via_serve.join("app/sub/b")).expect("synced file"), vec![7u8; 300_000]);
    assert_eq!(tree(&via_serve), tree(&embedded), "kiln serve's output equals the embedded engine's");
    for (kind, name) in [("tar", "out.tar"), ("oci", "oci.tar")] {
        let file = work.path().join(name);
        let out = format!("type={kind},dest={}", file.display());
        let t = server.buildctl(&["build", "--local", &local_arg, "--output", &out], &def2);
        assert!(t.status.success(), "{kind} output: {}", text(&t));
        let list = Command::new("tar").arg("tf").arg(&file).output().expect("tar tf");
        let names = String::from_utf8_lossy(&list.stdout).to_string();
        let want = if kind == "tar" { "app/sub/b" } else { "index.json" };
        assert!(names.lines().any(|l| l.trim_start_matches("./") == want), "{kind} archive lists {want}: {names}");
    }

    let sock = server.sock.clone();
    let stopped = server.stop();
    assert!(stopped.status.success(), "kiln serve exits 0 on SIGTERM: {}", text(&stopped));
    assert!(!sock.exists(), "the socket is removed on exit");

    // A fresh server (new root) importing the registry cache runs nothing.
    let fresh = Server::start();
    let import = format!("type=registry,ref={}/kiln/serve-cache:1,registry.insecure=true", reg.addr);
    let c = fresh.buildctl(&["build", "--progress", "plain", "--import-cache", &import], &def);
    assert!(c.status.success(), "build importing the cache: {}", text(&c));
    assert!(text(&c).contains("CACHED"), "the imported cache is hit: {}", text(&c));
    assert!(fresh.stop().status.success());
}

/// The file under an OCI layout directory that `digest` names.
fn blob(layout: &Path, digest: &str) -> Vec<u8> {
    let hex = digest.strip_prefix("sha256:").expect("sha256 digest");
    std::fs::read(layout.join("blobs/sha256").join(hex)).expect("blob")
}

#[test]
fn buildctl_builds_a_dockerfile_on_kiln_serve() {
    let server = Server::start();
    let work = tempfile::tempdir().expect("tempdir");
    let rootfs = work.path().join("rootfs");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/make-rootfs");
    let st = Command::new("sh").arg(&script).arg(&rootfs).status().expect("make-rootfs");
    assert!(st.success(), "make-rootfs failed (is busybox-static installed?)");
    let ctx = work.path().join("ctx");
    std::fs::create_dir_all(&ctx).expect("mkdir");
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM base AS build\nARG MSG=hello\nRUN echo \"$MSG from run\" > /built.txt\n\
         FROM scratch\nCOPY --from=build /built.txt /out/\nCOPY a.txt /out/\nENV FOO=bar\nCMD [\"/bin/sh\"]\n",
    )
    .expect("write Dockerfile");
    std::fs::write(ctx.join("a.txt"), "ctxfile\n").expect("write");
    std::fs::write(ctx.join(".dockerignore"), "ignored\n").expect("write");
    std::fs::write(ctx.join("ignored"), "no\n").expect("write");
    let c = format!("context={}", ctx.display());
    let d = format!("dockerfile={}", ctx.display());
    let r = format!("rootfs={}", rootfs.display());
    let common = [
        "build",
        "--frontend",
        "dockerfile.v0",
        "--local",
        &c,
        "--local",
        &d,
        "--local",
        &r,
        "--opt",
        "context:base=local:rootfs",
        "--opt",
        "build-arg:MSG=hi",
    ];
    let out_dir = work.path().join("out");
    let mut args = common.to_vec();
    let out = format!("type=local,dest={}", out_dir.display());
    args.extend(["--output", &out]);
    let b = server.buildctl(&args, b"");
    assert!(b.status.success(), "dockerfile build through kiln serve: {}", text(&b));
    assert_eq!(std::fs::read_to_string(out_dir.join("out/built.txt")).expect("built"), "hi from run\n");
    assert_eq!(std::fs::read_to_string(out_dir.join("out/a.txt")).expect("copied"), "ctxfile\n");

    // The image config the frontend made reaches the exported image.
    let oci = work.path().join("img.tar");
    let mut args = common.to_vec();
    let out = format!("type=oci,dest={}", oci.display());
    args.extend(["--output", &out]);
    let o = server.buildctl(&args, b"");
    assert!(o.status.success(), "oci output: {}", text(&o));
    let layout = work.path().join("layout");
    std::fs::create_dir_all(&layout).expect("mkdir");
    let x = Command::new("tar").arg("xf").arg(&oci).arg("-C").arg(&layout).status().expect("tar xf");
    assert!(x.success());
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).expect("index")).expect("json");
    let manifest: serde_json::Value =
        serde_json::from_slice(&blob(&layout, index["manifests"][0]["digest"].as_str().expect("manifest digest")))
            .expect("manifest json");
    let config: serde_json::Value =
        serde_json::from_slice(&blob(&layout, manifest["config"]["digest"].as_str().expect("config digest")))
            .expect("config json");
    let env = config["config"]["Env"].to_string();
    assert!(env.contains("FOO=bar"), "Env carries the Dockerfile's ENV: {config}");
    assert_eq!(config["config"]["Cmd"], serde_json::json!(["/bin/sh"]), "{config}");

    // A secret comes from the client's session when an exec mounts it, never into the output.
    let secret = work.path().join("token");
    std::fs::write(&secret, "s3cret").expect("write secret");
    let mut opts = kiln::graph::ExecOptions::shell(
        "test \"$(cat /run/secrets/tok)\" = s3cret && echo secret-ok > /result || echo secret-bad > /result",
    );
    opts.mounts.push(kiln::graph::MountSpec::secret("/run/secrets/tok", "tok", 0, 0, 0o400, false));
    let def = State::local("rootfs").run(opts).root().to_definition().expect("definition").to_bytes();
    let sec_arg = format!("id=tok,src={}", secret.display());
    let sec_out = work.path().join("secret-out");
    let out = format!("type=local,dest={}", sec_out.display());
    let s = server.buildctl(&["build", "--local", &r, "--secret", &sec_arg, "--output", &out], &def);
    assert!(s.status.success(), "secret over the session: {}", text(&s));
    assert_eq!(std::fs::read_to_string(sec_out.join("result")).expect("result"), "secret-ok\n");
    assert!(!sec_out.join("run/secrets/tok").is_file(), "the secret is not in the output");
    // A secret the client does not have is a clear error naming its id (a new step: a cached
    // one needs no secret, as in BuildKit).
    let mut opts = kiln::graph::ExecOptions::shell("cat /run/secrets/tok > /dev/null; echo other > /result");
    opts.mounts.push(kiln::graph::MountSpec::secret("/run/secrets/tok", "tok", 0, 0, 0o400, false));
    let def = State::local("rootfs").run(opts).root().to_definition().expect("definition").to_bytes();
    let m = server.buildctl(&["build", "--local", &r, "--output", &out], &def);
    assert!(!m.status.success());
    assert!(text(&m).contains("tok"), "the missing secret is named: {}", text(&m));
    assert!(server.stop().status.success());
}

#[test]
fn control_client_solves_a_definition_and_follows_its_status() {
    let server = Server::start();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    let endpoint = format!("http://{}", server.tcp);
    rt.block_on(async move {
        let mut client = tokio::time::timeout(Duration::from_secs(30), ControlClient::connect(endpoint))
            .await
            .expect("connect within 30 s")
            .expect("connect");
        let info = client.info(InfoRequest {}).await.expect("info").into_inner();
        assert_eq!(info.buildkit_version.expect("version").package, "kiln");

        let st = State::scratch()
            .mkfile("/hello", 0o644, b"hi\n".to_vec(), Default::default())
            .mkdir("/d", Default::default());
        let def = st.to_definition().expect("definition");
        let reference = "kiln-serve-test-1".to_owned();
        // Status before Solve, as buildctl does: the updates are kept for it.
        let mut status_client = client.clone();
        let r = reference.clone();
        let status = tokio::spawn(async move {
            let mut stream = status_client.status(StatusRequest { r#ref: r }).await.expect("status").into_inner();
            let mut names = Vec::new();
            let mut completed = 0;
            while let Some(u) = stream.message().await.expect("status message") {
                for v in u.vertexes {
                    if v.completed.is_some() {
                        completed += 1;
                    }
                    names.push(v.name);
                }
            }
            (names, completed)
        });
        let resp = client
            .solve(SolveRequest { r#ref: reference.clone(), definition: Some(def.to_pb()), ..Default::default() })
            .await
            .expect("solve");
        let _ = resp.into_inner().exporter_response;
        let (names, completed) = tokio::time::timeout(Duration::from_secs(30), status)
            .await
            .expect("status ends with the solve")
            .expect("join");
        assert!(completed >= 1, "a completed vertex was reported: {names:?}");
        assert!(names.iter().any(|n| n.contains("mkfile")), "vertex names: {names:?}");

        // A second solve of the same graph is cached; errors carry gRPC codes.
        let err = client
            .solve(SolveRequest { r#ref: "bad".into(), frontend: "gateway.v0".into(), ..Default::default() })
            .await
            .expect_err("only the built-in dockerfile.v0 frontend is served");
        assert_eq!(err.code(), tonic::Code::Unimplemented);
        assert!(err.message().contains("frontend"), "{}", err.message());
        let err = client
            .solve(SolveRequest {
                r#ref: "bad2".into(),
                definition: Some(def.to_pb()),
                exporter: "nope".into(),
                ..Default::default()
            })
            .await
            .expect_err("unknown exporter");
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
    });
    let stopped = server.stop();
    assert!(stopped.status.success(), "{}", text(&stopped));
}

/// A client's later builds through the daemon see every change of its context, while the
/// daemon keeps the dir it synced for the client's shared key (only changes cross then): a
/// file changed (same size, new mtime), one added, one removed, one unchanged, a dir removed.
#[test]
fn later_builds_through_the_daemon_see_the_changed_context() {
    let server = Server::start();
    let work = tempfile::tempdir().expect("tempdir");
    let ctx = work.path().join("ctx");
    std::fs::create_dir_all(ctx.join("gone-dir")).expect("mkdir");
    std::fs::write(ctx.join("same"), vec![b's'; 300_000]).expect("write");
    std::fs::write(ctx.join("changed"), b"before\n").expect("write");
    std::fs::write(ctx.join("gone"), b"bye\n").expect("write");
    std::fs::write(ctx.join("gone-dir/f"), b"f\n").expect("write");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let addr = format!("unix://{}", server.sock.display());
    let engine = rt.block_on(kiln::Engine::connect(&addr, &Default::default())).expect("connect");
    let def = State::local("ctx").to_definition().expect("definition");
    let build = |n: u32| {
        let out = work.path().join(format!("out{n}"));
        let opts = kiln::SolveOptions::default()
            .local("ctx", &ctx)
            .output(&format!("type=local,dest={}", out.display()))
            .expect("output");
        let r = rt.block_on(engine.solve(&def, opts)).expect("solve through the daemon");
        (out, r.executed)
    };
    let (first, _) = build(1);
    let original = tree(&ctx);
    assert_eq!(tree(&first), original);
    let kept = |root: &Path| {
        std::fs::read_dir(root.join("tmp"))
            .map(|d| d.filter_map(|e| e.ok()).any(|e| e.file_name().to_string_lossy().starts_with("session-kept-")))
            .unwrap_or(false)
    };
    if kiln::client::session::shared_key(&Default::default()).is_empty() {
        eprintln!("no machine id: the client names no shared key and nothing is kept");
    } else {
        assert!(kept(&server._dir.path().join("root")), "the synced dir was not kept for the next build");
    }
    let touch_later = |p: &Path, secs: u64| {
        let t = std::time::SystemTime::now() + Duration::from_secs(secs);
        std::fs::File::options().write(true).open(p).and_then(|f| f.set_modified(t)).expect("set mtime");
    };

    std::fs::write(ctx.join("changed"), b"after!\n").expect("write");
    touch_later(&ctx.join("changed"), 5);
    std::fs::write(ctx.join("added"), b"new\n").expect("write");
    std::fs::remove_file(ctx.join("gone")).expect("rm");
    std::fs::remove_dir_all(ctx.join("gone-dir")).expect("rm -r");
    assert_eq!(tree(&build(2).0), tree(&ctx), "the second build's context");
    assert_eq!(tree(&build(3).0), tree(&ctx), "an unchanged context");

    // Back to the first content: a cache hit on the first build's snapshot, whose files were
    // linked from the kept dir; the syncs since changed that dir by replacing names only.
    std::fs::write(ctx.join("changed"), b"before\n").expect("write");
    touch_later(&ctx.join("changed"), 10);
    std::fs::remove_file(ctx.join("added")).expect("rm");
    std::fs::write(ctx.join("gone"), b"bye\n").expect("write");
    std::fs::create_dir_all(ctx.join("gone-dir")).expect("mkdir");
    std::fs::write(ctx.join("gone-dir/f"), b"f\n").expect("write");
    assert_eq!(tree(&ctx), original);
    let (fourth, executed) = build(4);
    assert_eq!(executed, 0, "the first build's content is a cache hit");
    assert_eq!(tree(&fourth), original, "the first build's snapshot, exported again");
    drop(engine);
    let out = server.stop();
    assert!(out.status.success(), "kiln serve after SIGTERM: {}", text(&out));
}
