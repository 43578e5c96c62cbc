//! Client-side builds (BuildKit's gateway LLB bridge, embedded): [`Engine::build`] runs a
//! caller's function with a [`BuildContext`] that solves definitions into [`Ref`]s it can read
//! (files, directories, stats), then exports the result the function returns or sets, through the
//! same exporters and cache exporters as a solve. This module owns the build's lifecycle: the
//! set-once result, the frontend options (`cache-imports`), and releasing every ref — views,
//! tasks, containers — when the build ends, whatever way it ends.
//!
//! [`Engine::build`]: ../engine/struct.Engine.html#method.build

mod cache_imports;
mod ctx;
mod reference;
pub mod remote;

pub use cache_imports::{parse_cache_imports, CACHE_IMPORTS_ATTR};
pub use ctx::{BuildContext, SolveRequest};
pub use reference::{FileStat, Ref};

use crate::error::{Error, ErrorKind, Result};
use crate::graph::ImageConfig;
use crate::options::OutputSpec;
use crate::solver::{BuildSession, SolveOptions, SolveResult, Solver};
use futures::FutureExt;
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;

/// How to run a client-side build.
#[derive(Debug, Clone, Default)]
pub struct BuildOptions {
    /// What every inner solve uses (locals, secrets, SSH, entitlements, platform, progress,
    /// cache imports) and what the result goes to (outputs, cache exports, image config);
    /// `cancel` cancels the whole build.
    pub solve: SolveOptions,
    /// Frontend options (BuildKit's `FrontendOpt`), readable by the function through
    /// [`BuildContext::frontend_attrs`]. `cache-imports` (BuildKit's JSON list) adds cache imports
    /// to every inner solve.
    pub frontend_attrs: BTreeMap<String, String>,
}

impl BuildOptions {
    /// A build with these solve options and no frontend options.
    pub fn new(solve: SolveOptions) -> Self {
        BuildOptions { solve, frontend_attrs: BTreeMap::new() }
    }

    /// Adds a frontend option.
    pub fn frontend_attr(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.frontend_attrs.insert(key.into(), value.into());
        self
    }
}

/// A build's result (BuildKit's `client.Result`): one ref, or named refs, plus metadata.
#[derive(Debug, Clone, Default)]
pub struct BuildOutput {
    /// The result exported to every output (`None` with no named refs: the empty filesystem).
    pub result: Option<Ref>,
    /// Named results (BuildKit's `Refs`, e.g. one per platform). Each goes to its own
    /// subdirectory `DEST/NAME` of every `type=local` output; other outputs and cache exports
    /// take a single result.
    pub refs: BTreeMap<String, Ref>,
    /// The image config image outputs write (BuildKit's `containerimage.config` metadata),
    /// instead of the build options' `image_config`.
    pub image_config: Option<ImageConfig>,
    /// Other metadata, returned in the exporter response as UTF-8 (lossy).
    pub metadata: BTreeMap<String, Vec<u8>>,
}

impl BuildOutput {
    /// A result of one ref.
    pub fn of(r: Ref) -> Self {
        BuildOutput { result: Some(r), ..Default::default() }
    }

    /// Sets the image config.
    pub fn with_image_config(mut self, config: ImageConfig) -> Self {
        self.image_config = Some(config);
        self
    }
}

/// Runs a build on `solver` (the caller holds the in-flight gate for the whole build).
pub(crate) async fn run<F, Fut>(solver: Arc<Solver>, mut opts: BuildOptions, f: F) -> Result<SolveResult>
where
    F: FnOnce(BuildContext) -> Fut,
    Fut: Future<Output = Result<Option<BuildOutput>>> + Send,
{
    if let Some(json) = opts.frontend_attrs.get(CACHE_IMPORTS_ATTR) {
        opts.solve.cache_imports.extend(parse_cache_imports(json)?);
    }
    let cancel = opts.solve.cancel.take();
    if cancel.as_ref().is_some_and(|t| t.is_cancelled()) {
        return Err(Error::Cancelled);
    }
    let session = BuildSession::new(solver, opts.solve);
    let ctx = BuildContext::new(session.clone(), opts.frontend_attrs);
    // The build future may be dropped at any await: the guard still ends the session.
    let _release = ReleaseOnDrop { session: session.clone(), ctx: ctx.clone() };
    // A panic while making the future is the function's panic too.
    let work = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(ctx.clone()))) {
        Ok(fut) => run_and_export(&session, &ctx, fut).boxed(),
        Err(p) => futures::future::ready(Err(panicked(p))).boxed(),
    };
    let outcome = match &cancel {
        None => work.await,
        Some(token) => {
            tokio::select! {
                r = work => r,
                _ = token.cancelled() => Err(Error::Cancelled),
            }
        }
    };
    // Whatever happened: no ref readable any more, every task aborted, every view unmounted,
    // and the build returns only once the tasks' guards have run.
    session.close();
    ctx.release();
    session.wait_idle().await;
    if let Err(e) = &outcome {
        tracing::debug!(error = %e, "client-side build failed");
    }
    outcome
}

/// Ends the build's session and releases its refs when dropped (idempotent: the normal path has
/// done so already and waited for the tasks; a dropped build leaves the wait to
/// `Engine::wait_idle`).
struct ReleaseOnDrop {
    session: Arc<BuildSession>,
    ctx: BuildContext,
}

impl Drop for ReleaseOnDrop {
    fn drop(&mut self) {
        self.session.close();
        self.ctx.release();
    }
}

/// The embedded result a ref is (a daemon's ref cannot be the result of an embedded build).
fn local_solved(r: &Ref) -> Result<crate::solver::SolvedRef> {
    r.local()
        .map(|i| i.solved.clone())
        .ok_or_else(|| Error::definition(None, "a result solved on a daemon cannot be the result of an embedded build"))
}

/// The panic of a build function as an error.
fn panicked(p: Box<dyn std::any::Any + Send>) -> Error {
    let msg = p
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a non-string payload".to_owned());
    Error::new(ErrorKind::Internal, format!("the build function panicked: {msg}"))
}

/// Awaits the function (its panic becomes an error), takes its result — returned or set, once —
/// and exports it.
async fn run_and_export<Fut>(session: &Arc<BuildSession>, ctx: &BuildContext, fut: Fut) -> Result<SolveResult>
where
    Fut: Future<Output = Result<Option<BuildOutput>>> + Send,
{
    let returned = std::panic::AssertUnwindSafe(fut).catch_unwind().await.map_err(panicked)??;
    let set = ctx.take_result();
    let output = match (returned, set) {
        (Some(_), Some(_)) => return Err(ctx::result_already_set()),
        (r, s) => r.or(s).unwrap_or_default(),
    };
    let opts = session.opts();
    let config = output.image_config.clone().unwrap_or_else(|| opts.image_config.clone());
    let mut response = BTreeMap::new();
    if output.refs.is_empty() {
        let solved = output.result.as_ref().map(local_solved).transpose()?;
        response.extend(session.export(solved.as_ref(), &opts.outputs, &config, true).await?);
    } else {
        if output.result.is_some() {
            return Err(Error::definition(None, "a build result has either one ref or named refs, not both"));
        }
        if !opts.cache_exports.is_empty() {
            return Err(Error::new(
                ErrorKind::Unsupported,
                "cache exports take a single build result; this build returned named refs",
            ));
        }
        for (name, r) in &output.refs {
            if name.is_empty() || name.contains('/') || name == "." || name == ".." {
                return Err(Error::definition(
                    None,
                    format!("invalid result name {name:?}: a name is one path component"),
                ));
            }
            let outputs = opts
                .outputs
                .iter()
                .map(|o| match o {
                    OutputSpec::Local { dest } => Ok(OutputSpec::Local { dest: dest.join(name) }),
                    other => Err(Error::new(
                        ErrorKind::Unsupported,
                        format!("output {other:?} takes a single build result; named refs export to type=local only"),
                    )),
                })
                .collect::<Result<Vec<_>>>()?;
            response.extend(session.export(Some(&local_solved(r)?), &outputs, &config, false).await?);
        }
    }
    for (k, v) in &output.metadata {
        response.insert(k.clone(), String::from_utf8_lossy(v).into_owned());
    }
    let (cached, executed) = session.counts();
    Ok(SolveResult { exporter_response: response, cached, executed })
}
