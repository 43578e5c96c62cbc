//! Image references (`[registry/]repository[:tag][@digest]`) with Docker's normalisation:
//! `busybox` is `docker.io/library/busybox:latest`.

use crate::digest::Digest;
use crate::error::{Error, ErrorKind, Result};

/// The registry name Docker uses for Docker Hub; the client talks to [`DOCKER_HUB_HOST`] for it.
pub const DOCKER_HUB: &str = "docker.io";
/// The host serving Docker Hub's distribution API.
pub const DOCKER_HUB_HOST: &str = "registry-1.docker.io";

/// A parsed image reference. At least one of `tag` and `digest` is set after [`Reference::parse`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reference {
    /// Registry name as written (`docker.io`, `127.0.0.1:5000`, `ghcr.io`).
    pub registry: String,
    /// Repository path inside the registry (`library/busybox`).
    pub repository: String,
    /// Tag, if any (`latest` when neither tag nor digest was given).
    pub tag: Option<String>,
    /// Digest, if the reference pins one.
    pub digest: Option<Digest>,
}

fn invalid(s: &str, why: &str) -> Error {
    Error::new(
        ErrorKind::Registry,
        format!(
            "invalid image reference {s:?}: {why}; expected [registry[:port]/]repository[:tag][@sha256:<64 hex>] \
             with a lowercase repository (a-z, 0-9, '.', '_', '-', '/')"
        ),
    )
}

impl Reference {
    /// Parses a reference with Docker's defaults: no registry → `docker.io`, a single-component
    /// Docker Hub repository gets `library/`, no tag and no digest → tag `latest`. The first path
    /// component is a registry when it contains `.` or `:` or is `localhost`.
    pub fn parse(s: &str) -> Result<Reference> {
        let (name_tag, digest) = match s.split_once('@') {
            Some((n, d)) => (n, Some(Digest::parse(d).map_err(|_| invalid(s, "the digest is not sha256:<64 hex>"))?)),
            None => (s, None),
        };
        // A ':' after the last '/' separates the tag; earlier ones belong to a registry port.
        let last_slash = name_tag.rfind('/').map(|i| i + 1).unwrap_or(0);
        let (name, tag) = match name_tag[last_slash..].find(':') {
            Some(i) => (&name_tag[..last_slash + i], Some(&name_tag[last_slash + i + 1..])),
            None => (name_tag, None),
        };
        if name.is_empty() {
            return Err(invalid(s, "the repository is empty"));
        }
        let (registry, repository) = match name.split_once('/') {
            Some((first, rest)) if first.contains('.') || first.contains(':') || first == "localhost" => {
                (first.to_owned(), rest.to_owned())
            }
            _ => (DOCKER_HUB.to_owned(), name.to_owned()),
        };
        let registry = if registry == "index.docker.io" { DOCKER_HUB.to_owned() } else { registry };
        let repository = if registry == DOCKER_HUB && !repository.contains('/') {
            format!("library/{repository}")
        } else {
            repository
        };
        validate_repository(s, &repository)?;
        if let Some(t) = tag {
            validate_tag(s, t)?;
        }
        let tag = match (tag, &digest) {
            (Some(t), _) => Some(t.to_owned()),
            (None, Some(_)) => None,
            (None, None) => Some("latest".to_owned()),
        };
        Ok(Reference { registry, repository, tag, digest })
    }

    /// The host the client connects to (`registry-1.docker.io` for `docker.io`).
    pub fn host(&self) -> &str {
        if self.registry == DOCKER_HUB {
            DOCKER_HUB_HOST
        } else {
            &self.registry
        }
    }

    /// What goes after `/manifests/` in a URL: the digest when pinned, else the tag.
    pub fn manifest_ref(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.clone(),
            (None, None) => "latest".to_owned(),
        }
    }

    /// The same repository pinned to `digest` (tag dropped).
    pub fn with_digest(&self, digest: Digest) -> Reference {
        Reference {
            registry: self.registry.clone(),
            repository: self.repository.clone(),
            tag: None,
            digest: Some(digest),
        }
    }
}

fn validate_repository(s: &str, repo: &str) -> Result<()> {
    let component_ok = |c: &str| {
        !c.is_empty()
            && c.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-'))
            && c.as_bytes()[0].is_ascii_alphanumeric()
            && c.as_bytes()[c.len() - 1].is_ascii_alphanumeric()
    };
    if repo.len() > 255 || !repo.split('/').all(component_ok) {
        return Err(invalid(s, &format!("repository {repo:?} is not valid")));
    }
    Ok(())
}

fn validate_tag(s: &str, tag: &str) -> Result<()> {
    let ok = !tag.is_empty()
        && tag.len() <= 128
        && (tag.as_bytes()[0].is_ascii_alphanumeric() || tag.as_bytes()[0] == b'_')
        && tag.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if !ok {
        return Err(invalid(
            s,
            &format!("tag {tag:?} is not valid (1-128 of A-Z a-z 0-9 _ . -, not starting with . or -)"),
        ));
    }
    Ok(())
}

impl std::fmt::Display for Reference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

impl std::str::FromStr for Reference {
    type Err = Error;
    fn from_str(s: &str) -> Result<Reference> {
        Reference::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_hub_normalisation() {
        let r = Reference::parse("busybox").unwrap();
        assert_eq!(r.to_string(), "docker.io/library/busybox:latest");
        assert_eq!(r.host(), DOCKER_HUB_HOST);
        assert_eq!(Reference::parse("user/app:1.0").unwrap().to_string(), "docker.io/user/app:1.0");
        assert_eq!(
            Reference::parse("index.docker.io/library/alpine").unwrap().to_string(),
            "docker.io/library/alpine:latest"
        );
    }

    #[test]
    fn registry_with_port_and_digest() {
        let d = Digest::of(b"x");
        let r = Reference::parse("127.0.0.1:5000/a/b:t").unwrap();
        assert_eq!(
            (r.registry.as_str(), r.repository.as_str(), r.tag.as_deref()),
            ("127.0.0.1:5000", "a/b", Some("t"))
        );
        assert_eq!(r.host(), "127.0.0.1:5000");
        let r = Reference::parse(&format!("localhost:5000/a@{d}")).unwrap();
        assert_eq!(r.tag, None);
        assert_eq!(r.digest.as_ref(), Some(&d));
        assert_eq!(r.manifest_ref(), d.to_string());
        assert_eq!(r.to_string(), format!("localhost:5000/a@{d}"));
        let r = Reference::parse(&format!("busybox:1@{d}")).unwrap();
        assert_eq!(r.to_string(), format!("docker.io/library/busybox:1@{d}"));
        assert_eq!(Reference::parse("localhost/x").unwrap().registry, "localhost");
        assert_eq!(Reference::parse("127.0.0.1:5000/a").unwrap().tag.as_deref(), Some("latest"));
    }

    #[test]
    fn rejects_bad_references() {
        for bad in ["", "UPPER/case", "a//b", "a:", "a:-x", "a@sha256:xyz", "a/b-:t", ":tag"] {
            let e = Reference::parse(bad).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Registry, "{bad}");
            assert!(e.to_string().contains("expected"), "{e}");
        }
    }
}
