//! The `oci-layout://` source: resolves a tag or digest in a local OCI image layout and brings
//! the image's blobs (index, manifest, config, layers) into the engine's content store,
//! hardlinked when possible, always verified.

use crate::content::image::{read_image, ResolvedImage};
use crate::content::layout::{from_oci_digest, OciLayout};
use crate::content::store::ContentStore;
use crate::error::{Error, ErrorKind, Result};
use std::path::Path;

/// Resolves `reference` (a tag or `sha256:<hex>`) in the OCI layout at `dir` and places every
/// blob of the image into `into`. Returns the image as read from `into`'s copy.
pub fn resolve_oci_layout(dir: &Path, reference: &str, into: &ContentStore) -> Result<ResolvedImage> {
    let as_source = |e: Error| match e.kind() {
        // Missing layout or unknown tag: the source is wrong, not the store.
        ErrorKind::Content => Error::new(ErrorKind::Source, format!("oci-layout {}@{reference}: {e}", dir.display())),
        _ => e.context(format!("oci-layout {}@{reference}", dir.display())),
    };
    // A source: never modified (no directories created, corrupt blobs kept and reported).
    let layout = OciLayout::open_readonly(dir).map_err(as_source)?;
    let top = layout.resolve(reference).map_err(as_source)?;
    let src = layout.store();
    let ctx = |e: Error| e.context(format!("oci-layout {}@{reference}", dir.display()));
    // Read (verified) from the layout first so that a broken image copies nothing.
    let image = read_image(src, &top).map_err(ctx)?;
    let mut blobs = vec![from_oci_digest(top.digest())?, image.manifest_digest.clone()];
    blobs.push(from_oci_digest(image.manifest.config().digest())?);
    for layer in &image.layers {
        blobs.push(from_oci_digest(layer.digest())?);
    }
    blobs.dedup();
    for d in &blobs {
        into.link_from(src, d).map_err(ctx)?;
    }
    tracing::debug!(layout = %dir.display(), reference, manifest = %image.manifest_digest, "resolved oci-layout image");
    // Re-read from the engine store: what callers use next is what was verified there.
    read_image(into, &top).map_err(ctx)
}
