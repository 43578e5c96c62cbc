//! `kiln serve` as a daemon under stress, driven by the real `buildctl` (BuildKit v0.11.6, from
//! `KILN_BUILDKIT_DIR`, default `<repo>/../shared/buildkit`): TLS with client certificates
//! (certificates made by `openssl` here), many clients at once, clients killed mid-build,
//! hostile bytes on the socket, SIGTERM while a build runs, local cache directories through
//! buildctl's content store. Every wait is bounded.

mod fault_common;

use fault_common::{leaks, Env};
use kiln::graph::{ExecOptions, State};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

fn buildctl_bin() -> PathBuf {
    let dir = std::env::var_os("KILN_BUILDKIT_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/buildkit"));
    let b = dir.join("buildctl");
    assert!(b.exists(), "buildctl not found at {} (set KILN_BUILDKIT_DIR)", b.display());
    b
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// A running `kiln serve` on a unix socket and a TCP port, killed if a test fails before
/// stopping it.
struct Server {
    child: Option<Child>,
    dir: Option<tempfile::TempDir>,
    sock: PathBuf,
    tcp: String,
}

impl Server {
    fn start(extra: &[&str]) -> Server {
        let dir = tempfile::tempdir().expect("tempdir");
        let sock = dir.path().join("run/kiln.sock");
        let tcp = format!("127.0.0.1:{}", free_port());
        let log = std::fs::File::create(dir.path().join("serve.log")).expect("log");
        let child = Command::new(env!("CARGO_BIN_EXE_kiln"))
            .arg("--root")
            .arg(dir.path().join("root"))
            .args(["serve", "--addr", &format!("unix://{}", sock.display()), "--addr", &format!("tcp://{tcp}")])
            .args(extra)
            .env_remove("KILN_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn kiln serve");
        let mut s = Server { child: Some(child), dir: Some(dir), sock, tcp };
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::os::unix::net::UnixStream::connect(&s.sock).is_err() {
            if let Some(st) = s.child.as_mut().and_then(|c| c.try_wait().expect("try_wait")) {
                panic!("kiln serve exited ({st}): {}", s.log());
            }
            assert!(Instant::now() < deadline, "kiln serve did not listen within 30 s");
            std::thread::sleep(Duration::from_millis(20));
        }
        s
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.as_ref().expect("server dir").path().join(rel)
    }

    fn root(&self) -> PathBuf {
        self.path("root")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.path("serve.log")).unwrap_or_default()
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// `buildctl --addr unix://SOCK ARGS` with `stdin`, not yet waited for.
    fn spawn_buildctl(&self, args: &[&str], stdin: &[u8]) -> Child {
        spawn_buildctl(&format!("unix://{}", self.sock.display()), args, stdin)
    }

    /// `buildctl` run in `cwd` (relative paths in its arguments are the client's).
    fn buildctl_in(&self, cwd: &Path, args: &[&str], stdin: &[u8]) -> Output {
        let c = spawn_buildctl_in(&format!("unix://{}", self.sock.display()), cwd, args, stdin);
        wait_bounded(c, Duration::from_secs(120), "buildctl")
    }

    fn buildctl(&self, args: &[&str], stdin: &[u8]) -> Output {
        wait_bounded(self.spawn_buildctl(args, stdin), Duration::from_secs(120), "buildctl")
    }

    /// A follow-up `buildctl debug workers` succeeds: the daemon still serves.
    #[track_caller]
    fn assert_serving(&self, after: &str) {
        let w = self.buildctl(&["debug", "workers"], b"");
        assert!(w.status.success(), "the daemon stopped serving after {after}: {}\n{}", text(&w), self.log());
    }

    /// The exit status of a server already told to stop (bounded).
    fn stop_waiting(mut self) -> Output {
        let child = self.child.take().expect("running");
        wait_bounded(child, Duration::from_secs(60), "kiln serve after SIGTERM")
    }

    /// [`Server::stop`], keeping the server's directory (root, log).
    fn stop_keeping_dir(mut self) -> (Output, tempfile::TempDir) {
        let dir = self.dir.take().expect("server dir");
        let child = self.child.take().expect("running");
        let st = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status().expect("kill -TERM");
        assert!(st.success(), "kill -TERM failed");
        (wait_bounded(child, Duration::from_secs(60), "kiln serve after SIGTERM"), dir)
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

fn spawn_buildctl(addr: &str, args: &[&str], stdin: &[u8]) -> Child {
    spawn_buildctl_in(addr, Path::new("."), args, stdin)
}

fn spawn_buildctl_in(addr: &str, cwd: &Path, args: &[&str], stdin: &[u8]) -> Child {
    use std::io::Write;
    let mut c = Command::new(buildctl_bin())
        .current_dir(cwd)
        .arg("--addr")
        .arg(addr)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn buildctl");
    let _ = c.stdin.take().expect("stdin").write_all(stdin);
    c
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

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn openssl(dir: &Path, args: &[&str]) {
    let o = Command::new("openssl").current_dir(dir).args(args).stdin(Stdio::null()).output().expect("run openssl");
    assert!(o.status.success(), "openssl {args:?}: {}", text(&o));
}

/// A CA (`NAME-ca.pem`, `NAME-ca.key`) in `dir`.
fn make_ca(dir: &Path, name: &str) {
    let (key, cert, subj) = (format!("{name}-ca.key"), format!("{name}-ca.pem"), format!("/CN={name} test CA"));
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &key,
            "-out",
            &cert,
            "-subj",
            &subj,
            "-days",
            "2",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
    );
}

/// A leaf certificate `NAME.pem` / `NAME.key` signed by CA `ca`, with extensions `ext`.
fn make_leaf(dir: &Path, ca: &str, name: &str, ext: &str) {
    let (key, csr, cert, extf) =
        (format!("{name}.key"), format!("{name}.csr"), format!("{name}.pem"), format!("{name}.ext"));
    std::fs::write(dir.join(&extf), ext).expect("write ext");
    let subj = format!("/CN={name}");
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &key,
            "-out",
            &csr,
            "-subj",
            &subj,
        ],
    );
    let (ca_pem, ca_key) = (format!("{ca}-ca.pem"), format!("{ca}-ca.key"));
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &ca_pem,
            "-CAkey",
            &ca_key,
            "-CAcreateserial",
            "-out",
            &cert,
            "-days",
            "2",
            "-extfile",
            &extf,
        ],
    );
}

/// A definition of one file on scratch.
fn hello_def(content: &str) -> Vec<u8> {
    State::scratch()
        .mkfile("/hello", 0o644, content.as_bytes().to_vec(), Default::default())
        .to_definition()
        .expect("def")
        .to_bytes()
}

#[test]
fn tls_requires_client_certificates_signed_by_the_ca() {
    let certs = tempfile::tempdir().expect("tempdir");
    let d = certs.path();
    make_ca(d, "good");
    make_ca(d, "other");
    make_leaf(d, "good", "server", "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n");
    make_leaf(d, "good", "client", "extendedKeyUsage=clientAuth\n");
    make_leaf(d, "other", "intruder", "extendedKeyUsage=clientAuth\n");
    let p = |f: &str| d.join(f).display().to_string();

    let (ca, cert, key) = (p("good-ca.pem"), p("server.pem"), p("server.key"));
    let server = Server::start(&["--tlscacert", &ca, "--tlscert", &cert, "--tlskey", &key]);
    let addr = format!("tcp://{}", server.tcp);
    let run = |tls: &[&str], args: &[&str], stdin: &[u8]| {
        let mut all = tls.to_vec();
        all.extend_from_slice(args);
        wait_bounded(spawn_buildctl(&addr, &all, stdin), Duration::from_secs(120), "buildctl over TLS")
    };

    let (client_pem, client_key, intruder_pem, intruder_key) =
        (p("client.pem"), p("client.key"), p("intruder.pem"), p("intruder.key"));
    let good = ["--tlscacert", &ca, "--tlscert", &client_pem, "--tlskey", &client_key];
    let w = run(&good, &["debug", "workers"], b"");
    assert!(w.status.success(), "debug workers over mutual TLS: {}\n{}", text(&w), server.log());
    assert!(text(&w).contains("runc-"), "workers: {}", text(&w));
    let named = ["--tlsservername", "127.0.0.1", "--tlscacert", &ca, "--tlscert", &client_pem, "--tlskey", &client_key];
    let out = tempfile::tempdir().expect("tempdir");
    let dest = format!("type=local,dest={}", out.path().display());
    let b = run(&named, &["build", "--progress", "plain", "--output", &dest], &hello_def("over tls\n"));
    assert!(b.status.success(), "build over mutual TLS: {}\n{}", text(&b), server.log());
    assert_eq!(std::fs::read_to_string(out.path().join("hello")).expect("output"), "over tls\n");

    // Refused: no client certificate, a certificate from another CA, and plain gRPC.
    let refused = |what: &str, tls: &[&str]| {
        let o = run(tls, &["--timeout", "20", "debug", "workers"], b"");
        assert!(!o.status.success(), "{what} was served: {}", text(&o));
    };
    refused("a client without a certificate", &["--tlscacert", &ca]);
    refused(
        "a client with another CA's certificate",
        &["--tlscacert", &ca, "--tlscert", &intruder_pem, "--tlskey", &intruder_key],
    );
    refused("a plaintext client", &[]);
    // ...and the daemon keeps serving authenticated clients (and its unix socket, without TLS).
    let again = run(&good, &["debug", "workers"], b"");
    assert!(again.status.success(), "served after refusals: {}", text(&again));
    server.assert_serving("TLS refusals");

    // kiln's own client (`kiln … --addr`, Engine::connect) over the same TLS, and refused alike.
    let kiln_client = |args: &[&str]| {
        let c = Command::new(env!("CARGO_BIN_EXE_kiln"))
            .args(args)
            .args(["--addr", &addr])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn kiln");
        wait_bounded(c, Duration::from_secs(60), "kiln over TLS")
    };
    let w = kiln_client(&["workers", "--tlscacert", &ca, "--tlscert", &client_pem, "--tlskey", &client_key]);
    assert!(w.status.success(), "kiln workers over mutual TLS: {}", text(&w));
    assert!(text(&w).contains("runc-"), "workers: {}", text(&w));
    let w = kiln_client(&["workers", "--tlscacert", &ca]);
    assert!(!w.status.success(), "kiln without a client certificate was served: {}", text(&w));
    let w = kiln_client(&["workers", "--tlscacert", &ca, "--tlscert", &intruder_pem, "--tlskey", &intruder_key]);
    assert!(!w.status.success(), "kiln with another CA's certificate was served: {}", text(&w));

    // A CA without a server certificate, or a certificate without its key, is refused at start.
    for bad in [vec!["--tlscacert", ca.as_str()], vec!["--tlscert", cert.as_str()]] {
        let o = Command::new(env!("CARGO_BIN_EXE_kiln"))
            .arg("--root")
            .arg(server.path("root2"))
            .args(["serve", "--addr", &format!("tcp://127.0.0.1:{}", free_port())])
            .args(&bad)
            .stdin(Stdio::null())
            .output()
            .expect("run kiln serve");
        assert!(!o.status.success(), "kiln serve {bad:?} started");
        assert!(text(&o).contains("tls"), "the error names the TLS flag: {}", text(&o));
    }
    let stopped = server.stop();
    assert!(stopped.status.success(), "{}", text(&stopped));
}

fn run_state(base: &State, script: &str) -> State {
    base.run(ExecOptions::shell(script)).root()
}

fn def_bytes(st: &State) -> Vec<u8> {
    st.to_definition().expect("definition").to_bytes()
}

/// Waits (bounded) until `cond` holds, polling every 50 ms.
#[track_caller]
fn wait_until(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < deadline, "{what} within {limit:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Containers running under the daemon's root.
fn containers(root: &Path) -> Vec<String> {
    leaks(root).into_iter().filter(|l| l.starts_with("container:")).collect()
}

/// Snapshot ids on disk under `root/snapshots/<kind>/`.
fn snapshot_ids(root: &Path) -> std::collections::BTreeSet<String> {
    let mut out = std::collections::BTreeSet::new();
    for kind in std::fs::read_dir(root.join("snapshots")).into_iter().flatten().flatten() {
        for e in std::fs::read_dir(kind.path()).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.len() >= 16 && name.bytes().all(|b| b.is_ascii_hexdigit()) {
                out.insert(name);
            }
        }
    }
    out
}

/// Stops `server` and checks its root for leaked snapshots: every snapshot on disk must still be
/// there once an engine reopens the root (opening removes snapshots no cache record references).
fn stop_and_assert_no_orphans(server: Server) {
    let (stopped, dir) = server.stop_keeping_dir();
    let root = dir.path().join("root");
    assert!(stopped.status.success(), "kiln serve exits 0 on SIGTERM: {}", text(&stopped));
    let before = snapshot_ids(&root);
    assert!(!before.is_empty(), "the builds left cached snapshots under {}", root.display());
    let engine = kiln::engine::Engine::open(kiln::engine::EngineOptions::new(&root)).expect("reopen the root");
    let kept: std::collections::BTreeSet<String> =
        engine.snapshots().expect("snapshots").into_values().flatten().collect();
    let orphans: Vec<&String> = before.iter().filter(|id| !kept.contains(*id)).collect();
    assert!(orphans.is_empty(), "snapshots no record references (leaked): {orphans:?}");
    drop(engine);
    let left = leaks(&root);
    assert!(left.is_empty(), "mounts or containers left: {left:#?}");
}

#[test]
fn concurrent_clients_share_identical_vertices() {
    let env = Env::new();
    let server = Server::start(&[]);
    // Every client's graph holds the same RUN (it appends a line to a cache directory shared by
    // every build of the root, so the number of lines counts its executions), then a RUN of its own.
    let mut shared =
        ExecOptions::shell("echo $((6*7))-executed; sleep 2; echo ran >> /count/runs; echo shared > /shared");
    shared.mounts.push(kiln::graph::MountSpec::cache("/count", "kiln-serve-dedup", Default::default()));
    let shared = State::local("rootfs").run(shared).root();
    let local = env.local_arg();
    let clients: Vec<(usize, Child)> = (0..8)
        .map(|i| {
            let own = run_state(&shared, &format!("cat /shared > /mine && echo client-{i} >> /mine"));
            let out = format!("type=local,dest={}", env.path(&format!("out-{i}")).display());
            (
                i,
                server.spawn_buildctl(
                    &["build", "--progress", "plain", "--local", &local, "--output", &out],
                    &def_bytes(&own),
                ),
            )
        })
        .collect();
    let mut executed_in = Vec::new();
    for (i, c) in clients {
        let o = wait_bounded(c, Duration::from_secs(240), "a concurrent buildctl build");
        assert!(o.status.success(), "client {i}: {}\n{}", text(&o), server.log());
        let mine = std::fs::read_to_string(env.path(&format!("out-{i}/mine"))).expect("client output");
        assert_eq!(mine, format!("shared\nclient-{i}\n"));
        if text(&o).contains("42-executed") {
            executed_in.push(i);
        }
    }
    assert_eq!(executed_in.len(), 1, "the shared RUN's output shows in exactly one client's progress: {executed_in:?}");
    // Read the cache directory back (a RUN of its own, so it runs).
    let mut read = ExecOptions::shell("cp /count/runs /runs; echo reader-1 > /nonce");
    read.mounts.push(kiln::graph::MountSpec::cache("/count", "kiln-serve-dedup", Default::default()));
    let reader = State::local("rootfs").run(read).root();
    let out = format!("type=local,dest={}", env.path("count").display());
    let r = server.buildctl(&["build", "--local", &local, "--output", &out], &def_bytes(&reader));
    assert!(r.status.success(), "{}", text(&r));
    let runs = std::fs::read_to_string(env.path("count/runs")).expect("runs");
    assert_eq!(runs, "ran\n", "the shared RUN executed once for 8 clients");
    stop_and_assert_no_orphans(server);
}

#[test]
fn a_killed_client_cancels_its_build_and_leaks_nothing() {
    let env = Env::new();
    let server = Server::start(&[]);
    let root = server.root();
    let local = env.local_arg();
    // A finished build first, so the root's steady state (records, staging) is known.
    let warm = server
        .buildctl(&["build", "--local", &local], &def_bytes(&run_state(&State::local("rootfs"), "echo warm > /w")));
    assert!(warm.status.success(), "{}", text(&warm));
    let tmp_before = fault_common::count_entries(&root.join("tmp"));

    let long = def_bytes(&run_state(&State::local("rootfs"), "echo started; sleep 300; echo never > /x"));
    let mut client = server.spawn_buildctl(&["build", "--progress", "plain", "--local", &local], &long);
    wait_until(Duration::from_secs(60), "the long RUN's container starts", || {
        if let Ok(Some(st)) = client.try_wait() {
            panic!("buildctl ended before its RUN started ({st}): {}", server.log());
        }
        !containers(&root).is_empty()
    });
    client.kill().expect("SIGKILL buildctl");
    let _ = client.wait();

    // The daemon notices the client is gone and cancels its build: no container, no mount.
    wait_until(Duration::from_secs(30), "the cancelled build's container and mounts are gone", || {
        leaks(&root).is_empty()
    });
    wait_until(Duration::from_secs(10), "the cancelled build's staging is removed", || {
        fault_common::count_entries(&root.join("tmp")) <= tmp_before
    });
    server.assert_serving("a client was killed mid-build");
    let next = server
        .buildctl(&["build", "--local", &local], &def_bytes(&run_state(&State::local("rootfs"), "echo next > /n")));
    assert!(next.status.success(), "a build after the killed one: {}\n{}", text(&next), server.log());
    stop_and_assert_no_orphans(server);
}

#[test]
fn sigterm_lets_a_running_build_finish() {
    let env = Env::new();
    let server = Server::start(&[]);
    let root = server.root();
    let out = env.path("out");
    let dest = format!("type=local,dest={}", out.display());
    let def = def_bytes(&run_state(&State::local("rootfs"), "sleep 3; echo drained > /result"));
    let client = server.spawn_buildctl(&["build", "--local", &env.local_arg(), "--output", &dest], &def);
    wait_until(Duration::from_secs(60), "the RUN's container starts", || !containers(&root).is_empty());
    let started = Instant::now();
    let pid = server.pid();
    let st = Command::new("kill").arg("-TERM").arg(pid.to_string()).status().expect("kill -TERM");
    assert!(st.success());
    // New clients are refused while the build drains.
    std::thread::sleep(Duration::from_millis(300));
    let refused = server.buildctl(&["--timeout", "5", "debug", "workers"], b"");
    assert!(!refused.status.success(), "a new client was served after SIGTERM: {}", text(&refused));
    let o = wait_bounded(client, Duration::from_secs(60), "the draining build");
    assert!(o.status.success(), "the build running at SIGTERM finishes: {}\n{}", text(&o), server.log());
    assert_eq!(std::fs::read_to_string(out.join("result")).expect("result"), "drained\n");
    let stopped = server.stop_waiting();
    assert!(stopped.status.success(), "kiln serve exits 0 after draining: {}", text(&stopped));
    assert!(started.elapsed() < Duration::from_secs(40), "drained within its bound: {:?}", started.elapsed());
}

/// A message shaped unlike any request: field 1 (a string in every request kiln serves) as a
/// varint, field 2 as bytes that are no valid message.
#[derive(Clone, PartialEq, prost::Message)]
struct Malformed {
    #[prost(uint64, tag = "1")]
    one: u64,
    #[prost(bytes = "vec", tag = "2")]
    two: Vec<u8>,
}

#[test]
fn hostile_bytes_get_errors_and_the_daemon_keeps_serving() {
    use std::io::{Read, Write};
    let server = Server::start(&[]);
    let mut rng = fault_common::Lcg::new(0x6b696c6e);
    let garbage: Vec<u8> = (0..4096).map(|_| rng.next() as u8).collect();
    // Raw garbage, then garbage after a valid HTTP/2 preface: the connection is closed.
    for (what, prefix) in
        [("garbage", &b""[..]), ("garbage after the HTTP/2 preface", &b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"[..])]
    {
        let mut s = std::os::unix::net::UnixStream::connect(&server.sock).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(15))).expect("timeout");
        let _ = s.write_all(prefix);
        let _ = s.write_all(&garbage);
        let mut buf = Vec::new();
        match s.read_to_end(&mut buf) {
            Ok(_) => {}
            Err(e) => assert!(
                e.kind() != std::io::ErrorKind::WouldBlock && e.kind() != std::io::ErrorKind::TimedOut,
                "{what}: the daemon neither answered nor closed within 15 s"
            ),
        }
        server.assert_serving(what);
    }

    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let endpoint = format!("http://{}", server.tcp);
    rt.block_on(async move {
        let channel = tokio::time::timeout(
            Duration::from_secs(30),
            tonic::transport::Endpoint::from_shared(endpoint).expect("endpoint").connect(),
        )
        .await
        .expect("connect within 30 s")
        .expect("connect");
        let call = |path: &'static str, msg: Malformed| {
            let channel = channel.clone();
            async move {
                let mut grpc = tonic::client::Grpc::new(channel);
                grpc.ready().await.expect("ready");
                let codec = tonic_prost::ProstCodec::<Malformed, Malformed>::default();
                let path = tonic::codegen::http::uri::PathAndQuery::from_static(path);
                tokio::time::timeout(Duration::from_secs(30), grpc.unary(tonic::Request::new(msg), path, codec))
                    .await
                    .expect("an answer within 30 s")
            }
        };
        let bad = Malformed { one: 7, two: vec![0xff; 64] };
        for path in [
            "/moby.buildkit.v1.Control/Solve",
            "/moby.buildkit.v1.Control/ListWorkers",
            "/moby.buildkit.v1.frontend.LLBBridge/ReadFile",
        ] {
            let e = call(path, bad.clone()).await.expect_err("a malformed request is refused");
            assert_ne!(e.code(), tonic::Code::Ok, "{path}: {e:?}");
            assert!(!e.message().is_empty(), "{path}: the error says why: {e:?}");
        }
        for path in ["/moby.buildkit.v1.Control/NoSuchMethod", "/no.such.Service/Call"] {
            let e = call(path, Malformed::default()).await.expect_err("an unknown method is refused");
            assert_eq!(e.code(), tonic::Code::Unimplemented, "{path}: {e:?}");
        }
    });
    server.assert_serving("malformed and unknown calls");

    // Sources that would read the daemon's own disk at a client-named path are refused, over the
    // LLB bridge (buildctl) and on a plain Control.Solve alike.
    let layout = State::oci_layout(server.root(), kiln::graph::OciRef::Tag("latest".into()));
    let git = State::git("/etc", "main");
    for (what, st) in [("oci-layout", &layout), ("git remote", &git)] {
        let o = server.buildctl(&["build"], &def_bytes(st));
        assert!(!o.status.success(), "a {what} source on the daemon's disk was solved: {}", text(&o));
        assert!(text(&o).contains("daemon's disk"), "the error says why: {}", text(&o));
    }
    let ctx = tempfile::tempdir().expect("tempdir");
    std::fs::write(ctx.path().join("Dockerfile"), "FROM base\n").expect("Dockerfile");
    let (c, d) = (format!("context={}", ctx.path().display()), format!("dockerfile={}", ctx.path().display()));
    let named = format!("context:base=oci-layout://{}", server.root().display());
    let args = ["build", "--frontend", "dockerfile.v0", "--local", &c, "--local", &d, "--opt", &named];
    let o = server.buildctl(&args, b"");
    assert!(!o.status.success(), "an oci-layout named context on the daemon's disk was used: {}", text(&o));
    assert!(text(&o).contains("daemon's disk"), "the error says why: {}", text(&o));
    let stopped = server.stop();
    assert!(stopped.status.success(), "{}", text(&stopped));
}

/// The plain-progress vertex number of the vertex whose name contains `name`.
fn vertex_number(log: &str, name: &str) -> String {
    log.lines()
        .find_map(|l| {
            let (n, rest) = l.strip_prefix('#')?.split_once(' ')?;
            (n.parse::<usize>().is_ok() && rest.contains(name)).then(|| n.to_owned())
        })
        .unwrap_or_else(|| panic!("no vertex named {name:?} in:\n{log}"))
}

#[test]
fn local_cache_export_and_import_through_the_clients_store() {
    let env = Env::new();
    let local = env.local_arg();
    let st = run_state(
        &State::local("rootfs"),
        "echo cached-through-buildctl > /made && head -c 100000 /dev/urandom > /noise",
    )
    .mkfile("/after", 0o644, b"after\n".to_vec(), Default::default());
    let def = def_bytes(&st);
    let cache = env.path("cache");
    let export = format!("type=local,dest={},mode=max", cache.display());
    let first_out = env.path("first");
    let out = format!("type=local,dest={}", first_out.display());

    // Exported through buildctl: the daemon writes the blobs into buildctl's store over the
    // session, buildctl writes index.json from the descriptor the solve returns.
    let server = Server::start(&[]);
    let e = server.buildctl(
        &["build", "--progress", "plain", "--local", &local, "--output", &out, "--export-cache", &export],
        &def,
    );
    assert!(e.status.success(), "build exporting a local cache: {}\n{}", text(&e), server.log());
    let tags = fault_common::verify_layout(&cache).unwrap_or_else(|e| panic!("the exported cache: {e}"));
    assert_eq!(tags, vec!["latest".to_owned()]);
    let inspect = Command::new("skopeo")
        .args(["inspect", "--raw", &format!("oci:{}:latest", cache.display())])
        .output()
        .expect("run skopeo");
    assert!(inspect.status.success(), "skopeo reads the cache layout: {}", text(&inspect));
    // A second export into the same directory uploads nothing new and keeps it valid.
    let again = server.buildctl(&["build", "--local", &local, "--export-cache", &export], &def);
    assert!(again.status.success(), "{}", text(&again));
    fault_common::verify_layout(&cache).unwrap_or_else(|e| panic!("the re-exported cache: {e}"));
    stop_and_assert_no_orphans(server);

    // A fresh daemon root imports it from buildctl's store: the RUN does not run again.
    let fresh = Server::start(&[]);
    let import = format!("type=local,src={}", cache.display());
    let second_out = env.path("second");
    let out = format!("type=local,dest={}", second_out.display());
    let i = fresh.buildctl(
        &["build", "--progress", "plain", "--local", &local, "--output", &out, "--import-cache", &import],
        &def,
    );
    assert!(i.status.success(), "build importing the local cache: {}\n{}", text(&i), fresh.log());
    let log = text(&i);
    for name in ["cached-through-buildctl", "mkfile /after"] {
        let n = vertex_number(&log, name);
        assert!(log.contains(&format!("#{n} CACHED")), "{name} is CACHED from the imported cache:\n{log}");
    }
    let noise = |d: &Path| std::fs::read(d.join("noise")).expect("noise");
    assert_eq!(noise(&first_out), noise(&second_out), "the imported result is the exported one, not a new run");
    fresh.assert_serving("cache imports");
    stop_and_assert_no_orphans(fresh);

    // Through the Dockerfile frontend too (buildctl also sends the imports as the frontend's
    // `cache-imports`, which kiln points at the staged copy).
    let ctx = env.path("ctx");
    std::fs::create_dir_all(&ctx).expect("mkdir");
    std::fs::write(ctx.join("Dockerfile"), "FROM base\nRUN head -c 1000 /dev/urandom > /noise\n").expect("Dockerfile");
    let (c, d, r) = (format!("context={}", ctx.display()), format!("dockerfile={}", ctx.display()), local.clone());
    // Relative cache directories: only the client can resolve them (its working directory), so
    // the daemon reaching them proves the transfer goes through the client's store.
    let (df_export, df_import) = ("type=local,dest=df-cache,mode=max", "type=local,src=df-cache");
    let dockerfile_build = |server: &Server, cache_flag: &str, cache: &str, out_dir: &Path| {
        let out = format!("type=local,dest={}", out_dir.display());
        let args = [
            "build",
            "--progress",
            "plain",
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
            "--output",
            &out,
            cache_flag,
            cache,
        ];
        let o = server.buildctl_in(env.dir.path(), &args, b"");
        assert!(o.status.success(), "dockerfile build with {cache_flag}: {}\n{}", text(&o), server.log());
        text(&o)
    };
    let one = Server::start(&[]);
    dockerfile_build(&one, "--export-cache", df_export, &env.path("df1"));
    fault_common::verify_layout(&env.path("df-cache")).unwrap_or_else(|e| panic!("the exported cache: {e}"));
    assert!(one.stop().status.success());
    let two = Server::start(&[]);
    let log = dockerfile_build(&two, "--import-cache", df_import, &env.path("df2"));
    let n = vertex_number(&log, "urandom");
    assert!(log.contains(&format!("#{n} CACHED")), "the Dockerfile's RUN is CACHED from the imported cache:\n{log}");
    let noise = |d: &str| std::fs::read(env.path(d).join("noise")).expect("noise");
    assert_eq!(noise("df1"), noise("df2"));
    // A local import the client names only in the frontend's `cache-imports` (not as a cache
    // import of its own, so buildctl serves no store for it) is ignored: the daemon never reads a
    // client-named directory on its own disk, though this one exists here.
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(cache.join("index.json")).expect("index.json")).expect("json");
    let digest = index["manifests"][0]["digest"].as_str().expect("digest").to_owned();
    let crafted =
        serde_json::json!([{ "Type": "local", "Attrs": { "src": cache.display().to_string(), "digest": digest } }]);
    let opt = format!("cache-imports={crafted}");
    let o = two.buildctl(&["build", "--progress", "plain", "--local", &local, "--opt", &opt], &def);
    assert!(o.status.success(), "{}", text(&o));
    let log = text(&o);
    let n = vertex_number(&log, "cached-through-buildctl");
    assert!(!log.contains(&format!("#{n} CACHED")), "a daemon-side directory was imported:\n{log}");
    assert!(two.stop().status.success());
}

#[test]
fn resolve_image_config_reads_a_registry_image() {
    use kiln::server::proto::control::control_client::ControlClient;
    use kiln::server::proto::control::SolveRequest;
    use kiln::server::proto::gateway::llb_bridge_client::LlbBridgeClient;
    use kiln::server::proto::gateway::{ResolveImageConfigRequest, ReturnRequest};

    let server = Server::start(&[]);
    let reg = fault_common::Registry::start();
    let image = format!("{}/kiln/resolve:1", reg.addr);
    let out = format!("type=image,name={image},push=true,registry.insecure=true");
    let p = server.buildctl(&["build", "--output", &out], &hello_def("resolve me\n"));
    assert!(p.status.success(), "push: {}", text(&p));
    let inspect = Command::new("skopeo")
        .args(["inspect", "--tls-verify=false", &format!("docker://{image}")])
        .output()
        .expect("run skopeo");
    assert!(inspect.status.success(), "skopeo inspect: {}", text(&inspect));
    let want: serde_json::Value = serde_json::from_slice(&inspect.stdout).expect("skopeo json");

    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let endpoint = format!("http://{}", server.tcp);
    rt.block_on(async move {
        let channel = tokio::time::timeout(
            Duration::from_secs(30),
            tonic::transport::Endpoint::from_shared(endpoint).expect("endpoint").connect(),
        )
        .await
        .expect("connect within 30 s")
        .expect("connect");
        // A client-side build: Control.Solve without a definition, driven over the LLB bridge.
        let build_id = "kiln-resolve-1";
        let mut control = ControlClient::new(channel.clone());
        let solve = tokio::spawn(async move {
            control.solve(SolveRequest { r#ref: build_id.to_owned(), ..Default::default() }).await
        });
        let mut bridge = LlbBridgeClient::new(channel);
        fn keyed<T>(msg: T) -> tonic::Request<T> {
            let mut r = tonic::Request::new(msg);
            r.metadata_mut().insert("buildkit-controlapi-buildid", "kiln-resolve-1".parse().expect("header"));
            r
        }
        let resp = tokio::time::timeout(
            Duration::from_secs(60),
            bridge
                .resolve_image_config(keyed(ResolveImageConfigRequest { r#ref: image.clone(), ..Default::default() })),
        )
        .await
        .expect("resolved within 60 s")
        .expect("ResolveImageConfig")
        .into_inner();
        assert_eq!(resp.digest, want["Digest"].as_str().expect("digest"), "the manifest digest skopeo sees");
        let config: serde_json::Value = serde_json::from_slice(&resp.config).expect("the config is JSON");
        assert_eq!(config["architecture"], want["Architecture"], "{config}");
        assert_eq!(config["os"], want["Os"], "{config}");
        assert!(config["rootfs"]["diff_ids"].is_array(), "the whole image config, rootfs included: {config}");

        // Unsupported forms are Unimplemented with a message; a missing image is an error.
        let e = bridge
            .resolve_image_config(keyed(ResolveImageConfigRequest {
                r#ref: image.clone(),
                resolver_type: 1,
                ..Default::default()
            }))
            .await
            .expect_err("OCI layout stores on the session are not served");
        assert_eq!(e.code(), tonic::Code::Unimplemented, "{e:?}");
        assert!(!e.message().is_empty());
        let missing = format!("{}/kiln/no-such-image:1", reg.addr);
        let e = bridge
            .resolve_image_config(keyed(ResolveImageConfigRequest { r#ref: missing, ..Default::default() }))
            .await
            .expect_err("a missing image");
        assert_ne!(e.code(), tonic::Code::Ok);

        bridge.r#return(keyed(ReturnRequest::default())).await.expect("return");
        let done = tokio::time::timeout(Duration::from_secs(30), solve).await.expect("solve ends").expect("join");
        done.expect("the build ends with its (empty) result");
    });
    server.assert_serving("ResolveImageConfig");
    let stopped = server.stop();
    assert!(stopped.status.success(), "{}", text(&stopped));
}
