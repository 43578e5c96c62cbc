//! Typed ops: what a validated [`Definition`](super::Definition) holds for each vertex besides the
//! raw `pb::Op`. [`Op::from_pb`] checks one op's own fields (supported kind, indexes within range,
//! kiln-unsupported features) and parses them once — input digests, output indexes, the
//! [`SourceSpec`] of a source, the modes of an exec, the actions of a file op — so nothing
//! downstream re-checks or re-parses the wire form. The raw op stays on the vertex: its bytes are
//! the op digest and the cache key's identity (unchanged by this parse).

use super::pb;
use super::pb::op::Op as PbOp;
use super::source::SourceSpec;
use crate::digest::Digest;
use crate::error::{Error, ErrorKind, Result};
use std::collections::HashSet;

/// One input of an op: output `index` of the op with digest `digest`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Input {
    /// Digest of the op producing the input.
    pub digest: Digest,
    /// Which of its outputs.
    pub index: i64,
}

/// A validated op, by kind (the terminal op has none).
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    /// Image, local dir, git, http or OCI layout.
    Source(SourceOp),
    /// A process in a container (boxed: by far the largest kind).
    Exec(Box<ExecOp>),
    /// mkdir, mkfile, rm, symlink, copy.
    File(FileOp),
    /// Inputs stacked.
    Merge(MergeOp),
    /// The changes between two states.
    Diff(DiffOp),
}

/// A source op with its parsed identifier and attributes.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceOp {
    /// What the source is.
    pub spec: SourceSpec,
}

/// An exec op: the wire form plus what was checked and parsed from it.
#[derive(Debug, Clone, PartialEq)]
pub struct ExecOp {
    /// The wire form (mounts, secret env, meta as sent).
    pub exec: pb::ExecOp,
    /// Process metadata (present and with args in a validated op).
    pub meta: pb::Meta,
    /// Sandbox or insecure.
    pub security: pb::SecurityMode,
    /// Network mode.
    pub network: pb::NetMode,
    /// The type of each mount, in mount order.
    pub mount_types: Vec<pb::MountType>,
    /// Output indexes, in mount order.
    pub outputs: Vec<i64>,
}

/// One action of a file op (the action present in a validated op).
#[derive(Debug, Clone, PartialEq)]
pub struct FileAction {
    /// The filesystem written to: an op input (< input count), an earlier action's result
    /// (input count + action index) or -1 for scratch.
    pub input: i64,
    /// A copy's source, numbered as `input`.
    pub secondary_input: i64,
    /// The output index this action's result is, or -1.
    pub output: i64,
    /// What the action does.
    pub action: pb::file_action::Action,
}

/// A file op: its actions, in order.
#[derive(Debug, Clone, PartialEq)]
pub struct FileOp {
    /// The actions (each action's input precedes it).
    pub actions: Vec<FileAction>,
    /// Output indexes, in action order.
    pub outputs: Vec<i64>,
}

/// A merge op: op input positions, lowest layer first (each within range).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MergeOp {
    /// Positions in the op's inputs.
    pub inputs: Vec<usize>,
}

/// A diff op: op input positions of `lower` and `upper` (`None`: scratch).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiffOp {
    /// Position of the lower input, if not scratch.
    pub lower: Option<usize>,
    /// Position of the upper input, if not scratch.
    pub upper: Option<usize>,
}

/// The output indexes an op produces, in mount (exec) or action (file) order; `[0]` for the
/// other kinds, none for the terminal. One definition for validation and the solver.
pub fn output_indexes(op: &pb::Op) -> Vec<i64> {
    match &op.op {
        Some(PbOp::Exec(e)) => e.mounts.iter().map(|m| m.output).filter(|o| *o >= 0).collect(),
        Some(PbOp::File(f)) => f.actions.iter().map(|a| a.output).filter(|o| *o >= 0).collect(),
        Some(_) => vec![0],
        None => Vec::new(),
    }
}

impl Op {
    /// Checks op `d`'s own fields and parses them; `None` for the payload-less terminal op.
    pub fn from_pb(d: &Digest, op: &pb::Op) -> Result<Option<Op>> {
        let n_in = op.inputs.len() as i64;
        Ok(Some(match &op.op {
            None => return Ok(None),
            Some(PbOp::Build(_)) => {
                return Err(unsupported(
                    d,
                    "BuildOp is not supported by kiln (nested LLB builds); use exec, source, file or merge ops",
                ))
            }
            Some(PbOp::Diff(df)) => {
                // Go's llb always sets both; input -1 means scratch.
                let lower = df.lower.as_ref().map(|l| l.input).ok_or_else(|| derr(d, "diff op has no lower input"))?;
                let upper = df.upper.as_ref().map(|u| u.input).ok_or_else(|| derr(d, "diff op has no upper input"))?;
                for (what, i) in [("lower", lower), ("upper", upper)] {
                    if i < -1 || i >= n_in {
                        return Err(derr(d, format!("diff {what} input {i} out of range (op has {n_in} inputs)")));
                    }
                }
                let position = |i: i64| usize::try_from(i).ok();
                Op::Diff(DiffOp { lower: position(lower), upper: position(upper) })
            }
            Some(PbOp::Source(s)) => {
                if !op.inputs.is_empty() {
                    return Err(derr(d, "source op must have no inputs"));
                }
                let spec = SourceSpec::parse(&s.identifier, &s.attrs).map_err(|e| match e.kind() {
                    ErrorKind::Unsupported => unsupported(d, e),
                    _ => derr(d, e.to_string()),
                })?;
                Op::Source(SourceOp { spec })
            }
            Some(PbOp::Merge(m)) => {
                if m.inputs.is_empty() {
                    return Err(derr(d, "merge op has no inputs"));
                }
                let mut inputs = Vec::with_capacity(m.inputs.len());
                for mi in &m.inputs {
                    match usize::try_from(mi.input) {
                        Ok(i) if mi.input < n_in => inputs.push(i),
                        _ => {
                            return Err(derr(
                                d,
                                format!("merge input {} out of range (op has {n_in} inputs)", mi.input),
                            ))
                        }
                    }
                }
                Op::Merge(MergeOp { inputs })
            }
            Some(PbOp::Exec(e)) => Op::Exec(Box::new(exec(d, e, n_in)?)),
            Some(PbOp::File(f)) => Op::File(file(d, f, n_in)?),
        }))
    }

    /// The output indexes this op produces (see [`output_indexes`]).
    pub fn outputs(&self) -> &[i64] {
        match self {
            Op::Exec(e) => &e.outputs,
            Op::File(f) => &f.outputs,
            Op::Source(_) | Op::Merge(_) | Op::Diff(_) => &[0],
        }
    }
}

fn exec(d: &Digest, e: &pb::ExecOp, n_in: i64) -> Result<ExecOp> {
    let meta = e.meta.as_ref().ok_or_else(|| derr(d, "exec op has no meta (args, env, cwd)"))?;
    if meta.args.is_empty() {
        return Err(derr(d, "exec op has no args"));
    }
    let security = pb::SecurityMode::try_from(e.security)
        .map_err(|_| derr(d, format!("unknown security mode {}; accepted: 0 (sandbox), 1 (insecure)", e.security)))?;
    for s in &e.secretenv {
        if s.name.is_empty() {
            return Err(derr(d, format!("secret env for secret {:?} has no variable name", s.id)));
        }
    }
    for u in &meta.ulimit {
        if format!("RLIMIT_{}", u.name.to_uppercase()).parse::<oci_spec::runtime::PosixRlimitType>().is_err() {
            return Err(derr(d, format!("unknown ulimit {:?} (expected nofile, nproc, core, stack, ...)", u.name)));
        }
    }
    for h in &meta.extra_hosts {
        if h.ip.parse::<std::net::IpAddr>().is_err() {
            return Err(derr(d, format!("failed to parse IP {} of extra host {:?}", h.ip, h.host)));
        }
    }
    let network = pb::NetMode::try_from(e.network).map_err(|_| {
        derr(d, format!("unknown network mode {}; accepted: 0 (sandbox), 1 (host), 2 (none)", e.network))
    })?;
    if e.mounts.is_empty() {
        return Err(derr(d, "exec op has no mounts; mount 0 must be the rootfs at /"));
    }
    let mut outputs = HashSet::new();
    let mut dests = HashSet::new();
    let mut mount_types = Vec::with_capacity(e.mounts.len());
    for m in &e.mounts {
        if m.dest.is_empty() {
            return Err(derr(d, "exec mount with empty dest"));
        }
        if !dests.insert(m.dest.as_str()) {
            return Err(derr(d, format!("exec mounts {} twice", m.dest)));
        }
        if m.input < -1 || m.input >= n_in {
            return Err(derr(d, format!("mount {} input {} out of range (op has {n_in} inputs)", m.dest, m.input)));
        }
        if m.output < -1 || (m.output >= 0 && !outputs.insert(m.output)) {
            return Err(derr(d, format!("mount {} output {} is invalid or used twice", m.dest, m.output)));
        }
        let ty = pb::MountType::try_from(m.mount_type)
            .map_err(|_| derr(d, format!("mount {} has unknown type {}", m.dest, m.mount_type)))?;
        match ty {
            pb::MountType::Bind => {}
            pb::MountType::Cache => {
                if m.cache_opt.is_none() {
                    return Err(derr(d, format!("cache mount {} has no cacheOpt", m.dest)));
                }
                if m.output >= 0 {
                    return Err(derr(d, format!("cache mount {} must have output -1", m.dest)));
                }
            }
            pb::MountType::Tmpfs => {
                if m.input != -1 || m.output >= 0 {
                    return Err(derr(d, format!("tmpfs mount {} must have input -1 and output -1", m.dest)));
                }
            }
            pb::MountType::Secret => {
                if m.secret_opt.is_none() {
                    return Err(derr(d, format!("secret mount {} has no secretOpt", m.dest)));
                }
            }
            pb::MountType::Ssh => {
                if m.ssh_opt.is_none() {
                    return Err(derr(d, format!("ssh mount {} has no SSHOpt", m.dest)));
                }
            }
        }
        if m.content_cache != 0 || !m.result_id.is_empty() {
            tracing::debug!(op = %d, dest = %m.dest, "ignoring mount contentCache/resultID");
        }
        mount_types.push(ty);
    }
    Ok(ExecOp {
        exec: e.clone(),
        meta: meta.clone(),
        security,
        network,
        mount_types,
        outputs: e.mounts.iter().map(|m| m.output).filter(|o| *o >= 0).collect(),
    })
}

fn file(d: &Digest, f: &pb::FileOp, n_in: i64) -> Result<FileOp> {
    if f.actions.is_empty() {
        return Err(derr(d, "file op has no actions"));
    }
    let mut actions = Vec::with_capacity(f.actions.len());
    for (i, a) in f.actions.iter().enumerate() {
        // An index >= n_in refers to the output of action (index - n_in), which must come earlier.
        let limit = n_in + i as i64;
        if a.input < -1 || a.input >= limit {
            return Err(derr(
                d,
                format!(
                    "file action {i} input {} out of range (-1, an op input < {n_in}, or an earlier action)",
                    a.input
                ),
            ));
        }
        if a.secondary_input < -1 || a.secondary_input >= limit {
            return Err(derr(d, format!("file action {i} secondaryInput {} out of range", a.secondary_input)));
        }
        if a.output < -1 {
            return Err(derr(d, format!("file action {i} output {} invalid", a.output)));
        }
        let Some(action) = a.action.clone() else {
            return Err(derr(d, format!("file action {i} has no known action (copy, mkfile, mkdir, rm, symlink)")));
        };
        actions.push(FileAction { input: a.input, secondary_input: a.secondary_input, output: a.output, action });
    }
    Ok(FileOp { actions, outputs: f.actions.iter().map(|a| a.output).filter(|o| *o >= 0).collect() })
}

fn derr(d: &Digest, msg: impl Into<String>) -> Error {
    Error::definition(Some(d.as_str()), msg)
}

fn unsupported(d: &Digest, msg: impl std::fmt::Display) -> Error {
    Error::new(ErrorKind::Unsupported, format!("op {d}: {msg}"))
}
