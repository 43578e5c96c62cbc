//! A real `docker-registry` (Debian package) for integration tests: listens on
//! `127.0.0.1:<free port>` with filesystem storage and a config in a temp dir, optionally with
//! htpasswd (bcrypt) basic auth. Killed on drop. Fails loudly when the binary is missing.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The registry binary from Debian's `docker-registry` package.
pub const DOCKER_REGISTRY: &str = "/usr/bin/docker-registry";
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// A running registry; `addr` is `127.0.0.1:PORT`.
pub struct TestRegistry {
    /// `127.0.0.1:PORT`.
    pub addr: String,
    /// Temp dir holding the config, the htpasswd file, the log and the storage.
    pub dir: tempfile::TempDir,
    child: Child,
}

impl TestRegistry {
    /// Starts an anonymous registry.
    pub fn start() -> TestRegistry {
        TestRegistry::launch(None)
    }

    /// Starts a registry requiring basic auth for `user`/`password` (bcrypt htpasswd made with
    /// `htpasswd -B` from apache2-utils).
    pub fn start_with_htpasswd(user: &str, password: &str) -> TestRegistry {
        TestRegistry::launch(Some((user, password)))
    }

    fn launch(auth: Option<(&str, &str)>) -> TestRegistry {
        assert!(
            Path::new(DOCKER_REGISTRY).is_file(),
            "{DOCKER_REGISTRY} is missing: install the docker-registry package (scripts/setup)"
        );
        let dir = tempfile::tempdir().expect("tempdir for registry");
        let auth_yaml = match auth {
            None => String::new(),
            Some((user, password)) => {
                let out = Command::new("htpasswd")
                    .args(["-B", "-b", "-n", user, password])
                    .output()
                    .expect("running htpasswd (install apache2-utils: scripts/setup)");
                assert!(out.status.success(), "htpasswd failed: {}", String::from_utf8_lossy(&out.stderr));
                let path = dir.path().join("htpasswd");
                std::fs::write(&path, &out.stdout).expect("writing htpasswd");
                format!("auth:\n  htpasswd:\n    realm: kiln-test\n    path: {}\n", path.display())
            }
        };
        let config = dir.path().join("config.yml");
        let storage = dir.path().join("storage");
        let log_path = dir.path().join("registry.log");
        // The port is found by binding :0; if another process takes it before the registry
        // binds, the registry exits and the next attempt picks a new port.
        let mut last_log = String::new();
        for _ in 0..5 {
            let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port").port();
            let addr = format!("127.0.0.1:{port}");
            std::fs::write(
                &config,
                format!(
                    "version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    \
                     enabled: true\n  maintenance:\n    uploadpurging:\n      enabled: false\nhttp:\n  addr: {addr}\n{auth_yaml}",
                    storage.display()
                ),
            )
            .expect("writing registry config");
            let log = std::fs::File::create(&log_path).expect("registry log");
            let mut child = Command::new(DOCKER_REGISTRY)
                .arg("serve")
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("log fd"))
                .stderr(log)
                .spawn()
                .unwrap_or_else(|e| panic!("starting {DOCKER_REGISTRY}: {e}"));
            match wait_ready(&mut child, &addr, &log_path) {
                Ok(()) => return TestRegistry { addr, dir, child },
                Err(log) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    if !log.contains("address already in use") {
                        panic!("docker-registry did not become ready: {log}");
                    }
                    last_log = log;
                }
            }
        }
        panic!("docker-registry did not start after 5 attempts: {last_log}");
    }

    /// The registry's log so far (for assertion messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// Where the registry stores its data.
    pub fn storage(&self) -> PathBuf {
        self.dir.path().join("storage")
    }
}

/// Polls `GET /v2/` until the registry answers (200, or 401 with auth), bounded by a deadline;
/// on failure returns why, with the registry's log.
fn wait_ready(child: &mut Child, addr: &str, log_path: &Path) -> Result<(), String> {
    let deadline = Instant::now() + READY_TIMEOUT;
    let read_log = || std::fs::read_to_string(log_path).unwrap_or_default();
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("docker-registry exited with {status}; log:\n{}", read_log()));
        }
        if let Some(200 | 401) = http_status(addr, "/v2/") {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("no answer on {addr} within {READY_TIMEOUT:?}; log:\n{}", read_log()));
        }
        // Back-off between polls of a bounded loop, not a synchronisation sleep.
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Status code of a plain `GET path` on `addr`, or `None` when the connection fails.
pub fn http_status(addr: &str, path: &str) -> Option<u16> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut buf = [0u8; 64];
    let n = s.read(&mut buf).ok()?;
    let line = String::from_utf8_lossy(&buf[..n]);
    line.split_whitespace().nth(1)?.parse().ok()
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
