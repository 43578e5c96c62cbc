//! Cache exporters. `type=local` writes an OCI image layout: layer blobs hardlinked from the
//! engine's store (copied across filesystems), the cache config, and a cache manifest (or the
//! index form with `image-manifest=false`) tagged in `index.json` under `index.json.lock`.
//! `merge=true` adds this build's records to the tag's existing ones. After each export, blobs no
//! manifest references are removed under the lock — except blobs a concurrent exporter has
//! announced in a live lease (`kiln-leases/`), which closes the race BuildKit's reset has.

use super::config::{
    cache_index_json, cache_manifest_json, config_descriptor, descriptor_digest, parse_cache_config, parse_cache_root,
};
use super::records::{from_config, to_config, ExportRecord};
use crate::content::{ContentStore, OciLayout};
use crate::digest::Digest;
use crate::error::{Error, ErrorKind, IoContext, Result};
use crate::options::CacheExportSpec;
use oci_spec::image::{Descriptor, MediaType};
use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

const LEASES: &str = "kiln-leases";
/// Index annotation recording when a tag was written (used by `kiln cache prune`).
pub const CREATED_ANNOTATION: &str = "org.opencontainers.image.created";

/// Writes `records` as a cache into the layout at `dir` under `tag`; returns the root digest.
pub fn export_local(
    engine_store: &ContentStore,
    dir: &Path,
    tag: &str,
    spec: &CacheExportSpec,
    records: Vec<ExportRecord>,
) -> Result<Digest> {
    let layout = OciLayout::create(dir)?;
    let mut records = records;
    if spec.merge {
        if let Ok(old) = read_records(&layout, tag) {
            let have: BTreeSet<Digest> = records.iter().map(|r| r.digest.clone()).collect();
            records.extend(old.into_iter().filter(|r| !have.contains(&r.digest)));
        }
    }
    let (cfg, layer_descs) = to_config(&records)?;
    let cfg_json = cfg.to_json()?;
    let cfg_desc = config_descriptor(&cfg_json)?;
    let (root, media_type) = root_document(spec, &layer_descs, &cfg_desc)?;
    let root_digest = Digest::of(&root);
    let mut blobs: Vec<Digest> = layer_descs.iter().map(descriptor_digest).collect::<Result<_>>()?;
    blobs.push(Digest::of(&cfg_json));
    blobs.push(root_digest.clone());
    // Announce every blob before writing any, so a concurrent collection keeps them. Taken under
    // the index lock: a collection holds it from its lease scan to its last delete, so it either
    // sees this lease or ends before any blob of it is linked.
    let lease = layout.with_lock(|| Lease::take(dir, &blobs))?;
    for d in &blobs[..blobs.len() - 2] {
        if !layout.store().has(d) {
            layout.store().link_from(engine_store, d)?;
        }
    }
    layout.store().write_bytes(&cfg_json)?;
    layout.store().write_bytes(&root)?;
    let mut desc = Descriptor::new(
        media_type,
        root.len() as u64,
        root_digest
            .as_str()
            .parse::<oci_spec::image::Digest>()
            .map_err(|e| Error::with_source(ErrorKind::Internal, "oci digest", e))?,
    );
    desc.set_annotations(Some(HashMap::from([(CREATED_ANNOTATION.to_owned(), super::records::rfc3339_nanos_now())])));
    layout.set_tag(tag, desc)?;
    drop(lease);
    gc(&layout)?;
    Ok(root_digest)
}

/// Pushes `records` as a cache to a registry reference (blobs HEAD-checked first, then the cache
/// config and the cache manifest under the reference's tag); returns the manifest digest.
pub fn export_registry(
    engine_store: &ContentStore,
    reference: &str,
    insecure: bool,
    spec: &CacheExportSpec,
    records: Vec<ExportRecord>,
    registry: &crate::registry::ClientSettings,
) -> Result<Digest> {
    let r = crate::registry::Reference::parse(reference)?;
    let client = registry.client(&r, insecure)?;
    let mut records = records;
    if spec.merge {
        // Keep the tag's existing records; their blobs are already in the registry (HEAD skips them).
        let old = (|| -> Result<Vec<ExportRecord>> {
            let (root, _, _) = client.get_manifest(&r)?;
            let (layers, config) = parse_cache_root(&root)?;
            let cd = descriptor_digest(&config)?;
            client.fetch_blob(&r, &cd, engine_store)?;
            from_config(&parse_cache_config(&engine_store.read(&cd)?)?, &layers)
        })();
        match old {
            Ok(old) => {
                let have: BTreeSet<Digest> = records.iter().map(|r| r.digest.clone()).collect();
                records.extend(old.into_iter().filter(|r| !have.contains(&r.digest)));
            }
            Err(e) => tracing::debug!(reference, error = %e, "no existing cache to merge with"),
        }
    }
    let (cfg, layer_descs) = to_config(&records)?;
    let cfg_json = cfg.to_json()?;
    let cfg_desc = config_descriptor(&cfg_json)?;
    let (root, media_type) = root_document(spec, &layer_descs, &cfg_desc)?;
    // A merged record's blob that is not here is already in the registry (push_blob's HEAD
    // check would find it; checking it here avoids reading a blob kiln does not have).
    let mut blobs = Vec::with_capacity(layer_descs.len() + 1);
    for d in &layer_descs {
        let digest = descriptor_digest(d)?;
        if engine_store.has(&digest) {
            blobs.push(digest);
        } else if client.blob_exists(&r, &digest)?.is_none() {
            return Err(Error::new(
                ErrorKind::Cache,
                format!("cache blob {digest} is neither in the local store nor in {reference}; export it again"),
            ));
        }
    }
    blobs.push(engine_store.write_bytes(&cfg_json)?);
    client.push_blobs(&r, &blobs, engine_store)?;
    client.put_manifest(&r, &media_type.to_string(), &root)
}

/// The document a cache tag points at: the image-manifest form, or the index form (a Docker
/// manifest list when `oci-mediatypes=false`, as BuildKit writes it).
fn root_document(spec: &CacheExportSpec, layers: &[Descriptor], config: &Descriptor) -> Result<(Vec<u8>, MediaType)> {
    if spec.image_manifest {
        return Ok((cache_manifest_json(layers, config)?, MediaType::ImageManifest));
    }
    let index = cache_index_json(layers, config)?;
    if spec.oci_mediatypes {
        return Ok((index, MediaType::ImageIndex));
    }
    let mut v: serde_json::Value =
        serde_json::from_slice(&index).map_err(|e| Error::with_source(ErrorKind::Internal, "cache index", e))?;
    v["mediaType"] = serde_json::Value::String(DOCKER_MANIFEST_LIST.to_owned());
    let bytes = serde_json::to_vec(&v).map_err(|e| Error::with_source(ErrorKind::Internal, "cache index", e))?;
    Ok((bytes, MediaType::Other(DOCKER_MANIFEST_LIST.to_owned())))
}

const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// The records currently stored under `tag` in `layout`.
pub fn read_records(layout: &OciLayout, tag: &str) -> Result<Vec<ExportRecord>> {
    let desc = layout.resolve(tag)?;
    let root = layout.store().read(&descriptor_digest(&desc)?)?;
    let (layers, config) = parse_cache_root(&root)?;
    let cfg = parse_cache_config(&layout.store().read(&descriptor_digest(&config)?)?)?;
    from_config(&cfg, &layers)
}

/// Removes every blob of `layout` that no manifest in `index.json` references (recursively) and no
/// live lease protects. Runs under the index lock so no tag changes meanwhile.
pub fn gc(layout: &OciLayout) -> Result<(usize, u64)> {
    let mut removed = (0usize, 0u64);
    layout.store().remove_stale_ingest()?;
    layout.update_index(|index| {
        let mut keep: BTreeSet<Digest> = BTreeSet::new();
        let mut todo: Vec<Digest> = Vec::new();
        for m in index.manifests() {
            todo.push(descriptor_digest(m)?);
        }
        while let Some(d) = todo.pop() {
            if !keep.insert(d.clone()) {
                continue;
            }
            // Manifests and indexes reference further blobs; anything else is a leaf.
            let Ok(size) = layout.store().size(&d) else { continue };
            if size > 4 << 20 {
                continue;
            }
            let Ok(bytes) = layout.store().read(&d) else { continue };
            if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&bytes) {
                collect_digests(&v, &mut todo);
            }
        }
        keep.extend(Lease::live_blobs(layout.dir())?);
        for (d, size) in layout.store().list()? {
            if !keep.contains(&d) {
                layout.store().delete(&d)?;
                removed.0 += 1;
                removed.1 += size;
            }
        }
        Ok(index)
    })?;
    Ok(removed)
}

fn collect_digests(v: &serde_json::Value, out: &mut Vec<Digest>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, val) in m {
                match (k.as_str(), val) {
                    ("digest" | "blob", serde_json::Value::String(s)) => {
                        if let Ok(d) = Digest::parse(s) {
                            out.push(d);
                        }
                    }
                    _ => collect_digests(val, out),
                }
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|x| collect_digests(x, out)),
        _ => {}
    }
}

/// A lease: the blobs an exporter is about to reference, announced before it links them so that a
/// concurrent garbage collection keeps them. Removed on drop; a crashed holder's lease is ignored
/// (its pid is gone) and deleted by the next collection.
struct Lease {
    path: PathBuf,
}

impl Lease {
    fn take(dir: &Path, blobs: &[Digest]) -> Result<Lease> {
        let leases = dir.join(LEASES);
        std::fs::create_dir_all(&leases).with_path("create lease dir", &leases)?;
        let nanos =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
        let path = leases.join(format!("{}-{nanos}.json", std::process::id()));
        let tmp = path.with_extension("tmp");
        let body = serde_json::to_vec(&blobs.iter().map(|d| d.as_str()).collect::<Vec<_>>())
            .map_err(|e| Error::with_source(ErrorKind::Internal, "encode lease", e))?;
        std::fs::write(&tmp, body).with_path("write lease", &tmp)?;
        std::fs::rename(&tmp, &path).with_path("commit lease", &path)?;
        Ok(Lease { path })
    }

    fn live_blobs(dir: &Path) -> Result<Vec<Digest>> {
        let leases = dir.join(LEASES);
        let mut out = Vec::new();
        let Ok(entries) = std::fs::read_dir(&leases) else { return Ok(out) };
        for e in entries.flatten() {
            let p = e.path();
            let name = e.file_name().to_string_lossy().to_string();
            let pid: Option<u32> = name.split('-').next().and_then(|s| s.parse().ok());
            let alive = pid.map(|p| Path::new(&format!("/proc/{p}")).exists()).unwrap_or(false);
            if !alive {
                let _ = std::fs::remove_file(&p);
                continue;
            }
            if let Ok(bytes) = std::fs::read(&p) {
                let list: Vec<String> = serde_json::from_slice(&bytes).unwrap_or_default();
                out.extend(list.iter().filter_map(|s| Digest::parse(s).ok()));
            }
        }
        Ok(out)
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Tags, record counts and bytes of a local cache directory (`kiln cache ls`).
#[derive(Debug, Clone)]
pub struct TagInfo {
    /// The tag.
    pub tag: String,
    /// Records in its cache config.
    pub records: usize,
    /// Records with a result.
    pub results: usize,
    /// Bytes of the layer blobs it references.
    pub bytes: u64,
}

/// Lists the tags of a local cache directory.
pub fn list_local(dir: &Path) -> Result<Vec<TagInfo>> {
    let layout = OciLayout::open(dir)?;
    let mut out = Vec::new();
    for m in layout.index()?.manifests() {
        let Some(tag) = m.annotations().as_ref().and_then(|a| a.get(crate::content::layout::REF_NAME_ANNOTATION))
        else {
            continue;
        };
        let records = read_records(&layout, tag)?;
        let mut blobs: HashMap<Digest, u64> = HashMap::new();
        for r in &records {
            for l in r.layers.iter().flatten() {
                blobs.insert(l.digest.clone(), l.size);
            }
        }
        out.push(TagInfo {
            tag: tag.clone(),
            records: records.len(),
            results: records.iter().filter(|r| r.layers.is_some()).count(),
            bytes: blobs.values().sum(),
        });
    }
    Ok(out)
}

/// What `prune_local` removed.
#[derive(Debug, Clone, Default)]
pub struct LocalPruneReport {
    /// Tags removed.
    pub tags: Vec<String>,
    /// Blobs removed.
    pub blobs: usize,
    /// Bytes freed.
    pub bytes: u64,
}

/// Removes tags of a local cache directory — all but the `keep_tags` newest, and/or those older
/// than `keep_duration` — then every blob no remaining tag references.
pub fn prune_local(
    dir: &Path,
    keep_tags: Option<usize>,
    keep_duration: Option<std::time::Duration>,
) -> Result<LocalPruneReport> {
    let layout = OciLayout::open(dir)?;
    let mut report = LocalPruneReport::default();
    let now = super::records::rfc3339_now();
    let cutoff = keep_duration.map(|d| {
        let secs = std::time::SystemTime::now()
            .checked_sub(d)
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_secs())
            .unwrap_or(0);
        super::records::rfc3339_at(secs)
    });
    layout.update_index(|mut index| {
        let mut entries: Vec<(String, usize, Descriptor)> = index
            .manifests()
            .iter()
            .enumerate()
            .map(|(pos, m)| {
                let created = m.annotations().as_ref().and_then(|a| a.get(CREATED_ANNOTATION)).cloned();
                (created.unwrap_or_else(|| now.clone()), pos, m.clone())
            })
            .collect();
        // Newest first (RFC 3339 UTC strings sort chronologically; later index entries win ties).
        entries.sort_by(|a, b| (&b.0, b.1).cmp(&(&a.0, a.1)));
        let mut kept = Vec::new();
        for (i, (created, _, m)) in entries.into_iter().enumerate() {
            let too_many = keep_tags.map(|n| i >= n).unwrap_or(false);
            let too_old = cutoff.as_ref().map(|c| &created < c).unwrap_or(false);
            if too_many || too_old {
                let tag = m
                    .annotations()
                    .as_ref()
                    .and_then(|a| a.get(crate::content::layout::REF_NAME_ANNOTATION))
                    .cloned()
                    .unwrap_or_else(|| m.digest().to_string());
                report.tags.push(tag);
            } else {
                kept.push(m);
            }
        }
        index.set_manifests(kept);
        Ok(index)
    })?;
    let (blobs, bytes) = gc(&layout)?;
    report.blobs = blobs;
    report.bytes = bytes;
    Ok(report)
}
