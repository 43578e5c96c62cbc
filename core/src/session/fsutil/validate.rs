//! What the receiver checks of the sender's walk before touching the disk, as fsutil's
//! `Validator` and `Hardlinks` do: every path clean, relative and inside the destination,
//! strictly in walk order with its parent directory sent before it (so a path can never lead
//! through a symlink or a non-directory), and every hardlink naming a file sent before it.

use crate::error::{Error, ErrorKind, Result};
use crate::session::proto::fsutil::types::Stat;
use std::cmp::Ordering;
use std::collections::HashSet;

/// fsutil's `ComparePath`: byte order where `/` sorts before every other byte, which is the
/// order of a walk that visits a directory's contents right after it (`a`, `a/b`, `a.b`).
pub fn compare_path(p1: &str, p2: &str) -> Ordering {
    let (a, b) = (p1.as_bytes(), p2.as_bytes());
    for (x, y) in a.iter().zip(b) {
        if x == y {
            continue;
        }
        return if *x == b'/' || (*y != b'/' && x < y) { Ordering::Less } else { Ordering::Greater };
    }
    a.len().cmp(&b.len())
}

fn invalid(path: &str, why: &str) -> Error {
    Error::new(ErrorKind::Source, format!("file transfer: refusing path {path:?} from the sender: {why}"))
}

/// Checks a path as fsutil's validator does (`path.Clean(p) == p`, not absolute, no `..`),
/// stricter in refusing every `.`/`..`/empty component and NUL bytes.
pub fn check_rel_path(p: &str) -> Result<()> {
    if p.is_empty() {
        return Err(invalid(p, "empty path"));
    }
    if p.starts_with('/') {
        return Err(invalid(p, "absolute path"));
    }
    if p.contains('\0') {
        return Err(invalid(p, "NUL byte in path"));
    }
    for c in p.split('/') {
        match c {
            "" | "." => return Err(invalid(p, "unclean path")),
            ".." => return Err(invalid(p, "path escapes the destination")),
            _ => {}
        }
    }
    Ok(())
}

#[derive(Debug)]
struct Parent {
    dir: String,
    last: String,
}

/// fsutil's `Validator` (walk order, parents first) and `Hardlinks` (link targets sent first).
#[derive(Debug)]
pub struct WalkValidator {
    parents: Vec<Parent>,
    files: HashSet<String>,
}

impl Default for WalkValidator {
    fn default() -> Self {
        WalkValidator { parents: vec![Parent { dir: String::new(), last: String::new() }], files: HashSet::new() }
    }
}

impl WalkValidator {
    /// Accepts the next stat of the walk, or says why it cannot be applied.
    pub fn check(&mut self, st: &Stat) -> Result<()> {
        let p = st.path.as_str();
        check_rel_path(p)?;
        let (dir, base) = match p.rfind('/') {
            Some(i) => (&p[..i], &p[i + 1..]),
            None => ("", p),
        };
        // Pop back to the deepest recorded directory that sorts at or before `dir`.
        while self.parents.len() > 1
            && compare_path(&self.parents[self.parents.len() - 1].dir, dir) == Ordering::Greater
        {
            self.parents.pop();
        }
        let Some(top) = self.parents.last_mut() else {
            return Err(Error::new(ErrorKind::Internal, "file transfer: walk validator lost its root"));
        };
        if top.dir != dir || top.last.as_str() >= base {
            return Err(invalid(
                p,
                "out of walk order, or its parent directory was not sent before it (a path may not lead through a symlink or a file)",
            ));
        }
        top.last = base.to_owned();
        let mode = st.mode;
        if super::stat::is_dir(mode) {
            self.parents.push(Parent { dir: p.to_owned(), last: String::new() });
        } else if mode & super::stat::MODE_SYMLINK == 0 {
            if st.linkname.is_empty() {
                self.files.insert(p.to_owned());
            } else if !self.files.contains(&st.linkname) {
                return Err(invalid(p, &format!("hardlink to {:?}, which was not sent before it", st.linkname)));
            }
        }
        Ok(())
    }
}
