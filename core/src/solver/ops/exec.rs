//! Exec ops: prepares the rootfs and every mount (bind of input results read-only or writable,
//! cache, tmpfs, secret), runs the process through the worker's executor, and commits the writable
//! outputs. A non-zero exit fails the vertex with its exit code and log tail; cancellation drops the
//! executor future (which kills the container) and every guard here (unmount, remove snapshots).

use super::{keys, OpSolver, Outputs};
use crate::cache::mounts::Sharing;
use crate::digest::Digest;
use crate::error::{Error, ErrorKind, IoContext, MissingInput, Result};
use crate::graph::op::{ExecOp, Op};
use crate::graph::pb;
use crate::graph::Vertex;
use crate::options::{Entitlement, DEFAULT_SSH_ID};
use crate::progress::{LogStream, ProgressEvent};
use crate::snapshot::MountGuard;
use crate::solver::refs::{Active, ResultRef};
use crate::solver::Solve;
use crate::worker::pool::Worker;
use crate::worker::{ExecMount, ExecRequest, MountSource, NetworkMode, OutputSink, OutputStream, SecurityMode, Ulimit};
use futures::future::BoxFuture;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

const LOG_TAIL_LINES: usize = 20;

fn unique_id(prefix: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    let seed = format!("{}-{}-{}", std::process::id(), nanos, N.fetch_add(1, Ordering::Relaxed));
    format!("{prefix}{}", &Digest::of(seed.as_bytes()).hex()[..20])
}

impl OpSolver for ExecOp {
    fn outputs(&self) -> &[i64] {
        &self.outputs
    }

    fn cache_key<'a>(
        &'a self,
        _solve: &'a Arc<Solve>,
        v: &'a Vertex,
        input_keys: &'a [Digest],
    ) -> BoxFuture<'a, Result<Digest>> {
        // As BuildKit's `ExecOp.CacheMap`: extra hosts' IPs and proxy settings are not part of a
        // run's key. (BuildKit moves mount selectors into its dependency keys; kiln's input keys
        // carry no selector, so selectors stay in the op's identity.)
        let identity = keys::op_identity(&v.op, |op| {
            if let pb::op::Op::Exec(e) = op {
                if let Some(meta) = e.meta.as_mut() {
                    meta.extra_hosts.iter_mut().for_each(|h| h.ip.clear());
                    meta.proxy_env = None;
                }
            }
        });
        let key = keys::vertex_key(identity, Vec::new(), keys::input_parts(input_keys));
        Box::pin(std::future::ready(Ok(key)))
    }

    fn execute<'a>(
        &'a self,
        solve: &'a Arc<Solve>,
        v: &'a Vertex,
        worker: &'a Arc<Worker>,
        key: &'a Digest,
        inputs: &'a [Option<ResultRef>],
    ) -> BoxFuture<'a, Result<Outputs>> {
        Box::pin(run(solve, v, self, worker, key, inputs))
    }
}

/// Runs an exec op (validated: meta with args, known modes and mount types).
async fn run(
    solve: &Arc<Solve>,
    v: &Vertex,
    e: &ExecOp,
    worker: &Arc<Worker>,
    key: &Digest,
    inputs: &[Option<ResultRef>],
) -> Result<Outputs> {
    let op = v.digest.as_str();
    let meta = &e.meta;
    let security = match e.security {
        pb::SecurityMode::Sandbox => SecurityMode::Sandbox,
        pb::SecurityMode::Insecure => SecurityMode::Insecure,
    };
    // Checked again here (the solve checks every op up front) so no path runs an exec ungranted.
    check_entitlements(v, &solve.opts.entitlements)?;
    crate::worker::platform::check_exec(op, v.op.platform.as_ref())?;
    let network = match e.network {
        pb::NetMode::None => NetworkMode::None,
        pb::NetMode::Unset | pb::NetMode::Host => NetworkMode::Host,
    };
    let secret_env = secret_env(solve, v, e).await?;
    let sn = worker.snapshotter.clone();
    let input_ref = |i: i64| -> Result<Option<ResultRef>> {
        if i < 0 {
            return Ok(None);
        }
        inputs
            .get(i as usize)
            .cloned()
            .ok_or_else(|| Error::definition(Some(op), format!("mount refers to input {i}, which the op lacks")))
    };

    // Order matters for drops: mounts (declared later) unmount before actives are removed.
    let mut actives: Vec<(i64, Active)> = Vec::new();
    let mut throwaway: Vec<Active> = Vec::new();
    let mut leases = Vec::new();
    let secrets_dir = secrets_staging_dir(solve.solver.cache.tmp())?;
    let mut mounts: Vec<MountGuard> = Vec::new();
    let mut root_path = None;
    let mut readonly_rootfs = false;
    let mut exec_mounts = Vec::new();
    let mut ssh_proxies = Vec::new();

    for (m, mtype) in e.exec.mounts.iter().zip(&e.mount_types) {
        match mtype {
            pb::MountType::Bind => {
                let src = input_ref(m.input)?;
                if m.dest == "/" {
                    readonly_rootfs = m.readonly;
                    let a = Active::prepare(&sn, src.as_ref().map(|r| &r.snapshot))?;
                    let g = sn.mount(&a.id)?;
                    root_path = Some(g.path().to_path_buf());
                    mounts.push(g);
                    if m.output >= 0 {
                        actives.push((m.output, a));
                    } else {
                        throwaway.push(a);
                    }
                    continue;
                }
                let path = if m.readonly {
                    match &src {
                        Some(r) => {
                            let g = r.worker.snapshotter.mount(&r.snapshot)?;
                            let p = g.path().to_path_buf();
                            mounts.push(g);
                            p
                        }
                        None => {
                            let p = secrets_dir.path().join(format!("empty-{}", exec_mounts.len()));
                            std::fs::create_dir_all(&p).with_path("create empty mount", &p)?;
                            p
                        }
                    }
                } else {
                    let a = Active::prepare(&sn, src.as_ref().map(|r| &r.snapshot))?;
                    let g = sn.mount(&a.id)?;
                    let p = g.path().to_path_buf();
                    mounts.push(g);
                    if m.output >= 0 {
                        actives.push((m.output, a));
                    } else {
                        throwaway.push(a);
                    }
                    p
                };
                let path = if m.selector.is_empty() || m.selector == "/" {
                    path
                } else {
                    crate::fileops::resolve_in_root(&path, &m.selector, true)?
                };
                exec_mounts
                    .push(ExecMount { dest: m.dest.clone(), source: MountSource::Bind { path, readonly: m.readonly } });
            }
            pb::MountType::Cache => {
                let opt = m.cache_opt.clone().unwrap_or_default();
                let id = if opt.id.is_empty() { m.dest.clone() } else { opt.id.clone() };
                let sharing = match pb::CacheSharingOpt::try_from(opt.sharing) {
                    Ok(pb::CacheSharingOpt::Private) => Sharing::Private,
                    Ok(pb::CacheSharingOpt::Locked) => Sharing::Locked,
                    _ => Sharing::Shared,
                };
                let description = format!("cached mount {} from exec {}", m.dest, meta.args.join(" "));
                // A cache mount with an input (`from=`, or the directory the Dockerfile frontend
                // makes for uid/gid/mode) is its own cache per input, started as a copy of it
                // (BuildKit keys it `id:<input ref>` and creates it on the input).
                let src = input_ref(m.input)?;
                let (id, seed) = match &src {
                    Some(r) => {
                        let g = r.worker.snapshotter.mount(&r.snapshot)?;
                        let p = g.path().to_path_buf();
                        mounts.push(g);
                        (format!("{id}:{}", r.snapshot), Some(p))
                    }
                    None => (id, None),
                };
                let lease =
                    solve.solver.cache.mounts().acquire_seeded(&id, sharing, &description, seed.as_deref()).await?;
                solve.restore_cache_mount(&id, &lease.path).await;
                let path = if m.selector.is_empty() || m.selector == "/" {
                    lease.path.clone()
                } else {
                    crate::fileops::resolve_in_root(&lease.path, &m.selector, true)?
                };
                exec_mounts
                    .push(ExecMount { dest: m.dest.clone(), source: MountSource::Bind { path, readonly: m.readonly } });
                leases.push(lease);
            }
            pb::MountType::Tmpfs => {
                let size = m.tmpfs_opt.as_ref().map(|t| t.size).filter(|s| *s > 0).map(|s| s as u64);
                exec_mounts.push(ExecMount { dest: m.dest.clone(), source: MountSource::Tmpfs { size_bytes: size } });
            }
            pb::MountType::Secret => {
                let opt = m.secret_opt.clone().unwrap_or_default();
                let Some(value) = solve.opts.lookup_secret(&opt.id).await? else {
                    if opt.optional {
                        continue;
                    }
                    return Err(Error::missing_input(
                        MissingInput::Secret,
                        &opt.id,
                        Some(v.name()),
                        solve.opts.secrets.keys(),
                    ));
                };
                let file = secrets_dir.path().join(format!("secret-{}", exec_mounts.len()));
                write_secret(&file, &value, &opt)?;
                exec_mounts
                    .push(ExecMount { dest: m.dest.clone(), source: MountSource::Bind { path: file, readonly: true } });
            }
            pb::MountType::Ssh => {
                let opt = m.ssh_opt.clone().unwrap_or_default();
                let id = if opt.id.is_empty() { DEFAULT_SSH_ID } else { opt.id.as_str() };
                let Some(agent) = ssh_agent(&solve.opts, id).await? else {
                    if opt.optional {
                        continue;
                    }
                    return Err(Error::missing_input(
                        MissingInput::Ssh,
                        id,
                        Some(format!("{} (mounted at {})", v.name(), m.dest)),
                        solve.opts.ssh.keys(),
                    ));
                };
                let proxy = crate::solver::ssh::start(agent, opt.uid, opt.gid, opt.mode)?;
                exec_mounts.push(ExecMount {
                    dest: m.dest.clone(),
                    source: MountSource::Bind { path: proxy.socket().to_path_buf(), readonly: false },
                });
                ssh_proxies.push(proxy);
            }
        }
    }
    let rootfs = root_path.ok_or_else(|| Error::definition(Some(op), "exec op has no rootfs mount (dest \"/\")"))?;

    let tail: Arc<Mutex<VecDeque<String>>> = Arc::default();
    let partial: Arc<Mutex<Vec<u8>>> = Arc::default();
    let sink: OutputSink = {
        let tail = tail.clone();
        let partial = partial.clone();
        let progress = solve.opts.progress.clone();
        let vertex = v.digest.to_string();
        Arc::new(move |stream: OutputStream, data: &[u8]| {
            let stream = match stream {
                OutputStream::Stdout => LogStream::Stdout,
                OutputStream::Stderr => LogStream::Stderr,
            };
            progress.emit(ProgressEvent::Log { vertex: vertex.clone(), stream, data: data.to_vec() });
            let mut p = partial.lock().unwrap_or_else(|e| e.into_inner());
            p.extend_from_slice(data);
            let mut t = tail.lock().unwrap_or_else(|e| e.into_inner());
            while let Some(pos) = p.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = p.drain(..=pos).collect();
                t.push_back(String::from_utf8_lossy(&line[..line.len() - 1]).into_owned());
                while t.len() > LOG_TAIL_LINES {
                    t.pop_front();
                }
            }
        })
    };
    let req = ExecRequest {
        id: unique_id("kiln-"),
        rootfs,
        readonly_rootfs,
        args: meta.args.clone(),
        env: run_env(meta, secret_env),
        cwd: if meta.cwd.is_empty() { "/".into() } else { meta.cwd.clone() },
        user: meta.user.clone(),
        hostname: meta.hostname.clone(),
        mounts: exec_mounts,
        network,
        extra_hosts: meta.extra_hosts.iter().map(|h| (h.host.clone(), h.ip.clone())).collect(),
        remove_mount_stubs_recursive: meta.remove_mount_stubs_recursive,
        ulimits: meta.ulimit.iter().map(|u| Ulimit { name: u.name.clone(), soft: u.soft, hard: u.hard }).collect(),
        cgroup_parent: meta.cgroup_parent.clone(),
        security,
    };
    let code = worker.executor.run(req, sink).await?;
    let ok = if meta.valid_exit_codes.is_empty() { code == 0 } else { meta.valid_exit_codes.contains(&code) };
    if !ok {
        let mut log_tail: Vec<String> = tail.lock().unwrap_or_else(|e| e.into_inner()).iter().cloned().collect();
        let rest = partial.lock().unwrap_or_else(|e| e.into_inner());
        if !rest.is_empty() {
            log_tail.push(String::from_utf8_lossy(&rest).into_owned());
        }
        return Err(Error::Exec { vertex: v.name(), command: meta.args.join(" "), exit_code: code, log_tail });
    }
    drop(ssh_proxies);
    drop(mounts);
    drop(leases);
    drop(secrets_dir);
    drop(throwaway);
    let cache = solve.solver.cache.clone();
    let worker = worker.clone();
    let key = key.clone();
    let name = v.name();
    tokio::task::spawn_blocking(move || {
        let mut out = BTreeMap::new();
        for (idx, a) in actives {
            out.insert(idx, Some(cache.commit_and_record(&worker, &key, idx, a, &name)?));
        }
        Ok(out)
    })
    .await
    .map_err(|e| Error::with_source(ErrorKind::Internal, "commit task", e))?
}

/// SSH agent `id`: a socket given in the options, else the ssh provider's agent if it has one.
async fn ssh_agent(opts: &crate::solver::SolveOptions, id: &str) -> Result<Option<crate::solver::ssh::Agent>> {
    use crate::solver::ssh::Agent;
    if let Some(path) = opts.ssh.get(id) {
        return Ok(Some(Agent::Socket(path.clone())));
    }
    match &opts.ssh_provider {
        Some(p) if p.check(id).await? => Ok(Some(Agent::Provider(p.clone(), id.to_owned()))),
        _ => Ok(None),
    }
}

fn write_secret(path: &std::path::Path, value: &[u8], opt: &pb::SecretOpt) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, value).with_path("write secret", path)?;
    let mode = if opt.mode == 0 { 0o400 } else { opt.mode };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).with_path("chmod secret", path)?;
    nix::unistd::chown(path, Some(nix::unistd::Uid::from_raw(opt.uid)), Some(nix::unistd::Gid::from_raw(opt.gid)))
        .map_err(|e| Error::io("chown secret", path, e.into()))?;
    Ok(())
}

/// BuildKit's `ValidateEntitlements`: an exec with `network=host` needs `network.host`, one with
/// `security=insecure` needs `security.insecure`. The message starts as BuildKit's
/// (`network.host is not allowed`) and says how to grant it.
pub(crate) fn check_entitlements(v: &Vertex, granted: &BTreeSet<Entitlement>) -> Result<()> {
    let Op::Exec(e) = &v.typed else { return Ok(()) };
    let mut needed = Vec::new();
    if e.network == pb::NetMode::Host {
        needed.push(Entitlement::NetworkHost);
    }
    if e.security == pb::SecurityMode::Insecure {
        needed.push(Entitlement::SecurityInsecure);
    }
    for ent in needed {
        if !granted.contains(&ent) {
            return Err(Error::new(
                ErrorKind::Definition,
                format!(
                    "{ent} is not allowed: op {} ({}) needs the {ent} entitlement; grant it with --allow {ent} \
                     (SolveOptions::allow(Entitlement::{ent:?}))",
                    v.digest,
                    v.name()
                ),
            ));
        }
    }
    Ok(())
}

/// Where secrets are staged: in memory (tmpfs) when the host has /dev/shm, so their bytes never
/// reach a disk, else the cache's tmp dir.
fn secrets_parent(engine_tmp: &std::path::Path) -> std::path::PathBuf {
    let shm = std::path::Path::new("/dev/shm");
    if shm.is_dir() {
        shm.to_path_buf()
    } else {
        engine_tmp.to_path_buf()
    }
}

const SECRETS_PREFIX: &str = "kiln-secrets-";

/// A private (0700) staging dir for one run's secrets, named after this process so that a dir
/// left by a killed process can be recognised and removed ([`remove_stale_secret_dirs`]); it is
/// removed when dropped (success, failure, cancellation, SIGINT/SIGTERM in the CLI).
fn secrets_staging_dir(engine_tmp: &std::path::Path) -> Result<tempfile::TempDir> {
    use std::os::unix::fs::PermissionsExt;
    let parent = secrets_parent(engine_tmp);
    let dir = tempfile::Builder::new()
        .prefix(&format!("{SECRETS_PREFIX}{}-", std::process::id()))
        .permissions(std::fs::Permissions::from_mode(0o700))
        .tempdir_in(&parent)
        .with_path("create secrets dir", &parent)?;
    // The mode given at creation is subject to the umask; make it exact.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700))
        .with_path("make secrets dir private", dir.path())?;
    Ok(dir)
}

/// Removes secret staging dirs whose process is gone (killed before it could clean up), so a
/// secret never outlives a crash past the next engine open.
pub(crate) fn remove_stale_secret_dirs(engine_tmp: &std::path::Path) {
    let parent = secrets_parent(engine_tmp);
    let Ok(entries) = std::fs::read_dir(&parent) else { return };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(SECRETS_PREFIX)) else { continue };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<i32>().ok()).filter(|p| *p > 0) else {
            continue;
        };
        // Only "no such process" means dead (EPERM: alive, owned by someone else).
        if nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None) != Err(nix::errno::Errno::ESRCH) {
            continue;
        }
        match std::fs::remove_dir_all(e.path()) {
            Ok(()) => tracing::info!(path = %e.path().display(), pid, "removed secrets left by a dead process"),
            Err(err) => tracing::warn!(path = %e.path().display(), error = %err, "cannot remove stale secrets"),
        }
    }
}

/// The process environment, in BuildKit's order: the op's env, its proxy settings (both
/// spellings, as BuildKit's `proxyEnvList`), a default `PATH` when none is set, then the secret env.
fn run_env(meta: &pb::Meta, secret_env: Vec<String>) -> Vec<String> {
    let mut env = meta.env.clone();
    if let Some(p) = &meta.proxy_env {
        for (upper, lower, v) in [
            ("HTTP_PROXY", "http_proxy", &p.http_proxy),
            ("HTTPS_PROXY", "https_proxy", &p.https_proxy),
            ("FTP_PROXY", "ftp_proxy", &p.ftp_proxy),
            ("NO_PROXY", "no_proxy", &p.no_proxy),
            ("ALL_PROXY", "all_proxy", &p.all_proxy),
        ] {
            if !v.is_empty() {
                env.push(format!("{upper}={v}"));
                env.push(format!("{lower}={v}"));
            }
        }
    }
    crate::worker::add_default_path(&mut env);
    env.extend(secret_env);
    env
}

/// The `NAME=value` entries of the op's secret env (BuildKit's `loadSecretEnv`): appended after
/// the op's env; an optional secret that is missing gives `NAME=` (as BuildKit does). Errors name
/// the secret id and variable, never a value.
async fn secret_env(solve: &Solve, v: &Vertex, e: &ExecOp) -> Result<Vec<String>> {
    let mut out = Vec::with_capacity(e.exec.secretenv.len());
    for s in &e.exec.secretenv {
        if s.id.is_empty() {
            return Err(Error::definition(
                Some(v.digest.as_str()),
                format!("secret ID missing for {:?} environment variable", s.name),
            ));
        }
        let value = match solve.opts.lookup_secret(&s.id).await? {
            Some(value) => value,
            None if s.optional => Vec::new(),
            None => {
                return Err(Error::missing_input(
                    MissingInput::Secret,
                    &s.id,
                    Some(format!("{} (environment variable {})", v.name(), s.name)),
                    solve.opts.secrets.keys(),
                ));
            }
        };
        // Go's string(dt): the bytes as they are (invalid UTF-8 is replaced here).
        out.push(format!("{}={}", s.name, String::from_utf8_lossy(&value)));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn secrets_are_staged_privately_and_stale_dirs_of_dead_processes_are_removed() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = secrets_staging_dir(tmp.path()).unwrap();
        assert_eq!(std::fs::metadata(dir.path()).unwrap().permissions().mode() & 0o7777, 0o700);
        let name = dir.path().file_name().unwrap().to_string_lossy().into_owned();
        assert!(name.starts_with(&format!("{SECRETS_PREFIX}{}-", std::process::id())), "{name}");

        // A dir of a process that is gone, holding a "secret".
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        let parent = secrets_parent(tmp.path());
        let stale = parent.join(format!("{SECRETS_PREFIX}{dead}-staletest"));
        std::fs::create_dir_all(&stale).unwrap();
        std::fs::write(stale.join("secret-0"), "hunter2").unwrap();
        remove_stale_secret_dirs(tmp.path());
        assert!(!stale.exists(), "the dead process's secrets are removed");
        assert!(dir.path().exists(), "a live process's staging dir stays");
    }
}
