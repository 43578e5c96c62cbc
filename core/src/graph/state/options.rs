//! The public option types of the builder: sources (`LocalOptions`, `HttpOptions`,
//! `GitOptions`), `run` (`ExecOptions`, `MountSpec`, `Network`, `Security`, `CacheSharing`,
//! `SecretEnv`, `SshSocket`) and file actions (`MkdirOptions`, `MkfileOptions`, `RmOptions`,
//! `CopyOptions`, `Owner`). Plain data with constructors and the argument meaning every face
//! shares: the names of the enums (`FromStr`) and what a valid `run` is
//! ([`ExecOptions::validate`]). What they mean in LLB is decided by `source`, `exec` and `file`;
//! mount and OCI layout option structs live in `mount_options`.

use super::State;
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::graph::pb;
use std::collections::BTreeMap;

/// Options of [`State::local_with`] (BuildKit's `local.*` attributes).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LocalOptions {
    /// Include patterns.
    pub include: Vec<String>,
    /// Exclude patterns.
    pub exclude: Vec<String>,
    /// Paths whose symlinks are followed.
    pub follow_paths: Vec<String>,
    /// Shared key hint.
    pub shared_key_hint: Option<String>,
}

/// Options of [`State::http`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HttpOptions {
    /// Expected digest of the download.
    pub checksum: Option<Digest>,
    /// File name in the result.
    pub filename: Option<String>,
    /// File mode.
    pub perm: Option<u32>,
    /// Owner uid.
    pub uid: Option<u32>,
    /// Owner gid.
    pub gid: Option<u32>,
}

/// Options of [`State::git_with`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GitOptions {
    /// Keep the `.git` directory.
    pub keep_git_dir: bool,
    /// Only this subdirectory.
    pub subdir: Option<String>,
}

/// Network mode of an exec.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Network {
    /// Own network namespace with outbound access (BuildKit's default).
    #[default]
    Sandbox,
    /// The host's network namespace.
    Host,
    /// No network at all.
    None,
}

impl Network {
    /// The names [`str::parse`] accepts, canonical first (`default` is another spelling of
    /// `sandbox`).
    pub const NAMES: &'static [&'static str] = &["sandbox", "host", "none"];
}

impl std::str::FromStr for Network {
    type Err = Error;
    /// `sandbox` (or `default`), `host` or `none`; anything else is an option error naming the
    /// key `network`.
    fn from_str(s: &str) -> Result<Network> {
        match s {
            "sandbox" | "default" => Ok(Network::Sandbox),
            "host" => Ok(Network::Host),
            "none" => Ok(Network::None),
            other => Err(Error::option("network", other, "sandbox, host or none")),
        }
    }
}

/// Sharing mode of a cache mount.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum CacheSharing {
    /// Concurrent users share one directory.
    #[default]
    Shared,
    /// Concurrent users get separate directories.
    Private,
    /// Concurrent users wait for each other.
    Locked,
}

impl CacheSharing {
    /// The names [`str::parse`] accepts.
    pub const NAMES: &'static [&'static str] = &["shared", "private", "locked"];
}

impl std::str::FromStr for CacheSharing {
    type Err = Error;
    /// `shared`, `private` or `locked`; anything else is an option error naming the key
    /// `sharing`.
    fn from_str(s: &str) -> Result<CacheSharing> {
        match s {
            "shared" => Ok(CacheSharing::Shared),
            "private" => Ok(CacheSharing::Private),
            "locked" => Ok(CacheSharing::Locked),
            other => Err(Error::option("sharing", other, "shared, private or locked")),
        }
    }
}

/// Numeric owner of created files.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Owner {
    /// User id.
    pub uid: u32,
    /// Group id.
    pub gid: u32,
}

#[derive(Debug, Clone)]
pub(super) enum MountKind {
    Bind { state: State, readonly: bool, selector: Option<String>, no_output: bool },
    Tmpfs { size: u64 },
    Cache { id: String, sharing: CacheSharing, base: Option<State>, selector: Option<String>, readonly: bool },
    Secret { id: String, uid: u32, gid: u32, mode: u32, optional: bool },
}

/// An extra mount of an exec.
#[derive(Debug, Clone)]
pub struct MountSpec {
    pub(super) dest: String,
    pub(super) kind: MountKind,
}

impl MountSpec {
    /// Bind-mounts `state` at `dest`. A writable bind produces an output
    /// ([`ExecState::mount_output`](super::ExecState::mount_output)); a readonly one does not.
    pub fn bind(dest: impl Into<String>, state: &State, readonly: bool) -> MountSpec {
        MountSpec {
            dest: dest.into(),
            kind: MountKind::Bind { state: state.clone(), readonly, selector: None, no_output: false },
        }
    }

    /// Mounts only `path` of the bound state or of a cache's base (BuildKit's mount selector).
    /// No effect on other kinds.
    pub fn with_selector(mut self, path: impl Into<String>) -> MountSpec {
        match &mut self.kind {
            MountKind::Bind { selector, .. } | MountKind::Cache { selector, .. } => *selector = Some(path.into()),
            _ => {}
        }
        self
    }

    /// A writable bind whose changes are dropped: the mount takes no output (Go llb's
    /// `ForceNoOutput`, what a Dockerfile's `--mount=type=bind,rw` is). No effect on other kinds.
    pub fn without_output(mut self) -> MountSpec {
        if let MountKind::Bind { no_output, .. } = &mut self.kind {
            *no_output = true;
        }
        self
    }

    /// A cache directory `id` at `dest` whose first use starts from `base`'s content (Go llb's
    /// `AddMount(dest, base, AsPersistentCacheDir(..))`; a Dockerfile's `--mount=type=cache,from=`).
    pub fn cache_on(dest: impl Into<String>, id: impl Into<String>, sharing: CacheSharing, base: &State) -> MountSpec {
        let base = (!base.is_scratch()).then(|| base.clone());
        MountSpec {
            dest: dest.into(),
            kind: MountKind::Cache { id: id.into(), sharing, base, selector: None, readonly: false },
        }
    }

    /// Makes a cache mount read-only (`--mount=type=cache,ro`). No effect on other kinds.
    pub fn read_only_cache(mut self) -> MountSpec {
        if let MountKind::Cache { readonly, .. } = &mut self.kind {
            *readonly = true;
        }
        self
    }

    /// A tmpfs at `dest`; `size` in bytes, 0 for the runtime default.
    pub fn tmpfs(dest: impl Into<String>, size: u64) -> MountSpec {
        MountSpec { dest: dest.into(), kind: MountKind::Tmpfs { size } }
    }

    /// A persistent cache directory `id` at `dest`.
    pub fn cache(dest: impl Into<String>, id: impl Into<String>, sharing: CacheSharing) -> MountSpec {
        MountSpec {
            dest: dest.into(),
            kind: MountKind::Cache { id: id.into(), sharing, base: None, selector: None, readonly: false },
        }
    }

    /// Secret `id` as a file at `dest` with owner and mode; `optional` tolerates a missing secret.
    pub fn secret(
        dest: impl Into<String>,
        id: impl Into<String>,
        uid: u32,
        gid: u32,
        mode: u32,
        optional: bool,
    ) -> MountSpec {
        MountSpec { dest: dest.into(), kind: MountKind::Secret { id: id.into(), uid, gid, mode, optional } }
    }

    /// The mount's destination path.
    pub fn dest(&self) -> &str {
        &self.dest
    }
}

/// What [`State::run`] runs. Build with [`ExecOptions::new`] / [`ExecOptions::shell`] and the
/// chaining setters, or fill the fields directly.
#[derive(Debug, Clone, Default)]
pub struct ExecOptions {
    /// argv.
    pub args: Vec<String>,
    /// Extra env for this run only (overrides the state's env of the same name).
    pub env: Vec<(String, String)>,
    /// Working dir for this run (relative paths join the state's cwd).
    pub cwd: Option<String>,
    /// User for this run.
    pub user: Option<String>,
    /// Hostname.
    pub hostname: Option<String>,
    /// Extra mounts.
    pub mounts: Vec<MountSpec>,
    /// Read-only rootfs (mount 0 readonly; the exec then has no rootfs output).
    pub readonly_rootfs: bool,
    /// Network mode.
    pub network: Network,
    /// Display name (`llb.customname`).
    pub custom_name: Option<String>,
    /// Worker selector labels (`KEY==VALUE` constraints).
    pub worker_selector: BTreeMap<String, String>,
    /// Never use a cached result of this exec.
    pub ignore_cache: bool,
    /// Extra `/etc/hosts` entries `(host, ip)`, in order (Go's `llb.AddExtraHost`).
    pub extra_hosts: Vec<(String, std::net::IpAddr)>,
    /// Resource limits (Go's `llb.AddUlimit`; adds cap `exec.meta.ulimit`).
    pub ulimits: Vec<pb::Ulimit>,
    /// Cgroup parent (Go's `llb.WithCgroupParent`).
    pub cgroup_parent: Option<String>,
    /// Exit codes that count as success; empty = only 0 (BuildKit ≥ v0.12's
    /// `llb.ValidExitCodes`; adds cap `exec.validexitcode`).
    pub valid_exit_codes: Vec<i32>,
    /// Secrets as environment variables (Go's `llb.AddSecret(.., llb.SecretAsEnv(true))`).
    pub secret_env: Vec<SecretEnv>,
    /// SSH agent sockets (Go's `llb.AddSSHSocket`).
    pub ssh: Vec<SshSocket>,
    /// Privileges (Go's `llb.Security`); `Insecure` needs the `security.insecure` entitlement.
    pub security: Security,
}

/// Privileges of an exec (BuildKit's `pb.SecurityMode`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Security {
    /// The default sandbox.
    #[default]
    Sandbox,
    /// Privileged (`security.insecure` entitlement).
    Insecure,
}

/// A secret exposed as an environment variable of an exec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretEnv {
    /// The variable's name.
    pub name: String,
    /// The secret's id.
    pub id: String,
    /// Tolerate a missing secret (the variable is then set to `""`, as BuildKit does).
    pub optional: bool,
}

/// An SSH agent socket forwarded into an exec (Go's `SSHInfo`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshSocket {
    /// Agent id given at solve time (`""` = `default`).
    pub id: String,
    /// Socket path in the container; `None` = `/run/buildkit/ssh_agent.N` (N = its index).
    pub target: Option<String>,
    /// Socket owner uid.
    pub uid: u32,
    /// Socket owner gid.
    pub gid: u32,
    /// Socket permission bits (default 0o600).
    pub mode: u32,
    /// Tolerate a missing agent (no socket is mounted then).
    pub optional: bool,
}

impl Default for SshSocket {
    fn default() -> Self {
        SshSocket { id: String::new(), target: None, uid: 0, gid: 0, mode: 0o600, optional: false }
    }
}

impl SshSocket {
    /// The agent `id` at the default target, owned by root, mode 0600.
    pub fn new(id: impl Into<String>) -> SshSocket {
        SshSocket { id: id.into(), ..Default::default() }
    }

    /// Sets the socket path in the container.
    pub fn target(mut self, target: impl Into<String>) -> Self {
        self.target = Some(target.into());
        self
    }

    /// Sets owner and mode (Go's `SSHSocketOpt`).
    pub fn owner(mut self, uid: u32, gid: u32, mode: u32) -> Self {
        self.uid = uid;
        self.gid = gid;
        self.mode = mode;
        self
    }

    /// Tolerates a missing agent.
    pub fn optional(mut self) -> Self {
        self.optional = true;
        self
    }
}

impl ExecOptions {
    /// Runs `args`.
    pub fn new<I, S>(args: I) -> ExecOptions
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        ExecOptions { args: args.into_iter().map(Into::into).collect(), ..Default::default() }
    }

    /// Runs `/bin/sh -c script`.
    pub fn shell(script: impl Into<String>) -> ExecOptions {
        ExecOptions::new(["/bin/sh".to_owned(), "-c".to_owned(), script.into()])
    }

    /// Adds an env var for this run.
    pub fn env(mut self, k: impl Into<String>, v: impl Into<String>) -> Self {
        self.env.push((k.into(), v.into()));
        self
    }

    /// Sets the working dir.
    pub fn cwd(mut self, dir: impl Into<String>) -> Self {
        self.cwd = Some(dir.into());
        self
    }

    /// Sets the user.
    pub fn user(mut self, user: impl Into<String>) -> Self {
        self.user = Some(user.into());
        self
    }

    /// Sets the hostname.
    pub fn hostname(mut self, h: impl Into<String>) -> Self {
        self.hostname = Some(h.into());
        self
    }

    /// Adds a mount.
    pub fn mount(mut self, m: MountSpec) -> Self {
        self.mounts.push(m);
        self
    }

    /// Makes the rootfs read-only.
    pub fn readonly_rootfs(mut self) -> Self {
        self.readonly_rootfs = true;
        self
    }

    /// Sets the network mode.
    pub fn network(mut self, n: Network) -> Self {
        self.network = n;
        self
    }

    /// Sets the display name.
    pub fn custom_name(mut self, name: impl Into<String>) -> Self {
        self.custom_name = Some(name.into());
        self
    }

    /// Requires a worker label.
    pub fn worker_selector(mut self, k: impl Into<String>, v: impl Into<String>) -> Self {
        self.worker_selector.insert(k.into(), v.into());
        self
    }

    /// Never use a cached result.
    pub fn ignore_cache(mut self) -> Self {
        self.ignore_cache = true;
        self
    }

    /// Adds an `/etc/hosts` entry.
    pub fn extra_host(mut self, host: impl Into<String>, ip: std::net::IpAddr) -> Self {
        self.extra_hosts.push((host.into(), ip));
        self
    }

    /// Adds a resource limit: `name` as in `ulimit` (`nofile`, `nproc`, `core`, ...); negative
    /// values mean unlimited.
    pub fn ulimit(mut self, name: impl Into<String>, soft: i64, hard: i64) -> Self {
        self.ulimits.push(pb::Ulimit { name: name.into(), soft, hard });
        self
    }

    /// Sets the cgroup parent.
    pub fn cgroup_parent(mut self, parent: impl Into<String>) -> Self {
        self.cgroup_parent = Some(parent.into());
        self
    }

    /// Sets the exit codes that count as success.
    pub fn valid_exit_codes(mut self, codes: impl IntoIterator<Item = i32>) -> Self {
        self.valid_exit_codes = codes.into_iter().collect();
        self
    }

    /// Exposes secret `id` as environment variable `name`.
    pub fn secret_env(mut self, name: impl Into<String>, id: impl Into<String>, optional: bool) -> Self {
        self.secret_env.push(SecretEnv { name: name.into(), id: id.into(), optional });
        self
    }

    /// Forwards an SSH agent socket.
    pub fn ssh(mut self, socket: SshSocket) -> Self {
        self.ssh.push(socket);
        self
    }

    /// Runs privileged (needs the `security.insecure` entitlement).
    pub fn insecure(mut self) -> Self {
        self.security = Security::Insecure;
        self
    }

    /// Checks what every face rejects before a run is added to a graph: an empty argv, an env
    /// key that is empty or contains `=` (it would change another variable), a duplicate mount
    /// destination. Errors name the key ([`State::try_run`] calls this).
    pub fn validate(&self) -> Result<()> {
        if self.args.is_empty() {
            return Err(Error::option("args", "", "at least the program path (args[0])"));
        }
        for (k, _) in &self.env {
            if k.is_empty() || k.contains('=') {
                return Err(Error::option("env", k.as_str(), "a variable name that is non-empty and has no '='"));
            }
        }
        let mut dests = std::collections::BTreeSet::new();
        for m in &self.mounts {
            if !dests.insert(m.dest()) {
                return Err(Error::option("mounts", m.dest(), "one mount per destination"));
            }
        }
        Ok(())
    }
}

/// Options of [`State::mkdir`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MkdirOptions {
    /// Permission bits (default 0o755).
    pub mode: u32,
    /// Create missing parents.
    pub make_parents: bool,
    /// Owner.
    pub owner: Option<Owner>,
    /// Timestamp in Unix nanoseconds.
    pub timestamp: Option<i64>,
    /// Owner as `user[:group]` (names or ids, names resolved in the target's `/etc/passwd` and
    /// `/etc/group` when solved; Go llb's `WithUser`); wins over `owner`.
    pub user: Option<String>,
}

impl MkfileOptions {
    /// The mode of a created file when a face's caller gives none (`mkfile(path, data)`).
    pub const DEFAULT_MODE: u32 = 0o644;
}

impl Default for MkdirOptions {
    fn default() -> Self {
        MkdirOptions { mode: 0o755, make_parents: false, owner: None, timestamp: None, user: None }
    }
}

/// Options of [`State::mkfile`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MkfileOptions {
    /// Owner.
    pub owner: Option<Owner>,
    /// Timestamp in Unix nanoseconds.
    pub timestamp: Option<i64>,
}

/// Options of [`State::rm`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RmOptions {
    /// A missing path is not an error.
    pub allow_not_found: bool,
    /// The path is a wildcard pattern.
    pub allow_wildcard: bool,
}

/// Options of [`State::copy`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CopyOptions {
    /// Follow a symlink at the source path.
    pub follow_symlinks: bool,
    /// Copy a directory's contents rather than the directory.
    pub dir_copy_contents: bool,
    /// The source path is a wildcard pattern.
    pub allow_wildcard: bool,
    /// A wildcard matching nothing is not an error.
    pub allow_empty_wildcard: bool,
    /// Include patterns.
    pub include: Vec<String>,
    /// Exclude patterns.
    pub exclude: Vec<String>,
    /// Create missing parents of the destination.
    pub create_dest_path: bool,
    /// Owner of copied files.
    pub owner: Option<Owner>,
    /// Mode of copied files.
    pub mode: Option<u32>,
    /// Timestamp in Unix nanoseconds.
    pub timestamp: Option<i64>,
    /// Owner as `user[:group]` (names or ids, resolved in the destination's `/etc/passwd` and
    /// `/etc/group` when solved; Go llb's `WithUser`); wins over `owner`.
    pub user: Option<String>,
    /// Extract a source that is a local tar archive (compressed or not) into the destination
    /// (Go llb's `AttemptUnpack`, what a Dockerfile's `ADD` does).
    pub attempt_unpack: bool,
}
