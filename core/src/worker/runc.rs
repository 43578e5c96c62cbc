//! [`RuncExecutor`]: runs one process in a container with an OCI runtime binary (runc, or a
//! compatible one such as crun) through a per-run bundle (`config.json`, `hosts`, `resolv.conf`).
//! Owns the run's lifetime: output streaming, exit status, and cleanup of the container, its
//! bundle and its mount-point stubs, also when the caller drops the future.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use tokio::io::{AsyncRead, AsyncReadExt};

use crate::error::{Error, ErrorKind, IoContext, Result};
use crate::worker::exec::{ExecRequest, NetworkMode, OutputSink, OutputStream};
use crate::worker::mountstub::{create_mount_point, ensure_workdir, MountStubs};
use crate::worker::spec::{build_spec, clean_container_path, plan_mounts, SpecInput, DEFAULT_HOSTNAME};
use crate::worker::user::resolve_user;

/// Size of one read from the process's output pipes.
const CHUNK_SIZE: usize = 32 * 1024;
/// The runtime's own log inside the bundle (JSON lines), read to tell setup failures apart from
/// the process's own non-zero exit.
const RUNTIME_LOG: &str = "runtime.log";

/// Runs container processes with an OCI runtime binary.
#[derive(Debug)]
pub struct RuncExecutor {
    binary: String,
    state_dir: PathBuf,
    bundle_dir: PathBuf,
}

fn worker_err(message: impl Into<String>) -> Error {
    Error::new(ErrorKind::Worker, message)
}

/// Checks a container id against runc's rule (`^[\w+\-.]+$`, not `.`/`..`): it becomes a
/// directory name in the state and bundle dirs.
fn validate_id(id: &str) -> Result<()> {
    let ok_chars = id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '+' | '-' | '.'));
    if id.is_empty() || !ok_chars || id == "." || id == ".." || id.len() > 1024 {
        return Err(worker_err(format!(
            "invalid container id {id:?}: use 1-1024 ASCII letters, digits, '_', '+', '-' or '.' (not \".\" or \"..\")"
        )));
    }
    Ok(())
}

/// Checks a hostname or /etc/hosts name: it is written into /etc/hosts, one entry per line.
fn validate_host_name(name: &str, what: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 253
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'));
    if !ok {
        return Err(worker_err(format!("invalid {what} {name:?}: use 1-253 ASCII letters, digits, '.', '-' or '_'")));
    }
    Ok(())
}

/// The container's /etc/hosts.
fn hosts_file(hostname: &str, extra_hosts: &[(String, String)]) -> Result<String> {
    let mut out = format!("127.0.0.1\tlocalhost {hostname}\n::1\tlocalhost ip6-localhost ip6-loopback\n");
    for (name, ip) in extra_hosts {
        validate_host_name(name, "extra host name")?;
        let addr: IpAddr = ip.parse().map_err(|_| {
            worker_err(format!("invalid IP address {ip:?} for extra host {name:?}: expected an IPv4 or IPv6 address"))
        })?;
        out.push_str(&format!("{addr}\t{name}\n"));
    }
    Ok(out)
}

/// The container's /etc/resolv.conf: the host's for host networking; for an isolated network
/// only a comment (there is nothing to resolve with).
fn resolv_conf(network: NetworkMode) -> Result<String> {
    match network {
        NetworkMode::None => Ok("# kiln: no network in this container\n".to_owned()),
        NetworkMode::Host => match std::fs::read_to_string("/etc/resolv.conf") {
            Ok(text) => Ok(text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
            Err(e) => Err(Error::io("reading the host's", "/etc/resolv.conf", e)),
        },
    }
}

/// The `level:error` messages of the runtime's JSON log.
fn runtime_errors(log: &Path) -> Vec<String> {
    let Ok(text) = std::fs::read_to_string(log) else { return Vec::new() };
    text.lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|v| matches!(v["level"].as_str(), Some("error") | Some("fatal")))
        .filter_map(|v| v["msg"].as_str().map(str::to_owned))
        .collect()
}

/// Streams one pipe to the sink until EOF.
async fn pump(mut reader: impl AsyncRead + Unpin, stream: OutputStream, sink: OutputSink) {
    let mut buf = vec![0u8; CHUNK_SIZE];
    loop {
        match reader.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => sink(stream, &buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                tracing::warn!(?stream, error = %e, "reading container output failed");
                break;
            }
        }
    }
}

/// Everything a run has to undo, undone synchronously on drop (normal end, error or
/// cancellation): kill and delete the container, remove stubs and the bundle.
struct RunGuard<'a> {
    exec: &'a RuncExecutor,
    id: String,
    bundle: PathBuf,
    stubs: MountStubs,
    child: Option<tokio::process::Child>,
    /// The runtime process was waited for: the container is gone.
    exited: bool,
}

impl Drop for RunGuard<'_> {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if !self.exited {
                tracing::debug!(id = %self.id, "run cancelled: killing container");
                // Kills the container's init; the kernel then kills the whole pid namespace and
                // `runc run` returns.
                self.exec.force_delete(&self.id);
                if let Err(e) = child.start_kill() {
                    tracing::debug!(id = %self.id, error = %e, "could not signal the runtime process");
                }
                if let Some(pid) = child.id() {
                    wait_exited_no_reap(pid);
                }
                // `runc run` may have been killed mid-create and left a created container behind.
                self.exec.force_delete(&self.id);
            }
            // Reaping (if still needed) is left to tokio's orphan handling.
            drop(child);
        }
        if self.exec.state_dir.join(&self.id).exists() {
            self.exec.force_delete(&self.id);
        }
        self.stubs.remove();
        if let Err(e) = std::fs::remove_dir_all(&self.bundle) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(bundle = %self.bundle.display(), error = %e, "could not remove bundle");
            }
        }
    }
}

/// Blocks until child `pid` has exited, leaving it unreaped (`WNOWAIT`) so that tokio, which
/// owns it, can still reap it.
fn wait_exited_no_reap(pid: u32) {
    use nix::sys::wait::{waitid, Id, WaitPidFlag};
    let Ok(raw) = i32::try_from(pid) else { return };
    loop {
        match waitid(Id::Pid(nix::unistd::Pid::from_raw(raw)), WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT) {
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => {
                tracing::debug!(pid, error = %e, "waiting for the runtime process failed");
                return;
            }
            Ok(_) => return,
        }
    }
}

/// Runs `binary --version`: the runtime must start and answer; the first line of its version.
fn probe_version(binary: &str) -> Result<String> {
    let out = std::process::Command::new(binary).arg("--version").stdin(Stdio::null()).output().map_err(|e| {
        Error::with_source(ErrorKind::Worker, format!("container runtime {binary:?} cannot be run: {e}"), e)
    })?;
    if !out.status.success() {
        return Err(worker_err(format!(
            "container runtime {binary:?} is not usable: `{binary} --version` exited with {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).lines().next().unwrap_or("").to_owned())
}

/// A file-name-safe form of the runtime's name (`runc`, `/usr/bin/crun` → `_usr_bin_crun`).
fn probe_name(binary: &str) -> String {
    binary.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' }).collect()
}

/// What identifies the runtime's executable file (resolved on `PATH` like `Command` does): its
/// path, device, inode, size and change time — any upgrade or replacement changes it. `None` when
/// it cannot be found (then it is probed, which reports why).
fn binary_identity(binary: &str) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let path = if binary.contains('/') {
        PathBuf::from(binary)
    } else {
        std::env::var_os("PATH")?
            .to_str()?
            .split(':')
            .map(|d| std::path::Path::new(d).join(binary))
            .find(|p| p.is_file())?
    };
    let m = std::fs::metadata(&path).ok()?;
    Some(format!("{} {} {} {} {}.{}", path.display(), m.dev(), m.ino(), m.len(), m.ctime(), m.ctime_nsec()))
}

impl RuncExecutor {
    /// `binary`: "runc" or a path (also works for "crun"); `state_dir`: passed as `runc --root`;
    /// `bundle_dir`: where per-run bundles are created. Verifies the binary runs (`--version`);
    /// errors (ErrorKind::Worker) name the binary and the reason.
    pub fn new(binary: &str, state_dir: PathBuf, bundle_dir: PathBuf) -> Result<Self> {
        // A probe costs a process start (≈ 20 ms, most of a cached solve's time in a new
        // process): it is skipped when this root already probed the very same binary file.
        let probe_record = state_dir.parent().map(|p| p.join(format!(".probed-{}", probe_name(binary))));
        let identity = binary_identity(binary);
        let probed = match (&probe_record, &identity) {
            (Some(rec), Some(id)) => std::fs::read_to_string(rec).is_ok_and(|r| &r == id),
            _ => false,
        };
        if !probed {
            let version = probe_version(binary)?;
            tracing::debug!(binary, version = %version, "container runtime found");
            if let (Some(rec), Some(id)) = (&probe_record, &identity) {
                // Best effort, no fsync: a missing or torn record only means probing again.
                if let Some(dir) = rec.parent() {
                    let _ = std::fs::create_dir_all(dir);
                }
                let _ = std::fs::write(rec, id.as_bytes());
            }
        }
        std::fs::create_dir_all(&state_dir).with_path("creating runtime state dir", &state_dir)?;
        std::fs::create_dir_all(&bundle_dir).with_path("creating bundle dir", &bundle_dir)?;
        Ok(RuncExecutor { binary: binary.to_owned(), state_dir, bundle_dir })
    }

    /// The runtime binary this executor runs.
    pub fn binary(&self) -> &str {
        &self.binary
    }

    /// `binary --root state_dir` with no stdin.
    fn command(&self) -> std::process::Command {
        let mut cmd = std::process::Command::new(&self.binary);
        cmd.arg("--root").arg(&self.state_dir).stdin(Stdio::null());
        cmd
    }

    /// `runc delete --force id`: kills (SIGKILL) and deletes the container if it exists.
    fn force_delete(&self, id: &str) {
        match self.command().args(["delete", "--force", id]).output() {
            Ok(out) if out.status.success() => {}
            Ok(out) => {
                let stderr = String::from_utf8_lossy(&out.stderr);
                if !stderr.contains("does not exist") {
                    tracing::warn!(id, stderr = %stderr.trim(), "runtime could not delete container");
                }
            }
            Err(e) => tracing::warn!(id, error = %e, binary = %self.binary, "could not run runtime delete"),
        }
    }

    /// Runs the process to completion; returns its exit code (128+signal if killed by a signal).
    /// Err only when the container could not be set up/started (ErrorKind::Worker, with runc's stderr).
    /// Dropping the returned future kills the container (SIGKILL), deletes it from runc's state dir and
    /// removes its bundle — synchronously in a Drop guard, so nothing leaks on cancellation.
    pub async fn run(&self, req: ExecRequest, output: OutputSink) -> Result<i32> {
        validate_id(&req.id)?;
        if req.args.is_empty() {
            return Err(worker_err(format!("container {}: no command given (args is empty)", req.id)));
        }
        let hostname = if req.hostname.is_empty() { DEFAULT_HOSTNAME.to_owned() } else { req.hostname.clone() };
        validate_host_name(&hostname, "hostname")?;
        let hosts = hosts_file(&hostname, &req.extra_hosts)?;
        let resolv = resolv_conf(req.network)?;
        let rootfs = std::fs::canonicalize(&req.rootfs).with_path("opening rootfs", &req.rootfs)?;
        if !rootfs.is_dir() {
            return Err(worker_err(format!("rootfs {} is not a directory", rootfs.display())));
        }
        let cwd = clean_container_path(if req.cwd.is_empty() { "/" } else { &req.cwd }, "working directory")?;
        // As BuildKit: no user means "0" looked up like any other (falling back to 0:0), and the
        // primary group is always one of the additional groups (containerd's ensureAdditionalGids).
        let (uid, gid, mut additional_gids) = if req.user.is_empty() {
            resolve_user(&rootfs, "0").unwrap_or((0, 0, Vec::new()))
        } else {
            resolve_user(&rootfs, &req.user)?
        };
        if !additional_gids.contains(&gid) {
            additional_gids.insert(0, gid);
        }

        let bundle = self.bundle_dir.join(&req.id);
        std::fs::create_dir(&bundle).map_err(|e| {
            Error::with_source(
                ErrorKind::Worker,
                format!("cannot create bundle {} (container ids must be unique per run): {e}", bundle.display()),
                e,
            )
        })?;
        let mut guard = RunGuard {
            exec: self,
            id: req.id.clone(),
            bundle: bundle.clone(),
            stubs: MountStubs::default(),
            child: None,
            exited: false,
        };

        let hosts_path = bundle.join("hosts");
        std::fs::write(&hosts_path, hosts).with_path("writing", &hosts_path)?;
        let resolv_path = bundle.join("resolv.conf");
        std::fs::write(&resolv_path, resolv).with_path("writing", &resolv_path)?;

        let mounts = plan_mounts(&req, &hosts_path, &resolv_path)?;
        // As BuildKit: stubs are what is missing before anything is created for this run; the
        // working directory is created next (in the rootfs, even under a mount) and persists.
        for m in mounts.iter().filter(|m| m.is_stub_candidate()) {
            guard.stubs.record(&rootfs, &m.dest, req.remove_mount_stubs_recursive);
        }
        ensure_workdir(&rootfs, &cwd, uid, gid)?;
        // Mount points in the rootfs exist before start, while the rootfs is still writable;
        // those of the runtime's own mounts (/proc, /dev, /sys) are left to the runtime.
        for (i, m) in mounts.iter().enumerate() {
            if m.is_stub_candidate() && m.needs_stub_in_rootfs(&mounts[..i]) {
                create_mount_point(&rootfs, &m.dest, m.stub)?;
            }
        }
        let spec =
            build_spec(SpecInput { req: &req, rootfs: &rootfs, uid, gid, additional_gids, cwd, mounts: &mounts })?;
        let config = bundle.join("config.json");
        spec.save(&config)
            .map_err(|e| Error::with_source(ErrorKind::Worker, format!("writing OCI spec {}", config.display()), e))?;

        let log_path = bundle.join(RUNTIME_LOG);
        let mut cmd = tokio::process::Command::new(&self.binary);
        cmd.arg("--root")
            .arg(&self.state_dir)
            .arg("--log")
            .arg(&log_path)
            .arg("--log-format")
            .arg("json")
            .arg("run")
            .arg("--bundle")
            .arg(&bundle)
            .arg(&req.id)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // The runtime creates the mount points of its own mounts (/dev, /proc, /sys) in the
        // rootfs; with umask 0, as under buildkitd, their modes never depend on ours.
        // SAFETY: the closure runs in the forked child before exec and only calls umask(2),
        // which is async-signal-safe and cannot fail.
        unsafe {
            cmd.pre_exec(|| {
                nix::sys::stat::umask(nix::sys::stat::Mode::empty());
                Ok(())
            });
        }
        let mut child = cmd.spawn().map_err(|e| {
            Error::with_source(ErrorKind::Worker, format!("cannot start container runtime {:?}: {e}", self.binary), e)
        })?;
        tracing::debug!(id = %req.id, args = ?req.args, "container started");
        let stdout = child.stdout.take();
        let stderr = child.stderr.take();
        let guard_child = guard.child.insert(child);

        let out_task = async {
            if let Some(r) = stdout {
                pump(r, OutputStream::Stdout, output.clone()).await;
            }
        };
        let err_task = async {
            if let Some(r) = stderr {
                pump(r, OutputStream::Stderr, output.clone()).await;
            }
        };
        let (status, (), ()) = tokio::join!(guard_child.wait(), out_task, err_task);
        let status = status.map_err(|e| {
            Error::with_source(ErrorKind::Worker, format!("waiting for container {} failed: {e}", req.id), e)
        })?;
        guard.exited = true;

        let code = match (status.code(), std::os::unix::process::ExitStatusExt::signal(&status)) {
            (Some(code), _) => code,
            (None, Some(sig)) => 128 + sig,
            (None, None) => 128,
        };
        if code != 0 {
            let errors = runtime_errors(&log_path);
            if !errors.is_empty() {
                return Err(worker_err(format!(
                    "container runtime {:?} failed to run container {}: {}",
                    self.binary,
                    req.id,
                    errors.join("; ")
                )));
            }
        }
        tracing::debug!(id = %req.id, code, "container exited");
        drop(guard);
        Ok(code)
    }

    /// Kills and deletes any container left in `state_dir` by a crashed process, removes stale bundles.
    /// Call it only while no run of this executor's directories is in progress.
    pub fn cleanup_stale(&self) -> Result<()> {
        // runc keeps one directory per container under its root: an empty root has none to
        // list (and asking runc costs a process start on every open).
        let mut state =
            std::fs::read_dir(&self.state_dir).with_path("listing runtime state dir", &self.state_dir)?;
        let stale = if state.next().is_some() { self.list_containers()? } else { Vec::new() };
        for id in &stale {
            tracing::info!(id, "deleting stale container");
            self.force_delete(id);
        }
        let entries = std::fs::read_dir(&self.bundle_dir).with_path("listing bundle dir", &self.bundle_dir)?;
        for entry in entries {
            let entry = entry.with_path("listing bundle dir", &self.bundle_dir)?;
            let path = entry.path();
            tracing::info!(bundle = %path.display(), "removing stale bundle");
            let removed = if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                std::fs::remove_dir_all(&path)
            } else {
                std::fs::remove_file(&path)
            };
            removed.with_path("removing stale bundle", &path)?;
        }
        let left = if stale.is_empty() { Vec::new() } else { self.list_containers()? };
        if !left.is_empty() {
            return Err(worker_err(format!(
                "container runtime {:?} could not delete stale containers {left:?} in {}",
                self.binary,
                self.state_dir.display()
            )));
        }
        Ok(())
    }

    /// Ids of containers currently known to runc in `state_dir` (for leak tests).
    pub fn list_containers(&self) -> Result<Vec<String>> {
        let out = self.command().args(["list", "--quiet"]).output().map_err(|e| {
            Error::with_source(ErrorKind::Worker, format!("cannot run container runtime {:?}: {e}", self.binary), e)
        })?;
        if !out.status.success() {
            return Err(worker_err(format!(
                "`{} --root {} list` failed ({}): {}",
                self.binary,
                self.state_dir.display(),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_follow_runc_rules() {
        assert!(validate_id("kiln-abc_1.2+x").is_ok());
        for bad in ["", ".", "..", "a/b", "a b", "ä"] {
            let e = validate_id(bad).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Worker);
        }
    }

    #[test]
    fn hosts_file_lists_hostname_and_extra_hosts() {
        let hosts = hosts_file("box", &[("db".into(), "10.0.0.2".into()), ("v6".into(), "::2".into())]).unwrap();
        assert_eq!(
            hosts,
            "127.0.0.1\tlocalhost box\n::1\tlocalhost ip6-localhost ip6-loopback\n10.0.0.2\tdb\n::2\tv6\n"
        );
        let e = hosts_file("box", &[("db".into(), "nope".into())]).unwrap_err();
        assert!(e.to_string().contains("\"nope\""), "{e}");
        assert!(hosts_file("box", &[("a b".into(), "1.1.1.1".into())]).is_err());
    }

    #[test]
    fn runtime_log_errors_are_extracted() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log");
        std::fs::write(
            &log,
            "{\"level\":\"warning\",\"msg\":\"w\"}\n{\"level\":\"error\",\"msg\":\"boom\"}\nnot json\n",
        )
        .unwrap();
        assert_eq!(runtime_errors(&log), vec!["boom".to_string()]);
        assert!(runtime_errors(&dir.path().join("missing")).is_empty());
    }

    #[test]
    fn missing_binary_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let e = RuncExecutor::new("/nonexistent/runc-x", dir.path().join("s"), dir.path().join("b")).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Worker);
        assert!(e.to_string().contains("/nonexistent/runc-x"), "{e}");
    }
}
