//! Source ops: local directories (content-checksummed, synced into a snapshot), OCI image layouts
//! (layers applied one snapshot each, keyed by their diffID chain so images share layers, and the
//! original blobs remembered so exports reuse them), http downloads and git checkouts.

use super::{keys, OpSolver, Outputs};
use crate::cache::CacheManager;
use crate::content::layer::LayerBlob;
use crate::content::OciLayout;
use crate::digest::Digest;
use crate::error::{Error, ErrorKind, MissingInput, Result};
use crate::graph::op::SourceOp;
use crate::graph::pb;
use crate::graph::source::{OciRef, SourceSpec};
use crate::graph::Vertex;
use crate::progress::ProgressEvent;
use crate::registry::{pull_image_metadata, Reference, RegistryClient};
use crate::snapshot::SnapshotId;
use crate::solver::refs::{Active, ResultRef};
use crate::solver::{FileDigests, ProvidedLocal, Solve};
use crate::source::git::{fetch_git, resolve_git_ref, GitFetch};
use crate::source::http::{fetch_http, HttpFetch};
use crate::source::local::{checksum_local_known, sync_local, sync_local_linked, LocalSource};
use crate::worker::pool::Worker;
use futures::future::BoxFuture;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

/// Source attributes that identify a client session, not content: they never enter a key.
const SESSION_ATTRS: &[&str] = &["local.sessionid", "local.unique", "local.sharedkeyhint"];

impl OpSolver for SourceOp {
    fn outputs(&self) -> &[i64] {
        &[0]
    }

    fn cache_key<'a>(
        &'a self,
        solve: &'a Arc<Solve>,
        v: &'a Vertex,
        input_keys: &'a [Digest],
    ) -> BoxFuture<'a, Result<Digest>> {
        Box::pin(async move {
            let identity = keys::op_identity(&v.op, |op| {
                if let pb::op::Op::Source(s) = op {
                    for a in SESSION_ATTRS {
                        s.attrs.remove(*a);
                    }
                }
            });
            let content = content_key(solve, v, &self.spec).await?;
            Ok(keys::vertex_key(identity, vec![content], keys::input_parts(input_keys)))
        })
    }

    fn execute<'a>(
        &'a self,
        solve: &'a Arc<Solve>,
        v: &'a Vertex,
        worker: &'a Arc<Worker>,
        key: &'a Digest,
        _inputs: &'a [Option<ResultRef>],
    ) -> BoxFuture<'a, Result<Outputs>> {
        Box::pin(run(solve, v, &self.spec, worker, key))
    }
}

/// A local source and what its provider already knows of the dir (see [`ProvidedLocal`]).
struct Local {
    src: LocalSource,
    digests: Arc<FileDigests>,
    private: bool,
}

/// The local dir `name`: given in the solve's locals, else from its local provider.
async fn local_source(
    solve: &Solve,
    name: &str,
    include: &[String],
    exclude: &[String],
    follow: &[String],
) -> Result<Local> {
    let provided = match (solve.opts.locals.get(name), &solve.opts.local_provider) {
        (Some(d), _) => ProvidedLocal::dir(d.clone()),
        (None, Some(p)) => {
            let req = crate::solver::LocalRequest {
                name: name.to_owned(),
                include: include.to_vec(),
                exclude: exclude.to_vec(),
                follow_paths: follow.to_vec(),
            };
            p.provide(&req).await?
        }
        (None, None) => {
            return Err(Error::missing_input(MissingInput::Local, name, None, solve.opts.locals.keys()));
        }
    };
    let src = LocalSource {
        dir: provided.dir,
        include: include.to_vec(),
        exclude: exclude.to_vec(),
        follow_paths: follow.to_vec(),
    };
    Ok(Local { src, digests: provided.digests, private: provided.private })
}

fn layout_ref(reference: &OciRef) -> String {
    match reference {
        OciRef::Tag(t) => t.clone(),
        OciRef::Digest(d) => d.to_string(),
    }
}

/// The content part of a source's cache key.
async fn content_key(solve: &Arc<Solve>, v: &Vertex, spec: &SourceSpec) -> Result<String> {
    match spec.clone() {
        SourceSpec::Local { name, include, exclude, follow_paths, .. } => {
            let l = local_source(solve, &name, &include, &exclude, &follow_paths).await?;
            let d = tokio::task::spawn_blocking(move || checksum_local_known(&l.src, &l.digests))
                .await
                .map_err(|e| Error::with_source(ErrorKind::Internal, "checksum task", e))??;
            Ok(format!("local:{d}"))
        }
        SourceSpec::OciLayout { path, reference } => {
            let r = layout_ref(&reference);
            let desc = tokio::task::spawn_blocking(move || OciLayout::open_readonly(&path)?.resolve(&r))
                .await
                .map_err(|e| Error::with_source(ErrorKind::Internal, "resolve task", e))??;
            Ok(format!("image:{}", desc.digest()))
        }
        SourceSpec::Http { url, checksum, filename, perm, uid, gid } => {
            if let Some(c) = &checksum {
                return Ok(format!("http:{c}:{filename:?}:{perm:?}:{uid:?}:{gid:?}"));
            }
            // Without a pinned checksum the content decides: download now, reuse it when executing.
            let fetch = HttpFetch { url, checksum, filename: filename.clone(), perm, uid, gid };
            let tmp = tempfile::tempdir_in(solve.solver.cache.tmp())
                .map_err(|e| Error::io("create download dir", solve.solver.cache.tmp(), e))?;
            let dir = tmp.path().to_path_buf();
            let res = blocking(move || fetch_http(&fetch, &dir, &|_, _| {})).await?;
            solve.fetched.lock().unwrap_or_else(|p| p.into_inner()).insert(v.digest.clone(), tmp);
            Ok(format!("http:{}:{}:{perm:?}:{uid:?}:{gid:?}", res.digest, res.filename))
        }
        SourceSpec::Git { remote, reference, keep_git_dir, subdir } => {
            let g = GitFetch { remote, reference, keep_git_dir, subdir: subdir.clone() };
            let sha = blocking(move || resolve_git_ref(&g)).await?;
            solve.pin(&v.digest, &sha);
            Ok(format!("git:{sha}:{keep_git_dir}:{subdir:?}"))
        }
        SourceSpec::DockerImage { reference } => {
            let (client, r) = registry_for(solve, &reference)?;
            let tokens = solve.task_tokens();
            let (digest, _, _) = crate::solver::spawn_counted(tokens, move || client.resolve(&r))
                .await
                .map_err(|e| Error::with_source(ErrorKind::Internal, "source task", e))??;
            solve.pin(&v.digest, digest.as_str());
            Ok(format!("image:{digest}"))
        }
    }
}

/// A client and parsed reference for a `docker-image://` source (plain http for loopback
/// registries), with the solve's timeouts and interrupt.
fn registry_for(solve: &Solve, reference: &str) -> Result<(RegistryClient, Reference)> {
    let r = Reference::parse(reference)?;
    let client = solve.registry.client(&r, false)?;
    Ok((client, r))
}

/// Runs a source op.
async fn run(solve: &Arc<Solve>, v: &Vertex, spec: &SourceSpec, worker: &Arc<Worker>, key: &Digest) -> Result<Outputs> {
    let cache = solve.solver.cache.clone();
    let worker = worker.clone();
    let key = key.clone();
    let name = v.name();
    let vertex = v.digest.to_string();
    let progress = solve.opts.progress.clone();
    match spec.clone() {
        SourceSpec::Local { name: local, include, exclude, follow_paths, .. } => {
            let l = local_source(solve, &local, &include, &exclude, &follow_paths).await?;
            blocking(move || {
                let a = Active::prepare(&worker.snapshotter, None)?;
                let direct = if l.private { worker.snapshotter.direct_dir(&a.id) } else { None };
                let bytes = match direct {
                    // The provider's private copy: its files are linked into the snapshot's own
                    // dir rather than copied a second time (link(2) cannot go through a mount).
                    Some(dir) => sync_local_linked(&l.src, &dir, true)?,
                    None => {
                        let g = worker.snapshotter.mount(&a.id)?;
                        sync_local(&l.src, g.path())?
                    }
                };
                progress.emit(ProgressEvent::Status {
                    vertex,
                    id: "transferring".into(),
                    current: bytes,
                    total: Some(bytes),
                });
                Ok(BTreeMap::from([(0, Some(cache.commit_and_record(&worker, &key, 0, a, &name)?))]))
            })
            .await
        }
        SourceSpec::OciLayout { path, reference } => {
            blocking(move || {
                oci_layout(&cache, &worker, &key, &name, &vertex, path, &layout_ref(&reference), &progress)
            })
            .await
        }
        SourceSpec::Http { url, checksum, filename, perm, uid, gid } => {
            let pre = solve.fetched.lock().unwrap_or_else(|p| p.into_inner()).remove(&v.digest);
            let fetch = HttpFetch { url, checksum, filename, perm, uid, gid };
            blocking(move || {
                let a = Active::prepare(&worker.snapshotter, None)?;
                {
                    let g = worker.snapshotter.mount(&a.id)?;
                    match pre {
                        // Already downloaded (and hashed) while computing the key: move it in.
                        Some(tmp) => crate::export::export_local(tmp.path(), g.path())?,
                        None => {
                            let vx = vertex.clone();
                            let p = progress.clone();
                            fetch_http(&fetch, g.path(), &move |cur, total| {
                                p.emit(ProgressEvent::Status {
                                    vertex: vx.clone(),
                                    id: "downloading".into(),
                                    current: cur,
                                    total,
                                })
                            })?;
                        }
                    }
                }
                Ok(BTreeMap::from([(0, Some(cache.commit_and_record(&worker, &key, 0, a, &name)?))]))
            })
            .await
        }
        SourceSpec::Git { remote, reference, keep_git_dir, subdir } => {
            let g = GitFetch { remote, reference, keep_git_dir, subdir };
            let cache_dir = cache.root().join("git");
            // The commit the key was computed from, so a branch moving meanwhile cannot mix commits.
            let pinned = solve.pinned(&v.digest);
            blocking(move || {
                let sha = match pinned {
                    Some(sha) => sha,
                    None => resolve_git_ref(&g)?,
                };
                let a = Active::prepare(&worker.snapshotter, None)?;
                {
                    let m = worker.snapshotter.mount(&a.id)?;
                    fetch_git(&g, &sha, &cache_dir, m.path())?;
                }
                Ok(BTreeMap::from([(0, Some(cache.commit_and_record(&worker, &key, 0, a, &name)?))]))
            })
            .await
        }
        SourceSpec::DockerImage { reference } => {
            let (client, r) = registry_for(solve, &reference)?;
            // Pull exactly what the key was computed from, even if the tag moved meanwhile.
            let r = match solve.pinned(&v.digest).map(|d| Digest::parse(&d)) {
                Some(Ok(d)) => r.with_digest(d),
                _ => r,
            };
            let tokens = solve.task_tokens();
            crate::solver::spawn_counted(tokens, move || {
                let img = pull_image_metadata(&client, &r, cache.content())?;
                let pinned = r.with_digest(img.manifest_digest.clone());
                let fetch = |d: &Digest| client.fetch_blob(&pinned, d, cache.content());
                image_layers(&cache, &worker, &key, &name, &vertex, &img, &reference, &fetch, &progress)
            })
            .await
            .map_err(|e| Error::with_source(ErrorKind::Internal, "source task", e))?
        }
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f).await.map_err(|e| Error::with_source(ErrorKind::Internal, "source task", e))?
}

#[allow(clippy::too_many_arguments)]
fn oci_layout(
    cache: &CacheManager,
    worker: &Arc<Worker>,
    key: &Digest,
    name: &str,
    vertex: &str,
    dir: PathBuf,
    reference: &str,
    progress: &crate::progress::ProgressSink,
) -> Result<BTreeMap<i64, Option<ResultRef>>> {
    let img = crate::source::oci_layout::resolve_oci_layout(&dir, reference, cache.content())?;
    // resolve_oci_layout already placed every blob in the cache's store.
    let missing = |d: &Digest| Err(Error::new(ErrorKind::Content, format!("layer {d} missing from the content store")));
    image_layers(cache, worker, key, name, vertex, &img, reference, &missing, progress)
}

/// Applies an image's layers (fetching blobs through `fetch` when absent) and records the result.
#[allow(clippy::too_many_arguments)]
fn image_layers(
    cache: &CacheManager,
    worker: &Arc<Worker>,
    key: &Digest,
    name: &str,
    vertex: &str,
    img: &crate::content::ResolvedImage,
    reference: &str,
    fetch: &dyn Fn(&Digest) -> Result<()>,
    progress: &crate::progress::ProgressSink,
) -> Result<BTreeMap<i64, Option<ResultRef>>> {
    let diff_ids: Vec<String> = img.config.rootfs().diff_ids().to_vec();
    if diff_ids.len() != img.layers.len() {
        return Err(Error::new(
            ErrorKind::Source,
            format!("image {reference}: {} layers but {} diff_ids", img.layers.len(), diff_ids.len()),
        ));
    }
    let mut layers = Vec::with_capacity(img.layers.len());
    for (layer, diff_id) in img.layers.iter().zip(&diff_ids) {
        layers.push(LayerBlob {
            digest: Digest::parse(layer.digest().as_ref())?,
            diff_id: Digest::parse(diff_id)?,
            size: layer.size(),
            media_type: layer.media_type().to_string(),
        });
    }
    let parent = crate::solver::layers::apply_chain(cache, worker, &layers, fetch, name, vertex, progress)?;
    let out = match parent {
        Some(id) => {
            cache.record(worker, key, 0, &id, name)?;
            Some(ResultRef { worker: worker.clone(), snapshot: id })
        }
        None => {
            cache.record(worker, key, 0, &SnapshotId(String::new()), name)?;
            None
        }
    };
    Ok(BTreeMap::from([(0, out)]))
}
