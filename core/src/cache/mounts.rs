//! `CacheMounts`: persistent directories behind `cache` mounts, with BuildKit's sharing modes —
//! `shared` (one dir for everyone), `locked` (one writer at a time, others wait), `private`
//! (a fresh dir when the shared one is busy; discarded afterwards). Each directory is a cache
//! record as in BuildKit (record type `exec.cachemount`): a sidecar `<dir>.json` keeps its id,
//! description and last use, so disk usage lists it and prune removes it when no solve uses it.

use super::metadata::now_secs;
use crate::digest::Digest;
use crate::error::{IoContext, Result};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Prefix of the throwaway directories of `private` leases (never records).
const PRIVATE_PREFIX: &str = "private-";

/// What the sidecar of a cache-mount directory records.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct MountMeta {
    /// The cache id (`id=` of the mount, else its target).
    id: String,
    /// BuildKit's description of the record: the mount that created it.
    description: String,
    /// Unix seconds of the last lease.
    last_used: u64,
}

/// One cache-mount directory as disk usage and prune see it.
#[derive(Debug, Clone)]
pub(crate) struct MountUsage {
    /// The directory's name under `cache-mounts` (stable: derived from the id).
    pub name: String,
    /// What created it.
    pub description: String,
    /// Bytes of its files.
    pub size: u64,
    /// Unix seconds of its last use.
    pub last_used: u64,
    /// A running solve holds it.
    pub in_use: bool,
}

/// How concurrent users of one cache id are handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sharing {
    /// Everyone uses the same directory at once.
    Shared,
    /// A user gets a throwaway copy when the directory is in use.
    Private,
    /// Users take turns.
    Locked,
}

/// The engine's cache-mount directories in `ROOT/cache-mounts`.
#[derive(Debug)]
pub struct CacheMounts {
    dir: PathBuf,
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Private leases per id (a second one gets a throwaway dir).
    in_use: Arc<Mutex<HashMap<String, usize>>>,
    /// Leases of any sharing mode per directory name: prune never removes a directory held.
    held: Arc<Mutex<HashMap<String, usize>>>,
}

/// A cache directory in use; releases its lock/claim on drop.
#[derive(Debug)]
pub struct CacheLease {
    /// The host directory to bind-mount.
    pub path: PathBuf,
    _lock: Option<tokio::sync::OwnedMutexGuard<()>>,
    _tmp: Option<tempfile::TempDir>,
    _claim: Option<Claim>,
    _hold: Claim,
}

/// One count in a map of counts, given back on drop.
#[derive(Debug)]
struct Claim {
    counts: Arc<Mutex<HashMap<String, usize>>>,
    key: String,
}

impl Claim {
    /// Counts one more holder of `key`; returns the claim and the number of holders now.
    fn take(counts: &Arc<Mutex<HashMap<String, usize>>>, key: &str) -> (Claim, usize) {
        let mut m = counts.lock().unwrap_or_else(|p| p.into_inner());
        let n = m.entry(key.to_owned()).or_insert(0);
        *n += 1;
        (Claim { counts: counts.clone(), key: key.to_owned() }, *n)
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        let mut m = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = m.get_mut(&self.key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                m.remove(&self.key);
            }
        }
    }
}

impl CacheMounts {
    /// Cache mounts under `dir` (throwaway dirs of private leases and half-written records a crash
    /// left are removed).
    pub fn new(dir: PathBuf) -> Result<Self> {
        std::fs::create_dir_all(&dir).with_path("create cache-mount dir", &dir)?;
        for e in std::fs::read_dir(&dir).with_path("list cache mounts", &dir)?.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with(PRIVATE_PREFIX) {
                std::fs::remove_dir_all(e.path()).with_path("remove stale private cache mount", e.path())?;
            } else if name.starts_with('.') && name.contains(".tmp-") {
                // A record write a crash interrupted.
                std::fs::remove_file(e.path()).with_path("remove stale cache mount record", e.path())?;
            }
        }
        Ok(CacheMounts { dir, locks: Default::default(), in_use: Default::default(), held: Default::default() })
    }

    /// The directory name of cache `id`.
    fn name_of(id: &str) -> String {
        Digest::of(id.as_bytes()).hex()[..32].to_owned()
    }

    /// The persistent directory of cache `id`.
    pub fn dir_of(&self, id: &str) -> PathBuf {
        self.dir.join(Self::name_of(id))
    }

    fn meta_path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.json"))
    }

    /// Notes a use of cache `id` (the description is kept from its creation, as BuildKit's).
    fn touch(&self, id: &str, description: &str) -> Result<()> {
        let path = self.meta_path(&Self::name_of(id));
        let description = match read_meta(&path) {
            Some(m) => m.description,
            None => description.to_owned(),
        };
        let meta = MountMeta { id: id.to_owned(), description, last_used: now_secs() };
        let bytes = serde_json::to_vec(&meta)
            .map_err(|e| crate::Error::with_source(crate::ErrorKind::Internal, "encode cache mount record", e))?;
        // A unique temp file per write: concurrent steps using the same cache touch it at once.
        let mut tmp = tempfile::Builder::new()
            .prefix(&format!(".{}.tmp-", Self::name_of(id)))
            .tempfile_in(&self.dir)
            .with_path("write cache mount record", &self.dir)?;
        std::io::Write::write_all(&mut tmp, &bytes).with_path("write cache mount record", tmp.path())?;
        tmp.persist(&path).map_err(|e| e.error).with_path("write cache mount record", &path)?;
        Ok(())
    }

    /// Acquires the directory for `id` under `sharing`; `description` names the mount for disk
    /// usage when this use creates the cache (execs use [`CacheMounts::acquire_seeded`]).
    #[cfg(test)]
    pub async fn acquire(&self, id: &str, sharing: Sharing, description: &str) -> Result<CacheLease> {
        self.acquire_seeded(id, sharing, description, None).await
    }

    /// [`CacheMounts::acquire`] for a cache mount with an input (BuildKit's cache mount `from`):
    /// a directory this use creates starts as a copy of the tree at `seed` (modes, owners and
    /// times kept); an existing one is used as it is.
    pub async fn acquire_seeded(
        &self,
        id: &str,
        sharing: Sharing,
        description: &str,
        seed: Option<&Path>,
    ) -> Result<CacheLease> {
        let path = self.dir_of(id);
        // Held from here: prune never removes a directory a lease is being made for.
        let (hold, _) = Claim::take(&self.held, &Self::name_of(id));
        if let Some(seed) = seed.filter(|_| !path.exists()) {
            // Seeded aside and renamed into place, so a concurrent first use sees either no
            // directory or a complete one (a crash leaves a `private-` dir `new` removes).
            let tmp = tempfile::Builder::new()
                .prefix(&format!("{PRIVATE_PREFIX}seed-"))
                .tempdir_in(&self.dir)
                .with_path("create cache mount", &self.dir)?;
            crate::snapshot::copy_tree(seed, tmp.path())?;
            let staged = tmp.keep();
            if std::fs::rename(&staged, &path).is_err() {
                // Another use created it first: theirs stays.
                std::fs::remove_dir_all(&staged).with_path("remove staged cache mount", &staged)?;
            }
        }
        std::fs::create_dir_all(&path).with_path("create cache mount", &path)?;
        self.touch(id, description)?;
        match sharing {
            Sharing::Shared => Ok(CacheLease { path, _lock: None, _tmp: None, _claim: None, _hold: hold }),
            Sharing::Locked => {
                let lock = {
                    let mut m = self.locks.lock().unwrap_or_else(|p| p.into_inner());
                    m.entry(id.to_owned()).or_default().clone()
                };
                let guard = lock.lock_owned().await;
                Ok(CacheLease { path, _lock: Some(guard), _tmp: None, _claim: None, _hold: hold })
            }
            Sharing::Private => {
                let (claim, n) = Claim::take(&self.in_use, id);
                if n > 1 {
                    let tmp = tempfile::Builder::new()
                        .prefix(PRIVATE_PREFIX)
                        .tempdir_in(&self.dir)
                        .with_path("create private cache mount", &self.dir)?;
                    if let Some(seed) = seed {
                        crate::snapshot::copy_tree(seed, tmp.path())?;
                    }
                    Ok(CacheLease {
                        path: tmp.path().to_path_buf(),
                        _lock: None,
                        _tmp: Some(tmp),
                        _claim: Some(claim),
                        _hold: hold,
                    })
                } else {
                    Ok(CacheLease { path, _lock: None, _tmp: None, _claim: Some(claim), _hold: hold })
                }
            }
        }
    }

    /// Every cache-mount directory with its size and last use.
    pub(crate) fn usage(&self) -> Result<Vec<MountUsage>> {
        let held = self.held.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let mut out = Vec::new();
        for e in std::fs::read_dir(&self.dir).with_path("list cache mounts", &self.dir)?.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with(PRIVATE_PREFIX) || name.starts_with('.') || !e.path().is_dir() {
                continue;
            }
            let meta = read_meta(&self.meta_path(&name));
            let last_used = match &meta {
                Some(m) => m.last_used,
                None => mtime_secs(&e.path()),
            };
            let description = match meta {
                Some(m) => m.description,
                None => format!("cached mount {name}"),
            };
            let in_use = held.get(&name).is_some_and(|n| *n > 0);
            out.push(MountUsage { size: tree_size(&e.path()), name, description, last_used, in_use });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Removes the cache-mount directory `name` (and its record) unless a lease holds it;
    /// returns whether it was removed.
    pub(crate) fn remove(&self, name: &str) -> Result<bool> {
        let held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        if held.get(name).is_some_and(|n| *n > 0) {
            return Ok(false);
        }
        let dir = self.dir.join(name);
        if dir.exists() {
            std::fs::remove_dir_all(&dir).with_path("remove cache mount", &dir)?;
        }
        let meta = self.meta_path(name);
        if meta.exists() {
            std::fs::remove_file(&meta).with_path("remove cache mount record", &meta)?;
        }
        Ok(true)
    }
}

fn read_meta(path: &Path) -> Option<MountMeta> {
    let bytes = std::fs::read(path).ok()?;
    serde_json::from_slice(&bytes).ok()
}

fn mtime_secs(path: &Path) -> u64 {
    std::fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Bytes of the files under `dir` (symlinks not followed; unreadable entries count nothing).
fn tree_size(dir: &Path) -> u64 {
    walkdir::WalkDir::new(dir)
        .follow_links(false)
        .into_iter()
        .filter_map(|e| e.ok())
        .filter(|e| !e.file_type().is_dir())
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concurrent_uses_of_one_cache_record_it_once_each_and_leave_no_temp_files() {
        let tmp = tempfile::tempdir().unwrap();
        let mounts = CacheMounts::new(tmp.path().join("cm")).unwrap();
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| {
                    for _ in 0..20 {
                        mounts.touch("shared", "cached mount /c from exec x").unwrap();
                    }
                });
            }
        });
        let names: Vec<String> = std::fs::read_dir(tmp.path().join("cm"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, vec![format!("{}.json", CacheMounts::name_of("shared"))]);
        // A temp record a crash left is removed on the next open.
        std::fs::write(tmp.path().join("cm").join(".abc.tmp-x"), b"{").unwrap();
        CacheMounts::new(tmp.path().join("cm")).unwrap();
        assert!(!tmp.path().join("cm").join(".abc.tmp-x").exists());
    }

    #[tokio::test]
    async fn a_seeded_cache_starts_as_a_copy_of_its_seed_once() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let mounts = CacheMounts::new(tmp.path().join("cm")).unwrap();
        let seed = tmp.path().join("seed");
        std::fs::create_dir_all(seed.join("sub")).unwrap();
        std::fs::write(seed.join("sub/f"), b"seeded").unwrap();
        std::fs::set_permissions(&seed, std::fs::Permissions::from_mode(0o750)).unwrap();
        let lease = mounts.acquire_seeded("c:1", Sharing::Shared, "d", Some(&seed)).await.unwrap();
        assert_eq!(std::fs::read(lease.path.join("sub/f")).unwrap(), b"seeded");
        assert_eq!(std::fs::metadata(&lease.path).unwrap().permissions().mode() & 0o7777, 0o750);
        std::fs::write(lease.path.join("sub/f"), b"changed").unwrap();
        drop(lease);
        // An existing cache is used as it is; a private second use gets its own seeded copy.
        let first = mounts.acquire_seeded("c:1", Sharing::Private, "d", Some(&seed)).await.unwrap();
        assert_eq!(std::fs::read(first.path.join("sub/f")).unwrap(), b"changed");
        let second = mounts.acquire_seeded("c:1", Sharing::Private, "d", Some(&seed)).await.unwrap();
        assert_ne!(first.path, second.path);
        assert_eq!(std::fs::read(second.path.join("sub/f")).unwrap(), b"seeded");
        drop((first, second));
        // No staging directory is left behind.
        let stray: Vec<_> = std::fs::read_dir(tmp.path().join("cm"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(PRIVATE_PREFIX))
            .collect();
        assert!(stray.is_empty(), "{stray:?}");
    }

    #[tokio::test]
    async fn held_mounts_are_listed_as_in_use_and_never_removed() {
        let tmp = tempfile::tempdir().unwrap();
        let mounts = CacheMounts::new(tmp.path().join("cm")).unwrap();
        let lease = mounts.acquire("pkgs", Sharing::Shared, "cached mount /pkgs from exec make").await.unwrap();
        std::fs::write(lease.path.join("f"), [0u8; 1000]).unwrap();
        let usage = mounts.usage().unwrap();
        assert_eq!(usage.len(), 1, "{usage:?}");
        assert!(usage[0].in_use && usage[0].size == 1000, "{usage:?}");
        assert_eq!(usage[0].description, "cached mount /pkgs from exec make");
        assert!(!mounts.remove(&usage[0].name).unwrap(), "a held mount stays");
        assert!(lease.path.join("f").exists());
        // A later use keeps the description of the mount that created the cache.
        let again = mounts.acquire("pkgs", Sharing::Locked, "cached mount /other from exec x").await.unwrap();
        drop((lease, again));
        let usage = mounts.usage().unwrap();
        assert!(!usage[0].in_use);
        assert_eq!(usage[0].description, "cached mount /pkgs from exec make");
        assert!(mounts.remove(&usage[0].name).unwrap());
        assert!(mounts.usage().unwrap().is_empty());
        assert_eq!(std::fs::read_dir(tmp.path().join("cm")).unwrap().count(), 0, "dir and record removed");
    }
}
