//! `OciLayout`: OCI image layout directories (`oci-layout`, `index.json`, `blobs/sha256/`).
//! Tags are the `org.opencontainers.image.ref.name` annotation of `index.json` entries.
//! `index.json` is rewritten only while holding an exclusive flock on `index.json.lock` (the lock
//! BuildKit takes too, so both tools can share a directory), via temp file + fsync + rename.

use crate::content::limits::read_metadata_file;
use crate::content::store::{sync_dir, ContentStore};
use crate::digest::Digest;
use crate::error::{Error, ErrorKind, IoContext, Result};
use oci_spec::image::{Descriptor, ImageIndex, MediaType};
use std::fs::{self, File};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Annotation holding a manifest's tag in `index.json`.
pub const REF_NAME_ANNOTATION: &str = "org.opencontainers.image.ref.name";
/// The content of the `oci-layout` file kiln writes.
const OCI_LAYOUT_FILE: &str = r#"{"imageLayoutVersion":"1.0.0"}"#;
/// How long `index.json` updates wait for another writer's lock.
const LOCK_TIMEOUT: Duration = Duration::from_secs(60);

/// An OCI image layout directory.
#[derive(Debug, Clone)]
pub struct OciLayout {
    dir: PathBuf,
    store: ContentStore,
}

impl OciLayout {
    /// Opens an existing layout kiln may write to (an export destination); a directory without a
    /// valid `oci-layout` file is an error.
    pub fn open(dir: &Path) -> Result<OciLayout> {
        Self::check_marker(dir)?;
        Ok(OciLayout { dir: dir.to_path_buf(), store: ContentStore::open(dir)? })
    }

    /// Opens an existing layout as a source: nothing in it is ever created, modified or deleted
    /// (see [`ContentStore::open_readonly`]); `blobs/sha256` must not be a symlink.
    pub fn open_readonly(dir: &Path) -> Result<OciLayout> {
        Self::check_marker(dir)?;
        Ok(OciLayout { dir: dir.to_path_buf(), store: ContentStore::open_readonly(dir)? })
    }

    fn check_marker(dir: &Path) -> Result<()> {
        let marker = dir.join("oci-layout");
        let text = match read_metadata_file(&marker, "oci-layout file")? {
            Some(t) => String::from_utf8_lossy(&t).into_owned(),
            // Tools that copy only index.json and blobs (as BuildKit fixtures do) still make a
            // readable layout; accept it when index.json is present.
            None if dir.join("index.json").exists() => {
                tracing::debug!(dir = %dir.display(), "OCI layout without an oci-layout file; reading index.json anyway");
                OCI_LAYOUT_FILE.to_owned()
            }
            None => {
                return Err(Error::new(
                    ErrorKind::Content,
                    format!(
                        "{} is not an OCI image layout: it has no oci-layout file (expected a directory with \
                         oci-layout, index.json and blobs/sha256/)",
                        dir.display()
                    ),
                ))
            }
        };
        let version = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v.get("imageLayoutVersion").and_then(|v| v.as_str()).map(str::to_owned));
        match version.as_deref() {
            Some(v) if v.starts_with("1.") => {}
            other => {
                return Err(Error::new(
                    ErrorKind::Content,
                    format!("{} has imageLayoutVersion {other:?}; expected {OCI_LAYOUT_FILE}", marker.display()),
                ))
            }
        }
        Ok(())
    }

    /// Opens the layout at `dir`, creating the directory, `oci-layout` and an empty `index.json`
    /// when missing.
    pub fn create(dir: &Path) -> Result<OciLayout> {
        fs::create_dir_all(dir).with_path("creating OCI layout directory", dir)?;
        let marker = dir.join("oci-layout");
        if !marker.exists() {
            write_atomic(dir, "oci-layout", OCI_LAYOUT_FILE.as_bytes())?;
        }
        let layout = OciLayout::open(dir)?;
        if !layout.index_path().exists() {
            layout.update_index(Ok)?;
        }
        Ok(layout)
    }

    /// The layout's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The blob store of the layout.
    pub fn store(&self) -> &ContentStore {
        &self.store
    }

    fn index_path(&self) -> PathBuf {
        self.dir.join("index.json")
    }

    /// The current `index.json`; a missing one reads as an empty index. Only a regular file of
    /// at most the metadata cap is read (see [`crate::content::limits`]).
    pub fn index(&self) -> Result<ImageIndex> {
        let path = self.index_path();
        let Some(bytes) = read_metadata_file(&path, "index.json")? else { return Ok(empty_index()) };
        crate::content::limits::check_json_depth(&bytes, &format!("{}", path.display()))?;
        serde_json::from_slice(&bytes).map_err(|e| {
            Error::with_source(ErrorKind::Content, format!("{} is not a valid OCI image index", path.display()), e)
        })
    }

    /// Resolves a tag (the `org.opencontainers.image.ref.name` annotation) or a `sha256:` digest
    /// to its descriptor. An unknown tag is an error listing the known tags.
    pub fn resolve(&self, reference: &str) -> Result<Descriptor> {
        let index = self.index()?;
        if let Ok(d) = Digest::parse(reference) {
            if let Some(desc) = index.manifests().iter().find(|m| m.digest().as_ref() == d.as_str()) {
                return Ok(desc.clone());
            }
            // A manifest that is in the blobs but not in index.json (e.g. a child of an index).
            if self.store.has(&d) {
                let bytes = self.store.read(&d)?;
                let media_type = serde_json::from_slice::<serde_json::Value>(&bytes)
                    .ok()
                    .and_then(|v| v.get("mediaType").and_then(|m| m.as_str()).map(str::to_owned))
                    .unwrap_or_else(|| MediaType::ImageManifest.to_string());
                return Ok(Descriptor::new(
                    MediaType::from(media_type.as_str()),
                    bytes.len() as u64,
                    to_oci_digest(&d)?,
                ));
            }
            return Err(Error::new(
                ErrorKind::Content,
                format!("digest {d} is not in OCI layout {}", self.dir.display()),
            ));
        }
        // The last entry wins when a tag appears twice (other writers may append).
        if let Some(desc) = index.manifests().iter().rev().find(|m| tag_of(m) == Some(reference)) {
            return Ok(desc.clone());
        }
        let mut tags: Vec<&str> = index.manifests().iter().filter_map(tag_of).collect();
        tags.sort_unstable();
        tags.dedup();
        Err(Error::new(
            ErrorKind::Content,
            format!(
                "tag {reference:?} not found in OCI layout {}; known tags: {}",
                self.dir.display(),
                if tags.is_empty() { "(none)".to_owned() } else { tags.join(", ") }
            ),
        ))
    }

    /// Adds or replaces the manifest tagged `tag` in `index.json`, keeping every other entry
    /// (including tags written concurrently by other processes).
    pub fn set_tag(&self, tag: &str, desc: Descriptor) -> Result<()> {
        if tag.is_empty() {
            return Err(Error::new(ErrorKind::Content, "an OCI layout tag must not be empty"));
        }
        let mut desc = desc;
        let mut annotations = desc.annotations().clone().unwrap_or_default();
        annotations.insert(REF_NAME_ANNOTATION.to_owned(), tag.to_owned());
        desc.set_annotations(Some(annotations));
        self.update_index(move |mut index| {
            let mut manifests: Vec<Descriptor> =
                index.manifests().iter().filter(|m| tag_of(m) != Some(tag)).cloned().collect();
            manifests.push(desc);
            index.set_manifests(manifests);
            Ok(index)
        })
    }

    /// Runs `f` with the `index.json.lock` flock held, giving it the current index and writing
    /// back (atomically) what it returns.
    pub fn update_index(&self, f: impl FnOnce(ImageIndex) -> Result<ImageIndex>) -> Result<()> {
        let _lock = self.lock()?;
        let index = self.index()?;
        let mut index = f(index)?;
        if index.media_type().is_none() {
            index.set_media_type(Some(MediaType::ImageIndex));
        }
        // Through serde_json::Value so that map keys (annotations) are written in sorted order.
        let value = serde_json::to_value(&index)
            .map_err(|e| Error::with_source(ErrorKind::Internal, "encoding index.json", e))?;
        let bytes = serde_json::to_vec(&value)
            .map_err(|e| Error::with_source(ErrorKind::Internal, "encoding index.json", e))?;
        write_atomic(&self.dir, "index.json", &bytes)
    }

    /// Runs `f` holding the index lock (the lock `update_index` takes): what `f` does is ordered
    /// entirely before or after every index update and garbage collection of this layout.
    pub fn with_lock<T>(&self, f: impl FnOnce() -> Result<T>) -> Result<T> {
        let _lock = self.lock()?;
        f()
    }

    /// Takes the exclusive lock on `index.json.lock`, waiting at most [`LOCK_TIMEOUT`].
    fn lock(&self) -> Result<File> {
        let path = self.dir.join("index.json.lock");
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_path("opening lock file", &path)?;
        let start = Instant::now();
        let mut wait = Duration::from_millis(1);
        loop {
            match file.try_lock() {
                Ok(()) => return Ok(file),
                Err(fs::TryLockError::WouldBlock) => {}
                Err(fs::TryLockError::Error(e)) => return Err(Error::io("locking", path, e)),
            }
            if start.elapsed() >= LOCK_TIMEOUT {
                return Err(Error::new(
                    ErrorKind::Content,
                    format!(
                        "timed out after {}s waiting for the lock {} (another process is updating the OCI layout)",
                        LOCK_TIMEOUT.as_secs(),
                        path.display()
                    ),
                ));
            }
            // Bounded exponential backoff: File::lock has no timeout of its own.
            std::thread::sleep(wait);
            wait = (wait * 2).min(Duration::from_millis(100));
        }
    }
}

/// The tag of an index entry.
fn tag_of(desc: &Descriptor) -> Option<&str> {
    desc.annotations().as_ref().and_then(|a| a.get(REF_NAME_ANNOTATION)).map(String::as_str)
}

fn empty_index() -> ImageIndex {
    let mut index = ImageIndex::default();
    index.set_media_type(Some(MediaType::ImageIndex));
    index
}

/// A kiln digest as an oci-spec digest.
pub(crate) fn to_oci_digest(d: &Digest) -> Result<oci_spec::image::Digest> {
    d.as_str().parse().map_err(|e| Error::with_source(ErrorKind::Internal, format!("converting digest {d}"), e))
}

/// An oci-spec digest as a kiln digest; only sha256 is accepted.
pub(crate) fn from_oci_digest(d: &oci_spec::image::Digest) -> Result<Digest> {
    Digest::parse(d.as_ref())
}

/// Writes `dir/name` atomically: temp file in `dir`, fsync, rename, fsync of `dir`.
pub(crate) fn write_atomic(dir: &Path, name: &str, data: &[u8]) -> Result<()> {
    let dest = dir.join(name);
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .tempfile_in(dir)
        .with_path("creating temp file in", dir)?;
    tmp.write_all(data).with_path("writing", tmp.path().to_path_buf())?;
    tmp.as_file().sync_all().with_path("syncing", tmp.path().to_path_buf())?;
    tmp.as_file()
        .set_permissions(fs::Permissions::from_mode(0o644))
        .with_path("setting mode of", tmp.path().to_path_buf())?;
    tmp.persist(&dest).map_err(|e| Error::io("renaming into place", &dest, e.error))?;
    sync_dir(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desc(data: &[u8]) -> Descriptor {
        Descriptor::new(MediaType::ImageManifest, data.len() as u64, to_oci_digest(&Digest::of(data)).unwrap())
    }

    #[test]
    fn open_rejects_plain_dir() {
        let dir = tempfile::tempdir().unwrap();
        let err = OciLayout::open(dir.path()).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Content);
        assert!(err.to_string().contains("not an OCI image layout"), "{err}");
    }

    #[test]
    fn create_tag_resolve() {
        let dir = tempfile::tempdir().unwrap();
        let l = OciLayout::create(dir.path()).unwrap();
        assert!(l.index().unwrap().manifests().is_empty());
        assert_eq!(fs::read_to_string(dir.path().join("oci-layout")).unwrap(), OCI_LAYOUT_FILE);
        l.set_tag("a", desc(b"1")).unwrap();
        l.set_tag("b", desc(b"2")).unwrap();
        l.set_tag("a", desc(b"3")).unwrap();
        let index = l.index().unwrap();
        assert_eq!(index.manifests().len(), 2);
        assert_eq!(l.resolve("a").unwrap().digest().as_ref(), Digest::of(b"3").as_str());
        assert_eq!(l.resolve(Digest::of(b"2").as_str()).unwrap().digest().as_ref(), Digest::of(b"2").as_str());
        let err = l.resolve("zzz").unwrap_err().to_string();
        assert!(err.contains("known tags: a, b"), "{err}");
        let reopened = OciLayout::open(dir.path()).unwrap();
        assert_eq!(reopened.index().unwrap(), index);
    }
}
