//! The internal op graph behind [`State`](super::State): one shared [`Node`] per op (kind plus
//! per-op constraints), [`Output`] references between them, and an iterative `Drop` so that long
//! chains never overflow the stack. Nothing here is public; marshalling reads it in `marshal`.

use crate::graph::pb;
use crate::graph::pb::file_action::Action;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

#[derive(Debug, Clone, Default, PartialEq)]
pub(super) struct Constraints {
    pub(super) description: BTreeMap<String, String>,
    pub(super) ignore_cache: bool,
    /// Worker constraint filters, `KEY==VALUE` (see `definition::parse_worker_filter`).
    pub(super) worker_filter: Vec<String>,
    pub(super) platform: Option<pb::Platform>,
}

#[derive(Debug)]
pub(super) struct Node {
    pub(super) kind: NodeKind,
    pub(super) constraints: Constraints,
}

impl Drop for Node {
    /// Unlinks inputs iteratively: dropping a long chain recursively would overflow the stack.
    fn drop(&mut self) {
        let mut stack = take_inputs(&mut self.kind);
        while let Some(n) = stack.pop() {
            if let Ok(mut inner) = Arc::try_unwrap(n) {
                stack.extend(take_inputs(&mut inner.kind));
            }
        }
    }
}

fn take_inputs(kind: &mut NodeKind) -> Vec<Arc<Node>> {
    let mut v = Vec::new();
    match kind {
        NodeKind::Source { .. } => {}
        NodeKind::Exec(e) => v.extend(e.mounts.iter_mut().filter_map(|(s, _)| s.take()).map(|o| o.node)),
        NodeKind::File(f) => {
            v.extend(f.base.take().map(|o| o.node));
            v.extend(f.actions.iter_mut().filter_map(|(_, s)| s.as_mut().and_then(Option::take)).map(|o| o.node));
        }
        NodeKind::Merge(inputs) => v.extend(inputs.drain(..).map(|o| o.node)),
        NodeKind::Diff { lower, upper } => {
            v.extend(lower.take().map(|o| o.node));
            v.extend(upper.take().map(|o| o.node));
        }
    }
    v
}

#[derive(Debug, Clone)]
pub(super) enum NodeKind {
    Source {
        identifier: String,
        attrs: BTreeMap<String, String>,
        caps: Vec<&'static str>,
        platform_specific: bool,
    },
    Exec(Box<ExecNode>),
    File(FileChain),
    Merge(Vec<Output>),
    /// `lower` is always set when built (Option only so `Drop` can unlink it); `upper` None = scratch.
    Diff {
        lower: Option<Output>,
        upper: Option<Output>,
    },
}

#[derive(Debug, Clone)]
pub(super) struct Output {
    pub(super) node: Arc<Node>,
    pub(super) index: i64,
}

#[derive(Debug, Clone)]
pub(super) struct ExecNode {
    pub(super) meta: pb::Meta,
    pub(super) network: i32,
    /// Sorted by dest (secrets last), outputs already numbered; `input` filled at marshal time.
    pub(super) mounts: Vec<(Option<Output>, pb::Mount)>,
    pub(super) caps: BTreeSet<&'static str>,
    pub(super) security: i32,
    pub(super) secretenv: Vec<pb::SecretEnv>,
}

#[derive(Debug, Clone)]
pub(super) struct FileChain {
    /// The state the first action applies to (`None` = scratch).
    pub(super) base: Option<Output>,
    /// Actions in order; each later action applies to the previous one's result. The second
    /// element is the copy source (`Some(None)` = copy from scratch).
    pub(super) actions: Vec<(Action, Option<Option<Output>>)>,
    pub(super) caps: BTreeSet<&'static str>,
}
