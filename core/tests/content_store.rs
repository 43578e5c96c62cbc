//! Integration tests of the content store: writes, verified reads and corruption handling.

use kiln::content::ContentStore;
use kiln::{Digest, ErrorKind};
use std::io::{Read, Write};

fn flip_byte(path: &std::path::Path) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[0] ^= 0xff;
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn write_read_verify() {
    let dir = tempfile::tempdir().unwrap();
    let store = ContentStore::open(dir.path()).unwrap();
    let mut w = store.writer().unwrap();
    w.write_all(b"hello ").unwrap();
    w.write_all(b"world").unwrap();
    let (d, size) = w.commit(Some(&Digest::of(b"hello world"))).unwrap();
    assert_eq!(size, 11);
    assert_eq!(store.blob_path(&d), dir.path().join("blobs/sha256").join(d.hex()));
    assert_eq!(store.read(&d).unwrap(), b"hello world");
    // The store is an OCI layout's blob dir: sha256sum of the file is its name.
    let out = std::process::Command::new("sha256sum").arg(store.blob_path(&d)).output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with(d.hex()));
    // Same bytes again: still one blob.
    assert_eq!(store.write_bytes(b"hello world").unwrap(), d);
    assert_eq!(store.list().unwrap(), vec![(d, 11)]);
}

#[test]
fn corrupt_blob_fails_read_and_is_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let store = ContentStore::open(dir.path()).unwrap();
    let d = store.write_bytes(b"precious content").unwrap();
    flip_byte(&store.blob_path(&d));
    let err = store.read(&d).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Content);
    assert!(err.to_string().contains(d.as_str()), "error names the blob: {err}");
    assert!(!store.has(&d), "corrupt blob must be deleted");
    assert!(!store.blob_path(&d).exists());
}

#[test]
fn corrupt_blob_fails_streaming_read_and_is_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let store = ContentStore::open(dir.path()).unwrap();
    let data = vec![7u8; 1 << 20];
    let d = store.write_bytes(&data).unwrap();
    flip_byte(&store.blob_path(&d));
    let mut out = Vec::new();
    let mut reader = store.open_reader(&d).unwrap();
    let err = reader.read_to_end(&mut out).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
    // Reading on after the failure keeps failing instead of looking like a clean end.
    assert_eq!(reader.read(&mut [0u8; 16]).unwrap_err().kind(), std::io::ErrorKind::InvalidData);
    assert!(err.to_string().contains(d.as_str()), "{err}");
    assert!(!store.has(&d));
}

#[test]
fn missing_blob_is_content_error() {
    let dir = tempfile::tempdir().unwrap();
    let store = ContentStore::open(dir.path()).unwrap();
    let d = Digest::of(b"never written");
    assert_eq!(store.read(&d).unwrap_err().kind(), ErrorKind::Content);
    assert_eq!(store.size(&d).unwrap_err().kind(), ErrorKind::Content);
    assert_eq!(store.open_reader(&d).err().unwrap().kind(), ErrorKind::Content);
}

#[test]
fn concurrent_writers_of_same_content() {
    let dir = tempfile::tempdir().unwrap();
    let store = ContentStore::open(dir.path()).unwrap();
    let handles: Vec<_> = (0..8)
        .map(|_| {
            let s = store.clone();
            std::thread::spawn(move || s.write_bytes(&[42u8; 100_000]).unwrap())
        })
        .collect();
    let digests: Vec<Digest> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert!(digests.windows(2).all(|w| w[0] == w[1]));
    assert_eq!(store.read(&digests[0]).unwrap(), vec![42u8; 100_000]);
    assert_eq!(std::fs::read_dir(dir.path().join("ingest")).unwrap().count(), 0);
}
