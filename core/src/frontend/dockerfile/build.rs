//! The `dockerfile.v0` frontend as a client-side build (BuildKit's `builder.Build`, embedded):
//! reads the Dockerfile and `.dockerignore` files through local sources solved in the build,
//! converts, solves the target and returns it with its image config. The engine runs it
//! through `Engine::build_frontend`.

use super::convert::{convert_text, ConvertOptions, NamedContext};
use super::dockerignore::read_dockerignore;
use crate::build::{BuildContext, BuildOutput, Ref, SolveRequest};
use crate::error::{Error, ErrorKind, Result};
use crate::graph::{ImageMetaResolver, LocalOptions, State};
use std::sync::Arc;

/// The frontend's name (BuildKit's built-in `dockerfile.v0`).
pub const FRONTEND_NAME: &str = "dockerfile.v0";

/// The local the Dockerfile is read from unless `dockerfilekey` names another.
pub const DOCKERFILE_LOCAL: &str = "dockerfile";

/// A resolver the frontend can move to a blocking thread.
pub type SharedResolver = Arc<dyn ImageMetaResolver + Send + Sync>;

/// Solves `local://NAME` restricted to `paths` and returns the ref (BuildKit's internal loads).
async fn load_local(ctx: &BuildContext, name: &str, paths: Vec<String>, hint: String, title: String) -> Result<Ref> {
    let o = LocalOptions { follow_paths: paths, shared_key_hint: Some(hint), ..Default::default() };
    let st = State::local_with(name, o).with_custom_name(title);
    ctx.solve_state(&st, SolveRequest { evaluate: true, ..Default::default() }).await
}

/// A file of `r`, `None` when it does not exist.
async fn read_optional(r: &Ref, path: &str) -> Result<Option<Vec<u8>>> {
    match r.read_file(path, None).await {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e),
    }
}

/// Runs the frontend in a build: the function `Engine::build_frontend` gives `Engine::build`.
pub async fn build(ctx: BuildContext, resolver: SharedResolver) -> Result<Option<BuildOutput>> {
    let attrs = ctx.frontend_attrs().clone();
    let mut opts = ConvertOptions::from_frontend_attrs(&attrs)?;
    let df_local = attrs.get("dockerfilekey").cloned().unwrap_or_else(|| DOCKERFILE_LOCAL.to_owned());
    let filename = opts.filename.clone();

    // The Dockerfile (or `dockerfile`) and its own `NAME.dockerignore`.
    let lower = {
        let (dir, base) = filename.rsplit_once('/').map_or(("", filename.as_str()), |(d, b)| (d, b));
        (base == "Dockerfile")
            .then(|| if dir.is_empty() { "dockerfile".to_owned() } else { format!("{dir}/dockerfile") })
    };
    let mut paths = vec![filename.clone(), format!("{filename}.dockerignore")];
    paths.extend(lower.clone());
    let df_ref = load_local(
        &ctx,
        &df_local,
        paths,
        df_local.clone(),
        format!("[internal] load build definition from {filename}"),
    )
    .await?;
    let text = match read_optional(&df_ref, &filename).await? {
        Some(t) => t,
        None => match &lower {
            Some(l) => read_optional(&df_ref, l).await?,
            None => None,
        }
        .ok_or_else(|| {
            Error::new(
                ErrorKind::Definition,
                format!("failed to read dockerfile: open {filename}: no such file or directory"),
            )
        })?,
    };
    let text = String::from_utf8_lossy(&text).into_owned();
    if text.is_empty() {
        return Err(Error::new(ErrorKind::Definition, "the Dockerfile cannot be empty"));
    }

    // `NAME.dockerignore` next to the Dockerfile wins over the context's `.dockerignore`.
    let ignore = match read_optional(&df_ref, &format!("{filename}.dockerignore")).await? {
        Some(b) => Some(b),
        None => {
            let name = opts.context_name.clone();
            let r = load_local(
                &ctx,
                &name,
                vec![".dockerignore".into()],
                format!("{name}-.dockerignore"),
                "[internal] load .dockerignore".into(),
            )
            .await?;
            read_optional(&r, ".dockerignore").await?
        }
    };
    if let Some(b) = ignore {
        opts.excludes = read_dockerignore(&String::from_utf8_lossy(&b));
    }
    for (pname, c) in opts.named_contexts.iter_mut() {
        if let NamedContext::Local { name, excludes } = c {
            let r = load_local(
                &ctx,
                name,
                vec![".dockerignore".into()],
                format!("context:{pname}-.dockerignore"),
                format!("[context {pname}] load .dockerignore"),
            )
            .await?;
            if let Some(b) = read_optional(&r, ".dockerignore").await? {
                *excludes = read_dockerignore(&String::from_utf8_lossy(&b));
            }
        }
    }

    if let Some(syntax) = super::detect_syntax(&text) {
        ctx.warn(
            &format!("[internal] load build definition from {filename}"),
            &format!("syntax {} is not run: kiln uses its built-in dockerfile.v0 frontend", syntax.reference),
        );
    }

    // Base image configs may need the network: convert on a blocking thread.
    let converted = tokio::task::spawn_blocking(move || convert_text(&text, &opts, resolver.as_ref()))
        .await
        .map_err(|e| Error::with_source(ErrorKind::Internal, "dockerfile conversion task", e))??;
    let r = ctx.solve_state(&converted.state, SolveRequest::default()).await?;
    Ok(Some(BuildOutput::of(r).with_image_config(converted.image_config)))
}
