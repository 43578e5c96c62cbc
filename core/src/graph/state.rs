//! The fluent `State` builder, in the spirit of BuildKit's Go `llb` package: sources, `run`,
//! file actions, merge and per-op constraints, marshalled into a validated [`Definition`] with
//! BuildKit's encoding conventions (mount/output numbering, file action chaining, terminal op).
//!
//! States are cheap immutable values (ops are shared `Arc` nodes); every method returns a new
//! state. Marshalling visits each node once and deduplicates identical ops by digest, so the
//! same graph always yields identical bytes.

use super::definition::{Definition, CUSTOM_NAME_KEY};
use super::image_config::ImageConfig;
use super::pb;
use super::pb::file_action::Action;
use super::source::{OciRef, SourceSpec};
use crate::digest::Digest;
use crate::error::{Error, Result};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;

/// `PATH` set on exec ops whose env has none (what Go's `llb` does for older daemons).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

// ---------------------------------------------------------------------------------------------
// Internal graph nodes

#[derive(Debug, Clone, Default, PartialEq)]
struct Constraints {
    description: BTreeMap<String, String>,
    ignore_cache: bool,
    /// Worker constraint filters, `KEY==VALUE` (see `definition::parse_worker_filter`).
    worker_filter: Vec<String>,
    platform: Option<pb::Platform>,
}

#[derive(Debug)]
struct Node {
    kind: NodeKind,
    constraints: Constraints,
}

impl Drop for Node {
    /// Unlinks inputs iteratively: dropping a long chain recursively would overflow the stack.
    fn drop(&mut self) {
        let mut stack = take_inputs(&mut self.kind);
        while let Some(n) = stack.pop() {
            if let Ok(mut inner) = Arc::try_unwrap(n) {
                stack.extend(take_inputs(&mut inner.kind));
            }
        }
    }
}

fn take_inputs(kind: &mut NodeKind) -> Vec<Arc<Node>> {
    let mut v = Vec::new();
    match kind {
        NodeKind::Source { .. } => {}
        NodeKind::Exec(e) => v.extend(e.mounts.iter_mut().filter_map(|(s, _)| s.take()).map(|o| o.node)),
        NodeKind::File(f) => {
            v.extend(f.base.take().map(|o| o.node));
            v.extend(f.actions.iter_mut().filter_map(|(_, s)| s.as_mut().and_then(Option::take)).map(|o| o.node));
        }
        NodeKind::Merge(inputs) => v.extend(inputs.drain(..).map(|o| o.node)),
        NodeKind::Diff { lower, upper } => {
            v.extend(lower.take().map(|o| o.node));
            v.extend(upper.take().map(|o| o.node));
        }
    }
    v
}

#[derive(Debug, Clone)]
enum NodeKind {
    Source {
        identifier: String,
        attrs: BTreeMap<String, String>,
        caps: Vec<&'static str>,
        platform_specific: bool,
    },
    Exec(Box<ExecNode>),
    File(FileChain),
    Merge(Vec<Output>),
    /// `lower` is always set when built (Option only so `Drop` can unlink it); `upper` None = scratch.
    Diff {
        lower: Option<Output>,
        upper: Option<Output>,
    },
}

#[derive(Debug, Clone)]
struct Output {
    node: Arc<Node>,
    index: i64,
}

#[derive(Debug, Clone)]
struct ExecNode {
    meta: pb::Meta,
    network: i32,
    /// Sorted by dest (secrets last), outputs already numbered; `input` filled at marshal time.
    mounts: Vec<(Option<Output>, pb::Mount)>,
    caps: BTreeSet<&'static str>,
    security: i32,
    secretenv: Vec<pb::SecretEnv>,
}

#[derive(Debug, Clone)]
struct FileChain {
    /// The state the first action applies to (`None` = scratch).
    base: Option<Output>,
    /// Actions in order; each later action applies to the previous one's result. The second
    /// element is the copy source (`Some(None)` = copy from scratch).
    actions: Vec<(Action, Option<Option<Output>>)>,
    caps: BTreeSet<&'static str>,
}

// ---------------------------------------------------------------------------------------------
// Public option types

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

/// Numeric owner of created files.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Owner {
    /// User id.
    pub uid: u32,
    /// Group id.
    pub gid: u32,
}

#[derive(Debug, Clone)]
enum MountKind {
    Bind { state: State, readonly: bool, selector: Option<String> },
    Tmpfs { size: u64 },
    Cache { id: String, sharing: CacheSharing },
    Secret { id: String, uid: u32, gid: u32, mode: u32, optional: bool },
}

/// An extra mount of an exec.
#[derive(Debug, Clone)]
pub struct MountSpec {
    dest: String,
    kind: MountKind,
}

impl MountSpec {
    /// Bind-mounts `state` at `dest`. A writable bind produces an output
    /// ([`ExecState::mount_output`]); a readonly one does not.
    pub fn bind(dest: impl Into<String>, state: &State, readonly: bool) -> MountSpec {
        MountSpec { dest: dest.into(), kind: MountKind::Bind { state: state.clone(), readonly, selector: None } }
    }

    /// Mounts only `path` of the bound state (BuildKit's mount selector). No effect on other kinds.
    pub fn with_selector(mut self, path: impl Into<String>) -> MountSpec {
        if let MountKind::Bind { selector, .. } = &mut self.kind {
            *selector = Some(path.into());
        }
        self
    }

    /// A tmpfs at `dest`; `size` in bytes, 0 for the runtime default.
    pub fn tmpfs(dest: impl Into<String>, size: u64) -> MountSpec {
        MountSpec { dest: dest.into(), kind: MountKind::Tmpfs { size } }
    }

    /// A persistent cache directory `id` at `dest`.
    pub fn cache(dest: impl Into<String>, id: impl Into<String>, sharing: CacheSharing) -> MountSpec {
        MountSpec { dest: dest.into(), kind: MountKind::Cache { id: id.into(), sharing } }
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
}

impl Default for MkdirOptions {
    fn default() -> Self {
        MkdirOptions { mode: 0o755, make_parents: false, owner: None, timestamp: None }
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
}

// ---------------------------------------------------------------------------------------------
// State

#[derive(Debug, Clone, Default, PartialEq)]
struct StateMeta {
    env: Vec<(String, String)>,
    cwd: Option<String>,
    user: Option<String>,
    hostname: Option<String>,
    entrypoint: Option<Vec<String>>,
    cmd: Option<Vec<String>>,
    labels: BTreeMap<String, String>,
}

/// A filesystem state: the output of an op (or scratch) plus llb-like metadata (env, cwd,
/// user) inherited by `run` and reported by [`State::image_config`].
#[derive(Debug, Clone, Default)]
pub struct State {
    output: Option<Output>,
    meta: StateMeta,
    /// True while this state is the fresh result of a file action: further file actions chain
    /// into the same FileOp (BuildKit's `Mkdir(..).Mkfile(..)`).
    chain_open: bool,
}

/// The result of [`State::run`]: the rootfs state (also reachable through `Deref`) and the
/// outputs of writable bind mounts.
#[derive(Debug, Clone)]
pub struct ExecState {
    root: State,
    mounts: Vec<(String, Option<State>)>,
}

impl ExecState {
    /// The rootfs after the exec. With a read-only rootfs the exec has no rootfs output and this
    /// is the input rootfs unchanged (as in Go's `llb`); use a mount output to keep such an exec.
    pub fn root(&self) -> State {
        self.root.clone()
    }

    /// The output of the writable bind mount at `dest`; `None` for readonly, cache, tmpfs and
    /// secret mounts or an unknown dest.
    pub fn mount_output(&self, dest: &str) -> Option<State> {
        self.mounts.iter().find(|(d, _)| d == dest).and_then(|(_, s)| s.clone())
    }
}

impl std::ops::Deref for ExecState {
    type Target = State;
    fn deref(&self) -> &State {
        &self.root
    }
}

fn host_platform() -> pb::Platform {
    let (arch, variant) = match std::env::consts::ARCH {
        "x86_64" => ("amd64", ""),
        "aarch64" => ("arm64", ""),
        "arm" => ("arm", "v7"),
        "x86" => ("386", ""),
        "powerpc64" => ("ppc64le", ""),
        other => (other, ""),
    };
    pb::Platform { architecture: arch.into(), os: "linux".into(), variant: variant.into(), ..Default::default() }
}

/// Go's `path.Clean` for slash paths.
fn clean(p: &str) -> String {
    let rooted = p.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for seg in p.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                if parts.last().is_some_and(|l| *l != "..") {
                    parts.pop();
                } else if !rooted {
                    parts.push("..");
                }
            }
            s => parts.push(s),
        }
    }
    let joined = parts.join("/");
    match (rooted, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".to_owned(),
        (false, false) => joined,
    }
}

/// BuildKit's `normalizePath`: relative paths join `parent`; `keep_slash` preserves a trailing
/// `/` or `/.` (meaningful for copy destinations).
fn normalize_path(parent: &str, p: &str, keep_slash: bool) -> String {
    let mut out = clean(p);
    if !out.starts_with('/') {
        out = clean(&format!("/{parent}/{out}"));
    }
    if keep_slash {
        if p.ends_with('/') && !out.ends_with('/') {
            out.push('/');
        } else if p.ends_with("/.") {
            if out != "/" {
                out.push('/');
            }
            out.push('.');
        }
    }
    out
}

fn chown(o: &Option<Owner>) -> Option<pb::ChownOpt> {
    o.map(|o| pb::ChownOpt {
        user: Some(pb::UserOpt { user: Some(pb::user_opt::User::ById(o.uid)) }),
        group: Some(pb::UserOpt { user: Some(pb::user_opt::User::ById(o.gid)) }),
    })
}

/// Normalizes a docker image reference like Go's `reference.ParseNormalizedNamed` +
/// `TagNameOnly` for the common forms: `busybox` → `docker.io/library/busybox:latest`.
fn normalize_image_ref(r: &str) -> String {
    let (first, _) = r.split_once('/').unwrap_or(("", r));
    let has_domain = r.contains('/') && (first.contains('.') || first.contains(':') || first == "localhost");
    let mut out = if has_domain {
        r.to_owned()
    } else if r.contains('/') {
        format!("docker.io/{r}")
    } else {
        format!("docker.io/library/{r}")
    };
    let last = out.rsplit('/').next().unwrap_or("");
    if !last.contains(':') && !out.contains('@') {
        out.push_str(":latest");
    }
    out
}

impl State {
    /// The empty filesystem.
    pub fn scratch() -> State {
        State::default()
    }

    /// True when this state is scratch (no op).
    pub fn is_scratch(&self) -> bool {
        self.output.is_none()
    }

    fn from_node(kind: NodeKind, constraints: Constraints) -> State {
        State {
            output: Some(Output { node: Arc::new(Node { kind, constraints }), index: 0 }),
            meta: StateMeta::default(),
            chain_open: false,
        }
    }

    /// A state from any typed source.
    pub fn source(spec: SourceSpec) -> State {
        let platform_specific = matches!(spec, SourceSpec::DockerImage { .. } | SourceSpec::OciLayout { .. });
        State::from_node(
            NodeKind::Source {
                identifier: spec.to_identifier(),
                attrs: spec.to_attrs(),
                caps: spec.caps(),
                platform_specific,
            },
            Constraints::default(),
        )
    }

    /// `local://NAME`: a directory the caller provides under `name`.
    pub fn local(name: impl Into<String>) -> State {
        State::local_with(name, LocalOptions::default())
    }

    /// `local://NAME` with include/exclude patterns, follow paths and a shared key hint.
    pub fn local_with(name: impl Into<String>, o: LocalOptions) -> State {
        State::source(SourceSpec::Local {
            name: name.into(),
            include: o.include,
            exclude: o.exclude,
            follow_paths: o.follow_paths,
            shared_key_hint: o.shared_key_hint,
        })
    }

    /// `oci-layout://DIR:TAG` or `oci-layout://DIR@DIGEST`: an image from an OCI layout on disk.
    pub fn oci_layout(dir: impl Into<PathBuf>, reference: OciRef) -> State {
        State::source(SourceSpec::OciLayout { path: dir.into(), reference })
    }

    /// A file downloaded from `url` (http or https).
    pub fn http(url: impl Into<String>, o: HttpOptions) -> State {
        State::source(SourceSpec::Http {
            url: url.into(),
            checksum: o.checksum,
            filename: o.filename,
            perm: o.perm,
            uid: o.uid,
            gid: o.gid,
        })
    }

    /// A git checkout of `reference` (branch, tag, commit; empty = default branch) from `remote`
    /// (URL, `file://` URL or absolute path).
    pub fn git(remote: impl Into<String>, reference: impl Into<String>) -> State {
        State::git_with(remote, reference, GitOptions::default())
    }

    /// [`State::git`] with options.
    pub fn git_with(remote: impl Into<String>, reference: impl Into<String>, o: GitOptions) -> State {
        State::source(SourceSpec::Git {
            remote: remote.into(),
            reference: reference.into(),
            keep_git_dir: o.keep_git_dir,
            subdir: o.subdir,
        })
    }

    /// `docker-image://REF` (normalized like Go: `busybox` → `docker.io/library/busybox:latest`).
    pub fn image(reference: impl AsRef<str>) -> State {
        State::source(SourceSpec::DockerImage { reference: normalize_image_ref(reference.as_ref()) })
    }

    // -- metadata ------------------------------------------------------------------------------

    /// Sets env var `k` (replacing an earlier value) for later runs and the image config.
    pub fn with_env(mut self, k: impl Into<String>, v: impl Into<String>) -> State {
        let (k, v) = (k.into(), v.into());
        match self.meta.env.iter_mut().find(|(ek, _)| *ek == k) {
            Some(e) => e.1 = v,
            None => self.meta.env.push((k, v)),
        }
        self
    }

    /// Sets the working dir (relative paths join the current one).
    pub fn with_cwd(mut self, dir: impl AsRef<str>) -> State {
        self.meta.cwd = Some(normalize_path(self.cwd(), dir.as_ref(), false));
        self
    }

    /// Sets the user for later runs and the image config.
    pub fn with_user(mut self, user: impl Into<String>) -> State {
        self.meta.user = Some(user.into());
        self
    }

    /// Sets the hostname for later runs.
    pub fn with_hostname(mut self, h: impl Into<String>) -> State {
        self.meta.hostname = Some(h.into());
        self
    }

    /// Sets the image config entrypoint.
    pub fn with_entrypoint<I: IntoIterator<Item = S>, S: Into<String>>(mut self, args: I) -> State {
        self.meta.entrypoint = Some(args.into_iter().map(Into::into).collect());
        self
    }

    /// Sets the image config cmd.
    pub fn with_cmd<I: IntoIterator<Item = S>, S: Into<String>>(mut self, args: I) -> State {
        self.meta.cmd = Some(args.into_iter().map(Into::into).collect());
        self
    }

    /// Adds an image config label.
    pub fn with_label(mut self, k: impl Into<String>, v: impl Into<String>) -> State {
        self.meta.labels.insert(k.into(), v.into());
        self
    }

    /// Env vars in order of first setting.
    pub fn env(&self) -> &[(String, String)] {
        &self.meta.env
    }

    /// Working dir (`/` unless set).
    pub fn cwd(&self) -> &str {
        self.meta.cwd.as_deref().unwrap_or("/")
    }

    /// User, if set.
    pub fn user(&self) -> Option<&str> {
        self.meta.user.as_deref()
    }

    /// The image config this state carries (env, working dir, user, entrypoint, cmd, labels).
    pub fn image_config(&self) -> ImageConfig {
        ImageConfig {
            entrypoint: self.meta.entrypoint.clone(),
            cmd: self.meta.cmd.clone(),
            env: self.meta.env.iter().map(|(k, v)| format!("{k}={v}")).collect(),
            working_dir: self.meta.cwd.clone(),
            user: self.meta.user.clone(),
            labels: self.meta.labels.clone(),
        }
    }

    /// Copies the llb metadata (env, cwd, user, image config) of `other` onto this state.
    pub fn with_meta_of(mut self, other: &State) -> State {
        self.meta = other.meta.clone();
        self
    }

    // -- constraints ---------------------------------------------------------------------------

    fn map_constraints(self, f: impl FnOnce(&mut Constraints)) -> State {
        let Some(out) = &self.output else {
            tracing::debug!("constraint on scratch state has no op to apply to; ignored");
            return self;
        };
        let mut c = out.node.constraints.clone();
        f(&mut c);
        let node = Arc::new(Node { kind: out.node.kind.clone(), constraints: c });
        State { output: Some(Output { node, index: out.index }), meta: self.meta, chain_open: false }
    }

    /// Display name of the op producing this state (`llb.customname`).
    pub fn with_custom_name(self, name: impl Into<String>) -> State {
        self.with_description(CUSTOM_NAME_KEY, name)
    }

    /// Adds a metadata description entry to the op producing this state.
    pub fn with_description(self, k: impl Into<String>, v: impl Into<String>) -> State {
        let (k, v) = (k.into(), v.into());
        self.map_constraints(|c| {
            c.description.insert(k, v);
        })
    }

    /// Restricts the op producing this state to workers having all `labels`; written as
    /// `KEY==VALUE` worker constraint filters.
    pub fn with_worker_selector(self, labels: BTreeMap<String, String>) -> State {
        self.map_constraints(|c| {
            c.worker_filter = labels.iter().map(|(k, v)| format!("{k}=={v}")).collect();
        })
    }

    /// Never use a cached result for the op producing this state.
    pub fn ignore_cache(self) -> State {
        self.map_constraints(|c| c.ignore_cache = true)
    }

    /// Sets the platform of the op producing this state.
    pub fn with_platform(self, p: pb::Platform) -> State {
        self.map_constraints(|c| c.platform = Some(p))
    }

    // -- exec ----------------------------------------------------------------------------------

    /// Runs a process on this state as rootfs. Mounts follow BuildKit's ExecOp conventions:
    /// sorted by dest (rootfs `/` first, secrets last); each writable rootfs/bind mount gets the
    /// next output index; readonly, cache, tmpfs and secret mounts have output -1.
    pub fn run(&self, o: ExecOptions) -> ExecState {
        let mut env = self.meta.env.clone();
        for (k, v) in &o.env {
            match env.iter_mut().find(|(ek, _)| ek == k) {
                Some(e) => e.1 = v.clone(),
                None => env.push((k.clone(), v.clone())),
            }
        }
        if !env.iter().any(|(k, _)| k == "PATH") {
            env.insert(0, ("PATH".to_owned(), DEFAULT_PATH.to_owned()));
        }
        // Go's ExecOp.Marshal: default ssh targets, and SSH_AUTH_SOCK = the first one's unless set.
        let ssh_targets: Vec<String> = o
            .ssh
            .iter()
            .enumerate()
            .map(|(i, s)| s.target.clone().unwrap_or_else(|| format!("/run/buildkit/ssh_agent.{i}")))
            .collect();
        if let Some(first) = ssh_targets.first() {
            if !env.iter().any(|(k, _)| k == "SSH_AUTH_SOCK") {
                env.push(("SSH_AUTH_SOCK".to_owned(), first.clone()));
            }
        }
        let cwd = match &o.cwd {
            Some(c) => normalize_path(self.cwd(), c, false),
            None => self.cwd().to_owned(),
        };
        let meta = pb::Meta {
            args: o.args.clone(),
            env: env.iter().map(|(k, v)| format!("{k}={v}")).collect(),
            cwd,
            user: o.user.clone().or_else(|| self.meta.user.clone()).unwrap_or_default(),
            hostname: o.hostname.clone().or_else(|| self.meta.hostname.clone()).unwrap_or_default(),
            // Go `llb` (v0.11.6) sets this on every ExecOp it marshals.
            remove_mount_stubs_recursive: true,
            extra_hosts: o
                .extra_hosts
                .iter()
                .map(|(h, ip)| pb::HostIp { host: h.clone(), ip: ip.to_string() })
                .collect(),
            ulimit: o.ulimits.clone(),
            cgroup_parent: o.cgroup_parent.clone().unwrap_or_default(),
            valid_exit_codes: o.valid_exit_codes.clone(),
            ..Default::default()
        };
        let mut caps: BTreeSet<&'static str> = BTreeSet::from(["exec.meta.base"]);
        if o.network != Network::Sandbox {
            caps.insert("exec.meta.network");
        }
        if !o.ulimits.is_empty() {
            caps.insert("exec.meta.ulimit");
        }
        if !o.valid_exit_codes.is_empty() {
            caps.insert("exec.validexitcode");
        }
        if o.security != Security::Sandbox {
            caps.insert("exec.meta.security");
        }
        if !o.secret_env.is_empty() {
            // Go adds the secret-mount cap for any secret, env or file.
            caps.insert("exec.mount.secret");
            caps.insert("exec.secretenv");
        }
        if !o.ssh.is_empty() {
            caps.insert("exec.mount.ssh");
        }
        // (source, mount, is-writable-output)
        let mut plain: Vec<(Option<Output>, pb::Mount, bool)> = Vec::new();
        plain.push((
            self.output.clone(),
            pb::Mount { dest: "/".into(), readonly: o.readonly_rootfs, ..Default::default() },
            !o.readonly_rootfs,
        ));
        if self.output.is_some() {
            caps.insert("exec.mount.bind");
        }
        let mut secrets = Vec::new();
        for m in &o.mounts {
            match &m.kind {
                MountKind::Bind { state, readonly, selector } => {
                    if selector.is_some() {
                        caps.insert("exec.mount.selector");
                    }
                    if state.output.is_some() {
                        caps.insert("exec.mount.bind");
                    }
                    plain.push((
                        state.output.clone(),
                        pb::Mount {
                            dest: m.dest.clone(),
                            readonly: *readonly,
                            selector: selector.clone().unwrap_or_default(),
                            ..Default::default()
                        },
                        !*readonly,
                    ));
                }
                MountKind::Tmpfs { size } => {
                    caps.insert("exec.mount.tmpfs");
                    let tmpfs_opt = (*size > 0).then(|| {
                        caps.insert("exec.mount.tmpfs.size");
                        pb::TmpfsOpt { size: i64::try_from(*size).unwrap_or(i64::MAX) }
                    });
                    let mount = pb::Mount {
                        dest: m.dest.clone(),
                        mount_type: pb::MountType::Tmpfs as i32,
                        tmpfs_opt,
                        ..Default::default()
                    };
                    plain.push((None, mount, false));
                }
                MountKind::Cache { id, sharing } => {
                    caps.insert("exec.mount.cache");
                    caps.insert("exec.mount.cache.sharing");
                    let sharing = match sharing {
                        CacheSharing::Shared => pb::CacheSharingOpt::Shared,
                        CacheSharing::Private => pb::CacheSharingOpt::Private,
                        CacheSharing::Locked => pb::CacheSharingOpt::Locked,
                    } as i32;
                    let mount = pb::Mount {
                        dest: m.dest.clone(),
                        mount_type: pb::MountType::Cache as i32,
                        cache_opt: Some(pb::CacheOpt { id: id.clone(), sharing }),
                        ..Default::default()
                    };
                    plain.push((None, mount, false));
                }
                MountKind::Secret { id, uid, gid, mode, optional } => {
                    caps.insert("exec.mount.secret");
                    secrets.push(pb::Mount {
                        input: -1,
                        output: -1,
                        dest: m.dest.clone(),
                        mount_type: pb::MountType::Secret as i32,
                        secret_opt: Some(pb::SecretOpt {
                            id: id.clone(),
                            uid: *uid,
                            gid: *gid,
                            mode: *mode,
                            optional: *optional,
                        }),
                        ..Default::default()
                    });
                }
            }
        }
        plain.sort_by(|a, b| a.1.dest.cmp(&b.1.dest));
        let mut next_out = 0i64;
        let mut mounts = Vec::with_capacity(plain.len() + secrets.len());
        for (src, mut m, writable) in plain {
            m.input = -1; // filled at marshal time when there is a source
            m.output = if writable {
                next_out += 1;
                next_out - 1
            } else {
                -1
            };
            mounts.push((src, m));
        }
        mounts.extend(secrets.into_iter().map(|m| (None, m)));
        for (s, target) in o.ssh.iter().zip(ssh_targets) {
            let ssh_opt = pb::SshOpt { id: s.id.clone(), uid: s.uid, gid: s.gid, mode: s.mode, optional: s.optional };
            let mount = pb::Mount {
                input: -1,
                output: -1,
                dest: target,
                mount_type: pb::MountType::Ssh as i32,
                ssh_opt: Some(ssh_opt),
                ..Default::default()
            };
            mounts.push((None, mount));
        }

        let mut constraints = Constraints { ignore_cache: o.ignore_cache, ..Default::default() };
        if let Some(n) = &o.custom_name {
            constraints.description.insert(CUSTOM_NAME_KEY.to_owned(), n.clone());
        }
        constraints.worker_filter = o.worker_selector.iter().map(|(k, v)| format!("{k}=={v}")).collect();
        let network = match o.network {
            Network::Sandbox => pb::NetMode::Unset,
            Network::Host => pb::NetMode::Host,
            Network::None => pb::NetMode::None,
        } as i32;
        let outputs: Vec<(String, i64, bool)> = mounts
            .iter()
            .map(|(_, m)| (m.dest.clone(), m.output, m.mount_type == pb::MountType::Bind as i32))
            .collect();
        let security = match o.security {
            Security::Sandbox => pb::SecurityMode::Sandbox,
            Security::Insecure => pb::SecurityMode::Insecure,
        } as i32;
        let secretenv = o
            .secret_env
            .iter()
            .map(|s| pb::SecretEnv { id: s.id.clone(), name: s.name.clone(), optional: s.optional })
            .collect();
        let node = Arc::new(Node {
            kind: NodeKind::Exec(Box::new(ExecNode { meta, network, mounts, caps, security, secretenv })),
            constraints,
        });
        let out_state = |idx: i64, meta: StateMeta| State {
            output: Some(Output { node: node.clone(), index: idx }),
            meta,
            chain_open: false,
        };
        let root = if o.readonly_rootfs {
            State { chain_open: false, ..self.clone() }
        } else {
            out_state(0, self.meta.clone())
        };
        let mounts = outputs
            .into_iter()
            .filter(|(d, _, _)| d != "/")
            .map(|(d, idx, bind)| {
                let s = (bind && idx >= 0).then(|| out_state(idx, StateMeta::default()));
                (d, s)
            })
            .collect();
        ExecState { root, mounts }
    }

    // -- file ops ------------------------------------------------------------------------------

    fn file_action(&self, action: Action, copy_src: Option<Option<Output>>, caps: &[&'static str]) -> State {
        let chained = match (&self.output, self.chain_open) {
            (Some(out), true) if out.index == 0 => match &out.node.kind {
                NodeKind::File(chain) => Some((chain.clone(), out.node.constraints.clone())),
                _ => None,
            },
            _ => None,
        };
        let (mut chain, constraints) = chained.unwrap_or_else(|| {
            (FileChain { base: self.output.clone(), actions: vec![], caps: BTreeSet::new() }, Constraints::default())
        });
        chain.actions.push((action, copy_src));
        chain.caps.insert("file.base");
        chain.caps.extend(caps.iter().copied());
        State {
            output: Some(Output { node: Arc::new(Node { kind: NodeKind::File(chain), constraints }), index: 0 }),
            meta: self.meta.clone(),
            chain_open: true,
        }
    }

    /// Creates a directory (relative paths join the state's cwd).
    pub fn mkdir(&self, path: impl AsRef<str>, o: MkdirOptions) -> State {
        let a = Action::Mkdir(pb::FileActionMkDir {
            path: normalize_path(self.cwd(), path.as_ref(), false),
            mode: (o.mode & 0o777) as i32,
            make_parents: o.make_parents,
            owner: chown(&o.owner),
            timestamp: o.timestamp.unwrap_or(-1),
        });
        self.file_action(a, None, &[])
    }

    /// Creates a file with `data` and permission bits `mode`.
    pub fn mkfile(&self, path: impl AsRef<str>, mode: u32, data: impl Into<Vec<u8>>, o: MkfileOptions) -> State {
        let a = Action::Mkfile(pb::FileActionMkFile {
            path: normalize_path(self.cwd(), path.as_ref(), false),
            mode: (mode & 0o777) as i32,
            data: data.into(),
            owner: chown(&o.owner),
            timestamp: o.timestamp.unwrap_or(-1),
        });
        self.file_action(a, None, &[])
    }

    /// Removes a path.
    pub fn rm(&self, path: impl AsRef<str>, o: RmOptions) -> State {
        let a = Action::Rm(pb::FileActionRm {
            path: normalize_path(self.cwd(), path.as_ref(), false),
            allow_not_found: o.allow_not_found,
            allow_wildcard: o.allow_wildcard,
        });
        self.file_action(a, None, if o.allow_wildcard { &["file.rm.wildcard"] } else { &[] })
    }

    /// Creates a symlink at `newpath` pointing to `oldpath` (kept verbatim).
    pub fn symlink(&self, oldpath: impl Into<String>, newpath: impl AsRef<str>) -> State {
        let a = Action::Symlink(pb::FileActionSymlink {
            oldpath: oldpath.into(),
            newpath: normalize_path(self.cwd(), newpath.as_ref(), false),
            owner: None,
            timestamp: -1,
        });
        self.file_action(a, None, &["file.symlink.create"])
    }

    /// Copies `src_path` of `src` to `dest_path` of this state. A relative source joins `src`'s
    /// cwd; a relative destination joins this state's cwd (a trailing `/` is kept).
    pub fn copy(&self, src: &State, src_path: impl AsRef<str>, dest_path: impl AsRef<str>, o: CopyOptions) -> State {
        let sp = clean(src_path.as_ref());
        let sp = if sp.starts_with('/') { sp } else { clean(&format!("{}/{sp}", src.cwd())) };
        let has_patterns = !o.include.is_empty() || !o.exclude.is_empty();
        let a = Action::Copy(pb::FileActionCopy {
            src: sp,
            dest: normalize_path(self.cwd(), dest_path.as_ref(), true),
            owner: chown(&o.owner),
            mode: o.mode.map(|m| m as i32).unwrap_or(-1),
            follow_symlink: o.follow_symlinks,
            dir_copy_contents: o.dir_copy_contents,
            attempt_unpack_docker_compatibility: false,
            create_dest_path: o.create_dest_path,
            allow_wildcard: o.allow_wildcard,
            allow_empty_wildcard: o.allow_empty_wildcard,
            timestamp: o.timestamp.unwrap_or(-1),
            include_patterns: o.include,
            exclude_patterns: o.exclude,
            always_replace_existing_dest_paths: false,
        });
        let caps: &[&'static str] = if has_patterns { &["file.copy.includeexcludepatterns"] } else { &[] };
        self.file_action(a, Some(src.output.clone()), caps)
    }

    // -- merge ---------------------------------------------------------------------------------

    /// Stacks `states` (later ones win). Scratch inputs are dropped; none left gives scratch,
    /// one left gives that state (as Go's `llb.Merge`). The result has the first input's meta.
    pub fn merge(states: Vec<State>) -> State {
        let non_scratch: Vec<State> = states.into_iter().filter(|s| s.output.is_some()).collect();
        match non_scratch.len() {
            0 => State::scratch(),
            1 => non_scratch.into_iter().next().unwrap_or_default(),
            _ => {
                let meta = non_scratch[0].meta.clone();
                let outs = non_scratch.into_iter().filter_map(|s| s.output).collect();
                State { meta, ..State::from_node(NodeKind::Merge(outs), Constraints::default()) }
            }
        }
    }

    /// The changes that turn `lower` into `upper` (Go's `llb.Diff`): a scratch `lower` gives
    /// `upper` itself, scratch and scratch give scratch. Deletions are kept as whiteouts, so
    /// merging the diff onto another state deletes there too; exported alone, only what was
    /// added or changed (and its parent directories) is visible.
    pub fn diff(lower: &State, upper: &State) -> State {
        let Some(l) = &lower.output else { return upper.clone() };
        State::from_node(NodeKind::Diff { lower: Some(l.clone()), upper: upper.output.clone() }, Constraints::default())
    }

    // -- marshal -------------------------------------------------------------------------------

    /// Marshals every reachable op once (identical ops deduplicated by digest), inputs before
    /// users, appends the terminal op and validates the result.
    pub fn to_definition(&self) -> Result<Definition> {
        let Some(out) = &self.output else {
            return Definition::from_pb(pb::Definition::default());
        };
        let mut m = Marshaller::default();
        let d = m.marshal(&out.node)?;
        let terminal =
            pb::Op { inputs: vec![pb::Input { digest: d.to_string(), index: out.index }], ..Default::default() };
        let tbytes = encode_op(&terminal);
        let tdig = Digest::of(&tbytes);
        let mut tmeta = pb::OpMetadata::default();
        tmeta.caps.insert("constraints".into(), true);
        tmeta.caps.insert("platform".into(), true);
        for md in m.metadata.values() {
            if md.ignore_cache {
                tmeta.caps.insert("meta.ignorecache".into(), true);
            }
            if !md.description.is_empty() {
                tmeta.caps.insert("meta.description".into(), true);
            }
        }
        let mut def = pb::Definition { def: m.ops, metadata: m.metadata, source: None };
        def.metadata.insert(tdig.to_string(), tmeta);
        def.def.push(tbytes);
        Definition::from_pb(def)
    }
}

/// Encodes an op with fields in field-number order (inputs, payload, platform, constraints), the
/// order Go's protobuf marshaller uses; prost would put the oneof last.
fn encode_op(op: &pb::Op) -> Vec<u8> {
    let mut buf = Vec::new();
    for i in &op.inputs {
        prost::encoding::message::encode(1, i, &mut buf);
    }
    if let Some(o) = &op.op {
        o.encode(&mut buf);
    }
    if let Some(p) = &op.platform {
        prost::encoding::message::encode(10, p, &mut buf);
    }
    if let Some(c) = &op.constraints {
        prost::encoding::message::encode(11, c, &mut buf);
    }
    buf
}

#[derive(Default)]
struct Marshaller {
    memo: HashMap<*const Node, Digest>,
    seen: std::collections::HashSet<Digest>,
    ops: Vec<Vec<u8>>,
    metadata: BTreeMap<String, pb::OpMetadata>,
}

fn children(node: &Node) -> Vec<&Arc<Node>> {
    match &node.kind {
        NodeKind::Source { .. } => vec![],
        NodeKind::Exec(e) => e.mounts.iter().filter_map(|(s, _)| s.as_ref().map(|o| &o.node)).collect(),
        NodeKind::File(f) => {
            let mut v: Vec<&Arc<Node>> = f.base.iter().map(|o| &o.node).collect();
            for (_, src) in &f.actions {
                if let Some(Some(o)) = src {
                    v.push(&o.node);
                }
            }
            v
        }
        NodeKind::Merge(inputs) => inputs.iter().map(|o| &o.node).collect(),
        NodeKind::Diff { lower, upper } => lower.iter().chain(upper.iter()).map(|o| &o.node).collect(),
    }
}

impl Marshaller {
    /// Iterative post-order walk (deep chains must not overflow the stack).
    fn marshal(&mut self, root: &Arc<Node>) -> Result<Digest> {
        let mut stack: Vec<(&Arc<Node>, bool)> = vec![(root, false)];
        while let Some((node, expanded)) = stack.pop() {
            let key = Arc::as_ptr(node);
            if self.memo.contains_key(&key) {
                continue;
            }
            if !expanded {
                stack.push((node, true));
                for c in children(node).into_iter().rev() {
                    if !self.memo.contains_key(&Arc::as_ptr(c)) {
                        stack.push((c, false));
                    }
                }
                continue;
            }
            let d = self.marshal_one(node)?;
            self.memo.insert(key, d);
        }
        self.memo
            .get(&Arc::as_ptr(root))
            .cloned()
            .ok_or_else(|| Error::definition(None, "internal: root not marshalled"))
    }

    fn input(&self, o: &Output) -> pb::Input {
        let d = self.memo.get(&Arc::as_ptr(&o.node)).map(|d| d.to_string()).unwrap_or_default();
        pb::Input { digest: d, index: o.index }
    }

    fn marshal_one(&mut self, node: &Node) -> Result<Digest> {
        let c = &node.constraints;
        let mut op = pb::Op {
            constraints: Some(pb::WorkerConstraints { filter: c.worker_filter.clone() }),
            ..Default::default()
        };
        let platform = || Some(c.platform.clone().unwrap_or_else(host_platform));
        let mut caps: BTreeSet<&str> = BTreeSet::new();
        match &node.kind {
            NodeKind::Source { identifier, attrs, caps: sc, platform_specific } => {
                op.op = Some(pb::op::Op::Source(pb::SourceOp { identifier: identifier.clone(), attrs: attrs.clone() }));
                if *platform_specific {
                    op.platform = platform();
                }
                caps.extend(sc.iter().copied());
            }
            NodeKind::Exec(e) => {
                if e.meta.args.is_empty() {
                    return Err(Error::definition(
                        None,
                        "exec has no args; give ExecOptions::new(args) or ::shell(script)",
                    ));
                }
                let mut dests = std::collections::HashSet::new();
                let mut mounts = Vec::with_capacity(e.mounts.len());
                for (src, m) in &e.mounts {
                    if !dests.insert(m.dest.as_str()) {
                        return Err(Error::definition(None, format!("exec {:?} mounts {} twice", e.meta.args, m.dest)));
                    }
                    let mut m = m.clone();
                    if let Some(o) = src {
                        let inp = self.input(o);
                        m.input = match op.inputs.iter().position(|i| *i == inp) {
                            Some(i) => i as i64,
                            None => {
                                op.inputs.push(inp);
                                op.inputs.len() as i64 - 1
                            }
                        };
                    }
                    mounts.push(m);
                }
                op.op = Some(pb::op::Op::Exec(pb::ExecOp {
                    meta: Some(e.meta.clone()),
                    mounts,
                    network: e.network,
                    security: e.security,
                    secretenv: e.secretenv.clone(),
                }));
                op.platform = platform();
                caps.extend(e.caps.iter().copied());
            }
            NodeKind::File(f) => {
                let add = |inputs: &mut Vec<pb::Input>, o: &Output| -> i64 {
                    let inp = self.input(o);
                    match inputs.iter().position(|i| *i == inp) {
                        Some(i) => i as i64,
                        None => {
                            inputs.push(inp);
                            inputs.len() as i64 - 1
                        }
                    }
                };
                let base = f.base.as_ref().map(|o| add(&mut op.inputs, o)).unwrap_or(-1);
                let secondaries: Vec<i64> = f
                    .actions
                    .iter()
                    .map(|(_, s)| match s {
                        Some(Some(o)) => add(&mut op.inputs, o),
                        _ => -1,
                    })
                    .collect();
                let n_in = op.inputs.len() as i64;
                let last = f.actions.len() - 1;
                let actions = f
                    .actions
                    .iter()
                    .enumerate()
                    .map(|(i, (a, _))| pb::FileAction {
                        input: if i == 0 { base } else { n_in + i as i64 - 1 },
                        secondary_input: secondaries[i],
                        output: if i == last { 0 } else { -1 },
                        action: Some(a.clone()),
                    })
                    .collect();
                op.op = Some(pb::op::Op::File(pb::FileOp { actions }));
                caps.extend(f.caps.iter().copied());
            }
            NodeKind::Merge(inputs) => {
                let mut merge = pb::MergeOp::default();
                for o in inputs {
                    op.inputs.push(self.input(o));
                    merge.inputs.push(pb::MergeInput { input: op.inputs.len() as i64 - 1 });
                }
                // As Go's `MergeOp.Marshal`: a merge is not platform specific.
                op.op = Some(pb::op::Op::Merge(merge));
                caps.insert("mergeop");
            }
            NodeKind::Diff { lower, upper } => {
                // As Go's `DiffOp.Marshal`: no platform, inputs in (lower, upper) order, -1 = scratch.
                let mut diff = pb::DiffOp::default();
                let mut index = |o: &Option<Output>| match o {
                    Some(o) => {
                        op.inputs.push(self.input(o));
                        op.inputs.len() as i64 - 1
                    }
                    None => -1,
                };
                diff.lower = Some(pb::LowerDiffInput { input: index(lower) });
                diff.upper = Some(pb::UpperDiffInput { input: index(upper) });
                op.op = Some(pb::op::Op::Diff(diff));
                caps.insert("diffop");
            }
        }
        let bytes = encode_op(&op);
        let d = Digest::of(&bytes);
        let md = self.metadata.entry(d.to_string()).or_default();
        for cap in caps {
            md.caps.insert(cap.to_owned(), true);
        }
        md.description.extend(c.description.iter().map(|(k, v)| (k.clone(), v.clone())));
        md.ignore_cache |= c.ignore_cache;
        if self.seen.insert(d.clone()) {
            self.ops.push(bytes);
        }
        Ok(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_matches_go() {
        assert_eq!(clean("a/../b"), "b");
        assert_eq!(clean("/../a//b/."), "/a/b");
        assert_eq!(clean(""), ".");
        assert_eq!(clean("../x"), "../x");
        assert_eq!(normalize_path("/work", "out/", true), "/work/out/");
        assert_eq!(normalize_path("/", "/a/.", true), "/a/.");
        assert_eq!(normalize_path("/w", "x/..", false), "/w");
    }

    #[test]
    fn image_refs_normalize() {
        assert_eq!(normalize_image_ref("busybox"), "docker.io/library/busybox:latest");
        assert_eq!(normalize_image_ref("me/app:1"), "docker.io/me/app:1");
        assert_eq!(normalize_image_ref("localhost:5000/a"), "localhost:5000/a:latest");
        let d = format!("reg.io/a@{}", Digest::of(b"x"));
        assert_eq!(normalize_image_ref(&d), d);
    }
}
