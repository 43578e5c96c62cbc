//! Turning a chain of layer blobs (an image's, or an imported cache result's) into snapshots: one
//! snapshot per layer, keyed by the chain of diffIDs so identical layer stacks are shared, with
//! each blob remembered for the snapshot so later exports reuse it instead of recompressing.

use super::refs::Active;
use super::ProgressSink;
use crate::cache::CacheManager;
use crate::content::layer::{layer_reader_verified, LayerBlob};
use crate::digest::Digest;
use crate::error::Result;
use crate::progress::ProgressEvent;
use crate::snapshot::{apply_layer_counting, SnapshotId};
use crate::worker::pool::Worker;
use std::sync::Arc;

/// The layer-format key under which a blob of `media_type` is remembered for a snapshot.
pub fn layer_format(media_type: &str) -> &'static str {
    if media_type.ends_with("gzip") {
        "gzip"
    } else if media_type.ends_with("zstd") {
        "zstd"
    } else {
        "uncompressed"
    }
}

/// Applies `layers` (base first) on `worker`, reusing snapshots of identical chains; `fetch`
/// makes a blob present in the cache's content store. Returns the top snapshot (None: no layers).
pub fn apply_chain(
    cache: &CacheManager,
    worker: &Arc<Worker>,
    layers: &[LayerBlob],
    fetch: &dyn Fn(&Digest) -> Result<()>,
    name: &str,
    vertex: &str,
    progress: &ProgressSink,
) -> Result<Option<SnapshotId>> {
    let mut parent: Option<SnapshotId> = None;
    let mut chain_key = Digest::of(b"layers");
    for (i, layer) in layers.iter().enumerate() {
        chain_key = Digest::of(format!("{chain_key}\n{}", layer.diff_id).as_bytes());
        if let Some(id) = cache.recorded(worker, &chain_key, 0)? {
            parent = Some(id);
            continue;
        }
        if !cache.content().has(&layer.digest) {
            fetch(&layer.digest)?;
        }
        let a = Active::prepare(&worker.snapshotter, parent.as_ref())?;
        let whiteouts = {
            let g = worker.snapshotter.mount(&a.id)?;
            // Verified against the blob digest and the declared diffID (an imported cache's
            // `containerd.io/uncompressed` annotation or an image config's `rootfs.diff_ids`).
            let mut reader = layer_reader_verified(cache.content(), layer)?;
            let (n, whiteouts) = apply_layer_counting(g.path(), &mut reader)?;
            // Read to the end so the blob's digest is verified even past the tar's end marker.
            std::io::copy(&mut reader, &mut std::io::sink())
                .map_err(|e| crate::Error::io("verify layer", cache.content().blob_path(&layer.digest), e))?;
            progress.emit(ProgressEvent::Status {
                vertex: vertex.to_owned(),
                id: format!("extracting layer {}/{}", i + 1, layers.len()),
                current: n,
                total: None,
            });
            whiteouts
        };
        if parent.is_none() && whiteouts > 0 {
            // A base layer's whiteouts hide nothing in its own tree but are part of the layer (an
            // exported diff result): keep the blob authoritative so merges still delete.
            cache.put_layer(&a.id, super::diff::DIFF_LAYER, layer)?;
        }
        let r = cache.commit_and_record(worker, &chain_key, 0, a, &format!("{name} layer {}", i + 1))?;
        cache.put_layer(&r.snapshot, layer_format(&layer.media_type), layer)?;
        parent = Some(r.snapshot);
    }
    Ok(parent)
}
