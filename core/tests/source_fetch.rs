//! Integration tests of the http and git sources against a local HTTP server (in a thread, on
//! 127.0.0.1) and local repositories made with the real `git` CLI.

use kiln::digest::Digest;
use kiln::error::ErrorKind;
use kiln::source::git::{fetch_git, resolve_git_ref, GitFetch};
use kiln::source::http::{fetch_http, http_cache_key, HttpFetch};
use std::cell::RefCell;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;
use std::time::UNIX_EPOCH;

// ---------------------------------------------------------------------------------------------
// HTTP

const HELLO: &[u8] = b"hello world\n";
const LAST_MODIFIED: &str = "Sun, 06 Nov 1994 08:49:37 GMT";
const LAST_MODIFIED_SECS: u64 = 784_111_777;

fn big_body() -> Vec<u8> {
    (0..(1u32 << 20)).map(|i| (i % 251) as u8).collect()
}

/// Starts a tiny HTTP/1.1 server answering fixed routes; returns its base URL.
fn serve() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request_line = String::new();
            if reader.read_line(&mut request_line).is_err() {
                continue;
            }
            loop {
                let mut line = String::new();
                match reader.read_line(&mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) if line == "\r\n" => break,
                    Ok(_) => {}
                }
            }
            let path = request_line.split(' ').nth(1).unwrap_or("/").to_owned();
            let (status, headers, body): (&str, Vec<String>, Vec<u8>) = match path.as_str() {
                "/files/hello.txt" => ("200 OK", vec![format!("Last-Modified: {LAST_MODIFIED}")], HELLO.to_vec()),
                "/nolm/data.bin" => ("200 OK", vec![], b"no last modified".to_vec()),
                "/big" => ("200 OK", vec![], big_body()),
                "/" => ("200 OK", vec![], b"root".to_vec()),
                _ => ("404 Not Found", vec![], b"not here".to_vec()),
            };
            let mut head = format!("HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n", body.len());
            for h in headers {
                head.push_str(&h);
                head.push_str("\r\n");
            }
            head.push_str("\r\n");
            let _ = stream.write_all(head.as_bytes());
            let _ = stream.write_all(&body);
            let _ = stream.flush();
        }
    });
    format!("http://{addr}")
}

fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    names
}

fn fetch(url: &str) -> HttpFetch {
    HttpFetch { url: url.to_owned(), ..Default::default() }
}

#[test]
fn http_download_names_file_after_url_and_sets_metadata() {
    let base = serve();
    let dest = tempfile::tempdir().unwrap();
    let calls = RefCell::new(Vec::new());
    let f = fetch(&format!("{base}/files/hello.txt"));
    assert_eq!(http_cache_key(&f), None);
    let r = fetch_http(&f, dest.path(), &|done, total| calls.borrow_mut().push((done, total))).unwrap();

    assert_eq!(r.filename, "hello.txt");
    assert_eq!(r.digest, Digest::of(HELLO));
    assert_eq!(r.size, HELLO.len() as u64);
    assert_eq!(listing(dest.path()), vec!["hello.txt"]);
    let path = dest.path().join("hello.txt");
    assert_eq!(std::fs::read(&path).unwrap(), HELLO);
    let meta = std::fs::metadata(&path).unwrap();
    assert_eq!(meta.permissions().mode() & 0o7777, 0o600);
    let mtime = meta.modified().unwrap().duration_since(UNIX_EPOCH).unwrap().as_secs();
    assert_eq!(mtime, LAST_MODIFIED_SECS);
    let calls = calls.into_inner();
    assert_eq!(calls.last(), Some(&(HELLO.len() as u64, Some(HELLO.len() as u64))));
}

#[test]
fn http_checksum_filename_perm_and_owner_are_honoured() {
    let base = serve();
    let dest = tempfile::tempdir().unwrap();
    let body = b"no last modified";
    let f = HttpFetch {
        url: format!("{base}/nolm/data.bin"),
        checksum: Some(Digest::of(body)),
        filename: Some("renamed.bin".into()),
        perm: Some(0o755),
        uid: Some(1234),
        gid: Some(4321),
    };
    assert_eq!(http_cache_key(&f), Some(Digest::of(body).to_string()));
    let r = fetch_http(&f, dest.path(), &|_, _| {}).unwrap();
    assert_eq!(r.filename, "renamed.bin");
    assert_eq!(r.digest, Digest::of(body));
    assert_eq!(listing(dest.path()), vec!["renamed.bin"]);
    let meta = std::fs::metadata(dest.path().join("renamed.bin")).unwrap();
    assert_eq!(meta.permissions().mode() & 0o7777, 0o755);
    assert_eq!((meta.uid(), meta.gid()), (1234, 4321));
    // No Last-Modified: the mtime is whatever the write left, not the fixed header time.
    assert_ne!(meta.modified().unwrap().duration_since(UNIX_EPOCH).unwrap().as_secs(), LAST_MODIFIED_SECS);
}

#[test]
fn http_checksum_mismatch_fails_and_leaves_nothing() {
    let base = serve();
    let dest = tempfile::tempdir().unwrap();
    let url = format!("{base}/files/hello.txt");
    let wrong = Digest::of(b"something else");
    let f = HttpFetch { checksum: Some(wrong.clone()), ..fetch(&url) };
    let e = fetch_http(&f, dest.path(), &|_, _| {}).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Source);
    let msg = e.to_string();
    assert!(msg.contains(&url), "{msg}");
    assert!(msg.contains(wrong.as_str()), "{msg}");
    assert!(msg.contains(Digest::of(HELLO).as_str()), "{msg}");
    assert!(listing(dest.path()).is_empty(), "left behind: {:?}", listing(dest.path()));
}

#[test]
fn http_404_is_an_error_naming_url_and_status() {
    let base = serve();
    let dest = tempfile::tempdir().unwrap();
    let url = format!("{base}/missing/thing");
    let e = fetch_http(&fetch(&url), dest.path(), &|_, _| {}).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Source);
    let msg = e.to_string();
    assert!(msg.contains(&url) && msg.contains("404"), "{msg}");
    assert!(listing(dest.path()).is_empty());
}

#[test]
fn http_root_path_is_named_index() {
    let base = serve();
    let dest = tempfile::tempdir().unwrap();
    let r = fetch_http(&fetch(&format!("{base}/")), dest.path(), &|_, _| {}).unwrap();
    assert_eq!(r.filename, "index");
    assert_eq!(std::fs::read(dest.path().join("index")).unwrap(), b"root");
}

#[test]
fn http_large_body_streams_with_monotonic_progress() {
    let base = serve();
    let dest = tempfile::tempdir().unwrap();
    let body = big_body();
    let calls = RefCell::new(Vec::new());
    let r = fetch_http(&fetch(&format!("{base}/big")), dest.path(), &|d, t| calls.borrow_mut().push((d, t))).unwrap();
    assert_eq!(r.size, body.len() as u64);
    assert_eq!(r.digest, Digest::of(&body));
    let calls = calls.into_inner();
    assert!(calls.len() > 2, "progress should be reported while streaming: {calls:?}");
    assert!(calls.windows(2).all(|w| w[0].0 <= w[1].0));
    assert!(calls.iter().all(|c| c.1 == Some(body.len() as u64)));
    assert_eq!(calls.last().unwrap().0, body.len() as u64);
}

#[test]
fn http_connection_refused_names_url() {
    // Bind then drop to get a port with (almost certainly) nobody listening.
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("http://127.0.0.1:{port}/x");
    let dest = tempfile::tempdir().unwrap();
    let e = fetch_http(&fetch(&url), dest.path(), &|_, _| {}).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Source);
    assert!(e.to_string().contains(&url), "{e}");
    assert!(listing(dest.path()).is_empty());
}

// ---------------------------------------------------------------------------------------------
// git

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["-c", "user.name=kiln", "-c", "user.email=kiln@example.invalid", "-c", "init.defaultBranch=main"])
        .args(args)
        .output()
        .expect("the git CLI must be installed for git source tests");
    assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

struct Repo {
    _tmp: tempfile::TempDir,
    path: std::path::PathBuf,
    /// main~1, tagged v1 (annotated).
    c1: String,
    /// main.
    c2: String,
    /// dev, a child of c1.
    c3: String,
    /// The object of the annotated tag v1 (not a commit).
    tag_object: String,
}

/// c1 (a.txt=one, run.sh 0755, link -> a.txt, sub/inner.txt) <- c2 on main (a.txt=two, b.txt);
/// dev: c1 <- c3 (dev.txt); annotated tag v1 at c1.
fn make_repo() -> Repo {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("repo");
    std::fs::create_dir(&path).unwrap();
    git(&path, &["init", "-q"]);
    std::fs::write(path.join("a.txt"), "one").unwrap();
    std::fs::write(path.join("run.sh"), "#!/bin/sh\n").unwrap();
    std::fs::set_permissions(path.join("run.sh"), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::symlink("a.txt", path.join("link")).unwrap();
    std::fs::create_dir(path.join("sub")).unwrap();
    std::fs::write(path.join("sub/inner.txt"), "inner").unwrap();
    git(&path, &["add", "-A"]);
    git(&path, &["commit", "-qm", "c1"]);
    let c1 = git(&path, &["rev-parse", "HEAD"]);
    git(&path, &["tag", "-a", "v1", "-m", "release v1"]);
    let tag_object = git(&path, &["rev-parse", "v1"]);
    git(&path, &["checkout", "-qb", "dev"]);
    std::fs::write(path.join("dev.txt"), "dev").unwrap();
    git(&path, &["add", "dev.txt"]);
    git(&path, &["commit", "-qm", "c3"]);
    let c3 = git(&path, &["rev-parse", "HEAD"]);
    git(&path, &["checkout", "-q", "main"]);
    std::fs::write(path.join("a.txt"), "two").unwrap();
    std::fs::write(path.join("b.txt"), "b").unwrap();
    git(&path, &["add", "-A"]);
    git(&path, &["commit", "-qm", "c2"]);
    let c2 = git(&path, &["rev-parse", "HEAD"]);
    assert_ne!(tag_object, c1);
    Repo { _tmp: tmp, path, c1, c2, c3, tag_object }
}

fn gf(remote: &str, reference: &str) -> GitFetch {
    GitFetch { remote: remote.to_owned(), reference: reference.to_owned(), keep_git_dir: false, subdir: None }
}

fn remotes(repo: &Repo) -> [String; 2] {
    [repo.path.display().to_string(), format!("file://{}", repo.path.display())]
}

#[test]
fn git_resolves_branches_tags_and_shas() {
    let repo = make_repo();
    for remote in remotes(&repo) {
        assert_eq!(resolve_git_ref(&gf(&remote, "main")).unwrap(), repo.c2, "{remote}");
        assert_eq!(resolve_git_ref(&gf(&remote, "dev")).unwrap(), repo.c3, "{remote}");
        assert_eq!(resolve_git_ref(&gf(&remote, "refs/heads/dev")).unwrap(), repo.c3, "{remote}");
        // An annotated tag resolves to its commit, not to the tag object.
        let v1 = resolve_git_ref(&gf(&remote, "v1")).unwrap();
        assert_eq!(v1, repo.c1, "{remote}");
        assert_ne!(v1, repo.tag_object);
        assert_eq!(resolve_git_ref(&gf(&remote, "")).unwrap(), repo.c2, "{remote}");
        assert_eq!(resolve_git_ref(&gf(&remote, &repo.c1)).unwrap(), repo.c1, "{remote}");
        assert_eq!(resolve_git_ref(&gf(&remote, &repo.c1.to_uppercase())).unwrap(), repo.c1, "{remote}");
    }
}

#[test]
fn git_unknown_ref_and_bad_remote_are_errors() {
    let repo = make_repo();
    for remote in remotes(&repo) {
        let e = resolve_git_ref(&gf(&remote, "no-such-branch")).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Source);
        let msg = e.to_string();
        assert!(msg.contains("no-such-branch") && msg.contains(&remote), "{msg}");
    }
    let missing = repo.path.with_file_name("not-a-repo");
    let e = resolve_git_ref(&gf(&missing.display().to_string(), "main")).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Source);
    let msg = e.to_string();
    assert!(msg.contains("not-a-repo") && msg.contains("main"), "{msg}");
    assert!(msg.contains("does not appear to be a git repository"), "git's stderr should be included: {msg}");
    let e = resolve_git_ref(&gf("relative/path", "main")).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Source);
}

#[test]
fn git_fetch_checks_out_the_right_commit_without_git_dir() {
    let repo = make_repo();
    let cache = tempfile::tempdir().unwrap();
    for remote in remotes(&repo) {
        // Same cache for every fetch: a second commit of a cached remote must still arrive.
        let main = tempfile::tempdir().unwrap();
        let g = gf(&remote, "main");
        let sha = resolve_git_ref(&g).unwrap();
        fetch_git(&g, &sha, cache.path(), main.path()).unwrap();
        assert_eq!(listing(main.path()), vec!["a.txt", "b.txt", "link", "run.sh", "sub"], "{remote}");
        assert_eq!(std::fs::read_to_string(main.path().join("a.txt")).unwrap(), "two");

        let v1 = tempfile::tempdir().unwrap();
        let g = gf(&remote, "v1");
        let sha = resolve_git_ref(&g).unwrap();
        fetch_git(&g, &sha, cache.path(), v1.path()).unwrap();
        assert_eq!(listing(v1.path()), vec!["a.txt", "link", "run.sh", "sub"], "{remote}");
        assert_eq!(std::fs::read_to_string(v1.path().join("a.txt")).unwrap(), "one");
        assert_eq!(std::fs::read_to_string(v1.path().join("sub/inner.txt")).unwrap(), "inner");
        assert_eq!(std::fs::read_link(v1.path().join("link")).unwrap(), Path::new("a.txt"));
        let mode = std::fs::metadata(v1.path().join("run.sh")).unwrap().permissions().mode();
        assert_eq!(mode & 0o111, 0o111, "executable bit kept");

        // A sha given directly, without resolving a ref first.
        let dev = tempfile::tempdir().unwrap();
        let g = gf(&remote, &repo.c3);
        fetch_git(&g, &repo.c3, cache.path(), dev.path()).unwrap();
        assert!(dev.path().join("dev.txt").exists());
        assert!(!dev.path().join("b.txt").exists());
        assert_eq!(std::fs::read_to_string(dev.path().join("a.txt")).unwrap(), "one");
    }
}

#[test]
fn git_fetch_keeps_git_dir_when_asked() {
    let repo = make_repo();
    let cache = tempfile::tempdir().unwrap();
    for remote in remotes(&repo) {
        let dest = tempfile::tempdir().unwrap();
        let g = GitFetch { keep_git_dir: true, ..gf(&remote, "dev") };
        fetch_git(&g, &repo.c3, cache.path(), dest.path()).unwrap();
        assert!(dest.path().join(".git").is_dir());
        assert_eq!(git(dest.path(), &["rev-parse", "HEAD"]), repo.c3);
        assert_eq!(git(dest.path(), &["status", "--porcelain"]), "");
        assert_eq!(git(dest.path(), &["remote", "get-url", "origin"]), remote);
        assert_eq!(std::fs::read_to_string(dest.path().join("dev.txt")).unwrap(), "dev");
    }
}

#[test]
fn git_fetch_subdir_becomes_the_root() {
    let repo = make_repo();
    let cache = tempfile::tempdir().unwrap();
    let dest = tempfile::tempdir().unwrap();
    let remote = repo.path.display().to_string();
    let g = GitFetch { subdir: Some("/sub/".into()), ..gf(&remote, "main") };
    fetch_git(&g, &repo.c2, cache.path(), dest.path()).unwrap();
    assert_eq!(listing(dest.path()), vec!["inner.txt"]);

    let dest = tempfile::tempdir().unwrap();
    let g = GitFetch { subdir: Some("nope".into()), ..gf(&remote, "main") };
    let e = fetch_git(&g, &repo.c2, cache.path(), dest.path()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Source);
    assert!(e.to_string().contains("nope"), "{e}");
}

#[test]
fn git_fetch_errors_name_remote_and_commit() {
    let repo = make_repo();
    let cache = tempfile::tempdir().unwrap();
    let remote = format!("file://{}", repo.path.display());
    let absent = "0123456789abcdef0123456789abcdef01234567";
    let dest = tempfile::tempdir().unwrap();
    let e = fetch_git(&gf(&remote, "gone"), absent, cache.path(), dest.path()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Source);
    let msg = e.to_string();
    assert!(msg.contains(&remote) && msg.contains(absent) && msg.contains("gone"), "{msg}");
    assert!(listing(dest.path()).is_empty());

    // A destination that is not empty is refused rather than mixed into.
    std::fs::write(dest.path().join("stray"), "x").unwrap();
    let e = fetch_git(&gf(&remote, "main"), &repo.c2, cache.path(), dest.path()).unwrap_err();
    assert!(e.to_string().contains("not empty"), "{e}");
}
