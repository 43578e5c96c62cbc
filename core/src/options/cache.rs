//! Cache export/import options (`--export-cache` / `--import-cache`): the CSV form
//! (`type=local,dest=DIR,mode=max`), the legacy bare-ref form with separate `KEY=VALUE` options,
//! validation with errors that name the key, the value and what is accepted, and the canonical
//! CSV form that parses back to the same spec.

use super::csv::{self, Field};
use super::{path_str, OptionMap};
use crate::digest::Digest;
use crate::error::{Error, Result};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Which results a cache export includes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum CacheMode {
    /// Only the layers of the final result (BuildKit's default).
    #[default]
    Min,
    /// Every intermediate result too.
    Max,
}

/// Compression of exported cache layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum CacheCompression {
    /// gzip (the default; what every registry and BuildKit version reads).
    #[default]
    Gzip,
    /// zstd.
    Zstd,
    /// Plain tar.
    Uncompressed,
}

impl CacheCompression {
    /// The option value (`gzip`, `zstd`, `uncompressed`).
    pub fn as_str(self) -> &'static str {
        match self {
            CacheCompression::Gzip => "gzip",
            CacheCompression::Zstd => "zstd",
            CacheCompression::Uncompressed => "uncompressed",
        }
    }
}

impl CacheMode {
    /// The option value (`min`, `max`).
    pub fn as_str(self) -> &'static str {
        match self {
            CacheMode::Min => "min",
            CacheMode::Max => "max",
        }
    }
}

/// Where a cache export goes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum CacheTarget {
    /// An OCI image layout directory; `tag` becomes the `org.opencontainers.image.ref.name`.
    Local {
        /// The layout directory (`dest=`, formerly `store=`).
        dir: PathBuf,
        /// The tag (`tag=`, default `latest`).
        tag: String,
    },
    /// A registry reference `HOST/REPO[:TAG]`.
    Registry {
        /// The reference (`ref=`).
        reference: String,
        /// Plain http (`registry.insecure=true`), for loopback registries.
        insecure: bool,
    },
}

/// One parsed `--export-cache` option.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheExportSpec {
    /// The destination.
    pub target: CacheTarget,
    /// `mode=` (default min).
    pub mode: CacheMode,
    /// `compression=` (default gzip).
    pub compression: CacheCompression,
    /// `compression-level=`: 0-9 for gzip, 1-22 for zstd; `None` = the compressor's default.
    pub compression_level: Option<i32>,
    /// `force-compression=`: recompress existing layers that use another compression.
    pub force_compression: bool,
    /// `oci-mediatypes=` (default true): OCI rather than Docker media types.
    pub oci_mediatypes: bool,
    /// `image-manifest=` (default true): an OCI image manifest whose config is the cache config,
    /// rather than BuildKit's older index form.
    pub image_manifest: bool,
    /// `ignore-error=`: a failed cache export only warns.
    pub ignore_error: bool,
    /// kiln's `merge=`: keep the records already at the target and add this build's.
    pub merge: bool,
    /// kiln's `cache-mounts=`: also export the contents of cache mounts.
    pub cache_mounts: bool,
}

/// Where a cache import reads from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum CacheImportSource {
    /// An OCI image layout directory.
    Local {
        /// The layout directory (`src=`, formerly `store=`).
        dir: PathBuf,
        /// `tag=`; `None` with no digest means `latest`.
        tag: Option<String>,
        /// `digest=`: a specific cache manifest/index instead of a tag.
        digest: Option<Digest>,
    },
    /// A registry reference.
    Registry {
        /// The reference (`ref=`).
        reference: String,
        /// Plain http (`registry.insecure=true`).
        insecure: bool,
    },
}

/// One parsed `--import-cache` option.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CacheImportSpec {
    /// The source.
    pub source: CacheImportSource,
}

const TYPES: &str = "local, registry";
/// Cache backends of BuildKit that kiln knows by name but does not implement.
const UNSUPPORTED_TYPES: &[&str] = &["gha", "s3", "azblob", "inline"];

const EXPORT_COMMON: &[&str] = &[
    "mode",
    "compression",
    "compression-level",
    "force-compression",
    "oci-mediatypes",
    "image-manifest",
    "ignore-error",
    "merge",
    "cache-mounts",
];
const EXPORT_LOCAL: &[&str] = &[
    "type",
    "dest",
    "store",
    "tag",
    "mode",
    "compression",
    "compression-level",
    "force-compression",
    "oci-mediatypes",
    "image-manifest",
    "ignore-error",
    "merge",
    "cache-mounts",
];
const EXPORT_REGISTRY: &[&str] = &[
    "type",
    "ref",
    "registry.insecure",
    "mode",
    "compression",
    "compression-level",
    "force-compression",
    "oci-mediatypes",
    "image-manifest",
    "ignore-error",
    "merge",
    "cache-mounts",
];
const IMPORT_LOCAL: &[&str] = &["type", "src", "store", "tag", "digest"];
const IMPORT_REGISTRY: &[&str] = &["type", "ref", "registry.insecure"];
/// Every key valid for some cache option, to tell "wrong place" from "unknown".
const ALL_KEYS: &[&str] = &[
    "type",
    "dest",
    "src",
    "store",
    "tag",
    "digest",
    "ref",
    "registry.insecure",
    "mode",
    "compression",
    "compression-level",
    "force-compression",
    "oci-mediatypes",
    "image-manifest",
    "ignore-error",
    "merge",
    "cache-mounts",
];

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Local,
    Registry,
}

/// Reads `type=` and maps it to a backend, rejecting BuildKit backends kiln does not have.
fn cache_kind(map: &OptionMap) -> Result<Kind> {
    let Some(t) = map.get("type") else {
        return Err(Error::option(
            "type",
            "",
            format!("type is required: expected type=local or type=registry (supported: {TYPES})"),
        ));
    };
    match t {
        "local" => Ok(Kind::Local),
        "registry" => Ok(Kind::Registry),
        other if UNSUPPORTED_TYPES.contains(&other) => Err(Error::option(
            "type",
            other,
            format!("cache type {other} is not supported by kiln; supported: {TYPES}"),
        )),
        other => Err(Error::option("type", other, format!("unknown cache type {other:?}; supported: {TYPES}"))),
    }
}

/// Fields of a string; a string with no `=` at all is the legacy bare registry reference.
enum Form {
    Legacy(String),
    Csv(Vec<(String, String)>),
}

fn split_form(s: &str) -> Result<Form> {
    let trimmed = s.trim();
    if !trimmed.is_empty() && !trimmed.contains('=') && !trimmed.contains(',') && !trimmed.contains('"') {
        return Ok(Form::Legacy(trimmed.to_owned()));
    }
    let mut pairs = Vec::new();
    for f in csv::parse_fields(s)? {
        match f {
            Field::Pair(k, v) => pairs.push((k, v)),
            Field::Bare(w) => return Err(csv::bare_word_error(&w)),
        }
    }
    Ok(Form::Csv(pairs))
}

/// The new-form pairs for a legacy `REF` plus separate `KEY=VALUE` options.
fn legacy_pairs(reference: &str, opts: &[String]) -> Result<Vec<(String, String)>> {
    if reference.is_empty() || reference.contains('=') || reference.contains(',') {
        return Err(Error::option(
            "ref",
            reference,
            "a legacy cache reference is a bare HOST/REPO[:TAG]; for options use type=registry,ref=HOST/REPO[:TAG],KEY=VALUE",
        ));
    }
    let mut pairs = vec![("type".to_owned(), "registry".to_owned()), ("ref".to_owned(), reference.to_owned())];
    for opt in opts {
        let (k, v) = opt.split_once('=').ok_or_else(|| {
            Error::option(opt.clone(), "", format!("cache option {opt:?} has no '=': expected KEY=VALUE"))
        })?;
        pairs.push((k.to_owned(), v.to_owned()));
    }
    Ok(pairs)
}

/// Checks a registry reference: `HOST/REPO[:TAG]` or `...@sha256:...`, no scheme, no spaces.
fn check_ref(reference: &str) -> Result<()> {
    if reference.contains("://") {
        return Err(Error::option(
            "ref",
            reference,
            "expected HOST/REPO[:TAG] without a scheme (use registry.insecure=true for plain http)",
        ));
    }
    if reference.chars().any(|c| c.is_whitespace() || c.is_control()) || reference.starts_with('/') {
        return Err(Error::option("ref", reference, "expected HOST/REPO[:TAG] (no spaces, not a path)"));
    }
    Ok(())
}

/// Reads a local directory from `primary` (`dest`/`src`) or its older spelling `store`.
fn local_dir(map: &OptionMap, primary: &str, what: &str) -> Result<PathBuf> {
    let expected = format!("a {what} of type=local needs {primary}=DIR (store=DIR is the older spelling)");
    match (map.get(primary), map.get("store")) {
        (Some(a), Some(b)) => Err(Error::option(
            "store",
            b,
            format!("store is the older spelling of {primary}, and {primary}={a} is given too; give one"),
        )),
        (Some(_), None) => map.required(primary, &expected).map(PathBuf::from),
        (None, Some(_)) => map.required("store", &expected).map(PathBuf::from),
        (None, None) => Err(Error::option(primary, "", format!("{primary} is required: {expected}"))),
    }
}

/// Suggests the right key when a direction's key is used for the other direction.
fn direction_hint(key: &str) -> Option<String> {
    match key {
        "dest" => Some("dest is for exports; an import reads src=DIR".to_owned()),
        "src" => Some("src is for imports; an export writes dest=DIR".to_owned()),
        "tag" => Some("a registry reference carries its tag: ref=HOST/REPO:TAG".to_owned()),
        "registry.insecure" => Some("registry.insecure applies to type=registry".to_owned()),
        "digest" => Some("digest selects what a local import reads".to_owned()),
        _ if EXPORT_COMMON.contains(&key) => Some(format!("{key} applies to cache exports")),
        _ => None,
    }
}

/// `type=KIND` followed by the attributes, as the CSV form would give them.
pub(crate) fn type_and_attrs(kind: &str, attrs: &BTreeMap<String, String>) -> Vec<(String, String)> {
    let mut pairs = vec![("type".to_owned(), kind.to_owned())];
    pairs.extend(attrs.iter().map(|(k, v)| (k.clone(), v.clone())));
    pairs
}

impl CacheExportSpec {
    /// Parses an `--export-cache` value: the CSV form, or a bare registry reference.
    pub fn parse(s: &str) -> Result<CacheExportSpec> {
        match split_form(s)? {
            Form::Legacy(reference) => Self::parse_legacy(&reference, &[]),
            Form::Csv(pairs) => Self::from_pairs(pairs),
        }
    }

    /// Parses the legacy form `--export-cache REF --export-cache-opt KEY=VALUE ...`: a registry
    /// export to `reference` with each option one `KEY=VALUE` (the value may hold commas).
    pub fn parse_legacy(reference: &str, opts: &[String]) -> Result<CacheExportSpec> {
        Self::from_pairs(legacy_pairs(reference, opts)?)
    }

    /// An export from its type and attributes (BuildKit's `CacheOptionsEntry`), checked as the
    /// CSV form is.
    pub fn from_attrs(kind: &str, attrs: &BTreeMap<String, String>) -> Result<CacheExportSpec> {
        Self::from_pairs(type_and_attrs(kind, attrs))
    }

    fn from_pairs(pairs: Vec<(String, String)>) -> Result<CacheExportSpec> {
        let map = OptionMap::new(pairs)?;
        let kind = cache_kind(&map)?;
        let (what, accepted) = match kind {
            Kind::Local => ("a cache export of type=local", EXPORT_LOCAL),
            Kind::Registry => ("a cache export of type=registry", EXPORT_REGISTRY),
        };
        map.check_keys(what, accepted, ALL_KEYS, direction_hint)?;
        let target = match kind {
            Kind::Local => {
                let dir = local_dir(&map, "dest", "cache export")?;
                let tag = match map.get("tag") {
                    None => "latest".to_owned(),
                    Some(t) => map.required("tag", "expected a tag such as tag=latest").map(|_| t.to_owned())?,
                };
                CacheTarget::Local { dir, tag }
            }
            Kind::Registry => {
                let reference = map.required("ref", "a cache export of type=registry needs ref=HOST/REPO[:TAG]")?;
                check_ref(reference)?;
                CacheTarget::Registry {
                    reference: reference.to_owned(),
                    insecure: map.bool_or("registry.insecure", false)?,
                }
            }
        };
        let mode = match map.get("mode") {
            None | Some("min") => CacheMode::Min,
            Some("max") => CacheMode::Max,
            Some(other) => return Err(Error::option("mode", other, "expected min or max")),
        };
        let compression = match map.get("compression") {
            None | Some("gzip") => CacheCompression::Gzip,
            Some("zstd") => CacheCompression::Zstd,
            Some("uncompressed") => CacheCompression::Uncompressed,
            Some(other) => {
                let why = if other == "estargz" { " (estargz is not supported by kiln)" } else { "" };
                return Err(Error::option("compression", other, format!("expected gzip, zstd or uncompressed{why}")));
            }
        };
        let compression_level = map.get("compression-level").map(|v| compression_level(compression, v)).transpose()?;
        Ok(CacheExportSpec {
            target,
            mode,
            compression,
            compression_level,
            force_compression: map.bool_or("force-compression", false)?,
            oci_mediatypes: map.bool_or("oci-mediatypes", true)?,
            image_manifest: map.bool_or("image-manifest", true)?,
            ignore_error: map.bool_or("ignore-error", false)?,
            merge: map.bool_or("merge", false)?,
            cache_mounts: map.bool_or("cache-mounts", false)?,
        })
    }

    /// The canonical CSV form: `type`, the location keys, then every option whose value differs
    /// from its default, in a fixed order. [`CacheExportSpec::parse`] reads it back unchanged.
    pub fn to_csv(&self) -> String {
        let mut pairs: Vec<(&str, String)> = Vec::new();
        match &self.target {
            CacheTarget::Local { dir, tag } => {
                pairs.push(("type", "local".into()));
                pairs.push(("dest", path_str(dir)));
                if tag != "latest" {
                    pairs.push(("tag", tag.clone()));
                }
            }
            CacheTarget::Registry { reference, insecure } => {
                pairs.push(("type", "registry".into()));
                pairs.push(("ref", reference.clone()));
                if *insecure {
                    pairs.push(("registry.insecure", "true".into()));
                }
            }
        }
        if self.mode != CacheMode::Min {
            pairs.push(("mode", self.mode.as_str().into()));
        }
        if self.compression != CacheCompression::Gzip {
            pairs.push(("compression", self.compression.as_str().into()));
        }
        if let Some(level) = self.compression_level {
            pairs.push(("compression-level", level.to_string()));
        }
        for (key, value, default) in [
            ("force-compression", self.force_compression, false),
            ("oci-mediatypes", self.oci_mediatypes, true),
            ("image-manifest", self.image_manifest, true),
            ("ignore-error", self.ignore_error, false),
            ("merge", self.merge, false),
            ("cache-mounts", self.cache_mounts, false),
        ] {
            if value != default {
                pairs.push((key, value.to_string()));
            }
        }
        csv::to_csv(&pairs)
    }
}

/// Validates `compression-level` for the chosen compression.
fn compression_level(compression: CacheCompression, v: &str) -> Result<i32> {
    let (lo, hi) = match compression {
        CacheCompression::Gzip => (0, 9),
        CacheCompression::Zstd => (1, 22),
        CacheCompression::Uncompressed => {
            return Err(Error::option(
                "compression-level",
                v,
                "compression-level applies to compression=gzip (0-9) or compression=zstd (1-22), not uncompressed",
            ))
        }
    };
    match v.parse::<i32>() {
        Ok(n) if (lo..=hi).contains(&n) => Ok(n),
        _ => Err(Error::option(
            "compression-level",
            v,
            format!("expected an integer {lo}-{hi} for compression={}", compression.as_str()),
        )),
    }
}

impl std::str::FromStr for CacheExportSpec {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Self::parse(s)
    }
}

impl std::fmt::Display for CacheExportSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_csv())
    }
}

impl CacheImportSpec {
    /// Parses an `--import-cache` value: the CSV form, or a bare registry reference.
    pub fn parse(s: &str) -> Result<CacheImportSpec> {
        match split_form(s)? {
            Form::Legacy(reference) => Self::parse_legacy(&reference, &[]),
            Form::Csv(pairs) => Self::from_pairs(pairs),
        }
    }

    /// Parses the legacy form: a registry import from `reference` with separate `KEY=VALUE`
    /// options (only `registry.insecure` applies).
    pub fn parse_legacy(reference: &str, opts: &[String]) -> Result<CacheImportSpec> {
        Self::from_pairs(legacy_pairs(reference, opts)?)
    }

    /// An import from its type and attributes (BuildKit's `CacheOptionsEntry`: `Type` and
    /// `Attrs`), checked as the CSV form is.
    pub fn from_attrs(kind: &str, attrs: &BTreeMap<String, String>) -> Result<CacheImportSpec> {
        Self::from_pairs(type_and_attrs(kind, attrs))
    }

    fn from_pairs(pairs: Vec<(String, String)>) -> Result<CacheImportSpec> {
        let map = OptionMap::new(pairs)?;
        let source = match cache_kind(&map)? {
            Kind::Local => {
                map.check_keys("a cache import of type=local", IMPORT_LOCAL, ALL_KEYS, direction_hint)?;
                let dir = local_dir(&map, "src", "cache import")?;
                let tag =
                    map.get("tag").map(|_| map.required("tag", "expected a tag such as tag=latest")).transpose()?;
                let digest = map
                    .get("digest")
                    .map(|d| {
                        Digest::parse(d).map_err(|_| Error::option("digest", d, "expected sha256:<64 lowercase hex>"))
                    })
                    .transpose()?;
                if let (Some(t), Some(d)) = (tag, &digest) {
                    return Err(Error::option(
                        "digest",
                        d.as_str(),
                        format!("give either tag= or digest=, not both (tag={t} is given too)"),
                    ));
                }
                CacheImportSource::Local { dir, tag: tag.map(str::to_owned), digest }
            }
            Kind::Registry => {
                map.check_keys("a cache import of type=registry", IMPORT_REGISTRY, ALL_KEYS, direction_hint)?;
                let reference = map.required("ref", "a cache import of type=registry needs ref=HOST/REPO[:TAG]")?;
                check_ref(reference)?;
                CacheImportSource::Registry {
                    reference: reference.to_owned(),
                    insecure: map.bool_or("registry.insecure", false)?,
                }
            }
        };
        Ok(CacheImportSpec { source })
    }

    /// The canonical CSV form; [`CacheImportSpec::parse`] reads it back unchanged.
    pub fn to_csv(&self) -> String {
        let mut pairs: Vec<(&str, String)> = Vec::new();
        match &self.source {
            CacheImportSource::Local { dir, tag, digest } => {
                pairs.push(("type", "local".into()));
                pairs.push(("src", path_str(dir)));
                if let Some(t) = tag {
                    pairs.push(("tag", t.clone()));
                }
                if let Some(d) = digest {
                    pairs.push(("digest", d.to_string()));
                }
            }
            CacheImportSource::Registry { reference, insecure } => {
                pairs.push(("type", "registry".into()));
                pairs.push(("ref", reference.clone()));
                if *insecure {
                    pairs.push(("registry.insecure", "true".into()));
                }
            }
        }
        csv::to_csv(&pairs)
    }
}

impl std::str::FromStr for CacheImportSpec {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Self::parse(s)
    }
}

impl std::fmt::Display for CacheImportSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_csv())
    }
}

/// Rejects two exporters of one solve that would write the same place: the same directory and
/// tag, or the same registry reference (the second would silently overwrite the first).
pub fn validate_exports(specs: &[CacheExportSpec]) -> Result<()> {
    for (i, a) in specs.iter().enumerate() {
        for b in &specs[..i] {
            match (&a.target, &b.target) {
                (CacheTarget::Local { dir: da, tag: ta }, CacheTarget::Local { dir: db, tag: tb })
                    if da == db && ta == tb =>
                {
                    return Err(Error::option(
                        "dest",
                        path_str(da),
                        format!(
                            "two cache exporters write tag {ta} of this directory; give each exporter its own dest or tag"
                        ),
                    ));
                }
                (CacheTarget::Registry { reference: ra, .. }, CacheTarget::Registry { reference: rb, .. })
                    if ra == rb =>
                {
                    return Err(Error::option(
                        "ref",
                        ra.clone(),
                        "two cache exporters push this reference; give each exporter its own ref",
                    ));
                }
                _ => {}
            }
        }
    }
    Ok(())
}

// Parsing is exercised per key in core/tests/options_cache.rs; these cover the internals.
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_ref_is_legacy_registry() {
        let s = CacheExportSpec::parse("localhost:5000/cache:main").unwrap();
        assert_eq!(s.target, CacheTarget::Registry { reference: "localhost:5000/cache:main".into(), insecure: false });
        let i = CacheImportSpec::parse("localhost:5000/cache").unwrap();
        assert_eq!(i.source, CacheImportSource::Registry { reference: "localhost:5000/cache".into(), insecure: false });
    }

    #[test]
    fn level_ranges_depend_on_compression() {
        assert_eq!(compression_level(CacheCompression::Gzip, "9").unwrap(), 9);
        assert!(compression_level(CacheCompression::Gzip, "10").is_err());
        assert_eq!(compression_level(CacheCompression::Zstd, "19").unwrap(), 19);
        assert!(compression_level(CacheCompression::Uncompressed, "1").is_err());
    }
}
