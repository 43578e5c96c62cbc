//! Cache mounts are cache records (BuildKit's `exec.cachemount`): disk usage lists each one with
//! its size and the mount that created it, prune removes them (least recently used first within
//! `keep_bytes`, all of them with `all`), and a pruned cache starts empty.

mod common;

use common::kit::{base, sh, Kit};
use kiln::graph::{CacheSharing, MountSpec, State};
use kiln::UsageRecord;

fn filler(marker: &str) -> State {
    base()
        .run(
            sh(&format!("ls /cache > /seen-{marker} && head -c 300000 /dev/zero > /cache/blob && echo {marker}"))
                .mount(MountSpec::cache("/cache", "pkgs", CacheSharing::Shared)),
        )
        .root()
}

fn mounts(du: &[UsageRecord]) -> Vec<&UsageRecord> {
    du.iter().filter(|u| u.record_type == UsageRecord::CACHE_MOUNT).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn cache_mounts_are_listed_and_pruned() {
    let k = Kit::new();
    let (r, ev) = k.solve(&filler("one"), k.opts()).await;
    r.unwrap_or_else(|e| panic!("{e} {ev:#?}"));

    let du = k.engine().disk_usage().await.unwrap();
    let listed = mounts(&du);
    assert_eq!(listed.len(), 1, "{du:#?}");
    let m = listed[0];
    assert!(m.size >= 300_000, "{m:?}");
    assert!(m.description.starts_with("cached mount /cache from exec /bin/sh -c ls /cache"), "{m:?}");
    assert!(m.worker.is_empty() && m.last_used > 0, "{m:?}");
    let total: u64 = du.iter().map(|u| u.size).sum();

    // Within the limit nothing goes; prune --all removes the cache mount with everything else.
    let report = k.engine().prune(total * 2, false).await.unwrap();
    assert_eq!(report.removed, 0, "{report:?}");
    assert_eq!(mounts(&k.engine().disk_usage().await.unwrap()).len(), 1);
    let report = k.engine().prune(0, true).await.unwrap();
    assert!(report.freed_bytes >= 300_000, "{report:?}");
    assert!(k.engine().disk_usage().await.unwrap().is_empty());
    let left: Vec<_> = std::fs::read_dir(k.engine().root().join("cache-mounts")).unwrap().flatten().collect();
    assert!(left.is_empty(), "cache-mount dirs left: {left:?}");

    // The cache starts empty again; a prune to 0 bytes (not --all) removes it too, as BuildKit's.
    let out = k.path("out");
    let (r, ev) =
        k.solve(&filler("two"), k.opts().output(&format!("type=local,dest={}", out.display())).unwrap()).await;
    r.unwrap_or_else(|e| panic!("{e} {ev:#?}"));
    assert_eq!(std::fs::read_to_string(out.join("seen-two")).unwrap(), "", "the pruned cache starts empty");
    assert_eq!(mounts(&k.engine().disk_usage().await.unwrap()).len(), 1);
    k.engine().prune(0, false).await.unwrap();
    assert!(k.engine().disk_usage().await.unwrap().is_empty());
    k.assert_no_leaks();
}
