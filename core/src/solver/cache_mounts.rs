//! `CacheMounts`: persistent directories behind `cache` mounts, with BuildKit's sharing modes —
//! `shared` (one dir for everyone), `locked` (one writer at a time, others wait), `private`
//! (a fresh dir when the shared one is busy; discarded afterwards).

use crate::digest::Digest;
use crate::error::{IoContext, Result};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

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
    in_use: Arc<Mutex<HashMap<String, usize>>>,
}

/// A cache directory in use; releases its lock/claim on drop.
#[derive(Debug)]
pub struct CacheLease {
    /// The host directory to bind-mount.
    pub path: PathBuf,
    _lock: Option<tokio::sync::OwnedMutexGuard<()>>,
    _tmp: Option<tempfile::TempDir>,
    claim: Option<(Arc<Mutex<HashMap<String, usize>>>, String)>,
}

impl Drop for CacheLease {
    fn drop(&mut self) {
        if let Some((m, id)) = self.claim.take() {
            let mut m = m.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(n) = m.get_mut(&id) {
                *n = n.saturating_sub(1);
            }
        }
    }
}

impl CacheMounts {
    /// Cache mounts under `dir`.
    pub fn new(dir: PathBuf) -> Result<Self> {
        std::fs::create_dir_all(&dir).with_path("create cache-mount dir", &dir)?;
        Ok(CacheMounts { dir, locks: Default::default(), in_use: Default::default() })
    }

    /// The persistent directory of cache `id`.
    pub fn dir_of(&self, id: &str) -> PathBuf {
        self.dir.join(&Digest::of(id.as_bytes()).hex()[..32])
    }

    /// Acquires the directory for `id` under `sharing`.
    pub async fn acquire(&self, id: &str, sharing: Sharing) -> Result<CacheLease> {
        let path = self.dir_of(id);
        std::fs::create_dir_all(&path).with_path("create cache mount", &path)?;
        match sharing {
            Sharing::Shared => Ok(CacheLease { path, _lock: None, _tmp: None, claim: None }),
            Sharing::Locked => {
                let lock = {
                    let mut m = self.locks.lock().unwrap_or_else(|p| p.into_inner());
                    m.entry(id.to_owned()).or_default().clone()
                };
                let guard = lock.lock_owned().await;
                Ok(CacheLease { path, _lock: Some(guard), _tmp: None, claim: None })
            }
            Sharing::Private => {
                let busy = {
                    let mut m = self.in_use.lock().unwrap_or_else(|p| p.into_inner());
                    let n = m.entry(id.to_owned()).or_insert(0);
                    *n += 1;
                    *n > 1
                };
                let claim = Some((self.in_use.clone(), id.to_owned()));
                if busy {
                    let tmp = tempfile::Builder::new()
                        .prefix("private-")
                        .tempdir_in(&self.dir)
                        .with_path("create private cache mount", &self.dir)?;
                    Ok(CacheLease { path: tmp.path().to_path_buf(), _lock: None, _tmp: Some(tmp), claim })
                } else {
                    Ok(CacheLease { path, _lock: None, _tmp: None, claim })
                }
            }
        }
    }
}
