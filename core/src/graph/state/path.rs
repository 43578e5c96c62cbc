//! Path normalisation as BuildKit's Go client does it (`path.Clean`, `normalizePath`), shared by
//! `with_cwd`, `run`'s cwd and the file actions.

/// Go's `path.Clean` for slash paths.
pub fn clean(p: &str) -> String {
    let rooted = p.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for seg in p.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                if parts.last().is_some_and(|l| *l != "..") {
                    parts.pop();
                } else if !rooted {
                    parts.push("..");
                }
            }
            s => parts.push(s),
        }
    }
    let joined = parts.join("/");
    match (rooted, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".to_owned(),
        (false, false) => joined,
    }
}

/// BuildKit's `normalizePath`: relative paths join `parent`; `keep_slash` preserves a trailing
/// `/` or `/.` (meaningful for copy destinations).
pub(super) fn normalize_path(parent: &str, p: &str, keep_slash: bool) -> String {
    let mut out = clean(p);
    if !out.starts_with('/') {
        out = clean(&format!("/{parent}/{out}"));
    }
    if keep_slash {
        if p.ends_with('/') && !out.ends_with('/') {
            out.push('/');
        } else if p.ends_with("/.") {
            if out != "/" {
                out.push('/');
            }
            out.push('.');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_matches_go() {
        assert_eq!(clean("a/../b"), "b");
        assert_eq!(clean("/../a//b/."), "/a/b");
        assert_eq!(clean(""), ".");
        assert_eq!(clean("../x"), "../x");
        assert_eq!(normalize_path("/work", "out/", true), "/work/out/");
        assert_eq!(normalize_path("/", "/a/.", true), "/a/.");
        assert_eq!(normalize_path("/w", "x/..", false), "/w");
    }
}
