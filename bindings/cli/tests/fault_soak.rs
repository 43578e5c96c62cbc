//! Fault suite, concurrency soak (issue 14), with real `kiln` processes:
//! - 4 processes × 25 builds, each process on its own root (a root is exclusively locked), all
//!   exporting into one local cache directory and one registry, with `kiln cache prune`
//!   interleaved: 0 failures; afterwards every tag left imports fully CACHED and every blob
//!   verifies;
//! - 8 concurrent exporters into one directory and one registry: all 8 tags kept.
//!
//! Builds are tiny file ops (no container) so that the 100 builds stay fast.
//! Imports are checked with one build per group: a merge of the tags' graphs importing all of
//! them, on a fresh root. Each tag's file op is unique to it, so every one reported CACHED proves that
//! its tag imported; the merge itself then loads every op's layers (downloaded and verified).
//! Figures go to the fault summary (`fault_soak.txt`).

mod fault_common;

use fault_common::*;
use kiln::graph::State;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Mutex;

const PROCS: usize = 4;
const BUILDS: usize = 25;
const KEEP_TAGS: usize = 12;

/// Vertex name → final status (`CACHED`, `DONE ...`, `ERROR ...`) of a plain progress log.
fn vertex_states(log: &str) -> BTreeMap<String, String> {
    let mut names: BTreeMap<usize, String> = BTreeMap::new();
    let mut states: BTreeMap<usize, String> = BTreeMap::new();
    for l in log.lines() {
        let Some((n, tail)) = l.strip_prefix('#').and_then(|r| r.split_once(' ')) else { continue };
        let Ok(n) = n.parse::<usize>() else { continue };
        if tail == "CACHED" || tail.starts_with("DONE") || tail.starts_with("ERROR") {
            states.insert(n, tail.to_owned());
        } else {
            names.entry(n).or_insert_with(|| tail.to_owned());
        }
    }
    names.into_iter().map(|(n, name)| (name, states.remove(&n).unwrap_or_default())).collect()
}

/// Builds a merge of `tags`' graphs on a fresh root importing every one of them; returns the
/// tags whose op did not come out CACHED (with the log when the build failed).
fn imports_all(env: &Env, name: &str, tags: &[String], import: impl Fn(&str) -> String) -> Result<(), String> {
    let states: Vec<State> = tags.iter().map(|t| small_file(t)).collect();
    let def = env.def(&format!("merge-{name}"), &State::merge(states));
    let mut extra = Vec::new();
    for t in tags {
        extra.push("--import-cache".to_owned());
        extra.push(import(t));
    }
    let root = env.path(&format!("verify-{name}"));
    let o = run(env.build_cmd(&root, &def, &extra));
    let log = text(&o.stderr);
    let _ = std::fs::remove_dir_all(&root);
    if !o.status.success() {
        return Err(format!("merged import build failed:\n{log}"));
    }
    let states = vertex_states(&log);
    let mut missed = Vec::new();
    for t in tags {
        let run = states.iter().find(|(n, _)| n.ends_with(&format!(" /{t}.tag")));
        match run {
            Some((_, s)) if s == "CACHED" => {}
            other => missed.push(format!("{t}: {other:?}")),
        }
    }
    if missed.is_empty() {
        Ok(())
    } else {
        Err(format!("not CACHED after import: {missed:?}\n{log}"))
    }
}

fn exports(cache: &Path, registry: &str, repo: &str, tag: &str) -> Vec<String> {
    vec![
        "--export-cache".into(),
        format!("type=local,dest={},tag={tag},mode=max", cache.display()),
        "--export-cache".into(),
        format!("type=registry,ref={registry}/kiln/{repo}:{tag},mode=max"),
    ]
}

#[test]
fn four_processes_share_one_cache_and_one_registry() {
    let reg = Registry::start();
    let env = Env::new();
    let cache = env.path("cache");
    let errors = Mutex::new(Vec::<String>::new());
    let prunes = Mutex::new(0usize);
    let leaked = Mutex::new(0usize);
    let t0 = std::time::Instant::now();
    std::thread::scope(|s| {
        for p in 0..PROCS {
            let (env, cache, reg, errors, prunes, leaked) = (&env, &cache, &reg, &errors, &prunes, &leaked);
            s.spawn(move || {
                let root = env.path(&format!("root-{p}"));
                for i in 0..BUILDS {
                    let tag = format!("p{p}-{i}");
                    let def = env.def(&tag, &small_file(&tag));
                    let o = run(env.build_cmd(&root, &def, &exports(cache, &reg.addr, "soak", &tag)));
                    if !o.status.success() {
                        errors.lock().unwrap().push(format!("build {tag}:\n{}", text(&o.stderr)));
                    }
                    // Processes prune at different points of their runs.
                    if i % 5 == p % 5 {
                        let mut c = kiln(&root);
                        c.args(["cache", "prune", "--dir"]).arg(cache).arg("--keep-tags").arg(KEEP_TAGS.to_string());
                        let o = run(c);
                        *prunes.lock().unwrap() += 1;
                        if !o.status.success() {
                            errors.lock().unwrap().push(format!("prune by {p} after {tag}:\n{}", text(&o.stderr)));
                        }
                    }
                }
                let left = leaks(&root);
                *leaked.lock().unwrap() += left.len();
                if !left.is_empty() {
                    errors.lock().unwrap().push(format!("process {p} left {left:#?}"));
                }
            });
        }
    });
    let soak_time = t0.elapsed();
    let mut errors = errors.into_inner().unwrap();
    let failures = errors.len();

    // Every local tag left verifies and imports fully CACHED; so does every registry tag.
    let local = verify_layout(&cache).unwrap_or_else(|e| {
        errors.push(e);
        Vec::new()
    });
    if local.len() < KEEP_TAGS {
        errors.push(format!("only {} local tags left: {local:?}", local.len()));
    }
    if let Err(e) = imports_all(&env, "local", &local, |t| format!("type=local,src={},tag={t}", cache.display())) {
        errors.push(format!("local: {e}"));
    }
    let all: Vec<String> = (0..PROCS).flat_map(|p| (0..BUILDS).map(move |i| format!("p{p}-{i}"))).collect();
    let mut blobs = 0;
    for t in &all {
        match verify_registry_tag(&format!("{}/kiln/soak:{t}", reg.addr)) {
            Ok(n) => blobs += n,
            Err(e) => errors.push(e),
        }
    }
    for (k, chunk) in all.chunks(BUILDS).enumerate() {
        if let Err(e) = imports_all(&env, &format!("registry-{k}"), chunk, |t| {
            format!("type=registry,ref={}/kiln/soak:{t}", reg.addr)
        }) {
            errors.push(format!("registry: {e}"));
        }
    }
    record(
        "fault_soak",
        "4x25_shared_cache_and_registry",
        &[
            ("trials", (PROCS * BUILDS).to_string()),
            ("failures", failures.to_string()),
            ("leaks", leaked.into_inner().unwrap().to_string()),
            ("prunes", prunes.into_inner().unwrap().to_string()),
            ("local_tags_kept", local.len().to_string()),
            ("registry_tags", all.len().to_string()),
            ("registry_blobs_verified", blobs.to_string()),
            ("soak_ms", soak_time.as_millis().to_string()),
        ],
    );
    assert!(errors.is_empty(), "{} problem(s):\n{}", errors.len(), errors.join("\n"));
}

#[test]
fn eight_concurrent_exporters_keep_all_tags() {
    let reg = Registry::start();
    let env = Env::new();
    let cache = env.path("cache");
    let tags: Vec<String> = (0..8).map(|k| format!("e{k}")).collect();
    // All 8 start together (threads each running one bounded `kiln build`).
    let outputs: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = tags
            .iter()
            .map(|t| {
                let def = env.def(t, &small_file(t));
                let cmd = env.build_cmd(&env.path(&format!("root-{t}")), &def, &exports(&cache, &reg.addr, "eight", t));
                s.spawn(move || run(cmd))
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("exporter thread")).collect()
    });
    let mut errors = Vec::new();
    for (t, o) in tags.iter().zip(outputs) {
        if !o.status.success() {
            errors.push(format!("exporter {t}:\n{}", text(&o.stderr)));
        }
    }
    let failures = errors.len();
    match verify_layout(&cache) {
        Ok(kept) if kept == tags => {}
        Ok(kept) => errors.push(format!("local tags kept: {kept:?}")),
        Err(e) => errors.push(e),
    }
    let mut kept_registry = 0;
    for t in &tags {
        match verify_registry_tag(&format!("{}/kiln/eight:{t}", reg.addr)) {
            Ok(_) => kept_registry += 1,
            Err(e) => errors.push(e),
        }
    }
    if let Err(e) = imports_all(&env, "eight", &tags, |t| format!("type=local,src={},tag={t}", cache.display())) {
        errors.push(e);
    }
    record(
        "fault_soak",
        "8_concurrent_exporters",
        &[
            ("trials", "8".into()),
            ("failures", failures.to_string()),
            ("leaks", "0".into()),
            ("local_tags_kept", verify_layout(&cache).map(|t| t.len()).unwrap_or(0).to_string()),
            ("registry_tags_kept", kept_registry.to_string()),
        ],
    );
    assert!(errors.is_empty(), "{} problem(s):\n{}", errors.len(), errors.join("\n"));
}
