//! The destination's own walk, which the receiver diffs the sender's against (fsutil's
//! `getWalkerFn(dest)` in its double walk): entries in walk order with the stats fsutil would
//! send for them.

use super::stat::{is_dir, mkstat};
use crate::error::{Error, IoContext, Result};
use crate::session::proto::fsutil::types::Stat;
use std::collections::HashMap;
use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

/// A destination entry in walk order.
pub(super) struct DestEntry {
    pub(super) st: Stat,
}

/// The destination's own walk (fsutil's `getWalkerFn(dest)`), lazy: a directory is listed only
/// when the walk moves past it, which is after its own change and before any of its children's.
pub(super) struct DestWalk {
    root: PathBuf,
    stack: Vec<(String, std::vec::IntoIter<OsString>)>,
    descend: Option<String>,
    peeked: Option<DestEntry>,
    seen: HashMap<u64, String>,
}

impl DestWalk {
    pub(super) fn new(root: PathBuf) -> DestWalk {
        DestWalk { root, stack: Vec::new(), descend: Some(String::new()), peeked: None, seen: HashMap::new() }
    }

    pub(super) fn peek(&mut self) -> Result<Option<&DestEntry>> {
        if self.peeked.is_none() {
            self.peeked = self.next_entry()?;
        }
        Ok(self.peeked.as_ref())
    }

    /// Consumes the peeked entry; a directory's contents follow it.
    pub(super) fn advance(&mut self) {
        if let Some(e) = self.peeked.take() {
            if is_dir(e.st.mode) {
                self.descend = Some(e.st.path);
            }
        }
    }

    fn next_entry(&mut self) -> Result<Option<DestEntry>> {
        if let Some(dir) = self.descend.take() {
            let host = if dir.is_empty() { self.root.clone() } else { self.root.join(&dir) };
            let mut names = Vec::new();
            match std::fs::read_dir(&host) {
                Ok(rd) => {
                    for e in rd {
                        names.push(e.with_path("file transfer: cannot list destination", &host)?.file_name());
                    }
                }
                // Removed or replaced by a change meanwhile: nothing below it any more.
                Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::ENOTDIR)) => {}
                Err(e) => return Err(Error::io("file transfer: cannot list destination", host, e)),
            }
            names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
            self.stack.push((dir, names.into_iter()));
        }
        while let Some((dir, names)) = self.stack.last_mut() {
            let Some(name) = names.next() else {
                self.stack.pop();
                continue;
            };
            let name = name.to_string_lossy();
            let rel = if dir.is_empty() { name.into_owned() } else { format!("{dir}/{name}") };
            let host = self.root.join(&rel);
            let meta = match std::fs::symlink_metadata(&host) {
                Ok(m) => m,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(Error::io("file transfer: cannot stat destination", host, e)),
            };
            let st = mkstat(&host, &rel, &meta, Some(&mut self.seen))?;
            return Ok(Some(DestEntry { st }));
        }
        Ok(None)
    }
}
