//! Marshalling a state into a validated [`Definition`]: an iterative post-order walk that
//! encodes every reachable op once (identical ops deduplicated by digest), inputs before users,
//! with Go's field order, BuildKit's input numbering per op kind, per-op metadata (caps,
//! descriptions, ignore-cache) and the terminal op. The bytes are what golden digests pin.

use super::node::{Node, NodeKind, Output};
use super::State;
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::graph::definition::Definition;
use crate::graph::pb;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

impl State {
    /// Marshals every reachable op once (identical ops deduplicated by digest), inputs before
    /// users, appends the terminal op and validates the result.
    pub fn to_definition(&self) -> Result<Definition> {
        let Some(out) = &self.output else {
            return Definition::from_pb(pb::Definition::default());
        };
        let mut m = Marshaller::default();
        let d = m.marshal(&out.node)?;
        let terminal =
            pb::Op { inputs: vec![pb::Input { digest: d.to_string(), index: out.index }], ..Default::default() };
        let tbytes = encode_op(&terminal);
        let tdig = Digest::of(&tbytes);
        let mut tmeta = pb::OpMetadata::default();
        tmeta.caps.insert("constraints".into(), true);
        tmeta.caps.insert("platform".into(), true);
        for md in m.metadata.values() {
            if md.ignore_cache {
                tmeta.caps.insert("meta.ignorecache".into(), true);
            }
            if !md.description.is_empty() {
                tmeta.caps.insert("meta.description".into(), true);
            }
        }
        let mut def = pb::Definition { def: m.ops, metadata: m.metadata, source: None };
        def.metadata.insert(tdig.to_string(), tmeta);
        def.def.push(tbytes);
        Definition::from_pb(def)
    }
}

fn host_platform() -> pb::Platform {
    let (arch, variant) = match std::env::consts::ARCH {
        "x86_64" => ("amd64", ""),
        "aarch64" => ("arm64", ""),
        "arm" => ("arm", "v7"),
        "x86" => ("386", ""),
        "powerpc64" => ("ppc64le", ""),
        other => (other, ""),
    };
    pb::Platform { architecture: arch.into(), os: "linux".into(), variant: variant.into(), ..Default::default() }
}

/// Encodes an op with fields in field-number order (inputs, payload, platform, constraints), the
/// order Go's protobuf marshaller uses; prost would put the oneof last.
fn encode_op(op: &pb::Op) -> Vec<u8> {
    let mut buf = Vec::new();
    for i in &op.inputs {
        prost::encoding::message::encode(1, i, &mut buf);
    }
    if let Some(o) = &op.op {
        o.encode(&mut buf);
    }
    if let Some(p) = &op.platform {
        prost::encoding::message::encode(10, p, &mut buf);
    }
    if let Some(c) = &op.constraints {
        prost::encoding::message::encode(11, c, &mut buf);
    }
    buf
}

#[derive(Default)]
struct Marshaller {
    memo: HashMap<*const Node, Digest>,
    seen: std::collections::HashSet<Digest>,
    ops: Vec<Vec<u8>>,
    metadata: BTreeMap<String, pb::OpMetadata>,
}

fn children(node: &Node) -> Vec<&Arc<Node>> {
    match &node.kind {
        NodeKind::Source { .. } => vec![],
        NodeKind::Exec(e) => e.mounts.iter().filter_map(|(s, _)| s.as_ref().map(|o| &o.node)).collect(),
        NodeKind::File(f) => {
            let mut v: Vec<&Arc<Node>> = f.base.iter().map(|o| &o.node).collect();
            for (_, src) in &f.actions {
                if let Some(Some(o)) = src {
                    v.push(&o.node);
                }
            }
            v
        }
        NodeKind::Merge(inputs) => inputs.iter().map(|o| &o.node).collect(),
        NodeKind::Diff { lower, upper } => lower.iter().chain(upper.iter()).map(|o| &o.node).collect(),
    }
}

impl Marshaller {
    /// Iterative post-order walk (deep chains must not overflow the stack).
    fn marshal(&mut self, root: &Arc<Node>) -> Result<Digest> {
        let mut stack: Vec<(&Arc<Node>, bool)> = vec![(root, false)];
        while let Some((node, expanded)) = stack.pop() {
            let key = Arc::as_ptr(node);
            if self.memo.contains_key(&key) {
                continue;
            }
            if !expanded {
                stack.push((node, true));
                for c in children(node).into_iter().rev() {
                    if !self.memo.contains_key(&Arc::as_ptr(c)) {
                        stack.push((c, false));
                    }
                }
                continue;
            }
            let d = self.marshal_one(node)?;
            self.memo.insert(key, d);
        }
        self.memo
            .get(&Arc::as_ptr(root))
            .cloned()
            .ok_or_else(|| Error::definition(None, "internal: root not marshalled"))
    }

    fn input(&self, o: &Output) -> pb::Input {
        let d = self.memo.get(&Arc::as_ptr(&o.node)).map(|d| d.to_string()).unwrap_or_default();
        pb::Input { digest: d, index: o.index }
    }

    fn marshal_one(&mut self, node: &Node) -> Result<Digest> {
        let c = &node.constraints;
        let mut op = pb::Op {
            constraints: Some(pb::WorkerConstraints { filter: c.worker_filter.clone() }),
            ..Default::default()
        };
        let platform = || Some(c.platform.clone().unwrap_or_else(host_platform));
        let mut caps: BTreeSet<&str> = BTreeSet::new();
        match &node.kind {
            NodeKind::Source { identifier, attrs, caps: sc, platform_specific } => {
                op.op = Some(pb::op::Op::Source(pb::SourceOp { identifier: identifier.clone(), attrs: attrs.clone() }));
                if *platform_specific {
                    op.platform = platform();
                }
                caps.extend(sc.iter().copied());
            }
            NodeKind::Exec(e) => {
                if e.meta.args.is_empty() {
                    return Err(Error::definition(
                        None,
                        "exec has no args; give ExecOptions::new(args) or ::shell(script)",
                    ));
                }
                let mut dests = std::collections::HashSet::new();
                let mut mounts = Vec::with_capacity(e.mounts.len());
                for (src, m) in &e.mounts {
                    if !dests.insert(m.dest.as_str()) {
                        return Err(Error::definition(None, format!("exec {:?} mounts {} twice", e.meta.args, m.dest)));
                    }
                    let mut m = m.clone();
                    if let Some(o) = src {
                        let inp = self.input(o);
                        m.input = match op.inputs.iter().position(|i| *i == inp) {
                            Some(i) => i as i64,
                            None => {
                                op.inputs.push(inp);
                                op.inputs.len() as i64 - 1
                            }
                        };
                    }
                    mounts.push(m);
                }
                op.op = Some(pb::op::Op::Exec(pb::ExecOp {
                    meta: Some(e.meta.clone()),
                    mounts,
                    network: e.network,
                    security: e.security,
                    secretenv: e.secretenv.clone(),
                }));
                op.platform = platform();
                caps.extend(e.caps.iter().copied());
            }
            NodeKind::File(f) => {
                let add = |inputs: &mut Vec<pb::Input>, o: &Output| -> i64 {
                    let inp = self.input(o);
                    match inputs.iter().position(|i| *i == inp) {
                        Some(i) => i as i64,
                        None => {
                            inputs.push(inp);
                            inputs.len() as i64 - 1
                        }
                    }
                };
                let base = f.base.as_ref().map(|o| add(&mut op.inputs, o)).unwrap_or(-1);
                let secondaries: Vec<i64> = f
                    .actions
                    .iter()
                    .map(|(_, s)| match s {
                        Some(Some(o)) => add(&mut op.inputs, o),
                        _ => -1,
                    })
                    .collect();
                let n_in = op.inputs.len() as i64;
                let last = f.actions.len() - 1;
                let actions = f
                    .actions
                    .iter()
                    .enumerate()
                    .map(|(i, (a, _))| pb::FileAction {
                        input: if i == 0 { base } else { n_in + i as i64 - 1 },
                        secondary_input: secondaries[i],
                        output: if i == last { 0 } else { -1 },
                        action: Some(a.clone()),
                    })
                    .collect();
                op.op = Some(pb::op::Op::File(pb::FileOp { actions }));
                caps.extend(f.caps.iter().copied());
            }
            NodeKind::Merge(inputs) => {
                let mut merge = pb::MergeOp::default();
                for o in inputs {
                    op.inputs.push(self.input(o));
                    merge.inputs.push(pb::MergeInput { input: op.inputs.len() as i64 - 1 });
                }
                // As Go's `MergeOp.Marshal`: a merge is not platform specific.
                op.op = Some(pb::op::Op::Merge(merge));
                caps.insert("mergeop");
            }
            NodeKind::Diff { lower, upper } => {
                // As Go's `DiffOp.Marshal`: no platform, inputs in (lower, upper) order, -1 = scratch.
                let mut diff = pb::DiffOp::default();
                let mut index = |o: &Option<Output>| match o {
                    Some(o) => {
                        op.inputs.push(self.input(o));
                        op.inputs.len() as i64 - 1
                    }
                    None => -1,
                };
                diff.lower = Some(pb::LowerDiffInput { input: index(lower) });
                diff.upper = Some(pb::UpperDiffInput { input: index(upper) });
                op.op = Some(pb::op::Op::Diff(diff));
                caps.insert("diffop");
            }
        }
        let bytes = encode_op(&op);
        let d = Digest::of(&bytes);
        let md = self.metadata.entry(d.to_string()).or_default();
        for cap in caps {
            md.caps.insert(cap.to_owned(), true);
        }
        md.description.extend(c.description.iter().map(|(k, v)| (k.clone(), v.clone())));
        md.ignore_cache |= c.ignore_cache;
        if self.seen.insert(d.clone()) {
            self.ops.push(bytes);
        }
        Ok(d)
    }
}
