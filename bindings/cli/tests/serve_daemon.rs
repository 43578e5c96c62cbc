//! `kiln serve` as a daemon under stress, driven by the real `buildctl` (BuildKit v0.11.6, from
//! `KILN_BUILDKIT_DIR`, default `<repo>/../shared/buildkit`): TLS with client certificates
//! (certificates made by `openssl` here), many clients at once, clients killed mid-build,
//! hostile bytes on the socket, SIGTERM while a build runs. Every wait is bounded.

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
    dir: tempfile::TempDir,
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
        let mut s = Server { child: Some(child), dir, sock, tcp };
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

    fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("serve.log")).unwrap_or_default()
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// `buildctl --addr unix://SOCK ARGS` with `stdin`, not yet waited for.
    fn spawn_buildctl(&self, args: &[&str], stdin: &[u8]) -> Child {
        spawn_buildctl(&format!("unix://{}", self.sock.display()), args, stdin)
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
    use std::io::Write;
    let mut c = Command::new(buildctl_bin())
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

    // A CA without a server certificate, or a certificate without its key, is refused at start.
    for bad in [vec!["--tlscacert", ca.as_str()], vec!["--tlscert", cert.as_str()]] {
        let o = Command::new(env!("CARGO_BIN_EXE_kiln"))
            .arg("--root")
            .arg(server.dir.path().join("root2"))
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

/// Keeps `Env` and the `leaks`/`ExecOptions` imports used until the robustness tests land.
#[allow(dead_code)]
fn _uses(_: Env, _: ExecOptions) -> Vec<String> {
    leaks(Path::new("/nonexistent"))
}
