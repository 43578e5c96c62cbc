//! Client-side builds (`Engine::build`, BuildKit's LLB bridge embedded) with real runc and real
//! snapshotters: inner solves, reads from refs (whole, ranged, directory listings with patterns,
//! stats, missing paths), a second graph chosen from a file's content, the set-once result,
//! errors and panics of the build function, cancellation, cache imports reaching inner solves,
//! reads confined to the ref's root, no leaks after failing builds, and 16 concurrent builds.

mod common;

use common::kit::{base, read, sh, started, Kit};
use kiln::engine::{BuildContext, BuildOptions, BuildOutput, SolveOptions, SolveRequest};
use kiln::graph::State;
use kiln::solver::{ProgressEvent, ProgressSink};
use kiln::{CancelToken, ErrorKind};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Build options on `k` whose progress events are collected.
fn collecting(opts: SolveOptions) -> (BuildOptions, Arc<Mutex<Vec<ProgressEvent>>>) {
    let events = Arc::new(Mutex::new(Vec::new()));
    let e2 = events.clone();
    let mut opts = opts;
    opts.progress = ProgressSink::new(move |e| e2.lock().unwrap().push(e));
    (BuildOptions::new(opts), events)
}

fn first_graph() -> State {
    base()
        .run(sh("mkdir -p /data/sub && echo second > /choice && printf 0123456789 > /data/digits.txt \
             && echo x > /data/notes.log && ln -s digits.txt /data/link && chmod 0640 /data/notes.log"))
        .root()
}

#[tokio::test(flavor = "multi_thread")]
async fn reads_choose_the_second_graph_which_is_exported() {
    let k = Kit::new();
    let out = k.path("out");
    let (opts, events) = collecting(k.opts().output(&format!("type=local,dest={}", out.display())).unwrap());
    let res = k
        .engine()
        .build(opts, |ctx: BuildContext| async move {
            let r = ctx.solve_state(&first_graph(), SolveRequest::default()).await?;
            let choice = r.read_file("/choice", None).await?;
            assert_eq!(choice, b"second\n");
            assert_eq!(r.read_file("data/digits.txt", Some((3, 4))).await?, b"3456");
            assert_eq!(r.read_file("/data/digits.txt", Some((8, 100))).await?, b"89");
            assert_eq!(r.read_file("/data/digits.txt", Some((50, 4))).await?, b"");
            assert_eq!(r.read_file("/data/link", None).await?, b"0123456789", "symlinks are followed inside");
            let entries = r.read_dir("/data", Some("*.txt")).await?;
            assert_eq!(entries.iter().map(|e| e.path.as_str()).collect::<Vec<_>>(), ["digits.txt"]);
            assert_eq!(entries[0].size, 10);
            assert!(entries[0].is_file());
            assert!(entries[0].mtime_ns > 1_000_000_000_000_000_000);
            let all = r.read_dir("/data", None).await?;
            let names: Vec<_> = all.iter().map(|e| e.path.as_str()).collect();
            assert_eq!(names, ["digits.txt", "link", "notes.log", "sub"]);
            let link = &all[1];
            assert!(link.is_symlink());
            assert_eq!(link.link_target.as_deref(), Some("digits.txt"));
            assert_eq!(all[2].mode & 0o7777, 0o640);
            assert!(all[3].is_dir() && all[3].size == 0);
            assert_eq!(all[3].go_mode() >> 31, 1, "Go's ModeDir");
            let st = r.stat_file("/data/notes.log").await?;
            assert_eq!((st.path.as_str(), st.size, st.uid), ("notes.log", 2, 0));
            let missing = r.stat_file("/data/nope").await.unwrap_err();
            assert!(missing.is_not_found(), "{missing:?}");
            assert_eq!(missing.kind(), ErrorKind::FileOp);
            assert!(r.read_file("/nope/deeper", None).await.unwrap_err().is_not_found());
            assert!(r.read_dir("/nope", None).await.unwrap_err().is_not_found());
            assert_eq!(r.read_file("/data", None).await.unwrap_err().kind(), ErrorKind::FileOp);
            ctx.warn("first-graph", "chose the second graph from /choice");
            let word = String::from_utf8_lossy(&choice).trim().to_owned();
            let second = base().run(sh(&format!("echo chosen-{word} > /result"))).root();
            let r2 = ctx.solve_state(&second, SolveRequest::default()).await?;
            Ok(Some(BuildOutput::of(r2)))
        })
        .await
        .unwrap_or_else(|e| panic!("{}: {:#?}", e.report(), events.lock().unwrap()));
    assert_eq!(read(&out.join("result")), "chosen-second\n");
    let ev = events.lock().unwrap().clone();
    assert!(ev.iter().any(|e| matches!(e, ProgressEvent::Warning { message }
        if message == "first-graph: chose the second graph from /choice")));
    let ran = started(&ev);
    assert!(ran.iter().any(|n| n.contains("echo second")) && ran.iter().any(|n| n.contains("chosen-")), "{ran:?}");
    assert!(res.executed >= 2, "{res:?}");
    k.assert_no_leaks();
}

#[tokio::test(flavor = "multi_thread")]
async fn the_result_is_set_once() {
    let k = Kit::native();
    let (opts, _) = collecting(k.opts());
    let second = Arc::new(Mutex::new(None));
    let s2 = second.clone();
    k.engine()
        .build(opts, move |ctx| async move {
            let r = ctx.solve_state(&base(), SolveRequest::default()).await?;
            ctx.set_result(BuildOutput::of(r.clone()))?;
            *s2.lock().unwrap() = Some(ctx.set_result(BuildOutput::of(r)).unwrap_err());
            Ok(None)
        })
        .await
        .expect("the first result stands");
    let e = second.lock().unwrap().take().unwrap();
    assert_eq!(e.kind(), ErrorKind::Definition);
    assert!(e.to_string().contains("result already set"), "{e}");

    let (opts, _) = collecting(k.opts());
    let e = k
        .engine()
        .build(opts, |ctx| async move {
            let r = ctx.solve_state(&base(), SolveRequest::default()).await?;
            ctx.set_result(BuildOutput::of(r.clone()))?;
            Ok(Some(BuildOutput::of(r)))
        })
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Definition);
    assert!(e.to_string().contains("result already set"), "{e}");
    k.assert_no_leaks();
}

#[tokio::test(flavor = "multi_thread")]
async fn errors_and_panics_of_the_function_fail_the_build() {
    let k = Kit::native();
    let (opts, _) = collecting(k.opts());
    let e = k
        .engine()
        .build(opts, |ctx| async move {
            ctx.solve_state(&base().run(sh("echo hi > /x")).root(), SolveRequest::default()).await?;
            Err(kiln::Error::new(ErrorKind::Source, "frontend says no"))
        })
        .await
        .unwrap_err();
    assert_eq!((e.kind(), e.to_string().as_str()), (ErrorKind::Source, "frontend says no"));

    let (opts, _) = collecting(k.opts());
    let e = k
        .engine()
        .build(opts, |ctx| async move {
            let r = ctx.solve_state(&base().run(sh("echo hi > /x")).root(), SolveRequest::default()).await?;
            r.read_file("/x", None).await?;
            panic!("the frontend crashed");
        })
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Internal);
    assert!(e.to_string().contains("the frontend crashed"), "{e}");

    // A failing inner solve is the function's to handle; here it propagates it.
    let (opts, _) = collecting(k.opts());
    let e = k
        .engine()
        .build(opts, |ctx| async move {
            ctx.solve_state(&base().run(sh("exit 3")).root(), SolveRequest::default()).await?;
            Ok(None)
        })
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Exec);
    k.assert_no_leaks();
}

#[tokio::test(flavor = "multi_thread")]
async fn refs_do_not_outlive_their_build() {
    let k = Kit::native();
    let (opts, _) = collecting(k.opts());
    let kept = Arc::new(Mutex::new(None));
    let k2 = kept.clone();
    k.engine()
        .build(opts, move |ctx| async move {
            let r = ctx.solve_state(&base(), SolveRequest::default()).await?;
            r.read_file("/etc/passwd", None).await?;
            *k2.lock().unwrap() = Some(r);
            Ok(None)
        })
        .await
        .unwrap();
    let r = kept.lock().unwrap().take().unwrap();
    let e = r.read_file("/etc/passwd", None).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unsupported, "{e}");
    k.assert_no_leaks();
}

/// Snapshots on disk, mounts under the root and containers: what a leak changes.
fn footprint(k: &Kit) -> (usize, usize, usize) {
    let snaps: usize = k.engine().snapshots().unwrap().values().map(Vec::len).sum();
    let root = k.engine().root().to_string_lossy().to_string();
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap().lines().filter(|l| l.contains(&root)).count();
    (snaps, mounts, k.engine().running_containers().unwrap().len())
}

#[tokio::test(flavor = "multi_thread")]
async fn twenty_failing_builds_leak_nothing() {
    let k = Kit::new();
    let graph = base().run(sh("echo leak-check > /f")).root();
    let (r, _) = k.solve(&graph, k.opts()).await;
    r.unwrap();
    let before = footprint(&k);
    for i in 0..20 {
        let (opts, _) = collecting(k.opts());
        let graph = graph.clone();
        let root = k.engine().root().to_string_lossy().to_string();
        let e = k
            .engine()
            .build(opts, move |ctx| async move {
                let r = ctx.solve_state(&graph, SolveRequest::default()).await?;
                assert_eq!(r.read_file("/f", None).await?, b"leak-check\n");
                r.read_dir("/", Some("f")).await?;
                // The ref's read-only view is mounted while the build runs (so its release counts).
                let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
                assert!(mounts.lines().any(|l| l.contains(&root)), "the view of the ref is mounted");
                Err(kiln::Error::new(ErrorKind::Source, format!("build {i} fails on purpose")))
            })
            .await
            .unwrap_err();
        assert!(e.to_string().contains("fails on purpose"));
        assert_eq!(footprint(&k), before, "after failing build {i}");
    }
    k.assert_no_leaks();
    assert_eq!(k.engine().key_locks_in_use(), 0);
}

/// Starts a build (on its own task) that solves and reads a quick graph, then solves one whose
/// container prints `begin` and sleeps; returns the task and a receiver told when `begin` is out.
fn spawn_slow_build(
    k: &Kit,
    cancel: Option<CancelToken>,
) -> (tokio::task::JoinHandle<kiln::Result<kiln::SolveResult>>, tokio::sync::mpsc::UnboundedReceiver<()>) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let mut solve_opts = k.opts();
    solve_opts.progress = ProgressSink::new(move |e| {
        if matches!(&e, ProgressEvent::Log { data, .. } if data.starts_with(b"begin")) {
            let _ = tx.send(());
        }
    });
    solve_opts.cancel = cancel;
    let engine = k.engine().clone();
    let task = tokio::spawn(async move {
        engine
            .build(BuildOptions::new(solve_opts), |ctx| async move {
                let done = ctx.solve_state(&base().run(sh("echo ready > /r")).root(), SolveRequest::default()).await?;
                done.read_file("/r", None).await?;
                let slow = base().run(sh("echo begin; exec sleep 1000")).root();
                ctx.solve_state(&slow, SolveRequest::default()).await?;
                Ok(None)
            })
            .await
    });
    (task, rx)
}

#[tokio::test(flavor = "multi_thread")]
async fn cancelling_a_build_releases_its_running_inner_solve() {
    let k = Kit::new();
    let before = footprint(&k);
    let token = CancelToken::new();
    let (task, mut rx) = spawn_slow_build(&k, Some(token.clone()));
    tokio::time::timeout(Duration::from_secs(60), rx.recv()).await.expect("container started").unwrap();
    token.cancel();
    let r = tokio::time::timeout(Duration::from_secs(60), task).await.expect("build returned").unwrap();
    assert_eq!(r.unwrap_err().kind(), ErrorKind::Cancelled);
    let after = footprint(&k);
    // The first inner solve's result is recorded (a snapshot more); nothing else stays.
    assert_eq!((after.1, after.2), (before.1, before.2));
    k.assert_no_leaks();
}

#[tokio::test(flavor = "multi_thread")]
async fn cache_imports_reach_every_inner_solve() {
    let a = Kit::new();
    let cache = a.path("cache");
    let graph = || base().run(sh("echo cached-step > /c")).root().run(sh("cat /c > /d")).root();
    let build = |ctx: BuildContext| async move {
        let r = ctx.solve_state(&graph(), SolveRequest::default()).await?;
        Ok(Some(BuildOutput::of(r)))
    };
    let (opts, _) =
        collecting(a.opts().cache_export(&format!("type=local,dest={},mode=max", cache.display())).unwrap());
    a.engine().build(opts, build).await.unwrap();

    let imports = [
        ("option", BuildOptions::new(b_opts_import(&cache))),
        (
            "frontend attr",
            BuildOptions::new(SolveOptions::default()).frontend_attr("cache-imports", serde_json_list(&cache)),
        ),
        ("solve request", BuildOptions::new(SolveOptions::default())),
    ];
    for (how, mut opts) in imports {
        let b = Kit::new();
        opts.solve.locals.insert("rootfs".into(), b.rootfs.clone());
        let events = Arc::new(Mutex::new(Vec::new()));
        let e2 = events.clone();
        opts.solve.progress = ProgressSink::new(move |e| e2.lock().unwrap().push(e));
        let per_request = how == "solve request";
        let cache2 = cache.clone();
        b.engine()
            .build(opts, move |ctx| async move {
                let mut req = SolveRequest::default();
                if per_request {
                    req.cache_imports.push(format!("type=local,src={}", cache2.display()).parse()?);
                }
                let r = ctx.solve_state(&graph(), req).await?;
                assert_eq!(r.read_file("/d", None).await?, b"cached-step\n");
                Ok(Some(BuildOutput::of(r)))
            })
            .await
            .unwrap_or_else(|e| panic!("{how}: {e}"));
        let ev = events.lock().unwrap().clone();
        let ran: Vec<String> = started(&ev).into_iter().filter(|n| !n.starts_with("local://")).collect();
        assert!(ran.is_empty(), "{how}: every inner vertex comes from the imported cache, ran {ran:?}");
        let cached: Vec<_> = ev.iter().filter(|e| matches!(e, ProgressEvent::VertexCached { .. })).collect();
        assert!(cached.len() >= 2, "{how}: {ev:#?}");
        b.assert_no_leaks();
    }
}

fn b_opts_import(cache: &std::path::Path) -> SolveOptions {
    SolveOptions::default().cache_import(&format!("type=local,src={}", cache.display())).unwrap()
}

fn serde_json_list(cache: &std::path::Path) -> String {
    format!(r#"[{{"Type":"local","Attrs":{{"src":"{}"}}}}]"#, cache.display())
}

#[tokio::test(flavor = "multi_thread")]
async fn reads_stay_inside_the_ref() {
    let k = Kit::native();
    let (opts, _) = collecting(k.opts());
    let host_hostname = std::path::Path::new("/etc/hostname").exists();
    k.engine()
        .build(opts, move |ctx| async move {
            let st = base()
                .run(sh("echo inside > /etc/marker && rm -f /etc/hostname && ln -s /etc /escape \
                     && ln -s ../../../../../etc /rel && mkdir -p /a/b"))
                .root();
            let r = ctx.solve_state(&st, SolveRequest::default()).await?;
            // An absolute symlink to /etc is the ref's /etc.
            assert_eq!(r.read_file("/escape/marker", None).await?, b"inside\n");
            assert_eq!(r.read_file("/rel/marker", None).await?, b"inside\n");
            assert_eq!(r.read_file("/a/b/../../../../../../etc/marker", None).await?, b"inside\n");
            assert_eq!(r.read_file("../../etc/marker", None).await?, b"inside\n");
            if host_hostname {
                // The host has /etc/hostname, the ref does not: every way there stays inside.
                for p in ["/escape/hostname", "/rel/hostname", "../../../etc/hostname", "/a/../../etc/hostname"] {
                    let e = r.read_file(p, None).await.unwrap_err();
                    assert!(e.is_not_found(), "{p}: {e}");
                    assert!(r.stat_file(p).await.unwrap_err().is_not_found(), "{p}");
                }
            }
            let listed: Vec<String> = r.read_dir("/escape", None).await?.into_iter().map(|e| e.path).collect();
            assert!(listed.contains(&"marker".to_owned()) && listed.contains(&"passwd".to_owned()), "{listed:?}");
            assert!(!listed.contains(&"hostname".to_owned()), "{listed:?}");
            let up = r.stat_file("/../..").await?;
            assert!(up.is_dir());
            let root_names: Vec<String> = r.read_dir("/../../..", None).await?.into_iter().map(|e| e.path).collect();
            assert!(root_names.contains(&"escape".to_owned()), "the ref's root: {root_names:?}");
            // The link itself is reported by read_dir, not followed.
            let links = r.read_dir("/", Some("escape")).await?;
            assert_eq!(links[0].link_target.as_deref(), Some("/etc"));
            Ok(None)
        })
        .await
        .unwrap();
    k.assert_no_leaks();
}

#[tokio::test(flavor = "multi_thread")]
async fn named_refs_export_to_a_directory_each_and_metadata_is_returned() {
    let k = Kit::native();
    let out = k.path("out");
    let (opts, _) = collecting(k.opts().output(&format!("type=local,dest={}", out.display())).unwrap());
    let res = k
        .engine()
        .build(opts, |ctx| async move {
            let (sa, sb) = (
                State::scratch().mkfile("/a", 0o644, "A", Default::default()),
                State::scratch().mkfile("/b", 0o644, "B", Default::default()),
            );
            let (a, b) = tokio::join!(
                ctx.solve_state(&sa, SolveRequest::default()),
                ctx.solve_state(&sb, SolveRequest::default())
            );
            let mut o = BuildOutput::default();
            o.refs.insert("linux_amd64".into(), a?);
            o.refs.insert("linux_arm64".into(), b?);
            o.metadata.insert("frontend.note".into(), b"hello".to_vec());
            Ok(Some(o))
        })
        .await
        .unwrap();
    assert_eq!(read(&out.join("linux_amd64/a")), "A");
    assert_eq!(read(&out.join("linux_arm64/b")), "B");
    assert_eq!(res.exporter_response.get("frontend.note").map(String::as_str), Some("hello"));
    k.assert_no_leaks();
}

#[tokio::test(flavor = "multi_thread")]
async fn sixteen_concurrent_builds_share_work_and_leak_nothing() {
    let k = Kit::new();
    let engine = k.engine().clone();
    let mut tasks = Vec::new();
    for i in 0..16 {
        let engine = engine.clone();
        let opts = BuildOptions::new(k.opts());
        tasks.push(tokio::spawn(async move {
            engine
                .build(opts, move |ctx| async move {
                    let shared = base().run(sh("echo shared > /s")).root();
                    let pair = shared.run(sh(&format!("echo pair-{} > /p", i % 4))).root();
                    let own = pair.run(sh(&format!("echo own-{i} > /o"))).root();
                    let (a, b, c) = tokio::join!(
                        ctx.solve_state(&shared, SolveRequest::default()),
                        ctx.solve_state(&pair, SolveRequest::default()),
                        ctx.solve_state(&own, SolveRequest { evaluate: true, ..Default::default() }),
                    );
                    let (a, b, c) = (a?, b?, c?);
                    assert_eq!(a.read_file("/s", None).await?, b"shared\n");
                    assert_eq!(b.read_file("/p", None).await?, format!("pair-{}\n", i % 4).as_bytes());
                    assert_eq!(c.read_file("/o", None).await?, format!("own-{i}\n").as_bytes());
                    let names: Vec<String> =
                        c.read_dir("/", Some("[spo]")).await?.into_iter().map(|e| e.path).collect();
                    assert_eq!(names, ["o", "p", "s"]);
                    // A fourth solve chosen by what was read, returned as the result.
                    let word = String::from_utf8_lossy(&b.read_file("/p", None).await?).trim().to_owned();
                    let last = own.run(sh(&format!("echo {word} > /w"))).root();
                    Ok(Some(BuildOutput::of(ctx.solve_state(&last, SolveRequest::default()).await?)))
                })
                .await
        }));
    }
    let mut executed = 0;
    for t in tasks {
        let r = tokio::time::timeout(Duration::from_secs(300), t).await.expect("bounded").unwrap().unwrap();
        executed += r.executed;
    }
    // shared once, 4 pairs, 16 own, 16 last, and the rootfs transfer: nothing twice.
    let distinct = 1 + 4 + 16 + 16 + 1;
    assert!(executed <= distinct, "identical work ran once across builds: {executed} > {distinct}");
    k.assert_no_leaks();
    assert_eq!(k.engine().key_locks_in_use(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn dropping_a_build_future_releases_everything() {
    let k = Kit::new();
    let (task, mut rx) = spawn_slow_build(&k, None);
    tokio::time::timeout(Duration::from_secs(60), rx.recv()).await.expect("container started").unwrap();
    task.abort();
    assert!(task.await.unwrap_err().is_cancelled());
    tokio::time::timeout(Duration::from_secs(60), k.engine().wait_idle()).await.expect("cleanup finished");
    k.assert_no_leaks();
}
