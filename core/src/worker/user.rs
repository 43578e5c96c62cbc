//! Resolving a process user spec (`""`, `name`, `uid`, `uid:gid`, `name:group`, ...) to numeric ids
//! from the container's own `/etc/passwd` and `/etc/group`, with the same rules as BuildKit (which
//! uses libcontainer's `GetExecUser`).

use std::path::Path;

use crate::error::{Error, ErrorKind, IoContext, Result};
use crate::worker::rootpath::resolve_in_root;

/// One `/etc/passwd` entry (the fields kiln needs).
struct PasswdEntry {
    name: String,
    uid: u32,
    gid: u32,
}

/// One `/etc/group` entry.
struct GroupEntry {
    name: String,
    gid: u32,
    members: Vec<String>,
}

/// Reads a file of the rootfs; a missing file reads as empty (scratch images have none).
fn read_rootfs_file(rootfs: &Path, path: &str) -> Result<String> {
    let host = resolve_in_root(rootfs, Path::new(path)).with_path("resolving in rootfs", rootfs.join(&path[1..]))?;
    match std::fs::read(&host) {
        Ok(bytes) => Ok(String::from_utf8_lossy(&bytes).into_owned()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
        Err(e) => Err(Error::io("reading", host, e)),
    }
}

/// Parses passwd lines `name:pw:uid:gid:gecos:home:shell`, skipping malformed lines and comments.
fn parse_passwd(text: &str) -> Vec<PasswdEntry> {
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            if f.len() < 4 {
                return None;
            }
            Some(PasswdEntry { name: f[0].to_owned(), uid: f[2].trim().parse().ok()?, gid: f[3].trim().parse().ok()? })
        })
        .collect()
}

/// Parses group lines `name:pw:gid:member,member`, skipping malformed lines and comments.
fn parse_group(text: &str) -> Vec<GroupEntry> {
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            if f.len() < 3 {
                return None;
            }
            let members = f
                .get(3)
                .map(|m| m.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect())
                .unwrap_or_default();
            Some(GroupEntry { name: f[0].to_owned(), gid: f[2].trim().parse().ok()?, members })
        })
        .collect()
}

fn user_error(user: &str, why: impl std::fmt::Display) -> Error {
    Error::new(
        ErrorKind::Worker,
        format!(
            "unable to resolve user {user:?}: {why} (accepted: \"\", \"name\", \"uid\", \"uid:gid\", \"name:group\" \
             with names from the image's /etc/passwd and /etc/group)"
        ),
    )
}

/// Resolves `user` against `rootfs`'s `/etc/passwd` and `/etc/group`.
///
/// Returns `(uid, gid, additional gids)`. `""` is root (0:0); a numeric `uid:gid` needs no files; a
/// numeric uid alone takes its primary gid from passwd when listed (else 0). Supplementary groups are
/// those listing the matched user name, and only when no group was given. An unknown user or
/// group name is an error naming it.
pub fn resolve_user(rootfs: &Path, user: &str) -> Result<(u32, u32, Vec<u32>)> {
    if user.is_empty() {
        return Ok((0, 0, Vec::new()));
    }
    let (user_part, group_part) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    if user_part.is_empty() {
        return Err(user_error(user, "the user part is empty"));
    }
    if group_part == Some("") {
        return Err(user_error(user, "the group part after ':' is empty"));
    }
    let numeric_uid: Option<u32> = user_part.parse().ok();
    let numeric_gid: Option<u32> = group_part.and_then(|g| g.parse().ok());
    if let (Some(uid), Some(gid)) = (numeric_uid, numeric_gid) {
        return Ok((uid, gid, Vec::new()));
    }

    let passwd = parse_passwd(&read_rootfs_file(rootfs, "/etc/passwd")?);
    let entry = match numeric_uid {
        Some(uid) => passwd.iter().find(|e| e.uid == uid),
        None => passwd.iter().find(|e| e.name == user_part),
    };
    let (uid, mut gid, matched_name) = match (entry, numeric_uid) {
        (Some(e), _) => (e.uid, e.gid, Some(e.name.clone())),
        (None, Some(uid)) => (uid, 0, None),
        (None, None) => return Err(user_error(user, format!("no user named {user_part:?} in /etc/passwd"))),
    };

    let mut additional = Vec::new();
    match (group_part, numeric_gid) {
        (Some(_), Some(numeric)) => gid = numeric,
        (Some(group), None) => {
            let groups = parse_group(&read_rootfs_file(rootfs, "/etc/group")?);
            gid = groups
                .iter()
                .find(|g| g.name == group)
                .map(|g| g.gid)
                .ok_or_else(|| user_error(user, format!("no group named {group:?} in /etc/group")))?;
        }
        (None, _) => {
            if let Some(name) = matched_name {
                let groups = parse_group(&read_rootfs_file(rootfs, "/etc/group")?);
                for g in groups.iter().filter(|g| g.members.iter().any(|m| *m == name)) {
                    if !additional.contains(&g.gid) {
                        additional.push(g.gid);
                    }
                }
            }
        }
    }
    Ok((uid, gid, additional))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rootfs() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("etc")).unwrap();
        std::fs::write(
            dir.path().join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\n# comment\nnobody:x:65534:65534:nobody:/:/bin/false\napp:x:1001:1002::/home/app:/bin/sh\nbroken\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("etc/group"),
            "root:x:0:\nnogroup:x:65534:\napp:x:1002:\nwheel:x:10:root,app\naudio:x:29:app\n",
        )
        .unwrap();
        dir
    }

    #[test]
    fn empty_and_numeric_need_no_files() {
        let empty = tempfile::tempdir().unwrap();
        assert_eq!(resolve_user(empty.path(), "").unwrap(), (0, 0, vec![]));
        assert_eq!(resolve_user(empty.path(), "1000:1000").unwrap(), (1000, 1000, vec![]));
        assert_eq!(resolve_user(empty.path(), "1000").unwrap(), (1000, 0, vec![]));
    }

    #[test]
    fn names_resolve_with_supplementary_groups() {
        let r = rootfs();
        assert_eq!(resolve_user(r.path(), "nobody").unwrap(), (65534, 65534, vec![]));
        assert_eq!(resolve_user(r.path(), "app").unwrap(), (1001, 1002, vec![10, 29]));
        assert_eq!(resolve_user(r.path(), "1001").unwrap(), (1001, 1002, vec![10, 29]));
        assert_eq!(resolve_user(r.path(), "app:wheel").unwrap(), (1001, 10, vec![]));
        assert_eq!(resolve_user(r.path(), "app:7").unwrap(), (1001, 7, vec![]));
        assert_eq!(resolve_user(r.path(), "5:audio").unwrap(), (5, 29, vec![]));
    }

    #[test]
    fn unknown_names_are_named_in_the_error() {
        let r = rootfs();
        let e = resolve_user(r.path(), "ghost").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Worker);
        assert!(e.to_string().contains("\"ghost\""), "{e}");
        let e = resolve_user(r.path(), "app:ghosts").unwrap_err();
        assert!(e.to_string().contains("\"ghosts\""), "{e}");
        assert!(resolve_user(r.path(), ":1").is_err());
        assert!(resolve_user(r.path(), "1:").is_err());
    }
}
