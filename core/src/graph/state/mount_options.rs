//! The argument meaning every face shares for mounts and OCI layout sources: option structs
//! whose `Default` is the one place a default is decided (cache id = destination, secret id =
//! destination file name, secret mode 0o400, ...), the validating constructors
//! ([`MountSpec::bind_with`], [`MountSpec::cache_with`], [`MountSpec::secret_with`]) and
//! [`OciLayoutOptions::reference`]. Bindings fill these structs and call these functions; they
//! decide nothing themselves, so Python, Node and C cannot drift apart.

use super::options::{CacheSharing, MountKind, MountSpec};
use super::State;
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::graph::source::OciRef;

/// Options of a bind mount ([`MountSpec::bind_with`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BindMountOptions {
    /// Mount read-only (such a mount has no output).
    pub readonly: bool,
    /// Mount only this path of the state (BuildKit's mount selector).
    pub selector: Option<String>,
}

/// Options of a cache mount ([`MountSpec::cache_with`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CacheMountOptions {
    /// Cache id; `None` = the destination path (as Dockerfile's `--mount=type=cache`).
    pub id: Option<String>,
    /// How concurrent users share it.
    pub sharing: CacheSharing,
}

/// Options of a tmpfs mount ([`MountSpec::tmpfs`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TmpfsMountOptions {
    /// Size limit in bytes; 0 = the runtime default.
    pub size: u64,
}

/// Options of a secret mount ([`MountSpec::secret_with`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretMountOptions {
    /// Secret id given at solve time; `None` = the file name of the destination (as
    /// Dockerfile's `--mount=type=secret`).
    pub id: Option<String>,
    /// Owner uid.
    pub uid: u32,
    /// Owner gid.
    pub gid: u32,
    /// Permission bits (at most 0o7777).
    pub mode: u32,
    /// A missing secret is not an error.
    pub optional: bool,
}

impl Default for SecretMountOptions {
    fn default() -> Self {
        SecretMountOptions { id: None, uid: 0, gid: 0, mode: 0o400, optional: false }
    }
}

/// How an OCI layout source picks its image: a tag or a digest, never both (default tag
/// `latest`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OciLayoutOptions {
    /// Tag (the `org.opencontainers.image.ref.name` annotation).
    pub tag: Option<String>,
    /// Manifest or index digest (`sha256:<64 hex>`).
    pub digest: Option<String>,
    /// The platform of the image (an op platform constraint; `None` = the host's).
    pub platform: Option<crate::graph::Platform>,
}

impl OciLayoutOptions {
    /// The image options these layout options carry (the platform).
    pub fn image_options(&self) -> crate::graph::ImageOptions {
        crate::graph::ImageOptions { platform: self.platform.clone(), ..Default::default() }
    }

    /// The reference these options name: the digest, else the tag, else `latest`. Both given, or
    /// a malformed digest, is an option error naming the key.
    pub fn reference(&self) -> Result<OciRef> {
        match (&self.tag, &self.digest) {
            (Some(t), Some(d)) => Err(Error::option(
                "digest",
                d.as_str(),
                format!("give either tag or digest for an OCI layout, not both (tag {t:?} is given too)"),
            )),
            (_, Some(d)) => Ok(OciRef::Digest(parse_digest("digest", d)?)),
            (Some(t), None) => Ok(OciRef::Tag(t.clone())),
            (None, None) => Ok(OciRef::Tag("latest".into())),
        }
    }

    /// One reference string as the C API takes it: `sha256:...` is a digest, anything else a tag.
    pub fn from_reference(reference: &str) -> OciLayoutOptions {
        if reference.starts_with("sha256:") {
            OciLayoutOptions { digest: Some(reference.to_owned()), ..Default::default() }
        } else {
            OciLayoutOptions { tag: Some(reference.to_owned()), ..Default::default() }
        }
    }
}

/// Parses a digest option (`checksum`, `digest`) with an error naming the key.
pub fn parse_digest(key: &str, value: &str) -> Result<Digest> {
    Digest::parse(value).map_err(|_| Error::option(key, value, "a digest like sha256:<64 hex digits>"))
}

impl MountSpec {
    /// Bind-mounts `state` at `dest` with `o` (readonly, selector).
    pub fn bind_with(dest: impl Into<String>, state: &State, o: BindMountOptions) -> MountSpec {
        MountSpec {
            dest: dest.into(),
            kind: MountKind::Bind {
                state: state.clone(),
                readonly: o.readonly,
                selector: o.selector,
                no_output: false,
            },
        }
    }

    /// A persistent cache directory at `dest`; the id defaults to `dest`.
    pub fn cache_with(dest: impl Into<String>, o: CacheMountOptions) -> MountSpec {
        let dest = dest.into();
        let id = o.id.unwrap_or_else(|| dest.clone());
        MountSpec::cache(dest, id, o.sharing)
    }

    /// A tmpfs at `dest` with `o`.
    pub fn tmpfs_with(dest: impl Into<String>, o: TmpfsMountOptions) -> MountSpec {
        MountSpec::tmpfs(dest, o.size)
    }

    /// Secret `id` as a file at `dest`; the id defaults to the file name of `dest`. A mode above
    /// 0o7777 or an empty id is an option error.
    pub fn secret_with(dest: impl Into<String>, o: SecretMountOptions) -> Result<MountSpec> {
        let dest = dest.into();
        if o.mode > 0o7777 {
            return Err(Error::option("mode", format!("{:#o}", o.mode), "a permission mode of at most 0o7777"));
        }
        let id = match o.id {
            Some(id) if id.is_empty() => return Err(Error::option("id", "", "a non-empty secret id")),
            Some(id) => id,
            None => dest.rsplit('/').find(|s| !s.is_empty()).unwrap_or(dest.as_str()).to_owned(),
        };
        Ok(MountSpec::secret(dest, id, o.uid, o.gid, o.mode, o.optional))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_decided_here() {
        let m = MountSpec::cache_with("/root/.cache", CacheMountOptions::default());
        assert!(matches!(&m.kind, MountKind::Cache { id, sharing: CacheSharing::Shared, .. } if id == "/root/.cache"));
        let m = MountSpec::secret_with("/run/secrets/token", SecretMountOptions::default()).unwrap();
        assert!(
            matches!(&m.kind, MountKind::Secret { id, mode: 0o400, uid: 0, gid: 0, optional: false } if id == "token")
        );
        let e = MountSpec::secret_with("/s", SecretMountOptions { mode: 0o10000, ..Default::default() }).unwrap_err();
        assert!(e.to_string().contains("mode"), "{e}");
    }

    #[test]
    fn oci_layout_reference_rules() {
        assert_eq!(OciLayoutOptions::default().reference().unwrap(), OciRef::Tag("latest".into()));
        let both = OciLayoutOptions { tag: Some("1".into()), digest: Some("sha256:x".into()), ..Default::default() };
        assert!(both.reference().unwrap_err().to_string().contains("not both"));
        let bad = OciLayoutOptions { digest: Some("sha256:x".into()), ..Default::default() };
        assert!(matches!(bad.reference().unwrap_err(), Error::Option { key, .. } if key == "digest"));
        assert_eq!(OciLayoutOptions::from_reference("v1").tag.as_deref(), Some("v1"));
    }
}
