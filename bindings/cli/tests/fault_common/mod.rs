//! Shared helpers of the CLI fault tests (`fault_crash`, `fault_disk`, `fault_soak`): a temp dir
//! with a busybox rootfs, bounded runs of the real `kiln` binary, leak checks (mounts, runc
//! containers), cache verification (local layouts and registry tags, every blob verified), a
//! minimal `docker-registry`, a tmpfs guard, a seeded LCG, and the fault-summary lines (the same
//! format and place as `core/tests/common/fault.rs`, which this crate cannot use).

#![allow(dead_code)]

use kiln::graph::{ExecOptions, State};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

pub const KILN: &str = env!("CARGO_BIN_EXE_kiln");
/// Bound of any single kiln invocation in these tests.
pub const RUN_LIMIT: Duration = Duration::from_secs(120);

/// A temp dir holding a busybox rootfs (made by `tests/fixtures/make-rootfs`), roots, caches.
pub struct Env {
    pub dir: tempfile::TempDir,
}

impl Env {
    pub fn new() -> Env {
        let dir = tempfile::tempdir().expect("tempdir");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/make-rootfs");
        let st = Command::new("sh").arg(&script).arg(dir.path().join("rootfs")).status().expect("run make-rootfs");
        assert!(st.success(), "make-rootfs failed (is busybox-static installed?)");
        Env { dir }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn local_arg(&self) -> String {
        format!("rootfs={}", self.path("rootfs").display())
    }

    /// Writes `st`'s definition to `<dir>/<name>.pb`.
    pub fn def(&self, name: &str, st: &State) -> PathBuf {
        let p = self.path(&format!("{name}.pb"));
        std::fs::write(&p, st.to_definition().expect("definition").to_bytes()).expect("write definition");
        p
    }

    /// `kiln --root ROOT build --progress plain --definition DEF --local rootfs=.. EXTRA..`.
    pub fn build_cmd(&self, root: &Path, def: &Path, extra: &[String]) -> Command {
        let mut c = kiln(root);
        c.args(["build", "--progress", "plain", "--definition"]).arg(def).arg("--local").arg(self.local_arg());
        c.args(extra);
        c
    }
}

/// A tiny graph: one RUN on the busybox rootfs writing `tag` and `kib` KiB of random bytes.
pub fn tiny(tag: &str, kib: u32) -> State {
    State::local("rootfs")
        .run(ExecOptions::shell(format!("echo {tag} > /tag && head -c {} /dev/urandom > /r", kib * 1024)))
        .root()
}

/// A build graph without a container: 16 KiB of seeded bytes in `/<tag>.tag` on scratch (for
/// probes about caches rather than containers).
pub fn small_file(tag: &str) -> State {
    let mut rng =
        Lcg::new(tag.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)));
    let data: Vec<u8> = (0..16 * 1024).map(|_| rng.next() as u8).collect();
    State::scratch().mkfile(format!("/{tag}.tag"), 0o644, data, kiln::graph::MkfileOptions::default())
}

/// `kiln --root ROOT` with a clean environment.
pub fn kiln(root: &Path) -> Command {
    let mut c = Command::new(KILN);
    c.arg("--root").arg(root).env_remove("KILN_ROOT").env_remove("KILN_LOG").stdin(Stdio::null());
    c
}

/// Runs `cmd` to completion, killing it after `RUN_LIMIT`.
pub fn run(mut cmd: Command) -> Output {
    let child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn kiln");
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(RUN_LIMIT) {
        Ok(out) => out.expect("wait for kiln"),
        Err(_) => {
            let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
            panic!("kiln (pid {pid}) did not finish within {RUN_LIMIT:?}")
        }
    }
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Runs and asserts success; returns stderr (the plain progress).
#[track_caller]
pub fn ok(cmd: Command) -> String {
    let o = run(cmd);
    assert!(
        o.status.success(),
        "kiln failed ({}):\nstdout:\n{}\nstderr:\n{}",
        o.status,
        text(&o.stdout),
        text(&o.stderr)
    );
    text(&o.stderr)
}

/// Waits (bounded) for `child` to exit.
pub fn wait_bounded(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if let Some(st) = child.try_wait().expect("try_wait") {
            return Some(st);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    None
}

/// Whether every vertex of a plain progress log ended CACHED (none ran: no `DONE` line) and the
/// log shows at least one CACHED vertex.
pub fn fully_cached(log: &str) -> bool {
    let mut cached = 0;
    for l in log.lines() {
        let Some(rest) = l.strip_prefix('#') else { continue };
        let Some((n, tail)) = rest.split_once(' ') else { continue };
        if n.parse::<usize>().is_err() {
            continue;
        }
        if tail == "CACHED" {
            cached += 1;
        }
        if tail.starts_with("DONE") || tail.starts_with("ERROR") {
            // Cache import/export steps are not vertices of the graph.
            return false;
        }
    }
    cached > 0
}

/// What a finished solve may not leave behind: mounts under `root` and runc containers.
pub fn leaks(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let root = root.canonicalize().unwrap_or_else(|_| root.to_path_buf());
    let r = root.to_string_lossy().into_owned();
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    out.extend(mountinfo.lines().filter(|l| l.contains(&r)).map(|l| format!("mount: {l}")));
    let runc = Command::new("runc").arg("--root").arg(root.join("runtime/runc")).args(["list", "-q"]).output();
    if let Ok(o) = runc {
        out.extend(text(&o.stdout).lines().filter(|l| !l.trim().is_empty()).map(|l| format!("container: {l}")));
    }
    out
}

/// Opens a local cache directory and verifies every blob every tag references (the cache root,
/// its config and every layer). Returns the tags, or what is wrong.
pub fn verify_layout(cache: &Path) -> Result<Vec<String>, String> {
    let layout = kiln::content::OciLayout::open(cache).map_err(|e| format!("layout {}: {e}", cache.display()))?;
    let index = layout.index().map_err(|e| format!("index: {e}"))?;
    let mut tags = Vec::new();
    for m in index.manifests() {
        let Some(tag) = m.annotations().as_ref().and_then(|a| a.get("org.opencontainers.image.ref.name")).cloned()
        else {
            return Err(format!("untagged manifest {}", m.digest()));
        };
        let records = kiln::remotecache::export::read_records(&layout, &tag).map_err(|e| format!("tag {tag}: {e}"))?;
        for l in records.iter().flat_map(|r| r.layers.iter().flatten()) {
            // Streamed to the end: the reader verifies the digest there (layers may be larger
            // than the cap on whole reads of metadata blobs).
            let mut r =
                layout.store().open_reader(&l.digest).map_err(|e| format!("tag {tag}: blob {}: {e}", l.digest))?;
            std::io::copy(&mut r, &mut std::io::sink()).map_err(|e| format!("tag {tag}: blob {}: {e}", l.digest))?;
        }
        tags.push(tag);
    }
    tags.sort();
    Ok(tags)
}

/// Total bytes of regular files under `dir`.
pub fn dir_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    let mut budget = 1_000_000usize;
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            budget = budget.saturating_sub(1);
            if budget == 0 {
                return total;
            }
            let Ok(ft) = e.file_type() else { continue };
            if ft.is_dir() {
                stack.push(e.path());
            } else if ft.is_file() {
                total += e.metadata().map(|m| m.len()).unwrap_or(0);
            }
        }
    }
    total
}

/// Number of entries directly in `dir` (0 when missing).
pub fn count_entries(dir: &Path) -> usize {
    std::fs::read_dir(dir).map(|d| d.flatten().count()).unwrap_or(0)
}

/// The `Total:` figure of `kiln du` (e.g. `0B`).
pub fn du_total(root: &Path) -> String {
    let mut c = kiln(root);
    c.arg("du");
    let o = run(c);
    assert!(o.status.success(), "kiln du: {}", text(&o.stderr));
    let out = text(&o.stdout);
    out.lines()
        .find_map(|l| l.strip_prefix("Total:"))
        .map(|t| t.trim().to_owned())
        .unwrap_or_else(|| panic!("no Total line:\n{out}"))
}

/// Verifies a registry cache tag: its manifest resolves and every blob it names (config and
/// layers) downloads and matches its digest.
pub fn verify_registry_tag(reference: &str) -> Result<usize, String> {
    let r = kiln::registry::Reference::parse(reference).map_err(|e| format!("{reference}: {e}"))?;
    let client = kiln::registry::RegistryClient::new(true).map_err(|e| e.to_string())?;
    let (body, _mt, _d) = client.get_manifest(&r).map_err(|e| format!("{reference}: {e}"))?;
    let v: serde_json::Value = serde_json::from_slice(&body).map_err(|e| format!("{reference}: manifest: {e}"))?;
    let mut digests = Vec::new();
    if let Some(c) = v.get("config").and_then(|c| c.get("digest")).and_then(|d| d.as_str()) {
        digests.push(c.to_owned());
    }
    for key in ["layers", "manifests"] {
        for l in v.get(key).and_then(|l| l.as_array()).into_iter().flatten() {
            if let Some(d) = l.get("digest").and_then(|d| d.as_str()) {
                digests.push(d.to_owned());
            }
        }
    }
    if digests.is_empty() {
        return Err(format!("{reference}: the manifest names no blob"));
    }
    let tmp = tempfile::tempdir().map_err(|e| e.to_string())?;
    let store = kiln::content::ContentStore::open(tmp.path()).map_err(|e| e.to_string())?;
    for d in &digests {
        let digest = kiln::digest::Digest::parse(d).map_err(|e| e.to_string())?;
        client.fetch_blob(&r, &digest, &store).map_err(|e| format!("{reference}: blob {d}: {e}"))?;
    }
    Ok(digests.len())
}

/// A seeded linear congruential generator (Knuth's MMIX constants).
pub struct Lcg(u64);

impl Lcg {
    pub fn new(seed: u64) -> Lcg {
        Lcg(seed)
    }
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        self.0 >> 33
    }
    /// Uniform-ish in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

// One recorder for every fault test: core's (same file, same line format, same directory).
#[path = "../../../../core/tests/common/fault.rs"]
mod fault;
#[allow(unused_imports)] // not every test crate records fault rows
pub use fault::record;

/// A small tmpfs mounted at a directory, unmounted (lazily if busy) on drop.
pub struct Tmpfs {
    pub dir: PathBuf,
}

impl Tmpfs {
    pub fn mount(dir: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(dir).expect("tmpfs mountpoint");
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0755"), "tmpfs"])
            .arg(dir)
            .status()
            .expect("run mount");
        assert!(st.success(), "mounting a tmpfs at {} (tests run as root)", dir.display());
        Tmpfs { dir: dir.to_path_buf() }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let ok = Command::new("umount").arg(&self.dir).status().map(|s| s.success()).unwrap_or(false);
        if !ok {
            let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        }
    }
}

/// A `docker-registry` on `127.0.0.1:<free port>` with storage in a temp dir; killed on drop.
pub struct Registry {
    pub addr: String,
    pub dir: tempfile::TempDir,
    child: Child,
}

const DOCKER_REGISTRY: &str = "/usr/bin/docker-registry";

impl Registry {
    pub fn start() -> Registry {
        assert!(Path::new(DOCKER_REGISTRY).is_file(), "{DOCKER_REGISTRY} is missing (scripts/setup)");
        let dir = tempfile::tempdir().expect("tempdir for registry");
        let config = dir.path().join("config.yml");
        let log_path = dir.path().join("registry.log");
        for _ in 0..5 {
            let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port").port();
            let addr = format!("127.0.0.1:{port}");
            std::fs::write(
                &config,
                format!(
                    "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  \
                     maintenance:\n    uploadpurging:\n      enabled: false\nhttp:\n  addr: {addr}\n",
                    dir.path().join("storage").display()
                ),
            )
            .expect("registry config");
            let log = std::fs::File::create(&log_path).expect("registry log");
            let mut child = Command::new(DOCKER_REGISTRY)
                .arg("serve")
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("log fd"))
                .stderr(log)
                .spawn()
                .expect("start docker-registry");
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                if http_status(&addr, "/v2/") == Some(200) {
                    return Registry { addr, dir, child };
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        panic!("docker-registry did not start: {}", std::fs::read_to_string(&log_path).unwrap_or_default());
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn http_status(addr: &str, path: &str) -> Option<u16> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut buf = [0u8; 64];
    let n = s.read(&mut buf).ok()?;
    String::from_utf8_lossy(&buf[..n]).split_whitespace().nth(1)?.parse().ok()
}
