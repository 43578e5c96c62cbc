//! The `git://` source: resolves a branch, tag or sha of a repository to a commit and checks that
//! commit out into a directory, through the `git` CLI (run directly, never through a shell).
//!
//! Fetched objects live in one bare cache repository per remote under the caller's cache
//! directory, so later builds of the same remote fetch only what is new. Checkouts use a private
//! index file, so concurrent checkouts from one cache repository do not disturb each other.

use crate::digest::Digest;
use crate::error::{Error, ErrorKind, IoContext, Result};
use std::ffi::OsStr;
use std::path::Path;
use std::process::{Command, Stdio};

/// Which commit of which repository to check out, and how.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GitFetch {
    /// Repository URL (`https://`, `ssh://`, `git://`, `file://`, `user@host:path`) or absolute path.
    pub remote: String,
    /// Branch, tag, `refs/...` name or full commit sha; empty means the remote's HEAD.
    pub reference: String,
    /// Keep a `.git` directory in the checkout (HEAD detached at the commit, `origin` = remote).
    pub keep_git_dir: bool,
    /// Check out only this directory of the commit, as the root of the result.
    pub subdir: Option<String>,
}

/// Resolves the reference to a commit sha without checking anything out: a full sha is taken as
/// is; otherwise `git ls-remote` is asked, preferring tags over branches like `git rev-parse`
/// does, and peeling annotated tags to their commit.
pub fn resolve_git_ref(g: &GitFetch) -> Result<String> {
    validate_remote(&g.remote)?;
    let reference = g.reference.trim();
    if is_full_sha(reference) {
        return Ok(reference.to_ascii_lowercase());
    }
    // Candidate ref names in priority order; the peeled `^{}` entry of an annotated tag names
    // its commit, the unpeeled one names the tag object.
    let candidates: Vec<String> = if reference.is_empty() || reference == "HEAD" {
        vec!["HEAD".to_owned()]
    } else if reference.starts_with("refs/") {
        vec![format!("{reference}^{{}}"), reference.to_owned()]
    } else {
        vec![format!("refs/tags/{reference}^{{}}"), format!("refs/tags/{reference}"), format!("refs/heads/{reference}")]
    };
    let pattern = if reference.is_empty() { "HEAD" } else { reference };
    let peeled = format!("{pattern}^{{}}");
    let out = Git::new()
        .args(["ls-remote", "--", g.remote.as_str(), pattern, peeled.as_str()])
        .run()
        .map_err(|e| e.context(format!("resolving ref {:?} of git remote {}", display_ref(reference), g.remote)))?;
    let listed: Vec<(&str, &str)> = out.lines().filter_map(|l| l.split_once('\t')).collect();
    for want in &candidates {
        if let Some((sha, _)) = listed.iter().find(|(_, name)| name == want) {
            if is_full_sha(sha) {
                tracing::debug!(remote = %g.remote, reference, sha, "git source: resolved");
                return Ok(sha.to_ascii_lowercase());
            }
        }
    }
    Err(Error::new(
        ErrorKind::Source,
        format!(
            "git remote {} has no ref {:?}: expected a branch, a tag, a refs/... name or a full commit sha",
            g.remote,
            display_ref(reference)
        ),
    ))
}

/// Checks out commit `sha` of `g.remote` into `dest_root`, which must be an empty directory.
///
/// Objects are fetched into a bare cache repository under `cache_dir` keyed by the remote (only
/// the one commit, `--depth 1`; a full fetch if the server refuses a fetch by sha), then the
/// commit's tree (or `g.subdir` of it) is written into `dest_root`. `.git` is created only when
/// `g.keep_git_dir` is set.
pub fn fetch_git(g: &GitFetch, sha: &str, cache_dir: &Path, dest_root: &Path) -> Result<()> {
    fetch_git_with(&Git::new(), g, sha, cache_dir, dest_root)
}

fn fetch_git_with(git: &Git, g: &GitFetch, sha: &str, cache_dir: &Path, dest_root: &Path) -> Result<()> {
    validate_remote(&g.remote)?;
    if !is_full_sha(sha) {
        return Err(Error::new(
            ErrorKind::Source,
            format!("cannot fetch {sha:?} of git remote {}: expected a full commit sha", g.remote),
        ));
    }
    let sha = sha.to_ascii_lowercase();
    let subdir = normalize_subdir(g.subdir.as_deref())?;
    if subdir.is_some() && g.keep_git_dir {
        return Err(Error::new(
            ErrorKind::Unsupported,
            format!("git remote {}: keeping the .git directory cannot be combined with a subdir", g.remote),
        ));
    }
    let mut entries = std::fs::read_dir(dest_root).with_path("read git checkout destination", dest_root)?;
    if entries.next().is_some() {
        return Err(Error::new(
            ErrorKind::Source,
            format!("git checkout destination {} is not empty; expected an empty directory", dest_root.display()),
        ));
    }

    std::fs::create_dir_all(cache_dir).with_path("create git cache directory", cache_dir)?;
    let bare = cache_dir.join(Digest::of(g.remote.as_bytes()).hex());
    {
        // One fetch per cache repository at a time; the lock is released when the file drops.
        let lock_path = bare.with_extension("lock");
        let lock = std::fs::File::create(&lock_path).with_path("create git cache lock", &lock_path)?;
        lock.lock().with_path("lock git cache", &lock_path)?;
        ensure_commit(git, &bare, g, &sha)?;
    }

    if g.keep_git_dir {
        checkout_with_git_dir(git, &bare, g, &sha, dest_root)
    } else {
        checkout_tree(git, &bare, g, &sha, subdir.as_deref(), cache_dir, dest_root)
    }
}

/// Makes sure commit `sha` is in the bare cache repository, fetching it if needed, and pins it
/// with a ref so garbage collection keeps it.
fn ensure_commit(git: &Git, bare: &Path, g: &GitFetch, sha: &str) -> Result<()> {
    let ctx = |e: Error| e.context(format!("fetching ref {:?} of git remote {}", display_ref(&g.reference), g.remote));
    if !bare.join("HEAD").exists() {
        git.clone().args(["init", "--quiet", "--bare"]).arg(bare).run().map_err(ctx)?;
    }
    let pin = format!("refs/kiln/{sha}");
    let gd = GitDir(bare);
    if has_commit(git, &gd, sha) {
        return git.clone().git_dir(&gd).args(["update-ref", pin.as_str(), sha]).run().map(drop).map_err(ctx);
    }
    let refspec = format!("{sha}:{pin}");
    let by_sha = git
        .clone()
        .git_dir(&gd)
        .args(["fetch", "--quiet", "--no-tags", "--depth", "1", "--", g.remote.as_str(), refspec.as_str()])
        .run();
    match by_sha {
        Ok(_) if has_commit(git, &gd, sha) => return Ok(()),
        Ok(_) => tracing::info!(remote = %g.remote, sha, "git source: fetch by sha gave no commit; fetching all refs"),
        Err(e) => {
            tracing::info!(remote = %g.remote, sha, error = %e, "git source: fetch by sha refused; fetching all refs")
        }
    }
    let mut full = git.clone().git_dir(&gd).args(["fetch", "--quiet", "--no-tags"]);
    if bare.join("shallow").exists() {
        full = full.arg("--unshallow");
    }
    full.args([
        "--",
        g.remote.as_str(),
        "+refs/heads/*:refs/kiln-remote/heads/*",
        "+refs/tags/*:refs/kiln-remote/tags/*",
    ])
    .run()
    .map_err(ctx)?;
    if !has_commit(git, &gd, sha) {
        return Err(Error::new(
            ErrorKind::Source,
            format!(
                "git remote {} does not contain commit {sha} (ref {:?}); was the ref rewritten?",
                g.remote,
                display_ref(&g.reference)
            ),
        ));
    }
    git.clone().git_dir(&gd).args(["update-ref", pin.as_str(), sha]).run().map(drop).map_err(ctx)
}

/// Writes the tree of `sha` (or of `sha:subdir`) into `dest_root` through a private index file.
fn checkout_tree(
    git: &Git,
    bare: &Path,
    g: &GitFetch,
    sha: &str,
    subdir: Option<&str>,
    cache_dir: &Path,
    dest_root: &Path,
) -> Result<()> {
    let gd = GitDir(bare);
    let treeish = match subdir {
        Some(sub) => {
            let t = format!("{sha}:{sub}");
            let kind = git.clone().git_dir(&gd).args(["cat-file", "-t", t.as_str()]).run();
            if !matches!(kind.as_deref().map(str::trim), Ok("tree")) {
                return Err(Error::new(
                    ErrorKind::Source,
                    format!("git remote {} commit {sha} has no directory {sub:?} (the requested subdir)", g.remote),
                ));
            }
            t
        }
        None => sha.to_owned(),
    };
    let scratch = tempfile::Builder::new()
        .prefix(".kiln-index-")
        .tempdir_in(cache_dir)
        .with_path("create temporary git index directory in", cache_dir)?;
    let index = scratch.path().join("index");
    let ctx = |e: Error| e.context(format!("checking out commit {sha} of git remote {}", g.remote));
    git.clone()
        .git_dir(&gd)
        .env("GIT_INDEX_FILE", &index)
        .arg("--work-tree")
        .arg(dest_root)
        .args(["read-tree", treeish.as_str()])
        .run()
        .map_err(ctx)?;
    git.clone()
        .git_dir(&gd)
        .env("GIT_INDEX_FILE", &index)
        .arg("--work-tree")
        .arg(dest_root)
        .args(["checkout-index", "--all", "--force"])
        .run()
        .map_err(ctx)?;
    tracing::debug!(remote = %g.remote, sha, dest = %dest_root.display(), "git source: checked out");
    Ok(())
}

/// Makes `dest_root` a repository of its own holding commit `sha` checked out (detached HEAD),
/// with `origin` pointing at the remote.
fn checkout_with_git_dir(git: &Git, bare: &Path, g: &GitFetch, sha: &str, dest_root: &Path) -> Result<()> {
    let ctx = |e: Error| e.context(format!("checking out commit {sha} of git remote {}", g.remote));
    git.clone().args(["init", "--quiet"]).arg(dest_root).run().map_err(ctx)?;
    let in_dest = || git.clone().arg("-C").arg(dest_root);
    in_dest().args(["fetch", "--quiet", "--no-tags", "--depth", "1", "--"]).arg(bare).arg(sha).run().map_err(ctx)?;
    in_dest().args(["checkout", "--quiet", "--detach", sha]).run().map_err(ctx)?;
    in_dest().args(["remote", "add", "origin", g.remote.as_str()]).run().map_err(ctx)?;
    tracing::debug!(remote = %g.remote, sha, dest = %dest_root.display(), "git source: checked out with .git");
    Ok(())
}

fn has_commit(git: &Git, gd: &GitDir<'_>, sha: &str) -> bool {
    let spec = format!("{sha}^{{commit}}");
    git.clone().git_dir(gd).args(["cat-file", "-e", spec.as_str()]).run().is_ok()
}

/// A repository path passed as `--git-dir`.
struct GitDir<'a>(&'a Path);

/// One `git` invocation: arguments, extra environment, and `-c` settings shared by every call.
#[derive(Clone)]
struct Git {
    config: Vec<String>,
    args: Vec<std::ffi::OsString>,
    env: Vec<(String, std::ffi::OsString)>,
}

impl Git {
    fn new() -> Git {
        Git {
            // Deterministic checkouts whatever the user's configuration says.
            config: vec!["core.autocrlf=false".into(), "advice.detachedHead=false".into()],
            args: Vec::new(),
            env: Vec::new(),
        }
    }

    fn arg(mut self, a: impl AsRef<OsStr>) -> Git {
        self.args.push(a.as_ref().to_owned());
        self
    }

    fn args<I: IntoIterator<Item = S>, S: AsRef<OsStr>>(mut self, a: I) -> Git {
        self.args.extend(a.into_iter().map(|s| s.as_ref().to_owned()));
        self
    }

    fn git_dir(self, gd: &GitDir<'_>) -> Git {
        self.arg("--git-dir").arg(gd.0)
    }

    fn env(mut self, k: &str, v: impl AsRef<OsStr>) -> Git {
        self.env.push((k.to_owned(), v.as_ref().to_owned()));
        self
    }

    /// Runs git, returning stdout; a failure carries the command and git's stderr.
    fn run(&self) -> Result<String> {
        let mut cmd = Command::new("git");
        for c in &self.config {
            cmd.arg("-c").arg(c);
        }
        cmd.args(&self.args);
        // Inherited repository variables (kiln run from a git hook) would redirect every command.
        for var in [
            "GIT_DIR",
            "GIT_WORK_TREE",
            "GIT_INDEX_FILE",
            "GIT_OBJECT_DIRECTORY",
            "GIT_ALTERNATE_OBJECT_DIRECTORIES",
            "GIT_NAMESPACE",
            "GIT_COMMON_DIR",
        ] {
            cmd.env_remove(var);
        }
        // Never wait on a credential prompt: there is no terminal to answer it.
        cmd.env("GIT_TERMINAL_PROMPT", "0");
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd.stdin(Stdio::null());
        let shown = self.args.iter().map(|a| a.to_string_lossy()).collect::<Vec<_>>().join(" ");
        let out = cmd.output().map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                Error::new(ErrorKind::Source, "the git CLI was not found in PATH; git sources need `git` installed")
            } else {
                Error::with_source(ErrorKind::Source, format!("could not run git {shown}"), e)
            }
        })?;
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            return Err(Error::new(
                ErrorKind::Source,
                format!("git {shown} failed ({}): {}", out.status, stderr.trim()),
            ));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

/// A remote must be a URL, an scp-like `host:path`, or an absolute path; never an option.
fn validate_remote(remote: &str) -> Result<()> {
    let ok = !remote.is_empty()
        && !remote.starts_with('-')
        && !remote.contains('\0')
        && (remote.contains("://") || remote.starts_with('/') || is_scp_like(remote));
    if ok {
        Ok(())
    } else {
        Err(Error::new(
            ErrorKind::Source,
            format!(
                "invalid git remote {remote:?}: expected a URL (https://, ssh://, git://, file://), \
                 user@host:path, or an absolute path"
            ),
        ))
    }
}

fn is_scp_like(remote: &str) -> bool {
    match remote.split_once(':') {
        Some((host, path)) => !host.is_empty() && !host.contains('/') && !path.is_empty(),
        None => false,
    }
}

/// A full sha-1 (40) or sha-256 (64) object name.
fn is_full_sha(s: &str) -> bool {
    (s.len() == 40 || s.len() == 64) && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Trims slashes and `./`; rejects `..` so the subdir stays inside the commit.
fn normalize_subdir(sub: Option<&str>) -> Result<Option<String>> {
    let Some(sub) = sub else { return Ok(None) };
    let parts: Vec<&str> = sub.split('/').filter(|p| !p.is_empty() && *p != ".").collect();
    if parts.contains(&"..") || sub.contains('\0') {
        return Err(Error::option("subdir", sub, "a path inside the repository without '..'"));
    }
    Ok(if parts.is_empty() { None } else { Some(parts.join("/")) })
}

fn display_ref(reference: &str) -> &str {
    if reference.is_empty() {
        "HEAD"
    } else {
        reference
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh_git(dir: &Path, args: &[&str]) -> String {
        let out = Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(["-c", "user.name=kiln", "-c", "user.email=kiln@example.invalid", "-c", "init.defaultBranch=main"])
            .args(args)
            .output()
            .expect("git runs");
        assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    }

    #[test]
    fn remote_validation() {
        for ok in ["https://h/r.git", "file:///tmp/r", "/abs/path", "git@github.com:o/r.git"] {
            assert!(validate_remote(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-uhoh", "relative/path", "--upload-pack=x"] {
            let e = validate_remote(bad).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Source);
        }
    }

    #[test]
    fn subdir_normalization() {
        assert_eq!(normalize_subdir(None).unwrap(), None);
        assert_eq!(normalize_subdir(Some("/a/b/")).unwrap().as_deref(), Some("a/b"));
        assert_eq!(normalize_subdir(Some("./a")).unwrap().as_deref(), Some("a"));
        assert_eq!(normalize_subdir(Some("/")).unwrap(), None);
        assert!(normalize_subdir(Some("a/../../b")).is_err());
    }

    #[test]
    fn sha_shapes() {
        assert!(is_full_sha(&"a".repeat(40)));
        assert!(is_full_sha(&"A".repeat(64)));
        assert!(!is_full_sha("abc123"));
        assert!(!is_full_sha(&"g".repeat(40)));
    }

    /// With protocol v0 a server refuses a non-tip sha; the full-fetch fallback must get it.
    #[test]
    fn fetch_falls_back_when_sha_fetch_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let repo = tmp.path().join("repo");
        std::fs::create_dir(&repo).unwrap();
        sh_git(&repo, &["init", "-q"]);
        std::fs::write(repo.join("f"), "one").unwrap();
        sh_git(&repo, &["add", "f"]);
        sh_git(&repo, &["commit", "-qm", "one"]);
        let first = sh_git(&repo, &["rev-parse", "HEAD"]);
        std::fs::write(repo.join("f"), "two").unwrap();
        sh_git(&repo, &["commit", "-qam", "two"]);

        let mut git = Git::new();
        git.config.push("protocol.version=0".into());
        let g = GitFetch { remote: format!("file://{}", repo.display()), ..Default::default() };
        let dest = tmp.path().join("dest");
        std::fs::create_dir(&dest).unwrap();
        fetch_git_with(&git, &g, &first, &tmp.path().join("cache"), &dest).unwrap();
        assert_eq!(std::fs::read_to_string(dest.join("f")).unwrap(), "one");
    }
}
