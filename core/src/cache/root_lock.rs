//! `RootLock`: one Engine per root. An exclusive flock on `ROOT/lock` held for the Engine's
//! lifetime; the file records the holder's pid so a second opener can name it.

use crate::error::{Error, IoContext, Result};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// How long a lock held by this same process is retried (see [`RootLock::acquire`]).
pub const OWN_RELEASE_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Holds the root's exclusive lock until dropped (the kernel releases it if the process dies).
#[derive(Debug)]
pub struct RootLock {
    _file: File,
    path: PathBuf,
}

impl RootLock {
    /// Takes the lock of `root` or fails with [`Error::RootInUse`] naming the holder's pid. A
    /// lock held by this process is retried for [`OWN_RELEASE_WAIT`] first (a dropped engine's
    /// lock outlives it while a forked child has not exec'd yet); a live engine of this process
    /// on the same root is still refused, after that wait.
    pub fn acquire(root: &Path) -> Result<RootLock> {
        let path = root.join("lock");
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .with_path("open root lock", &path)?;
        // An engine of this process that was just dropped may still hold the lock for a moment:
        // a child forked by another thread (a container runtime, a helper process) shares the
        // lock's open file until it execs. That window is short and bounded, so only when the
        // holder is this very process, the lock is retried for up to OWN_RELEASE_WAIT.
        let deadline = std::time::Instant::now() + OWN_RELEASE_WAIT;
        loop {
            match file.try_lock() {
                Ok(()) => break,
                Err(std::fs::TryLockError::WouldBlock) => {
                    let mut s = String::new();
                    let _ = file.seek(SeekFrom::Start(0));
                    let _ = file.read_to_string(&mut s);
                    let pid = s.trim().parse().unwrap_or(0);
                    if pid != std::process::id() || std::time::Instant::now() >= deadline {
                        return Err(Error::RootInUse { root: root.to_path_buf(), pid });
                    }
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
                Err(std::fs::TryLockError::Error(e)) => return Err(Error::io("lock root", &path, e)),
            }
        }
        file.set_len(0).with_path("write root lock", &path)?;
        file.seek(SeekFrom::Start(0)).with_path("write root lock", &path)?;
        write!(file, "{}", std::process::id()).with_path("write root lock", &path)?;
        file.sync_all().with_path("write root lock", &path)?;
        Ok(RootLock { _file: file, path })
    }

    /// The lock file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    #[test]
    fn second_opener_is_refused_with_pid() {
        let dir = tempfile::tempdir().unwrap();
        let _a = RootLock::acquire(dir.path()).unwrap();
        let err = RootLock::acquire(dir.path()).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::RootInUse);
        assert!(err.to_string().contains(&format!("in use by pid {}", std::process::id())), "{err}");
        drop(_a);
        RootLock::acquire(dir.path()).unwrap();
    }
}
