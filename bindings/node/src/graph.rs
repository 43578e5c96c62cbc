//! The build graph in JavaScript: `State` (sources, `run`, file actions, merge, metadata),
//! `ExecState`, `Mount` and `Definition`. Thin wrappers over `kiln::graph`; every method returns
//! a new immutable value, exactly like the Rust builder.

use crate::errors;
use kiln::graph::{self as g, OciRef};
use kiln::Digest;
use napi::bindgen_prelude::{Buffer, ClassInstance, Either};
use napi::Env;
use napi_derive::napi;
use std::collections::HashMap;

/// A filesystem state: the output of an op (or scratch) plus env/cwd/user metadata.
#[napi]
#[derive(Clone)]
pub struct State {
    pub(crate) inner: g::State,
}

impl From<g::State> for State {
    fn from(inner: g::State) -> Self {
        State { inner }
    }
}

/// The result of `state.run(...)`: the rootfs after the exec and the outputs of writable binds.
#[napi]
pub struct ExecState {
    inner: g::ExecState,
}

/// An extra mount of `state.run(...)`; made by `mount`, `cacheMount`, `tmpfsMount`, `secretMount`.
#[napi]
#[derive(Clone)]
pub struct Mount {
    inner: g::MountSpec,
}

/// A marshalled, validated build graph (LLB `pb.Definition`).
#[napi]
pub struct Definition {
    pub(crate) inner: g::Definition,
}

/// Options of `state.run(args, options)`.
#[napi(object)]
pub struct RunOptions<'a> {
    /// Working directory for this run (relative paths join the state's cwd).
    pub cwd: Option<String>,
    /// Extra environment for this run only.
    pub env: Option<HashMap<String, String>>,
    /// Extra mounts.
    pub mounts: Option<Vec<ClassInstance<'a, Mount>>>,
    /// Make the root filesystem read-only.
    pub readonly_rootfs: Option<bool>,
    /// Network mode (default `'sandbox'`).
    #[napi(ts_type = "'sandbox' | 'host' | 'none'")]
    pub network: Option<String>,
    /// User to run as.
    pub user: Option<String>,
    /// Hostname inside the container.
    pub hostname: Option<String>,
    /// Display name of the step in progress output.
    pub custom_name: Option<String>,
    /// Never use a cached result of this step.
    pub ignore_cache: Option<bool>,
    /// Run this step only on workers having all these labels (see `engine.workers()`).
    pub worker_selector: Option<HashMap<String, String>>,
}

/// The OCI image config a state carries (`state.imageConfig()`) or a solve overrides
/// (`solve(..., { imageConfig })`): what image exporters write. Missing fields are empty.
#[napi(object)]
#[derive(Clone, Default)]
pub struct ImageConfig {
    /// `Entrypoint`.
    pub entrypoint: Option<Vec<String>>,
    /// `Cmd`.
    pub cmd: Option<Vec<String>>,
    /// `Env` as `KEY=VALUE` strings.
    pub env: Option<Vec<String>>,
    /// `WorkingDir`.
    pub working_dir: Option<String>,
    /// `User`.
    pub user: Option<String>,
    /// `Labels`.
    pub labels: Option<HashMap<String, String>>,
}

impl From<g::ImageConfig> for ImageConfig {
    fn from(c: g::ImageConfig) -> Self {
        ImageConfig {
            entrypoint: c.entrypoint,
            cmd: c.cmd,
            env: Some(c.env),
            working_dir: c.working_dir,
            user: c.user,
            labels: Some(c.labels.into_iter().collect()),
        }
    }
}

impl From<ImageConfig> for g::ImageConfig {
    fn from(c: ImageConfig) -> Self {
        g::ImageConfig {
            entrypoint: c.entrypoint,
            cmd: c.cmd,
            env: c.env.unwrap_or_default(),
            working_dir: c.working_dir,
            user: c.user,
            labels: c.labels.unwrap_or_default().into_iter().collect(),
            ..Default::default()
        }
    }
}

/// Options of `mount(dest, state, options)`.
#[napi(object)]
pub struct BindMountOptions {
    /// Mount read-only (no output is produced).
    pub readonly: Option<bool>,
    /// Mount only this path of the state.
    pub selector: Option<String>,
}

/// Options of `cacheMount(dest, options)`.
#[napi(object)]
pub struct CacheMountOptions {
    /// Cache id (defaults to the destination path).
    pub id: Option<String>,
    /// How concurrent users share it (default `'shared'`).
    #[napi(ts_type = "'shared' | 'private' | 'locked'")]
    pub sharing: Option<String>,
}

/// Options of `tmpfsMount(dest, options)`.
#[napi(object)]
pub struct TmpfsMountOptions {
    /// Size limit in bytes (0 or absent: the runtime default).
    pub size: Option<i64>,
}

/// Options of `secretMount(dest, options)`.
#[napi(object)]
pub struct SecretMountOptions {
    /// Secret id (defaults to the file name of `dest`).
    pub id: Option<String>,
    /// Owner uid (default 0).
    pub uid: Option<u32>,
    /// Owner gid (default 0).
    pub gid: Option<u32>,
    /// File mode (default 0o400).
    pub mode: Option<u32>,
    /// A missing secret is not an error.
    pub optional: Option<bool>,
}

/// Options of `ociLayout(dir, options)`: exactly one of `tag` or `digest` (default tag `latest`).
#[napi(object)]
pub struct OciLayoutOptions {
    /// Tag (the `org.opencontainers.image.ref.name` annotation).
    pub tag: Option<String>,
    /// Manifest or index digest (`sha256:...`).
    pub digest: Option<String>,
}

/// Options of `local(name, options)`.
#[napi(object)]
pub struct LocalOptions {
    /// Include patterns.
    pub include: Option<Vec<String>>,
    /// Exclude patterns.
    pub exclude: Option<Vec<String>>,
    /// Paths whose symlinks are followed.
    pub follow_paths: Option<Vec<String>>,
    /// Shared key hint.
    pub shared_key_hint: Option<String>,
}

/// Options of `http(url, options)`.
#[napi(object)]
pub struct HttpOptions {
    /// Expected digest of the download (`sha256:...`).
    pub checksum: Option<String>,
    /// File name in the result.
    pub filename: Option<String>,
    /// File mode.
    pub perm: Option<u32>,
    /// Owner uid.
    pub uid: Option<u32>,
    /// Owner gid.
    pub gid: Option<u32>,
}

/// Options of `git(url, ref, options)`.
#[napi(object)]
pub struct GitOptions {
    /// Keep the `.git` directory.
    pub keep_git_dir: Option<bool>,
    /// Only this subdirectory.
    pub subdir: Option<String>,
}

/// Numeric owner of created files.
#[napi(object)]
pub struct Owner {
    /// User id.
    pub uid: u32,
    /// Group id.
    pub gid: u32,
}

/// Options of `state.mkdir(path, options)`.
#[napi(object)]
pub struct MkdirOptions {
    /// Permission bits (default 0o755).
    pub mode: Option<u32>,
    /// Create missing parents.
    pub parents: Option<bool>,
    /// Owner.
    pub owner: Option<Owner>,
}

/// Options of `state.mkfile(path, data, options)`.
#[napi(object)]
pub struct MkfileOptions {
    /// Permission bits (default 0o644).
    pub mode: Option<u32>,
    /// Owner.
    pub owner: Option<Owner>,
}

/// Options of `state.rm(path, options)`.
#[napi(object)]
pub struct RmOptions {
    /// A missing path is not an error.
    pub allow_not_found: Option<bool>,
    /// The path is a wildcard pattern.
    pub allow_wildcard: Option<bool>,
}

/// Options of `state.copy(src, srcPath, destPath, options)`.
#[napi(object)]
pub struct CopyOptions {
    /// Follow a symlink at the source path.
    pub follow_symlinks: Option<bool>,
    /// Copy a directory's contents rather than the directory.
    pub dir_copy_contents: Option<bool>,
    /// The source path is a wildcard pattern.
    pub allow_wildcard: Option<bool>,
    /// A wildcard matching nothing is not an error.
    pub allow_empty_wildcard: Option<bool>,
    /// Include patterns.
    pub include: Option<Vec<String>>,
    /// Exclude patterns.
    pub exclude: Option<Vec<String>>,
    /// Create missing parents of the destination.
    pub create_dest_path: Option<bool>,
    /// Owner of copied files.
    pub owner: Option<Owner>,
    /// Mode of copied files.
    pub mode: Option<u32>,
}

fn owner(o: Option<Owner>) -> Option<g::Owner> {
    o.map(|o| g::Owner { uid: o.uid, gid: o.gid })
}

fn parse_digest(env: &Env, key: &str, s: &str) -> napi::Result<Digest> {
    Digest::parse(s).map_err(|_| errors::throw(env, &errors::option(key, s, "a digest like sha256:<64 hex digits>")))
}

// ---------------------------------------------------------------------------------------------
// Sources and free functions

/// The empty filesystem.
#[napi]
pub fn scratch() -> State {
    g::State::scratch().into()
}

/// `docker-image://REF` (normalized: `busybox` → `docker.io/library/busybox:latest`).
#[napi]
pub fn image(reference: String) -> State {
    g::State::image(reference).into()
}

/// An image from an OCI image layout directory on disk, by tag (default `latest`) or digest.
#[napi]
pub fn oci_layout(env: Env, dir: String, options: Option<OciLayoutOptions>) -> napi::Result<State> {
    let o = options.unwrap_or(OciLayoutOptions { tag: None, digest: None });
    let reference = match (o.tag, o.digest) {
        (Some(_), Some(d)) => {
            return Err(errors::throw(&env, &errors::option("digest", &d, "either tag or digest, not both")));
        }
        (_, Some(d)) => OciRef::Digest(parse_digest(&env, "digest", &d)?),
        (Some(t), None) => OciRef::Tag(t),
        (None, None) => OciRef::Tag("latest".into()),
    };
    Ok(g::State::oci_layout(dir, reference).into())
}

/// `local://NAME`: a directory given to `engine.solve` under `locals[name]`.
#[napi]
pub fn local(name: String, options: Option<LocalOptions>) -> State {
    let o = options.map(|o| g::LocalOptions {
        include: o.include.unwrap_or_default(),
        exclude: o.exclude.unwrap_or_default(),
        follow_paths: o.follow_paths.unwrap_or_default(),
        shared_key_hint: o.shared_key_hint,
    });
    g::State::local_with(name, o.unwrap_or_default()).into()
}

/// A file downloaded from `url` (http or https), optionally verified against `checksum`.
#[napi]
pub fn http(env: Env, url: String, options: Option<HttpOptions>) -> napi::Result<State> {
    let mut ho = g::HttpOptions::default();
    if let Some(o) = options {
        ho.checksum = o.checksum.as_deref().map(|c| parse_digest(&env, "checksum", c)).transpose()?;
        ho.filename = o.filename;
        ho.perm = o.perm;
        ho.uid = o.uid;
        ho.gid = o.gid;
    }
    Ok(g::State::http(url, ho).into())
}

/// A git checkout of `ref` (branch, tag or commit; default branch when absent) from `url`.
#[napi]
pub fn git(url: String, reference: Option<String>, options: Option<GitOptions>) -> State {
    let go = options
        .map(|o| g::GitOptions { keep_git_dir: o.keep_git_dir.unwrap_or(false), subdir: o.subdir })
        .unwrap_or_default();
    g::State::git_with(url, reference.unwrap_or_default(), go).into()
}

/// Stacks `states` (later ones win).
#[napi]
pub fn merge(states: Vec<ClassInstance<State>>) -> State {
    g::State::merge(states.iter().map(|s| s.inner.clone()).collect()).into()
}

/// Bind-mounts `state` at `dest`; a writable bind has an output (`execState.mountOutput(dest)`).
#[napi]
pub fn mount(dest: String, state: &State, options: Option<BindMountOptions>) -> Mount {
    let readonly = options.as_ref().and_then(|o| o.readonly).unwrap_or(false);
    let mut m = g::MountSpec::bind(dest, &state.inner, readonly);
    if let Some(sel) = options.and_then(|o| o.selector) {
        m = m.with_selector(sel);
    }
    Mount { inner: m }
}

/// A persistent cache directory at `dest` (`id` defaults to `dest`).
#[napi]
pub fn cache_mount(env: Env, dest: String, options: Option<CacheMountOptions>) -> napi::Result<Mount> {
    let (id, sharing) = options.map(|o| (o.id, o.sharing)).unwrap_or((None, None));
    let sharing = match sharing.as_deref() {
        None | Some("shared") => g::CacheSharing::Shared,
        Some("private") => g::CacheSharing::Private,
        Some("locked") => g::CacheSharing::Locked,
        Some(other) => return Err(errors::throw(&env, &errors::option("sharing", other, "shared, private or locked"))),
    };
    let id = id.unwrap_or_else(|| dest.clone());
    Ok(Mount { inner: g::MountSpec::cache(dest, id, sharing) })
}

/// A tmpfs at `dest`.
#[napi]
pub fn tmpfs_mount(env: Env, dest: String, options: Option<TmpfsMountOptions>) -> napi::Result<Mount> {
    let size = options.and_then(|o| o.size).unwrap_or(0);
    let size = u64::try_from(size)
        .map_err(|_| errors::throw(&env, &errors::option("size", &size.to_string(), "a byte count >= 0")))?;
    Ok(Mount { inner: g::MountSpec::tmpfs(dest, size) })
}

/// Secret `id` (given to `engine.solve` under `secrets[id]`) as a file at `dest`.
#[napi]
pub fn secret_mount(dest: String, options: Option<SecretMountOptions>) -> Mount {
    let o = options.unwrap_or(SecretMountOptions { id: None, uid: None, gid: None, mode: None, optional: None });
    let id = o.id.unwrap_or_else(|| dest.rsplit('/').next().unwrap_or(&dest).to_owned());
    Mount {
        inner: g::MountSpec::secret(
            dest,
            id,
            o.uid.unwrap_or(0),
            o.gid.unwrap_or(0),
            o.mode.unwrap_or(0o400),
            o.optional.unwrap_or(false),
        ),
    }
}

#[napi]
impl Mount {
    /// The mount's destination path.
    #[napi(getter)]
    pub fn dest(&self) -> String {
        self.inner.dest().to_owned()
    }
}

#[napi]
impl ExecState {
    /// The root filesystem after the exec.
    #[napi]
    pub fn root(&self) -> State {
        self.inner.root().into()
    }

    /// The output of the writable bind mount at `dest`, or `null` (readonly, cache, tmpfs,
    /// secret mounts and unknown paths have none).
    #[napi]
    pub fn mount_output(&self, dest: String) -> Option<State> {
        self.inner.mount_output(&dest).map(State::from)
    }
}

#[napi]
impl State {
    /// True when this is the empty filesystem.
    #[napi(getter)]
    pub fn is_scratch(&self) -> bool {
        self.inner.is_scratch()
    }

    /// The working directory later runs use (`/` unless set).
    #[napi(getter)]
    pub fn cwd(&self) -> String {
        self.inner.cwd().to_owned()
    }

    /// The user later runs use, or `null`.
    #[napi(getter)]
    pub fn user(&self) -> Option<String> {
        self.inner.user().map(str::to_owned)
    }

    /// The environment later runs inherit.
    #[napi(getter)]
    pub fn env(&self) -> HashMap<String, String> {
        self.inner.env().iter().cloned().collect()
    }

    /// Runs `args` in a container on this state as rootfs.
    #[napi]
    pub fn run(&self, env: Env, args: Vec<String>, options: Option<RunOptions>) -> napi::Result<ExecState> {
        let mut eo = g::ExecOptions::new(args);
        if let Some(o) = options {
            let mut extra: Vec<(String, String)> = o.env.unwrap_or_default().into_iter().collect();
            // A JS object's key order is not kept by HashMap; sort so the op digest is stable.
            extra.sort();
            eo.env = extra;
            eo.cwd = o.cwd;
            eo.user = o.user;
            eo.hostname = o.hostname;
            eo.mounts = o.mounts.unwrap_or_default().iter().map(|m| m.inner.clone()).collect();
            eo.readonly_rootfs = o.readonly_rootfs.unwrap_or(false);
            eo.network = match o.network.as_deref() {
                None | Some("sandbox") => g::Network::Sandbox,
                Some("host") => g::Network::Host,
                Some("none") => g::Network::None,
                Some(other) => {
                    return Err(errors::throw(&env, &errors::option("network", other, "sandbox, host or none")));
                }
            };
            eo.custom_name = o.custom_name;
            eo.ignore_cache = o.ignore_cache.unwrap_or(false);
            eo.worker_selector = o.worker_selector.unwrap_or_default().into_iter().collect();
        }
        Ok(ExecState { inner: self.inner.run(eo) })
    }

    /// Creates a directory.
    #[napi]
    pub fn mkdir(&self, path: String, options: Option<MkdirOptions>) -> State {
        let mut mo = g::MkdirOptions::default();
        if let Some(o) = options {
            mo.mode = o.mode.unwrap_or(0o755);
            mo.make_parents = o.parents.unwrap_or(false);
            mo.owner = owner(o.owner);
        }
        self.inner.mkdir(path, mo).into()
    }

    /// Creates a file with `data` (a string is written as UTF-8).
    #[napi]
    pub fn mkfile(&self, path: String, data: Either<String, Buffer>, options: Option<MkfileOptions>) -> State {
        let bytes: Vec<u8> = match data {
            Either::A(s) => s.into_bytes(),
            Either::B(b) => b.to_vec(),
        };
        let (mode, own) = options.map(|o| (o.mode.unwrap_or(0o644), owner(o.owner))).unwrap_or((0o644, None));
        self.inner.mkfile(path, mode, bytes, g::MkfileOptions { owner: own, timestamp: None }).into()
    }

    /// Removes a path.
    #[napi]
    pub fn rm(&self, path: String, options: Option<RmOptions>) -> State {
        let ro = options
            .map(|o| g::RmOptions {
                allow_not_found: o.allow_not_found.unwrap_or(false),
                allow_wildcard: o.allow_wildcard.unwrap_or(false),
            })
            .unwrap_or_default();
        self.inner.rm(path, ro).into()
    }

    /// Creates a symlink at `newpath` pointing to `oldpath`.
    #[napi]
    pub fn symlink(&self, oldpath: String, newpath: String) -> State {
        self.inner.symlink(oldpath, newpath).into()
    }

    /// Copies `srcPath` of `src` to `destPath` of this state.
    #[napi]
    pub fn copy(&self, src: &State, src_path: String, dest_path: String, options: Option<CopyOptions>) -> State {
        let mut co = g::CopyOptions::default();
        if let Some(o) = options {
            co.follow_symlinks = o.follow_symlinks.unwrap_or(false);
            co.dir_copy_contents = o.dir_copy_contents.unwrap_or(false);
            co.allow_wildcard = o.allow_wildcard.unwrap_or(false);
            co.allow_empty_wildcard = o.allow_empty_wildcard.unwrap_or(false);
            co.include = o.include.unwrap_or_default();
            co.exclude = o.exclude.unwrap_or_default();
            co.create_dest_path = o.create_dest_path.unwrap_or(false);
            co.owner = owner(o.owner);
            co.mode = o.mode;
        }
        self.inner.copy(&src.inner, src_path, dest_path, co).into()
    }

    /// Sets an environment variable for later runs and the image config.
    #[napi]
    pub fn with_env(&self, key: String, value: String) -> State {
        self.inner.clone().with_env(key, value).into()
    }

    /// Sets the working directory (relative paths join the current one).
    #[napi]
    pub fn with_cwd(&self, dir: String) -> State {
        self.inner.clone().with_cwd(dir).into()
    }

    /// Sets the user for later runs and the image config.
    #[napi]
    pub fn with_user(&self, user: String) -> State {
        self.inner.clone().with_user(user).into()
    }

    /// Sets the hostname for later runs.
    #[napi]
    pub fn with_hostname(&self, hostname: String) -> State {
        self.inner.clone().with_hostname(hostname).into()
    }

    /// Sets the display name of the op producing this state.
    #[napi]
    pub fn with_custom_name(&self, name: String) -> State {
        self.inner.clone().with_custom_name(name).into()
    }

    /// Sets the image config entrypoint.
    #[napi]
    pub fn with_entrypoint(&self, args: Vec<String>) -> State {
        self.inner.clone().with_entrypoint(args).into()
    }

    /// Sets the image config cmd.
    #[napi]
    pub fn with_cmd(&self, args: Vec<String>) -> State {
        self.inner.clone().with_cmd(args).into()
    }

    /// Adds an image config label.
    #[napi]
    pub fn with_label(&self, key: String, value: String) -> State {
        self.inner.clone().with_label(key, value).into()
    }

    /// Adds a metadata description entry (`llb.customname`, ...) to the op producing this state.
    #[napi]
    pub fn with_description(&self, key: String, value: String) -> State {
        self.inner.clone().with_description(key, value).into()
    }

    /// Restricts the op producing this state to workers having all these labels.
    #[napi]
    pub fn with_worker_selector(&self, labels: HashMap<String, String>) -> State {
        self.inner.clone().with_worker_selector(labels.into_iter().collect()).into()
    }

    /// The image config this state carries (env, working dir, user, entrypoint, cmd, labels).
    #[napi]
    pub fn image_config(&self) -> ImageConfig {
        self.inner.image_config().into()
    }

    /// Never use a cached result for the op producing this state.
    #[napi]
    pub fn ignore_cache(&self) -> State {
        self.inner.clone().ignore_cache().into()
    }

    /// Marshals the graph into a validated `Definition`.
    #[napi]
    pub fn to_definition(&self, env: Env) -> napi::Result<Definition> {
        self.inner.to_definition().map(|inner| Definition { inner }).map_err(|e| errors::throw(&env, &e))
    }

    /// The graph as LLB `pb.Definition` protobuf bytes (BuildKit-compatible).
    #[napi]
    pub fn to_bytes(&self, env: Env) -> napi::Result<Buffer> {
        Ok(self.to_definition(env)?.inner.to_bytes().into())
    }
}

#[napi]
impl Definition {
    /// Parses and validates LLB `pb.Definition` protobuf bytes.
    #[napi(factory)]
    pub fn from_bytes(env: Env, bytes: Buffer) -> napi::Result<Definition> {
        g::Definition::from_bytes(&bytes).map(|inner| Definition { inner }).map_err(|e| errors::throw(&env, &e))
    }

    /// The definition as protobuf bytes.
    #[napi]
    pub fn to_bytes(&self) -> Buffer {
        self.inner.to_bytes().into()
    }

    /// Number of ops (including the terminal op).
    #[napi(getter)]
    pub fn length(&self) -> u32 {
        self.inner.len() as u32
    }

    /// The digest of the terminal op, or `null` for an empty definition.
    #[napi(getter)]
    pub fn digest(&self) -> Option<String> {
        self.inner.terminal_digest().map(|d| d.to_string())
    }
}
