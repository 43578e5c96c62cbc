//! # kiln
//!
//! An embeddable, BuildKit-style container build engine. A caller describes a build as a graph of
//! LLB operations ([`graph`]), the [`solver`] resolves it with content-addressed caching, runs
//! steps in containers through a [`worker`], and [`export`]s the results.
#![warn(missing_docs)]

pub mod build;
pub mod cache;
pub mod content;
pub mod digest;
pub mod engine;
pub mod error;
pub mod export;
pub mod fileops;
pub mod graph;
pub mod options;
pub mod progress;
pub mod registry;
pub mod remotecache;
pub mod snapshot;
pub mod solver;
pub mod source;
pub mod worker;

pub use cache::{PruneReport, UsageRecord};
pub use digest::Digest;
pub use engine::{Engine, EngineOptions, SnapshotterKind, WorkerInfo};
pub use error::{Error, ErrorKind, MissingInput, Result};
pub use graph::{Definition, State};
pub use progress::{ProgressEvent, ProgressSink};
pub use solver::{CancelToken, SolveOptions, SolveResult};

/// Local cache directories (what `type=local` cache exports write): list their tags, prune them
/// (`kiln cache ls|prune`).
pub mod local_cache {
    pub use crate::remotecache::export::{list_local as list, prune_local as prune, LocalPruneReport, TagInfo};
}
