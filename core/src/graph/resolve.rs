//! Base-image metadata for the graph builder: the [`ImageMetaResolver`] trait (Go llb's
//! `ImageMetaResolver`) a state asks for an image's config, and [`ImageOptions`] of image
//! sources. The graph layer only defines the contract: resolving needs a registry or a layout on
//! disk, which the engine provides (`Engine` implements the trait), so building and marshalling
//! a state never touches the network unless a resolver is passed explicitly.

use super::image_config::ImageConfig;
use super::platform::Platform;
use super::source::OciRef;
use crate::digest::Digest;
use crate::error::Result;
use std::path::PathBuf;

/// What a resolver is asked about: a registry image or an image in an OCI layout on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageRef {
    /// A registry reference, normalized (`docker.io/library/busybox:latest`).
    Registry(String),
    /// An image in an OCI layout directory.
    OciLayout {
        /// The layout directory.
        dir: PathBuf,
        /// The tag or manifest digest.
        reference: OciRef,
    },
}

impl std::fmt::Display for ImageRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ImageRef::Registry(r) => f.write_str(r),
            ImageRef::OciLayout { dir, reference: OciRef::Tag(t) } => write!(f, "oci-layout://{}:{t}", dir.display()),
            ImageRef::OciLayout { dir, reference: OciRef::Digest(d) } => {
                write!(f, "oci-layout://{}@{d}", dir.display())
            }
        }
    }
}

/// An image's metadata, as a resolver found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedImageConfig {
    /// Digest of the platform manifest chosen (not of an index above it).
    pub digest: Digest,
    /// The image's config (`config` object of its image config).
    pub config: ImageConfig,
    /// The platform the image config records (`os`/`architecture`/`variant`).
    pub platform: Platform,
}

/// Resolves an image's config for a platform (Go llb's `ImageMetaResolver.ResolveImageConfig`).
/// Implemented by `kiln::Engine` (registry with the engine's registry options and credentials;
/// OCI layouts read from disk). Blocking: it may do network I/O.
pub trait ImageMetaResolver {
    /// The config of `image` for `platform` (the host's when `None`). A platform this host
    /// cannot run is refused by the engine's implementation.
    fn resolve_image_config(&self, image: &ImageRef, platform: Option<&Platform>) -> Result<ResolvedImageConfig>;
}

/// Options of image sources ([`State::image_with`](super::State::image_with),
/// [`State::oci_layout_with`](super::State::oci_layout_with)).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageOptions {
    /// The platform to pull (the op's platform); `None` = the host's.
    pub platform: Option<Platform>,
    /// Pin the registry source to the resolved manifest digest (Go llb's `ResolveDigest(true)`;
    /// off by default, as in BuildKit: the source keeps its tag and the solve resolves it again).
    pub resolve_digest: bool,
}

impl ImageOptions {
    /// Options for `platform`.
    pub fn platform(platform: Platform) -> ImageOptions {
        ImageOptions { platform: Some(platform), ..Default::default() }
    }
}
