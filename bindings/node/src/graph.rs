//! The build graph in JavaScript: `State` (sources, `run`, file actions, merge, metadata),
//! `ExecState`, `Mount` and `Definition`. Thin wrappers over `kiln::graph`; every method returns
//! a new immutable value, exactly like the Rust builder.

use crate::{errors, opts};
use kiln::graph as g;
use kiln::graph::builder as gen;
use napi::bindgen_prelude::{Buffer, Either, Object, Unknown};
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
    pub(crate) inner: g::ExecState,
}

/// An extra mount of `state.run(...)`; made by `mount`, `cacheMount`, `tmpfsMount`, `secretMount`.
#[napi]
#[derive(Clone)]
pub struct Mount {
    pub(crate) inner: g::MountSpec,
}

/// A marshalled, validated build graph (LLB `pb.Definition`).
#[napi]
pub struct Definition {
    pub(crate) inner: g::Definition,
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
    /// `ExposedPorts` (`80/tcp`).
    pub exposed_ports: Option<Vec<String>>,
    /// `Volumes`.
    pub volumes: Option<Vec<String>>,
    /// `StopSignal`.
    pub stop_signal: Option<String>,
    /// `Healthcheck` (Docker extension).
    pub healthcheck: Option<Healthcheck>,
    /// `Shell` (Docker extension).
    pub shell: Option<Vec<String>>,
    /// `OnBuild` triggers (Docker extension).
    pub on_build: Option<Vec<String>>,
    /// Manifest annotations written by image exporters.
    pub annotations: Option<HashMap<String, String>>,
}

/// A container healthcheck (Docker's `Healthcheck`; durations in nanoseconds).
#[napi(object)]
#[derive(Clone)]
pub struct Healthcheck {
    /// The test (`["CMD", ...]`, `["CMD-SHELL", "..."]`, `["NONE"]`).
    pub test: Vec<String>,
    /// Time between checks.
    pub interval: Option<i64>,
    /// Time a check may take.
    pub timeout: Option<i64>,
    /// Start period of the container.
    pub start_period: Option<i64>,
    /// Time between checks during the start period.
    pub start_interval: Option<i64>,
    /// Consecutive failures needed to report unhealthy.
    pub retries: Option<i64>,
}

impl From<g::Healthcheck> for Healthcheck {
    fn from(h: g::Healthcheck) -> Self {
        Healthcheck {
            test: h.test,
            interval: h.interval,
            timeout: h.timeout,
            start_period: h.start_period,
            start_interval: h.start_interval,
            retries: h.retries,
        }
    }
}

impl From<Healthcheck> for g::Healthcheck {
    fn from(h: Healthcheck) -> Self {
        g::Healthcheck {
            test: h.test,
            interval: h.interval,
            timeout: h.timeout,
            start_period: h.start_period,
            start_interval: h.start_interval,
            retries: h.retries,
        }
    }
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
            // The fields beyond the original six appear only when set, so configs that use none
            // of them keep their shape.
            exposed_ports: (!c.exposed_ports.is_empty()).then(|| c.exposed_ports.into_iter().collect()),
            volumes: (!c.volumes.is_empty()).then(|| c.volumes.into_iter().collect()),
            stop_signal: c.stop_signal,
            healthcheck: c.healthcheck.map(Into::into),
            shell: c.shell,
            on_build: c.on_build,
            annotations: (!c.annotations.is_empty()).then(|| c.annotations.into_iter().collect()),
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
            exposed_ports: c.exposed_ports.unwrap_or_default().into_iter().collect(),
            volumes: c.volumes.unwrap_or_default().into_iter().collect(),
            stop_signal: c.stop_signal,
            healthcheck: c.healthcheck.map(Into::into),
            shell: c.shell,
            on_build: c.on_build,
            annotations: c.annotations.unwrap_or_default().into_iter().collect(),
            // ArgsEscaped, author and history are not part of Node's config object.
            ..Default::default()
        }
    }
}

/// A build secret for `engine.solve(..., { secrets: { id: secret } })`: made by `secretFile(path)`
/// (read when the solve starts) or `secretValue(data)`. It never shows its value or path.
#[napi]
pub struct Secret {
    pub(crate) inner: kiln::options::SecretSource,
}

#[napi]
impl Secret {
    /// `'file'` or `'value'`: what the secret is, never its contents.
    #[napi(getter)]
    pub fn kind(&self) -> &'static str {
        match self.inner {
            kiln::options::SecretSource::File(_) => "file",
            kiln::options::SecretSource::Value(_) => "value",
            kiln::options::SecretSource::Env(_) => "env",
        }
    }
}

/// A secret read from the file at `path` when the solve starts (a regular file of at most 500 KiB).
#[napi]
pub fn secret_file(path: String) -> Secret {
    Secret { inner: kiln::options::SecretSource::file(std::path::absolute(&path).unwrap_or_else(|_| path.into())) }
}

/// A secret whose value is `data` (a string is stored as UTF-8; at most 500 KiB).
#[napi]
pub fn secret_value(data: Either<String, Buffer>) -> Secret {
    let bytes = match data {
        Either::A(s) => s.into_bytes(),
        Either::B(b) => b.to_vec(),
    };
    Secret { inner: kiln::options::SecretSource::value(bytes) }
}

// ---------------------------------------------------------------------------------------------
// Sources and free functions

/// The empty filesystem.
#[napi]
pub fn scratch() -> State {
    g::State::scratch().into()
}

/// `docker-image://REF` (normalized: `busybox` → `docker.io/library/busybox:latest`) for
/// `options.platform` (default: the host's). Pure: nothing is fetched and the state carries no
/// config; `engine.image(ref)` resolves the image and inherits its config.
#[napi(ts_args_type = "reference: string, options?: import('./builder').ImageOptions")]
pub fn image(env: Env, reference: String, options: Option<Unknown>) -> napi::Result<State> {
    Ok(g::State::image_with_options(reference, &gen::image_options(opts::open(&env, options))?).into())
}

/// The Dockerfile of the directory `context` (`options.dockerfile`, default `Dockerfile`,
/// relative to it) converted into its target stage's state, which carries the target's image
/// config and can be extended; solve it with `locals: { context: dir }` (`contextName` renames
/// the local). Bases come from named contexts (`contexts: { base: 'local:rootfs' }`) or
/// scratch: registry bases need `engine.dockerfile`, which resolves their configs.
#[napi(ts_args_type = "context: string, options?: import('./builder').DockerfileOptions")]
pub fn dockerfile(env: Env, context: String, options: Option<Unknown>) -> napi::Result<State> {
    let o = gen::dockerfile_options(opts::open(&env, options))?;
    let context = std::path::absolute(&context).unwrap_or_else(|_| context.into());
    kiln::frontend::dockerfile::state_from_dir(&context, &o, None).map(State::from).map_err(|e| errors::throw(&env, &e))
}

/// An image from an OCI image layout directory on disk, by tag (default `latest`) or digest.
#[napi(ts_args_type = "dir: string, options?: import('./builder').OciLayoutOptions")]
pub fn oci_layout(env: Env, dir: String, options: Option<Unknown>) -> napi::Result<State> {
    let o = gen::oci_layout_options(opts::open(&env, options))?;
    let r = o.reference().map_err(|e| errors::throw(&env, &e))?;
    Ok(g::State::oci_layout_with_options(dir, r, &o.image_options()).into())
}

/// `local://NAME`: a directory given to `engine.solve` under `locals[name]`.
#[napi(ts_args_type = "name: string, options?: import('./builder').LocalOptions")]
pub fn local(env: Env, name: String, options: Option<Unknown>) -> napi::Result<State> {
    Ok(g::State::local_with(name, gen::local_options(opts::open(&env, options))?).into())
}

/// A file downloaded from `url` (http or https), optionally verified against `checksum`.
#[napi(ts_args_type = "url: string, options?: import('./builder').HttpOptions")]
pub fn http(env: Env, url: String, options: Option<Unknown>) -> napi::Result<State> {
    Ok(g::State::http(url, gen::http_options(opts::open(&env, options))?).into())
}

/// A git checkout of `ref` (branch, tag or commit; default branch when absent) from `url`.
#[napi(ts_args_type = "url: string, reference?: string | null, options?: import('./builder').GitOptions")]
pub fn git(env: Env, url: String, reference: Option<String>, options: Option<Unknown>) -> napi::Result<State> {
    Ok(g::State::git_with(url, reference.unwrap_or_default(), gen::git_options(opts::open(&env, options))?).into())
}

/// Stacks `states` (later ones win; an `ExecState` stands for its root).
#[napi(ts_args_type = "states: Array<State | ExecState>")]
pub fn merge(env: Env, states: Vec<Unknown>) -> napi::Result<State> {
    let states = states.into_iter().map(|s| opts::state_of(&env, "states", s)).collect::<napi::Result<Vec<_>>>()?;
    Ok(g::State::merge(states).into())
}

/// Bind-mounts `state` at `dest`; a writable bind has an output (`execState.mountOutput(dest)`).
#[napi(ts_args_type = "dest: string, state: State | ExecState, options?: import('./builder').BindMountOptions")]
pub fn mount(env: Env, dest: String, state: Unknown, options: Option<Unknown>) -> napi::Result<Mount> {
    let state = opts::state_of(&env, "state", state)?;
    Ok(Mount { inner: g::MountSpec::bind_with(dest, &state, gen::mount_options(opts::open(&env, options))?) })
}

/// A persistent cache directory at `dest` (`id` defaults to `dest`).
#[napi(ts_args_type = "dest: string, options?: import('./builder').CacheMountOptions")]
pub fn cache_mount(env: Env, dest: String, options: Option<Unknown>) -> napi::Result<Mount> {
    Ok(Mount { inner: g::MountSpec::cache_with(dest, gen::cache_mount_options(opts::open(&env, options))?) })
}

/// A tmpfs at `dest`.
#[napi(ts_args_type = "dest: string, options?: import('./builder').TmpfsMountOptions")]
pub fn tmpfs_mount(env: Env, dest: String, options: Option<Unknown>) -> napi::Result<Mount> {
    Ok(Mount { inner: g::MountSpec::tmpfs_with(dest, gen::tmpfs_mount_options(opts::open(&env, options))?) })
}

/// Secret `id` (given to `engine.solve` under `secrets[id]`; defaults to the file name of `dest`)
/// as a file at `dest`.
#[napi(ts_args_type = "dest: string, options?: import('./builder').SecretMountOptions")]
pub fn secret_mount(env: Env, dest: String, options: Option<Unknown>) -> napi::Result<Mount> {
    let o = gen::secret_mount_options(opts::open(&env, options))?;
    Ok(Mount { inner: g::MountSpec::secret_with(dest, o).map_err(|e| errors::throw(&env, &e))? })
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

    /// The environment later runs inherit, in the order it was set (as Python's list and C's
    /// accessors give it).
    #[napi(getter, ts_return_type = "Record<string, string>")]
    pub fn env<'e>(&self, env: &'e Env) -> napi::Result<Object<'e>> {
        let mut obj = Object::new(env)?;
        for (k, v) in self.inner.env() {
            obj.set(k.as_str(), v.as_str())?;
        }
        Ok(obj)
    }

    /// Runs `args` in a container on this state as rootfs.
    #[napi(ts_args_type = "args: string[], options?: import('./builder').RunOptions")]
    pub fn run(&self, env: Env, args: Vec<String>, options: Option<Unknown>) -> napi::Result<ExecState> {
        let mut o = gen::run_options(opts::open(&env, options))?;
        o.args = args;
        Ok(ExecState { inner: self.inner.try_run(o).map_err(|e| errors::throw(&env, &e))? })
    }

    /// Creates a directory.
    #[napi(ts_args_type = "path: string, options?: import('./builder').MkdirOptions")]
    pub fn mkdir(&self, env: Env, path: String, options: Option<Unknown>) -> napi::Result<State> {
        Ok(self.inner.mkdir(path, gen::mkdir_options(opts::open(&env, options))?).into())
    }

    /// Creates a file with `data` (a string is written as UTF-8).
    #[napi(ts_args_type = "path: string, data: string | Buffer, options?: import('./builder').MkfileOptions")]
    pub fn mkfile(
        &self,
        env: Env,
        path: String,
        data: Either<String, Buffer>,
        options: Option<Unknown>,
    ) -> napi::Result<State> {
        let bytes: Vec<u8> = match data {
            Either::A(s) => s.into_bytes(),
            Either::B(b) => b.to_vec(),
        };
        let (o, mode) = gen::mkfile_options(opts::open(&env, options))?;
        Ok(self.inner.mkfile(path, mode, bytes, o).into())
    }

    /// Removes a path.
    #[napi(ts_args_type = "path: string, options?: import('./builder').RmOptions")]
    pub fn rm(&self, env: Env, path: String, options: Option<Unknown>) -> napi::Result<State> {
        Ok(self.inner.rm(path, gen::rm_options(opts::open(&env, options))?).into())
    }

    /// Creates a symlink at `newpath` pointing to `oldpath`.
    #[napi]
    pub fn symlink(&self, oldpath: String, newpath: String) -> State {
        self.inner.symlink(oldpath, newpath).into()
    }

    /// Copies `srcPath` of `src` to `destPath` of this state.
    #[napi(
        ts_args_type = "src: State | ExecState, srcPath: string, destPath: string, options?: import('./builder').CopyOptions"
    )]
    pub fn copy(
        &self,
        env: Env,
        src: Unknown,
        src_path: String,
        dest_path: String,
        options: Option<Unknown>,
    ) -> napi::Result<State> {
        let src = opts::state_of(&env, "src", src)?;
        Ok(self.inner.copy(&src, src_path, dest_path, gen::copy_options(opts::open(&env, options))?).into())
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

    /// Adds an exposed port to the image config (`80/tcp`, `53/udp`; a bare number means tcp).
    #[napi]
    pub fn with_exposed_port(&self, port: String) -> State {
        self.inner.clone().with_exposed_port(port).into()
    }

    /// Adds a volume to the image config.
    #[napi]
    pub fn with_volume(&self, path: String) -> State {
        self.inner.clone().with_volume(path).into()
    }

    /// Sets the image config stop signal (`SIGTERM`).
    #[napi]
    pub fn with_stop_signal(&self, signal: String) -> State {
        self.inner.clone().with_stop_signal(signal).into()
    }

    /// Sets the image config shell (Dockerfile `SHELL`).
    #[napi]
    pub fn with_shell(&self, args: Vec<String>) -> State {
        self.inner.clone().with_shell(args).into()
    }

    /// Adds a manifest annotation written by image exporters.
    #[napi]
    pub fn with_annotation(&self, key: String, value: String) -> State {
        self.inner.clone().with_annotation(key, value).into()
    }

    /// Applies a whole image config, as a base image's config is inherited.
    #[napi]
    pub fn with_image_config(&self, config: ImageConfig) -> State {
        self.inner.clone().with_image_config(&config.into()).into()
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
