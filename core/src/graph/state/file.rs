//! File actions (BuildKit's `llb.Mkdir`, `Mkfile`, `Rm`, `Symlink`, `Copy`): each appends one
//! action to a FileOp, chaining into the previous FileOp while the state is the fresh result of a
//! file action (BuildKit's `Mkdir(..).Mkfile(..)`), and records the caps the action needs.

use super::node::{Constraints, FileChain, Node, NodeKind, Output};
use super::path::{clean, normalize_path};
use super::{CopyOptions, MkdirOptions, MkfileOptions, Owner, RmOptions, State};
use crate::graph::pb;
use crate::graph::pb::file_action::Action;
use std::collections::BTreeSet;
use std::sync::Arc;

fn chown(o: &Option<Owner>) -> Option<pb::ChownOpt> {
    o.map(|o| pb::ChownOpt {
        user: Some(pb::UserOpt { user: Some(pb::user_opt::User::ById(o.uid)) }),
        group: Some(pb::UserOpt { user: Some(pb::user_opt::User::ById(o.gid)) }),
    })
}

/// Go llb's `WithUser("user[:group]")`: each part a decimal id or a name resolved when solved
/// (against the action's input, index 0 of the action here as in Go's first action).
fn chown_spec(spec: &str) -> pb::ChownOpt {
    let part = |v: &str| {
        let user = match v.parse::<u32>() {
            Ok(id) => pb::user_opt::User::ById(id),
            Err(_) => pb::user_opt::User::ByName(pb::NamedUserOpt { name: v.to_owned(), input: 0 }),
        };
        pb::UserOpt { user: Some(user) }
    };
    let (u, g) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    pb::ChownOpt { user: Some(part(u)), group: g.map(part) }
}

fn owner_of(user: &Option<String>, owner: &Option<Owner>) -> Option<pb::ChownOpt> {
    match user {
        Some(u) => Some(chown_spec(u)),
        None => chown(owner),
    }
}

impl State {
    fn file_action(&self, action: Action, copy_src: Option<Option<Output>>, caps: &[&'static str]) -> State {
        let chained = match (&self.output, self.chain_open) {
            (Some(out), true) if out.index == 0 => match &out.node.kind {
                NodeKind::File(chain) => Some((chain.clone(), out.node.constraints.clone())),
                _ => None,
            },
            _ => None,
        };
        let (mut chain, constraints) = chained.unwrap_or_else(|| {
            (FileChain { base: self.output.clone(), actions: vec![], caps: BTreeSet::new() }, Constraints::default())
        });
        chain.actions.push((action, copy_src));
        chain.caps.insert("file.base");
        chain.caps.extend(caps.iter().copied());
        State {
            output: Some(Output { node: Arc::new(Node { kind: NodeKind::File(chain), constraints }), index: 0 }),
            meta: self.meta.clone(),
            chain_open: true,
        }
    }

    /// Creates a directory (relative paths join the state's cwd).
    pub fn mkdir(&self, path: impl AsRef<str>, o: MkdirOptions) -> State {
        let a = Action::Mkdir(pb::FileActionMkDir {
            path: normalize_path(self.cwd(), path.as_ref(), false),
            mode: (o.mode & 0o777) as i32,
            make_parents: o.make_parents,
            owner: owner_of(&o.user, &o.owner),
            timestamp: o.timestamp.unwrap_or(-1),
        });
        self.file_action(a, None, &[])
    }

    /// Creates a file with `data` and permission bits `mode`.
    pub fn mkfile(&self, path: impl AsRef<str>, mode: u32, data: impl Into<Vec<u8>>, o: MkfileOptions) -> State {
        let a = Action::Mkfile(pb::FileActionMkFile {
            path: normalize_path(self.cwd(), path.as_ref(), false),
            mode: (mode & 0o777) as i32,
            data: data.into(),
            owner: chown(&o.owner),
            timestamp: o.timestamp.unwrap_or(-1),
        });
        self.file_action(a, None, &[])
    }

    /// Removes a path.
    pub fn rm(&self, path: impl AsRef<str>, o: RmOptions) -> State {
        let a = Action::Rm(pb::FileActionRm {
            path: normalize_path(self.cwd(), path.as_ref(), false),
            allow_not_found: o.allow_not_found,
            allow_wildcard: o.allow_wildcard,
        });
        self.file_action(a, None, if o.allow_wildcard { &["file.rm.wildcard"] } else { &[] })
    }

    /// Creates a symlink at `newpath` pointing to `oldpath` (kept verbatim).
    pub fn symlink(&self, oldpath: impl Into<String>, newpath: impl AsRef<str>) -> State {
        let a = Action::Symlink(pb::FileActionSymlink {
            oldpath: oldpath.into(),
            newpath: normalize_path(self.cwd(), newpath.as_ref(), false),
            owner: None,
            timestamp: -1,
        });
        self.file_action(a, None, &["file.symlink.create"])
    }

    /// Copies `src_path` of `src` to `dest_path` of this state. A relative source joins `src`'s
    /// cwd; a relative destination joins this state's cwd (a trailing `/` is kept).
    pub fn copy(&self, src: &State, src_path: impl AsRef<str>, dest_path: impl AsRef<str>, o: CopyOptions) -> State {
        let sp = clean(src_path.as_ref());
        let sp = if sp.starts_with('/') { sp } else { clean(&format!("{}/{sp}", src.cwd())) };
        let has_patterns = !o.include.is_empty() || !o.exclude.is_empty();
        let a = Action::Copy(pb::FileActionCopy {
            src: sp,
            dest: normalize_path(self.cwd(), dest_path.as_ref(), true),
            owner: owner_of(&o.user, &o.owner),
            mode: o.mode.map(|m| m as i32).unwrap_or(-1),
            follow_symlink: o.follow_symlinks,
            dir_copy_contents: o.dir_copy_contents,
            attempt_unpack_docker_compatibility: o.attempt_unpack,
            create_dest_path: o.create_dest_path,
            allow_wildcard: o.allow_wildcard,
            allow_empty_wildcard: o.allow_empty_wildcard,
            timestamp: o.timestamp.unwrap_or(-1),
            include_patterns: o.include,
            exclude_patterns: o.exclude,
            always_replace_existing_dest_paths: false,
        });
        let caps: &[&'static str] = if has_patterns { &["file.copy.includeexcludepatterns"] } else { &[] };
        self.file_action(a, Some(src.output.clone()), caps)
    }
}
