//! The engine as an [`ImageMetaResolver`]: base-image configs for the graph builder, read from a
//! registry (the engine's registry options; credentials from Docker's `config.json`, as pulls
//! use; plain http for loopback registries) or from an OCI layout on disk — and the
//! `Engine::image` / `Engine::oci_layout` shorthands building states that carry them.
//!
//! Nothing is cached or recorded: a resolution reads the manifest and config into a temporary
//! store under the engine's `tmp/`, removed when it returns, so the engine root is unchanged.

use super::Engine;
use crate::content::image::read_image;
use crate::content::layout::from_oci_digest;
use crate::content::{ContentStore, OciLayout};
use crate::error::{Error, ErrorKind, Result};
use crate::graph::{DockerfileOptions, ImageConfig};
use crate::graph::{ImageMetaResolver, ImageOptions, ImageRef, OciRef, Platform, ResolvedImageConfig, State};
use crate::registry::{pull_image_metadata, ClientSettings, LoginSource, Reference};
use crate::worker::platform::check_native;
use std::path::PathBuf;

/// The image config of a read image, from its raw config blob (so Docker's extensions —
/// `Healthcheck`, `Shell`, `OnBuild` — survive), with the platform it records.
fn config_of(store: &ContentStore, image: &crate::content::ResolvedImage) -> Result<ResolvedImageConfig> {
    let config_digest = from_oci_digest(image.manifest.config().digest())?;
    let bytes = store.read(&config_digest)?;
    let config = ImageConfig::from_oci_json(&bytes).map_err(|e| {
        Error::new(ErrorKind::Content, format!("image config {config_digest} is not a valid image config: {e}"))
    })?;
    let c = &image.config;
    let platform = Platform::normalize(
        &c.os().to_string(),
        &c.architecture().to_string(),
        c.variant().as_deref().unwrap_or_default(),
    );
    Ok(ResolvedImageConfig { digest: image.manifest_digest.clone(), config, platform })
}

/// The config blob of a read image, as stored.
fn raw_config(store: &ContentStore, image: &crate::content::ResolvedImage) -> Result<Vec<u8>> {
    store.read(&from_oci_digest(image.manifest.config().digest())?)
}

impl Engine {
    /// The config of `image` for `platform` (the host's when `None`), read from its registry or
    /// OCI layout. Blocking (network I/O, bounded by the engine's registry timeouts): call it
    /// from a blocking context, or use [`Engine::image`] / [`Engine::oci_layout`] from async
    /// code. A platform this host cannot run is refused (`Unsupported`, naming both).
    pub fn resolve_image_config(&self, image: &ImageRef, platform: Option<&Platform>) -> Result<ResolvedImageConfig> {
        self.resolve_image_config_with_raw(image, platform).map(|(r, _)| r)
    }

    /// [`Engine::resolve_image_config`] with the image's config blob exactly as stored (what
    /// BuildKit's gateway `ResolveImageConfig` answers: the whole OCI image config, history and
    /// rootfs included). Blocking, like it.
    pub fn resolve_image_config_with_raw(
        &self,
        image: &ImageRef,
        platform: Option<&Platform>,
    ) -> Result<(ResolvedImageConfig, Vec<u8>)> {
        self.resolve_with_logins(image, platform, None)
    }

    /// [`Engine::resolve_image_config_with_raw`] asking `logins` (a daemon's client session) for
    /// registry credentials before the Docker config.
    pub(crate) fn resolve_with_logins(
        &self,
        image: &ImageRef,
        platform: Option<&Platform>,
        logins: Option<LoginSource>,
    ) -> Result<(ResolvedImageConfig, Vec<u8>)> {
        if let Some(p) = platform {
            check_native(&format!("image {image}"), p)?;
        }
        let resolved = match image {
            ImageRef::Registry(reference) => {
                let r = Reference::parse(reference)?;
                // A connected engine resolves from this machine, with the environment's settings.
                let (options, tmp_base) = match self.solver() {
                    Ok(s) => (s.registry_options().clone(), s.cache.tmp().to_path_buf()),
                    Err(_) => (crate::registry::RegistryOptions::from_env()?, std::env::temp_dir()),
                };
                let settings = ClientSettings { options, interrupt: Default::default(), logins };
                let client = settings.client(&r, false)?;
                let tmp =
                    tempfile::tempdir_in(&tmp_base).map_err(|e| Error::io("create a resolver dir", &tmp_base, e))?;
                let store = ContentStore::open(tmp.path())?;
                let img = pull_image_metadata(&client, &r, &store)?;
                (config_of(&store, &img)?, raw_config(&store, &img)?)
            }
            ImageRef::OciLayout { dir, reference } => {
                let layout = OciLayout::open_readonly(dir)?;
                let r = match reference {
                    OciRef::Tag(t) => t.clone(),
                    OciRef::Digest(d) => d.to_string(),
                };
                let img = read_image(layout.store(), &layout.resolve(&r)?)?;
                (config_of(layout.store(), &img)?, raw_config(layout.store(), &img)?)
            }
        };
        let r = &resolved.0;
        tracing::debug!(%image, digest = %r.digest, platform = %r.platform, "resolved image config");
        Ok(resolved)
    }

    /// `docker-image://REF` whose state carries the image's config ([`State::image_with`] with
    /// this engine as resolver, run on a blocking thread).
    pub async fn image(&self, reference: &str, options: &ImageOptions) -> Result<State> {
        let (engine, reference, options) = (self.clone(), reference.to_owned(), options.clone());
        tokio::task::spawn_blocking(move || State::image_with(reference, &options, &engine))
            .await
            .map_err(|e| Error::with_source(ErrorKind::Internal, "image resolve task", e))?
    }

    /// `oci-layout://DIR:TAG|@DIGEST` whose state carries the image's config
    /// ([`State::oci_layout_with`] with this engine as resolver, run on a blocking thread).
    pub async fn oci_layout(
        &self,
        dir: impl Into<PathBuf>,
        reference: OciRef,
        options: &ImageOptions,
    ) -> Result<State> {
        let (engine, dir, options) = (self.clone(), dir.into(), options.clone());
        tokio::task::spawn_blocking(move || State::oci_layout_with(dir, reference, &options, &engine))
            .await
            .map_err(|e| Error::with_source(ErrorKind::Internal, "image resolve task", e))?
    }

    /// The Dockerfile `options.dockerfile` of `context_dir` converted into its target stage's
    /// state, base images resolved through this engine
    /// ([`crate::frontend::dockerfile::state_from_dir`] on a blocking thread): the state carries
    /// the target's image config, can be extended and solved with `context_dir` given as the
    /// local `options.context_name`.
    pub async fn dockerfile(&self, context_dir: impl Into<PathBuf>, options: &DockerfileOptions) -> Result<State> {
        let (engine, dir, options) = (self.clone(), context_dir.into(), options.clone());
        tokio::task::spawn_blocking(move || {
            crate::frontend::dockerfile::state_from_dir(&dir, &options, Some(&engine as &dyn ImageMetaResolver))
        })
        .await
        .map_err(|e| Error::with_source(ErrorKind::Internal, "dockerfile conversion task", e))?
    }
}

impl ImageMetaResolver for Engine {
    fn resolve_image_config(&self, image: &ImageRef, platform: Option<&Platform>) -> Result<ResolvedImageConfig> {
        Engine::resolve_image_config(self, image, platform)
    }
}

/// An engine resolving with a solve's registry logins (a daemon's client session), for the
/// frontends a daemon runs: base images resolve with the same credentials the pulls use.
#[derive(Debug, Clone)]
pub(crate) struct LoggedInResolver {
    engine: Engine,
    logins: Option<LoginSource>,
}

impl LoggedInResolver {
    /// `engine` asking `provider` (when given) for logins; call inside the runtime.
    pub(crate) fn new(
        engine: Engine,
        provider: Option<std::sync::Arc<dyn crate::solver::CredentialProvider>>,
    ) -> LoggedInResolver {
        LoggedInResolver { engine, logins: provider.and_then(LoginSource::new) }
    }
}

impl ImageMetaResolver for LoggedInResolver {
    fn resolve_image_config(&self, image: &ImageRef, platform: Option<&Platform>) -> Result<ResolvedImageConfig> {
        self.engine.resolve_with_logins(image, platform, self.logins.clone()).map(|(r, _)| r)
    }
}
