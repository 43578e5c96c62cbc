//! File ops: runs a chain of file actions (mkdir, mkfile, rm, symlink, copy) following BuildKit's
//! input convention (an action's `input` below the op's input count is a real input; at or above it
//! names the result of an earlier action; -1 is scratch). An action result used by exactly one
//! later action is mutated in place; outputs are committed and recorded.

use super::{keys, OpSolver, Outputs};
use crate::cache::CacheManager;
use crate::digest::Digest;
use crate::error::{Error, ErrorKind, Result};
use crate::fileops::{self, CopyOptions, Owner};
use crate::graph::op::{FileAction, FileOp};
use crate::graph::pb;
use crate::graph::pb::file_action::Action;
use crate::graph::{SourceSpec, Vertex};
use crate::snapshot::{SnapshotId, Snapshotter};
use crate::solver::refs::{Active, ResultRef};
use crate::solver::Solve;
use crate::worker::pool::Worker;
use futures::future::BoxFuture;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Copy options from the wire form.
pub fn copy_options(c: &pb::FileActionCopy) -> CopyOptions {
    CopyOptions {
        follow_symlinks: c.follow_symlink,
        dir_copy_contents: c.dir_copy_contents,
        create_dest_path: c.create_dest_path,
        allow_wildcard: c.allow_wildcard,
        allow_empty_wildcard: c.allow_empty_wildcard,
        include: c.include_patterns.clone(),
        exclude: c.exclude_patterns.clone(),
        owner: None,
        mode: if c.mode > 0 { Some(c.mode as u32) } else { None },
        timestamp: if c.timestamp > 0 { Some(c.timestamp) } else { None },
        always_replace_existing: c.always_replace_existing_dest_paths,
        attempt_unpack: c.attempt_unpack_docker_compatibility,
    }
}

enum Slot {
    Active(Active),
    Committed(SnapshotId),
    Taken,
}

impl OpSolver for FileOp {
    fn outputs(&self) -> &[i64] {
        &self.outputs
    }

    fn cache_key<'a>(
        &'a self,
        solve: &'a Arc<Solve>,
        v: &'a Vertex,
        input_keys: &'a [Digest],
    ) -> BoxFuture<'a, Result<Digest>> {
        Box::pin(cache_key(self, solve, v, input_keys))
    }

    fn execute<'a>(
        &'a self,
        solve: &'a Arc<Solve>,
        v: &'a Vertex,
        worker: &'a Arc<Worker>,
        key: &'a Digest,
        inputs: &'a [Option<ResultRef>],
    ) -> BoxFuture<'a, Result<Outputs>> {
        let cache = solve.solver.cache.clone();
        let worker = worker.clone();
        let key = key.clone();
        let f = self.clone();
        let inputs = inputs.to_vec();
        let name = v.name();
        let op = v.digest.to_string();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || run_blocking(&cache, &op, &name, &f, &worker, &key, &inputs))
                .await
                .map_err(|e| Error::with_source(ErrorKind::Internal, "file op task", e))?
        })
    }
}

/// The key of a file op: an input used only as a copy source counts by the content checksum of
/// what the copies read (when it is a local source; other inputs' keys already identify their
/// content), so changing an unrelated file of a context keeps the copy cached.
async fn cache_key(f: &FileOp, solve: &Arc<Solve>, v: &Vertex, input_keys: &[Digest]) -> Result<Digest> {
    let mut input_parts = keys::input_parts(input_keys);
    for (j, part) in input_parts.iter_mut().enumerate() {
        let Some(copies) = copy_only_input(f, j as i64) else { continue };
        let inp = &v.inputs[j];
        let Some(local) = solve.def.vertex(&inp.digest).and_then(|iv| match iv.source_spec() {
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
                let outs = solve.result_future(&inp.digest).await.map_err(|e| (*e.0).clone())?;
                outs.outputs.get(&inp.index).cloned().flatten()
            }
        };
        let sums = tokio::task::spawn_blocking(move || copy_checksums(root.as_deref(), r.as_ref(), &copies))
            .await
            .map_err(|e| Error::with_source(ErrorKind::Internal, "checksum task", e))??;
        *part = format!("content:{}", sums.join(","));
    }
    Ok(keys::vertex_key(keys::op_identity(&v.op, |_| {}), Vec::new(), input_parts))
}

/// The copy actions reading input `j`, when `j` is used only as a copy source.
fn copy_only_input(f: &FileOp, j: i64) -> Option<Vec<pb::FileActionCopy>> {
    if f.actions.iter().any(|a| a.input == j) {
        return None;
    }
    let mut copies = Vec::new();
    for a in f.actions.iter().filter(|a| a.secondary_input == j) {
        match &a.action {
            Action::Copy(c) => copies.push(c.clone()),
            _ => return None,
        }
    }
    (!copies.is_empty()).then_some(copies)
}

/// Content checksums of what `copies` read, from a host directory (`dir`) or a result.
fn copy_checksums(dir: Option<&Path>, r: Option<&ResultRef>, copies: &[pb::FileActionCopy]) -> Result<Vec<String>> {
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
        let opts = copy_options(c);
        match crate::fileops::checksum_selection(&root, &c.src, &opts) {
            Ok(d) => out.push(d.to_string()),
            // A missing source fails at execution with a clear error; keep the key defined.
            Err(e) => out.push(format!("error:{}", e.kind())),
        }
    }
    Ok(out)
}

fn run_blocking(
    cache: &CacheManager,
    op: &str,
    name: &str,
    f: &FileOp,
    worker: &Arc<Worker>,
    key: &Digest,
    inputs: &[Option<ResultRef>],
) -> Result<Outputs> {
    let sn = worker.snapshotter.clone();
    let n = inputs.len() as i64;
    let mut uses = vec![0usize; f.actions.len()];
    for a in &f.actions {
        for i in [a.input, a.secondary_input] {
            if i >= n && ((i - n) as usize) < uses.len() {
                uses[(i - n) as usize] += 1;
            }
        }
    }
    let mut slots: Vec<Slot> = Vec::with_capacity(f.actions.len());
    let mut out = BTreeMap::new();
    for (idx, a) in f.actions.iter().enumerate() {
        // The filesystem this action writes to (validation put an action result's index below
        // this action's).
        let active = if a.input >= n {
            let j = (a.input - n) as usize;
            match std::mem::replace(&mut slots[j], Slot::Taken) {
                Slot::Active(act) if uses[j] == 1 => act,
                Slot::Active(act) => {
                    let id = act.commit()?;
                    let child = Active::prepare(&sn, Some(&id))?;
                    slots[j] = Slot::Committed(id);
                    child
                }
                Slot::Committed(id) => {
                    let child = Active::prepare(&sn, Some(&id))?;
                    slots[j] = Slot::Committed(id);
                    child
                }
                Slot::Taken => {
                    return Err(Error::definition(
                        Some(op),
                        format!("file action {idx}: result of action {j} used twice"),
                    ))
                }
            }
        } else if a.input >= 0 {
            let r = inputs[a.input as usize].as_ref();
            Active::prepare(&sn, r.map(|r| &r.snapshot))?
        } else {
            Active::prepare(&sn, None)?
        };
        {
            let guard = sn.mount(&active.id)?;
            let root = guard.path();
            apply(cache, op, root, a, inputs, &mut slots, &sn, n)?;
        }
        if a.output >= 0 {
            let r = cache.commit_and_record(worker, key, a.output, active, name)?;
            slots.push(Slot::Committed(r.snapshot.clone()));
            out.insert(a.output, Some(r));
        } else {
            slots.push(Slot::Active(active));
        }
    }
    Ok(out)
}

#[allow(clippy::too_many_arguments)]
fn apply(
    cache: &CacheManager,
    op: &str,
    root: &Path,
    a: &FileAction,
    inputs: &[Option<ResultRef>],
    slots: &mut [Slot],
    sn: &Arc<dyn Snapshotter>,
    n: i64,
) -> Result<()> {
    let ctx = |e: Error| e.context(format!("op {op}"));
    match &a.action {
        Action::Mkdir(m) => fileops::mkdir(
            root,
            &m.path,
            mode_or(m.mode, 0o755),
            m.make_parents,
            owner(root, m.owner.as_ref())?,
            ts(m.timestamp),
        )
        .map_err(ctx),
        Action::Mkfile(m) => fileops::mkfile(
            root,
            &m.path,
            mode_or(m.mode, 0o644),
            &m.data,
            owner(root, m.owner.as_ref())?,
            ts(m.timestamp),
        )
        .map_err(ctx),
        Action::Rm(r) => fileops::rm(root, &r.path, r.allow_not_found, r.allow_wildcard).map_err(ctx),
        Action::Symlink(s) => {
            fileops::symlink(root, &s.oldpath, &s.newpath, owner(root, s.owner.as_ref())?, ts(s.timestamp)).map_err(ctx)
        }
        Action::Copy(c) => {
            let mut opts = copy_options(c);
            opts.owner = owner(root, c.owner.as_ref())?;
            let j = a.secondary_input;
            let _tmp;
            let _guard;
            let src_root: PathBuf = if j < 0 {
                _tmp = empty_dir(cache)?;
                _tmp.path().to_path_buf()
            } else if j < n {
                match inputs.get(j as usize).and_then(|r| r.as_ref()) {
                    Some(r) => {
                        _guard = r.worker.snapshotter.mount(&r.snapshot)?;
                        _guard.path().to_path_buf()
                    }
                    None => {
                        _tmp = empty_dir(cache)?;
                        _tmp.path().to_path_buf()
                    }
                }
            } else {
                let k = (j - n) as usize;
                let id = match slots.get_mut(k).map(|s| std::mem::replace(s, Slot::Taken)) {
                    Some(Slot::Active(act)) => act.commit()?,
                    Some(Slot::Committed(id)) => id,
                    _ => {
                        return Err(Error::definition(
                            Some(op),
                            format!("copy source refers to unusable action result {k}"),
                        ))
                    }
                };
                slots[k] = Slot::Committed(id.clone());
                _guard = sn.mount(&id)?;
                _guard.path().to_path_buf()
            };
            fileops::copy(&src_root, &c.src, root, &c.dest, &opts).map_err(ctx)
        }
    }
}

/// An empty directory standing for a scratch copy source (removed on drop).
fn empty_dir(cache: &CacheManager) -> Result<tempfile::TempDir> {
    tempfile::tempdir_in(cache.tmp()).map_err(|e| Error::io("create empty dir", cache.tmp(), e))
}

fn mode_or(mode: i32, default: u32) -> u32 {
    if mode > 0 {
        mode as u32
    } else {
        default
    }
}

fn ts(t: i64) -> Option<i64> {
    (t > 0).then_some(t)
}

/// Resolves a wire owner (numeric or by name against the target's /etc/passwd and /etc/group).
fn owner(root: &Path, o: Option<&pb::ChownOpt>) -> Result<Option<Owner>> {
    let Some(o) = o else { return Ok(None) };
    let resolve = |u: Option<&pb::UserOpt>, group: bool| -> Result<Option<u32>> {
        use pb::user_opt::User;
        match u.and_then(|u| u.user.as_ref()) {
            None => Ok(None),
            Some(User::ById(id)) => Ok(Some(*id)),
            Some(User::ByName(n)) => {
                let spec = if group { format!("0:{}", n.name) } else { n.name.clone() };
                let (uid, gid, _) = crate::worker::resolve_user(root, &spec)?;
                Ok(Some(if group { gid } else { uid }))
            }
        }
    };
    let uid = resolve(o.user.as_ref(), false)?;
    let gid = resolve(o.group.as_ref(), true)?;
    if uid.is_none() && gid.is_none() {
        return Ok(None);
    }
    let uid = uid.unwrap_or(0);
    Ok(Some(Owner { uid, gid: gid.unwrap_or(uid) }))
}
