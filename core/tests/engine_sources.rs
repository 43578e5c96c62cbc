//! http(s) and git sources through the engine: a download from a server on 127.0.0.1 (checksum
//! pinned or not), a checkout of a local git repository at a branch, a tag and a commit, and their
//! cache keys (a new commit on the branch invalidates; the same content hits).

mod common;

use common::kit::{base, cached, read, sh, started, Kit};
use kiln::graph::{CopyOptions, HttpOptions, State};
use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::Command;

/// Serves `body` for every request on 127.0.0.1 until the process ends; returns the URL.
fn serve(body: &'static [u8]) -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for mut s in l.incoming().flatten() {
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let _ = write!(s, "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
            let _ = s.write_all(body);
        }
    });
    format!("http://{addr}/files/tool.sh")
}

fn git(dir: &std::path::Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["-c", "user.name=t", "-c", "user.email=t@example.invalid"])
        .args(args)
        .output()
        .expect("git installed");
    assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn http_source_downloads_and_verifies() {
    let k = Kit::new();
    let url = serve(b"echo from-http\n");
    let checksum = kiln::Digest::of(b"echo from-http\n");
    let dl = State::http(&url, HttpOptions { checksum: Some(checksum), ..Default::default() });
    let st = base().copy(&dl, "/tool.sh", "/tool.sh", CopyOptions::default()).run(sh("sh /tool.sh > /out.txt")).root();
    let out = k.path("out");
    let (r, ev) = k.solve(&st, k.opts().output(&format!("type=local,dest={}", out.display())).unwrap()).await;
    r.unwrap_or_else(|e| panic!("{e}: {ev:#?}"));
    assert_eq!(read(&out.join("out.txt")), "from-http\n");
    // A wrong pinned checksum fails, naming the URL.
    let bad = State::http(&url, HttpOptions { checksum: Some(kiln::Digest::of(b"other")), ..Default::default() });
    let (r, _) = k.solve(&base().copy(&bad, "/tool.sh", "/t", CopyOptions::default()), k.opts()).await;
    let e = r.unwrap_err();
    assert!(e.to_string().contains("tool.sh"), "{e}");
    // Without a checksum the content is downloaded to compute the key; same content → cached.
    let free = State::http(&url, HttpOptions::default());
    let st2 = base().copy(&free, "/tool.sh", "/tool.sh", CopyOptions::default());
    let (r, _) = k.solve(&st2, k.opts()).await;
    r.unwrap();
    let (r, ev) = k.solve(&st2, k.opts()).await;
    r.unwrap();
    assert!(started(&ev).iter().all(|n| n.starts_with("local://")), "{:?}", started(&ev));
    k.assert_no_leaks();
}

#[tokio::test(flavor = "multi_thread")]
async fn git_source_checks_out_refs_and_invalidates_on_new_commits() {
    let k = Kit::new();
    let repo = k.path("repo");
    std::fs::create_dir_all(&repo).unwrap();
    git(&repo, &["init", "-q", "-b", "main"]);
    std::fs::write(repo.join("VERSION"), "1\n").unwrap();
    git(&repo, &["add", "."]);
    git(&repo, &["commit", "-q", "-m", "one"]);
    git(&repo, &["tag", "v1"]);
    let first = git(&repo, &["rev-parse", "HEAD"]);
    let remote = repo.display().to_string();
    let build =
        |reference: &str| base().copy(&State::git(&remote, reference), "/VERSION", "/VERSION", CopyOptions::default());
    let out = k.path("out");
    let opts = || k.opts().output(&format!("type=local,dest={}", out.display())).unwrap();
    let (r, ev) = k.solve(&build("main"), opts()).await;
    r.unwrap_or_else(|e| panic!("{e}: {ev:#?}"));
    assert_eq!(read(&out.join("VERSION")), "1\n");
    assert!(!out.join(".git").exists());
    // Same commit → cached.
    let (r, ev) = k.solve(&build("main"), opts()).await;
    r.unwrap();
    assert!(cached(&ev).iter().any(|n| n.contains("VERSION")), "{:?}", cached(&ev));
    // A new commit on main invalidates; the tag and the sha still give the old content.
    std::fs::write(repo.join("VERSION"), "2\n").unwrap();
    git(&repo, &["commit", "-q", "-am", "two"]);
    let (r, _) = k.solve(&build("main"), opts()).await;
    r.unwrap();
    assert_eq!(read(&out.join("VERSION")), "2\n");
    for old in ["v1", first.as_str()] {
        let (r, _) = k.solve(&build(old), opts()).await;
        r.unwrap();
        assert_eq!(read(&out.join("VERSION")), "1\n", "ref {old}");
    }
    let (r, _) = k.solve(&build("no-such-branch"), k.opts()).await;
    assert!(r.unwrap_err().to_string().contains("no-such-branch"));
    k.assert_no_leaks();
}
