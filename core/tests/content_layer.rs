//! Integration tests of layer writing: digests cross-checked with sha256sum, gzip and zstd.

use kiln::content::{layer_reader, write_layer, Compression, ContentStore};
use std::io::Read;
use std::process::{Command, Stdio};

fn sample_tar(w: &mut dyn std::io::Write) -> kiln::Result<()> {
    let mut b = tar::Builder::new(w);
    for i in 0..50 {
        let data = format!("file number {i}\n").repeat(100);
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(1_700_000_000);
        b.append_data(&mut h, format!("dir/f{i}"), data.as_bytes()).unwrap();
    }
    b.finish().unwrap();
    Ok(())
}

fn sha256_of_cmd(shell: &str) -> String {
    let out = Command::new("sh").arg("-c").arg(shell).stderr(Stdio::inherit()).output().unwrap();
    assert!(out.status.success(), "{shell} failed");
    let s = String::from_utf8(out.stdout).unwrap();
    format!("sha256:{}", s.split_whitespace().next().unwrap())
}

fn check(compression: Compression, decompress: &str) {
    let dir = tempfile::tempdir().unwrap();
    let store = ContentStore::open(dir.path()).unwrap();
    let blob = write_layer(&store, &compression, true, sample_tar).unwrap();
    let path = store.blob_path(&blob.digest);
    let p = path.display();
    assert_eq!(sha256_of_cmd(&format!("sha256sum {p}")), blob.digest.as_str());
    assert_eq!(sha256_of_cmd(&format!("{decompress} < {p} | sha256sum")), blob.diff_id.as_str());
    assert_eq!(blob.size, std::fs::metadata(&path).unwrap().len());
    let mut tar_bytes = Vec::new();
    layer_reader(&store, &blob.digest, &blob.media_type).unwrap().read_to_end(&mut tar_bytes).unwrap();
    assert_eq!(kiln::Digest::of(&tar_bytes), blob.diff_id);
    let names: Vec<String> = tar::Archive::new(&tar_bytes[..])
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().display().to_string())
        .collect();
    assert_eq!(names.len(), 50);
    // Nothing left behind in ingest.
    assert_eq!(std::fs::read_dir(dir.path().join("ingest")).unwrap().count(), 0);
}

#[test]
fn gzip_layer_digests_match_tools() {
    check(Compression::default(), "gzip -dc");
}

#[test]
fn zstd_layer_digests_match_tools() {
    check(Compression::Zstd { level: 3 }, "zstd -dc");
}

#[test]
fn uncompressed_layer_digest_equals_diff_id() {
    let dir = tempfile::tempdir().unwrap();
    let store = ContentStore::open(dir.path()).unwrap();
    let blob = write_layer(&store, &Compression::Uncompressed, false, sample_tar).unwrap();
    assert_eq!(blob.digest, blob.diff_id);
    assert_eq!(blob.media_type, "application/vnd.docker.image.rootfs.diff.tar");
    check(Compression::Uncompressed, "cat");
}

#[test]
fn failing_producer_leaves_no_blob() {
    let dir = tempfile::tempdir().unwrap();
    let store = ContentStore::open(dir.path()).unwrap();
    let err = write_layer(&store, &Compression::default(), true, |w| {
        w.write_all(b"partial").unwrap();
        Err(kiln::Error::new(kiln::ErrorKind::Snapshot, "diff failed"))
    })
    .unwrap_err();
    assert_eq!(err.kind(), kiln::ErrorKind::Snapshot);
    assert!(store.list().unwrap().is_empty());
    assert_eq!(std::fs::read_dir(dir.path().join("ingest")).unwrap().count(), 0);
}
