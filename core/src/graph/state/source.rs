//! Source states (BuildKit's `llb.Image`, `llb.Local`, `llb.Git`, `llb.HTTP`, `llb.OCILayout`):
//! each builds one source node from a [`SourceSpec`]; image references are normalised here.

use super::node::{Constraints, NodeKind};
use super::{GitOptions, HttpOptions, LocalOptions, State};
use crate::graph::source::{OciRef, SourceSpec};
use std::path::PathBuf;

/// Normalizes a docker image reference like Go's `reference.ParseNormalizedNamed` +
/// `TagNameOnly` for the common forms: `busybox` → `docker.io/library/busybox:latest`.
pub fn normalize_image_ref(r: &str) -> String {
    let (first, _) = r.split_once('/').unwrap_or(("", r));
    let has_domain = r.contains('/') && (first.contains('.') || first.contains(':') || first == "localhost");
    let mut out = if has_domain {
        r.to_owned()
    } else if r.contains('/') {
        format!("docker.io/{r}")
    } else {
        format!("docker.io/library/{r}")
    };
    let last = out.rsplit('/').next().unwrap_or("");
    if !last.contains(':') && !out.contains('@') {
        out.push_str(":latest");
    }
    out
}

impl State {
    /// A state from any typed source.
    pub fn source(spec: SourceSpec) -> State {
        let platform_specific = matches!(spec, SourceSpec::DockerImage { .. } | SourceSpec::OciLayout { .. });
        State::from_node(
            NodeKind::Source {
                identifier: spec.to_identifier(),
                attrs: spec.to_attrs(),
                caps: spec.caps(),
                platform_specific,
            },
            Constraints::default(),
        )
    }

    /// `local://NAME`: a directory the caller provides under `name`.
    pub fn local(name: impl Into<String>) -> State {
        State::local_with(name, LocalOptions::default())
    }

    /// `local://NAME` with include/exclude patterns, follow paths and a shared key hint.
    pub fn local_with(name: impl Into<String>, o: LocalOptions) -> State {
        State::source(SourceSpec::Local {
            name: name.into(),
            include: o.include,
            exclude: o.exclude,
            follow_paths: o.follow_paths,
            shared_key_hint: o.shared_key_hint,
        })
    }

    /// `oci-layout://DIR:TAG` or `oci-layout://DIR@DIGEST`: an image from an OCI layout on disk.
    pub fn oci_layout(dir: impl Into<PathBuf>, reference: OciRef) -> State {
        State::source(SourceSpec::OciLayout { path: dir.into(), reference })
    }

    /// A file downloaded from `url` (http or https).
    pub fn http(url: impl Into<String>, o: HttpOptions) -> State {
        State::source(SourceSpec::Http {
            url: url.into(),
            checksum: o.checksum,
            filename: o.filename,
            perm: o.perm,
            uid: o.uid,
            gid: o.gid,
        })
    }

    /// A git checkout of `reference` (branch, tag, commit; empty = default branch) from `remote`
    /// (URL, `file://` URL or absolute path).
    pub fn git(remote: impl Into<String>, reference: impl Into<String>) -> State {
        State::git_with(remote, reference, GitOptions::default())
    }

    /// [`State::git`] with options.
    pub fn git_with(remote: impl Into<String>, reference: impl Into<String>, o: GitOptions) -> State {
        State::source(SourceSpec::Git {
            remote: remote.into(),
            reference: reference.into(),
            keep_git_dir: o.keep_git_dir,
            subdir: o.subdir,
        })
    }

    /// `docker-image://REF` (normalized like Go: `busybox` → `docker.io/library/busybox:latest`).
    pub fn image(reference: impl AsRef<str>) -> State {
        State::source(SourceSpec::DockerImage { reference: normalize_image_ref(reference.as_ref()) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::Digest;

    #[test]
    fn image_refs_normalize() {
        assert_eq!(normalize_image_ref("busybox"), "docker.io/library/busybox:latest");
        assert_eq!(normalize_image_ref("me/app:1"), "docker.io/me/app:1");
        assert_eq!(normalize_image_ref("localhost:5000/a"), "localhost:5000/a:latest");
        let d = format!("reg.io/a@{}", Digest::of(b"x"));
        assert_eq!(normalize_image_ref(&d), d);
    }
}
