//! Pipelined layer creation for `mode=max` cache exports: a vertex's layer is made as soon as the
//! vertex has executed, while the rest of the graph runs; a failed or cancelled solve leaves no
//! layer thread behind, no mount and no unreferenced snapshot; the export that follows reuses the
//! blobs made during the solve.

mod common;

use common::kit::{base, sh, started, Kit};
use kiln::solver::{ProgressEvent, ProgressSink};
use std::io::Read;
use std::path::Path;
use std::time::Duration;

/// The engine's content store: every blob, decompressed when gzip.
fn engine_blobs(root: &Path) -> Vec<Vec<u8>> {
    let dir = root.join("content/blobs/sha256");
    let mut out = Vec::new();
    for e in std::fs::read_dir(&dir).map(|d| d.flatten().collect::<Vec<_>>()).unwrap_or_default() {
        let raw = std::fs::read(e.path()).unwrap();
        let mut data = Vec::new();
        if raw.starts_with(&[0x1f, 0x8b]) {
            flate2::read::GzDecoder::new(raw.as_slice()).read_to_end(&mut data).unwrap();
        } else {
            data = raw;
        }
        out.push(data);
    }
    out
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test(flavor = "multi_thread")]
async fn layer_of_an_executed_vertex_is_made_while_the_graph_runs() {
    let k = Kit::new();
    let cache = k.path("cache");
    // The second step fails long after the first completed: the export never runs, so the first
    // step's layer in the engine's store was made during the solve.
    let st = base().run(sh("echo pipelined-layer-marker-1 > /marker")).root().run(sh("sleep 2; exit 3")).root();
    let opts = k.opts().cache_export(&format!("type=local,dest={},mode=max", cache.display())).unwrap();
    let (r, _) = k.solve(&st, opts).await;
    assert_eq!(r.unwrap_err().kind(), kiln::ErrorKind::Exec);
    let blobs = engine_blobs(k.engine().root());
    assert!(
        blobs.iter().any(|b| contains(b, b"pipelined-layer-marker-1")),
        "the executed step's layer is in the engine's store ({} blobs)",
        blobs.len()
    );
    assert!(!cache.join("index.json").exists(), "a failed solve exports no cache");
    // The solve returned after its layer threads: nothing is left to wait for.
    tokio::time::timeout(Duration::from_secs(5), k.engine().wait_idle()).await.expect("no task left");
    k.assert_no_leaks();

    // Without a mode=max exporter, nothing is made during the solve.
    let k2 = Kit::new();
    let (r, _) = k2.solve(&st, k2.opts()).await;
    assert!(r.is_err());
    let blobs = engine_blobs(k2.engine().root());
    assert!(!blobs.iter().any(|b| contains(b, b"pipelined-layer-marker-1")), "no layer without a cache export");
}

#[tokio::test(flavor = "multi_thread")]
async fn export_after_a_pipelined_solve_round_trips() {
    let k = Kit::new();
    let cache = k.path("cache");
    // Two parallel stages and a stage copying both: layers of all five results.
    let a = base().run(sh("head -c 3000000 /dev/urandom > /a")).root();
    let b = base().run(sh("mkdir /b && for i in $(seq 1 300); do echo $i > /b/f$i; done")).root();
    let st = base()
        .copy(&a, "/a", "/out/a", kiln::graph::CopyOptions { create_dest_path: true, ..Default::default() })
        .copy(&b, "/b", "/out/b", kiln::graph::CopyOptions { create_dest_path: true, ..Default::default() })
        .run(sh("ls /out/b | wc -l > /count"))
        .root();
    let spec = format!("type=local,dest={},mode=max", cache.display());
    let (r, ev) = k.solve(&st, k.opts().cache_export(&spec).unwrap()).await;
    r.unwrap_or_else(|e| panic!("{e}: {ev:#?}"));
    // A second exporter of another compression in a later solve reuses the engine's blobs.
    let zstd = k.path("cache-zstd");
    let spec2 = format!("type=local,dest={},mode=max,compression=zstd", zstd.display());
    let (r, _) = k.solve(&st, k.opts().cache_export(&spec2).unwrap()).await;
    r.unwrap();

    // A fresh root importing the cache gets every non-local vertex CACHED.
    for dir in [&cache, &zstd] {
        let fresh = Kit::new();
        let out = fresh.path("out");
        let opts = fresh
            .opts()
            .cache_import(&format!("type=local,src={}", dir.display()))
            .unwrap()
            .output(&format!("type=local,dest={}", out.display()))
            .unwrap();
        let (r, ev) = fresh.solve(&st, opts).await;
        let r = r.unwrap_or_else(|e| panic!("{e}: {ev:#?}"));
        let ran: Vec<String> = started(&ev).into_iter().filter(|n| !n.starts_with("local://")).collect();
        assert!(ran.is_empty(), "only local sources run (read for their checksums): {ran:?}");
        assert!(r.cached >= 5, "{r:?}");
        assert_eq!(std::fs::read_to_string(out.join("count")).unwrap().trim(), "300");
        assert_eq!(std::fs::metadata(out.join("out/a")).unwrap().len(), 3_000_000);
        fresh.assert_no_leaks();
    }
    k.assert_no_leaks();
}

#[tokio::test(flavor = "multi_thread")]
async fn cancelled_solve_with_layers_in_flight_releases_everything() {
    let k = Kit::new();
    let cache = k.path("cache");
    // Big layers being made while the last step runs, then the solve is cancelled.
    let a = base().run(sh("head -c 40000000 /dev/urandom > /a")).root();
    let b = base().run(sh("head -c 40000000 /dev/urandom > /b")).root();
    let st = base()
        .copy(&a, "/a", "/a", Default::default())
        .copy(&b, "/b", "/b", Default::default())
        .run(sh("echo begin-last; exec sleep 1000"))
        .root();
    let def = st.to_definition().unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut opts = k.opts().cache_export(&format!("type=local,dest={},mode=max", cache.display())).unwrap();
    opts.progress = ProgressSink::new(move |e| {
        if matches!(&e, ProgressEvent::Log { data, .. } if data.starts_with(b"begin-last")) {
            let _ = tx.send(());
        }
    });
    let engine = k.engine().clone();
    let task = tokio::spawn(async move { engine.solve(&def, opts).await });
    tokio::time::timeout(Duration::from_secs(120), rx.recv()).await.expect("last step started").expect("event");
    task.abort();
    assert!(task.await.unwrap_err().is_cancelled());
    tokio::time::timeout(Duration::from_secs(120), k.engine().wait_idle()).await.expect("cleanup finished");
    k.assert_no_leaks();
    let snaps: usize = k.engine().snapshots().unwrap().values().map(Vec::len).sum();
    assert_eq!(snaps, k.engine().recorded_snapshots().unwrap().len());
    assert!(!cache.join("index.json").exists(), "a cancelled solve exports no cache");
    // The engine stays usable, and the cached steps' layers serve the next export.
    let (r, ev) = k
        .solve(
            &base().copy(&a, "/a", "/a", Default::default()),
            k.opts().cache_export(&format!("type=local,dest={},mode=max", cache.display())).unwrap(),
        )
        .await;
    r.unwrap_or_else(|e| panic!("{e}: {ev:#?}"));
    assert!(cache.join("index.json").exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn build_context_gets_no_layer() {
    // A local context is copied from, never a parent: its own layer is never needed, so the
    // pipeline never makes it (it could be large, and it holds files the build did not use).
    let k = Kit::new();
    let ctx = k.path("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(ctx.join("used.txt"), "used").unwrap();
    std::fs::write(ctx.join("unused.txt"), "context-canary-5d1e").unwrap();
    let st = base().run(sh("echo ran > /ran")).root().copy(
        &kiln::graph::State::local("ctx"),
        "/used.txt",
        "/used.txt",
        Default::default(),
    );
    let cache = k.path("cache");
    let opts =
        k.opts().local("ctx", &ctx).cache_export(&format!("type=local,dest={},mode=max", cache.display())).unwrap();
    let (r, ev) = k.solve(&st, opts).await;
    r.unwrap_or_else(|e| panic!("{e}: {ev:#?}"));
    let blobs = engine_blobs(k.engine().root());
    assert!(blobs.iter().any(|b| contains(b, b"ran")), "the RUN's layer was made");
    assert!(!blobs.iter().any(|b| contains(b, b"context-canary-5d1e")), "no blob holds the context");
    k.assert_no_leaks();
}
