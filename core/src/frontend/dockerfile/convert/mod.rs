//! The `dockerfile.v0` converter: a parsed [`Dockerfile`] and [`ConvertOptions`] in, the target
//! stage's LLB [`State`] and final [`ImageConfig`] out, with the semantics of BuildKit v0.11.6's
//! `dockerfile2llb` (same ops, op names, env/cwd/user handling and file-op flags).
//!
//! The phases follow BuildKit's `toDispatchState`: meta ARGs and base names ([`stages`]), the
//! stage graph and which stages the target needs, base images and named contexts resolved
//! through an [`ImageMetaResolver`] ([`base`]), then each needed stage's instructions dispatched
//! in order ([`dispatch`], [`run`], [`copy`]). Only the host platform is supported.
//!
//! The build context is a `local://context` source whose follow paths are the context paths the
//! stages read; those are known only after dispatching, so the stages are dispatched twice: once
//! to collect the paths, once with the final context source (BuildKit mutates the context's
//! output in place instead, which immutable states cannot).

mod base;
mod checks;
mod copy;
mod dispatch;
mod history;
mod names;
mod options;
mod run;
mod stages;

pub use options::{parse_named_context, ConvertOptions, NamedContext, BUILD_ARG_PREFIX, CONTEXT_PREFIX, LABEL_PREFIX};

use super::error::{DockerfileError, DockerfileErrorKind, Location};
use super::instructions::Dockerfile;
use crate::error::Result;
use crate::graph::{ImageConfig, ImageMetaResolver, LocalOptions, State};

/// The result of a conversion.
#[derive(Debug, Clone)]
pub struct Converted {
    /// The target stage's filesystem (solve it).
    pub state: State,
    /// The target stage's image config (base image's config merged with what the stages set).
    pub image_config: ImageConfig,
}

/// Converts `df` for `opts.target` (the last stage when empty), building only the stages the
/// target needs; base images and named contexts are resolved through `resolver` (blocking).
pub fn convert(df: &Dockerfile, opts: &ConvertOptions, resolver: &dyn ImageMetaResolver) -> Result<Converted> {
    let file = opts.filename.clone();
    let located = move |e: DockerfileError| -> crate::Error { e.in_file(file.clone()).into() };
    let mut graph = stages::StageGraph::new(df, opts).map_err(&located)?;
    base::resolve_bases(&mut graph, opts, resolver)?;

    // First pass: which context paths the stages read (the context source's follow paths).
    let placeholder = context_source(opts, None);
    let (_, first) = dispatch::dispatch_all(&graph, opts, &placeholder).map_err(&located)?;
    let context = context_source(opts, normalize_context_paths(&first.ctx_paths));
    let (target, _) = dispatch::dispatch_all(&graph, opts, &context).map_err(&located)?;

    let mut image_config = target.image;
    image_config.labels.extend(opts.labels.iter().map(|(k, v)| (k.clone(), v.clone())));
    Ok(Converted { state: target.state, image_config })
}

/// Parses `text` and converts it ([`convert`]); errors name `opts.filename` and the line.
pub fn convert_text(text: &str, opts: &ConvertOptions, resolver: &dyn ImageMetaResolver) -> Result<Converted> {
    let df = super::parse(text).map_err(|e| crate::Error::from(e.in_file(opts.filename.clone())))?;
    convert(&df, opts, resolver)
}

/// The build context source: `local://NAME` with the `.dockerignore` excludes, the context name
/// as shared key hint and the follow paths (BuildKit's `load build context`).
fn context_source(opts: &ConvertOptions, follow_paths: Option<Vec<String>>) -> State {
    if let Some(st) = &opts.build_context {
        return st.clone();
    }
    let o = LocalOptions {
        exclude: opts.excludes.clone(),
        follow_paths: follow_paths.unwrap_or_default(),
        shared_key_hint: Some(opts.context_name.clone()),
        ..Default::default()
    };
    State::local_with(opts.context_name.clone(), o).with_custom_name("[internal] load build context")
}

/// BuildKit's `normalizeContextPaths`: `None` (everything) when `/` is read, else the paths
/// relative to the root, sorted.
fn normalize_context_paths(paths: &std::collections::BTreeSet<String>) -> Option<Vec<String>> {
    if paths.contains("/") {
        return None;
    }
    let mut out: Vec<String> = paths.iter().map(|p| p.trim_start_matches('/').to_owned()).collect();
    out.sort();
    Some(out)
}

/// A conversion error at `location` (BuildKit's `parser.WithLocation`).
fn conv_err(message: impl Into<String>, location: Location) -> DockerfileError {
    DockerfileError::new(DockerfileErrorKind::Conversion, message).at(location)
}

#[cfg(test)]
mod tests;
