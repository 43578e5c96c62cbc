//! Cache directories under concurrent and killed exporters, with real `kiln` processes: 8 processes
//! exporting different tags into one directory at once keep all 8 tags and every blob verifies; a
//! `kill -9` in the middle of an export leaves the directory valid and the previous tag importable.

use kiln::graph::{ExecOptions, State};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const KILN: &str = env!("CARGO_BIN_EXE_kiln");

fn rootfs(dir: &Path) -> PathBuf {
    let r = dir.join("rootfs");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/make-rootfs");
    let st = Command::new(script).arg(&r).status().expect("make-rootfs");
    assert!(st.success(), "make-rootfs failed (busybox-static installed?)");
    r
}

fn definition(dir: &Path, name: &str, script: &str) -> PathBuf {
    let st = State::local("rootfs").run(ExecOptions::shell(script)).root();
    let p = dir.join(format!("{name}.pb"));
    std::fs::write(&p, st.to_definition().expect("definition").to_bytes()).unwrap();
    p
}

fn kiln(root: &Path) -> Command {
    let mut c = Command::new(KILN);
    c.arg("--root").arg(root);
    c
}

fn verify_layout(cache: &Path) -> Vec<String> {
    let layout = kiln::content::OciLayout::open(cache).expect("valid layout");
    let mut tags = Vec::new();
    for m in layout.index().unwrap().manifests() {
        let tag = m.annotations().as_ref().and_then(|a| a.get("org.opencontainers.image.ref.name")).cloned().unwrap();
        let records = kiln::remotecache::export::read_records(&layout, &tag).expect("records parse");
        for l in records.iter().flat_map(|r| r.layers.iter().flatten()) {
            layout.store().read(&l.digest).unwrap_or_else(|e| panic!("tag {tag}: blob {}: {e}", l.digest));
        }
        tags.push(tag);
    }
    tags.sort();
    tags
}

#[test]
fn eight_processes_export_into_one_directory() {
    let dir = tempfile::tempdir().unwrap();
    let rootfs = rootfs(dir.path());
    let cache = dir.path().join("cache");
    let children: Vec<_> = (0..8)
        .map(|i| {
            let def = definition(dir.path(), &format!("d{i}"), &format!("head -c 200000 /dev/urandom > /blob{i}"));
            kiln(&dir.path().join(format!("root{i}")))
                .args(["build", "--progress", "quiet", "--definition"])
                .arg(&def)
                .arg("--local")
                .arg(format!("rootfs={}", rootfs.display()))
                .arg("--export-cache")
                .arg(format!("type=local,dest={},tag=t{i},mode=max", cache.display()))
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn kiln")
        })
        .collect();
    for (i, c) in children.into_iter().enumerate() {
        let out = c.wait_with_output().unwrap();
        assert!(out.status.success(), "process {i}: {}", String::from_utf8_lossy(&out.stderr));
    }
    let tags = verify_layout(&cache);
    assert_eq!(tags, (0..8).map(|i| format!("t{i}")).collect::<Vec<_>>());
    let ls = kiln(&dir.path().join("root0")).args(["cache", "ls", "--dir"]).arg(&cache).output().unwrap();
    assert!(ls.status.success());
    assert_eq!(String::from_utf8_lossy(&ls.stdout).lines().count(), 9, "{}", String::from_utf8_lossy(&ls.stdout));
}

#[test]
fn kill_9_during_export_leaves_the_directory_valid() {
    let dir = tempfile::tempdir().unwrap();
    let rootfs = rootfs(dir.path());
    let cache = dir.path().join("cache");
    let local = format!("rootfs={}", rootfs.display());
    // A first, complete export under tag "prev".
    let small = definition(dir.path(), "small", "echo small > /s");
    let st = kiln(&dir.path().join("root-a"))
        .args(["build", "--progress", "quiet", "--definition"])
        .arg(&small)
        .args(["--local", &local, "--export-cache"])
        .arg(format!("type=local,dest={},tag=prev", cache.display()))
        .status()
        .unwrap();
    assert!(st.success());
    // A big export, killed once it has started writing the cache.
    let big = definition(dir.path(), "big", "head -c 150000000 /dev/urandom > /big");
    let mut child = kiln(&dir.path().join("root-b"))
        .args(["build", "--progress", "plain", "--definition"])
        .arg(&big)
        .args(["--local", &local, "--export-cache"])
        .arg(format!("type=local,dest={},tag=next,mode=max", cache.display()))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut saw_export = false;
    for line in BufReader::new(stderr).lines() {
        let line = line.unwrap();
        if line.contains("exporting cache") {
            saw_export = true;
            break;
        }
    }
    assert!(saw_export, "the build never reached the cache export");
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    // The directory is still a valid layout; "prev" still imports and every blob verifies.
    let tags = verify_layout(&cache);
    assert!(tags.contains(&"prev".to_owned()), "{tags:?}");
    let out = kiln(&dir.path().join("root-c"))
        .args(["build", "--progress", "plain", "--definition"])
        .arg(&small)
        .args(["--local", &local, "--import-cache"])
        .arg(format!("type=local,src={},tag=prev", cache.display()))
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    assert!(log.contains("CACHED"), "{log}");
    assert!(!log.contains("echo small") || log.lines().any(|l| l.ends_with("CACHED")), "{log}");
    // A later export into the same directory works and cleans up what the killed one left.
    let st = kiln(&dir.path().join("root-a"))
        .args(["build", "--progress", "quiet", "--definition"])
        .arg(&small)
        .args(["--local", &local, "--export-cache"])
        .arg(format!("type=local,dest={},tag=prev", cache.display()))
        .status()
        .unwrap();
    assert!(st.success());
    let _ = std::io::stdout().flush();
    verify_layout(&cache);
    let ingest: Vec<_> = std::fs::read_dir(cache.join("ingest")).map(|d| d.flatten().collect()).unwrap_or_default();
    assert!(ingest.is_empty(), "the killed exporter's temp files are collected");
    assert!(
        !cache.join("kiln-leases").read_dir().map(|mut d| d.next().is_some()).unwrap_or(false),
        "stale lease removed"
    );
}
