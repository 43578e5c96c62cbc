//! `Engine` in JavaScript: opens a root, solves graphs on napi's tokio runtime (the JS thread
//! never blocks), forwards progress through a non-blocking threadsafe function, cancels on an
//! `AbortSignal` (settling after the cancelled solve's cleanup), and reports disk usage, prune results and workers.

use crate::errors;
use crate::graph::{Definition, ExecState, ImageConfig, State};
use kiln::solver::display::{DisplayMode, StderrDisplay};
use kiln::solver::{ProgressEvent as CoreEvent, ProgressSink};
use kiln::{Error, SnapshotterKind};
use napi::bindgen_prelude::JsObjectValue;
use napi::bindgen_prelude::{Either, Either3, Function, Object, PromiseRaw, Unknown};
use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};
use napi::{Env, Status};
use napi_derive::napi;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// Options of `new Engine(options)`.
#[napi(object)]
pub struct EngineOptions {
    /// The root directory owning all state (default: `$XDG_DATA_HOME/kiln`, `/var/lib/kiln` as
    /// root, else `~/.local/share/kiln`).
    pub root: Option<String>,
    /// Maximum steps executing at once (default: CPUs, at least 2).
    pub parallelism: Option<u32>,
    /// OCI runtime binary (default `runc`).
    pub runtime: Option<String>,
    /// Snapshotters to try in order (default `['overlayfs', 'native']`).
    #[napi(ts_type = "Array<'overlayfs' | 'native'>")]
    pub snapshotters: Option<Vec<String>>,
}

/// One progress event of a solve, as a plain object.
#[napi(object)]
#[derive(Clone)]
pub struct ProgressEvent {
    /// What happened.
    #[napi(
        js_name = "type",
        ts_type = "'vertex_started' | 'vertex_cached' | 'vertex_completed' | 'vertex_error' | 'log' | 'status' | 'warning'"
    )]
    pub kind: String,
    /// Op digest (`sha256:...`), or an exporter id for `status`.
    pub vertex: Option<String>,
    /// Display name of the vertex.
    pub name: Option<String>,
    /// Execution time in seconds (`vertex_completed`), as core and every face report it.
    pub duration: Option<f64>,
    /// `stdout` or `stderr` (`log`).
    #[napi(ts_type = "'stdout' | 'stderr'")]
    pub stream: Option<String>,
    /// Output text, lossy UTF-8 (`log`).
    pub data: Option<String>,
    /// Error message (`vertex_error`).
    pub error: Option<String>,
    /// What is being counted (`status`).
    pub id: Option<String>,
    /// Bytes done (`status`).
    pub current: Option<f64>,
    /// Total bytes when known (`status`).
    pub total: Option<f64>,
    /// Warning text (`warning`).
    pub message: Option<String>,
}

impl From<CoreEvent> for ProgressEvent {
    fn from(e: CoreEvent) -> Self {
        let f = e.fields();
        ProgressEvent {
            kind: f.kind.to_owned(),
            vertex: f.vertex,
            name: f.name,
            duration: f.duration,
            stream: f.stream.map(str::to_owned),
            data: f.data.map(|d| String::from_utf8_lossy(&d).into_owned()),
            error: f.error,
            id: f.id,
            current: f.current.map(|c| c as f64),
            total: f.total.map(|t| t as f64),
            message: f.message,
        }
    }
}

/// The JS progress callback: called on the JS thread, never blocking the solve.
type ProgressFn = ThreadsafeFunction<ProgressEvent, (), ProgressEvent, Status, false>;

/// The keys of [`SolveOptions`] (camelCase), which `engine.solve` and `engine.build` accept.
pub(crate) const SOLVE_KEYS: &[&str] = &[
    "locals",
    "outputs",
    "cacheExports",
    "cacheImports",
    "secrets",
    "onProgress",
    "progress",
    "imageConfig",
    "sourceDateEpoch",
    "platform",
    "ssh",
    "allow",
    "signal",
];

/// The frontend's keys, accepted beside [`SOLVE_KEYS`] by `engine.solve({ frontend,
/// frontendOpts, ... })` and `engine.build(fn, { frontendOpts, ... })`.
pub(crate) const FRONTEND_KEYS: &[&str] = &["frontend", "frontendOpts"];

/// Options of `engine.solve(state, options)`.
#[napi(object, object_to_js = false)]
pub struct SolveOptions<'a> {
    /// Local directories by name (`local(name)` sources).
    pub locals: Option<HashMap<String, String>>,
    /// Result exporters in CSV form (`type=local,dest=out`, `type=oci,dest=img.tar`, ...).
    pub outputs: Option<Vec<String>>,
    /// Cache exporters in CSV form (`type=local,dest=DIR,mode=max`, `type=registry,ref=...`).
    pub cache_exports: Option<Vec<String>>,
    /// Cache importers in CSV form (`type=local,src=DIR`, `type=registry,ref=...`).
    pub cache_imports: Option<Vec<String>>,
    /// Secrets by id (`secretMount`): `secretFile(path)` or `secretValue(data)`; never cached or
    /// exported. A plain string or Buffer is refused (KILN_OPTION_INVALID), never guessed.
    #[napi(ts_type = "Record<string, Secret>")]
    pub secrets: Option<Object<'a>>,
    /// Called with every progress event (on the JS thread, asynchronously).
    #[napi(ts_type = "(event: ProgressEvent) => void")]
    pub on_progress: Option<ProgressFn>,
    /// A built-in display on stderr (default `'quiet'`: Node code usually takes events through
    /// `onProgress`): `'auto'` (live view on a terminal, else plain lines), `'tty'`, `'plain'`
    /// (buildctl-style lines), `'rawjson'` (one JSON object per event) or `'quiet'`. Works
    /// together with `onProgress`.
    #[napi(ts_type = "'auto' | 'tty' | 'plain' | 'rawjson' | 'quiet'")]
    pub progress: Option<String>,
    /// The image config image exporters write (default: the solved state's own, from `withEnv`,
    /// `withCwd`, `withCmd`, ...; a `Definition` has none).
    pub image_config: Option<ImageConfig>,
    /// `SOURCE_DATE_EPOCH` (Unix seconds): image exports clamp file times and `created` to it,
    /// so fresh roots export the same digest.
    pub source_date_epoch: Option<i64>,
    /// The build platform `os/arch[/variant]` (default: the host's; another one is refused:
    /// kiln has no emulation); image exports record it.
    pub platform: Option<String>,
    /// SSH agent sockets by id for `ssh` mounts (`RUN --mount=type=ssh`; id `default` unless the
    /// mount names one), e.g. `{ default: process.env.SSH_AUTH_SOCK }`.
    pub ssh: Option<HashMap<String, String>>,
    /// Entitlements granted to the solve: `'network.host'`, `'security.insecure'`.
    pub allow: Option<Vec<String>>,
    /// Aborting it cancels the solve: the promise rejects with code `KILN_CANCELLED` once the
    /// solve's containers are killed and its mounts and snapshots released.
    #[napi(ts_type = "AbortSignal")]
    pub signal: Option<Object<'a>>,
}

/// What a solve did.
#[napi(object)]
pub struct SolveResult {
    /// Exporter metadata (e.g. `containerimage.digest`).
    pub exporter_response: HashMap<String, String>,
    /// Steps whose result came from a cache.
    pub cached: u32,
    /// Steps that executed.
    pub executed: u32,
}

impl From<kiln::SolveResult> for SolveResult {
    fn from(res: kiln::SolveResult) -> Self {
        SolveResult {
            exporter_response: res.exporter_response.into_iter().collect(),
            cached: res.cached as u32,
            executed: res.executed as u32,
        }
    }
}

/// A worker: name and labels.
#[napi(object)]
pub struct WorkerInfo {
    /// Worker name (`runc-overlayfs`).
    pub name: String,
    /// Labels (`executor`, `snapshotter`, `hostname`, ...).
    pub labels: HashMap<String, String>,
}

/// One cache record of `engine.diskUsage()`.
#[napi(object)]
pub struct UsageRecord {
    /// Snapshot id.
    pub id: String,
    /// Worker holding it.
    pub worker: String,
    /// The step that made it.
    pub description: String,
    /// Bytes of its own data.
    pub size: f64,
    /// Unix seconds of last use.
    pub last_used: f64,
    /// BuildKit's record type: `'regular'` (a step's snapshot) or `'exec.cachemount'`.
    pub record_type: String,
}

/// Options of `engine.prune(options)`.
#[napi(object)]
pub struct PruneOptions {
    /// Remove least recently used records until at most this many bytes remain (default 0).
    pub keep_bytes: Option<f64>,
    /// Remove everything.
    pub all: Option<bool>,
}

/// What a prune removed.
#[napi(object)]
pub struct PruneReport {
    /// Snapshots removed.
    pub removed: u32,
    /// Bytes freed.
    pub freed_bytes: f64,
}

/// TLS settings of `connect` (tcp:// addresses only), as buildctl's `--tlscacert`, `--tlscert`,
/// `--tlskey` and `--tlsservername`.
#[napi(object)]
pub struct ConnectOptions {
    /// PEM file of the CA the daemon's certificate must chain to.
    pub ca_cert: Option<String>,
    /// PEM file of the client certificate, for daemons that require one.
    pub cert: Option<String>,
    /// PEM file of the client certificate's key.
    pub key: Option<String>,
    /// The name the daemon's certificate must carry (default: the address's host).
    pub server_name: Option<String>,
}

/// An `Engine` that builds on the daemon at `addr` (`unix:///path/to.sock` or `tcp://host:port`):
/// `kiln serve` or a BuildKit daemon. Replace `new Engine({ root })` with `await connect(addr)` to
/// move a script's builds to a daemon: locals and secrets are read here, `local`/`tar`/`oci`
/// outputs are written here. Rejects with a `KilnError` when the daemon cannot be reached.
#[napi(ts_return_type = "Promise<Engine>")]
pub fn connect<'env>(
    env: &'env Env,
    addr: String,
    #[napi(ts_arg_type = "ConnectOptions")] options: Option<Unknown<'env>>,
) -> napi::Result<PromiseRaw<'env, Engine>> {
    let o: Option<ConnectOptions> =
        crate::opts::strict(env, options, "connect", &["caCert", "cert", "key", "serverName"])?;
    let o = o.unwrap_or(ConnectOptions { ca_cert: None, cert: None, key: None, server_name: None });
    let tls = kiln::client::TlsOptions {
        ca_cert: o.ca_cert.map(PathBuf::from),
        cert: o.cert.map(PathBuf::from),
        key: o.key.map(PathBuf::from),
        server_name: o.server_name,
    };
    let opts = kiln::client::ConnectOptions { tls };
    env.spawn_future_with_callback(async move { Ok(kiln::Engine::connect(&addr, &opts).await) }, |env, r| match r {
        Ok(engine) => Ok(Engine { inner: Mutex::new(Some(engine)) }),
        Err(e) => Err(errors::throw(env, &e)),
    })
}

/// An open build engine on one root (exclusive: a second opener gets `KILN_ROOT_IN_USE`), or
/// one connected to a daemon (`connect`).
#[napi]
pub struct Engine {
    inner: Mutex<Option<kiln::Engine>>,
}

/// The options of `engine.solve` or `engine.build`, read on the JS thread (the `AbortSignal`
/// hooked to `cancel`, secrets and the display mode checked) and turned into kiln's
/// `SolveOptions` on the runtime by [`RunOptions::into_core`]: the one conversion both share.
pub(crate) struct RunOptions {
    locals: HashMap<String, String>,
    outputs: Vec<String>,
    cache_exports: Vec<String>,
    cache_imports: Vec<String>,
    secrets: Vec<(String, kiln::options::SecretSource)>,
    on_progress: Option<ProgressFn>,
    display_mode: DisplayMode,
    image_config: Option<ImageConfig>,
    source_date_epoch: Option<i64>,
    platform: Option<String>,
    ssh: HashMap<String, String>,
    allow: Vec<String>,
    cancel: kiln::CancelToken,
    pre_aborted: bool,
}

/// The JS progress callback as the progress sink holds it. [`ProgressSlot::close`] drops it when
/// the solve or build has returned: events already queued are still delivered, later ones go
/// nowhere, and JS objects that outlive a build (a `Ref`, its `BuildContext`, which keep the
/// build's session and so its sink) do not keep Node's event loop alive through the callback.
#[derive(Clone, Default)]
pub(crate) struct ProgressSlot(Arc<Mutex<Option<ProgressFn>>>);

impl ProgressSlot {
    /// Releases the callback. Idempotent.
    pub(crate) fn close(&self) {
        let f = self.0.lock().unwrap_or_else(|p| p.into_inner()).take();
        drop(f);
    }
}

/// kiln's solve options made from [`RunOptions`], and the stderr display they feed.
pub(crate) struct CoreRunOptions {
    pub opts: kiln::SolveOptions,
    pub display: Option<StderrDisplay>,
    /// The JS progress callback; close it once the solve or build has returned.
    pub progress: ProgressSlot,
    /// True when the caller gave `imageConfig` (it then wins over a state's own config).
    pub explicit_image_config: bool,
}

impl RunOptions {
    /// Reads `options` (must run on the JS thread).
    pub(crate) fn read(env: &Env, options: Option<SolveOptions>) -> napi::Result<RunOptions> {
        let mut r = RunOptions {
            locals: HashMap::new(),
            outputs: Vec::new(),
            cache_exports: Vec::new(),
            cache_imports: Vec::new(),
            secrets: Vec::new(),
            on_progress: None,
            display_mode: DisplayMode::Quiet,
            image_config: None,
            source_date_epoch: None,
            platform: None,
            ssh: HashMap::new(),
            allow: Vec::new(),
            cancel: kiln::CancelToken::new(),
            pre_aborted: false,
        };
        if let Some(o) = options {
            r.source_date_epoch = o.source_date_epoch;
            r.platform = o.platform;
            r.ssh = o.ssh.unwrap_or_default();
            r.allow = o.allow.unwrap_or_default();
            if let Some(sig) = &o.signal {
                r.pre_aborted = watch_signal(env, sig, r.cancel.clone())?;
            }
            r.locals = o.locals.unwrap_or_default();
            r.outputs = o.outputs.unwrap_or_default();
            r.cache_exports = o.cache_exports.unwrap_or_default();
            r.cache_imports = o.cache_imports.unwrap_or_default();
            if let Some(obj) = &o.secrets {
                r.secrets = crate::opts::secrets_of(env, obj)?;
            }
            r.on_progress = o.on_progress;
            if let Some(m) = &o.progress {
                r.display_mode = m.parse().map_err(|e| errors::throw(env, &e))?;
            }
            r.image_config = o.image_config;
        }
        Ok(r)
    }

    /// kiln's solve options (on the runtime: secrets are loaded here). `Cancelled` when the
    /// signal was aborted before the call. The cancel token is set: an abort makes the solve or
    /// build return `Cancelled` once its own steps have cleaned up (no container or mount outlives
    /// the rejection), without waiting for other solves of the engine.
    pub(crate) fn into_core(self) -> kiln::Result<CoreRunOptions> {
        if self.pre_aborted {
            return Err(Error::Cancelled);
        }
        let mut so = kiln::SolveOptions::default();
        for (name, dir) in self.locals {
            so = so.local(name, PathBuf::from(dir));
        }
        for o in &self.outputs {
            so = so.output(o)?;
        }
        for c in &self.cache_exports {
            so = so.cache_export(c)?;
        }
        for c in &self.cache_imports {
            so = so.cache_import(c)?;
        }
        so.secrets = kiln::options::load_secrets(self.secrets.iter().map(|(id, s)| (id.as_str(), s)))?;
        so.source_date_epoch = self.source_date_epoch;
        if let Some(p) = &self.platform {
            so = so.platform(p)?;
        }
        for (id, socket) in self.ssh {
            so = so.ssh(id, PathBuf::from(socket));
        }
        for name in &self.allow {
            so = so.allow(name.parse()?);
        }
        let explicit_image_config = self.image_config.is_some();
        if let Some(c) = self.image_config {
            so.image_config = c.into();
        }
        let progress = ProgressSlot::default();
        if let Some(f) = self.on_progress {
            *progress.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(f);
            let slot = progress.clone();
            so.progress = ProgressSink::new(move |e| {
                if let Some(f) = &*slot.0.lock().unwrap_or_else(|p| p.into_inner()) {
                    // NonBlocking: a slow JS callback queues events instead of stalling the solve.
                    let _ = f.call(ProgressEvent::from(e), ThreadsafeFunctionCallMode::NonBlocking);
                }
            });
        }
        let display = StderrDisplay::new(self.display_mode);
        if let Some(d) = &display {
            so.progress = so.progress.tee(d.sink());
        }
        so.cancel = Some(self.cancel);
        Ok(CoreRunOptions { opts: so, display, progress, explicit_image_config })
    }
}

impl Engine {
    pub(crate) fn get(&self) -> kiln::Result<kiln::Engine> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).clone().ok_or_else(Error::engine_closed)
    }
}

/// `AbortSignal.prototype.addEventListener` as called here: `(type, listener)`.
type AddListener<'a> = Function<'a, napi::bindgen_prelude::FnArgs<(&'a str, Function<'a, (), ()>)>, ()>;

/// Hooks `signal` ('abort' event) to the solve's `cancel` token; returns true when it is already
/// aborted.
fn watch_signal(env: &Env, signal: &Object, cancel: kiln::CancelToken) -> napi::Result<bool> {
    if signal.get::<bool>("aborted")?.unwrap_or(false) {
        return Ok(true);
    }
    let listener = env.create_function_from_closure::<(), (), _>("onKilnAbort", move |_ctx| {
        cancel.cancel();
        Ok(())
    })?;
    let add: AddListener<'_> = signal.get_named_property("addEventListener")?;
    add.apply(signal, ("abort", listener).into())?;
    Ok(false)
}

#[napi]
impl Engine {
    /// Opens (creating if needed) the root. Throws `KILN_ROOT_IN_USE` if another engine holds it.
    #[napi(constructor)]
    pub fn new(env: Env, #[napi(ts_arg_type = "EngineOptions")] options: Option<Unknown>) -> napi::Result<Self> {
        let options: Option<EngineOptions> =
            crate::opts::strict(&env, options, "new Engine", &["root", "parallelism", "runtime", "snapshotters"])?;
        let o = options.unwrap_or(EngineOptions { root: None, parallelism: None, runtime: None, snapshotters: None });
        let mut eo =
            kiln::EngineOptions::new(o.root.map(PathBuf::from).unwrap_or_else(kiln::EngineOptions::default_root));
        if let Some(p) = o.parallelism {
            eo.parallelism = p.max(1) as usize;
        }
        if let Some(r) = o.runtime {
            eo.runtime = r;
        }
        if let Some(s) = o.snapshotters {
            eo.snapshotters = s
                .iter()
                .map(|k| k.parse::<SnapshotterKind>())
                .collect::<kiln::Result<_>>()
                .map_err(|e| errors::throw(&env, &e))?;
        }
        let engine = kiln::Engine::open(eo).map_err(|e| errors::throw(&env, &e))?;
        Ok(Engine { inner: Mutex::new(Some(engine)) })
    }

    /// The root directory (canonical path; `null` for an engine connected to a daemon).
    #[napi(getter)]
    pub fn root(&self, env: Env) -> napi::Result<Option<String>> {
        let e = self.get().map_err(|e| errors::throw(&env, &e))?;
        Ok(e.address().is_none().then(|| e.root().to_string_lossy().into_owned()))
    }

    /// The daemon's address for a connected engine (`null` for an embedded one).
    #[napi(getter)]
    pub fn address(&self, env: Env) -> napi::Result<Option<String>> {
        let e = self.get().map_err(|e| errors::throw(&env, &e))?;
        Ok(e.address().map(str::to_owned))
    }

    /// Releases this handle; the root lock goes when running solves finish. Idempotent.
    #[napi]
    pub fn close(&self) {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).take();
    }

    /// The workers, default first.
    #[napi]
    pub fn workers(&self, env: Env) -> napi::Result<Vec<WorkerInfo>> {
        let e = self.get().map_err(|e| errors::throw(&env, &e))?;
        Ok(e.workers()
            .into_iter()
            .map(|w| WorkerInfo { name: w.name, labels: w.labels.into_iter().collect() })
            .collect())
    }

    /// Containers the runtime still knows about (for leak checks).
    #[napi]
    pub fn running_containers(&self, env: Env) -> napi::Result<Vec<String>> {
        let e = self.get().map_err(|e| errors::throw(&env, &e))?;
        e.running_containers().map_err(|e| errors::throw(&env, &e))
    }

    /// Solves `state` (or a `Definition`) and runs the exporters. Rejects with a `KilnError`.
    #[napi(ts_return_type = "Promise<SolveResult>")]
    pub fn solve<'env>(
        &self,
        env: &'env Env,
        #[napi(ts_arg_type = "State | ExecState | Definition")] state: Either3<&State, &ExecState, &Definition>,
        #[napi(ts_arg_type = "SolveOptions")] options: Option<Unknown<'env>>,
    ) -> napi::Result<PromiseRaw<'env, SolveResult>> {
        let options = crate::opts::strict(env, options, "engine.solve", SOLVE_KEYS)?;
        let engine = self.get();
        let graph = match state {
            Either3::A(s) => Either::A(s.inner.clone()),
            Either3::B(x) => Either::A(x.inner.root()),
            Either3::C(d) => Either::B(d.inner.clone()),
        };
        let run = RunOptions::read(env, options)?;
        let fut = async move {
            let engine = engine?;
            let CoreRunOptions { mut opts, display, progress, explicit_image_config } = run.into_core()?;
            let def = match graph {
                Either::A(s) => {
                    if !explicit_image_config {
                        opts.image_config = s.image_config();
                    }
                    s.to_definition()?
                }
                Either::B(d) => d,
            };
            let r = engine.solve(&def, opts).await;
            progress.close();
            if let Some(d) = &display {
                d.finish();
            }
            if matches!(&r, Err(Error::Cancelled)) {
                tracing::debug!("solve cancelled by AbortSignal");
            }
            r
        };
        env.spawn_future_with_callback(async move { Ok(fut.await) }, |env, r| match r {
            Ok(res) => Ok(SolveResult::from(res)),
            Err(e) => Err(errors::throw(env, &e)),
        })
    }

    /// The registry image `reference` resolved through this engine (its registry options and
    /// `~/.docker/config.json` credentials; loopback registries over plain http): the state
    /// carries the image's config (env, working dir, user, entrypoint, cmd, labels, ports, ...),
    /// later runs use it and image exports keep it.
    #[napi(
        ts_args_type = "reference: string, options?: import('./builder').ImageOptions",
        ts_return_type = "Promise<State>"
    )]
    pub fn image<'env>(
        &self,
        env: &'env Env,
        reference: String,
        options: Option<napi::bindgen_prelude::Unknown>,
    ) -> napi::Result<PromiseRaw<'env, State>> {
        let engine = self.get();
        let o = kiln::graph::builder::image_options(crate::opts::open(env, options))?;
        env.spawn_future_with_callback(
            async move { Ok(async move { engine?.image(&reference, &o).await }.await) },
            |env, r| r.map(State::from).map_err(|e| errors::throw(env, &e)),
        )
    }

    /// The Dockerfile of the directory `context` converted into its target stage's state, base
    /// images resolved through this engine (like `engine.image`): `dockerfile(...)` with registry
    /// and OCI-layout bases.
    #[napi(
        ts_args_type = "context: string, options?: import('./builder').DockerfileOptions",
        ts_return_type = "Promise<State>"
    )]
    pub fn dockerfile<'env>(
        &self,
        env: &'env Env,
        context: String,
        options: Option<napi::bindgen_prelude::Unknown>,
    ) -> napi::Result<PromiseRaw<'env, State>> {
        let engine = self.get();
        let o = kiln::graph::builder::dockerfile_options(crate::opts::open(env, options))?;
        let context = std::path::absolute(&context).unwrap_or_else(|_| PathBuf::from(&context));
        env.spawn_future_with_callback(
            async move { Ok(async move { engine?.dockerfile(context, &o).await }.await) },
            |env, r| r.map(State::from).map_err(|e| errors::throw(env, &e)),
        )
    }

    /// The native half of `engine.solve({ frontend, frontendOpts, ... })` (index.js): builds with
    /// a built-in frontend (`Engine::build_frontend`).
    #[napi(js_name = "_solveFrontend", skip_typescript)]
    pub fn solve_frontend<'env>(
        &self,
        env: &'env Env,
        frontend: String,
        options: Option<Unknown<'env>>,
        frontend_opts: Option<HashMap<String, String>>,
    ) -> napi::Result<PromiseRaw<'env, SolveResult>> {
        let options = crate::opts::strict(env, options, "engine.solve", &[SOLVE_KEYS, FRONTEND_KEYS].concat())?;
        let engine = self.get();
        let run = RunOptions::read(env, options)?;
        let attrs = frontend_opts.unwrap_or_default().into_iter().collect();
        let fut = async move {
            let engine = engine?;
            let CoreRunOptions { opts, display, progress, .. } = run.into_core()?;
            let bo = kiln::engine::BuildOptions { solve: opts, frontend_attrs: attrs };
            let r = engine.build_frontend(&frontend, bo).await;
            progress.close();
            if let Some(d) = &display {
                d.finish();
            }
            r
        };
        env.spawn_future_with_callback(async move { Ok(fut.await) }, |env, r| match r {
            Ok(res) => Ok(SolveResult::from(res)),
            Err(e) => Err(errors::throw(env, &e)),
        })
    }

    /// The image of the OCI layout at `dir` (by `tag`, default `latest`, or `digest`) resolved
    /// through this engine: the state carries the image's config, like `engine.image`.
    #[napi(
        ts_args_type = "dir: string, options?: import('./builder').OciLayoutOptions",
        ts_return_type = "Promise<State>"
    )]
    pub fn oci_layout<'env>(
        &self,
        env: &'env Env,
        dir: String,
        options: Option<napi::bindgen_prelude::Unknown>,
    ) -> napi::Result<PromiseRaw<'env, State>> {
        let engine = self.get();
        let o = kiln::graph::builder::oci_layout_options(crate::opts::open(env, options))?;
        let r = o.reference().map_err(|e| errors::throw(env, &e))?;
        let dir = std::path::absolute(&dir).unwrap_or_else(|_| PathBuf::from(&dir));
        env.spawn_future_with_callback(
            async move { Ok(async move { engine?.oci_layout(dir, r, &o.image_options()).await }.await) },
            |env, r| r.map(State::from).map_err(|e| errors::throw(env, &e)),
        )
    }

    /// Cache records and their sizes.
    #[napi(ts_return_type = "Promise<UsageRecord[]>")]
    pub fn disk_usage<'env>(&self, env: &'env Env) -> napi::Result<PromiseRaw<'env, Vec<UsageRecord>>> {
        let engine = self.get();
        env.spawn_future_with_callback(async move { Ok(async move { engine?.disk_usage().await }.await) }, |env, r| {
            match r {
                Ok(v) => Ok(v
                    .into_iter()
                    .map(|u| UsageRecord {
                        id: u.id,
                        worker: u.worker,
                        description: u.description,
                        size: u.size as f64,
                        last_used: u.last_used as f64,
                        record_type: u.record_type,
                    })
                    .collect()),
                Err(e) => Err(errors::throw(env, &e)),
            }
        })
    }

    /// Removes cache records (least recently used first) down to `keepBytes`, or all of them.
    #[napi(ts_return_type = "Promise<PruneReport>")]
    pub fn prune<'env>(
        &self,
        env: &'env Env,
        #[napi(ts_arg_type = "PruneOptions")] options: Option<Unknown<'env>>,
    ) -> napi::Result<PromiseRaw<'env, PruneReport>> {
        let options: Option<PruneOptions> = crate::opts::strict(env, options, "engine.prune", &["keepBytes", "all"])?;
        let engine = self.get();
        let keep = options.as_ref().and_then(|o| o.keep_bytes).unwrap_or(0.0).max(0.0) as u64;
        let all = options.and_then(|o| o.all).unwrap_or(false);
        env.spawn_future_with_callback(
            async move { Ok(async move { engine?.prune(keep, all).await }.await) },
            |env, r| match r {
                Ok(p) => Ok(PruneReport { removed: p.removed as u32, freed_bytes: p.freed_bytes as f64 }),
                Err(e) => Err(errors::throw(env, &e)),
            },
        )
    }
}
