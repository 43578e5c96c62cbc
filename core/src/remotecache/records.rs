//! The flat record model kiln exports and imports, and its conversion to and from BuildKit's
//! cache config: a record is an output key, the output keys of its inputs, and optionally the
//! layer chain (base first) of its result.

use super::config::{
    layer_descriptor, layer_diff_id, CacheConfig, CacheInput, CacheLayer, CacheRecord, CacheResult, LayerAnnotations,
};
use crate::content::layer::LayerBlob;
use crate::digest::Digest;
use crate::error::Result;
use oci_spec::image::Descriptor;
use std::collections::HashMap;

/// One exported cache record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportRecord {
    /// The record's key (a vertex output key).
    pub digest: Digest,
    /// The keys of the records its inputs come from, in input order.
    pub inputs: Vec<Digest>,
    /// The result's layers, base first (`Some(vec![])` = an empty filesystem); `None` = no result.
    pub layers: Option<Vec<LayerBlob>>,
}

/// The record key under which the contents of cache mount `id` travel (`cache-mounts=true`).
/// Such a record has no inputs, so BuildKit and kiln solvers never match it to a vertex.
pub fn cache_mount_key(id: &str) -> Digest {
    Digest::of(format!("kiln.cache-mount:{id}").as_bytes())
}

/// Now as RFC 3339 (UTC), as BuildKit writes `createdAt`.
pub fn rfc3339_now() -> String {
    rfc3339_at(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0))
}

/// Now as RFC 3339 (UTC) with nanoseconds, so that writes within one second still order.
pub fn rfc3339_nanos_now() -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let base = rfc3339_at(now.as_secs());
    format!("{}.{:09}Z", base.trim_end_matches('Z'), now.subsec_nanos())
}

/// Unix seconds `secs` as RFC 3339 (UTC).
pub fn rfc3339_at(secs: u64) -> String {
    let days = secs / 86400;
    let rem = secs % 86400;
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", rem / 3600, (rem % 3600) / 60, rem % 60)
}

/// Builds the cache config and the layer descriptors (in config layer order) for `records`.
pub fn to_config(records: &[ExportRecord]) -> Result<(CacheConfig, Vec<Descriptor>)> {
    let now = rfc3339_now();
    let mut cfg = CacheConfig::default();
    let mut descs: Vec<Descriptor> = Vec::new();
    let mut layer_index: HashMap<(Digest, i64), i64> = HashMap::new();
    let mut record_index: HashMap<Digest, i64> = HashMap::new();
    for r in records {
        if !record_index.contains_key(&r.digest) {
            record_index.insert(r.digest.clone(), record_index.len() as i64);
        }
    }
    let mut out: Vec<Option<CacheRecord>> = vec![None; record_index.len()];
    for r in records {
        let idx = record_index[&r.digest] as usize;
        let mut results = Vec::new();
        if let Some(layers) = &r.layers {
            let mut parent = -1i64;
            for l in layers {
                let k = (l.digest.clone(), parent);
                parent = match layer_index.get(&k) {
                    Some(i) => *i,
                    None => {
                        let i = cfg.layers.len() as i64;
                        cfg.layers.push(CacheLayer {
                            blob: l.digest.clone(),
                            parent,
                            annotations: Some(LayerAnnotations {
                                media_type: Some(l.media_type.clone()),
                                diff_id: Some(l.diff_id.clone()),
                                size: Some(l.size as i64),
                                created_at: Some(now.clone()),
                                additional: Default::default(),
                            }),
                        });
                        if !descs.iter().any(|d| d.digest().as_ref() == l.digest.as_str()) {
                            descs.push(layer_descriptor(&l.media_type, &l.digest, l.size, &l.diff_id, Some(&now))?);
                        }
                        layer_index.insert(k, i);
                        i
                    }
                };
            }
            if !layers.is_empty() {
                results.push(CacheResult { layer_index: parent, created_at: Some(now.clone()) });
            }
        }
        let inputs = r
            .inputs
            .iter()
            .map(|d| match record_index.get(d) {
                Some(link) => vec![CacheInput { selector: String::new(), link: *link }],
                None => vec![],
            })
            .collect();
        out[idx] = Some(CacheRecord { results, chains: vec![], digest: r.digest.clone(), inputs });
    }
    cfg.records = out.into_iter().flatten().collect();
    Ok((cfg, descs))
}

/// The most layer entries [`from_config`] materialises over all records' chains: records share
/// chains in the config, but a list of records holds one copy each.
pub const MAX_MATERIALISED_LAYERS: usize = 1 << 20;

/// The layers of a validated cache config as blobs, with their parents: every record whose
/// result chains through a layer shares it, and a chain is materialised only when asked for, so
/// a config of many records with long chains costs memory linear in its size.
#[derive(Debug, Default)]
pub struct LayerTable {
    blobs: Vec<Option<LayerBlob>>,
    parents: Vec<i64>,
    /// Length of the chain ending at each layer, 0 when some layer of it has no blob (no diffID).
    depth: Vec<usize>,
}

impl LayerTable {
    /// Builds the table of `cfg` (which must have passed [`CacheConfig::validate`]); descriptor
    /// facts win over what the config itself says.
    pub fn new(cfg: &CacheConfig, descs: &[Descriptor]) -> LayerTable {
        let by_digest: HashMap<&str, &Descriptor> = descs.iter().map(|d| (d.digest().as_ref(), d)).collect();
        let blob = |l: &CacheLayer| -> Option<LayerBlob> {
            let d = by_digest.get(l.blob.as_str());
            let ann = l.annotations.as_ref();
            let media_type = d
                .map(|d| d.media_type().to_string())
                .or_else(|| ann.and_then(|a| a.media_type.clone()))
                .unwrap_or_else(|| "application/vnd.oci.image.layer.v1.tar+gzip".to_owned());
            let diff_id = d.and_then(|d| layer_diff_id(d)).or_else(|| ann.and_then(|a| a.diff_id.clone()))?;
            let size = d.map(|d| d.size()).or_else(|| ann.and_then(|a| a.size).map(|s| s as u64)).unwrap_or(0);
            Some(LayerBlob { digest: l.blob.clone(), diff_id, size, media_type })
        };
        let n = cfg.layers.len();
        let blobs: Vec<Option<LayerBlob>> = cfg.layers.iter().map(blob).collect();
        let parents: Vec<i64> = cfg.layers.iter().map(|l| l.parent).collect();
        // usize::MAX = not computed yet. Each layer is walked once (validated: no loops), and a
        // walk never exceeds n steps even if it were not.
        let mut depth = vec![usize::MAX; n];
        let mut walk = Vec::new();
        for start in 0..n {
            walk.clear();
            let mut cur = start as i64;
            let mut below = 0usize;
            while cur >= 0 && (cur as usize) < n && walk.len() <= n {
                let c = cur as usize;
                if depth[c] != usize::MAX {
                    below = depth[c];
                    break;
                }
                walk.push(c);
                cur = parents[c];
            }
            let broken = walk.len() > n || (cur != -1 && (cur < 0 || cur as usize >= n));
            for &l in walk.iter().rev() {
                below = if broken || blobs[l].is_none() || (below == 0 && parents[l] != -1) { 0 } else { below + 1 };
                depth[l] = below;
            }
        }
        LayerTable { blobs, parents, depth }
    }

    /// The top layer of a record's first usable result (a complete chain), if any.
    pub fn result_top(&self, r: &CacheRecord) -> Option<usize> {
        let ok = |i: i64| -> Option<usize> {
            let i = usize::try_from(i).ok()?;
            (self.depth.get(i).copied().unwrap_or(0) > 0).then_some(i)
        };
        r.results
            .iter()
            .find_map(|res| ok(res.layer_index))
            .or_else(|| r.chains.iter().find_map(|c| c.layer_indexes.last().and_then(|t| ok(*t))))
    }

    /// The number of layers of the chain ending at `top` (0: incomplete or out of range).
    pub fn chain_len(&self, top: usize) -> usize {
        self.depth.get(top).copied().unwrap_or(0)
    }

    /// The chain ending at `top`, base first (empty when incomplete).
    pub fn chain(&self, top: usize) -> Vec<LayerBlob> {
        let len = self.chain_len(top);
        let mut out = Vec::with_capacity(len);
        let mut cur = top as i64;
        while cur >= 0 && out.len() < len {
            let Some(Some(b)) = self.blobs.get(cur as usize) else { return Vec::new() };
            out.push(b.clone());
            cur = self.parents[cur as usize];
        }
        out.reverse();
        out
    }
}

/// Reads records back from a cache config and its layer descriptors (a result's layer chain is
/// resolved through `parent`; blobs without a descriptor are kept with what the config says).
/// A config whose results would total more than [`MAX_MATERIALISED_LAYERS`] layers is refused.
pub fn from_config(cfg: &CacheConfig, descs: &[Descriptor]) -> Result<Vec<ExportRecord>> {
    let table = LayerTable::new(cfg, descs);
    let mut total = 0usize;
    let mut out = Vec::with_capacity(cfg.records.len());
    for r in &cfg.records {
        let layers = match table.result_top(r) {
            Some(top) => {
                total = total.saturating_add(table.chain_len(top));
                if total > MAX_MATERIALISED_LAYERS {
                    return Err(crate::error::Error::new(
                        crate::error::ErrorKind::Content,
                        format!(
                            "cache config: its {} records' results total more than {MAX_MATERIALISED_LAYERS} layers",
                            cfg.records.len()
                        ),
                    ));
                }
                Some(table.chain(top))
            }
            None => None,
        };
        let inputs = r
            .inputs
            .iter()
            .filter_map(|alts| alts.first())
            .filter_map(|i| usize::try_from(i.link).ok().and_then(|l| cfg.records.get(l)).map(|l| l.digest.clone()))
            .collect();
        out.push(ExportRecord { digest: r.digest.clone(), inputs, layers });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339() {
        assert_eq!(rfc3339_at(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339_at(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339_at(951_782_400), "2000-02-29T00:00:00Z");
    }
}
