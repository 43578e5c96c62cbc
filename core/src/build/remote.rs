//! A build run by a daemon's LLB bridge (BuildKit's gateway client): what a [`BuildContext`]
//! and its [`Ref`]s call when the engine is connected to a daemon. `kiln::client` implements
//! it over `moby.buildkit.v1.frontend.LLBBridge`; this layer only names the calls.
//!
//! [`BuildContext`]: super::BuildContext
//! [`Ref`]: super::Ref

use super::reference::FileStat;
use super::SolveRequest;
use crate::error::Result;
use crate::graph::Definition;
use futures::future::BoxFuture;

/// The LLB bridge of one build on a daemon. Refs are the daemon's ids.
pub trait RemoteBridge: Send + Sync + std::fmt::Debug {
    /// Solves `def` within the build; the daemon's ref id of the result.
    fn solve<'a>(&'a self, def: &'a Definition, req: &'a SolveRequest) -> BoxFuture<'a, Result<String>>;
    /// Reads a file of ref `id` (all of it, or `length` bytes from `offset`).
    fn read_file<'a>(&'a self, id: &'a str, path: &'a str, range: Option<(u64, u64)>)
        -> BoxFuture<'a, Result<Vec<u8>>>;
    /// Lists a directory of ref `id`.
    fn read_dir<'a>(
        &'a self,
        id: &'a str,
        path: &'a str,
        include_pattern: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Vec<FileStat>>>;
    /// Stats a path of ref `id`.
    fn stat_file<'a>(&'a self, id: &'a str, path: &'a str) -> BoxFuture<'a, Result<FileStat>>;
    /// Forces ref `id` to exist on the daemon.
    fn evaluate<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<()>>;
    /// A warning shown in the build's progress.
    fn warn<'a>(&'a self, vertex: &'a str, message: &'a str) -> BoxFuture<'a, Result<()>>;
}
