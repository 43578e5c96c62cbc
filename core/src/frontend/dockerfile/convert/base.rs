//! Base images and named contexts (BuildKit's base-resolution loop and `contextByName`): each
//! stage's FROM becomes scratch, a named context (`context:NAME`), an earlier stage, or a
//! registry image whose config is resolved through the [`ImageMetaResolver`] and whose source
//! is pinned to the resolved digest.

use super::options::{ConvertOptions, NamedContext};
use super::stages::{StageGraph, SCRATCH};
use crate::error::{Error, Result};
use crate::graph::state::DEFAULT_PATH;
use crate::graph::{
    normalize_image_ref, HttpOptions, ImageConfig, ImageMetaResolver, ImageRef, LocalOptions, Platform, State,
};

/// The image config of scratch (BuildKit's `emptyImage`).
pub(super) fn empty_image() -> ImageConfig {
    ImageConfig { working_dir: Some("/".into()), env: vec![format!("PATH={DEFAULT_PATH}")], ..Default::default() }
}

/// Docker's familiar form of a reference (`docker.io/library/busybox:latest` → `busybox`), as
/// named contexts are looked up.
fn familiar(name: &str) -> String {
    let n = normalize_image_ref(name);
    let n = n.strip_prefix("docker.io/library/").or_else(|| n.strip_prefix("docker.io/")).unwrap_or(&n);
    n.strip_suffix(":latest").unwrap_or(n).to_owned()
}

/// The named context for `name`: `NAME::PLATFORM` first, then `NAME` (never for `scratch` or
/// `context`).
fn lookup<'a>(opts: &'a ConvertOptions, name: &str) -> Option<(String, &'a NamedContext)> {
    if name.eq_ignore_ascii_case(SCRATCH) || name.eq_ignore_ascii_case("context") {
        return None;
    }
    let name = familiar(name);
    let platform = opts.target_platform.clone().unwrap_or_else(Platform::host);
    let pname = format!("{name}::{platform}");
    opts.named_contexts
        .get(&pname)
        .map(|c| (pname, c))
        .or_else(|| opts.named_contexts.get(&name).map(|c| (name.clone(), c)))
}

/// Whether a named context replaces `name`.
pub(super) fn has_named_context(opts: &ConvertOptions, name: &str) -> bool {
    lookup(opts, name).is_some()
}

/// The state (and image config, for images) of the named context for `name`, if any.
fn context_by_name(
    opts: &ConvertOptions,
    name: &str,
    resolver: &dyn ImageMetaResolver,
) -> Result<Option<(State, Option<ImageConfig>)>> {
    let Some((pname, ctx)) = lookup(opts, name) else { return Ok(None) };
    let platform = opts.target_platform.clone();
    Ok(Some(match ctx {
        NamedContext::Scratch => (State::scratch(), None),
        NamedContext::Image(r) => {
            let normalized = normalize_image_ref(r);
            let resolved = resolver.resolve_image_config(&ImageRef::Registry(normalized), platform.as_ref())?;
            let st =
                State::image(r).with_custom_name(format!("[context {pname}] {r}")).with_image_config(&resolved.config);
            (st, Some(resolved.config))
        }
        NamedContext::OciLayout { dir, reference } => {
            let image = ImageRef::OciLayout { dir: dir.clone(), reference: reference.clone() };
            let resolved = resolver.resolve_image_config(&image, platform.as_ref())?;
            let st = State::oci_layout(dir.clone(), reference.clone())
                .with_custom_name(format!("[context {pname}] OCI load from client"))
                .with_image_config(&resolved.config);
            (st, Some(resolved.config))
        }
        NamedContext::Local { name, excludes } => {
            let o = LocalOptions {
                exclude: excludes.clone(),
                shared_key_hint: Some(format!("context:{pname}")),
                ..Default::default()
            };
            (State::local_with(name.clone(), o).with_custom_name(format!("[context {pname}] load from client")), None)
        }
        NamedContext::Http(url) => (
            State::http(url.clone(), HttpOptions::default()).with_custom_name(format!("[context {pname}] {url}")),
            None,
        ),
    }))
}

/// Resolves every stage's base (BuildKit resolves configs only for stages the target needs).
pub(super) fn resolve_bases(g: &mut StageGraph, opts: &ConvertOptions, resolver: &dyn ImageMetaResolver) -> Result<()> {
    let file = opts.filename.clone();
    for i in 0..g.states.len() {
        let reachable = g.reachable(g.target, i);
        let d = &g.states[i];
        let location = d.stage.location;
        let at = |e: Error| e.context(format!("{file}:{}", location.start));
        if d.noinit {
            // A stage replaced by a named context (`context:NAME` for `AS NAME`).
            let (st, img) = context_by_name(opts, &d.stage.name, resolver).map_err(at)?.unwrap_or_default();
            let d = &mut g.states[i];
            d.state = st;
            d.image = img.unwrap_or_default();
            continue;
        }
        if d.base.is_some() {
            continue;
        }
        if d.stage.base_name == SCRATCH {
            let d = &mut g.states[i];
            d.state = State::scratch();
            d.image = empty_image();
            continue;
        }
        let orig = d.stage.base_name.clone();
        check_reference(&orig).map_err(|m| Error::from(super::conv_err(m, location).in_file(file.clone())))?;
        let normalized = normalize_image_ref(&orig);
        if let Some((st, img)) = context_by_name(opts, &normalized, resolver).map_err(at)? {
            let d = &mut g.states[i];
            d.image = img.unwrap_or_else(empty_image);
            d.state = st;
            continue;
        }
        let mut base_name = normalized.clone();
        let mut image = ImageConfig::default();
        if reachable {
            let platform = opts.target_platform.clone();
            let resolved = resolver
                .resolve_image_config(&ImageRef::Registry(normalized.clone()), platform.as_ref())
                .map_err(|e| at(e.context(&orig)))?;
            if !normalized.contains('@') {
                base_name = format!("{normalized}@{}", resolved.digest);
            }
            image = resolved.config;
        }
        let d = &mut g.states[i];
        d.stage.base_name = base_name.clone();
        d.image = image;
        let name = super::names::prefix_command(&d.name, &mut d.cmd_index, d.cmd_total, &format!("FROM {base_name}"));
        d.state = State::image(&base_name)
            .with_description(COMMAND_DESCRIPTION, d.stage.source_code.clone())
            .with_custom_name(name);
    }
    Ok(())
}

/// The op description BuildKit puts the Dockerfile line in.
pub(super) const COMMAND_DESCRIPTION: &str = "com.docker.dockerfile.v1.command";

/// What `reference.ParseNormalizedNamed` refuses that a user may write: upper case in the
/// repository, spaces, an empty name.
fn check_reference(r: &str) -> std::result::Result<(), String> {
    let name = r.split('@').next().unwrap_or(r);
    let repo = match name.rsplit_once(':') {
        Some((repo, tag)) if !tag.contains('/') => repo,
        _ => name,
    };
    let path = repo.split_once('/').map_or(repo, |(first, rest)| {
        if first.contains('.') || first.contains(':') || first == "localhost" {
            rest
        } else {
            repo
        }
    });
    let ok = !path.is_empty()
        && path.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-/".contains(c))
        && !r.contains(char::is_whitespace);
    if ok {
        Ok(())
    } else if path.chars().any(|c| c.is_ascii_uppercase()) {
        Err(format!("failed to parse stage name {r:?}: invalid reference format: repository name must be lowercase"))
    } else {
        Err(format!("failed to parse stage name {r:?}: invalid reference format"))
    }
}
