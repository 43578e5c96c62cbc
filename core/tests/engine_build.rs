//! End-to-end engine tests with real runc, real overlayfs and the native snapshotter: every op and
//! mount kind, cache hits across restarts, invalidation precision, parallelism, dedup, failures,
//! cancellation, secrets, readonly rootfs, exporters and workers.

mod common;

use common::kit::{base, cached, read, sh, solve_def, started, Kit};
use kiln::engine::{SnapshotterKind, SolveOptions};
use kiln::graph::{
    CacheSharing, CopyOptions, MkdirOptions, MkfileOptions, MountSpec, Network, OciRef, RmOptions, State,
};
use kiln::solver::ProgressEvent;
use kiln::ErrorKind;
use std::collections::BTreeMap;

fn app(ctx: &State) -> State {
    base().run(sh("echo built > /hello && mkdir -p /out && cp /hello /out/")).root().copy(
        ctx,
        "/a.txt",
        "/out/a.txt",
        CopyOptions { create_dest_path: true, ..Default::default() },
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn run_copy_export_then_everything_cached_after_restart() {
    let mut k = Kit::new();
    let ctx = k.path("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(ctx.join("a.txt"), "A").unwrap();
    let out = k.path("out");
    let st = app(&State::local("ctx"));
    let rootfs = k.rootfs.clone();
    let opts = || {
        SolveOptions::default()
            .local("rootfs", &rootfs)
            .local("ctx", &ctx)
            .output(&format!("type=local,dest={}", out.display()))
            .unwrap()
    };
    let (r, ev) = k.solve(&st, opts()).await;
    let r = r.unwrap();
    assert!(r.executed >= 3, "{ev:?}");
    assert_eq!(read(&out.join("out/hello")), "built\n");
    assert_eq!(read(&out.join("out/a.txt")), "A");
    k.reopen();
    std::fs::remove_dir_all(&out).unwrap();
    let (r, ev) = k.solve(&st, opts()).await;
    let r = r.unwrap();
    assert_eq!(r.executed, 0, "nothing may run on a warm root: {:?}", started(&ev));
    assert_eq!(cached(&ev).len(), r.cached);
    assert!(r.cached >= 4);
    assert_eq!(read(&out.join("out/a.txt")), "A");
    k.assert_no_leaks();
}

#[tokio::test(flavor = "multi_thread")]
async fn unrelated_local_change_keeps_copy_cached() {
    let k = Kit::new();
    let ctx = k.path("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(ctx.join("a.txt"), "A").unwrap();
    std::fs::write(ctx.join("b.txt"), "B").unwrap();
    let copy_name = "copy a.txt";
    let st = base()
        .copy(&State::local("ctx"), "/a.txt", "/a.txt", CopyOptions::default())
        .with_custom_name(copy_name)
        .run(sh("cat /a.txt > /seen"))
        .root();
    let (r, _) = k.solve(&st, k.opts().local("ctx", &ctx)).await;
    r.unwrap();
    std::fs::write(ctx.join("b.txt"), "B2").unwrap();
    let (r, ev) = k.solve(&st, k.opts().local("ctx", &ctx)).await;
    r.unwrap();
    assert!(cached(&ev).iter().any(|n| n == copy_name), "copy must stay cached: {ev:#?}");
    assert!(!started(&ev).iter().any(|n| n.contains("cat /a.txt")), "the run after the copy must stay cached");
    std::fs::write(ctx.join("a.txt"), "A2").unwrap();
    let (r, ev) = k.solve(&st, k.opts().local("ctx", &ctx)).await;
    r.unwrap();
    assert!(started(&ev).iter().any(|n| n == copy_name), "a change to a.txt must re-run the copy");
}

#[tokio::test(flavor = "multi_thread")]
async fn independent_vertices_run_concurrently() {
    // Each side opens a fifo the other side opens too: run one after the other, they would block
    // (bounded by `timeout`) and fail. Success proves both containers ran at the same time.
    let k = Kit::new();
    let shared = MountSpec::cache("/sync", "sync-fifos", CacheSharing::Shared);
    let setup = base().run(sh("true")).root();
    let a = setup
        .run(
            sh("mkfifo /sync/p1 /sync/p2 2>/dev/null; timeout 30 sh -c 'echo a > /sync/p1; cat /sync/p2' > /got-a")
                .mount(shared.clone()),
        )
        .root();
    let b = setup
        .run(
            sh("mkfifo /sync/p1 /sync/p2 2>/dev/null; timeout 30 sh -c 'cat /sync/p1; echo b > /sync/p2' > /got-b")
                .mount(shared),
        )
        .root();
    let both = State::merge(vec![a, b]);
    let out = k.path("out");
    let (r, ev) = k.solve(&both, k.opts().output(&format!("type=local,dest={}", out.display())).unwrap()).await;
    r.unwrap_or_else(|e| panic!("{e}: {ev:#?}"));
    assert_eq!(read(&out.join("got-a")), "b\n");
    assert_eq!(read(&out.join("got-b")), "a\n");
    // Event order: both started before either completed.
    let pos = |pred: &dyn Fn(&ProgressEvent) -> bool| ev.iter().position(|e| pred(e)).unwrap();
    let second_start = ev
        .iter()
        .enumerate()
        .filter(|(_, e)| matches!(e, ProgressEvent::VertexStarted { name, .. } if name.contains("mkfifo")))
        .map(|(i, _)| i)
        .nth(1)
        .expect("two fifo vertices started");
    let first_done = pos(&|e| matches!(e, ProgressEvent::VertexCompleted { name, .. } if name.contains("mkfifo")));
    assert!(second_start < first_done, "{ev:#?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_identical_vertices_run_once() {
    let k = Kit::new();
    let st = base().run(sh("echo once > /once")).root();
    let def = st.to_definition().unwrap();
    let (r1, r2) = tokio::join!(solve_def(k.engine(), &def, k.opts()), solve_def(k.engine(), &def, k.opts()));
    r1.0.unwrap();
    r2.0.unwrap();
    let runs = started(&r1.1).iter().chain(started(&r2.1).iter()).filter(|n| n.contains("echo once")).count();
    assert_eq!(runs, 1, "identical exec must run once across concurrent solves");
    let hits = cached(&r1.1).iter().chain(cached(&r2.1).iter()).filter(|n| n.contains("echo once")).count();
    assert_eq!(hits, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn failing_exec_reports_exit_code_and_log_tail() {
    let k = Kit::new();
    let st = base().run(sh("echo first; echo oops >&2; exit 3")).root();
    let (r, ev) = k.solve(&st, k.opts()).await;
    let err = r.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Exec);
    match &err {
        kiln::Error::Exec { exit_code, log_tail, vertex, .. } => {
            assert_eq!(*exit_code, 3);
            assert!(log_tail.iter().any(|l| l == "oops"), "{log_tail:?}");
            assert!(vertex.contains("exit 3"));
        }
        other => panic!("unexpected {other}"),
    }
    assert!(err.to_string().contains("exit code: 3"));
    assert!(ev.iter().any(|e| matches!(e, ProgressEvent::VertexError { .. })));
    k.assert_no_leaks();
}

#[tokio::test(flavor = "multi_thread")]
async fn cancellation_kills_container_and_releases_everything() {
    let k = Kit::new();
    let st = base().run(sh("echo started; exec sleep 1000")).root();
    let def = st.to_definition().unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut opts = k.opts();
    opts.progress = kiln::solver::ProgressSink::new(move |e| {
        if let ProgressEvent::Log { data, .. } = &e {
            if String::from_utf8_lossy(data).contains("started") {
                let _ = tx.send(());
            }
        }
    });
    let engine = k.engine().clone();
    let solve = tokio::spawn(async move { engine.solve(&def, opts).await });
    rx.recv().await.expect("container started");
    solve.abort();
    let _ = solve.await;
    // Aborted vertex tasks run their guards when dropped; wait_idle returns once they all have.
    tokio::time::timeout(std::time::Duration::from_secs(60), k.engine().wait_idle()).await.expect("cleanup finished");
    assert!(!mounted(&k));
    k.assert_no_leaks();
    let ps = std::process::Command::new("sh")
        .arg("-c")
        .arg("ps -eo args | grep -c '^sleep 1000$' || true")
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&ps.stdout).trim(), "0", "container process survived");
}

fn mounted(k: &Kit) -> bool {
    let root = k.engine().root().to_string_lossy().to_string();
    std::fs::read_to_string("/proc/self/mountinfo").unwrap().lines().any(|l| l.contains(&root))
}

#[tokio::test(flavor = "multi_thread")]
async fn secret_is_visible_to_run_but_absent_from_snapshots_and_exports() {
    let k = Kit::new();
    let secret = b"s3cr3t-VALUE-42";
    let st = base()
        .run(
            sh("grep -q '^s3cr3t-' /run/secrets/tok && grep -q 'VALUE-42$' /run/secrets/tok && echo ok > /checked")
                .mount(MountSpec::secret("/run/secrets/tok", "tok", 0, 0, 0o400, false)),
        )
        .root();
    let out = k.path("out");
    let oci = k.path("img");
    let tar = k.path("fs.tar");
    let mut opts = k
        .opts()
        .output(&format!("type=local,dest={}", out.display()))
        .unwrap()
        .output(&format!("type=oci,dest={},tar=false", oci.display()))
        .unwrap()
        .output(&format!("type=tar,dest={}", tar.display()))
        .unwrap();
    opts.secrets.insert("tok".into(), secret.to_vec());
    let (r, ev) = k.solve(&st, opts).await;
    r.unwrap_or_else(|e| panic!("{e} {ev:#?}"));
    assert_eq!(read(&out.join("checked")), "ok\n");
    assert!(!out.join("run/secrets/tok").exists());
    let grep = |dir: &std::path::Path| {
        std::process::Command::new("grep")
            .arg("-r")
            .arg("-a")
            .arg("-l")
            .arg("s3cr3t-VALUE-42")
            .arg(dir)
            .output()
            .unwrap()
    };
    assert!(
        grep(&k.root).stdout.is_empty(),
        "secret found in root: {}",
        String::from_utf8_lossy(&grep(&k.root).stdout)
    );
    assert!(grep(&out).stdout.is_empty());
    assert!(grep(&tar).stdout.is_empty());
    let z = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "for f in {}/blobs/sha256/*; do zcat -f $f; done | grep -a -c s3cr3t-VALUE-42 || true",
            oci.display()
        ))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&z.stdout).trim(), "0");
    // Missing secret: a clear error naming it.
    let needs = base().run(sh("cat /s").mount(MountSpec::secret("/s", "tok", 0, 0, 0o400, false))).root();
    let (r, _) = k.solve(&needs, k.opts()).await;
    let e = r.unwrap_err();
    assert!(e.to_string().contains("\"tok\""), "{e}");
}

#[tokio::test(flavor = "multi_thread")]
async fn readonly_rootfs_blocks_writes_but_proc_and_mounts_work() {
    let k = Kit::new();
    let st = base().run(
        sh("if touch /x 2>/dev/null; then echo WROTE; exit 1; fi; test -r /proc/self/status && echo ok > /out/r")
            .readonly_rootfs()
            .mount(MountSpec::bind("/out", &State::scratch(), false)),
    );
    let out_state = st.mount_output("/out").expect("rw bind output");
    let out = k.path("out");
    let (r, ev) = k.solve(&out_state, k.opts().output(&format!("type=local,dest={}", out.display())).unwrap()).await;
    r.unwrap_or_else(|e| panic!("{e} {ev:#?}"));
    assert_eq!(read(&out.join("r")), "ok\n");
}

#[tokio::test(flavor = "multi_thread")]
async fn every_mount_kind() {
    let k = Kit::new();
    let data = State::scratch().mkfile("/d.txt", 0o644, "data", MkfileOptions::default());
    let cache_writer = base()
        .run(
            sh("echo persisted > /c/v").mount(MountSpec::cache("/c", "kit-cache", CacheSharing::Locked)).ignore_cache(),
        )
        .root();
    let (r, _) = k.solve(&cache_writer, k.opts()).await;
    r.unwrap();
    let st = base().run(
        sh("cat /ro/d.txt > /res-ro && (touch /ro/x 2>/dev/null && exit 9 || true) \
            && echo w > /rw/new && cat /c/v > /res-cache && echo t > /t/x && cat /t/x > /res-tmpfs \
            && grep -q ' /t tmpfs' /proc/mounts")
        .mount(MountSpec::bind("/ro", &data, true))
        .mount(MountSpec::bind("/rw", &data, false))
        .mount(MountSpec::cache("/c", "kit-cache", CacheSharing::Shared))
        .mount(MountSpec::tmpfs("/t", 1 << 20)),
    );
    let rw = st.mount_output("/rw").unwrap();
    let both = State::merge(vec![st.root(), rw.with_custom_name("rw")]);
    let out = k.path("out");
    let (r, ev) = k.solve(&both, k.opts().output(&format!("type=local,dest={}", out.display())).unwrap()).await;
    r.unwrap_or_else(|e| panic!("{e} {ev:#?}"));
    assert_eq!(read(&out.join("res-ro")), "data");
    assert_eq!(read(&out.join("res-cache")), "persisted\n");
    assert_eq!(read(&out.join("res-tmpfs")), "t\n");
    assert_eq!(read(&out.join("new")), "w\n", "rw bind output merged on top");
    assert!(!out.join("t/x").exists(), "tmpfs content is not part of the result");
    k.assert_no_leaks();
}

#[tokio::test(flavor = "multi_thread")]
async fn file_ops_and_merge() {
    let k = Kit::new();
    let a = State::scratch()
        .mkdir("/a/b", MkdirOptions { make_parents: true, ..Default::default() })
        .mkfile("/a/b/f", 0o600, "F", MkfileOptions::default())
        .symlink("b/f", "/a/link")
        .mkfile("/gone", 0o644, "x", MkfileOptions::default())
        .rm("/gone", RmOptions::default());
    let b = State::scratch().mkfile("/other", 0o644, "O", MkfileOptions::default());
    let c = State::scratch().copy(&a, "/a", "/copied", CopyOptions { dir_copy_contents: false, ..Default::default() });
    let m = State::merge(vec![a, b, c]);
    let out = k.path("out");
    let (r, ev) = k.solve(&m, k.opts().output(&format!("type=local,dest={}", out.display())).unwrap()).await;
    r.unwrap_or_else(|e| panic!("{e} {ev:#?}"));
    assert_eq!(read(&out.join("a/b/f")), "F");
    assert_eq!(std::fs::read_link(out.join("a/link")).unwrap().to_str().unwrap(), "b/f");
    assert!(!out.join("gone").exists());
    assert_eq!(read(&out.join("other")), "O");
    assert_eq!(read(&out.join("copied/b/f")), "F");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(out.join("a/b/f")).unwrap().permissions().mode() & 0o777, 0o600);
}

#[tokio::test(flavor = "multi_thread")]
async fn network_none_has_only_loopback() {
    let k = Kit::new();
    let st = base().run(sh("ls /sys/class/net > /nets").network(Network::None)).root();
    let out = k.path("out");
    let (r, _) = k.solve(&st, k.opts().output(&format!("type=local,dest={}", out.display())).unwrap()).await;
    r.unwrap();
    assert_eq!(read(&out.join("nets")).trim(), "lo");
}

#[tokio::test(flavor = "multi_thread")]
async fn native_snapshotter_builds_and_caches() {
    let mut k = Kit::native();
    assert_eq!(k.engine().workers()[0].name, "runc-native");
    let st = base().run(sh("echo n > /n && rm /bin/vi")).root().run(sh("test ! -e /bin/vi && cat /n > /m")).root();
    let oci = k.path("img");
    let out = k.path("out");
    let rootfs = k.rootfs.clone();
    let opts = || {
        SolveOptions::default()
            .local("rootfs", &rootfs)
            .output(&format!("type=local,dest={}", out.display()))
            .unwrap()
            .output(&format!("type=oci,dest={},tar=false", oci.display()))
            .unwrap()
    };
    let (r, ev) = k.solve(&st, opts()).await;
    r.unwrap_or_else(|e| panic!("{e} {ev:#?}"));
    assert_eq!(read(&out.join("m")), "n\n");
    k.reopen();
    let (r, _) = k.solve(&st, opts()).await;
    assert_eq!(r.unwrap().executed, 0);
    k.assert_no_leaks();
}

#[tokio::test(flavor = "multi_thread")]
async fn worker_selector_picks_a_worker_and_unknown_selector_errors() {
    let k = Kit::with(vec![SnapshotterKind::Overlayfs, SnapshotterKind::Native]);
    let names: Vec<String> = k.engine().workers().into_iter().map(|w| w.name).collect();
    assert_eq!(names, vec!["runc-overlayfs", "runc-native"]);
    let sel = BTreeMap::from([("snapshotter".to_owned(), "native".to_owned())]);
    let st = base().run(sh("echo on-native > /w").worker_selector("snapshotter", "native")).root();
    let out = k.path("out");
    let (r, ev) = k.solve(&st, k.opts().output(&format!("type=local,dest={}", out.display())).unwrap()).await;
    r.unwrap_or_else(|e| panic!("{e} {ev:#?}"));
    assert_eq!(read(&out.join("w")), "on-native\n");
    let recorded = k.engine().recorded_snapshots().unwrap();
    assert!(recorded.iter().any(|(w, _)| w == "runc-native"));
    let bad = base().with_worker_selector(BTreeMap::from([("snapshotter".to_owned(), "zfs".to_owned())]));
    let bad = bad.run(sh("true")).root().with_worker_selector(sel);
    let (r, _) = k.solve(&bad, k.opts()).await;
    let e = r.unwrap_err();
    assert!(e.to_string().contains("runc-overlayfs") && e.to_string().contains("runc-native"), "{e}");
}

#[tokio::test(flavor = "multi_thread")]
async fn oci_export_is_valid_and_usable_as_source() {
    let k = Kit::new();
    let img_dir = k.path("img");
    let st = base().run(sh("echo from-image > /marker")).root().with_cwd("/work").with_env("FOO", "bar");
    let mut opts = k.opts().output(&format!("type=oci,dest={},tar=false,name=v1", img_dir.display())).unwrap();
    opts.image_config = st.image_config();
    opts.image_config.entrypoint = Some(vec!["/bin/sh".into()]);
    let (r, ev) = k.solve(&st, opts).await;
    let r = r.unwrap_or_else(|e| panic!("{e} {ev:#?}"));
    assert!(r.exporter_response["containerimage.digest"].starts_with("sha256:"));
    let sk = std::process::Command::new("skopeo")
        .arg("inspect")
        .arg(format!("oci:{}:v1", img_dir.display()))
        .output()
        .expect("skopeo installed");
    assert!(sk.status.success(), "skopeo: {}", String::from_utf8_lossy(&sk.stderr));
    let uc = std::process::Command::new("umoci")
        .arg("stat")
        .arg("--image")
        .arg(format!("{}:v1", img_dir.display()))
        .output()
        .expect("umoci installed");
    assert!(uc.status.success(), "umoci: {}", String::from_utf8_lossy(&uc.stderr));
    let oit = std::process::Command::new("oci-image-tool")
        .args(["validate", "--type", "image", "--ref", "name=v1"])
        .arg(&img_dir)
        .output()
        .expect("oci-image-tool installed");
    assert!(
        oit.status.success(),
        "oci-image-tool: {}{}",
        String::from_utf8_lossy(&oit.stdout),
        String::from_utf8_lossy(&oit.stderr)
    );
    let cfg = std::process::Command::new("skopeo")
        .arg("inspect")
        .arg("--config")
        .arg(format!("oci:{}:v1", img_dir.display()))
        .output()
        .unwrap();
    let cfg = String::from_utf8_lossy(&cfg.stdout);
    assert!(cfg.contains("FOO=bar") && cfg.contains("/work") && cfg.contains("/bin/sh"), "{cfg}");
    // Use the exported image as a base.
    let again = State::oci_layout(&img_dir, OciRef::Tag("v1".into())).run(sh("cat /marker > /copy")).root();
    let out = k.path("out");
    let (r, ev) =
        k.solve(&again, SolveOptions::default().output(&format!("type=local,dest={}", out.display())).unwrap()).await;
    r.unwrap_or_else(|e| panic!("{e} {ev:#?}"));
    assert_eq!(read(&out.join("copy")), "from-image\n");
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_inputs_give_clear_errors_and_leave_root_usable() {
    let k = Kit::new();
    let e = kiln::graph::Definition::from_bytes(b"\xff\xffgarbage").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Definition);
    let e = "type=floppy,dest=x".parse::<kiln::options::OutputSpec>().unwrap_err();
    assert!(e.to_string().contains("floppy") && e.to_string().contains("local"), "{e}");
    let e = "type=local".parse::<kiln::options::OutputSpec>().unwrap_err();
    assert!(e.to_string().contains("dest"), "{e}");
    let st = State::local("nope").run(sh("true")).root();
    let (r, _) = k.solve(&st, k.opts()).await;
    let e = r.unwrap_err();
    assert!(e.to_string().contains("\"nope\"") && e.to_string().contains("rootfs"), "{e}");
    assert_eq!(e.missing(), Some((kiln::MissingInput::Local, "nope")));
    let hint = e.report_for(|_, name| format!("--local {name}=DIR"));
    assert!(hint.ends_with("; pass it as --local nope=DIR"), "{hint}");
    let ok = base().run(sh("echo fine > /f")).root();
    let (r, _) = k.solve(&ok, k.opts()).await;
    r.unwrap();
    k.assert_no_leaks();
}

#[tokio::test(flavor = "multi_thread")]
async fn second_engine_on_same_root_is_refused() {
    let k = Kit::new();
    let e = kiln::engine::Engine::open(kiln::engine::EngineOptions::new(&k.root)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::RootInUse);
    assert!(e.to_string().contains(&format!("in use by pid {}", std::process::id())), "{e}");
}

#[tokio::test(flavor = "multi_thread")]
async fn prune_and_disk_usage() {
    let k = Kit::new();
    let st = base().run(sh("head -c 100000 /dev/zero > /big")).root();
    let (r, _) = k.solve(&st, k.opts()).await;
    r.unwrap();
    let du = k.engine().disk_usage().await.unwrap();
    assert!(du.iter().map(|u| u.size).sum::<u64>() >= 100_000);
    let rep = k.engine().prune(0, true).await.unwrap();
    assert!(rep.removed >= 2 && rep.freed_bytes >= 100_000, "{rep:?}");
    assert!(k.engine().snapshots().unwrap().values().all(|v| v.is_empty()));
    let (r, _) = k.solve(&st, k.opts()).await;
    assert!(r.unwrap().executed >= 2, "after prune everything rebuilds");
}

#[tokio::test(flavor = "multi_thread")]
async fn cancel_token_returns_after_this_solves_cleanup_only() {
    let k = Kit::new();
    // Another solve keeps running on the same engine; cancelling ours must not wait for it.
    let other = base().run(sh("echo other-started; exec sleep 1002")).root().to_definition().unwrap();
    let (otx, mut orx) = tokio::sync::mpsc::unbounded_channel();
    let mut oopts = k.opts();
    let other_token = kiln::CancelToken::new();
    oopts.cancel = Some(other_token.clone());
    oopts.progress = kiln::solver::ProgressSink::new(move |e| {
        if matches!(&e, ProgressEvent::Log { data, .. } if data.starts_with(b"other-started")) {
            let _ = otx.send(());
        }
    });
    let engine = k.engine().clone();
    let other_task = tokio::spawn(async move { engine.solve(&other, oopts).await });
    orx.recv().await.expect("other started");

    let ours = base().run(sh("echo ours-started; exec sleep 1003")).root().to_definition().unwrap();
    let token = kiln::CancelToken::new();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut opts = k.opts();
    opts.cancel = Some(token.clone());
    opts.progress = kiln::solver::ProgressSink::new(move |e| {
        if matches!(&e, ProgressEvent::Log { data, .. } if data.starts_with(b"ours-started")) {
            let _ = tx.send(());
        }
    });
    let engine = k.engine().clone();
    let ours_task = tokio::spawn(async move { engine.solve(&ours, opts).await });
    rx.recv().await.expect("ours started");
    token.cancel();
    let r = tokio::time::timeout(std::time::Duration::from_secs(60), ours_task).await.expect("returned").unwrap();
    assert_eq!(r.unwrap_err().kind(), ErrorKind::Cancelled);
    // Exactly one container (the other solve's) is left at this point.
    assert_eq!(k.engine().running_containers().unwrap().len(), 1);
    other_token.cancel();
    let r = other_task.await.unwrap();
    assert_eq!(r.unwrap_err().kind(), ErrorKind::Cancelled);
    k.assert_no_leaks();
}

/// An I/O error inside a file op (a name longer than NAME_MAX) keeps its variant, path and cause
/// chain on its way through the vertex tasks (it crosses the shared result future of the failing
/// vertex into the copy that depends on it).
#[tokio::test(flavor = "multi_thread")]
async fn io_error_in_file_op_keeps_path_and_cause_across_tasks() {
    let k = Kit::new();
    let long = "n".repeat(300);
    let made = State::scratch().mkdir("/d", MkdirOptions::default()).mkfile(
        format!("/d/{long}"),
        0o644,
        "x",
        MkfileOptions::default(),
    );
    let st = State::scratch().copy(&made, "/d", "/copied", CopyOptions::default());
    let (r, _) = k.solve(&st, k.opts()).await;
    let err = r.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Io, "{}", err.report());
    match &err {
        kiln::Error::Io { path, .. } => assert!(path.ends_with(format!("d/{long}")), "{}", path.display()),
        other => panic!("unexpected {other}"),
    }
    let cause = std::error::Error::source(&err).expect("the I/O cause is kept");
    let io = cause.downcast_ref::<std::io::Error>().expect("the cause is the std::io::Error");
    assert_eq!(io.raw_os_error(), Some(libc::ENAMETOOLONG));
    let report = err.report();
    assert!(report.contains(&format!("mkfile /d/{long}")), "{report}");
    assert!(report.contains("File name too long"), "{report}");
    k.assert_no_leaks();
}
