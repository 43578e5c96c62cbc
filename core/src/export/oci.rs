//! `type=oci`: writes a result image as an OCI image layout — into a directory (tagged in its
//! `index.json`, other tags kept) or as a tar file of a layout (like `buildctl
//! --output type=oci,dest=out.tar`), written atomically.

use crate::content::image::{write_image_with, ImageWriteOptions};
use crate::content::layer::LayerBlob;
use crate::content::layout::{from_oci_digest, OciLayout, REF_NAME_ANNOTATION};
use crate::content::store::{read_error, ContentStore};
use crate::digest::Digest;
use crate::error::{Error, ErrorKind, IoContext, Result};
use crate::export::tar::atomic_file;
use crate::graph::ImageConfig;
use oci_spec::image::{ImageIndex, MediaType};
use std::io::Write;
use std::path::Path;

/// The tag used when the export names none.
pub const DEFAULT_TAG: &str = "latest";

/// Writes the image (`layers` must be in `store`) and exports it to `dest`: an OCI layout
/// directory tagged `name` (default `latest`) when `as_tar` is false, else a tar file holding
/// such a layout. Returns the manifest digest.
pub fn export_oci(
    store: &ContentStore,
    layers: &[LayerBlob],
    config: &ImageConfig,
    dest: &Path,
    as_tar: bool,
    name: Option<&str>,
    oci_media_types: bool,
) -> Result<Digest> {
    let o = ImageWriteOptions { config: config.clone(), oci_media_types, ..Default::default() };
    export_oci_with(store, layers, &o, dest, as_tar, name)
}

/// [`export_oci`] with every image write option (platform, `SOURCE_DATE_EPOCH`, descriptor
/// annotations, which land in the layout's `index.json`).
pub fn export_oci_with(
    store: &ContentStore,
    layers: &[LayerBlob],
    image: &ImageWriteOptions,
    dest: &Path,
    as_tar: bool,
    name: Option<&str>,
) -> Result<Digest> {
    let tag = name.unwrap_or(DEFAULT_TAG);
    if tag.is_empty() {
        return Err(Error::option("name", "", "a non-empty image name or tag"));
    }
    let ctx = |e: Error| e.context(format!("exporting OCI image to {}", dest.display()));
    let desc = write_image_with(store, layers, image).map_err(ctx)?;
    let manifest_digest = from_oci_digest(desc.digest())?;
    let config_digest = {
        let m: oci_spec::image::ImageManifest =
            serde_json::from_slice(&store.read(&manifest_digest)?).map_err(|e| {
                Error::with_source(ErrorKind::Internal, format!("re-reading manifest {manifest_digest}"), e)
            })?;
        from_oci_digest(m.config().digest())?
    };
    let mut blobs: Vec<Digest> = layers.iter().map(|l| l.digest.clone()).collect();
    blobs.push(config_digest);
    blobs.push(manifest_digest.clone());
    blobs.dedup();

    if !as_tar {
        let layout = OciLayout::create(dest).map_err(ctx)?;
        for d in &blobs {
            layout.store().link_from(store, d).map_err(ctx)?;
        }
        layout.set_tag(tag, desc).map_err(ctx)?;
        tracing::info!(dest = %dest.display(), tag, manifest = %manifest_digest, "exported OCI layout");
        return Ok(manifest_digest);
    }

    let mut desc = desc;
    let mut annotations = desc.annotations().clone().unwrap_or_default();
    annotations.insert(REF_NAME_ANNOTATION.to_owned(), tag.to_owned());
    desc.set_annotations(Some(annotations));
    let mut index = ImageIndex::default();
    index.set_media_type(Some(MediaType::ImageIndex));
    index.set_manifests(vec![desc]);
    let index_json = serde_json::to_vec(
        &serde_json::to_value(&index).map_err(|e| Error::with_source(ErrorKind::Internal, "encoding index.json", e))?,
    )
    .map_err(|e| Error::with_source(ErrorKind::Internal, "encoding index.json", e))?;
    atomic_file(dest, |out| write_layout_tar(store, &blobs, &index_json, out)).map_err(ctx)?;
    tracing::info!(dest = %dest.display(), tag, manifest = %manifest_digest, "exported OCI layout tar");
    Ok(manifest_digest)
}

/// Streams a tar of an OCI layout (`oci-layout`, `index.json`, `blobs/sha256/*`) holding
/// `blobs` from `store`, each verified as it is read.
fn write_layout_tar(store: &ContentStore, blobs: &[Digest], index_json: &[u8], out: &mut dyn Write) -> Result<()> {
    let mut b = tar::Builder::new(out);
    let dest = Path::new("<oci tar>");
    let add = |b: &mut tar::Builder<&mut dyn Write>,
               name: &str,
               size: u64,
               kind: tar::EntryType,
               data: &mut dyn std::io::Read| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_size(size);
        h.set_mode(if kind == tar::EntryType::Directory { 0o755 } else { 0o644 });
        h.set_mtime(0);
        b.append_data(&mut h, name, data)
    };
    let layout = br#"{"imageLayoutVersion":"1.0.0"}"#;
    add(&mut b, "oci-layout", layout.len() as u64, tar::EntryType::Regular, &mut &layout[..])
        .with_path("writing", dest)?;
    add(&mut b, "index.json", index_json.len() as u64, tar::EntryType::Regular, &mut &index_json[..])
        .with_path("writing", dest)?;
    add(&mut b, "blobs/", 0, tar::EntryType::Directory, &mut std::io::empty()).with_path("writing", dest)?;
    add(&mut b, "blobs/sha256/", 0, tar::EntryType::Directory, &mut std::io::empty()).with_path("writing", dest)?;
    for d in blobs {
        let size = store.size(d)?;
        let mut reader = store.open_reader(d)?;
        add(&mut b, &format!("blobs/sha256/{}", d.hex()), size, tar::EntryType::Regular, &mut reader)
            .map_err(|e| read_error(e, "adding blob to OCI tar", &store.blob_path(d)))?;
    }
    b.finish().with_path("finishing", dest)
}
