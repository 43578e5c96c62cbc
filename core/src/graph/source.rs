//! Source identifiers and attributes: the typed view ([`SourceSpec`]) of a `pb.SourceOp`'s
//! `identifier` + `attrs`, using BuildKit's schemes and attribute names, and the inverse
//! ([`SourceSpec::to_identifier`] / [`SourceSpec::to_attrs`]) used by the `State` builder.

use crate::digest::Digest;
use crate::error::{Error, ErrorKind, Result};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// `local.includepattern`: JSON array of include patterns (BuildKit spells it singular).
pub const ATTR_LOCAL_INCLUDE: &str = "local.includepattern";
/// `local.excludepatterns`: JSON array of exclude patterns.
pub const ATTR_LOCAL_EXCLUDE: &str = "local.excludepatterns";
/// `local.followpaths`: JSON array of paths whose symlinks are followed.
pub const ATTR_LOCAL_FOLLOW_PATHS: &str = "local.followpaths";
/// `local.sharedkeyhint`: a hint to share transfer caches between local sources.
pub const ATTR_LOCAL_SHARED_KEY_HINT: &str = "local.sharedkeyhint";
/// `local.session`: BuildKit session id (kiln has no sessions; ignored).
pub const ATTR_LOCAL_SESSION: &str = "local.session";
/// `local.unique`: BuildKit's per-client unique id (ignored).
pub const ATTR_LOCAL_UNIQUE: &str = "local.unique";
/// `local.differ`: `metadata` (default) or `none` (ignored by kiln, which always checksums).
pub const ATTR_LOCAL_DIFFER: &str = "local.differ";
/// `http.checksum`: expected `sha256:` digest of the downloaded file.
pub const ATTR_HTTP_CHECKSUM: &str = "http.checksum";
/// `http.filename`: name of the file written into the result.
pub const ATTR_HTTP_FILENAME: &str = "http.filename";
/// `http.perm`: file mode, parsed like Go's `strconv.ParseInt(v, 0, 64)` (`0644` is octal).
pub const ATTR_HTTP_PERM: &str = "http.perm";
/// `http.uid`: owner uid of the file.
pub const ATTR_HTTP_UID: &str = "http.uid";
/// `http.gid`: owner gid of the file.
pub const ATTR_HTTP_GID: &str = "http.gid";
/// `git.fullurl`: the real remote URL (the identifier only holds host/path#ref).
pub const ATTR_GIT_FULL_URL: &str = "git.fullurl";
/// `git.keepgitdir`: `true` keeps the `.git` directory in the result.
pub const ATTR_GIT_KEEP_GIT_DIR: &str = "git.keepgitdir";

/// The reference inside an OCI layout: a tag (`org.opencontainers.image.ref.name`) or a digest.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum OciRef {
    /// A tag, looked up through the `org.opencontainers.image.ref.name` annotation.
    Tag(String),
    /// A manifest (or index) digest.
    Digest(Digest),
}

/// A typed source: what a `pb.SourceOp` asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceSpec {
    /// `local://NAME`: a directory the caller provides under `NAME`.
    Local {
        /// The name the caller maps to a directory.
        name: String,
        /// Include patterns (empty = everything).
        include: Vec<String>,
        /// Exclude patterns.
        exclude: Vec<String>,
        /// Paths whose symlinks are followed when filtering.
        follow_paths: Vec<String>,
        /// BuildKit's shared key hint (informational).
        shared_key_hint: Option<String>,
    },
    /// `oci-layout://DIR[:TAG|@sha256:HEX]`: an image in an OCI layout on disk (kiln's form).
    OciLayout {
        /// The layout directory.
        path: PathBuf,
        /// The tag or digest inside it (default tag `latest`).
        reference: OciRef,
    },
    /// `http://` / `https://` URL: a single downloaded file.
    Http {
        /// The full URL.
        url: String,
        /// Expected digest of the content.
        checksum: Option<Digest>,
        /// File name in the result (default: last URL path segment).
        filename: Option<String>,
        /// File mode.
        perm: Option<u32>,
        /// Owner uid.
        uid: Option<u32>,
        /// Owner gid.
        gid: Option<u32>,
    },
    /// `git://HOST/PATH#REF[:SUBDIR]`: a git checkout.
    Git {
        /// What to clone: `git.fullurl` if given, else `https://HOST/PATH`, or a local path
        /// (`git:///abs/path`) / `file://` URL for tests.
        remote: String,
        /// Branch, tag or commit; empty means the remote's default branch.
        reference: String,
        /// Keep `.git` in the result.
        keep_git_dir: bool,
        /// Only this subdirectory of the checkout (BuildKit's `#ref:subdir`).
        subdir: Option<String>,
    },
    /// `docker-image://REF`: an image from a registry.
    DockerImage {
        /// The image reference as written after the scheme.
        reference: String,
    },
}

fn src_err(identifier: &str, msg: impl std::fmt::Display) -> Error {
    Error::definition(None, format!("source {identifier:?}: {msg}"))
}

fn json_list(identifier: &str, key: &str, v: &str) -> Result<Vec<String>> {
    if v.is_empty() {
        return Ok(Vec::new());
    }
    serde_json::from_str::<Vec<String>>(v)
        .map_err(|e| src_err(identifier, format!("attribute {key}={v:?} is not a JSON array of strings: {e}")))
}

/// Parses an integer like Go's `strconv.ParseInt(s, 0, 64)`: `0x` hex, `0o`/leading `0` octal,
/// `0b` binary, else decimal.
fn parse_int_base0(s: &str) -> Option<i64> {
    let (neg, body) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    let body = body.replace('_', "");
    let lower = body.to_ascii_lowercase();
    let v = if let Some(h) = lower.strip_prefix("0x") {
        i64::from_str_radix(h, 16).ok()?
    } else if let Some(o) = lower.strip_prefix("0o") {
        i64::from_str_radix(o, 8).ok()?
    } else if let Some(b) = lower.strip_prefix("0b") {
        i64::from_str_radix(b, 2).ok()?
    } else if lower.len() > 1 && lower.starts_with('0') {
        i64::from_str_radix(&lower[1..], 8).ok()?
    } else {
        lower.parse::<i64>().ok()?
    };
    Some(if neg { -v } else { v })
}

fn u32_attr(identifier: &str, key: &str, v: &str) -> Result<u32> {
    parse_int_base0(v)
        .and_then(|n| u32::try_from(n).ok())
        .ok_or_else(|| src_err(identifier, format!("attribute {key}={v:?}: expected a non-negative integer")))
}

fn ignore_attr(identifier: &str, key: &str) {
    tracing::debug!(identifier, key, "ignoring source attribute kiln does not use");
}

impl SourceSpec {
    /// Parses a source identifier and its attributes. Unknown schemes are `Unsupported`;
    /// malformed attribute values are `Definition` errors naming the key; attributes kiln
    /// does not use are ignored with a debug log.
    pub fn parse(identifier: &str, attrs: &BTreeMap<String, String>) -> Result<SourceSpec> {
        let (scheme, rest) = identifier.split_once("://").ok_or_else(|| {
            src_err(identifier, "missing scheme; expected local://, oci-layout://, docker-image://, git://, http(s)://")
        })?;
        match scheme {
            "local" => Self::parse_local(identifier, rest, attrs),
            "oci-layout" => Self::parse_oci_layout(identifier, rest, attrs),
            "http" | "https" => Self::parse_http(identifier, attrs),
            "git" => Self::parse_git(identifier, rest, attrs),
            "docker-image" => {
                if rest.is_empty() {
                    return Err(src_err(identifier, "empty image reference"));
                }
                for k in attrs.keys() {
                    ignore_attr(identifier, k);
                }
                Ok(SourceSpec::DockerImage { reference: rest.to_owned() })
            }
            other => Err(Error::new(
                ErrorKind::Unsupported,
                format!(
                    "source {identifier:?}: scheme {other:?} is not supported by kiln; \
                     supported: local, oci-layout, docker-image, git, http, https"
                ),
            )),
        }
    }

    fn parse_local(identifier: &str, name: &str, attrs: &BTreeMap<String, String>) -> Result<SourceSpec> {
        if name.is_empty() {
            return Err(src_err(identifier, "empty local name; expected local://NAME"));
        }
        let (mut include, mut exclude, mut follow_paths, mut shared_key_hint) = (vec![], vec![], vec![], None);
        for (k, v) in attrs {
            match k.as_str() {
                ATTR_LOCAL_INCLUDE => include = json_list(identifier, k, v)?,
                ATTR_LOCAL_EXCLUDE => exclude = json_list(identifier, k, v)?,
                ATTR_LOCAL_FOLLOW_PATHS => follow_paths = json_list(identifier, k, v)?,
                ATTR_LOCAL_SHARED_KEY_HINT => shared_key_hint = Some(v.clone()).filter(|s| !s.is_empty()),
                ATTR_LOCAL_DIFFER => {
                    if !matches!(v.as_str(), "" | "metadata" | "none") {
                        return Err(src_err(identifier, format!("{k}={v:?}: expected metadata or none")));
                    }
                }
                _ => ignore_attr(identifier, k),
            }
        }
        Ok(SourceSpec::Local { name: name.to_owned(), include, exclude, follow_paths, shared_key_hint })
    }

    fn parse_oci_layout(identifier: &str, rest: &str, attrs: &BTreeMap<String, String>) -> Result<SourceSpec> {
        for k in attrs.keys() {
            ignore_attr(identifier, k);
        }
        let (dir, reference) = if let Some(i) = rest.rfind("@sha256:") {
            let d = Digest::parse(&rest[i + 1..]).map_err(|e| src_err(identifier, e))?;
            (&rest[..i], OciRef::Digest(d))
        } else {
            let last_slash = rest.rfind('/').map(|i| i + 1).unwrap_or(0);
            match rest[last_slash..].rfind(':') {
                Some(c) => {
                    let tag = &rest[last_slash + c + 1..];
                    if tag.is_empty() {
                        return Err(src_err(identifier, "empty tag after ':'"));
                    }
                    (&rest[..last_slash + c], OciRef::Tag(tag.to_owned()))
                }
                None => (rest, OciRef::Tag("latest".to_owned())),
            }
        };
        if dir.is_empty() {
            return Err(src_err(identifier, "empty layout directory; expected oci-layout://DIR[:TAG|@sha256:HEX]"));
        }
        Ok(SourceSpec::OciLayout { path: PathBuf::from(dir), reference })
    }

    fn parse_http(identifier: &str, attrs: &BTreeMap<String, String>) -> Result<SourceSpec> {
        let (mut checksum, mut filename, mut perm, mut uid, mut gid) = (None, None, None, None, None);
        for (k, v) in attrs {
            match k.as_str() {
                ATTR_HTTP_CHECKSUM => {
                    checksum = Some(Digest::parse(v).map_err(|e| src_err(identifier, format!("{k}: {e}")))?)
                }
                ATTR_HTTP_FILENAME => filename = Some(v.clone()).filter(|s| !s.is_empty()),
                ATTR_HTTP_PERM => perm = Some(u32_attr(identifier, k, v)?),
                ATTR_HTTP_UID => uid = Some(u32_attr(identifier, k, v)?),
                ATTR_HTTP_GID => gid = Some(u32_attr(identifier, k, v)?),
                _ => ignore_attr(identifier, k),
            }
        }
        Ok(SourceSpec::Http { url: identifier.to_owned(), checksum, filename, perm, uid, gid })
    }

    fn parse_git(identifier: &str, rest: &str, attrs: &BTreeMap<String, String>) -> Result<SourceSpec> {
        let (location, fragment) = rest.split_once('#').unwrap_or((rest, ""));
        let (reference, subdir) = match fragment.split_once(':') {
            Some((r, s)) => (r, Some(s.to_owned()).filter(|s| !s.is_empty())),
            None => (fragment, None),
        };
        let mut remote = None;
        let mut keep_git_dir = false;
        for (k, v) in attrs {
            match k.as_str() {
                ATTR_GIT_FULL_URL => remote = Some(v.clone()).filter(|s| !s.is_empty()),
                ATTR_GIT_KEEP_GIT_DIR => keep_git_dir = v == "true",
                _ => ignore_attr(identifier, k),
            }
        }
        let remote = match remote {
            Some(r) => r,
            None if location.starts_with('/') => location.to_owned(),
            None if location.is_empty() => return Err(src_err(identifier, "empty git remote")),
            None => format!("https://{location}"),
        };
        Ok(SourceSpec::Git { remote, reference: reference.to_owned(), keep_git_dir, subdir })
    }

    /// The identifier string this spec is written as (inverse of [`SourceSpec::parse`]).
    pub fn to_identifier(&self) -> String {
        match self {
            SourceSpec::Local { name, .. } => format!("local://{name}"),
            SourceSpec::OciLayout { path, reference } => match reference {
                OciRef::Tag(t) => format!("oci-layout://{}:{t}", path.display()),
                OciRef::Digest(d) => format!("oci-layout://{}@{d}", path.display()),
            },
            SourceSpec::Http { url, .. } => url.clone(),
            SourceSpec::Git { remote, reference, subdir, .. } => {
                let loc = git_location(remote);
                let mut id = format!("git://{loc}");
                if !reference.is_empty() || subdir.is_some() {
                    id.push('#');
                    id.push_str(reference);
                }
                if let Some(s) = subdir {
                    id.push(':');
                    id.push_str(s);
                }
                id
            }
            SourceSpec::DockerImage { reference } => format!("docker-image://{reference}"),
        }
    }

    /// The attributes this spec is written with (BuildKit's names; empty values left out).
    pub fn to_attrs(&self) -> BTreeMap<String, String> {
        let mut a = BTreeMap::new();
        let json = |v: &Vec<String>| serde_json::to_string(v).unwrap_or_default();
        match self {
            SourceSpec::Local { include, exclude, follow_paths, shared_key_hint, .. } => {
                if !include.is_empty() {
                    a.insert(ATTR_LOCAL_INCLUDE.to_owned(), json(include));
                }
                if !exclude.is_empty() {
                    a.insert(ATTR_LOCAL_EXCLUDE.to_owned(), json(exclude));
                }
                if !follow_paths.is_empty() {
                    a.insert(ATTR_LOCAL_FOLLOW_PATHS.to_owned(), json(follow_paths));
                }
                if let Some(h) = shared_key_hint {
                    a.insert(ATTR_LOCAL_SHARED_KEY_HINT.to_owned(), h.clone());
                }
            }
            SourceSpec::Http { checksum, filename, perm, uid, gid, .. } => {
                if let Some(c) = checksum {
                    a.insert(ATTR_HTTP_CHECKSUM.to_owned(), c.to_string());
                }
                if let Some(f) = filename {
                    a.insert(ATTR_HTTP_FILENAME.to_owned(), f.clone());
                }
                if let Some(p) = perm {
                    a.insert(ATTR_HTTP_PERM.to_owned(), format!("0{p:o}"));
                }
                if let Some(u) = uid {
                    a.insert(ATTR_HTTP_UID.to_owned(), u.to_string());
                }
                if let Some(g) = gid {
                    a.insert(ATTR_HTTP_GID.to_owned(), g.to_string());
                }
            }
            SourceSpec::Git { remote, keep_git_dir, .. } => {
                a.insert(ATTR_GIT_FULL_URL.to_owned(), remote.clone());
                if *keep_git_dir {
                    a.insert(ATTR_GIT_KEEP_GIT_DIR.to_owned(), "true".to_owned());
                }
            }
            SourceSpec::OciLayout { .. } | SourceSpec::DockerImage { .. } => {}
        }
        a
    }

    /// BuildKit capability ids a source op with this spec declares (as Go's `llb` adds them).
    pub fn caps(&self) -> Vec<&'static str> {
        match self {
            SourceSpec::Local { include, exclude, follow_paths, shared_key_hint, .. } => {
                let mut c = vec!["source.local"];
                if !include.is_empty() {
                    c.push("source.local.includepatterns");
                }
                if !exclude.is_empty() {
                    c.push("source.local.excludepatterns");
                }
                if !follow_paths.is_empty() {
                    c.push("source.local.followpaths");
                }
                if shared_key_hint.is_some() {
                    c.push("source.local.sharedkeyhint");
                }
                c
            }
            SourceSpec::OciLayout { .. } => vec!["source.ocilayout"],
            SourceSpec::Http { checksum, perm, uid, gid, .. } => {
                let mut c = vec!["source.http"];
                if checksum.is_some() {
                    c.push("source.http.checksum");
                }
                if perm.is_some() {
                    c.push("source.http.perm");
                }
                if uid.is_some() || gid.is_some() {
                    // BuildKit's cap id really is spelled "soruce".
                    c.push("soruce.http.uidgid");
                }
                c
            }
            SourceSpec::Git { keep_git_dir, subdir, .. } => {
                let mut c = vec!["source.git", "source.git.fullurl"];
                if *keep_git_dir {
                    c.push("source.git.keepgitdir");
                }
                if subdir.is_some() {
                    c.push("source.git.subdir");
                }
                c
            }
            SourceSpec::DockerImage { .. } => vec!["source.image"],
        }
    }
}

/// `host/path` of a remote as Go's `llb.Git` writes into the identifier: scheme and user
/// stripped; local paths and `file://` URLs keep their absolute path (`git:///abs/path`).
fn git_location(remote: &str) -> String {
    if remote.starts_with('/') {
        return remote.to_owned();
    }
    if let Some(p) = remote.strip_prefix("file://") {
        return p.to_owned();
    }
    let rest = remote.split_once("://").map(|(_, r)| r).unwrap_or(remote);
    // scp-like `git@host:path` → `host/path`.
    let rest = rest.rsplit_once('@').map(|(_, r)| r).unwrap_or(rest);
    let rest = if !remote.contains("://") { rest.replacen(':', "/", 1) } else { rest.to_owned() };
    rest.trim_end_matches('/').to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn local_with_patterns() {
        let a = attrs(&[
            ("local.includepattern", r#"["src/**"]"#),
            ("local.excludepatterns", r#"["*.o","!keep.o"]"#),
            ("local.followpaths", r#"["a"]"#),
            ("local.sharedkeyhint", "ctx"),
            ("local.unique", "xyz"),
            ("local.session", "s"),
        ]);
        let s = SourceSpec::parse("local://ctx", &a).unwrap();
        assert_eq!(
            s,
            SourceSpec::Local {
                name: "ctx".into(),
                include: vec!["src/**".into()],
                exclude: vec!["*.o".into(), "!keep.o".into()],
                follow_paths: vec!["a".into()],
                shared_key_hint: Some("ctx".into()),
            }
        );
        assert_eq!(s.to_identifier(), "local://ctx");
        let back = s.to_attrs();
        assert_eq!(SourceSpec::parse(&s.to_identifier(), &back).unwrap(), s);
    }

    #[test]
    fn local_bad_json_names_key() {
        let e = SourceSpec::parse("local://ctx", &attrs(&[("local.excludepatterns", "nope")])).unwrap_err();
        assert!(e.to_string().contains("local.excludepatterns"), "{e}");
        assert_eq!(e.kind(), ErrorKind::Definition);
    }

    #[test]
    fn oci_layout_forms() {
        let none = BTreeMap::new();
        let p = |s: &str| SourceSpec::parse(s, &none).unwrap();
        assert_eq!(
            p("oci-layout:///a/b:v1"),
            SourceSpec::OciLayout { path: "/a/b".into(), reference: OciRef::Tag("v1".into()) }
        );
        assert_eq!(
            p("oci-layout:///a:x/b"),
            SourceSpec::OciLayout { path: "/a:x/b".into(), reference: OciRef::Tag("latest".into()) }
        );
        assert_eq!(
            p("oci-layout://rel/dir"),
            SourceSpec::OciLayout { path: "rel/dir".into(), reference: OciRef::Tag("latest".into()) }
        );
        let d = Digest::of(b"m");
        let s = p(&format!("oci-layout:///a/b@{d}"));
        assert_eq!(s, SourceSpec::OciLayout { path: "/a/b".into(), reference: OciRef::Digest(d.clone()) });
        assert_eq!(s.to_identifier(), format!("oci-layout:///a/b@{d}"));
        assert!(SourceSpec::parse("oci-layout:///a@sha256:zz", &none).is_err());
    }

    #[test]
    fn http_attrs() {
        let d = Digest::of(b"f");
        let a = attrs(&[
            ("http.checksum", d.as_str()),
            ("http.filename", "f.txt"),
            ("http.perm", "0644"),
            ("http.uid", "10"),
            ("http.gid", "0x10"),
        ]);
        let s = SourceSpec::parse("https://example.com/f", &a).unwrap();
        assert_eq!(
            s,
            SourceSpec::Http {
                url: "https://example.com/f".into(),
                checksum: Some(d),
                filename: Some("f.txt".into()),
                perm: Some(0o644),
                uid: Some(10),
                gid: Some(16),
            }
        );
        assert_eq!(SourceSpec::parse("https://example.com/f", &s.to_attrs()).unwrap(), s);
        assert!(SourceSpec::parse("http://x/f", &attrs(&[("http.perm", "abc")])).is_err());
    }

    #[test]
    fn git_forms() {
        let s = SourceSpec::parse(
            "git://github.com/moby/buildkit#main",
            &attrs(&[("git.fullurl", "https://github.com/moby/buildkit.git"), ("git.keepgitdir", "true")]),
        )
        .unwrap();
        assert_eq!(
            s,
            SourceSpec::Git {
                remote: "https://github.com/moby/buildkit.git".into(),
                reference: "main".into(),
                keep_git_dir: true,
                subdir: None
            }
        );
        let none = BTreeMap::new();
        let s = SourceSpec::parse("git:///abs/repo#v1:sub/dir", &none).unwrap();
        assert_eq!(
            s,
            SourceSpec::Git {
                remote: "/abs/repo".into(),
                reference: "v1".into(),
                keep_git_dir: false,
                subdir: Some("sub/dir".into())
            }
        );
        assert_eq!(s.to_identifier(), "git:///abs/repo#v1:sub/dir");
        let s = SourceSpec::parse("git://github.com/a/b", &none).unwrap();
        assert!(
            matches!(s, SourceSpec::Git { ref remote, ref reference, .. } if remote == "https://github.com/a/b" && reference.is_empty())
        );
        let f = SourceSpec::Git {
            remote: "file:///srv/r".into(),
            reference: "main".into(),
            keep_git_dir: false,
            subdir: None,
        };
        assert_eq!(f.to_identifier(), "git:///srv/r#main");
        assert_eq!(SourceSpec::parse(&f.to_identifier(), &f.to_attrs()).unwrap(), f);
    }

    #[test]
    fn image_and_unknown() {
        let none = BTreeMap::new();
        assert_eq!(
            SourceSpec::parse("docker-image://docker.io/library/busybox:latest", &none).unwrap(),
            SourceSpec::DockerImage { reference: "docker.io/library/busybox:latest".into() }
        );
        let e = SourceSpec::parse("s3://bucket/x", &none).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Unsupported);
        assert!(SourceSpec::parse("nonsense", &none).is_err());
    }
}
