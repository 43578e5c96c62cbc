//! The fluent `State` builder, in the spirit of BuildKit's Go `llb` package: sources, `run`,
//! file actions, merge and per-op constraints, marshalled into a validated [`Definition`] with
//! BuildKit's encoding conventions (mount/output numbering, file action chaining, terminal op).
//!
//! States are cheap immutable values (ops are shared `Arc` nodes); every method returns a new
//! state. Marshalling visits each node once and deduplicates identical ops by digest, so the
//! same graph always yields identical bytes.
//!
//! Split the way BuildKit's `client/llb` is; each file owns one job:
//!
//! - `mod.rs` (this file): [`State`] and [`ExecState`], the llb metadata a state carries (env, cwd,
//!   user, image config), per-op constraints, merge and diff.
//! - `node`: the internal op graph (nodes, outputs, constraints) and its stack-safe `Drop`.
//! - `options`: the public option types of sources, `run` and file actions, enum names, `run`
//!   validation.
//! - `mount_options`: mount and OCI layout option structs with the defaults every face shares.
//! - `source`: source states and image reference normalisation.
//! - `image`: image config metadata (entrypoint, cmd, labels, ports, ...) and base images whose
//!   config is resolved through an [`ImageMetaResolver`](super::resolve::ImageMetaResolver).
//! - `exec`: [`State::run`], split into process meta, mount planning, output numbering and caps.
//! - `file`: file actions and FileOp chaining.
//! - `path`: Go-compatible path normalisation.
//! - `marshal`: [`State::to_definition`], the byte-exact encoding into a [`Definition`].

mod exec;
mod file;
mod image;
mod marshal;
mod mount_options;
mod node;
mod options;
mod path;
mod source;

pub use exec::DEFAULT_PATH;
pub use mount_options::{
    parse_digest, BindMountOptions, CacheMountOptions, OciLayoutOptions, SecretMountOptions, TmpfsMountOptions,
};
pub use options::{
    CacheSharing, CopyOptions, ExecOptions, GitOptions, HttpOptions, LocalOptions, MkdirOptions, MkfileOptions,
    MountSpec, Network, Owner, RmOptions, SecretEnv, Security, SshSocket,
};
pub use path::clean as clean_path;
pub use source::normalize_image_ref;

#[cfg(doc)]
use super::definition::Definition;
use super::definition::CUSTOM_NAME_KEY;
use super::image_config::ImageConfig;
use super::pb;
use node::{Constraints, Node, NodeKind, Output};
use path::normalize_path;
use std::collections::BTreeMap;
use std::sync::Arc;

#[derive(Debug, Clone, Default, PartialEq)]
struct StateMeta {
    env: Vec<(String, String)>,
    cwd: Option<String>,
    user: Option<String>,
    hostname: Option<String>,
    /// The image config fields runs do not use (entrypoint, cmd, labels, ports, ...); its `env`,
    /// `working_dir` and `user` stay empty: the fields above are the truth for those. Shared
    /// (copied on write), so that states stay small and cheap to clone.
    image: Arc<ImageConfig>,
    /// True while `image.cmd` came from a base image: a later entrypoint resets it, as a
    /// Dockerfile's `ENTRYPOINT` resets an inherited `CMD`.
    cmd_inherited: bool,
}

/// A filesystem state: the output of an op (or scratch) plus llb-like metadata (env, cwd,
/// user) inherited by `run` and reported by [`State::image_config`].
#[derive(Debug, Clone, Default)]
pub struct State {
    output: Option<Output>,
    meta: StateMeta,
    /// True while this state is the fresh result of a file action: further file actions chain
    /// into the same FileOp (BuildKit's `Mkdir(..).Mkfile(..)`).
    chain_open: bool,
}

/// The result of [`State::run`]: the rootfs state (also reachable through `Deref`) and the
/// outputs of writable bind mounts.
#[derive(Debug, Clone)]
pub struct ExecState {
    root: State,
    mounts: Vec<(String, Option<State>)>,
}

impl ExecState {
    /// The rootfs after the exec. With a read-only rootfs the exec has no rootfs output and this
    /// is the input rootfs unchanged (as in Go's `llb`); use a mount output to keep such an exec.
    pub fn root(&self) -> State {
        self.root.clone()
    }

    /// The output of the writable bind mount at `dest`; `None` for readonly, cache, tmpfs and
    /// secret mounts or an unknown dest.
    pub fn mount_output(&self, dest: &str) -> Option<State> {
        self.mounts.iter().find(|(d, _)| d == dest).and_then(|(_, s)| s.clone())
    }
}

impl std::ops::Deref for ExecState {
    type Target = State;
    fn deref(&self) -> &State {
        &self.root
    }
}

impl State {
    /// The empty filesystem.
    pub fn scratch() -> State {
        State::default()
    }

    /// True when this state is scratch (no op).
    pub fn is_scratch(&self) -> bool {
        self.output.is_none()
    }

    fn from_node(kind: NodeKind, constraints: Constraints) -> State {
        State {
            output: Some(Output { node: Arc::new(Node { kind, constraints }), index: 0 }),
            meta: StateMeta::default(),
            chain_open: false,
        }
    }

    // -- metadata ------------------------------------------------------------------------------

    /// Sets env var `k` (replacing an earlier value) for later runs and the image config.
    pub fn with_env(mut self, k: impl Into<String>, v: impl Into<String>) -> State {
        let (k, v) = (k.into(), v.into());
        match self.meta.env.iter_mut().find(|(ek, _)| *ek == k) {
            Some(e) => e.1 = v,
            None => self.meta.env.push((k, v)),
        }
        self
    }

    /// Sets the working dir (relative paths join the current one).
    pub fn with_cwd(mut self, dir: impl AsRef<str>) -> State {
        self.meta.cwd = Some(normalize_path(self.cwd(), dir.as_ref(), false));
        self
    }

    /// Sets the user for later runs and the image config.
    pub fn with_user(mut self, user: impl Into<String>) -> State {
        self.meta.user = Some(user.into());
        self
    }

    /// Sets the hostname for later runs.
    pub fn with_hostname(mut self, h: impl Into<String>) -> State {
        self.meta.hostname = Some(h.into());
        self
    }

    /// Env vars in order of first setting.
    pub fn env(&self) -> &[(String, String)] {
        &self.meta.env
    }

    /// Working dir (`/` unless set).
    pub fn cwd(&self) -> &str {
        self.meta.cwd.as_deref().unwrap_or("/")
    }

    /// User, if set.
    pub fn user(&self) -> Option<&str> {
        self.meta.user.as_deref()
    }

    /// The image config this state carries: what a base image resolved with
    /// [`State::image_with`] brought, merged with what was set since (`with_env` replaces the
    /// same key, `with_cwd`/`with_user`/`with_cmd`/... replace the field, labels and ports add).
    pub fn image_config(&self) -> ImageConfig {
        ImageConfig {
            env: self.meta.env.iter().map(|(k, v)| format!("{k}={v}")).collect(),
            working_dir: self.meta.cwd.clone(),
            user: self.meta.user.clone(),
            ..(*self.meta.image).clone()
        }
    }

    /// Ends file-action chaining: the next file action on this state starts a new FileOp (as
    /// each Go llb `State.File` call does) instead of extending the one that made this state.
    pub fn seal(mut self) -> State {
        self.chain_open = false;
        self
    }

    /// Copies the llb metadata (env, cwd, user, image config) of `other` onto this state.
    pub fn with_meta_of(mut self, other: &State) -> State {
        self.meta = other.meta.clone();
        self
    }

    // -- constraints ---------------------------------------------------------------------------

    fn map_constraints(self, f: impl FnOnce(&mut Constraints)) -> State {
        let Some(out) = &self.output else {
            tracing::debug!("constraint on scratch state has no op to apply to; ignored");
            return self;
        };
        let mut c = out.node.constraints.clone();
        f(&mut c);
        let node = Arc::new(Node { kind: out.node.kind.clone(), constraints: c });
        State { output: Some(Output { node, index: out.index }), meta: self.meta, chain_open: false }
    }

    /// Display name of the op producing this state (`llb.customname`).
    pub fn with_custom_name(self, name: impl Into<String>) -> State {
        self.with_description(CUSTOM_NAME_KEY, name)
    }

    /// Adds a metadata description entry to the op producing this state.
    pub fn with_description(self, k: impl Into<String>, v: impl Into<String>) -> State {
        let (k, v) = (k.into(), v.into());
        self.map_constraints(|c| {
            c.description.insert(k, v);
        })
    }

    /// Restricts the op producing this state to workers having all `labels`; written as
    /// `KEY==VALUE` worker constraint filters.
    pub fn with_worker_selector(self, labels: BTreeMap<String, String>) -> State {
        self.map_constraints(|c| {
            c.worker_filter = labels.iter().map(|(k, v)| format!("{k}=={v}")).collect();
        })
    }

    /// Never use a cached result for the op producing this state.
    pub fn ignore_cache(self) -> State {
        self.map_constraints(|c| c.ignore_cache = true)
    }

    /// Sets the platform of the op producing this state.
    pub fn with_platform(self, p: pb::Platform) -> State {
        self.map_constraints(|c| c.platform = Some(p))
    }

    // -- merge ---------------------------------------------------------------------------------

    /// Stacks `states` (later ones win). Scratch inputs are dropped; none left gives scratch,
    /// one left gives that state (as Go's `llb.Merge`). The result has the first input's meta.
    pub fn merge(states: Vec<State>) -> State {
        let non_scratch: Vec<State> = states.into_iter().filter(|s| s.output.is_some()).collect();
        match non_scratch.len() {
            0 => State::scratch(),
            1 => non_scratch.into_iter().next().unwrap_or_default(),
            _ => {
                let meta = non_scratch[0].meta.clone();
                let outs = non_scratch.into_iter().filter_map(|s| s.output).collect();
                State { meta, ..State::from_node(NodeKind::Merge(outs), Constraints::default()) }
            }
        }
    }

    /// The changes that turn `lower` into `upper` (Go's `llb.Diff`): a scratch `lower` gives
    /// `upper` itself, scratch and scratch give scratch. Deletions are kept as whiteouts, so
    /// merging the diff onto another state deletes there too; exported alone, only what was
    /// added or changed (and its parent directories) is visible.
    pub fn diff(lower: &State, upper: &State) -> State {
        let Some(l) = &lower.output else { return upper.clone() };
        State::from_node(NodeKind::Diff { lower: Some(l.clone()), upper: upper.output.clone() }, Constraints::default())
    }
}
