//! `kiln::registry`: an OCI distribution client — pulling and pushing manifests and blobs over
//! the registry v2 HTTP API, with Docker's credential file and token authentication.
//!
//! - [`reference`]: image references and Docker's name normalisation.
//! - [`client`]: the blocking [`RegistryClient`] (HEAD-before-push, cross-repository mounts,
//!   monolithic or chunked uploads streamed from disk, verified downloads).
//! - `auth`: `config.json` credentials and `WWW-Authenticate` challenges.
//! - [`options`]: timeouts and retries ([`RegistryOptions`]) and the [`Interrupt`] a cancelled
//!   solve fires to end its requests.
//!
//! The client is blocking (`ureq`); async callers run it on a blocking thread.

pub(crate) mod auth;
pub mod client;
pub mod options;
pub mod reference;

pub use client::{PushStats, RegistryClient, DEFAULT_CHUNK_SIZE, PUSH_PARALLELISM};
pub use auth::{CredentialProvider, LoginSource, RegistryLogin};
pub use options::{Interrupt, RegistryOptions};
pub use reference::Reference;

/// What the registry clients of one solve share: the engine's [`RegistryOptions`] and the
/// solve's [`Interrupt`] (fired when the solve is cancelled or dropped).
#[derive(Debug, Clone, Default)]
pub struct ClientSettings {
    /// Timeouts and retries.
    pub options: RegistryOptions,
    /// Ends every request of these clients when fired.
    pub interrupt: Interrupt,
    /// Logins asked before the Docker config's (a daemon's client session).
    pub logins: Option<LoginSource>,
}

impl ClientSettings {
    /// A client for `r`'s registry: plain http when `insecure` or when the registry is on the
    /// loopback interface ([`is_loopback`]).
    pub fn client(&self, r: &Reference, insecure: bool) -> Result<RegistryClient> {
        Ok(RegistryClient::with_options(insecure || is_loopback(r), &self.options)?
            .interruptible(&self.interrupt)
            .with_logins(self.logins.clone()))
    }
}

use crate::content::image::{host_platform, read_image, ResolvedImage, DOCKER_MANIFEST_LIST, OCI_INDEX};
use crate::content::layout::{from_oci_digest, to_oci_digest};
use crate::content::ContentStore;
use crate::digest::Digest;
use crate::error::{Error, ErrorKind, Result};
use oci_spec::image::{Descriptor, ImageIndex, ImageManifest, MediaType};

fn is_index(media_type: &str) -> bool {
    media_type == OCI_INDEX || media_type == DOCKER_MANIFEST_LIST
}

/// Fetches a manifest by reference into `store` and returns its descriptor.
fn fetch_manifest(client: &RegistryClient, r: &Reference, store: &ContentStore) -> Result<(Descriptor, Vec<u8>)> {
    let (bytes, media_type, digest) = client.get_manifest(r)?;
    store.write_bytes(&bytes)?;
    let desc = Descriptor::new(MediaType::from(media_type.as_str()), bytes.len() as u64, to_oci_digest(&digest)?);
    Ok((desc, bytes))
}

/// The host platform's entry of an index (the same choice `content::read_image` makes).
fn pick_platform(index: &ImageIndex, r: &Reference) -> Result<Descriptor> {
    let (os, arch) = host_platform();
    let manifests = index.manifests();
    if let Some(d) =
        manifests.iter().find(|d| d.platform().as_ref().is_some_and(|p| p.os() == &os && p.architecture() == &arch))
    {
        return Ok(d.clone());
    }
    if let [only] = manifests.as_slice() {
        if only.platform().is_none() {
            return Ok(only.clone());
        }
    }
    Err(Error::new(ErrorKind::Registry, format!("image {r} has no manifest for {os}/{arch}")))
}

/// Pulls an image's metadata into `store`: the manifest (following an index to the host
/// platform's manifest, keeping both) and the config. Layer blobs are NOT fetched; fetch them
/// with [`RegistryClient::fetch_blob`] (`r` and each `layers` digest) when they are needed.
pub fn pull_image_metadata(client: &RegistryClient, r: &Reference, store: &ContentStore) -> Result<ResolvedImage> {
    let (top, bytes) = fetch_manifest(client, r, store)?;
    let manifest_bytes = if is_index(top.media_type().as_ref()) {
        let index: ImageIndex = serde_json::from_slice(&bytes).map_err(|e| {
            Error::with_source(ErrorKind::Registry, format!("image index of {r} is not a valid index"), e)
        })?;
        let child = pick_platform(&index, r)?;
        let child_ref = r.with_digest(from_oci_digest(child.digest())?);
        let (_, child_bytes) = fetch_manifest(client, &child_ref, store)?;
        if child_bytes.len() as u64 != child.size() {
            return Err(Error::new(
                ErrorKind::Registry,
                format!("manifest {child_ref} has {} bytes, its index says {}", child_bytes.len(), child.size()),
            ));
        }
        child_bytes
    } else {
        bytes
    };
    let manifest: ImageManifest = serde_json::from_slice(&manifest_bytes).map_err(|e| {
        Error::with_source(ErrorKind::Registry, format!("manifest of {r} is not a valid image manifest"), e)
    })?;
    client.fetch_blob(r, &from_oci_digest(manifest.config().digest())?, store)?;
    read_image(store, &top).map_err(|e| e.context(format!("reading pulled image {r}")))
}

/// Pushes the image whose manifest (or index) `manifest` describes, with all its blobs in
/// `store`, to `r`: blobs first (skipping those the registry has), child manifests of an index
/// by digest, then `manifest` to `r`'s tag (or digest).
pub fn push_image(client: &RegistryClient, r: &Reference, manifest: &Descriptor, store: &ContentStore) -> Result<()> {
    let digest = from_oci_digest(manifest.digest())?;
    let bytes = store.read(&digest)?;
    let media_type = manifest.media_type().to_string();
    push_manifest_tree(client, r, &digest, &media_type, &bytes, store)?;
    let pushed = client.put_manifest(r, &media_type, &bytes)?;
    tracing::info!(%r, digest = %pushed, "pushed image");
    Ok(())
}

/// Pushes everything `bytes` (a manifest or index) refers to; not the manifest itself.
fn push_manifest_tree(
    client: &RegistryClient,
    r: &Reference,
    digest: &Digest,
    media_type: &str,
    bytes: &[u8],
    store: &ContentStore,
) -> Result<()> {
    let looks_like_index =
        serde_json::from_slice::<serde_json::Value>(bytes).map(|v| v.get("manifests").is_some()).unwrap_or(false);
    if is_index(media_type) || looks_like_index {
        let index: ImageIndex = serde_json::from_slice(bytes).map_err(|e| {
            Error::with_source(ErrorKind::Content, format!("image index {digest} is not a valid index"), e)
        })?;
        for child in index.manifests() {
            let child_digest = from_oci_digest(child.digest())?;
            let child_bytes = store.read(&child_digest)?;
            let child_type = child.media_type().to_string();
            push_manifest_tree(client, r, &child_digest, &child_type, &child_bytes, store)?;
            client.put_manifest(&r.with_digest(child_digest), &child_type, &child_bytes)?;
        }
        return Ok(());
    }
    let m: ImageManifest = serde_json::from_slice(bytes).map_err(|e| {
        Error::with_source(ErrorKind::Content, format!("image manifest {digest} is not a valid manifest"), e)
    })?;
    let mut blobs = Vec::with_capacity(m.layers().len() + 1);
    for layer in m.layers() {
        let d = from_oci_digest(layer.digest())?;
        // Non-distributable layers stay wherever their URLs point; the registry does not need them.
        if !store.has(&d) && layer.media_type().to_string().contains("nondistributable") {
            continue;
        }
        blobs.push(d);
    }
    blobs.push(from_oci_digest(m.config().digest())?);
    client.push_blobs(r, &blobs, store)
}

/// True when `r`'s registry is on the loopback interface (`localhost`, `127.*`, `[::1]`). Like
/// Docker, kiln speaks plain http to loopback registries without being told to.
pub fn is_loopback(r: &Reference) -> bool {
    let host = r
        .registry
        .rsplit_once(':')
        .map(|(h, p)| if p.chars().all(|c| c.is_ascii_digit()) { h } else { r.registry.as_str() })
        .unwrap_or(&r.registry);
    host == "localhost" || host.starts_with("127.") || host == "[::1]"
}
