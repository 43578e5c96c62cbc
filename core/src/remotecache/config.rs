//! BuildKit's cache config v0 (`application/vnd.buildkit.cacheconfig.v0`): the JSON model with
//! BuildKit's exact field names and omit-empty behaviour, its validation, and the two wrappers
//! that reference it — the older OCI index form (layers and config as `manifests[]` entries) and
//! the image-manifest form (config descriptor = cache config, `layers[]` = layers).
//!
//! Go quirks kept on purpose: `parent` is an `int` with `omitempty`, so a layer whose parent is
//! layer 0 has no `parent` key (absent means 0, and "no parent" is written as -1); a record's
//! results are under `"layers"`; `link` and `layer` are always written.

use crate::digest::Digest;
use crate::error::{Error, ErrorKind, Result};
use oci_spec::image::{Descriptor, ImageIndex, ImageManifest, MediaType};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};

/// Media type of the cache config blob.
pub const CACHE_CONFIG_MEDIA_TYPE: &str = "application/vnd.buildkit.cacheconfig.v0";
/// Layer descriptor annotation holding the layer's uncompressed digest (diffID).
pub const ANNOTATION_UNCOMPRESSED: &str = "containerd.io/uncompressed";
/// Layer descriptor annotation holding the layer's creation time (RFC 3339).
pub const ANNOTATION_CREATED_AT: &str = "buildkit/createdat";

/// The cache config: a pool of layer blobs (each with a parent) and cache records linked by
/// their inputs.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct CacheConfig {
    /// Layer blobs; a result refers to its top layer, which chains down through `parent`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub layers: Vec<CacheLayer>,
    /// Cache records.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub records: Vec<CacheRecord>,
}

/// One layer blob and its parent layer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheLayer {
    /// The (compressed) blob digest, as listed in the index/manifest.
    pub blob: Digest,
    /// Index of the parent layer in [`CacheConfig::layers`], -1 for a base layer. Absent in JSON
    /// means 0 (Go `omitempty` on an int).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub parent: i64,
    /// Optional descriptor facts carried in the config itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<LayerAnnotations>,
}

/// Layer facts BuildKit may embed in the config (normally they live on the descriptors).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct LayerAnnotations {
    /// The blob's media type.
    #[serde(rename = "mediaType", default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    /// The uncompressed digest.
    #[serde(rename = "diffID", default, skip_serializing_if = "Option::is_none")]
    pub diff_id: Option<Digest>,
    /// The blob size in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<i64>,
    /// Creation time, RFC 3339.
    #[serde(rename = "createdAt", default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
    /// Further annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub additional: BTreeMap<String, String>,
}

/// One cache record: a cache key digest, its results and the records its inputs link to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheRecord {
    /// Results: each names the top layer of a layer chain (JSON `"layers"`).
    #[serde(rename = "layers", default, skip_serializing_if = "Vec::is_empty")]
    pub results: Vec<CacheResult>,
    /// Results given as explicit layer lists (JSON `"chains"`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub chains: Vec<ChainedResult>,
    /// The record's cache key digest.
    pub digest: Digest,
    /// For each input index, the records that may feed it (with an optional selector).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inputs: Vec<Vec<CacheInput>>,
}

/// A result of a record: the index of its top layer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheResult {
    /// Index into [`CacheConfig::layers`] (JSON `"layer"`).
    #[serde(rename = "layer", default)]
    pub layer_index: i64,
    /// When the result was created, RFC 3339.
    #[serde(rename = "createdAt", default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
}

/// A result given as an explicit list of layer indexes, base first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainedResult {
    /// Indexes into [`CacheConfig::layers`] (JSON `"layers"`).
    #[serde(rename = "layers", default)]
    pub layer_indexes: Vec<i64>,
    /// When the result was created, RFC 3339.
    #[serde(rename = "createdAt", default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
}

/// A link from an input of a record to another record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheInput {
    /// Selector of the link (a path inside the input), empty for none.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub selector: String,
    /// Index into [`CacheConfig::records`] (JSON `"link"`).
    #[serde(default)]
    pub link: i64,
}

fn is_zero(v: &i64) -> bool {
    *v == 0
}

fn content_err(msg: String) -> Error {
    Error::new(ErrorKind::Content, msg)
}

impl CacheConfig {
    /// Serialises to JSON BuildKit reads (same field names and omit-empty rules).
    pub fn to_json(&self) -> Result<Vec<u8>> {
        serde_json::to_vec(self)
            .map_err(|e| Error::with_source(ErrorKind::Internal, "serialising the cache config failed", e))
    }

    /// Checks every index: layer parents and result layers in range and free of cycles, record
    /// links in range and acyclic. Errors name the layer or record.
    pub fn validate(&self) -> Result<()> {
        let nl = self.layers.len();
        for (i, l) in self.layers.iter().enumerate() {
            if l.parent != -1 && !(0..nl as i64).contains(&l.parent) {
                return Err(content_err(format!(
                    "cache config layer {i} ({}): parent index {} is out of range: expected -1 or 0..{nl}",
                    l.blob, l.parent
                )));
            }
        }
        // Each layer has one parent: walk up from every layer until a layer already known to
        // end at a base (Done), marking the walk's layers (OnWalk(start)); meeting a layer of the
        // current walk is a loop. Every layer is walked once, so this is linear.
        #[derive(Clone, Copy, PartialEq)]
        enum Mark {
            New,
            OnWalk(usize),
            Done,
        }
        let mut mark = vec![Mark::New; nl];
        let mut walk = Vec::new();
        for start in 0..nl {
            walk.clear();
            let mut cur = start as i64;
            while cur != -1 {
                match mark[cur as usize] {
                    Mark::Done => break,
                    Mark::OnWalk(s) if s == start => {
                        return Err(content_err(format!(
                            "cache config layer {start} ({}): its parent chain loops back to layer {cur}",
                            self.layers[start].blob
                        )));
                    }
                    // Walks that did not reach Done return early with an error.
                    Mark::OnWalk(_) | Mark::New => {}
                }
                mark[cur as usize] = Mark::OnWalk(start);
                walk.push(cur as usize);
                cur = self.layers[cur as usize].parent;
            }
            for &l in &walk {
                mark[l] = Mark::Done;
            }
        }
        let nr = self.records.len();
        let layer_ok = |idx: i64| (0..nl as i64).contains(&idx);
        for (i, r) in self.records.iter().enumerate() {
            let name = format!("cache config record {i} ({})", r.digest);
            for res in &r.results {
                if !layer_ok(res.layer_index) {
                    return Err(content_err(format!(
                        "{name}: result layer index {} is out of range 0..{nl}",
                        res.layer_index
                    )));
                }
            }
            for ch in &r.chains {
                if let Some(bad) = ch.layer_indexes.iter().find(|x| !layer_ok(**x)) {
                    return Err(content_err(format!("{name}: chain layer index {bad} is out of range 0..{nl}")));
                }
            }
            for (n, input) in r.inputs.iter().enumerate() {
                for link in input {
                    if !(0..nr as i64).contains(&link.link) {
                        return Err(content_err(format!(
                            "{name}: input {n} links to record {} which is out of range 0..{nr}",
                            link.link
                        )));
                    }
                }
            }
        }
        self.check_record_cycles()
    }

    /// Depth-first search over links (iterative, so huge configs cannot overflow the stack).
    fn check_record_cycles(&self) -> Result<()> {
        #[derive(Clone, Copy, PartialEq)]
        enum State {
            New,
            Open,
            Done,
        }
        // Links are range-checked by `validate` before this runs.
        let links: Vec<Vec<usize>> =
            self.records.iter().map(|r| r.inputs.iter().flatten().map(|l| l.link as usize).collect()).collect();
        let mut state = vec![State::New; self.records.len()];
        for root in 0..self.records.len() {
            if state[root] != State::New {
                continue;
            }
            // (record, next link position flattened over its inputs)
            let mut stack = vec![(root, 0usize)];
            state[root] = State::Open;
            while let Some(&mut (rec, ref mut pos)) = stack.last_mut() {
                match links[rec].get(*pos) {
                    None => {
                        state[rec] = State::Done;
                        stack.pop();
                    }
                    Some(&next) => {
                        *pos += 1;
                        match state[next] {
                            State::Done => {}
                            State::Open => {
                                return Err(content_err(format!(
                                    "cache config record {rec} ({}): its inputs link back to record {next} ({}), a cycle",
                                    self.records[rec].digest, self.records[next].digest
                                )));
                            }
                            State::New => {
                                state[next] = State::Open;
                                stack.push((next, 0));
                            }
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// The layer indexes of the chain ending at `top`, base layer first.
    pub fn layer_chain(&self, top: i64) -> Result<Vec<usize>> {
        let mut chain = Vec::new();
        let mut cur = top;
        while cur != -1 {
            if !(0..self.layers.len() as i64).contains(&cur) || chain.len() > self.layers.len() {
                return Err(content_err(format!("cache config: invalid layer chain from layer {top} (at {cur})")));
            }
            chain.push(cur as usize);
            cur = self.layers[cur as usize].parent;
        }
        chain.reverse();
        Ok(chain)
    }
}

/// Parses and validates a cache config blob.
pub fn parse_cache_config(bytes: &[u8]) -> Result<CacheConfig> {
    crate::content::limits::check_size(bytes.len(), "cache config")?;
    crate::content::limits::check_json_depth(bytes, "cache config")?;
    let config: CacheConfig = serde_json::from_slice(bytes)
        .map_err(|e| Error::with_source(ErrorKind::Content, format!("invalid cache config JSON: {e}"), e))?;
    config.validate()?;
    Ok(config)
}

fn is_cache_config(d: &Descriptor) -> bool {
    d.media_type().to_string() == CACHE_CONFIG_MEDIA_TYPE
}

/// Checks a descriptor's digest is a sha256 digest kiln can address.
fn checked(d: Descriptor, what: &str) -> Result<Descriptor> {
    Digest::parse(d.digest().as_ref()).map_err(|e| content_err(format!("{what}: {e}")))?;
    Ok(d)
}

/// Parses BuildKit's index form: an OCI index whose `manifests[]` holds the layer descriptors and
/// exactly one cache config descriptor. Returns (layers, config).
pub fn parse_cache_index(bytes: &[u8]) -> Result<(Vec<Descriptor>, Descriptor)> {
    crate::content::limits::check_size(bytes.len(), "cache index")?;
    crate::content::limits::check_json_depth(bytes, "cache index")?;
    let index: ImageIndex = serde_json::from_slice(bytes)
        .map_err(|e| Error::with_source(ErrorKind::Content, format!("invalid cache index JSON: {e}"), e))?;
    let (configs, layers): (Vec<Descriptor>, Vec<Descriptor>) =
        index.manifests().iter().cloned().partition(is_cache_config);
    let config = match <[Descriptor; 1]>::try_from(configs) {
        Ok([c]) => checked(c, "cache config descriptor")?,
        Err(v) => {
            return Err(content_err(format!(
                "cache index has {} entries of media type {CACHE_CONFIG_MEDIA_TYPE}: expected exactly one",
                v.len()
            )))
        }
    };
    let layers = layers.into_iter().map(|d| checked(d, "cache layer descriptor")).collect::<Result<_>>()?;
    Ok((layers, config))
}

/// Parses the image-manifest form: an OCI image manifest whose `config` has the cache config
/// media type and whose `layers` are the layer descriptors. Returns (layers, config).
pub fn parse_cache_manifest(bytes: &[u8]) -> Result<(Vec<Descriptor>, Descriptor)> {
    crate::content::limits::check_size(bytes.len(), "cache manifest")?;
    crate::content::limits::check_json_depth(bytes, "cache manifest")?;
    let manifest: ImageManifest = serde_json::from_slice(bytes)
        .map_err(|e| Error::with_source(ErrorKind::Content, format!("invalid cache manifest JSON: {e}"), e))?;
    let config = manifest.config().clone();
    if !is_cache_config(&config) {
        return Err(content_err(format!(
            "cache manifest config has media type {}: expected {CACHE_CONFIG_MEDIA_TYPE}",
            config.media_type()
        )));
    }
    let config = checked(config, "cache config descriptor")?;
    let layers =
        manifest.layers().iter().cloned().map(|d| checked(d, "cache layer descriptor")).collect::<Result<_>>()?;
    Ok((layers, config))
}

/// Parses either form, choosing by the document's shape (`manifests` → index, `config` →
/// manifest). Returns (layers, config).
pub fn parse_cache_root(bytes: &[u8]) -> Result<(Vec<Descriptor>, Descriptor)> {
    crate::content::limits::check_size(bytes.len(), "cache manifest/index")?;
    crate::content::limits::check_json_depth(bytes, "cache manifest/index")?;
    let v: serde_json::Value = serde_json::from_slice(bytes)
        .map_err(|e| Error::with_source(ErrorKind::Content, format!("invalid cache manifest/index JSON: {e}"), e))?;
    if v.get("manifests").is_some() {
        parse_cache_index(bytes)
    } else if v.get("config").is_some() {
        parse_cache_manifest(bytes)
    } else {
        Err(content_err("cache root is neither an OCI index (manifests) nor an OCI manifest (config)".into()))
    }
}

/// A layer descriptor with the annotations BuildKit writes and reads: the diffID under
/// [`ANNOTATION_UNCOMPRESSED`] and, when known, the creation time under [`ANNOTATION_CREATED_AT`].
pub fn layer_descriptor(
    media_type: &str,
    blob: &Digest,
    size: u64,
    diff_id: &Digest,
    created_at: Option<&str>,
) -> Result<Descriptor> {
    let mut d = Descriptor::new(MediaType::from(media_type), size, oci_digest(blob)?);
    let mut ann = HashMap::new();
    ann.insert(ANNOTATION_UNCOMPRESSED.to_owned(), diff_id.to_string());
    if let Some(t) = created_at {
        ann.insert(ANNOTATION_CREATED_AT.to_owned(), t.to_owned());
    }
    d.set_annotations(Some(ann));
    Ok(d)
}

/// The cache config descriptor for a serialised config blob.
pub fn config_descriptor(config_json: &[u8]) -> Result<Descriptor> {
    Ok(Descriptor::new(
        MediaType::from(CACHE_CONFIG_MEDIA_TYPE),
        config_json.len() as u64,
        oci_digest(&Digest::of(config_json))?,
    ))
}

/// The diffID annotation of a layer descriptor, if present and valid.
pub fn layer_diff_id(d: &Descriptor) -> Option<Digest> {
    d.annotations().as_ref()?.get(ANNOTATION_UNCOMPRESSED).and_then(|s| Digest::parse(s).ok())
}

/// The creation-time annotation of a layer descriptor, if present.
pub fn layer_created_at(d: &Descriptor) -> Option<&str> {
    d.annotations().as_ref()?.get(ANNOTATION_CREATED_AT).map(String::as_str)
}

/// The kiln digest of a descriptor (descriptors returned by the parsers here are sha256).
pub fn descriptor_digest(d: &Descriptor) -> Result<Digest> {
    Digest::parse(d.digest().as_ref())
}

fn oci_digest(d: &Digest) -> Result<oci_spec::image::Digest> {
    d.as_str()
        .parse()
        .map_err(|e| Error::with_source(ErrorKind::Internal, format!("digest {d} rejected by oci-spec"), e))
}

/// Serialises the index form: `manifests` = layers followed by the config (BuildKit's order).
pub fn cache_index_json(layers: &[Descriptor], config: &Descriptor) -> Result<Vec<u8>> {
    let mut manifests = layers.to_vec();
    manifests.push(config.clone());
    let index = oci_spec::image::ImageIndexBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageIndex)
        .manifests(manifests)
        .build()
        .map_err(|e| Error::with_source(ErrorKind::Internal, "building the cache index failed", e))?;
    serde_json::to_vec(&index)
        .map_err(|e| Error::with_source(ErrorKind::Internal, "serialising the cache index failed", e))
}

/// Serialises the image-manifest form: `config` = the cache config, `layers` = the layers.
pub fn cache_manifest_json(layers: &[Descriptor], config: &Descriptor) -> Result<Vec<u8>> {
    let manifest = oci_spec::image::ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageManifest)
        .config(config.clone())
        .layers(layers.to_vec())
        .build()
        .map_err(|e| Error::with_source(ErrorKind::Internal, "building the cache manifest failed", e))?;
    serde_json::to_vec(&manifest)
        .map_err(|e| Error::with_source(ErrorKind::Internal, "serialising the cache manifest failed", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(n: u8) -> Digest {
        Digest::of(&[n])
    }

    fn layer(n: u8, parent: i64) -> CacheLayer {
        CacheLayer { blob: d(n), parent, annotations: None }
    }

    fn record(n: u8, links: &[i64]) -> CacheRecord {
        CacheRecord {
            results: vec![],
            chains: vec![],
            digest: d(100 + n),
            inputs: vec![links.iter().map(|l| CacheInput { selector: String::new(), link: *l }).collect()],
        }
    }

    #[test]
    fn parent_zero_is_omitted_and_absent_means_zero() {
        let c = CacheConfig { layers: vec![layer(0, -1), layer(1, 0)], records: vec![] };
        let json = String::from_utf8(c.to_json().unwrap()).unwrap();
        assert!(json.contains("\"parent\":-1"));
        assert_eq!(json.matches("parent").count(), 1, "{json}");
        assert_eq!(parse_cache_config(json.as_bytes()).unwrap(), c);
    }

    #[test]
    fn layer_cycles_and_ranges_are_rejected() {
        let c = CacheConfig { layers: vec![layer(0, 1), layer(1, 0)], records: vec![] };
        assert!(c.validate().unwrap_err().to_string().contains("loops"));
        let c = CacheConfig { layers: vec![layer(0, 5)], records: vec![] };
        assert!(c.validate().unwrap_err().to_string().contains("parent index 5"));
        let c = CacheConfig { layers: vec![layer(0, -1), layer(1, 0), layer(2, 1)], records: vec![] };
        assert_eq!(c.layer_chain(2).unwrap(), vec![0, 1, 2]);
    }

    #[test]
    fn record_cycles_name_the_record() {
        let c = CacheConfig { layers: vec![], records: vec![record(0, &[1]), record(1, &[2]), record(2, &[0])] };
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("cycle") && e.contains("record"), "{e}");
        let ok = CacheConfig { layers: vec![], records: vec![record(0, &[1, 2]), record(1, &[2]), record(2, &[])] };
        ok.validate().unwrap();
        let bad = CacheConfig { layers: vec![], records: vec![record(0, &[7])] };
        assert!(bad.validate().unwrap_err().to_string().contains("record 7"));
    }
}
