//! `Definition`: a validated LLB build graph. Decodes BuildKit's `pb.Definition` (marshalled ops +
//! metadata keyed by op digest), checks every reference, capability and op kind (each op's own
//! fields through [`Op::from_pb`], which also parses it into its typed form), and offers the ops
//! as [`Vertex`]es in topological order (inputs before users) with the result output.

use super::op::{output_indexes, Input, Op};
use super::pb;
use super::pb::op::Op as PbOp;
use super::source::SourceSpec;
use crate::digest::Digest;
use crate::error::{Error, ErrorKind, Result};
use prost::Message;
use std::collections::{BTreeSet, HashMap};

/// Metadata description key holding a vertex's display name (Go's `llb.WithCustomName`).
pub const CUSTOM_NAME_KEY: &str = "llb.customname";

/// BuildKit capability ids (solver/pb/caps.go) kiln supports. A definition whose metadata
/// declares any other capability is rejected as `Unsupported`.
///
/// Notes for implementers: `exec.meta.setsdefaultpath` means the executor sets a default `PATH`
/// when the op's env has none; `exec.mount.bind.readwrite-nooutput` means a writable bind mount
/// with output -1 (changes discarded); `source.image.resolvemode` may be treated as a hint.
pub const SUPPORTED_CAPS: &[&str] = &[
    "source.image",
    "source.image.resolvemode",
    "source.local",
    "source.local.unique",
    "source.local.sessionid",
    "source.local.includepatterns",
    "source.local.excludepatterns",
    "source.local.followpaths",
    "source.local.sharedkeyhint",
    "source.local.differ",
    "source.git",
    "source.git.keepgitdir",
    "source.git.fullurl",
    "source.git.subdir",
    "source.http",
    "source.http.checksum",
    "source.http.perm",
    "soruce.http.uidgid",
    "source.ocilayout",
    "exec.meta.base",
    "exec.meta.network",
    "exec.meta.proxyenv",
    "exec.meta.setsdefaultpath",
    "exec.mount.bind",
    "exec.mount.bind.readwrite-nooutput",
    "exec.mount.cache",
    "exec.mount.cache.sharing",
    "exec.mount.selector",
    "exec.mount.tmpfs",
    "exec.mount.tmpfs.size",
    "exec.mount.secret",
    "exec.mount.ssh",
    "exec.meta.security",
    "exec.meta.ulimit",
    "exec.meta.cgroup.parent",
    "exec.secretenv",
    "exec.validexitcode",
    "file.base",
    "file.rm.wildcard",
    "file.copy.includeexcludepatterns",
    "file.symlink.create",
    "constraints",
    "platform",
    "meta.ignorecache",
    "meta.description",
    "meta.exportcache",
    "mergeop",
    "diffop",
];

/// The kind of an op.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OpKind {
    /// `SourceOp`: image, local dir, git, http, oci layout.
    Source,
    /// `ExecOp`: a process in a container.
    Exec,
    /// `FileOp`: mkdir, mkfile, rm, symlink, copy.
    File,
    /// `MergeOp`: layers stacked.
    Merge,
    /// `DiffOp`: the changes between two states (whiteouts included).
    Diff,
    /// `BuildOp` (never in a validated definition: unsupported).
    Build,
    /// The payload-less final op whose single input is the result.
    Terminal,
}

/// One op of a definition with its digest and metadata.
#[derive(Debug, Clone, PartialEq)]
pub struct Vertex {
    /// sha256 of the op's marshalled bytes as they appear in the definition.
    pub digest: Digest,
    /// The decoded op, as sent (its bytes give the digest and the cache key's identity).
    pub op: pb::Op,
    /// The op checked and parsed at validation (what the solver runs).
    pub typed: Op,
    /// The op's inputs, parsed (each names an op of the definition and one of its outputs).
    pub inputs: Vec<Input>,
    /// Its metadata (default when the definition has none for it).
    pub metadata: pb::OpMetadata,
}

impl Vertex {
    /// The kind of this op.
    pub fn kind(&self) -> OpKind {
        match &self.typed {
            Op::Source(_) => OpKind::Source,
            Op::Exec(_) => OpKind::Exec,
            Op::File(_) => OpKind::File,
            Op::Merge(_) => OpKind::Merge,
            Op::Diff(_) => OpKind::Diff,
        }
    }

    /// Display name: the `llb.customname` description if set, else a short name derived from
    /// the op (`/bin/sh -c echo hi`, the source identifier, `mkdir /out`, `merge`, ...).
    pub fn name(&self) -> String {
        if let Some(n) = self.metadata.description.get(CUSTOM_NAME_KEY) {
            return n.clone();
        }
        match &self.op.op {
            Some(PbOp::Exec(e)) => e.meta.as_ref().map(|m| m.args.join(" ")).unwrap_or_default(),
            Some(PbOp::Source(s)) => s.identifier.clone(),
            Some(PbOp::File(f)) => f.actions.iter().map(file_action_name).collect::<Vec<_>>().join(", "),
            Some(PbOp::Merge(_)) => "merge".to_owned(),
            Some(PbOp::Diff(_)) => "diff".to_owned(),
            Some(PbOp::Build(_)) => "build".to_owned(),
            None => "terminal".to_owned(),
        }
    }

    /// The typed source of a `Source` vertex (`None` for other kinds), parsed at validation.
    pub fn source_spec(&self) -> Result<Option<SourceSpec>> {
        Ok(match &self.typed {
            Op::Source(s) => Some(s.spec.clone()),
            _ => None,
        })
    }

    /// Worker selector labels from the op's constraints (`KEY==VALUE` filters, see
    /// [`parse_worker_filter`]).
    pub fn worker_selector(&self) -> Result<Vec<(String, String)>> {
        self.op
            .constraints
            .iter()
            .flat_map(|c| c.filter.iter())
            .map(|f| parse_worker_filter(f).map_err(|e| Error::definition(Some(self.digest.as_str()), e.to_string())))
            .collect()
    }

    /// Number of outputs this op produces (exec: distinct mount outputs; file: distinct action
    /// outputs; others: 1).
    pub fn num_outputs(&self) -> usize {
        self.typed.outputs().iter().collect::<BTreeSet<_>>().len()
    }
}

/// Parses a worker constraint filter. kiln's format is exactly `KEY==VALUE` (a worker label
/// `KEY` equal to `VALUE`); the builder writes one per selector label.
pub fn parse_worker_filter(filter: &str) -> Result<(String, String)> {
    match filter.split_once("==") {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(Error::definition(None, format!("worker constraint {filter:?}: expected KEY==VALUE"))),
    }
}

fn file_action_name(a: &pb::FileAction) -> String {
    use pb::file_action::Action;
    match &a.action {
        Some(Action::Copy(c)) => format!("copy {} {}", c.src, c.dest),
        Some(Action::Mkfile(m)) => format!("mkfile {}", m.path),
        Some(Action::Mkdir(m)) => format!("mkdir {}", m.path),
        Some(Action::Rm(r)) => format!("rm {}", r.path),
        Some(Action::Symlink(s)) => format!("symlink {} -> {}", s.newpath, s.oldpath),
        None => "unknown".to_owned(),
    }
}

fn kind_of(op: &pb::Op) -> OpKind {
    match &op.op {
        Some(PbOp::Exec(_)) => OpKind::Exec,
        Some(PbOp::Source(_)) => OpKind::Source,
        Some(PbOp::File(_)) => OpKind::File,
        Some(PbOp::Merge(_)) => OpKind::Merge,
        Some(PbOp::Diff(_)) => OpKind::Diff,
        Some(PbOp::Build(_)) => OpKind::Build,
        None => OpKind::Terminal,
    }
}

/// Size limits on a marshalled definition ([`Definition::from_bytes_with_limits`]). BuildKit has
/// none; kiln's defaults are far above any real build (Dockerfile frontends emit thousands of
/// ops) and only stop a hostile input from making the decoder allocate without bound: every op is
/// an owned buffer, so a definition of millions of empty ops would cost ~24 bytes of bookkeeping
/// per 2 input bytes before any validation ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DefinitionLimits {
    /// Largest accepted marshalled definition, in bytes (default 1 GiB).
    pub max_bytes: usize,
    /// Most ops (terminal included) accepted (default 10,000,000).
    pub max_ops: usize,
}

impl DefinitionLimits {
    /// 1 GiB of definition.
    pub const DEFAULT_MAX_BYTES: usize = 1 << 30;
    /// Ten million ops.
    pub const DEFAULT_MAX_OPS: usize = 10_000_000;
}

impl Default for DefinitionLimits {
    fn default() -> Self {
        DefinitionLimits { max_bytes: Self::DEFAULT_MAX_BYTES, max_ops: Self::DEFAULT_MAX_OPS }
    }
}

/// Counts the top-level `def` fields (field 1) of a marshalled `pb.Definition` without
/// decoding them, stopping once `limit` is passed. A malformed buffer stops the walk: the real
/// decoder then reports it.
fn count_ops(mut b: &[u8], limit: usize) -> usize {
    fn varint(b: &mut &[u8]) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let (&byte, rest) = b.split_first()?;
            *b = rest;
            v |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }
    let mut n = 0;
    while !b.is_empty() && n <= limit {
        let Some(key) = varint(&mut b) else { break };
        let skip = match key & 7 {
            0 => {
                if varint(&mut b).is_none() {
                    break;
                }
                0
            }
            1 => 8,
            2 => match varint(&mut b).and_then(|l| usize::try_from(l).ok()) {
                Some(l) => l,
                None => break,
            },
            5 => 4,
            _ => break,
        };
        if skip > b.len() {
            break;
        }
        b = &b[skip..];
        if key >> 3 == 1 && key & 7 == 2 {
            n += 1;
        }
    }
    n
}

/// A validated build definition.
#[derive(Debug, Clone, PartialEq)]
pub struct Definition {
    /// Reachable ops, inputs before users; terminal excluded.
    vertices: Vec<Vertex>,
    /// Marshalled bytes of each vertex, parallel to `vertices`.
    raw: Vec<Vec<u8>>,
    index: HashMap<Digest, usize>,
    /// The terminal op's bytes and metadata.
    terminal: Option<(Vec<u8>, pb::OpMetadata)>,
    output: Option<(Digest, i64)>,
    source: Option<pb::Source>,
}

fn derr(d: &Digest, msg: impl Into<String>) -> Error {
    Error::definition(Some(d.as_str()), msg)
}

fn unsupported(d: &Digest, msg: impl std::fmt::Display) -> Error {
    Error::new(ErrorKind::Unsupported, format!("op {d}: {msg}"))
}

impl Definition {
    /// Decodes a marshalled `pb.Definition` and validates it, within the default
    /// [`DefinitionLimits`] (1 GiB, 10,000,000 ops).
    pub fn from_bytes(bytes: &[u8]) -> Result<Definition> {
        Definition::from_bytes_with_limits(bytes, DefinitionLimits::default())
    }

    /// [`Definition::from_bytes`] with explicit size limits; a definition over them is a
    /// `Definition` error naming the limit, raised before anything is decoded.
    pub fn from_bytes_with_limits(bytes: &[u8], limits: DefinitionLimits) -> Result<Definition> {
        if bytes.len() > limits.max_bytes {
            return Err(Error::definition(
                None,
                format!(
                    "definition is {} bytes, over the limit of {} bytes (DefinitionLimits::max_bytes)",
                    bytes.len(),
                    limits.max_bytes
                ),
            ));
        }
        let ops = count_ops(bytes, limits.max_ops);
        if ops > limits.max_ops {
            return Err(Error::definition(
                None,
                format!("definition has more than {} ops (DefinitionLimits::max_ops)", limits.max_ops),
            ));
        }
        let def = pb::Definition::decode(bytes)
            .map_err(|e| Error::definition(None, format!("cannot decode pb.Definition protobuf: {e}")))?;
        Definition::from_pb(def)
    }

    /// Validates a decoded `pb.Definition`.
    pub fn from_pb(def: pb::Definition) -> Result<Definition> {
        let mut ops = Vec::with_capacity(def.def.len());
        for bytes in def.def {
            let digest = Digest::of(&bytes);
            let op = pb::Op::decode(bytes.as_slice())
                .map_err(|e| derr(&digest, format!("cannot decode op protobuf: {e}")))?;
            ops.push((digest, op, bytes));
        }
        let mut metadata = HashMap::new();
        for (k, v) in def.metadata {
            match Digest::parse(&k) {
                Ok(d) => {
                    metadata.insert(d, v);
                }
                Err(_) => tracing::debug!(key = %k, "ignoring metadata whose key is not an op digest"),
            }
        }
        Self::build(ops, metadata, def.source)
    }

    /// Builds and validates from (digest, op, bytes) triples; digests are taken as given so
    /// tests can describe graphs (like cycles) that real content addressing cannot produce.
    pub(crate) fn build(
        ops: Vec<(Digest, pb::Op, Vec<u8>)>,
        mut metadata: HashMap<Digest, pb::OpMetadata>,
        source: Option<pb::Source>,
    ) -> Result<Definition> {
        let n = ops.len();
        if n == 0 {
            return Ok(Definition {
                vertices: vec![],
                raw: vec![],
                index: HashMap::new(),
                terminal: None,
                output: None,
                source,
            });
        }
        let mut by_digest: HashMap<Digest, usize> = HashMap::with_capacity(n);
        for (i, (d, _, _)) in ops.iter().enumerate() {
            if by_digest.insert(d.clone(), i).is_some() {
                return Err(derr(d, "op appears more than once in the definition"));
            }
        }
        // The terminal: last op, no payload, exactly one input.
        let mut terminal_idx = None;
        for (i, (d, op, _)) in ops.iter().enumerate() {
            if op.op.is_some() {
                continue;
            }
            if op.inputs.len() == 1 && i == n - 1 {
                terminal_idx = Some(i);
            } else if op.inputs.len() == 1 {
                return Err(derr(
                    d,
                    "multiple terminal ops (payload-less op with one input); only the last op may be the terminal",
                ));
            } else {
                return Err(derr(
                    d,
                    "op has no known payload (unknown op type); accepted: exec, source, file, merge, and a final terminal op with one input",
                ));
            }
        }
        let Some(t) = terminal_idx else {
            let d = &ops[n - 1].0;
            return Err(derr(
                d,
                "definition has no terminal op: the last op must have no payload and exactly one input (the result)",
            ));
        };
        // Each op checked and parsed once (the terminal has no typed op), with its inputs.
        let mut typed: Vec<Option<(Op, Vec<Input>)>> = Vec::with_capacity(n);
        for (d, op, _) in &ops {
            let parsed = Op::from_pb(d, op)?;
            let mut inputs = Vec::with_capacity(op.inputs.len());
            for inp in &op.inputs {
                let Ok(src) = Digest::parse(&inp.digest) else {
                    return Err(derr(d, format!("input digest {:?} is not sha256:<64 hex>", inp.digest)));
                };
                let Some(&j) = by_digest.get(&src) else {
                    return Err(derr(d, format!("input {src} is not an op of this definition (dangling input)")));
                };
                if j == t {
                    return Err(derr(d, "input refers to the terminal op"));
                }
                let outs: BTreeSet<i64> = output_indexes(&ops[j].1).into_iter().collect();
                if !outs.contains(&inp.index) {
                    return Err(derr(
                        d,
                        format!("input {src} output index {} out of range; that op has outputs {outs:?}", inp.index),
                    ));
                }
                inputs.push(Input { digest: src, index: inp.index });
            }
            typed.push(parsed.map(|p| (p, inputs)));
        }
        let tdig = ops[t].0.clone();
        let tinp = ops[t].1.inputs[0].clone();
        let out_digest = Digest::parse(&tinp.digest).map_err(|_| derr(&tdig, "terminal input is not a digest"))?;

        // Topological order of everything reachable from the result (iterative DFS, post-order).
        let start = by_digest[&out_digest];
        let mut order = Vec::new();
        let mut state = vec![0u8; n]; // 0 new, 1 on stack, 2 done
        let mut stack: Vec<(usize, usize)> = vec![(start, 0)];
        state[start] = 1;
        while let Some(&mut (i, ref mut next)) = stack.last_mut() {
            let inputs = &ops[i].1.inputs;
            if *next < inputs.len() {
                let j = by_digest
                    [&Digest::parse(&inputs[*next].digest).map_err(|_| derr(&ops[i].0, "bad input digest"))?];
                *next += 1;
                match state[j] {
                    0 => {
                        state[j] = 1;
                        stack.push((j, 0));
                    }
                    1 => return Err(derr(&ops[i].0, format!("cycle: op depends on {} which depends on it", ops[j].0))),
                    _ => {}
                }
            } else {
                state[i] = 2;
                order.push(i);
                stack.pop();
            }
        }
        let mut unreachable = 0;
        for (i, (d, op, _)) in ops.iter().enumerate() {
            if i != t && state[i] == 0 {
                unreachable += 1;
                tracing::debug!(op = %d, kind = ?kind_of(op), "dropping op not reachable from the result");
            }
        }
        if unreachable > 0 {
            tracing::debug!(unreachable, "definition held ops not reachable from its result");
        }

        // Metadata: keys naming no op are ignored; caps must all be supported.
        for k in metadata.keys() {
            if !by_digest.contains_key(k) {
                tracing::debug!(key = %k, "ignoring metadata for a digest that is not an op of this definition");
            }
        }
        let check_caps = |d: &Digest, md: &pb::OpMetadata| -> Result<()> {
            let bad: Vec<&str> = md
                .caps
                .iter()
                .filter(|(c, on)| **on && !SUPPORTED_CAPS.contains(&c.as_str()))
                .map(|(c, _)| c.as_str())
                .collect();
            if bad.is_empty() {
                Ok(())
            } else {
                Err(unsupported(d, format!("capabilities not supported by kiln: {}", bad.join(", "))))
            }
        };
        let tmeta = metadata.remove(&tdig).unwrap_or_default();
        check_caps(&tdig, &tmeta)?;

        let mut vertices = Vec::with_capacity(order.len());
        let mut raw = Vec::with_capacity(order.len());
        let mut index = HashMap::with_capacity(order.len());
        let mut slots: Vec<Option<(Digest, pb::Op, Vec<u8>)>> = ops.into_iter().map(Some).collect();
        for i in order {
            let Some((d, op, bytes)) = slots[i].take() else { continue };
            // Reachable ops are never the terminal, so each has its typed op.
            let Some((parsed, inputs)) = typed[i].take() else { continue };
            let md = metadata.remove(&d).unwrap_or_default();
            check_caps(&d, &md)?;
            index.insert(d.clone(), vertices.len());
            vertices.push(Vertex { digest: d, op, typed: parsed, inputs, metadata: md });
            raw.push(bytes);
        }
        let tbytes = slots[t].take().map(|s| s.2).unwrap_or_default();
        Ok(Definition {
            vertices,
            raw,
            index,
            terminal: Some((tbytes, tmeta)),
            output: Some((out_digest, tinp.index)),
            source,
        })
    }

    /// Back to the wire type: vertices in topological order, then the terminal; metadata for
    /// every op that has any.
    pub fn to_pb(&self) -> pb::Definition {
        let mut def = pb::Definition { def: self.raw.clone(), ..Default::default() };
        for v in &self.vertices {
            if v.metadata != pb::OpMetadata::default() {
                def.metadata.insert(v.digest.to_string(), v.metadata.clone());
            }
        }
        if let Some((bytes, md)) = &self.terminal {
            if *md != pb::OpMetadata::default() {
                def.metadata.insert(Digest::of(bytes).to_string(), md.clone());
            }
            def.def.push(bytes.clone());
        }
        def.source = self.source.clone();
        def
    }

    /// The marshalled `pb.Definition`.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.to_pb().encode_to_vec()
    }

    /// The vertex with digest `d`.
    pub fn vertex(&self, d: &Digest) -> Option<&Vertex> {
        self.index.get(d).map(|&i| &self.vertices[i])
    }

    /// All vertices reachable from the result, inputs before users (terminal excluded).
    pub fn vertices(&self) -> &[Vertex] {
        &self.vertices
    }

    /// The result: (op digest, output index); `None` for an empty (scratch) definition.
    pub fn output(&self) -> Option<(Digest, i64)> {
        self.output.clone()
    }

    /// Number of vertices (terminal excluded).
    pub fn len(&self) -> usize {
        self.vertices.len()
    }

    /// True for an empty (scratch) definition.
    pub fn is_empty(&self) -> bool {
        self.vertices.is_empty()
    }

    /// The digest of the terminal op, if any.
    pub fn terminal_digest(&self) -> Option<Digest> {
        self.terminal.as_ref().map(|(b, _)| Digest::of(b))
    }

    /// The marshalled bytes of vertex `d` (what its digest is computed over).
    pub fn op_bytes(&self, d: &Digest) -> Option<&[u8]> {
        self.index.get(d).map(|&i| self.raw[i].as_slice())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake(n: u8) -> Digest {
        Digest::of(&[n])
    }

    fn src(id: &str) -> pb::Op {
        pb::Op {
            op: Some(PbOp::Source(pb::SourceOp { identifier: id.into(), attrs: Default::default() })),
            ..Default::default()
        }
    }

    fn merge_of(inputs: &[&Digest]) -> pb::Op {
        pb::Op {
            inputs: inputs.iter().map(|d| pb::Input { digest: d.to_string(), index: 0 }).collect(),
            op: Some(PbOp::Merge(pb::MergeOp {
                inputs: (0..inputs.len() as i64).map(|i| pb::MergeInput { input: i }).collect(),
            })),
            ..Default::default()
        }
    }

    fn terminal(d: &Digest) -> pb::Op {
        pb::Op { inputs: vec![pb::Input { digest: d.to_string(), index: 0 }], ..Default::default() }
    }

    #[test]
    fn cycle_is_reported_with_op() {
        // a <- b <- a (only constructible with asserted digests).
        let (a, b, c, t) = (fake(1), fake(2), fake(3), fake(4));
        let ops = vec![
            (c.clone(), src("local://x"), vec![]),
            (a.clone(), merge_of(&[&b, &c]), vec![]),
            (b.clone(), merge_of(&[&a, &c]), vec![]),
            (t, terminal(&a), vec![]),
        ];
        let e = Definition::build(ops, HashMap::new(), None).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Definition);
        assert!(e.to_string().contains("cycle"), "{e}");
    }

    #[test]
    fn unreachable_ops_are_dropped() {
        let (a, b, t) = (fake(1), fake(2), fake(3));
        let ops = vec![
            (a.clone(), src("local://a"), vec![1]),
            (b.clone(), src("local://b"), vec![2]),
            (t, terminal(&a), vec![3]),
        ];
        let def = Definition::build(ops, HashMap::new(), None).unwrap();
        assert_eq!(def.len(), 1);
        assert!(def.vertex(&b).is_none());
        assert_eq!(def.output(), Some((a, 0)));
    }

    #[test]
    fn op_count_walks_top_level_fields_only() {
        let def = pb::Definition {
            def: vec![vec![1, 2, 3], vec![], vec![0x0a, 0x00]],
            metadata: [("x".to_owned(), pb::OpMetadata::default())].into_iter().collect(),
            source: None,
        };
        let b = def.encode_to_vec();
        assert_eq!(count_ops(&b, 100), 3);
        assert_eq!(count_ops(&b, 1), 2, "stops once over the limit");
        assert_eq!(count_ops(&[0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f], 100), 0, "huge length prefix");
        let limits = DefinitionLimits { max_bytes: 1 << 20, max_ops: 2 };
        let e = Definition::from_bytes_with_limits(&b, limits).unwrap_err();
        assert!(e.to_string().contains("more than 2 ops"), "{e}");
        let e = Definition::from_bytes_with_limits(&b, DefinitionLimits { max_bytes: 4, max_ops: 10 }).unwrap_err();
        assert!(e.to_string().contains("over the limit"), "{e}");
    }

    #[test]
    fn worker_filter_format() {
        assert_eq!(parse_worker_filter("executor==runc").unwrap(), ("executor".into(), "runc".into()));
        assert!(parse_worker_filter("executor=runc").is_err());
    }
}
