//! Cache keys. A vertex key is the sha256 of: the op's digest with its inputs blanked (and
//! session-only attributes dropped), the keys of its inputs, and content checksums — the selected
//! files of a local source, and for a copy the checksum of what it reads instead of its source
//! input's key (so changing an unrelated file does not invalidate the copy).

use super::refs::ResultRef;
use super::Solve;
use crate::digest::Digest;
use crate::error::{Error, ErrorKind, Result};
use crate::graph::pb;
use crate::graph::pb::op::Op as OpKind;
use crate::graph::{SourceSpec, Vertex};
use prost::Message;
use std::sync::Arc;

/// Source attributes that identify a client session, not content: they never enter a key.
const SESSION_ATTRS: &[&str] = &["local.sessionid", "local.unique", "local.sharedkeyhint"];

/// The key consumers see for output `index` of a vertex with key `key`.
pub fn output_key(key: &Digest, index: i64) -> Digest {
    Digest::of(format!("{key}/{index}").as_bytes())
}

/// The op's own digest with inputs blanked and session attributes removed.
pub fn op_identity(op: &pb::Op) -> Digest {
    let mut op = op.clone();
    op.inputs.clear();
    match &mut op.op {
        Some(OpKind::Source(s)) => {
            for a in SESSION_ATTRS {
                s.attrs.remove(*a);
            }
        }
        // As BuildKit's `ExecOp.CacheMap`: extra hosts' IPs and proxy settings are not part of a
        // run's key. (BuildKit moves mount selectors into its dependency keys; kiln's input keys
        // carry no selector, so selectors stay in the op's identity.)
        Some(OpKind::Exec(e)) => {
            if let Some(meta) = e.meta.as_mut() {
                meta.extra_hosts.iter_mut().for_each(|h| h.ip.clear());
                meta.proxy_env = None;
            }
        }
        _ => {}
    }
    Digest::of(&op.encode_to_vec())
}

/// Computes the cache key of `v` from its inputs' keys (and content checksums where they apply).
pub async fn vertex_key(solve: &Arc<Solve>, v: &Vertex, input_keys: &[Digest]) -> Result<Digest> {
    let mut parts: Vec<String> = vec![op_identity(&v.op).to_string()];
    let mut input_parts: Vec<String> = input_keys.iter().map(|k| k.to_string()).collect();
    match &v.op.op {
        Some(OpKind::Source(s)) => {
            parts.push(super::sources::content_key(solve, v, s).await?);
        }
        Some(OpKind::File(f)) => {
            for (j, part) in input_parts.iter_mut().enumerate() {
                let Some(copies) = copy_only_input(f, j as i64) else { continue };
                // Content checksums need the input's files; only local sources are worth loading
                // for that (other inputs' keys already identify their content).
                let inp = &v.op.inputs[j];
                let Ok(dd) = Digest::parse(&inp.digest) else { continue };
                let Some(local) = solve.def.vertex(&dd).and_then(|iv| match iv.source_spec() {
                    Ok(Some(SourceSpec::Local { name, include, exclude, follow_paths, .. })) => {
                        Some((name, include.is_empty() && exclude.is_empty() && follow_paths.is_empty()))
                    }
                    _ => None,
                }) else {
                    continue;
                };
                // An unfiltered context is read where it is, so a fully cached graph never syncs
                // it (its result is never exported to caches either); a filtered one is synced
                // first so that the checksum sees exactly the selected files.
                let (name, unfiltered) = local;
                let root = if unfiltered { solve.opts.locals.get(&name).cloned() } else { None };
                let r = match root {
                    Some(_) => None,
                    None => {
                        let outs = solve.result_future(&dd).await.map_err(|e| (*e.0).clone())?;
                        outs.outputs.get(&inp.index).cloned().flatten()
                    }
                };
                let sums = tokio::task::spawn_blocking(move || copy_checksums(root.as_deref(), r.as_ref(), &copies))
                    .await
                    .map_err(|e| Error::with_source(ErrorKind::Internal, "checksum task", e))??;
                *part = format!("content:{}", sums.join(","));
            }
        }
        _ => {}
    }
    parts.extend(input_parts);
    Ok(Digest::of(parts.join("\n").as_bytes()))
}

/// The copy actions reading input `j`, when `j` is used only as a copy source.
fn copy_only_input(f: &pb::FileOp, j: i64) -> Option<Vec<pb::FileActionCopy>> {
    if f.actions.iter().any(|a| a.input == j) {
        return None;
    }
    let mut copies = Vec::new();
    for a in f.actions.iter().filter(|a| a.secondary_input == j) {
        match &a.action {
            Some(pb::file_action::Action::Copy(c)) => copies.push(c.clone()),
            _ => return None,
        }
    }
    (!copies.is_empty()).then_some(copies)
}

/// Content checksums of what `copies` read, from a host directory (`dir`) or a result.
fn copy_checksums(
    dir: Option<&std::path::Path>,
    r: Option<&ResultRef>,
    copies: &[pb::FileActionCopy],
) -> Result<Vec<String>> {
    let empty;
    let guard;
    let root = match (dir, r) {
        (Some(d), _) => d.to_path_buf(),
        (None, Some(r)) => {
            guard = r.worker.snapshotter.mount(&r.snapshot)?;
            guard.path().to_path_buf()
        }
        (None, None) => {
            empty = tempfile::tempdir().map_err(|e| Error::io("create empty dir", std::env::temp_dir(), e))?;
            empty.path().to_path_buf()
        }
    };
    let mut out = Vec::new();
    for c in copies {
        let opts = super::fileop::copy_options(c);
        match crate::fileops::checksum_selection(&root, &c.src, &opts) {
            Ok(d) => out.push(d.to_string()),
            // A missing source fails at execution with a clear error; keep the key defined.
            Err(e) => out.push(format!("error:{}", e.kind())),
        }
    }
    Ok(out)
}
