//! # kiln
//!
//! An embeddable, BuildKit-style container build engine. A caller describes a build as a graph of
//! LLB operations ([`graph`]), the [`solver`] resolves it with content-addressed caching, runs
//! steps in containers through its workers, and exports the results ([`options::OutputSpec`]).
#![warn(missing_docs)]

/// Declares kiln's internal modules: crate-private in a normal build, public with the
/// `test-support` feature (kiln's own integration tests reach into them). The public face is
/// the modules declared `pub mod` below and the re-exports.
macro_rules! internal_modules {
    ($($(#[$attr:meta])* $name:ident),* $(,)?) => {$(
        $(#[$attr])*
        #[cfg(feature = "test-support")]
        pub mod $name;
        $(#[$attr])*
        #[cfg(not(feature = "test-support"))]
        // What only the integration tests call is unused in a normal build.
        #[allow(dead_code, unused_imports)]
        pub(crate) mod $name;
    )*};
}

#[cfg(feature = "api")]
pub mod api;
pub mod build;
#[cfg(feature = "api")]
pub mod client;
pub mod digest;
pub mod engine;
pub mod error;
pub mod frontend;
pub mod graph;
pub mod options;
pub mod progress;
#[cfg(feature = "api")]
pub mod server;
#[cfg(feature = "api")]
pub mod session;
pub mod solver;

internal_modules!(cache, content, export, fileops, registry, remotecache, snapshot, source, worker);

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
