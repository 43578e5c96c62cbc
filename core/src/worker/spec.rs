//! Building the OCI runtime spec (`config.json`) for one [`ExecRequest`], plus the ordered mount
//! plan the executor also uses to create mount-point stubs. Defaults follow `runc spec` and
//! BuildKit's executor (capability set, /etc/hosts and /etc/resolv.conf binds, NOFILE limit).

use std::path::{Component, Path, PathBuf};

use oci_spec::runtime::{
    Capability, LinuxBuilder, LinuxCapabilitiesBuilder, LinuxDeviceCgroupBuilder, LinuxNamespaceBuilder,
    LinuxNamespaceType, LinuxResourcesBuilder, Mount, MountBuilder, PosixRlimitBuilder, PosixRlimitType,
    ProcessBuilder, RootBuilder, Spec, SpecBuilder, UserBuilder,
};

use crate::error::{Error, ErrorKind, Result};
use crate::worker::exec::{ExecRequest, MountSource, NetworkMode, SecurityMode, Ulimit};
use crate::worker::mountstub::StubKind;

/// `PATH` used when the request's environment has none (BuildKit's default).
pub(crate) const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// Hostname used when the request leaves it empty: BuildKit's, since a Run's results may record
/// it (`hostname > file`, `/etc/hosts`) and must be identical to BuildKit's.
pub(crate) const DEFAULT_HOSTNAME: &str = "buildkitsandbox";
/// RLIMIT_NOFILE soft and hard limit (BuildKit's default), lowered to our own hard limit when
/// that is smaller (without CAP_SYS_RESOURCE runc cannot raise it and the start fails).
const NOFILE_LIMIT: u64 = 1_048_576;

/// Our own hard RLIMIT_NOFILE, from /proc/self/limits (`None` when unknown or unlimited).
fn own_nofile_hard_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    let fields: Vec<&str> = line["Max open files".len()..].split_whitespace().collect();
    fields.get(1)?.parse().ok()
}

/// The NOFILE limit the container gets.
pub(crate) fn nofile_limit() -> u64 {
    own_nofile_hard_limit().map_or(NOFILE_LIMIT, |hard| hard.min(NOFILE_LIMIT))
}

/// One mount of the container in application order.
pub(crate) struct PlannedMount {
    /// Normalized absolute destination.
    pub dest: PathBuf,
    /// The OCI mount.
    pub mount: Mount,
    /// What kind of mount point it needs.
    pub stub: StubKind,
    /// One of the runtime's standard mounts (/proc, /dev, /sys, ...): its mount point is the
    /// runtime's to create and stays in the rootfs, as in BuildKit.
    pub runtime: bool,
}

impl PlannedMount {
    /// Whether the mount point lives in the rootfs itself (not inside an earlier mount, where
    /// runc creates it in that mount's filesystem).
    pub(crate) fn needs_stub_in_rootfs(&self, earlier: &[PlannedMount]) -> bool {
        !earlier.iter().any(|m| self.dest.starts_with(&m.dest))
    }

    /// Whether its mount point is a stub removed after the run when it was created for it
    /// (BuildKit's list: /etc/hosts, /etc/resolv.conf and the Run's own mounts).
    pub(crate) fn is_stub_candidate(&self) -> bool {
        !self.runtime
    }
}

fn worker_err(message: impl Into<String>) -> Error {
    Error::new(ErrorKind::Worker, message)
}

fn oci_err(what: &str, e: oci_spec::OciSpecError) -> Error {
    Error::with_source(ErrorKind::Worker, format!("building the OCI runtime spec ({what})"), e)
}

/// Normalizes an absolute container path: rejects relative paths and `..`, drops `.` and `//`.
pub(crate) fn clean_container_path(path: &str, what: &str) -> Result<PathBuf> {
    if !path.starts_with('/') {
        return Err(worker_err(format!("{what} {path:?} must be an absolute path inside the container")));
    }
    let mut out = PathBuf::from("/");
    for c in Path::new(path).components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::RootDir | Component::CurDir => {}
            Component::ParentDir | Component::Prefix(_) => {
                return Err(worker_err(format!("{what} {path:?} must not contain '..'")));
            }
        }
    }
    Ok(out)
}

fn mount(dest: &str, typ: &str, source: &str, options: &[&str]) -> Result<Mount> {
    MountBuilder::default()
        .destination(dest)
        .typ(typ)
        .source(source)
        .options(options.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        .build()
        .map_err(|e| oci_err(dest, e))
}

/// The standard mounts of `runc spec` (proc, dev, devpts, shm, mqueue, sysfs, cgroup).
fn default_mounts() -> Result<Vec<PlannedMount>> {
    let defs: [(&str, &str, &str, &[&str]); 7] = [
        ("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"]),
        ("/dev", "tmpfs", "tmpfs", &["nosuid", "strictatime", "mode=755", "size=65536k"]),
        ("/dev/pts", "devpts", "devpts", &["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]),
        ("/dev/shm", "tmpfs", "shm", &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]),
        ("/dev/mqueue", "mqueue", "mqueue", &["nosuid", "noexec", "nodev"]),
        ("/sys", "sysfs", "sysfs", &["nosuid", "noexec", "nodev", "ro"]),
        ("/sys/fs/cgroup", "cgroup", "cgroup", &["nosuid", "noexec", "nodev", "relatime", "ro"]),
    ];
    defs.iter()
        .map(|(dest, typ, src, opts)| {
            Ok(PlannedMount {
                dest: PathBuf::from(dest),
                mount: mount(dest, typ, src, opts)?,
                stub: StubKind::Dir,
                runtime: true,
            })
        })
        .collect()
}

/// The full mount list in application order: standard mounts not overridden by the request,
/// then /etc/hosts and /etc/resolv.conf (unless a request mount covers them), then the request's
/// mounts sorted parents first (stable).
pub(crate) fn plan_mounts(req: &ExecRequest, hosts: &Path, resolv: &Path) -> Result<Vec<PlannedMount>> {
    let mut user = Vec::with_capacity(req.mounts.len());
    for m in &req.mounts {
        let dest = clean_container_path(&m.dest, "mount destination")?;
        if dest == Path::new("/") {
            return Err(worker_err("mount destination \"/\" is not allowed: the rootfs is mounted there"));
        }
        let dest_str = dest.to_string_lossy().into_owned();
        let (mnt, stub) = match &m.source {
            MountSource::Bind { path, readonly } => {
                let meta = std::fs::metadata(path).map_err(|e| {
                    Error::with_source(
                        ErrorKind::Worker,
                        format!("bind mount source {} for {dest_str} is not accessible", path.display()),
                        e,
                    )
                })?;
                let src = path.to_string_lossy();
                let opts: &[&str] = if *readonly { &["rbind", "ro"] } else { &["rbind", "rw"] };
                (mount(&dest_str, "bind", &src, opts)?, if meta.is_dir() { StubKind::Dir } else { StubKind::File })
            }
            MountSource::Tmpfs { size_bytes } => {
                let mut opts = vec!["nosuid".to_owned(), "nodev".to_owned(), "mode=1777".to_owned()];
                if let Some(size) = size_bytes {
                    opts.push(format!("size={size}"));
                }
                let opt_refs: Vec<&str> = opts.iter().map(String::as_str).collect();
                (mount(&dest_str, "tmpfs", "tmpfs", &opt_refs)?, StubKind::Dir)
            }
        };
        user.push(PlannedMount { dest, mount: mnt, stub, runtime: false });
    }
    user.sort_by_key(|m| m.dest.components().count());

    let mut plan: Vec<PlannedMount> =
        default_mounts()?.into_iter().filter(|d| !user.iter().any(|u| u.dest == d.dest)).collect();
    for (dest, file) in [("/etc/hosts", hosts), ("/etc/resolv.conf", resolv)] {
        if user.iter().any(|u| Path::new(dest).starts_with(&u.dest)) {
            continue;
        }
        let src = file.to_string_lossy();
        plan.push(PlannedMount {
            dest: PathBuf::from(dest),
            mount: mount(dest, "bind", &src, &["rbind", "ro"])?,
            stub: StubKind::File,
            runtime: false,
        });
    }
    plan.extend(user);
    Ok(plan)
}

/// Appends the default `PATH` when `env` has none (BuildKit's `addDefaultEnvvar`).
pub(crate) fn add_default_path(env: &mut Vec<String>) {
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.push(DEFAULT_PATH.to_owned());
    }
}

/// `req.env` with the default `PATH` appended when it has none.
pub(crate) fn process_env(env: &[String]) -> Vec<String> {
    let mut out = env.to_vec();
    add_default_path(&mut out);
    out
}

/// BuildKit's default capability set for build containers.
fn default_capabilities() -> oci_spec::runtime::Capabilities {
    [
        Capability::Chown,
        Capability::DacOverride,
        Capability::Fsetid,
        Capability::Fowner,
        Capability::Mknod,
        Capability::NetRaw,
        Capability::Setgid,
        Capability::Setuid,
        Capability::Setfcap,
        Capability::Setpcap,
        Capability::NetBindService,
        Capability::SysChroot,
        Capability::Kill,
        Capability::AuditWrite,
    ]
    .into_iter()
    .collect()
}

/// Everything [`build_spec`] needs besides the request.
pub(crate) struct SpecInput<'a> {
    /// The request.
    pub req: &'a ExecRequest,
    /// Absolute host path of the rootfs.
    pub rootfs: &'a Path,
    /// Resolved process user.
    pub uid: u32,
    /// Resolved primary group.
    pub gid: u32,
    /// Resolved supplementary groups.
    pub additional_gids: Vec<u32>,
    /// Normalized working directory.
    pub cwd: PathBuf,
    /// The mounts from [`plan_mounts`].
    pub mounts: &'a [PlannedMount],
}

/// The OCI runtime spec for one run.
pub(crate) fn build_spec(input: SpecInput<'_>) -> Result<Spec> {
    let req = input.req;
    let caps = default_capabilities();
    let capabilities = LinuxCapabilitiesBuilder::default()
        .bounding(caps.clone())
        .effective(caps.clone())
        .permitted(caps)
        .build()
        .map_err(|e| oci_err("capabilities", e))?;
    let user = UserBuilder::default()
        .uid(input.uid)
        .gid(input.gid)
        .additional_gids(input.additional_gids)
        .build()
        .map_err(|e| oci_err("user", e))?;
    let rlimits = if req.ulimits.is_empty() {
        vec![PosixRlimitBuilder::default()
            .typ(PosixRlimitType::RlimitNofile)
            .soft(nofile_limit())
            .hard(nofile_limit())
            .build()
            .map_err(|e| oci_err("rlimits", e))?]
    } else {
        ulimit_rlimits(&req.ulimits)?
    };
    let process = ProcessBuilder::default()
        .terminal(false)
        .user(user)
        .args(req.args.clone())
        .env(process_env(&req.env))
        .cwd(input.cwd)
        .capabilities(capabilities)
        .rlimits(rlimits)
        // Like Docker/BuildKit: setuid helpers (su, sudo) keep working in build steps.
        .no_new_privileges(false)
        .build()
        .map_err(|e| oci_err("process", e))?;

    let mut ns_types = vec![LinuxNamespaceType::Pid, LinuxNamespaceType::Ipc, LinuxNamespaceType::Uts];
    ns_types.push(LinuxNamespaceType::Mount);
    if req.network == NetworkMode::None {
        // runc configures the loopback interface of a fresh network namespace itself.
        ns_types.push(LinuxNamespaceType::Network);
    }
    let namespaces = ns_types
        .into_iter()
        .map(|t| LinuxNamespaceBuilder::default().typ(t).build().map_err(|e| oci_err("namespaces", e)))
        .collect::<Result<Vec<_>>>()?;
    let deny_all = LinuxDeviceCgroupBuilder::default()
        .allow(false)
        .access("rwm")
        .build()
        .map_err(|e| oci_err("device cgroup", e))?;
    let resources =
        LinuxResourcesBuilder::default().devices(vec![deny_all]).build().map_err(|e| oci_err("resources", e))?;
    // No cgroupsPath: runc then uses /<id> in every hierarchy and removes it on delete, so nothing
    // is left behind (a shared parent such as /kiln would be).
    let mut linux = LinuxBuilder::default()
        .namespaces(namespaces)
        .resources(resources)
        .masked_paths(oci_spec::runtime::get_default_maskedpaths())
        .readonly_paths(oci_spec::runtime::get_default_readonly_paths())
        .build()
        .map_err(|e| oci_err("linux", e))?;
    if let Some(path) = cgroups_path(&req.cgroup_parent, &req.id) {
        linux.set_cgroups_path(Some(path));
    }
    let root = RootBuilder::default()
        .path(input.rootfs)
        .readonly(req.readonly_rootfs)
        .build()
        .map_err(|e| oci_err("root", e))?;
    let hostname = if req.hostname.is_empty() { DEFAULT_HOSTNAME.to_owned() } else { req.hostname.clone() };
    let mut spec = SpecBuilder::default()
        .version("1.0.2-dev")
        .root(root)
        .hostname(hostname)
        .process(process)
        .mounts(input.mounts.iter().map(|m| m.mount.clone()).collect::<Vec<_>>())
        .linux(linux)
        .build()
        .map_err(|e| oci_err("spec", e))?;
    if req.security == SecurityMode::Insecure {
        super::insecure::apply(&mut spec)?;
    }
    Ok(spec)
}

/// BuildKit's rlimits for an op's ulimits (`generateRlimitOpts`): `RLIMIT_<NAME upper>` with the
/// values as `uint64`, in the op's order; they replace every default limit.
pub(crate) fn ulimit_rlimits(ulimits: &[Ulimit]) -> Result<Vec<oci_spec::runtime::PosixRlimit>> {
    ulimits
        .iter()
        .map(|u| {
            let typ: PosixRlimitType = format!("RLIMIT_{}", u.name.to_uppercase()).parse().map_err(|_| {
                worker_err(format!(
                    "unknown ulimit {:?}: expected one of core, cpu, data, fsize, locks, memlock, msgqueue, nice, \
                     nofile, nproc, rss, rtprio, rttime, sigpending, stack, as",
                    u.name
                ))
            })?;
            PosixRlimitBuilder::default()
                .typ(typ)
                .soft(u.soft as u64)
                .hard(u.hard as u64)
                .build()
                .map_err(|e| oci_err("rlimits", e))
        })
        .collect()
}

/// BuildKit's `linux.cgroupsPath` for a cgroup parent (executor/oci/spec.go): the systemd form
/// `NAME.slice:` + id when the parent contains `.slice` and ends with `:`, else
/// `/PARENT/buildkit/<id>` (cleaned like Go's `filepath.Join`); `None` for no parent.
pub(crate) fn cgroups_path(parent: &str, id: &str) -> Option<PathBuf> {
    if parent.is_empty() {
        return None;
    }
    if parent.contains(".slice") && parent.ends_with(':') {
        return Some(PathBuf::from(format!("{parent}{id}")));
    }
    let mut out = PathBuf::from("/");
    for c in Path::new(parent).join("buildkit").join(id).components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => {
                out.pop();
            }
            _ => {}
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::worker::exec::ExecMount;

    fn request() -> ExecRequest {
        ExecRequest {
            id: "t".into(),
            rootfs: "/tmp/rootfs".into(),
            readonly_rootfs: true,
            args: vec!["true".into()],
            env: vec![],
            cwd: "/".into(),
            user: String::new(),
            hostname: String::new(),
            mounts: vec![],
            network: NetworkMode::None,
            extra_hosts: vec![],
            remove_mount_stubs_recursive: true,
            ..Default::default()
        }
    }

    #[test]
    fn paths_are_cleaned_and_dotdot_rejected() {
        assert_eq!(clean_container_path("/a//b/./c/", "x").unwrap(), PathBuf::from("/a/b/c"));
        assert!(clean_container_path("a/b", "x").is_err());
        assert!(clean_container_path("/a/../b", "x").is_err());
    }

    #[test]
    fn user_mounts_override_defaults_and_sort_parents_first() {
        let tmp = tempfile::tempdir().unwrap();
        let mut req = request();
        req.mounts = vec![
            ExecMount { dest: "/a/b".into(), source: MountSource::Tmpfs { size_bytes: Some(1024) } },
            ExecMount { dest: "/a".into(), source: MountSource::Bind { path: tmp.path().into(), readonly: true } },
            ExecMount { dest: "/dev/shm".into(), source: MountSource::Tmpfs { size_bytes: None } },
            ExecMount { dest: "/etc".into(), source: MountSource::Tmpfs { size_bytes: None } },
        ];
        let plan = plan_mounts(&req, Path::new("/b/hosts"), Path::new("/b/resolv")).unwrap();
        let dests: Vec<_> = plan.iter().map(|m| m.dest.to_string_lossy().into_owned()).collect();
        assert_eq!(
            dests,
            ["/proc", "/dev", "/dev/pts", "/dev/mqueue", "/sys", "/sys/fs/cgroup", "/a", "/etc", "/a/b", "/dev/shm"]
        );
        let ab = plan.iter().find(|m| m.dest == Path::new("/a/b")).unwrap();
        assert!(ab.mount.options().as_ref().unwrap().contains(&"size=1024".to_string()));
        assert!(!plan[plan.len() - 1].needs_stub_in_rootfs(&plan[..plan.len() - 1]));
        assert!(plan[6].needs_stub_in_rootfs(&plan[..6]));
    }

    #[test]
    fn spec_has_namespaces_caps_env_and_readonly_root() {
        let mut req = request();
        req.env = vec!["A=1".into()];
        let plan = plan_mounts(&req, Path::new("/b/hosts"), Path::new("/b/resolv")).unwrap();
        let spec = build_spec(SpecInput {
            req: &req,
            rootfs: Path::new("/tmp/rootfs"),
            uid: 1,
            gid: 2,
            additional_gids: vec![3],
            cwd: "/".into(),
            mounts: &plan,
        })
        .unwrap();
        let json = serde_json::to_value(&spec).unwrap();
        assert_eq!(json["root"]["readonly"], true);
        assert_eq!(json["hostname"], "buildkitsandbox");
        assert_eq!(json["process"]["env"][0], "A=1");
        assert_eq!(json["process"]["env"][1], DEFAULT_PATH);
        assert_eq!(json["process"]["user"]["additionalGids"][0], 3);
        assert_eq!(json["process"]["capabilities"]["bounding"].as_array().unwrap().len(), 14);
        assert_eq!(json["process"]["rlimits"][0]["soft"], nofile_limit());
        assert!(nofile_limit() > 1024 && nofile_limit() <= NOFILE_LIMIT);
        let ns: Vec<_> = json["linux"]["namespaces"].as_array().unwrap().iter().map(|n| n["type"].clone()).collect();
        assert!(ns.contains(&serde_json::json!("network")));
        assert!(json["linux"].get("cgroupsPath").is_none());

        req.network = NetworkMode::Host;
        let spec = build_spec(SpecInput {
            req: &req,
            rootfs: Path::new("/tmp/rootfs"),
            uid: 0,
            gid: 0,
            additional_gids: vec![],
            cwd: "/".into(),
            mounts: &plan,
        })
        .unwrap();
        let json = serde_json::to_value(&spec).unwrap();
        let ns: Vec<_> = json["linux"]["namespaces"].as_array().unwrap().iter().map(|n| n["type"].clone()).collect();
        assert!(!ns.contains(&serde_json::json!("network")));
    }
}
