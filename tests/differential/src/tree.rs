//! A tar stream as a tree: normalised path → what a result can differ in.

use sha2::{Digest as _, Sha256};
use std::collections::BTreeMap;
use std::io::Read;

/// One tar entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// `file`, `dir`, `symlink`, `hardlink`, or the raw type byte.
    pub kind: String,
    /// The raw header mode field (file-type bits included when a writer put them there).
    pub mode: u32,
    /// Owner.
    pub uid: u64,
    /// Group.
    pub gid: u64,
    /// Header size.
    pub size: u64,
    /// sha256 of the content (empty for non-regular entries).
    pub sha256: String,
    /// Symlink or hardlink target (hardlink targets normalised like paths).
    pub link: String,
    /// Header mtime (seconds).
    pub mtime: u64,
    /// How many entries of the stream had this path.
    pub count: usize,
}

/// Normalises `./a`, `/a`, `a/` to `a`; the root is `.`.
pub fn norm(p: &str) -> String {
    let mut s = p;
    loop {
        if let Some(r) = s.strip_prefix("./") {
            s = r;
        } else if let Some(r) = s.strip_prefix('/') {
            s = r;
        } else {
            break;
        }
    }
    let s = s.trim_end_matches('/');
    if s.is_empty() || s == "." {
        ".".to_owned()
    } else {
        s.to_owned()
    }
}

/// Parses a tar stream.
pub fn parse(bytes: &[u8]) -> Result<BTreeMap<String, Entry>, String> {
    let mut out: BTreeMap<String, Entry> = BTreeMap::new();
    let mut ar = tar::Archive::new(bytes);
    for e in ar.entries().map_err(|e| e.to_string())? {
        let mut e = e.map_err(|e| e.to_string())?;
        let path = norm(&String::from_utf8_lossy(&e.path_bytes()));
        let h = e.header().clone();
        let ty = h.entry_type();
        let kind = match ty {
            tar::EntryType::Regular | tar::EntryType::Continuous => "file".to_owned(),
            tar::EntryType::Directory => "dir".to_owned(),
            tar::EntryType::Symlink => "symlink".to_owned(),
            tar::EntryType::Link => "hardlink".to_owned(),
            other => format!("type {:?}", other.as_byte() as char),
        };
        let link = match e.link_name_bytes() {
            Some(l) if ty == tar::EntryType::Link => norm(&String::from_utf8_lossy(&l)),
            Some(l) => String::from_utf8_lossy(&l).into_owned(),
            None => String::new(),
        };
        let mut sha256 = String::new();
        if kind == "file" {
            let mut hasher = Sha256::new();
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let n = e.read(&mut buf).map_err(|e| format!("{path}: {e}"))?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
            }
            sha256 = hex::encode(hasher.finalize());
        }
        let count = out.get(&path).map(|p| p.count + 1).unwrap_or(1);
        let entry = Entry {
            kind,
            mode: h.mode().map_err(|e| format!("{path}: mode: {e}"))?,
            uid: h.uid().map_err(|e| format!("{path}: uid: {e}"))?,
            gid: h.gid().map_err(|e| format!("{path}: gid: {e}"))?,
            size: h.size().map_err(|e| format!("{path}: size: {e}"))?,
            sha256,
            link,
            mtime: h.mtime().map_err(|e| format!("{path}: mtime: {e}"))?,
            count,
        };
        out.insert(path, entry);
    }
    Ok(out)
}

/// Differences, one line each: `path: field kiln=X buildkit=Y`; the same field difference on
/// more than 4 paths is summarised on one line (count and the first paths).
pub fn diff(kiln: &BTreeMap<String, Entry>, bk: &BTreeMap<String, Entry>, mtime: &[&str]) -> Vec<String> {
    let lines = diff_lines(kiln, bk, mtime);
    let mut groups: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut order = Vec::new();
    for l in &lines {
        let key = match l.split_once(": ") {
            Some((p, rest)) if rest.contains(" kiln=") => Some((p.to_owned(), rest.to_owned())),
            _ => None,
        };
        match key {
            Some((p, rest)) => {
                if !groups.contains_key(&rest) {
                    order.push(rest.clone());
                }
                groups.entry(rest).or_default().push(p);
            }
            None => order.push(l.clone()),
        }
    }
    let mut out = Vec::new();
    for k in order {
        match groups.get(&k) {
            Some(paths) if paths.len() > 4 => out.push(format!(
                "{} paths ({}, ...): {k}",
                paths.len(),
                paths.iter().take(3).cloned().collect::<Vec<_>>().join(", ")
            )),
            Some(paths) => out.extend(paths.iter().map(|p| format!("{p}: {k}"))),
            None => out.push(k),
        }
    }
    out
}

fn diff_lines(kiln: &BTreeMap<String, Entry>, bk: &BTreeMap<String, Entry>, mtime: &[&str]) -> Vec<String> {
    let mut out = Vec::new();
    let all_mtimes = mtime.contains(&"*");
    let mut paths: Vec<&String> = kiln.keys().chain(bk.keys()).collect();
    paths.sort();
    paths.dedup();
    for p in paths {
        match (kiln.get(p), bk.get(p)) {
            (Some(k), None) => out.push(format!("{p}: only in kiln ({} {:o})", k.kind, k.mode)),
            (None, Some(b)) => out.push(format!("{p}: only in buildkit ({} {:o})", b.kind, b.mode)),
            (Some(k), Some(b)) => {
                let mut field = |name: &str, kv: String, bv: String| {
                    if kv != bv {
                        out.push(format!("{p}: {name} kiln={kv} buildkit={bv}"));
                    }
                };
                field("type", k.kind.clone(), b.kind.clone());
                field("mode", format!("{:o}", k.mode), format!("{:o}", b.mode));
                field("uid", k.uid.to_string(), b.uid.to_string());
                field("gid", k.gid.to_string(), b.gid.to_string());
                field("size", k.size.to_string(), b.size.to_string());
                field("sha256", k.sha256.clone(), b.sha256.clone());
                field("link", k.link.clone(), b.link.clone());
                field("entries", k.count.to_string(), b.count.to_string());
                if all_mtimes || mtime.iter().any(|m| norm(m) == *p) {
                    field("mtime", k.mtime.to_string(), b.mtime.to_string());
                }
            }
            (None, None) => {}
        }
    }
    out
}
