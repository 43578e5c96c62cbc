//! Runs the cache exporters of a solve: collects a record for every vertex output (its key and its
//! inputs' keys), with the result's layers for every output (`mode=max`) or only the final result
//! (`mode=min`), and writes them with `remotecache`. Layer blobs are computed once per snapshot and
//! reused; a result that came from an imported cache reuses the imported blobs.

use super::exporters::layers_of;
use super::prefetch::LayerFormat;
use super::refs::ResultRef;
use super::{keys, ops, Solve};
use crate::content::layer::{Compression, LayerBlob};
use crate::error::{Error, ErrorKind, Result};
use crate::options::{CacheCompression, CacheExportSpec, CacheMode, CacheTarget};
use crate::progress::ProgressEvent;
use crate::remotecache::ExportRecord;
use std::sync::Arc;

/// Exports the solve's cache to every cache exporter.
pub async fn run(solve: &Arc<Solve>) -> Result<()> {
    for (i, spec) in solve.opts.cache_exports.iter().enumerate() {
        let vertex = format!("cache-export:{i}");
        let name = format!("exporting cache to {spec}");
        solve.emit(ProgressEvent::VertexStarted { vertex: vertex.clone(), name: name.clone() });
        let t0 = std::time::Instant::now();
        let res = export_one(solve, spec).await;
        match res {
            Ok(()) => solve.emit(ProgressEvent::VertexCompleted { vertex, name, duration: t0.elapsed() }),
            Err(e) if spec.ignore_error => {
                solve.emit(ProgressEvent::Warning { message: format!("cache export {spec} failed (ignored): {e}") });
                solve.emit(ProgressEvent::VertexCompleted { vertex, name, duration: t0.elapsed() });
            }
            Err(e) => {
                solve.emit(ProgressEvent::VertexError { vertex, name, error: e.to_string() });
                return Err(e.context(format!("cache export {spec}")));
            }
        }
    }
    Ok(())
}

pub(super) fn compression(spec: &CacheExportSpec) -> Compression {
    match spec.compression {
        CacheCompression::Gzip => Compression::Gzip { level: spec.compression_level.unwrap_or(6).clamp(0, 9) as u32 },
        CacheCompression::Zstd => Compression::Zstd { level: spec.compression_level.unwrap_or(3) },
        CacheCompression::Uncompressed => Compression::Uncompressed,
    }
}

async fn export_one(solve: &Arc<Solve>, spec: &CacheExportSpec) -> Result<()> {
    let fin = solve.def.output();
    let mut pending = Vec::new();
    for v in solve.def.vertices() {
        let ki = solve.key_future(&v.digest).await.map_err(|e| (*e.0).clone())?;
        // A local source's own result is the caller's build context: never exported (as in
        // BuildKit), so files the build never used cannot reach a shared cache.
        let local = matches!(v.source_spec(), Ok(Some(crate::graph::SourceSpec::Local { .. })));
        for &idx in ops::op_solver(v).outputs() {
            let is_final = fin.as_ref().map(|(d, i)| d == &v.digest && *i == idx).unwrap_or(false);
            let want = !local && (spec.mode == CacheMode::Max || is_final);
            pending.push((ki.clone(), idx, want));
        }
    }
    // Every layer the export needs is made in parallel (one per core), each at most once: those
    // of vertices executed in this solve are already being made (or made) since they completed.
    let wanted: Vec<(Arc<super::KeyInfo>, i64)> =
        pending.iter().filter(|(_, _, want)| *want).map(|(ki, idx, _)| (ki.clone(), *idx)).collect();
    let solve2 = solve.clone();
    let refs = super::spawn_counted(solve.task_tokens(), move || -> Result<Vec<ResultRef>> {
        let mut refs = Vec::new();
        for (ki, idx) in wanted {
            if let Some(outs) = solve2.lookup(&ki.worker, &ki.key, &[idx])? {
                refs.extend(outs.get(&idx).cloned().flatten());
            }
        }
        Ok(refs)
    })
    .await
    .map_err(|e| Error::with_source(ErrorKind::Internal, "cache export task", e))??;
    let format = LayerFormat::of_cache_export(spec);
    for r in &refs {
        solve.prefetch.start_chain(solve, r, &format);
    }
    solve.prefetch.wait().await;
    let solve2 = solve.clone();
    let spec = spec.clone();
    let tokens = solve.task_tokens();
    super::spawn_counted(tokens, move || {
        let solve = solve2;
        let comp = compression(&spec);
        let mut records = Vec::with_capacity(pending.len());
        for (ki, idx, want) in pending {
            let digest = keys::output_key(&ki.key, idx);
            let layers = if want { result_layers(&solve, &ki, idx, &digest, &comp, &spec)? } else { None };
            records.push(ExportRecord { digest, inputs: ki.input_keys.clone(), layers });
        }
        if spec.cache_mounts {
            records.extend(cache_mount_records(&solve, &comp, spec.oci_mediatypes)?);
        }
        match &spec.target {
            CacheTarget::Local { dir, tag } => {
                crate::remotecache::export::export_local(solve.solver.cache.content(), dir, tag, &spec, records)
                    .map(|_| ())
            }
            CacheTarget::Registry { reference, insecure } => crate::remotecache::export::export_registry(
                solve.solver.cache.content(),
                reference,
                *insecure,
                &spec,
                records,
                &solve.registry,
            )
            .map(|_| ()),
        }
    })
    .await
    .map_err(|e| Error::with_source(ErrorKind::Internal, "cache export task", e))?
}

fn result_layers(
    solve: &Solve,
    ki: &super::KeyInfo,
    idx: i64,
    digest: &crate::Digest,
    comp: &Compression,
    spec: &CacheExportSpec,
) -> Result<Option<Vec<LayerBlob>>> {
    if let Some(outs) = solve.lookup(&ki.worker, &ki.key, &[idx])? {
        return match outs.get(&idx).cloned().flatten() {
            Some(r) => Ok(Some(layers_of(&solve.solver.cache, &r, comp, spec.oci_mediatypes, spec.force_compression)?)),
            None => Ok(Some(Vec::new())),
        };
    }
    // Not materialised locally (a dependent came from the cache): reuse an imported result's blobs.
    if let Some(hit) = solve.imports.lookup(digest) {
        for l in &hit.layers {
            if !solve.solver.cache.content().has(&l.digest) {
                solve.imports.fetch(hit.importer, &l.digest, solve.solver.cache.content())?;
            }
            // Never re-export a diffID the imported cache only claimed.
            crate::content::layer::verify_diff_id(solve.solver.cache.content(), l)?;
        }
        return Ok(Some(hit.layers));
    }
    Ok(None)
}

/// The ids of the cache mounts the graph uses.
pub(crate) fn cache_mount_ids(solve: &Solve) -> Vec<String> {
    use crate::graph::pb;
    let mut ids = std::collections::BTreeSet::new();
    for v in solve.def.vertices() {
        if let Some(pb::op::Op::Exec(e)) = &v.op.op {
            for m in e.mounts.iter().filter(|m| m.mount_type == pb::MountType::Cache as i32) {
                let id = m.cache_opt.as_ref().map(|c| c.id.clone()).unwrap_or_default();
                ids.insert(if id.is_empty() { m.dest.clone() } else { id });
            }
        }
    }
    ids.into_iter().collect()
}

/// One record per cache mount of the graph, holding its directory's contents as a layer.
fn cache_mount_records(solve: &Solve, comp: &Compression, oci: bool) -> Result<Vec<ExportRecord>> {
    let mut out = Vec::new();
    for id in cache_mount_ids(solve) {
        let dir = solve.solver.cache.mounts().dir_of(&id);
        if !dir.is_dir() {
            continue;
        }
        let layer = crate::content::layer::write_layer(solve.solver.cache.content(), comp, oci, |w| {
            crate::export::tar::write_tree_tar(&dir, w)
        })?;
        out.push(ExportRecord {
            digest: crate::remotecache::records::cache_mount_key(&id),
            inputs: Vec::new(),
            layers: Some(vec![layer]),
        });
    }
    Ok(out)
}
