//! A Dockerfile in a directory turned into a [`State`] the caller extends and solves (the
//! bindings' `kiln.dockerfile(...)`): the Dockerfile and `.dockerignore` are read from disk now,
//! converted with [`convert_text`], and the state carries the target's image config, as a state
//! from `Engine::image` carries its base image's. The build context stays a `local` source named
//! [`DockerfileOptions::context_name`], read when the state is solved.

use super::convert::{convert_text, ConvertOptions};
use super::dockerignore::read_dockerignore;
use crate::error::{Error, ErrorKind, Result};
use crate::graph::{DockerfileOptions, ImageMetaResolver, ImageRef, Platform, ResolvedImageConfig, State};
use std::path::{Path, PathBuf};

/// The resolver of an engine-less conversion: registry and layout bases have no config to
/// inherit without an engine, so they are refused, naming the image.
struct NoResolver;

impl ImageMetaResolver for NoResolver {
    fn resolve_image_config(&self, image: &ImageRef, _: Option<&Platform>) -> Result<ResolvedImageConfig> {
        Err(Error::new(
            ErrorKind::Unsupported,
            format!(
                "image {image}: a base image's config is resolved through an engine: convert this Dockerfile \
                 with the engine's dockerfile call, or name a context for the image (contexts)"
            ),
        ))
    }
}

/// A file's bytes, `None` when it does not exist.
fn read_optional(path: &Path) -> Result<Option<Vec<u8>>> {
    match std::fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io("read", path, e)),
    }
}

/// `PATH.dockerignore` beside a path.
fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// Converts the Dockerfile `options.dockerfile` (relative to `context_dir`, or absolute) into the
/// target stage's [`State`], carrying the target's image config (env, working dir, user,
/// entrypoint, cmd, labels, ...: what image exports write; later runs use its env, working dir
/// and user). The build context is `local://{options.context_name}` with the excludes of
/// `DOCKERFILE.dockerignore` or `context_dir/.dockerignore`; give `context_dir` under that name
/// in the solve's locals. Base images resolve through `resolver` (blocking); without one, a
/// registry or OCI-layout base is refused (named contexts `local:`, `https://` and scratch need
/// none). `local:NAME` contexts get no `.dockerignore` (their directory is known only at solve).
pub fn state_from_dir(
    context_dir: &Path,
    options: &DockerfileOptions,
    resolver: Option<&dyn ImageMetaResolver>,
) -> Result<State> {
    let mut opts = ConvertOptions::from_frontend_attrs(&options.frontend_attrs())?;
    let path = context_dir.join(&options.dockerfile);
    let text = match read_optional(&path)? {
        Some(t) => t,
        None => {
            // BuildKit falls back to `dockerfile` for the default name.
            let lower =
                (path.file_name().is_some_and(|n| n == "Dockerfile")).then(|| path.with_file_name("dockerfile"));
            match lower {
                Some(l) => read_optional(&l)?,
                None => None,
            }
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::Definition,
                    format!("failed to read dockerfile: open {}: no such file or directory", path.display()),
                )
            })?
        }
    };
    let text = String::from_utf8_lossy(&text).into_owned();
    if text.is_empty() {
        return Err(Error::new(ErrorKind::Definition, "the Dockerfile cannot be empty"));
    }
    let ignore = match read_optional(&with_suffix(&path, ".dockerignore"))? {
        Some(b) => Some(b),
        None => read_optional(&context_dir.join(".dockerignore"))?,
    };
    if let Some(b) = ignore {
        opts.excludes = read_dockerignore(&String::from_utf8_lossy(&b));
    }
    if let Some(syntax) = super::detect_syntax(&text) {
        tracing::warn!("syntax {} is not run: kiln uses its built-in dockerfile.v0 frontend", syntax.reference);
    }
    let converted = convert_text(&text, &opts, resolver.unwrap_or(&NoResolver))?;
    // The state's metadata becomes the image's: ARGs and the stage's llb env do not outlive the
    // Dockerfile (as for an image built from it and used as a base).
    Ok(converted.state.with_meta_of(&State::scratch()).with_image_config(&converted.image_config))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir_with(dockerfile: &str) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("Dockerfile"), dockerfile).unwrap();
        std::fs::write(d.path().join(".dockerignore"), "*.log\n").unwrap();
        d
    }

    #[test]
    fn state_carries_the_image_config_not_the_args() {
        let d = dir_with("FROM base AS b\nARG A=1\nENV K=$A\nWORKDIR /w\nCOPY . .\nCMD [\"x\"]\n");
        let mut o = DockerfileOptions::default();
        o.contexts.insert("base".into(), "local:rootfs".into());
        o.build_args.insert("A".into(), "2".into());
        o.labels.insert("l".into(), "v".into());
        let st = state_from_dir(d.path(), &o, None).unwrap();
        let c = st.image_config();
        assert_eq!(c.env.last().map(String::as_str), Some("K=2"));
        assert!(!c.env.iter().any(|e| e.starts_with("A=")), "{:?}", c.env);
        assert_eq!(c.working_dir.as_deref(), Some("/w"));
        assert_eq!(c.cmd, Some(vec!["x".to_owned()]));
        assert_eq!(c.labels.get("l").map(String::as_str), Some("v"));
        let json = st.to_definition().unwrap();
        let text = format!("{:?}", json);
        assert!(text.contains("local://context"), "{text}");
        assert!(text.contains("*.log"), "{text}");
    }

    #[test]
    fn errors_name_the_file_and_line_and_registry_bases_need_an_engine() {
        let d = dir_with("FROM scratch\nRUNN x\n");
        let e = state_from_dir(d.path(), &DockerfileOptions::default(), None).unwrap_err();
        assert!(e.to_string().contains("Dockerfile:2: unknown instruction: RUNN"), "{e}");
        let d = dir_with("FROM busybox\n");
        let e = state_from_dir(d.path(), &DockerfileOptions::default(), None).unwrap_err();
        assert!(e.report().contains("resolved through an engine"), "{}", e.report());
        let o = DockerfileOptions { dockerfile: "nope/Dockerfile".into(), ..Default::default() };
        let e = state_from_dir(d.path(), &o, None).unwrap_err();
        assert!(e.to_string().contains("failed to read dockerfile"), "{e}");
    }
}
