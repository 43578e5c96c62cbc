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
use crate::graph::Vertex;
use crate::worker::pool::Worker;
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
    if let Some(OpKind::Source(s)) = &mut op.op {
        for a in SESSION_ATTRS {
            s.attrs.remove(*a);
        }
    }
    Digest::of(&op.encode_to_vec())
}

/// Computes the cache key of `v` given its (already solved) inputs.
pub async fn vertex_key(
    solve: &Arc<Solve>,
    v: &Vertex,
    worker: &Arc<Worker>,
    inputs: &[Option<ResultRef>],
    input_keys: &[Digest],
) -> Result<Digest> {
    let mut parts: Vec<String> = vec![op_identity(&v.op).to_string()];
    let mut input_parts: Vec<String> = input_keys.iter().map(|k| k.to_string()).collect();
    match &v.op.op {
        Some(OpKind::Source(s)) => {
            parts.push(super::sources::content_key(solve, v, s).await?);
        }
        Some(OpKind::File(f)) => {
            let n = inputs.len() as i64;
            for (j, part) in input_parts.iter_mut().enumerate() {
                let j = j as i64;
                let as_base = f.actions.iter().any(|a| a.input == j);
                let copies: Vec<&pb::FileActionCopy> = f
                    .actions
                    .iter()
                    .filter(|a| a.secondary_input == j)
                    .filter_map(|a| match &a.action {
                        Some(pb::file_action::Action::Copy(c)) => Some(c),
                        _ => None,
                    })
                    .collect();
                let other_secondary = f
                    .actions
                    .iter()
                    .any(|a| a.secondary_input == j && !matches!(a.action, Some(pb::file_action::Action::Copy(_))));
                if as_base || other_secondary || copies.is_empty() || j >= n {
                    continue;
                }
                let r = inputs[j as usize].clone();
                let copies: Vec<pb::FileActionCopy> = copies.into_iter().cloned().collect();
                let sums = tokio::task::spawn_blocking(move || copy_checksums(r.as_ref(), &copies))
                    .await
                    .map_err(|e| Error::with_source(ErrorKind::Internal, "checksum task", e))??;
                *part = format!("content:{}", sums.join(","));
            }
        }
        _ => {}
    }
    let _ = worker;
    parts.extend(input_parts);
    Ok(Digest::of(parts.join("\n").as_bytes()))
}

fn copy_checksums(r: Option<&ResultRef>, copies: &[pb::FileActionCopy]) -> Result<Vec<String>> {
    let empty;
    let guard;
    let root = match r {
        Some(r) => {
            guard = r.worker.snapshotter.mount(&r.snapshot)?;
            guard.path().to_path_buf()
        }
        None => {
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
