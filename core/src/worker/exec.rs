//! The executor's request and output types: what one container process run needs, independent of
//! the OCI runtime that carries it out.

use std::path::PathBuf;
use std::sync::Arc;

/// How the container is connected to the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NetworkMode {
    /// Share the host's network namespace.
    Host,
    /// A new network namespace with only the loopback interface.
    #[default]
    None,
}

/// The container's privileges (BuildKit's `pb.SecurityMode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SecurityMode {
    /// BuildKit's default capability set, masked and read-only /proc paths, read-only /sys,
    /// no device access.
    #[default]
    Sandbox,
    /// Privileged (BuildKit's `security.insecure`): every capability kiln itself has, nothing
    /// masked, /sys and /sys/fs/cgroup writable, all devices allowed, fuse/tun/kvm/loop nodes.
    Insecure,
}

/// One resource limit (`RLIMIT_<NAME>`) of the container's process; negative values mean
/// unlimited (they are passed as `u64` like Go's `uint64(int64)`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ulimit {
    /// Lower-case name as in LLB (`nofile`, `nproc`, `core`, ...).
    pub name: String,
    /// Soft limit.
    pub soft: i64,
    /// Hard limit.
    pub hard: i64,
}

/// What is mounted at an [`ExecMount`]'s destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MountSource {
    /// A recursive bind mount of a host path (file or directory).
    Bind {
        /// The host path.
        path: PathBuf,
        /// Mount it read-only.
        readonly: bool,
    },
    /// A fresh tmpfs (mode 1777), optionally limited in size.
    Tmpfs {
        /// The size limit in bytes; `None` uses the kernel default (half of RAM).
        size_bytes: Option<u64>,
    },
}

/// One mount in the container, in addition to the standard ones (/proc, /dev, /sys, ...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecMount {
    /// Absolute path inside the container.
    pub dest: String,
    /// What to mount there.
    pub source: MountSource,
}

/// Everything needed to run one process in a container.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ExecRequest {
    /// Container id, unique per run; letters, digits and `_ + - .` only (runc's rule).
    pub id: String,
    /// An already mounted, writable view of the root filesystem.
    pub rootfs: PathBuf,
    /// Mount the root filesystem read-only inside the container.
    pub readonly_rootfs: bool,
    /// The command line; `args[0]` is looked up in `PATH`.
    pub args: Vec<String>,
    /// `KEY=value` entries; `PATH` gets a default when missing.
    pub env: Vec<String>,
    /// Working directory inside the container (created if missing); `""` means `/`.
    pub cwd: String,
    /// `""`, `name`, `uid`, `uid:gid`, `name:group`, resolved with [`crate::worker::resolve_user`].
    pub user: String,
    /// The container's hostname; `""` means `buildkitsandbox` (BuildKit's default).
    pub hostname: String,
    /// Extra mounts, applied parents first.
    pub mounts: Vec<ExecMount>,
    /// Network namespace choice.
    pub network: NetworkMode,
    /// Extra `/etc/hosts` entries as `(hostname, ip)`.
    pub extra_hosts: Vec<(String, String)>,
    /// After the run, remove the missing ancestors created for mount points too, not only the
    /// mount points themselves (LLB `Meta.removeMountStubsRecursive`).
    pub remove_mount_stubs_recursive: bool,
    /// Resource limits; when non-empty they replace the default `RLIMIT_NOFILE` (as BuildKit
    /// replaces its spec's rlimits with the op's ulimits).
    pub ulimits: Vec<Ulimit>,
    /// Cgroup parent (BuildKit's `meta.cgroupParent`): `""` lets runc use `/<id>`; `X.slice:`
    /// (systemd form) gives `X.slice:<id>`; anything else `/X/buildkit/<id>`.
    pub cgroup_parent: String,
    /// Privileges.
    pub security: SecurityMode,
}

/// Which stream an output chunk came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OutputStream {
    /// The process's standard output.
    Stdout,
    /// The process's standard error.
    Stderr,
}

/// Receives output chunks as they arrive (called from the executor's task; keep it quick).
pub type OutputSink = Arc<dyn Fn(OutputStream, &[u8]) + Send + Sync>;
