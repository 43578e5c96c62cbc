//! Cache export/import through local directories (OCI image layouts), against real runc and
//! overlayfs: round trips in both modes, several exporters/importers, validity with independent
//! tools, BuildKit's own exports, corruption, and the bounded store.

mod common;

use common::kit::{base, cached, sh, started, Kit};
use kiln::engine::SolveOptions;
use kiln::graph::{CacheSharing, CopyOptions, MountSpec, State};
use kiln::solver::ProgressEvent;
use std::path::Path;
use std::process::Command;

fn graph() -> State {
    let ctx = State::local("ctx");
    let build = base()
        .run(
            sh("cat /ctx/hello.txt > /greeting && echo cached-$(cat /c/n 2>/dev/null) > /cm && echo 1 > /c/n")
                .mount(MountSpec::bind("/ctx", &ctx, true))
                .mount(MountSpec::cache("/c", "counter", CacheSharing::Locked)),
        )
        .root();
    // A second stage that copies from the first: a multi-stage graph.
    let stage2 = base().run(sh("mkdir -p /dist && echo stage2 > /dist/s2")).root();
    build.copy(&ctx, "/hello.txt", "/app/hello.txt", CopyOptions { create_dest_path: true, ..Default::default() }).copy(
        &stage2,
        "/dist",
        "/dist",
        CopyOptions::default(),
    )
}

fn ctx_dir(k: &Kit) -> std::path::PathBuf {
    let ctx = k.path("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(ctx.join("hello.txt"), "hello cache\n").unwrap();
    ctx
}

fn opts(k: &Kit, ctx: &Path, out: &Path) -> SolveOptions {
    k.opts().local("ctx", ctx).output(&format!("type=local,dest={}", out.display())).unwrap()
}

fn same_tree(a: &Path, b: &Path) {
    let d = Command::new("diff").arg("-r").arg("--no-dereference").arg(a).arg(b).output().unwrap();
    assert!(d.status.success(), "trees differ: {}", String::from_utf8_lossy(&d.stdout));
}

fn blob_count(dir: &Path) -> usize {
    std::fs::read_dir(dir.join("blobs/sha256")).map(|r| r.count()).unwrap_or(0)
}

fn du(dir: &Path) -> String {
    let o = Command::new("du").arg("-sb").arg(dir).output().unwrap();
    String::from_utf8_lossy(&o.stdout).split_whitespace().next().unwrap_or("?").to_owned()
}

async fn round_trip(mode: &str) -> (usize, String) {
    let a = Kit::new();
    let ctx = ctx_dir(&a);
    let cache = a.path("cache");
    let out_a = a.path("out-a");
    let o = opts(&a, &ctx, &out_a).cache_export(&format!("type=local,dest={},mode={mode}", cache.display())).unwrap();
    let (r, ev) = a.solve(&graph(), o).await;
    r.unwrap_or_else(|e| panic!("{e}: {ev:#?}"));

    let b = Kit::new();
    let out_b = b.path("out-b");
    let o = opts(&b, &ctx, &out_b).cache_import(&format!("type=local,src={}", cache.display())).unwrap();
    let (r, ev) = b.solve(&graph(), o).await;
    let r = r.unwrap_or_else(|e| panic!("{e}: {ev:#?}"));
    let ran: Vec<String> = started(&ev).into_iter().filter(|n| !n.starts_with("local://")).collect();
    let warnings: Vec<&ProgressEvent> = ev.iter().filter(|e| matches!(e, ProgressEvent::Warning { .. })).collect();
    assert!(
        ran.is_empty(),
        "mode={mode}: nothing but local transfers may run after import, ran {ran:?}; warnings {warnings:?}"
    );
    assert!(!ev.iter().any(|e| matches!(e, ProgressEvent::Log { .. })), "no container may run");
    // Only the local context is loaded (its content keys the copy); everything else is cached.
    assert!(r.cached >= 4 && r.executed <= 1, "{:?}", cached(&ev));
    same_tree(&out_a, &out_b);
    b.assert_no_leaks();
    (blob_count(&cache), du(&cache))
}

#[tokio::test(flavor = "multi_thread")]
async fn round_trip_mode_max_and_min() {
    let (max_blobs, max_bytes) = round_trip("max").await;
    let (min_blobs, min_bytes) = round_trip("min").await;
    println!("mode=max: {max_blobs} blobs, {max_bytes} bytes; mode=min: {min_blobs} blobs, {min_bytes} bytes");
    assert!(max_blobs > min_blobs, "mode=max must hold the intermediate layers too");
}

#[tokio::test(flavor = "multi_thread")]
async fn mode_min_has_only_final_layers_and_max_has_every_result() {
    let a = Kit::new();
    let ctx = ctx_dir(&a);
    let (min, max) = (a.path("min"), a.path("max"));
    let o = opts(&a, &ctx, &a.path("out"))
        .cache_export(&format!("type=local,dest={},mode=min", min.display()))
        .unwrap()
        .cache_export(&format!("type=local,dest={},mode=max", max.display()))
        .unwrap();
    let (r, _) = a.solve(&graph(), o).await;
    r.unwrap();
    let ls = |d: &Path| kiln::remotecache::export::list_local(d).unwrap().remove(0);
    let (lmin, lmax) = (ls(&min), ls(&max));
    println!("min: {lmin:?}\nmax: {lmax:?}");
    assert_eq!(lmin.records, lmax.records, "both modes export the records of the whole graph");
    assert_eq!(lmin.results, 1, "mode=min: only the final result has layers");
    // Every result but the two local sources' own (never exported: they are the build context).
    assert_eq!(lmax.results, lmax.records - 2);
    assert!(lmax.bytes > lmin.bytes);
}

#[tokio::test(flavor = "multi_thread")]
async fn several_exporters_and_importers_one_missing() {
    let a = Kit::new();
    let ctx = ctx_dir(&a);
    let (c1, c2) = (a.path("c1"), a.path("c2"));
    let o = opts(&a, &ctx, &a.path("out"))
        .cache_export(&format!("type=local,dest={},mode=max", c1.display()))
        .unwrap()
        .cache_export(&format!("type=local,dest={},mode=max,tag=other", c2.display()))
        .unwrap();
    let (r, _) = a.solve(&graph(), o).await;
    r.unwrap();
    assert!(blob_count(&c1) > 0 && blob_count(&c2) > 0);
    // Duplicate exporters are refused up front.
    let dup = opts(&a, &ctx, &a.path("out2"))
        .cache_export(&format!("type=local,dest={}", c1.display()))
        .unwrap()
        .cache_export(&format!("type=local,dest={}", c1.display()))
        .unwrap();
    let (r, _) = a.solve(&graph(), dup).await;
    assert_eq!(r.unwrap_err().kind(), kiln::ErrorKind::Option);

    let b = Kit::new();
    let o = opts(&b, &ctx, &b.path("out"))
        .cache_import(&format!("type=local,src={}", b.path("does-not-exist").display()))
        .unwrap()
        .cache_import(&format!("type=local,src={},tag=other", c2.display()))
        .unwrap();
    let (r, ev) = b.solve(&graph(), o).await;
    let r = r.unwrap();
    assert!(ev.iter().any(|e| matches!(e, ProgressEvent::Warning { message } if message.contains("does-not-exist"))));
    assert!(started(&ev).iter().all(|n| n.starts_with("local://")), "{:?}", started(&ev));
    assert!(r.cached >= 4);
}

#[tokio::test(flavor = "multi_thread")]
async fn cache_dir_is_a_valid_oci_layout_for_independent_tools() {
    let a = Kit::new();
    let ctx = ctx_dir(&a);
    let cache = a.path("cache");
    let o =
        opts(&a, &ctx, &a.path("out")).cache_export(&format!("type=local,dest={},mode=max", cache.display())).unwrap();
    let (r, _) = a.solve(&graph(), o).await;
    r.unwrap();
    let raw = Command::new("skopeo")
        .arg("inspect")
        .arg("--raw")
        .arg(format!("oci:{}:latest", cache.display()))
        .output()
        .expect("skopeo");
    assert!(raw.status.success(), "skopeo: {}", String::from_utf8_lossy(&raw.stderr));
    let manifest: serde_json::Value = serde_json::from_slice(&raw.stdout).unwrap();
    assert_eq!(manifest["config"]["mediaType"], "application/vnd.buildkit.cacheconfig.v0");
    for l in manifest["layers"].as_array().unwrap() {
        assert!(l["annotations"]["containerd.io/uncompressed"].as_str().unwrap().starts_with("sha256:"));
        assert!(l["annotations"]["buildkit/createdat"].is_string());
    }
    let ls = Command::new("umoci").arg("ls").arg("--layout").arg(&cache).output().expect("umoci");
    assert!(ls.status.success(), "umoci: {}", String::from_utf8_lossy(&ls.stderr));
    assert!(String::from_utf8_lossy(&ls.stdout).contains("latest"));
    // The index form (image-manifest=false) too.
    let idx = a.path("cache-index");
    let o = opts(&a, &ctx, &a.path("out"))
        .cache_export(&format!("type=local,dest={},image-manifest=false", idx.display()))
        .unwrap();
    let (r, _) = a.solve(&graph(), o).await;
    r.unwrap();
    let raw = Command::new("skopeo")
        .arg("inspect")
        .arg("--raw")
        .arg(format!("oci:{}:latest", idx.display()))
        .output()
        .unwrap();
    let index: serde_json::Value = serde_json::from_slice(&raw.stdout).unwrap();
    assert_eq!(
        index["manifests"].as_array().unwrap().last().unwrap()["mediaType"],
        "application/vnd.buildkit.cacheconfig.v0"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn buildkit_exports_parse_and_absent_layers_are_misses() {
    let k = Kit::new();
    let ctx = ctx_dir(&k);
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/buildkit-cache");
    let mut o = opts(&k, &ctx, &k.path("out"));
    for f in ["w1-local-mode-max", "w1-local-mode-min"] {
        o = o.cache_import(&format!("type=local,src={}", fixtures.join(f).display())).unwrap();
    }
    let (r, ev) = k.solve(&graph(), o).await;
    r.unwrap_or_else(|e| panic!("{e}: {ev:#?}"));
    assert!(
        !ev.iter().any(|e| matches!(e, ProgressEvent::Warning { message } if message.contains("w1-local"))),
        "BuildKit's exports must load: {ev:#?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn corrupt_blob_is_detected_and_rebuilt() {
    let a = Kit::new();
    let ctx = ctx_dir(&a);
    let cache = a.path("cache");
    let o =
        opts(&a, &ctx, &a.path("out")).cache_export(&format!("type=local,dest={},mode=min", cache.display())).unwrap();
    let (r, _) = a.solve(&graph(), o).await;
    r.unwrap();
    // Flip bytes in the biggest blob (a layer).
    let mut blobs: Vec<_> =
        std::fs::read_dir(cache.join("blobs/sha256")).unwrap().flatten().map(|e| e.path()).collect();
    blobs.sort_by_key(|p| std::fs::metadata(p).unwrap().len());
    let victim = blobs.last().unwrap();
    let mut bytes = std::fs::read(victim).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    bytes[mid + 1] ^= 0xff;
    std::fs::write(victim, bytes).unwrap();

    let b = Kit::new();
    let out = b.path("out");
    let o = opts(&b, &ctx, &out).cache_import(&format!("type=local,src={}", cache.display())).unwrap();
    let (r, ev) = b.solve(&graph(), o).await;
    r.unwrap_or_else(|e| panic!("{e}: {ev:#?}"));
    assert!(ev.iter().any(|e| matches!(e, ProgressEvent::Warning { .. })), "corruption must be reported");
    assert!(started(&ev).iter().any(|n| n.contains("greeting")), "the step is rebuilt, not taken from a corrupt blob");
    assert_eq!(std::fs::read_to_string(out.join("app/hello.txt")).unwrap(), "hello cache\n");
    b.assert_no_leaks();
}

#[tokio::test(flavor = "multi_thread")]
async fn repeated_exports_to_one_tag_keep_only_current_blobs() {
    let k = Kit::new();
    let ctx = ctx_dir(&k);
    let cache = k.path("cache");
    for i in 0..20 {
        std::fs::write(ctx.join("hello.txt"), format!("round {i}\n")).unwrap();
        let o = opts(&k, &ctx, &k.path("out"))
            .cache_export(&format!("type=local,dest={},mode=max", cache.display()))
            .unwrap();
        let (r, _) = k.solve(&graph(), o).await;
        r.unwrap();
    }
    let layout = kiln::content::OciLayout::open(&cache).unwrap();
    let records = kiln::remotecache::export::read_records(&layout, "latest").unwrap();
    let mut referenced: std::collections::BTreeSet<String> =
        records.iter().flat_map(|r| r.layers.iter().flatten().map(|l| l.digest.hex().to_owned())).collect();
    let root = layout.resolve("latest").unwrap();
    referenced.insert(root.digest().as_ref().trim_start_matches("sha256:").to_owned());
    let on_disk: std::collections::BTreeSet<String> = std::fs::read_dir(cache.join("blobs/sha256"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .collect();
    // On disk: the layers, the config and the manifest of the current tag, nothing else.
    assert_eq!(on_disk.len(), referenced.len() + 1, "stale blobs remain: {on_disk:?} vs {referenced:?}");
    assert!(referenced.iter().all(|d| on_disk.contains(d)));
    println!("after 20 exports: {} blobs, du {} bytes", on_disk.len(), du(&cache));
}

#[tokio::test(flavor = "multi_thread")]
async fn merge_keeps_previous_records_and_prune_keeps_newest_tags() {
    let k = Kit::new();
    let ctx = ctx_dir(&k);
    let cache = k.path("cache");
    let one = base().run(sh("echo one > /one")).root();
    let two = base().run(sh("echo two > /two")).root();
    for (g, merge) in [(&one, false), (&two, true)] {
        let o = k.opts().cache_export(&format!("type=local,dest={},mode=max,merge={merge}", cache.display())).unwrap();
        let (r, _) = k.solve(g, o).await;
        r.unwrap();
    }
    let b = Kit::new();
    for g in [&one, &two] {
        let o = b.opts().cache_import(&format!("type=local,src={}", cache.display())).unwrap();
        let (r, ev) = b.solve(g, o).await;
        assert!(
            started(&r.map(|_| ev).unwrap()).iter().all(|n| n.starts_with("local://")),
            "merged cache serves both graphs"
        );
    }
    for t in ["a", "b", "c"] {
        let o =
            k.opts().local("ctx", &ctx).cache_export(&format!("type=local,dest={},tag={t}", cache.display())).unwrap();
        let (r, _) = k.solve(&one, o).await;
        r.unwrap();
    }
    let rep = kiln::remotecache::export::prune_local(&cache, Some(1), None).unwrap();
    assert_eq!(rep.tags.len(), 3, "{rep:?}");
    let left = kiln::remotecache::export::list_local(&cache).unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].tag, "c");
}

#[tokio::test(flavor = "multi_thread")]
async fn cache_mount_contents_travel_with_cache_mounts_true() {
    let a = Kit::new();
    let cache = a.path("cache");
    let fill = base()
        .run(sh("echo downloaded > /pkgs/dep.tgz").mount(MountSpec::cache("/pkgs", "pkg-cache", CacheSharing::Shared)))
        .root();
    let o = a.opts().cache_export(&format!("type=local,dest={},cache-mounts=true", cache.display())).unwrap();
    let (r, _) = a.solve(&fill, o).await;
    r.unwrap();

    // A fresh root with the import: a step using the same cache mount sees the restored contents.
    let b = Kit::new();
    let out = b.path("out");
    let read = base()
        .run(sh("cat /pkgs/dep.tgz > /seen").mount(MountSpec::cache("/pkgs", "pkg-cache", CacheSharing::Shared)))
        .root();
    let o = b
        .opts()
        .output(&format!("type=local,dest={}", out.display()))
        .unwrap()
        .cache_import(&format!("type=local,src={}", cache.display()))
        .unwrap();
    let (r, ev) = b.solve(&read, o).await;
    r.unwrap_or_else(|e| panic!("{e}: {ev:#?}"));
    assert_eq!(std::fs::read_to_string(out.join("seen")).unwrap(), "downloaded\n");
}

#[tokio::test(flavor = "multi_thread")]
async fn zstd_and_uncompressed_caches_round_trip() {
    for (compression, media_suffix) in [("zstd", "zstd"), ("uncompressed", "tar")] {
        let a = Kit::new();
        let ctx = ctx_dir(&a);
        let cache = a.path("cache");
        let o = opts(&a, &ctx, &a.path("out"))
            .cache_export(&format!("type=local,dest={},mode=max,compression={compression}", cache.display()))
            .unwrap();
        let (r, _) = a.solve(&graph(), o).await;
        r.unwrap();
        let layout = kiln::content::OciLayout::open(&cache).unwrap();
        let records = kiln::remotecache::export::read_records(&layout, "latest").unwrap();
        let layers: Vec<_> = records.iter().flat_map(|r| r.layers.iter().flatten()).collect();
        assert!(!layers.is_empty());
        assert!(layers.iter().all(|l| l.media_type.ends_with(media_suffix)), "{compression}: {layers:?}");
        let b = Kit::new();
        let out = b.path("out");
        let o = opts(&b, &ctx, &out).cache_import(&format!("type=local,src={}", cache.display())).unwrap();
        let (r, ev) = b.solve(&graph(), o).await;
        r.unwrap();
        assert!(started(&ev).iter().all(|n| n.starts_with("local://")), "{compression}: {:?}", started(&ev));
        assert_eq!(std::fs::read_to_string(out.join("app/hello.txt")).unwrap(), "hello cache\n");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn docker_media_types_index_form_round_trips() {
    let a = Kit::new();
    let ctx = ctx_dir(&a);
    let cache = a.path("cache");
    let o = opts(&a, &ctx, &a.path("out"))
        .cache_export(&format!(
            "type=local,dest={},mode=max,oci-mediatypes=false,image-manifest=false",
            cache.display()
        ))
        .unwrap();
    let (r, _) = a.solve(&graph(), o).await;
    r.unwrap();
    let index: serde_json::Value = serde_json::from_slice(&std::fs::read(cache.join("index.json")).unwrap()).unwrap();
    let root = &index["manifests"][0];
    assert_eq!(root["mediaType"], "application/vnd.docker.distribution.manifest.list.v2+json");
    let layout = kiln::content::OciLayout::open(&cache).unwrap();
    let records = kiln::remotecache::export::read_records(&layout, "latest").unwrap();
    assert!(records
        .iter()
        .flat_map(|r| r.layers.iter().flatten())
        .all(|l| l.media_type.starts_with("application/vnd.docker.")));
    let b = Kit::new();
    let o = opts(&b, &ctx, &b.path("out")).cache_import(&format!("type=local,src={}", cache.display())).unwrap();
    let (r, ev) = b.solve(&graph(), o).await;
    r.unwrap();
    assert!(started(&ev).iter().all(|n| n.starts_with("local://")), "{:?}", started(&ev));
}
