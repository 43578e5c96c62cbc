//! The converter's options and how BuildKit's frontend attributes (`buildctl --opt`) map to
//! them: `filename`, `target`, `build-arg:NAME`, `label:NAME`, `no-cache`, `platform`,
//! `context:NAME`, `contextkey`, `hostname`, `build-arg:BUILDKIT_CACHE_MOUNT_NS`.

use crate::error::{Error, ErrorKind, Result};
use crate::graph::{Network, OciRef, Platform, State};
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
    /// `add-hosts` (`host=ip,...`): `/etc/hosts` entries of every RUN.
    pub extra_hosts: Vec<(String, std::net::IpAddr)>,
    /// `ulimit` (`nofile=1024:2048,...`): resource limits of every RUN.
    pub ulimits: Vec<(String, i64, i64)>,
    /// `shm-size` (bytes): a `/dev/shm` tmpfs of that size in every RUN; 0 = none.
    pub shm_size: u64,
    /// `cgroup-parent`: the cgroup parent of every RUN.
    pub cgroup_parent: Option<String>,
    /// `force-network-mode` (`none`, `host`, `sandbox`): the network of RUNs without
    /// `--network=none|host`.
    pub force_network: Network,
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
            extra_hosts: Vec::new(),
            ulimits: Vec::new(),
            shm_size: 0,
            cgroup_parent: None,
            force_network: Network::Sandbox,
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
        if let Some(v) = attrs.get("add-hosts").filter(|v| !v.is_empty()) {
            o.extra_hosts = parse_extra_hosts(v)?;
        }
        if let Some(v) = attrs.get("ulimit").filter(|v| !v.is_empty()) {
            o.ulimits = v.split(',').map(parse_ulimit).collect::<Result<_>>()?;
        }
        if let Some(v) = attrs.get("shm-size").filter(|v| !v.is_empty()) {
            o.shm_size = v.parse().map_err(|_| Error::option("shm-size", v, "a size in bytes"))?;
        }
        o.cgroup_parent = attrs.get("cgroup-parent").filter(|v| !v.is_empty()).cloned();
        o.force_network = match attrs.get("force-network-mode").map(String::as_str) {
            None | Some("") | Some("sandbox") => Network::Sandbox,
            Some("none") => Network::None,
            Some("host") => Network::Host,
            Some(v) => return Err(Error::new(ErrorKind::Option, format!("invalid netmode {v}"))),
        };
        Ok(o)
    }
}

/// BuildKit's `parseExtraHosts`: `host=ip` pairs, comma separated, both lowercased.
fn parse_extra_hosts(v: &str) -> Result<Vec<(String, std::net::IpAddr)>> {
    v.split(',')
        .map(|field| {
            let (host, ip) = field
                .split_once('=')
                .ok_or_else(|| Error::new(ErrorKind::Option, format!("invalid key-value pair {field}")))?;
            let ip = ip.to_lowercase();
            let ip: std::net::IpAddr =
                ip.parse().map_err(|_| Error::new(ErrorKind::Option, format!("failed to parse IP {ip}")))?;
            Ok((host.to_lowercase(), ip))
        })
        .collect()
}

/// The resource names Docker's `units.ParseUlimit` knows.
const ULIMIT_NAMES: &[&str] = &[
    "core",
    "cpu",
    "data",
    "fsize",
    "locks",
    "memlock",
    "msgqueue",
    "nice",
    "nofile",
    "nproc",
    "rss",
    "rtprio",
    "rttime",
    "sigpending",
    "stack",
];

/// Docker's `units.ParseUlimit`: `name=soft[:hard]` (hard defaults to soft).
fn parse_ulimit(field: &str) -> Result<(String, i64, i64)> {
    let bad = |why: String| Error::new(ErrorKind::Option, why);
    let (name, limits) = field.split_once('=').ok_or_else(|| bad(format!("invalid ulimit argument: {field}")))?;
    if !ULIMIT_NAMES.contains(&name) {
        return Err(bad(format!("invalid ulimit type: {name}")));
    }
    let num = |s: &str| s.parse::<i64>().map_err(|_| bad(format!("invalid ulimit value {s:?} in {field}")));
    let (soft, hard) = match limits.split_once(':') {
        Some((s, h)) => (num(s)?, num(h)?),
        None => (num(limits)?, num(limits)?),
    };
    if soft > hard {
        return Err(bad(format!("ulimit soft limit must be less than or equal to hard limit: {soft} > {hard}")));
    }
    Ok((name.to_owned(), soft, hard))
}
