//! Turning a chain of layer blobs (an image's, or an imported cache result's) into snapshots: one
//! snapshot per layer, keyed by the chain of diffIDs so identical layer stacks are shared, with
//! each blob remembered for the snapshot so later exports reuse it instead of recompressing.

use super::progress::ProgressEvent;
use super::refs::{commit_and_record, Active};
use super::ProgressSink;
use crate::cache::metadata::record_key;
use crate::content::layer::{layer_reader_verified, LayerBlob};
use crate::digest::Digest;
use crate::engine::EngineInner;
use crate::error::Result;
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
/// makes a blob present in the engine's content store. Returns the top snapshot (None: no layers).
pub fn apply_chain(
    engine: &EngineInner,
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
        if let Some(rec) = engine.meta.record(&record_key(&worker.name, &chain_key, 0))? {
            let id = SnapshotId(rec.snapshot);
            if worker.snapshotter.is_committed(&id) {
                parent = Some(id);
                continue;
            }
        }
        if !engine.content.has(&layer.digest) {
            fetch(&layer.digest)?;
        }
        let a = Active::prepare(&worker.snapshotter, parent.as_ref())?;
        let whiteouts = {
            let g = worker.snapshotter.mount(&a.id)?;
            // Verified against the blob digest and the declared diffID (an imported cache's
            // `containerd.io/uncompressed` annotation or an image config's `rootfs.diff_ids`).
            let mut reader = layer_reader_verified(&engine.content, layer)?;
            let (n, whiteouts) = apply_layer_counting(g.path(), &mut reader)?;
            // Read to the end so the blob's digest is verified even past the tar's end marker.
            std::io::copy(&mut reader, &mut std::io::sink())
                .map_err(|e| crate::Error::io("verify layer", engine.content.blob_path(&layer.digest), e))?;
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
            engine.meta.put_layer(&a.id.0, super::diff::DIFF_LAYER, layer)?;
        }
        let r = commit_and_record(engine, worker, &chain_key, 0, a, &format!("{name} layer {}", i + 1))?;
        engine.meta.put_layer(&r.snapshot.0, layer_format(&layer.media_type), layer)?;
        parent = Some(r.snapshot);
    }
    Ok(parent)
}
