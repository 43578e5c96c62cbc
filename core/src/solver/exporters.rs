//! Runs the result exporters of a solve: `local` (a directory), `tar` (a tar file), `oci` (an OCI
//! image layout dir or tar, layers computed once per snapshot and reused by every later export).

use super::job::output_image_config;
use super::refs::{chain, ResultRef};
use super::Solve;
use crate::cache::CacheManager;
use crate::content::image::ImageWriteOptions;
use crate::content::layer::{clamp_layer_times, write_layer, Compression, LayerBlob};
use crate::error::{Error, ErrorKind, Result};
use crate::graph::{ImageConfig, Platform};
use crate::options::{ImageExportAttrs, OutputSpec};
use crate::progress::ProgressEvent;
use crate::snapshot::SnapshotId;
use crate::worker::pool::Worker;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

/// Exports `result` to every output of the solve; returns exporter metadata.
pub async fn run(solve: &Arc<Solve>, result: Option<&ResultRef>) -> Result<BTreeMap<String, String>> {
    run_with(solve, result, &solve.opts.outputs, &solve.opts.image_config).await
}

/// Exports `result` to `outputs` with `image_config` as the images' config (a client-side build
/// gives its own outputs per named result and the config its function returned).
pub async fn run_with(
    solve: &Arc<Solve>,
    result: Option<&ResultRef>,
    outputs: &[OutputSpec],
    image_config: &ImageConfig,
) -> Result<BTreeMap<String, String>> {
    let mut response = BTreeMap::new();
    for (i, out) in outputs.iter().enumerate() {
        let cache = solve.solver.cache.clone();
        let result = result.cloned();
        let out = out.clone();
        let image = ImageDefaults {
            config: image_config.clone(),
            platform: solve.opts.build_platform(),
            source_date_epoch: solve.opts.source_date_epoch,
        };
        let vertex = format!("export:{i}");
        solve.emit(ProgressEvent::VertexStarted { vertex: vertex.clone(), name: describe(&out) });
        let t0 = std::time::Instant::now();
        let registry = solve.registry.clone();
        let tokens = solve.task_tokens();
        let res = super::spawn_counted(tokens, move || export_one(&cache, result.as_ref(), &out, &image, &registry))
            .await
            .map_err(|e| Error::with_source(ErrorKind::Internal, "export task", e))?;
        match res {
            Ok(meta) => {
                response.extend(meta);
                solve.emit(ProgressEvent::VertexCompleted {
                    vertex,
                    name: describe(&outputs[i]),
                    duration: t0.elapsed(),
                });
            }
            Err(e) => {
                solve.emit(ProgressEvent::VertexError { vertex, name: describe(&outputs[i]), error: e.to_string() });
                return Err(e);
            }
        }
    }
    Ok(response)
}

fn describe(o: &OutputSpec) -> String {
    match o {
        OutputSpec::Local { dest } => format!("exporting to directory {}", dest.display()),
        OutputSpec::Tar { dest } => format!("exporting to tar {}", dest.display()),
        OutputSpec::Oci { dest, .. } => format!("exporting to oci image format {}", dest.display()),
        OutputSpec::Image { name, .. } => format!("exporting to image {name}"),
    }
}

fn with_root<T>(cache: &CacheManager, result: Option<&ResultRef>, f: impl FnOnce(&Path) -> Result<T>) -> Result<T> {
    match result {
        Some(r) => {
            let g = r.worker.snapshotter.mount(&r.snapshot)?;
            f(g.path())
        }
        None => {
            let tmp = tempfile::tempdir_in(cache.tmp()).map_err(|e| Error::io("create empty dir", cache.tmp(), e))?;
            f(tmp.path())
        }
    }
}

/// What every image output of a solve starts from (the solve's options).
struct ImageDefaults {
    config: ImageConfig,
    platform: Platform,
    source_date_epoch: Option<i64>,
}

/// The image an output writes: the solve's config, or the output's `containerimage.config`
/// (which replaces it, as BuildKit's exporter takes the config it is given whole), plus the
/// output's annotations (which win over the config's) and its `source-date-epoch`.
fn image_options(d: &ImageDefaults, attrs: &ImageExportAttrs, oci: bool) -> Result<ImageWriteOptions> {
    let mut config = match output_image_config(attrs)? {
        Some(c) => c,
        None => d.config.clone(),
    };
    let (manifest, descriptor) = attrs.annotations_for(|p| p.parse::<Platform>().is_ok_and(|p| p == d.platform));
    config.annotations.extend(manifest);
    Ok(ImageWriteOptions {
        config,
        platform: Some(d.platform.clone()),
        source_date_epoch: attrs.source_date_epoch.or(d.source_date_epoch),
        oci_media_types: oci,
        descriptor_annotations: descriptor,
    })
}

fn export_one(
    cache: &CacheManager,
    result: Option<&ResultRef>,
    out: &OutputSpec,
    defaults: &ImageDefaults,
    registry: &crate::registry::ClientSettings,
) -> Result<BTreeMap<String, String>> {
    let mut meta = BTreeMap::new();
    match out {
        OutputSpec::Local { dest } => with_root(cache, result, |root| crate::export::export_local(root, dest))?,
        OutputSpec::Tar { dest } => with_root(cache, result, |root| crate::export::export_tar(root, dest))?,
        OutputSpec::Oci { dest, tar, name, oci_mediatypes, image } => {
            let o = image_options(defaults, image, *oci_mediatypes)?;
            let layers = match result {
                Some(r) => {
                    image_layers(cache, r, &Compression::Gzip { level: 6 }, *oci_mediatypes, o.source_date_epoch)?
                }
                None => Vec::new(),
            };
            let digest = crate::export::export_oci_with(cache.content(), &layers, &o, dest, *tar, name.as_deref())?;
            meta.insert("containerimage.digest".to_owned(), digest.to_string());
        }
        OutputSpec::Image { name, push, insecure, image } => {
            let o = image_options(defaults, image, true)?;
            let layers = match result {
                Some(r) => image_layers(cache, r, &Compression::Gzip { level: 6 }, true, o.source_date_epoch)?,
                None => Vec::new(),
            };
            let desc = crate::content::write_image_with(cache.content(), &layers, &o)?;
            if *push {
                let r = crate::registry::Reference::parse(name)?;
                let client = registry.client(&r, *insecure)?;
                crate::registry::push_image(&client, &r, &desc, cache.content())?;
            }
            meta.insert("containerimage.digest".to_owned(), desc.digest().to_string());
            meta.insert("image.name".to_owned(), name.clone());
        }
    }
    Ok(meta)
}

/// The layers of an image export: [`layers_of`], with entries newer than `source_date_epoch`
/// clamped to it when one is given (a rewritten layer is computed once per snapshot, format and
/// epoch; a layer with nothing to clamp is kept as it is).
fn image_layers(
    cache: &CacheManager,
    r: &ResultRef,
    compression: &Compression,
    oci: bool,
    source_date_epoch: Option<i64>,
) -> Result<Vec<LayerBlob>> {
    let Some(epoch) = source_date_epoch else { return layers_of(cache, r, compression, oci, false) };
    chain(r)?
        .iter()
        .map(|s| {
            let l = layer_of(cache, &r.worker, s, compression, oci, false)?;
            let key = format!("{}+epoch={epoch}", format_of(compression));
            if let Some(mut c) = cache.layer::<LayerBlob>(s, &key)? {
                if cache.content().has(&c.digest) {
                    c.media_type = crate::content::layer::media_type_for(compression, oci).to_owned();
                    return Ok(c);
                }
            }
            let clamped = clamp_layer_times(cache.content(), &l, epoch, compression, oci)?;
            cache.put_layer(s, &key, &clamped)?;
            Ok(clamped)
        })
        .collect()
}

/// The layer blobs of `r`'s snapshot chain, computed once per snapshot and format. Without
/// `force`, a blob already made in another compression is reused rather than recompressed.
pub fn layers_of(
    cache: &CacheManager,
    r: &ResultRef,
    compression: &Compression,
    oci: bool,
    force: bool,
) -> Result<Vec<LayerBlob>> {
    chain(r)?.iter().map(|s| layer_of(cache, &r.worker, s, compression, oci, force)).collect()
}

fn format_of(c: &Compression) -> &'static str {
    match c {
        Compression::Gzip { .. } => "gzip",
        Compression::Zstd { .. } => "zstd",
        Compression::Uncompressed => "uncompressed",
    }
}

pub(super) fn layer_of(
    cache: &CacheManager,
    worker: &Arc<Worker>,
    s: &SnapshotId,
    compression: &Compression,
    oci: bool,
    force: bool,
) -> Result<LayerBlob> {
    let wanted = format_of(compression);
    let mut formats = vec![(wanted, compression.clone())];
    if !force {
        formats.extend(
            [
                ("gzip", Compression::Gzip { level: 6 }),
                ("zstd", Compression::Zstd { level: 3 }),
                ("uncompressed", Compression::Uncompressed),
            ]
            .into_iter()
            .filter(|(f, _)| *f != wanted),
        );
    }
    for (format, comp) in formats {
        if let Some(mut l) = cache.layer::<LayerBlob>(s, format)? {
            if cache.content().has(&l.digest) {
                l.media_type = crate::content::layer::media_type_for(&comp, oci).to_owned();
                return Ok(l);
            }
        }
    }
    let l = write_layer(cache.content(), compression, oci, |w| super::diff::write_snapshot_layer(cache, worker, s, w))?;
    cache.put_layer(s, wanted, &l)?;
    Ok(l)
}
