//! Fault suite, the defects found by probing kiln as an attacker would, each with its test: the
//! build context never leaks into caches (a file of a `local://` context that the build does not
//! use reaches no blob of a `mode=max` export, local or registry: BuildKit never exports a local
//! source's own result); the engine root is private; outputs cannot overwrite the root.

mod common;

use common::kit::{base, sh, Kit};
use common::registry::TestRegistry;
use kiln::graph::{CopyOptions, State};
use std::io::Read;
use std::path::Path;

const CANARY: &str = "CANARY-credentials-7f3a9c1e";

/// Every regular file under `dir`, decompressed when it is gzip or zstd.
fn blobs_contain(dir: &Path, needle: &[u8]) -> Vec<String> {
    let mut hits = Vec::new();
    for e in walkdir::WalkDir::new(dir).into_iter().filter_map(|e| e.ok()).filter(|e| e.file_type().is_file()) {
        let raw = std::fs::read(e.path()).unwrap();
        let mut data = raw.clone();
        if raw.starts_with(&[0x1f, 0x8b]) {
            data.clear();
            flate2::read::GzDecoder::new(raw.as_slice()).read_to_end(&mut data).unwrap();
        } else if raw.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            data = zstd::decode_all(raw.as_slice()).unwrap();
        }
        if data.windows(needle.len()).any(|w| w == needle) {
            hits.push(e.path().display().to_string());
        }
    }
    hits
}

#[tokio::test(flavor = "multi_thread")]
async fn unused_context_files_reach_no_cache_blob() {
    let reg = TestRegistry::start();
    let k = Kit::new();
    let ctx = k.path("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(ctx.join("used.txt"), "used").unwrap();
    std::fs::write(ctx.join(".env"), CANARY).unwrap();
    let st = base().run(sh("echo ran > /ran")).root().copy(
        &State::local("ctx"),
        "/used.txt",
        "/used.txt",
        CopyOptions::default(),
    );
    let local = k.path("cache");
    let opts = k
        .opts()
        .local("ctx", &ctx)
        .cache_export(&format!("type=local,dest={},mode=max", local.display()))
        .unwrap()
        .cache_export(&format!("type=registry,ref={}/leak/check:max,mode=max", reg.addr))
        .unwrap();
    let (r, ev) = k.solve(&st, opts).await;
    r.unwrap_or_else(|e| panic!("{e}: {ev:#?}"));
    // The check itself works: the used file is in the cache.
    assert!(!blobs_contain(&local, b"used").is_empty());
    assert_eq!(blobs_contain(&local, CANARY.as_bytes()), Vec::<String>::new(), "canary in the local cache");
    assert_eq!(blobs_contain(&reg.storage(), CANARY.as_bytes()), Vec::<String>::new(), "canary in the registry");
}

#[tokio::test(flavor = "multi_thread")]
async fn engine_root_is_private_and_outputs_inside_it_are_refused() {
    use std::os::unix::fs::PermissionsExt;
    let mut k = Kit::new();
    let root = k.engine().root().to_path_buf();
    assert_eq!(std::fs::metadata(&root).unwrap().permissions().mode() & 0o7777, 0o700);
    std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755)).unwrap();
    k.reopen();
    assert_eq!(std::fs::metadata(&root).unwrap().permissions().mode() & 0o7777, 0o700, "fixed on open");

    let st = State::scratch().mkfile("/f", 0o644, "x", Default::default());
    for out in [
        format!("type=tar,dest={}", root.join("metadata.redb").display()),
        format!("type=local,dest={}", root.join("snapshots").display()),
    ] {
        let (r, _) = k.solve(&st, k.opts().output(&out).unwrap()).await;
        let e = r.unwrap_err();
        assert!(e.to_string().contains("inside the engine root"), "{e}");
    }
    let cache = format!("type=local,dest={}", root.join("cachedir").display());
    let (r, _) = k.solve(&st, k.opts().cache_export(&cache).unwrap()).await;
    assert!(r.unwrap_err().to_string().contains("inside the engine root"));
    // The root still works.
    let (r, _) = k.solve(&st, k.opts().output(&format!("type=tar,dest={}", k.path("ok.tar").display())).unwrap()).await;
    r.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn layer_blobs_are_counted_by_du_and_freed_by_prune() {
    let k = Kit::new();
    let st = base().run(sh("head -c 3000000 /dev/urandom > /big")).root();
    let cache = k.path("cache");
    let opts = k.opts().cache_export(&format!("type=local,dest={},mode=max", cache.display())).unwrap();
    let (r, ev) = k.solve(&st, opts).await;
    r.unwrap_or_else(|e| panic!("{e}: {ev:#?}"));
    let blobs = |k: &Kit| -> u64 {
        walkdir::WalkDir::new(k.engine().root().join("content/blobs"))
            .into_iter()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_type().is_file())
            .map(|e| e.metadata().unwrap().len())
            .sum()
    };
    let on_disk = blobs(&k);
    assert!(on_disk > 3_000_000, "the export left its compressed layers in the content store: {on_disk}");
    let du: u64 = k.engine().disk_usage().await.unwrap().iter().map(|u| u.size).sum();
    assert!(du >= on_disk + 3_000_000, "du counts snapshots and blobs: du={du} blobs={on_disk}");
    let report = k.engine().prune(0, true).await.unwrap();
    assert!(report.freed_bytes >= on_disk, "{report:?}");
    assert_eq!(blobs(&k), 0, "prune --all frees the content store");
    assert!(k.engine().disk_usage().await.unwrap().is_empty());
    // The exported cache is untouched and still imports.
    let k2 = Kit::new();
    let out = k2.path("out");
    let opts = k2
        .opts()
        .cache_import(&format!("type=local,src={}", cache.display()))
        .unwrap()
        .output(&format!("type=local,dest={}", out.display()))
        .unwrap();
    let (r, ev) = k2.solve(&st, opts).await;
    r.unwrap_or_else(|e| panic!("{e}: {ev:#?}"));
    assert_eq!(std::fs::metadata(out.join("big")).unwrap().len(), 3_000_000);
}
