//! The converter's options and how BuildKit's frontend attributes (`buildctl --opt`) map to
//! them: `filename`, `target`, `build-arg:NAME`, `label:NAME`, `no-cache`, `platform`,
//! `context:NAME`, `contextkey`, `hostname`, `build-arg:BUILDKIT_CACHE_MOUNT_NS`.

use crate::error::{Error, ErrorKind, Result};
use crate::graph::{OciRef, Platform, State};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Prefix of build arguments in frontend attributes.
pub const BUILD_ARG_PREFIX: &str = "build-arg:";
/// Prefix of image labels in frontend attributes.
pub const LABEL_PREFIX: &str = "label:";
/// Prefix of named contexts in frontend attributes.
pub const CONTEXT_PREFIX: &str = "context:";

/// A named context (`--opt context:NAME=VALUE`): what a `FROM NAME`, `COPY --from=NAME` or
/// `--mount=from=NAME` uses instead of the image or stage of that name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NamedContext {
    /// `docker-image://REF`: a registry image (its config is inherited).
    Image(String),
    /// `docker-image://scratch`: the empty filesystem.
    Scratch,
    /// `oci-layout://DIR[:TAG|@DIGEST]`: an image in an OCI layout on disk (kiln's identifier
    /// carries the directory; see ARCHITECTURE.md).
    OciLayout {
        /// The layout directory.
        dir: PathBuf,
        /// Tag or digest.
        reference: OciRef,
    },
    /// `local:NAME`: the caller's local directory `NAME`, with its own `.dockerignore`.
    Local {
        /// The local's name.
        name: String,
        /// The `.dockerignore` patterns of that directory (read by the caller).
        excludes: Vec<String>,
    },
    /// `http(s)://URL`: a file downloaded.
    Http(String),
}

/// Parses a `context:NAME` value (BuildKit's `contextByName` forms this engine supports).
pub fn parse_named_context(name: &str, value: &str) -> Result<NamedContext> {
    let Some((kind, rest)) = value.split_once(':') else {
        return Err(Error::option(
            format!("{CONTEXT_PREFIX}{name}"),
            value,
            "docker-image://REF, oci-layout://DIR[:TAG|@DIGEST], local:NAME or https://URL",
        ));
    };
    match kind {
        "docker-image" => {
            let r = rest.trim_start_matches("//");
            Ok(if r == "scratch" { NamedContext::Scratch } else { NamedContext::Image(r.to_owned()) })
        }
        "oci-layout" => {
            let spec = rest.trim_start_matches("//");
            let (dir, reference) = if let Some((d, dg)) = spec.rsplit_once('@') {
                (d, OciRef::Digest(crate::graph::parse_digest(&format!("{CONTEXT_PREFIX}{name}"), dg)?))
            } else {
                match spec.rsplit_once(':') {
                    Some((d, t)) if !t.contains('/') => (d, OciRef::Tag(t.to_owned())),
                    _ => (spec, OciRef::Tag("latest".into())),
                }
            };
            Ok(NamedContext::OciLayout { dir: PathBuf::from(dir), reference })
        }
        "local" => Ok(NamedContext::Local { name: rest.to_owned(), excludes: Vec::new() }),
        "http" | "https" => Ok(NamedContext::Http(value.to_owned())),
        other => Err(Error::new(ErrorKind::Unsupported, format!("unsupported context source {other} for {name}"))),
    }
}

/// What a conversion is asked for (BuildKit's `ConvertOpt`, the parts kiln supports).
#[derive(Debug, Clone)]
pub struct ConvertOptions {
    /// The Dockerfile's name, shown in errors (`Dockerfile:3: ...`).
    pub filename: String,
    /// The stage to build; empty = the last one.
    pub target: String,
    /// `build-arg:NAME` values.
    pub build_args: BTreeMap<String, String>,
    /// `label:NAME` values, added to the result's image config.
    pub labels: BTreeMap<String, String>,
    /// `no-cache`: `None` = use the cache; `Some([])` = no stage uses it; else the stage names.
    pub ignore_cache: Option<Vec<String>>,
    /// `platform`: the target platform; `None` = the host's (the only one kiln builds for).
    pub target_platform: Option<Platform>,
    /// The build context's `.dockerignore` patterns.
    pub excludes: Vec<String>,
    /// The local name of the build context (`contextkey`, default `context`).
    pub context_name: String,
    /// A build context state to use instead of `local://context` (none by default).
    pub build_context: Option<State>,
    /// Named contexts by the name given after `context:` (`base`, `alpine::linux/amd64`).
    pub named_contexts: BTreeMap<String, NamedContext>,
    /// `build-arg:BUILDKIT_CACHE_MOUNT_NS`: the namespace of cache mount ids.
    pub cache_id_namespace: String,
    /// `hostname` (or `build-arg:BUILDKIT_SANDBOX_HOSTNAME`): the hostname of RUN steps.
    pub hostname: Option<String>,
}

impl Default for ConvertOptions {
    fn default() -> Self {
        ConvertOptions {
            filename: "Dockerfile".into(),
            target: String::new(),
            build_args: BTreeMap::new(),
            labels: BTreeMap::new(),
            ignore_cache: None,
            target_platform: None,
            excludes: Vec::new(),
            context_name: "context".into(),
            build_context: None,
            named_contexts: BTreeMap::new(),
            cache_id_namespace: String::new(),
            hostname: None,
        }
    }
}

impl ConvertOptions {
    /// The options BuildKit's dockerfile frontend reads from its attributes. `.dockerignore`
    /// excludes and `local:` contexts' excludes are the caller's to fill (they need a solve).
    pub fn from_frontend_attrs(attrs: &BTreeMap<String, String>) -> Result<ConvertOptions> {
        let mut o = ConvertOptions::default();
        let prefixed = |p: &str| -> BTreeMap<String, String> {
            attrs.iter().filter_map(|(k, v)| k.strip_prefix(p).map(|k| (k.to_owned(), v.clone()))).collect()
        };
        if let Some(f) = attrs.get("filename").filter(|f| !f.is_empty()) {
            o.filename = f.clone();
        }
        o.target = attrs.get("target").cloned().unwrap_or_default();
        o.build_args = prefixed(BUILD_ARG_PREFIX);
        o.labels = prefixed(LABEL_PREFIX);
        if let Some(v) = attrs.get("no-cache") {
            o.ignore_cache = Some(if v.is_empty() { Vec::new() } else { v.split(',').map(str::to_owned).collect() });
        }
        if let Some(p) = attrs.get("platform").filter(|p| !p.is_empty()) {
            if p.contains(',') {
                return Err(Error::new(
                    ErrorKind::Unsupported,
                    format!("platform {p}: kiln builds for one platform, this host's ({})", Platform::host()),
                ));
            }
            o.target_platform = Some(p.parse()?);
        }
        if let Some(k) = attrs.get("contextkey") {
            o.context_name = k.clone();
        }
        for (name, value) in prefixed(CONTEXT_PREFIX) {
            o.named_contexts.insert(name.clone(), parse_named_context(&name, &value)?);
        }
        o.cache_id_namespace = attrs.get("build-arg:BUILDKIT_CACHE_MOUNT_NS").cloned().unwrap_or_default();
        o.hostname = attrs
            .get("build-arg:BUILDKIT_SANDBOX_HOSTNAME")
            .or_else(|| attrs.get("hostname"))
            .filter(|h| !h.is_empty())
            .cloned();
        Ok(o)
    }
}
