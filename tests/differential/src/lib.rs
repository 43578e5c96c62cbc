//! Differential suite: every graph in [`graphs::GRAPHS`] is marshalled once with kiln's own
//! builder, then solved by a real buildkitd (`buildctl build`) and by kiln's CLI (`kiln build`),
//! both exporting `type=tar,dest=-`. The two tar streams are parsed into trees and compared entry
//! by entry; `buildctl debug dump-llb` and `kiln debug dump-llb` must print the same text.
//! See `tests/differential/README.md`.

mod dfcheck;
pub mod dockerfiles;
pub mod fixtures;
pub mod graphs;
pub mod servers;
pub mod tree;

use kiln::graph::{pb, State};
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

/// What a graph function returns: a state built with kiln's builder, or a raw definition (for
/// graphs the builder refuses to produce, such as an exec without args).
pub enum Built {
    /// Marshalled with `State::to_definition`.
    State(State),
    /// Encoded as is.
    Raw(pb::Definition),
}

/// One entry of the graph table.
pub struct Graph {
    /// Name printed on the result line.
    pub name: &'static str,
    /// Builds the graph.
    pub build: fn() -> Result<Built, String>,
    /// Both engines must fail.
    pub refused: bool,
    /// Paths whose mtime is compared (the graph pins them); `"*"` compares every entry.
    pub mtime: &'static [&'static str],
}

/// One entry of the suite: an LLB graph or a Dockerfile case.
pub enum Case {
    /// A graph of [`graphs::GRAPHS`].
    Graph(&'static Graph),
    /// A case of [`dockerfiles::CASES`].
    Dockerfile(&'static str, &'static dockerfiles::DockerfileCase),
}

impl Case {
    /// The name printed on the result line and matched by `DIFF_ONLY`.
    pub fn name(&self) -> &'static str {
        match self {
            Case::Graph(g) => g.name,
            Case::Dockerfile(n, _) => n,
        }
    }

    /// Both engines must fail.
    pub fn refused(&self) -> bool {
        match self {
            Case::Graph(g) => g.refused,
            Case::Dockerfile(_, d) => d.refused,
        }
    }
}

/// Where the engines are and what every build gets.
pub struct Env {
    /// buildctl binary.
    pub buildctl: PathBuf,
    /// buildkitd address.
    pub addr: String,
    /// kiln binary.
    pub kiln: PathBuf,
    /// kiln roots, one per concurrent job (a root is locked by the process using it).
    pub kiln_roots: Vec<PathBuf>,
    /// `--local NAME=DIR` pairs given to both engines.
    pub locals: Vec<(String, PathBuf)>,
    /// `--secret` CSV values given to both engines.
    pub secrets: Vec<String>,
    /// `--ssh ID=SOCKET` values given to both engines.
    pub ssh: Vec<String>,
    /// Scratch directory for definitions and outputs.
    pub work: PathBuf,
    /// The loopback registry holding the Dockerfile cases' base images (`127.0.0.1:PORT`).
    pub registry: String,
    /// The loopback HTTP file server for `ADD <url>` (`127.0.0.1:PORT`).
    pub http: String,
}

/// Outcome of running one command.
pub struct Run {
    /// Exit success.
    pub ok: bool,
    /// stdout bytes.
    pub stdout: Vec<u8>,
    /// stderr text.
    pub stderr: String,
}

const TIMEOUT: Duration = Duration::from_secs(180);

/// Runs `cmd` with stdin from `input`, stdout/stderr into files under `work` (no pipe deadlocks),
/// killed after [`TIMEOUT`].
pub fn run_cmd(mut cmd: Command, input: &Path, work: &Path, tag: &str) -> Result<Run, String> {
    let out_path = work.join(format!("{tag}.stdout"));
    let err_path = work.join(format!("{tag}.stderr"));
    let stdin = File::open(input).map_err(|e| format!("open {}: {e}", input.display()))?;
    let stdout = File::create(&out_path).map_err(|e| format!("create {}: {e}", out_path.display()))?;
    let stderr = File::create(&err_path).map_err(|e| format!("create {}: {e}", err_path.display()))?;
    let mut child = cmd
        .stdin(Stdio::from(stdin))
        .stdout(Stdio::from(stdout))
        .stderr(Stdio::from(stderr))
        .spawn()
        .map_err(|e| format!("spawn {cmd:?}: {e}"))?;
    let start = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) if start.elapsed() > TIMEOUT => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("{cmd:?} timed out after {}s", TIMEOUT.as_secs()));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(format!("wait {cmd:?}: {e}")),
        }
    };
    let stdout = std::fs::read(&out_path).map_err(|e| format!("read {}: {e}", out_path.display()))?;
    let stderr = std::fs::read_to_string(&err_path).unwrap_or_default();
    let _ = std::fs::remove_file(&out_path);
    let _ = std::fs::remove_file(&err_path);
    Ok(Run { ok: status.success(), stdout, stderr })
}

pub(crate) fn last_lines(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..].iter().map(|l| format!("      | {l}")).collect::<Vec<_>>().join("\n")
}

/// Marshals a graph's definition.
pub fn marshal(g: &Graph) -> Result<Vec<u8>, String> {
    match (g.build)()? {
        Built::State(s) => s.to_definition().map(|d| d.to_bytes()).map_err(|e| format!("marshal: {e}")),
        Built::Raw(d) => Ok(prost::Message::encode_to_vec(&d)),
    }
}

impl Env {
    fn buildctl_build(&self, def: &Path, work: &Path) -> Result<Run, String> {
        let mut c = Command::new(&self.buildctl);
        c.arg("--addr").arg(&self.addr).arg("build").arg("--progress=plain").arg("--output").arg("type=tar,dest=-");
        for (n, d) in &self.locals {
            c.arg("--local").arg(format!("{n}={}", d.display()));
        }
        for s in &self.secrets {
            c.arg("--secret").arg(s);
        }
        for s in &self.ssh {
            c.arg("--ssh").arg(s);
        }
        run_cmd(c, def, work, "buildctl-build")
    }

    fn kiln_build(&self, def: &Path, work: &Path, root: &Path) -> Result<Run, String> {
        let mut c = Command::new(&self.kiln);
        c.arg("--root").arg(root).arg("build").arg("--progress=plain").arg("--output").arg("type=tar,dest=-");
        for (n, d) in &self.locals {
            c.arg("--local").arg(format!("{n}={}", d.display()));
        }
        for s in &self.secrets {
            c.arg("--secret").arg(s);
        }
        for s in &self.ssh {
            c.arg("--ssh").arg(s);
        }
        run_cmd(c, def, work, "kiln-build")
    }

    fn dumps(&self, def: &Path, work: &Path) -> Result<(Run, Run), String> {
        let mut b = Command::new(&self.buildctl);
        b.arg("debug").arg("dump-llb");
        let mut k = Command::new(&self.kiln);
        k.arg("debug").arg("dump-llb");
        Ok((run_cmd(b, def, work, "buildctl-dump")?, run_cmd(k, def, work, "kiln-dump")?))
    }

    /// Runs one entry of the suite ([`Env::check`] or [`Env::check_dockerfile`]).
    pub fn check_case(&self, c: &Case, job: usize) -> Result<Vec<String>, Vec<String>> {
        match c {
            Case::Graph(g) => self.check(g, job),
            Case::Dockerfile(n, d) => self.check_dockerfile(n, d, job),
        }
    }

    /// Runs one graph; `Ok(notes)` when both engines agree (notes: both errors of a refused
    /// graph), else the report lines.
    pub fn check(&self, g: &Graph, job: usize) -> Result<Vec<String>, Vec<String>> {
        let root = &self.kiln_roots[job % self.kiln_roots.len().max(1)];
        let bytes = marshal(g).map_err(|e| vec![e])?;
        let work = self.work.join(g.name);
        std::fs::create_dir_all(&work).map_err(|e| vec![format!("mkdir {}: {e}", work.display())])?;
        let def = work.join("def.pb");
        File::create(&def)
            .and_then(|mut f| f.write_all(&bytes))
            .map_err(|e| vec![format!("write {}: {e}", def.display())])?;
        let mut problems = Vec::new();

        match self.dumps(&def, &work) {
            Err(e) => problems.push(e),
            Ok((b, k)) => problems.extend(compare_dumps(&b, &k)),
        }

        let b = self.buildctl_build(&def, &work).map_err(|e| vec![e])?;
        let k = self.kiln_build(&def, &work, root).map_err(|e| vec![e])?;
        if g.refused {
            if b.ok || k.ok {
                problems.push(format!(
                    "expected both to refuse: buildkit {}, kiln {}",
                    if b.ok { "succeeded" } else { "failed" },
                    if k.ok { "succeeded" } else { "failed" }
                ));
            }
            if !b.ok {
                problems.push(format!("    buildkit error:\n{}", last_lines(&b.stderr, 2)));
            }
            if !k.ok {
                problems.push(format!("    kiln error:\n{}", last_lines(&k.stderr, 2)));
            }
            // Errors of a refused graph are informational unless an engine succeeded.
            if b.ok || k.ok || problems.iter().any(|p| !p.starts_with("    ")) {
                return Err(problems);
            }
            return Ok(problems);
        }
        if !b.ok || !k.ok {
            problems.push(format!(
                "build failed: buildkit {}, kiln {}",
                if b.ok { "ok" } else { "FAILED" },
                if k.ok { "ok" } else { "FAILED" }
            ));
            if !b.ok {
                problems.push(format!("    buildkit error:\n{}", last_lines(&b.stderr, 6)));
            }
            if !k.ok {
                problems.push(format!("    kiln error:\n{}", last_lines(&k.stderr, 6)));
            }
            return Err(problems);
        }
        if let Some(keep) = std::env::var_os("DIFF_KEEP") {
            let dir = Path::new(&keep).join(g.name);
            let _ = std::fs::create_dir_all(&dir);
            let _ = std::fs::write(dir.join("buildkit.tar"), &b.stdout);
            let _ = std::fs::write(dir.join("kiln.tar"), &k.stdout);
            let _ = std::fs::write(dir.join("def.pb"), &bytes);
        }
        match (tree::parse(&b.stdout), tree::parse(&k.stdout)) {
            (Ok(bt), Ok(kt)) => problems.extend(tree::diff(&kt, &bt, g.mtime)),
            (Err(e), _) => problems.push(format!("buildkit tar: {e}")),
            (_, Err(e)) => problems.push(format!("kiln tar: {e}")),
        }
        if problems.is_empty() {
            Ok(Vec::new())
        } else {
            Err(problems)
        }
    }
}

/// Compares the two dump-llb outputs: exact text first, then line by line as JSON values.
fn compare_dumps(b: &Run, k: &Run) -> Vec<String> {
    let mut p = Vec::new();
    if !b.ok || !k.ok {
        if b.ok != k.ok {
            p.push(format!(
                "dump-llb: buildkit {} kiln {}\n{}{}",
                if b.ok { "ok" } else { "FAILED" },
                if k.ok { "ok" } else { "FAILED" },
                last_lines(&b.stderr, 2),
                last_lines(&k.stderr, 2)
            ));
        }
        return p;
    }
    if b.stdout == k.stdout {
        return p;
    }
    let bs = String::from_utf8_lossy(&b.stdout);
    let ks = String::from_utf8_lossy(&k.stdout);
    let bl: Vec<&str> = bs.lines().collect();
    let kl: Vec<&str> = ks.lines().collect();
    if bl.len() != kl.len() {
        p.push(format!("dump-llb: line count kiln={} buildkit={}", kl.len(), bl.len()));
    }
    for (i, (bline, kline)) in bl.iter().zip(kl.iter()).enumerate() {
        if bline == kline {
            continue;
        }
        let same_value = matches!(
            (serde_json::from_str::<serde_json::Value>(bline), serde_json::from_str::<serde_json::Value>(kline)),
            (Ok(a), Ok(b)) if a == b
        );
        p.push(format!(
            "dump-llb line {}: {}\n      kiln=     {kline}\n      buildkit= {bline}",
            i + 1,
            if same_value { "same JSON value, different text" } else { "different JSON value" }
        ));
    }
    p
}

impl Env {
    /// Builds each of [`dockerfiles::BASE_IMAGES`] with buildkitd on the busybox rootfs and
    /// pushes it to the suite's registry as `busybox:TAG`.
    pub fn push_base_images(&self) -> Result<(), String> {
        for (tag, dockerfile) in dockerfiles::BASE_IMAGES {
            let dir = self.work.join(format!("base-image-{tag}"));
            std::fs::create_dir_all(&dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
            std::fs::write(dir.join("Dockerfile"), dockerfile).map_err(|e| format!("write Dockerfile: {e}"))?;
            let null = dir.join("stdin");
            std::fs::write(&null, b"").map_err(|e| format!("write stdin: {e}"))?;
            let mut c = Command::new(&self.buildctl);
            c.arg("--addr").arg(&self.addr).arg("build").arg("--progress=plain");
            c.arg("--frontend").arg("dockerfile.v0");
            c.arg("--local").arg(format!("context={}", dir.display()));
            c.arg("--local").arg(format!("dockerfile={}", dir.display()));
            for (n, d) in &self.locals {
                c.arg("--local").arg(format!("{n}={}", d.display()));
            }
            c.arg("--opt").arg("context:base=local:rootfs");
            c.arg("--output").arg(format!("type=image,name={}/busybox:{tag},push=true", self.registry));
            let r = run_cmd(c, &null, &dir, "push")?;
            if !r.ok {
                return Err(format!(
                    "pushing base image busybox:{tag} with buildkitd failed:\n{}",
                    last_lines(&r.stderr, 8)
                ));
            }
        }
        Ok(())
    }
}

/// A running buildkitd this suite started (stopped on drop).
pub struct Daemon {
    stop: PathBuf,
    state: PathBuf,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = Command::new(&self.stop).arg(&self.state).stdout(Stdio::null()).status();
    }
}

/// Starts `DIR/start STATE` and returns the address and a guard that runs `DIR/stop STATE`.
pub fn start_daemon(dir: &Path, state: &Path) -> Result<(String, Daemon), String> {
    let out = Command::new(dir.join("start"))
        .arg(state)
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("run {}/start: {e}", dir.display()))?;
    let guard = Daemon { stop: dir.join("stop"), state: state.to_path_buf() };
    if !out.status.success() {
        return Err(format!("{}/start {} failed", dir.display(), state.display()));
    }
    let addr = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    Ok((addr, guard))
}

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap_or_else(|_| PathBuf::from("."))
}

/// `<target>/debug/kiln`: a test binary is `<target>/debug/deps/NAME-HASH`.
pub fn kiln_bin() -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os("KILN_BIN") {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    let profile_dir = exe.parent().and_then(Path::parent).ok_or("cannot locate the target dir")?;
    let bin = profile_dir.join("kiln");
    let hint = "build it first with `cargo build -p kiln-cli` (scripts/test does) or set KILN_BIN";
    let meta = std::fs::metadata(&bin).map_err(|_| format!("{} does not exist: {hint}", bin.display()))?;
    // A stale binary would test old code: refuse one older than any source it is built from.
    let built = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
    let root = repo_root();
    for dir in ["core/src", "core/proto", "bindings/cli/src"] {
        if let Some(newer) = newest(&root.join(dir)).filter(|(t, _)| *t > built) {
            return Err(format!("{} is older than {}: {hint}", bin.display(), newer.1.display()));
        }
    }
    Ok(bin)
}

fn newest(dir: &Path) -> Option<(SystemTime, PathBuf)> {
    let mut best: Option<(SystemTime, PathBuf)> = None;
    for e in std::fs::read_dir(dir).ok()?.flatten() {
        let p = e.path();
        let cand = if p.is_dir() { newest(&p) } else { e.metadata().ok()?.modified().ok().map(|t| (t, p)) };
        if let Some(c) = cand {
            if best.as_ref().is_none_or(|b| c.0 > b.0) {
                best = Some(c);
            }
        }
    }
    best
}
