//! No leaks: after 50 solves mixing successes, failures and cancellations, no mount of the root
//! remains, no container remains in the runtime's state dir, and every snapshot on disk is one a
//! cache record references.

mod common;

use common::kit::{base, sh, Kit};
use kiln::solver::{ProgressEvent, ProgressSink};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread")]
async fn fifty_mixed_solves_leave_nothing_behind() {
    let k = Kit::new();
    let (mut ok, mut failed, mut cancelled) = (0, 0, 0);
    for i in 0..50 {
        match i % 3 {
            0 => {
                let st = base().run(sh(&format!("echo {i} > /n && mkdir -p /d/{i}"))).root();
                let (r, ev) = k.solve(&st, k.opts()).await;
                r.unwrap_or_else(|e| panic!("solve {i}: {e}: {ev:#?}"));
                ok += 1;
            }
            1 => {
                let st = base().run(sh(&format!("echo partial-{i} > /p && exit {}", 1 + i % 5))).root();
                let (r, _) = k.solve(&st, k.opts()).await;
                assert_eq!(r.unwrap_err().kind(), kiln::ErrorKind::Exec);
                failed += 1;
            }
            _ => {
                let st = base()
                    .run(sh(&format!("echo begin-{i}; touch /x; exec sleep 1000")))
                    .root()
                    .run(sh("echo never"))
                    .root();
                let def = st.to_definition().unwrap();
                let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
                let mut opts = k.opts();
                opts.progress = ProgressSink::new(move |e| {
                    if matches!(&e, ProgressEvent::Log { data, .. } if data.starts_with(b"begin-")) {
                        let _ = tx.send(());
                    }
                });
                let engine = k.engine().clone();
                let task = tokio::spawn(async move { engine.solve(&def, opts).await });
                rx.recv().await.expect("container started");
                task.abort();
                assert!(task.await.unwrap_err().is_cancelled());
                tokio::time::timeout(Duration::from_secs(60), k.engine().wait_idle()).await.expect("cleanup finished");
                cancelled += 1;
            }
        }
    }
    assert_eq!((ok, failed, cancelled), (17, 17, 16));
    k.assert_no_leaks();
    let snaps: usize = k.engine().snapshots().unwrap().values().map(Vec::len).sum();
    let recorded = k.engine().recorded_snapshots().unwrap().len();
    println!("after 50 solves: {snaps} snapshots on disk, {recorded} referenced by records");
    assert_eq!(snaps, recorded, "the number of snapshots equals what the cache records reference");
    // Nothing left in the runtime's state dir or the bundle dir either.
    let state = k.engine().root().join("runtime/runc");
    let left: Vec<_> =
        std::fs::read_dir(&state).map(|d| d.flatten().map(|e| e.file_name()).collect()).unwrap_or_default();
    assert!(left.is_empty(), "runc state left: {left:?}");
    let bundles: Vec<_> = std::fs::read_dir(k.engine().root().join("bundles"))
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(bundles.is_empty(), "bundles left: {bundles:?}");
}
