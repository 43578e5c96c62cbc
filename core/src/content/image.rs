//! Image manifests and configs in a content store: reading an image (following an index to the
//! host platform's manifest; OCI and Docker schema 2 media types) and writing one from layer
//! blobs and an [`ImageConfig`].

use crate::content::layer::LayerBlob;
use crate::content::layout::{from_oci_digest, to_oci_digest};
use crate::content::store::ContentStore;
use crate::digest::Digest;
use crate::error::{Error, ErrorKind, Result};
use crate::graph::{HistoryEntry, ImageConfig};
use crate::graph::Platform;
use oci_spec::image::{
    Arch, Descriptor, ImageConfiguration, ImageIndex, ImageManifest, MediaType, Os, Platform as OciPlatform,
};
use std::collections::BTreeMap;

/// OCI image manifest media type.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index media type.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// OCI image config media type.
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// Docker schema 2 manifest media type.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker schema 2 manifest list media type.
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// Docker schema 2 image config media type.
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";

/// An image read from a content store.
#[derive(Debug, Clone)]
pub struct ResolvedImage {
    /// Digest of the platform manifest (not of the index it may have been chosen from).
    pub manifest_digest: Digest,
    /// The manifest.
    pub manifest: ImageManifest,
    /// The image config.
    pub config: ImageConfiguration,
    /// The layer descriptors, base first.
    pub layers: Vec<Descriptor>,
}

/// Reads a blob named by a descriptor, verifying digest and size.
fn read_desc(store: &ContentStore, desc: &Descriptor) -> Result<(Digest, Vec<u8>)> {
    let d = from_oci_digest(desc.digest())?;
    let bytes = store.read(&d)?;
    crate::content::limits::check_json_depth(&bytes, &format!("blob {d}"))?;
    if bytes.len() as u64 != desc.size() {
        return Err(Error::new(
            ErrorKind::Content,
            format!("blob {d} has {} bytes but its descriptor says {}", bytes.len(), desc.size()),
        ));
    }
    Ok((d, bytes))
}

fn is_index(media_type: &str, bytes: &[u8]) -> bool {
    match media_type {
        OCI_INDEX | DOCKER_MANIFEST_LIST => true,
        OCI_MANIFEST | DOCKER_MANIFEST => false,
        // Unknown or missing media type: an index is the JSON object with `manifests`.
        _ => serde_json::from_slice::<serde_json::Value>(bytes).map(|v| v.get("manifests").is_some()).unwrap_or(false),
    }
}

/// The host's platform in OCI terms (`linux`, `amd64`, ...).
pub fn host_platform() -> (Os, Arch) {
    (Os::default(), Arch::default())
}

/// Reads the image `manifest` points to. An index (OCI or Docker manifest list) is followed to
/// the manifest for the host platform.
pub fn read_image(store: &ContentStore, manifest: &Descriptor) -> Result<ResolvedImage> {
    let (digest, bytes) = read_desc(store, manifest)?;
    if is_index(manifest.media_type().as_ref(), &bytes) {
        let index: ImageIndex = serde_json::from_slice(&bytes).map_err(|e| {
            Error::with_source(ErrorKind::Content, format!("image index {digest} is not valid JSON for an index"), e)
        })?;
        let child = pick_platform(&index, &digest)?;
        return read_image(store, &child);
    }
    let m: ImageManifest = serde_json::from_slice(&bytes).map_err(|e| {
        Error::with_source(ErrorKind::Content, format!("image manifest {digest} is not a valid manifest"), e)
    })?;
    let (config_digest, config_bytes) = read_desc(store, m.config())?;
    let config: ImageConfiguration = serde_json::from_slice(&config_bytes).map_err(|e| {
        Error::with_source(ErrorKind::Content, format!("image config {config_digest} is not a valid image config"), e)
    })?;
    Ok(ResolvedImage { manifest_digest: digest, layers: m.layers().clone(), manifest: m, config })
}

/// Chooses the host platform's manifest from an index.
fn pick_platform(index: &ImageIndex, digest: &Digest) -> Result<Descriptor> {
    let (os, arch) = host_platform();
    let manifests = index.manifests();
    let matches = |d: &&Descriptor| d.platform().as_ref().is_some_and(|p| p.os() == &os && p.architecture() == &arch);
    if let Some(d) = manifests.iter().find(matches) {
        return Ok(d.clone());
    }
    // A single-entry index without a platform (as some tools write) is unambiguous.
    if let [only] = manifests.as_slice() {
        if only.platform().is_none() {
            return Ok(only.clone());
        }
    }
    let available: Vec<String> = manifests
        .iter()
        .map(|d| match d.platform() {
            Some(p) => format!("{}/{}", p.os(), p.architecture()),
            None => "(no platform)".to_owned(),
        })
        .collect();
    Err(Error::new(
        ErrorKind::Content,
        format!(
            "image index {digest} has no manifest for {os}/{arch}; it has: {}",
            if available.is_empty() { "(nothing)".to_owned() } else { available.join(", ") }
        ),
    ))
}

/// RFC 3339 UTC timestamp for the image's `created` field and its history: now, clamped to
/// `source_date_epoch` when one is given (BuildKit's `patchImageConfig`: a time after the epoch
/// becomes the epoch), so a rebuild with the same epoch writes the same config.
fn created_timestamp(source_date_epoch: Option<i64>) -> String {
    let now =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0);
    format_rfc3339(source_date_epoch.map_or(now, |e| e.min(now)))
}

/// Formats seconds since the epoch as `YYYY-MM-DDTHH:MM:SSZ` (civil-from-days, proleptic Gregorian).
pub(crate) fn format_rfc3339(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

fn to_json(value: &impl serde::Serialize, what: &str) -> Result<Vec<u8>> {
    // Through serde_json::Value so that maps (labels, annotations) are written in sorted order and
    // identical inputs give identical digests.
    let v = serde_json::to_value(value)
        .map_err(|e| Error::with_source(ErrorKind::Internal, format!("encoding {what}"), e))?;
    serde_json::to_vec(&v).map_err(|e| Error::with_source(ErrorKind::Internal, format!("encoding {what}"), e))
}

fn internal(what: &str) -> impl FnOnce(oci_spec::OciSpecError) -> Error + '_ {
    move |e| Error::with_source(ErrorKind::Internal, format!("building {what}"), e)
}

/// What [`write_image_with`] writes besides the layers.
#[derive(Debug, Clone, Default)]
pub struct ImageWriteOptions {
    /// The image config's `config` object, and the manifest's annotations.
    pub config: ImageConfig,
    /// The platform the config and the manifest descriptor record; `None` = the host's.
    pub platform: Option<Platform>,
    /// Clamps `created` and every history entry's `created` to this time (seconds since the
    /// Unix epoch; `SOURCE_DATE_EPOCH`).
    pub source_date_epoch: Option<i64>,
    /// OCI media types (else Docker schema 2).
    pub oci_media_types: bool,
    /// Annotations of the manifest's descriptor (BuildKit's `annotation-manifest-descriptor.*`):
    /// they appear where the descriptor is written, e.g. an OCI layout's `index.json`.
    pub descriptor_annotations: BTreeMap<String, String>,
}

/// Writes an image config and manifest for `layers` into `store` and returns the manifest's
/// descriptor (with the host platform). Layer blobs must already be in `store`.
pub fn write_image(
    store: &ContentStore,
    layers: &[LayerBlob],
    config: &ImageConfig,
    oci_media_types: bool,
) -> Result<Descriptor> {
    let o = ImageWriteOptions { config: config.clone(), oci_media_types, ..Default::default() };
    write_image_with(store, layers, &o)
}

/// The image config document: platform, `created`, `config`, `rootfs`, `history`.
fn image_config_json(layers: &[LayerBlob], o: &ImageWriteOptions, platform: &Platform) -> serde_json::Value {
    let created = created_timestamp(o.source_date_epoch);
    let history: Vec<serde_json::Value> = normalized_history(&o.config.history, layers.len())
        .into_iter()
        .map(|h| {
            let mut e = serde_json::json!({"created": created, "created_by": h.created_by});
            if let Some(c) = h.comment {
                e["comment"] = serde_json::Value::String(c);
            }
            if h.empty_layer {
                e["empty_layer"] = serde_json::Value::Bool(true);
            }
            e
        })
        .collect();
    let diff_ids: Vec<String> = layers.iter().map(|l| l.diff_id.to_string()).collect();
    let mut doc = serde_json::json!({
        "architecture": platform.architecture,
        "os": platform.os,
        "created": created,
        "config": o.config.to_oci_json(),
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": history,
    });
    if !platform.variant.is_empty() {
        doc["variant"] = serde_json::Value::String(platform.variant.clone());
    }
    if let Some(a) = &o.config.author {
        doc["author"] = serde_json::Value::String(a.clone());
    }
    doc
}

/// The config's history made to account for `layers` layers exactly (BuildKit's
/// `normalizeLayersAndHistory`): entries claiming more layers than there are become empty from
/// the bottom up; layers no entry accounts for get an entry each (`created_by: kiln`) at the end.
fn normalized_history(history: &[HistoryEntry], layers: usize) -> Vec<HistoryEntry> {
    let mut out = Vec::with_capacity(history.len() + layers);
    let mut counted = 0;
    for h in history {
        let mut h = h.clone();
        if counted >= layers {
            h.empty_layer = true;
        }
        if !h.empty_layer {
            counted += 1;
        }
        out.push(h);
    }
    for _ in counted..layers {
        out.push(HistoryEntry { created_by: "kiln".into(), comment: None, empty_layer: false });
    }
    out
}

/// Writes an image config and manifest for `layers` into `store` as `o` says and returns the
/// manifest's descriptor (with the platform and `o.descriptor_annotations`). Layer blobs must
/// already be in `store`.
pub fn write_image_with(store: &ContentStore, layers: &[LayerBlob], o: &ImageWriteOptions) -> Result<Descriptor> {
    for l in layers {
        if !store.has(&l.digest) {
            return Err(Error::new(
                ErrorKind::Content,
                format!("layer {} is not in content store {}", l.digest, store.dir().display()),
            ));
        }
    }
    let platform = o.platform.clone().unwrap_or_else(Platform::host);
    let config_bytes = to_json(&image_config_json(layers, o, &platform), "image config")?;
    let config_digest = store.write_bytes(&config_bytes)?;

    let (manifest_type, config_type) =
        if o.oci_media_types { (OCI_MANIFEST, OCI_CONFIG) } else { (DOCKER_MANIFEST, DOCKER_CONFIG) };
    let config_desc =
        Descriptor::new(MediaType::from(config_type), config_bytes.len() as u64, to_oci_digest(&config_digest)?);
    let layer_descs = layers
        .iter()
        .map(|l| Ok(Descriptor::new(MediaType::from(l.media_type.as_str()), l.size, to_oci_digest(&l.digest)?)))
        .collect::<Result<Vec<_>>>()?;
    let mut manifest = oci_spec::image::ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::from(manifest_type))
        .config(config_desc)
        .layers(layer_descs)
        .build()
        .map_err(internal("image manifest"))?;
    if !o.config.annotations.is_empty() {
        manifest.set_annotations(Some(o.config.annotations.clone().into_iter().collect()));
    }
    let manifest_bytes = to_json(&manifest, "image manifest")?;
    let manifest_digest = store.write_bytes(&manifest_bytes)?;
    let mut desc =
        Descriptor::new(MediaType::from(manifest_type), manifest_bytes.len() as u64, to_oci_digest(&manifest_digest)?);
    let mut pb = oci_spec::image::PlatformBuilder::default()
        .os(Os::from(platform.os.as_str()))
        .architecture(Arch::from(platform.architecture.as_str()));
    if !platform.variant.is_empty() {
        pb = pb.variant(platform.variant.clone());
    }
    desc.set_platform(Some::<OciPlatform>(pb.build().map_err(internal("platform"))?));
    if !o.descriptor_annotations.is_empty() {
        desc.set_annotations(Some(o.descriptor_annotations.clone().into_iter().collect()));
    }
    tracing::debug!(manifest = %manifest_digest, config = %config_digest, layers = layers.len(), %platform, "wrote image");
    Ok(desc)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::content::layer::{write_layer, Compression};

    #[test]
    fn history_is_normalized_against_the_layers() {
        let e = |by: &str, empty: bool| HistoryEntry { created_by: by.into(), comment: None, empty_layer: empty };
        // Fewer entries with layers than layers: fillers at the end.
        let h = normalized_history(&[e("ENV", true), e("RUN", false)], 3);
        assert_eq!(h, vec![e("ENV", true), e("RUN", false), e("kiln", false), e("kiln", false)]);
        // More: the surplus ones become empty, from the bottom up.
        let h = normalized_history(&[e("a", false), e("b", false), e("c", false)], 1);
        assert_eq!(h, vec![e("a", false), e("b", true), e("c", true)]);
        assert_eq!(normalized_history(&[], 1), vec![e("kiln", false)]);
    }

    #[test]
    fn rfc3339() {
        assert_eq!(format_rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(format_rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
    }

    #[test]
    fn write_then_read_image_and_index() {
        let dir = tempfile::tempdir().unwrap();
        let s = ContentStore::open(dir.path()).unwrap();
        let layer = write_layer(&s, &Compression::default(), true, |w| {
            w.write_all(&[0u8; 1024]).unwrap();
            Ok(())
        })
        .unwrap();
        let cfg = ImageConfig {
            cmd: Some(vec!["/bin/sh".into()]),
            env: vec!["A=1".into()],
            labels: [("b".to_owned(), "2".to_owned()), ("a".to_owned(), "1".to_owned())].into(),
            ..Default::default()
        };
        let desc = write_image(&s, std::slice::from_ref(&layer), &cfg, true).unwrap();
        let img = read_image(&s, &desc).unwrap();
        assert_eq!(img.layers.len(), 1);
        assert_eq!(img.config.rootfs().diff_ids(), &vec![layer.diff_id.to_string()]);
        assert_eq!(img.config.config().as_ref().unwrap().cmd(), &Some(vec!["/bin/sh".to_owned()]));
        // An index pointing at it resolves to the same manifest.
        let mut index = ImageIndex::default();
        index.set_media_type(Some(MediaType::ImageIndex));
        index.set_manifests(vec![desc.clone()]);
        let index_bytes = serde_json::to_vec(&index).unwrap();
        let index_digest = s.write_bytes(&index_bytes).unwrap();
        let index_desc =
            Descriptor::new(MediaType::ImageIndex, index_bytes.len() as u64, to_oci_digest(&index_digest).unwrap());
        let via_index = read_image(&s, &index_desc).unwrap();
        assert_eq!(via_index.manifest_digest, img.manifest_digest);
    }

    #[test]
    fn docker_media_types_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let s = ContentStore::open(dir.path()).unwrap();
        let desc = write_image(&s, &[], &ImageConfig::default(), false).unwrap();
        assert_eq!(desc.media_type().as_ref(), DOCKER_MANIFEST);
        let img = read_image(&s, &desc).unwrap();
        assert_eq!(img.manifest.config().media_type().as_ref(), DOCKER_CONFIG);
    }
}
