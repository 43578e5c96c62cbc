//! Progress accounting under concurrency: every vertex of a solve reports exactly one final state
//! (CACHED, DONE or ERROR) and `SolveResult.cached + executed` counts each vertex once, even when
//! branches race to start a shared vertex (a filtered local source whose files copies checksum
//! while their keys are computed, and a file op several branches build on).

use kiln::engine::{Engine, EngineOptions, SnapshotterKind, SolveOptions};
use kiln::graph::{CopyOptions, Definition, LocalOptions, MkdirOptions, MkfileOptions, State};
use kiln::solver::{ProgressEvent, ProgressSink};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Solves run per graph shape: the race this guards against showed in 2 of 32 runs.
const RUNS: usize = 32;
/// Fresh roots solved at once (more contention, bounded memory).
const BATCH: usize = 8;
/// Copies racing on the shared vertices.
const BRANCHES: usize = 4;

fn graph() -> Definition {
    let ctx = State::local_with("ctx", LocalOptions { include: vec!["*.txt".into()], ..Default::default() });
    let shared =
        State::scratch().mkdir("/s", MkdirOptions::default()).mkfile("/s/f", 0o644, "shared", MkfileOptions::default());
    let branches: Vec<State> = (0..BRANCHES)
        .map(|i| {
            shared.copy(
                &ctx,
                format!("/{i}.txt"),
                format!("/b{i}/{i}.txt"),
                CopyOptions { create_dest_path: true, ..Default::default() },
            )
        })
        .collect();
    State::merge(branches).to_definition().expect("definition")
}

/// The final events (CACHED, DONE, ERROR) of each vertex of the solve, by op digest.
type Finals = BTreeMap<String, Vec<&'static str>>;

async fn solve(engine: &Engine, def: &Definition, ctx: &Path, export: Option<&Path>) -> (kiln::SolveResult, Finals) {
    let finals: Arc<Mutex<Finals>> = Arc::default();
    let f2 = finals.clone();
    let mut opts = SolveOptions::default().local("ctx", ctx);
    if let Some(out) = export {
        opts = opts.output(&format!("type=local,dest={}", out.display())).expect("output");
    }
    opts.progress = ProgressSink::new(move |e| {
        let (vertex, what) = match e {
            ProgressEvent::VertexCached { vertex, .. } => (vertex, "CACHED"),
            ProgressEvent::VertexCompleted { vertex, .. } => (vertex, "DONE"),
            ProgressEvent::VertexError { vertex, .. } => (vertex, "ERROR"),
            _ => return,
        };
        // Exporters report as vertices of their own (`export:N`); only ops count here.
        if !vertex.starts_with("sha256:") {
            return;
        }
        f2.lock().expect("events").entry(vertex).or_default().push(what);
    });
    let r = engine.solve(def, opts).await.expect("solve");
    let finals = finals.lock().expect("events").clone();
    (r, finals)
}

fn assert_once(def: &Definition, r: &kiln::SolveResult, finals: &Finals, what: &str) {
    for v in def.vertices() {
        let got = finals.get(v.digest.as_str()).cloned().unwrap_or_default();
        assert_eq!(got.len(), 1, "{what}: vertex {} ({}) reported {got:?}", v.digest, v.name());
    }
    assert_eq!(finals.len(), def.len(), "{what}: events for vertices outside the graph: {finals:?}");
    assert_eq!(r.cached + r.executed, def.len(), "{what}: cached {} + executed {}", r.cached, r.executed);
    let done = finals.values().filter(|f| f[0] == "DONE").count();
    assert_eq!(done, r.executed, "{what}: DONE events vs executed: {finals:?}");
}

/// One fresh root: a cold solve (everything runs), then a warm one on the same engine.
async fn run_once(i: usize, def: &Definition) {
    let dir = tempfile::tempdir().expect("tempdir");
    let ctx = dir.path().join("ctx");
    std::fs::create_dir_all(&ctx).expect("ctx");
    for b in 0..BRANCHES {
        std::fs::write(ctx.join(format!("{b}.txt")), format!("file {b}")).expect("ctx file");
    }
    std::fs::write(ctx.join("ignored.bin"), "not selected").expect("ctx file");
    let mut o = EngineOptions::new(dir.path().join("root"));
    o.snapshotters = vec![SnapshotterKind::Native];
    let engine = Engine::open(o).expect("open engine");
    // Odd runs export the result (it is loaded), even ones do not (only its existence matters).
    let out = dir.path().join("out");
    let export = (i % 2 == 1).then_some(out.as_path());
    let (r, finals) = solve(&engine, def, &ctx, export).await;
    assert_once(def, &r, &finals, &format!("run {i}, cold"));
    assert_eq!(r.executed, def.len(), "run {i}: a fresh root runs every vertex: {finals:?}");
    let (r, finals) = solve(&engine, def, &ctx, export).await;
    assert_once(def, &r, &finals, &format!("run {i}, warm"));
    assert_eq!(r.executed, 0, "run {i}: a warm root runs nothing: {finals:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_vertex_reports_one_final_state_and_counters_add_up() {
    let def = graph();
    let all = async {
        for batch in (0..RUNS).collect::<Vec<_>>().chunks(BATCH) {
            futures::future::join_all(batch.iter().map(|&i| run_once(i, &def))).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(300), all).await.expect("stress solves finish within 5 minutes");
}
