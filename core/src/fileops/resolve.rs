//! Path handling inside a container filesystem root: lexical cleaning, symlink resolution that can
//! never leave the root, and wildcard expansion of copy/rm sources.

use super::pattern::Glob;
use crate::error::{Error, ErrorKind, IoContext, Result};
use std::collections::VecDeque;
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// Symlinks followed in one resolution before giving up (Linux uses 40 per lookup; continuity 255).
const MAX_LINKS: usize = 255;

/// Resolves `path` (a path inside the container filesystem rooted at host directory `root`) to a
/// host path that is guaranteed to be inside `root`.
///
/// Symlinks are resolved component by component as the kernel would if `root` were `/`: absolute
/// targets restart at `root`, `..` clamps at `root`. Missing components are kept lexically. When
/// `follow_final` is false, a symlink in the last component is returned as is (for lstat, rm and
/// symlink creation). Every returned path is free of symlinks except, possibly, its final component.
pub fn resolve_in_root(root: &Path, path: &str, follow_final: bool) -> Result<PathBuf> {
    let mut queue: VecDeque<OsString> = split(path.as_bytes());
    let mut stack: Vec<OsString> = Vec::new();
    let mut links = 0usize;
    while let Some(comp) = queue.pop_front() {
        if comp == ".." {
            stack.pop();
            continue;
        }
        stack.push(comp);
        if queue.is_empty() && !follow_final {
            break;
        }
        let host = join(root, &stack);
        let meta = match std::fs::symlink_metadata(&host) {
            Ok(m) => m,
            // Missing (or under a non-directory): nothing there can redirect us, keep it lexical.
            Err(e) if is_missing(&e) => continue,
            Err(e) => return Err(e).with_path("resolve path: cannot stat", host),
        };
        if !meta.file_type().is_symlink() {
            continue;
        }
        links += 1;
        if links > MAX_LINKS {
            return Err(Error::new(
                ErrorKind::FileOp,
                format!("resolve {path}: too many levels of symbolic links (more than {MAX_LINKS})"),
            ));
        }
        let target = std::fs::read_link(&host).with_path("resolve path: cannot read symlink", &host)?;
        stack.pop();
        let target = target.as_os_str().as_bytes();
        if target.first() == Some(&b'/') {
            stack.clear();
        }
        for c in split(target).into_iter().rev() {
            queue.push_front(c);
        }
    }
    Ok(join(root, &stack))
}

/// True for errors meaning "this path does not exist" (including a parent being a non-directory).
pub(crate) fn is_missing(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ENOTDIR)
}

fn split(p: &[u8]) -> VecDeque<OsString> {
    p.split(|b| *b == b'/')
        .filter(|c| !c.is_empty() && *c != b".")
        .map(|c| OsStr::from_bytes(c).to_os_string())
        .collect()
}

fn join(root: &Path, comps: &[OsString]) -> PathBuf {
    let mut p = root.to_path_buf();
    p.extend(comps);
    p
}

/// Go's `filepath.Clean` of `"/" + p`: an absolute path without `.`, `..` (clamped at `/`),
/// duplicate or trailing slashes.
pub(crate) fn clean_abs(p: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            c => out.push(c),
        }
    }
    format!("/{}", out.join("/"))
}

/// BuildKit's `cleanPath`: [`clean_abs`] but keeping a trailing `/` or `/.`, which mean "into".
pub(crate) fn clean_keep_trailing(p: &str) -> String {
    let c = clean_abs(p);
    if c == "/" {
        return c;
    }
    if p.ends_with("/.") {
        format!("{c}/.")
    } else if p.ends_with('/') {
        format!("{c}/")
    } else {
        c
    }
}

/// Go's `filepath.Base` of a cleaned path (`/a/b/` → `b`, `/a/.` → `.`, `/` → `/`).
pub(crate) fn go_base(p: &str) -> &str {
    let t = p.trim_end_matches('/');
    if t.is_empty() {
        return "/";
    }
    match t.rfind('/') {
        Some(i) => &t[i + 1..],
        None => t,
    }
}

/// The container path (`/a/b`) of a host path inside `root`.
pub(crate) fn display_in_root(root: &Path, host: &Path) -> String {
    match host.strip_prefix(root) {
        Ok(rel) => format!("/{}", rel.to_string_lossy()),
        Err(_) => host.to_string_lossy().into_owned(),
    }
}

/// True when a path component holds an unescaped `*`, `?` or `[`.
fn has_wildcard(comp: &str) -> bool {
    let b = comp.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'\\' => i += 1,
            b'*' | b'?' | b'[' => return true,
            _ => {}
        }
        i += 1;
    }
    false
}

/// True when the path holds a wildcard in any component.
pub(crate) fn path_has_wildcard(p: &str) -> bool {
    p.split('/').any(has_wildcard)
}

/// Expands `filepath.Match` wildcards in a cleaned container path into the sorted list of matching
/// container paths. Components before the first wildcard are resolved following symlinks; wildcard
/// components match names of entries in real directories only (symlinks are not descended, as in
/// BuildKit's walk). A path without wildcards is returned unchanged; a missing base yields nothing.
pub(crate) fn resolve_wildcards(root: &Path, path: &str) -> Result<Vec<String>> {
    let clean = clean_abs(path);
    let comps: Vec<&str> = clean.split('/').filter(|c| !c.is_empty()).collect();
    let Some(first) = comps.iter().position(|c| has_wildcard(c)) else {
        return Ok(vec![clean]);
    };
    let base = format!("/{}", comps[..first].join("/"));
    let globs = comps[first..]
        .iter()
        .map(|c| {
            Glob::single_component(c)
                .map_err(|msg| Error::new(ErrorKind::FileOp, format!("invalid wildcard {c:?} in {path}: {msg}")))
        })
        .collect::<Result<Vec<_>>>()?;
    let base_host = resolve_in_root(root, &base, true)?;
    let mut current: Vec<(PathBuf, String)> = vec![(base_host, base.trim_end_matches('/').to_owned())];
    for (i, glob) in globs.iter().enumerate() {
        let last = i + 1 == globs.len();
        let mut next = Vec::new();
        for (dir, cpath) in &current {
            let rd = match std::fs::read_dir(dir) {
                Ok(rd) => rd,
                Err(e) if is_missing(&e) => continue,
                Err(e) => return Err(e).with_path("expand wildcard: cannot read directory", dir),
            };
            let mut names: Vec<OsString> = Vec::new();
            for ent in rd {
                names.push(ent.with_path("expand wildcard: cannot read directory", dir)?.file_name());
            }
            names.sort();
            for name in names {
                let Some(n) = name.to_str() else { continue };
                if !glob.matches(n) {
                    continue;
                }
                let host = dir.join(&name);
                if !last {
                    match std::fs::symlink_metadata(&host) {
                        Ok(m) if m.is_dir() => {}
                        _ => continue,
                    }
                }
                next.push((host, format!("{cpath}/{n}")));
            }
        }
        current = next;
    }
    Ok(current.into_iter().map(|(_, c)| c).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_like_go() {
        assert_eq!(clean_abs("a/../../b//c/."), "/b/c");
        assert_eq!(clean_abs(""), "/");
        assert_eq!(clean_keep_trailing("a/b/"), "/a/b/");
        assert_eq!(clean_keep_trailing("a/b/."), "/a/b/.");
        assert_eq!(clean_keep_trailing("/"), "/");
        assert_eq!(go_base("/a/b/"), "b");
        assert_eq!(go_base("/a/."), ".");
        assert_eq!(go_base("/"), "/");
    }

    #[test]
    fn resolves_links_inside_root() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path();
        std::fs::create_dir_all(root.join("real/sub")).unwrap();
        std::os::unix::fs::symlink("/real", root.join("abs")).unwrap();
        std::os::unix::fs::symlink("../../../..", root.join("up")).unwrap();
        std::os::unix::fs::symlink("loop2", root.join("loop1")).unwrap();
        std::os::unix::fs::symlink("loop1", root.join("loop2")).unwrap();
        assert_eq!(resolve_in_root(root, "/abs/sub", true).unwrap(), root.join("real/sub"));
        assert_eq!(resolve_in_root(root, "up/etc/passwd", true).unwrap(), root.join("etc/passwd"));
        assert_eq!(resolve_in_root(root, "/abs", false).unwrap(), root.join("abs"));
        assert_eq!(resolve_in_root(root, "/missing/../abs/x", true).unwrap(), root.join("real/x"));
        assert!(resolve_in_root(root, "/loop1", true).is_err());
        assert_eq!(resolve_in_root(root, "/loop1", false).unwrap(), root.join("loop1"));
    }

    #[test]
    fn wildcard_detection() {
        assert!(path_has_wildcard("/a/*.txt"));
        assert!(!path_has_wildcard("/a/\\*.txt"));
        assert!(path_has_wildcard("/a/[ab]"));
    }
}
