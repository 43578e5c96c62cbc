//! Cache keys, the parts every op kind shares. A vertex key is the sha256 of: the op's digest with
//! its inputs blanked (and what an op kind leaves out of its identity dropped: session-only source
//! attributes, extra hosts' IPs and proxy settings of a run), the parts the op kind adds (a local
//! source's content checksum), and the keys of its inputs (for a copy, the checksum of what it
//! reads replaces its source input's key, so changing an unrelated file does not invalidate it).
//! Each op kind's [`OpSolver::cache_key`](super::ops::OpSolver::cache_key) assembles its key from
//! these; the bytes hashed are what they always were, so existing caches keep hitting.

use crate::digest::Digest;
use crate::graph::pb;
use prost::Message;

/// The key consumers see for output `index` of a vertex with key `key`.
pub fn output_key(key: &Digest, index: i64) -> Digest {
    Digest::of(format!("{key}/{index}").as_bytes())
}

/// The op's own digest with inputs blanked, after `strip` removed from its payload what the op
/// kind leaves out of its identity.
pub fn op_identity(op: &pb::Op, strip: impl FnOnce(&mut pb::op::Op)) -> Digest {
    let mut op = op.clone();
    op.inputs.clear();
    if let Some(payload) = op.op.as_mut() {
        strip(payload);
    }
    Digest::of(&op.encode_to_vec())
}

/// The input parts of a key: each input's output key, in input order.
pub fn input_parts(input_keys: &[Digest]) -> Vec<String> {
    input_keys.iter().map(|k| k.to_string()).collect()
}

/// The vertex key: identity, then the op kind's own parts, then the input parts.
pub fn vertex_key(identity: Digest, own: Vec<String>, inputs: Vec<String>) -> Digest {
    let mut parts: Vec<String> = vec![identity.to_string()];
    parts.extend(own);
    parts.extend(inputs);
    Digest::of(parts.join("\n").as_bytes())
}
