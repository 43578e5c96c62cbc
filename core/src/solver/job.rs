//! What a solve is asked to do and what it reports: [`SolveOptions`], [`SolveResult`], and the
//! [`CancelToken`] that stops one solve.

use crate::error::Result;
use crate::graph::{pb, Definition, ImageConfig, Platform};
use crate::options::{CacheExportSpec, CacheImportSpec, Entitlement, ImageExportAttrs, OutputSpec};
use crate::progress::ProgressSink;
pub use crate::registry::{CredentialProvider, RegistryLogin};
use crate::worker::platform::check_native;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;

/// What to do with a solve's result and how to watch it.
#[derive(Debug, Default, Clone)]
pub struct SolveOptions {
    /// Local directories by name (`local://NAME` sources).
    pub locals: BTreeMap<String, PathBuf>,
    /// Result exporters.
    pub outputs: Vec<OutputSpec>,
    /// Secret values by id (mounted as files; never cached or exported).
    pub secrets: BTreeMap<String, Vec<u8>>,
    /// Image config written by image exporters.
    pub image_config: ImageConfig,
    /// Where progress events go.
    pub progress: ProgressSink,
    /// Cache exporters run after the solve (`type=local,dest=DIR` / `type=registry,ref=...`).
    pub cache_exports: Vec<CacheExportSpec>,
    /// Cache importers consulted on a local cache miss.
    pub cache_imports: Vec<CacheImportSpec>,
    /// Cancels this solve (see [`CancelToken`]).
    pub cancel: Option<CancelToken>,
    /// SSH agent sockets by id (`ssh` mounts; buildctl's `--ssh ID=SOCKET`, id `default` when
    /// the mount names none). Each mount gets its own relay socket owned by the mount's uid/gid.
    pub ssh: BTreeMap<String, PathBuf>,
    /// Entitlements granted to this solve (buildctl's `--allow`): execs with `network=host` need
    /// [`Entitlement::NetworkHost`], `security=insecure` needs [`Entitlement::SecurityInsecure`];
    /// a definition using one that is not granted is refused before anything runs.
    pub entitlements: BTreeSet<Entitlement>,
    /// `SOURCE_DATE_EPOCH` (seconds since the Unix epoch) for reproducible images: image
    /// exporters clamp the config's `created`, every history `created` and the mtime of every
    /// layer entry newer than it to this time (BuildKit v0.13's `rewrite-timestamp` semantics).
    /// An output's `source-date-epoch=` attribute overrides it.
    pub source_date_epoch: Option<i64>,
    /// The platform of the build (`None` = the host's): recorded as the exported images'
    /// `os`/`architecture`/`variant`. kiln has no emulator, so a platform this host does not
    /// run natively is refused when the solve starts, as is a source op asking for one.
    pub platform: Option<Platform>,
    /// Where local directories not in [`SolveOptions::locals`] come from, on demand (a daemon
    /// syncs them from its client's session as sources name them, with their filters).
    pub local_provider: Option<Arc<dyn LocalProvider>>,
    /// Where secrets not in [`SolveOptions::secrets`] come from, on demand (a daemon asks its
    /// client's session). Values are never cached or exported.
    pub secret_provider: Option<Arc<dyn SecretProvider>>,
    /// Where SSH agents not in [`SolveOptions::ssh`] come from, on demand (a daemon forwards its
    /// client's agents over the session, one stream per connection).
    pub ssh_provider: Option<Arc<dyn SshProvider>>,
    /// Where registry credentials come from before the engine's own Docker config (a daemon asks
    /// its client's session, as buildkitd does).
    pub registry_credentials: Option<Arc<dyn CredentialProvider>>,
}

/// A byte stream to one SSH agent connection.
pub trait AgentStream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin> AgentStream for T {}

/// Provides SSH agents a solve's execs mount but were not given (see
/// [`SolveOptions::ssh_provider`]).
pub trait SshProvider: Send + Sync + std::fmt::Debug {
    /// Whether agent `id` is available (`Ok(false)`: the provider has no such agent).
    fn check<'a>(&'a self, id: &'a str) -> futures::future::BoxFuture<'a, Result<bool>>;
    /// Opens one new connection to agent `id`.
    fn connect<'a>(&'a self, id: &'a str) -> futures::future::BoxFuture<'a, Result<Box<dyn AgentStream>>>;
}

/// Provides secrets a solve's execs mount but were not given (see
/// [`SolveOptions::secret_provider`]).
pub trait SecretProvider: Send + Sync + std::fmt::Debug {
    /// The value of secret `id`, `None` when the provider has no such secret.
    fn secret<'a>(&'a self, id: &'a str) -> futures::future::BoxFuture<'a, Result<Option<Vec<u8>>>>;
}

impl SolveOptions {
    /// Secret `id`: given in the options, else from the secret provider (`None`: nobody has it).
    pub(crate) async fn lookup_secret(&self, id: &str) -> Result<Option<Vec<u8>>> {
        if let Some(v) = self.secrets.get(id) {
            return Ok(Some(v.clone()));
        }
        match &self.secret_provider {
            Some(p) => p.secret(id).await,
            None => Ok(None),
        }
    }
}

/// The filters a `local://NAME` source applies (its include, exclude and follow patterns).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct LocalRequest {
    /// The local's name.
    pub name: String,
    /// Include patterns (empty: everything).
    pub include: Vec<String>,
    /// Exclude patterns.
    pub exclude: Vec<String>,
    /// Paths whose symlinks are followed.
    pub follow_paths: Vec<String>,
}

/// Provides local directories a solve names but was not given (see
/// [`SolveOptions::local_provider`]). The directory returned must hold at least what the
/// request's filters select; kiln applies the filters again when it reads it.
pub trait LocalProvider: Send + Sync + std::fmt::Debug {
    /// The directory of `req.name`, made available (e.g. synced from a client).
    fn provide<'a>(&'a self, req: &'a LocalRequest) -> futures::future::BoxFuture<'a, Result<ProvidedLocal>>;
}

/// A directory a [`LocalProvider`] made available, and what it already knows of it.
#[derive(Debug, Clone, Default)]
pub struct ProvidedLocal {
    /// The directory.
    pub dir: PathBuf,
    /// Files whose content the provider hashed as it wrote them (a daemon receiving a client's
    /// dir sees every byte): the cache key reuses these instead of reading the files again. A
    /// file not listed, or whose size differs, is read.
    pub digests: Arc<crate::fileops::FileDigests>,
    /// The directory is the provider's private copy, whose files nobody writes to in place
    /// while it exists (nothing changes it during the build; a later sync of a kept copy
    /// replaces a changed file by a new one): its files may be hard-linked into the source's
    /// snapshot instead of copied.
    pub private: bool,
}

impl ProvidedLocal {
    /// A directory with nothing known of it (read, hashed and copied as a given local is).
    pub fn dir(dir: PathBuf) -> ProvidedLocal {
        ProvidedLocal { dir, ..ProvidedLocal::default() }
    }
}

impl SolveOptions {
    /// Adds an output from its CSV form (`type=local,dest=out`).
    pub fn output(mut self, csv: &str) -> Result<Self> {
        self.outputs.push(csv.parse()?);
        Ok(self)
    }

    /// Adds a cache exporter from its CSV form (`type=local,dest=DIR,mode=max`).
    pub fn cache_export(mut self, csv: &str) -> Result<Self> {
        self.cache_exports.push(csv.parse()?);
        Ok(self)
    }

    /// Adds a cache importer from its CSV form (`type=local,src=DIR`).
    pub fn cache_import(mut self, csv: &str) -> Result<Self> {
        self.cache_imports.push(csv.parse()?);
        Ok(self)
    }

    /// Adds a secret value by id.
    pub fn secret(mut self, id: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        self.secrets.insert(id.into(), value.into());
        self
    }

    /// Adds an SSH agent socket for `ssh` mounts with this id.
    pub fn ssh(mut self, id: impl Into<String>, socket: impl Into<PathBuf>) -> Self {
        self.ssh.insert(id.into(), socket.into());
        self
    }

    /// Grants an entitlement.
    pub fn allow(mut self, entitlement: Entitlement) -> Self {
        self.entitlements.insert(entitlement);
        self
    }

    /// Adds a local directory.
    pub fn local(mut self, name: impl Into<String>, dir: impl Into<PathBuf>) -> Self {
        self.locals.insert(name.into(), dir.into());
        self
    }

    /// Sets `SOURCE_DATE_EPOCH` (seconds since the Unix epoch).
    pub fn source_date_epoch(mut self, epoch: i64) -> Self {
        self.source_date_epoch = Some(epoch);
        self
    }

    /// Sets the build platform from `os/arch[/variant]` (or `local`); a malformed string is an
    /// `Option` error naming the accepted forms, a platform this host cannot run an
    /// `Unsupported` error naming both platforms.
    pub fn platform(mut self, platform: &str) -> Result<Self> {
        let p: Platform = platform.parse()?;
        check_native("the build", &p)?;
        self.platform = Some(p);
        Ok(self)
    }

    /// The build platform: [`SolveOptions::platform`] or the host's.
    pub fn build_platform(&self) -> Platform {
        self.platform.clone().unwrap_or_else(Platform::host)
    }

    /// Checks, before anything runs, what the solve would otherwise find out late: the build
    /// platform and every source op's platform must be native here (image and layout sources
    /// pull the host's manifest; kiln has no emulator), and the image attributes of the outputs
    /// (`containerimage.config` JSON, platform-qualified annotations) must parse.
    pub fn check(&self, def: &Definition) -> Result<()> {
        if let Some(p) = &self.platform {
            check_native("the build", p)?;
        }
        for v in def.vertices() {
            if let (Some(pb::op::Op::Source(_)), Some(p)) = (&v.op.op, &v.op.platform) {
                check_native(&format!("source {}", v.name()), &Platform::from_pb(p))?;
            }
        }
        for out in &self.outputs {
            if let OutputSpec::Oci { image, .. } | OutputSpec::Image { image, .. } = out {
                output_image_config(image)?;
                for (p, ..) in &image.platform_annotations {
                    p.parse::<Platform>()?;
                }
            }
        }
        Ok(())
    }
}

/// The `containerimage.config` of an output, read (`None` when the output gives none).
pub(crate) fn output_image_config(attrs: &ImageExportAttrs) -> Result<Option<ImageConfig>> {
    attrs
        .config_json
        .as_deref()
        .map(|j| {
            ImageConfig::from_oci_json(j.as_bytes()).map_err(|e| e.context("output attribute containerimage.config"))
        })
        .transpose()
}

impl super::Solver {
    /// The registry options of this solver's clients (for the engine's image resolver, which
    /// must pull with the same timeouts and retries as solves).
    pub fn registry_options(&self) -> &crate::registry::RegistryOptions {
        &self.registry
    }
}

/// The outcome of a solve.
#[derive(Debug, Clone, Default)]
pub struct SolveResult {
    /// Exporter metadata (e.g. `containerimage.digest`).
    pub exporter_response: BTreeMap<String, String>,
    /// Vertices whose result came from the cache.
    pub cached: usize,
    /// Vertices that executed.
    pub executed: usize,
}

/// Cancels one solve. `cancel()` may be called from any thread; the solve then returns
/// `Error::Cancelled` once its own containers are killed and its mounts and snapshots released
/// (other solves on the engine are not waited for). Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct CancelToken {
    inner: Arc<CancelInner>,
}

#[derive(Debug, Default)]
struct CancelInner {
    cancelled: std::sync::atomic::AtomicBool,
    notify: tokio::sync::Notify,
}

impl CancelToken {
    /// A token not yet cancelled.
    pub fn new() -> Self {
        Self::default()
    }

    /// Requests cancellation (idempotent).
    pub fn cancel(&self) {
        self.inner.cancelled.store(true, std::sync::atomic::Ordering::SeqCst);
        self.inner.notify.notify_waiters();
    }

    /// True once `cancel` was called.
    pub fn is_cancelled(&self) -> bool {
        self.inner.cancelled.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Resolves when the token is cancelled.
    pub async fn cancelled(&self) {
        loop {
            let notified = self.inner.notify.notified();
            if self.is_cancelled() {
                return;
            }
            notified.await;
        }
    }
}
