//! Fault suite, full disks (issue 14), with the real `kiln` binary on small tmpfs mounts (tests
//! run as root; each tmpfs is unmounted by a drop guard):
//! - a full cache export destination: the build fails with an error naming the path and the
//!   cause (ENOSPC), the previous tag stays intact and importable, nothing half-written stays, and
//!   the directory takes exports again;
//! - a full engine root: writing a layer fails naming the entry, the blob path and the cause
//!   (defect 13a: the cause was missing), nothing is left mounted or running, the previous cache
//!   is intact, and the root is usable after space is freed.
//!
//! Figures go to the fault summary (`fault_disk.txt`).

mod fault_common;

use fault_common::*;
use std::time::Instant;

const ENOSPC: &str = "No space left on device";

fn export_local(dir: &std::path::Path, tag: &str, mode: &str) -> Vec<String> {
    vec!["--export-cache".into(), format!("type=local,dest={},tag={tag},mode={mode}", dir.display())]
}

#[test]
fn full_export_destination_fails_clearly_and_keeps_the_previous_cache() {
    let env = Env::new();
    let fs = Tmpfs::mount(&env.path("small"), "3m");
    let cache = fs.dir.join("cache");
    let root = env.path("root");
    let prev = env.def("prev", &tiny("prev", 64));
    ok(env.build_cmd(&root, &prev, &export_local(&cache, "prev", "max")));

    // 4 MiB of random bytes do not compress: the layer cannot fit in 3 MiB.
    let big = env.def("big", &tiny("big", 4 * 1024));
    let t0 = Instant::now();
    let o = run(env.build_cmd(&root, &big, &export_local(&cache, "big", "max")));
    let time_to_error = t0.elapsed();
    let err = text(&o.stderr);
    assert!(!o.status.success(), "an export larger than its destination must fail:\n{err}");
    let error_line = err.lines().filter(|l| l.starts_with("error: ")).collect::<Vec<_>>().join("\n");
    println!("{error_line}");
    assert!(error_line.contains(ENOSPC), "the error names the cause:\n{err}");
    assert!(error_line.contains(&cache.display().to_string()), "the error names the destination path:\n{err}");

    // The previous tag is intact and imports fully CACHED; nothing half-written stays.
    let tags = verify_layout(&cache).expect("the cache directory reopens");
    assert_eq!(tags, vec!["prev".to_owned()]);
    let leftovers = count_entries(&cache.join("ingest")) + count_entries(&cache.join("kiln-leases"));
    let left = leaks(&root);
    let o = run(env.build_cmd(
        &env.path("fresh"),
        &prev,
        &["--import-cache".into(), format!("type=local,src={},tag=prev", cache.display())],
    ));
    assert!(o.status.success() && fully_cached(&text(&o.stderr)), "prev imports fully CACHED:\n{}", text(&o.stderr));
    // The destination takes a small export again, and the engine root builds.
    ok(env.build_cmd(&root, &env.def("after", &tiny("after", 64)), &export_local(&cache, "after", "max")));
    assert_eq!(verify_layout(&cache).expect("after"), vec!["after".to_owned(), "prev".to_owned()]);
    record(
        "fault_disk",
        "full_export_destination_3m",
        &[
            ("trials", "1".into()),
            ("failures", "0".into()),
            ("leaks", (leftovers + left.len()).to_string()),
            ("time_to_error_ms", time_to_error.as_millis().to_string()),
        ],
    );
    assert_eq!(leftovers, 0, "ingest or lease files left in {}", cache.display());
    assert!(left.is_empty(), "{left:#?}");
}

/// Defect 13a: running out of disk while writing a layer reported
/// "writing layer entry in/part2" without the cause. The RUN's 6 MiB file fits in the 16 MiB
/// root; its layer (written into the root's content store for the cache export) does not.
#[test]
fn full_engine_root_names_path_and_cause_and_recovers() {
    let env = Env::new();
    let fs = Tmpfs::mount(&env.path("smallroot"), "16m");
    let root = fs.dir.join("root");
    let cache = env.path("cache");
    let prev = env.def("prev", &tiny("prev", 64));
    ok(env.build_cmd(&root, &prev, &export_local(&cache, "prev", "max")));

    let st = kiln::graph::State::local("rootfs")
        .run(kiln::graph::ExecOptions::shell(
            "mkdir -p /in && head -c 3145728 /dev/urandom > /in/part1 && head -c 3145728 /dev/urandom > /in/part2",
        ))
        .root();
    let big = env.def("big", &st);
    let t0 = Instant::now();
    let o = run(env.build_cmd(&root, &big, &export_local(&cache, "big", "max")));
    let time_to_error = t0.elapsed();
    let err = text(&o.stderr);
    assert!(!o.status.success(), "a layer larger than the free space must fail:\n{err}");
    let error_line = err.lines().filter(|l| l.starts_with("error: ")).collect::<Vec<_>>().join("\n");
    println!("{error_line}");
    assert!(error_line.contains(ENOSPC), "13a: the error names the cause (ENOSPC):\n{err}");
    assert!(error_line.contains(&root.display().to_string()), "the error names a path in the root:\n{err}");

    let left = leaks(&root);
    let ingest = count_entries(&root.join("content/ingest"));
    // The previous cache is intact.
    let o = run(env.build_cmd(
        &env.path("fresh"),
        &prev,
        &["--import-cache".into(), format!("type=local,src={},tag=prev", cache.display())],
    ));
    assert!(o.status.success() && fully_cached(&text(&o.stderr)), "prev imports fully CACHED:\n{}", text(&o.stderr));
    assert_eq!(verify_layout(&cache).expect("cache"), vec!["prev".to_owned()]);
    // Free space (prune the root's records), then the root builds, exports and reports usage.
    let mut c = kiln(&root);
    c.args(["prune", "--all"]);
    ok(c);
    ok(env.build_cmd(&root, &env.def("after", &tiny("after", 64)), &export_local(&cache, "after", "max")));
    assert_ne!(du_total(&root), "0B");
    record(
        "fault_disk",
        "full_engine_root_16m",
        &[
            ("trials", "1".into()),
            ("failures", "0".into()),
            ("leaks", (left.len() + ingest).to_string()),
            ("time_to_error_ms", time_to_error.as_millis().to_string()),
        ],
    );
    assert!(left.is_empty(), "{left:#?}");
    assert_eq!(ingest, 0, "half-written blobs left in the root's ingest");
}
