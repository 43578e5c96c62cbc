//! Loopback servers the Dockerfile cases use: a real `docker-registry` (Debian package) holding
//! the base images both engines pull (`FROM {REG}/busybox:TAG`), and a small HTTP file server
//! for `ADD {HTTP}/...`. Both listen on `127.0.0.1:<free port>` and stop when dropped.
//!
//! BuildKit v0.11.6 speaks plain http to loopback registries without configuration
//! (containerd's `MatchLocalhost` when the daemon's config names no such registry), and so does
//! kiln, so a long-lived buildkitd started without registry arguments pulls from this one too.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The registry binary from Debian's `docker-registry` package.
pub const DOCKER_REGISTRY: &str = "/usr/bin/docker-registry";
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// A running registry on `addr` (`127.0.0.1:PORT`), killed on drop.
pub struct Registry {
    /// `127.0.0.1:PORT`.
    pub addr: String,
    child: Child,
    /// What `GET /v2/` answers once it listens (401 with auth).
    ready_status: u16,
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Registry {
    /// Starts an anonymous registry with filesystem storage under `dir`.
    pub fn start(dir: &Path) -> Result<Registry, String> {
        Registry::start_with(dir, None)
    }

    /// Starts a registry requiring basic auth for `user`/`password` (a bcrypt htpasswd made by
    /// `htpasswd -B` from apache2-utils).
    pub fn start_with_auth(dir: &Path, user: &str, password: &str) -> Result<Registry, String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
        let out = Command::new("htpasswd")
            .args(["-Bbn", user, password])
            .output()
            .map_err(|e| format!("running htpasswd (install apache2-utils: scripts/setup): {e}"))?;
        if !out.status.success() {
            return Err(format!("htpasswd failed: {}", String::from_utf8_lossy(&out.stderr)));
        }
        let path = dir.join("htpasswd");
        std::fs::write(&path, &out.stdout).map_err(|e| format!("write {}: {e}", path.display()))?;
        Registry::start_with(
            dir,
            Some(&format!("auth:\n  htpasswd:\n    realm: kiln-test\n    path: {}\n", path.display())),
        )
    }

    fn start_with(dir: &Path, auth: Option<&str>) -> Result<Registry, String> {
        if !Path::new(DOCKER_REGISTRY).is_file() {
            return Err(format!("{DOCKER_REGISTRY} is missing: install the docker-registry package (scripts/setup)"));
        }
        std::fs::create_dir_all(dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
        let config = dir.join("config.yml");
        let log_path = dir.join("registry.log");
        let mut last = String::new();
        // The port is found by binding :0; if it is taken before the registry binds, retry.
        for _ in 0..5 {
            let port = TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map_err(|e| format!("free port: {e}"))?
                .port();
            let addr = format!("127.0.0.1:{port}");
            std::fs::write(
                &config,
                format!(
                    "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {addr}\n{}",
                    dir.join("storage").display(),
                    auth.unwrap_or_default()
                ),
            )
            .map_err(|e| format!("write {}: {e}", config.display()))?;
            let log = std::fs::File::create(&log_path).map_err(|e| format!("create {}: {e}", log_path.display()))?;
            let log2 = log.try_clone().map_err(|e| format!("log fd: {e}"))?;
            let child = Command::new(DOCKER_REGISTRY)
                .arg("serve")
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(log)
                .stderr(log2)
                .spawn()
                .map_err(|e| format!("start {DOCKER_REGISTRY}: {e}"))?;
            let mut reg = Registry { addr, child, ready_status: if auth.is_some() { 401 } else { 200 } };
            match reg.wait_ready(&log_path) {
                Ok(()) => return Ok(reg),
                Err(e) if e.contains("address already in use") => last = e,
                Err(e) => return Err(e),
            }
        }
        Err(format!("docker-registry did not start after 5 attempts: {last}"))
    }

    fn wait_ready(&mut self, log_path: &Path) -> Result<(), String> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let read_log = || std::fs::read_to_string(log_path).unwrap_or_default();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("docker-registry exited with {status}; log:\n{}", read_log()));
            }
            if http_status(&self.addr, "/v2/") == Some(self.ready_status) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "docker-registry: no answer on {} within {READY_TIMEOUT:?}; log:\n{}",
                    self.addr,
                    read_log()
                ));
            }
            // Back-off between polls of a bounded loop.
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Status code of a plain `GET path` on `addr`, or `None` when the connection fails.
fn http_status(addr: &str, path: &str) -> Option<u16> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut buf = [0u8; 64];
    let n = s.read(&mut buf).ok()?;
    String::from_utf8_lossy(&buf[..n]).split_whitespace().nth(1)?.parse().ok()
}

/// A file server on `addr` (`127.0.0.1:PORT`) answering `GET /NAME` with the file `NAME` of
/// its directory (a fixed `Last-Modified`), 404 otherwise. Stops accepting when dropped.
pub struct HttpServer {
    /// `127.0.0.1:PORT`.
    pub addr: String,
    stop: Arc<AtomicBool>,
}

/// The `Last-Modified` every served file gets (the fixtures' mtime, 2020-09-13T12:26:40Z).
pub const LAST_MODIFIED: &str = "Sun, 13 Sep 2020 12:26:40 GMT";

impl HttpServer {
    /// Serves the files of `dir` (flat names only).
    pub fn start(dir: PathBuf) -> Result<HttpServer, String> {
        let l = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("bind http server: {e}"))?;
        let addr = l.local_addr().map_err(|e| format!("http server addr: {e}"))?.to_string();
        l.set_nonblocking(true).map_err(|e| format!("http server nonblocking: {e}"))?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        std::thread::spawn(move || {
            while !flag.load(Ordering::SeqCst) {
                match l.accept() {
                    Ok((s, _)) => {
                        let dir = dir.clone();
                        std::thread::spawn(move || serve_one(s, &dir));
                    }
                    // Polling a non-blocking listener so drop can stop it.
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        Ok(HttpServer { addr, stop })
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn serve_one(s: TcpStream, dir: &Path) {
    let _ = s.set_nonblocking(false);
    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
    let Ok(read) = s.try_clone() else { return };
    let mut r = BufReader::new(read);
    let mut line = String::new();
    if r.read_line(&mut line).is_err() {
        return;
    }
    // Headers up to the empty line.
    loop {
        let mut h = String::new();
        match r.read_line(&mut h) {
            Ok(0) | Err(_) => break,
            Ok(_) if h.trim().is_empty() => break,
            Ok(_) => {}
        }
    }
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_owned();
    let path =
        parts.next().unwrap_or_default().split('?').next().unwrap_or_default().trim_start_matches('/').to_owned();
    let body = if path.is_empty() || path.contains('/') || path.contains("..") {
        None
    } else {
        std::fs::read(dir.join(&path)).ok()
    };
    let mut w = s;
    let _ = match body {
        Some(b) => {
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nContent-Type: application/octet-stream\r\nLast-Modified: {LAST_MODIFIED}\r\nConnection: close\r\n\r\n",
                b.len()
            );
            w.write_all(head.as_bytes()).and_then(|_| if method == "HEAD" { Ok(()) } else { w.write_all(&b) })
        }
        None => w.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"),
    };
}
