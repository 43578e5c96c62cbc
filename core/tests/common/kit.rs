//! Test kit for engine integration tests: an Engine on a temp root, a busybox base (a local source
//! named `rootfs`), and helpers to solve while collecting progress events.

#![allow(dead_code)]

use kiln::engine::{Engine, EngineOptions, SnapshotterKind, SolveOptions, SolveResult};
use kiln::graph::{ExecOptions, State};
use kiln::solver::{ProgressEvent, ProgressSink};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

pub struct Kit {
    pub dir: tempfile::TempDir,
    pub root: PathBuf,
    pub rootfs: PathBuf,
    pub engine: Option<Engine>,
    pub snapshotters: Vec<SnapshotterKind>,
}

impl Kit {
    pub fn new() -> Kit {
        Kit::with(vec![SnapshotterKind::Overlayfs, SnapshotterKind::Native])
    }

    pub fn native() -> Kit {
        Kit::with(vec![SnapshotterKind::Native])
    }

    pub fn with(snapshotters: Vec<SnapshotterKind>) -> Kit {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("root");
        let rootfs = dir.path().join("rootfs");
        super::busybox::busybox_rootfs(&rootfs).expect("busybox rootfs (install busybox-static)");
        let mut k = Kit { dir, root, rootfs, engine: None, snapshotters };
        k.reopen();
        k
    }

    /// Drops the engine and opens a new one on the same root (a "new process").
    pub fn reopen(&mut self) {
        self.engine = None;
        let mut o = EngineOptions::new(&self.root);
        o.snapshotters = self.snapshotters.clone();
        self.engine = Some(Engine::open(o).expect("open engine"));
    }

    pub fn engine(&self) -> &Engine {
        self.engine.as_ref().expect("engine open")
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn opts(&self) -> SolveOptions {
        SolveOptions::default().local("rootfs", &self.rootfs)
    }

    pub async fn solve(&self, st: &State, opts: SolveOptions) -> (kiln::Result<SolveResult>, Vec<ProgressEvent>) {
        let def = st.to_definition().expect("definition");
        solve_def(self.engine(), &def, opts).await
    }

    /// Snapshots on disk vs snapshots records reference (leak check).
    pub fn assert_no_leaks(&self) {
        let snaps = self.engine().snapshots().expect("snapshots");
        let recorded = self.engine().recorded_snapshots().expect("records");
        for (worker, ids) in &snaps {
            for id in ids {
                assert!(
                    recorded.contains(&(worker.clone(), id.clone())) || is_ancestor_of_recorded(self, worker, id),
                    "snapshot {worker}/{id} is not referenced by any record"
                );
            }
        }
        assert!(self.engine().running_containers().expect("containers").is_empty(), "containers left behind");
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
        let root = self.engine().root().to_string_lossy().to_string();
        let left: Vec<&str> = mountinfo.lines().filter(|l| l.contains(&root)).collect();
        assert!(left.is_empty(), "mounts left behind: {left:#?}");
    }
}

fn is_ancestor_of_recorded(_k: &Kit, _worker: &str, _id: &str) -> bool {
    // Records reference every committed snapshot at commit time; ancestors are recorded too.
    false
}

pub async fn solve_def(
    engine: &Engine,
    def: &kiln::graph::Definition,
    mut opts: SolveOptions,
) -> (kiln::Result<SolveResult>, Vec<ProgressEvent>) {
    let events = Arc::new(Mutex::new(Vec::new()));
    let e2 = events.clone();
    opts.progress = ProgressSink::new(move |e| e2.lock().unwrap().push(e));
    let r = engine.solve(def, opts).await;
    let ev = events.lock().unwrap().clone();
    (r, ev)
}

pub fn base() -> State {
    State::local("rootfs")
}

pub fn sh(script: &str) -> ExecOptions {
    ExecOptions::new(["/bin/sh", "-c", script])
}

pub fn started(events: &[ProgressEvent]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match e {
            ProgressEvent::VertexStarted { name, vertex } if !vertex.starts_with("export:") => Some(name.clone()),
            _ => None,
        })
        .collect()
}

pub fn cached(events: &[ProgressEvent]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match e {
            ProgressEvent::VertexCached { name, .. } => Some(name.clone()),
            _ => None,
        })
        .collect()
}

pub fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
}
